/*
 * tcp_out.c - building and sending segments: options, windows, Nagle and cork, congestion
 * and loss-recovery sending, retransmissions, probes and resets.
 */
#include <string.h>

#include "tcp.h"

#define OPT_EOL       0
#define OPT_NOP       1
#define OPT_MSS       2
#define OPT_WS        3
#define OPT_SACK_PERM 4
#define OPT_SACK      5
#define OPT_TS        8

uint32_t stk__tcp_flight(const struct stk_tcb *t)
{
    return t->snd_max - t->snd_una;
}

uint32_t stk__data_end(const struct stk_tcb *t)
{
    return t->snd_buf_seq + stk__ring_used(&t->sndbuf);
}

/* Receive space: what the buffer can still take beyond the in-order bytes not yet read. */
uint32_t stk__rcv_window(const struct stk_tcb *t)
{
    if (!t->rcvbuf.size)
        return t->rcvbuf_size;
    uint32_t used = stk__ring_used(&t->rcvbuf);
    return used >= t->rcvbuf.size ? 0 : t->rcvbuf.size - used;
}

/* The window field to send, applying receiver-side silly window avoidance (RFC 1122
 * 4.2.3.3): the right edge only moves when it can move by min(buffer / 2, MSS), and it never
 * moves left (RFC 9293 3.8.6.2.2). Records the edge advertised. */
static uint16_t window_field(struct stk_tcb *t)
{
    uint32_t win = stk__rcv_window(t);
    uint32_t cur = stk__seq_gt(t->rcv_adv, t->rcv_nxt) ? t->rcv_adv - t->rcv_nxt : 0;
    uint32_t step = stk__min32(t->rcvbuf_size / 2, t->rcv_mss);
    if (win < cur || win - cur < step)
        win = cur;
    uint32_t field = win >> t->rcv_ws;
    if (field > 65535)
        field = 65535;
    uint32_t edge = t->rcv_nxt + (field << t->rcv_ws);
    if (stk__seq_gt(edge, t->rcv_adv))
        t->rcv_adv = edge;
    return (uint16_t)field;
}

static unsigned put_syn_options(struct stk_engine *e, struct stk_tcb *t, uint8_t *o, stk_time_t now)
{
    unsigned n = 0;
    o[n++] = OPT_MSS;
    o[n++] = 4;
    stk__put16(o + n, t->rcv_mss);
    n += 2;
    bool passive = t->state == STK_TCP_SYN_RECEIVED;
    bool sack = passive ? (t->flags & TF_SACK) : !e->cfg.no_sack;
    bool ts = passive ? (t->flags & TF_TS) : !e->cfg.no_ts;
    bool ws = passive ? (t->flags & TF_WS) : !e->cfg.no_ws;
    if (sack) {
        o[n++] = ts ? OPT_SACK_PERM : OPT_NOP;
        o[n++] = ts ? 2 : OPT_NOP;
        if (!ts) {
            o[n++] = OPT_SACK_PERM;
            o[n++] = 2;
        }
    }
    if (ts) {
        if (!sack) {
            o[n++] = OPT_NOP;
            o[n++] = OPT_NOP;
        }
        o[n++] = OPT_TS;
        o[n++] = 10;
        stk__put32(o + n, stk__ts_now(t, now));
        stk__put32(o + n + 4, passive ? t->ts_recent : 0);
        n += 8;
    }
    if (ws) {
        o[n++] = OPT_NOP;
        o[n++] = OPT_WS;
        o[n++] = 3;
        o[n++] = t->rcv_ws;
    }
    return n;
}

/* room: option bytes the MTU leaves beside the payload. SACK blocks (RFC 2018) shrink to
 * fit it, since snd_mss only reserves room for timestamps. */
static unsigned put_options(struct stk_tcb *t, uint8_t *o, stk_time_t now, unsigned room)
{
    unsigned n = 0;
    if (t->flags & TF_TS) {
        o[n++] = OPT_NOP;
        o[n++] = OPT_NOP;
        o[n++] = OPT_TS;
        o[n++] = 10;
        stk__put32(o + n, stk__ts_now(t, now));
        stk__put32(o + n + 4, t->ts_recent);
        n += 8;
    }
    unsigned max = (t->flags & TF_TS) ? 3 : 4, nb = 0;
    if (room < n + 12)
        max = 0;
    else if ((room - n - 4) / 8 < max)
        max = (room - n - 4) / 8;
    if ((t->flags & TF_SACK) && t->ooo.n && max) {
        /* RFC 2018 4: the first block holds the most recently received segment; the rest
         * repeat other holes. 3 blocks fit beside timestamps, 4 without. */
        uint8_t *hdr = o + n;
        n += 4;
        struct stk_rs_range first = t->last_ooo;
        bool have_first = false;
        for (unsigned i = 0; i < t->ooo.n; i++) {
            const struct stk_rs_range *r = &t->ooo.r[i];
            if (stk__seq_le(r->start, first.start) && stk__seq_ge(r->end, first.end)) {
                first = *r;
                have_first = true;
            }
        }
        if (have_first) {
            stk__put32(o + n, first.start);
            stk__put32(o + n + 4, first.end);
            n += 8;
            nb++;
        }
        for (unsigned i = 0; i < t->ooo.n && nb < max; i++) {
            const struct stk_rs_range *r = &t->ooo.r[i];
            if (have_first && r->start == first.start)
                continue;
            stk__put32(o + n, r->start);
            stk__put32(o + n + 4, r->end);
            n += 8;
            nb++;
        }
        hdr[0] = OPT_NOP;
        hdr[1] = OPT_NOP;
        hdr[2] = OPT_SACK;
        hdr[3] = (uint8_t)(2 + 8 * nb);
    }
    return n;
}

/* Adds the sum of a piece that starts at an odd offset of the checksummed data: its bytes
 * sit in the other half of each 16-bit word, so its folded sum is byte-swapped. */
static uint32_t csum_piece(uint32_t sum, const struct stk_iov *v, size_t *off)
{
    uint32_t s = stk__csum_add(0, v->base, v->len);
    if (*off & 1) {
        while (s >> 16)
            s = (s & 0xffff) + (s >> 16);
        s = ((s & 0xff) << 8) | (s >> 8);
    }
    *off += v->len;
    sum += s;
    return (sum & 0xffff) + (sum >> 16) + 0u;
}

/* The TCP checksum without the device: the whole of it here, or, when the I/O layer sums the
 * payload while it copies it into the frame (STK_TX_L4_SUM), the header's part only, so the
 * payload is read once. */
static void soft_csum(struct stk_engine *e, uint8_t *th, unsigned thlen, const struct stk_iov *pay,
                      int npay, uint32_t sum, struct stk_txmeta *meta)
{
    sum = stk__csum_add(sum, th, thlen);
    if (npay && (e->cfg.tx_offloads & STK_TX_L4_SUM) && !(meta->flags & STK_TX_TSO)) {
        meta->flags |= STK_TX_L4_SUM;
        stk__put16(th + 16, (uint16_t)~stk__csum_fold(sum));
        return;
    }
    size_t off = thlen;
    for (int i = 0; i < npay; i++)
        sum = csum_piece(sum, &pay[i], &off);
    stk__put16(th + 16, stk__csum_fold(sum));
}

static int xmit_done(struct stk_engine *e, struct stk_tcb *t, uint8_t th_flags, stk_time_t now,
                     int rc);

/* Builds one segment [seq, seq + len) with th_flags and hands it to IP. */
static int xmit(struct stk_engine *e, struct stk_tcb *t, uint32_t seq, uint32_t len,
                uint8_t th_flags, stk_time_t now)
{
    uint8_t buf[STK_L2L3_HLEN6 + STK_TCP_HLEN + STK_TCP_MAXOPT];
    uint8_t *th = buf + STK_L2L3_HLEN6;
    bool v6 = t->flags & TF_V6;
    uint8_t *hdr = th - (v6 ? STK_L2L3_HLEN6 : STK_L2L3_HLEN);
    if (!t->sndbuf.size)
        len = 0; /* buffers already released (TIME-WAIT, closing): header only */
    uint32_t seg_room = len > t->snd_mss ? t->snd_mss : len; /* TSO: per segment */
    uint32_t hdr_room = stk__tcp_pmtu(e, t) - (v6 ? STK_IP6_HLEN : STK_IP_HLEN) - STK_TCP_HLEN;
    unsigned room = seg_room >= hdr_room ? 0 : stk__min32(hdr_room - seg_room, STK_TCP_MAXOPT);
    unsigned optlen = (th_flags & TH_SYN) ? put_syn_options(e, t, th + STK_TCP_HLEN, now)
                                          : put_options(t, th + STK_TCP_HLEN, now, room);
    unsigned thlen = STK_TCP_HLEN + optlen;
    stk__put16(th, t->lport);
    stk__put16(th + 2, t->rport);
    stk__put32(th + 4, seq);
    stk__put32(th + 8, (th_flags & TH_ACK) ? t->rcv_nxt : 0);
    th[12] = (uint8_t)((thlen / 4) << 4);
    th[13] = th_flags;
    uint16_t wnd;
    if (th_flags & TH_SYN) {
        /* RFC 7323 2.2: the window in a SYN is never scaled. */
        wnd = (uint16_t)stk__min32(stk__rcv_window(t), 65535);
        t->rcv_adv = t->rcv_nxt + wnd;
    } else {
        wnd = window_field(t);
    }
    stk__put16(th + 14, wnd);
    stk__put16(th + 16, 0);
    stk__put16(th + 18, 0);

    struct stk_iov pay[2];
    int npay = 0;
    if (len)
        npay = stk__ring_iov(&t->sndbuf, seq - t->snd_buf_seq, len, pay);

    struct stk_txmeta meta = {.l2_len = STK_ETH_HLEN,
                              .l3_len = STK_IP_HLEN,
                              .l4_len = (uint16_t)thlen,
                              .tos = v6 ? t->tclass : t->tos};
    if (v6) {
        /* Checksum in software (no IPv6 offloads yet), never TSO (see stk__tcp_output). */
        uint32_t sum = stk__csum_pseudo6(t->lip6, t->rip6, STK_IP_PROTO_TCP, thlen + len);
        soft_csum(e, th, thlen, pay, npay, sum, &meta);
        int rc =
            stk__ip6_send(e, now, t->lip6, t->rip6, STK_IP_PROTO_TCP, hdr, thlen, pay, npay, &meta);
        return xmit_done(e, t, th_flags, now, rc);
    }
    uint32_t sum = stk__csum_pseudo(t->lip, t->rip, STK_IP_PROTO_TCP, (uint16_t)(thlen + len));
    if (len > t->snd_mss) {
        meta.flags |= STK_TX_TSO;
        meta.tso_mss = t->snd_mss;
    }
    if (e->cfg.tx_offloads & STK_TX_TCP_CSUM) {
        /* The device completes the sum; it expects the folded, uncomplemented pseudo sum. */
        meta.flags |= STK_TX_TCP_CSUM;
        /* For TSO, devices (and DPDK's contract) take the pseudo-header without the
         * length, since each segment they cut has its own. */
        if (meta.flags & STK_TX_TSO)
            sum = stk__csum_pseudo(t->lip, t->rip, STK_IP_PROTO_TCP, 0);
        uint16_t p = (uint16_t)~stk__csum_fold(sum);
        stk__put16(th + 16, p);
    } else {
        soft_csum(e, th, thlen, pay, npay, sum, &meta);
    }
    if (e->cfg.tx_offloads & STK_TX_IP_CSUM)
        meta.flags |= STK_TX_IP_CSUM;

    int rc = stk__ip_send(e, now, t->rip, STK_IP_PROTO_TCP, hdr, thlen, pay, npay, &meta);
    return xmit_done(e, t, th_flags, now, rc);
}

/* The bookkeeping after a segment went to IP (sent, queued behind resolution, or failed). */
static int xmit_done(struct stk_engine *e, struct stk_tcb *t, uint8_t th_flags, stk_time_t now,
                     int rc)
{
    e->ctr.tcp_out++;
    t->segs_out++;
    if (th_flags & TH_RST)
        e->ctr.tcp_rst_out++;
    if (th_flags & TH_ACK) {
        t->last_ack_sent = t->rcv_nxt;
        t->flags &= ~TF_ACK_NOW;
        t->t_delack = 0;
        t->delack_segs = 0;
        t->owed = 0;
    }
    t->last_send = now;
    return rc;
}

/* The sequence number of a segment without data (pure ACK, RST). SND.MAX, not SND.NXT:
 * after a timeout pulled snd_nxt back, the peer may already hold bytes beyond it, and an
 * ACK below its RCV.NXT would fail its acceptability test and be dropped (as BSD does).
 * But never beyond the right edge of the peer's window: after a zero-window probe sent a
 * byte the peer did not take, SND.MAX is RCV.NXT + 1 at a peer whose window is still zero,
 * where only SEQ = RCV.NXT is acceptable; its ACK would be dropped unprocessed, and with
 * both ends waiting on each other the connection would stall (Linux clamps the same way,
 * tcp_acceptable_seq). */
static uint32_t ack_seq(const struct stk_tcb *t)
{
    uint32_t edge = t->snd_una + t->snd_wnd;
    return stk__seq_gt(t->snd_max, edge) ? edge : t->snd_max;
}

int stk__send_ack(struct stk_engine *e, struct stk_tcb *t, stk_time_t now)
{
    return xmit(e, t, ack_seq(t), 0, TH_ACK, now);
}

int stk__send_syn(struct stk_engine *e, struct stk_tcb *t, stk_time_t now)
{
    uint8_t f = t->state == STK_TCP_SYN_RECEIVED ? (TH_SYN | TH_ACK) : TH_SYN;
    int rc = xmit(e, t, t->iss, 0, f, now);
    if (stk__seq_gt(t->iss + 1, t->snd_max))
        t->snd_max = t->iss + 1;
    t->snd_nxt = t->iss + 1;
    return rc;
}

void stk__send_rst(struct stk_engine *e, struct stk_tcb *t, stk_time_t now)
{
    if (!stk__state_synced(t->state) && t->state != STK_TCP_SYN_RECEIVED)
        return;
    xmit(e, t, ack_seq(t), 0, TH_RST | TH_ACK, now); /* as for pure ACKs */
}

/* RFC 9293 3.10.7.1: If the ACK bit is off, <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>;
 * if it is on, <SEQ=SEG.ACK><CTL=RST>. A RST is never answered. */
void stk__send_rst_for(struct stk_engine *e, const struct stk_seg *s, stk_time_t now)
{
    if (s->flags & TH_RST)
        return;
    struct stk_tcb t;
    memset(&t, 0, sizeof(t));
    stk__tcb_addr_from_seg(&t, s);
    uint32_t seq = 0;
    uint8_t f = TH_RST;
    if (s->flags & TH_ACK) {
        seq = s->ack;
    } else {
        t.rcv_nxt = s->seq + s->len + ((s->flags & TH_SYN) ? 1 : 0) + ((s->flags & TH_FIN) ? 1 : 0);
        f |= TH_ACK;
    }
    xmit(e, &t, seq, 0, f, now);
}

int stk__send_keepalive(struct stk_engine *e, struct stk_tcb *t, stk_time_t now)
{
    /* An old sequence number makes the peer answer with an ACK (RFC 1122 4.2.3.6). */
    return xmit(e, t, t->snd_una - 1, 0, TH_ACK, now);
}

/* The persist timer fired. A zero-window probe carries one new byte beyond the window
 * (RFC 9293 3.8.6.1); when the peer drops it, it still answers with its current window. A
 * window too small for Nagle and SWS avoidance is used anyway, as RFC 1122 4.2.3.4's
 * override timeout asks. */
int stk__send_zwp(struct stk_engine *e, struct stk_tcb *t, stk_time_t now)
{
    e->ctr.tcp_zwp++;
    uint32_t end = stk__data_end(t);
    if (stk__seq_lt(t->snd_una, end) && t->snd_nxt == t->snd_una) {
        uint32_t len =
            stk__min32(stk__max32(t->snd_wnd, 1), stk__min32(end - t->snd_una, t->snd_mss));
        int rc = xmit(e, t, t->snd_una, len, TH_ACK, now);
        t->snd_nxt = t->snd_una + len;
        if (stk__seq_gt(t->snd_nxt, t->snd_max)) {
            e->ctr.tcp_bytes_out += t->snd_nxt - t->snd_max; /* the probe's new bytes */
            t->snd_max = t->snd_nxt;
        }
        return rc;
    }
    return xmit(e, t, t->snd_una - 1, 0, TH_ACK, now);
}

int stk__retransmit(struct stk_engine *e, struct stk_tcb *t, uint32_t seq, uint32_t len,
                    stk_time_t now)
{
    uint32_t end = stk__data_end(t);
    uint8_t f = TH_ACK;
    if (stk__seq_ge(seq, end)) {
        len = 0; /* only the FIN is outstanding */
    } else if (stk__seq_gt(seq + len, end)) {
        len = end - seq;
    }
    if ((t->flags & TF_FIN_SENT) && seq + len == end)
        f |= TH_FIN;
    if (len == 0 && !(f & TH_FIN))
        return 0;
    e->ctr.tcp_retrans++;
    e->ctr.tcp_retrans_bytes += len;
    t->total_retrans++;
    return xmit(e, t, seq, len, f | (len ? TH_PSH : 0), now);
}

static bool can_output(enum stk_tcp_state s)
{
    switch (s) {
    case STK_TCP_ESTABLISHED:
    case STK_TCP_CLOSE_WAIT:
    case STK_TCP_FIN_WAIT_1:
    case STK_TCP_CLOSING:
    case STK_TCP_LAST_ACK:
        return true;
    default:
        return false;
    }
}

/* RFC 6675 pipe, or for a peer without SACK the same estimate from duplicate ACKs (each one
 * says a segment left the network), as NewReno's window inflation does (RFC 6582). */
static uint32_t pipe_estimate(const struct stk_tcb *t)
{
    uint32_t mss = t->snd_mss;
    if (t->flags & TF_SACK)
        return stk__sack_pipe(&t->sb, t->snd_una, t->snd_max, mss);
    uint32_t flight = stk__tcp_flight(t);
    uint32_t left = stk__min32(t->dupacks * mss, flight > mss ? flight - mss : 0);
    uint32_t rxt = stk__seq_gt(t->sb.high_rxt, t->snd_una) ? t->sb.high_rxt - t->snd_una : 0;
    return flight - left + stk__min32(rxt, left);
}

static bool next_rxt(const struct stk_tcb *t, uint32_t *seq, uint32_t *len)
{
    if (t->flags & TF_SACK)
        return stk__sack_next_seg(&t->sb, t->snd_una, t->snd_max, t->snd_mss, seq, len);
    /* NewReno: the first unacknowledged segment, once per partial ACK. */
    if (stk__seq_gt(t->sb.high_rxt, t->snd_una))
        return false;
    *seq = t->snd_una;
    *len = stk__min32(t->snd_mss, t->snd_max - t->snd_una);
    return true;
}

static void recovery_send(struct stk_engine *e, struct stk_tcb *t, stk_time_t now)
{
    for (int guard = 0; guard < 64; guard++) {
        if (pipe_estimate(t) + t->snd_mss > t->cc.cwnd)
            return;
        uint32_t seq, len;
        if (!next_rxt(t, &seq, &len))
            return;
        stk__retransmit(e, t, seq, len, now);
        t->sb.high_rxt = seq + (len ? len : 1);
        if (!t->t_rexmt)
            t->t_rexmt = now + t->rto_us;
    }
}

/* RFC 8985 7.2: a PTO is scheduled only for a SACK connection, with nothing SACKed, not in
 * loss recovery (fast recovery, or after a timeout until snd_una passes what was then
 * outstanding), with no probe episode open, data in flight, an open peer window (a closed
 * one is the persist timer's) and an RTT sample. It never lands at or after the RTO: the
 * RTO then handles the tail itself. */
void stk__tlp_arm(struct stk_engine *e, struct stk_tcb *t, stk_time_t now)
{
    t->t_pto = 0;
    if (!(t->flags & TF_SACK) || (t->flags & (TF_IN_RECOVERY | TF_RTO_GUARD | TF_TLP_OUT)) ||
        !can_output(t->state) || t->sb.sacked.n || t->snd_una == t->snd_max || !t->t_rexmt ||
        t->t_persist || t->snd_wnd == 0 || t->srtt_us == 0)
        return;
    uint64_t pto = 2ull * t->srtt_us;
    pto += stk__tcp_flight(t) <= t->snd_mss ? e->cfg.rto_min_us : STK_TLP_MARGIN_US;
    if (now + pto < t->t_rexmt)
        t->t_pto = now + pto;
}

/* RFC 8985 7.3: the PTO fired. One new segment when there is new data and the peer's window
 * takes it (the congestion window is not consulted), else the last segment sent again; then
 * the RTO restarts, and the episode stays open until the ACKs tell what the probe found
 * (tcp_in.c). */
void stk__tlp_send(struct stk_engine *e, struct stk_tcb *t, stk_time_t now)
{
    if (!(t->flags & TF_SACK) || (t->flags & (TF_IN_RECOVERY | TF_RTO_GUARD | TF_TLP_OUT)) ||
        !can_output(t->state) || t->snd_una == t->snd_max || t->snd_wnd == 0)
        return;
    uint32_t end = stk__data_end(t);
    uint32_t wnd_edge = t->snd_una + t->snd_wnd;
    bool rxt = true;
    if (t->snd_nxt == t->snd_max && stk__seq_lt(t->snd_nxt, end) &&
        stk__seq_gt(wnd_edge, t->snd_nxt) && !(t->flags & TF_FIN_SENT)) {
        uint32_t avail = end - t->snd_nxt;
        uint32_t len = stk__min32(stk__min32(avail, wnd_edge - t->snd_nxt), t->snd_mss);
        t->tlp_seq = t->snd_nxt;
        e->ctr.tcp_bytes_out += len;
        xmit(e, t, t->snd_nxt, len, (uint8_t)(TH_ACK | (len == avail ? TH_PSH : 0)), now);
        t->snd_nxt += len;
        t->snd_max = t->snd_nxt;
        rxt = false;
    } else {
        /* The highest-sequence segment sent: its last MSS of data, with the FIN if sent. */
        uint32_t dend = stk__seq_lt(end, t->snd_max) ? end : t->snd_max;
        uint32_t len =
            stk__seq_gt(dend, t->snd_una) ? stk__min32(dend - t->snd_una, t->snd_mss) : 0;
        t->tlp_seq = dend - len;
        stk__retransmit(e, t, t->tlp_seq, len, now);
        t->flags &= ~TF_RTT_TIMING; /* Karn */
    }
    e->ctr.tcp_tlp_probes++;
    t->tlp_high = t->snd_max;
    t->flags |= TF_TLP_OUT | (rxt ? TF_TLP_RXT : 0);
    t->t_rexmt = now + t->rto_us;
    stk__timer_update(e, t);
}

/* Sends new data (or, after a timeout, data again from snd_nxt), the FIN, and pending ACKs,
 * within the peer's window and the congestion window, following Nagle (RFC 896 as refined
 * by RFC 1122 4.2.3.4) and TCP_CORK/MSG_MORE. */
void stk__tcp_output(struct stk_engine *e, struct stk_tcb *t, stk_time_t now)
{
    if (!can_output(t->state)) {
        if ((t->flags & TF_ACK_NOW) && stk__state_synced(t->state))
            stk__send_ack(e, t, now);
        stk__timer_update(e, t);
        return;
    }
    if (t->flags & TF_IN_RECOVERY)
        recovery_send(e, t, now);

    uint32_t mss = t->snd_mss;
    bool sent_new = false;
    /* No offloads over IPv6 yet (stk__ip6_send): one MSS per segment. */
    uint32_t max_len = ((e->cfg.tx_offloads & STK_TX_TSO) && !(t->flags & TF_V6))
                           ? e->cfg.tso_max / mss * mss
                           : mss;
    if (max_len < mss)
        max_len = mss;
    for (int guard = 0; guard < 4096; guard++) {
        uint32_t end = stk__data_end(t);
        /* After a timeout snd_nxt walks the old flight again: skip what SACK says arrived. */
        while (stk__seq_lt(t->snd_nxt, t->snd_max) && stk__rs_contains(&t->sb.sacked, t->snd_nxt)) {
            unsigned i = stk__rs_find(&t->sb.sacked, t->snd_nxt);
            t->snd_nxt = stk__seq_min(t->sb.sacked.r[i].end, t->snd_max);
        }
        bool rexmit = stk__seq_lt(t->snd_nxt, t->snd_max);
        uint32_t avail = stk__seq_lt(t->snd_nxt, end) ? end - t->snd_nxt : 0;
        bool fin_due = (t->flags & TF_FIN_QUEUED) && stk__seq_le(t->snd_nxt, end);
        if (avail == 0 && !fin_due)
            break;
        uint32_t wnd_edge = t->snd_una + t->snd_wnd;
        uint32_t usable = stk__seq_gt(wnd_edge, t->snd_nxt) ? wnd_edge - t->snd_nxt : 0;
        uint32_t inflight = t->snd_nxt - t->snd_una;
        if (t->flags & TF_IN_RECOVERY)
            inflight = pipe_estimate(t);
        uint32_t cwnd_room = t->cc.cwnd > inflight ? t->cc.cwnd - inflight : 0;
        uint32_t len = stk__min32(stk__min32(avail, usable), stk__min32(cwnd_room, max_len));
        bool fin = fin_due && len == avail;
        if (len == 0 && !(fin && avail == 0 && cwnd_room))
            break;
        if (len < mss && len < avail && !rexmit) {
            /* Window-limited: sender silly window avoidance waits for a useful window,
             * unless that would wait forever (half the largest window seen). */
            if (len < t->max_snd_wnd / 2)
                break;
        } else if (len < mss && !fin && !rexmit) {
            bool hold = (t->flags & (TF_CORK | TF_MORE)) ||
                        (!(t->flags & TF_NODELAY) && t->snd_nxt != t->snd_una);
            if (hold) {
                if ((t->flags & (TF_CORK | TF_MORE)) && !t->t_cork)
                    t->t_cork = now + 200 * STK_US_PER_MS;
                break;
            }
        }
        uint8_t f = TH_ACK;
        if (fin)
            f |= TH_FIN;
        if (len && len == avail)
            f |= TH_PSH;
        /* A segment may resend the old flight's end and carry new bytes past it (after a
         * zero-window probe's byte): each kind is counted as what it is. */
        uint32_t old_part = rexmit ? stk__min32(len, t->snd_max - t->snd_nxt) : 0;
        if (rexmit) {
            e->ctr.tcp_retrans++;
            e->ctr.tcp_retrans_bytes += old_part;
            t->total_retrans++;
        } else if (!(t->flags & (TF_TS | TF_RTT_TIMING)) && len) {
            /* Karn: time only segments sent once (timestamps time every ACK instead). */
            t->flags |= TF_RTT_TIMING;
            t->rtt_seq = t->snd_nxt;
            t->rtt_start = now;
        }
        e->ctr.tcp_bytes_out += len - old_part;
        sent_new |= !rexmit;
        xmit(e, t, t->snd_nxt, len, f, now);
        t->snd_nxt += len + (fin ? 1 : 0);
        if (fin)
            t->flags |= TF_FIN_SENT;
        if (stk__seq_gt(t->snd_nxt, t->snd_max))
            t->snd_max = t->snd_nxt;
        if (!t->t_rexmt)
            t->t_rexmt = now + t->rto_us;
        t->t_persist = 0;
        if (fin)
            break;
    }
    if (t->flags & TF_ACK_NOW)
        stk__send_ack(e, t, now);
    /* RFC 8985 7.2: (re)schedule the probe after sending new data. */
    if (sent_new)
        stk__tlp_arm(e, t, now);

    /* Data waits on a closed window with nothing in flight: only a probe can reopen it. */
    if (!t->t_rexmt && !t->t_persist && stk__seq_lt(t->snd_nxt, stk__data_end(t)) &&
        t->snd_wnd < stk__min32(mss, stk__data_end(t) - t->snd_nxt)) {
        t->zwp_probes = 0;
        t->zwp_unans = 0;
        t->zwp_last = 0;
        t->zwp_start = 0;
        t->t_persist = now + t->rto_us;
    }
    stk__timer_update(e, t);
}

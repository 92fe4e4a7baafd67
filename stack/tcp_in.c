/*
 * tcp_in.c - TCP input: parse and validate a segment once, then process it in the order of
 * RFC 9293 section 3.10.7 ("SEGMENT ARRIVES"), with the RFC 5961 and RFC 7323 checks, and
 * one handler per state group.
 */
#include <string.h>

#include "tcp.h"

/* ---- Parsing ------------------------------------------------------------------------------ */

static int parse_options(struct stk_seg *s, const uint8_t *o, unsigned n)
{
    unsigned i = 0;
    while (i < n) {
        uint8_t kind = o[i];
        if (kind == 0)
            break; /* EOL */
        if (kind == 1) {
            i++;
            continue;
        }
        if (i + 1 >= n || o[i + 1] < 2 || i + o[i + 1] > n)
            return -EINVAL; /* a length that overruns the header is malformed */
        uint8_t len = o[i + 1];
        const uint8_t *v = o + i + 2;
        switch (kind) {
        case 2:
            if (len != 4)
                return -EINVAL;
            s->mss = stk__get16(v);
            break;
        case 3:
            if (len != 3)
                return -EINVAL;
            s->ws = (int8_t)(v[0] > STK_TCP_MAX_WS ? STK_TCP_MAX_WS : v[0]);
            break;
        case 4:
            if (len != 2)
                return -EINVAL;
            s->sack_ok = true;
            break;
        case 5:
            if (len < 10 || (len - 2) % 8)
                return -EINVAL;
            s->nsack = 0;
            for (unsigned b = 0; b < (unsigned)(len - 2) / 8 && b < 4; b++) {
                s->sack[b].start = stk__get32(v + 8 * b);
                s->sack[b].end = stk__get32(v + 8 * b + 4);
                s->nsack++;
            }
            break;
        case 8:
            if (len != 10)
                return -EINVAL;
            s->ts = true;
            s->tsval = stk__get32(v);
            s->tsecr = stk__get32(v + 4);
            break;
        default:
            break; /* unknown options are skipped by their length (RFC 9293 3.1) */
        }
        i += len;
    }
    return 0;
}

/* The TCP header of either family: lengths, checksum (pseudo-header sum given), fields.
 * Inlined into both callers so that the IPv4 path costs what it did before IPv6. */
static inline __attribute__((always_inline)) int parse_tcp(struct stk_engine *e, const uint8_t *th,
                                                           size_t l4_len, uint32_t rx_flags,
                                                           uint32_t pseudo, struct stk_seg *s)
{
    if (l4_len < STK_TCP_HLEN) {
        e->ctr.tcp_drop_hdr++;
        return -EINVAL;
    }
    unsigned hlen = (unsigned)(th[12] >> 4) * 4;
    if (hlen < STK_TCP_HLEN || hlen > l4_len) {
        e->ctr.tcp_drop_hdr++;
        return -EINVAL;
    }
    if (!(rx_flags & STK_RX_L4_CSUM_OK)) {
        uint32_t sum = stk__csum_add(pseudo, th, l4_len);
        if (stk__csum_fold(sum) != 0) {
            e->ctr.tcp_drop_csum++;
            return -EINVAL;
        }
    }
    memset(s, 0, sizeof(*s));
    s->sport = stk__get16(th);
    s->dport = stk__get16(th + 2);
    s->seq = stk__get32(th + 4);
    s->ack = stk__get32(th + 8);
    s->flags = th[13] & 0x3f;
    s->wnd = stk__get16(th + 14);
    s->data = th + hlen;
    s->len = (uint32_t)(l4_len - hlen);
    s->ws = -1;
    /* Combinations no legitimate stack sends are dropped before they touch state. */
    if (s->sport == 0 || s->dport == 0 || ((s->flags & TH_SYN) && (s->flags & (TH_RST | TH_FIN)))) {
        e->ctr.tcp_drop_hdr++;
        return -EINVAL;
    }
    if (parse_options(s, th + STK_TCP_HLEN, hlen - STK_TCP_HLEN)) {
        e->ctr.tcp_drop_opts++;
        return -EINVAL;
    }
    return 0;
}

static int parse(struct stk_engine *e, const struct stk_ipv4_pkt *ip, struct stk_seg *s)
{
    uint32_t pseudo =
        (ip->rx_flags & STK_RX_L4_CSUM_OK)
            ? 0
            : stk__csum_pseudo(ip->src, ip->dst, STK_IP_PROTO_TCP, (uint16_t)ip->l4_len);
    if (parse_tcp(e, ip->l4, ip->l4_len, ip->rx_flags, pseudo, s))
        return -EINVAL;
    s->src = ip->src;
    s->dst = ip->dst;
    return 0;
}

static int parse6(struct stk_engine *e, const struct stk_ipv6_pkt *ip, struct stk_seg *s)
{
    if (ip->dst_mcast) {
        /* TCP is unicast only (RFC 9293 3.9.1): never answered. */
        e->ctr.tcp_drop_hdr++;
        return -EINVAL;
    }
    uint32_t pseudo =
        (ip->rx_flags & STK_RX_L4_CSUM_OK)
            ? 0
            : stk__csum_pseudo6(ip->src, ip->dst, STK_IP_PROTO_TCP, (uint32_t)ip->l4_len);
    if (parse_tcp(e, ip->l4, ip->l4_len, ip->rx_flags, pseudo, s))
        return -EINVAL;
    s->src6 = ip->src;
    s->dst6 = ip->dst;
    s->src = stk__fold6(ip->src);
    s->dst = stk__fold6(ip->dst);
    return 0;
}

/* ---- RTT (RFC 6298) ------------------------------------------------------------------------ */

void stk__rto_update(struct stk_engine *e, struct stk_tcb *t, uint32_t rtt_us)
{
    if (rtt_us == 0)
        rtt_us = 1;
    if (t->srtt_us == 0) {
        /* 2.2: SRTT <- R, RTTVAR <- R/2. */
        t->srtt_us = rtt_us;
        t->rttvar_us = rtt_us / 2;
    } else {
        /* 2.3: RTTVAR <- 3/4 RTTVAR + 1/4 |SRTT - R'|; SRTT <- 7/8 SRTT + 1/8 R'. */
        uint32_t d = t->srtt_us > rtt_us ? t->srtt_us - rtt_us : rtt_us - t->srtt_us;
        t->rttvar_us = (3 * t->rttvar_us + d) / 4;
        t->srtt_us = (7 * t->srtt_us + rtt_us) / 8;
    }
    /* RTO <- SRTT + max(G, 4 * RTTVAR), bounded below and above (2.4, 2.5). */
    uint64_t rto = (uint64_t)t->srtt_us + stk__max32(4 * t->rttvar_us, 1000);
    rto = stk__max64(rto, e->cfg.rto_min_us);
    t->rto_us = (uint32_t)stk__min64(rto, e->cfg.rto_max_us);
    t->backoff = 0;
}

/* ---- Shared steps --------------------------------------------------------------------------- */

static uint16_t clamp_mss(struct stk_engine *e, const struct stk_tcb *t, uint16_t peer)
{
    uint32_t mss = peer ? peer : STK_TCP_DEFAULT_MSS;
    mss = stk__min32(mss, stk__tcp_pmtu(e, t) - stk__tcp_nethlen(t));
    if (t->user_mss)
        mss = stk__min32(mss, t->user_mss);
    if (t->flags & TF_TS)
        mss -= 12; /* every segment carries the timestamp option */
    return (uint16_t)stk__max32(mss, 64);
}

static uint8_t rcv_wscale_for(uint32_t buf)
{
    uint8_t ws = 0;
    while (ws < STK_TCP_MAX_WS && (buf >> ws) > 65535)
        ws++;
    return ws;
}

/* Applies the options of a SYN (or SYN-ACK) and fixes the connection's parameters. */
static void syn_options(struct stk_engine *e, struct stk_tcb *t, const struct stk_seg *s,
                        stk_time_t now)
{
    bool active = t->state == STK_TCP_SYN_SENT;
    /* An active open offered everything the config allows; the peer's answer decides. */
    if (s->sack_ok && !e->cfg.no_sack)
        t->flags |= TF_SACK;
    if (s->ts && !e->cfg.no_ts) {
        t->flags |= TF_TS;
        t->ts_recent = s->tsval;
        t->ts_recent_age = now;
    }
    if (s->ws >= 0 && !e->cfg.no_ws) {
        t->flags |= TF_WS;
        t->snd_ws = (uint8_t)s->ws;
        if (!active)
            t->rcv_ws = rcv_wscale_for(stk__rcvbuf_ceiling(e, t));
    } else {
        t->snd_ws = 0;
        t->rcv_ws = 0;
    }
    t->snd_mss = clamp_mss(e, t, s->mss);
    t->rcv_mss = (uint16_t)(e->cfg.mtu - stk__tcp_nethlen(t));
    t->snd_wnd = s->wnd; /* RFC 7323 2.2: never scaled in a SYN */
    t->max_snd_wnd = t->snd_wnd;
    t->snd_wl1 = s->seq;
    t->snd_wl2 = s->ack;
    t->irs = s->seq;
    t->rcv_nxt = s->seq + 1;
    t->rcv_adv = t->rcv_nxt;
    stk__cc_init(&t->cc, (enum stk_cc_algo)t->cc_algo, t->snd_mss, now);
}

static void send_challenge_ack(struct stk_engine *e, struct stk_tcb *t, stk_time_t now)
{
    if (stk__challenge_ok(e, t, now))
        stk__send_ack(e, t, now);
}

static void enter_time_wait(struct stk_engine *e, struct stk_tcb *t, stk_time_t now)
{
    stk__set_state(e, t, STK_TCP_TIME_WAIT);
    t->t_rexmt = t->t_persist = t->t_delack = t->t_keep = t->t_cork = t->t_pto = 0;
    t->t_2msl = now + 2 * (stk_time_t)e->cfg.msl_us;
    stk__timer_update(e, t);
    /* Nothing will be sent again, and an orphan's data will never be read: the buffers go
     * back now rather than after 2 MSL. */
    stk__bufs_release(e, t, true, t->sd < 0);
}

static void establish(struct stk_engine *e, struct stk_tcb *t, stk_time_t now)
{
    stk__set_state(e, t, STK_TCP_ESTABLISHED);
    t->flags |= TF_WAS_SYNCED;
    t->retries = 0;
    t->last_recv = now;
    if (t->flags & TF_KEEPALIVE)
        t->t_keep = now + (stk_time_t)t->keep_idle_s * STK_US_PER_S;
}

/* The handshake's ACK arrived on a passive open: the child joins its listener's accept
 * queue, or, when that is full, stays in SYN-RECEIVED (the ACK is dropped, as Linux does,
 * and the peer's retransmission or ours retries). */
static bool passive_established(struct stk_engine *e, struct stk_tcb *t, stk_time_t now)
{
    struct stk_tcb *l = t->listener;
    if (l && l->acc_len >= l->backlog) {
        e->ctr.tcp_listen_overflow++;
        return false;
    }
    if (stk__bufs_alloc(e, t))
        return false;
    stk__synq_del(t);
    establish(e, t, now);
    if (l) {
        t->qnext = NULL;
        if (l->acc_tail)
            l->acc_tail->qnext = t;
        else
            l->acc_head = t;
        l->acc_tail = t;
        l->acc_len++;
        if (!l->defer_accept_s)
            stk__notify(e, l);
    }
    return true;
}

/* ---- Data and FIN -----------------------------------------------------------------------------
 */

static void process_fin(struct stk_engine *e, struct stk_tcb *t, stk_time_t now)
{
    if (!(t->flags & TF_RCV_FIN) || t->rcv_nxt != t->rcv_fin_seq)
        return;
    t->rcv_nxt++;
    /* In ESTABLISHED the FIN's ACK may ride on the application's reply or its own FIN, as
     * Linux's does (a FIN puts it in pingpong mode, its ACKs delayed): with a connection per
     * request, the client's ACK of the response's FIN was one frame in nine. Owed, it goes
     * when the application waits to read or idles (stk__ack_owe). */
    if (t->state != STK_TCP_ESTABLISHED || (t->flags & TF_ACK_NOW) || !stk__ack_owe(e, t, now))
        t->flags |= TF_ACK_NOW;
    switch (t->state) {
    case STK_TCP_SYN_RECEIVED:
    case STK_TCP_ESTABLISHED:
        stk__set_state(e, t, STK_TCP_CLOSE_WAIT);
        break;
    case STK_TCP_FIN_WAIT_1:
        if ((t->flags & TF_FIN_SENT) && t->snd_una == t->snd_max)
            enter_time_wait(e, t, now);
        else
            stk__set_state(e, t, STK_TCP_CLOSING);
        break;
    case STK_TCP_FIN_WAIT_2:
        enter_time_wait(e, t, now);
        break;
    default:
        break;
    }
    if (t->listener && t->listener->defer_accept_s)
        stk__notify(e, t->listener);
    stk__notify(e, t);
}

/* Stores in-window data: in order at rcv_nxt, or out of order straight into its place in
 * the receive buffer, with its range remembered (the holes are bounded by STK_OOO_MAX). */
static void receive_data(struct stk_engine *e, struct stk_tcb *t, uint32_t seq, const uint8_t *data,
                         uint32_t len, stk_time_t now)
{
    if ((!t->rcvbuf.size && stk__bufs_alloc(e, t)) || stk__ring_mem(e, &t->rcvbuf))
        return; /* no memory: dropped like a segment beyond the window, retransmitted */
    uint32_t off = seq - t->rcv_nxt;
    uint32_t room = stk__ring_free(&t->rcvbuf);
    if (off >= room) {
        e->ctr.tcp_drop_rcvbuf++;
        return;
    }
    if (len > room - off) {
        e->ctr.tcp_drop_rcvbuf++;
        len = room - off;
    }
    if (t->flags & TF_SHUT_RD) {
        /* Read side shut: the bytes are acknowledged and discarded. */
        if (off == 0) {
            t->rcv_nxt += len;
            t->flags |= TF_ACK_NOW;
        }
        return;
    }
    uint32_t in_order = 0; /* bytes RCV.NXT moves: each byte counts once, when in order */
    if (off == 0) {
        uint32_t before = t->rcv_nxt;
        stk__ring_write_at(&t->rcvbuf, 0, data, len);
        t->rcvbuf.head += len;
        t->rcv_nxt += len;
        bool had_holes = t->ooo.n != 0;
        if (had_holes) {
            stk__rs_trim_below(&t->ooo, t->rcv_nxt);
            uint32_t end = stk__rs_pop_at(&t->ooo, t->rcv_nxt);
            t->rcvbuf.head += end - t->rcv_nxt;
            t->rcv_nxt = end;
            t->flags |= TF_ACK_NOW; /* RFC 5681 4.2: ACK at once when a hole fills */
        }
        in_order = t->rcv_nxt - before;
        /* RFC 1122 4.2.3.2 / RFC 5681 4.2: ACK at least every second full-sized segment,
         * and within the delayed-ACK time otherwise. */
        uint32_t full = t->rcv_mss - ((t->flags & TF_TS) ? 12u : 0u); /* RFC 7323 options */
        t->delack_segs += len >= full ? 2 : 1;
        if (t->delack_segs >= 3 || len >= full * 2u) {
            /* Inside a receive burst one ACK at its end covers the lot (stk_rx_begin),
             * unless it would acknowledge more than STK_ACK_STRETCH bytes at once. */
            if (e->rx_batch && !had_holes && t->rcv_nxt - t->last_ack_sent < STK_ACK_STRETCH)
                stk__ack_defer(e, t);
            else
                t->flags |= TF_ACK_NOW;
        } else {
            if (!t->t_delack)
                t->t_delack = now + e->cfg.delack_us;
            /* Looked after too (stk__ack_owe): an application that took the bytes and waits
             * for more gets the ACK at once, for a peer whose Nagle may hold its next small
             * segment until then (Linux ACKs when a read drains a pushed segment, outside
             * its request/response "pingpong" mode). */
            stk__ack_owe(e, t, now);
        }
    } else {
        if (stk__rs_add(&t->ooo, seq, seq + len, STK_OOO_MAX)) {
            e->ctr.tcp_drop_ooo_full++;
            t->flags |= TF_ACK_NOW;
            return;
        }
        stk__ring_write_at(&t->rcvbuf, off, data, len);
        t->last_ooo.start = seq;
        t->last_ooo.end = seq + len;
        e->ctr.tcp_ooo_segs++;
        t->flags |= TF_ACK_NOW; /* a duplicate ACK (with SACK) tells the sender at once */
    }
    t->bytes_received += in_order;
    e->ctr.tcp_bytes_in += in_order;
    t->flags |= TF_DATA_SEEN;
    if (t->listener && t->listener->defer_accept_s)
        stk__notify(e, t->listener);
    stk__notify(e, t);
}

/* ---- ACK processing ----------------------------------------------------------------------------
 */

static void exit_recovery(struct stk_tcb *t)
{
    t->flags &= ~TF_IN_RECOVERY;
    t->dupacks = 0;
    if (!(t->flags & TF_SACK)) {
        /* RFC 6582 3.2 step 3: deflate to min(ssthresh, FlightSize + SMSS). */
        uint32_t flight = stk__tcp_flight(t);
        t->cc.cwnd = stk__max32(stk__min32(t->cc.ssthresh, flight + t->snd_mss), t->snd_mss);
    } else {
        t->cc.cwnd = stk__max32(t->cc.ssthresh, t->snd_mss);
    }
}

static void enter_recovery(struct stk_engine *e, struct stk_tcb *t, stk_time_t now)
{
    e->ctr.tcp_fast_retrans++;
    t->flags |= TF_IN_RECOVERY;
    /* A probe episode ends here: this recovery is its loss response (RFC 8985 7.4). */
    t->flags &= ~(TF_RTT_TIMING | TF_TLP_OUT | TF_TLP_RXT);
    t->t_pto = 0;
    t->recover = t->snd_max;
    t->sb.recovery_point = t->snd_max;
    stk__cc_on_loss(&t->cc, stk__tcp_flight(t), now);
    /* RFC 6675 5 (4.2) / RFC 5681 3.2 step 2: retransmit the first unacknowledged segment. */
    uint32_t len = stk__min32(t->snd_mss, t->snd_max - t->snd_una);
    stk__retransmit(e, t, t->snd_una, len, now);
    t->sb.high_rxt = t->snd_una + (len ? len : 1);
    t->t_rexmt = now + t->rto_us;
}

/* Send buffer autotuning (Linux's tcp_sndbuf_expand): when the application found the send
 * buffer full (snd_nospace, Linux's SOCK_NOSPACE) and the congestion window has grown past
 * half of it, the buffer and not the network bounds what is in flight: it grows to twice the
 * window (a power of two), up to sndbuf_max, unless SO_SNDBUF fixed the size. */
static void sndbuf_expand(struct stk_engine *e, struct stk_tcb *t)
{
    struct stk_ring *r = &t->sndbuf;
    bool nospace = t->snd_nospace;
    t->snd_nospace = false;
    if (!nospace || (t->flags & TF_SNDBUF_LOCK) || !r->size || r->size >= e->cfg.sndbuf_max ||
        (uint64_t)t->cc.cwnd * 2 <= r->size)
        return;
    uint32_t want = stk__min32(
        stk__roundup_pow2(stk__min32(t->cc.cwnd, e->cfg.sndbuf_max / 2) * 2u), e->cfg.sndbuf_max);
    if (stk__ring_autogrow(e, r, want)) {
        t->sndbuf_size = want;
        e->ctr.tcp_sndbuf_grown++;
    }
}

static void ack_advance(struct stk_engine *e, struct stk_tcb *t, const struct stk_seg *s,
                        stk_time_t now)
{
    uint32_t ack = s->ack;
    uint32_t acked = ack - t->snd_una;
    bool cwnd_limited = stk__tcp_flight(t) + t->snd_mss >= t->cc.cwnd;

    /* RTT: timestamps give a sample on every advancing ACK (RFC 7323 4.1); otherwise the
     * timed segment, which Karn's rule kept clear of retransmissions. */
    if ((t->flags & TF_TS) && s->ts && s->tsecr) {
        uint32_t ms = stk__ts_now(t, now) - s->tsecr;
        if (ms < 60 * 1000)
            stk__rto_update(e, t,
                            ms ? ms * 1000 : (uint32_t)stk__min64(now - t->last_send + 1, 1000));
    } else if ((t->flags & TF_RTT_TIMING) && stk__seq_gt(ack, t->rtt_seq)) {
        t->flags &= ~TF_RTT_TIMING;
        stk__rto_update(e, t, (uint32_t)stk__min64(now - t->rtt_start, UINT32_MAX));
    }

    /* Release acknowledged bytes from the send buffer (the SYN and FIN are not in it). */
    uint32_t data_end = stk__data_end(t);
    uint32_t upto = stk__seq_lt(ack, data_end) ? ack : data_end;
    if (stk__seq_gt(upto, t->snd_buf_seq)) {
        uint32_t n = upto - t->snd_buf_seq;
        t->sndbuf.tail += n;
        t->snd_buf_seq = upto;
        t->bytes_acked += n;
    }
    t->snd_una = ack;
    t->soft_error = 0; /* something got through: forget an old ICMP error (as Linux) */
    if ((t->flags & TF_RTO_GUARD) && stk__seq_gt(ack, t->recover))
        t->flags &= ~TF_RTO_GUARD;
    if (stk__seq_lt(t->snd_nxt, ack))
        t->snd_nxt = ack;
    stk__rs_trim_below(&t->sb.sacked, ack);
    t->retries = 0;
    t->zwp_probes = 0;
    t->zwp_unans = 0;
    t->zwp_last = 0;
    t->zwp_start = 0;
    t->t_persist = 0;
    /* RFC 6298 5.2/5.3: stop the timer when all is acknowledged, else restart it. */
    t->t_rexmt = t->snd_una == t->snd_max ? 0 : now + t->rto_us;

    if (t->flags & TF_IN_RECOVERY) {
        if (stk__seq_ge(ack, t->recover)) {
            exit_recovery(t);
        } else if (!(t->flags & TF_SACK)) {
            /* RFC 6582 3.2 step 4: a partial ACK retransmits the next hole at once. */
            uint32_t len = stk__min32(t->snd_mss, t->snd_max - t->snd_una);
            stk__retransmit(e, t, t->snd_una, len, now);
            t->sb.high_rxt = t->snd_una + len;
            t->cc.cwnd = t->cc.cwnd > acked ? t->cc.cwnd - acked : 0;
            t->cc.cwnd = stk__max32(t->cc.cwnd + t->snd_mss, t->snd_mss);
            t->dupacks = 0;
        }
    } else {
        t->dupacks = 0;
        stk__cc_on_ack(&t->cc, acked, cwnd_limited, t->srtt_us, now);
        sndbuf_expand(e, t);
    }
    if (stk__ring_free(&t->sndbuf) && t->sndbuf.size)
        stk__notify(e, t);
}

/* RFC 2883: the first SACK block is a D-SACK when it lies below the cumulative ACK or
 * inside the second block. True when it reports the tail loss probe arriving twice. */
static bool dsack_for_probe(const struct stk_tcb *t, const struct stk_seg *s)
{
    if (!(t->flags & TF_SACK) || !s->nsack)
        return false;
    const struct stk_rs_range *b = &s->sack[0];
    if (!stk__seq_lt(b->start, b->end))
        return false;
    bool dsack =
        stk__seq_le(b->end, s->ack) || (s->nsack > 1 && stk__seq_ge(b->start, s->sack[1].start) &&
                                        stk__seq_le(b->end, s->sack[1].end));
    return dsack && stk__seq_lt(b->start, t->tlp_high) && stk__seq_gt(b->end, t->tlp_seq);
}

/* RFC 8985 7.4: what the ACKs after a tail loss probe say. A probe of new data needs no
 * tracking beyond its ACK. A retransmitted probe that the peer reports twice (D-SACK), or
 * that draws a pure duplicate ACK for TLPHighRxt, was not needed: cwnd stays. An ACK beyond
 * TLPHighRxt without either means the probe repaired a loss: the congestion control's
 * fast-recovery response (ssthresh and cwnd from the current cwnd, as Linux's TLP recovery
 * does; FlightSize by now no longer reflects the window that lost). A probe whose SACK
 * shows holes below it starts fast recovery (process_ack). */
static void tlp_on_ack(struct stk_engine *e, struct stk_tcb *t, const struct stk_seg *s,
                       bool advanced, uint32_t newly_sacked, stk_time_t now)
{
    if (!(t->flags & TF_TLP_OUT) || stk__seq_lt(s->ack, t->tlp_high))
        return;
    if ((t->flags & TF_TLP_RXT) && !dsack_for_probe(t, s)) {
        if (stk__seq_gt(s->ack, t->tlp_high)) {
            e->ctr.tcp_tlp_recoveries++;
            stk__cc_on_loss(&t->cc, t->cc.cwnd, now);
        } else if (advanced || newly_sacked || s->len) {
            return; /* the probe's own ACK: whether the original arrived is not known yet */
        }
    }
    t->flags &= ~(TF_TLP_OUT | TF_TLP_RXT);
}

/* RFC 9293 3.10.7.4, fifth check, for synchronized states. Returns false when the segment
 * must be dropped (or the connection ended). */
static bool process_ack(struct stk_engine *e, struct stk_tcb *t, const struct stk_seg *s,
                        stk_time_t now)
{
    uint32_t ack = s->ack;
    /* RFC 5961 5.2: acceptable only within [SND.UNA - MAX.SND.WND, SND.NXT]; anything else
     * is discarded with an ACK (rate limited, as it is a challenge ACK). */
    if (stk__seq_gt(ack, t->snd_max) || stk__seq_lt(ack, t->snd_una - t->max_snd_wnd)) {
        e->ctr.tcp_drop_ack++;
        send_challenge_ack(e, t, now);
        return false;
    }
    uint32_t new_wnd = s->wnd << t->snd_ws;
    bool advanced = stk__seq_gt(ack, t->snd_una);
    uint32_t newly_sacked = 0;
    if ((t->flags & TF_SACK) && s->nsack)
        newly_sacked = stk__sack_update(&t->sb, advanced ? ack : t->snd_una, t->snd_max, s->sack,
                                        s->nsack, NULL);
    if (advanced) {
        ack_advance(e, t, s, now);
    } else if (ack == t->snd_una && t->snd_una != t->snd_max && t->snd_wnd != 0 &&
               (newly_sacked > 0 || (s->len == 0 && !(s->flags & (TH_SYN | TH_FIN)) &&
                                     new_wnd == t->snd_wnd && !(t->flags & TF_SACK)))) {
        /* A duplicate ACK: with SACK, any ACK reporting newly SACKed data (RFC 6675
         * section 2), even one carrying data the other way; without, RFC 5681 section 2's
         * strict definition. */
        t->dupacks++;
        /* RFC 6582 3.2 step 1 and section 4: duplicate ACKs for data sent before a timeout
         * do not start a second recovery. */
        if (!(t->flags & (TF_IN_RECOVERY | TF_RTO_GUARD)) &&
            (t->dupacks >= STK_TCP_DUPTHRESH ||
             ((t->flags & TF_SACK) && stk__sack_is_lost(&t->sb, t->snd_una, t->snd_mss))))
            enter_recovery(e, t, now);
    }
    /* RFC 8985 7.4 with RACK's rule (6.2): the probe was SACKed above holes. Every unSACKed
     * segment below it was sent at least a PTO (2 * SRTT) before the probe, longer than
     * RACK's SRTT + reordering window, so they are lost: fast recovery starts now instead
     * of waiting for a duplicate-ACK count a tail cannot produce. */
    if ((t->flags & TF_TLP_OUT) && !(t->flags & (TF_IN_RECOVERY | TF_RTO_GUARD)) &&
        t->snd_una != t->snd_max && stk__seq_gt(t->tlp_high, t->snd_una) &&
        stk__rs_contains(&t->sb.sacked, t->tlp_high - 1)) {
        e->ctr.tcp_tlp_recoveries++;
        enter_recovery(e, t, now);
    }
    bool tlp_open = (t->flags & TF_TLP_OUT) != 0;
    tlp_on_ack(e, t, s, advanced, newly_sacked, now);

    /* Window update (RFC 9293 3.10.7.4): only from a segment at least as new as the last
     * one that set the window. */
    if (stk__seq_lt(t->snd_wl1, s->seq) || (t->snd_wl1 == s->seq && stk__seq_le(t->snd_wl2, ack))) {
        bool opened = t->snd_wnd == 0 && new_wnd != 0;
        t->snd_wnd = new_wnd;
        t->snd_wl1 = s->seq;
        t->snd_wl2 = ack;
        if (new_wnd > t->max_snd_wnd)
            t->max_snd_wnd = new_wnd;
        if (opened && t->t_persist) {
            /* A probe byte the peer may have dropped goes out again with the new data. */
            t->t_persist = 0;
            t->snd_nxt = t->snd_una;
        }
    }

    /* RFC 8985 7.2: an ACK that moves snd_una (or ends a probe episode) reschedules the
     * probe for what is still in flight. */
    if (advanced || (tlp_open && !(t->flags & TF_TLP_OUT)))
        stk__tlp_arm(e, t, now);

    bool fin_acked = (t->flags & TF_FIN_SENT) && t->snd_una == t->snd_max;
    switch (t->state) {
    case STK_TCP_FIN_WAIT_1:
        if (fin_acked) {
            stk__set_state(e, t, STK_TCP_FIN_WAIT_2);
            /* An orphan waits for the peer's FIN only so long (Linux tcp_fin_timeout). */
            if (t->sd < 0)
                t->t_2msl = now + 2 * (stk_time_t)e->cfg.msl_us;
        }
        break;
    case STK_TCP_CLOSING:
        if (fin_acked)
            enter_time_wait(e, t, now);
        break;
    case STK_TCP_LAST_ACK:
        if (fin_acked) {
            stk__tcp_drop(e, t, 0);
            return false;
        }
        break;
    default:
        break;
    }
    return true;
}

/* ---- Per-state handlers ------------------------------------------------------------------------
 */

static bool seq_acceptable(const struct stk_tcb *t, const struct stk_seg *s)
{
    uint32_t seglen = s->len + ((s->flags & TH_SYN) ? 1 : 0) + ((s->flags & TH_FIN) ? 1 : 0);
    uint32_t wnd = stk__seq_gt(t->rcv_adv, t->rcv_nxt) ? t->rcv_adv - t->rcv_nxt : 0;
    /* RFC 9293 3.10.7.4, the four cases of the acceptability test. */
    if (seglen == 0)
        return wnd == 0 ? s->seq == t->rcv_nxt : stk__seq_in(s->seq, t->rcv_nxt, t->rcv_nxt + wnd);
    if (wnd == 0)
        return false;
    return stk__seq_in(s->seq, t->rcv_nxt, t->rcv_nxt + wnd) ||
           stk__seq_in(s->seq + seglen - 1, t->rcv_nxt, t->rcv_nxt + wnd);
}

/* RFC 7323 5.3 R1: PAWS. True when the segment is an old duplicate to drop. */
static bool paws_reject(const struct stk_tcb *t, const struct stk_seg *s, stk_time_t now)
{
    if (!(t->flags & TF_TS) || !s->ts || (s->flags & TH_RST))
        return false;
    if (!stk__ts_lt(s->tsval, t->ts_recent))
        return false;
    /* R1: ts_recent older than 24 days is invalid; the segment is then accepted. */
    return now - t->ts_recent_age < STK_TS_PAWS_IDLE_US;
}

static void reset_received(struct stk_engine *e, struct stk_tcb *t)
{
    e->ctr.tcp_rst_in++;
    switch (t->state) {
    case STK_TCP_SYN_RECEIVED:
        /* A passive child simply goes away; a simultaneous open was refused. */
        stk__tcp_drop(e, t, (t->flags & TF_PASSIVE) ? 0 : ECONNREFUSED);
        break;
    case STK_TCP_ESTABLISHED:
    case STK_TCP_FIN_WAIT_1:
    case STK_TCP_FIN_WAIT_2:
        stk__tcp_drop(e, t, ECONNRESET);
        break;
    case STK_TCP_CLOSE_WAIT:
        /* RFC 9293 says "connection reset"; Linux's tcp_reset() reports EPIPE here (the
         * peer had already closed), and applications see Linux's errno. */
        stk__tcp_drop(e, t, EPIPE);
        break;
    default:
        stk__tcp_drop(e, t, 0);
        break;
    }
}

static void synced_input(struct stk_engine *e, struct stk_tcb *t, struct stk_seg *s, stk_time_t now)
{
    /* RFC 9293 figure 8: after crossing SYNs, the peer's SYN-ACK acknowledging ours completes
     * the open. Its SYN is the one already seen, so only the ACK is processed. */
    if (t->state == STK_TCP_SYN_RECEIVED && !(t->flags & TF_PASSIVE) &&
        (s->flags & (TH_SYN | TH_ACK | TH_RST)) == (TH_SYN | TH_ACK) && s->seq == t->irs &&
        s->ack == t->snd_max) {
        s->seq++;
        s->flags &= (uint8_t)~TH_SYN;
    }
    if (paws_reject(t, s, now)) {
        e->ctr.tcp_drop_paws++;
        stk__send_ack(e, t, now);
        return;
    }
    /* First: sequence number. */
    if (!seq_acceptable(t, s)) {
        if (s->flags & TH_RST)
            return;
        e->ctr.tcp_drop_outwin++;
        if (stk__seq_lt(s->seq, t->rcv_nxt) && s->len)
            e->ctr.tcp_dup_segs++;
        if (t->state == STK_TCP_SYN_RECEIVED)
            stk__send_syn(e, t, now); /* the peer may have lost our SYN-ACK */
        else
            stk__send_ack(e, t, now);
        return;
    }
    /* Second: RST (RFC 5961 3.2): exact match resets, anything else in the window gets a
     * challenge ACK. */
    if (s->flags & TH_RST) {
        if (s->seq == t->rcv_nxt)
            reset_received(e, t);
        else
            send_challenge_ack(e, t, now);
        return;
    }
    /* Fourth: SYN in a synchronized state (RFC 5961 4.2): challenge ACK. */
    if (s->flags & TH_SYN) {
        if (t->state == STK_TCP_SYN_RECEIVED && s->seq == t->irs)
            stk__send_syn(e, t, now);
        else
            send_challenge_ack(e, t, now);
        return;
    }
    /* Fifth: ACK. */
    if (!(s->flags & TH_ACK))
        return;
    /* RFC 7323 4.3: ts_recent follows the segment that covers the last ACK we sent. */
    if ((t->flags & TF_TS) && s->ts && stk__seq_le(s->seq, t->last_ack_sent) &&
        !stk__ts_lt(s->tsval, t->ts_recent)) {
        t->ts_recent = s->tsval;
        t->ts_recent_age = now;
    }
    if (t->state == STK_TCP_SYN_RECEIVED) {
        if (!stk__seq_gt(s->ack, t->snd_una) || stk__seq_gt(s->ack, t->snd_max)) {
            stk__send_rst_for(e, s, now);
            return;
        }
        if ((t->flags & TF_PASSIVE) ? !passive_established(e, t, now)
                                    : (stk__bufs_alloc(e, t) != 0)) {
            return;
        }
        if (!(t->flags & TF_PASSIVE))
            establish(e, t, now);
        t->snd_wnd = s->wnd << t->snd_ws;
        t->max_snd_wnd = t->snd_wnd;
        t->snd_wl1 = s->seq;
        t->snd_wl2 = s->ack;
    }
    t->last_recv = now;
    t->keep_probes = 0;
    if (!process_ack(e, t, s, now))
        return;

    /* Trim to the window: bytes before rcv_nxt are old, bytes past the edge are dropped. */
    uint32_t seq = s->seq;
    const uint8_t *data = s->data;
    uint32_t len = s->len;
    bool fin = (s->flags & TH_FIN) != 0;
    if (stk__seq_lt(seq, t->rcv_nxt)) {
        uint32_t cut = stk__min32(t->rcv_nxt - seq, len);
        seq += cut;
        data += cut;
        len -= cut;
        if (len == 0 && fin && stk__seq_lt(seq, t->rcv_nxt))
            fin = false; /* an old FIN */
    }
    uint32_t edge = stk__seq_gt(t->rcv_adv, t->rcv_nxt) ? t->rcv_adv : t->rcv_nxt;
    if (stk__seq_gt(seq + len, edge)) {
        len = stk__seq_gt(edge, seq) ? edge - seq : 0;
        fin = false;
        e->ctr.tcp_drop_outwin++;
        t->flags |= TF_ACK_NOW;
    }

    /* Seventh: segment text. */
    if (len) {
        if (stk__state_can_recv(t->state)) {
            if (t->flags & TF_ORPHAN) {
                /* Data for a connection the application closed: nobody can read it, so
                 * the peer is told with a RST (RFC 9293 3.10.4, RFC 2525 2.17). */
                stk__send_rst(e, t, now);
                stk__tcp_drop(e, t, 0);
                return;
            }
            receive_data(e, t, seq, data, len, now);
        }
    }
    /* Eighth: FIN, possibly ahead of missing data. */
    if (fin && stk__state_can_recv(t->state)) {
        t->flags |= TF_RCV_FIN;
        t->rcv_fin_seq = seq + len;
        if (t->rcv_fin_seq != t->rcv_nxt)
            t->flags |= TF_ACK_NOW;
    } else if (fin && t->state == STK_TCP_TIME_WAIT) {
        t->t_2msl = now + 2 * (stk_time_t)e->cfg.msl_us;
        t->flags |= TF_ACK_NOW;
    } else if (fin) {
        t->flags |= TF_ACK_NOW; /* a retransmitted FIN: our ACK was lost */
    }
    process_fin(e, t, now);
    if (t->state != STK_TCP_CLOSED)
        stk__tcp_output(e, t, now);
}

static void syn_sent_input(struct stk_engine *e, struct stk_tcb *t, struct stk_seg *s,
                           stk_time_t now)
{
    bool ack_ok = false;
    if (s->flags & TH_ACK) {
        /* RFC 9293 3.10.7.3: an ACK outside (ISS, SND.NXT] gets a RST unless it is one. */
        if (stk__seq_le(s->ack, t->iss) || stk__seq_gt(s->ack, t->snd_max)) {
            stk__send_rst_for(e, s, now);
            return;
        }
        ack_ok = true;
    }
    if (s->flags & TH_RST) {
        /* RFC 5961 3.2 leaves SYN-SENT alone: a RST is good if it acknowledges our SYN. */
        if (ack_ok) {
            e->ctr.tcp_rst_in++;
            stk__tcp_drop(e, t, ECONNREFUSED);
        }
        return;
    }
    if (!(s->flags & TH_SYN))
        return;
    syn_options(e, t, s, now);
    if (ack_ok) {
        if (stk__bufs_alloc(e, t)) {
            stk__tcp_drop(e, t, ENOMEM);
            return;
        }
        t->snd_una = s->ack;
        if ((t->flags & TF_TS) && s->tsecr) {
            uint32_t ms = stk__ts_now(t, now) - s->tsecr;
            stk__rto_update(e, t, ms ? ms * 1000 : 500);
        } else if (t->retries == 0) {
            stk__rto_update(e, t, (uint32_t)stk__min64(now - t->rtt_start, UINT32_MAX));
        }
        t->t_rexmt = 0;
        t->retries = 0;
        establish(e, t, now);
        t->flags |= TF_ACK_NOW;
        /* Data or FIN riding on the SYN-ACK is rare; it is processed as usual. */
        if (s->len || (s->flags & TH_FIN)) {
            s->seq++;
            s->flags &= (uint8_t)~TH_SYN;
            synced_input(e, t, s, now);
            return;
        }
        stk__tcp_output(e, t, now);
        return;
    }
    /* Simultaneous open (RFC 9293 3.5, figure 8). */
    stk__set_state(e, t, STK_TCP_SYN_RECEIVED);
    stk__send_syn(e, t, now);
    t->t_rexmt = now + t->rto_us;
    stk__timer_update(e, t);
}

/* What a connection takes from its listener (Linux: the options a socket returned by accept
 * inherits). */
static void inherit_opts(struct stk_tcb *t, struct stk_tcb *l)
{
    t->sndbuf_size = l->sndbuf_size;
    t->rcvbuf_size = l->rcvbuf_size;
    t->keep_idle_s = l->keep_idle_s;
    t->keep_intvl_s = l->keep_intvl_s;
    t->keep_cnt = l->keep_cnt;
    t->user_timeout_ms = l->user_timeout_ms;
    t->syn_retries = l->syn_retries; /* the child's SYN-ACKs, as Linux's request sockets */
    t->tos = l->tos;
    t->tclass = l->tclass;
    t->linger_s = l->linger_s;
    t->cc_algo = l->cc_algo;
    t->reuseport = l->reuseport; /* the port is shared with the group (Linux's sk_reuseport) */
    t->listener = l;
}

/* A SYN reaching a listener: a child in SYN-RECEIVED, or a SYN cookie when the SYN queue
 * is full. */
static void listen_syn(struct stk_engine *e, struct stk_tcb *l, const struct stk_seg *s,
                       stk_time_t now)
{
    e->ctr.tcp_syn_in++;
    if (l->acc_len >= l->backlog) {
        e->ctr.tcp_listen_overflow++;
        return; /* as Linux: the client retries once accept() makes room */
    }
    if (l->synq_len >= l->backlog) {
        /* Stateless answer (SYN cookie). */
        struct stk_tcb c;
        memset(&c, 0, sizeof(c));
        c.state = STK_TCP_SYN_RECEIVED;
        stk__tcb_addr_from_seg(&c, s);
        c.rcvbuf_size = l->rcvbuf_size;
        c.user_mss = l->user_mss;
        c.tos = l->tos; /* the SYN-ACK is sent with the listener's, as Linux */
        c.tclass = l->tclass;
        if (s->ts && !e->cfg.no_ts) {
            /* The options ride in our timestamp (stk__cookie_ts); without timestamps the
             * connection goes without window scaling and SACK, as on Linux. */
            c.flags |= TF_TS;
            c.ts_recent = s->tsval;
            int ws = e->cfg.no_ws ? -1 : s->ws;
            bool sack = s->sack_ok && !e->cfg.no_sack;
            if (ws >= 0) {
                c.flags |= TF_WS;
                c.snd_ws = (uint8_t)ws;
                c.rcv_ws = rcv_wscale_for(stk__rcvbuf_ceiling(e, l));
            }
            if (sack)
                c.flags |= TF_SACK;
            c.ts_offset = stk__cookie_ts(now, ws, sack) - (uint32_t)(now / STK_US_PER_MS);
        }
        uint16_t mss = clamp_mss(e, &c, s->mss);
        c.iss = stk__cookie_make(e, s, mss, now);
        c.rcv_nxt = s->seq + 1;
        c.rcv_mss = (uint16_t)(e->cfg.mtu - stk__tcp_nethlen(&c));
        e->ctr.tcp_syncookies_sent++;
        stk__send_syn(e, &c, now);
        return;
    }
    struct stk_tcb *t = stk__tcb_new(e);
    if (!t)
        return;
    stk__tcb_addr_from_seg(t, s);
    t->flags |= TF_PASSIVE | (l->flags & TF_FROM_LISTENER);
    t->user_mss = l->user_mss;
    inherit_opts(t, l);
    t->ts_offset = stk__ts_offset(e, t);
    stk__set_state(e, t, STK_TCP_SYN_RECEIVED);
    syn_options(e, t, s, now);
    t->iss = stk__isn(e, t, now);
    t->snd_una = t->iss;
    t->snd_buf_seq = t->iss + 1;
    t->snd_max = t->iss;
    stk__conn_insert(e, t);
    stk__inherit_port(e, t);
    stk__synq_add(l, t);
    e->ctr.tcp_passive_opens++;
    t->rtt_start = now;
    stk__send_syn(e, t, now);
    t->t_rexmt = now + t->rto_us;
    stk__timer_update(e, t);
}

/* An ACK with no connection may complete a SYN-cookie handshake. NULL when it does not:
 * *quiet then says whether the cookie was good and only room was lacking (a full accept
 * queue, no memory), in which case the ACK is dropped without a RST, as Linux's
 * cookie_v4_check does: the peer's retransmission, or its first data, tries again. */
static struct stk_tcb *cookie_child(struct stk_engine *e, struct stk_tcb *l,
                                    const struct stk_seg *s, stk_time_t now, bool *quiet)
{
    *quiet = false;
    uint16_t mss = stk__cookie_check(e, s, now);
    if (!mss) {
        e->ctr.tcp_syncookies_bad++;
        return NULL;
    }
    *quiet = true;
    if (l->acc_len >= l->backlog) {
        e->ctr.tcp_listen_overflow++;
        return NULL;
    }
    struct stk_tcb *t = stk__tcb_new(e);
    if (!t)
        return NULL;
    e->ctr.tcp_syncookies_ok++;
    stk__tcb_addr_from_seg(t, s);
    t->flags |= TF_PASSIVE | TF_COOKIE | (l->flags & TF_FROM_LISTENER);
    if (s->ts && !e->cfg.no_ts) {
        t->flags |= TF_TS;
        t->ts_recent = s->tsval;
        t->ts_recent_age = now;
        int ws;
        bool sack;
        stk__cookie_ts_decode(s->tsecr, &ws, &sack);
        if (ws >= 0 && !e->cfg.no_ws) {
            t->flags |= TF_WS;
            t->snd_ws = (uint8_t)ws;
            t->rcv_ws = rcv_wscale_for(stk__rcvbuf_ceiling(e, l));
        }
        if (sack && !e->cfg.no_sack)
            t->flags |= TF_SACK;
    }
    inherit_opts(t, l);
    t->snd_mss = mss;
    t->rcv_mss = (uint16_t)(e->cfg.mtu - stk__tcp_nethlen(t));
    t->iss = s->ack - 1;
    t->irs = s->seq - 1;
    t->snd_una = t->snd_nxt = t->snd_max = s->ack;
    t->snd_buf_seq = s->ack;
    t->rcv_nxt = s->seq;
    t->rcv_adv = s->seq + stk__min32(t->rcvbuf_size, 65535);
    t->snd_wnd = t->max_snd_wnd = (uint32_t)s->wnd << t->snd_ws; /* scaled, unlike a SYN's */
    t->snd_wl1 = s->seq - 1;
    t->snd_wl2 = s->ack;
    stk__cc_init(&t->cc, (enum stk_cc_algo)t->cc_algo, t->snd_mss, now);
    stk__set_state(e, t, STK_TCP_SYN_RECEIVED);
    stk__synq_add(l, t); /* passive_established takes it off */
    stk__conn_insert(e, t);
    stk__inherit_port(e, t);
    if (!passive_established(e, t, now)) {
        stk__tcp_drop(e, t, 0);
        return NULL;
    }
    e->ctr.tcp_passive_opens++;
    return t;
}

/* TIME-WAIT (RFC 9293 3.10.7.4 and RFC 6191): a new SYN may reopen the pair when it is
 * clearly newer; a retransmitted FIN is acknowledged again. A RST at exactly RCV.NXT ends
 * TIME-WAIT, as with Linux's default (net.ipv4.tcp_rfc1337 = 0, "TIME-WAIT assassination");
 * any other RST is ignored. That RST is what a peer sends when its new SYN on a recycled
 * port met this TIME-WAIT and drew our ACK (RFC 9293 3.10.7.3, SYN-SENT): with the pair
 * gone, its SYN retransmission one RTO later reaches the listener. Ignoring it (RFC 1337)
 * kept such a peer retrying for up to 2 MSL whenever its SYN was not "newer" (its own
 * random timestamp offset and ISN, half the time against another host's TIME-WAIT): the
 * both-ends benchmark stall, docs/benchmarks.md. Returns true when the segment is done
 * with, false when t is gone and the segment goes on to a listener. */
static bool time_wait_input(struct stk_engine *e, struct stk_tcb *t, struct stk_seg *s,
                            stk_time_t now)
{
    if (s->flags & TH_RST) {
        /* Linux's tcp_paws_reject(): a RST carrying a timestamp older than TS.Recent is
         * refused while TS.Recent is less than 60 s old (TCP_PAWS_MSL). */
        bool paws = (t->flags & TF_TS) && s->ts && stk__ts_lt(s->tsval, t->ts_recent) &&
                    now - t->ts_recent_age < 60 * (stk_time_t)STK_US_PER_S;
        if (s->seq == t->rcv_nxt && !paws) {
            e->ctr.tcp_rst_in++;
            stk__tcp_drop(e, t, 0);
        }
        return true;
    }
    if ((s->flags & TH_SYN) && !(s->flags & TH_ACK)) {
        /* RFC 6191: a timestamp older than TS.Recent is refused; a newer one reopens; an
         * equal one (a new connection within the same peer clock tick) or none falls back
         * to the sequence number being above RCV.NXT. This is Linux's rule too
         * (tcp_timewait_state_process: !paws_reject && (seq after || ts newer)). */
        bool ts = (t->flags & TF_TS) && s->ts;
        bool newer =
            !(ts && stk__ts_lt(s->tsval, t->ts_recent)) &&
            (stk__seq_gt(s->seq, t->rcv_nxt) || (ts && stk__ts_lt(t->ts_recent, s->tsval)));
        if (newer && stk__seg_listener(e, s)) {
            stk__tcp_drop(e, t, 0);
            return false; /* let the listener take it */
        }
        send_challenge_ack(e, t, now);
        return true;
    }
    if (paws_reject(t, s, now)) {
        e->ctr.tcp_drop_paws++;
        stk__send_ack(e, t, now);
        return true;
    }
    if ((s->flags & TH_FIN) || s->len) {
        if (s->flags & TH_FIN)
            t->t_2msl = now + 2 * (stk_time_t)e->cfg.msl_us;
        stk__send_ack(e, t, now);
        stk__timer_update(e, t);
    }
    return true;
}

/* An embryonic passive connection meets an ACK that is not for its SYN-ACK but is a valid
 * cookie: the peer took an earlier SYN cookie (sent while the SYN queue was full), and its
 * retransmitted SYN then made this child, whose SYN-ACK it ignores. As Linux's
 * tcp_check_req hands such an ACK back to the listener's cookie check, the child goes and
 * the listener completes the cookie's connection instead of answering with a RST that
 * would reset the peer's established side: COOKIE_LISTENER.
 * When the peer had sent data on the cookie's connection (dropped: the accept queue was
 * full), its ACK of the child's SYN-ACK carries a sequence number past that data, and the
 * cookie is good only with the ISN of the child's SYN (the same SYN, retransmitted). Linux
 * resets the peer there; we drop the child and the segment (COOKIE_DROPPED), and the
 * peer's retransmission of its data completes the cookie's connection at the listener. */
enum { COOKIE_NO, COOKIE_LISTENER, COOKIE_DROPPED };
static int cookie_over_child(struct stk_engine *e, struct stk_tcb *t, const struct stk_seg *s,
                             stk_time_t now)
{
    if (t->state != STK_TCP_SYN_RECEIVED || !(t->flags & TF_PASSIVE) || !t->listener ||
        (s->flags & (TH_SYN | TH_RST | TH_ACK)) != TH_ACK || s->ack == t->iss + 1)
        return COOKIE_NO;
    if (stk__cookie_check(e, s, now)) {
        stk__tcp_drop(e, t, 0);
        return COOKIE_LISTENER;
    }
    if (s->seq == t->irs + 1 || !stk__cookie_check_isn(e, s, t->irs, now))
        return COOKIE_NO;
    stk__tcp_drop(e, t, 0);
    e->ctr.tcp_syncookies_child_dropped++;
    return COOKIE_DROPPED;
}

static inline __attribute__((always_inline)) void seg_input(struct stk_engine *e, stk_time_t now,
                                                            struct stk_seg *s);

void stk__tcp_input(struct stk_engine *e, stk_time_t now, const struct stk_ipv4_pkt *ip)
{
    struct stk_seg s;
    e->ctr.tcp_in++;
    if (parse(e, ip, &s))
        return;
    seg_input(e, now, &s);
}

void stk__tcp6_input(struct stk_engine *e, stk_time_t now, const struct stk_ipv6_pkt *ip)
{
    struct stk_seg s;
    e->ctr.tcp_in++;
    if (parse6(e, ip, &s))
        return;
    seg_input(e, now, &s);
}

/* The segment after parsing, for both families (inlined into each, as parse_tcp). */
static inline __attribute__((always_inline)) void seg_input(struct stk_engine *e, stk_time_t now,
                                                            struct stk_seg *s)
{
    struct stk_tcb *t = stk__seg_conn(e, s);
    if (t && t->state == STK_TCP_TIME_WAIT) {
        t->segs_in++;
        if (time_wait_input(e, t, s, now))
            goto out;
        t = NULL;
    }
    if (t) {
        int c = cookie_over_child(e, t, s, now);
        if (c == COOKIE_DROPPED)
            goto out;
        if (c == COOKIE_LISTENER)
            t = NULL;
    }
    if (!t) {
        struct stk_tcb *l = stk__seg_listener(e, s);
        if (!l) {
            stk__send_rst_for(e, s, now);
            goto out;
        }
        /* RFC 9293 3.10.7.2, LISTEN: RST ignored; ACK refused unless it is a cookie's; SYN
         * starts a handshake; anything else dropped. */
        if (s->flags & TH_RST)
            goto out;
        if (s->flags & TH_ACK) {
            bool quiet = false;
            if (!(s->flags & TH_SYN) && (t = cookie_child(e, l, s, now, &quiet)) != NULL) {
                synced_input(e, t, s, now);
                goto out;
            }
            if (!quiet)
                stk__send_rst_for(e, s, now);
            goto out;
        }
        if (s->flags & TH_SYN)
            listen_syn(e, l, s, now);
        goto out;
    }
    t->segs_in++;
    if (t->state == STK_TCP_SYN_SENT)
        syn_sent_input(e, t, s, now);
    else
        synced_input(e, t, s, now);
out:
    stk__flush_events(e);
}

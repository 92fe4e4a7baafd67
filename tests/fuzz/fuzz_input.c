/*
 * fuzz_input.c - libFuzzer target for the engine's input path.
 *
 * Each run builds one engine and puts it in interesting states before the fuzz input is
 * read: a listener on port 80, an established passive connection, a passive one still in
 * SYN-RECEIVED, an active one in SYN-SENT, an established active one with unacknowledged
 * data queued, and one in TIME-WAIT. A scripted peer (198.18.0.2) drives the handshakes;
 * the engine is 198.18.0.1.
 *
 * The input is then a sequence of records [op][len lo][len hi][len bytes of payload]:
 *
 *   op 0  the payload is a raw Ethernet frame.
 *   op 1  the payload is b0 = connection selector, b1 = mode bits (FZ_M_*), then a TCP
 *         header with options and data. The harness writes the connection's ports, may
 *         rebase seq/ack on what the engine last sent (so small deltas reach deep states),
 *         and wraps it in Ethernet/IPv4 with correct checksums.
 *   op 2  advance the clock (b0 picks the unit, b1..b3 the amount) and poll.
 *   op 3  a socket API call chosen by the payload (send, recv, close, shutdown, ...).
 *   op 4  an ARP request or reply from the peer (refreshes or changes its MAC).
 *   op 0 with bit 0x40 (65, 70, ...): an IPv6 packet from the peer. The payload is b0 = mode
 *         bits (FZ_6_*), b1 = the first Next Header, b2 = hop limit, then the extension
 *         headers and upper layer. The harness adds Ethernet and the IPv6 header with the
 *         right payload length, and with FZ_6_CSUM fixes the ICMPv6 or TCP checksum found
 *         by walking the extension headers. The engine also has 2001:2::1/64 and its
 *         link-local address; the peer is fe80::2 / 2001:2::2. TCP over IPv6: a dual-stack
 *         listener on [::]:81 and an active open to [2001:2::2]:8083 in SYN-SENT.
 *   op 0 with bit 0x20 and not 0x40 (35, 40, 45, ...): an ICMP error about a TCP segment
 *         the engine sent. The payload is b0 = connection selector (as op 1; past the end,
 *         the ports are b9..b12), b1 = type, b2 = code, b3..b6 = the second header word (the
 *         MTU of a frag-needed or Packet Too Big), b7..b8 = a signed delta added to the
 *         connection's highest sequence sent (so quotes land in and near [SND.UNA,
 *         SND.MAX]), b13 bit 0 = ICMPv6 from the peer's global address quoting an IPv6
 *         header 2001:2::1 -> 2001:2::2 (else ICMP quoting IPv4). Checksums are right.
 *
 * Every frame the engine transmits is parsed with pkt_parse (an oracle independent of the
 * engine); a malformed one, or one not from our addresses, traps. So does anything ASan or
 * UBSan see, and a leak after stk_engine_destroy.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pkt.h"
#include "stk.h"
#include "util.h" /* byte order and wrap-safe comparisons */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FZ_MTU       1500
#define FZ_MAX_FRAME (PKT_ETH_HLEN + FZ_MTU)
#define FZ_CONNS     16
#define FZ_SDS       16
#define FZ_RECORDS   512 /* bounds the work per input so that no input is slow */

/* Mode bits of op 1. */
enum {
    FZ_M_SEQ_REL = 1u << 0,  /* seq field is a delta from the engine's last ACK */
    FZ_M_ACK_REL = 1u << 1,  /* ack field is a delta from the highest seq the engine sent */
    FZ_M_FIX_DOFF = 1u << 2, /* data offset clamped to the bytes actually present */
    FZ_M_TS = 1u << 3,       /* a timestamp option gets a fresh TSval and a valid TSecr */
    FZ_M_BAD_CSUM = 1u << 4, /* spoil the TCP checksum */
    FZ_M_RX_OK = 1u << 5,    /* claim the device verified the checksums (only if right) */
    FZ_M_SACK_REL = 1u << 6, /* SACK block edges are deltas from the (final) ack field */
};

/* Mode bits of an IPv6 record. */
enum {
    FZ_6_DST_GL = 1u << 0,     /* to our global address (else our link-local one) */
    FZ_6_DST_GROUP = 1u << 1,  /* to all-nodes, or with DST_GL our solicited-node group */
    FZ_6_SRC_GL = 1u << 2,     /* from the peer's global address (else its link-local) */
    FZ_6_SRC_UNSPEC = 1u << 3, /* from :: (duplicate address detection) */
    FZ_6_CSUM = 1u << 4,       /* fix the ICMPv6 checksum */
    FZ_6_MAC_OTHER = 1u << 5,  /* from another MAC than the peer's */
};

static const uint8_t our_mac[6] = {0x02, 0, 0, 0, 0, 0x01};
/* fe80:: + modified EUI-64 of our_mac, and the global address. */
static const uint8_t our_ll[16] = {0xfe, 0x80, [11] = 0xff, [12] = 0xfe, [15] = 0x01};
static const uint8_t our_gl[16] = {0x20, 0x01, 0x00, 0x02, [15] = 0x01};
static const uint8_t peer_ll[16] = {0xfe, 0x80, [15] = 0x02};
static const uint8_t peer_gl[16] = {0x20, 0x01, 0x00, 0x02, [15] = 0x02};
static const uint8_t peer_mac[6] = {0x02, 0, 0, 0, 0, 0x02};
#define OUR_IP  PKT_IP(198, 18, 0, 1)
#define PEER_IP PKT_IP(198, 18, 0, 2)

/* What the harness knows of one 4-tuple, learnt from the segments the engine sent. */
struct fz_conn {
    uint16_t lport, rport;
    bool seen_ack;    /* the engine sent an ACK (rcv_nxt is meaningful) */
    uint32_t rcv_nxt; /* the ack field of the engine's last ACK */
    uint32_t snd_max; /* highest seq + len (+ SYN/FIN) the engine sent */
    uint32_t tsval;   /* the engine's last TSval, to echo */
};

struct fz {
    struct stk_engine *e;
    stk_time_t now;
    uint32_t peer_ts; /* the peer's timestamp clock */
    uint16_t ip_id;
    struct fz_conn conns[FZ_CONNS];
    int nconns;
    int sds[FZ_SDS];
    int nsds;
    uint8_t tx_buf[FZ_MAX_FRAME];
    uint8_t rx_buf[FZ_MAX_FRAME];
    uint8_t io_buf[65536];
};

static struct fz_conn *conn_find(struct fz *f, uint16_t lport, uint16_t rport)
{
    for (int i = 0; i < f->nconns; i++)
        if (f->conns[i].lport == lport && f->conns[i].rport == rport)
            return &f->conns[i];
    return NULL;
}

static struct fz_conn *conn_get(struct fz *f, uint16_t lport, uint16_t rport)
{
    struct fz_conn *c = conn_find(f, lport, rport);
    if (c || f->nconns == FZ_CONNS)
        return c;
    c = &f->conns[f->nconns++];
    memset(c, 0, sizeof(*c));
    c->lport = lport;
    c->rport = rport;
    return c;
}

static void sd_add(struct fz *f, int sd)
{
    if (sd >= 0 && f->nsds < FZ_SDS)
        f->sds[f->nsds++] = sd;
}

/* Records what a TCP segment from the engine tells about its connection. */
static void learn(struct fz *f, const struct pkt_info *p)
{
    if (p->flags & PKT_TCP_RST)
        return;
    struct fz_conn *c = conn_get(f, p->sport, p->dport);
    if (!c)
        return;
    uint32_t end =
        p->seq + (uint32_t)p->payload_len + !!(p->flags & PKT_TCP_SYN) + !!(p->flags & PKT_TCP_FIN);
    if (p->flags & PKT_TCP_SYN)
        c->snd_max = end;
    else if (stk__seq_lt(c->snd_max, end))
        c->snd_max = end;
    if (p->flags & PKT_TCP_ACK) {
        c->seen_ack = true;
        c->rcv_nxt = p->ack;
    }
    if (p->opt.ts)
        c->tsval = p->opt.tsval;
}

static uint32_t pseudo6(const uint8_t src[16], const uint8_t dst[16], uint32_t len, uint8_t nh)
{
    uint8_t tail[8] = {0};
    stk__put32(tail, len);
    tail[7] = nh;
    return pkt_csum_add(pkt_csum_add(pkt_csum_add(0, src, 16), dst, 16), tail, 8);
}

/* An IPv6 frame from the engine: ICMPv6, UDP or TCP (a header of at least 20 bytes within the
 * packet) from one of our addresses and MAC, exact payload length, a correct checksum, hop
 * limit 64 or 255 (neighbour discovery). */
static void check_ip6_out(const uint8_t *b, size_t len)
{
    const uint8_t *ip = b + PKT_ETH_HLEN;
    bool tcp = len >= PKT_ETH_HLEN + 60 && ip[6] == 6 && (size_t)(ip[52] >> 4) * 4 >= 20 &&
               (size_t)(ip[52] >> 4) * 4 <= len - PKT_ETH_HLEN - 40 && ip[7] == 64;
    if (len < PKT_ETH_HLEN + 48 || memcmp(b + 6, our_mac, 6) != 0 || (ip[0] >> 4) != 6 ||
        stk__get16(ip + 4) != len - PKT_ETH_HLEN - 40 || (ip[6] != 58 && ip[6] != 17 && !tcp) ||
        (ip[7] != 64 && ip[7] != 255) ||
        (memcmp(ip + 8, our_ll, 16) != 0 && memcmp(ip + 8, our_gl, 16) != 0)) {
        fprintf(stderr, "engine sent a malformed IPv6 frame (%zu bytes)\n", len);
        __builtin_trap();
    }
    size_t ml = len - PKT_ETH_HLEN - 40;
    if (pkt_csum_fold(pkt_csum_add(pseudo6(ip + 8, ip + 24, (uint32_t)ml, ip[6]), ip + 40, ml)) !=
        0) {
        fprintf(stderr, "engine sent an IPv6 frame with a bad upper-layer checksum\n");
        __builtin_trap();
    }
}

/* The engine's transmit hook: every frame must parse and come from us, and is then
 * discarded after the harness learnt from it. */
static int fz_tx(void *ctx, const struct stk_iov *iov, int n, const struct stk_txmeta *meta)
{
    struct fz *f = ctx;
    (void)meta;
    size_t len = 0;
    for (int i = 0; i < n; i++) {
        if (iov[i].len > sizeof(f->tx_buf) - len)
            __builtin_trap(); /* larger than the MTU allows without TSO */
        memcpy(f->tx_buf + len, iov[i].base, iov[i].len);
        len += iov[i].len;
    }
    if (len >= PKT_ETH_HLEN && stk__get16(f->tx_buf + 12) == 0x86dd) {
        check_ip6_out(f->tx_buf, len);
        return 0;
    }
    struct pkt_info p;
    int rc = pkt_parse(f->tx_buf, len, &p);
    /* Echo replies to reassembled requests beyond the MTU go out in fragments: valid ones
     * (header checked by the parser) carry a multiple of 8 bytes unless last, never DF. */
    if (rc == PKT_E_IP_FRAG && p.src_ip == OUR_IP && !p.df &&
        (!p.mf || (p.ip_len - p.ip_hlen) % 8 == 0))
        rc = PKT_OK;
    if (rc != PKT_OK) {
        char line[256];
        pkt_format(&p, line, sizeof(line));
        fprintf(stderr, "engine sent a malformed frame (%s): %s\n", pkt_strerror(rc), line);
        __builtin_trap();
    }
    if (memcmp(p.src_mac, our_mac, 6) != 0)
        __builtin_trap();
    if ((p.kind == PKT_KIND_TCP || p.kind == PKT_KIND_ICMP) && p.src_ip != OUR_IP)
        __builtin_trap();
    if (p.kind == PKT_KIND_TCP && p.dst_ip == PEER_IP)
        learn(f, &p);
    return 0;
}

static void feed(struct fz *f, const uint8_t *frame, size_t len, uint32_t rx_flags)
{
    stk_input(f->e, f->now, frame, len, rx_flags);
}

static void advance(struct fz *f, stk_time_t dt)
{
    f->now += dt;
    f->peer_ts += (uint32_t)(dt / 1000) + 1;
    stk_poll(f->e, f->now);
    /* A wheel tick may report slightly early; a few extra polls settle everything due. */
    for (int i = 0; i < 4 && stk_next_timer(f->e) <= f->now; i++)
        stk_poll(f->e, f->now);
}

/* A segment from the scripted peer during setup. */
static void peer_seg(struct fz *f, uint16_t sport, uint16_t dport, uint8_t flags, uint32_t seq,
                     uint32_t ack, bool opts, const void *payload, size_t len)
{
    struct pkt_tcp_spec s;
    pkt_tcp_spec_init(&s);
    memcpy(s.src_mac, peer_mac, 6);
    memcpy(s.dst_mac, our_mac, 6);
    s.src_ip = PEER_IP;
    s.dst_ip = OUR_IP;
    s.sport = sport;
    s.dport = dport;
    s.flags = flags;
    s.seq = seq;
    s.ack = ack;
    s.ip_id = f->ip_id++;
    s.payload = payload;
    s.payload_len = len;
    if (opts) {
        struct fz_conn *c = conn_find(f, dport, sport);
        s.ts = true;
        s.tsval = ++f->peer_ts;
        s.tsecr = c ? c->tsval : 0;
        if (flags & PKT_TCP_SYN) {
            s.mss = 1460;
            s.wscale = 7;
            s.sack_perm = true;
        }
    } else if (flags & PKT_TCP_SYN) {
        s.mss = 1400;
    }
    size_t n = pkt_build_tcp(&s, f->rx_buf, sizeof(f->rx_buf));
    if (n == 0)
        __builtin_trap();
    feed(f, f->rx_buf, n, 0);
}

static void peer_arp(struct fz *f, uint16_t op, const uint8_t mac[6])
{
    uint8_t buf[64];
    size_t n = op == PKT_ARP_REQUEST
                   ? pkt_build_arp_request(buf, sizeof(buf), mac, PEER_IP, OUR_IP)
                   : pkt_build_arp_reply(buf, sizeof(buf), mac, PEER_IP, our_mac, OUR_IP);
    feed(f, buf, n, 0);
}

/* An IPv6 record (see the top of the file). */
static void op_ip6(struct fz *f, const uint8_t *p, size_t len)
{
    uint8_t *b = f->rx_buf, *ip = b + PKT_ETH_HLEN;
    if (len < 3 || len - 3 > sizeof(f->rx_buf) - PKT_ETH_HLEN - 40)
        return;
    uint8_t mode = p[0];
    size_t plen = len - 3;
    const uint8_t *dst = (mode & FZ_6_DST_GL) ? our_gl : our_ll;
    uint8_t group[16] = {0xff, 0x02, [15] = 1};
    if (mode & FZ_6_DST_GROUP) {
        if (mode & FZ_6_DST_GL) { /* the solicited-node group of our global address */
            group[11] = 1;
            group[12] = 0xff;
            memcpy(group + 13, our_gl + 13, 3);
        }
        dst = group;
    }
    memcpy(b, our_mac, 6);
    if (dst[0] == 0xff) {
        b[0] = b[1] = 0x33;
        memcpy(b + 2, dst + 12, 4);
    }
    memcpy(b + 6, peer_mac, 6);
    if (mode & FZ_6_MAC_OTHER)
        b[11] ^= 0x40;
    stk__put16(b + 12, 0x86dd);
    memset(ip, 0, 40);
    ip[0] = 0x60;
    stk__put16(ip + 4, (uint16_t)plen);
    ip[6] = p[1];
    ip[7] = p[2];
    if (!(mode & FZ_6_SRC_UNSPEC))
        memcpy(ip + 8, (mode & FZ_6_SRC_GL) ? peer_gl : peer_ll, 16);
    memcpy(ip + 24, dst, 16);
    memcpy(ip + 40, p + 3, plen);
    if (mode & FZ_6_CSUM) {
        /* Find the upper layer as leniently as the engine's error path does. */
        uint8_t nh = ip[6];
        size_t off = 40, total = 40 + plen;
        for (int i = 0; i < 8 && (nh == 0 || nh == 43 || nh == 44 || nh == 60); i++) {
            if (total - off < 8)
                break;
            size_t hl = nh == 44 ? 8 : ((size_t)ip[off + 1] + 1) * 8;
            nh = ip[off];
            off += hl;
            if (off > total)
                break;
        }
        /* The checksum field: offset 2 in ICMPv6, 16 in TCP. */
        size_t co = nh == 58 ? 2 : nh == 6 ? 16 : 0;
        if (co && off + co + 2 <= total) {
            size_t ml = total - off;
            ip[off + co] = ip[off + co + 1] = 0;
            uint16_t c = pkt_csum_fold(
                pkt_csum_add(pseudo6(ip + 8, ip + 24, (uint32_t)ml, nh), ip + off, ml));
            stk__put16(ip + off + co, c);
        }
    }
    feed(f, b, PKT_ETH_HLEN + 40 + plen, 0);
}

/* An active open to the peer's port, answered with a SYN-ACK when synack is set. */
static int active_open(struct fz *f, uint16_t rport, bool synack, bool opts, uint32_t peer_isn)
{
    int sd = stk_socket(f->e, NULL);
    if (sd < 0)
        return sd;
    struct stk_sockaddr to = {.ip = PEER_IP, .port = rport};
    stk_connect(f->e, f->now, sd, &to);
    struct stk_sockaddr me;
    if (stk_getsockname(f->e, sd, &me) != 0)
        return sd;
    struct fz_conn *c = conn_find(f, me.port, rport);
    if (synack && c) {
        advance(f, 300);
        peer_seg(f, rport, me.port, PKT_TCP_SYN | PKT_TCP_ACK, peer_isn, c->snd_max, opts, NULL, 0);
    }
    return sd;
}

static void setup(struct fz *f)
{
    peer_arp(f, PKT_ARP_REQUEST, peer_mac);

    int l = stk_socket(f->e, NULL);
    struct stk_sockaddr any80 = {.ip = 0, .port = 80};
    stk_bind(f->e, l, &any80);
    stk_listen(f->e, l, 8);
    sd_add(f, l);

    /* UDP: a socket on port 53 (its queue fills up to the receive buffer) and one connected
     * to the peer's port 5353 (ICMP errors quoting it set its pending error). */
    int u = stk_udp_socket(f->e, NULL);
    struct stk_sockaddr any53 = {.ip = 0, .port = 53}, peer5353 = {.ip = PEER_IP, .port = 5353};
    stk_udp_bind(f->e, u, &any53);
    u = stk_udp_socket(f->e, NULL);
    stk_udp_connect(f->e, f->now, u, &peer5353);

    /* Passive, with timestamps, SACK and window scaling: established and accepted. */
    const uint32_t p_isn = 1000000;
    peer_seg(f, 40000, 80, PKT_TCP_SYN, p_isn, 0, true, NULL, 0);
    struct fz_conn *c = conn_find(f, 80, 40000);
    if (c) {
        advance(f, 200);
        peer_seg(f, 40000, 80, PKT_TCP_ACK, p_isn + 1, c->snd_max, true, NULL, 0);
    }
    sd_add(f, stk_accept(f->e, f->now, l, NULL, NULL));

    /* Passive, without options, left in SYN-RECEIVED. */
    peer_seg(f, 40001, 80, PKT_TCP_SYN, 2000000, 0, false, NULL, 0);

    /* Active, left in SYN-SENT. */
    sd_add(f, active_open(f, 8080, false, true, 0));

    /* Active, established without timestamps, with data queued and partly in flight. */
    int a2 = active_open(f, 8081, true, false, 5000000);
    sd_add(f, a2);
    for (size_t i = 0; i < 6000; i++)
        f->io_buf[i] = (uint8_t)(i * 7);
    stk_send(f->e, f->now, a2, f->io_buf, 6000, 0);

    /* Active, closed by us and by the peer: TIME-WAIT (the socket id is released). */
    int a3 = active_open(f, 8082, true, true, 7000000);
    struct stk_sockaddr me;
    if (a3 >= 0 && stk_getsockname(f->e, a3, &me) == 0) {
        stk_close(f->e, f->now, a3);
        struct fz_conn *t = conn_find(f, me.port, 8082);
        if (t) {
            advance(f, 300);
            peer_seg(f, 8082, me.port, PKT_TCP_FIN | PKT_TCP_ACK, t->rcv_nxt, t->snd_max, true,
                     NULL, 0);
        }
    } else if (a3 >= 0) {
        stk_close(f->e, f->now, a3);
    }
    /* TCP over IPv6: a dual-stack listener on [::]:81 and an active open to the peer's
     * global address, port 8083 (its SYN waits for neighbour discovery). */
    int l6 = stk_socket(f->e, NULL);
    struct stk_sockaddr any6 = {.family = STK_AF_INET6, .port = 81};
    stk_bind(f->e, l6, &any6);
    stk_listen(f->e, l6, 4);
    sd_add(f, l6);
    int a6 = stk_socket(f->e, NULL);
    struct stk_sockaddr to6 = {.family = STK_AF_INET6, .port = 8083};
    memcpy(to6.ip6, peer_gl, 16);
    stk_connect(f->e, f->now, a6, &to6);
    sd_add(f, a6);
    advance(f, 1000);

    /* FUZZ_INPUT_VERBOSE=1 shows that the setup reached the states it aims for. */
    const char *verbose = getenv("FUZZ_INPUT_VERBOSE");
    if (verbose && *verbose == '1') {
        const struct stk_counters *ctr = stk_counters(f->e);
        for (int s = STK_TCP_LISTEN; s <= STK_TCP_TIME_WAIT; s++)
            if (ctr->conns_by_state[s])
                fprintf(stderr, "setup: %u in %s\n", ctr->conns_by_state[s],
                        stk_state_name((enum stk_tcp_state)s));
        for (int i = 0; i < f->nconns; i++)
            fprintf(stderr, "setup: conn %d %u->%u rcv_nxt %u snd_max %u\n", i, f->conns[i].rport,
                    f->conns[i].lport, f->conns[i].rcv_nxt, f->conns[i].snd_max);
    }
}

/* Walks the options of a TCP header: makes a well-formed timestamp option pass PAWS, and
 * turns SACK block edges from deltas into sequence numbers near the ack field. */
static void patch_opts(struct fz *f, const struct fz_conn *c, uint8_t *th, size_t tlen,
                       uint8_t mode)
{
    size_t hl = (size_t)(th[12] >> 4) * 4;
    if (hl > tlen)
        hl = tlen;
    uint32_t ack = stk__get32(th + 8);
    for (size_t i = PKT_TCP_HLEN; i < hl;) {
        uint8_t kind = th[i];
        if (kind == PKT_TCPOPT_EOL)
            break;
        if (kind == PKT_TCPOPT_NOP) {
            i++;
            continue;
        }
        if (i + 1 >= hl || th[i + 1] < 2 || i + th[i + 1] > hl)
            break;
        uint8_t olen = th[i + 1];
        if (kind == PKT_TCPOPT_TS && olen == 10 && (mode & FZ_M_TS)) {
            stk__put32(th + i + 2, ++f->peer_ts);
            stk__put32(th + i + 6, c->tsval);
        }
        if (kind == PKT_TCPOPT_SACK && (mode & FZ_M_SACK_REL))
            for (size_t j = i + 2; j + 4 <= i + olen; j += 4)
                stk__put32(th + j, stk__get32(th + j) + ack);
        i += olen;
    }
}

/* op 1: a TCP segment for a known 4-tuple (or, for the selector past the end, with the
 * ports as given), wrapped in valid Ethernet and IPv4. */
static void op_tcp(struct fz *f, const uint8_t *p, size_t len)
{
    if (len < 2)
        return;
    unsigned sel = p[0] % (unsigned)(f->nconns + 1);
    uint8_t mode = p[1];
    p += 2;
    len -= 2;
    size_t tlen = len < PKT_TCP_HLEN ? PKT_TCP_HLEN : len;
    if (tlen > FZ_MTU - PKT_IP_HLEN)
        tlen = FZ_MTU - PKT_IP_HLEN;
    uint8_t *fr = f->rx_buf;
    uint8_t *ip = fr + PKT_ETH_HLEN, *th = ip + PKT_IP_HLEN;
    memset(th, 0, PKT_TCP_HLEN);
    memcpy(th, p, len < tlen ? len : tlen);

    if (sel < (unsigned)f->nconns) {
        const struct fz_conn *c = &f->conns[sel];
        stk__put16(th, c->rport);
        stk__put16(th + 2, c->lport);
        if (mode & FZ_M_SEQ_REL)
            stk__put32(th + 4, stk__get32(th + 4) + c->rcv_nxt);
        if (mode & FZ_M_ACK_REL)
            stk__put32(th + 8, stk__get32(th + 8) + c->snd_max);
        if (mode & (FZ_M_TS | FZ_M_SACK_REL))
            patch_opts(f, c, th, tlen, mode);
    }
    if (mode & FZ_M_FIX_DOFF) {
        unsigned doff = th[12] >> 4;
        if (doff < 5)
            doff = 5;
        if (doff * 4 > tlen)
            doff = (unsigned)(tlen / 4);
        th[12] = (uint8_t)(doff << 4 | (th[12] & 0x0f));
    }

    memcpy(fr, our_mac, 6);
    memcpy(fr + 6, peer_mac, 6);
    stk__put16(fr + 12, PKT_ETH_P_IP);
    ip[0] = 0x45;
    ip[1] = 0;
    stk__put16(ip + 2, (uint16_t)(PKT_IP_HLEN + tlen));
    stk__put16(ip + 4, f->ip_id++);
    stk__put16(ip + 6, PKT_IP_DF);
    ip[8] = 64;
    ip[9] = PKT_IP_PROTO_TCP;
    stk__put16(ip + 10, 0);
    stk__put32(ip + 12, PEER_IP);
    stk__put32(ip + 16, OUR_IP);
    stk__put16(ip + 10, pkt_csum_fold(pkt_csum_add(0, ip, PKT_IP_HLEN)));
    stk__put16(th + 16, 0);
    uint32_t sum = pkt_csum_pseudo(PEER_IP, OUR_IP, PKT_IP_PROTO_TCP, (uint16_t)tlen);
    uint16_t csum = pkt_csum_fold(pkt_csum_add(sum, th, tlen));
    if (mode & FZ_M_BAD_CSUM)
        csum ^= 0x0100;
    stk__put16(th + 16, csum);
    uint32_t rx_flags = 0;
    if ((mode & FZ_M_RX_OK) && !(mode & FZ_M_BAD_CSUM))
        rx_flags = STK_RX_IP_CSUM_OK | STK_RX_L4_CSUM_OK;
    feed(f, fr, PKT_ETH_HLEN + PKT_IP_HLEN + tlen, rx_flags);
}

/* An ICMP or ICMPv6 error about a TCP segment (see the top of the file). */
static void op_icmp(struct fz *f, const uint8_t *p, size_t len)
{
    uint8_t a[14] = {0};
    memcpy(a, p, len < sizeof(a) ? len : sizeof(a));
    unsigned sel = a[0] % (unsigned)(f->nconns + 1);
    uint16_t lport = stk__get16(a + 9), rport = stk__get16(a + 11);
    uint32_t seq = 0;
    if (sel < (unsigned)f->nconns) {
        lport = f->conns[sel].lport;
        rport = f->conns[sel].rport;
        seq = f->conns[sel].snd_max;
    }
    seq += (uint32_t)(int32_t)(int16_t)stk__get16(a + 7);
    bool v6 = a[13] & 1;
    uint8_t *fr = f->rx_buf, *ip = fr + PKT_ETH_HLEN;
    size_t iphl = v6 ? 40 : PKT_IP_HLEN, qhl = v6 ? 40 : PKT_IP_HLEN;
    uint8_t *ic = ip + iphl, *q = ic + 8, *th = q + qhl;
    size_t mlen = 8 + qhl + 8;
    memset(ip, 0, iphl + mlen);
    ic[0] = a[1];
    ic[1] = a[2];
    memcpy(ic + 4, a + 3, 4);
    if (v6) {
        q[0] = 0x60;
        stk__put16(q + 4, 8);
        q[6] = PKT_IP_PROTO_TCP;
        q[7] = 64;
        memcpy(q + 8, our_gl, 16);
        memcpy(q + 24, peer_gl, 16);
    } else {
        q[0] = 0x45;
        stk__put16(q + 2, 1500);
        q[8] = 64;
        q[9] = PKT_IP_PROTO_TCP;
        stk__put32(q + 12, OUR_IP);
        stk__put32(q + 16, PEER_IP);
    }
    stk__put16(th, lport);
    stk__put16(th + 2, rport);
    stk__put32(th + 4, seq);
    memcpy(fr, our_mac, 6);
    memcpy(fr + 6, peer_mac, 6);
    if (v6) {
        stk__put16(fr + 12, 0x86dd);
        ip[0] = 0x60;
        stk__put16(ip + 4, (uint16_t)mlen);
        ip[6] = 58;
        ip[7] = 64;
        memcpy(ip + 8, peer_gl, 16);
        memcpy(ip + 24, our_gl, 16);
        stk__put16(ic + 2, pkt_csum_fold(pkt_csum_add(pseudo6(peer_gl, our_gl, (uint32_t)mlen, 58),
                                                      ic, mlen)));
    } else {
        stk__put16(fr + 12, PKT_ETH_P_IP);
        ip[0] = 0x45;
        stk__put16(ip + 2, (uint16_t)(PKT_IP_HLEN + mlen));
        ip[8] = 64;
        ip[9] = PKT_IP_PROTO_ICMP;
        stk__put32(ip + 12, PEER_IP);
        stk__put32(ip + 16, OUR_IP);
        stk__put16(ip + 10, pkt_csum_fold(pkt_csum_add(0, ip, PKT_IP_HLEN)));
        stk__put16(ic + 2, pkt_csum_fold(pkt_csum_add(0, ic, mlen)));
    }
    feed(f, fr, PKT_ETH_HLEN + iphl + mlen, 0);
}

/* op 2: b0 picks the unit (us, ms, s, or the engine's next timer), b1..b2 the amount. */
static void op_time(struct fz *f, const uint8_t *p, size_t len)
{
    uint8_t unit = len > 0 ? p[0] : 0;
    uint32_t amount = (len > 1 ? p[1] : 1) | (uint32_t)(len > 2 ? p[2] : 0) << 8;
    stk_time_t dt;
    switch (unit & 3) {
    case 0:
        dt = amount;
        break;
    case 1:
        dt = (stk_time_t)amount * STK_US_PER_MS;
        break;
    case 2:
        dt = (stk_time_t)(amount & 0x3ff) * STK_US_PER_S;
        break;
    default: {
        stk_time_t next = stk_next_timer(f->e);
        dt = next == UINT64_MAX || next <= f->now ? 1 : next - f->now;
        if (dt > 3600 * STK_US_PER_S)
            dt = 3600 * STK_US_PER_S;
        break;
    }
    }
    advance(f, dt);
}

/* op 3: b0 picks the socket, b1 the call, b2..b5 its arguments, the rest is data. */
static void op_api(struct fz *f, const uint8_t *p, size_t len)
{
    uint8_t a[6] = {0};
    memcpy(a, p, len < sizeof(a) ? len : sizeof(a));
    const uint8_t *extra = len > sizeof(a) ? p + sizeof(a) : NULL;
    size_t nextra = len > sizeof(a) ? len - sizeof(a) : 0;
    int sd = f->nsds ? f->sds[a[0] % f->nsds] : -1;
    /* Some calls go to a raw id so that stale and invalid ids are exercised too. */
    if (a[0] >= 0xf0)
        sd = (int)(a[0] & 0x0f) - 2;
    uint32_t arg = (uint32_t)a[2] | (uint32_t)a[3] << 8;
    int val = (int)(int16_t)(a[4] | a[5] << 8);
    struct stk_sockaddr addr = {0};
    struct stk_iov iov[2];
    struct stk_tcp_info info;
    int v;

    switch (a[1] % 20) {
    case 0:
    case 1: {
        size_t n = arg % (sizeof(f->io_buf) + 1);
        if (extra)
            for (size_t i = 0; i < n; i++)
                f->io_buf[i] = extra[i % nextra];
        uint32_t flags = (a[1] >> 5) & (STK_MSG_MORE | STK_MSG_WAITALL);
        stk_send(f->e, f->now, sd, f->io_buf, n, flags);
        break;
    }
    case 2:
    case 3:
        stk_recv(f->e, f->now, sd, f->io_buf, arg % (sizeof(f->io_buf) + 1),
                 (a[1] >> 5) & (STK_MSG_PEEK | STK_MSG_WAITALL));
        break;
    case 4: {
        int n = stk_recv_peek(f->e, sd, iov);
        size_t avail = 0;
        for (int i = 0; i < n && i < 2; i++) {
            /* Touching every byte lets ASan check the pieces really are readable. */
            const volatile uint8_t *b = iov[i].base;
            for (size_t j = 0; j < iov[i].len; j++)
                (void)b[j];
            avail += iov[i].len;
        }
        stk_recv_consume(f->e, f->now, sd, (a[5] & 1) ? arg : (avail ? arg % (avail + 1) : 0));
        break;
    }
    case 5:
        stk_close(f->e, f->now, sd);
        break;
    case 6:
        stk_shutdown(f->e, f->now, sd, (enum stk_shut)(a[2] % 4));
        break;
    case 7:
        stk_abort(f->e, f->now, sd);
        break;
    case 8: {
        enum stk_sockopt opt = (enum stk_sockopt)(a[2] % 20);
        /* Buffer sizes are capped so that no input can make a run slow by allocating. */
        if ((opt == STK_SO_SNDBUF || opt == STK_SO_RCVBUF) && val > (1 << 20))
            val = 1 << 20;
        stk_setopt(f->e, f->now, sd, opt, val);
        break;
    }
    case 9:
        stk_getopt(f->e, sd, (enum stk_sockopt)(a[2] % 20), &v);
        break;
    case 10:
        sd_add(f, stk_accept(f->e, f->now, sd, NULL, &addr));
        break;
    case 11: {
        int n = stk_socket(f->e, NULL);
        sd_add(f, n);
        if (n >= 0 && (a[2] & 1)) {
            addr.ip = (a[2] & 2) ? OUR_IP : 0;
            addr.port = (uint16_t)(a[3] | a[4] << 8);
            stk_bind(f->e, n, &addr);
        }
        break;
    }
    case 12:
        addr.ip = (a[5] & 0x80) ? (uint32_t)(PKT_IP(198, 18, 0, 0) | (a[5] & 0x7f)) : PEER_IP;
        addr.port = (uint16_t)arg;
        stk_connect(f->e, f->now, sd, &addr);
        break;
    case 13:
        addr.ip = (a[5] & 1) ? OUR_IP : 0;
        addr.port = (uint16_t)arg;
        stk_bind(f->e, sd, &addr);
        break;
    case 14:
        stk_listen(f->e, sd, val);
        break;
    case 15:
        stk_tcp_info(f->e, sd, &info);
        break;
    case 16:
        stk_events(f->e, sd);
        stk_getsockname(f->e, sd, &addr);
        stk_getpeername(f->e, sd, &addr);
        break;
    case 17:
        stk_poll(f->e, f->now);
        break;
    case 18:
        stk_announce(f->e, f->now);
        break;
    default:
        (void)stk_user(f->e, sd);
        (void)stk_counters(f->e);
        break;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct fz f;
    memset(&f, 0, sizeof(f));
    f.now = STK_US_PER_S;
    f.peer_ts = 100;

    struct stk_config cfg = {0};
    memcpy(cfg.mac, our_mac, 6);
    cfg.ip = OUR_IP;
    cfg.prefix = 24;
    memcpy(cfg.ip6, our_gl, 16);
    cfg.ip6_prefix = 64;
    cfg.mtu = FZ_MTU;
    for (int i = 0; i < 16; i++)
        cfg.secret[i] = (uint8_t)(0x5a ^ i * 37);
    cfg.io_ctx = &f;
    cfg.tx = fz_tx;
    /* Few sockets and small buffers keep each run fast; 128 KiB of receive buffer still
     * needs window scaling. */
    cfg.max_socks = 32;
    cfg.sndbuf = 16384;
    cfg.rcvbuf = 131072;
    cfg.port_lo = 50000;
    cfg.port_hi = 50063;
    if (stk_engine_create(&cfg, f.now, &f.e) != 0)
        __builtin_trap();
    setup(&f);

    for (int rec = 0; rec < FZ_RECORDS && size >= 3; rec++) {
        uint8_t op = data[0];
        size_t len = (size_t)data[1] | (size_t)data[2] << 8;
        data += 3;
        size -= 3;
        if (len > size)
            len = size;
        switch (op % 5) {
        case 0:
            if (op & 0x40)
                op_ip6(&f, data, len);
            else if (op & 0x20)
                op_icmp(&f, data, len);
            else
                feed(&f, data, len, (op & 0x80) ? STK_RX_IP_CSUM_OK | STK_RX_L4_CSUM_OK : 0);
            break;
        case 1:
            op_tcp(&f, data, len);
            break;
        case 2:
            op_time(&f, data, len);
            break;
        case 3:
            op_api(&f, data, len);
            break;
        default:
            peer_arp(&f, (op & 0x80) ? PKT_ARP_REPLY : PKT_ARP_REQUEST,
                     len >= 6 && (data[0] & 0x40) ? data : peer_mac);
            break;
        }
        data += len;
        size -= len;
    }
    const char *verbose = getenv("FUZZ_INPUT_VERBOSE");
    if (verbose && *verbose == '1') {
        const struct stk_counters *c = stk_counters(f.e);
        fprintf(stderr,
                "end: tcp_icmp err_in %llu nosock %llu outwin %llu hard %llu soft %llu pmtu "
                "updates %llu ignored %llu\n",
                (unsigned long long)c->tcp_icmp_err_in, (unsigned long long)c->tcp_icmp_nosock,
                (unsigned long long)c->tcp_icmp_outwin, (unsigned long long)c->tcp_icmp_hard,
                (unsigned long long)c->tcp_icmp_soft, (unsigned long long)c->tcp_pmtu_updates,
                (unsigned long long)c->tcp_pmtu_ignored);
        fprintf(stderr,
                "end: bytes_in %llu out %llu fast_retrans %llu rto %llu ooo %llu zwp %llu "
                "rst_in %llu rst_out %llu passive %llu drops: paws %llu outwin %llu ack %llu\n",
                (unsigned long long)c->tcp_bytes_in, (unsigned long long)c->tcp_bytes_out,
                (unsigned long long)c->tcp_fast_retrans, (unsigned long long)c->tcp_rto,
                (unsigned long long)c->tcp_ooo_segs, (unsigned long long)c->tcp_zwp,
                (unsigned long long)c->tcp_rst_in, (unsigned long long)c->tcp_rst_out,
                (unsigned long long)c->tcp_passive_opens, (unsigned long long)c->tcp_drop_paws,
                (unsigned long long)c->tcp_drop_outwin, (unsigned long long)c->tcp_drop_ack);
        fprintf(stderr,
                "end: ip6_in %llu icmp6_echo_replies %llu nd_na_out %llu nd_ns_out %llu "
                "icmp6_errors_out %llu ip6_drop_rh %llu ip6_drop_frag %llu\n",
                (unsigned long long)c->ip6_in, (unsigned long long)c->icmp6_echo_replies,
                (unsigned long long)c->nd_na_out, (unsigned long long)c->nd_ns_out,
                (unsigned long long)c->icmp6_errors_out, (unsigned long long)c->ip6_drop_rh,
                (unsigned long long)c->ip6_drop_frag);
        for (int s = STK_TCP_LISTEN; s <= STK_TCP_TIME_WAIT; s++)
            if (c->conns_by_state[s])
                fprintf(stderr, "end: %u in %s\n", c->conns_by_state[s],
                        stk_state_name((enum stk_tcp_state)s));
    }
    stk_engine_destroy(f.e);
    return 0;
}

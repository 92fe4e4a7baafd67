/*
 * test_tcp6.c - TCP over IPv6 (stack/tcp_*.c with stack/ip6.c): handshakes both ways, data,
 * FIN, RST for closed ports, dual-stack listeners and IPV6_V6ONLY with the bind rules of
 * ipv6(7), SYN cookies, and two engines talking over the in-memory wire. Then UDP over IPv6
 * (stack/udp.c): send/receive, mandatory checksum, port unreachable, dual stack, fragments.
 *
 * One engine is driven through stk_input() with crafted frames and everything it transmits
 * is kept by a pkt_capture (as test_ip6.c). The IPv6 + TCP frames are built and checked here
 * with the test library's RFC 1071 code, not the engine's. Addresses: 2001:2::/48 and
 * fe80::/64 (IPv6), 198.18.0.0/24 (IPv4).
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "pkt.h"
#include "stk_int.h"
#include "tcp.h"
#include "tn.h"
#include "wire.h"

static const uint8_t US_MAC[6] = {0x02, 0, 0, 0, 0, 0x02};
static const uint8_t PEER_MAC[6] = {0x02, 0, 0, 0, 0, 0x01};
static const uint8_t US_LL[16] = {0xfe, 0x80, [11] = 0xff, [12] = 0xfe, [15] = 0x02};
static const uint8_t US_GL[16] = {0x20, 0x01, 0x00, 0x02, [15] = 0x02};
static const uint8_t PEER_LL[16] = {0xfe, 0x80, [15] = 0x01};
static const uint8_t PEER_GL[16] = {0x20, 0x01, 0x00, 0x02, [15] = 0x01};
static const uint8_t OTHER_GL[16] = {0x20, 0x01, 0x00, 0x02, [15] = 0x77};
static const uint8_t ALL_NODES[16] = {0xff, 0x02, [15] = 1};
static const uint8_t UNSPEC[16] = {0};
#define US_IP4   PKT_IP(198, 18, 0, 2)
#define PEER_IP4 PKT_IP(198, 18, 0, 1)

static struct tn *tn_new_cfg(struct stk_config *c)
{
    memcpy(c->mac, US_MAC, 6);
    c->ip = US_IP4;
    c->prefix = 24;
    memcpy(c->ip6, US_GL, 16);
    c->ip6_prefix = 64;
    if (!c->max_socks)
        c->max_socks = 64;
    c->sndbuf = c->rcvbuf = 65536;
    struct tn *t = tn_create(c);
    pkt_capture_clear(&t->cap); /* the gratuitous ARP */
    return t;
}

static struct tn *tn_new(void)
{
    struct stk_config c;
    memset(&c, 0, sizeof(c));
    return tn_new_cfg(&c);
}

/* ---- IPv6 + TCP frames ------------------------------------------------------------------ */

static size_t mk6(uint8_t *f, const uint8_t dmac[6], const uint8_t src[16], const uint8_t dst[16],
                  uint8_t nh, const uint8_t *pay, size_t plen)
{
    memcpy(f, dmac, 6);
    memcpy(f + 6, PEER_MAC, 6);
    f[12] = 0x86;
    f[13] = 0xdd;
    uint8_t *ip = f + 14;
    memset(ip, 0, 40);
    ip[0] = 0x60;
    ip[4] = (uint8_t)(plen >> 8);
    ip[5] = (uint8_t)plen;
    ip[6] = nh;
    ip[7] = 64;
    memcpy(ip + 8, src, 16);
    memcpy(ip + 24, dst, 16);
    memcpy(ip + 40, pay, plen);
    return 54 + plen;
}

struct seg6 {
    const uint8_t *src, *dst;
    uint16_t sport, dport;
    uint32_t seq, ack;
    uint8_t flags;
    uint16_t mss; /* 0: no option */
    const void *data;
    size_t dlen;
    bool bad_csum;
};

static size_t mk_tcp6(uint8_t *f, const struct seg6 *s)
{
    uint8_t th[1500];
    size_t hl = s->mss ? 24 : 20;
    memset(th, 0, hl);
    th[0] = (uint8_t)(s->sport >> 8);
    th[1] = (uint8_t)s->sport;
    th[2] = (uint8_t)(s->dport >> 8);
    th[3] = (uint8_t)s->dport;
    for (int i = 0; i < 4; i++) {
        th[4 + i] = (uint8_t)(s->seq >> (24 - 8 * i));
        th[8 + i] = (uint8_t)(s->ack >> (24 - 8 * i));
    }
    th[12] = (uint8_t)((hl / 4) << 4);
    th[13] = s->flags;
    th[14] = 0xff;
    th[15] = 0xff;
    if (s->mss) {
        th[20] = 2;
        th[21] = 4;
        th[22] = (uint8_t)(s->mss >> 8);
        th[23] = (uint8_t)s->mss;
    }
    if (s->dlen)
        memcpy(th + hl, s->data, s->dlen);
    size_t len = hl + s->dlen;
    uint16_t c = pkt_csum_fold(pkt_csum_add(pseudo6(s->src, s->dst, 6, (uint32_t)len), th, len));
    if (s->bad_csum)
        c ^= 1;
    th[16] = (uint8_t)(c >> 8);
    th[17] = (uint8_t)c;
    const uint8_t *dmac = s->dst[0] == 0xff ? (const uint8_t[6]){0x33, 0x33, 0, 0, 0, 1} : US_MAC;
    return mk6(f, dmac, s->src, s->dst, 6, th, len);
}

static void send6(struct tn *t, const struct seg6 *s)
{
    uint8_t f[1600];
    inject(t, f, mk_tcp6(f, s));
}

/* A TCP segment the engine sent over IPv6, checked: Ethernet from us, IPv6, Next Header 6,
 * lengths exact, TCP checksum right over the IPv6 pseudo-header. */
struct o6 {
    uint8_t buf[2000];
    size_t len;
    uint8_t src[16], dst[16];
    uint16_t sport, dport, win;
    uint32_t seq, ack;
    uint8_t flags;
    uint16_t mss;
    const uint8_t *data;
    size_t dlen;
};

static void pop_tcp6(struct tn *t, struct o6 *o)
{
    o->len = tn_pop6(t, US_MAC, 6, o->buf, sizeof(o->buf));
    ck_assert_uint_ge(o->len, 74);
    const uint8_t *ip = o->buf + 14;
    size_t plen = o->len - 54;
    memcpy(o->src, ip + 8, 16);
    memcpy(o->dst, ip + 24, 16);
    const uint8_t *th = ip + 40;
    o->sport = (uint16_t)(th[0] << 8 | th[1]);
    o->dport = (uint16_t)(th[2] << 8 | th[3]);
    o->seq = (uint32_t)th[4] << 24 | (uint32_t)th[5] << 16 | (uint32_t)th[6] << 8 | th[7];
    o->ack = (uint32_t)th[8] << 24 | (uint32_t)th[9] << 16 | (uint32_t)th[10] << 8 | th[11];
    size_t hl = (size_t)(th[12] >> 4) * 4;
    ck_assert_uint_ge(hl, 20);
    ck_assert_uint_le(hl, plen);
    o->flags = th[13];
    o->win = (uint16_t)(th[14] << 8 | th[15]);
    o->mss = 0;
    for (size_t i = 20; i < hl;) {
        if (th[i] == 0)
            break;
        if (th[i] == 1) {
            i++;
            continue;
        }
        if (th[i] == 2)
            o->mss = (uint16_t)(th[i + 2] << 8 | th[i + 3]);
        i += th[i + 1];
    }
    o->data = th + hl;
    o->dlen = plen - hl;
}

/* The peer announces itself (a solicitation with its MAC), so the engine can answer at once;
 * the advertisement it sends back is discarded. */
static void learn_peer(struct tn *t, const uint8_t peer[16])
{
    uint8_t m[32] = {135};
    memcpy(m + 8, US_GL, 16);
    if (stk__ip6_is_linklocal(peer))
        memcpy(m + 8, US_LL, 16);
    m[24] = 1;
    m[25] = 1;
    memcpy(m + 26, PEER_MAC, 6);
    uint16_t c = pkt_csum_fold(pkt_csum_add(pseudo6(peer, m + 8, 58, 32), m, 32));
    m[2] = (uint8_t)(c >> 8);
    m[3] = (uint8_t)c;
    uint8_t f[200];
    size_t n = mk6(f, US_MAC, peer, m + 8, 58, m, 32);
    f[14 + 7] = 255;
    inject(t, f, n);
    ck_assert_uint_eq(pkt_capture_count(&t->cap), 1);
    pkt_capture_clear(&t->cap);
}

static void learn_peer4(struct tn *t)
{
    uint8_t f[100];
    inject(t, f, pkt_build_arp_request(f, sizeof(f), PEER_MAC, PEER_IP4, US_IP4));
    pkt_capture_clear(&t->cap);
}

static struct stk_sockaddr sa6(const uint8_t a[16], uint16_t port)
{
    struct stk_sockaddr s = {.family = STK_AF_INET6, .port = port};
    memcpy(s.ip6, a, 16);
    return s;
}

static struct stk_sockaddr sa4(uint32_t ip, uint16_t port)
{
    return (struct stk_sockaddr){.family = STK_AF_INET, .ip = ip, .port = port};
}

static int listen_on(struct tn *t, struct stk_sockaddr a, int v6only, int backlog)
{
    int sd = stk_socket(t->e, NULL);
    ck_assert_int_ge(sd, 0);
    if (v6only >= 0)
        ck_assert_int_eq(stk_setopt(t->e, t->now, sd, STK_IPV6_V6ONLY, v6only), 0);
    ck_assert_int_eq(stk_bind(t->e, sd, &a), 0);
    ck_assert_int_eq(stk_listen(t->e, sd, backlog), 0);
    return sd;
}

/* A passive handshake from peer:sport to dst:dport; returns our ISS. */
static uint32_t handshake6(struct tn *t, const uint8_t peer[16], const uint8_t dst[16],
                           uint16_t sport, uint16_t dport, uint32_t iss)
{
    struct seg6 s = {.src = peer,
                     .dst = dst,
                     .sport = sport,
                     .dport = dport,
                     .seq = iss,
                     .flags = PKT_TCP_SYN,
                     .mss = 1440};
    send6(t, &s);
    struct o6 o;
    pop_tcp6(t, &o);
    ck_assert_uint_eq(o.flags, PKT_TCP_SYN | PKT_TCP_ACK);
    ck_assert_mem_eq(o.src, dst, 16);
    ck_assert_mem_eq(o.dst, peer, 16);
    ck_assert_uint_eq(o.sport, dport);
    ck_assert_uint_eq(o.dport, sport);
    ck_assert_uint_eq(o.ack, iss + 1);
    ck_assert_uint_eq(o.mss, 1500 - 60); /* IPv6: MTU - 40 - 20 */
    s = (struct seg6){.src = peer,
                      .dst = dst,
                      .sport = sport,
                      .dport = dport,
                      .seq = iss + 1,
                      .ack = o.seq + 1,
                      .flags = PKT_TCP_ACK};
    send6(t, &s);
    expect_none(t);
    return o.seq;
}

/* ---- Tests ------------------------------------------------------------------------------ */

/* The connection hash is keyed (tcp_conn.c "Lookup"): 4096 IPv6 peers of one /64 whose
 * addresses all fold to the same 32 bits (the old fixed hash put every one of them in the same
 * chain) spread over the 4096 buckets like random tuples, and an engine with another secret
 * places them elsewhere; 4096 ports of one IPv4 peer spread the same way. */
static unsigned max_load(const unsigned *n, unsigned buckets)
{
    unsigned m = 0;
    for (unsigned i = 0; i < buckets; i++)
        m = n[i] > m ? n[i] : m;
    return m;
}

START_TEST(conn_hash_keyed)
{
    enum { N = 4096 };
    struct stk_config c;
    memset(&c, 0, sizeof(c));
    c.max_socks = N;
    memset(c.secret, 0x5a, sizeof(c.secret));
    struct tn *a = tn_new_cfg(&c);
    memset(&c, 0, sizeof(c));
    c.max_socks = N;
    memset(c.secret, 0xa5, sizeof(c.secret));
    struct tn *b = tn_new_cfg(&c);
    static unsigned na[N], nb[N], n4[N];
    memset(na, 0, sizeof(na));
    memset(nb, 0, sizeof(nb));
    memset(n4, 0, sizeof(n4));
    unsigned same = 0;
    uint32_t fold0 = 0;
    for (uint32_t i = 0; i < N; i++) {
        struct stk_tcb t;
        memset(&t, 0, sizeof(t));
        t.flags = TF_V6;
        memcpy(t.lip6, US_GL, 16);
        memcpy(t.rip6, PEER_GL, 16);
        t.lport = 80;
        t.rport = 40000;
        uint32_t x = i * 2654435761u;
        stk__put32(t.rip6 + 8, x);
        stk__put32(t.rip6 + 12, x ^ 0x12345678u);
        uint32_t f = stk__fold6(t.rip6);
        if (i == 0)
            fold0 = f;
        ck_assert_uint_eq(f, fold0);
        uint32_t ba = stk__conn_bucket(a->e, &t), bb = stk__conn_bucket(b->e, &t);
        ck_assert_uint_lt(ba, N);
        na[ba]++;
        nb[bb]++;
        same += ba == bb;

        struct stk_tcb t4;
        memset(&t4, 0, sizeof(t4));
        t4.lip = US_IP4;
        t4.rip = PEER_IP4;
        t4.lport = 80;
        t4.rport = (uint16_t)(1024 + i);
        n4[stk__conn_bucket(a->e, &t4)]++;
    }
    /* 4096 random tuples in 4096 buckets: the fullest holds about 6 (more than 12 has a
     * probability far below 1e-6). */
    ck_assert_uint_le(max_load(na, N), 12);
    ck_assert_uint_le(max_load(nb, N), 12);
    ck_assert_uint_le(max_load(n4, N), 12);
    ck_assert_uint_lt(same, 32); /* about 1 expected */
    tn_free(a);
    tn_free(b);
}
END_TEST

START_TEST(passive_open_data_fin)
{
    struct tn *t = tn_new();
    learn_peer(t, PEER_GL);
    int l = listen_on(t, sa6(UNSPEC, 80), -1, 8);
    uint32_t ours = handshake6(t, PEER_GL, US_GL, 40000, 80, 1000);
    struct stk_sockaddr peer;
    int c = stk_accept(t->e, t->now, l, NULL, &peer);
    ck_assert_int_ge(c, 0);
    ck_assert_uint_eq(peer.family, STK_AF_INET6);
    ck_assert_mem_eq(peer.ip6, PEER_GL, 16);
    ck_assert_uint_eq(peer.port, 40000);
    struct stk_sockaddr me;
    ck_assert_int_eq(stk_getsockname(t->e, c, &me), 0);
    ck_assert_uint_eq(me.family, STK_AF_INET6);
    ck_assert_mem_eq(me.ip6, US_GL, 16);
    ck_assert_uint_eq(me.port, 80);
    ck_assert_int_eq(stk_getsockname(t->e, l, &me), 0);
    ck_assert_uint_eq(me.family, STK_AF_INET6);
    ck_assert_mem_eq(me.ip6, UNSPEC, 16);
    ck_assert_int_eq(stk_getpeername(t->e, c, &peer), 0);
    ck_assert_mem_eq(peer.ip6, PEER_GL, 16);
    int mss = 0;
    ck_assert_int_eq(stk_getopt(t->e, c, STK_TCP_MAXSEG, &mss), 0);
    ck_assert_int_eq(mss, 1440);

    /* Data in, acknowledged; data out with a correct checksum. */
    struct seg6 s = {.src = PEER_GL,
                     .dst = US_GL,
                     .sport = 40000,
                     .dport = 80,
                     .seq = 1001,
                     .ack = ours + 1,
                     .flags = PKT_TCP_ACK | PKT_TCP_PSH,
                     .data = "hello",
                     .dlen = 5};
    send6(t, &s);
    char buf[16];
    ck_assert_int_eq(stk_recv(t->e, t->now, c, buf, sizeof(buf), 0), 5);
    ck_assert_mem_eq(buf, "hello", 5);
    ck_assert_int_eq(stk_send(t->e, t->now, c, "world!", 6, 0), 6);
    struct o6 o;
    while (pkt_capture_count(&t->cap) > 1)
        pop_tcp6(t, &o); /* a pure ACK may come first */
    pop_tcp6(t, &o);
    ck_assert_uint_eq(o.dlen, 6);
    ck_assert_mem_eq(o.data, "world!", 6);
    ck_assert_uint_eq(o.seq, ours + 1);
    ck_assert_uint_eq(o.ack, 1006);
    ck_assert_mem_eq(o.dst, PEER_GL, 16);

    /* The peer's FIN: EOF; our close sends FIN. */
    s = (struct seg6){.src = PEER_GL,
                      .dst = US_GL,
                      .sport = 40000,
                      .dport = 80,
                      .seq = 1006,
                      .ack = ours + 7,
                      .flags = PKT_TCP_ACK | PKT_TCP_FIN};
    send6(t, &s);
    ck_assert_int_eq(stk_recv(t->e, t->now, c, buf, sizeof(buf), 0), 0);
    pkt_capture_clear(&t->cap);
    ck_assert_int_eq(stk_close(t->e, t->now, c), 0);
    pop_tcp6(t, &o);
    ck_assert(o.flags & PKT_TCP_FIN);
    ck_assert_uint_eq(o.seq, ours + 7);
    ck_assert_uint_eq(ctr(t)->ip6_drop_proto, 0);
    tn_free(t);
}
END_TEST

START_TEST(active_open)
{
    struct tn *t = tn_new();
    learn_peer(t, PEER_GL);
    int sd = stk_socket(t->e, NULL);
    struct stk_sockaddr to = sa6(PEER_GL, 8080);
    ck_assert_int_eq(stk_connect(t->e, t->now, sd, &to), -EINPROGRESS);
    struct o6 o;
    pop_tcp6(t, &o);
    ck_assert_uint_eq(o.flags, PKT_TCP_SYN);
    ck_assert_mem_eq(o.src, US_GL, 16);
    ck_assert_mem_eq(o.dst, PEER_GL, 16);
    ck_assert_uint_eq(o.dport, 8080);
    ck_assert_uint_eq(o.mss, 1440);
    uint16_t lport = o.sport;
    struct seg6 s = {.src = PEER_GL,
                     .dst = US_GL,
                     .sport = 8080,
                     .dport = lport,
                     .seq = 5000,
                     .ack = o.seq + 1,
                     .flags = PKT_TCP_SYN | PKT_TCP_ACK,
                     .mss = 1220};
    send6(t, &s);
    int st = -1;
    ck_assert_int_eq(stk_getopt(t->e, sd, STK_SO_STATE, &st), 0);
    ck_assert_int_eq(st, STK_TCP_ESTABLISHED);
    pop_tcp6(t, &o);
    ck_assert_uint_eq(o.flags, PKT_TCP_ACK);
    ck_assert_uint_eq(o.ack, 5001);
    struct stk_sockaddr a;
    ck_assert_int_eq(stk_getpeername(t->e, sd, &a), 0);
    ck_assert_uint_eq(a.family, STK_AF_INET6);
    ck_assert_mem_eq(a.ip6, PEER_GL, 16);
    ck_assert_uint_eq(a.port, 8080);
    ck_assert_int_eq(stk_getsockname(t->e, sd, &a), 0);
    ck_assert_mem_eq(a.ip6, US_GL, 16);
    ck_assert_uint_eq(a.port, lport);
    int mss = 0;
    ck_assert_int_eq(stk_getopt(t->e, sd, STK_TCP_MAXSEG, &mss), 0);
    ck_assert_int_eq(mss, 1220);

    /* Link-local: the source is our link-local address. A segment for the same ports from
     * another address is not this connection's. */
    learn_peer(t, PEER_LL);
    int sd2 = stk_socket(t->e, NULL);
    to = sa6(PEER_LL, 8080);
    ck_assert_int_eq(stk_connect(t->e, t->now, sd2, &to), -EINPROGRESS);
    pop_tcp6(t, &o);
    ck_assert_uint_eq(o.flags, PKT_TCP_SYN);
    ck_assert_mem_eq(o.src, US_LL, 16);
    ck_assert_mem_eq(o.dst, PEER_LL, 16);

    /* Errors: unspecified, multicast, port 0, off-link without a gateway, an IPv4 socket. */
    int sd3 = stk_socket(t->e, NULL);
    to = sa6(UNSPEC, 80);
    ck_assert_int_eq(stk_connect(t->e, t->now, sd3, &to), -EINVAL);
    to = sa6(ALL_NODES, 80);
    ck_assert_int_eq(stk_connect(t->e, t->now, sd3, &to), -ENETUNREACH);
    to = sa6(PEER_GL, 0);
    ck_assert_int_eq(stk_connect(t->e, t->now, sd3, &to), -ECONNREFUSED);
    const uint8_t far[16] = {0x20, 0x01, 0x00, 0x02, 0x00, 0x09, [15] = 9};
    to = sa6(far, 80);
    ck_assert_int_eq(stk_connect(t->e, t->now, sd3, &to), -ENETUNREACH);
    struct stk_sockaddr b4 = sa4(0, 0);
    ck_assert_int_eq(stk_bind(t->e, sd3, &b4), 0);
    to = sa6(PEER_GL, 80);
    ck_assert_int_eq(stk_connect(t->e, t->now, sd3, &to), -EAFNOSUPPORT);
    tn_free(t);
}
END_TEST

START_TEST(rst_for_closed_port)
{
    struct tn *t = tn_new();
    learn_peer(t, PEER_GL);
    struct seg6 s = {
        .src = PEER_GL, .dst = US_GL, .sport = 41000, .dport = 81, .seq = 77, .flags = PKT_TCP_SYN};
    send6(t, &s);
    struct o6 o;
    pop_tcp6(t, &o);
    ck_assert_uint_eq(o.flags, PKT_TCP_RST | PKT_TCP_ACK);
    ck_assert_uint_eq(o.seq, 0);
    ck_assert_uint_eq(o.ack, 78);
    ck_assert_mem_eq(o.src, US_GL, 16);
    ck_assert_mem_eq(o.dst, PEER_GL, 16);
    ck_assert_uint_eq(o.sport, 81);
    ck_assert_uint_eq(o.dport, 41000);
    /* An ACK: RST with SEQ = SEG.ACK. */
    s.flags = PKT_TCP_ACK;
    s.ack = 123456;
    send6(t, &s);
    pop_tcp6(t, &o);
    ck_assert_uint_eq(o.flags, PKT_TCP_RST);
    ck_assert_uint_eq(o.seq, 123456);
    /* A RST is never answered; a bad checksum is dropped and counted; a multicast
     * destination is never answered. */
    s.flags = PKT_TCP_RST;
    send6(t, &s);
    s.flags = PKT_TCP_SYN;
    s.bad_csum = true;
    send6(t, &s);
    ck_assert_uint_eq(ctr(t)->tcp_drop_csum, 1);
    s.bad_csum = false;
    s.dst = ALL_NODES;
    send6(t, &s);
    expect_none(t);
    /* A listener on another IPv6 address of ours does not take it either. */
    int l = listen_on(t, sa6(US_LL, 81), -1, 4);
    (void)l;
    s.dst = US_GL;
    send6(t, &s);
    pop_tcp6(t, &o);
    ck_assert_uint_eq(o.flags, PKT_TCP_RST | PKT_TCP_ACK);
    tn_free(t);
}
END_TEST

/* An IPv4 handshake from PEER_IP4:sport to dport; returns our ISS. */
static uint32_t handshake4(struct tn *t, uint16_t sport, uint16_t dport, uint32_t iss)
{
    struct pkt_tcp_spec sp;
    pkt_tcp_spec_init(&sp);
    sp.sport = sport;
    sp.dport = dport;
    sp.seq = iss;
    sp.flags = PKT_TCP_SYN;
    sp.mss = 1460;
    uint8_t f[200];
    inject(t, f, pkt_build_tcp(&sp, f, sizeof(f)));
    struct pkt_info pi;
    ck_assert_int_eq(pkt_capture_pop_parse(&t->cap, &pi), PKT_OK);
    ck_assert_uint_eq(pi.flags, PKT_TCP_SYN | PKT_TCP_ACK);
    ck_assert_uint_eq(pi.src_ip, US_IP4);
    ck_assert_uint_eq(pi.opt.mss, 1460);
    pkt_tcp_spec_init(&sp);
    sp.sport = sport;
    sp.dport = dport;
    sp.seq = iss + 1;
    sp.ack = pi.seq + 1;
    sp.flags = PKT_TCP_ACK;
    inject(t, f, pkt_build_tcp(&sp, f, sizeof(f)));
    expect_none(t);
    return pi.seq;
}

START_TEST(dual_stack_listener)
{
    struct tn *t = tn_new();
    learn_peer(t, PEER_GL);
    learn_peer4(t);
    int l = listen_on(t, sa6(UNSPEC, 80), 0, 8);
    handshake4(t, 33000, 80, 100);
    handshake6(t, PEER_GL, US_GL, 33001, 80, 200);
    struct stk_sockaddr p;
    int c4 = stk_accept(t->e, t->now, l, NULL, &p);
    ck_assert_int_ge(c4, 0);
    ck_assert_uint_eq(p.family, STK_AF_INET);
    ck_assert_uint_eq(p.ip, PEER_IP4);
    ck_assert_uint_eq(p.port, 33000);
    struct stk_sockaddr me;
    ck_assert_int_eq(stk_getsockname(t->e, c4, &me), 0);
    ck_assert_uint_eq(me.family, STK_AF_INET);
    ck_assert_uint_eq(me.ip, US_IP4);
    int c6 = stk_accept(t->e, t->now, l, NULL, &p);
    ck_assert_int_ge(c6, 0);
    ck_assert_uint_eq(p.family, STK_AF_INET6);
    ck_assert_mem_eq(p.ip6, PEER_GL, 16);
    ck_assert_uint_eq(p.port, 33001);
    /* Both move data. */
    ck_assert_int_eq(stk_send(t->e, t->now, c4, "v4", 2, 0), 2);
    struct pkt_info pi;
    ck_assert_int_eq(pkt_capture_pop_parse(&t->cap, &pi), PKT_OK);
    ck_assert_uint_eq(pi.payload_len, 2);
    ck_assert_int_eq(stk_send(t->e, t->now, c6, "v6", 2, 0), 2);
    struct o6 o;
    pop_tcp6(t, &o);
    ck_assert_uint_eq(o.dlen, 2);
    ck_assert_mem_eq(o.data, "v6", 2);

    /* The IPv4 wildcard on the same port overlaps the dual-stack socket. */
    int s4 = stk_socket(t->e, NULL);
    struct stk_sockaddr a = sa4(0, 80);
    ck_assert_int_eq(stk_bind(t->e, s4, &a), -EADDRINUSE);
    a = sa4(US_IP4, 80);
    ck_assert_int_eq(stk_bind(t->e, s4, &a), -EADDRINUSE);
    /* So does another IPv6 socket, V6ONLY or not. */
    int s6 = stk_socket(t->e, NULL);
    ck_assert_int_eq(stk_setopt(t->e, t->now, s6, STK_IPV6_V6ONLY, 1), 0);
    a = sa6(US_GL, 80);
    ck_assert_int_eq(stk_bind(t->e, s6, &a), -EADDRINUSE);
    tn_free(t);
}
END_TEST

START_TEST(v6only_rules)
{
    struct tn *t = tn_new();
    learn_peer(t, PEER_GL);
    learn_peer4(t);
    /* V6ONLY: an IPv4 wildcard listener may share the port; IPv4 goes to it. */
    int l6 = listen_on(t, sa6(UNSPEC, 80), 1, 8);
    int v = -1;
    ck_assert_int_eq(stk_getopt(t->e, l6, STK_IPV6_V6ONLY, &v), 0);
    ck_assert_int_eq(v, 1);
    ck_assert_int_eq(stk_setopt(t->e, t->now, l6, STK_IPV6_V6ONLY, 0), -EINVAL); /* bound */
    int l4 = listen_on(t, sa4(0, 80), -1, 8);
    handshake4(t, 34000, 80, 10);
    handshake6(t, PEER_GL, US_GL, 34001, 80, 20);
    struct stk_sockaddr p;
    int c = stk_accept(t->e, t->now, l6, NULL, &p);
    ck_assert_int_ge(c, 0);
    ck_assert_uint_eq(p.family, STK_AF_INET6);
    ck_assert_int_eq(stk_accept(t->e, t->now, l6, NULL, &p), -EAGAIN);
    c = stk_accept(t->e, t->now, l4, NULL, &p);
    ck_assert_int_ge(c, 0);
    ck_assert_uint_eq(p.family, STK_AF_INET);
    ck_assert_uint_eq(p.ip, PEER_IP4);

    /* A V6ONLY listener alone: IPv4 SYNs get a RST. */
    listen_on(t, sa6(UNSPEC, 90), 1, 8);
    struct pkt_tcp_spec sp;
    pkt_tcp_spec_init(&sp);
    sp.sport = 34002;
    sp.dport = 90;
    sp.seq = 5;
    sp.flags = PKT_TCP_SYN;
    uint8_t f[200];
    inject(t, f, pkt_build_tcp(&sp, f, sizeof(f)));
    struct pkt_info pi;
    ck_assert_int_eq(pkt_capture_pop_parse(&t->cap, &pi), PKT_OK);
    ck_assert_uint_eq(pi.flags, PKT_TCP_RST | PKT_TCP_ACK);

    /* The same the other way: an IPv4 wildcard first, then [::] without V6ONLY fails. */
    listen_on(t, sa4(0, 91), -1, 8);
    int s = stk_socket(t->e, NULL);
    struct stk_sockaddr a = sa6(UNSPEC, 91);
    ck_assert_int_eq(stk_bind(t->e, s, &a), -EADDRINUSE);
    ck_assert_int_eq(stk_setopt(t->e, t->now, s, STK_IPV6_V6ONLY, 1), 0);
    ck_assert_int_eq(stk_bind(t->e, s, &a), 0);
    ck_assert_int_eq(stk_listen(t->e, s, 4), 0);

    /* Addresses: not ours, multicast, a v6 address of ours (global and link-local). */
    s = stk_socket(t->e, NULL);
    a = sa6(OTHER_GL, 92);
    ck_assert_int_eq(stk_bind(t->e, s, &a), -EADDRNOTAVAIL);
    a = sa6(ALL_NODES, 92);
    ck_assert_int_eq(stk_bind(t->e, s, &a), -EINVAL);
    a = sa6(US_LL, 92);
    ck_assert_int_eq(stk_bind(t->e, s, &a), 0);
    int s2 = stk_socket(t->e, NULL);
    a = sa6(US_GL, 92);
    ck_assert_int_eq(stk_bind(t->e, s2, &a), 0); /* different addresses: no overlap */
    int s3 = stk_socket(t->e, NULL);
    a = sa4(0, 92);
    ck_assert_int_eq(stk_bind(t->e, s3, &a), 0); /* specific IPv6 addresses: no overlap */
    tn_free(t);
}
END_TEST

START_TEST(syn_cookies)
{
    struct tn *t = tn_new();
    learn_peer(t, PEER_GL);
    int l = listen_on(t, sa6(UNSPEC, 80), -1, 1);
    /* The first SYN fills the SYN queue (backlog 1); the second gets a cookie. */
    struct seg6 s = {.src = PEER_GL,
                     .dst = US_GL,
                     .sport = 42000,
                     .dport = 80,
                     .seq = 1,
                     .flags = PKT_TCP_SYN,
                     .mss = 1440};
    send6(t, &s);
    struct o6 o;
    pop_tcp6(t, &o);
    ck_assert_uint_eq(o.flags, PKT_TCP_SYN | PKT_TCP_ACK);
    s.sport = 42001;
    s.seq = 900;
    send6(t, &s);
    pop_tcp6(t, &o);
    ck_assert_uint_eq(o.flags, PKT_TCP_SYN | PKT_TCP_ACK);
    ck_assert_uint_eq(o.ack, 901);
    ck_assert_uint_le(o.mss, 1440);
    ck_assert_uint_eq(ctr(t)->tcp_syncookies_sent, 1);
    /* A cookie checked against another address fails (the MAC covers the addresses). */
    struct seg6 a = {.src = OTHER_GL,
                     .dst = US_GL,
                     .sport = 42001,
                     .dport = 80,
                     .seq = 901,
                     .ack = o.seq + 1,
                     .flags = PKT_TCP_ACK};
    send6(t, &a);
    ck_assert_uint_eq(ctr(t)->tcp_syncookies_bad, 1);
    pkt_capture_clear(&t->cap);
    a.src = PEER_GL;
    send6(t, &a);
    ck_assert_uint_eq(ctr(t)->tcp_syncookies_ok, 1);
    struct stk_sockaddr p;
    int c = stk_accept(t->e, t->now, l, NULL, &p);
    ck_assert_int_ge(c, 0);
    ck_assert_uint_eq(p.family, STK_AF_INET6);
    ck_assert_uint_eq(p.port, 42001);
    ck_assert_int_eq(stk_send(t->e, t->now, c, "x", 1, 0), 1);
    pop_tcp6(t, &o);
    ck_assert_uint_eq(o.seq, a.ack);
    ck_assert_uint_eq(o.dlen, 1);
    tn_free(t);
}
END_TEST

/* ---- Two engines over the wire ------------------------------------------------------------ */

struct xfer {
    struct wire *w;
    int csd, ssd, lsd;
    size_t sent, got;
    uint8_t *out, *in;
    size_t total;
};

static int xfer_done(void *ctx)
{
    struct xfer *x = ctx;
    struct stk_engine *a = wire_engine(x->w, WIRE_A), *b = wire_engine(x->w, WIRE_B);
    stk_time_t now = x->w->now;
    if (x->ssd < 0) {
        x->ssd = stk_accept(a, now, x->lsd, NULL, NULL);
        if (x->ssd < 0)
            return 0;
    }
    if (x->sent < x->total) {
        ssize_t n = stk_send(b, now, x->csd, x->out + x->sent, x->total - x->sent, 0);
        if (n > 0)
            x->sent += (size_t)n;
    }
    ssize_t n = stk_recv(a, now, x->ssd, x->in + x->got, x->total - x->got, 0);
    if (n > 0)
        x->got += (size_t)n;
    return x->got == x->total;
}

START_TEST(two_engines)
{
    struct stk_config ca, cb;
    memset(&ca, 0, sizeof(ca));
    memset(&cb, 0, sizeof(cb));
    const uint8_t a6[16] = {0x20, 0x01, 0x00, 0x02, [15] = 0xa};
    const uint8_t b6[16] = {0x20, 0x01, 0x00, 0x02, [15] = 0xb};
    memcpy(ca.ip6, a6, 16);
    memcpy(cb.ip6, b6, 16);
    ca.ip6_prefix = cb.ip6_prefix = 64;
    /* Loop 1: the payload's checksum is left to the I/O layer (STK_TX_L4_SUM). */
    ca.tx_offloads = cb.tx_offloads = _i ? STK_TX_L4_SUM : 0;
    struct wire_opts wo = {.seed = 6, .cfg = {&ca, &cb}};
    struct wire *w;
    ck_assert_int_eq(wire_create(&w, &wo), 0);
    wire_fault(w, WIRE_A_TO_B)->loss = 0.01;
    wire_fault(w, WIRE_B_TO_A)->loss = 0.01;
    struct stk_engine *a = wire_engine(w, WIRE_A), *b = wire_engine(w, WIRE_B);
    struct xfer x = {.w = w, .ssd = -1, .total = 300000};
    x.out = malloc(x.total);
    x.in = malloc(x.total);
    for (size_t i = 0; i < x.total; i++)
        x.out[i] = (uint8_t)(i * 13 + (i >> 9));
    x.lsd = stk_socket(a, NULL);
    struct stk_sockaddr la = sa6(UNSPEC, 80);
    ck_assert_int_eq(stk_bind(a, x.lsd, &la), 0);
    ck_assert_int_eq(stk_listen(a, x.lsd, 8), 0);
    x.csd = stk_socket(b, NULL);
    struct stk_sockaddr to = sa6(a6, 80);
    ck_assert_int_eq(stk_connect(b, w->now, x.csd, &to), -EINPROGRESS);
    ck_assert_int_eq(wire_run(w, xfer_done, &x, 120 * STK_US_PER_S), 0);
    ck_assert_mem_eq(x.in, x.out, x.total);
    struct stk_sockaddr p;
    ck_assert_int_eq(stk_getpeername(a, x.ssd, &p), 0);
    ck_assert_uint_eq(p.family, STK_AF_INET6);
    ck_assert_mem_eq(p.ip6, b6, 16);
    /* Close both ways. */
    ck_assert_int_eq(stk_close(b, w->now, x.csd), 0);
    ck_assert_int_eq(wire_run_for(w, 2 * STK_US_PER_S), 0);
    char c;
    ck_assert_int_eq(stk_recv(a, w->now, x.ssd, &c, 1, 0), 0);
    ck_assert_int_eq(stk_close(a, w->now, x.ssd), 0);
    ck_assert_int_eq(wire_run_for(w, 5 * STK_US_PER_S), 0);
    ck_assert_uint_eq(stk_counters(a)->conns_by_state[STK_TCP_ESTABLISHED], 0);
    ck_assert_uint_eq(stk_counters(b)->ip6_drop_proto, 0);
    ck_assert_uint_gt(stk_counters(b)->nd_ns_out, 0);
    ck_assert_uint_eq(w->ep[WIRE_A].offload_bad + w->ep[WIRE_B].offload_bad, 0);
    if (_i)
        ck_assert_uint_gt(w->ep[WIRE_B].l4sum_frames, x.total / 1440);
    else
        ck_assert_uint_eq(w->ep[WIRE_B].l4sum_frames, 0);
    free(x.out);
    free(x.in);
    wire_destroy(w);
}
END_TEST

/* ---- ICMPv6 errors to TCP (RFC 4443, RFC 8201; Linux's tcp_v6_err) ----------------------- */

/* An ICMPv6 error from a router (OTHER_GL) about a segment we sent from US_GL:sport to
 * PEER_GL:dport with sequence number seq. ext: put a Destination Options header before the
 * TCP header in the quote. word: the MTU of a Packet Too Big. */
static void icmp6_err_nh(struct tn *t, uint8_t type, uint8_t code, uint32_t word, uint8_t nh,
                         uint16_t sport, uint16_t dport, uint32_t seq, bool ext)
{
    uint8_t m[8 + 40 + 8 + 20];
    memset(m, 0, sizeof(m));
    m[0] = type;
    m[1] = code;
    for (int i = 0; i < 4; i++)
        m[4 + i] = (uint8_t)(word >> (24 - 8 * i));
    uint8_t *q = m + 8;
    q[0] = 0x60;
    q[5] = ext ? 28 : 20;
    q[6] = ext ? 60 : nh;
    q[7] = 64;
    memcpy(q + 8, US_GL, 16);
    memcpy(q + 24, PEER_GL, 16);
    uint8_t *th = q + 40;
    if (ext) {
        th[0] = nh; /* next header TCP (or UDP), length 0: 8 bytes, PadN fills them */
        th[2] = 1;
        th[3] = 4;
        th += 8;
    }
    th[0] = (uint8_t)(sport >> 8);
    th[1] = (uint8_t)sport;
    th[2] = (uint8_t)(dport >> 8);
    th[3] = (uint8_t)dport;
    for (int i = 0; i < 4; i++)
        th[4 + i] = (uint8_t)(seq >> (24 - 8 * i));
    size_t len = (size_t)(th + 20 - m);
    uint16_t c = pkt_csum_fold(pkt_csum_add(pseudo6(OTHER_GL, US_GL, 58, (uint32_t)len), m, len));
    m[2] = (uint8_t)(c >> 8);
    m[3] = (uint8_t)c;
    uint8_t f[200];
    inject(t, f, mk6(f, US_MAC, OTHER_GL, US_GL, 58, m, len));
}

static void icmp6_err(struct tn *t, uint8_t type, uint8_t code, uint32_t word, uint16_t sport,
                      uint16_t dport, uint32_t seq, bool ext)
{
    icmp6_err_nh(t, type, code, word, 6, sport, dport, seq, ext);
}

static int sock_state(struct tn *t, int sd)
{
    int st = -1;
    ck_assert_int_eq(stk_getopt(t->e, sd, STK_SO_STATE, &st), 0);
    return st;
}

/* connect() to PEER_GL:8080; returns the SYN's sequence number and our port. */
static uint32_t connect6(struct tn *t, int *sd, uint16_t *lport)
{
    *sd = stk_socket(t->e, NULL);
    ck_assert_int_ge(*sd, 0);
    struct stk_sockaddr to = sa6(PEER_GL, 8080);
    ck_assert_int_eq(stk_connect(t->e, t->now, *sd, &to), -EINPROGRESS);
    struct o6 o;
    pop_tcp6(t, &o);
    ck_assert_uint_eq(o.flags, PKT_TCP_SYN);
    *lport = o.sport;
    return o.seq;
}

START_TEST(icmp6_errors_syn_sent)
{
    static const struct {
        uint8_t type, code;
        int err;
        bool ext;
    } cases[] = {
        {1, 4, ECONNREFUSED, false}, {1, 1, EACCES, true},  {1, 3, EHOSTUNREACH, false},
        {1, 0, ENETUNREACH, false},  {1, 6, EACCES, false}, {1, 9, EPROTO, false},
        {3, 0, EHOSTUNREACH, true},  {4, 0, EPROTO, false}, {100, 0, EPROTO, false},
    };
    struct tn *t = tn_new();
    learn_peer(t, PEER_GL);
    uint64_t n = sizeof(cases) / sizeof(cases[0]);
    for (unsigned i = 0; i < n; i++) {
        int sd;
        uint16_t lport;
        uint32_t iss = connect6(t, &sd, &lport);
        /* Out of [SND.UNA, SND.MAX], or another tuple: counted, ignored. */
        icmp6_err(t, cases[i].type, cases[i].code, 0, lport, 8080, iss + 2, cases[i].ext);
        icmp6_err(t, cases[i].type, cases[i].code, 0, lport, 8081, iss, cases[i].ext);
        ck_assert_int_eq(sock_state(t, sd), STK_TCP_SYN_SENT);
        ck_assert_uint_eq(stk_events(t->e, sd) & STK_EV_ERR, 0);
        icmp6_err(t, cases[i].type, cases[i].code, 0, lport, 8080, iss, cases[i].ext);
        expect_none(t);
        ck_assert_int_eq(sock_state(t, sd), STK_TCP_CLOSED);
        ck_assert_uint_eq(stk_events(t->e, sd) & STK_EV_ERR, STK_EV_ERR);
        int err = 0;
        ck_assert_int_eq(stk_getopt(t->e, sd, STK_SO_ERROR, &err), 0);
        ck_assert_int_eq(err, cases[i].err);
        stk_close(t->e, t->now, sd);
    }
    ck_assert_uint_eq(ctr(t)->tcp_icmp_hard, n);
    ck_assert_uint_eq(ctr(t)->tcp_icmp_outwin, n);
    ck_assert_uint_eq(ctr(t)->tcp_icmp_nosock, n);
    ck_assert_uint_eq(ctr(t)->tcp_icmp_err_in, 3 * n);
    ck_assert_uint_eq(ctr(t)->icmp6_errors_in, 3 * n);
    tn_free(t);
}
END_TEST

/* RFC 8201: a Packet Too Big of 1280 on a connection sending 1440-byte segments lowers the
 * MSS to 1220 and resends the flight at that size at once; below 1280 or above the current
 * path MTU it is ignored. An established connection takes other errors as soft errors. */
START_TEST(icmp6_packet_too_big)
{
    struct tn *t = tn_new();
    learn_peer(t, PEER_GL);
    int sd;
    uint16_t lport;
    uint32_t iss = connect6(t, &sd, &lport);
    struct seg6 s = {.src = PEER_GL,
                     .dst = US_GL,
                     .sport = 8080,
                     .dport = lport,
                     .seq = 5000,
                     .ack = iss + 1,
                     .flags = PKT_TCP_SYN | PKT_TCP_ACK,
                     .mss = 1440};
    send6(t, &s);
    struct o6 o;
    pop_tcp6(t, &o);
    ck_assert_uint_eq(o.flags, PKT_TCP_ACK);
    ck_assert_int_eq(stk_setopt(t->e, t->now, sd, STK_TCP_NODELAY, 1), 0);
    static uint8_t data[3 * 1440];
    for (size_t i = 0; i < sizeof(data); i++)
        data[i] = (uint8_t)(i * 7);
    ck_assert_int_eq(stk_send(t->e, t->now, sd, data, sizeof(data), 0), (ssize_t)sizeof(data));
    for (int i = 0; i < 3; i++) {
        pop_tcp6(t, &o);
        ck_assert_uint_eq(o.seq, iss + 1 + (uint32_t)i * 1440);
        ck_assert_uint_eq(o.dlen, 1440);
        ck_assert_uint_eq(o.len, 14 + 1500);
    }
    expect_none(t);
    /* Below the IPv6 minimum, above the current MTU: ignored. */
    icmp6_err(t, 2, 0, 1000, lport, 8080, iss + 1, false);
    icmp6_err(t, 2, 0, 9000, lport, 8080, iss + 1, false);
    expect_none(t);
    ck_assert_uint_eq(ctr(t)->tcp_pmtu_ignored, 2);
    icmp6_err(t, 2, 0, 1280, lport, 8080, iss + 1 + 1440, true);
    ck_assert_uint_eq(ctr(t)->tcp_pmtu_updates, 1);
    int mss = 0;
    ck_assert_int_eq(stk_getopt(t->e, sd, STK_TCP_MAXSEG, &mss), 0);
    ck_assert_int_eq(mss, 1220);
    uint32_t off = 0;
    while (off < sizeof(data)) {
        pop_tcp6(t, &o);
        ck_assert_uint_eq(o.seq, iss + 1 + off);
        size_t want = sizeof(data) - off < 1220 ? sizeof(data) - off : 1220;
        ck_assert_uint_eq(o.dlen, want);
        ck_assert_uint_le(o.len, 14 + 1280);
        ck_assert_mem_eq(o.data, data + off, want);
        off += (uint32_t)want;
    }
    expect_none(t);
    /* Soft: no error now, the connection goes on. */
    icmp6_err(t, 1, 4, 0, lport, 8080, iss + 1, false);
    ck_assert_int_eq(sock_state(t, sd), STK_TCP_ESTABLISHED);
    ck_assert_uint_eq(stk_events(t->e, sd) & STK_EV_ERR, 0);
    ck_assert_uint_eq(ctr(t)->tcp_icmp_soft, 1);
    int err = 0;
    ck_assert_int_eq(stk_getopt(t->e, sd, STK_SO_ERROR, &err), 0);
    ck_assert_int_eq(err, ECONNREFUSED);
    tn_free(t);
}
END_TEST

/* ---- UDP over IPv6 ------------------------------------------------------------------------ */

static size_t mk_udp6(uint8_t *f, const uint8_t src[16], const uint8_t dst[16], uint16_t sport,
                      uint16_t dport, const void *data, size_t dlen, int csum_mode)
{
    uint8_t u[1600];
    size_t len = 8 + dlen;
    u[0] = (uint8_t)(sport >> 8);
    u[1] = (uint8_t)sport;
    u[2] = (uint8_t)(dport >> 8);
    u[3] = (uint8_t)dport;
    u[4] = (uint8_t)(len >> 8);
    u[5] = (uint8_t)len;
    u[6] = u[7] = 0;
    memcpy(u + 8, data, dlen);
    uint16_t c = pkt_csum_fold(pkt_csum_add(pseudo6(src, dst, 17, (uint32_t)len), u, len));
    if (csum_mode == 1)
        c = 0; /* no checksum: forbidden over IPv6 */
    else if (csum_mode == 2)
        c ^= 1;
    u[6] = (uint8_t)(c >> 8);
    u[7] = (uint8_t)c;
    const uint8_t *dmac = dst[0] == 0xff ? (const uint8_t[6]){0x33, 0x33, 0, 0, 0, 1} : US_MAC;
    return mk6(f, dmac, src, dst, 17, u, len);
}

static void send_udp6(struct tn *t, const uint8_t src[16], const uint8_t dst[16], uint16_t sport,
                      uint16_t dport, const char *data, int csum_mode)
{
    uint8_t f[1700];
    inject(t, f, mk_udp6(f, src, dst, sport, dport, data, strlen(data), csum_mode));
}

/* An IPv4 UDP datagram from the peer (checksum 0: allowed over IPv4). */
static void send_udp4(struct tn *t, uint16_t sport, uint16_t dport, const char *data)
{
    uint8_t f[200];
    size_t dlen = strlen(data), ulen = 8 + dlen;
    memcpy(f, US_MAC, 6);
    memcpy(f + 6, PEER_MAC, 6);
    f[12] = 0x08;
    f[13] = 0x00;
    uint8_t *ip = f + 14;
    memset(ip, 0, 20);
    ip[0] = 0x45;
    ip[2] = (uint8_t)((20 + ulen) >> 8);
    ip[3] = (uint8_t)(20 + ulen);
    ip[8] = 64;
    ip[9] = 17;
    uint32_t a = PEER_IP4, b = US_IP4;
    for (int i = 0; i < 4; i++) {
        ip[12 + i] = (uint8_t)(a >> (24 - 8 * i));
        ip[16 + i] = (uint8_t)(b >> (24 - 8 * i));
    }
    uint16_t c = pkt_csum_fold(pkt_csum_add(0, ip, 20));
    ip[10] = (uint8_t)(c >> 8);
    ip[11] = (uint8_t)c;
    uint8_t *u = ip + 20;
    u[0] = (uint8_t)(sport >> 8);
    u[1] = (uint8_t)sport;
    u[2] = (uint8_t)(dport >> 8);
    u[3] = (uint8_t)dport;
    u[4] = 0;
    u[5] = (uint8_t)ulen;
    u[6] = u[7] = 0;
    memcpy(u + 8, data, dlen);
    inject(t, f, 34 + ulen);
}

/* An IPv6 frame the engine sent with Next Header nh (tn_pop6). */
static void pop6_nh(struct tn *t, uint8_t nh, uint8_t *buf, size_t *len)
{
    *len = tn_pop6(t, NULL, nh, buf, 2000);
}

static int udp_bind(struct tn *t, struct stk_sockaddr a, int v6only)
{
    int sd = stk_udp_socket(t->e, NULL);
    ck_assert_int_ge(sd, 0);
    if (v6only >= 0)
        ck_assert_int_eq(stk_udp_setopt(t->e, sd, STK_IPV6_V6ONLY, v6only), 0);
    ck_assert_int_eq(stk_udp_bind(t->e, sd, &a), 0);
    return sd;
}

/* Pops the fragments of one UDP datagram from US_GL to PEER_GL, checking each frame (at most
 * the MTU, a Fragment header naming UDP, one identification, offsets in multiples of 8 that
 * follow each other, M on all but the last); returns the identification and the fragment
 * count, and reassembles the UDP datagram into out (*len bytes). */
static uint32_t pop_udp_frags(struct tn *t, uint8_t *out, size_t *len, unsigned *count)
{
    uint32_t id = 0, next = 0;
    unsigned i = 0;
    for (;; i++) {
        const struct pkt_frame *fr = pkt_capture_pop(&t->cap);
        ck_assert_ptr_nonnull(fr);
        ck_assert_uint_le(fr->len, 1514);
        ck_assert_uint_eq(fr->data[12] << 8 | fr->data[13], 0x86dd);
        const uint8_t *ip = fr->data + 14;
        ck_assert_uint_eq(ip[6], 44);
        ck_assert_mem_eq(ip + 8, US_GL, 16);
        ck_assert_mem_eq(ip + 24, PEER_GL, 16);
        size_t plen = (size_t)(ip[4] << 8 | ip[5]);
        ck_assert_uint_eq(plen + 54, fr->len);
        const uint8_t *fh = ip + 40;
        ck_assert_uint_eq(fh[0], 17);
        uint32_t fid = (uint32_t)fh[4] << 24 | (uint32_t)fh[5] << 16 | fh[6] << 8 | fh[7];
        uint32_t off = (uint32_t)(fh[2] << 8 | fh[3]) & 0xfff8u;
        bool more = fh[3] & 1;
        if (i == 0)
            id = fid;
        ck_assert_uint_eq(fid, id);
        ck_assert_uint_eq(off, next);
        if (more) {
            ck_assert_uint_eq((plen - 8) % 8, 0);
            ck_assert_uint_eq(fr->len, 14 + 40 + 8 + 1448); /* 1500 - 48 rounded down to 8s */
        }
        memcpy(out + off, fh + 8, plen - 8);
        next = off + (uint32_t)(plen - 8);
        if (!more)
            break;
    }
    *len = next;
    *count = i + 1;
    return id;
}

START_TEST(udp6_fragments)
{
    struct tn *t = tn_new();
    learn_peer(t, PEER_GL);
    int sd = udp_bind(t, sa6(UNSPEC, 53), -1);
    static uint8_t data[65536], out[70000], f[2000];
    for (size_t i = 0; i < sizeof(data); i++)
        data[i] = (uint8_t)(i * 13 + 1);
    struct stk_sockaddr to = sa6(PEER_GL, 5000);

    /* 3000 bytes: three fragments (1448, 1448, 112), reassembling to the datagram. */
    struct stk_iov v = {data, 3000};
    ck_assert_int_eq(stk_udp_sendto(t->e, t->now, sd, &v, 1, &to), 3000);
    size_t len;
    unsigned cnt;
    uint32_t id1 = pop_udp_frags(t, out, &len, &cnt);
    ck_assert_uint_eq(cnt, 3);
    ck_assert_uint_eq(len, 3008);
    ck_assert_uint_eq(out[0] << 8 | out[1], 53);
    ck_assert_uint_eq(out[2] << 8 | out[3], 5000);
    ck_assert_uint_eq(out[4] << 8 | out[5], 3008);
    ck_assert_uint_eq(pkt_csum_fold(pkt_csum_add(pseudo6(US_GL, PEER_GL, 17, 3008), out, 3008)), 0);
    ck_assert_mem_eq(out + 8, data, 3000);
    ck_assert_uint_eq(pkt_capture_count(&t->cap), 0);

    /* The largest datagram (65527 bytes, a 65535-byte UDP length) goes, with another
     * identification; one byte more is EMSGSIZE. */
    v.len = 65527;
    ck_assert_int_eq(stk_udp_sendto(t->e, t->now, sd, &v, 1, &to), 65527);
    uint32_t id2 = pop_udp_frags(t, out, &len, &cnt);
    ck_assert_uint_ne(id2, id1);
    ck_assert_uint_eq(cnt, 46);
    ck_assert_uint_eq(len, 65535);
    ck_assert_uint_eq(out[4] << 8 | out[5], 65535);
    ck_assert_uint_eq(pkt_csum_fold(pkt_csum_add(pseudo6(US_GL, PEER_GL, 17, 65535), out, 65535)),
                      0);
    ck_assert_mem_eq(out + 8, data, 65527);
    v.len = 65528;
    ck_assert_int_eq(stk_udp_sendto(t->e, t->now, sd, &v, 1, &to), -EMSGSIZE);
    ck_assert_uint_eq(pkt_capture_count(&t->cap), 0);

    /* Received: a 3000-byte datagram in three fragments, the last first. */
    uint8_t u[3008];
    u[0] = 0x13;
    u[1] = 0x88;
    u[2] = 0;
    u[3] = 53;
    u[4] = 3008 >> 8;
    u[5] = 3008 & 0xff;
    u[6] = u[7] = 0;
    memcpy(u + 8, data, 3000);
    uint16_t c = pkt_csum_fold(pkt_csum_add(pseudo6(PEER_GL, US_GL, 17, 3008), u, 3008));
    u[6] = (uint8_t)(c >> 8);
    u[7] = (uint8_t)c;
    uint8_t pay[1500];
    for (int k = 2; k >= 0; k--) {
        uint32_t off = 1200u * (uint32_t)k, flen = k == 2 ? 3008 - 2400 : 1200;
        memcpy(pay,
               (const uint8_t[8]){17, 0, (uint8_t)(off >> 8), (uint8_t)((off & 0xf8) | (k < 2)), 0,
                                  0, 0x12, 0x34},
               8);
        memcpy(pay + 8, u + off, flen);
        inject(t, f, mk6(f, US_MAC, PEER_GL, US_GL, 44, pay, 8 + flen));
    }
    static char buf[4000];
    struct stk_udp_meta m;
    ck_assert_int_eq(stk_udp_recvfrom(t->e, t->now, sd, buf, sizeof(buf), 0, &m), 3000);
    ck_assert_mem_eq(buf, data, 3000);
    ck_assert_uint_eq(m.from.port, 5000);
    ck_assert_mem_eq(m.from.ip6, PEER_GL, 16);
    ck_assert_uint_eq(stk_counters(t->e)->ip6_reasm_ok, 1);
    tn_free(t);
}
END_TEST

/* What an engine's steer_ip was given (as dpdk_io/core.c hands it to another core). */
static struct {
    uint8_t buf[2000];
    size_t len;
    int calls;
} steered;

static int steer_cb(void *ctx, const void *ip, size_t len)
{
    (void)ctx;
    steered.calls++;
    ck_assert_uint_le(len, sizeof(steered.buf));
    memcpy(steered.buf, ip, len);
    steered.len = len;
    return 1; /* not ours */
}

/* A TCP SYN in two IPv6 fragments: reassembled, then handed to steer_ip (the 4-tuple's
 * engine); that engine takes the whole IPv6 packet through stk_input_ip and answers. */
START_TEST(tcp6_fragments_steered)
{
    struct stk_config c;
    memset(&c, 0, sizeof(c));
    c.steer_ip = steer_cb;
    struct tn *t = tn_new_cfg(&c);
    memset(&steered, 0, sizeof(steered));
    learn_peer(t, PEER_GL);
    listen_on(t, sa6(UNSPEC, 80), -1, 8);
    uint8_t f[1600], g[200], pay[64];
    struct seg6 s = {.src = PEER_GL,
                     .dst = US_GL,
                     .sport = 40001,
                     .dport = 80,
                     .seq = 5000,
                     .flags = PKT_TCP_SYN,
                     .mss = 1440};
    size_t n = mk_tcp6(f, &s);
    ck_assert_uint_eq(n, 54 + 24);
    const uint8_t *th = f + 54;
    for (int k = 1; k >= 0; k--) {
        uint32_t off = k ? 16 : 0, len = k ? 8 : 16;
        memcpy(pay, (const uint8_t[8]){6, 0, 0, (uint8_t)(off | (k ? 0 : 1)), 1, 2, 3, 4}, 8);
        memcpy(pay + 8, th + off, len);
        inject(t, g, mk6(g, US_MAC, PEER_GL, US_GL, 44, pay, 8 + len));
    }
    expect_none(t);
    ck_assert_int_eq(steered.calls, 1);
    ck_assert_uint_eq(stk_counters(t->e)->ip6_reasm_handoff, 1);
    ck_assert_uint_eq(steered.len, 40 + 24);
    ck_assert_uint_eq(steered.buf[0] >> 4, 6);
    ck_assert_uint_eq(steered.buf[6], 6);
    ck_assert_uint_eq(steered.buf[4] << 8 | steered.buf[5], 24);
    ck_assert_mem_eq(steered.buf + 8, PEER_GL, 16);
    ck_assert_mem_eq(steered.buf + 40, th, 24);
    /* The owner (here the same engine) gets it whole, not steered again. */
    stk_input_ip(t->e, t->now, steered.buf, steered.len, 0);
    struct o6 o;
    pop_tcp6(t, &o);
    ck_assert_uint_eq(o.flags, PKT_TCP_SYN | PKT_TCP_ACK);
    ck_assert_uint_eq(o.ack, 5001);
    ck_assert_uint_eq(o.dport, 40001);
    ck_assert_int_eq(steered.calls, 1);
    tn_free(t);
}
END_TEST

START_TEST(udp6_send_recv)
{
    struct tn *t = tn_new();
    learn_peer(t, PEER_GL);
    int sd = udp_bind(t, sa6(UNSPEC, 53), -1);
    struct stk_sockaddr a;
    ck_assert_int_eq(stk_udp_getsockname(t->e, sd, &a), 0);
    ck_assert_uint_eq(a.family, STK_AF_INET6);
    ck_assert_uint_eq(a.port, 53);
    send_udp6(t, PEER_GL, US_GL, 5000, 53, "query", 0);
    char buf[64];
    struct stk_udp_meta m;
    ck_assert_int_eq(stk_udp_recvfrom(t->e, t->now, sd, buf, sizeof(buf), 0, &m), 5);
    ck_assert_mem_eq(buf, "query", 5);
    ck_assert_uint_eq(m.from.family, STK_AF_INET6);
    ck_assert_mem_eq(m.from.ip6, PEER_GL, 16);
    ck_assert_uint_eq(m.from.port, 5000);
    /* The answer: from our global address, a correct checksum. */
    struct stk_iov v = {"answer", 6};
    ck_assert_int_eq(stk_udp_sendto(t->e, t->now, sd, &v, 1, &m.from), 6);
    uint8_t o[2000];
    size_t n;
    pop6_nh(t, 17, o, &n);
    ck_assert_mem_eq(o + 14 + 8, US_GL, 16);
    ck_assert_mem_eq(o + 14 + 24, PEER_GL, 16);
    ck_assert_uint_eq(o[54] << 8 | o[55], 53);
    ck_assert_uint_eq(o[56] << 8 | o[57], 5000);
    ck_assert_uint_ne(o[60] << 8 | o[61], 0);
    ck_assert_mem_eq(o + 62, "answer", 6);
    ck_assert_uint_eq((o[14] & 0x0f) << 4 | o[15] >> 4, 0);
    /* IPV6_TCLASS: all eight bits (ECN too) on a datagram and on each of its fragments. */
    int tc = -1;
    ck_assert_int_eq(stk_udp_getopt(t->e, sd, STK_IPV6_TCLASS, &tc), 0);
    ck_assert_int_eq(tc, 0);
    ck_assert_int_eq(stk_udp_setopt(t->e, sd, STK_IPV6_TCLASS, 256), -EINVAL);
    ck_assert_int_eq(stk_udp_setopt(t->e, sd, STK_IPV6_TCLASS, 0x2d), 0);
    ck_assert_int_eq(stk_udp_getopt(t->e, sd, STK_IPV6_TCLASS, &tc), 0);
    ck_assert_int_eq(tc, 0x2d);
    ck_assert_int_eq(stk_udp_sendto(t->e, t->now, sd, &v, 1, &m.from), 6);
    pop6_nh(t, 17, o, &n);
    ck_assert_uint_eq((o[14] & 0x0f) << 4 | o[15] >> 4, 0x2d);
    static uint8_t frag_data[3000];
    struct stk_iov fv = {frag_data, sizeof(frag_data)};
    ck_assert_int_eq(stk_udp_sendto(t->e, t->now, sd, &fv, 1, &m.from), 3000);
    int frames = 0;
    for (const struct pkt_frame *f; (f = pkt_capture_pop(&t->cap)); frames++) {
        ck_assert_uint_ge(f->len, 54);
        ck_assert_uint_eq((f->data[14] & 0x0f) << 4 | f->data[15] >> 4, 0x2d);
    }
    ck_assert_int_eq(frames, 3);
    ck_assert_int_eq(stk_udp_setopt(t->e, sd, STK_IPV6_TCLASS, 0), 0);
    /* Many pieces are gathered. */
    struct stk_iov eight[8];
    for (int i = 0; i < 8; i++)
        eight[i] = (struct stk_iov){"ab", 2};
    ck_assert_int_eq(stk_udp_sendto(t->e, t->now, sd, eight, 8, &m.from), 16);
    pop6_nh(t, 17, o, &n);
    ck_assert_uint_eq(n, 54 + 8 + 16);
    /* Exactly the MTU goes unfragmented (beyond it: udp6_fragments). */
    static uint8_t big[1500];
    v = (struct stk_iov){big, 1500 - 48};
    ck_assert_int_eq(stk_udp_sendto(t->e, t->now, sd, &v, 1, &m.from), 1452);
    pop6_nh(t, 17, o, &n);
    ck_assert_uint_eq(n, 1514);
    /* An unbound socket sending to IPv6 binds [::] and an ephemeral port. */
    int u2 = stk_udp_socket(t->e, NULL);
    struct stk_sockaddr to = sa6(PEER_GL, 7);
    v = (struct stk_iov){"x", 1};
    ck_assert_int_eq(stk_udp_sendto(t->e, t->now, u2, &v, 1, &to), 1);
    ck_assert_int_eq(stk_udp_getsockname(t->e, u2, &a), 0);
    ck_assert_uint_eq(a.family, STK_AF_INET6);
    ck_assert_uint_ne(a.port, 0);
    pop6_nh(t, 17, o, &n);
    tn_free(t);
}
END_TEST

START_TEST(udp6_checksum_and_unreach)
{
    struct tn *t = tn_new();
    learn_peer(t, PEER_GL);
    int sd = udp_bind(t, sa6(UNSPEC, 53), -1);
    send_udp6(t, PEER_GL, US_GL, 5000, 53, "zero", 1);
    ck_assert_uint_eq(ctr(t)->udp6_drop_zero_csum, 1);
    send_udp6(t, PEER_GL, US_GL, 5000, 53, "bad", 2);
    ck_assert_uint_eq(ctr(t)->udp_drop_csum, 1);
    char buf[16];
    ck_assert_int_eq(stk_udp_recvfrom(t->e, t->now, sd, buf, sizeof(buf), 0, NULL), -EAGAIN);
    expect_none(t);
    /* No socket on port 54: ICMPv6 destination unreachable, code 4 (port). */
    send_udp6(t, PEER_GL, US_GL, 5000, 54, "nobody", 0);
    ck_assert_uint_eq(ctr(t)->udp_noport, 1);
    uint8_t o[2000];
    size_t n;
    pop6_nh(t, 58, o, &n);
    ck_assert_uint_eq(o[54], 1);
    ck_assert_uint_eq(o[55], 4);
    ck_assert_mem_eq(o + 14 + 24, PEER_GL, 16);
    /* Not for a multicast destination. */
    send_udp6(t, PEER_GL, ALL_NODES, 5000, 54, "nobody", 0);
    expect_none(t);
    /* A connected socket takes only its peer's datagrams. */
    int c = stk_udp_socket(t->e, NULL);
    struct stk_sockaddr to = sa6(PEER_GL, 6000);
    ck_assert_int_eq(stk_udp_connect(t->e, t->now, c, &to), 0);
    struct stk_sockaddr me, peer;
    ck_assert_int_eq(stk_udp_getsockname(t->e, c, &me), 0);
    ck_assert_mem_eq(me.ip6, US_GL, 16);
    ck_assert_int_eq(stk_udp_getpeername(t->e, c, &peer), 0);
    ck_assert_uint_eq(peer.family, STK_AF_INET6);
    ck_assert_mem_eq(peer.ip6, PEER_GL, 16);
    send_udp6(t, PEER_GL, US_GL, 6001, me.port, "other", 0);
    ck_assert_int_eq(stk_udp_recvfrom(t->e, t->now, c, buf, sizeof(buf), 0, NULL), -EAGAIN);
    pkt_capture_clear(&t->cap);
    send_udp6(t, PEER_GL, US_GL, 6000, me.port, "peer", 0);
    ck_assert_int_eq(stk_udp_recvfrom(t->e, t->now, c, buf, sizeof(buf), 0, NULL), 4);
    struct stk_iov v = {"hi", 2};
    ck_assert_int_eq(stk_udp_sendto(t->e, t->now, c, &v, 1, NULL), 2);
    pop6_nh(t, 17, o, &n);
    ck_assert_mem_eq(o + 14 + 24, PEER_GL, 16);
    /* Errors: an IPv4-bound socket to IPv6, ::, multicast. */
    int s4 = udp_bind(t, sa4(0, 0), -1);
    ck_assert_int_eq(stk_udp_sendto(t->e, t->now, s4, &v, 1, &to), -EAFNOSUPPORT);
    to = sa6(UNSPEC, 9);
    ck_assert_int_eq(stk_udp_sendto(t->e, t->now, sd, &v, 1, &to), -EINVAL);
    to = sa6(ALL_NODES, 9);
    ck_assert_int_eq(stk_udp_sendto(t->e, t->now, sd, &v, 1, &to), -ENETUNREACH);
    tn_free(t);
}
END_TEST

/* Linux's __udp6_lib_err without IPV6_RECVERR: a connected UDP socket takes the hard errors
 * (icmpv6_err_convert's fatal ones, and Packet Too Big as EMSGSIZE), not the soft ones; an
 * error about another peer or port, or an unconnected socket, is not its business. */
START_TEST(udp6_icmp6_errors)
{
    static const struct {
        uint8_t type, code;
        int err; /* 0: soft, not reported */
        bool ext;
    } cases[] = {
        {1, 4, ECONNREFUSED, false},
        {1, 1, EACCES, true},
        {1, 6, EACCES, false},
        {1, 9, EPROTO, false},
        {4, 0, EPROTO, false},
        {2, 0, EMSGSIZE, false},
        {1, 0, 0, false},
        {1, 3, 0, true},
        {3, 0, 0, false},
        {100, 0, 0, false},
    };
    struct tn *t = tn_new();
    learn_peer(t, PEER_GL);
    int c = stk_udp_socket(t->e, NULL);
    struct stk_sockaddr to = sa6(PEER_GL, 6000), me;
    ck_assert_int_eq(stk_udp_connect(t->e, t->now, c, &to), 0);
    ck_assert_int_eq(stk_udp_getsockname(t->e, c, &me), 0);
    int u = udp_bind(t, sa6(UNSPEC, 5353), -1);
    uint64_t hard = 0;
    for (unsigned i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        /* About another peer port, or from the unconnected socket: nobody hears of it. */
        icmp6_err_nh(t, cases[i].type, cases[i].code, 1280, 17, me.port, 6001, 0, cases[i].ext);
        icmp6_err_nh(t, cases[i].type, cases[i].code, 1280, 17, 5353, 6000, 0, cases[i].ext);
        icmp6_err_nh(t, cases[i].type, cases[i].code, 1280, 17, me.port, 6000, 0, cases[i].ext);
        hard += cases[i].err != 0;
        ck_assert_uint_eq(ctr(t)->udp_icmp_err_in, hard);
        int v = -1;
        ck_assert_int_eq(stk_udp_getopt(t->e, c, STK_SO_ERROR, &v), 0);
        ck_assert_int_eq(v, cases[i].err);
        ck_assert_int_eq(stk_udp_getopt(t->e, u, STK_SO_ERROR, &v), 0);
        ck_assert_int_eq(v, 0);
    }
    /* Reported once, by the next receive. */
    icmp6_err_nh(t, 1, 4, 0, 17, me.port, 6000, 0, false);
    char buf[8];
    ck_assert_int_eq(stk_udp_recvfrom(t->e, t->now, c, buf, sizeof(buf), 0, NULL), -ECONNREFUSED);
    ck_assert_int_eq(stk_udp_recvfrom(t->e, t->now, c, buf, sizeof(buf), 0, NULL), -EAGAIN);
    tn_free(t);
}
END_TEST

START_TEST(udp6_dual_stack)
{
    struct tn *t = tn_new();
    learn_peer(t, PEER_GL);
    learn_peer4(t);
    int d = udp_bind(t, sa6(UNSPEC, 53), 0);
    /* IPv4 reaches the dual-stack socket; its sender is reported as IPv4. */
    send_udp4(t, 7000, 53, "four");
    char buf[16];
    struct stk_udp_meta m;
    ck_assert_int_eq(stk_udp_recvfrom(t->e, t->now, d, buf, sizeof(buf), 0, &m), 4);
    ck_assert_uint_eq(m.from.family, STK_AF_INET);
    ck_assert_uint_eq(m.from.ip, PEER_IP4);
    /* It answers over IPv4. */
    struct stk_iov v = {"ok", 2};
    ck_assert_int_eq(stk_udp_sendto(t->e, t->now, d, &v, 1, &m.from), 2);
    struct pkt_info pi;
    ck_assert_int_eq(pkt_capture_pop_parse(&t->cap, &pi), PKT_E_IP_PROTO);
    ck_assert_uint_eq(pi.src_ip, US_IP4);
    ck_assert_uint_eq(pi.dst_ip, PEER_IP4);
    /* The IPv4 wildcard overlaps it. */
    int s4 = stk_udp_socket(t->e, NULL);
    struct stk_sockaddr a = sa4(0, 53);
    ck_assert_int_eq(stk_udp_bind(t->e, s4, &a), -EADDRINUSE);
    /* V6ONLY: an IPv4 socket shares the port and gets IPv4. */
    int o6 = udp_bind(t, sa6(UNSPEC, 54), 1);
    ck_assert_int_eq(stk_udp_setopt(t->e, o6, STK_IPV6_V6ONLY, 0), -EINVAL);
    int o4 = udp_bind(t, sa4(0, 54), -1);
    send_udp4(t, 7000, 54, "v4");
    send_udp6(t, PEER_GL, US_GL, 7001, 54, "v6", 0);
    ck_assert_int_eq(stk_udp_recvfrom(t->e, t->now, o4, buf, sizeof(buf), 0, &m), 2);
    ck_assert_mem_eq(buf, "v4", 2);
    ck_assert_int_eq(stk_udp_recvfrom(t->e, t->now, o4, buf, sizeof(buf), 0, &m), -EAGAIN);
    ck_assert_int_eq(stk_udp_recvfrom(t->e, t->now, o6, buf, sizeof(buf), 0, &m), 2);
    ck_assert_mem_eq(buf, "v6", 2);
    ck_assert_uint_eq(m.from.family, STK_AF_INET6);
    /* A V6ONLY socket cannot send to IPv4. */
    struct stk_sockaddr to4 = sa4(PEER_IP4, 9);
    ck_assert_int_eq(stk_udp_sendto(t->e, t->now, o6, &v, 1, &to4), -ENETUNREACH);
    /* Bind rules: not ours, and specific IPv6 addresses do not overlap IPv4. */
    int x = stk_udp_socket(t->e, NULL);
    a = sa6(OTHER_GL, 55);
    ck_assert_int_eq(stk_udp_bind(t->e, x, &a), -EADDRNOTAVAIL);
    a = sa6(US_GL, 55);
    ck_assert_int_eq(stk_udp_bind(t->e, x, &a), 0);
    udp_bind(t, sa6(US_LL, 55), -1);
    udp_bind(t, sa4(0, 55), -1);
    tn_free(t);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("tcp6");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, conn_hash_keyed);
    tcase_add_test(tc, passive_open_data_fin);
    tcase_add_test(tc, active_open);
    tcase_add_test(tc, rst_for_closed_port);
    tcase_add_test(tc, dual_stack_listener);
    tcase_add_test(tc, v6only_rules);
    tcase_add_test(tc, syn_cookies);
    tcase_add_loop_test(tc, two_engines, 0, 2);
    tcase_add_test(tc, icmp6_errors_syn_sent);
    tcase_add_test(tc, icmp6_packet_too_big);
    suite_add_tcase(s, tc);
    TCase *tu = tcase_create("udp6");
    tcase_add_test(tu, udp6_send_recv);
    tcase_add_test(tu, udp6_fragments);
    tcase_add_test(tu, tcp6_fragments_steered);
    tcase_add_test(tu, udp6_checksum_and_unreach);
    tcase_add_test(tu, udp6_dual_stack);
    tcase_add_test(tu, udp6_icmp6_errors);
    suite_add_tcase(s, tu);
    return s;
}

int main(void)
{
    SRunner *r = srunner_create(suite());
    srunner_run_all(r, CK_NORMAL);
    int failed = srunner_ntests_failed(r);
    srunner_free(r);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

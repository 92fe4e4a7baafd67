/*
 * test_udp.c - datagram-level tests of the UDP engine (stack/udp.c).
 *
 * One engine (198.18.0.2/24) and a scripted peer (198.18.0.1). The test builds the peer's
 * frames itself and checks every frame the engine sends with its own parser and checksum
 * code (not the engine's), against Linux's udp(7) behaviour.
 */
#include <check.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "pkt.h"
#include "stk.h"

#define T0      (100 * STK_US_PER_S)
#define US_IP   PKT_IP(198, 18, 0, 2)
#define PEER_IP PKT_IP(198, 18, 0, 1)
#define PEER2   PKT_IP(198, 18, 0, 7)
#define BCAST   PKT_IP(198, 18, 0, 255)

static const uint8_t US_MAC[6] = {0x02, 0, 0, 0, 0, 0x02};
static const uint8_t PEER_MAC[6] = {0x02, 0, 0, 0, 0, 0x01};

struct th {
    struct pkt_capture cap;
    struct stk_engine *e;
    stk_time_t now;
    int events; /* on_event calls */
};

static void on_event(void *ctx, int sd, void *user, uint32_t ev)
{
    (void)sd;
    (void)user;
    (void)ev;
    ((struct th *)ctx)->events++;
}

/* ---- The test's own wire code ---------------------------------------------------------- */

static uint32_t sum16(uint32_t s, const uint8_t *p, size_t n)
{
    for (size_t i = 0; i + 1 < n; i += 2)
        s += (uint32_t)(p[i] << 8 | p[i + 1]);
    if (n & 1)
        s += (uint32_t)p[n - 1] << 8;
    return s;
}

static uint16_t fold(uint32_t s)
{
    while (s >> 16)
        s = (s & 0xffff) + (s >> 16);
    return (uint16_t)~s;
}

static void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static void put32(uint8_t *p, uint32_t v)
{
    put16(p, (uint16_t)(v >> 16));
    put16(p + 2, (uint16_t)v);
}

static uint16_t get16(const uint8_t *p)
{
    return (uint16_t)(p[0] << 8 | p[1]);
}

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)get16(p) << 16 | get16(p + 2);
}

static uint32_t pseudo(uint32_t src, uint32_t dst, uint8_t proto, uint16_t len)
{
    return (src >> 16) + (src & 0xffff) + (dst >> 16) + (dst & 0xffff) + proto + len;
}

enum { CS_GOOD, CS_ZERO, CS_BAD };

/* A UDP datagram from the peer. Returns the frame length. */
static size_t build(uint8_t *f, uint32_t src, uint32_t dst, uint16_t sport, uint16_t dport,
                    const void *data, size_t len, int cs, int ulen_delta)
{
    memcpy(f, US_MAC, 6);
    memcpy(f + 6, PEER_MAC, 6);
    put16(f + 12, 0x0800);
    uint8_t *ip = f + 14;
    memset(ip, 0, 20);
    ip[0] = 0x45;
    put16(ip + 2, (uint16_t)(28 + len));
    ip[8] = 64;
    ip[9] = 17;
    put32(ip + 12, src);
    put32(ip + 16, dst);
    put16(ip + 10, fold(sum16(0, ip, 20)));
    uint8_t *u = ip + 20;
    put16(u, sport);
    put16(u + 2, dport);
    put16(u + 4, (uint16_t)(8 + len + ulen_delta));
    put16(u + 6, 0);
    memcpy(u + 8, data, len);
    uint16_t c = fold(sum16(pseudo(src, dst, 17, (uint16_t)(8 + len)), u, 8 + len));
    if (c == 0)
        c = 0xffff;
    put16(u + 6, cs == CS_GOOD ? c : cs == CS_ZERO ? 0 : (uint16_t)(c + 1));
    return 14 + 28 + len;
}

static void inject(struct th *h, uint32_t src, uint32_t dst, uint16_t sport, uint16_t dport,
                   const void *data, size_t len, int cs)
{
    static uint8_t f[2048];
    size_t n = build(f, src, dst, sport, dport, data, len, cs, 0);
    stk_input(h->e, h->now, f, n, 0);
}

/* A frame the engine sent, parsed and checked. */
struct out {
    uint8_t dmac[6];
    uint32_t src, dst;
    uint8_t proto, df, tos;
    uint16_t sport, dport, ulen;
    const uint8_t *l4, *data;
    size_t l4len;
};

/* Pops the next non-ARP frame, checking the IPv4 header and the L4 checksum. */
static int pop(struct th *h, struct out *o)
{
    const struct pkt_frame *f;
    for (;;) {
        f = pkt_capture_pop(&h->cap);
        if (!f)
            return -1;
        if (f->len >= 14 && get16(f->data + 12) == 0x0800)
            break;
    }
    const uint8_t *ip = f->data + 14;
    ck_assert_uint_eq(ip[0], 0x45);
    ck_assert_uint_eq(fold(sum16(0, ip, 20)), 0);
    size_t total = get16(ip + 2);
    ck_assert_uint_eq(total + 14, f->len);
    memcpy(o->dmac, f->data, 6);
    o->src = get32(ip + 12);
    o->dst = get32(ip + 16);
    o->proto = ip[9];
    o->tos = ip[1];
    o->df = (get16(ip + 6) & 0x4000) != 0;
    o->l4 = ip + 20;
    o->l4len = total - 20;
    if (o->proto == 17) {
        o->sport = get16(o->l4);
        o->dport = get16(o->l4 + 2);
        o->ulen = get16(o->l4 + 4);
        ck_assert_uint_eq(o->ulen, o->l4len);
        ck_assert_uint_ne(get16(o->l4 + 6), 0); /* we always fill it in */
        ck_assert_uint_eq(fold(sum16(pseudo(o->src, o->dst, 17, o->ulen), o->l4, o->ulen)), 0);
        o->data = o->l4 + 8;
    } else if (o->proto == 1) {
        ck_assert_uint_eq(fold(sum16(0, o->l4, o->l4len)), 0);
    }
    return 0;
}

static struct th *th_new(uint32_t icmp_rate)
{
    struct th *h = calloc(1, sizeof(*h));
    ck_assert_ptr_nonnull(h);
    pkt_capture_init(&h->cap);
    struct stk_config c;
    memset(&c, 0, sizeof(c));
    memcpy(c.mac, US_MAC, 6);
    c.ip = US_IP;
    c.prefix = 24;
    c.max_socks = 64;
    c.io_ctx = &h->cap;
    c.tx = pkt_capture_tx;
    c.ev_ctx = h;
    c.on_event = on_event;
    c.icmp_unreach_per_s = icmp_rate;
    c.udp_rcvbuf = 16384;
    h->now = T0;
    ck_assert_int_eq(stk_engine_create(&c, h->now, &h->e), 0);
    /* The peer announces itself so sends need no ARP round trip. */
    uint8_t f[64];
    size_t n = pkt_build_arp_request(f, sizeof(f), PEER_MAC, PEER_IP, US_IP);
    stk_input(h->e, h->now, f, n, 0);
    pkt_capture_clear(&h->cap);
    return h;
}

static void th_free(struct th *h)
{
    stk_engine_destroy(h->e);
    pkt_capture_fini(&h->cap);
    free(h);
}

static const struct stk_counters *ctr(struct th *h)
{
    return stk_counters(h->e);
}

static int sock_bound(struct th *h, uint32_t ip, uint16_t port)
{
    int sd = stk_udp_socket(h->e, NULL);
    ck_assert_int_ge(sd, 0);
    struct stk_sockaddr a = {.ip = ip, .port = port};
    ck_assert_int_eq(stk_udp_bind(h->e, sd, &a), 0);
    return sd;
}

static ssize_t send1(struct th *h, int sd, const void *p, size_t n, uint32_t ip, uint16_t port)
{
    struct stk_iov v = {p, n};
    struct stk_sockaddr to = {.ip = ip, .port = port};
    return stk_udp_sendto(h->e, h->now, sd, &v, 1, ip || port ? &to : NULL);
}

/* ---- Binding ----------------------------------------------------------------------------- */

START_TEST(bind_rules)
{
    struct th *h = th_new(0);
    int a = stk_udp_socket(h->e, NULL), b = stk_udp_socket(h->e, NULL);
    struct stk_sockaddr any = {.ip = 0, .port = 0}, p53 = {.ip = 0, .port = 5353},
                        mine = {.ip = US_IP, .port = 5353};
    struct stk_sockaddr other = {.ip = PKT_IP(10, 0, 0, 1), .port = 5353}, got;
    ck_assert_int_eq(stk_udp_bind(h->e, a, &other), -EADDRNOTAVAIL);
    ck_assert_int_eq(stk_udp_getsockname(h->e, a, &got), 0);
    ck_assert_uint_eq(got.port, 0);
    ck_assert_int_eq(stk_udp_bind(h->e, a, &any), 0);
    ck_assert_int_eq(stk_udp_getsockname(h->e, a, &got), 0);
    ck_assert_uint_ge(got.port, 32768);
    ck_assert_uint_le(got.port, 60999);
    ck_assert_int_eq(stk_udp_bind(h->e, a, &p53), -EINVAL); /* already bound */
    stk_udp_close(h->e, a);
    a = stk_udp_socket(h->e, NULL);
    ck_assert_int_eq(stk_udp_bind(h->e, a, &p53), 0);
    /* Our address overlaps the wildcard: taken, unless both ask for SO_REUSEADDR. */
    ck_assert_int_eq(stk_udp_bind(h->e, b, &mine), -EADDRINUSE);
    ck_assert_int_eq(stk_udp_setopt(h->e, b, STK_SO_REUSEADDR, 1), 0);
    ck_assert_int_eq(stk_udp_bind(h->e, b, &mine), -EADDRINUSE);
    ck_assert_int_eq(stk_udp_setopt(h->e, a, STK_SO_REUSEADDR, 1), 0);
    ck_assert_int_eq(stk_udp_bind(h->e, b, &mine), 0);
    /* Closing frees the port. */
    stk_udp_close(h->e, a);
    stk_udp_close(h->e, b);
    a = stk_udp_socket(h->e, NULL);
    ck_assert_int_eq(stk_udp_bind(h->e, a, &p53), 0);
    th_free(h);
}
END_TEST

/* ---- Sending ---------------------------------------------------------------------------- */

START_TEST(send_errors)
{
    struct th *h = th_new(0);
    int sd = stk_udp_socket(h->e, NULL);
    char buf[1500] = "x";
    ck_assert_int_eq(send1(h, sd, buf, 1, 0, 0), -EDESTADDRREQ);
    ck_assert_int_eq(send1(h, sd, buf, 1, PEER_IP, 0), -EINVAL);
    ck_assert_int_eq(send1(h, sd, buf, 1, BCAST, 9), -EACCES);
    ck_assert_int_eq(send1(h, sd, buf, 1, 0xffffffffu, 9), -EACCES);
    ck_assert_int_eq(send1(h, sd, buf, 1, PKT_IP(203, 0, 113, 1), 9), -ENETUNREACH);
    ck_assert_int_eq(send1(h, sd, buf, 1, PKT_IP(127, 0, 0, 1), 9), -ENETUNREACH);
    struct stk_iov big = {NULL, 65508};
    struct stk_sockaddr to = {.ip = PEER_IP, .port = 9};
    ck_assert_int_eq(stk_udp_sendto(h->e, h->now, sd, &big, 1, &to), -EMSGSIZE);
    /* Above the MTU: IPv4 fragments (stack/ipfrag.c), or EMSGSIZE without them. */
    static char large[1473];
    ssize_t r = send1(h, sd, large, sizeof(large), PEER_IP, 9);
    ck_assert(r == -EMSGSIZE || r == (ssize_t)sizeof(large));
    ck_assert_int_eq(send1(h, sd, buf, 1472, PEER_IP, 9), 1472);
    th_free(h);
}
END_TEST

START_TEST(send_frame)
{
    struct th *h = th_new(0);
    int sd = sock_bound(h, 0, 4000);
    /* Pieces of odd lengths: the checksum must still come out right. */
    const char *p1 = "abc", *p2 = "defgh", *p3 = "i";
    struct stk_iov v[3] = {{p1, 3}, {p2, 5}, {p3, 1}};
    struct stk_sockaddr to = {.ip = PEER_IP, .port = 53};
    ck_assert_int_eq(stk_udp_sendto(h->e, h->now, sd, v, 3, &to), 9);
    struct out o;
    ck_assert_int_eq(pop(h, &o), 0);
    ck_assert_uint_eq(o.proto, 17);
    ck_assert_uint_eq(o.src, US_IP);
    ck_assert_uint_eq(o.dst, PEER_IP);
    ck_assert_uint_eq(o.sport, 4000);
    ck_assert_uint_eq(o.dport, 53);
    ck_assert_uint_eq(o.ulen, 17);
    ck_assert_int_eq(memcmp(o.data, "abcdefghi", 9), 0);
    ck_assert_int_eq(memcmp(o.dmac, PEER_MAC, 6), 0);
    /* An empty datagram is a datagram. */
    ck_assert_int_eq(send1(h, sd, NULL, 0, PEER_IP, 53), 0);
    ck_assert_int_eq(pop(h, &o), 0);
    ck_assert_uint_eq(o.ulen, 8);
    /* Broadcast with SO_BROADCAST: to the Ethernet broadcast address, no ARP. */
    ck_assert_int_eq(stk_udp_setopt(h->e, sd, STK_SO_BROADCAST, 1), 0);
    ck_assert_int_eq(send1(h, sd, "b", 1, BCAST, 67), 1);
    ck_assert_int_eq(pop(h, &o), 0);
    static const uint8_t ff[6] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    ck_assert_int_eq(memcmp(o.dmac, ff, 6), 0);
    ck_assert_uint_eq(o.dst, BCAST);
    ck_assert_uint_eq(ctr(h)->udp_out, 3);
    /* An unbound socket is bound to an ephemeral port by its first send. */
    int s2 = stk_udp_socket(h->e, NULL);
    ck_assert_int_eq(send1(h, s2, "z", 1, PEER_IP, 53), 1);
    struct stk_sockaddr me;
    ck_assert_int_eq(stk_udp_getsockname(h->e, s2, &me), 0);
    ck_assert_uint_eq(me.ip, 0);
    ck_assert_uint_ge(me.port, 32768);
    ck_assert_int_eq(pop(h, &o), 0);
    ck_assert_uint_eq(o.sport, me.port);
    th_free(h);
}
END_TEST

/* IP_TOS: 0..255 (the shim takes Linux's answer for other values), all eight bits kept on
 * a datagram socket (Linux clears the ECN bits for TCP only), on every datagram and on
 * every fragment of a large one. */
START_TEST(ip_tos_on_datagrams)
{
    struct th *h = th_new(0);
    int sd = sock_bound(h, 0, 4000);
    int v = -1;
    ck_assert_int_eq(stk_udp_getopt(h->e, sd, STK_IP_TOS, &v), 0);
    ck_assert_int_eq(v, 0);
    ck_assert_int_eq(stk_udp_setopt(h->e, sd, STK_IP_TOS, 256), -EINVAL);
    ck_assert_int_eq(stk_udp_setopt(h->e, sd, STK_IP_TOS, -1), -EINVAL);
    ck_assert_int_eq(stk_udp_setopt(h->e, sd, STK_IP_TOS, 0xb9), 0);
    ck_assert_int_eq(stk_udp_getopt(h->e, sd, STK_IP_TOS, &v), 0);
    ck_assert_int_eq(v, 0xb9);
    ck_assert_int_eq(send1(h, sd, "x", 1, PEER_IP, 53), 1);
    struct out o;
    ck_assert_int_eq(pop(h, &o), 0);
    ck_assert_uint_eq(o.tos, 0xb9);
    static char large[3000];
    ssize_t r = send1(h, sd, large, sizeof(large), PEER_IP, 53);
    ck_assert(r == -EMSGSIZE || r == (ssize_t)sizeof(large));
    int frags = 0;
    for (const struct pkt_frame *f; (f = pkt_capture_pop(&h->cap));) {
        if (f->len < 34 || get16(f->data + 12) != 0x0800)
            continue;
        ck_assert_uint_eq(f->data[15], 0xb9);
        frags++;
    }
    ck_assert_int_eq(frags, r < 0 ? 0 : 3);
    ck_assert_int_eq(stk_udp_setopt(h->e, sd, STK_IP_TOS, 0), 0);
    ck_assert_int_eq(send1(h, sd, "y", 1, PEER_IP, 53), 1);
    ck_assert_int_eq(pop(h, &o), 0);
    ck_assert_uint_eq(o.tos, 0);
    th_free(h);
}
END_TEST

/* ---- Receiving --------------------------------------------------------------------------- */

START_TEST(recv_queue)
{
    struct th *h = th_new(0);
    int sd = sock_bound(h, 0, 7);
    char buf[64];
    struct stk_udp_meta m;
    ck_assert_int_eq(stk_udp_recvfrom(h->e, h->now, sd, buf, sizeof(buf), 0, &m), -EAGAIN);
    ck_assert_uint_eq(stk_udp_events(h->e, sd), STK_EV_OUT);
    inject(h, PEER_IP, US_IP, 1111, 7, "hello world", 11, CS_GOOD);
    inject(h, PEER2, US_IP, 2222, 7, "zero-sum", 8, CS_ZERO);
    inject(h, PEER_IP, US_IP, 3333, 7, "corrupt", 7, CS_BAD);
    ck_assert_uint_eq(ctr(h)->udp_drop_csum, 1);
    ck_assert_uint_eq(stk_udp_events(h->e, sd), STK_EV_OUT | STK_EV_IN);
    int v;
    ck_assert_int_eq(stk_udp_getopt(h->e, sd, STK_SO_NREAD, &v), 0);
    ck_assert_int_eq(v, 11);
    /* MSG_PEEK leaves it; a short buffer gets a prefix and the full length. */
    ck_assert_int_eq(stk_udp_recvfrom(h->e, h->now, sd, buf, 5, STK_MSG_PEEK, &m), 11);
    ck_assert_int_eq(memcmp(buf, "hello", 5), 0);
    ck_assert_uint_eq(m.from.ip, PEER_IP);
    ck_assert_uint_eq(m.from.port, 1111);
    ck_assert_uint_eq(m.dst, US_IP);
    ck_assert_int_eq(stk_udp_recvfrom(h->e, h->now, sd, buf, 5, 0, &m), 11);
    /* The truncated rest is gone: the next call gets the next datagram. */
    ck_assert_int_eq(stk_udp_recvfrom(h->e, h->now, sd, buf, sizeof(buf), 0, &m), 8);
    ck_assert_int_eq(memcmp(buf, "zero-sum", 8), 0);
    ck_assert_uint_eq(m.from.ip, PEER2);
    ck_assert_int_eq(stk_udp_recvfrom(h->e, h->now, sd, buf, sizeof(buf), 0, &m), -EAGAIN);
    ck_assert_int_eq(stk_udp_getopt(h->e, sd, STK_SO_NREAD, &v), 0);
    ck_assert_int_eq(v, 0);
    ck_assert_int_ge(h->events, 2);
    th_free(h);
}
END_TEST

START_TEST(recv_malformed)
{
    struct th *h = th_new(0);
    sock_bound(h, 0, 7);
    uint8_t f[128];
    /* UDP length above the IP payload, and below the header. */
    size_t n = build(f, PEER_IP, US_IP, 1, 7, "abcd", 4, CS_ZERO, 1);
    stk_input(h->e, h->now, f, n, 0);
    n = build(f, PEER_IP, US_IP, 1, 7, "abcd", 4, CS_ZERO, -5);
    stk_input(h->e, h->now, f, n, 0);
    ck_assert_uint_eq(ctr(h)->udp_drop_len, 2);
    /* Shorter than a UDP header. */
    n = build(f, PEER_IP, US_IP, 1, 7, "", 0, CS_ZERO, 0);
    f[14 + 3] = 20 + 4; /* IP total length: 4 bytes of UDP */
    f[14 + 10] = f[14 + 11] = 0;
    put16(f + 14 + 10, fold(sum16(0, f + 14, 20)));
    stk_input(h->e, h->now, f, 14 + 24, 0);
    ck_assert_uint_eq(ctr(h)->udp_drop_hdr, 1);
    /* A UDP length shorter than the IP payload: the rest is padding, ignored. */
    n = build(f, PEER_IP, US_IP, 1, 7, "abcd", 4, CS_ZERO, -2);
    stk_input(h->e, h->now, f, n, 0);
    ck_assert_uint_eq(ctr(h)->udp_bytes_in, 2);
    th_free(h);
}
END_TEST

START_TEST(rcvbuf_bound)
{
    struct th *h = th_new(0);
    int sd = sock_bound(h, 0, 7);
    static char data[1000];
    for (int i = 0; i < 100; i++)
        inject(h, PEER_IP, US_IP, 1, 7, data, sizeof(data), CS_GOOD);
    /* 16 KiB of buffer at 1000 + 256 bytes a datagram. */
    uint64_t kept = 100 - ctr(h)->udp_drop_rcvbuf;
    ck_assert_uint_eq(kept, 16384 / 1256);
    int n = 0;
    char buf[2000];
    while (stk_udp_recvfrom(h->e, h->now, sd, buf, sizeof(buf), 0, NULL) == 1000)
        n++;
    ck_assert_int_eq(n, (int)kept);
    /* SO_RCVBUF doubles as Linux does; a bigger buffer keeps more. */
    ck_assert_int_eq(stk_udp_setopt(h->e, sd, STK_SO_RCVBUF, 65536), 0);
    int v;
    ck_assert_int_eq(stk_udp_getopt(h->e, sd, STK_SO_RCVBUF, &v), 0);
    ck_assert_int_eq(v, 131072);
    th_free(h);
}
END_TEST

START_TEST(port_unreachable_out)
{
    struct th *h = th_new(1000);
    inject(h, PEER_IP, US_IP, 5000, 9999, "probe", 5, CS_GOOD);
    ck_assert_uint_eq(ctr(h)->udp_noport, 1);
    struct out o;
    ck_assert_int_eq(pop(h, &o), 0);
    ck_assert_uint_eq(o.proto, 1);
    ck_assert_uint_eq(o.dst, PEER_IP);
    ck_assert_uint_eq(o.l4[0], 3); /* destination unreachable */
    ck_assert_uint_eq(o.l4[1], 3); /* port */
    /* The quote: the offending IP header and the whole (short) datagram. */
    ck_assert_uint_eq(o.l4len, 8 + 20 + 8 + 5);
    ck_assert_uint_eq(get32(o.l4 + 8 + 12), PEER_IP);
    ck_assert_uint_eq(get16(o.l4 + 8 + 20), 5000);
    ck_assert_uint_eq(get16(o.l4 + 8 + 22), 9999);
    /* Rate-limited: a burst of 50, then 1000 a second. */
    for (int i = 0; i < 200; i++)
        inject(h, PEER_IP, US_IP, 5000, 9999, "probe", 5, CS_GOOD);
    ck_assert_uint_eq(ctr(h)->udp_icmp_unreach_out, 50);
    ck_assert_uint_eq(ctr(h)->udp_icmp_unreach_limited, 151);
    h->now += 10 * STK_US_PER_MS;
    for (int i = 0; i < 20; i++)
        inject(h, PEER_IP, US_IP, 5000, 9999, "probe", 5, CS_GOOD);
    ck_assert_uint_eq(ctr(h)->udp_icmp_unreach_out, 60);
    /* Never for a broadcast. */
    uint64_t before = ctr(h)->udp_icmp_unreach_out + ctr(h)->udp_icmp_unreach_limited;
    inject(h, PEER_IP, BCAST, 5000, 9999, "b", 1, CS_GOOD);
    ck_assert_uint_eq(ctr(h)->udp_icmp_unreach_out + ctr(h)->udp_icmp_unreach_limited, before);
    th_free(h);
}
END_TEST

/* The engine's datagram to the peer comes back quoted in an ICMP error of type/code. */
static void icmp_reply_type(struct th *h, uint8_t type, uint8_t code)
{
    struct out o;
    ck_assert_int_eq(pop(h, &o), 0);
    const uint8_t *quote = o.l4 - 20;
    uint8_t f[128];
    memcpy(f, US_MAC, 6);
    memcpy(f + 6, PEER_MAC, 6);
    put16(f + 12, 0x0800);
    uint8_t *ip = f + 14;
    memset(ip, 0, 20);
    ip[0] = 0x45;
    put16(ip + 2, 20 + 8 + 28);
    ip[8] = 64;
    ip[9] = 1;
    put32(ip + 12, PEER_IP);
    put32(ip + 16, US_IP);
    put16(ip + 10, fold(sum16(0, ip, 20)));
    uint8_t *ic = ip + 20;
    memset(ic, 0, 8);
    ic[0] = type;
    ic[1] = code;
    memcpy(ic + 8, quote, 28);
    put16(ic + 2, fold(sum16(0, ic, 36)));
    stk_input(h->e, h->now, f, 14 + 20 + 36, 0);
}

static void icmp_reply(struct th *h, uint8_t code)
{
    icmp_reply_type(h, 3, code);
}

/* Linux's __udp4_lib_err without IP_RECVERR: a connected socket takes the hard errors
 * (icmp_err_convert's fatal codes, fragmentation needed as EMSGSIZE, parameter problem as
 * EPROTO) and never the soft ones (net/host unreachable, time exceeded). */
START_TEST(connected_icmp_errors)
{
    static const struct {
        uint8_t type, code;
        int err; /* 0: soft, not reported */
    } cases[] = {
        {3, 3, ECONNREFUSED},
        {3, 2, ENOPROTOOPT},
        {3, 4, EMSGSIZE},
        {3, 9, ENETUNREACH},
        {3, 10, EHOSTUNREACH},
        {3, 13, EHOSTUNREACH},
        {3, 7, EHOSTDOWN},
        {12, 0, EPROTO},
        {3, 0, 0},
        {3, 1, 0},
        {3, 12, 0},
        {3, 16, 0},
        {11, 0, 0},
    };
    struct th *h = th_new(0);
    int sd = stk_udp_socket(h->e, NULL);
    struct stk_sockaddr to = {.ip = PEER_IP, .port = 9999};
    ck_assert_int_eq(stk_udp_connect(h->e, h->now, sd, &to), 0);
    uint64_t hard = 0;
    for (unsigned i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        ck_assert_int_eq(send1(h, sd, "q", 1, 0, 0), 1);
        icmp_reply_type(h, cases[i].type, cases[i].code);
        hard += cases[i].err != 0;
        ck_assert_uint_eq(ctr(h)->udp_icmp_err_in, hard);
        int v = -1;
        ck_assert_int_eq(stk_udp_getopt(h->e, sd, STK_SO_ERROR, &v), 0);
        ck_assert_int_eq(v, cases[i].err);
    }
    th_free(h);
}
END_TEST

START_TEST(connected_refused)
{
    struct th *h = th_new(0);
    int sd = stk_udp_socket(h->e, NULL);
    struct stk_sockaddr to = {.ip = PEER_IP, .port = 9999}, got;
    ck_assert_int_eq(stk_udp_getpeername(h->e, sd, &got), -ENOTCONN);
    ck_assert_int_eq(stk_udp_connect(h->e, h->now, sd, &to), 0);
    ck_assert_int_eq(stk_udp_getpeername(h->e, sd, &got), 0);
    ck_assert_uint_eq(got.ip, PEER_IP);
    ck_assert_int_eq(stk_udp_getsockname(h->e, sd, &got), 0);
    ck_assert_uint_eq(got.ip, US_IP);
    uint16_t lport = got.port;
    ck_assert_int_eq(send1(h, sd, "q", 1, 0, 0), 1);
    icmp_reply(h, 3);
    ck_assert_uint_eq(ctr(h)->udp_icmp_err_in, 1);
    ck_assert(stk_udp_events(h->e, sd) & STK_EV_ERR);
    /* Reported once, by the next call, even with data queued. */
    inject(h, PEER_IP, US_IP, 9999, lport, "late", 4, CS_GOOD);
    char buf[16];
    ck_assert_int_eq(stk_udp_recvfrom(h->e, h->now, sd, buf, sizeof(buf), 0, NULL), -ECONNREFUSED);
    ck_assert_int_eq(stk_udp_recvfrom(h->e, h->now, sd, buf, sizeof(buf), 0, NULL), 4);
    /* Again through send. */
    ck_assert_int_eq(send1(h, sd, "q", 1, 0, 0), 1);
    icmp_reply(h, 3);
    ck_assert_int_eq(send1(h, sd, "q", 1, 0, 0), -ECONNREFUSED);
    ck_assert_int_eq(send1(h, sd, "q", 1, 0, 0), 1);
    /* Only its peer is heard; another source goes elsewhere (here: nobody). */
    inject(h, PEER2, US_IP, 9999, lport, "other", 5, CS_GOOD);
    ck_assert_int_eq(stk_udp_recvfrom(h->e, h->now, sd, buf, sizeof(buf), 0, NULL), -EAGAIN);
    /* Disconnect releases the automatic port and the association. */
    ck_assert_int_eq(stk_udp_connect(h->e, h->now, sd, NULL), 0);
    ck_assert_int_eq(stk_udp_getpeername(h->e, sd, &got), -ENOTCONN);
    ck_assert_int_eq(stk_udp_getsockname(h->e, sd, &got), 0);
    ck_assert_uint_eq(got.ip, 0);
    ck_assert_uint_eq(got.port, 0);
    th_free(h);
}
END_TEST

START_TEST(unconnected_ignores_icmp)
{
    struct th *h = th_new(0);
    int sd = sock_bound(h, 0, 4000);
    ck_assert_int_eq(send1(h, sd, "q", 1, PEER_IP, 9999), 1);
    icmp_reply(h, 3);
    ck_assert_uint_eq(ctr(h)->udp_icmp_err_in, 0);
    ck_assert_int_eq(send1(h, sd, "q", 1, PEER_IP, 9999), 1);
    int v = -1;
    ck_assert_int_eq(stk_udp_getopt(h->e, sd, STK_SO_ERROR, &v), 0);
    ck_assert_int_eq(v, 0);
    th_free(h);
}
END_TEST

START_TEST(lookup_and_broadcast)
{
    struct th *h = th_new(0);
    /* A wildcard socket and a connected one on the same port (SO_REUSEADDR). */
    int w = stk_udp_socket(h->e, NULL), c = stk_udp_socket(h->e, NULL);
    stk_udp_setopt(h->e, w, STK_SO_REUSEADDR, 1);
    stk_udp_setopt(h->e, c, STK_SO_REUSEADDR, 1);
    struct stk_sockaddr a = {.ip = 0, .port = 6000}, peer = {.ip = PEER_IP, .port = 7000};
    ck_assert_int_eq(stk_udp_bind(h->e, w, &a), 0);
    ck_assert_int_eq(stk_udp_bind(h->e, c, &a), 0);
    ck_assert_int_eq(stk_udp_connect(h->e, h->now, c, &peer), 0);
    inject(h, PEER_IP, US_IP, 7000, 6000, "to-c", 4, CS_GOOD);
    inject(h, PEER_IP, US_IP, 7001, 6000, "to-w", 4, CS_GOOD);
    char buf[8];
    ck_assert_int_eq(stk_udp_recvfrom(h->e, h->now, c, buf, sizeof(buf), 0, NULL), 4);
    ck_assert_int_eq(memcmp(buf, "to-c", 4), 0);
    ck_assert_int_eq(stk_udp_recvfrom(h->e, h->now, w, buf, sizeof(buf), 0, NULL), 4);
    ck_assert_int_eq(memcmp(buf, "to-w", 4), 0);
    /* A broadcast reaches every wildcard socket on the port, not one bound to our
     * address; the destination is kept for IP_PKTINFO. */
    int s = stk_udp_socket(h->e, NULL);
    stk_udp_setopt(h->e, s, STK_SO_REUSEADDR, 1);
    struct stk_sockaddr mine = {.ip = US_IP, .port = 6000};
    ck_assert_int_eq(stk_udp_bind(h->e, s, &mine), 0);
    int w2 = stk_udp_socket(h->e, NULL);
    stk_udp_setopt(h->e, w2, STK_SO_REUSEADDR, 1);
    ck_assert_int_eq(stk_udp_bind(h->e, w2, &a), 0);
    inject(h, PEER2, BCAST, 7000, 6000, "all", 3, CS_GOOD);
    struct stk_udp_meta m;
    ck_assert_int_eq(stk_udp_recvfrom(h->e, h->now, w, buf, sizeof(buf), 0, &m), 3);
    ck_assert_uint_eq(m.dst, BCAST);
    ck_assert_int_eq(stk_udp_recvfrom(h->e, h->now, w2, buf, sizeof(buf), 0, &m), 3);
    ck_assert_int_eq(stk_udp_recvfrom(h->e, h->now, s, buf, sizeof(buf), 0, &m), -EAGAIN);
    ck_assert_int_eq(stk_udp_recvfrom(h->e, h->now, c, buf, sizeof(buf), 0, &m), -EAGAIN);
    ck_assert_uint_eq(ctr(h)->udp_bcast_in, 1);
    th_free(h);
}
END_TEST

/* SO_REUSEPORT: sockets with one key share a port (another key, or none, cannot join), and
 * each unicast datagram goes to one of them by its sender: one sender's datagrams always to
 * the same socket, 32 senders spread over both; when one closes the other gets everything. */
START_TEST(reuseport_group)
{
    struct th *h = th_new(0);
    int r[4];
    for (int i = 0; i < 4; i++)
        r[i] = stk_udp_socket(h->e, NULL);
    ck_assert_int_eq(stk_udp_setopt(h->e, r[0], STK_SO_REUSEPORT, 5), 0);
    ck_assert_int_eq(stk_udp_setopt(h->e, r[1], STK_SO_REUSEPORT, 5), 0);
    ck_assert_int_eq(stk_udp_setopt(h->e, r[2], STK_SO_REUSEPORT, 6), 0);
    int v = 0;
    ck_assert_int_eq(stk_udp_getopt(h->e, r[1], STK_SO_REUSEPORT, &v), 0);
    ck_assert_int_eq(v, 1);
    struct stk_sockaddr a = {.ip = 0, .port = 6100};
    ck_assert_int_eq(stk_udp_bind(h->e, r[0], &a), 0);
    ck_assert_int_eq(stk_udp_bind(h->e, r[1], &a), 0);
    ck_assert_int_eq(stk_udp_bind(h->e, r[2], &a), -EADDRINUSE);
    ck_assert_int_eq(stk_udp_bind(h->e, r[3], &a), -EADDRINUSE);
    char buf[8];
    unsigned got[2] = {0, 0};
    for (uint16_t p = 0; p < 32; p++) {
        for (int k = 0; k < 3; k++)
            inject(h, PEER_IP, US_IP, (uint16_t)(7000 + p), 6100, "d", 1, CS_GOOD);
        int n0 = 0, n1 = 0;
        while (stk_udp_recvfrom(h->e, h->now, r[0], buf, sizeof(buf), 0, NULL) == 1)
            n0++;
        while (stk_udp_recvfrom(h->e, h->now, r[1], buf, sizeof(buf), 0, NULL) == 1)
            n1++;
        ck_assert_msg((n0 == 3 && n1 == 0) || (n0 == 0 && n1 == 3),
                      "sender port %u: %d and %d of its 3 datagrams", 7000 + p, n0, n1);
        got[n1 == 3]++;
    }
    ck_assert_msg(got[0] > 0 && got[1] > 0, "one socket got every sender: %u and %u", got[0],
                  got[1]);
    stk_udp_close(h->e, r[0]);
    for (uint16_t p = 0; p < 8; p++)
        inject(h, PEER_IP, US_IP, (uint16_t)(8000 + p), 6100, "d", 1, CS_GOOD);
    int n1 = 0;
    while (stk_udp_recvfrom(h->e, h->now, r[1], buf, sizeof(buf), 0, NULL) == 1)
        n1++;
    ck_assert_int_eq(n1, 8);
    th_free(h);
}
END_TEST

/* A socket bound to the subnet's broadcast address (Linux's inet_bind takes RTN_BROADCAST as
 * RTN_LOCAL; nmbd binds one per interface): broadcasts to that address reach it, unicast to
 * ours does not; it shares its port with a socket bound to our address (only the wildcard
 * overlaps both); it keeps its address when connected. And a socket bound to our address
 * gets our unicast before a wildcard one bound after it (compute_score). */
START_TEST(bind_broadcast_address)
{
    struct th *h = th_new(0);
    struct stk_sockaddr bc = {.ip = BCAST, .port = 137}, mine = {.ip = US_IP, .port = 137};
    struct stk_sockaddr any = {.ip = 0, .port = 137}, got;
    int b = stk_udp_socket(h->e, NULL), u = stk_udp_socket(h->e, NULL);
    int w = stk_udp_socket(h->e, NULL);
    ck_assert_int_eq(stk_udp_bind(h->e, b, &bc), 0);
    ck_assert_int_eq(stk_udp_getsockname(h->e, b, &got), 0);
    ck_assert_uint_eq(got.ip, BCAST);
    ck_assert_uint_eq(got.port, 137);
    ck_assert_int_eq(stk_udp_bind(h->e, u, &mine), 0);
    ck_assert_int_eq(stk_udp_bind(h->e, w, &any), -EADDRINUSE);
    inject(h, PEER_IP, BCAST, 137, 137, "bcast", 5, CS_GOOD);
    inject(h, PEER_IP, US_IP, 137, 137, "ucast", 5, CS_GOOD);
    char buf[8];
    ck_assert_int_eq(stk_udp_recvfrom(h->e, h->now, b, buf, sizeof(buf), 0, NULL), 5);
    ck_assert_int_eq(memcmp(buf, "bcast", 5), 0);
    ck_assert_int_eq(stk_udp_recvfrom(h->e, h->now, b, buf, sizeof(buf), 0, NULL), -EAGAIN);
    ck_assert_int_eq(stk_udp_recvfrom(h->e, h->now, u, buf, sizeof(buf), 0, NULL), 5);
    ck_assert_int_eq(memcmp(buf, "ucast", 5), 0);
    ck_assert_int_eq(stk_udp_recvfrom(h->e, h->now, u, buf, sizeof(buf), 0, NULL), -EAGAIN);
    /* The limited broadcast is one of our broadcast addresses too; another is refused. */
    struct stk_sockaddr all = {.ip = 0xffffffffu, .port = 138};
    struct stk_sockaddr net0 = {.ip = PKT_IP(198, 18, 0, 0), .port = 138};
    ck_assert_int_eq(stk_udp_bind(h->e, w, &net0), -EADDRNOTAVAIL);
    ck_assert_int_eq(stk_udp_bind(h->e, w, &all), 0);
    /* Connected, it keeps its address (__ip4_datagram_connect keeps inet_rcv_saddr). */
    struct stk_sockaddr peer = {.ip = PEER_IP, .port = 137};
    ck_assert_int_eq(stk_udp_connect(h->e, h->now, b, &peer), 0);
    ck_assert_int_eq(stk_udp_getsockname(h->e, b, &got), 0);
    ck_assert_uint_eq(got.ip, BCAST);
    /* Our address before the wildcard, whichever was bound last. */
    int s = stk_udp_socket(h->e, NULL), x = stk_udp_socket(h->e, NULL);
    stk_udp_setopt(h->e, s, STK_SO_REUSEADDR, 1);
    stk_udp_setopt(h->e, x, STK_SO_REUSEADDR, 1);
    struct stk_sockaddr mine2 = {.ip = US_IP, .port = 6001}, any2 = {.ip = 0, .port = 6001};
    ck_assert_int_eq(stk_udp_bind(h->e, s, &mine2), 0);
    ck_assert_int_eq(stk_udp_bind(h->e, x, &any2), 0);
    inject(h, PEER_IP, US_IP, 7000, 6001, "exact", 5, CS_GOOD);
    ck_assert_int_eq(stk_udp_recvfrom(h->e, h->now, s, buf, sizeof(buf), 0, NULL), 5);
    ck_assert_int_eq(stk_udp_recvfrom(h->e, h->now, x, buf, sizeof(buf), 0, NULL), -EAGAIN);
    th_free(h);
}
END_TEST

START_TEST(shutdown_rules)
{
    struct th *h = th_new(0);
    int sd = sock_bound(h, 0, 7);
    /* Unconnected: ENOTCONN, but shut all the same (Linux's inet_shutdown). */
    ck_assert_int_eq(stk_udp_shutdown(h->e, sd, STK_SHUT_RD), -ENOTCONN);
    char buf[8];
    ck_assert_int_eq(stk_udp_recvfrom(h->e, h->now, sd, buf, sizeof(buf), 0, NULL), 0);
    ck_assert(stk_udp_events(h->e, sd) & STK_EV_IN);
    inject(h, PEER_IP, US_IP, 1, 7, "x", 1, CS_GOOD);
    ck_assert_uint_eq(ctr(h)->udp_drop_shut, 1);
    int c = stk_udp_socket(h->e, NULL);
    struct stk_sockaddr to = {.ip = PEER_IP, .port = 9};
    ck_assert_int_eq(stk_udp_connect(h->e, h->now, c, &to), 0);
    ck_assert_int_eq(stk_udp_shutdown(h->e, c, STK_SHUT_WR), 0);
    ck_assert_int_eq(send1(h, c, "x", 1, 0, 0), -EPIPE);
    ck_assert_int_eq(stk_udp_shutdown(h->e, c, 7), -EINVAL);
    th_free(h);
}
END_TEST

START_TEST(connect_errors)
{
    struct th *h = th_new(0);
    int sd = stk_udp_socket(h->e, NULL);
    struct stk_sockaddr b = {.ip = BCAST, .port = 9},
                        far = {.ip = PKT_IP(203, 0, 113, 9), .port = 9};
    ck_assert_int_eq(stk_udp_connect(h->e, h->now, sd, &b), -EACCES);
    ck_assert_int_eq(stk_udp_connect(h->e, h->now, sd, &far), -ENETUNREACH);
    stk_udp_setopt(h->e, sd, STK_SO_BROADCAST, 1);
    ck_assert_int_eq(stk_udp_connect(h->e, h->now, sd, &b), 0);
    ck_assert_int_eq(stk_udp_close(h->e, sd), 0);
    ck_assert_int_eq(stk_udp_close(h->e, sd), -EBADF);
    th_free(h);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("udp");
    TCase *tc = tcase_create("udp");
    tcase_add_test(tc, bind_rules);
    tcase_add_test(tc, send_errors);
    tcase_add_test(tc, send_frame);
    tcase_add_test(tc, ip_tos_on_datagrams);
    tcase_add_test(tc, recv_queue);
    tcase_add_test(tc, recv_malformed);
    tcase_add_test(tc, rcvbuf_bound);
    tcase_add_test(tc, port_unreachable_out);
    tcase_add_test(tc, connected_refused);
    tcase_add_test(tc, connected_icmp_errors);
    tcase_add_test(tc, unconnected_ignores_icmp);
    tcase_add_test(tc, lookup_and_broadcast);
    tcase_add_test(tc, reuseport_group);
    tcase_add_test(tc, bind_broadcast_address);
    tcase_add_test(tc, shutdown_rules);
    tcase_add_test(tc, connect_errors);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

/*
 * test_ip6.c - IPv6, ICMPv6 and neighbour discovery (stack/ip6.c, stack/nd.c).
 *
 * Like test_net.c: one engine driven through stk_input(), everything it transmits kept by a
 * pkt_capture. IPv6 frames are built and checked here with their own small builder and
 * parser (pkt.c knows only IPv4), whose checksums use the test library's RFC 1071 code,
 * not the engine's. Addresses are in the benchmarking prefix 2001:2::/48 (RFC 5180) and
 * fe80::/64.
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "pkt.h"
#include "stk_int.h"
#include "tn.h"
#include "wire.h"

/* RFC 4861 DELAY_FIRST_PROBE_TIME, and a microsecond past it. */
#define ND_DELAY_TEST_US (5 * STK_US_PER_S + 1)

static const uint8_t US_MAC[6] = {0x02, 0, 0, 0, 0, 0x02};
static const uint8_t PEER_MAC[6] = {0x02, 0, 0, 0, 0, 0x01};
static const uint8_t PEER_MAC2[6] = {0x02, 0, 0, 0, 0, 0x11};
static const uint8_t GW_MAC[6] = {0x02, 0, 0, 0, 0, 0xfe};
/* fe80:: + modified EUI-64 of 02:00:00:00:00:02: the U/L bit flipped, ff:fe inserted. */
static const uint8_t US_LL[16] = {0xfe, 0x80, [11] = 0xff, [12] = 0xfe, [15] = 0x02};
static const uint8_t US_GL[16] = {0x20, 0x01, 0x00, 0x02, [15] = 0x02};
static const uint8_t PEER_LL[16] = {0xfe, 0x80, [15] = 0x01};
static const uint8_t PEER_GL[16] = {0x20, 0x01, 0x00, 0x02, [15] = 0x01};
static const uint8_t OFF_GL[16] = {0x20, 0x01, 0x00, 0x02, 0x00, 0x09, [15] = 0x09};
static const uint8_t GW_LL[16] = {0xfe, 0x80, [15] = 0xfe};
static const uint8_t ALL_NODES[16] = {0xff, 0x02, [15] = 1};
static const uint8_t UNSPEC[16] = {0};
static const uint8_t MAC_ALL_NODES[6] = {0x33, 0x33, 0, 0, 0, 1};

static struct stk_config base_cfg(void)
{
    struct stk_config c;
    memset(&c, 0, sizeof(c));
    memcpy(c.mac, US_MAC, 6);
    c.ip = PKT_IP(198, 18, 0, 2);
    c.prefix = 24;
    memcpy(c.ip6, US_GL, 16);
    c.ip6_prefix = 64;
    c.max_socks = 64;
    c.sndbuf = c.rcvbuf = 4096;
    return c;
}

static struct tn *tn_new_cfg(struct stk_config *c)
{
    struct tn *t = tn_create(c);
    pkt_capture_clear(&t->cap); /* the gratuitous ARP */
    return t;
}

static struct tn *tn_new(void)
{
    struct stk_config c = base_cfg();
    return tn_new_cfg(&c);
}

/* ---- An independent IPv6 builder and parser -------------------------------------------- */

/* Sets the checksum of the ICMPv6 message m[0..len) between src and dst. */
static void icmp6_fix(uint8_t *m, size_t len, const uint8_t src[16], const uint8_t dst[16])
{
    m[2] = m[3] = 0;
    uint16_t c = pkt_csum_fold(pkt_csum_add(pseudo6(src, dst, 58, (uint32_t)len), m, len));
    m[2] = (uint8_t)(c >> 8);
    m[3] = (uint8_t)c;
}

/* Ethernet + IPv6 around pay (extension headers and upper layer, already final). */
static size_t mk6(uint8_t *f, const uint8_t dmac[6], const uint8_t smac[6], const uint8_t src[16],
                  const uint8_t dst[16], uint8_t nh, uint8_t hlim, const uint8_t *pay, size_t plen)
{
    memcpy(f, dmac, 6);
    memcpy(f + 6, smac, 6);
    f[12] = 0x86;
    f[13] = 0xdd;
    uint8_t *ip = f + 14;
    memset(ip, 0, 40);
    ip[0] = 0x60;
    ip[4] = (uint8_t)(plen >> 8);
    ip[5] = (uint8_t)plen;
    ip[6] = nh;
    ip[7] = hlim;
    memcpy(ip + 8, src, 16);
    memcpy(ip + 24, dst, 16);
    memcpy(ip + 40, pay, plen);
    return 54 + plen;
}

/* An ICMPv6 message type/code with 4 bytes of header data and a body, checksummed. */
static size_t mk_icmp6(uint8_t *m, uint8_t type, uint8_t code, uint32_t word, const void *body,
                       size_t blen, const uint8_t src[16], const uint8_t dst[16])
{
    m[0] = type;
    m[1] = code;
    m[4] = (uint8_t)(word >> 24);
    m[5] = (uint8_t)(word >> 16);
    m[6] = (uint8_t)(word >> 8);
    m[7] = (uint8_t)word;
    if (blen)
        memcpy(m + 8, body, blen);
    icmp6_fix(m, 8 + blen, src, dst);
    return 8 + blen;
}

static void sn_group(const uint8_t a[16], uint8_t g[16])
{
    static const uint8_t pre[13] = {0xff, 0x02, [11] = 1, [12] = 0xff};
    memcpy(g, pre, 13);
    memcpy(g + 13, a + 13, 3);
}

static void group_mac(const uint8_t g[16], uint8_t mac[6])
{
    mac[0] = mac[1] = 0x33;
    memcpy(mac + 2, g + 12, 4);
}

/* A neighbour solicitation for target; lla (may be NULL) as a source link-layer option. */
static size_t mk_ns(uint8_t *f, const uint8_t dmac[6], const uint8_t smac[6], const uint8_t src[16],
                    const uint8_t dst[16], const uint8_t target[16], const uint8_t *lla,
                    uint8_t hlim)
{
    uint8_t m[32] = {135};
    memcpy(m + 8, target, 16);
    size_t len = 24;
    if (lla) {
        m[24] = 1;
        m[25] = 1;
        memcpy(m + 26, lla, 6);
        len = 32;
    }
    icmp6_fix(m, len, src, dst);
    return mk6(f, dmac, smac, src, dst, 58, hlim, m, len);
}

static size_t mk_na(uint8_t *f, const uint8_t dmac[6], const uint8_t smac[6], const uint8_t src[16],
                    const uint8_t dst[16], const uint8_t target[16], uint8_t flags,
                    const uint8_t *lla)
{
    uint8_t m[32] = {136};
    m[4] = flags;
    memcpy(m + 8, target, 16);
    size_t len = 24;
    if (lla) {
        m[24] = 2;
        m[25] = 1;
        memcpy(m + 26, lla, 6);
        len = 32;
    }
    icmp6_fix(m, len, src, dst);
    return mk6(f, dmac, smac, src, dst, 58, 255, m, len);
}

static size_t mk_echo(uint8_t *f, const uint8_t dmac[6], const uint8_t src[16],
                      const uint8_t dst[16], uint16_t seq, size_t dlen)
{
    uint8_t m[1500], data[1400];
    for (size_t i = 0; i < dlen; i++)
        data[i] = (uint8_t)(i * 7 + seq);
    size_t n = mk_icmp6(m, 128, 0, 0x4242u << 16 | seq, data, dlen, src, dst);
    return mk6(f, dmac, PEER_MAC, src, dst, 58, 64, m, n);
}

/* What the engine sent, checked: Ethernet from us, IPv6 version 6, payload length exact,
 * ICMPv6 (the only upper layer it sends) with a correct checksum. */
struct o6 {
    uint8_t buf[2000];
    size_t len;
    const uint8_t *dmac, *src, *dst, *m;
    uint8_t hlim;
    size_t mlen;
};

static void pop6(struct tn *t, struct o6 *o)
{
    o->len = tn_pop6(t, US_MAC, 58, o->buf, sizeof(o->buf));
    const uint8_t *ip = o->buf + 14;
    o->dmac = o->buf;
    o->hlim = ip[7];
    o->src = ip + 8;
    o->dst = ip + 24;
    o->m = ip + 40;
    o->mlen = o->len - 54;
    ck_assert_uint_ge(o->mlen, 8);
}

/* An advertisement for target from us: S and O as given, a target link-layer option. */
static void expect_na(struct tn *t, const uint8_t dmac[6], const uint8_t dst[16],
                      const uint8_t target[16], uint8_t flags)
{
    struct o6 o;
    pop6(t, &o);
    ck_assert_mem_eq(o.dmac, dmac, 6);
    ck_assert_mem_eq(o.src, target, 16);
    ck_assert_mem_eq(o.dst, dst, 16);
    ck_assert_uint_eq(o.hlim, 255);
    ck_assert_uint_eq(o.m[0], 136);
    ck_assert_uint_eq(o.m[1], 0);
    ck_assert_uint_eq(o.m[4], flags);
    ck_assert_mem_eq(o.m + 8, target, 16);
    ck_assert_uint_eq(o.mlen, 32);
    ck_assert_uint_eq(o.m[24], 2);
    ck_assert_uint_eq(o.m[25], 1);
    ck_assert_mem_eq(o.m + 26, US_MAC, 6);
}

/* A solicitation from us for target: multicast to its solicited-node group, or unicast. */
static void expect_ns(struct tn *t, const uint8_t target[16], const uint8_t *unicast_mac,
                      const uint8_t src[16])
{
    struct o6 o;
    uint8_t g[16], gm[6];
    pop6(t, &o);
    sn_group(target, g);
    group_mac(g, gm);
    ck_assert_mem_eq(o.dmac, unicast_mac ? unicast_mac : gm, 6);
    ck_assert_mem_eq(o.dst, unicast_mac ? target : g, 16);
    ck_assert_mem_eq(o.src, src, 16);
    ck_assert_uint_eq(o.hlim, 255);
    ck_assert_uint_eq(o.m[0], 135);
    ck_assert_mem_eq(o.m + 8, target, 16);
    ck_assert_uint_eq(o.mlen, 32);
    ck_assert_uint_eq(o.m[24], 1);
    ck_assert_mem_eq(o.m + 26, US_MAC, 6);
}

static void expect_echo_reply(struct tn *t, const uint8_t dmac[6], const uint8_t src[16],
                              const uint8_t dst[16], uint16_t seq, size_t dlen)
{
    struct o6 o;
    pop6(t, &o);
    ck_assert_mem_eq(o.dmac, dmac, 6);
    ck_assert_mem_eq(o.src, src, 16);
    ck_assert_mem_eq(o.dst, dst, 16);
    ck_assert_uint_eq(o.hlim, 64);
    ck_assert_uint_eq(o.m[0], 129);
    ck_assert_uint_eq(o.m[1], 0);
    ck_assert_uint_eq(o.m[4] << 8 | o.m[5], 0x4242);
    ck_assert_uint_eq(o.m[6] << 8 | o.m[7], seq);
    ck_assert_uint_eq(o.mlen, 8 + dlen);
    for (size_t i = 0; i < dlen; i++)
        ck_assert_uint_eq(o.m[8 + i], (uint8_t)(i * 7 + seq));
}

/* A parameter problem about the packet we sent, with code and pointer. */
static void expect_param_prob(struct tn *t, const uint8_t dst[16], uint8_t code, uint32_t ptr,
                              const uint8_t *sent_ip, size_t sent_len)
{
    struct o6 o;
    pop6(t, &o);
    ck_assert_mem_eq(o.dst, dst, 16);
    ck_assert_uint_eq(o.hlim, 64);
    ck_assert_uint_eq(o.m[0], 4);
    ck_assert_uint_eq(o.m[1], code);
    ck_assert_uint_eq((uint32_t)o.m[4] << 24 | (uint32_t)o.m[5] << 16 | o.m[6] << 8 | o.m[7], ptr);
    ck_assert_uint_eq(o.mlen, 8 + sent_len);
    ck_assert_mem_eq(o.m + 8, sent_ip, sent_len);
}

/* The peer (fe80::1 at PEER_MAC) solicits our link-local address, which teaches the engine
 * its MAC (STALE); the advertisement is consumed. */
static void learn_peer(struct tn *t, const uint8_t src[16], const uint8_t target[16])
{
    uint8_t f[200], g[16], gm[6];
    sn_group(target, g);
    group_mac(g, gm);
    inject(t, f, mk_ns(f, gm, PEER_MAC, src, g, target, PEER_MAC, 255));
    expect_na(t, PEER_MAC, src, target, 0x60);
}

/* ---- Addresses ------------------------------------------------------------------------- */

START_TEST(linklocal_from_mac)
{
    struct tn *t = tn_new();
    ck_assert(stk__ip6_enabled(t->e));
    ck_assert_mem_eq(stk__ip6_linklocal(t->e), US_LL, 16);
    ck_assert(stk__ip6_is_ours(t->e, US_LL));
    ck_assert(stk__ip6_is_ours(t->e, US_GL));
    ck_assert(!stk__ip6_is_ours(t->e, PEER_GL));
    tn_free(t);

    /* RFC 4291 appendix A: 52:54:00:12:34:56 -> 5054:00ff:fe12:3456 (U/L bit inverted). */
    struct stk_config c = base_cfg();
    const uint8_t mac[6] = {0x52, 0x54, 0x00, 0x12, 0x34, 0x56};
    const uint8_t ll[16] = {0xfe, 0x80, [8] = 0x50, 0x54, 0x00, 0xff, 0xfe, 0x12, 0x34, 0x56};
    memcpy(c.mac, mac, 6);
    t = tn_new_cfg(&c);
    ck_assert_mem_eq(stk__ip6_linklocal(t->e), ll, 16);
    tn_free(t);

    /* IPv6 needs a 1280-byte MTU: below it the engine leaves IPv6 alone. */
    c = base_cfg();
    c.mtu = 1000;
    t = tn_new_cfg(&c);
    ck_assert(!stk__ip6_enabled(t->e));
    uint8_t f[200];
    inject(t, f, mk_echo(f, US_MAC, PEER_LL, US_LL, 1, 8));
    ck_assert_uint_eq(ctr(t)->eth_drop_type, 1);
    ck_assert_uint_eq(ctr(t)->ip6_in, 0);
    expect_none(t);
    tn_free(t);

    /* Bad IPv6 configuration is refused. */
    struct stk_engine *e;
    c = base_cfg();
    c.tx = pkt_capture_tx;
    c.ip6_prefix = 0;
    ck_assert_int_eq(stk_engine_create(&c, TN_T0, &e), -EINVAL);
    c.ip6_prefix = 129;
    ck_assert_int_eq(stk_engine_create(&c, TN_T0, &e), -EINVAL);
    c.ip6_prefix = 64;
    memcpy(c.gateway6, ALL_NODES, 16);
    ck_assert_int_eq(stk_engine_create(&c, TN_T0, &e), -EINVAL);
}
END_TEST

START_TEST(routing_and_send_errors)
{
    struct tn *t = tn_new();
    uint8_t nh[16], src[16];
    ck_assert_int_eq(stk__ip6_route(t->e, PEER_LL, nh), 0);
    ck_assert_mem_eq(nh, PEER_LL, 16);
    ck_assert_int_eq(stk__ip6_route(t->e, PEER_GL, nh), 0);
    ck_assert_mem_eq(nh, PEER_GL, 16);
    /* Off-prefix without a gateway, loopback, unspecified, v4-mapped, ours: unreachable. */
    const uint8_t lo[16] = {[15] = 1}, mapped[16] = {[10] = 0xff, 0xff, 198, 18, 0, 1};
    ck_assert_int_eq(stk__ip6_route(t->e, OFF_GL, nh), -EHOSTUNREACH);
    ck_assert_int_eq(stk__ip6_route(t->e, lo, nh), -EHOSTUNREACH);
    ck_assert_int_eq(stk__ip6_route(t->e, UNSPEC, nh), -EHOSTUNREACH);
    ck_assert_int_eq(stk__ip6_route(t->e, mapped, nh), -EHOSTUNREACH);
    ck_assert_int_eq(stk__ip6_route(t->e, US_GL, nh), -EHOSTUNREACH);
    stk__ip6_select_src(t->e, PEER_LL, src);
    ck_assert_mem_eq(src, US_LL, 16);
    stk__ip6_select_src(t->e, ALL_NODES, src);
    ck_assert_mem_eq(src, US_LL, 16);
    stk__ip6_select_src(t->e, OFF_GL, src);
    ck_assert_mem_eq(src, US_GL, 16);

    uint8_t hdr[STK_L2L3_HLEN6 + 8] = {0};
    ck_assert_int_eq(stk__ip6_send(t->e, t->now, NULL, OFF_GL, 58, hdr, 8, NULL, 0, NULL),
                     -EHOSTUNREACH);
    ck_assert_uint_eq(ctr(t)->ip6_drop_noroute, 1);
    static const uint8_t big[1500];
    struct stk_iov pay = {big, 1500 - 40 - 8 + 1};
    ck_assert_int_eq(stk__ip6_send(t->e, t->now, NULL, PEER_LL, 58, hdr, 8, &pay, 1, NULL),
                     -EMSGSIZE);
    expect_none(t);
    tn_free(t);

    /* With a link-local gateway, off-prefix traffic resolves the gateway. */
    struct stk_config c = base_cfg();
    memcpy(c.gateway6, GW_LL, 16);
    t = tn_new_cfg(&c);
    ck_assert_int_eq(stk__ip6_route(t->e, OFF_GL, nh), 0);
    ck_assert_mem_eq(nh, GW_LL, 16);
    uint8_t m[8] = {128, 0, 0, 0, 0, 1, 0, 1};
    icmp6_fix(m, 8, US_GL, OFF_GL);
    memcpy(hdr + STK_L2L3_HLEN6, m, 8);
    ck_assert_int_eq(stk__ip6_send(t->e, t->now, US_GL, OFF_GL, 58, hdr, 8, NULL, 0, NULL), 0);
    expect_ns(t, GW_LL, NULL, US_LL);
    expect_none(t);
    uint8_t f[200];
    inject(t, f, mk_na(f, US_MAC, GW_MAC, GW_LL, US_LL, GW_LL, 0x60, GW_MAC));
    struct o6 o;
    pop6(t, &o); /* the queued echo request, now to the gateway's MAC */
    ck_assert_mem_eq(o.dmac, GW_MAC, 6);
    ck_assert_mem_eq(o.dst, OFF_GL, 16);
    ck_assert_mem_eq(o.src, US_GL, 16);
    ck_assert_uint_eq(o.hlim, 64);
    ck_assert_uint_eq(o.m[0], 128);
    tn_free(t);
}
END_TEST

/* ---- Neighbour discovery ----------------------------------------------------------------- */

START_TEST(ns_answered)
{
    struct tn *t = tn_new();
    uint8_t f[200], g[16], gm[6];
    /* Multicast to our solicited-node group, for the link-local address. */
    learn_peer(t, PEER_LL, US_LL);
    ck_assert_uint_eq(ctr(t)->nd_ns_in, 1);
    ck_assert_uint_eq(ctr(t)->nd_na_out, 1);
    /* Unicast to us, for the global address, from a global source. */
    inject(t, f, mk_ns(f, US_MAC, PEER_MAC, PEER_GL, US_GL, US_GL, PEER_MAC, 255));
    expect_na(t, PEER_MAC, PEER_GL, US_GL, 0x60);
    /* The global address's solicited-node group. */
    sn_group(US_GL, g);
    group_mac(g, gm);
    inject(t, f, mk_ns(f, gm, PEER_MAC, PEER_GL, g, US_GL, PEER_MAC, 255));
    expect_na(t, PEER_MAC, PEER_GL, US_GL, 0x60);
    /* Someone else's address: counted, not answered. */
    inject(t, f, mk_ns(f, US_MAC, PEER_MAC, PEER_LL, US_LL, PEER_GL, PEER_MAC, 255));
    expect_none(t);
    ck_assert_uint_eq(ctr(t)->nd_ns_in, 4);
    ck_assert_uint_eq(ctr(t)->nd_na_out, 3);
    ck_assert_uint_eq(ctr(t)->nd_drop_bad, 0);
    tn_free(t);
}
END_TEST

START_TEST(ns_dad_answered_to_all_nodes)
{
    struct tn *t = tn_new();
    uint8_t f[200], g[16], gm[6];
    sn_group(US_LL, g);
    group_mac(g, gm);
    /* From ::, to the group, no link-layer option: the address is taken; all-nodes hears. */
    inject(t, f, mk_ns(f, gm, PEER_MAC, UNSPEC, g, US_LL, NULL, 255));
    expect_na(t, MAC_ALL_NODES, ALL_NODES, US_LL, 0x20);
    /* From :: with a link-layer option, or to a unicast address: invalid (7.1.1). */
    inject(t, f, mk_ns(f, gm, PEER_MAC, UNSPEC, g, US_LL, PEER_MAC, 255));
    inject(t, f, mk_ns(f, US_MAC, PEER_MAC, UNSPEC, US_LL, US_LL, NULL, 255));
    expect_none(t);
    ck_assert_uint_eq(ctr(t)->nd_drop_bad, 2);
    tn_free(t);
}
END_TEST

START_TEST(nd_validation)
{
    struct tn *t = tn_new();
    uint8_t f[200], g[16], gm[6];
    sn_group(US_LL, g);
    group_mac(g, gm);
    /* Hop limit below 255: could come from off-link. */
    inject(t, f, mk_ns(f, gm, PEER_MAC, PEER_LL, g, US_LL, PEER_MAC, 254));
    ck_assert_uint_eq(ctr(t)->nd_drop_bad, 1);
    /* A multicast target. */
    inject(t, f, mk_ns(f, gm, PEER_MAC, PEER_LL, g, ALL_NODES, PEER_MAC, 255));
    ck_assert_uint_eq(ctr(t)->nd_drop_bad, 2);
    /* An option of length 0. */
    size_t n = mk_ns(f, gm, PEER_MAC, PEER_LL, g, US_LL, PEER_MAC, 255);
    f[54 + 25] = 0;
    icmp6_fix(f + 54, 32, PEER_LL, g);
    inject(t, f, n);
    ck_assert_uint_eq(ctr(t)->nd_drop_bad, 3);
    /* Code not 0. */
    n = mk_ns(f, gm, PEER_MAC, PEER_LL, g, US_LL, PEER_MAC, 255);
    f[54 + 1] = 1;
    icmp6_fix(f + 54, 32, PEER_LL, g);
    inject(t, f, n);
    ck_assert_uint_eq(ctr(t)->nd_drop_bad, 4);
    /* Too short (16 bytes). */
    uint8_t m[16] = {135};
    icmp6_fix(m, 16, PEER_LL, g);
    inject(t, f, mk6(f, gm, PEER_MAC, PEER_LL, g, 58, 255, m, 16));
    ck_assert_uint_eq(ctr(t)->nd_drop_bad, 5);
    /* A wrong checksum is an ICMPv6 drop before ND sees it. */
    n = mk_ns(f, gm, PEER_MAC, PEER_LL, g, US_LL, PEER_MAC, 255);
    f[54 + 2] ^= 1;
    inject(t, f, n);
    ck_assert_uint_eq(ctr(t)->icmp6_drop, 1);
    /* A solicited advertisement to a group. */
    inject(t, f, mk_na(f, MAC_ALL_NODES, PEER_MAC, PEER_LL, ALL_NODES, PEER_LL, 0x60, PEER_MAC));
    ck_assert_uint_eq(ctr(t)->nd_drop_bad, 6);
    expect_none(t);
    ck_assert_uint_eq(ctr(t)->nd_ns_in, 0);
    tn_free(t);
}
END_TEST

START_TEST(echo_replies)
{
    struct tn *t = tn_new();
    uint8_t f[1600];
    learn_peer(t, PEER_LL, US_LL);
    inject(t, f, mk_echo(f, US_MAC, PEER_LL, US_LL, 1, 56));
    expect_echo_reply(t, PEER_MAC, US_LL, PEER_LL, 1, 56);
    /* To the global address: answered from it. Odd length, and empty. */
    learn_peer(t, PEER_GL, US_GL);
    inject(t, f, mk_echo(f, US_MAC, PEER_GL, US_GL, 2, 1001));
    expect_echo_reply(t, PEER_MAC, US_GL, PEER_GL, 2, 1001);
    inject(t, f, mk_echo(f, US_MAC, PEER_GL, US_GL, 3, 0));
    expect_echo_reply(t, PEER_MAC, US_GL, PEER_GL, 3, 0);
    /* To all-nodes (as Linux, answered), from our link-local address. */
    inject(t, f, mk_echo(f, MAC_ALL_NODES, PEER_LL, ALL_NODES, 4, 8));
    expect_echo_reply(t, PEER_MAC, US_LL, PEER_LL, 4, 8);
    /* Padding after the packet is ignored. */
    size_t n = mk_echo(f, US_MAC, PEER_LL, US_LL, 5, 0);
    memset(f + n, 0xee, 20);
    inject(t, f, n + 20);
    expect_echo_reply(t, PEER_MAC, US_LL, PEER_LL, 5, 0);
    ck_assert_uint_eq(ctr(t)->icmp6_echo_replies, 5);
    /* From the unspecified address, or a bad checksum: no answer. */
    inject(t, f, mk_echo(f, US_MAC, UNSPEC, US_LL, 6, 8));
    n = mk_echo(f, US_MAC, PEER_LL, US_LL, 7, 8);
    f[60] ^= 0x10;
    inject(t, f, n);
    expect_none(t);
    ck_assert_uint_eq(ctr(t)->icmp6_drop, 2);
    /* Echo replies, router advertisements and unknown informational types are ignored;
     * errors are counted. */
    uint8_t m[64];
    inject(t, f,
           mk6(f, US_MAC, PEER_MAC, PEER_LL, US_LL, 58, 255, m,
               mk_icmp6(m, 134, 0, 0x40000000, "\0\0\0\0\0\0\0\0", 8, PEER_LL, US_LL)));
    inject(t, f,
           mk6(f, US_MAC, PEER_MAC, PEER_LL, US_LL, 58, 64, m,
               mk_icmp6(m, 129, 0, 1, NULL, 0, PEER_LL, US_LL)));
    inject(t, f,
           mk6(f, US_MAC, PEER_MAC, PEER_LL, US_LL, 58, 64, m,
               mk_icmp6(m, 200, 0, 1, NULL, 0, PEER_LL, US_LL)));
    inject(t, f,
           mk6(f, US_MAC, PEER_MAC, PEER_LL, US_LL, 58, 64, m,
               mk_icmp6(m, 1, 4, 0, "\x60\0\0\0\0\0\x06\x40", 8, PEER_LL, US_LL)));
    expect_none(t);
    ck_assert_uint_eq(ctr(t)->icmp6_ignored, 3);
    ck_assert_uint_eq(ctr(t)->icmp6_errors_in, 1);
    tn_free(t);
}
END_TEST

START_TEST(resolution_and_states)
{
    struct tn *t = tn_new();
    uint8_t f[200];
    /* An echo from a peer we do not know: the reply waits for resolution. */
    inject(t, f, mk_echo(f, US_MAC, PEER_LL, US_LL, 1, 16));
    expect_ns(t, PEER_LL, NULL, US_LL);
    expect_none(t);
    inject(t, f, mk_echo(f, US_MAC, PEER_LL, US_LL, 2, 16));
    expect_none(t); /* still waiting; no second solicitation before RetransTimer */
    /* A solicited advertisement releases both replies, in order (REACHABLE). */
    inject(t, f, mk_na(f, US_MAC, PEER_MAC, PEER_LL, US_LL, PEER_LL, 0x60, PEER_MAC));
    ck_assert_uint_eq(ctr(t)->nd_na_in, 1);
    expect_echo_reply(t, PEER_MAC, US_LL, PEER_LL, 1, 16);
    expect_echo_reply(t, PEER_MAC, US_LL, PEER_LL, 2, 16);
    uint8_t mac[6];
    ck_assert_int_eq(stk__nd_resolve(t->e, t->now, PEER_LL, mac), 0);
    ck_assert_mem_eq(mac, PEER_MAC, 6);

    /* A non-override advertisement with another address does not change a REACHABLE
     * entry (it becomes STALE); an override one does. */
    inject(t, f, mk_na(f, US_MAC, PEER_MAC2, PEER_LL, US_LL, PEER_LL, 0x40, PEER_MAC2));
    ck_assert_int_eq(stk__nd_resolve(t->e, t->now, PEER_LL, mac), 0);
    ck_assert_mem_eq(mac, PEER_MAC, 6);
    inject(t, f, mk_na(f, US_MAC, PEER_MAC2, PEER_LL, US_LL, PEER_LL, 0x60, PEER_MAC2));
    ck_assert_int_eq(stk__nd_resolve(t->e, t->now, PEER_LL, mac), 0);
    ck_assert_mem_eq(mac, PEER_MAC2, 6);
    inject(t, f, mk_na(f, US_MAC, PEER_MAC, PEER_LL, US_LL, PEER_LL, 0x60, PEER_MAC));
    expect_none(t);

    /* REACHABLE for 30 s, then STALE: no traffic. */
    poll_at(t, t->now + 31 * STK_US_PER_S);
    expect_none(t);
    /* Used while STALE: DELAY, then after 5 s a unicast probe to the cached MAC. */
    ck_assert_int_eq(stk__nd_resolve(t->e, t->now, PEER_LL, mac), 0);
    ck_assert_mem_eq(mac, PEER_MAC, 6);
    poll_at(t, t->now + 4 * STK_US_PER_S);
    expect_none(t);
    poll_at(t, t->now + STK_US_PER_S + 1);
    expect_ns(t, PEER_LL, PEER_MAC, US_LL);
    /* Still usable while probing; an answer makes it REACHABLE. */
    ck_assert_int_eq(stk__nd_resolve(t->e, t->now, PEER_LL, mac), 0);
    inject(t, f, mk_na(f, US_MAC, PEER_MAC, PEER_LL, US_LL, PEER_LL, 0x60, PEER_MAC));
    poll_at(t, t->now + 20 * STK_US_PER_S);
    expect_none(t);

    /* Stale again, used, probed three times without an answer: forgotten. */
    poll_at(t, t->now + 11 * STK_US_PER_S);
    ck_assert_int_eq(stk__nd_resolve(t->e, t->now, PEER_LL, mac), 0);
    poll_at(t, t->now + ND_DELAY_TEST_US);
    for (int i = 0; i < 3; i++) {
        expect_ns(t, PEER_LL, PEER_MAC, US_LL);
        poll_at(t, t->now + STK_US_PER_S);
    }
    expect_none(t);
    ck_assert_uint_eq(ctr(t)->nd_resolve_fail, 1);
    /* Gone: the next use starts over with a multicast solicitation. */
    ck_assert_int_eq(stk__nd_resolve(t->e, t->now, PEER_LL, mac), -EAGAIN);
    expect_ns(t, PEER_LL, NULL, US_LL);
    tn_free(t);
}
END_TEST

START_TEST(resolution_gives_up)
{
    struct tn *t = tn_new();
    uint8_t f[200];
    inject(t, f, mk_echo(f, US_MAC, PEER_GL, US_GL, 1, 16));
    inject(t, f, mk_echo(f, US_MAC, PEER_GL, US_GL, 2, 16));
    expect_ns(t, PEER_GL, NULL, US_GL);
    poll_at(t, t->now + STK_US_PER_S);
    expect_ns(t, PEER_GL, NULL, US_GL);
    poll_at(t, t->now + STK_US_PER_S);
    expect_ns(t, PEER_GL, NULL, US_GL);
    poll_at(t, t->now + STK_US_PER_S);
    expect_none(t);
    ck_assert_uint_eq(ctr(t)->nd_ns_out, 3);
    ck_assert_uint_eq(ctr(t)->nd_resolve_fail, 1);
    ck_assert_uint_eq(ctr(t)->nd_queue_drop, 2);
    ck_assert_uint_eq(stk_next_timer(t->e) == UINT64_MAX || stk_next_timer(t->e) > t->now, 1);
    /* An unsolicited advertisement creates nothing (7.2.5). */
    inject(t, f, mk_na(f, MAC_ALL_NODES, PEER_MAC, PEER_GL, ALL_NODES, PEER_GL, 0x20, PEER_MAC));
    uint8_t mac[6];
    ck_assert_int_eq(stk__nd_resolve(t->e, t->now, PEER_GL, mac), -EAGAIN);
    expect_ns(t, PEER_GL, NULL, US_GL);
    /* A solicitation from the peer carrying its address resolves the entry (STALE) and
     * releases what waits. */
    uint8_t hdr[STK_L2L3_HLEN6 + 8];
    uint8_t m[8] = {128, 0, 0, 0, 0, 9, 0, 9};
    icmp6_fix(m, 8, US_GL, PEER_GL);
    memcpy(hdr + STK_L2L3_HLEN6, m, 8);
    ck_assert_int_eq(stk__ip6_send(t->e, t->now, US_GL, PEER_GL, 58, hdr, 8, NULL, 0, NULL), 0);
    expect_none(t);
    inject(t, f, mk_ns(f, US_MAC, PEER_MAC, PEER_GL, US_GL, US_GL, PEER_MAC, 255));
    struct o6 o;
    pop6(t, &o);
    ck_assert_uint_eq(o.m[0], 128);
    ck_assert_mem_eq(o.dmac, PEER_MAC, 6);
    expect_na(t, PEER_MAC, PEER_GL, US_GL, 0x60);
    tn_free(t);
}
END_TEST

START_TEST(queue_bounds)
{
    struct tn *t = tn_new();
    uint8_t hdr[STK_L2L3_HLEN6 + 8] = {0};
    int ok = 0, full = 0;
    for (int i = 0; i < 100; i++) {
        int rc = stk__ip6_send(t->e, t->now, US_LL, PEER_LL, 58, hdr, 8, NULL, 0, NULL);
        ok += rc == 0;
        full += rc == -ENOBUFS;
    }
    ck_assert_int_eq(ok, 64);
    ck_assert_int_eq(full, 36);
    ck_assert_uint_eq(ctr(t)->nd_queue_drop, 36);
    /* Many neighbours: the table evicts, the engine neither grows nor leaks (ASan). */
    for (int i = 0; i < 400; i++) {
        uint8_t a[16];
        memcpy(a, PEER_GL, 16);
        a[14] = (uint8_t)(i >> 8);
        a[15] = (uint8_t)(i + 3);
        (void)stk__ip6_send(t->e, t->now, US_GL, a, 58, hdr, 8, NULL, 0, NULL);
    }
    pkt_capture_clear(&t->cap);
    poll_at(t, t->now + 10 * STK_US_PER_S);
    tn_free(t);
}
END_TEST

/* ---- IPv6 input -------------------------------------------------------------------------- */

START_TEST(ip6_input_drops)
{
    struct tn *t = tn_new();
    uint8_t f[200];
    size_t n = mk_echo(f, US_MAC, PEER_LL, US_LL, 1, 8);
    inject(t, f, 14 + 39);
    ck_assert_uint_eq(ctr(t)->ip6_drop_len, 1);
    f[14] = 0x40;
    inject(t, f, n);
    ck_assert_uint_eq(ctr(t)->ip6_drop_hdr, 1);
    /* Payload length beyond the frame. */
    n = mk_echo(f, US_MAC, PEER_LL, US_LL, 1, 8);
    inject(t, f, n - 1);
    ck_assert_uint_eq(ctr(t)->ip6_drop_len, 2);
    /* Sources: multicast, loopback, ours. */
    const uint8_t lo[16] = {[15] = 1};
    inject(t, f, mk_echo(f, US_MAC, ALL_NODES, US_LL, 1, 8));
    inject(t, f, mk_echo(f, US_MAC, lo, US_LL, 1, 8));
    inject(t, f, mk_echo(f, US_MAC, US_GL, US_LL, 1, 8));
    ck_assert_uint_eq(ctr(t)->ip6_drop_src, 3);
    /* Destinations: another host, a group we did not join (all-routers). */
    const uint8_t all_routers[16] = {0xff, 0x02, [15] = 2};
    inject(t, f, mk_echo(f, US_MAC, PEER_LL, PEER_GL, 1, 8));
    inject(t, f, mk_echo(f, MAC_ALL_NODES, PEER_LL, all_routers, 1, 8));
    ck_assert_uint_eq(ctr(t)->ip6_drop_dst, 2);
    /* A group MAC we did not join never reaches IPv6. */
    const uint8_t mac_routers[6] = {0x33, 0x33, 0, 0, 0, 2};
    inject(t, f, mk_echo(f, mac_routers, PEER_LL, all_routers, 1, 8));
    ck_assert_uint_eq(ctr(t)->eth_drop_dst, 1);
    /* TCP and UDP go to their layers (these headers are invalid: dropped there;
     * test_tcp6.c has the rest). */
    uint8_t tcp[20] = {0};
    inject(t, f, mk6(f, US_MAC, PEER_MAC, PEER_LL, US_LL, 6, 64, tcp, 20));
    ck_assert_uint_eq(ctr(t)->tcp_in, 1);
    ck_assert_uint_eq(ctr(t)->tcp_drop_hdr, 1);
    inject(t, f, mk6(f, US_MAC, PEER_MAC, PEER_LL, US_LL, 17, 64, tcp, 8));
    ck_assert_uint_eq(ctr(t)->udp_in, 1);
    ck_assert_uint_eq(ctr(t)->udp_drop_len, 1);
    ck_assert_uint_eq(ctr(t)->ip6_drop_proto, 0);
    /* No next header: nothing to do. */
    inject(t, f, mk6(f, US_MAC, PEER_MAC, PEER_LL, US_LL, 59, 64, tcp, 0));
    expect_none(t);
    ck_assert_uint_eq(ctr(t)->ip6_in, 11);
    tn_free(t);
}
END_TEST

/* An echo request behind extension headers ext[0..elen), the first of type nh0. */
static size_t mk_ext_echo(uint8_t *f, const uint8_t dmac[6], const uint8_t dst[16], uint8_t nh0,
                          const uint8_t *ext, size_t elen, uint16_t seq)
{
    uint8_t pay[600], m[64];
    size_t n = mk_icmp6(m, 128, 0, 0x4242u << 16 | seq, NULL, 0, PEER_LL, dst);
    memcpy(pay, ext, elen);
    memcpy(pay + elen, m, n);
    return mk6(f, dmac, PEER_MAC, PEER_LL, dst, nh0, 64, pay, elen + n);
}

START_TEST(extension_headers)
{
    struct tn *t = tn_new();
    uint8_t f[800];
    size_t n;
    learn_peer(t, PEER_LL, US_LL);

    /* Hop-by-hop with PadN and an unknown skippable option, then destination options: the
     * echo is answered. */
    const uint8_t hbh[16] = {60, 1, 1, 2, 0, 0, 0x3e, 2, 0, 0, 0, 1, 0, 1, 1, 0};
    const uint8_t dopt[8] = {58, 0, 1, 4, 0, 0, 0, 0};
    uint8_t ext[64];
    memcpy(ext, hbh, 16);
    memcpy(ext + 16, dopt, 8);
    inject(t, f, mk_ext_echo(f, US_MAC, US_LL, 0, ext, 24, 1));
    expect_echo_reply(t, PEER_MAC, US_LL, PEER_LL, 1, 0);

    /* Option actions (RFC 8200 4.2), in a destination options header. */
    uint8_t d2[8] = {58, 0, 0x7e, 4, 0, 0, 0, 0};
    inject(t, f, mk_ext_echo(f, US_MAC, US_LL, 60, d2, 8, 2)); /* 01: silently */
    expect_none(t);
    ck_assert_uint_eq(ctr(t)->ip6_drop_opt, 1);
    d2[2] = 0xbe; /* 10: Parameter Problem code 2 at the option, even to a group */
    n = mk_ext_echo(f, US_MAC, US_LL, 60, d2, 8, 3);
    inject(t, f, n);
    expect_param_prob(t, PEER_LL, 2, 42, f + 14, n - 14);
    n = mk_ext_echo(f, MAC_ALL_NODES, ALL_NODES, 60, d2, 8, 4);
    inject(t, f, n);
    {
        struct o6 o;
        pop6(t, &o);
        ck_assert_uint_eq(o.m[0], 4);
        ck_assert_uint_eq(o.m[1], 2);
        ck_assert_mem_eq(o.src, US_LL, 16); /* not the group */
    }
    d2[2] = 0xfe; /* 11: the same, but not to a group */
    n = mk_ext_echo(f, US_MAC, US_LL, 60, d2, 8, 5);
    inject(t, f, n);
    expect_param_prob(t, PEER_LL, 2, 42, f + 14, n - 14);
    inject(t, f, mk_ext_echo(f, MAC_ALL_NODES, ALL_NODES, 60, d2, 8, 6));
    expect_none(t);
    ck_assert_uint_eq(ctr(t)->ip6_drop_opt, 5);
    /* An option overrunning its header. */
    d2[2] = 0x1e;
    d2[3] = 5;
    inject(t, f, mk_ext_echo(f, US_MAC, US_LL, 60, d2, 8, 7));
    ck_assert_uint_eq(ctr(t)->ip6_drop_exthdr, 1);

    /* Hop-by-hop after another header: Parameter Problem code 1 at the Next Header field
     * that named it (the destination options header's first byte, offset 40). */
    uint8_t d3[16] = {0, 0, 1, 4, 0, 0, 0, 0, 58, 0, 1, 4, 0, 0, 0, 0};
    n = mk_ext_echo(f, US_MAC, US_LL, 60, d3, 16, 8);
    inject(t, f, n);
    expect_param_prob(t, PEER_LL, 1, 40, f + 14, n - 14);
    ck_assert_uint_eq(ctr(t)->ip6_drop_exthdr, 2);

    /* Routing header type 0 (RFC 5095): dropped; with segments left, Parameter Problem
     * code 0 at the type field. */
    uint8_t rh[24] = {58, 2, 0, 1, 0, 0, 0, 0};
    memcpy(rh + 8, PEER_GL, 16);
    n = mk_ext_echo(f, US_MAC, US_LL, 43, rh, 24, 9);
    inject(t, f, n);
    expect_param_prob(t, PEER_LL, 0, 42, f + 14, n - 14);
    rh[3] = 0;
    inject(t, f, mk_ext_echo(f, US_MAC, US_LL, 43, rh, 24, 10));
    expect_none(t);
    ck_assert_uint_eq(ctr(t)->ip6_drop_rh, 2);
    /* Another type with no segments left is ignored; with segments left it is refused. */
    rh[2] = 4;
    inject(t, f, mk_ext_echo(f, US_MAC, US_LL, 43, rh, 24, 11));
    expect_echo_reply(t, PEER_MAC, US_LL, PEER_LL, 11, 0);
    rh[3] = 1;
    n = mk_ext_echo(f, US_MAC, US_LL, 43, rh, 24, 12);
    inject(t, f, n);
    expect_param_prob(t, PEER_LL, 0, 42, f + 14, n - 14);
    ck_assert_uint_eq(ctr(t)->ip6_drop_rh, 3);

    /* Fragments are held for reassembly (fragments_reassembled); an atomic fragment is a
     * whole packet. */
    uint8_t fh[8] = {58, 0, 0, 1, 0, 0, 0, 7}; /* offset 0, M set */
    inject(t, f, mk_ext_echo(f, US_MAC, US_LL, 44, fh, 8, 13));
    fh[3] = 0x08; /* offset 1, M clear */
    fh[7] = 8;
    inject(t, f, mk_ext_echo(f, US_MAC, US_LL, 44, fh, 8, 14));
    expect_none(t);
    ck_assert_uint_eq(ctr(t)->ip6_frag_in, 2);
    ck_assert_uint_eq(ctr(t)->ip6_drop_frag, 0);
    fh[3] = 0;
    inject(t, f, mk_ext_echo(f, US_MAC, US_LL, 44, fh, 8, 15));
    expect_echo_reply(t, PEER_MAC, US_LL, PEER_LL, 15, 0);

    /* An unknown next header: Parameter Problem code 1 at offset 6 (the IPv6 header's). */
    uint8_t junk[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    n = mk6(f, US_MAC, PEER_MAC, PEER_LL, US_LL, 253, 64, junk, 8);
    inject(t, f, n);
    expect_param_prob(t, PEER_LL, 1, 6, f + 14, n - 14);
    /* ... but not about a packet sent to a group. */
    inject(t, f, mk6(f, MAC_ALL_NODES, PEER_MAC, PEER_LL, ALL_NODES, 253, 64, junk, 8));
    expect_none(t);
    ck_assert_uint_eq(ctr(t)->ip6_drop_proto, 2);

    /* Nine destination options headers: beyond the walk's bound. A truncated header. */
    uint8_t many[80];
    for (int i = 0; i < 9; i++) {
        memcpy(many + 8 * i, dopt, 8);
        many[8 * i] = i < 8 ? 60 : 58;
    }
    inject(t, f, mk_ext_echo(f, US_MAC, US_LL, 60, many, 72, 16));
    inject(t, f, mk6(f, US_MAC, PEER_MAC, PEER_LL, US_LL, 60, 64, dopt, 4));
    uint8_t longh[8] = {58, 3, 1, 4, 0, 0, 0, 0}; /* claims 32 bytes, has 8 + icmp 8 */
    inject(t, f, mk_ext_echo(f, US_MAC, US_LL, 60, longh, 8, 17));
    expect_none(t);
    ck_assert_uint_eq(ctr(t)->ip6_drop_exthdr, 5);
    ck_assert_uint_eq(ctr(t)->icmp6_errors_out, 7);
    tn_free(t);
}
END_TEST

START_TEST(error_rate_limit)
{
    struct tn *t = tn_new();
    uint8_t f[200], junk[8] = {0};
    learn_peer(t, PEER_LL, US_LL);
    for (int i = 0; i < 50; i++)
        inject(t, f, mk6(f, US_MAC, PEER_MAC, PEER_LL, US_LL, 253, 64, junk, 8));
    ck_assert_uint_eq(ctr(t)->icmp6_errors_out, 10);
    ck_assert_uint_eq(ctr(t)->icmp6_errors_limited, 40);
    pkt_capture_clear(&t->cap);
    /* 100 per second refill: 50 ms later, 5 more. */
    t->now += 50 * STK_US_PER_MS;
    for (int i = 0; i < 20; i++)
        inject(t, f, mk6(f, US_MAC, PEER_MAC, PEER_LL, US_LL, 253, 64, junk, 8));
    ck_assert_uint_eq(ctr(t)->icmp6_errors_out, 15);
    /* Never an error about an error. */
    uint8_t m[64];
    pkt_capture_clear(&t->cap);
    t->now += STK_US_PER_S;
    size_t n = mk_icmp6(m, 1, 0, 0, "\x60\0\0\0\0\0\x06\x40", 8, PEER_LL, US_LL);
    m[n] = 0; /* an error with a bad option header in front: still not answered */
    uint8_t pay[80] = {58, 0, 0xbe, 4, 0, 0, 0, 0};
    memcpy(pay + 8, m, n);
    inject(t, f, mk6(f, US_MAC, PEER_MAC, PEER_LL, US_LL, 60, 64, pay, 8 + n));
    ck_assert_uint_eq(ctr(t)->ip6_drop_opt, 1);
    ck_assert_uint_eq(ctr(t)->icmp6_errors_out, 15);
    expect_none(t);
    /* The same option in front of an echo request is answered with an error. */
    n = mk_icmp6(m, 128, 0, 1, NULL, 0, PEER_LL, US_LL);
    memcpy(pay + 8, m, n);
    inject(t, f, mk6(f, US_MAC, PEER_MAC, PEER_LL, US_LL, 60, 64, pay, 8 + n));
    ck_assert_uint_eq(ctr(t)->icmp6_errors_out, 16);
    tn_free(t);
}
END_TEST

/* Random mutations of valid IPv6 frames: no crash (ASan/UBSan build), every frame sent is
 * well formed, nothing leaks. */
START_TEST(fuzz_frames)
{
    struct tn *t = tn_new();
    struct wire_rng r;
    wire_rng_seed(&r, 0x1d6);
    uint8_t seeds[6][200], g[16], gm[6];
    size_t seedlen[6];
    sn_group(US_LL, g);
    group_mac(g, gm);
    seedlen[0] = mk_ns(seeds[0], gm, PEER_MAC, PEER_LL, g, US_LL, PEER_MAC, 255);
    seedlen[1] = mk_na(seeds[1], US_MAC, PEER_MAC, PEER_LL, US_LL, PEER_LL, 0x60, PEER_MAC);
    seedlen[2] = mk_echo(seeds[2], US_MAC, PEER_LL, US_LL, 1, 40);
    const uint8_t dopt[8] = {58, 0, 0xbe, 4, 0, 0, 0, 0};
    seedlen[3] = mk_ext_echo(seeds[3], US_MAC, US_LL, 60, dopt, 8, 1);
    seedlen[4] = mk_ns(seeds[4], gm, PEER_MAC, UNSPEC, g, US_LL, NULL, 255);
    seedlen[5] = mk_echo(seeds[5], MAC_ALL_NODES, PEER_GL, ALL_NODES, 1, 20);
    uint8_t f[256];
    for (int i = 0; i < 100000; i++) {
        int k = (int)wire_rng_below(&r, 6);
        size_t n = seedlen[k];
        memcpy(f, seeds[k], n);
        switch (wire_rng_below(&r, 3)) {
        case 0:
            for (int j = (int)wire_rng_below(&r, 4); j >= 0; j--)
                f[wire_rng_below(&r, n)] ^= (uint8_t)(1u << wire_rng_below(&r, 8));
            break;
        case 1:
            for (int j = (int)wire_rng_below(&r, 8); j >= 0; j--)
                f[14 + wire_rng_below(&r, n - 14)] = (uint8_t)wire_rng_next(&r);
            break;
        default:
            if (wire_rng_below(&r, 2)) {
                n = (size_t)wire_rng_below(&r, n + 1);
            } else {
                size_t add = (size_t)wire_rng_below(&r, sizeof(f) - n);
                for (size_t j = 0; j < add; j++)
                    f[n + j] = (uint8_t)wire_rng_next(&r);
                n += add;
            }
            break;
        }
        /* Keep checksums right half of the time so that deeper code runs. */
        if (n >= 62 && wire_rng_below(&r, 2) && f[20] == 58 &&
            (size_t)(f[18] << 8 | f[19]) <= n - 54)
            icmp6_fix(f + 54, (size_t)(f[18] << 8 | f[19]), f + 22, f + 38);
        stk_input(t->e, t->now, f, n, 0);
        if (wire_rng_below(&r, 32) == 0)
            poll_at(t, t->now + wire_rng_below(&r, 2 * STK_US_PER_S));
        while (pkt_capture_count(&t->cap) > 0) {
            struct o6 o;
            pop6(t, &o);
        }
    }
    ck_assert_uint_eq(t->cap.bad_frames, 0);
    tn_free(t);
}
END_TEST

/* ---- Fragments (stack/ipfrag.c, RFC 8200 section 4.5) ---------------------------------- */

/* A fragment from PEER_LL: bytes [off, off + len) of the fragmentable part msg. */
static size_t mk_frag(uint8_t *f, uint32_t id, const uint8_t *msg, uint32_t off, size_t len,
                      bool more)
{
    static uint8_t pay[70000];
    pay[0] = 58;
    pay[1] = 0;
    pay[2] = (uint8_t)(off >> 8);
    pay[3] = (uint8_t)((off & 0xf8) | (more ? 1 : 0));
    pay[4] = (uint8_t)(id >> 24);
    pay[5] = (uint8_t)(id >> 16);
    pay[6] = (uint8_t)(id >> 8);
    pay[7] = (uint8_t)id;
    memcpy(pay + 8, msg + off, len);
    return mk6(f, US_MAC, PEER_MAC, PEER_LL, US_LL, 44, 64, pay, 8 + len);
}

/* An echo request (id 0x4242, seq) with dlen bytes of data, checksummed: its length. */
static size_t mk_big_echo(uint8_t *m, uint16_t seq, size_t dlen)
{
    static uint8_t data[65536];
    for (size_t i = 0; i < dlen; i++)
        data[i] = (uint8_t)(i * 7 + seq);
    return mk_icmp6(m, 128, 0, 0x4242u << 16 | seq, data, dlen, PEER_LL, US_LL);
}

/* Pops the fragments of one datagram the engine sent to dst and checks each frame: at most
 * the MTU, nh 44, a Fragment header with one identification, offsets following each other
 * in multiples of 8, M on all but the last. Reassembles the fragmentable part into out;
 * returns its length and the upper-layer Next Header in *nh. */
static size_t pop_frags(struct tn *t, const uint8_t src[16], const uint8_t dst[16], uint8_t *out,
                        uint8_t *nh)
{
    uint32_t id = 0, next = 0;
    for (int i = 0;; i++) {
        const struct pkt_frame *fr = pkt_capture_pop(&t->cap);
        ck_assert_ptr_nonnull(fr);
        ck_assert_uint_le(fr->len, 1514);
        const uint8_t *ip = fr->data + 14;
        ck_assert_uint_eq(fr->data[12] << 8 | fr->data[13], 0x86dd);
        ck_assert_uint_eq(ip[0] >> 4, 6);
        ck_assert_uint_eq(ip[6], 44);
        ck_assert_mem_eq(ip + 8, src, 16);
        ck_assert_mem_eq(ip + 24, dst, 16);
        size_t plen = (size_t)(ip[4] << 8 | ip[5]);
        ck_assert_uint_eq(plen + 54, fr->len);
        const uint8_t *fh = ip + 40;
        uint32_t fid = (uint32_t)fh[4] << 24 | (uint32_t)fh[5] << 16 | fh[6] << 8 | fh[7];
        uint32_t off = (uint32_t)(fh[2] << 8 | fh[3]) & 0xfff8u;
        bool more = fh[3] & 1;
        if (i == 0) {
            id = fid;
            *nh = fh[0];
        }
        ck_assert_uint_eq(fid, id);
        ck_assert_uint_eq(fh[0], *nh);
        ck_assert_uint_eq(off, next);
        size_t len = plen - 8;
        if (more)
            ck_assert_uint_eq(len % 8, 0);
        memcpy(out + off, fh + 8, len);
        next = off + (uint32_t)len;
        if (!more)
            break;
    }
    return next;
}

/* The reassembled echo reply in m[0..n): type 129, seq, the request's data. */
static void check_big_reply(const uint8_t *m, size_t n, uint16_t seq, size_t dlen)
{
    ck_assert_uint_eq(n, 8 + dlen);
    ck_assert_uint_eq(pkt_csum_fold(pkt_csum_add(pseudo6(US_LL, PEER_LL, 58, (uint32_t)n), m, n)),
                      0);
    ck_assert_uint_eq(m[0], 129);
    ck_assert_uint_eq(m[6] << 8 | m[7], seq);
    for (size_t i = 0; i < dlen; i++)
        ck_assert_uint_eq(m[8 + i], (uint8_t)(i * 7 + seq));
}

START_TEST(fragments_reassembled)
{
    struct tn *t = tn_new();
    static uint8_t f[70000], m[70000], out[70000];
    uint8_t nh = 0;
    learn_peer(t, PEER_LL, US_LL);

    /* In order: 1232 + 776 bytes. The 2008-byte reply goes back as fragments. */
    size_t n = mk_big_echo(m, 1, 2000);
    inject(t, f, mk_frag(f, 100, m, 0, 1232, true));
    expect_none(t);
    inject(t, f, mk_frag(f, 100, m, 1232, n - 1232, false));
    size_t got = pop_frags(t, US_LL, PEER_LL, out, &nh);
    ck_assert_uint_eq(nh, 58);
    check_big_reply(out, got, 1, 2000);
    expect_none(t);
    ck_assert_uint_eq(ctr(t)->ip6_reasm_ok, 1);
    ck_assert_uint_eq(ctr(t)->ip6_frag_ok, 1);
    ck_assert_uint_eq(ctr(t)->ip6_frag_creates, 2);

    /* Out of order, last first, and a duplicate: 3 x 800 + 408. */
    n = mk_big_echo(m, 2, 2600);
    inject(t, f, mk_frag(f, 101, m, 2400, n - 2400, false));
    inject(t, f, mk_frag(f, 101, m, 800, 800, true));
    inject(t, f, mk_frag(f, 101, m, 1600, 800, true));
    inject(t, f, mk_frag(f, 101, m, 800, 800, true));
    expect_none(t);
    ck_assert_uint_eq(ctr(t)->ip6_reasm_dup, 1);
    inject(t, f, mk_frag(f, 101, m, 0, 800, true));
    got = pop_frags(t, US_LL, PEER_LL, out, &nh);
    check_big_reply(out, got, 2, 2600);
    ck_assert_uint_eq(ctr(t)->ip6_reasm_ok, 2);

    /* A 64000-byte echo: 52 fragments each way. */
    n = mk_big_echo(m, 3, 64000);
    for (uint32_t off = 0; off < n; off += 1232)
        inject(t, f, mk_frag(f, 102, m, off, stk__min64(1232, n - off), off + 1232 < n));
    got = pop_frags(t, US_LL, PEER_LL, out, &nh);
    check_big_reply(out, got, 3, 64000);
    expect_none(t);

    /* Overlap (RFC 5722): the whole datagram goes, and what follows starts a new one. */
    n = mk_big_echo(m, 4, 1592);
    inject(t, f, mk_frag(f, 103, m, 0, 800, true));
    inject(t, f, mk_frag(f, 103, m, 400, 800, true));
    ck_assert_uint_eq(ctr(t)->ip6_reasm_drop_overlap, 1);
    inject(t, f, mk_frag(f, 103, m, 800, 800, false));
    expect_none(t);
    uint32_t cnt = 0;
    stk__ipfrag_mem(t->e, &cnt);
    ck_assert_uint_eq(cnt, 1);
    ck_assert_uint_eq(ctr(t)->ip6_reasm_ok, 3);

    /* Not the last and not a multiple of 8: Parameter Problem code 0 at Payload Length. */
    n = mk_big_echo(m, 5, 1000);
    size_t fl = mk_frag(f, 104, m, 0, 803, true);
    inject(t, f, fl);
    expect_param_prob(t, PEER_LL, 0, 4, f + 14, fl - 14);
    /* Beyond 65535 bytes reassembled: Parameter Problem code 0 at the Fragment Offset. */
    static uint8_t far[65600];
    fl = mk_frag(f, 105, far, 65528, 16, false);
    inject(t, f, fl);
    expect_param_prob(t, PEER_LL, 0, 42, f + 14, fl - 14);
    ck_assert_uint_eq(ctr(t)->ip6_reasm_drop_bad, 2);
    stk__ipfrag_mem(t->e, &cnt);
    ck_assert_uint_eq(cnt, 1); /* neither was held */

    /* A reassembled packet carrying another non-atomic fragment is dropped, not
     * reassembled again. */
    uint8_t inner[16] = {58, 0, 0, 1, 0, 0, 0, 9}; /* offset 0, M set */
    uint64_t drops = ctr(t)->ip6_drop_frag;
    fl = mk_frag(f, 106, inner, 0, 8, true);
    f[54] = 44; /* fragment zero names a Fragment header next */
    inject(t, f, fl);
    inject(t, f, mk_frag(f, 106, inner, 8, 8, false));
    expect_none(t);
    ck_assert_uint_eq(ctr(t)->ip6_reasm_ok, 4);
    ck_assert_uint_eq(ctr(t)->ip6_drop_frag, drops + 1);
    stk__ipfrag_mem(t->e, &cnt);
    ck_assert_uint_eq(cnt, 1);
    tn_free(t);
}
END_TEST

/* Drops the neighbour solicitations the engine sent. */
static void drop_ns(struct tn *t)
{
    struct pkt_capture *keep = calloc(1, sizeof(*keep));
    ck_assert_ptr_nonnull(keep);
    pkt_capture_init(keep);
    const struct pkt_frame *fr;
    while ((fr = pkt_capture_pop(&t->cap)) != NULL)
        if (!(fr->len > 54 && fr->data[20] == 58 && fr->data[54] == 135))
            ck_assert_int_eq(pkt_capture_add(keep, fr->data, fr->len), 0);
    while ((fr = pkt_capture_pop(keep)) != NULL)
        ck_assert_int_eq(pkt_capture_add(&t->cap, fr->data, fr->len), 0);
    pkt_capture_fini(keep);
    free(keep);
}

START_TEST(fragments_time_out)
{
    struct tn *t = tn_new();
    static uint8_t f[4000], m[4000];
    learn_peer(t, PEER_LL, US_LL);
    size_t n = mk_big_echo(m, 7, 2000);
    /* Fragment zero of one datagram, only the second of another. */
    static uint8_t g[4000];
    size_t fl = mk_frag(g, 200, m, 0, 800, true);
    inject(t, g, fl);
    inject(t, f, mk_frag(f, 201, m, 800, n - 800, false));
    poll_at(t, TN_T0 + 30 * STK_US_PER_S - 1);
    /* (The neighbour entry learnt 30 s ago is probed meanwhile: skip solicitations.) */
    drop_ns(t);
    expect_none(t);
    poll_at(t, TN_T0 + 30 * STK_US_PER_S);
    drop_ns(t);
    /* One Time Exceeded code 1, quoting fragment zero as it arrived. */
    struct o6 o;
    pop6(t, &o);
    expect_none(t);
    ck_assert_mem_eq(o.dst, PEER_LL, 16);
    ck_assert_uint_eq(o.m[0], 3);
    ck_assert_uint_eq(o.m[1], 1);
    ck_assert_uint_eq(o.mlen, 8 + fl - 14);
    ck_assert_mem_eq(o.m + 8, g + 14, fl - 14);
    ck_assert_uint_eq(ctr(t)->ip6_reasm_timeout, 2);
    ck_assert_uint_eq(ctr(t)->ip6_reasm_timxceed, 1);
    uint32_t cnt = 1;
    ck_assert_uint_eq(stk__ipfrag_mem(t->e, &cnt), 0);
    ck_assert_uint_eq(cnt, 0);
    tn_free(t);
}
END_TEST

START_TEST(fragments_memory_bound)
{
    struct stk_config c = base_cfg();
    c.ipfrag_mem = 16384;
    struct tn *t = tn_new_cfg(&c);
    static uint8_t f[4000], m[4000];
    learn_peer(t, PEER_LL, US_LL);
    mk_big_echo(m, 8, 2000);
    /* Fragment zero of 100 datagrams: what is held stays within the bound. */
    for (uint32_t id = 0; id < 100; id++) {
        inject(t, f, mk_frag(f, 300 + id, m, 0, 1200, true));
        ck_assert_uint_le(stk__ipfrag_mem(t->e, NULL), 16384);
    }
    ck_assert_uint_gt(ctr(t)->ip6_reasm_drop_mem, 80);
    ck_assert_uint_ge(ctr(t)->ip6_drop_frag, ctr(t)->ip6_reasm_drop_mem);
    expect_none(t);
    tn_free(t);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("ip6");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, linklocal_from_mac);
    tcase_add_test(tc, routing_and_send_errors);
    tcase_add_test(tc, ns_answered);
    tcase_add_test(tc, ns_dad_answered_to_all_nodes);
    tcase_add_test(tc, nd_validation);
    tcase_add_test(tc, echo_replies);
    tcase_add_test(tc, resolution_and_states);
    tcase_add_test(tc, resolution_gives_up);
    tcase_add_test(tc, queue_bounds);
    tcase_add_test(tc, ip6_input_drops);
    tcase_add_test(tc, extension_headers);
    tcase_add_test(tc, fragments_reassembled);
    tcase_add_test(tc, fragments_time_out);
    tcase_add_test(tc, fragments_memory_bound);
    tcase_add_test(tc, error_rate_limit);
    tcase_add_test(tc, fuzz_frames);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

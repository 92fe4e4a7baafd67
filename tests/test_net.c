/*
 * test_net.c - Ethernet, ARP, IPv4 and ICMP (stack/net.c, stack/arp.c).
 *
 * Each test drives one engine directly: frames built with tests/lib/pkt.h go in through
 * stk_input(), and everything the engine transmits is kept by a pkt_capture and parsed
 * with the independent parser there. Time is a plain number the test advances.
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "pkt.h"
#include "stk_int.h"
#include "tn.h"
#include "wire.h"

#define US_IP    PKT_IP(198, 18, 0, 2)
#define PEER_IP  PKT_IP(198, 18, 0, 1)
#define OTHER_IP PKT_IP(198, 18, 0, 9)
#define GW_IP    PKT_IP(198, 18, 0, 254)
#define FAR_IP   PKT_IP(10, 1, 2, 3)

static const uint8_t US_MAC[6] = {0x02, 0, 0, 0, 0, 0x02};
static const uint8_t PEER_MAC[6] = {0x02, 0, 0, 0, 0, 0x01};
static const uint8_t OTHER_MAC[6] = {0x02, 0, 0, 0, 0, 0x09};
static const uint8_t GW_MAC[6] = {0x02, 0, 0, 0, 0, 0xfe};
static const uint8_t ZERO_MAC[6] = {0};
static const uint8_t BCAST_MAC[6] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};

static struct stk_config base_cfg(void)
{
    struct stk_config c;
    memset(&c, 0, sizeof(c));
    memcpy(c.mac, US_MAC, 6);
    c.ip = US_IP;
    c.prefix = 24;
    c.max_socks = 64;
    c.sndbuf = c.rcvbuf = 4096;
    return c;
}

/* An engine whose start-up announcement has been consumed. */
static struct tn *tn_new(void)
{
    struct stk_config c = base_cfg();
    struct tn *t = tn_create(&c);
    pkt_capture_clear(&t->cap);
    return t;
}

/* Pops the next frame, which must parse cleanly (so every checksum is right). */
static void pop_ok(struct tn *t, struct pkt_info *p)
{
    int rc = pkt_capture_pop_parse(&t->cap, p);
    ck_assert_msg(rc == PKT_OK, "parse: %s", pkt_strerror(rc));
}

static void expect_arp(const struct pkt_info *p, uint16_t op, const uint8_t eth_dst[6],
                       const uint8_t tha[6], uint32_t tpa)
{
    ck_assert_int_eq(p->kind, PKT_KIND_ARP);
    ck_assert_uint_eq(p->frame_len, PKT_ETH_HLEN + PKT_ARP_LEN);
    ck_assert_uint_eq(p->arp_op, op);
    ck_assert_mem_eq(p->dst_mac, eth_dst, 6);
    ck_assert_mem_eq(p->src_mac, US_MAC, 6);
    ck_assert_mem_eq(p->arp_sha, US_MAC, 6);
    ck_assert_uint_eq(p->arp_spa, US_IP);
    ck_assert_mem_eq(p->arp_tha, tha, 6);
    ck_assert_uint_eq(p->arp_tpa, tpa);
}

/* A broadcast "who-has ip" from us. */
static void pop_request(struct tn *t, uint32_t ip)
{
    struct pkt_info p;
    pop_ok(t, &p);
    expect_arp(&p, PKT_ARP_REQUEST, BCAST_MAC, ZERO_MAC, ip);
}

/* The peer asks for us, which also teaches the engine the peer's MAC. */
static void learn(struct tn *t, const uint8_t mac[6], uint32_t ip)
{
    uint8_t f[64];
    size_t n = pkt_build_arp_request(f, sizeof(f), mac, ip, US_IP);
    inject(t, f, n);
    struct pkt_info p;
    pop_ok(t, &p);
    expect_arp(&p, PKT_ARP_REPLY, mac, mac, ip);
}

static void arp_reply_from(struct tn *t, const uint8_t mac[6], uint32_t ip)
{
    uint8_t f[64];
    size_t n = pkt_build_arp_reply(f, sizeof(f), mac, ip, US_MAC, US_IP);
    inject(t, f, n);
}

/* Sends an ICMP echo request with sequence number seq through stk__ip_send. */
static int send_echo(struct tn *t, uint32_t dst, uint16_t seq, size_t paylen,
                     struct stk_txmeta *meta)
{
    static const uint8_t zeros[2000];
    uint8_t hdr[STK_L2L3_HLEN + 8];
    uint8_t *ic = hdr + STK_L2L3_HLEN;
    ck_assert_uint_le(paylen, sizeof(zeros));
    ic[0] = PKT_ICMP_ECHO;
    ic[1] = 0;
    stk__put16(ic + 2, 0);
    stk__put16(ic + 4, 0x4242);
    stk__put16(ic + 6, seq);
    stk__put16(ic + 2, pkt_csum_fold(pkt_csum_add(0, ic, 8)));
    struct stk_iov pay = {zeros, paylen};
    return stk__ip_send(t->e, t->now, dst, STK_IP_PROTO_ICMP, hdr, 8, &pay, 1, meta);
}

static void expect_echo_to(struct tn *t, const uint8_t mac[6], uint32_t ip, uint16_t seq)
{
    struct pkt_info p;
    pop_ok(t, &p);
    ck_assert_int_eq(p.kind, PKT_KIND_ICMP);
    ck_assert_mem_eq(p.dst_mac, mac, 6);
    ck_assert_mem_eq(p.src_mac, US_MAC, 6);
    ck_assert_uint_eq(p.dst_ip, ip);
    ck_assert_uint_eq(p.src_ip, US_IP);
    ck_assert_uint_eq(p.icmp_type, PKT_ICMP_ECHO);
    ck_assert_uint_eq(p.icmp_seq, seq);
}

/* ---- ARP ------------------------------------------------------------------------------ */

START_TEST(announce_at_start)
{
    struct stk_config c = base_cfg();
    struct tn *t = tn_create(&c);
    struct pkt_info p;
    pop_ok(t, &p);
    /* Gratuitous: sender and target are both our address, broadcast. */
    expect_arp(&p, PKT_ARP_REQUEST, BCAST_MAC, ZERO_MAC, US_IP);
    expect_none(t);
    ck_assert_uint_eq(ctr(t)->arp_out, 1);
    ck_assert_uint_eq(ctr(t)->eth_out, 1);
    stk_announce(t->e, t->now + 1);
    pop_ok(t, &p);
    expect_arp(&p, PKT_ARP_REQUEST, BCAST_MAC, ZERO_MAC, US_IP);
    ck_assert_uint_eq(ctr(t)->arp_out, 2);
    tn_free(t);

    /* Without an address there is nothing to announce. */
    c = base_cfg();
    c.ip = 0;
    t = tn_create(&c);
    expect_none(t);
    tn_free(t);
}
END_TEST

START_TEST(arp_request_answered_exactly)
{
    struct tn *t = tn_new();
    uint8_t f[64], want[64];
    size_t n = pkt_build_arp_request(f, sizeof(f), PEER_MAC, PEER_IP, US_IP);
    size_t wn = pkt_build_arp_reply(want, sizeof(want), US_MAC, US_IP, PEER_MAC, PEER_IP);
    inject(t, f, n);
    const struct pkt_frame *r = pkt_capture_pop(&t->cap);
    ck_assert_ptr_nonnull(r);
    ck_assert_uint_eq(r->len, wn);
    ck_assert_mem_eq(r->data, want, wn);
    expect_none(t);
    ck_assert_uint_eq(ctr(t)->arp_in, 1);
    ck_assert_uint_eq(ctr(t)->arp_replies, 1);
    ck_assert_uint_eq(ctr(t)->arp_out, 2); /* with the announcement */

    /* The requester was learned: resolving it needs no traffic. */
    uint8_t mac[6];
    ck_assert_int_eq(stk__arp_resolve(t->e, t->now, PEER_IP, mac), 0);
    ck_assert_mem_eq(mac, PEER_MAC, 6);
    expect_none(t);

    /* Padded to the Ethernet minimum, and sent unicast: still answered. */
    uint8_t pad[60] = {0};
    memcpy(pad, f, n);
    memcpy(pad, US_MAC, 6);
    inject(t, pad, sizeof(pad));
    r = pkt_capture_pop(&t->cap);
    ck_assert_ptr_nonnull(r);
    ck_assert_mem_eq(r->data, want, wn);

    /* An RFC 5227 probe (sender 0.0.0.0) for our address is answered to the prober. */
    n = pkt_build_arp_request(f, sizeof(f), OTHER_MAC, 0, US_IP);
    inject(t, f, n);
    struct pkt_info p;
    pop_ok(t, &p);
    expect_arp(&p, PKT_ARP_REPLY, OTHER_MAC, OTHER_MAC, 0);
    tn_free(t);
}
END_TEST

/* A passive engine (a second core sharing the address) learns from every ARP frame but
 * never answers or announces, so the peer sees one reply per request. */
START_TEST(arp_passive_learns_silently)
{
    struct stk_config c = base_cfg();
    c.arp_passive = 1;
    struct tn *t = tn_create(&c);
    expect_none(t);
    uint8_t f[64];
    size_t n = pkt_build_arp_request(f, sizeof(f), PEER_MAC, PEER_IP, US_IP);
    inject(t, f, n);
    expect_none(t);
    ck_assert_uint_eq(ctr(t)->arp_in, 1);
    ck_assert_uint_eq(ctr(t)->arp_replies, 0);
    uint8_t mac[6];
    ck_assert_int_eq(stk__arp_resolve(t->e, t->now, PEER_IP, mac), 0);
    ck_assert_mem_eq(mac, PEER_MAC, 6);
    stk_announce(t->e, t->now + 1);
    expect_none(t);
    /* It still asks for neighbours it needs, and learns from the replies. */
    ck_assert_int_eq(stk__arp_resolve(t->e, t->now, OTHER_IP, mac), -EAGAIN);
    pop_request(t, OTHER_IP);
    arp_reply_from(t, OTHER_MAC, OTHER_IP);
    ck_assert_int_eq(stk__arp_resolve(t->e, t->now, OTHER_IP, mac), 0);
    ck_assert_mem_eq(mac, OTHER_MAC, 6);
    tn_free(t);
}
END_TEST

START_TEST(arp_for_others_ignored)
{
    struct tn *t = tn_new();
    uint8_t f[64], mac[6];
    size_t n = pkt_build_arp_request(f, sizeof(f), OTHER_MAC, OTHER_IP, PKT_IP(198, 18, 0, 77));
    inject(t, f, n);
    expect_none(t);
    ck_assert_uint_eq(ctr(t)->arp_in, 1);
    ck_assert_uint_eq(ctr(t)->arp_replies, 0);
    ck_assert_uint_eq(ctr(t)->arp_drop_bad, 0);
    /* Not learned: resolving it has to ask. */
    ck_assert_int_eq(stk__arp_resolve(t->e, t->now, OTHER_IP, mac), -EAGAIN);
    pop_request(t, OTHER_IP);
    expect_none(t);
    arp_reply_from(t, OTHER_MAC, OTHER_IP);
    ck_assert_int_eq(stk__arp_resolve(t->e, t->now, OTHER_IP, mac), 0);
    ck_assert_mem_eq(mac, OTHER_MAC, 6);

    /* Once cached, the sender is updated by any ARP it sends (RFC 826 merge). */
    const uint8_t moved[6] = {0x02, 0, 0, 0, 0x77, 0x09};
    n = pkt_build_arp_request(f, sizeof(f), moved, OTHER_IP, PKT_IP(198, 18, 0, 77));
    inject(t, f, n);
    expect_none(t);
    ck_assert_int_eq(stk__arp_resolve(t->e, t->now, OTHER_IP, mac), 0);
    ck_assert_mem_eq(mac, moved, 6);

    /* A request for us from a host off our subnet is answered but not learned. */
    n = pkt_build_arp_request(f, sizeof(f), GW_MAC, FAR_IP, US_IP);
    inject(t, f, n);
    struct pkt_info p;
    pop_ok(t, &p);
    expect_arp(&p, PKT_ARP_REPLY, GW_MAC, GW_MAC, FAR_IP);
    ck_assert_int_eq(stk__arp_resolve(t->e, t->now, FAR_IP, mac), -EAGAIN);
    tn_free(t);
}
END_TEST

START_TEST(arp_malformed_dropped)
{
    struct tn *t = tn_new();
    uint8_t f[64], mac[6];
    const size_t a = PKT_ETH_HLEN; /* ARP body offset */
    for (int i = 0; i < 11; i++) {
        size_t n = pkt_build_arp_request(f, sizeof(f), PEER_MAC, PEER_IP, US_IP);
        switch (i) {
        case 0:
            n -= 1; /* truncated */
            break;
        case 1:
            f[a + 1] = 6; /* hardware type IEEE 802 */
            break;
        case 2:
            stk__put16(f + a + 2, 0x86dd);
            break;
        case 3:
            f[a + 4] = 8;
            break;
        case 4:
            f[a + 5] = 16;
            break;
        case 5:
            stk__put16(f + a + 6, 3); /* RARP request */
            break;
        case 6:
            f[a + 8] = 0x01; /* group MAC as sender */
            break;
        case 7:
            memset(f + a + 8, 0, 6);
            break;
        case 8:
            stk__put32(f + a + 14, US_IP); /* someone claims our address */
            break;
        case 9:
            stk__put32(f + a + 14, PKT_IP(127, 0, 0, 1));
            break;
        case 10:
            stk__put32(f + a + 14, PKT_IP(224, 0, 0, 1));
            break;
        }
        inject(t, f, n);
        expect_none(t);
        ck_assert_uint_eq(ctr(t)->arp_drop_bad, (uint64_t)i + 1);
    }
    ck_assert_uint_eq(ctr(t)->arp_replies, 0);
    ck_assert_int_eq(stk__arp_resolve(t->e, t->now, PEER_IP, mac), -EAGAIN);
    tn_free(t);
}
END_TEST

/* ---- ICMP ----------------------------------------------------------------------------- */

START_TEST(icmp_echo_reply)
{
    struct tn *t = tn_new();
    learn(t, PEER_MAC, PEER_IP);
    for (size_t len = 0; len <= 57; len += 19) {
        uint8_t data[64], f[200], want[200];
        for (size_t i = 0; i < len; i++)
            data[i] = (uint8_t)(i * 7 + 1);
        size_t n = pkt_build_icmp_echo(f, sizeof(f), PEER_MAC, US_MAC, PEER_IP, US_IP, 0x1234,
                                       (uint16_t)len, data, len);
        struct pkt_icmp_spec s = {.src_ip = US_IP,
                                  .dst_ip = PEER_IP,
                                  .type = PKT_ICMP_ECHOREPLY,
                                  .id = 0x1234,
                                  .seq = (uint16_t)len,
                                  .payload = data,
                                  .payload_len = len};
        size_t wn = pkt_build_icmp(&s, want, sizeof(want));
        inject(t, f, n);

        struct pkt_info p;
        pop_ok(t, &p);
        ck_assert_int_eq(p.kind, PKT_KIND_ICMP);
        ck_assert_mem_eq(p.dst_mac, PEER_MAC, 6);
        ck_assert_mem_eq(p.src_mac, US_MAC, 6);
        ck_assert_uint_eq(p.src_ip, US_IP);
        ck_assert_uint_eq(p.dst_ip, PEER_IP);
        ck_assert_uint_eq(p.ttl, 64);
        ck_assert(p.df);
        ck_assert_uint_eq(p.ip_hlen, 20);
        ck_assert_uint_eq(p.ip_len, 28 + len);
        ck_assert_uint_eq(p.icmp_type, PKT_ICMP_ECHOREPLY);
        ck_assert_uint_eq(p.icmp_code, 0);
        ck_assert_uint_eq(p.icmp_id, 0x1234);
        ck_assert_uint_eq(p.icmp_seq, len);
        ck_assert_uint_eq(p.payload_len, len);
        /* The whole ICMP message, checksum included, is what a reference builds. */
        ck_assert_uint_eq(p.frame_len, wn);
        ck_assert_mem_eq(p.payload - 8, want + 34, wn - 34);
        expect_none(t);
    }
    ck_assert_uint_eq(ctr(t)->icmp_in, 4);
    ck_assert_uint_eq(ctr(t)->icmp_echo_replies, 4);

    /* A device that checked the IP header checksum is believed. */
    uint8_t f[100];
    size_t n = pkt_build_icmp_echo(f, sizeof(f), PEER_MAC, US_MAC, PEER_IP, US_IP, 1, 2, NULL, 0);
    f[PKT_ETH_HLEN + 10] ^= 0x40;
    stk_input(t->e, t->now, f, n, STK_RX_IP_CSUM_OK);
    struct pkt_info p;
    pop_ok(t, &p);
    ck_assert_uint_eq(p.icmp_type, PKT_ICMP_ECHOREPLY);

    /* Sent to the broadcast MAC but our IP: answered. */
    n = pkt_build_icmp_echo(f, sizeof(f), PEER_MAC, BCAST_MAC, PEER_IP, US_IP, 1, 3, NULL, 0);
    inject(t, f, n);
    pop_ok(t, &p);
    ck_assert_uint_eq(p.icmp_seq, 3);
    tn_free(t);
}
END_TEST

START_TEST(icmp_echo_from_unknown_host)
{
    struct tn *t = tn_new();
    uint8_t f[100];
    size_t n = pkt_build_icmp_echo(f, sizeof(f), OTHER_MAC, US_MAC, OTHER_IP, US_IP, 9, 9, "hi", 2);
    inject(t, f, n);
    /* The reply waits for ARP. */
    pop_request(t, OTHER_IP);
    expect_none(t);
    arp_reply_from(t, OTHER_MAC, OTHER_IP);
    struct pkt_info p;
    pop_ok(t, &p);
    ck_assert_uint_eq(p.icmp_type, PKT_ICMP_ECHOREPLY);
    ck_assert_mem_eq(p.dst_mac, OTHER_MAC, 6);
    ck_assert_uint_eq(p.payload_len, 2);
    ck_assert_mem_eq(p.payload, "hi", 2);
    tn_free(t);
}
END_TEST

START_TEST(icmp_drops)
{
    struct tn *t = tn_new();
    learn(t, PEER_MAC, PEER_IP);
    static const uint8_t data[1600];
    uint8_t f[1700];

    struct pkt_icmp_spec s = {.src_ip = PEER_IP, .dst_ip = US_IP, .type = PKT_ICMP_ECHO};
    memcpy(s.src_mac, PEER_MAC, 6);
    memcpy(s.dst_mac, US_MAC, 6);
    s.bad_icmp_csum = true;
    inject(t, f, pkt_build_icmp(&s, f, sizeof(f)));
    expect_none(t);
    ck_assert_uint_eq(ctr(t)->icmp_drop, 1);

    /* Shorter than an ICMP header: IP total length 24. */
    s.bad_icmp_csum = false;
    size_t n = pkt_build_icmp(&s, f, sizeof(f));
    stk__put16(f + PKT_ETH_HLEN + 2, 24);
    stk__put16(f + PKT_ETH_HLEN + 10, 0);
    stk__put16(f + PKT_ETH_HLEN + 10, pkt_csum_fold(pkt_csum_add(0, f + PKT_ETH_HLEN, 20)));
    inject(t, f, n);
    expect_none(t);
    ck_assert_uint_eq(ctr(t)->icmp_drop, 2);

    /* A request whose reply would exceed our MTU (1500) is answered in two fragments
     * (test_ipfrag.c checks them); one of exactly the MTU in one packet. */
    s.payload = data;
    s.payload_len = 1500 - 28 + 1;
    inject(t, f, pkt_build_icmp(&s, f, sizeof(f)));
    ck_assert_uint_eq(pkt_capture_count(&t->cap), 2);
    ck_assert_uint_eq(ctr(t)->ip_frag_creates, 2);
    pkt_capture_clear(&t->cap);
    s.payload_len = 1500 - 28;
    inject(t, f, pkt_build_icmp(&s, f, sizeof(f)));
    struct pkt_info p;
    pop_ok(t, &p);
    ck_assert_uint_eq(p.ip_len, 1500);

    /* Other types are counted and ignored. */
    s.payload_len = 8;
    s.type = PKT_ICMP_UNREACH;
    s.code = 4;
    inject(t, f, pkt_build_icmp(&s, f, sizeof(f)));
    s.type = 13; /* timestamp request */
    s.code = 0;
    inject(t, f, pkt_build_icmp(&s, f, sizeof(f)));
    s.type = PKT_ICMP_ECHOREPLY;
    inject(t, f, pkt_build_icmp(&s, f, sizeof(f)));
    expect_none(t);
    ck_assert_uint_eq(ctr(t)->icmp_in, 7);
    ck_assert_uint_eq(ctr(t)->icmp_drop, 2);
    ck_assert_uint_eq(ctr(t)->icmp_echo_replies, 2);
    tn_free(t);
}
END_TEST

/* ---- IPv4 and Ethernet input ---------------------------------------------------------- */

static void fix_ip_csum(uint8_t *f)
{
    uint8_t *ip = f + PKT_ETH_HLEN;
    size_t hlen = (size_t)(ip[0] & 15) * 4;
    stk__put16(ip + 10, 0);
    stk__put16(ip + 10, pkt_csum_fold(pkt_csum_add(0, ip, hlen)));
}

enum ipcase {
    IPC_CSUM,
    IPC_SHORT,
    IPC_TRUNC,
    IPC_LEN_BELOW_HDR,
    IPC_IHL4,
    IPC_IHL_BEYOND,
    IPC_VERSION6,
    IPC_MF,
    IPC_OFFSET,
    IPC_OPTIONS,
    IPC_DST_OTHER,
    IPC_DST_BCAST,
    IPC_DST_SUBNET_BCAST,
    IPC_SRC_ZERO,
    IPC_SRC_LOOP,
    IPC_SRC_MCAST,
    IPC_SRC_BCAST,
    IPC_SRC_SUBNET_BCAST,
    IPC_SRC_SELF,
    IPC_PROTO_SCTP,
    IPC_N
};

START_TEST(ip_input_drops)
{
    struct tn *t = tn_new();
    learn(t, PEER_MAC, PEER_IP);
    uint8_t f[200];
    uint8_t *ip = f + PKT_ETH_HLEN;

    for (int c = 0; c < IPC_N; c++) {
        struct stk_counters before = *ctr(t);
        size_t n = pkt_build_icmp_echo(f, sizeof(f), PEER_MAC, US_MAC, PEER_IP, US_IP, 1,
                                       (uint16_t)c, "0123456789abcdef", 16);
        const uint64_t *which = NULL;
        const struct stk_counters *now = ctr(t);
        switch (c) {
        case IPC_CSUM:
            ip[10] ^= 1;
            which = &now->ip_drop_csum;
            break;
        case IPC_SHORT:
            n = PKT_ETH_HLEN + 19;
            which = &now->ip_drop_len;
            break;
        case IPC_TRUNC:
            n -= 1; /* total length claims one byte more than the frame has */
            which = &now->ip_drop_len;
            break;
        case IPC_LEN_BELOW_HDR:
            stk__put16(ip + 2, 19);
            fix_ip_csum(f);
            which = &now->ip_drop_len;
            break;
        case IPC_IHL4:
            ip[0] = 0x44;
            which = &now->ip_drop_hdr;
            break;
        case IPC_IHL_BEYOND:
            ip[0] = 0x4f; /* 60 bytes of header in a 44-byte datagram */
            which = &now->ip_drop_len;
            break;
        case IPC_VERSION6:
            ip[0] = 0x65;
            which = &now->ip_drop_hdr;
            break;
        case IPC_MF:
            /* Fragments are held for reassembly (test_ipfrag.c), not answered. */
            stk__put16(ip + 6, PKT_IP_MF);
            fix_ip_csum(f);
            which = &now->ip_frag_in;
            break;
        case IPC_OFFSET:
            stk__put16(ip + 6, 185);
            fix_ip_csum(f);
            which = &now->ip_frag_in;
            break;
        case IPC_OPTIONS: {
            /* Four bytes of NOPs inserted after the fixed header. */
            memmove(ip + 24, ip + 20, n - PKT_ETH_HLEN - 20);
            memset(ip + 20, 1, 4);
            ip[0] = 0x46;
            stk__put16(ip + 2, (uint16_t)(stk__get16(ip + 2) + 4));
            n += 4;
            fix_ip_csum(f);
            which = &now->ip_drop_opts;
            break;
        }
        case IPC_DST_OTHER:
            stk__put32(ip + 16, PKT_IP(198, 18, 0, 3));
            fix_ip_csum(f);
            which = &now->ip_drop_dst;
            break;
        case IPC_DST_BCAST:
            stk__put32(ip + 16, 0xffffffffu);
            fix_ip_csum(f);
            which = &now->ip_drop_dst;
            break;
        case IPC_DST_SUBNET_BCAST:
            stk__put32(ip + 16, PKT_IP(198, 18, 0, 255));
            fix_ip_csum(f);
            which = &now->ip_drop_dst;
            break;
        case IPC_SRC_ZERO:
            stk__put32(ip + 12, 0);
            fix_ip_csum(f);
            which = &now->ip_drop_hdr;
            break;
        case IPC_SRC_LOOP:
            stk__put32(ip + 12, PKT_IP(127, 0, 0, 1));
            fix_ip_csum(f);
            which = &now->ip_drop_hdr;
            break;
        case IPC_SRC_MCAST:
            stk__put32(ip + 12, PKT_IP(224, 0, 0, 251));
            fix_ip_csum(f);
            which = &now->ip_drop_hdr;
            break;
        case IPC_SRC_BCAST:
            stk__put32(ip + 12, 0xffffffffu);
            fix_ip_csum(f);
            which = &now->ip_drop_hdr;
            break;
        case IPC_SRC_SUBNET_BCAST:
            stk__put32(ip + 12, PKT_IP(198, 18, 0, 255));
            fix_ip_csum(f);
            which = &now->ip_drop_hdr;
            break;
        case IPC_SRC_SELF:
            stk__put32(ip + 12, US_IP);
            fix_ip_csum(f);
            which = &now->ip_drop_hdr;
            break;
        case IPC_PROTO_SCTP:
            ip[9] = 132; /* SCTP: no handler (UDP has one) */
            fix_ip_csum(f);
            which = &now->ip_drop_proto;
            break;
        }
        inject(t, f, n);
        ck_assert_msg(pkt_capture_count(&t->cap) == 0, "case %d: something was sent", c);
        size_t off = (size_t)((const uint8_t *)which - (const uint8_t *)now);
        uint64_t was = *(const uint64_t *)((const uint8_t *)&before + off);
        ck_assert_msg(*which == was + 1, "case %d: drop not counted", c);
        ck_assert_uint_eq(now->ip_in, before.ip_in + 1);
        ck_assert_uint_eq(now->icmp_in, before.icmp_in);
    }

    /* The unmodified frame, with Ethernet padding after it, is answered. */
    size_t n = pkt_build_icmp_echo(f, sizeof(f), PEER_MAC, US_MAC, PEER_IP, US_IP, 1, 99, "x", 1);
    memset(f + n, 0xee, 60 - n);
    inject(t, f, 60);
    struct pkt_info p;
    pop_ok(t, &p);
    ck_assert_uint_eq(p.icmp_seq, 99);
    ck_assert_uint_eq(p.payload_len, 1);
    tn_free(t);
}
END_TEST

START_TEST(eth_input_drops)
{
    struct tn *t = tn_new();
    uint8_t f[100];
    size_t n = pkt_build_arp_request(f, sizeof(f), PEER_MAC, PEER_IP, US_IP);

    inject(t, f, 13);
    stk_input(t->e, t->now, NULL, 0, 0);
    ck_assert_uint_eq(ctr(t)->eth_drop_short, 2);

    const uint8_t elsewhere[6] = {0x02, 0, 0, 0, 0, 0x55};
    const uint8_t mcast[6] = {0x01, 0x00, 0x5e, 0, 0, 1};
    memcpy(f, elsewhere, 6);
    inject(t, f, n);
    memcpy(f, mcast, 6);
    inject(t, f, n);
    ck_assert_uint_eq(ctr(t)->eth_drop_dst, 2);

    memcpy(f, US_MAC, 6);
    stk__put16(f + 12, 0x88cc); /* LLDP (IPv6, 0x86dd, is served: tests/test_ip6.c) */
    inject(t, f, n);
    stk__put16(f + 12, 0x8100); /* 802.1Q tag */
    inject(t, f, n);
    ck_assert_uint_eq(ctr(t)->eth_drop_type, 2);
    expect_none(t);
    ck_assert_uint_eq(ctr(t)->arp_in, 0);
    ck_assert_uint_eq(ctr(t)->ip_in, 0);
    ck_assert_uint_eq(ctr(t)->eth_in, 5); /* the NULL frame never reaches the dispatcher */
    tn_free(t);
}
END_TEST

/* ---- IPv4 output and resolution ------------------------------------------------------- */

START_TEST(ip_send_header)
{
    struct tn *t = tn_new();
    learn(t, PEER_MAC, PEER_IP);
    ck_assert_int_eq(send_echo(t, PEER_IP, 1, 10, NULL), 0);
    const struct pkt_frame *fr = pkt_capture_pop(&t->cap);
    ck_assert_ptr_nonnull(fr);
    const uint8_t *ip = fr->data + PKT_ETH_HLEN;
    ck_assert_uint_eq(ip[0], 0x45);
    ck_assert_uint_eq(ip[1], 0);
    ck_assert_uint_eq(stk__get16(ip + 2), 20 + 8 + 10);
    ck_assert_uint_eq(stk__get16(ip + 6), PKT_IP_DF);
    ck_assert_uint_eq(ip[8], 64);
    ck_assert_uint_eq(ip[9], PKT_IP_PROTO_ICMP);
    ck_assert_uint_eq(pkt_csum_fold(pkt_csum_add(0, ip, 20)), 0);
    ck_assert_uint_eq(stk__get16(fr->data + 12), PKT_ETH_P_IP);
    ck_assert_uint_eq(fr->l2_len, 14);
    ck_assert_uint_eq(fr->l3_len, 20);
    uint16_t id1 = stk__get16(ip + 4);

    /* The header checksum left to the device: the offload is requested and, once the
     * "device" finished it, the frame is valid. */
    struct stk_txmeta m = {.flags = STK_TX_IP_CSUM};
    ck_assert_int_eq(send_echo(t, PEER_IP, 2, 10, &m), 0);
    fr = pkt_capture_peek(&t->cap, 0);
    ck_assert_uint_eq(fr->offloads, STK_TX_IP_CSUM);
    ck_assert_uint_eq(fr->l3_len, 20);
    ck_assert_uint_eq(t->cap.bad_frames, 0);
    struct pkt_info p;
    pop_ok(t, &p);
    ck_assert_uint_eq(p.ip_id, (uint16_t)(id1 + 1));

    /* Sizes: exactly the MTU goes, one more byte does not, unless the device segments. */
    ck_assert_int_eq(send_echo(t, PEER_IP, 3, 1500 - 28, NULL), 0);
    pop_ok(t, &p);
    ck_assert_uint_eq(p.ip_len, 1500);
    ck_assert_int_eq(send_echo(t, PEER_IP, 4, 1500 - 28 + 1, NULL), -EMSGSIZE);
    m.flags = STK_TX_TSO;
    m.tso_mss = 1000;
    ck_assert_int_eq(send_echo(t, PEER_IP, 5, 1500 - 28 + 1, &m), 0);
    pkt_capture_clear(&t->cap);
    struct stk_iov big[8];
    uint8_t hdr[STK_L2L3_HLEN + 8] = {0};
    static const uint8_t blob[40000];
    for (int i = 0; i < 8; i++)
        big[i] = (struct stk_iov){blob, 10};
    ck_assert_int_eq(stk__ip_send(t->e, t->now, PEER_IP, 1, hdr, 8, big, 8, NULL), -EINVAL);
    big[0].len = big[1].len = sizeof(blob);
    ck_assert_int_eq(stk__ip_send(t->e, t->now, PEER_IP, 1, hdr, 8, big, 2, &m), -EMSGSIZE);
    expect_none(t);
    tn_free(t);
}
END_TEST

START_TEST(resolution_queue_release)
{
    struct tn *t = tn_new();
    ck_assert_int_eq(send_echo(t, PEER_IP, 1, 10, NULL), 0);
    pop_request(t, PEER_IP);
    struct stk_txmeta m = {.flags = STK_TX_IP_CSUM};
    ck_assert_int_eq(send_echo(t, PEER_IP, 2, 11, &m), 0);
    expect_none(t); /* one request is enough */
    ck_assert_uint_eq(ctr(t)->arp_requests, 1);
    ck_assert_uint_eq(stk__arp_next_timer(t->e), TN_T0 + STK_US_PER_S);
    ck_assert_uint_le(stk_next_timer(t->e), TN_T0 + STK_US_PER_S);

    t->now += 1000;
    arp_reply_from(t, PEER_MAC, PEER_IP);
    struct pkt_info p1, p2;
    const struct pkt_frame *fr = pkt_capture_peek(&t->cap, 1);
    ck_assert_ptr_nonnull(fr);
    ck_assert_uint_eq(fr->offloads, STK_TX_IP_CSUM); /* the metadata was kept */
    ck_assert_uint_eq(fr->l3_len, 20);
    pop_ok(t, &p1);
    ck_assert_mem_eq(p1.dst_mac, PEER_MAC, 6);
    ck_assert_uint_eq(p1.icmp_seq, 1);
    ck_assert_uint_eq(p1.payload_len, 10);
    pop_ok(t, &p2);
    ck_assert_mem_eq(p2.dst_mac, PEER_MAC, 6);
    ck_assert_uint_eq(p2.icmp_seq, 2);
    ck_assert_uint_eq(p2.payload_len, 11);
    ck_assert_uint_eq(p2.ip_id, (uint16_t)(p1.ip_id + 1));
    expect_none(t);

    /* Resolved now: the next packet goes straight out. */
    ck_assert_int_eq(send_echo(t, PEER_IP, 3, 0, NULL), 0);
    expect_echo_to(t, PEER_MAC, PEER_IP, 3);
    ck_assert_uint_eq(ctr(t)->ip_out, 3);
    ck_assert_uint_eq(ctr(t)->arp_queue_drop, 0);
    /* No retransmission is due any more. */
    poll_at(t, TN_T0 + 5 * STK_US_PER_S);
    expect_none(t);
    tn_free(t);
}
END_TEST

START_TEST(resolution_retransmit_and_give_up)
{
    struct tn *t = tn_new();
    const uint32_t ip = PKT_IP(198, 18, 0, 7);
    ck_assert_int_eq(send_echo(t, ip, 1, 0, NULL), 0);
    ck_assert_int_eq(send_echo(t, ip, 2, 0, NULL), 0);
    pop_request(t, ip);
    poll_at(t, TN_T0 + STK_US_PER_S - 1);
    expect_none(t);
    poll_at(t, TN_T0 + STK_US_PER_S);
    pop_request(t, ip);
    expect_none(t);
    ck_assert_uint_eq(stk__arp_next_timer(t->e), TN_T0 + 2 * STK_US_PER_S);
    poll_at(t, TN_T0 + 2 * STK_US_PER_S);
    pop_request(t, ip);
    ck_assert_uint_eq(ctr(t)->arp_requests, 3);
    poll_at(t, TN_T0 + 3 * STK_US_PER_S);
    expect_none(t);
    ck_assert_uint_eq(ctr(t)->arp_queue_drop, 2);
    ck_assert_uint_eq(ctr(t)->arp_requests, 3);
    ck_assert_uint_eq(stk__arp_next_timer(t->e), UINT64_MAX);

    /* A late reply still teaches us the sender: it is addressed to us from a host on our
     * subnet (RFC 826 adds senders when we are the target), so the next send goes out
     * directly. */
    arp_reply_from(t, OTHER_MAC, ip);
    expect_none(t);
    ck_assert_int_eq(send_echo(t, ip, 3, 0, NULL), 0);
    expect_echo_to(t, OTHER_MAC, ip, 3);

    /* A host that never answered is asked afresh on the next send. */
    const uint32_t ip2 = PKT_IP(198, 18, 0, 8);
    ck_assert_int_eq(send_echo(t, ip2, 1, 0, NULL), 0);
    pop_request(t, ip2);
    const stk_time_t start = t->now;
    for (int s = 1; s <= 3; s++)
        poll_at(t, start + (stk_time_t)s * STK_US_PER_S);
    pkt_capture_clear(&t->cap);
    ck_assert_int_eq(send_echo(t, ip2, 2, 0, NULL), 0);
    pop_request(t, ip2);
    tn_free(t);
}
END_TEST

START_TEST(routing)
{
    struct stk_config c = base_cfg();
    c.gateway = GW_IP;
    struct tn *t = tn_create(&c);
    pkt_capture_clear(&t->cap);
    ck_assert_uint_eq(stk__ip_route(t->e, PEER_IP), PEER_IP);
    ck_assert_uint_eq(stk__ip_route(t->e, FAR_IP), GW_IP);
    ck_assert_uint_eq(stk__ip_route(t->e, US_IP), 0);
    ck_assert_uint_eq(stk__ip_route(t->e, 0), 0);
    ck_assert_uint_eq(stk__ip_route(t->e, PKT_IP(127, 0, 0, 1)), 0);
    ck_assert_uint_eq(stk__ip_route(t->e, PKT_IP(224, 0, 0, 1)), 0);
    ck_assert_uint_eq(stk__ip_route(t->e, 0xffffffffu), 0);
    ck_assert_uint_eq(stk__ip_route(t->e, PKT_IP(198, 18, 0, 255)), 0);

    /* Off-subnet: ARP asks for the gateway, the packet keeps its destination. */
    ck_assert_int_eq(send_echo(t, FAR_IP, 1, 4, NULL), 0);
    pop_request(t, GW_IP);
    arp_reply_from(t, GW_MAC, GW_IP);
    expect_echo_to(t, GW_MAC, FAR_IP, 1);
    ck_assert_int_eq(send_echo(t, PKT_IP(127, 0, 0, 1), 2, 0, NULL), -EHOSTUNREACH);
    tn_free(t);

    /* No gateway: off-subnet is unreachable, counted, and nothing is sent. */
    t = tn_new();
    ck_assert_uint_eq(stk__ip_route(t->e, FAR_IP), 0);
    ck_assert_int_eq(send_echo(t, FAR_IP, 1, 0, NULL), -EHOSTUNREACH);
    ck_assert_uint_eq(ctr(t)->ip_drop_noroute, 1);
    ck_assert_uint_eq(ctr(t)->ip_out, 0);
    expect_none(t);
    tn_free(t);

    /* A /32 reaches everything through the gateway; a /31 has no broadcast address. */
    c = base_cfg();
    c.prefix = 32;
    c.gateway = GW_IP;
    t = tn_create(&c);
    ck_assert_uint_eq(stk__ip_route(t->e, PEER_IP), GW_IP);
    tn_free(t);
    c = base_cfg();
    c.prefix = 31;
    c.ip = PKT_IP(198, 18, 0, 3);
    t = tn_create(&c);
    ck_assert_uint_eq(stk__ip_route(t->e, US_IP), US_IP);
    tn_free(t);
}
END_TEST

START_TEST(cache_expiry)
{
    const stk_time_t to = 10 * STK_US_PER_S;
    struct stk_config c = base_cfg();
    c.arp_timeout_us = (uint32_t)to;
    struct tn *t = tn_create(&c);
    pkt_capture_clear(&t->cap);
    uint8_t mac[6];

    /* PEER is learned and never used; OTHER is learned and used. */
    learn(t, PEER_MAC, PEER_IP);
    learn(t, OTHER_MAC, OTHER_IP);
    ck_assert_uint_eq(stk__arp_next_timer(t->e), TN_T0 + to);
    t->now = TN_T0 + 1;
    ck_assert_int_eq(stk__arp_resolve(t->e, t->now, OTHER_IP, mac), 0);
    poll_at(t, TN_T0 + to - 1);
    expect_none(t);
    poll_at(t, TN_T0 + to);
    /* The used entry is checked with a unicast request and stays usable meanwhile. */
    struct pkt_info p;
    pop_ok(t, &p);
    expect_arp(&p, PKT_ARP_REQUEST, OTHER_MAC, ZERO_MAC, OTHER_IP);
    expect_none(t);
    ck_assert_int_eq(stk__arp_resolve(t->e, t->now, OTHER_IP, mac), 0);
    ck_assert_mem_eq(mac, OTHER_MAC, 6);
    /* The unused one is gone. */
    ck_assert_int_eq(stk__arp_resolve(t->e, t->now, PEER_IP, mac), -EAGAIN);
    pop_request(t, PEER_IP);

    /* OTHER answers: refreshed for a full lifetime. */
    arp_reply_from(t, OTHER_MAC, OTHER_IP);
    expect_none(t);
    /* PEER itself never answers: two more broadcasts, then it is given up. */
    poll_at(t, TN_T0 + to + STK_US_PER_S);
    pop_request(t, PEER_IP);
    poll_at(t, TN_T0 + to + 2 * STK_US_PER_S);
    pop_request(t, PEER_IP);
    poll_at(t, TN_T0 + to + 3 * STK_US_PER_S);
    expect_none(t);
    poll_at(t, TN_T0 + 2 * to - 1);
    expect_none(t);
    ck_assert_int_eq(stk__arp_resolve(t->e, t->now, OTHER_IP, mac), 0);

    /* OTHER stops answering: three unicast probes, then the entry is dropped. */
    for (int i = 0; i < 3; i++) {
        poll_at(t, TN_T0 + 2 * to + (stk_time_t)i * STK_US_PER_S);
        pop_ok(t, &p);
        expect_arp(&p, PKT_ARP_REQUEST, OTHER_MAC, ZERO_MAC, OTHER_IP);
        expect_none(t);
    }
    poll_at(t, TN_T0 + 2 * to + 3 * STK_US_PER_S);
    expect_none(t);
    ck_assert_int_eq(stk__arp_resolve(t->e, t->now, OTHER_IP, mac), -EAGAIN);
    pop_request(t, OTHER_IP);
    tn_free(t);

    /* Any ARP from a cached host pushes its expiry back. */
    t = tn_create(&c);
    pkt_capture_clear(&t->cap);
    learn(t, PEER_MAC, PEER_IP);
    t->now = TN_T0 + 5 * STK_US_PER_S;
    uint8_t f[64];
    inject(t, f, pkt_build_arp_request(f, sizeof(f), PEER_MAC, PEER_IP, OTHER_IP));
    expect_none(t);
    poll_at(t, TN_T0 + to);
    expect_none(t);
    poll_at(t, TN_T0 + 5 * STK_US_PER_S + to - 1);
    ck_assert_int_eq(stk__arp_resolve(t->e, t->now, PEER_IP, mac), 0);
    tn_free(t);
}
END_TEST

#define QPER 64  /* ARP_QPER */
#define QMAX 512 /* ARP_QMAX */
START_TEST(queue_bounds)
{
    struct tn *t = tn_new();
    for (int i = 0; i < QPER; i++)
        ck_assert_int_eq(send_echo(t, PEER_IP, (uint16_t)i, 100, NULL), 0);
    ck_assert_int_eq(send_echo(t, PEER_IP, QPER, 100, NULL), -ENOBUFS);
    ck_assert_uint_eq(ctr(t)->arp_queue_drop, 1);
    /* Seven more neighbours fill the engine-wide queue. */
    for (uint32_t h = 0; h < QMAX / QPER - 1; h++)
        for (int i = 0; i < QPER; i++)
            ck_assert_int_eq(send_echo(t, PKT_IP(198, 18, 0, 100 + h), (uint16_t)i, 0, NULL), 0);
    ck_assert_int_eq(send_echo(t, PKT_IP(198, 18, 0, 200), 0, 0, NULL), -ENOBUFS);
    ck_assert_uint_eq(ctr(t)->arp_queue_drop, 2);
    ck_assert_uint_eq(ctr(t)->arp_requests, QMAX / QPER + 1);
    pkt_capture_clear(&t->cap);

    /* PEER's frames are released in order, making room again. */
    arp_reply_from(t, PEER_MAC, PEER_IP);
    for (int i = 0; i < QPER; i++)
        expect_echo_to(t, PEER_MAC, PEER_IP, (uint16_t)i);
    expect_none(t);
    ck_assert_int_eq(send_echo(t, PKT_IP(198, 18, 0, 200), 1, 0, NULL), 0);

    /* The rest never resolve: all their frames are dropped and counted. */
    for (int s = 1; s <= 3; s++)
        poll_at(t, TN_T0 + (stk_time_t)s * STK_US_PER_S);
    ck_assert_uint_eq(ctr(t)->arp_queue_drop, 2 + (QMAX - QPER) + 1);
    /* Only PEER's expiry is left to wait for. */
    ck_assert_uint_eq(stk__arp_next_timer(t->e), TN_T0 + 60 * STK_US_PER_S);
    tn_free(t);
}
END_TEST

START_TEST(cache_eviction)
{
    struct stk_config c = base_cfg();
    c.prefix = 16;
    struct tn *t = tn_create(&c);
    pkt_capture_clear(&t->cap);
    uint8_t mac[6];

    /* The oldest entry is pending with a frame; 255 resolved ones fill the table. */
    const uint32_t pend = PKT_IP(198, 18, 100, 1);
    ck_assert_int_eq(send_echo(t, pend, 1, 0, NULL), 0);
    pkt_capture_clear(&t->cap);
    for (uint32_t i = 1; i <= 255; i++) {
        uint8_t hm[6] = {0x02, 0, 0, 1, 0, (uint8_t)i};
        t->now++;
        learn(t, hm, PKT_IP(198, 18, 1, i));
    }
    pkt_capture_clear(&t->cap);
    /* One more: the oldest resolved entry goes, not the one holding a frame. */
    t->now++;
    learn(t, OTHER_MAC, PKT_IP(198, 18, 2, 1));
    ck_assert_uint_eq(ctr(t)->arp_queue_drop, 0);
    ck_assert_int_eq(stk__arp_resolve(t->e, t->now, PKT_IP(198, 18, 1, 3), mac), 0);
    ck_assert_int_eq(stk__arp_resolve(t->e, t->now, PKT_IP(198, 18, 2, 1), mac), 0);
    ck_assert_int_eq(stk__arp_resolve(t->e, t->now, PKT_IP(198, 18, 1, 1), mac), -EAGAIN);
    pkt_capture_clear(&t->cap);
    arp_reply_from(t, PEER_MAC, pend);
    expect_echo_to(t, PEER_MAC, pend, 1);
    tn_free(t);

    /* All pending: an entry without frames goes before the one with a frame. */
    t = tn_create(&c);
    ck_assert_int_eq(send_echo(t, pend, 1, 0, NULL), 0);
    for (uint32_t i = 1; i <= 255; i++) {
        t->now++;
        ck_assert_int_eq(stk__arp_resolve(t->e, t->now, PKT_IP(198, 18, 3, i), mac), -EAGAIN);
        if (pkt_capture_count(&t->cap) > 512)
            pkt_capture_clear(&t->cap);
    }
    t->now++;
    ck_assert_int_eq(stk__arp_resolve(t->e, t->now, PKT_IP(198, 18, 4, 1), mac), -EAGAIN);
    ck_assert_uint_eq(ctr(t)->arp_queue_drop, 0);
    pkt_capture_clear(&t->cap);
    arp_reply_from(t, PEER_MAC, pend);
    expect_echo_to(t, PEER_MAC, pend, 1);
    tn_free(t);
}
END_TEST

START_TEST(tx_failure_counted)
{
    struct tn *t = tn_new();
    t->cap.fail_next = 1;
    uint8_t f[64];
    inject(t, f, pkt_build_arp_request(f, sizeof(f), PEER_MAC, PEER_IP, US_IP));
    expect_none(t);
    ck_assert_uint_eq(ctr(t)->tx_fail, 1);
    ck_assert_uint_eq(ctr(t)->arp_out, 1); /* the announcement only */
    t->cap.fail_next = 1;
    ck_assert_int_eq(send_echo(t, PEER_IP, 1, 0, NULL), -ENOBUFS);
    ck_assert_uint_eq(ctr(t)->tx_fail, 2);
    ck_assert_int_eq(send_echo(t, PEER_IP, 2, 0, NULL), 0);
    expect_echo_to(t, PEER_MAC, PEER_IP, 2);
    tn_free(t);
}
END_TEST

/* ---- Robustness ----------------------------------------------------------------------- */

START_TEST(fuzz_frames)
{
    struct stk_config c = base_cfg();
    c.prefix = 28; /* a small subnet, so random addresses hit both paths */
    c.gateway = PKT_IP(198, 18, 0, 14);
    struct tn *t = tn_create(&c);
    struct wire_rng r;
    wire_rng_seed(&r, 0x5eed0001);

    /* Valid seeds of every kind the engine handles, mutated below. */
    uint8_t seeds[6][128];
    size_t seedlen[6];
    seedlen[0] = pkt_build_arp_request(seeds[0], 128, PEER_MAC, PEER_IP, US_IP);
    seedlen[1] = pkt_build_arp_reply(seeds[1], 128, OTHER_MAC, OTHER_IP, US_MAC, US_IP);
    seedlen[2] =
        pkt_build_icmp_echo(seeds[2], 128, PEER_MAC, US_MAC, PEER_IP, US_IP, 1, 2, "payload", 7);
    struct pkt_tcp_spec s;
    pkt_tcp_spec_init(&s);
    s.flags = PKT_TCP_SYN;
    s.mss = 1460;
    s.ts = true;
    s.sack_perm = true;
    s.wscale = 7;
    seedlen[3] = pkt_build_tcp(&s, seeds[3], 128);
    s.flags = PKT_TCP_ACK;
    s.payload = "data";
    s.payload_len = 4;
    seedlen[4] = pkt_build_tcp(&s, seeds[4], 128);
    seedlen[5] =
        pkt_build_icmp_echo(seeds[5], 128, PEER_MAC, BCAST_MAC, PEER_IP, US_IP, 3, 4, NULL, 0);

    uint8_t f[256];
    for (int i = 0; i < 100000; i++) {
        int k = (int)wire_rng_below(&r, 6);
        size_t n = seedlen[k];
        memcpy(f, seeds[k], n);
        switch (wire_rng_below(&r, 4)) {
        case 0: /* flip a few bits */
            for (int j = (int)wire_rng_below(&r, 4); j >= 0; j--) {
                size_t at = (size_t)wire_rng_below(&r, n);
                f[at] ^= (uint8_t)(1u << wire_rng_below(&r, 8));
            }
            break;
        case 1: /* overwrite header bytes with random ones */
            for (int j = (int)wire_rng_below(&r, 8); j >= 0; j--)
                f[wire_rng_below(&r, n < 60 ? n : 60)] = (uint8_t)wire_rng_next(&r);
            break;
        case 2: /* truncate or extend with junk */
            if (wire_rng_below(&r, 2))
                n = (size_t)wire_rng_below(&r, n + 1);
            else {
                size_t add = (size_t)wire_rng_below(&r, sizeof(f) - n);
                for (size_t j = 0; j < add; j++)
                    f[n + j] = (uint8_t)wire_rng_next(&r);
                n += add;
            }
            break;
        default: /* pure noise with a plausible Ethernet header */
            n = (size_t)wire_rng_below(&r, sizeof(f));
            for (size_t j = 0; j < n; j++)
                f[j] = (uint8_t)wire_rng_next(&r);
            if (n >= 14) {
                memcpy(f, wire_rng_below(&r, 2) ? US_MAC : BCAST_MAC, 6);
                stk__put16(f + 12, wire_rng_below(&r, 2) ? 0x0800 : 0x0806);
            }
            break;
        }
        /* Random sources inside the subnet keep the ARP cache and queues busy. */
        if (wire_rng_below(&r, 8) == 0 && n >= 34 && stk__get16(f + 12) == 0x0806)
            stk__put32(f + 28, PKT_IP(198, 18, 0, (uint32_t)wire_rng_below(&r, 16)));
        stk_input(t->e, t->now, f, n, (uint32_t)wire_rng_below(&r, 4));
        if (wire_rng_below(&r, 16) == 0)
            (void)send_echo(
                t,
                PKT_IP(198, 18, (uint32_t)wire_rng_below(&r, 2), (uint32_t)wire_rng_below(&r, 256)),
                (uint16_t)i, (size_t)wire_rng_below(&r, 64), NULL);
        if (wire_rng_below(&r, 32) == 0) {
            t->now += wire_rng_below(&r, 2 * STK_US_PER_S);
            stk_poll(t->e, t->now);
        }
        if (pkt_capture_count(&t->cap) > 512)
            pkt_capture_clear(&t->cap);
    }
    ck_assert_uint_eq(ctr(t)->eth_in, 100000);
    ck_assert_uint_eq(t->cap.bad_frames, 0);
    tn_free(t);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("net");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, announce_at_start);
    tcase_add_test(tc, arp_request_answered_exactly);
    tcase_add_test(tc, arp_for_others_ignored);
    tcase_add_test(tc, arp_malformed_dropped);
    tcase_add_test(tc, icmp_echo_reply);
    tcase_add_test(tc, icmp_echo_from_unknown_host);
    tcase_add_test(tc, icmp_drops);
    tcase_add_test(tc, ip_input_drops);
    tcase_add_test(tc, eth_input_drops);
    tcase_add_test(tc, ip_send_header);
    tcase_add_test(tc, resolution_queue_release);
    tcase_add_test(tc, resolution_retransmit_and_give_up);
    tcase_add_test(tc, routing);
    tcase_add_test(tc, cache_expiry);
    tcase_add_test(tc, arp_passive_learns_silently);
    tcase_add_test(tc, queue_bounds);
    tcase_add_test(tc, cache_eviction);
    tcase_add_test(tc, tx_failure_counted);
    tcase_add_test(tc, fuzz_frames);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

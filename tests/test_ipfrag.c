/*
 * test_ipfrag.c - IPv4 reassembly and fragmentation (stack/ipfrag.c).
 *
 * Datagrams are built whole with tests/lib/pkt.h, cut into fragments here and fed to one
 * engine in various orders. What the engine sends back (echo replies, possibly in
 * fragments, and ICMP time exceeded) is reassembled by an independent oracle in this file
 * and checked byte for byte.
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "pkt.h"
#include "stk_int.h"
#include "tn.h"

#define US_IP   PKT_IP(198, 18, 0, 2)
#define PEER_IP PKT_IP(198, 18, 0, 1)
#define MAXDG   65535

static const uint8_t US_MAC[6] = {0x02, 0, 0, 0, 0, 0x02};
static const uint8_t PEER_MAC[6] = {0x02, 0, 0, 0, 0, 0x01};

struct tf {
    struct tn tn;
    uint8_t dg[MAXDG + PKT_ETH_HLEN];      /* the whole datagram being cut (Ethernet first) */
    size_t dglen;                          /* IPv4 bytes */
    uint8_t fr[MAXDG + PKT_ETH_HLEN + 64]; /* room for fragments past the largest datagram */
    uint8_t out[MAXDG];                    /* the oracle's reassembly of what the engine sent */
};

static struct tf *tf_new_cfg(struct stk_config *c)
{
    struct tf *t = calloc(1, sizeof(*t));
    ck_assert_ptr_nonnull(t);
    memcpy(c->mac, US_MAC, 6);
    c->ip = US_IP;
    c->prefix = 24;
    c->max_socks = 16;
    c->sndbuf = c->rcvbuf = 4096;
    if (c->arp_timeout_us == 0)
        c->arp_timeout_us = 3600 * STK_US_PER_S; /* no ARP traffic in the middle of a test */
    tn_start(&t->tn, c);
    /* Teach the engine the peer's MAC, then forget the announcement and the reply. */
    uint8_t f[64];
    size_t n = pkt_build_arp_request(f, sizeof(f), PEER_MAC, PEER_IP, US_IP);
    inject(&t->tn, f, n);
    pkt_capture_clear(&t->tn.cap);
    return t;
}

static struct tf *tf_new(void)
{
    struct stk_config c;
    memset(&c, 0, sizeof(c));
    return tf_new_cfg(&c);
}

static void tf_free(struct tf *t)
{
    tn_stop(&t->tn);
    free(t);
}

/* An echo request of paylen data bytes (a pattern depending on seed) with IP id id. */
static void make_echo(struct tf *t, uint16_t id, size_t paylen, uint8_t seed)
{
    static uint8_t data[MAXDG];
    for (size_t i = 0; i < paylen; i++)
        data[i] = (uint8_t)(i * 31 + seed);
    size_t n = pkt_build_icmp_echo(t->dg, sizeof(t->dg), PEER_MAC, US_MAC, PEER_IP, US_IP, 0x77,
                                   seed, data, paylen);
    ck_assert_uint_gt(n, 0);
    stk__put16(t->dg + PKT_ETH_HLEN + 4, id);
    t->dglen = n - PKT_ETH_HLEN;
}

/* Sends bytes [off, off + len) of the datagram's payload as one fragment. The data may run
 * past the datagram (then it is whatever the buffer holds): fragments need not agree. */
static void frag(struct tf *t, uint32_t off, uint32_t len, bool mf)
{
    const uint8_t *ip = t->dg + PKT_ETH_HLEN;
    uint8_t *fi = t->fr + PKT_ETH_HLEN;
    ck_assert_uint_le(PKT_IP_HLEN + off + len, sizeof(t->fr) - PKT_ETH_HLEN);
    memcpy(t->fr, t->dg, PKT_ETH_HLEN + PKT_IP_HLEN);
    stk__put16(fi + 2, (uint16_t)(PKT_IP_HLEN + len));
    stk__put16(fi + 6, (uint16_t)((mf ? PKT_IP_MF : 0) | (off / 8)));
    stk__put16(fi + 10, 0);
    stk__put16(fi + 10, pkt_csum_fold(pkt_csum_add(0, fi, PKT_IP_HLEN)));
    size_t have = MAXDG - PKT_IP_HLEN > off ? MAXDG - PKT_IP_HLEN - off : 0;
    memset(fi + PKT_IP_HLEN, 0xa5, len);
    memcpy(fi + PKT_IP_HLEN, ip + PKT_IP_HLEN + off, len < have ? len : have);
    inject(&t->tn, t->fr, PKT_ETH_HLEN + PKT_IP_HLEN + len);
}

/* Fragment i of the datagram cut into pieces of per bytes (per a multiple of 8). */
static void piece(struct tf *t, unsigned i, uint32_t per)
{
    uint32_t pay = (uint32_t)t->dglen - PKT_IP_HLEN;
    uint32_t off = i * per;
    ck_assert_uint_lt(off, pay);
    uint32_t len = pay - off < per ? pay - off : per;
    frag(t, off, len, off + len < pay);
}

static unsigned npieces(const struct tf *t, uint32_t per)
{
    return (unsigned)((t->dglen - PKT_IP_HLEN + per - 1) / per);
}

/* The oracle: takes every frame the engine sent, which must all be IPv4 from us to the peer
 * with valid headers, and reassembles them into t->out. All must belong to one datagram; with
 * frag_expected they must be fragments of at most mtu bytes, offsets multiples of 8, MF on
 * all but the last, never DF. Returns the datagram's length (header included). */
static size_t collect(struct tf *t, bool frag_expected, size_t mtu)
{
    size_t nfr = pkt_capture_count(&t->tn.cap);
    ck_assert_uint_gt(nfr, 0);
    uint32_t total = 0, got = 0;
    int id = -1;
    static uint8_t seen[MAXDG];
    memset(seen, 0, sizeof(seen));
    for (size_t i = 0; i < nfr; i++) {
        const struct pkt_frame *fr = pkt_capture_pop(&t->tn.cap);
        struct pkt_info p;
        int rc = pkt_parse(fr->data, fr->len, &p);
        /* The parser knows TCP and ICMP only (PKT_E_IP_PROTO: a valid UDP packet). */
        ck_assert_msg(frag_expected ? rc == PKT_E_IP_FRAG : (rc == PKT_OK || rc == PKT_E_IP_PROTO),
                      "parse: %s", pkt_strerror(rc));
        ck_assert_mem_eq(p.dst_mac, PEER_MAC, 6);
        ck_assert_uint_eq(p.src_ip, US_IP);
        ck_assert_uint_eq(p.dst_ip, PEER_IP);
        ck_assert_uint_le(p.ip_len, mtu);
        ck_assert_uint_eq(p.ip_hlen, PKT_IP_HLEN);
        if (id >= 0)
            ck_assert_uint_eq(p.ip_id, (unsigned)id);
        id = p.ip_id;
        uint32_t plen = p.ip_len - PKT_IP_HLEN;
        if (frag_expected) {
            ck_assert(!p.df);
            ck_assert_uint_eq(p.frag_offset % 8, 0);
            if (p.mf)
                ck_assert_uint_eq(plen % 8, 0);
            else
                total = p.frag_offset + plen;
        } else {
            total = plen;
        }
        ck_assert_uint_le(p.frag_offset + plen, MAXDG - PKT_IP_HLEN);
        for (uint32_t b = p.frag_offset; b < p.frag_offset + plen; b++) {
            ck_assert_msg(!seen[b], "byte %u sent twice", b);
            seen[b] = 1;
        }
        memcpy(t->out + PKT_IP_HLEN + p.frag_offset, fr->data + PKT_ETH_HLEN + PKT_IP_HLEN, plen);
        if (p.frag_offset == 0)
            memcpy(t->out, fr->data + PKT_ETH_HLEN, PKT_IP_HLEN);
        got += plen;
    }
    ck_assert_uint_gt(total, 0);
    ck_assert_uint_eq(got, total);
    stk__put16(t->out + 2, (uint16_t)(PKT_IP_HLEN + total));
    return PKT_IP_HLEN + total;
}

/* The engine answered the datagram in t->dg: an echo reply with the same data. */
static void expect_reply(struct tf *t)
{
    size_t n = t->dglen;
    size_t len = collect(t, n > 1500, 1500);
    ck_assert_uint_eq(len, n);
    const uint8_t *rq = t->dg + PKT_ETH_HLEN + PKT_IP_HLEN, *rp = t->out + PKT_IP_HLEN;
    ck_assert_uint_eq(t->out[9], PKT_IP_PROTO_ICMP);
    ck_assert_uint_eq(rp[0], PKT_ICMP_ECHOREPLY);
    ck_assert_mem_eq(rp + 4, rq + 4, n - PKT_IP_HLEN - 4);
    ck_assert_uint_eq(pkt_csum_fold(pkt_csum_add(0, rp, n - PKT_IP_HLEN)), 0);
}

/* ---- Orders ---------------------------------------------------------------------------- */

START_TEST(in_order)
{
    struct tf *t = tf_new();
    make_echo(t, 1, 4000, 1);
    for (unsigned i = 0; i < npieces(t, 1480); i++) {
        expect_none(&t->tn);
        piece(t, i, 1480);
    }
    expect_reply(t);
    ck_assert_uint_eq(ctr(&t->tn)->ip_frag_in, 3);
    ck_assert_uint_eq(ctr(&t->tn)->ip_reasm_ok, 1);
    ck_assert_uint_eq(ctr(&t->tn)->icmp_echo_replies, 1);
    ck_assert_uint_eq(ctr(&t->tn)->ip_frag_ok, 1);
    ck_assert_uint_eq(ctr(&t->tn)->ip_frag_creates, 3);
    ck_assert_uint_eq(ctr(&t->tn)->ip_drop_frag, 0);
    ck_assert_uint_eq(stk__ipfrag_next_timer(t->tn.e), UINT64_MAX);
    tf_free(t);
}
END_TEST

START_TEST(reversed)
{
    struct tf *t = tf_new();
    make_echo(t, 2, 3000, 2);
    for (unsigned i = npieces(t, 256); i-- > 0;)
        piece(t, i, 256);
    expect_reply(t);
    ck_assert_uint_eq(ctr(&t->tn)->ip_reasm_ok, 1);
    tf_free(t);
}
END_TEST

START_TEST(shuffled)
{
    struct tf *t = tf_new();
    /* Several datagrams interleaved, each in a different pseudo-random order. */
    for (unsigned round = 0; round < 20; round++) {
        make_echo(t, (uint16_t)(100 + round), 500 + round * 97, (uint8_t)round);
        uint32_t per = 8 * (1 + round % 13);
        unsigned n = npieces(t, per), order[1024];
        ck_assert_uint_le(n, 1024);
        for (unsigned i = 0; i < n; i++)
            order[i] = i;
        uint32_t r = 12345 + round;
        for (unsigned i = n - 1; i > 0; i--) {
            r = r * 1103515245u + 12345u;
            unsigned j = (r >> 8) % (i + 1);
            unsigned x = order[i];
            order[i] = order[j];
            order[j] = x;
        }
        for (unsigned i = 0; i < n; i++)
            piece(t, order[i], per);
        expect_reply(t);
    }
    ck_assert_uint_eq(ctr(&t->tn)->ip_reasm_ok, 20);
    ck_assert_uint_eq(ctr(&t->tn)->ip_drop_frag, 0);
    tf_free(t);
}
END_TEST

START_TEST(duplicates_tolerated)
{
    struct tf *t = tf_new();
    make_echo(t, 3, 2000, 3);
    piece(t, 0, 512);
    piece(t, 0, 512);
    piece(t, 2, 512);
    piece(t, 2, 512);
    /* Inside one fragment, and inside two adjacent ones: still only a repeat. */
    piece(t, 1, 512);
    frag(t, 8, 64, true);
    frag(t, 504, 16, true);
    expect_none(&t->tn);
    ck_assert_uint_eq(ctr(&t->tn)->ip_reasm_dup, 4);
    piece(t, 3, 512);
    expect_reply(t);
    ck_assert_uint_eq(ctr(&t->tn)->ip_reasm_ok, 1);
    ck_assert_uint_eq(ctr(&t->tn)->ip_drop_frag, 4);
    ck_assert_uint_eq(ctr(&t->tn)->ip_reasm_drop_overlap, 0);
    tf_free(t);
}
END_TEST

START_TEST(overlap_drops_datagram)
{
    struct tf *t = tf_new();
    make_echo(t, 4, 2000, 4);
    piece(t, 0, 512);
    piece(t, 1, 512);
    /* Starts inside fragment 1 and runs past it into the hole: the whole datagram goes. */
    frag(t, 1016, 16, true);
    ck_assert_uint_eq(ctr(&t->tn)->ip_reasm_drop_overlap, 1);
    ck_assert_uint_eq(ctr(&t->tn)->ip_drop_frag, 3);
    ck_assert_uint_eq(stk__ipfrag_next_timer(t->tn.e), UINT64_MAX);
    /* The rest starts a new datagram that can never complete. */
    piece(t, 2, 512);
    piece(t, 3, 512);
    expect_none(&t->tn);
    ck_assert_uint_eq(ctr(&t->tn)->ip_reasm_ok, 0);

    /* Overlapping the start of a fragment by 8 bytes, from below (a "1-byte offset" trick
     * in 8-byte units: the teardrop shape). */
    make_echo(t, 5, 2000, 5);
    piece(t, 1, 512);
    frag(t, 8, 512, true);
    ck_assert_uint_eq(ctr(&t->tn)->ip_reasm_drop_overlap, 2);
    /* Two runs with a hole between them, then one fragment spanning the hole: overlap. */
    make_echo(t, 6, 2000, 6);
    piece(t, 0, 512);
    piece(t, 2, 512);
    frag(t, 256, 1024, true);
    ck_assert_uint_eq(ctr(&t->tn)->ip_reasm_drop_overlap, 3);
    expect_none(&t->tn);
    tf_free(t);
}
END_TEST

/* ---- Bad fragments ----------------------------------------------------------------------- */

START_TEST(bad_fragments)
{
    struct tf *t = tf_new();
    make_echo(t, 7, 2000, 7);
    uint64_t bad = 0;
    /* Not a multiple of 8 in a non-last fragment: off by one each way. */
    frag(t, 0, 511, true);
    frag(t, 0, 513, true);
    bad += 2;
    /* Zero-length fragments, with MF and as a last one. */
    frag(t, 0, 0, true);
    frag(t, 512, 0, false);
    bad += 2;
    ck_assert_uint_eq(ctr(&t->tn)->ip_reasm_drop_bad, bad);
    ck_assert_uint_eq(ctr(&t->tn)->ip_drop_frag, bad);
    ck_assert_uint_eq(stk__ipfrag_next_timer(t->tn.e), UINT64_MAX); /* nothing held */

    /* The last fragment (odd length, 5 bytes) fixes the end at 21; a fragment with MF set
     * reaching beyond it kills the datagram. */
    frag(t, 16, 5, false);
    frag(t, 0, 24, true);
    ck_assert_uint_eq(ctr(&t->tn)->ip_reasm_drop_bad, ++bad);
    ck_assert_uint_eq(stk__ipfrag_next_timer(t->tn.e), UINT64_MAX);
    /* A second "last" fragment giving another end. */
    frag(t, 16, 5, false);
    frag(t, 24, 8, false);
    ck_assert_uint_eq(ctr(&t->tn)->ip_reasm_drop_bad, ++bad);
    /* A last fragment that ends before data already held. */
    frag(t, 64, 64, true);
    frag(t, 8, 16, false);
    ck_assert_uint_eq(ctr(&t->tn)->ip_reasm_drop_bad, ++bad);
    ck_assert_uint_eq(stk__ipfrag_next_timer(t->tn.e), UINT64_MAX);
    expect_none(&t->tn);
    ck_assert_uint_eq(ctr(&t->tn)->ip_reasm_ok, 0);
    tf_free(t);
}
END_TEST

START_TEST(max_size)
{
    struct tf *t = tf_new();
    /* The largest datagram, 65535 bytes: reassembled, and answered in fragments. */
    make_echo(t, 8, MAXDG - PKT_IP_HLEN - PKT_ICMP_HLEN, 8);
    ck_assert_uint_eq(t->dglen, MAXDG);
    for (unsigned i = 0; i < npieces(t, 1480); i++)
        piece(t, i, 1480);
    expect_reply(t);
    ck_assert_uint_eq(ctr(&t->tn)->ip_frag_creates, 45);

    /* One byte more, from a last fragment at the highest offset (ping of death). */
    make_echo(t, 9, 1000, 9);
    frag(t, 0, 1000, true);
    frag(t, 65528, 8, false);
    ck_assert_uint_eq(ctr(&t->tn)->ip_reasm_drop_bad, 1);
    frag(t, 65512, 16, true); /* ends at 65528 + 20 of header: still too long */
    ck_assert_uint_eq(ctr(&t->tn)->ip_reasm_drop_bad, 2);
    frag(t, 65512, 3, false); /* ends at 65515: fine, and held */
    ck_assert_uint_eq(ctr(&t->tn)->ip_reasm_drop_bad, 2);
    ck_assert_uint_ne(stk__ipfrag_next_timer(t->tn.e), UINT64_MAX);
    expect_none(&t->tn);
    tf_free(t);
}
END_TEST

/* ---- Time ---------------------------------------------------------------------------------- */

START_TEST(timeout_sends_time_exceeded)
{
    struct tf *t = tf_new();
    make_echo(t, 10, 3000, 10);
    piece(t, 0, 1480);
    piece(t, 1, 1480); /* the last one never comes */
    ck_assert_uint_eq(stk_next_timer(t->tn.e), TN_T0 + 30 * STK_US_PER_S);
    t->tn.now = TN_T0 + 30 * STK_US_PER_S - 1;
    stk_poll(t->tn.e, t->tn.now);
    expect_none(&t->tn);
    ck_assert_uint_eq(ctr(&t->tn)->ip_reasm_timeout, 0);
    t->tn.now += 1;
    stk_poll(t->tn.e, t->tn.now);
    ck_assert_uint_eq(ctr(&t->tn)->ip_reasm_timeout, 1);
    ck_assert_uint_eq(ctr(&t->tn)->ip_reasm_timxceed, 1);
    ck_assert_uint_eq(ctr(&t->tn)->ip_drop_frag, 2);
    /* RFC 792: type 11 code 1, quoting the header and 64 bits of fragment zero. */
    struct pkt_info p;
    ck_assert_int_eq(pkt_capture_pop_parse(&t->tn.cap, &p), PKT_OK);
    ck_assert_int_eq(p.kind, PKT_KIND_ICMP);
    ck_assert_uint_eq(p.dst_ip, PEER_IP);
    ck_assert_uint_eq(p.icmp_type, 11);
    ck_assert_uint_eq(p.icmp_code, 1);
    ck_assert_uint_eq(p.payload_len, PKT_IP_HLEN + 8);
    ck_assert_uint_eq(stk__get16(p.payload + 4), 10); /* the original id */
    ck_assert_uint_eq(stk__get32(p.payload + 12), PEER_IP);
    ck_assert_mem_eq(p.payload + PKT_IP_HLEN, t->dg + PKT_ETH_HLEN + PKT_IP_HLEN, 8);
    expect_none(&t->tn);
    ck_assert_uint_eq(stk_next_timer(t->tn.e) > t->tn.now + STK_US_PER_S, 1);

    /* Without fragment zero, no ICMP message (RFC 1122 3.3.2). */
    make_echo(t, 11, 3000, 11);
    piece(t, 1, 1480);
    piece(t, 2, 1480);
    t->tn.now += 31 * STK_US_PER_S;
    stk_poll(t->tn.e, t->tn.now);
    ck_assert_uint_eq(ctr(&t->tn)->ip_reasm_timeout, 2);
    ck_assert_uint_eq(ctr(&t->tn)->ip_reasm_timxceed, 1);
    expect_none(&t->tn);

    /* The timeout runs from the first fragment, not the last (as Linux). */
    make_echo(t, 12, 3000, 12);
    stk_time_t start = t->tn.now;
    piece(t, 2, 1480);
    t->tn.now += 20 * STK_US_PER_S;
    piece(t, 1, 1480);
    t->tn.now = start + 30 * STK_US_PER_S;
    stk_poll(t->tn.e, t->tn.now);
    ck_assert_uint_eq(ctr(&t->tn)->ip_reasm_timeout, 3);
    piece(t, 0, 1480); /* too late: a new datagram of one fragment */
    expect_none(&t->tn);
    ck_assert_uint_eq(ctr(&t->tn)->ip_reasm_ok, 0);
    tf_free(t);
}
END_TEST

START_TEST(time_exceeded_not_for_icmp_errors)
{
    struct tf *t = tf_new();
    /* A fragmented ICMP error (destination unreachable) that never completes. */
    make_echo(t, 13, 3000, 13);
    t->dg[PKT_ETH_HLEN + PKT_IP_HLEN] = 3;
    piece(t, 0, 1480);
    t->tn.now += 30 * STK_US_PER_S;
    stk_poll(t->tn.e, t->tn.now);
    ck_assert_uint_eq(ctr(&t->tn)->ip_reasm_timeout, 1);
    ck_assert_uint_eq(ctr(&t->tn)->ip_reasm_timxceed, 0);
    expect_none(&t->tn);
    tf_free(t);
}
END_TEST

/* ---- Bounds ------------------------------------------------------------------------------- */

START_TEST(memory_limit)
{
    struct stk_config c;
    memset(&c, 0, sizeof(c));
    c.ipfrag_mem = 8192;
    c.ipfrag_max = 4;
    struct tf *t = tf_new_cfg(&c);
    /* Datagrams whose last fragment never comes: the limit stops them. */
    unsigned sent = 0;
    for (uint16_t id = 100; id < 140; id++) {
        make_echo(t, id, 3000, 1);
        piece(t, 0, 1480);
        piece(t, 1, 1480);
        sent += 2;
    }
    ck_assert_uint_gt(ctr(&t->tn)->ip_reasm_drop_mem, 0);
    uint32_t count;
    ck_assert_uint_le(stk__ipfrag_mem(t->tn.e, &count), 8192);
    ck_assert_uint_eq(count, 4);
    ck_assert_uint_eq(ctr(&t->tn)->ip_frag_in, sent);
    ck_assert_uint_eq(ctr(&t->tn)->ip_drop_frag, ctr(&t->tn)->ip_reasm_drop_mem);
    /* Nor does anything complete while memory is full. */
    make_echo(t, 200, 100, 2);
    piece(t, 0, 64);
    piece(t, 1, 64);
    expect_none(&t->tn);
    /* Everything held expires; then a datagram goes through again. */
    t->tn.now += 30 * STK_US_PER_S;
    stk_poll(t->tn.e, t->tn.now);
    ck_assert_uint_eq(stk__ipfrag_next_timer(t->tn.e), UINT64_MAX);
    ck_assert_uint_eq(stk__ipfrag_mem(t->tn.e, NULL), 0);
    ck_assert_uint_eq(ctr(&t->tn)->ip_reasm_timeout, 4);
    /* Only those whose fragment zero got in (the memory limit refused some) are reported. */
    ck_assert_uint_gt(ctr(&t->tn)->ip_reasm_timxceed, 0);
    ck_assert_uint_lt(ctr(&t->tn)->ip_reasm_timxceed, 4);
    ck_assert_uint_eq(pkt_capture_count(&t->tn.cap), ctr(&t->tn)->ip_reasm_timxceed);
    pkt_capture_clear(&t->tn.cap);
    make_echo(t, 201, 3000, 3);
    for (unsigned i = 0; i < npieces(t, 1480); i++)
        piece(t, i, 1480);
    expect_reply(t);
    /* The number of datagrams in progress is bounded too. */
    uint64_t mem_before = ctr(&t->tn)->ip_reasm_drop_mem;
    for (uint16_t id = 300; id < 305; id++) {
        make_echo(t, id, 100, 4);
        piece(t, 0, 8);
    }
    ck_assert_uint_eq(ctr(&t->tn)->ip_reasm_drop_mem, mem_before + 1);
    tf_free(t);
}
END_TEST

START_TEST(tiny_fragments_bounded)
{
    struct tf *t = tf_new();
    /* 8-byte fragments: more than a datagram may have in progress. */
    make_echo(t, 20, 4000, 20);
    unsigned i;
    for (i = 0; i < 300 && ctr(&t->tn)->ip_reasm_drop_mem == 0; i++)
        piece(t, i, 8);
    ck_assert_uint_eq(i, 257); /* the 257th kills the datagram */
    ck_assert_uint_eq(ctr(&t->tn)->ip_drop_frag, 257);
    ck_assert_uint_eq(stk__ipfrag_next_timer(t->tn.e), UINT64_MAX);
    expect_none(&t->tn);
    tf_free(t);
}
END_TEST

/* ---- Other protocols, several engines ---------------------------------------------------- */

static size_t syn_datagram(struct tf *t, uint16_t id)
{
    struct pkt_tcp_spec s;
    pkt_tcp_spec_init(&s);
    memcpy(s.src_mac, PEER_MAC, 6);
    memcpy(s.dst_mac, US_MAC, 6);
    s.src_ip = PEER_IP;
    s.dst_ip = US_IP;
    s.sport = 40000;
    s.dport = 80;
    s.flags = PKT_TCP_SYN;
    s.seq = 1000;
    s.mss = 1460;
    s.wscale = 7;
    s.sack_perm = true;
    s.ip_id = id;
    s.frag = 0;
    size_t n = pkt_build_tcp(&s, t->dg, sizeof(t->dg));
    ck_assert_uint_gt(n, 0);
    t->dglen = n - PKT_ETH_HLEN;
    return n;
}

static void listen80(struct tf *t)
{
    int l = stk_socket(t->tn.e, NULL);
    struct stk_sockaddr a = {.ip = 0, .port = 80};
    ck_assert_int_eq(stk_bind(t->tn.e, l, &a), 0);
    ck_assert_int_eq(stk_listen(t->tn.e, l, 8), 0);
}

static void expect_synack(struct tf *t)
{
    struct pkt_info p;
    ck_assert_int_eq(pkt_capture_pop_parse(&t->tn.cap, &p), PKT_OK);
    ck_assert_int_eq(p.kind, PKT_KIND_TCP);
    ck_assert_uint_eq(p.flags, PKT_TCP_SYN | PKT_TCP_ACK);
    ck_assert_uint_eq(p.ack, 1001);
    ck_assert(p.df); /* TCP keeps DF */
}

START_TEST(tcp_over_fragments)
{
    struct tf *t = tf_new();
    listen80(t);
    syn_datagram(t, 30);
    ck_assert_uint_gt(t->dglen - PKT_IP_HLEN, 24);
    frag(t, 16, (uint32_t)t->dglen - PKT_IP_HLEN - 16, false);
    frag(t, 0, 16, true);
    expect_synack(t);
    ck_assert_uint_eq(ctr(&t->tn)->ip_reasm_ok, 1);
    ck_assert_uint_eq(ctr(&t->tn)->tcp_syn_in, 1);
    tf_free(t);
}
END_TEST

struct steer_rec {
    int calls, take;
    uint8_t buf[MAXDG];
    size_t len;
};

static int steer_cb(void *ctx, const void *ip, size_t len)
{
    struct steer_rec *r = ctx;
    r->calls++;
    memcpy(r->buf, ip, len);
    r->len = len;
    return r->take;
}

START_TEST(steer_to_other_engine)
{
    static struct steer_rec r;
    memset(&r, 0, sizeof(r));
    r.take = 1;
    struct stk_config c;
    memset(&c, 0, sizeof(c));
    c.steer_ctx = &r;
    c.steer_ip = steer_cb;
    struct tf *t = tf_new_cfg(&c);
    listen80(t);
    syn_datagram(t, 31);
    frag(t, 0, 16, true);
    frag(t, 16, (uint32_t)t->dglen - PKT_IP_HLEN - 16, false);
    expect_none(&t->tn);
    ck_assert_int_eq(r.calls, 1);
    ck_assert_uint_eq(ctr(&t->tn)->ip_reasm_handoff, 1);
    /* What the other engine gets is the datagram as sent, with a valid header. */
    ck_assert_uint_eq(r.len, t->dglen);
    ck_assert_uint_eq(pkt_csum_fold(pkt_csum_add(0, r.buf, PKT_IP_HLEN)), 0);
    ck_assert_uint_eq(stk__get16(r.buf + 6), 0);
    ck_assert_mem_eq(r.buf + PKT_IP_HLEN, t->dg + PKT_ETH_HLEN + PKT_IP_HLEN,
                     t->dglen - PKT_IP_HLEN);
    /* ... and, fed to stk_input_ip, it is processed like any segment. */
    stk_input_ip(t->tn.e, t->tn.now, r.buf, r.len, 0);
    expect_synack(t);
    /* ICMP is never steered. */
    make_echo(t, 32, 2000, 32);
    piece(t, 0, 1480);
    piece(t, 1, 1480);
    expect_reply(t);
    ck_assert_int_eq(r.calls, 1);
    tf_free(t);
}
END_TEST

/* ---- Output ------------------------------------------------------------------------------ */

static int send_l4(struct tf *t, size_t len)
{
    static uint8_t blob[MAXDG];
    for (size_t i = 0; i < sizeof(blob); i++)
        blob[i] = (uint8_t)(i ^ (i >> 8));
    /* Three pieces cut at odd places, as a UDP header and a ring's two halves would be. */
    size_t a = len < 8 ? len : 8, b = (len - a) / 3;
    struct stk_iov iov[3] = {{blob, a}, {blob + a, b}, {blob + a + b, len - a - b}};
    return stk__ip_send_frags(t->tn.e, t->tn.now, PEER_IP, 17, iov, 3, len, 0);
}

START_TEST(send_frags_sizes)
{
    struct tf *t = tf_new();
    /* Fits: one packet, no MF, no DF. */
    ck_assert_int_eq(send_l4(t, 1480), 0);
    ck_assert_uint_eq(collect(t, false, 1500), 1500);
    ck_assert_uint_eq(ctr(&t->tn)->ip_frag_ok, 0);
    ck_assert_int_eq(send_l4(t, 0), 0);
    pkt_capture_clear(&t->tn.cap);
    /* One byte more: two fragments, the first of 1480 bytes. */
    ck_assert_int_eq(send_l4(t, 1481), 0);
    ck_assert_uint_eq(pkt_capture_count(&t->tn.cap), 2);
    ck_assert_uint_eq(pkt_capture_peek(&t->tn.cap, 0)->len, PKT_ETH_HLEN + 1500);
    ck_assert_uint_eq(collect(t, true, 1500), 1501);
    for (size_t i = 0; i < 1481; i++)
        ck_assert_uint_eq(t->out[PKT_IP_HLEN + i], (uint8_t)(i ^ (i >> 8)));
    /* The largest; then one byte too many. */
    ck_assert_int_eq(send_l4(t, MAXDG - PKT_IP_HLEN), 0);
    ck_assert_uint_eq(collect(t, true, 1500), MAXDG);
    ck_assert_int_eq(send_l4(t, MAXDG - PKT_IP_HLEN + 1), -EMSGSIZE);
    expect_none(&t->tn);
    ck_assert_uint_eq(ctr(&t->tn)->ip_frag_ok, 2);
    ck_assert_uint_eq(ctr(&t->tn)->ip_frag_creates, 2 + 45);
    /* Each datagram has its own id. */
    ck_assert_int_eq(send_l4(t, 3000), 0);
    uint16_t id1 = stk__get16(pkt_capture_peek(&t->tn.cap, 0)->data + PKT_ETH_HLEN + 4);
    pkt_capture_clear(&t->tn.cap);
    ck_assert_int_eq(send_l4(t, 3000), 0);
    ck_assert_uint_ne(stk__get16(pkt_capture_peek(&t->tn.cap, 0)->data + PKT_ETH_HLEN + 4), id1);
    tf_free(t);
}
END_TEST

START_TEST(send_frags_mtu_576)
{
    struct stk_config c;
    memset(&c, 0, sizeof(c));
    c.mtu = 576;
    struct tf *t = tf_new_cfg(&c);
    ck_assert_int_eq(send_l4(t, 5000), 0);
    /* 552 bytes per fragment: 556 would not be a multiple of 8. */
    ck_assert_uint_eq(pkt_capture_peek(&t->tn.cap, 0)->len, PKT_ETH_HLEN + 20 + 552);
    ck_assert_uint_eq(collect(t, true, 576), 5020);
    tf_free(t);
}
END_TEST

START_TEST(send_frags_behind_arp)
{
    struct stk_config c;
    memset(&c, 0, sizeof(c));
    struct tf *t = tf_new_cfg(&c);
    const uint32_t other = PKT_IP(198, 18, 0, 9);
    const uint8_t other_mac[6] = {0x02, 0, 0, 0, 0, 9};
    static uint8_t blob[20000];
    struct stk_iov iov = {blob, sizeof(blob)};
    /* 14 fragments wait for the neighbour, and all go out once it answers. */
    ck_assert_int_eq(stk__ip_send_frags(t->tn.e, t->tn.now, other, 17, &iov, 1, sizeof(blob), 0),
                     0);
    struct pkt_info p;
    ck_assert_int_eq(pkt_capture_pop_parse(&t->tn.cap, &p), PKT_OK);
    ck_assert_int_eq(p.kind, PKT_KIND_ARP);
    expect_none(&t->tn);
    /* 64 frames per neighbour: 14 + 45 fit; 14 more do not, and none of them is queued. */
    static uint8_t blob2[MAXDG - 20];
    struct stk_iov big = {blob2, sizeof(blob2)};
    ck_assert_int_eq(stk__ip_send_frags(t->tn.e, t->tn.now, other, 17, &big, 1, big.len, 0), 0);
    ck_assert_int_eq(stk__ip_send_frags(t->tn.e, t->tn.now, other, 17, &iov, 1, sizeof(blob), 0),
                     -ENOBUFS);
    ck_assert_uint_eq(ctr(&t->tn)->ip_frag_fails, 1);
    expect_none(&t->tn);
    uint8_t f[64];
    size_t n = pkt_build_arp_reply(f, sizeof(f), other_mac, other, US_MAC, US_IP);
    inject(&t->tn, f, n);
    ck_assert_uint_eq(pkt_capture_count(&t->tn.cap), 14 + 45);
    for (size_t i = 0; i < 14 + 45; i++) {
        const struct pkt_frame *fr = pkt_capture_peek(&t->tn.cap, i);
        ck_assert_mem_eq(fr->data, other_mac, 6);
        ck_assert_uint_eq(pkt_parse(fr->data, fr->len, &p), PKT_E_IP_FRAG);
        ck_assert_uint_eq(p.frag_offset, (i < 14 ? i : i - 14) * 1480);
        ck_assert_uint_eq(p.dst_ip, other);
    }
    tf_free(t);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("ipfrag");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, in_order);
    tcase_add_test(tc, reversed);
    tcase_add_test(tc, shuffled);
    tcase_add_test(tc, duplicates_tolerated);
    tcase_add_test(tc, overlap_drops_datagram);
    tcase_add_test(tc, bad_fragments);
    tcase_add_test(tc, max_size);
    tcase_add_test(tc, timeout_sends_time_exceeded);
    tcase_add_test(tc, time_exceeded_not_for_icmp_errors);
    tcase_add_test(tc, memory_limit);
    tcase_add_test(tc, tiny_fragments_bounded);
    tcase_add_test(tc, tcp_over_fragments);
    tcase_add_test(tc, steer_to_other_engine);
    tcase_add_test(tc, send_frags_sizes);
    tcase_add_test(tc, send_frags_mtu_576);
    tcase_add_test(tc, send_frags_behind_arp);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

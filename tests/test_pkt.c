/*
 * test_pkt.c - tests of the test harness itself (tests/lib): the frame builders and parser,
 * the capture queue with its offload emulation, the wire's fault injection and clock, and
 * the pcap writer. Nothing here needs the engine, so these run before TCP exists; a harness
 * bug would otherwise show up as a confusing engine failure.
 */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pkt.h"
#include "wire.h"

static uint8_t buf[70000];

static size_t build_syn(struct pkt_tcp_spec *s)
{
    pkt_tcp_spec_init(s);
    s->sport = 40000;
    s->dport = 80;
    s->seq = 0xfffffff0u;
    s->flags = PKT_TCP_SYN;
    s->window = 64240;
    s->mss = 1460;
    s->wscale = 7;
    s->sack_perm = true;
    s->ts = true;
    s->tsval = 123456789;
    s->tsecr = 0;
    s->ip_id = 0x1234;
    return pkt_build_tcp(s, buf, sizeof(buf));
}

/* ---- Checksum ------------------------------------------------------------------------- */

START_TEST(csum_rfc1071_example)
{
    /* The worked example of RFC 1071 section 3: the sum is ddf2. */
    static const uint8_t d[] = {0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7};
    ck_assert_uint_eq(pkt_csum_fold(pkt_csum_add(0, d, sizeof(d))), (uint16_t)~0xddf2);
    /* An odd trailing byte counts as the high half of a word. */
    static const uint8_t o[] = {0x12, 0x34, 0x56};
    ck_assert_uint_eq(pkt_csum_fold(pkt_csum_add(0, o, 3)), (uint16_t) ~(0x1234 + 0x5600));
    /* Splitting at an even offset does not change the sum. */
    ck_assert_uint_eq(pkt_csum_fold(pkt_csum_add(pkt_csum_add(0, d, 4), d + 4, 4)),
                      pkt_csum_fold(pkt_csum_add(0, d, 8)));
}
END_TEST

/* ---- TCP round trips ------------------------------------------------------------------ */

START_TEST(tcp_syn_roundtrip)
{
    struct pkt_tcp_spec s;
    struct pkt_info p;
    size_t len = build_syn(&s);

    /* MSS(4) SACKOK+TS(12) NOP+WS(4): Linux's 20 option bytes. */
    ck_assert_uint_eq(len, 14 + 20 + 20 + 20);
    ck_assert_int_eq(pkt_parse(buf, len, &p), PKT_OK);
    ck_assert_int_eq(p.kind, PKT_KIND_TCP);
    ck_assert_mem_eq(p.src_mac, wire_mac_a, 6);
    ck_assert_mem_eq(p.dst_mac, wire_mac_b, 6);
    ck_assert_uint_eq(p.ethertype, PKT_ETH_P_IP);
    ck_assert_uint_eq(p.ip_hlen, 20);
    ck_assert_uint_eq(p.ip_len, 60);
    ck_assert_uint_eq(p.ip_id, 0x1234);
    ck_assert(p.df && !p.mf);
    ck_assert_uint_eq(p.ttl, 64);
    ck_assert_uint_eq(p.proto, PKT_IP_PROTO_TCP);
    ck_assert_uint_eq(p.src_ip, WIRE_IP_A);
    ck_assert_uint_eq(p.dst_ip, WIRE_IP_B);
    ck_assert_uint_eq(p.sport, 40000);
    ck_assert_uint_eq(p.dport, 80);
    ck_assert_uint_eq(p.seq, 0xfffffff0u);
    ck_assert_uint_eq(p.ack, 0);
    ck_assert_uint_eq(p.flags, PKT_TCP_SYN);
    ck_assert_uint_eq(p.window, 64240);
    ck_assert_uint_eq(p.tcp_hlen, 40);
    ck_assert(p.opt.has_mss);
    ck_assert_uint_eq(p.opt.mss, 1460);
    ck_assert_int_eq(p.opt.wscale, 7);
    ck_assert(p.opt.sack_perm);
    ck_assert(p.opt.ts);
    ck_assert_uint_eq(p.opt.tsval, 123456789);
    ck_assert_uint_eq(p.opt.tsecr, 0);
    ck_assert_int_eq(p.opt.nsack, 0);
    ck_assert_int_eq(p.opt.unknown, 0);
    ck_assert_uint_eq(p.payload_len, 0);
    ck_assert_uint_eq(p.eth_pad, 0);
    /* The exact layout, as Linux sends it. */
    static const uint8_t want[] = {2,    4,    0x05, 0xb4, 4, 2, 8, 10, 0x07, 0x5b,
                                   0xcd, 0x15, 0,    0,    0, 0, 1, 3,  3,    7};
    ck_assert_uint_eq(p.tcp_opts_len, sizeof(want));
    ck_assert_mem_eq(p.tcp_opts_raw, want, sizeof(want));

    char line[256];
    pkt_format(&p, line, sizeof(line));
    ck_assert_msg(strstr(line, "198.18.0.1:40000 > 198.18.0.2:80 [S]") != NULL, "%s", line);
    ck_assert_msg(strstr(line, "mss 1460,sackOK,TS 123456789:0,wscale 7") != NULL, "%s", line);
}
END_TEST

START_TEST(tcp_data_sack_roundtrip)
{
    struct pkt_tcp_spec s;
    struct pkt_info p;
    uint8_t data[1000];

    for (size_t i = 0; i < sizeof(data); i++)
        data[i] = (uint8_t)(i * 7);
    pkt_tcp_spec_init(&s);
    s.sport = 5001;
    s.dport = 33000;
    s.seq = 1000;
    s.ack = 0x80000001u;
    s.flags = PKT_TCP_ACK | PKT_TCP_PSH | PKT_TCP_URG | PKT_TCP_FIN;
    s.urp = 7;
    s.window = 1;
    s.ts = true;
    s.tsval = 0xffffffffu;
    s.tsecr = 42;
    s.nsack = 3;
    for (int i = 0; i < 3; i++) {
        s.sack[i].start = 0xfffff000u + (uint32_t)i * 100;
        s.sack[i].end = s.sack[i].start + 50;
    }
    s.payload = data;
    s.payload_len = sizeof(data);
    s.tos = 0x10;
    s.ttl = 3;
    s.frag = 0;
    size_t len = pkt_build_tcp(&s, buf, sizeof(buf));
    ck_assert_uint_eq(len, 14 + 20 + 20 + 40 + 1000);
    ck_assert_int_eq(pkt_parse(buf, len, &p), PKT_OK);
    ck_assert_uint_eq(p.flags, PKT_TCP_ACK | PKT_TCP_PSH | PKT_TCP_URG | PKT_TCP_FIN);
    ck_assert_uint_eq(p.urp, 7);
    ck_assert_uint_eq(p.ack, 0x80000001u);
    ck_assert_uint_eq(p.tos, 0x10);
    ck_assert_uint_eq(p.ttl, 3);
    ck_assert(!p.df);
    ck_assert(!p.opt.has_mss && p.opt.wscale == -1 && !p.opt.sack_perm);
    ck_assert(p.opt.ts);
    ck_assert_uint_eq(p.opt.tsval, 0xffffffffu);
    ck_assert_uint_eq(p.opt.tsecr, 42);
    ck_assert_int_eq(p.opt.nsack, 3);
    for (int i = 0; i < 3; i++) {
        ck_assert_uint_eq(p.opt.sack[i].start, s.sack[i].start);
        ck_assert_uint_eq(p.opt.sack[i].end, s.sack[i].end);
    }
    ck_assert_int_eq(p.opt.nops, 4);
    ck_assert_uint_eq(p.payload_len, sizeof(data));
    ck_assert_mem_eq(p.payload, data, sizeof(data));

    /* Four SACK blocks fit without timestamps, not with them. */
    s.ts = false;
    s.nsack = 4;
    s.sack[3].start = 1;
    s.sack[3].end = 2;
    len = pkt_build_tcp(&s, buf, sizeof(buf));
    ck_assert_int_eq(pkt_parse(buf, len, &p), PKT_OK);
    ck_assert_int_eq(p.opt.nsack, 4);
    ck_assert_uint_eq(p.opt.sack[3].end, 2);
    s.ts = true;
    ck_assert_uint_eq(pkt_build_tcp(&s, buf, sizeof(buf)), 0);
    /* Too small a buffer is refused rather than overrun. */
    s.ts = false;
    ck_assert_uint_eq(pkt_build_tcp(&s, buf, 100), 0);
}
END_TEST

START_TEST(tcp_option_variants)
{
    struct pkt_tcp_spec s;
    struct pkt_info p;
    size_t len;

    /* Each option alone, and wscale 0 (present) versus -1 (absent). */
    pkt_tcp_spec_init(&s);
    s.flags = PKT_TCP_SYN;
    s.wscale = 0;
    len = pkt_build_tcp(&s, buf, sizeof(buf));
    ck_assert_int_eq(pkt_parse(buf, len, &p), PKT_OK);
    ck_assert_int_eq(p.opt.wscale, 0);
    ck_assert_uint_eq(p.tcp_hlen, 24);

    pkt_tcp_spec_init(&s);
    s.sack_perm = true;
    len = pkt_build_tcp(&s, buf, sizeof(buf));
    ck_assert_int_eq(pkt_parse(buf, len, &p), PKT_OK);
    ck_assert(p.opt.sack_perm && !p.opt.ts && p.opt.wscale == -1 && !p.opt.has_mss);

    pkt_tcp_spec_init(&s);
    len = pkt_build_tcp(&s, buf, sizeof(buf));
    ck_assert_uint_eq(len, 54);
    ck_assert_int_eq(pkt_parse(buf, len, &p), PKT_OK);
    ck_assert_uint_eq(p.tcp_opts_len, 0);

    /* Raw option bytes: an unknown kind is skipped by its length; EOL ends the list. */
    static const uint8_t raw1[] = {30, 4, 0xaa, 0xbb, 2, 4, 0x02, 0x18, 0, 9, 9, 9};
    s.raw_opts = raw1;
    s.raw_opts_len = sizeof(raw1);
    s.mss = 999; /* ignored: raw bytes replace the option fields */
    len = pkt_build_tcp(&s, buf, sizeof(buf));
    ck_assert_int_eq(pkt_parse(buf, len, &p), PKT_OK);
    ck_assert_int_eq(p.opt.unknown, 1);
    ck_assert_uint_eq(p.opt.mss, 536);
    ck_assert(p.opt.eol);

    /* Malformed lists. */
    static const uint8_t bad_mss_len[] = {2, 3, 5, 1};
    static const uint8_t zero_len[] = {30, 0, 1, 1};
    static const uint8_t overrun[] = {1, 1, 8, 10};
    static const uint8_t no_len[] = {1, 1, 1, 30};
    static const uint8_t bad_sack[] = {1, 1, 5, 6, 0, 0, 0, 0};
    static const uint8_t bad_ts[] = {8, 8, 0, 0, 0, 0, 0, 0};
    static const uint8_t bad_ws[] = {3, 4, 1, 1};
    static const uint8_t bad_sp[] = {4, 3, 1, 1};
    const uint8_t *bads[] = {bad_mss_len, zero_len, overrun, no_len,
                             bad_sack,    bad_ts,   bad_ws,  bad_sp};
    size_t lens[] = {sizeof(bad_mss_len), sizeof(zero_len), sizeof(overrun), sizeof(no_len),
                     sizeof(bad_sack),    sizeof(bad_ts),   sizeof(bad_ws),  sizeof(bad_sp)};
    for (size_t i = 0; i < sizeof(bads) / sizeof(bads[0]); i++) {
        s.raw_opts = bads[i];
        s.raw_opts_len = lens[i];
        len = pkt_build_tcp(&s, buf, sizeof(buf));
        ck_assert_uint_ne(len, 0);
        ck_assert_msg(pkt_parse(buf, len, &p) == PKT_E_TCP_OPT, "case %zu", i);
        /* The header fields before the failing layer are still there. */
        ck_assert_uint_eq(p.dst_ip, WIRE_IP_B);
    }
}
END_TEST

START_TEST(tcp_defects_rejected)
{
    struct pkt_tcp_spec s;
    struct pkt_info p;
    size_t len;
    uint8_t data[10] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};

#define BUILD_AND_EXPECT(err)                                                                      \
    do {                                                                                           \
        len = pkt_build_tcp(&s, buf, sizeof(buf));                                                 \
        ck_assert_uint_ne(len, 0);                                                                 \
        int rc_ = pkt_parse(buf, len, &p);                                                         \
        ck_assert_msg(rc_ == (err), "got %s, want %s", pkt_strerror(rc_), pkt_strerror(err));      \
    } while (0)

    build_syn(&s);
    s.payload = data;
    s.payload_len = sizeof(data);
    BUILD_AND_EXPECT(PKT_OK);

    s.bad_ip_csum = true;
    BUILD_AND_EXPECT(PKT_E_IP_CSUM);
    s.bad_ip_csum = false;

    s.bad_tcp_csum = true;
    BUILD_AND_EXPECT(PKT_E_TCP_CSUM);
    s.bad_tcp_csum = false;

    s.truncate = 1;
    BUILD_AND_EXPECT(PKT_E_IP_LEN);
    s.truncate = 0;

    s.ip_len_delta = 1;
    BUILD_AND_EXPECT(PKT_E_IP_LEN);
    /* A shorter IP length cuts the segment, so its checksum no longer matches. */
    s.ip_len_delta = -1;
    BUILD_AND_EXPECT(PKT_E_TCP_CSUM);
    s.ip_len_delta = -1000;
    BUILD_AND_EXPECT(PKT_E_IP_LEN);
    s.ip_len_delta = 0;

    s.ip_ihl = 4;
    BUILD_AND_EXPECT(PKT_E_IP_HLEN);
    /* 60 header bytes leave 10 of the 70 for TCP. */
    s.ip_ihl = 15;
    BUILD_AND_EXPECT(PKT_E_TCP_SHORT);
    s.ip_len_delta = -30; /* total length 40: the header claims more than the packet */
    BUILD_AND_EXPECT(PKT_E_IP_HLEN);
    s.ip_len_delta = 0;
    s.ip_ihl = 0;

    s.tcp_doff = 4;
    BUILD_AND_EXPECT(PKT_E_TCP_HLEN);
    s.tcp_doff = 15;
    BUILD_AND_EXPECT(PKT_E_TCP_HLEN);
    s.tcp_doff = 0;

    s.frag = PKT_IP_MF;
    BUILD_AND_EXPECT(PKT_E_IP_FRAG);
    ck_assert(p.mf && !p.df);
    s.frag = PKT_IP_DF | 10;
    BUILD_AND_EXPECT(PKT_E_IP_FRAG);
    ck_assert_uint_eq(p.frag_offset, 80);
    s.frag = PKT_IP_DF;

    /* IP options are carried (padded to 4 with EOL) and reported. */
    static const uint8_t ra[] = {0x94, 4, 0, 0, 1, 1, 0x07}; /* router alert, NOPs, RR kind */
    s.ip_opts = ra;
    s.ip_opts_len = sizeof(ra);
    BUILD_AND_EXPECT(PKT_OK);
    ck_assert_uint_eq(p.ip_hlen, 28);
    ck_assert_uint_eq(p.ip_opts_len, 8);
    ck_assert_mem_eq(p.ip_opts, ra, sizeof(ra));
    ck_assert_uint_eq(p.ip_opts[7], 0);
    ck_assert_uint_eq(p.payload_len, sizeof(data));
    s.ip_opts = NULL;
    s.ip_opts_len = 0;

    /* Link padding is not part of the packet. */
    s.payload_len = 0;
    s.mss = 0;
    s.ts = s.sack_perm = false;
    s.wscale = -1;
    s.eth_pad = true;
    BUILD_AND_EXPECT(PKT_OK);
    ck_assert_uint_eq(len, 60);
    ck_assert_uint_eq(p.eth_pad, 6);
    ck_assert_uint_eq(p.payload_len, 0);
#undef BUILD_AND_EXPECT
}
END_TEST

/* Any shortening of a valid frame is an error, never a crash or a success (ASan build). */
START_TEST(every_truncation_rejected)
{
    struct pkt_tcp_spec s;
    struct pkt_info p;
    size_t len = build_syn(&s);

    for (size_t n = 0; n < len; n++) {
        uint8_t *copy = malloc(n ? n : 1);
        memcpy(copy, buf, n);
        ck_assert_msg(pkt_parse(copy, n, &p) < 0, "length %zu accepted", n);
        free(copy);
    }
}
END_TEST

/* The Internet checksum catches every single-bit error, and Ethernet has no checksum here:
 * so flipping any bit past the MAC addresses must be rejected. */
START_TEST(every_bit_flip_rejected)
{
    struct pkt_tcp_spec s;
    struct pkt_info p;
    uint8_t data[33];

    memset(data, 0x5a, sizeof(data));
    build_syn(&s);
    s.payload = data;
    s.payload_len = sizeof(data);
    size_t len = pkt_build_tcp(&s, buf, sizeof(buf));
    for (size_t bit = 12 * 8; bit < len * 8; bit++) {
        buf[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        ck_assert_msg(pkt_parse(buf, len, &p) < 0, "bit %zu flip accepted", bit);
        buf[bit / 8] ^= (uint8_t)(1u << (bit % 8));
    }
    ck_assert_int_eq(pkt_parse(buf, len, &p), PKT_OK);
}
END_TEST

START_TEST(other_protocols)
{
    struct pkt_info p;
    size_t len;

    len = pkt_build_arp_request(buf, sizeof(buf), wire_mac_a, WIRE_IP_A, WIRE_IP_B);
    ck_assert_uint_eq(len, 42);
    ck_assert_int_eq(pkt_parse(buf, len, &p), PKT_OK);
    ck_assert_int_eq(p.kind, PKT_KIND_ARP);
    ck_assert_mem_eq(p.dst_mac, pkt_mac_broadcast, 6);
    ck_assert_uint_eq(p.arp_op, PKT_ARP_REQUEST);
    ck_assert_mem_eq(p.arp_sha, wire_mac_a, 6);
    ck_assert_mem_eq(p.arp_tha, pkt_mac_zero, 6);
    ck_assert_uint_eq(p.arp_spa, WIRE_IP_A);
    ck_assert_uint_eq(p.arp_tpa, WIRE_IP_B);
    ck_assert_int_eq(pkt_parse(buf, len - 1, &p), PKT_E_ARP_SHORT);
    buf[14 + 4] = 8; /* hardware address length */
    ck_assert_int_eq(pkt_parse(buf, len, &p), PKT_E_ARP_FORMAT);

    len = pkt_build_arp_reply(buf, sizeof(buf), wire_mac_b, WIRE_IP_B, wire_mac_a, WIRE_IP_A);
    ck_assert_int_eq(pkt_parse(buf, len, &p), PKT_OK);
    ck_assert_uint_eq(p.arp_op, PKT_ARP_REPLY);
    ck_assert_mem_eq(p.dst_mac, wire_mac_a, 6);
    ck_assert_mem_eq(p.src_mac, wire_mac_b, 6);
    ck_assert_mem_eq(p.arp_tha, wire_mac_a, 6);
    ck_assert_uint_eq(p.arp_spa, WIRE_IP_B);

    static const char ping[] = "abcdefghijklmnopqrstuvw";
    len = pkt_build_icmp_echo(buf, sizeof(buf), wire_mac_a, wire_mac_b, WIRE_IP_A, WIRE_IP_B,
                              0xbeef, 9, ping, 23);
    ck_assert_int_eq(pkt_parse(buf, len, &p), PKT_OK);
    ck_assert_int_eq(p.kind, PKT_KIND_ICMP);
    ck_assert_uint_eq(p.icmp_type, PKT_ICMP_ECHO);
    ck_assert_uint_eq(p.icmp_code, 0);
    ck_assert_uint_eq(p.icmp_id, 0xbeef);
    ck_assert_uint_eq(p.icmp_seq, 9);
    ck_assert_uint_eq(p.payload_len, 23);
    ck_assert_mem_eq(p.payload, ping, 23);
    buf[len - 1] ^= 0x40;
    ck_assert_int_eq(pkt_parse(buf, len, &p), PKT_E_ICMP_CSUM);

    struct pkt_icmp_spec ic = {.type = PKT_ICMP_ECHOREPLY, .id = 1, .bad_icmp_csum = true};
    len = pkt_build_icmp(&ic, buf, sizeof(buf));
    ck_assert_int_eq(pkt_parse(buf, len, &p), PKT_E_ICMP_CSUM);
    ic.bad_icmp_csum = false;
    len = pkt_build_icmp(&ic, buf, sizeof(buf));
    ck_assert_int_eq(pkt_parse(buf, len, &p), PKT_OK);
    ck_assert_uint_eq(p.ttl, 64);

    /* An unknown ethertype, and an IPv4 protocol we do not parse. */
    buf[12] = 0x86;
    buf[13] = 0xdd;
    ck_assert_int_eq(pkt_parse(buf, len, &p), PKT_E_ETH_TYPE);
    len = pkt_build_icmp(&ic, buf, sizeof(buf));
    buf[14 + 9] = 17;
    buf[14 + 10] = buf[14 + 11] = 0;
    uint16_t c = pkt_csum_fold(pkt_csum_add(0, buf + 14, 20));
    buf[14 + 10] = (uint8_t)(c >> 8);
    buf[14 + 11] = (uint8_t)c;
    ck_assert_int_eq(pkt_parse(buf, len, &p), PKT_E_IP_PROTO);
    ck_assert_int_eq(p.kind, PKT_KIND_IP);
    buf[14] = 0x65;
    ck_assert_int_eq(pkt_parse(buf, len, &p), PKT_E_IP_VERSION);
    ck_assert_int_eq(pkt_parse(buf, 5, &p), PKT_E_ETH_SHORT);
    ck_assert_int_eq(pkt_parse(buf, 20, &p), PKT_E_IP_SHORT);
    ck_assert_str_eq(pkt_strerror(PKT_E_TCP_CSUM), "bad TCP checksum");
}
END_TEST

/* ---- Capture and offload emulation ---------------------------------------------------- */

START_TEST(capture_gathers_and_queues)
{
    struct pkt_capture c;
    struct pkt_tcp_spec s;
    struct pkt_info p;
    size_t len = build_syn(&s);

    pkt_capture_init(&c);
    /* Three pieces, as the engine hands a header and ring data. */
    struct stk_iov iov[3] = {{buf, 10}, {buf + 10, 30}, {buf + 40, len - 40}};
    ck_assert_int_eq(pkt_capture_tx(&c, iov, 3, NULL), 0);
    ck_assert_uint_eq(pkt_capture_count(&c), 1);
    const struct pkt_frame *f = pkt_capture_peek(&c, 0);
    ck_assert_uint_eq(f->len, len);
    ck_assert_mem_eq(f->data, buf, len);
    ck_assert_ptr_null(pkt_capture_peek(&c, 1));
    ck_assert_int_eq(pkt_capture_pop_parse(&c, &p), PKT_OK);
    ck_assert_uint_eq(p.opt.mss, 1460);
    ck_assert_int_eq(pkt_capture_pop_parse(&c, &p), PKT_E_EMPTY);
    ck_assert_ptr_null(pkt_capture_pop(&c));

    /* Bounded: the 1025th frame is refused the way a full device ring refuses it. */
    for (int i = 0; i < PKT_CAP_MAX_FRAMES; i++) {
        s.seq = (uint32_t)i;
        size_t l = pkt_build_tcp(&s, buf, sizeof(buf));
        ck_assert_int_eq(pkt_capture_add(&c, buf, l), 0);
    }
    ck_assert_int_eq(pkt_capture_add(&c, buf, len), -ENOBUFS);
    ck_assert_uint_eq(c.full_drops, 1);
    ck_assert_uint_eq(pkt_capture_peek(&c, 5)->index, 6);
    for (int i = 0; i < 600; i++) {
        ck_assert_int_eq(pkt_capture_pop_parse(&c, &p), PKT_OK);
        ck_assert_uint_eq(p.seq, (uint32_t)i);
    }
    /* Wrap around the ring. */
    for (int i = 0; i < 500; i++)
        ck_assert_int_eq(pkt_capture_add(&c, buf, len), 0);
    ck_assert_uint_eq(pkt_capture_count(&c), PKT_CAP_MAX_FRAMES - 600 + 500);
    ck_assert_int_eq(pkt_capture_pop_parse(&c, &p), PKT_OK);
    ck_assert_uint_eq(p.seq, 600);

    c.fail_next = 2;
    ck_assert_int_eq(pkt_capture_tx(&c, iov, 3, NULL), -ENOBUFS);
    ck_assert_int_eq(pkt_capture_tx(&c, iov, 3, NULL), -ENOBUFS);
    pkt_capture_clear(&c);
    ck_assert_int_eq(pkt_capture_tx(&c, iov, 3, NULL), 0);
    ck_assert_uint_eq(pkt_capture_count(&c), 1);
    pkt_capture_fini(&c);
}
END_TEST

/* Turns a finished frame into what an engine using checksum offload would hand over. */
static void make_partial(uint8_t *f, size_t len, bool ip, bool tcp, bool tso_style)
{
    uint8_t *iph = f + 14;
    size_t ihl = (size_t)(iph[0] & 15) * 4;
    uint8_t *t = iph + ihl;
    size_t seg = len - 14 - ihl;

    if (ip)
        iph[10] = iph[11] = 0;
    if (tcp) {
        uint32_t src =
            (uint32_t)iph[12] << 24 | (uint32_t)iph[13] << 16 | (uint32_t)iph[14] << 8 | iph[15];
        uint32_t dst =
            (uint32_t)iph[16] << 24 | (uint32_t)iph[17] << 16 | (uint32_t)iph[18] << 8 | iph[19];
        uint16_t ps = (uint16_t)~pkt_csum_fold(
            pkt_csum_pseudo(src, dst, PKT_IP_PROTO_TCP, tso_style ? 0 : (uint16_t)seg));
        t[16] = (uint8_t)(ps >> 8);
        t[17] = (uint8_t)ps;
    }
}

static int emit_to_capture(void *ctx, const uint8_t *seg, size_t len)
{
    return pkt_capture_add(ctx, seg, len);
}

START_TEST(capture_completes_offloads)
{
    struct pkt_capture c;
    struct pkt_tcp_spec s;
    struct pkt_info p;
    uint8_t data[4000];

    for (size_t i = 0; i < sizeof(data); i++)
        data[i] = (uint8_t)(i ^ (i >> 8));
    pkt_capture_init(&c);
    build_syn(&s);
    s.flags = PKT_TCP_ACK | PKT_TCP_PSH;
    s.mss = 0;
    s.wscale = -1;
    s.sack_perm = false;
    s.payload = data;
    s.payload_len = 1000;
    size_t len = pkt_build_tcp(&s, buf, sizeof(buf));
    make_partial(buf, len, true, true, false);
    ck_assert_int_ne(pkt_parse(buf, len, &p), PKT_OK);

    struct stk_iov iov = {buf, len};
    struct stk_txmeta m = {
        .flags = STK_TX_IP_CSUM | STK_TX_TCP_CSUM, .l2_len = 14, .l3_len = 20, .l4_len = 32};
    ck_assert_int_eq(pkt_capture_tx(&c, &iov, 1, &m), 0);
    const struct pkt_frame *f = pkt_capture_pop(&c);
    ck_assert(f->partial_ok);
    ck_assert_uint_eq(f->offloads, STK_TX_IP_CSUM | STK_TX_TCP_CSUM);
    ck_assert_int_eq(pkt_parse(f->data, f->len, &p), PKT_OK);
    ck_assert_uint_eq(c.offload_frames, 1);
    ck_assert_uint_eq(c.bad_frames, 0);

    /* A wrong pseudo-header sum must not be papered over. */
    len = pkt_build_tcp(&s, buf, sizeof(buf));
    make_partial(buf, len, false, true, false);
    buf[14 + 20 + 17] ^= 0x10;
    m.flags = STK_TX_TCP_CSUM;
    ck_assert_int_eq(pkt_capture_tx(&c, &iov, 1, &m), 0);
    f = pkt_capture_pop(&c);
    ck_assert(!f->partial_ok);
    ck_assert_int_eq(pkt_parse(f->data, f->len, &p), PKT_E_TCP_CSUM);

    /* Metadata that disagrees with the frame is counted. */
    len = pkt_build_tcp(&s, buf, sizeof(buf));
    m.l4_len = 20;
    ck_assert_int_eq(pkt_capture_tx(&c, &iov, 1, &m), 0);
    ck_assert_uint_eq(c.bad_frames, 1);
    pkt_capture_clear(&c);

    /* TSO: recorded as one frame, checksum made valid, not split. */
    s.payload_len = 4000;
    s.flags = PKT_TCP_ACK | PKT_TCP_PSH | PKT_TCP_FIN | PKT_TCP_CWR;
    s.seq = 0xfffffc00u;
    len = pkt_build_tcp(&s, buf, sizeof(buf));
    make_partial(buf, len, true, true, true);
    iov.len = len;
    m = (struct stk_txmeta){.flags = STK_TX_IP_CSUM | STK_TX_TCP_CSUM | STK_TX_TSO,
                            .l2_len = 14,
                            .l3_len = 20,
                            .l4_len = 32,
                            .tso_mss = 1448};
    ck_assert_int_eq(pkt_capture_tx(&c, &iov, 1, &m), 0);
    ck_assert_uint_eq(c.tso_frames, 1);
    f = pkt_capture_pop(&c);
    ck_assert(f->partial_ok);
    ck_assert_uint_eq(f->tso_mss, 1448);
    ck_assert_uint_eq(f->len, len);
    ck_assert_int_eq(pkt_parse(f->data, f->len, &p), PKT_OK);
    ck_assert_uint_eq(p.payload_len, 4000);

    /* ... and split the way a device would. */
    struct pkt_capture segs;
    pkt_capture_init(&segs);
    ck_assert_int_eq(pkt_tso_segment(f->data, f->len, 1448, emit_to_capture, &segs), 3);
    uint32_t seq = 0xfffffc00u;
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(pkt_capture_pop_parse(&segs, &p), PKT_OK);
        ck_assert_uint_eq(p.seq, seq);
        ck_assert_uint_eq(p.ip_id, 0x1234 + i);
        ck_assert_uint_eq(p.payload_len, i < 2 ? 1448 : 4000 - 2 * 1448);
        ck_assert_mem_eq(p.payload, data + (seq - 0xfffffc00u), p.payload_len);
        ck_assert_uint_eq(!!(p.flags & PKT_TCP_FIN), i == 2);
        ck_assert_uint_eq(!!(p.flags & PKT_TCP_PSH), i == 2);
        ck_assert_uint_eq(!!(p.flags & PKT_TCP_CWR), i == 0);
        ck_assert(p.opt.ts);
        seq += (uint32_t)p.payload_len;
    }
    pkt_capture_fini(&segs);
    pkt_capture_fini(&c);
}
END_TEST

/* ---- Wire: fault injection ------------------------------------------------------------ */

/* Sends n small frames, each carrying its index, one per microsecond; drains the link. */
struct drained {
    uint32_t *order; /* indices in delivery order */
    stk_time_t *sent, *at;
    size_t n;
    size_t corrupt_bits_ok; /* corrupted frames that differ from the original in one bit */
};

static void drain_run(struct wire_link *l, uint32_t n, struct drained *d)
{
    uint8_t f[64];
    stk_time_t now = 1000;

    d->order = calloc(4 * (size_t)n + 16, sizeof(*d->order));
    d->at = calloc(4 * (size_t)n + 16, sizeof(*d->at));
    d->sent = calloc((size_t)n, sizeof(*d->sent));
    d->n = 0;
    d->corrupt_bits_ok = 0;
    for (uint32_t i = 0; i <= n; i++) {
        struct wire_frame *wf;
        if (i < n) {
            memset(f, 0, sizeof(f));
            memcpy(f, &i, sizeof(i));
            d->sent[i] = now;
            ck_assert_int_eq(wire_link_send(l, now, f, sizeof(f)), 0);
        } else {
            now = UINT64_MAX - 1; /* drain everything, held frames included */
        }
        while ((wf = wire_link_pop(l, now)) != NULL) {
            uint32_t idx;
            ck_assert_uint_eq(wf->len, sizeof(f));
            if (wf->flags & WIRE_F_CORRUPT) {
                /* Past the index the frame is all zeros, so a flip there shows as the one
                 * set bit; with none set, the flip hit the index, which is then unknown. */
                int bits = 0;
                for (size_t k = 4; k < sizeof(f); k++)
                    bits += __builtin_popcount(wf->data[k]);
                if (bits <= 1)
                    d->corrupt_bits_ok++;
                if (bits != 1) {
                    free(wf);
                    continue;
                }
            }
            memcpy(&idx, wf->data, 4);
            ck_assert_uint_lt(idx, n);
            d->at[d->n] = wf->t;
            d->order[d->n++] = idx;
            free(wf);
        }
        now++;
    }
    ck_assert_uint_eq(wire_link_inflight(l), 0);
}

static void drained_free(struct drained *d)
{
    free(d->order);
    free(d->at);
    free(d->sent);
}

START_TEST(wire_loss_rate)
{
    struct wire_link l;
    struct drained d;

    wire_link_init(&l, 12345);
    l.fault.loss = 0.05;
    drain_run(&l, 100000, &d);
    ck_assert_uint_eq(l.st.frames, 100000);
    ck_assert_msg(l.st.lost >= 4000 && l.st.lost <= 6000, "lost %llu",
                  (unsigned long long)l.st.lost);
    ck_assert_uint_eq(d.n, 100000 - l.st.lost);
    /* Nothing else happened, and order is kept. */
    ck_assert_uint_eq(l.st.duplicated + l.st.corrupted + l.st.reordered, 0);
    for (size_t i = 1; i < d.n; i++)
        ck_assert_uint_gt(d.order[i], d.order[i - 1]);
    drained_free(&d);
    wire_link_fini(&l);
}
END_TEST

START_TEST(wire_dup_corrupt_rates)
{
    struct wire_link l;
    struct drained d;

    wire_link_init(&l, 777);
    l.fault.dup = 0.10;
    l.fault.corrupt = 0.03;
    drain_run(&l, 100000, &d);
    ck_assert_msg(l.st.duplicated >= 9000 && l.st.duplicated <= 11000, "dup %llu",
                  (unsigned long long)l.st.duplicated);
    /* Copies are corrupted independently, so the rate is per delivered frame. */
    uint64_t copies = 100000 + l.st.duplicated;
    ck_assert_msg(l.st.corrupted >= copies * 25 / 1000 && l.st.corrupted <= copies * 35 / 1000,
                  "corrupt %llu", (unsigned long long)l.st.corrupted);
    ck_assert_uint_eq(d.corrupt_bits_ok, l.st.corrupted);
    drained_free(&d);
    wire_link_fini(&l);
}
END_TEST

START_TEST(wire_deterministic)
{
    struct wire_link a, b, c;
    struct drained da, db, dc;

    wire_link_init(&a, 99);
    wire_link_init(&b, 99);
    wire_link_init(&c, 100);
    struct wire_fault f = {.loss = 0.1, .dup = 0.1, .reorder = 0.1, .jitter_us = 50};
    a.fault = b.fault = c.fault = f;
    drain_run(&a, 5000, &da);
    drain_run(&b, 5000, &db);
    drain_run(&c, 5000, &dc);
    ck_assert_uint_eq(da.n, db.n);
    ck_assert_mem_eq(da.order, db.order, da.n * sizeof(*da.order));
    ck_assert_mem_eq(da.at, db.at, da.n * sizeof(*da.at));
    ck_assert(dc.n != da.n || memcmp(da.order, dc.order, da.n * sizeof(*da.order)) != 0);
    drained_free(&da);
    drained_free(&db);
    drained_free(&dc);
    wire_link_fini(&a);
    wire_link_fini(&b);
    wire_link_fini(&c);
}
END_TEST

static size_t inversions(const struct drained *d)
{
    size_t inv = 0;
    for (size_t i = 1; i < d->n; i++)
        inv += d->order[i] < d->order[i - 1];
    return inv;
}

START_TEST(wire_reorders)
{
    struct wire_link l;
    struct drained d;

    /* Held frames are overtaken by the next one: adjacent swaps, nothing lost. */
    wire_link_init(&l, 5);
    l.fault.reorder = 0.1;
    drain_run(&l, 10000, &d);
    ck_assert_uint_eq(d.n, 10000);
    ck_assert_msg(l.st.reordered >= 800 && l.st.reordered <= 1200, "%llu",
                  (unsigned long long)l.st.reordered);
    size_t inv = inversions(&d);
    ck_assert_msg(inv >= l.st.reordered * 8 / 10 && inv <= l.st.reordered, "inv %zu", inv);
    char *seen = calloc(10000, 1);
    for (size_t i = 0; i < d.n; i++) {
        ck_assert(!seen[d.order[i]]);
        seen[d.order[i]] = 1;
        /* Overtaken by at most the next couple of frames. */
        ck_assert_uint_le(d.order[i] > i ? d.order[i] - i : i - d.order[i], 3);
    }
    free(seen);
    drained_free(&d);
    wire_link_fini(&l);

    /* A fixed extra delay lets a frame be overtaken by several. */
    wire_link_init(&l, 6);
    l.fault.reorder = 0.05;
    l.fault.reorder_us = 20;
    drain_run(&l, 10000, &d);
    ck_assert_uint_eq(d.n, 10000);
    ck_assert_uint_gt(inversions(&d), 0);
    size_t far = 0;
    for (size_t i = 0; i < d.n; i++)
        far += i > d.order[i] && i - d.order[i] >= 10;
    ck_assert_uint_gt(far, 0);
    drained_free(&d);
    wire_link_fini(&l);

    /* The last frame of a burst is late, not lost. */
    wire_link_init(&l, 7);
    l.fault.reorder = 1.0;
    uint8_t f[60] = {0};
    ck_assert_int_eq(wire_link_send(&l, 100, f, sizeof(f)), 0);
    ck_assert_uint_eq(wire_link_next(&l), 100 + 10 * STK_US_PER_MS);
    ck_assert_ptr_null(wire_link_pop(&l, 100 + 10 * STK_US_PER_MS - 1));
    struct wire_frame *wf = wire_link_pop(&l, 100 + 10 * STK_US_PER_MS);
    ck_assert_ptr_nonnull(wf);
    ck_assert(wf->flags & WIRE_F_REORDERED);
    free(wf);
    wire_link_fini(&l);
}
END_TEST

START_TEST(wire_delay_jitter_rate_down)
{
    struct wire_link l;
    struct drained d;
    uint8_t f[1000] = {0};
    struct wire_frame *wf;

    /* Delay + jitter: within bounds, and jitter never reorders. */
    wire_link_init(&l, 8);
    l.fault.delay_us = 1000;
    l.fault.jitter_us = 500;
    drain_run(&l, 5000, &d);
    ck_assert_uint_eq(d.n, 5000);
    for (size_t i = 0; i < d.n; i++) {
        ck_assert_uint_eq(d.order[i], i);
        ck_assert_uint_ge(d.at[i], d.sent[i] + 1000);
        if (i)
            ck_assert_uint_ge(d.at[i], d.at[i - 1]);
    }
    size_t max_late = 0;
    for (size_t i = 0; i < d.n; i++)
        if (d.at[i] - d.sent[i] > max_late)
            max_late = d.at[i] - d.sent[i];
    ck_assert_uint_le(max_late, 1500);
    ck_assert_uint_gt(max_late, 1400);
    drained_free(&d);
    wire_link_fini(&l);

    /* Nothing comes out early. */
    wire_link_init(&l, 9);
    l.fault.delay_us = 250;
    ck_assert_int_eq(wire_link_send(&l, 1000, f, 100), 0);
    ck_assert_uint_eq(wire_link_next(&l), 1250);
    ck_assert_ptr_null(wire_link_pop(&l, 1249));
    wf = wire_link_pop(&l, 1250);
    ck_assert_ptr_nonnull(wf);
    ck_assert_uint_eq(wf->t, 1250);
    free(wf);
    ck_assert_uint_eq(wire_link_next(&l), UINT64_MAX);
    wire_link_fini(&l);

    /* 1 MB/s: 1000-byte frames sent together leave 1 ms apart; the backlog (counting the
     * frame being serialised) may reach 3000 bytes, so of ten frames three get through. */
    wire_link_init(&l, 10);
    l.fault.rate = 1000000;
    l.fault.queue_bytes = 3000;
    for (int i = 0; i < 10; i++)
        ck_assert_int_eq(wire_link_send(&l, 0, f, sizeof(f)), 0);
    ck_assert_uint_eq(l.st.qdrops, 7);
    for (int i = 0; i < 3; i++) {
        wf = wire_link_pop(&l, UINT64_MAX - 1);
        ck_assert_ptr_nonnull(wf);
        ck_assert_uint_eq(wf->t, (stk_time_t)(i + 1) * 1000);
        free(wf);
    }
    ck_assert_ptr_null(wire_link_pop(&l, UINT64_MAX - 1));
    wire_link_fini(&l);

    /* Link down for [2000, 3000): frames sent or due in the window are lost. */
    wire_link_init(&l, 11);
    l.fault.delay_us = 100;
    l.fault.down_from = 2000;
    l.fault.down_until = 3000;
    stk_time_t sends[] = {1800, 1899, 1900, 2500, 2999, 3000};
    for (size_t i = 0; i < 6; i++)
        wire_link_send(&l, sends[i], f, 60);
    ck_assert_uint_eq(l.st.down, 3);
    stk_time_t want[] = {1900, 1999, 3100};
    for (size_t i = 0; i < 3; i++) {
        wf = wire_link_pop(&l, UINT64_MAX - 1);
        ck_assert_ptr_nonnull(wf);
        ck_assert_uint_eq(wf->t, want[i]);
        free(wf);
    }
    ck_assert_uint_eq(wire_link_inflight(&l), 0);
    wire_link_fini(&l);
}
END_TEST

START_TEST(rng_basics)
{
    struct wire_rng r;
    int buckets[10] = {0};

    wire_rng_seed(&r, 0);
    for (int i = 0; i < 100000; i++) {
        double u = wire_rng_unit(&r);
        ck_assert(u >= 0 && u < 1);
        buckets[(int)(u * 10)]++;
        ck_assert_uint_lt(wire_rng_below(&r, 7), 7);
    }
    for (int i = 0; i < 10; i++)
        ck_assert_msg(buckets[i] > 9500 && buckets[i] < 10500, "bucket %d: %d", i, buckets[i]);
    ck_assert_uint_eq(wire_rng_below(&r, 0), 0);

    /* Secrets: deterministic per seed, different per side and per seed. */
    struct stk_config a1 = {0}, a2 = {0}, b1 = {0}, a3 = {0};
    wire_default_config(&a1, WIRE_A, 42);
    wire_default_config(&a2, WIRE_A, 42);
    wire_default_config(&b1, WIRE_B, 42);
    wire_default_config(&a3, WIRE_A, 43);
    ck_assert_mem_eq(a1.secret, a2.secret, 16);
    ck_assert(memcmp(a1.secret, b1.secret, 16) != 0);
    ck_assert(memcmp(a1.secret, a3.secret, 16) != 0);
    ck_assert_uint_eq(a1.ip, WIRE_IP_A);
    ck_assert_uint_eq(b1.ip, WIRE_IP_B);
    ck_assert_uint_eq(a1.prefix, 24);
    ck_assert_mem_eq(b1.mac, wire_mac_b, 6);
    /* Fields a test chose are kept. */
    struct stk_config k = {.ip = PKT_IP(198, 19, 1, 1), .prefix = 16, .secret = {1}};
    wire_default_config(&k, WIRE_B, 1);
    ck_assert_uint_eq(k.ip, PKT_IP(198, 19, 1, 1));
    ck_assert_uint_eq(k.prefix, 16);
    ck_assert_uint_eq(k.secret[0], 1);
    ck_assert_uint_eq(k.secret[1], 0);
}
END_TEST

/* ---- pcap ----------------------------------------------------------------------------- */

static uint32_t le32_at(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static size_t slurp(const char *path, uint8_t *out, size_t cap)
{
    FILE *f = fopen(path, "rb");
    ck_assert_ptr_nonnull(f);
    size_t n = fread(out, 1, cap, f);
    fclose(f);
    return n;
}

START_TEST(pcap_format)
{
    char path[] = "/tmp/test_pkt_XXXXXX";
    int fd = mkstemp(path);
    struct wire_pcap pc;
    static uint8_t file[4096];

    ck_assert_int_ge(fd, 0);
    close(fd);
    ck_assert_int_eq(wire_pcap_open(&pc, path), 0);
    struct pkt_tcp_spec s;
    size_t len = build_syn(&s);
    ck_assert_int_eq(wire_pcap_write(&pc, 3 * STK_US_PER_S + 250, buf, len), 0);
    wire_pcap_close(&pc);

    size_t n = slurp(path, file, sizeof(file));
    ck_assert_uint_eq(n, 24 + 16 + len);
    static const uint8_t magic[] = {0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0};
    ck_assert_mem_eq(file, magic, 8);
    ck_assert_uint_eq(le32_at(file + 8), 0);  /* thiszone */
    ck_assert_uint_eq(le32_at(file + 12), 0); /* sigfigs */
    ck_assert_uint_eq(le32_at(file + 16), 262144);
    ck_assert_uint_eq(le32_at(file + 20), 1); /* Ethernet */
    ck_assert_uint_eq(le32_at(file + 24), 3);
    ck_assert_uint_eq(le32_at(file + 28), 250);
    ck_assert_uint_eq(le32_at(file + 32), len);
    ck_assert_uint_eq(le32_at(file + 36), len);
    ck_assert_mem_eq(file + 40, buf, len);
    unlink(path);
    ck_assert_int_lt(wire_pcap_open(&pc, "/nonexistent-dir/x.pcap"), 0);
}
END_TEST

/* ---- The wire, with raw endpoints (no engine needed) ---------------------------------- */

static int count_at_least(void *ctx)
{
    struct pkt_capture *c = ((struct pkt_capture **)ctx)[0];
    size_t want = (size_t)(uintptr_t)((void **)ctx)[1];
    return pkt_capture_count(c) >= want;
}

struct tap_log {
    int n;
    int drop_nth;
    int dirs[16];
};

static int tap_fn(void *ctx, int dir, stk_time_t t, uint8_t *frame, size_t len)
{
    struct tap_log *tl = ctx;
    (void)t;
    (void)frame;
    (void)len;
    if (tl->n < 16)
        tl->dirs[tl->n] = dir;
    return ++tl->n == tl->drop_nth;
}

START_TEST(wire_raw_endpoints)
{
    char path[] = "/tmp/test_wire_XXXXXX";
    int fd = mkstemp(path);
    struct wire *w;
    struct wire_opts o = {.seed = 1, .raw = {true, true}, .pcap = path};

    ck_assert_int_ge(fd, 0);
    close(fd);
    ck_assert_int_eq(wire_create(&w, &o), 0);
    ck_assert_uint_eq(w->now, STK_US_PER_S);
    ck_assert_uint_eq(wire_next_event(w), UINT64_MAX);
    ck_assert_int_eq(wire_step(w), 0);
    wire_fault(w, WIRE_A_TO_B)->delay_us = 100;
    wire_fault(w, WIRE_B_TO_A)->delay_us = 300;

    struct tap_log tl = {.drop_nth = 3};
    wire_set_tap(w, tap_fn, &tl);
    uint8_t f[128];
    size_t len = pkt_build_arp_request(f, sizeof(f), wire_mac_a, WIRE_IP_A, WIRE_IP_B);
    ck_assert_int_eq(wire_inject(w, WIRE_A, f, len), 0);
    ck_assert_int_eq(wire_inject(w, WIRE_B, f, len), 0);
    ck_assert_int_eq(wire_inject(w, WIRE_A, f, len), 0);
    ck_assert_uint_eq(wire_next_event(w), STK_US_PER_S + 100);
    ck_assert_int_eq(wire_run_until(w, STK_US_PER_S + 200), 0);
    ck_assert_uint_eq(w->now, STK_US_PER_S + 200);
    ck_assert_uint_eq(pkt_capture_count(w->ep[WIRE_B].cap), 2);
    ck_assert_uint_eq(pkt_capture_count(w->ep[WIRE_A].cap), 0);

    /* The third delivery (B -> A at +300) is dropped by the tap. */
    void *ctx[2] = {w->ep[WIRE_A].cap, (void *)(uintptr_t)1};
    ck_assert_int_eq(wire_run(w, count_at_least, ctx, 10 * STK_US_PER_MS), -ETIMEDOUT);
    ck_assert_uint_eq(w->now, STK_US_PER_S + 200 + 10 * STK_US_PER_MS);
    ck_assert_int_eq(tl.n, 3);
    ck_assert_int_eq(tl.dirs[0], WIRE_A_TO_B);
    ck_assert_int_eq(tl.dirs[2], WIRE_B_TO_A);
    ck_assert_uint_eq(wire_stats(w, WIRE_B_TO_A)->tap_drops, 1);
    ck_assert_uint_eq(wire_stats(w, WIRE_A_TO_B)->delivered, 2);

    ck_assert_int_eq(wire_inject(w, WIRE_B, f, len), 0);
    ck_assert_int_eq(wire_run(w, count_at_least, ctx, 10 * STK_US_PER_MS), 0);
    struct pkt_info p;
    ck_assert_int_eq(pkt_capture_pop_parse(w->ep[WIRE_A].cap, &p), PKT_OK);
    ck_assert_uint_eq(p.arp_tpa, WIRE_IP_B);

    /* A raw endpoint's tx() acts as a NIC: TSO is split into wire frames. */
    struct pkt_tcp_spec s;
    static uint8_t big[8000], payload[5000];
    pkt_tcp_spec_init(&s);
    s.flags = PKT_TCP_ACK;
    s.payload = payload;
    s.payload_len = sizeof(payload);
    size_t blen = pkt_build_tcp(&s, big, sizeof(big));
    struct stk_iov iov = {big, blen};
    struct stk_txmeta m = {.flags = STK_TX_TSO, .l2_len = 14, .l3_len = 20, .tso_mss = 1460};
    struct wire_endpoint *ea = &w->ep[WIRE_A];
    ck_assert_int_eq(ea->cfg.tx(ea->cfg.io_ctx, &iov, 1, &m), 0);
    ck_assert_int_eq(wire_run_for(w, STK_US_PER_MS), 0);
    ck_assert_uint_eq(pkt_capture_count(w->ep[WIRE_B].cap), 2 + 4);
    ck_assert_uint_eq(wire_stats(w, WIRE_A_TO_B)->tso_frames, 1);
    ck_assert_uint_eq(ea->offload_bad, 0);
    pkt_capture_clear(w->ep[WIRE_B].cap);

    /* tx_fail makes the device refuse frames. */
    wire_fault(w, WIRE_A_TO_B)->tx_fail = 1.0;
    ck_assert_int_eq(ea->cfg.tx(ea->cfg.io_ctx, &iov, 1, NULL), -ENOBUFS);
    ck_assert_uint_eq(wire_stats(w, WIRE_A_TO_B)->tx_fails, 1);
    wire_fault(w, WIRE_A_TO_B)->tx_fail = 0;

    /* The step limit stops a runaway test. */
    w->step_limit = w->steps + 2;
    for (int i = 0; i < 5; i++)
        wire_inject(w, WIRE_A, f, len);
    ck_assert_int_eq(wire_run_for(w, STK_US_PER_MS), -ELOOP);
    ck_assert_uint_eq(pkt_capture_count(w->ep[WIRE_B].cap), 2);
    wire_destroy(w);

    /* Every delivered frame is in the pcap file (the tap-dropped one is not). */
    static uint8_t file[8192];
    size_t n = slurp(path, file, sizeof(file));
    size_t off = 24, recs = 0;
    while (off + 16 <= n) {
        off += 16 + le32_at(file + off + 8);
        recs++;
    }
    ck_assert_uint_eq(off, n);
    ck_assert_uint_eq(recs, 2 + 1 + 4 + 2);
    unlink(path);
}
END_TEST

/* The wire drives real engines: each announces itself with a gratuitous ARP at creation,
 * which the other must receive as a well-formed frame at the delay's end. */
struct arp_seen {
    int frames, bad, arp;
    stk_time_t last;
};

static int arp_tap(void *ctx, int dir, stk_time_t t, uint8_t *frame, size_t len)
{
    struct arp_seen *a = ctx;
    struct pkt_info p;

    (void)dir;
    a->frames++;
    a->last = t;
    if (pkt_parse(frame, len, &p) != PKT_OK)
        a->bad++;
    else if (p.kind == PKT_KIND_ARP)
        a->arp++;
    return 0;
}

START_TEST(wire_with_engines)
{
    struct wire *w;
    struct stk_config cfg = {.mtu = 1500};
    struct wire_opts o = {.seed = 3, .cfg = {&cfg, NULL}};
    struct arp_seen seen = {0};

    ck_assert_int_eq(wire_create(&w, &o), 0);
    ck_assert_ptr_nonnull(wire_engine(w, WIRE_A));
    ck_assert_ptr_nonnull(wire_engine(w, WIRE_B));
    ck_assert_uint_eq(w->ep[WIRE_A].cfg.ip, WIRE_IP_A);
    ck_assert_uint_eq(w->ep[WIRE_A].cfg.mtu, 1500);
    wire_set_tap(w, arp_tap, &seen);
    /* The announcements were sent during creation, before the tap was set. */
    ck_assert_uint_eq(wire_stats(w, WIRE_A_TO_B)->frames, 1);
    ck_assert_uint_eq(wire_stats(w, WIRE_B_TO_A)->frames, 1);
    wire_fault(w, WIRE_A_TO_B)->delay_us = 700;
    ck_assert_int_eq(wire_run_for(w, 10 * STK_US_PER_MS), 0);
    ck_assert_int_eq(seen.frames, 2);
    ck_assert_int_eq(seen.arp, 2);
    ck_assert_int_eq(seen.bad, 0);
    ck_assert_uint_eq(w->ep[WIRE_A].timer_stalls + w->ep[WIRE_B].timer_stalls, 0);
    wire_destroy(w);
}
END_TEST

static Suite *pkt_suite(void)
{
    Suite *s = suite_create("pkt");
    TCase *tc = tcase_create("pkt");
    tcase_add_test(tc, csum_rfc1071_example);
    tcase_add_test(tc, tcp_syn_roundtrip);
    tcase_add_test(tc, tcp_data_sack_roundtrip);
    tcase_add_test(tc, tcp_option_variants);
    tcase_add_test(tc, tcp_defects_rejected);
    tcase_add_test(tc, every_truncation_rejected);
    tcase_add_test(tc, every_bit_flip_rejected);
    tcase_add_test(tc, other_protocols);
    tcase_add_test(tc, capture_gathers_and_queues);
    tcase_add_test(tc, capture_completes_offloads);
    suite_add_tcase(s, tc);

    TCase *tw = tcase_create("wire");
    tcase_set_timeout(tw, 60);
    tcase_add_test(tw, rng_basics);
    tcase_add_test(tw, wire_loss_rate);
    tcase_add_test(tw, wire_dup_corrupt_rates);
    tcase_add_test(tw, wire_deterministic);
    tcase_add_test(tw, wire_reorders);
    tcase_add_test(tw, wire_delay_jitter_rate_down);
    tcase_add_test(tw, pcap_format);
    tcase_add_test(tw, wire_raw_endpoints);
    tcase_add_test(tw, wire_with_engines);
    suite_add_tcase(s, tw);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(pkt_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

/*
 * fuzz_frag.c - libFuzzer target for IPv4 and IPv6 reassembly (stack/ipfrag.c).
 *
 * One engine (198.18.0.1 and 2001:2::1, MTU 1500) with a listener on port 80 and small
 * reassembly bounds (64 KiB, 8 datagrams, shared by both families) so the limits are
 * reached. The peer is 198.18.0.2 and 2001:2::2 (whose MAC the engine learns from a
 * neighbour solicitation). The input is a sequence of records [op][len lo][len hi][len
 * bytes]:
 *
 *   op 0  a raw fragment: b0 picks the IP id (one of 8, so datagrams collide), b1 the
 *         protocol (ICMP, TCP, UDP, or b1 itself), b2..b3 the raw flags/offset field, the
 *         rest is the fragment's data; header checksum valid.
 *   op 1  a whole echo request cut up: b0 id, b1..b2 data length, b3 fragment size in
 *         units of 8, then each byte sends piece (byte % pieces) - in any order, repeated
 *         or missing - so complete datagrams up to 64 KiB are reached.
 *   op 2  advance the clock: b0 seconds (0..63) or, with bit 7, b0 & 0x7f milliseconds.
 *   op 3  a raw Ethernet frame.
 *   op 4  a raw IPv6 fragment: b0 picks the identification (one of 8), b1 the Fragment
 *         header's Next Header (ICMPv6, TCP, UDP, or b1 itself), b2..b3 its raw offset/M
 *         field, the rest is the fragment's data.
 *   op 5  an ICMPv6 echo request cut up as op 1 (replies beyond the MTU come back as
 *         fragments).
 *
 * Every frame the engine sends must parse (fragments: valid headers, offsets multiples of
 * 8, at most the MTU, never DF; IPv6: the payload length exact, fragments from one of our
 * addresses with offsets in 8s, full multiples of 8 but the last, ending within 65535).
 * After the input, 31 s later every datagram must have expired and its memory returned;
 * ASan checks the rest, and leaks at destroy.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pkt.h"
#include "stk_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FZ_MTU     1500
#define FZ_RECORDS 2048

static const uint8_t our_mac[6] = {0x02, 0, 0, 0, 0, 0x01};
static const uint8_t peer_mac[6] = {0x02, 0, 0, 0, 0, 0x02};
#define OUR_IP  PKT_IP(198, 18, 0, 1)
#define PEER_IP PKT_IP(198, 18, 0, 2)
static const uint8_t our_ip6[16] = {0x20, 0x01, 0x00, 0x02, [15] = 1};
static const uint8_t peer_ip6[16] = {0x20, 0x01, 0x00, 0x02, [15] = 2};

struct fz {
    struct stk_engine *e;
    stk_time_t now;
    uint8_t tx[PKT_ETH_HLEN + FZ_MTU];
    uint8_t dg[PKT_ETH_HLEN + 65535];
    uint8_t fr[PKT_ETH_HLEN + 65535];
};

static int fz_tx(void *ctx, const struct stk_iov *iov, int n, const struct stk_txmeta *meta)
{
    struct fz *f = ctx;
    (void)meta;
    size_t len = 0;
    for (int i = 0; i < n; i++) {
        if (iov[i].len > sizeof(f->tx) - len)
            __builtin_trap(); /* beyond the MTU */
        memcpy(f->tx + len, iov[i].base, iov[i].len);
        len += iov[i].len;
    }
    if (len >= 14 && f->tx[12] == 0x86 && f->tx[13] == 0xdd) {
        const uint8_t *ip = f->tx + 14;
        if (len < 54 || (ip[0] >> 4) != 6 || memcmp(f->tx + 6, our_mac, 6) != 0 ||
            stk__get16(ip + 4) != len - 54)
            __builtin_trap();
        if (ip[6] == 44) {
            size_t plen = len - 54;
            uint16_t fo = stk__get16(ip + 42);
            if (plen < 8 || memcmp(ip + 8, our_ip6, 16) != 0 || ((fo & 1) && (plen - 8) % 8) ||
                (fo & 0xfff8u) + plen - 8 > 65535)
                __builtin_trap();
        }
        return 0;
    }
    struct pkt_info p;
    int rc = pkt_parse(f->tx, len, &p);
    if (rc == PKT_E_IP_FRAG) {
        if (p.df || p.src_ip != OUR_IP || p.frag_offset % 8 ||
            (p.mf && (p.ip_len - p.ip_hlen) % 8) || p.frag_offset + (size_t)p.ip_len > 65535)
            __builtin_trap();
        return 0;
    }
    if (rc != PKT_OK) {
        fprintf(stderr, "engine sent a malformed frame: %s\n", pkt_strerror(rc));
        __builtin_trap();
    }
    if (memcmp(p.src_mac, our_mac, 6) != 0)
        __builtin_trap();
    return 0;
}

static void put_hdr(uint8_t *fr, uint16_t id, uint8_t proto, uint16_t frag, size_t plen)
{
    memcpy(fr, our_mac, 6);
    memcpy(fr + 6, peer_mac, 6);
    stk__put16(fr + 12, PKT_ETH_P_IP);
    uint8_t *ip = fr + PKT_ETH_HLEN;
    ip[0] = 0x45;
    ip[1] = 0;
    stk__put16(ip + 2, (uint16_t)(PKT_IP_HLEN + plen));
    stk__put16(ip + 4, id);
    stk__put16(ip + 6, frag);
    ip[8] = 64;
    ip[9] = proto;
    stk__put16(ip + 10, 0);
    stk__put32(ip + 12, PEER_IP);
    stk__put32(ip + 16, OUR_IP);
    stk__put16(ip + 10, pkt_csum_fold(pkt_csum_add(0, ip, PKT_IP_HLEN)));
}

static void op_raw_frag(struct fz *f, const uint8_t *p, size_t len)
{
    if (len < 4)
        return;
    static const uint8_t protos[3] = {PKT_IP_PROTO_ICMP, PKT_IP_PROTO_TCP, 17};
    uint8_t proto = p[1] < 3 ? protos[p[1]] : p[1];
    size_t plen = len - 4;
    if (plen > FZ_MTU - PKT_IP_HLEN)
        plen = FZ_MTU - PKT_IP_HLEN;
    put_hdr(f->fr, (uint16_t)(p[0] & 7), proto, stk__get16(p + 2), plen);
    memcpy(f->fr + PKT_ETH_HLEN + PKT_IP_HLEN, p + 4, plen);
    stk_input(f->e, f->now, f->fr, PKT_ETH_HLEN + PKT_IP_HLEN + plen, 0);
}

static void op_cut(struct fz *f, const uint8_t *p, size_t len)
{
    if (len < 4)
        return;
    size_t dlen = ((size_t)p[1] | (size_t)p[2] << 8) % (65535 - 28 + 1);
    uint32_t per = 8u * (1u + p[3] % 185u);
    static uint8_t data[65535];
    for (size_t i = 0; i < dlen; i++)
        data[i] = (uint8_t)(i * 13 + p[0]);
    size_t n = pkt_build_icmp_echo(f->dg, sizeof(f->dg), peer_mac, our_mac, PEER_IP, OUR_IP, 1, 2,
                                   data, dlen);
    if (n == 0)
        __builtin_trap();
    uint32_t pay = (uint32_t)(n - PKT_ETH_HLEN - PKT_IP_HLEN);
    uint32_t pieces = (pay + per - 1) / per;
    for (size_t k = 4; k < len; k++) {
        uint32_t i = p[k] % pieces;
        uint32_t off = i * per, plen = pay - off < per ? pay - off : per;
        bool mf = off + plen < pay;
        put_hdr(f->fr, (uint16_t)(p[0] & 7), PKT_IP_PROTO_ICMP,
                (uint16_t)((mf ? PKT_IP_MF : 0) | off / 8), plen);
        memcpy(f->fr + PKT_ETH_HLEN + PKT_IP_HLEN, f->dg + PKT_ETH_HLEN + PKT_IP_HLEN + off, plen);
        stk_input(f->e, f->now, f->fr, PKT_ETH_HLEN + PKT_IP_HLEN + plen, 0);
    }
}

/* Ethernet and IPv6 from the peer to us around a Fragment header (nh, fo, id) and plen
 * bytes of data already at fr + 62. */
static size_t put_hdr6(uint8_t *fr, uint32_t id, uint8_t nh, uint16_t fo, size_t plen)
{
    memcpy(fr, our_mac, 6);
    memcpy(fr + 6, peer_mac, 6);
    stk__put16(fr + 12, 0x86dd);
    uint8_t *ip = fr + PKT_ETH_HLEN;
    memset(ip, 0, 40);
    ip[0] = 0x60;
    stk__put16(ip + 4, (uint16_t)(8 + plen));
    ip[6] = 44;
    ip[7] = 64;
    memcpy(ip + 8, peer_ip6, 16);
    memcpy(ip + 24, our_ip6, 16);
    ip[40] = nh;
    ip[41] = 0;
    stk__put16(ip + 42, fo);
    stk__put32(ip + 44, id);
    return PKT_ETH_HLEN + 48 + plen;
}

static uint32_t csum6(const uint8_t *src, const uint8_t *dst, uint8_t nh, const uint8_t *m,
                      size_t len)
{
    uint8_t tail[8] = {0};
    stk__put32(tail, (uint32_t)len);
    tail[7] = nh;
    uint32_t s = pkt_csum_add(0, src, 16);
    s = pkt_csum_add(s, dst, 16);
    s = pkt_csum_add(s, tail, 8);
    return pkt_csum_add(s, m, len);
}

static void op_raw_frag6(struct fz *f, const uint8_t *p, size_t len)
{
    if (len < 4)
        return;
    static const uint8_t nhs[3] = {58, PKT_IP_PROTO_TCP, 17};
    uint8_t nh = p[1] < 3 ? nhs[p[1]] : p[1];
    size_t plen = len - 4;
    if (plen > FZ_MTU - 48)
        plen = FZ_MTU - 48;
    memcpy(f->fr + PKT_ETH_HLEN + 48, p + 4, plen);
    size_t n = put_hdr6(f->fr, p[0] & 7u, nh, stk__get16(p + 2), plen);
    stk_input(f->e, f->now, f->fr, n, 0);
}

static void op_cut6(struct fz *f, const uint8_t *p, size_t len)
{
    if (len < 4)
        return;
    size_t mlen = 8 + ((size_t)p[1] | (size_t)p[2] << 8) % (65535 - 8 + 1);
    uint32_t per = 8u * (1u + p[3] % 181u);
    uint8_t *m = f->dg;
    m[0] = 128;
    m[1] = 0;
    stk__put16(m + 2, 0);
    stk__put32(m + 4, 0x00010002);
    for (size_t i = 8; i < mlen; i++)
        m[i] = (uint8_t)(i * 13 + p[0]);
    stk__put16(m + 2, pkt_csum_fold(csum6(peer_ip6, our_ip6, 58, m, mlen)));
    uint32_t pieces = (uint32_t)((mlen + per - 1) / per);
    for (size_t k = 4; k < len; k++) {
        uint32_t i = p[k] % pieces;
        uint32_t off = i * per, plen = (uint32_t)mlen - off < per ? (uint32_t)mlen - off : per;
        bool mf = off + plen < mlen;
        memcpy(f->fr + PKT_ETH_HLEN + 48, m + off, plen);
        size_t n = put_hdr6(f->fr, 0x100u + (p[0] & 7u), 58, (uint16_t)(off | (mf ? 1 : 0)), plen);
        stk_input(f->e, f->now, f->fr, n, 0);
    }
}

/* The peer solicits our global address: the engine learns its MAC. */
static void learn_peer6(struct fz *f)
{
    uint8_t *fr = f->fr, *ip = fr + PKT_ETH_HLEN, *m = ip + 40;
    static const uint8_t group[16] = {0xff, 0x02, [11] = 1, [12] = 0xff, [15] = 1};
    const uint8_t gmac[6] = {0x33, 0x33, 0xff, 0, 0, 1};
    memcpy(fr, gmac, 6);
    memcpy(fr + 6, peer_mac, 6);
    stk__put16(fr + 12, 0x86dd);
    memset(ip, 0, 40 + 32);
    ip[0] = 0x60;
    stk__put16(ip + 4, 32);
    ip[6] = 58;
    ip[7] = 255;
    memcpy(ip + 8, peer_ip6, 16);
    memcpy(ip + 24, group, 16);
    m[0] = 135;
    memcpy(m + 8, our_ip6, 16);
    m[24] = 1;
    m[25] = 1;
    memcpy(m + 26, peer_mac, 6);
    stk__put16(m + 2, pkt_csum_fold(csum6(peer_ip6, group, 58, m, 32)));
    stk_input(f->e, f->now, fr, PKT_ETH_HLEN + 40 + 32, 0);
}

static void advance(struct fz *f, stk_time_t dt)
{
    f->now += dt;
    stk_poll(f->e, f->now);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct fz f;
    memset(&f, 0, sizeof(f));
    f.now = STK_US_PER_S;

    struct stk_config cfg = {0};
    memcpy(cfg.mac, our_mac, 6);
    cfg.ip = OUR_IP;
    cfg.prefix = 24;
    memcpy(cfg.ip6, our_ip6, 16);
    cfg.ip6_prefix = 64;
    cfg.mtu = FZ_MTU;
    for (int i = 0; i < 16; i++)
        cfg.secret[i] = (uint8_t)(0xa5 ^ i * 29);
    cfg.io_ctx = &f;
    cfg.tx = fz_tx;
    cfg.max_socks = 8;
    cfg.sndbuf = cfg.rcvbuf = 4096;
    cfg.ipfrag_mem = 64 * 1024;
    cfg.ipfrag_max = 8;
    if (stk_engine_create(&cfg, f.now, &f.e) != 0)
        __builtin_trap();
    uint8_t arp[64];
    size_t an = pkt_build_arp_request(arp, sizeof(arp), peer_mac, PEER_IP, OUR_IP);
    stk_input(f.e, f.now, arp, an, 0);
    learn_peer6(&f);
    int l = stk_socket(f.e, NULL);
    struct stk_sockaddr any80 = {.ip = 0, .port = 80};
    stk_bind(f.e, l, &any80);
    stk_listen(f.e, l, 8);

    for (int rec = 0; rec < FZ_RECORDS && size >= 3; rec++) {
        uint8_t op = data[0];
        size_t len = (size_t)data[1] | (size_t)data[2] << 8;
        data += 3;
        size -= 3;
        if (len > size)
            len = size;
        switch (op % 6) {
        case 0:
            op_raw_frag(&f, data, len);
            break;
        case 1:
            op_cut(&f, data, len);
            break;
        case 2: {
            uint8_t b = len ? data[0] : 1;
            advance(&f, (b & 0x80) ? (stk_time_t)(b & 0x7f) * STK_US_PER_MS
                                   : (stk_time_t)(b & 63) * STK_US_PER_S);
            break;
        }
        case 3:
            stk_input(f.e, f.now, data, len, 0);
            break;
        case 4:
            op_raw_frag6(&f, data, len);
            break;
        default:
            op_cut6(&f, data, len);
            break;
        }
        uint32_t count;
        if (stk__ipfrag_mem(f.e, &count) > cfg.ipfrag_mem || count > cfg.ipfrag_max)
            __builtin_trap();
        data += len;
        size -= len;
    }
    /* Everything still held expires within the reassembly time, and its memory returns. */
    advance(&f, 30 * STK_US_PER_S);
    uint32_t count;
    if (stk__ipfrag_mem(f.e, &count) != 0 || count != 0 ||
        stk__ipfrag_next_timer(f.e) != UINT64_MAX)
        __builtin_trap();
    stk_engine_destroy(f.e);
    return 0;
}

/*
 * pkt.c - frame builders, the validating parser and the capture queue (see pkt.h).
 *
 * Nothing here uses the engine's internals: byte order helpers and the checksum are written
 * again on purpose, so that a bug in stack/ cannot hide itself by being in the oracle too.
 */
#include "pkt.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const uint8_t pkt_mac_broadcast[6] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
const uint8_t pkt_mac_zero[6] = {0};

static const uint8_t mac_a[6] = {0x02, 0, 0, 0, 0, 0x01};
static const uint8_t mac_b[6] = {0x02, 0, 0, 0, 0, 0x02};

static uint16_t rd16(const uint8_t *p)
{
    return (uint16_t)(p[0] << 8 | p[1]);
}

static uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void wr16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static void wr32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* ---- Checksums (RFC 1071) ------------------------------------------------------------- */

/* The plainest possible form: big-endian 16-bit words added into a 32-bit accumulator,
 * carries folded now and then so it cannot overflow. Slow and obviously right is the point. */
uint32_t pkt_csum_add(uint32_t sum, const void *data, size_t len)
{
    const uint8_t *p = data;
    size_t i;

    for (i = 0; i + 1 < len; i += 2) {
        sum += (uint32_t)(p[i] << 8 | p[i + 1]);
        if (sum & 0x80000000u)
            sum = (sum & 0xffff) + (sum >> 16);
    }
    if (i < len)
        sum += (uint32_t)p[i] << 8;
    return sum;
}

uint16_t pkt_csum_fold(uint32_t sum)
{
    while (sum >> 16)
        sum = (sum & 0xffff) + (sum >> 16);
    return (uint16_t)~sum;
}

uint32_t pkt_csum_pseudo(uint32_t src, uint32_t dst, uint8_t proto, uint16_t l4_len)
{
    uint8_t ph[12];

    wr32(ph, src);
    wr32(ph + 4, dst);
    ph[8] = 0;
    ph[9] = proto;
    wr16(ph + 10, l4_len);
    return pkt_csum_add(0, ph, sizeof(ph));
}

/* ---- Builders ------------------------------------------------------------------------- */

void pkt_tcp_spec_init(struct pkt_tcp_spec *s)
{
    memset(s, 0, sizeof(*s));
    memcpy(s->src_mac, mac_a, 6);
    memcpy(s->dst_mac, mac_b, 6);
    s->src_ip = PKT_IP(198, 18, 0, 1);
    s->dst_ip = PKT_IP(198, 18, 0, 2);
    s->wscale = -1;
    s->window = 65535;
    s->ttl = 64;
    s->frag = PKT_IP_DF;
}

static uint8_t *put_eth(uint8_t *p, const uint8_t dst[6], const uint8_t src[6], uint16_t type)
{
    memcpy(p, dst, 6);
    memcpy(p + 6, src, 6);
    wr16(p + 12, type);
    return p + PKT_ETH_HLEN;
}

/* Writes an IPv4 header of hlen bytes (options already in place after byte 20 are kept)
 * and its checksum. */
static void put_ip(uint8_t *ip, size_t hlen, uint16_t total, uint8_t tos, uint16_t id,
                   uint16_t frag, uint8_t ttl, uint8_t proto, uint32_t src, uint32_t dst)
{
    ip[0] = (uint8_t)(0x40 | (hlen / 4));
    ip[1] = tos;
    wr16(ip + 2, total);
    wr16(ip + 4, id);
    wr16(ip + 6, frag);
    ip[8] = ttl;
    ip[9] = proto;
    wr16(ip + 10, 0);
    wr32(ip + 12, src);
    wr32(ip + 16, dst);
    wr16(ip + 10, pkt_csum_fold(pkt_csum_add(0, ip, hlen)));
}

/* Lays out the options in the order Linux sends them, so that a test's SYN looks like a
 * real one: MSS, SACK-permitted + timestamps, NOP + window scale, then NOP NOP + SACK.
 * Returns the padded length, or -1 when they do not fit in 40 bytes. */
static int build_tcp_opts(const struct pkt_tcp_spec *s, uint8_t *o)
{
    uint8_t tmp[64];
    size_t n = 0;

    if (s->raw_opts) {
        if (s->raw_opts_len > 40)
            return -1;
        memcpy(tmp, s->raw_opts, s->raw_opts_len);
        n = s->raw_opts_len;
    } else {
        if (s->nsack < 0 || s->nsack > PKT_MAX_SACK)
            return -1;
        if (s->mss) {
            tmp[n++] = PKT_TCPOPT_MSS;
            tmp[n++] = 4;
            wr16(tmp + n, s->mss);
            n += 2;
        }
        if (s->sack_perm && s->ts) {
            tmp[n++] = PKT_TCPOPT_SACK_PERM;
            tmp[n++] = 2;
        } else if (s->sack_perm) {
            tmp[n++] = PKT_TCPOPT_NOP;
            tmp[n++] = PKT_TCPOPT_NOP;
            tmp[n++] = PKT_TCPOPT_SACK_PERM;
            tmp[n++] = 2;
        } else if (s->ts) {
            tmp[n++] = PKT_TCPOPT_NOP;
            tmp[n++] = PKT_TCPOPT_NOP;
        }
        if (s->ts) {
            tmp[n++] = PKT_TCPOPT_TS;
            tmp[n++] = 10;
            wr32(tmp + n, s->tsval);
            wr32(tmp + n + 4, s->tsecr);
            n += 8;
        }
        if (s->wscale >= 0) {
            tmp[n++] = PKT_TCPOPT_NOP;
            tmp[n++] = PKT_TCPOPT_WSCALE;
            tmp[n++] = 3;
            tmp[n++] = (uint8_t)s->wscale;
        }
        if (s->nsack > 0) {
            if (n + 4 + 8 * (size_t)s->nsack > 40)
                return -1;
            tmp[n++] = PKT_TCPOPT_NOP;
            tmp[n++] = PKT_TCPOPT_NOP;
            tmp[n++] = PKT_TCPOPT_SACK;
            tmp[n++] = (uint8_t)(2 + 8 * s->nsack);
            for (int i = 0; i < s->nsack; i++) {
                wr32(tmp + n, s->sack[i].start);
                wr32(tmp + n + 4, s->sack[i].end);
                n += 8;
            }
        }
    }
    while (n % 4)
        tmp[n++] = PKT_TCPOPT_EOL;
    if (n > 40)
        return -1;
    memcpy(o, tmp, n);
    return (int)n;
}

size_t pkt_build_tcp(const struct pkt_tcp_spec *s, uint8_t *buf, size_t cap)
{
    uint8_t opts[40];
    int olen = build_tcp_opts(s, opts);
    size_t ipol = (s->ip_opts_len + 3) & ~(size_t)3;

    if (olen < 0 || ipol > 40)
        return 0;
    size_t iphl = PKT_IP_HLEN + ipol;
    size_t tcphl = PKT_TCP_HLEN + (size_t)olen;
    size_t seglen = tcphl + s->payload_len;
    size_t len = PKT_ETH_HLEN + iphl + seglen;
    size_t flen = len;

    if (iphl + seglen > 65535)
        return 0;
    if (s->eth_pad && flen < PKT_ETH_MIN_FRAME)
        flen = PKT_ETH_MIN_FRAME;
    if (flen > cap)
        return 0;
    memset(buf, 0, flen);

    uint8_t *ip = put_eth(buf, s->dst_mac, s->src_mac, PKT_ETH_P_IP);
    uint8_t *tcp = ip + iphl;

    wr16(tcp, s->sport);
    wr16(tcp + 2, s->dport);
    wr32(tcp + 4, s->seq);
    wr32(tcp + 8, s->ack);
    tcp[12] = (uint8_t)((s->tcp_doff ? s->tcp_doff : (int)(tcphl / 4)) << 4);
    tcp[13] = s->flags;
    wr16(tcp + 14, s->window);
    wr16(tcp + 16, 0);
    wr16(tcp + 18, s->urp);
    memcpy(tcp + PKT_TCP_HLEN, opts, (size_t)olen);
    if (s->payload_len)
        memcpy(tcp + tcphl, s->payload, s->payload_len);
    uint32_t sum = pkt_csum_pseudo(s->src_ip, s->dst_ip, PKT_IP_PROTO_TCP, (uint16_t)seglen);
    uint16_t csum = pkt_csum_fold(pkt_csum_add(sum, tcp, seglen));
    if (s->bad_tcp_csum)
        csum ^= 1;
    wr16(tcp + 16, csum);

    if (s->ip_opts_len)
        memcpy(ip + PKT_IP_HLEN, s->ip_opts, s->ip_opts_len);
    long total = (long)(iphl + seglen) + s->ip_len_delta;
    if (total < 0)
        total = 0;
    if (total > 65535)
        total = 65535;
    put_ip(ip, iphl, (uint16_t)total, s->tos, s->ip_id, s->frag, s->ttl, PKT_IP_PROTO_TCP,
           s->src_ip, s->dst_ip);
    /* Defects go in after the checksum, which must cover what is actually sent. */
    if (s->ip_ihl) {
        /* The checksum covers the length the header claims when those bytes exist, so
         * that the bogus length is the only defect a receiver can see. */
        size_t claimed = (size_t)(s->ip_ihl & 0x0f) * 4;
        size_t covered = claimed >= PKT_IP_HLEN && claimed <= iphl + seglen ? claimed : iphl;
        ip[0] = (uint8_t)(0x40 | (s->ip_ihl & 0x0f));
        wr16(ip + 10, 0);
        wr16(ip + 10, pkt_csum_fold(pkt_csum_add(0, ip, covered)));
    }
    if (s->bad_ip_csum)
        ip[11] ^= 1;

    if (s->truncate >= flen)
        return 0;
    return flen - s->truncate;
}

size_t pkt_build_arp(const struct pkt_arp_spec *s, uint8_t *buf, size_t cap)
{
    size_t len = PKT_ETH_HLEN + PKT_ARP_LEN;

    if (cap < len)
        return 0;
    uint8_t *a = put_eth(buf, s->eth_dst, s->eth_src, PKT_ETH_P_ARP);
    wr16(a, 1);                /* hardware: Ethernet */
    wr16(a + 2, PKT_ETH_P_IP); /* protocol: IPv4 */
    a[4] = 6;
    a[5] = 4;
    wr16(a + 6, s->op);
    memcpy(a + 8, s->sha, 6);
    wr32(a + 14, s->spa);
    memcpy(a + 18, s->tha, 6);
    wr32(a + 24, s->tpa);
    return len;
}

size_t pkt_build_arp_request(uint8_t *buf, size_t cap, const uint8_t sha[6], uint32_t spa,
                             uint32_t tpa)
{
    struct pkt_arp_spec s = {.op = PKT_ARP_REQUEST, .spa = spa, .tpa = tpa};

    memcpy(s.eth_src, sha, 6);
    memcpy(s.eth_dst, pkt_mac_broadcast, 6);
    memcpy(s.sha, sha, 6);
    return pkt_build_arp(&s, buf, cap);
}

size_t pkt_build_arp_reply(uint8_t *buf, size_t cap, const uint8_t sha[6], uint32_t spa,
                           const uint8_t tha[6], uint32_t tpa)
{
    struct pkt_arp_spec s = {.op = PKT_ARP_REPLY, .spa = spa, .tpa = tpa};

    memcpy(s.eth_src, sha, 6);
    memcpy(s.eth_dst, tha, 6);
    memcpy(s.sha, sha, 6);
    memcpy(s.tha, tha, 6);
    return pkt_build_arp(&s, buf, cap);
}

size_t pkt_build_icmp(const struct pkt_icmp_spec *s, uint8_t *buf, size_t cap)
{
    size_t seglen = PKT_ICMP_HLEN + s->payload_len;
    size_t len = PKT_ETH_HLEN + PKT_IP_HLEN + seglen;

    if (len > cap || PKT_IP_HLEN + seglen > 65535)
        return 0;
    uint8_t *ip = put_eth(buf, s->dst_mac, s->src_mac, PKT_ETH_P_IP);
    uint8_t *ic = ip + PKT_IP_HLEN;
    ic[0] = s->type;
    ic[1] = s->code;
    wr16(ic + 2, 0);
    wr16(ic + 4, s->id);
    wr16(ic + 6, s->seq);
    if (s->payload_len)
        memcpy(ic + PKT_ICMP_HLEN, s->payload, s->payload_len);
    uint16_t csum = pkt_csum_fold(pkt_csum_add(0, ic, seglen));
    if (s->bad_icmp_csum)
        csum ^= 1;
    wr16(ic + 2, csum);
    put_ip(ip, PKT_IP_HLEN, (uint16_t)(PKT_IP_HLEN + seglen), 0, 0, PKT_IP_DF, s->ttl ? s->ttl : 64,
           PKT_IP_PROTO_ICMP, s->src_ip, s->dst_ip);
    return len;
}

size_t pkt_build_icmp_echo(uint8_t *buf, size_t cap, const uint8_t src_mac[6],
                           const uint8_t dst_mac[6], uint32_t src_ip, uint32_t dst_ip, uint16_t id,
                           uint16_t seq, const void *data, size_t len)
{
    struct pkt_icmp_spec s = {.src_ip = src_ip,
                              .dst_ip = dst_ip,
                              .type = PKT_ICMP_ECHO,
                              .id = id,
                              .seq = seq,
                              .payload = data,
                              .payload_len = len};

    memcpy(s.src_mac, src_mac, 6);
    memcpy(s.dst_mac, dst_mac, 6);
    return pkt_build_icmp(&s, buf, cap);
}

/* ---- Parser --------------------------------------------------------------------------- */

const char *pkt_strerror(int err)
{
    switch (err) {
    case PKT_OK:
        return "ok";
    case PKT_E_EMPTY:
        return "no frame";
    case PKT_E_ETH_SHORT:
        return "Ethernet header truncated";
    case PKT_E_ETH_TYPE:
        return "unknown ethertype";
    case PKT_E_ARP_SHORT:
        return "ARP truncated";
    case PKT_E_ARP_FORMAT:
        return "ARP not Ethernet/IPv4 or bad operation";
    case PKT_E_IP_SHORT:
        return "IPv4 header truncated";
    case PKT_E_IP_VERSION:
        return "IP version not 4";
    case PKT_E_IP_HLEN:
        return "bad IPv4 header length";
    case PKT_E_IP_LEN:
        return "bad IPv4 total length";
    case PKT_E_IP_CSUM:
        return "bad IPv4 header checksum";
    case PKT_E_IP_FRAG:
        return "IPv4 fragment";
    case PKT_E_IP_PROTO:
        return "IP protocol neither TCP nor ICMP";
    case PKT_E_TCP_SHORT:
        return "TCP header truncated";
    case PKT_E_TCP_HLEN:
        return "bad TCP data offset";
    case PKT_E_TCP_CSUM:
        return "bad TCP checksum";
    case PKT_E_TCP_OPT:
        return "malformed TCP option";
    case PKT_E_ICMP_SHORT:
        return "ICMP header truncated";
    case PKT_E_ICMP_CSUM:
        return "bad ICMP checksum";
    case PKT_E_OFFLOAD:
        return "offload metadata does not match the frame";
    default:
        return "unknown pkt error";
    }
}

int pkt_parse_tcp_opts(const uint8_t *o, size_t len, struct pkt_tcp_opts *out)
{
    size_t i = 0;

    memset(out, 0, sizeof(*out));
    out->wscale = -1;
    while (i < len) {
        uint8_t kind = o[i];

        if (kind == PKT_TCPOPT_EOL) {
            out->eol = true;
            break;
        }
        if (kind == PKT_TCPOPT_NOP) {
            out->nops++;
            i++;
            continue;
        }
        /* RFC 9293 3.1: every other option has a length octet counting kind and length. */
        if (i + 1 >= len)
            return PKT_E_TCP_OPT;
        size_t ol = o[i + 1];
        if (ol < 2 || i + ol > len)
            return PKT_E_TCP_OPT;
        const uint8_t *v = o + i + 2;
        switch (kind) {
        case PKT_TCPOPT_MSS:
            if (ol != 4)
                return PKT_E_TCP_OPT;
            out->has_mss = true;
            out->mss = rd16(v);
            break;
        case PKT_TCPOPT_WSCALE:
            if (ol != 3)
                return PKT_E_TCP_OPT;
            out->wscale = v[0];
            break;
        case PKT_TCPOPT_SACK_PERM:
            if (ol != 2)
                return PKT_E_TCP_OPT;
            out->sack_perm = true;
            break;
        case PKT_TCPOPT_TS:
            if (ol != 10)
                return PKT_E_TCP_OPT;
            out->ts = true;
            out->tsval = rd32(v);
            out->tsecr = rd32(v + 4);
            break;
        case PKT_TCPOPT_SACK:
            if (ol < 10 || (ol - 2) % 8 || (ol - 2) / 8 > PKT_MAX_SACK)
                return PKT_E_TCP_OPT;
            out->nsack = (int)(ol - 2) / 8;
            for (int b = 0; b < out->nsack; b++) {
                out->sack[b].start = rd32(v + 8 * b);
                out->sack[b].end = rd32(v + 8 * b + 4);
            }
            break;
        default:
            out->unknown++;
            break;
        }
        i += ol;
    }
    return PKT_OK;
}

static int parse_arp(const uint8_t *a, size_t len, struct pkt_info *out)
{
    out->kind = PKT_KIND_ARP;
    if (len < PKT_ARP_LEN)
        return PKT_E_ARP_SHORT;
    out->arp_op = rd16(a + 6);
    memcpy(out->arp_sha, a + 8, 6);
    out->arp_spa = rd32(a + 14);
    memcpy(out->arp_tha, a + 18, 6);
    out->arp_tpa = rd32(a + 24);
    if (rd16(a) != 1 || rd16(a + 2) != PKT_ETH_P_IP || a[4] != 6 || a[5] != 4)
        return PKT_E_ARP_FORMAT;
    if (out->arp_op != PKT_ARP_REQUEST && out->arp_op != PKT_ARP_REPLY)
        return PKT_E_ARP_FORMAT;
    return PKT_OK;
}

static int parse_tcp(const uint8_t *t, size_t seglen, struct pkt_info *out)
{
    out->kind = PKT_KIND_TCP;
    out->opt.wscale = -1;
    if (seglen < PKT_TCP_HLEN)
        return PKT_E_TCP_SHORT;
    out->sport = rd16(t);
    out->dport = rd16(t + 2);
    out->seq = rd32(t + 4);
    out->ack = rd32(t + 8);
    out->tcp_hlen = (uint8_t)((t[12] >> 4) * 4);
    out->flags = t[13];
    out->window = rd16(t + 14);
    out->tcp_csum = rd16(t + 16);
    out->urp = rd16(t + 18);
    if (out->tcp_hlen < PKT_TCP_HLEN || out->tcp_hlen > seglen)
        return PKT_E_TCP_HLEN;
    out->tcp_opts_raw = t + PKT_TCP_HLEN;
    out->tcp_opts_len = out->tcp_hlen - PKT_TCP_HLEN;
    out->payload = t + out->tcp_hlen;
    out->payload_len = seglen - out->tcp_hlen;
    uint32_t sum = pkt_csum_pseudo(out->src_ip, out->dst_ip, PKT_IP_PROTO_TCP, (uint16_t)seglen);
    if (pkt_csum_fold(pkt_csum_add(sum, t, seglen)) != 0)
        return PKT_E_TCP_CSUM;
    return pkt_parse_tcp_opts(out->tcp_opts_raw, out->tcp_opts_len, &out->opt);
}

static int parse_icmp(const uint8_t *c, size_t seglen, struct pkt_info *out)
{
    out->kind = PKT_KIND_ICMP;
    if (seglen < PKT_ICMP_HLEN)
        return PKT_E_ICMP_SHORT;
    out->icmp_type = c[0];
    out->icmp_code = c[1];
    out->icmp_csum = rd16(c + 2);
    out->icmp_id = rd16(c + 4);
    out->icmp_seq = rd16(c + 6);
    out->payload = c + PKT_ICMP_HLEN;
    out->payload_len = seglen - PKT_ICMP_HLEN;
    if (pkt_csum_fold(pkt_csum_add(0, c, seglen)) != 0)
        return PKT_E_ICMP_CSUM;
    return PKT_OK;
}

static int parse_ip(const uint8_t *ip, size_t len, struct pkt_info *out)
{
    if (len < PKT_IP_HLEN)
        return PKT_E_IP_SHORT;
    out->ip_hlen = (uint8_t)((ip[0] & 0x0f) * 4);
    out->tos = ip[1];
    out->ip_len = rd16(ip + 2);
    out->ip_id = rd16(ip + 4);
    out->frag = rd16(ip + 6);
    out->df = (out->frag & PKT_IP_DF) != 0;
    out->mf = (out->frag & PKT_IP_MF) != 0;
    out->frag_offset = (uint16_t)((out->frag & PKT_IP_OFFMASK) * 8);
    out->ttl = ip[8];
    out->proto = ip[9];
    out->ip_csum = rd16(ip + 10);
    out->src_ip = rd32(ip + 12);
    out->dst_ip = rd32(ip + 16);
    if (ip[0] >> 4 != 4)
        return PKT_E_IP_VERSION;
    if (out->ip_hlen < PKT_IP_HLEN || out->ip_hlen > len)
        return PKT_E_IP_HLEN;
    if (out->ip_len < PKT_IP_HLEN || out->ip_len > len)
        return PKT_E_IP_LEN;
    if (out->ip_hlen > out->ip_len)
        return PKT_E_IP_HLEN;
    out->ip_opts = ip + PKT_IP_HLEN;
    out->ip_opts_len = out->ip_hlen - PKT_IP_HLEN;
    out->eth_pad = len - out->ip_len;
    if (pkt_csum_fold(pkt_csum_add(0, ip, out->ip_hlen)) != 0)
        return PKT_E_IP_CSUM;
    if (out->mf || out->frag_offset)
        return PKT_E_IP_FRAG;

    const uint8_t *l4 = ip + out->ip_hlen;
    size_t l4len = out->ip_len - out->ip_hlen;
    switch (out->proto) {
    case PKT_IP_PROTO_TCP:
        return parse_tcp(l4, l4len, out);
    case PKT_IP_PROTO_ICMP:
        return parse_icmp(l4, l4len, out);
    default:
        out->kind = PKT_KIND_IP;
        out->payload = l4;
        out->payload_len = l4len;
        return PKT_E_IP_PROTO;
    }
}

int pkt_parse(const uint8_t *frame, size_t len, struct pkt_info *out)
{
    memset(out, 0, sizeof(*out));
    out->opt.wscale = -1;
    out->frame_len = len;
    if (len < PKT_ETH_HLEN)
        return PKT_E_ETH_SHORT;
    memcpy(out->dst_mac, frame, 6);
    memcpy(out->src_mac, frame + 6, 6);
    out->ethertype = rd16(frame + 12);
    switch (out->ethertype) {
    case PKT_ETH_P_ARP:
        return parse_arp(frame + PKT_ETH_HLEN, len - PKT_ETH_HLEN, out);
    case PKT_ETH_P_IP:
        return parse_ip(frame + PKT_ETH_HLEN, len - PKT_ETH_HLEN, out);
    default:
        return PKT_E_ETH_TYPE;
    }
}

static void fmt_ip(uint32_t ip, char *b, size_t cap)
{
    snprintf(b, cap, "%u.%u.%u.%u", ip >> 24, (ip >> 16) & 255, (ip >> 8) & 255, ip & 255);
}

char *pkt_format(const struct pkt_info *p, char *buf, size_t cap)
{
    char s[16], d[16];
    size_t n = 0;

#define PKT_APPEND(...)                                                                            \
    do {                                                                                           \
        if (n < cap) {                                                                             \
            int r_ = snprintf(buf + n, cap - n, __VA_ARGS__);                                      \
            n += r_ > 0 ? (size_t)r_ : 0;                                                          \
        }                                                                                          \
    } while (0)

    if (!cap)
        return buf;
    buf[0] = 0;
    switch (p->kind) {
    case PKT_KIND_ARP:
        fmt_ip(p->arp_spa, s, sizeof(s));
        fmt_ip(p->arp_tpa, d, sizeof(d));
        if (p->arp_op == PKT_ARP_REQUEST)
            PKT_APPEND("ARP who-has %s tell %s", d, s);
        else
            PKT_APPEND("ARP %s is-at %02x:%02x:%02x:%02x:%02x:%02x (to %s)", s, p->arp_sha[0],
                       p->arp_sha[1], p->arp_sha[2], p->arp_sha[3], p->arp_sha[4], p->arp_sha[5],
                       d);
        break;
    case PKT_KIND_ICMP:
        fmt_ip(p->src_ip, s, sizeof(s));
        fmt_ip(p->dst_ip, d, sizeof(d));
        PKT_APPEND("ICMP %s > %s type=%u code=%u id=%u seq=%u len=%zu", s, d, p->icmp_type,
                   p->icmp_code, p->icmp_id, p->icmp_seq, p->payload_len);
        break;
    case PKT_KIND_TCP: {
        static const char fl[] = "FSRP.UEC";
        char f[9];
        int k = 0;
        fmt_ip(p->src_ip, s, sizeof(s));
        fmt_ip(p->dst_ip, d, sizeof(d));
        for (int i = 0; i < 8; i++)
            if (p->flags & (1 << i))
                f[k++] = fl[i];
        f[k] = 0;
        PKT_APPEND("TCP %s:%u > %s:%u [%s] seq=%u ack=%u win=%u len=%zu", s, p->sport, d, p->dport,
                   f, p->seq, p->ack, p->window, p->payload_len);
        const struct pkt_tcp_opts *o = &p->opt;
        if (o->has_mss || o->wscale >= 0 || o->sack_perm || o->ts || o->nsack) {
            const char *sep = "";
            PKT_APPEND(" <");
            if (o->has_mss) {
                PKT_APPEND("%smss %u", sep, o->mss);
                sep = ",";
            }
            if (o->sack_perm) {
                PKT_APPEND("%ssackOK", sep);
                sep = ",";
            }
            if (o->ts) {
                PKT_APPEND("%sTS %u:%u", sep, o->tsval, o->tsecr);
                sep = ",";
            }
            if (o->wscale >= 0) {
                PKT_APPEND("%swscale %d", sep, o->wscale);
                sep = ",";
            }
            for (int i = 0; i < o->nsack; i++) {
                PKT_APPEND("%ssack %u-%u", sep, o->sack[i].start, o->sack[i].end);
                sep = ",";
            }
            PKT_APPEND(">");
        }
        break;
    }
    case PKT_KIND_IP:
        fmt_ip(p->src_ip, s, sizeof(s));
        fmt_ip(p->dst_ip, d, sizeof(d));
        PKT_APPEND("IP %s > %s proto=%u len=%u", s, d, p->proto, p->ip_len);
        break;
    default:
        PKT_APPEND("frame len=%zu type=0x%04x", p->frame_len, p->ethertype);
        break;
    }
#undef PKT_APPEND
    return buf;
}

/* ---- Device emulation ----------------------------------------------------------------- */

/* The pseudo-header sum as an engine leaves it for the device: folded, not complemented. */
static uint16_t partial_pseudo(uint32_t src, uint32_t dst, uint16_t len)
{
    return (uint16_t)~pkt_csum_fold(pkt_csum_pseudo(src, dst, PKT_IP_PROTO_TCP, len));
}

static void set_tcp_csum(uint8_t *ip, size_t ihl, size_t seglen)
{
    uint8_t *t = ip + ihl;
    uint32_t sum =
        pkt_csum_pseudo(rd32(ip + 12), rd32(ip + 16), PKT_IP_PROTO_TCP, (uint16_t)seglen);

    wr16(t + 16, 0);
    wr16(t + 16, pkt_csum_fold(pkt_csum_add(sum, t, seglen)));
}

static void set_ip_csum(uint8_t *ip, size_t ihl)
{
    wr16(ip + 10, 0);
    wr16(ip + 10, pkt_csum_fold(pkt_csum_add(0, ip, ihl)));
}

/* STK_TX_L4_SUM, as dio__tx completes it: the field holds the sum of the pseudo-header and
 * the TCP header; the payload's sum (from l2 + l3 + l4 on) is added. *partial_ok: the
 * completed checksum equals one computed from scratch over the whole segment. */
static int l4sum_finish(uint8_t *frame, size_t len, const struct stk_txmeta *meta, bool *partial_ok)
{
    size_t l2 = meta->l2_len, l3 = meta->l3_len, l4 = meta->l4_len;
    if (meta->flags & (STK_TX_TCP_CSUM | STK_TX_TSO) || l2 != PKT_ETH_HLEN || l4 < PKT_TCP_HLEN ||
        len < l2 + l3 + l4)
        return PKT_E_OFFLOAD;
    const uint8_t *ip = frame + l2;
    uint8_t *t = frame + l2 + l3;
    uint32_t pseudo;
    size_t seglen;
    if (rd16(frame + 12) == PKT_ETH_P_IP && l3 == (size_t)(ip[0] & 0x0f) * 4 && ip[9] == 6) {
        if (l2 + rd16(ip + 2) > len || rd16(ip + 2) < l3 + l4)
            return PKT_E_OFFLOAD;
        seglen = rd16(ip + 2) - l3;
        pseudo = pkt_csum_pseudo(rd32(ip + 12), rd32(ip + 16), PKT_IP_PROTO_TCP, (uint16_t)seglen);
    } else if (rd16(frame + 12) == 0x86dd && l3 == 40 && ip[6] == 6) {
        seglen = rd16(ip + 4);
        if (l2 + l3 + seglen > len || seglen < l4)
            return PKT_E_OFFLOAD;
        pseudo = pkt_csum_add(pkt_csum_add(0, ip + 8, 32), (const uint8_t[]){0, 0, 0, 6}, 4);
        pseudo += (uint32_t)seglen;
    } else {
        return PKT_E_OFFLOAD;
    }
    if ((size_t)(t[12] >> 4) * 4 != l4)
        return PKT_E_OFFLOAD;
    uint16_t done = pkt_csum_fold(pkt_csum_add(rd16(t + 16), t + l4, seglen - l4));
    wr16(t + 16, 0);
    uint16_t want = pkt_csum_fold(pkt_csum_add(pseudo, t, seglen));
    if (partial_ok)
        *partial_ok = done == want;
    wr16(t + 16, done); /* like the device: whatever the field's sum makes of it */
    return PKT_OK;
}

int pkt_offload_finish(uint8_t *frame, size_t len, const struct stk_txmeta *meta, bool *partial_ok)
{
    uint32_t fl = meta ? meta->flags : 0;
    size_t l2 = meta && meta->l2_len ? meta->l2_len : PKT_ETH_HLEN;

    if (partial_ok)
        *partial_ok = true;
    if (fl & STK_TX_L4_SUM)
        return l4sum_finish(frame, len, meta, partial_ok);
    if (!(fl & (STK_TX_IP_CSUM | STK_TX_TCP_CSUM | STK_TX_TSO)))
        return PKT_OK;
    if (len < l2 + PKT_IP_HLEN || rd16(frame + 12) != PKT_ETH_P_IP)
        return PKT_E_OFFLOAD;
    uint8_t *ip = frame + l2;
    size_t ihl = (size_t)(ip[0] & 0x0f) * 4;
    size_t total = rd16(ip + 2);
    if (ihl < PKT_IP_HLEN || (meta->l3_len && meta->l3_len != ihl) || total < ihl ||
        l2 + total > len)
        return PKT_E_OFFLOAD;
    if (fl & STK_TX_IP_CSUM)
        set_ip_csum(ip, ihl);
    if (!(fl & (STK_TX_TCP_CSUM | STK_TX_TSO)))
        return PKT_OK;

    uint8_t *t = ip + ihl;
    size_t seglen = total - ihl;
    if (ip[9] != PKT_IP_PROTO_TCP || seglen < PKT_TCP_HLEN ||
        (meta->l4_len && meta->l4_len != (size_t)(t[12] >> 4) * 4))
        return PKT_E_OFFLOAD;
    uint16_t partial = rd16(t + 16);
    uint32_t src = rd32(ip + 12), dst = rd32(ip + 16);
    if (fl & STK_TX_TSO) {
        /* Devices take the pseudo-header of a TSO frame without its length (DPDK, Linux
         * GSO); accept either form. */
        if (partial_ok && (fl & STK_TX_TCP_CSUM))
            *partial_ok = partial == partial_pseudo(src, dst, (uint16_t)seglen) ||
                          partial == partial_pseudo(src, dst, 0);
        set_tcp_csum(ip, ihl, seglen);
        return PKT_OK;
    }
    if (partial_ok)
        *partial_ok = partial == partial_pseudo(src, dst, (uint16_t)seglen);
    /* Like the device: sum the segment with the partial value in place, store the result. */
    wr16(t + 16, pkt_csum_fold(pkt_csum_add(0, t, seglen)));
    return PKT_OK;
}

int pkt_tso_segment(const uint8_t *frame, size_t len, uint16_t mss,
                    int (*emit)(void *ctx, const uint8_t *seg, size_t seg_len), void *ctx)
{
    if (len < PKT_ETH_HLEN + PKT_IP_HLEN || rd16(frame + 12) != PKT_ETH_P_IP || !mss)
        return PKT_E_OFFLOAD;
    const uint8_t *ip = frame + PKT_ETH_HLEN;
    size_t ihl = (size_t)(ip[0] & 0x0f) * 4;
    size_t total = rd16(ip + 2);
    if (ihl < PKT_IP_HLEN || total < ihl + PKT_TCP_HLEN || PKT_ETH_HLEN + total > len ||
        ip[9] != PKT_IP_PROTO_TCP)
        return PKT_E_OFFLOAD;
    size_t thl = (size_t)(ip[ihl + 12] >> 4) * 4;
    if (thl < PKT_TCP_HLEN || ihl + thl > total)
        return PKT_E_OFFLOAD;
    size_t hdr = PKT_ETH_HLEN + ihl + thl;
    size_t paylen = total - ihl - thl;
    if (paylen <= mss) {
        int rc = emit(ctx, frame, PKT_ETH_HLEN + total);
        return rc < 0 ? rc : 1;
    }

    uint8_t *seg = malloc(hdr + mss);
    if (!seg)
        return -ENOMEM;
    uint16_t id = rd16(ip + 4);
    uint32_t seq = rd32(ip + ihl + 4);
    uint8_t flags = ip[ihl + 13];
    int nseg = 0;
    for (size_t off = 0; off < paylen; off += mss, nseg++) {
        size_t chunk = paylen - off < mss ? paylen - off : mss;
        bool first = off == 0, last = off + chunk == paylen;
        uint8_t *sip = seg + PKT_ETH_HLEN, *st = sip + ihl;

        memcpy(seg, frame, hdr);
        memcpy(seg + hdr, frame + hdr + off, chunk);
        wr16(sip + 2, (uint16_t)(ihl + thl + chunk));
        wr16(sip + 4, (uint16_t)(id + nseg));
        set_ip_csum(sip, ihl);
        wr32(st + 4, seq + (uint32_t)off);
        st[13] = (uint8_t)(flags &
                           ~((last ? 0 : PKT_TCP_FIN | PKT_TCP_PSH) | (first ? 0 : PKT_TCP_CWR)));
        set_tcp_csum(sip, ihl, thl + chunk);
        int rc = emit(ctx, seg, hdr + chunk);
        if (rc < 0) {
            free(seg);
            return rc;
        }
    }
    free(seg);
    return nseg;
}

/* ---- Capture -------------------------------------------------------------------------- */

void pkt_capture_init(struct pkt_capture *c)
{
    memset(c, 0, sizeof(*c));
}

void pkt_capture_clear(struct pkt_capture *c)
{
    while (c->count) {
        free(c->q[c->head].data);
        c->q[c->head].data = NULL;
        c->head = (c->head + 1) % PKT_CAP_MAX_FRAMES;
        c->count--;
    }
    c->head = 0;
    free(c->popped.data);
    memset(&c->popped, 0, sizeof(c->popped));
}

void pkt_capture_fini(struct pkt_capture *c)
{
    pkt_capture_clear(c);
}

/* Takes ownership of data (a malloc'd frame). */
static int capture_push(struct pkt_capture *c, uint8_t *data, size_t len,
                        const struct stk_txmeta *meta)
{
    if (c->count == PKT_CAP_MAX_FRAMES) {
        free(data);
        c->full_drops++;
        return -ENOBUFS;
    }
    struct pkt_frame *f = &c->q[(c->head + c->count) % PKT_CAP_MAX_FRAMES];
    memset(f, 0, sizeof(*f));
    f->data = data;
    f->len = len;
    f->partial_ok = true;
    f->index = c->total++;
    if (meta) {
        f->offloads = meta->flags;
        f->tso_mss = meta->flags & STK_TX_TSO ? meta->tso_mss : 0;
        f->l2_len = meta->l2_len;
        f->l3_len = meta->l3_len;
        f->l4_len = meta->l4_len;
        if (meta->flags) {
            c->offload_frames++;
            if (pkt_offload_finish(data, len, meta, &f->partial_ok) != PKT_OK)
                c->bad_frames++;
        }
        if (meta->flags & STK_TX_TSO)
            c->tso_frames++;
    }
    if (len > ((f->offloads & STK_TX_TSO) ? PKT_CAP_MAX_TSO : PKT_CAP_MAX_LEN))
        c->bad_frames++;
    c->count++;
    return 0;
}

int pkt_capture_tx(void *io_ctx, const struct stk_iov *iov, int n, const struct stk_txmeta *meta)
{
    struct pkt_capture *c = io_ctx;
    size_t len = 0, off = 0;

    if (c->fail_next > 0) {
        c->fail_next--;
        return -ENOBUFS;
    }
    for (int i = 0; i < n; i++)
        len += iov[i].len;
    uint8_t *data = malloc(len ? len : 1);
    if (!data)
        return -ENOBUFS;
    for (int i = 0; i < n; i++) {
        if (iov[i].len)
            memcpy(data + off, iov[i].base, iov[i].len);
        off += iov[i].len;
    }
    return capture_push(c, data, len, meta);
}

int pkt_capture_add(struct pkt_capture *c, const uint8_t *frame, size_t len)
{
    uint8_t *data = malloc(len ? len : 1);

    if (!data)
        return -ENOBUFS;
    memcpy(data, frame, len);
    return capture_push(c, data, len, NULL);
}

size_t pkt_capture_count(const struct pkt_capture *c)
{
    return c->count;
}

const struct pkt_frame *pkt_capture_peek(const struct pkt_capture *c, size_t i)
{
    if (i >= c->count)
        return NULL;
    return &c->q[(c->head + i) % PKT_CAP_MAX_FRAMES];
}

const struct pkt_frame *pkt_capture_pop(struct pkt_capture *c)
{
    if (!c->count)
        return NULL;
    free(c->popped.data);
    c->popped = c->q[c->head];
    c->q[c->head].data = NULL;
    c->head = (c->head + 1) % PKT_CAP_MAX_FRAMES;
    c->count--;
    return &c->popped;
}

int pkt_capture_pop_parse(struct pkt_capture *c, struct pkt_info *out)
{
    const struct pkt_frame *f = pkt_capture_pop(c);

    if (!f) {
        memset(out, 0, sizeof(*out));
        return PKT_E_EMPTY;
    }
    return pkt_parse(f->data, f->len, out);
}

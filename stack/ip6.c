/*
 * ip6.c - IPv6 (RFC 8200) and ICMPv6 (RFC 4443) for a host: input validation with the
 * extension header walk, echo, errors, addresses and output. Neighbour discovery is nd.c.
 *
 * Input is parsed once into a struct stk_ipv6_pkt; the upper layers never walk the
 * extension headers themselves. Fragments are reassembled by ipfrag.c, whose whole packet
 * is walked again here.
 */
#include <string.h>

#include "ip6.h"

#define IP6_MAXEXT      8 /* extension headers walked before the packet is refused */
#define NH_HOPOPTS      0
#define NH_TCP          6
#define NH_UDP          17
#define NH_ROUTING      43
#define NH_FRAGMENT     44
#define NH_NONE         59
#define NH_DSTOPTS      60
#define ICMP6_HLEN      8
#define IP6_MIN_MTU     1280
#define IP6_MAX_PAY_IOV 7

const uint8_t stk__ip6_all_nodes[16] = {0xff, 0x02, [15] = 1};

uint32_t stk__csum_pseudo6(const uint8_t src[16], const uint8_t dst[16], uint8_t proto,
                           uint32_t l4len)
{
    uint8_t tail[8] = {0};
    stk__put32(tail, l4len);
    tail[7] = proto;
    uint32_t sum = stk__csum_add(0, src, 16);
    sum = stk__csum_add(sum, dst, 16);
    return stk__csum_add(sum, tail, 8);
}

bool stk__ip6_is_unspec(const uint8_t a[16])
{
    static const uint8_t zero[16];
    return memcmp(a, zero, 16) == 0;
}

static bool is_loopback(const uint8_t a[16])
{
    static const uint8_t lo[16] = {[15] = 1};
    return memcmp(a, lo, 16) == 0;
}

static bool is_v4mapped(const uint8_t a[16])
{
    static const uint8_t pre[12] = {[10] = 0xff, [11] = 0xff};
    return memcmp(a, pre, 12) == 0;
}

/* a and b agree on their first plen bits. */
static bool prefix_eq(const uint8_t a[16], const uint8_t b[16], unsigned plen)
{
    unsigned bytes = plen / 8, bits = plen % 8;
    if (memcmp(a, b, bytes) != 0)
        return false;
    if (bits == 0)
        return true;
    uint8_t mask = (uint8_t)(0xff << (8 - bits));
    return ((a[bytes] ^ b[bytes]) & mask) == 0;
}

bool stk__ip6_enabled(const struct stk_engine *e)
{
    return e->nd && e->nd->enabled;
}

const uint8_t *stk__ip6_linklocal(const struct stk_engine *e)
{
    return e->nd->ll;
}

bool stk__ip6_is_ours(const struct stk_engine *e, const uint8_t a[16])
{
    const struct stk__nd *d = e->nd;
    return memcmp(a, d->ll, 16) == 0 || (d->has_global && memcmp(a, e->cfg.ip6, 16) == 0);
}

void stk__ip6_solicited_node(const uint8_t a[16], uint8_t group[16])
{
    static const uint8_t pre[13] = {0xff, 0x02, [11] = 0x01, [12] = 0xff};
    memcpy(group, pre, 13);
    memcpy(group + 13, a + 13, 3);
}

void stk__ip6_mcast_mac(const uint8_t a[16], uint8_t mac[6])
{
    mac[0] = 0x33;
    mac[1] = 0x33;
    memcpy(mac + 2, a + 12, 4);
}

/* The groups we listen to: all-nodes and the solicited-node groups of our addresses. */
static bool group_wanted(const struct stk_engine *e, const uint8_t a[16])
{
    uint8_t g[16];
    if (memcmp(a, stk__ip6_all_nodes, 16) == 0)
        return true;
    stk__ip6_solicited_node(e->nd->ll, g);
    if (memcmp(a, g, 16) == 0)
        return true;
    if (!e->nd->has_global)
        return false;
    stk__ip6_solicited_node(e->cfg.ip6, g);
    return memcmp(a, g, 16) == 0;
}

bool stk__ip6_mac_wanted(const struct stk_engine *e, const uint8_t mac[6])
{
    uint8_t m[6];
    if (!stk__ip6_enabled(e))
        return false;
    uint8_t g[16];
    stk__ip6_mcast_mac(stk__ip6_all_nodes, m);
    if (memcmp(mac, m, 6) == 0)
        return true;
    stk__ip6_solicited_node(e->nd->ll, g);
    stk__ip6_mcast_mac(g, m);
    if (memcmp(mac, m, 6) == 0)
        return true;
    if (!e->nd->has_global)
        return false;
    stk__ip6_solicited_node(e->cfg.ip6, g);
    stk__ip6_mcast_mac(g, m);
    return memcmp(mac, m, 6) == 0;
}

void stk__ip6_select_src(const struct stk_engine *e, const uint8_t dst[16], uint8_t src[16])
{
    const struct stk__nd *d = e->nd;
    /* Link-local and link-scope multicast (ff02::/16) destinations get the link-local
     * address (RFC 6724 rule 2, scope); anything else the global one when we have it. */
    bool link_scope =
        stk__ip6_is_linklocal(dst) || (stk__ip6_is_mcast(dst) && (dst[1] & 0x0f) <= 2);
    memcpy(src, !link_scope && d->has_global ? e->cfg.ip6 : d->ll, 16);
}

int stk__ip6_route(const struct stk_engine *e, const uint8_t dst[16], uint8_t nexthop[16])
{
    const struct stk__nd *d = e->nd;
    if (!stk__ip6_enabled(e) || stk__ip6_is_unspec(dst) || is_loopback(dst) || is_v4mapped(dst) ||
        stk__ip6_is_mcast(dst) || stk__ip6_is_ours(e, dst))
        return -EHOSTUNREACH;
    if (stk__ip6_is_linklocal(dst) ||
        (d->has_global && prefix_eq(dst, e->cfg.ip6, e->cfg.ip6_prefix))) {
        memcpy(nexthop, dst, 16);
        return 0;
    }
    if (!d->has_gw)
        return -EHOSTUNREACH;
    memcpy(nexthop, e->cfg.gateway6, 16);
    return 0;
}

int stk__ip6_send_hl(struct stk_engine *e, stk_time_t now, const uint8_t *src,
                     const uint8_t dst[16], uint8_t proto, uint8_t hop_limit, uint8_t *hdr,
                     size_t l4_len, const struct stk_iov *payload, int npay,
                     struct stk_txmeta *meta)
{
    struct stk_iov iov[1 + IP6_MAX_PAY_IOV];
    struct stk_txmeta none = {0};
    size_t plen = l4_len;

    if (!stk__ip6_enabled(e))
        return -EAFNOSUPPORT;
    if (npay < 0 || npay > IP6_MAX_PAY_IOV || (npay > 0 && !payload))
        return -EINVAL;
    for (int i = 0; i < npay; i++) {
        plen += payload[i].len;
        iov[1 + i] = payload[i];
    }
    if (!meta)
        meta = &none;
    /* No device offloads for IPv6 yet; the I/O layer's payload sum is not one. */
    meta->flags &= STK_TX_L4_SUM;
    if (plen > 65535u || STK_IP6_HLEN + plen > e->cfg.mtu)
        return -EMSGSIZE;

    uint8_t nexthop[16], mac[6];
    bool mcast = stk__ip6_is_mcast(dst);
    if (!mcast && stk__ip6_route(e, dst, nexthop) != 0) {
        e->ctr.ip6_drop_noroute++;
        return -EHOSTUNREACH;
    }
    uint8_t *ip = hdr + STK_ETH_HLEN;
    stk__put32(ip, 6u << 28 | (uint32_t)meta->tos << 20); /* version, traffic class, flow 0 */
    stk__put16(ip + 4, (uint16_t)plen);
    ip[6] = proto;
    ip[7] = hop_limit;
    if (src)
        memcpy(ip + 8, src, 16);
    else
        stk__ip6_select_src(e, dst, ip + 8);
    memcpy(ip + 24, dst, 16);
    meta->l2_len = STK_ETH_HLEN;
    meta->l3_len = STK_IP6_HLEN;

    memcpy(hdr + 6, e->cfg.mac, 6);
    stk__put16(hdr + 12, STK_ETH_P_IPV6);
    iov[0].base = hdr;
    iov[0].len = STK_L2L3_HLEN6 + l4_len;

    e->ctr.ip6_out++;
    if (mcast) {
        stk__ip6_mcast_mac(dst, mac);
        memcpy(hdr, mac, 6);
        return stk__eth_tx(e, iov, 1 + npay, meta);
    }
    int rc = stk__nd_resolve(e, now, nexthop, hdr);
    if (rc == -EAGAIN)
        return stk__nd_queue(e, now, nexthop, iov, 1 + npay, meta);
    if (rc < 0)
        return rc;
    return stk__eth_tx(e, iov, 1 + npay, meta);
}

int stk__ip6_send(struct stk_engine *e, stk_time_t now, const uint8_t *src, const uint8_t dst[16],
                  uint8_t proto, uint8_t *hdr, size_t l4_len, const struct stk_iov *payload,
                  int npay, struct stk_txmeta *meta)
{
    return stk__ip6_send_hl(e, now, src, dst, proto, STK_IP6_HOP_LIMIT, hdr, l4_len, payload, npay,
                            meta);
}

/* ---- ICMPv6 ---------------------------------------------------------------------------- */

/* RFC 4443 section 2.4 (f): a token bucket shared by every destination. */
static bool error_allowed(struct stk_engine *e, stk_time_t now)
{
    struct stk__nd *d = e->nd;
    if (now > d->err_stamp) {
        uint64_t add = (now - d->err_stamp) * ICMP6_ERR_PER_S / STK_US_PER_S;
        if (add > 0) {
            d->err_tokens = (uint32_t)stk__min64(ICMP6_ERR_BURST, d->err_tokens + add);
            d->err_stamp = now;
        }
    }
    if (d->err_tokens == 0)
        return false;
    d->err_tokens--;
    return true;
}

/* The packet is an ICMPv6 error message: its header chain (walked leniently, as it may be
 * the malformed packet we complain about) leads to an ICMPv6 type below 128. */
static bool is_icmp6_error(const struct stk_ipv6_pkt *pkt)
{
    const uint8_t *p = pkt->ip;
    size_t len = pkt->ip_len, off = STK_IP6_HLEN;
    uint8_t nh = p[6];
    for (int n = 0; n < IP6_MAXEXT; n++) {
        if (nh != NH_HOPOPTS && nh != NH_DSTOPTS && nh != NH_ROUTING && nh != NH_FRAGMENT)
            break;
        if (len - off < 8)
            return false;
        if (nh == NH_FRAGMENT && (stk__get16(p + off + 2) & 0xfff8) != 0)
            return false; /* a later fragment: the upper-layer header is elsewhere */
        size_t hlen = nh == NH_FRAGMENT ? 8 : ((size_t)p[off + 1] + 1) * 8;
        nh = p[off];
        off += hlen;
        if (off >= len)
            return false;
    }
    return nh == STK_IP_PROTO_ICMPV6 && off < len && p[off] < 128;
}

void stk__icmp6_error(struct stk_engine *e, stk_time_t now, const struct stk_ipv6_pkt *pkt,
                      uint8_t type, uint8_t code, uint32_t param)
{
    /* Section 2.4 (e): never about an error message, about a packet to a group (or a
     * link-layer group) except Packet Too Big and Parameter Problem code 2, or about a
     * packet whose source does not name a single node. */
    bool mcast_ok = type == ICMP6_PACKET_TOO_BIG || (type == ICMP6_PARAM_PROB && code == 2);
    if (is_icmp6_error(pkt) || ((pkt->dst_mcast || pkt->l2_mcast) && !mcast_ok) ||
        stk__ip6_is_unspec(pkt->src) || stk__ip6_is_mcast(pkt->src))
        return;
    if (!error_allowed(e, now)) {
        e->ctr.icmp6_errors_limited++;
        return;
    }
    uint8_t hdr[STK_L2L3_HLEN6 + ICMP6_HLEN];
    uint8_t *m = hdr + STK_L2L3_HLEN6;
    uint8_t src[16];
    /* From the address the packet was sent to when that is ours, else a chosen one. */
    if (pkt->dst_mcast)
        stk__ip6_select_src(e, pkt->src, src);
    else
        memcpy(src, pkt->dst, 16);
    /* As much of the invoking packet as fits in the minimum MTU (section 2.4 (c)), which
     * our MTU is never below while IPv6 is on. */
    size_t quote = stk__min64(pkt->ip_len, IP6_MIN_MTU - STK_IP6_HLEN - ICMP6_HLEN);
    m[0] = type;
    m[1] = code;
    stk__put16(m + 2, 0);
    stk__put32(m + 4, param);
    uint32_t sum =
        stk__csum_pseudo6(src, pkt->src, STK_IP_PROTO_ICMPV6, (uint32_t)(ICMP6_HLEN + quote));
    sum = stk__csum_add(sum, m, ICMP6_HLEN);
    sum = stk__csum_add(sum, pkt->ip, quote);
    stk__put16(m + 2, stk__csum_fold(sum));
    struct stk_iov data = {pkt->ip, quote};
    if (stk__ip6_send(e, now, src, pkt->src, STK_IP_PROTO_ICMPV6, hdr, ICMP6_HLEN, &data, 1,
                      NULL) == 0)
        e->ctr.icmp6_errors_out++;
}

static void icmp6_echo(struct stk_engine *e, stk_time_t now, const struct stk_ipv6_pkt *pkt)
{
    uint8_t hdr[STK_L2L3_HLEN6 + ICMP6_HLEN];
    uint8_t *m = hdr + STK_L2L3_HLEN6;
    uint8_t src[16];
    struct stk_iov data = {pkt->l4 + ICMP6_HLEN, pkt->l4_len - ICMP6_HLEN};

    /* RFC 4443 section 4.2: the reply goes to the request's source, from the address the
     * request was sent to, or for a request to a group (answered, as Linux does by
     * default) from one of ours. A reply beyond our MTU goes as fragments (to a unicast
     * source; a request to a group is answered only within the MTU). */
    if (stk__ip6_is_unspec(pkt->src) ||
        (pkt->dst_mcast && STK_IP6_HLEN + pkt->l4_len > e->cfg.mtu)) {
        e->ctr.icmp6_drop++;
        return;
    }
    if (pkt->dst_mcast)
        stk__ip6_select_src(e, pkt->src, src);
    else
        memcpy(src, pkt->dst, 16);
    m[0] = ICMP6_ECHO_REPLY;
    m[1] = 0;
    stk__put16(m + 2, 0);
    memcpy(m + 4, pkt->l4 + 4, 4); /* identifier and sequence number, unchanged */
    uint32_t sum = stk__csum_pseudo6(src, pkt->src, STK_IP_PROTO_ICMPV6, (uint32_t)pkt->l4_len);
    sum = stk__csum_add(sum, m, ICMP6_HLEN);
    sum = stk__csum_add(sum, data.base, data.len);
    stk__put16(m + 2, stk__csum_fold(sum));
    if (stk__ip6_send_frags(e, now, src, pkt->src, STK_IP_PROTO_ICMPV6, hdr, ICMP6_HLEN, &data, 1,
                            0) == 0)
        e->ctr.icmp6_echo_replies++;
}

/* An ICMPv6 error (RFC 4443 section 2.4 (a)): the quote starts after the 8-byte header with
 * the IPv6 header we sent; its extension headers are walked (as is_icmp6_error) to the
 * upper-layer header, which must be there with at least 8 bytes (ports and, for TCP, the
 * sequence number). */
static void icmp6_error_in(struct stk_engine *e, stk_time_t now, const struct stk_ipv6_pkt *pkt)
{
    if (pkt->l4_len < ICMP6_HLEN + STK_IP6_HLEN)
        return;
    const uint8_t *q = pkt->l4 + ICMP6_HLEN;
    size_t len = pkt->l4_len - ICMP6_HLEN, off = STK_IP6_HLEN;
    if ((q[0] >> 4) != 6)
        return;
    uint8_t nh = q[6];
    for (int n = 0; n < IP6_MAXEXT; n++) {
        if (nh != NH_HOPOPTS && nh != NH_DSTOPTS && nh != NH_ROUTING && nh != NH_FRAGMENT)
            break;
        if (len - off < 8)
            return;
        if (nh == NH_FRAGMENT && (stk__get16(q + off + 2) & 0xfff8) != 0)
            return; /* a later fragment: no upper-layer header quoted */
        size_t hlen = nh == NH_FRAGMENT ? 8 : ((size_t)q[off + 1] + 1) * 8;
        nh = q[off];
        off += hlen;
        if (off >= len)
            return;
    }
    if (nh == STK_IP_PROTO_TCP && len - off >= 8)
        stk__tcp6_icmp_error(e, now, pkt->l4[0], pkt->l4[1], stk__get32(pkt->l4 + 4), q + 8, q + 24,
                             q + off, len - off);
    else if (nh == STK_IP_PROTO_UDP && len - off >= 8)
        stk__udp6_icmp_error(e, pkt->l4[0], pkt->l4[1], q + 8, q + 24, q + off, len - off);
}

static void icmp6_input(struct stk_engine *e, stk_time_t now, const struct stk_ipv6_pkt *pkt)
{
    e->ctr.icmp6_in++;
    /* The checksum covers the pseudo-header (RFC 4443 section 2.3); always checked here. */
    if (pkt->l4_len < 4 ||
        stk__csum_fold(stk__csum_add(
            stk__csum_pseudo6(pkt->src, pkt->dst, STK_IP_PROTO_ICMPV6, (uint32_t)pkt->l4_len),
            pkt->l4, pkt->l4_len)) != 0) {
        e->ctr.icmp6_drop++;
        return;
    }
    uint8_t type = pkt->l4[0];
    switch (type) {
    case ICMP6_ECHO_REQUEST:
        if (pkt->l4_len < ICMP6_HLEN) {
            e->ctr.icmp6_drop++;
            return;
        }
        icmp6_echo(e, now, pkt);
        return;
    case ND_NEIGHBOR_SOLICIT:
    case ND_NEIGHBOR_ADVERT:
        stk__nd_input(e, now, pkt);
        return;
    default:
        break;
    }
    if (type < 128) {
        /* Errors (destination unreachable, packet too big, time exceeded, parameter
         * problem, and unknown ones, section 2.4 (a)) go to the upper layer that sent the
         * quoted packet: TCP, or UDP (connected sockets, hard errors). */
        e->ctr.icmp6_errors_in++;
        icmp6_error_in(e, now, pkt);
        return;
    }
    /* Echo replies (we send no requests), router solicitations and advertisements (the
     * gateway is static), redirects, MLD queries and reports (we join only link-scope
     * groups, which MLD does not report; RFC 3810 section 6), and unknown informational
     * messages (discarded, section 2.4 (b)). */
    e->ctr.icmp6_ignored++;
}

/* ---- IPv6 input ------------------------------------------------------------------------ */

/* Walks a hop-by-hop or destination options header (RFC 8200 section 4.2). off is the
 * header's offset from the IPv6 header. Returns 0 to go on, or -1 when the packet was
 * dropped (counted, with a Parameter Problem where the option type asks for one). */
static int walk_options(struct stk_engine *e, stk_time_t now, const struct stk_ipv6_pkt *pkt,
                        size_t off, size_t hlen)
{
    const uint8_t *h = pkt->ip + off;
    size_t i = 2;
    while (i < hlen) {
        uint8_t type = h[i];
        if (type == 0) { /* Pad1 */
            i++;
            continue;
        }
        if (i + 2 > hlen || i + 2 + h[i + 1] > hlen) {
            e->ctr.ip6_drop_exthdr++; /* an option overruns its header */
            return -1;
        }
        if (type != 1) { /* PadN is skipped like any option with action 00 */
            /* The two high bits say what a node that does not know the option does. We
             * know none (Router Alert, Jumbo Payload and the rest are not used by a host
             * without MLD or jumbograms). */
            switch (type >> 6) {
            case 0: /* skip */
                break;
            case 1: /* discard silently */
                e->ctr.ip6_drop_opt++;
                return -1;
            case 2: /* discard, Parameter Problem code 2, even to a group */
            case 3: /* discard, Parameter Problem code 2, unless sent to a group */
                e->ctr.ip6_drop_opt++;
                if ((type >> 6) == 2 || !pkt->dst_mcast)
                    stk__icmp6_error(e, now, pkt, ICMP6_PARAM_PROB, 2, (uint32_t)(off + i));
                return -1;
            }
        }
        i += 2 + (size_t)h[i + 1];
    }
    return 0;
}

/* reasm: p is a packet ipfrag.c rebuilt from fragments, in which a further (non-atomic)
 * fragment is dropped rather than reassembled again (no nesting, no recursion). */
static void ip6_input(struct stk_engine *e, stk_time_t now, const uint8_t *p, size_t len,
                      uint32_t rx_flags, bool l2_mcast, bool reasm)
{
    if (!reasm)
        e->ctr.ip6_in++;
    if (len < STK_IP6_HLEN) {
        e->ctr.ip6_drop_len++;
        return;
    }
    if ((p[0] >> 4) != 6) {
        e->ctr.ip6_drop_hdr++;
        return;
    }
    size_t plen = stk__get16(p + 4);
    /* The frame may carry Ethernet padding after the packet, never less than it. A payload
     * length of 0 with a Jumbo Payload option (RFC 2675) is not supported: such a packet
     * would exceed any MTU we run on, so it is simply short here. */
    if (plen > len - STK_IP6_HLEN) {
        e->ctr.ip6_drop_len++;
        return;
    }
    const uint8_t *src = p + 8, *dst = p + 24;
    /* RFC 4291: a multicast source is never valid; loopback never appears on a link; our
     * own address as a source is a looped-back packet or a duplicate. */
    if (stk__ip6_is_mcast(src) || is_loopback(src) || stk__ip6_is_ours(e, src)) {
        e->ctr.ip6_drop_src++;
        return;
    }
    bool dst_mcast = stk__ip6_is_mcast(dst);
    if (dst_mcast ? !group_wanted(e, dst) : !stk__ip6_is_ours(e, dst)) {
        e->ctr.ip6_drop_dst++;
        return;
    }
    struct stk_ipv6_pkt pkt = {
        .src = src,
        .dst = dst,
        .hop_limit = p[7],
        .tclass = (uint8_t)(stk__get16(p) >> 4),
        .dst_mcast = dst_mcast,
        .l2_mcast = l2_mcast,
        .ip = p,
        .ip_len = STK_IP6_HLEN + plen,
        .rx_flags = rx_flags,
    };

    /* The extension header walk (RFC 8200 section 4): off is where the header named by
     * nh starts, nh_off where that Next Header value sits (for Parameter Problem). */
    uint8_t nh = p[6];
    size_t off = STK_IP6_HLEN, nh_off = 6;
    for (int n = 0;; n++) {
        if (nh != NH_HOPOPTS && nh != NH_DSTOPTS && nh != NH_ROUTING && nh != NH_FRAGMENT)
            break;
        if (n == IP6_MAXEXT) {
            e->ctr.ip6_drop_exthdr++;
            return;
        }
        if (nh == NH_HOPOPTS && n != 0) {
            /* Section 4.1: hop-by-hop options only right after the IPv6 header. */
            e->ctr.ip6_drop_exthdr++;
            stk__icmp6_error(e, now, &pkt, ICMP6_PARAM_PROB, 1, (uint32_t)nh_off);
            return;
        }
        if (pkt.ip_len - off < 8) {
            e->ctr.ip6_drop_exthdr++;
            return;
        }
        const uint8_t *h = p + off;
        size_t hlen = nh == NH_FRAGMENT ? 8 : ((size_t)h[1] + 1) * 8;
        if (hlen > pkt.ip_len - off) {
            e->ctr.ip6_drop_exthdr++;
            return;
        }
        if (nh == NH_HOPOPTS || nh == NH_DSTOPTS) {
            if (walk_options(e, now, &pkt, off, hlen) != 0)
                return;
        } else if (nh == NH_ROUTING) {
            uint8_t rtype = h[2], left = h[3];
            if (rtype == 0) {
                /* RFC 5095: type 0 is deprecated; we never process it, and drop the packet
                 * (with the Parameter Problem of an unrecognised type when segments are
                 * left, which RFC 5095 section 3 asks for). */
                e->ctr.ip6_drop_rh++;
                if (left != 0)
                    stk__icmp6_error(e, now, &pkt, ICMP6_PARAM_PROB, 0, (uint32_t)(off + 2));
                return;
            }
            if (left != 0) {
                /* Section 4.4: an unrecognised routing type with segments left: Parameter
                 * Problem code 0 at the type. A host forwards nothing, so every type is
                 * unrecognised here. */
                e->ctr.ip6_drop_rh++;
                stk__icmp6_error(e, now, &pkt, ICMP6_PARAM_PROB, 0, (uint32_t)(off + 2));
                return;
            }
            /* Segments left 0: ignore the header and go on. */
        } else { /* NH_FRAGMENT */
            uint16_t fo = stk__get16(h + 2);
            if ((fo & 0xfff9) != 0) {
                /* An offset or M: reassembly (section 4.5, ipfrag.c), after which the whole
                 * packet is walked again from its fixed header. An atomic fragment (offset
                 * 0, M clear) is processed as a whole packet (RFC 6946). */
                if (reasm) {
                    e->ctr.ip6_drop_frag++;
                    return;
                }
                struct stk_ipf_whole *w = stk__ipfrag6_input(e, now, &pkt, off);
                if (w) {
                    ip6_input(e, now, w->data, w->len, 0, l2_mcast, true);
                    stk__ipfrag_release(e, w);
                }
                return;
            }
        }
        nh_off = off;
        nh = h[0];
        off += hlen;
    }
    pkt.proto = nh;
    pkt.l4 = p + off;
    pkt.l4_len = pkt.ip_len - off;
    switch (nh) {
    case STK_IP_PROTO_ICMPV6:
        icmp6_input(e, now, &pkt);
        return;
    case NH_NONE:
        return; /* nothing follows (section 4.7) */
    case NH_TCP:
        stk__tcp6_input(e, now, &pkt);
        return;
    case NH_UDP:
        stk__udp6_input(e, now, &pkt);
        return;
    default:
        /* Section 4: an unrecognised Next Header: Parameter Problem code 1 pointing at it. */
        e->ctr.ip6_drop_proto++;
        stk__icmp6_error(e, now, &pkt, ICMP6_PARAM_PROB, 1, (uint32_t)nh_off);
        return;
    }
}

void stk__ip6_input(struct stk_engine *e, stk_time_t now, const uint8_t *p, size_t len,
                    uint32_t rx_flags, bool l2_mcast)
{
    ip6_input(e, now, p, len, rx_flags, l2_mcast, false);
}

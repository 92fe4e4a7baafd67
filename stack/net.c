/*
 * net.c - Ethernet II, IPv4 and ICMP: frame dispatch, IPv4 validation and output, echo
 * (fragments: ipfrag.c).
 *
 * Input is parsed once into a struct stk_ipv4_pkt that has passed every check below; the
 * transport layers never look at the Ethernet or IPv4 headers themselves.
 */
#include <string.h>

#include "stk_int.h"
#include "udp.h"

#define ETH_P_VLAN     0x8100 /* IEEE 802.1Q */
#define ETH_P_QINQ     0x88a8 /* IEEE 802.1ad */
#define IP_DF          0x4000
#define IP_MF          0x2000
#define IP_OFFMASK     0x1fff
#define IP_TTL         64
#define IP_MAXPACKET   65535u
#define ICMP_HLEN      8
#define ICMP_ECHOREPLY 0
#define ICMP_UNREACH   3
#define ICMP_ECHO      8
#define ICMP_TIMXCEED  11
#define ICMP_PARAMPROB 12

/* stk_iov pieces of payload stk__ip_send accepts: TCP sends at most the two pieces of a
 * ring, ICMP one; a fixed bound keeps the frame's iov array on the stack. */
#define IP_MAX_PAY_IOV 7

static const uint8_t eth_broadcast[6] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};

static uint32_t subnet_mask(const struct stk_engine *e)
{
    return e->cfg.prefix == 0 ? 0 : 0xffffffffu << (32 - e->cfg.prefix);
}

/* The directed broadcast of our subnet. /31 and /32 have none (RFC 3021). */
bool stk__ip_is_subnet_bcast(const struct stk_engine *e, uint32_t a)
{
    uint32_t mask = subnet_mask(e);
    if (e->cfg.prefix > 30)
        return false;
    return (a & mask) == (e->cfg.ip & mask) && (a | mask) == 0xffffffffu;
}

/* Addresses that can never be the unicast peer of a connection (RFC 1122 3.2.1.3, RFC 6890):
 * "this network" 0/8, loopback 127/8, multicast 224/4, reserved 240/4 with the limited
 * broadcast, the subnet's broadcast, and our own address. */
static bool is_martian(const struct stk_engine *e, uint32_t a)
{
    uint32_t top = a >> 24;
    return top == 0 || top == 127 || top >= 224 || a == e->cfg.ip || stk__ip_is_subnet_bcast(e, a);
}

uint32_t stk__ip_route(const struct stk_engine *e, uint32_t dst)
{
    if (is_martian(e, dst))
        return 0;
    if (((dst ^ e->cfg.ip) & subnet_mask(e)) == 0)
        return dst;
    return e->cfg.gateway;
}

int stk__eth_tx(struct stk_engine *e, const struct stk_iov *iov, int n,
                const struct stk_txmeta *meta)
{
    /* The device layer always gets metadata, so it never has to guess the header sizes. */
    struct stk_txmeta none = {.l2_len = STK_ETH_HLEN};
    int rc = e->cfg.tx(e->cfg.io_ctx, iov, n, meta ? meta : &none);
    if (rc < 0) {
        e->ctr.tx_fail++;
        return rc;
    }
    e->ctr.eth_out++;
    return 0;
}

int stk__ip_send(struct stk_engine *e, stk_time_t now, uint32_t dst, uint8_t proto, uint8_t *hdr,
                 size_t l4_len, const struct stk_iov *payload, int npay, struct stk_txmeta *meta)
{
    struct stk_iov iov[1 + IP_MAX_PAY_IOV];
    struct stk_txmeta none = {0};
    size_t total = STK_IP_HLEN + l4_len;

    if (npay < 0 || npay > IP_MAX_PAY_IOV || (npay > 0 && !payload))
        return -EINVAL;
    for (int i = 0; i < npay; i++) {
        total += payload[i].len;
        iov[1 + i] = payload[i];
    }
    if (!meta)
        meta = &none;
    /* A datagram never exceeds the 16-bit total length; beyond the MTU only the device's
     * segmentation offload may take it. What is sent here always has DF (TCP does path MTU
     * discovery); datagrams that may be fragmented go through stk__ip_send_frags. */
    if (total > IP_MAXPACKET || (total > e->cfg.mtu && !(meta->flags & STK_TX_TSO)))
        return -EMSGSIZE;
    /* A broadcast (only UDP sends one, with SO_BROADCAST) goes to the Ethernet broadcast
     * address without ARP. */
    bool bcast = dst == 0xffffffffu || stk__ip_is_subnet_bcast(e, dst);
    uint32_t nexthop = bcast ? dst : stk__ip_route(e, dst);
    if (nexthop == 0) {
        e->ctr.ip_drop_noroute++;
        return -EHOSTUNREACH;
    }

    uint8_t *ip = hdr + STK_ETH_HLEN;
    ip[0] = 0x45; /* version 4, 5 words: no options are ever sent */
    ip[1] = meta ? meta->tos : 0;
    stk__put16(ip + 2, (uint16_t)total);
    stk__put16(ip + 4, stk__ip_next_id(e));
    stk__put16(ip + 6, IP_DF);
    ip[8] = IP_TTL;
    ip[9] = proto;
    stk__put16(ip + 10, 0);
    stk__put32(ip + 12, e->cfg.ip);
    stk__put32(ip + 16, dst);
    if (!(meta->flags & STK_TX_IP_CSUM))
        stk__put16(ip + 10, stk__csum_fold(stk__csum_add(0, ip, STK_IP_HLEN)));
    meta->l2_len = STK_ETH_HLEN;
    meta->l3_len = STK_IP_HLEN;

    memcpy(hdr + 6, e->cfg.mac, 6);
    stk__put16(hdr + 12, STK_ETH_P_IP);
    iov[0].base = hdr;
    iov[0].len = STK_L2L3_HLEN + l4_len;

    e->ctr.ip_out++;
    if (bcast) {
        memcpy(hdr, eth_broadcast, 6);
        return stk__eth_tx(e, iov, 1 + npay, meta);
    }
    int rc = stk__arp_resolve(e, now, nexthop, hdr);
    if (rc == -EAGAIN)
        return stk__arp_queue(e, now, nexthop, iov, 1 + npay, meta);
    if (rc < 0)
        return rc;
    return stk__eth_tx(e, iov, 1 + npay, meta);
}

/* ---- ICMP ----------------------------------------------------------------------------- */

static void icmp_echo(struct stk_engine *e, stk_time_t now, const struct stk_ipv4_pkt *ip)
{
    uint8_t hdr[STK_L2L3_HLEN + ICMP_HLEN];
    uint8_t *icmp = hdr + STK_L2L3_HLEN;
    struct stk_iov data = {ip->l4 + ICMP_HLEN, ip->l4_len - ICMP_HLEN};

    int rc;

    icmp[0] = ICMP_ECHOREPLY;
    icmp[1] = 0;
    stk__put16(icmp + 2, 0);
    memcpy(icmp + 4, ip->l4 + 4, 4); /* identifier and sequence number, unchanged */
    uint32_t sum = stk__csum_add(0, icmp, ICMP_HLEN);
    /* The data starts at an even offset, so its sum can simply be added on. */
    sum = stk__csum_add(sum, data.base, data.len);
    stk__put16(icmp + 2, stk__csum_fold(sum));
    /* The reply is as large as the request: beyond our MTU it goes out in fragments. */
    if (STK_IP_HLEN + ip->l4_len > e->cfg.mtu) {
        struct stk_iov l4[2] = {{icmp, ICMP_HLEN}, data};
        rc = stk__ip_send_frags(e, now, ip->src, STK_IP_PROTO_ICMP, l4, 2, ip->l4_len, 0);
    } else {
        rc = stk__ip_send(e, now, ip->src, STK_IP_PROTO_ICMP, hdr, ICMP_HLEN, &data, 1, NULL);
    }
    if (rc == 0)
        e->ctr.icmp_echo_replies++;
}

void stk__icmp_input(struct stk_engine *e, stk_time_t now, const struct stk_ipv4_pkt *ip)
{
    e->ctr.icmp_in++;
    /* Devices verify only TCP/UDP checksums, so the ICMP checksum is always checked here. */
    if (ip->l4_len < ICMP_HLEN || stk__csum_fold(stk__csum_add(0, ip->l4, ip->l4_len)) != 0) {
        e->ctr.icmp_drop++;
        return;
    }
    switch (ip->l4[0]) {
    case ICMP_ECHO:
        icmp_echo(e, now, ip);
        break;
    case ICMP_UNREACH:
    case ICMP_TIMXCEED:
    case ICMP_PARAMPROB: {
        /* An error quotes the IP header and at least 8 bytes of the datagram it is about
         * (RFC 792): TCP checks it against its connections (RFC 5927); UDP gives
         * connected sockets the hard errors. */
        const uint8_t *q = ip->l4 + ICMP_HLEN;
        size_t qlen = ip->l4_len - ICMP_HLEN;
        if (qlen >= STK_IP_HLEN && q[9] == STK_IP_PROTO_TCP)
            stk__tcp_icmp_error(e, now, ip->l4[0], ip->l4[1], stk__get32(ip->l4 + 4), q, qlen);
        else
            stk__udp_icmp_error(e, ip->l4[0], ip->l4[1], q, qlen);
        break;
    }
    default:
        break;
    }
}

/* ---- IPv4 input ------------------------------------------------------------------------ */

static void ip_input(struct stk_engine *e, stk_time_t now, const uint8_t *p, size_t len,
                     uint32_t rx_flags)
{
    e->ctr.ip_in++;
    if (len < STK_IP_HLEN) {
        e->ctr.ip_drop_len++;
        return;
    }
    size_t hlen = (size_t)(p[0] & 0x0f) * 4;
    if ((p[0] >> 4) != 4 || hlen < STK_IP_HLEN) {
        e->ctr.ip_drop_hdr++;
        return;
    }
    size_t total = stk__get16(p + 2);
    /* The frame may carry Ethernet padding after the datagram, never less than it. */
    if (hlen > len || total < hlen || total > len) {
        e->ctr.ip_drop_len++;
        return;
    }
    if (!(rx_flags & STK_RX_IP_CSUM_OK) && stk__csum_fold(stk__csum_add(0, p, hlen)) != 0) {
        e->ctr.ip_drop_csum++;
        return;
    }
    if (hlen > STK_IP_HLEN) {
        /* Any IP option makes the packet dropped, not skipped: the options a host might
         * meet (source routes, record route, timestamps) either must not be honoured
         * (RFC 7126 recommends dropping source-routed packets) or ask for processing we do
         * not do, and no TCP peer needs them. Dropping also keeps this path simple. */
        e->ctr.ip_drop_opts++;
        return;
    }
    uint32_t src = stk__get32(p + 12), dst = stk__get32(p + 16);
    /* Broadcasts are for UDP only (RFC 1122 4.2.3.10: TCP must not take them). */
    if (dst != e->cfg.ip &&
        !(p[9] == STK_IP_PROTO_UDP && (dst == 0xffffffffu || stk__ip_is_subnet_bcast(e, dst)))) {
        e->ctr.ip_drop_dst++;
        return;
    }
    if (is_martian(e, src)) {
        e->ctr.ip_drop_hdr++;
        return;
    }
    struct stk_ipf_whole *whole = NULL;
    uint16_t frag = stk__get16(p + 6);
    if ((frag & IP_MF) || (frag & IP_OFFMASK)) {
        /* A fragment waits for the rest of its datagram (ipfrag.c); the whole datagram then
         * goes on from here as if it had arrived in one piece. A device cannot have
         * verified the transport checksum of a fragment. */
        whole = stk__ipfrag_input(e, now, p, total);
        if (!whole)
            return;
        p = whole->data;
        total = whole->len;
        rx_flags &= ~(uint32_t)STK_RX_L4_CSUM_OK;
    }

    struct stk_ipv4_pkt pkt = {
        .src = src,
        .dst = dst,
        .proto = p[9],
        .ttl = p[8],
        .tos = p[1],
        .l4 = p + hlen,
        .l4_len = total - hlen,
        .rx_flags = rx_flags,
    };
    switch (pkt.proto) {
    case STK_IP_PROTO_TCP:
        stk__tcp_input(e, now, &pkt);
        break;
    case STK_IP_PROTO_ICMP:
        stk__icmp_input(e, now, &pkt);
        break;
    case STK_IP_PROTO_UDP:
        stk__udp_input(e, now, &pkt);
        break;
    default:
        e->ctr.ip_drop_proto++;
        break;
    }
    stk__ipfrag_release(e, whole);
}

void stk__ip_input(struct stk_engine *e, stk_time_t now, const uint8_t *p, size_t len,
                   uint32_t rx_flags)
{
    ip_input(e, now, p, len, rx_flags);
}

/* ---- Ethernet -------------------------------------------------------------------------- */

void stk__eth_input(struct stk_engine *e, stk_time_t now, const uint8_t *frame, size_t len,
                    uint32_t rx_flags)
{
    e->ctr.eth_in++;
    if (len < STK_ETH_HLEN) {
        e->ctr.eth_drop_short++;
        return;
    }
    /* Our MAC, broadcast, or an IPv6 group we listen to (33:33:...: all-nodes and our
     * solicited-node groups); every other group is someone else's. */
    bool l2_mcast = frame[0] & 1;
    if (memcmp(frame, e->cfg.mac, 6) != 0 && memcmp(frame, eth_broadcast, 6) != 0 &&
        !stk__ip6_mac_wanted(e, frame)) {
        e->ctr.eth_drop_dst++;
        return;
    }
    const uint8_t *body = frame + STK_ETH_HLEN;
    size_t blen = len - STK_ETH_HLEN;
    switch (stk__get16(frame + 12)) {
    case STK_ETH_P_IP:
        ip_input(e, now, body, blen, rx_flags);
        break;
    case STK_ETH_P_ARP:
        stk__arp_input(e, now, body, blen);
        break;
    case STK_ETH_P_IPV6:
        if (!stk__ip6_enabled(e)) {
            e->ctr.eth_drop_type++;
            break;
        }
        stk__ip6_input(e, now, body, blen, rx_flags, l2_mcast);
        break;
    case ETH_P_VLAN:
    case ETH_P_QINQ:
        /* VLAN tags are expected to be stripped by the device or not used at all; a
         * tagged frame is dropped like any other unknown type. */
    default:
        e->ctr.eth_drop_type++;
        break;
    }
}

/*
 * nd.c - IPv6 neighbour discovery (RFC 4861) for a host: answers for our addresses, the
 * neighbour cache, and resolution with a bounded queue of frames waiting for it.
 *
 * Like arp.c, everything is bounded: ND_ENTRIES entries with a chained hash over them, and
 * at most ND_QMAX frames (ND_QPER per neighbour) waiting, each copied into its own buffer.
 *
 * Entry life cycle (RFC 4861 section 7.3.2; the timers of section 10):
 *   INCOMPLETE: a multicast solicitation went to the target's solicited-node group; it is
 *     repeated every RetransTimer (1 s), and after MAX_MULTICAST_SOLICIT (3) without an
 *     answer the entry is removed and its frames dropped (nd_resolve_fail).
 *   REACHABLE: confirmed by a solicited advertisement (or stk__nd_confirm) less than
 *     cfg.nd_reachable_us ago; then STALE.
 *   STALE: the address is known but unconfirmed (learnt from a solicitation, an unsolicited
 *     advertisement, or aged out). Sending to it moves it to DELAY; unused, it is forgotten
 *     after ND_STALE_GC_US.
 *   DELAY: used while STALE; if nothing confirms it within DELAY_FIRST_PROBE_TIME (5 s) it
 *     becomes PROBE.
 *   PROBE: unicast solicitations to the cached MAC every RetransTimer, which stays in use;
 *     MAX_UNICAST_SOLICIT (3) without an answer removes the entry.
 * Router advertisements, redirects and the IsRouter flag are not used: the gateway is
 * static (cfg.gateway6).
 */
#include <string.h>

#include "ip6.h"

#define NS_LEN  24 /* type, code, checksum, reserved, target */
#define OPT_LEN 8  /* a link-layer address option on Ethernet */

static unsigned hash_ip6(const uint8_t a[16])
{
    /* The low 32 bits differ between neighbours; the prefix rarely does. */
    return (stk__get32(a + 12) * 0x9e3779b1u) >> 26; /* top 6 bits: ND_BUCKETS == 64 */
}

static uint16_t lookup(const struct stk__nd *d, const uint8_t ip[16])
{
    for (uint16_t i = d->bucket[hash_ip6(ip)]; i != ND_NIL; i = d->ent[i].next)
        if (memcmp(d->ent[i].ip, ip, 16) == 0)
            return i;
    return ND_NIL;
}

static void set_deadline(struct stk__nd *d, struct nd_entry *en, stk_time_t t)
{
    en->deadline = t;
    if (t < d->next_timer)
        d->next_timer = t;
}

/* Builds and sends a solicitation or advertisement: hop limit 255 (section 7.1), a
 * link-layer address option, the ICMPv6 checksum over the pseudo-header. */
static int send_nd(struct stk_engine *e, stk_time_t now, uint8_t type, uint8_t flags,
                   const uint8_t src[16], const uint8_t dst[16], const uint8_t target[16],
                   bool with_opt)
{
    uint8_t hdr[STK_L2L3_HLEN6 + NS_LEN + OPT_LEN];
    uint8_t *m = hdr + STK_L2L3_HLEN6;
    size_t len = NS_LEN + (with_opt ? OPT_LEN : 0);
    memset(m, 0, NS_LEN + OPT_LEN);
    m[0] = type;
    m[4] = flags;
    memcpy(m + 8, target, 16);
    if (with_opt) {
        m[24] = type == ND_NEIGHBOR_SOLICIT ? ND_OPT_SLLA : ND_OPT_TLLA;
        m[25] = 1; /* in units of 8 bytes */
        memcpy(m + 26, e->cfg.mac, 6);
    }
    uint32_t sum = stk__csum_pseudo6(src, dst, STK_IP_PROTO_ICMPV6, (uint32_t)len);
    stk__put16(m + 2, stk__csum_fold(stk__csum_add(sum, m, len)));
    return stk__ip6_send_hl(e, now, src, dst, STK_IP_PROTO_ICMPV6, 255, hdr, len, NULL, 0, NULL);
}

/* Asks for en's MAC: to its solicited-node group while INCOMPLETE, unicast while PROBE. */
static void send_solicit(struct stk_engine *e, stk_time_t now, struct nd_entry *en)
{
    uint8_t src[16], dst[16];
    en->tries++;
    set_deadline(e->nd, en, now + ND_RETRANS_US);
    stk__ip6_select_src(e, en->ip, src);
    if (en->state == ND_PROBE)
        memcpy(dst, en->ip, 16);
    else
        stk__ip6_solicited_node(en->ip, dst);
    if (send_nd(e, now, ND_NEIGHBOR_SOLICIT, 0, src, dst, en->ip, true) == 0)
        e->ctr.nd_ns_out++;
}

/* Sends the waiting frames in the order they were queued, now that en's MAC is known. */
static void queue_flush(struct stk_engine *e, struct nd_entry *en)
{
    stk__pend_flush(e, &e->nd->q, &en->q, en->mac);
}

static void entry_free(struct stk_engine *e, uint16_t idx)
{
    struct stk__nd *d = e->nd;
    struct nd_entry *en = &d->ent[idx];
    stk__pend_drop_all(e, &d->q, &en->q, &e->ctr.nd_queue_drop);
    uint16_t *pp = &d->bucket[hash_ip6(en->ip)];
    while (*pp != ND_NIL && *pp != idx)
        pp = &d->ent[*pp].next;
    if (*pp == idx)
        *pp = en->next;
    memset(en, 0, sizeof(*en));
    en->state = ND_FREE;
    stk__pend_list_init(&en->q);
    en->next = d->free_ent;
    d->free_ent = idx;
}

/* Which entry to give up when the table is full: the oldest resolved one; failing that the
 * oldest pending one with nothing queued; only then one whose frames must be dropped. */
static uint16_t pick_victim(const struct stk__nd *d)
{
    uint16_t best[3] = {ND_NIL, ND_NIL, ND_NIL};
    for (uint16_t i = 0; i < ND_ENTRIES; i++) {
        const struct nd_entry *en = &d->ent[i];
        int cls;
        if (en->state == ND_FREE)
            continue;
        if (en->state != ND_INCOMPLETE)
            cls = 0;
        else
            cls = en->q.len == 0 ? 1 : 2;
        if (best[cls] == ND_NIL || en->stamp < d->ent[best[cls]].stamp)
            best[cls] = i;
    }
    return best[0] != ND_NIL ? best[0] : best[1] != ND_NIL ? best[1] : best[2];
}

/* A fresh entry for ip (not in the table) in state st, evicting one if the table is full. */
static struct nd_entry *entry_new(struct stk_engine *e, stk_time_t now, const uint8_t ip[16],
                                  enum nd_state st)
{
    struct stk__nd *d = e->nd;
    if (d->free_ent == ND_NIL)
        entry_free(e, pick_victim(d));
    uint16_t idx = d->free_ent;
    struct nd_entry *en = &d->ent[idx];
    d->free_ent = en->next;
    memset(en, 0, sizeof(*en));
    memcpy(en->ip, ip, 16);
    en->state = (uint8_t)st;
    en->stamp = now;
    stk__pend_list_init(&en->q);
    unsigned b = hash_ip6(ip);
    en->next = d->bucket[b];
    d->bucket[b] = idx;
    return en;
}

static void set_reachable(struct stk_engine *e, stk_time_t now, struct nd_entry *en)
{
    en->state = ND_REACHABLE;
    en->tries = 0;
    en->stamp = now;
    set_deadline(e->nd, en, now + e->cfg.nd_reachable_us);
}

static void set_stale(struct stk_engine *e, stk_time_t now, struct nd_entry *en)
{
    en->state = ND_STALE;
    en->tries = 0;
    set_deadline(e->nd, en, now + ND_STALE_GC_US);
}

/* The modified EUI-64 identifier of a MAC (RFC 4291 appendix A): ff:fe in the middle and
 * the universal/local bit inverted. */
static void linklocal_from_mac(const uint8_t mac[6], uint8_t a[16])
{
    memset(a, 0, 16);
    a[0] = 0xfe;
    a[1] = 0x80;
    a[8] = mac[0] ^ 0x02;
    a[9] = mac[1];
    a[10] = mac[2];
    a[11] = 0xff;
    a[12] = 0xfe;
    a[13] = mac[3];
    a[14] = mac[4];
    a[15] = mac[5];
}

int stk__nd_create(struct stk_engine *e, stk_time_t now)
{
    struct stk__nd *d = stk__alloc(e, sizeof(*d));
    if (!d)
        return -ENOMEM;
    d->enabled = e->cfg.mtu >= 1280;
    linklocal_from_mac(e->cfg.mac, d->ll);
    d->has_global = !stk__ip6_is_unspec(e->cfg.ip6);
    d->has_gw = !stk__ip6_is_unspec(e->cfg.gateway6);
    for (unsigned i = 0; i < ND_BUCKETS; i++)
        d->bucket[i] = ND_NIL;
    for (unsigned i = 0; i < ND_ENTRIES; i++) {
        d->ent[i].next = i + 1 < ND_ENTRIES ? (uint16_t)(i + 1) : ND_NIL;
        stk__pend_list_init(&d->ent[i].q);
    }
    d->free_ent = 0;
    stk__pend_init(&d->q, d->qf, ND_QMAX);
    d->next_timer = UINT64_MAX;
    d->err_stamp = now;
    d->err_tokens = ICMP6_ERR_BURST;
    e->nd = d;
    return 0;
}

void stk__nd_destroy(struct stk_engine *e)
{
    struct stk__nd *d = e->nd;
    if (!d)
        return;
    stk__pend_fini(e, &d->q);
    stk__free(e, d, sizeof(*d));
    e->nd = NULL;
}

int stk__nd_resolve(struct stk_engine *e, stk_time_t now, const uint8_t ip[16], uint8_t mac[6])
{
    struct stk__nd *d = e->nd;
    if (!d->enabled || stk__ip6_is_unspec(ip) || stk__ip6_is_mcast(ip) || stk__ip6_is_ours(e, ip))
        return -EHOSTUNREACH;
    uint16_t idx = lookup(d, ip);
    if (idx == ND_NIL) {
        struct nd_entry *en = entry_new(e, now, ip, ND_INCOMPLETE);
        send_solicit(e, now, en);
        return -EAGAIN;
    }
    struct nd_entry *en = &d->ent[idx];
    if (en->state == ND_INCOMPLETE)
        return -EAGAIN;
    if (en->state == ND_STALE) {
        /* Section 7.3.3: the first use of a STALE entry starts the DELAY timer. */
        en->state = ND_DELAY;
        set_deadline(d, en, now + ND_DELAY_US);
    }
    memcpy(mac, en->mac, 6);
    return 0;
}

int stk__nd_queue(struct stk_engine *e, stk_time_t now, const uint8_t ip[16],
                  const struct stk_iov *iov, int n, const struct stk_txmeta *meta)
{
    struct stk__nd *d = e->nd;
    size_t len = 0;
    for (int i = 0; i < n; i++)
        len += iov[i].len;
    if (n < 1 || len < STK_ETH_HLEN || stk__ip6_is_unspec(ip) || stk__ip6_is_mcast(ip))
        return -EINVAL;
    if (len > STK_ETH_HLEN + STK_IP6_HLEN + 65535u)
        return -EMSGSIZE;

    uint16_t idx = lookup(d, ip);
    struct nd_entry *en;
    if (idx == ND_NIL) {
        en = entry_new(e, now, ip, ND_INCOMPLETE);
        send_solicit(e, now, en);
    } else {
        en = &d->ent[idx];
    }
    int rc = stk__pend_add(e, &d->q, &en->q, ND_QPER, iov, n, len, meta, &e->ctr.nd_queue_drop);
    if (rc < 0)
        return rc;
    if (en->state != ND_INCOMPLETE)
        queue_flush(e, en); /* already resolved (the caller did not ask first) */
    return 0;
}

void stk__nd_confirm(struct stk_engine *e, stk_time_t now, const uint8_t ip[16])
{
    struct stk__nd *d = e->nd;
    uint16_t idx = lookup(d, ip);
    if (idx != ND_NIL && d->ent[idx].state != ND_INCOMPLETE)
        set_reachable(e, now, &d->ent[idx]);
}

/* The link-layer address option of type want among the options, NULL if absent; false when
 * an option has length 0 or overruns (section 7.1.1/7.1.2: the message is invalid). A
 * second option of the same type is ignored. */
static bool find_lla(const uint8_t *opt, size_t len, uint8_t want, const uint8_t **lla)
{
    *lla = NULL;
    while (len > 0) {
        if (len < 2 || opt[1] == 0 || (size_t)opt[1] * 8 > len)
            return false;
        size_t olen = (size_t)opt[1] * 8;
        /* On Ethernet the option is exactly 8 bytes (RFC 2464 section 8); a longer one
         * still carries the address first. */
        if (opt[0] == want && !*lla)
            *lla = opt + 2;
        opt += olen;
        len -= olen;
    }
    return true;
}

/* Section 7.2.3: a solicitation for one of our addresses. */
static void ns_input(struct stk_engine *e, stk_time_t now, const struct stk_ipv6_pkt *pkt,
                     const uint8_t *target, const uint8_t *slla)
{
    struct stk__nd *d = e->nd;
    bool dad = stk__ip6_is_unspec(pkt->src);
    e->ctr.nd_ns_in++;
    if (!stk__ip6_is_ours(e, target)) {
        /* Someone else's address (e.g. the peer's own duplicate address detection). */
        return;
    }
    if (!dad && slla) {
        /* Create or update the sender's entry; a changed address makes it STALE. */
        uint16_t idx = lookup(d, pkt->src);
        if (idx == ND_NIL) {
            struct nd_entry *en = entry_new(e, now, pkt->src, ND_STALE);
            memcpy(en->mac, slla, 6);
            set_stale(e, now, en);
        } else {
            struct nd_entry *en = &d->ent[idx];
            if (en->state == ND_INCOMPLETE || memcmp(en->mac, slla, 6) != 0) {
                memcpy(en->mac, slla, 6);
                set_stale(e, now, en);
                queue_flush(e, en);
            }
        }
    }
    if (e->cfg.arp_passive)
        return; /* another engine sharing the address answers (stk_config.arp_passive) */
    /* Section 7.2.4: solicited advertisement from the target address, Override set (we are
     * not an anycast responder), Solicited set unless answering duplicate address
     * detection, which is answered to all-nodes. */
    const uint8_t *dst = dad ? stk__ip6_all_nodes : pkt->src;
    uint8_t flags = ND_NA_OVERRIDE | (dad ? 0 : ND_NA_SOLICITED);
    if (send_nd(e, now, ND_NEIGHBOR_ADVERT, flags, target, dst, target, true) == 0)
        e->ctr.nd_na_out++;
}

/* Section 7.2.5: an advertisement updates an existing entry only. */
static void na_input(struct stk_engine *e, stk_time_t now, const struct stk_ipv6_pkt *pkt,
                     const uint8_t *target, uint8_t flags, const uint8_t *tlla)
{
    struct stk__nd *d = e->nd;
    e->ctr.nd_na_in++;
    (void)pkt;
    uint16_t idx = lookup(d, target);
    if (idx == ND_NIL)
        return; /* "no entry exists: the advertisement SHOULD be silently discarded" */
    struct nd_entry *en = &d->ent[idx];
    bool solicited = flags & ND_NA_SOLICITED, override = flags & ND_NA_OVERRIDE;
    if (en->state == ND_INCOMPLETE) {
        if (!tlla)
            return;
        memcpy(en->mac, tlla, 6);
        if (solicited)
            set_reachable(e, now, en);
        else
            set_stale(e, now, en);
        queue_flush(e, en);
        return;
    }
    bool changed = tlla && memcmp(tlla, en->mac, 6) != 0;
    if (!override && changed) {
        /* Keep the address we have; a REACHABLE entry is doubted (STALE). */
        if (en->state == ND_REACHABLE)
            set_stale(e, now, en);
        return;
    }
    if (changed)
        memcpy(en->mac, tlla, 6);
    if (solicited)
        set_reachable(e, now, en);
    else if (changed)
        set_stale(e, now, en);
}

void stk__nd_input(struct stk_engine *e, stk_time_t now, const struct stk_ipv6_pkt *pkt)
{
    const uint8_t *m = pkt->l4;
    uint8_t type = m[0];
    /* Sections 7.1.1 and 7.1.2: hop limit 255 (the packet cannot come from off-link),
     * code 0, at least 24 bytes, a unicast target, options of nonzero length. */
    if (pkt->hop_limit != 255 || m[1] != 0 || pkt->l4_len < NS_LEN || stk__ip6_is_mcast(m + 8)) {
        e->ctr.nd_drop_bad++;
        return;
    }
    const uint8_t *target = m + 8, *lla;
    uint8_t want = type == ND_NEIGHBOR_SOLICIT ? ND_OPT_SLLA : ND_OPT_TLLA;
    if (!find_lla(m + NS_LEN, pkt->l4_len - NS_LEN, want, &lla)) {
        e->ctr.nd_drop_bad++;
        return;
    }
    if (type == ND_NEIGHBOR_SOLICIT) {
        /* From the unspecified address (duplicate address detection) only to a
         * solicited-node group, and never with a source link-layer address. */
        if (stk__ip6_is_unspec(pkt->src)) {
            uint8_t group[16];
            stk__ip6_solicited_node(target, group);
            if (memcmp(pkt->dst, group, 16) != 0 || lla) {
                e->ctr.nd_drop_bad++;
                return;
            }
        }
        ns_input(e, now, pkt, target, lla);
    } else {
        /* A solicited advertisement is never sent to a group. */
        if (pkt->dst_mcast && (m[4] & ND_NA_SOLICITED)) {
            e->ctr.nd_drop_bad++;
            return;
        }
        na_input(e, now, pkt, target, m[4], lla);
    }
}

void stk__nd_poll(struct stk_engine *e, stk_time_t now)
{
    struct stk__nd *d = e->nd;
    if (!d || now < d->next_timer)
        return;
    stk_time_t next = UINT64_MAX;
    for (uint16_t i = 0; i < ND_ENTRIES; i++) {
        struct nd_entry *en = &d->ent[i];
        if (en->state == ND_FREE)
            continue;
        if (en->deadline <= now) {
            switch (en->state) {
            case ND_REACHABLE:
                set_stale(e, now, en);
                break;
            case ND_STALE:
                entry_free(e, i);
                continue;
            case ND_DELAY:
                en->state = ND_PROBE;
                en->tries = 0;
                send_solicit(e, now, en);
                break;
            case ND_INCOMPLETE:
            case ND_PROBE:
                if (en->tries >=
                    (en->state == ND_PROBE ? ND_UNICAST_SOLICIT : ND_MULTICAST_SOLICIT)) {
                    /* No answer: the waiting frames are dropped (counted) and TCP
                     * connects waiting on this neighbour fail, as for ARP. */
                    uint8_t ip[16];
                    memcpy(ip, en->ip, 16);
                    e->ctr.nd_resolve_fail++;
                    entry_free(e, i);
                    stk__tcp_unreachable6(e, ip);
                    continue;
                }
                send_solicit(e, now, en);
                break;
            default:
                break;
            }
        }
        if (en->deadline < next)
            next = en->deadline;
    }
    d->next_timer = next;
}

stk_time_t stk__nd_next_timer(const struct stk_engine *e)
{
    return e->nd ? e->nd->next_timer : UINT64_MAX;
}

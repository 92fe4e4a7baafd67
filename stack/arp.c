/*
 * arp.c - ARP (RFC 826): the neighbour cache, resolution with a bounded queue of frames
 * waiting for it, answers for our address, and gratuitous announcements.
 *
 * Everything is bounded: a fixed table of ARP_ENTRIES entries with a chained hash over
 * them, and at most ARP_QMAX frames (ARP_QPER per neighbour) waiting for resolution, each
 * copied into its own buffer. Nothing grows with input.
 *
 * Entry life cycle:
 *   INCOMPLETE: a request was broadcast; it is repeated every ARP_RETRANS_US, and after
 *     ARP_TRIES requests without an answer the entry is removed and its frames dropped.
 *   REACHABLE: the MAC is known; it expires cfg.arp_timeout_us after the last word from
 *     the host. If we used it in that time, it becomes PROBE instead of disappearing.
 *   PROBE: the MAC stays in use while unicast requests check that the host is still there
 *     (the "unicast poll" of RFC 1122 2.3.2.1), so busy connections never stall behind a
 *     broadcast re-resolution. No answer after ARP_TRIES requests removes the entry.
 */
#include <string.h>

#include "pending.h"

#define ARP_ENTRIES 256
#define ARP_BUCKETS 128 /* power of two */
/* A passive open burst (a hundred SYNs from a host we have not resolved yet) must not lose
 * its SYN-ACKs to a tiny queue; Linux keeps about 100 frames per neighbour (unres_qlen). */
#define ARP_QMAX       512 /* frames waiting for resolution, per engine */
#define ARP_QPER       64  /* ... and per neighbour */
#define ARP_TRIES      3   /* requests sent before giving up */
#define ARP_RETRANS_US (1 * STK_US_PER_S)
#define ARP_LEN        28
#define ARP_FRAME_LEN  (STK_ETH_HLEN + ARP_LEN)
#define ARP_OP_REQUEST 1
#define ARP_OP_REPLY   2
#define NIL            0xffffu

enum arp_state { ARP_FREE = 0, ARP_INCOMPLETE, ARP_REACHABLE, ARP_PROBE };

struct arp_entry {
    uint32_t ip;
    uint8_t mac[6];
    uint8_t state;          /* enum arp_state */
    uint8_t tries;          /* requests sent in this INCOMPLETE or PROBE period */
    bool used;              /* resolved for output since the last confirmation */
    uint16_t next;          /* hash chain, or free list when ARP_FREE */
    struct stk_pend_list q; /* waiting frames */
    stk_time_t deadline;    /* next retransmission or expiry */
    stk_time_t stamp;       /* creation or last confirmation: the age used for eviction */
};

struct stk__arp {
    struct arp_entry ent[ARP_ENTRIES];
    uint16_t bucket[ARP_BUCKETS];
    uint16_t free_ent;
    struct stk_pend_frame qf[ARP_QMAX];
    struct stk_pend_pool q;
    /* Never later than the earliest entry deadline; stk__arp_poll recomputes it exactly. */
    stk_time_t next_timer;
    uint16_t ip_id; /* IPv4 identification counter (net.c) */
};

static const uint8_t mac_broadcast[6] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
static const uint8_t mac_zero[6] = {0};

/* The IPv4 identification of the next datagram: a counter starting at a secret offset. For
 * atomic (DF) datagrams the value just has to change (RFC 6864); for fragmented ones it must
 * not repeat for the same peer within the reassembly time, which 65536 ids do at the rates
 * a fragmenting sender reaches. */
uint16_t stk__ip_next_id(struct stk_engine *e)
{
    return e->arp->ip_id++;
}

static unsigned hash_ip(uint32_t ip)
{
    return (ip * 0x9e3779b1u) >> 25; /* top 7 bits: ARP_BUCKETS == 128 */
}

static uint16_t lookup(const struct stk__arp *a, uint32_t ip)
{
    for (uint16_t i = a->bucket[hash_ip(ip)]; i != NIL; i = a->ent[i].next)
        if (a->ent[i].ip == ip)
            return i;
    return NIL;
}

static void set_deadline(struct stk__arp *a, struct arp_entry *en, stk_time_t t)
{
    en->deadline = t;
    if (t < a->next_timer)
        a->next_timer = t;
}

static bool on_link(const struct stk_engine *e, uint32_t ip)
{
    uint32_t mask = e->cfg.prefix == 0 ? 0 : 0xffffffffu << (32 - e->cfg.prefix);
    return ((ip ^ e->cfg.ip) & mask) == 0;
}

static void send_arp(struct stk_engine *e, uint16_t op, const uint8_t eth_dst[6],
                     const uint8_t tha[6], uint32_t tpa, uint32_t spa)
{
    uint8_t f[ARP_FRAME_LEN];
    memcpy(f, eth_dst, 6);
    memcpy(f + 6, e->cfg.mac, 6);
    stk__put16(f + 12, STK_ETH_P_ARP);
    uint8_t *p = f + STK_ETH_HLEN;
    stk__put16(p, 1); /* Ethernet */
    stk__put16(p + 2, STK_ETH_P_IP);
    p[4] = 6;
    p[5] = 4;
    stk__put16(p + 6, op);
    memcpy(p + 8, e->cfg.mac, 6);
    stk__put32(p + 14, spa);
    memcpy(p + 18, tha, 6);
    stk__put32(p + 24, tpa);
    struct stk_iov iov = {f, sizeof(f)};
    if (stk__eth_tx(e, &iov, 1, NULL) == 0)
        e->ctr.arp_out++;
}

/* Asks for en's MAC: broadcast while INCOMPLETE, unicast to the known MAC while PROBE. */
static void send_request(struct stk_engine *e, stk_time_t now, struct arp_entry *en)
{
    bool probe = en->state == ARP_PROBE;
    en->tries++;
    set_deadline(e->arp, en, now + ARP_RETRANS_US);
    e->ctr.arp_requests++;
    send_arp(e, ARP_OP_REQUEST, probe ? en->mac : mac_broadcast, mac_zero, en->ip, e->cfg.ip);
}

static void entry_free(struct stk_engine *e, uint16_t idx)
{
    struct stk__arp *a = e->arp;
    struct arp_entry *en = &a->ent[idx];
    stk__pend_drop_all(e, &a->q, &en->q, &e->ctr.arp_queue_drop);
    uint16_t *pp = &a->bucket[hash_ip(en->ip)];
    while (*pp != NIL && *pp != idx)
        pp = &a->ent[*pp].next;
    if (*pp == idx)
        *pp = en->next;
    memset(en, 0, sizeof(*en));
    en->state = ARP_FREE;
    stk__pend_list_init(&en->q);
    en->next = a->free_ent;
    a->free_ent = idx;
}

/* Which entry to give up when the table is full: the oldest resolved one; failing that the
 * oldest pending one with nothing queued; only then one whose frames must be dropped. */
static uint16_t pick_victim(const struct stk__arp *a)
{
    uint16_t best[3] = {NIL, NIL, NIL};
    for (uint16_t i = 0; i < ARP_ENTRIES; i++) {
        const struct arp_entry *en = &a->ent[i];
        int cls;
        if (en->state == ARP_FREE)
            continue;
        if (en->state == ARP_REACHABLE || en->state == ARP_PROBE)
            cls = 0;
        else
            cls = en->q.len == 0 ? 1 : 2;
        if (best[cls] == NIL || en->stamp < a->ent[best[cls]].stamp)
            best[cls] = i;
    }
    return best[0] != NIL ? best[0] : best[1] != NIL ? best[1] : best[2];
}

/* A fresh INCOMPLETE entry for ip (not in the table), evicting one if the table is full. */
static struct arp_entry *entry_new(struct stk_engine *e, stk_time_t now, uint32_t ip)
{
    struct stk__arp *a = e->arp;
    if (a->free_ent == NIL)
        entry_free(e, pick_victim(a));
    uint16_t idx = a->free_ent;
    struct arp_entry *en = &a->ent[idx];
    a->free_ent = en->next;
    memset(en, 0, sizeof(*en));
    en->ip = ip;
    en->state = ARP_INCOMPLETE;
    en->stamp = now;
    stk__pend_list_init(&en->q);
    unsigned b = hash_ip(ip);
    en->next = a->bucket[b];
    a->bucket[b] = idx;
    return en;
}

/* The host told us its MAC (reply, request, or announcement): refresh and release. */
static void confirm(struct stk_engine *e, stk_time_t now, struct arp_entry *en,
                    const uint8_t mac[6])
{
    memcpy(en->mac, mac, 6);
    en->state = ARP_REACHABLE;
    en->tries = 0;
    en->used = false;
    en->stamp = now;
    set_deadline(e->arp, en, now + e->cfg.arp_timeout_us);
    stk__pend_flush(e, &e->arp->q, &en->q, en->mac);
}

int stk__arp_create(struct stk_engine *e, stk_time_t now)
{
    (void)now;
    struct stk__arp *a = stk__alloc(e, sizeof(*a));
    if (!a)
        return -ENOMEM;
    for (unsigned i = 0; i < ARP_BUCKETS; i++)
        a->bucket[i] = NIL;
    for (unsigned i = 0; i < ARP_ENTRIES; i++) {
        a->ent[i].next = i + 1 < ARP_ENTRIES ? (uint16_t)(i + 1) : NIL;
        stk__pend_list_init(&a->ent[i].q);
    }
    a->free_ent = 0;
    stk__pend_init(&a->q, a->qf, ARP_QMAX);
    a->next_timer = UINT64_MAX;
    /* Start the identification counter somewhere an observer cannot predict. */
    a->ip_id = (uint16_t)stk__siphash(e->cfg.secret, "ipid", 4);
    e->arp = a;
    return 0;
}

void stk__arp_destroy(struct stk_engine *e)
{
    struct stk__arp *a = e->arp;
    if (!a)
        return;
    stk__pend_fini(e, &a->q);
    stk__free(e, a, sizeof(*a));
    e->arp = NULL;
}

void stk__arp_announce(struct stk_engine *e, stk_time_t now)
{
    (void)now;
    /* Without an address there is nothing to announce (and spa 0 would be an RFC 5227
     * probe, which means something else). */
    if (e->cfg.ip == 0 || e->cfg.arp_passive)
        return;
    /* A gratuitous request (sender and target both our address) updates the caches of
     * neighbours that already know us; RFC 5227 2.3 prefers a request to a reply. */
    send_arp(e, ARP_OP_REQUEST, mac_broadcast, mac_zero, e->cfg.ip, e->cfg.ip);
}

int stk__arp_resolve(struct stk_engine *e, stk_time_t now, uint32_t ip, uint8_t mac[6])
{
    struct stk__arp *a = e->arp;
    if (ip == 0)
        return -EHOSTUNREACH;
    uint16_t idx = lookup(a, ip);
    if (idx != NIL) {
        struct arp_entry *en = &a->ent[idx];
        if (en->state == ARP_INCOMPLETE)
            return -EAGAIN;
        en->used = true;
        memcpy(mac, en->mac, 6);
        return 0;
    }
    send_request(e, now, entry_new(e, now, ip));
    return -EAGAIN;
}

int stk__arp_queue(struct stk_engine *e, stk_time_t now, uint32_t ip, const struct stk_iov *iov,
                   int n, const struct stk_txmeta *meta)
{
    struct stk__arp *a = e->arp;
    size_t len = 0;
    for (int i = 0; i < n; i++)
        len += iov[i].len;
    if (ip == 0 || n < 1 || len < STK_ETH_HLEN)
        return -EINVAL;
    if (len > STK_ETH_HLEN + 65535u)
        return -EMSGSIZE;

    uint16_t idx = lookup(a, ip);
    struct arp_entry *en;
    if (idx == NIL) {
        en = entry_new(e, now, ip);
        send_request(e, now, en);
    } else {
        en = &a->ent[idx];
    }
    int rc = stk__pend_add(e, &a->q, &en->q, ARP_QPER, iov, n, len, meta, &e->ctr.arp_queue_drop);
    if (rc < 0)
        return rc;
    if (en->state != ARP_INCOMPLETE) {
        /* Already resolved (the caller did not ask first): the copy goes out at once. */
        en->used = true;
        stk__pend_flush(e, &a->q, &en->q, en->mac);
    }
    return 0;
}

bool stk__arp_queue_fits(const struct stk_engine *e, uint32_t ip, unsigned n)
{
    const struct stk__arp *a = e->arp;
    uint16_t idx = lookup(a, ip);
    return stk__pend_fits(&a->q, idx != NIL ? &a->ent[idx].q : NULL, ARP_QPER, n);
}

void stk__arp_input(struct stk_engine *e, stk_time_t now, const uint8_t *arp, size_t len)
{
    struct stk__arp *a = e->arp;
    e->ctr.arp_in++;
    /* Anything after the 28 bytes is Ethernet padding. */
    if (len < ARP_LEN || stk__get16(arp) != 1 || stk__get16(arp + 2) != STK_ETH_P_IP ||
        arp[4] != 6 || arp[5] != 4) {
        e->ctr.arp_drop_bad++;
        return;
    }
    uint16_t op = stk__get16(arp + 6);
    const uint8_t *sha = arp + 8;
    uint32_t spa = stk__get32(arp + 14);
    uint32_t tpa = stk__get32(arp + 24);
    uint32_t top = spa >> 24;
    bool for_us = e->cfg.ip != 0 && tpa == e->cfg.ip;

    /* A sender MAC that is a group address, or a sender claiming our own address, or one
     * that no host may have, is never learned nor answered. */
    if ((op != ARP_OP_REQUEST && op != ARP_OP_REPLY) || (sha[0] & 1) ||
        memcmp(sha, mac_zero, 6) == 0 || spa == e->cfg.ip || top == 127 || top >= 224) {
        e->ctr.arp_drop_bad++;
        return;
    }
    if (spa != 0) {
        /* RFC 826 "merge": a sender we already know is refreshed whoever the target. */
        uint16_t idx = lookup(a, spa);
        if (idx != NIL) {
            confirm(e, now, &a->ent[idx], sha);
        } else if (for_us && on_link(e, spa)) {
            /* RFC 826 adds the sender only when we are the target: the host is about to
             * talk to us. Senders off our subnet are not added, as we never send to them
             * directly. */
            confirm(e, now, entry_new(e, now, spa), sha);
        }
    }
    /* Requests for our address are answered, including RFC 5227 probes (spa 0), which are
     * answered to the prober's MAC so it sees the address is taken. */
    if (for_us && op == ARP_OP_REQUEST && !e->cfg.arp_passive) {
        e->ctr.arp_replies++;
        send_arp(e, ARP_OP_REPLY, sha, sha, spa, e->cfg.ip);
    }
}

void stk__arp_poll(struct stk_engine *e, stk_time_t now)
{
    struct stk__arp *a = e->arp;
    if (now < a->next_timer)
        return;
    stk_time_t next = UINT64_MAX;
    for (uint16_t i = 0; i < ARP_ENTRIES; i++) {
        struct arp_entry *en = &a->ent[i];
        if (en->state == ARP_FREE)
            continue;
        if (en->deadline <= now) {
            if (en->state == ARP_REACHABLE && en->used) {
                en->state = ARP_PROBE;
                en->tries = 0;
                send_request(e, now, en);
            } else if (en->state == ARP_REACHABLE || en->tries >= ARP_TRIES) {
                /* Expired unused, or no answer to ARP_TRIES requests: the frames waiting
                 * on it are dropped (counted), and the next send starts afresh. */
                bool failed = en->state != ARP_REACHABLE;
                uint32_t ip = en->ip;
                entry_free(e, i);
                if (failed)
                    stk__tcp_unreachable(e, ip);
                continue;
            } else {
                send_request(e, now, en);
            }
        }
        if (en->deadline < next)
            next = en->deadline;
    }
    a->next_timer = next;
}

stk_time_t stk__arp_next_timer(const struct stk_engine *e)
{
    return e->arp ? e->arp->next_timer : UINT64_MAX;
}

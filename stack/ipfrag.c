/*
 * ipfrag.c - IPv4 fragment reassembly (RFC 791 section 3.2, RFC 815) and fragmentation on
 * output.
 *
 * Reassembly. A datagram in progress is keyed by (source, destination, protocol, id) and
 * holds its fragments in a list sorted by offset, each in its own allocation, so that memory
 * follows what was received rather than what a header claims. Everything is bounded:
 *   - cfg.ipfrag_mem bytes (allocations of datagrams and fragments) for the whole engine,
 *     like Linux's ipfrag_high_thresh: a fragment that would go beyond it is dropped, its
 *     datagram kept (as Linux since 4.17);
 *   - cfg.ipfrag_max datagrams in progress, and IPF_MAX_FRAGS fragments per datagram;
 *   - cfg.ipfrag_time_us from the first fragment (Linux's ipfrag_time, 30 s): then the
 *     datagram is dropped, and ICMP time exceeded (code 1) is sent only if fragment zero
 *     arrived (RFC 792, RFC 1122 3.3.2).
 * Overlaps drop the whole datagram, as Linux does since its FragmentSmack hardening
 * (RFC 5722 says the same for IPv6); a fragment lying entirely inside data already held is
 * a duplicate and is only dropped itself. Non-last fragments must carry a multiple of 8
 * bytes, and no fragment may be empty. A datagram beyond 65535 bytes, or whose end
 * changes, is dropped. Since every datagram lives the same time, the age list is the timer
 * queue: the oldest datagram is always the next to expire.
 *
 * A complete datagram is rebuilt in one buffer with a fresh header (no MF, offset 0) and
 * goes back to ip_input, which hands it to the transport demux exactly like an unfragmented
 * packet. With several engines, cfg.steer_ip may take it for another engine first.
 */
#include <string.h>

#include "stk_int.h"

#define IPF_BUCKETS       256 /* power of two */
#define IPF_MAX_FRAGS     256 /* a 64 KiB datagram needs 119 fragments on a 576-byte link */
#define IP_MF             0x2000
#define IP_OFFMASK        0x1fff
#define IP_MAXPACKET      65535u
#define ICMP_HLEN         8
#define ICMP_TIMXCEED     11
#define ICMP_TIMXCEED_REA 1 /* fragment reassembly time exceeded */
/* Pieces of L4 data stk__ip_send_frags accepts (a fragment may take one more piece). */
#define IPF_MAX_IOV 8

struct ipf_frag {
    struct ipf_frag *prev, *next; /* sorted by offset */
    uint32_t off, end;            /* payload bytes [off, end) */
    uint8_t data[];
};

struct ipf_dgram {
    struct ipf_dgram *hnext;         /* hash chain */
    struct ipf_dgram *older, *newer; /* age list */
    uint32_t src, dst;
    uint16_t id;
    uint8_t proto;
    bool have_first, have_last;
    uint16_t nfrags;
    uint32_t total;           /* payload length, once the last fragment arrived */
    uint32_t got;             /* payload bytes held (fragments never overlap) */
    size_t mem;               /* bytes charged, this struct included */
    stk_time_t deadline;      /* cfg.ipfrag_time_us after the first fragment */
    uint8_t hdr[STK_IP_HLEN]; /* header of fragment zero */
    struct ipf_frag *head, *tail;
};

struct stk__ipfrag {
    struct ipf_dgram *bucket[IPF_BUCKETS];
    struct ipf_dgram *oldest, *newest;
    uint32_t count;
    size_t mem;
};

int stk__ipfrag_create(struct stk_engine *e)
{
    e->ipf = stk__alloc(e, sizeof(*e->ipf));
    return e->ipf ? 0 : -ENOMEM;
}

static unsigned bucket_of(const struct stk_engine *e, uint32_t src, uint32_t dst, uint16_t id,
                          uint8_t proto)
{
    /* Keyed, so that a sender cannot aim its datagrams at one chain. */
    uint8_t k[12];
    stk__put32(k, src);
    stk__put32(k + 4, dst);
    stk__put16(k + 8, id);
    k[10] = proto;
    k[11] = 'F';
    return (unsigned)stk__siphash(e->cfg.secret, k, sizeof(k)) & (IPF_BUCKETS - 1);
}

static struct ipf_dgram *find(struct stk_engine *e, uint32_t src, uint32_t dst, uint16_t id,
                              uint8_t proto, unsigned b)
{
    for (struct ipf_dgram *d = e->ipf->bucket[b]; d; d = d->hnext)
        if (d->src == src && d->dst == dst && d->id == id && d->proto == proto)
            return d;
    return NULL;
}

/* Releases d and its fragments. dropped: count its fragments as discarded. */
static void dgram_free(struct stk_engine *e, struct ipf_dgram *d, bool dropped)
{
    struct stk__ipfrag *q = e->ipf;
    struct ipf_dgram **pp = &q->bucket[bucket_of(e, d->src, d->dst, d->id, d->proto)];
    while (*pp && *pp != d)
        pp = &(*pp)->hnext;
    if (*pp)
        *pp = d->hnext;
    if (d->older)
        d->older->newer = d->newer;
    else
        q->oldest = d->newer;
    if (d->newer)
        d->newer->older = d->older;
    else
        q->newest = d->older;
    if (dropped)
        e->ctr.ip_drop_frag += d->nfrags;
    for (struct ipf_frag *f = d->head, *n; f; f = n) {
        n = f->next;
        stk__free(e, f, sizeof(*f) + (f->end - f->off));
    }
    q->mem -= d->mem;
    q->count--;
    stk__free(e, d, sizeof(*d));
}

static struct ipf_dgram *dgram_new(struct stk_engine *e, stk_time_t now, uint32_t src, uint32_t dst,
                                   uint16_t id, uint8_t proto, unsigned b)
{
    struct stk__ipfrag *q = e->ipf;
    if (q->count >= e->cfg.ipfrag_max || q->mem + sizeof(struct ipf_dgram) > e->cfg.ipfrag_mem)
        return NULL;
    struct ipf_dgram *d = stk__alloc(e, sizeof(*d));
    if (!d)
        return NULL;
    d->src = src;
    d->dst = dst;
    d->id = id;
    d->proto = proto;
    d->deadline = now + e->cfg.ipfrag_time_us;
    d->mem = sizeof(*d);
    q->mem += d->mem;
    q->count++;
    d->hnext = q->bucket[b];
    q->bucket[b] = d;
    d->older = q->newest;
    if (q->newest)
        q->newest->newer = d;
    else
        q->oldest = d;
    q->newest = d;
    return d;
}

/* Is [off, end) inside one contiguous run of held data that ends with fragment f (the last
 * fragment starting below end)? Then the fragment only repeats what we have. */
static bool covered(const struct ipf_frag *f, uint32_t off, uint32_t end)
{
    if (f->end < end)
        return false;
    while (f->off > off) {
        if (!f->prev || f->prev->end != f->off)
            return false;
        f = f->prev;
    }
    return true;
}

/* The complete datagram d, rebuilt behind a fresh header; NULL if out of memory. */
static struct stk_ipf_whole *rebuild(struct stk_engine *e, const struct ipf_dgram *d)
{
    size_t len = STK_IP_HLEN + d->total;
    struct stk_ipf_whole *w = stk__alloc(e, sizeof(*w) + len);
    if (!w)
        return NULL;
    w->len = len;
    memcpy(w->data, d->hdr, STK_IP_HLEN);
    stk__put16(w->data + 2, (uint16_t)len);
    stk__put16(w->data + 6, 0);
    stk__put16(w->data + 10, 0);
    stk__put16(w->data + 10, stk__csum_fold(stk__csum_add(0, w->data, STK_IP_HLEN)));
    for (const struct ipf_frag *f = d->head; f; f = f->next)
        memcpy(w->data + STK_IP_HLEN + f->off, f->data, f->end - f->off);
    return w;
}

void stk__ipfrag_release(struct stk_engine *e, struct stk_ipf_whole *w)
{
    if (w)
        stk__free(e, w, sizeof(*w) + w->len);
}

/* Kills d for a reason already counted; the fragment in hand is discarded with it. */
static struct stk_ipf_whole *kill(struct stk_engine *e, struct ipf_dgram *d)
{
    if (d)
        dgram_free(e, d, true);
    e->ctr.ip_drop_frag++;
    return NULL;
}

struct stk_ipf_whole *stk__ipfrag_input(struct stk_engine *e, stk_time_t now, const uint8_t *ip,
                                        size_t total)
{
    struct stk__ipfrag *q = e->ipf;
    e->ctr.ip_frag_in++;
    /* ip_input has checked the header (no options) and the lengths. */
    uint16_t fr = stk__get16(ip + 6);
    bool mf = (fr & IP_MF) != 0;
    uint32_t off = (uint32_t)(fr & IP_OFFMASK) * 8;
    uint32_t plen = (uint32_t)(total - STK_IP_HLEN);
    uint32_t end = off + plen;
    uint32_t src = stk__get32(ip + 12), dst = stk__get32(ip + 16);
    uint16_t id = stk__get16(ip + 4);
    uint8_t proto = ip[9];
    unsigned b = bucket_of(e, src, dst, id, proto);
    struct ipf_dgram *d = find(e, src, dst, id, proto, b);

    if (STK_IP_HLEN + end > IP_MAXPACKET) {
        /* The datagram would be longer than any IPv4 datagram (the "ping of death"). */
        e->ctr.ip_reasm_drop_bad++;
        return kill(e, d);
    }
    if (plen == 0 || (mf && (plen & 7))) {
        /* RFC 791: every fragment but the last carries a multiple of 8 bytes; an empty one
         * carries nothing to reassemble. Only this fragment is dropped. */
        e->ctr.ip_reasm_drop_bad++;
        return kill(e, NULL);
    }
    if (!d) {
        d = dgram_new(e, now, src, dst, id, proto, b);
        if (!d) {
            e->ctr.ip_reasm_drop_mem++;
            return kill(e, NULL);
        }
    }
    uint32_t held_end = d->tail ? d->tail->end : 0;
    if (!mf) {
        /* The last fragment fixes the length: it may not change, nor cut off data held. */
        if ((d->have_last && end != d->total) || end < held_end) {
            e->ctr.ip_reasm_drop_bad++;
            return kill(e, d);
        }
    } else if (d->have_last && end > d->total) {
        /* Data beyond the end the last fragment gave (MF set on what follows the last). */
        e->ctr.ip_reasm_drop_bad++;
        return kill(e, d);
    }

    /* Find the place: after the last fragment that starts below end. */
    struct ipf_frag *prev = d->tail;
    while (prev && prev->off >= end)
        prev = prev->prev;
    if (prev && prev->end > off) {
        if (covered(prev, off, end)) {
            e->ctr.ip_reasm_dup++;
            e->ctr.ip_drop_frag++;
            return NULL;
        }
        e->ctr.ip_reasm_drop_overlap++;
        return kill(e, d);
    }
    if (d->nfrags >= IPF_MAX_FRAGS) {
        /* It could never complete within the bound: give it up now. */
        e->ctr.ip_reasm_drop_mem++;
        return kill(e, d);
    }
    size_t charge = sizeof(struct ipf_frag) + plen;
    if (q->mem + charge > e->cfg.ipfrag_mem) {
        e->ctr.ip_reasm_drop_mem++;
        return kill(e, NULL);
    }
    struct ipf_frag *f = e->cfg.alloc(e->cfg.mem_ctx, charge);
    if (!f) {
        e->ctr.ip_reasm_drop_mem++;
        return kill(e, NULL);
    }
    f->off = off;
    f->end = end;
    memcpy(f->data, ip + STK_IP_HLEN, plen);
    f->prev = prev;
    f->next = prev ? prev->next : d->head;
    if (f->next)
        f->next->prev = f;
    else
        d->tail = f;
    if (prev)
        prev->next = f;
    else
        d->head = f;
    d->nfrags++;
    d->got += plen;
    d->mem += charge;
    q->mem += charge;
    if (off == 0) {
        d->have_first = true;
        memcpy(d->hdr, ip, STK_IP_HLEN);
    }
    if (!mf) {
        d->have_last = true;
        d->total = end;
    }
    if (!d->have_first || !d->have_last || d->got != d->total)
        return NULL;

    struct stk_ipf_whole *w = rebuild(e, d);
    dgram_free(e, d, w == NULL);
    if (!w) {
        e->ctr.ip_reasm_drop_mem++;
        return NULL;
    }
    e->ctr.ip_reasm_ok++;
    /* Several engines: TCP and UDP belong to the engine their ports hash to. */
    if (e->cfg.steer_ip && (proto == STK_IP_PROTO_TCP || proto == STK_IP_PROTO_UDP) &&
        e->cfg.steer_ip(e->cfg.steer_ctx, w->data, w->len)) {
        e->ctr.ip_reasm_handoff++;
        stk__ipfrag_release(e, w);
        return NULL;
    }
    return w;
}

/* An ICMP error about an ICMP error (or about anything but a known query) is never sent
 * (RFC 1122 3.2.2). */
static bool icmp_is_query(uint8_t type)
{
    return type == 0 || type == 8 || type == 13 || type == 14 || type == 15 || type == 16 ||
           type == 17 || type == 18;
}

/* RFC 792 time exceeded, code 1: the original header and the first 64 bits of its data. */
static void send_time_exceeded(struct stk_engine *e, stk_time_t now, const struct ipf_dgram *d)
{
    const struct ipf_frag *first = d->head;
    if (!first || first->off != 0)
        return;
    if (d->proto == STK_IP_PROTO_ICMP && !icmp_is_query(first->data[0]))
        return;
    uint8_t hdr[STK_L2L3_HLEN + ICMP_HLEN];
    uint8_t quote[STK_IP_HLEN + 8];
    size_t qlen = STK_IP_HLEN + stk__min32(8, first->end);
    uint8_t *ic = hdr + STK_L2L3_HLEN;
    memcpy(quote, d->hdr, STK_IP_HLEN);
    memcpy(quote + STK_IP_HLEN, first->data, qlen - STK_IP_HLEN);
    memset(ic, 0, ICMP_HLEN);
    ic[0] = ICMP_TIMXCEED;
    ic[1] = ICMP_TIMXCEED_REA;
    uint32_t sum = stk__csum_add(0, ic, ICMP_HLEN);
    sum = stk__csum_add(sum, quote, qlen);
    stk__put16(ic + 2, stk__csum_fold(sum));
    struct stk_iov iov = {quote, qlen};
    if (stk__ip_send(e, now, d->src, STK_IP_PROTO_ICMP, hdr, ICMP_HLEN, &iov, 1, NULL) == 0)
        e->ctr.ip_reasm_timxceed++;
}

void stk__ipfrag_poll(struct stk_engine *e, stk_time_t now)
{
    struct stk__ipfrag *q = e->ipf;
    while (q->oldest && q->oldest->deadline <= now) {
        struct ipf_dgram *d = q->oldest;
        e->ctr.ip_reasm_timeout++;
        if (d->have_first)
            send_time_exceeded(e, now, d);
        dgram_free(e, d, true);
    }
}

stk_time_t stk__ipfrag_next_timer(const struct stk_engine *e)
{
    return e->ipf && e->ipf->oldest ? e->ipf->oldest->deadline : UINT64_MAX;
}

size_t stk__ipfrag_mem(const struct stk_engine *e, uint32_t *count)
{
    if (count)
        *count = e->ipf->count;
    return e->ipf->mem;
}

void stk__ipfrag_destroy(struct stk_engine *e)
{
    if (!e->ipf)
        return;
    while (e->ipf->oldest)
        dgram_free(e, e->ipf->oldest, false);
    stk__free(e, e->ipf, sizeof(*e->ipf));
    e->ipf = NULL;
}

/* ---- Fragmentation on output ----------------------------------------------------------- */

/* Appends to out the pieces of iov[0..n) covering bytes [off, off + len). Returns the count. */
static int slice(const struct stk_iov *iov, int n, size_t off, size_t len, struct stk_iov *out)
{
    int k = 0;
    for (int i = 0; i < n && len > 0; i++) {
        if (off >= iov[i].len) {
            off -= iov[i].len;
            continue;
        }
        size_t take = stk__min64(iov[i].len - off, len);
        out[k].base = (const uint8_t *)iov[i].base + off;
        out[k].len = take;
        k++;
        len -= take;
        off = 0;
    }
    return k;
}

int stk__ip_send_frags(struct stk_engine *e, stk_time_t now, uint32_t dst, uint8_t proto,
                       const struct stk_iov *l4, int n, size_t l4_len)
{
    size_t sum = 0;
    if (n < 1 || n > IPF_MAX_IOV || !l4)
        return -EINVAL;
    for (int i = 0; i < n; i++)
        sum += l4[i].len;
    if (sum != l4_len)
        return -EINVAL;
    if (l4_len > IP_MAXPACKET - STK_IP_HLEN)
        return -EMSGSIZE;
    uint32_t nexthop = stk__ip_route(e, dst);
    if (nexthop == 0) {
        e->ctr.ip_drop_noroute++;
        return -EHOSTUNREACH;
    }
    /* Every fragment but the last carries a multiple of 8 bytes (RFC 791). */
    size_t per = (size_t)(e->cfg.mtu - STK_IP_HLEN) & ~(size_t)7;
    unsigned nfrag =
        l4_len <= (size_t)(e->cfg.mtu - STK_IP_HLEN) ? 1 : (unsigned)((l4_len + per - 1) / per);
    uint16_t id = stk__ip_next_id(e);
    uint8_t hdr[STK_L2L3_HLEN];
    e->ctr.ip_out++;
    int rc = stk__arp_resolve(e, now, nexthop, hdr);
    bool queue = rc == -EAGAIN;
    if (rc < 0 && !queue)
        return rc;
    /* A fragment lost behind ARP loses the datagram: queue all of them or none. */
    if (queue && !stk__arp_queue_fits(e, nexthop, nfrag)) {
        e->ctr.arp_queue_drop++;
        e->ctr.ip_frag_fails++;
        return -ENOBUFS;
    }
    memcpy(hdr + 6, e->cfg.mac, 6);
    stk__put16(hdr + 12, STK_ETH_P_IP);
    uint8_t *ip = hdr + STK_ETH_HLEN;
    for (size_t off = 0; off < l4_len || off == 0; off += per) {
        size_t len = nfrag == 1 ? l4_len : stk__min64(per, l4_len - off);
        bool more = off + len < l4_len;
        struct stk_iov iov[1 + IPF_MAX_IOV];
        ip[0] = 0x45;
        ip[1] = 0;
        stk__put16(ip + 2, (uint16_t)(STK_IP_HLEN + len));
        stk__put16(ip + 4, id);
        stk__put16(ip + 6, (uint16_t)((more ? IP_MF : 0) | (off / 8)));
        ip[8] = 64;
        ip[9] = proto;
        stk__put16(ip + 10, 0);
        stk__put32(ip + 12, e->cfg.ip);
        stk__put32(ip + 16, dst);
        stk__put16(ip + 10, stk__csum_fold(stk__csum_add(0, ip, STK_IP_HLEN)));
        iov[0].base = hdr;
        iov[0].len = STK_L2L3_HLEN;
        int k = 1 + slice(l4, n, off, len, iov + 1);
        rc = queue ? stk__arp_queue(e, now, nexthop, iov, k, NULL) : stk__eth_tx(e, iov, k, NULL);
        if (rc < 0) {
            e->ctr.ip_frag_fails++;
            return rc;
        }
        if (nfrag > 1)
            e->ctr.ip_frag_creates++;
        if (nfrag == 1)
            break;
    }
    if (nfrag > 1)
        e->ctr.ip_frag_ok++;
    return 0;
}

/*
 * ipfrag.c - IPv4 fragment reassembly (RFC 791 section 3.2, RFC 815) and fragmentation on
 * output, and the same for IPv6 (RFC 8200 section 4.5) on the same table and bounds.
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
 *
 * IPv6 datagrams share the table, keyed (source, destination, 32-bit identification) and
 * told from IPv4 ones by the key. Length errors get ICMPv6 Parameter Problem (sent here, the
 * fragment in hand dropped), the timeout ICMPv6 Time Exceeded code 1 if fragment zero came.
 * The whole packet is fragment zero's IPv6 header with the fragmentable part behind it, for
 * ip6.c to walk again. stk__ip6_send_frags fragments a source's own packets.
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
#define IPF_MAX_IOV     8
#define ICMP6_TIMXCEED  3 /* RFC 4443 types */
#define ICMP6_PARAMPROB 4
#define NH_FRAGMENT     44

struct ipf_frag {
    struct ipf_frag *prev, *next; /* sorted by offset */
    uint32_t off, end;            /* payload bytes [off, end) */
    uint8_t data[];
};

/* What identifies a datagram: IPv4 (source, destination, protocol, id) with the addresses
 * in the first 4 bytes, or IPv6 (source, destination, id) with proto 0 (RFC 8200 4.5: the
 * Next Header comes from fragment zero). Zeroed before it is filled: compared bytewise. */
struct ipf_key {
    uint8_t src[16], dst[16];
    uint32_t id;
    uint8_t proto;
    uint8_t v6;
    uint8_t pad[2];
};

struct ipf_dgram {
    struct ipf_dgram *hnext;         /* hash chain */
    struct ipf_dgram *older, *newer; /* age list */
    struct ipf_key key;
    uint8_t nh; /* IPv6: the Next Header of fragment zero's Fragment header */
    bool have_first, have_last;
    uint16_t nfrags;
    uint32_t total;            /* payload length, once the last fragment arrived */
    uint32_t got;              /* payload bytes held (fragments never overlap) */
    size_t mem;                /* bytes charged, this struct included */
    stk_time_t deadline;       /* cfg.ipfrag_time_us after the first fragment */
    uint8_t hdr[STK_IP6_HLEN]; /* header of fragment zero (IPv4: 20 bytes) */
    struct ipf_frag *head, *tail;
};

struct stk__ipfrag {
    struct ipf_dgram *bucket[IPF_BUCKETS];
    struct ipf_dgram *oldest, *newest;
    uint32_t count;
    size_t mem;
    uint32_t id6; /* the next IPv6 Fragment identification */
};

int stk__ipfrag_create(struct stk_engine *e)
{
    e->ipf = stk__alloc(e, sizeof(*e->ipf));
    if (!e->ipf)
        return -ENOMEM;
    /* IPv6 identifications start at a secret-derived value and count up (RFC 7739 allows a
     * per-host counter for a host that does not share state with a predictable peer). */
    e->ipf->id6 = (uint32_t)stk__siphash(e->cfg.secret, "frag6", 5);
    return 0;
}

static unsigned bucket_of(const struct stk_engine *e, const struct ipf_key *k)
{
    /* Keyed, so that a sender cannot aim its datagrams at one chain. */
    return (unsigned)stk__siphash(e->cfg.secret, k, sizeof(*k)) & (IPF_BUCKETS - 1);
}

static struct ipf_dgram *find(struct stk_engine *e, const struct ipf_key *k, unsigned b)
{
    for (struct ipf_dgram *d = e->ipf->bucket[b]; d; d = d->hnext)
        if (memcmp(&d->key, k, sizeof(*k)) == 0)
            return d;
    return NULL;
}

/* Releases d and its fragments. dropped: count its fragments as discarded. */
static void dgram_free(struct stk_engine *e, struct ipf_dgram *d, bool dropped)
{
    struct stk__ipfrag *q = e->ipf;
    struct ipf_dgram **pp = &q->bucket[bucket_of(e, &d->key)];
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
    if (dropped) {
        if (d->key.v6)
            e->ctr.ip6_drop_frag += d->nfrags;
        else
            e->ctr.ip_drop_frag += d->nfrags;
    }
    for (struct ipf_frag *f = d->head, *n; f; f = n) {
        n = f->next;
        stk__free(e, f, sizeof(*f) + (f->end - f->off));
    }
    q->mem -= d->mem;
    q->count--;
    stk__free(e, d, sizeof(*d));
}

static struct ipf_dgram *dgram_new(struct stk_engine *e, stk_time_t now, const struct ipf_key *k,
                                   unsigned b)
{
    struct stk__ipfrag *q = e->ipf;
    if (q->count >= e->cfg.ipfrag_max || q->mem + sizeof(struct ipf_dgram) > e->cfg.ipfrag_mem)
        return NULL;
    struct ipf_dgram *d = stk__alloc(e, sizeof(*d));
    if (!d)
        return NULL;
    d->key = *k;
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

/* The complete datagram d, rebuilt in one buffer behind a fresh header of hlen bytes (its
 * first hlen bytes are left for the caller); NULL if out of memory. */
static struct stk_ipf_whole *rebuild(struct stk_engine *e, const struct ipf_dgram *d, size_t hlen)
{
    size_t len = hlen + d->total;
    struct stk_ipf_whole *w = stk__alloc(e, sizeof(*w) + len);
    if (!w)
        return NULL;
    w->len = len;
    memcpy(w->data, d->hdr, hlen);
    for (const struct ipf_frag *f = d->head; f; f = f->next)
        memcpy(w->data + hlen + f->off, f->data, f->end - f->off);
    return w;
}

void stk__ipfrag_release(struct stk_engine *e, struct stk_ipf_whole *w)
{
    if (w)
        stk__free(e, w, sizeof(*w) + w->len);
}

/* What became of a fragment (the callers count it in their family's counters). */
enum ipf_res { IPF_HELD, IPF_DONE, IPF_DUP, IPF_BAD, IPF_OVERLAP, IPF_MEM };

/* Files a fragment carrying payload bytes [off, off + plen) of the datagram k; hdr (hlen
 * bytes) is kept when it is fragment zero. Every fragment dropped here is counted in
 * ip_drop_frag or ip6_drop_frag. IPF_DONE: *out is the complete datagram, still filed (the
 * caller rebuilds and frees it). Lengths (ends within 65535, multiples of 8, nonempty) are
 * the caller's checks. */
static enum ipf_res frag_add(struct stk_engine *e, stk_time_t now, const struct ipf_key *k,
                             uint32_t off, bool mf, const uint8_t *data, uint32_t plen,
                             const uint8_t *hdr, size_t hlen, uint8_t nh, struct ipf_dgram **out)
{
    struct stk__ipfrag *q = e->ipf;
    uint64_t *drops = k->v6 ? &e->ctr.ip6_drop_frag : &e->ctr.ip_drop_frag;
    uint32_t end = off + plen;
    unsigned b = bucket_of(e, k);
    struct ipf_dgram *d = find(e, k, b);
    enum ipf_res why = IPF_BAD;

    if (!d) {
        d = dgram_new(e, now, k, b);
        if (!d) {
            (*drops)++;
            return IPF_MEM;
        }
    }
    uint32_t held_end = d->tail ? d->tail->end : 0;
    if (!mf) {
        /* The last fragment fixes the length: it may not change, nor cut off data held. */
        if ((d->have_last && end != d->total) || end < held_end)
            goto kill;
    } else if (d->have_last && end > d->total) {
        /* Data beyond the end the last fragment gave (MF set on what follows the last). */
        goto kill;
    }

    /* Find the place: after the last fragment that starts below end. */
    struct ipf_frag *prev = d->tail;
    while (prev && prev->off >= end)
        prev = prev->prev;
    if (prev && prev->end > off) {
        if (covered(prev, off, end)) {
            (*drops)++;
            return IPF_DUP;
        }
        why = IPF_OVERLAP;
        goto kill;
    }
    if (d->nfrags >= IPF_MAX_FRAGS) {
        /* It could never complete within the bound: give it up now. */
        why = IPF_MEM;
        goto kill;
    }
    size_t charge = sizeof(struct ipf_frag) + plen;
    struct ipf_frag *f =
        q->mem + charge > e->cfg.ipfrag_mem ? NULL : e->cfg.alloc(e->cfg.mem_ctx, charge);
    if (!f) {
        /* Only this fragment: the datagram is kept (as Linux since 4.17). */
        (*drops)++;
        return IPF_MEM;
    }
    f->off = off;
    f->end = end;
    memcpy(f->data, data, plen);
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
        memcpy(d->hdr, hdr, hlen);
        d->nh = nh;
    }
    if (!mf) {
        d->have_last = true;
        d->total = end;
    }
    if (!d->have_first || !d->have_last || d->got != d->total)
        return IPF_HELD;
    *out = d;
    return IPF_DONE;

kill:
    /* The whole datagram goes, with the fragment in hand. */
    dgram_free(e, d, true);
    (*drops)++;
    return why;
}

struct stk_ipf_whole *stk__ipfrag_input(struct stk_engine *e, stk_time_t now, const uint8_t *ip,
                                        size_t total)
{
    e->ctr.ip_frag_in++;
    /* ip_input has checked the header (no options) and the lengths. */
    uint16_t fr = stk__get16(ip + 6);
    bool mf = (fr & IP_MF) != 0;
    uint32_t off = (uint32_t)(fr & IP_OFFMASK) * 8;
    uint32_t plen = (uint32_t)(total - STK_IP_HLEN);
    uint8_t proto = ip[9];
    struct ipf_key k;
    memset(&k, 0, sizeof(k));
    memcpy(k.src, ip + 12, 4);
    memcpy(k.dst, ip + 16, 4);
    k.id = stk__get16(ip + 4);
    k.proto = proto;

    if (STK_IP_HLEN + off + plen > IP_MAXPACKET) {
        /* The datagram would be longer than any IPv4 datagram (the "ping of death"). */
        e->ctr.ip_reasm_drop_bad++;
        struct ipf_dgram *d = find(e, &k, bucket_of(e, &k));
        if (d)
            dgram_free(e, d, true);
        e->ctr.ip_drop_frag++;
        return NULL;
    }
    if (plen == 0 || (mf && (plen & 7))) {
        /* RFC 791: every fragment but the last carries a multiple of 8 bytes; an empty one
         * carries nothing to reassemble. Only this fragment is dropped. */
        e->ctr.ip_reasm_drop_bad++;
        e->ctr.ip_drop_frag++;
        return NULL;
    }
    struct ipf_dgram *d = NULL;
    switch (frag_add(e, now, &k, off, mf, ip + STK_IP_HLEN, plen, ip, STK_IP_HLEN, 0, &d)) {
    case IPF_HELD:
        return NULL;
    case IPF_DUP:
        e->ctr.ip_reasm_dup++;
        return NULL;
    case IPF_BAD:
        e->ctr.ip_reasm_drop_bad++;
        return NULL;
    case IPF_OVERLAP:
        e->ctr.ip_reasm_drop_overlap++;
        return NULL;
    case IPF_MEM:
        e->ctr.ip_reasm_drop_mem++;
        return NULL;
    case IPF_DONE:
        break;
    }
    struct stk_ipf_whole *w = rebuild(e, d, STK_IP_HLEN);
    dgram_free(e, d, w == NULL);
    if (!w) {
        e->ctr.ip_reasm_drop_mem++;
        return NULL;
    }
    stk__put16(w->data + 2, (uint16_t)w->len);
    stk__put16(w->data + 6, 0);
    stk__put16(w->data + 10, 0);
    stk__put16(w->data + 10, stk__csum_fold(stk__csum_add(0, w->data, STK_IP_HLEN)));
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

struct stk_ipf_whole *stk__ipfrag6_input(struct stk_engine *e, stk_time_t now,
                                         const struct stk_ipv6_pkt *pkt, size_t fh_off)
{
    e->ctr.ip6_frag_in++;
    const uint8_t *fh = pkt->ip + fh_off;
    uint16_t fo = stk__get16(fh + 2);
    bool mf = (fo & 1) != 0;
    uint32_t off = fo & 0xfff8u;
    size_t data_off = fh_off + 8;
    uint32_t plen = (uint32_t)(pkt->ip_len - data_off);
    struct ipf_key k;
    memset(&k, 0, sizeof(k));
    memcpy(k.src, pkt->src, 16);
    memcpy(k.dst, pkt->dst, 16);
    k.id = stk__get32(fh + 4);
    k.v6 = 1;

    if (off + plen > IP_MAXPACKET) {
        /* RFC 8200 4.5: the reassembled payload would exceed 65535 bytes: Parameter
         * Problem code 0 at the Fragment Offset field. */
        e->ctr.ip6_reasm_drop_bad++;
        e->ctr.ip6_drop_frag++;
        stk__icmp6_error(e, now, pkt, ICMP6_PARAMPROB, 0, (uint32_t)(fh_off + 2));
        return NULL;
    }
    if (mf && (plen == 0 || (plen & 7))) {
        /* Not the last and not a multiple of 8: Parameter Problem code 0 at the Payload
         * Length field. */
        e->ctr.ip6_reasm_drop_bad++;
        e->ctr.ip6_drop_frag++;
        stk__icmp6_error(e, now, pkt, ICMP6_PARAMPROB, 0, 4);
        return NULL;
    }
    if (plen == 0) {
        /* An empty last fragment (at offset > 0) carries nothing. */
        e->ctr.ip6_reasm_drop_bad++;
        e->ctr.ip6_drop_frag++;
        return NULL;
    }
    /* Fragment zero's IPv6 header is kept (its hop limit, class and flow label survive);
     * the unfragmentable extension headers were processed on each fragment and are not. */
    struct ipf_dgram *d = NULL;
    switch (
        frag_add(e, now, &k, off, mf, pkt->ip + data_off, plen, pkt->ip, STK_IP6_HLEN, fh[0], &d)) {
    case IPF_HELD:
        return NULL;
    case IPF_DUP:
        e->ctr.ip6_reasm_dup++;
        return NULL;
    case IPF_BAD:
        e->ctr.ip6_reasm_drop_bad++;
        return NULL;
    case IPF_OVERLAP:
        e->ctr.ip6_reasm_drop_overlap++;
        return NULL;
    case IPF_MEM:
        e->ctr.ip6_reasm_drop_mem++;
        return NULL;
    case IPF_DONE:
        break;
    }
    struct stk_ipf_whole *w = rebuild(e, d, STK_IP6_HLEN);
    uint8_t nh = d->nh;
    dgram_free(e, d, w == NULL);
    if (!w) {
        e->ctr.ip6_reasm_drop_mem++;
        return NULL;
    }
    stk__put16(w->data + 4, (uint16_t)(w->len - STK_IP6_HLEN));
    w->data[6] = nh;
    e->ctr.ip6_reasm_ok++;
    /* Several engines: TCP belongs to the engine its ports hash to (UDP lives on the
     * engine IPv6 fragments are steered to). */
    if (e->cfg.steer_ip && nh == STK_IP_PROTO_TCP &&
        e->cfg.steer_ip(e->cfg.steer_ctx, w->data, w->len)) {
        e->ctr.ip6_reasm_handoff++;
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
    if (d->key.proto == STK_IP_PROTO_ICMP && !icmp_is_query(first->data[0]))
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
    if (stk__ip_send(e, now, stk__get32(d->key.src), STK_IP_PROTO_ICMP, hdr, ICMP_HLEN, &iov, 1,
                     NULL) == 0)
        e->ctr.ip_reasm_timxceed++;
}

/* RFC 8200 4.5: ICMPv6 Time Exceeded code 1 quoting fragment zero as it arrived (its IPv6
 * header and Fragment header rebuilt, then its data), as much as fits the minimum MTU. */
static void send_time_exceeded6(struct stk_engine *e, stk_time_t now, const struct ipf_dgram *d)
{
    const struct ipf_frag *first = d->head;
    if (!first || first->off != 0)
        return;
    uint8_t pk[STK_IP6_HLEN + 8 + 1184];
    size_t dlen = stk__min64(first->end, sizeof(pk) - STK_IP6_HLEN - 8);
    memcpy(pk, d->hdr, STK_IP6_HLEN);
    stk__put16(pk + 4, (uint16_t)(8 + first->end));
    pk[6] = NH_FRAGMENT;
    pk[STK_IP6_HLEN] = d->nh;
    pk[STK_IP6_HLEN + 1] = 0;
    stk__put16(pk + STK_IP6_HLEN + 2, 1); /* offset 0, M */
    stk__put32(pk + STK_IP6_HLEN + 4, d->key.id);
    memcpy(pk + STK_IP6_HLEN + 8, first->data, dlen);
    struct stk_ipv6_pkt pkt = {
        .src = d->key.src,
        .dst = d->key.dst,
        .dst_mcast = stk__ip6_is_mcast(d->key.dst),
        .ip = pk,
        .ip_len = STK_IP6_HLEN + 8 + dlen,
    };
    uint64_t before = e->ctr.icmp6_errors_out;
    stk__icmp6_error(e, now, &pkt, ICMP6_TIMXCEED, 1, 0);
    if (e->ctr.icmp6_errors_out != before)
        e->ctr.ip6_reasm_timxceed++;
}

void stk__ipfrag_poll(struct stk_engine *e, stk_time_t now)
{
    struct stk__ipfrag *q = e->ipf;
    while (q->oldest && q->oldest->deadline <= now) {
        struct ipf_dgram *d = q->oldest;
        if (d->key.v6) {
            e->ctr.ip6_reasm_timeout++;
            if (d->have_first)
                send_time_exceeded6(e, now, d);
        } else {
            e->ctr.ip_reasm_timeout++;
            if (d->have_first)
                send_time_exceeded(e, now, d);
        }
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
                       const struct stk_iov *l4, int n, size_t l4_len, uint8_t tos)
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
        ip[1] = tos;
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

int stk__ip6_send_frags(struct stk_engine *e, stk_time_t now, const uint8_t src[16],
                        const uint8_t dst[16], uint8_t proto, uint8_t *hdr, size_t l4_len,
                        const struct stk_iov *payload, int npay, uint8_t tclass)
{
    size_t total = l4_len;
    if (npay < 0 || npay > IPF_MAX_IOV - 1 || (npay > 0 && !payload))
        return -EINVAL;
    for (int i = 0; i < npay; i++)
        total += payload[i].len;
    if (STK_IP6_HLEN + total <= e->cfg.mtu) {
        struct stk_txmeta meta = {.tos = tclass};
        return stk__ip6_send(e, now, src, dst, proto, hdr, l4_len, payload, npay, &meta);
    }
    if (total > IP_MAXPACKET) /* the reassembled Payload Length */
        return -EMSGSIZE;
    if (!stk__ip6_enabled(e))
        return -EAFNOSUPPORT;
    uint8_t nexthop[16];
    if (stk__ip6_is_mcast(dst) || stk__ip6_route(e, dst, nexthop) != 0) {
        /* Groups are link-local here and take no fragments from us. */
        e->ctr.ip6_drop_noroute++;
        return -EHOSTUNREACH;
    }
    /* The upper-layer bytes as one stream: the header after hdr's room, then payload. */
    struct stk_iov l4[IPF_MAX_IOV];
    l4[0].base = hdr + STK_L2L3_HLEN6;
    l4[0].len = l4_len;
    for (int i = 0; i < npay; i++)
        l4[1 + i] = payload[i];
    int n = 1 + npay;
    /* Every fragment but the last carries a multiple of 8 bytes (RFC 8200 4.5). */
    size_t per = (size_t)(e->cfg.mtu - STK_IP6_HLEN - 8) & ~(size_t)7;
    uint32_t id = e->ipf->id6++;
    uint8_t fh[STK_L2L3_HLEN6 + 8];
    uint8_t *ip = fh + STK_ETH_HLEN;
    int rc = stk__nd_resolve(e, now, nexthop, fh);
    bool queue = rc == -EAGAIN;
    if (rc < 0 && !queue)
        return rc;
    memcpy(fh + 6, e->cfg.mac, 6);
    stk__put16(fh + 12, STK_ETH_P_IPV6);
    stk__put32(ip, 6u << 28 | (uint32_t)tclass << 20);
    ip[6] = NH_FRAGMENT;
    ip[7] = STK_IP6_HOP_LIMIT;
    memcpy(ip + 8, src, 16);
    memcpy(ip + 24, dst, 16);
    uint8_t *f = ip + STK_IP6_HLEN;
    f[0] = proto;
    f[1] = 0;
    stk__put32(f + 4, id);
    e->ctr.ip6_out++;
    for (size_t off = 0; off < total; off += per) {
        size_t len = stk__min64(per, total - off);
        bool more = off + len < total;
        struct stk_iov iov[1 + IPF_MAX_IOV];
        stk__put16(ip + 4, (uint16_t)(8 + len));
        stk__put16(f + 2, (uint16_t)(off | (more ? 1 : 0)));
        iov[0].base = fh;
        iov[0].len = sizeof(fh);
        int k = 1 + slice(l4, n, off, len, iov + 1);
        rc = queue ? stk__nd_queue(e, now, nexthop, iov, k, NULL) : stk__eth_tx(e, iov, k, NULL);
        if (rc < 0) {
            e->ctr.ip6_frag_fails++;
            return rc;
        }
        e->ctr.ip6_frag_creates++;
    }
    e->ctr.ip6_frag_ok++;
    return 0;
}

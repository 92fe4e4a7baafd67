/*
 * tcp_conn.c - control blocks, lookup tables, ports, ISNs and SYN cookies, timers, events.
 */
#include <string.h>

#include "tcp.h"

#define TCB_OF_NODE(n) ((struct stk_tcb *)((char *)(n)-offsetof(struct stk_tcb, tnode)))

int stk__tcp_create(struct stk_engine *e)
{
    struct stk_tcp *tcp = stk__alloc(e, sizeof(*tcp));
    if (!tcp)
        return -ENOMEM;
    uint32_t n = e->cfg.max_socks;
    uint32_t buckets = stk__roundup_pow2(n);
    tcp->socks = stk__alloc(e, n * sizeof(*tcp->socks));
    tcp->sd_free = stk__alloc(e, n * sizeof(*tcp->sd_free));
    tcp->conn_hash = stk__alloc(e, buckets * sizeof(*tcp->conn_hash));
    if (!tcp->socks || !tcp->sd_free || !tcp->conn_hash) {
        stk__free(e, tcp->socks, n * sizeof(*tcp->socks));
        stk__free(e, tcp->sd_free, n * sizeof(*tcp->sd_free));
        stk__free(e, tcp->conn_hash, buckets * sizeof(*tcp->conn_hash));
        stk__free(e, tcp, sizeof(*tcp));
        return -ENOMEM;
    }
    /* Hand out low socket ids first, as the kernel does with fds. */
    for (uint32_t i = 0; i < n; i++)
        tcp->sd_free[i] = (int)(n - 1 - i);
    tcp->nsd_free = n;
    tcp->conn_mask = buckets - 1;
    tcp->port_cursor = stk__get32(e->cfg.secret);
    for (unsigned i = 0; i < sizeof(tcp->hkey) / sizeof(tcp->hkey[0]); i++) {
        uint8_t in[6] = {'c', 'h', 'a', 's', 'h', (uint8_t)i};
        tcp->hkey[i] = stk__siphash(e->cfg.secret, in, sizeof(in));
    }
    e->tcp = tcp;
    return 0;
}

static void free_chain_list(struct stk_engine *e, struct stk_tcb *t)
{
    while (t) {
        struct stk_tcb *next = t->hnext;
        stk__tcb_free(e, t);
        t = next;
    }
}

void stk__tcp_destroy(struct stk_engine *e)
{
    struct stk_tcp *tcp = e->tcp;
    if (!tcp)
        return;
    uint32_t n = e->cfg.max_socks;
    /* Every control block is reachable from the connection hash, the listen hash, a
     * listener's accept queue or the socket table (unbound, unconnected sockets). */
    for (uint32_t i = 0; i < n; i++) {
        struct stk_tcb *t = tcp->socks[i];
        if (t && t->state == STK_TCP_CLOSED)
            stk__tcb_free(e, t); /* in no table */
    }
    for (uint32_t i = 0; i <= tcp->conn_mask; i++)
        free_chain_list(e, tcp->conn_hash[i]);
    for (unsigned i = 0; i < 256; i++)
        free_chain_list(e, tcp->listen_hash[i]);
    stk__free(e, tcp->socks, n * sizeof(*tcp->socks));
    stk__free(e, tcp->sd_free, n * sizeof(*tcp->sd_free));
    stk__free(e, tcp->conn_hash, (tcp->conn_mask + 1) * sizeof(*tcp->conn_hash));
    stk__free(e, tcp, sizeof(*tcp));
    e->tcp = NULL;
}

struct stk_tcb *stk__tcb_new(struct stk_engine *e)
{
    struct stk_tcb *t = stk__alloc(e, sizeof(*t));
    if (!t) {
        e->ctr.tcp_nomem++;
        return NULL;
    }
    t->sd = -1;
    t->state = STK_TCP_CLOSED;
    t->linger_s = -1;
    t->rto_us = e->cfg.rto_init_us;
    t->sndbuf_size = e->cfg.sndbuf;
    t->rcvbuf_size = e->cfg.rcvbuf;
    t->keep_idle_s = 7200;
    t->keep_intvl_s = 75;
    t->keep_cnt = 9;
    t->syn_retries = (uint8_t)stk__min32(e->cfg.syn_retries, UINT8_MAX);
    t->cc_algo = (uint8_t)e->cfg.cc;
    t->snd_mss = STK_TCP_DEFAULT_MSS;
    e->ctr.conns_by_state[STK_TCP_CLOSED]++;
    return t;
}

/* A ring's memory goes back, and leaves the engine's count (tcp_buf_bytes). */
static void ring_free(struct stk_engine *e, struct stk_ring *r)
{
    if (r->buf)
        e->ctr.tcp_buf_bytes -= r->size;
    stk__free(e, r->buf, r->size);
    r->buf = NULL;
}

void stk__tcb_free(struct stk_engine *e, struct stk_tcb *t)
{
    if (t->flags & TF_ACK_BATCH) {
        for (struct stk_tcb **pp = &e->ack_head; *pp; pp = &(*pp)->acknext) {
            if (*pp == t) {
                *pp = t->acknext;
                break;
            }
        }
    }
    stk__wheel_disarm(&e->wheel, &t->tnode);
    e->ctr.conns_by_state[t->state]--;
    ring_free(e, &t->sndbuf);
    ring_free(e, &t->rcvbuf);
    stk__free(e, t, sizeof(*t));
}

/* The rings get their size here (a ring with size 0 does not exist: before ESTABLISHED and
 * after release), but their memory only with the first byte written into them
 * (stk__ring_mem): an idle connection costs its control block, not two buffers. */
int stk__bufs_alloc(struct stk_engine *e, struct stk_tcb *t)
{
    (void)e;
    if (!t->sndbuf.size) {
        t->sndbuf.buf = NULL;
        t->sndbuf.size = t->sndbuf_size;
        t->sndbuf.head = t->sndbuf.tail = 0;
    }
    if (!t->rcvbuf.size) {
        t->rcvbuf.buf = NULL;
        t->rcvbuf.size = t->rcvbuf_size;
        t->rcvbuf.head = t->rcvbuf.tail = 0;
    }
    return 0;
}

int stk__ring_mem(struct stk_engine *e, struct stk_ring *r)
{
    if (r->buf)
        return 0;
    r->buf = e->cfg.alloc(e->cfg.mem_ctx, r->size);
    if (r->buf) {
        e->ctr.tcp_buf_bytes += r->size;
        return 0;
    }
    e->ctr.tcp_nomem++;
    return -ENOMEM;
}

/* Gives r a buffer of size (a larger power of two) holding the same bytes at the same
 * sequence positions: everything from tail over the old size (unread data and
 * out-of-order data beyond head alike). On failure r is unchanged. */
int stk__ring_grow(struct stk_engine *e, struct stk_ring *r, uint32_t size)
{
    if (!r->buf) {
        r->size = size;
        return 0;
    }
    uint8_t *nb = e->cfg.alloc(e->cfg.mem_ctx, size);
    if (!nb) {
        e->ctr.tcp_nomem++;
        return -ENOMEM;
    }
    struct stk_ring n = {.buf = nb, .size = size, .head = r->tail, .tail = r->tail};
    struct stk_iov iov[2];
    int k = stk__ring_iov(r, 0, r->size, iov);
    uint32_t off = 0;
    for (int i = 0; i < k; i++) {
        stk__ring_write_at(&n, off, iov[i].base, (uint32_t)iov[i].len);
        off += (uint32_t)iov[i].len;
    }
    e->ctr.tcp_buf_bytes += size - r->size;
    stk__free(e, r->buf, r->size);
    r->buf = nb;
    r->size = size;
    return 0;
}

/* Autotuning grows ring r to size (larger than now): not while the engine's socket buffers
 * would then pass tcp_mem_max (counted as tcp_mem_pressure; a ring without memory yet costs
 * nothing now, but will at its first byte: it counts as well), nor without memory. True when
 * it grew. */
bool stk__ring_autogrow(struct stk_engine *e, struct stk_ring *r, uint32_t size)
{
    if (size <= r->size)
        return false;
    uint64_t max = e->cfg.tcp_mem_max;
    if (max && e->ctr.tcp_buf_bytes + (size - r->size) > max) {
        e->ctr.tcp_mem_pressure++;
        return false;
    }
    return stk__ring_grow(e, r, size) == 0;
}

void stk__bufs_release(struct stk_engine *e, struct stk_tcb *t, bool snd, bool rcv)
{
    if (snd && t->sndbuf.size) {
        t->snd_buf_seq += stk__ring_used(&t->sndbuf);
        ring_free(e, &t->sndbuf);
        memset(&t->sndbuf, 0, sizeof(t->sndbuf));
    }
    if (rcv && t->rcvbuf.size) {
        ring_free(e, &t->rcvbuf);
        memset(&t->rcvbuf, 0, sizeof(t->rcvbuf));
    }
}

/* Every state change goes through here, so counters (and a trace, when wanted) stay true. */
void stk__set_state(struct stk_engine *e, struct stk_tcb *t, enum stk_tcp_state s)
{
    if (t->state == s)
        return;
    e->ctr.conns_by_state[t->state]--;
    e->ctr.conns_by_state[s]++;
    t->state = s;
    stk__notify(e, t);
}

/* ---- Lookup ------------------------------------------------------------------------------ */

/* The connection hash is keyed. A peer chooses its port and its address (an IPv6 peer a
 * whole /64 of them, and stk__fold6 folds an address to 32 bits in a way anyone can undo),
 * so with a fixed hash it could put every connection it opens into one chain and make each
 * of its segments walk all of them. The hash is multilinear over 32-bit words with random
 * 64-bit multipliers, h = (k0 + k1 w1 + ... + kn wn) mod 2^64, of which the high 32 bits
 * are used: an almost strongly universal family (Lemire and Kaser, "Strongly universal
 * string hashing is fast", 2014), so without the key two given tuples share a bucket about
 * as often as random ones; a multiply per word. The keys come from the engine secret. */
static uint32_t hash4(const struct stk_tcp *tcp, uint32_t lip, uint16_t lport, uint32_t rip,
                      uint16_t rport)
{
    const uint64_t *k = tcp->hkey;
    uint64_t h = k[0] + k[1] * lip + k[2] * rip + k[3] * ((uint32_t)lport << 16 | rport);
    return (uint32_t)(h >> 32);
}

static uint32_t hash6(const struct stk_tcp *tcp, const uint8_t lip[16], uint16_t lport,
                      const uint8_t rip[16], uint16_t rport)
{
    const uint64_t *k = tcp->hkey;
    uint64_t h = k[0] + k[9] * ((uint32_t)lport << 16 | rport);
    for (unsigned i = 0; i < 4; i++)
        h += k[1 + i] * stk__get32(lip + 4 * i) + k[5 + i] * stk__get32(rip + 4 * i);
    return (uint32_t)(h >> 32);
}

static uint32_t tcb_hash(const struct stk_tcp *tcp, const struct stk_tcb *t)
{
    return (t->flags & TF_V6) ? hash6(tcp, t->lip6, t->lport, t->rip6, t->rport)
                              : hash4(tcp, t->lip, t->lport, t->rip, t->rport);
}

uint32_t stk__conn_bucket(const struct stk_engine *e, const struct stk_tcb *t)
{
    return tcb_hash(e->tcp, t) & e->tcp->conn_mask;
}

void stk__conn_insert(struct stk_engine *e, struct stk_tcb *t)
{
    struct stk_tcp *tcp = e->tcp;
    uint32_t b = tcb_hash(tcp, t) & tcp->conn_mask;
    t->hnext = tcp->conn_hash[b];
    tcp->conn_hash[b] = t;
    tcp->nconns++;
}

void stk__conn_remove(struct stk_engine *e, struct stk_tcb *t)
{
    struct stk_tcp *tcp = e->tcp;
    uint32_t b = tcb_hash(tcp, t) & tcp->conn_mask;
    for (struct stk_tcb **pp = &tcp->conn_hash[b]; *pp; pp = &(*pp)->hnext) {
        if (*pp == t) {
            *pp = t->hnext;
            t->hnext = NULL;
            tcp->nconns--;
            return;
        }
    }
}

struct stk_tcb *stk__conn_lookup(struct stk_engine *e, uint32_t lip, uint16_t lport, uint32_t rip,
                                 uint16_t rport)
{
    struct stk_tcp *tcp = e->tcp;
    uint32_t b = hash4(tcp, lip, lport, rip, rport) & tcp->conn_mask;
    for (struct stk_tcb *t = tcp->conn_hash[b]; t; t = t->hnext)
        if (t->rip == rip && t->rport == rport && t->lport == lport && t->lip == lip &&
            !(t->flags & TF_V6))
            return t;
    return NULL;
}

struct stk_tcb *stk__conn_lookup6(struct stk_engine *e, const uint8_t lip[16], uint16_t lport,
                                  const uint8_t rip[16], uint16_t rport)
{
    struct stk_tcp *tcp = e->tcp;
    uint32_t fl = stk__fold6(lip), fr = stk__fold6(rip);
    uint32_t b = hash6(tcp, lip, lport, rip, rport) & tcp->conn_mask;
    for (struct stk_tcb *t = tcp->conn_hash[b]; t; t = t->hnext)
        if (t->rip == fr && t->rport == rport && t->lport == lport && t->lip == fl &&
            (t->flags & TF_V6) && memcmp(t->rip6, rip, 16) == 0 && memcmp(t->lip6, lip, 16) == 0)
            return t;
    return NULL;
}

void stk__tcb_addr_from_seg(struct stk_tcb *t, const struct stk_seg *s)
{
    t->lip = s->dst;
    t->lport = s->dport;
    t->rip = s->src;
    t->rport = s->sport;
    if (s->src6) {
        t->flags |= TF_V6;
        memcpy(t->lip6, s->dst6, 16);
        memcpy(t->rip6, s->src6, 16);
    }
}

void stk__listen_insert(struct stk_engine *e, struct stk_tcb *t)
{
    struct stk_tcb **head = &e->tcp->listen_hash[t->lport & 255];
    t->hnext = *head;
    *head = t;
}

void stk__listen_remove(struct stk_engine *e, struct stk_tcb *t)
{
    for (struct stk_tcb **pp = &e->tcp->listen_hash[t->lport & 255]; *pp; pp = &(*pp)->hnext) {
        if (*pp == t) {
            *pp = t->hnext;
            t->hnext = NULL;
            return;
        }
    }
}

/* Listeners of one SO_REUSEPORT group: the same key, port, family and local address. */
static bool reuseport_peer(const struct stk_tcb *a, const struct stk_tcb *b)
{
    return a->reuseport == b->reuseport && a->lport == b->lport && a->lip == b->lip &&
           !((a->flags ^ b->flags) & (TF_V6 | TF_V6ONLY)) &&
           (!(a->flags & TF_V6) || memcmp(a->lip6, b->lip6, 16) == 0);
}

/* l, the listener an address lookup found, or the one of its SO_REUSEPORT group that the
 * connection's hash h picks (Linux's reuseport_select_sock): the same connection (a
 * retransmitted SYN, a cookie's ACK) finds the same listener while the group is unchanged. */
static struct stk_tcb *reuseport_pick(struct stk_engine *e, struct stk_tcb *l, uint32_t h)
{
    struct stk_tcb *head = e->tcp->listen_hash[l->lport & 255];
    uint32_t n = 0;
    for (struct stk_tcb *t = head; t; t = t->hnext)
        n += reuseport_peer(t, l);
    if (n < 2)
        return l;
    uint32_t k = (uint32_t)(((uint64_t)h * n) >> 32);
    for (struct stk_tcb *t = head; t; t = t->hnext)
        if (reuseport_peer(t, l) && k-- == 0)
            return t;
    return l;
}

struct stk_tcb *stk__listen_lookup(struct stk_engine *e, uint32_t lip, uint16_t lport, uint32_t rip,
                                   uint16_t rport)
{
    struct stk_tcb *any = NULL, *dual = NULL, *l = NULL;
    for (struct stk_tcb *t = e->tcp->listen_hash[lport & 255]; t; t = t->hnext) {
        if (t->lport != lport)
            continue;
        if (t->flags & TF_V6) {
            if (t->lip == 0 && !(t->flags & TF_V6ONLY))
                dual = t;
            continue;
        }
        if (t->lip == lip) {
            l = t;
            break;
        }
        if (t->lip == 0)
            any = t;
    }
    l = l ? l : any ? any : dual;
    return l && l->reuseport ? reuseport_pick(e, l, hash4(e->tcp, lip, lport, rip, rport)) : l;
}

struct stk_tcb *stk__listen_lookup6(struct stk_engine *e, const uint8_t lip[16], uint16_t lport,
                                    const uint8_t rip[16], uint16_t rport)
{
    struct stk_tcb *any = NULL, *l = NULL;
    for (struct stk_tcb *t = e->tcp->listen_hash[lport & 255]; t; t = t->hnext) {
        if (t->lport != lport || !(t->flags & TF_V6))
            continue;
        if (t->lip == 0) {
            any = t;
        } else if (memcmp(t->lip6, lip, 16) == 0) {
            l = t;
            break;
        }
    }
    l = l ? l : any;
    return l && l->reuseport ? reuseport_pick(e, l, hash6(e->tcp, lip, lport, rip, rport)) : l;
}

/* ---- Ports ------------------------------------------------------------------------------- */

static struct stk_tcb **bind_head(struct stk_engine *e, uint16_t port)
{
    return &e->tcp->bind_hash[port & 1023];
}

/* Linux's inet_rcv_saddr_equal with wildcards matching: two IPv4 or two IPv6 addresses
 * overlap when either is the wildcard or they are equal; an IPv4 address and an IPv6 one
 * only when the IPv6 one is the wildcard of a dual-stack (not V6ONLY) socket. */
static bool addr_overlap(const struct stk_tcb *o, uint32_t olip, const struct stk_tcb *t,
                         uint32_t tlip)
{
    uint32_t v6 = (o->flags | t->flags) & TF_V6;
    if (!v6)
        return olip == 0 || tlip == 0 || olip == tlip;
    if ((o->flags & TF_V6) && (t->flags & TF_V6))
        return olip == 0 || tlip == 0 || (olip == tlip && memcmp(o->lip6, t->lip6, 16) == 0);
    const struct stk_tcb *s6 = (o->flags & TF_V6) ? o : t;
    uint32_t s6lip = s6 == o ? olip : tlip;
    return s6lip == 0 && !(s6->flags & TF_V6ONLY);
}

bool stk__addr_conflict(const struct stk_tcb *a, const struct stk_tcb *b)
{
    return addr_overlap(a, a->lip, b, b->lip);
}

/* Links t into its port's bind list. The list is doubly linked (bpprev) so that a listener
 * with tens of thousands of passive children in TIME-WAIT still unbinds one in O(1). */
static void bind_link(struct stk_engine *e, struct stk_tcb *t)
{
    struct stk_tcb **head = bind_head(e, t->lport);
    t->bnext = *head;
    if (t->bnext)
        t->bnext->bpprev = &t->bnext;
    t->bpprev = head;
    *head = t;
    t->flags |= TF_BOUND;
}

/* bind(2) rules as Linux applies them: two sockets may share a port only when their
 * addresses differ, both set SO_REUSEADDR and neither is listening, or both are of one
 * SO_REUSEPORT group (the same key: ustackd's is the owner's uid). */
int stk__bind_port(struct stk_engine *e, struct stk_tcb *t, uint32_t ip, uint16_t port)
{
    for (struct stk_tcb *o = *bind_head(e, port); o; o = o->bnext) {
        if (o->lport != port || !addr_overlap(o, o->lip, t, ip))
            continue;
        bool reuse =
            (t->flags & TF_REUSEADDR) && (o->flags & TF_REUSEADDR) && o->state != STK_TCP_LISTEN;
        /* An active open has already checked its 4-tuple against TIME-WAIT holders. */
        if (o->state == STK_TCP_TIME_WAIT && ((t->flags & TF_REUSEADDR) || t->rport != 0))
            reuse = true;
        if (t->reuseport && t->reuseport == o->reuseport)
            reuse = true;
        if (!reuse)
            return -EADDRINUSE;
    }
    t->lip = ip;
    t->lport = port;
    bind_link(e, t);
    return 0;
}

/* A passive child holds its listener's port, as Linux's inet_inherit_port: until it is
 * gone (TIME-WAIT included) a bind() to that port needs SO_REUSEADDR. */
void stk__inherit_port(struct stk_engine *e, struct stk_tcb *t)
{
    bind_link(e, t);
}

void stk__unbind(struct stk_engine *e, struct stk_tcb *t)
{
    (void)e;
    if (!(t->flags & TF_BOUND))
        return;
    *t->bpprev = t->bnext;
    if (t->bnext)
        t->bnext->bpprev = t->bpprev;
    t->bnext = NULL;
    t->bpprev = NULL;
    t->flags &= ~TF_BOUND;
}

static bool port_bound(struct stk_engine *e, uint16_t port)
{
    /* A TIME-WAIT holder does not keep the port: its 4-tuple is checked (and recycled under
     * RFC 6191) by the caller. */
    for (struct stk_tcb *o = *bind_head(e, port); o; o = o->bnext)
        if (o->lport == port && o->state != STK_TCP_TIME_WAIT)
            return true;
    return false;
}

static bool tw_reusable(const struct stk_tcb *o)
{
    return o->state == STK_TCP_TIME_WAIT && (o->flags & TF_TS) && o->sd < 0;
}

bool stk__tw_take(struct stk_engine *e, struct stk_tcb *o)
{
    if (!o)
        return true;
    if (!tw_reusable(o))
        return false;
    stk__tcp_drop(e, o, 0);
    e->ctr.tcp_tw_reuse++;
    return true;
}

/* Chooses an ephemeral port for an active open to t->rip:t->rport. A port is usable when no
 * socket is bound to it (so listeners keep theirs), the 4-tuple is free or its TIME-WAIT
 * holder may be recycled (stk__tw_take, the rule a connect from a bound port follows too),
 * and port_ok agrees (RSS steering). */
int stk__pick_port(struct stk_engine *e, struct stk_tcb *t)
{
    struct stk_tcp *tcp = e->tcp;
    uint32_t lo = e->cfg.port_lo, range = e->cfg.port_hi - lo + 1u;
    uint32_t start = tcp->port_cursor + hash4(tcp, 0, 0, t->rip, t->rport);
    for (uint32_t i = 0; i < range; i++) {
        uint16_t port = (uint16_t)(lo + (start + i) % range);
        if (port_bound(e, port))
            continue;
        bool v6 = t->flags & TF_V6;
        struct stk_tcb *o = v6 ? stk__conn_lookup6(e, t->lip6, port, t->rip6, t->rport)
                               : stk__conn_lookup(e, t->lip, port, t->rip, t->rport);
        if (o && !tw_reusable(o))
            continue;
        if (!v6 && e->cfg.port_ok &&
            !e->cfg.port_ok(e->cfg.port_ctx, t->lip, port, t->rip, t->rport))
            continue;
        if (v6 && e->cfg.port_ok6 &&
            !e->cfg.port_ok6(e->cfg.port_ctx, t->lip6, port, t->rip6, t->rport))
            continue;
        stk__tw_take(e, o);
        tcp->port_cursor += i + 1;
        t->lport = port;
        return 0;
    }
    return -EADDRNOTAVAIL;
}

/* ---- ISNs and SYN cookies ------------------------------------------------------------------ */

/* A keyed MAC of a 4-tuple: IPv4 addresses, or the full IPv6 ones when lip6/rip6 are
 * given (their folds would let a chosen address share another's ISNs and cookies). */
static uint64_t tuple_mac(const uint8_t *key, uint32_t lip, const uint8_t *lip6, uint16_t lport,
                          uint32_t rip, const uint8_t *rip6, uint16_t rport, uint32_t extra)
{
    uint8_t buf[40];
    size_t n;
    if (lip6) {
        memcpy(buf, lip6, 16);
        memcpy(buf + 16, rip6, 16);
        n = 32;
    } else {
        stk__put32(buf, lip);
        stk__put32(buf + 4, rip);
        n = 8;
    }
    stk__put16(buf + n, lport);
    stk__put16(buf + n + 2, rport);
    stk__put32(buf + n + 4, extra);
    return stk__siphash(key, buf, n + 8);
}

/* F of RFC 6528 for t's 4-tuple (swap: the tuple reversed, for the timestamp offset), keyed
 * by the host's ISN key when there is one (stk_config.isn_key), else by the engine secret. */
static uint32_t tuple_f(struct stk_engine *e, const struct stk_tcb *t, bool swap)
{
    bool v6 = t->flags & TF_V6;
    const uint8_t *key = e->cfg.isn_key_set ? e->cfg.isn_key : e->cfg.secret;
    const uint8_t *lip6 = v6 ? t->lip6 : NULL, *rip6 = v6 ? t->rip6 : NULL;
    return (uint32_t)(swap ? tuple_mac(key, t->rip, rip6, t->rport, t->lip, lip6, t->lport, 0)
                           : tuple_mac(key, t->lip, lip6, t->lport, t->rip, rip6, t->rport, 0));
}

/* RFC 6528: ISN = M + F(localip, localport, remoteip, remoteport, secretkey). M ticks every
 * 64 ns (the engine clock, moved by stk_config.clock_off_us), as Linux's: with RFC 793's
 * 4 us tick a tuple reused within a few hundred us (curl --local-port, ~90 bytes sent) got
 * an ISN below the old connection's last sequence number, and the peer's TIME-WAIT, also
 * seeing the same millisecond timestamp, refused the SYN for a 1 s retransmission. */
uint32_t stk__isn(struct stk_engine *e, const struct stk_tcb *t, stk_time_t now)
{
    return (uint32_t)((now + e->cfg.clock_off_us) * 125 / 8) + tuple_f(e, t, false);
}

/* The per-connection timestamp offset (RFC 7323 section 5.4): F of the reversed tuple, plus
 * the clock offset in the timestamp clock's milliseconds. */
uint32_t stk__ts_offset(struct stk_engine *e, const struct stk_tcb *t)
{
    return tuple_f(e, t, true) + (uint32_t)(e->cfg.clock_off_us / STK_US_PER_MS);
}

/* SYN cookies carry what the handshake must remember in the ISN: a 5-bit time slot
 * (64 s each), a 3-bit MSS index, and a 24-bit MAC of the 4-tuple, the slot and the peer's
 * ISN. Window scale and SACK are not remembered: a cookie connection runs without them
 * unless timestamps carry them (not done), which is the classic trade-off. */
static const uint16_t cookie_mss[8] = {536, 1200, 1360, 1400, 1440, 1460, 4312, 8960};

static uint32_t cookie_slot(stk_time_t now)
{
    return (uint32_t)(now / (64 * STK_US_PER_S));
}

static uint32_t cookie_mac(struct stk_engine *e, const struct stk_seg *s, uint32_t slot,
                           uint32_t peer_isn)
{
    return (uint32_t)tuple_mac(e->cfg.secret, s->dst, s->dst6, s->dport, s->src, s->src6, s->sport,
                               slot ^ (peer_isn * 31u)) &
           0xffffff;
}

uint32_t stk__cookie_make(struct stk_engine *e, const struct stk_seg *s, uint16_t mss,
                          stk_time_t now)
{
    unsigned idx = 0;
    for (unsigned i = 0; i < 8; i++)
        if (cookie_mss[i] <= mss)
            idx = i;
    uint32_t slot = cookie_slot(now) & 31;
    return slot << 27 | idx << 24 | cookie_mac(e, s, slot, s->seq);
}

/* The cookie holds the MSS only. When the SYN carries timestamps, the low bits of our
 * timestamp value in the cookie SYN-ACK carry what else the SYN asked for, as Linux does
 * (cookie_init_timestamp): the peer's window scale (4 bits, 15 for none) and SACK-permitted
 * (1 bit). The peer echoes them in the handshake ACK's TSecr, so a cookie connection keeps
 * window scaling and SACK. The value is at most the clock's, so it never runs ahead of the
 * timestamps the connection sends later (offset 0, the clock itself). */
#define COOKIE_TS_MASK 31u

uint32_t stk__cookie_ts(stk_time_t now, int ws, bool sack)
{
    uint32_t clock = (uint32_t)(now / STK_US_PER_MS);
    uint32_t ts = (clock & ~COOKIE_TS_MASK) | (uint32_t)(ws >= 0 ? ws : 15) | (sack ? 16u : 0u);
    if ((int32_t)(ts - clock) > 0)
        ts -= COOKIE_TS_MASK + 1;
    return ts;
}

void stk__cookie_ts_decode(uint32_t tsecr, int *ws, bool *sack)
{
    *ws = (tsecr & 15) == 15 ? -1 : (int)(tsecr & 15);
    *sack = (tsecr & 16) != 0;
}

uint16_t stk__cookie_check(struct stk_engine *e, const struct stk_seg *s, stk_time_t now)
{
    return stk__cookie_check_isn(e, s, s->seq - 1, now);
}

uint16_t stk__cookie_check_isn(struct stk_engine *e, const struct stk_seg *s, uint32_t peer_isn,
                               stk_time_t now)
{
    uint32_t cookie = s->ack - 1;
    uint32_t slot = cookie >> 27, cur = cookie_slot(now) & 31;
    /* Accept cookies from this slot or the previous one (up to 128 s old). */
    if (slot != cur && slot != ((cur - 1) & 31))
        return 0;
    if ((cookie & 0xffffff) != cookie_mac(e, s, slot, peer_isn))
        return 0;
    return cookie_mss[(cookie >> 24) & 7];
}

/* ---- Timers ------------------------------------------------------------------------------ */

static stk_time_t earliest(const struct stk_tcb *t)
{
    stk_time_t d[] = {t->t_rexmt, t->t_persist, t->t_delack, t->t_keep,
                      t->t_2msl,  t->t_cork,    t->t_pto};
    stk_time_t m = UINT64_MAX;
    for (unsigned i = 0; i < sizeof(d) / sizeof(d[0]); i++)
        if (d[i] && d[i] < m)
            m = d[i];
    return m;
}

/* Lazy re-arm: the wheel node only moves when a deadline becomes earlier than the armed one;
 * a later deadline is found when the node fires early and re-arms. */
void stk__timer_update(struct stk_engine *e, struct stk_tcb *t)
{
    stk_time_t m = earliest(t);
    if (m == UINT64_MAX)
        return; /* an armed node fires once, finds nothing due, and stays disarmed */
    uint64_t tick = (m + STK_US_PER_MS - 1) / STK_US_PER_MS;
    if (!stk__wheel_armed(&t->tnode) || t->tnode.expire > tick)
        stk__wheel_arm(&e->wheel, &t->tnode, tick);
}

static stk_time_t user_timeout_us(const struct stk_tcb *t)
{
    return (stk_time_t)t->user_timeout_ms * STK_US_PER_MS;
}

/* TCP_USER_TIMEOUT: a timer that would fire after the wait that began at start has lasted
 * the user timeout fires then instead (at least 1 ms from now), as Linux clamps its RTO and
 * its zero-window probe timer (tcp_clamp_rto_to_user_timeout). */
static void clamp_to_user_timeout(const struct stk_tcb *t, stk_time_t *timer, stk_time_t start,
                                  stk_time_t now)
{
    if (!t->user_timeout_ms || !*timer)
        return;
    stk_time_t end = stk__max64(start + user_timeout_us(t), now + STK_US_PER_MS);
    if (end < *timer)
        *timer = end;
}

/* Returns true when the connection was dropped: t may then have been freed. */
static bool on_rexmt(struct stk_engine *e, struct stk_tcb *t, stk_time_t now)
{
    t->t_rexmt = 0;
    bool syn = t->state == STK_TCP_SYN_SENT || t->state == STK_TCP_SYN_RECEIVED;
    uint32_t limit = syn ? t->syn_retries : e->cfg.data_retries;
    /* TCP_USER_TIMEOUT replaces the retry count once the handshake is done (Linux's
     * retransmits_timed_out): the time since the head of the flight went out decides. The
     * first retransmission starts the clock, one RTO back (the timer restarts whenever an
     * ACK moves SND.UNA, so that is when the oldest data still unacknowledged was sent or
     * last made progress). */
    bool ut = !syn && t->user_timeout_ms;
    if (t->retries == 0) /* kept without the option too: it may be set later */
        t->ut_start = now > t->rto_us ? now - t->rto_us : 0;
    if (ut ? t->retries > 0 && now - t->ut_start >= user_timeout_us(t) : t->retries >= limit) {
        e->ctr.tcp_conn_timeouts++;
        stk__tcp_drop(e, t, stk__timeout_error(t));
        return true;
    }
    if (t->retries < UINT8_MAX) /* saturates: a long user timeout outlasts 255 */
        t->retries++;
    if (t->backoff < 16)
        t->backoff++;
    e->ctr.tcp_rto++;
    /* RFC 6298 5.5: back off the timer; 5.6: restart it on retransmission. */
    t->rto_us = (uint32_t)stk__min64((uint64_t)t->rto_us * 2, e->cfg.rto_max_us);
    t->flags &= ~(TF_RTT_TIMING | TF_IN_RECOVERY | TF_TLP_OUT | TF_TLP_RXT);
    t->t_pto = 0;
    t->dupacks = 0;
    if (syn) {
        stk__send_syn(e, t, now);
        t->t_rexmt = now + t->rto_us;
        return false;
    }
    stk__cc_on_rto(&t->cc, stk__tcp_flight(t), now);
    stk__tcp_resend_flight(e, t, now);
    if (ut)
        clamp_to_user_timeout(t, &t->t_rexmt, t->ut_start, now);
    return false;
}

void stk__tcp_resend_flight(struct stk_engine *e, struct stk_tcb *t, stk_time_t now)
{
    /* Go back to snd_una; output skips what SACK says arrived. RFC 6675 5.1: retransmit
     * only what is not SACKed; HighRxt restarts at snd_una. */
    t->recover = t->snd_max;
    t->flags |= TF_RTO_GUARD;
    t->sb.high_rxt = t->snd_una;
    t->snd_nxt = t->snd_una;
    stk__tcp_output(e, t, now);
    if (!t->t_rexmt && t->snd_una != t->snd_max)
        t->t_rexmt = now + t->rto_us;
}

/* Returns true when the connection was dropped: t may then have been freed. */
static bool on_persist(struct stk_engine *e, struct stk_tcb *t, stk_time_t now)
{
    t->t_persist = 0;
    if (stk__data_end(t) == t->snd_una)
        return false;
    /* RFC 1122 4.2.2.17: probe a closed window for as long as the peer answers. A peer that
     * answered none of the last data_retries probes (an orphan's: 8) is gone, as Linux gives
     * up after tcp_retries2 (tcp_orphan_retries) unanswered probes: ETIMEDOUT. */
    if (t->zwp_last && t->last_recv < t->zwp_last) {
        uint32_t limit = t->sd < 0 ? 8 : e->cfg.data_retries;
        if (++t->zwp_unans >= limit) {
            e->ctr.tcp_conn_timeouts++;
            stk__tcp_drop(e, t, stk__timeout_error(t));
            return true;
        }
    } else {
        t->zwp_unans = 0;
    }
    /* TCP_USER_TIMEOUT bounds the zero window too, answered probes or not (tcp(7): data
     * "may remain untransmitted (due to zero window size)"), from the first probe (noted
     * without the option too, as Linux's icsk_probes_tstamp: it may be set later). */
    if (!t->zwp_start) {
        t->zwp_start = now;
    } else if (t->user_timeout_ms && now - t->zwp_start >= user_timeout_us(t)) {
        e->ctr.tcp_conn_timeouts++;
        stk__tcp_drop(e, t, stk__timeout_error(t));
        return true;
    }
    t->zwp_last = now;
    /* An earlier probe byte may still be outstanding: it is simply probed again. */
    t->snd_nxt = t->snd_una;
    stk__send_zwp(e, t, now);
    if (t->snd_wnd != 0) {
        /* The window was open, just small: the bytes went out as data, timed normally. */
        if (!t->t_rexmt)
            t->t_rexmt = now + t->rto_us;
        return false;
    }
    if (t->zwp_probes < 16)
        t->zwp_probes++;
    uint64_t iv = (uint64_t)t->rto_us << t->zwp_probes;
    t->t_persist = now + stk__min64(iv, e->cfg.rto_max_us);
    if (t->zwp_start)
        clamp_to_user_timeout(t, &t->t_persist, t->zwp_start, now);
    return false;
}

/* Returns true when the connection was dropped: t may then have been freed. */
static bool on_keepalive(struct stk_engine *e, struct stk_tcb *t, stk_time_t now)
{
    t->t_keep = 0;
    if (!(t->flags & TF_KEEPALIVE) || !stk__state_synced(t->state) || t->state == STK_TCP_TIME_WAIT)
        return false;
    /* Data unacknowledged or waiting to go: the retransmission or persist timer watches the
     * peer (and gives up after data_retries); keepalive looks again a full idle time later,
     * as Linux's tcp_keepalive_timer does ("alive without keepalive"). */
    if (stk__data_end(t) != t->snd_una) {
        t->t_keep = now + (stk_time_t)t->keep_idle_s * STK_US_PER_S;
        return false;
    }
    stk_time_t idle_until = t->last_recv + (stk_time_t)t->keep_idle_s * STK_US_PER_S;
    if (now < idle_until && t->keep_probes == 0) {
        t->t_keep = idle_until;
        return false;
    }
    /* With TCP_USER_TIMEOUT, the time since the peer was last heard from decides once a
     * probe went unanswered, not the probe count (Linux's tcp_keepalive_timer). */
    bool gone = t->user_timeout_ms ? t->keep_probes > 0 && now - t->last_recv >= user_timeout_us(t)
                                   : t->keep_probes >= t->keep_cnt;
    if (gone) {
        e->ctr.tcp_keepalive_drops++;
        stk__send_rst(e, t, now);
        stk__tcp_drop(e, t, stk__timeout_error(t));
        return true;
    }
    t->keep_probes++;
    stk__send_keepalive(e, t, now);
    t->t_keep = now + (stk_time_t)t->keep_intvl_s * STK_US_PER_S;
    return false;
}

/* One look at the application of t, which owes an ACK (stk__ack_owe): true when the ACK is
 * to go now (the application waits to read, or was idle at this look and the one before,
 * or the wait is over), false when it may wait. */
static bool owed_look(struct stk_engine *e, struct stk_tcb *t, stk_time_t now)
{
    if (now >= t->owed_until || t->sd < 0 || !e->cfg.app_idle)
        return true;
    int idle = e->cfg.app_idle(e->cfg.ev_ctx, t->sd, t->user);
    if (idle >= 2 || (idle && t->owed == 2))
        return true;
    t->owed = idle ? 2 : 1;
    return false;
}

/* Makes t's ACK owed rather than sent now (window_update in tcp_sock.c, a FIN in
 * tcp_in.c): false when the engine cannot look at the application (no app_idle), and the
 * ACK must go now. The looks: the FIFO's first, then t_delack's. */
bool stk__ack_owe(struct stk_engine *e, struct stk_tcb *t, stk_time_t now)
{
    if (!e->cfg.app_idle || t->sd < 0)
        return false;
    if (!t->owed) {
        t->owed = 1;
        t->owed_looks = 0;
        t->owed_until = now + e->cfg.delack_us;
        stk__owed_queue(e, t, now);
        if (!t->t_delack || t->t_delack > now + STK_OWED_CHECK_US)
            t->t_delack = now + STK_OWED_CHECK_US;
        stk__timer_update(e, t);
    } else if (t->owed_looks >= STK_OWED_FAST_LOOKS) {
        /* Owed for a while already (its deadline stays): news from the peer, so quick looks
         * again. */
        t->owed_looks = 0;
        stk__owed_queue(e, t, now);
    }
    return true;
}

/* The first looks, from a FIFO (all STK_OWED_FAST_US apart, so in time order). */
void stk__owed_queue(struct stk_engine *e, struct stk_tcb *t, stk_time_t now)
{
    struct stk_tcp *tcp = e->tcp;
    if (tcp->owed_len == STK_OWED_Q || t->owed_looks >= STK_OWED_FAST_LOOKS)
        return; /* the wheel's looks (t_delack) go on */
    struct stk_owed_look *l = &tcp->owed_q[(tcp->owed_head + tcp->owed_len) % STK_OWED_Q];
    l->at = now + STK_OWED_FAST_US;
    l->sd = t->sd;
    tcp->owed_len++;
}

static void owed_poll(struct stk_engine *e, stk_time_t now)
{
    struct stk_tcp *tcp = e->tcp;
    while (tcp->owed_len && tcp->owed_q[tcp->owed_head].at <= now) {
        int32_t sd = tcp->owed_q[tcp->owed_head].sd;
        tcp->owed_head = (tcp->owed_head + 1) % STK_OWED_Q;
        tcp->owed_len--;
        /* The socket may be gone, or its id another connection's since: then it owes
         * nothing, or this is one more look at what it owes. */
        struct stk_tcb *t = (uint32_t)sd < e->cfg.max_socks ? tcp->socks[sd] : NULL;
        if (!t || !t->owed)
            continue;
        t->owed_looks++;
        if (owed_look(e, t, now)) {
            t->flags |= TF_ACK_NOW;
            stk__tcp_output(e, t, now);
        } else {
            stk__owed_queue(e, t, now);
        }
    }
}

void stk__tcp_timer_fire(struct stk_engine *e, struct stk_wheel_node *n)
{
    struct stk_tcb *t = TCB_OF_NODE(n);
    stk_time_t now = e->now;
    /* Each handler may end the connection; stop at the first one that does. */
    if (t->t_2msl && t->t_2msl <= now) {
        t->t_2msl = 0;
        stk__tcp_drop(e, t, 0);
        return;
    }
    if (t->t_delack && t->t_delack <= now) {
        t->t_delack = 0;
        if (t->owed && !owed_look(e, t, now)) {
            t->t_delack = stk__min64(now + STK_OWED_CHECK_US, t->owed_until);
        } else {
            t->flags |= TF_ACK_NOW;
            stk__tcp_output(e, t, now);
        }
    }
    if (t->t_cork && t->t_cork <= now) {
        /* Linux releases corked data after 200 ms; so do we. */
        t->t_cork = 0;
        t->flags &= ~(TF_CORK | TF_MORE);
        stk__tcp_output(e, t, now);
    }
    if (t->t_pto && t->t_pto <= now) {
        t->t_pto = 0;
        stk__tlp_send(e, t, now);
    }
    /* A dropped connection without a socket has been freed: t must not be read again. */
    if (t->t_rexmt && t->t_rexmt <= now && on_rexmt(e, t, now))
        return;
    if (t->t_persist && t->t_persist <= now && on_persist(e, t, now))
        return;
    if (t->t_keep && t->t_keep <= now && on_keepalive(e, t, now))
        return;
    stk__timer_update(e, t);
    stk__flush_events(e);
}

void stk__tcp_poll(struct stk_engine *e, stk_time_t now)
{
    owed_poll(e, now);
    stk__flush_events(e);
}

stk_time_t stk__tcp_next_timer(const struct stk_engine *e)
{
    /* Every other TCP timer lives on the wheel. */
    const struct stk_tcp *tcp = e->tcp;
    return tcp->owed_len ? tcp->owed_q[tcp->owed_head].at : UINT64_MAX;
}

/* ---- Events and teardown --------------------------------------------------------------- */

void stk__notify(struct stk_engine *e, struct stk_tcb *t)
{
    if (t->sd < 0 || (t->flags & TF_EV_PENDING) || !e->cfg.on_event)
        return;
    t->flags |= TF_EV_PENDING;
    t->evnext = e->tcp->ev_head;
    e->tcp->ev_head = t;
}

void stk__ack_defer(struct stk_engine *e, struct stk_tcb *t)
{
    if (t->flags & TF_ACK_BATCH)
        return;
    t->flags |= TF_ACK_BATCH;
    t->acknext = e->ack_head;
    e->ack_head = t;
}

/* The end of a receive burst: an ACK for each connection whose in-order data no segment
 * has acknowledged since (data we sent, a window update or an immediate ACK carry it). */
void stk__ack_flush(struct stk_engine *e, stk_time_t now)
{
    if (!e->ack_head)
        return;
    while (e->ack_head) {
        struct stk_tcb *t = e->ack_head;
        e->ack_head = t->acknext;
        t->acknext = NULL;
        t->flags &= ~TF_ACK_BATCH;
        if (t->rcv_nxt != t->last_ack_sent && stk__state_synced(t->state)) {
            t->flags |= TF_ACK_NOW;
            stk__tcp_output(e, t, now);
        }
    }
    stk__flush_events(e);
}

/* Readiness is reported in batches, once per engine entry, never from inside tx(). */
void stk__flush_events(struct stk_engine *e)
{
    while (e->tcp->ev_head) {
        struct stk_tcb *t = e->tcp->ev_head;
        e->tcp->ev_head = t->evnext;
        t->evnext = NULL;
        t->flags &= ~TF_EV_PENDING;
        if (t->sd >= 0)
            e->cfg.on_event(e->cfg.ev_ctx, t->sd, t->user, stk_events(e, t->sd));
    }
}

static void ev_unlink(struct stk_engine *e, struct stk_tcb *t)
{
    if (!(t->flags & TF_EV_PENDING))
        return;
    for (struct stk_tcb **pp = &e->tcp->ev_head; *pp; pp = &(*pp)->evnext) {
        if (*pp == t) {
            *pp = t->evnext;
            break;
        }
    }
    t->flags &= ~TF_EV_PENDING;
}

void stk__synq_add(struct stk_tcb *l, struct stk_tcb *t)
{
    t->syn_prev = NULL;
    t->syn_next = l->syn_head;
    if (l->syn_head)
        l->syn_head->syn_prev = t;
    l->syn_head = t;
    l->synq_len++;
}

void stk__synq_del(struct stk_tcb *t)
{
    struct stk_tcb *l = t->listener;
    if (!l || (!t->syn_prev && l->syn_head != t))
        return; /* not on the queue */
    if (t->syn_prev)
        t->syn_prev->syn_next = t->syn_next;
    else
        l->syn_head = t->syn_next;
    if (t->syn_next)
        t->syn_next->syn_prev = t->syn_prev;
    t->syn_next = t->syn_prev = NULL;
    l->synq_len--;
}

static void unlink_from_listener(struct stk_engine *e, struct stk_tcb *t)
{
    struct stk_tcb *l = t->listener;
    if (!l)
        return;
    stk__synq_del(t);
    for (struct stk_tcb **pp = &l->acc_head, *prev = NULL; *pp; prev = *pp, pp = &(*pp)->qnext) {
        if (*pp == t) {
            *pp = t->qnext;
            if (l->acc_tail == t)
                l->acc_tail = prev;
            l->acc_len--;
            break;
        }
    }
    (void)e;
    t->qnext = NULL;
    t->listener = NULL;
}

void stk__tcp_drop(struct stk_engine *e, struct stk_tcb *t, int err)
{
    if (t->state == STK_TCP_CLOSED)
        return;
    if (err)
        t->so_error = err;
    unlink_from_listener(e, t);
    if (t->state == STK_TCP_LISTEN) {
        stk__listen_remove(e, t);
        /* Connections never accepted die with their listener, as do handshakes. */
        while (t->syn_head) {
            struct stk_tcb *c = t->syn_head;
            stk__send_rst(e, c, e->now);
            stk__tcp_drop(e, c, 0);
        }
        while (t->acc_head) {
            struct stk_tcb *c = t->acc_head;
            stk__send_rst(e, c, e->now);
            stk__tcp_drop(e, c, ECONNRESET);
        }
    } else {
        stk__conn_remove(e, t);
    }
    stk__unbind(e, t);
    t->t_rexmt = t->t_persist = t->t_delack = t->t_keep = t->t_2msl = t->t_cork = t->t_pto = 0;
    stk__wheel_disarm(&e->wheel, &t->tnode);
    stk__set_state(e, t, STK_TCP_CLOSED);
    if (t->sd < 0) {
        ev_unlink(e, t);
        stk__tcb_free(e, t);
    }
}

/* A connection still in the peer's conversation: all but CLOSED, LISTEN and TIME_WAIT.
 * FIN_WAIT_2 too: the peer's FIN is yet to be acknowledged (Linux keeps such an orphan for
 * tcp_fin_timeout), and data it sends meanwhile draws a RST. */
static bool delivering(enum stk_tcp_state st)
{
    return st != STK_TCP_CLOSED && st != STK_TCP_LISTEN && st != STK_TCP_TIME_WAIT;
}

unsigned stk_delivering(const struct stk_counters *k)
{
    unsigned n = 0;
    for (unsigned st = 0; st < sizeof(k->conns_by_state) / sizeof(k->conns_by_state[0]); st++)
        if (delivering((enum stk_tcp_state)st))
            n += (unsigned)k->conns_by_state[st];
    return n;
}

unsigned stk_abort_all(struct stk_engine *e, stk_time_t now)
{
    struct stk_tcp *tcp = e->tcp;
    if (!tcp)
        return 0;
    if (now > e->now)
        e->now = now;
    unsigned n = 0;
    /* Handshakes a listener holds are in the connection hash too. */
    for (uint32_t i = 0; i <= tcp->conn_mask; i++) {
        for (struct stk_tcb *t = tcp->conn_hash[i], *next; t; t = next) {
            next = t->hnext; /* t may be freed */
            if (!delivering(t->state))
                continue;
            stk__send_rst(e, t, e->now);
            stk__tcp_drop(e, t, ECONNRESET);
            n++;
        }
    }
    e->ctr.tcp_stop_aborts += n;
    stk__flush_events(e);
    return n;
}

/* RFC 5961 section 7 limits challenge ACKs. A fixed engine-wide budget is itself an off-path
 * side channel (CVE-2016-5696: an attacker counts the ACKs left in the second to learn
 * whether a guess hit a connection), so, as Linux since 4.7: each connection sends at most
 * one per 500 ms (Linux's tcp_invalid_ratelimit), and the engine-wide budget of each second
 * is drawn at random between half and one and a half times challenge_ack_per_s (not for
 * TIME-WAIT, below). */
bool stk__challenge_ok(struct stk_engine *e, struct stk_tcb *t, stk_time_t now)
{
    struct stk_tcp *tcp = e->tcp;
    if (t->last_chal && now - t->last_chal < STK_US_PER_S / 2) {
        e->ctr.tcp_challenge_limited++;
        return false;
    }
    /* A TIME-WAIT connection's ACKs to segments it refuses are limited per connection only
     * (Linux's tcp_timewait_check_oow_rate_limit): on the engine-wide budget, a burst of
     * SYNs to many TIME-WAIT pairs left those peers a SYN timeout without an answer. */
    if (t->state == STK_TCP_TIME_WAIT) {
        t->last_chal = now ? now : 1;
        e->ctr.tcp_challenge_acks++;
        return true;
    }
    if (!tcp->chal_budget || now - tcp->chal_window >= STK_US_PER_S) {
        uint32_t per = e->cfg.challenge_ack_per_s;
        uint64_t r = stk__siphash(e->cfg.secret, &now, sizeof(now));
        tcp->chal_window = now;
        tcp->chal_count = 0;
        tcp->chal_budget = per / 2 + (uint32_t)(r % ((uint64_t)per + 1));
    }
    if (tcp->chal_count >= tcp->chal_budget) {
        e->ctr.tcp_challenge_limited++;
        return false;
    }
    tcp->chal_count++;
    t->last_chal = now ? now : 1;
    e->ctr.tcp_challenge_acks++;
    return true;
}

/* Our timestamp clock ticks in milliseconds, offset per connection so values do not reveal
 * uptime or link connections (RFC 7323 section 5.4). */
uint32_t stk__ts_now(const struct stk_tcb *t, stk_time_t now)
{
    return (uint32_t)(now / STK_US_PER_MS) + t->ts_offset;
}

/* Does t route through nexthop (an IPv4 connection), or through nexthop6 when that is not
 * NULL (an IPv6 one)? */
static bool routes_via(struct stk_engine *e, const struct stk_tcb *t, uint32_t nexthop,
                       const uint8_t *nexthop6)
{
    if (!nexthop6)
        return !(t->flags & TF_V6) && stk__ip_route(e, t->rip) == nexthop;
    uint8_t nh[16];
    return (t->flags & TF_V6) && stk__ip6_route(e, t->rip6, nh) == 0 &&
           memcmp(nh, nexthop6, 16) == 0;
}

/* Fails with EHOSTUNREACH the connections in SYN-SENT that route through the next hop. */
static void drop_unreachable(struct stk_engine *e, uint32_t nexthop, const uint8_t *nexthop6)
{
    struct stk_tcp *tcp = e->tcp;
    if (!tcp)
        return;
    for (uint32_t b = 0; b <= tcp->conn_mask; b++) {
        struct stk_tcb *t = tcp->conn_hash[b];
        while (t) {
            struct stk_tcb *next = t->hnext; /* the drop unlinks (and may free) t */
            if (t->state == STK_TCP_SYN_SENT && routes_via(e, t, nexthop, nexthop6))
                stk__tcp_drop(e, t, EHOSTUNREACH);
            t = next;
        }
    }
    stk__flush_events(e);
}

void stk__tcp_unreachable(struct stk_engine *e, uint32_t nexthop)
{
    drop_unreachable(e, nexthop, NULL);
}

void stk__tcp_unreachable6(struct stk_engine *e, const uint8_t nexthop[16])
{
    drop_unreachable(e, 0, nexthop);
}

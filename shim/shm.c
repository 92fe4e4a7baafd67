/*
 * shm.c - the primitives of the shared-memory protocol (see shm.h and docs/shm.md): region
 * layout, the per-core command queue, byte rings, accept queues, slot allocation, futexes.
 * No allocation, no DPDK, no engine: both libustack.so and ustackd link it.
 */
#include "shm.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <linux/futex.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define ACQ memory_order_acquire
#define REL memory_order_release
#define RLX memory_order_relaxed

/* The queues' retry loops end after this many rounds: with honest peers a round fails only
 * when another producer/consumer won the same position, but a corrupted sequence word would
 * otherwise keep a stack core spinning here for ever. Giving up reads as full / empty. */
#define SHM_SPIN_MAX 4096

static uint64_t align_up(uint64_t v, uint64_t a)
{
    return (v + a - 1) & ~(a - 1);
}

static bool geometry_ok(const struct shm_geometry *g)
{
    return !(g->ncores == 0 || g->ncores > SHM_MAX_CORES || g->nsocks == 0 ||
             g->nsocks > (1u << 24) || g->nreplies == 0 || g->nreplies > (1u << 20) ||
             g->ring_size < 4096 || g->ring_size > (1u << 24) ||
             (g->ring_size & (g->ring_size - 1)) || g->nprocs > (1u << 16));
}

/* The offsets of a geometry (nprocs already defaulted); returns the total size. */
static uint64_t layout(const struct shm_geometry *g, struct shm_hdr *h)
{
    uint64_t off = align_up(sizeof(struct shm_hdr), 4096);
    h->off_cmdq = off;
    off += align_up((uint64_t)g->ncores * sizeof(struct shm_cmdq), 4096);
    h->off_reply = off;
    off += align_up((uint64_t)g->nreplies * sizeof(struct shm_reply), 4096);
    h->off_sock = off;
    off += align_up((uint64_t)g->nsocks * sizeof(struct shm_sock), 4096);
    h->off_proc = off;
    off += align_up((uint64_t)g->nprocs * sizeof(struct shm_proc), 4096);
    /* Rows page aligned: ustackd punches a dead process's row out of the memfd. */
    h->hold_stride = align_up((uint64_t)g->nsocks * sizeof(uint32_t), 4096);
    h->off_hold = off;
    off += (uint64_t)g->nprocs * h->hold_stride;
    h->off_data = off;
    off += (uint64_t)g->nsocks * 2 * g->ring_size;
    return off;
}

/* The layout of a geometry (nprocs defaulted) in *h: its total size, 0 if invalid. */
static uint64_t layout_of(const struct shm_geometry *g, struct shm_hdr *h)
{
    struct shm_geometry d = *g;
    if (!d.nprocs)
        d.nprocs = SHM_NPROCS;
    if (!geometry_ok(&d))
        return 0;
    return layout(&d, h);
}

uint64_t shm_region_size(const struct shm_geometry *g)
{
    struct shm_hdr h;
    return layout_of(g, &h);
}

uint64_t shm_region_head(const struct shm_geometry *g)
{
    struct shm_hdr h;
    return layout_of(g, &h) ? h.off_hold : 0;
}

void shm_region_init(void *base, const struct shm_geometry *g)
{
    struct shm_hdr *h = base;
    struct shm_geometry d = *g;
    if (!d.nprocs)
        d.nprocs = SHM_NPROCS;
    h->size = layout(&d, h);
    h->version = SHM_VERSION;
    h->ncores = d.ncores;
    h->nsocks = d.nsocks;
    h->nreplies = d.nreplies;
    h->ring_size = d.ring_size;
    h->nprocs = d.nprocs;
    for (uint32_t c = 0; c < d.ncores; c++) {
        struct shm_cmdq *q = shm_cmdq(base, c);
        for (uint32_t i = 0; i < SHM_CMDQ_LEN; i++)
            atomic_store_explicit(&q->slot[i].seq, i, RLX);
        q->wake_fd = -1;
    }
    atomic_store_explicit(&h->state, SHM_STARTING, RLX);
    /* The magic last: a region is not valid before it is laid out. */
    atomic_thread_fence(REL);
    h->magic = SHM_MAGIC;
}

int shm_region_check(const void *base, uint64_t mapped, uint64_t fsize)
{
    const struct shm_hdr *h = base;
    if (mapped < sizeof(*h) || h->magic != SHM_MAGIC || h->version != SHM_VERSION)
        return -EINVAL;
    struct shm_geometry g = {h->ncores, h->nsocks, h->nreplies, h->ring_size, h->nprocs};
    if (g.nprocs == 0 || !geometry_ok(&g))
        return -EINVAL;
    /* The offsets must be the ones this geometry gives. */
    struct shm_hdr ref;
    memset(&ref, 0, sizeof(ref));
    uint64_t size = layout(&g, &ref);
    if (size != h->size || size > fsize || ref.off_hold > mapped)
        return -EINVAL;
    if (h->off_cmdq != ref.off_cmdq || h->off_reply != ref.off_reply ||
        h->off_sock != ref.off_sock || h->off_data != ref.off_data || h->off_proc != ref.off_proc ||
        h->off_hold != ref.off_hold || h->hold_stride != ref.hold_stride)
        return -EINVAL;
    return 0;
}

/* ---- Command queue: Vyukov's bounded queue. Slot i holds sequence number pos when free
 * for the producer at position pos, pos + 1 when filled for the consumer. --------------- */

int shm_cmdq_push(struct shm_cmdq *q, const struct shm_cmd *c)
{
    uint32_t pos = atomic_load_explicit(&q->enq, RLX);
    for (int spin = 0; spin < SHM_SPIN_MAX; spin++) {
        struct shm_cmd *s = &q->slot[pos & (SHM_CMDQ_LEN - 1)];
        uint32_t seq = atomic_load_explicit(&s->seq, ACQ);
        int32_t dif = (int32_t)(seq - pos);
        if (dif == 0) {
            if (atomic_compare_exchange_weak_explicit(&q->enq, &pos, pos + 1, RLX, RLX)) {
                /* Copy everything but the sequence word, then publish. */
                memcpy((char *)s + sizeof(s->seq), (const char *)c + sizeof(c->seq),
                       sizeof(*c) - sizeof(c->seq));
                uint32_t expect = pos;
                if (atomic_compare_exchange_strong_explicit(&s->seq, &expect, pos + 1, REL, RLX))
                    return 0;
                /* The consumer skipped the slot (we looked dead): try a new position. */
                pos = atomic_load_explicit(&q->enq, RLX);
            }
        } else if (dif < 0) {
            return -EAGAIN;
        } else {
            pos = atomic_load_explicit(&q->enq, RLX);
        }
    }
    return -EAGAIN;
}

int shm_cmdq_pop_at(struct shm_cmdq *q, uint32_t *deq, struct shm_cmd *out)
{
    uint32_t pos = *deq;
    struct shm_cmd *s = &q->slot[pos & (SHM_CMDQ_LEN - 1)];
    uint32_t seq = atomic_load_explicit(&s->seq, ACQ);
    if (seq != pos + 1)
        return 0;
    memcpy((char *)out + sizeof(out->seq), (const char *)s + sizeof(s->seq),
           sizeof(*out) - sizeof(out->seq));
    atomic_store_explicit(&s->seq, pos + SHM_CMDQ_LEN, REL);
    *deq = pos + 1;
    atomic_store_explicit(&q->deq, pos + 1, RLX);
    return 1;
}

bool shm_cmdq_empty_at(struct shm_cmdq *q, uint32_t deq)
{
    uint32_t seq = atomic_load_explicit(&q->slot[deq & (SHM_CMDQ_LEN - 1)].seq, ACQ);
    return seq != deq + 1;
}

int shm_cmdq_pop(struct shm_cmdq *q, struct shm_cmd *out)
{
    uint32_t pos = atomic_load_explicit(&q->deq, RLX);
    return shm_cmdq_pop_at(q, &pos, out);
}

bool shm_cmdq_empty(struct shm_cmdq *q)
{
    return shm_cmdq_empty_at(q, atomic_load_explicit(&q->deq, RLX));
}

unsigned shm_cmdq_repair(struct shm_cmdq *q, uint32_t *deq, struct shm_cmdq_stall *stall,
                         int64_t now_ns, int64_t stall_ns)
{
    unsigned fixed = 0;
    for (unsigned k = 0; k < 2 * SHM_CMDQ_LEN; k++) {
        uint32_t pos = *deq;
        _Atomic uint32_t *sq = &q->slot[pos & (SHM_CMDQ_LEN - 1)].seq;
        uint32_t enq = atomic_load_explicit(&q->enq, ACQ);
        uint32_t seq = atomic_load_explicit(sq, ACQ);
        int32_t d = (int32_t)(enq - pos);
        if (seq == pos + 1)
            break; /* filled: the consumer pops it */
        if (d < 0 || d > (int32_t)SHM_CMDQ_LEN) {
            /* Producers would see a full queue for ever: restart them at our position. */
            atomic_compare_exchange_strong_explicit(&q->enq, &enq, pos, RLX, RLX);
            fixed++;
            continue;
        }
        if (d == 0) {
            if (seq == pos)
                break; /* empty */
            /* A free slot must say "free for pos", else producers stall on it. */
            atomic_compare_exchange_strong_explicit(sq, &seq, pos, REL, RLX);
            fixed++;
            continue;
        }
        if (seq == pos) {
            /* Claimed, not yet filled: its producer is copying, or died copying. */
            if (stall->since < 0 || stall->pos != pos || stall->seq != seq) {
                *stall = (struct shm_cmdq_stall){pos, seq, enq, now_ns};
                break;
            }
            if (now_ns - stall->since < stall_ns)
                break;
        }
        /* Skip the slot: free it for the producer one lap later. A producer that was only
         * slow loses the race for the slot and pushes again. */
        if (atomic_compare_exchange_strong_explicit(sq, &seq, pos + SHM_CMDQ_LEN, REL, RLX)) {
            *deq = pos + 1;
            atomic_store_explicit(&q->deq, pos + 1, RLX);
            stall->since = -1;
            fixed++;
        }
    }
    return fixed;
}

/* ---- Byte rings ---------------------------------------------------------------------- */

bool shm_ring_sane(const struct shm_ring *r, uint32_t size)
{
    uint32_t h = atomic_load_explicit(&r->head, ACQ), t = atomic_load_explicit(&r->tail, ACQ);
    return h - t <= size;
}

uint32_t shm_ring_used(const struct shm_ring *r, uint32_t size)
{
    uint32_t h = atomic_load_explicit(&r->head, ACQ), t = atomic_load_explicit(&r->tail, RLX);
    uint32_t u = h - t;
    return u <= size ? u : 0;
}

uint32_t shm_ring_space(const struct shm_ring *r, uint32_t size)
{
    uint32_t h = atomic_load_explicit(&r->head, RLX), t = atomic_load_explicit(&r->tail, ACQ);
    uint32_t u = h - t;
    return u <= size ? size - u : 0;
}

int shm_ring_wspan(const struct shm_ring *r, uint8_t *data, uint32_t size, uint8_t *p[2],
                   uint32_t n[2])
{
    uint32_t space = shm_ring_space(r, size);
    uint32_t h = atomic_load_explicit(&r->head, RLX);
    uint32_t at = h & (size - 1);
    uint32_t first = size - at < space ? size - at : space;
    p[0] = data + at;
    n[0] = first;
    p[1] = data;
    n[1] = space - first;
    return space == 0 ? 0 : (n[1] ? 2 : 1);
}

void shm_ring_produce(struct shm_ring *r, uint32_t len)
{
    atomic_store_explicit(&r->head, atomic_load_explicit(&r->head, RLX) + len, REL);
}

int shm_ring_rspan(const struct shm_ring *r, const uint8_t *data, uint32_t size,
                   const uint8_t *p[2], uint32_t n[2])
{
    uint32_t used = shm_ring_used(r, size);
    uint32_t t = atomic_load_explicit(&r->tail, RLX);
    uint32_t at = t & (size - 1);
    uint32_t first = size - at < used ? size - at : used;
    p[0] = data + at;
    n[0] = first;
    p[1] = data;
    n[1] = used - first;
    return used == 0 ? 0 : (n[1] ? 2 : 1);
}

uint32_t shm_ring_write(struct shm_ring *r, uint8_t *data, uint32_t size, const void *src,
                        uint32_t len)
{
    uint8_t *p[2];
    uint32_t n[2];
    int k = shm_ring_wspan(r, data, size, p, n);
    uint32_t done = 0;
    for (int i = 0; i < k && done < len; i++) {
        uint32_t c = len - done < n[i] ? len - done : n[i];
        memcpy(p[i], (const uint8_t *)src + done, c);
        done += c;
    }
    if (done)
        shm_ring_produce(r, done);
    return done;
}

int shm_ring_span_at(const struct shm_ring *r, const uint8_t *data, uint32_t size, uint32_t off,
                     uint32_t len, bool wr, uint8_t *p[2], uint32_t n[2])
{
    uint32_t pos = wr ? atomic_load_explicit(&r->head, RLX) : atomic_load_explicit(&r->tail, RLX);
    uint32_t at = (pos + off) & (size - 1);
    uint32_t first = size - at < len ? size - at : len;
    if (len == 0)
        return 0;
    p[0] = (uint8_t *)data + at;
    n[0] = first;
    if (first == len)
        return 1;
    p[1] = (uint8_t *)data;
    n[1] = len - first;
    return 2;
}

void shm_ring_put_at(struct shm_ring *r, uint8_t *data, uint32_t size, uint32_t off,
                     const void *src, uint32_t len)
{
    uint8_t *p[2];
    uint32_t n[2];
    int k = shm_ring_span_at(r, data, size, off, len, true, p, n);
    for (int i = 0, done = 0; i < k; done += (int)n[i], i++)
        memcpy(p[i], (const uint8_t *)src + done, n[i]);
}

void shm_ring_get_at(const struct shm_ring *r, const uint8_t *data, uint32_t size, uint32_t off,
                     void *dst, uint32_t len)
{
    uint8_t *p[2];
    uint32_t n[2];
    int k = shm_ring_span_at(r, data, size, off, len, false, p, n);
    for (int i = 0, done = 0; i < k; done += (int)n[i], i++)
        memcpy((uint8_t *)dst + done, p[i], n[i]);
}

uint32_t shm_ring_skip(struct shm_ring *r, uint32_t size, uint32_t len)
{
    uint32_t used = shm_ring_used(r, size);
    if (len > used)
        len = used;
    atomic_store_explicit(&r->tail, atomic_load_explicit(&r->tail, RLX) + len, REL);
    return len;
}

uint32_t shm_ring_read(struct shm_ring *r, const uint8_t *data, uint32_t size, void *dst,
                       uint32_t len, bool peek)
{
    const uint8_t *p[2];
    uint32_t n[2];
    int k = shm_ring_rspan(r, data, size, p, n);
    uint32_t done = 0;
    for (int i = 0; i < k && done < len; i++) {
        uint32_t c = len - done < n[i] ? len - done : n[i];
        memcpy((uint8_t *)dst + done, p[i], c);
        done += c;
    }
    if (done && !peek)
        atomic_store_explicit(&r->tail, atomic_load_explicit(&r->tail, RLX) + done, REL);
    return done;
}

/* ---- Accept queue: a bounded MPMC queue (stack cores push, application processes pop). */

uint32_t shm_aq_capacity(uint32_t ring_size)
{
    /* The largest power of two of entries that fits the rx data area. */
    uint32_t n = ring_size / sizeof(struct shm_aq_entry);
    while (n & (n - 1))
        n &= n - 1;
    return n;
}

void shm_aq_init(struct shm_sock *l, void *aq_data, uint32_t ring_size)
{
    struct shm_aq_entry *e = aq_data;
    uint32_t cap = shm_aq_capacity(ring_size);
    for (uint32_t i = 0; i < cap; i++)
        atomic_store_explicit(&e[i].seq, i, RLX);
    atomic_store_explicit(&l->aq_enq, 0, RLX);
    atomic_store_explicit(&l->aq_deq, 0, RLX);
    atomic_thread_fence(REL);
}

int shm_aq_push(struct shm_sock *l, void *aq_data, uint32_t ring_size, uint32_t sock)
{
    struct shm_aq_entry *e = aq_data;
    uint32_t cap = shm_aq_capacity(ring_size);
    uint32_t pos = atomic_load_explicit(&l->aq_enq, RLX);
    for (int spin = 0; spin < SHM_SPIN_MAX; spin++) {
        struct shm_aq_entry *s = &e[pos & (cap - 1)];
        uint32_t seq = atomic_load_explicit(&s->seq, ACQ);
        int32_t dif = (int32_t)(seq - pos);
        if (dif == 0) {
            if (atomic_compare_exchange_weak_explicit(&l->aq_enq, &pos, pos + 1, RLX, RLX)) {
                s->sock = sock;
                atomic_store_explicit(&s->seq, pos + 1, REL);
                return 0;
            }
        } else if (dif < 0) {
            return -EAGAIN;
        } else {
            pos = atomic_load_explicit(&l->aq_enq, RLX);
        }
    }
    return -EAGAIN;
}

int shm_aq_pop(struct shm_sock *l, void *aq_data, uint32_t ring_size, uint32_t *sock)
{
    struct shm_aq_entry *e = aq_data;
    uint32_t cap = shm_aq_capacity(ring_size);
    uint32_t pos = atomic_load_explicit(&l->aq_deq, RLX);
    for (int spin = 0; spin < SHM_SPIN_MAX; spin++) {
        struct shm_aq_entry *s = &e[pos & (cap - 1)];
        uint32_t seq = atomic_load_explicit(&s->seq, ACQ);
        int32_t dif = (int32_t)(seq - (pos + 1));
        if (dif == 0) {
            if (atomic_compare_exchange_weak_explicit(&l->aq_deq, &pos, pos + 1, RLX, RLX)) {
                *sock = s->sock;
                atomic_store_explicit(&s->seq, pos + cap, REL);
                return 1;
            }
        } else if (dif < 0) {
            return 0;
        } else {
            pos = atomic_load_explicit(&l->aq_deq, RLX);
        }
    }
    return 0;
}

bool shm_aq_empty(struct shm_sock *l)
{
    return atomic_load_explicit(&l->aq_enq, ACQ) == atomic_load_explicit(&l->aq_deq, ACQ);
}

/* ---- Slots --------------------------------------------------------------------------- */

/* The slots next fit cycles through before starting again at 0: about twice those in use,
 * so a free one is near. sock_live is only a hint (a process dying between its reserve and
 * its count, or a client scribbling on it, makes it wrong): any value works, it only moves
 * the point where the search starts, never which slots it looks at. */
static uint32_t sock_window(const struct shm_hdr *h, const struct shm_hdr *sh)
{
    uint32_t live = atomic_load_explicit(&sh->sock_live, RLX);
    if (live >= h->nsocks / 2)
        return h->nsocks;
    return live * 2 + 64;
}

uint32_t shm_sock_alloc(void *base)
{
    return shm_sock_alloc_in(base, base);
}

uint32_t shm_sock_alloc_in(void *base, struct shm_hdr *sh)
{
    struct shm_hdr *h = base;
    uint32_t n = h->nsocks;
    uint32_t start = atomic_fetch_add_explicit(&sh->sock_hint, 1, RLX);
    if (start >= sock_window(h, sh) || start >= n)
        start = 0;
    for (uint32_t k = 0; k < n; k++) {
        uint32_t i = (start + k) % n;
        struct shm_sock *s = shm_sock(base, i);
        uint32_t expect = SHM_SOCK_FREE;
        if (atomic_load_explicit(&s->state, RLX) == SHM_SOCK_FREE &&
            atomic_compare_exchange_strong_explicit(&s->state, &expect, SHM_SOCK_RESERVED, ACQ,
                                                    RLX)) {
            atomic_store_explicit(&sh->sock_hint, i + 1, RLX);
            atomic_fetch_add_explicit(&sh->sock_live, 1, RLX);
            return i;
        }
    }
    return SHM_NONE;
}

void shm_sock_free(void *base, uint32_t i)
{
    shm_sock_free_in(base, base, i);
}

void shm_sock_free_in(void *base, struct shm_hdr *sh, uint32_t i)
{
    struct shm_hdr *h = base;
    if (i >= h->nsocks)
        return;
    struct shm_sock *s = shm_sock(base, i);
    uint32_t gen = atomic_load_explicit(&s->gen, RLX) + 1;
    /* Reset everything a next user reads, then release the slot. */
    atomic_store_explicit(&s->refs, 0, RLX);
    atomic_store_explicit(&s->flags, 0, RLX);
    atomic_store_explicit(&s->so_error, 0, RLX);
    atomic_store_explicit(&s->armed, 0, RLX);
    atomic_store_explicit(&s->kick, 0, RLX);
    atomic_store_explicit(&s->linger_s, 0, RLX);
    atomic_store_explicit(&s->armed_et, 0, RLX);
    atomic_store_explicit(&s->nospace, 0, RLX);
    atomic_store_explicit(&s->lt_bits, 0, RLX);
    atomic_store_explicit(&s->sigb, 0, RLX);
    atomic_store_explicit(&s->attach_pend, 0, RLX);
    atomic_store_explicit(&s->ev_in, 0, RLX);
    atomic_store_explicit(&s->ev_out, 0, RLX);
    atomic_store_explicit(&s->app_flags, 0, RLX); /* else a next socket starts shut down */
    atomic_store_explicit(&s->wlock, 0, RLX);     /* a holder may have died copying */
    atomic_store_explicit(&s->rlock, 0, RLX);
    atomic_store_explicit(&s->rx.head, 0, RLX);
    atomic_store_explicit(&s->rx.tail, 0, RLX);
    atomic_store_explicit(&s->tx.head, 0, RLX);
    atomic_store_explicit(&s->tx.tail, 0, RLX);
    atomic_store_explicit(&s->aq_enq, 0, RLX);
    atomic_store_explicit(&s->aq_deq, 0, RLX);
    memset(&s->la, 0, sizeof(s->la));
    memset(&s->ra, 0, sizeof(s->ra));
    s->domain = 0;
    atomic_store_explicit(&s->gen, gen, RLX);
    atomic_fetch_add_explicit(&s->seq, 1, RLX);
    atomic_store_explicit(&s->state, SHM_SOCK_FREE, REL);
    /* Never below 0: a count that went wrong only widens the window. */
    uint32_t live = atomic_load_explicit(&sh->sock_live, RLX);
    while (live &&
           !atomic_compare_exchange_weak_explicit(&sh->sock_live, &live, live - 1, RLX, RLX)) {
    }
}

bool shm_sock_valid(void *base, uint32_t i, uint32_t gen)
{
    struct shm_hdr *h = base;
    if (i >= h->nsocks)
        return false;
    struct shm_sock *s = shm_sock(base, i);
    return atomic_load_explicit(&s->gen, ACQ) == gen;
}

/* ---- Processes --------------------------------------------------------------------------- */

uint32_t shm_proc_alloc(void *base, int32_t pid, int32_t parent)
{
    struct shm_hdr *h = base;
    /* Lowest free entry first: the rows of hold counts that get touched stay few. */
    for (uint32_t p = 0; p < h->nprocs; p++) {
        struct shm_proc *e = shm_proc(base, p);
        uint32_t expect = SHM_PROC_FREE;
        if (atomic_load_explicit(&e->state, RLX) != SHM_PROC_FREE ||
            !atomic_compare_exchange_strong_explicit(&e->state, &expect, SHM_PROC_PENDING, ACQ,
                                                     RLX))
            continue;
        atomic_store_explicit(&e->parent, parent, RLX);
        atomic_store_explicit(&e->pid, pid, RLX);
        if (pid > 0)
            atomic_store_explicit(&e->state, SHM_PROC_LIVE, REL);
        return p;
    }
    return SHM_NONE;
}

bool shm_proc_set_pid(void *base, uint32_t p, int32_t pid)
{
    struct shm_hdr *h = base;
    if (p >= h->nprocs || pid <= 0)
        return false;
    struct shm_proc *e = shm_proc(base, p);
    uint32_t st = atomic_load_explicit(&e->state, ACQ);
    if (st == SHM_PROC_LIVE)
        return atomic_load_explicit(&e->pid, RLX) == pid;
    if (st != SHM_PROC_PENDING)
        return false;
    atomic_store_explicit(&e->pid, pid, RLX);
    uint32_t expect = SHM_PROC_PENDING;
    if (atomic_compare_exchange_strong_explicit(&e->state, &expect, SHM_PROC_LIVE, REL, ACQ))
        return true;
    return expect == SHM_PROC_LIVE && atomic_load_explicit(&e->pid, RLX) == pid;
}

uint32_t shm_proc_find(void *base, int32_t pid)
{
    struct shm_hdr *h = base;
    for (uint32_t p = 0; p < h->nprocs; p++) {
        struct shm_proc *e = shm_proc(base, p);
        if (atomic_load_explicit(&e->state, ACQ) == SHM_PROC_LIVE &&
            atomic_load_explicit(&e->pid, RLX) == pid)
            return p;
    }
    return SHM_NONE;
}

void shm_proc_cancel(void *base, uint32_t p, _Atomic uint32_t *row)
{
    struct shm_hdr *h = base;
    if (p >= h->nprocs)
        return;
    struct shm_proc *e = shm_proc(base, p);
    if (atomic_load_explicit(&e->state, ACQ) != SHM_PROC_PENDING)
        return;
    for (uint32_t i = 0; row && i < h->nsocks; i++)
        if (atomic_load_explicit(&row[i], RLX))
            atomic_store_explicit(&row[i], 0, RLX);
    atomic_store_explicit(&e->pid, 0, RLX);
    atomic_store_explicit(&e->parent, 0, RLX);
    atomic_store_explicit(&e->state, SHM_PROC_FREE, REL);
}

uint32_t shm_reply_alloc(void *base, uint32_t tid, int32_t pid)
{
    struct shm_hdr *h = base;
    uint32_t n = h->nreplies;
    uint32_t start = atomic_fetch_add_explicit(&h->reply_hint, 1, RLX) % n;
    for (uint32_t k = 0; k < n; k++) {
        uint32_t i = (start + k) % n;
        struct shm_reply *r = shm_reply(base, i);
        uint32_t expect = 0;
        if (atomic_load_explicit(&r->owner, RLX) == 0 &&
            atomic_compare_exchange_strong_explicit(&r->owner, &expect, tid ? tid : 1, ACQ, RLX)) {
            r->pid = pid;
            return i;
        }
    }
    return SHM_NONE;
}

void shm_reply_release(void *base, uint32_t i)
{
    struct shm_hdr *h = base;
    if (i < h->nreplies)
        atomic_store_explicit(&shm_reply(base, i)->owner, 0, REL);
}

/* ---- Waiting ------------------------------------------------------------------------- */

int shm_futex_wait(_Atomic uint32_t *word, uint32_t expected, int64_t timeout_ns)
{
    struct timespec ts, *tp = NULL;
    if (timeout_ns >= 0) {
        ts.tv_sec = (time_t)(timeout_ns / 1000000000);
        ts.tv_nsec = (long)(timeout_ns % 1000000000);
        tp = &ts;
    }
    /* Not FUTEX_PRIVATE: the word is in memory shared between processes. */
    long rc = syscall(SYS_futex, (uint32_t *)word, FUTEX_WAIT, expected, tp, NULL, 0);
    if (rc == 0 || errno == EAGAIN)
        return 0;
    return errno == ETIMEDOUT ? -ETIMEDOUT : errno == EINTR ? -EINTR : -errno;
}

void shm_futex_wake(_Atomic uint32_t *word, int n)
{
    syscall(SYS_futex, (uint32_t *)word, FUTEX_WAKE, n, NULL, NULL, 0);
}

void shm_sock_notify(struct shm_sock *s)
{
    /* Sequentially consistent, not release/acquire: this is one half of a Dekker pair (bump
     * seq, then read waiters; a waiter bumps waiters, then re-reads seq), and only a full
     * barrier keeps the waiters load from moving before the seq store. */
    atomic_fetch_add_explicit(&s->seq, 1, memory_order_seq_cst);
    if (atomic_load_explicit(&s->waiters, memory_order_seq_cst))
        shm_futex_wake(&s->seq, 1 << 30);
}

int shm_run_path(const char *dev, const char *suffix, char *buf, size_t len)
{
    /* thread-self: /proc/self names the main thread, whose namespaces are gone once it has
     * exited (pthread_exit) while the others run on. */
    char ns[64] = "";
    ssize_t n = readlink("/proc/thread-self/ns/net", ns, sizeof(ns) - 1);
    ns[n > 0 ? n : 0] = 0;
    unsigned long ino = 0;
    sscanf(ns, "net:[%lu]", &ino);
    /* The same interface name in two namespaces is two devices. */
    char name[256], *q = name;
    for (const char *p = dev; *p && q < name + 200; p++)
        *q++ = (char)(isalnum((unsigned char)*p) || *p == '.' || *p == '-' ? *p : '_');
    *q = 0;
    int k = snprintf(buf, len, "/run/ustack/%s.%lu%s", name, ino, suffix);
    return k < 0 || (size_t)k >= len ? -ENAMETOOLONG : 0;
}

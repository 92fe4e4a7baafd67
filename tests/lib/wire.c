/*
 * wire.c - the in-memory link, its fault injection, the fake clock and the pcap writer
 * (see wire.h).
 */
#include "wire.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

const uint8_t wire_mac_a[6] = {0x02, 0, 0, 0, 0, 0x01};
const uint8_t wire_mac_b[6] = {0x02, 0, 0, 0, 0, 0x02};

/* A frame held for reordering that no later frame overtakes is let go after this long, so
 * the last frame of a burst is late rather than lost. */
#define WIRE_HOLD_MAX_US (10 * STK_US_PER_MS)
/* How often an engine may be polled at one instant before the wire decides its timer is
 * stuck and moves on by a microsecond. */
#define WIRE_SAME_TIME_POLLS    4
#define WIRE_DEFAULT_STEP_LIMIT 50000000ull

/* ---- PRNG ----------------------------------------------------------------------------- */

void wire_rng_seed(struct wire_rng *r, uint64_t seed)
{
    r->s = seed;
}

uint64_t wire_rng_next(struct wire_rng *r)
{
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

double wire_rng_unit(struct wire_rng *r)
{
    return (double)(wire_rng_next(r) >> 11) * (1.0 / 9007199254740992.0);
}

uint64_t wire_rng_below(struct wire_rng *r, uint64_t n)
{
    return n ? wire_rng_next(r) % n : 0;
}

/* A probability test that draws no random number when p is 0, so that turning one fault on
 * does not change the random stream of a profile that never used it. */
static bool chance(struct wire_rng *r, double p)
{
    if (p <= 0)
        return false;
    return wire_rng_unit(r) < p;
}

/* ---- Frame heap ----------------------------------------------------------------------- */

static bool frame_before(const struct wire_frame *a, const struct wire_frame *b)
{
    return a->t != b->t ? a->t < b->t : a->seq < b->seq;
}

static int heap_push(struct wire_link *l, struct wire_frame *f)
{
    if (l->n == l->cap) {
        size_t ncap = l->cap ? l->cap * 2 : 256;
        struct wire_frame **nh = realloc(l->heap, ncap * sizeof(*nh));
        if (!nh)
            return -ENOMEM;
        l->heap = nh;
        l->cap = ncap;
    }
    f->seq = l->seq++;
    size_t i = l->n++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!frame_before(f, l->heap[parent]))
            break;
        l->heap[i] = l->heap[parent];
        i = parent;
    }
    l->heap[i] = f;
    return 0;
}

static struct wire_frame *heap_pop(struct wire_link *l)
{
    struct wire_frame *top = l->heap[0];
    struct wire_frame *last = l->heap[--l->n];
    size_t i = 0;

    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= l->n)
            break;
        if (c + 1 < l->n && frame_before(l->heap[c + 1], l->heap[c]))
            c++;
        if (!frame_before(l->heap[c], last))
            break;
        l->heap[i] = l->heap[c];
        i = c;
    }
    if (l->n)
        l->heap[i] = last;
    return top;
}

/* ---- One direction -------------------------------------------------------------------- */

void wire_link_init(struct wire_link *l, uint64_t seed)
{
    memset(l, 0, sizeof(*l));
    wire_rng_seed(&l->rng, seed);
}

void wire_link_fini(struct wire_link *l)
{
    while (l->n)
        free(heap_pop(l));
    free(l->heap);
    free(l->held);
    l->heap = NULL;
    l->held = NULL;
    l->cap = 0;
}

static bool in_down_window(const struct wire_fault *f, stk_time_t t)
{
    return f->down_until > f->down_from && t >= f->down_from && t < f->down_until;
}

static struct wire_frame *frame_copy(const uint8_t *data, size_t len, stk_time_t t)
{
    struct wire_frame *f = malloc(sizeof(*f) + (len ? len : 1));

    if (!f)
        return NULL;
    f->t = t;
    f->seq = 0;
    f->len = len;
    f->flags = 0;
    memcpy(f->data, data, len);
    return f;
}

static void maybe_corrupt(struct wire_link *l, struct wire_frame *f)
{
    if (f->len && chance(&l->rng, l->fault.corrupt)) {
        uint64_t bit = wire_rng_below(&l->rng, (uint64_t)f->len * 8);
        f->data[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        f->flags |= WIRE_F_CORRUPT;
        l->st.corrupted++;
    }
}

/* Schedules f in order; a held frame is released right behind it (it was overtaken). */
static int schedule(struct wire_link *l, struct wire_frame *f)
{
    int rc = heap_push(l, f);

    if (rc < 0) {
        free(f);
        return rc;
    }
    if (f->t > l->last_due)
        l->last_due = f->t;
    if (l->held) {
        struct wire_frame *h = l->held;
        l->held = NULL;
        if (h->t < f->t)
            h->t = f->t;
        rc = heap_push(l, h);
        if (rc < 0)
            free(h);
    }
    return rc;
}

/* Reorders f: either a fixed extra delay, or it waits until the next frame overtakes it. */
static int hold_back(struct wire_link *l, struct wire_frame *f, stk_time_t due)
{
    f->flags |= WIRE_F_REORDERED;
    l->st.reordered++;
    if (l->fault.reorder_us) {
        f->t = due + l->fault.reorder_us;
        if (heap_push(l, f) < 0) {
            free(f);
            return -ENOMEM;
        }
        return 0;
    }
    /* Only one frame waits at a time; an earlier one goes out now, ahead of this one. */
    if (l->held) {
        struct wire_frame *h = l->held;
        l->held = NULL;
        if (h->t < due)
            h->t = due;
        if (heap_push(l, h) < 0)
            free(h);
    }
    l->held = f;
    l->held_deadline = due + WIRE_HOLD_MAX_US;
    return 0;
}

int wire_link_send(struct wire_link *l, stk_time_t now, const uint8_t *frame, size_t len)
{
    const struct wire_fault *fp = &l->fault;

    l->st.frames++;
    l->st.bytes += len;
    if (in_down_window(fp, now)) {
        l->st.down++;
        return 0;
    }
    if (chance(&l->rng, fp->loss)) {
        l->st.lost++;
        return 0;
    }

    /* Serialisation: a frame leaves when the link has finished the ones before it. */
    stk_time_t arrive = now;
    if (fp->rate) {
        if (l->busy_until > now && fp->queue_bytes) {
            uint64_t backlog = (l->busy_until - now) * fp->rate / STK_US_PER_S;
            if (backlog + len > fp->queue_bytes) {
                l->st.qdrops++;
                return 0;
            }
        }
        stk_time_t start = l->busy_until > now ? l->busy_until : now;
        l->busy_until = start + ((uint64_t)len * STK_US_PER_S + fp->rate - 1) / fp->rate;
        arrive = l->busy_until;
    }
    stk_time_t base = arrive + fp->delay_us;
    stk_time_t due = base + wire_rng_below(&l->rng, (uint64_t)fp->jitter_us + 1);
    /* Jitter stretches gaps but never reorders; reordering is its own knob. */
    if (due < l->last_due)
        due = l->last_due;
    if (in_down_window(fp, due)) {
        l->st.down++;
        return 0;
    }

    struct wire_frame *f = frame_copy(frame, len, due);
    if (!f)
        return -ENOBUFS;
    maybe_corrupt(l, f);

    /* The copy trails its original (never earlier) and takes its own jitter. */
    struct wire_frame *d = NULL;
    if (chance(&l->rng, fp->dup)) {
        stk_time_t t2 = base + wire_rng_below(&l->rng, (uint64_t)fp->jitter_us + 1);
        d = frame_copy(frame, len, t2 < due ? due : t2);
        if (d) {
            d->flags |= WIRE_F_DUP;
            maybe_corrupt(l, d);
            l->st.duplicated++;
        }
    }

    int rc;
    if (chance(&l->rng, fp->reorder))
        rc = hold_back(l, f, due);
    else
        rc = schedule(l, f);
    if (d && heap_push(l, d) < 0) {
        free(d);
        rc = -ENOMEM;
    }
    return rc < 0 ? -ENOBUFS : 0;
}

stk_time_t wire_link_next(const struct wire_link *l)
{
    stk_time_t t = l->n ? l->heap[0]->t : UINT64_MAX;

    if (l->held && l->held_deadline < t)
        t = l->held_deadline;
    return t;
}

struct wire_frame *wire_link_pop(struct wire_link *l, stk_time_t now)
{
    if (l->held && l->held_deadline <= now) {
        struct wire_frame *h = l->held;
        l->held = NULL;
        h->t = l->held_deadline;
        if (heap_push(l, h) < 0)
            free(h);
    }
    if (!l->n || l->heap[0]->t > now)
        return NULL;
    return heap_pop(l);
}

size_t wire_link_inflight(const struct wire_link *l)
{
    return l->n + (l->held != NULL);
}

/* ---- pcap ----------------------------------------------------------------------------- */

static void le32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

int wire_pcap_open(struct wire_pcap *p, const char *path)
{
    uint8_t h[24];

    p->f = fopen(path, "wb");
    if (!p->f)
        return -errno;
    /* Written little-endian whatever the host: the magic tells readers the byte order. */
    le32(h, 0xa1b2c3d4u);
    h[4] = 2; /* version 2.4 */
    h[5] = 0;
    h[6] = 4;
    h[7] = 0;
    le32(h + 8, 0);       /* thiszone */
    le32(h + 12, 0);      /* sigfigs */
    le32(h + 16, 262144); /* snaplen */
    le32(h + 20, 1);      /* LINKTYPE_ETHERNET */
    if (fwrite(h, sizeof(h), 1, p->f) != 1) {
        fclose(p->f);
        p->f = NULL;
        return -EIO;
    }
    return 0;
}

int wire_pcap_write(struct wire_pcap *p, stk_time_t t, const uint8_t *frame, size_t len)
{
    uint8_t h[16];
    size_t incl = len > 262144 ? 262144 : len;

    if (!p->f)
        return 0;
    le32(h, (uint32_t)(t / STK_US_PER_S));
    le32(h + 4, (uint32_t)(t % STK_US_PER_S));
    le32(h + 8, (uint32_t)incl);
    le32(h + 12, (uint32_t)len);
    if (fwrite(h, sizeof(h), 1, p->f) != 1 || (incl && fwrite(frame, incl, 1, p->f) != 1))
        return -EIO;
    return 0;
}

void wire_pcap_close(struct wire_pcap *p)
{
    if (p->f)
        fclose(p->f);
    p->f = NULL;
}

/* ---- The wire ------------------------------------------------------------------------- */

static uint64_t mix(uint64_t seed, uint64_t salt)
{
    struct wire_rng r;

    wire_rng_seed(&r, seed ^ salt);
    return wire_rng_next(&r);
}

void wire_default_config(struct stk_config *cfg, int side, uint64_t seed)
{
    static const uint8_t zero16[16];

    if (!memcmp(cfg->mac, pkt_mac_zero, 6))
        memcpy(cfg->mac, side == WIRE_A ? wire_mac_a : wire_mac_b, 6);
    if (!cfg->ip)
        cfg->ip = side == WIRE_A ? WIRE_IP_A : WIRE_IP_B;
    if (!cfg->prefix)
        cfg->prefix = 24;
    if (!memcmp(cfg->secret, zero16, 16)) {
        /* Different per side, so the two engines do not pick the same ISNs. */
        uint64_t a = mix(seed, 0x5ec7e7a000000000ull + (uint64_t)side * 2);
        uint64_t b = mix(seed, 0x5ec7e7a000000001ull + (uint64_t)side * 2);
        for (int i = 0; i < 8; i++) {
            cfg->secret[i] = (uint8_t)(a >> (8 * i));
            cfg->secret[8 + i] = (uint8_t)(b >> (8 * i));
        }
    }
}

static int ep_send_seg(void *ctx, const uint8_t *seg, size_t len)
{
    struct wire_endpoint *ep = ctx;

    return wire_link_send(&ep->w->link[ep->side], ep->w->now, seg, len);
}

/* stk_config.tx of an engine endpoint: acts as the NIC (finishes offloads, splits TSO)
 * and puts the result on the link. */
static int ep_tx(void *io_ctx, const struct stk_iov *iov, int n, const struct stk_txmeta *meta)
{
    struct wire_endpoint *ep = io_ctx;
    struct wire_link *l = &ep->w->link[ep->side];
    size_t len = 0, off = 0;
    int rc;

    if (chance(&l->rng, l->fault.tx_fail)) {
        l->st.tx_fails++;
        return -ENOBUFS;
    }
    for (int i = 0; i < n; i++)
        len += iov[i].len;
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf)
        return -ENOBUFS;
    for (int i = 0; i < n; i++) {
        if (iov[i].len)
            memcpy(buf + off, iov[i].base, iov[i].len);
        off += iov[i].len;
    }
    if (meta && meta->flags) {
        bool partial_ok = true;
        if (pkt_offload_finish(buf, len, meta, &partial_ok) != PKT_OK || !partial_ok)
            ep->offload_bad++;
        if (meta->flags & STK_TX_L4_SUM)
            ep->l4sum_frames++;
    }
    if (meta && (meta->flags & STK_TX_TSO)) {
        l->st.tso_frames++;
        rc = pkt_tso_segment(buf, len, meta->tso_mss, ep_send_seg, ep);
        if (rc == PKT_E_OFFLOAD) {
            ep->offload_bad++;
            rc = wire_link_send(l, ep->w->now, buf, len);
        }
    } else {
        rc = wire_link_send(l, ep->w->now, buf, len);
    }
    free(buf);
    return rc < 0 ? -ENOBUFS : 0;
}

int wire_create(struct wire **out, const struct wire_opts *o)
{
    static const struct wire_opts none;
    struct wire *w = calloc(1, sizeof(*w));
    int rc = 0;

    *out = NULL;
    if (!w)
        return -ENOMEM;
    if (!o)
        o = &none;
    w->seed = o->seed;
    w->now = o->start ? o->start : STK_US_PER_S;
    w->step_limit = o->step_limit ? o->step_limit : WIRE_DEFAULT_STEP_LIMIT;
    w->bursts = o->bursts;
    for (int d = 0; d < 2; d++)
        wire_link_init(&w->link[d], mix(o->seed, 0x11d0000000000000ull + (uint64_t)d));
    if (o->pcap) {
        rc = wire_pcap_open(&w->pcap, o->pcap);
        if (rc < 0)
            goto fail;
    }
    for (int s = 0; s < 2; s++) {
        struct wire_endpoint *ep = &w->ep[s];
        ep->w = w;
        ep->side = s;
        if (o->cfg[s])
            ep->cfg = *o->cfg[s];
        wire_default_config(&ep->cfg, s, o->seed);
        ep->cfg.io_ctx = ep;
        ep->cfg.tx = ep_tx;
        if (o->raw[s]) {
            ep->cap = malloc(sizeof(*ep->cap));
            if (!ep->cap) {
                rc = -ENOMEM;
                goto fail;
            }
            pkt_capture_init(ep->cap);
            continue;
        }
        rc = stk_engine_create(&ep->cfg, w->now, &ep->eng);
        if (rc < 0) {
            ep->eng = NULL;
            goto fail;
        }
    }
    *out = w;
    return 0;
fail:
    wire_destroy(w);
    return rc;
}

void wire_destroy(struct wire *w)
{
    if (!w)
        return;
    for (int s = 0; s < 2; s++) {
        if (w->ep[s].eng)
            stk_engine_destroy(w->ep[s].eng);
        if (w->ep[s].cap) {
            pkt_capture_fini(w->ep[s].cap);
            free(w->ep[s].cap);
        }
    }
    for (int d = 0; d < 2; d++)
        wire_link_fini(&w->link[d]);
    wire_pcap_close(&w->pcap);
    free(w);
}

void wire_set_tap(struct wire *w, wire_tap_fn tap, void *ctx)
{
    w->tap = tap;
    w->tap_ctx = ctx;
}

int wire_inject(struct wire *w, int side, const uint8_t *frame, size_t len)
{
    return wire_link_send(&w->link[side], w->now, frame, len);
}

/* When an engine endpoint wants stk_poll(). An engine whose timer stays at an instant it
 * has already been polled at several times without input in between would spin the wire
 * forever; it is moved on by 1 us and the stall is counted so a test can assert on it. */
static stk_time_t ep_timer(const struct wire_endpoint *ep, bool *stalled)
{
    stk_time_t t;

    *stalled = false;
    if (!ep->eng)
        return UINT64_MAX;
    t = stk_next_timer(ep->eng);
    if (t != UINT64_MAX && t <= ep->polled_at && ep->polls_at_same_time >= WIRE_SAME_TIME_POLLS) {
        t = ep->polled_at + 1;
        *stalled = true;
    }
    return t;
}

/* The next event: which = 0/1 for a frame on link[which], 2/3 for a timer of engine
 * which - 2. Frames win ties so a timer sees the input that arrived at the same instant. */
static stk_time_t next_event(struct wire *w, int *which, bool *stalled)
{
    stk_time_t best = UINT64_MAX;

    *which = -1;
    *stalled = false;
    for (int d = 0; d < 2; d++) {
        stk_time_t t = wire_link_next(&w->link[d]);
        if (t < best) {
            best = t;
            *which = d;
        }
    }
    for (int s = 0; s < 2; s++) {
        bool st;
        stk_time_t t = ep_timer(&w->ep[s], &st);
        if (t < best) {
            best = t;
            *which = 2 + s;
            *stalled = st;
        }
    }
    return best;
}

stk_time_t wire_next_event(struct wire *w)
{
    int which;
    bool stalled;

    return next_event(w, &which, &stalled);
}

static void deliver(struct wire *w, int dir, struct wire_frame *f)
{
    struct wire_link *l = &w->link[dir];
    struct wire_endpoint *dst = &w->ep[1 - dir];

    if (w->tap && w->tap(w->tap_ctx, dir, w->now, f->data, f->len)) {
        l->st.tap_drops++;
        return;
    }
    l->st.delivered++;
    l->st.delivered_bytes += f->len;
    wire_pcap_write(&w->pcap, w->now, f->data, f->len);
    dst->inputs++;
    dst->polls_at_same_time = 0;
    if (dst->eng)
        stk_input(dst->eng, w->now, f->data, f->len, dst->rx_flags);
    else
        pkt_capture_add(dst->cap, f->data, f->len);
}

int wire_step(struct wire *w)
{
    int which;
    bool stalled;
    stk_time_t t = next_event(w, &which, &stalled);

    if (t == UINT64_MAX)
        return 0;
    if (w->steps >= w->step_limit)
        return -ELOOP;
    w->steps++;
    /* An engine may ask for a poll in the past (after an API call); time never runs back. */
    if (t > w->now)
        w->now = t;
    if (which < 2) {
        struct stk_engine *dst = w->bursts ? w->ep[1 - which].eng : NULL;
        if (dst)
            stk_rx_begin(dst);
        for (int k = 0; k < (dst ? WIRE_BURST : 1); k++) {
            struct wire_frame *f = wire_link_pop(&w->link[which], w->now);
            if (!f)
                break;
            deliver(w, which, f);
            free(f);
        }
        if (dst)
            stk_rx_end(dst, w->now);
        return 1;
    }
    struct wire_endpoint *ep = &w->ep[which - 2];
    if (stalled)
        ep->timer_stalls++;
    if (ep->polled_at == w->now) {
        ep->polls_at_same_time++;
    } else {
        ep->polled_at = w->now;
        ep->polls_at_same_time = 1;
    }
    ep->polls++;
    stk_poll(ep->eng, w->now);
    return 1;
}

int wire_run_until(struct wire *w, stk_time_t t)
{
    while (wire_next_event(w) <= t) {
        int rc = wire_step(w);
        if (rc < 0)
            return rc;
        if (rc == 0)
            break;
    }
    if (w->now < t)
        w->now = t;
    return 0;
}

int wire_run_for(struct wire *w, stk_time_t dt)
{
    return wire_run_until(w, w->now + dt);
}

int wire_run(struct wire *w, int (*done)(void *ctx), void *ctx, stk_time_t max_time)
{
    stk_time_t deadline = w->now + max_time;

    for (;;) {
        if (done(ctx))
            return 0;
        if (wire_next_event(w) > deadline) {
            if (w->now < deadline)
                w->now = deadline;
            return done(ctx) ? 0 : -ETIMEDOUT;
        }
        int rc = wire_step(w);
        if (rc < 0)
            return rc;
    }
}

/*
 * wheel.c - a hashed timing wheel of 1 ms ticks (Varghese and Lauck's scheme 6).
 *
 * A node lives in slot (expire mod STK_WHEEL_SLOTS). Nodes due more than one revolution ahead
 * stay in their slot and are passed over until their tick comes round, which keeps arming
 * O(1) for any delay. Invariant: every armed node has expire > w->now.
 *
 * Lists are intrusive and doubly linked through pprev, so a node can unlink itself in O(1)
 * without knowing which list holds it. advance() relies on that: it moves a slot's list onto
 * a local head before firing, so fire() may arm or disarm any node, including ones still on
 * the local list, without invalidating the walk.
 */
#include "stk_int.h"

#define SLOT_MASK (STK_WHEEL_SLOTS - 1u)

static void list_insert(struct stk_wheel_node **head, struct stk_wheel_node *n)
{
    n->next = *head;
    if (n->next)
        n->next->pprev = &n->next;
    *head = n;
    n->pprev = head;
}

static void list_unlink(struct stk_wheel_node *n)
{
    *n->pprev = n->next;
    if (n->next)
        n->next->pprev = n->pprev;
    n->next = NULL;
    n->pprev = NULL;
}

/* Moves a whole list to another head, fixing the first node's back pointer. */
static void list_move(struct stk_wheel_node **to, struct stk_wheel_node **from)
{
    *to = *from;
    *from = NULL;
    if (*to)
        (*to)->pprev = to;
}

void stk__wheel_init(struct stk_wheel *w, uint64_t now_tick)
{
    memset(w->slot, 0, sizeof(w->slot));
    w->now = now_tick;
    w->hint = UINT64_MAX;
    w->count = 0;
}

void stk__wheel_arm(struct stk_wheel *w, struct stk_wheel_node *n, uint64_t expire)
{
    if (n->pprev)
        list_unlink(n);
    else
        w->count++;
    if (expire <= w->now)
        expire = w->now + 1;
    n->expire = expire;
    if (expire < w->hint)
        w->hint = expire;
    list_insert(&w->slot[expire & SLOT_MASK], n);
}

void stk__wheel_disarm(struct stk_wheel *w, struct stk_wheel_node *n)
{
    if (!n->pprev)
        return;
    list_unlink(n);
    w->count--;
}

typedef void (*fire_fn)(void *ctx, struct stk_wheel_node *n);

/* Pops nodes off a detached list one at a time: fires the due ones and puts the others back
 * in their slot. Popping from the head (rather than holding a "next" pointer) is what makes
 * it safe for fire() to unlink or re-arm any other node on the list. */
static void drain(struct stk_wheel *w, struct stk_wheel_node **pending, uint64_t due, fire_fn fire,
                  void *ctx)
{
    while (*pending) {
        struct stk_wheel_node *n = *pending;
        list_unlink(n);
        if (n->expire <= due) {
            w->count--;
            fire(ctx, n);
        } else {
            list_insert(&w->slot[n->expire & SLOT_MASK], n);
        }
    }
}

/* Sorts a detached list by expire (stable merge sort on the next links), then rebuilds the
 * back pointers so the list is a valid home for the nodes while they are fired. */
static void sort_pending(struct stk_wheel_node **head)
{
    struct stk_wheel_node *list = *head;

    for (size_t width = 1;; width *= 2) {
        struct stk_wheel_node *out = NULL, **tail = &out, *p = list;
        size_t merges = 0;
        while (p) {
            struct stk_wheel_node *q = p;
            size_t psize = 0, qsize = width;
            merges++;
            while (psize < width && q) {
                psize++;
                q = q->next;
            }
            while (psize > 0 || (qsize > 0 && q)) {
                struct stk_wheel_node *e;
                if (psize == 0) {
                    e = q;
                    q = q->next;
                    qsize--;
                } else if (qsize == 0 || !q || p->expire <= q->expire) {
                    e = p;
                    p = p->next;
                    psize--;
                } else {
                    e = q;
                    q = q->next;
                    qsize--;
                }
                *tail = e;
                tail = &e->next;
            }
            p = q;
        }
        *tail = NULL;
        list = out;
        if (merges <= 1)
            break;
    }

    *head = list;
    struct stk_wheel_node **pp = head;
    for (struct stk_wheel_node *n = list; n; n = n->next) {
        n->pprev = pp;
        pp = &n->next;
    }
}

/* A jump of a whole revolution or more: visit every slot once, gather all due nodes, and fire
 * them in expire order. w->now moves to now_tick first, so anything fire() re-arms lands
 * after now_tick and cannot be fired again by this call. */
static void advance_far(struct stk_wheel *w, uint64_t now_tick, fire_fn fire, void *ctx)
{
    struct stk_wheel_node *pending = NULL;

    w->now = now_tick;
    for (unsigned s = 0; s < STK_WHEEL_SLOTS; s++) {
        struct stk_wheel_node *n = w->slot[s];
        while (n) {
            struct stk_wheel_node *next = n->next;
            if (n->expire <= now_tick) {
                list_unlink(n);
                list_insert(&pending, n);
            }
            n = next;
        }
    }
    sort_pending(&pending);
    drain(w, &pending, now_tick, fire, ctx);
}

static void advance_ticks(struct stk_wheel *w, uint64_t now_tick, fire_fn fire, void *ctx);

/* The exact earliest expiry. A node found at tick t's slot has expire >= t (invariant), so
 * once t reaches the best expire seen no later slot can beat it. Worst case (everything
 * more than a revolution away) this reads all STK_WHEEL_SLOTS heads plus every node; it
 * runs only when an advance passed the cached hint, not on every stk__wheel_next(). */
static uint64_t scan_next(const struct stk_wheel *w)
{
    uint64_t best = UINT64_MAX;
    for (uint64_t i = 1; i <= STK_WHEEL_SLOTS; i++) {
        uint64_t t = w->now + i;
        if (t >= best)
            break;
        for (const struct stk_wheel_node *n = w->slot[t & SLOT_MASK]; n; n = n->next)
            if (n->expire < best)
                best = n->expire;
    }
    return best;
}

void stk__wheel_advance(struct stk_wheel *w, uint64_t now_tick, fire_fn fire, void *ctx)
{
    if (now_tick <= w->now)
        return;
    if (now_tick - w->now >= STK_WHEEL_SLOTS)
        advance_far(w, now_tick, fire, ctx);
    else
        advance_ticks(w, now_tick, fire, ctx);
    if (w->count == 0)
        w->hint = UINT64_MAX;
    else if (w->hint <= w->now)
        w->hint = scan_next(w);
}

static void advance_ticks(struct stk_wheel *w, uint64_t now_tick, fire_fn fire, void *ctx)
{
    /* Within one revolution each tick maps to a distinct slot. By the invariant, a node in
     * tick t's slot with expire <= t has expire == t, so ticks in order give expire order.
     * w->now is t while tick t fires, so a node re-armed for "now + 1" fires at t + 1, still
     * inside this call when t + 1 <= now_tick. */
    while (w->now < now_tick) {
        if (w->count == 0) {
            w->now = now_tick;
            break;
        }
        uint64_t t = ++w->now;
        struct stk_wheel_node **slot = &w->slot[t & SLOT_MASK];
        if (!*slot)
            continue;
        struct stk_wheel_node *pending;
        list_move(&pending, slot);
        drain(w, &pending, t, fire, ctx);
    }
}

uint64_t stk__wheel_next(const struct stk_wheel *w)
{
    return w->count ? w->hint : UINT64_MAX;
}

/*
 * test_wheel.c - the timing wheel against a brute-force model: random arming, disarming and
 * re-arming (also from inside fire()), far-future timers and large jumps in time.
 */
#include <check.h>
#include <stdlib.h>

#include "stk_int.h"

/* Check records the location of every ck_assert with a write(), which dominates hot loops;
 * REQUIRE only calls into Check when the condition fails. */
#define REQUIRE(c)                                                                                 \
    do {                                                                                           \
        if (!(c))                                                                                  \
            ck_abort_msg("%s:%d: %s", __FILE__, __LINE__, #c);                                     \
    } while (0)

#define NODES 300

struct harness {
    struct stk_wheel w;
    struct stk_wheel_node node[NODES];
    bool armed[NODES]; /* the model */
    uint64_t expire[NODES];
    uint64_t now_tick;   /* target of the advance in progress */
    uint64_t last_fired; /* expire of the previous fire in this advance */
    unsigned fired;
    unsigned seed;
    bool chaos;      /* fire() re-arms and disarms other nodes */
    bool exact_next; /* no disarm or re-arm since the last advance: next must be exact */
};

static unsigned idx_of(struct harness *h, struct stk_wheel_node *n)
{
    return (unsigned)(n - h->node);
}

/* The model's view of arming: expire is clamped to the wheel's current tick + 1. */
static void model_arm(struct harness *h, unsigned i, uint64_t expire)
{
    /* The wheel gets the raw value; only the model applies the clamp. */
    stk__wheel_arm(&h->w, &h->node[i], expire);
    h->armed[i] = true;
    h->expire[i] = expire <= h->w.now ? h->w.now + 1 : expire;
    h->exact_next = false; /* moving a node later leaves the hint early */
}

static void model_disarm(struct harness *h, unsigned i)
{
    stk__wheel_disarm(&h->w, &h->node[i]);
    h->armed[i] = false;
    h->exact_next = false;
}

static uint64_t random_delay(unsigned *seed)
{
    switch (rand_r(seed) % 6) {
    case 0:
        return 0; /* in the past or now: clamped */
    case 1:
        return 1 + (uint64_t)rand_r(seed) % 3;
    case 2:
        return STK_WHEEL_SLOTS + (uint64_t)rand_r(seed) % (4 * STK_WHEEL_SLOTS); /* far */
    case 3:
        return STK_WHEEL_SLOTS * (1 + (uint64_t)(rand_r(seed) % 3)); /* same slot as now */
    default:
        return (uint64_t)rand_r(seed) % 200;
    }
}

static void on_fire(void *ctx, struct stk_wheel_node *n)
{
    struct harness *h = ctx;
    unsigned i = idx_of(h, n);

    REQUIRE(h->armed[i]);
    REQUIRE(!stk__wheel_armed(n));
    REQUIRE((n->expire) == (h->expire[i]));
    REQUIRE((n->expire) <= (h->now_tick));
    REQUIRE((n->expire) <= (h->w.now));
    REQUIRE((n->expire) >= (h->last_fired));
    h->last_fired = n->expire;
    h->armed[i] = false;
    h->fired++;

    if (!h->chaos)
        return;
    /* Disturb the wheel from inside the callback. */
    for (int k = rand_r(&h->seed) % 4; k > 0; k--) {
        unsigned j = (unsigned)rand_r(&h->seed) % NODES;
        switch (rand_r(&h->seed) % 4) {
        case 0:
            model_disarm(h, j);
            break;
        case 1:
            model_arm(h, j, h->w.now + random_delay(&h->seed));
            break;
        case 2:
            model_arm(h, i, h->w.now + 1 + (uint64_t)rand_r(&h->seed) % 5); /* periodic */
            break;
        default:
            model_arm(h, j, h->w.now); /* as soon as possible */
            break;
        }
    }
}

static void check_model(struct harness *h)
{
    uint32_t count = 0;
    uint64_t min = UINT64_MAX;
    for (unsigned i = 0; i < NODES; i++) {
        REQUIRE((stk__wheel_armed(&h->node[i])) == (h->armed[i]));
        if (!h->armed[i])
            continue;
        count++;
        REQUIRE((h->node[i].expire) == (h->expire[i]));
        /* Nothing overdue survives an advance. */
        REQUIRE((h->expire[i]) > (h->w.now));
        if (h->expire[i] < min)
            min = h->expire[i];
    }
    REQUIRE((h->w.count) == (count));
    uint64_t next = stk__wheel_next(&h->w);
    /* Never late, never in the past; after a disarm it may be early, but every advance makes
     * it exact again (checked there), so a caller polling at it always makes progress. */
    REQUIRE((next) <= (min));
    REQUIRE(min == UINT64_MAX ? next == UINT64_MAX : next > h->w.now);
    if (h->exact_next)
        REQUIRE((next) == (min));
}

static void advance(struct harness *h, uint64_t to)
{
    h->now_tick = to;
    h->last_fired = 0;
    uint64_t hint = stk__wheel_next(&h->w);
    stk__wheel_advance(&h->w, to, on_fire, h);
    REQUIRE((h->w.now) == (to));
    /* An advance that reached the hint makes it exact again (unless fire() re-armed other
     * nodes later, as chaos mode does, which may leave it early again). */
    if (hint <= to)
        h->exact_next = !h->chaos;
}

static void run_random(uint64_t start, bool chaos, unsigned seed)
{
    static struct harness h;
    memset(&h, 0, sizeof(h));
    h.seed = seed;
    h.chaos = chaos;
    stk__wheel_init(&h.w, start);
    uint64_t now = start;

    for (int iter = 0; iter < 20000; iter++) {
        int op = rand_r(&h.seed) % 10;
        unsigned i = (unsigned)rand_r(&h.seed) % NODES;
        if (op < 4) {
            model_arm(&h, i, now + random_delay(&h.seed));
        } else if (op < 5) {
            model_disarm(&h, i);
        } else if (op < 9) {
            now += (uint64_t)rand_r(&h.seed) % 40;
            advance(&h, now);
        } else {
            /* Large jumps: just under, exactly, and well over one revolution. */
            uint64_t jumps[] = {STK_WHEEL_SLOTS - 1, STK_WHEEL_SLOTS, STK_WHEEL_SLOTS + 1,
                                3 * STK_WHEEL_SLOTS + 17, 100000};
            now += jumps[rand_r(&h.seed) % 5];
            advance(&h, now);
        }
        check_model(&h);
    }
}

START_TEST(random_plain)
{
    run_random(1000, false, 1);
}
END_TEST

START_TEST(random_chaos)
{
    run_random(5, true, 2);
    run_random(0xfffffff0ull, true, 3); /* beyond 32-bit ticks */
}
END_TEST

START_TEST(far_future_and_exact_tick)
{
    static struct harness h;
    memset(&h, 0, sizeof(h));
    stk__wheel_init(&h.w, 100);
    uint64_t far = 100 + 3 * STK_WHEEL_SLOTS + 5;
    model_arm(&h, 0, far);
    model_arm(&h, 1, 105); /* shares a slot with far */
    ck_assert_uint_eq(stk__wheel_next(&h.w), 105);
    /* Step tick by tick through three revolutions: only node 1 fires early. */
    uint64_t t = 100;
    while (t < far - 1) {
        advance(&h, ++t);
        if (t == 105)
            REQUIRE((h.fired) == (1));
    }
    ck_assert_uint_eq(h.fired, 1);
    ck_assert(stk__wheel_armed(&h.node[0]));
    ck_assert_uint_eq(stk__wheel_next(&h.w), far);
    advance(&h, far);
    ck_assert_uint_eq(h.fired, 2);
    ck_assert_uint_eq(stk__wheel_next(&h.w), UINT64_MAX);
    check_model(&h);
}
END_TEST

START_TEST(huge_jump_orders_all)
{
    static struct harness h;
    memset(&h, 0, sizeof(h));
    h.seed = 9;
    stk__wheel_init(&h.w, 0);
    for (unsigned i = 0; i < NODES; i++)
        model_arm(&h, i, 1 + (uint64_t)rand_r(&h.seed) % (50 * STK_WHEEL_SLOTS));
    model_disarm(&h, 7);
    /* One call, a jump of 10^12 ticks: each due node fires once, in expire order (checked
     * in on_fire), with each slot visited once rather than 10^12 times. */
    advance(&h, 1000000000000ull);
    ck_assert_uint_eq(h.fired, NODES - 1);
    check_model(&h);
    /* Time going backwards is ignored. */
    model_arm(&h, 3, h.w.now + 10);
    advance(&h, h.w.now);
    stk__wheel_advance(&h.w, 5, on_fire, &h);
    ck_assert_uint_eq(h.w.now, 1000000000000ull);
    ck_assert_uint_eq(h.fired, NODES - 1);
}
END_TEST

START_TEST(rearm_inside_fire_fires_again)
{
    static struct harness h;
    memset(&h, 0, sizeof(h));
    stk__wheel_init(&h.w, 0);
    model_arm(&h, 0, 10);
    /* A periodic 1-tick timer re-armed from fire() fires every tick of the advance. */
    h.chaos = false;
    advance(&h, 10);
    ck_assert_uint_eq(h.fired, 1);
    model_arm(&h, 0, 0); /* clamped to now + 1 */
    ck_assert_uint_eq(h.node[0].expire, 11);
    model_disarm(&h, 0);
    model_disarm(&h, 0); /* disarming twice is harmless */
    ck_assert_uint_eq(h.w.count, 0);
    ck_assert_uint_eq(stk__wheel_next(&h.w), UINT64_MAX);
}
END_TEST

struct periodic {
    struct stk_wheel w;
    struct stk_wheel_node a, b;
    unsigned fires_a, fires_b;
};

static void periodic_fire(void *ctx, struct stk_wheel_node *n)
{
    struct periodic *p = ctx;
    if (n == &p->a) {
        p->fires_a++;
        stk__wheel_arm(&p->w, &p->a, p->w.now + 1);
        /* Kill b, which may still be waiting on the same detached list. */
        stk__wheel_disarm(&p->w, &p->b);
    } else {
        p->fires_b++;
    }
}

START_TEST(periodic_and_cross_disarm)
{
    static struct periodic p;
    memset(&p, 0, sizeof(p));
    stk__wheel_init(&p.w, 0);
    stk__wheel_arm(&p.w, &p.a, 1);
    stk__wheel_arm(&p.w, &p.b, 1); /* same slot, same tick */
    stk__wheel_advance(&p.w, 50, periodic_fire, &p);
    ck_assert_uint_eq(p.fires_a, 50);
    /* b fires only if it came off the list before a; either way exactly once or never. */
    ck_assert_uint_le(p.fires_b, 1);
    ck_assert(!stk__wheel_armed(&p.b));
    ck_assert_uint_eq(p.w.count, 1);
    ck_assert_uint_eq(stk__wheel_next(&p.w), 51);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("wheel");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, random_plain);
    tcase_add_test(tc, random_chaos);
    tcase_add_test(tc, far_future_and_exact_tick);
    tcase_add_test(tc, huge_jump_orders_all);
    tcase_add_test(tc, rearm_inside_fire_fires_again);
    tcase_add_test(tc, periodic_and_cross_disarm);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

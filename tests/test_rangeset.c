/*
 * test_rangeset.c - the range set against a bitmap model, with the window straddling 2^32.
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

#define WIN  512u
#define BASE 0xffffff00u /* the window [BASE, BASE + WIN) wraps past 2^32 */

struct model {
    bool bit[WIN];
};

static unsigned model_runs(const struct model *m)
{
    unsigned runs = 0;
    for (unsigned i = 0; i < WIN; i++)
        if (m->bit[i] && (i == 0 || !m->bit[i - 1]))
            runs++;
    return runs;
}

/* The set must equal the model exactly: sorted, disjoint, non-adjacent runs. */
static void check_equal(const struct stk_rangeset *rs, const struct model *m)
{
    unsigned k = 0;
    for (unsigned i = 0; i < WIN;) {
        if (!m->bit[i]) {
            i++;
            continue;
        }
        unsigned j = i;
        while (j < WIN && m->bit[j])
            j++;
        REQUIRE((k) < (rs->n));
        REQUIRE((rs->r[k].start) == (BASE + i));
        REQUIRE((rs->r[k].end) == (BASE + j));
        k++;
        i = j;
    }
    REQUIRE((k) == (rs->n));
}

START_TEST(basic_merge)
{
    struct stk_rangeset rs;
    stk__rs_clear(&rs);
    ck_assert_int_eq(stk__rs_add(&rs, 10, 20, STK_RS_MAX), 0);
    ck_assert_int_eq(stk__rs_add(&rs, 30, 40, STK_RS_MAX), 0);
    ck_assert_int_eq(stk__rs_add(&rs, 20, 30, STK_RS_MAX), 0); /* adjacent on both sides */
    ck_assert_uint_eq(rs.n, 1);
    ck_assert_uint_eq(rs.r[0].start, 10);
    ck_assert_uint_eq(rs.r[0].end, 40);
    ck_assert_int_eq(stk__rs_add(&rs, 5, 5, STK_RS_MAX), 0);   /* empty: ignored */
    ck_assert_int_eq(stk__rs_add(&rs, 50, 45, STK_RS_MAX), 0); /* reversed: ignored */
    ck_assert_uint_eq(rs.n, 1);
    ck_assert_int_eq(stk__rs_add(&rs, 0xfffffff0u, 4, STK_RS_MAX), 0); /* across 2^32 */
    ck_assert_uint_eq(rs.n, 2);
    ck_assert_uint_eq(rs.r[0].start, 0xfffffff0u);
    ck_assert(stk__rs_contains(&rs, 0xffffffffu));
    ck_assert(stk__rs_contains(&rs, 3));
    ck_assert(!stk__rs_contains(&rs, 4));
    ck_assert_uint_eq(stk__rs_bytes_above(&rs, 0), 4 + 30);
    ck_assert_uint_eq(stk__rs_find(&rs, 5), 1);
    ck_assert_uint_eq(stk__rs_find(&rs, 40), 2);
    ck_assert_uint_eq(stk__rs_pop_at(&rs, 11), 11); /* no range starts there */
    ck_assert_uint_eq(stk__rs_pop_at(&rs, 10), 40);
    ck_assert_uint_eq(rs.n, 1);
    stk__rs_trim_below(&rs, 0);
    ck_assert_uint_eq(rs.r[0].start, 0);
    ck_assert_uint_eq(rs.r[0].end, 4);
}
END_TEST

START_TEST(enospc_unchanged)
{
    struct stk_rangeset rs, copy;
    stk__rs_clear(&rs);
    for (uint32_t i = 0; i < 4; i++)
        ck_assert_int_eq(stk__rs_add(&rs, i * 10, i * 10 + 5, 4), 0);
    copy = rs;
    ck_assert_int_eq(stk__rs_add(&rs, 100, 105, 4), -ENOSPC);
    ck_assert_mem_eq(&rs, &copy, sizeof(rs));
    /* A merge needs no extra slot, so it still works at the limit. */
    ck_assert_int_eq(stk__rs_add(&rs, 5, 10, 4), 0);
    ck_assert_uint_eq(rs.n, 3);
    for (uint32_t i = 0; rs.n < STK_RS_MAX; i++)
        ck_assert_int_eq(stk__rs_add(&rs, 1000 + i * 10, 1005 + i * 10, STK_RS_MAX), 0);
    copy = rs;
    ck_assert_int_eq(stk__rs_add(&rs, 500, 501, STK_RS_MAX), -ENOSPC);
    ck_assert_mem_eq(&rs, &copy, sizeof(rs));
}
END_TEST

START_TEST(random_vs_bitmap)
{
    unsigned seed = 4242;
    for (int round = 0; round < 200; round++) {
        struct stk_rangeset rs;
        struct model m = {{0}};
        stk__rs_clear(&rs);
        for (int iter = 0; iter < 500; iter++) {
            int op = rand_r(&seed) % 10;
            uint32_t a = (uint32_t)rand_r(&seed) % WIN;
            if (op < 5) {
                uint32_t len = (uint32_t)rand_r(&seed) % 24;
                if (a + len > WIN)
                    len = WIN - a;
                unsigned max = 1 + (unsigned)rand_r(&seed) % STK_RS_MAX;
                struct model next = m;
                for (uint32_t i = a; i < a + len; i++)
                    next.bit[i] = true;
                struct stk_rangeset before = rs;
                int rc = stk__rs_add(&rs, BASE + a, BASE + a + len, max);
                if (len > 0 && model_runs(&next) > max) {
                    REQUIRE((rc) == (-ENOSPC));
                    REQUIRE(memcmp(&rs, &before, sizeof(rs)) == 0);
                } else {
                    REQUIRE((rc) == (0));
                    m = next;
                }
            } else if (op == 5) {
                if (rand_r(&seed) % 8)
                    continue; /* trims are rarer, or the set would stay near empty */
                stk__rs_trim_below(&rs, BASE + a);
                for (uint32_t i = 0; i < a; i++)
                    m.bit[i] = false;
            } else if (op == 6) {
                uint32_t end = stk__rs_pop_at(&rs, BASE + a);
                bool starts = m.bit[a] && (a == 0 || !m.bit[a - 1]);
                if (starts) {
                    uint32_t j = a;
                    while (j < WIN && m.bit[j])
                        m.bit[j++] = false;
                    REQUIRE((end) == (BASE + j));
                } else {
                    REQUIRE((end) == (BASE + a));
                }
            } else if (op == 7) {
                REQUIRE((stk__rs_contains(&rs, BASE + a)) == (m.bit[a]));
            } else if (op == 8) {
                uint32_t want = 0;
                for (uint32_t i = a; i < WIN; i++)
                    want += m.bit[i];
                REQUIRE((stk__rs_bytes_above(&rs, BASE + a)) == (want));
            } else {
                /* find: index of the run holding a, or of the first run above it. */
                unsigned idx = 0;
                for (uint32_t i = 0; i < WIN; i++) {
                    if (m.bit[i] && (i == 0 || !m.bit[i - 1])) {
                        uint32_t j = i;
                        while (j < WIN && m.bit[j])
                            j++;
                        if (j > a)
                            break;
                        idx++;
                    }
                }
                REQUIRE((stk__rs_find(&rs, BASE + a)) == (idx));
            }
            check_equal(&rs, &m);
        }
    }
}
END_TEST

int main(void)
{
    Suite *s = suite_create("rangeset");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, basic_merge);
    tcase_add_test(tc, enospc_unchanged);
    tcase_add_test(tc, random_vs_bitmap);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

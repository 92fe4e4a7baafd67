/*
 * test_ring.c - the byte ring against a flat model of the stream, across buffer and counter
 * wrap-around.
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

#define RSIZE 64u

START_TEST(write_read_wrap)
{
    uint8_t buf[RSIZE];
    struct stk_ring r = {.buf = buf, .size = RSIZE, .head = 60, .tail = 60};
    const uint8_t in[10] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9};
    uint8_t out[10];

    stk__ring_write_at(&r, 0, in, 10);
    /* Four bytes went to the end of the buffer, six to its start. */
    ck_assert_mem_eq(buf + 60, in, 4);
    ck_assert_mem_eq(buf, in + 4, 6);
    r.head += 10;
    ck_assert_uint_eq(stk__ring_used(&r), 10);
    stk__ring_read_at(&r, 0, out, 10);
    ck_assert_mem_eq(out, in, 10);
    stk__ring_read_at(&r, 3, out, 5);
    ck_assert_mem_eq(out, in + 3, 5);

    struct stk_iov iov[2];
    ck_assert_int_eq(stk__ring_iov(&r, 0, 10, iov), 2);
    ck_assert_ptr_eq(iov[0].base, buf + 60);
    ck_assert_uint_eq(iov[0].len, 4);
    ck_assert_ptr_eq(iov[1].base, buf);
    ck_assert_uint_eq(iov[1].len, 6);
    ck_assert_int_eq(stk__ring_iov(&r, 4, 6, iov), 1);
    ck_assert_ptr_eq(iov[0].base, buf);
    ck_assert_uint_eq(iov[0].len, 6);
    ck_assert_int_eq(stk__ring_iov(&r, 0, 0, iov), 0);
}
END_TEST

START_TEST(full_ring)
{
    uint8_t buf[RSIZE], in[RSIZE], out[RSIZE];
    struct stk_ring r = {.buf = buf, .size = RSIZE, .head = 17, .tail = 17};
    for (unsigned i = 0; i < RSIZE; i++)
        in[i] = (uint8_t)(i * 7 + 1);
    stk__ring_write_at(&r, 0, in, RSIZE);
    r.head += RSIZE;
    ck_assert_uint_eq(stk__ring_free(&r), 0);
    stk__ring_read_at(&r, 0, out, RSIZE);
    ck_assert_mem_eq(out, in, RSIZE);
    struct stk_iov iov[2];
    ck_assert_int_eq(stk__ring_iov(&r, 0, RSIZE, iov), 2);
    ck_assert_uint_eq(iov[0].len + iov[1].len, RSIZE);
}
END_TEST

/* Random writes at offsets past head (out of order, as reassembly does), commits, peeks and
 * reads, with the free-running counters starting just below 2^32. */
START_TEST(random_vs_model)
{
    uint8_t buf[RSIZE];
    uint8_t model[RSIZE]; /* model[i]: byte at stream position tail + i */
    struct stk_ring r = {.buf = buf, .size = RSIZE, .head = 0xffffffd0u, .tail = 0xffffffd0u};
    unsigned seed = 7;

    for (int iter = 0; iter < 200000; iter++) {
        int op = rand_r(&seed) % 4;
        uint32_t used = stk__ring_used(&r), space = stk__ring_free(&r);
        if (op == 0 && space > 0) {
            uint32_t off = (uint32_t)rand_r(&seed) % space;
            uint32_t len = (uint32_t)rand_r(&seed) % (space - off + 1);
            uint8_t src[RSIZE];
            for (uint32_t i = 0; i < len; i++)
                src[i] = (uint8_t)rand_r(&seed);
            stk__ring_write_at(&r, off, src, len);
            memcpy(model + used + off, src, len);
        } else if (op == 1 && space > 0) {
            uint32_t len = (uint32_t)rand_r(&seed) % (space + 1);
            uint8_t src[RSIZE];
            for (uint32_t i = 0; i < len; i++)
                src[i] = (uint8_t)rand_r(&seed);
            stk__ring_write_at(&r, 0, src, len);
            memcpy(model + used, src, len);
            r.head += len;
        } else if (op == 2 && used > 0) {
            uint32_t off = (uint32_t)rand_r(&seed) % used;
            uint32_t len = (uint32_t)rand_r(&seed) % (used - off + 1);
            uint8_t dst[RSIZE], flat[RSIZE];
            stk__ring_read_at(&r, off, dst, len);
            REQUIRE(memcmp(dst, model + off, len) == 0);
            struct stk_iov iov[2];
            int n = stk__ring_iov(&r, off, len, iov);
            size_t got = 0;
            for (int i = 0; i < n; i++) {
                const uint8_t *b = iov[i].base;
                REQUIRE(b >= buf && b + iov[i].len <= buf + RSIZE);
                memcpy(flat + got, iov[i].base, iov[i].len);
                got += iov[i].len;
            }
            REQUIRE((got) == (len));
            REQUIRE(memcmp(flat, model + off, len) == 0);
        } else if (op == 3 && used > 0) {
            uint32_t len = (uint32_t)rand_r(&seed) % (used + 1);
            r.tail += len;
            memmove(model, model + len, used - len);
        }
    }
    /* The counters wrapped past 2^32 along the way. */
    ck_assert_uint_lt(r.tail, 0xffffffd0u);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("ring");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, write_read_wrap);
    tcase_add_test(tc, full_ring);
    tcase_add_test(tc, random_vs_model);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

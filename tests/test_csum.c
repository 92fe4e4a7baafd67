/*
 * test_csum.c - the Internet checksum against known headers and a byte-wise reference.
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "stk_int.h"

/* Check records the location of every ck_assert with a write(), which dominates hot loops;
 * REQUIRE only calls into Check when the condition fails. */
#define REQUIRE(c)                                                                                 \
    do {                                                                                           \
        if (!(c))                                                                                  \
            ck_abort_msg("%s:%d: %s", __FILE__, __LINE__, #c);                                     \
    } while (0)

/* RFC 1071 written the slow, obvious way: big-endian 16-bit words, odd byte padded. */
static uint32_t ref_sum(uint32_t sum, const uint8_t *p, size_t len)
{
    uint64_t acc = sum;
    for (size_t i = 0; i + 1 < len; i += 2)
        acc += (uint32_t)(p[i] << 8 | p[i + 1]);
    if (len & 1)
        acc += (uint32_t)p[len - 1] << 8;
    while (acc >> 16)
        acc = (acc & 0xffff) + (acc >> 16);
    return (uint32_t)acc;
}

static uint16_t ref_csum(uint32_t sum, const uint8_t *p, size_t len)
{
    return (uint16_t)~ref_sum(sum, p, len);
}

START_TEST(ipv4_header_known)
{
    /* A commonly cited IPv4 header whose checksum is 0xb861. */
    uint8_t hdr[20] = {0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11,
                       0xb8, 0x61, 0xc0, 0xa8, 0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7};
    /* Verifying: the sum over a header including its checksum folds to zero. */
    ck_assert_uint_eq(stk__csum_fold(stk__csum_add(0, hdr, sizeof(hdr))), 0);
    hdr[10] = hdr[11] = 0;
    ck_assert_uint_eq(stk__csum_fold(stk__csum_add(0, hdr, sizeof(hdr))), 0xb861);
    /* And once more from an unaligned address. */
    uint8_t buf[21];
    memcpy(buf + 1, hdr, sizeof(hdr));
    ck_assert_uint_eq(stk__csum_fold(stk__csum_add(0, buf + 1, sizeof(hdr))), 0xb861);
}
END_TEST

START_TEST(tcp_pseudo_header)
{
    /* A TCP SYN from 10.0.0.1:1234 to 10.0.0.2:80; the checksum is checked against a
     * reference computed over an explicit pseudo-header. */
    uint8_t tcp[24] = {0x04, 0xd2, 0x00, 0x50, 0x12, 0x34, 0x56, 0x78, 0x00, 0x00, 0x00, 0x00,
                       0x60, 0x02, 0xfa, 0xf0, 0x00, 0x00, 0x00, 0x00, 0x02, 0x04, 0x05, 0xb4};
    uint32_t src = 0x0a000001, dst = 0x0a000002;
    uint8_t pseudo[12 + sizeof(tcp)];
    stk__put32(pseudo, src);
    stk__put32(pseudo + 4, dst);
    pseudo[8] = 0;
    pseudo[9] = STK_IP_PROTO_TCP;
    stk__put16(pseudo + 10, sizeof(tcp));
    memcpy(pseudo + 12, tcp, sizeof(tcp));
    uint16_t want = ref_csum(0, pseudo, sizeof(pseudo));

    uint32_t sum = stk__csum_pseudo(src, dst, STK_IP_PROTO_TCP, sizeof(tcp));
    uint16_t got = stk__csum_fold(stk__csum_add(sum, tcp, sizeof(tcp)));
    ck_assert_uint_eq(got, want);

    /* Storing it makes the whole segment verify to zero. */
    stk__put16(tcp + 16, got);
    ck_assert_uint_eq(stk__csum_fold(stk__csum_add(sum, tcp, sizeof(tcp))), 0);
    /* Pseudo-header alone, worst case for carries. */
    ck_assert_uint_eq(stk__csum_fold(stk__csum_pseudo(0xffffffff, 0xffffffff, 0xff, 0xffff)),
                      (uint16_t)~ref_sum(0,
                                         (const uint8_t[]){0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                                                           0xff, 0x00, 0xff, 0xff, 0xff},
                                         12));
}
END_TEST

START_TEST(fold_edges)
{
    ck_assert_uint_eq(stk__csum_fold(0), 0xffff);
    ck_assert_uint_eq(stk__csum_fold(0xffff), 0);
    ck_assert_uint_eq(stk__csum_fold(0x1fffe), 0);
    ck_assert_uint_eq(stk__csum_fold(0xffffffffu), (uint16_t)~ref_sum(0xffffffffu, NULL, 0));
    ck_assert_uint_eq(stk__csum_fold(0x12345678), (uint16_t) ~((0x1234 + 0x5678) & 0xffff));
    /* An accumulated sum near 2^32 must carry around, not overflow. */
    const uint8_t w[2] = {0x00, 0x20};
    ck_assert_uint_eq(stk__csum_fold(stk__csum_add(0xfffffff0u, w, 2)),
                      (uint16_t)~ref_sum(0xfffffff0u, w, 2));
    const uint8_t ff[4] = {0xff, 0xff, 0xff, 0xff};
    ck_assert_uint_eq(stk__csum_fold(stk__csum_add(0xffffffffu, ff, 4)),
                      (uint16_t)~ref_sum(0xffffffffu, ff, 4));
    /* Empty data leaves the sum's value unchanged. */
    ck_assert_uint_eq(stk__csum_fold(stk__csum_add(0x1234, "", 0)), (uint16_t)~0x1234);
}
END_TEST

START_TEST(random_vs_reference)
{
    static uint8_t buf[4096 + 16];
    unsigned seed = 12345;
    for (size_t i = 0; i < sizeof(buf); i++)
        buf[i] = (uint8_t)rand_r(&seed);
    /* Fill some runs with 0xff to stress carries. */
    memset(buf + 1000, 0xff, 600);
    for (int iter = 0; iter < 5000; iter++) {
        size_t off = (size_t)rand_r(&seed) % 16;
        size_t len = (size_t)rand_r(&seed) % 4097;
        uint32_t init = iter & 1 ? (uint32_t)rand_r(&seed) * 2654435761u : 0;
        uint16_t want = ref_csum(init, buf + off, len);
        uint16_t got = stk__csum_fold(stk__csum_add(init, buf + off, len));
        ck_assert_msg(got == want, "off %zu len %zu init %x: got %04x want %04x", off, len, init,
                      got, want);
    }
}
END_TEST

/* Data longer than one run of SIMD blocks (csum.c's CSUM_SSE_RUN of 32-byte blocks, 512 KiB),
 * all 0xff so every lane is as full as it gets, and random, at odd lengths and offsets. */
START_TEST(long_runs)
{
    size_t size = (3u << 20) + 64;
    uint8_t *buf = malloc(size);
    ck_assert_ptr_nonnull(buf);
    unsigned seed = 7;
    for (int fill = 0; fill < 2; fill++) {
        for (size_t i = 0; i < size; i++)
            buf[i] = fill == 0 ? 0xff : (uint8_t)rand_r(&seed);
        const size_t lens[] = {
            128, 129, 160, 1448, 65535, 512 * 1024, 512 * 1024 + 32, (1u << 20) + 7, 3u << 20};
        for (size_t k = 0; k < sizeof(lens) / sizeof(lens[0]); k++)
            for (size_t off = 0; off < 3; off++) {
                uint16_t want = ref_csum(0x1234, buf + off, lens[k]);
                uint16_t got = stk__csum_fold(stk__csum_add(0x1234, buf + off, lens[k]));
                ck_assert_msg(got == want, "fill %d off %zu len %zu: got %04x want %04x", fill, off,
                              lens[k], got, want);
            }
    }
    free(buf);
}
END_TEST

START_TEST(chained_pieces)
{
    uint8_t buf[1501];
    unsigned seed = 99;
    for (size_t i = 0; i < sizeof(buf); i++)
        buf[i] = (uint8_t)rand_r(&seed);
    for (int iter = 0; iter < 2000; iter++) {
        size_t len = 1 + (size_t)rand_r(&seed) % sizeof(buf);
        uint32_t sum = 0;
        size_t pos = 0;
        /* Even-length pieces except the last, as the module requires. */
        while (pos < len) {
            size_t piece = ((size_t)rand_r(&seed) % 200) & ~(size_t)1;
            if (piece == 0 || pos + piece > len)
                piece = len - pos;
            sum = stk__csum_add(sum, buf + pos, piece);
            pos += piece;
        }
        REQUIRE((stk__csum_fold(sum)) == (ref_csum(0, buf, len)));
    }
}
END_TEST

START_TEST(odd_length)
{
    const uint8_t one[1] = {0xab};
    ck_assert_uint_eq(stk__csum_fold(stk__csum_add(0, one, 1)), (uint16_t)~0xab00);
    const uint8_t three[3] = {0x01, 0x02, 0x03};
    ck_assert_uint_eq(stk__csum_fold(stk__csum_add(0, three, 3)), (uint16_t) ~(0x0102 + 0x0300));
}
END_TEST

/* stk_csum_copy: pieces of any length (odd ones included, so later pieces start at odd
 * offsets), at any alignment of source and destination, copy exactly and chain to the
 * reference sum of the whole; a run longer than one SIMD run (512 KiB) of 0xff too. */
START_TEST(copy_sum)
{
    size_t size = (1u << 20) + 64;
    uint8_t *src = malloc(size), *dst = malloc(size + 16);
    ck_assert_ptr_nonnull(src);
    ck_assert_ptr_nonnull(dst);
    unsigned seed = 5;
    for (size_t i = 0; i < size; i++)
        src[i] = (uint8_t)rand_r(&seed);
    for (int iter = 0; iter < 3000; iter++) {
        size_t len = (size_t)rand_r(&seed) % 4000;
        size_t so = (size_t)rand_r(&seed) % 16, dof = (size_t)rand_r(&seed) % 16;
        memset(dst, 0x5a, len + 32);
        uint32_t sum = 0x1234;
        size_t pos = 0;
        while (pos < len) {
            size_t piece = 1 + (size_t)rand_r(&seed) % 1500;
            if (pos + piece > len)
                piece = len - pos;
            sum = stk_csum_copy(sum, dst + dof + pos, src + so + pos, piece, pos & 1);
            pos += piece;
        }
        REQUIRE(stk_csum_finish(sum) == ref_csum(0x1234, src + so, len));
        REQUIRE(memcmp(dst + dof, src + so, len) == 0);
        REQUIRE(dst[dof + len] == 0x5a); /* nothing written past the end */
        REQUIRE(dof == 0 || dst[dof - 1] == 0x5a);
    }
    memset(src, 0xff, size);
    for (size_t off = 0; off < 2; off++) {
        size_t len = size - 64 + off;
        uint32_t sum = stk_csum_copy(0, dst, src + off, len, false);
        REQUIRE(stk_csum_finish(sum) == ref_csum(0, src + off, len));
        REQUIRE(memcmp(dst, src + off, len) == 0);
    }
    free(src);
    free(dst);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("csum");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, ipv4_header_known);
    tcase_add_test(tc, tcp_pseudo_header);
    tcase_add_test(tc, fold_edges);
    tcase_add_test(tc, random_vs_reference);
    tcase_add_test(tc, long_runs);
    tcase_add_test(tc, chained_pieces);
    tcase_add_test(tc, odd_length);
    tcase_add_test(tc, copy_sum);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

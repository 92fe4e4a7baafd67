/*
 * tn.h - one engine under test, driven frame by frame (test_net.c, test_ip6.c, test_tcp6.c,
 * test_ipfrag.c): frames go in through stk_input(), everything the engine transmits is kept
 * by a pkt_capture, and time is a plain number the test advances.
 *
 * Header only: it asserts with check, which the other users of tests/lib (bench, fuzz, soak)
 * do not link.
 */
#ifndef USTACK_TESTS_TN_H
#define USTACK_TESTS_TN_H

#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "pkt.h"
#include "stk.h"

#define TN_T0 (10 * STK_US_PER_S)

struct tn {
    struct pkt_capture cap;
    struct stk_engine *e;
    stk_time_t now;
};

/* Creates t's engine from c at TN_T0, transmitting into t->cap (sets c's io_ctx and tx). The
 * start-up announcement stays in the capture. */
static inline void tn_start(struct tn *t, struct stk_config *c)
{
    pkt_capture_init(&t->cap);
    c->io_ctx = &t->cap;
    c->tx = pkt_capture_tx;
    t->now = TN_T0;
    ck_assert_int_eq(stk_engine_create(c, t->now, &t->e), 0);
}

static inline void tn_stop(struct tn *t)
{
    stk_engine_destroy(t->e);
    pkt_capture_fini(&t->cap);
}

/* A new engine from c, as tn_start. */
static inline struct tn *tn_create(struct stk_config *c)
{
    struct tn *t = calloc(1, sizeof(*t));
    ck_assert_ptr_nonnull(t);
    tn_start(t, c);
    return t;
}

static inline void tn_free(struct tn *t)
{
    tn_stop(t);
    free(t);
}

static inline const struct stk_counters *ctr(const struct tn *t)
{
    return stk_counters(t->e);
}

static inline void inject(struct tn *t, const uint8_t *f, size_t len)
{
    stk_input(t->e, t->now, f, len, 0);
}

static inline void poll_at(struct tn *t, stk_time_t now)
{
    t->now = now;
    stk_poll(t->e, now);
}

static inline void expect_none(struct tn *t)
{
    ck_assert_uint_eq(pkt_capture_count(&t->cap), 0);
}

/* The sum of the IPv6 pseudo-header (RFC 8200 section 8.1), with the test library's
 * checksum code. */
static inline uint32_t pseudo6(const uint8_t src[16], const uint8_t dst[16], uint8_t nh,
                               uint32_t len)
{
    uint8_t tail[8] = {
        (uint8_t)(len >> 24), (uint8_t)(len >> 16), (uint8_t)(len >> 8), (uint8_t)len, 0, 0, 0, nh};
    uint32_t s = pkt_csum_add(0, src, 16);
    s = pkt_csum_add(s, dst, 16);
    return pkt_csum_add(s, tail, 8);
}

/* Pops the next frame into buf (room for cap bytes) and returns its length: IPv6 from smac
 * (any source when NULL) with Next Header nh, its payload length exact and its upper-layer
 * checksum right. */
static inline size_t tn_pop6(struct tn *t, const uint8_t *smac, uint8_t nh, uint8_t *buf,
                             size_t cap)
{
    const struct pkt_frame *fr = pkt_capture_pop(&t->cap);
    ck_assert_ptr_nonnull(fr);
    ck_assert_uint_le(fr->len, cap);
    memcpy(buf, fr->data, fr->len);
    size_t len = fr->len;
    ck_assert_uint_ge(len, 54);
    if (smac)
        ck_assert_mem_eq(buf + 6, smac, 6);
    ck_assert_uint_eq(buf[12] << 8 | buf[13], 0x86dd);
    const uint8_t *ip = buf + 14;
    ck_assert_uint_eq(ip[0] >> 4, 6);
    ck_assert_uint_eq(ip[6], nh);
    size_t plen = (size_t)(ip[4] << 8 | ip[5]);
    ck_assert_uint_eq(plen, len - 54);
    ck_assert_uint_eq(
        pkt_csum_fold(pkt_csum_add(pseudo6(ip + 8, ip + 24, nh, (uint32_t)plen), ip + 40, plen)),
        0);
    return len;
}

#endif

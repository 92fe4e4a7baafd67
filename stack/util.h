/*
 * util.h - small helpers shared by the engine: wrap-safe comparisons, byte order, min/max.
 */
#ifndef USTACK_UTIL_H
#define USTACK_UTIL_H

#include <stdint.h>
#include <string.h>

/* Sequence numbers live in a 2^32 circle; a < b when b is less than 2^31 ahead of a
 * (RFC 9293 section 3.4). */
static inline int stk__seq_lt(uint32_t a, uint32_t b)
{
    return (int32_t)(a - b) < 0;
}
static inline int stk__seq_le(uint32_t a, uint32_t b)
{
    return (int32_t)(a - b) <= 0;
}
static inline int stk__seq_gt(uint32_t a, uint32_t b)
{
    return (int32_t)(a - b) > 0;
}
static inline int stk__seq_ge(uint32_t a, uint32_t b)
{
    return (int32_t)(a - b) >= 0;
}
static inline uint32_t stk__seq_max(uint32_t a, uint32_t b)
{
    return stk__seq_gt(a, b) ? a : b;
}
static inline uint32_t stk__seq_min(uint32_t a, uint32_t b)
{
    return stk__seq_lt(a, b) ? a : b;
}
/* lo <= x < hi, wrap-safe. */
static inline int stk__seq_in(uint32_t x, uint32_t lo, uint32_t hi)
{
    return x - lo < hi - lo;
}

/* 32-bit timestamps (RFC 7323) compare the same way. */
#define stk__ts_lt stk__seq_lt

static inline uint32_t stk__min32(uint32_t a, uint32_t b)
{
    return a < b ? a : b;
}
static inline uint32_t stk__max32(uint32_t a, uint32_t b)
{
    return a > b ? a : b;
}
static inline uint64_t stk__min64(uint64_t a, uint64_t b)
{
    return a < b ? a : b;
}
static inline uint64_t stk__max64(uint64_t a, uint64_t b)
{
    return a > b ? a : b;
}

/* Unaligned big-endian loads and stores: packets are never assumed aligned. */
static inline uint16_t stk__get16(const void *p)
{
    const uint8_t *b = p;
    return (uint16_t)(b[0] << 8 | b[1]);
}
static inline uint32_t stk__get32(const void *p)
{
    const uint8_t *b = p;
    return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}
static inline void stk__put16(void *p, uint16_t v)
{
    uint8_t *b = p;
    b[0] = (uint8_t)(v >> 8);
    b[1] = (uint8_t)v;
}
static inline void stk__put32(void *p, uint32_t v)
{
    uint8_t *b = p;
    b[0] = (uint8_t)(v >> 24);
    b[1] = (uint8_t)(v >> 16);
    b[2] = (uint8_t)(v >> 8);
    b[3] = (uint8_t)v;
}

static inline uint32_t stk__roundup_pow2(uint32_t v)
{
    uint32_t p = 1;
    while (p < v && p < (1u << 30))
        p <<= 1;
    return p;
}

#endif

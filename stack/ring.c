/*
 * ring.c - copies into and out of a power-of-two byte ring.
 *
 * head and tail run free modulo 2^32 and are masked only to index the buffer, so used and free
 * space are plain subtractions and a full ring is distinguishable from an empty one.
 */
#include "stk_int.h"

void stk__ring_write_at(struct stk_ring *r, uint32_t off, const void *src, uint32_t len)
{
    if (len == 0)
        return; /* src may be NULL then (send of 0 bytes); memcpy must not see it */
    uint32_t pos = (r->head + off) & (r->size - 1);
    uint32_t first = stk__min32(len, r->size - pos);

    memcpy(r->buf + pos, src, first);
    if (len > first)
        memcpy(r->buf, (const uint8_t *)src + first, len - first);
}

void stk__ring_read_at(const struct stk_ring *r, uint32_t off, void *dst, uint32_t len)
{
    if (len == 0)
        return; /* likewise dst */
    uint32_t pos = (r->tail + off) & (r->size - 1);
    uint32_t first = stk__min32(len, r->size - pos);

    memcpy(dst, r->buf + pos, first);
    if (len > first)
        memcpy((uint8_t *)dst + first, r->buf, len - first);
}

int stk__ring_iov(const struct stk_ring *r, uint32_t off, uint32_t len, struct stk_iov iov[2])
{
    if (len == 0)
        return 0;
    uint32_t pos = (r->tail + off) & (r->size - 1);
    uint32_t first = stk__min32(len, r->size - pos);

    iov[0].base = r->buf + pos;
    iov[0].len = first;
    if (len == first)
        return 1;
    iov[1].base = r->buf;
    iov[1].len = len - first;
    return 2;
}

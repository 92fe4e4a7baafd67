/*
 * rangeset.c - a small sorted set of disjoint [start, end) sequence ranges.
 *
 * The set holds at most STK_RS_MAX ranges, so linear scans and memmove beat any tree. Ranges
 * are kept sorted, disjoint and non-adjacent; all comparisons are wrap-safe (util.h), which is
 * valid because every range lies within one window, less than 2^31 wide.
 */
#include "stk_int.h"

static void remove_ranges(struct stk_rangeset *rs, unsigned at, unsigned count)
{
    memmove(&rs->r[at], &rs->r[at + count], (rs->n - at - count) * sizeof(rs->r[0]));
    rs->n = (uint8_t)(rs->n - count);
}

unsigned stk__rs_find(const struct stk_rangeset *rs, uint32_t seq)
{
    unsigned i = 0;

    /* Ends are sorted too (the ranges are disjoint), so the first range ending above seq
     * either holds seq or lies entirely above it. */
    while (i < rs->n && stk__seq_le(rs->r[i].end, seq))
        i++;
    return i;
}

int stk__rs_add(struct stk_rangeset *rs, uint32_t start, uint32_t end, unsigned max)
{
    if (!stk__seq_lt(start, end))
        return 0;
    if (max > STK_RS_MAX)
        max = STK_RS_MAX;

    /* Ranges [i, j) touch or overlap the new one: each ends at or after start and begins at
     * or before end. */
    unsigned i = 0;
    while (i < rs->n && stk__seq_lt(rs->r[i].end, start))
        i++;
    unsigned j = i;
    while (j < rs->n && stk__seq_le(rs->r[j].start, end))
        j++;

    unsigned merged = j - i;
    if (rs->n - merged + 1u > max)
        return -ENOSPC;

    if (merged == 0) {
        memmove(&rs->r[i + 1], &rs->r[i], (rs->n - i) * sizeof(rs->r[0]));
        rs->r[i].start = start;
        rs->r[i].end = end;
        rs->n++;
        return 0;
    }
    rs->r[i].start = stk__seq_min(start, rs->r[i].start);
    rs->r[i].end = stk__seq_max(end, rs->r[j - 1].end);
    remove_ranges(rs, i + 1, merged - 1);
    return 0;
}

void stk__rs_trim_below(struct stk_rangeset *rs, uint32_t seq)
{
    unsigned i = stk__rs_find(rs, seq);

    remove_ranges(rs, 0, i);
    if (rs->n > 0 && stk__seq_lt(rs->r[0].start, seq))
        rs->r[0].start = seq;
}

uint32_t stk__rs_pop_at(struct stk_rangeset *rs, uint32_t seq)
{
    unsigned i = stk__rs_find(rs, seq);

    if (i == rs->n || rs->r[i].start != seq)
        return seq;
    uint32_t end = rs->r[i].end;
    remove_ranges(rs, i, 1);
    return end;
}

bool stk__rs_contains(const struct stk_rangeset *rs, uint32_t seq)
{
    unsigned i = stk__rs_find(rs, seq);

    return i < rs->n && stk__seq_ge(seq, rs->r[i].start);
}

uint32_t stk__rs_bytes_above(const struct stk_rangeset *rs, uint32_t seq)
{
    uint32_t total = 0;

    for (unsigned i = stk__rs_find(rs, seq); i < rs->n; i++)
        total += rs->r[i].end - stk__seq_max(rs->r[i].start, seq);
    return total;
}

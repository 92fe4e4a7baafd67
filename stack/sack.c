/*
 * sack.c - the sender's SACK scoreboard and the RFC 6675 loss-recovery queries.
 *
 * The scoreboard is a range set of SACKed octets above snd_una. RFC 6675 defines IsLost() and
 * SetPipe() per octet (section 4); both are answered here from the ranges, never per byte:
 * every octet of one hole (an unSACKed gap below a SACKed range) has exactly the same SACKed
 * octets above it, so IsLost() is constant across a hole and the holes are walked once.
 *
 * Caller protocol for HighRxt (sb->high_rxt, one past the highest retransmitted octet):
 *   - on entering loss recovery set high_rxt = snd_una (RFC 6675 section 5 step 4.1 sets
 *     HighRxt to HighACK) and recovery_point = snd_max;
 *   - after retransmitting [seq, seq + len) chosen by stk__sack_next_seg(), set
 *     high_rxt = seq + len (this module never writes it);
 *   - a high_rxt below snd_una is treated as snd_una, and above snd_max as snd_max.
 */
#include "stk_int.h"

#define DUP_THRESH 3u

/* Blocks come from the peer and may be hostile: only a non-empty block whose edges both lie
 * in (snd_una, snd_max] can describe data we sent and that is not yet cumulatively ACKed. */
static bool block_valid(const struct stk_rs_range *b, uint32_t snd_una, uint32_t snd_max)
{
    return stk__seq_lt(b->start, b->end) && stk__seq_gt(b->start, snd_una) &&
           stk__seq_le(b->end, snd_max);
}

uint32_t stk__sack_update(struct stk_sack_sb *sb, uint32_t snd_una, uint32_t snd_max,
                          const struct stk_rs_range *blocks, int nblocks, int *ignored)
{
    struct stk_rangeset *rs = &sb->sacked;
    uint32_t newly = 0;
    int bad = 0;

    stk__rs_trim_below(rs, snd_una);
    for (int i = 0; i < nblocks; i++) {
        const struct stk_rs_range *b = &blocks[i];
        if (!block_valid(b, snd_una, snd_max)) {
            bad++;
            continue;
        }
        uint32_t before = stk__rs_bytes_above(rs, snd_una);
        /* -ENOSPC means the block touches no existing range and the set is full. The lowest
         * ranges matter most (they bound the holes being repaired next), so the highest range
         * is forgotten to make room, unless the block itself would be the highest, in which
         * case the block is dropped. Forgetting SACK information is always safe: it only
         * makes the sender retransmit data the receiver already holds. Such drops are not
         * counted in *ignored because the block itself was well-formed. */
        while (stk__rs_add(rs, b->start, b->end, STK_RS_MAX) == -ENOSPC) {
            if (rs->n == 0 || stk__seq_ge(b->start, rs->r[rs->n - 1].end))
                break;
            rs->n--;
            before = stk__rs_bytes_above(rs, snd_una);
        }
        uint32_t after = stk__rs_bytes_above(rs, snd_una);
        if (after > before)
            newly += after - before;
    }
    if (ignored)
        *ignored = bad;
    return newly;
}

/* The RFC 6675 IsLost() test for an octet that has `ranges` discontiguous SACKed ranges and
 * `bytes` SACKed octets above it. */
static bool lost_test(unsigned ranges, uint32_t bytes, uint32_t mss)
{
    return ranges >= DUP_THRESH || (uint64_t)bytes > (uint64_t)(DUP_THRESH - 1) * mss;
}

bool stk__sack_is_lost(const struct stk_sack_sb *sb, uint32_t seq, uint32_t mss)
{
    /* "Above seq" means octets with sequence numbers greater than seq, hence seq + 1. */
    unsigned i = stk__rs_find(&sb->sacked, seq + 1);

    return lost_test(sb->sacked.n - i, stk__rs_bytes_above(&sb->sacked, seq + 1), mss);
}

/* Clamps x into [lo, hi] (wrap-safe). */
static uint32_t seq_clamp(uint32_t x, uint32_t lo, uint32_t hi)
{
    return stk__seq_lt(x, lo) ? lo : stk__seq_gt(x, hi) ? hi : x;
}

/* Octets of [a, b) below limit. */
static uint32_t len_below(uint32_t a, uint32_t b, uint32_t limit)
{
    uint32_t end = stk__seq_min(b, limit);
    return stk__seq_lt(a, end) ? end - a : 0;
}

uint32_t stk__sack_pipe(const struct stk_sack_sb *sb, uint32_t snd_una, uint32_t snd_max,
                        uint32_t mss)
{
    const struct stk_rangeset *rs = &sb->sacked;
    uint32_t high_rxt = seq_clamp(sb->high_rxt, snd_una, snd_max);
    uint32_t pipe = 0;
    uint32_t above = stk__rs_bytes_above(rs, snd_una);
    uint32_t hole = snd_una;

    /* SetPipe() walks every unSACKed octet in [HighACK, HighData): it counts 1 if the octet is
     * not lost and 1 more if it was retransmitted (S1 <= HighRxt, i.e. below our high_rxt).
     * Here each hole below SACKed range i is handled at once, since the ranges above it and
     * the SACKed bytes above it are the same for all its octets. */
    for (unsigned i = stk__rs_find(rs, snd_una); i <= rs->n; i++) {
        uint32_t hole_end = i < rs->n ? seq_clamp(rs->r[i].start, snd_una, snd_max) : snd_max;
        if (stk__seq_lt(hole, hole_end)) {
            uint32_t len = hole_end - hole;
            if (!lost_test(rs->n - i, above, mss))
                pipe += len;
            pipe += len_below(hole, hole_end, high_rxt);
        }
        if (i == rs->n)
            break;
        above -= rs->r[i].end - stk__seq_max(rs->r[i].start, snd_una);
        hole = seq_clamp(rs->r[i].end, snd_una, snd_max);
    }
    return pipe;
}

bool stk__sack_next_seg(const struct stk_sack_sb *sb, uint32_t snd_una, uint32_t snd_max,
                        uint32_t mss, uint32_t *seq, uint32_t *len)
{
    const struct stk_rangeset *rs = &sb->sacked;

    if (mss == 0)
        return false;
    /* Rules 1 and 3 both want the lowest unSACKed octet S at or above high_rxt ("greater than
     * HighRxt" in the RFC, whose HighRxt is inclusive) and below the highest SACKed octet.
     * Rule 1 additionally needs IsLost(S); IsLost is constant over a hole and can only turn
     * from true to false going up, so if S's hole is not lost no higher hole is either, and
     * S is also the rule 3 answer. The caller tells the two apart with stk__sack_is_lost(S)
     * and must prefer new data (rule 2) over a rule 3 answer. */
    uint32_t s = seq_clamp(sb->high_rxt, snd_una, snd_max);
    unsigned i = stk__rs_find(rs, s);
    if (i < rs->n && stk__seq_ge(s, rs->r[i].start)) {
        s = rs->r[i].end;
        i++;
    }
    if (i >= rs->n || !stk__seq_lt(s, snd_max))
        return false;
    uint32_t hole_end = stk__seq_min(rs->r[i].start, snd_max);
    if (!stk__seq_lt(s, hole_end))
        return false;
    *seq = s;
    *len = stk__min32(mss, hole_end - s);
    return true;
}

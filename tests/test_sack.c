/*
 * test_sack.c - the RFC 6675 scoreboard: hand-worked IsLost/SetPipe/NextSeg examples,
 * hostile SACK blocks, the range limit, and a per-octet brute-force model of the RFC text.
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

#define MSS 1000u
/* Ten segments S0..S9 of MSS bytes; the window straddles 2^32. */
#define UNA    0xfffff000u
#define SEG(k) (UNA + (uint32_t)(k)*MSS)
#define MAXS   SEG(10)

static void sack(struct stk_sack_sb *sb, uint32_t start, uint32_t end)
{
    struct stk_rs_range b = {start, end};
    int ignored = -1;
    stk__sack_update(sb, UNA, MAXS, &b, 1, &ignored);
    ck_assert_int_eq(ignored, 0);
}

static void init_sb(struct stk_sack_sb *sb)
{
    memset(sb, 0, sizeof(*sb));
    sb->high_rxt = UNA; /* RFC 6675 section 5 step (4.1): HighRxt = HighACK */
    sb->recovery_point = MAXS;
}

static void expect_next(const struct stk_sack_sb *sb, uint32_t seq, uint32_t len, bool lost)
{
    uint32_t s = 0, l = 0;
    ck_assert(stk__sack_next_seg(sb, UNA, MAXS, MSS, &s, &l));
    ck_assert_uint_eq(s, seq);
    ck_assert_uint_eq(l, len);
    ck_assert_int_eq(stk__sack_is_lost(sb, s, MSS), lost);
}

/* S2, S4 and S6 SACKed: S0 and S1 have three discontiguous SACKed ranges above them (lost);
 * S3 has two ranges and 2000 bytes above (not lost: "more than" 2 * MSS is needed). */
START_TEST(three_ranges_walkthrough)
{
    struct stk_sack_sb sb;
    init_sb(&sb);
    sack(&sb, SEG(2), SEG(3));
    sack(&sb, SEG(4), SEG(5));
    sack(&sb, SEG(6), SEG(7));

    ck_assert(stk__sack_is_lost(&sb, SEG(0), MSS));
    ck_assert(stk__sack_is_lost(&sb, SEG(1) + 999, MSS));
    ck_assert(!stk__sack_is_lost(&sb, SEG(3), MSS));
    ck_assert(!stk__sack_is_lost(&sb, SEG(5), MSS));
    ck_assert(!stk__sack_is_lost(&sb, SEG(8), MSS));

    /* pipe: S0, S1 lost and not retransmitted count 0; S3, S5, S7, S8, S9 count 1 each. */
    ck_assert_uint_eq(stk__sack_pipe(&sb, UNA, MAXS, MSS), 5 * MSS);

    /* NextSeg rule 1 picks S0, then S1; each retransmission raises pipe by one segment. */
    expect_next(&sb, SEG(0), MSS, true);
    sb.high_rxt = SEG(1);
    ck_assert_uint_eq(stk__sack_pipe(&sb, UNA, MAXS, MSS), 6 * MSS);
    expect_next(&sb, SEG(1), MSS, true);
    sb.high_rxt = SEG(2);
    ck_assert_uint_eq(stk__sack_pipe(&sb, UNA, MAXS, MSS), 7 * MSS);

    /* Nothing left that IsLost: rule 3 offers S3 (not lost, so the caller sends new data
     * first if it has any); retransmitting it counts it twice in pipe. */
    expect_next(&sb, SEG(3), MSS, false);
    sb.high_rxt = SEG(4);
    ck_assert_uint_eq(stk__sack_pipe(&sb, UNA, MAXS, MSS), 8 * MSS);
    expect_next(&sb, SEG(5), MSS, false);
    sb.high_rxt = SEG(6);
    ck_assert_uint_eq(stk__sack_pipe(&sb, UNA, MAXS, MSS), 9 * MSS);

    /* Above the highest SACKed octet neither rule applies. */
    uint32_t s, l;
    ck_assert(!stk__sack_next_seg(&sb, UNA, MAXS, MSS, &s, &l));

    /* A cumulative ACK to S3 trims the scoreboard; high_rxt stays meaningful. */
    struct stk_rs_range none = {0, 0};
    int ignored;
    ck_assert_uint_eq(stk__sack_update(&sb, SEG(3), MAXS, &none, 0, &ignored), 0);
    ck_assert_uint_eq(sb.sacked.n, 2);
    ck_assert_uint_eq(sb.sacked.r[0].start, SEG(4));
}
END_TEST

/* One SACKed range: the byte rule decides. 3000 bytes above is "more than 2 * MSS". */
START_TEST(byte_rule_boundary)
{
    struct stk_sack_sb sb;
    init_sb(&sb);
    sack(&sb, SEG(3), SEG(6));
    ck_assert(stk__sack_is_lost(&sb, SEG(0), MSS));
    ck_assert(stk__sack_is_lost(&sb, SEG(2) + 999, MSS));
    /* S0-S2 lost, S6-S9 in flight. */
    ck_assert_uint_eq(stk__sack_pipe(&sb, UNA, MAXS, MSS), 4 * MSS);
    expect_next(&sb, SEG(0), MSS, true);

    init_sb(&sb);
    sack(&sb, SEG(3), SEG(5));
    ck_assert(!stk__sack_is_lost(&sb, SEG(0), MSS));
    ck_assert_uint_eq(stk__sack_pipe(&sb, UNA, MAXS, MSS), 8 * MSS);
    expect_next(&sb, SEG(0), MSS, false);
    /* One more byte SACKed tips it. */
    sack(&sb, SEG(5), SEG(5) + 1);
    ck_assert(stk__sack_is_lost(&sb, SEG(0), MSS));
    ck_assert_uint_eq(stk__sack_pipe(&sb, UNA, MAXS, MSS), 5 * MSS - 1);
}
END_TEST

/* NextSeg never runs into a SACKed range and starts above a high_rxt inside a hole. */
START_TEST(next_seg_partial)
{
    struct stk_sack_sb sb;
    init_sb(&sb);
    sack(&sb, SEG(0) + 400, SEG(1));
    sack(&sb, SEG(2), SEG(3));
    sack(&sb, SEG(4), SEG(5));
    expect_next(&sb, SEG(0), 400, true);
    sb.high_rxt = SEG(0) + 100; /* part of the first hole was retransmitted */
    expect_next(&sb, SEG(0) + 100, 300, true);
    /* Inside a SACKed range: skip to its end. S1 has two ranges and 2000 bytes above it, so
     * it is not lost and this is a rule 3 answer. */
    sb.high_rxt = SEG(0) + 400;
    expect_next(&sb, SEG(1), MSS, false);
    sb.high_rxt = UNA - 5000; /* stale, below snd_una: treated as snd_una */
    expect_next(&sb, SEG(0), 400, true);
}
END_TEST

START_TEST(hostile_blocks)
{
    struct stk_sack_sb sb;
    init_sb(&sb);
    struct stk_rs_range bad[] = {
        {SEG(3), SEG(3)},               /* empty */
        {SEG(4), SEG(3)},               /* reversed */
        {UNA - 100, SEG(1)},            /* starts below snd_una (D-SACK-like) */
        {UNA, SEG(1)},                  /* starts at snd_una */
        {SEG(9), MAXS + 1},             /* beyond snd_max */
        {MAXS + 10, MAXS + 20},         /* entirely beyond */
        {SEG(5), SEG(5) + 0x80000000u}, /* absurdly long */
    };
    int ignored = 0;
    uint32_t newly = stk__sack_update(&sb, UNA, MAXS, bad, 7, &ignored);
    ck_assert_int_eq(ignored, 7);
    ck_assert_uint_eq(newly, 0);
    ck_assert_uint_eq(sb.sacked.n, 0);

    struct stk_rs_range good[] = {{SEG(2), SEG(3)}, {SEG(2), SEG(3)}, {SEG(9), MAXS}};
    ck_assert_uint_eq(stk__sack_update(&sb, UNA, MAXS, good, 3, NULL), 2 * MSS);
    /* Repeating known blocks reports nothing new; an overlapping one only its new part. */
    ck_assert_uint_eq(stk__sack_update(&sb, UNA, MAXS, good, 3, &ignored), 0);
    struct stk_rs_range more = {SEG(2) + 500, SEG(4)};
    ck_assert_uint_eq(stk__sack_update(&sb, UNA, MAXS, &more, 1, &ignored), MSS);
    ck_assert_int_eq(ignored, 0);
}
END_TEST

/* Never more than STK_RS_MAX ranges: a new block above all ranges is dropped, a lower one
 * replaces the highest range. */
START_TEST(range_limit)
{
    struct stk_sack_sb sb;
    init_sb(&sb);
    uint32_t una = UNA, smax = UNA + 100000;
    for (uint32_t k = 0; k < STK_RS_MAX; k++) {
        struct stk_rs_range b = {una + 1000 + k * 100, una + 1010 + k * 100};
        ck_assert_uint_eq(stk__sack_update(&sb, una, smax, &b, 1, NULL), 10);
    }
    ck_assert_uint_eq(sb.sacked.n, STK_RS_MAX);
    struct stk_rs_range high = {una + 50000, una + 50010};
    ck_assert_uint_eq(stk__sack_update(&sb, una, smax, &high, 1, NULL), 0);
    ck_assert(!stk__rs_contains(&sb.sacked, una + 50000));
    uint32_t old_top = sb.sacked.r[STK_RS_MAX - 1].start;
    struct stk_rs_range low = {una + 500, una + 510};
    ck_assert_uint_eq(stk__sack_update(&sb, una, smax, &low, 1, NULL), 10);
    ck_assert_uint_eq(sb.sacked.n, STK_RS_MAX);
    ck_assert(stk__rs_contains(&sb.sacked, una + 500));
    ck_assert(!stk__rs_contains(&sb.sacked, old_top));
    /* A flood of disjoint blocks never breaks the bound. */
    for (uint32_t k = 0; k < 1000; k++) {
        struct stk_rs_range b = {una + 1 + k * 37 % 90000, una + 3 + k * 37 % 90000};
        stk__sack_update(&sb, una, smax, &b, 1, NULL);
        ck_assert_uint_le(sb.sacked.n, STK_RS_MAX);
    }
}
END_TEST

/* ---- Brute force: RFC 6675 section 4 read literally, one octet at a time. ---------------- */

#define BW   600u
#define BMSS 50u

struct brute {
    bool sacked[BW];
};

static bool brute_is_lost(const struct brute *b, uint32_t x)
{
    unsigned ranges = 0, bytes = 0;
    for (uint32_t y = x + 1; y < BW; y++) {
        if (!b->sacked[y])
            continue;
        bytes++;
        if (y == x + 1 || !b->sacked[y - 1])
            ranges++;
    }
    return ranges >= 3 || bytes > 2 * BMSS;
}

START_TEST(random_vs_brute_force)
{
    unsigned seed = 77;
    for (int round = 0; round < 3000; round++) {
        uint32_t base = (uint32_t)rand_r(&seed) * 2654435761u; /* anywhere, wraps too */
        struct brute b = {{0}};
        struct stk_sack_sb sb;
        memset(&sb, 0, sizeof(sb));
        for (int k = rand_r(&seed) % 8; k > 0; k--) {
            uint32_t s = 1 + (uint32_t)rand_r(&seed) % (BW - 1);
            uint32_t l = 1 + (uint32_t)rand_r(&seed) % 80;
            if (s + l > BW)
                l = BW - s;
            struct stk_rs_range blk = {base + s, base + s + l};
            stk__sack_update(&sb, base, base + BW, &blk, 1, NULL);
            if (sb.sacked.n < STK_RS_MAX)
                for (uint32_t i = s; i < s + l; i++)
                    b.sacked[i] = true;
        }
        uint32_t hr = (uint32_t)rand_r(&seed) % (BW + 1);
        sb.high_rxt = base + hr;

        for (uint32_t x = 0; x < BW; x += 7)
            if (!b.sacked[x])
                REQUIRE(stk__sack_is_lost(&sb, base + x, BMSS) == brute_is_lost(&b, x));

        uint32_t pipe = 0, highest = 0;
        for (uint32_t x = 0; x < BW; x++) {
            if (b.sacked[x]) {
                highest = x + 1;
                continue;
            }
            pipe += !brute_is_lost(&b, x);
            pipe += x < hr;
        }
        REQUIRE(stk__sack_pipe(&sb, base, base + BW, BMSS) == pipe);

        /* NextSeg rules 1 and 3: the lowest unSACKed octet >= high_rxt below the highest
         * SACKed octet; rule 1 when it is lost. */
        bool want = false;
        uint32_t ws = 0, wl = 0;
        for (uint32_t x = hr; x < highest; x++) {
            if (b.sacked[x])
                continue;
            want = true;
            ws = x;
            while (x < highest && !b.sacked[x] && wl < BMSS) {
                wl++;
                x++;
            }
            break;
        }
        uint32_t s = 0, l = 0;
        bool got = stk__sack_next_seg(&sb, base, base + BW, BMSS, &s, &l);
        REQUIRE(got == want);
        if (want) {
            REQUIRE(s == base + ws);
            REQUIRE(l == wl);
        }
    }
}
END_TEST

int main(void)
{
    Suite *s = suite_create("sack");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, three_ranges_walkthrough);
    tcase_add_test(tc, byte_rule_boundary);
    tcase_add_test(tc, next_seg_partial);
    tcase_add_test(tc, hostile_blocks);
    tcase_add_test(tc, range_limit);
    tcase_add_test(tc, random_vs_brute_force);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

/*
 * test_cc.c - NewReno and CUBIC window trajectories driven by a simulated ACK clock.
 */
#include <check.h>
#include <math.h>
#include <stdlib.h>

#include "stk_int.h"

#define MSS 1000u
#define T0  (5 * STK_US_PER_S)

/* One round trip: the whole window (as it was at the start of the round) is ACKed,
 * `per_ack` segments per ACK, spread evenly over the RTT. Returns the time at the end. */
static stk_time_t round_trip(struct stk_cc *cc, stk_time_t now, uint32_t rtt_us, uint32_t per_ack)
{
    uint32_t left = cc->cwnd, chunk = per_ack * cc->mss;
    uint32_t acks = (left + chunk - 1) / chunk;
    for (uint32_t i = 0; left > 0; i++) {
        uint32_t n = stk__min32(left, chunk);
        stk__cc_on_ack(cc, n, true, rtt_us, now + (uint64_t)rtt_us * i / acks);
        left -= n;
    }
    return now + rtt_us;
}

START_TEST(initial_window)
{
    struct stk_cc cc;
    stk__cc_init(&cc, STK_CC_NEWRENO, 1460, T0);
    ck_assert_uint_eq(cc.cwnd, 14600);
    stk__cc_init(&cc, STK_CC_NEWRENO, 536, T0);
    ck_assert_uint_eq(cc.cwnd, 5360);
    stk__cc_init(&cc, STK_CC_CUBIC, 9000, T0);
    ck_assert_uint_eq(cc.cwnd, 18000); /* two segments */
    ck_assert_uint_ge(cc.ssthresh, 1u << 30);
}
END_TEST

START_TEST(newreno_slow_start_doubles)
{
    struct stk_cc cc;
    stk__cc_init(&cc, STK_CC_NEWRENO, MSS, T0);
    stk_time_t now = T0;
    for (int r = 0; r < 8; r++) {
        uint32_t before = cc.cwnd;
        now = round_trip(&cc, now, 100000, 1);
        ck_assert_uint_eq(cc.cwnd, 2 * before);
    }
    /* Delayed ACKs (2 segments each) still double per RTT (RFC 3465 byte counting). */
    stk__cc_init(&cc, STK_CC_NEWRENO, MSS, T0);
    for (int r = 0; r < 6; r++) {
        uint32_t before = cc.cwnd;
        now = round_trip(&cc, now, 100000, 2);
        ck_assert_uint_eq(cc.cwnd, 2 * before);
    }
    /* A stretch ACK (a receive burst acknowledged at once) counts every byte, as in Linux,
     * up to STK_ACK_STRETCH per ACK. */
    uint32_t before = cc.cwnd;
    stk__cc_on_ack(&cc, 8 * MSS, true, 100000, now);
    ck_assert_uint_eq(cc.cwnd, before + 8 * MSS);
    before = cc.cwnd;
    stk__cc_on_ack(&cc, 100 * MSS, true, 100000, now);
    ck_assert_uint_eq(cc.cwnd, before + STK_ACK_STRETCH);
}
END_TEST

START_TEST(newreno_ca_one_mss_per_rtt)
{
    struct stk_cc cc;
    stk__cc_init(&cc, STK_CC_NEWRENO, MSS, T0);
    cc.cwnd = 40 * MSS;
    stk__cc_on_loss(&cc, 40 * MSS, T0);
    ck_assert_uint_eq(cc.ssthresh, 20 * MSS);
    ck_assert_uint_eq(cc.cwnd, 20 * MSS);
    stk_time_t now = T0;
    for (int r = 0; r < 30; r++) {
        uint32_t before = cc.cwnd;
        now = round_trip(&cc, now, 50000, 1);
        ck_assert_uint_eq(cc.cwnd, before + MSS);
    }
    for (int r = 0; r < 10; r++) {
        uint32_t before = cc.cwnd;
        now = round_trip(&cc, now, 50000, 2);
        ck_assert_uint_eq(cc.cwnd, before + MSS);
    }
}
END_TEST

START_TEST(slow_start_stops_at_ssthresh)
{
    struct stk_cc cc;
    stk__cc_init(&cc, STK_CC_NEWRENO, MSS, T0);
    cc.ssthresh = 11 * MSS + 500;
    stk__cc_on_ack(&cc, 2 * MSS, true, 100000, T0);
    /* 1500 bytes of this ACK were slow start; the other 500 are CA credit. */
    ck_assert_uint_eq(cc.cwnd, 11 * MSS + 500);
    ck_assert_uint_eq(cc.ca_acked, 500);
}
END_TEST

START_TEST(no_growth_when_app_limited)
{
    for (int algo = STK_CC_NEWRENO; algo <= STK_CC_CUBIC; algo++) {
        struct stk_cc cc;
        stk__cc_init(&cc, (enum stk_cc_algo)algo, MSS, T0);
        uint32_t before = cc.cwnd;
        for (int i = 0; i < 100; i++)
            stk__cc_on_ack(&cc, MSS, false, 100000, T0 + (stk_time_t)i * 1000);
        ck_assert_uint_eq(cc.cwnd, before);
        cc.ssthresh = cc.cwnd; /* congestion avoidance */
        for (int i = 0; i < 100; i++)
            stk__cc_on_ack(&cc, MSS, false, 100000, T0 + (stk_time_t)i * 100000);
        ck_assert_uint_eq(cc.cwnd, before);
    }
}
END_TEST

START_TEST(loss_rto_idle)
{
    struct stk_cc cc;
    stk__cc_init(&cc, STK_CC_NEWRENO, MSS, T0);
    stk__cc_on_loss(&cc, 3 * MSS, T0);
    ck_assert_uint_eq(cc.ssthresh, 2 * MSS); /* max(flight / 2, 2 * MSS) */
    ck_assert_uint_eq(cc.cwnd, 2 * MSS);
    cc.cwnd = 50 * MSS;
    stk__cc_on_rto(&cc, 30 * MSS, T0);
    ck_assert_uint_eq(cc.ssthresh, 15 * MSS);
    ck_assert_uint_eq(cc.cwnd, MSS);
    cc.cwnd = 50 * MSS;
    stk__cc_on_idle(&cc, T0);
    ck_assert_uint_eq(cc.cwnd, 10 * MSS);
    cc.cwnd = 3 * MSS;
    stk__cc_on_idle(&cc, T0);
    ck_assert_uint_eq(cc.cwnd, 3 * MSS);

    stk__cc_init(&cc, STK_CC_CUBIC, MSS, T0);
    cc.cwnd = 100 * MSS;
    stk__cc_on_loss(&cc, 10 * MSS, T0); /* CUBIC uses cwnd, not flight */
    ck_assert_uint_eq(cc.ssthresh, 70 * MSS);
    ck_assert_uint_eq(cc.cwnd, 70 * MSS);
    stk__cc_on_rto(&cc, 70 * MSS, T0);
    ck_assert_uint_eq(cc.ssthresh, 49 * MSS);
    ck_assert_uint_eq(cc.cwnd, MSS);
    cc.cwnd = 2 * MSS;
    stk__cc_on_loss(&cc, 2 * MSS, T0);
    ck_assert_uint_eq(cc.cwnd, 2 * MSS); /* floor of 2 * MSS */
}
END_TEST

START_TEST(bounds)
{
    for (int algo = STK_CC_NEWRENO; algo <= STK_CC_CUBIC; algo++) {
        struct stk_cc cc;
        stk__cc_init(&cc, (enum stk_cc_algo)algo, MSS, T0);
        stk_time_t now = T0;
        for (int i = 0; i < 600000; i++) {
            stk__cc_on_ack(&cc, 0x7fffffffu, true, 1000, now);
            now += 100000;
        }
        ck_assert_uint_le(cc.cwnd, 1u << 30);
        ck_assert_uint_ge(cc.cwnd, 1u << 29);
        for (int i = 0; i < 100; i++)
            stk__cc_on_loss(&cc, 0, now);
        ck_assert_uint_ge(cc.cwnd, 2 * MSS);
        stk__cc_on_rto(&cc, 0, now);
        ck_assert_uint_eq(cc.cwnd, MSS);
        stk__cc_set_mss(&cc, 4 * MSS);
        ck_assert_uint_ge(cc.cwnd, 4 * MSS);
    }
}
END_TEST

/* After a loss at W_max = 100 segments: K = cbrt(W_max (1 - beta) / C), the window rises
 * concavely to W_max by about t = K, then convexly beyond it (RFC 9438 section 4.2). */
START_TEST(cubic_k_and_trajectory)
{
    const uint32_t rtt = 100000; /* 100 ms: the cubic region dominates the Reno estimate */
    struct stk_cc cc;
    stk__cc_init(&cc, STK_CC_CUBIC, MSS, T0);
    cc.cwnd = 100 * MSS;
    stk__cc_on_loss(&cc, 100 * MSS, T0);
    ck_assert_uint_eq(cc.cwnd, 70 * MSS);
    ck_assert(fabs(cc.w_max - 100.0) < 1e-9);

    stk_time_t now = T0 + 1000;
    stk__cc_on_ack(&cc, MSS, true, rtt, now);
    double k = cbrt(100.0 * (1 - 0.7) / 0.4);
    ck_assert(fabs(cc.k - k) < 1e-9);
    ck_assert_uint_eq(cc.epoch_start, now);

    double w[120];
    for (int r = 0; r < 120; r++) {
        now = round_trip(&cc, now, rtt, 1);
        w[r] = (double)cc.cwnd / MSS;
        /* The window follows the cubic curve, aimed one RTT ahead, or the Reno-friendly
         * estimate where that is larger (after W_est passes cwnd_prior, alpha is 1). */
        double t = (double)(now - cc.epoch_start) / 1e6;
        double lo = 0.4 * pow(t - 0.1 - k, 3) + 100.0;
        double hi = fmax(0.4 * pow(t + 0.1 - k, 3) + 100.0, cc.w_est);
        ck_assert_msg(w[r] > lo - 2.0 && w[r] < hi + 2.0, "round %d: %f not in [%f, %f]", r, w[r],
                      lo, hi);
    }
    int kr = (int)(k * 10); /* rounds are 100 ms: round index of t = K */
    /* Concave: growth per RTT shrinks on the way up to W_max. */
    double early = w[5] - w[0], late = w[kr - 5] - w[kr - 10];
    ck_assert_msg(early > late, "concave: %f vs %f", early, late);
    /* The plateau: close to W_max around t = K. */
    ck_assert_msg(fabs(w[kr] - 100.0) < 3.0, "at K: %f", w[kr]);
    ck_assert(w[kr - 20] < 99.0);
    /* Convex: growth per RTT increases beyond W_max. */
    double after1 = w[kr + 10] - w[kr + 5], after2 = w[kr + 30] - w[kr + 25];
    ck_assert_msg(after2 > after1, "convex: %f vs %f", after1, after2);
    ck_assert(w[119] > 130.0);
    /* Never more than 1.5x per RTT. */
    for (int r = 1; r < 120; r++)
        ck_assert(w[r] <= 1.5 * w[r - 1] + 1);
}
END_TEST

START_TEST(cubic_fast_convergence)
{
    struct stk_cc cc;
    stk__cc_init(&cc, STK_CC_CUBIC, MSS, T0);
    cc.cwnd = 100 * MSS;
    stk__cc_on_loss(&cc, 100 * MSS, T0);
    /* A second loss below the previous plateau releases bandwidth: W_max = cwnd (1+b)/2. */
    cc.cwnd = 80 * MSS;
    stk__cc_on_loss(&cc, 80 * MSS, T0 + 1000000);
    ck_assert(fabs(cc.w_max - 80.0 * 1.7 / 2) < 1e-9);
    ck_assert_uint_eq(cc.cwnd, 56 * MSS);
    /* A loss above the plateau sets W_max to the window itself. */
    cc.cwnd = 90 * MSS;
    stk__cc_on_loss(&cc, 90 * MSS, T0 + 2000000);
    ck_assert(fabs(cc.w_max - 90.0) < 1e-9);
}
END_TEST

/* With a short RTT, Reno's linear growth beats the cubic curve: the window follows W_est,
 * alpha_cubic = 3(1 - b)/(1 + b) segments per RTT until it reaches cwnd_prior, then 1. */
START_TEST(cubic_reno_friendly)
{
    const uint32_t rtt = 1000;
    struct stk_cc cc;
    stk__cc_init(&cc, STK_CC_CUBIC, MSS, T0);
    cc.cwnd = 100 * MSS;
    stk__cc_on_loss(&cc, 100 * MSS, T0);
    stk_time_t now = T0;
    for (int r = 0; r < 20; r++)
        now = round_trip(&cc, now, rtt, 1);
    double alpha = 3 * 0.3 / 1.7;
    double w = (double)cc.cwnd / MSS;
    ck_assert_msg(fabs(w - (70 + 20 * alpha)) < 1.0, "W_est region: %f", w);
    while (cc.cwnd < 105 * MSS)
        now = round_trip(&cc, now, rtt, 1);
    uint32_t before = cc.cwnd;
    for (int r = 0; r < 10; r++)
        now = round_trip(&cc, now, rtt, 1);
    double per_rtt = (double)(cc.cwnd - before) / MSS / 10;
    ck_assert_msg(per_rtt > 0.9 && per_rtt < 1.3, "alpha 1: %f", per_rtt);
}
END_TEST

/* RFC 9438 section 4.2: the target is capped at 1.5 cwnd, so even when W_cubic(t + RTT) is far
 * above (here after 30 s without ACKs), cwnd grows by at most half a segment per ACKed
 * segment. */
START_TEST(cubic_target_cap)
{
    struct stk_cc cc;
    stk__cc_init(&cc, STK_CC_CUBIC, MSS, T0);
    cc.cwnd = 100 * MSS;
    cc.ssthresh = 100 * MSS;
    stk__cc_on_ack(&cc, MSS, true, 100000, T0); /* starts the epoch at K = 0 */
    uint32_t start = cc.cwnd;
    stk_time_t now = T0 + 30 * STK_US_PER_S;
    for (int i = 0; i < 100; i++)
        stk__cc_on_ack(&cc, MSS, true, 100000, now);
    ck_assert_uint_ge(cc.cwnd, start + 48 * MSS);
    ck_assert_uint_le(cc.cwnd, start + 50 * MSS);
}
END_TEST

/* After an RTO the next congestion avoidance starts a curve with K = 0 at the window it has
 * then (RFC 9438 section 4.8). */
START_TEST(cubic_after_rto)
{
    struct stk_cc cc;
    stk__cc_init(&cc, STK_CC_CUBIC, MSS, T0);
    cc.cwnd = 100 * MSS;
    stk__cc_on_rto(&cc, 100 * MSS, T0);
    ck_assert_uint_eq(cc.cwnd, MSS);
    ck_assert_uint_eq(cc.ssthresh, 70 * MSS);
    stk_time_t now = T0;
    /* Slow start one segment per ACK, stopping exactly at ssthresh. */
    while (cc.cwnd < cc.ssthresh) {
        stk__cc_on_ack(&cc, MSS, true, 100000, now);
        now += 1000;
    }
    ck_assert_uint_eq(cc.cwnd, 70 * MSS);
    ck_assert_uint_eq(cc.epoch_start, 0);
    stk__cc_on_ack(&cc, MSS, true, 100000, now);
    ck_assert(cc.k == 0.0);
    ck_assert(fabs(cc.w_max - 70.0) < 1e-9);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("cc");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, initial_window);
    tcase_add_test(tc, newreno_slow_start_doubles);
    tcase_add_test(tc, newreno_ca_one_mss_per_rtt);
    tcase_add_test(tc, slow_start_stops_at_ssthresh);
    tcase_add_test(tc, no_growth_when_app_limited);
    tcase_add_test(tc, loss_rto_idle);
    tcase_add_test(tc, bounds);
    tcase_add_test(tc, cubic_k_and_trajectory);
    tcase_add_test(tc, cubic_fast_convergence);
    tcase_add_test(tc, cubic_reno_friendly);
    tcase_add_test(tc, cubic_target_cap);
    tcase_add_test(tc, cubic_after_rto);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

/*
 * cc.c - congestion control: NewReno (RFC 5681, RFC 3465 byte counting) and CUBIC (RFC 9438).
 *
 * Windows are kept in bytes; CUBIC's curve is computed in segments (as the RFC writes it)
 * with doubles. Loss recovery itself (which segments to send) lives in tcp and sack.c; this
 * module only answers "how large may the window be".
 */
#include <math.h>

#include "stk_int.h"

/* Upper bound for cwnd and ssthresh, far above any usable window and safe from overflow in
 * the byte arithmetic below. */
#define CC_MAX_WND (1u << 30)
/* Growth per ACK in slow start: RFC 3465's L is 2 segments, which a stretch ACK defeats:
 * a receiver that acknowledges a whole receive burst at once (ustack's stk_rx_end, Linux's
 * GRO) would hold slow start to a few segments per round trip. As Linux (tcp_slow_start
 * counts every segment acknowledged) every byte counts, up to the largest stretch ACK
 * ustack sends itself (STK_ACK_STRETCH), and never less than RFC 3465's 2 segments. */
static uint32_t abc_limit(uint32_t mss)
{
    return stk__max32(2u * mss, STK_ACK_STRETCH);
}

/* RFC 9438 section 5 constants. */
#define CUBIC_C    0.4
#define CUBIC_BETA 0.7

static uint32_t initial_window(uint32_t mss)
{
    /* RFC 6928: min(10 * MSS, max(2 * MSS, 14600)). */
    uint64_t iw = stk__max64(2ull * mss, 14600);
    return (uint32_t)stk__min64(10ull * mss, iw);
}

static uint32_t clamp_wnd(uint64_t w, uint32_t mss)
{
    if (w > CC_MAX_WND)
        w = CC_MAX_WND;
    if (w < mss)
        w = mss;
    return (uint32_t)w;
}

void stk__cc_init(struct stk_cc *cc, enum stk_cc_algo algo, uint32_t mss, stk_time_t now)
{
    (void)now;
    memset(cc, 0, sizeof(*cc));
    cc->algo = (uint8_t)algo;
    cc->mss = mss ? mss : 536;
    cc->cwnd = initial_window(cc->mss);
    cc->ssthresh = CC_MAX_WND; /* "arbitrarily high" (RFC 5681 section 3.1) */
}

/* Slow start with appropriate byte counting; returns the bytes of this ACK left over once
 * cwnd reaches ssthresh, which the caller feeds to congestion avoidance. */
static uint32_t slow_start(struct stk_cc *cc, uint32_t acked)
{
    uint32_t inc = stk__min32(acked, abc_limit(cc->mss));
    uint32_t room = cc->ssthresh - cc->cwnd;

    if (inc < room) {
        cc->cwnd += inc;
        return 0;
    }
    cc->cwnd = cc->ssthresh;
    return acked - room;
}

/* RFC 5681 congestion avoidance with RFC 3465 byte counting: one MSS per cwnd of ACKed
 * bytes, so about one MSS per RTT. The credit is capped at one window so a stretch ACK cannot
 * bank increments for later. */
static void reno_ca(struct stk_cc *cc, uint32_t acked)
{
    uint64_t credit = (uint64_t)cc->ca_acked + acked;

    if (credit >= cc->cwnd) {
        credit -= cc->cwnd;
        cc->cwnd = clamp_wnd((uint64_t)cc->cwnd + cc->mss, cc->mss);
    }
    cc->ca_acked = (uint32_t)stk__min64(credit, cc->cwnd);
}

/* ---- CUBIC ------------------------------------------------------------------------------ */

/* RFC 9438 eq. 1: W_cubic(t) = C * (t - K)^3 + W_max, in segments, t in seconds. */
static double w_cubic(const struct stk_cc *cc, double t)
{
    double d = t - cc->k;
    return CUBIC_C * d * d * d + cc->w_max;
}

static void cubic_epoch_start(struct stk_cc *cc, stk_time_t now)
{
    double cwnd_seg = (double)cc->cwnd / cc->mss;

    /* 0 marks "no epoch", so a caller whose clock starts at 0 gets 1 us instead. */
    cc->epoch_start = now ? now : 1;
    cc->cwnd_epoch = cc->cwnd;
    cc->w_est = cwnd_seg;
    cc->ca_acked = 0;
    if (cc->w_max > cwnd_seg) {
        /* RFC 9438 eq. 2: K = cubic_root((W_max - cwnd_epoch) / C). */
        cc->k = cbrt((cc->w_max - cwnd_seg) / CUBIC_C);
    } else {
        /* Already at or above the old plateau (e.g. after an RTO, section 4.8): start the
         * curve here with K = 0, so growth is convex from the start. */
        cc->k = 0;
        cc->w_max = cwnd_seg;
    }
}

static void cubic_ca(struct stk_cc *cc, uint32_t acked, uint32_t srtt_us, stk_time_t now)
{
    if (cc->epoch_start == 0)
        cubic_epoch_start(cc, now);

    double mss = cc->mss;
    double cwnd_seg = (double)cc->cwnd / mss;
    double t = now > cc->epoch_start ? (double)(now - cc->epoch_start) / 1e6 : 0.0;
    double rtt = (double)srtt_us / 1e6;

    /* Section 4.3: the Reno-friendly estimate grows by alpha_cubic per window of ACKed
     * segments; alpha is 3(1 - beta)/(1 + beta) until W_est reaches the window before the
     * last reduction (cwnd_prior, kept in w_last_max), then 1 as for Reno. */
    double alpha = 3.0 * (1.0 - CUBIC_BETA) / (1.0 + CUBIC_BETA);
    if (cc->w_last_max > 0 && cc->w_est >= cc->w_last_max)
        alpha = 1.0;
    cc->w_est += alpha * ((double)acked / mss) / cwnd_seg;

    if (w_cubic(cc, t) < cc->w_est) {
        /* Reno-friendly region: cwnd follows W_est. */
        uint64_t est = (uint64_t)(cc->w_est * mss);
        if (est > cc->cwnd)
            cc->cwnd = clamp_wnd(est, cc->mss);
        return;
    }

    /* Section 4.4/4.5: aim at W_cubic(t + RTT), kept within [cwnd, 1.5 cwnd]. */
    double target = w_cubic(cc, t + rtt);
    if (target < cwnd_seg)
        target = cwnd_seg;
    else if (target > 1.5 * cwnd_seg)
        target = 1.5 * cwnd_seg;
    if (target <= cwnd_seg)
        return;

    /* cwnd grows by (target - cwnd) / cwnd segments per ACKed segment. Whole-MSS steps are
     * taken once enough bytes are ACKed (like Reno's byte counting), so tiny per-ACK
     * increments near the plateau accumulate instead of rounding to zero. */
    double bytes_per_mss = cwnd_seg * mss / (target - cwnd_seg);
    double credit = (double)cc->ca_acked + acked;
    if (credit >= bytes_per_mss) {
        double steps = floor(credit / bytes_per_mss);
        credit -= steps * bytes_per_mss;
        cc->cwnd = clamp_wnd((uint64_t)cc->cwnd + (uint64_t)(steps * mss), cc->mss);
    }
    cc->ca_acked = credit < (double)CC_MAX_WND ? (uint32_t)credit : CC_MAX_WND;
}

/* Section 4.6/4.7: remember the plateau (with fast convergence) and return the reduced
 * window. The epoch restarts on the next ACK in congestion avoidance. */
static uint32_t cubic_reduce(struct stk_cc *cc)
{
    double cwnd_seg = (double)cc->cwnd / cc->mss;

    if (cwnd_seg < cc->w_max)
        cc->w_max = cwnd_seg * (1.0 + CUBIC_BETA) / 2.0; /* fast convergence */
    else
        cc->w_max = cwnd_seg;
    cc->w_last_max = cwnd_seg; /* cwnd_prior, for the alpha switch */
    cc->epoch_start = 0;
    return (uint32_t)stk__max64((uint64_t)(cc->cwnd * CUBIC_BETA), 2ull * cc->mss);
}

/* ---- Entry points ------------------------------------------------------------------------ */

void stk__cc_on_ack(struct stk_cc *cc, uint32_t acked, bool cwnd_limited, uint32_t srtt_us,
                    stk_time_t now)
{
    /* RFC 7661 spirit: a window the application did not fill says nothing about the path. */
    if (!cwnd_limited || acked == 0)
        return;
    if (cc->cwnd < cc->ssthresh) {
        acked = slow_start(cc, acked);
        if (acked == 0)
            return;
    }
    if (cc->algo == STK_CC_CUBIC)
        cubic_ca(cc, acked, srtt_us, now);
    else
        reno_ca(cc, acked);
}

static uint32_t loss_ssthresh(struct stk_cc *cc, uint32_t flight)
{
    if (cc->algo == STK_CC_CUBIC)
        return clamp_wnd(cubic_reduce(cc), cc->mss);
    /* RFC 5681 eq. 4: ssthresh = max(FlightSize / 2, 2 * SMSS). */
    return clamp_wnd(stk__max64(flight / 2, 2ull * cc->mss), cc->mss);
}

void stk__cc_on_loss(struct stk_cc *cc, uint32_t flight, stk_time_t now)
{
    (void)now;
    cc->ssthresh = loss_ssthresh(cc, flight);
    cc->cwnd = cc->ssthresh;
    cc->ca_acked = 0;
}

void stk__cc_on_rto(struct stk_cc *cc, uint32_t flight, stk_time_t now)
{
    (void)now;
    cc->ssthresh = loss_ssthresh(cc, flight);
    cc->cwnd = cc->mss; /* RFC 5681 loss window */
    cc->ca_acked = 0;
    if (cc->algo == STK_CC_CUBIC) {
        /* RFC 9438 section 4.8: the first congestion avoidance after a timeout starts a
         * fresh curve at the cwnd it begins with (K = 0); clearing w_max makes
         * cubic_epoch_start() do exactly that. */
        cc->w_max = 0;
        cc->epoch_start = 0;
    }
}

void stk__cc_on_idle(struct stk_cc *cc, stk_time_t now)
{
    (void)now;
    /* RFC 5681 section 4.1: restart from min(IW, cwnd). CUBIC's curve is time-based, so the
     * idle time must not count as growth time: the epoch restarts on the next ACK. */
    cc->cwnd = stk__min32(cc->cwnd, initial_window(cc->mss));
    cc->ca_acked = 0;
    cc->epoch_start = 0;
}

void stk__cc_set_mss(struct stk_cc *cc, uint32_t mss)
{
    if (mss == 0 || mss == cc->mss)
        return;
    /* Windows stay in bytes; CUBIC's segment-based state is rescaled so the curve keeps the
     * same byte values. */
    double scale = (double)cc->mss / mss;
    cc->w_max *= scale;
    cc->w_last_max *= scale;
    cc->w_est *= scale;
    cc->mss = mss;
    cc->cwnd = clamp_wnd(cc->cwnd, mss);
    cc->ssthresh = clamp_wnd(stk__max64(cc->ssthresh, 2ull * mss), mss);
}

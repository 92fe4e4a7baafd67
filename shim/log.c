/*
 * log.c - levelled, rate-limited logging for libustack.so and ustackd (see log.h).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "log.h"

#include <errno.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define LINE_MAX_BYTES 512
#define LOCK_TRIES     1000

int shim__log_level = SHIM_LOG_WARN;

static const char *log_prog = "ustack";
static struct shim_ratelimit log_rl = {SHIM_LOG_BURST, SHIM_LOG_PER_S, 0, 0, 0, 0};
static uint64_t (*log_clock)(void);
/* The pid of the process whose thread holds the bucket, 0 when free. A child forked while
 * a thread of its parent held it sees the parent's pid there and takes the lock over. */
static atomic_int log_lock;
/* Lines refused because the lock was busy; reported with the next line that goes out. */
static atomic_ullong log_lost;

void shim_ratelimit_init(struct shim_ratelimit *rl, unsigned burst, unsigned per_s)
{
    memset(rl, 0, sizeof *rl);
    rl->burst = burst;
    rl->per_s = per_s;
}

int shim_ratelimit_take(struct shim_ratelimit *rl, uint64_t now_us, uint64_t *suppressed)
{
    const uint64_t full = (uint64_t)rl->burst * 1000000u;
    if (!rl->started) {
        rl->started = 1;
        rl->micro_tokens = full;
        rl->last_us = now_us;
    } else if (now_us > rl->last_us) {
        /* Elapsed time is capped so the product cannot overflow; a long quiet spell only
         * ever refills the bucket. */
        uint64_t dt = now_us - rl->last_us;
        if (dt > 1000000000u)
            dt = 1000000000u;
        rl->micro_tokens += dt * rl->per_s;
        if (rl->micro_tokens > full)
            rl->micro_tokens = full;
        rl->last_us = now_us;
    }
    if (rl->micro_tokens < 1000000u) {
        rl->suppressed++;
        return 0;
    }
    rl->micro_tokens -= 1000000u;
    if (suppressed)
        *suppressed = rl->suppressed;
    rl->suppressed = 0;
    return 1;
}

void shim_log_setup(const char *prog, int level)
{
    if (prog && *prog)
        log_prog = prog;
    if (level >= SHIM_LOG_ERROR && level <= SHIM_LOG_DEBUG)
        shim__log_level = level;
}

void shim_log_test_clock(uint64_t (*now_us)(void))
{
    log_clock = now_us;
    shim_ratelimit_init(&log_rl, SHIM_LOG_BURST, SHIM_LOG_PER_S);
    atomic_store(&log_lost, 0);
}

static uint64_t mono_us(void)
{
    if (log_clock)
        return log_clock();
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static int lock_take(int me)
{
    for (int i = 0; i < LOCK_TRIES; i++) {
        int cur = 0;
        if (atomic_compare_exchange_strong(&log_lock, &cur, me))
            return 1;
        /* Held by our parent's thread at fork time: nobody here will ever release it. */
        if (cur != me && atomic_compare_exchange_strong(&log_lock, &cur, me))
            return 1;
        sched_yield();
    }
    return 0;
}

static int (*sink_ok)(int fd);
static void (*sink_other)(const char *line, size_t len);

void shim_log_set_sink(int (*stderr_ok)(int fd), void (*other)(const char *line, size_t len))
{
    sink_ok = stderr_ok;
    sink_other = other;
}

/* One write(2) per line; through the system call itself, so that in libustack.so it never
 * reaches the interposed write(). */
static void put_line(const char *buf, size_t n)
{
    if (sink_ok && !sink_ok(2)) {
        if (sink_other)
            sink_other(buf, n);
        return;
    }
    while (n) {
        long w = syscall(SYS_write, 2, buf, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return;
        buf += w;
        n -= (size_t)w;
    }
}

static size_t prefix(char *buf, size_t size, int pid)
{
    int n = snprintf(buf, size, "%s: [%d] ", log_prog, pid);
    return n < 0 ? 0 : (size_t)n < size ? (size_t)n : size - 1;
}

void shim_vlog(int level, const char *fmt, va_list ap)
{
    if (level > shim__log_level)
        return;
    int e = errno;
    int me = (int)getpid();
    uint64_t quiet = 0;
    if (!lock_take(me)) {
        atomic_fetch_add(&log_lost, 1);
        errno = e;
        return;
    }
    int ok = shim_ratelimit_take(&log_rl, mono_us(), &quiet);
    atomic_store(&log_lock, 0);
    if (!ok) {
        errno = e;
        return;
    }
    quiet += atomic_exchange(&log_lost, 0);

    char buf[LINE_MAX_BYTES];
    size_t n;
    if (quiet) {
        n = prefix(buf, sizeof buf, me);
        int m = snprintf(buf + n, sizeof buf - n, "%llu messages suppressed\n",
                         (unsigned long long)quiet);
        if (m > 0)
            put_line(buf, n + (size_t)m);
    }
    n = prefix(buf, sizeof buf, me);
    int m = vsnprintf(buf + n, sizeof buf - n, fmt, ap);
    if (m >= 0) {
        n += (size_t)m;
        if (n > sizeof buf - 1)
            n = sizeof buf - 1; /* cut: the newline takes the terminator's place */
        if (n && buf[n - 1] == '\n')
            n--;
        buf[n++] = '\n';
        put_line(buf, n);
    }
    errno = e;
}

void shim_log(int level, const char *fmt, ...)
{
    if (level > shim__log_level)
        return;
    va_list ap;
    va_start(ap, fmt);
    shim_vlog(level, fmt, ap);
    va_end(ap);
}

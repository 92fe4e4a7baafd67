/*
 * log.h - the one logging function of libustack.so and ustackd: levelled (USTACK_LOG),
 * prefixed, and rate-limited so that a flood of messages cannot fill a disk.
 *
 * Every line is "<prog>: [<pid>] <message>\n", written to fd 2 with one write(2) system
 * call (never through stdio, never through the interposed write of libustack.so), where
 * prog is "ustack" in libustack.so and "ustackd" in the stack process. A message above the
 * level set by shim_log_setup() (default warn) costs one predictable branch with
 * SHIM_LOG(), and nothing is formatted.
 *
 * Rate limit: one token bucket per process (shim_ratelimit): a burst of SHIM_LOG_BURST
 * lines, then SHIM_LOG_PER_S lines per second. Lines beyond it are counted and dropped;
 * the next line that passes is preceded by "<prog>: [<pid>] <N> messages suppressed".
 * Threads share the bucket through a lock that a forked child takes over (it never waits
 * for a thread of its parent); a thread that cannot get the lock promptly counts its line
 * as suppressed instead of waiting.
 *
 * Like conf.c, no allocation: libustack.so may log while the allocator is resolving.
 */
#ifndef USTACK_SHIM_LOG_H
#define USTACK_SHIM_LOG_H

#include <stdarg.h>
#include <stdint.h>

#include "conf.h"

#define SHIM_LOG_BURST 20
#define SHIM_LOG_PER_S 10

/* A token bucket: burst tokens at most, refilled at per_s tokens a second; a line costs
 * one. Pure (time passed in), so it is unit-tested on its own. */
struct shim_ratelimit {
    unsigned burst, per_s;
    uint64_t micro_tokens; /* tokens x 1e6 */
    uint64_t last_us;      /* time of the last refill */
    uint64_t suppressed;   /* lines refused since the last one let through */
    int started;
};

void shim_ratelimit_init(struct shim_ratelimit *rl, unsigned burst, unsigned per_s);
/* 1: a line may go out now; *suppressed gets the number of lines refused since the last
 * one that went out (then reset to 0). 0: refused and counted. now_us is any monotonic
 * microsecond clock; a clock going backwards refills nothing. */
int shim_ratelimit_take(struct shim_ratelimit *rl, uint64_t now_us, uint64_t *suppressed);

/* The level lines must be at or below to be written (enum shim_log_level). */
extern int shim__log_level;

/* Sets the program name ("ustack", "ustackd"; at most 15 characters, kept by pointer) and
 * the level. Before any call: "ustack" and SHIM_LOG_WARN. */
void shim_log_setup(const char *prog, int level);

/* Formats and writes one line at `level` if the level and the rate limit let it through.
 * A trailing newline in fmt is not needed (one is added; a line is cut at 512 bytes). */
void shim_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void shim_vlog(int level, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));

#define SHIM_LOG(level, ...)                                                                       \
    do {                                                                                           \
        if (__builtin_expect((level) <= shim__log_level, 0))                                       \
            shim_log((level), __VA_ARGS__);                                                        \
    } while (0)
#define SHIM_ERR(...)   SHIM_LOG(SHIM_LOG_ERROR, __VA_ARGS__)
#define SHIM_WARN(...)  SHIM_LOG(SHIM_LOG_WARN, __VA_ARGS__)
#define SHIM_INFO(...)  SHIM_LOG(SHIM_LOG_INFO, __VA_ARGS__)
#define SHIM_DEBUG(...) SHIM_LOG(SHIM_LOG_DEBUG, __VA_ARGS__)

/* Where lines go when fd 2 cannot take them: stderr_ok(2) false (libustack.so: fd 2 is one
 * of its sockets, whose number is an eventfd in the kernel, and the line is no data for the
 * peer) sends them to other(line, len) instead. NULL: always fd 2. */
void shim_log_set_sink(int (*stderr_ok)(int fd), void (*other)(const char *line, size_t len));

/* Tests: replace the clock the limiter reads (microseconds; NULL restores CLOCK_MONOTONIC)
 * and start over with a full bucket. */
void shim_log_test_clock(uint64_t (*now_us)(void));

#endif

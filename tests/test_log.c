/*
 * test_log.c - the logging of libustack.so and ustackd (shim/log.c): the token bucket on its
 * own (burst, refill rate, the suppressed count, clocks going backwards or far forwards),
 * and shim_log() end to end with fd 2 redirected to a file: the line format, the level
 * filter, and a flood cut to the burst plus a "N messages suppressed" line; the sink lines
 * go to when fd 2 cannot take them.
 */
#define _GNU_SOURCE
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

/* ---- the token bucket ------------------------------------------------------------------ */

START_TEST(bucket_burst_then_rate)
{
    struct shim_ratelimit rl;
    shim_ratelimit_init(&rl, 20, 10);
    uint64_t t = 5000000, q = 99;
    for (int i = 0; i < 20; i++) {
        ck_assert_int_eq(shim_ratelimit_take(&rl, t, &q), 1);
        ck_assert_uint_eq(q, 0);
    }
    for (int i = 0; i < 50; i++)
        ck_assert_int_eq(shim_ratelimit_take(&rl, t, &q), 0);
    /* 10 per second: a token every 100 ms, not earlier. */
    ck_assert_int_eq(shim_ratelimit_take(&rl, t + 99999, &q), 0);
    ck_assert_int_eq(shim_ratelimit_take(&rl, t + 100000, &q), 1);
    ck_assert_uint_eq(q, 51);
    ck_assert_int_eq(shim_ratelimit_take(&rl, t + 100000, &q), 0);
    /* Over 10 s of steady flooding (a try every ms) exactly 10 lines a second pass. */
    unsigned passed = 0, tries = 0;
    uint64_t refused = 0;
    for (uint64_t now = t + 100001; now <= t + 10100001; now += 1000, tries++) {
        if (shim_ratelimit_take(&rl, now, &q)) {
            passed++;
            refused += q;
        }
    }
    ck_assert_uint_eq(passed, 100);
    /* Every refused try (and the one refused before the loop) is reported by the next line
     * let through, or still owed. */
    ck_assert_uint_eq(refused + rl.suppressed, tries - passed + 1);
}
END_TEST

START_TEST(bucket_refill_caps_at_burst)
{
    struct shim_ratelimit rl;
    shim_ratelimit_init(&rl, 20, 10);
    uint64_t q;
    for (int i = 0; i < 20; i++)
        ck_assert_int_eq(shim_ratelimit_take(&rl, 0, &q), 1);
    ck_assert_int_eq(shim_ratelimit_take(&rl, 0, &q), 0);
    /* An hour (and then centuries) of silence gives back the burst, no more. */
    for (uint64_t later = 3600000000ull; later; later = later < (1ull << 62) ? 1ull << 62 : 0) {
        for (int i = 0; i < 20; i++)
            ck_assert_int_eq(shim_ratelimit_take(&rl, later, &q), 1);
        ck_assert_int_eq(shim_ratelimit_take(&rl, later, &q), 0);
    }
}
END_TEST

START_TEST(bucket_clock_backwards)
{
    struct shim_ratelimit rl;
    shim_ratelimit_init(&rl, 2, 10);
    uint64_t q;
    ck_assert_int_eq(shim_ratelimit_take(&rl, 1000000, &q), 1);
    ck_assert_int_eq(shim_ratelimit_take(&rl, 1000000, &q), 1);
    ck_assert_int_eq(shim_ratelimit_take(&rl, 1000000, &q), 0);
    /* Backwards refills nothing, and the next forward step counts from the latest time. */
    ck_assert_int_eq(shim_ratelimit_take(&rl, 1, &q), 0);
    ck_assert_int_eq(shim_ratelimit_take(&rl, 1099999, &q), 0);
    ck_assert_int_eq(shim_ratelimit_take(&rl, 1100000, &q), 1);
    ck_assert_uint_eq(q, 3);
}
END_TEST

/* ---- shim_log end to end ------------------------------------------------------------------ */

static uint64_t fake_now;
static uint64_t fake_clock(void)
{
    return fake_now;
}

static char out_path[64];

/* fd 2 into a fresh file; returns it after the test body ran. */
static void capture_stderr(void)
{
    strcpy(out_path, "/tmp/test_log.XXXXXX");
    int fd = mkstemp(out_path);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(dup2(fd, 2), 2);
    close(fd);
    fake_now = 1000000;
    shim_log_test_clock(fake_clock);
}

static char *captured(void)
{
    static char buf[65536];
    FILE *f = fopen(out_path, "r");
    ck_assert_ptr_nonnull(f);
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    unlink(out_path);
    return buf;
}

static unsigned count_lines(const char *s, const char *needle)
{
    unsigned n = 0;
    for (const char *p = s; (p = strstr(p, needle)); p += strlen(needle))
        n++;
    return n;
}

static int evaluated;
static int side_effect(void)
{
    return ++evaluated;
}

START_TEST(format_and_level)
{
    capture_stderr();
    shim_log_setup("ustackd", SHIM_LOG_WARN);
    SHIM_WARN("core %u: something %s", 3u, "odd");
    SHIM_ERR("broken\n");
    SHIM_INFO("not shown %d", side_effect());
    SHIM_DEBUG("not shown %d", side_effect());
    shim_log(SHIM_LOG_DEBUG, "not shown either");
    ck_assert_int_eq(evaluated, 0); /* filtered before the arguments are evaluated */
    shim_log_setup(NULL, SHIM_LOG_DEBUG);
    SHIM_DEBUG("now shown %d", side_effect());
    shim_log_setup(NULL, 7); /* out of range: ignored */
    ck_assert_int_eq(shim__log_level, SHIM_LOG_DEBUG);
    char want[256];
    int pid = (int)getpid();
    snprintf(want, sizeof want,
             "ustackd: [%d] core 3: something odd\n"
             "ustackd: [%d] broken\n"
             "ustackd: [%d] now shown 1\n",
             pid, pid, pid);
    ck_assert_str_eq(captured(), want);
}
END_TEST

START_TEST(long_line_cut)
{
    capture_stderr();
    char big[2000];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    shim_log(SHIM_LOG_ERROR, "%s", big);
    char *s = captured();
    ck_assert_uint_eq(strlen(s), 512);
    ck_assert_int_eq(s[511], '\n');
    ck_assert_ptr_eq(strchr(s, '\n'), s + 511);
}
END_TEST

/* A sink (libustack.so's, when fd 2 is one of its sockets): lines go to it, not to fd 2,
 * while stderr_ok says no; back to fd 2 once it says yes. */
static char sunk[1024];
static int fd2_ok;
static int ok_fd(int fd)
{
    return fd == 2 && fd2_ok;
}
static void sink(const char *line, size_t len)
{
    strncat(sunk, line,
            len < sizeof sunk - strlen(sunk) - 1 ? len : sizeof sunk - strlen(sunk) - 1);
}

START_TEST(sink_when_fd2_is_not_ours)
{
    capture_stderr();
    shim_log_setup("ustack", SHIM_LOG_WARN);
    shim_log_set_sink(ok_fd, sink);
    SHIM_WARN("to the sink");
    fd2_ok = 1;
    SHIM_WARN("to fd 2");
    shim_log_set_sink(NULL, NULL);
    int pid = (int)getpid();
    char want[128];
    snprintf(want, sizeof want, "ustack: [%d] to the sink\n", pid);
    ck_assert_str_eq(sunk, want);
    snprintf(want, sizeof want, "ustack: [%d] to fd 2\n", pid);
    ck_assert_str_eq(captured(), want);
}
END_TEST

START_TEST(flood_suppressed)
{
    capture_stderr();
    shim_log_setup("ustack", SHIM_LOG_WARN);
    for (int i = 0; i < 1000; i++)
        shim_log(SHIM_LOG_WARN, "flood %d", i);
    fake_now += 50000; /* half a token: still nothing */
    shim_log(SHIM_LOG_WARN, "flood late");
    fake_now += 50000;
    shim_log(SHIM_LOG_WARN, "after the pause");
    fake_now += 10000000; /* 10 s quiet: the burst is back, nothing owed */
    for (int i = 0; i < 25; i++)
        shim_log(SHIM_LOG_ERROR, "second wave %d", i);
    char *s = captured();
    char want[128];
    snprintf(want, sizeof want,
             "ustack: [%d] flood 19\nustack: [%d] 981 messages suppressed\n"
             "ustack: [%d] after the pause\n",
             (int)getpid(), (int)getpid(), (int)getpid());
    ck_assert_ptr_nonnull(strstr(s, want));
    ck_assert_uint_eq(count_lines(s, "] flood "), 20);
    ck_assert_ptr_null(strstr(s, "flood 20\n"));
    ck_assert_ptr_null(strstr(s, "flood late"));
    ck_assert_uint_eq(count_lines(s, "] second wave "), 20);
    ck_assert_uint_eq(count_lines(s, "messages suppressed"), 1);
    ck_assert_uint_eq(count_lines(s, "\n"), 20 + 2 + 20);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("log");
    TCase *bucket = tcase_create("bucket");
    tcase_add_test(bucket, bucket_burst_then_rate);
    tcase_add_test(bucket, bucket_refill_caps_at_burst);
    tcase_add_test(bucket, bucket_clock_backwards);
    suite_add_tcase(s, bucket);
    TCase *log = tcase_create("log");
    tcase_add_test(log, format_and_level);
    tcase_add_test(log, long_line_cut);
    tcase_add_test(log, flood_suppressed);
    tcase_add_test(log, sink_when_fd2_is_not_ours);
    suite_add_tcase(s, log);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

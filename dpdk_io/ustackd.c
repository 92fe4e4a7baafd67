/*
 * ustackd - the ustack stack process: owns the DPDK device and runs one pinned stack
 * thread per configured core. Configured by the USTACK_* environment (docs/configuration.md).
 *
 *   ustackd [--echo PORT] [--discard PORT] [--source PORT] [--shm-fd N --pipe-fd R]
 *
 * Prints "ustackd: ready ..." on stdout once every core serves (and writes "ready\n" to the
 * file descriptor named by USTACK_READY_FD, if set). SIGUSR1 prints per-core statistics;
 * SIGTERM or SIGINT closes connections, prints the statistics and exits 0. A bad setting
 * stops start-up with one line naming it, and exit status 1.
 *
 * With --shm-fd, ustackd serves the applications of the shared-memory region in memfd N
 * (docs/shm.md), besides any built-in service: it publishes SHM_READY in the region once
 * every core serves, or the reason it could not start (hdr.errmsg, SHM_FAILED). It exits,
 * closing connections first, when the liveness pipe R reads end-of-file (no client left) or
 * on SIGTERM. Spawned by libustack.so, its stdout is the application's: there it prints the
 * ready line and the final statistics only with USTACK_LOG=info or more (SIGUSR1 always).
 *
 * While it runs, DPDK telemetry commands (/ustack/config, /ustack/stats, /ustack/conns) on
 * the socket in its EAL runtime directory show its state (docs/observability.md).
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "dio.h"
#include "log.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: ustackd [--echo PORT] [--discard PORT] [--source PORT]"
               " [--shm-fd N --pipe-fd R]\n"
               "  configured by USTACK_DEV, USTACK_IP, USTACK_GW, USTACK_CORES, USTACK_EAL, ...\n"
               "  (see docs/configuration.md; --shm-fd/--pipe-fd: docs/shm.md)\n");
}

static int parse_fd(const char *flag, const char *v, int *out)
{
    char *end;
    errno = 0;
    long fd = strtol(v ? v : "", &end, 10);
    if (!v || !*v || *end || errno || fd < 0 || fd > 1 << 24 || fcntl((int)fd, F_GETFD) < 0) {
        SHIM_ERR("%s %s: not an open file descriptor", flag, v ? v : "(missing)");
        return -1;
    }
    *out = (int)fd;
    return 0;
}

/* The shared-memory mode's start-up failure: the reason on stderr and in the region, for
 * the application that spawned us to print. */
static int shm_fd = -1;

static int fail(const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    SHIM_ERR("%s", msg);
    if (shm_fd >= 0)
        dio_shm_fail(shm_fd, msg);
    return 1;
}

static int parse_port(const char *flag, const char *v, uint16_t *out)
{
    char *end;
    errno = 0;
    unsigned long p = strtoul(v ? v : "", &end, 10);
    if (!v || !*v || *end || errno || p == 0 || p > 65535) {
        SHIM_ERR("%s %s: not a TCP port (expected 1..65535)", flag, v ? v : "(missing)");
        return -1;
    }
    *out = (uint16_t)p;
    return 0;
}

static void report_ready(const struct shim_conf *c, struct dio_stack *s, bool print)
{
    char ip[16];
    if (print) {
        printf("ustackd: ready ip=%s/%u %s\n", shim_ip_str(c->ip, ip), c->prefix,
               dio_stack_describe(s));
        fflush(stdout);
    }
    const char *fdv = getenv("USTACK_READY_FD");
    if (fdv && *fdv) {
        int fd = atoi(fdv);
        if (fd > 2 && write(fd, "ready\n", 6) != 6)
            SHIM_ERR("USTACK_READY_FD=%s: %s", fdv, strerror(errno));
        if (fd > 2)
            close(fd);
    }
}

/* The signals the control thread takes synchronously (through a signalfd). */
static void control_signals(sigset_t *set)
{
    sigemptyset(set);
    sigaddset(set, SIGTERM);
    sigaddset(set, SIGINT);
    sigaddset(set, SIGUSR1);
    sigaddset(set, SIGHUP);
}

static void print_stats(struct dio_stack *s, struct dio_shm *srv)
{
    dio_stack_print_stats(s, stdout, "ustackd: stats");
    if (srv)
        dio_shm_print_stats(srv, stdout, "ustackd: stats");
    printf("ustackd: stats end\n");
    fflush(stdout);
}

/* Waits for a reason to stop: SIGTERM/SIGINT, or the liveness pipe's end-of-file (every
 * client is gone). SIGUSR1 prints statistics. When a client process exits (its pidfd, in
 * dio_shm_watch_fd) and once a second, what dead clients held is reclaimed: their reply
 * slots, and their sockets (closed when no other process holds them). */
static void control_loop(struct dio_stack *s, struct dio_shm *srv, int pipe_fd, sigset_t *set)
{
    int sfd = signalfd(-1, set, SFD_CLOEXEC);
    if (sfd < 0)
        SHIM_WARN("signalfd: %s (polling for signals instead)", strerror(errno));
    for (;;) {
        /* Without a signalfd, signals are polled for between short waits. */
        struct pollfd p[3] = {{.fd = sfd, .events = POLLIN},
                              {.fd = pipe_fd, .events = POLLIN},
                              {.fd = dio_shm_watch_fd(srv), .events = POLLIN}};
        int n = poll(p, 3, sfd < 0 ? 100 : srv ? 1000 : -1);
        if (n < 0 && errno != EINTR)
            break;
        if (srv)
            dio_shm_reap(srv);
        int sig = 0;
        if (sfd >= 0 && n > 0 && (p[0].revents & POLLIN)) {
            struct signalfd_siginfo si;
            if (read(sfd, &si, sizeof(si)) == (ssize_t)sizeof(si))
                sig = (int)si.ssi_signo;
        } else if (sfd < 0) {
            struct timespec zero = {0, 0};
            sig = sigtimedwait(set, NULL, &zero);
        }
        if (sig == SIGUSR1)
            print_stats(s, srv);
        else if (sig > 0 && sig != SIGHUP)
            break;
        if (n <= 0)
            continue;
        if (pipe_fd >= 0 && (p[1].revents & (POLLIN | POLLHUP | POLLERR))) {
            /* Clients never write; anything read is drained, and 0 is the end. */
            char buf[256];
            ssize_t r = read(pipe_fd, buf, sizeof(buf));
            if (r == 0 || (r < 0 && errno != EINTR && errno != EAGAIN))
                break;
        }
    }
    if (sfd >= 0)
        close(sfd);
}

int main(int argc, char **argv)
{
    static struct dio_services svc;
    shim_log_setup("ustackd", SHIM_LOG_WARN);
    int pipe_fd = -1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        uint16_t *dst = NULL;
        if (!strcmp(a, "--echo"))
            dst = &svc.echo_port;
        else if (!strcmp(a, "--discard"))
            dst = &svc.discard_port;
        else if (!strcmp(a, "--source"))
            dst = &svc.source_port;
        else if (!strcmp(a, "--shm-fd") || !strcmp(a, "--pipe-fd")) {
            if (parse_fd(a, v, a[2] == 's' ? &shm_fd : &pipe_fd))
                return 2;
            i++;
            continue;
        } else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else {
            SHIM_ERR("unknown argument %s", a);
            usage(stderr);
            return 2;
        }
        if (parse_port(a, v, dst))
            return 2;
        i++;
    }
    bool shm = shm_fd >= 0;
    if (shm && pipe_fd < 0)
        return fail("--shm-fd needs --pipe-fd (the liveness pipe)");
    if (!shm && pipe_fd >= 0) {
        SHIM_ERR("--pipe-fd needs --shm-fd");
        return 2;
    }
    /* Our copy of the pipe's write end, if the spawner let one through, would keep us from
     * ever seeing end-of-file. */
    const char *wv = getenv("USTACK_PIPE_FD");
    if (shm && wv && *wv) {
        int wfd = atoi(wv);
        struct stat st;
        if (wfd > 2 && wfd != pipe_fd && fstat(wfd, &st) == 0 && S_ISFIFO(st.st_mode) &&
            (fcntl(wfd, F_GETFL) & O_ACCMODE) == O_WRONLY)
            close(wfd);
    }

    static struct shim_conf conf;
    char err[512];
    if (shim_conf_load(&conf, err, sizeof(err)))
        return fail("%s", err);
    shim_log_setup(NULL, conf.log_level);
    /* Signals are taken synchronously by this (control) thread; block them before EAL
     * starts its threads, which inherit the mask. */
    sigset_t set;
    control_signals(&set);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    struct dio_shm *srv = NULL;
    if (shm && dio_shm_open(shm_fd, conf.ncores, &srv, err, sizeof(err)))
        return fail("%s", err);

    struct dio_stack_conf sc;
    memset(&sc, 0, sizeof(sc));
    if (dio_eal_init(&conf, argv[0], sc.lcores, err, sizeof(err))) {
        dio_shm_close(srv);
        return fail("%s", err);
    }
    sc.conf = &conf;
    sc.ncores = conf.ncores;
    static struct dio_app svc_app;
    svc_app = dio_services_app(&svc);
    sc.app = srv ? dio_shm_app_with(srv, &svc_app) : svc_app;
    struct dio_stack *s = NULL;
    if (dio_port_find(conf.dev, &sc.port_id, err, sizeof(err)) ||
        dio_stack_create(&sc, &s, err, sizeof(err)) || dio_stack_start(s, err, sizeof(err))) {
        if (s)
            dio_stack_destroy(s);
        dio_eal_cleanup();
        dio_shm_close(srv);
        return fail("%s", err);
    }
    bool verbose = !shm || conf.log_level >= SHIM_LOG_INFO;
    /* Telemetry is a window for tools, not a reason to refuse to serve. */
    if (dio_telemetry_attach(s, srv, &conf))
        SHIM_WARN("telemetry commands could not be registered");
    report_ready(&conf, s, verbose);
    if (srv)
        dio_shm_ready(srv);

    control_loop(s, srv, pipe_fd, &set);

    /* Clients stop waiting for us first; then the cores close what is open. */
    if (srv)
        dio_shm_gone(srv);
    dio_telemetry_detach();
    dio_stack_stop(s, 1000);
    if (verbose) {
        print_stats(s, srv);
        printf("ustackd: stopped\n");
        fflush(stdout);
    }
    dio_stack_destroy(s);
    dio_eal_cleanup();
    dio_shm_close(srv);
    return 0;
}

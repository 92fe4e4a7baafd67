/*
 * ustackd - the ustack stack process: owns the DPDK device and runs one pinned stack
 * thread per configured core. Configured by the USTACK_* environment (docs/configuration.md).
 *
 *   ustackd [--echo PORT] [--discard PORT] [--source PORT] [--shm-fd N --pipe-fd R | --standalone]
 *
 * Prints "ustackd: ready ..." on stdout once every core serves (and writes "ready\n" to the
 * file descriptor named by USTACK_READY_FD, if set). SIGUSR1 prints per-core statistics;
 * SIGTERM or SIGINT closes connections, prints the statistics and exits 0. A bad setting
 * stops start-up with one line naming it, and exit status 1.
 *
 * With --shm-fd, ustackd serves the applications of the shared-memory region in memfd N
 * (docs/shm.md), besides any built-in service: it publishes SHM_READY in the region once
 * every core serves, or the reason it could not start (hdr.errmsg, SHM_FAILED; SHM_BUSY when
 * another ustackd serves the device, which the spawner then attaches to). With --shm-fd or
 * --standalone it also listens on the device's attach socket
 * (/run/ustack/<dev>.<netns inode>.sock) and gives every client process tree that asks a
 * region of its own (docs/shm.md "Attaching"). A region is closed when its liveness pipe
 * reads end-of-file (its last client is gone); a spawned ustackd exits, closing connections
 * first, when its last region is gone or on SIGTERM; a standalone one only on SIGTERM.
 * Spawned by libustack.so, its stdout is the application's: there it prints the ready line
 * and the final statistics only with USTACK_LOG=info or more (SIGUSR1 always).
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
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "dio.h"
#include "log.h"
#include "shm.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: ustackd [--echo PORT] [--discard PORT] [--source PORT]"
               " [--shm-fd N --pipe-fd R | --standalone]\n"
               "  configured by USTACK_DEV, USTACK_IP, USTACK_GW, USTACK_CORES, USTACK_EAL, ...\n"
               "  (see docs/configuration.md; --shm-fd/--pipe-fd, --standalone: docs/shm.md)\n");
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
    char ip[16], ip6[64] = "", a6[46];
    static const uint8_t zero16[16];
    if (memcmp(c->ip6, zero16, 16) != 0)
        snprintf(ip6, sizeof(ip6), " ip6=%s/%u", shim_ip6_str(c->ip6, a6), c->ip6_prefix);
    if (print) {
        printf("ustackd: ready ip=%s/%u%s %s\n", shim_ip_str(c->ip, ip), c->prefix, ip6,
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

static void print_stats(struct dio_stack *s, struct dio_shmset *set)
{
    dio_stack_print_stats(s, stdout, "ustackd: stats");
    if (set)
        dio_shmset_print_stats(set, stdout, "ustackd: stats");
    printf("ustackd: stats end\n");
    fflush(stdout);
}

/* ---- Regions ------------------------------------------------------------------------- */

/* One region served: the spawner's (its fds inherited, the wake eventfds the spawner's
 * numbers) or one made for an attaching client (every fd ours). */
struct region {
    struct dio_shm *srv;
    int memfd, pipe_fd; /* the liveness pipe's read end */
    int wake[SHM_MAX_CORES];
    unsigned nwake;
};

#define MAX_REGIONS DIO_SHM_MAX_REGIONS
static struct region regions[MAX_REGIONS];
static unsigned nregions;

static void region_free(struct region *r)
{
    dio_shm_close(r->srv);
    if (r->memfd >= 0)
        close(r->memfd);
    if (r->pipe_fd >= 0)
        close(r->pipe_fd);
    for (unsigned c = 0; c < r->nwake; c++)
        close(r->wake[c]);
}

/* Region k's last client is gone: its sockets are closed (as at our exit, only for it) and,
 * once every core let go of it, it is freed. */
static void region_drop(struct dio_stack *s, struct dio_shmset *set, unsigned k)
{
    struct region *r = &regions[k];
    dio_shm_gone(r->srv);
    if (dio_shmset_remove(set, s, r->srv)) {
        /* A core never answered: it may still touch the region, so it stays mapped. */
        SHIM_WARN("a stack core did not let go of a region; it stays mapped");
    } else {
        region_free(r);
    }
    regions[k] = regions[--nregions];
}

/* ---- The attach socket (docs/shm.md "Start-up") ---------------------------------------- */

static char sock_path[108];
static int listen_fd = -1;

static void sock_close(void)
{
    if (listen_fd >= 0) {
        /* Unlinked before the device lock goes: a path without a listener is refused, and
         * the client then spawns. */
        unlink(sock_path);
        close(listen_fd);
        listen_fd = -1;
    }
}

/* Binds the attach socket next to the device lock (which the caller holds, so a stale file
 * of a dead ustackd may be replaced). A path (not the abstract namespace) so that its mode
 * says who may attach: owner and group, as the lock directory's owner runs ustackd. */
static int sock_open(const struct shim_conf *c, char *err, size_t errlen)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (shm_run_path(c->dev, ".sock", sock_path, sizeof(sa.sun_path))) {
        snprintf(err, errlen, "USTACK_DEV=%.64s: too long for an attach socket path", c->dev);
        return -ENAMETOOLONG;
    }
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", sock_path);
    int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        snprintf(err, errlen, "attach socket: %s", strerror(errno));
        return -errno;
    }
    unlink(sock_path);
    mode_t old = umask(0117);
    int rc = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
    umask(old);
    if (rc < 0 || listen(fd, 64) < 0) {
        snprintf(err, errlen, "attach socket %s: %s", sock_path, strerror(errno));
        rc = -errno;
        close(fd);
        return rc;
    }
    listen_fd = fd;
    return 0;
}

static int make_region(const struct shim_conf *conf, const struct shm_attach_req *q,
                       struct region *r, char *err, size_t errlen)
{
    struct shm_geometry g = {conf->ncores, q->nsocks, 4096, q->ring_size, SHM_NPROCS};
    uint64_t size = shm_region_size(&g);
    *r = (struct region){.memfd = -1, .pipe_fd = -1};
    if (!size) {
        snprintf(err, errlen, "no valid region for %u sockets and %u-byte rings", q->nsocks,
                 q->ring_size);
        return -EINVAL;
    }
    int p[2] = {-1, -1};
    r->memfd = memfd_create("ustack", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    void *base = MAP_FAILED;
    if (r->memfd < 0 || ftruncate(r->memfd, (off_t)size) < 0 ||
        (base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, r->memfd, 0)) == MAP_FAILED)
        goto sys;
    shm_region_init(base, &g);
    for (unsigned c = 0; c < conf->ncores; c++) {
        int e = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (e < 0)
            goto sys;
        r->wake[r->nwake++] = e;
        shm_cmdq(base, c)->wake_fd = e; /* ours; the client writes its own numbers */
    }
    munmap(base, size);
    base = MAP_FAILED;
    if (pipe2(p, O_CLOEXEC) < 0)
        goto sys;
    r->pipe_fd = p[0];
    int rc = dio_shm_open(r->memfd, conf->ncores, &r->srv, err, errlen);
    if (rc) {
        close(p[1]);
        region_free(r);
        return rc;
    }
    return p[1];
sys:
    rc = -errno;
    snprintf(err, errlen, "cannot make a %llu-byte region: %s", (unsigned long long)size,
             strerror(errno));
    if (base != MAP_FAILED)
        munmap(base, size);
    region_free(r);
    return rc;
}

static void send_reply(int fd, int status, const char *msg, const int *fds, unsigned nfds)
{
    struct shm_attach_rep rep;
    memset(&rep, 0, sizeof(rep));
    rep.magic = SHM_ATTACH_MAGIC;
    rep.status = status;
    rep.nfds = nfds;
    rep.pid = (int32_t)getpid();
    snprintf(rep.err, sizeof(rep.err), "%s", msg ? msg : "");
    struct iovec iov = {&rep, sizeof(rep)};
    union {
        char buf[CMSG_SPACE(sizeof(int) * (SHM_MAX_CORES + 2))];
        struct cmsghdr align;
    } u;
    struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1};
    if (nfds) {
        m.msg_control = u.buf;
        m.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
        struct cmsghdr *cm = CMSG_FIRSTHDR(&m);
        cm->cmsg_level = SOL_SOCKET;
        cm->cmsg_type = SCM_RIGHTS;
        cm->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
        memcpy(CMSG_DATA(cm), fds, sizeof(int) * nfds);
    }
    if (sendmsg(fd, &m, MSG_NOSIGNAL) < 0) {
        /* The client gave up; a region it got no pipe end of reads EOF and goes. */
    }
}

/* Is the client's configuration one this stack serves? */
static int compatible(const struct shim_conf *c, const struct shm_attach_req *q, char *err,
                      size_t errlen)
{
    char a[16], b[16];
    if (strncmp(q->dev, c->dev, sizeof(q->dev)) != 0) {
        snprintf(err, errlen, "ustackd pid %ld serves USTACK_DEV=%.100s, not %.100s",
                 (long)getpid(), c->dev, q->dev);
        return -EINVAL;
    }
    if (q->ip != c->ip || q->prefix != c->prefix) {
        snprintf(err, errlen, "ustackd pid %ld serves USTACK_IP=%s/%u, not %s/%u", (long)getpid(),
                 shim_ip_str(c->ip, a), c->prefix, shim_ip_str(q->ip, b), q->prefix);
        return -EINVAL;
    }
    bool same = q->ncores == c->ncores;
    for (unsigned i = 0; same && i < c->ncores; i++)
        same = q->cores[i] == c->cores[i];
    if (!same) {
        snprintf(err, errlen,
                 "ustackd pid %ld serves other USTACK_CORES (%u cores); attach with the same "
                 "setting",
                 (long)getpid(), c->ncores);
        return -EINVAL;
    }
    return 0;
}

/* One attach request: a new region for the client, or a one-line reason. */
/* Nonzero while a spawned ustackd whose programs are all gone waits (control_loop): when it
 * stops waiting at the latest (CLOCK_MONOTONIC ms). linger_abandon: a newcomer wants the
 * device with another configuration. */
static int64_t linger_end;
static bool linger_abandon;

static void serve_attach(struct dio_stack *s, struct dio_shmset *set, const struct shim_conf *conf)
{
    int fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
    if (fd < 0)
        return;
    struct timeval tv = {2, 0}; /* a client that connects and says nothing is not waited for */
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    struct shm_attach_req q;
    char err[400];
    ssize_t n = recv(fd, &q, sizeof(q), 0);
    if (n != (ssize_t)sizeof(q) || q.magic != SHM_ATTACH_MAGIC || q.version != SHM_ATTACH_VERSION) {
        send_reply(fd, -EPROTO, "not a ustack attach request of this version", NULL, 0);
        close(fd);
        return;
    }
    q.dev[sizeof(q.dev) - 1] = 0;
    int rc = compatible(conf, &q, err, sizeof(err));
    if (rc < 0 && linger_end) {
        /* We only wait for closed connections: they are reset now, and the client, told
         * nothing, spawns its own ustackd, which finds us stopping and waits for the
         * device (docs/shm.md "Start-up, inheritance, exit"). */
        SHIM_INFO("a client wants the device with another configuration (%s): stopping", err);
        linger_abandon = true;
        dio_dev_lock_stopping();
        close(fd);
        return;
    }
    if (rc == 0 && nregions == MAX_REGIONS) {
        snprintf(err, sizeof(err), "ustackd pid %ld serves %d regions already", (long)getpid(),
                 MAX_REGIONS);
        rc = -EMFILE;
    }
    struct region r;
    int pw = -1;
    if (rc == 0 && (pw = rc = make_region(conf, &q, &r, err, sizeof(err))) >= 0) {
        rc = dio_shmset_add(set, s, r.srv, err, sizeof(err));
        if (rc) {
            close(pw);
            region_free(&r);
        }
    }
    if (rc < 0) {
        send_reply(fd, rc, err, NULL, 0);
        close(fd);
        return;
    }
    struct ucred cred;
    socklen_t clen = sizeof(cred);
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) == 0)
        dio_shm_set_owner(r.srv, (uint32_t)cred.uid);
    dio_shm_ready(r.srv);
    regions[nregions++] = r;
    int fds[SHM_MAX_CORES + 2];
    fds[0] = r.memfd;
    fds[1] = pw;
    for (unsigned c = 0; c < r.nwake; c++)
        fds[2 + c] = r.wake[c];
    send_reply(fd, 0, NULL, fds, 2 + r.nwake);
    /* The client's copy of the write end is now the only one (if it got it): when its
     * process tree is gone, the pipe reads EOF and the region goes. */
    close(pw);
    close(fd);
}

/* Waits for a reason to stop: SIGTERM/SIGINT, or (unless standalone) the last region gone
 * (every client of every region is gone). SIGUSR1 prints statistics. A region whose
 * liveness pipe reads EOF is closed and freed; attach requests make new ones. When a client
 * process exits (its pidfd, in dio_shm_watch_fd) and once a second, what dead clients held
 * is reclaimed, region by region: their reply slots, and their sockets (closed when no other
 * process holds them). */
/* How long a spawned ustackd whose programs have all exited waits for their connections to
 * deliver what they hold (docs/shm.md "Start-up, inheritance, exit"). */
#define LINGER_MS 60000

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Connections of every core still in their peer's conversation (stk_delivering). */
static unsigned stack_delivering(struct dio_stack *s)
{
    unsigned n = 0;
    for (unsigned i = 0; i < dio_stack_ncores(s); i++) {
        struct stk_counters k;
        struct dio_counters d;
        if (dio_stack_counters(s, i, &k, &d) == 0)
            n += stk_delivering(&k);
    }
    return n;
}

static void control_loop(struct dio_stack *s, struct dio_shmset *set, const struct shim_conf *conf,
                         bool standalone, sigset_t *set_sig)
{
    int sfd = signalfd(-1, set_sig, SFD_CLOEXEC);
    if (sfd < 0)
        SHIM_WARN("signalfd: %s (polling for signals instead)", strerror(errno));
    static struct pollfd p[2 + 2 * MAX_REGIONS];
    int64_t idle_end = 0;
    for (;;) {
        /* Spawned, and the last client of the last region is gone: the connections its
         * programs closed may still hold data for a slow peer, which the kernel would go on
         * sending after the program's exit. Wait for them, still taking attaches, up to
         * LINGER_MS; then the stop resets what is left. */
        if (set && !standalone && nregions == 0) {
            /* Also USTACK_STACKD_IDLE_MS for the next program of a script (`curl; curl`)
             * to attach instead of starting another ustackd. */
            int64_t now = mono_ms();
            if (!linger_end) {
                linger_end = now + LINGER_MS;
                idle_end = now + conf->stackd_idle_ms;
            }
            unsigned busy = stack_delivering(s);
            if ((!busy && now >= idle_end) || now >= linger_end || linger_abandon) {
                if (busy)
                    SHIM_INFO("stopping with %u connections still delivering (reset)", busy);
                break;
            }
        } else {
            linger_end = 0;
        }
        unsigned np = 0;
        p[np++] = (struct pollfd){.fd = sfd, .events = POLLIN};
        p[np++] = (struct pollfd){.fd = listen_fd, .events = POLLIN};
        unsigned nr = nregions;
        for (unsigned k = 0; k < nr; k++) {
            p[np++] = (struct pollfd){.fd = regions[k].pipe_fd, .events = POLLIN};
            p[np++] = (struct pollfd){.fd = dio_shm_watch_fd(regions[k].srv), .events = POLLIN};
        }
        /* Without a signalfd, signals are polled for between short waits. */
        int n = poll(p, np, sfd < 0 || linger_end ? 100 : set ? 1000 : -1);
        if (n < 0 && errno != EINTR)
            break;
        for (unsigned k = 0; k < nr; k++)
            dio_shm_reap(regions[k].srv);
        int sig = 0;
        if (sfd >= 0 && n > 0 && (p[0].revents & POLLIN)) {
            struct signalfd_siginfo si;
            if (read(sfd, &si, sizeof(si)) == (ssize_t)sizeof(si))
                sig = (int)si.ssi_signo;
        } else if (sfd < 0) {
            struct timespec zero = {0, 0};
            sig = sigtimedwait(set_sig, NULL, &zero);
        }
        if (sig == SIGUSR1)
            print_stats(s, set);
        else if (sig > 0 && sig != SIGHUP)
            break;
        if (n <= 0)
            continue;
        /* From the last, so that dropping one (moved from the end) does not skip another. */
        for (unsigned k = nr; k-- > 0;) {
            if (!(p[2 + 2 * k].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            /* Clients never write; anything read is drained, and 0 is the end. */
            char buf[256];
            ssize_t r = read(regions[k].pipe_fd, buf, sizeof(buf));
            if (r == 0 || (r < 0 && errno != EINTR && errno != EAGAIN))
                region_drop(s, set, k);
        }
        if (listen_fd >= 0 && (p[1].revents & POLLIN))
            serve_attach(s, set, conf);
    }
    if (sfd >= 0)
        close(sfd);
}

int main(int argc, char **argv)
{
    static struct dio_services svc;
    shim_log_setup("ustackd", SHIM_LOG_WARN);
    int pipe_fd = -1;
    bool standalone = false;
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
        else if (!strcmp(a, "--standalone")) {
            standalone = true;
            continue;
        } else if (!strcmp(a, "--shm-fd") || !strcmp(a, "--pipe-fd")) {
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
    if (shm && standalone) {
        SHIM_ERR("--standalone serves attaching clients only (no --shm-fd)");
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
    /* A program bounding its address space (`ulimit -v`, RLIMIT_AS) hands the bound to the
     * ustackd it spawns, which maps every region whole and the EAL's memory: lift it (root
     * may), or the EAL's start fails with a misleading message. */
    struct rlimit as;
    if (getrlimit(RLIMIT_AS, &as) == 0 && as.rlim_cur != RLIM_INFINITY) {
        struct rlimit up = {RLIM_INFINITY, RLIM_INFINITY};
        if (setrlimit(RLIMIT_AS, &up) < 0) { /* not privileged: up to the hard bound */
            up = (struct rlimit){as.rlim_max, as.rlim_max};
            (void)setrlimit(RLIMIT_AS, &up);
            if (as.rlim_max != RLIM_INFINITY)
                SHIM_WARN("an RLIMIT_AS of %llu MiB was inherited and cannot be lifted; starting "
                          "the device may fail for it",
                          (unsigned long long)(as.rlim_max >> 20));
        }
    }
    /* Signals are taken synchronously by this (control) thread; block them before EAL
     * starts its threads, which inherit the mask. */
    sigset_t set_sig;
    control_signals(&set_sig);
    pthread_sigmask(SIG_BLOCK, &set_sig, NULL);
    signal(SIGPIPE, SIG_IGN);

    /* Serving regions (spawned, or standalone): take the device first and open the attach
     * socket at once, so that clients starting now queue on it while the EAL starts. A
     * spawned ustackd that finds the device taken tells its spawner to attach instead. */
    bool serve = shm || standalone;
    if (serve) {
        int lrc = dio_dev_lock(conf.dev, err, sizeof(err));
        if (lrc == -EBUSY && shm) {
            SHIM_INFO("%s", err);
            dio_shm_busy(shm_fd, err);
            return 1;
        }
        if (lrc)
            return fail("%s", err);
        if (sock_open(&conf, err, sizeof(err))) {
            if (standalone)
                return fail("%s", err);
            SHIM_WARN("%s (no attaching)", err);
        }
        atexit(sock_close);
    }

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
    struct dio_shmset *set = NULL;
    if (serve) {
        int rc = dio_shmset_create(conf.ncores, &svc_app, &set);
        if (rc == 0 && srv)
            rc = dio_shmset_add(set, NULL, srv, err, sizeof(err));
        else if (rc)
            snprintf(err, sizeof(err), "region set: %s", strerror(-rc));
        if (rc) {
            dio_eal_cleanup();
            dio_shm_close(srv);
            return fail("%s", err);
        }
        if (srv)
            regions[nregions++] = (struct region){.srv = srv, .memfd = shm_fd, .pipe_fd = pipe_fd};
    }
    sc.app = set ? dio_shmset_app(set) : svc_app;
    struct dio_stack *s = NULL;
    if (dio_port_find(conf.dev, &sc.port_id, err, sizeof(err)) ||
        dio_stack_create(&sc, &s, err, sizeof(err)) || dio_stack_start(s, err, sizeof(err))) {
        if (s)
            dio_stack_destroy(s);
        dio_eal_cleanup();
        dio_shm_close(srv);
        dio_shmset_free(set);
        return fail("%s", err);
    }
    bool verbose = !shm || conf.log_level >= SHIM_LOG_INFO;
    /* Telemetry is a window for tools, not a reason to refuse to serve. */
    if (dio_telemetry_attach(s, set, &conf))
        SHIM_WARN("telemetry commands could not be registered");
    report_ready(&conf, s, verbose);
    if (srv)
        dio_shm_ready(srv);

    control_loop(s, set, &conf, standalone, &set_sig);
    dio_dev_lock_stopping();

    /* No new clients; the present ones stop waiting for us first; then the cores close what
     * is open. */
    sock_close();
    for (unsigned k = 0; k < nregions; k++)
        dio_shm_gone(regions[k].srv);
    dio_telemetry_detach();
    dio_stack_stop(s, 1000);
    if (verbose) {
        print_stats(s, set);
        printf("ustackd: stopped\n");
        fflush(stdout);
    }
    dio_stack_destroy(s);
    dio_eal_cleanup();
    for (unsigned k = 0; k < nregions; k++)
        region_free(&regions[k]);
    dio_shmset_free(set);
    return 0;
}

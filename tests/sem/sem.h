/* tests/sem/sem.h - shared helpers of the socket-semantics tests (header only).
 *
 * Every tests/sem/sem_<topic>.c includes this file and nothing else of the project: the
 * programs are plain C11 + POSIX so that the very same binary runs once on the kernel and
 * once under LD_PRELOAD=libustack.so, with the same expectations.
 *
 * Environment: SEM_PEER (IPv4 of the kernel-side sem_peer), SEM_SELF (the address this
 * side's listeners bind and the peer connects back to), SEM_PORT_BASE (the peer's first
 * port; our own listeners use SEM_PORT_BASE + 100 + 20 * program id + k), SEM_WATCHDOG
 * (seconds before a hung program bails out, default 60).
 *
 * Output is TAP: "ok N - name" or "not ok N - name: why", then "1..N"; the exit status is 1
 * if any case failed. A case is a function that returns at its first failed CHECK; every fd
 * it registered with sem_track() is closed by the runner afterwards.
 */
#ifndef SEM_H
#define SEM_H

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

/* The peer's services, as offsets from SEM_PORT_BASE (see sem_peer.c). */
#define SEM_P_ECHO    0
#define SEM_P_DISCARD 1
#define SEM_P_SINK    2
#define SEM_P_RESET   3
#define SEM_P_CLOSE   4
#define SEM_P_BULK    5
#define SEM_P_HOLD    6
#define SEM_P_NONE    8 /* nothing listens there: connects are refused */
#define SEM_P_CTL     9
#define SEM_PU_TOS    1 /* UDP: answers each datagram with the TOS / traffic class it came with */
#define SEM_PU_BCAST  2 /* UDP: sends each datagram back to the sender's port as a broadcast */

#define SEM_RESET_AFTER 100       /* the reset server reads this many bytes, then RSTs */
#define SEM_BULK_BYTES  (1 << 20) /* what the bulk server sends before its FIN */

static struct in_addr sem_peer_ip, sem_self_ip;
static int sem_port_base = 7000;
static int sem_prog_id;
static const char *sem_prog = "sem";

static int sem_ncase, sem_nfail, sem_case_failed;
static const char *volatile sem_cur = "(start-up)";
static char sem_why[1024];
static int sem_tracked[128];
static int sem_ntracked;
static volatile sig_atomic_t sem_sigpipes;

/* ------------------------------------------------------------------ errors and checks */

static inline const char *sem_ename(int e)
{
    static __thread char buf[32];
    const char *n = e ? strerrorname_np(e) : "0";
    if (n)
        return n;
    snprintf(buf, sizeof buf, "errno%d", e);
    return buf;
}

/* Records the first failure of the current case; errno is that of the failed call. */
static inline void sem__fail(int line, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static inline void sem__fail(int line, int err, const char *fmt, ...)
{
    if (sem_case_failed)
        return;
    sem_case_failed = 1;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(sem_why, sizeof sem_why, fmt, ap);
    va_end(ap);
    if (n >= 0 && (size_t)n < sizeof sem_why)
        snprintf(sem_why + n, sizeof sem_why - n, " [line %d, errno %s]", line, sem_ename(err));
}

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            int e_ = errno;                                                                        \
            sem__fail(__LINE__, e_, __VA_ARGS__);                                                  \
            return;                                                                                \
        }                                                                                          \
    } while (0)

/* A call that must fail with one errno. */
#define CHECK_ERR(expr, err)                                                                       \
    do {                                                                                           \
        errno = 0;                                                                                 \
        long r_ = (long)(expr);                                                                    \
        int e_ = errno;                                                                            \
        if (r_ != -1 || e_ != (err)) {                                                             \
            sem__fail(__LINE__, e_, "%s: want -1/%s, got %ld", #expr, sem_ename(err), r_);         \
            return;                                                                                \
        }                                                                                          \
    } while (0)

/* A call that must succeed (return >= 0). */
#define CHECK_OK(expr)                                                                             \
    do {                                                                                           \
        errno = 0;                                                                                 \
        long r_ = (long)(expr);                                                                    \
        int e_ = errno;                                                                            \
        if (r_ < 0) {                                                                              \
            sem__fail(__LINE__, e_, "%s failed", #expr);                                           \
            return;                                                                                \
        }                                                                                          \
    } while (0)

/* ------------------------------------------------------------------ time */

static inline double sem_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static inline void sem_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
        ;
}

/* Waits up to ms for child pid: its exit status, 128 + the signal that ended it, or -1
 * when it was still running (it is then killed and reaped). */
static inline int sem_wait_child(pid_t pid, int ms)
{
    int st = 0;
    double end = sem_ms() + ms;
    while (waitpid(pid, &st, WNOHANG) == 0) {
        if (sem_ms() > end) {
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
            return -1;
        }
        sem_sleep_ms(10);
    }
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* ------------------------------------------------------------------ fd tracking */

static inline int sem_track(int fd)
{
    if (fd >= 0 && sem_ntracked < (int)(sizeof sem_tracked / sizeof sem_tracked[0]))
        sem_tracked[sem_ntracked++] = fd;
    return fd;
}

static inline void sem_untrack(int fd)
{
    for (int i = 0; i < sem_ntracked; i++)
        if (sem_tracked[i] == fd)
            sem_tracked[i] = -1;
}

static inline int sem_close(int fd)
{
    sem_untrack(fd);
    return close(fd);
}

/* ------------------------------------------------------------------ runner */

static inline void *sem__watchdog(void *arg)
{
    long secs = (long)(intptr_t)arg;
    sleep((unsigned)secs);
    printf("not ok %d - %s: watchdog: no progress for %ld s\nBail out! %s hung in '%s'\n",
           sem_ncase, sem_cur, secs, sem_prog, sem_cur);
    fflush(stdout);
    _exit(3);
    return NULL;
}

static inline void sem__on_sigpipe(int sig)
{
    (void)sig;
    sem_sigpipes++;
}

static inline int sem__env_ip(const char *name, const char *def, struct in_addr *out)
{
    const char *v = getenv(name);
    if (!v || !*v)
        v = def;
    if (inet_pton(AF_INET, v, out) != 1) {
        fprintf(stderr, "%s: %s='%s' is not an IPv4 address\n", sem_prog, name, v);
        return -1;
    }
    return 0;
}

/* Reads the environment, starts the watchdog (a thread with every signal blocked, so the
 * signals the tests raise never land there) and counts SIGPIPE instead of dying of it. */
static inline void sem_init(const char *prog, int id)
{
    sem_prog = prog;
    sem_prog_id = id;
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (sem__env_ip("SEM_PEER", "198.18.50.1", &sem_peer_ip) ||
        sem__env_ip("SEM_SELF", "198.18.50.2", &sem_self_ip))
        exit(2);
    const char *pb = getenv("SEM_PORT_BASE");
    if (pb && *pb)
        sem_port_base = atoi(pb);
    if (sem_port_base < 1024 || sem_port_base > 60000) {
        fprintf(stderr, "%s: SEM_PORT_BASE=%s: want 1024..60000\n", prog, pb);
        exit(2);
    }
    const char *wd = getenv("SEM_WATCHDOG");
    long secs = wd && *wd ? atol(wd) : 60;
    if (secs <= 0)
        secs = 60;

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = sem__on_sigpipe;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGPIPE, &sa, NULL);

    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pthread_t t;
    if (pthread_create(&t, NULL, sem__watchdog, (void *)(intptr_t)secs) == 0)
        pthread_detach(t);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
}

static inline void sem_run(const char *name, void (*fn)(void))
{
    sem_cur = name;
    sem_ncase++;
    sem_case_failed = 0;
    sem_ntracked = 0;
    errno = 0;
    fn();
    for (int i = 0; i < sem_ntracked; i++)
        if (sem_tracked[i] >= 0)
            close(sem_tracked[i]);
    sem_ntracked = 0;
    if (sem_case_failed) {
        sem_nfail++;
        printf("not ok %d - %s: %s\n", sem_ncase, name, sem_why);
    } else {
        printf("ok %d - %s\n", sem_ncase, name);
    }
    fflush(stdout);
}

#define SEM_RUN(fn) sem_run(#fn, fn)

static inline int sem_done(void)
{
    printf("1..%d\n", sem_ncase);
    printf("# %s: %d passed, %d failed\n", sem_prog, sem_ncase - sem_nfail, sem_nfail);
    fflush(stdout);
    return sem_nfail ? 1 : 0;
}

/* ------------------------------------------------------------------ addresses and sockets */

static inline struct sockaddr_in sem_sin(struct in_addr ip, int port)
{
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr = ip;
    a.sin_port = htons((uint16_t)port);
    return a;
}

static inline struct sockaddr_in sem_peer_addr(int off)
{
    return sem_sin(sem_peer_ip, sem_port_base + off);
}

/* Our own listener ports: a range per program, so no two programs share a port. */
static inline int sem_lport(int k)
{
    return sem_port_base + 100 + 20 * sem_prog_id + k;
}

/* An address on the peer's subnet that nobody answers (ARP fails after ~3 s on Linux). */
static inline struct in_addr sem_unreach(int k)
{
    struct in_addr a = sem_peer_ip;
    a.s_addr = htonl((ntohl(a.s_addr) & 0xffffff00u) | (uint32_t)(200 + k));
    return a;
}

static inline int sem_tcp(int flags)
{
    return sem_track(socket(AF_INET, SOCK_STREAM | flags, 0));
}

/* A tracked, connected socket to one of the peer's services, or -1 with errno. */
static inline int sem_connect_peer(int off)
{
    int fd = sem_tcp(0);
    if (fd < 0)
        return -1;
    struct sockaddr_in a = sem_peer_addr(off);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
        int e = errno;
        sem_close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

/* A tracked listener on SEM_SELF:sem_lport(k), with SO_REUSEADDR. */
static inline int sem_listen_self(int k, int flags)
{
    int fd = sem_tcp(flags);
    if (fd < 0)
        return -1;
    int one = 1;
    struct sockaddr_in a = sem_sin(sem_self_ip, sem_lport(k));
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
        bind(fd, (struct sockaddr *)&a, sizeof a) < 0 || listen(fd, 16) < 0) {
        int e = errno;
        sem_close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

static inline int sem_port_of(int fd, int peer)
{
    struct sockaddr_in a;
    socklen_t l = sizeof a;
    int r = peer ? getpeername(fd, (struct sockaddr *)&a, &l)
                 : getsockname(fd, (struct sockaddr *)&a, &l);
    return r < 0 ? -1 : ntohs(a.sin_port);
}

/* poll() one fd; returns revents, 0 on timeout, -1 on error. */
static inline int sem_wait_fd(int fd, short events, int ms)
{
    struct pollfd p = {fd, events, 0};
    int r = poll(&p, 1, ms);
    return r < 0 ? -1 : r == 0 ? 0 : p.revents;
}

/* Fills a connection's send buffer towards the sink (which never reads) with non-blocking
 * sends, until four sends 300 ms apart all say EAGAIN: ACKs keep freeing room and growing
 * the buffer for a while after the first EAGAIN. The socket is left as it was (blocking or
 * not). Returns the bytes queued, or -1 with errno. */
static inline long sem_fill_sndbuf(int fd)
{
    static char buf[65536];
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
        return -1;
    long total = 0;
    int eagains = 0, err = ETIMEDOUT;
    double end = sem_ms() + 15000;
    /* ustack moves bytes on asynchronously (its ring into the engine), which on a loaded
     * machine can find room again after two EAGAINs. */
    while (eagains < 4 && sem_ms() < end) {
        ssize_t n = send(fd, buf, sizeof buf, MSG_NOSIGNAL);
        if (n > 0) {
            total += n;
            eagains = 0;
        } else if (n < 0 && errno == EAGAIN) {
            if (++eagains < 4)
                sem_sleep_ms(300);
        } else {
            err = n < 0 ? errno : EPIPE;
            break;
        }
    }
    fcntl(fd, F_SETFL, fl);
    if (eagains < 4) {
        errno = err;
        return -1;
    }
    return total;
}

/* ------------------------------------------------------------------ data */

static inline unsigned char sem_pat(size_t off)
{
    return (unsigned char)(off % 251);
}

static inline void sem_fill(void *buf, size_t off, size_t n)
{
    unsigned char *p = buf;
    for (size_t i = 0; i < n; i++)
        p[i] = sem_pat(off + i);
}

/* Index of the first byte that differs from the pattern at off, or -1. */
static inline long sem_check_pat(const void *buf, size_t off, size_t n)
{
    const unsigned char *p = buf;
    for (size_t i = 0; i < n; i++)
        if (p[i] != sem_pat(off + i))
            return (long)i;
    return -1;
}

/* Writes all of buf (blocking socket); returns n or -1. */
static inline ssize_t sem_write_all(int fd, const void *buf, size_t n)
{
    size_t done = 0;
    while (done < n) {
        ssize_t r = send(fd, (const char *)buf + done, n - done, MSG_NOSIGNAL);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        done += (size_t)r;
    }
    return (ssize_t)n;
}

/* Reads up to n bytes, stopping at EOF; each wait bounded by ms. Returns the count read (short
 * on EOF), or -1 with errno (ETIMEDOUT when no byte came in time). */
static inline ssize_t sem_read_full(int fd, void *buf, size_t n, int ms)
{
    size_t done = 0;
    while (done < n) {
        int ev = sem_wait_fd(fd, POLLIN, ms);
        if (ev == 0) {
            errno = ETIMEDOUT;
            return -1;
        }
        if (ev < 0)
            return -1;
        ssize_t r = recv(fd, (char *)buf + done, n - done, MSG_DONTWAIT);
        if (r < 0 && (errno == EAGAIN || errno == EINTR))
            continue;
        if (r < 0)
            return -1;
        if (r == 0)
            break;
        done += (size_t)r;
    }
    return (ssize_t)done;
}

/* ------------------------------------------------------------------ the peer's connect-back */

/* Asks the peer to connect `count` times to SEM_SELF:port, each after delay_ms, send nbytes
 * of the pattern and then echo until EOF. Returns the tracked control connection: the peer
 * writes "ok <i>" or "err <i> <errno>" after each connect and "eof <i> <echoed>" or
 * "rst <i> <errno>" when that connection ends. */
static inline int sem_ctl(int port, long nbytes, int delay_ms, int count)
{
    int c = sem_connect_peer(SEM_P_CTL);
    if (c < 0)
        return -1;
    char line[128];
    int n = snprintf(line, sizeof line, "connect %d %ld %d %d\n", port, nbytes, delay_ms, count);
    if (sem_write_all(c, line, (size_t)n) < 0) {
        int e = errno;
        sem_close(c);
        errno = e;
        return -1;
    }
    return c;
}

/* One line from the control connection (without the newline): its length, 0 if none came
 * within ms, -1 on EOF or error. */
static inline int sem_ctl_line(int c, char *buf, int len, int ms)
{
    int n = 0;
    double end = sem_ms() + ms;
    while (n < len - 1) {
        int left = (int)(end - sem_ms());
        if (left < 0)
            left = 0;
        int ev = sem_wait_fd(c, POLLIN, left);
        if (ev == 0) {
            buf[n] = 0;
            return 0;
        }
        char ch;
        ssize_t r = recv(c, &ch, 1, MSG_DONTWAIT);
        if (r < 0 && (errno == EAGAIN || errno == EINTR))
            continue;
        if (r <= 0)
            return -1;
        if (ch == '\n')
            break;
        buf[n++] = ch;
    }
    buf[n] = 0;
    return n > 0 ? n : 1;
}

/* Accepts one connection on lfd within ms (the listener may be blocking or not). */
static inline int sem_accept_within(int lfd, int ms)
{
    if (sem_wait_fd(lfd, POLLIN, ms) <= 0) {
        errno = ETIMEDOUT;
        return -1;
    }
    return sem_track(accept(lfd, NULL, NULL));
}

#endif

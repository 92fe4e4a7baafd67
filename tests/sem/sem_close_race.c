/* tests/sem/sem_close_race.c - a call racing the close of its fd in another thread.
 *
 * Linux pins the open file for the length of a system call (fdget/fdput): a send() or
 * recv() that races a close() (or a dup2() onto its number) in another thread either works
 * on the old socket, or, once the number is gone, fails with EBADF (nothing there) or
 * ENOTSOCK (something else there). It never reaches a socket created afterwards.
 *
 * Thread A hammers fd X (connected to the peer's echo) with non-blocking sends of 'A'
 * bytes and receives, every other receive blocking (20 ms SO_RCVTIMEO); thread B takes X away (dup2
 * of /dev/null onto it, or close and then /dev/null parked on the number so that no new socket can
 * get it), at once creates a new socket N connected to the echo as well, sends 'B' bytes, shuts
 * down writing and reads everything back until EOF. Checked: N's echo holds exactly B's bytes (A's
 * never landed in N, and A's receives never took N's), A's receives saw only 'A', and A's calls
 * either succeeded or failed with EAGAIN, EBADF or ENOTSOCK. Bounded in iterations and time.
 *
 * Under ustack the program asks for a region of 16 socket slots (USTACK_SHM_SOCKS, which
 * the kernel ignores) and holds 15 sockets open, so that X and N take turns in the same
 * slot: N's socket() gets its slot the moment the stack has freed X's. */
#include "sem.h"

#include <stdatomic.h>
#include <sys/syscall.h>

#define RACE_ITERS  800
#define RACE_SECS   25
#define RACE_HOLD   15
#define RACE_BBYTES 200

struct race {
    _Atomic int xfd;   /* what A works on (-1: nothing) */
    _Atomic int epoch; /* B bumps it whenever xfd changes */
    _Atomic int seen;  /* A: the epoch of its last finished pass */
    _Atomic int stop;
    _Atomic long ncalls; /* A: calls started on a socket */
    /* A's findings (first one kept) */
    _Atomic int bad;
    char why[200];
    long sends, recvs, sent_bytes, errs[4]; /* errs: EAGAIN, EBADF, ENOTSOCK, other */
};

static void race_bad(struct race *r, const char *fmt, long a, long b)
{
    int zero = 0;
    if (atomic_compare_exchange_strong(&r->bad, &zero, 1))
        snprintf(r->why, sizeof r->why, fmt, a, b);
}

static void count_err(struct race *r, int e)
{
    if (e == EAGAIN)
        r->errs[0]++;
    else if (e == EBADF)
        r->errs[1]++;
    else if (e == ENOTSOCK)
        r->errs[2]++;
    else {
        r->errs[3]++;
        race_bad(r, "thread A: a call failed with errno %ld (fd %ld)", e, atomic_load(&r->xfd));
    }
}

static void *hammer(void *arg)
{
    struct race *r = arg;
    static char out[16384], in[16384];
    memset(out, 'A', sizeof out);
    while (!atomic_load(&r->stop)) {
        int ep = atomic_load(&r->epoch);
        int fd = atomic_load(&r->xfd);
        if (fd >= 0) {
            atomic_fetch_add(&r->ncalls, 1);
            ssize_t n = send(fd, out, sizeof out, MSG_DONTWAIT | MSG_NOSIGNAL);
            r->sends++;
            if (n < 0)
                count_err(r, errno);
            else
                r->sent_bytes += n;
            /* Every other pass a blocking receive (bounded by X's SO_RCVTIMEO), which is
             * often still waiting when X is taken away: the kernel lets it wait on the old
             * socket until data or the timeout. */
            atomic_fetch_add(&r->ncalls, 1);
            n = recv(fd, in, sizeof in, (r->recvs & 1) ? 0 : MSG_DONTWAIT);
            r->recvs++;
            if (n < 0) {
                count_err(r, errno);
            } else {
                for (ssize_t i = 0; i < n; i++)
                    if (in[i] != 'A') {
                        race_bad(r, "thread A received byte 0x%02lx at %ld: not its own",
                                 (unsigned char)in[i], i);
                        break;
                    }
            }
        }
        atomic_store(&r->seen, ep);
    }
    return NULL;
}

/* socket(), retried while ustack's 16 slots are all taken (the stack frees a closed
 * socket's slot a moment after close()); the kernel never fails here. */
static int race_socket(void)
{
    double end = sem_ms() + 5000;
    for (;;) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd >= 0 || errno != ENOBUFS || sem_ms() > end)
            return fd;
    }
}

static int race_connect(int fd)
{
    struct sockaddr_in a = sem_peer_addr(SEM_P_ECHO);
    return connect(fd, (struct sockaddr *)&a, sizeof a);
}

static void close_race(void)
{
    static struct race r;
    memset(&r, 0, sizeof r);
    atomic_store(&r.xfd, -1);
    int hold[RACE_HOLD];
    for (int i = 0; i < RACE_HOLD; i++) {
        hold[i] = socket(AF_INET, SOCK_STREAM, 0);
        CHECK(hold[i] >= 0, "holder socket %d", i);
        sem_track(hold[i]);
    }
    int null = sem_track(open("/dev/null", O_RDWR | O_CLOEXEC));
    CHECK(null >= 0, "open /dev/null");
    pthread_t t;
    CHECK(pthread_create(&t, NULL, hammer, &r) == 0, "pthread_create");
    char bb[RACE_BBYTES], got[RACE_BBYTES + 65536];
    memset(bb, 'B', sizeof bb);
    double end = sem_ms() + RACE_SECS * 1000.0;
    int it, fail_line = 0;
    char fail[256] = "";
    for (it = 0; it < RACE_ITERS && sem_ms() < end && !atomic_load(&r.bad); it++) {
        int x = race_socket();
        if (x < 0 || race_connect(x) < 0) {
            snprintf(fail, sizeof fail, "iteration %d: socket/connect X: %s", it, sem_ename(errno));
            fail_line = __LINE__;
            if (x >= 0)
                close(x);
            break;
        }
        struct timeval rt = {0, 20000};
        setsockopt(x, SOL_SOCKET, SO_RCVTIMEO, &rt, sizeof rt);
        long n0 = atomic_load(&r.ncalls);
        atomic_store(&r.xfd, x);
        atomic_fetch_add(&r.epoch, 1);
        /* Let A start a few calls on X (on 2 CPUs A and B may share one), then a moment
         * more (0 to some 50 us), so that X goes away in the middle of one. */
        double wend = sem_ms() + 2000;
        while (atomic_load(&r.ncalls) < n0 + 1 + it % 4 && sem_ms() < wend)
            sched_yield();
        for (volatile int spin = (it * 7919) % 20000; spin > 0; spin--)
            ;
        /* Take X away: the number stays parked on /dev/null until A has moved on. */
        if (it & 1) {
            if (dup2(null, x) < 0) {
                snprintf(fail, sizeof fail, "dup2: %s", sem_ename(errno));
                fail_line = __LINE__;
                break;
            }
        } else {
            close(x);
            if (dup2(null, x) < 0) {
                snprintf(fail, sizeof fail, "dup2 after close: %s", sem_ename(errno));
                fail_line = __LINE__;
                break;
            }
        }
        /* At once, a new socket (under ustack: in X's slot) to the echo. */
        int n = race_socket();
        if (n < 0 || race_connect(n) < 0) {
            snprintf(fail, sizeof fail, "iteration %d: socket/connect N: %s", it, sem_ename(errno));
            fail_line = __LINE__;
            if (n >= 0)
                close(n);
            break;
        }
        struct timeval tv = {5, 0};
        setsockopt(n, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        ssize_t w = send(n, bb, sizeof bb, MSG_NOSIGNAL);
        shutdown(n, SHUT_WR);
        size_t have = 0;
        ssize_t k = 0;
        while (have < sizeof got && (k = recv(n, got + have, sizeof got - have, 0)) > 0)
            have += (size_t)k;
        int rerr = errno;
        close(n);
        long nb = 0, other = 0;
        for (size_t i = 0; i < have; i++)
            nb += got[i] == 'B', other += got[i] != 'B';
        if (w != (ssize_t)sizeof bb || k != 0 || nb != RACE_BBYTES || other) {
            snprintf(fail, sizeof fail,
                     "iteration %d: the new socket's echo: sent %zd, got %zu bytes (%ld of B's, "
                     "%ld others: A's bytes reached it or A took B's), end %zd/%s",
                     it, w, have, nb, other, k, sem_ename(rerr));
            fail_line = __LINE__;
            break;
        }
        /* A lets go of the number before it is freed for the next X. */
        atomic_store(&r.xfd, -1);
        int ep = atomic_fetch_add(&r.epoch, 1) + 1;
        wend = sem_ms() + 5000;
        while (atomic_load(&r.seen) < ep && sem_ms() < wend)
            sched_yield();
        if (atomic_load(&r.seen) < ep) {
            snprintf(fail, sizeof fail, "thread A stuck in a call for 5 s");
            fail_line = __LINE__;
            break;
        }
        close(x); /* the parked /dev/null */
    }
    atomic_store(&r.stop, 1);
    pthread_join(t, NULL);
    printf("# %d iterations; A: %ld sends (%ld bytes), %ld recvs; EAGAIN %ld, EBADF %ld, "
           "ENOTSOCK %ld, other %ld\n",
           it, r.sends, r.sent_bytes, r.recvs, r.errs[0], r.errs[1], r.errs[2], r.errs[3]);
    errno = 0;
    CHECK(!fail_line, "%s (line %d)", fail, fail_line);
    CHECK(!atomic_load(&r.bad), "%s", r.why);
    CHECK(it >= 50, "only %d iterations in %d s", it, RACE_SECS);
    CHECK(r.sent_bytes > 0, "thread A never sent anything");
}

/* Under ustack the region has 16 slots, and a closed socket's slot is freed by the stack
 * after the close returned: the sockets the previous case closed may still hold theirs. Waits
 * (at most ms) until need sockets can exist at once (ENOBUFS until then; the kernel never
 * says it). 0, or -1 with errno. */
static int settle_slots(int need, int ms)
{
    int fds[16], n = 0;
    double end = sem_ms() + ms;
    while (n < need && n < 16) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd >= 0) {
            fds[n++] = fd;
        } else if (errno != ENOBUFS || sem_ms() > end) {
            break;
        } else {
            sem_sleep_ms(20);
        }
    }
    int e = errno, ok = n == need;
    while (n > 0)
        close(fds[--n]);
    errno = e;
    return ok ? 0 : -1;
}

/* sem_connect_peer(off), waiting out ENOBUFS (slots still being freed) for at most ms. */
static int connect_when_free(int off, int ms)
{
    double end = sem_ms() + ms;
    for (;;) {
        int fd = sem_connect_peer(off);
        if (fd >= 0 || errno != ENOBUFS || sem_ms() > end)
            return fd;
        sem_sleep_ms(20);
    }
}

/* A connection from the peer (sending nbytes of the pattern), accepted on our listener k;
 * *ctl gets the control connection that reports the peer's view of it. -1 on failure. */
static int accept_back(int k, long nbytes, int *ctl)
{
    int l = sem_listen_self(k, 0);
    if (l < 0)
        return -1;
    *ctl = sem_ctl(sem_lport(k), nbytes, 0, 1);
    char line[64];
    if (*ctl < 0 || sem_ctl_line(*ctl, line, sizeof line, 5000) <= 0 || strncmp(line, "ok", 2))
        return -1;
    return sem_accept_within(l, 5000);
}

/* syscall(SYS_close, fd) closes a socket like close(fd): libuv (so node.js) closes every fd
 * that way. Each of SYSC_ITERS connections (more than the 16 slots of the region under
 * ustack, so a socket left behind by the raw close runs it out of slots: ENOBUFS for 10 s) echoes a
 * byte and is closed with the raw system call; the number is gone afterwards (EBADF). A
 * connection accepted from the peer's connect-back and closed the same way ends with the
 * peer's EOF (our FIN reached it). */
#define SYSC_ITERS 40
static void raw_syscall_close(void)
{
    CHECK(settle_slots(4, 10000) == 0, "4 sockets at once within 10 s");
    for (int i = 0; i < SYSC_ITERS; i++) {
        int fd = connect_when_free(SEM_P_ECHO, 10000);
        CHECK(fd >= 0, "connection %d to the echo", i);
        char b = (char)('a' + i % 26), back = 0;
        CHECK(send(fd, &b, 1, 0) == 1, "send on connection %d", i);
        CHECK(sem_read_full(fd, &back, 1, 5000) == 1 && back == b, "echo on connection %d", i);
        sem_untrack(fd);
        errno = 0;
        CHECK(syscall(SYS_close, fd) == 0, "syscall(SYS_close) of connection %d", i);
        CHECK_ERR(fcntl(fd, F_GETFD), EBADF);
    }
    char line[128];
    int c, s = accept_back(0, 3, &c);
    CHECK(s >= 0, "the peer's connection");
    char buf[3];
    CHECK(sem_read_full(s, buf, 3, 5000) == 3 && sem_check_pat(buf, 0, 3) < 0, "data");
    sem_untrack(s);
    CHECK(syscall(SYS_close, s) == 0, "syscall(SYS_close) of the accepted socket");
    CHECK(sem_ctl_line(c, line, sizeof line, 5000) > 0 && strncmp(line, "eof 0", 5) == 0,
          "the peer saw '%s', not its EOF", line);
}

/* poll() and select() hold the files they wait on (Linux: the poll table takes a reference
 * to each), so a socket closed by another thread while the call sleeps on it stays open until
 * the call returns: the peer sees no FIN meanwhile, the call is not woken by the close, and
 * its last pass, at the timeout, finds the number gone (poll: POLLNVAL; select: in the read
 * set, as Linux 6.x counts EPOLLNVAL in every set). Then the socket is released and the peer gets
 * its EOF. */
struct poller {
    int fd, rc, err, sel;
    short revents;
    double ms;
};

static void *poll_600ms(void *arg)
{
    struct poller *p = arg;
    struct pollfd pf = {p->fd, POLLIN, 0};
    fd_set r;
    FD_ZERO(&r);
    FD_SET(p->fd, &r);
    struct timeval tv = {0, 600000};
    double t0 = sem_ms();
    p->rc = p->sel ? select(p->fd + 1, &r, NULL, NULL, &tv) : poll(&pf, 1, 600);
    p->err = errno;
    p->ms = sem_ms() - t0;
    p->revents = p->sel ? (short)FD_ISSET(p->fd, &r) : pf.revents;
    return NULL;
}

/* sel: select() instead of poll(). */
static void holds_closed_socket(int sel)
{
    CHECK(settle_slots(4, 10000) == 0, "4 sockets at once within 10 s");
    char line[128];
    int c, s = accept_back(1 + sel, 0, &c);
    CHECK(s >= 0, "the peer's connection");
    struct poller p = {s, -2, 0, sel, 0, 0};
    pthread_t t;
    CHECK(pthread_create(&t, NULL, poll_600ms, &p) == 0, "thread");
    sem_sleep_ms(100); /* the poller is asleep */
    sem_untrack(s);
    int rc = close(s);
    int n = sem_ctl_line(c, line, sizeof line, 250);
    pthread_join(t, NULL);
    errno = 0;
    CHECK(rc == 0, "close");
    CHECK(n == 0, "the peer saw '%s' while the call still held the socket", line);
    errno = p.err;
    if (sel)
        CHECK(p.rc == 1 && p.revents, "select() returned %d, in the read set: %d", p.rc, p.revents);
    else
        CHECK(p.rc == 1 && p.revents == POLLNVAL, "poll() returned %d, revents 0x%x", p.rc,
              (unsigned)p.revents);
    CHECK(p.ms >= 300, "returned after %.0f ms: woken by the close", p.ms);
    CHECK(sem_ctl_line(c, line, sizeof line, 5000) > 0 && strncmp(line, "eof 0", 5) == 0,
          "after the call returned the peer saw '%s', not its EOF", line);
}

static void poll_holds_closed_socket(void)
{
    holds_closed_socket(0);
}

static void select_holds_closed_socket(void)
{
    holds_closed_socket(1);
}

int main(int argc, char **argv)
{
    /* Under ustack: a region of 16 socket slots, so that slots are reused at once (the
     * kernel ignores the variable). libustack.so reads its configuration when it is loaded,
     * so the variable must be in the environment the program starts with: set it and start
     * again. */
    (void)argc;
    if (!getenv("USTACK_SHM_SOCKS")) {
        setenv("USTACK_SHM_SOCKS", "16", 1);
        execv("/proc/self/exe", argv);
        perror("sem_close_race: execv /proc/self/exe");
        return 1;
    }
    sem_init("sem_close_race", 11);
    SEM_RUN(close_race);
    SEM_RUN(raw_syscall_close);
    SEM_RUN(poll_holds_closed_socket);
    SEM_RUN(select_holds_closed_socket);
    return sem_done();
}

/* tests/sem/sem_signal.c - signals during blocking calls: EINTR without SA_RESTART; with it,
 * recv/accept/connect restart, while poll/select/epoll_wait and calls with a socket timeout
 * still fail with EINTR (signal(7)). Every expectation is what Linux does; run.sh proves it
 * by running this on the kernel. */
#include "sem.h"

#include <stdatomic.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <sys/time.h>

static volatile sig_atomic_t alarms;

static void on_alarm(int sig)
{
    (void)sig;
    alarms++;
}

static void install(int restart)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm;
    sa.sa_flags = restart ? SA_RESTART : 0;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGALRM, &sa, NULL);
    alarms = 0;
}

/* One SIGALRM after ms (setitimer: alarm() counts whole seconds). */
static void arm(int ms)
{
    struct itimerval it = {{0, 0}, {ms / 1000, (ms % 1000) * 1000}};
    setitimer(ITIMER_REAL, &it, NULL);
}

static void disarm(void)
{
    struct itimerval it = {{0, 0}, {0, 0}};
    setitimer(ITIMER_REAL, &it, NULL);
}

/* Helper threads block SIGALRM, so that it always interrupts the main thread. */
static int spawn(pthread_t *t, void *(*fn)(void *), void *arg)
{
    sigset_t s, old;
    sigemptyset(&s);
    sigaddset(&s, SIGALRM);
    pthread_sigmask(SIG_BLOCK, &s, &old);
    int r = pthread_create(t, NULL, fn, arg);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return r;
}

struct delayed {
    int fd, ms;
};

static void *send_later(void *arg)
{
    struct delayed *d = arg;
    sem_sleep_ms(d->ms);
    (void)send(d->fd, "late", 4, MSG_NOSIGNAL);
    return NULL;
}

static int set_tmo(int fd, int opt, int ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    return setsockopt(fd, SOL_SOCKET, opt, &tv, sizeof tv);
}

static int fill_sink(int fd)
{
    return sem_fill_sndbuf(fd) < 0 ? -1 : 0;
}

/* ------------------------------------------------------------------ without SA_RESTART */

static void recv_eintr(void)
{
    install(0);
    int fd = sem_connect_peer(SEM_P_ECHO);
    CHECK(fd >= 0, "connect");
    char buf[8];
    arm(200);
    CHECK_ERR(recv(fd, buf, sizeof buf, 0), EINTR);
    CHECK(alarms == 1, "handler ran %d times", (int)alarms);
    arm(200);
    CHECK_ERR(read(fd, buf, sizeof buf), EINTR);
    CHECK(alarms == 2, "handler ran %d times", (int)alarms);
}

/* A signal after part of a MSG_WAITALL read returns the part, not EINTR. */
static void recv_waitall_partial(void)
{
    install(0);
    int fd = sem_connect_peer(SEM_P_ECHO);
    CHECK(fd >= 0, "connect");
    CHECK(send(fd, "12345", 5, 0) == 5, "send");
    char buf[100];
    arm(300);
    ssize_t n = recv(fd, buf, sizeof buf, MSG_WAITALL);
    CHECK(n == 5, "recv MSG_WAITALL interrupted returned %zd, want 5", n);
    CHECK(alarms == 1, "handler ran %d times", (int)alarms);
}

static void accept_eintr(void)
{
    install(0);
    int l = sem_listen_self(0, 0);
    CHECK(l >= 0, "listen");
    arm(200);
    CHECK_ERR(accept(l, NULL, NULL), EINTR);
    CHECK(alarms == 1, "handler ran %d times", (int)alarms);
}

/* An interrupted connect goes on in the background: a non-blocking retry says EALREADY. */
static void connect_eintr(void)
{
    install(0);
    int fd = sem_tcp(0);
    struct sockaddr_in a = sem_sin(sem_unreach(3), sem_port_base);
    arm(200);
    CHECK_ERR(connect(fd, (struct sockaddr *)&a, sizeof a), EINTR);
    CHECK(alarms == 1, "handler ran %d times", (int)alarms);
    CHECK_OK(fcntl(fd, F_SETFL, O_NONBLOCK));
    CHECK_ERR(connect(fd, (struct sockaddr *)&a, sizeof a), EALREADY);
}

static void send_eintr(void)
{
    install(0);
    int fd = sem_connect_peer(SEM_P_SINK);
    CHECK(fd >= 0, "connect to sink");
    CHECK_OK(fill_sink(fd));
    static char buf[65536];
    arm(200);
    CHECK_ERR(send(fd, buf, sizeof buf, 0), EINTR);
    CHECK(alarms == 1, "handler ran %d times", (int)alarms);
}

static void poll_eintr(void)
{
    install(0);
    int fd = sem_connect_peer(SEM_P_ECHO);
    CHECK(fd >= 0, "connect");
    struct pollfd p = {fd, POLLIN, 0};
    arm(200);
    CHECK_ERR(poll(&p, 1, 5000), EINTR);
    CHECK(alarms == 1, "handler ran %d times", (int)alarms);
}

static void epoll_eintr(void)
{
    install(0);
    int fd = sem_connect_peer(SEM_P_ECHO);
    CHECK(fd >= 0, "connect");
    int ep = sem_track(epoll_create1(EPOLL_CLOEXEC));
    CHECK(ep >= 0, "epoll_create1");
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};
    CHECK_OK(epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev));
    arm(200);
    CHECK_ERR(epoll_wait(ep, &ev, 1, 5000), EINTR);
    CHECK(alarms == 1, "handler ran %d times", (int)alarms);
}

static void select_eintr(void)
{
    install(0);
    int fd = sem_connect_peer(SEM_P_ECHO);
    CHECK(fd >= 0, "connect");
    fd_set r;
    FD_ZERO(&r);
    FD_SET(fd, &r);
    struct timeval tv = {5, 0};
    arm(200);
    CHECK_ERR(select(fd + 1, &r, NULL, NULL, &tv), EINTR);
    CHECK(alarms == 1, "handler ran %d times", (int)alarms);
}

/* ppoll/pselect/epoll_pwait unblock the signal only while they wait: a signal pending under
 * the blocked mask interrupts them at once. */
static void sigmask_waits(void)
{
    install(0);
    int fd = sem_connect_peer(SEM_P_ECHO);
    CHECK(fd >= 0, "connect");
    int ep = sem_track(epoll_create1(0));
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};
    CHECK_OK(epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev));
    sigset_t block, old, open;
    sigemptyset(&block);
    sigaddset(&block, SIGALRM);
    sigprocmask(SIG_BLOCK, &block, &old);
    open = old;
    sigdelset(&open, SIGALRM);
    int fails = 0, got[3] = {0, 0, 0};
    for (int i = 0; i < 3; i++) {
        arm(50);
        sem_sleep_ms(150); /* the signal is now pending, blocked */
        int before = alarms;
        struct pollfd p = {fd, POLLIN, 0};
        struct timespec ts = {5, 0};
        fd_set r;
        FD_ZERO(&r);
        FD_SET(fd, &r);
        double t0 = sem_ms();
        int rc = i == 0   ? ppoll(&p, 1, &ts, &open)
                 : i == 1 ? pselect(fd + 1, &r, NULL, NULL, &ts, &open)
                          : epoll_pwait(ep, &ev, 1, 5000, &open);
        got[i] = rc == -1 && errno == EINTR && alarms == before + 1 && sem_ms() - t0 < 1000;
        fails += !got[i];
    }
    sigprocmask(SIG_SETMASK, &old, NULL);
    CHECK(!fails, "EINTR with the signal unblocked: ppoll %d pselect %d epoll_pwait %d", got[0],
          got[1], got[2]);
}

/* ------------------------------------------------------------------ with SA_RESTART */

/* recv is restarted after the handler and returns the data that comes later. */
static void recv_restart(void)
{
    install(1);
    int fd = sem_connect_peer(SEM_P_ECHO);
    CHECK(fd >= 0, "connect");
    struct delayed d = {fd, 600};
    pthread_t t;
    CHECK(spawn(&t, send_later, &d) == 0, "pthread_create");
    char buf[8];
    arm(200);
    double t0 = sem_ms();
    ssize_t n = recv(fd, buf, sizeof buf, 0);
    int e = errno;
    double dt = sem_ms() - t0;
    pthread_join(t, NULL);
    errno = e;
    CHECK(n >= 1, "recv returned %zd", n);
    CHECK(alarms == 1, "handler ran %d times", (int)alarms);
    CHECK(dt >= 450, "recv returned after %.0f ms, before the data", dt);
}

static void accept_restart(void)
{
    install(1);
    int l = sem_listen_self(1, 0);
    CHECK(l >= 0, "listen");
    int c = sem_ctl(sem_lport(1), 0, 600, 1);
    CHECK(c >= 0, "control");
    arm(200);
    double t0 = sem_ms();
    int s = sem_track(accept(l, NULL, NULL));
    double dt = sem_ms() - t0;
    CHECK(s >= 0, "accept");
    CHECK(alarms == 1, "handler ran %d times", (int)alarms);
    CHECK(dt >= 450, "accept returned after %.0f ms, before the connection", dt);
}

/* A restarted connect keeps waiting: towards an address nobody answers it ends with the
 * ARP failure (EHOSTUNREACH, about 3 s on Linux), not EINTR. */
static void connect_restart(void)
{
    install(1);
    int fd = sem_tcp(0);
    struct sockaddr_in a = sem_sin(sem_unreach(4), sem_port_base);
    arm(200);
    double t0 = sem_ms();
    CHECK_ERR(connect(fd, (struct sockaddr *)&a, sizeof a), EHOSTUNREACH);
    double dt = sem_ms() - t0;
    CHECK(alarms == 1, "handler ran %d times", (int)alarms);
    CHECK(dt >= 1000, "connect failed after %.0f ms", dt);
}

/* poll, select and epoll_wait are never restarted. */
static void waits_not_restarted(void)
{
    install(1);
    int fd = sem_connect_peer(SEM_P_ECHO);
    CHECK(fd >= 0, "connect");
    struct pollfd p = {fd, POLLIN, 0};
    arm(200);
    CHECK_ERR(poll(&p, 1, 5000), EINTR);
    fd_set r;
    FD_ZERO(&r);
    FD_SET(fd, &r);
    struct timeval tv = {5, 0};
    arm(200);
    CHECK_ERR(select(fd + 1, &r, NULL, NULL, &tv), EINTR);
    int ep = sem_track(epoll_create1(0));
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};
    CHECK_OK(epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev));
    arm(200);
    CHECK_ERR(epoll_wait(ep, &ev, 1, 5000), EINTR);
    CHECK(alarms == 3, "handler ran %d times", (int)alarms);
}

/* With SO_RCVTIMEO / SO_SNDTIMEO set, recv/accept/send are not restarted either. */
static void timeout_not_restarted(void)
{
    install(1);
    int fd = sem_connect_peer(SEM_P_ECHO);
    CHECK(fd >= 0, "connect");
    CHECK_OK(set_tmo(fd, SO_RCVTIMEO, 3000));
    char buf[8];
    arm(200);
    double t0 = sem_ms();
    CHECK_ERR(recv(fd, buf, sizeof buf, 0), EINTR);
    CHECK(sem_ms() - t0 < 2000, "recv took %.0f ms", sem_ms() - t0);
    int l = sem_listen_self(2, 0);
    CHECK(l >= 0, "listen");
    CHECK_OK(set_tmo(l, SO_RCVTIMEO, 3000));
    arm(200);
    CHECK_ERR(accept(l, NULL, NULL), EINTR);
    int s = sem_connect_peer(SEM_P_SINK);
    CHECK(s >= 0, "connect to sink");
    CHECK_OK(fill_sink(s));
    CHECK_OK(set_tmo(s, SO_SNDTIMEO, 3000));
    static char big[65536];
    arm(200);
    CHECK_ERR(send(s, big, sizeof big, 0), EINTR);
    CHECK(alarms == 3, "handler ran %d times", (int)alarms);
}

/* A handler that is SIG_IGN interrupts nothing. */
static void ignored_signal(void)
{
    struct sigaction sa, old;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_IGN;
    sigaction(SIGALRM, &sa, &old);
    int fd = sem_connect_peer(SEM_P_ECHO);
    int err = fd < 0 ? errno : 0;
    ssize_t n = -1;
    if (fd >= 0 && set_tmo(fd, SO_RCVTIMEO, 600) == 0) {
        char ch;
        arm(200);
        n = recv(fd, &ch, 1, 0);
        err = errno;
    }
    sigaction(SIGALRM, &old, NULL);
    errno = err;
    CHECK(fd >= 0, "connect");
    CHECK(n == -1 && err == EAGAIN, "recv returned %zd, want the timeout's EAGAIN", n);
}

/* ------------------------------------------- closing a socket another thread waits on */

/* Java's way to close a socket another thread is blocked on (NioSocketImpl,
 * ServerSocketChannelImpl): dup2() a dead socket (a socketpair end whose other end is
 * closed) onto the fd, then signal the blocked thread, whose handler has no SA_RESTART. The
 * blocked call ends with EINTR, every time: the dup2 does not end it on Linux, the signal
 * does. Under ustack the dup2 woke the waiter, which went back to sleep, and the signal then
 * landed while it was in user space and was lost: accept() never returned. */
static volatile sig_atomic_t usr1s;

static void on_usr1(int sig)
{
    (void)sig;
    usr1s++;
}

struct blocked {
    int fd, op; /* op 0: accept, 1: recv */
    int rc, err;
    _Atomic int done;
};

static void *block_in(void *arg)
{
    struct blocked *b = arg;
    char c;
    b->rc = b->op ? (int)recv(b->fd, &c, 1, 0) : accept(b->fd, NULL, NULL);
    b->err = errno;
    atomic_store(&b->done, 1);
    return NULL;
}

/* One round on fd (closed by it): the blocked call must end with EINTR within 3 s. */
static void dup2_and_signal(int fd, int op, const char *what, int round)
{
    int sp[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sp) == 0, "socketpair");
    close(sp[1]);
    /* On the heap: a thread left stuck must not write into a dead stack frame later. */
    struct blocked *b = calloc(1, sizeof(*b));
    CHECK(b, "calloc");
    b->fd = fd;
    b->op = op;
    pthread_t t;
    CHECK(pthread_create(&t, NULL, block_in, b) == 0, "pthread_create");
    sem_sleep_ms(30);
    CHECK(!atomic_load(&b->done), "%s: round %d: the call returned %d (%s) before the signal", what,
          round, b->rc, sem_ename(b->err));
    sem_untrack(fd);
    if (op == 1)
        CHECK(shutdown(fd, SHUT_WR) == 0, "shutdown");
    CHECK(dup2(sp[0], fd) == fd, "dup2");
    pthread_kill(t, SIGUSR1);
    double t0 = sem_ms();
    while (!atomic_load(&b->done) && sem_ms() - t0 < 3000)
        sem_sleep_ms(2);
    int done = atomic_load(&b->done);
    if (done) {
        pthread_join(t, NULL);
    } else {
        pthread_detach(t); /* stuck: the case fails, the thread (and b) stay */
        b = NULL;
    }
    close(fd);
    close(sp[0]);
    CHECK(done, "%s: round %d: the blocked call did not end within 3 s of the signal", what, round);
    CHECK(b->rc == -1 && b->err == EINTR, "%s: round %d: returned %d (%s), want EINTR", what, round,
          b->rc, sem_ename(b->err));
    free(b);
}

static void install_usr1(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGUSR1, &sa, NULL);
    usr1s = 0;
}

static void close_blocked_accept(void)
{
    install_usr1();
    for (int i = 0; i < 10; i++) {
        /* A listener on our address, and one on the wildcard (which under ustack also has
         * a loopback companion listener on the kernel, so its wait is a different one). */
        int l = sem_listen_self(2, 0);
        CHECK(l >= 0, "listen");
        dup2_and_signal(l, 0, "accept", i);
        if (sem_case_failed)
            return;
        l = sem_tcp(0);
        int one = 1;
        struct sockaddr_in a = sem_sin((struct in_addr){htonl(INADDR_ANY)}, sem_lport(3));
        CHECK(l >= 0 && setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) == 0 &&
                  bind(l, (struct sockaddr *)&a, sizeof a) == 0 && listen(l, 16) == 0,
              "wildcard listener");
        dup2_and_signal(l, 0, "accept (wildcard)", i);
        if (sem_case_failed)
            return;
    }
    CHECK(usr1s == 20, "handler ran %d times, want 20", (int)usr1s);
}

/* The same for a read, after shutdown(SHUT_WR) as Java does first, on a connection to the
 * hold peer, which answers nothing (not even the FIN). Under ustack the shutdown woke the
 * reader, and the signal could land while it went back to sleep. */
static void close_blocked_recv(void)
{
    install_usr1();
    for (int i = 0; i < 20; i++) {
        int fd = sem_connect_peer(SEM_P_HOLD);
        CHECK(fd >= 0, "connect");
        dup2_and_signal(fd, 1, "recv", i);
        if (sem_case_failed)
            return;
    }
    CHECK(usr1s == 20, "handler ran %d times, want 20", (int)usr1s);
}

int main(void)
{
    sem_init("sem_signal", 3);
    SEM_RUN(recv_eintr);
    SEM_RUN(recv_waitall_partial);
    SEM_RUN(accept_eintr);
    SEM_RUN(connect_eintr);
    SEM_RUN(send_eintr);
    SEM_RUN(poll_eintr);
    SEM_RUN(epoll_eintr);
    SEM_RUN(select_eintr);
    SEM_RUN(sigmask_waits);
    SEM_RUN(recv_restart);
    SEM_RUN(accept_restart);
    SEM_RUN(connect_restart);
    SEM_RUN(waits_not_restarted);
    SEM_RUN(timeout_not_restarted);
    SEM_RUN(ignored_signal);
    SEM_RUN(close_blocked_accept);
    SEM_RUN(close_blocked_recv);
    disarm();
    return sem_done();
}

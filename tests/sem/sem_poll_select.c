/* tests/sem/sem_poll_select.c - poll, ppoll, select and pselect over mixed sets (pipes,
 * AF_UNIX sockets, listeners, connections), timeouts, and select on fd FD_SETSIZE - 1.
 * Every expectation is what Linux does; run.sh proves it by running this on the kernel. */
#include "sem.h"

#include <sys/resource.h>
#include <sys/select.h>

static int within(double ms, int want)
{
    return ms >= want * 0.5 && ms <= want * 1.5;
}

static int echo_byte(int fd)
{
    if (send(fd, "e", 1, 0) != 1)
        return -1;
    return sem_wait_fd(fd, POLLIN, 5000) & POLLIN ? 0 : -1;
}

struct mixed {
    int p[2], u[2], a, b, l;
};

/* A pipe and an AF_UNIX pair with data waiting in the pipe only; echo connection a with a
 * byte waiting, b idle; a listener with nothing pending. */
static int mixed_open(struct mixed *m)
{
    if (pipe(m->p) < 0 || socketpair(AF_UNIX, SOCK_STREAM, 0, m->u) < 0)
        return -1;
    sem_track(m->p[0]);
    sem_track(m->p[1]);
    sem_track(m->u[0]);
    sem_track(m->u[1]);
    m->a = sem_connect_peer(SEM_P_ECHO);
    m->b = sem_connect_peer(SEM_P_ECHO);
    m->l = sem_listen_self(0, 0);
    if (m->a < 0 || m->b < 0 || m->l < 0)
        return -1;
    if (write(m->p[1], "p", 1) != 1 || echo_byte(m->a) < 0)
        return -1;
    return 0;
}

static void poll_mixed(void)
{
    struct mixed m;
    CHECK_OK(mixed_open(&m));
    int closed = socket(AF_INET, SOCK_STREAM, 0);
    close(closed);
    struct pollfd f[8] = {
        {m.p[0], POLLIN, -1}, {m.u[0], POLLIN, -1},        {m.a, POLLIN, -1},    {m.b, POLLIN, -1},
        {m.b, POLLOUT, -1},   {m.l, POLLIN | POLLOUT, -1}, {closed, POLLIN, -1}, {-1, POLLIN, -1},
    };
    int n = poll(f, 8, 1000);
    short want[8] = {POLLIN, 0, POLLIN, 0, POLLOUT, 0, POLLNVAL, 0};
    CHECK(n == 4, "poll returned %d, want 4", n);
    for (int i = 0; i < 8; i++)
        CHECK(f[i].revents == want[i], "entry %d: revents %#x, want %#x", i, f[i].revents, want[i]);
}

static void poll_timeout(void)
{
    struct mixed m;
    CHECK_OK(mixed_open(&m));
    struct pollfd f[3] = {{m.u[0], POLLIN, 0}, {m.b, POLLIN, 0}, {m.l, POLLIN, 0}};
    double t0 = sem_ms();
    CHECK(poll(f, 3, 250) == 0, "idle set ready");
    CHECK(within(sem_ms() - t0, 250), "poll took %.0f ms, want 250", sem_ms() - t0);
    t0 = sem_ms();
    CHECK(poll(f, 3, 0) == 0, "idle set ready");
    CHECK(sem_ms() - t0 < 50, "poll with timeout 0 took %.0f ms", sem_ms() - t0);
}

static void ppoll_cases(void)
{
    struct mixed m;
    CHECK_OK(mixed_open(&m));
    struct pollfd idle = {m.b, POLLIN, 0}, ready = {m.a, POLLIN, 0};
    struct timespec ts = {0, 250000000};
    double t0 = sem_ms();
    CHECK(ppoll(&idle, 1, &ts, NULL) == 0, "idle ppoll");
    CHECK(within(sem_ms() - t0, 250), "ppoll took %.0f ms", sem_ms() - t0);
    CHECK(ppoll(&ready, 1, NULL, NULL) == 1 && ready.revents == POLLIN, "ppoll, no timeout");
}

/* The same fd twice in one array: both entries get their own revents. */
static void poll_same_fd_twice(void)
{
    struct mixed m;
    CHECK_OK(mixed_open(&m));
    struct pollfd f[2] = {{m.a, POLLIN, 0}, {m.a, POLLOUT, 0}};
    CHECK(poll(f, 2, 1000) == 2, "poll");
    CHECK(f[0].revents == POLLIN && f[1].revents == POLLOUT, "revents %#x %#x", f[0].revents,
          f[1].revents);
}

/* poll reports POLLIN on a listener with a pending connection, never POLLOUT. */
static void poll_listener(void)
{
    int l = sem_listen_self(1, 0);
    CHECK(l >= 0, "listen");
    CHECK(sem_wait_fd(l, POLLIN | POLLOUT, 0) == 0, "idle listener ready");
    int c = sem_ctl(sem_lport(1), 0, 0, 1);
    CHECK(c >= 0, "control");
    int ev = sem_wait_fd(l, POLLIN | POLLOUT, 5000);
    CHECK(ev == POLLIN, "listener revents %#x", ev);
}

/* A never-connected socket polls POLLOUT|POLLHUP; after the peer's FIN, POLLIN|POLLRDHUP;
 * after a reset, POLLERR|POLLHUP even with no events asked for. */
static void poll_states(void)
{
    int fresh = sem_tcp(0);
    int ev = sem_wait_fd(fresh, POLLIN | POLLOUT, 0);
    CHECK(ev == (POLLOUT | POLLHUP), "fresh socket revents %#x", ev);
    int fin = sem_connect_peer(SEM_P_CLOSE);
    CHECK(fin >= 0, "connect");
    ev = sem_wait_fd(fin, POLLIN | POLLRDHUP, 5000);
    CHECK(ev == (POLLIN | POLLRDHUP), "after FIN revents %#x", ev);
    int r = sem_connect_peer(SEM_P_RESET);
    CHECK(r >= 0, "connect");
    char buf[SEM_RESET_AFTER] = {0};
    CHECK(sem_write_all(r, buf, sizeof buf) == sizeof buf, "send");
    double end = sem_ms() + 5000;
    do
        ev = sem_wait_fd(r, 0, 100);
    while (ev == 0 && sem_ms() < end);
    CHECK(ev == (POLLERR | POLLHUP), "after RST revents %#x for events 0", ev);
}

static void select_mixed(void)
{
    struct mixed m;
    CHECK_OK(mixed_open(&m));
    fd_set r, w, x;
    FD_ZERO(&r);
    FD_ZERO(&w);
    FD_ZERO(&x);
    int fds[] = {m.p[0], m.u[0], m.a, m.b, m.l}, max = 0;
    for (int i = 0; i < 5; i++) {
        FD_SET(fds[i], &r);
        max = fds[i] > max ? fds[i] : max;
    }
    FD_SET(m.b, &w);
    FD_SET(m.a, &x);
    struct timeval tv = {1, 0};
    int n = select(max + 1, &r, &w, &x, &tv);
    CHECK(n == 3, "select returned %d, want 3", n);
    CHECK(FD_ISSET(m.p[0], &r) && FD_ISSET(m.a, &r) && !FD_ISSET(m.u[0], &r) &&
              !FD_ISSET(m.b, &r) && !FD_ISSET(m.l, &r),
          "read set wrong");
    CHECK(FD_ISSET(m.b, &w), "b not writable");
    CHECK(!FD_ISSET(m.a, &x), "exception without urgent data");
}

/* Linux's select writes the time left back into the timeval; glibc's pselect leaves its
 * timespec alone. */
static void select_timeouts(void)
{
    struct mixed m;
    CHECK_OK(mixed_open(&m));
    fd_set r;
    FD_ZERO(&r);
    FD_SET(m.b, &r);
    struct timeval tv = {0, 250000};
    double t0 = sem_ms();
    CHECK(select(m.b + 1, &r, NULL, NULL, &tv) == 0, "idle select");
    CHECK(within(sem_ms() - t0, 250), "select took %.0f ms", sem_ms() - t0);
    CHECK(tv.tv_sec == 0 && tv.tv_usec == 0, "timeval after timeout %ld.%06ld", (long)tv.tv_sec,
          (long)tv.tv_usec);
    CHECK(!FD_ISSET(m.b, &r), "set not cleared");
    FD_SET(m.a, &r);
    tv = (struct timeval){1, 0};
    CHECK(select(m.a + 1, &r, NULL, NULL, &tv) == 1, "ready select");
    long left = tv.tv_sec * 1000000L + tv.tv_usec;
    CHECK(left > 500000 && left < 1000000, "time left %ld us", left);
    FD_ZERO(&r);
    FD_SET(m.b, &r);
    struct timespec ts = {0, 250000000};
    t0 = sem_ms();
    CHECK(pselect(m.b + 1, &r, NULL, NULL, &ts, NULL) == 0, "idle pselect");
    CHECK(within(sem_ms() - t0, 250), "pselect took %.0f ms", sem_ms() - t0);
    CHECK(ts.tv_sec == 0 && ts.tv_nsec == 250000000, "pselect changed its timespec");
}

static void select_ebadf(void)
{
    int closed = socket(AF_INET, SOCK_STREAM, 0);
    close(closed);
    fd_set r;
    FD_ZERO(&r);
    FD_SET(closed, &r);
    struct timeval tv = {0, 0};
    CHECK_ERR(select(closed + 1, &r, NULL, NULL, &tv), EBADF);
}

/* A connection dup2'ed onto FD_SETSIZE - 1 works with select (and poll) like any fd. */
static void select_fd_1023(void)
{
    struct rlimit rl;
    CHECK_OK(getrlimit(RLIMIT_NOFILE, &rl));
    if (rl.rlim_cur < FD_SETSIZE) {
        rl.rlim_cur = rl.rlim_max < FD_SETSIZE ? rl.rlim_max : FD_SETSIZE;
        CHECK_OK(setrlimit(RLIMIT_NOFILE, &rl));
    }
    int fd = sem_connect_peer(SEM_P_ECHO);
    CHECK(fd >= 0, "connect");
    const int hi = FD_SETSIZE - 1;
    CHECK(dup2(fd, hi) == hi, "dup2 to %d", hi);
    sem_track(hi);
    CHECK_OK(sem_close(fd));
    fd_set r, w;
    FD_ZERO(&r);
    FD_ZERO(&w);
    FD_SET(hi, &r);
    struct timeval tv = {0, 100000};
    CHECK(select(hi + 1, &r, NULL, NULL, &tv) == 0, "idle fd %d readable", hi);
    CHECK(send(hi, "x", 1, 0) == 1, "send on fd %d", hi);
    FD_ZERO(&r);
    FD_SET(hi, &r);
    FD_SET(hi, &w);
    tv = (struct timeval){5, 0};
    /* Writable at once; wait for the echo separately. */
    CHECK(select(hi + 1, NULL, &w, NULL, &tv) == 1 && FD_ISSET(hi, &w), "fd %d writable", hi);
    tv = (struct timeval){5, 0};
    CHECK(select(hi + 1, &r, NULL, NULL, &tv) == 1 && FD_ISSET(hi, &r), "fd %d readable", hi);
    struct pollfd p = {hi, POLLIN, 0};
    CHECK(poll(&p, 1, 0) == 1 && p.revents == POLLIN, "poll on fd %d", hi);
    char ch;
    CHECK(recv(hi, &ch, 1, 0) == 1 && ch == 'x', "recv on fd %d", hi);
}

int main(void)
{
    sem_init("sem_poll_select", 7);
    SEM_RUN(poll_mixed);
    SEM_RUN(poll_timeout);
    SEM_RUN(ppoll_cases);
    SEM_RUN(poll_same_fd_twice);
    SEM_RUN(poll_listener);
    SEM_RUN(poll_states);
    SEM_RUN(select_mixed);
    SEM_RUN(select_timeouts);
    SEM_RUN(select_ebadf);
    SEM_RUN(select_fd_1023);
    return sem_done();
}

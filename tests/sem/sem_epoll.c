/* tests/sem/sem_epoll.c - epoll: level and edge triggering, EPOLLONESHOT, EPOLLRDHUP,
 * EPOLLERR/EPOLLHUP, EPOLLEXCLUSIVE, nesting, mixed sets, EPOLL_CTL errors, and what closing
 * a registered fd does. Every expectation is what Linux does; run.sh proves it by running
 * this on the kernel. */
#include "sem.h"

#include <sys/epoll.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <sys/wait.h>

static int ep_new(void)
{
    return sem_track(epoll_create1(EPOLL_CLOEXEC));
}

static int ep_add(int ep, int fd, uint32_t events, uint64_t tag)
{
    struct epoll_event ev = {.events = events, .data.u64 = tag};
    return epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
}

/* One epoll_wait with room for 8; returns the count and the first event. */
static int ep_wait1(int ep, int ms, struct epoll_event *first)
{
    struct epoll_event evs[8];
    int n = epoll_wait(ep, evs, 8, ms);
    if (n > 0 && first)
        *first = evs[0];
    return n;
}

/* Sends one byte on an echo connection and waits until it is back in the receive queue. */
static int echo_byte(int fd)
{
    if (send(fd, "e", 1, 0) != 1)
        return -1;
    return sem_wait_fd(fd, POLLIN, 5000) & POLLIN ? 0 : -1;
}

static void epollout_after_connect(void)
{
    int fd = sem_tcp(SOCK_NONBLOCK), ep = ep_new();
    struct sockaddr_in a = sem_peer_addr(SEM_P_ECHO);
    CHECK_ERR(connect(fd, (struct sockaddr *)&a, sizeof a), EINPROGRESS);
    CHECK_OK(ep_add(ep, fd, EPOLLOUT, 77));
    struct epoll_event ev;
    CHECK(ep_wait1(ep, 5000, &ev) == 1, "no event");
    CHECK(ev.events == EPOLLOUT && ev.data.u64 == 77, "events %#x tag %llu", ev.events,
          (unsigned long long)ev.data.u64);
}

/* A never-connected socket reports EPOLLOUT|EPOLLHUP. */
static void fresh_socket_hup(void)
{
    int fd = sem_tcp(0), ep = ep_new();
    CHECK_OK(ep_add(ep, fd, EPOLLIN | EPOLLOUT, 1));
    struct epoll_event ev;
    CHECK(ep_wait1(ep, 0, &ev) == 1, "no event");
    CHECK(ev.events == (EPOLLOUT | EPOLLHUP), "events %#x", ev.events);
}

/* Level-triggered: reported on every wait until drained. */
static void level_triggered(void)
{
    int fd = sem_connect_peer(SEM_P_ECHO), ep = ep_new();
    CHECK(fd >= 0, "connect");
    CHECK_OK(ep_add(ep, fd, EPOLLIN, 1));
    CHECK(ep_wait1(ep, 0, NULL) == 0, "idle socket reported");
    CHECK_OK(echo_byte(fd));
    struct epoll_event ev;
    for (int i = 0; i < 3; i++) {
        CHECK(ep_wait1(ep, 1000, &ev) == 1, "wait %d: no event", i);
        CHECK(ev.events == EPOLLIN, "wait %d: events %#x", i, ev.events);
    }
    char ch;
    CHECK(recv(fd, &ch, 1, 0) == 1, "recv");
    CHECK(ep_wait1(ep, 100, NULL) == 0, "drained socket reported");
}

/* Edge-triggered: one report per arrival, even when the earlier data was not read. */
static void edge_triggered(void)
{
    int fd = sem_connect_peer(SEM_P_ECHO), ep = ep_new();
    CHECK(fd >= 0, "connect");
    CHECK_OK(ep_add(ep, fd, EPOLLIN | EPOLLET, 1));
    CHECK_OK(echo_byte(fd));
    struct epoll_event ev;
    CHECK(ep_wait1(ep, 1000, &ev) == 1 && ev.events == EPOLLIN, "first arrival");
    CHECK(ep_wait1(ep, 100, NULL) == 0, "reported twice for one arrival");
    CHECK(send(fd, "f", 1, 0) == 1, "send");
    CHECK(ep_wait1(ep, 5000, &ev) == 1 && ev.events == EPOLLIN, "second arrival, undrained");
    CHECK(ep_wait1(ep, 100, NULL) == 0, "reported twice for the second arrival");
    char buf[4];
    CHECK(sem_read_full(fd, buf, 2, 1000) == 2, "read both");
    CHECK(ep_wait1(ep, 100, NULL) == 0, "reported after draining");
}

/* Edge-triggered EPOLLOUT on a writable socket: once at registration, then quiet. */
static void edge_epollout(void)
{
    int fd = sem_connect_peer(SEM_P_ECHO), ep = ep_new();
    CHECK(fd >= 0, "connect");
    CHECK_OK(ep_add(ep, fd, EPOLLOUT | EPOLLET, 1));
    struct epoll_event ev;
    CHECK(ep_wait1(ep, 1000, &ev) == 1 && ev.events == EPOLLOUT, "first EPOLLOUT");
    CHECK(ep_wait1(ep, 100, NULL) == 0, "EPOLLOUT reported twice");
    /* Level-triggered EPOLLOUT, by contrast, is reported every time. */
    struct epoll_event m = {.events = EPOLLOUT, .data.u64 = 2};
    CHECK_OK(epoll_ctl(ep, EPOLL_CTL_MOD, fd, &m));
    CHECK(ep_wait1(ep, 0, &ev) == 1 && ev.data.u64 == 2, "LT EPOLLOUT after MOD");
    CHECK(ep_wait1(ep, 0, &ev) == 1, "LT EPOLLOUT again");
}

/* A level-triggered member whose EPOLLOUT is turned on for each request and off after it
 * (wrk's event loop, 100 rounds): with EPOLLOUT the next wait reports it with the new data;
 * after the MOD back to EPOLLIN, nothing until the reply, which comes with that data. */
static void level_mod_toggle(void)
{
    int fd = sem_connect_peer(SEM_P_ECHO), ep = ep_new();
    CHECK(fd >= 0, "connect");
    CHECK_OK(ep_add(ep, fd, EPOLLIN, 1));
    struct epoll_event ev;
    char c;
    for (uint64_t r = 0; r < 100; r++) {
        struct epoll_event m = {.events = EPOLLIN | EPOLLOUT, .data.u64 = 100 + r};
        CHECK_OK(epoll_ctl(ep, EPOLL_CTL_MOD, fd, &m));
        CHECK(ep_wait1(ep, 1000, &ev) == 1 && ev.events == EPOLLOUT && ev.data.u64 == 100 + r,
              "EPOLLOUT after the MOD that asks for it");
        CHECK(send(fd, "q", 1, 0) == 1, "send");
        m = (struct epoll_event){.events = EPOLLIN, .data.u64 = 200 + r};
        CHECK_OK(epoll_ctl(ep, EPOLL_CTL_MOD, fd, &m));
        int n = ep_wait1(ep, 5000, &ev);
        CHECK(n == 1 && ev.events == EPOLLIN && ev.data.u64 == 200 + r,
              "the reply (and nothing before it) after the MOD back to EPOLLIN");
        CHECK(recv(fd, &c, 1, 0) == 1 && c == 'q', "read the reply");
        CHECK(ep_wait1(ep, 0, NULL) == 0, "a report with nothing to read");
    }
}

/* EPOLLONESHOT: one report, then silence until EPOLL_CTL_MOD re-arms it. */
static void oneshot(void)
{
    int fd = sem_connect_peer(SEM_P_ECHO), ep = ep_new();
    CHECK(fd >= 0, "connect");
    CHECK_OK(ep_add(ep, fd, EPOLLIN | EPOLLONESHOT, 5));
    CHECK_OK(echo_byte(fd));
    struct epoll_event ev;
    CHECK(ep_wait1(ep, 1000, &ev) == 1 && ev.data.u64 == 5, "first report");
    CHECK(ep_wait1(ep, 100, NULL) == 0, "reported again before MOD");
    CHECK(send(fd, "g", 1, 0) == 1 && sem_wait_fd(fd, POLLIN, 1000), "send");
    sem_sleep_ms(100);
    CHECK(ep_wait1(ep, 100, NULL) == 0, "new data reported before MOD");
    struct epoll_event m = {.events = EPOLLIN | EPOLLONESHOT, .data.u64 = 6};
    CHECK_OK(epoll_ctl(ep, EPOLL_CTL_MOD, fd, &m));
    CHECK(ep_wait1(ep, 1000, &ev) == 1 && ev.data.u64 == 6, "after MOD");
    CHECK(ep_wait1(ep, 100, NULL) == 0, "reported again after MOD");
}

/* The peer's FIN: EPOLLIN|EPOLLRDHUP; once we shut down too, EPOLLHUP joins. */
static void rdhup(void)
{
    int fd = sem_connect_peer(SEM_P_CLOSE), ep = ep_new();
    CHECK(fd >= 0, "connect");
    CHECK_OK(ep_add(ep, fd, EPOLLIN | EPOLLRDHUP, 1));
    struct epoll_event ev;
    CHECK(ep_wait1(ep, 5000, &ev) == 1, "no event for the FIN");
    CHECK(ev.events == (EPOLLIN | EPOLLRDHUP), "events %#x", ev.events);
    CHECK_OK(shutdown(fd, SHUT_WR));
    CHECK(ep_wait1(ep, 1000, &ev) == 1, "no event after shutdown");
    CHECK(ev.events == (EPOLLIN | EPOLLRDHUP | EPOLLHUP), "events %#x after SHUT_WR", ev.events);
}

static int reset_conn(void)
{
    int fd = sem_connect_peer(SEM_P_RESET);
    char buf[SEM_RESET_AFTER];
    memset(buf, 'r', sizeof buf);
    if (fd < 0 || sem_write_all(fd, buf, sizeof buf) < 0)
        return -1;
    return fd;
}

/* After an RST, EPOLLERR and EPOLLHUP are reported even when not asked for. */
static void reset_err_hup(void)
{
    int fd = reset_conn(), ep = ep_new(), ep0 = ep_new();
    CHECK(fd >= 0, "connect");
    CHECK_OK(ep_add(ep, fd, EPOLLIN, 1));
    CHECK_OK(ep_add(ep0, fd, 0, 2));
    struct epoll_event ev;
    CHECK(ep_wait1(ep, 5000, &ev) == 1, "no event");
    sem_sleep_ms(100);
    CHECK(ep_wait1(ep, 5000, &ev) == 1, "no event");
    CHECK(ev.events == (EPOLLIN | EPOLLERR | EPOLLHUP), "events %#x", ev.events);
    CHECK(ep_wait1(ep0, 0, &ev) == 1, "nothing for events 0");
    CHECK(ev.events == (EPOLLERR | EPOLLHUP), "events for mask 0: %#x", ev.events);
}

/* EPOLLEXCLUSIVE is accepted with ADD only, and not with ONESHOT or RDHUP, nor for an
 * epoll fd. */
static void exclusive(void)
{
    int fd = sem_connect_peer(SEM_P_ECHO), ep = ep_new(), inner = ep_new();
    CHECK(fd >= 0, "connect");
    CHECK_OK(ep_add(ep, fd, EPOLLIN | EPOLLEXCLUSIVE, 3));
    CHECK_OK(echo_byte(fd));
    struct epoll_event ev;
    CHECK(ep_wait1(ep, 1000, &ev) == 1 && ev.events == EPOLLIN && ev.data.u64 == 3, "event");
    struct epoll_event m = {.events = EPOLLIN, .data.u64 = 4};
    CHECK_ERR(epoll_ctl(ep, EPOLL_CTL_MOD, fd, &m), EINVAL);
    m.events = EPOLLIN | EPOLLEXCLUSIVE;
    CHECK_ERR(epoll_ctl(ep, EPOLL_CTL_MOD, fd, &m), EINVAL);
    int ep2 = ep_new();
    CHECK_ERR(ep_add(ep2, fd, EPOLLIN | EPOLLEXCLUSIVE | EPOLLONESHOT, 1), EINVAL);
    CHECK_ERR(ep_add(ep2, fd, EPOLLIN | EPOLLEXCLUSIVE | EPOLLRDHUP, 1), EINVAL);
    CHECK_ERR(ep_add(ep2, inner, EPOLLIN | EPOLLEXCLUSIVE, 1), EINVAL);
    CHECK_OK(ep_add(ep2, fd, EPOLLIN | EPOLLEXCLUSIVE | EPOLLET, 1));
}

static void two_instances(void)
{
    int fd = sem_connect_peer(SEM_P_ECHO), a = ep_new(), b = ep_new();
    CHECK(fd >= 0, "connect");
    CHECK_OK(ep_add(a, fd, EPOLLIN, 10));
    CHECK_OK(ep_add(b, fd, EPOLLIN | EPOLLET, 20));
    CHECK_OK(echo_byte(fd));
    struct epoll_event ev;
    CHECK(ep_wait1(a, 1000, &ev) == 1 && ev.data.u64 == 10, "first instance");
    CHECK(ep_wait1(b, 1000, &ev) == 1 && ev.data.u64 == 20, "second instance");
    CHECK(ep_wait1(a, 0, &ev) == 1, "first instance (LT) again");
    CHECK(ep_wait1(b, 0, &ev) == 0, "second instance (ET) again");
}

/* An epoll fd is itself pollable: POLLIN in poll() and EPOLLIN in another epoll when one of
 * its members is ready. */
static void nested(void)
{
    int fd = sem_connect_peer(SEM_P_ECHO), inner = ep_new(), outer = ep_new();
    CHECK(fd >= 0, "connect");
    CHECK_OK(ep_add(inner, fd, EPOLLIN, 1));
    CHECK_OK(ep_add(outer, inner, EPOLLIN, 2));
    CHECK(sem_wait_fd(inner, POLLIN, 0) == 0, "idle inner epoll readable");
    CHECK(ep_wait1(outer, 0, NULL) == 0, "idle outer epoll reports");
    CHECK(send(fd, "n", 1, 0) == 1, "send");
    CHECK(sem_wait_fd(inner, POLLIN, 5000) == POLLIN, "inner epoll not readable in poll()");
    struct epoll_event ev;
    CHECK(ep_wait1(outer, 1000, &ev) == 1 && ev.events == EPOLLIN && ev.data.u64 == 2,
          "outer epoll");
    CHECK(ep_wait1(inner, 0, &ev) == 1 && ev.data.u64 == 1, "inner epoll member");
    char ch;
    CHECK(recv(fd, &ch, 1, 0) == 1, "recv");
    CHECK(sem_wait_fd(inner, POLLIN, 0) == 0, "drained inner epoll readable");
    CHECK(ep_wait1(outer, 0, NULL) == 0, "drained outer epoll reports");
}

/* A pipe, an AF_UNIX pair, a listener and two connections in one set: exactly the ready ones
 * are reported, each with its own tag. */
static void mixed_set(void)
{
    int p[2], u[2];
    CHECK_OK(pipe(p));
    sem_track(p[0]);
    sem_track(p[1]);
    CHECK_OK(socketpair(AF_UNIX, SOCK_STREAM, 0, u));
    sem_track(u[0]);
    sem_track(u[1]);
    int a = sem_connect_peer(SEM_P_ECHO), b = sem_connect_peer(SEM_P_ECHO);
    int l = sem_listen_self(0, 0), ep = ep_new();
    CHECK(a >= 0 && b >= 0 && l >= 0, "sockets");
    CHECK_OK(ep_add(ep, p[0], EPOLLIN, 100));
    CHECK_OK(ep_add(ep, u[0], EPOLLIN, 200));
    CHECK_OK(ep_add(ep, a, EPOLLIN, 300));
    CHECK_OK(ep_add(ep, b, EPOLLIN, 400));
    CHECK_OK(ep_add(ep, l, EPOLLIN, 500));
    CHECK(ep_wait1(ep, 0, NULL) == 0, "idle set reports");
    CHECK(write(p[1], "p", 1) == 1, "pipe write");
    CHECK_OK(echo_byte(b));
    struct epoll_event evs[8];
    int n = epoll_wait(ep, evs, 8, 1000);
    CHECK(n == 2, "%d events, want 2", n);
    uint64_t sum = evs[0].data.u64 + evs[1].data.u64;
    CHECK(sum == 500 && evs[0].events == EPOLLIN && evs[1].events == EPOLLIN,
          "tags %llu+%llu events %#x %#x", (unsigned long long)evs[0].data.u64,
          (unsigned long long)evs[1].data.u64, evs[0].events, evs[1].events);
    CHECK(write(u[1], "u", 1) == 1, "unix write");
    int c = sem_ctl(sem_lport(0), 0, 0, 1);
    CHECK(c >= 0, "control");
    CHECK(sem_wait_fd(l, POLLIN, 5000), "connection pending");
    n = epoll_wait(ep, evs, 8, 1000);
    CHECK(n == 4, "%d events, want 4", n);
    sum = 0;
    for (int i = 0; i < n; i++)
        sum += evs[i].data.u64;
    CHECK(sum == 100 + 200 + 400 + 500, "tags sum %llu", (unsigned long long)sum);
}

static void ctl_errors(void)
{
    int fd = sem_connect_peer(SEM_P_ECHO), ep = ep_new();
    CHECK(fd >= 0, "connect");
    struct epoll_event ev = {.events = EPOLLIN};
    CHECK_ERR(epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL), ENOENT);
    CHECK_ERR(epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev), ENOENT);
    CHECK_OK(ep_add(ep, fd, EPOLLIN, 1));
    CHECK_ERR(ep_add(ep, fd, EPOLLIN, 1), EEXIST);
    CHECK_ERR(ep_add(ep, ep, EPOLLIN, 1), EINVAL);
    CHECK_ERR(epoll_ctl(ep, 99, fd, &ev), EINVAL);
    char path[] = "/tmp/sem_epoll.XXXXXX";
    int f = sem_track(mkstemp(path));
    unlink(path);
    CHECK_ERR(ep_add(ep, f, EPOLLIN, 1), EPERM);
    CHECK_ERR(epoll_ctl(f, EPOLL_CTL_ADD, fd, &ev), EINVAL);
    int p[2];
    CHECK_OK(pipe(p));
    sem_track(p[0]);
    sem_track(p[1]);
    CHECK_ERR(epoll_ctl(fd, EPOLL_CTL_ADD, p[0], &ev), EINVAL); /* a socket is no epoll fd */
    /* The target is checked first: a regular file as target is EPERM even then. */
    CHECK_ERR(epoll_ctl(fd, EPOLL_CTL_ADD, f, &ev), EPERM);
    CHECK_ERR(epoll_wait(fd, &ev, 1, 0), EINVAL);
    CHECK_ERR(epoll_wait(ep, &ev, 0, 0), EINVAL);
    int closed = socket(AF_INET, SOCK_STREAM, 0);
    close(closed);
    CHECK_ERR(ep_add(ep, closed, EPOLLIN, 1), EBADF);
}

/* After EPOLL_CTL_DEL nothing is reported. */
static void ctl_del(void)
{
    int fd = sem_connect_peer(SEM_P_ECHO), ep = ep_new();
    CHECK(fd >= 0, "connect");
    CHECK_OK(ep_add(ep, fd, EPOLLIN, 1));
    CHECK_OK(echo_byte(fd));
    CHECK(ep_wait1(ep, 1000, NULL) == 1, "event before DEL");
    CHECK_OK(epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL));
    CHECK(ep_wait1(ep, 100, NULL) == 0, "event after DEL");
    CHECK(send(fd, "h", 1, 0) == 1, "send");
    CHECK(ep_wait1(ep, 300, NULL) == 0, "event for new data after DEL");
}

/* Closing the only fd of a registered socket removes it from the set. */
static void close_removes(void)
{
    int fd = sem_connect_peer(SEM_P_ECHO), ep = ep_new();
    CHECK(fd >= 0, "connect");
    CHECK_OK(ep_add(ep, fd, EPOLLIN, 1));
    CHECK_OK(echo_byte(fd));
    CHECK(ep_wait1(ep, 1000, NULL) == 1, "event before close");
    CHECK_OK(sem_close(fd));
    CHECK(ep_wait1(ep, 100, NULL) == 0, "event after close");
}

/* The registration belongs to the open socket, not the fd number: closing the registered fd
 * while a dup lives keeps reporting (with the old tag), EPOLL_CTL_DEL by the closed number is
 * EBADF and by the dup's number ENOENT. Only the last close ends it. */
static void close_with_dup(void)
{
    int fd = sem_connect_peer(SEM_P_ECHO), ep = ep_new();
    CHECK(fd >= 0, "connect");
    int d = sem_track(dup(fd));
    CHECK(d >= 0, "dup");
    CHECK_OK(ep_add(ep, fd, EPOLLIN, 9));
    CHECK_OK(echo_byte(fd));
    CHECK_OK(sem_close(fd));
    struct epoll_event ev;
    CHECK(ep_wait1(ep, 1000, &ev) == 1 && ev.data.u64 == 9, "event after closing the fd");
    CHECK_ERR(epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL), EBADF);
    CHECK_ERR(epoll_ctl(ep, EPOLL_CTL_DEL, d, NULL), ENOENT);
    CHECK_OK(ep_add(ep, d, EPOLLIN, 10));
    CHECK(ep_wait1(ep, 1000, NULL) == 2, "both registrations report");
    CHECK_OK(sem_close(d));
    CHECK(ep_wait1(ep, 100, NULL) == 0, "event after the last close");
}

/* A listener reports EPOLLIN while a connection waits to be accepted. */
static void listener(void)
{
    int l = sem_listen_self(1, SOCK_NONBLOCK), ep = ep_new();
    CHECK(l >= 0, "listen");
    CHECK_OK(ep_add(ep, l, EPOLLIN, 1));
    CHECK(ep_wait1(ep, 0, NULL) == 0, "idle listener reports");
    int c = sem_ctl(sem_lport(1), 0, 0, 1);
    CHECK(c >= 0, "control");
    struct epoll_event ev;
    CHECK(ep_wait1(ep, 5000, &ev) == 1 && ev.events == EPOLLIN, "listener event");
    int s = sem_track(accept(l, NULL, NULL));
    CHECK(s >= 0, "accept");
    CHECK(ep_wait1(ep, 100, NULL) == 0, "listener reports after accept");
}

/* No EPOLLOUT while the send buffer is full (the peer never reads). */
static void full_not_writable(void)
{
    int fd = sem_connect_peer(SEM_P_SINK), ep = ep_new();
    CHECK(fd >= 0, "connect");
    CHECK(sem_fill_sndbuf(fd) >= 0, "filling the send buffer");
    CHECK_OK(ep_add(ep, fd, EPOLLOUT, 1));
    CHECK(ep_wait1(ep, 300, NULL) == 0, "full socket reports EPOLLOUT");
}

/* maxevents smaller than the ready set: Linux moves reported level-triggered members to
 * the back, so the next wait starts with the ones not yet reported. */
static void round_robin(void)
{
    int fd[3], ep = ep_new();
    for (int i = 0; i < 3; i++) {
        fd[i] = sem_connect_peer(SEM_P_ECHO);
        CHECK(fd[i] >= 0, "connect %d", i);
        CHECK_OK(ep_add(ep, fd[i], EPOLLIN, (uint64_t)i));
    }
    for (int i = 0; i < 3; i++)
        CHECK_OK(echo_byte(fd[i]));
    struct epoll_event e1[2], e2[2];
    CHECK(epoll_wait(ep, e1, 2, 1000) == 2, "first wait");
    CHECK(epoll_wait(ep, e2, 2, 1000) == 2, "second wait");
    int seen[3] = {0, 0, 0};
    seen[e1[0].data.u64]++;
    seen[e1[1].data.u64]++;
    int missing = seen[0] ? seen[1] ? 2 : 1 : 0;
    CHECK(e2[0].data.u64 == (uint64_t)missing, "second wait starts with %llu, want %d",
          (unsigned long long)e2[0].data.u64, missing);
}

/* The same with kernel and ustack members in one set: four waits for one event each over
 * three connections and a pipe, all ready, report each of them once. */
static void round_robin_mixed(void)
{
    int fd[3], p[2], ep = ep_new();
    CHECK_OK(pipe(p));
    sem_track(p[0]);
    sem_track(p[1]);
    for (int i = 0; i < 3; i++) {
        fd[i] = sem_connect_peer(SEM_P_ECHO);
        CHECK(fd[i] >= 0, "connect %d", i);
        CHECK_OK(ep_add(ep, fd[i], EPOLLIN, (uint64_t)i));
    }
    CHECK_OK(ep_add(ep, p[0], EPOLLIN, 3));
    for (int i = 0; i < 3; i++)
        CHECK_OK(echo_byte(fd[i]));
    CHECK(write(p[1], "p", 1) == 1, "pipe write");
    for (int round = 0; round < 2; round++) {
        unsigned seen = 0;
        for (int i = 0; i < 4; i++) {
            struct epoll_event ev;
            CHECK(epoll_wait(ep, &ev, 1, 1000) == 1, "wait %d", i);
            seen |= 1u << (ev.data.u64 & 7);
        }
        CHECK(seen == 0xf, "round %d: four waits saw members %#x, want 0xf", round, seen);
    }
}

/* An epoll set made before fork serves both processes: the child's wait reports the
 * inherited member with its data; the parent's too (level-triggered, nothing read). */
static void fork_shares_set(void)
{
    int fd = sem_connect_peer(SEM_P_ECHO), ep = ep_new();
    CHECK(fd >= 0, "connect");
    CHECK_OK(ep_add(ep, fd, EPOLLIN, 42));
    CHECK_OK(echo_byte(fd));
    pid_t pid = fork();
    CHECK(pid >= 0, "fork");
    if (pid == 0) {
        struct epoll_event ev;
        int n = epoll_wait(ep, &ev, 1, 1000);
        _exit(n == 1 && ev.data.u64 == 42 && ev.events == EPOLLIN ? 0 : 1);
    }
    int st = sem_wait_child(pid, 5000);
    CHECK(st == 0, "child's wait: status %d", st);
    struct epoll_event ev;
    CHECK(ep_wait1(ep, 1000, &ev) == 1 && ev.data.u64 == 42, "parent's wait");
}

/* A child closing its copy of a member of an inherited set leaves the set alone: the
 * registration belongs to the open socket, which the parent still holds. Postfix's master
 * watches its listeners in an epoll and forks each service, whose child moves the listener
 * to a fixed number (dup2) and closes the original before exec; under ustack that close took
 * the master's registration away: it no longer saw connections, and its next EPOLL_CTL_DEL
 * failed with ENOENT, which Postfix treats as fatal. Both ways: the child closes its only
 * copy, or moves it first (a dup remains in the child). */
static void fork_child_closes_member(void)
{
    for (int moved = 0; moved < 2; moved++) {
        int fd = sem_connect_peer(SEM_P_ECHO), ep = ep_new();
        CHECK(fd >= 0, "connect");
        CHECK_OK(ep_add(ep, fd, EPOLLIN, 5));
        pid_t pid = fork();
        CHECK(pid >= 0, "fork");
        if (pid == 0) {
            if (moved && dup2(fd, fd + 20) != fd + 20)
                _exit(2);
            _exit(close(fd) == 0 ? 0 : 1);
        }
        int st = sem_wait_child(pid, 5000);
        CHECK(st == 0, "child (moved %d): status %d", moved, st);
        CHECK(ep_wait1(ep, 0, NULL) == 0, "event before data (moved %d)", moved);
        CHECK_OK(echo_byte(fd));
        struct epoll_event ev;
        CHECK(ep_wait1(ep, 1000, &ev) == 1 && ev.data.u64 == 5 && ev.events == EPOLLIN,
              "parent's set after the child's close (moved %d)", moved);
        CHECK_OK(epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL));
        CHECK(ep_wait1(ep, 100, NULL) == 0, "event after DEL (moved %d)", moved);
        CHECK_OK(sem_close(fd));
        CHECK_OK(sem_close(ep));
    }
}

/* A fork child closes its copies of sockets registered in an epoll it shares with its
 * parent, and exits (redis's BGSAVE and replication children close the listeners first
 * thing). On Linux a close removes a registration only with the last reference to the open
 * file, and the parent still holds it: the parent's set keeps reporting the listener and
 * the connection. Under ustack the child's close deleted the registrations from the shared
 * kernel epoll: redis-server stopped accepting after its first full sync to a replica. */
static void fork_child_close_keeps_set(void)
{
    int l = sem_listen_self(4, SOCK_NONBLOCK), fd = sem_connect_peer(SEM_P_ECHO), ep = ep_new();
    CHECK(l >= 0 && fd >= 0, "listen, connect");
    CHECK_OK(ep_add(ep, l, EPOLLIN, 1));
    CHECK_OK(ep_add(ep, fd, EPOLLIN, 2));
    pid_t pid = fork();
    CHECK(pid >= 0, "fork");
    if (pid == 0) {
        close(l);
        close(fd);
        _exit(0);
    }
    int st = sem_wait_child(pid, 5000);
    CHECK(st == 0, "child: status %d", st);
    CHECK(ep_wait1(ep, 0, NULL) == 0, "idle set reports");
    CHECK_OK(echo_byte(fd));
    struct epoll_event ev;
    CHECK(ep_wait1(ep, 1000, &ev) == 1 && ev.data.u64 == 2 && ev.events == EPOLLIN,
          "connection's event after the child's close");
    char b;
    CHECK(recv(fd, &b, 1, 0) == 1, "recv");
    int c = sem_ctl(sem_lport(4), 0, 0, 1);
    CHECK(c >= 0, "control");
    CHECK(ep_wait1(ep, 5000, &ev) == 1 && ev.data.u64 == 1 && ev.events == EPOLLIN,
          "listener's event after the child's close");
    int s = sem_track(accept(l, NULL, NULL));
    CHECK(s >= 0, "accept");
}

/* Two processes wait on one listener with EPOLLEXCLUSIVE (nginx workers with accept_mutex
 * off). The one woken for the first connection closes the listener and leaves without
 * accepting (an old worker at a reload); the other must still get the connections: on Linux
 * the next connection wakes it. Under ustack the stack signals a listener again only once a
 * waiter re-arms, which the one that left never did: the other slept on with connections
 * queued (an nginx reload under ab stalled the run now and then). */
static int exclusive_child(int l, _Atomic int *left)
{
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN | EPOLLEXCLUSIVE};
    if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, l, &ev) < 0)
        return 2;
    for (;;) {
        int n = epoll_wait(ep, &ev, 1, 6000);
        if (n == 0)
            return 30;
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return 3;
        if (atomic_exchange(left, 1) == 0) {
            close(l);
            close(ep);
            return 10;
        }
        int c = accept(l, NULL, NULL);
        if (c >= 0) {
            close(c);
            return 20;
        }
        if (errno != EAGAIN)
            return 4;
    }
}

static void exclusive_waiter_leaves(void)
{
    int l = sem_listen_self(3, SOCK_NONBLOCK);
    CHECK(l >= 0, "listen");
    _Atomic int *left = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    CHECK(left != MAP_FAILED, "mmap");
    atomic_store(left, 0);
    pid_t pid[2];
    for (int i = 0; i < 2; i++) {
        pid[i] = fork();
        CHECK(pid[i] >= 0, "fork");
        if (pid[i] == 0)
            _exit(exclusive_child(l, left));
    }
    sem_untrack(l);
    close(l);
    sem_sleep_ms(300); /* both asleep in epoll_wait */
    int c1 = sem_ctl(sem_lport(3), 0, 0, 1);
    sem_sleep_ms(300);
    int c2 = sem_ctl(sem_lport(3), 0, 0, 1);
    int st[2];
    for (int i = 0; i < 2; i++) {
        double end = sem_ms() + 10000;
        while (waitpid(pid[i], &st[i], WNOHANG) == 0 && sem_ms() < end)
            sem_sleep_ms(10);
        if (sem_ms() >= end) {
            kill(pid[i], SIGKILL);
            waitpid(pid[i], &st[i], 0);
        }
        st[i] = WIFEXITED(st[i]) ? WEXITSTATUS(st[i]) : 128 + WTERMSIG(st[i]);
    }
    munmap((void *)left, 4096);
    CHECK(c1 >= 0 && c2 >= 0, "control");
    CHECK(st[0] + st[1] == 30 && (st[0] == 10 || st[0] == 20),
          "waiters ended %d and %d (10 left, 20 accepted, 30 timed out)", st[0], st[1]);
}

/* A thread already waiting on an epoll set when another thread adds the first socket
 * (Java's EPollPort: its thread waits on the set, holding only a pipe, before the first
 * channel registers): it gets the socket's event with the socket's data. Under ustack the
 * wait had gone to the kernel as for a plain kernel set, and returned ustack's internal
 * event (EPOLLIN, its own data), so the one-shot registration never reported. */
struct first_add {
    int ep, n;
    struct epoll_event ev;
};

static void *wait_first(void *arg)
{
    struct first_add *w = arg;
    w->n = epoll_wait(w->ep, &w->ev, 1, 5000);
    return NULL;
}

/* A closed member's number, taken by a new socket: the set holds nothing for it (the last
 * close removed the registration) until the new socket is added, and then reports it with its
 * own tag. Under ustack the number is mostly the closed socket's eventfd kept as a spare,
 * whose registration stayed in the set (docs/preload.md "Spare eventfds"): a new socket that
 * is not added must not be reported, one that is added right away (an accept loop) must.
 * mode: 0 or EPOLLET. */
static void reused_number(uint32_t mode)
{
    int ep = ep_new(), a = sem_connect_peer(SEM_P_ECHO);
    CHECK(a >= 0, "connect");
    CHECK_OK(ep_add(ep, a, EPOLLIN | mode, 1));
    CHECK_OK(echo_byte(a)); /* closed while readable */
    sem_untrack(a);
    CHECK_OK(close(a));
    int b = sem_connect_peer(SEM_P_ECHO);
    CHECK(b >= 0, "second connect");
    CHECK_OK(echo_byte(b));
    CHECK(ep_wait1(ep, 200, NULL) == 0, "a socket not in the set reported (number %d, was %d)", b,
          a);
    CHECK_OK(ep_add(ep, b, EPOLLIN | mode, 2));
    struct epoll_event ev;
    CHECK(ep_wait1(ep, 1000, &ev) == 1 && ev.data.u64 == 2 && ev.events == EPOLLIN,
          "the added socket: events %#x tag %llu", ev.events, (unsigned long long)ev.data.u64);
    sem_untrack(b);
    CHECK_OK(close(b));
    int c = sem_connect_peer(SEM_P_ECHO);
    CHECK(c >= 0, "third connect");
    CHECK_OK(ep_add(ep, c, EPOLLIN | mode, 3));
    CHECK(ep_wait1(ep, 100, NULL) == 0, "an idle socket added over a closed one reported");
    CHECK_OK(echo_byte(c));
    CHECK(ep_wait1(ep, 1000, &ev) == 1 && ev.data.u64 == 3 && ev.events == EPOLLIN,
          "the socket added over a closed one: events %#x tag %llu", ev.events,
          (unsigned long long)ev.data.u64);
    CHECK(ep_wait1(ep, 0, NULL) == (mode ? 0 : 1), "second wait (%s)", mode ? "edge" : "level");
    char ch;
    CHECK(recv(c, &ch, 1, 0) == 1, "recv");
    CHECK(ep_wait1(ep, 0, NULL) == 0, "drained socket reported");
}

static void reused_number_level(void)
{
    reused_number(0);
}

static void reused_number_edge(void)
{
    reused_number(EPOLLET);
}

/* The closed member's number goes to a socket added to another set: only that set reports
 * it, and a wait on the first one does not take the wake-up from it. */
static void reused_number_other_set(void)
{
    int ep1 = ep_new(), ep2 = ep_new(), a = sem_connect_peer(SEM_P_ECHO);
    CHECK(a >= 0, "connect");
    CHECK_OK(ep_add(ep1, a, EPOLLIN, 1));
    sem_untrack(a);
    CHECK_OK(close(a));
    int b = sem_connect_peer(SEM_P_ECHO);
    CHECK(b >= 0, "second connect");
    CHECK_OK(ep_add(ep2, b, EPOLLIN, 2));
    CHECK_OK(echo_byte(b));
    CHECK(ep_wait1(ep1, 100, NULL) == 0, "the first set reported the new socket");
    struct epoll_event ev;
    CHECK(ep_wait1(ep2, 1000, &ev) == 1 && ev.data.u64 == 2 && ev.events == EPOLLIN,
          "the second set: events %#x tag %llu", ev.events, (unsigned long long)ev.data.u64);
    CHECK(ep_wait1(ep1, 0, NULL) == 0, "the first set, again");
}

/* An edge-triggered member closed while its eventfd still counted a signal: under ustack
 * that eventfd becomes a spare without being emptied (docs/preload.md "Spare eventfds").
 * The idle new socket on the number must look ready nowhere: not to the set it is added to
 * edge-triggered, nor to another level-triggered, nor to poll(), nor to a blocking recv;
 * and its first arrival is reported once. */
static void reused_number_edge_stale(void)
{
    int ep1 = ep_new(), ep2 = ep_new(), a = sem_connect_peer(SEM_P_ECHO);
    CHECK(a >= 0, "connect");
    CHECK_OK(ep_add(ep1, a, EPOLLIN | EPOLLET, 1));
    CHECK_OK(echo_byte(a));
    struct epoll_event ev;
    CHECK(ep_wait1(ep1, 1000, &ev) == 1 && ev.data.u64 == 1, "the first socket's arrival");
    sem_untrack(a);
    CHECK_OK(close(a)); /* unread: its signal is still counted */
    int b = sem_connect_peer(SEM_P_ECHO);
    CHECK(b >= 0, "second connect");
    CHECK_OK(ep_add(ep1, b, EPOLLIN | EPOLLET, 2));
    CHECK_OK(ep_add(ep2, b, EPOLLIN, 3));
    CHECK(ep_wait1(ep1, 100, NULL) == 0, "the edge-triggered set reported an idle socket");
    CHECK(ep_wait1(ep2, 100, NULL) == 0, "the level-triggered set reported an idle socket");
    CHECK(sem_wait_fd(b, POLLIN, 100) == 0, "poll() reported an idle socket");
    struct timeval tv = {0, 100000};
    CHECK_OK(setsockopt(b, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv));
    char ch;
    double t0 = sem_ms();
    CHECK_ERR(recv(b, &ch, 1, 0), EAGAIN);
    CHECK(sem_ms() - t0 >= 80, "recv gave up after %.0f ms of a 100 ms timeout", sem_ms() - t0);
    CHECK_OK(echo_byte(b));
    CHECK(ep_wait1(ep1, 1000, &ev) == 1 && ev.data.u64 == 2 && ev.events == EPOLLIN,
          "the edge-triggered set: events %#x tag %llu", ev.events,
          (unsigned long long)ev.data.u64);
    CHECK(ep_wait1(ep1, 100, NULL) == 0, "one arrival reported twice");
    CHECK(ep_wait1(ep2, 0, &ev) == 1 && ev.data.u64 == 3 && ev.events == EPOLLIN,
          "the level-triggered set: events %#x tag %llu", ev.events,
          (unsigned long long)ev.data.u64);
    CHECK(recv(b, &ch, 1, 0) == 1, "recv");
    CHECK(ep_wait1(ep2, 0, NULL) == 0, "the level-triggered set reported a drained socket");
}

/* A set with a closed member's number in it, shared by fork: the child's new socket on that
 * number, added to the set, is reported to the child; then the parent's, to the parent. */
static void reused_number_after_fork(void)
{
    int ep = ep_new(), a = sem_connect_peer(SEM_P_ECHO);
    CHECK(a >= 0, "connect");
    CHECK_OK(ep_add(ep, a, EPOLLIN, 1));
    sem_untrack(a);
    CHECK_OK(close(a));
    pid_t pid = fork();
    CHECK(pid >= 0, "fork");
    if (pid == 0) {
        struct epoll_event cev;
        int b = sem_connect_peer(SEM_P_ECHO);
        if (b < 0 || ep_add(ep, b, EPOLLIN, 2) < 0)
            _exit(2);
        if (echo_byte(b) < 0)
            _exit(3);
        if (ep_wait1(ep, 2000, &cev) != 1 || cev.data.u64 != 2)
            _exit(4);
        _exit(0);
    }
    int st = sem_wait_child(pid, 10000);
    CHECK(st == 0, "child: status %d", st);
    int c = sem_connect_peer(SEM_P_ECHO);
    CHECK(c >= 0, "parent's connect");
    CHECK_OK(ep_add(ep, c, EPOLLIN, 3));
    CHECK_OK(echo_byte(c));
    struct epoll_event ev;
    CHECK(ep_wait1(ep, 1000, &ev) == 1 && ev.data.u64 == 3 && ev.events == EPOLLIN,
          "the parent's socket: events %#x tag %llu", ev.events, (unsigned long long)ev.data.u64);
}

/* dup2 onto a closed member's number: the number is the pipe's, the set reports nothing for
 * it until it is added, and then the pipe's readiness. */
static void dup2_onto_closed_member(void)
{
    int ep = ep_new(), a = sem_connect_peer(SEM_P_ECHO), p[2];
    CHECK(a >= 0, "connect");
    CHECK_OK(ep_add(ep, a, EPOLLIN, 1));
    CHECK_OK(echo_byte(a));
    sem_untrack(a);
    CHECK_OK(close(a));
    CHECK_OK(pipe(p));
    sem_track(p[0]);
    sem_track(p[1]);
    CHECK(dup2(p[0], a) == a, "dup2 onto the closed number");
    sem_track(a);
    CHECK(write(p[1], "x", 1) == 1, "pipe write");
    CHECK(ep_wait1(ep, 100, NULL) == 0, "the closed member reported");
    char ch = 0;
    CHECK(read(a, &ch, 1) == 1 && ch == 'x', "read through the number");
    CHECK_OK(ep_add(ep, a, EPOLLIN, 5));
    CHECK(write(p[1], "y", 1) == 1, "pipe write");
    struct epoll_event ev;
    CHECK(ep_wait1(ep, 1000, &ev) == 1 && ev.data.u64 == 5, "the pipe at the number");
}

/* EPOLL_CTL_DEL, then the socket's events: the set does not report it (under ustack the
 * kernel's registration may stay parked until it fires, docs/preload.md "Spare eventfds");
 * added back (with a new tag, edge-triggered), it is reported at once as it is ready, with
 * the new tag, once. A second DEL is ENOENT. */
static void del_then_add_back(void)
{
    int ep = ep_new(), fd = sem_connect_peer(SEM_P_ECHO);
    CHECK(fd >= 0, "connect");
    CHECK_OK(ep_add(ep, fd, EPOLLIN, 1));
    CHECK_OK(epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL));
    CHECK_ERR(epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL), ENOENT);
    struct epoll_event mod = {.events = EPOLLIN, .data.u64 = 9};
    CHECK_ERR(epoll_ctl(ep, EPOLL_CTL_MOD, fd, &mod), ENOENT);
    CHECK_OK(echo_byte(fd));
    CHECK(ep_wait1(ep, 100, NULL) == 0, "a removed socket reported");
    CHECK(sem_wait_fd(fd, POLLIN, 0) == POLLIN, "the socket itself stays readable");
    CHECK_OK(ep_add(ep, fd, EPOLLIN | EPOLLET, 2));
    struct epoll_event ev;
    CHECK(ep_wait1(ep, 1000, &ev) == 1 && ev.data.u64 == 2 && ev.events == EPOLLIN,
          "added back: events %#x tag %llu", ev.events, (unsigned long long)ev.data.u64);
    CHECK(ep_wait1(ep, 0, NULL) == 0, "edge-triggered: reported twice");
    CHECK_OK(epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL));
    CHECK_OK(ep_add(ep, fd, EPOLLIN, 3));
    CHECK(ep_wait1(ep, 1000, &ev) == 1 && ev.data.u64 == 3, "level-triggered again");
    CHECK(ep_wait1(ep, 0, &ev) == 1 && ev.data.u64 == 3, "level-triggered, second wait");
}

/* A socket removed from a set before fork: the child adds it to the shared set (Linux: a new
 * registration, not EEXIST) and gets its event. */
static void del_then_fork_child_adds(void)
{
    int ep = ep_new(), fd = sem_connect_peer(SEM_P_ECHO);
    CHECK(fd >= 0, "connect");
    CHECK_OK(ep_add(ep, fd, EPOLLIN, 1));
    CHECK_OK(epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL));
    pid_t pid = fork();
    CHECK(pid >= 0, "fork");
    if (pid == 0) {
        struct epoll_event cev;
        if (ep_add(ep, fd, EPOLLIN, 2) < 0)
            _exit(errno == EEXIST ? 2 : 3);
        if (echo_byte(fd) < 0)
            _exit(4);
        if (ep_wait1(ep, 2000, &cev) != 1 || cev.data.u64 != 2)
            _exit(5);
        _exit(0);
    }
    int st = sem_wait_child(pid, 10000);
    CHECK(st == 0, "child: status %d (2: EEXIST)", st);
}

/* EPOLL_CTL_DEL, then EPOLL_CTL_ADD of the same socket with EPOLLEXCLUSIVE (and with
 * EPOLLONESHOT); then a closed member's number taken by a new socket, added with
 * EPOLLEXCLUSIVE: Linux accepts every one and reports the socket with its new tag. (Under
 * ustack the plain registration stays parked in the kernel's set, docs/preload.md "Spare
 * eventfds"; the kernel refuses to EPOLL_CTL_MOD a registration to EPOLLEXCLUSIVE, so the
 * first version of the change failed these ADDs with EINVAL.) */
static void readd_exclusive(void)
{
    int ep = ep_new(), fd = sem_connect_peer(SEM_P_ECHO);
    CHECK(fd >= 0, "connect");
    CHECK_OK(ep_add(ep, fd, EPOLLIN, 1));
    CHECK_OK(epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL));
    CHECK_OK(ep_add(ep, fd, EPOLLIN | EPOLLEXCLUSIVE, 2));
    CHECK(ep_wait1(ep, 100, NULL) == 0, "an idle exclusive member reported");
    CHECK_OK(echo_byte(fd));
    struct epoll_event ev;
    CHECK(ep_wait1(ep, 1000, &ev) == 1 && ev.data.u64 == 2 && ev.events == EPOLLIN,
          "exclusive, added back: events %#x tag %llu", ev.events, (unsigned long long)ev.data.u64);
    CHECK_OK(epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL));
    CHECK_OK(ep_add(ep, fd, EPOLLIN, 3));
    CHECK_OK(epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL));
    CHECK_OK(ep_add(ep, fd, EPOLLIN | EPOLLONESHOT, 4));
    CHECK(ep_wait1(ep, 1000, &ev) == 1 && ev.data.u64 == 4, "one-shot, added back");
    CHECK(ep_wait1(ep, 0, NULL) == 0, "one-shot: reported twice");
    CHECK_ERR(ep_add(ep, fd, EPOLLIN, 5), EEXIST); /* disabled, still a member */
    sem_untrack(fd);
    CHECK_OK(close(fd));
    int b = sem_connect_peer(SEM_P_ECHO);
    CHECK(b >= 0, "second connect");
    CHECK_OK(ep_add(ep, b, EPOLLIN, 6));
    sem_untrack(b);
    CHECK_OK(close(b));
    int c = sem_connect_peer(SEM_P_ECHO);
    CHECK(c >= 0, "third connect");
    CHECK_OK(ep_add(ep, c, EPOLLIN | EPOLLEXCLUSIVE, 7));
    CHECK(ep_wait1(ep, 100, NULL) == 0, "an idle socket added over a closed one reported");
    CHECK_OK(echo_byte(c));
    CHECK(ep_wait1(ep, 1000, &ev) == 1 && ev.data.u64 == 7 && ev.events == EPOLLIN,
          "exclusive over a closed member: events %#x tag %llu", ev.events,
          (unsigned long long)ev.data.u64);
}

static void member_added_while_waiting(void)
{
    int ep = ep_new(), p[2];
    CHECK_OK(pipe(p));
    CHECK_OK(ep_add(ep, p[0], EPOLLIN, 0x9999));
    struct first_add w = {.ep = ep, .n = -2};
    pthread_t t;
    CHECK(pthread_create(&t, NULL, wait_first, &w) == 0, "pthread_create");
    sem_sleep_ms(200);
    int fd = sem_tcp(SOCK_NONBLOCK);
    struct sockaddr_in a = sem_peer_addr(SEM_P_ECHO);
    CHECK(connect(fd, (struct sockaddr *)&a, sizeof a) == 0 || errno == EINPROGRESS, "connect");
    CHECK_OK(ep_add(ep, fd, EPOLLOUT | EPOLLONESHOT, 0x1234));
    pthread_join(t, NULL);
    close(p[0]);
    close(p[1]);
    CHECK(w.n == 1 && w.ev.events == EPOLLOUT && w.ev.data.u64 == 0x1234,
          "epoll_wait returned %d: events 0x%x data 0x%llx", w.n, w.ev.events,
          (unsigned long long)w.ev.data.u64);
}

int main(void)
{
    sem_init("sem_epoll", 6);
    SEM_RUN(epollout_after_connect);
    SEM_RUN(fresh_socket_hup);
    SEM_RUN(level_triggered);
    SEM_RUN(edge_triggered);
    SEM_RUN(edge_epollout);
    SEM_RUN(level_mod_toggle);
    SEM_RUN(oneshot);
    SEM_RUN(rdhup);
    SEM_RUN(reset_err_hup);
    SEM_RUN(exclusive);
    SEM_RUN(two_instances);
    SEM_RUN(nested);
    SEM_RUN(mixed_set);
    SEM_RUN(ctl_errors);
    SEM_RUN(ctl_del);
    SEM_RUN(close_removes);
    SEM_RUN(close_with_dup);
    SEM_RUN(listener);
    SEM_RUN(full_not_writable);
    SEM_RUN(round_robin);
    SEM_RUN(round_robin_mixed);
    SEM_RUN(fork_shares_set);
    SEM_RUN(fork_child_closes_member);
    SEM_RUN(fork_child_close_keeps_set);
    SEM_RUN(member_added_while_waiting);
    SEM_RUN(exclusive_waiter_leaves);
    SEM_RUN(reused_number_level);
    SEM_RUN(reused_number_edge);
    SEM_RUN(reused_number_other_set);
    SEM_RUN(reused_number_edge_stale);
    SEM_RUN(reused_number_after_fork);
    SEM_RUN(dup2_onto_closed_member);
    SEM_RUN(del_then_add_back);
    SEM_RUN(del_then_fork_child_adds);
    SEM_RUN(readd_exclusive);
    return sem_done();
}

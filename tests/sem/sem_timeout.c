/* tests/sem/sem_timeout.c - SO_RCVTIMEO and SO_SNDTIMEO on recv, accept, send and connect;
 * SO_LINGER's wait in close().
 * Elapsed times must lie within +-50% of the timeout. Every expectation is what Linux does;
 * run.sh proves it by running this on the kernel. */
#include "sem.h"

#include <sys/time.h>

#define TMO_MS 300

static int set_tmo(int fd, int opt, int ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    return setsockopt(fd, SOL_SOCKET, opt, &tv, sizeof tv);
}

static int within(double ms, int want)
{
    return ms >= want * 0.5 && ms <= want * 1.5;
}

/* The timeout reads back as set; 0 means "never" and reads back as 0. */
static void readback(void)
{
    int fd = sem_tcp(0);
    CHECK_OK(set_tmo(fd, SO_RCVTIMEO, 1500));
    struct timeval tv;
    socklen_t l = sizeof tv;
    CHECK_OK(getsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, &l));
    CHECK(l == sizeof tv && tv.tv_sec == 1 && tv.tv_usec == 500000, "read back %ld.%06ld",
          (long)tv.tv_sec, (long)tv.tv_usec);
    CHECK_OK(set_tmo(fd, SO_SNDTIMEO, 0));
    l = sizeof tv;
    CHECK_OK(getsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, &l));
    CHECK(tv.tv_sec == 0 && tv.tv_usec == 0, "zero read back %ld.%06ld", (long)tv.tv_sec,
          (long)tv.tv_usec);
}

/* tv_usec out of range is EDOM; a short option length is EINVAL. */
static void bad_values(void)
{
    int fd = sem_tcp(0);
    struct timeval tv = {0, 1000000};
    CHECK_ERR(setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv), EDOM);
    tv.tv_usec = -1;
    CHECK_ERR(setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv), EDOM);
    tv.tv_usec = 0;
    CHECK_ERR(setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, 4), EINVAL);
}

/* A negative tv_sec is accepted and means "no timeout" (Linux warns once in its log). */
static void negative_seconds(void)
{
    int fd = sem_tcp(0);
    struct timeval tv = {-1, 0};
    CHECK_OK(setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv));
    socklen_t l = sizeof tv;
    CHECK_OK(getsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, &l));
    CHECK(tv.tv_sec == 0 && tv.tv_usec == 0, "read back %ld.%06ld", (long)tv.tv_sec,
          (long)tv.tv_usec);
}

/* recv on an idle connection: EAGAIN after the timeout. */
static void recv_timeout(void)
{
    int fd = sem_connect_peer(SEM_P_ECHO);
    CHECK(fd >= 0, "connect");
    CHECK_OK(set_tmo(fd, SO_RCVTIMEO, TMO_MS));
    char buf[8];
    double t0 = sem_ms();
    CHECK_ERR(recv(fd, buf, sizeof buf, 0), EAGAIN);
    double dt = sem_ms() - t0;
    CHECK(within(dt, TMO_MS), "recv timed out after %.0f ms, want %d", dt, TMO_MS);
    t0 = sem_ms();
    CHECK_ERR(read(fd, buf, sizeof buf), EAGAIN);
    dt = sem_ms() - t0;
    CHECK(within(dt, TMO_MS), "read timed out after %.0f ms, want %d", dt, TMO_MS);
    /* The connection is fine afterwards. */
    CHECK(send(fd, "ok", 2, 0) == 2, "send after timeout");
    CHECK(recv(fd, buf, 2, MSG_WAITALL) == 2 && !memcmp(buf, "ok", 2), "echo after timeout");
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

/* Data that arrives before the timeout ends the wait early. */
static void recv_data_before_timeout(void)
{
    int fd = sem_connect_peer(SEM_P_ECHO);
    CHECK(fd >= 0, "connect");
    CHECK_OK(set_tmo(fd, SO_RCVTIMEO, 2000));
    struct delayed d = {fd, 150};
    pthread_t t;
    CHECK(pthread_create(&t, NULL, send_later, &d) == 0, "pthread_create");
    char buf[8];
    double t0 = sem_ms();
    ssize_t n = recv(fd, buf, sizeof buf, 0);
    double dt = sem_ms() - t0;
    pthread_join(t, NULL);
    CHECK(n >= 1, "recv returned %zd", n);
    CHECK(dt >= 100 && dt < 1500, "recv returned after %.0f ms", dt);
}

/* MSG_WAITALL with a timeout: the bytes that came are returned when the timeout ends. */
static void waitall_partial(void)
{
    int fd = sem_connect_peer(SEM_P_ECHO);
    CHECK(fd >= 0, "connect");
    CHECK_OK(set_tmo(fd, SO_RCVTIMEO, TMO_MS));
    CHECK(send(fd, "0123456789", 10, 0) == 10, "send");
    char buf[100];
    double t0 = sem_ms();
    ssize_t n = recv(fd, buf, sizeof buf, MSG_WAITALL);
    double dt = sem_ms() - t0;
    CHECK(n == 10, "recv MSG_WAITALL returned %zd, want 10", n);
    CHECK(within(dt, TMO_MS), "returned after %.0f ms, want %d", dt, TMO_MS);
}

/* accept: EAGAIN after the timeout. */
static void accept_timeout(void)
{
    int l = sem_listen_self(0, 0);
    CHECK(l >= 0, "listen");
    CHECK_OK(set_tmo(l, SO_RCVTIMEO, TMO_MS));
    double t0 = sem_ms();
    CHECK_ERR(accept(l, NULL, NULL), EAGAIN);
    double dt = sem_ms() - t0;
    CHECK(within(dt, TMO_MS), "accept timed out after %.0f ms, want %d", dt, TMO_MS);
}

/* An accepted socket inherits the listener's timeouts: on Linux it is a clone of the
 * listener, options included. */
static void accept_inherits_timeout(void)
{
    int l = sem_listen_self(1, 0);
    CHECK(l >= 0, "listen");
    CHECK_OK(set_tmo(l, SO_RCVTIMEO, TMO_MS));
    CHECK_OK(set_tmo(l, SO_SNDTIMEO, 700));
    int c = sem_ctl(sem_lport(1), 0, 0, 1);
    CHECK(c >= 0, "control");
    int s = sem_accept_within(l, 5000);
    CHECK(s >= 0, "accept");
    struct timeval tv;
    socklen_t len = sizeof tv;
    CHECK_OK(getsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, &len));
    CHECK(tv.tv_sec == 0 && tv.tv_usec == TMO_MS * 1000, "accepted SO_RCVTIMEO %ld.%06ld",
          (long)tv.tv_sec, (long)tv.tv_usec);
    len = sizeof tv;
    CHECK_OK(getsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, &len));
    CHECK(tv.tv_sec == 0 && tv.tv_usec == 700000, "accepted SO_SNDTIMEO %ld.%06ld", (long)tv.tv_sec,
          (long)tv.tv_usec);
    char ch;
    double t0 = sem_ms();
    CHECK_ERR(recv(s, &ch, 1, 0), EAGAIN);
    CHECK(within(sem_ms() - t0, TMO_MS), "inherited timeout took %.0f ms", sem_ms() - t0);
}

/* send against a peer that never reads: a big send returns what it queued when the timeout
 * ends; the next send, with no room at all, fails with EAGAIN after the timeout. */
static void send_timeout(void)
{
    int fd = sem_connect_peer(SEM_P_SINK);
    CHECK(fd >= 0, "connect to sink");
    CHECK_OK(set_tmo(fd, SO_SNDTIMEO, TMO_MS));
    size_t big = 16 << 20;
    char *buf = calloc(1, big);
    CHECK(buf, "calloc");
    double t0 = sem_ms();
    ssize_t n = send(fd, buf, big, 0);
    double dt = sem_ms() - t0;
    int e = errno;
    free(buf);
    errno = e;
    CHECK(n > 0 && (size_t)n < big, "big send returned %zd", n);
    CHECK(within(dt, TMO_MS), "big send returned after %.0f ms, want %d", dt, TMO_MS);
    /* Let the last ACKs in, then the buffer is full for good. */
    sem_sleep_ms(300);
    char small[65536] = {0};
    double end = sem_ms() + 5000;
    ssize_t m;
    do {
        t0 = sem_ms();
        m = send(fd, small, sizeof small, 0);
        dt = sem_ms() - t0;
    } while (m > 0 && sem_ms() < end);
    CHECK(m == -1 && errno == EAGAIN, "send on a full buffer returned %zd", m);
    CHECK(within(dt, TMO_MS), "EAGAIN after %.0f ms, want %d", dt, TMO_MS);
}

/* Linux bounds a blocking connect by SO_SNDTIMEO and then reports EINPROGRESS (the
 * handshake goes on in the background). */
static void connect_timeout(void)
{
    int fd = sem_tcp(0);
    CHECK_OK(set_tmo(fd, SO_SNDTIMEO, TMO_MS));
    struct sockaddr_in a = sem_sin(sem_unreach(2), sem_port_base);
    double t0 = sem_ms();
    CHECK_ERR(connect(fd, (struct sockaddr *)&a, sizeof a), EINPROGRESS);
    double dt = sem_ms() - t0;
    CHECK(within(dt, TMO_MS), "connect returned after %.0f ms, want %d", dt, TMO_MS);
    CHECK_ERR(connect(fd, (struct sockaddr *)&a, sizeof a), EALREADY);
}

/* SO_RCVTIMEO does not bound a blocking connect, nor SO_SNDTIMEO a recv. */
static void timeouts_are_separate(void)
{
    int fd = sem_connect_peer(SEM_P_ECHO);
    CHECK(fd >= 0, "connect");
    CHECK_OK(set_tmo(fd, SO_SNDTIMEO, 100));
    CHECK_OK(set_tmo(fd, SO_RCVTIMEO, 600));
    char ch;
    double t0 = sem_ms();
    CHECK_ERR(recv(fd, &ch, 1, 0), EAGAIN);
    double dt = sem_ms() - t0;
    CHECK(within(dt, 600), "recv timed out after %.0f ms, want 600", dt);
}

/* poll's own timeout, for comparison: 0 after about the time asked. */
static void poll_timeout(void)
{
    int fd = sem_connect_peer(SEM_P_ECHO);
    CHECK(fd >= 0, "connect");
    double t0 = sem_ms();
    CHECK(sem_wait_fd(fd, POLLIN, TMO_MS) == 0, "idle socket readable");
    double dt = sem_ms() - t0;
    CHECK(within(dt, TMO_MS), "poll returned after %.0f ms, want %d", dt, TMO_MS);
}

/* TCP_USER_TIMEOUT (tcp(7)): 0 by default, negative is EINVAL, inherited from the listener;
 * data waiting on a zero window fails the connection with ETIMEDOUT once it has waited that
 * long, although the peer (the sink, which never reads) answers every window probe, and
 * without the option such a connection would stay for ever. */
static void user_timeout(void)
{
    int l = sem_listen_self(3, 0);
    CHECK(l >= 0, "listen");
    int v = -1;
    socklen_t len = sizeof v;
    CHECK_OK(getsockopt(l, IPPROTO_TCP, TCP_USER_TIMEOUT, &v, &len));
    CHECK(v == 0 && len == sizeof v, "default %d (len %u)", v, len);
    v = -1;
    CHECK_ERR(setsockopt(l, IPPROTO_TCP, TCP_USER_TIMEOUT, &v, sizeof v), EINVAL);
    v = 2500;
    CHECK_OK(setsockopt(l, IPPROTO_TCP, TCP_USER_TIMEOUT, &v, sizeof v));
    int c = sem_ctl(sem_lport(3), 0, 0, 1);
    CHECK(c >= 0, "control");
    int s = sem_accept_within(l, 5000);
    CHECK(s >= 0, "accept");
    v = 0;
    len = sizeof v;
    CHECK_OK(getsockopt(s, IPPROTO_TCP, TCP_USER_TIMEOUT, &v, &len));
    CHECK(v == 2500, "accepted socket's TCP_USER_TIMEOUT %d", v);

    int fd = sem_connect_peer(SEM_P_SINK);
    CHECK(fd >= 0, "connect to sink");
    CHECK(sem_fill_sndbuf(fd) > 0, "fill the send buffer");
    v = 1000;
    CHECK_OK(setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &v, sizeof v));
    double t0 = sem_ms();
    int ev = sem_wait_fd(fd, POLLOUT, 15000);
    double dt = sem_ms() - t0;
    CHECK(ev & POLLERR, "poll: 0x%x after %.0f ms (want POLLERR)", (unsigned)ev, dt);
    int err = 0;
    len = sizeof err;
    CHECK_OK(getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len));
    CHECK(err == ETIMEDOUT, "SO_ERROR %s", sem_ename(err));
}

/* SO_LINGER with a timeout (socket(7)): the last close() waits until the FIN is acknowledged
 * or l_linger seconds passed, then returns 0, a non-blocking socket's too. A peer that
 * acknowledges at once (echo): close() returns at once; a peer that never reads (sink, its
 * window full): after about l_linger seconds. Under ustack close() did not wait before. */
static void linger_close_waits(void)
{
    struct linger lg = {1, 1};
    int fd = sem_connect_peer(SEM_P_ECHO);
    CHECK(fd >= 0, "connect");
    CHECK_OK(setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg));
    char buf[4];
    CHECK(send(fd, "abc", 3, 0) == 3 && sem_read_full(fd, buf, 3, 5000) == 3, "echo");
    double t0 = sem_ms();
    CHECK_OK(close(fd));
    double dt = sem_ms() - t0;
    CHECK(dt < 500, "close() to a peer that acknowledges took %.0f ms", dt);

    fd = sem_connect_peer(SEM_P_SINK);
    CHECK(fd >= 0, "connect to sink");
    CHECK(sem_fill_sndbuf(fd) > 0, "fill the send buffer");
    CHECK_OK(setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg));
    t0 = sem_ms();
    CHECK_OK(close(fd));
    dt = sem_ms() - t0;
    CHECK(within(dt, 1000), "close() with l_linger 1 and data the peer never takes: %.0f ms", dt);
}

/* A signal ends a lingering close() early (Linux's sk_stream_wait_close stops at a pending
 * signal), and close() still returns 0: the socket is gone either way, its FIN and data
 * left to the stack. */
static volatile sig_atomic_t linger_alarms;
static void on_linger_alarm(int sig)
{
    (void)sig;
    linger_alarms++;
}

static void linger_close_signal(void)
{
    struct linger lg = {1, 4};
    /* The second socket is made ready first: filling a send buffer takes a second or two. */
    int fd2 = sem_connect_peer(SEM_P_SINK);
    CHECK(fd2 >= 0, "connect to sink");
    CHECK(sem_fill_sndbuf(fd2) > 0, "fill the send buffer");
    int fd = sem_connect_peer(SEM_P_SINK);
    CHECK(fd >= 0, "connect to sink again");
    CHECK(sem_fill_sndbuf(fd) > 0, "fill the send buffer again");
    CHECK_OK(setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg));
    struct sigaction sa, old;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_linger_alarm; /* no SA_RESTART: it would change nothing for close() */
    sigemptyset(&sa.sa_mask);
    CHECK_OK(sigaction(SIGALRM, &sa, &old));
    struct itimerval it = {{0, 0}, {0, 300 * 1000}}, off = {{0, 0}, {0, 0}};
    linger_alarms = 0;
    CHECK_OK(setitimer(ITIMER_REAL, &it, NULL));
    double t0 = sem_ms();
    int rc = close(fd);
    int e = errno;
    double dt = sem_ms() - t0;
    setitimer(ITIMER_REAL, &off, NULL);
    sigaction(SIGALRM, &old, NULL);
    CHECK(rc == 0, "close() returned %d, errno %d", rc, e);
    CHECK(linger_alarms == 1, "the alarm ran %d times", (int)linger_alarms);
    CHECK(within(dt, 300), "close() with l_linger 4 and a signal after 300 ms took %.0f ms", dt);
    /* The next lingering close of this thread waits for its own end, not the first one's:
     * it starts before the first one's time (4 s) is over and lasts 2 s. */
    while (sem_ms() - t0 < 3500)
        usleep(10000);
    lg.l_linger = 2;
    CHECK_OK(setsockopt(fd2, SOL_SOCKET, SO_LINGER, &lg, sizeof lg));
    double t1 = sem_ms();
    CHECK_OK(close(fd2));
    dt = sem_ms() - t1;
    CHECK(within(dt, 2000), "the next close() with l_linger 2, from %.0f ms, took %.0f ms", t1 - t0,
          dt);
}

/* TCP_SYNCNT (tcp(7)): the SYN retransmissions before a connection attempt gives up; reads
 * 6 (tcp_syn_retries) until set, 1..127 or EINVAL, and an accepted socket has the
 * listener's. (What it does to a connection attempt is test_tcp's syncnt_sockopt: no address
 * here drops SYNs silently without failing ARP at the same 3 s.) */
static void syn_count(void)
{
    int l = sem_listen_self(4, 0);
    CHECK(l >= 0, "listen");
    int v = -1;
    socklen_t len = sizeof v;
    CHECK_OK(getsockopt(l, IPPROTO_TCP, TCP_SYNCNT, &v, &len));
    CHECK(v == 6 && len == sizeof v, "default %d (len %u)", v, len);
    v = 0;
    CHECK_ERR(setsockopt(l, IPPROTO_TCP, TCP_SYNCNT, &v, sizeof v), EINVAL);
    v = 128;
    CHECK_ERR(setsockopt(l, IPPROTO_TCP, TCP_SYNCNT, &v, sizeof v), EINVAL);
    v = 2;
    CHECK_OK(setsockopt(l, IPPROTO_TCP, TCP_SYNCNT, &v, sizeof v));
    v = 0;
    CHECK_OK(getsockopt(l, IPPROTO_TCP, TCP_SYNCNT, &v, &len));
    CHECK(v == 2, "read back %d", v);
    int c = sem_ctl(sem_lport(4), 0, 0, 1);
    CHECK(c >= 0, "control");
    int s = sem_accept_within(l, 5000);
    CHECK(s >= 0, "accept");
    v = 0;
    CHECK_OK(getsockopt(s, IPPROTO_TCP, TCP_SYNCNT, &v, &len));
    CHECK(v == 2, "accepted socket's TCP_SYNCNT %d", v);
}

int main(void)
{
    sem_init("sem_timeout", 2);
    SEM_RUN(readback);
    SEM_RUN(bad_values);
    SEM_RUN(negative_seconds);
    SEM_RUN(recv_timeout);
    SEM_RUN(recv_data_before_timeout);
    SEM_RUN(waitall_partial);
    SEM_RUN(accept_timeout);
    SEM_RUN(accept_inherits_timeout);
    SEM_RUN(send_timeout);
    SEM_RUN(connect_timeout);
    SEM_RUN(timeouts_are_separate);
    SEM_RUN(poll_timeout);
    SEM_RUN(linger_close_waits);
    SEM_RUN(linger_close_signal);
    SEM_RUN(user_timeout);
    SEM_RUN(syn_count);
    return sem_done();
}

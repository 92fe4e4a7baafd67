/* tests/sem/sem_nonblock.c - non-blocking sockets: O_NONBLOCK, SOCK_NONBLOCK, FIONBIO,
 * MSG_DONTWAIT, non-blocking connect and accept, a full send buffer.
 * Every expectation is what Linux does; run.sh proves it by running this on the kernel. */
#include "sem.h"

#include <sys/ioctl.h>

static int so_error(int fd)
{
    int err = -1;
    socklen_t l = sizeof err;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &l) < 0)
        return -1;
    return err;
}

static int set_nonblock(int fd, int on)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0)
        return -1;
    return fcntl(fd, F_SETFL, on ? fl | O_NONBLOCK : fl & ~O_NONBLOCK);
}

/* O_NONBLOCK through fcntl: an empty receive queue is EAGAIN, at once. */
static void fcntl_nonblock(void)
{
    int fd = sem_connect_peer(SEM_P_ECHO);
    CHECK(fd >= 0, "connect");
    CHECK(!(fcntl(fd, F_GETFL) & O_NONBLOCK), "blocking by default");
    CHECK_OK(set_nonblock(fd, 1));
    CHECK(fcntl(fd, F_GETFL) & O_NONBLOCK, "F_GETFL after F_SETFL");
    char buf[8];
    double t0 = sem_ms();
    CHECK_ERR(recv(fd, buf, sizeof buf, 0), EAGAIN);
    CHECK_ERR(read(fd, buf, sizeof buf), EAGAIN);
    CHECK(sem_ms() - t0 < 500, "EAGAIN took %.0f ms", sem_ms() - t0);
    CHECK(send(fd, "ab", 2, 0) == 2, "send");
    CHECK(sem_wait_fd(fd, POLLIN, 5000) & POLLIN, "echo");
    CHECK(recv(fd, buf, sizeof buf, 0) == 2, "recv after echo");
    CHECK_ERR(recv(fd, buf, sizeof buf, 0), EAGAIN);
}

/* SOCK_NONBLOCK: connect says EINPROGRESS; POLLOUT then SO_ERROR 0 means connected; a
 * repeated connect() says 0 once, then EISCONN. */
static void sock_nonblock_connect(void)
{
    int fd = sem_tcp(SOCK_NONBLOCK);
    CHECK(fd >= 0, "socket");
    CHECK(fcntl(fd, F_GETFL) & O_NONBLOCK, "SOCK_NONBLOCK not in F_GETFL");
    struct sockaddr_in a = sem_peer_addr(SEM_P_ECHO);
    CHECK_ERR(connect(fd, (struct sockaddr *)&a, sizeof a), EINPROGRESS);
    int ev = sem_wait_fd(fd, POLLOUT, 5000);
    CHECK(ev == POLLOUT, "poll revents %#x, want POLLOUT", ev);
    CHECK(so_error(fd) == 0, "SO_ERROR %d", so_error(fd));
    CHECK(sem_port_of(fd, 1) == sem_port_base + SEM_P_ECHO, "getpeername after connect");
    /* The classic "connect again to learn the result" idiom: Linux answers the first repeat
     * with 0 (the socket still counts as connecting), and only later ones with EISCONN. */
    CHECK(connect(fd, (struct sockaddr *)&a, sizeof a) == 0, "repeated connect is not 0");
    CHECK_ERR(connect(fd, (struct sockaddr *)&a, sizeof a), EISCONN);
    CHECK(send(fd, "q", 1, 0) == 1, "send");
    char ch;
    CHECK(sem_read_full(fd, &ch, 1, 5000) == 1 && ch == 'q', "echo");
}

/* A second connect while the first is in progress is EALREADY; the pending socket is
 * neither readable nor writable yet. */
static void ealready(void)
{
    int fd = sem_tcp(SOCK_NONBLOCK);
    struct sockaddr_in a = sem_sin(sem_unreach(0), sem_port_base);
    CHECK_ERR(connect(fd, (struct sockaddr *)&a, sizeof a), EINPROGRESS);
    CHECK_ERR(connect(fd, (struct sockaddr *)&a, sizeof a), EALREADY);
    CHECK(sem_wait_fd(fd, POLLIN | POLLOUT, 100) == 0, "pending connect is ready");
    CHECK(so_error(fd) == 0, "SO_ERROR while pending: %d", so_error(fd));
    struct sockaddr_in b = sem_peer_addr(SEM_P_ECHO);
    CHECK_ERR(connect(fd, (struct sockaddr *)&b, sizeof b), EALREADY);
    char ch;
    CHECK_ERR(recv(fd, &ch, 1, 0), EAGAIN);
    CHECK_ERR(send(fd, "x", 1, MSG_NOSIGNAL), EAGAIN);
}

/* A refused non-blocking connect: poll reports POLLOUT|POLLERR|POLLHUP, SO_ERROR gives
 * ECONNREFUSED once and then 0. */
static void nonblock_refused(void)
{
    int fd = sem_tcp(SOCK_NONBLOCK);
    struct sockaddr_in a = sem_peer_addr(SEM_P_NONE);
    CHECK_ERR(connect(fd, (struct sockaddr *)&a, sizeof a), EINPROGRESS);
    int ev = sem_wait_fd(fd, POLLOUT, 5000);
    CHECK(ev == (POLLOUT | POLLERR | POLLHUP), "revents %#x, want POLLOUT|POLLERR|POLLHUP", ev);
    ev = sem_wait_fd(fd, POLLIN | POLLOUT | POLLRDHUP, 0);
    CHECK(ev == (POLLIN | POLLOUT | POLLERR | POLLHUP | POLLRDHUP), "all events %#x", ev);
    CHECK(so_error(fd) == ECONNREFUSED, "SO_ERROR %s", sem_ename(so_error(fd)));
    CHECK(so_error(fd) == 0, "SO_ERROR twice: %s", sem_ename(so_error(fd)));
    ev = sem_wait_fd(fd, POLLOUT, 0);
    CHECK(ev == (POLLOUT | POLLHUP), "after SO_ERROR revents %#x, want POLLOUT|POLLHUP", ev);
}

/* A refused non-blocking connect whose error is read by the next connect() call instead. */
static void nonblock_refused_reconnect(void)
{
    int fd = sem_tcp(SOCK_NONBLOCK);
    struct sockaddr_in a = sem_peer_addr(SEM_P_NONE);
    CHECK_ERR(connect(fd, (struct sockaddr *)&a, sizeof a), EINPROGRESS);
    CHECK(sem_wait_fd(fd, POLLOUT, 5000) & POLLERR, "POLLERR");
    CHECK_ERR(connect(fd, (struct sockaddr *)&a, sizeof a), ECONNREFUSED);
    CHECK(so_error(fd) == 0, "SO_ERROR after connect read it");
    /* The socket is closed again and may try anew. */
    a = sem_peer_addr(SEM_P_ECHO);
    CHECK_ERR(connect(fd, (struct sockaddr *)&a, sizeof a), EINPROGRESS);
    CHECK(sem_wait_fd(fd, POLLOUT, 5000) == POLLOUT, "second connect");
    CHECK(so_error(fd) == 0, "SO_ERROR after second connect");
}

/* FIONBIO sets and clears O_NONBLOCK in the file status flags. */
static void fionbio(void)
{
    int fd = sem_connect_peer(SEM_P_ECHO);
    CHECK(fd >= 0, "connect");
    int on = 1;
    CHECK_OK(ioctl(fd, FIONBIO, &on));
    CHECK(fcntl(fd, F_GETFL) & O_NONBLOCK, "FIONBIO 1 not in F_GETFL");
    char buf[4];
    CHECK_ERR(recv(fd, buf, sizeof buf, 0), EAGAIN);
    on = 0;
    CHECK_OK(ioctl(fd, FIONBIO, &on));
    CHECK(!(fcntl(fd, F_GETFL) & O_NONBLOCK), "FIONBIO 0 left O_NONBLOCK");
    CHECK(send(fd, "z", 1, 0) == 1, "send");
    double t0 = sem_ms();
    CHECK(recv(fd, buf, sizeof buf, 0) == 1 && buf[0] == 'z', "blocking recv after FIONBIO 0");
    CHECK(sem_ms() - t0 < 5000, "slow echo");
}

/* MSG_DONTWAIT makes one call non-blocking and leaves the socket blocking. */
static void msg_dontwait(void)
{
    int fd = sem_connect_peer(SEM_P_ECHO);
    CHECK(fd >= 0, "connect");
    char buf[4];
    CHECK_ERR(recv(fd, buf, sizeof buf, MSG_DONTWAIT), EAGAIN);
    CHECK(!(fcntl(fd, F_GETFL) & O_NONBLOCK), "MSG_DONTWAIT changed F_GETFL");
    struct iovec iov = {buf, sizeof buf};
    struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1};
    CHECK_ERR(recvmsg(fd, &m, MSG_DONTWAIT), EAGAIN);
    CHECK(send(fd, "w", 1, MSG_DONTWAIT) == 1, "send MSG_DONTWAIT");
    CHECK(sem_wait_fd(fd, POLLIN, 5000) & POLLIN, "echo");
    CHECK(recv(fd, buf, sizeof buf, MSG_DONTWAIT) == 1, "recv MSG_DONTWAIT with data");
}

/* accept() on a non-blocking listener with nothing pending is EAGAIN. */
static void accept_eagain(void)
{
    int l = sem_listen_self(0, SOCK_NONBLOCK);
    CHECK(l >= 0, "listen");
    CHECK_ERR(accept(l, NULL, NULL), EAGAIN);
    CHECK_ERR(accept4(l, NULL, NULL, SOCK_NONBLOCK), EAGAIN);
    CHECK(sem_wait_fd(l, POLLIN | POLLOUT, 0) == 0, "idle listener is ready");
}

/* A listener made non-blocking by fcntl: POLLIN when a connection waits, accept works, the
 * new socket is blocking (O_NONBLOCK is not inherited), then EAGAIN again. */
static void accept_nonblock_ready(void)
{
    int l = sem_listen_self(1, 0);
    CHECK(l >= 0, "listen");
    CHECK_OK(set_nonblock(l, 1));
    int c = sem_ctl(sem_lport(1), 4, 0, 1);
    CHECK(c >= 0, "control");
    CHECK(sem_wait_fd(l, POLLIN, 5000) == POLLIN, "listener POLLIN");
    int s = sem_track(accept(l, NULL, NULL));
    CHECK(s >= 0, "accept");
    CHECK(!(fcntl(s, F_GETFL) & O_NONBLOCK), "accepted socket is non-blocking");
    char buf[4];
    CHECK(recv(s, buf, 4, MSG_WAITALL) == 4 && sem_check_pat(buf, 0, 4) < 0, "data");
    CHECK_ERR(accept(l, NULL, NULL), EAGAIN);
}

/* Against a peer that never reads, a big send on a non-blocking socket is partial, then
 * EAGAIN; the socket is not writable. */
static void send_fills(void)
{
    int fd = sem_connect_peer(SEM_P_SINK);
    CHECK(fd >= 0, "connect to sink");
    CHECK_OK(set_nonblock(fd, 1));
    size_t big = 8 << 20;
    char *buf = calloc(1, big);
    CHECK(buf, "calloc");
    ssize_t n = send(fd, buf, big, 0);
    int e = errno;
    if (n < 0 || (size_t)n >= big) {
        free(buf);
        errno = e;
        CHECK(0, "first big send returned %zd, want partial", n);
    }
    free(buf);
    long total = sem_fill_sndbuf(fd);
    CHECK(total >= 0, "filling the send buffer (after a first %zd)", n);
    CHECK_ERR(send(fd, "x", 1, 0), EAGAIN);
    CHECK_ERR(write(fd, "x", 1), EAGAIN);
    CHECK(!(sem_wait_fd(fd, POLLOUT, 200) & POLLOUT), "full socket is writable");
}

/* After the peer's FIN a non-blocking recv reads 0, not EAGAIN. */
static void eof_not_eagain(void)
{
    int fd = sem_connect_peer(SEM_P_CLOSE);
    CHECK(fd >= 0, "connect");
    CHECK_OK(set_nonblock(fd, 1));
    CHECK(sem_wait_fd(fd, POLLIN, 5000) & POLLIN, "FIN");
    char ch;
    CHECK(recv(fd, &ch, 1, 0) == 0, "recv after FIN");
    CHECK(recv(fd, &ch, 1, 0) == 0, "recv after FIN, twice");
}

/* A non-blocking connect that completes before anyone polls: the first send just works. */
static void send_right_after_inprogress(void)
{
    int fd = sem_tcp(SOCK_NONBLOCK);
    struct sockaddr_in a = sem_peer_addr(SEM_P_ECHO);
    CHECK_ERR(connect(fd, (struct sockaddr *)&a, sizeof a), EINPROGRESS);
    sem_sleep_ms(200);
    CHECK(send(fd, "k", 1, 0) == 1, "send after the handshake");
    char ch;
    CHECK(sem_read_full(fd, &ch, 1, 5000) == 1 && ch == 'k', "echo");
}

/* While the connection is being established, send() on a non-blocking socket is EAGAIN
 * (the unreachable address keeps it in SYN_SENT). */
static void send_while_connecting(void)
{
    int fd = sem_tcp(SOCK_NONBLOCK);
    struct sockaddr_in a = sem_sin(sem_unreach(1), sem_port_base);
    CHECK_ERR(connect(fd, (struct sockaddr *)&a, sizeof a), EINPROGRESS);
    CHECK_ERR(send(fd, "x", 1, MSG_NOSIGNAL), EAGAIN);
    struct sockaddr_in p;
    socklen_t l = sizeof p;
    CHECK_ERR(getpeername(fd, (struct sockaddr *)&p, &l), ENOTCONN);
    /* The local address is chosen by connect() itself, before it returns. */
    l = sizeof p;
    CHECK_OK(getsockname(fd, (struct sockaddr *)&p, &l));
    CHECK(p.sin_port != 0 && p.sin_addr.s_addr == sem_self_ip.s_addr,
          "getsockname while connecting: port %d", ntohs(p.sin_port));
}

/* getsockname right after a non-blocking connect to a reachable peer: the local port is
 * there at once, and the connection keeps it. */
static void local_port_at_once(void)
{
    int fd = sem_tcp(SOCK_NONBLOCK);
    struct sockaddr_in a = sem_peer_addr(SEM_P_ECHO);
    CHECK_ERR(connect(fd, (struct sockaddr *)&a, sizeof a), EINPROGRESS);
    int port = sem_port_of(fd, 0);
    CHECK(port > 0, "no local port right after connect");
    CHECK(sem_wait_fd(fd, POLLOUT, 5000) == POLLOUT, "connect");
    CHECK(sem_port_of(fd, 0) == port, "the local port changed: %d then %d", port,
          sem_port_of(fd, 0));
}

int main(void)
{
    sem_init("sem_nonblock", 1);
    SEM_RUN(fcntl_nonblock);
    SEM_RUN(sock_nonblock_connect);
    SEM_RUN(ealready);
    SEM_RUN(local_port_at_once);
    SEM_RUN(nonblock_refused);
    SEM_RUN(nonblock_refused_reconnect);
    SEM_RUN(fionbio);
    SEM_RUN(msg_dontwait);
    SEM_RUN(accept_eagain);
    SEM_RUN(accept_nonblock_ready);
    SEM_RUN(send_fills);
    SEM_RUN(eof_not_eagain);
    SEM_RUN(send_right_after_inprogress);
    SEM_RUN(send_while_connecting);
    return sem_done();
}

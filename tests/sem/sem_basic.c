/* tests/sem/sem_basic.c - socket life cycle: bind, listen, accept, connect, names, shutdown.
 * Every expectation is what Linux does; run.sh proves it by running this on the kernel. */
#include "sem.h"

#include <ifaddrs.h>
#include <net/if.h>

#include <netdb.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>

static int names(int fd, int peer, struct in_addr *ip, int *port)
{
    struct sockaddr_in a;
    socklen_t l = sizeof a;
    memset(&a, 0xee, sizeof a);
    int r = peer ? getpeername(fd, (struct sockaddr *)&a, &l)
                 : getsockname(fd, (struct sockaddr *)&a, &l);
    if (r < 0)
        return -1;
    if (l != sizeof a || a.sin_family != AF_INET) {
        errno = EPROTO;
        return -1;
    }
    *ip = a.sin_addr;
    *port = ntohs(a.sin_port);
    return 0;
}

static int bind_self(int fd, int port)
{
    struct sockaddr_in a = sem_sin(sem_self_ip, port);
    return bind(fd, (struct sockaddr *)&a, sizeof a);
}

static int set_reuse(int fd)
{
    int one = 1;
    return setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
}

/* glibc's stat entry points before 2.33, as a binary built then references them. */
int old_fxstat64(int ver, int fd, struct stat *st);
int old_fxstatat64(int ver, int fd, const char *path, struct stat *st, int flags);
__asm__(".symver old_fxstat64,__fxstat64@GLIBC_2.2.5");
__asm__(".symver old_fxstatat64,__fxstatat64@GLIBC_2.4");

/* A fresh socket is unbound (0.0.0.0:0), has no peer, and is a socket to fstat(). */
static void fresh_socket(void)
{
    int fd = sem_tcp(0);
    CHECK(fd >= 0, "socket");
    struct in_addr ip;
    int port;
    CHECK_OK(names(fd, 0, &ip, &port));
    CHECK(ip.s_addr == 0 && port == 0, "getsockname of a fresh socket: %s:%d", inet_ntoa(ip), port);
    CHECK_ERR(names(fd, 1, &ip, &port), ENOTCONN);
    struct stat st;
    CHECK_OK(fstat(fd, &st));
    CHECK(S_ISSOCK(st.st_mode), "fstat mode %o is not S_IFSOCK", st.st_mode);
    /* Programs built against glibc before 2.33 (official node.js binaries) call the old
     * entry points, still in libc as compatibility symbols: bound here as such a binary
     * binds them (old_fxstat64 and old_fxstatat64 below). */
    memset(&st, 0, sizeof st);
    CHECK(old_fxstat64(1, fd, &st) == 0 && S_ISSOCK(st.st_mode), "__fxstat64 mode %o", st.st_mode);
    memset(&st, 0, sizeof st);
    CHECK(old_fxstatat64(1, fd, "", &st, AT_EMPTY_PATH) == 0 && S_ISSOCK(st.st_mode),
          "__fxstatat64 mode %o", st.st_mode);
    /* And through syscall() (libraries that make their own system calls). */
    memset(&st, 0, sizeof st);
    CHECK(syscall(SYS_fstat, fd, &st) == 0 && S_ISSOCK(st.st_mode), "SYS_fstat mode %o",
          st.st_mode);
    memset(&st, 0, sizeof st);
    CHECK(syscall(SYS_newfstatat, fd, "", &st, AT_EMPTY_PATH) == 0 && S_ISSOCK(st.st_mode),
          "SYS_newfstatat mode %o", st.st_mode);
}

/* After connect, getsockname gives our address and an ephemeral port, getpeername the peer. */
static void connect_names(void)
{
    int fd = sem_connect_peer(SEM_P_ECHO);
    CHECK(fd >= 0, "connect to echo");
    struct in_addr ip;
    int port;
    CHECK_OK(names(fd, 0, &ip, &port));
    CHECK(ip.s_addr == sem_self_ip.s_addr && port != 0, "getsockname %s:%d", inet_ntoa(ip), port);
    CHECK_OK(names(fd, 1, &ip, &port));
    CHECK(ip.s_addr == sem_peer_ip.s_addr && port == sem_port_base + SEM_P_ECHO,
          "getpeername %s:%d", inet_ntoa(ip), port);
}

static void echo_roundtrip(void)
{
    int fd = sem_connect_peer(SEM_P_ECHO);
    CHECK(fd >= 0, "connect to echo");
    CHECK(send(fd, "hello", 5, 0) == 5, "send");
    char buf[16];
    CHECK(sem_read_full(fd, buf, 5, 5000) == 5, "echo back");
    CHECK(memcmp(buf, "hello", 5) == 0, "echoed bytes differ");
}

/* bind() to a given port is what getsockname reports, before and after listen(). */
static void bind_names(void)
{
    int fd = sem_tcp(0);
    CHECK_OK(set_reuse(fd));
    CHECK_OK(bind_self(fd, sem_lport(0)));
    struct in_addr ip;
    int port;
    CHECK_OK(names(fd, 0, &ip, &port));
    CHECK(ip.s_addr == sem_self_ip.s_addr && port == sem_lport(0), "after bind %s:%d",
          inet_ntoa(ip), port);
    CHECK_OK(listen(fd, 4));
    CHECK_OK(names(fd, 0, &ip, &port));
    CHECK(port == sem_lport(0), "after listen port %d", port);
    CHECK_ERR(names(fd, 1, &ip, &port), ENOTCONN);
}

static void bind_port_zero(void)
{
    int fd = sem_tcp(0);
    CHECK_OK(bind_self(fd, 0));
    CHECK(sem_port_of(fd, 0) > 0, "bind to port 0 picked no port");
}

/* bind() twice on one socket is EINVAL, whatever the second address. */
static void bind_twice(void)
{
    int fd = sem_tcp(0);
    CHECK_OK(bind_self(fd, 0));
    CHECK_ERR(bind_self(fd, 0), EINVAL);
}

static void bind_nonlocal(void)
{
    int fd = sem_tcp(0);
    struct sockaddr_in a = sem_sin((struct in_addr){htonl(0xc613fefe)}, 0); /* 198.19.254.254 */
    CHECK_ERR(bind(fd, (struct sockaddr *)&a, sizeof a), EADDRNOTAVAIL);
}

/* A listener's port cannot be bound again, with or without SO_REUSEADDR on both. */
static void eaddrinuse_listener(void)
{
    int a = sem_tcp(0), b = sem_tcp(0), c = sem_tcp(0);
    CHECK_OK(bind_self(a, sem_lport(1)));
    CHECK_OK(listen(a, 4));
    CHECK_ERR(bind_self(b, sem_lport(1)), EADDRINUSE);
    sem_close(a);
    a = sem_tcp(0);
    CHECK_OK(set_reuse(a));
    CHECK_OK(set_reuse(c));
    CHECK_OK(bind_self(a, sem_lport(1)));
    CHECK_OK(listen(a, 4));
    CHECK_ERR(bind_self(c, sem_lport(1)), EADDRINUSE);
    /* INADDR_ANY overlaps the specific address too. */
    int d = sem_tcp(0);
    struct sockaddr_in any = sem_sin((struct in_addr){htonl(INADDR_ANY)}, sem_lport(1));
    CHECK_ERR(bind(d, (struct sockaddr *)&any, sizeof any), EADDRINUSE);
}

/* Two merely bound sockets conflict without SO_REUSEADDR; with it on both, Linux lets both
 * bind, and only the second listen() fails. */
static void eaddrinuse_bound(void)
{
    int a = sem_tcp(0), b = sem_tcp(0);
    CHECK_OK(bind_self(a, sem_lport(2)));
    CHECK_ERR(bind_self(b, sem_lport(2)), EADDRINUSE);
    sem_close(a);
    sem_close(b);
    a = sem_tcp(0);
    b = sem_tcp(0);
    CHECK_OK(set_reuse(a));
    CHECK_OK(set_reuse(b));
    CHECK_OK(bind_self(a, sem_lport(2)));
    CHECK_OK(bind_self(b, sem_lport(2)));
    CHECK_OK(listen(a, 4));
    CHECK_ERR(listen(b, 4), EADDRINUSE);
}

/* A connection we closed first leaves TIME_WAIT on the listener's port: a new bind()
 * needs SO_REUSEADDR (the closed socket had it too, inherited from the listener). */
static void time_wait_rebind(void)
{
    int l = sem_listen_self(3, 0);
    CHECK(l >= 0, "listen");
    int c = sem_ctl(sem_lport(3), 0, 0, 1);
    CHECK(c >= 0, "control");
    int s = sem_accept_within(l, 5000);
    CHECK(s >= 0, "accept");
    char line[64];
    CHECK(sem_ctl_line(c, line, sizeof line, 5000) > 0 && !strcmp(line, "ok 0"), "ctl: %s", line);
    sem_close(s);
    CHECK(sem_ctl_line(c, line, sizeof line, 5000) > 0 && !strcmp(line, "eof 0 0"), "ctl: %s",
          line);
    sem_sleep_ms(100); /* the peer's FIN reaches us: our side is now in TIME_WAIT */
    sem_close(l);
    int a = sem_tcp(0);
    CHECK_ERR(bind_self(a, sem_lport(3)), EADDRINUSE);
    int b = sem_tcp(0);
    CHECK_OK(set_reuse(b));
    CHECK_OK(bind_self(b, sem_lport(3)));
    CHECK_OK(listen(b, 4));
}

/* listen() on an unbound socket binds it to INADDR_ANY and an ephemeral port. */
static void listen_autobind(void)
{
    int fd = sem_tcp(0);
    CHECK_OK(listen(fd, 4));
    struct in_addr ip;
    int port;
    CHECK_OK(names(fd, 0, &ip, &port));
    CHECK(ip.s_addr == htonl(INADDR_ANY) && port > 0, "after listen %s:%d", inet_ntoa(ip), port);
}

/* listen() twice is fine (it only changes the backlog). */
static void listen_twice(void)
{
    int fd = sem_listen_self(4, 0);
    CHECK(fd >= 0, "listen");
    CHECK_OK(listen(fd, 64));
}

/* A refused connect leaves no pending error, and the socket can connect again. */
static void connect_refused(void)
{
    int fd = sem_tcp(0);
    struct sockaddr_in a = sem_peer_addr(SEM_P_NONE);
    CHECK_ERR(connect(fd, (struct sockaddr *)&a, sizeof a), ECONNREFUSED);
    int err = -1;
    socklen_t l = sizeof err;
    CHECK_OK(getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &l));
    CHECK(err == 0, "SO_ERROR after a refused blocking connect: %s", sem_ename(err));
    a = sem_peer_addr(SEM_P_ECHO);
    CHECK_OK(connect(fd, (struct sockaddr *)&a, sizeof a));
    CHECK(send(fd, "x", 1, 0) == 1, "send after reconnect");
    char ch;
    CHECK(sem_read_full(fd, &ch, 1, 5000) == 1 && ch == 'x', "echo after reconnect");
}

/* Before connect: recv and getpeername say ENOTCONN, but send says EPIPE (and raises
 * SIGPIPE without MSG_NOSIGNAL), as Linux's TCP does. */
static void before_connect(void)
{
    int fd = sem_tcp(0);
    char buf[4];
    CHECK_ERR(recv(fd, buf, sizeof buf, 0), ENOTCONN);
    CHECK_ERR(recv(fd, buf, sizeof buf, MSG_DONTWAIT), ENOTCONN);
    CHECK_ERR(read(fd, buf, sizeof buf), ENOTCONN);
    int before = sem_sigpipes;
    CHECK_ERR(send(fd, "x", 1, MSG_NOSIGNAL), EPIPE);
    CHECK(sem_sigpipes == before, "SIGPIPE despite MSG_NOSIGNAL");
    CHECK_ERR(write(fd, "x", 1), EPIPE);
    CHECK(sem_sigpipes == before + 1, "write raised %d SIGPIPEs, want 1", sem_sigpipes - before);
    CHECK_ERR(shutdown(fd, SHUT_RDWR), ENOTCONN);
    struct sockaddr_in a;
    socklen_t l = sizeof a;
    CHECK_ERR(getpeername(fd, (struct sockaddr *)&a, &l), ENOTCONN);
}

static void eisconn(void)
{
    int fd = sem_connect_peer(SEM_P_ECHO);
    CHECK(fd >= 0, "connect");
    struct sockaddr_in a = sem_peer_addr(SEM_P_ECHO);
    CHECK_ERR(connect(fd, (struct sockaddr *)&a, sizeof a), EISCONN);
    a = sem_peer_addr(SEM_P_DISCARD);
    CHECK_ERR(connect(fd, (struct sockaddr *)&a, sizeof a), EISCONN);
}

/* SHUT_WR: the peer sees EOF, we still read what it sends, then its EOF; writing is EPIPE;
 * once both FINs are through, shutdown() again is ENOTCONN. */
static void shutdown_wr(void)
{
    int fd = sem_connect_peer(SEM_P_ECHO);
    CHECK(fd >= 0, "connect");
    CHECK(send(fd, "abc", 3, 0) == 3, "send");
    CHECK_OK(shutdown(fd, SHUT_WR));
    char buf[8];
    CHECK(sem_read_full(fd, buf, sizeof buf, 5000) == 3 && !memcmp(buf, "abc", 3),
          "echo after SHUT_WR");
    CHECK(recv(fd, buf, sizeof buf, 0) == 0, "EOF is sticky");
    int before = sem_sigpipes;
    CHECK_ERR(send(fd, "x", 1, MSG_NOSIGNAL), EPIPE);
    CHECK(sem_sigpipes == before, "SIGPIPE despite MSG_NOSIGNAL");
    /* Both FINs are through: the socket is closed (TIME_WAIT lives elsewhere) and Linux
     * answers a second shutdown with ENOTCONN. */
    CHECK_ERR(shutdown(fd, SHUT_WR), ENOTCONN);
}

/* SHUT_RD: an empty receive queue reads as EOF at once; sending still works, and on Linux
 * data that arrives afterwards is still delivered. */
static void shutdown_rd(void)
{
    int fd = sem_connect_peer(SEM_P_ECHO);
    CHECK(fd >= 0, "connect");
    CHECK_OK(shutdown(fd, SHUT_RD));
    char buf[8];
    double t0 = sem_ms();
    CHECK(recv(fd, buf, sizeof buf, 0) == 0, "recv after SHUT_RD is not EOF");
    CHECK(sem_ms() - t0 < 1000, "recv after SHUT_RD blocked");
    CHECK(send(fd, "y", 1, 0) == 1, "send after SHUT_RD");
    CHECK(sem_wait_fd(fd, POLLIN, 100) & POLLIN, "POLLIN after SHUT_RD");
    sem_sleep_ms(200); /* the echo of "y" arrives */
    ssize_t n = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    CHECK(n == 1 && buf[0] == 'y', "data after SHUT_RD: got %zd", n);
}

static void shutdown_bad_how(void)
{
    int fd = sem_connect_peer(SEM_P_ECHO);
    CHECK(fd >= 0, "connect");
    CHECK_ERR(shutdown(fd, 3), EINVAL);
    CHECK_ERR(shutdown(fd, -1), EINVAL);
}

/* The peer shuts down its side after 1 MiB: we read it all, EOF stays EOF, and we can
 * still send (half-close). */
static void peer_half_close(void)
{
    int fd = sem_connect_peer(SEM_P_BULK);
    CHECK(fd >= 0, "connect");
    static char buf[SEM_BULK_BYTES + 16];
    ssize_t n = sem_read_full(fd, buf, sizeof buf, 5000);
    CHECK(n == SEM_BULK_BYTES, "read %zd bytes, want %d", n, SEM_BULK_BYTES);
    long bad = sem_check_pat(buf, 0, SEM_BULK_BYTES);
    CHECK(bad < 0, "byte %ld differs", bad);
    CHECK(recv(fd, buf, 16, 0) == 0, "second EOF");
    CHECK(sem_wait_fd(fd, POLLIN | POLLOUT, 0) == (POLLIN | POLLOUT), "poll after peer FIN");
    for (int i = 0; i < 10; i++)
        CHECK(send(fd, buf, 1000, 0) == 1000, "send %d after peer FIN", i);
}

/* accept() fills in the peer's address; the accepted socket's names are ours and the
 * peer's; it carries the data the peer sends. */
static void accept_names(void)
{
    int l = sem_listen_self(5, 0);
    CHECK(l >= 0, "listen");
    int c = sem_ctl(sem_lport(5), 5, 0, 1);
    CHECK(c >= 0, "control");
    CHECK(sem_wait_fd(l, POLLIN, 5000) & POLLIN, "listener readable");
    struct sockaddr_in a;
    socklen_t al = sizeof a + 8;
    int s = sem_track(accept(l, (struct sockaddr *)&a, &al));
    CHECK(s >= 0, "accept");
    CHECK(al == sizeof a && a.sin_family == AF_INET && a.sin_addr.s_addr == sem_peer_ip.s_addr,
          "accept address %s (len %u)", inet_ntoa(a.sin_addr), al);
    struct in_addr ip;
    int port;
    CHECK_OK(names(s, 0, &ip, &port));
    CHECK(ip.s_addr == sem_self_ip.s_addr && port == sem_lport(5), "getsockname %s:%d",
          inet_ntoa(ip), port);
    CHECK_OK(names(s, 1, &ip, &port));
    CHECK(ip.s_addr == sem_peer_ip.s_addr && port == ntohs(a.sin_port), "getpeername %s:%d",
          inet_ntoa(ip), port);
    char buf[8];
    CHECK(sem_read_full(s, buf, 5, 5000) == 5 && sem_check_pat(buf, 0, 5) < 0, "data");
    /* A short address buffer is filled as far as it goes; the length says the full size. */
    int c2 = sem_ctl(sem_lport(5), 0, 0, 1);
    CHECK(c2 >= 0, "control");
    CHECK(sem_wait_fd(l, POLLIN, 5000) & POLLIN, "listener readable");
    struct sockaddr_in b;
    al = 4;
    memset(&b, 0, sizeof b);
    int s2 = sem_track(accept(l, (struct sockaddr *)&b, &al));
    CHECK(s2 >= 0, "accept with a short address buffer");
    CHECK(al == sizeof b && b.sin_family == AF_INET && b.sin_addr.s_addr == 0,
          "short buffer: len %u, family %d", al, b.sin_family);
}

/* accept4() flags apply to the new socket; plain accept() never inherits O_NONBLOCK from
 * the listener on Linux. */
static void accept_flags(void)
{
    int l = sem_listen_self(6, SOCK_NONBLOCK);
    CHECK(l >= 0, "listen");
    int c = sem_ctl(sem_lport(6), 0, 0, 2);
    CHECK(c >= 0, "control");
    CHECK(sem_wait_fd(l, POLLIN, 5000) & POLLIN, "listener readable");
    int s = sem_track(accept4(l, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC));
    CHECK(s >= 0, "accept4");
    CHECK(fcntl(s, F_GETFL) & O_NONBLOCK, "accept4 SOCK_NONBLOCK not set");
    CHECK(fcntl(s, F_GETFD) & FD_CLOEXEC, "accept4 SOCK_CLOEXEC not set");
    CHECK(sem_wait_fd(l, POLLIN, 5000) & POLLIN, "listener readable again");
    int t = sem_track(accept(l, NULL, NULL));
    CHECK(t >= 0, "accept");
    CHECK(!(fcntl(t, F_GETFL) & O_NONBLOCK), "accept inherited O_NONBLOCK");
    CHECK(!(fcntl(t, F_GETFD) & FD_CLOEXEC), "accept set FD_CLOEXEC");
    CHECK_ERR(accept4(l, NULL, NULL, 0x40000000), EINVAL);
}

/* An accepted connection half-closes like a connected one: our FIN ends the peer's echo loop,
 * and its FIN reads as EOF. */
static void accepted_half_close(void)
{
    int l = sem_listen_self(7, 0);
    CHECK(l >= 0, "listen");
    int c = sem_ctl(sem_lport(7), 3, 0, 1);
    CHECK(c >= 0, "control");
    char line[64];
    CHECK(sem_ctl_line(c, line, sizeof line, 5000) > 0 && !strcmp(line, "ok 0"), "ctl: %s", line);
    sem_close(c); /* the peer's connection stays up, echoing; we then close ours */
    int s = sem_accept_within(l, 5000);
    CHECK(s >= 0, "accept");
    char buf[8];
    CHECK(sem_read_full(s, buf, 3, 5000) == 3, "data before close");
    CHECK_OK(shutdown(s, SHUT_WR));
    CHECK(sem_read_full(s, buf, sizeof buf, 5000) == 0, "EOF after the peer's echo loop ends");
}

/* getaddrinfo with AI_ADDRCONFIG (glibc's default without hints) finds the peer's IPv4
 * address: this host has an IPv4 address on that network (under ustack, ustack's own),
 * then connects to what it returned. */
static void getaddrinfo_addrconfig(void)
{
    char host[INET_ADDRSTRLEN], port[16];
    inet_ntop(AF_INET, &sem_peer_ip, host, sizeof host);
    snprintf(port, sizeof port, "%d", sem_port_base + SEM_P_ECHO);
    struct addrinfo hints = {
        .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_ADDRCONFIG};
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(host, port, &hints, &res);
    CHECK(rc == 0 && res, "getaddrinfo(%s, AI_ADDRCONFIG): %s", host, gai_strerror(rc));
    CHECK(res->ai_family == AF_INET, "family %d", res->ai_family);
    int fd = sem_track(socket(res->ai_family, res->ai_socktype, res->ai_protocol));
    CHECK(fd >= 0, "socket");
    CHECK_OK(connect(fd, res->ai_addr, res->ai_addrlen));
    freeaddrinfo(res);
    char buf[4];
    CHECK(send(fd, "gai", 3, 0) == 3 && sem_read_full(fd, buf, 3, 5000) == 3, "echo");
    res = NULL;
    rc = getaddrinfo(host, port, NULL, &res);
    CHECK(rc == 0 && res, "getaddrinfo(%s, no hints): %s", host, gai_strerror(rc));
    freeaddrinfo(res);
    hints.ai_family = AF_INET;
    res = NULL;
    rc = getaddrinfo(host, port, &hints, &res);
    CHECK(rc == 0 && res && res->ai_family == AF_INET,
          "getaddrinfo(%s, AF_INET, AI_ADDRCONFIG): %s", host, gai_strerror(rc));
    freeaddrinfo(res);
}

/* ping from client c, pong from server s, then c's EOF at s. */
static void ping_pong(int c, int s)
{
    char buf[8];
    CHECK(send(c, "ping", 4, 0) == 4, "send");
    CHECK(sem_read_full(s, buf, 4, 3000) == 4 && !memcmp(buf, "ping", 4), "server read");
    CHECK(send(s, "pong", 4, 0) == 4, "send back");
    CHECK(sem_read_full(c, buf, 4, 3000) == 4 && !memcmp(buf, "pong", 4), "client read");
    CHECK_OK(shutdown(c, SHUT_WR));
    CHECK(recv(s, buf, sizeof buf, 0) == 0, "EOF at the server");
}

/* A connection to our own address (a program reaching a server of the same host by the
 * host's address): Linux carries it over loopback to a wildcard listener. Under ustack the
 * connect goes to the kernel's loopback, where the listener's companion takes it. Data
 * passes both ways and both ends close cleanly. */
static void connect_own_address(void)
{
    int l = sem_tcp(0), one = 1;
    struct sockaddr_in any = sem_sin((struct in_addr){htonl(INADDR_ANY)}, sem_lport(9));
    CHECK(l >= 0, "socket");
    CHECK_OK(setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one));
    CHECK_OK(bind(l, (struct sockaddr *)&any, sizeof any));
    CHECK_OK(listen(l, 4));
    int c = sem_tcp(0);
    struct sockaddr_in self = sem_sin(sem_self_ip, sem_lport(9));
    CHECK(c >= 0, "socket");
    CHECK_OK(connect(c, (struct sockaddr *)&self, sizeof self));
    int s = sem_track(accept(l, NULL, NULL));
    CHECK(s >= 0, "accept");
    ping_pong(c, s);
}

/* The same to a listener bound to our own address rather than the wildcard (CPython's test
 * suite with its HOST set to the machine's address; any server bound to the host's address
 * with a client on the same host): poll sees the connection, accept takes it, data flows.
 * Under ustack the connect is carried over loopback, and such a listener had no kernel
 * listener there: ECONNREFUSED. */
static void connect_own_listener(void)
{
    int l = sem_listen_self(10, 0);
    CHECK(l >= 0, "listen on our address");
    int c = sem_tcp(0);
    struct sockaddr_in self = sem_sin(sem_self_ip, sem_lport(10));
    CHECK(c >= 0, "socket");
    CHECK_OK(connect(c, (struct sockaddr *)&self, sizeof self));
    struct pollfd p = {l, POLLIN, 0};
    CHECK(poll(&p, 1, 3000) == 1 && (p.revents & POLLIN), "listener readable");
    int s = sem_track(accept(l, NULL, NULL));
    CHECK(s >= 0, "accept");
    ping_pong(c, s);
}

/* A call that succeeds leaves errno alone (glibc's wrappers set it only on failure); netcat
 * prints errno after a successful listen(). Under ustack the library's own system calls
 * inside showed through: EAGAIN after bind and listen. */
#define KEEPS_ERRNO(call)                                                                          \
    do {                                                                                           \
        errno = ENOTTY;                                                                            \
        long r_ = (long)(call);                                                                    \
        CHECK(r_ >= 0, "%s failed", #call);                                                        \
        CHECK(errno == ENOTTY, "%s succeeded but left errno %s", #call, sem_ename(errno));         \
    } while (0)

static void errno_kept_on_success(void)
{
    int l, c, s, one = 1;
    KEEPS_ERRNO(l = sem_track(socket(AF_INET, SOCK_STREAM, 0)));
    KEEPS_ERRNO(setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one));
    struct sockaddr_in a = sem_sin(sem_self_ip, sem_lport(11));
    KEEPS_ERRNO(bind(l, (struct sockaddr *)&a, sizeof a));
    KEEPS_ERRNO(listen(l, 4));
    KEEPS_ERRNO(c = sem_track(socket(AF_INET, SOCK_STREAM, 0)));
    struct sockaddr_in p = sem_peer_addr(SEM_P_ECHO);
    KEEPS_ERRNO(connect(c, (struct sockaddr *)&p, sizeof p));
    KEEPS_ERRNO(send(c, "abc", 3, 0));
    char buf[4];
    struct pollfd pf = {c, POLLIN, 0};
    KEEPS_ERRNO(poll(&pf, 1, 5000));
    KEEPS_ERRNO(recv(c, buf, sizeof buf, 0));
    int v = 0;
    socklen_t len = sizeof v;
    KEEPS_ERRNO(getsockopt(c, SOL_SOCKET, SO_ERROR, &v, &len));
    KEEPS_ERRNO(s = dup(c));
    KEEPS_ERRNO(close(s));
    KEEPS_ERRNO(shutdown(c, SHUT_WR));
    KEEPS_ERRNO(close(c));
    KEEPS_ERRNO(close(l));
}

/* The child of listen_port0_loopback: 0, or the line that failed. */
static int port0_child(void)
{
    enum { NCLI = 3000, ROUNDS = 300 };
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        return __LINE__;
    rl.rlim_cur = rl.rlim_max;
    if (rl.rlim_cur < NCLI + 64 || setrlimit(RLIMIT_NOFILE, &rl) < 0)
        return 0; /* too few fds allowed to make the point */
    struct sockaddr_in lo = sem_sin((struct in_addr){htonl(INADDR_LOOPBACK)}, 0);
    socklen_t n = sizeof lo;
    int kl = socket(AF_INET, SOCK_STREAM, 0);
    if (kl < 0 || bind(kl, (struct sockaddr *)&lo, sizeof lo) < 0 || listen(kl, NCLI + 16) < 0 ||
        getsockname(kl, (struct sockaddr *)&lo, &n) < 0)
        return __LINE__;
    /* The kernel's ephemeral ports of 3000 loopback clients, held open. */
    for (int i = 0; i < NCLI; i++) {
        int c = socket(AF_INET, SOCK_STREAM, 0);
        if (c < 0 || connect(c, (struct sockaddr *)&lo, sizeof lo) < 0)
            return __LINE__;
    }
    for (int r = 0; r < ROUNDS; r++) {
        int l = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in any = sem_sin((struct in_addr){htonl(INADDR_ANY)}, 0), to;
        socklen_t tl = sizeof to;
        if (l < 0 || bind(l, (struct sockaddr *)&any, sizeof any) < 0 || listen(l, 4) < 0 ||
            getsockname(l, (struct sockaddr *)&to, &tl) < 0)
            return __LINE__;
        to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        int c = socket(AF_INET, SOCK_STREAM, 0);
        if (c < 0 || connect(c, (struct sockaddr *)&to, sizeof to) < 0) {
            printf("# round %d: connect to 127.0.0.1:%u: %s\n", r, ntohs(to.sin_port),
                   strerror(errno));
            return __LINE__;
        }
        struct pollfd p = {l, POLLIN, 0};
        int s = poll(&p, 1, 3000) == 1 ? accept(l, NULL, NULL) : -1;
        if (s < 0)
            return __LINE__;
        close(s);
        close(c);
        close(l);
    }
    return 0;
}

/* A listener on the wildcard with a port of the system's choosing (bind to port 0, or
 * listen() unbound) takes connections to 127.0.0.1 on that port, whatever ports the
 * kernel's own loopback connections hold. Under ustack the engine picked the port from
 * the same range as the kernel's ephemeral ports, and the kernel listener on 127.0.0.1
 * that carries loopback connections could not bind it when a loopback client had it:
 * connections were refused (CPython's test_socketserver, test_ftplib, asyncio's
 * create_server, about one listener in a few hundred there). */
static void listen_port0_loopback(void)
{
    fflush(stdout);
    pid_t pid = fork();
    CHECK(pid >= 0, "fork");
    if (pid == 0)
        _exit(port0_child());
    int st = sem_wait_child(pid, 40000);
    CHECK(st == 0, "the child failed (status %d)", st);
}

/* getifaddrs() lists our address on some interface (BIND's named listens on each address it
 * finds there, aria2's resolver asks only for the families configured there). Under ustack
 * the kernel has no such address; the library adds it. */
static void ifaddrs_list_our_address(void)
{
    struct ifaddrs *ifa = NULL;
    CHECK_OK(getifaddrs(&ifa));
    int found = 0;
    for (struct ifaddrs *i = ifa; i; i = i->ifa_next)
        if (i->ifa_addr && i->ifa_addr->sa_family == AF_INET && i->ifa_netmask &&
            ((struct sockaddr_in *)i->ifa_addr)->sin_addr.s_addr == sem_self_ip.s_addr &&
            ((struct sockaddr_in *)i->ifa_netmask)->sin_addr.s_addr == htonl(0xffffff00u) &&
            (i->ifa_flags & IFF_UP))
            found++;
    freeifaddrs(ifa);
    CHECK(found == 1, "%d entries with %s/24", found, inet_ntoa(sem_self_ip));
}

int main(void)
{
    sem_init("sem_basic", 0);
    SEM_RUN(fresh_socket);
    SEM_RUN(connect_names);
    SEM_RUN(echo_roundtrip);
    SEM_RUN(bind_names);
    SEM_RUN(bind_port_zero);
    SEM_RUN(bind_twice);
    SEM_RUN(bind_nonlocal);
    SEM_RUN(eaddrinuse_listener);
    SEM_RUN(eaddrinuse_bound);
    SEM_RUN(time_wait_rebind);
    SEM_RUN(listen_autobind);
    SEM_RUN(listen_twice);
    SEM_RUN(connect_refused);
    SEM_RUN(before_connect);
    SEM_RUN(eisconn);
    SEM_RUN(shutdown_wr);
    SEM_RUN(shutdown_rd);
    SEM_RUN(shutdown_bad_how);
    SEM_RUN(peer_half_close);
    SEM_RUN(accept_names);
    SEM_RUN(accept_flags);
    SEM_RUN(accepted_half_close);
    SEM_RUN(getaddrinfo_addrconfig);
    SEM_RUN(connect_own_address);
    SEM_RUN(connect_own_listener);
    SEM_RUN(listen_port0_loopback);
    SEM_RUN(ifaddrs_list_our_address);
    SEM_RUN(errno_kept_on_success);
    return sem_done();
}

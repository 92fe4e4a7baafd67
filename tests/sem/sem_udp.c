/* tests/sem/sem_udp.c - UDP sockets: datagrams and their boundaries, addresses, MSG_PEEK /
 * MSG_TRUNC / FIONREAD, IP_PKTINFO, connected sockets and ICMP port unreachable
 * (ECONNREFUSED once), broadcast without SO_BROADCAST (EACCES), bind conflicts, send
 * errors, shutdown, poll/epoll, sendmmsg/recvmmsg, loopback through the kernel. The peer
 * echoes datagrams at SEM_PORT_BASE + 0 and has no UDP socket at + 8. Every expectation is
 * what Linux does; run.sh proves it by running this on the kernel. */
#include "sem.h"

#include <net/if.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>

static int udp(int flags)
{
    return sem_track(socket(AF_INET, SOCK_DGRAM | flags, 0));
}

static int so_int(int fd, int level, int opt)
{
    int v = -1;
    socklen_t l = sizeof v;
    if (getsockopt(fd, level, opt, &v, &l) < 0)
        return -100 - errno;
    return v;
}

/* Waits up to ms for fd to be readable. */
static int readable(int fd, int ms)
{
    struct pollfd p = {fd, POLLIN, 0};
    return poll(&p, 1, ms) == 1 && (p.revents & POLLIN);
}

static void basics(void)
{
    int fd = udp(0);
    CHECK(fd >= 0, "socket");
    CHECK(so_int(fd, SOL_SOCKET, SO_TYPE) == SOCK_DGRAM, "SO_TYPE");
    CHECK(so_int(fd, SOL_SOCKET, SO_PROTOCOL) == IPPROTO_UDP, "SO_PROTOCOL");
    CHECK(so_int(fd, SOL_SOCKET, SO_ERROR) == 0, "SO_ERROR");
    struct sockaddr_in a;
    socklen_t l = sizeof a;
    CHECK_OK(getsockname(fd, (struct sockaddr *)&a, &l));
    CHECK(a.sin_port == 0 && a.sin_addr.s_addr == 0, "unbound name %s:%u", inet_ntoa(a.sin_addr),
          ntohs(a.sin_port));
    CHECK_ERR(getpeername(fd, (struct sockaddr *)&a, &l), ENOTCONN);
    CHECK_ERR(send(fd, "x", 1, 0), EDESTADDRREQ);
    CHECK_ERR(write(fd, "x", 1), EDESTADDRREQ);
    CHECK_ERR(listen(fd, 1), EOPNOTSUPP);
    CHECK_ERR(recv(fd, &a, 1, MSG_DONTWAIT), EAGAIN);
    /* A TCP option on a UDP socket. */
    int v = 1;
    CHECK_ERR(setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &v, sizeof v), ENOPROTOOPT);
    CHECK_ERR(getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &v, &l), EOPNOTSUPP);
    /* No POLLHUP for an unconnected datagram socket (datagram_poll). */
    struct pollfd p = {fd, POLLIN | POLLOUT, 0};
    CHECK(poll(&p, 1, 0) == 1 && p.revents == POLLOUT, "revents %#x", p.revents);
}

static void echo_roundtrip(void)
{
    int fd = udp(0);
    struct sockaddr_in peer = sem_peer_addr(SEM_P_ECHO);
    CHECK(sendto(fd, "hello", 5, 0, (struct sockaddr *)&peer, sizeof peer) == 5, "sendto");
    /* The first send bound an ephemeral port on the wildcard address. */
    struct sockaddr_in me;
    socklen_t l = sizeof me;
    CHECK_OK(getsockname(fd, (struct sockaddr *)&me, &l));
    CHECK(me.sin_port != 0 && me.sin_addr.s_addr == 0, "name after send %s:%u",
          inet_ntoa(me.sin_addr), ntohs(me.sin_port));
    CHECK(readable(fd, 3000), "no echo");
    char buf[64];
    struct sockaddr_in from;
    socklen_t fl = sizeof from;
    ssize_t n = recvfrom(fd, buf, sizeof buf, 0, (struct sockaddr *)&from, &fl);
    CHECK(n == 5 && !memcmp(buf, "hello", 5), "recvfrom %zd", n);
    CHECK(fl == sizeof from && from.sin_family == AF_INET, "from length %u", fl);
    CHECK(from.sin_addr.s_addr == peer.sin_addr.s_addr && from.sin_port == peer.sin_port,
          "from %s:%u", inet_ntoa(from.sin_addr), ntohs(from.sin_port));
}

/* Datagrams keep their boundaries, empty ones included. */
static void boundaries(void)
{
    int fd = udp(0);
    struct sockaddr_in peer = sem_peer_addr(SEM_P_ECHO);
    static char out[1472], in[2000];
    const size_t sizes[] = {0, 1, 1000, 1472, 7};
    for (size_t i = 0; i < 5; i++) {
        sem_fill(out, i, sizes[i]);
        CHECK(sendto(fd, out, sizes[i], 0, (struct sockaddr *)&peer, sizeof peer) ==
                  (ssize_t)sizes[i],
              "sendto %zu", sizes[i]);
    }
    for (size_t i = 0; i < 5; i++) {
        CHECK(readable(fd, 3000), "echo %zu missing", i);
        ssize_t n = recv(fd, in, sizeof in, 0);
        CHECK(n == (ssize_t)sizes[i], "datagram %zu: %zd bytes, want %zu", i, n, sizes[i]);
        sem_fill(out, i, sizes[i]);
        CHECK(!memcmp(in, out, sizes[i]), "datagram %zu differs", i);
    }
}

static void peek_trunc_fionread(void)
{
    int fd = udp(0);
    struct sockaddr_in peer = sem_peer_addr(SEM_P_ECHO);
    char out[100], buf[200];
    sem_fill(out, 3, sizeof out);
    CHECK(sendto(fd, out, 100, 0, (struct sockaddr *)&peer, sizeof peer) == 100, "sendto");
    CHECK(sendto(fd, out, 30, 0, (struct sockaddr *)&peer, sizeof peer) == 30, "sendto");
    CHECK(readable(fd, 3000), "no echo");
    sem_sleep_ms(100); /* the second echo too */
    int v = -1;
    CHECK_OK(ioctl(fd, FIONREAD, &v));
    CHECK(v == 100, "FIONREAD %d, want the first datagram's 100", v);
    CHECK(recv(fd, buf, 10, MSG_PEEK) == 10, "peek");
    CHECK(recv(fd, buf, sizeof buf, MSG_PEEK | MSG_TRUNC) == 100, "peek|trunc");
    /* A short buffer: the rest of the datagram is lost; MSG_TRUNC says so. */
    struct iovec iov = {buf, 10};
    struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1};
    CHECK(recvmsg(fd, &m, 0) == 10, "recvmsg");
    CHECK(m.msg_flags & MSG_TRUNC, "msg_flags %#x lacks MSG_TRUNC", m.msg_flags);
    CHECK(!memcmp(buf, out, 10), "data");
    /* recv(MSG_TRUNC) returns the datagram's real length. */
    CHECK(recv(fd, buf, 5, MSG_TRUNC) == 30, "MSG_TRUNC length");
    CHECK_OK(ioctl(fd, FIONREAD, &v));
    CHECK(v == 0, "FIONREAD %d on an empty queue", v);
    CHECK_ERR(recv(fd, buf, sizeof buf, MSG_DONTWAIT), EAGAIN);
}

static void pktinfo(void)
{
    int fd = udp(0);
    int one = 1;
    CHECK_OK(setsockopt(fd, IPPROTO_IP, IP_PKTINFO, &one, sizeof one));
    CHECK(so_int(fd, IPPROTO_IP, IP_PKTINFO) == 1, "IP_PKTINFO reads back");
    struct sockaddr_in peer = sem_peer_addr(SEM_P_ECHO);
    CHECK(sendto(fd, "pi", 2, 0, (struct sockaddr *)&peer, sizeof peer) == 2, "sendto");
    CHECK(readable(fd, 3000), "no echo");
    char buf[8];
    union {
        struct cmsghdr c;
        char b[CMSG_SPACE(sizeof(struct in_pktinfo))];
    } u;
    struct iovec iov = {buf, sizeof buf};
    struct msghdr m = {
        .msg_iov = &iov, .msg_iovlen = 1, .msg_control = &u, .msg_controllen = sizeof u};
    CHECK(recvmsg(fd, &m, 0) == 2, "recvmsg");
    struct cmsghdr *c = CMSG_FIRSTHDR(&m);
    CHECK(c && c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_PKTINFO, "no IP_PKTINFO");
    struct in_pktinfo pi;
    memcpy(&pi, CMSG_DATA(c), sizeof pi);
    CHECK(pi.ipi_addr.s_addr == sem_self_ip.s_addr, "ipi_addr %s", inet_ntoa(pi.ipi_addr));
    CHECK(pi.ipi_ifindex > 0, "ipi_ifindex %d", pi.ipi_ifindex);
}

static void connected(void)
{
    int fd = udp(0);
    struct sockaddr_in peer = sem_peer_addr(SEM_P_ECHO);
    CHECK_OK(connect(fd, (struct sockaddr *)&peer, sizeof peer));
    struct sockaddr_in a;
    socklen_t l = sizeof a;
    CHECK_OK(getpeername(fd, (struct sockaddr *)&a, &l));
    CHECK(a.sin_port == peer.sin_port, "peer port");
    l = sizeof a;
    CHECK_OK(getsockname(fd, (struct sockaddr *)&a, &l));
    CHECK(a.sin_addr.s_addr == sem_self_ip.s_addr && a.sin_port, "name %s:%u",
          inet_ntoa(a.sin_addr), ntohs(a.sin_port));
    CHECK(write(fd, "abc", 3) == 3, "write");
    CHECK(send(fd, "defg", 4, 0) == 4, "send");
    char buf[16];
    CHECK(readable(fd, 3000), "no echo");
    CHECK(read(fd, buf, sizeof buf) == 3 && !memcmp(buf, "abc", 3), "read");
    CHECK(readable(fd, 3000), "no second echo");
    CHECK(recv(fd, buf, sizeof buf, 0) == 4 && !memcmp(buf, "defg", 4), "recv");
    /* connect(AF_UNSPEC) dissolves the association. */
    struct sockaddr un = {.sa_family = AF_UNSPEC};
    CHECK_OK(connect(fd, &un, sizeof un));
    CHECK_ERR(getpeername(fd, (struct sockaddr *)&a, &l), ENOTCONN);
    CHECK_ERR(send(fd, "x", 1, 0), EDESTADDRREQ);
}

/* A connected socket hears of the peer's ICMP port unreachable: ECONNREFUSED, once. */
static void refused_once(void)
{
    int fd = udp(0);
    struct sockaddr_in none = sem_peer_addr(SEM_P_NONE);
    CHECK_OK(connect(fd, (struct sockaddr *)&none, sizeof none));
    CHECK(send(fd, "x", 1, 0) == 1, "first send");
    struct timeval tv = {2, 0};
    CHECK_OK(setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv));
    char buf[4];
    CHECK_ERR(recv(fd, buf, sizeof buf, 0), ECONNREFUSED);
    CHECK_ERR(recv(fd, buf, sizeof buf, MSG_DONTWAIT), EAGAIN);
    /* Again, seen through poll (POLLERR) and SO_ERROR, which clears it. */
    CHECK(send(fd, "y", 1, 0) == 1, "second send");
    struct pollfd p = {fd, POLLIN, 0};
    CHECK(poll(&p, 1, 2000) == 1 && (p.revents & POLLERR), "revents %#x", p.revents);
    CHECK(so_int(fd, SOL_SOCKET, SO_ERROR) == ECONNREFUSED, "SO_ERROR");
    CHECK(so_int(fd, SOL_SOCKET, SO_ERROR) == 0, "SO_ERROR again");
    /* And through the next send. */
    CHECK(send(fd, "z", 1, 0) == 1, "third send");
    sem_sleep_ms(300);
    CHECK_ERR(send(fd, "w", 1, 0), ECONNREFUSED);
    CHECK(send(fd, "v", 1, 0) == 1, "send after the error was reported");
}

/* An unconnected socket is not told. */
static void unconnected_not_refused(void)
{
    int fd = udp(0);
    struct sockaddr_in none = sem_peer_addr(SEM_P_NONE);
    CHECK(sendto(fd, "x", 1, 0, (struct sockaddr *)&none, sizeof none) == 1, "sendto");
    sem_sleep_ms(300);
    char buf[4];
    CHECK_ERR(recv(fd, buf, sizeof buf, MSG_DONTWAIT), EAGAIN);
    CHECK(so_int(fd, SOL_SOCKET, SO_ERROR) == 0, "SO_ERROR");
}

static void broadcast(void)
{
    int fd = udp(0);
    /* The subnet's broadcast. (255.255.255.255 depends on the routes: without a default
     * route, as in this namespace, Linux says ENETUNREACH before looking at SO_BROADCAST;
     * ustack sends it out of its interface, EACCES without SO_BROADCAST.) */
    struct sockaddr_in b = sem_sin((struct in_addr){0}, 9);
    b.sin_addr.s_addr = htonl((ntohl(sem_peer_ip.s_addr) & 0xffffff00u) | 0xff);
    CHECK_ERR(sendto(fd, "b", 1, 0, (struct sockaddr *)&b, sizeof b), EACCES);
    CHECK_ERR(connect(fd, (struct sockaddr *)&b, sizeof b), EACCES);
    int one = 1;
    CHECK_OK(setsockopt(fd, SOL_SOCKET, SO_BROADCAST, &one, sizeof one));
    CHECK(so_int(fd, SOL_SOCKET, SO_BROADCAST) == 1, "SO_BROADCAST reads back");
    CHECK(sendto(fd, "b", 1, 0, (struct sockaddr *)&b, sizeof b) == 1, "subnet broadcast");
}

static void bind_rules(void)
{
    int a = udp(0), b = udp(0);
    struct sockaddr_in s = sem_sin(sem_self_ip, sem_lport(0));
    CHECK_OK(bind(a, (struct sockaddr *)&s, sizeof s));
    CHECK_ERR(bind(a, (struct sockaddr *)&s, sizeof s), EINVAL);
    CHECK_ERR(bind(b, (struct sockaddr *)&s, sizeof s), EADDRINUSE);
    struct sockaddr_in any = sem_sin((struct in_addr){0}, sem_lport(0));
    CHECK_ERR(bind(b, (struct sockaddr *)&any, sizeof any), EADDRINUSE);
    int c = udp(0), d = udp(0), one = 1;
    CHECK_OK(setsockopt(c, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one));
    CHECK_OK(setsockopt(d, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one));
    struct sockaddr_in s1 = sem_sin(sem_self_ip, sem_lport(1));
    CHECK_OK(bind(c, (struct sockaddr *)&s1, sizeof s1));
    CHECK_OK(bind(d, (struct sockaddr *)&s1, sizeof s1));
    /* The port of a closed socket is free at once (no TIME-WAIT for UDP). */
    sem_close(a);
    CHECK_OK(bind(b, (struct sockaddr *)&s, sizeof s));
}

/* A socket may bind the subnet's broadcast address (Linux's inet_bind takes RTN_BROADCAST
 * as it takes RTN_LOCAL; nmbd binds one per interface with `bind interfaces only`, and
 * failed to start on ustack with EADDRNOTAVAIL): it receives the broadcasts sent there and
 * nothing sent to our address, its own datagrams leave from our address, and it does not
 * conflict with a socket bound to our address on the same port, where a wildcard one
 * overlaps both. */
static void bind_broadcast(void)
{
    struct in_addr bc = {htonl((ntohl(sem_self_ip.s_addr) & 0xffffff00u) | 0xff)};
    struct sockaddr_in ba = sem_sin(bc, sem_lport(4)), ua = sem_sin(sem_self_ip, sem_lport(4));
    struct sockaddr_in wa = sem_sin((struct in_addr){0}, sem_lport(4));
    int b = udp(0), u = udp(0), w = udp(0);
    CHECK_OK(bind(b, (struct sockaddr *)&ba, sizeof ba));
    struct sockaddr_in me;
    socklen_t l = sizeof me;
    CHECK_OK(getsockname(b, (struct sockaddr *)&me, &l));
    CHECK(me.sin_addr.s_addr == bc.s_addr && me.sin_port == ba.sin_port, "name %s:%u",
          inet_ntoa(me.sin_addr), ntohs(me.sin_port));
    CHECK_OK(bind(u, (struct sockaddr *)&ua, sizeof ua));
    CHECK_ERR(bind(w, (struct sockaddr *)&wa, sizeof wa), EADDRINUSE);
    /* The peer broadcasts u's datagram back to our port: b gets it, u does not. */
    struct sockaddr_in pb = sem_peer_addr(SEM_PU_BCAST);
    CHECK(sendto(u, "all", 3, 0, (struct sockaddr *)&pb, sizeof pb) == 3, "sendto");
    CHECK(readable(b, 3000), "no broadcast on the socket bound to the broadcast address");
    char buf[16];
    struct sockaddr_in from;
    socklen_t fl = sizeof from;
    ssize_t n = recvfrom(b, buf, sizeof buf, 0, (struct sockaddr *)&from, &fl);
    CHECK(n == 3 && !memcmp(buf, "all", 3), "recvfrom %zd", n);
    CHECK(from.sin_addr.s_addr == sem_peer_ip.s_addr, "from %s", inet_ntoa(from.sin_addr));
    CHECK_ERR(recv(u, buf, sizeof buf, MSG_DONTWAIT), EAGAIN);
    /* b's datagram leaves from our address: its echo comes back to u, not to b. */
    struct sockaddr_in pe = sem_peer_addr(SEM_P_ECHO);
    CHECK(sendto(b, "from-b", 6, 0, (struct sockaddr *)&pe, sizeof pe) == 6, "sendto from b");
    CHECK(readable(u, 3000), "no echo of b's datagram at our address");
    n = recv(u, buf, sizeof buf, 0);
    CHECK(n == 6 && !memcmp(buf, "from-b", 6), "recv %zd", n);
    CHECK_ERR(recv(b, buf, sizeof buf, MSG_DONTWAIT), EAGAIN);
    /* A dual-stack AF_INET6 socket may bind it v4-mapped, and gets the broadcasts there. */
    int s6 = sem_track(socket(AF_INET6, SOCK_DGRAM, 0)), u6 = udp(0);
    struct sockaddr_in6 m6 = {.sin6_family = AF_INET6, .sin6_port = htons(sem_lport(6))}, n6;
    m6.sin6_addr.s6_addr[10] = m6.sin6_addr.s6_addr[11] = 0xff;
    memcpy(&m6.sin6_addr.s6_addr[12], &bc, 4);
    CHECK_OK(bind(s6, (struct sockaddr *)&m6, sizeof m6));
    l = sizeof n6;
    CHECK_OK(getsockname(s6, (struct sockaddr *)&n6, &l));
    CHECK(l == sizeof n6 && !memcmp(&n6.sin6_addr, &m6.sin6_addr, 16) &&
              n6.sin6_port == m6.sin6_port,
          "v4-mapped name, length %u", l);
    struct sockaddr_in u6a = sem_sin(sem_self_ip, sem_lport(6));
    CHECK_OK(bind(u6, (struct sockaddr *)&u6a, sizeof u6a));
    CHECK(sendto(u6, "six", 3, 0, (struct sockaddr *)&pb, sizeof pb) == 3, "sendto");
    CHECK(readable(s6, 3000), "no broadcast on the AF_INET6 socket");
    n = recv(s6, buf, sizeof buf, 0);
    CHECK(n == 3 && !memcmp(buf, "six", 3), "recv %zd", n);
}

/* Among sockets sharing a port (SO_REUSEADDR), one bound to our address gets our unicast
 * datagrams even when a wildcard one was bound after it (compute_score: the exact address
 * scores higher; only ties go to the newest). */
static void exact_address_wins(void)
{
    int s = udp(0), w = udp(0), one = 1;
    struct sockaddr_in sa = sem_sin(sem_self_ip, sem_lport(5));
    struct sockaddr_in wa = sem_sin((struct in_addr){0}, sem_lport(5));
    CHECK_OK(setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one));
    CHECK_OK(setsockopt(w, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one));
    CHECK_OK(bind(s, (struct sockaddr *)&sa, sizeof sa));
    CHECK_OK(bind(w, (struct sockaddr *)&wa, sizeof wa));
    struct sockaddr_in pe = sem_peer_addr(SEM_P_ECHO);
    CHECK(sendto(w, "x", 1, 0, (struct sockaddr *)&pe, sizeof pe) == 1, "sendto");
    CHECK(readable(s, 3000), "the echo did not reach the socket bound to our address");
    char buf[4];
    CHECK_ERR(recv(w, buf, sizeof buf, MSG_DONTWAIT), EAGAIN);
    CHECK(recv(s, buf, sizeof buf, 0) == 1, "recv on the bound socket");
    /* A socket connected to the sender scores higher still (its address and port). */
    CHECK_OK(connect(w, (struct sockaddr *)&pe, sizeof pe));
    CHECK(send(w, "y", 1, 0) == 1, "send");
    CHECK(readable(w, 3000), "the echo did not reach the connected socket");
    CHECK_ERR(recv(s, buf, sizeof buf, MSG_DONTWAIT), EAGAIN);
}

static void send_errors(void)
{
    int fd = udp(0);
    struct sockaddr_in peer = sem_peer_addr(SEM_P_ECHO), p0 = sem_sin(sem_peer_ip, 0);
    CHECK_ERR(sendto(fd, "x", 1, 0, (struct sockaddr *)&p0, sizeof p0), EINVAL);
    CHECK_ERR(sendto(fd, "x", 1, 0, (struct sockaddr *)&peer, 8), EINVAL);
    struct sockaddr_in bad = peer;
    bad.sin_family = AF_INET6;
    CHECK_ERR(sendto(fd, "x", 1, 0, (struct sockaddr *)&bad, sizeof bad), EAFNOSUPPORT);
    static char big[65508];
    CHECK_ERR(sendto(fd, big, sizeof big, 0, (struct sockaddr *)&peer, sizeof peer), EMSGSIZE);
    CHECK_ERR(sendto(fd, "x", 1, MSG_OOB, (struct sockaddr *)&peer, sizeof peer), EOPNOTSUPP);
    struct sockaddr_in far = sem_sin((struct in_addr){htonl(0xc6130101)}, 9); /* 198.19.1.1 */
    CHECK_ERR(sendto(fd, "x", 1, 0, (struct sockaddr *)&far, sizeof far), ENETUNREACH);
}

static void shutdown_rules(void)
{
    int fd = udp(0);
    /* Unconnected: ENOTCONN, and yet the read side is shut (recv returns 0 at once). */
    CHECK_ERR(shutdown(fd, SHUT_RD), ENOTCONN);
    char buf[4];
    CHECK(recv(fd, buf, sizeof buf, 0) == 0, "recv after SHUT_RD");
    struct pollfd p = {fd, POLLIN, 0};
    CHECK(poll(&p, 1, 0) == 1 && (p.revents & POLLIN), "POLLIN after SHUT_RD");
    int c = udp(0);
    struct sockaddr_in peer = sem_peer_addr(SEM_P_ECHO);
    CHECK_OK(connect(c, (struct sockaddr *)&peer, sizeof peer));
    CHECK_OK(shutdown(c, SHUT_WR));
    int before = sem_sigpipes;
    CHECK_ERR(send(c, "x", 1, 0), EPIPE);
    CHECK(sem_sigpipes == before, "SIGPIPE on a datagram socket");
    CHECK_ERR(shutdown(c, 7), EINVAL);
}

static void epoll_in(void)
{
    int fd = udp(SOCK_NONBLOCK);
    int ep = sem_track(epoll_create1(0));
    struct epoll_event ev = {.events = EPOLLIN | EPOLLET, .data.fd = fd};
    CHECK_OK(epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev));
    struct epoll_event out[2];
    CHECK(epoll_wait(ep, out, 2, 0) == 0, "ready before anything arrived");
    struct sockaddr_in peer = sem_peer_addr(SEM_P_ECHO);
    CHECK(sendto(fd, "e", 1, 0, (struct sockaddr *)&peer, sizeof peer) == 1, "sendto");
    int n = epoll_wait(ep, out, 2, 3000);
    CHECK(n == 1 && (out[0].events & EPOLLIN), "epoll_wait %d", n);
    char buf[4];
    CHECK(recv(fd, buf, sizeof buf, 0) == 1, "recv");
    CHECK_ERR(recv(fd, buf, sizeof buf, 0), EAGAIN);
}

static void mmsg(void)
{
    int fd = udp(0);
    struct sockaddr_in peer = sem_peer_addr(SEM_P_ECHO);
    CHECK_OK(connect(fd, (struct sockaddr *)&peer, sizeof peer));
    char d[4][8] = {"a", "bb", "ccc", "dddd"};
    struct iovec iov[4];
    struct mmsghdr v[4];
    memset(v, 0, sizeof v);
    for (int i = 0; i < 4; i++) {
        iov[i].iov_base = d[i];
        iov[i].iov_len = (size_t)i + 1;
        v[i].msg_hdr.msg_iov = &iov[i];
        v[i].msg_hdr.msg_iovlen = 1;
    }
    CHECK(sendmmsg(fd, v, 4, 0) == 4, "sendmmsg");
    CHECK(v[3].msg_len == 4, "msg_len %u", v[3].msg_len);
    char in[4][8];
    struct iovec riov[4];
    struct mmsghdr r[4];
    memset(r, 0, sizeof r);
    for (int i = 0; i < 4; i++) {
        riov[i].iov_base = in[i];
        riov[i].iov_len = sizeof in[i];
        r[i].msg_hdr.msg_iov = &riov[i];
        r[i].msg_hdr.msg_iovlen = 1;
    }
    int got = 0;
    double t0 = sem_ms();
    while (got < 4 && sem_ms() - t0 < 3000) {
        if (!readable(fd, 500))
            continue;
        int n = recvmmsg(fd, r + got, (unsigned)(4 - got), MSG_DONTWAIT, NULL);
        CHECK(n > 0, "recvmmsg %d", n);
        got += n;
    }
    CHECK(got == 4, "%d datagrams", got);
    for (int i = 0; i < 4; i++)
        CHECK(r[i].msg_len == (unsigned)i + 1 && !memcmp(in[i], d[i], (size_t)i + 1),
              "datagram %d: %u bytes", i, r[i].msg_len);
}

/* sendmmsg/recvmmsg made with syscall(2), as libuv does. */
static void raw_syscall_mmsg(void)
{
    int fd = udp(0);
    struct sockaddr_in peer = sem_peer_addr(SEM_P_ECHO);
    CHECK_OK(connect(fd, (struct sockaddr *)&peer, sizeof peer));
    char d[2][4] = {"one", "two"};
    struct iovec iov[2] = {{d[0], 3}, {d[1], 3}};
    struct mmsghdr v[2];
    memset(v, 0, sizeof v);
    for (int i = 0; i < 2; i++) {
        v[i].msg_hdr.msg_iov = &iov[i];
        v[i].msg_hdr.msg_iovlen = 1;
    }
    CHECK(syscall(SYS_sendmmsg, fd, v, 2, 0) == 2, "syscall(SYS_sendmmsg)");
    char in[2][8];
    struct iovec riov[2] = {{in[0], 8}, {in[1], 8}};
    struct mmsghdr r[2];
    memset(r, 0, sizeof r);
    for (int i = 0; i < 2; i++) {
        r[i].msg_hdr.msg_iov = &riov[i];
        r[i].msg_hdr.msg_iovlen = 1;
    }
    int got = 0;
    double t0 = sem_ms();
    while (got < 2 && sem_ms() - t0 < 3000) {
        if (!readable(fd, 500))
            continue;
        long n = syscall(SYS_recvmmsg, fd, r + got, 2 - got, MSG_DONTWAIT, NULL);
        CHECK(n > 0, "syscall(SYS_recvmmsg) %ld", n);
        got += (int)n;
    }
    CHECK(got == 2 && r[0].msg_len == 3 && !memcmp(in[0], "one", 3) && !memcmp(in[1], "two", 3),
          "%d datagrams", got);
}

/* A socket bound to loopback, and one sending to it, are the kernel's (docs/preload.md). */
static void loopback(void)
{
    int a = udp(0), b = udp(0);
    struct sockaddr_in lo = sem_sin((struct in_addr){htonl(INADDR_LOOPBACK)}, sem_lport(2));
    CHECK_OK(bind(a, (struct sockaddr *)&lo, sizeof lo));
    CHECK(sendto(b, "lo", 2, 0, (struct sockaddr *)&lo, sizeof lo) == 2, "sendto loopback");
    CHECK(readable(a, 3000), "nothing arrived");
    char buf[4];
    struct sockaddr_in from;
    socklen_t fl = sizeof from;
    CHECK(recvfrom(a, buf, sizeof buf, 0, (struct sockaddr *)&from, &fl) == 2, "recvfrom");
    CHECK(from.sin_addr.s_addr == htonl(INADDR_LOOPBACK), "from %s", inet_ntoa(from.sin_addr));
}

/* Datagrams to our own address (CPython's test_socket and socketserver with HOST set to the
 * machine's address): a fresh socket's sendto reaches a socket bound to that address, the
 * sender is named by our address and its port, the answer comes back, and a connected
 * socket whose datagram found no socket gets ECONNREFUSED. Under ustack the fresh socket
 * went to the kernel, which has no path to ustack's address (ENETUNREACH), and a bound one
 * got ENETUNREACH. */
static void own_address(void)
{
    int srv = udp(0), cli = udp(0), c2 = udp(0);
    struct sockaddr_in sa = sem_sin(sem_self_ip, sem_lport(7)), from, me;
    socklen_t fl = sizeof from, ml = sizeof me;
    CHECK_OK(bind(srv, (struct sockaddr *)&sa, sizeof sa));
    CHECK(sendto(cli, "own", 3, 0, (struct sockaddr *)&sa, sizeof sa) == 3, "sendto");
    CHECK(readable(srv, 3000), "nothing arrived");
    char buf[8];
    CHECK(recvfrom(srv, buf, sizeof buf, 0, (struct sockaddr *)&from, &fl) == 3 &&
              !memcmp(buf, "own", 3),
          "recvfrom");
    CHECK_OK(getsockname(cli, (struct sockaddr *)&me, &ml));
    CHECK(from.sin_addr.s_addr == sem_self_ip.s_addr && from.sin_port == me.sin_port, "from %s:%u",
          inet_ntoa(from.sin_addr), ntohs(from.sin_port));
    CHECK(sendto(srv, "back", 4, 0, (struct sockaddr *)&from, fl) == 4, "sendto back");
    CHECK(readable(cli, 3000), "the answer did not arrive");
    CHECK(recv(cli, buf, sizeof buf, 0) == 4 && !memcmp(buf, "back", 4), "recv");
    /* Connected to a port of ours with no socket: the next call says ECONNREFUSED. */
    struct sockaddr_in none = sem_sin(sem_self_ip, sem_lport(8));
    CHECK_OK(connect(c2, (struct sockaddr *)&none, sizeof none));
    CHECK(send(c2, "x", 1, 0) == 1, "send");
    struct pollfd p = {c2, POLLIN, 0};
    CHECK(poll(&p, 1, 3000) == 1 && (p.revents & POLLERR), "revents 0x%x", p.revents);
    CHECK_ERR(recv(c2, buf, sizeof buf, MSG_DONTWAIT), ECONNREFUSED);
}

/* IP_TOS of a UDP socket: 0 by default, all eight bits kept (Linux masks the ECN bits for
 * TCP only), on the wire: the peer at +1 answers with the TOS its datagram arrived with. */
static void ip_tos(void)
{
    int fd = udp(0);
    CHECK(so_int(fd, IPPROTO_IP, IP_TOS) == 0, "default IP_TOS %d", so_int(fd, IPPROTO_IP, IP_TOS));
    int v = 0xb9;
    CHECK_OK(setsockopt(fd, IPPROTO_IP, IP_TOS, &v, sizeof v));
    CHECK(so_int(fd, IPPROTO_IP, IP_TOS) == 0xb9, "IP_TOS reads 0x%x",
          so_int(fd, IPPROTO_IP, IP_TOS));
    struct sockaddr_in peer = sem_peer_addr(SEM_PU_TOS);
    for (int round = 0; round < 2; round++) {
        CHECK(sendto(fd, "t", 1, 0, (struct sockaddr *)&peer, sizeof peer) == 1, "sendto");
        CHECK(readable(fd, 3000), "no answer");
        unsigned char tos = 0xff;
        CHECK(recv(fd, &tos, 1, 0) == 1, "recv");
        CHECK(tos == (round ? 0 : 0xb9), "the peer saw TOS 0x%x (round %d)", tos, round);
        v = 0;
        CHECK_OK(setsockopt(fd, IPPROTO_IP, IP_TOS, &v, sizeof v));
    }
}

static void rcvbuf(void)
{
    int fd = udp(0), v = 65536;
    CHECK_OK(setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &v, sizeof v));
    CHECK(so_int(fd, SOL_SOCKET, SO_RCVBUF) == 131072, "SO_RCVBUF %d",
          so_int(fd, SOL_SOCKET, SO_RCVBUF));
}

/* A DNS server with two threads (Unbound's num-threads: 2) opens a UDP and a TCP socket per
 * thread on one address and port, all with SO_REUSEPORT: both listeners listen, each socket
 * keeps its type. Under ustack the second TCP bind became an alias of the first socket on
 * that address, the UDP one, whose listen() then failed with EOPNOTSUPP. */
static int reuseport_sock(int type, struct sockaddr_in *a)
{
    int fd = sem_track(socket(AF_INET, type, 0)), one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0 ||
        bind(fd, (struct sockaddr *)a, sizeof *a) < 0)
        return -1;
    return fd;
}

static void reuseport_udp_tcp_pairs(void)
{
    struct sockaddr_in a = sem_sin((struct in_addr){0}, sem_lport(3));
    for (int i = 0; i < 2; i++) {
        int u = reuseport_sock(SOCK_DGRAM, &a);
        CHECK(u >= 0, "pair %d: UDP socket", i);
        int t = reuseport_sock(SOCK_STREAM, &a);
        CHECK(t >= 0, "pair %d: TCP socket", i);
        CHECK(listen(t, 16) == 0, "pair %d: listen", i);
        int ty = 0;
        socklen_t l = sizeof ty;
        CHECK_OK(getsockopt(t, SOL_SOCKET, SO_TYPE, &ty, &l));
        CHECK(ty == SOCK_STREAM, "pair %d: the TCP socket's SO_TYPE is %d", i, ty);
        l = sizeof ty;
        CHECK_OK(getsockopt(u, SOL_SOCKET, SO_TYPE, &ty, &l));
        CHECK(ty == SOCK_DGRAM, "pair %d: the UDP socket's SO_TYPE is %d", i, ty);
    }
}

/* SO_REUSEPORT spreads a port's datagrams over the group by sender (Linux hashes the
 * addresses and ports): 32 senders, two datagrams each, to two sockets bound to one address
 * and port; each sender's datagrams reach one socket, both sockets hear from some senders,
 * nothing is lost or doubled. (Under ustack the second socket used to become a dup of the
 * first: one socket, so the other "heard" nothing of its own.) */
static void reuseport_spread(void)
{
    enum { SENDERS = 32 };
    struct sockaddr_in a = sem_sin(sem_self_ip, sem_lport(9));
    int r[2], one = 1;
    for (int i = 0; i < 2; i++) {
        r[i] = udp(SOCK_NONBLOCK);
        CHECK(r[i] >= 0, "socket");
        CHECK_OK(setsockopt(r[i], SOL_SOCKET, SO_REUSEPORT, &one, sizeof one));
        CHECK_OK(bind(r[i], (struct sockaddr *)&a, sizeof a));
    }
    int plain = udp(0);
    CHECK_ERR(bind(plain, (struct sockaddr *)&a, sizeof a), EADDRINUSE);
    int snd[SENDERS];
    for (int i = 0; i < SENDERS; i++) {
        snd[i] = udp(0);
        CHECK(snd[i] >= 0, "sender %d", i);
        for (int k = 0; k < 2; k++) {
            unsigned char b = (unsigned char)i;
            CHECK(sendto(snd[i], &b, 1, 0, (struct sockaddr *)&a, sizeof a) == 1, "sendto %d", i);
        }
    }
    int seen[2][SENDERS];
    memset(seen, 0, sizeof seen);
    int total = 0;
    double end = sem_ms() + 5000;
    while (total < 2 * SENDERS && sem_ms() < end) {
        struct pollfd p[2] = {{r[0], POLLIN, 0}, {r[1], POLLIN, 0}};
        if (poll(p, 2, 500) <= 0)
            continue;
        for (int i = 0; i < 2; i++) {
            unsigned char b;
            while (recv(r[i], &b, 1, 0) == 1 && b < SENDERS) {
                seen[i][b]++;
                total++;
            }
        }
    }
    CHECK(total == 2 * SENDERS, "%d of %d datagrams arrived", total, 2 * SENDERS);
    int per[2] = {0, 0};
    for (int s = 0; s < SENDERS; s++) {
        CHECK((seen[0][s] == 2 && !seen[1][s]) || (!seen[0][s] && seen[1][s] == 2),
              "sender %d: %d and %d datagrams", s, seen[0][s], seen[1][s]);
        per[seen[1][s] == 2]++;
    }
    CHECK(per[0] > 0 && per[1] > 0, "one socket heard every sender: %d and %d", per[0], per[1]);
}

int main(void)
{
    sem_init("sem_udp", 11);
    SEM_RUN(basics);
    SEM_RUN(echo_roundtrip);
    SEM_RUN(boundaries);
    SEM_RUN(peek_trunc_fionread);
    SEM_RUN(pktinfo);
    SEM_RUN(connected);
    SEM_RUN(refused_once);
    SEM_RUN(unconnected_not_refused);
    SEM_RUN(broadcast);
    SEM_RUN(bind_rules);
    SEM_RUN(bind_broadcast);
    SEM_RUN(exact_address_wins);
    SEM_RUN(send_errors);
    SEM_RUN(shutdown_rules);
    SEM_RUN(epoll_in);
    SEM_RUN(mmsg);
    SEM_RUN(raw_syscall_mmsg);
    SEM_RUN(loopback);
    SEM_RUN(own_address);
    SEM_RUN(rcvbuf);
    SEM_RUN(ip_tos);
    SEM_RUN(reuseport_udp_tcp_pairs);
    SEM_RUN(reuseport_spread);
    return sem_done();
}

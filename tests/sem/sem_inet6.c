/* tests/sem/sem_inet6.c - AF_INET6 sockets (ipv6(7)): dual-stack listeners with IPv4
 * clients seen as v4-mapped addresses, IPV6_V6ONLY and its bind rules, the shapes and
 * lengths of the names, the errno of bad arguments, IPv6 options, loopback through a
 * wildcard listener, UDP with v4-mapped and AF_INET destinations and IPV6_PKTINFO, and
 * native IPv6 to the peer (SEM_PEER6, SEM_SELF6: TCP and UDP echo at +0, connect-back with
 * "connect6").
 */
#include "sem.h"

#include <netinet/udp.h>

static struct in6_addr peer6, self6;

static struct sockaddr_in6 sin6_of(struct in6_addr a, int port)
{
    struct sockaddr_in6 s;
    memset(&s, 0, sizeof s);
    s.sin6_family = AF_INET6;
    s.sin6_addr = a;
    s.sin6_port = htons((uint16_t)port);
    return s;
}

static struct in6_addr mapped(struct in_addr v4)
{
    struct in6_addr a;
    memset(&a, 0, sizeof a);
    a.s6_addr[10] = a.s6_addr[11] = 0xff;
    memcpy(&a.s6_addr[12], &v4, 4);
    return a;
}

static const char *str6(const struct in6_addr *a)
{
    static __thread char b[2][INET6_ADDRSTRLEN];
    static __thread int k;
    k ^= 1;
    return inet_ntop(AF_INET6, a, b[k], sizeof b[k]) ? b[k] : "?";
}

static int sock6(int type)
{
    return sem_track(socket(AF_INET6, type, 0));
}

static int v6only(int fd, int on)
{
    return setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof on);
}

static int get_int(int fd, int level, int name)
{
    int v = -12345;
    socklen_t l = sizeof v;
    return getsockopt(fd, level, name, &v, &l) < 0 ? -1000 - errno : v;
}

/* A dual-stack (or v6-only) listener on [::]:sem_lport(k). */
static int listen6(int k, int only)
{
    int fd = sock6(SOCK_STREAM), one = 1;
    if (fd < 0)
        return -1;
    struct sockaddr_in6 a = sin6_of(in6addr_any, sem_lport(k));
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 || v6only(fd, only) < 0 ||
        bind(fd, (struct sockaddr *)&a, sizeof a) < 0 || listen(fd, 16) < 0)
        return -1;
    return fd;
}

static int echo_once(int fd, const char *msg)
{
    size_t n = strlen(msg);
    char buf[64];
    if (sem_write_all(fd, msg, n) < 0)
        return -1;
    return sem_read_full(fd, buf, n, 3000) == (ssize_t)n && !memcmp(buf, msg, n) ? 0 : -1;
}

static int bindv6only_sysctl(void)
{
    FILE *f = fopen("/proc/sys/net/ipv6/bindv6only", "r");
    int v = 0;
    if (f) {
        if (fscanf(f, "%d", &v) != 1)
            v = 0;
        fclose(f);
    }
    return v;
}

/* ------------------------------------------------------------------ v4-mapped (IPv4) */

static void basics(void)
{
    int fd = sock6(SOCK_STREAM);
    CHECK(fd >= 0, "socket(AF_INET6, SOCK_STREAM)");
    CHECK(get_int(fd, SOL_SOCKET, SO_DOMAIN) == AF_INET6, "SO_DOMAIN %d",
          get_int(fd, SOL_SOCKET, SO_DOMAIN));
    CHECK(get_int(fd, IPPROTO_IPV6, IPV6_V6ONLY) == bindv6only_sysctl(), "IPV6_V6ONLY %d",
          get_int(fd, IPPROTO_IPV6, IPV6_V6ONLY));
    struct sockaddr_in6 a;
    memset(&a, 0xa5, sizeof a);
    socklen_t l = sizeof a;
    CHECK_OK(getsockname(fd, (struct sockaddr *)&a, &l));
    CHECK(l == sizeof(struct sockaddr_in6), "getsockname length %u", (unsigned)l);
    CHECK(a.sin6_family == AF_INET6 && a.sin6_port == 0 && IN6_IS_ADDR_UNSPECIFIED(&a.sin6_addr) &&
              a.sin6_flowinfo == 0 && a.sin6_scope_id == 0,
          "unbound name %s port %u", str6(&a.sin6_addr), ntohs(a.sin6_port));
    /* A short buffer: truncated, the full length reported. */
    char small[8];
    l = sizeof small;
    CHECK_OK(getsockname(fd, (struct sockaddr *)small, &l));
    CHECK(l == sizeof(struct sockaddr_in6), "truncated length %u", (unsigned)l);
    CHECK_ERR(getpeername(fd, (struct sockaddr *)&a, &(socklen_t){sizeof a}), ENOTCONN);
    int u = sock6(SOCK_DGRAM);
    CHECK(u >= 0, "socket(AF_INET6, SOCK_DGRAM)");
    CHECK(get_int(u, SOL_SOCKET, SO_DOMAIN) == AF_INET6, "UDP SO_DOMAIN");
    CHECK(get_int(u, SOL_SOCKET, SO_PROTOCOL) == IPPROTO_UDP, "UDP SO_PROTOCOL");
}

static void bind_errors(void)
{
    int fd = sock6(SOCK_STREAM);
    struct sockaddr_in a4 = sem_sin(sem_self_ip, sem_lport(0));
    CHECK_ERR(bind(fd, (struct sockaddr *)&a4, sizeof a4), EINVAL); /* shorter than 24 */
    struct sockaddr_in6 a = sin6_of(in6addr_any, sem_lport(0));
    CHECK_ERR(bind(fd, (struct sockaddr *)&a, 23), EINVAL);
    a.sin6_family = AF_INET;
    CHECK_ERR(bind(fd, (struct sockaddr *)&a, sizeof a), EAFNOSUPPORT);
    a.sin6_family = AF_UNSPEC;
    CHECK_ERR(bind(fd, (struct sockaddr *)&a, sizeof a), EAFNOSUPPORT);
    /* A v4-mapped address on a v6-only socket "makes no sense". */
    CHECK_OK(v6only(fd, 1));
    a = sin6_of(mapped(sem_self_ip), sem_lport(0));
    CHECK_ERR(bind(fd, (struct sockaddr *)&a, sizeof a), EINVAL);
    /* An IPv4 address that is not ours. */
    int g = sock6(SOCK_STREAM);
    a = sin6_of(mapped(sem_peer_ip), sem_lport(0));
    CHECK_ERR(bind(g, (struct sockaddr *)&a, sizeof a), EADDRNOTAVAIL);
    /* Bound: IPV6_V6ONLY can no longer change, bind not again. */
    int h = sock6(SOCK_STREAM);
    a = sin6_of(in6addr_any, 0);
    CHECK_OK(bind(h, (struct sockaddr *)&a, sizeof a));
    CHECK_ERR(v6only(h, 1), EINVAL);
    CHECK_ERR(bind(h, (struct sockaddr *)&a, sizeof a), EINVAL);
    CHECK(sem_port_of(h, 0) > 0, "ephemeral port");
}

/* An IPv4 client of a dual-stack listener: its address is v4-mapped, 28 bytes. */
static void dualstack_v4_client(void)
{
    int l = listen6(1, 0);
    CHECK(l >= 0, "listen [::]");
    int c = sem_ctl(sem_lport(1), 5, 0, 1);
    CHECK(c >= 0, "ctl");
    struct sockaddr_in6 p;
    memset(&p, 0, sizeof p);
    socklen_t pl = sizeof p;
    CHECK(sem_wait_fd(l, POLLIN, 5000) > 0, "no connection");
    int a = sem_track(accept(l, (struct sockaddr *)&p, &pl));
    CHECK(a >= 0, "accept");
    struct in6_addr want = mapped(sem_peer_ip);
    CHECK(pl == sizeof p && p.sin6_family == AF_INET6, "accept length %u family %d", (unsigned)pl,
          p.sin6_family);
    CHECK(!memcmp(&p.sin6_addr, &want, 16), "peer %s", str6(&p.sin6_addr));
    struct sockaddr_in6 n;
    socklen_t nl = sizeof n;
    CHECK_OK(getsockname(a, (struct sockaddr *)&n, &nl));
    want = mapped(sem_self_ip);
    CHECK(nl == sizeof n && !memcmp(&n.sin6_addr, &want, 16) && ntohs(n.sin6_port) == sem_lport(1),
          "local %s port %u", str6(&n.sin6_addr), ntohs(n.sin6_port));
    nl = sizeof n;
    CHECK_OK(getpeername(a, (struct sockaddr *)&n, &nl));
    CHECK(!memcmp(&n.sin6_addr, &p.sin6_addr, 16) && n.sin6_port == p.sin6_port, "getpeername %s",
          str6(&n.sin6_addr));
    char buf[8];
    CHECK(sem_read_full(a, buf, 5, 3000) == 5, "the peer's 5 bytes");
    CHECK(sem_check_pat(buf, 0, 5) < 0, "pattern");
    CHECK(sem_write_all(a, "hello", 5) == 5, "write");
    CHECK(sem_read_full(a, buf, 5, 3000) == 5 && !memcmp(buf, "hello", 5), "echo");
    /* The listener's own name: [::]. */
    nl = sizeof n;
    CHECK_OK(getsockname(l, (struct sockaddr *)&n, &nl));
    CHECK(IN6_IS_ADDR_UNSPECIFIED(&n.sin6_addr) && ntohs(n.sin6_port) == sem_lport(1),
          "listener %s", str6(&n.sin6_addr));
}

static void v4mapped_connect(void)
{
    int fd = sock6(SOCK_STREAM);
    struct sockaddr_in6 a = sin6_of(mapped(sem_peer_ip), sem_port_base + SEM_P_ECHO);
    CHECK_OK(connect(fd, (struct sockaddr *)&a, sizeof a));
    struct sockaddr_in6 n;
    socklen_t nl = sizeof n;
    CHECK_OK(getpeername(fd, (struct sockaddr *)&n, &nl));
    CHECK(nl == sizeof n && n.sin6_family == AF_INET6 && !memcmp(&n.sin6_addr, &a.sin6_addr, 16) &&
              n.sin6_port == a.sin6_port,
          "peer %s", str6(&n.sin6_addr));
    nl = sizeof n;
    CHECK_OK(getsockname(fd, (struct sockaddr *)&n, &nl));
    struct in6_addr want = mapped(sem_self_ip);
    CHECK(nl == sizeof n && !memcmp(&n.sin6_addr, &want, 16) && n.sin6_port != 0, "local %s",
          str6(&n.sin6_addr));
    CHECK(echo_once(fd, "mapped") == 0, "echo");
}

static void connect_errors(void)
{
    int fd = sock6(SOCK_STREAM);
    struct sockaddr_in a4 = sem_peer_addr(SEM_P_ECHO);
    CHECK_ERR(connect(fd, (struct sockaddr *)&a4, sizeof a4), EINVAL);
    struct sockaddr_in6 a = sin6_of(mapped(sem_peer_ip), sem_port_base + SEM_P_ECHO);
    a.sin6_family = AF_INET;
    CHECK_ERR(connect(fd, (struct sockaddr *)&a, sizeof a), EAFNOSUPPORT);
    struct sockaddr un = {.sa_family = AF_UNSPEC};
    CHECK_OK(connect(fd, &un, sizeof un)); /* nothing to disconnect */
    a.sin6_family = AF_INET6;
    CHECK_ERR(connect(fd, (struct sockaddr *)&a, 20), EINVAL);
    /* v6-only: no way to IPv4. */
    int g = sock6(SOCK_STREAM);
    CHECK_OK(v6only(g, 1));
    CHECK(get_int(g, IPPROTO_IPV6, IPV6_V6ONLY) == 1, "IPV6_V6ONLY reads back");
    CHECK_ERR(connect(g, (struct sockaddr *)&a, sizeof a), ENETUNREACH);
    /* Refused, as over IPv4. */
    int h = sock6(SOCK_STREAM);
    a = sin6_of(mapped(sem_peer_ip), sem_port_base + SEM_P_NONE);
    CHECK_ERR(connect(h, (struct sockaddr *)&a, sizeof a), ECONNREFUSED);
}

/* Linux's overlap rules: a dual-stack [::] port is IPv4's too, a v6-only one is not. */
static void v6only_bind_rules(void)
{
    int v4 = sem_track(socket(AF_INET, SOCK_STREAM, 0));
    struct sockaddr_in a4 = sem_sin((struct in_addr){htonl(INADDR_ANY)}, sem_lport(2));
    CHECK_OK(bind(v4, (struct sockaddr *)&a4, sizeof a4));
    CHECK_OK(listen(v4, 4));
    int dual = sock6(SOCK_STREAM);
    CHECK_OK(v6only(dual, 0));
    struct sockaddr_in6 a = sin6_of(in6addr_any, sem_lport(2));
    CHECK_ERR(bind(dual, (struct sockaddr *)&a, sizeof a), EADDRINUSE);
    int only = sock6(SOCK_STREAM);
    CHECK_OK(v6only(only, 1));
    CHECK_OK(bind(only, (struct sockaddr *)&a, sizeof a));
    CHECK_OK(listen(only, 4));
    /* And the other way round: a dual-stack listener first. */
    int d2 = listen6(3, 0);
    CHECK(d2 >= 0, "dual-stack listener");
    int v4b = sem_track(socket(AF_INET, SOCK_STREAM, 0));
    a4 = sem_sin((struct in_addr){htonl(INADDR_ANY)}, sem_lport(3));
    CHECK_ERR(bind(v4b, (struct sockaddr *)&a4, sizeof a4), EADDRINUSE);
}

/* A hop limit option: reads def, then set once set. */
static void hops_opt(int fd, int name, const char *what, int def, int set)
{
    CHECK(get_int(fd, IPPROTO_IPV6, name) == def, "%s %d", what, get_int(fd, IPPROTO_IPV6, name));
    CHECK_OK(setsockopt(fd, IPPROTO_IPV6, name, &set, sizeof set));
    CHECK(get_int(fd, IPPROTO_IPV6, name) == set, "%s set: %d", what,
          get_int(fd, IPPROTO_IPV6, name));
}

static void options(void)
{
    int fd = sock6(SOCK_STREAM);
    CHECK(get_int(fd, IPPROTO_IPV6, IPV6_TCLASS) == 0, "IPV6_TCLASS %d",
          get_int(fd, IPPROTO_IPV6, IPV6_TCLASS));
    int v = 0x28;
    CHECK_OK(setsockopt(fd, IPPROTO_IPV6, IPV6_TCLASS, &v, sizeof v));
    CHECK(get_int(fd, IPPROTO_IPV6, IPV6_TCLASS) == 0x28, "IPV6_TCLASS set");
    v = 256;
    CHECK_ERR(setsockopt(fd, IPPROTO_IPV6, IPV6_TCLASS, &v, sizeof v), EINVAL);
    /* A stream socket keeps the ECN bits for TCP: they read back clear; -1 is the default. */
    v = 0x2b;
    CHECK_OK(setsockopt(fd, IPPROTO_IPV6, IPV6_TCLASS, &v, sizeof v));
    CHECK(get_int(fd, IPPROTO_IPV6, IPV6_TCLASS) == 0x28, "IPV6_TCLASS 0x2b reads 0x%x",
          get_int(fd, IPPROTO_IPV6, IPV6_TCLASS));
    v = -1;
    CHECK_OK(setsockopt(fd, IPPROTO_IPV6, IPV6_TCLASS, &v, sizeof v));
    CHECK(get_int(fd, IPPROTO_IPV6, IPV6_TCLASS) == 0, "IPV6_TCLASS -1 reads %d",
          get_int(fd, IPPROTO_IPV6, IPV6_TCLASS));
    int f4 = sem_tcp(0);
    CHECK(f4 >= 0, "socket");
    v = 0x13;
    CHECK_OK(setsockopt(f4, IPPROTO_IP, IP_TOS, &v, sizeof v));
    CHECK(get_int(f4, IPPROTO_IP, IP_TOS) == 0x10, "IP_TOS 0x13 reads 0x%x",
          get_int(f4, IPPROTO_IP, IP_TOS));
    unsigned char c = 0xb8;
    CHECK_OK(setsockopt(f4, IPPROTO_IP, IP_TOS, &c, 1));
    CHECK(get_int(f4, IPPROTO_IP, IP_TOS) == 0xb8, "IP_TOS as a byte reads 0x%x",
          get_int(f4, IPPROTO_IP, IP_TOS));
    hops_opt(fd, IPV6_UNICAST_HOPS, "IPV6_UNICAST_HOPS", 64, 7);
    v = 1;
    CHECK_ERR(setsockopt(fd, IPPROTO_IPV6, IPV6_MULTICAST_HOPS, &v, sizeof v), ENOPROTOOPT);
    CHECK_ERR(setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v, 2), EINVAL);
    CHECK_OK(setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v, sizeof v));
    CHECK(get_int(fd, IPPROTO_IPV6, IPV6_V6ONLY) == 1, "IPV6_V6ONLY on");
    v = 0;
    CHECK_OK(setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v, sizeof v));
    CHECK(get_int(fd, IPPROTO_IPV6, IPV6_V6ONLY) == 0, "IPV6_V6ONLY off");
    int u = sock6(SOCK_DGRAM);
    v = 1;
    CHECK_OK(setsockopt(u, IPPROTO_IPV6, IPV6_RECVPKTINFO, &v, sizeof v));
    CHECK(get_int(u, IPPROTO_IPV6, IPV6_RECVPKTINFO) == 1, "IPV6_RECVPKTINFO");
    /* The IPv6 multicast sending options are a datagram socket's (the JDK sets
     * IPV6_MULTICAST_HOPS on every AF_INET6 datagram socket it makes, and fails without). */
    hops_opt(u, IPV6_MULTICAST_HOPS, "IPV6_MULTICAST_HOPS", 1, 5);
    v = 256;
    CHECK_ERR(setsockopt(u, IPPROTO_IPV6, IPV6_MULTICAST_HOPS, &v, sizeof v), EINVAL);
    v = 0;
    CHECK_OK(setsockopt(u, IPPROTO_IPV6, IPV6_MULTICAST_LOOP, &v, sizeof v));
    CHECK(get_int(u, IPPROTO_IPV6, IPV6_MULTICAST_LOOP) == 0, "IPV6_MULTICAST_LOOP off");
    CHECK_OK(setsockopt(u, IPPROTO_IPV6, IPV6_MULTICAST_IF, &v, sizeof v));
}

/* A wildcard listener also takes loopback connections, 127.0.0.1 (v4-mapped) and ::1. */
static void loopback(void)
{
    int l = listen6(4, 0);
    CHECK(l >= 0, "listen [::]");
    int c4 = sem_track(socket(AF_INET, SOCK_STREAM, 0));
    struct sockaddr_in lo4 = sem_sin((struct in_addr){htonl(INADDR_LOOPBACK)}, sem_lport(4));
    CHECK_OK(connect(c4, (struct sockaddr *)&lo4, sizeof lo4));
    struct sockaddr_in6 p;
    socklen_t pl = sizeof p;
    CHECK(sem_wait_fd(l, POLLIN, 3000) > 0, "127.0.0.1 not accepted");
    int a = sem_track(accept(l, (struct sockaddr *)&p, &pl));
    CHECK(a >= 0, "accept 127.0.0.1");
    struct in6_addr want = mapped((struct in_addr){htonl(INADDR_LOOPBACK)});
    CHECK(pl == sizeof p && !memcmp(&p.sin6_addr, &want, 16), "peer %s", str6(&p.sin6_addr));
    int c6 = sock6(SOCK_STREAM);
    struct sockaddr_in6 lo6 = sin6_of(in6addr_loopback, sem_lport(4));
    CHECK_OK(connect(c6, (struct sockaddr *)&lo6, sizeof lo6));
    pl = sizeof p;
    CHECK(sem_wait_fd(l, POLLIN, 3000) > 0, "::1 not accepted");
    int b = sem_track(accept(l, (struct sockaddr *)&p, &pl));
    CHECK(b >= 0, "accept ::1");
    CHECK(IN6_IS_ADDR_LOOPBACK(&p.sin6_addr), "peer %s", str6(&p.sin6_addr));
    CHECK(sem_write_all(c6, "x", 1) == 1, "write");
    char ch;
    CHECK(sem_read_full(b, &ch, 1, 2000) == 1 && ch == 'x', "read");
    /* An AF_INET6 client to ::ffff:127.0.0.1 (the kernel's, as 127.0.0.1 is). */
    int cm = sock6(SOCK_STREAM);
    struct sockaddr_in6 lom = sin6_of(want, sem_lport(4));
    CHECK_OK(connect(cm, (struct sockaddr *)&lom, sizeof lom));
    pl = sizeof p;
    CHECK(sem_wait_fd(l, POLLIN, 3000) > 0, "::ffff:127.0.0.1 not accepted");
    int m = sem_track(accept(l, (struct sockaddr *)&p, &pl));
    CHECK(m >= 0, "accept ::ffff:127.0.0.1");
    CHECK(!memcmp(&p.sin6_addr, &want, 16), "peer %s", str6(&p.sin6_addr));
    struct sockaddr_in6 n;
    socklen_t nl = sizeof n;
    CHECK_OK(getpeername(cm, (struct sockaddr *)&n, &nl));
    CHECK(nl == sizeof n && !memcmp(&n.sin6_addr, &want, 16), "client's peer %s",
          str6(&n.sin6_addr));
    /* A v6-only listener takes ::1 but not 127.0.0.1. */
    int o = listen6(5, 1);
    CHECK(o >= 0, "v6-only listener");
    int c = sem_track(socket(AF_INET, SOCK_STREAM, 0));
    lo4 = sem_sin((struct in_addr){htonl(INADDR_LOOPBACK)}, sem_lport(5));
    CHECK_ERR(connect(c, (struct sockaddr *)&lo4, sizeof lo4), ECONNREFUSED);
}

static int readable(int fd, int ms)
{
    return sem_wait_fd(fd, POLLIN, ms) > 0;
}

static void udp_mapped(void)
{
    int u = sock6(SOCK_DGRAM), on = 1;
    CHECK_OK(setsockopt(u, IPPROTO_IPV6, IPV6_RECVPKTINFO, &on, sizeof on));
    struct sockaddr_in6 to = sin6_of(mapped(sem_peer_ip), sem_port_base + SEM_P_ECHO);
    CHECK(sendto(u, "m1", 2, 0, (struct sockaddr *)&to, sizeof to) == 2, "sendto mapped");
    struct sockaddr_in6 n;
    socklen_t nl = sizeof n;
    CHECK_OK(getsockname(u, (struct sockaddr *)&n, &nl));
    CHECK(nl == sizeof n && IN6_IS_ADDR_UNSPECIFIED(&n.sin6_addr) && n.sin6_port != 0,
          "autobound %s port %u", str6(&n.sin6_addr), ntohs(n.sin6_port));
    CHECK(readable(u, 3000), "no echo");
    char buf[16];
    union {
        struct cmsghdr c;
        char b[256];
    } cb;
    struct sockaddr_in6 from;
    struct iovec iov = {buf, sizeof buf};
    struct msghdr m = {.msg_name = &from,
                       .msg_namelen = sizeof from,
                       .msg_iov = &iov,
                       .msg_iovlen = 1,
                       .msg_control = &cb,
                       .msg_controllen = sizeof cb};
    CHECK(recvmsg(u, &m, 0) == 2 && !memcmp(buf, "m1", 2), "recvmsg");
    CHECK(m.msg_namelen == sizeof from && from.sin6_family == AF_INET6 &&
              !memcmp(&from.sin6_addr, &to.sin6_addr, 16) && from.sin6_port == to.sin6_port,
          "from %s len %u", str6(&from.sin6_addr), (unsigned)m.msg_namelen);
    struct cmsghdr *c = CMSG_FIRSTHDR(&m);
    CHECK(c && c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_PKTINFO &&
              c->cmsg_len == CMSG_LEN(sizeof(struct in6_pktinfo)),
          "no IPV6_PKTINFO");
    struct in6_pktinfo pi;
    memcpy(&pi, CMSG_DATA(c), sizeof pi);
    struct in6_addr me = mapped(sem_self_ip);
    CHECK(!memcmp(&pi.ipi6_addr, &me, 16) && pi.ipi6_ifindex > 0, "pktinfo %s if %u",
          str6(&pi.ipi6_addr), pi.ipi6_ifindex);
    /* An AF_INET destination is fine on a dual-stack socket; the answer is v4-mapped. */
    struct sockaddr_in t4 = sem_peer_addr(SEM_P_ECHO);
    CHECK(sendto(u, "m2", 2, 0, (struct sockaddr *)&t4, sizeof t4) == 2, "sendto AF_INET");
    CHECK(readable(u, 3000), "no echo of m2");
    socklen_t fl = sizeof from;
    CHECK(recvfrom(u, buf, sizeof buf, 0, (struct sockaddr *)&from, &fl) == 2, "recvfrom");
    CHECK(fl == sizeof from && !memcmp(&from.sin6_addr, &to.sin6_addr, 16), "from %s",
          str6(&from.sin6_addr));
    /* Connected to a v4-mapped peer. */
    int k = sock6(SOCK_DGRAM);
    CHECK_OK(connect(k, (struct sockaddr *)&to, sizeof to));
    nl = sizeof n;
    CHECK_OK(getpeername(k, (struct sockaddr *)&n, &nl));
    CHECK(nl == sizeof n && !memcmp(&n.sin6_addr, &to.sin6_addr, 16), "peer %s",
          str6(&n.sin6_addr));
    nl = sizeof n;
    CHECK_OK(getsockname(k, (struct sockaddr *)&n, &nl));
    CHECK(!memcmp(&n.sin6_addr, &me, 16), "local %s", str6(&n.sin6_addr));
    CHECK(send(k, "m3", 2, 0) == 2, "send");
    CHECK(readable(k, 3000), "no echo of m3");
    CHECK(recv(k, buf, sizeof buf, 0) == 2 && !memcmp(buf, "m3", 2), "recv");
    /* Bound to [::] first, then connected to a v4-mapped peer: the local address is the
     * route's IPv4 source, v4-mapped, as for the unbound socket above. */
    int b = sock6(SOCK_DGRAM);
    struct sockaddr_in6 any = sin6_of(in6addr_any, 0);
    CHECK_OK(bind(b, (struct sockaddr *)&any, sizeof any));
    CHECK_OK(connect(b, (struct sockaddr *)&to, sizeof to));
    nl = sizeof n;
    CHECK_OK(getsockname(b, (struct sockaddr *)&n, &nl));
    CHECK(!memcmp(&n.sin6_addr, &me, 16) && n.sin6_port != 0, "bound [::], connected: local %s",
          str6(&n.sin6_addr));
}

static void udp_errors(void)
{
    int u = sock6(SOCK_DGRAM);
    struct sockaddr_in6 to = sin6_of(mapped(sem_peer_ip), sem_port_base + SEM_P_ECHO);
    CHECK_ERR(sendto(u, "x", 1, 0, (struct sockaddr *)&to, 20), EINVAL);
    CHECK_ERR(sendto(u, "x", 1, 0, (struct sockaddr *)&to, 1), EINVAL);
    struct sockaddr_in6 z = to;
    z.sin6_port = 0;
    CHECK_ERR(sendto(u, "x", 1, 0, (struct sockaddr *)&z, sizeof z), EINVAL);
    z = to;
    z.sin6_family = AF_APPLETALK;
    CHECK_ERR(sendto(u, "x", 1, 0, (struct sockaddr *)&z, sizeof z), EINVAL);
    struct sockaddr un = {.sa_family = AF_UNSPEC};
    CHECK_ERR(sendto(u, "x", 1, 0, &un, sizeof un), EDESTADDRREQ);
    /* v6-only: IPv4 in any form is unreachable; connect to AF_INET is not this family. */
    int o = sock6(SOCK_DGRAM);
    CHECK_OK(v6only(o, 1));
    CHECK_ERR(sendto(o, "x", 1, 0, (struct sockaddr *)&to, sizeof to), ENETUNREACH);
    struct sockaddr_in t4 = sem_peer_addr(SEM_P_ECHO);
    CHECK_ERR(sendto(o, "x", 1, 0, (struct sockaddr *)&t4, sizeof t4), ENETUNREACH);
    CHECK_ERR(connect(o, (struct sockaddr *)&t4, sizeof t4), EAFNOSUPPORT);
    CHECK_ERR(connect(o, (struct sockaddr *)&to, sizeof to), ENETUNREACH);
    /* Too big for IPv4. */
    static char big[65508];
    CHECK_ERR(sendto(u, big, sizeof big, 0, (struct sockaddr *)&to, sizeof to), EMSGSIZE);
}

/* ------------------------------------------------------------------ native IPv6 */

static void native_connect(void)
{
    int fd = sock6(SOCK_STREAM);
    struct sockaddr_in6 a = sin6_of(peer6, sem_port_base + SEM_P_ECHO);
    CHECK_OK(connect(fd, (struct sockaddr *)&a, sizeof a));
    struct sockaddr_in6 n;
    socklen_t nl = sizeof n;
    CHECK_OK(getpeername(fd, (struct sockaddr *)&n, &nl));
    CHECK(nl == sizeof n && !memcmp(&n.sin6_addr, &peer6, 16) && n.sin6_scope_id == 0, "peer %s",
          str6(&n.sin6_addr));
    nl = sizeof n;
    CHECK_OK(getsockname(fd, (struct sockaddr *)&n, &nl));
    CHECK(!memcmp(&n.sin6_addr, &self6, 16) && n.sin6_port != 0, "local %s", str6(&n.sin6_addr));
    char big[20000];
    sem_fill(big, 0, sizeof big);
    CHECK(sem_write_all(fd, big, sizeof big) == (ssize_t)sizeof big, "write");
    char back[20000];
    CHECK(sem_read_full(fd, back, sizeof back, 5000) == (ssize_t)sizeof back, "read");
    CHECK(sem_check_pat(back, 0, sizeof back) < 0, "echoed pattern");
}

static void native_accept(void)
{
    int l = listen6(6, 1);
    CHECK(l >= 0, "v6-only listener");
    int c = sem_connect_peer(SEM_P_CTL);
    CHECK(c >= 0, "ctl");
    char line[64];
    int n = snprintf(line, sizeof line, "connect6 %d 7 0 1\n", sem_lport(6));
    CHECK(sem_write_all(c, line, (size_t)n) == n, "ctl write");
    struct sockaddr_in6 p;
    socklen_t pl = sizeof p;
    CHECK(sem_wait_fd(l, POLLIN, 5000) > 0, "no connection");
    int a = sem_track(accept(l, (struct sockaddr *)&p, &pl));
    CHECK(a >= 0, "accept");
    CHECK(pl == sizeof p && !memcmp(&p.sin6_addr, &peer6, 16), "peer %s", str6(&p.sin6_addr));
    char buf[8];
    CHECK(sem_read_full(a, buf, 7, 3000) == 7 && sem_check_pat(buf, 0, 7) < 0, "the 7 bytes");
    /* The peer's IPv4 cannot reach a v6-only listener. */
    int d = sem_ctl(sem_lport(6), 0, 0, 1);
    CHECK(d >= 0, "ctl v4");
    CHECK(sem_ctl_line(d, line, sizeof line, 5000) > 0 && !strncmp(line, "err 0 ", 6),
          "IPv4 to a v6-only listener: %s", line);
}

static void native_udp(void)
{
    int u = sock6(SOCK_DGRAM), on = 1;
    CHECK_OK(setsockopt(u, IPPROTO_IPV6, IPV6_RECVPKTINFO, &on, sizeof on));
    struct sockaddr_in6 to = sin6_of(peer6, sem_port_base + SEM_P_ECHO);
    CHECK(sendto(u, "n6", 2, 0, (struct sockaddr *)&to, sizeof to) == 2, "sendto");
    CHECK(readable(u, 3000), "no echo");
    char buf[8];
    union {
        struct cmsghdr c;
        char b[256];
    } cb;
    struct sockaddr_in6 from;
    struct iovec iov = {buf, sizeof buf};
    struct msghdr m = {.msg_name = &from,
                       .msg_namelen = sizeof from,
                       .msg_iov = &iov,
                       .msg_iovlen = 1,
                       .msg_control = &cb,
                       .msg_controllen = sizeof cb};
    CHECK(recvmsg(u, &m, 0) == 2, "recvmsg");
    CHECK(m.msg_namelen == sizeof from && !memcmp(&from.sin6_addr, &peer6, 16), "from %s",
          str6(&from.sin6_addr));
    struct cmsghdr *c = CMSG_FIRSTHDR(&m);
    CHECK(c && c->cmsg_type == IPV6_PKTINFO, "no IPV6_PKTINFO");
    struct in6_pktinfo pi;
    memcpy(&pi, CMSG_DATA(c), sizeof pi);
    CHECK(!memcmp(&pi.ipi6_addr, &self6, 16), "pktinfo %s", str6(&pi.ipi6_addr));
}

/* IPV6_TCLASS of a UDP socket, on the wire: the peer at +1 answers with the traffic class its
 * datagram arrived with (all eight bits: ECN is the application's on a datagram socket). */
static void udp_tclass(void)
{
    int u = sock6(SOCK_DGRAM), v = 0x2d;
    CHECK_OK(setsockopt(u, IPPROTO_IPV6, IPV6_TCLASS, &v, sizeof v));
    CHECK(get_int(u, IPPROTO_IPV6, IPV6_TCLASS) == 0x2d, "IPV6_TCLASS reads 0x%x",
          get_int(u, IPPROTO_IPV6, IPV6_TCLASS));
    struct sockaddr_in6 to = sin6_of(peer6, sem_port_base + SEM_PU_TOS);
    CHECK(sendto(u, "t", 1, 0, (struct sockaddr *)&to, sizeof to) == 1, "sendto");
    CHECK(readable(u, 3000), "no answer");
    unsigned char tc = 0;
    CHECK(recv(u, &tc, 1, 0) == 1, "recv");
    CHECK(tc == 0x2d, "the peer saw traffic class 0x%x", tc);
}

int main(void)
{
    sem_init("sem_inet6", 12);
    const char *p6 = getenv("SEM_PEER6"), *s6 = getenv("SEM_SELF6");
    if (!p6 || !s6 || inet_pton(AF_INET6, p6, &peer6) != 1 ||
        inet_pton(AF_INET6, s6, &self6) != 1) {
        fprintf(stderr, "sem_inet6: SEM_PEER6 and SEM_SELF6 must be IPv6 addresses\n");
        return 2;
    }
    SEM_RUN(basics);
    SEM_RUN(bind_errors);
    SEM_RUN(dualstack_v4_client);
    SEM_RUN(v4mapped_connect);
    SEM_RUN(connect_errors);
    SEM_RUN(v6only_bind_rules);
    SEM_RUN(options);
    SEM_RUN(loopback);
    SEM_RUN(udp_mapped);
    SEM_RUN(udp_errors);
    SEM_RUN(native_connect);
    SEM_RUN(native_accept);
    SEM_RUN(native_udp);
    SEM_RUN(udp_tclass);
    return sem_done();
}

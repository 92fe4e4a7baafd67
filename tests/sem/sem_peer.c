/* tests/sem/sem_peer.c - the kernel-side peer of the socket-semantics tests.
 *
 * Runs in the peer namespace on plain kernel sockets and offers, at SEM_PORT_BASE + k:
 *   +0 echo      echoes until EOF, then shuts down its side and closes
 *   +1 discard   reads until EOF, then closes
 *   +2 sink      accepts and never reads (small receive buffer), closes after 60 s or the
 *                peer's FIN
 *   +3 reset     reads SEM_RESET_AFTER bytes, then closes with SO_LINGER {1, 0} (an RST)
 *   +4 close     accepts and closes at once (a FIN, nothing read)
 *   +5 bulk      sends SEM_BULK_BYTES of the pattern, shuts down its side, reads until EOF
 *   +6 hold      accepts, never reads nor sends, and closes after 10 s whatever comes (a FIN
 *                included): a connection where nothing happens after the client's FIN
 *   +9 control   lines "connect <port> <nbytes> <delay_ms> <count>": for each of count
 *                connections, after delay_ms connect to SEM_SELF:port, answer "ok <i>" or
 *                "err <i> <errno>", send nbytes of the pattern, echo until EOF, then answer
 *                "eof <i> <bytes echoed>" or "rst <i> <errno>"
 *                (or "connect6 ...": to SEM_SELF6 over IPv6)
 * UDP: +0 echoes every datagram back to its sender; +1 answers each datagram with one byte,
 * the IPv4 TOS or IPv6 traffic class it arrived with; +2 sends each IPv4 datagram back to
 * its sender's port at the directed broadcast address of the sender's subnet; +8 has no UDP
 * socket (ICMP port unreachable). With SEM_PEER6 set (the topology has IPv6), echo at +0
 * and the TOS answer at +1 are also served on [::] for IPv6 only (and TCP echo at +0).
 * Nothing listens on +8, so connects there are refused. One thread per connection; every
 * blocking call is bounded, and the process exits after --lifetime seconds (default 1800).
 *
 * Usage: SEM_SELF=... SEM_PORT_BASE=... sem_peer [--lifetime S]
 * Prints "ready" on stdout once every listener is up.
 */
#include "sem.h"

#include <ifaddrs.h>
#include <net/if.h>
#include <sys/time.h>

static void set_timeouts(int fd, int secs)
{
    struct timeval tv = {secs, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

static int write_all(int fd, const void *buf, size_t n)
{
    return sem_write_all(fd, buf, n) < 0 ? -1 : 0;
}

/* Echo until EOF or error; returns bytes echoed, or -errno. */
static long echo_loop(int fd)
{
    char buf[65536];
    long total = 0;
    for (;;) {
        ssize_t r = recv(fd, buf, sizeof buf, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -errno;
        if (r == 0)
            return total;
        if (write_all(fd, buf, (size_t)r) < 0)
            return -errno;
        total += r;
    }
}

static void drain(int fd)
{
    char buf[65536];
    for (;;) {
        ssize_t r = recv(fd, buf, sizeof buf, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return;
    }
}

static void serve_echo(int fd)
{
    if (echo_loop(fd) >= 0)
        shutdown(fd, SHUT_WR);
}

static void serve_sink(int fd)
{
    /* Never read: wait for the FIN (POLLRDHUP needs no read) or an error, at most 60 s. */
    struct pollfd p = {fd, POLLRDHUP, 0};
    double end = sem_ms() + 60000;
    while (sem_ms() < end) {
        if (poll(&p, 1, 1000) > 0 && (p.revents & (POLLRDHUP | POLLERR | POLLHUP)))
            break;
    }
}

static void serve_hold(int fd)
{
    (void)fd;
    sem_sleep_ms(10000);
}

static void serve_reset(int fd)
{
    char buf[SEM_RESET_AFTER];
    size_t got = 0;
    while (got < sizeof buf) {
        ssize_t r = recv(fd, buf + got, sizeof buf - got, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    struct linger lg = {1, 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
}

/* Filled once in main(), before any listener runs. */
static unsigned char bulk_data[SEM_BULK_BYTES];

static void serve_bulk(int fd)
{
    if (write_all(fd, bulk_data, sizeof bulk_data) == 0) {
        shutdown(fd, SHUT_WR);
        drain(fd);
    }
}

/* ------------------------------------------------------------------ control connections */

struct ctl {
    int fd;
    int refs;
    pthread_mutex_t mu;
};

static struct in6_addr self6;

struct back {
    struct ctl *ctl;
    int idx, port, delay_ms, six;
    long nbytes;
};

static void ctl_put(struct ctl *c)
{
    pthread_mutex_lock(&c->mu);
    int last = --c->refs == 0;
    pthread_mutex_unlock(&c->mu);
    if (last) {
        close(c->fd);
        pthread_mutex_destroy(&c->mu);
        free(c);
    }
}

static void ctl_say(struct ctl *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void ctl_say(struct ctl *c, const char *fmt, ...)
{
    char line[128];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&c->mu);
    if (n > 0)
        (void)write_all(c->fd, line, (size_t)n);
    pthread_mutex_unlock(&c->mu);
}

static void *connect_back(void *arg)
{
    struct back *b = arg;
    if (b->delay_ms > 0)
        sem_sleep_ms(b->delay_ms);
    int fd = socket(b->six ? AF_INET6 : AF_INET, SOCK_STREAM, 0);
    set_timeouts(fd, 10);
    struct sockaddr_in a = sem_sin(sem_self_ip, b->port);
    struct sockaddr_in6 a6 = {
        .sin6_family = AF_INET6, .sin6_port = htons((uint16_t)b->port), .sin6_addr = self6};
    int rc = b->six ? connect(fd, (struct sockaddr *)&a6, sizeof a6)
                    : connect(fd, (struct sockaddr *)&a, sizeof a);
    if (rc < 0) {
        ctl_say(b->ctl, "err %d %d\n", b->idx, errno);
        goto out;
    }
    set_timeouts(fd, 120);
    ctl_say(b->ctl, "ok %d\n", b->idx);
    unsigned char buf[65536];
    for (long off = 0; off < b->nbytes;) {
        size_t n = (size_t)(b->nbytes - off) < sizeof buf ? (size_t)(b->nbytes - off) : sizeof buf;
        sem_fill(buf, (size_t)off, n);
        if (write_all(fd, buf, n) < 0) {
            ctl_say(b->ctl, "rst %d %d\n", b->idx, errno);
            goto out;
        }
        off += (long)n;
    }
    long r = echo_loop(fd);
    if (r >= 0)
        ctl_say(b->ctl, "eof %d %ld\n", b->idx, r);
    else
        ctl_say(b->ctl, "rst %d %ld\n", b->idx, -r);
out:
    close(fd);
    ctl_put(b->ctl);
    free(b);
    return NULL;
}

static void serve_ctl(int fd)
{
    struct ctl *c = calloc(1, sizeof *c);
    c->fd = fd;
    c->refs = 1;
    pthread_mutex_init(&c->mu, NULL);
    char line[256];
    size_t n = 0;
    for (;;) {
        char ch;
        ssize_t r = recv(fd, &ch, 1, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        if (ch != '\n') {
            if (n < sizeof line - 1)
                line[n++] = ch;
            continue;
        }
        line[n] = 0;
        n = 0;
        int port, delay = 0, count = 1, six = !strncmp(line, "connect6 ", 9);
        long nbytes = 0;
        int got = six ? sscanf(line, "connect6 %d %ld %d %d", &port, &nbytes, &delay, &count)
                      : sscanf(line, "connect %d %ld %d %d", &port, &nbytes, &delay, &count);
        if (got < 2 || count < 1 || count > 64) {
            ctl_say(c, "bad command\n");
            continue;
        }
        for (int i = 0; i < count; i++) {
            struct back *b = calloc(1, sizeof *b);
            *b = (struct back){c, i, port, delay, six, nbytes};
            pthread_mutex_lock(&c->mu);
            c->refs++;
            pthread_mutex_unlock(&c->mu);
            pthread_t t;
            if (pthread_create(&t, NULL, connect_back, b) != 0) {
                ctl_put(c);
                free(b);
                continue;
            }
            pthread_detach(t);
        }
    }
    /* The connect-back threads may still answer: the last reference closes the fd. */
    shutdown(fd, SHUT_RD);
    ctl_put(c);
}

/* ------------------------------------------------------------------ listeners */

struct conn {
    int fd, svc;
};

static void *serve(void *arg)
{
    struct conn *c = arg;
    int fd = c->fd;
    set_timeouts(fd, 120);
    switch (c->svc) {
    case SEM_P_ECHO:
        serve_echo(fd);
        break;
    case SEM_P_DISCARD:
        drain(fd);
        break;
    case SEM_P_SINK:
        serve_sink(fd);
        break;
    case SEM_P_RESET:
        serve_reset(fd);
        break;
    case SEM_P_CLOSE:
        break;
    case SEM_P_BULK:
        serve_bulk(fd);
        break;
    case SEM_P_HOLD:
        serve_hold(fd);
        break;
    case SEM_P_CTL:
        serve_ctl(fd);
        free(c);
        return NULL; /* serve_ctl closes through its reference count */
    }
    close(fd);
    free(c);
    return NULL;
}

static void *listener(void *arg)
{
    int lfd = (int)(intptr_t)arg >> 8, svc = (int)(intptr_t)arg & 0xff;
    for (;;) {
        int fd = accept(lfd, NULL, NULL);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED || errno == EMFILE)
                continue;
            perror("sem_peer: accept");
            sem_sleep_ms(100);
            continue;
        }
        struct conn *c = malloc(sizeof *c);
        c->fd = fd;
        c->svc = svc;
        pthread_t t;
        if (pthread_create(&t, NULL, serve, c) != 0) {
            close(fd);
            free(c);
            continue;
        }
        pthread_detach(t);
    }
    return NULL;
}

static int open_listener(int svc)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    if (fd < 0)
        return -1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (svc == SEM_P_SINK) {
        /* A small receive buffer, inherited by accepted sockets, fills quickly. */
        int small = 4096;
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    }
    struct sockaddr_in a = sem_sin((struct in_addr){htonl(INADDR_ANY)}, sem_port_base + svc);
    if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0 || listen(fd, 128) < 0) {
        fprintf(stderr, "sem_peer: port %d: %s\n", sem_port_base + svc, strerror(errno));
        return -1;
    }
    return fd;
}

/* UDP echo at base+0: every datagram back to its sender, as it came. */
static void *udp_echo(void *arg)
{
    int fd = (int)(intptr_t)arg;
    static char buf[65536];
    for (;;) {
        struct sockaddr_storage from;
        socklen_t fl = sizeof from;
        ssize_t n = recvfrom(fd, buf, sizeof buf, 0, (struct sockaddr *)&from, &fl);
        if (n < 0)
            continue;
        sendto(fd, buf, (size_t)n, 0, (struct sockaddr *)&from, fl);
    }
    return NULL;
}

/* UDP at base+1: each datagram is answered with the TOS byte (IPv4) or traffic class (IPv6)
 * it came with, as IP_RECVTOS / IPV6_RECVTCLASS report it. */
static void *udp_tos(void *arg)
{
    int fd = (int)(intptr_t)arg, on = 1;
    setsockopt(fd, IPPROTO_IP, IP_RECVTOS, &on, sizeof on);
    setsockopt(fd, IPPROTO_IPV6, IPV6_RECVTCLASS, &on, sizeof on);
    for (;;) {
        char buf[2048];
        union {
            struct cmsghdr c;
            char b[256];
        } cb;
        struct sockaddr_storage from;
        struct iovec iov = {buf, sizeof buf};
        struct msghdr m = {.msg_name = &from,
                           .msg_namelen = sizeof from,
                           .msg_iov = &iov,
                           .msg_iovlen = 1,
                           .msg_control = &cb,
                           .msg_controllen = sizeof cb};
        if (recvmsg(fd, &m, 0) < 0)
            continue;
        unsigned char tos = 0;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
            if (c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_TOS)
                tos = *CMSG_DATA(c);
            if (c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_TCLASS) {
                int v;
                memcpy(&v, CMSG_DATA(c), sizeof v);
                tos = (unsigned char)v;
            }
        }
        sendto(fd, &tos, 1, 0, (struct sockaddr *)&from, m.msg_namelen);
    }
    return NULL;
}

/* UDP at base+2: each datagram goes back to its sender's port, sent to the directed
 * broadcast address of the sender's subnet, from our interface on it (SO_BROADCAST). */
static void *udp_bcast(void *arg)
{
    int fd = (int)(intptr_t)arg, on = 1;
    setsockopt(fd, SOL_SOCKET, SO_BROADCAST, &on, sizeof on);
    for (;;) {
        char buf[2048];
        struct sockaddr_in from;
        socklen_t fl = sizeof from;
        ssize_t n = recvfrom(fd, buf, sizeof buf, 0, (struct sockaddr *)&from, &fl);
        struct ifaddrs *ifs;
        if (n < 0 || fl != sizeof from || from.sin_family != AF_INET || getifaddrs(&ifs) < 0)
            continue;
        for (struct ifaddrs *i = ifs; i; i = i->ifa_next) {
            if (!i->ifa_addr || i->ifa_addr->sa_family != AF_INET || !i->ifa_netmask ||
                !(i->ifa_flags & IFF_BROADCAST))
                continue;
            uint32_t a = ((struct sockaddr_in *)i->ifa_addr)->sin_addr.s_addr;
            uint32_t m = ((struct sockaddr_in *)i->ifa_netmask)->sin_addr.s_addr;
            if ((a & m) != (from.sin_addr.s_addr & m))
                continue;
            /* The subnet's directed broadcast (run.sh gives the address no `brd`, and Linux
             * adds the broadcast route all the same). */
            struct sockaddr_in to = from;
            to.sin_addr.s_addr = a | ~m;
            sendto(fd, buf, (size_t)n, 0, (struct sockaddr *)&to, sizeof to);
            break;
        }
        freeifaddrs(ifs);
    }
    return NULL;
}

/* A UDP socket of family af bound to the wildcard at base+svc (IPv6 only for AF_INET6), served
 * by fn in its own thread. */
static int udp_service(int af, int svc, void *(*fn)(void *))
{
    int fd = socket(af, SOCK_DGRAM, 0), one = 1;
    struct sockaddr_in a4 = sem_sin((struct in_addr){htonl(INADDR_ANY)}, sem_port_base + svc);
    struct sockaddr_in6 a6 = {.sin6_family = AF_INET6,
                              .sin6_port = htons((uint16_t)(sem_port_base + svc))};
    if (fd < 0 ||
        (af == AF_INET6 && setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one) < 0) ||
        (af == AF_INET6 ? bind(fd, (struct sockaddr *)&a6, sizeof a6)
                        : bind(fd, (struct sockaddr *)&a4, sizeof a4)) < 0) {
        fprintf(stderr, "sem_peer: UDP port %d: %s\n", sem_port_base + svc, strerror(errno));
        return -1;
    }
    pthread_t t;
    if (pthread_create(&t, NULL, fn, (void *)(intptr_t)fd) != 0)
        return -1;
    pthread_detach(t);
    return 0;
}

int main(int argc, char **argv)
{
    long lifetime = 1800;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--lifetime") && i + 1 < argc)
            lifetime = atol(argv[++i]);
        else {
            fprintf(stderr, "usage: sem_peer [--lifetime SECONDS]\n");
            return 2;
        }
    }
    sem_prog = "sem_peer";
    if (sem__env_ip("SEM_SELF", "198.18.50.2", &sem_self_ip))
        return 2;
    const char *pb = getenv("SEM_PORT_BASE");
    if (pb && *pb)
        sem_port_base = atoi(pb);
    signal(SIGPIPE, SIG_IGN);
    sem_fill(bulk_data, 0, sizeof bulk_data);

    const int svcs[] = {SEM_P_ECHO,  SEM_P_DISCARD, SEM_P_SINK, SEM_P_RESET,
                        SEM_P_CLOSE, SEM_P_BULK,    SEM_P_HOLD, SEM_P_CTL};
    for (size_t i = 0; i < sizeof svcs / sizeof svcs[0]; i++) {
        int fd = open_listener(svcs[i]);
        if (fd < 0)
            return 1;
        pthread_t t;
        if (pthread_create(&t, NULL, listener, (void *)(intptr_t)(fd << 8 | svcs[i])) != 0)
            return 1;
        pthread_detach(t);
    }
    if (udp_service(AF_INET, SEM_P_ECHO, udp_echo) < 0 ||
        udp_service(AF_INET, SEM_PU_TOS, udp_tos) < 0 ||
        udp_service(AF_INET, SEM_PU_BCAST, udp_bcast) < 0)
        return 1;
    const char *p6 = getenv("SEM_PEER6"), *s6 = getenv("SEM_SELF6");
    if (p6 && *p6) {
        /* IPv6 only: the IPv4 services above keep their ports. */
        if (!s6 || inet_pton(AF_INET6, s6, &self6) != 1) {
            fprintf(stderr, "sem_peer: SEM_SELF6 is not an IPv6 address\n");
            return 1;
        }
        int one = 1;
        struct sockaddr_in6 a6 = {.sin6_family = AF_INET6,
                                  .sin6_port = htons((uint16_t)(sem_port_base + SEM_P_ECHO))};
        int t6 = socket(AF_INET6, SOCK_STREAM, 0);
        if (t6 < 0 || setsockopt(t6, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one) ||
            setsockopt(t6, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) ||
            bind(t6, (struct sockaddr *)&a6, sizeof a6) || listen(t6, 128)) {
            perror("sem_peer: IPv6 echo");
            return 1;
        }
        pthread_t t;
        if (pthread_create(&t, NULL, listener, (void *)(intptr_t)(t6 << 8 | SEM_P_ECHO)))
            return 1;
        pthread_detach(t);
        if (udp_service(AF_INET6, SEM_P_ECHO, udp_echo) < 0 ||
            udp_service(AF_INET6, SEM_PU_TOS, udp_tos) < 0)
            return 1;
    }
    printf("ready\n");
    fflush(stdout);
    sleep((unsigned)lifetime);
    return 0;
}

/*
 * kserve.c - the Linux kernel's TCP serving the same built-in services as ustackd.
 *
 * Benchmarks compare ustackd with the kernel on the same topology, so this server offers the
 * services ustackd has, with the same semantics:
 *   --echo PORT     echoes every byte back; on the peer's FIN it finishes sending and closes.
 *   --discard PORT  reads and drops everything; closes when the peer closes.
 *   --source PORT   sends byte i (from 0, per connection) = i % 251 until the peer closes.
 *
 * Each of the --threads N workers owns one epoll loop and its own listening socket per
 * service; with more than one worker the listeners share their port through SO_REUSEPORT so
 * the kernel spreads connections across workers without a shared accept queue. The loops are
 * level-triggered, which keeps every handler free to stop after a bounded amount of work and
 * rely on epoll to report the socket again, so one busy connection cannot starve the rest.
 *
 * Usage: kserve [--echo PORT] [--discard PORT] [--source PORT] [--threads N] [--bind ADDR]
 * Prints "kserve: ready" on stdout once every listener is up; SIGTERM or SIGINT exit 0.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#define KS_BACKLOG    4096
#define KS_MAX_THR    256
#define KS_BUF        65536
#define KS_EVENTS     512
#define KS_IO_ROUNDS  16 /* reads or writes per event before yielding to other sockets */
#define KS_ACCEPTS    64 /* accepts per listener event, for the same reason */
#define KS_SRC_PERIOD 251

enum ks_svc { KS_ECHO, KS_DISCARD, KS_SOURCE, KS_NSVC };

static const char *const ks_svc_name[KS_NSVC] = {"echo", "discard", "source"};

/*
 * Listeners and connections share this header so one epoll data pointer can name either;
 * the loop looks at is_listener before casting.
 */
struct ks_obj {
    bool is_listener;
    enum ks_svc svc;
    int fd;
};

struct ks_conn {
    struct ks_obj h;
    uint32_t events;  /* the epoll interest currently registered */
    uint32_t src_pos; /* source: the next byte's index modulo 251 */
    uint8_t *pend;    /* echo: bytes read but not yet written back */
    size_t pend_off, pend_len;
    bool eof; /* echo: the peer's FIN was seen */
};

struct ks_worker {
    int id;
    int ep;
    int spare_fd; /* closed briefly to shed a connection when out of descriptors */
    struct ks_obj lis[KS_NSVC];
    uint8_t *buf;       /* scratch for reads, one per worker so workers share nothing */
    const uint8_t *pat; /* KS_SRC_PERIOD + KS_BUF bytes of the source pattern */
    atomic_ullong accepted;
    atomic_ullong closed;
    pthread_t tid;
};

struct ks_cfg {
    int port[KS_NSVC]; /* -1 when the service is off */
    int threads;
    struct sockaddr_storage addr;
    socklen_t addrlen;
};

static void ks_usage(FILE *f)
{
    fprintf(f, "usage: kserve [--echo PORT] [--discard PORT] [--source PORT] [--threads N] "
               "[--bind ADDR]\n");
}

static long ks_parse_num(const char *s, long lo, long hi)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return -1;
    return v;
}

static int ks_parse_addr(const char *s, struct sockaddr_storage *ss, socklen_t *len)
{
    memset(ss, 0, sizeof(*ss));
    struct sockaddr_in *a4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, s, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        *len = sizeof(*a4);
        return 0;
    }
    if (inet_pton(AF_INET6, s, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        *len = sizeof(*a6);
        return 0;
    }
    return -1;
}

static void ks_set_port(struct sockaddr_storage *ss, int port)
{
    if (ss->ss_family == AF_INET)
        ((struct sockaddr_in *)ss)->sin_port = htons((uint16_t)port);
    else
        ((struct sockaddr_in6 *)ss)->sin6_port = htons((uint16_t)port);
}

/* Returns the bound port, so port 0 can be resolved once and shared by every worker. */
static int ks_listen(const struct ks_cfg *cfg, int port)
{
    struct sockaddr_storage ss = cfg->addr;
    ks_set_port(&ss, port);
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    /*
     * SO_REUSEPORT only with several workers: with one it would let a second server bind
     * the same port silently and steal half the connections of a benchmark.
     */
    if (cfg->threads > 1 && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0)
        goto fail;
    if (bind(fd, (struct sockaddr *)&ss, cfg->addrlen) < 0 || listen(fd, KS_BACKLOG) < 0)
        goto fail;
    return fd;
fail:;
    int e = errno;
    close(fd);
    errno = e;
    return -1;
}

static int ks_bound_port(int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
        return -1;
    if (ss.ss_family == AF_INET)
        return ntohs(((struct sockaddr_in *)&ss)->sin_port);
    return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
}

static void ks_close(struct ks_worker *w, struct ks_conn *c)
{
    /* Closing removes the socket from epoll, since no other descriptor refers to it. */
    close(c->h.fd);
    free(c->pend);
    free(c);
    atomic_fetch_add_explicit(&w->closed, 1, memory_order_relaxed);
}

static int ks_interest(struct ks_worker *w, struct ks_conn *c, uint32_t events)
{
    if (c->events == events)
        return 0;
    struct epoll_event ev = {.events = events, .data.ptr = c};
    if (epoll_ctl(w->ep, EPOLL_CTL_MOD, c->h.fd, &ev) < 0)
        return -1;
    c->events = events;
    return 0;
}

static bool ks_again(void)
{
    return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
}

/* Returns false once the connection has been closed. */
static bool ks_echo_flush(struct ks_worker *w, struct ks_conn *c)
{
    while (c->pend_len > 0) {
        ssize_t n = send(c->h.fd, c->pend + c->pend_off, c->pend_len, MSG_NOSIGNAL);
        if (n < 0) {
            if (ks_again())
                return true;
            ks_close(w, c);
            return false;
        }
        c->pend_off += (size_t)n;
        c->pend_len -= (size_t)n;
    }
    free(c->pend);
    c->pend = NULL;
    c->pend_off = 0;
    if (c->eof) {
        ks_close(w, c);
        return false;
    }
    /* Everything is written back, so reading may resume. */
    if (ks_interest(w, c, EPOLLIN) < 0) {
        ks_close(w, c);
        return false;
    }
    return true;
}

static void ks_echo(struct ks_worker *w, struct ks_conn *c, uint32_t events)
{
    if (c->pend) {
        if (!(events & (EPOLLOUT | EPOLLHUP)) || !ks_echo_flush(w, c) || c->pend)
            return;
    }
    for (int round = 0; round < KS_IO_ROUNDS; round++) {
        ssize_t n = recv(c->h.fd, w->buf, KS_BUF, 0);
        if (n == 0) {
            ks_close(w, c);
            return;
        }
        if (n < 0) {
            if (!ks_again())
                ks_close(w, c);
            return;
        }
        ssize_t m = send(c->h.fd, w->buf, (size_t)n, MSG_NOSIGNAL);
        if (m < 0 && !ks_again()) {
            ks_close(w, c);
            return;
        }
        if (m < 0)
            m = 0;
        if (m < n) {
            /*
             * The peer is not reading fast enough. Keep the rest and stop reading until it
             * is written, so each connection buffers at most one read's worth and a peer that
             * never reads is pushed back by TCP flow control instead of by our memory.
             */
            c->pend_len = (size_t)(n - m);
            c->pend = malloc(c->pend_len);
            if (!c->pend) {
                ks_close(w, c);
                return;
            }
            memcpy(c->pend, w->buf + m, c->pend_len);
            c->pend_off = 0;
            if (ks_interest(w, c, EPOLLOUT) < 0)
                ks_close(w, c);
            return;
        }
    }
}

static void ks_discard(struct ks_worker *w, struct ks_conn *c)
{
    for (int round = 0; round < KS_IO_ROUNDS; round++) {
        ssize_t n = recv(c->h.fd, w->buf, KS_BUF, MSG_TRUNC);
        if (n == 0 || (n < 0 && !ks_again())) {
            ks_close(w, c);
            return;
        }
        if (n < 0)
            return;
    }
}

static void ks_source(struct ks_worker *w, struct ks_conn *c, uint32_t events)
{
    if (events & EPOLLIN) {
        /* Whatever the peer sends is dropped; its FIN or reset ends the stream. */
        ssize_t n = recv(c->h.fd, w->buf, KS_BUF, MSG_TRUNC);
        if (n == 0 || (n < 0 && !ks_again())) {
            ks_close(w, c);
            return;
        }
    }
    if (!(events & EPOLLOUT))
        return;
    for (int round = 0; round < KS_IO_ROUNDS; round++) {
        /* The pattern buffer starts one period early, so any phase has KS_BUF bytes ready. */
        ssize_t n = send(c->h.fd, w->pat + c->src_pos, KS_BUF, MSG_NOSIGNAL);
        if (n < 0) {
            if (!ks_again())
                ks_close(w, c);
            return;
        }
        c->src_pos = (uint32_t)((c->src_pos + (size_t)n) % KS_SRC_PERIOD);
        if ((size_t)n < KS_BUF)
            return;
    }
}

/* Accepting while out of descriptors would leave the listener readable forever; shed one. */
static void ks_shed(struct ks_worker *w, int lfd)
{
    static atomic_bool warned;
    if (!atomic_exchange(&warned, true))
        fprintf(stderr, "kserve: out of file descriptors, refusing connections\n");
    if (w->spare_fd >= 0) {
        close(w->spare_fd);
        int fd = accept(lfd, NULL, NULL);
        if (fd >= 0)
            close(fd);
        w->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    }
}

static void ks_accept(struct ks_worker *w, struct ks_obj *l)
{
    for (int i = 0; i < KS_ACCEPTS; i++) {
        int fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE)
                ks_shed(w, l->fd);
            else if (errno == ECONNABORTED || errno == EPROTO || errno == EINTR)
                continue;
            return;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        struct ks_conn *c = calloc(1, sizeof(*c));
        if (!c) {
            close(fd);
            continue;
        }
        c->h.svc = l->svc;
        c->h.fd = fd;
        /* The source writes from the start; the others wait for the peer. */
        c->events = l->svc == KS_SOURCE ? EPOLLIN | EPOLLOUT : EPOLLIN;
        struct epoll_event ev = {.events = c->events, .data.ptr = c};
        if (epoll_ctl(w->ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
            close(fd);
            free(c);
            continue;
        }
        atomic_fetch_add_explicit(&w->accepted, 1, memory_order_relaxed);
    }
}

static void *ks_worker_main(void *arg)
{
    struct ks_worker *w = arg;
    struct epoll_event evs[KS_EVENTS];
    for (;;) {
        int n = epoll_wait(w->ep, evs, KS_EVENTS, -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            perror("kserve: epoll_wait");
            exit(1);
        }
        for (int i = 0; i < n; i++) {
            struct ks_obj *o = evs[i].data.ptr;
            uint32_t e = evs[i].events;
            if (o->is_listener) {
                ks_accept(w, o);
                continue;
            }
            struct ks_conn *c = (struct ks_conn *)o;
            /*
             * An error or a reset ends the connection whatever the service. The peer's FIN
             * comes as EPOLLIN and is found by the read, so echo can still flush first.
             */
            if (e & EPOLLERR) {
                ks_close(w, c);
                continue;
            }
            if ((e & EPOLLHUP) && !(e & EPOLLIN)) {
                ks_close(w, c);
                continue;
            }
            switch (o->svc) {
            case KS_ECHO:
                ks_echo(w, c, e);
                break;
            case KS_DISCARD:
                ks_discard(w, c);
                break;
            default:
                ks_source(w, c, e);
                break;
            }
        }
    }
    return NULL;
}

static void ks_raise_nofile(void)
{
    /* Thousands of connections need more descriptors than the usual soft limit of 1024. */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"echo", required_argument, NULL, 'e'},
        {"discard", required_argument, NULL, 'd'},
        {"source", required_argument, NULL, 's'},
        {"threads", required_argument, NULL, 't'},
        {"bind", required_argument, NULL, 'b'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    struct ks_cfg cfg = {.port = {-1, -1, -1}, .threads = 1};
    ks_parse_addr("0.0.0.0", &cfg.addr, &cfg.addrlen);
    int opt;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        long v = 0;
        switch (opt) {
        case 'e':
        case 'd':
        case 's':
            v = ks_parse_num(optarg, 0, 65535);
            if (v < 0)
                goto usage;
            cfg.port[opt == 'e' ? KS_ECHO : opt == 'd' ? KS_DISCARD : KS_SOURCE] = (int)v;
            break;
        case 't':
            v = ks_parse_num(optarg, 1, KS_MAX_THR);
            if (v < 0)
                goto usage;
            cfg.threads = (int)v;
            break;
        case 'b':
            if (ks_parse_addr(optarg, &cfg.addr, &cfg.addrlen) < 0)
                goto usage;
            break;
        case 'h':
            ks_usage(stdout);
            return 0;
        default:
            goto usage;
        }
    }
    if (optind != argc ||
        (cfg.port[KS_ECHO] < 0 && cfg.port[KS_DISCARD] < 0 && cfg.port[KS_SOURCE] < 0))
        goto usage;

    ks_raise_nofile();
    signal(SIGPIPE, SIG_IGN);
    /*
     * Block the exit signals before any worker starts so that every thread inherits the
     * mask and only the main thread's sigwait() sees them.
     */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);

    uint8_t *pat = malloc(KS_SRC_PERIOD + KS_BUF);
    struct ks_worker *ws = calloc((size_t)cfg.threads, sizeof(*ws));
    if (!pat || !ws) {
        fprintf(stderr, "kserve: out of memory\n");
        return 1;
    }
    for (size_t i = 0; i < KS_SRC_PERIOD + KS_BUF; i++)
        pat[i] = (uint8_t)(i % KS_SRC_PERIOD);

    for (int t = 0; t < cfg.threads; t++) {
        struct ks_worker *w = &ws[t];
        w->id = t;
        w->pat = pat;
        w->buf = malloc(KS_BUF);
        w->ep = epoll_create1(EPOLL_CLOEXEC);
        w->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (!w->buf || w->ep < 0) {
            perror("kserve: worker setup");
            return 1;
        }
        for (int s = 0; s < KS_NSVC; s++) {
            w->lis[s].fd = -1;
            if (cfg.port[s] < 0)
                continue;
            int fd = ks_listen(&cfg, cfg.port[s]);
            if (fd < 0) {
                fprintf(stderr, "kserve: %s port %d: %s\n", ks_svc_name[s], cfg.port[s],
                        strerror(errno));
                return 1;
            }
            /* Port 0 is resolved by the first listener; the other workers join that port. */
            if (cfg.port[s] == 0)
                cfg.port[s] = ks_bound_port(fd);
            w->lis[s] = (struct ks_obj){.is_listener = true, .svc = (enum ks_svc)s, .fd = fd};
            struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &w->lis[s]};
            if (epoll_ctl(w->ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
                perror("kserve: epoll_ctl");
                return 1;
            }
        }
    }
    for (int t = 0; t < cfg.threads; t++) {
        int rc = pthread_create(&ws[t].tid, NULL, ks_worker_main, &ws[t]);
        if (rc) {
            fprintf(stderr, "kserve: pthread_create: %s\n", strerror(rc));
            return 1;
        }
    }
    for (int s = 0; s < KS_NSVC; s++)
        if (cfg.port[s] >= 0)
            fprintf(stderr, "kserve: %s on port %d, %d thread(s)\n", ks_svc_name[s], cfg.port[s],
                    cfg.threads);
    printf("kserve: ready\n");
    fflush(stdout);

    int sig = 0;
    while (sigwait(&sigs, &sig) != 0)
        ;
    unsigned long long acc = 0, cls = 0;
    for (int t = 0; t < cfg.threads; t++) {
        acc += atomic_load(&ws[t].accepted);
        cls += atomic_load(&ws[t].closed);
    }
    fprintf(stderr, "kserve: %s, exiting: accepted=%llu closed=%llu\n", strsignal(sig), acc, cls);
    /* The workers are still blocked in epoll_wait; exit() ends them with the process. */
    exit(0);

usage:
    ks_usage(stderr);
    return 2;
}

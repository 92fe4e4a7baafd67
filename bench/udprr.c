/*
 * udprr.c - UDP request/response over plain POSIX sockets, as client or echo server.
 *
 * Client (default): --conns C connected UDP sockets, each with one datagram of --size bytes
 * in flight at a time; every reply must carry the request's sequence number back. A request
 * unanswered for --timeout-ms is counted lost and the socket sends its next one. Prints
 * transactions/s, lost, and the round-trip latency p50/p99/p99.9 in microseconds (one line,
 * or one JSON object with --json). Bounded by --seconds and --max transactions.
 *
 * Echo server (--echo PORT [--bind IP]): sends each datagram back to its sender, one
 * recvmmsg/sendmmsg batch at a time, until SIGTERM or SIGINT. Prints "udprr: ready".
 *
 * bench/reflect.sh runs the client against bench/reflect (no stack at all: the device
 * path's floor) and against the kernel's UDP echo on the same veth. The program is plain
 * POSIX, so it also runs under libustack.so.
 *
 * Exit status: 0 success, 1 error (including a reply that is not the request's), 2 usage.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define UR_MAX_CONNS 1024
#define UR_MAX_SIZE  1472
#define UR_SAMPLES   (1u << 22)
#define UR_BATCH     32

static volatile sig_atomic_t ur_stop;

static void ur_on_signal(int sig)
{
    (void)sig;
    ur_stop = 1;
}

static uint64_t ur_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

struct ur_opts {
    struct sockaddr_in server, bind;
    unsigned conns, size, timeout_ms;
    double seconds;
    uint64_t max;
    int echo_port;
    bool json;
};

static void ur_usage(FILE *f)
{
    fprintf(f, "usage: udprr --server IP --port P [--conns C] [--size B] [--seconds S] [--max N]\n"
               "             [--timeout-ms T] [--json]\n"
               "       udprr --echo PORT [--bind IP]\n");
}

static int ur_num(const char *s, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= lo && v <= hi))
        return -1;
    *out = v;
    return 0;
}

static int ur_parse(int argc, char **argv, struct ur_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->server.sin_family = o->bind.sin_family = AF_INET;
    o->conns = 1;
    o->size = 64;
    o->timeout_ms = 200;
    o->seconds = 5;
    o->max = UINT64_MAX;
    o->echo_port = -1;
    bool have_server = false, have_port = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--json") == 0) {
            o->json = true;
            continue;
        }
        if (i + 1 >= argc)
            return -1;
        const char *v = argv[++i];
        double d;
        if (strcmp(a, "--server") == 0) {
            if (inet_pton(AF_INET, v, &o->server.sin_addr) != 1)
                return -1;
            have_server = true;
        } else if (strcmp(a, "--bind") == 0) {
            if (inet_pton(AF_INET, v, &o->bind.sin_addr) != 1)
                return -1;
        } else if (strcmp(a, "--port") == 0 && ur_num(v, 1, 65535, &d) == 0) {
            o->server.sin_port = htons((uint16_t)d);
            have_port = true;
        } else if (strcmp(a, "--echo") == 0 && ur_num(v, 1, 65535, &d) == 0) {
            o->echo_port = (int)d;
        } else if (strcmp(a, "--conns") == 0 && ur_num(v, 1, UR_MAX_CONNS, &d) == 0) {
            o->conns = (unsigned)d;
        } else if (strcmp(a, "--size") == 0 && ur_num(v, 8, UR_MAX_SIZE, &d) == 0) {
            o->size = (unsigned)d;
        } else if (strcmp(a, "--seconds") == 0 && ur_num(v, 0.1, 3600, &d) == 0) {
            o->seconds = d;
        } else if (strcmp(a, "--max") == 0 && ur_num(v, 1, 1e15, &d) == 0) {
            o->max = (uint64_t)d;
        } else if (strcmp(a, "--timeout-ms") == 0 && ur_num(v, 1, 60000, &d) == 0) {
            o->timeout_ms = (unsigned)d;
        } else {
            return -1;
        }
    }
    if (o->echo_port < 0 && !(have_server && have_port))
        return -1;
    return 0;
}

static int ur_echo(const struct ur_opts *o)
{
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in a = o->bind;
    a.sin_port = htons((uint16_t)o->echo_port);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
        perror("udprr: echo socket");
        return 1;
    }
    struct timeval tv = {.tv_sec = 0, .tv_usec = 200000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    static uint8_t buf[UR_BATCH][2048];
    struct sockaddr_in from[UR_BATCH];
    struct iovec iov[UR_BATCH];
    struct mmsghdr msg[UR_BATCH];
    printf("udprr: ready\n");
    fflush(stdout);
    uint64_t echoed = 0;
    while (!ur_stop) {
        for (int i = 0; i < UR_BATCH; i++) {
            iov[i] = (struct iovec){buf[i], sizeof(buf[i])};
            msg[i].msg_hdr = (struct msghdr){.msg_name = &from[i],
                                             .msg_namelen = sizeof(from[i]),
                                             .msg_iov = &iov[i],
                                             .msg_iovlen = 1};
        }
        int n = recvmmsg(fd, msg, UR_BATCH, MSG_WAITFORONE, NULL);
        if (n <= 0)
            continue;
        for (int i = 0; i < n; i++)
            iov[i].iov_len = msg[i].msg_len;
        int sent = sendmmsg(fd, msg, (unsigned)n, 0);
        if (sent > 0)
            echoed += (uint64_t)sent;
    }
    printf("udprr: echoed %llu\n", (unsigned long long)echoed);
    close(fd);
    return 0;
}

struct ur_conn {
    int fd;
    uint64_t seq, sent_ns;
};

static int ur_cmp(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static int ur_send(struct ur_conn *c, unsigned size, uint8_t *buf)
{
    c->seq++;
    memcpy(buf, &c->seq, sizeof(c->seq));
    for (unsigned i = 8; i < size; i++)
        buf[i] = (uint8_t)(c->seq + i);
    c->sent_ns = ur_now_ns();
    ssize_t r = send(c->fd, buf, size, 0);
    if (r == (ssize_t)size ||
        (r < 0 && (errno == EAGAIN || errno == ENOBUFS || errno == ECONNREFUSED)))
        return 0; /* a refused or dropped request is caught by the timeout */
    perror("udprr: send");
    return -1;
}

static int ur_client(const struct ur_opts *o)
{
    static struct ur_conn c[UR_MAX_CONNS];
    uint32_t *lat = malloc(UR_SAMPLES * sizeof(*lat));
    int ep = epoll_create1(0);
    if (!lat || ep < 0) {
        perror("udprr: set-up");
        return 1;
    }
    uint8_t out[UR_MAX_SIZE], in[2048];
    for (unsigned i = 0; i < o->conns; i++) {
        c[i].fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
        if (c[i].fd < 0 ||
            connect(c[i].fd, (const struct sockaddr *)&o->server, sizeof(o->server))) {
            perror("udprr: socket/connect");
            return 1;
        }
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = i};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, c[i].fd, &ev) != 0) {
            perror("udprr: epoll_ctl");
            return 1;
        }
    }
    uint64_t t0 = ur_now_ns(), end = t0 + (uint64_t)(o->seconds * 1e9), done = 0, lost = 0;
    uint64_t timeout = (uint64_t)o->timeout_ms * 1000000ull, nsamp = 0, bad = 0;
    for (unsigned i = 0; i < o->conns; i++)
        if (ur_send(&c[i], o->size, out))
            return 1;
    uint64_t now = t0;
    while (now < end && done < o->max) {
        struct epoll_event evs[64];
        int n = epoll_wait(ep, evs, 64, 10);
        now = ur_now_ns();
        for (int k = 0; k < n; k++) {
            struct ur_conn *x = &c[evs[k].data.u32];
            for (int reads = 0; reads < 16; reads++) {
                ssize_t r = recv(x->fd, in, sizeof(in), 0);
                if (r < 0)
                    break;
                uint64_t seq;
                if (r != (ssize_t)o->size || (memcpy(&seq, in, 8), seq > x->seq)) {
                    bad++;
                    continue;
                }
                if (seq != x->seq)
                    continue; /* a late reply to a request already counted lost */
                now = ur_now_ns();
                bool same = true;
                for (unsigned i = 8; i < o->size && same; i++)
                    same = in[i] == (uint8_t)(seq + i);
                if (!same) {
                    bad++;
                    continue;
                }
                uint64_t us = now > x->sent_ns ? (now - x->sent_ns) / 1000u : 0;
                if (nsamp < UR_SAMPLES)
                    lat[nsamp++] = us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
                done++;
                if (ur_send(x, o->size, out))
                    return 1;
            }
        }
        for (unsigned i = 0; i < o->conns; i++)
            if (now > c[i].sent_ns && now - c[i].sent_ns > timeout) {
                lost++;
                if (ur_send(&c[i], o->size, out))
                    return 1;
            }
    }
    double secs = (double)(now - t0) / 1e9;
    qsort(lat, nsamp, sizeof(*lat), ur_cmp);
    uint32_t p50 = nsamp ? lat[nsamp / 2] : 0, p99 = nsamp ? lat[nsamp * 99 / 100] : 0;
    uint32_t p999 = nsamp ? lat[nsamp * 999 / 1000] : 0;
    double tps = secs > 0 ? (double)done / secs : 0;
    if (o->json)
        printf("{\"mode\":\"udp-rr\",\"conns\":%u,\"size\":%u,\"seconds\":%.3f,"
               "\"transactions\":%llu,\"tps\":%.1f,\"lost\":%llu,\"bad\":%llu,"
               "\"p50_us\":%u,\"p99_us\":%u,\"p999_us\":%u}\n",
               o->conns, o->size, secs, (unsigned long long)done, tps, (unsigned long long)lost,
               (unsigned long long)bad, p50, p99, p999);
    else
        printf("udp-rr conns %u size %u: %llu transactions in %.2f s = %.0f/s, lost %llu, bad %llu,"
               " latency p50 %u us p99 %u us p99.9 %u us\n",
               o->conns, o->size, (unsigned long long)done, secs, tps, (unsigned long long)lost,
               (unsigned long long)bad, p50, p99, p999);
    free(lat);
    return bad || done == 0 ? 1 : 0;
}

int main(int argc, char **argv)
{
    struct ur_opts o;
    if (argc > 1 && strcmp(argv[1], "--help") == 0) {
        ur_usage(stdout);
        return 0;
    }
    if (ur_parse(argc, argv, &o) != 0) {
        ur_usage(stderr);
        return 2;
    }
    signal(SIGTERM, ur_on_signal);
    signal(SIGINT, ur_on_signal);
    signal(SIGPIPE, SIG_IGN);
    return o.echo_port >= 0 ? ur_echo(&o) : ur_client(&o);
}

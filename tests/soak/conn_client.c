/*
 * conn_client.c - a plain POSIX TCP client for the soak tests (tests/soak/), run on the
 * kernel or under LD_PRELOAD=libustack.so.
 *
 *   conn_client hold IP PORT N [SRC]   opens N connections (from SRC when given), prints
 *                                      "held N" once all are established, waits for a line
 *                                      on stdin, then sends 8 bytes on every connection and
 *                                      waits for the 8 bytes echoed back on each; prints
 *                                      "used N", waits for a second line, closes them all
 *                                      and exits 0 only if every one answered.
 *   conn_client cycle IP PORT N        N times in turn: connect, send 8 bytes, read the
 *                                      echo, close. Prints "cycled N" and exits 0 if all did.
 *
 * Each connection's 8 bytes carry its index, so a reply that lands on the wrong connection
 * is caught. Every wait is bounded (SOAK_CLIENT_SECS, default 120 s); errors name the call.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double secs_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *what)
{
    fprintf(stderr, "conn_client: %s: %s\n", what, strerror(errno));
    exit(1);
}

static struct sockaddr_in addr_of(const char *ip, int port)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, ip, &a.sin_addr) != 1) {
        fprintf(stderr, "conn_client: bad address %s\n", ip);
        exit(2);
    }
    return a;
}

static void msg_for(unsigned i, char out[8])
{
    snprintf(out, 9, "%08x", i * 2654435761u);
}

static int cycle(struct sockaddr_in dst, unsigned n, double limit)
{
    for (unsigned i = 0; i < n; i++) {
        if (secs_now() > limit) {
            fprintf(stderr, "conn_client: time limit after %u connections\n", i);
            return 1;
        }
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0)
            die("socket");
        if (connect(fd, (struct sockaddr *)&dst, sizeof dst) < 0)
            die("connect");
        char m[9], r[8];
        msg_for(i, m);
        if (write(fd, m, 8) != 8)
            die("write");
        size_t got = 0;
        while (got < 8) {
            ssize_t k = read(fd, r + got, 8 - got);
            if (k <= 0) {
                if (k == 0)
                    errno = ECONNRESET;
                die("read");
            }
            got += (size_t)k;
        }
        if (memcmp(m, r, 8) != 0) {
            fprintf(stderr, "conn_client: connection %u: wrong echo\n", i);
            return 1;
        }
        if (close(fd) < 0)
            die("close");
    }
    printf("cycled %u\n", n);
    return 0;
}

static int hold(struct sockaddr_in dst, unsigned n, const char *src, double limit)
{
    int *fds = calloc(n, sizeof *fds);
    unsigned char *state = calloc(n, 1); /* 0 connecting, 1 established, 2 sent, 3 answered */
    int ep = epoll_create1(0);
    if (!fds || !state || ep < 0)
        die("setup");
    struct sockaddr_in sa = addr_of(src ? src : "0.0.0.0", 0);
    unsigned pending = 0, up = 0;
    /* Open in waves of at most 2000 handshakes in flight, so the listener's queue and the
     * SYN cookies are not the thing under test. */
    for (unsigned i = 0; i < n || pending > 0;) {
        while (i < n && pending < 2000) {
            int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
            if (fd < 0)
                die("socket");
            if (src && bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0)
                die("bind");
            if (connect(fd, (struct sockaddr *)&dst, sizeof dst) < 0 && errno != EINPROGRESS)
                die("connect");
            struct epoll_event ev = {.events = EPOLLOUT, .data.u32 = i};
            if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0)
                die("epoll_ctl");
            fds[i++] = fd;
            pending++;
        }
        struct epoll_event evs[256];
        int k = epoll_wait(ep, evs, 256, 1000);
        if (k < 0 && errno != EINTR)
            die("epoll_wait");
        for (int j = 0; j < k; j++) {
            unsigned c = evs[j].data.u32;
            int err = 0;
            socklen_t el = sizeof err;
            getsockopt(fds[c], SOL_SOCKET, SO_ERROR, &err, &el);
            if (err) {
                errno = err;
                die("connect (asynchronous)");
            }
            state[c] = 1;
            up++;
            pending--;
            struct epoll_event ev = {.events = EPOLLIN, .data.u32 = c};
            epoll_ctl(ep, EPOLL_CTL_MOD, fds[c], &ev);
        }
        if (secs_now() > limit) {
            fprintf(stderr, "conn_client: only %u of %u connected in time\n", up, n);
            return 1;
        }
    }
    printf("held %u\n", up);
    fflush(stdout);
    char line[64];
    if (!fgets(line, sizeof line, stdin))
        return 1;
    limit = secs_now() + (limit - secs_now() > 60 ? limit - secs_now() : 60);
    for (unsigned c = 0; c < n; c++) {
        char m[9];
        msg_for(c, m);
        if (write(fds[c], m, 8) != 8)
            die("write");
        state[c] = 2;
    }
    unsigned answered = 0;
    while (answered < n) {
        struct epoll_event evs[256];
        int k = epoll_wait(ep, evs, 256, 1000);
        if (k < 0 && errno != EINTR)
            die("epoll_wait");
        for (int j = 0; j < k; j++) {
            unsigned c = evs[j].data.u32;
            char m[9], r[8];
            ssize_t got = read(fds[c], r, 8);
            if (got <= 0 && !(got < 0 && errno == EAGAIN)) {
                fprintf(stderr, "conn_client: connection %u: read %zd (%s)\n", c, got,
                        got < 0 ? strerror(errno) : "EOF");
                return 1;
            }
            if (got < 0)
                continue;
            msg_for(c, m);
            if (got != 8 || memcmp(m, r, 8) != 0 || state[c] != 2) {
                fprintf(stderr, "conn_client: connection %u: wrong echo\n", c);
                return 1;
            }
            state[c] = 3;
            answered++;
            epoll_ctl(ep, EPOLL_CTL_DEL, fds[c], NULL);
        }
        if (secs_now() > limit) {
            fprintf(stderr, "conn_client: only %u of %u answered in time\n", answered, n);
            return 1;
        }
    }
    printf("used %u\n", answered);
    fflush(stdout);
    /* Held open until told, so that memory can be measured with every connection used. */
    if (!fgets(line, sizeof line, stdin))
        return 1;
    for (unsigned c = 0; c < n; c++)
        close(fds[c]);
    close(ep);
    free(fds);
    free(state);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 5) {
        fprintf(stderr, "usage: conn_client hold|cycle IP PORT N [SRC]\n");
        return 2;
    }
    const char *ls = getenv("SOAK_CLIENT_SECS");
    double limit = secs_now() + (ls ? atof(ls) : 120);
    struct sockaddr_in dst = addr_of(argv[2], atoi(argv[3]));
    unsigned n = (unsigned)strtoul(argv[4], NULL, 10);
    if (strcmp(argv[1], "cycle") == 0)
        return cycle(dst, n, limit);
    return hold(dst, n, argc > 5 ? argv[5] : NULL, limit);
}

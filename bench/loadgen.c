/*
 * loadgen.c - client load generator and verifier for ustackd's and kserve's TCP services.
 *
 * One thread drives every connection through non-blocking sockets and one level-triggered
 * epoll loop, so the client's own cost stays small and is reported (getrusage) beside the
 * result. Every byte that comes back is checked, so a broken server cannot report a speed.
 *
 * Modes (--mode):
 *   rr         C persistent connections doing ping-pong of --size bytes against echo.
 *   crr        connect, send --size bytes, read them back, close; C cycles in flight.
 *   bulk-send  C connections writing to discard; at the end SHUT_WR and wait for the
 *              server's close, so every byte counted has been read by the server.
 *   bulk-recv  C connections reading source, checking byte i == i % 251.
 *   verify     C connections each send --bytes of their own pseudo-random stream to echo,
 *              read it all back byte-exact, shut down and expect EOF.
 *
 * Payloads are a counter-based stream: byte k of a connection's stream is byte k % 8 of
 * mix(seed + k / 8), mix being the xorshift-multiply finaliser of splitmix64. Any byte can be
 * computed from its offset alone, so partial reads and writes need no per-connection copies
 * and a mismatch can be reported with its exact offset. rr and crr messages are consecutive
 * pieces of that stream whose first 8 bytes are overwritten by the transaction counter, so a
 * stale or duplicated echo never matches.
 *
 * Every loop is bounded by time (--seconds, and --timeout-ms per operation) and by count
 * (--max transactions or connections, --bytes per connection, and a fixed number of reads or
 * writes per event). Exit status: 0 success, 1 any error or mismatch, 2 usage error.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

#define LG_BUF         (256 * 1024) /* largest single read or write */
#define LG_EVENTS      1024
#define LG_ROUNDS      8 /* reads or writes per event, so one socket cannot starve the rest */
#define LG_PERIOD      251
#define LG_HSUB        32 /* histogram sub-buckets per power of two: about 3% resolution */
#define LG_HBUCKETS    (60 * LG_HSUB)
#define LG_MAX_REPORTS 20
#define LG_SWEEP_NS    100000000ull
#define LG_GOLDEN      0x9e3779b97f4a7c15ull

enum lg_mode { M_RR, M_CRR, M_BSEND, M_BRECV, M_VERIFY, M_NMODES };
static const char *const lg_mode_name[M_NMODES] = {"rr", "crr", "bulk-send", "bulk-recv", "verify"};

enum lg_phase { P_IDLE, P_CONNECTING, P_ACTIVE, P_DRAIN };

enum lg_err { E_REFUSED, E_RESET, E_TIMEOUT, E_MISMATCH, E_EOF, E_OTHER, E_NERR };
static const char *const lg_phase_name[] = {"idle", "connect", "transfer",
                                            "wait for the server's close"};

static const char *const lg_err_name[E_NERR] = {"refused",  "reset", "timeout",
                                                "mismatch", "eof",   "other"};

struct lg_opts {
    enum lg_mode mode;
    struct sockaddr_storage srv;
    socklen_t srvlen;
    unsigned conns, bind_count, timeout_ms;
    double seconds;
    uint64_t max, size, bytes;
    bool json, have_bind;
    struct in_addr bind_base;
};

struct lg_conn {
    int fd;
    uint32_t idx;
    enum lg_phase phase;
    uint32_t events; /* the epoll interest currently registered */
    uint64_t t0;     /* start of the transaction or cycle, or time of the last progress */
    uint64_t seq;    /* rr and crr: the transaction counter carried in the message */
    uint64_t seed;
    uint64_t tx, rx; /* bytes of the current message (rr, crr) or of the stream */
};

struct lg {
    struct lg_opts o;
    int ep;
    struct lg_conn *c;
    uint32_t *idle; /* crr: slots waiting for their next cycle */
    unsigned nidle;
    uint8_t *txb, *rxb, *xb, *pat;
    uint64_t hist[LG_HBUCKETS];
    uint64_t nlat, lat_max;
    uint64_t started, done, bytes, ok, abandoned;
    uint64_t err[E_NERR];
    unsigned open, connecting, reports;
    bool measuring, stopping;
    uint64_t t_start, t_end, deadline, timeout_ns, next_bind;
};

static uint64_t lg_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Log-linear buckets: exact below 32 ns, then 32 sub-buckets per power of two. */
static unsigned lg_bucket(uint64_t v)
{
    if (v < LG_HSUB)
        return (unsigned)v;
    unsigned sh = (unsigned)(63 - __builtin_clzll(v)) - 5;
    return (sh + 1) * LG_HSUB + (unsigned)((v >> sh) & (LG_HSUB - 1));
}

static uint64_t lg_bucket_mid(unsigned b)
{
    if (b < 2 * LG_HSUB)
        return b;
    unsigned sh = b / LG_HSUB - 1;
    return ((uint64_t)(LG_HSUB + b % LG_HSUB) << sh) + (1ull << sh) / 2;
}

static double lg_pct_us(const struct lg *lg, double p)
{
    if (lg->nlat == 0)
        return 0;
    uint64_t want = (uint64_t)(p * (double)lg->nlat + 0.999999), seen = 0;
    if (want == 0)
        want = 1;
    for (unsigned b = 0; b < LG_HBUCKETS; b++) {
        seen += lg->hist[b];
        if (seen >= want)
            return (double)lg_bucket_mid(b) / 1e3;
    }
    return (double)lg->lat_max / 1e3;
}

static uint64_t lg_mix(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static void lg_stream(uint64_t seed, uint64_t off, uint8_t *buf, size_t n)
{
    while (n > 0) {
        uint64_t w = lg_mix(seed + (off / 8) * LG_GOLDEN);
        for (unsigned k = (unsigned)(off % 8); k < 8 && n > 0; k++, n--, off++)
            *buf++ = (uint8_t)(w >> (8 * k));
    }
}

/* Bytes [off, off + n) of transaction seq's message of the given size. */
static void lg_msg(uint64_t seed, uint64_t seq, uint64_t size, uint64_t off, uint8_t *buf, size_t n)
{
    lg_stream(seed, seq * size + off, buf, n);
    for (uint64_t j = off; j < 8 && j < off + n; j++)
        buf[j - off] = (uint8_t)(seq >> (8 * j));
}

static enum lg_err lg_classify(int e)
{
    if (e == ECONNREFUSED)
        return E_REFUSED;
    if (e == ECONNRESET || e == ECONNABORTED || e == EPIPE)
        return E_RESET;
    return e == ETIMEDOUT ? E_TIMEOUT : E_OTHER;
}

static bool lg_again(void)
{
    return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
}

static void lg_close(struct lg *lg, struct lg_conn *c)
{
    if (c->fd >= 0) {
        close(c->fd);
        lg->open--;
    }
    if (c->phase == P_CONNECTING)
        lg->connecting--;
    c->fd = -1;
    c->phase = P_IDLE;
    c->events = 0;
    /* crr reuses the slot; the main loop restarts it, so a failing connect cannot recurse. */
    if (lg->o.mode == M_CRR && !lg->stopping)
        lg->idle[lg->nidle++] = c->idx;
}

__attribute__((format(printf, 4, 5))) static void lg_fail(struct lg *lg, struct lg_conn *c,
                                                          enum lg_err kind, const char *fmt, ...)
{
    lg->err[kind]++;
    if (lg->reports < LG_MAX_REPORTS) {
        va_list ap;
        va_start(ap, fmt);
        fprintf(stderr, "loadgen: conn %u: %s: ", c->idx, lg_err_name[kind]);
        vfprintf(stderr, fmt, ap);
        fputc('\n', stderr);
        va_end(ap);
    } else if (lg->reports == LG_MAX_REPORTS) {
        fprintf(stderr, "loadgen: further failures are counted but not shown\n");
    }
    lg->reports++;
    lg_close(lg, c);
}

static void lg_fail_errno(struct lg *lg, struct lg_conn *c, int e, const char *what)
{
    lg_fail(lg, c, lg_classify(e), "%s: %s", what, strerror(e));
}

static bool lg_set_ev(struct lg *lg, struct lg_conn *c, uint32_t events)
{
    if (c->events == events)
        return true;
    struct epoll_event ev = {.events = events, .data.u32 = c->idx};
    if (epoll_ctl(lg->ep, EPOLL_CTL_MOD, c->fd, &ev) < 0) {
        lg_fail_errno(lg, c, errno, "epoll_ctl");
        return false;
    }
    c->events = events;
    return true;
}

static void lg_open(struct lg *lg, struct lg_conn *c)
{
    c->t0 = lg_now();
    c->tx = c->rx = 0;
    c->fd = socket(lg->o.srv.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        lg_fail_errno(lg, c, errno, "socket");
        return;
    }
    lg->open++;
    c->phase = P_CONNECTING;
    lg->connecting++;
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (lg->o.have_bind) {
        /*
         * Binding the address alone and leaving the port to connect() lets the kernel pick
         * a port unique for the full 4-tuple, so K addresses give K times the ports and
         * TIME-WAIT reuse still applies.
         */
        struct sockaddr_in a = {.sin_family = AF_INET};
        uint32_t k = (uint32_t)(lg->next_bind++ % lg->o.bind_count);
        a.sin_addr.s_addr = htonl(ntohl(lg->o.bind_base.s_addr) + k);
        setsockopt(c->fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
        if (bind(c->fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
            lg_fail_errno(lg, c, errno, "bind");
            return;
        }
    }
    c->events = EPOLLOUT;
    struct epoll_event ev = {.events = EPOLLOUT, .data.u32 = c->idx};
    if (epoll_ctl(lg->ep, EPOLL_CTL_ADD, c->fd, &ev) < 0) {
        lg_fail_errno(lg, c, errno, "epoll_ctl");
        return;
    }
    /* An immediate success still reports EPOLLOUT, so both outcomes take the same path. */
    if (connect(c->fd, (struct sockaddr *)&lg->o.srv, lg->o.srvlen) < 0 && errno != EINPROGRESS)
        lg_fail_errno(lg, c, errno, "connect");
}

static bool lg_can_start(const struct lg *lg)
{
    return !lg->stopping && lg->started < lg->o.max;
}

static void lg_crr_next(struct lg *lg, struct lg_conn *c)
{
    if (!lg_can_start(lg))
        return;
    c->seq = lg->started++;
    lg_open(lg, c);
}

/*
 * The bytes at offset off of what this connection sends or expects: the message of rr and
 * crr, the verify stream, or the source pattern. bulk-send's content does not matter, so it
 * sends the buffer as it is. Returns where the bytes are, which is buf unless they exist
 * already.
 */
static const uint8_t *lg_gen(const struct lg *lg, const struct lg_conn *c, uint64_t off,
                             uint8_t *buf, size_t n)
{
    switch (lg->o.mode) {
    case M_RR:
    case M_CRR:
        lg_msg(c->seed, c->seq, lg->o.size, off, buf, n);
        return buf;
    case M_VERIFY:
        lg_stream(c->seed, off, buf, n);
        return buf;
    case M_BRECV:
        /* The pattern buffer starts one period early, so any phase is one contiguous run. */
        return lg->pat + off % LG_PERIOD;
    default:
        return buf;
    }
}

/* All is sent: the half-close asks the server to finish and close its side. */
static void lg_half_close(struct lg *lg, struct lg_conn *c)
{
    if (shutdown(c->fd, SHUT_WR) < 0) {
        lg_fail_errno(lg, c, errno, "shutdown");
        return;
    }
    c->phase = P_DRAIN;
    c->t0 = lg_now();
    lg_set_ev(lg, c, EPOLLIN);
}

static void lg_write(struct lg *lg, struct lg_conn *c)
{
    bool rr = lg->o.mode == M_RR || lg->o.mode == M_CRR;
    /* rr and crr send one message at a time; verify one stream; bulk-send may be unbounded. */
    uint64_t limit = rr ? lg->o.size : lg->o.bytes;
    if (lg->o.mode == M_BSEND && lg->o.bytes == 0)
        limit = UINT64_MAX;
    uint64_t chunk = lg->o.mode == M_BSEND ? lg->o.size : LG_BUF, before = c->tx;
    for (int round = 0; round < LG_ROUNDS && c->tx < limit; round++) {
        size_t n = (size_t)(limit - c->tx < chunk ? limit - c->tx : chunk);
        ssize_t w = send(c->fd, lg_gen(lg, c, c->tx, lg->txb, n), n, MSG_NOSIGNAL);
        if (w < 0) {
            if (lg_again())
                break;
            lg_fail_errno(lg, c, errno, "send");
            return;
        }
        c->tx += (uint64_t)w;
    }
    if (lg->o.mode == M_BSEND && c->tx != before) {
        lg->bytes += c->tx - before;
        c->t0 = lg_now();
    }
    if (c->tx < limit || rr)
        lg_set_ev(lg, c, EPOLLIN | (c->tx < limit ? EPOLLOUT : 0));
    else
        lg_half_close(lg, c);
}

/* The connection did all it had to; bulk-send's run ends with the last such close. */
static void lg_ok(struct lg *lg, struct lg_conn *c)
{
    lg->ok++;
    lg->done++;
    if (lg->o.mode == M_BSEND)
        lg->t_end = lg_now();
    lg_close(lg, c);
}

static void lg_rr_begin(struct lg *lg, struct lg_conn *c)
{
    if (lg->o.mode == M_RR) {
        if (!lg_can_start(lg)) {
            lg_close(lg, c);
            return;
        }
        lg->started++;
        c->t0 = lg_now();
    }
    c->tx = c->rx = 0;
    lg_write(lg, c);
}

static void lg_rr_done(struct lg *lg, struct lg_conn *c)
{
    uint64_t ns = lg_now() - c->t0;
    lg->hist[lg_bucket(ns)]++;
    lg->nlat++;
    lg->lat_max = ns > lg->lat_max ? ns : lg->lat_max;
    lg->done++;
    /* crr closes first, so the client side holds TIME-WAIT as a real client would. */
    if (lg->o.mode == M_CRR) {
        lg_close(lg, c);
        return;
    }
    c->seq++;
    lg_rr_begin(lg, c);
}

static void lg_eof(struct lg *lg, struct lg_conn *c)
{
    /* Only bulk-send and verify expect the server's close, and only after their half-close. */
    bool want = c->phase == P_DRAIN && (lg->o.mode == M_BSEND || c->rx == lg->o.bytes);
    if (!want) {
        lg_fail(lg, c, E_EOF, "server closed after receiving %" PRIu64 " and sending %" PRIu64,
                c->tx, c->rx);
        return;
    }
    lg_ok(lg, c);
}

/* Checks r bytes just received at offset c->rx; returns false once the connection failed. */
static bool lg_check(struct lg *lg, struct lg_conn *c, size_t r)
{
    if (lg->o.mode == M_BSEND) {
        lg_fail(lg, c, E_MISMATCH, "the discard server sent %zu bytes", r);
        return false;
    }
    /* An echo cannot return bytes that were never sent. */
    if (lg->o.mode != M_BRECV && c->rx + r > c->tx) {
        lg_fail(lg, c, E_MISMATCH, "received %" PRIu64 " bytes but only %" PRIu64 " were sent",
                c->rx + r, c->tx);
        return false;
    }
    const uint8_t *want = lg_gen(lg, c, c->rx, lg->xb, r);
    if (memcmp(lg->rxb, want, r) == 0)
        return true;
    size_t d = 0;
    while (lg->rxb[d] == want[d])
        d++;
    lg_fail(lg, c, E_MISMATCH, "byte %" PRIu64 " of %s %" PRIu64 ": got 0x%02x, want 0x%02x",
            c->rx + d, lg->o.mode == M_RR || lg->o.mode == M_CRR ? "transaction" : "stream", c->seq,
            lg->rxb[d], want[d]);
    return false;
}

static void lg_read(struct lg *lg, struct lg_conn *c)
{
    uint64_t limit = UINT64_MAX, before = c->rx;
    if (lg->o.mode == M_RR || lg->o.mode == M_CRR)
        limit = lg->o.size;
    else if (lg->o.mode == M_BRECV && lg->o.bytes)
        limit = lg->o.bytes;
    for (int round = 0; round < LG_ROUNDS; round++) {
        size_t want = limit - c->rx < LG_BUF ? (size_t)(limit - c->rx) : LG_BUF;
        ssize_t r = recv(c->fd, lg->rxb, want, 0);
        if (r < 0) {
            if (!lg_again())
                lg_fail_errno(lg, c, errno, "recv");
            break;
        }
        if (r == 0) {
            lg_eof(lg, c);
            return;
        }
        if (!lg_check(lg, c, (size_t)r))
            return;
        c->rx += (uint64_t)r;
        lg->bytes += (uint64_t)r;
        if (c->rx < limit)
            continue;
        if (lg->o.mode == M_BRECV)
            lg_ok(lg, c);
        else
            lg_rr_done(lg, c);
        return;
    }
    /* rr and crr time whole transactions; bulk-recv times the gap since the last progress. */
    if (lg->o.mode == M_BRECV && c->fd >= 0 && c->rx != before)
        c->t0 = lg_now();
}

/* The connection is established and the measurement has begun. */
static void lg_start(struct lg *lg, struct lg_conn *c)
{
    /* A crr cycle's latency counts from the connect, which lg_open timed. */
    if (lg->o.mode != M_CRR)
        c->t0 = lg_now();
    if (lg->o.mode == M_RR)
        c->seq = 0;
    if (lg->o.mode == M_RR || lg->o.mode == M_CRR)
        lg_rr_begin(lg, c);
    else if (lg->o.mode == M_BRECV)
        lg_set_ev(lg, c, EPOLLIN);
    else
        lg_write(lg, c);
}

static void lg_dispatch(struct lg *lg, struct lg_conn *c, uint32_t ev)
{
    int err = 0;
    socklen_t len = sizeof(err);
    if (c->phase == P_CONNECTING || (ev & EPOLLERR)) {
        if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
            err = errno;
        if (err == 0 && (ev & EPOLLERR))
            err = ECONNRESET;
        if (err) {
            lg_fail_errno(lg, c, err, c->phase == P_CONNECTING ? "connect" : "socket error");
            return;
        }
    }
    if (c->phase == P_CONNECTING) {
        if (!(ev & EPOLLOUT)) {
            lg_fail(lg, c, E_RESET, "connect: hang-up");
            return;
        }
        c->phase = P_ACTIVE;
        lg->connecting--;
        /* Before the measurement starts an open connection only listens for errors. */
        if (lg->measuring)
            lg_start(lg, c);
        else
            lg_set_ev(lg, c, 0);
        return;
    }
    if (!lg->measuring) {
        if (ev & EPOLLHUP)
            lg_fail(lg, c, E_RESET, "hang-up before the run started");
        return;
    }
    /* A hang-up is read like data: recv() says whether it was an EOF or a reset. */
    if (ev & (EPOLLIN | EPOLLHUP))
        lg_read(lg, c);
    if (c->fd >= 0 && (ev & EPOLLOUT) && c->phase == P_ACTIVE && lg->o.mode != M_BRECV)
        lg_write(lg, c);
}

static void lg_poll(struct lg *lg, uint64_t until)
{
    struct epoll_event evs[LG_EVENTS];
    uint64_t now = lg_now();
    int ms = until > now ? (int)((until - now + 999999) / 1000000) : 0;
    int n = epoll_wait(lg->ep, evs, LG_EVENTS, ms < 100 ? ms : 100);
    if (n < 0 && errno != EINTR) {
        perror("loadgen: epoll_wait");
        exit(1);
    }
    /*
     * A slot closed by an earlier event of this batch has fd -1; slots are reopened only
     * between batches, so no event here can belong to a newer socket than it was taken for.
     */
    for (int i = 0; i < n; i++) {
        struct lg_conn *c = &lg->c[evs[i].data.u32];
        if (c->fd >= 0)
            lg_dispatch(lg, c, evs[i].events);
    }
}

/* The time bound is reached: each mode ends its connections its own way. */
static void lg_stop(struct lg *lg, uint64_t now)
{
    lg->stopping = true;
    lg->nidle = 0;
    /* bulk-send's run ends with the last server close, which says all bytes were read. */
    if (lg->o.mode != M_BSEND)
        lg->t_end = now;
    for (unsigned i = 0; i < lg->o.conns; i++) {
        struct lg_conn *c = &lg->c[i];
        if (c->fd < 0)
            continue;
        if (lg->o.mode == M_RR || lg->o.mode == M_CRR) {
            lg->abandoned++;
            lg_close(lg, c);
        } else if (lg->o.mode == M_BRECV) {
            lg_ok(lg, c);
        } else if (lg->o.mode == M_BSEND) {
            if (c->phase == P_ACTIVE)
                lg_half_close(lg, c);
        } else {
            lg_fail(lg, c, E_TIMEOUT,
                    "not done within %gs: sent %" PRIu64 " and received %" PRIu64 " of %" PRIu64,
                    lg->o.seconds, c->tx, c->rx, lg->o.bytes);
        }
    }
}

/* Fails operations that made no progress for --timeout-ms (verify has only --seconds). */
static void lg_sweep(struct lg *lg, uint64_t now)
{
    if (lg->o.mode == M_VERIFY)
        return;
    for (unsigned i = 0; i < lg->o.conns; i++) {
        struct lg_conn *c = &lg->c[i];
        if (c->fd >= 0 && now - c->t0 > lg->timeout_ns)
            lg_fail(lg, c, E_TIMEOUT, "%s stalled for %u ms", lg_phase_name[c->phase],
                    lg->o.timeout_ms);
    }
}

static void lg_run(struct lg *lg)
{
    bool preconnect = lg->o.mode == M_RR || lg->o.mode == M_BSEND || lg->o.mode == M_BRECV;
    if (preconnect) {
        /* Persistent connections are set up first so the measurement holds only transfers. */
        uint64_t until = lg_now() + lg->timeout_ns;
        for (unsigned i = 0; i < lg->o.conns; i++)
            lg_open(lg, &lg->c[i]);
        while (lg->connecting > 0 && lg_now() < until)
            lg_poll(lg, until);
        for (unsigned i = 0; i < lg->o.conns; i++)
            if (lg->c[i].phase == P_CONNECTING)
                lg_fail(lg, &lg->c[i], E_TIMEOUT, "connect took over %u ms", lg->o.timeout_ms);
    }
    lg->measuring = true;
    lg->t_start = lg_now();
    lg->deadline = lg->t_start + (uint64_t)(lg->o.seconds * 1e9);
    for (unsigned i = 0; i < lg->o.conns; i++) {
        struct lg_conn *c = &lg->c[i];
        if (preconnect && c->phase == P_ACTIVE)
            lg_start(lg, c);
        else if (lg->o.mode == M_CRR)
            lg_crr_next(lg, c);
        else if (lg->o.mode == M_VERIFY)
            lg_open(lg, c);
    }
    uint64_t next_sweep = lg->t_start + LG_SWEEP_NS;
    for (;;) {
        uint64_t now = lg_now();
        if (!lg->stopping && now >= lg->deadline)
            lg_stop(lg, now);
        if (now >= next_sweep) {
            lg_sweep(lg, now);
            next_sweep = now + LG_SWEEP_NS;
        }
        /* Restart each waiting crr slot once; one that fails at once waits for the next turn. */
        for (unsigned k = lg->nidle; k > 0 && lg->nidle > 0; k--)
            lg_crr_next(lg, &lg->c[lg->idle[--lg->nidle]]);
        if (lg->open == 0 && lg->nidle == 0)
            break;
        lg_poll(lg, lg->stopping || next_sweep < lg->deadline ? next_sweep : lg->deadline);
    }
    /* A run that ended early by count, or a bulk-send with no clean close, ends now. */
    if (lg->t_end == 0)
        lg->t_end = lg_now();
}

__attribute__((format(printf, 3, 4))) static void lg_kv(const struct lg *lg, const char *key,
                                                        const char *fmt, ...)
{
    va_list ap;
    printf(lg->o.json ? ",\"%s\":" : " %s=", key);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
}

static uint64_t lg_errors(const struct lg *lg)
{
    uint64_t n = 0;
    for (int e = 0; e < E_NERR; e++)
        n += lg->err[e];
    return n;
}

/* One line of key=value pairs, or one JSON object with the same keys. */
static void lg_report(const struct lg *lg)
{
    const struct lg_opts *o = &lg->o;
    double secs = lg->t_end > lg->t_start ? (double)(lg->t_end - lg->t_start) / 1e9 : 1e-9;
    bool rr = o->mode == M_RR || o->mode == M_CRR;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);

    printf(o->json ? "{\"mode\":\"%s\"" : "loadgen %s:", lg_mode_name[o->mode]);
    lg_kv(lg, "conns", "%u", o->conns);
    if (o->mode == M_VERIFY) {
        lg_kv(lg, "ok", "%" PRIu64, lg->ok);
        lg_kv(lg, "failed", "%" PRIu64, o->conns - lg->ok);
        lg_kv(lg, "bytes", "%" PRIu64, lg->bytes);
    }
    lg_kv(lg, "seconds", "%.3f", secs);
    if (o->mode != M_VERIFY) {
        lg_kv(lg, "transactions", "%" PRIu64, lg->done);
        lg_kv(lg, "tps", "%.1f", (double)lg->done / secs);
        if (o->mode == M_CRR) {
            lg_kv(lg, "connections", "%" PRIu64, lg->done);
            lg_kv(lg, "cps", "%.1f", (double)lg->done / secs);
        }
        lg_kv(lg, "bytes", "%" PRIu64, lg->bytes);
    }
    lg_kv(lg, "gbps", "%.3f", (double)lg->bytes * 8 / secs / 1e9);
    if (rr) {
        lg_kv(lg, "size", "%" PRIu64, o->size);
        lg_kv(lg, "p50_us", "%.1f", lg_pct_us(lg, 0.50));
        lg_kv(lg, "p99_us", "%.1f", lg_pct_us(lg, 0.99));
        lg_kv(lg, "p999_us", "%.1f", lg_pct_us(lg, 0.999));
        lg_kv(lg, "max_us", "%.1f", (double)lg->lat_max / 1e3);
        lg_kv(lg, "abandoned", "%" PRIu64, lg->abandoned);
    }
    lg_kv(lg, "errors", "%" PRIu64, lg_errors(lg));
    for (int e = 0; e < E_NERR; e++)
        lg_kv(lg, lg_err_name[e], "%" PRIu64, lg->err[e]);
    lg_kv(lg, "cpu_user_s", "%.3f", (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6);
    lg_kv(lg, "cpu_sys_s", "%.3f", (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6);
    printf(o->json ? "}\n" : "\n");
    fflush(stdout);
}

static void lg_usage(FILE *f)
{
    fprintf(f, "usage: loadgen --mode rr|crr|bulk-send|bulk-recv|verify --port P [options]\n"
               "  --server IP        server address (default 127.0.0.1)\n"
               "  --port P           server port\n"
               "  --seconds S        time bound of the run (default 5)\n"
               "  --max N            rr: stop after N transactions; crr: after N connections\n"
               "  --conns C          concurrency (default 1; verify 100)\n"
               "  --size B           rr/crr message bytes (default 64); bulk-send write size\n"
               "                     (default 65536)\n"
               "  --bytes N          verify: bytes per connection (default 1048576);\n"
               "                     bulk: stop a connection after N bytes (default: no limit)\n"
               "  --timeout-ms T     fail an operation stalled for T ms (default 3000)\n"
               "  --bind-base IP --bind-count K  spread connections over K source addresses\n"
               "  --json             print one JSON object instead of a text line\n");
}

/* Returns true when s is not a decimal number within [lo, hi]. */
static bool lg_bad_num(const char *s, uint64_t lo, uint64_t hi, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end || *s == '-' || v < lo || v > hi)
        return true;
    *out = v;
    return false;
}

static int lg_parse(int argc, char **argv, struct lg_opts *o)
{
    const char *server = "127.0.0.1", *mode = "", *secs = "5", *bind_base = NULL;
    uint64_t port = 0, conns = 0, size = 0, bytes = UINT64_MAX, tmo = 3000, nbind = 1;
    o->max = UINT64_MAX;
    /* Every option but --json takes a value: a string, or a number with its range. */
    const struct {
        const char *name, **str;
        uint64_t *num, lo, hi;
    } opts[] = {{"mode", &mode, NULL, 0, 0},
                {"server", &server, NULL, 0, 0},
                {"seconds", &secs, NULL, 0, 0},
                {"bind-base", &bind_base, NULL, 0, 0},
                {"port", NULL, &port, 1, 65535},
                {"max", NULL, &o->max, 1, UINT64_MAX},
                {"conns", NULL, &conns, 1, 1000000},
                {"size", NULL, &size, 1, 1ull << 40},
                {"bytes", NULL, &bytes, 0, UINT64_MAX - 1},
                {"timeout-ms", NULL, &tmo, 1, 3600000},
                {"bind-count", NULL, &nbind, 1, 1u << 24}};
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i], *val = strchr(arg, '=');
        if (strcmp(arg, "--help") == 0) {
            lg_usage(stdout);
            exit(0);
        }
        if (strcmp(arg, "--json") == 0) {
            o->json = true;
            continue;
        }
        if (strncmp(arg, "--", 2) != 0)
            return -1;
        arg += 2;
        size_t len = val ? (size_t)(val - arg) : strlen(arg), k = 0,
               n = sizeof(opts) / sizeof(*opts);
        while (k < n && !(strlen(opts[k].name) == len && strncmp(arg, opts[k].name, len) == 0))
            k++;
        if (k == n || (!val && i + 1 == argc))
            return -1;
        val = val ? val + 1 : argv[++i];
        if (opts[k].str)
            *opts[k].str = val;
        else if (lg_bad_num(val, opts[k].lo, opts[k].hi, opts[k].num))
            return -1;
    }
    int m = 0;
    while (m < M_NMODES && strcmp(mode, lg_mode_name[m]) != 0)
        m++;
    char *end;
    o->seconds = strtod(secs, &end);
    if (m == M_NMODES || port == 0 || end == secs || *end || !(o->seconds > 0 && o->seconds <= 1e6))
        return -1;
    o->have_bind = bind_base != NULL;
    if (o->have_bind && inet_pton(AF_INET, bind_base, &o->bind_base) != 1)
        return -1;
    o->mode = (enum lg_mode)m;
    o->conns = (unsigned)(conns ? conns : m == M_VERIFY ? 100 : 1);
    o->size = size ? size : m == M_BSEND ? 65536 : 64;
    o->bytes = bytes != UINT64_MAX ? bytes : m == M_VERIFY ? 1048576 : 0;
    o->timeout_ms = (unsigned)tmo;
    o->bind_count = (unsigned)nbind;
    if (m == M_BSEND && o->size > LG_BUF)
        return -1;

    memset(&o->srv, 0, sizeof(o->srv));
    struct sockaddr_in *a4 = (struct sockaddr_in *)&o->srv;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&o->srv;
    if (inet_pton(AF_INET, server, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons((uint16_t)port);
        o->srvlen = sizeof(*a4);
    } else if (inet_pton(AF_INET6, server, &a6->sin6_addr) == 1 && !o->have_bind) {
        /* --bind-base is IPv4 only, so it cannot be combined with an IPv6 server. */
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)port);
        o->srvlen = sizeof(*a6);
    } else {
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    static struct lg lg;
    if (lg_parse(argc, argv, &lg.o) < 0) {
        lg_usage(stderr);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    /* Thousands of connections need more descriptors than the usual soft limit of 1024. */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    lg.timeout_ns = (uint64_t)lg.o.timeout_ms * 1000000ull;
    lg.ep = epoll_create1(EPOLL_CLOEXEC);
    lg.c = calloc(lg.o.conns, sizeof(*lg.c));
    lg.idle = calloc(lg.o.conns, sizeof(*lg.idle));
    lg.txb = malloc(4 * LG_BUF + LG_PERIOD);
    if (lg.ep < 0 || !lg.c || !lg.idle || !lg.txb) {
        perror("loadgen: setup");
        return 1;
    }
    lg.rxb = lg.txb + LG_BUF;
    lg.xb = lg.rxb + LG_BUF;
    lg.pat = lg.xb + LG_BUF;
    for (size_t i = 0; i < LG_PERIOD + LG_BUF; i++)
        lg.pat[i] = (uint8_t)(i % LG_PERIOD);
    memset(lg.txb, 0x5a, LG_BUF);
    for (unsigned i = 0; i < lg.o.conns; i++) {
        lg.c[i].fd = -1;
        lg.c[i].idx = i;
        lg.c[i].seed = lg_mix(i + 1) ^ 0x75737461636bull;
    }

    lg_run(&lg);
    lg_report(&lg);

    if (lg.o.mode == M_VERIFY) {
        if (lg.ok != lg.o.conns)
            fprintf(stderr,
                    "loadgen verify: FAILED: %" PRIu64 " of %u connections not byte-exact\n",
                    lg.o.conns - lg.ok, lg.o.conns);
        return lg.ok == lg.o.conns && lg_errors(&lg) == 0 ? 0 : 1;
    }
    if (lg_errors(&lg))
        return 1;
    if (lg.bytes == 0) {
        fprintf(stderr, "loadgen %s: nothing was transferred\n", lg_mode_name[lg.o.mode]);
        return 1;
    }
    return 0;
}

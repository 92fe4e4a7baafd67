/*
 * bench_engine.c - the protocol engine's speed on one core, beside the kernel's loopback TCP.
 *
 * Two engines are joined back to back in memory by a direct loopback: each engine's tx()
 * copies the frame into a fixed ring of slots (no allocation per frame) that is fed to the
 * other engine's stk_input(). The engines' clock is the real monotonic clock, so timers run
 * as they would in ustackd. Checksums are claimed as offloaded in both directions, as a NIC
 * would do them (the kernel's loopback skips them too); the MTU is 1500 (BENCH_MTU to
 * change) and there is no TSO, as on a plain DPDK port. The engines allocate through a small
 * recycling pool (their cfg.alloc hook), standing in for ustackd's per-core memory pools.
 *
 * The kernel runs the same workloads over 127.0.0.1 in this process with one thread driving
 * both ends through non-blocking sockets and poll(), like the engine run, so both sides
 * spend one core. Workloads: (1) bulk throughput on one connection, (2) 64-byte
 * request/response transactions with one outstanding, (3) connect + 64-byte request +
 * response + close cycles. Every byte received is checked against what was sent, so a
 * broken engine cannot report a speed.
 *
 * Usage: bench_engine [seconds per measurement]  (or BENCH_SECONDS; default 2).
 * BENCH_JSON=path also writes the results as JSON. BENCH_CPU=n pins to CPU n (default: the
 * CPU the process starts on).
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sched.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include "stk.h"

#define MSG_LEN    64
#define PAT_PERIOD 65521u /* prime, so that no shift of the stream lines up with the pattern */
#define PAT_EXTRA  65536u
#define BULK_BUF   (1u << 20)
#define STALL_NS   (5ull * 1000000000ull) /* no progress for this long: the run failed */

static uint8_t pat[PAT_PERIOD + PAT_EXTRA];
static uint8_t rxbuf[256 * 1024];

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static stk_time_t now_us(void)
{
    return now_ns() / 1000;
}

static void die(const char *what, long v)
{
    fprintf(stderr, "bench_engine: %s (%ld)\n", what, v);
    exit(1);
}

static void pattern_init(void)
{
    for (uint32_t i = 0; i < sizeof(pat); i++) {
        uint32_t x = (i % PAT_PERIOD) * 2654435761u;
        pat[i] = (uint8_t)(x >> 13 ^ x >> 24);
    }
}

/* Checks len received bytes at stream offset off against the pattern. */
static bool pattern_ok(const uint8_t *p, size_t len, uint64_t off)
{
    while (len) {
        size_t n = len < PAT_EXTRA ? len : PAT_EXTRA;
        if (memcmp(p, pat + off % PAT_PERIOD, n) != 0)
            return false;
        p += n;
        len -= n;
        off += n;
    }
    return true;
}

/* The 64-byte message of transaction i: its number, then pattern bytes chosen by it. */
static void msg_make(uint8_t *m, uint64_t i)
{
    memcpy(m, &i, sizeof(i));
    memcpy(m + sizeof(i), pat + (i * 977) % PAT_PERIOD, MSG_LEN - sizeof(i));
}

/* ---- A recycling allocator for the engines ------------------------------------------- */

/* ustackd will give each core a memory pool; plain malloc is not a fair stand-in, because
 * glibc returns freed 256 KiB socket buffers to the system (brk trim) and faults them back in
 * on the next connection, which dominated connect/close cycles in profiles. This keeps freed
 * blocks by exact size for reuse, as a pool would. */
#define POOL_SIZES 8
#define POOL_DEPTH 256

struct pool {
    struct {
        size_t size;
        unsigned n;
        void *free[POOL_DEPTH];
    } cls[POOL_SIZES];
};

static void *pool_alloc(void *ctx, size_t size)
{
    struct pool *p = ctx;
    for (int i = 0; i < POOL_SIZES; i++)
        if (p->cls[i].size == size && p->cls[i].n)
            return p->cls[i].free[--p->cls[i].n];
    return malloc(size);
}

static void pool_free(void *ctx, void *ptr, size_t size)
{
    struct pool *p = ctx;
    for (int i = 0; i < POOL_SIZES; i++) {
        if (p->cls[i].size == 0)
            p->cls[i].size = size;
        if (p->cls[i].size == size) {
            if (p->cls[i].n < POOL_DEPTH) {
                p->cls[i].free[p->cls[i].n++] = ptr;
                return;
            }
            break;
        }
    }
    free(ptr);
}

static void pool_fini(struct pool *p)
{
    for (int i = 0; i < POOL_SIZES; i++)
        while (p->cls[i].n)
            free(p->cls[i].free[--p->cls[i].n]);
}

/* ---- Direct loopback between two engines ---------------------------------------------- */

#define LO_SLOTS 4096u /* power of two */
#define LO_SLOT  9216u /* room for a 9000-byte MTU frame */

struct lo_q {
    uint8_t *buf; /* LO_SLOTS slots of LO_SLOT bytes */
    uint32_t len[LO_SLOTS];
    uint32_t head, tail;
};

struct lo;
struct lo_port {
    struct lo *lo;
    int side;
};

struct lo {
    struct stk_engine *eng[2];
    struct lo_q q[2]; /* q[i]: frames on their way to engine i */
    struct lo_port port[2];
    struct pool pool[2];
    uint64_t full_drops;
};

static int lo_tx(void *ctx, const struct stk_iov *iov, int n, const struct stk_txmeta *meta)
{
    struct lo_port *p = ctx;
    struct lo_q *q = &p->lo->q[1 - p->side];
    (void)meta;
    if (q->head - q->tail == LO_SLOTS) {
        p->lo->full_drops++;
        return -ENOBUFS;
    }
    uint8_t *slot = q->buf + (size_t)(q->head % LO_SLOTS) * LO_SLOT;
    size_t len = 0;
    for (int i = 0; i < n; i++) {
        if (iov[i].len > LO_SLOT - len)
            die("frame larger than a slot", (long)(len + iov[i].len));
        memcpy(slot + len, iov[i].base, iov[i].len);
        len += iov[i].len;
    }
    q->len[q->head % LO_SLOTS] = (uint32_t)len;
    q->head++;
    return 0;
}

static void lo_create(struct lo *lo, uint32_t bufsize, uint16_t mtu)
{
    memset(lo, 0, sizeof(*lo));
    /* Both queues exist before either engine does: creating one sends a gratuitous ARP. */
    for (int side = 0; side < 2; side++) {
        lo->q[side].buf = malloc((size_t)LO_SLOTS * LO_SLOT);
        if (!lo->q[side].buf)
            die("out of memory", 0);
    }
    for (int side = 0; side < 2; side++) {
        lo->port[side] = (struct lo_port){.lo = lo, .side = side};
        struct stk_config cfg = {0};
        uint8_t mac[6] = {0x02, 0, 0, 0, 0, (uint8_t)(side + 1)};
        memcpy(cfg.mac, mac, 6);
        cfg.ip = 0xc6120001u + (uint32_t)side; /* 198.18.0.1 and .2 */
        cfg.prefix = 24;
        cfg.mtu = mtu;
        for (int i = 0; i < 16; i++)
            cfg.secret[i] = (uint8_t)(i * 31 + side);
        cfg.io_ctx = &lo->port[side];
        cfg.tx = lo_tx;
        cfg.tx_offloads = STK_TX_IP_CSUM | STK_TX_TCP_CSUM;
        /* The widest ephemeral range, as many cycles leave their port in TIME-WAIT. */
        cfg.port_lo = 1024;
        cfg.port_hi = 65535;
        cfg.sndbuf = bufsize;
        cfg.rcvbuf = bufsize;
        cfg.mem_ctx = &lo->pool[side];
        cfg.alloc = pool_alloc;
        cfg.free = pool_free;
        int rc = stk_engine_create(&cfg, now_us(), &lo->eng[side]);
        if (rc)
            die("stk_engine_create", rc);
    }
}

static void lo_destroy(struct lo *lo)
{
    for (int side = 0; side < 2; side++) {
        stk_engine_destroy(lo->eng[side]);
        pool_fini(&lo->pool[side]);
        free(lo->q[side].buf);
    }
}

/* Delivers frames until both directions are empty, running timers that are due. */
static void lo_pump(struct lo *lo)
{
    stk_time_t now = now_us();
    for (;;) {
        bool moved = false;
        for (int side = 0; side < 2; side++) {
            struct lo_q *q = &lo->q[side];
            /* The engine fed here transmits only into the other queue, so the slot stays
             * valid while stk_input reads it. */
            while (q->tail != q->head) {
                uint32_t i = q->tail % LO_SLOTS;
                stk_input(lo->eng[side], now, q->buf + (size_t)i * LO_SLOT, q->len[i],
                          STK_RX_IP_CSUM_OK | STK_RX_L4_CSUM_OK);
                q->tail++;
                moved = true;
            }
        }
        for (int side = 0; side < 2; side++)
            if (stk_next_timer(lo->eng[side]) <= now)
                stk_poll(lo->eng[side], now);
        if (!moved && lo->q[0].tail == lo->q[0].head && lo->q[1].tail == lo->q[1].head)
            return;
    }
}

static int eng_state(struct stk_engine *e, int sd)
{
    int st = -1;
    stk_getopt(e, sd, STK_SO_STATE, &st);
    return st;
}

static int eng_listen(struct stk_engine *e, uint16_t port)
{
    int l = stk_socket(e, NULL);
    struct stk_sockaddr a = {.ip = 0, .port = port};
    if (l < 0 || stk_bind(e, l, &a) != 0 || stk_listen(e, l, 4096) != 0)
        die("engine listen", l);
    return l;
}

/* Opens a connection A -> B:port; returns the client sd and the accepted sd in *ssd. */
static int eng_connect(struct lo *lo, int l, uint16_t port, bool nodelay, int *ssd)
{
    struct stk_engine *a = lo->eng[0], *b = lo->eng[1];
    int c = stk_socket(a, NULL);
    if (c < 0)
        die("stk_socket", c);
    if (nodelay)
        stk_setopt(a, now_us(), c, STK_TCP_NODELAY, 1);
    struct stk_sockaddr to = {.ip = 0xc6120002u, .port = port};
    int rc = stk_connect(a, now_us(), c, &to);
    if (rc == -EADDRNOTAVAIL) {
        /* No ephemeral port left: the caller ends the measurement and says so. */
        stk_close(a, now_us(), c);
        return -1;
    }
    if (rc != -EINPROGRESS)
        die("stk_connect", rc);
    uint64_t start = now_ns();
    int s = -EAGAIN;
    while (s < 0 || eng_state(a, c) != STK_TCP_ESTABLISHED) {
        lo_pump(lo);
        if (s < 0) {
            s = stk_accept(b, now_us(), l, NULL, NULL);
            if (s < 0 && s != -EAGAIN)
                die("stk_accept", s);
        }
        if (now_ns() - start > STALL_NS)
            die("engine handshake stalled", eng_state(a, c));
    }
    if (nodelay)
        stk_setopt(b, now_us(), s, STK_TCP_NODELAY, 1);
    *ssd = s;
    return c;
}

/* Sends all of m (a few bytes: fits the send buffer once acked data is freed). */
static void eng_send_all(struct lo *lo, struct stk_engine *e, int sd, const uint8_t *m, size_t len)
{
    uint64_t start = now_ns();
    while (len) {
        ssize_t r = stk_send(e, now_us(), sd, m, len, 0);
        if (r > 0) {
            m += r;
            len -= (size_t)r;
            continue;
        }
        if (r != -EAGAIN)
            die("stk_send", (long)r);
        lo_pump(lo);
        if (now_ns() - start > STALL_NS)
            die("engine send stalled", 0);
    }
}

/* Receives exactly len bytes, pumping the loopback while none are there. */
static void eng_recv_all(struct lo *lo, struct stk_engine *e, int sd, uint8_t *m, size_t len)
{
    uint64_t start = now_ns();
    while (len) {
        ssize_t r = stk_recv(e, now_us(), sd, m, len, 0);
        if (r > 0) {
            m += r;
            len -= (size_t)r;
            continue;
        }
        if (r != -EAGAIN)
            die("stk_recv", (long)r);
        lo_pump(lo);
        if (now_ns() - start > STALL_NS)
            die("engine receive stalled", 0);
    }
}

struct result {
    double value;   /* in the workload's unit */
    uint64_t bytes; /* verified payload bytes (bulk) or transactions */
};

static struct result eng_bulk(double secs, uint16_t mtu)
{
    struct lo lo;
    lo_create(&lo, BULK_BUF, mtu);
    struct stk_engine *a = lo.eng[0], *b = lo.eng[1];
    int l = eng_listen(b, 5001), s;
    int c = eng_connect(&lo, l, 5001, false, &s);
    if (c < 0)
        die("bulk: no ephemeral port", c);
    uint64_t sent = 0, rcvd = 0, rcvd_at_end = 0;
    uint64_t t0 = now_ns(), end = t0 + (uint64_t)(secs * 1e9), t1 = 0, last_progress = t0;
    bool eof = false, shut = false;
    while (!eof) {
        uint64_t t = now_ns();
        if (!shut && t >= end) {
            /* The timed part is over: what arrived so far is the result; the rest is
             * drained only to prove that every byte sent arrives intact. */
            t1 = t;
            rcvd_at_end = rcvd;
            if (stk_shutdown(a, now_us(), c, STK_SHUT_WR) != 0)
                die("stk_shutdown", 0);
            shut = true;
        }
        while (!shut) {
            ssize_t r = stk_send(a, t / 1000, c, pat + sent % PAT_PERIOD, PAT_EXTRA, 0);
            if (r == -EAGAIN)
                break;
            if (r <= 0)
                die("stk_send", (long)r);
            sent += (uint64_t)r;
        }
        lo_pump(&lo);
        struct stk_iov iov[2];
        int n = stk_recv_peek(b, s, iov);
        size_t got = 0;
        for (int i = 0; i < n; i++) {
            if (!pattern_ok(iov[i].base, iov[i].len, rcvd + got))
                die("bulk: received bytes differ from those sent at offset", (long)(rcvd + got));
            got += iov[i].len;
        }
        if (got) {
            stk_recv_consume(b, now_us(), s, got);
            rcvd += got;
            last_progress = t;
        } else if (shut) {
            uint8_t x;
            ssize_t r = stk_recv(b, now_us(), s, &x, 1, 0);
            if (r == 0)
                eof = true;
            else if (r != -EAGAIN)
                die("bulk: unexpected data or error after the last byte", (long)r);
        }
        if (t - last_progress > STALL_NS)
            die("bulk: engine transfer stalled at byte", (long)rcvd);
    }
    if (rcvd != sent)
        die("bulk: bytes received differ from bytes sent", (long)(sent - rcvd));
    stk_close(a, now_us(), c);
    stk_close(b, now_us(), s);
    lo_pump(&lo);
    lo_destroy(&lo);
    return (struct result){rcvd_at_end * 8.0 / ((double)(t1 - t0) / 1e9) / 1e9, rcvd_at_end};
}

static struct result eng_rr(double secs, uint16_t mtu)
{
    struct lo lo;
    lo_create(&lo, 0, mtu);
    struct stk_engine *a = lo.eng[0], *b = lo.eng[1];
    int l = eng_listen(b, 5002), s;
    int c = eng_connect(&lo, l, 5002, true, &s);
    if (c < 0)
        die("rr: no ephemeral port", c);
    uint8_t m[MSG_LEN], r[MSG_LEN];
    uint64_t n = 0, t0 = now_ns(), end = t0 + (uint64_t)(secs * 1e9), t = t0;
    for (; t < end; n++) {
        msg_make(m, n);
        eng_send_all(&lo, a, c, m, MSG_LEN);
        lo_pump(&lo);
        eng_recv_all(&lo, b, s, r, MSG_LEN);
        eng_send_all(&lo, b, s, r, MSG_LEN);
        lo_pump(&lo);
        eng_recv_all(&lo, a, c, r, MSG_LEN);
        if (memcmp(m, r, MSG_LEN) != 0)
            die("rr: the echo differs from the request", (long)n);
        if ((n & 15) == 0)
            t = now_ns();
    }
    t = now_ns();
    stk_close(a, now_us(), c);
    stk_close(b, now_us(), s);
    lo_pump(&lo);
    lo_destroy(&lo);
    return (struct result){(double)n / ((double)(t - t0) / 1e9), n};
}

/* Set when the engine ran out of ephemeral ports during the connect/close cycles. */
static bool ports_out;

static struct result eng_crr(double secs, uint16_t mtu)
{
    struct lo lo;
    lo_create(&lo, 0, mtu);
    struct stk_engine *a = lo.eng[0], *b = lo.eng[1];
    int l = eng_listen(b, 5003);
    uint8_t m[MSG_LEN], r[MSG_LEN];
    uint64_t n = 0, t0 = now_ns(), end = t0 + (uint64_t)(secs * 1e9), t = t0;
    for (; t < end; n++) {
        int s;
        int c = eng_connect(&lo, l, 5003, true, &s);
        if (c < 0) {
            ports_out = true;
            break;
        }
        msg_make(m, n);
        eng_send_all(&lo, a, c, m, MSG_LEN);
        lo_pump(&lo);
        eng_recv_all(&lo, b, s, r, MSG_LEN);
        eng_send_all(&lo, b, s, r, MSG_LEN);
        lo_pump(&lo);
        eng_recv_all(&lo, a, c, r, MSG_LEN);
        if (memcmp(m, r, MSG_LEN) != 0)
            die("crr: the echo differs from the request", (long)n);
        /* The client closes first (so TIME-WAIT stays on its side, as with ab or wrk),
         * the server sees EOF and closes too. */
        stk_close(a, now_us(), c);
        lo_pump(&lo);
        uint8_t x;
        uint64_t start = now_ns();
        ssize_t rc;
        while ((rc = stk_recv(b, now_us(), s, &x, 1, 0)) == -EAGAIN) {
            lo_pump(&lo);
            if (now_ns() - start > STALL_NS)
                die("crr: no EOF at the server", (long)n);
        }
        if (rc != 0)
            die("crr: the server expected EOF", (long)rc);
        stk_close(b, now_us(), s);
        lo_pump(&lo);
        t = now_ns();
    }
    stk_close(b, now_us(), l);
    lo_pump(&lo);
    lo_destroy(&lo);
    return (struct result){(double)n / ((double)(t - t0) / 1e9), n};
}

/* ---- The kernel's loopback TCP, one thread, non-blocking sockets ---------------------- */

static void set_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
        die("fcntl", errno);
}

static void set_int(int fd, int level, int opt, int v)
{
    if (setsockopt(fd, level, opt, &v, sizeof(v)) < 0)
        die("setsockopt", errno);
}

static int k_listen(uint16_t *port, int bufsize)
{
    int l = socket(AF_INET, SOCK_STREAM, 0);
    if (l < 0)
        die("socket", errno);
    set_int(l, SOL_SOCKET, SO_REUSEADDR, 1);
    if (bufsize) {
        set_int(l, SOL_SOCKET, SO_SNDBUF, bufsize);
        set_int(l, SOL_SOCKET, SO_RCVBUF, bufsize);
    }
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof(sa);
    if (bind(l, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(l, 4096) < 0 ||
        getsockname(l, (struct sockaddr *)&sa, &sl) < 0)
        die("kernel listen", errno);
    set_nonblock(l);
    *port = ntohs(sa.sin_port);
    return l;
}

static void k_wait(int fd, short ev)
{
    struct pollfd p = {.fd = fd, .events = ev};
    if (poll(&p, 1, (int)(STALL_NS / 1000000)) != 1)
        die("kernel socket stalled", errno);
}

/* Opens a connection to 127.0.0.1:port and accepts it on l. */
static int k_connect(int l, uint16_t port, bool nodelay, int bufsize, int *ssd)
{
    int c = socket(AF_INET, SOCK_STREAM, 0);
    if (c < 0)
        die("socket", errno);
    set_nonblock(c);
    if (nodelay)
        set_int(c, IPPROTO_TCP, TCP_NODELAY, 1);
    if (bufsize) {
        set_int(c, SOL_SOCKET, SO_SNDBUF, bufsize);
        set_int(c, SOL_SOCKET, SO_RCVBUF, bufsize);
    }
    struct sockaddr_in sa = {
        .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK), .sin_port = htons(port)};
    if (connect(c, (struct sockaddr *)&sa, sizeof(sa)) < 0 && errno != EINPROGRESS)
        die("connect", errno);
    int s;
    while ((s = accept(l, NULL, NULL)) < 0) {
        if (errno != EAGAIN)
            die("accept", errno);
        k_wait(l, POLLIN);
    }
    set_nonblock(s);
    if (nodelay)
        set_int(s, IPPROTO_TCP, TCP_NODELAY, 1);
    int err = 0;
    socklen_t el = sizeof(err);
    k_wait(c, POLLOUT);
    if (getsockopt(c, SOL_SOCKET, SO_ERROR, &err, &el) < 0 || err)
        die("kernel connect", err);
    *ssd = s;
    return c;
}

static void k_send_all(int fd, const uint8_t *m, size_t len)
{
    while (len) {
        ssize_t r = send(fd, m, len, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (r > 0) {
            m += r;
            len -= (size_t)r;
        } else if (r < 0 && errno == EAGAIN) {
            k_wait(fd, POLLOUT);
        } else {
            die("send", errno);
        }
    }
}

static void k_recv_all(int fd, uint8_t *m, size_t len)
{
    while (len) {
        ssize_t r = recv(fd, m, len, MSG_DONTWAIT);
        if (r > 0) {
            m += r;
            len -= (size_t)r;
        } else if (r < 0 && errno == EAGAIN) {
            k_wait(fd, POLLIN);
        } else {
            die("recv", r < 0 ? errno : 0);
        }
    }
}

static struct result k_bulk(double secs)
{
    uint16_t port;
    int l = k_listen(&port, BULK_BUF), s;
    int c = k_connect(l, port, false, BULK_BUF, &s);
    uint64_t sent = 0, rcvd = 0, rcvd_at_end = 0;
    uint64_t t0 = now_ns(), end = t0 + (uint64_t)(secs * 1e9), t1 = 0;
    bool eof = false, shut = false;
    while (!eof) {
        uint64_t t = now_ns();
        if (!shut && t >= end) {
            t1 = t;
            rcvd_at_end = rcvd;
            shutdown(c, SHUT_WR);
            shut = true;
        }
        bool progress = false;
        while (!shut) {
            ssize_t r = send(c, pat + sent % PAT_PERIOD, PAT_EXTRA, MSG_DONTWAIT | MSG_NOSIGNAL);
            if (r < 0 && errno == EAGAIN)
                break;
            if (r <= 0)
                die("send", errno);
            sent += (uint64_t)r;
            progress = true;
        }
        for (;;) {
            ssize_t r = recv(s, rxbuf, sizeof(rxbuf), MSG_DONTWAIT);
            if (r < 0 && errno == EAGAIN)
                break;
            if (r < 0)
                die("recv", errno);
            if (r == 0) {
                eof = true;
                break;
            }
            if (!pattern_ok(rxbuf, (size_t)r, rcvd))
                die("kernel bulk: bytes differ at offset", (long)rcvd);
            rcvd += (uint64_t)r;
            progress = true;
        }
        if (!progress && !eof) {
            struct pollfd p[2] = {{.fd = s, .events = POLLIN}, {.fd = c, .events = POLLOUT}};
            if (poll(p, shut ? 1 : 2, (int)(STALL_NS / 1000000)) <= 0)
                die("kernel bulk stalled", errno);
        }
    }
    if (rcvd != sent)
        die("kernel bulk: bytes received differ from bytes sent", (long)(sent - rcvd));
    close(c);
    close(s);
    close(l);
    return (struct result){rcvd_at_end * 8.0 / ((double)(t1 - t0) / 1e9) / 1e9, rcvd_at_end};
}

static struct result k_rr(double secs)
{
    uint16_t port;
    int l = k_listen(&port, 0), s;
    int c = k_connect(l, port, true, 0, &s);
    uint8_t m[MSG_LEN], r[MSG_LEN];
    uint64_t n = 0, t0 = now_ns(), end = t0 + (uint64_t)(secs * 1e9), t = t0;
    for (; t < end; n++) {
        msg_make(m, n);
        k_send_all(c, m, MSG_LEN);
        k_recv_all(s, r, MSG_LEN);
        k_send_all(s, r, MSG_LEN);
        k_recv_all(c, r, MSG_LEN);
        if (memcmp(m, r, MSG_LEN) != 0)
            die("kernel rr: the echo differs", (long)n);
        if ((n & 15) == 0)
            t = now_ns();
    }
    t = now_ns();
    close(c);
    close(s);
    close(l);
    return (struct result){(double)n / ((double)(t - t0) / 1e9), n};
}

static struct result k_crr(double secs)
{
    uint16_t port;
    int l = k_listen(&port, 0);
    uint8_t m[MSG_LEN], r[MSG_LEN];
    uint64_t n = 0, t0 = now_ns(), end = t0 + (uint64_t)(secs * 1e9), t = t0;
    for (; t < end; n++) {
        int s;
        int c = k_connect(l, port, true, 0, &s);
        msg_make(m, n);
        k_send_all(c, m, MSG_LEN);
        k_recv_all(s, r, MSG_LEN);
        k_send_all(s, r, MSG_LEN);
        k_recv_all(c, r, MSG_LEN);
        if (memcmp(m, r, MSG_LEN) != 0)
            die("kernel crr: the echo differs", (long)n);
        close(c);
        uint8_t x;
        ssize_t rc;
        while ((rc = recv(s, &x, 1, MSG_DONTWAIT)) < 0 && errno == EAGAIN)
            k_wait(s, POLLIN);
        if (rc != 0)
            die("kernel crr: the server expected EOF", (long)rc);
        close(s);
        t = now_ns();
    }
    close(l);
    return (struct result){(double)n / ((double)(t - t0) / 1e9), n};
}

/* ---- Reporting ------------------------------------------------------------------------ */

static void cpu_model(char *buf, size_t cap)
{
    snprintf(buf, cap, "unknown");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f)
        return;
    char line[512];
    while (fgets(line, sizeof(line), f)) {
        char *colon = strchr(line, ':');
        if (strncmp(line, "model name", 10) == 0 && colon) {
            colon++;
            while (*colon == ' ' || *colon == '\t')
                colon++;
            colon[strcspn(colon, "\n")] = 0;
            snprintf(buf, cap, "%s", colon);
            break;
        }
    }
    fclose(f);
}

static void git_commit(char *buf, size_t cap)
{
    snprintf(buf, cap, "unknown");
    FILE *p = popen("git rev-parse --short HEAD 2>/dev/null", "r");
    if (!p)
        return;
    char line[64];
    if (fgets(line, sizeof(line), p) && line[0]) {
        line[strcspn(line, "\n")] = 0;
        snprintf(buf, cap, "%s", line);
    }
    pclose(p);
}

struct row {
    const char *name, *json_name, *unit;
    struct result eng, kern;
};

int main(int argc, char **argv)
{
    const char *sec_s = argc > 1 ? argv[1] : getenv("BENCH_SECONDS");
    double secs = sec_s ? atof(sec_s) : 2.0;
    if (!(secs > 0 && secs <= 8))
        die("BENCH_SECONDS must be in (0, 8] so that the run stays under a minute", 0);
    const char *mtu_s = getenv("BENCH_MTU");
    long mtu = mtu_s ? atol(mtu_s) : 1500;
    if (mtu < 576 || mtu > 9000)
        die("BENCH_MTU must be in [576, 9000]", mtu);

    /* One core for everything: both engines, or both kernel socket ends and the kernel's
     * loopback processing (which runs in the sending thread's context). */
    const char *cpu_s = getenv("BENCH_CPU");
    int cpu = cpu_s ? atoi(cpu_s) : sched_getcpu();
    cpu_set_t set;
    CPU_ZERO(&set);
    if (cpu >= 0)
        CPU_SET(cpu, &set);
    bool pinned = cpu >= 0 && sched_setaffinity(0, sizeof(set), &set) == 0;

    char model[256], commit[64];
    cpu_model(model, sizeof(model));
    git_commit(commit, sizeof(commit));
    struct utsname u;
    if (uname(&u) != 0)
        snprintf(u.release, sizeof(u.release), "unknown");
    long nproc = sysconf(_SC_NPROCESSORS_ONLN);

    printf("ustack engine benchmark (commit %s)\n", commit);
    char pin[16] = "none";
    if (pinned)
        snprintf(pin, sizeof(pin), "%d", cpu);
    printf("machine: %s, nproc %ld, kernel %s, pinned to cpu %s\n", model, nproc, u.release, pin);
    printf("each measurement %.1f s; ustack: two engines over a direct in-memory loopback, "
           "MTU %ld, checksums offloaded, no TSO; kernel: 127.0.0.1, one thread, "
           "non-blocking sockets + poll\n\n",
           secs, mtu);
    fflush(stdout);

    pattern_init();
    struct row rows[3] = {
        {.name = "bulk, 1 connection", .json_name = "bulk_gbps", .unit = "Gbit/s"},
        {.name = "64 B request/response", .json_name = "rr_per_s", .unit = "trans/s"},
        {.name = "connect+64 B rr+close", .json_name = "crr_per_s", .unit = "conn/s"},
    };
    rows[0].eng = eng_bulk(secs, (uint16_t)mtu);
    rows[0].kern = k_bulk(secs);
    rows[1].eng = eng_rr(secs, (uint16_t)mtu);
    rows[1].kern = k_rr(secs);
    rows[2].eng = eng_crr(secs, (uint16_t)mtu);
    rows[2].kern = k_crr(secs);

    printf("%-24s %14s %14s %8s\n", "workload", "ustack", "kernel", "ratio");
    for (int i = 0; i < 3; i++) {
        char e[32], k[32];
        snprintf(e, sizeof(e), i == 0 ? "%.2f" : "%.0f", rows[i].eng.value);
        snprintf(k, sizeof(k), i == 0 ? "%.2f" : "%.0f", rows[i].kern.value);
        printf("%-24s %14s %14s %7.2fx   (%s)\n", rows[i].name, e, k,
               rows[i].kern.value > 0 ? rows[i].eng.value / rows[i].kern.value : 0.0, rows[i].unit);
    }

    if (ports_out)
        printf("note: the ustack connect/close run stopped early (result over the time it ran): "
               "stk_connect found no free ephemeral port, TIME-WAIT ports were not recycled\n");

    const char *json = getenv("BENCH_JSON");
    if (json && *json) {
        FILE *f = fopen(json, "w");
        if (!f)
            die("cannot write BENCH_JSON", errno);
        fprintf(f, "{\n  \"commit\": \"%s\",\n  \"cpu\": \"%s\",\n  \"nproc\": %ld,\n", commit,
                model, nproc);
        fprintf(f, "  \"kernel\": \"%s\",\n  \"seconds\": %.3f,\n  \"mtu\": %ld,\n", u.release,
                secs, mtu);
        for (int i = 0; i < 3; i++)
            fprintf(f, "  \"%s\": {\"ustack\": %.3f, \"kernel\": %.3f}%s\n", rows[i].json_name,
                    rows[i].eng.value, rows[i].kern.value, i < 2 ? "," : "");
        fprintf(f, "}\n");
        fclose(f);
    }
    return 0;
}

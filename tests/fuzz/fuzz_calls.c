/*
 * fuzz_calls.c - libFuzzer target for the engine's socket API.
 *
 * Two engines (A = 198.18.0.1, B = 198.18.0.2) are wired back to back through the test
 * wire (tests/lib/wire.h: fake clock, fault injection). The fuzz input is read as a
 * sequence of operations, each an opcode byte followed by the argument bytes it needs
 * (missing bytes read as zero):
 *
 *   socket, bind, listen, connect, accept, send, recv (plain, PEEK), zero-copy
 *   peek+consume, shutdown, close, abort, setsockopt, getsockopt and the other getters,
 *   running the wire for a chosen time (which fires the engines' timers), single wire
 *   steps, fault profiles on either link, and the injection of a frame the wire carried
 *   earlier (a duplicate at an arbitrary later time) or a copy with bytes changed and the
 *   checksums left stale (which the engine must drop).
 *
 * The first two bytes configure the two engines (congestion control, SACK/timestamps/window
 * scaling off, TX offloads) and, together, whether frames due at the same instant are
 * delivered as one receive burst (stk_rx_begin/stk_rx_end: coalesced ACKs). Buffers are small (4-16
 * KiB) so that windows fill quickly.
 *
 * Invariants, beyond "no crash, no sanitizer report, no leak at destroy":
 *   - every stream carries its own identity: its first 4 bytes are a stream number and
 *     byte i beyond is a function of (number, i). The receiver checks every byte it reads
 *     (recv, MSG_PEEK, zero-copy peek) against that, so data is never corrupted, reordered,
 *     duplicated or invented, and never crosses into another connection;
 *   - a stream never delivers more bytes than its sender's send() calls accepted;
 *   - send() never accepts more than asked; recv() never returns more than asked;
 *   - STK_SO_NREAD equals what a large recv(MSG_PEEK) then returns, and a socket with
 *     bytes to read reports STK_EV_IN;
 *   - the zero-copy pieces cover exactly STK_SO_NREAD bytes.
 * Every operation's return value must be a count or a negative errno the API documents
 * (docs/engine-api.md); anything else traps.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pkt.h"
#include "stk.h"
#include "wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FC_SDS      24  /* socket slots tracked per engine */
#define FC_STREAMS  512 /* stream numbers per input */
#define FC_OPS      400 /* bounds the work per input */
#define FC_STEPS    60000
#define FC_SAVED    8    /* frames remembered per direction, for replay */
#define FC_MAXFRAME 1600 /* frames above this are not remembered */
#define FC_IOMAX    20000
#define FC_HDR      4 /* stream number bytes at the start of every stream */

#define FC_CHECK(cond)                                                                             \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_calls: invariant failed at %s:%d: %s\n", __FILE__, __LINE__,     \
                    #cond);                                                                        \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* One socket as the harness tracks it. */
struct fc_sock {
    int sd;             /* -1: slot free */
    uint32_t tx_stream; /* the stream this socket sends (index into fc.sent) */
    uint64_t tx_off;    /* bytes send() accepted so far */
    uint64_t rx_off;    /* bytes recv() consumed so far */
    uint32_t rx_stream; /* learnt from the first FC_HDR bytes received */
};

struct fc_saved {
    uint16_t len;
    uint8_t data[FC_MAXFRAME];
};

struct fc {
    struct wire *w;
    struct fc_sock s[2][FC_SDS];
    uint64_t sent[FC_STREAMS]; /* bytes accepted per stream, kept after close */
    uint32_t nstreams;
    struct fc_saved saved[2][FC_SAVED]; /* per direction, a ring of delivered frames */
    unsigned nsaved[2];
    const uint8_t *in;
    size_t in_len, pos;
    uint8_t buf[FC_IOMAX];
};

static struct fc fc;
static int fc_trace = -1; /* FUZZ_CALLS_TRACE=1 prints every call and its result */

#define FC_TRACE(...)                                                                              \
    do {                                                                                           \
        if (fc_trace > 0)                                                                          \
            fprintf(stderr, __VA_ARGS__);                                                          \
    } while (0)

static uint8_t rd8(void)
{
    return fc.pos < fc.in_len ? fc.in[fc.pos++] : 0;
}

static uint16_t rd16(void)
{
    uint16_t lo = rd8();
    return (uint16_t)(lo | (uint16_t)rd8() << 8);
}

/* Byte i of stream n: the stream number (little endian) first, then a pattern that
 * differs between streams and along the stream. */
static uint8_t stream_byte(uint32_t n, uint64_t i)
{
    if (i < FC_HDR)
        return (uint8_t)(n >> (8 * i));
    uint64_t x = (i + 1) * 0x9e3779b97f4a7c15ull ^ (uint64_t)(n + 1) * 0xc2b2ae3d27d4eb4full;
    return (uint8_t)(x >> 29);
}

static int tap(void *ctx, int dir, stk_time_t t, uint8_t *frame, size_t len)
{
    (void)ctx;
    (void)t;
    if (len <= FC_MAXFRAME) {
        struct fc_saved *s = &fc.saved[dir][fc.nsaved[dir]++ % FC_SAVED];
        memcpy(s->data, frame, len);
        s->len = (uint16_t)len;
    }
    return 0;
}

static struct stk_engine *eng(int side)
{
    return wire_engine(fc.w, side);
}

static stk_time_t now(void)
{
    return fc.w->now;
}

/* A tracked socket chosen by the next byte (side in bit 7), or NULL if that slot is free. */
static struct fc_sock *pick(int *side)
{
    uint8_t b = rd8();
    *side = b >> 7;
    struct fc_sock *s = &fc.s[*side][(b & 0x7f) % FC_SDS];
    return s->sd >= 0 ? s : NULL;
}

static struct fc_sock *free_slot(int side)
{
    for (int i = 0; i < FC_SDS; i++)
        if (fc.s[side][i].sd < 0)
            return &fc.s[side][i];
    return NULL;
}

static void track(struct fc_sock *s, int sd)
{
    FC_CHECK(fc.nstreams < FC_STREAMS);
    s->sd = sd;
    s->tx_stream = fc.nstreams++;
    s->tx_off = 0;
    s->rx_off = 0;
    s->rx_stream = 0;
}

static bool can_track(void)
{
    return fc.nstreams < FC_STREAMS;
}

static void untrack(struct fc_sock *s)
{
    s->sd = -1;
}

/* An errno the API may return at all (a sanity net for garbage return values). */
static bool api_errno(long rc)
{
    switch (-rc) {
    case EAGAIN:
    case EINPROGRESS:
    case EALREADY:
    case EISCONN:
    case ENOTCONN:
    case EINVAL:
    case EBADF:
    case EFAULT:
    case EADDRINUSE:
    case EADDRNOTAVAIL:
    case ECONNREFUSED:
    case ECONNRESET:
    case ETIMEDOUT:
    case ENETUNREACH:
    case EHOSTUNREACH: /* ARP for the next hop failed during SYN-SENT */
    case EPIPE:
    case EMFILE:
    case ENOBUFS:
    case ENOMEM:
    case ENOPROTOOPT:
    case ENOENT:
        return true;
    default:
        fprintf(stderr, "fuzz_calls: unexpected return %ld\n", rc);
        return false;
    }
}

/* Checks n received bytes starting at stream offset off of socket s, learning the stream
 * number from the header as it passes. */
static void check_rx(struct fc_sock *s, uint64_t off, const uint8_t *p, size_t n)
{
    uint32_t stream = s->rx_stream;
    for (size_t i = 0; i < n; i++) {
        uint64_t at = off + i;
        if (at < FC_HDR) {
            /* Only what was consumed is known; a peek may see more of the header. */
            stream = (stream & ~(0xffu << (8 * at))) | (uint32_t)p[i] << (8 * at);
            continue;
        }
        FC_CHECK(stream < fc.nstreams);
        FC_CHECK(p[i] == stream_byte(stream, at));
    }
    if (off + n >= FC_HDR) {
        FC_CHECK(stream < fc.nstreams);
        /* Never more than the sender's send() calls accepted. */
        FC_CHECK(off + n <= fc.sent[stream]);
    }
}

static void learn_rx(struct fc_sock *s, uint64_t off, const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n && off + i < FC_HDR; i++)
        s->rx_stream = (s->rx_stream & ~(0xffu << (8 * (off + i)))) | (uint32_t)p[i]
                                                                          << (8 * (off + i));
}

static struct stk_sockaddr pick_addr(int side, bool for_connect)
{
    static const uint16_t ports[] = {80, 81, 0, 32768, 60999, 1, 65535, 443};
    uint8_t b = rd8();
    struct stk_sockaddr a = {0};
    uint32_t own = side == WIRE_A ? WIRE_IP_A : WIRE_IP_B;
    uint32_t peer = side == WIRE_A ? WIRE_IP_B : WIRE_IP_A;
    switch (b & 7) {
    case 0:
    case 1:
    case 2:
        a.ip = for_connect ? peer : 0;
        break;
    case 3:
        a.ip = own;
        break;
    case 4:
        a.ip = for_connect ? peer : own;
        break;
    case 5:
        a.ip = PKT_IP(198, 18, 0, 77); /* on-link, nobody answers ARP */
        break;
    case 6:
        a.ip = PKT_IP(10, 0, 0, 1); /* off-subnet, no gateway */
        break;
    default:
        a.ip = b & 8 ? 0xffffffffu : 0;
        break;
    }
    a.port = (b >> 4) < 8 ? ports[b >> 4] : (uint16_t)(32768 + rd8());
    return a;
}

static void op_socket(void)
{
    int side = rd8() & 1;
    struct fc_sock *s = free_slot(side);
    if (!s || !can_track())
        return;
    int sd = stk_socket(eng(side), NULL);
    FC_CHECK(sd >= 0 || sd == -EMFILE || sd == -ENOBUFS);
    if (sd >= 0)
        track(s, sd);
}

static void op_bind(void)
{
    int side;
    struct fc_sock *s = pick(&side);
    struct stk_sockaddr a = pick_addr(side, false);
    if (!s)
        return;
    int rc = stk_bind(eng(side), s->sd, &a);
    FC_TRACE("bind %c%d %08x:%u = %d\n", 'A' + side, s->sd, a.ip, a.port, rc);
    FC_CHECK(rc == 0 || api_errno(rc));
}

static void op_listen(void)
{
    int side;
    struct fc_sock *s = pick(&side);
    int backlog = (int)rd8() - 8;
    if (!s)
        return;
    int rc = stk_listen(eng(side), s->sd, backlog);
    FC_TRACE("listen %c%d %d = %d\n", 'A' + side, s->sd, backlog, rc);
    FC_CHECK(rc == 0 || api_errno(rc));
}

static void op_connect(void)
{
    int side;
    struct fc_sock *s = pick(&side);
    struct stk_sockaddr a = pick_addr(side, true);
    if (!s)
        return;
    int rc = stk_connect(eng(side), now(), s->sd, &a);
    FC_TRACE("connect %c%d %08x:%u = %d\n", 'A' + side, s->sd, a.ip, a.port, rc);
    FC_CHECK(rc == -EINPROGRESS || api_errno(rc));
}

static void op_accept(void)
{
    int side;
    struct fc_sock *s = pick(&side);
    if (!s)
        return;
    struct fc_sock *n = free_slot(side);
    if (!n || !can_track())
        return;
    struct stk_sockaddr peer;
    int sd = stk_accept(eng(side), now(), s->sd, NULL, &peer);
    FC_TRACE("accept %c%d = %d\n", 'A' + side, s->sd, sd);
    FC_CHECK(sd >= 0 || api_errno(sd));
    if (sd >= 0) {
        FC_CHECK(sd != s->sd);
        track(n, sd);
    }
}

static void op_send(void)
{
    int side;
    struct fc_sock *s = pick(&side);
    size_t len = rd16() % FC_IOMAX;
    uint8_t fl = rd8();
    if (!s)
        return;
    for (size_t i = 0; i < len; i++)
        fc.buf[i] = stream_byte(s->tx_stream, s->tx_off + i);
    uint32_t flags = (fl & 1 ? STK_MSG_MORE : 0) | (fl & 2 ? STK_MSG_WAITALL : 0);
    ssize_t rc = stk_send(eng(side), now(), s->sd, len || !(fl & 4) ? fc.buf : NULL, len, flags);
    FC_TRACE("send %c%d %zu = %zd\n", 'A' + side, s->sd, len, rc);
    FC_CHECK(rc >= 0 ? (size_t)rc <= len : api_errno(rc));
    if (rc > 0) {
        s->tx_off += (uint64_t)rc;
        fc.sent[s->tx_stream] = s->tx_off;
    }
}

static void op_recv(void)
{
    int side;
    struct fc_sock *s = pick(&side);
    size_t len = rd16() % FC_IOMAX;
    uint8_t fl = rd8();
    if (!s)
        return;
    bool peek = fl & 1;
    int nread = -1;
    int grc = stk_getopt(eng(side), s->sd, STK_SO_NREAD, &nread);
    FC_CHECK(grc == 0 && nread >= 0);
    uint32_t ev = stk_events(eng(side), s->sd);
    if (nread > 0)
        FC_CHECK(ev & STK_EV_IN);
    ssize_t rc = stk_recv(eng(side), now(), s->sd, fc.buf, len,
                          (peek ? STK_MSG_PEEK : 0) | (fl & 2 ? STK_MSG_WAITALL : 0));
    FC_TRACE("recv %c%d %zu%s = %zd\n", 'A' + side, s->sd, len, peek ? " peek" : "", rc);
    FC_CHECK(rc >= 0 ? (size_t)rc <= len : api_errno(rc));
    if (rc > 0) {
        FC_CHECK((size_t)rc == ((size_t)nread < len ? (size_t)nread : len));
        check_rx(s, s->rx_off, fc.buf, (size_t)rc);
        if (!peek) {
            learn_rx(s, s->rx_off, fc.buf, (size_t)rc);
            s->rx_off += (uint64_t)rc;
        }
    } else if (rc == 0 && len > 0) {
        FC_CHECK(nread == 0);
    }
}

static void op_zc(void)
{
    int side;
    struct fc_sock *s = pick(&side);
    uint16_t want = rd16();
    if (!s)
        return;
    int nread = -1;
    FC_CHECK(stk_getopt(eng(side), s->sd, STK_SO_NREAD, &nread) == 0);
    struct stk_iov iov[2];
    int rc = stk_recv_peek(eng(side), s->sd, iov);
    if (rc <= 0) {
        FC_CHECK(rc == 0 || api_errno(rc));
        return;
    }
    FC_CHECK(rc == 1 || rc == 2);
    size_t total = 0;
    for (int i = 0; i < rc; i++) {
        check_rx(s, s->rx_off + total, iov[i].base, iov[i].len);
        total += iov[i].len;
    }
    FC_CHECK(total == (size_t)nread);
    size_t use = want % (total + 2); /* total + 1 must be refused */
    uint64_t off = s->rx_off;
    for (int i = 0; i < rc && off < s->rx_off + use; i++) {
        size_t n = iov[i].len;
        if (off + n > s->rx_off + use)
            n = (size_t)(s->rx_off + use - off);
        learn_rx(s, off, iov[i].base, n);
        off += n;
    }
    int crc = stk_recv_consume(eng(side), now(), s->sd, use);
    if (use > total) {
        FC_CHECK(crc == -EINVAL);
        return;
    }
    FC_CHECK(crc == 0);
    s->rx_off += use;
}

static void op_shutdown(void)
{
    int side;
    struct fc_sock *s = pick(&side);
    int how = rd8() % 4;
    if (!s)
        return;
    int rc = stk_shutdown(eng(side), now(), s->sd, (enum stk_shut)how);
    FC_CHECK(rc == 0 || api_errno(rc));
    if (how == 3)
        FC_CHECK(rc == -EINVAL);
}

static void op_close(bool abort_it)
{
    int side;
    struct fc_sock *s = pick(&side);
    if (!s)
        return;
    int rc = abort_it ? stk_abort(eng(side), now(), s->sd) : stk_close(eng(side), now(), s->sd);
    FC_CHECK(rc == 0);
    /* The sd is gone: every call on it is -EBADF until it is reused. */
    FC_CHECK(stk_getopt(eng(side), s->sd, STK_SO_STATE, &rc) == -EBADF);
    untrack(s);
}

static void op_setopt(void)
{
    static const enum stk_sockopt opts[] = {
        STK_SO_REUSEADDR,     STK_SO_KEEPALIVE, STK_SO_LINGER,  STK_SO_SNDBUF,
        STK_SO_RCVBUF,        STK_TCP_NODELAY,  STK_TCP_CORK,   STK_TCP_KEEPIDLE,
        STK_TCP_KEEPINTVL,    STK_TCP_KEEPCNT,  STK_TCP_MAXSEG, STK_TCP_CONGESTION,
        STK_TCP_DEFER_ACCEPT, STK_SO_ERROR,     STK_SO_STATE,   (enum stk_sockopt)99,
    };
    int side;
    struct fc_sock *s = pick(&side);
    uint8_t o = rd8();
    int16_t v = (int16_t)rd16();
    if (!s)
        return;
    enum stk_sockopt opt = opts[o % (sizeof opts / sizeof opts[0])];
    int val = v;
    if (opt == STK_SO_SNDBUF || opt == STK_SO_RCVBUF)
        val = v < 0 ? v : 4096 << (v % 3); /* keep the rings small */
    int rc = stk_setopt(eng(side), now(), s->sd, opt, val);
    FC_CHECK(rc == 0 || api_errno(rc));
}

static void op_get(void)
{
    int side;
    struct fc_sock *s = pick(&side);
    uint8_t what = rd8();
    if (!s)
        return;
    struct stk_engine *e = eng(side);
    int val = 0, rc;
    struct stk_sockaddr a;
    struct stk_tcp_info ti;
    switch (what % 5) {
    case 0:
        rc = stk_getopt(e, s->sd, (enum stk_sockopt)(1 + what / 5 % 20), &val);
        FC_CHECK(rc == 0 || api_errno(rc));
        break;
    case 1:
        FC_CHECK(stk_getsockname(e, s->sd, &a) == 0);
        break;
    case 2:
        rc = stk_getpeername(e, s->sd, &a);
        FC_CHECK(rc == 0 || rc == -ENOTCONN);
        break;
    case 3:
        FC_CHECK(stk_tcp_info(e, s->sd, &ti) == 0);
        FC_CHECK(ti.state <= STK_TCP_TIME_WAIT);
        break;
    default:
        FC_CHECK(stk_getopt(e, s->sd, STK_SO_STATE, &val) == 0);
        FC_CHECK(val >= STK_TCP_CLOSED && val <= STK_TCP_TIME_WAIT);
        FC_CHECK(stk_getopt(e, s->sd, STK_SO_SNDSPACE, &val) == 0 && val >= 0);
        FC_CHECK(stk_getopt(e, s->sd, STK_SO_NWRITE, &val) == 0 && val >= 0);
        break;
    }
}

static int sum_walk(void *ctx, const struct stk_sock_entry *ent)
{
    (void)ent;
    ++*(unsigned *)ctx;
    return 0;
}

static void op_run(void)
{
    uint8_t b = rd8();
    /* 1 us .. ~2 minutes, roughly exponential so that all timers are reachable. */
    stk_time_t dt = (stk_time_t)(1 + (b & 0x1f)) << (b >> 5) * 3;
    FC_TRACE("run %llu us\n", (unsigned long long)dt);
    if (wire_run_for(fc.w, dt) == -ELOOP)
        fc.pos = fc.in_len; /* the step budget is spent: end the input */
}

static void op_steps(void)
{
    int n = rd8() % 16;
    for (int i = 0; i < n; i++)
        if (wire_step(fc.w) <= 0)
            break;
}

static void op_fault(void)
{
    uint8_t b = rd8();
    struct wire_fault *f = wire_fault(fc.w, b & 1);
    switch ((b >> 1) % 8) {
    case 0:
        memset(f, 0, sizeof *f);
        break;
    case 1:
        f->loss = (b >> 4) / 20.0;
        break;
    case 2:
        f->dup = (b >> 4) / 16.0;
        break;
    case 3:
        f->corrupt = (b >> 4) / 16.0;
        break;
    case 4:
        f->reorder = (b >> 4) / 16.0;
        break;
    case 5:
        f->delay_us = (uint32_t)(b >> 4) * 5000;
        f->jitter_us = (uint32_t)(b >> 4) * 1000;
        break;
    case 6:
        f->down_from = now();
        f->down_until = now() + (stk_time_t)(b >> 4) * 500000;
        break;
    default:
        f->tx_fail = (b >> 4) / 20.0;
        break;
    }
}

static void op_inject(void)
{
    uint8_t b = rd8();
    uint8_t at = rd8(), val = rd8();
    int dir = b & 1;
    unsigned n = fc.nsaved[dir] < FC_SAVED ? fc.nsaved[dir] : FC_SAVED;
    if (n == 0)
        return;
    struct fc_saved *s = &fc.saved[dir][(b >> 1) % n];
    uint8_t frame[FC_MAXFRAME];
    memcpy(frame, s->data, s->len);
    if (b & 0x80) {
        /* Change one byte past Ethernet without fixing any checksum: the IP or TCP
         * checksum no longer matches (one changed byte always shows in a ones' complement
         * sum), so the engine must drop it - or, if the byte was in a field the checksum
         * does not cover, handle it as any other frame. */
        size_t i = PKT_ETH_HLEN + at % (s->len - PKT_ETH_HLEN);
        frame[i] ^= val | 1;
    }
    (void)wire_inject(fc.w, dir, frame, s->len);
}

static void configure(struct stk_config *cfg, uint8_t b)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->max_socks = 32;
    cfg->sndbuf = 4096u << (b & 1) * 2;
    cfg->rcvbuf = 4096u << (b >> 1 & 1) * 2;
    cfg->cc = b & 4 ? STK_CC_CUBIC : STK_CC_NEWRENO;
    cfg->no_sack = b >> 3 & 1;
    cfg->no_ts = b >> 4 & 1;
    cfg->no_ws = b >> 5 & 1;
    if (b & 0x40)
        cfg->tx_offloads = STK_TX_IP_CSUM | STK_TX_TCP_CSUM | STK_TX_TSO;
    cfg->msl_us = b & 0x80 ? 1000000 : 0; /* short TIME-WAIT sometimes */
    cfg->port_lo = 32768;
    cfg->port_hi = b & 0x80 ? 32775 : 32768 + 255; /* a few ports: exhaustion and reuse */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    memset(&fc, 0, sizeof fc);
    fc.in = data;
    fc.in_len = size;
    for (int side = 0; side < 2; side++)
        for (int i = 0; i < FC_SDS; i++)
            fc.s[side][i].sd = -1;

    struct stk_config cfg[2];
    uint8_t c0 = rd8(), c1 = rd8();
    configure(&cfg[0], c0);
    configure(&cfg[1], c1);
    struct wire_opts o = {.seed = (uint64_t)c0 << 8 | c1, .step_limit = FC_STEPS};
    o.bursts = ((c0 ^ c1) & 0x81) == 0x81; /* frames due together: one receive burst */
    o.cfg[0] = &cfg[0];
    o.cfg[1] = &cfg[1];
    if (wire_create(&fc.w, &o) != 0)
        return 0;
    wire_set_tap(fc.w, tap, NULL);

    if (fc_trace < 0)
        fc_trace = getenv("FUZZ_CALLS_TRACE") != NULL;
    for (int ops = 0; ops < FC_OPS && fc.pos < fc.in_len; ops++) {
        switch (rd8() % 20) {
        case 0:
        case 1:
            op_socket();
            break;
        case 2:
            op_bind();
            break;
        case 3:
            op_listen();
            break;
        case 4:
            op_connect();
            break;
        case 5:
            op_accept();
            break;
        case 6:
        case 7:
            op_send();
            break;
        case 8:
            op_recv();
            break;
        case 9:
            op_zc();
            break;
        case 10:
            op_shutdown();
            break;
        case 11:
            op_close(false);
            break;
        case 12:
            op_close(true);
            break;
        case 13:
            op_setopt();
            break;
        case 14:
            op_get();
            break;
        case 15:
        case 16:
            op_run();
            break;
        case 17:
            op_steps();
            break;
        case 18:
            op_fault();
            break;
        default:
            op_inject();
            break;
        }
    }

    /* Drain: a clean link for a while, then read what every socket has, checking it. */
    memset(wire_fault(fc.w, WIRE_A_TO_B), 0, sizeof(struct wire_fault));
    memset(wire_fault(fc.w, WIRE_B_TO_A), 0, sizeof(struct wire_fault));
    (void)wire_run_for(fc.w, 2 * STK_US_PER_S);
    for (int side = 0; side < 2; side++) {
        for (int i = 0; i < FC_SDS; i++) {
            struct fc_sock *s = &fc.s[side][i];
            if (s->sd < 0)
                continue;
            ssize_t rc;
            while ((rc = stk_recv(eng(side), now(), s->sd, fc.buf, sizeof fc.buf, 0)) > 0) {
                check_rx(s, s->rx_off, fc.buf, (size_t)rc);
                learn_rx(s, s->rx_off, fc.buf, (size_t)rc);
                s->rx_off += (uint64_t)rc;
            }
            FC_CHECK(rc == 0 || api_errno(rc));
        }
    }
    unsigned walked = 0;
    (void)stk_sock_walk(eng(WIRE_A), sum_walk, &walked);
    (void)stk_sock_walk(eng(WIRE_B), sum_walk, &walked);
    wire_destroy(fc.w);
    return 0;
}

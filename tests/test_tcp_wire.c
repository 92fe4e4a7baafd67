/*
 * test_tcp_wire.c - two engines joined by the in-memory wire: bulk transfers that must
 * arrive byte-exact through loss, reordering, duplication, corruption and a zero-window
 * reader, and thousands of short connections that must all complete.
 */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pkt.h"
#include "wire.h"

#define MB (1024u * 1024u)

/* Sanitizer builds run the same tests on less data: they are about memory errors, and the
 * plain build already proves the full sizes. */
#if defined(__SANITIZE_ADDRESS__)
#define SCALE 8
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SCALE 8
#endif
#endif
#ifndef SCALE
#define SCALE 1
#endif

/* The byte at offset i of a stream with a given seed: cheap, and any shift, loss or
 * duplication of stream bytes shows up as a mismatch. */
static uint8_t pattern(uint32_t seed, uint64_t i)
{
    uint64_t x = (i >> 3) * 0x9E3779B97F4A7C15ull ^ seed;
    x ^= x >> 29;
    x *= 0xBF58476D1CE4E5B9ull;
    x ^= x >> 32;
    return (uint8_t)(x >> ((i & 7) * 8));
}

/* One direction of application traffic over one connection. */
struct stream {
    struct stk_engine *tx_eng, *rx_eng;
    int tx_sd, rx_sd;
    uint32_t seed;
    uint64_t total, sent, received;
    uint64_t mismatches;
    bool fin_sent, eof_seen;
    bool reader_paused;
};

static void dump_counters(struct wire *w)
{
    for (int side = 0; side < 2; side++) {
        const struct stk_counters *c = stk_counters(wire_engine(w, side));
        fprintf(stderr,
                "side %d: paws %llu outwin %llu csum %llu ack %llu ooo_full %llu rcvbuf %llu hdr "
                "%llu opts %llu\n",
                side, (unsigned long long)c->tcp_drop_paws, (unsigned long long)c->tcp_drop_outwin,
                (unsigned long long)c->tcp_drop_csum, (unsigned long long)c->tcp_drop_ack,
                (unsigned long long)c->tcp_drop_ooo_full, (unsigned long long)c->tcp_drop_rcvbuf,
                (unsigned long long)c->tcp_drop_hdr, (unsigned long long)c->tcp_drop_opts);
        fprintf(
            stderr,
            "  arp in %llu out %llu req %llu qdrop %llu eth_out %llu tcp_out %llu tx_fail %llu\n",
            (unsigned long long)c->arp_in, (unsigned long long)c->arp_out,
            (unsigned long long)c->arp_requests, (unsigned long long)c->arp_queue_drop,
            (unsigned long long)c->eth_out, (unsigned long long)c->tcp_out,
            (unsigned long long)c->tx_fail);
    }
}

static void stream_pump(struct wire *w, struct stream *s)
{
    uint8_t buf[16384];
    while (s->sent < s->total) {
        size_t n = (size_t)(s->total - s->sent);
        if (n > sizeof(buf))
            n = sizeof(buf);
        for (size_t i = 0; i < n; i++)
            buf[i] = pattern(s->seed, s->sent + i);
        ssize_t r = stk_send(s->tx_eng, w->now, s->tx_sd, buf, n, 0);
        if (r <= 0)
            break;
        s->sent += (uint64_t)r;
    }
    if (s->sent == s->total && !s->fin_sent) {
        ck_assert_int_eq(stk_shutdown(s->tx_eng, w->now, s->tx_sd, STK_SHUT_WR), 0);
        s->fin_sent = true;
    }
    while (!s->reader_paused && !s->eof_seen) {
        ssize_t r = stk_recv(s->rx_eng, w->now, s->rx_sd, buf, sizeof(buf), 0);
        if (r == 0) {
            s->eof_seen = true;
            break;
        }
        if (r < 0) {
            if (r != -EAGAIN)
                dump_counters(w);
            ck_assert_int_eq(r, -EAGAIN);
            break;
        }
        for (ssize_t i = 0; i < r; i++)
            if (buf[i] != pattern(s->seed, s->received + (uint64_t)i))
                s->mismatches++;
        s->received += (uint64_t)r;
    }
}

struct duplex {
    struct wire *w;
    struct stream s[2];
};

static int duplex_done(void *ctx)
{
    struct duplex *d = ctx;
    stream_pump(d->w, &d->s[0]);
    stream_pump(d->w, &d->s[1]);
    return d->s[0].eof_seen && d->s[1].eof_seen;
}

static struct wire *make_wire(uint64_t seed, const struct stk_config *ca,
                              const struct stk_config *cb)
{
    struct wire *w = NULL;
    struct wire_opts o = {.seed = seed};
    o.cfg[0] = ca;
    o.cfg[1] = cb;
    o.pcap = getenv("USTACK_TEST_PCAP");
    ck_assert_int_eq(wire_create(&w, &o), 0);
    return w;
}

static int connected_pred(void *ctx)
{
    int *flags = ctx;
    return *flags;
}

/* Opens a connection A -> B (B listening on port 80); returns the two socket ids. */
static void connect_pair(struct wire *w, int *a_sd, int *b_sd)
{
    struct stk_engine *a = wire_engine(w, WIRE_A), *b = wire_engine(w, WIRE_B);
    int l = stk_socket(b, NULL);
    ck_assert_int_ge(l, 0);
    struct stk_sockaddr addr = {.ip = 0, .port = 80};
    ck_assert_int_eq(stk_bind(b, l, &addr), 0);
    ck_assert_int_eq(stk_listen(b, l, 128), 0);
    int c = stk_socket(a, NULL);
    struct stk_sockaddr to = {.ip = WIRE_IP_B, .port = 80};
    ck_assert_int_eq(stk_connect(a, w->now, c, &to), -EINPROGRESS);
    int acc = -1;
    for (int i = 0; i < 100000 && acc < 0; i++) {
        acc = stk_accept(b, w->now, l, NULL, NULL);
        if (acc >= 0)
            break;
        ck_assert_int_eq(acc, -EAGAIN);
        ck_assert_int_ge(wire_step(w), 0);
    }
    ck_assert_int_ge(acc, 0);
    int done = 0;
    for (int i = 0; i < 100000; i++) {
        int st = -1;
        ck_assert_int_eq(stk_getopt(a, c, STK_SO_STATE, &st), 0);
        if (st == STK_TCP_ESTABLISHED) {
            done = 1;
            break;
        }
        ck_assert_int_ge(wire_step(w), 0);
    }
    ck_assert(connected_pred(&done));
    ck_assert_int_eq(stk_close(b, w->now, l), 0);
    *a_sd = c;
    *b_sd = acc;
}

/* Returns how long the transfers took (simulated time, from after the handshake). */
static stk_time_t run_duplex(struct wire *w, uint64_t bytes_each, stk_time_t max_time)
{
    int a_sd, b_sd;
    connect_pair(w, &a_sd, &b_sd);
    stk_time_t start = w->now;
    struct duplex d = {.w = w};
    d.s[0] = (struct stream){.tx_eng = wire_engine(w, WIRE_A),
                             .rx_eng = wire_engine(w, WIRE_B),
                             .tx_sd = a_sd,
                             .rx_sd = b_sd,
                             .seed = 1,
                             .total = bytes_each};
    d.s[1] = (struct stream){.tx_eng = wire_engine(w, WIRE_B),
                             .rx_eng = wire_engine(w, WIRE_A),
                             .tx_sd = b_sd,
                             .rx_sd = a_sd,
                             .seed = 2,
                             .total = bytes_each};
    int rc = wire_run(w, duplex_done, &d, max_time);
    stk_time_t took = w->now - start;
    if (rc)
        fprintf(stderr, "seed %llu: A->B %llu/%llu B->A %llu/%llu at t=%llu us\n",
                (unsigned long long)w->seed, (unsigned long long)d.s[0].received,
                (unsigned long long)bytes_each, (unsigned long long)d.s[1].received,
                (unsigned long long)bytes_each, (unsigned long long)w->now);
    if (rc)
        dump_counters(w);
    ck_assert_int_eq(rc, 0);
    for (int i = 0; i < 2; i++) {
        ck_assert_uint_eq(d.s[i].received, bytes_each);
        ck_assert_uint_eq(d.s[i].mismatches, 0);
    }
    ck_assert_int_eq(stk_close(wire_engine(w, WIRE_A), w->now, a_sd), 0);
    ck_assert_int_eq(stk_close(wire_engine(w, WIRE_B), w->now, b_sd), 0);
    /* Both sides finish the close: one in TIME-WAIT, then nothing. */
    ck_assert_int_eq(wire_run_for(w, 200 * STK_US_PER_S), 0);
    const struct stk_counters *ca = stk_counters(wire_engine(w, WIRE_A));
    const struct stk_counters *cb = stk_counters(wire_engine(w, WIRE_B));
    for (int s = STK_TCP_LISTEN; s <= STK_TCP_TIME_WAIT; s++) {
        if (ca->conns_by_state[s] || cb->conns_by_state[s])
            fprintf(stderr, "left in %s: A %u B %u\n", stk_state_name((enum stk_tcp_state)s),
                    ca->conns_by_state[s], cb->conns_by_state[s]);
        ck_assert_uint_eq(ca->conns_by_state[s], 0);
        ck_assert_uint_eq(cb->conns_by_state[s], 0);
    }
    return took;
}

START_TEST(test_clean_duplex)
{
    struct wire *w = make_wire(11, NULL, NULL);
    wire_fault(w, WIRE_A_TO_B)->delay_us = 50;
    wire_fault(w, WIRE_B_TO_A)->delay_us = 50;
    run_duplex(w, 50ull * MB / SCALE, 600 * STK_US_PER_S);
    ck_assert_uint_eq(stk_counters(wire_engine(w, WIRE_A))->tcp_retrans, 0);
    wire_destroy(w);
}
END_TEST

/* Both engines leave the payload's checksum to the I/O layer (STK_TX_L4_SUM, as ustackd
 * does without a TCP checksum offload), with corruption on the link: every data segment
 * took that path, each completed checksum equals one computed from scratch, the receivers
 * drop only what the link corrupted, and the bytes arrive intact. */
START_TEST(test_l4sum_duplex)
{
    struct stk_config c = {.tx_offloads = STK_TX_L4_SUM};
    struct wire *w = make_wire(12, &c, &c);
    for (int dir = 0; dir < 2; dir++) {
        wire_fault(w, dir)->delay_us = 100;
        wire_fault(w, dir)->corrupt = _i ? 0.01 : 0;
    }
    run_duplex(w, 8ull * MB / SCALE, 600 * STK_US_PER_S);
    for (int side = 0; side < 2; side++) {
        const struct wire_endpoint *ep = &w->ep[side];
        const struct stk_counters *ctr = stk_counters(ep->eng);
        ck_assert_uint_eq(ep->offload_bad, 0);
        ck_assert_uint_gt(ep->l4sum_frames, 8ull * MB / SCALE / 1460);
        if (_i == 0)
            ck_assert_uint_eq(ctr->tcp_drop_csum, 0);
    }
    wire_destroy(w);
}
END_TEST

static void all_faults(struct wire *w, double loss)
{
    for (int dir = 0; dir < 2; dir++) {
        struct wire_fault *f = wire_fault(w, dir);
        f->loss = loss;
        f->dup = 0.01;
        f->corrupt = 0.01;
        f->reorder = 0.02;
        f->delay_us = 1000;
        f->jitter_us = 200;
    }
}

START_TEST(test_faulty_duplex_cubic)
{
    struct stk_config c = {.cc = STK_CC_CUBIC};
    struct wire *w = make_wire(1000 + (uint64_t)_i, &c, &c);
    all_faults(w, 0.05);
    run_duplex(w, 50ull * MB / SCALE, 3600 * STK_US_PER_S);
    const struct stk_counters *ca = stk_counters(wire_engine(w, WIRE_A));
    ck_assert_uint_gt(ca->tcp_retrans, 0);
    ck_assert_uint_gt(ca->tcp_fast_retrans, 0);
    ck_assert_uint_gt(ca->tcp_drop_csum + ca->ip_drop_csum + ca->eth_drop_dst + ca->eth_drop_type +
                          ca->ip_drop_hdr + ca->ip_drop_dst + ca->tcp_drop_hdr + ca->ip_drop_len +
                          ca->ip_drop_proto + ca->tcp_drop_opts + ca->ip_drop_frag +
                          ca->ip_drop_opts + ca->arp_drop_bad + ca->eth_drop_short,
                      0);
    wire_destroy(w);
}
END_TEST

START_TEST(test_faulty_duplex_newreno_nosack)
{
    struct stk_config c = {.cc = STK_CC_NEWRENO, .no_sack = 1};
    struct wire *w = make_wire(2000 + (uint64_t)_i, &c, &c);
    all_faults(w, 0.05);
    run_duplex(w, 50ull * MB / SCALE / 4, 3600 * STK_US_PER_S);
    ck_assert_uint_gt(stk_counters(wire_engine(w, WIRE_A))->tcp_retrans, 0);
    wire_destroy(w);
}
END_TEST

START_TEST(test_faulty_no_options)
{
    struct stk_config c = {.no_sack = 1, .no_ts = 1, .no_ws = 1};
    struct wire *w = make_wire(3000, &c, &c);
    all_faults(w, 0.02);
    run_duplex(w, 4ull * MB / SCALE, 3600 * STK_US_PER_S);
    wire_destroy(w);
}
END_TEST

START_TEST(test_link_down)
{
    struct wire *w = make_wire(4000, NULL, NULL);
    for (int dir = 0; dir < 2; dir++) {
        wire_fault(w, dir)->delay_us = 500;
        wire_fault(w, dir)->down_from = w->now + 10 * STK_US_PER_MS;
        wire_fault(w, dir)->down_until = w->now + 5010 * STK_US_PER_MS;
    }
    run_duplex(w, 50ull * MB / SCALE, 3600 * STK_US_PER_S);
    ck_assert_uint_gt(stk_counters(wire_engine(w, WIRE_A))->tcp_rto, 0);
    wire_destroy(w);
}
END_TEST

/* The reader stops for a minute: the window closes, the sender probes it, and when the
 * reader resumes every byte arrives. */
START_TEST(test_zero_window_reader)
{
    struct stk_config small = {.rcvbuf = 64 * 1024};
    struct wire *w = make_wire(5000, NULL, &small);
    wire_fault(w, WIRE_A_TO_B)->delay_us = 100;
    wire_fault(w, WIRE_B_TO_A)->delay_us = 100;
    int a_sd, b_sd;
    connect_pair(w, &a_sd, &b_sd);
    struct duplex d = {.w = w};
    d.s[0] = (struct stream){.tx_eng = wire_engine(w, WIRE_A),
                             .rx_eng = wire_engine(w, WIRE_B),
                             .tx_sd = a_sd,
                             .rx_sd = b_sd,
                             .seed = 7,
                             .total = 2 * MB,
                             .reader_paused = true};
    d.s[1] = (struct stream){.tx_eng = wire_engine(w, WIRE_B),
                             .rx_eng = wire_engine(w, WIRE_A),
                             .tx_sd = b_sd,
                             .rx_sd = a_sd,
                             .seed = 8,
                             .total = 0};
    ck_assert_int_eq(wire_run(w, duplex_done, &d, 60 * STK_US_PER_S), -ETIMEDOUT);
    struct stk_tcp_info ti;
    ck_assert_int_eq(stk_tcp_info(wire_engine(w, WIRE_A), a_sd, &ti), 0);
    ck_assert_uint_eq(ti.snd_wnd, 0);
    ck_assert_uint_gt(stk_counters(wire_engine(w, WIRE_A))->tcp_zwp, 2);
    int nread = 0;
    ck_assert_int_eq(stk_getopt(wire_engine(w, WIRE_B), b_sd, STK_SO_NREAD, &nread), 0);
    /* Full, but for what silly window avoidance (RFC 1122 4.2.3.3) would not offer. */
    ck_assert_int_gt(nread, 64 * 1024 - 1460);
    /* The connection survived a minute of probing (B already sent its FIN). */
    int st = 0;
    ck_assert_int_eq(stk_getopt(wire_engine(w, WIRE_A), a_sd, STK_SO_STATE, &st), 0);
    ck_assert_int_eq(st, STK_TCP_CLOSE_WAIT);
    d.s[0].reader_paused = false;
    ck_assert_int_eq(wire_run(w, duplex_done, &d, 120 * STK_US_PER_S), 0);
    ck_assert_uint_eq(d.s[0].received, 2 * MB);
    ck_assert_uint_eq(d.s[0].mismatches, 0);
    wire_destroy(w);
}
END_TEST

/* Many short connections: connect, send a request, get a response, close - N of them, a
 * few at a time, all of which must complete. */
struct shorty {
    struct wire *w;
    int listener;
    int total, started, completed, active;
    struct conn {
        int c_sd, s_sd;
        int phase;
    } conns[16];
};

static int shorty_done(void *ctx)
{
    struct shorty *s = ctx;
    struct stk_engine *a = wire_engine(s->w, WIRE_A), *b = wire_engine(s->w, WIRE_B);
    stk_time_t now = s->w->now;
    for (;;) {
        int sd = stk_accept(b, now, s->listener, NULL, NULL);
        if (sd < 0)
            break;
        /* Server side: read the request, answer, close. */
        for (int i = 0; i < 16; i++) {
            if (s->conns[i].phase > 0 && s->conns[i].s_sd < 0) {
                s->conns[i].s_sd = sd;
                break;
            }
        }
    }
    for (int i = 0; i < 16; i++) {
        struct conn *c = &s->conns[i];
        char buf[256];
        if (c->phase == 0 && s->started < s->total) {
            c->c_sd = stk_socket(a, NULL);
            ck_assert_int_ge(c->c_sd, 0);
            struct stk_sockaddr to = {.ip = WIRE_IP_B, .port = 8080};
            ck_assert_int_eq(stk_connect(a, now, c->c_sd, &to), -EINPROGRESS);
            c->s_sd = -1;
            c->phase = 1;
            s->started++;
        }
        if (c->phase == 1 && stk_send(a, now, c->c_sd, "GET / HTTP/1.0\r\n\r\n", 18, 0) == 18)
            c->phase = 2;
        if (c->phase == 2 && c->s_sd >= 0 && stk_recv(b, now, c->s_sd, buf, sizeof(buf), 0) == 18) {
            ck_assert_int_eq(stk_send(b, now, c->s_sd, "HTTP/1.0 200 OK\r\n\r\nhello", 24, 0), 24);
            ck_assert_int_eq(stk_close(b, now, c->s_sd), 0);
            c->phase = 3;
        }
        if (c->phase == 3) {
            ssize_t r = stk_recv(a, now, c->c_sd, buf, sizeof(buf), 0);
            if (r == 24) {
                ck_assert(memcmp(buf, "HTTP/1.0 200 OK\r\n\r\nhello", 24) == 0);
                c->phase = 4;
            } else {
                ck_assert_int_eq(r, -EAGAIN);
            }
        }
        if (c->phase == 4 && stk_recv(a, now, c->c_sd, buf, sizeof(buf), 0) == 0) {
            ck_assert_int_eq(stk_close(a, now, c->c_sd), 0);
            s->completed++;
            c->phase = 0;
        }
    }
    return s->completed == s->total;
}

static void run_short(struct wire *w, int n)
{
    struct stk_engine *b = wire_engine(w, WIRE_B);
    struct shorty s = {.w = w, .total = n};
    s.listener = stk_socket(b, NULL);
    struct stk_sockaddr addr = {.ip = WIRE_IP_B, .port = 8080};
    ck_assert_int_eq(stk_bind(b, s.listener, &addr), 0);
    ck_assert_int_eq(stk_listen(b, s.listener, 64), 0);
    int rc = wire_run(w, shorty_done, &s, 3600 * STK_US_PER_S);
    if (rc)
        fprintf(stderr, "short connections: %d/%d completed\n", s.completed, n);
    ck_assert_int_eq(rc, 0);
    ck_assert_int_eq(s.completed, n);
    ck_assert_uint_eq(stk_counters(wire_engine(w, WIRE_A))->tcp_active_opens, (uint64_t)n);
}

START_TEST(test_short_connections)
{
    struct wire *w = make_wire(6000, NULL, NULL);
    wire_fault(w, WIRE_A_TO_B)->delay_us = 20;
    wire_fault(w, WIRE_B_TO_A)->delay_us = 20;
    run_short(w, 5000 / SCALE);
    wire_destroy(w);
}
END_TEST

START_TEST(test_short_connections_faulty)
{
    struct wire *w = make_wire(7000, NULL, NULL);
    all_faults(w, 0.03);
    run_short(w, 1000 / SCALE);
    wire_destroy(w);
}
END_TEST

/* Counts the bytes an engine has allocated (cfg.alloc/free hooks). */
struct count_mem {
    size_t live;
};

static void *count_alloc(void *ctx, size_t size)
{
    ((struct count_mem *)ctx)->live += size;
    return malloc(size);
}

static void count_free(void *ctx, void *p, size_t size)
{
    ((struct count_mem *)ctx)->live -= size;
    free(p);
}

/* A connection's rings get their memory with the first byte written into each, not at
 * ESTABLISHED: an idle connection costs its control block only (docs/reliability.md). */
START_TEST(test_lazy_rings)
{
    struct count_mem ma = {0}, mb = {0};
    struct stk_config ca = {.alloc = count_alloc,
                            .free = count_free,
                            .mem_ctx = &ma,
                            .sndbuf = 65536,
                            .rcvbuf = 131072};
    struct stk_config cb = ca;
    cb.mem_ctx = &mb;
    struct wire *w = make_wire(8000, &ca, &cb);
    struct stk_engine *a = wire_engine(w, WIRE_A), *b = wire_engine(w, WIRE_B);
    ck_assert_int_eq(wire_run_for(w, STK_US_PER_S), 0);
    size_t a_idle = ma.live, b_idle = mb.live;
    /* Both ends ESTABLISHED (and B's listener made), and no ring allocated: less than one
     * ring's worth on either side. */
    int c2, s2;
    connect_pair(w, &c2, &s2);
    ck_assert_int_eq(wire_run_for(w, STK_US_PER_S), 0);
    ck_assert_uint_lt(ma.live - a_idle, 65536);
    ck_assert_uint_lt(mb.live - b_idle, 65536);
    int v = 0;
    ck_assert_int_eq(stk_getopt(a, c2, STK_SO_SNDSPACE, &v), 0);
    ck_assert_int_eq(v, 65536); /* the ring's size is known before its memory exists */
    a_idle = ma.live;
    b_idle = mb.live;
    /* One byte A -> B: A's send ring and B's receive ring appear, nothing else. */
    ck_assert_int_eq(stk_send(a, w->now, c2, "x", 1, 0), 1);
    ck_assert_int_eq(wire_run_for(w, STK_US_PER_S), 0);
    ck_assert_uint_eq(ma.live - a_idle, 65536);
    ck_assert_uint_eq(mb.live - b_idle, 131072);
    char ch = 0;
    ck_assert_int_eq(stk_recv(b, w->now, s2, &ch, 1, 0), 1);
    ck_assert_int_eq(ch, 'x');
    /* Zero bytes allocate nothing (and a NULL buffer with them is fine). */
    ck_assert_int_eq(stk_send(b, w->now, s2, NULL, 0, 0), 0);
    ck_assert_uint_eq(mb.live - b_idle, 131072);
    stk_close(a, w->now, c2);
    stk_close(b, w->now, s2);
    ck_assert_int_eq(wire_run_for(w, 200 * STK_US_PER_S), 0);
    wire_destroy(w);
}
END_TEST

/* A router in the middle with a 1200-byte MTU: IPv4 packets larger than that are dropped and
 * answered with ICMP fragmentation needed (RFC 1191), as a router does for DF packets. Both
 * engines must learn the path MTU from it and carry a duplex transfer through byte-exact,
 * with no retransmission timeout (the lost flight is resent at once). */
#define PMTU_MID 1200u

struct pmtu_tap {
    struct wire *w;
    uint64_t too_big[2];
};

static int pmtu_tap_fn(void *ctx, int dir, stk_time_t t, uint8_t *frame, size_t len)
{
    struct pmtu_tap *pt = ctx;
    (void)t;
    if (len < 14 + 20 || frame[12] != 0x08 || frame[13] != 0x00)
        return 0;
    const uint8_t *ip = frame + 14;
    size_t total = (size_t)(ip[2] << 8 | ip[3]);
    if (total <= PMTU_MID)
        return 0;
    pt->too_big[dir]++;
    /* Type 3 code 4 back to the sender, next-hop MTU in the low half of the second word,
     * quoting the header and 8 bytes of the packet, from the receiver's side of the link. */
    struct pkt_icmp_spec is = {.type = 3,
                               .code = 4,
                               .seq = PMTU_MID,
                               .payload = ip,
                               .payload_len = 28,
                               .src_ip = PKT_IP(ip[16], ip[17], ip[18], ip[19]),
                               .dst_ip = PKT_IP(ip[12], ip[13], ip[14], ip[15])};
    memcpy(is.src_mac, frame, 6);
    memcpy(is.dst_mac, frame + 6, 6);
    uint8_t f[128];
    size_t n = pkt_build_icmp(&is, f, sizeof(f));
    ck_assert_uint_gt(n, 0);
    ck_assert_int_eq(wire_inject(pt->w, 1 - dir, f, n), 0);
    return 1;
}

START_TEST(test_path_mtu)
{
    struct wire *w = make_wire(5000, NULL, NULL);
    struct pmtu_tap pt = {.w = w};
    wire_set_tap(w, pmtu_tap_fn, &pt);
    for (int dir = 0; dir < 2; dir++)
        wire_fault(w, dir)->delay_us = 500;
    run_duplex(w, 4ull * MB / SCALE, 600 * STK_US_PER_S);
    for (int side = 0; side < 2; side++) {
        const struct stk_counters *c = stk_counters(wire_engine(w, side));
        ck_assert_uint_gt(pt.too_big[side], 0);
        ck_assert_uint_le(pt.too_big[side], 64); /* only the first flight */
        ck_assert_uint_eq(c->tcp_pmtu_updates, 1);
        ck_assert_uint_eq(c->tcp_rto, 0);
    }
    wire_destroy(w);
}
END_TEST

/* Frames due together arrive as one receive burst (as ustackd's loop hands them over): the
 * same transfers complete intact, a clean one with fewer segments than frame by frame (one
 * ACK per burst instead of one per two segments), a faulty one with loss, reordering,
 * duplication and corruption too. */
START_TEST(test_bursts)
{
    uint64_t segs[2];
    for (int b = 0; b < 2; b++) {
        struct wire *w = make_wire(12, NULL, NULL);
        w->bursts = b;
        wire_fault(w, WIRE_A_TO_B)->delay_us = 50;
        wire_fault(w, WIRE_B_TO_A)->delay_us = 50;
        run_duplex(w, 8ull * MB / SCALE, 600 * STK_US_PER_S);
        segs[b] = stk_counters(wire_engine(w, WIRE_A))->tcp_out +
                  stk_counters(wire_engine(w, WIRE_B))->tcp_out;
        ck_assert_uint_eq(stk_counters(wire_engine(w, WIRE_A))->tcp_retrans, 0);
        wire_destroy(w);
    }
    fprintf(stderr, "bursts: %llu segments frame by frame, %llu in bursts\n",
            (unsigned long long)segs[0], (unsigned long long)segs[1]);
    ck_assert_uint_lt(segs[1], segs[0] * 9 / 10);

    struct stk_config c = {.cc = STK_CC_CUBIC};
    struct wire *w = make_wire(5000 + (uint64_t)_i, &c, &c);
    w->bursts = true;
    all_faults(w, 0.05);
    run_duplex(w, 8ull * MB / SCALE, 3600 * STK_US_PER_S);
    ck_assert_uint_gt(stk_counters(wire_engine(w, WIRE_A))->tcp_retrans, 0);
    wire_destroy(w);
}
END_TEST

/* A long path (40 ms round trip, 100 MB/s): 256 KiB buffers cap each direction at 256 KiB
 * per round trip (6.5 MB/s); with autotuning (the default ceilings, 4 MiB) the receive and
 * send buffers grow and the same transfer takes less than half the time, byte-exact. */
START_TEST(test_autotune_long_path)
{
    stk_time_t took[2];
    uint64_t rgrown = 0, sgrown = 0;
    for (int on = 0; on < 2; on++) {
        uint32_t cap = on ? 0 : 256 * 1024; /* 0: the defaults */
        struct stk_config c = {.rcvbuf_max = cap, .sndbuf_max = cap};
        struct wire *w = make_wire(13, &c, &c);
        for (int dir = 0; dir < 2; dir++) {
            wire_fault(w, dir)->delay_us = 20000;
            wire_fault(w, dir)->rate = 100u * 1000 * 1000;
        }
        took[on] = run_duplex(w, 8ull * MB, 600 * STK_US_PER_S); /* not scaled: a ratio */
        if (on) {
            rgrown = stk_counters(wire_engine(w, WIRE_A))->tcp_rcvbuf_grown;
            sgrown = stk_counters(wire_engine(w, WIRE_A))->tcp_sndbuf_grown;
        } else {
            ck_assert_uint_eq(stk_counters(wire_engine(w, WIRE_A))->tcp_rcvbuf_grown, 0);
            ck_assert_uint_eq(stk_counters(wire_engine(w, WIRE_A))->tcp_sndbuf_grown, 0);
        }
        wire_destroy(w);
    }
    fprintf(stderr,
            "autotune: %llu ms with 256 KiB buffers, %llu ms autotuned (receive buffers grown "
            "%llu times, send buffers %llu)\n",
            (unsigned long long)(took[0] / 1000), (unsigned long long)(took[1] / 1000),
            (unsigned long long)rgrown, (unsigned long long)sgrown);
    ck_assert_uint_gt(rgrown, 0);
    ck_assert_uint_gt(sgrown, 0);
    ck_assert_uint_lt(took[1], took[0] / 2);
}
END_TEST

static void add(Suite *s, const char *name, const TTest *fn, int loops)
{
    /* One case per test, so CK_RUN_CASE=<name> runs just that one. */
    TCase *tc = tcase_create(name);
    tcase_set_timeout(tc, 600);
    tcase_add_loop_test(tc, fn, 0, loops);
    suite_add_tcase(s, tc);
}

static Suite *suite(void)
{
    Suite *s = suite_create("tcp_wire");
    add(s, "clean_duplex", test_clean_duplex, 1);
    add(s, "l4sum_duplex", test_l4sum_duplex, 2);
    add(s, "faulty_cubic", test_faulty_duplex_cubic, 2);
    add(s, "faulty_newreno_nosack", test_faulty_duplex_newreno_nosack, 2);
    add(s, "faulty_no_options", test_faulty_no_options, 1);
    add(s, "link_down", test_link_down, 1);
    add(s, "zero_window", test_zero_window_reader, 1);
    add(s, "short", test_short_connections, 1);
    add(s, "short_faulty", test_short_connections_faulty, 1);
    add(s, "lazy_rings", test_lazy_rings, 1);
    add(s, "path_mtu", test_path_mtu, 1);
    add(s, "bursts", test_bursts, 2);
    add(s, "autotune_long_path", test_autotune_long_path, 1);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

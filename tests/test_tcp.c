/*
 * test_tcp.c - segment-level scripted tests of the TCP engine (stack/tcp_*.c).
 *
 * One engine talks to a scripted peer. The test crafts every segment the peer sends with
 * tests/lib/pkt.h, hands it to stk_input(), and asserts on the exact segments the engine
 * sends back (flags, sequence and acknowledgment numbers, window, options), parsed by the
 * independent parser in pkt.c. Time is a fake clock the test advances; timers run through
 * stk_poll() at the instant stk_next_timer() names, so the time each segment left is exact.
 *
 * The engine is 198.18.0.2 (pkt_tcp_spec_init's destination), the peer 198.18.0.1. ARP
 * traffic is answered by the harness and never reaches a test.
 *
 * The TCase "regressions" holds tests written for engine bugs found by these scripts (data
 * before accept(), delayed ACKs with timestamps, simultaneous open); they must pass too.
 */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pkt.h"
#include "stk.h"

#define T0       (100 * STK_US_PER_S)
#define MS       STK_US_PER_MS
#define SEC      STK_US_PER_S
#define US_IP    PKT_IP(198, 18, 0, 2)
#define PEER_IP  PKT_IP(198, 18, 0, 1)
#define PEER2_IP PKT_IP(198, 18, 0, 7)
#define LPORT    80
#define PPORT    40000
#define PEER_ISN 0xfffff000u /* the peer's sequence numbers wrap during the tests */

#define F_FIN PKT_TCP_FIN
#define F_SYN PKT_TCP_SYN
#define F_RST PKT_TCP_RST
#define F_PSH PKT_TCP_PSH
#define F_ACK PKT_TCP_ACK

static const uint8_t US_MAC[6] = {0x02, 0, 0, 0, 0, 0x02};
static const uint8_t PEER_MAC[6] = {0x02, 0, 0, 0, 0, 0x01};
static const uint8_t PEER2_MAC[6] = {0x02, 0, 0, 0, 0, 0x07};

/* Check's ck_assert reports every call through a pipe in fork mode; these only cost a
 * branch unless they fail. */
#define REQUIRE(cond, ...)                                                                         \
    do {                                                                                           \
        if (!(cond))                                                                               \
            ck_abort_msg(__VA_ARGS__);                                                             \
    } while (0)
#define EQ(a, b)                                                                                   \
    do {                                                                                           \
        unsigned long long a_ = (unsigned long long)(a), b_ = (unsigned long long)(b);             \
        REQUIRE(a_ == b_, "line %d: %s = %llu, expected %s = %llu", __LINE__, #a, a_, #b, b_);     \
    } while (0)
#define EQI(a, b)                                                                                  \
    do {                                                                                           \
        long long a_ = (long long)(a), b_ = (long long)(b);                                        \
        REQUIRE(a_ == b_, "line %d: %s = %lld, expected %s = %lld", __LINE__, #a, a_, #b, b_);     \
    } while (0)

/* ---- Harness ----------------------------------------------------------------------------- */

/* Options a scripted peer puts in its SYN. */
struct popts {
    uint16_t mss; /* 0: none */
    int ws;       /* -1: none */
    bool sack, ts;
};
static const struct popts FULL = {1460, 7, true, true};
static const struct popts BARE = {1460, -1, false, false};

/* One engine, what it sent, and the state of the scripted peer of the current connection. */
struct th {
    struct pkt_capture raw;  /* everything the engine transmitted, not yet sorted */
    struct pkt_capture segs; /* the engine's TCP segments, oldest first */
    stk_time_t sent_at[PKT_CAP_MAX_FRAMES];
    struct stk_engine *e;
    struct stk_config cfg;
    stk_time_t now;

    /* The peer. */
    uint32_t peer_ip;
    uint16_t pport, lport; /* peer's port, engine's port */
    uint32_t pseq;         /* peer's next sequence number */
    uint32_t pack;         /* what the peer acknowledges (the engine's next byte) */
    uint32_t iss;          /* the engine's ISN on this connection */
    uint16_t pwin;         /* window field the peer sends */
    bool ts;               /* the peer sends timestamps */
    uint32_t ts_base;      /* peer's timestamp clock: ts_base + now / 1 ms */
    uint32_t tsecr;        /* the last tsval the engine sent, echoed by the peer */

    int lsd, sd;
    struct pkt_info p; /* the last segment popped (valid until the next pop) */
    stk_time_t p_time; /* when it was sent */
    char fmt[256];
};

static struct stk_config base_cfg(void)
{
    struct stk_config c;
    memset(&c, 0, sizeof(c));
    memcpy(c.mac, US_MAC, 6);
    c.ip = US_IP;
    c.prefix = 24;
    c.max_socks = 64;
    c.sndbuf = 65536;
    c.rcvbuf = 131072;     /* window scale 2 */
    c.rcvbuf_max = 131072; /* no autotuning (the rcvbuf_autotune_* tests turn it on) */
    c.arp_timeout_us = UINT32_MAX;
    for (int i = 0; i < 16; i++)
        c.secret[i] = (uint8_t)(0x5a ^ (i * 37));
    return c;
}

static void inject_raw(struct th *h, const uint8_t *f, size_t n)
{
    stk_input(h->e, h->now, f, n, 0);
}

/* Moves what the engine sent into segs, stamping each with the current time; answers ARP
 * requests for the peers (the engine then sends what was waiting). */
static void drain(struct th *h)
{
    while (pkt_capture_count(&h->raw)) {
        const struct pkt_frame *f = pkt_capture_pop(&h->raw);
        struct pkt_info p;
        int rc = pkt_parse(f->data, f->len, &p);
        REQUIRE(rc == PKT_OK, "engine sent a bad frame: %s", pkt_strerror(rc));
        if (p.kind == PKT_KIND_ARP) {
            if (p.arp_op == PKT_ARP_REQUEST && (p.arp_tpa == PEER_IP || p.arp_tpa == PEER2_IP)) {
                uint8_t r[64];
                const uint8_t *mac = p.arp_tpa == PEER_IP ? PEER_MAC : PEER2_MAC;
                size_t n = pkt_build_arp_reply(r, sizeof(r), mac, p.arp_tpa, US_MAC, US_IP);
                inject_raw(h, r, n);
            }
            continue;
        }
        REQUIRE(p.kind == PKT_KIND_TCP, "engine sent a non-TCP frame");
        uint64_t idx = h->segs.total;
        REQUIRE(pkt_capture_add(&h->segs, f->data, f->len) == 0, "segment queue full");
        h->sent_at[idx % PKT_CAP_MAX_FRAMES] = h->now;
    }
}

static void learn_peer(struct th *h, const uint8_t mac[6], uint32_t ip)
{
    uint8_t f[64];
    size_t n = pkt_build_arp_request(f, sizeof(f), mac, ip, US_IP);
    inject_raw(h, f, n);
    drain(h);
}

static struct th *th_new_cfg(const struct stk_config *c)
{
    struct th *h = calloc(1, sizeof(*h));
    REQUIRE(h != NULL, "calloc");
    pkt_capture_init(&h->raw);
    pkt_capture_init(&h->segs);
    h->cfg = *c;
    h->cfg.io_ctx = &h->raw;
    h->cfg.tx = pkt_capture_tx;
    h->now = T0;
    REQUIRE(stk_engine_create(&h->cfg, h->now, &h->e) == 0, "stk_engine_create");
    learn_peer(h, PEER_MAC, PEER_IP);
    learn_peer(h, PEER2_MAC, PEER2_IP);
    h->peer_ip = PEER_IP;
    h->pport = PPORT;
    h->lport = LPORT;
    h->pwin = 65535;
    h->ts_base = 5000;
    h->lsd = h->sd = -1;
    REQUIRE(pkt_capture_count(&h->segs) == 0, "unexpected segment at start");
    return h;
}

static struct th *th_new(void)
{
    struct stk_config c = base_cfg();
    return th_new_cfg(&c);
}

static void th_free(struct th *h)
{
    stk_engine_destroy(h->e);
    pkt_capture_fini(&h->raw);
    pkt_capture_fini(&h->segs);
    free(h);
}

static const struct stk_counters *ctr(const struct th *h)
{
    return stk_counters(h->e);
}

/* Runs every timer due up to `until`, at the instant it is due, then sets the clock there. */
static void advance(struct th *h, stk_time_t until)
{
    drain(h);
    for (int guard = 0; guard < 100000; guard++) {
        stk_time_t nt = stk_next_timer(h->e);
        if (nt > until)
            break;
        if (nt > h->now)
            h->now = nt;
        stk_poll(h->e, h->now);
        drain(h);
        if (stk_next_timer(h->e) <= h->now) {
            if (h->now + MS > until)
                break;
            h->now += MS; /* a timer reported early: step on */
        }
    }
    if (until > h->now)
        h->now = until;
    stk_poll(h->e, h->now);
    drain(h);
}

static void advance_by(struct th *h, stk_time_t dt)
{
    advance(h, h->now + dt);
}

static int state_of(struct th *h, int sd)
{
    int v = -1;
    REQUIRE(stk_getopt(h->e, sd, STK_SO_STATE, &v) == 0, "getopt STATE on %d", sd);
    return v;
}

static int nread(struct th *h, int sd)
{
    int v = -1;
    REQUIRE(stk_getopt(h->e, sd, STK_SO_NREAD, &v) == 0, "getopt NREAD");
    return v;
}

static const char *fmt(struct th *h, const struct pkt_info *p)
{
    return pkt_format(p, h->fmt, sizeof(h->fmt));
}

/* Pops the engine's next segment into h->p; fails when there is none. The peer then
 * echoes its timestamp, as RFC 7323 asks. */
static const struct pkt_info *pop_(struct th *h, int line)
{
    drain(h);
    const struct pkt_frame *f = pkt_capture_pop(&h->segs);
    REQUIRE(f != NULL, "line %d: expected a segment, none was sent", line);
    h->p_time = h->sent_at[f->index % PKT_CAP_MAX_FRAMES];
    int rc = pkt_parse(f->data, f->len, &h->p);
    REQUIRE(rc == PKT_OK, "line %d: %s", line, pkt_strerror(rc));
    REQUIRE(h->p.src_ip == US_IP && h->p.dst_ip == h->peer_ip, "line %d: addresses of %s", line,
            fmt(h, &h->p));
    if (h->p.opt.ts)
        h->tsecr = h->p.opt.tsval;
    return &h->p;
}
#define POP(h) pop_(h, __LINE__)

/* The next segment has exactly these flags (PSH ignored), seq, ack (0 when no ACK flag) and
 * payload length. */
static const struct pkt_info *expect_(struct th *h, int line, uint8_t flags, uint32_t seq,
                                      uint32_t ack, size_t len)
{
    const struct pkt_info *p = pop_(h, line);
    REQUIRE((p->flags & ~F_PSH) == (flags & ~F_PSH) && p->seq == seq &&
                p->ack == ((flags & F_ACK) ? ack : 0) && p->payload_len == len,
            "line %d: got %s; expected flags %#x seq=%u ack=%u len=%zu", line, fmt(h, p), flags,
            seq, (flags & F_ACK) ? ack : 0, len);
    REQUIRE(p->sport == h->lport && p->dport == h->pport, "line %d: ports of %s", line, fmt(h, p));
    return p;
}
#define EXPECT(h, flags, seq, ack, len) expect_(h, __LINE__, flags, seq, ack, len)
/* A pure ACK from the engine's current position. */
#define EXPECT_ACK(h) expect_(h, __LINE__, F_ACK, (h)->pack, (h)->pseq, 0)

static void none_(struct th *h, int line)
{
    drain(h);
    const struct pkt_frame *f = pkt_capture_peek(&h->segs, 0);
    if (f) {
        struct pkt_info p;
        pkt_parse(f->data, f->len, &p);
        ck_abort_msg("line %d: unexpected segment %s", line, fmt(h, &p));
    }
}
#define EXPECT_NONE(h) none_(h, __LINE__)

/* A segment from the peer with its current numbers. */
static void spec_for(struct th *h, struct pkt_tcp_spec *s, uint8_t flags)
{
    pkt_tcp_spec_init(s);
    s->src_ip = h->peer_ip;
    if (h->peer_ip == PEER2_IP)
        memcpy(s->src_mac, PEER2_MAC, 6);
    s->sport = h->pport;
    s->dport = h->lport;
    s->seq = h->pseq;
    s->ack = (flags & F_ACK) ? h->pack : 0;
    s->flags = flags;
    s->window = h->pwin;
    if (h->ts) {
        s->ts = true;
        s->tsval = h->ts_base + (uint32_t)(h->now / MS);
        s->tsecr = (flags & F_ACK) ? h->tsecr : 0;
    }
}

static void inject(struct th *h, const struct pkt_tcp_spec *s)
{
    uint8_t f[2048];
    size_t n = pkt_build_tcp(s, f, sizeof(f));
    REQUIRE(n > 0, "pkt_build_tcp");
    inject_raw(h, f, n);
}

/* The peer sends flags with len bytes of data (a pattern) and advances its sequence. */
static void peer_send(struct th *h, uint8_t flags, size_t len)
{
    static uint8_t data[9000];
    for (size_t i = 0; i < len && i < sizeof(data); i++)
        data[i] = (uint8_t)(h->pseq + i);
    struct pkt_tcp_spec s;
    spec_for(h, &s, flags);
    s.payload = data;
    s.payload_len = len;
    inject(h, &s);
    h->pseq += (uint32_t)len + ((flags & F_SYN) ? 1 : 0) + ((flags & F_FIN) ? 1 : 0);
}

static void peer_ack(struct th *h)
{
    peer_send(h, F_ACK, 0);
}

/* The peer sends len bytes at seq (which need not be pseq); pseq is left alone. */
static void peer_send_at(struct th *h, uint32_t seq, size_t len)
{
    uint32_t save = h->pseq;
    h->pseq = seq;
    peer_send(h, F_ACK, len);
    h->pseq = save;
}

static void syn_spec(struct th *h, struct pkt_tcp_spec *s, uint8_t flags, const struct popts *o)
{
    h->ts = o->ts;
    spec_for(h, s, flags);
    s->mss = o->mss;
    s->wscale = o->ws;
    s->sack_perm = o->sack;
}

static int listen_on(struct th *h, uint16_t port, int backlog)
{
    int sd = stk_socket(h->e, NULL);
    REQUIRE(sd >= 0, "socket");
    struct stk_sockaddr a = {.ip = 0, .port = port};
    REQUIRE(stk_bind(h->e, sd, &a) == 0, "bind");
    REQUIRE(stk_listen(h->e, sd, backlog) == 0, "listen");
    return sd;
}

/* The peer's SYN to the listener; returns the SYN-ACK (h->iss and h->pack set). */
static const struct pkt_info *peer_syn(struct th *h, const struct popts *o)
{
    struct pkt_tcp_spec s;
    syn_spec(h, &s, F_SYN, o);
    inject(h, &s);
    h->pseq++;
    const struct pkt_info *p = POP(h);
    REQUIRE(p->flags == (F_SYN | F_ACK) && p->ack == h->pseq, "SYN-ACK expected: %s", fmt(h, p));
    h->iss = p->seq;
    h->pack = p->seq + 1;
    return p;
}

/* Listener on LPORT (made on first use), handshake from the peer, accept. */
static void passive_open(struct th *h, const struct popts *o)
{
    if (h->lsd < 0)
        h->lsd = listen_on(h, LPORT, 16);
    h->lport = LPORT;
    h->pseq = PEER_ISN;
    peer_syn(h, o);
    peer_ack(h);
    struct stk_sockaddr peer;
    h->sd = stk_accept(h->e, h->now, h->lsd, NULL, &peer);
    REQUIRE(h->sd >= 0, "accept: %d", h->sd);
    EQ(peer.ip, h->peer_ip);
    EQ(peer.port, h->pport);
    EQ(state_of(h, h->sd), STK_TCP_ESTABLISHED);
    EXPECT_NONE(h);
}

/* connect() to the peer, which answers SYN-ACK with options o; the engine's ACK is
 * checked. */
static void active_open_from(struct th *h, int sd, const struct popts *o);

static void active_open(struct th *h, const struct popts *o)
{
    active_open_from(h, stk_socket(h->e, NULL), o);
}

/* The same from socket sd (bound, say). */
static void active_open_from(struct th *h, int sd, const struct popts *o)
{
    h->sd = sd;
    REQUIRE(h->sd >= 0, "socket");
    struct stk_sockaddr to = {.ip = h->peer_ip, .port = h->pport};
    EQI(stk_connect(h->e, h->now, h->sd, &to), -EINPROGRESS);
    const struct pkt_info *p = POP(h);
    REQUIRE(p->flags == F_SYN, "SYN expected: %s", fmt(h, p));
    h->iss = p->seq;
    h->lport = p->sport;
    h->pack = p->seq + 1;
    h->pseq = PEER_ISN;
    struct pkt_tcp_spec s;
    syn_spec(h, &s, F_SYN | F_ACK, o);
    inject(h, &s);
    h->pseq++;
    EXPECT_ACK(h);
    EQ(state_of(h, h->sd), STK_TCP_ESTABLISHED);
}

static ssize_t app_send(struct th *h, size_t len, uint32_t flags)
{
    static uint8_t buf[65536];
    for (size_t i = 0; i < len && i < sizeof(buf); i++)
        buf[i] = (uint8_t)(i * 7 + 1);
    return stk_send(h->e, h->now, h->sd, buf, len, flags);
}

static void nodelay(struct th *h)
{
    REQUIRE(stk_setopt(h->e, h->now, h->sd, STK_TCP_NODELAY, 1) == 0, "NODELAY");
}

/* ---- Handshake ---------------------------------------------------------------------------- */

START_TEST(passive_full_options)
{
    struct th *h = th_new();
    h->lsd = listen_on(h, LPORT, 16);
    h->pseq = PEER_ISN;
    const struct pkt_info *p = peer_syn(h, &FULL);
    /* SYN-ACK: every option the peer offered, our MSS from the MTU, an unscaled window. */
    EQ(p->ack, PEER_ISN + 1);
    REQUIRE(p->opt.has_mss, "no MSS");
    EQ(p->opt.mss, 1460);
    REQUIRE(p->opt.sack_perm, "no SACK-permitted");
    REQUIRE(p->opt.ts, "no timestamps");
    EQ(p->opt.tsecr, h->ts_base + T0 / MS);
    EQ(p->opt.wscale, 2); /* 128 KiB receive buffer */
    EQ(p->window, 65535);
    EQ(p->payload_len, 0);
    EQ(state_of(h, h->lsd), STK_TCP_LISTEN);
    EQI(stk_accept(h->e, h->now, h->lsd, NULL, NULL), -EAGAIN);

    peer_ack(h);
    EXPECT_NONE(h);
    h->sd = stk_accept(h->e, h->now, h->lsd, NULL, NULL);
    REQUIRE(h->sd >= 0, "accept %d", h->sd);
    EQ(state_of(h, h->sd), STK_TCP_ESTABLISHED);
    struct stk_tcp_info ti;
    EQ(stk_tcp_info(h->e, h->sd, &ti), 0);
    EQ(ti.options, 7);
    EQ(ti.snd_wscale, 7);
    EQ(ti.rcv_wscale, 2);
    EQ(ti.snd_mss, 1460 - 12);
    EQ(ti.snd_wnd, 65535u << 7);
    EQ(ctr(h)->tcp_passive_opens, 1);

    /* Data flows both ways; our segments carry timestamps and a scaled window. */
    peer_send(h, F_ACK | F_PSH, 100);
    nodelay(h);
    EQI(app_send(h, 10, 0), 10);
    p = EXPECT(h, F_ACK | F_PSH, h->iss + 1, PEER_ISN + 101, 10);
    REQUIRE(p->opt.ts, "no TS in a data segment");
    EQ(p->opt.tsecr, h->ts_base + T0 / MS);
    EQ(p->window, (131072 - 100) >> 2);
    char buf[200];
    EQI(stk_recv(h->e, h->now, h->sd, buf, sizeof(buf), 0), 100);
    EQ((uint8_t)buf[0], (uint8_t)(PEER_ISN + 1));
    th_free(h);
}
END_TEST

START_TEST(passive_no_options)
{
    struct th *h = th_new();
    h->lsd = listen_on(h, LPORT, 16);
    h->pseq = PEER_ISN;
    struct popts o = {0, -1, false, false}; /* not even MSS: 536 is assumed */
    const struct pkt_info *p = peer_syn(h, &o);
    EQ(p->opt.mss, 1460);
    REQUIRE(!p->opt.sack_perm && !p->opt.ts && p->opt.wscale == -1, "options not offered: %s",
            fmt(h, p));
    peer_ack(h);
    h->sd = stk_accept(h->e, h->now, h->lsd, NULL, NULL);
    REQUIRE(h->sd >= 0, "accept");
    struct stk_tcp_info ti;
    stk_tcp_info(h->e, h->sd, &ti);
    EQ(ti.options, 0);
    EQ(ti.snd_mss, 536);
    EQ(ti.snd_wscale, 0);
    EQ(ti.rcv_wscale, 0);

    /* The peer's window is not scaled: 1072 bytes means exactly two 536-byte segments. */
    h->pwin = 1072;
    peer_ack(h);
    nodelay(h);
    EQI(app_send(h, 3000, 0), 3000);
    EXPECT(h, F_ACK, h->iss + 1, h->pseq, 536);
    REQUIRE(!h->p.opt.ts && h->p.opt.nsack == 0, "options in %s", fmt(h, &h->p));
    EQ(h->p.window, 65535); /* unscaled, capped */
    EXPECT(h, F_ACK, h->iss + 537, h->pseq, 536);
    EXPECT_NONE(h);
    /* An out-of-order segment gets a plain duplicate ACK: no SACK was agreed. */
    peer_send_at(h, h->pseq + 100, 10);
    p = EXPECT(h, F_ACK, h->iss + 1 + 1072, h->pseq, 0);
    EQ(p->opt.nsack, 0);
    REQUIRE(!p->opt.ts, "TS option sent");
    th_free(h);
}
END_TEST

START_TEST(active_open_options)
{
    struct th *h = th_new();
    h->sd = stk_socket(h->e, NULL);
    struct stk_sockaddr to = {.ip = PEER_IP, .port = PPORT};
    EQI(stk_connect(h->e, h->now, h->sd, &to), -EINPROGRESS);
    EQ(state_of(h, h->sd), STK_TCP_SYN_SENT);
    EQI(stk_connect(h->e, h->now, h->sd, &to), -EALREADY);
    const struct pkt_info *p = POP(h);
    EQ(p->flags, F_SYN);
    EQ(p->ack, 0);
    EQ(p->opt.mss, 1460);
    REQUIRE(p->opt.sack_perm && p->opt.ts, "SYN options: %s", fmt(h, p));
    EQ(p->opt.tsecr, 0);
    EQ(p->opt.wscale, 2);
    EQ(p->window, 65535);
    EQ(p->dport, PPORT);
    REQUIRE(p->sport >= 32768 && p->sport <= 60999, "ephemeral port %u", p->sport);
    EQ(ctr(h)->tcp_active_opens, 1);

    h->iss = p->seq;
    h->lport = p->sport;
    h->pack = h->iss + 1;
    h->pseq = PEER_ISN;
    struct pkt_tcp_spec s;
    struct popts o = {1400, 3, true, true};
    syn_spec(h, &s, F_SYN | F_ACK, &o);
    s.window = 1000;
    inject(h, &s);
    h->pseq++;
    p = EXPECT_ACK(h);
    REQUIRE(p->opt.ts, "TS in the ACK");
    EQ(p->window, 131072 >> 2);
    EQ(state_of(h, h->sd), STK_TCP_ESTABLISHED);
    EQ(stk_events(h->e, h->sd) & STK_EV_OUT, STK_EV_OUT);
    struct stk_tcp_info ti;
    stk_tcp_info(h->e, h->sd, &ti);
    EQ(ti.options, 7);
    EQ(ti.snd_mss, 1400 - 12);
    EQ(ti.snd_wscale, 3);
    EQ(ti.rcv_wscale, 2);
    EQ(ti.snd_wnd, 1000); /* the window in a SYN-ACK is never scaled (RFC 7323 2.2) */
    int v;
    stk_getopt(h->e, h->sd, STK_TCP_MAXSEG, &v);
    EQI(v, 1388);
    EQI(stk_connect(h->e, h->now, h->sd, &to), -EISCONN);
    struct stk_sockaddr a;
    EQ(stk_getpeername(h->e, h->sd, &a), 0);
    EQ(a.ip, PEER_IP);
    EQ(a.port, PPORT);
    th_free(h);
}
END_TEST

START_TEST(active_open_peer_without_options)
{
    /* We offer everything; a peer that answers with nothing gets nothing. */
    struct th *h = th_new();
    active_open(h, &BARE);
    REQUIRE(!h->p.opt.ts, "TS in the handshake ACK");
    EQ(h->p.window, 65535);
    struct stk_tcp_info ti;
    stk_tcp_info(h->e, h->sd, &ti);
    EQ(ti.options, 0);
    EQ(ti.rcv_wscale, 0);
    EQ(ti.snd_mss, 1460);
    nodelay(h);
    EQI(app_send(h, 100, 0), 100);
    const struct pkt_info *p = EXPECT(h, F_ACK | F_PSH, h->iss + 1, h->pseq, 100);
    REQUIRE(!p->opt.ts && p->tcp_hlen == 20, "options in %s", fmt(h, p));
    EQ(p->window, 65535);
    th_free(h);
}
END_TEST

START_TEST(mss_clamping)
{
    /* A 1000-byte MTU: we announce 960 and never send more, whatever the peer says. */
    struct stk_config c = base_cfg();
    c.mtu = 1000;
    struct th *h = th_new_cfg(&c);
    h->lsd = listen_on(h, LPORT, 4);
    h->pseq = PEER_ISN;
    const struct pkt_info *p = peer_syn(h, &FULL);
    EQ(p->opt.mss, 960);
    peer_ack(h);
    h->sd = stk_accept(h->e, h->now, h->lsd, NULL, NULL);
    int v;
    stk_getopt(h->e, h->sd, STK_TCP_MAXSEG, &v);
    EQI(v, 960 - 12);
    nodelay(h);
    EQI(app_send(h, 2000, 0), 2000);
    EXPECT(h, F_ACK, h->iss + 1, h->pseq, 948);
    EQ(h->p.ip_len, 1000);
    EXPECT(h, F_ACK, h->iss + 949, h->pseq, 948);
    EXPECT(h, F_ACK | F_PSH, h->iss + 1897, h->pseq, 104);
    th_free(h);

    /* The peer's smaller MSS and TCP_MAXSEG both clamp. */
    h = th_new();
    h->lsd = listen_on(h, LPORT, 4);
    EQ(stk_setopt(h->e, h->now, h->lsd, STK_TCP_MAXSEG, 700), 0);
    h->pseq = PEER_ISN;
    struct popts o = {800, -1, false, false};
    peer_syn(h, &o);
    peer_ack(h);
    h->sd = stk_accept(h->e, h->now, h->lsd, NULL, NULL);
    stk_getopt(h->e, h->sd, STK_TCP_MAXSEG, &v);
    EQI(v, 700);
    nodelay(h);
    EQI(app_send(h, 1000, 0), 1000);
    EXPECT(h, F_ACK, h->iss + 1, h->pseq, 700);
    EXPECT(h, F_ACK | F_PSH, h->iss + 701, h->pseq, 300);
    th_free(h);
}
END_TEST

START_TEST(simultaneous_open)
{
    /* RFC 9293 figure 8: SYNs cross. */
    struct th *h = th_new();
    h->sd = stk_socket(h->e, NULL);
    struct stk_sockaddr to = {.ip = PEER_IP, .port = PPORT};
    EQI(stk_connect(h->e, h->now, h->sd, &to), -EINPROGRESS);
    const struct pkt_info *p = POP(h);
    EQ(p->flags, F_SYN);
    h->iss = p->seq;
    h->lport = p->sport;
    h->pseq = PEER_ISN;
    struct pkt_tcp_spec s;
    syn_spec(h, &s, F_SYN, &BARE);
    inject(h, &s);
    h->pseq++;
    /* SYN-RECEIVED: our SYN again, now acknowledging theirs. */
    p = EXPECT(h, F_SYN | F_ACK, h->iss, PEER_ISN + 1, 0);
    EQ(p->opt.mss, 1460);
    EQ(state_of(h, h->sd), STK_TCP_SYN_RECEIVED);
    /* The peer's ACK of our SYN completes the open. */
    h->pack = h->iss + 1;
    peer_ack(h);
    EQ(state_of(h, h->sd), STK_TCP_ESTABLISHED);
    EXPECT_NONE(h);
    nodelay(h);
    EQI(app_send(h, 5, 0), 5);
    EXPECT(h, F_ACK | F_PSH, h->iss + 1, PEER_ISN + 1, 5);
    th_free(h);
}
END_TEST

START_TEST(simultaneous_close)
{
    struct th *h = th_new();
    passive_open(h, &BARE);
    EQ(stk_shutdown(h->e, h->now, h->sd, STK_SHUT_WR), 0);
    EXPECT(h, F_FIN | F_ACK, h->iss + 1, h->pseq, 0);
    EQ(state_of(h, h->sd), STK_TCP_FIN_WAIT_1);
    /* The peer's FIN crosses ours: it does not acknowledge our FIN. */
    peer_send(h, F_FIN | F_ACK, 0);
    EXPECT(h, F_ACK, h->iss + 2, h->pseq, 0);
    EQ(state_of(h, h->sd), STK_TCP_CLOSING);
    h->pack = h->iss + 2;
    peer_ack(h);
    EQ(state_of(h, h->sd), STK_TCP_TIME_WAIT);
    EXPECT_NONE(h);
    char b[4];
    EQI(stk_recv(h->e, h->now, h->sd, b, sizeof(b), 0), 0); /* EOF */
    th_free(h);
}
END_TEST

/* ---- RST for segments without a connection (RFC 9293 3.10.7.1) -------------------------- */

START_TEST(rst_closed_port)
{
    struct th *h = th_new();
    h->lport = 81;
    h->pseq = 1000;
    h->pack = 0x55667788;
    /* No ACK bit: <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>, SYN counting one. */
    peer_send(h, F_SYN, 0);
    EXPECT(h, F_RST | F_ACK, 0, 1001, 0);
    peer_send(h, F_PSH, 20);
    EXPECT(h, F_RST | F_ACK, 0, 1021, 0);
    peer_send(h, F_FIN, 5);
    EXPECT(h, F_RST | F_ACK, 0, 1027, 0);
    /* ACK bit on: <SEQ=SEG.ACK><CTL=RST>. */
    peer_send(h, F_ACK, 0);
    EXPECT(h, F_RST, 0x55667788, 0, 0);
    EQ(h->p.opt.nsack + h->p.opt.ts + h->p.opt.has_mss, 0);
    peer_send(h, F_ACK | F_PSH, 30);
    EXPECT(h, F_RST, 0x55667788, 0, 0);
    /* A RST is never answered. */
    peer_send(h, F_RST, 0);
    peer_send(h, F_RST | F_ACK, 0);
    EXPECT_NONE(h);
    EQ(ctr(h)->tcp_rst_out, 5);
    th_free(h);
}
END_TEST

START_TEST(syn_received_bad_ack_and_rst)
{
    struct th *h = th_new();
    h->lsd = listen_on(h, LPORT, 4);
    h->pseq = PEER_ISN;
    peer_syn(h, &BARE);
    /* An ACK that is not for our SYN-ACK: <SEQ=SEG.ACK><CTL=RST>, the child survives. */
    uint32_t good = h->pack;
    h->pack = good + 1000;
    peer_ack(h);
    EXPECT(h, F_RST, good + 1000, 0, 0);
    h->pack = good;
    /* A RST in the window removes the half-open child without a word. */
    peer_send(h, F_RST, 0);
    EXPECT_NONE(h);
    EQ(ctr(h)->tcp_rst_in, 1);
    /* Its handshake can no longer complete. */
    peer_ack(h);
    EXPECT(h, F_RST, good, 0, 0);
    EQI(stk_accept(h->e, h->now, h->lsd, NULL, NULL), -EAGAIN);
    th_free(h);
}
END_TEST

/* ---- RFC 5961 ------------------------------------------------------------------------------ */

START_TEST(rst_exact_resets)
{
    struct th *h = th_new();
    passive_open(h, &FULL);
    peer_send(h, F_RST, 0);
    EXPECT_NONE(h);
    char b[8];
    EQI(stk_recv(h->e, h->now, h->sd, b, sizeof(b), 0), -ECONNRESET);
    EQ(state_of(h, h->sd), STK_TCP_CLOSED);
    EQ(ctr(h)->tcp_rst_in, 1);
    EQ(ctr(h)->tcp_challenge_acks, 0);
    EQI(app_send(h, 1, 0), -EPIPE);
    th_free(h);
}
END_TEST

START_TEST(rst_in_window_challenged)
{
    struct th *h = th_new();
    passive_open(h, &FULL);
    uint32_t save = h->pseq;
    h->pseq += 1000;
    peer_send(h, F_RST, 0);
    h->pseq = save;
    const struct pkt_info *p = EXPECT_ACK(h);
    REQUIRE(p->opt.ts, "challenge ACK without TS");
    EQ(state_of(h, h->sd), STK_TCP_ESTABLISHED);
    EQ(ctr(h)->tcp_challenge_acks, 1);
    EQ(ctr(h)->tcp_rst_in, 0);
    /* The connection still works. */
    peer_send(h, F_ACK | F_PSH, 10);
    EQ(nread(h, h->sd), 10);
    th_free(h);
}
END_TEST

START_TEST(rst_out_of_window_ignored)
{
    struct th *h = th_new();
    passive_open(h, &FULL);
    uint32_t save = h->pseq;
    h->pseq += 0x40000000u;
    peer_send(h, F_RST, 0);
    h->pseq = save - 10;
    peer_send(h, F_RST | F_ACK, 0);
    h->pseq = save;
    EXPECT_NONE(h);
    EQ(state_of(h, h->sd), STK_TCP_ESTABLISHED);
    EQ(ctr(h)->tcp_challenge_acks, 0);
    th_free(h);
}
END_TEST

START_TEST(syn_on_established)
{
    struct th *h = th_new();
    passive_open(h, &FULL);
    /* In window, and also the peer's old ISN: both get a challenge ACK, nothing resets. */
    uint32_t save = h->pseq;
    struct pkt_tcp_spec s;
    syn_spec(h, &s, F_SYN, &FULL);
    s.seq = save + 500;
    inject(h, &s);
    h->pseq = save;
    EXPECT_ACK(h);
    s.seq = PEER_ISN;
    inject(h, &s);
    EXPECT_ACK(h);
    EQ(state_of(h, h->sd), STK_TCP_ESTABLISHED);
    EQ(ctr(h)->tcp_challenge_acks, 1); /* the second was merely outside the window */
    EQ(ctr(h)->tcp_rst_out, 0);
    th_free(h);
}
END_TEST

START_TEST(ack_of_unsent_data)
{
    struct th *h = th_new();
    passive_open(h, &FULL);
    uint32_t save = h->pack;
    h->pack += 5000;
    peer_send(h, F_ACK | F_PSH, 100);
    h->pack = save;
    h->pseq -= 100;
    /* Dropped with an ACK: data not taken, rcv_nxt unchanged. */
    EXPECT_ACK(h);
    EQ(nread(h, h->sd), 0);
    EQ(ctr(h)->tcp_drop_ack, 1);
    EQ(state_of(h, h->sd), STK_TCP_ESTABLISHED);
    th_free(h);
}
END_TEST

/* One challenge ACK per connection per 500 ms, and an engine-wide budget per second drawn
 * between half and one and a half times challenge_ack_per_s (CVE-2016-5696). */
START_TEST(challenge_ack_rate_limit)
{
    struct stk_config c = base_cfg();
    c.challenge_ack_per_s = 2;
    struct th *h = th_new_cfg(&c);
    passive_open(h, &BARE);
    uint32_t save = h->pseq;
    for (int i = 0; i < 5; i++) {
        h->pseq = save + 100 + (uint32_t)i;
        peer_send(h, F_RST, 0);
    }
    h->pseq = save;
    EXPECT_ACK(h);
    EXPECT_NONE(h);
    EQ(ctr(h)->tcp_challenge_acks, 1);
    EQ(ctr(h)->tcp_challenge_limited, 4);
    /* Half a second later this connection may again, within the second's budget (1 to 3,
     * random): over ten seconds, the engine-wide count per second varies and stays in it. */
    unsigned per_s[10] = {0}, lo = 99, hi = 0;
    for (int sec = 0; sec < 10; sec++) {
        uint64_t a0 = ctr(h)->tcp_challenge_acks;
        for (int half = 0; half < 2; half++) {
            advance_by(h, SEC / 2);
            for (int k = 0; k < 3; k++) {
                h->pseq = save + 7 + (uint32_t)k;
                peer_send(h, F_RST, 0);
            }
            h->pseq = save;
            drain(h);
        }
        per_s[sec] = (unsigned)(ctr(h)->tcp_challenge_acks - a0);
        lo = per_s[sec] < lo ? per_s[sec] : lo;
        hi = per_s[sec] > hi ? per_s[sec] : hi;
    }
    EQ(lo >= 1, 1);
    EQ(hi <= 2, 1); /* two half seconds: at most one per connection in each */
    EQ(state_of(h, h->sd), STK_TCP_ESTABLISHED);
    th_free(h);
}
END_TEST

/* ---- PAWS (RFC 7323 5) ---------------------------------------------------------------- */

START_TEST(paws_old_timestamp)
{
    struct th *h = th_new();
    passive_open(h, &FULL);
    advance_by(h, 100 * MS);
    peer_send(h, F_ACK | F_PSH, 10); /* ts_recent is now ts_base + 100100 */
    EQ(nread(h, h->sd), 10);
    advance_by(h, 100 * MS);
    EXPECT_ACK(h); /* delayed ACK of those 10 bytes */
    uint32_t base = h->ts_base;
    h->ts_base -= 1000; /* an old duplicate: tsval behind ts_recent */
    peer_send(h, F_ACK | F_PSH, 20);
    h->ts_base = base;
    h->pseq -= 20;
    EXPECT_ACK(h);
    EQ(ctr(h)->tcp_drop_paws, 1);
    EQ(nread(h, h->sd), 10);
    /* The same bytes with a current timestamp are taken. */
    peer_send(h, F_ACK | F_PSH, 20);
    EQ(nread(h, h->sd), 30);
    th_free(h);
}
END_TEST

/* ---- Input validation ------------------------------------------------------------------- */

START_TEST(out_of_window_data)
{
    struct th *h = th_new();
    passive_open(h, &FULL);
    struct stk_tcp_info ti;
    stk_tcp_info(h->e, h->sd, &ti);
    /* Beyond the right edge. */
    peer_send_at(h, h->pseq + ti.rcv_wnd + 1000, 100);
    EXPECT_ACK(h);
    EQ(ctr(h)->tcp_drop_outwin, 1);
    /* Entirely old. */
    peer_send_at(h, h->pseq - 3000, 100);
    EXPECT_ACK(h);
    EQ(ctr(h)->tcp_drop_outwin, 2);
    EQ(ctr(h)->tcp_dup_segs, 1);
    EQ(nread(h, h->sd), 0);
    EQ(state_of(h, h->sd), STK_TCP_ESTABLISHED);
    /* The next in-order byte is still rcv_nxt. */
    peer_send(h, F_ACK | F_PSH, 5);
    EQ(nread(h, h->sd), 5);
    th_free(h);
}
END_TEST

START_TEST(malformed_segments_dropped)
{
    struct th *h = th_new();
    passive_open(h, &FULL);
    uint8_t data[40] = {0};
    struct pkt_tcp_spec s;

    spec_for(h, &s, F_ACK | F_PSH);
    s.payload = data;
    s.payload_len = 10;
    s.bad_tcp_csum = true;
    inject(h, &s);
    EQ(ctr(h)->tcp_drop_csum, 1);

    /* Data offset beyond the segment. */
    spec_for(h, &s, F_ACK | F_PSH);
    s.ts = false;
    s.payload = data;
    s.payload_len = 10;
    s.tcp_doff = 15;
    inject(h, &s);
    /* Data offset below 5. */
    s.tcp_doff = 3;
    inject(h, &s);
    /* IP says the segment is shorter than a TCP header. */
    s.tcp_doff = 0;
    s.payload_len = 0;
    s.ip_len_delta = -8;
    inject(h, &s);
    EQ(ctr(h)->tcp_drop_hdr, 3);

    /* Bogus option lengths. */
    static const uint8_t bad_opts[][8] = {
        {2, 40, 0, 0},            /* MSS length overruns the header */
        {8, 3, 0, 0},             /* timestamps of length 3 */
        {3, 2, 1, 1},             /* window scale of length 2 */
        {5, 9, 0, 0, 0, 0, 0, 0}, /* SACK, not a multiple of 8 */
        {30, 1, 0, 0},            /* unknown kind, length 1 */
        {30, 0, 0, 0},            /* length 0 */
    };
    for (unsigned i = 0; i < sizeof(bad_opts) / sizeof(bad_opts[0]); i++) {
        spec_for(h, &s, F_ACK | F_PSH);
        s.payload = data;
        s.payload_len = 10;
        s.raw_opts = bad_opts[i];
        s.raw_opts_len = 8;
        inject(h, &s);
        EQ(ctr(h)->tcp_drop_opts, i + 1);
    }
    EXPECT_NONE(h);
    EQ(nread(h, h->sd), 0);
    EQ(state_of(h, h->sd), STK_TCP_ESTABLISHED);
    EQ(ctr(h)->tcp_drop_outwin + ctr(h)->tcp_drop_ack, 0);
    /* An unknown option of a valid length is skipped, and the segment accepted. */
    static const uint8_t ok_opts[] = {30, 4, 0, 0};
    spec_for(h, &s, F_ACK | F_PSH);
    s.payload = data;
    s.payload_len = 10;
    s.raw_opts = ok_opts;
    s.raw_opts_len = 4;
    inject(h, &s);
    EQ(nread(h, h->sd), 10);
    th_free(h);
}
END_TEST

/* ---- Out-of-order data ----------------------------------------------------------------------- */

START_TEST(ooo_reassembly_and_sack)
{
    struct th *h = th_new();
    passive_open(h, &FULL);
    uint32_t r = h->pseq;
    peer_send_at(h, r + 100, 100);
    const struct pkt_info *p = EXPECT(h, F_ACK, h->pack, r, 0);
    EQ(p->opt.nsack, 1);
    EQ(p->opt.sack[0].start, r + 100);
    EQ(p->opt.sack[0].end, r + 200);
    EQ(nread(h, h->sd), 0);

    peer_send_at(h, r + 300, 100);
    p = EXPECT(h, F_ACK, h->pack, r, 0);
    EQ(p->opt.nsack, 2);
    EQ(p->opt.sack[0].start, r + 300); /* the most recent first (RFC 2018 4) */
    EQ(p->opt.sack[0].end, r + 400);
    EQ(p->opt.sack[1].start, r + 100);
    EQ(p->opt.sack[1].end, r + 200);
    EQ(ctr(h)->tcp_ooo_segs, 2);

    /* Extending a block makes it the first. */
    peer_send_at(h, r + 200, 50);
    p = EXPECT(h, F_ACK, h->pack, r, 0);
    EQ(p->opt.nsack, 2);
    EQ(p->opt.sack[0].start, r + 100);
    EQ(p->opt.sack[0].end, r + 250);
    EQ(p->opt.sack[1].start, r + 300);

    /* The first hole fills: delivered up to the next hole, ACKed at once. */
    peer_send_at(h, r, 100);
    p = EXPECT(h, F_ACK, h->pack, r + 250, 0);
    EQ(p->opt.nsack, 1);
    EQ(p->opt.sack[0].start, r + 300);
    EQ(p->opt.sack[0].end, r + 400);
    EQ(nread(h, h->sd), 250);

    peer_send_at(h, r + 250, 50);
    p = EXPECT(h, F_ACK, h->pack, r + 400, 0);
    EQ(p->opt.nsack, 0);
    uint8_t buf[400];
    EQI(stk_recv(h->e, h->now, h->sd, buf, sizeof(buf), 0), 400);
    for (uint32_t i = 0; i < 400; i++)
        REQUIRE(buf[i] == (uint8_t)(r + i), "byte %u", i);
    th_free(h);
}
END_TEST

START_TEST(ooo_bound)
{
    struct th *h = th_new();
    passive_open(h, &FULL);
    uint32_t r = h->pseq;
    for (uint32_t k = 1; k <= 8; k++) {
        peer_send_at(h, r + 100 * k, 10);
        const struct pkt_info *p = EXPECT(h, F_ACK, h->pack, r, 0);
        EQ(p->opt.nsack, k < 3 ? k : 3); /* three blocks fit beside timestamps */
        EQ(p->opt.sack[0].start, r + 100 * k);
    }
    EQ(ctr(h)->tcp_drop_ooo_full, 0);
    peer_send_at(h, r + 900, 10);
    const struct pkt_info *p = EXPECT(h, F_ACK, h->pack, r, 0);
    REQUIRE(p->opt.sack[0].start != r + 900, "a dropped range was SACKed");
    EQ(ctr(h)->tcp_drop_ooo_full, 1);
    EQ(ctr(h)->tcp_ooo_segs, 8);
    /* Filling the holes below delivers exactly what was kept. */
    for (uint32_t k = 0; k < 9; k++)
        peer_send_at(h, r + 100 * k + (k ? 10 : 0), k ? 90 : 100);
    EQ(nread(h, h->sd), 900);
    th_free(h);
}
END_TEST

/* ---- Delayed ACK -------------------------------------------------------------------------- */

START_TEST(delack_small_segment)
{
    struct th *h = th_new();
    passive_open(h, &BARE);
    stk_time_t t = h->now;
    peer_send(h, F_ACK | F_PSH, 100);
    EXPECT_NONE(h);
    advance(h, t + 40 * MS - 1);
    EXPECT_NONE(h);
    advance(h, t + 100 * MS);
    EXPECT_ACK(h);
    EQ(h->p_time, t + 40 * MS);
    th_free(h);
}
END_TEST

/* TCP_QUICKACK (tcp(7)): set while an ACK is being delayed, the ACK goes at once, and the
 * delayed one is not sent again; with none pending, and set to 0, nothing is sent. */
START_TEST(quickack_sends_the_delayed_ack)
{
    struct th *h = th_new();
    passive_open(h, &BARE);
    EQ(stk_setopt(h->e, h->now, h->sd, STK_TCP_QUICKACK, 1), 0);
    EXPECT_NONE(h);
    stk_time_t t = h->now;
    peer_send(h, F_ACK | F_PSH, 100);
    EXPECT_NONE(h);
    EQ(stk_setopt(h->e, h->now, h->sd, STK_TCP_QUICKACK, 0), 0);
    EXPECT_NONE(h);
    advance(h, t + 5 * MS);
    EXPECT_NONE(h);
    EQ(stk_setopt(h->e, h->now, h->sd, STK_TCP_QUICKACK, 1), 0);
    EXPECT_ACK(h);
    EQ(h->p_time, t + 5 * MS);
    advance(h, t + 100 * MS);
    EXPECT_NONE(h);
    th_free(h);
}
END_TEST

/* An open connection the application closed at once: its FIN sent, not yet acknowledged. */
static struct th *closed_first(void)
{
    struct th *h = th_new();
    passive_open(h, &BARE);
    EQ(stk_close(h->e, h->now, h->sd), 0);
    EXPECT(h, F_ACK | F_FIN, h->pack, h->pseq, 0);
    h->pack++;
    return h;
}

/* The owner stops for good (ustackd's last word): a connection whose data and FIN are not
 * yet acknowledged is reset, so that its peer does not wait for ever; so is one in
 * FIN_WAIT_2 (the peer's FIN would go unanswered); TIME_WAIT is left. */
START_TEST(abort_all_resets_what_is_undelivered)
{
    struct th *h = th_new();
    passive_open(h, &BARE);
    nodelay(h);
    EQI(app_send(h, 100, 0), 100);
    EXPECT(h, F_ACK | F_PSH, h->pack, h->pseq, 100);
    EQ(stk_close(h->e, h->now, h->sd), 0);
    EXPECT(h, F_ACK | F_FIN, h->pack + 100, h->pseq, 0);
    EQ(ctr(h)->conns_by_state[STK_TCP_FIN_WAIT_1], 1);
    EQ(stk_delivering(ctr(h)), 1);
    EQ(stk_abort_all(h->e, h->now), 1);
    EXPECT(h, F_RST | F_ACK, h->pack + 101, h->pseq, 0);
    EXPECT_NONE(h);
    EQ(ctr(h)->tcp_stop_aborts, 1);
    EQ(stk_delivering(ctr(h)), 0);
    EQ(ctr(h)->conns_by_state[STK_TCP_FIN_WAIT_1], 0);
    EQ(stk_abort_all(h->e, h->now), 0);
    th_free(h);

    h = closed_first();
    peer_ack(h);
    EQ(ctr(h)->conns_by_state[STK_TCP_FIN_WAIT_2], 1);
    EQ(stk_delivering(ctr(h)), 1);
    EQ(stk_abort_all(h->e, h->now), 1);
    EXPECT(h, F_RST | F_ACK, h->pack, h->pseq, 0);
    EQ(ctr(h)->conns_by_state[STK_TCP_FIN_WAIT_2], 0);
    th_free(h);

    /* TIME_WAIT: everything done, left alone. */
    h = closed_first();
    peer_send(h, F_ACK | F_FIN, 0);
    EXPECT_ACK(h);
    EQ(ctr(h)->conns_by_state[STK_TCP_TIME_WAIT], 1);
    EQ(stk_delivering(ctr(h)), 0);
    EQ(stk_abort_all(h->e, h->now), 0);
    EXPECT_NONE(h);
    th_free(h);
}
END_TEST

START_TEST(delack_configured_time)
{
    struct stk_config c = base_cfg();
    c.delack_us = 10 * MS;
    struct th *h = th_new_cfg(&c);
    passive_open(h, &BARE);
    stk_time_t t = h->now;
    peer_send(h, F_ACK | F_PSH, 100);
    advance(h, t + 100 * MS);
    EXPECT_ACK(h);
    EQ(h->p_time, t + 10 * MS);
    /* Data we send carries the ACK, and the delayed one is then not sent. */
    t = h->now;
    peer_send(h, F_ACK | F_PSH, 100);
    nodelay(h);
    EQI(app_send(h, 10, 0), 10);
    EXPECT(h, F_ACK | F_PSH, h->pack, h->pseq, 10);
    advance(h, t + 100 * MS);
    EXPECT_NONE(h);
    th_free(h);
}
END_TEST

START_TEST(delack_two_full_segments)
{
    struct th *h = th_new();
    passive_open(h, &BARE);
    peer_send(h, F_ACK, 1460);
    EXPECT_NONE(h);
    peer_send(h, F_ACK, 1460);
    EXPECT_ACK(h);
    EQ(h->p.ack, PEER_ISN + 1 + 2920);
    th_free(h);
}
END_TEST

/* ---- ACKs coalesced over a receive burst (stk_rx_begin / stk_rx_end) --------------------- */

START_TEST(burst_one_ack_per_connection)
{
    struct th *h = th_new();
    passive_open(h, &BARE);
    uint32_t r = h->pseq;
    stk_rx_begin(h->e);
    for (int i = 0; i < 10; i++)
        peer_send(h, F_ACK, 1460);
    EXPECT_NONE(h); /* without the burst: an ACK after every second segment (below) */
    stk_rx_end(h->e, h->now);
    EXPECT(h, F_ACK, h->pack, r + 14600, 0);
    EXPECT_NONE(h);
    EQ(nread(h, h->sd), 14600);
    /* Outside a burst every frame stands alone, as before. */
    for (int i = 0; i < 4; i++)
        peer_send(h, F_ACK, 1460);
    EXPECT(h, F_ACK, h->pack, r + 14600 + 2920, 0);
    EXPECT(h, F_ACK, h->pack, r + 14600 + 5840, 0);
    EXPECT_NONE(h);
    /* An empty burst sends nothing; a burst of one small segment leaves the delayed ACK. */
    stk_rx_begin(h->e);
    stk_rx_end(h->e, h->now);
    EXPECT_NONE(h);
    stk_time_t t = h->now;
    stk_rx_begin(h->e);
    peer_send(h, F_ACK | F_PSH, 100);
    stk_rx_end(h->e, h->now);
    EXPECT_NONE(h);
    advance(h, t + 100 * MS);
    EXPECT_ACK(h);
    EQ(h->p_time, t + 40 * MS);
    th_free(h);
}
END_TEST

/* One ACK never covers more than STK_ACK_STRETCH bytes, burst or not. */
START_TEST(burst_ack_stretch_bound)
{
    struct stk_config c = base_cfg();
    c.rcvbuf = 1u << 20; /* with window scaling: more than 64 KiB in flight */
    struct th *h = th_new_cfg(&c);
    passive_open(h, &FULL);
    uint32_t seg = 1448;
    peer_send(h, F_ACK, seg); /* a first ACK opens the window beyond the SYN-ACK's */
    peer_send(h, F_ACK, seg);
    const struct pkt_info *p = EXPECT_ACK(h);
    REQUIRE(((uint32_t)p->window << 5) > 2 * STK_ACK_STRETCH, "window %u", p->window);
    uint32_t r = h->pseq;
    unsigned n = STK_ACK_STRETCH / seg + 5, first = STK_ACK_STRETCH / seg + 1;
    stk_rx_begin(h->e);
    for (unsigned i = 0; i < n; i++)
        peer_send(h, F_ACK, seg);
    EXPECT(h, F_ACK, h->pack, r + first * seg, 0); /* the segment that reached the bound */
    EXPECT_NONE(h);
    stk_rx_end(h->e, h->now);
    EXPECT(h, F_ACK, h->pack, r + n * seg, 0);
    EXPECT_NONE(h);
    th_free(h);
}
END_TEST

/* What needs an answer at once still gets it inside a burst: a duplicate ACK with SACK for
 * out-of-order data, the ACK when the hole fills, and a FIN's ACK. */
START_TEST(burst_keeps_immediate_acks)
{
    struct th *h = th_new();
    passive_open(h, &FULL);
    uint32_t r = h->pseq, seg = 1448;
    stk_rx_begin(h->e);
    peer_send_at(h, r, seg);
    peer_send_at(h, r + seg, seg);
    EXPECT_NONE(h);
    peer_send_at(h, r + 3 * seg, seg); /* a hole at 2 * seg */
    const struct pkt_info *p = EXPECT(h, F_ACK, h->pack, r + 2 * seg, 0);
    EQ(p->opt.nsack, 1);
    EQ(p->opt.sack[0].start, r + 3 * seg);
    peer_send_at(h, r + 2 * seg, seg); /* fills it */
    EXPECT(h, F_ACK, h->pack, r + 4 * seg, 0);
    h->pseq = r + 4 * seg;
    peer_send(h, F_ACK | F_FIN, 0);
    EXPECT(h, F_ACK, h->pack, r + 4 * seg + 1, 0);
    EXPECT_NONE(h);
    stk_rx_end(h->e, h->now);
    EXPECT_NONE(h); /* everything was acknowledged already */
    EQ(state_of(h, h->sd), STK_TCP_CLOSE_WAIT);
    th_free(h);
}
END_TEST

/* Data we send inside the burst carries the ACK; a connection freed inside the burst (close
 * with unread data: RST) leaves the burst's list (the sanitizer build checks the memory). */
START_TEST(burst_ack_piggyback_and_free)
{
    struct th *h = th_new();
    passive_open(h, &BARE);
    uint32_t r = h->pseq;
    nodelay(h);
    stk_rx_begin(h->e);
    peer_send(h, F_ACK, 1460);
    peer_send(h, F_ACK, 1460);
    EQI(app_send(h, 10, 0), 10);
    EXPECT(h, F_ACK | F_PSH, h->pack, r + 2920, 10);
    stk_rx_end(h->e, h->now);
    EXPECT_NONE(h);
    h->pack += 10;
    peer_ack(h);

    stk_rx_begin(h->e);
    peer_send(h, F_ACK, 1460);
    peer_send(h, F_ACK, 1460);
    EXPECT_NONE(h);
    EQ(stk_close(h->e, h->now, h->sd), 0); /* 5,840 bytes unread: RST */
    EXPECT(h, F_RST | F_ACK, h->pack, r + 5840, 0);
    stk_rx_end(h->e, h->now);
    EXPECT_NONE(h);
    th_free(h);
}
END_TEST

/* ---- Receive buffer autotuning ---------------------------------------------------------- */

static struct th *autotune_setup(uint32_t rcvbuf, uint32_t max)
{
    struct stk_config c = base_cfg();
    c.rcvbuf = rcvbuf;
    c.rcvbuf_max = max;
    return th_new_cfg(&c);
}

/* Forgets what the engine sent so far. */
static void discard_sent(struct th *h)
{
    drain(h);
    while (pkt_capture_pop(&h->segs))
        ;
}

/* The peer sends len bytes in full segments (the pattern of peer_send); its ACKs are discarded. */
static void peer_stream(struct th *h, uint32_t len)
{
    while (len) {
        uint32_t n = len < 1448 ? len : 1448;
        peer_send(h, F_ACK, n);
        len -= n;
    }
    discard_sent(h);
}

/* Reads everything queued and checks it is the peer's pattern from *at on. */
static uint32_t app_read_all(struct th *h, uint32_t *at)
{
    static uint8_t buf[1 << 20];
    ssize_t n = stk_recv(h->e, h->now, h->sd, buf, sizeof(buf), 0);
    if (n == -EAGAIN)
        return 0;
    REQUIRE(n >= 0, "recv: %zd", n);
    for (ssize_t i = 0; i < n; i++)
        REQUIRE(buf[i] == (uint8_t)(*at + (uint32_t)i), "byte %zd of the read at %u", i, *at);
    *at += (uint32_t)n;
    return (uint32_t)n;
}

/* An application that keeps up with a window-limited sender: the buffer doubles per round
 * trip up to the ceiling (no tcp_mem_max: it grows past the 100 KiB that stop
 * rcvbuf_autotune_mem_limit); the window scale was chosen for the ceiling. */
START_TEST(rcvbuf_autotune_grows)
{
    struct th *h = autotune_setup(16384, 1u << 20);
    passive_open(h, &FULL);
    uint32_t at = h->pseq;
    int v = 0;
    EQ(stk_getopt(h->e, h->sd, STK_SO_RCVBUF, &v), 0);
    EQ(v, 16384);
    uint32_t size = 16384;
    for (int round = 0; round < 12; round++) {
        peer_stream(h, size - 1024); /* nearly a full window */
        EQ(app_read_all(h, &at), size - 1024);
        advance_by(h, 300 * MS);
        EQ(stk_getopt(h->e, h->sd, STK_SO_RCVBUF, &v), 0);
        if (round == 0)
            EQ(v, 16384); /* the first read only starts the measurement */
        size = (uint32_t)v;
    }
    EQ(size, 1u << 20);
    REQUIRE(ctr(h)->tcp_rcvbuf_grown >= 4, "grown %llu times",
            (unsigned long long)ctr(h)->tcp_rcvbuf_grown);
    EQ(ctr(h)->tcp_mem_pressure, 0); /* no tcp_mem_max: nothing held it back */
    /* The window now offered covers the grown buffer (scale 5 for 1 MiB). */
    discard_sent(h);
    peer_send(h, F_ACK, 1448);
    peer_send(h, F_ACK, 1448);
    const struct pkt_info *p = EXPECT_ACK(h);
    EQ(p->window, ((1u << 20) - 2 * 1448) >> 5);
    th_free(h);
}
END_TEST

/* Growing keeps unread and out-of-order bytes where they belong. */
START_TEST(rcvbuf_autotune_keeps_data)
{
    struct th *h = autotune_setup(16384, 1u << 20);
    passive_open(h, &FULL);
    uint32_t at = h->pseq;
    peer_stream(h, 12000);
    EQ(app_read_all(h, &at), 12000);
    advance_by(h, 300 * MS);
    uint32_t r = h->pseq;
    peer_stream(h, 8000);
    peer_send_at(h, r + 10000, 1000); /* beyond a hole of 2000 */
    discard_sent(h);
    static uint8_t buf[4000];
    EQI(stk_recv(h->e, h->now, h->sd, buf, sizeof(buf), 0), 4000); /* 16000 taken: grows */
    for (uint32_t i = 0; i < 4000; i++)
        REQUIRE(buf[i] == (uint8_t)(at + i), "byte %u", i);
    at += 4000;
    int v = 0;
    EQ(stk_getopt(h->e, h->sd, STK_SO_RCVBUF, &v), 0);
    EQ(v, 32768);
    discard_sent(h);                 /* the window update after the read */
    peer_send_at(h, r + 8000, 1000); /* fills half the hole */
    EXPECT(h, F_ACK, h->pack, r + 9000, 0);
    peer_send_at(h, r + 9000, 1000);
    EXPECT(h, F_ACK, h->pack, r + 11000, 0);
    h->pseq = r + 11000;
    EQ(app_read_all(h, &at), 7000);
    EQ(at, r + 11000);
    th_free(h);
}
END_TEST

/* SO_RCVBUF fixes the size (Linux's SOCK_RCVBUF_LOCK), and the window scale follows it. */
START_TEST(rcvbuf_autotune_off_with_so_rcvbuf)
{
    struct th *h = autotune_setup(16384, 1u << 20);
    h->lsd = listen_on(h, LPORT, 16);
    EQ(stk_setopt(h->e, h->now, h->lsd, STK_SO_RCVBUF, 16384), 0);
    h->lport = LPORT;
    h->pseq = PEER_ISN;
    const struct pkt_info *p = peer_syn(h, &FULL);
    EQ(p->opt.wscale, 0); /* 16 KiB needs no scaling */
    peer_ack(h);
    h->sd = stk_accept(h->e, h->now, h->lsd, NULL, NULL);
    REQUIRE(h->sd >= 0, "accept: %d", h->sd);
    uint32_t at = h->pseq;
    for (int round = 0; round < 4; round++) {
        peer_stream(h, 15000);
        EQ(app_read_all(h, &at), 15000);
        advance_by(h, 300 * MS);
    }
    int v = 0;
    EQ(stk_getopt(h->e, h->sd, STK_SO_RCVBUF, &v), 0);
    EQ(v, 16384);
    EQ(ctr(h)->tcp_rcvbuf_grown, 0);
    th_free(h);
}
END_TEST

/* tcp_mem_max: autotuning stops where the engine's socket buffers would pass the limit
 * (Linux's tcp_mem pressure), the connection carries on at the size it has, and the count
 * of buffer bytes (tcp_buf_bytes) is exact: back to 0 once the connection is gone. */
START_TEST(rcvbuf_autotune_mem_limit)
{
    struct stk_config c = base_cfg();
    c.rcvbuf = 16384;
    c.rcvbuf_max = 1u << 20;
    c.tcp_mem_max = 100 * 1024;
    struct th *h = th_new_cfg(&c);
    passive_open(h, &FULL);
    EQ(ctr(h)->tcp_buf_bytes, 0); /* no byte stored yet: no memory */
    uint32_t at = h->pseq;
    int v = 0;
    for (int round = 0; round < 10; round++) {
        peer_stream(h, 15000);
        EQ(app_read_all(h, &at), 15000);
        EQ(stk_getopt(h->e, h->sd, STK_SO_RCVBUF, &v), 0);
        EQ(ctr(h)->tcp_buf_bytes, (uint64_t)v); /* the receive ring only: nothing sent */
        uint32_t size = (uint32_t)v;
        peer_stream(h, size - 1024);
        EQ(app_read_all(h, &at), size - 1024);
        advance_by(h, 300 * MS);
    }
    EQ(stk_getopt(h->e, h->sd, STK_SO_RCVBUF, &v), 0);
    EQ(v, 65536); /* 16 -> 32 -> 64 KiB; 128 KiB would pass 100 KiB */
    REQUIRE(ctr(h)->tcp_mem_pressure > 0, "pressure %llu",
            (unsigned long long)ctr(h)->tcp_mem_pressure);
    EQ(ctr(h)->tcp_buf_bytes, 65536);
    /* Sending allocates the send ring, which is counted too, and both go with the socket. */
    static const uint8_t msg[100];
    EQI(stk_send(h->e, h->now, h->sd, msg, sizeof(msg), 0), 100);
    int snd = 0;
    EQ(stk_getopt(h->e, h->sd, STK_SO_SNDBUF, &snd), 0);
    EQ(ctr(h)->tcp_buf_bytes, 65536 + (uint64_t)snd);
    EQ(stk_abort(h->e, h->now, h->sd), 0);
    h->sd = -1;
    drain(h);
    EQ(ctr(h)->tcp_buf_bytes, 0);
    th_free(h);
}
END_TEST

/* The application writes as much as the send buffer takes, a byte pattern by stream
 * offset; the peer checks every data segment against it and acknowledges all it got. */
static uint64_t sndbuf_round(struct th *h, uint64_t *off)
{
    static uint8_t buf[1 << 20];
    for (size_t i = 0; i < sizeof(buf); i++)
        buf[i] = (uint8_t)((*off + i) * 7 + 1);
    ssize_t n = stk_send(h->e, h->now, h->sd, buf, sizeof(buf), 0);
    REQUIRE(n > 0, "send: %zd", n);
    *off += (uint64_t)n;
    drain(h);
    uint64_t got = 0;
    while (pkt_capture_count(&h->segs)) {
        const struct pkt_info *p = POP(h);
        uint32_t at = p->seq - (h->iss + 1);
        for (uint32_t i = 0; i < p->payload_len; i++)
            REQUIRE(p->payload[i] == (uint8_t)((at + i) * 7 + 1), "byte %u", at + i);
        if ((int32_t)(p->seq + (uint32_t)p->payload_len - h->pack) > 0)
            h->pack = p->seq + (uint32_t)p->payload_len;
        got += p->payload_len;
    }
    peer_ack(h);
    return got;
}

/* A sender the congestion window has outgrown: the send buffer grows to twice the window. */
START_TEST(sndbuf_autotune_grows)
{
    struct stk_config c = base_cfg();
    c.sndbuf = 16384;
    c.sndbuf_max = 1u << 20;
    struct th *h = th_new_cfg(&c);
    passive_open(h, &FULL);
    uint64_t off = 0, sent = 0;
    for (int round = 0; round < 12; round++)
        sent += sndbuf_round(h, &off);
    int v = 0;
    EQ(stk_getopt(h->e, h->sd, STK_SO_SNDBUF, &v), 0);
    REQUIRE(v > 16384 * 8, "SO_SNDBUF %d", v);
    REQUIRE(ctr(h)->tcp_sndbuf_grown >= 3, "grown %llu times",
            (unsigned long long)ctr(h)->tcp_sndbuf_grown);
    REQUIRE(sent > 16384 * 12 * 4, "sent %llu", (unsigned long long)sent);
    th_free(h);
}
END_TEST

/* SO_SNDBUF fixes the size (Linux's SOCK_SNDBUF_LOCK), also for accepted sockets. */
START_TEST(sndbuf_autotune_off_with_so_sndbuf)
{
    struct stk_config c = base_cfg();
    c.sndbuf = 16384;
    c.sndbuf_max = 1u << 20;
    struct th *h = th_new_cfg(&c);
    h->lsd = listen_on(h, LPORT, 16);
    EQ(stk_setopt(h->e, h->now, h->lsd, STK_SO_SNDBUF, 16384), 0);
    passive_open(h, &FULL);
    uint64_t off = 0;
    for (int round = 0; round < 12; round++) {
        uint64_t got = sndbuf_round(h, &off);
        REQUIRE(got <= 16384, "round %d: %llu bytes in flight", round, (unsigned long long)got);
    }
    int v = 0;
    EQ(stk_getopt(h->e, h->sd, STK_SO_SNDBUF, &v), 0);
    EQ(v, 16384);
    EQ(ctr(h)->tcp_sndbuf_grown, 0);
    th_free(h);
}
END_TEST

/* A read that opens the window announces it at once only when the peer has less than two
 * full segments of window left, or when the engine cannot see the application (no
 * app_idle, as in the other tests here). With more, the peer is not held back: the update
 * rides on our next segment (a request's reply), or goes in an ACK once the application
 * has looked idle (nothing unread, nothing unsent) at two checks in a row, or at the
 * delayed-ACK time. */
static int app_idle_answer; /* what the application's state says: 1 idle, 0 busy */
static int app_idle_calls;

static int app_idle_fake(void *ctx, int sd, void *user)
{
    (void)ctx, (void)sd, (void)user;
    app_idle_calls++;
    return app_idle_answer;
}

/* An accepted connection of an engine with app_idle, whose application answers idle. */
static struct th *idle_open(int idle)
{
    struct stk_config c = base_cfg(); /* a 128 KiB buffer; the SYN-ACK offered 64 KiB */
    c.app_idle = app_idle_fake;
    app_idle_answer = idle;
    app_idle_calls = 0;
    struct th *h = th_new_cfg(&c);
    passive_open(h, &FULL);
    return h;
}

/* The same after the first read (100 bytes): its opened window owed. */
static struct th *owed_open(int idle)
{
    struct th *h = idle_open(idle);
    uint32_t at = h->pseq;
    peer_send(h, F_ACK | F_PSH, 100);
    EQ(app_read_all(h, &at), 100);
    EXPECT_NONE(h); /* no pure ACK for the first read (it used to draw one) */
    return h;
}

START_TEST(window_update_waits_while_open)
{
    /* The application replies: the reply carries the opened window, no pure ACK. */
    struct th *h = owed_open(0);
    nodelay(h);
    advance_by(h, 2 * MS);
    EXPECT_NONE(h);
    REQUIRE(app_idle_calls >= 2, "checked %d times", app_idle_calls);
    EQI(app_send(h, 200, 0), 200);
    const struct pkt_info *p = EXPECT(h, F_ACK, h->pack, h->pseq, 200);
    EQ(p->window, 131072 >> 2);
    h->pack += 200;
    peer_ack(h);
    int calls = app_idle_calls;
    advance_by(h, 50 * MS);
    EXPECT_NONE(h);
    EQ(app_idle_calls, calls); /* nothing owed any more: no more checks */
    th_free(h);

    /* The application keeps the bytes (busy, or not reading): the ACK at the delayed-ACK
     * time of the first read. */
    h = owed_open(0);
    advance_by(h, 39 * MS);
    EXPECT_NONE(h);
    advance_by(h, 1 * MS);
    p = EXPECT_ACK(h);
    EQ(p->window, 131072 >> 2);
    th_free(h);
}
END_TEST

/* The application took the bytes and waits (a peer whose Nagle holds its next write for our
 * ACK). Seen waiting to read (2): the ACK at the first look, 100 us after the read. */
START_TEST(window_update_when_app_waits)
{
    struct th *h = owed_open(2);
    advance_by(h, 90);
    EXPECT_NONE(h);
    EQ(app_idle_calls, 0);
    advance_by(h, 20);
    const struct pkt_info *p = EXPECT_ACK(h);
    EQ(p->window, 131072 >> 2);
    EQ(app_idle_calls, 1);
    th_free(h);

    /* Idle, not seen waiting (an edge-triggered epoll): the ACK at the second idle look in
     * a row (200 us). */
    h = owed_open(1);
    advance_by(h, 150);
    EXPECT_NONE(h);
    EQ(app_idle_calls, 1);
    advance_by(h, 60);
    p = EXPECT_ACK(h);
    EQ(p->window, 131072 >> 2);
    EQ(app_idle_calls, 2);
    th_free(h);

    /* Busy at the first look, idle at the next two: the ACK at the third (300 us). */
    h = owed_open(0);
    advance_by(h, 150);
    EQ(app_idle_calls, 1);
    app_idle_answer = 1;
    advance_by(h, 100);
    EXPECT_NONE(h);
    EQ(app_idle_calls, 2);
    advance_by(h, 100);
    EXPECT_ACK(h);
    EQ(app_idle_calls, 3);
    th_free(h);

    /* Busy past the first looks: then one look per millisecond (the wheel's t_delack). */
    h = owed_open(0);
    advance_by(h, 5 * MS);
    EXPECT_NONE(h);
    int calls = app_idle_calls;
    REQUIRE(calls >= 4 + 3 && calls <= 4 + 6, "looked %d times in 5 ms", calls);
    app_idle_answer = 1;
    advance_by(h, 1 * MS);
    EXPECT_NONE(h);
    advance_by(h, 1 * MS);
    EXPECT_ACK(h);
    th_free(h);
}
END_TEST

/* A FIN in ESTABLISHED: its ACK is owed as Linux delays it (pingpong), and rides on our own
 * FIN when the application closes; an application seen waiting gets it sent at the first
 * look. Without app_idle (the other tests) it goes at once. */
START_TEST(fin_ack_rides_on_our_fin)
{
    struct th *h = idle_open(0);
    uint32_t at = h->pseq;
    peer_send(h, F_ACK | F_PSH | F_FIN, 100); /* a reply and its FIN, as a server closes */
    EXPECT_NONE(h);
    EQ(state_of(h, h->sd), STK_TCP_CLOSE_WAIT);
    EQ(app_read_all(h, &at), 100);
    EXPECT_NONE(h);
    advance_by(h, 50);
    EQ(stk_close(h->e, h->now, h->sd), 0);
    EXPECT(h, F_ACK | F_FIN, h->pack, h->pseq, 0); /* the FIN carries the FIN's ACK */
    EXPECT_NONE(h);
    th_free(h);

    /* The application waits to read (2): the ACK at the first look. */
    h = idle_open(2);
    peer_send(h, F_ACK | F_FIN, 0);
    EXPECT_NONE(h);
    advance_by(h, 110);
    EXPECT_ACK(h);
    th_free(h);

    /* Out of order FIN (data missing): its duplicate ACK goes at once, as before. */
    h = idle_open(0);
    uint32_t r = h->pseq;
    h->pseq = r + 100;
    peer_send(h, F_ACK | F_FIN, 0);
    EXPECT(h, F_ACK, h->pack, r, 0);
    th_free(h);
}
END_TEST

/* A lone small segment on an open window (the delayed-ACK case): an application seen waiting
 * for more gets the ACK at the first look (a peer's Nagle may hold its next segment for it:
 * headers, then a small body); a busy one leaves it to the delayed-ACK time. */
START_TEST(delack_when_app_waits)
{
    struct th *h = idle_open(1);
    uint32_t at = h->pseq;
    peer_send(h, F_ACK | F_PSH, 100);
    EQ(app_read_all(h, &at), 100);
    advance_by(h, 1 * MS); /* the first read's owed window: idle twice, then sent */
    EXPECT_ACK(h);
    app_idle_answer = 2;
    app_idle_calls = 0;
    peer_send(h, F_ACK | F_PSH, 111); /* response headers; the body waits for this ACK */
    EXPECT_NONE(h);
    EQ(app_read_all(h, &at), 111);
    advance_by(h, 90);
    EXPECT_NONE(h);
    advance_by(h, 20);
    EXPECT_ACK(h);
    EQ(app_idle_calls, 1);

    app_idle_answer = 0; /* not taken yet: the delayed ACK, 40 ms */
    peer_send(h, F_ACK | F_PSH, 50);
    advance_by(h, 20 * MS);
    EXPECT_NONE(h);
    /* News while owed (the quick looks spent): quick looks again; seen waiting now. */
    app_idle_answer = 2;
    app_idle_calls = 0;
    peer_send(h, F_ACK | F_PSH, 50);
    EXPECT_NONE(h);
    advance_by(h, 110);
    EXPECT_ACK(h);
    EQ(app_idle_calls, 1);

    app_idle_answer = 0;
    peer_send(h, F_ACK | F_PSH, 50);
    advance_by(h, 39 * MS);
    EXPECT_NONE(h);
    advance_by(h, 2 * MS); /* 40 ms, rounded up to the wheel's tick */
    EXPECT_ACK(h);
    th_free(h);
}
END_TEST

START_TEST(window_update_at_once_when_nearly_closed)
{
    struct th *h = autotune_setup(16384, 16384); /* no window scale, no autotuning */
    passive_open(h, &FULL);
    uint32_t at = h->pseq;
    peer_stream(h, 16384 - 1000); /* 1000 bytes of window left */
    EQ(app_read_all(h, &at), 16384 - 1000);
    const struct pkt_info *p = EXPECT_ACK(h); /* at once */
    EQ(p->window, 16384);
    th_free(h);
}
END_TEST

/* SO_RCVBUF/SO_SNDBUF on an established connection: a larger size takes effect at once
 * (the window opens, more can be written), a smaller one is kept for later, and either ends
 * autotuning (Linux's SOCK_*BUF_LOCK). */
START_TEST(so_bufs_on_connection)
{
    struct stk_config c = base_cfg();
    c.rcvbuf = c.sndbuf = 16384;
    c.rcvbuf_max = c.sndbuf_max = 1u << 20; /* window scale 5 */
    struct th *h = th_new_cfg(&c);
    passive_open(h, &FULL);
    EQ(stk_setopt(h->e, h->now, h->sd, STK_SO_RCVBUF, 262144), 0);
    const struct pkt_info *p = EXPECT_ACK(h); /* the window update (no app_idle: at once) */
    EQ(p->window, 262144 >> 5);
    int v = 0;
    EQ(stk_getopt(h->e, h->sd, STK_SO_RCVBUF, &v), 0);
    EQ(v, 262144);
    EQ(stk_setopt(h->e, h->now, h->sd, STK_SO_RCVBUF, 4096), 0);
    EQ(stk_getopt(h->e, h->sd, STK_SO_RCVBUF, &v), 0);
    EQ(v, 262144); /* a ring holding data may not shrink: kept */

    EQ(stk_setopt(h->e, h->now, h->sd, STK_SO_SNDBUF, 65536), 0);
    EQ(stk_getopt(h->e, h->sd, STK_SO_SNDBUF, &v), 0);
    EQ(v, 65536);
    nodelay(h);
    EQI(app_send(h, 65536, 0), 65536);

    /* Locked: reading at full speed grows nothing. */
    discard_sent(h);
    uint32_t at = h->pseq;
    for (int round = 0; round < 4; round++) {
        peer_stream(h, 200000);
        EQ(app_read_all(h, &at), 200000);
        advance_by(h, 300 * MS);
    }
    EQ(ctr(h)->tcp_rcvbuf_grown, 0);
    EQ(ctr(h)->tcp_sndbuf_grown, 0);
    th_free(h);
}
END_TEST

/* ---- Nagle, cork, MSG_MORE -------------------------------------------------------------- */

START_TEST(nagle_waits_for_ack)
{
    struct th *h = th_new();
    passive_open(h, &BARE);
    uint32_t s = h->iss + 1;
    EQI(app_send(h, 100, 0), 100);
    EXPECT(h, F_ACK | F_PSH, s, h->pseq, 100);
    EQI(app_send(h, 100, 0), 100);
    EQI(app_send(h, 50, 0), 50);
    EXPECT_NONE(h);
    h->pack = s + 100;
    peer_ack(h);
    EXPECT(h, F_ACK | F_PSH, s + 100, h->pseq, 150);
    /* A full segment is never held. */
    EQI(app_send(h, 1460, 0), 1460);
    EXPECT(h, F_ACK | F_PSH, s + 250, h->pseq, 1460);
    EXPECT_NONE(h);
    th_free(h);
}
END_TEST

START_TEST(nodelay_sends_at_once)
{
    struct th *h = th_new();
    passive_open(h, &BARE);
    uint32_t s = h->iss + 1;
    EQI(app_send(h, 100, 0), 100);
    EXPECT(h, F_ACK | F_PSH, s, h->pseq, 100);
    EQI(app_send(h, 100, 0), 100);
    EXPECT_NONE(h);
    /* Setting NODELAY pushes what Nagle held. */
    nodelay(h);
    EXPECT(h, F_ACK | F_PSH, s + 100, h->pseq, 100);
    EQI(app_send(h, 10, 0), 10);
    EXPECT(h, F_ACK | F_PSH, s + 200, h->pseq, 10);
    th_free(h);
}
END_TEST

START_TEST(cork_holds_partial)
{
    struct th *h = th_new();
    passive_open(h, &BARE);
    nodelay(h);
    uint32_t s = h->iss + 1;
    EQ(stk_setopt(h->e, h->now, h->sd, STK_TCP_CORK, 1), 0);
    stk_time_t t = h->now;
    EQI(app_send(h, 100, 0), 100);
    EQI(app_send(h, 100, 0), 100);
    EXPECT_NONE(h);
    /* Uncorking sends at once. */
    EQ(stk_setopt(h->e, h->now, h->sd, STK_TCP_CORK, 0), 0);
    EXPECT(h, F_ACK | F_PSH, s, h->pseq, 200);
    h->pack = s + 200;
    peer_ack(h);

    /* Corked: full segments go, the tail waits 200 ms. */
    EQ(stk_setopt(h->e, h->now, h->sd, STK_TCP_CORK, 1), 0);
    t = h->now;
    EQI(app_send(h, 1460 + 300, 0), 1760);
    EXPECT(h, F_ACK, s + 200, h->pseq, 1460);
    EXPECT_NONE(h);
    advance(h, t + 199 * MS);
    EXPECT_NONE(h);
    advance(h, t + 300 * MS);
    EXPECT(h, F_ACK | F_PSH, s + 1660, h->pseq, 300);
    EQ(h->p_time, t + 200 * MS);
    th_free(h);
}
END_TEST

START_TEST(msg_more)
{
    struct th *h = th_new();
    passive_open(h, &BARE);
    nodelay(h);
    uint32_t s = h->iss + 1;
    EQI(app_send(h, 100, STK_MSG_MORE), 100);
    EQI(app_send(h, 100, STK_MSG_MORE), 100);
    EXPECT_NONE(h);
    EQI(app_send(h, 100, 0), 100);
    EXPECT(h, F_ACK | F_PSH, s, h->pseq, 300);
    EXPECT_NONE(h);
    th_free(h);
}
END_TEST

/* ---- Retransmission ---------------------------------------------------------------------- */

START_TEST(rto_backoff_and_timeout)
{
    struct stk_config c = base_cfg();
    c.data_retries = 3;
    c.rto_init_us = 1 * SEC;
    struct th *h = th_new_cfg(&c);
    passive_open(h, &BARE); /* no timestamps: the handshake gives no RTT sample */
    uint32_t s = h->iss + 1;
    nodelay(h);
    stk_time_t t = h->now;
    EQI(app_send(h, 100, 0), 100);
    EXPECT(h, F_ACK | F_PSH, s, h->pseq, 100);
    static const unsigned at_s[] = {1, 3, 7};
    for (unsigned i = 0; i < 3; i++) {
        advance(h, t + (at_s[i] + 1) * SEC - 1);
        EXPECT(h, F_ACK | F_PSH, s, h->pseq, 100);
        EQ(h->p_time, t + at_s[i] * SEC);
        EXPECT_NONE(h);
        struct stk_tcp_info ti;
        stk_tcp_info(h->e, h->sd, &ti);
        EQ(ti.retransmits, i + 1);
        EQ(ti.backoff, i + 1);
    }
    EQ(ctr(h)->tcp_rto, 3);
    EQ(state_of(h, h->sd), STK_TCP_ESTABLISHED);
    advance(h, t + 15 * SEC - 1);
    EQ(state_of(h, h->sd), STK_TCP_ESTABLISHED);
    advance(h, t + 15 * SEC);
    EXPECT_NONE(h);
    EQ(state_of(h, h->sd), STK_TCP_CLOSED);
    EQ(ctr(h)->tcp_conn_timeouts, 1);
    char b[4];
    EQI(stk_recv(h->e, h->now, h->sd, b, sizeof(b), 0), -ETIMEDOUT);
    th_free(h);
}
END_TEST

/* A connect on h->sd to a peer that never answers: the SYN, `retries` retransmissions with
 * the timer doubling from 1 s (each with its options), then ETIMEDOUT with nothing more sent. */
static void syn_unanswered(struct th *h, int retries)
{
    struct stk_sockaddr to = {.ip = PEER_IP, .port = PPORT};
    stk_time_t t = h->now, end = t + (((stk_time_t)2 << retries) - 1) * SEC;
    EQI(stk_connect(h->e, h->now, h->sd, &to), -EINPROGRESS);
    const struct pkt_info *p = POP(h);
    uint32_t iss = p->seq;
    h->lport = p->sport;
    EQ(p->flags, F_SYN);
    advance(h, end - SEC);
    for (int k = 1; k <= retries; k++) {
        EXPECT(h, F_SYN, iss, 0, 0);
        EQ(h->p_time, t + (((stk_time_t)1 << k) - 1) * SEC);
        REQUIRE(h->p.opt.has_mss && h->p.opt.ts, "retransmitted SYN keeps its options");
    }
    EXPECT_NONE(h);
    EQ(state_of(h, h->sd), STK_TCP_SYN_SENT);
    advance(h, end);
    EXPECT_NONE(h);
    EQ(state_of(h, h->sd), STK_TCP_CLOSED);
    int err = 0;
    EQ(stk_getopt(h->e, h->sd, STK_SO_ERROR, &err), 0);
    EQI(err, ETIMEDOUT);
}

START_TEST(syn_retries)
{
    struct stk_config c = base_cfg();
    c.syn_retries = 2;
    struct th *h = th_new_cfg(&c);
    h->sd = stk_socket(h->e, NULL);
    syn_unanswered(h, 2);
    th_free(h);
}
END_TEST

/* TCP_SYNCNT: 1..127 (Linux's MAX_TCP_SYNCNT), read back as the engine's syn_retries until
 * set. On a connecting socket it replaces syn_retries; on a listener it bounds the SYN-ACKs
 * of the connections it accepts (Linux's request sockets take the listener's value). */
START_TEST(syncnt_sockopt)
{
    struct th *h = th_new(); /* syn_retries 6 */
    h->sd = stk_socket(h->e, NULL);
    int v = -1;
    EQ(stk_getopt(h->e, h->sd, STK_TCP_SYNCNT, &v), 0);
    EQI(v, 6);
    EQI(stk_setopt(h->e, h->now, h->sd, STK_TCP_SYNCNT, 0), -EINVAL);
    EQI(stk_setopt(h->e, h->now, h->sd, STK_TCP_SYNCNT, 128), -EINVAL);
    EQ(stk_setopt(h->e, h->now, h->sd, STK_TCP_SYNCNT, 1), 0);
    EQ(stk_getopt(h->e, h->sd, STK_TCP_SYNCNT, &v), 0);
    EQI(v, 1);
    syn_unanswered(h, 1);

    /* A listener's value: one SYN-ACK retransmission, then the embryo is gone. */
    h->lsd = listen_on(h, LPORT, 16);
    EQ(stk_setopt(h->e, h->now, h->lsd, STK_TCP_SYNCNT, 1), 0);
    h->lport = LPORT;
    h->pseq = PEER_ISN;
    stk_time_t t = h->now;
    peer_syn(h, &FULL);
    EQ(ctr(h)->conns_by_state[STK_TCP_SYN_RECEIVED], 1);
    advance(h, t + 2 * SEC);
    EXPECT(h, F_SYN | F_ACK, h->iss, PEER_ISN + 1, 0);
    EQ(h->p_time, t + 1 * SEC);
    EXPECT_NONE(h);
    EQ(ctr(h)->conns_by_state[STK_TCP_SYN_RECEIVED], 1);
    advance(h, t + 4 * SEC);
    EXPECT_NONE(h);
    EQ(ctr(h)->conns_by_state[STK_TCP_SYN_RECEIVED], 0);
    th_free(h);
}
END_TEST

START_TEST(syn_refused_by_rst)
{
    struct th *h = th_new();
    h->sd = stk_socket(h->e, NULL);
    struct stk_sockaddr to = {.ip = PEER_IP, .port = PPORT};
    EQI(stk_connect(h->e, h->now, h->sd, &to), -EINPROGRESS);
    const struct pkt_info *p = POP(h);
    h->lport = p->sport;
    h->pport = PPORT;
    /* RFC 9293 3.10.7.3: a RST whose ACK is not for our SYN is dropped; an ACK that is
     * not gets a RST <SEQ=SEG.ACK>; the right RST refuses the connection. */
    uint32_t iss = p->seq;
    h->pseq = 0;
    h->pack = iss + 5;
    peer_send(h, F_RST | F_ACK, 0);
    EXPECT_NONE(h);
    EQ(state_of(h, h->sd), STK_TCP_SYN_SENT);
    peer_send(h, F_ACK, 0);
    EXPECT(h, F_RST, iss + 5, 0, 0);
    EQ(state_of(h, h->sd), STK_TCP_SYN_SENT);
    h->pack = iss + 1;
    peer_send(h, F_RST | F_ACK, 0);
    EXPECT_NONE(h);
    EQ(state_of(h, h->sd), STK_TCP_CLOSED);
    int err = 0;
    EQ(stk_getopt(h->e, h->sd, STK_SO_ERROR, &err), 0);
    EQI(err, ECONNREFUSED);
    th_free(h);
}
END_TEST

/* Sends n full segments of mss bytes with NODELAY; returns the first sequence number. */
static uint32_t send_segments(struct th *h, unsigned n, uint32_t mss)
{
    uint32_t s = h->pack;
    EQI(app_send(h, n * mss, 0), n * mss);
    for (unsigned i = 0; i < n; i++)
        EXPECT(h, F_ACK, s + i * mss, h->pseq, mss);
    EXPECT_NONE(h);
    return s;
}

START_TEST(fast_retransmit_dupacks)
{
    struct th *h = th_new();
    passive_open(h, &BARE);
    nodelay(h);
    uint32_t s = send_segments(h, 5, 1460);
    /* Segment 1 is lost: three duplicate ACKs. */
    peer_ack(h);
    peer_ack(h);
    EXPECT_NONE(h);
    peer_ack(h);
    EXPECT(h, F_ACK, s, h->pseq, 1460);
    EQ(ctr(h)->tcp_fast_retrans, 1);
    struct stk_tcp_info ti;
    stk_tcp_info(h->e, h->sd, &ti);
    EQ(ti.ca_state, 3);
    /* The ACK of everything ends recovery. */
    h->pack = s + 5 * 1460;
    peer_ack(h);
    stk_tcp_info(h->e, h->sd, &ti);
    EQ(ti.ca_state, 0);
    EQ(ti.unacked, 0);
    th_free(h);
}
END_TEST

/* RFC 6582 section 4: after a timeout, duplicate ACKs that the old flight still triggers
 * must not start a fast retransmit (and cut the window again). */
START_TEST(no_fast_retransmit_after_rto)
{
    struct th *h = th_new();
    passive_open(h, &BARE);
    nodelay(h);
    uint32_t s = send_segments(h, 5, 1460);
    /* Nothing is acknowledged: the timeout resends the first segment. */
    advance_by(h, 1100 * STK_US_PER_MS);
    EXPECT(h, F_ACK, s, h->pseq, 1460);
    EQ(ctr(h)->tcp_rto, 1);
    /* Late duplicate ACKs for the old flight arrive. */
    for (int i = 0; i < 4; i++)
        peer_ack(h);
    EQ(ctr(h)->tcp_fast_retrans, 0);
    /* Once snd_una passes what was outstanding at the timeout, the guard is gone. */
    h->pack = s + 5 * 1460;
    peer_ack(h);
    EQ(ctr(h)->tcp_fast_retrans, 0);
    th_free(h);
}
END_TEST

START_TEST(fast_retransmit_sack)
{
    struct th *h = th_new();
    struct popts o = {1460, -1, true, false};
    passive_open(h, &o);
    nodelay(h);
    uint32_t s = send_segments(h, 5, 1460);
    /* One duplicate ACK SACKing three segments above the hole: RFC 6675 IsLost holds. */
    struct pkt_tcp_spec sp;
    spec_for(h, &sp, F_ACK);
    sp.nsack = 1;
    sp.sack[0].start = s + 1460;
    sp.sack[0].end = s + 4 * 1460;
    inject(h, &sp);
    EXPECT(h, F_ACK, s, h->pseq, 1460);
    EQ(ctr(h)->tcp_fast_retrans, 1);
    struct stk_tcp_info ti;
    stk_tcp_info(h->e, h->sd, &ti);
    EQ(ti.sacked, 3 * 1460);
    /* The retransmission fills the hole: everything up to the SACKed range is acked. */
    h->pack = s + 4 * 1460;
    peer_ack(h);
    stk_tcp_info(h->e, h->sd, &ti);
    EQ(ti.unacked, 1460);
    EQ(ti.sacked, 0);
    th_free(h);
}
END_TEST

START_TEST(rtt_estimate)
{
    struct th *h = th_new();
    passive_open(h, &BARE);
    nodelay(h);
    uint32_t rttvar_prev = UINT32_MAX;
    for (int i = 0; i < 4; i++) {
        EQI(app_send(h, 100, 0), 100);
        POP(h);
        advance_by(h, 50 * MS);
        h->pack += 100;
        peer_ack(h);
        struct stk_tcp_info ti;
        stk_tcp_info(h->e, h->sd, &ti);
        EQ(ti.rtt_us, 50000);
        REQUIRE(ti.rttvar_us < rttvar_prev, "rttvar %u did not shrink", ti.rttvar_us);
        rttvar_prev = ti.rttvar_us;
        EQ(ti.rto_us, 200000); /* srtt + 4 rttvar is below rto_min */
    }
    th_free(h);

    /* With timestamps every ACK is a sample. */
    h = th_new();
    passive_open(h, &FULL);
    nodelay(h);
    EQI(app_send(h, 100, 0), 100);
    POP(h);
    advance_by(h, 30 * MS);
    h->pack += 100;
    peer_ack(h);
    struct stk_tcp_info ti;
    stk_tcp_info(h->e, h->sd, &ti);
    REQUIRE(ti.rtt_us > 1000 && ti.rtt_us <= 30000, "rtt %u", ti.rtt_us);
    th_free(h);
}
END_TEST

/* ---- Tail loss probe (RFC 8985 section 7) --------------------------------------------------- */

/* A peer with SACK (no timestamps, so the RTT is the one timed sample) and SRTT = 50 ms: the
 * PTO for a flight of several segments is then 2 * SRTT + 2 ms, the RTO 200 ms. */
#define TLP_PTO (2 * 50 * MS + 2 * MS)
static struct th *tlp_setup(void)
{
    struct th *h = th_new();
    struct popts o = {1460, -1, true, false};
    passive_open(h, &o);
    nodelay(h);
    EQI(app_send(h, 100, 0), 100);
    POP(h);
    advance_by(h, 50 * MS);
    h->pack += 100;
    peer_ack(h);
    struct stk_tcp_info ti;
    stk_tcp_info(h->e, h->sd, &ti);
    EQ(ti.rtt_us, 50000);
    EQ(ti.rto_us, 200000);
    return h;
}

static uint32_t cwnd_of(struct th *h)
{
    struct stk_tcp_info ti;
    stk_tcp_info(h->e, h->sd, &ti);
    return ti.snd_cwnd;
}

/* The peer's one ACK for a whole flight is lost: the probe (the last segment again) goes out
 * 2 * SRTT + 2 ms after the flight, not after the 200 ms RTO; the peer's answer D-SACKs it,
 * so the probe was not needed and cwnd stays. */
START_TEST(tlp_flight_ack_lost)
{
    struct th *h = tlp_setup();
    uint32_t cwnd0 = cwnd_of(h);
    stk_time_t t = h->now;
    uint32_t s = send_segments(h, 5, 1460);
    advance(h, t + TLP_PTO - 1);
    EXPECT_NONE(h);
    advance(h, t + TLP_PTO + MS);
    EXPECT(h, F_ACK, s + 4 * 1460, h->pseq, 1460);
    REQUIRE(h->p_time >= t + TLP_PTO && h->p_time <= t + TLP_PTO + MS, "probe at %llu",
            (unsigned long long)(h->p_time - t));
    EXPECT_NONE(h);
    EQ(ctr(h)->tcp_tlp_probes, 1);
    EQ(ctr(h)->tcp_retrans, 1);
    EQ(ctr(h)->tcp_rto, 0);
    /* The peer had everything: it acknowledges all with a D-SACK for the probe. */
    h->pack = s + 5 * 1460;
    struct pkt_tcp_spec sp;
    spec_for(h, &sp, F_ACK);
    sp.nsack = 1;
    sp.sack[0].start = s + 4 * 1460;
    sp.sack[0].end = s + 5 * 1460;
    inject(h, &sp);
    struct stk_tcp_info ti;
    stk_tcp_info(h->e, h->sd, &ti);
    EQ(ti.unacked, 0);
    EQ(ti.ca_state, 0);
    EQ(ti.snd_cwnd, cwnd0);
    EQ(ctr(h)->tcp_tlp_recoveries, 0);
    advance_by(h, 2 * SEC);
    EXPECT_NONE(h);
    EQ(ctr(h)->tcp_rto, 0);
    th_free(h);
}
END_TEST

/* The last segment is lost and the ACK for the one before it too: the probe resends the last
 * segment, the peer's ACK covers it (no D-SACK, so the probe repaired a loss) and, once an
 * ACK goes beyond the probe, cwnd takes the fast-recovery reduction, not slow start. */
START_TEST(tlp_last_segment_lost)
{
    struct th *h = tlp_setup();
    uint32_t cwnd0 = cwnd_of(h);
    uint32_t s = send_segments(h, 5, 1460);
    advance_by(h, 50 * MS);
    h->pack = s + 3 * 1460; /* segment 4 arrived, its ACK is lost; segment 5 is lost */
    peer_ack(h);
    stk_time_t t = h->now;
    advance(h, t + TLP_PTO + MS);
    EXPECT(h, F_ACK, s + 4 * 1460, h->pseq, 1460);
    REQUIRE(h->p_time >= t + TLP_PTO && h->p_time <= t + TLP_PTO + MS, "probe at %llu",
            (unsigned long long)(h->p_time - t));
    EXPECT_NONE(h);
    EQ(ctr(h)->tcp_tlp_probes, 1);
    h->pack = s + 5 * 1460;
    peer_ack(h);
    EQ(cwnd_of(h), cwnd0); /* not known yet whether segment 5 had arrived */
    EQ(ctr(h)->tcp_tlp_recoveries, 0);
    EQI(app_send(h, 1460, 0), 1460);
    EXPECT(h, F_ACK, s + 5 * 1460, h->pseq, 1460);
    h->pack += 1460;
    peer_ack(h);
    EQ(ctr(h)->tcp_tlp_recoveries, 1);
    struct stk_tcp_info ti;
    stk_tcp_info(h->e, h->sd, &ti);
    EQ(ti.snd_cwnd, ti.snd_ssthresh);
    REQUIRE(ti.snd_cwnd < cwnd0 && ti.snd_cwnd >= 2 * 1460, "cwnd %u (was %u)", ti.snd_cwnd, cwnd0);
    EQ(ti.ca_state, 0);
    EQ(ctr(h)->tcp_rto, 0);
    EQ(ctr(h)->tcp_fast_retrans, 0);
    th_free(h);
}
END_TEST

/* The last two segments are lost: the probe's SACK shows the hole below it, which RACK's rule
 * declares lost at once, so fast recovery (not the RTO) resends it. */
START_TEST(tlp_sack_starts_recovery)
{
    struct th *h = tlp_setup();
    uint32_t s = send_segments(h, 5, 1460);
    advance_by(h, 50 * MS);
    h->pack = s + 3 * 1460;
    peer_ack(h);
    advance_by(h, TLP_PTO + MS);
    EXPECT(h, F_ACK, s + 4 * 1460, h->pseq, 1460);
    EXPECT_NONE(h);
    struct pkt_tcp_spec sp;
    spec_for(h, &sp, F_ACK);
    sp.nsack = 1;
    sp.sack[0].start = s + 4 * 1460;
    sp.sack[0].end = s + 5 * 1460;
    inject(h, &sp);
    EXPECT(h, F_ACK, s + 3 * 1460, h->pseq, 1460);
    EXPECT_NONE(h);
    EQ(ctr(h)->tcp_fast_retrans, 1);
    EQ(ctr(h)->tcp_tlp_recoveries, 1);
    h->pack = s + 5 * 1460;
    peer_ack(h);
    struct stk_tcp_info ti;
    stk_tcp_info(h->e, h->sd, &ti);
    EQ(ti.ca_state, 0);
    EQ(ti.unacked, 0);
    REQUIRE(ti.snd_cwnd >= 2 * 1460, "cwnd %u", ti.snd_cwnd);
    advance_by(h, 2 * SEC);
    EXPECT_NONE(h);
    EQ(ctr(h)->tcp_rto, 0);
    th_free(h);
}
END_TEST

/* Data waits for cwnd when the flight's ACK is lost: the probe is a new segment (beyond
 * cwnd, within the peer's window), not a retransmission; its ACK ends the episode. */
START_TEST(tlp_new_data)
{
    struct th *h = tlp_setup();
    uint32_t cwnd0 = cwnd_of(h);
    EQ(cwnd0, 10 * 1460);
    uint32_t s = h->pack;
    stk_time_t t = h->now;
    EQI(app_send(h, 12 * 1460, 0), 12 * 1460);
    for (unsigned i = 0; i < 10; i++)
        EXPECT(h, F_ACK, s + i * 1460, h->pseq, 1460);
    EXPECT_NONE(h);
    advance(h, t + TLP_PTO + MS);
    EXPECT(h, F_ACK, s + 10 * 1460, h->pseq, 1460);
    REQUIRE(h->p_time >= t + TLP_PTO && h->p_time <= t + TLP_PTO + MS, "probe at %llu",
            (unsigned long long)(h->p_time - t));
    EXPECT_NONE(h);
    EQ(ctr(h)->tcp_tlp_probes, 1);
    EQ(ctr(h)->tcp_retrans, 0);
    h->pack = s + 11 * 1460;
    peer_ack(h);
    EXPECT(h, F_ACK, s + 11 * 1460, h->pseq, 1460);
    EXPECT_NONE(h);
    EQ(ctr(h)->tcp_tlp_recoveries, 0);
    REQUIRE(cwnd_of(h) >= cwnd0, "cwnd %u", cwnd_of(h));
    EQ(ctr(h)->tcp_rto, 0);
    th_free(h);
}
END_TEST

/* No probe into a zero window: the RTO, then the persist timer, handle it. */
START_TEST(tlp_not_on_zero_window)
{
    struct th *h = tlp_setup();
    uint32_t s = send_segments(h, 3, 1460);
    advance_by(h, 50 * MS);
    h->pack = s + 1460;
    h->pwin = 0;
    peer_ack(h);
    stk_time_t t = h->now;
    advance(h, t + 200 * MS - 1);
    EXPECT_NONE(h);
    advance(h, t + 3 * SEC);
    EQ(ctr(h)->tcp_tlp_probes, 0);
    REQUIRE(ctr(h)->tcp_rto >= 1, "rto %llu", (unsigned long long)ctr(h)->tcp_rto);
    REQUIRE(ctr(h)->tcp_zwp >= 1, "zwp %llu", (unsigned long long)ctr(h)->tcp_zwp);
    th_free(h);
}
END_TEST

/* Without SACK there is no probe: the RTO recovers the lost ACK, as before. */
START_TEST(tlp_needs_sack)
{
    struct th *h = th_new();
    passive_open(h, &BARE);
    nodelay(h);
    EQI(app_send(h, 100, 0), 100);
    POP(h);
    advance_by(h, 50 * MS);
    h->pack += 100;
    peer_ack(h);
    stk_time_t t = h->now;
    uint32_t s = send_segments(h, 5, 1460);
    advance(h, t + 200 * MS - 1);
    EXPECT_NONE(h);
    advance(h, t + 200 * MS);
    EXPECT(h, F_ACK, s, h->pseq, 1460);
    EQ(ctr(h)->tcp_rto, 1);
    EQ(ctr(h)->tcp_tlp_probes, 0);
    th_free(h);
}
END_TEST

/* ---- Zero window ------------------------------------------------------------------------- */

/* Received bytes are counted once each, when they become in order: an out-of-order
 * segment later covered again by a retransmission is not counted twice. */
START_TEST(bytes_in_counted_once)
{
    struct th *h = th_new();
    passive_open(h, &BARE);
    uint32_t base = h->pseq;
    peer_send_at(h, base + 100, 100); /* out of order */
    EQ(ctr(h)->tcp_bytes_in, 0);
    h->pseq = base;
    peer_send(h, F_ACK, 300); /* covers the hole and the stored bytes, and 100 more */
    EQ(ctr(h)->tcp_bytes_in, 300);
    struct stk_tcp_info ti;
    stk_tcp_info(h->e, h->sd, &ti);
    EQ(ti.bytes_received, 300);
    peer_send_at(h, base, 300); /* a whole duplicate */
    EQ(ctr(h)->tcp_bytes_in, 300);
    th_free(h);
}
END_TEST

/* An RST in CLOSE-WAIT reports EPIPE, as Linux's tcp_reset() does (the peer had closed). */
START_TEST(rst_in_close_wait_epipe)
{
    struct th *h = th_new();
    passive_open(h, &BARE);
    peer_send(h, F_FIN | F_ACK, 0);
    advance_by(h, SEC);
    drain(h);
    EQ(state_of(h, h->sd), STK_TCP_CLOSE_WAIT);
    peer_send(h, F_RST | F_ACK, 0);
    EQ(state_of(h, h->sd), STK_TCP_CLOSED);
    int err = 0;
    EQ(stk_getopt(h->e, h->sd, STK_SO_ERROR, &err), 0);
    EQI(err, EPIPE);
    th_free(h);
}
END_TEST

/* A passive connection holds its listener's port (Linux's inet_inherit_port): after the
 * listener is closed, bind() to that port fails until the connection is gone. */
START_TEST(passive_child_holds_port)
{
    struct th *h = th_new();
    passive_open(h, &BARE);
    EQ(stk_close(h->e, h->now, h->lsd), 0);
    h->lsd = -1;
    int sd = stk_socket(h->e, NULL);
    struct stk_sockaddr a = {.ip = 0, .port = LPORT};
    EQI(stk_bind(h->e, sd, &a), -EADDRINUSE);
    EQ(stk_abort(h->e, h->now, h->sd), 0);
    drain(h);
    EQI(stk_bind(h->e, sd, &a), 0);
    th_free(h);
}
END_TEST

/* ARP giving up on the next hop fails a connect waiting on it with EHOSTUNREACH, instead of
 * retrying SYNs into the void until ETIMEDOUT. */
START_TEST(arp_failure_unreachable)
{
    struct th *h = th_new();
    int sd = stk_socket(h->e, NULL);
    struct stk_sockaddr to = {.ip = PKT_IP(198, 18, 0, 77), .port = 80};
    EQI(stk_connect(h->e, h->now, sd, &to), -EINPROGRESS);
    advance_by(h, 5 * SEC);
    drain(h);
    EQ(state_of(h, sd), STK_TCP_CLOSED);
    int err = 0;
    EQ(stk_getopt(h->e, sd, STK_SO_ERROR, &err), 0);
    EQI(err, EHOSTUNREACH);
    th_free(h);
}
END_TEST

/* A closed window is probed for as long as the peer answers (RFC 1122 4.2.2.17), but a peer
 * that answers none of data_retries probes in a row is gone: ETIMEDOUT, as Linux after
 * tcp_retries2 unanswered probes. */
START_TEST(zero_window_peer_vanishes)
{
    struct th *h = th_new();
    passive_open(h, &BARE);
    nodelay(h);
    h->pwin = 0;
    peer_ack(h);
    EQI(app_send(h, 1000, 0), 1000);
    /* 30 probes, each answered (still no room): the connection stays. */
    uint64_t zwp0 = ctr(h)->tcp_zwp;
    for (int i = 0; i < 30 && ctr(h)->tcp_zwp < zwp0 + 30; i++) {
        advance_by(h, 130 * SEC);
        drain(h);
        peer_ack(h);
        drain(h);
    }
    EQ(ctr(h)->tcp_zwp >= zwp0 + 20, 1);
    EQ(state_of(h, h->sd), STK_TCP_ESTABLISHED);
    /* Then the peer goes silent. */
    uint64_t before = ctr(h)->tcp_zwp;
    for (int i = 0; i < 40 && state_of(h, h->sd) == STK_TCP_ESTABLISHED; i++) {
        advance_by(h, 130 * SEC);
        drain(h);
    }
    EQ(state_of(h, h->sd), STK_TCP_CLOSED);
    EQ(ctr(h)->tcp_zwp - before, 15); /* data_retries unanswered probes, then give up */
    int err = 0;
    EQ(stk_getopt(h->e, h->sd, STK_SO_ERROR, &err), 0);
    EQI(err, ETIMEDOUT);
    th_free(h);
}
END_TEST

START_TEST(zero_window_persist)
{
    struct th *h = th_new();
    passive_open(h, &BARE);
    nodelay(h);
    h->pwin = 0;
    peer_ack(h);
    struct stk_tcp_info ti;
    stk_tcp_info(h->e, h->sd, &ti);
    EQ(ti.snd_wnd, 0);
    uint32_t rto = ti.rto_us;
    uint32_t s = h->iss + 1;
    stk_time_t t = h->now;
    EQI(app_send(h, 1000, 0), 1000);
    EXPECT_NONE(h);
    /* Probes with one byte beyond the window, backing off. */
    stk_time_t when = t;
    for (unsigned i = 0; i < 3; i++) {
        when += (stk_time_t)rto << i;
        advance(h, when + (rto << i) / 2);
        EXPECT(h, F_ACK, s, h->pseq, 1);
        EQ(h->p_time, when);
        EXPECT_NONE(h);
        peer_ack(h); /* the peer drops the byte: still no room */
        EXPECT_NONE(h);
    }
    EQ(ctr(h)->tcp_zwp, 3);
    EQ(ctr(h)->tcp_bytes_out, 1); /* the probes' byte counts once as new payload */
    EQ(state_of(h, h->sd), STK_TCP_ESTABLISHED);
    /* Data from the peer is acknowledged with SEQ at the right edge of the peer's window
     * (s), not at SND.MAX (s + 1, the probe byte it dropped): a peer with a zero window
     * accepts only SEQ = RCV.NXT, and would drop the ACK unprocessed. */
    peer_send(h, F_ACK | F_PSH, 100);
    advance_by(h, SEC / 2);
    EXPECT(h, F_ACK, s, h->pseq, 0);
    EXPECT_NONE(h);
    /* The window opens: everything goes. */
    h->pwin = 65535;
    peer_ack(h);
    EXPECT(h, F_ACK | F_PSH, s, h->pseq, 1000);
    EXPECT_NONE(h);
    h->pack = s + 1000;
    peer_ack(h);
    EQ(ctr(h)->tcp_bytes_out, 1000); /* each byte once, the probe's included */
    stk_tcp_info(h->e, h->sd, &ti);
    EQ(ti.unacked, 0);
    advance_by(h, 10 * SEC);
    EXPECT_NONE(h);
    th_free(h);
}
END_TEST

/* ---- ICMP errors (RFC 5927, RFC 1191; Linux's tcp_v4_err) -------------------------------- */

/* A router (PEER2) reports an ICMP error about a segment the engine sent on the current
 * connection: the quote is the IPv4 header and the first 8 bytes of TCP (ports, seq).
 * word2 is the second ICMP header word (the next-hop MTU in its low half). */
static void icmp_err_ports(struct th *h, uint8_t type, uint8_t code, uint16_t word2, uint32_t seq,
                           uint16_t sport, uint16_t dport)
{
    uint8_t q[28];
    memset(q, 0, sizeof(q));
    q[0] = 0x45;
    q[2] = 0x05;
    q[3] = 0xdc; /* total length 1500: the segment that did not fit */
    q[6] = 0x40; /* DF */
    q[8] = 3;
    q[9] = 6;
    for (int i = 0; i < 4; i++) {
        q[12 + i] = (uint8_t)(US_IP >> (24 - 8 * i));
        q[16 + i] = (uint8_t)(h->peer_ip >> (24 - 8 * i));
        q[24 + i] = (uint8_t)(seq >> (24 - 8 * i));
    }
    q[20] = (uint8_t)(sport >> 8);
    q[21] = (uint8_t)sport;
    q[22] = (uint8_t)(dport >> 8);
    q[23] = (uint8_t)dport;
    struct pkt_icmp_spec is = {.src_ip = PEER2_IP,
                               .dst_ip = US_IP,
                               .type = type,
                               .code = code,
                               .seq = word2,
                               .payload = q,
                               .payload_len = sizeof(q)};
    memcpy(is.src_mac, PEER2_MAC, 6);
    memcpy(is.dst_mac, US_MAC, 6);
    uint8_t f[128];
    size_t n = pkt_build_icmp(&is, f, sizeof(f));
    REQUIRE(n > 0, "pkt_build_icmp");
    inject_raw(h, f, n);
}

static void icmp_err(struct th *h, uint8_t type, uint8_t code, uint16_t word2, uint32_t seq)
{
    icmp_err_ports(h, type, code, word2, seq, h->lport, h->pport);
}

static int so_error(struct th *h, int sd)
{
    int err = -1;
    EQ(stk_getopt(h->e, sd, STK_SO_ERROR, &err), 0);
    return err;
}

/* connect() with the SYN sent; returns its ISN (h->lport set). */
static uint32_t connect_syn(struct th *h)
{
    h->sd = stk_socket(h->e, NULL);
    REQUIRE(h->sd >= 0, "socket");
    struct stk_sockaddr to = {.ip = h->peer_ip, .port = h->pport};
    EQI(stk_connect(h->e, h->now, h->sd, &to), -EINPROGRESS);
    const struct pkt_info *p = POP(h);
    REQUIRE(p->flags == F_SYN, "SYN expected: %s", fmt(h, p));
    h->lport = p->sport;
    return p->seq;
}

/* Linux: in SYN-SENT any destination unreachable, time exceeded or parameter problem ends
 * the attempt at once with the errno of icmp_err_convert (connect() reports "Connection
 * refused" / "No route to host" without waiting out syn_retries). */
START_TEST(icmp_syn_sent_hard_errors)
{
    static const struct {
        uint8_t type, code;
        int err;
    } cases[] = {
        {3, 3, ECONNREFUSED},  {3, 1, EHOSTUNREACH},  {3, 0, ENETUNREACH},
        {3, 2, ENOPROTOOPT},   {3, 7, EHOSTDOWN},     {3, 8, ENONET},
        {3, 13, EHOSTUNREACH}, {11, 0, EHOSTUNREACH}, {12, 0, EPROTO},
    };
    struct th *h = th_new();
    for (unsigned i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint32_t iss = connect_syn(h);
        EQ(stk_events(h->e, h->sd) & STK_EV_ERR, 0);
        icmp_err(h, cases[i].type, cases[i].code, 0, iss);
        EXPECT_NONE(h);
        EQ(state_of(h, h->sd), STK_TCP_CLOSED);
        EQ(stk_events(h->e, h->sd) & STK_EV_ERR, STK_EV_ERR);
        EQI(so_error(h, h->sd), cases[i].err);
        EQ(ctr(h)->tcp_icmp_hard, i + 1);
        stk_close(h->e, h->now, h->sd);
    }
    /* The error is reported by the next call, as for a RST. */
    uint32_t iss = connect_syn(h);
    icmp_err(h, 3, 3, 0, iss);
    char b[4];
    EQI(stk_recv(h->e, h->now, h->sd, b, sizeof(b), 0), -ECONNREFUSED);
    /* Unknown codes, source quench and redirects are ignored. */
    iss = connect_syn(h);
    icmp_err(h, 3, 16, 0, iss);
    icmp_err(h, 4, 0, 0, iss);
    icmp_err(h, 5, 1, 0, iss);
    EQ(state_of(h, h->sd), STK_TCP_SYN_SENT);
    EQ(ctr(h)->tcp_icmp_err_in, sizeof(cases) / sizeof(cases[0]) + 2);
    th_free(h);
}
END_TEST

/* RFC 5927 4.1: an error quoting a sequence number outside [SND.UNA, SND.MAX] cannot be
 * about a segment in flight; a quote naming no connection (or a listener) is not ours. Both
 * are counted and change nothing. */
START_TEST(icmp_outwin_and_unknown_ignored)
{
    struct th *h = th_new();
    uint32_t iss = connect_syn(h);
    icmp_err(h, 3, 3, 0, iss - 1);
    icmp_err(h, 3, 3, 0, iss + 2);
    icmp_err(h, 3, 3, 0, iss + 0x40000000u);
    EQ(state_of(h, h->sd), STK_TCP_SYN_SENT);
    EQ(ctr(h)->tcp_icmp_outwin, 3);
    EQ(ctr(h)->tcp_icmp_hard, 0);
    icmp_err(h, 3, 3, 0, iss + 1); /* SND.MAX: in */
    EQ(ctr(h)->tcp_icmp_hard, 1);
    EQ(state_of(h, h->sd), STK_TCP_CLOSED);
    stk_close(h->e, h->now, h->sd);
    uint64_t outwin = ctr(h)->tcp_icmp_outwin;

    passive_open(h, &FULL);
    nodelay(h);
    EQI(app_send(h, 1000, 0), 1000);
    EXPECT(h, F_ACK | F_PSH, h->iss + 1, h->pseq, 1000);
    icmp_err(h, 3, 4, 1200, h->iss); /* below SND.UNA */
    icmp_err(h, 3, 4, 1200, h->iss + 1002);
    icmp_err(h, 3, 1, 0, h->iss + 2000);
    EQ(ctr(h)->tcp_icmp_outwin, outwin + 3);
    EQ(ctr(h)->tcp_pmtu_updates, 0);
    EQ(ctr(h)->tcp_icmp_soft, 0);
    int mss = 0;
    EQ(stk_getopt(h->e, h->sd, STK_TCP_MAXSEG, &mss), 0);
    EQI(mss, 1448);
    /* No connection: other ports, or the listener's port as source. */
    icmp_err_ports(h, 3, 3, 0, h->iss + 1, h->lport, 9);
    icmp_err_ports(h, 3, 3, 0, 0, LPORT, 1234);
    EQ(ctr(h)->tcp_icmp_nosock, 2);
    EXPECT_NONE(h);
    EQ(state_of(h, h->sd), STK_TCP_ESTABLISHED);
    EQ(stk_events(h->e, h->sd) & STK_EV_ERR, 0);
    EQ(state_of(h, h->lsd), STK_TCP_LISTEN);
    th_free(h);
}
END_TEST

/* Established: an error is a soft error (Linux without IP_RECVERR): nothing now; if the
 * connection then times out, it is the error reported instead of ETIMEDOUT. SO_ERROR
 * returns (and clears) it, as Linux's; new data acknowledged forgets it. */
START_TEST(icmp_soft_error_on_timeout)
{
    struct stk_config c = base_cfg();
    c.data_retries = 2;
    c.rto_init_us = 1 * SEC;
    struct th *h = th_new_cfg(&c);
    passive_open(h, &BARE);
    nodelay(h);
    uint32_t s = h->iss + 1;
    EQI(app_send(h, 100, 0), 100);
    EXPECT(h, F_ACK | F_PSH, s, h->pseq, 100);
    icmp_err(h, 3, 1, 0, s);
    EXPECT_NONE(h);
    EQ(state_of(h, h->sd), STK_TCP_ESTABLISHED);
    EQ(stk_events(h->e, h->sd) & STK_EV_ERR, 0);
    EQ(ctr(h)->tcp_icmp_soft, 1);
    EQI(so_error(h, h->sd), EHOSTUNREACH);
    EQI(so_error(h, h->sd), 0);
    /* A new one, then an ACK of new data: forgotten. */
    icmp_err(h, 11, 0, 0, s);
    h->pack = s + 50;
    peer_ack(h);
    EQI(so_error(h, h->sd), 0);
    /* Again, and the peer is gone: the timeout reports the soft error. */
    icmp_err(h, 3, 1, 0, s + 50);
    advance_by(h, 20 * SEC);
    EQ(state_of(h, h->sd), STK_TCP_CLOSED);
    EQ(ctr(h)->tcp_conn_timeouts, 1);
    char b[4];
    EQI(stk_recv(h->e, h->now, h->sd, b, sizeof(b), 0), -EHOSTUNREACH);
    th_free(h);
}
END_TEST

/* The same timeout without an ICMP error is ETIMEDOUT (so the test above tells them apart),
 * and a passive child in SYN-RECEIVED is dropped silently on a host unreachable quoting its
 * ISN (Linux's tcp_req_err), but kept on a port unreachable. */
START_TEST(icmp_syn_received_child)
{
    struct th *h = th_new();
    h->lsd = listen_on(h, LPORT, 16);
    h->pseq = PEER_ISN;
    peer_syn(h, &FULL);
    icmp_err(h, 3, 3, 0, h->iss);
    icmp_err(h, 3, 1, 0, h->iss + 1); /* not the ISN */
    EQ(ctr(h)->tcp_icmp_hard, 0);
    EQ(ctr(h)->conns_by_state[STK_TCP_SYN_RECEIVED], 1);
    icmp_err(h, 3, 1, 0, h->iss);
    EQ(ctr(h)->tcp_icmp_hard, 1);
    EQ(ctr(h)->conns_by_state[STK_TCP_SYN_RECEIVED], 0);
    EXPECT_NONE(h);
    /* The peer's ACK now finds no connection: RST. */
    peer_ack(h);
    EXPECT(h, F_RST, h->pack, 0, 0);
    struct stk_sockaddr peer;
    EQI(stk_accept(h->e, h->now, h->lsd, NULL, &peer), -EAGAIN);
    th_free(h);
}
END_TEST

/* RFC 1191: fragmentation needed with a next-hop MTU of 1200 on a connection sending 1448
 * bytes (1460 less timestamps): the MSS drops to 1200 - 40 - 12, what is in flight goes
 * again at once in segments of that size (no congestion response: Linux's
 * tcp_simple_retransmit), and so does everything after. */
START_TEST(icmp_frag_needed_pmtu)
{
    struct th *h = th_new();
    passive_open(h, &FULL);
    nodelay(h);
    uint32_t s = h->iss + 1;
    EQI(app_send(h, 4 * 1448, 0), 4 * 1448);
    for (int i = 0; i < 4; i++)
        EXPECT(h, F_ACK, s + i * 1448, h->pseq, 1448);
    EXPECT_NONE(h);
    struct stk_tcp_info ti;
    stk_tcp_info(h->e, h->sd, &ti);
    uint32_t cwnd = ti.snd_cwnd;
    icmp_err(h, 3, 4, 1200, s);
    EQ(ctr(h)->tcp_pmtu_updates, 1);
    int mss = 0;
    EQ(stk_getopt(h->e, h->sd, STK_TCP_MAXSEG, &mss), 0);
    EQI(mss, 1148);
    /* 5792 bytes again: five of 1148 and the 52 left. */
    for (int i = 0; i < 5; i++) {
        EXPECT(h, F_ACK, s + i * 1148, h->pseq, 1148);
        EQ(h->p.ip_len, 1200);
    }
    EXPECT(h, F_ACK, s + 5 * 1148, h->pseq, 4 * 1448 - 5 * 1148);
    EXPECT_NONE(h);
    stk_tcp_info(h->e, h->sd, &ti);
    EQ(ti.snd_cwnd, cwnd);
    EQ(ctr(h)->tcp_rto, 0);
    /* A second copy of the message, a larger MTU, or one without an MTU change nothing. */
    icmp_err(h, 3, 4, 1200, s);
    icmp_err(h, 3, 4, 1400, s);
    icmp_err(h, 3, 4, 0, s);
    EQ(ctr(h)->tcp_pmtu_ignored, 3);
    EXPECT_NONE(h);
    /* Everything acknowledged; new data goes out at the new size. */
    h->pack = s + 4 * 1448;
    peer_ack(h);
    EQI(app_send(h, 3000, 0), 3000);
    EXPECT(h, F_ACK, h->pack, h->pseq, 1148);
    EXPECT(h, F_ACK, h->pack + 1148, h->pseq, 1148);
    EXPECT(h, F_ACK | F_PSH, h->pack + 2296, h->pseq, 3000 - 2296);
    EXPECT_NONE(h);
    /* Below Linux's min_pmtu (552) the MTU taken is 552: MSS 500. */
    icmp_err(h, 3, 4, 300, h->pack);
    EQ(stk_getopt(h->e, h->sd, STK_TCP_MAXSEG, &mss), 0);
    EQI(mss, 552 - 40 - 12);
    EQ(ctr(h)->tcp_pmtu_updates, 2);
    EXPECT(h, F_ACK, h->pack, h->pseq, 500);
    th_free(h);
}
END_TEST

/* A path MTU learnt in SYN-SENT (from a frag-needed quoting the SYN) fixes the MSS when the
 * SYN-ACK arrives; it is not an error. */
START_TEST(icmp_frag_needed_syn_sent)
{
    struct th *h = th_new();
    uint32_t iss = connect_syn(h);
    icmp_err(h, 3, 4, 1000, iss);
    EQ(state_of(h, h->sd), STK_TCP_SYN_SENT);
    EQ(ctr(h)->tcp_pmtu_updates, 1);
    h->pack = iss + 1;
    h->pseq = PEER_ISN;
    struct pkt_tcp_spec sp;
    syn_spec(h, &sp, F_SYN | F_ACK, &BARE);
    inject(h, &sp);
    h->pseq++;
    EXPECT_ACK(h);
    int mss = 0;
    EQ(stk_getopt(h->e, h->sd, STK_TCP_MAXSEG, &mss), 0);
    EQI(mss, 960);
    th_free(h);
}
END_TEST

/* RFC 6069 (Linux's tcp_ld_RTO_revert): a net or host unreachable about SND.UNA while the
 * timer is backed off undoes one backoff step, re-arming the timer from the last
 * retransmission; other codes, other sequence numbers and an unbacked timer change nothing. */
START_TEST(icmp_rto_revert)
{
    struct stk_config c = base_cfg();
    c.rto_init_us = 1 * SEC;
    struct th *h = th_new_cfg(&c);
    passive_open(h, &BARE); /* no RTT sample: the RTO is rto_init */
    nodelay(h);
    uint32_t s = h->iss + 1;
    stk_time_t t = h->now;
    EQI(app_send(h, 100, 0), 100);
    EXPECT(h, F_ACK | F_PSH, s, h->pseq, 100);
    icmp_err(h, 3, 1, 0, s); /* not backed off yet */
    EQ(ctr(h)->tcp_rto_reverts, 0);
    advance(h, t + 3500 * MS);
    EXPECT(h, F_ACK | F_PSH, s, h->pseq, 100);
    EQ(h->p_time, t + 1 * SEC);
    EXPECT(h, F_ACK | F_PSH, s, h->pseq, 100);
    EQ(h->p_time, t + 3 * SEC);
    EXPECT_NONE(h);              /* next at t + 7 s */
    icmp_err(h, 3, 1, 0, s + 1); /* not SND.UNA */
    icmp_err(h, 3, 3, 0, s);     /* port unreachable */
    EQ(ctr(h)->tcp_rto_reverts, 0);
    icmp_err(h, 3, 1, 0, s); /* backoff 2 -> 1: 2 s from t + 3 s */
    EQ(ctr(h)->tcp_rto_reverts, 1);
    struct stk_tcp_info ti;
    stk_tcp_info(h->e, h->sd, &ti);
    EQ(ti.backoff, 1);
    advance(h, t + 5 * SEC - 1);
    EXPECT_NONE(h);
    advance(h, t + 5 * SEC);
    EXPECT(h, F_ACK | F_PSH, s, h->pseq, 100);
    EQ(h->p_time, t + 5 * SEC);
    /* Backed off twice again (next at t + 9 s): two net unreachables take it to 1 s. */
    advance(h, t + 5500 * MS);
    icmp_err(h, 3, 0, 0, s);
    icmp_err(h, 3, 0, 0, s);
    icmp_err(h, 3, 0, 0, s); /* backoff 0: nothing more */
    EQ(ctr(h)->tcp_rto_reverts, 3);
    advance(h, t + 6 * SEC - 1);
    EXPECT_NONE(h);
    advance(h, t + 6 * SEC);
    EXPECT(h, F_ACK | F_PSH, s, h->pseq, 100);
    EQ(h->p_time, t + 6 * SEC);
    /* Backoff 1 again, next at t + 8 s. At t + 7.5 s a revert to 1 s from t + 6 s is already
     * past: the segment goes at once (the next 1 ms tick). */
    advance(h, t + 7500 * MS);
    EXPECT_NONE(h);
    stk_tcp_info(h->e, h->sd, &ti);
    EQ(ti.backoff, 1);
    icmp_err(h, 3, 1, 0, s);
    EQ(ctr(h)->tcp_rto_reverts, 4);
    advance(h, t + 7502 * MS);
    EXPECT(h, F_ACK | F_PSH, s, h->pseq, 100);
    REQUIRE(h->p_time <= t + 7501 * MS, "sent at %llu", (unsigned long long)(h->p_time - t));
    EXPECT_NONE(h);
    th_free(h);
}
END_TEST

/* ---- Keepalive ------------------------------------------------------------------------------ */

static void keepalive_on(struct th *h, int idle, int intvl, int cnt)
{
    EQ(stk_setopt(h->e, h->now, h->sd, STK_TCP_KEEPIDLE, idle), 0);
    EQ(stk_setopt(h->e, h->now, h->sd, STK_TCP_KEEPINTVL, intvl), 0);
    EQ(stk_setopt(h->e, h->now, h->sd, STK_TCP_KEEPCNT, cnt), 0);
    EQ(stk_setopt(h->e, h->now, h->sd, STK_SO_KEEPALIVE, 1), 0);
}

/* Keepalive set at t (idle 10 s, interval 2 s) on a peer that never answers: probes at 10,
 * 12 and 14 s, then at 16 s the RST and ETIMEDOUT (three probes, or a user timeout of 15 s). */
static void keepalive_dies_at_16s(struct th *h, stk_time_t t)
{
    advance(h, t + 30 * SEC);
    for (unsigned i = 0; i < 3; i++) {
        EXPECT(h, F_ACK, h->pack - 1, h->pseq, 0);
        EQ(h->p_time, t + (10 + 2 * i) * SEC);
    }
    EXPECT(h, F_RST | F_ACK, h->pack, h->pseq, 0);
    EQ(h->p_time, t + 16 * SEC);
    EXPECT_NONE(h);
    EQ(state_of(h, h->sd), STK_TCP_CLOSED);
    EQ(ctr(h)->tcp_keepalive_drops, 1);
    char b[4];
    EQI(stk_recv(h->e, h->now, h->sd, b, sizeof(b), 0), -ETIMEDOUT);
}

START_TEST(keepalive_answered)
{
    struct th *h = th_new();
    passive_open(h, &BARE);
    stk_time_t t = h->now;
    keepalive_on(h, 10, 2, 3);
    advance(h, t + 10 * SEC - 1);
    EXPECT_NONE(h);
    advance(h, t + 10 * SEC);
    EXPECT(h, F_ACK, h->pack - 1, h->pseq, 0);
    EQ(h->p_time, t + 10 * SEC);
    /* Answered: the connection lives, and the next probe comes after a new idle time. */
    advance_by(h, 500 * MS);
    peer_ack(h);
    t = h->now;
    advance(h, t + 10 * SEC - 1);
    EXPECT_NONE(h);
    advance(h, t + 10 * SEC);
    EXPECT(h, F_ACK, h->pack - 1, h->pseq, 0);
    EQ(state_of(h, h->sd), STK_TCP_ESTABLISHED);
    th_free(h);
}
END_TEST

START_TEST(keepalive_timeout)
{
    struct th *h = th_new();
    passive_open(h, &BARE);
    stk_time_t t = h->now;
    keepalive_on(h, 10, 2, 3);
    keepalive_dies_at_16s(h, t);
    th_free(h);
}
END_TEST

/* IP_TOS: set on the listener (the ECN bits cleared, as Linux for TCP), it marks the SYN-ACK
 * and is inherited by the connection; changed on the connection, the next segment has it. A
 * RST for a closed port carries 0. */
START_TEST(ip_tos_on_segments)
{
    struct th *h = th_new();
    h->lsd = listen_on(h, LPORT, 16);
    EQI(stk_setopt(h->e, h->now, h->lsd, STK_IP_TOS, 256), -EINVAL);
    EQI(stk_setopt(h->e, h->now, h->lsd, STK_IP_TOS, -1), -EINVAL);
    EQ(stk_setopt(h->e, h->now, h->lsd, STK_IP_TOS, 0x13), 0);
    int v = -1;
    EQ(stk_getopt(h->e, h->lsd, STK_IP_TOS, &v), 0);
    EQI(v, 0x10);
    h->lport = LPORT;
    h->pseq = PEER_ISN;
    EQ(peer_syn(h, &BARE)->tos, 0x10);
    peer_ack(h);
    h->sd = stk_accept(h->e, h->now, h->lsd, NULL, NULL);
    REQUIRE(h->sd >= 0, "accept: %d", h->sd);
    EQ(stk_getopt(h->e, h->sd, STK_IP_TOS, &v), 0);
    EQI(v, 0x10);
    nodelay(h);
    uint32_t s = h->iss + 1;
    EQI(app_send(h, 100, 0), 100);
    EXPECT(h, F_ACK | F_PSH, s, h->pseq, 100);
    EQ(h->p.tos, 0x10);
    EQ(stk_setopt(h->e, h->now, h->sd, STK_IP_TOS, 0xb8), 0);
    EQI(app_send(h, 100, 0), 100);
    EXPECT(h, F_ACK | F_PSH, s + 100, h->pseq, 100);
    EQ(h->p.tos, 0xb8);
    th_free(h);
}
END_TEST

/* ---- TCP_USER_TIMEOUT ----------------------------------------------------------------------- */

/* Set on the listener, inherited by the accepted connection (tcp(7)); negative is EINVAL. */
static void user_timeout_listener(struct th *h, int ms)
{
    h->lsd = listen_on(h, LPORT, 16);
    int v = -1;
    EQ(stk_getopt(h->e, h->lsd, STK_TCP_USER_TIMEOUT, &v), 0);
    EQI(v, 0);
    EQI(stk_setopt(h->e, h->now, h->lsd, STK_TCP_USER_TIMEOUT, -1), -EINVAL);
    EQ(stk_setopt(h->e, h->now, h->lsd, STK_TCP_USER_TIMEOUT, ms), 0);
    passive_open(h, &BARE);
    EQ(stk_getopt(h->e, h->sd, STK_TCP_USER_TIMEOUT, &v), 0);
    EQI(v, ms);
}

/* Unacknowledged data: the connection fails with ETIMEDOUT once the head of the flight has
 * waited the user timeout, long before data_retries retransmissions (15 here: ~15 min), and
 * the RTO that would come later is brought forward to that moment. No RST (Linux's
 * tcp_write_err). */
START_TEST(user_timeout_unacked)
{
    struct stk_config c = base_cfg();
    c.rto_init_us = 1 * SEC;
    struct th *h = th_new_cfg(&c);
    user_timeout_listener(h, 5000);
    uint32_t s = h->iss + 1;
    nodelay(h);
    stk_time_t t = h->now;
    EQI(app_send(h, 100, 0), 100);
    EXPECT(h, F_ACK | F_PSH, s, h->pseq, 100);
    static const unsigned at_s[] = {1, 3}; /* the next, at 7 s, is clamped to 5 s */
    for (unsigned i = 0; i < 2; i++) {
        advance(h, t + (at_s[i] + 1) * SEC - 1);
        EXPECT(h, F_ACK | F_PSH, s, h->pseq, 100);
        EQ(h->p_time, t + at_s[i] * SEC);
        EXPECT_NONE(h);
    }
    advance(h, t + 5 * SEC - 1);
    EQ(state_of(h, h->sd), STK_TCP_ESTABLISHED);
    advance(h, t + 5 * SEC);
    EXPECT_NONE(h);
    EQ(state_of(h, h->sd), STK_TCP_CLOSED);
    EQ(ctr(h)->tcp_conn_timeouts, 1);
    char b[4];
    EQI(stk_recv(h->e, h->now, h->sd, b, sizeof(b), 0), -ETIMEDOUT);
    th_free(h);
}
END_TEST

/* A zero window bounded by the user timeout even though the peer answers every probe
 * (without it the probing goes on for as long as the peer answers: zero_window_peer_vanishes),
 * counted from the first probe. */
START_TEST(user_timeout_zero_window)
{
    struct th *h = th_new();
    user_timeout_listener(h, 10000);
    nodelay(h);
    h->pwin = 0;
    peer_ack(h);
    uint32_t s = h->iss + 1;
    EQI(app_send(h, 1000, 0), 1000);
    EXPECT_NONE(h);
    uint64_t zwp0 = ctr(h)->tcp_zwp;
    for (int i = 0; i < 100 && ctr(h)->tcp_zwp == zwp0; i++)
        advance_by(h, 10 * MS);
    EXPECT(h, F_ACK, s, h->pseq, 1);
    stk_time_t first = h->p_time;
    peer_ack(h);
    for (int i = 0; i < 200 && state_of(h, h->sd) == STK_TCP_ESTABLISHED; i++) {
        advance_by(h, 100 * MS);
        drain(h);
        peer_ack(h); /* every probe answered, the window still closed */
        drain(h);
    }
    EQ(state_of(h, h->sd), STK_TCP_CLOSED);
    REQUIRE(h->now >= first + 10 * SEC && h->now <= first + 10 * SEC + 100 * MS,
            "closed %llu ms after the first probe", (unsigned long long)((h->now - first) / MS));
    EQ(ctr(h)->tcp_zwp - zwp0 >= 3, 1);
    int err = 0;
    EQ(stk_getopt(h->e, h->sd, STK_SO_ERROR, &err), 0);
    EQI(err, ETIMEDOUT);
    th_free(h);
}
END_TEST

/* With keepalive, the user timeout replaces TCP_KEEPCNT: the connection is reset at the first
 * probe time after the peer has been silent that long (16 s here, not 10 + 2 * 9 = 28 s). */
START_TEST(user_timeout_keepalive)
{
    struct th *h = th_new();
    user_timeout_listener(h, 15000);
    stk_time_t t = h->now;
    keepalive_on(h, 10, 2, 9);
    keepalive_dies_at_16s(h, t);
    th_free(h);
}
END_TEST

/* Unacknowledged data: no keepalive probe (Linux's tcp_keepalive_timer leaves the peer to the
 * retransmission timer); once all is acknowledged, probes start after an idle time. */
START_TEST(keepalive_data_outstanding)
{
    struct th *h = th_new();
    passive_open(h, &BARE);
    nodelay(h);
    keepalive_on(h, 2, 1, 2);
    uint32_t s = h->iss + 1;
    EQI(app_send(h, 1000, 0), 1000);
    EXPECT(h, F_ACK | F_PSH, s, h->pseq, 1000);
    /* 2 + 3 x 1 s would have ended the connection by keepalive: only retransmissions. */
    stk_time_t t = h->now;
    advance(h, t + 12 * SEC);
    unsigned rexmt = 0;
    while (pkt_capture_peek(&h->segs, 0)) {
        EXPECT(h, F_ACK | F_PSH, s, h->pseq, 1000);
        rexmt++;
    }
    REQUIRE(rexmt >= 2, "%u retransmissions in 12 s", rexmt);
    EQ(ctr(h)->tcp_keepalive_drops, 0);
    EQ(state_of(h, h->sd), STK_TCP_ESTABLISHED);
    /* Acknowledged: idle from now on, probed after 2 s. */
    h->pack = s + 1000;
    peer_ack(h);
    t = h->now;
    advance(h, t + 2 * SEC + SEC / 2);
    EXPECT(h, F_ACK, s + 999, h->pseq, 0);
    EXPECT_NONE(h);
    th_free(h);
}
END_TEST

/* ---- TIME-WAIT ------------------------------------------------------------------------------ */

/* Active close of an active open: returns with the connection in TIME-WAIT. */
static void to_time_wait(struct th *h)
{
    active_open(h, &BARE);
    EQ(stk_shutdown(h->e, h->now, h->sd, STK_SHUT_WR), 0);
    EXPECT(h, F_FIN | F_ACK, h->pack, h->pseq, 0);
    h->pack++;
    peer_ack(h);
    EQ(state_of(h, h->sd), STK_TCP_FIN_WAIT_2);
    peer_send(h, F_FIN | F_ACK, 0);
    EXPECT_ACK(h);
    EQ(state_of(h, h->sd), STK_TCP_TIME_WAIT);
}

/* A connect from an explicitly bound port whose last connection to the same peer is in
 * TIME-WAIT (closed by the application): with timestamps the TIME-WAIT is recycled, as for an
 * ephemeral port and as Linux's tcp_twsk_unique does for a bound port (RFC 6191); without them
 * the tuple is in use, EADDRNOTAVAIL. */
static int bound_socket(struct th *h, uint16_t port)
{
    int sd = stk_socket(h->e, NULL);
    REQUIRE(sd >= 0, "socket");
    EQI(stk_setopt(h->e, h->now, sd, STK_SO_REUSEADDR, 1), 0);
    struct stk_sockaddr a = {.ip = 0, .port = port};
    EQI(stk_bind(h->e, sd, &a), 0);
    return sd;
}

START_TEST(time_wait_reused_by_bound_connect)
{
    const struct popts *opts[2] = {&FULL, &BARE};
    for (int i = 0; i < 2; i++) {
        struct th *h = th_new();
        active_open_from(h, bound_socket(h, 40001), opts[i]);
        EQ(h->lport, 40001);
        EQ(stk_shutdown(h->e, h->now, h->sd, STK_SHUT_WR), 0);
        EXPECT(h, F_FIN | F_ACK, h->pack, h->pseq, 0);
        h->pack++;
        peer_ack(h);
        peer_send(h, F_FIN | F_ACK, 0);
        EXPECT_ACK(h);
        EQ(state_of(h, h->sd), STK_TCP_TIME_WAIT);
        EQ(stk_close(h->e, h->now, h->sd), 0);
        uint64_t reused = ctr(h)->tcp_tw_reuse;
        int sd = bound_socket(h, 40001);
        struct stk_sockaddr to = {.ip = h->peer_ip, .port = h->pport};
        if (opts[i]->ts) {
            EQI(stk_connect(h->e, h->now, sd, &to), -EINPROGRESS);
            const struct pkt_info *p = POP(h);
            REQUIRE(p->flags == F_SYN && p->sport == 40001, "SYN from 40001: %s", fmt(h, p));
            EQ(ctr(h)->tcp_tw_reuse, reused + 1);
        } else {
            EQI(stk_connect(h->e, h->now, sd, &to), -EADDRNOTAVAIL);
            EQ(ctr(h)->tcp_tw_reuse, reused);
        }
        th_free(h);
    }
}
END_TEST

START_TEST(time_wait_expiry)
{
    struct stk_config c = base_cfg();
    c.msl_us = 1 * SEC;
    struct th *h = th_new_cfg(&c);
    to_time_wait(h);
    stk_time_t t = h->now;
    advance(h, t + 2 * SEC - 1);
    EQ(state_of(h, h->sd), STK_TCP_TIME_WAIT);
    EXPECT_NONE(h);
    advance(h, t + 2 * SEC);
    EQ(state_of(h, h->sd), STK_TCP_CLOSED);
    EXPECT_NONE(h);
    /* The tuple is gone: the peer's ACK now meets a closed port. */
    peer_ack(h);
    EXPECT(h, F_RST, h->pack, 0, 0);
    th_free(h);
}
END_TEST

START_TEST(time_wait_fin_reacked)
{
    struct stk_config c = base_cfg();
    c.msl_us = 1 * SEC;
    struct th *h = th_new_cfg(&c);
    to_time_wait(h);
    advance_by(h, 1500 * MS);
    /* Our last ACK was lost: the peer's FIN again is ACKed again, and TIME-WAIT restarts. */
    h->pseq--;
    peer_send(h, F_FIN | F_ACK, 0);
    EXPECT_ACK(h);
    stk_time_t t = h->now;
    advance(h, t + 2 * SEC - 1);
    EQ(state_of(h, h->sd), STK_TCP_TIME_WAIT);
    /* A RST anywhere but RCV.NXT does not end TIME-WAIT (Linux's tcp_timewait_state_process:
     * only an in-window RST does, time_wait_rst_at_rcv_nxt). */
    h->pseq += 1000;
    peer_send(h, F_RST, 0);
    h->pseq -= 1001;
    peer_send(h, F_RST, 0);
    h->pseq += 1;
    EQ(state_of(h, h->sd), STK_TCP_TIME_WAIT);
    EXPECT_NONE(h);
    advance(h, t + 2 * SEC);
    EQ(state_of(h, h->sd), STK_TCP_CLOSED);
    EXPECT_NONE(h);
    th_free(h);
}
END_TEST

/* A passive connection the engine closed first, with timestamps: TIME-WAIT on our side. */
static void passive_to_time_wait(struct th *h)
{
    passive_open(h, &FULL);
    EQ(stk_shutdown(h->e, h->now, h->sd, STK_SHUT_WR), 0);
    EXPECT(h, F_FIN | F_ACK, h->iss + 1, h->pseq, 0);
    h->pack = h->iss + 2;
    peer_ack(h);
    peer_send(h, F_FIN | F_ACK, 0);
    EXPECT_ACK(h);
    EQ(state_of(h, h->sd), STK_TCP_TIME_WAIT);
}

/* RFC 6191 / Linux's tcp_timewait_state_process: a SYN for a TIME-WAIT pair reopens it when
 * its timestamp is newer, or equal (the client's clock did not tick between its last ACK and
 * its new SYN, common with many short connections) with a sequence number above RCV.NXT;
 * an older timestamp, or an equal one without a higher sequence, gets a challenge ACK. */
START_TEST(time_wait_syn_reopen)
{
    struct th *h = th_new();
    passive_to_time_wait(h);
    uint32_t rcv_nxt = h->pseq;
    struct pkt_tcp_spec s;
    /* Equal timestamp, sequence not above RCV.NXT: refused. */
    h->pseq = rcv_nxt - 100;
    syn_spec(h, &s, F_SYN, &FULL);
    inject(h, &s);
    EXPECT(h, F_ACK, h->iss + 2, rcv_nxt, 0);
    EQ(state_of(h, h->sd), STK_TCP_TIME_WAIT);
    /* One challenge ACK per connection per 500 ms: wait, with the peer's clock held back so
     * that its timestamp stays where it was. */
    advance_by(h, SEC / 2);
    h->ts_base -= 500;
    /* Older timestamp with a higher sequence: refused (PAWS). */
    h->ts_base -= 10;
    h->pseq = rcv_nxt + 5000;
    syn_spec(h, &s, F_SYN, &FULL);
    inject(h, &s);
    EXPECT(h, F_ACK, h->iss + 2, rcv_nxt, 0);
    h->ts_base += 10;
    /* Equal timestamp, higher sequence: a new connection. */
    const struct pkt_info *p = peer_syn(h, &FULL);
    EQ(p->ack, rcv_nxt + 5001);
    EQ(state_of(h, h->sd), STK_TCP_CLOSED);
    peer_ack(h);
    int sd = stk_accept(h->e, h->now, h->lsd, NULL, NULL);
    REQUIRE(sd >= 0, "accept %d", sd);
    EQ(state_of(h, sd), STK_TCP_ESTABLISHED);
    EXPECT_NONE(h);
    th_free(h);
}
END_TEST

/* A TIME-WAIT connection answers a SYN it refuses at most once per 500 ms, whatever the
 * engine-wide challenge-ACK budget (Linux's tcp_timewait_check_oow_rate_limit): with a budget
 * of 0 or 1 per second, twenty refused SYNs 500 ms apart all get their ACK. */
START_TEST(time_wait_acks_own_limit)
{
    struct stk_config c = base_cfg();
    c.challenge_ack_per_s = 1;
    struct th *h = th_new_cfg(&c);
    passive_to_time_wait(h);
    uint32_t rcv_nxt = h->pseq;
    struct pkt_tcp_spec s;
    uint64_t lim0 = ctr(h)->tcp_challenge_limited;
    for (int i = 0; i < 20; i++) {
        h->pseq = rcv_nxt - 100;
        syn_spec(h, &s, F_SYN, &FULL);
        inject(h, &s);
        inject(h, &s); /* the same again at once: limited */
        EXPECT(h, F_ACK, h->iss + 2, rcv_nxt, 0);
        EXPECT_NONE(h);
        advance_by(h, SEC / 2);
        h->ts_base -= 500; /* the peer's timestamp stays where it was: still refused */
        EQ(state_of(h, h->sd), STK_TCP_TIME_WAIT);
    }
    EQ(ctr(h)->tcp_challenge_limited - lim0, 20);
    th_free(h);
}
END_TEST

START_TEST(time_wait_syn_newer_ts)
{
    struct th *h = th_new();
    passive_to_time_wait(h);
    /* A newer timestamp reopens even with a lower sequence number. */
    advance_by(h, 5 * MS);
    h->pseq -= 100000;
    peer_syn(h, &FULL);
    peer_ack(h);
    int sd = stk_accept(h->e, h->now, h->lsd, NULL, NULL);
    REQUIRE(sd >= 0, "accept %d", sd);
    EQ(state_of(h, sd), STK_TCP_ESTABLISHED);
    th_free(h);
}
END_TEST

/* The both-ends benchmark stall (docs/benchmarks.md): a client reuses a port whose old
 * connection is in TIME-WAIT here, with a SYN that is not "newer" (older timestamp, lower
 * sequence: another stack's random offsets). Our ACK makes the client, in SYN-SENT, answer
 * with a RST at exactly RCV.NXT and no timestamp (RFC 9293 3.10.7.3); as with Linux's default
 * (tcp_rfc1337 = 0) that RST ends TIME-WAIT, and the client's SYN retransmission one RTO
 * later reaches the listener. Before, the RST was ignored and the client retried for 2 MSL. */
START_TEST(time_wait_rst_at_rcv_nxt)
{
    struct th *h = th_new();
    passive_to_time_wait(h);
    uint32_t rcv_nxt = h->pseq;
    uint64_t rst_in = ctr(h)->tcp_rst_in;
    struct pkt_tcp_spec s;
    /* The new incarnation: timestamp 1,000,000 ms behind, sequence below RCV.NXT. */
    h->ts_base -= 1000000;
    h->pseq = rcv_nxt - 7777777;
    syn_spec(h, &s, F_SYN, &FULL);
    inject(h, &s);
    EXPECT(h, F_ACK, h->iss + 2, rcv_nxt, 0);
    EQ(state_of(h, h->sd), STK_TCP_TIME_WAIT);
    /* A RST at RCV.NXT with a timestamp older than TS.Recent: refused (PAWS). */
    h->pseq = rcv_nxt;
    peer_send(h, F_RST, 0);
    EQ(state_of(h, h->sd), STK_TCP_TIME_WAIT);
    /* The client's answer to our ACK: RST, seq = the ACK's ack, no timestamp. */
    h->ts = false;
    peer_send(h, F_RST, 0);
    h->ts = true;
    EQ(state_of(h, h->sd), STK_TCP_CLOSED);
    EQ(ctr(h)->tcp_rst_in, rst_in + 1);
    EXPECT_NONE(h);
    /* Its SYN retransmission, 1 s later, same sequence and clock: a new connection. */
    advance_by(h, SEC);
    h->pseq = rcv_nxt - 7777777;
    const struct pkt_info *p = peer_syn(h, &FULL);
    EQ(p->ack, rcv_nxt - 7777776);
    peer_ack(h);
    int sd = stk_accept(h->e, h->now, h->lsd, NULL, NULL);
    REQUIRE(sd >= 0, "accept %d", sd);
    EQ(state_of(h, sd), STK_TCP_ESTABLISHED);
    EXPECT_NONE(h);
    th_free(h);
}
END_TEST

/* ---- SYN cookies ------------------------------------------------------------------------- */

/* A listener (backlog 2) whose SYN queue two SYNs filled; the peer is set to PPORT with
 * PEER_ISN, whose SYN will be answered with a cookie. */
static struct th *full_synq(void)
{
    struct th *h = th_new();
    h->lsd = listen_on(h, LPORT, 2);
    for (int i = 0; i < 2; i++) {
        h->pport = (uint16_t)(PPORT + 10 + i);
        h->pseq = 1000u * (uint32_t)i;
        peer_syn(h, &BARE);
    }
    EQ(ctr(h)->tcp_syncookies_sent, 0);
    h->pport = PPORT;
    h->pseq = PEER_ISN;
    return h;
}

START_TEST(syn_cookies)
{
    /* Two SYNs fill the SYN queue; the next SYN is answered statelessly. */
    struct th *h = full_synq();
    struct popts o = {1400, 7, true, false};
    const struct pkt_info *p = peer_syn(h, &o);
    EQ(ctr(h)->tcp_syncookies_sent, 1);
    EQ(p->opt.mss, 1460);
    REQUIRE(p->opt.wscale == -1 && !p->opt.sack_perm, "cookie SYN-ACK offers no WS/SACK: %s",
            fmt(h, p));
    /* Completing the handshake with the cookie creates the connection. */
    peer_ack(h);
    EXPECT_NONE(h);
    EQ(ctr(h)->tcp_syncookies_ok, 1);
    h->sd = stk_accept(h->e, h->now, h->lsd, NULL, NULL);
    REQUIRE(h->sd >= 0, "accept %d", h->sd);
    EQ(state_of(h, h->sd), STK_TCP_ESTABLISHED);
    peer_send(h, F_ACK | F_PSH, 10);
    EQ(nread(h, h->sd), 10);
    int v;
    stk_getopt(h->e, h->sd, STK_TCP_MAXSEG, &v);
    EQI(v, 1400); /* the largest table MSS not above the peer's */
    nodelay(h);
    EQI(app_send(h, 5, 0), 5);
    EXPECT(h, F_ACK | F_PSH, h->iss + 1, h->pseq, 5);

    /* A forged ACK: refused with RST. */
    h->pport = PPORT + 1;
    h->pseq = 777;
    h->pack = 0x12345678;
    peer_ack(h);
    EXPECT(h, F_RST, 0x12345678, 0, 0);
    EQ(ctr(h)->tcp_syncookies_bad, 1);
    EQ(ctr(h)->tcp_syncookies_ok, 1);
    /* A cookie replayed from another port does not validate either. */
    h->pport = PPORT + 2;
    h->pseq = PEER_ISN + 1;
    h->pack = h->iss + 1;
    peer_ack(h);
    EXPECT(h, F_RST, h->iss + 1, 0, 0);
    EQ(ctr(h)->tcp_syncookies_bad, 2);
    th_free(h);
}
END_TEST

/* A cookie SYN-ACK to a SYN with timestamps carries the peer's window scale and
 * SACK-permitted in the low bits of its timestamp value (stk__cookie_ts), never ahead of the
 * clock; the handshake ACK's echo restores them, so the cookie connection scales its windows
 * and may use SACK like a queued one (as Linux's cookie_init_timestamp). */
START_TEST(syn_cookies_keep_options)
{
    struct th *h = full_synq();
    const struct pkt_info *p = peer_syn(h, &FULL);
    EQ(ctr(h)->tcp_syncookies_sent, 1);
    REQUIRE(p->opt.ts && p->opt.sack_perm, "cookie SYN-ACK: %s", fmt(h, p));
    EQ(p->opt.wscale, 2); /* as a queued connection's (128 KiB receive buffer) */
    EQ(p->window, 65535);
    uint32_t cookie_ts = p->opt.tsval;
    EQ(cookie_ts & 31, 7 | 16);
    REQUIRE((int32_t)(cookie_ts - (uint32_t)(h->now / MS)) <= 0, "timestamp %u ahead of %u",
            cookie_ts, (uint32_t)(h->now / MS));
    peer_ack(h);
    EXPECT_NONE(h);
    EQ(ctr(h)->tcp_syncookies_ok, 1);
    h->sd = stk_accept(h->e, h->now, h->lsd, NULL, NULL);
    REQUIRE(h->sd >= 0, "accept %d", h->sd);
    struct stk_tcp_info ti;
    EQ(stk_tcp_info(h->e, h->sd, &ti), 0);
    EQ(ti.options, 7);
    EQ(ti.snd_wscale, 7);
    EQ(ti.rcv_wscale, 2);
    EQ(ti.snd_wnd, 65535u << 7);
    /* Data both ways; our later timestamps do not go back behind the cookie's. */
    peer_send(h, F_ACK | F_PSH, 10);
    EQ(nread(h, h->sd), 10);
    nodelay(h);
    EQI(app_send(h, 5, 0), 5);
    p = POP(h);
    EQ(p->payload_len, 5);
    REQUIRE(p->opt.ts && (int32_t)(p->opt.tsval - cookie_ts) >= 0, "tsval %u before %u",
            p->opt.tsval, cookie_ts);
    th_free(h);
}
END_TEST

/* A listener (backlog 1) whose SYN queue a first peer (PPORT + 10) fills, so that the SYN
 * from PPORT (ISN PEER_ISN) is answered with a cookie (*cookie_pack: the peer's ACK for it);
 * then the first handshake completes, which fills the accept queue. */
static struct th *cookie_setup(uint32_t *cookie_pack)
{
    struct th *h = th_new();
    h->lsd = listen_on(h, LPORT, 1);
    h->pport = PPORT + 10;
    h->pseq = 1;
    peer_syn(h, &BARE);
    uint32_t fill_pack = h->pack;
    h->pport = PPORT;
    h->pseq = PEER_ISN;
    peer_syn(h, &BARE);
    EQ(ctr(h)->tcp_syncookies_sent, 1);
    *cookie_pack = h->pack;
    h->pport = PPORT + 10;
    h->pseq = 2;
    h->pack = fill_pack;
    peer_ack(h);
    return h;
}

/* A good cookie meeting a full accept queue is dropped without a RST (Linux's
 * cookie_v4_check): the peer, established on its side, retries with its data later. */
START_TEST(syn_cookie_accept_queue_full)
{
    uint32_t cookie_pack;
    struct th *h = cookie_setup(&cookie_pack);
    /* The first handshake completed and filled the accept queue. */
    EXPECT_NONE(h);
    /* The cookie's ACK: valid, no room. */
    h->pport = PPORT;
    h->pseq = PEER_ISN + 1;
    h->pack = cookie_pack;
    peer_ack(h);
    EXPECT_NONE(h);
    EQ(ctr(h)->tcp_syncookies_ok, 0);
    EQ(ctr(h)->tcp_syncookies_bad, 0);
    EQ(ctr(h)->tcp_listen_overflow, 1);
    /* accept() makes room; the peer's request completes the cookie's handshake. */
    int first = stk_accept(h->e, h->now, h->lsd, NULL, NULL);
    REQUIRE(first >= 0, "accept %d", first);
    peer_send(h, F_ACK | F_PSH, 10);
    EXPECT_NONE(h);
    EQ(ctr(h)->tcp_syncookies_ok, 1);
    h->sd = stk_accept(h->e, h->now, h->lsd, NULL, NULL);
    REQUIRE(h->sd >= 0, "accept %d", h->sd);
    EQ(nread(h, h->sd), 10);
    th_free(h);
}
END_TEST

/* The peer took a cookie SYN-ACK, but its retransmitted SYN (sent before that SYN-ACK
 * arrived) found room in the SYN queue and made a child with another ISN. The peer's ACK
 * of the cookie must complete the cookie's connection (Linux's tcp_check_req hands it back
 * to the listener), not reset the peer's established connection. */
/* As syn_cookie_over_child, but the peer's request on the cookie's connection was dropped
 * (the accept queue was full) before the retransmitted SYN made the child: the peer's ACK
 * of the child's SYN-ACK then carries a sequence number past its request, and the cookie
 * is good only with the child's ISN. The child goes and nothing is answered (Linux would
 * reset the peer); the peer's retransmitted request completes the cookie's connection. */
START_TEST(syn_cookie_over_child_after_data)
{
    uint32_t cookie_pack;
    struct th *h = cookie_setup(&cookie_pack);
    /* The first handshake completed and filled the accept queue. */
    /* The peer's ACK of the cookie and its request: good, no room (dropped). */
    h->pport = PPORT;
    h->pseq = PEER_ISN + 1;
    h->pack = cookie_pack;
    peer_send(h, F_ACK | F_PSH, 10);
    EXPECT_NONE(h);
    EQ(ctr(h)->tcp_listen_overflow, 1);
    int first = stk_accept(h->e, h->now, h->lsd, NULL, NULL);
    REQUIRE(first >= 0, "accept %d", first);
    /* The retransmitted SYN: a child with another ISN. */
    advance_by(h, 1 * SEC);
    h->pseq = PEER_ISN;
    peer_syn(h, &BARE);
    uint32_t child_pack = h->pack;
    REQUIRE(child_pack != cookie_pack, "the child's ISN equals the cookie");
    /* The peer, established on the cookie, answers the child's SYN-ACK with its ACK: after
     * its request. No RST. */
    h->pseq = PEER_ISN + 11;
    h->pack = cookie_pack;
    peer_ack(h);
    EXPECT_NONE(h);
    EQ(ctr(h)->tcp_syncookies_child_dropped, 1);
    /* The child is gone: no SYN-ACK retransmission. */
    advance_by(h, 5 * SEC);
    EXPECT_NONE(h);
    /* The peer retransmits its request: the cookie's connection, with it. */
    h->pseq = PEER_ISN + 1;
    peer_send(h, F_ACK | F_PSH, 10);
    EQ(ctr(h)->tcp_syncookies_ok, 1);
    h->sd = stk_accept(h->e, h->now, h->lsd, NULL, NULL);
    REQUIRE(h->sd >= 0, "accept %d", h->sd);
    EQ(state_of(h, h->sd), STK_TCP_ESTABLISHED);
    EQ(nread(h, h->sd), 10);
    th_free(h);
}
END_TEST

START_TEST(syn_cookie_over_child)
{
    uint32_t cookie_pack;
    struct th *h = cookie_setup(&cookie_pack);
    /* The SYN queue empties: the first handshake completes and is accepted. */
    int first = stk_accept(h->e, h->now, h->lsd, NULL, NULL);
    REQUIRE(first >= 0, "accept %d", first);
    /* The retransmitted SYN: a real child, another ISN. */
    advance_by(h, 1 * SEC);
    h->pport = PPORT;
    h->pseq = PEER_ISN;
    peer_syn(h, &BARE);
    REQUIRE(h->pack != cookie_pack, "the child's ISN equals the cookie");
    EQ(ctr(h)->tcp_syncookies_sent, 1);
    /* The peer acknowledges the cookie and sends its request. */
    h->pack = cookie_pack;
    h->iss = cookie_pack - 1;
    peer_ack(h);
    EXPECT_NONE(h);
    EQ(ctr(h)->tcp_syncookies_ok, 1);
    peer_send(h, F_ACK | F_PSH, 10);
    h->sd = stk_accept(h->e, h->now, h->lsd, NULL, NULL);
    REQUIRE(h->sd >= 0, "accept %d", h->sd);
    EQ(state_of(h, h->sd), STK_TCP_ESTABLISHED);
    EQ(nread(h, h->sd), 10);
    nodelay(h);
    EQI(app_send(h, 5, 0), 5);
    EXPECT(h, F_ACK | F_PSH, cookie_pack, h->pseq, 5);
    /* No second connection on the tuple: nothing more to accept, the child's SYN-ACK
     * timer is gone. */
    EQI(stk_accept(h->e, h->now, h->lsd, NULL, NULL), -EAGAIN);
    h->pack = cookie_pack + 5;
    peer_ack(h);
    advance_by(h, 10 * SEC);
    EXPECT_NONE(h);
    th_free(h);
}
END_TEST

/* ---- Aborts ------------------------------------------------------------------------------- */

START_TEST(linger_zero_rst)
{
    struct th *h = th_new();
    passive_open(h, &BARE);
    EQ(stk_setopt(h->e, h->now, h->sd, STK_SO_LINGER, 0), 0);
    EQ(stk_close(h->e, h->now, h->sd), 0);
    EXPECT(h, F_RST | F_ACK, h->pack, h->pseq, 0);
    EXPECT_NONE(h);
    peer_ack(h);
    EXPECT(h, F_RST, h->pack, 0, 0); /* the connection is gone */
    th_free(h);
}
END_TEST

START_TEST(close_unread_rst)
{
    struct th *h = th_new();
    passive_open(h, &BARE);
    peer_send(h, F_ACK | F_PSH, 10);
    EQ(stk_close(h->e, h->now, h->sd), 0);
    EXPECT(h, F_RST | F_ACK, h->pack, h->pseq, 0);
    EXPECT_NONE(h);
    th_free(h);
}
END_TEST

START_TEST(orphan_data_rst)
{
    struct th *h = th_new();
    passive_open(h, &BARE);
    EQ(stk_close(h->e, h->now, h->sd), 0);
    EXPECT(h, F_FIN | F_ACK, h->pack, h->pseq, 0);
    h->pack++;
    peer_ack(h);
    EXPECT_NONE(h);
    peer_send(h, F_ACK | F_PSH, 10);
    EXPECT(h, F_RST | F_ACK, h->pack, h->pseq - 10, 0);
    EXPECT_NONE(h);
    peer_send(h, F_ACK | F_PSH, 10);
    EXPECT(h, F_RST, h->pack, 0, 0);
    th_free(h);
}
END_TEST

/* ---- API ------------------------------------------------------------------------------------ */

/* Closing a listener ends the handshakes in its SYN queue (they refer to it): the peer gets
 * a RST, and its late ACK meets no listener. ASan would catch a dangling child. */
START_TEST(listener_close_with_syn_queue)
{
    struct th *h = th_new();
    h->lsd = listen_on(h, LPORT, 8);
    h->pseq = PEER_ISN;
    peer_syn(h, &BARE);
    EQI(stk_close(h->e, h->now, h->lsd), 0);
    const struct pkt_info *p = POP(h);
    EQ(p->flags & F_RST, F_RST);
    EQ(ctr(h)->conns_by_state[STK_TCP_SYN_RECEIVED], 0);
    EQ(ctr(h)->conns_by_state[STK_TCP_LISTEN], 0);
    peer_ack(h);
    p = POP(h);
    EQ(p->flags & F_RST, F_RST);
    advance_by(h, 10 * STK_US_PER_S);
    th_free(h);
}
END_TEST

START_TEST(listen_backlog_overflow)
{
    struct th *h = th_new();
    h->lsd = listen_on(h, LPORT, 1);
    EQI(stk_accept(h->e, h->now, h->lsd, NULL, NULL), -EAGAIN);
    h->pseq = PEER_ISN;
    peer_syn(h, &BARE);
    peer_ack(h);
    EXPECT_NONE(h);
    EQ(stk_events(h->e, h->lsd) & STK_EV_IN, STK_EV_IN);
    /* The accept queue is full: the next SYN is dropped and counted. */
    h->pport = PPORT + 1;
    struct pkt_tcp_spec s;
    syn_spec(h, &s, F_SYN, &BARE);
    inject(h, &s);
    EXPECT_NONE(h);
    EQ(ctr(h)->tcp_listen_overflow, 1);
    int sd = stk_accept(h->e, h->now, h->lsd, NULL, NULL);
    REQUIRE(sd >= 0, "accept");
    EQI(stk_accept(h->e, h->now, h->lsd, NULL, NULL), -EAGAIN);
    /* Room again: the retried SYN is answered. */
    inject(h, &s);
    const struct pkt_info *p = POP(h);
    EQ(p->flags, F_SYN | F_ACK);
    th_free(h);
}
END_TEST

/* stk_sock_walk lists what `ss` would: the listener with its accept queue, an accepted
 * connection with its queues, one still in the accept queue (no socket yet), and no
 * connection once it is closed. */
struct walk_log {
    struct stk_sock_entry ent[8];
    int n, stop_at;
};

static int walk_cb(void *ctx, const struct stk_sock_entry *ent)
{
    struct walk_log *w = ctx;
    if (w->n < 8)
        w->ent[w->n] = *ent;
    w->n++;
    return w->n == w->stop_at ? 7 : 0;
}

static const struct stk_sock_entry *walk_find(struct walk_log *w, uint16_t rport)
{
    for (int i = 0; i < w->n && i < 8; i++)
        if (w->ent[i].remote.port == rport)
            return &w->ent[i];
    return NULL;
}

START_TEST(sock_walk)
{
    struct th *h = th_new();
    passive_open(h, &FULL);
    int first = h->sd;
    peer_send(h, F_ACK | F_PSH, 100);
    nodelay(h);
    EQI(app_send(h, 50, 0), 50);
    EQ(POP(h)->payload_len, 50); /* carries the ACK of the 100 bytes */
    /* A second connection completes the handshake but is not accepted. */
    h->pport = PPORT + 1;
    h->pseq = PEER_ISN;
    peer_syn(h, &FULL);
    peer_ack(h);

    struct walk_log w = {.stop_at = -1};
    EQI(stk_sock_walk(h->e, walk_cb, &w), 0);
    EQI(w.n, 3);
    /* Listeners come first. */
    EQ(w.ent[0].info.state, STK_TCP_LISTEN);
    EQI(w.ent[0].sd, h->lsd);
    EQ(w.ent[0].local.port, LPORT);
    EQ(w.ent[0].remote.ip, 0);
    EQ(w.ent[0].rcvq, 1);  /* accept queue */
    EQ(w.ent[0].sndq, 16); /* backlog */
    const struct stk_sock_entry *a = walk_find(&w, PPORT);
    REQUIRE(a != NULL, "accepted connection listed");
    EQI(a->sd, first);
    EQ(a->info.state, STK_TCP_ESTABLISHED);
    EQ(a->local.ip, US_IP);
    EQ(a->local.port, LPORT);
    EQ(a->remote.ip, PEER_IP);
    EQ(a->rcvq, 100);
    EQ(a->sndq, 50);
    EQ(a->info.bytes_received, 100);
    const struct stk_sock_entry *b = walk_find(&w, PPORT + 1);
    REQUIRE(b != NULL, "queued connection listed");
    EQI(b->sd, -1);
    REQUIRE(b->user == NULL, "no user pointer without a socket");
    EQ(b->info.state, STK_TCP_ESTABLISHED);
    EQ(b->rcvq, 0);

    /* fn's nonzero return stops the walk. */
    struct walk_log w2 = {.stop_at = 2};
    EQI(stk_sock_walk(h->e, walk_cb, &w2), 7);
    EQI(w2.n, 2);

    /* Closed with unread data: reset at once, and no longer listed. */
    EQI(stk_close(h->e, h->now, first), 0);
    struct walk_log w3 = {.stop_at = -1};
    EQI(stk_sock_walk(h->e, walk_cb, &w3), 0);
    EQI(w3.n, 2);
    REQUIRE(walk_find(&w3, PPORT) == NULL, "closed connection not listed");
    th_free(h);
}
END_TEST

/* SO_REUSEPORT: sockets with one group key share a port (bind and listen), others do not;
 * each connection goes to one listener of the group, and a group member that closes leaves
 * the rest of the connections to the others. A passive child keeps its listener's key, so a
 * new member binds beside established connections. */
static unsigned accept_all_on(struct th *h, int lsd)
{
    unsigned n = 0;
    while (stk_accept(h->e, h->now, lsd, NULL, NULL) >= 0)
        n++;
    return n;
}

static void handshake_from(struct th *h, uint16_t lport, uint16_t pport)
{
    h->lport = lport;
    h->pport = pport;
    h->pseq = PEER_ISN;
    peer_syn(h, &BARE);
    peer_ack(h);
}

START_TEST(reuseport_group)
{
    struct th *h = th_new();
    struct stk_engine *e = h->e;
    struct stk_sockaddr any = {.ip = 0, .port = 8081};
    int r[5];
    for (int i = 0; i < 5; i++)
        REQUIRE((r[i] = stk_socket(e, NULL)) >= 0, "socket");
    EQ(stk_setopt(e, h->now, r[0], STK_SO_REUSEPORT, 7), 0);
    EQ(stk_setopt(e, h->now, r[1], STK_SO_REUSEPORT, 7), 0);
    EQ(stk_setopt(e, h->now, r[2], STK_SO_REUSEPORT, 9), 0); /* another user's */
    int v = 0;
    EQ(stk_getopt(e, r[0], STK_SO_REUSEPORT, &v), 0);
    EQI(v, 1);
    EQ(stk_getopt(e, r[3], STK_SO_REUSEPORT, &v), 0);
    EQI(v, 0);
    EQ(stk_bind(e, r[0], &any), 0);
    EQ(stk_bind(e, r[1], &any), 0);
    EQI(stk_bind(e, r[2], &any), -EADDRINUSE);
    EQI(stk_bind(e, r[3], &any), -EADDRINUSE); /* without the option */
    EQ(stk_listen(e, r[0], 64), 0);
    EQ(stk_listen(e, r[1], 64), 0);

    /* 32 connections from one peer, ports apart: both listeners get some, none twice. */
    for (uint16_t k = 0; k < 32; k++)
        handshake_from(h, 8081, (uint16_t)(PPORT + k));
    unsigned n0 = accept_all_on(h, r[0]), n1 = accept_all_on(h, r[1]);
    EQ(n0 + n1, 32);
    REQUIRE(n0 > 0 && n1 > 0, "one listener got all 32: %u and %u", n0, n1);

    /* A new member beside the established children, then gone again. */
    EQ(stk_setopt(e, h->now, r[4], STK_SO_REUSEPORT, 7), 0);
    EQ(stk_bind(e, r[4], &any), 0);
    EQ(stk_close(e, h->now, r[4]), 0);

    /* One listener closes: the next connections all go to the other. */
    EQ(stk_close(e, h->now, r[1]), 0);
    for (uint16_t k = 0; k < 8; k++)
        handshake_from(h, 8081, (uint16_t)(PPORT + 100 + k));
    EQ(accept_all_on(h, r[0]), 8);
    th_free(h);
}
END_TEST

/* shutdown(SHUT_RD) of a listener (Linux's tcp_disconnect): it stops listening (a SYN draws a
 * RST, a queued connection is reset) but keeps its port, leaving its SO_REUSEPORT group to the
 * others, and listen() again resumes it on the same port. SHUT_WR alone changes nothing. */
START_TEST(listener_shutdown_resumes)
{
    struct th *h = th_new();
    struct stk_engine *e = h->e;
    struct stk_sockaddr any = {.ip = 0, .port = 8082};
    int a = stk_socket(e, NULL), b = stk_socket(e, NULL);
    EQ(stk_setopt(e, h->now, a, STK_SO_REUSEPORT, 3), 0);
    EQ(stk_setopt(e, h->now, b, STK_SO_REUSEPORT, 3), 0);
    EQ(stk_bind(e, a, &any), 0);
    EQ(stk_listen(e, a, 16), 0);
    EQ(stk_shutdown(e, h->now, a, STK_SHUT_WR), 0);
    EQ(state_of(h, a), STK_TCP_LISTEN);
    handshake_from(h, 8082, PPORT); /* queued on a, never accepted */
    EQ(stk_shutdown(e, h->now, a, STK_SHUT_RD), 0);
    EQ(state_of(h, a), STK_TCP_CLOSED);
    EXPECT(h, F_RST | F_ACK, h->pack, h->pseq, 0); /* the queued connection */
    h->pport = PPORT + 1;
    h->pseq = 1000;
    peer_send(h, F_SYN, 0);
    EXPECT(h, F_RST | F_ACK, 0, 1001, 0);
    /* Still bound: another socket of the group binds beside it; one without the option not. */
    EQ(stk_bind(e, b, &any), 0);
    int c = stk_socket(e, NULL);
    EQI(stk_bind(e, c, &any), -EADDRINUSE);
    EQ(stk_listen(e, b, 16), 0);
    for (uint16_t k = 0; k < 8; k++)
        handshake_from(h, 8082, (uint16_t)(PPORT + 10 + k));
    EQ(accept_all_on(h, b), 8);
    /* Resumed on its port: the group has both again. */
    EQ(stk_listen(e, a, 16), 0);
    struct stk_sockaddr got;
    EQ(stk_getsockname(e, a, &got), 0);
    EQ(got.port, 8082);
    for (uint16_t k = 0; k < 32; k++)
        handshake_from(h, 8082, (uint16_t)(PPORT + 100 + k));
    unsigned na = accept_all_on(h, a), nb = accept_all_on(h, b);
    EQ(na + nb, 32);
    REQUIRE(na > 0 && nb > 0, "after listen() again: %u and %u", na, nb);
    th_free(h);
}
END_TEST

START_TEST(api_errnos)
{
    struct th *h = th_new();
    struct stk_engine *e = h->e;
    char b[8];
    int sd = stk_socket(e, NULL);
    REQUIRE(sd >= 0, "socket");
    EQI(stk_send(e, h->now, sd, "x", 1, 0), -ENOTCONN);
    EQI(stk_recv(e, h->now, sd, b, sizeof(b), 0), -ENOTCONN);
    EQI(stk_shutdown(e, h->now, sd, STK_SHUT_WR), -ENOTCONN);
    struct stk_sockaddr a;
    EQI(stk_getpeername(e, sd, &a), -ENOTCONN);
    EQI(stk_accept(e, h->now, sd, NULL, NULL), -EINVAL);

    /* EBADF for ids never handed out, or released. */
    EQI(stk_send(e, h->now, 63, "x", 1, 0), -EBADF);
    EQI(stk_send(e, h->now, -1, "x", 1, 0), -EBADF);
    EQI(stk_close(e, h->now, 1000), -EBADF);
    EQ(stk_close(e, h->now, sd), 0);
    EQI(stk_recv(e, h->now, sd, b, sizeof(b), 0), -EBADF);
    int v;
    EQI(stk_getopt(e, sd, STK_SO_STATE, &v), -EBADF);

    /* EADDRINUSE: a second bind, and a second listener even with SO_REUSEADDR. */
    int a1 = stk_socket(e, NULL), a2 = stk_socket(e, NULL);
    struct stk_sockaddr p80 = {.ip = 0, .port = 8080};
    EQ(stk_bind(e, a1, &p80), 0);
    EQI(stk_bind(e, a2, &p80), -EADDRINUSE);
    EQ(stk_close(e, h->now, a2), 0);
    EQ(stk_setopt(e, h->now, a1, STK_SO_REUSEADDR, 1), 0);
    a2 = stk_socket(e, NULL);
    EQ(stk_setopt(e, h->now, a2, STK_SO_REUSEADDR, 1), 0);
    EQ(stk_bind(e, a2, &p80), 0);
    EQ(stk_listen(e, a1, 4), 0);
    EQI(stk_listen(e, a2, 4), -EADDRINUSE);
    EQI(stk_bind(e, a1, &p80), -EINVAL);

    /* EISCONN, EPIPE after SHUT_WR. */
    passive_open(h, &BARE);
    struct stk_sockaddr to = {.ip = PEER_IP, .port = 9};
    EQI(stk_connect(e, h->now, h->sd, &to), -EISCONN);
    EQ(stk_shutdown(e, h->now, h->sd, STK_SHUT_WR), 0);
    EXPECT(h, F_FIN | F_ACK, h->pack, h->pseq, 0);
    EQI(stk_send(e, h->now, h->sd, "x", 1, 0), -EPIPE);
    EQ(stk_events(e, h->sd) & STK_EV_OUT, STK_EV_OUT);
    th_free(h);
}
END_TEST

/* ---- ISNs (RFC 6528) ------------------------------------------------------------------------- */

static uint32_t syn_isn(struct th *h, int sd, uint32_t ip, uint16_t port)
{
    struct stk_sockaddr to = {.ip = ip, .port = port};
    h->peer_ip = ip;
    EQI(stk_connect(h->e, h->now, sd, &to), -EINPROGRESS);
    const struct pkt_info *p = POP(h);
    EQ(p->flags, F_SYN);
    return p->seq;
}

START_TEST(isn_per_tuple)
{
    struct th *h = th_new();
    struct stk_sockaddr me = {.ip = 0, .port = 5555};
    int s1 = stk_socket(h->e, NULL), s2 = stk_socket(h->e, NULL);
    EQ(stk_bind(h->e, s1, &me), 0);
    me.port = 5556;
    EQ(stk_bind(h->e, s2, &me), 0);
    uint32_t i1 = syn_isn(h, s1, PEER_IP, 443);
    uint32_t i2 = syn_isn(h, s2, PEER_IP, 443);
    uint32_t d = i1 - i2;
    REQUIRE(d > (1u << 20) && d < 0u - (1u << 20), "ISNs %u and %u look related", i1, i2);
    int s3 = stk_socket(h->e, NULL);
    uint32_t i3 = syn_isn(h, s3, PEER2_IP, 443);
    d = i1 - i3;
    REQUIRE(d > (1u << 20) && d < 0u - (1u << 20), "ISNs %u and %u look related", i1, i3);

    /* The same tuple 1 s later: the same offset plus the 64 ns clock. */
    EQ(stk_abort(h->e, h->now, s1), 0);
    EQ(stk_abort(h->e, h->now, s2), 0);
    EQ(stk_abort(h->e, h->now, s3), 0);
    pkt_capture_clear(&h->segs);
    advance_by(h, SEC);
    s1 = stk_socket(h->e, NULL);
    me.port = 5555;
    EQ(stk_bind(h->e, s1, &me), 0);
    uint32_t i4 = syn_isn(h, s1, PEER_IP, 443);
    EQ(i4 - i1, SEC * 125 / 8);
    th_free(h);
}
END_TEST

/* A tuple used again 280 us later (curl --local-port: a request of ~90 bytes and a FIN on
 * the first connection): the new ISN must be past everything the first one sent, or the
 * peer's TIME-WAIT, seeing the same millisecond timestamp, refuses the SYN (RFC 6191). */
START_TEST(isn_reused_tuple_moves_past_the_old_connection)
{
    struct th *h = th_new();
    struct stk_sockaddr me = {.ip = 0, .port = 5555};
    int s1 = stk_socket(h->e, NULL);
    EQ(stk_bind(h->e, s1, &me), 0);
    uint32_t i1 = syn_isn(h, s1, PEER_IP, 443);
    EQ(stk_abort(h->e, h->now, s1), 0);
    pkt_capture_clear(&h->segs);
    advance_by(h, 280);
    int s2 = stk_socket(h->e, NULL);
    EQ(stk_bind(h->e, s2, &me), 0);
    uint32_t i2 = syn_isn(h, s2, PEER_IP, 443);
    REQUIRE((int32_t)(i2 - (i1 + 1 + 89 + 1)) > 0, "ISN %u is not past %u + 91", i2, i1);
    th_free(h);
}
END_TEST

/* The SYN of a connection on 5555 -> PEER:443 made by a new engine with cfg: its ISN and
 * timestamp value. */
static void first_syn(const struct stk_config *cfg, uint32_t *isn, uint32_t *tsval)
{
    struct th *h = th_new_cfg(cfg);
    struct stk_sockaddr me = {.ip = 0, .port = 5555};
    int sd = stk_socket(h->e, NULL);
    EQ(stk_bind(h->e, sd, &me), 0);
    *isn = syn_isn(h, sd, PEER_IP, 443);
    REQUIRE(h->p.opt.ts, "the SYN has no timestamp");
    *tsval = h->p.opt.tsval;
    th_free(h);
}

/* Two instances of the stack (ustackd restarted, another secret, its clock starting again)
 * that share the host's ISN key and clock: the later instance's SYN on the same tuple has
 * a larger ISN and timestamp, by exactly the time between them, so the peer's TIME-WAIT of
 * the earlier one takes it (RFC 6191). Without the key the two are unrelated. */
START_TEST(isn_key_continues_across_instances)
{
    struct stk_config a = base_cfg(), b = base_cfg();
    for (int i = 0; i < 16; i++) {
        b.secret[i] = (uint8_t)(0xc3 ^ (i * 11)); /* another instance's own secret */
        a.isn_key[i] = b.isn_key[i] = (uint8_t)(0x17 + i * 29);
    }
    a.isn_key_set = b.isn_key_set = true;
    a.clock_off_us = 7 * SEC;
    b.clock_off_us = a.clock_off_us + 3 * SEC; /* started 3 s after the first */
    uint32_t isn_a, ts_a, isn_b, ts_b;
    first_syn(&a, &isn_a, &ts_a);
    first_syn(&b, &isn_b, &ts_b);
    EQ(isn_b - isn_a, 3 * SEC * 125 / 8);
    EQ(ts_b - ts_a, 3000);

    /* The same two instances without the host key: each engine's own secret decides. */
    a.isn_key_set = b.isn_key_set = false;
    first_syn(&a, &isn_a, &ts_a);
    first_syn(&b, &isn_b, &ts_b);
    uint32_t d = isn_b - isn_a;
    REQUIRE(d > (1u << 20) && d < 0u - (1u << 20), "ISNs %u and %u look related", isn_a, isn_b);
}
END_TEST

/* ---- Known bugs (see the report) ------------------------------------------------------------ */

/* RFC 5681 4.2 / RFC 1122 4.2.3.2: an ACK for at least every second full-sized segment.
 * With timestamps a full-sized segment carries MSS - 12 bytes. */
START_TEST(bug_delack_full_segments_with_ts)
{
    struct th *h = th_new();
    passive_open(h, &FULL);
    peer_send(h, F_ACK, 1448);
    EXPECT_NONE(h);
    peer_send(h, F_ACK, 1448);
    EXPECT_ACK(h);
    th_free(h);
}
END_TEST

/* RFC 9293 3.10.7.4 (seventh, segment text): a connection established but not yet
 * accepted is not closed; its data waits for accept(). Only an orphan answers data with
 * RST. */
START_TEST(bug_data_before_accept)
{
    struct th *h = th_new();
    h->lsd = listen_on(h, LPORT, 16);
    h->pseq = PEER_ISN;
    peer_syn(h, &BARE);
    peer_ack(h);
    peer_send(h, F_ACK | F_PSH, 10);
    EXPECT_NONE(h);
    h->sd = stk_accept(h->e, h->now, h->lsd, NULL, NULL);
    REQUIRE(h->sd >= 0, "accept %d", h->sd);
    EQ(nread(h, h->sd), 10);
    th_free(h);
}
END_TEST

/* The same through a SYN cookie, whose completing ACK often carries the first data. */
START_TEST(bug_cookie_ack_with_data)
{
    struct th *h = th_new();
    h->lsd = listen_on(h, LPORT, 1);
    h->pport = PPORT + 10;
    h->pseq = 1;
    peer_syn(h, &BARE);
    h->pport = PPORT;
    h->pseq = PEER_ISN;
    peer_syn(h, &BARE);
    EQ(ctr(h)->tcp_syncookies_sent, 1);
    peer_send(h, F_ACK | F_PSH, 10);
    EXPECT_NONE(h);
    EQ(ctr(h)->tcp_syncookies_ok, 1);
    h->sd = stk_accept(h->e, h->now, h->lsd, NULL, NULL);
    REQUIRE(h->sd >= 0, "accept %d", h->sd);
    EQ(nread(h, h->sd), 10);
    th_free(h);
}
END_TEST

/* RFC 9293 figure 8: in SYN-RECEIVED after crossing SYNs, the peer's SYN-ACK acknowledging
 * our SYN establishes the connection. */
START_TEST(bug_simultaneous_open_synack)
{
    struct th *h = th_new();
    h->sd = stk_socket(h->e, NULL);
    struct stk_sockaddr to = {.ip = PEER_IP, .port = PPORT};
    EQI(stk_connect(h->e, h->now, h->sd, &to), -EINPROGRESS);
    const struct pkt_info *p = POP(h);
    h->iss = p->seq;
    h->lport = p->sport;
    h->pseq = PEER_ISN;
    struct pkt_tcp_spec s;
    syn_spec(h, &s, F_SYN, &BARE);
    inject(h, &s);
    EXPECT(h, F_SYN | F_ACK, h->iss, PEER_ISN + 1, 0);
    /* The peer's own SYN-ACK (figure 8 line 6). */
    h->pack = h->iss + 1;
    syn_spec(h, &s, F_SYN | F_ACK, &BARE);
    inject(h, &s);
    h->pseq++;
    EQ(state_of(h, h->sd), STK_TCP_ESTABLISHED);
    th_free(h);
}
END_TEST

/* ---- Suite ------------------------------------------------------------------------------- */

static TCase *tcase(Suite *s, const char *name)
{
    TCase *tc = tcase_create(name);
    tcase_set_timeout(tc, 30);
    suite_add_tcase(s, tc);
    return tc;
}

int main(void)
{
    Suite *s = suite_create("tcp");
    TCase *tc = tcase(s, "handshake");
    tcase_add_test(tc, passive_full_options);
    tcase_add_test(tc, passive_no_options);
    tcase_add_test(tc, active_open_options);
    tcase_add_test(tc, active_open_peer_without_options);
    tcase_add_test(tc, mss_clamping);
    tcase_add_test(tc, simultaneous_open);
    tcase_add_test(tc, simultaneous_close);
    tc = tcase(s, "rst");
    tcase_add_test(tc, rst_closed_port);
    tcase_add_test(tc, syn_refused_by_rst);
    tcase_add_test(tc, syn_received_bad_ack_and_rst);
    tc = tcase(s, "rfc5961");
    tcase_add_test(tc, rst_exact_resets);
    tcase_add_test(tc, rst_in_window_challenged);
    tcase_add_test(tc, rst_out_of_window_ignored);
    tcase_add_test(tc, syn_on_established);
    tcase_add_test(tc, ack_of_unsent_data);
    tcase_add_test(tc, challenge_ack_rate_limit);
    tc = tcase(s, "paws");
    tcase_add_test(tc, paws_old_timestamp);
    tc = tcase(s, "validation");
    tcase_add_test(tc, out_of_window_data);
    tcase_add_test(tc, malformed_segments_dropped);
    tc = tcase(s, "ooo");
    tcase_add_test(tc, ooo_reassembly_and_sack);
    tcase_add_test(tc, ooo_bound);
    tc = tcase(s, "delack");
    tcase_add_test(tc, delack_small_segment);
    tcase_add_test(tc, delack_configured_time);
    tcase_add_test(tc, quickack_sends_the_delayed_ack);
    tcase_add_test(tc, abort_all_resets_what_is_undelivered);
    tcase_add_test(tc, delack_two_full_segments);
    tc = tcase(s, "rcvbuf");
    tcase_add_test(tc, rcvbuf_autotune_grows);
    tcase_add_test(tc, rcvbuf_autotune_keeps_data);
    tcase_add_test(tc, rcvbuf_autotune_off_with_so_rcvbuf);
    tcase_add_test(tc, rcvbuf_autotune_mem_limit);
    tcase_add_test(tc, sndbuf_autotune_grows);
    tcase_add_test(tc, sndbuf_autotune_off_with_so_sndbuf);
    tcase_add_test(tc, so_bufs_on_connection);
    tcase_add_test(tc, window_update_waits_while_open);
    tcase_add_test(tc, window_update_when_app_waits);
    tcase_add_test(tc, fin_ack_rides_on_our_fin);
    tcase_add_test(tc, delack_when_app_waits);
    tcase_add_test(tc, window_update_at_once_when_nearly_closed);
    tc = tcase(s, "burst");
    tcase_add_test(tc, burst_one_ack_per_connection);
    tcase_add_test(tc, burst_ack_stretch_bound);
    tcase_add_test(tc, burst_keeps_immediate_acks);
    tcase_add_test(tc, burst_ack_piggyback_and_free);
    tc = tcase(s, "nagle");
    tcase_add_test(tc, nagle_waits_for_ack);
    tcase_add_test(tc, nodelay_sends_at_once);
    tcase_add_test(tc, cork_holds_partial);
    tcase_add_test(tc, msg_more);
    tc = tcase(s, "rexmt");
    tcase_add_test(tc, rto_backoff_and_timeout);
    tcase_add_test(tc, syn_retries);
    tcase_add_test(tc, syncnt_sockopt);
    tcase_add_test(tc, fast_retransmit_dupacks);
    tcase_add_test(tc, no_fast_retransmit_after_rto);
    tcase_add_test(tc, fast_retransmit_sack);
    tcase_add_test(tc, rtt_estimate);
    tc = tcase(s, "tlp");
    tcase_add_test(tc, tlp_flight_ack_lost);
    tcase_add_test(tc, tlp_last_segment_lost);
    tcase_add_test(tc, tlp_sack_starts_recovery);
    tcase_add_test(tc, tlp_new_data);
    tcase_add_test(tc, tlp_not_on_zero_window);
    tcase_add_test(tc, tlp_needs_sack);
    tc = tcase(s, "zero_window");
    tcase_add_test(tc, zero_window_persist);
    tcase_add_test(tc, zero_window_peer_vanishes);
    tcase_add_test(tc, bytes_in_counted_once);
    tcase_add_test(tc, rst_in_close_wait_epipe);
    tcase_add_test(tc, passive_child_holds_port);
    tcase_add_test(tc, arp_failure_unreachable);
    tc = tcase(s, "icmp");
    tcase_add_test(tc, icmp_syn_sent_hard_errors);
    tcase_add_test(tc, icmp_outwin_and_unknown_ignored);
    tcase_add_test(tc, icmp_soft_error_on_timeout);
    tcase_add_test(tc, icmp_syn_received_child);
    tcase_add_test(tc, icmp_frag_needed_pmtu);
    tcase_add_test(tc, icmp_frag_needed_syn_sent);
    tcase_add_test(tc, icmp_rto_revert);
    tc = tcase(s, "keepalive");
    tcase_add_test(tc, keepalive_answered);
    tcase_add_test(tc, keepalive_timeout);
    tcase_add_test(tc, keepalive_data_outstanding);
    tcase_add_test(tc, user_timeout_unacked);
    tcase_add_test(tc, user_timeout_zero_window);
    tcase_add_test(tc, user_timeout_keepalive);
    tcase_add_test(tc, ip_tos_on_segments);
    tc = tcase(s, "time_wait");
    tcase_add_test(tc, time_wait_expiry);
    tcase_add_test(tc, time_wait_reused_by_bound_connect);
    tcase_add_test(tc, time_wait_fin_reacked);
    tcase_add_test(tc, time_wait_syn_reopen);
    tcase_add_test(tc, time_wait_syn_newer_ts);
    tcase_add_test(tc, time_wait_acks_own_limit);
    tcase_add_test(tc, time_wait_rst_at_rcv_nxt);
    tc = tcase(s, "syncookies");
    tcase_add_test(tc, syn_cookies);
    tcase_add_test(tc, syn_cookies_keep_options);
    tcase_add_test(tc, syn_cookie_accept_queue_full);
    tcase_add_test(tc, syn_cookie_over_child);
    tcase_add_test(tc, syn_cookie_over_child_after_data);
    tc = tcase(s, "abort");
    tcase_add_test(tc, linger_zero_rst);
    tcase_add_test(tc, close_unread_rst);
    tcase_add_test(tc, orphan_data_rst);
    tc = tcase(s, "api");
    tcase_add_test(tc, listen_backlog_overflow);
    tcase_add_test(tc, listener_close_with_syn_queue);
    tcase_add_test(tc, api_errnos);
    tcase_add_test(tc, reuseport_group);
    tcase_add_test(tc, listener_shutdown_resumes);
    tcase_add_test(tc, sock_walk);
    tc = tcase(s, "isn");
    tcase_add_test(tc, isn_per_tuple);
    tcase_add_test(tc, isn_key_continues_across_instances);
    tcase_add_test(tc, isn_reused_tuple_moves_past_the_old_connection);
    tc = tcase(s, "regressions");
    tcase_add_test(tc, bug_delack_full_segments_with_ts);
    tcase_add_test(tc, bug_simultaneous_open_synack);
    tcase_add_test(tc, bug_data_before_accept);
    tcase_add_test(tc, bug_cookie_ack_with_data);

    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

/*
 * test_shmsrv.c - the server side of the shared-memory protocol (dpdk_io/shm_server.c)
 * end to end, in one process: two stacks joined back to back by ring ports, each serving a
 * region of its own through dio_shm_app (stack B also runs the echo service on port 7).
 * This test's main thread plays the applications, using nothing but shim/shm.h: it pushes
 * commands, waits for replies and socket changes on the futexes, and moves bytes through
 * the rings, as libustack.so does.
 *
 * Each test runs in its own forked process (Check's default) with its own EAL. Every wait
 * is bounded.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/syscall.h>

#ifndef PIDFD_THREAD
#define PIDFD_THREAD O_EXCL /* Linux 6.9: a pidfd of one thread */
#endif
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "dio.h"
#include "dio_test.h"
#include "shm.h"

#define IP_A        ((198u << 24) | (18u << 16) | (1u << 8) | 1u)
#define IP_B        ((198u << 24) | (18u << 16) | (1u << 8) | 2u)
#define ECHO_PORT   7
#define LISTEN_PORT 5000
#define NSOCKS      256
#define NREPLIES    64
#define RING        65536u

/* ---- The regions and the two stacks ----------------------------------------------------- */

struct region {
    int fd;
    void *base;
    uint64_t size;
    unsigned ncores;
    struct dio_shm *srv;
    uint32_t reply;
};

struct world {
    struct shim_conf ca, cb;
    struct dio_stack *a, *b;
    struct dio_services svc;
    struct dio_app svc_app;
    struct region ra, rb; /* ra is served by stack A, rb by stack B */
    unsigned ncores;
    struct dio_shmset *bset; /* B's regions, when the test adds and removes some */
    bool use_set;
};

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void region_make(struct region *r, unsigned ncores)
{
    struct shm_geometry g = {ncores, NSOCKS, NREPLIES, RING, 0};
    r->ncores = ncores;
    r->size = shm_region_size(&g);
    ck_assert_uint_gt(r->size, 0);
    r->fd = memfd_create("ustack-test", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    ck_assert_int_ge(r->fd, 0);
    ck_assert_int_eq(ftruncate(r->fd, (off_t)r->size), 0);
    r->base = mmap(NULL, r->size, PROT_READ | PROT_WRITE, MAP_SHARED, r->fd, 0);
    ck_assert_ptr_ne(r->base, MAP_FAILED);
    shm_region_init(r->base, &g);
    for (unsigned c = 0; c < ncores; c++) {
        int wfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        ck_assert_int_ge(wfd, 0);
        shm_cmdq(r->base, c)->wake_fd = wfd;
    }
    char err[256];
    int rc = dio_shm_open(r->fd, ncores, &r->srv, err, sizeof(err));
    ck_assert_msg(rc == 0, "%s", err);
    r->reply = shm_reply_alloc(r->base, (uint32_t)gettid(), getpid());
    ck_assert_uint_ne(r->reply, SHM_NONE);
}

static void world_start(struct world *w, unsigned ncores)
{
    char err[256];
    uint16_t pa, pb;
    w->ncores = ncores;
    dio_test_eal_start("test-shmsrv");
    ck_assert_msg(dio_ring_pair("ts", ncores, &pa, &pb, err, sizeof(err)) == 0, "%s", err);
    w->ca = dio_test_conf(IP_A);
    w->cb = dio_test_conf(IP_B);
    w->svc.echo_port = ECHO_PORT;
    region_make(&w->ra, ncores);
    region_make(&w->rb, ncores);

    w->svc_app = dio_services_app(&w->svc);
    struct dio_stack_conf sb = {.conf = &w->cb, .port_id = pb, .ncores = ncores};
    sb.lcores[0] = 3;
    sb.lcores[1] = 4;
    if (w->use_set) {
        ck_assert_int_eq(dio_shmset_create(ncores, &w->svc_app, &w->bset), 0);
        ck_assert_int_eq(dio_shmset_add(w->bset, NULL, w->rb.srv, err, sizeof(err)), 0);
        sb.app = dio_shmset_app(w->bset);
    } else {
        sb.app = dio_shm_app_with(w->rb.srv, &w->svc_app);
    }
    ck_assert_msg(dio_stack_create(&sb, &w->b, err, sizeof(err)) == 0, "%s", err);
    ck_assert_msg(dio_stack_start(w->b, err, sizeof(err)) == 0, "%s", err);

    struct dio_stack_conf sa = {.conf = &w->ca, .port_id = pa, .ncores = ncores};
    sa.lcores[0] = 1;
    sa.lcores[1] = 2;
    sa.app = dio_shm_app(w->ra.srv);
    ck_assert_msg(dio_stack_create(&sa, &w->a, err, sizeof(err)) == 0, "%s", err);
    ck_assert_msg(dio_stack_start(w->a, err, sizeof(err)) == 0, "%s", err);

    dio_shm_ready(w->ra.srv);
    dio_shm_ready(w->rb.srv);
    ck_assert_uint_eq(atomic_load(&shm_hdr(w->ra.base)->state), SHM_READY);
    ck_assert_int_eq(atomic_load(&shm_hdr(w->ra.base)->stack_pid), getpid());
}

static void world_stop(struct world *w)
{
    dio_shm_gone(w->ra.srv);
    dio_shm_gone(w->rb.srv);
    dio_stack_stop(w->a, 500);
    dio_stack_stop(w->b, 500);
}

static void world_destroy(struct world *w)
{
    dio_stack_destroy(w->a);
    dio_stack_destroy(w->b);
    dio_shmset_free(w->bset);
    dio_shm_close(w->ra.srv);
    dio_shm_close(w->rb.srv);
    dio_eal_cleanup();
}

static struct dio_shm_counters counters(struct region *r)
{
    struct dio_shm_counters t, k;
    memset(&t, 0, sizeof(t));
    for (unsigned c = 0; c < r->ncores; c++) {
        ck_assert_int_eq(dio_shm_counters(r->srv, c, &k), 0);
#define X(n) t.n += k.n;
        DIO_SHM_COUNTERS(X)
#undef X
    }
    return t;
}

/* ---- The application side, from shm.h alone ---------------------------------------------- */

static void push(struct region *r, uint32_t core, const struct shm_cmd *c)
{
    struct shm_cmdq *q = shm_cmdq(r->base, core);
    int64_t end = now_ns() + 5000000000ll;
    while (shm_cmdq_push(q, c) != 0) {
        ck_assert_msg(now_ns() < end, "command queue of core %u stays full", core);
        usleep(100);
    }
    atomic_thread_fence(memory_order_seq_cst);
    if (atomic_load(&q->sleeping)) {
        uint64_t one = 1;
        ck_assert_int_eq(write(q->wake_fd, &one, sizeof(one)), sizeof(one));
    }
}

/* Pushes c with our reply slot and waits (bounded) for the answer. */
static int call(struct region *r, uint32_t core, struct shm_cmd *c, struct shm_reply *out)
{
    struct shm_reply *rp = shm_reply(r->base, r->reply);
    uint32_t seq0 = atomic_load(&rp->seq);
    c->reply = r->reply;
    c->pid = getpid();
    push(r, core, c);
    int64_t end = now_ns() + 5000000000ll;
    while (atomic_load_explicit(&rp->seq, memory_order_acquire) == seq0) {
        ck_assert_msg(now_ns() < end, "no reply to op %u on core %u", c->op, core);
        shm_futex_wait(&rp->seq, seq0, 50000000);
    }
    if (out)
        memcpy(out, rp, sizeof(*out));
    return rp->result;
}

struct tsock {
    struct region *r;
    uint32_t i, gen, core;
    int efd;
};

static struct shm_sock *ts_sock(struct tsock *t)
{
    return shm_sock(t->r->base, t->i);
}

static struct shm_cmd ts_cmd(struct tsock *t, uint16_t op)
{
    struct shm_cmd c;
    memset(&c, 0, sizeof(c));
    c.op = op;
    c.sock = t->i;
    c.gen = t->gen;
    c.reply = SHM_NONE;
    c.pid = getpid();
    return c;
}

static int ts_call(struct tsock *t, uint16_t op, int32_t a0, int32_t a1, uint32_t ip, uint16_t port,
                   struct shm_reply *out)
{
    struct shm_cmd c = ts_cmd(t, op);
    c.a0 = a0;
    c.a1 = a1;
    c.addr.ip = ip;
    c.addr.port = port;
    return call(t->r, t->core, &c, out);
}

/* SOCKET goes without a reply, as the library sends it: the stack clears attach_pend when it
 * is done with the eventfd's number (bounded wait). */
static void ts_socket_push_as(struct tsock *t, int32_t pid, int32_t efd, int32_t type)
{
    struct shm_sock *s = ts_sock(t);
    struct shm_cmd c = ts_cmd(t, SHM_OP_SOCKET);
    c.pid = pid;
    c.a0 = efd;
    c.a1 = type;
    atomic_store(&s->attach_pend, SHM_ATT_PEND);
    push(t->r, t->core, &c);
    int64_t end = now_ns() + 5000000000ll;
    uint32_t v;
    while ((v = atomic_load(&s->attach_pend)) != 0) {
        ck_assert_msg(now_ns() < end, "SOCKET on core %u not done", t->core);
        shm_futex_wait(&s->attach_pend, v, 50000000);
    }
}

static void ts_socket_push(struct tsock *t, int32_t efd, int32_t type)
{
    ts_socket_push_as(t, getpid(), efd, type);
}

static void ts_socket(struct region *r, uint32_t core, struct tsock *t)
{
    t->r = r;
    t->core = core;
    t->i = shm_sock_alloc(r->base);
    ck_assert_uint_ne(t->i, SHM_NONE);
    struct shm_sock *s = ts_sock(t);
    s->core = core;
    t->gen = atomic_load(&s->gen);
    t->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    ck_assert_int_ge(t->efd, 0);
    ts_socket_push(t, t->efd, 0);
    ck_assert_uint_eq(atomic_load(&s->state), SHM_SOCK_LIVE);
    ck_assert(!(atomic_load(&s->flags) & SHM_F_NOSOCK));
    atomic_store(&s->refs, 1);
}

/* An accepted socket: take it and hand the stack our eventfd. */
static void ts_attach(struct region *r, uint32_t i, struct tsock *t)
{
    struct shm_sock *s = shm_sock(r->base, i);
    t->r = r;
    t->i = i;
    t->core = s->core;
    ck_assert_uint_lt(t->core, r->ncores);
    t->gen = atomic_load(&s->gen);
    ck_assert_uint_eq(atomic_load(&s->state), SHM_SOCK_LIVE);
    atomic_fetch_add(&s->refs, 1);
    t->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    ck_assert_int_ge(t->efd, 0);
    ck_assert_int_eq(ts_call(t, SHM_OP_ATTACH, t->efd, 0, 0, 0, NULL), 0);
}

static void ts_kick(struct tsock *t)
{
    if (atomic_exchange(&ts_sock(t)->kick, 1) == 0) {
        struct shm_cmd c = ts_cmd(t, SHM_OP_KICK);
        push(t->r, t->core, &c);
    }
}

static uint32_t ts_write(struct tsock *t, const void *buf, uint32_t len)
{
    struct shm_sock *s = ts_sock(t);
    uint32_t n = shm_ring_write(&s->tx, shm_tx_data(t->r->base, t->i), RING, buf, len);
    if (n)
        ts_kick(t);
    return n;
}

static uint32_t ts_read(struct tsock *t, void *buf, uint32_t len)
{
    struct shm_sock *s = ts_sock(t);
    uint32_t n = shm_ring_read(&s->rx, shm_rx_data(t->r->base, t->i), RING, buf, len, false);
    if (n) {
        /* Tail moved, then look at the flag: the pair of the stack's flag-then-space. */
        atomic_thread_fence(memory_order_seq_cst);
        if (atomic_load(&s->flags) & SHM_F_RX_BLOCKED)
            ts_kick(t);
    }
    return n;
}

/* Waits (up to ms) for the stack to change anything about the socket since seq0. */
static void ts_wait(struct tsock *t, uint32_t seq0, int ms)
{
    struct shm_sock *s = ts_sock(t);
    atomic_fetch_add(&s->waiters, 1);
    if (atomic_load(&s->seq) == seq0)
        shm_futex_wait(&s->seq, seq0, (int64_t)ms * 1000000);
    atomic_fetch_sub(&s->waiters, 1);
}

/* Waits (bounded) until the socket's readiness has any of bits. */
static uint32_t ts_wait_poll(struct tsock *t, uint32_t bits, int seconds)
{
    int64_t end = now_ns() + (int64_t)seconds * 1000000000;
    for (;;) {
        uint32_t seq0 = atomic_load(&ts_sock(t)->seq);
        uint32_t m = shm_sock_poll(t->r->base, t->i);
        if (m & bits)
            return m;
        ck_assert_msg(now_ns() < end, "socket %u: poll 0x%x, waited for 0x%x, flags 0x%x", t->i, m,
                      bits, atomic_load(&ts_sock(t)->flags));
        ts_wait(t, seq0, 50);
    }
}

/* The last holder closes: CLOSING, then SHM_OP_CLOSE; the stack frees the slot. */
static void ts_close(struct tsock *t)
{
    struct shm_sock *s = ts_sock(t);
    atomic_store(&s->refs, 0);
    atomic_store(&s->state, SHM_SOCK_CLOSING);
    struct shm_cmd c = ts_cmd(t, SHM_OP_CLOSE);
    push(t->r, t->core, &c);
    close(t->efd);
}

static void ts_close_listener(struct tsock *t)
{
    struct shm_sock *s = ts_sock(t);
    atomic_store(&s->refs, 0);
    atomic_store(&s->state, SHM_SOCK_CLOSING);
    for (uint32_t c = 0; c < t->r->ncores; c++) {
        struct shm_cmd cmd = ts_cmd(t, SHM_OP_CLOSE);
        push(t->r, c, &cmd);
    }
    close(t->efd);
}

static void ts_wait_freed(struct tsock *t, int seconds)
{
    struct shm_sock *s = ts_sock(t);
    int64_t end = now_ns() + (int64_t)seconds * 1000000000;
    while (atomic_load(&s->state) != SHM_SOCK_FREE || atomic_load(&s->gen) == t->gen) {
        ck_assert_msg(now_ns() < end, "slot %u not freed (state %u)", t->i, atomic_load(&s->state));
        usleep(1000);
    }
    ck_assert_uint_eq(atomic_load(&s->gen), t->gen + 1);
}

static void ts_connect(struct tsock *t, uint32_t ip, uint16_t port)
{
    ck_assert_int_eq(ts_call(t, SHM_OP_CONNECT, 0, 0, ip, port, NULL), -EINPROGRESS);
}

static inline uint8_t pat(uint32_t seed, uint64_t i)
{
    uint64_t x = (i + 1) * 0x9e3779b97f4a7c15ull ^ seed;
    return (uint8_t)(x >> 29);
}

/* The first of n bytes at stream offset off that is not the pattern (n if none). Plain
 * compares: a Check assertion per byte would record a mark point per byte. */
static uint32_t first_diff(const uint8_t *b, uint32_t n, uint32_t seed, uint64_t off)
{
    for (uint32_t j = 0; j < n; j++)
        if (b[j] != pat(seed, off + j))
            return j;
    return n;
}

/* Streams `bytes` through an echo connection and checks what comes back byte for byte. */
static void echo_bytes(struct tsock *t, uint32_t seed, uint64_t bytes, int seconds)
{
    static uint8_t buf[65536];
    uint64_t sent = 0, rcvd = 0;
    int64_t end = now_ns() + (int64_t)seconds * 1000000000;
    while (rcvd < bytes) {
        uint32_t seq0 = atomic_load(&ts_sock(t)->seq);
        bool progress = false;
        uint32_t room = shm_ring_space(&ts_sock(t)->tx, RING);
        if (sent < bytes && room) {
            uint32_t n = (uint32_t)(bytes - sent < room ? bytes - sent : room);
            for (uint32_t j = 0; j < n; j++)
                buf[j] = pat(seed, sent + j);
            uint32_t w = ts_write(t, buf, n);
            sent += w;
            progress |= w > 0;
        }
        uint32_t r = ts_read(t, buf, sizeof(buf));
        uint32_t bad = first_diff(buf, r, seed, rcvd);
        ck_assert_msg(bad == r, "byte %llu differs", (unsigned long long)(rcvd + bad));
        rcvd += r;
        progress |= r > 0;
        ck_assert_msg(!(atomic_load(&ts_sock(t)->flags) & SHM_F_RESET), "connection reset");
        ck_assert_msg(now_ns() < end, "echo stalled: sent %llu received %llu flags 0x%x",
                      (unsigned long long)sent, (unsigned long long)rcvd,
                      atomic_load(&ts_sock(t)->flags));
        if (!progress)
            ts_wait(t, seq0, 20);
    }
}

static void connect_echo(struct world *w, uint32_t core, struct tsock *t)
{
    ts_socket(&w->ra, core, t);
    /* A fresh socket reads as Linux's TCP_CLOSE: writable and hung up. */
    ck_assert_uint_eq(shm_sock_poll(w->ra.base, t->i), SHM_POLLOUT | SHM_POLLHUP);
    ts_connect(t, IP_B, ECHO_PORT);
    ts_wait_poll(t, SHM_POLLOUT | SHM_POLLERR, 5);
    struct shm_sock *s = ts_sock(t);
    ck_assert_uint_eq(atomic_load(&s->flags) & (SHM_F_CONNECTED | SHM_F_CONNECTING),
                      SHM_F_CONNECTED);
    ck_assert_uint_eq(s->la.ip, IP_A);
    ck_assert_uint_eq(s->ra.ip, IP_B);
    ck_assert_uint_eq(s->ra.port, ECHO_PORT);
    ck_assert_uint_ne(s->la.port, 0);
}

/* ---- Tests -------------------------------------------------------------------------------- */

/* Stack B serves a set of regions: a region added while it runs is served by every core
 * (a listener on all cores, connections from A echoed through it); the first region keeps
 * working meanwhile; removing the added region closes its connections (the peer sees the
 * end) and frees nothing the first region uses; the set's counters keep the removed
 * region's. */
START_TEST(regions_added_and_removed)
{
    static struct world w;
    static struct region rc;
    memset(&w, 0, sizeof(w));
    memset(&rc, 0, sizeof(rc));
    w.use_set = true;
    world_start(&w, 2);
    char err[256];
    region_make(&rc, 2);
    ck_assert_msg(dio_shmset_add(w.bset, w.b, rc.srv, err, sizeof(err)) == 0, "%s", err);
    dio_shm_ready(rc.srv);
    ck_assert_uint_eq(dio_shmset_count(w.bset), 2);
    struct dio_shm_region_info info[4];
    ck_assert_int_eq(dio_shmset_regions(w.bset, info, 4), 2);
    ck_assert_uint_ne(info[0].slot, info[1].slot);

    /* A listener of the new region, on both of B's cores. */
    struct tsock l;
    ts_socket(&rc, 0, &l);
    struct shm_reply rp;
    ck_assert_int_eq(ts_call(&l, SHM_OP_BIND, 0, 0, 0, LISTEN_PORT, &rp), 0);
    for (uint32_t c = 0; c < 2; c++) {
        struct shm_cmd cmd = ts_cmd(&l, SHM_OP_LISTEN);
        cmd.a0 = 16;
        ck_assert_int_eq(call(&rc, c, &cmd, &rp), 0);
    }
    /* Connections from A on both cores; B's side echoes them by hand. */
    struct tsock cl[2], sv[2];
    for (int k = 0; k < 2; k++) {
        ts_socket(&w.ra, (uint32_t)k, &cl[k]);
        ts_connect(&cl[k], IP_B, LISTEN_PORT);
        ts_wait_poll(&cl[k], SHM_POLLOUT | SHM_POLLERR, 5);
        ck_assert(atomic_load(&ts_sock(&cl[k])->flags) & SHM_F_CONNECTED);
    }
    for (int k = 0; k < 2; k++) {
        uint32_t j;
        int64_t end = now_ns() + 5000000000ll;
        while (!shm_aq_pop(ts_sock(&l), shm_rx_data(rc.base, l.i), RING, &j)) {
            ck_assert_msg(now_ns() < end, "no connection accepted in the added region");
            usleep(1000);
        }
        ts_attach(&rc, j, &sv[k]);
    }
    for (int k = 0; k < 2; k++) {
        char msg[16], got[16];
        int n = snprintf(msg, sizeof(msg), "hello %d", k);
        ck_assert_uint_eq(ts_write(&cl[k], msg, (uint32_t)n), (uint32_t)n);
        ts_kick(&cl[k]);
        /* Whichever accepted socket it reached echoes it. */
        uint32_t got_n = 0;
        int64_t end = now_ns() + 5000000000ll;
        while (got_n == 0) {
            for (int q = 0; q < 2 && got_n == 0; q++) {
                got_n = ts_read(&sv[q], got, sizeof(got));
                if (got_n) {
                    ck_assert_uint_eq(ts_write(&sv[q], got, got_n), got_n);
                    ts_kick(&sv[q]);
                }
            }
            ck_assert_msg(now_ns() < end, "nothing arrived in the added region");
            usleep(1000);
        }
        ck_assert_uint_eq(got_n, (uint32_t)n);
        uint32_t back = 0;
        end = now_ns() + 5000000000ll;
        while (back < (uint32_t)n) {
            back += ts_read(&cl[k], got + back, sizeof(got) - back);
            ck_assert_msg(now_ns() < end, "no echo from the added region");
            usleep(1000);
        }
        ck_assert_int_eq(memcmp(got, msg, (size_t)n), 0);
    }
    /* The first region works alongside. */
    struct tsock e;
    connect_echo(&w, 1, &e);
    echo_bytes(&e, 0x77, 1u << 20, 30);

    /* Removing the added region closes its side: A's connections see the end. */
    ck_assert_int_eq(dio_shmset_remove(w.bset, w.b, rc.srv), 0);
    ck_assert_uint_eq(dio_shmset_count(w.bset), 1);
    for (int k = 0; k < 2; k++) {
        uint32_t m = ts_wait_poll(&cl[k], SHM_POLLRDHUP | SHM_POLLHUP | SHM_POLLERR, 5);
        ck_assert(m & (SHM_POLLRDHUP | SHM_POLLHUP));
    }
    /* Its port is free again on B (no listener): a new connect is refused. */
    struct tsock r;
    ts_socket(&w.ra, 0, &r);
    ts_connect(&r, IP_B, LISTEN_PORT);
    uint32_t m = ts_wait_poll(&r, SHM_POLLERR | SHM_POLLHUP, 5);
    ck_assert(m & SHM_POLLERR);
    /* And the first region still echoes. */
    echo_bytes(&e, 0x78, 1u << 20, 30);
    struct dio_shm_counters sum, k0;
    memset(&sum, 0, sizeof(sum));
    for (unsigned c = 0; c < 2; c++) {
        ck_assert_int_eq(dio_shmset_counters(w.bset, c, &k0), 0);
        sum.shm_listens += k0.shm_listens;
        sum.shm_accepts += k0.shm_accepts;
    }
    ck_assert_uint_eq(sum.shm_listens, 2); /* the removed region's, kept */
    ck_assert_uint_eq(sum.shm_accepts, 2);
    ts_close(&e);
    ts_wait_freed(&e, 5);
    world_stop(&w);
    dio_shm_close(rc.srv);
    world_destroy(&w);
}
END_TEST

static void run_echo(unsigned ncores)
{
    static struct world w;
    memset(&w, 0, sizeof(w));
    world_start(&w, ncores);
    for (uint32_t core = 0; core < ncores; core++) {
        struct tsock t;
        connect_echo(&w, core, &t);
        echo_bytes(&t, 0x1234 + core, 4u << 20, 60);
        /* Half close: the echo service answers our FIN with its own. */
        ck_assert_int_eq(ts_call(&t, SHM_OP_SHUTDOWN, STK_SHUT_WR, 0, 0, 0, NULL), 0);
        uint32_t m = ts_wait_poll(&t, SHM_POLLRDHUP, 5);
        ck_assert_uint_eq(m & (SHM_POLLIN | SHM_POLLRDHUP | SHM_POLLOUT),
                          SHM_POLLIN | SHM_POLLRDHUP | SHM_POLLOUT);
        ck_assert(atomic_load(&ts_sock(&t)->flags) & SHM_F_WR_SHUT);
        ck_assert(atomic_load(&ts_sock(&t)->flags) & SHM_F_EOF);
        ck_assert(!(atomic_load(&ts_sock(&t)->flags) & SHM_F_RESET));
        struct shm_reply rep;
        ck_assert_int_eq(ts_call(&t, SHM_OP_INFO, 0, 0, 0, 0, &rep), 0);
        struct stk_tcp_info info;
        memcpy(&info, rep.info, sizeof(info));
        ck_assert_uint_ge(info.bytes_acked, 4u << 20);
        ts_close(&t);
        ts_wait_freed(&t, 5);
    }
    world_stop(&w);
    struct dio_shm_counters k = counters(&w.ra);
    ck_assert_uint_eq(k.shm_tx_bytes, (uint64_t)ncores << 22);
    ck_assert_uint_eq(k.shm_rx_bytes, (uint64_t)ncores << 22);
    ck_assert_uint_eq(k.shm_cmd_invalid, 0);
    ck_assert_uint_eq(k.shm_closes, ncores);
    ck_assert_uint_eq(k.shm_aborts, 0);
    ck_assert_uint_gt(k.shm_kicks, 0);
    world_destroy(&w);
}

START_TEST(echo_one_core)
{
    run_echo(1);
}
END_TEST

START_TEST(echo_two_cores)
{
    run_echo(2);
}
END_TEST

/* Stack A listens (every core), stack B's region opens connections to it; each side sends
 * its own stream and checks the other's, byte for byte, then both close. */
#define NCONN      8
#define PASSIVE_SZ (256u << 10)

struct pconn {
    struct tsock c, s; /* B's client socket, A's accepted socket */
    bool accepted;
    uint64_t c_sent, c_rcvd, s_sent, s_rcvd;
    bool c_shut, s_shut, c_eof, s_eof;
};

static bool pump(struct tsock *t, uint32_t seed_tx, uint32_t seed_rx, uint64_t *sent,
                 uint64_t *rcvd, bool *shut, bool *eof)
{
    static uint8_t buf[16384];
    bool progress = false;
    uint32_t room = shm_ring_space(&ts_sock(t)->tx, RING);
    if (room > sizeof(buf))
        room = sizeof(buf);
    if (*sent < PASSIVE_SZ && room) {
        uint32_t n = (uint32_t)(PASSIVE_SZ - *sent < room ? PASSIVE_SZ - *sent : room);
        for (uint32_t j = 0; j < n; j++)
            buf[j] = pat(seed_tx, *sent + j);
        uint32_t w = ts_write(t, buf, n);
        *sent += w;
        progress |= w > 0;
    } else if (*sent == PASSIVE_SZ && !*shut) {
        ck_assert_int_eq(ts_call(t, SHM_OP_SHUTDOWN, STK_SHUT_WR, 0, 0, 0, NULL), 0);
        *shut = true;
        progress = true;
    }
    uint32_t r = ts_read(t, buf, sizeof(buf));
    uint32_t bad = first_diff(buf, r, seed_rx, *rcvd);
    ck_assert_msg(bad == r, "sock %u byte %llu differs", t->i, (unsigned long long)(*rcvd + bad));
    *rcvd += r;
    progress |= r > 0;
    uint32_t f = atomic_load(&ts_sock(t)->flags);
    ck_assert_msg(!(f & SHM_F_RESET), "sock %u reset", t->i);
    if (r == 0 && (f & SHM_F_EOF) && shm_ring_used(&ts_sock(t)->rx, RING) == 0)
        *eof = true;
    return progress;
}

static void run_passive(unsigned ncores)
{
    static struct world w;
    static struct pconn pc[NCONN];
    memset(&w, 0, sizeof(w));
    memset(pc, 0, sizeof(pc));
    world_start(&w, ncores);

    /* The listener: created, bound and first listened on its home core, then on the others,
     * with an option set before (recorded for the other cores). */
    struct tsock l;
    ts_socket(&w.ra, 0, &l);
    ck_assert_int_eq(ts_call(&l, SHM_OP_SETOPT, STK_SO_REUSEADDR, 1, 0, 0, NULL), 0);
    struct shm_reply rep;
    ck_assert_int_eq(ts_call(&l, SHM_OP_BIND, 0, 0, 0, LISTEN_PORT, &rep), 0);
    ck_assert_uint_eq(rep.addr.port, LISTEN_PORT);
    for (uint32_t c = 0; c < ncores; c++) {
        struct shm_cmd cmd = ts_cmd(&l, SHM_OP_LISTEN);
        cmd.a0 = 128;
        ck_assert_int_eq(call(&w.ra, c, &cmd, &rep), 0);
        ck_assert_uint_eq(rep.addr.port, LISTEN_PORT);
    }
    ck_assert(atomic_load(&ts_sock(&l)->flags) & SHM_F_LISTENING);
    ck_assert_uint_eq(shm_sock_poll(w.ra.base, l.i), 0);
    /* Option changes after listen reach every core. */
    ck_assert_int_eq(ts_call(&l, SHM_OP_SETOPT, STK_TCP_NODELAY, 1, 0, 0, NULL), 0);

    /* Armed for POLLIN before the first connection arrives: the eventfd must fire. */
    uint64_t v;
    ck_assert_int_lt(read(l.efd, &v, sizeof(v)), 0);
    atomic_fetch_or(&ts_sock(&l)->armed, SHM_POLLIN);

    for (int k = 0; k < NCONN; k++) {
        ts_socket(&w.rb, (uint32_t)k % ncores, &pc[k].c);
        ts_connect(&pc[k].c, IP_A, LISTEN_PORT);
    }
    struct pollfd p = {.fd = l.efd, .events = POLLIN};
    ck_assert_int_eq(poll(&p, 1, 5000), 1);
    ck_assert_int_eq(read(l.efd, &v, sizeof(v)), sizeof(v));
    ck_assert_uint_eq(atomic_load(&ts_sock(&l)->armed), 0); /* the stack disarmed it */

    int naccepted = 0, ndone = 0;
    int64_t end = now_ns() + 60000000000ll;
    while (ndone < NCONN) {
        bool progress = false;
        uint32_t j;
        while (shm_aq_pop(ts_sock(&l), shm_rx_data(w.ra.base, l.i), RING, &j)) {
            ck_assert_uint_lt(j, NSOCKS);
            struct shm_sock *s = shm_sock(w.ra.base, j);
            ck_assert_uint_eq(atomic_load(&s->flags) & SHM_F_CONNECTED, SHM_F_CONNECTED);
            ck_assert_uint_eq(s->ra.ip, IP_B);
            ck_assert_uint_eq(s->la.ip, IP_A);
            ck_assert_uint_eq(s->la.port, LISTEN_PORT);
            int k;
            for (k = 0; k < NCONN; k++)
                if (shm_sock(w.rb.base, pc[k].c.i)->la.port == s->ra.port)
                    break;
            ck_assert_int_lt(k, NCONN);
            ck_assert(!pc[k].accepted);
            ts_attach(&w.ra, j, &pc[k].s);
            pc[k].accepted = true;
            naccepted++;
            progress = true;
        }
        ndone = 0;
        for (int k = 0; k < NCONN; k++) {
            struct pconn *q = &pc[k];
            uint32_t sc = 0xc0000 + (uint32_t)k, ss = 0x50000 + (uint32_t)k;
            if (atomic_load(&ts_sock(&q->c)->flags) & SHM_F_CONNECTED)
                progress |= pump(&q->c, sc, ss, &q->c_sent, &q->c_rcvd, &q->c_shut, &q->c_eof);
            if (q->accepted)
                progress |= pump(&q->s, ss, sc, &q->s_sent, &q->s_rcvd, &q->s_shut, &q->s_eof);
            ndone += q->c_eof && q->s_eof;
        }
        ck_assert_msg(now_ns() < end, "passive transfer stalled: %d accepted, %d done", naccepted,
                      ndone);
        if (!progress)
            usleep(200);
    }
    for (int k = 0; k < NCONN; k++) {
        ck_assert_uint_eq(pc[k].c_rcvd, PASSIVE_SZ);
        ck_assert_uint_eq(pc[k].s_rcvd, PASSIVE_SZ);
        ts_close(&pc[k].c);
        ts_close(&pc[k].s);
        ts_wait_freed(&pc[k].c, 5);
        ts_wait_freed(&pc[k].s, 5);
    }

    /* Connections that queue on the listener but are never accepted are reset when it
     * closes, whichever core accepted them, and the listener's slot is freed. */
    struct tsock late[4];
    for (int k = 0; k < 4; k++) {
        ts_socket(&w.rb, (uint32_t)k % ncores, &late[k]);
        ts_connect(&late[k], IP_A, LISTEN_PORT);
        ts_wait_poll(&late[k], SHM_POLLOUT, 5);
    }
    end = now_ns() + 5000000000ll;
    while (counters(&w.ra).shm_accepts < NCONN + 4) {
        ck_assert_msg(now_ns() < end, "late connections not queued");
        usleep(1000);
    }
    ts_close_listener(&l);
    ts_wait_freed(&l, 5);
    for (int k = 0; k < 4; k++) {
        uint32_t m = ts_wait_poll(&late[k], SHM_POLLERR, 5);
        ck_assert(m & SHM_POLLHUP);
        ck_assert_int_eq(atomic_load(&ts_sock(&late[k])->so_error), ECONNRESET);
        /* Reading the error clears it, and POLLERR with it. */
        struct shm_reply r2;
        ck_assert_int_eq(ts_call(&late[k], SHM_OP_GETOPT, STK_SO_ERROR, 0, 0, 0, &r2), 0);
        ck_assert_int_eq(r2.val, ECONNRESET);
        ck_assert_uint_eq(shm_sock_poll(w.rb.base, late[k].i) & SHM_POLLERR, 0);
        ts_close(&late[k]);
        ts_wait_freed(&late[k], 5);
    }
    world_stop(&w);
    struct dio_shm_counters ka = counters(&w.ra), kb = counters(&w.rb);
    ck_assert_uint_eq(ka.shm_accepts, NCONN + 4);
    ck_assert_uint_eq(ka.shm_aborts, 4);
    ck_assert_uint_eq(ka.shm_listens, ncores);
    ck_assert_uint_eq(ka.shm_cmd_invalid + kb.shm_cmd_invalid, 0);
    ck_assert_uint_ge(ka.shm_efd_writes, 1);
    if (ncores > 1)
        ck_assert_uint_ge(ka.shm_fwd, 1); /* the option forwarded, maybe aborts too */
    world_destroy(&w);
}

START_TEST(passive_one_core)
{
    run_passive(1);
}
END_TEST

START_TEST(passive_two_cores)
{
    run_passive(2);
}
END_TEST

/* The eventfd is written only when an app armed it for something that became ready. */
START_TEST(eventfd_armed_only)
{
    static struct world w;
    memset(&w, 0, sizeof(w));
    world_start(&w, 1);
    struct tsock t;
    connect_echo(&w, 0, &t);
    uint64_t v;
    while (read(t.efd, &v, sizeof(v)) > 0) {
    }
    uint64_t writes0 = counters(&w.ra).shm_efd_writes;

    /* Not armed: data comes back, nothing is written. */
    echo_bytes(&t, 7, 1000, 5);
    struct pollfd p = {.fd = t.efd, .events = POLLIN};
    ck_assert_int_eq(poll(&p, 1, 50), 0);
    ck_assert_uint_eq(counters(&w.ra).shm_efd_writes, writes0);

    /* Armed for POLLIN (drain, arm, re-check, sleep): exactly the wake-up we asked for. */
    ck_assert_int_lt(read(t.efd, &v, sizeof(v)), 0);
    atomic_fetch_or(&ts_sock(&t)->armed, SHM_POLLIN);
    ck_assert_uint_eq(shm_sock_poll(w.ra.base, t.i) & SHM_POLLIN, 0);
    uint8_t msg[100];
    memset(msg, 0x5a, sizeof(msg));
    ck_assert_uint_eq(ts_write(&t, msg, sizeof(msg)), sizeof(msg));
    ck_assert_int_eq(poll(&p, 1, 5000), 1);
    ck_assert_int_eq(read(t.efd, &v, sizeof(v)), sizeof(v));
    ck_assert_uint_eq(v, 1);
    ck_assert_uint_eq(atomic_load(&ts_sock(&t)->armed), 0);
    ck_assert(shm_sock_poll(w.ra.base, t.i) & SHM_POLLIN);
    uint8_t back[100];
    ck_assert_uint_eq(ts_read(&t, back, sizeof(back)), sizeof(back));
    ck_assert_mem_eq(back, msg, sizeof(msg));
    /* The core counts after its write returned: give it a moment. */
    for (int k = 0; k < 1000 && counters(&w.ra).shm_efd_writes == writes0; k++)
        usleep(1000);
    ck_assert_uint_eq(counters(&w.ra).shm_efd_writes, writes0 + 1);

    /* Armed for POLLOUT while writable: the next change signals at once. */
    atomic_fetch_or(&ts_sock(&t)->armed, SHM_POLLOUT);
    ck_assert_uint_eq(ts_write(&t, msg, 10), 10);
    ck_assert_int_eq(poll(&p, 1, 5000), 1);
    ck_assert_int_eq(read(t.efd, &v, sizeof(v)), sizeof(v));
    ts_wait_poll(&t, SHM_POLLIN, 5);

    ts_close(&t); /* 10 bytes unread: the close resets the connection, as Linux does */
    ts_wait_freed(&t, 5);
    world_stop(&w);
    ck_assert_uint_eq(counters(&w.ra).shm_aborts, 1);
    world_destroy(&w);
}
END_TEST

/* Edge-triggered waiters (armed_et) are signalled for events of the kinds they armed, never
 * for a change that is no event for them; arrivals and new write space are counted. */
START_TEST(eventfd_edges)
{
    static struct world w;
    memset(&w, 0, sizeof(w));
    world_start(&w, 1);
    struct tsock t;
    connect_echo(&w, 0, &t);
    struct shm_sock *s = ts_sock(&t);
    /* The core publishes (and counts) the connect after the flags we saw. */
    for (int k = 0; k < 1000 && !atomic_load(&s->ev_out); k++)
        usleep(1000);
    ck_assert_uint_ne(atomic_load(&s->ev_out), 0);
    /* The core counts the connect's events before it publishes them, and publish() loads
     * armed_et after that: armed now, the connect itself (a state change, an event of every
     * kind) could still signal us. A command's round trip is served after that publish()
     * returned (the core is one thread and is already inside it, or past it). */
    struct shm_reply rep;
    ck_assert_int_eq(ts_call(&t, SHM_OP_INFO, 0, 0, 0, 0, &rep), 0);
    uint64_t v;
    while (read(t.efd, &v, sizeof(v)) > 0) {
    }
    struct pollfd p = {.fd = t.efd, .events = POLLIN};
    uint8_t msg[10], back[10];
    memset(msg, 0x3c, sizeof(msg));

    /* Armed for POLLOUT only, on a writable socket: the echo's arrival is no OUT event. */
    uint32_t in0 = atomic_load(&s->ev_in), out0 = atomic_load(&s->ev_out);
    atomic_fetch_or(&s->armed_et, SHM_POLLOUT | SHM_POLLERR | SHM_POLLHUP);
    ck_assert_uint_eq(ts_write(&t, msg, sizeof(msg)), sizeof(msg));
    ts_wait_poll(&t, SHM_POLLIN, 5);
    ck_assert_int_eq(poll(&p, 1, 50), 0);
    ck_assert_uint_ne(atomic_load(&s->ev_in), in0);
    ck_assert_uint_eq(atomic_load(&s->ev_out), out0);
    ck_assert_uint_eq(atomic_load(&s->armed_et), SHM_POLLOUT | SHM_POLLERR | SHM_POLLHUP);

    /* A writer found the ring full (nospace): space freed is an OUT event. */
    atomic_store(&s->nospace, 1);
    ck_assert_uint_eq(ts_write(&t, msg, sizeof(msg)), sizeof(msg));
    ck_assert_int_eq(poll(&p, 1, 5000), 1);
    ck_assert_int_eq(read(t.efd, &v, sizeof(v)), sizeof(v));
    ck_assert_uint_eq(atomic_load(&s->nospace), 0);
    ck_assert_uint_ne(atomic_load(&s->ev_out), out0);
    ck_assert_uint_eq(atomic_load(&s->armed_et), 0);
    ts_wait_poll(&t, SHM_POLLIN, 5);

    /* Armed for POLLIN with data unread: each arrival is one signal, nothing else. */
    uint32_t got = 0;
    while (got < 2 * sizeof(msg))
        got += ts_read(&t, back, sizeof(back));
    in0 = atomic_load(&s->ev_in);
    atomic_fetch_or(&s->armed_et, SHM_POLLIN | SHM_POLLERR | SHM_POLLHUP);
    ck_assert_uint_eq(ts_write(&t, msg, sizeof(msg)), sizeof(msg));
    ck_assert_int_eq(poll(&p, 1, 5000), 1);
    ck_assert_int_eq(read(t.efd, &v, sizeof(v)), sizeof(v));
    ck_assert_uint_eq(v, 1);
    ck_assert_uint_ne(atomic_load(&s->ev_in), in0);
    ck_assert_uint_eq(atomic_load(&s->armed_et), 0);
    /* The level waiter's record (sigb) is untouched by edge signals. */
    ck_assert_uint_eq(atomic_load(&s->sigb) & SHM_POLLOUT, 0);
    ts_wait_poll(&t, SHM_POLLIN, 5);
    got = 0;
    while (got < sizeof(msg))
        got += ts_read(&t, back, sizeof(back));

    ts_close(&t);
    ts_wait_freed(&t, 5);
    world_stop(&w);
    world_destroy(&w);
}
END_TEST

/* Hostile commands and region contents: answered -EBADF or dropped, counted, and the stack
 * keeps serving a valid socket. */
START_TEST(invalid_commands)
{
    static struct world w;
    memset(&w, 0, sizeof(w));
    world_start(&w, 2);
    struct tsock t;
    connect_echo(&w, 1, &t);
    echo_bytes(&t, 11, 10000, 5);
    struct region *r = &w.ra;
    struct shm_cmd c;
    uint64_t inval0 = counters(r).shm_cmd_invalid;
    unsigned expect = 0;

    /* A socket index beyond the region. */
    c = ts_cmd(&t, SHM_OP_GETOPT);
    c.sock = NSOCKS + 5;
    c.a0 = STK_SO_STATE;
    ck_assert_int_eq(call(r, 1, &c, NULL), -EBADF);
    expect++;
    c.sock = 0xffffffffu;
    ck_assert_int_eq(call(r, 1, &c, NULL), -EBADF);
    expect++;
    /* A stale generation. */
    c = ts_cmd(&t, SHM_OP_GETOPT);
    c.gen = t.gen + 1;
    c.a0 = STK_SO_STATE;
    ck_assert_int_eq(call(r, 1, &c, NULL), -EBADF);
    expect++;
    /* An op out of range. */
    c = ts_cmd(&t, 200);
    ck_assert_int_eq(call(r, 1, &c, NULL), -EBADF);
    expect++;
    /* The right socket on the wrong core. */
    c = ts_cmd(&t, SHM_OP_GETOPT);
    c.a0 = STK_SO_STATE;
    ck_assert_int_eq(call(r, 0, &c, NULL), -EBADF);
    expect++;
    /* SOCKET again on a live socket. */
    c = ts_cmd(&t, SHM_OP_SOCKET);
    c.a0 = -1;
    ck_assert_int_eq(call(r, 1, &c, NULL), -EBADF);
    expect++;
    /* LISTEN on a core that is not home, for a socket that does not listen. */
    c = ts_cmd(&t, SHM_OP_LISTEN);
    ck_assert_int_eq(call(r, 0, &c, NULL), -EBADF);
    expect++;
    /* A corrupted ring head: the command is refused, and a kick is dropped. */
    struct shm_sock *s = ts_sock(&t);
    uint32_t head = atomic_load(&s->tx.head);
    atomic_store(&s->tx.head, atomic_load(&s->tx.tail) + 3 * RING);
    c = ts_cmd(&t, SHM_OP_GETOPT);
    c.a0 = STK_SO_STATE;
    ck_assert_int_eq(call(r, 1, &c, NULL), -EBADF);
    expect++;
    c = ts_cmd(&t, SHM_OP_KICK);
    push(r, 1, &c);
    expect++;
    c = ts_cmd(&t, SHM_OP_INFO); /* in queue order after the kick */
    ck_assert_int_eq(call(r, 1, &c, NULL), -EBADF);
    expect++;
    /* An out-of-range option. */
    atomic_store(&s->tx.head, head);
    c = ts_cmd(&t, SHM_OP_SETOPT);
    c.a0 = 1000;
    ck_assert_int_eq(call(r, 1, &c, NULL), -ENOPROTOOPT);
    /* A reply slot beyond the region: dropped, counted apart. */
    c = ts_cmd(&t, SHM_OP_GETOPT);
    c.reply = NREPLIES + 1;
    push(r, 1, &c);
    /* CLOSE of a socket this core does not serve: dropped. */
    c = ts_cmd(&t, SHM_OP_CLOSE);
    push(r, 0, &c);
    expect++;
    /* Garbage in the client's view of the header: the stack reads its own copy. */
    struct shm_hdr *h = shm_hdr(r->base);
    struct shm_hdr saved = *h;
    h->off_sock = 0x7fffffffffffull;
    h->nsocks = 0xffffffffu;
    h->ring_size = 3;
    int64_t end = now_ns() + 5000000000ll;
    while (counters(r).shm_reply_invalid < 1 || counters(r).shm_cmd_invalid < inval0 + expect) {
        ck_assert_msg(now_ns() < end, "invalid commands not counted: %llu of %u, reply %llu",
                      (unsigned long long)(counters(r).shm_cmd_invalid - inval0), expect,
                      (unsigned long long)counters(r).shm_reply_invalid);
        usleep(1000);
    }
    ck_assert_uint_eq(counters(r).shm_cmd_invalid, inval0 + expect);
    /* The stack still serves the socket (the kick went by the previous commands; the client
     * restores its header to use its own accessors). */
    struct shm_cmd g = {.op = SHM_OP_GETOPT, .sock = t.i, .gen = t.gen, .a0 = STK_SO_STATE};
    struct shm_reply rep;
    ck_assert_int_eq(call(r, 1, &g, &rep), 0);
    ck_assert_int_eq(rep.val, STK_TCP_ESTABLISHED);
    memcpy(h, &saved, sizeof(saved));
    echo_bytes(&t, 12, 1u << 20, 20);

    ts_close(&t);
    ts_wait_freed(&t, 5);
    /* A freed socket's commands are stale. */
    c = ts_cmd(&t, SHM_OP_GETOPT);
    ck_assert_int_eq(call(r, 1, &c, NULL), -EBADF);
    /* And the stack still makes new connections. */
    struct tsock t2;
    connect_echo(&w, 0, &t2);
    echo_bytes(&t2, 13, 100000, 10);
    ts_close(&t2);
    ts_wait_freed(&t2, 5);
    world_stop(&w);
    world_destroy(&w);
}
END_TEST

/* A slot freed behind the stack's back (a broken client) is abandoned, not written to. */
START_TEST(slot_freed_behind_back)
{
    static struct world w;
    memset(&w, 0, sizeof(w));
    world_start(&w, 1);
    /* A listener in B's region, so that the test decides when the peer sends. */
    struct tsock l, x, y;
    ts_socket(&w.rb, 0, &l);
    ck_assert_int_eq(ts_call(&l, SHM_OP_BIND, 0, 0, 0, LISTEN_PORT, NULL), 0);
    ck_assert_int_eq(ts_call(&l, SHM_OP_LISTEN, 16, 0, 0, 0, NULL), 0);
    ts_socket(&w.ra, 0, &x);
    ts_connect(&x, IP_B, LISTEN_PORT);
    ts_wait_poll(&l, SHM_POLLIN, 5);
    uint32_t j;
    ck_assert_int_eq(shm_aq_pop(ts_sock(&l), shm_rx_data(w.rb.base, l.i), RING, &j), 1);
    ts_attach(&w.rb, j, &y);
    uint8_t msg[100], back[100];
    memset(msg, 0x33, sizeof(msg));
    ck_assert_uint_eq(ts_write(&y, msg, sizeof(msg)), sizeof(msg));
    ts_wait_poll(&x, SHM_POLLIN, 5);
    ck_assert_uint_eq(ts_read(&x, back, sizeof(back)), sizeof(back));

    /* The client frees x's slot itself; the peer then sends. */
    shm_sock_free(w.ra.base, x.i);
    ck_assert_uint_eq(ts_write(&y, msg, sizeof(msg)), sizeof(msg));
    uint32_t m = ts_wait_poll(&y, SHM_POLLERR, 5);
    ck_assert(m & SHM_POLLHUP); /* the stack reset the connection it could not serve */
    ck_assert_uint_eq(counters(&w.ra).shm_orphans, 1);
    struct shm_sock *xs = shm_sock(w.ra.base, x.i);
    ck_assert_uint_eq(atomic_load(&xs->rx.head), 0); /* nothing written into the freed slot */
    ck_assert_uint_eq(atomic_load(&xs->flags), 0);

    ts_close(&y);
    ts_wait_freed(&y, 5);
    ts_close(&l);
    ts_wait_freed(&l, 5);
    struct tsock t2;
    connect_echo(&w, 0, &t2);
    echo_bytes(&t2, 22, 100000, 10);
    ts_close(&t2);
    ts_wait_freed(&t2, 5);
    world_stop(&w);
    world_destroy(&w);
}
END_TEST

/* Random commands and random scribbling over the sockets' shared fields (rings, flags,
 * states, generations, accept queues, the header), then a fresh connection must still
 * work: the stack neither crashes nor hangs on hostile content. (The command queues
 * themselves are left alone: they are shared by every client, so a client that corrupts
 * one stalls its core for everybody; see docs/shm.md.) */
#ifndef FUZZ_SEED
#define FUZZ_SEED 0x9e3779b97f4a7c15ull
#endif
static uint64_t rnd_state = FUZZ_SEED;
static uint64_t rnd(void)
{
    rnd_state ^= rnd_state << 13;
    rnd_state ^= rnd_state >> 7;
    rnd_state ^= rnd_state << 17;
    return rnd_state;
}

START_TEST(hostile_fuzz)
{
    static struct world w;
    memset(&w, 0, sizeof(w));
    world_start(&w, 2);
    struct region *r = &w.ra;
    enum { NF = 24 };
    static struct tsock f[NF];
    for (int k = 0; k < NF; k++) {
        ts_socket(r, (uint32_t)k % 2, &f[k]);
        if (k % 3 == 0)
            ts_connect(&f[k], IP_B, ECHO_PORT);
        else if (k % 3 == 1)
            ck_assert_int_eq(ts_call(&f[k], SHM_OP_LISTEN, 8, 0, 0, 0, NULL), 0);
    }
    uint8_t junk[4096];
    for (size_t j = 0; j < sizeof(junk); j++)
        junk[j] = (uint8_t)rnd();
    struct shm_hdr saved = *shm_hdr(r->base);
    int64_t end = now_ns() + 3000000000ll;
    unsigned n = 0;
    while (now_ns() < end) {
        struct tsock *t = &f[rnd() % NF];
        struct shm_sock *s = ts_sock(t);
        struct shm_cmd c = ts_cmd(t, (uint16_t)(rnd() % (SHM_OP_COUNT + 2)));
        uint64_t x = rnd();
        if (x & 1)
            c.sock = (uint32_t)(rnd() % (NSOCKS + 8));
        if (x & 2)
            c.gen = atomic_load(&shm_sock(r->base, c.sock % NSOCKS)->gen);
        if (x & 4)
            c.gen = (uint32_t)rnd();
        c.a0 = (int32_t)(rnd() % 40) - 4;
        c.a1 = (int32_t)rnd();
        c.addr.ip = (x & 8) ? IP_B : (uint32_t)rnd();
        c.addr.port = (uint16_t)rnd();
        c.flags = (uint16_t)rnd();
        c.reply = (x & 16) ? r->reply : (x & 32) ? (uint32_t)rnd() : SHM_NONE;
        if (c.op == SHM_OP_SOCKET || c.op == SHM_OP_ATTACH)
            c.a0 = (x & 64) ? t->efd : (int32_t)(rnd() % 64);
        if (c.op == SHM_OP_CONNECT && (x & 128))
            c.addr.port = ECHO_PORT;
        push(r, (uint32_t)(rnd() % 2), &c);
        /* Scribble. */
        switch (rnd() % 12) {
        case 0:
            atomic_store(&s->tx.head, (uint32_t)rnd());
            break;
        case 1:
            atomic_store(&s->rx.tail, (uint32_t)rnd());
            break;
        case 2:
            atomic_store(&s->flags, (uint32_t)rnd());
            break;
        case 3:
            atomic_store(&s->state, (uint32_t)rnd() % 5);
            break;
        case 4:
            atomic_store(&s->gen, (uint32_t)rnd() % 4);
            break;
        case 5:
            atomic_store(&s->aq_enq, (uint32_t)rnd());
            atomic_store(&s->aq_deq, (uint32_t)rnd());
            break;
        case 6:
            memcpy(shm_rx_data(r->base, t->i) + rnd() % (RING - 64), junk, 64);
            break;
        case 7:
            s->core = (uint32_t)rnd() % 4;
            break;
        case 8:
            shm_hdr(r->base)->nsocks = (uint32_t)rnd();
            shm_hdr(r->base)->off_data = rnd();
            break;
        case 9:
            shm_ring_write(&s->tx, shm_tx_data(r->base, t->i), RING, junk, 1000);
            ts_kick(t);
            break;
        case 10:
            atomic_store(&s->kick, (uint32_t)rnd() & 1);
            break;
        default:
            atomic_store(&s->armed, (uint32_t)rnd());
            break;
        }
        memcpy(shm_hdr(r->base), &saved, sizeof(saved)); /* our own accessors need it */
        if (++n % 64 == 0)
            usleep(500);
    }
    /* The stack still answers, and serves a new connection. */
    usleep(200000);
    ck_assert_uint_gt(counters(r).shm_cmd_invalid, 0);
    struct tsock t2;
    connect_echo(&w, 1, &t2);
    echo_bytes(&t2, 31, 200000, 20);
    ts_close(&t2);
    ts_wait_freed(&t2, 5);
    world_stop(&w);
    world_destroy(&w);
}
END_TEST

/* ---- Dead holders (docs/shm.md "Holders") ------------------------------------------------ */

/* A pid that is dead and reaped: a child that exits at once. */
static int32_t dead_pid(void)
{
    pid_t p = fork();
    ck_assert_int_ge(p, 0);
    if (p == 0)
        _exit(0);
    ck_assert_int_eq(waitpid(p, NULL, 0), p);
    return (int32_t)p;
}

/* Calls dio_shm_reap (the control thread's job) until cond or 5 s. */
#define REAP_UNTIL(r, cond)                                                                        \
    do {                                                                                           \
        int64_t end_ = now_ns() + 5000000000ll;                                                    \
        while (!(cond)) {                                                                          \
            ck_assert_msg(now_ns() < end_, "reap: %s never held", #cond);                          \
            dio_shm_reap((r)->srv);                                                                \
            usleep(2000);                                                                          \
        }                                                                                          \
    } while (0)

/* Socket t is held by process entry p through n fds (as the client library counts). */
static void hold(struct tsock *t, uint32_t p, uint32_t n)
{
    atomic_fetch_add(shm_hold(t->r->base, p, t->i), n);
}

/* A listener in B and a connection to it from A: returns the accepted B socket in *y. */
static void pair_up(struct world *w, struct tsock *l, struct tsock *x, struct tsock *y,
                    uint16_t port)
{
    ts_socket(&w->rb, 0, l);
    ck_assert_int_eq(ts_call(l, SHM_OP_BIND, 0, 0, 0, port, NULL), 0);
    ck_assert_int_eq(ts_call(l, SHM_OP_LISTEN, 16, 0, 0, 0, NULL), 0);
    ts_socket(&w->ra, 0, x);
    ts_connect(x, IP_B, port);
    ts_wait_poll(l, SHM_POLLIN, 5);
    uint32_t j;
    ck_assert_int_eq(shm_aq_pop(ts_sock(l), shm_rx_data(w->rb.base, l->i), RING, &j), 1);
    ts_attach(&w->rb, j, y);
    ts_wait_poll(x, SHM_POLLOUT, 5);
}

/* A process that dies holding sockets: a connection without unread data is closed (the
 * peer reads EOF), one with unread data is reset, a listener stops listening and its port
 * is free again; a socket another live process also holds stays open until that one
 * closes it; the dead process's copy lock is released. */
START_TEST(dead_holder_reclaimed)
{
    static struct world w;
    memset(&w, 0, sizeof(w));
    world_start(&w, 1);
    struct tsock l1, x1, y1, l2, x2, y2, l3, x3, y3;
    pair_up(&w, &l1, &x1, &y1, 6001);
    pair_up(&w, &l2, &x2, &y2, 6002);
    pair_up(&w, &l3, &x3, &y3, 6003);
    uint8_t msg[100], back[100];
    memset(msg, 0x5a, sizeof(msg));

    /* The dead process D holds x1 (clean), x2 (unread data), l1 (a listener in B), and
     * shares x3 with a live process L (this test). */
    uint32_t me = shm_proc_alloc(w.ra.base, getpid(), 0);
    ck_assert_uint_ne(me, SHM_NONE);
    int32_t dpid = dead_pid();
    uint32_t d = shm_proc_alloc(w.ra.base, dpid, 0);
    uint32_t db = shm_proc_alloc(w.rb.base, dpid, 0);
    ck_assert_uint_ne(d, SHM_NONE);
    ck_assert_uint_ne(db, SHM_NONE);
    ck_assert_uint_ne(d, me);
    hold(&x1, d, 2); /* two fds of D: refs counts fds */
    atomic_store(&ts_sock(&x1)->refs, 2);
    hold(&x2, d, 1);
    hold(&l1, db, 1);
    hold(&x3, d, 1);
    hold(&x3, me, 1);
    atomic_store(&ts_sock(&x3)->refs, 2);
    atomic_store(&ts_sock(&x3)->wlock, d + 1); /* D died copying into x3 */
    ck_assert_uint_eq(ts_write(&y2, msg, sizeof(msg)), sizeof(msg));
    ts_wait_poll(&x2, SHM_POLLIN, 5); /* x2 now has unread data */

    REAP_UNTIL(&w.ra, atomic_load(&shm_proc(w.ra.base, d)->state) == SHM_PROC_FREE);
    REAP_UNTIL(&w.rb, atomic_load(&shm_proc(w.rb.base, db)->state) == SHM_PROC_FREE);
    /* x1: FIN, the peer reads EOF; the slot is freed. */
    uint32_t m = ts_wait_poll(&y1, SHM_POLLRDHUP, 5);
    ck_assert(!(m & SHM_POLLERR));
    ts_wait_freed(&x1, 5);
    /* x2: RST (unread data), as Linux's close. */
    m = ts_wait_poll(&y2, SHM_POLLERR, 5);
    ck_assert(atomic_load(&ts_sock(&y2)->flags) & SHM_F_RESET);
    ts_wait_freed(&x2, 5);
    /* l1: no longer listening (a connect is refused), and the port can be bound again
     * SO_REUSEADDR: y1, the connection it accepted, still uses it, as on Linux). */
    ts_wait_freed(&l1, 5);
    struct tsock l4, x4;
    ts_socket(&w.ra, 0, &x4);
    ts_connect(&x4, IP_B, 6001);
    ts_wait_poll(&x4, SHM_POLLERR, 5);
    ck_assert_int_eq(atomic_load(&ts_sock(&x4)->so_error), ECONNREFUSED);
    ts_close(&y1); /* LAST-ACK, then gone (the passive closer has no TIME-WAIT) */
    ts_wait_freed(&y1, 5);
    ts_socket(&w.rb, 0, &l4);
    int64_t bend = now_ns() + 3000000000ll;
    while (ts_call(&l4, SHM_OP_BIND, 0, 0, 0, 6001, NULL) != 0) {
        ck_assert_msg(now_ns() < bend, "port 6001 never free again");
        usleep(10000);
    }
    ck_assert_int_eq(ts_call(&l4, SHM_OP_LISTEN, 16, 0, 0, 0, NULL), 0);
    /* x3: still ours, lock free, data flows both ways. */
    ck_assert_uint_eq(atomic_load(&ts_sock(&x3)->refs), 1);
    ck_assert_uint_eq(atomic_load(&ts_sock(&x3)->wlock), 0);
    ck_assert_uint_eq(atomic_load(shm_hold(w.ra.base, d, x3.i)), 0);
    ck_assert_uint_eq(ts_write(&x3, msg, sizeof(msg)), sizeof(msg));
    ts_wait_poll(&y3, SHM_POLLIN, 5);
    ck_assert_uint_eq(ts_read(&y3, back, sizeof(back)), sizeof(back));
    ck_assert_uint_eq(atomic_load(&ts_sock(&x3)->state), SHM_SOCK_LIVE);
    /* Then the live holder dies too: closed. */
    int32_t dpid2 = dead_pid();
    atomic_store(&shm_proc(w.ra.base, me)->pid, dpid2);
    REAP_UNTIL(&w.ra, atomic_load(&shm_proc(w.ra.base, me)->state) == SHM_PROC_FREE);
    ts_wait_poll(&y3, SHM_POLLRDHUP, 5);
    ts_wait_freed(&x3, 5);
    struct dio_shm_counters k = counters(&w.ra);
    ck_assert_uint_eq(k.shm_procs_reaped, 2);
    ck_assert_uint_eq(k.shm_reclaim_closes, 3);
    ck_assert_uint_eq(k.shm_refs_dropped, 5);

    /* A fork child's PENDING entry whose parent died (and no child named itself) goes too. */
    uint32_t pe = shm_proc_alloc(w.ra.base, 0, dead_pid());
    ck_assert_uint_ne(pe, SHM_NONE);
    ck_assert_uint_eq(atomic_load(&shm_proc(w.ra.base, pe)->state), SHM_PROC_PENDING);
    REAP_UNTIL(&w.ra, atomic_load(&shm_proc(w.ra.base, pe)->state) == SHM_PROC_FREE);
    /* A live process's entry stays. */
    uint32_t alive = shm_proc_alloc(w.ra.base, getpid(), 0);
    for (int k2 = 0; k2 < 5; k2++)
        dio_shm_reap(w.ra.srv);
    ck_assert_uint_eq(atomic_load(&shm_proc(w.ra.base, alive)->state), SHM_PROC_LIVE);
    world_stop(&w);
    world_destroy(&w);
}
END_TEST

/* A process killed after taking the one signal meant for all holders of a listener (it read
 * the eventfd empty, or was the epoll an EPOLLEXCLUSIVE wake chose, and never armed again):
 * queued connections must not wait for ever. Reclaiming it signals the eventfd of every
 * socket it shared that is ready (nginx worker killed under load: tests/net/test_workers.sh). */
START_TEST(dead_holder_wakes_sharers)
{
    static struct world w;
    memset(&w, 0, sizeof(w));
    world_start(&w, 1);
    struct tsock l, x;
    ts_socket(&w.rb, 0, &l);
    ck_assert_int_eq(ts_call(&l, SHM_OP_BIND, 0, 0, 0, 6101, NULL), 0);
    ck_assert_int_eq(ts_call(&l, SHM_OP_LISTEN, 16, 0, 0, 0, NULL), 0);
    uint32_t me = shm_proc_alloc(w.rb.base, getpid(), 0);
    int32_t dpid = dead_pid();
    uint32_t d = shm_proc_alloc(w.rb.base, dpid, 0);
    ck_assert_uint_ne(me, SHM_NONE);
    ck_assert_uint_ne(d, SHM_NONE);
    hold(&l, me, 1);
    hold(&l, d, 1);
    atomic_store(&ts_sock(&l)->refs, 2);
    /* A connection is queued; the dead took the signal: eventfd empty, nothing armed. */
    ts_socket(&w.ra, 0, &x);
    ts_connect(&x, IP_B, 6101);
    ts_wait_poll(&l, SHM_POLLIN, 5);
    uint64_t v;
    while (read(l.efd, &v, sizeof(v)) > 0) {
    }
    atomic_store(&ts_sock(&l)->armed, 0);
    atomic_store(&ts_sock(&l)->armed_et, 0);
    uint64_t wakes0 = counters(&w.rb).shm_reclaim_wakes;
    REAP_UNTIL(&w.rb, atomic_load(&shm_proc(w.rb.base, d)->state) == SHM_PROC_FREE);
    struct pollfd p = {.fd = l.efd, .events = POLLIN};
    ck_assert_int_eq(poll(&p, 1, 5000), 1);
    ck_assert_int_eq(read(l.efd, &v, sizeof(v)), sizeof(v));
    ck_assert_uint_eq(counters(&w.rb).shm_reclaim_wakes, wakes0 + 1);
    /* Still listening (we hold it): the queued connection is there to take. */
    ck_assert_uint_eq(atomic_load(&ts_sock(&l)->refs), 1);
    ck_assert_uint_eq(atomic_load(&ts_sock(&l)->state), SHM_SOCK_LIVE);
    uint32_t j;
    ck_assert_int_eq(shm_aq_pop(ts_sock(&l), shm_rx_data(w.rb.base, l.i), RING, &j), 1);
    struct tsock y;
    ts_attach(&w.rb, j, &y);
    ts_wait_poll(&x, SHM_POLLOUT, 5);
    /* A connection the dead shared is signalled too (writable: POLLOUT is readiness). */
    int32_t dpid2 = dead_pid();
    uint32_t d2 = shm_proc_alloc(w.rb.base, dpid2, 0);
    ck_assert_uint_ne(d2, SHM_NONE);
    hold(&y, me, 1);
    hold(&y, d2, 1);
    atomic_store(&ts_sock(&y)->refs, 2);
    while (read(y.efd, &v, sizeof(v)) > 0) {
    }
    REAP_UNTIL(&w.rb, atomic_load(&shm_proc(w.rb.base, d2)->state) == SHM_PROC_FREE);
    p.fd = y.efd;
    ck_assert_int_eq(poll(&p, 1, 5000), 1);
    ck_assert_uint_eq(counters(&w.rb).shm_reclaim_wakes, wakes0 + 2);
    ck_assert_int_eq(read(y.efd, &v, sizeof(v)), sizeof(v));
    world_stop(&w);
    world_destroy(&w);
}
END_TEST

/* The command queues are shared by every client: a producer killed between claiming a slot
 * and filling it, or a client scribbling on the queue's words (enq, slot sequences, the
 * published deq) or entries, must not stall a core for the others. The stack repairs the
 * queue, counts it, and a connection of another client keeps working throughout. */
START_TEST(cmdq_scribble)
{
    static struct world w;
    memset(&w, 0, sizeof(w));
    world_start(&w, 2);
    struct region *r = &w.ra;
    struct tsock t;
    connect_echo(&w, 1, &t);
    echo_bytes(&t, 41, 100000, 10);
    struct shm_cmdq *q = shm_cmdq(r->base, 1);
    /* A producer that died after claiming a slot: enq moves, the slot stays unfilled. */
    atomic_fetch_add(&q->enq, 1);
    usleep(50000);
    echo_bytes(&t, 42, 100000, 20); /* waits out the stall, then flows */
    ck_assert_uint_ge(counters(r).shm_cmdq_repairs, 1);
    uint64_t rep0 = counters(r).shm_cmdq_repairs;
    /* enq far ahead of the consumer, and behind it. */
    atomic_fetch_add(&q->enq, 5 * SHM_CMDQ_LEN);
    echo_bytes(&t, 43, 100000, 20);
    atomic_fetch_sub(&q->enq, 7);
    echo_bytes(&t, 44, 100000, 20);
    ck_assert_uint_gt(counters(r).shm_cmdq_repairs, rep0);
    /* Random scribbling over sequence words, enq, deq and whole entries, while the other
     * client keeps echoing; between rounds the stack must catch up. */
    uint8_t junk[sizeof(struct shm_cmd)];
    for (int round = 0; round < 20; round++) {
        for (int k = 0; k < 8; k++) {
            uint32_t at = (uint32_t)rnd() % SHM_CMDQ_LEN;
            switch (rnd() % 5) {
            case 0:
                atomic_store(&q->slot[at].seq, (uint32_t)rnd());
                break;
            case 1:
                atomic_store(&q->enq, (uint32_t)rnd());
                break;
            case 2:
                atomic_store(&q->deq, (uint32_t)rnd());
                break;
            case 3: /* a whole entry of junk, published: validated like any command */
                for (size_t j = 0; j < sizeof(junk); j++)
                    junk[j] = (uint8_t)rnd();
                memcpy((char *)&q->slot[at] + 4, junk + 4, sizeof(junk) - 4);
                break;
            default:
                atomic_store(&q->slot[at].seq, (uint32_t)rnd() % 4);
                break;
            }
        }
        echo_bytes(&t, 100 + (uint32_t)round, 20000, 30);
    }
    ck_assert_uint_gt(counters(r).shm_cmdq_repairs, rep0 + 1);
    /* Core 0's queue was left alone: a new connection there works too. */
    struct tsock t2;
    connect_echo(&w, 0, &t2);
    echo_bytes(&t2, 45, 100000, 10);
    ts_close(&t2);
    ts_wait_freed(&t2, 5);
    ts_close(&t);
    ts_wait_freed(&t, 10);
    world_stop(&w);
    world_destroy(&w);
}
END_TEST

/* ---- UDP ------------------------------------------------------------------------------ */

static void ts_socket_udp(struct region *r, struct tsock *t, uint16_t port)
{
    t->r = r;
    t->core = 0; /* UDP sockets live on core 0 (docs/architecture.md "UDP") */
    t->i = shm_sock_alloc(r->base);
    ck_assert_uint_ne(t->i, SHM_NONE);
    struct shm_sock *s = ts_sock(t);
    s->core = 0;
    t->gen = atomic_load(&s->gen);
    t->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    ck_assert_int_ge(t->efd, 0);
    ts_socket_push(t, t->efd, SHM_SOCK_DGRAM);
    ck_assert_uint_eq(atomic_load(&s->state), SHM_SOCK_LIVE);
    atomic_store(&s->refs, 1);
    ck_assert(atomic_load(&s->flags) & SHM_F_DGRAM);
    struct shm_reply rep;
    ck_assert_int_eq(ts_call(t, SHM_OP_BIND, 0, 0, 0, port, &rep), 0);
    ck_assert_uint_eq(rep.addr.port, port);
    ck_assert_uint_eq(s->la.port, port);
}

/* One datagram record into the tx ring (false when it does not fit now). */
static bool dg_send(struct tsock *t, uint32_t ip, uint16_t port, const void *data, uint32_t len)
{
    struct shm_sock *s = ts_sock(t);
    uint8_t *d = shm_tx_data(t->r->base, t->i);
    if (shm_ring_space(&s->tx, RING) < SHM_DGRAM_HLEN + len)
        return false;
    struct shm_dgram h = {.len = len, .addr = {.ip = ip, .port = port}};
    shm_ring_put_at(&s->tx, d, RING, 0, &h, SHM_DGRAM_HLEN);
    shm_ring_put_at(&s->tx, d, RING, SHM_DGRAM_HLEN, data, len);
    shm_ring_produce(&s->tx, SHM_DGRAM_HLEN + len);
    ts_kick(t);
    return true;
}

/* The next datagram record (waits up to ms); its length, or -1. */
static int dg_recv(struct tsock *t, struct shm_dgram *h, void *buf, uint32_t cap, int ms)
{
    struct shm_sock *s = ts_sock(t);
    const uint8_t *d = shm_rx_data(t->r->base, t->i);
    int64_t end = now_ns() + (int64_t)ms * 1000000;
    for (;;) {
        uint32_t seq0 = atomic_load(&s->seq);
        uint32_t used = shm_ring_used(&s->rx, RING);
        if (used >= SHM_DGRAM_HLEN) {
            shm_ring_get_at(&s->rx, d, RING, 0, h, SHM_DGRAM_HLEN);
            ck_assert_uint_le(h->len, used - SHM_DGRAM_HLEN);
            ck_assert_uint_le(h->len, cap);
            shm_ring_get_at(&s->rx, d, RING, SHM_DGRAM_HLEN, buf, h->len);
            shm_ring_skip(&s->rx, RING, SHM_DGRAM_HLEN + h->len);
            atomic_thread_fence(memory_order_seq_cst);
            if (atomic_load(&s->flags) & SHM_F_RX_BLOCKED)
                ts_kick(t);
            return (int)h->len;
        }
        if (now_ns() >= end)
            return -1;
        ts_wait(t, seq0, 20);
    }
}

/* Two stacks, one UDP socket each (on core 0 of a one- or two-core stack): A sends
 * datagrams of every size 0..1472 to B, B echoes each to its sender, A checks them in
 * order; a scribbled tx record is dropped whole and counted, and the socket goes on. */
static void run_udp(unsigned ncores)
{
    static struct world w;
    memset(&w, 0, sizeof(w));
    world_start(&w, ncores);
    struct tsock a, b;
    ts_socket_udp(&w.ra, &a, 6000);
    ts_socket_udp(&w.rb, &b, 6001);
    static uint8_t out[1500], in[1500], echo[1500];
    const uint32_t n = 1473;
    uint32_t sent = 0, got = 0;
    int64_t end = now_ns() + 60ll * 1000000000;
    while (got < n) {
        ck_assert_msg(now_ns() < end, "%u of %u datagrams echoed", got, n);
        /* A keeps a window of 8 in flight: loss-free on ring ports. */
        while (sent < n && sent - got < 8) {
            for (uint32_t k = 0; k < sent; k++) /* datagram i has i bytes */
                out[k] = pat(sent, k);
            if (!dg_send(&a, IP_B, 6001, out, sent))
                break;
            sent++;
        }
        struct shm_dgram h;
        int len;
        while ((len = dg_recv(&b, &h, echo, sizeof(echo), 0)) >= 0) {
            ck_assert_uint_eq(h.addr.ip, IP_A);
            ck_assert_uint_eq(h.addr.port, 6000);
            ck_assert_uint_eq(h.dst, IP_B);
            while (!dg_send(&b, h.addr.ip, h.addr.port, echo, (uint32_t)len))
                usleep(100);
        }
        len = dg_recv(&a, &h, in, sizeof(in), 20);
        if (len < 0)
            continue;
        ck_assert_uint_eq(h.addr.ip, IP_B);
        ck_assert_uint_eq(h.addr.port, 6001);
        ck_assert_int_eq(len, (int)got);
        for (uint32_t k = 0; k < got; k++)
            ck_assert_msg(in[k] == pat(got, k), "datagram %u byte %u", got, k);
        got++;
    }
    /* A record claiming more than the ring holds: the ring is emptied, counted. */
    struct shm_sock *s = ts_sock(&a);
    struct shm_dgram bad = {.len = 60000, .addr = {.ip = IP_B, .port = 6001}};
    shm_ring_put_at(&s->tx, shm_tx_data(w.ra.base, a.i), RING, 0, &bad, SHM_DGRAM_HLEN);
    shm_ring_produce(&s->tx, SHM_DGRAM_HLEN);
    ts_kick(&a);
    int64_t until = now_ns() + 5ll * 1000000000;
    while (shm_ring_used(&s->tx, RING) && now_ns() < until)
        usleep(1000);
    ck_assert_uint_eq(shm_ring_used(&s->tx, RING), 0);
    /* Still usable. */
    ck_assert(dg_send(&a, IP_B, 6001, "after", 5));
    struct shm_dgram h;
    ck_assert_int_eq(dg_recv(&b, &h, echo, sizeof(echo), 5000), 5);
    /* Disconnected/unbound rules live in the engine; here: connect and its flags. */
    ck_assert_int_eq(ts_call(&a, SHM_OP_CONNECT, 0, 0, IP_B, 6001, NULL), 0);
    ck_assert(atomic_load(&s->flags) & SHM_F_CONNECTED);
    ck_assert_uint_eq(s->ra.ip, IP_B);
    ck_assert(dg_send(&a, 0, 0, "conn", 4)); /* 0:0 = the connected peer */
    ck_assert_int_eq(dg_recv(&b, &h, echo, sizeof(echo), 5000), 4);
    ck_assert_int_eq(ts_call(&a, SHM_OP_CONNECT, 1, 0, 0, 0, NULL), 0);
    ck_assert(!(atomic_load(&s->flags) & SHM_F_CONNECTED));
    ck_assert_int_eq(ts_call(&a, SHM_OP_LISTEN, 1, 0, 0, 0, NULL), -EOPNOTSUPP);
    ts_close(&a);
    ts_close(&b);
    ts_wait_freed(&a, 5);
    ts_wait_freed(&b, 5);
    world_stop(&w);
    struct dio_shm_counters k = counters(&w.ra);
    ck_assert_uint_ge(k.shm_udp_tx, n + 2);
    ck_assert_uint_ge(k.shm_udp_rx, n + 0);
    ck_assert_uint_eq(k.shm_ring_insane, 1);
    ck_assert_uint_eq(k.shm_udp_tx_fail, 0);
    world_destroy(&w);
}

START_TEST(udp_one_core)
{
    run_udp(1);
}
END_TEST

START_TEST(udp_two_cores)
{
    run_udp(2);
}
END_TEST

/* Slot allocation stays near the slots in use (their ring pages stay mapped and cached):
 * a process opening and closing sockets with a few open cycles through a small window, not
 * through all slots; any free slot is still found when the window has none, whatever the
 * (untrusted) count of live slots says. */
START_TEST(sock_alloc_reuses_slots)
{
    enum { N = 4096, LIVE = 10 };
    struct shm_geometry g = {1, N, NREPLIES, RING, 0};
    uint64_t size = shm_region_size(&g);
    void *base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    ck_assert_ptr_ne(base, MAP_FAILED);
    shm_region_init(base, &g);
    struct shm_hdr *h = base;
    uint32_t open[LIVE], hi = 0;
    for (int k = 0; k < LIVE; k++)
        open[k] = shm_sock_alloc(base);
    for (int k = 0; k < 20000; k++) {
        shm_sock_free(base, open[k % LIVE]);
        open[k % LIVE] = shm_sock_alloc(base);
        ck_assert_uint_ne(open[k % LIVE], SHM_NONE);
        if (open[k % LIVE] > hi)
            hi = open[k % LIVE];
    }
    ck_assert_uint_eq(atomic_load(&h->sock_live), LIVE);
    ck_assert_uint_lt(hi, 2 * LIVE + 64 + LIVE);
    /* Every slot can still be had, and then none. */
    for (int k = 0; k < LIVE; k++)
        shm_sock_free(base, open[k]);
    ck_assert_uint_eq(atomic_load(&h->sock_live), 0);
    static uint8_t seen[N];
    for (uint32_t k = 0; k < N; k++) {
        if (k == N / 2)
            atomic_store(&h->sock_live, 0); /* a scribbled count: a wrong window */
        uint32_t i = shm_sock_alloc(base);
        ck_assert_uint_lt(i, N);
        ck_assert(!seen[i]);
        seen[i] = 1;
    }
    ck_assert_uint_eq(shm_sock_alloc(base), SHM_NONE);
    /* A count scribbled high: the search still starts somewhere and finds the free one. */
    atomic_store(&h->sock_live, UINT32_MAX);
    shm_sock_free(base, 1234);
    ck_assert_uint_eq(shm_sock_alloc(base), 1234);
    munmap(base, size);
}
END_TEST

/* Slots the application allocates and the stack frees (every active open): the count of
 * live slots that sizes next fit's window is the one in the shared header, which ustackd
 * does not read through its private header copy. Before, the stack's frees went to its copy,
 * the application's count only grew, and after nsocks / 2 sockets next fit walked every slot
 * (a cold ring page for each new connection in both processes). */
START_TEST(app_slots_freed_by_stack_reused)
{
    static struct world w;
    memset(&w, 0, sizeof(w));
    world_start(&w, 1);
    uint32_t hi = 0;
    for (int k = 0; k < 3 * NSOCKS; k++) {
        struct tsock t;
        ts_socket(&w.ra, 0, &t);
        if (t.i > hi)
            hi = t.i;
        ts_close(&t);
        ts_wait_freed(&t, 5);
    }
    ck_assert_uint_eq(atomic_load(&shm_hdr(w.ra.base)->sock_live), 0);
    ck_assert_uint_lt(hi, 64 + 2);
    world_stop(&w);
    world_destroy(&w);
}
END_TEST

/* A socket on core 0 whose SOCKET the stack refused: its "eventfd" is the read end of the
 * pipe p (not an eventfd), so it has SHM_F_NOSOCK. ts_close closes p[0]. */
static void ts_socket_failed(struct region *r, struct tsock *t, int p[2])
{
    *t = (struct tsock){.r = r, .core = 0};
    t->i = shm_sock_alloc(r->base);
    ck_assert_uint_ne(t->i, SHM_NONE);
    struct shm_sock *s = ts_sock(t);
    s->core = 0;
    t->gen = atomic_load(&s->gen);
    ck_assert_int_eq(pipe2(p, O_CLOEXEC | O_NONBLOCK), 0);
    t->efd = p[0];
    ts_socket_push(t, p[0], 0);
    ck_assert(atomic_load(&s->flags) & SHM_F_NOSOCK);
}

/* SOCKET has no reply (the library's socket() returns at once). One the stack cannot serve
 * (an eventfd number that is a pipe) makes the slot's every later command fail with the
 * reason, and its CLOSE frees it; one the last close cancelled before the stack came to it
 * makes nothing, and its CLOSE frees it too. */
START_TEST(socket_async_fail_and_cancel)
{
    static struct world w;
    memset(&w, 0, sizeof(w));
    world_start(&w, 1);
    struct region *r = &w.ra;
    uint64_t made0 = counters(r).shm_sockets, fail0 = counters(r).shm_socket_fail;
    uint64_t canc0 = counters(r).shm_attach_cancelled;

    struct tsock t;
    int p[2];
    ts_socket_failed(r, &t, p);
    struct shm_sock *s = ts_sock(&t);
    ck_assert_uint_eq(atomic_load(&s->state), SHM_SOCK_RESERVED);
    ck_assert_int_eq(ts_call(&t, SHM_OP_BIND, 0, 0, 0, 5555, NULL), -EINVAL);
    ck_assert_int_eq(ts_call(&t, SHM_OP_CONNECT, 0, 0, IP_B, ECHO_PORT, NULL), -EINVAL);
    ck_assert_uint_eq(counters(r).shm_socket_fail, fail0 + 1);
    ck_assert_uint_eq(counters(r).shm_sockets, made0);
    ts_close(&t);
    ts_wait_freed(&t, 5);
    close(p[1]);

    /* Cancelled: the app's last close took the number back first. */
    t.i = shm_sock_alloc(r->base);
    ck_assert_uint_ne(t.i, SHM_NONE);
    s = ts_sock(&t);
    s->core = 0;
    t.gen = atomic_load(&s->gen);
    t.efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    ck_assert_int_ge(t.efd, 0);
    atomic_store(&s->state, SHM_SOCK_CLOSING);
    atomic_store(&s->attach_pend, SHM_ATT_CANCEL);
    struct shm_cmd c = ts_cmd(&t, SHM_OP_SOCKET);
    c.a0 = t.efd;
    push(r, 0, &c);
    c = ts_cmd(&t, SHM_OP_CLOSE);
    push(r, 0, &c);
    close(t.efd);
    ts_wait_freed(&t, 5);
    ck_assert_uint_eq(atomic_load(&s->attach_pend), 0);
    ck_assert_uint_eq(counters(r).shm_attach_cancelled, canc0 + 1);
    ck_assert_uint_eq(counters(r).shm_sockets, made0);

    /* And a socket made after both works. */
    struct tsock u;
    ts_socket(r, 0, &u);
    ck_assert_uint_eq(counters(r).shm_sockets, made0 + 1);
    ts_close(&u);
    ts_wait_freed(&u, 5);
    world_stop(&w);
    world_destroy(&w);
}
END_TEST

/* A fresh slot on core 0 whose SOCKET names eventfd efd of process pid. */
static void ts_socket_of(struct region *r, struct tsock *t, int32_t pid, int32_t efd)
{
    *t = (struct tsock){.r = r, .core = 0, .efd = -1};
    t->i = shm_sock_alloc(r->base);
    ck_assert_uint_ne(t->i, SHM_NONE);
    ts_sock(t)->core = 0;
    t->gen = atomic_load(&ts_sock(t)->gen);
    ts_socket_push_as(t, pid, efd, 0);
}

/* The process of the leaderless test: its main thread exits, another makes an eventfd, says
 * its number through pipe out and lives until in reads EOF. */
static int lh_out = -1, lh_in = -1;

static void *leaderless_thread(void *arg)
{
    (void)arg;
    int efd = eventfd(0, EFD_NONBLOCK);
    char c;
    if (write(lh_out, &efd, sizeof(efd)) != (ssize_t)sizeof(efd) || read(lh_in, &c, 1) < 0)
        _exit(2);
    _exit(0);
}

static char proc_state(pid_t pid)
{
    char path[64], b[256] = "";
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    size_t n = fread(b, 1, sizeof(b) - 1, f);
    fclose(f);
    b[n] = 0;
    char *p = strrchr(b, ')');
    return p && p[1] && p[2] ? p[2] : 0;
}

/* SOCKET names an eventfd of a process that exited before the stack came to it (a program
 * that exits right after socket(); pidfd_getfd says ESRCH, whether it is a zombie or reaped):
 * SHM_F_NOSOCK, counted as shm_efd_exited, not as shm_efd_fail or shm_socket_fail, which
 * count what a live process would suffer. A process whose main thread exited (pthread_exit)
 * lives on in its other threads, and pidfd_getfd through its pid says ESRCH all the same:
 * its socket works (before 2026-11-28 it had SHM_F_NOSOCK, and connect() failed with
 * ESRCH). */
START_TEST(socket_of_exited_or_leaderless_process)
{
    static struct world w;
    memset(&w, 0, sizeof(w));
    world_start(&w, 1);
    struct region *r = &w.ra;
    struct dio_shm_counters c0 = counters(r);

    /* Exited: a zombie, then reaped. */
    int p[2];
    ck_assert_int_eq(pipe(p), 0);
    pid_t kid = fork();
    ck_assert_int_ge(kid, 0);
    if (kid == 0) {
        int efd = eventfd(0, EFD_NONBLOCK);
        _exit(write(p[1], &efd, sizeof(efd)) == (ssize_t)sizeof(efd) ? 0 : 2);
    }
    int kefd = -1;
    ck_assert_int_eq(read(p[0], &kefd, sizeof(kefd)), sizeof(kefd));
    siginfo_t si;
    ck_assert_int_eq(waitid(P_PID, (id_t)kid, &si, WEXITED | WNOWAIT), 0);
    struct tsock t;
    for (int reaped = 0; reaped < 2; reaped++) {
        if (reaped)
            ck_assert_int_eq(waitpid(kid, NULL, 0), kid);
        ts_socket_of(r, &t, kid, kefd);
        ck_assert(atomic_load(&ts_sock(&t)->flags) & SHM_F_NOSOCK);
        ck_assert_int_eq(atomic_load(&ts_sock(&t)->so_error), ESRCH);
        ts_close(&t);
        ts_wait_freed(&t, 5);
    }
    close(p[0]);
    close(p[1]);
    struct dio_shm_counters c1 = counters(r);
    ck_assert_uint_eq(c1.shm_efd_exited, c0.shm_efd_exited + 2);
    ck_assert_uint_eq(c1.shm_efd_fail, c0.shm_efd_fail);
    ck_assert_uint_eq(c1.shm_socket_fail, c0.shm_socket_fail);
    ck_assert_uint_eq(c1.shm_sockets, c0.shm_sockets);

    /* Leaderless: the main thread has exited (a zombie leader), another one lives. */
    int out[2], in[2];
    ck_assert_int_eq(pipe(out), 0);
    ck_assert_int_eq(pipe(in), 0);
    kid = fork();
    ck_assert_int_ge(kid, 0);
    if (kid == 0) {
        close(in[1]);
        lh_out = out[1];
        lh_in = in[0];
        pthread_t th;
        if (pthread_create(&th, NULL, leaderless_thread, NULL))
            _exit(2);
        pthread_exit(NULL);
    }
    close(in[0]);
    ck_assert_int_eq(read(out[0], &kefd, sizeof(kefd)), sizeof(kefd));
    int64_t end = now_ns() + 5000000000ll;
    while (proc_state(kid) != 'Z')
        ck_assert_msg(now_ns() < end, "the main thread of %d does not exit", (int)kid);
    ts_socket_of(r, &t, kid, kefd);
    /* A pidfd of one thread (PIDFD_THREAD) needs Linux 6.9; before it the kernel says EINVAL,
     * and such a socket stays refused as before (ESRCH, counted as an exit). */
    int self = (int)syscall(SYS_pidfd_open, getpid(), PIDFD_THREAD);
    bool thread_pidfd = self >= 0;
    if (self >= 0)
        close(self);
    if (thread_pidfd) {
        ck_assert_msg(!(atomic_load(&ts_sock(&t)->flags) & SHM_F_NOSOCK), "SOCKET failed: %s",
                      strerror(atomic_load(&ts_sock(&t)->so_error)));
        ck_assert_uint_eq(atomic_load(&ts_sock(&t)->state), SHM_SOCK_LIVE);
        ck_assert_uint_eq(counters(r).shm_sockets, c1.shm_sockets + 1);
        ck_assert_uint_eq(counters(r).shm_efd_exited, c1.shm_efd_exited);
    } else {
        ck_assert(atomic_load(&ts_sock(&t)->flags) & SHM_F_NOSOCK);
        ck_assert_int_eq(atomic_load(&ts_sock(&t)->so_error), ESRCH);
        ck_assert_uint_eq(counters(r).shm_efd_exited, c1.shm_efd_exited + 1);
    }
    ts_close(&t);
    ts_wait_freed(&t, 5);
    close(in[1]); /* the live thread reads EOF and exits */
    int st = -1;
    ck_assert_int_eq(waitpid(kid, &st, 0), kid);
    ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    close(out[0]);
    close(out[1]);
    world_stop(&w);
    world_destroy(&w);
}
END_TEST

/* connect() queues CONNECT without a reply for a fresh IPv4 socket (SHM_A_CONNECTING): until
 * the stack takes it the socket polls as connecting (no POLLHUP, no POLLOUT); an error the
 * stack would have answered becomes the attempt's (so_error, ERROR and RESET: POLLERR and
 * POLLHUP), also for a socket whose SOCKET failed. */
START_TEST(connect_async_errors)
{
    static struct world w;
    memset(&w, 0, sizeof(w));
    world_start(&w, 1);
    struct region *r = &w.ra;
    uint64_t fail0 = counters(r).shm_connect_fail;
    struct tsock t;
    ts_socket(r, 0, &t);
    struct shm_sock *s = ts_sock(&t);
    ck_assert_uint_eq(shm_sock_poll(r->base, t.i) & SHM_POLLHUP, SHM_POLLHUP); /* fresh */
    atomic_fetch_or(&s->app_flags, SHM_A_CONNECTING);
    ck_assert_uint_eq(shm_sock_poll(r->base, t.i), 0); /* connecting */
    uint32_t seq0 = atomic_load(&s->seq);
    struct shm_cmd c = ts_cmd(&t, SHM_OP_CONNECT);
    c.addr.ip = IP_B + 5;
    c.addr.port = 0; /* the engine refuses a connect to port 0 */
    push(r, 0, &c);
    int64_t end = now_ns() + 5000000000ll;
    while (!(atomic_load(&s->flags) & SHM_F_ERROR)) {
        ck_assert_msg(now_ns() < end, "no error published");
        shm_futex_wait(&s->seq, seq0, 50000000);
        seq0 = atomic_load(&s->seq);
    }
    ck_assert_int_eq(atomic_load(&s->so_error), ECONNREFUSED);
    ck_assert(atomic_load(&s->flags) & SHM_F_RESET);
    ck_assert(!(atomic_load(&s->flags) & SHM_F_CONNECTING));
    uint32_t m = shm_sock_poll(r->base, t.i);
    ck_assert_uint_eq(m & (SHM_POLLERR | SHM_POLLHUP), SHM_POLLERR | SHM_POLLHUP);
    ck_assert_uint_eq(counters(r).shm_connect_fail, fail0 + 1);
    struct shm_reply rep;
    ck_assert_int_eq(ts_call(&t, SHM_OP_GETOPT, STK_SO_ERROR, 0, 0, 0, &rep), 0);
    ck_assert_int_eq(rep.val, ECONNREFUSED);
    ts_close(&t);
    ts_wait_freed(&t, 5);

    /* A socket whose SOCKET failed: its queued connect fails the same way. */
    struct tsock u;
    int p[2];
    ts_socket_failed(r, &u, p);
    s = ts_sock(&u);
    atomic_fetch_or(&s->app_flags, SHM_A_CONNECTING);
    c = ts_cmd(&u, SHM_OP_CONNECT);
    c.addr.ip = IP_B + 5;
    c.addr.port = 80;
    push(r, 0, &c);
    end = now_ns() + 5000000000ll;
    while (!(atomic_load(&s->flags) & SHM_F_ERROR)) {
        ck_assert_msg(now_ns() < end, "no error published for the failed socket");
        usleep(1000);
    }
    ck_assert_uint_eq(shm_sock_poll(r->base, u.i) & (SHM_POLLERR | SHM_POLLHUP),
                      SHM_POLLERR | SHM_POLLHUP);
    ck_assert_int_eq(ts_call(&u, SHM_OP_GETOPT, STK_SO_ERROR, 0, 0, 0, &rep), 0);
    ck_assert_int_eq(rep.val, EINVAL);
    ts_close(&u);
    ts_wait_freed(&u, 5);
    close(p[1]);
    world_stop(&w);
    world_destroy(&w);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("shmsrv");
    TCase *tc = tcase_create("ring");
    tcase_set_timeout(tc, 180);
    tcase_add_test(tc, echo_one_core);
    tcase_add_test(tc, echo_two_cores);
    tcase_add_test(tc, passive_one_core);
    tcase_add_test(tc, passive_two_cores);
    tcase_add_test(tc, eventfd_armed_only);
    tcase_add_test(tc, eventfd_edges);
    tcase_add_test(tc, invalid_commands);
    tcase_add_test(tc, slot_freed_behind_back);
    tcase_add_test(tc, hostile_fuzz);
    tcase_add_test(tc, dead_holder_reclaimed);
    tcase_add_test(tc, dead_holder_wakes_sharers);
    tcase_add_test(tc, cmdq_scribble);
    tcase_add_test(tc, regions_added_and_removed);
    tcase_add_test(tc, udp_one_core);
    tcase_add_test(tc, udp_two_cores);
    tcase_add_test(tc, sock_alloc_reuses_slots);
    tcase_add_test(tc, app_slots_freed_by_stack_reused);
    tcase_add_test(tc, socket_async_fail_and_cancel);
    tcase_add_test(tc, socket_of_exited_or_leaderless_process);
    tcase_add_test(tc, connect_async_errors);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}

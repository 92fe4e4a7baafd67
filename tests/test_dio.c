/*
 * test_dio.c - the DPDK runtime end to end: two stacks in one process, joined back to back
 * by ring ports (dio_ring_pair), one serving the built-in echo service and the other running
 * a client on its stack cores. Byte-exact bulk transfer and many short connections, with 1
 * and 2 cores per stack, one or two queues (ring ports have no RSS, so with two cores the
 * software steering and, with one queue, TX forwarding carry the traffic).
 *
 * Each test runs in its own forked process (Check's default), which starts its own EAL with
 * --no-huge and a unique file prefix.
 */
#include <check.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dio.h"
#include "dio_int.h"
#include "dio_test.h"
#include "util.h"

#define IP_A      ((198u << 24) | (18u << 16) | (1u << 8) | 1u)
#define IP_B      ((198u << 24) | (18u << 16) | (1u << 8) | 2u)
#define ECHO_PORT 7
static const uint8_t IP6_A[16] = {0x20, 0x01, 0x00, 0x02, [15] = 0x0a};
static const uint8_t IP6_B[16] = {0x20, 0x01, 0x00, 0x02, [15] = 0x0b};

/* ---- A client app run on the stack cores of stack A ------------------------------------ */

struct tconn {
    int sd;
    uint32_t seed;
    uint64_t sent, rcvd;
    int state; /* 0 unused, 1 open, 2 finished */
};

struct tclient {
    bool v6; /* connect to B's IPv6 address (IP6_B) */
    unsigned conns_per_core, max_active;
    uint64_t bytes;
    atomic_uint done, failed, mismatched;
};

struct tcore {
    struct tclient *cl;
    struct tconn *c;
    unsigned next, active;
    uint8_t buf[16384];
};

static inline uint8_t pat(uint32_t seed, uint64_t i)
{
    uint64_t x = (i + 1) * 0x9e3779b97f4a7c15ull ^ seed;
    return (uint8_t)(x >> 29);
}

static int cl_init(void *ctx, struct dio_core *c, stk_time_t now)
{
    (void)now;
    struct tclient *cl = ctx;
    struct tcore *t = calloc(1, sizeof(*t));
    if (!t)
        return -1;
    t->cl = cl;
    t->c = calloc(cl->conns_per_core, sizeof(*t->c));
    if (!t->c)
        return -1;
    for (unsigned i = 0; i < cl->conns_per_core; i++)
        t->c[i].seed = (dio_core_index(c) << 20) ^ (i * 2654435761u);
    dio_core_set_app_data(c, t);
    return 0;
}

static void conn_fail(struct tcore *t, struct stk_engine *e, stk_time_t now, struct tconn *k)
{
    atomic_fetch_add(&t->cl->failed, 1);
    stk_abort(e, now, k->sd);
    k->state = 2;
    t->active--;
}

static unsigned cl_poll(void *ctx, struct dio_core *c, stk_time_t now)
{
    (void)ctx;
    struct tcore *t = dio_core_app_data(c);
    struct tclient *cl = t->cl;
    struct stk_engine *e = dio_core_engine(c);
    unsigned work = 0;
    while (t->active < cl->max_active && t->next < cl->conns_per_core) {
        struct tconn *k = &t->c[t->next++];
        k->sd = stk_socket(e, k);
        struct stk_sockaddr to = {.ip = IP_B, .port = ECHO_PORT};
        if (cl->v6) {
            to = (struct stk_sockaddr){.family = STK_AF_INET6, .port = ECHO_PORT};
            memcpy(to.ip6, IP6_B, 16);
        }
        if (k->sd < 0 || stk_connect(e, now, k->sd, &to) != -EINPROGRESS) {
            atomic_fetch_add(&cl->failed, 1);
            k->state = 2;
            continue;
        }
        stk_setopt(e, now, k->sd, STK_TCP_NODELAY, 1);
        k->state = 1;
        t->active++;
        work++;
    }
    for (unsigned i = 0; i < t->next; i++) {
        struct tconn *k = &t->c[i];
        if (k->state != 1)
            continue;
        uint32_t ev = stk_events(e, k->sd);
        if (ev & (STK_EV_ERR | STK_EV_HUP)) {
            conn_fail(t, e, now, k);
            continue;
        }
        if (!(ev & (STK_EV_OUT | STK_EV_IN)))
            continue;
        while (k->sent < cl->bytes) {
            uint64_t n = cl->bytes - k->sent;
            if (n > sizeof(t->buf))
                n = sizeof(t->buf);
            for (uint64_t j = 0; j < n; j++)
                t->buf[j] = pat(k->seed, k->sent + j);
            ssize_t w = stk_send(e, now, k->sd, t->buf, n, 0);
            if (w <= 0)
                break;
            k->sent += (uint64_t)w;
            work++;
        }
        for (;;) {
            ssize_t r = stk_recv(e, now, k->sd, t->buf, sizeof(t->buf), 0);
            if (r <= 0)
                break;
            for (ssize_t j = 0; j < r; j++) {
                if (t->buf[j] != pat(k->seed, k->rcvd + (uint64_t)j)) {
                    atomic_fetch_add(&cl->mismatched, 1);
                    break;
                }
            }
            k->rcvd += (uint64_t)r;
            work++;
        }
        if (k->rcvd > cl->bytes) {
            conn_fail(t, e, now, k);
        } else if (k->rcvd == cl->bytes) {
            stk_close(e, now, k->sd);
            k->state = 2;
            t->active--;
            atomic_fetch_add(&cl->done, 1);
        }
    }
    return work;
}

static void cl_fini(void *ctx, struct dio_core *c, stk_time_t now)
{
    (void)ctx;
    struct tcore *t = dio_core_app_data(c);
    struct stk_engine *e = dio_core_engine(c);
    for (unsigned i = 0; i < t->next; i++)
        if (t->c[i].state == 1)
            stk_abort(e, now, t->c[i].sd);
    free(t->c);
    free(t);
}

/* ---- Set-up -------------------------------------------------------------------------- */

struct pair {
    struct shim_conf ca, cb;
    struct dio_stack *a, *b;
    struct dio_services svc;
    struct tclient cl;
    void (*conf_hook)(struct shim_conf *a, struct shim_conf *b); /* before the stacks start */
};

static void pair_start(struct pair *p, unsigned ncores, unsigned nq)
{
    char err[256];
    uint16_t pa, pb;
    dio_test_eal_start("test-dio");
    ck_assert_msg(dio_ring_pair("tp", nq, &pa, &pb, err, sizeof(err)) == 0, "%s", err);
    p->ca = dio_test_conf(IP_A);
    p->cb = dio_test_conf(IP_B);
    memcpy(p->ca.ip6, IP6_A, 16);
    memcpy(p->cb.ip6, IP6_B, 16);
    p->ca.ip6_prefix = p->cb.ip6_prefix = 64;
    p->svc.echo_port = ECHO_PORT;
    if (p->conf_hook)
        p->conf_hook(&p->ca, &p->cb);

    struct dio_stack_conf sb = {.conf = &p->cb, .port_id = pb, .ncores = ncores};
    sb.lcores[0] = 3;
    sb.lcores[1] = 4;
    sb.app = dio_services_app(&p->svc);
    ck_assert_msg(dio_stack_create(&sb, &p->b, err, sizeof(err)) == 0, "%s", err);
    ck_assert_msg(dio_stack_start(p->b, err, sizeof(err)) == 0, "%s", err);

    struct dio_stack_conf sa = {.conf = &p->ca, .port_id = pa, .ncores = ncores};
    sa.lcores[0] = 1;
    sa.lcores[1] = 2;
    sa.app = (struct dio_app){.ctx = &p->cl, .init = cl_init, .poll = cl_poll, .fini = cl_fini};
    ck_assert_msg(dio_stack_create(&sa, &p->a, err, sizeof(err)) == 0, "%s", err);
    ck_assert_msg(dio_stack_start(p->a, err, sizeof(err)) == 0, "%s", err);
}

/* Waits (bounded) for the client to finish every connection. */
static void wait_done(struct pair *p, unsigned ncores, unsigned seconds)
{
    unsigned total = p->cl.conns_per_core * ncores;
    for (unsigned i = 0; i < seconds * 100; i++) {
        if (atomic_load(&p->cl.done) + atomic_load(&p->cl.failed) >= total)
            break;
        usleep(10000);
    }
    ck_assert_uint_eq(atomic_load(&p->cl.mismatched), 0);
    ck_assert_uint_eq(atomic_load(&p->cl.failed), 0);
    ck_assert_uint_eq(atomic_load(&p->cl.done), total);
}

static void pair_stop(struct pair *p)
{
    dio_stack_stop(p->a, 500);
    dio_stack_stop(p->b, 500);
}

static void pair_destroy(struct pair *p)
{
    dio_stack_destroy(p->a);
    dio_stack_destroy(p->b);
    dio_eal_cleanup();
}

static void run_bulk_af(unsigned ncores, unsigned nq, unsigned conns, uint64_t bytes, bool v6)
{
    static struct pair p;
    memset(&p, 0, sizeof(p));
    p.cl.v6 = v6;
    p.cl.conns_per_core = conns;
    p.cl.max_active = conns;
    p.cl.bytes = bytes;
    pair_start(&p, ncores, nq);
    wait_done(&p, ncores, 90);
    pair_stop(&p);
    /* Every byte went through both engines, and each core carried its own connections. */
    uint64_t in = 0;
    for (unsigned i = 0; i < ncores; i++) {
        struct stk_counters ka, kb;
        struct dio_counters da, db;
        ck_assert_int_eq(dio_stack_counters(p.a, i, &ka, &da), 0);
        ck_assert_int_eq(dio_stack_counters(p.b, i, &kb, &db), 0);
        ck_assert_uint_eq(ka.tcp_active_opens, conns);
        ck_assert_uint_gt(kb.tcp_passive_opens, 0);
        ck_assert_uint_eq(da.rx_drop_oversize + db.rx_drop_oversize, 0);
        in += kb.tcp_bytes_in;
        if (ncores > 1 && nq == 1 && i > 0)
            ck_assert_uint_gt(da.tx_forwarded, 0); /* core 1 has no TX queue */
        if (ncores > 1 && i == 0)
            ck_assert_uint_gt(db.rx_steered + da.rx_steered, 0);
    }
    ck_assert_uint_eq(in, bytes * conns * ncores);
    if (v6) {
        /* Every core resolved B itself (neighbour discovery frames reach every core), and
         * the connections went over IPv6 (none of the IPv4 ARP resolutions were needed). */
        for (unsigned i = 0; i < ncores; i++) {
            struct stk_counters ka;
            struct dio_counters da;
            ck_assert_int_eq(dio_stack_counters(p.a, i, &ka, &da), 0);
            ck_assert_uint_gt(ka.nd_na_in, 0);
            ck_assert_uint_eq(ka.ip6_drop_proto, 0);
            ck_assert_uint_eq(ka.tcp_rst_in, 0);
        }
    }
    pair_destroy(&p);
}

static void run_bulk(unsigned ncores, unsigned nq, unsigned conns, uint64_t bytes)
{
    run_bulk_af(ncores, nq, conns, bytes, false);
}

START_TEST(bulk_one_core)
{
    run_bulk(1, 1, 4, 8u << 20);
}
END_TEST

START_TEST(bulk_two_cores_one_queue)
{
    run_bulk(2, 1, 4, 4u << 20);
}
END_TEST

START_TEST(bulk_two_cores_two_queues)
{
    run_bulk(2, 2, 4, 4u << 20);
}
END_TEST

/* TCP over IPv6 across two cores: the connecting core picks a source port whose return
 * traffic hashes to it (port_ok6), frames are steered by their IPv6 4-tuple, and neighbour
 * discovery reaches every core. */
START_TEST(bulk_two_cores_ipv6)
{
    run_bulk_af(2, 1, 4, 2u << 20, true);
}
END_TEST

/* Many short connections from both client cores: each lands on the core that opened it
 * (port_ok chose its source port), and the server spreads them over its cores by hash. */
START_TEST(many_connections)
{
    static struct pair p;
    memset(&p, 0, sizeof(p));
    p.cl.conns_per_core = 1000;
    p.cl.max_active = 64;
    p.cl.bytes = 300;
    pair_start(&p, 2, 2);
    wait_done(&p, 2, 90);
    pair_stop(&p);
    unsigned passive = 0;
    for (unsigned i = 0; i < 2; i++) {
        struct stk_counters ka, kb;
        ck_assert_int_eq(dio_stack_counters(p.a, i, &ka, NULL), 0);
        ck_assert_int_eq(dio_stack_counters(p.b, i, &kb, NULL), 0);
        ck_assert_uint_eq(ka.tcp_active_opens, 1000);
        ck_assert_uint_eq(ka.tcp_rst_in, 0);
        /* Both server cores took a fair share (the hash spreads source ports). */
        ck_assert_uint_gt(kb.tcp_passive_opens, 500);
        passive += (unsigned)kb.tcp_passive_opens;
    }
    ck_assert_uint_eq(passive, 2000);
    pair_destroy(&p);
}
END_TEST

/* The receive backlog (core.c): a core that got behind takes everything its device holds
 * into its backlog at the first full burst and works through it oldest first. B's core is
 * held for 4 ms every 10 ms of a bulk echo (frames pile up in its ring meanwhile): the
 * backlog carries frames, and the data arrives whole and in order (a frame taken out of
 * order would show as an out-of-order segment: the ring pair itself never reorders). */
static void small_windows(struct shim_conf *a, struct shim_conf *b)
{
    /* What A may have in flight (two windows of 256 KiB: ~360 frames) fits in B's ring
     * (2048): a hold makes frames wait, never overflow, so none may arrive out of order. */
    a->rcvbuf_max = b->rcvbuf_max = 256 * 1024;
}

static void hold_core(struct dio_core *c, void *arg)
{
    (void)c;
    usleep(*(unsigned *)arg);
}

START_TEST(rx_backlog_after_stall)
{
    static struct pair p;
    memset(&p, 0, sizeof(p));
    p.cl.conns_per_core = 2;
    p.cl.max_active = 2;
    p.cl.bytes = 32u << 20;
    p.conf_hook = small_windows;
    pair_start(&p, 1, 1);
    unsigned hold_us = 4000, holds = 0;
    for (unsigned i = 0; i < 3000; i++) {
        if (atomic_load(&p.cl.done) + atomic_load(&p.cl.failed) >= 2)
            break;
        if (dio_stack_run_on(p.b, 0, hold_core, &hold_us, 1000) == 0)
            holds++;
        usleep(6000);
    }
    wait_done(&p, 1, 60);
    pair_stop(&p);
    struct stk_counters ka, kb;
    struct dio_counters da, db;
    ck_assert_int_eq(dio_stack_counters(p.a, 0, &ka, &da), 0);
    ck_assert_int_eq(dio_stack_counters(p.b, 0, &kb, &db), 0);
    ck_assert_uint_gt(holds, 10);
    ck_assert_msg(db.rx_backlogged > 0, "no frame went through B's backlog (%u holds)", holds);
    /* Nothing was dropped for want of room (the backlog's mbuf reserve, or the ring). */
    ck_assert_uint_eq(db.rx_backlog_full, 0);
    ck_assert_uint_eq(ka.tcp_retrans, 0);
    ck_assert_uint_eq(kb.tcp_bytes_in, 2 * (32u << 20));
    ck_assert_uint_eq(kb.tcp_ooo_segs, 0);
    ck_assert_uint_eq(ka.tcp_ooo_segs, 0);
    pair_destroy(&p);
}
END_TEST

/* dio_stack_run_on runs a function on the core's own thread (where its engine may be
 * read: here, the echo listener each server core has), and refuses once the core stopped. */
struct run_probe {
    unsigned idx;
    pid_t tid;
    int listeners;
};

static int count_listeners(void *ctx, const struct stk_sock_entry *ent)
{
    struct run_probe *r = ctx;
    if (ent->info.state == STK_TCP_LISTEN && ent->local.port == ECHO_PORT)
        r->listeners++;
    return 0;
}

static void probe(struct dio_core *c, void *arg)
{
    struct run_probe *r = arg;
    r->idx = dio_core_index(c);
    r->tid = gettid();
    stk_sock_walk(dio_core_engine(c), count_listeners, r);
}

START_TEST(run_on_core)
{
    static struct pair p;
    memset(&p, 0, sizeof(p));
    pair_start(&p, 2, 2);
    pid_t seen[2];
    for (unsigned i = 0; i < 2; i++) {
        struct run_probe r = {.idx = 99};
        ck_assert_int_eq(dio_stack_run_on(p.b, i, probe, &r, 1000), 0);
        ck_assert_uint_eq(r.idx, i);
        ck_assert_int_ne(r.tid, gettid());
        ck_assert_int_eq(r.listeners, 1);
        seen[i] = r.tid;
    }
    ck_assert_int_ne(seen[0], seen[1]);
    struct run_probe r = {0};
    ck_assert_int_eq(dio_stack_run_on(p.b, 2, probe, &r, 1000), -EINVAL);
    pair_stop(&p);
    ck_assert_int_eq(dio_stack_run_on(p.b, 0, probe, &r, 1000), -ESRCH);
    ck_assert_int_eq(r.listeners, 0);
    pair_destroy(&p);
}
END_TEST

/* USTACK_IDLE_YIELD: a core polling without work gives its CPU away (sched_yield) when
 * the option is on, and never when it is off. Both stacks spin without ever sleeping. */
static void spin_forever(struct shim_conf *a, struct shim_conf *b)
{
    a->idle_spin_us = b->idle_spin_us = 1000000;
    a->idle_yield = 0;
    b->idle_yield = 1;
}

START_TEST(idle_yield)
{
    static struct pair p;
    memset(&p, 0, sizeof(p));
    p.conf_hook = spin_forever;
    p.cl.conns_per_core = 2;
    p.cl.max_active = 2;
    p.cl.bytes = 256 * 1024;
    pair_start(&p, 1, 1);
    wait_done(&p, 1, 60);
    usleep(100000); /* idle, spinning */
    struct stk_counters ka, kb;
    struct dio_counters da, db;
    ck_assert_int_eq(dio_stack_counters(p.a, 0, &ka, &da), 0);
    ck_assert_int_eq(dio_stack_counters(p.b, 0, &kb, &db), 0);
    ck_assert_uint_eq(da.yields, 0);
    ck_assert_uint_gt(db.yields, 100);
    ck_assert_uint_eq(da.sleeps + db.sleeps, 0); /* the spin never ran out */
    ck_assert_uint_eq(kb.tcp_bytes_in, 2 * 256 * 1024);
    pair_stop(&p);
    pair_destroy(&p);
}
END_TEST

/* The vdev defaults ustackd appends: AF_PACKET's ring size, AF_XDP without preferred busy
 * polling; each only where USTACK_DEV does not set the key, nothing for other devices. */
START_TEST(vdev_defaults)
{
    ck_assert_str_eq(dio__vdev_defaults("net_af_xdp0,iface=veth0"), ",busy_budget=0");
    ck_assert_str_eq(dio__vdev_defaults("net_af_xdp"), ",busy_budget=0");
    ck_assert_str_eq(dio__vdev_defaults("net_af_xdp0,iface=veth0,busy_budget=64"), "");
    ck_assert_str_eq(dio__vdev_defaults("net_af_packet0,iface=veth0"), ",framecnt=4096");
    ck_assert_str_eq(dio__vdev_defaults("net_af_packet0,iface=veth0,framecnt=512"), "");
    ck_assert_str_eq(dio__vdev_defaults("net_tap0"), "");
    ck_assert_str_eq(dio__vdev_defaults("net_memif0,role=server"), "");
}
END_TEST

/* The AF_XDP driver (DPDK 22.11) takes populated_size x object size bytes from the pool's
 * first page as its UMEM. Without hugepages, rte_pktmbuf_pool_create puts one 2.4 KB mbuf
 * per 4 KiB page, so most of the pool lies beyond that (frames sent from those mbufs were
 * refused by the kernel and lost); the packed pool ustackd uses for AF_XDP lies inside. */
START_TEST(af_xdp_pool_inside_umem)
{
    dio_test_eal_start("umem");
    unsigned room = 2048 + RTE_PKTMBUF_HEADROOM, n = 8192;
    struct rte_mempool *plain = rte_pktmbuf_pool_create("plain", n, 256, 0, (uint16_t)room, 0);
    ck_assert_ptr_nonnull(plain);
    size_t beyond = dio__umem_beyond(plain);
    ck_assert_msg(beyond > n / 4, "default pool: %zu of %u mbufs outside the UMEM", beyond, n);
    struct rte_mempool *packed = dio__packed_pool_create("packed", n, room, 0);
    ck_assert_ptr_nonnull(packed);
    ck_assert_uint_eq(packed->populated_size, n);
    ck_assert_uint_eq(dio__umem_beyond(packed), 0);
    /* They are ordinary mbufs. */
    struct rte_mbuf *m = rte_pktmbuf_alloc(packed);
    ck_assert_ptr_nonnull(m);
    ck_assert_uint_eq(rte_pktmbuf_data_room_size(packed), room);
    ck_assert_uint_eq(rte_pktmbuf_tailroom(m), 2048);
    rte_pktmbuf_free(m);
    rte_mempool_free(plain);
    rte_mempool_free(packed);
    /* EAL's runtime directory (7 MB of fbarrays in /var/run/dpdk, a tmpfs) goes too. */
    dio_eal_cleanup();
}
END_TEST

/* Steering of ICMP errors (dio__classify): an error quoting a TCP segment we sent goes to
 * the core that receives that connection's segments (the quote's tuple reversed), for IPv4
 * and IPv6, so that path MTU discovery and hard errors reach the engine holding it; other
 * ICMP stays on core 0. Checked over many tuples on a two-core table (no EAL needed). */
START_TEST(icmp_errors_steered_to_their_connection)
{
    struct dio_stack *s = calloc(1, sizeof(*s));
    ck_assert_ptr_nonnull(s);
    s->reta_size = 128;
    for (unsigned i = 0; i < s->reta_size; i++)
        s->reta_core[i] = (uint16_t)(i % 2);
    for (unsigned i = 0; i < DIO_KEY_LEN; i += 2) {
        s->key[i] = 0x6d;
        s->key[i + 1] = 0x5a;
    }
    unsigned seen[2] = {0, 0};
    uint32_t us = IP_A, peer = IP_B, router = IP_B + 100;
    for (unsigned k = 0; k < 400; k++) {
        uint16_t lport = (uint16_t)(20000 + 37 * k), pport = (uint16_t)(80 + k % 7);
        /* The peer's segment to us. */
        uint8_t tcp[14 + 20 + 20] = {0};
        stk__put16(tcp + 12, 0x0800);
        tcp[14] = 0x45;
        tcp[14 + 9] = 6;
        stk__put32(tcp + 14 + 12, peer);
        stk__put32(tcp + 14 + 16, us);
        stk__put16(tcp + 34, pport);
        stk__put16(tcp + 36, lport);
        unsigned want = dio__classify(s, NULL, tcp, sizeof(tcp));
        ck_assert_uint_lt(want, 2);
        seen[want]++;
        /* A router's "fragmentation needed" quoting our segment to the peer. */
        uint8_t icmp[14 + 20 + 8 + 20 + 8] = {0};
        stk__put16(icmp + 12, 0x0800);
        icmp[14] = 0x45;
        icmp[14 + 9] = 1;
        stk__put32(icmp + 14 + 12, router);
        stk__put32(icmp + 14 + 16, us);
        icmp[34] = 3;
        icmp[35] = 4;
        uint8_t *q = icmp + 42;
        q[0] = 0x45;
        q[9] = 6;
        stk__put32(q + 12, us);
        stk__put32(q + 16, peer);
        stk__put16(q + 20, lport);
        stk__put16(q + 22, pport);
        ck_assert_uint_eq(dio__classify(s, NULL, icmp, sizeof(icmp)), want);
        /* The same quoting UDP, or an echo request: core 0. */
        q[9] = 17;
        ck_assert_uint_eq(dio__classify(s, NULL, icmp, sizeof(icmp)), 0);
        q[9] = 6;
        icmp[34] = 8;
        ck_assert_uint_eq(dio__classify(s, NULL, icmp, sizeof(icmp)), 0);

        /* IPv6: the peer's segment, and a Packet Too Big quoting ours. */
        uint8_t tcp6[14 + 40 + 20] = {0};
        stk__put16(tcp6 + 12, 0x86dd);
        tcp6[14] = 0x60;
        tcp6[14 + 6] = 6;
        memcpy(tcp6 + 14 + 8, IP6_B, 16);
        memcpy(tcp6 + 14 + 24, IP6_A, 16);
        stk__put16(tcp6 + 54, pport);
        stk__put16(tcp6 + 56, lport);
        unsigned want6 = dio__classify(s, NULL, tcp6, sizeof(tcp6));
        ck_assert_uint_lt(want6, 2);
        seen[want6]++;
        uint8_t ptb[14 + 40 + 8 + 40 + 8] = {0};
        stk__put16(ptb + 12, 0x86dd);
        ptb[14] = 0x60;
        ptb[14 + 6] = 58;
        memcpy(ptb + 14 + 24, IP6_A, 16);
        ptb[54] = 2;
        uint8_t *q6 = ptb + 62;
        q6[0] = 0x60;
        q6[6] = 6;
        memcpy(q6 + 8, IP6_A, 16);
        memcpy(q6 + 24, IP6_B, 16);
        stk__put16(q6 + 40, lport);
        stk__put16(q6 + 42, pport);
        ck_assert_uint_eq(dio__classify(s, NULL, ptb, sizeof(ptb)), want6);
        ptb[54] = 128; /* an echo request */
        ck_assert_uint_eq(dio__classify(s, NULL, ptb, sizeof(ptb)), 0);
    }
    /* The check means something only if both cores own some of the tuples. */
    ck_assert_uint_gt(seen[0], 100);
    ck_assert_uint_gt(seen[1], 100);
    free(s);
}
END_TEST

/* The host's ISN key: made once, then read back unchanged by every later caller; a file
 * that is not private, not 16 bytes or not a regular file is refused, never used. */
START_TEST(host_isn_key)
{
    char dir[] = "/tmp/ustack-isnkey.XXXXXX", path[256];
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/isn.key", dir);
    uint8_t k1[16], k2[16], zero[16] = {0};
    memset(k1, 0, sizeof(k1));
    ck_assert_int_eq(dio_host_isn_key(path, k1), 0);
    ck_assert_int_ne(memcmp(k1, zero, 16), 0);
    struct stat st;
    ck_assert_int_eq(stat(path, &st), 0);
    ck_assert_uint_eq(st.st_mode & 0777, 0600);
    ck_assert_int_eq(st.st_size, 16);
    ck_assert_int_eq(dio_host_isn_key(path, k2), 0);
    ck_assert_int_eq(memcmp(k1, k2, 16), 0);
    /* No temporary file is left beside it. */
    char tmp[300];
    snprintf(tmp, sizeof(tmp), "%s.%ld", path, (long)getpid());
    ck_assert_int_eq(access(tmp, F_OK), -1);

    ck_assert_int_eq(chmod(path, 0644), 0);
    ck_assert_int_eq(dio_host_isn_key(path, k2), -EPERM);
    ck_assert_int_eq(chmod(path, 0600), 0);
    ck_assert_int_eq(truncate(path, 8), 0);
    ck_assert_int_eq(dio_host_isn_key(path, k2), -EPERM);
    ck_assert_int_eq(unlink(path), 0);
    ck_assert_int_eq(mkdir(path, 0700), 0);
    ck_assert_int_eq(dio_host_isn_key(path, k2), -EPERM);
    ck_assert_int_eq(rmdir(path), 0);
    ck_assert_int_eq(rmdir(dir), 0);
    /* No directory to make it in: an error, not a key. */
    ck_assert_int_eq(dio_host_isn_key(path, k2), -ENOENT);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("dio");
    TCase *tc = tcase_create("ring");
    tcase_set_timeout(tc, 180);
    tcase_add_test(tc, icmp_errors_steered_to_their_connection);
    tcase_add_test(tc, bulk_one_core);
    tcase_add_test(tc, bulk_two_cores_one_queue);
    tcase_add_test(tc, bulk_two_cores_two_queues);
    tcase_add_test(tc, bulk_two_cores_ipv6);
    tcase_add_test(tc, many_connections);
    tcase_add_test(tc, rx_backlog_after_stall);
    tcase_add_test(tc, run_on_core);
    tcase_add_test(tc, idle_yield);
    tcase_add_test(tc, af_xdp_pool_inside_umem);
    tcase_add_test(tc, vdev_defaults);
    tcase_add_test(tc, host_isn_key);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}

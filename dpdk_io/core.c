/*
 * core.c - the per-core stack loop, software steering, idle sleeping, and the stack's life
 * cycle (create, start, stop, statistics).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <numa.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <rte_cycles.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_launch.h>
#include <rte_lcore.h>
#include <rte_thash.h>

#include "dio_int.h"
#include "log.h"

#define ETH_HLEN      14
#define ETHERTYPE_IP  0x0800
#define ETHERTYPE_ARP 0x0806
#define ETHERTYPE_IP6 0x86dd
#define IP6_HLEN      40
#define SLEEP_MIN_US  20
#define STALL_US      100000      /* a loop round this much later than asked is a stall */
#define APP_FD_TAG    0x80000000u /* epoll data of an app's wake eventfd */

/* ---- Clock ---------------------------------------------------------------------------- */

static uint64_t tsc0, tsc_mult; /* microseconds = (tsc - tsc0) * tsc_mult >> 32 */

static void clock_init(void)
{
    if (tsc_mult)
        return;
    uint64_t hz = rte_get_tsc_hz();
    tsc0 = rte_get_tsc_cycles();
    tsc_mult = (uint64_t)((((unsigned __int128)1000000) << 32) / hz);
}

stk_time_t dio_now(void)
{
    uint64_t d = rte_get_tsc_cycles() - tsc0;
    /* Start at one second so that "time 0" never appears as a real timestamp. */
    return STK_US_PER_S + (uint64_t)(((unsigned __int128)d * tsc_mult) >> 32);
}

/* ---- Ownership ------------------------------------------------------------------------ */

static unsigned owner_of_hash(const struct dio_stack *s, uint32_t h)
{
    unsigned n = s->reta_size;
    return s->reta_core[(n & (n - 1)) == 0 ? (h & (n - 1)) : h % n];
}

/* The core that owns a 4-tuple as seen on receive (source = the peer). The key is
 * symmetric, so the transmit direction hashes the same. */
unsigned dio__owner(const struct dio_stack *s, uint32_t sip, uint32_t dip, uint16_t sport,
                    uint16_t dport)
{
    uint32_t tuple[3] = {sip, dip, ((uint32_t)sport << 16) | dport};
    return owner_of_hash(s, rte_softrss(tuple, 3, s->key));
}

static int port_ok(void *ctx, uint32_t lip, uint16_t lport, uint32_t rip, uint16_t rport)
{
    struct dio_core *c = ctx;
    return dio__owner(c->s, rip, lip, rport, lport) == c->idx;
}

/* The same for an IPv6 4-tuple: Toeplitz over source, destination (16 bytes each, as the
 * words a device reads them) and the ports, with the same symmetric key. */
unsigned dio__owner6(const struct dio_stack *s, const uint8_t sip[16], const uint8_t dip[16],
                     uint16_t sport, uint16_t dport)
{
    uint32_t tuple[9];
    for (int i = 0; i < 4; i++) {
        tuple[i] = ((uint32_t)sip[4 * i] << 24) | ((uint32_t)sip[4 * i + 1] << 16) |
                   ((uint32_t)sip[4 * i + 2] << 8) | sip[4 * i + 3];
        tuple[4 + i] = ((uint32_t)dip[4 * i] << 24) | ((uint32_t)dip[4 * i + 1] << 16) |
                       ((uint32_t)dip[4 * i + 2] << 8) | dip[4 * i + 3];
    }
    tuple[8] = ((uint32_t)sport << 16) | dport;
    return owner_of_hash(s, rte_softrss(tuple, 9, s->key));
}

static int port_ok6(void *ctx, const uint8_t lip[16], uint16_t lport, const uint8_t rip[16],
                    uint16_t rport)
{
    struct dio_core *c = ctx;
    return dio__owner6(c->s, rip, lip, rport, lport) == c->idx;
}

static inline uint16_t rd16(const uint8_t *p)
{
    return (uint16_t)((p[0] << 8) | p[1]);
}

static inline uint32_t rd32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

#define OWNER_ALL ((unsigned)-1)

/* The core that reassembles an IPv4 fragment: all fragments of one datagram must meet on
 * one core, and only the first carries ports, so the hash covers (source, destination, id,
 * protocol). A reassembled TCP/UDP datagram owned by another core is passed on by
 * steer_ip. */
static unsigned frag_owner(const struct dio_stack *s, const uint8_t *ip)
{
    uint32_t tuple[3] = {rd32(ip + 12), rd32(ip + 16), ((uint32_t)rd16(ip + 4) << 16) | ip[9]};
    return owner_of_hash(s, rte_softrss(tuple, 3, s->key));
}

/* An ICMP error (destination unreachable, time exceeded, parameter problem) quoting a TCP
 * segment we sent goes to the core of that connection: the quote's 4-tuple reversed is the
 * connection's as seen on receive (path MTU discovery and hard errors need the engine that
 * holds it). Other ICMP goes to core 0. icmp: the ICMP header, left bytes after it. */
static unsigned icmp_owner(const struct dio_stack *s, const uint8_t *icmp, uint32_t left)
{
    if (left < 8 + 20 + 4 || (icmp[0] != 3 && icmp[0] != 11 && icmp[0] != 12))
        return 0;
    const uint8_t *q = icmp + 8;
    unsigned qhl = (q[0] & 0x0f) * 4u;
    if ((q[0] >> 4) != 4 || q[9] != 6 || qhl < 20 || left < 8 + qhl + 4 || (rd16(q + 6) & 0x1fff))
        return 0;
    return dio__owner(s, rd32(q + 16), rd32(q + 12), rd16(q + qhl + 2), rd16(q + qhl));
}

/* IPv6: TCP right after the fixed header by its 4-tuple (software hash: hardware RSS is
 * configured for IPv4 only), neighbour solicitations and advertisements to every core (as
 * ARP: each engine keeps its own neighbour cache, only core 0 answers solicitations), an
 * ICMPv6 error whose quote is TCP right after the fixed header to that connection's core
 * (as icmp_owner), the rest (echo, other ICMPv6, extension headers, UDP) to core 0. So
 * every fragment of a datagram meets on core 0, which hands a reassembled TCP segment to
 * its owner (steer_ip). */
static unsigned classify6(const struct dio_stack *s, const uint8_t *ip, uint32_t len)
{
    if (len < ETH_HLEN + IP6_HLEN + 4)
        return 0;
    if (ip[6] == 6)
        return dio__owner6(s, ip + 8, ip + 24, rd16(ip + IP6_HLEN), rd16(ip + IP6_HLEN + 2));
    if (ip[6] != 58)
        return 0;
    uint8_t type = ip[IP6_HLEN];
    if (type == 135 || type == 136)
        return OWNER_ALL;
    const uint8_t *q = ip + IP6_HLEN + 8;
    if (type >= 1 && type <= 4 && len >= ETH_HLEN + IP6_HLEN + 8 + IP6_HLEN + 4 && q[6] == 6)
        return dio__owner6(s, q + 24, q + 8, rd16(q + IP6_HLEN + 2), rd16(q + IP6_HLEN));
    return 0;
}

/* Which core handles a frame: TCP by its connection's hash, IPv4 fragments by frag_owner,
 * ARP every core (each engine keeps its own cache; only core 0 answers), ICMP as
 * icmp_owner, IPv6 as classify6, anything else core 0. m may be NULL when the device gave
 * no RSS hash (tests). */
unsigned dio__classify(const struct dio_stack *s, const struct rte_mbuf *m, const uint8_t *p,
                       uint32_t len)
{
    if (len < ETH_HLEN)
        return 0;
    uint16_t type = rd16(p + 12);
    if (type == ETHERTYPE_ARP)
        return OWNER_ALL;
    if (type == ETHERTYPE_IP6)
        return classify6(s, p + ETH_HLEN, len);
    if (type != ETHERTYPE_IP || len < ETH_HLEN + 20)
        return 0;
    const uint8_t *ip = p + ETH_HLEN;
    if (rd16(ip + 6) & 0x3fff) /* MF or an offset: a fragment, whatever the protocol */
        return frag_owner(s, ip);
    unsigned ihl = (ip[0] & 0x0f) * 4u;
    if (ip[9] == 1 && ihl >= 20 && len >= ETH_HLEN + ihl)
        return icmp_owner(s, ip + ihl, len - ETH_HLEN - ihl);
    if (ip[9] != 6 || ihl < 20 || len < ETH_HLEN + ihl + 4)
        return 0;
    if (s->hw_rss && m && (m->ol_flags & RTE_MBUF_F_RX_RSS_HASH))
        return owner_of_hash(s, m->hash.rss);
    return dio__owner(s, rd32(ip + 12), rd32(ip + 16), rd16(ip + ihl), rd16(ip + ihl + 2));
}

void dio__wake(struct dio_core *c)
{
    uint64_t one = 1;
    if (write(c->wake_fd, &one, sizeof(one)) < 0) {
        /* The counter is saturated, so the core is awake anyway. */
    }
}

static void steer(struct dio_core *c, struct dio_core *to, struct rte_mbuf *m);

/* A reassembled datagram travels to its owner in an mbuf holding an external buffer (up to
 * 64 KiB, beyond any pool's data room) that ends with this callback. */
static void reasm_free(void *addr, void *opaque)
{
    (void)addr;
    free(opaque);
}

struct reasm_buf {
    struct rte_mbuf_ext_shared_info sh;
    uint8_t data[];
};

/* stk_config.steer_ip: a TCP/UDP datagram this core reassembled goes to the core its ports
 * hash to, which feeds it to stk_input_ip. Returns 1 when it is not ours (passed on, or
 * dropped and counted), 0 to process it here. */
static int steer_ip(void *ctx, const void *ipv, size_t len)
{
    struct dio_core *c = ctx;
    struct dio_stack *s = c->s;
    const uint8_t *ip = ipv;
    unsigned owner;
    if (len >= 1 && (ip[0] >> 4) == 6) {
        /* A reassembled IPv6 packet (no extension headers left): TCP to the core of its
         * 4-tuple, as classify6() steers unfragmented segments; the rest stays here. */
        if (len < IP6_HLEN + 4 || ip[6] != 6)
            return 0;
        if (len > UINT16_MAX) { /* beyond an mbuf's length: never a TCP segment we sent for */
            c->ctr.rx_drop_steer++;
            return 1;
        }
        owner = dio__owner6(s, ip + 8, ip + 24, rd16(ip + IP6_HLEN), rd16(ip + IP6_HLEN + 2));
    } else {
        unsigned ihl = (ip[0] & 0x0f) * 4u;
        if (len < ihl + 4 || len > UINT16_MAX)
            return 0;
        /* TCP: the connection's core, as classify() steers it; UDP sockets all live on
         * core 0 (docs/io.md "UDP"). */
        owner =
            ip[9] == 17 /* UDP */
                ? 0
                : dio__owner(s, rd32(ip + 12), rd32(ip + 16), rd16(ip + ihl), rd16(ip + ihl + 2));
    }
    if (owner == c->idx)
        return 0;
    struct rte_mbuf *m = rte_pktmbuf_alloc(c->pool);
    struct reasm_buf *b = m ? malloc(sizeof(*b) + len) : NULL;
    if (!b) {
        if (m)
            rte_pktmbuf_free(m);
        c->ctr.rx_drop_steer++;
        return 1;
    }
    memcpy(b->data, ip, len);
    b->sh.free_cb = reasm_free;
    b->sh.fcb_opaque = b;
    rte_mbuf_ext_refcnt_set(&b->sh, 1);
    rte_pktmbuf_attach_extbuf(m, b->data, RTE_BAD_IOVA, (uint16_t)len, &b->sh);
    m->data_len = (uint16_t)len;
    m->pkt_len = (uint32_t)len;
    c->ctr.rx_reasm_steered++;
    steer(c, &s->cores[owner], m);
    return 1;
}

static bool is_reasm(const struct rte_mbuf *m)
{
    return RTE_MBUF_HAS_EXTBUF(m) && m->shinfo && m->shinfo->free_cb == reasm_free;
}

static void input(struct dio_core *c, struct rte_mbuf *m, stk_time_t now)
{
    if (unlikely(is_reasm(m))) {
        /* A datagram without Ethernet header (IPv4, or IPv6 reassembled) from steer_ip on
         * another core. */
        stk_input_ip(c->e, now, rte_pktmbuf_mtod(m, const void *), rte_pktmbuf_data_len(m), 0);
        rte_pktmbuf_free(m);
        return;
    }
    uint32_t f = 0;
    uint64_t ol = m->ol_flags;
    if ((ol & RTE_MBUF_F_RX_IP_CKSUM_MASK) == RTE_MBUF_F_RX_IP_CKSUM_GOOD)
        f |= STK_RX_IP_CSUM_OK;
    if ((ol & RTE_MBUF_F_RX_L4_CKSUM_MASK) == RTE_MBUF_F_RX_L4_CKSUM_GOOD)
        f |= STK_RX_L4_CSUM_OK;
    stk_input(c->e, now, rte_pktmbuf_mtod(m, const void *), rte_pktmbuf_data_len(m), f);
    rte_pktmbuf_free(m);
}

static void steer(struct dio_core *c, struct dio_core *to, struct rte_mbuf *m)
{
    if (rte_ring_mp_enqueue(to->steer, m) != 0) {
        c->ctr.rx_drop_steer++;
        rte_pktmbuf_free(m);
        return;
    }
    c->ctr.rx_steered++;
    /* The ring's tail store must be visible before we read the flag (and the sleeper
     * stores the flag before it reads the ring): without a full fence x86 may satisfy
     * this load before the store leaves the store buffer, both sides miss each other and
     * the frame waits out the owner's whole sleep. */
    atomic_thread_fence(memory_order_seq_cst);
    if (atomic_load(&to->sleeping))
        dio__wake(to);
}

#define RX_PREFETCH 4

static inline void prefetch_headers(const struct rte_mbuf *m)
{
    const uint8_t *d = rte_pktmbuf_mtod(m, const uint8_t *);
    rte_prefetch0(d);
    rte_prefetch0(d + RTE_CACHE_LINE_SIZE);
}

static void rx_frames(struct dio_core *c, struct rte_mbuf **pkts, unsigned n, stk_time_t now)
{
    struct dio_stack *s = c->s;
    unsigned ncores = s->sc.ncores;
    /* The headers (Ethernet, IP, TCP with options: two cache lines) of the frames a few
     * places ahead are fetched while this one is handled: the device or the kernel wrote
     * them, often from another CPU, and the first read of each was a miss. */
    for (unsigned i = 0; i < n && i < RX_PREFETCH; i++)
        prefetch_headers(pkts[i]);
    for (unsigned i = 0; i < n; i++) {
        struct rte_mbuf *m = pkts[i];
        if (i + RX_PREFETCH < n)
            prefetch_headers(pkts[i + RX_PREFETCH]);
        uint32_t len = rte_pktmbuf_pkt_len(m);
        /* Larger than our MTU allows (with a VLAN tag's worth of slack) or scattered over
         * segments: not ours to take; counted. */
        if (len > s->mtu + ETH_HLEN + 4u || m->nb_segs != 1) {
            c->ctr.rx_drop_oversize++;
            rte_pktmbuf_free(m);
            continue;
        }
        if (ncores == 1) {
            input(c, m, now);
            continue;
        }
        unsigned owner = dio__classify(s, m, rte_pktmbuf_mtod(m, const uint8_t *), len);
        if (owner == OWNER_ALL) {
            /* Every engine learns the neighbour; the frame is shared read-only. */
            rte_mbuf_refcnt_update(m, (int16_t)(ncores - 1));
            for (unsigned k = 0; k < ncores; k++) {
                if (k == c->idx)
                    continue;
                c->ctr.rx_arp_copies++;
                steer(c, &s->cores[k], m);
            }
            input(c, m, now);
        } else if (owner == c->idx) {
            input(c, m, now);
        } else {
            steer(c, &s->cores[owner], m);
        }
    }
}

static void on_event(void *ctx, int sd, void *user, uint32_t events)
{
    struct dio_core *c = ctx;
    if (c->s->sc.app.event)
        c->s->sc.app.event(c->s->sc.app.ctx, c, sd, user, events);
}

static int on_idle(void *ctx, int sd, void *user)
{
    struct dio_core *c = ctx;
    return c->s->sc.app.idle(c->s->sc.app.ctx, c, sd, user);
}

/* ---- Idle ----------------------------------------------------------------------------- */

/* Sleeps until a frame (RX interrupt, or the RX queue's socket polling readable, where the
 * device has either), a wake-up from another core, the next engine timer, or at most max_us.
 * Returns the microseconds it asked the kernel for (0: it did not sleep). */
static uint64_t idle_sleep(struct dio_core *c, stk_time_t now, uint64_t max_us)
{
    struct dio_stack *s = c->s;
    atomic_store(&c->sleeping, 1);
    atomic_thread_fence(memory_order_seq_cst);
    /* Re-check after announcing the sleep: a producer that enqueued before seeing the flag
     * did not wake us. */
    const struct dio_app *app = &s->sc.app;
    if (rte_ring_count(c->steer) || (c->txfwd && rte_ring_count(c->txfwd)) ||
        atomic_load(&s->stop) || c->ntx) {
        atomic_store(&c->sleeping, 0);
        return 0;
    }
    if (app->sleep_prepare && app->sleep_prepare(app->ctx, c)) {
        if (app->sleep_done)
            app->sleep_done(app->ctx, c);
        atomic_store(&c->sleeping, 0);
        return 0;
    }
    stk_time_t next = stk_next_timer(c->e);
    uint64_t us = max_us;
    if (next != UINT64_MAX)
        us = next <= now ? 0 : (next - now < us ? next - now : us);
    if (us) {
        if (c->rx_intr && c->rx_sock < 0)
            rte_eth_dev_rx_intr_enable(s->port, (uint16_t)c->rxq);
        struct epoll_event ev[4];
        struct timespec ts = {.tv_sec = (time_t)(us / 1000000),
                              .tv_nsec = (long)(us % 1000000) * 1000};
        c->ctr.sleeps++;
        int n = epoll_pwait2(c->ep_fd, ev, 4, &ts, NULL);
        if (n < 0 && errno == ENOSYS)
            n = epoll_wait(c->ep_fd, ev, 4, (int)((us + 999) / 1000));
        if (c->rx_intr && c->rx_sock < 0)
            rte_eth_dev_rx_intr_disable(s->port, (uint16_t)c->rxq);
        for (int i = 0; i < n; i++) {
            if (ev[i].data.fd == c->wake_fd) {
                uint64_t v;
                c->ctr.wakeups++;
                if (read(c->wake_fd, &v, sizeof(v)) < 0) {
                    /* Nothing to drain: another read got it. */
                }
            } else if (ev[i].data.u32 & APP_FD_TAG) {
                uint64_t v;
                c->ctr.wakeups++;
                if (read((int)(ev[i].data.u32 & ~APP_FD_TAG), &v, sizeof(v)) < 0) {
                    /* Already drained. */
                }
            } else if (ev[i].data.fd == c->rx_sock) {
                c->ctr.rx_wakeups++; /* frames wait in the socket's ring */
            } else {
                c->ctr.rx_wakeups++;
                /* Acknowledge the RX interrupt event so it fires again. */
                rte_eth_dev_rx_intr_ctl_q_get_fd(s->port, (uint16_t)c->rxq);
                uint64_t v;
                if (read(ev[i].data.fd, &v, sizeof(v)) < 0) {
                    /* Level-triggered devices need no acknowledgement. */
                }
            }
        }
    }
    if (app->sleep_done)
        app->sleep_done(app->ctx, c);
    atomic_store(&c->sleeping, 0);
    return us;
}

int dio_core_add_wake_fd(struct dio_core *c, int fd)
{
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)fd | APP_FD_TAG};
    return epoll_ctl(c->ep_fd, EPOLL_CTL_ADD, fd, &ev) < 0 ? -errno : 0;
}

void dio_core_del_wake_fd(struct dio_core *c, int fd)
{
    epoll_ctl(c->ep_fd, EPOLL_CTL_DEL, fd, NULL);
}

static int idle_setup(struct dio_core *c)
{
    c->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    c->ep_fd = epoll_create1(EPOLL_CLOEXEC);
    if (c->wake_fd < 0 || c->ep_fd < 0)
        return -errno;
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = c->wake_fd};
    if (epoll_ctl(c->ep_fd, EPOLL_CTL_ADD, c->wake_fd, &ev) < 0)
        return -errno;
    c->rx_intr = false;
    if (c->rxq >= 0 && c->s->rx_intr) {
        c->rx_sock = -1; /* a device's own interrupts come first */
        int fd = rte_eth_dev_rx_intr_ctl_q_get_fd(c->s->port, (uint16_t)c->rxq);
        if (fd >= 0) {
            ev.events = EPOLLIN;
            ev.data.fd = fd;
            c->rx_intr = epoll_ctl(c->ep_fd, EPOLL_CTL_ADD, fd, &ev) == 0;
        }
    } else if (c->rxq >= 0 && c->rx_sock >= 0) {
        /* The queue's socket polls readable while frames wait (port.c); nothing to enable,
         * disable or acknowledge. */
        ev.events = EPOLLIN;
        ev.data.fd = c->rx_sock;
        c->rx_intr = epoll_ctl(c->ep_fd, EPOLL_CTL_ADD, c->rx_sock, &ev) == 0;
        if (!c->rx_intr)
            c->rx_sock = -1;
    }
    return 0;
}

/* ---- The loop ------------------------------------------------------------------------- */

/* Each engine's share of the TCP buffer memory autotuning may fill: USTACK_TCP_MEM, or as
 * Linux sizes tcp_mem[2], 3/32 of the machine's memory, split over the stack cores (at least
 * 16 MiB each). */
uint64_t dio__tcp_mem(const struct shim_conf *k, unsigned ncores)
{
    if (k->tcp_mem)
        return k->tcp_mem;
    long pages = sysconf(_SC_PHYS_PAGES), psize = sysconf(_SC_PAGESIZE);
    uint64_t total = pages > 0 && psize > 0 ? (uint64_t)pages * (uint64_t)psize : 4ull << 30;
    uint64_t share = total / 32 * 3 / (ncores ? ncores : 1);
    return share < (16u << 20) ? (16u << 20) : share;
}

static int engine_setup(struct dio_core *c, stk_time_t now)
{
    struct dio_stack *s = c->s;
    const struct shim_conf *k = &s->conf;
    struct stk_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    memcpy(cfg.mac, s->mac, 6);
    cfg.ip = k->ip;
    cfg.prefix = k->prefix;
    cfg.gateway = k->gw;
    memcpy(cfg.ip6, k->ip6, 16);
    cfg.ip6_prefix = k->ip6_prefix;
    memcpy(cfg.gateway6, k->gw6, 16);
    cfg.mtu = s->mtu;
    if (getrandom(cfg.secret, sizeof(cfg.secret), 0) != (ssize_t)sizeof(cfg.secret))
        return -EIO;
    memcpy(cfg.isn_key, s->isn_key, sizeof(cfg.isn_key));
    cfg.isn_key_set = s->isn_key_set;
    cfg.clock_off_us = s->clock_off_us;
    cfg.io_ctx = c;
    cfg.tx = dio__tx;
    if (s->tx_ol & RTE_ETH_TX_OFFLOAD_IPV4_CKSUM)
        cfg.tx_offloads |= STK_TX_IP_CSUM;
    if (s->tx_ol & RTE_ETH_TX_OFFLOAD_TCP_CKSUM)
        cfg.tx_offloads |= STK_TX_TCP_CSUM;
    else
        cfg.tx_offloads |= STK_TX_L4_SUM; /* dio__tx sums the payload while copying it */
    if (s->tx_ol & RTE_ETH_TX_OFFLOAD_TCP_TSO) {
        cfg.tx_offloads |= STK_TX_TSO;
        cfg.tso_max = s->tso_max;
    }
    cfg.ev_ctx = c;
    cfg.on_event = on_event;
    cfg.app_idle = k->ack_piggyback && s->sc.app.idle ? on_idle : NULL;
    if (s->sc.ncores > 1) {
        cfg.port_ctx = c;
        cfg.port_ok = port_ok;
        cfg.port_ok6 = port_ok6;
        cfg.steer_ctx = c;
        cfg.steer_ip = steer_ip;
    }
    cfg.max_socks = k->max_socks;
    cfg.sndbuf = k->sndbuf;
    cfg.rcvbuf = k->rcvbuf;
    cfg.rcvbuf_max = k->rcvbuf_max;
    cfg.sndbuf_max = k->sndbuf_max;
    cfg.tcp_mem_max = dio__tcp_mem(k, s->sc.ncores);
    cfg.cc = (enum stk_cc_algo)k->cc;
    cfg.data_retries = k->tcp_retries;
    cfg.rto_max_us = k->rto_max_ms * 1000u;
    cfg.ipfrag_mem = k->ipfrag_mem;
    cfg.ipfrag_time_us = k->ipfrag_time_s * 1000000u;
    cfg.arp_passive = c->idx != 0;
    return stk_engine_create(&cfg, now, &c->e);
}

/* A function another thread asked this core to run (dio_stack_run_on). */
static void answer_run(struct dio_core *c)
{
    int posted = RUN_POSTED;
    if (atomic_load_explicit(&c->run_state, memory_order_acquire) != RUN_POSTED ||
        !atomic_compare_exchange_strong(&c->run_state, &posted, RUN_RUNNING))
        return;
    c->run_fn(c, c->run_arg);
    atomic_store_explicit(&c->run_state, RUN_DONE, memory_order_release);
}

/* ---- Receive backlog ------------------------------------------------------------------
 * A device gives back a received frame's buffer only when the frame is taken from its
 * ring: until then the frames the core has not taken use up the buffers the device may
 * fill. AF_XDP's driver keeps 2048 buffers in the kernel's fill queue, a NIC its RX ring;
 * when a connection storm outruns the core (ab -c 10000 against one stack core), those are
 * soon all full and the device drops what comes next: the peer's SYN retransmissions too,
 * which its Linux counts towards tcp_syn_retries, so its connect() fails after ~3 s
 * (docs/benchmarks.md "The `ab -c 10000` failures"). So when a burst comes back full the
 * core takes everything waiting into this FIFO (the driver refills its ring with fresh
 * mbufs from the pool) and works through it oldest first, a burst per round as before:
 * frames wait here instead of being dropped, as long as the pool keeps rxbl_reserve free
 * mbufs for sending and the device. */

static unsigned rx_burst(struct dio_core *c, struct rte_mbuf **pkts)
{
    uint16_t n = rte_eth_rx_burst(c->s->port, (uint16_t)c->rxq, pkts, DIO_BURST);
    if (n) {
        c->ctr.rx_bursts++;
        c->ctr.rx_pkts += n;
    }
    return n;
}

/* Moves what the device holds into the backlog, while both have room. */
static void rx_backlog_fill(struct dio_core *c)
{
    struct rte_mbuf *tmp[DIO_BURST];
    /* rte_mempool_avail_count reads every lcore's cache (RTE_MAX_LCORE cache lines): only
     * once the backlog holds twice the reserve (a quarter of the pool). Each burst takes at
     * most DIO_BURST mbufs from the pool, so the reserve holds within a few bursts of exact. */
    if (rte_ring_count(c->rxbl) >= 2 * c->rxbl_reserve &&
        rte_mempool_avail_count(c->pool) < c->rxbl_reserve + DIO_BURST) {
        c->ctr.rx_backlog_full++;
        return;
    }
    for (unsigned k = 0; k < 64; k++) {
        if (rte_ring_free_count(c->rxbl) < DIO_BURST) {
            c->ctr.rx_backlog_full++;
            return;
        }
        unsigned n = rx_burst(c, tmp);
        if (n)
            rte_ring_sp_enqueue_bulk(c->rxbl, (void **)tmp, n, NULL);
        c->ctr.rx_backlogged += n;
        if (n < DIO_BURST)
            return;
    }
}

/* This round's frames, at most DIO_BURST, oldest first. */
static unsigned rx_take(struct dio_core *c, struct rte_mbuf **pkts)
{
    if (rte_ring_empty(c->rxbl)) {
        unsigned n = rx_burst(c, pkts);
        if (n == DIO_BURST)
            rx_backlog_fill(c);
        return n;
    }
    rx_backlog_fill(c);
    return rte_ring_sc_dequeue_burst(c->rxbl, (void **)pkts, DIO_BURST, NULL);
}

/* One pass: returns how much work it found. */
static unsigned loop_once(struct dio_core *c, stk_time_t now, bool app)
{
    struct dio_stack *s = c->s;
    struct rte_mbuf *pkts[DIO_BURST];
    unsigned work = 0;
    /* Both bursts below are one receive burst for the engine: one ACK per connection. */
    stk_rx_begin(c->e);
    if (c->rxq >= 0) {
        unsigned n = rx_take(c, pkts);
        if (n) {
            if (unlikely(c->pcap != NULL))
                dio__pcap_mbufs(c, pkts, n);
            rx_frames(c, pkts, n, now);
            work += n;
        }
    }
    unsigned n = rte_ring_sc_dequeue_burst(c->steer, (void **)pkts, DIO_BURST, NULL);
    for (unsigned i = 0; i < n; i++)
        input(c, pkts[i], now);
    c->ctr.rx_steered_in += n;
    work += n;
    stk_rx_end(c->e, now);
    if (app && s->sc.app.poll)
        work += s->sc.app.poll(s->sc.app.ctx, c, now);
    if (stk_next_timer(c->e) <= now)
        stk_poll(c->e, now);
    if (c->txfwd) {
        /* Frames of cores without a TX queue of their own. */
        unsigned room = DIO_TXBUF - c->ntx;
        n = rte_ring_sc_dequeue_burst(c->txfwd, (void **)&c->txbuf[c->ntx],
                                      room < DIO_BURST ? room : DIO_BURST, NULL);
        if (n && c->ntx == 0)
            c->tx_first_us = now;
        c->ntx += n;
        work += n;
    }
    dio__tx_flush(c, now, false);
    answer_run(c);
    return work;
}

static bool engine_quiet(struct dio_core *c)
{
    const struct stk_counters *k = stk_counters(c->e);
    for (unsigned st = 0; st < sizeof(k->conns_by_state) / sizeof(k->conns_by_state[0]); st++)
        if (st != STK_TCP_CLOSED && st != STK_TCP_LISTEN && st != STK_TCP_TIME_WAIT &&
            k->conns_by_state[st])
            return false;
    return c->ntx == 0;
}

int dio__core_main(void *arg)
{
    struct dio_core *c = arg;
    struct dio_stack *s = c->s;
    /* Engine memory (control blocks, socket buffers) on this core's own node. */
    if (numa_available() >= 0)
        numa_set_localalloc();
    stk_time_t now = dio_now();
    int rc = idle_setup(c);
    if (rc == 0)
        rc = dio__pcap_core_init(c);
    if (rc == 0)
        rc = engine_setup(c, now);
    if (rc) {
        snprintf(c->errmsg, sizeof(c->errmsg), "core %u: engine start failed: %s", c->idx,
                 strerror(-rc));
        dio__pcap_core_fini(c);
        atomic_store(&c->ready, -1);
        return rc;
    }
    if (s->sc.app.init && (rc = s->sc.app.init(s->sc.app.ctx, c, now)) != 0) {
        snprintf(c->errmsg, sizeof(c->errmsg), "core %u: application start failed: %s", c->idx,
                 strerror(rc < 0 ? -rc : rc));
        stk_engine_destroy(c->e);
        c->e = NULL;
        dio__pcap_core_fini(c);
        atomic_store(&c->ready, -1);
        return rc;
    }
    atomic_store(&c->ready, 1);

    now = dio_now(); /* the start-up above is no stall */
    stk_time_t last_work = now;
    uint64_t backoff = SLEEP_MIN_US, asked = 0;
    while (!atomic_load_explicit(&s->stop, memory_order_relaxed)) {
        stk_time_t prev = now;
        now = dio_now();
        /* Back more than STALL_US later than the round's sleep asked: the thread got no CPU
         * (a CPU shared with busy threads: every ustackd's first core is CPU 0 by default),
         * or one round's work took that long. Frames and commands waited as long. */
        if (now - prev > asked + STALL_US) {
            c->ctr.loop_stalls++;
            c->ctr.loop_stall_us += now - prev - asked;
        }
        asked = 0;
        unsigned work = loop_once(c, now, true);
        /* The capture buffer goes out when the core has nothing else to do, or when it
         * has been filling for a while. */
        if (unlikely(c->pcap != NULL))
            dio__pcap_poll(c, now, work == 0);
        if (work) {
            last_work = now;
            backoff = SLEEP_MIN_US;
        } else if (now - last_work < s->conf.idle_spin_us) {
            /* Polling in vain: let a thread that shares this CPU (the application, a load
             * generator, another stack) run first. Alone on the CPU, sched_yield returns at
             * once; with others runnable, the scheduler moves this thread behind them. */
            if (s->conf.idle_yield) {
                c->ctr.yields++;
                sched_yield();
            }
        } else {
            /* Sleeps grow while nothing happens, so a long-idle core costs little and a
             * briefly idle one wakes fast. With RX interrupts the sleep ends on a frame,
             * and a core without an RX queue is woken by the cores that pass it frames;
             * both sleep until their next timer. */
            uint64_t cap = (c->rx_intr || c->rxq < 0) ? 100000 : s->conf.idle_sleep_us;
            asked = idle_sleep(c, now, backoff < cap ? backoff : cap);
            backoff = backoff * 2 < cap ? backoff * 2 : cap;
        }
    }

    /* Stopping: the application closes its sockets, then the engine runs until its
     * connections have finished or the grace time is over. */
    now = dio_now();
    if (s->sc.app.fini)
        s->sc.app.fini(s->sc.app.ctx, c, now);
    stk_time_t end = now + (uint64_t)s->grace_ms * 1000;
    while ((now = dio_now()) < end) {
        if (!loop_once(c, now, false) && engine_quiet(c))
            break;
        if (!c->rx_intr || c->rx_sock >= 0)
            rte_delay_us_sleep(50);
    }
    /* What could not be delivered in time is reset: its peer would wait for ever. */
    stk_abort_all(c->e, now);
    dio__tx_flush(c, now, true);
    answer_run(c);
    dio__pcap_core_fini(c);
    /* Requests from now on fail at once instead of waiting out their time. */
    atomic_store(&c->ready, 0);
    answer_run(c);
    return 0;
}

/* ---- Life cycle ----------------------------------------------------------------------- */

/* One attempt at reading the key file: 0, -ENOENT (none yet), or another -errno. */
static int isn_key_read(const char *path, uint8_t key[16])
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return -errno;
    struct stat st;
    int rc = -EPERM; /* not ours, not private, or not 16 bytes: not a key to trust */
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_uid == geteuid() &&
        (st.st_mode & 077) == 0 && st.st_size == 16)
        rc = read(fd, key, 16) == 16 ? 0 : -EIO;
    close(fd);
    return rc;
}

int dio_host_isn_key(const char *path, uint8_t key[16])
{
    for (int tries = 0; tries < 3; tries++) {
        int rc = isn_key_read(path, key);
        if (rc != -ENOENT)
            return rc;
        /* None yet: a private file of our own, linked into place, so that a reader never
         * sees a partial key and, of two instances racing, both use the one linked first. */
        char tmp[PATH_MAX];
        if (snprintf(tmp, sizeof(tmp), "%s.%ld", path, (long)getpid()) >= (int)sizeof(tmp))
            return -ENAMETOOLONG;
        unlink(tmp); /* one left by a killed ustackd that had our pid */
        int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd < 0)
            return -errno;
        uint8_t k[16];
        bool ok = getrandom(k, sizeof(k), 0) == (ssize_t)sizeof(k) &&
                  write(fd, k, sizeof(k)) == (ssize_t)sizeof(k);
        ok = close(fd) == 0 && ok;
        int lerr = ok ? (link(tmp, path) == 0 ? 0 : errno) : EIO;
        unlink(tmp);
        if (lerr == 0) {
            memcpy(key, k, sizeof(k));
            return 0;
        }
        if (lerr != EEXIST)
            return -lerr;
    }
    return -EAGAIN;
}

/* The key and clock every engine's ISNs and timestamps use (stk_config.isn_key). */
static void isn_clock_setup(struct dio_stack *s)
{
    int rc = dio_host_isn_key(DIO_ISN_KEY_PATH, s->isn_key);
    s->isn_key_set = rc == 0;
    if (rc != 0)
        SHIM_INFO("no host ISN key in %s (%s): this ustackd's ISNs and TCP timestamps do not "
                  "continue those of ustackd's before it",
                  DIO_ISN_KEY_PATH, strerror(-rc));
    struct timespec ts;
    stk_time_t now = dio_now();
    if (clock_gettime(CLOCK_MONOTONIC, &ts) == 0) {
        uint64_t mono = (uint64_t)ts.tv_sec * STK_US_PER_S + (uint64_t)ts.tv_nsec / 1000;
        s->clock_off_us = mono > now ? mono - now : 0;
    }
}

int dio_stack_create(const struct dio_stack_conf *sc, struct dio_stack **out, char *err,
                     size_t errlen)
{
    if (sc->ncores == 0 || sc->ncores > DIO_MAX_CORES) {
        dio__err(err, errlen, "USTACK_CORES: 1..%d cores", DIO_MAX_CORES);
        return -EINVAL;
    }
    clock_init();
    struct dio_stack *s = calloc(1, sizeof(*s) + sc->ncores * sizeof(struct dio_core));
    if (!s)
        return -ENOMEM;
    s->sc = *sc;
    s->conf = *sc->conf;
    s->sc.conf = &s->conf;
    s->port = sc->port_id;
    pthread_mutex_init(&s->run_lock, NULL);
    isn_clock_setup(s);
    for (unsigned i = 0; i < sc->ncores; i++) {
        struct dio_core *c = &s->cores[i];
        c->s = s;
        c->idx = i;
        c->lcore = sc->lcores[i];
        c->wake_fd = c->ep_fd = c->rx_sock = -1;
        if (rte_lcore_is_enabled(c->lcore) == 0 || c->lcore == rte_get_main_lcore()) {
            dio__err(err, errlen, "core %u: lcore %u is not a usable EAL worker", i, c->lcore);
            free(s);
            return -EINVAL;
        }
    }
    int rc = dio__pcap_open(s, err, errlen);
    if (rc == 0)
        rc = dio__port_setup(s, err, errlen);
    for (unsigned i = 0; rc == 0 && i < sc->ncores; i++) {
        struct dio_core *c = &s->cores[i];
        char name[RTE_RING_NAMESIZE];
        int sock = (int)rte_lcore_to_socket_id(c->lcore);
        snprintf(name, sizeof(name), "ustk%u_st%u", s->port, i);
        c->steer = rte_ring_create(name, DIO_STEER_RING, sock, RING_F_SC_DEQ);
        if (c->txq >= 0 && s->ntxq < sc->ncores) {
            snprintf(name, sizeof(name), "ustk%u_tf%u", s->port, i);
            c->txfwd = rte_ring_create(name, DIO_STEER_RING, sock, RING_F_SC_DEQ);
            if (!c->txfwd)
                rc = -ENOMEM;
        }
        if (c->rxq >= 0 && rc == 0) {
            /* Room for every mbuf of the pool; the reserve is what really bounds it. */
            snprintf(name, sizeof(name), "ustk%u_rb%u", s->port, i);
            c->rxbl = rte_ring_create(name, rte_align32pow2(s->conf.mbufs), sock,
                                      RING_F_SP_ENQ | RING_F_SC_DEQ);
            c->rxbl_reserve = c->pool->size / 8;
            if (!c->rxbl)
                rc = -ENOMEM;
        }
        if (!c->steer)
            rc = -ENOMEM;
        if (rc)
            dio__err(err, errlen, "core %u: ring: %s", i, rte_strerror(rte_errno));
    }
    if (rc) {
        dio_stack_destroy(s);
        return rc;
    }
    *out = s;
    return 0;
}

int dio_stack_start(struct dio_stack *s, char *err, size_t errlen)
{
    atomic_store(&s->stop, 0);
    for (unsigned i = 0; i < s->sc.ncores; i++) {
        struct dio_core *c = &s->cores[i];
        atomic_store(&c->ready, 0);
        int rc = rte_eal_remote_launch(dio__core_main, c, c->lcore);
        if (rc) {
            dio__err(err, errlen, "core %u: lcore %u busy: %s", i, c->lcore, strerror(-rc));
            dio_stack_stop(s, 0);
            return rc;
        }
    }
    s->launched = true;
    /* Wait (bounded) for every core to come up or fail. */
    for (int spins = 0; spins < 10000; spins++) {
        unsigned up = 0;
        for (unsigned i = 0; i < s->sc.ncores; i++) {
            int r = atomic_load(&s->cores[i].ready);
            if (r < 0) {
                dio__err(err, errlen, "%s", s->cores[i].errmsg);
                dio_stack_stop(s, 0);
                return -EIO;
            }
            up += r == 1;
        }
        if (up == s->sc.ncores)
            return 0;
        usleep(1000);
    }
    dio__err(err, errlen, "stack cores did not start within 10 s");
    dio_stack_stop(s, 0);
    return -ETIMEDOUT;
}

void dio_stack_stop(struct dio_stack *s, unsigned grace_ms)
{
    if (!s->launched) {
        for (unsigned i = 0; i < s->sc.ncores; i++)
            rte_eal_wait_lcore(s->cores[i].lcore);
        return;
    }
    s->grace_ms = grace_ms;
    atomic_store(&s->stop, 1);
    for (unsigned i = 0; i < s->sc.ncores; i++)
        if (s->cores[i].wake_fd >= 0)
            dio__wake(&s->cores[i]);
    for (unsigned i = 0; i < s->sc.ncores; i++)
        rte_eal_wait_lcore(s->cores[i].lcore);
    s->launched = false;
}

static void drain_ring(struct rte_ring *r)
{
    void *m;
    while (r && rte_ring_dequeue(r, &m) == 0)
        rte_pktmbuf_free(m);
}

void dio_stack_destroy(struct dio_stack *s)
{
    if (!s)
        return;
    for (unsigned i = 0; i < s->sc.ncores; i++) {
        struct dio_core *c = &s->cores[i];
        drain_ring(c->steer);
        drain_ring(c->txfwd);
        drain_ring(c->rxbl);
        rte_ring_free(c->steer);
        rte_ring_free(c->txfwd);
        rte_ring_free(c->rxbl);
        for (unsigned k = 0; k < c->ntx; k++)
            rte_pktmbuf_free(c->txbuf[k]);
        if (c->e)
            stk_engine_destroy(c->e);
        if (c->wake_fd >= 0)
            close(c->wake_fd);
        if (c->ep_fd >= 0)
            close(c->ep_fd);
    }
    if (s->port_started) {
        rte_eth_dev_stop(s->port);
    }
    for (unsigned k = 0; k < DIO_NSOCKETS; k++)
        rte_mempool_free(s->pools[k]);
    dio__pcap_close(s);
    free(s);
}

unsigned dio_stack_ncores(const struct dio_stack *s)
{
    return s->sc.ncores;
}

const char *dio_stack_describe(const struct dio_stack *s)
{
    return s->desc;
}

int dio_stack_run_on(struct dio_stack *s, unsigned core, void (*fn)(struct dio_core *c, void *arg),
                     void *arg, unsigned timeout_ms)
{
    if (core >= s->sc.ncores)
        return -EINVAL;
    struct dio_core *c = &s->cores[core];
    pthread_mutex_lock(&s->run_lock);
    if (atomic_load(&c->ready) != 1) {
        pthread_mutex_unlock(&s->run_lock);
        return -ESRCH;
    }
    c->run_fn = fn;
    c->run_arg = arg;
    atomic_store_explicit(&c->run_state, RUN_POSTED, memory_order_release);
    dio__wake(c);
    int rc = -ETIMEDOUT;
    for (unsigned waited = 0; waited <= timeout_ms * 4u; waited++) {
        if (atomic_load_explicit(&c->run_state, memory_order_acquire) == RUN_DONE) {
            rc = 0;
            break;
        }
        usleep(250);
    }
    if (rc) {
        /* Withdraw the request; if the core took it meanwhile, it is running fn (a short
         * walk), and arg must stay valid until it is done. */
        int posted = RUN_POSTED;
        if (!atomic_compare_exchange_strong(&c->run_state, &posted, RUN_IDLE)) {
            while (atomic_load_explicit(&c->run_state, memory_order_acquire) != RUN_DONE)
                usleep(100);
            rc = 0;
        }
    }
    atomic_store(&c->run_state, RUN_IDLE);
    pthread_mutex_unlock(&s->run_lock);
    return rc;
}

struct counters_req {
    struct stk_counters *engine;
    struct dio_counters *io;
};

static void copy_counters(struct dio_core *c, void *arg)
{
    struct counters_req *r = arg;
    if (r->engine)
        *r->engine = *stk_counters(c->e);
    if (r->io)
        *r->io = c->ctr;
}

int dio_stack_counters(struct dio_stack *s, unsigned core, struct stk_counters *engine,
                       struct dio_counters *io)
{
    if (core >= s->sc.ncores)
        return -EINVAL;
    struct dio_core *c = &s->cores[core];
    struct counters_req r = {engine, io};
    if (s->launched)
        return dio_stack_run_on(s, core, copy_counters, &r, 1000);
    if (!c->e)
        return -ESRCH;
    /* Not running: nothing else touches the engine. */
    copy_counters(c, &r);
    return 0;
}

void dio_stack_print_stats(struct dio_stack *s, FILE *f, const char *prefix)
{
    for (unsigned i = 0; i < s->sc.ncores; i++) {
        struct stk_counters k;
        struct dio_counters d;
        if (dio_stack_counters(s, i, &k, &d)) {
            fprintf(f, "%s core=%u unavailable=1\n", prefix, i);
            continue;
        }
        fprintf(f, "%s core=%u", prefix, i);
#define PR(n)                                                                                      \
    if (k.n)                                                                                       \
        fprintf(f, " " #n "=%llu", (unsigned long long)k.n);
        STK_COUNTERS(PR)
#undef PR
#define PR(n)                                                                                      \
    if (d.n)                                                                                       \
        fprintf(f, " " #n "=%llu", (unsigned long long)d.n);
        DIO_COUNTERS(PR)
#undef PR
        unsigned conns = 0;
        for (unsigned st = STK_TCP_SYN_SENT; st <= STK_TCP_TIME_WAIT; st++)
            conns += k.conns_by_state[st];
        fprintf(f, " conns=%u\n", conns);
    }
    /* The device's own view: frames it missed (ring full) or could not buffer. */
    struct rte_eth_stats es;
    if (rte_eth_stats_get(s->port, &es) == 0)
        fprintf(f,
                "%s port=%u ipackets=%" PRIu64 " opackets=%" PRIu64 " imissed=%" PRIu64
                " ierrors=%" PRIu64 " oerrors=%" PRIu64 " rx_nombuf=%" PRIu64 "\n",
                prefix, s->port, es.ipackets, es.opackets, es.imissed, es.ierrors, es.oerrors,
                es.rx_nombuf);
    fflush(f);
}

struct stk_engine *dio_core_engine(struct dio_core *c)
{
    return c->e;
}

unsigned dio_core_index(const struct dio_core *c)
{
    return c->idx;
}

void dio_core_set_app_data(struct dio_core *c, void *p)
{
    c->app_data = p;
}

void *dio_core_app_data(struct dio_core *c)
{
    return c->app_data;
}

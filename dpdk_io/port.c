/*
 * port.c - configuring a DPDK port for a stack (queues, RSS, offloads, MTU, mbuf pools) and
 * the engine's transmit path.
 */
#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <rte_errno.h>
#include <rte_log.h>
#include <rte_ethdev.h>
#include <rte_lcore.h>
#include <rte_mbuf.h>
#include <rte_mbuf_pool_ops.h>

#include "dio_int.h"

#define RX_DESC 4096
#define TX_DESC 1024

/* A symmetric Toeplitz key: with the 16-bit pattern 0x6d5a repeated, swapping source and
 * destination (addresses and ports) gives the same hash, so both directions of a
 * connection land on the same queue (Woo and Park, "Scalable TCP Session Monitoring with
 * Symmetric Receive-side Scaling", 2012). */
static void symmetric_key(uint8_t *key, unsigned len)
{
    for (unsigned i = 0; i < len; i++)
        key[i] = (i & 1) ? 0x5a : 0x6d;
}

/* ---- Sockets that stand in for RX interrupts -------------------------------------------- */

/* net_af_xdp and net_af_packet have no RX queue interrupts in DPDK, but each queue is a
 * kernel socket that polls readable while frames wait in its ring: an idle core sleeps on
 * it instead of polling in growing steps. The PMDs keep the socket private, so it is found
 * among our open files by its address family. */
#define SOCK_SCAN_MAX 64

static int rx_sock_family(const char *driver)
{
    if (strcmp(driver, "net_af_xdp") == 0)
        return 44; /* AF_XDP: not in every libc's headers */
    if (strcmp(driver, "net_af_packet") == 0)
        return AF_PACKET;
    return 0;
}

/* The open sockets of address family `family`: their numbers, at most max. */
static unsigned family_socks(int family, int *fds, unsigned max)
{
    DIR *d = opendir("/proc/self/fd");
    unsigned n = 0;
    if (!d)
        return 0;
    for (struct dirent *de; n < max && (de = readdir(d)) != NULL;) {
        char *end;
        long fd = strtol(de->d_name, &end, 10);
        struct stat st;
        int dom = -1;
        socklen_t len = sizeof(dom);
        if (end == de->d_name || *end || fd < 0 || fd == dirfd(d))
            continue;
        if (fstat((int)fd, &st) == 0 && S_ISSOCK(st.st_mode) &&
            getsockopt((int)fd, SOL_SOCKET, SO_DOMAIN, &dom, &len) == 0 && dom == family)
            fds[n++] = (int)fd;
    }
    closedir(d);
    return n;
}

/* The one socket of `family` open now that was not among before[]; -1 if none or several. */
static int new_family_sock(int family, const int *before, unsigned nbefore)
{
    int now[SOCK_SCAN_MAX], found = -1;
    unsigned n = family_socks(family, now, SOCK_SCAN_MAX);
    for (unsigned i = 0; i < n; i++) {
        bool old = false;
        for (unsigned j = 0; j < nbefore && !old; j++)
            old = now[i] == before[j];
        if (old)
            continue;
        if (found >= 0)
            return -1;
        found = now[i];
    }
    return found;
}

/* A pktmbuf pool whose objects are packed back to back, allowed to cross page boundaries.
 * The AF_XDP driver (DPDK 22.11, zero-copy UMEM) registers a pool's memory with the kernel
 * as one UMEM of populated_size x object size bytes from the first chunk's page, and assumes
 * that covers every object. rte_pktmbuf_pool_create keeps each object inside one page: with
 * 4 KiB pages (no hugepages) that is one 2.4 KB mbuf per page, so the pool spans 1.7 times
 * the UMEM and every frame sent from an mbuf beyond it is refused by the kernel
 * (tx_invalid_descs in XDP_STATISTICS): lost without an error, its mbuf never completed. A
 * device without DMA needs no IOVA-contiguous objects. */
struct rte_mempool *dio__packed_pool_create(const char *name, unsigned n, unsigned room, int socket)
{
    unsigned elt = (unsigned)sizeof(struct rte_mbuf) + room;
    struct rte_mempool *mp =
        rte_mempool_create_empty(name, n, elt, 256, sizeof(struct rte_pktmbuf_pool_private), socket,
                                 RTE_MEMPOOL_F_NO_IOVA_CONTIG);
    if (!mp)
        return NULL;
    struct rte_pktmbuf_pool_private priv = {.mbuf_data_room_size = (uint16_t)room};
    int rc = rte_mempool_set_ops_byname(mp, rte_mbuf_best_mempool_ops(), NULL);
    if (rc == 0) {
        rte_pktmbuf_pool_init(mp, &priv);
        rc = rte_mempool_populate_default(mp) < 0 ? -1 : 0;
    }
    if (rc) {
        rte_mempool_free(mp);
        rte_errno = ENOMEM;
        return NULL;
    }
    rte_mempool_obj_iter(mp, rte_pktmbuf_init, NULL);
    return mp;
}

struct umem_check {
    uintptr_t base;
    size_t size, beyond;
};

static void umem_check_obj(struct rte_mempool *mp, void *arg, void *obj, unsigned idx)
{
    struct umem_check *u = arg;
    (void)idx;
    /* The whole object, header included, is what the kernel may be handed. */
    if ((uintptr_t)obj + mp->elt_size + mp->trailer_size - u->base > u->size)
        u->beyond++;
}

/* How many objects of the pool lie outside the UMEM that DPDK 22.11's AF_XDP driver derives
 * from it (get_base_addr and xdp_umem_configure in rte_eth_af_xdp.c): from the page of the
 * first memory chunk, populated_size x object size bytes. */
size_t dio__umem_beyond(struct rte_mempool *mp)
{
    struct rte_mempool_memhdr *h = STAILQ_FIRST(&mp->mem_list);
    if (!h)
        return 0;
    struct umem_check u = {.base = (uintptr_t)h->addr & ~((uintptr_t)getpagesize() - 1)};
    u.size = (size_t)mp->populated_size * rte_mempool_calc_obj_size(mp->elt_size, mp->flags, NULL) +
             ((uintptr_t)h->addr - u.base);
    rte_mempool_obj_iter(mp, umem_check_obj, &u);
    return u.beyond;
}

static struct rte_mempool *pool_for(struct dio_stack *s, unsigned socket, unsigned ncores_here,
                                    bool packed, char *err, size_t errlen)
{
    unsigned sock = socket < DIO_NSOCKETS ? socket : 0;
    if (s->pools[sock])
        return s->pools[sock];
    char name[RTE_MEMPOOL_NAMESIZE];
    snprintf(name, sizeof(name), "ustk%u_%u", s->port, sock);
    /* Room for a whole frame at our MTU in one segment, so only TSO needs chains. */
    unsigned room = (s->mtu + 18u > 2048u ? s->mtu + 18u : 2048u) + RTE_PKTMBUF_HEADROOM;
    unsigned n = s->conf.mbufs * ncores_here;
    struct rte_mempool *mp = NULL;
    for (int k = 0; k < 2 && !mp; k++) {
        int where = k == 0 ? (int)socket : SOCKET_ID_ANY;
        mp = packed ? dio__packed_pool_create(name, n, room, where)
                    : rte_pktmbuf_pool_create(name, n, 256, 0, (uint16_t)room, where);
    }
    if (!mp) {
        dio__err(err, errlen,
                 "mbuf pool of %u buffers on NUMA node %u: %s (lower USTACK_MBUFS, or give EAL "
                 "more memory with USTACK_EAL=\"-m <MB>\")",
                 n, socket, rte_strerror(rte_errno));
        return NULL;
    }
    size_t beyond = packed ? dio__umem_beyond(mp) : 0;
    if (beyond) {
        /* Frames in those mbufs would vanish: refuse rather than lose them quietly. */
        dio__err(err, errlen,
                 "mbuf pool of %u buffers: %zu of them outside the AF_XDP UMEM (memory in %u "
                 "chunks); give EAL more memory with USTACK_EAL=\"-m <MB>\"",
                 n, beyond, mp->nb_mem_chunks);
        rte_mempool_free(mp);
        return NULL;
    }
    s->pools[sock] = mp;
    return mp;
}

/* Lets the IPv6 groups the engine listens to through the device's receive filter: the exact
 * list when the driver takes one (a NIC then passes only those groups), else every group
 * (all-multicast). Returns what was done, for the port description. Devices that do neither
 * (af_packet and af_xdp on a veth: the veth filters nothing, so the groups arrive anyway)
 * report "none". */
static const char *join_ipv6_groups(struct dio_stack *s)
{
    if (s->mtu < 1280)
        return "off"; /* IPv6 is off below its minimum MTU */
    struct rte_ether_addr mc[3];
    uint32_t n = 0;
    const uint8_t all_nodes[6] = {0x33, 0x33, 0, 0, 0, 1};
    memcpy(mc[n++].addr_bytes, all_nodes, 6);
    /* The link-local address ends with the MAC's last three bytes (modified EUI-64), and
     * a solicited-node group keeps an address's last 24 bits: 33:33:ff:xx:xx:xx. */
    uint8_t sn[6] = {0x33, 0x33, 0xff, s->mac[3], s->mac[4], s->mac[5]};
    memcpy(mc[n++].addr_bytes, sn, 6);
    static const uint8_t zero[16];
    if (memcmp(s->conf.ip6, zero, 16) != 0) {
        memcpy(sn + 3, s->conf.ip6 + 13, 3);
        if (memcmp(sn, mc[1].addr_bytes, 6) != 0)
            memcpy(mc[n++].addr_bytes, sn, 6);
    }
    /* Drivers without the operation log an error for the question: ask quietly. */
    uint32_t lvl = rte_log_get_global_level();
    rte_log_set_global_level(RTE_LOG_EMERG);
    const char *how = "none";
    if (rte_eth_dev_set_mc_addr_list(s->port, mc, n) == 0)
        how = "list";
    else if (rte_eth_allmulticast_enable(s->port) == 0 && rte_eth_allmulticast_get(s->port) == 1)
        how = "allmulti";
    rte_log_set_global_level(lvl);
    return how;
}

static void pick_mac(struct dio_stack *s)
{
    struct rte_ether_addr a;
    if (s->conf.mac_set) {
        memcpy(a.addr_bytes, s->conf.mac, 6);
        /* Devices that cannot change their address still receive it in promiscuous mode. */
        if (rte_eth_dev_default_mac_addr_set(s->port, &a) != 0)
            rte_eth_promiscuous_enable(s->port);
        memcpy(s->mac, s->conf.mac, 6);
        return;
    }
    if (rte_eth_macaddr_get(s->port, &a) == 0 && !rte_is_zero_ether_addr(&a)) {
        memcpy(s->mac, a.addr_bytes, 6);
        return;
    }
    /* Ring ports have no address of their own: make a locally administered one. */
    if (getrandom(s->mac, 6, 0) != 6)
        memset(s->mac, 0x42, 6);
    s->mac[0] = (uint8_t)((s->mac[0] & 0xfe) | 0x02);
}

static const char *onoff(bool b)
{
    return b ? "on" : "off";
}

int dio__port_setup(struct dio_stack *s, char *err, size_t errlen)
{
    struct rte_eth_dev_info info;
    uint16_t port = s->port;
    unsigned ncores = s->sc.ncores;
    int rc = rte_eth_dev_info_get(port, &info);
    if (rc) {
        dio__err(err, errlen, "port %u: no device information: %s", port, rte_strerror(-rc));
        return rc;
    }
    s->nrxq = ncores < info.max_rx_queues ? ncores : info.max_rx_queues;
    s->ntxq = ncores < info.max_tx_queues ? ncores : info.max_tx_queues;
    if (s->nrxq == 0 || s->ntxq == 0) {
        dio__err(err, errlen, "port %u (%s): the device has no queues", port, info.driver_name);
        return -ENODEV;
    }

    struct rte_eth_conf pc;
    memset(&pc, 0, sizeof(pc));
    s->mtu = (uint16_t)s->conf.mtu;
    if (info.max_mtu && s->mtu > info.max_mtu) {
        dio__err(err, errlen, "USTACK_MTU=%u: larger than the device allows (%u)", s->mtu,
                 info.max_mtu);
        return -EINVAL;
    }
    pc.rxmode.mtu = s->mtu;

    /* Checksums on receive and transmit, TSO when the device also chains segments. */
    uint64_t rx_want = RTE_ETH_RX_OFFLOAD_IPV4_CKSUM | RTE_ETH_RX_OFFLOAD_TCP_CKSUM;
    s->rx_ol = info.rx_offload_capa & rx_want;
    uint64_t tx_want = RTE_ETH_TX_OFFLOAD_IPV4_CKSUM | RTE_ETH_TX_OFFLOAD_TCP_CKSUM;
    s->tx_ol = info.tx_offload_capa & tx_want;
    if ((info.tx_offload_capa & RTE_ETH_TX_OFFLOAD_TCP_TSO) &&
        (info.tx_offload_capa & RTE_ETH_TX_OFFLOAD_MULTI_SEGS) &&
        (s->tx_ol & RTE_ETH_TX_OFFLOAD_TCP_CKSUM) && (s->tx_ol & RTE_ETH_TX_OFFLOAD_IPV4_CKSUM))
        s->tx_ol |= RTE_ETH_TX_OFFLOAD_TCP_TSO | RTE_ETH_TX_OFFLOAD_MULTI_SEGS;
    s->tso_max = 0;
    if (s->tx_ol & RTE_ETH_TX_OFFLOAD_TCP_TSO) {
        unsigned segs = info.tx_desc_lim.nb_seg_max ? info.tx_desc_lim.nb_seg_max : 32;
        unsigned max = (segs - 1) * 2048;
        s->tso_max = max < 65000 ? max : 65000;
        if (s->tso_max < 2 * 1460u) {
            s->tx_ol &= ~RTE_ETH_TX_OFFLOAD_TCP_TSO;
            s->tso_max = 0;
        }
    }

    /* RSS with our key, when the device hashes TCP over IPv4 and there is more than one
     * queue to spread over. */
    s->key_len = info.hash_key_size ? info.hash_key_size : 40;
    if (s->key_len > DIO_KEY_LEN)
        s->key_len = DIO_KEY_LEN;
    symmetric_key(s->key, DIO_KEY_LEN);
    uint64_t hf = info.flow_type_rss_offloads & (RTE_ETH_RSS_IPV4 | RTE_ETH_RSS_NONFRAG_IPV4_TCP);
    bool rss = s->nrxq > 1 && (hf & RTE_ETH_RSS_NONFRAG_IPV4_TCP);
    if (rss) {
        pc.rxmode.mq_mode = RTE_ETH_MQ_RX_RSS;
        pc.rx_adv_conf.rss_conf.rss_key = s->key;
        pc.rx_adv_conf.rss_conf.rss_key_len = (uint8_t)s->key_len;
        pc.rx_adv_conf.rss_conf.rss_hf = hf;
        if (info.rx_offload_capa & RTE_ETH_RX_OFFLOAD_RSS_HASH)
            s->rx_ol |= RTE_ETH_RX_OFFLOAD_RSS_HASH;
    }
    pc.rxmode.offloads = s->rx_ol;
    pc.txmode.offloads = s->tx_ol;
    /* RX interrupts let an idle core sleep in the kernel until a frame arrives. */
    pc.intr_conf.rxq = 1;
    rc = rte_eth_dev_configure(port, (uint16_t)s->nrxq, (uint16_t)s->ntxq, &pc);
    if (rc) {
        pc.intr_conf.rxq = 0;
        rc = rte_eth_dev_configure(port, (uint16_t)s->nrxq, (uint16_t)s->ntxq, &pc);
    }
    if (rc && rss) {
        /* Some devices list RSS but refuse our key or hash types: steer in software. */
        rss = false;
        s->rx_ol &= ~RTE_ETH_RX_OFFLOAD_RSS_HASH;
        memset(&pc.rx_adv_conf, 0, sizeof(pc.rx_adv_conf));
        pc.rxmode.mq_mode = RTE_ETH_MQ_RX_NONE;
        pc.rxmode.offloads = s->rx_ol;
        rc = rte_eth_dev_configure(port, (uint16_t)s->nrxq, (uint16_t)s->ntxq, &pc);
    }
    if (rc) {
        dio__err(err, errlen, "port %u (%s): configure with %u/%u queues failed: %s", port,
                 info.driver_name, s->nrxq, s->ntxq, rte_strerror(-rc));
        return rc;
    }

    /* The redirection table: bucket i belongs to core i % ncores. The hardware table maps
     * bucket i to queue i % nrxq, which is the same core whenever there is a queue per
     * core; otherwise the software steering moves frames to their owner. */
    s->reta_size = (rss && info.reta_size && info.reta_size <= DIO_RETA_MAX) ? info.reta_size : 128;
    for (unsigned i = 0; i < s->reta_size; i++)
        s->reta_core[i] = (uint16_t)(i % ncores);
    s->hw_rss = false;
    if (rss) {
        struct rte_eth_rss_reta_entry64 reta[DIO_RETA_MAX / RTE_ETH_RETA_GROUP_SIZE];
        memset(reta, 0, sizeof(reta));
        for (unsigned i = 0; i < s->reta_size; i++) {
            reta[i / RTE_ETH_RETA_GROUP_SIZE].mask |= 1ull << (i % RTE_ETH_RETA_GROUP_SIZE);
            reta[i / RTE_ETH_RETA_GROUP_SIZE].reta[i % RTE_ETH_RETA_GROUP_SIZE] =
                (uint16_t)(i % s->nrxq);
        }
        bool reta_ok = rte_eth_dev_rss_reta_update(port, reta, (uint16_t)s->reta_size) == 0;
        s->hw_rss = reta_ok && s->nrxq == ncores;
    }

    uint16_t nrxd = RX_DESC, ntxd = TX_DESC;
    rte_eth_dev_adjust_nb_rx_tx_desc(port, &nrxd, &ntxd);

    /* Pools per NUMA node, sized by the cores on that node; packed for AF_XDP, whose UMEM
     * is the pool's memory. */
    bool xdp_umem = strcmp(info.driver_name, "net_af_xdp") == 0;
    int fam = rx_sock_family(info.driver_name);
    unsigned per_socket[DIO_NSOCKETS] = {0};
    for (unsigned i = 0; i < ncores; i++) {
        unsigned sock = rte_lcore_to_socket_id(s->sc.lcores[i]);
        per_socket[sock < DIO_NSOCKETS ? sock : 0]++;
    }
    for (unsigned i = 0; i < ncores; i++) {
        struct dio_core *c = &s->cores[i];
        unsigned sock = rte_lcore_to_socket_id(c->lcore);
        c->pool =
            pool_for(s, sock, per_socket[sock < DIO_NSOCKETS ? sock : 0], xdp_umem, err, errlen);
        if (!c->pool)
            return -ENOMEM;
        c->rxq = i < s->nrxq ? (int)i : -1;
        c->txq = i < s->ntxq ? (int)i : -1;
        c->rx_sock = -1;
        if (c->rxq >= 0) {
            struct rte_eth_rxconf rxc = info.default_rxconf;
            rxc.offloads = s->rx_ol;
            int before[SOCK_SCAN_MAX];
            unsigned nbefore = fam ? family_socks(fam, before, SOCK_SCAN_MAX) : 0;
            rc = rte_eth_rx_queue_setup(port, (uint16_t)i, nrxd, sock, &rxc, c->pool);
            if (rc) {
                dio__err(err, errlen, "port %u: RX queue %u: %s", port, i, rte_strerror(-rc));
                return rc;
            }
            /* AF_XDP makes the queue's socket here. */
            if (fam)
                c->rx_sock = new_family_sock(fam, before, nbefore);
        }
        if (c->txq >= 0) {
            struct rte_eth_txconf txc = info.default_txconf;
            txc.offloads = s->tx_ol;
            rc = rte_eth_tx_queue_setup(port, (uint16_t)i, ntxd, sock, &txc);
            if (rc) {
                dio__err(err, errlen, "port %u: TX queue %u: %s", port, i, rte_strerror(-rc));
                return rc;
            }
        }
    }
    /* Some drivers take the MTU only here; a device without the call keeps its own. */
    rc = rte_eth_dev_set_mtu(port, s->mtu);
    if (rc && rc != -ENOTSUP) {
        dio__err(err, errlen, "USTACK_MTU=%u: the device refused it: %s", s->mtu,
                 rte_strerror(-rc));
        return rc;
    }
    pick_mac(s);
    rc = rte_eth_dev_start(port);
    if (rc) {
        dio__err(err, errlen, "port %u (%s): start failed: %s", port, info.driver_name,
                 rte_strerror(-rc));
        return rc;
    }
    s->port_started = true;
    /* Whether queue interrupts exist: asked once here, quietly, since devices without
     * them log an error for the question. */
    uint32_t lvl = rte_log_get_global_level();
    rte_log_set_global_level(RTE_LOG_EMERG);
    s->rx_intr = pc.intr_conf.rxq && rte_eth_dev_rx_intr_ctl_q_get_fd(port, 0) >= 0;
    rte_log_set_global_level(lvl);
    if (fam && s->nrxq == 1 && s->cores[0].rx_sock < 0) {
        /* AF_PACKET opened its socket when the device was probed: the only one is queue 0's. */
        int fds[2];
        if (family_socks(fam, fds, 2) == 1)
            s->cores[0].rx_sock = fds[0];
    }
    /* IPv4 needs no multicast (ARP is broadcast), and promiscuity only costs; IPv6 needs the
     * all-nodes group and our solicited-node groups (neighbour discovery). */
    const char *mcast = join_ipv6_groups(s);
    snprintf(s->desc, sizeof(s->desc),
             "driver=%s queues=%u/%u cores=%u rss=%s steering=%s rx_csum=%s tx_csum=%s tso=%s "
             "mcast=%s rx_wake=%s mtu=%u mac=%02x:%02x:%02x:%02x:%02x:%02x",
             info.driver_name, s->nrxq, s->ntxq, ncores, rss ? (s->hw_rss ? "hw" : "hw+sw") : "off",
             s->hw_rss || ncores == 1 ? "none" : "software",
             onoff(s->rx_ol & RTE_ETH_RX_OFFLOAD_TCP_CKSUM),
             onoff(s->tx_ol & RTE_ETH_TX_OFFLOAD_TCP_CKSUM),
             onoff(s->tx_ol & RTE_ETH_TX_OFFLOAD_TCP_TSO), mcast,
             s->rx_intr                 ? "interrupt"
             : s->cores[0].rx_sock >= 0 ? "socket"
                                        : "poll",
             s->mtu, s->mac[0], s->mac[1], s->mac[2], s->mac[3], s->mac[4], s->mac[5]);
    return 0;
}

/* ---- Transmit ------------------------------------------------------------------------- */

/* Stores the TCP checksum of a frame whose payload sum dio__tx took while copying
 * (STK_TX_L4_SUM): the field holds the headers' part. False when the field is not in the
 * first segment (never for the engine's frames). */
static bool finish_l4sum(struct rte_mbuf *head, const struct stk_txmeta *meta, uint32_t sum)
{
    size_t at = (size_t)meta->l2_len + meta->l3_len + 16;
    if (at + 2 > head->data_len || meta->l4_len < 20)
        return false;
    uint8_t *f = rte_pktmbuf_mtod_offset(head, uint8_t *, at);
    uint64_t t = (uint64_t)sum + (uint32_t)(f[0] << 8 | f[1]);
    uint16_t v = stk_csum_finish((uint32_t)((t & 0xffffffffu) + (t >> 32)));
    f[0] = (uint8_t)(v >> 8);
    f[1] = (uint8_t)v;
    return true;
}

/* Copies the engine's frame into an mbuf (a chain only for TSO frames). The engine's
 * buffers are per socket rings that it reuses at once, so a copy is the simple and safe
 * contract; attaching external buffers is a later optimisation. */
int dio__tx(void *io_ctx, const struct stk_iov *iov, int n, const struct stk_txmeta *meta)
{
    struct dio_core *c = io_ctx;
    struct dio_stack *s = c->s;
    if (c->ntx >= DIO_TXBUF) {
        dio__tx_flush(c, 0, true);
        if (c->ntx >= DIO_TXBUF) {
            c->ctr.tx_drop_full++;
            return -ENOBUFS;
        }
    }
    struct rte_mbuf *head = rte_pktmbuf_alloc(c->pool);
    if (!head) {
        c->ctr.tx_drop_nombuf++;
        return -ENOBUFS;
    }
    struct rte_mbuf *seg = head;
    /* STK_TX_L4_SUM: the payload (from sum_from on) is summed while it is copied. */
    bool l4sum = meta->flags & STK_TX_L4_SUM;
    size_t sum_from = l4sum ? (size_t)meta->l2_len + meta->l3_len + meta->l4_len : SIZE_MAX;
    size_t pos = 0;
    uint32_t sum = 0;
    for (int i = 0; i < n; i++) {
        const uint8_t *src = iov[i].base;
        size_t left = iov[i].len;
        while (left) {
            uint16_t room = rte_pktmbuf_tailroom(seg);
            if (room == 0) {
                struct rte_mbuf *next = rte_pktmbuf_alloc(c->pool);
                if (!next || head->nb_segs >= RTE_MBUF_MAX_NB_SEGS - 1) {
                    rte_pktmbuf_free(next);
                    rte_pktmbuf_free(head);
                    c->ctr.tx_drop_nombuf++;
                    return -ENOBUFS;
                }
                seg->next = next;
                head->nb_segs++;
                seg = next;
                room = rte_pktmbuf_tailroom(seg);
            }
            uint16_t k = left < room ? (uint16_t)left : room;
            uint8_t *dst = rte_pktmbuf_mtod_offset(seg, uint8_t *, seg->data_len);
            size_t plain = pos >= sum_from ? 0 : sum_from - pos < k ? sum_from - pos : k;
            memcpy(dst, src, plain);
            if (plain < k)
                sum = stk_csum_copy(sum, dst + plain, src + plain, k - plain,
                                    (pos + plain - sum_from) & 1);
            pos += k;
            seg->data_len = (uint16_t)(seg->data_len + k);
            head->pkt_len += k;
            src += k;
            left -= k;
        }
    }
    if (l4sum && !finish_l4sum(head, meta, sum)) {
        rte_pktmbuf_free(head);
        c->ctr.tx_drop_nombuf++;
        return -ENOBUFS;
    }
    if (meta->flags & (STK_TX_IP_CSUM | STK_TX_TCP_CSUM | STK_TX_TSO)) {
        head->l2_len = meta->l2_len;
        head->l3_len = meta->l3_len;
        head->l4_len = meta->l4_len;
        uint64_t f = RTE_MBUF_F_TX_IPV4;
        if (meta->flags & STK_TX_IP_CSUM)
            f |= RTE_MBUF_F_TX_IP_CKSUM;
        if (meta->flags & STK_TX_TCP_CSUM)
            f |= RTE_MBUF_F_TX_TCP_CKSUM;
        if (meta->flags & STK_TX_TSO) {
            f |= RTE_MBUF_F_TX_TCP_SEG;
            head->tso_segsz = meta->tso_mss;
            c->ctr.tx_tso++;
        }
        head->ol_flags |= f;
    }
    if (unlikely(c->pcap != NULL)) {
        if (l4sum)
            dio__pcap_mbufs(c, &head, 1); /* the frame with its checksum */
        else
            dio__pcap_tx(c, iov, n);
    }
    if (c->ntx == 0)
        c->tx_first_us = dio_now();
    c->txbuf[c->ntx++] = head;
    (void)s;
    return 0;
}

/* Sends what the core holds: on its own TX queue, or through the queue owner's forwarding
 * ring when the device has fewer TX queues than there are cores. Unless forced, a partial
 * burst may wait up to USTACK_TX_FLUSH_US for company. */
void dio__tx_flush(struct dio_core *c, uint64_t now_us, bool force)
{
    struct dio_stack *s = c->s;
    if (c->ntx == 0)
        return;
    if (!force && s->conf.tx_flush_us && c->ntx < DIO_BURST &&
        now_us - c->tx_first_us < s->conf.tx_flush_us)
        return;
    unsigned sent;
    if (c->txq >= 0) {
        uint16_t n = (uint16_t)c->ntx;
        if (s->tx_ol)
            n = rte_eth_tx_prepare(s->port, (uint16_t)c->txq, c->txbuf, n);
        sent = rte_eth_tx_burst(s->port, (uint16_t)c->txq, c->txbuf, n);
        if (n < c->ntx && sent == n) {
            /* A frame the device cannot take as prepared: drop it, or it blocks the rest. */
            rte_pktmbuf_free(c->txbuf[n]);
            c->ctr.tx_drop_full++;
            memmove(&c->txbuf[n], &c->txbuf[n + 1], (c->ntx - n - 1) * sizeof(c->txbuf[0]));
            c->ntx--;
        }
        c->ctr.tx_bursts++;
        c->ctr.tx_pkts += sent;
    } else {
        struct dio_core *owner = &s->cores[c->idx % s->ntxq];
        sent = rte_ring_mp_enqueue_burst(owner->txfwd, (void **)c->txbuf, c->ntx, NULL);
        c->ctr.tx_forwarded += sent;
        atomic_thread_fence(memory_order_seq_cst); /* see steer() in core.c */
        if (sent && atomic_load(&owner->sleeping))
            dio__wake(owner);
    }
    if (sent < c->ntx)
        memmove(c->txbuf, c->txbuf + sent, (c->ntx - sent) * sizeof(c->txbuf[0]));
    c->ntx -= sent;
    if (c->ntx)
        c->tx_first_us = now_us ? now_us : dio_now();
}

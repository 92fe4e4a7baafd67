/* dio_int.h - dpdk_io internals shared by its files. */
#ifndef USTACK_DIO_INT_H
#define USTACK_DIO_INT_H

#include <stdatomic.h>
#include <pthread.h>
#include <stdbool.h>

#include <rte_ethdev.h>
#include <rte_mbuf.h>
#include <rte_ring.h>

#include "dio.h"

#define DIO_BURST      32
#define DIO_TXBUF      128 /* frames a core may hold before a flush must succeed */
#define DIO_STEER_RING 4096
#define DIO_RETA_MAX   512
#define DIO_KEY_LEN    52 /* longest Toeplitz key among common NICs (i40e) */
#define DIO_NSOCKETS   8

struct dio_core {
    struct dio_stack *s;
    unsigned idx, lcore;
    int rxq, txq;             /* this core's queues, or -1 */
    struct rte_mempool *pool; /* on this core's NUMA node */
    struct rte_ring *steer;   /* frames other cores passed to us (multi-producer) */
    struct rte_ring *txfwd;   /* frames other cores ask us to send (when we own a txq) */
    struct rte_ring *rxbl;    /* received frames not yet processed (core.c "Receive backlog") */
    unsigned rxbl_reserve;    /* free mbufs the backlog leaves the pool */
    struct stk_engine *e;
    void *app_data;
    struct rte_mbuf *txbuf[DIO_TXBUF];
    unsigned ntx;
    uint64_t tx_first_us; /* when the oldest frame in txbuf was queued */
    int wake_fd;          /* eventfd: other cores wake us while we sleep */
    int ep_fd;            /* epoll: wake_fd and the RX interrupt, when there is one */
    int rx_sock;          /* the RX queue's kernel socket (AF_XDP, AF_PACKET), or -1 */
    bool rx_intr;         /* a frame ends this core's sleep (interrupt or rx_sock) */
    atomic_int sleeping;
    atomic_int ready; /* 1 up, -1 init failed */
    /* dio_stack_run_on: RUN_IDLE -> RUN_POSTED (requester) -> RUN_RUNNING (core, or back
     * to RUN_IDLE when the requester gives up first) -> RUN_DONE (core) -> RUN_IDLE. */
    atomic_int run_state;
    void (*run_fn)(struct dio_core *c, void *arg);
    void *run_arg;
    struct dio_counters ctr;
    struct dio_pcap_core *pcap; /* USTACK_PCAP's buffer; NULL: no capture */
    char errmsg[160];
} __rte_cache_aligned;

struct dio_stack {
    struct dio_stack_conf sc;
    struct shim_conf conf;
    uint16_t port;
    unsigned nrxq, ntxq;
    bool hw_rss;    /* the device hashes with our key and table */
    bool rx_intr;   /* the device has RX queue interrupts */
    uint64_t tx_ol; /* RTE_ETH_TX_OFFLOAD_* in use */
    uint64_t rx_ol;
    uint32_t tso_max;
    uint16_t mtu;
    uint8_t mac[6];
    uint8_t key[DIO_KEY_LEN];
    unsigned key_len, reta_size;
    uint16_t reta_core[DIO_RETA_MAX]; /* hash bucket -> owning core */
    struct rte_mempool *pools[DIO_NSOCKETS];
    atomic_int stop;
    pthread_mutex_t run_lock; /* one dio_stack_run_on at a time */
    unsigned grace_ms;
    bool port_started, launched;
    char desc[256];
    struct dio_pcap *pcap; /* USTACK_PCAP's file; NULL: no capture */
    uint8_t isn_key[16];   /* the host's (dio_host_isn_key), when isn_key_set */
    bool isn_key_set;
    uint64_t clock_off_us; /* CLOCK_MONOTONIC - dio_now(), for the engines' ISN clock */
    struct dio_core cores[];
};

enum { RUN_IDLE, RUN_POSTED, RUN_RUNNING, RUN_DONE };

/* core.c */
int dio__core_main(void *arg);
/* The TCP buffer memory limit of each engine (USTACK_TCP_MEM or the default share). */
uint64_t dio__tcp_mem(const struct shim_conf *k, unsigned ncores);
unsigned dio__owner(const struct dio_stack *s, uint32_t sip, uint32_t dip, uint16_t sport,
                    uint16_t dport);
/* The same for an IPv6 TCP 4-tuple (addresses in network order). */
unsigned dio__owner6(const struct dio_stack *s, const uint8_t sip[16], const uint8_t dip[16],
                     uint16_t sport, uint16_t dport);

/* The core that handles a received frame p of len bytes (m: its mbuf, for a device's RSS
 * hash, or NULL), or (unsigned)-1 for every core. */
unsigned dio__classify(const struct dio_stack *s, const struct rte_mbuf *m, const uint8_t *p,
                       uint32_t len);

void dio__wake(struct dio_core *c);

/* eal.c: what ustackd appends to the vdev string USTACK_DEV names (a default only where
 * the user set no value of that key): "" or ",key=value". */
const char *dio__vdev_defaults(const char *dev);

/* port.c */
int dio__port_setup(struct dio_stack *s, char *err, size_t errlen);
/* A pktmbuf pool (data room `room`) with objects packed across page boundaries: all of it
 * is inside the UMEM the AF_XDP driver makes of it. NULL (rte_errno) on failure. */
struct rte_mempool *dio__packed_pool_create(const char *name, unsigned n, unsigned room,
                                            int socket);
/* Objects of a pool outside the UMEM that the AF_XDP driver makes of it (0: all inside). */
size_t dio__umem_beyond(struct rte_mempool *mp);
int dio__tx(void *io_ctx, const struct stk_iov *iov, int n, const struct stk_txmeta *meta);
void dio__tx_flush(struct dio_core *c, uint64_t now_us, bool force);

/* pcap.c: USTACK_PCAP. The rx/tx/poll hooks are called only when c->pcap is set. */
struct dio_pcap;
struct dio_pcap_core;
int dio__pcap_open(struct dio_stack *s, char *err, size_t errlen);
void dio__pcap_close(struct dio_stack *s);
int dio__pcap_core_init(struct dio_core *c);
void dio__pcap_core_fini(struct dio_core *c);
/* Received frames, and sent ones whose mbuf holds what the iov lacked (STK_TX_L4_SUM). */
void dio__pcap_mbufs(struct dio_core *c, struct rte_mbuf **pkts, unsigned n);
void dio__pcap_tx(struct dio_core *c, const struct stk_iov *iov, int n);
void dio__pcap_poll(struct dio_core *c, uint64_t now_us, bool idle);
void dio__pcap_flush(struct dio_core *c);

#define dio__err(err, errlen, ...) snprintf((err), (errlen), __VA_ARGS__)

#endif

/*
 * reflect.c - the floor under ustack: a DPDK program that sends every UDP datagram it
 * receives straight back, with no protocol stack at all.
 *
 * It polls one port (any DPDK device: `--vdev net_af_xdp0,iface=X` here) on one lcore and,
 * for each IPv4 UDP frame addressed to --ip, swaps the Ethernet addresses, the IP addresses
 * and the UDP ports and transmits the same mbuf. Swapping both halves of a pair leaves the
 * IP header checksum and the UDP checksum (its pseudo-header sums both addresses) valid, so
 * nothing is recomputed. Everything else is dropped and counted; no ARP: the peer needs a
 * static neighbour entry for --ip (bench/reflect.sh adds one).
 *
 * A request/response client against it (bench/udprr) measures what the device path alone
 * (the kernel's veth and AF_XDP on both crossings, plus DPDK's PMD) costs per round trip;
 * the same client against the kernel's UDP echo and against ustack measures the stacks on
 * top of it. See docs/benchmarks.md "The floor: a raw reflector".
 *
 * Usage: reflect [EAL options] -- --ip A.B.C.D [--seconds S]
 * Prints "reflect: ready" once the port is up, and its counters on exit (SIGTERM, SIGINT,
 * or after --seconds, default 600).
 */
#include <arpa/inet.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <rte_eal.h>
#include <rte_ethdev.h>
#include <rte_mbuf.h>

#define RF_BURST 32
#define RF_RING  1024
#define RF_MBUFS 8191

static volatile sig_atomic_t rf_stop;

static void rf_on_signal(int sig)
{
    (void)sig;
    rf_stop = 1;
}

static double rf_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

struct rf_count {
    uint64_t rx, tx, drop_not_udp, drop_not_ours, drop_tx;
};

/* Turns a frame around in place when it is an IPv4 UDP datagram for ip (network order).
 * Returns false when the frame is not one. */
static bool rf_turn(struct rte_mbuf *m, uint32_t ip, struct rf_count *n)
{
    uint8_t *p = rte_pktmbuf_mtod(m, uint8_t *);
    uint32_t len = rte_pktmbuf_data_len(m);
    if (len < 14 + 20 + 8 || p[12] != 0x08 || p[13] != 0x00) {
        n->drop_not_udp++;
        return false;
    }
    uint8_t *iph = p + 14;
    unsigned ihl = (iph[0] & 0x0fu) * 4u;
    if ((iph[0] >> 4) != 4 || ihl < 20 || len < 14 + ihl + 8 || iph[9] != 17) {
        n->drop_not_udp++;
        return false;
    }
    uint32_t dst;
    memcpy(&dst, iph + 16, 4);
    if (dst != ip) {
        n->drop_not_ours++;
        return false;
    }
    uint8_t t[6];
    memcpy(t, p, 6);
    memcpy(p, p + 6, 6);
    memcpy(p + 6, t, 6);
    memcpy(t, iph + 12, 4);
    memcpy(iph + 12, iph + 16, 4);
    memcpy(iph + 16, t, 4);
    uint8_t *udp = iph + ihl;
    memcpy(t, udp, 2);
    memcpy(udp, udp + 2, 2);
    memcpy(udp + 2, t, 2);
    return true;
}

static int rf_port_up(uint16_t port, struct rte_mempool *mp)
{
    struct rte_eth_conf conf;
    memset(&conf, 0, sizeof(conf));
    int rc = rte_eth_dev_configure(port, 1, 1, &conf);
    uint16_t nrx = RF_RING, ntx = RF_RING;
    if (rc == 0)
        rc = rte_eth_dev_adjust_nb_rx_tx_desc(port, &nrx, &ntx);
    int sock = rte_eth_dev_socket_id(port);
    unsigned socket = sock < 0 ? 0u : (unsigned)sock;
    if (rc == 0)
        rc = rte_eth_rx_queue_setup(port, 0, nrx, socket, NULL, mp);
    if (rc == 0)
        rc = rte_eth_tx_queue_setup(port, 0, ntx, socket, NULL);
    if (rc == 0)
        rc = rte_eth_dev_start(port);
    return rc;
}

int main(int argc, char **argv)
{
    int used = rte_eal_init(argc, argv);
    if (used < 0) {
        fprintf(stderr, "reflect: rte_eal_init failed: %s\n", rte_strerror(rte_errno));
        return 1;
    }
    argc -= used;
    argv += used;
    uint32_t ip = 0;
    double secs = 600;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--ip") == 0 && i + 1 < argc) {
            struct in_addr a;
            if (inet_pton(AF_INET, argv[++i], &a) != 1) {
                fprintf(stderr, "reflect: bad --ip %s\n", argv[i]);
                return 2;
            }
            ip = a.s_addr;
        } else if (strcmp(argv[i], "--seconds") == 0 && i + 1 < argc) {
            secs = atof(argv[++i]);
            if (!(secs > 0 && secs <= 86400)) {
                fprintf(stderr, "reflect: --seconds wants 0 < S <= 86400\n");
                return 2;
            }
        } else {
            fprintf(stderr, "usage: reflect [EAL options] -- --ip A.B.C.D [--seconds S]\n");
            return 2;
        }
    }
    if (ip == 0 || rte_eth_dev_count_avail() != 1) {
        fprintf(stderr, "reflect: needs --ip and exactly one port (%u found)\n",
                (unsigned)rte_eth_dev_count_avail());
        return 2;
    }
    uint16_t port = 0;
    RTE_ETH_FOREACH_DEV(port)
    break;
    struct rte_mempool *mp = rte_pktmbuf_pool_create("reflect", RF_MBUFS, 256, 0,
                                                     RTE_MBUF_DEFAULT_BUF_SIZE, rte_socket_id());
    if (!mp || rf_port_up(port, mp) != 0) {
        fprintf(stderr, "reflect: port %u set-up failed: %s\n", port, rte_strerror(rte_errno));
        return 1;
    }
    signal(SIGTERM, rf_on_signal);
    signal(SIGINT, rf_on_signal);
    printf("reflect: ready\n");
    fflush(stdout);

    struct rf_count n = {0};
    double end = rf_now() + secs;
    uint64_t loops = 0;
    while (!rf_stop) {
        struct rte_mbuf *in[RF_BURST], *out[RF_BURST];
        uint16_t got = rte_eth_rx_burst(port, 0, in, RF_BURST), k = 0;
        n.rx += got;
        for (uint16_t i = 0; i < got; i++) {
            if (rf_turn(in[i], ip, &n))
                out[k++] = in[i];
            else
                rte_pktmbuf_free(in[i]);
        }
        uint16_t sent = k ? rte_eth_tx_burst(port, 0, out, k) : 0;
        n.tx += sent;
        for (uint16_t i = sent; i < k; i++) {
            rte_pktmbuf_free(out[i]);
            n.drop_tx++;
        }
        if ((++loops & 0xffffu) == 0 && rf_now() > end)
            break;
    }
    printf("reflect: rx %llu tx %llu drop_not_udp %llu drop_not_ours %llu drop_tx %llu\n",
           (unsigned long long)n.rx, (unsigned long long)n.tx, (unsigned long long)n.drop_not_udp,
           (unsigned long long)n.drop_not_ours, (unsigned long long)n.drop_tx);
    rte_eth_dev_stop(port);
    rte_eth_dev_close(port);
    rte_eal_cleanup();
    return 0;
}

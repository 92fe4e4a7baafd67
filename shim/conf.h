/*
 * conf.h - ustack's configuration: the USTACK_* environment variables and the file named
 * by USTACK_CONF, parsed and validated once at start-up.
 *
 * Used by ustackd (dpdk_io/) and, later, by libustack.so (preload/), so it must not
 * allocate memory (the interposer may call it while malloc itself is being resolved) and
 * must not depend on DPDK. A variable set in the environment wins over the same name in
 * the USTACK_CONF file. A bad value makes shim_conf_load() fail with one line in err that
 * names the variable, the value and what is accepted, e.g.
 *   "USTACK_IP=10.0.0/24: not an IPv4 address/prefix (expected a.b.c.d/0..32)"
 * A value that came from the file also gets " [from <file>:<line>]" at the end. Every
 * variable is checked, even when USTACK=0, and a variable that is set but empty is an error
 * (unset it to get the default). The echoed value is cut to 64 bytes, control bytes as '?'.
 *
 * The USTACK_CONF file (at most 8192 bytes): one NAME=value per line, blanks around name
 * and value ignored, one pair of matching '...' or "..." around the value dropped (no
 * escapes), blank lines and lines starting with # ignored (no # comments after a value).
 * Every name must be a known USTACK_* variable other than USTACK_CONF, at most once.
 *
 * Unknown names: shim_conf_load() also walks environ and fails on any USTACK_* name it does
 * not know (catching typos such as USTACK_CORE), except USTACK_TEST_*, which are test
 * harness knobs. shim_conf_load_from() cannot enumerate its lookup, so there unknown names
 * are only caught in the file.
 */
#ifndef USTACK_SHIM_CONF_H
#define USTACK_SHIM_CONF_H

#include <stddef.h>
#include <stdint.h>

#define SHIM_MAX_CORES 64

enum shim_log_level { SHIM_LOG_ERROR = 0, SHIM_LOG_WARN, SHIM_LOG_INFO, SHIM_LOG_DEBUG };

struct shim_conf {
    int enabled;    /* USTACK: 1 (default) or 0 */
    int udp;        /* USTACK_UDP: 1 (default): AF_INET UDP sockets on ustack; 0: the kernel's */
    int inet6;      /* USTACK_INET6: 1 (default): AF_INET6 TCP (and UDP, with USTACK_UDP)
                       sockets on ustack; 0: the kernel's */
    char dev[256];  /* USTACK_DEV: PCI address or vdev string; "" = not set */
    uint32_t ip;    /* USTACK_IP a.b.c.d/prefix, host byte order; 0 = not set */
    uint8_t prefix; /*   the prefix length (0..32) */
    uint32_t gw;    /* USTACK_GW a.b.c.d, host order; 0 = none. Must be on-subnet. */
    /* USTACK_IP6 addr/prefix (1..128): an optional global IPv6 address, network byte
     * order, all zero when not set. Not link-local (fe80::/64 is always derived from the
     * MAC), multicast, unspecified, loopback or IPv4-mapped. */
    uint8_t ip6[16];
    uint8_t ip6_prefix;
    /* USTACK_GW6: the IPv6 gateway, all zero = none. Link-local, or inside USTACK_IP6's
     * prefix (and not USTACK_IP6 itself). */
    uint8_t gw6[16];
    uint8_t mac[6]; /* USTACK_MAC xx:xx:xx:xx:xx:xx; mac_set says whether given */
    int mac_set;
    /* USTACK_CORES "0", "0,1", "0-3", "0,2-3": ascending, no duplicates, each an allowed
     * CPU. Default "0", or the lowest allowed CPU if the affinity mask excludes CPU 0. */
    unsigned ncores;
    unsigned cores[SHIM_MAX_CORES];
    char eal[512];           /* USTACK_EAL: extra EAL arguments, split on blanks by the user */
    int log_level;           /* USTACK_LOG error|warn|info|debug or 0..3; default warn */
    unsigned mtu;            /* USTACK_MTU 576..9000; default 1500 */
    unsigned idle_spin_us;   /* USTACK_IDLE_SPIN_US 0..1000000: busy-poll this long after
                                the last work before sleeping; default 50 */
    unsigned idle_yield;     /* USTACK_IDLE_YIELD 0|1: while busy-polling without work, give
                                the CPU to other runnable threads (sched_yield); default 1 */
    unsigned idle_sleep_us;  /* USTACK_IDLE_SLEEP_US 10..100000: longest sleep while idle
                                (when the device has no RX interrupt); default 2000 */
    unsigned stackd_idle_ms; /* USTACK_STACKD_IDLE_MS 0..3600000: how long a spawned ustackd
                                waits with no client for the next one; default 500 */
    unsigned tx_flush_us;    /* USTACK_TX_FLUSH_US 0..1000: longest a frame waits in a
                                partial TX burst; default 0 (flush every loop) */
    unsigned ack_piggyback;  /* USTACK_ACK_PIGGYBACK 0|1: an ACK the peer does not need at
                                once (the first read's window, a FIN's) waits for our next
                                segment or the application's wait, and a lone segment's
                                delayed ACK goes at that wait (stk__ack_owe); 0: neither
                                (the engine gets no app_idle); default 1 */
    unsigned sndbuf;         /* USTACK_SNDBUF bytes 4096..64 MiB, or with a K/M suffix
                                (x1024, x1048576); 0 = engine default */
    unsigned rcvbuf;         /* USTACK_RCVBUF likewise; 0 = engine default */
    unsigned rcvbuf_max;     /* USTACK_RCVBUF_MAX likewise: the autotuning ceiling; 0 = engine
                                default (4 MiB); at most USTACK_RCVBUF: no autotuning */
    unsigned sndbuf_max;     /* USTACK_SNDBUF_MAX likewise, for send buffers */
    unsigned tcp_mem;        /* USTACK_TCP_MEM bytes 1 MiB..4095 MiB (K/M suffix): each stack
                                core's TCP buffer memory past which autotuning grows none;
                                0 = 3/32 of the machine's memory over the stack cores */
    unsigned max_socks;      /* USTACK_MAX_SOCKS per core 16..16777216; 0 = engine default */
    int cc;                  /* USTACK_CC newreno|cubic -> 0 / 1 (enum stk_cc_algo) */
    unsigned tcp_retries;    /* USTACK_TCP_RETRIES 1..255: unanswered retransmissions (and
                                zero-window probes) before a connection is dropped, as
                                Linux's tcp_retries2; 0 = engine default (15) */
    unsigned rto_max_ms;     /* USTACK_TCP_RTO_MAX_MS 1000..120000: ceiling of the backed-off
                                retransmission and probe timers; 0 = engine default (60 s) */
    unsigned ipfrag_mem;     /* USTACK_IPFRAG_MEM bytes per core held by IPv4 reassembly,
                                64K..1G (K/M suffix); 0 = engine default (4 MiB) */
    unsigned ipfrag_time_s;  /* USTACK_IPFRAG_TIME 1..3600: seconds a datagram waits for its
                                fragments; 0 = engine default (30) */
    unsigned mbufs;          /* USTACK_MBUFS per core 1024..1048576; default 16384 */
    int huge;                /* USTACK_HUGE auto|0|1: -1 auto (use hugepages if reserved) */
    unsigned shm_socks;      /* USTACK_SHM_SOCKS 16..1048576: socket slots in the shared
                                region; default 16384 */
    unsigned shm_ring;       /* USTACK_SHM_RING 4096..16M, a power of two: bytes per socket
                                ring in the shared region; default 65536 */
    unsigned spare_fds;      /* USTACK_SPARE_FDS 0..256: closed sockets' eventfds a process
                                keeps for its next sockets; default 64 (libustack.so only) */
    char stackd[256];        /* USTACK_STACKD: path of ustackd; "" = next to libustack.so */
    char name[33];           /* USTACK_NAME: instance name, ustackd's EAL file prefix is
                                "ustack-<name>" (1..32 of [A-Za-z0-9_.-], a letter among
                                them); "" = "ustack-<pid>" */
    char pcap[256];          /* USTACK_PCAP: ustackd writes every frame it receives and sends
                                to this pcap file (truncated at start); "" = no capture */
    unsigned pcap_max;       /* USTACK_PCAP_MAX: the capture file's size bound, 4096..4095M
                                bytes (K/M suffix); default 64M. Frames beyond it are counted
                                (pcap_dropped), not written. */
};

/* Fills c with the defaults, then the USTACK_CONF file (if named), then the environment.
 * Returns 0, or -EINVAL / -ENOENT (USTACK_CONF names a file that cannot be read) with a
 * one-line reason in err (err may be NULL; a short err is truncated, always terminated).
 * On failure *c is partly filled and must not be used. */
int shim_conf_load(struct shim_conf *c, char *err, size_t errlen);

/* The same with a caller-supplied lookup instead of getenv() (tests); lookup returns NULL
 * for an unset name. */
typedef const char *(*shim_conf_lookup_fn)(void *ctx, const char *name);
int shim_conf_load_from(struct shim_conf *c, shim_conf_lookup_fn lookup, void *ctx, char *err,
                        size_t errlen);

/* An IPv6 address (network order) in its RFC 5952 text form into buf (>= 46 bytes). */
const char *shim_ip6_str(const uint8_t a[16], char *buf);

/* "a.b.c.d" from a host-order address into buf (>= 16 bytes); returns buf. */
const char *shim_ip_str(uint32_t ip, char *buf);

#endif

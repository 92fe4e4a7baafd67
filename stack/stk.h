/*
 * stk.h - the public API of the ustack protocol engine.
 *
 * One engine instance serves one core. It has no threads, no clock, no global state and
 * makes no system calls: the caller passes the time into every entry point, hands received
 * frames to stk_input(), and receives frames to transmit through the packet I/O callbacks
 * in struct stk_config. stk_next_timer() says when the engine next needs stk_poll().
 *
 * All functions return 0 (or a count) on success and a negative errno value on failure.
 * Addresses and ports in this API are in host byte order.
 */
#ifndef USTACK_STK_H
#define USTACK_STK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

struct stk_engine;

/* Time: microseconds from an arbitrary, monotonic origin chosen by the caller. */
typedef uint64_t stk_time_t;
#define STK_US_PER_MS 1000ull
#define STK_US_PER_S  1000000ull

/* A piece of a frame handed to the packet I/O layer for transmission. */
struct stk_iov {
    const void *base;
    size_t len;
};

/* Transmit metadata: what the device may finish for us (offloads). */
enum {
    STK_TX_IP_CSUM = 1u << 0,  /* IPv4 header checksum left for the device */
    STK_TX_TCP_CSUM = 1u << 1, /* TCP checksum holds the pseudo-header sum only */
    STK_TX_TSO = 1u << 2,      /* payload larger than one segment: device segments it */
    /* The TCP checksum field holds the folded sum of the pseudo-header and the TCP header
     * (with the field zero); the I/O layer adds the payload's sum (the bytes from l2_len +
     * l3_len + l4_len on) while it copies them, and stores stk_csum_finish() of the total
     * there. In tx_offloads: the I/O layer can; never with STK_TX_TCP_CSUM or STK_TX_TSO. */
    STK_TX_L4_SUM = 1u << 3,
};

struct stk_txmeta {
    uint32_t flags;   /* STK_TX_* */
    uint16_t l2_len;  /* Ethernet header bytes */
    uint16_t l3_len;  /* IPv4 header bytes */
    uint16_t l4_len;  /* TCP header bytes incl. options (0 when not TCP) */
    uint16_t tso_mss; /* payload bytes per segment when STK_TX_TSO */
    uint8_t tos;      /* IPv4 type of service / IPv6 traffic class to send (IP_TOS, IPV6_TCLASS) */
};

/* Receive flags: checks the device already did. */
enum {
    STK_RX_IP_CSUM_OK = 1u << 0,
    STK_RX_L4_CSUM_OK = 1u << 1,
};

/* Congestion control algorithms. */
enum stk_cc_algo {
    STK_CC_NEWRENO = 0,
    STK_CC_CUBIC = 1,
};

/* Readiness events, reported by stk_events() and the on_event callback. */
enum {
    STK_EV_IN = 1u << 0,    /* data, EOF, or a connection to accept */
    STK_EV_OUT = 1u << 1,   /* send space, or a connect that finished */
    STK_EV_ERR = 1u << 2,   /* a pending error (see STK_SO_ERROR) */
    STK_EV_HUP = 1u << 3,   /* both directions are shut */
    STK_EV_RDHUP = 1u << 4, /* the peer sent FIN */
};

struct stk_config {
    uint8_t mac[6];
    uint32_t ip;      /* our address */
    uint8_t prefix;   /* subnet prefix length */
    uint32_t gateway; /* 0: none; off-subnet destinations are then unreachable */
    uint16_t mtu;     /* IP MTU; 0 means 1500 */

    /* 16 random bytes chosen at start (ISNs per RFC 6528, SYN cookies). */
    uint8_t secret[16];
    /* Added to the engine's clock for the ISN clock (RFC 6528's M) and the TCP timestamp
     * clock, with isn_key: stacks that share both (ustackd's instances on one host: the
     * key of /run/ustack, CLOCK_MONOTONIC) give a 4-tuple ISNs and timestamps that keep
     * growing from one instance to the next, as one kernel's do across its programs, so a
     * peer's TIME-WAIT takes the new instance's SYN as newer (RFC 6191). 0 and a zero key:
     * the engine clock and secret. */
    uint64_t clock_off_us;
    uint8_t isn_key[16];
    bool isn_key_set;

    /* Packet I/O. tx() must consume (copy or reference until sent) the frame
     * described by iov[0..n) before returning; it returns 0 or -ENOBUFS. */
    void *io_ctx;
    int (*tx)(void *io_ctx, const struct stk_iov *iov, int n, const struct stk_txmeta *meta);

    /* Offloads the device performs (STK_TX_* flags the engine may use). */
    uint32_t tx_offloads;
    uint32_t tso_max; /* largest TSO payload; 0 = 65000 */

    /* Memory for buffers and control blocks; NULL means malloc/free. */
    void *mem_ctx;
    void *(*alloc)(void *mem_ctx, size_t size);
    void (*free)(void *mem_ctx, void *p, size_t size);

    /* Called when a socket's readiness may have changed (never re-entrantly into tx). */
    void *ev_ctx;
    void (*on_event)(void *ev_ctx, int sd, void *user, uint32_t events);

    /* Optional: has the application taken every byte delivered on socket sd and given none
     * to send, so that it may be waiting for the peer? 0: no; 1: yes; 2: yes, and it is
     * waiting to read (a thread blocked in a read, or a poll for input, on it). Asked while
     * an ACK is held back (an opened window, or a FIN's: stk__ack_owe in tcp_conn.c). NULL:
     * the engine cannot tell, and sends such ACKs at once. */
    int (*app_idle)(void *ev_ctx, int sd, void *user);

    /* For active opens: may this local port be used for that 4-tuple (e.g. does its return
     * traffic hash to this core)? NULL means any port. */
    void *port_ctx;
    int (*port_ok)(void *port_ctx, uint32_t lip, uint16_t lport, uint32_t rip, uint16_t rport);
    /* The same for IPv6 (addresses in network order); NULL means any port. */
    int (*port_ok6)(void *port_ctx, const uint8_t lip[16], uint16_t lport, const uint8_t rip[16],
                    uint16_t rport);
    uint16_t port_lo, port_hi; /* ephemeral range; 0,0 means 32768..60999 */

    /* Tuning; 0 selects the default shown. */
    uint32_t max_socks;            /* 65536 */
    uint32_t sndbuf;               /* 256 KiB per socket, rounded up to a power of two */
    uint32_t rcvbuf;               /* 256 KiB per socket, rounded up to a power of two */
    uint32_t rcvbuf_max;           /* 4 MiB: receive buffers grow up to this (autotuning,
                                      as Linux's tcp_rmem[2]) unless SO_RCVBUF was set;
                                      rcvbuf or less: no autotuning */
    uint32_t sndbuf_max;           /* 4 MiB: send buffers grow up to this while the
                                      congestion window outgrows them (Linux's
                                      tcp_wmem[2]) unless SO_SNDBUF was set */
    uint64_t tcp_mem_max;          /* no limit: once the engine's TCP socket buffers
                                      (tcp_buf_bytes) would pass this many bytes,
                                      autotuning grows no buffer (Linux's tcp_mem
                                      pressure); the sizes connections start with and
                                      SO_SNDBUF/SO_RCVBUF are not limited */
    uint32_t rto_min_us;           /* 200 ms (RFC 6298 says 1 s; Linux uses 200 ms) */
    uint32_t rto_max_us;           /* 60 s */
    uint32_t rto_init_us;          /* 1 s */
    uint32_t delack_us;            /* 40 ms */
    uint32_t msl_us;               /* 30 s; TIME_WAIT lasts 2 MSL */
    uint32_t syn_retries;          /* 6 */
    uint32_t data_retries;         /* 15 */
    uint32_t arp_timeout_us;       /* 60 s cache lifetime */
    uint32_t challenge_ack_per_s;  /* 1000: RFC 5961 challenge-ACK rate limit */
    enum stk_cc_algo cc;           /* default algorithm for new connections */
    uint8_t no_sack, no_ts, no_ws; /* turn options off (tests, interop) */

    /* Learn from ARP (and IPv6 neighbour solicitations) but never answer requests or
     * solicitations, nor announce: for every engine but one when several engines (cores)
     * share an address and all see the same ARP and neighbour discovery frames. */
    uint8_t arp_passive;

    /* IPv6 (ip6.c, nd.c). The link-local address fe80::/64 with the modified EUI-64
     * interface identifier of mac (RFC 4291 appendix A) is always ours when mtu >= 1280
     * (RFC 8200's minimum link MTU; below it IPv6 is off). ip6 is an optional global
     * address (all zero: none) on the on-link prefix ip6/ip6_prefix (1..128); gateway6 the
     * next hop for other destinations (all zero: none; link-local or on-prefix). Addresses
     * in network byte order. Router advertisements are ignored: the gateway is static. */
    uint8_t ip6[16];
    uint8_t ip6_prefix;
    uint8_t gateway6[16];
    uint32_t nd_reachable_us; /* 30 s: RFC 4861 REACHABLE_TIME (fixed, not randomised) */
    /* IPv4 reassembly: memory for fragments held (4 MiB, Linux's ipfrag_high_thresh),
     * datagrams in progress (1024), and how long one waits for its fragments (30 s, Linux's
     * ipfrag_time). */
    uint32_t ipfrag_mem;
    uint32_t ipfrag_max;
    uint32_t ipfrag_time_us;
    /* Several engines: called with a reassembled TCP or UDP datagram (IPv4 header first);
     * returns nonzero when it took (copied) it for the engine that owns its ports, which
     * gets it through stk_input_ip(). NULL: every datagram is processed here. */
    void *steer_ctx;
    int (*steer_ip)(void *steer_ctx, const void *ip, size_t len);
    /* UDP; 0 selects the default shown. */
    uint32_t udp_rcvbuf;         /* 212992 bytes (Linux's rmem_default) */
    uint32_t udp_sndbuf;         /* 212992 bytes (wmem_default); reported, sends are immediate */
    uint32_t icmp_unreach_per_s; /* 1000: ICMP port unreachables sent per second, burst 50 */
};

/* Counters. Every drop has a reason. */
/* clang-format off */
#define STK_COUNTERS(X) \
    X(eth_in) \
    X(eth_out) \
    X(eth_drop_short) \
    X(eth_drop_type) \
    X(eth_drop_dst) \
    X(arp_in) \
    X(arp_out) \
    X(arp_drop_bad) \
    X(arp_queue_drop) \
    X(arp_requests) \
    X(arp_replies) \
    X(ip_in) \
    X(ip_out) \
    X(ip_drop_hdr) \
    X(ip_drop_csum) \
    X(ip_drop_len) \
    X(ip_drop_frag) \
    X(ip_drop_opts) \
    X(ip_drop_dst) \
    X(ip_drop_proto) \
    X(ip_drop_noroute) \
    X(ip_frag_in) \
    X(ip_reasm_ok) \
    X(ip_reasm_timeout) \
    X(ip_reasm_timxceed) \
    X(ip_reasm_dup) \
    X(ip_reasm_drop_mem) \
    X(ip_reasm_drop_overlap) \
    X(ip_reasm_drop_bad) \
    X(ip_reasm_handoff) \
    X(ip_frag_ok) \
    X(ip_frag_fails) \
    X(ip_frag_creates) \
    X(icmp_in) \
    X(icmp_echo_replies) \
    X(icmp_drop) \
    X(tcp_in) \
    X(tcp_out) \
    X(tcp_bytes_in) \
    X(tcp_bytes_out) \
    X(tcp_retrans) \
    X(tcp_retrans_bytes) \
    X(tcp_fast_retrans) \
    X(tcp_rto) \
    X(tcp_tlp_probes) \
    X(tcp_tlp_recoveries) \
    X(tcp_drop_csum) \
    X(tcp_drop_hdr) \
    X(tcp_drop_opts) \
    X(tcp_drop_paws) \
    X(tcp_drop_outwin) \
    X(tcp_drop_ack) \
    X(tcp_drop_ooo_full) \
    X(tcp_drop_rcvbuf) \
    X(tcp_rcvbuf_grown) \
    X(tcp_sndbuf_grown) \
    X(tcp_mem_pressure) \
    X(tcp_buf_bytes) \
    X(tcp_rst_in) \
    X(tcp_rst_out) \
    X(tcp_challenge_acks) \
    X(tcp_challenge_limited) \
    X(tcp_syn_in) \
    X(tcp_syncookies_sent) \
    X(tcp_syncookies_ok) \
    X(tcp_syncookies_bad) \
    X(tcp_syncookies_child_dropped) \
    X(tcp_listen_overflow) \
    X(tcp_active_opens) \
    X(tcp_passive_opens) \
    X(tcp_conn_timeouts) \
    X(tcp_keepalive_drops) \
    X(tcp_stop_aborts) \
    X(tcp_ooo_segs) \
    X(tcp_dup_segs) \
    X(tcp_zwp) \
    X(tcp_tw_reuse) \
    X(tcp_nomem) \
    X(tcp_icmp_err_in) \
    X(tcp_icmp_nosock) \
    X(tcp_icmp_outwin) \
    X(tcp_icmp_hard) \
    X(tcp_icmp_soft) \
    X(tcp_rto_reverts) \
    X(tcp_pmtu_updates) \
    X(tcp_pmtu_ignored) \
    X(udp_in) \
    X(udp_out) \
    X(udp_bytes_in) \
    X(udp_bytes_out) \
    X(udp_bcast_in) \
    X(udp_drop_hdr) \
    X(udp_drop_len) \
    X(udp_drop_csum) \
    X(udp6_drop_zero_csum) \
    X(udp_drop_rcvbuf) \
    X(udp_drop_shut) \
    X(udp_noport) \
    X(udp_nomem) \
    X(udp_send_fail) \
    X(udp_icmp_unreach_out) \
    X(udp_icmp_unreach_limited) \
    X(udp_icmp_err_in) \
    X(tx_fail) \
    X(ip6_in) \
    X(ip6_out) \
    X(ip6_drop_hdr) \
    X(ip6_drop_len) \
    X(ip6_drop_src) \
    X(ip6_drop_dst) \
    X(ip6_drop_exthdr) \
    X(ip6_drop_opt) \
    X(ip6_drop_rh) \
    X(ip6_drop_frag) \
    X(ip6_frag_in) \
    X(ip6_reasm_ok) \
    X(ip6_reasm_timeout) \
    X(ip6_reasm_timxceed) \
    X(ip6_reasm_dup) \
    X(ip6_reasm_drop_mem) \
    X(ip6_reasm_drop_overlap) \
    X(ip6_reasm_drop_bad) \
    X(ip6_reasm_handoff) \
    X(ip6_frag_ok) \
    X(ip6_frag_creates) \
    X(ip6_frag_fails) \
    X(ip6_drop_proto) \
    X(ip6_drop_noroute) \
    X(icmp6_in) \
    X(icmp6_drop) \
    X(icmp6_echo_replies) \
    X(icmp6_errors_in) \
    X(icmp6_errors_out) \
    X(icmp6_errors_limited) \
    X(icmp6_ignored) \
    X(nd_ns_in) \
    X(nd_na_in) \
    X(nd_ns_out) \
    X(nd_na_out) \
    X(nd_drop_bad) \
    X(nd_queue_drop) \
    X(nd_resolve_fail)
/* clang-format on */

struct stk_counters {
#define STK_CTR_FIELD(n) uint64_t n;
    STK_COUNTERS(STK_CTR_FIELD)
#undef STK_CTR_FIELD
    uint32_t conns_by_state[11]; /* indexed by enum stk_tcp_state */
};

enum stk_tcp_state {
    STK_TCP_CLOSED = 0,
    STK_TCP_LISTEN,
    STK_TCP_SYN_SENT,
    STK_TCP_SYN_RECEIVED,
    STK_TCP_ESTABLISHED,
    STK_TCP_FIN_WAIT_1,
    STK_TCP_FIN_WAIT_2,
    STK_TCP_CLOSE_WAIT,
    STK_TCP_CLOSING,
    STK_TCP_LAST_ACK,
    STK_TCP_TIME_WAIT,
};
const char *stk_state_name(enum stk_tcp_state s);

/* For an I/O layer completing STK_TX_L4_SUM: copies len bytes from src to dst and returns
 * sum plus their Internet-checksum sum (RFC 1071); odd says the piece starts at an odd
 * offset of the summed data. Start from the field's value, read big-endian. */
uint32_t stk_csum_copy(uint32_t sum, void *dst, const void *src, size_t len, bool odd);
/* The value to store in the checksum field: the folded sum, complemented. */
uint16_t stk_csum_finish(uint32_t sum);

/* Engine life cycle. */
int stk_engine_create(const struct stk_config *cfg, stk_time_t now, struct stk_engine **out);
void stk_engine_destroy(struct stk_engine *e);
/* A received Ethernet frame. The engine does not keep the pointer. */
void stk_input(struct stk_engine *e, stk_time_t now, const void *frame, size_t len,
               uint32_t rx_flags);
/* A whole IPv4 datagram, or a reassembled IPv6 packet, without an Ethernet header, as
 * stk_config.steer_ip handed it to this engine's owner (told apart by the version). */
void stk_input_ip(struct stk_engine *e, stk_time_t now, const void *ip, size_t len,
                  uint32_t rx_flags);
/* One receive burst: the frames given to stk_input()/stk_input_ip() between stk_rx_begin()
 * and stk_rx_end() arrived together. The ACKs their in-order data calls for are coalesced
 * into one per connection, sent by stk_rx_end() (at most STK_ACK_STRETCH bytes per ACK), as
 * GRO gives a kernel receiver one ACK per aggregated burst. Out-of-order data, a filled hole,
 * a FIN and every other segment that wants an immediate answer still get it at once. Without
 * the two calls every frame is a burst of its own. */
void stk_rx_begin(struct stk_engine *e);
void stk_rx_end(struct stk_engine *e, stk_time_t now);
#define STK_ACK_STRETCH 65536u
/* Defaults of stk_config's sndbuf/rcvbuf and of their autotuning ceilings. */
#define STK_BUF_DEFAULT  (256u * 1024)
#define STK_BUF_AUTO_MAX (4u << 20)
/* Run expired timers and pending output. */
void stk_poll(struct stk_engine *e, stk_time_t now);
/* When stk_poll() is next needed (absolute time), or UINT64_MAX if never. */
stk_time_t stk_next_timer(const struct stk_engine *e);
const struct stk_counters *stk_counters(const struct stk_engine *e);
/* Send a gratuitous ARP (also done by stk_engine_create). */
void stk_announce(struct stk_engine *e, stk_time_t now);

/* Sockets (TCP). sd is a small integer owned by the engine.
 *
 * An address is IPv4 (family STK_AF_INET, the value of a zeroed struct: ip in host order)
 * or IPv6 (STK_AF_INET6: ip6 in network order, scope the interface of a link-local
 * address, which ustack has one of). The engine never sees a v4-mapped IPv6 address
 * (::ffff:a.b.c.d): the caller turns it into STK_AF_INET both ways. An engine that does not
 * serve a family answers -EAFNOSUPPORT. */
enum stk_family { STK_AF_INET = 0, STK_AF_INET6 = 1 };

struct stk_sockaddr {
    uint32_t ip;     /* STK_AF_INET, host order */
    uint16_t port;   /* host order */
    uint8_t family;  /* enum stk_family */
    uint8_t ip6[16]; /* STK_AF_INET6, network order */
    uint32_t scope;  /* STK_AF_INET6 link-local: interface index (0 = ours) */
};

enum {
    STK_MSG_PEEK = 1u << 0,
    STK_MSG_MORE = 1u << 1,    /* more data follows: hold a partial segment */
    STK_MSG_WAITALL = 1u << 2, /* accepted for the shim; the engine never blocks */
};

enum stk_shut { STK_SHUT_RD = 0, STK_SHUT_WR = 1, STK_SHUT_RDWR = 2 };

enum stk_sockopt {
    STK_SO_ERROR = 1,     /* get: pending error as a positive errno, then cleared */
    STK_SO_REUSEADDR,     /* int bool */
    STK_SO_KEEPALIVE,     /* int bool */
    STK_SO_LINGER,        /* -1 = off, else seconds; 0 makes close() abort with RST */
    STK_SO_SNDBUF,        /* bytes, before connect/listen */
    STK_SO_RCVBUF,        /* bytes, before connect/listen */
    STK_TCP_NODELAY,      /* int bool */
    STK_TCP_CORK,         /* int bool */
    STK_TCP_KEEPIDLE,     /* seconds */
    STK_TCP_KEEPINTVL,    /* seconds */
    STK_TCP_KEEPCNT,      /* probes */
    STK_TCP_MAXSEG,       /* get: send MSS; set: clamp before connect */
    STK_TCP_CONGESTION,   /* enum stk_cc_algo */
    STK_SO_STATE,         /* get: enum stk_tcp_state */
    STK_SO_NREAD,         /* get: bytes readable (FIONREAD) */
    STK_SO_NWRITE,        /* get: bytes not yet acknowledged (SIOCOUTQ) */
    STK_SO_SNDSPACE,      /* get: bytes send() would accept now */
    STK_TCP_DEFER_ACCEPT, /* seconds: accept() returns only once data arrived */
    STK_SO_BROADCAST,     /* UDP: int bool, may send to a broadcast address */
    STK_IPV6_V6ONLY,      /* int bool, before bind: a socket bound to the IPv6 wildcard
                             (::) also serves IPv4 unless set (ipv6(7)); default 0 */
    STK_TCP_USER_TIMEOUT, /* ms (>= 0; 0: the retry counts decide): how long sent data may
                             stay unacknowledged, or wait on a zero window, before the
                             connection fails with ETIMEDOUT (RFC 5482, tcp(7)) */
    STK_IP_TOS,           /* 0..255: the IPv4 TOS byte of the connection's segments (IP_TOS;
                             the two ECN bits are kept clear, as Linux for TCP) */
    STK_IPV6_TCLASS,      /* 0..255: the IPv6 traffic class (IPV6_TCLASS; ECN bits clear) */
    STK_TCP_SYNCNT,       /* 1..127: SYN (or a listener's SYN-ACK) retransmissions before the
                             handshake fails with ETIMEDOUT (TCP_SYNCNT; default syn_retries) */
    STK_TCP_QUICKACK,     /* set only: nonzero sends at once an ACK being delayed or owed
                             (TCP_QUICKACK, tcp(7)); no mode is kept, 0 changes nothing */
    STK_SO_REUSEPORT,     /* set: 0 off, else a group key (ustackd: the owner's uid + 1).
                             Sockets with the same key may bind and listen on one address
                             and port; each connection goes to one listener of the group,
                             chosen by a hash of its addresses and ports (SO_REUSEPORT,
                             socket(7)). get: int bool */
    STK_SOCKOPT_END,      /* one past the last option */
};

struct stk_tcp_info {
    uint8_t state, ca_state, retransmits, backoff;
    uint8_t snd_wscale, rcv_wscale, options; /* options: 1 TS, 2 SACK, 4 WS */
    uint32_t rto_us, rtt_us, rttvar_us;
    uint32_t snd_mss, rcv_mss;
    uint32_t snd_cwnd, snd_ssthresh; /* bytes */
    uint32_t snd_wnd, rcv_wnd;
    uint32_t unacked, sacked, lost, retrans; /* bytes */
    uint64_t total_retrans, bytes_acked, bytes_received, segs_in, segs_out;
};

int stk_socket(struct stk_engine *e, void *user);
int stk_bind(struct stk_engine *e, int sd, const struct stk_sockaddr *addr);
int stk_listen(struct stk_engine *e, int sd, int backlog);
/* Returns a new sd (with user set to user) or -EAGAIN; *peer filled when non-NULL. */
int stk_accept(struct stk_engine *e, stk_time_t now, int sd, void *user, struct stk_sockaddr *peer);
/* Starts the handshake: -EINPROGRESS on success. */
int stk_connect(struct stk_engine *e, stk_time_t now, int sd, const struct stk_sockaddr *to);
ssize_t stk_send(struct stk_engine *e, stk_time_t now, int sd, const void *buf, size_t len,
                 uint32_t flags);
ssize_t stk_recv(struct stk_engine *e, stk_time_t now, int sd, void *buf, size_t len,
                 uint32_t flags);
/* Zero-copy receive: up to two pieces of readable data; then consume what was used. */
int stk_recv_peek(struct stk_engine *e, int sd, struct stk_iov iov[2]);
int stk_recv_consume(struct stk_engine *e, stk_time_t now, int sd, size_t len);
int stk_shutdown(struct stk_engine *e, stk_time_t now, int sd, enum stk_shut how);
/* Releases sd. The connection finishes (or aborts, with linger 0) in the background. */
int stk_close(struct stk_engine *e, stk_time_t now, int sd);
/* Sends RST and releases sd. */
int stk_abort(struct stk_engine *e, stk_time_t now, int sd);
/* The engine's owner stops for good: every connection still in its peer's conversation
 * (handshakes, ESTABLISHED, CLOSE_WAIT, FIN_WAIT_1, FIN_WAIT_2, CLOSING, LAST_ACK) is reset,
 * so that its peer learns it rather than waiting for ever (tcp_stop_aborts counts them);
 * TIME_WAIT and listeners are left. Returns the count. */
unsigned stk_abort_all(struct stk_engine *e, stk_time_t now);
/* Connections stk_abort_all would reset (the owner waits for them to finish first). */
unsigned stk_delivering(const struct stk_counters *k);
int stk_setopt(struct stk_engine *e, stk_time_t now, int sd, enum stk_sockopt opt, int val);
int stk_getopt(struct stk_engine *e, int sd, enum stk_sockopt opt, int *val);
uint32_t stk_events(struct stk_engine *e, int sd);
int stk_getsockname(struct stk_engine *e, int sd, struct stk_sockaddr *addr);
int stk_getpeername(struct stk_engine *e, int sd, struct stk_sockaddr *addr);
int stk_tcp_info(struct stk_engine *e, int sd, struct stk_tcp_info *info);
void *stk_user(struct stk_engine *e, int sd);

/* Sockets (UDP over IPv4). Their ids are a space of their own, apart from TCP's: the
 * on_event callback reports both kinds, and the caller tells them apart by the user pointer
 * it gave. Datagrams are kept whole: one send is one datagram, one receive takes one.
 *
 * Errors follow Linux's udp(7): sendto() without an address on an unconnected socket
 * -EDESTADDRREQ, to port 0 -EINVAL, to a broadcast address without STK_SO_BROADCAST -EACCES,
 * to an address ustack cannot reach -ENETUNREACH, a payload above 65507 bytes -EMSGSIZE
 * (above the MTU it goes out as IPv4 fragments when the engine has them). An ICMP port (or
 * protocol) unreachable that answers a connected socket's datagram becomes ECONNREFUSED
 * (ENOPROTOOPT), reported once by the next send or receive call (or STK_SO_ERROR). */
struct stk_udp_meta {
    struct stk_sockaddr from; /* the sender */
    uint32_t dst;             /* the local address it was sent to (ours, or a broadcast) */
};

int stk_udp_socket(struct stk_engine *e, void *user);
/* Port 0 picks an ephemeral port. Two sockets may share a port only when both set
 * STK_SO_REUSEADDR before binding (-EADDRINUSE otherwise). */
int stk_udp_bind(struct stk_engine *e, int sd, const struct stk_sockaddr *addr);
/* Sets the default destination and the only source datagrams are accepted from (binding an
 * ephemeral port first if needed); to == NULL dissolves it (AF_UNSPEC), releasing a port
 * that was bound automatically. */
int stk_udp_connect(struct stk_engine *e, stk_time_t now, int sd, const struct stk_sockaddr *to);
/* Sends one datagram made of iov[0..n) (n <= 8) to *to, or to the connected peer when to is
 * NULL. Binds an ephemeral port first if needed. Returns the payload length or -errno. */
ssize_t stk_udp_sendto(struct stk_engine *e, stk_time_t now, int sd, const struct stk_iov *iov,
                       int n, const struct stk_sockaddr *to);
/* Takes the next datagram (STK_MSG_PEEK leaves it): copies up to len bytes, the rest is
 * discarded; returns the datagram's full length (as MSG_TRUNC asks), -EAGAIN when none is
 * queued, 0 when none is queued and the read side is shut. meta may be NULL. */
ssize_t stk_udp_recvfrom(struct stk_engine *e, stk_time_t now, int sd, void *buf, size_t len,
                         uint32_t flags, struct stk_udp_meta *meta);
/* Zero-copy view of the next datagram: its length (data->base/len set), or -EAGAIN; then
 * stk_udp_drop() discards it. Neither reports a pending error. */
ssize_t stk_udp_peek(struct stk_engine *e, int sd, struct stk_iov *data, struct stk_udp_meta *meta);
int stk_udp_drop(struct stk_engine *e, int sd);
/* Records the shutdown; -ENOTCONN on an unconnected socket (which is still shut, as Linux). */
int stk_udp_shutdown(struct stk_engine *e, int sd, enum stk_shut how);
int stk_udp_close(struct stk_engine *e, int sd);
/* STK_SO_ERROR, STK_SO_REUSEADDR, STK_SO_BROADCAST, STK_SO_RCVBUF, STK_SO_SNDBUF, and (get)
 * STK_SO_NREAD: the next datagram's length (0 when none, as Linux's FIONREAD). */
int stk_udp_setopt(struct stk_engine *e, int sd, enum stk_sockopt opt, int val);
int stk_udp_getopt(struct stk_engine *e, int sd, enum stk_sockopt opt, int *val);
/* STK_EV_IN: a datagram queued, or the read side shut; STK_EV_OUT: always (sends never wait);
 * STK_EV_ERR: a pending error. */
uint32_t stk_udp_events(struct stk_engine *e, int sd);
int stk_udp_getsockname(struct stk_engine *e, int sd, struct stk_sockaddr *addr);
int stk_udp_getpeername(struct stk_engine *e, int sd, struct stk_sockaddr *addr);
void *stk_udp_user(struct stk_engine *e, int sd);

/* One TCP endpoint as `ss -tin` lists it (stk_sock_walk). */
struct stk_sock_entry {
    int sd;     /* the socket id, or -1: not (yet or any longer) held by a socket (a
                   connection waiting in an accept queue, or closed and finishing) */
    void *user; /* the socket's user pointer, NULL when sd is -1 */
    struct stk_sockaddr local, remote; /* remote is 0:0 for a listener */
    /* As ss's Recv-Q and Send-Q: a connection's unread bytes and bytes not yet
     * acknowledged (sent or not); a listener's accept queue length and backlog. */
    uint32_t rcvq, sndq;
    struct stk_tcp_info info;
};

/* Calls fn once for every listener and every connection in any state but CLOSED
 * (SYN-SENT to TIME-WAIT, held by a socket or not), listeners first, in no other order.
 * Bound sockets that neither listen nor connect are not listed. fn must not call into the
 * engine. A nonzero return from fn stops the walk and is returned; otherwise 0. */
int stk_sock_walk(struct stk_engine *e, int (*fn)(void *ctx, const struct stk_sock_entry *ent),
                  void *ctx);

#ifdef __cplusplus
}
#endif
#endif

/*
 * stk_int.h - declarations shared between the engine's source files (not public).
 *
 * Every function takes the per-core engine first; nothing here is global or static-mutable.
 * Internal functions return 0 or a negative errno.
 */
#ifndef USTACK_STK_INT_H
#define USTACK_STK_INT_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "stk.h"
#include "util.h"

/* ---- Wire formats --------------------------------------------------------------------- */
#define STK_ETH_HLEN      14
#define STK_ETH_P_IP      0x0800
#define STK_ETH_P_ARP     0x0806
#define STK_IP_HLEN       20
#define STK_IP_PROTO_ICMP 1
#define STK_IP_PROTO_TCP  6
#define STK_IP_PROTO_UDP  17
#define STK_TCP_HLEN      20
#define STK_TCP_MAXOPT    40
/* Room in front of an L4 header for Ethernet and IPv4 (no IP options are ever sent). */
#define STK_L2L3_HLEN (STK_ETH_HLEN + STK_IP_HLEN)

/* ---- Checksums (csum.c) ---------------------------------------------------------------- */
/* Ones-complement sum of len bytes added to sum (not folded), in big-endian word order (store
 * the folded result with stk__put16). Every piece chained but the last must have even
 * length. */
uint32_t stk__csum_add(uint32_t sum, const void *data, size_t len);
/* Fold to 16 bits and complement: the value to store in a header. */
uint16_t stk__csum_fold(uint32_t sum);
/* Sum of the IPv4 pseudo-header (addresses in host order, l4len in bytes). */
uint32_t stk__csum_pseudo(uint32_t src, uint32_t dst, uint8_t proto, uint16_t l4len);

/* ---- Keyed hash (siphash.c): SipHash-2-4 ----------------------------------------------- */
uint64_t stk__siphash(const uint8_t key[16], const void *data, size_t len);

/* ---- Timing wheel (wheel.c) ------------------------------------------------------------ */
/* A hashed wheel of 1 ms ticks. Nodes far in the future stay in their slot and are skipped
 * until their tick comes round, so any delay is allowed. */
#define STK_WHEEL_SLOTS 4096u /* power of two */
struct stk_wheel_node {
    struct stk_wheel_node *next, **pprev; /* pprev == NULL: not armed */
    uint64_t expire;                      /* absolute tick */
};
struct stk_wheel {
    struct stk_wheel_node *slot[STK_WHEEL_SLOTS];
    uint64_t now;   /* last tick processed */
    uint64_t hint;  /* no node expires before this (exact after each advance) */
    uint32_t count; /* armed nodes */
};
void stk__wheel_init(struct stk_wheel *w, uint64_t now_tick);
/* Arms (or re-arms) node to fire at tick expire (clamped to at least now + 1). */
void stk__wheel_arm(struct stk_wheel *w, struct stk_wheel_node *n, uint64_t expire);
void stk__wheel_disarm(struct stk_wheel *w, struct stk_wheel_node *n);
static inline bool stk__wheel_armed(const struct stk_wheel_node *n)
{
    return n->pprev != NULL;
}
/* Advances to now_tick, disarming and calling fire(ctx, node) for every node whose expire
 * <= now_tick, in tick order. fire may arm/disarm any node (including the one fired). */
void stk__wheel_advance(struct stk_wheel *w, uint64_t now_tick,
                        void (*fire)(void *ctx, struct stk_wheel_node *n), void *ctx);
/* Earliest tick at which a node may fire, or UINT64_MAX if none is armed. O(1); may be
 * early (never late) after a disarm, and is exact again after the next advance. */
uint64_t stk__wheel_next(const struct stk_wheel *w);

/* ---- Sequence range sets (rangeset.c) -------------------------------------------------- */
/* A small sorted set of disjoint, non-adjacent [start, end) sequence ranges, used for the
 * receiver's out-of-order map and the sender's SACK scoreboard. All ranges must lie within
 * 2^31 of each other (true inside one window). */
#define STK_RS_MAX 16
struct stk_rs_range {
    uint32_t start, end;
};
struct stk_rangeset {
    uint8_t n;
    struct stk_rs_range r[STK_RS_MAX];
};
static inline void stk__rs_clear(struct stk_rangeset *rs)
{
    rs->n = 0;
}
/* Adds [start, end), merging with overlapping or adjacent ranges. If the result would need
 * more than max ranges (max <= STK_RS_MAX), the set is left unchanged and -ENOSPC is
 * returned. Empty ranges are ignored (return 0). */
int stk__rs_add(struct stk_rangeset *rs, uint32_t start, uint32_t end, unsigned max);
/* Removes everything below seq (a range straddling seq is cut to start at seq). */
void stk__rs_trim_below(struct stk_rangeset *rs, uint32_t seq);
/* If a range starts exactly at seq, removes it and returns its end; otherwise returns seq. */
uint32_t stk__rs_pop_at(struct stk_rangeset *rs, uint32_t seq);
bool stk__rs_contains(const struct stk_rangeset *rs, uint32_t seq);
/* Total bytes covered by ranges at or above seq. */
uint32_t stk__rs_bytes_above(const struct stk_rangeset *rs, uint32_t seq);
/* Index of the range holding seq, or of the first range above it; rs->n if none. */
unsigned stk__rs_find(const struct stk_rangeset *rs, uint32_t seq);

/* ---- SACK scoreboard, RFC 6675 (sack.c) ------------------------------------------------ */
struct stk_sack_sb {
    struct stk_rangeset sacked; /* SACKed ranges above snd_una */
    uint32_t high_rxt;          /* RFC 6675 HighRxt: highest retransmitted seq + 1 */
    uint32_t high_data;         /* RFC 6675 HighData in the caller; kept for reference */
    uint32_t recovery_point;    /* RFC 6675 RecoveryPoint */
};
/* Records the SACK blocks of one ACK (blocks outside (snd_una, snd_max] are ignored and
 * counted in *ignored when non-NULL). Returns the number of newly SACKed bytes. */
uint32_t stk__sack_update(struct stk_sack_sb *sb, uint32_t snd_una, uint32_t snd_max,
                          const struct stk_rs_range *blocks, int nblocks, int *ignored);
/* RFC 6675 IsLost(seq): DupThresh (3) discontiguous SACKed ranges above seq, or more than
 * (DupThresh - 1) * mss SACKed bytes above it. */
bool stk__sack_is_lost(const struct stk_sack_sb *sb, uint32_t seq, uint32_t mss);
/* RFC 6675 SetPipe(): octets in flight, from snd_una to snd_max. */
uint32_t stk__sack_pipe(const struct stk_sack_sb *sb, uint32_t snd_una, uint32_t snd_max,
                        uint32_t mss);
/* RFC 6675 NextSeg() rules 1 and 3 (rule 2, new data, is the caller's; rule 4, the rescue
 * retransmission, is not implemented). Both pick the lowest unSACKed byte at or above
 * high_rxt: when stk__sack_is_lost() holds for it, it is a rule-1 answer. On success stores
 * the range to retransmit ([*seq, *seq + *len), len <= mss) and returns true. The caller
 * sets high_rxt = seq + len after retransmitting. */
bool stk__sack_next_seg(const struct stk_sack_sb *sb, uint32_t snd_una, uint32_t snd_max,
                        uint32_t mss, uint32_t *seq, uint32_t *len);

/* ---- Congestion control (cc.c): NewReno (RFC 5681/6582) and CUBIC (RFC 9438) ----------- */
struct stk_cc {
    uint8_t algo; /* enum stk_cc_algo */
    uint32_t mss;
    uint32_t cwnd, ssthresh; /* bytes */
    uint32_t ca_acked;       /* bytes acked since the last cwnd increment in CA */
    /* CUBIC (RFC 9438 section 4) */
    double w_max;           /* segments */
    double w_last_max;      /* RFC 9438 cwnd_prior: where alpha switches to 1 */
    double k;               /* seconds */
    double w_est;           /* segments: Reno-friendly estimate */
    stk_time_t epoch_start; /* 0: no epoch */
    uint32_t cwnd_epoch;    /* cwnd (bytes) at epoch start */
};
/* Initial window per RFC 6928 (10 segments, capped at 14600 bytes or 2 segments). */
void stk__cc_init(struct stk_cc *cc, enum stk_cc_algo algo, uint32_t mss, stk_time_t now);
/* New data acknowledged outside recovery. cwnd_limited: the sender was limited by cwnd
 * (RFC 7661 style: do not grow cwnd while application-limited). */
void stk__cc_on_ack(struct stk_cc *cc, uint32_t acked, bool cwnd_limited, uint32_t srtt_us,
                    stk_time_t now);
/* Loss detected by duplicate ACKs / SACK: sets ssthresh (NewReno: max(flight/2, 2*mss);
 * CUBIC: cwnd*0.7 with fast convergence) and cwnd = ssthresh. */
void stk__cc_on_loss(struct stk_cc *cc, uint32_t flight, stk_time_t now);
/* Retransmission timeout: ssthresh as on loss, cwnd = 1 mss (loss window). */
void stk__cc_on_rto(struct stk_cc *cc, uint32_t flight, stk_time_t now);
/* The connection was idle longer than an RTO (RFC 5681 4.1 restart window). */
void stk__cc_on_idle(struct stk_cc *cc, stk_time_t now);
void stk__cc_set_mss(struct stk_cc *cc, uint32_t mss);

/* ---- Byte rings (ring.c) --------------------------------------------------------------- */
/* Single-owner byte ring; size is a power of two; head and tail run free (mod 2^32). */
struct stk_ring {
    uint8_t *buf;
    uint32_t size;
    uint32_t head; /* next byte written */
    uint32_t tail; /* next byte read */
};
static inline uint32_t stk__ring_used(const struct stk_ring *r)
{
    return r->head - r->tail;
}
static inline uint32_t stk__ring_free(const struct stk_ring *r)
{
    return r->size - (r->head - r->tail);
}
/* Copies len bytes to offset off past head (without moving head). Caller checks space. */
void stk__ring_write_at(struct stk_ring *r, uint32_t off, const void *src, uint32_t len);
/* Copies len bytes starting off bytes past tail into dst (without moving tail). */
void stk__ring_read_at(const struct stk_ring *r, uint32_t off, void *dst, uint32_t len);
/* Up to two contiguous pieces covering [tail + off, tail + off + len). Returns count. */
int stk__ring_iov(const struct stk_ring *r, uint32_t off, uint32_t len, struct stk_iov iov[2]);

/* ---- Ethernet, ARP, IPv4, ICMP (net.c, arp.c) ------------------------------------------ */
struct stk__arp;
int stk__arp_create(struct stk_engine *e, stk_time_t now);
void stk__arp_destroy(struct stk_engine *e);
void stk__arp_input(struct stk_engine *e, stk_time_t now, const uint8_t *arp, size_t len);
void stk__arp_poll(struct stk_engine *e, stk_time_t now);
stk_time_t stk__arp_next_timer(const struct stk_engine *e);
void stk__arp_announce(struct stk_engine *e, stk_time_t now);
/* Resolves ip to a MAC. Returns 0 and fills mac, or -EAGAIN after starting (or while
 * waiting for) resolution. */
int stk__arp_resolve(struct stk_engine *e, stk_time_t now, uint32_t ip, uint8_t mac[6]);
/* Queues a complete frame (its Ethernet destination still to be filled) until ip resolves.
 * Copies the frame. -ENOBUFS when the bounded queue is full (counted). */
int stk__arp_queue(struct stk_engine *e, stk_time_t now, uint32_t ip, const struct stk_iov *iov,
                   int n, const struct stk_txmeta *meta);
/* Would n more frames fit in ip's resolution queue (per-neighbour and global bounds)? */
bool stk__arp_queue_fits(const struct stk_engine *e, uint32_t ip, unsigned n);

/* The next IPv4 identification value (kept in arp.c's private per-engine state). */
uint16_t stk__ip_next_id(struct stk_engine *e);
/* The Ethernet frame dispatcher (stk_input calls it). */
void stk__eth_input(struct stk_engine *e, stk_time_t now, const uint8_t *frame, size_t len,
                    uint32_t rx_flags);
/* Next hop for dst: dst itself on our subnet, else the gateway; 0 if unreachable. */
uint32_t stk__ip_route(const struct stk_engine *e, uint32_t dst);
/* ARP gave up on nexthop: connects waiting on it fail with EHOSTUNREACH (as Linux, whose
 * neighbour failure reaches tcp_v4_err as a host-unreachable for SYN-SENT sockets). */
void stk__tcp_unreachable(struct stk_engine *e, uint32_t nexthop);
/* Sends an IPv4 packet. hdr points at STK_L2L3_HLEN free bytes followed by l4_len bytes of
 * L4 header (checksum already final, or pseudo-only when meta->flags has STK_TX_TCP_CSUM);
 * payload follows in iov[0..npay). Fills the IPv4 and Ethernet headers, resolves the next
 * hop (queueing behind ARP), and calls cfg.tx. meta may be NULL (no offloads). */
int stk__ip_send(struct stk_engine *e, stk_time_t now, uint32_t dst, uint8_t proto, uint8_t *hdr,
                 size_t l4_len, const struct stk_iov *payload, int npay, struct stk_txmeta *meta);
/* Is a the directed broadcast of our subnet? (/31 and /32 have none.) */
bool stk__ip_is_subnet_bcast(const struct stk_engine *e, uint32_t a);
/* Hands a frame to cfg.tx and counts it. */
int stk__eth_tx(struct stk_engine *e, const struct stk_iov *iov, int n,
                const struct stk_txmeta *meta);

/* A validated IPv4 packet as the transport layers see it. */
struct stk_ipv4_pkt {
    uint32_t src, dst;
    uint8_t proto, ttl, tos;
    const uint8_t *l4; /* transport header */
    size_t l4_len;     /* transport bytes (IP total length minus header) */
    uint32_t rx_flags;
};
void stk__icmp_input(struct stk_engine *e, stk_time_t now, const struct stk_ipv4_pkt *ip);
/* ip_input for a whole IPv4 datagram without its Ethernet header (stk_input_ip). */
void stk__ip_input(struct stk_engine *e, stk_time_t now, const uint8_t *p, size_t len,
                   uint32_t rx_flags);

/* ---- IPv4 and IPv6 fragments (ipfrag.c)
 * ---------------------------------------------------------- */
struct stk__ipfrag;
/* A reassembled datagram: header (no MF, offset 0, fresh checksum) and payload. */
struct stk_ipf_whole {
    size_t len;
    uint8_t data[];
};
int stk__ipfrag_create(struct stk_engine *e);
void stk__ipfrag_destroy(struct stk_engine *e);
/* Takes a fragment (a validated IPv4 datagram without options, total bytes long, MF or a
 * nonzero offset). Returns the whole datagram when this fragment completed it (release it
 * with stk__ipfrag_release after processing), else NULL (held, dropped, or handed to
 * another engine by cfg.steer_ip; all counted). */
struct stk_ipf_whole *stk__ipfrag_input(struct stk_engine *e, stk_time_t now, const uint8_t *ip,
                                        size_t total);
void stk__ipfrag_release(struct stk_engine *e, struct stk_ipf_whole *w);
struct stk_ipv6_pkt;
/* Takes an IPv6 fragment (RFC 8200 4.5): pkt passed the checks of stk__ip6_input up to its
 * Fragment header at fh_off (offset or M set). Shares the IPv4 bounds (cfg.ipfrag_mem,
 * ipfrag_max, ipfrag_time_us). Returns the whole packet when this fragment completed it:
 * fragment zero's IPv6 header (payload length and Next Header set, no extension headers)
 * and the fragmentable part; release it with stk__ipfrag_release. Else NULL (held, dropped
 * with a Parameter Problem for a bad length, or handed to another engine; all counted). */
struct stk_ipf_whole *stk__ipfrag6_input(struct stk_engine *e, stk_time_t now,
                                         const struct stk_ipv6_pkt *pkt, size_t fh_off);
/* Expires datagrams older than cfg.ipfrag_time_us (ICMP or ICMPv6 time exceeded if fragment
 * zero arrived). */
void stk__ipfrag_poll(struct stk_engine *e, stk_time_t now);
stk_time_t stk__ipfrag_next_timer(const struct stk_engine *e);
/* Bytes charged to datagrams in progress, and (count non-NULL) how many there are. */
size_t stk__ipfrag_mem(const struct stk_engine *e, uint32_t *count);
/* Sends l4_len bytes of L4 header and payload (checksum complete), given as l4[0..n) (n <=
 * 8), to dst as one IPv4 datagram: unfragmented when it fits the MTU, else as fragments of
 * at most the MTU, offsets in multiples of 8, one IP id, never DF. While the next hop is
 * being resolved all fragments are queued behind ARP, or none (-ENOBUFS) when the queue
 * cannot take them all. tos: the TOS byte of every fragment. Returns 0 or -EMSGSIZE (l4_len >
 * 65515), -EHOSTUNREACH, -ENOBUFS, -EINVAL. (stack/ipfrag.c) */
int stk__ip_send_frags(struct stk_engine *e, stk_time_t now, uint32_t dst, uint8_t proto,
                       const struct stk_iov *l4, int n, size_t l4_len, uint8_t tos);
void stk__tcp_input(struct stk_engine *e, stk_time_t now, const struct stk_ipv4_pkt *ip);
/* An ICMP error (type 3, 11 or 12; info: the second header word, with the next-hop MTU of a
 * fragmentation needed in its low 16 bits) whose quote q (len bytes from the quoted IPv4
 * header on) is a TCP segment we sent: hard and soft errors, path MTU (tcp_icmp.c). */
void stk__tcp_icmp_error(struct stk_engine *e, stk_time_t now, uint8_t type, uint8_t code,
                         uint32_t info, const uint8_t *q, size_t len);
/* udp.c (udp.h has the rest) */
void stk__udp_input(struct stk_engine *e, stk_time_t now, const struct stk_ipv4_pkt *ip);

/* ---- IPv6, ICMPv6 (ip6.c) and neighbour discovery (nd.c) --------------------------------- */
#define STK_ETH_P_IPV6      0x86dd
#define STK_IP6_HLEN        40
#define STK_IP_PROTO_ICMPV6 58
#define STK_IP6_HOP_LIMIT   64
/* Room in front of an L4 header for Ethernet and IPv6 (no extension headers are sent). */
#define STK_L2L3_HLEN6 (STK_ETH_HLEN + STK_IP6_HLEN)

/* A validated IPv6 packet as the upper layers see it: the fixed header passed its checks,
 * the extension headers were walked, and the destination is one of ours (unicast) or a
 * group we listen to (all-nodes, our solicited-node groups). */
struct stk_ipv6_pkt {
    const uint8_t *src, *dst; /* 16 bytes each, pointing into the frame */
    uint8_t proto;            /* the upper-layer Next Header value after the walk */
    uint8_t hop_limit, tclass;
    bool dst_mcast;    /* dst is a multicast address */
    bool l2_mcast;     /* the frame was sent to a group or broadcast MAC */
    const uint8_t *ip; /* the IPv6 header (ICMPv6 errors quote from here) */
    size_t ip_len;     /* header + payload bytes (no Ethernet padding) */
    const uint8_t *l4; /* upper-layer header */
    size_t l4_len;     /* upper-layer bytes */
    uint32_t rx_flags;
};

/* STK_IP_TOS / STK_IPV6_TCLASS (0..255, else -EINVAL) into *tos or *tclass, the bits of
 * keep only: TCP keeps the ECN field for itself (Linux's __ip_sock_set_tos), UDP leaves
 * all eight bits to the application. */
static inline int stk__tos_setopt(enum stk_sockopt opt, int val, uint8_t keep, uint8_t *tos,
                                  uint8_t *tclass)
{
    if (val < 0 || val > 255)
        return -EINVAL;
    *(opt == STK_IP_TOS ? tos : tclass) = (uint8_t)(val & keep);
    return 0;
}

/* A 32-bit digest of an IPv6 address for the hashes and the first comparison: 0 only for
 * the unspecified address (so that 0 keeps meaning "wildcard"); equal folds are confirmed
 * on the full addresses. */
static inline uint32_t stk__fold6(const uint8_t a[16])
{
    uint32_t w[4];
    memcpy(w, a, 16);
    uint32_t f = w[0] ^ w[1] ^ w[2] ^ w[3];
    if (f == 0 && (w[0] | w[1] | w[2] | w[3]))
        f = 1;
    return f;
}

/* Sum of the IPv6 pseudo-header (RFC 8200 section 8.1; l4len is the upper-layer length). */
uint32_t stk__csum_pseudo6(const uint8_t src[16], const uint8_t dst[16], uint8_t proto,
                           uint32_t l4len);
static inline bool stk__ip6_is_mcast(const uint8_t a[16])
{
    return a[0] == 0xff;
}
static inline bool stk__ip6_is_linklocal(const uint8_t a[16])
{
    return a[0] == 0xfe && (a[1] & 0xc0) == 0x80; /* fe80::/10 */
}
bool stk__ip6_is_unspec(const uint8_t a[16]);
/* IPv6 is on (cfg.mtu >= 1280). */
bool stk__ip6_enabled(const struct stk_engine *e);
/* Our link-local address (fe80:: + modified EUI-64 of cfg.mac). */
const uint8_t *stk__ip6_linklocal(const struct stk_engine *e);
/* a is one of our unicast addresses (link-local or cfg.ip6). */
bool stk__ip6_is_ours(const struct stk_engine *e, const uint8_t a[16]);
/* The source address for a packet to dst: link-local for link-local or link-scope
 * multicast destinations, else cfg.ip6 when set, else link-local (RFC 6724, reduced to the
 * two addresses we have). */
void stk__ip6_select_src(const struct stk_engine *e, const uint8_t dst[16], uint8_t src[16]);
/* Next hop for dst: dst itself when on-link (link-local, or inside cfg.ip6's prefix), else
 * cfg.gateway6. 0, or -EHOSTUNREACH (unspecified, loopback, v4-mapped, multicast, ours, no
 * gateway) with nexthop untouched. */
int stk__ip6_route(const struct stk_engine *e, const uint8_t dst[16], uint8_t nexthop[16]);
/* The Ethernet group address of an IPv6 multicast address (RFC 2464 section 7). */
void stk__ip6_mcast_mac(const uint8_t a[16], uint8_t mac[6]);
/* Sends an IPv6 packet with hop limit 64. hdr points at STK_L2L3_HLEN6 free bytes followed by
 * l4_len bytes of upper-layer header whose checksum is final (computed over
 * stk__csum_pseudo6 with the same src); payload follows in iov[0..npay). src NULL picks one
 * with stk__ip6_select_src (only for upper layers without a pseudo-header checksum). Fills
 * the IPv6 and Ethernet headers, resolves the next hop with neighbour discovery (queueing
 * behind it; multicast destinations map to their group MAC), and calls cfg.tx. Never
 * fragments: -EMSGSIZE beyond the MTU. meta may be NULL (no offloads are used for IPv6). */
int stk__ip6_send(struct stk_engine *e, stk_time_t now, const uint8_t *src, const uint8_t dst[16],
                  uint8_t proto, uint8_t *hdr, size_t l4_len, const struct stk_iov *payload,
                  int npay, struct stk_txmeta *meta);
/* stk__ip6_send for a source that may fragment (RFC 8200 4.5; UDP, echo replies; src not
 * NULL): beyond the MTU the l4_len + payload bytes go as fragments of at most the MTU behind
 * a Fragment header (offsets in multiples of 8, one 32-bit identification per datagram;
 * queued one by one behind neighbour discovery). npay <= 7. tclass: the traffic class of
 * every packet. 0, or -EMSGSIZE (more than 65535 bytes), -EHOSTUNREACH, -ENOBUFS, -EINVAL.
 * Defined in ipfrag.c. */
int stk__ip6_send_frags(struct stk_engine *e, stk_time_t now, const uint8_t src[16],
                        const uint8_t dst[16], uint8_t proto, uint8_t *hdr, size_t l4_len,
                        const struct stk_iov *payload, int npay, uint8_t tclass);
/* The same with an explicit hop limit (255 for neighbour discovery). */
int stk__ip6_send_hl(struct stk_engine *e, stk_time_t now, const uint8_t *src,
                     const uint8_t dst[16], uint8_t proto, uint8_t hop_limit, uint8_t *hdr,
                     size_t l4_len, const struct stk_iov *payload, int npay,
                     struct stk_txmeta *meta);
/* An IPv6 datagram (after the Ethernet header). l2_mcast: sent to a group/broadcast MAC. */
void stk__ip6_input(struct stk_engine *e, stk_time_t now, const uint8_t *p, size_t len,
                    uint32_t rx_flags, bool l2_mcast);
/* The Ethernet destination filter's question for a group MAC (33:33:...): all-nodes, or the
 * solicited-node group of one of our addresses. */
bool stk__ip6_mac_wanted(const struct stk_engine *e, const uint8_t mac[6]);
/* Sends an ICMPv6 error (RFC 4443) about pkt unless section 2.4 (e) forbids it (errors,
 * multicast destinations except Parameter Problem code 2, unspecified or multicast
 * sources) or the rate limit holds it back. param is the pointer or MTU field. */
void stk__icmp6_error(struct stk_engine *e, stk_time_t now, const struct stk_ipv6_pkt *pkt,
                      uint8_t type, uint8_t code, uint32_t param);

struct stk__nd;
int stk__nd_create(struct stk_engine *e, stk_time_t now);
void stk__nd_destroy(struct stk_engine *e);
void stk__nd_poll(struct stk_engine *e, stk_time_t now);
stk_time_t stk__nd_next_timer(const struct stk_engine *e);
/* A neighbour solicitation or advertisement (ICMPv6 type 135/136) that passed the ICMPv6
 * checksum; validated here (RFC 4861 sections 7.1.1, 7.1.2). */
void stk__nd_input(struct stk_engine *e, stk_time_t now, const struct stk_ipv6_pkt *pkt);
/* Resolves an on-link address to a MAC (RFC 4861 section 7.2, 7.3.3). Returns 0 and fills
 * mac (a STALE entry becomes DELAY: it is used, and probed if not confirmed), or -EAGAIN
 * after starting (or while waiting for) resolution, or -EHOSTUNREACH for an unusable
 * address. */
int stk__nd_resolve(struct stk_engine *e, stk_time_t now, const uint8_t ip[16], uint8_t mac[6]);
/* Queues a complete frame (its Ethernet destination still to be filled) until ip resolves.
 * Copies the frame. -ENOBUFS when the bounded queue is full (nd_queue_drop). */
int stk__nd_queue(struct stk_engine *e, stk_time_t now, const uint8_t ip[16],
                  const struct stk_iov *iov, int n, const struct stk_txmeta *meta);
/* Upper-layer reachability confirmation (RFC 4861 section 7.3.1): e.g. TCP saw new data
 * acknowledged by ip. Makes an existing, resolved entry REACHABLE again. */
void stk__nd_confirm(struct stk_engine *e, stk_time_t now, const uint8_t ip[16]);
/* TCP over IPv6 (tcp_in.c): a segment from stk__ip6_input. */
void stk__tcp6_input(struct stk_engine *e, stk_time_t now, const struct stk_ipv6_pkt *ip);
/* An ICMPv6 error (type < 128; info: the MTU of a Packet Too Big) about a TCP segment we
 * sent: th points at its TCP header (thlen >= 8 bytes quoted), src/dst are the quoted IPv6
 * addresses (tcp_icmp.c). */
void stk__tcp6_icmp_error(struct stk_engine *e, stk_time_t now, uint8_t type, uint8_t code,
                          uint32_t info, const uint8_t src[16], const uint8_t dst[16],
                          const uint8_t *th, size_t thlen);
/* UDP over IPv6 (udp.c). */
void stk__udp6_input(struct stk_engine *e, stk_time_t now, const struct stk_ipv6_pkt *ip);
/* An ICMPv6 error about a UDP datagram we sent (uh: its UDP header, len >= 8 bytes quoted;
 * src/dst: the quoted addresses): a connected socket takes a hard error (udp.c). */
void stk__udp6_icmp_error(struct stk_engine *e, uint8_t type, uint8_t code, const uint8_t src[16],
                          const uint8_t dst[16], const uint8_t *uh, size_t len);
/* Linux's icmp_err_convert and icmpv6_err_convert (tcp_icmp.c): the errno an ICMP or ICMPv6
 * error of type/code stands for, and whether it is a hard error (true). Fragmentation
 * needed and Packet Too Big are the callers' own (path MTU). */
bool stk__icmp4_err(uint8_t type, uint8_t code, int *err);
bool stk__icmp6_err(uint8_t type, uint8_t code, int *err);
/* Neighbour resolution of nexthop failed: SYN-SENT connections to it end with
 * EHOSTUNREACH (tcp_conn.c), as stk__tcp_unreachable for ARP. */
void stk__tcp_unreachable6(struct stk_engine *e, const uint8_t nexthop[16]);

/* ---- The engine -------------------------------------------------------------------------- */
struct stk_tcp; /* TCP's per-engine state (tcp.h) */
struct stk_udp; /* UDP's (udp.h) */

struct stk_engine {
    struct stk_config cfg;
    stk_time_t now;
    struct stk_counters ctr;
    struct stk_wheel wheel;
    struct stk__arp *arp;
    struct stk_tcp *tcp;
    struct stk__nd *nd; /* IPv6 addresses, neighbour cache, ICMPv6 error rate limit */
    struct stk__ipfrag *ipf;
    struct stk_udp *udp;
    bool rx_batch;            /* between stk_rx_begin() and stk_rx_end() */
    struct stk_tcb *ack_head; /* connections with an ACK coalesced until stk_rx_end() */
};

void *stk__alloc(struct stk_engine *e, size_t size); /* zeroed */
void stk__free(struct stk_engine *e, void *p, size_t size);

static inline uint64_t stk__tick(stk_time_t t)
{
    return t / STK_US_PER_MS;
}

#endif

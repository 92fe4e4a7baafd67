/*
 * ip6.h - IPv6 state shared by ip6.c and nd.c (private to those two files).
 *
 * One struct per engine, allocated at start: our addresses, the neighbour cache with its
 * bounded queue of frames waiting for resolution, and the ICMPv6 error rate limiter.
 * Nothing grows with input.
 */
#ifndef USTACK_IP6_H
#define USTACK_IP6_H

#include "pending.h"

#define ND_ENTRIES 128
#define ND_BUCKETS 64  /* power of two */
#define ND_QMAX    256 /* frames waiting for resolution, per engine */
#define ND_QPER    64  /* ... and per neighbour (as ARP: a SYN burst must not lose replies) */
#define ND_NIL     0xffffu

/* RFC 4861 section 7.3.2 states (FREE: an unused slot). */
enum nd_state { ND_FREE = 0, ND_INCOMPLETE, ND_REACHABLE, ND_STALE, ND_DELAY, ND_PROBE };

struct nd_entry {
    uint8_t ip[16];
    uint8_t mac[6];
    uint8_t state;          /* enum nd_state */
    uint8_t tries;          /* solicitations sent in this INCOMPLETE or PROBE period */
    uint16_t next;          /* hash chain, or free list when ND_FREE */
    struct stk_pend_list q; /* waiting frames */
    stk_time_t deadline;    /* retransmission, or the end of REACHABLE, STALE or DELAY */
    stk_time_t stamp;       /* creation or last confirmation: the age used for eviction */
};

struct stk__nd {
    bool enabled;    /* cfg.mtu >= 1280 */
    bool has_global; /* cfg.ip6 is set */
    bool has_gw;     /* cfg.gateway6 is set */
    uint8_t ll[16];  /* our link-local address */
    /* ICMPv6 errors: a token bucket (RFC 4443 section 2.4 (f)). */
    uint32_t err_tokens;
    stk_time_t err_stamp;
    struct nd_entry ent[ND_ENTRIES];
    uint16_t bucket[ND_BUCKETS];
    uint16_t free_ent;
    struct stk_pend_frame qf[ND_QMAX];
    struct stk_pend_pool q;
    /* Never later than the earliest entry deadline; stk__nd_poll recomputes it exactly. */
    stk_time_t next_timer;
};

/* RFC 4861 section 10 constants. */
#define ND_RETRANS_US        (1 * STK_US_PER_S) /* RetransTimer */
#define ND_MULTICAST_SOLICIT 3
#define ND_UNICAST_SOLICIT   3
#define ND_DELAY_US          (5 * STK_US_PER_S) /* DELAY_FIRST_PROBE_TIME */
/* An unused STALE entry is forgotten after this (Linux: gc_stale_time, 60 s). */
#define ND_STALE_GC_US (60 * STK_US_PER_S)

/* ICMPv6 errors: a burst of ERR_BURST, then ERR_PER_S per second (RFC 4443 2.4 (f); Linux
 * allows about one per ms per destination with a burst). */
#define ICMP6_ERR_BURST 10
#define ICMP6_ERR_PER_S 100

/* ICMPv6 types (RFC 4443, RFC 4861). */
#define ICMP6_DST_UNREACH    1
#define ICMP6_PACKET_TOO_BIG 2
#define ICMP6_TIME_EXCEEDED  3
#define ICMP6_PARAM_PROB     4
#define ICMP6_ECHO_REQUEST   128
#define ICMP6_ECHO_REPLY     129
#define ND_ROUTER_SOLICIT    133
#define ND_ROUTER_ADVERT     134
#define ND_NEIGHBOR_SOLICIT  135
#define ND_NEIGHBOR_ADVERT   136
#define ND_REDIRECT          137
#define ND_OPT_SLLA          1
#define ND_OPT_TLLA          2
#define ND_NA_ROUTER         0x80
#define ND_NA_SOLICITED      0x40
#define ND_NA_OVERRIDE       0x20

/* ff02::1, the all-nodes group. */
extern const uint8_t stk__ip6_all_nodes[16];
/* The solicited-node group of a (ff02::1:ffXX:XXXX, RFC 4291 section 2.7.1). */
void stk__ip6_solicited_node(const uint8_t a[16], uint8_t group[16]);

#endif

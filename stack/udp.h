/*
 * udp.h - UDP's internal state (udp.c): sockets, the port table, per-engine limits.
 */
#ifndef USTACK_UDP_H
#define USTACK_UDP_H

#include "stk_int.h"

#define STK_UDP_HLEN 8
/* Largest payload: the IPv4 total length is 16 bits (65535 - 20 - 8). */
#define STK_UDP_MAX_PAYLOAD 65507u
/* Bytes a queued datagram is charged on top of its payload, standing in for the kernel's
 * skb truesize overhead so that a receive buffer holds about as many small datagrams. */
#define STK_UDP_DGRAM_COST   256u
#define STK_UDP_PORT_BUCKETS 1024u

/* A received datagram waiting in a socket's queue. */
struct stk_udp_dgram {
    struct stk_udp_dgram *next;
    struct stk_udp_meta meta;
    uint32_t len;
    uint8_t data[];
};

enum {
    UF_BOUND = 1u << 0,     /* has a local port (explicit or automatic) */
    UF_BIND_PORT = 1u << 1, /* the port was bound by the application (kept at disconnect) */
    UF_BIND_ADDR = 1u << 2, /* the address was bound by the application */
    UF_CONNECTED = 1u << 3,
    UF_REUSEADDR = 1u << 4,
    UF_BROADCAST = 1u << 5,
    UF_SHUT_RD = 1u << 6,
    UF_SHUT_WR = 1u << 7,
    UF_V6 = 1u << 8,     /* bound to an IPv6 address (lip6; lip its stk__fold6, 0 for [::]) */
    UF_V6ONLY = 1u << 9, /* IPV6_V6ONLY: a [::] socket serves IPv6 only */
    UF_R6 = 1u << 10,    /* connected to an IPv6 peer (rip6; rip its fold) */
};

struct stk_udp_sock {
    uint32_t lip, rip;
    uint16_t lport, rport;
    uint32_t flags; /* UF_* */
    int sd;
    void *user;
    int so_error;               /* positive errno, reported once */
    struct stk_udp_sock *pnext; /* port table chain */
    struct stk_udp_dgram *qhead, *qtail;
    uint32_t qlen, qbytes; /* datagrams queued; bytes charged (payload + cost) */
    uint32_t rcvbuf, sndbuf;
    uint8_t lip6[16], rip6[16]; /* network order, with UF_V6 / UF_R6 */
    uint8_t tos, tclass;        /* IP_TOS, IPV6_TCLASS of its datagrams (all eight bits) */
    uint32_t reuseport;         /* STK_SO_REUSEPORT group key, 0: none */
};

struct stk_udp {
    struct stk_udp_sock **socks; /* sd -> socket */
    int *sd_free;
    uint32_t nsd_free;
    struct stk_udp_sock *ports[STK_UDP_PORT_BUCKETS];
    uint32_t port_cursor;
    /* ICMP port unreachable budget: a token bucket refilled each millisecond. */
    stk_time_t icmp_last;
    uint32_t icmp_tokens;
};

int stk__udp_create(struct stk_engine *e);
void stk__udp_destroy(struct stk_engine *e);
void stk__udp_input(struct stk_engine *e, stk_time_t now, const struct stk_ipv4_pkt *ip);
/* An ICMP error (type/code) quoting one of our UDP datagrams (quoted: the quoted IPv4 header
 * and what follows it, len bytes): a connected socket takes a hard error. */
void stk__udp_icmp_error(struct stk_engine *e, uint8_t type, uint8_t code, const uint8_t *quoted,
                         size_t len);

#endif

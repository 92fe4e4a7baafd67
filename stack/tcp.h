/*
 * tcp.h - TCP's internal state: the control block, per-engine tables, and the functions the
 * TCP source files share (tcp_conn.c, tcp_in.c, tcp_out.c, tcp_sock.c).
 */
#ifndef USTACK_TCP_H
#define USTACK_TCP_H

#include "stk_int.h"

/* TCP header flags. */
#define TH_FIN 0x01
#define TH_SYN 0x02
#define TH_RST 0x04
#define TH_PSH 0x08
#define TH_ACK 0x10
#define TH_URG 0x20

#define STK_TCP_DUPTHRESH   3
#define STK_TCP_MAX_WS      14
#define STK_TCP_DEFAULT_MSS 536 /* RFC 9293 3.7.1: assumed when the peer sends none */
#define STK_OOO_MAX         8   /* out-of-order holes kept per connection */
#define STK_TS_PAWS_IDLE_US (24ull * 24 * 3600 * STK_US_PER_S) /* RFC 7323 5.5 */

/* A parsed, validated segment (DESIGN.md: parse once, then act). */
struct stk_seg {
    uint32_t src, dst;          /* IPv4, host order; IPv6: stk__fold6 of src6/dst6 */
    const uint8_t *src6, *dst6; /* IPv6: the addresses in the frame; NULL for IPv4 */
    uint16_t sport, dport;
    uint32_t seq, ack;
    uint32_t wnd; /* raw 16-bit window */
    uint8_t flags;
    const uint8_t *data;
    uint32_t len; /* payload bytes */
    /* options */
    uint16_t mss; /* 0: absent */
    int8_t ws;    /* -1: absent */
    bool sack_ok, ts;
    uint32_t tsval, tsecr;
    uint8_t nsack;
    struct stk_rs_range sack[4];
};

/* The looks at an application while an ACK is owed (stk__ack_owe): the first
 * STK_OWED_FAST_LOOKS STK_OWED_FAST_US apart (a FIFO in struct stk_tcp, polled by
 * stk__tcp_poll), then one per tick of the timer wheel (t_delack, STK_OWED_CHECK_US). The
 * ACK goes at the first look that finds the application waiting to read, or at the second
 * idle look in a row (an application between reading a request and writing its reply is
 * idle for a moment, but not for two looks). */
#define STK_OWED_FAST_US    100u
#define STK_OWED_FAST_LOOKS 4u
#define STK_OWED_CHECK_US   1000u
#define STK_OWED_Q          1024u /* FIFO entries; when full, the wheel's looks only */

/* Control-block flags. */
enum {
    TF_NODELAY = 1u << 0,
    TF_CORK = 1u << 1,
    TF_MORE = 1u << 2,       /* last send had MSG_MORE */
    TF_ACK_NOW = 1u << 3,    /* send an ACK at the next output */
    TF_FIN_QUEUED = 1u << 4, /* shutdown(SHUT_WR) or close(): FIN after the data */
    TF_FIN_SENT = 1u << 5,   /* FIN has been sent at least once (snd_max covers it) */
    TF_RCV_FIN = 1u << 6,    /* peer's FIN seen at rcv_fin_seq (maybe out of order) */
    TF_SHUT_RD = 1u << 7,    /* application shut the read side */
    TF_SACK = 1u << 8,       /* SACK agreed */
    TF_TS = 1u << 9,         /* timestamps agreed */
    TF_WS = 1u << 10,        /* window scaling agreed */
    TF_KEEPALIVE = 1u << 11,
    TF_REUSEADDR = 1u << 12,
    TF_ORPHAN = 1u << 13, /* closed by the application; no socket */
    TF_IN_RECOVERY = 1u << 14,
    TF_RTT_TIMING = 1u << 15, /* rtt_seq is being timed (no timestamps) */
    TF_EV_PENDING = 1u << 16, /* on the engine's event list */
    TF_BOUND = 1u << 17,
    TF_PASSIVE = 1u << 18,     /* created by a listener */
    TF_EOF_READ = 1u << 19,    /* the application has seen EOF */
    TF_COOKIE = 1u << 20,      /* established from a SYN cookie */
    TF_ACCEPTED = 1u << 21,    /* handed out by accept() */
    TF_DATA_SEEN = 1u << 22,   /* TCP_DEFER_ACCEPT: data arrived */
    TF_WAS_SYNCED = 1u << 23,  /* reached ESTABLISHED once */
    TF_RTO_GUARD = 1u << 24,   /* after a timeout, until snd_una passes recover */
    TF_TLP_OUT = 1u << 25,     /* a tail loss probe's episode is open (RFC 8985 7.4) */
    TF_TLP_RXT = 1u << 26,     /* ... and the probe was a retransmission (TLPRxtOut) */
    TF_V6 = 1u << 27,          /* IPv6: lip6/rip6 hold the addresses, lip/rip their folds */
    TF_V6ONLY = 1u << 28,      /* IPV6_V6ONLY: a [::] socket serves IPv6 only */
    TF_ACK_BATCH = 1u << 29,   /* on the engine's ack_head list: ACK at stk_rx_end() */
    TF_RCVBUF_LOCK = 1u << 30, /* SO_RCVBUF set: no receive buffer autotuning */
    TF_SNDBUF_LOCK = 1u << 31, /* SO_SNDBUF set: the send buffer does not grow */
};
/* What a connection made by a listener takes from its flags. */
#define TF_FROM_LISTENER                                                                           \
    (TF_NODELAY | TF_KEEPALIVE | TF_REUSEADDR | TF_RCVBUF_LOCK | TF_SNDBUF_LOCK)

/* RFC 8985 7.2: the PTO is 2 * SRTT plus, as Linux, a margin of 2 ms (two of its jiffies,
 * also covering our 1 ms timer tick) when several segments are in flight, or the worst-case
 * delayed-ACK time WCDelAckT (rto_min_us, 200 ms by default, Linux's TCP_RTO_MIN) when only
 * one is, since the peer may then be holding its ACK back. */
#define STK_TLP_MARGIN_US 2000u

struct stk_tcb {
    /* Identity and tables. IPv4: lip/rip in host order (0: wildcard). IPv6 (TF_V6): the
     * addresses are lip6/rip6 and lip/rip their stk__fold6, so that the hashes and the first
     * comparisons stay those of IPv4. */
    uint32_t lip, rip;
    uint16_t lport, rport;
    struct stk_tcb *hnext;   /* connection or listen hash chain */
    struct stk_tcb *bnext;   /* bind list of a port */
    struct stk_tcb **bpprev; /* the pointer to us in that list (O(1) unbind) */
    struct stk_tcb *evnext;  /* engine event list */
    struct stk_tcb *acknext; /* engine's coalesced-ACK list (TF_ACK_BATCH) */
    int sd;                  /* socket id, -1 when orphaned */
    void *user;
    enum stk_tcp_state state;
    uint32_t flags;
    int so_error;   /* positive errno pending for the application */
    int soft_error; /* the last ICMP soft error (Linux's sk_err_soft): reported instead of
                       ETIMEDOUT when the connection times out; cleared by new data acked */

    /* Listener side: children in SYN-RECEIVED count against synq, established ones wait in
     * the accept queue. Children point at their listener. */
    struct stk_tcb *listener;
    struct stk_tcb *qnext;               /* accept queue link */
    struct stk_tcb *syn_next, *syn_prev; /* listener's SYN-RECEIVED children */
    struct stk_tcb *syn_head;            /* listener: its SYN-RECEIVED children */
    struct stk_tcb *acc_head, *acc_tail;
    uint32_t acc_len, backlog, synq_len;
    uint32_t defer_accept_s;
    uint32_t reuseport; /* STK_SO_REUSEPORT group key, 0: none */

    /* Options and sizes. */
    uint16_t snd_mss;  /* largest payload we send */
    uint16_t rcv_mss;  /* largest payload we announced */
    uint16_t user_mss; /* TCP_MAXSEG clamp, 0: none */
    uint16_t pmtu;     /* path MTU learnt from ICMP (RFC 1191/8201); 0: cfg.mtu */
    uint8_t snd_ws, rcv_ws;
    uint8_t cc_algo;

    /* Send sequence space (RFC 9293 3.3.1). snd_max is the highest seq ever sent;
     * snd_nxt drops back to snd_una on a timeout. snd_buf_seq is the seq of the first byte
     * in sndbuf. */
    uint32_t iss, snd_una, snd_nxt, snd_max, snd_wnd, snd_wl1, snd_wl2, max_snd_wnd;
    uint32_t snd_buf_seq;
    /* Receive sequence space. rcv_adv is the right edge we last advertised. */
    uint32_t irs, rcv_nxt, rcv_adv, last_ack_sent, rcv_fin_seq;
    uint32_t rcv_wnd_max; /* largest window the buffer allows */

    /* Timestamps (RFC 7323). */
    uint32_t ts_recent, ts_offset;
    stk_time_t ts_recent_age;

    /* Receive buffer autotuning: bytes the application took since rcv_space_time. */
    uint32_t rcv_space_copied;
    stk_time_t rcv_space_time;
    bool snd_nospace; /* a send found the buffer too small since the last ACK looked */

    /* RTT and RTO (RFC 6298). */
    uint32_t srtt_us, rttvar_us, rto_us;
    uint32_t rtt_seq;
    stk_time_t rtt_start;
    uint8_t backoff, retries, keep_probes, zwp_probes;
    uint8_t zwp_unans;   /* zero-window probes in a row the peer did not answer */
    stk_time_t zwp_last; /* when the last one went out (0: none since the window opened) */

    /* Congestion control and loss recovery. */
    struct stk_cc cc;
    struct stk_sack_sb sb;
    uint32_t dupacks, recover;
    uint32_t tlp_seq, tlp_high; /* the probe's first seq; SND.NXT after it (TLPHighRxt) */
    stk_time_t last_send, last_recv;
    stk_time_t last_chal; /* when this connection last sent a challenge ACK */

    /* Receive reassembly: out-of-order ranges already written into rcvbuf beyond rcv_nxt.
     * The most recently received out-of-order block is reported first (RFC 2018). */
    struct stk_rangeset ooo;
    struct stk_rs_range last_ooo;
    uint32_t delack_segs;
    /* An ACK owed (stk__ack_owe: an opened window, or a FIN's ACK): it rides on our next
     * segment, or goes once the application is seen waiting to read, or idle at two looks
     * in a row (cfg.app_idle), or at owed_until. 0: none owed; 1: owed; 2: owed, and the
     * application looked idle at the last look. */
    uint8_t owed;
    uint8_t owed_looks; /* looks from the FIFO so far */
    stk_time_t owed_until;

    /* Buffers, allocated when the connection is established. */
    struct stk_ring sndbuf, rcvbuf;
    uint32_t sndbuf_size, rcvbuf_size;

    /* Timers: absolute deadlines (0 = off) behind one wheel node, re-armed lazily. */
    struct stk_wheel_node tnode;
    stk_time_t t_rexmt, t_persist, t_delack, t_keep, t_2msl, t_cork, t_pto;
    uint32_t keep_idle_s, keep_intvl_s, keep_cnt;
    int linger_s; /* -1: off */
    /* TCP_USER_TIMEOUT (0: off), and when the wait it bounds began: the unacknowledged head
     * (set at the first retransmission, about one RTO before it), the zero window (the first
     * probe). */
    uint32_t user_timeout_ms;
    stk_time_t ut_start, zwp_start;
    uint8_t tos, tclass; /* IP_TOS and IPV6_TCLASS of its segments */
    uint8_t syn_retries; /* TCP_SYNCNT: handshake retransmissions (cfg.syn_retries) */

    /* Statistics for TCP_INFO. */
    uint64_t total_retrans, bytes_acked, bytes_received, segs_in, segs_out;

    /* IPv6 addresses (TF_V6), network order; the unspecified address is the wildcard. */
    uint8_t lip6[16], rip6[16];
};

/* Bytes of IP and TCP header under the MSS: 40 for IPv4, 60 for IPv6. */
static inline uint32_t stk__tcp_nethlen(const struct stk_tcb *t)
{
    return (t->flags & TF_V6) ? STK_IP6_HLEN + 20u : 40u;
}

/* The path MTU: cfg.mtu, or less once ICMP said so. */
static inline uint32_t stk__tcp_pmtu(const struct stk_engine *e, const struct stk_tcb *t)
{
    return t->pmtu && t->pmtu < e->cfg.mtu ? t->pmtu : e->cfg.mtu;
}

/* The error a timeout reports: the soft error ICMP left, else ETIMEDOUT (Linux's
 * tcp_write_err). */
static inline int stk__timeout_error(const struct stk_tcb *t)
{
    return t->soft_error ? t->soft_error : ETIMEDOUT;
}

struct stk_tcp {
    struct stk_tcb **socks; /* sd -> tcb */
    int *sd_free;           /* stack of free socket ids */
    uint32_t nsd_free;
    struct stk_tcb **conn_hash;
    uint32_t conn_mask;
    uint64_t hkey[10]; /* the connection hash's key (tcp_conn.c "Lookup") */
    struct stk_tcb *listen_hash[256];
    struct stk_tcb *bind_hash[1024];
    struct stk_tcb *ev_head; /* sockets with readiness to report */
    uint32_t nconns;
    uint32_t port_cursor;
    /* RFC 5961 challenge ACK limit: a budget refilled each second. */
    stk_time_t chal_window;
    uint32_t chal_count, chal_budget;
    /* The next looks at the applications of connections owing an ACK (stk__ack_owe), in
     * time order (one interval). */
    struct stk_owed_look {
        stk_time_t at;
        int32_t sd;
    } owed_q[STK_OWED_Q];
    uint32_t owed_head, owed_len;
};

void stk__owed_queue(struct stk_engine *e, struct stk_tcb *t, stk_time_t now);
bool stk__ack_owe(struct stk_engine *e, struct stk_tcb *t, stk_time_t now);

/* tcp_conn.c */
int stk__tcp_create(struct stk_engine *e);
void stk__tcp_destroy(struct stk_engine *e);
void stk__tcp_timer_fire(struct stk_engine *e, struct stk_wheel_node *n);
void stk__tcp_poll(struct stk_engine *e, stk_time_t now);
stk_time_t stk__tcp_next_timer(const struct stk_engine *e);
struct stk_tcb *stk__tcb_new(struct stk_engine *e);
void stk__tcb_free(struct stk_engine *e, struct stk_tcb *t);
void stk__set_state(struct stk_engine *e, struct stk_tcb *t, enum stk_tcp_state s);
/* The connection hash bucket t is in (tests). */
uint32_t stk__conn_bucket(const struct stk_engine *e, const struct stk_tcb *t);
void stk__conn_insert(struct stk_engine *e, struct stk_tcb *t);
void stk__conn_remove(struct stk_engine *e, struct stk_tcb *t);
struct stk_tcb *stk__conn_lookup(struct stk_engine *e, uint32_t lip, uint16_t lport, uint32_t rip,
                                 uint16_t rport);
struct stk_tcb *stk__conn_lookup6(struct stk_engine *e, const uint8_t lip[16], uint16_t lport,
                                  const uint8_t rip[16], uint16_t rport);
/* The listener for an IPv4 segment: exact address first, then the IPv4 wildcard, then an
 * IPv6 wildcard that is not V6ONLY (dual stack, as Linux scores them). */
struct stk_tcb *stk__listen_lookup(struct stk_engine *e, uint32_t lip, uint16_t lport, uint32_t rip,
                                   uint16_t rport);
/* The listener for an IPv6 segment: exact address first, then the IPv6 wildcard. Both pick
 * one listener of an SO_REUSEPORT group by the segment's addresses and ports. */
struct stk_tcb *stk__listen_lookup6(struct stk_engine *e, const uint8_t lip[16], uint16_t lport,
                                    const uint8_t rip[16], uint16_t rport);
/* The connection and listener of a parsed segment, by its family. */
static inline struct stk_tcb *stk__seg_conn(struct stk_engine *e, const struct stk_seg *s)
{
    if (s->src6)
        return stk__conn_lookup6(e, s->dst6, s->dport, s->src6, s->sport);
    return stk__conn_lookup(e, s->dst, s->dport, s->src, s->sport);
}
static inline struct stk_tcb *stk__seg_listener(struct stk_engine *e, const struct stk_seg *s)
{
    return s->src6 ? stk__listen_lookup6(e, s->dst6, s->dport, s->src6, s->sport)
                   : stk__listen_lookup(e, s->dst, s->dport, s->src, s->sport);
}
/* Gives t the addresses and ports of segment s (local = its destination). */
void stk__tcb_addr_from_seg(struct stk_tcb *t, const struct stk_seg *s);
/* Two sockets' local addresses overlap for bind(2) (ipv6(7) dual-stack rules). */
bool stk__addr_conflict(const struct stk_tcb *a, const struct stk_tcb *b);
void stk__listen_insert(struct stk_engine *e, struct stk_tcb *t);
void stk__listen_remove(struct stk_engine *e, struct stk_tcb *t);
/* Binds t to ip:port (IPv6: t->lip6 is already set and ip is its fold). */
int stk__bind_port(struct stk_engine *e, struct stk_tcb *t, uint32_t ip, uint16_t port);
void stk__inherit_port(struct stk_engine *e, struct stk_tcb *t);
void stk__unbind(struct stk_engine *e, struct stk_tcb *t);
int stk__pick_port(struct stk_engine *e, struct stk_tcb *t);
/* For a new connection on o's 4-tuple (o may be NULL: the tuple is free): true when the tuple
 * is free or o is a TIME-WAIT that saw timestamps and no socket holds, which then goes
 * (RFC 6191: PAWS rejects the old incarnation's segments; Linux's tcp_twsk_unique). */
bool stk__tw_take(struct stk_engine *e, struct stk_tcb *o);
/* RFC 6528 ISN of t's 4-tuple at now. */
uint32_t stk__isn(struct stk_engine *e, const struct stk_tcb *t, stk_time_t now);
/* t's timestamp offset (RFC 7323 section 5.4): stk__ts_now = engine ms + this. */
uint32_t stk__ts_offset(struct stk_engine *e, const struct stk_tcb *t);
/* Our timestamp value for a cookie SYN-ACK, carrying the peer's window scale (-1: none)
 * and SACK-permitted; and what the handshake ACK's TSecr says of them. */
uint32_t stk__cookie_ts(stk_time_t now, int ws, bool sack);
void stk__cookie_ts_decode(uint32_t tsecr, int *ws, bool *sack);
uint32_t stk__cookie_make(struct stk_engine *e, const struct stk_seg *s, uint16_t mss,
                          stk_time_t now);
/* Returns the MSS encoded by a valid cookie, or 0. */
/* Sends the flight again from SND.UNA, as after a retransmission timeout (which also calls
 * it) or a path MTU decrease; arms the retransmission timer if it is not. */
void stk__tcp_resend_flight(struct stk_engine *e, struct stk_tcb *t, stk_time_t now);
uint16_t stk__cookie_check(struct stk_engine *e, const struct stk_seg *s, stk_time_t now);
/* The same with the peer's ISN given (not taken from the segment's sequence number). */
uint16_t stk__cookie_check_isn(struct stk_engine *e, const struct stk_seg *s, uint32_t peer_isn,
                               stk_time_t now);
int stk__bufs_alloc(struct stk_engine *e, struct stk_tcb *t);
/* Gives a reserved ring its memory before the first write: 0, or -ENOMEM (counted). */
int stk__ring_mem(struct stk_engine *e, struct stk_ring *r);
int stk__ring_grow(struct stk_engine *e, struct stk_ring *r, uint32_t size);
bool stk__ring_autogrow(struct stk_engine *e, struct stk_ring *r, uint32_t size);
void stk__bufs_release(struct stk_engine *e, struct stk_tcb *t, bool snd, bool rcv);
void stk__timer_update(struct stk_engine *e, struct stk_tcb *t);
void stk__notify(struct stk_engine *e, struct stk_tcb *t);
void stk__flush_events(struct stk_engine *e);
/* Ends a connection: reports err (positive errno, 0 for none) and moves to CLOSED; frees it
 * when no socket refers to it. */
void stk__tcp_drop(struct stk_engine *e, struct stk_tcb *t, int err);
/* A listener's SYN queue: children in SYN-RECEIVED, counted in synq_len, so that closing
 * the listener can end them (they point at it). */
void stk__synq_add(struct stk_tcb *l, struct stk_tcb *t);
void stk__synq_del(struct stk_tcb *t);
bool stk__challenge_ok(struct stk_engine *e, struct stk_tcb *t, stk_time_t now);
uint32_t stk__ts_now(const struct stk_tcb *t, stk_time_t now);

/* tcp_out.c */
/* Sends what the state, windows, Nagle and congestion control allow, plus a pending ACK. */
void stk__tcp_output(struct stk_engine *e, struct stk_tcb *t, stk_time_t now);
int stk__send_ack(struct stk_engine *e, struct stk_tcb *t, stk_time_t now);
/* Coalesced ACKs (stk_rx_begin): t's ACK waits for stk__ack_flush at the burst's end. */
void stk__ack_defer(struct stk_engine *e, struct stk_tcb *t);
void stk__ack_flush(struct stk_engine *e, stk_time_t now);
/* The receive buffer size the window scale is chosen for: the autotuning ceiling unless
 * SO_RCVBUF fixed the size. */
uint32_t stk__rcvbuf_ceiling(const struct stk_engine *e, const struct stk_tcb *t);
int stk__send_syn(struct stk_engine *e, struct stk_tcb *t, stk_time_t now);
/* A RST (or RST-ACK) answering segment s with no control block (RFC 9293 3.10.7.1). */
void stk__send_rst_for(struct stk_engine *e, const struct stk_seg *s, stk_time_t now);
void stk__send_rst(struct stk_engine *e, struct stk_tcb *t, stk_time_t now);
int stk__send_keepalive(struct stk_engine *e, struct stk_tcb *t, stk_time_t now);
/* Retransmits [seq, seq+len) (at most one MSS). */
int stk__retransmit(struct stk_engine *e, struct stk_tcb *t, uint32_t seq, uint32_t len,
                    stk_time_t now);
int stk__send_zwp(struct stk_engine *e, struct stk_tcb *t, stk_time_t now);
/* Tail loss probe (RFC 8985 7.2-7.3): arms the PTO when the conditions hold (else clears
 * it), and sends the probe when it fires. */
void stk__tlp_arm(struct stk_engine *e, struct stk_tcb *t, stk_time_t now);
void stk__tlp_send(struct stk_engine *e, struct stk_tcb *t, stk_time_t now);
uint32_t stk__rcv_window(const struct stk_tcb *t);
uint32_t stk__tcp_flight(const struct stk_tcb *t);
uint32_t stk__data_end(const struct stk_tcb *t);

/* tcp_in.c */
void stk__rto_update(struct stk_engine *e, struct stk_tcb *t, uint32_t rtt_us);

static inline bool stk__state_synced(enum stk_tcp_state s)
{
    switch (s) {
    case STK_TCP_ESTABLISHED:
    case STK_TCP_FIN_WAIT_1:
    case STK_TCP_FIN_WAIT_2:
    case STK_TCP_CLOSE_WAIT:
    case STK_TCP_CLOSING:
    case STK_TCP_LAST_ACK:
    case STK_TCP_TIME_WAIT:
        return true;
    default:
        return false;
    }
}
static inline bool stk__state_can_recv(enum stk_tcp_state s)
{
    return s == STK_TCP_ESTABLISHED || s == STK_TCP_FIN_WAIT_1 || s == STK_TCP_FIN_WAIT_2;
}
static inline bool stk__state_can_send(enum stk_tcp_state s)
{
    return s == STK_TCP_ESTABLISHED || s == STK_TCP_CLOSE_WAIT;
}

#endif

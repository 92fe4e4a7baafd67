/*
 * shm.h - the shared-memory protocol between applications (libustack.so) and ustackd.
 *
 * One region (a memfd) per ustackd, mapped by ustackd and by every application process that
 * uses it, at different addresses: everything in it refers to everything else by index or
 * offset, never by pointer. Layout:
 *
 *   [struct shm_hdr][struct shm_cmdq x ncores][struct shm_reply x nreplies]
 *   [struct shm_sock x nsocks][struct shm_proc x nprocs][hold: nprocs rows of nsocks
 *   uint32_t, each row page aligned][data: 2 x ring_size bytes per socket, socket i at i]
 *
 * Sockets live in ustackd; the region holds what both sides need to move data and wait
 * without system calls when busy:
 *  - per socket, two single-producer/single-consumer byte rings: rx (stack -> app) and tx
 *    (app -> stack), with free-running 32-bit head/tail; a listener's rx area holds its
 *    accept queue instead (a bounded multi-producer/multi-consumer queue of socket ids);
 *  - per stack core, a bounded multi-producer command queue (Vyukov's sequence-numbered
 *    slots) that application threads of any process push to and the core pops;
 *  - reply slots, one per application thread that waits for a command's result;
 *  - futex words (shared futexes: the region is MAP_SHARED) for blocking waits, and for
 *    poll/epoll/select an eventfd per socket that ustackd signals when the app armed it;
 *  - a process table and, per process, how many of its fds refer to each socket (the hold
 *    counts), so that ustackd can drop the references of a process that died without
 *    closing them (docs/shm.md "Holders").
 *
 * ustackd trusts nothing read from the region: every index, generation, length, head and
 * tail is checked before use (shm_valid_* below), so a misbehaving client can break only
 * its own sockets.
 *
 * This header is shared by both ends and depends on neither DPDK nor the engine.
 */
#ifndef USTACK_SHIM_SHM_H
#define USTACK_SHIM_SHM_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SHM_MAGIC     0x316d68736b747375ull /* "ustkshm1" */
#define SHM_VERSION   9u
#define SHM_NONE      0xffffffffu
#define SHM_MAX_CORES 64
#define SHM_CMDQ_LEN  1024u /* commands per core queue, a power of two */
#define SHM_CACHELINE 64
#define SHM_NPROCS    1024u /* process table entries (default geometry) */

/* ---- Addresses ------------------------------------------------------------------------ */

/* An endpoint as the protocol carries it (commands, replies, a socket's names, datagram
 * records): IPv4 (family SHM_AF_INET, the value of a zeroed struct: ip in host order) or
 * IPv6 (SHM_AF_INET6: ip6 in network order, scope the interface of a link-local address).
 * A v4-mapped IPv6 address (::ffff:a.b.c.d) never travels: the application turns it into
 * SHM_AF_INET both ways (docs/shm.md "Addresses"). ustackd rejects any other family. */
enum { SHM_AF_INET = 0, SHM_AF_INET6 = 1 };

struct shm_addr {
    uint32_t ip;   /* SHM_AF_INET: host order */
    uint16_t port; /* host order */
    uint8_t family;
    uint8_t pad;
    uint8_t ip6[16]; /* SHM_AF_INET6: network order */
    uint32_t scope;  /* SHM_AF_INET6: interface index of a link-local address, 0 = ustack's */
};

/* ---- Commands (application -> stack core) ---------------------------------------------- */

enum shm_op {
    SHM_OP_NOP = 0,
    SHM_OP_SOCKET,   /* create the engine socket (no reply; attach_pend as ATTACH's); a0 =
                        eventfd number in pid (or -1), a1 = SHM_SOCK_DGRAM for UDP */
    SHM_OP_ATTACH,   /* an accepted socket gets its eventfd: a0 = fd in pid */
    SHM_OP_BIND,     /* addr; reply addr = bound address */
    SHM_OP_LISTEN,   /* a0 = backlog; sent to every core */
    SHM_OP_CONNECT,  /* addr; reply -EINPROGRESS or an error (UDP: 0; a0 = 1 dissolves the
                        association, AF_UNSPEC) */
    SHM_OP_SHUTDOWN, /* a0 = SHUT_RD/WR/RDWR */
    SHM_OP_CLOSE,    /* the last holder closed it (no reply; with SHM_CMD_F_LINGER, one) */
    SHM_OP_SETOPT,   /* a0 = enum stk_sockopt, a1 = value */
    SHM_OP_GETOPT,   /* a0 = enum stk_sockopt; reply val */
    SHM_OP_KICK,     /* tx data queued or rx space freed (no reply); a1: SHM_KICK_* */
    SHM_OP_INFO,     /* reply: struct stk_tcp_info in the reply's info area */
    SHM_OP_COUNT
};
/* SHM_OP_SOCKET's a1: the socket's type. */
#define SHM_SOCK_DGRAM 1
/* SHM_OP_KICK's a1: also write the socket's eventfd if it is ready (ustackd's reclaim of a
 * dead holder: it may have taken the one signal meant for all, docs/shm.md "Holders"). */
#define SHM_KICK_WAKE 1

/* shm_cmd.flags */
enum {
    /* SHM_OP_CLOSE: reset the connection (RST) instead of closing it gracefully. Stack cores
     * send it to each other for accepted connections a closed listener never handed out. */
    SHM_CMD_F_ABORT = 1u << 0,
    /* SHM_OP_CLOSE of a socket with SO_LINGER on and a timeout (a0 seconds): the reply comes
     * once the connection's FIN is acknowledged (FIN_WAIT_2, TIME_WAIT, closed), it was
     * reset, or a0 seconds passed, as Linux's close() waits (docs/preload.md "Close"). */
    SHM_CMD_F_LINGER = 1u << 1,
};

struct shm_cmd {
    _Atomic uint32_t seq; /* queue slot sequence (see shm_cmdq_push) */
    uint16_t op;
    uint16_t flags;
    uint32_t sock;  /* socket index */
    uint32_t gen;   /* its generation when the app looked it up */
    uint32_t reply; /* reply slot index, or SHM_NONE */
    int32_t pid;    /* the calling process */
    int32_t a0, a1;
    struct shm_addr addr; /* BIND, CONNECT */
    uint8_t rsv[4];
};

struct shm_cmdq {
    _Alignas(SHM_CACHELINE) _Atomic uint32_t enq;
    _Alignas(SHM_CACHELINE) _Atomic uint32_t deq; /* written by the core only */
    _Atomic uint32_t sleeping;                    /* the core is (about to be) asleep */
    int32_t wake_fd; /* eventfd waking the core; same number in every client process */
    _Alignas(SHM_CACHELINE) struct shm_cmd slot[SHM_CMDQ_LEN];
};

/* ---- Replies (stack core -> the waiting application thread) ------------------------------ */

struct shm_reply {
    _Atomic uint32_t owner; /* 0 free, else the owning thread's tid */
    _Atomic uint32_t seq;   /* futex: bumped by the stack when a result is posted */
    int32_t pid;            /* the owning process (for reclaiming after its death) */
    int32_t result;         /* 0 or -errno */
    int32_t val;
    struct shm_addr addr;      /* BIND, CONNECT: the local address */
    _Atomic uint32_t sleeping; /* the owner is (about to be) in FUTEX_WAIT on seq */
    uint8_t info[256 - 52];    /* SHM_OP_INFO: struct stk_tcp_info */
};

/* ---- Sockets ------------------------------------------------------------------------- */

enum shm_sock_state {
    SHM_SOCK_FREE = 0,
    SHM_SOCK_RESERVED, /* being set up by whoever allocated it */
    SHM_SOCK_LIVE,     /* the application may use it */
    SHM_SOCK_CLOSING,  /* the last holder closed it; the stack finishes and frees it */
};

/* Conditions only the stack knows, published in shm_sock.flags. The app derives POLLIN and
 * POLLOUT from the rings and these. */
enum {
    SHM_F_CONNECTED = 1u << 0, /* connect finished (or accepted) */
    SHM_F_LISTENING = 1u << 1,
    SHM_F_EOF = 1u << 2,     /* peer's FIN: all data before it is in the rx ring */
    SHM_F_ERROR = 1u << 3,   /* so_error holds a pending error */
    SHM_F_RESET = 1u << 4,   /* the connection is gone (reset, timeout): no more I/O */
    SHM_F_WR_SHUT = 1u << 5, /* our side shut down writing */
    SHM_F_RD_SHUT = 1u << 6,
    SHM_F_HUP = 1u << 7, /* both directions closed */
    SHM_F_CONNECTING = 1u << 8,
    SHM_F_DGRAM = 1u << 10,  /* a UDP socket: its rings carry datagram records (below) */
    SHM_F_NOSOCK = 1u << 11, /* its SOCKET failed (so_error says why): no engine socket */
};

/* What applications did to a socket (shared by every holder, as the kernel's file is). */
enum {
    SHM_A_WR_SHUT = 1u << 0, /* shutdown(SHUT_WR) called: no more writes */
    SHM_A_RD_SHUT = 1u << 1, /* shutdown(SHUT_RD) called: reads return 0 */
    SHM_A_V6ONLY = 1u << 2,  /* an AF_INET6 socket's IPV6_V6ONLY (getsockopt reads it here) */
    /* connect() queued a CONNECT without a reply: the socket is connecting until the stack's
     * flags say more (SHM_F_CONNECTING, CONNECTED, or ERROR and RESET if it failed). */
    SHM_A_CONNECTING = 1u << 3,
};

/* Stack-side condition: it holds engine data that did not fit the rx ring; the app kicks
 * after reading so that the stack refills. */
#define SHM_F_RX_BLOCKED (1u << 9)

struct shm_ring {
    _Alignas(SHM_CACHELINE) _Atomic uint32_t head; /* producer: bytes written, free-running */
    _Alignas(SHM_CACHELINE) _Atomic uint32_t tail; /* consumer: bytes read, free-running */
};

struct shm_sock {
    _Atomic uint32_t state; /* enum shm_sock_state */
    _Atomic uint32_t gen;   /* bumped every time the slot is freed */
    _Atomic uint32_t refs;  /* application fds (across processes) holding it */
    uint32_t core;          /* the core that owns it (a listener: the core that bound it) */
    _Atomic uint32_t flags; /* SHM_F_*, written by the stack */
    _Atomic int32_t so_error;
    _Atomic uint32_t seq;       /* futex: bumped by the stack at every change an app may wait for */
    _Atomic uint32_t waiters;   /* app threads blocked on seq */
    _Atomic uint32_t armed;     /* POLL* bits an app waits for through the eventfd */
    _Atomic uint32_t kick;      /* 1 while a SHM_OP_KICK is queued */
    _Atomic uint32_t app_flags; /* SHM_A_*, written by applications */
    /* Edge-triggered epoll (docs/shm.md "Events"): the stack counts events as Linux's socket
     * wake-ups do, and signals armed_et only when an event of an armed kind happens. */
    _Atomic uint32_t armed_et; /* POLL* bits EPOLLET members wait for; apps set, stack clears */
    _Atomic uint32_t ev_in;   /* stack: +1 per arrival (rx data, queued connection), state change */
    _Atomic uint32_t ev_out;  /* +1 when write space appears after nospace, per state change */
    _Atomic uint32_t nospace; /* app: a write found the tx ring full; stack clears with ev_out */
    _Atomic uint32_t lt_bits; /* apps: POLL* bits of level-triggered epoll members (sticky) */
    _Atomic uint32_t sigb;    /* POLL* bits the eventfd was signalled for (level waiters) */
    /* An accepted socket's SHM_OP_ATTACH goes without a reply: SHM_ATT_* bits (the stack
     * fetches the eventfd by number, so the app must not close or reuse that number while
     * PEND or BUSY is set); the stack sets 0 when it is done (docs/shm.md "Commands"). */
    _Atomic uint32_t attach_pend;
    /* Applications: the rings are single-producer/single-consumer, but several threads (or
     * processes) may send or receive on one socket at once, as Linux serialises them with
     * the socket lock. These spin locks make one of them the producer of tx (wlock) or the
     * consumer of rx (rlock) while it copies; never held while waiting. */
    _Atomic uint32_t wlock, rlock;
    struct shm_addr la, ra; /* local and remote address, set by the stack */
    /* AF_INET or AF_INET6: the domain the application created the socket in (an accepted
     * one: its listener's, copied by the stack). Only applications act on it: an AF_INET6
     * socket shows IPv4 addresses as v4-mapped ones. */
    uint32_t domain;
    /* SO_LINGER's timeout in seconds when on with one (l_onoff and l_linger > 0), else 0:
     * written by applications, read by the one whose close is the last. */
    _Atomic uint32_t linger_s;
    struct shm_ring rx, tx;
    /* A listener's accept queue lives in its rx data area: entries of {seq, socket}. */
    _Alignas(SHM_CACHELINE) _Atomic uint32_t aq_enq;
    _Alignas(SHM_CACHELINE) _Atomic uint32_t aq_deq;
};

/* A UDP socket's rings hold records: this header, then len payload bytes (no padding). The
 * producer publishes a whole record at once (one head update), so the consumer sees either
 * all of it or none. The stack checks every tx record (len <= SHM_DGRAM_MAX and within
 * what the ring holds) before using it. */
struct shm_dgram {
    uint32_t len;         /* payload bytes that follow */
    struct shm_addr addr; /* rx: the sender; tx: the destination (family SHM_AF_INET, ip 0
                             and port 0: the connected peer) */
    uint32_t dst;         /* rx, SHM_AF_INET: the local address it was sent to (IP_PKTINFO) */
    uint8_t dst6[16];     /* rx, SHM_AF_INET6: the same (IPV6_PKTINFO); tx: unused */
};
#define SHM_DGRAM_HLEN ((uint32_t)sizeof(struct shm_dgram))
#define SHM_DGRAM_MAX  65527u /* the largest UDP payload (IPv6; IPv4's is 65507) */

struct shm_aq_entry {
    _Atomic uint32_t seq;
    uint32_t sock;
};

/* ---- Processes (holders) ---------------------------------------------------------------- */

enum shm_proc_state {
    SHM_PROC_FREE = 0,
    SHM_PROC_PENDING, /* a fork child's entry, made by its parent before fork: pid not yet known */
    SHM_PROC_LIVE,    /* pid is set */
    SHM_PROC_REAPING, /* ustackd is dropping a dead process's references */
};

/* One process using the region. Its row of hold counts says how many of its fds refer to
 * each socket (its share of shm_sock.refs). Entries are taken by applications and given back
 * only by ustackd, once the process is dead and its references dropped. */
struct shm_proc {
    _Atomic uint32_t state; /* enum shm_proc_state */
    _Atomic int32_t pid;
    _Atomic int32_t parent; /* PENDING: the process that made it (for a fork that never ran) */
    uint32_t pad;
};

/* ---- Sockets passed between processes (SCM_RIGHTS) ------------------------------------- */

/* A ustack socket sent over a Unix socket travels as its eventfd; the sender notes which
 * socket that eventfd stands for here, with a reference of the socket's own (in no
 * process's hold row), and the receiver that finds the eventfd by its inode adopts the
 * socket and takes that reference into its row (docs/preload.md "Passing sockets"). */
enum shm_pass_state { SHM_PASS_FREE = 0, SHM_PASS_FILLING, SHM_PASS_INFLIGHT, SHM_PASS_CLAIMING };
#define SHM_NPASS 64

struct shm_pass {
    _Atomic uint32_t state; /* enum shm_pass_state */
    uint32_t slot, gen;
    uint32_t nonblock; /* the sender's O_NONBLOCK: a status flag of the shared file */
    uint64_t dev, ino; /* the eventfd's */
    uint64_t sent_ns;  /* CLOCK_MONOTONIC at the send: unclaimed after SHM_PASS_TTL_S, freed */
};
#define SHM_PASS_TTL_S 30

/* ---- The region ---------------------------------------------------------------------- */

/* SHM_BUSY: the spawned ustackd found the device served by another ustackd (a race between
 * two spawners): the spawner attaches to that one instead (docs/shm.md "Start-up"). */
enum shm_hdr_state { SHM_STARTING = 0, SHM_READY, SHM_FAILED, SHM_GONE, SHM_BUSY };

/* shm_hdr.features: what the engine serves beyond IPv4 TCP and UDP. */
enum {
    SHM_FEAT_INET6 = 1u << 0, /* TCP over IPv6 (without it: -EAFNOSUPPORT, docs/shm.md) */
    SHM_FEAT_UDP6 = 1u << 1,  /* UDP over IPv6 */
};

struct shm_hdr {
    uint64_t magic;
    uint32_t version;
    uint32_t ncores;
    uint64_t size;
    uint32_t nsocks, nreplies;
    uint32_t ring_size; /* bytes per ring, a power of two */
    uint32_t nprocs;    /* process table entries */
    uint64_t off_cmdq, off_reply, off_sock, off_data;
    uint64_t off_proc, off_hold, hold_stride; /* hold_stride: bytes per process row */
    _Atomic uint32_t state;                   /* enum shm_hdr_state; futex for the spawner's wait */
    _Atomic int32_t stack_pid;                /* ustackd */
    _Atomic uint32_t sock_hint, reply_hint;
    _Atomic uint32_t features;  /* SHM_FEAT_*, set by ustackd before SHM_READY */
    _Atomic uint32_t sock_live; /* slots not FREE (a hint for shm_sock_alloc only) */
    char errmsg[512];           /* why ustackd failed to start, for the application to print */
    struct shm_pass pass[SHM_NPASS];
};

/* shm_sock.attach_pend. PEND: the app queued ATTACH; BUSY: the stack is fetching the eventfd
 * (it set BUSY in place of PEND); WAIT: an app thread sleeps on the word (futex) until both
 * are clear; CANCEL: the app's last close took PEND back before the stack began, so the
 * stack fetches nothing (the number may already be closed or reused) and only clears it. */
enum {
    SHM_ATT_PEND = 1u << 0,
    SHM_ATT_WAIT = 1u << 1,
    SHM_ATT_BUSY = 1u << 2,
    SHM_ATT_CANCEL = 1u << 3,
};

/* The sizes a region is made with. */
struct shm_geometry {
    uint32_t ncores, nsocks, nreplies, ring_size;
    uint32_t nprocs; /* 0: SHM_NPROCS */
};

/* Bytes needed for a region of this geometry (0 if it is invalid). */
uint64_t shm_region_size(const struct shm_geometry *g);
/* Bytes of its head: everything before the processes' hold counts and the sockets' rings
 * (off_hold), 0 if invalid. An application maps only the head at attach, its own row of hold
 * counts, and the rings a chunk at a time when a socket first uses them (shim/client.c,
 * docs/shm.md "Mapping"). */
uint64_t shm_region_head(const struct shm_geometry *g);
/* Lays out a zeroed region of shm_region_size() bytes; only its head is written. */
void shm_region_init(void *base, const struct shm_geometry *g);
/* Checks a region's header: the layout its geometry gives, a region of at most fsize bytes
 * (the memfd's size), and at least its head among the mapped bytes at base. 0 or -EINVAL. */
int shm_region_check(const void *base, uint64_t mapped, uint64_t fsize);

/* ---- Attaching to a running ustackd (docs/shm.md "Start-up") ----------------------------
 * A process with no inherited region connects to ustackd's SOCK_SEQPACKET Unix socket,
 * sends one shm_attach_req and gets one shm_attach_rep; on success the reply carries (by
 * SCM_RIGHTS) the new region's memfd, its liveness pipe's write end and one wake eventfd per
 * core, in that order. */
#define SHM_ATTACH_MAGIC   0x75737461u /* "usta" */
#define SHM_ATTACH_VERSION 1u

struct shm_attach_req {
    uint32_t magic, version;
    uint32_t ncores, nsocks, ring_size; /* the client's geometry (its USTACK_CORES count) */
    uint32_t ip, prefix;                /* its USTACK_IP */
    uint32_t cores[SHM_MAX_CORES];      /* its USTACK_CORES */
    char dev[256];                      /* its USTACK_DEV */
};

struct shm_attach_rep {
    uint32_t magic;
    int32_t status; /* 0, or -errno with err */
    uint32_t nfds;  /* 2 + ncores on success */
    int32_t pid;    /* ustackd's */
    char err[400];
};

/* The attach socket's path for a device in the caller's network namespace, next to
 * ustackd's device lock: "/run/ustack/<dev>.<netns inode>.sock" (suffix ".sock"; ".lock"
 * gives the lock). Returns 0, or -ENAMETOOLONG if it does not fit len. */
int shm_run_path(const char *dev, const char *suffix, char *buf, size_t len);

static inline struct shm_hdr *shm_hdr(void *base)
{
    return (struct shm_hdr *)base;
}
static inline struct shm_cmdq *shm_cmdq(void *base, uint32_t core)
{
    return (struct shm_cmdq *)((char *)base + shm_hdr(base)->off_cmdq) + core;
}
static inline struct shm_reply *shm_reply(void *base, uint32_t i)
{
    return (struct shm_reply *)((char *)base + shm_hdr(base)->off_reply) + i;
}
static inline struct shm_sock *shm_sock(void *base, uint32_t i)
{
    return (struct shm_sock *)((char *)base + shm_hdr(base)->off_sock) + i;
}
static inline struct shm_proc *shm_proc(void *base, uint32_t p)
{
    return (struct shm_proc *)((char *)base + shm_hdr(base)->off_proc) + p;
}
/* Process p's hold count of socket i. */
static inline _Atomic uint32_t *shm_hold(void *base, uint32_t p, uint32_t i)
{
    struct shm_hdr *h = shm_hdr(base);
    return (_Atomic uint32_t *)((char *)base + h->off_hold + (uint64_t)p * h->hold_stride) + i;
}
static inline uint8_t *shm_rx_data(void *base, uint32_t i)
{
    struct shm_hdr *h = shm_hdr(base);
    return (uint8_t *)base + h->off_data + (uint64_t)i * 2 * h->ring_size;
}
static inline uint8_t *shm_tx_data(void *base, uint32_t i)
{
    return shm_rx_data(base, i) + shm_hdr(base)->ring_size;
}

/* ---- Command queue ------------------------------------------------------------------- */

/* Any thread of any process: copies *c into the queue. Returns 0, or -EAGAIN when full. A
 * slot is published with a compare-and-swap, so that a consumer that gave up on it (its
 * producer looked dead, shm_cmdq_repair) and the producer never both own it. */
int shm_cmdq_push(struct shm_cmdq *q, const struct shm_cmd *c);
/* The owning core only: pops into *out. Returns 1, or 0 when empty. */
int shm_cmdq_pop(struct shm_cmdq *q, struct shm_cmd *out);
bool shm_cmdq_empty(struct shm_cmdq *q);
/* The same with the consumer's position kept in *deq, private to the consumer (the shared
 * deq is only published, never read back: a client may have scribbled on it). */
int shm_cmdq_pop_at(struct shm_cmdq *q, uint32_t *deq, struct shm_cmd *out);
bool shm_cmdq_empty_at(struct shm_cmdq *q, uint32_t deq);

/* The consumer, now and then (never per command): puts right what a dead producer or a
 * scribbling client left at its position *deq. States no honest producer leaves are
 * repaired at once (enq out of range, a free slot with a wrong sequence, a claimed slot
 * with a sequence that is neither "claimed" nor "filled"); a slot claimed but not filled is
 * skipped when *stall says it has looked the same for stall_ns. Returns the repairs made. */
struct shm_cmdq_stall {
    uint32_t pos, seq, enq;
    int64_t since; /* < 0: nothing seen */
};
unsigned shm_cmdq_repair(struct shm_cmdq *q, uint32_t *deq, struct shm_cmdq_stall *stall,
                         int64_t now_ns, int64_t stall_ns);

/* ---- Byte rings ---------------------------------------------------------------------- */

/* Bytes readable / writable, from the consumer's / producer's point of view. A head/tail
 * pair a peer corrupted reads as 0 (and shm_ring_sane() says so). */
uint32_t shm_ring_used(const struct shm_ring *r, uint32_t size);
uint32_t shm_ring_space(const struct shm_ring *r, uint32_t size);
bool shm_ring_sane(const struct shm_ring *r, uint32_t size);
/* Producer: copies up to len bytes in; returns bytes copied. */
uint32_t shm_ring_write(struct shm_ring *r, uint8_t *data, uint32_t size, const void *src,
                        uint32_t len);
/* Consumer: copies up to len bytes out (peek leaves them); returns bytes copied. */
uint32_t shm_ring_read(struct shm_ring *r, const uint8_t *data, uint32_t size, void *dst,
                       uint32_t len, bool peek);
/* Producer: copies len bytes to off bytes past head, without publishing them (the caller
 * checked the space; shm_ring_produce publishes). */
void shm_ring_put_at(struct shm_ring *r, uint8_t *data, uint32_t size, uint32_t off,
                     const void *src, uint32_t len);
/* Consumer: copies len bytes from off bytes past tail (the caller checked they are there). */
void shm_ring_get_at(const struct shm_ring *r, const uint8_t *data, uint32_t size, uint32_t off,
                     void *dst, uint32_t len);
/* Up to two pieces covering len bytes at off past the producer's head (wr) or the
 * consumer's tail (!wr); the caller checked the range. Returns the count. */
int shm_ring_span_at(const struct shm_ring *r, const uint8_t *data, uint32_t size, uint32_t off,
                     uint32_t len, bool wr, uint8_t *p[2], uint32_t n[2]);
/* Consumer: drops up to len bytes. */
uint32_t shm_ring_skip(struct shm_ring *r, uint32_t size, uint32_t len);
/* Producer/consumer zero-copy views: up to two pieces of writable / readable bytes. */
int shm_ring_wspan(const struct shm_ring *r, uint8_t *data, uint32_t size, uint8_t *p[2],
                   uint32_t n[2]);
void shm_ring_produce(struct shm_ring *r, uint32_t len);
int shm_ring_rspan(const struct shm_ring *r, const uint8_t *data, uint32_t size,
                   const uint8_t *p[2], uint32_t n[2]);

/* ---- Accept queue (in a listener's rx data area) --------------------------------------- */

uint32_t shm_aq_capacity(uint32_t ring_size);
/* The stack, when the socket starts listening (before anyone can push or pop). */
void shm_aq_init(struct shm_sock *l, void *aq_data, uint32_t ring_size);
/* Stack cores: 0 or -EAGAIN when full. */
int shm_aq_push(struct shm_sock *l, void *aq_data, uint32_t ring_size, uint32_t sock);
/* Applications (any process): 1 and *sock, or 0 when empty. */
int shm_aq_pop(struct shm_sock *l, void *aq_data, uint32_t ring_size, uint32_t *sock);
bool shm_aq_empty(struct shm_sock *l);

/* ---- Slots --------------------------------------------------------------------------- */

/* Reserves a free socket slot (FREE -> RESERVED); returns its index or SHM_NONE. Next fit
 * within a window of about twice the slots in use (sock_live), so that a process opening and
 * closing connections reuses the same few slots, whose ring pages are already mapped and
 * cached in both processes, instead of walking all nsocks slots (docs/shm.md "Sockets"). */
uint32_t shm_sock_alloc(void *base);
/* Back to FREE, with a new generation (the stack, once it is done with the socket). */
void shm_sock_free(void *base, uint32_t i);
/* The same, keeping sock_hint and sock_live in sh, the region's shared header page, where
 * base's header may be a private copy (ustackd's view, dpdk_io/shm_server.c): the counts
 * must be the ones every process sees, or slots an application allocates and the stack frees
 * only ever add to the count and next fit walks every slot (cold ring pages). */
uint32_t shm_sock_alloc_in(void *base, struct shm_hdr *sh);
void shm_sock_free_in(void *base, struct shm_hdr *sh, uint32_t i);
/* Is i a valid index whose generation is gen? (ustackd checks every command with it.) */
bool shm_sock_valid(void *base, uint32_t i, uint32_t gen);

/* Process table: an entry for process pid (LIVE), or, with pid 0, a PENDING one for a fork
 * child that parent is about to make. SHM_NONE when the table is full. */
uint32_t shm_proc_alloc(void *base, int32_t pid, int32_t parent);
/* The child (or its parent, after fork returned) names the pid of a PENDING entry: true if
 * the entry is (now) LIVE with that pid. */
bool shm_proc_set_pid(void *base, uint32_t p, int32_t pid);
/* A LIVE entry with this pid (an exec'd image finding its own), or SHM_NONE. */
uint32_t shm_proc_find(void *base, int32_t pid);
/* A PENDING entry whose fork failed: its hold counts are zeroed and it is FREE again. row:
 * the entry's hold counts as the caller maps them (NULL: the caller wrote none; a free
 * entry's row is all zero). */
void shm_proc_cancel(void *base, uint32_t p, _Atomic uint32_t *row);

/* A reply slot for thread tid of process pid, or SHM_NONE. */
uint32_t shm_reply_alloc(void *base, uint32_t tid, int32_t pid);
void shm_reply_release(void *base, uint32_t i);

/* ---- Waiting ------------------------------------------------------------------------- */

/* Blocks while *word == expected, up to timeout_ns (< 0: forever). Returns 0 when woken or
 * the value differs, -ETIMEDOUT, or -EINTR. Shared (cross-process) futex. */
int shm_futex_wait(_Atomic uint32_t *word, uint32_t expected, int64_t timeout_ns);
void shm_futex_wake(_Atomic uint32_t *word, int n);

/* The stack after changing something a socket's users may wait for: bumps seq and wakes
 * blocked threads. (The eventfd for poll/epoll is the stack's business, see docs/shm.md.) */
void shm_sock_notify(struct shm_sock *s);

/* ---- Readiness ----------------------------------------------------------------------- */

/* Linux's poll bits (<poll.h>; the same values as EPOLLIN...), so that this header needs no
 * _GNU_SOURCE for POLLRDHUP. */
#define SHM_POLLIN    0x0001u
#define SHM_POLLOUT   0x0004u
#define SHM_POLLERR   0x0008u
#define SHM_POLLHUP   0x0010u
#define SHM_POLLRDHUP 0x2000u

/* connect() queued a CONNECT without a reply that the stack has not taken yet (its flags,
 * shm_sock.flags f, say nothing of it; app_flags a): the socket counts as connecting. */
static inline bool shm_connect_queued(uint32_t f, uint32_t a)
{
    return (a & SHM_A_CONNECTING) &&
           !(f & (SHM_F_CONNECTING | SHM_F_CONNECTED | SHM_F_RESET | SHM_F_ERROR));
}

/* The POLL* bits socket i is ready for, from its rings and flags alone: the one definition
 * both ends use (the app to answer poll/select/epoll and to re-check after arming, the
 * stack to decide whether an armed eventfd must be signalled). It follows Linux's tcp_poll:
 *  - a listener: POLLIN when its accept queue is not empty; POLLERR as below; nothing else;
 *  - "read side done" = EOF (peer's FIN, all data before it in the rx ring) or RESET or
 *    shut down for reading (by the stack's SHM_F_RD_SHUT or an app's SHM_A_RD_SHUT):
 *    POLLIN | POLLRDHUP;
 *  - "write side done" = RESET or shut down for writing (SHM_F_WR_SHUT, SHM_A_WR_SHUT);
 *  - POLLHUP: RESET, or SHM_F_HUP, or both sides done, or a socket neither connected nor
 *    connecting (a fresh or failed socket, as Linux's TCP_CLOSE);
 *  - while connecting: nothing but POLLERR;
 *  - otherwise POLLIN when the rx ring holds data, and POLLOUT when the tx ring has space,
 *    or the write side is done, or it never connected (a write then fails at once, so it
 *    does not block: Linux reports POLLOUT then too);
 *  - POLLERR: so_error != 0 (cleared by SHM_OP_GETOPT STK_SO_ERROR).
 * Corrupted ring indices read as an empty rx ring and a full tx ring. */
static inline uint32_t shm_sock_poll(void *base, uint32_t i)
{
    struct shm_hdr *h = shm_hdr(base);
    if (i >= h->nsocks)
        return SHM_POLLERR | SHM_POLLHUP;
    struct shm_sock *s = shm_sock(base, i);
    uint32_t f = atomic_load_explicit(&s->flags, memory_order_acquire);
    uint32_t a = atomic_load_explicit(&s->app_flags, memory_order_acquire);
    uint32_t m = atomic_load_explicit(&s->so_error, memory_order_relaxed) ? SHM_POLLERR : 0;
    if (f & SHM_F_DGRAM) {
        /* Linux's datagram_poll (no connection to wait for, no POLLHUP for an unconnected
         * socket): POLLIN with a datagram queued or the read side shut (with POLLRDHUP),
         * POLLHUP once both sides are shut, POLLOUT while a quarter of the tx ring is
         * free (sock_writeable: half of the send buffer). */
        bool rd = (f & SHM_F_RD_SHUT) || (a & SHM_A_RD_SHUT);
        bool wr = (f & SHM_F_WR_SHUT) || (a & SHM_A_WR_SHUT);
        if (rd)
            m |= SHM_POLLIN | SHM_POLLRDHUP;
        if (rd && wr)
            m |= SHM_POLLHUP;
        if (shm_ring_used(&s->rx, h->ring_size))
            m |= SHM_POLLIN;
        if (shm_ring_space(&s->tx, h->ring_size) >= h->ring_size / 4)
            m |= SHM_POLLOUT;
        return m;
    }
    if (f & SHM_F_LISTENING)
        return m | (shm_aq_empty(s) ? 0 : SHM_POLLIN);
    bool rd_done = (f & (SHM_F_EOF | SHM_F_RESET | SHM_F_RD_SHUT)) || (a & SHM_A_RD_SHUT);
    bool wr_done = (f & (SHM_F_RESET | SHM_F_WR_SHUT)) || (a & SHM_A_WR_SHUT);
    bool conn = f & SHM_F_CONNECTED;
    bool connecting = (f & SHM_F_CONNECTING) || shm_connect_queued(f, a);
    if ((f & (SHM_F_RESET | SHM_F_HUP)) || (rd_done && wr_done) || (!conn && !connecting))
        m |= SHM_POLLHUP;
    if (rd_done)
        m |= SHM_POLLIN | SHM_POLLRDHUP;
    if (connecting && !conn)
        return m;
    if (shm_ring_used(&s->rx, h->ring_size))
        m |= SHM_POLLIN;
    if (wr_done || !conn || shm_ring_space(&s->tx, h->ring_size))
        m |= SHM_POLLOUT;
    return m;
}

/* ---- Events (edge-triggered epoll) ----------------------------------------------------- */
/* Event kinds for edge-triggered waiters, as the kernel's socket wake-up keys: an arrival
 * (sk_data_ready: EPOLLIN), new write space (sk_write_space: EPOLLOUT), a state change
 * (sk_state_change: every waiter). */
#define SHM_EV_IN  1u
#define SHM_EV_OUT 2u
#define SHM_EV_ALL (SHM_EV_IN | SHM_EV_OUT)

/* Write space that ends a nospace condition (an edge for EPOLLOUT|EPOLLET): a quarter of the
 * ring, so that a bulk sender is woken per chunk, not per acknowledgement. */
static inline uint32_t shm_nospace_end(uint32_t ring_size)
{
    return ring_size / 4;
}

/* Does an event of kinds ev concern an edge-triggered waiter armed for bits? */
static inline bool shm_ev_match(uint32_t ev, uint32_t bits)
{
    return ((ev & SHM_EV_IN) && (bits & (SHM_POLLIN | SHM_POLLRDHUP))) ||
           ((ev & SHM_EV_OUT) && (bits & SHM_POLLOUT)) || ev == SHM_EV_ALL;
}

#endif

/*
 * client_int.h - what the files of the client side share (client.c, client_io.c,
 * client_opt.c, client_poll.c). Not for preload/.
 */
#ifndef USTACK_SHIM_CLIENT_INT_H
#define USTACK_SHIM_CLIENT_INT_H

#include <errno.h>
#include <pthread.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <string.h>

#include "client.h"
#include "ucopy.h"
#include "shm.h"

#define SHIM_MAX_OPTS 12
#define SHIM_NS_PER_S 1000000000ll
#define SHIM_FOREVER  INT64_MAX

/* The connection state as this process's calls left it (the stack's view is in flags). */
enum shim_cstate {
    SHIM_CS_NEW = 0,    /* created, maybe bound */
    SHIM_CS_LISTEN,     /* listen() succeeded */
    SHIM_CS_CONNECTING, /* connect() started, its result not yet returned by connect() */
    SHIM_CS_CONNECTED,  /* connected (connect() returned 0, or accepted) */
    SHIM_CS_FAILED,     /* the connect failed; connect() may try again */
};

/* A socket option set by the application, kept to be replayed on a kernel socket when the
 * socket is handed over to the kernel at connect()/bind(). */
struct shim_opt {
    int level, name;
    uint32_t len;
    uint8_t val[16];
};

/* This process's state of one socket: what the kernel keeps in the open file description
 * (shared by dups, copied by fork). Indexed by slot; gen says which socket it belongs to. */
struct shim_file {
    uint32_t gen;
    uint32_t nfds;    /* fds of this process that refer to the socket */
    uint8_t nonblock; /* O_NONBLOCK */
    uint8_t cstate;   /* enum shim_cstate */
    uint8_t bound;
    uint8_t nopts;
    /* The eventfd came from a spare that was not emptied at its close (no level-triggered
     * registration was parked with it): it may still count a signal of the socket that had
     * it, so a registration that would report that empties it first (client_poll.c
     * shim_epoll_ctl). */
    uint8_t efd_stale;
    /* What bind() asked for (port: the one bound). An AF_INET6 socket bound to :: on an
     * engine without IPv6 is bound to IPv4's wildcard there (any6: it still shows ::). */
    struct shm_addr bind_a;
    uint8_t any6;
    /* A listener bound to the wildcard: lfd is what poll/epoll watch for its kernel
     * loopback listeners (lacc: 127.0.0.1 and/or ::1), -1 when none. With one listener lfd
     * is it; with two, an epoll set of both. */
    int lfd;
    int lacc[2];
    int64_t rcvtimeo, sndtimeo; /* ns, 0 = none (SO_RCVTIMEO / SO_SNDTIMEO) */
    struct shim_opt opts[SHIM_MAX_OPTS];
};

struct shim_epoll;

/* A call in progress on a socket pins it, as the kernel's fdget() pins the open file for
 * the length of a system call (docs/preload.md "Calls racing close"): while a thread of this
 * process is inside a call on slot i, a close (or dup2 onto, or hand-over) of an fd of that
 * socket in another thread does not drop this process's reference to it; the release is
 * owed and made by the last call to leave. So the stack cannot free the slot, and give it to
 * a new socket, under a call that still copies into its rings. Process-private (indexed by
 * slot, never reset while the process lives); each process pins only its own references. */
struct shim_pin {
    _Atomic uint64_t use; /* low half: calls in progress; high half: releases owed */
    _Atomic uint32_t efd; /* threads using the socket's eventfd by its fd number right now */
    uint32_t owed_gen;    /* the generation the owed releases are for (under the lock) */
};
#define SHIM_PIN_CALL 1ull
#define SHIM_PIN_OWED (1ull << 32)

/* The process. One per process; copied into a child by fork. */
#define SHIM_SPARE_MAX 256 /* USTACK_SPARE_FDS's ceiling */

struct shim_cli {
    struct shim_sys sys;
    void *base;
    struct shm_hdr *hdr;
    uint32_t nsocks, ring, ncores;
    int shm_fd, pipe_fd, scratch_fd;
    int scratch4u_fd;           /* AF_INET UDP scratch socket (scratch_fd: TCP) */
    int scratch6_fd[2];         /* AF_INET6 scratch sockets: [0] TCP, [1] UDP */
    int wake_fd[SHM_MAX_CORES]; /* this process's numbers of the cores' wake eventfds */
    _Atomic int32_t pid;
    uint32_t ip, mask, gw;
    uint32_t ifindex; /* the kernel's index of ustack's interface (IP_PKTINFO), 0 unknown */
    uint8_t ip6[16], ip6_prefix;
    bool gw6;
    struct shim_file *files;
    struct shim_pin *pins; /* nsocks entries */
    _Atomic int attached;
    _Atomic int dead;
    _Atomic int gone; /* shim__stack_gone() ran: every socket's eventfd was signalled */
    /* A pidfd of ustackd (private, above 1000), opened on first need; 0 = not yet, -1 = none
     * (pidfd_open failed). Read without the lock, set under it. */
    int stack_pidfd;
    /* procfs's root (O_PATH, private, above 1000), opened at attach, or -1: a socket's
     * eventfd is known by its "eventfd-id" in self/fdinfo, which a process that chroot()s
     * afterwards (Dovecot's login processes) still reads through it. */
    int proc_fd;
    /* Serialises fd-table changes (create, close, dup) against fork's reference bumps, and
     * guards the epoll list. Never held while waiting for the stack. */
    pthread_mutex_t lock;
    _Atomic uint32_t next_core;
    /* Our process table entry (its row counts our fds per socket, so that ustackd can drop
     * them if we die), SHM_NONE when the table was full; the entry fork's prepare step made
     * for the child; and the value our copy locks hold (who holds them, for ustackd). */
    uint32_t pidx, child_pidx, lockval;
    struct shim_epoll *epolls;
    pthread_key_t reply_key;
    /* Spare eventfds (under the lock; nspare also read without it): numbers of closed
     * sockets' eventfds kept for the next socket, with their epoll registrations
     * (docs/preload.md "Spare eventfds"). At most spare_max, counting the reservations of
     * closes under way; none at or above spare_lim (the soft RLIMIT_NOFILE less a margin). */
    int spare[SHIM_SPARE_MAX];
    uint8_t spare_stale[SHIM_SPARE_MAX]; /* not emptied at its close (shim_file.efd_stale) */
    _Atomic int nspare;
    int spare_resv, spare_max, spare_lim;
    /* The sockets' rings, mapped from the region's memfd a chunk of 2^chunk_shift slots at a
     * time when a socket of the chunk first moves data here (docs/shm.md "Mapping"): chunk[c]
     * is the rx ring of the chunk's first slot, NULL until then. Only the head is mapped at
     * attach, so that a process bounding its address space (RLIMIT_AS) pays for the rings it
     * uses, not for all nsocks. */
    uint8_t *_Atomic *chunk;
    uint32_t chunk_shift, nchunks;
    uint64_t off_data, region_size;
    /* Our row of hold counts (NULL when pidx is SHM_NONE) and, between fork's prepare and
     * its return, the child's: mapped one at a time like the rings, unless the region is
     * mapped whole (docs/shm.md "Mapping"). */
    _Atomic uint32_t *row, *child_row;
    uint64_t off_hold, hold_stride;
    bool whole;
};

extern struct shim_cli shim__c;

/* Process p's row of hold counts (its own mapping unless the region is mapped whole), or
 * NULL (said once on stderr); shim__unmap_row gives it back. */
_Atomic uint32_t *shim__map_row(uint32_t p);
void shim__unmap_row(_Atomic uint32_t *row);
/* Maps chunk c (any thread; the first mapping wins): its base, or NULL (said once on
 * stderr) when it cannot be mapped. */
uint8_t *shim__map_chunk(uint32_t c);
/* Socket slot's rx ring data, its tx ring's C.ring bytes after it; NULL when its chunk cannot
 * be mapped (the caller fails with ENOMEM). slot < C.nsocks. */
static inline uint8_t *shim__rx_data(uint32_t slot)
{
    uint32_t c = slot >> shim__c.chunk_shift;
    uint8_t *b = atomic_load_explicit(&shim__c.chunk[c], memory_order_acquire);
    if (__builtin_expect(!b, 0) && !(b = shim__map_chunk(c)))
        return NULL;
    return b + (size_t)(slot & ((1u << shim__c.chunk_shift) - 1)) * 2 * shim__c.ring;
}
static inline uint8_t *shim__tx_data(uint32_t slot)
{
    uint8_t *b = shim__rx_data(slot);
    return b ? b + shim__c.ring : NULL;
}

/* A socket looked up from an fd. */
struct shim_sk {
    int fd;
    uint32_t slot, gen;
    struct shm_sock *s;
    struct shim_file *f;
    bool pinned; /* shim__sk pinned it: shim__put lets go */
};

/* ---- client.c ---- */
/* Looks fd up and pins its socket for the call (struct shim_pin): 0, or -ENOTSOCK when fd
 * is not a ustack socket (any more). Every call declares its socket with SHIM_SK, so that
 * the pin is let go on every return. */
int shim__sk(int fd, struct shim_sk *k);
void shim__put(struct shim_sk *k);
#define SHIM_SK(k) struct shim_sk k __attribute__((cleanup(shim__put))) = {.fd = -1}
/* For the few moments a call uses the socket's eventfd by its number (a read, a write): true
 * if k->fd still refers to k's socket, which then keeps the number until shim__efd_drop; false
 * if another thread closed it meanwhile (the caller then leaves the eventfd alone). */
bool shim__efd_hold(const struct shim_sk *k);
void shim__efd_drop(const struct shim_sk *k);
/* The closing side (after clearing fd's entry, before closing the number): waits for calls
 * using the number to let go. */
void shim__efd_quiesce(uint32_t slot);
/* fork's child: the other threads and their calls are gone. */
void shim__pins_atfork_child(void);
/* exec: the other threads die with the image; make the releases they owe (lock held). */
void shim__pins_exec(void);
int64_t shim__now(void);
int64_t shim__deadline(int64_t timeout_ns);
/* A command and its reply (NULL rp: no reply wanted). */
/* Waits (SHIM_ATTACH_WAIT_NS at most, or until ustackd dies) until the stack has handled an
 * accepted socket's ATTACH (fetched its eventfd by number), before the process closes or
 * replaces an fd number of that socket. */
#define SHIM_ATTACH_WAIT_NS (30 * SHIM_NS_PER_S)
void shim__attach_wait(uint32_t slot);
/* Drops a reference of shm_sock.refs that is in no process's hold row (a socket in flight
 * between processes); the last one closes the socket. */
void shim__unref(uint32_t slot, uint32_t gen);
int shim__call(uint32_t core, struct shm_cmd *c, struct shm_reply **rp);
int shim__push(uint32_t core, const struct shm_cmd *c);
void shim__cmd_init(struct shm_cmd *c, const struct shim_sk *k, enum shm_op op);
/* Queues a KICK unless one is pending. */
void shim__kick(struct shim_sk *k);
/* Sleeps while s->seq == seq0: 0 (re-check), -ETIMEDOUT, -EINTR or -ENETDOWN. */
int shim__sleep(struct shm_sock *s, uint32_t seq0, int64_t deadline);
/* Takes and clears the pending error (SO_ERROR). */
int shim__take_error(struct shm_sock *s);
void shim__lock(void);
void shim__unlock(void);
/* An fd of this process referring to the socket is gone (caller holds the lock). */
void shim__release(uint32_t slot, uint32_t gen);
/* One holder less across processes; the last sends CLOSE. */
void shim__release_ref(uint32_t slot, uint32_t gen);
/* n more fds of this process refer to the socket: its refs, then our hold count. */
void shim__ref_add(uint32_t slot, uint32_t n);
struct shim_file *shim__file_init(uint32_t slot, uint32_t gen, bool nonblock);
/* Kernel loopback listeners for a listener on the wildcard or on our own address. */
void shim__loopback_listener(struct shim_sk *k, uint16_t port, int backlog);
/* ustack's own address (IPv4, or its global IPv6 address). */
bool shim__own_address(const struct shm_addr *a);
/* f's first n kernel loopback listeners (lacc, private fds) are set: makes lfd watch them. */
void shim__lfd_set(struct shim_file *f, int n);
/* An AF_INET6 socket's IPV6_V6ONLY to the engine, before a bind or connect (0 or -errno). */
int shim__push_v6only(struct shim_sk *k);
/* "the stack serves no IPv6" on stderr, once. */
void shim__no_inet6_warn(void);
/* Closes a listener's kernel loopback listeners (lfd, lacc; caller holds the lock). */
void shim__lfd_close(struct shim_file *f);
/* A kernel TCP socket for options and ioctls ustack does not implement. */
int shim__scratch(void);
/* The same of k's domain and type (AF_INET6 options are the IPv6 socket's). */
int shim__scratch_for(const struct shim_sk *k);
/* Marks fd private; *where holds its number (updated if it must move). */
int shim__priv(int *where);
void shim__unpriv(int fd);
/* Moves fd above 1000 (the library's range); returns the new fd or the old one. */
int shim__high(int fd, bool cloexec);
bool shim__route_kernel(uint32_t dst);
/* The same for a native IPv6 destination (ip6, scope as the application gave it). */
bool shim__route_kernel6(const struct shim_sk *k, const uint8_t ip6[16], uint32_t scope);
/* Does ustackd's engine serve IPv6 for k's protocol (SHM_FEAT_INET6, SHM_FEAT_UDP6)? */
bool shim__inet6(const struct shim_sk *k);

/* ---- client_addr.c: socket addresses (docs/preload.md "IPv6") ---- */
/* The shortest AF_INET6 address argument Linux takes (sockaddr_in6 before sin6_scope_id). */
#define SHIM_SIN6_LEN_RFC2133 24
/* The socket's domain: AF_INET or AF_INET6. */
static inline int shim__domain(const struct shim_sk *k)
{
    return k->s->domain == AF_INET6 ? AF_INET6 : AF_INET;
}
bool shim_v4mapped(const uint8_t ip6[16]);
/* A sockaddr_in or sockaddr_in6 (family as given) to the protocol's form: a v4-mapped
 * address becomes SHM_AF_INET; scope ifindex (ustack's interface) becomes 0. */
void shim_addr_in(const struct sockaddr_storage *ss, uint32_t ifindex, struct shm_addr *out);
/* The protocol's form to a socket of domain dom's sockaddr (an IPv4 address of an AF_INET6
 * socket as v4-mapped; a link-local one with scope ifindex); returns its length. */
socklen_t shim_addr_out(int dom, const struct shm_addr *a, uint32_t ifindex,
                        struct sockaddr_storage *out);
/* Copies a sockaddr argument in as Linux does (0 or -EINVAL/-EFAULT); *ss zeroed past len. */
int shim__get_sa(const struct sockaddr *addr, socklen_t len, struct sockaddr_storage *ss);
/* Puts a's sockaddr for domain dom out as getsockname(2) does (truncating, *len = full). */
int shim__put_sa(int dom, const struct shm_addr *a, struct sockaddr *addr, socklen_t *len);
static inline bool shim_addr_any(const struct shm_addr *a)
{
    static const uint8_t z[16];
    return a->family == SHM_AF_INET ? a->ip == 0 : memcmp(a->ip6, z, 16) == 0;
}
/* The pidfd of ustackd, opening it if needed (-1 if it cannot be had); the _locked variant
 * for a caller holding the lock. */
int shim__stack_pidfd(void);
int shim__stack_pidfd_locked(void);
/* ustackd is gone (its pidfd became readable): marks the stack dead and makes every ustack
 * socket's eventfd of this process readable, so that each waiter re-checks and finds its
 * connections reset (listeners never ready again). */
void shim__stack_gone(void);
/* Replace the ustack socket at k->fd with a kernel socket (routing rules). */
int shim__handover(struct shim_sk *k);
/* A queued SOCKET or ATTACH of the socket at slot is taken back if nothing can need its
 * eventfd any more (the only fd, no other holder, no call but the caller's own pins):
 * true when the stack will not fetch the eventfd by number from here on (cancelled, or
 * fetched already). Caller holds the lock. */
bool shim__attach_cancel(uint32_t slot, uint32_t gen, uint32_t own);

/* ---- client_poll.c ---- */
/* An epoll registration of a socket, kept across its hand-over to a kernel socket. */
struct shim_epreg {
    int epfd;
    struct epoll_event ev;
};
int shim__epoll_detach(int fd, uint32_t slot, uint32_t gen, struct shim_epreg *regs, int max);
void shim__epoll_attach_kernel(int fd, const struct shim_epreg *regs, int n);
/* fork is coming (caller holds the lock): every epoll set becomes shared. */
void shim__epoll_forking(void);
/* fork's child: the epoll locks other threads may have held are free again. */
void shim__epoll_atfork_child(void);
/* ---- client.c: spare eventfds ---- */
/* A new socket's eventfd: a spare one if there is one, else a new one. Returns it or -errno
 * (-EMFILE also when the number is above the fd table). */
int shim__efd_new(bool cloexec, bool *stale);
/* Closes an eventfd from shim__efd_new that no socket got. */
void shim__efd_close(int efd);
/* fork's child: closes its copies of the spares, leaving the parent's registrations. */
void shim__spares_atfork_child(void);

/* fd (a ustack socket) is going away or being replaced: leave every epoll set. park: its
 * eventfd stays open as a spare, so plain registrations stay in the kernel's sets, parked
 * (reused without a system call by the next ADD of a socket on that number). */
bool shim__epoll_forget(int fd, uint32_t slot, uint32_t gen, bool park);
/* The eventfd at fd is about to be closed or replaced: parked registrations of it leave the
 * kernel's sets. */
void shim__epoll_unpark(int fd);
/* fork's child: parked registrations are the parent's (its eventfds). */
void shim__epoll_unpark_child(void);
/* fd was handed over to a kernel socket: re-register it in the sets it was in. */
void shim__epoll_rekernel(int fd, uint32_t slot, uint32_t gen);
void shim__epoll_unref(struct shim_epoll *ep);
void shim__epoll_ref(struct shim_epoll *ep);
/* Self-signal: makes the socket's eventfd readable (other waiters rely on it). */
void shim__signal(int fd);
/* The application consumed from the socket (fd, slot): empties its eventfd if nothing a
 * level waiter or level-triggered epoll member waits for is ready any more. */
void shim__settle(int fd, uint32_t slot);

/* A UDP socket? (The stack marks it at SOCKET; docs/shm.md "Datagrams".) */
static inline bool shim__dgram(const struct shim_sk *k)
{
    return atomic_load_explicit(&k->s->flags, memory_order_relaxed) & SHM_F_DGRAM;
}
/* client_io.c: the datagram calls. */
ssize_t shim__dg_sendmsg(struct shim_sk *k, const struct msghdr *m, int flags);
ssize_t shim__dg_recvmsg(struct shim_sk *k, struct msghdr *m, int flags);
/* 255.255.255.255 or our subnet's directed broadcast: a broadcast of ustack's interface. */
bool shim__dg_bcast(uint32_t ip);
/* The size of the next datagram in the rx ring (FIONREAD), 0 when none. */
int shim__dg_next_len(struct shim_sk *k);
/* client.c */
int shim__dg_connect(struct shim_sk *k, const struct sockaddr_storage *ss,
                     const struct sockaddr *addr, socklen_t len);
int shim__dg_shutdown(struct shim_sk *k, int how);
/* Recorded boolean option (level, name) set nonzero? */
bool shim__opt_on(const struct shim_file *f, int level, int name);

/* ---- client_opt.c ---- */
void shim__record_opt(struct shim_file *f, int level, int name, const void *val, socklen_t len);

#define SHIM_LOAD(p)     atomic_load_explicit((p), memory_order_acquire)
#define SHIM_RLX(p)      atomic_load_explicit((p), memory_order_relaxed)
#define SHIM_STORE(p, v) atomic_store_explicit((p), (v), memory_order_release)

static inline void shim__relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* A pointer the kernel would refuse with EFAULT that can be recognised without a system
 * call: NULL or anywhere in the lowest 64 KiB, which Linux never maps (vm.mmap_min_addr).
 * Other bad pointers are caught by the copy itself (ucopy.h). */
static inline bool shim__badp(const void *p)
{
    return (uintptr_t)p < 65536;
}

/* Small copies from (uget) and to (uput) the application: 0 or -EFAULT, like the kernel's
 * copy_from_user/copy_to_user. */
static inline int shim__uget(void *dst, const void *usrc, size_t n)
{
    return n && (shim__badp(usrc) || shim_ucopy(dst, usrc, n) < n) ? -EFAULT : 0;
}

static inline int shim__uput(void *udst, const void *src, size_t n)
{
    return n && (shim__badp(udst) || shim_ucopy(udst, src, n) < n) ? -EFAULT : 0;
}

/* The per-socket copy locks (shm_sock.wlock/rlock): held only while copying. The word holds
 * our process entry + 1, so that ustackd can free a lock whose holder was killed copying. */
static inline void shim__spin_lock(_Atomic uint32_t *l)
{
    uint32_t v = shim__c.lockval ? shim__c.lockval : 1;
    for (;;) {
        uint32_t zero = 0;
        if (atomic_compare_exchange_weak_explicit(l, &zero, v, memory_order_acquire,
                                                  memory_order_relaxed))
            return;
        while (atomic_load_explicit(l, memory_order_relaxed))
            shim__relax();
    }
}

static inline void shim__spin_unlock(_Atomic uint32_t *l)
{
    atomic_store_explicit(l, 0, memory_order_release);
}

#endif

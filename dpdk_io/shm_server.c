/*
 * shm_server.c - the stack side of the shared-memory protocol (docs/shm.md): an app hook, run
 * by every stack core, that executes the commands applications queue for that core, moves
 * bytes between the engine's sockets and the per-socket rings, accepts connections into
 * listeners' accept queues, and publishes readiness (flags, the seq futex, eventfds).
 *
 * Trust: anything read from the region may have been written by a broken or hostile client.
 * The header is a private copy taken once (dio_shm_open), so offsets and geometry cannot
 * change under us; every command is validated; every ring is checked before use; and each
 * core keeps its own record of the slots it serves and their generation, so a slot freed or
 * reused behind its back is abandoned (its connection aborted) rather than written to.
 *
 * State: per slot and core, struct ssock (engine sd, generation, pending shutdown/close);
 * per slot, shared by the cores of this process, struct srec (our copy of the app's
 * eventfd, which cores serve it, a listener's address and recorded options); per core,
 * struct srv_core. Engine events only mark slots dirty; poll serves them, so no data moves
 * from inside the engine's callbacks.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "dio.h"
#include "log.h"
#include "shm.h"

_Static_assert(SHM_POLLIN == POLLIN && SHM_POLLOUT == POLLOUT && SHM_POLLERR == POLLERR &&
                   SHM_POLLHUP == POLLHUP && SHM_POLLRDHUP == POLLRDHUP,
               "shm.h poll bits must be Linux's");
_Static_assert(sizeof(struct stk_tcp_info) <= sizeof(((struct shm_reply *)0)->info),
               "stk_tcp_info must fit a reply");
_Static_assert(SHM_MAX_CORES <= 64 && DIO_MAX_CORES <= 64, "listener core masks are 64 bits");

#define ACQ memory_order_acquire
#define REL memory_order_release
#define RLX memory_order_relaxed
#define SC  memory_order_seq_cst

#define CMD_BUDGET     64  /* commands per poll: the engine's own work must not starve */
#define ACCEPT_BUDGET  256 /* connections accepted per listener per poll */
#define PIDFD_CACHE    8
#define CLOSE_STALL_US (60 * STK_US_PER_S) /* a closing socket's tx ring stuck this long: RST */
#define SCAN_US        (100 * STK_US_PER_MS)
#define QCHECK_US      (100 * STK_US_PER_MS)  /* command queue sanity check */
#define QSTALL_NS      (1000ll * 1000 * 1000) /* a claimed slot unfilled this long: skip */
#define PENDING_SCANS  2 /* reap calls a fork child's entry stays PENDING after its parent died */
#define NOPT           STK_SOCKOPT_END
#define UDP_TX_BUDGET  256 /* datagrams sent per socket per serve */

enum {
#define X(n) C_##n,
    DIO_SHM_COUNTERS(X)
#undef X
        NCTR
};

/* ssock.fl */
enum {
    SS_DIRTY = 1u << 0,   /* on the core's dirty list */
    SS_LISTEN = 1u << 1,  /* an engine listener */
    SS_SHUT_WR = 1u << 2, /* shutdown(WR) once the tx ring is drained */
    SS_CLOSING = 1u << 3, /* close once the tx ring is drained */
    SS_UDP = 1u << 4,     /* sd is an engine UDP socket (stk_udp_*) */
    SS_LINGER = 1u << 5,  /* closing with SO_LINGER: reply linger_reply when done */
};

struct ssock {
    int32_t sd;   /* the engine socket on this core, -1 when none */
    uint32_t gen; /* the slot's generation when this core took it */
    uint32_t next;
    uint32_t fl;
    stk_time_t progress;   /* closing: when tx bytes last moved */
    stk_time_t linger_end; /* SS_LINGER: when close() returns whatever the FIN's fate */
    uint32_t linger_reply; /* SS_LINGER: the waiting close()'s reply slot */
};

struct srec {
    _Atomic int efd;         /* our copy of the app's eventfd, -1 when none */
    _Atomic uint32_t holder; /* 1 + the core serving the connection, 0 when none */
    _Atomic uint32_t home;   /* 1 + the core that created it (a listener's home) */
    _Atomic uint64_t lcores; /* cores with an engine listener for it */
    /* The listener's bound address: written by its home core before it publishes lcores
     * (release), read by the other cores after (acquire). */
    struct stk_sockaddr laddr;
    _Atomic uint32_t optmask;
    _Atomic int32_t opt[NOPT];
};

struct pidfd_ent {
    int32_t pid;
    int fd;
    uint64_t used;
};

struct fwd {
    uint32_t core;
    struct shm_cmd cmd;
};

struct srv_core {
    struct dio_shm *srv;
    struct stk_engine *e;
    unsigned idx;
    struct ssock *ss;
    uint32_t dirty; /* head of the dirty list */
    uint32_t cur;   /* the slot being served: its own events are ignored */
    unsigned nclosing;
    stk_time_t next_scan;
    struct pidfd_ent pidfds[PIDFD_CACHE];
    uint64_t pidfd_clock;
    struct fwd *ob; /* commands for other cores whose queue was full */
    unsigned nob, cob;
    uint32_t deq; /* our position in our command queue (the shared one is only published) */
    struct shm_cmdq_stall stall;
    stk_time_t next_qcheck;
    _Atomic uint64_t ctr[NCTR];
};

struct reap_mark {
    int32_t pid;
    uint32_t owner;
};

/* The control thread's view of one process table entry. */
struct proc_mon {
    int32_t pid;   /* the pid pidfd refers to */
    int pidfd;     /* -1: none open */
    uint32_t dead; /* PENDING entry: calls that saw its parent dead */
    bool exited;   /* the pidfd reported the exit */
};

struct dio_shm {
    void *base;           /* our view: the private header copy, then the shared rest */
    struct shm_hdr *shdr; /* the shared header page: state, stack_pid, errmsg, slot counts */
    uint64_t size, hdr_len;
    uint32_t nsocks, nreplies, ring;
    unsigned ncores;
    int wake_fd[SHM_MAX_CORES];
    struct srec *rec;
    uint32_t slot;              /* our place in the set (engine user pointers carry it) */
    struct dio_shmset *own_set; /* dio_shm_app's one-region set, freed with us */
    struct reap_mark *reap;
    int fd;       /* the memfd (the caller's) */
    uint32_t uid; /* dio_shm_set_owner */
    uint32_t nprocs;
    struct proc_mon *mon;
    int epfd;             /* pidfds of the region's processes */
    uint64_t reap_ctr[4]; /* the control thread's counters, folded into core 0's */
    struct srv_core *cores[SHM_MAX_CORES];
};

static void ctr_add(struct srv_core *sc, int i, uint64_t n)
{
    /* One writer per counter: a relaxed load and store, no locked instruction. */
    atomic_store_explicit(&sc->ctr[i], atomic_load_explicit(&sc->ctr[i], RLX) + n, RLX);
}
#define CTR(sc, name, n) ctr_add((sc), C_##name, (n))

_Static_assert(sizeof(void *) == 8, "engine user pointers carry a region and a slot");

/* Engine user pointers: the region's place in the set (bits 32..) and the slot index (bits
 * 1..31), tagged odd so that a composed app can tell them from its own (aligned) pointers.
 * An event for a region no longer served (a connection still closing in the engine after its
 * region was removed) finds no region there, or a slot whose engine socket differs. */
static void *tag(const struct srv_core *sc, uint32_t i)
{
    return (void *)(((uintptr_t)sc->srv->slot << 32) | ((uintptr_t)i << 1) | 1u);
}

int dio_shm_owns(const void *user)
{
    return ((uintptr_t)user & 1u) != 0;
}

/* ---- Region ----------------------------------------------------------------------------- */

/* The kernel's shared anonymous inode, which every eventfd (and epoll, timerfd, signalfd...)
 * file uses: a fetched fd that is not on it is no eventfd. One fstat instead of readlink on
 * /proc per accepted socket (that path walk was 2% of a stack core under ab). The other
 * files on that inode refuse an 8-byte write at once (EINVAL), so none of them can block the
 * core either. */
static dev_t anon_dev;
static ino_t anon_ino;
static pthread_once_t anon_once = PTHREAD_ONCE_INIT;

static void anon_init(void)
{
    int fd = eventfd(0, EFD_CLOEXEC);
    struct stat st;
    if (fd >= 0 && fstat(fd, &st) == 0) {
        anon_dev = st.st_dev;
        anon_ino = st.st_ino;
    }
    if (fd >= 0)
        close(fd);
}

static bool on_anon_inode(int fd)
{
    pthread_once(&anon_once, anon_init);
    struct stat st;
    if (fstat(fd, &st) < 0)
        return false;
    if (anon_ino == 0)
        return true; /* could not tell: take it on trust, as is_eventfd without /proc */
    return st.st_dev == anon_dev && st.st_ino == anon_ino;
}

static bool is_eventfd(int fd)
{
    char path[64], link[64];
    snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    ssize_t n = readlink(path, link, sizeof(link) - 1);
    if (n < 0)
        return true; /* no /proc to ask: take it on trust */
    link[n] = 0;
    return strcmp(link, "anon_inode:[eventfd]") == 0;
}

static void srv_free(struct dio_shm *srv)
{
    if (srv->base)
        munmap(srv->base, srv->size);
    if (srv->shdr)
        munmap(srv->shdr, srv->hdr_len);
    for (unsigned c = 0; c < SHM_MAX_CORES; c++)
        free(srv->cores[c]);
    free(srv->rec);
    free(srv->reap);
    if (srv->mon)
        for (uint32_t p = 0; p < srv->nprocs; p++)
            if (srv->mon[p].pidfd >= 0)
                close(srv->mon[p].pidfd);
    free(srv->mon);
    if (srv->epfd >= 0)
        close(srv->epfd);
    dio_shmset_free(srv->own_set);
    free(srv);
}

int dio_shm_open(int fd, unsigned ncores, struct dio_shm **out, char *err, size_t errlen)
{
    struct stat st;
    struct shm_hdr h;
    if (fstat(fd, &st) < 0) {
        snprintf(err, errlen, "--shm-fd %d: %s", fd, strerror(errno));
        return -errno;
    }
    /* A snapshot of the header, checked and then used: the client cannot change what we
     * checked. */
    if ((uint64_t)st.st_size < sizeof(h) || pread(fd, &h, sizeof(h), 0) != (ssize_t)sizeof(h) ||
        shm_region_check(&h, (uint64_t)st.st_size, (uint64_t)st.st_size) != 0) {
        snprintf(err, errlen, "--shm-fd %d: not a valid ustack region (%lld bytes)", fd,
                 (long long)st.st_size);
        return -EINVAL;
    }
    if (h.ncores != ncores) {
        snprintf(err, errlen, "region made for %u stack cores, but USTACK_CORES gives %u", h.ncores,
                 ncores);
        return -EINVAL;
    }
    long pg = sysconf(_SC_PAGESIZE);
    if (pg <= 0 || h.off_cmdq % (uint64_t)pg) {
        snprintf(err, errlen, "region header (%llu bytes) is not page aligned (page %ld)",
                 (unsigned long long)h.off_cmdq, pg);
        return -EINVAL;
    }
    /* Sealing against shrinking keeps a client from making our accesses fault (SIGBUS);
     * it works only on a memfd made with MFD_ALLOW_SEALING, so failure is not fatal. */
    (void)fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK);

    struct dio_shm *srv = calloc(1, sizeof(*srv));
    if (!srv)
        return -ENOMEM;
    srv->epfd = -1;
    srv->fd = fd;
    srv->uid = (uint32_t)geteuid();
    srv->nprocs = h.nprocs;
    srv->size = h.size;
    srv->hdr_len = h.off_cmdq;
    srv->nsocks = h.nsocks;
    srv->nreplies = h.nreplies;
    srv->ring = h.ring_size;
    srv->ncores = ncores;
    /* Our view: an anonymous private page holding the header copy, followed by the shared
     * mapping of everything after the header, so that shm.h's accessors work unchanged. */
    char *v = mmap(NULL, h.size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (v == MAP_FAILED) {
        snprintf(err, errlen, "region: mmap %llu bytes: %s", (unsigned long long)h.size,
                 strerror(errno));
        free(srv);
        return -ENOMEM;
    }
    srv->base = v;
    if (mmap(v, h.off_cmdq, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1,
             0) == MAP_FAILED ||
        mmap(v + h.off_cmdq, h.size - h.off_cmdq, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED,
             fd, (off_t)h.off_cmdq) == MAP_FAILED) {
        snprintf(err, errlen, "region: mmap: %s", strerror(errno));
        srv_free(srv);
        return -ENOMEM;
    }
    memcpy(v, &h, sizeof(h));
    void *hp = mmap(NULL, h.off_cmdq, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (hp == MAP_FAILED) {
        snprintf(err, errlen, "region: mmap header: %s", strerror(errno));
        srv_free(srv);
        return -ENOMEM;
    }
    srv->shdr = hp;
    for (unsigned c = 0; c < ncores; c++) {
        int wfd = shm_cmdq(srv->base, c)->wake_fd;
        if (wfd >= 0 && (fcntl(wfd, F_GETFD) < 0 || !is_eventfd(wfd))) {
            snprintf(err, errlen, "region: core %u: wake_fd %d is not an open eventfd", c, wfd);
            srv_free(srv);
            return -EBADF;
        }
        srv->wake_fd[c] = wfd < 0 ? -1 : wfd;
    }
    srv->rec = calloc(h.nsocks, sizeof(*srv->rec));
    srv->reap = calloc(h.nreplies, sizeof(*srv->reap));
    srv->mon = calloc(h.nprocs, sizeof(*srv->mon));
    if (srv->mon)
        for (uint32_t p = 0; p < h.nprocs; p++)
            srv->mon[p].pidfd = -1;
    srv->epfd = epoll_create1(EPOLL_CLOEXEC); /* without it, deaths are found by polling */
    for (unsigned c = 0; c < ncores; c++)
        srv->cores[c] = calloc(1, sizeof(struct srv_core));
    bool ok = srv->rec && srv->reap && srv->mon;
    for (unsigned c = 0; c < ncores; c++)
        ok = ok && srv->cores[c];
    if (!ok) {
        snprintf(err, errlen, "region: out of memory");
        srv_free(srv);
        return -ENOMEM;
    }
    for (uint32_t i = 0; i < h.nsocks; i++)
        atomic_init(&srv->rec[i].efd, -1);
    *out = srv;
    return 0;
}

void dio_shm_close(struct dio_shm *srv)
{
    if (!srv)
        return;
    for (uint32_t i = 0; i < srv->nsocks; i++) {
        int efd = atomic_exchange(&srv->rec[i].efd, -1);
        if (efd >= 0)
            close(efd);
    }
    srv_free(srv);
}

static void set_state(struct shm_hdr *h, uint32_t state)
{
    atomic_store_explicit(&h->state, state, REL);
    shm_futex_wake(&h->state, INT_MAX);
}

void dio_shm_set_owner(struct dio_shm *srv, uint32_t uid)
{
    srv->uid = uid;
}

void dio_shm_ready(struct dio_shm *srv)
{
    atomic_store_explicit(&srv->shdr->stack_pid, (int32_t)getpid(), RLX);
    set_state(srv->shdr, SHM_READY);
}

void dio_shm_gone(struct dio_shm *srv)
{
    set_state(srv->shdr, SHM_GONE);
}

static void fail_state(int fd, const char *msg, uint32_t state)
{
    struct stat st;
    long pg = sysconf(_SC_PAGESIZE);
    if (fd < 0 || fstat(fd, &st) < 0 || (uint64_t)st.st_size < sizeof(struct shm_hdr) || pg <= 0)
        return;
    size_t len = ((sizeof(struct shm_hdr) + (size_t)pg - 1) / (size_t)pg) * (size_t)pg;
    if ((uint64_t)st.st_size < len)
        len = (size_t)st.st_size;
    struct shm_hdr *h = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (h == MAP_FAILED)
        return;
    /* Only a region someone laid out: never scribble on an unrelated file. */
    if (h->magic == SHM_MAGIC) {
        snprintf(h->errmsg, sizeof(h->errmsg), "%s", msg);
        set_state(h, state);
    }
    munmap(h, len);
}

void dio_shm_fail(int fd, const char *msg)
{
    fail_state(fd, msg, SHM_FAILED);
}

void dio_shm_busy(int fd, const char *msg)
{
    fail_state(fd, msg, SHM_BUSY);
}

/* ---- Helpers ---------------------------------------------------------------------------- */

static struct shm_sock *sock_at(struct srv_core *sc, uint32_t i)
{
    return shm_sock(sc->srv->base, i);
}

/* A protocol address (from the region: a client may have written anything) into the
 * engine's: 0, or -EAFNOSUPPORT for a family the protocol does not have. A v4-mapped IPv6
 * address, which the application should have turned into IPv4, is turned here, so that the
 * engine never sees one (stk.h). */
static int addr_in(const struct shm_addr *src, struct stk_sockaddr *out)
{
    struct shm_addr a;
    memcpy(&a, src, sizeof(a));
    *out = (struct stk_sockaddr){.ip = a.ip, .port = a.port};
    if (a.family == SHM_AF_INET)
        return 0;
    if (a.family != SHM_AF_INET6)
        return -EAFNOSUPPORT;
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (memcmp(a.ip6, mapped, sizeof(mapped)) == 0) {
        out->ip = (uint32_t)a.ip6[12] << 24 | (uint32_t)a.ip6[13] << 16 | (uint32_t)a.ip6[14] << 8 |
                  a.ip6[15];
        return 0;
    }
    out->family = STK_AF_INET6;
    memcpy(out->ip6, a.ip6, sizeof(out->ip6));
    out->scope = a.scope;
    return 0;
}

static struct shm_addr addr_out(const struct stk_sockaddr *a)
{
    struct shm_addr r = {.port = a->port};
    if (a->family == STK_AF_INET6) {
        r.family = SHM_AF_INET6;
        memcpy(r.ip6, a->ip6, sizeof(r.ip6));
        r.scope = a->scope;
    } else {
        r.ip = a->ip;
    }
    return r;
}

static void post(struct srv_core *sc, const struct shm_cmd *cmd, int32_t result, int32_t val,
                 const struct stk_sockaddr *addr, const void *info, size_t ilen)
{
    struct dio_shm *srv = sc->srv;
    if (cmd->reply == SHM_NONE)
        return;
    if (cmd->reply >= srv->nreplies) {
        CTR(sc, shm_reply_invalid, 1);
        return;
    }
    struct shm_reply *r = shm_reply(srv->base, cmd->reply);
    r->result = result;
    r->val = val;
    r->addr = addr ? addr_out(addr) : (struct shm_addr){0};
    if (info)
        memcpy(r->info, info, ilen);
    /* Fields first, then the sequence the waiter watches; a FUTEX_WAKE (a system call on
     * the stack core) only when the waiter went to sleep: a Dekker pair with shim__call,
     * which sets sleeping and then re-checks seq before it waits. */
    atomic_fetch_add_explicit(&r->seq, 1, SC);
    if (atomic_load_explicit(&r->sleeping, SC))
        shm_futex_wake(&r->seq, INT_MAX);
}

/* An ATTACH was handled (or refused): the app may close or reuse its eventfd number now. */
/* ATTACH begins: false if the app's last close cancelled it (docs/shm.md "Commands"), the
 * number then being no longer the socket's; else BUSY, which keeps the app's close of the
 * number waiting until attach_done. */
static bool attach_begin(struct shm_sock *s)
{
    uint32_t v = atomic_load_explicit(&s->attach_pend, ACQ);
    while (!(v & SHM_ATT_CANCEL))
        if (atomic_compare_exchange_weak_explicit(&s->attach_pend, &v,
                                                  (v & SHM_ATT_WAIT) | SHM_ATT_BUSY, ACQ, ACQ))
            return true;
    return false;
}

static void attach_done(struct shm_sock *s)
{
    if (atomic_exchange_explicit(&s->attach_pend, 0, REL) & SHM_ATT_WAIT)
        shm_futex_wake(&s->attach_pend, INT_MAX);
}

static void post_rc(struct srv_core *sc, const struct shm_cmd *cmd, int rc)
{
    post(sc, cmd, rc, 0, NULL, NULL, 0);
}

static void signal_efd(struct srv_core *sc, uint32_t i)
{
    int efd = atomic_load_explicit(&sc->srv->rec[i].efd, ACQ);
    if (efd < 0)
        return;
    uint64_t one = 1;
    if (write(efd, &one, sizeof(one)) == (ssize_t)sizeof(one))
        CTR(sc, shm_efd_writes, 1);
}

/* publish(): ev is SHM_EV_* (the events this change is, counted for edge-triggered
 * waiters), plus PUB_RECHECK: no new event, but an edge-triggered waiter armed for
 * something ready gets the signal it may have missed (the eventfd was not known yet). */
#define PUB_RECHECK 0x100u
/* publish() flag: the caller counted the events already (count_ev), before making the
 * change visible. An app that sees the change (and reports an edge-triggered member for it)
 * then also sees the count, and does not report the same event twice. */
#define PUB_COUNTED 0x200u

static void count_ev(struct shm_sock *s, uint32_t ev)
{
    if (ev & SHM_EV_IN)
        atomic_fetch_add_explicit(&s->ev_in, 1, SC);
    if (ev & SHM_EV_OUT)
        atomic_fetch_add_explicit(&s->ev_out, 1, SC);
}

/* After a change a socket's users may wait for: seq and futex waiters, then the eventfd if
 * an app armed it for something that is now ready (docs/shm.md "Waking"), or if it is an
 * event an edge-triggered member waits for (docs/shm.md "Events"). */
static void publish(struct srv_core *sc, uint32_t i, uint32_t ev)
{
    struct shm_sock *s = sock_at(sc, i);
    uint32_t pre = ev;  /* the events the caller may have counted */
    shm_sock_notify(s); /* its seq_cst bump orders our changes before the loads below */
    /* Write space after a writer found the ring full: an EPOLLOUT edge (Linux's
     * sk_write_space once SOCK_NOSPACE is set). The app sets nospace and then re-checks the
     * space: one of us sees the other. */
    if (atomic_load_explicit(&s->nospace, SC) &&
        shm_ring_space(&s->tx, sc->srv->ring) >= shm_nospace_end(sc->srv->ring) &&
        atomic_exchange(&s->nospace, 0))
        ev |= SHM_EV_OUT;
    /* Counted before the armed_et load: the app arms and then reads the counters. */
    if (ev & PUB_COUNTED)
        count_ev(s, ev & SHM_EV_OUT & ~pre); /* only a write-space edge found just now */
    else
        count_ev(s, ev);
    ev &= ~PUB_COUNTED;
    uint32_t armed = atomic_load_explicit(&s->armed, SC);
    uint32_t aet = ev ? atomic_load_explicit(&s->armed_et, SC) : 0;
    if (!armed && !aet)
        return;
    /* No eventfd yet (an accepted socket whose ATTACH is still queued): leave the armed bits
     * for the ATTACH's own publish(PUB_RECHECK), which signals them. */
    if (atomic_load_explicit(&sc->srv->rec[i].efd, ACQ) < 0)
        return;
    uint32_t ready = shm_sock_poll(sc->srv->base, i);
    uint32_t a = (armed & ready) ? atomic_exchange(&s->armed, 0) : 0;
    if (a) /* what the readable eventfd stands for (the app's shim__settle reads it) */
        atomic_fetch_or_explicit(&s->sigb, a, RLX);
    bool sig = a != 0;
    if ((aet & ready) && ((ev & PUB_RECHECK) || shm_ev_match(ev, aet)) &&
        atomic_exchange(&s->armed_et, 0))
        sig = true;
    if (sig)
        signal_efd(sc, i);
}

static void mark_dirty(struct srv_core *sc, uint32_t i)
{
    struct ssock *ss = &sc->ss[i];
    if (ss->fl & SS_DIRTY)
        return;
    ss->fl |= SS_DIRTY;
    ss->next = sc->dirty;
    sc->dirty = i;
}

/* This core stops serving slot i (SS_DIRTY stays: the slot may still be on the list). */
static void release(struct srv_core *sc, uint32_t i)
{
    struct ssock *ss = &sc->ss[i];
    if (ss->fl & SS_CLOSING)
        sc->nclosing--;
    ss->sd = -1;
    ss->fl &= SS_DIRTY;
}

static void rec_reset(struct srv_core *sc, uint32_t i)
{
    struct srec *r = &sc->srv->rec[i];
    int efd = atomic_exchange(&r->efd, -1);
    if (efd >= 0)
        close(efd);
    atomic_store_explicit(&r->holder, 0, RLX);
    atomic_store_explicit(&r->home, 0, RLX);
    atomic_store_explicit(&r->lcores, 0, RLX);
    memset(&r->laddr, 0, sizeof(r->laddr));
    atomic_store_explicit(&r->optmask, 0, RLX);
}

/* The stack is done with slot i: our record first (a next owner may start at once), then
 * the slot itself. */
static void free_slot(struct srv_core *sc, uint32_t i)
{
    struct shm_sock *s = sock_at(sc, i);
    rec_reset(sc, i);
    shm_sock_free_in(sc->srv->base, sc->srv->shdr, i);
    if (atomic_load_explicit(&s->waiters, SC))
        shm_futex_wake(&s->seq, INT_MAX);
}

static bool ssock_held(struct srv_core *sc, uint32_t i, uint32_t gen)
{
    struct ssock *ss = &sc->ss[i];
    return ss->sd >= 0 && ss->gen == gen;
}

static bool rings_sane(struct srv_core *sc, struct shm_sock *s)
{
    uint32_t r = sc->srv->ring;
    return shm_ring_sane(&s->rx, r) && shm_ring_sane(&s->tx, r);
}

/* ---- Other processes' eventfds ------------------------------------------------------------ */

#ifndef PIDFD_THREAD
#define PIDFD_THREAD O_EXCL /* Linux 6.9: a pidfd of one thread */
#endif

static void pidfd_drop(struct srv_core *sc, int32_t pid)
{
    for (int k = 0; k < PIDFD_CACHE; k++) {
        struct pidfd_ent *p = &sc->pidfds[k];
        if (p->fd >= 0 && p->pid == pid) {
            close(p->fd);
            p->fd = -1;
            p->pid = 0;
        }
    }
}

static int pidfd_get(struct srv_core *sc, int32_t pid)
{
    struct pidfd_ent *victim = &sc->pidfds[0];
    for (int k = 0; k < PIDFD_CACHE; k++) {
        struct pidfd_ent *p = &sc->pidfds[k];
        if (p->fd >= 0 && p->pid == pid) {
            p->used = ++sc->pidfd_clock;
            return p->fd;
        }
        if (p->fd < 0 || (victim->fd >= 0 && p->used < victim->used))
            victim = p;
    }
    int fd = (int)syscall(SYS_pidfd_open, (pid_t)pid, 0);
    if (fd < 0)
        return -errno;
    if (victim->fd >= 0)
        close(victim->fd);
    victim->fd = fd;
    victim->pid = pid;
    victim->used = ++sc->pidfd_clock;
    return fd;
}

/* pidfd_getfd through the pid reaches the files of the thread group leader: once that
 * thread has exited (pthread_exit from main) it says ESRCH although the other threads live
 * on. Then through one of them: descriptor fd of a live thread of pid, or -1. */
static int getfd_thread(int32_t pid, int32_t fd)
{
    char path[32];
    snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
    DIR *d = opendir(path);
    int nfd = -1, err = ESRCH; /* as through the pid (not opendir's ENOENT once it is reaped) */
    for (struct dirent *de; d && nfd < 0 && (de = readdir(d)) != NULL;) {
        int tid = atoi(de->d_name);
        if (tid <= 0 || tid == pid)
            continue;
        int pfd = (int)syscall(SYS_pidfd_open, (pid_t)tid, PIDFD_THREAD);
        if (pfd < 0)
            continue;
        nfd = (int)syscall(SYS_pidfd_getfd, pfd, fd, 0);
        if (nfd < 0)
            err = errno;
        close(pfd);
    }
    if (d)
        closedir(d);
    errno = err;
    return nfd;
}

/* Our own descriptor for eventfd number fd of process pid (-1: none asked for). A cached
 * pidfd of a process that died (its pid maybe reused since) fails with ESRCH: then once
 * more with a fresh one, and then through another thread (getfd_thread). ESRCH after that:
 * every thread of the process is gone or exiting (a program that exits right after
 * socket(), before we came to its SOCKET), so nobody will use the socket: counted apart
 * (shm_efd_exited) from the failures that matter (shm_efd_fail). */
static int fetch_efd(struct srv_core *sc, int32_t pid, int32_t fd, int *out)
{
    *out = -1;
    if (fd < 0)
        return 0;
    if (pid <= 0)
        return -ESRCH;
    int err = ESRCH;
    for (int attempt = 0; attempt < 2; attempt++) {
        int pfd = pidfd_get(sc, pid);
        if (pfd < 0) {
            err = -pfd;
            break;
        }
        int nfd = (int)syscall(SYS_pidfd_getfd, pfd, fd, 0);
        if (nfd < 0 && errno == ESRCH && attempt == 1)
            nfd = getfd_thread(pid, fd);
        if (nfd >= 0) {
            /* We write to it from the stack core: it must be an eventfd, not, say, a pipe
             * whose full buffer would block us. */
            if (!on_anon_inode(nfd)) {
                close(nfd);
                err = EINVAL;
                break;
            }
            *out = nfd;
            return 0;
        }
        err = errno;
        if (err != ESRCH)
            break;
        pidfd_drop(sc, pid);
    }
    if (err == ESRCH)
        CTR(sc, shm_efd_exited, 1);
    else
        CTR(sc, shm_efd_fail, 1);
    return -err;
}

/* ---- Commands to other cores ------------------------------------------------------------- */

static int srv_push(struct dio_shm *srv, uint32_t core, const struct shm_cmd *cmd)
{
    struct shm_cmdq *q = shm_cmdq(srv->base, core);
    if (shm_cmdq_push(q, cmd))
        return -EAGAIN;
    atomic_thread_fence(SC); /* the Dekker pair with the core's sleeping flag */
    if (atomic_load_explicit(&q->sleeping, SC) && srv->wake_fd[core] >= 0) {
        uint64_t one = 1;
        if (write(srv->wake_fd[core], &one, sizeof(one)) < 0) {
            /* Saturated: the core is awake anyway. */
        }
    }
    return 0;
}

static void forward(struct srv_core *sc, uint32_t core, const struct shm_cmd *cmd)
{
    CTR(sc, shm_fwd, 1);
    if (sc->nob == 0 && srv_push(sc->srv, core, cmd) == 0)
        return;
    /* The queue is full: keep it and retry every poll, so that nothing is lost. */
    if (sc->nob == sc->cob) {
        unsigned n = sc->cob ? sc->cob * 2 : 16;
        struct fwd *ob = realloc(sc->ob, n * sizeof(*ob));
        if (!ob)
            return;
        sc->ob = ob;
        sc->cob = n;
    }
    sc->ob[sc->nob].core = core;
    sc->ob[sc->nob].cmd = *cmd;
    sc->nob++;
}

static unsigned flush_outbox(struct srv_core *sc)
{
    unsigned keep = 0, sent = 0;
    for (unsigned k = 0; k < sc->nob; k++) {
        if (srv_push(sc->srv, sc->ob[k].core, &sc->ob[k].cmd) == 0) {
            sent++;
            continue;
        }
        sc->ob[keep++] = sc->ob[k];
    }
    if (keep)
        CTR(sc, shm_fwd_retry, 1);
    sc->nob = keep;
    return sent;
}

/* ---- Moving data ------------------------------------------------------------------------- */

static bool can_send(int st)
{
    return st == STK_TCP_ESTABLISHED || st == STK_TCP_CLOSE_WAIT;
}

/* tx ring -> engine, as far as the engine's send buffer allows. */
static uint32_t move_tx(struct srv_core *sc, uint32_t i, struct ssock *ss, struct shm_sock *s,
                        stk_time_t now)
{
    uint32_t R = sc->srv->ring;
    const uint8_t *data = shm_tx_data(sc->srv->base, i);
    const uint8_t *p[2];
    uint32_t n[2];
    int k = shm_ring_rspan(&s->tx, data, R, p, n);
    uint32_t done = 0;
    for (int j = 0; j < k; j++) {
        /* MSG_MORE on the first piece of a wrapped ring: the second follows at once. */
        ssize_t w = stk_send(sc->e, now, ss->sd, p[j], n[j], j + 1 < k ? STK_MSG_MORE : 0);
        if (w <= 0)
            break;
        done += (uint32_t)w;
        if ((uint32_t)w < n[j])
            break;
    }
    if (done) {
        shm_ring_skip(&s->tx, R, done);
        CTR(sc, shm_tx_bytes, done);
    }
    return done;
}

/* engine -> rx ring. Sets SHM_F_EOF once the engine says the read side is done with
 * nothing left, and SHM_F_RX_BLOCKED while the ring is full and the engine holds more. */
static uint32_t move_rx(struct srv_core *sc, uint32_t i, struct ssock *ss, struct shm_sock *s,
                        uint32_t *f, stk_time_t now)
{
    bool counted = false;
    uint32_t R = sc->srv->ring;
    uint8_t *data = shm_rx_data(sc->srv->base, i);
    uint32_t total = 0;
    for (;;) {
        struct stk_iov iov[2];
        int k = stk_recv_peek(sc->e, ss->sd, iov);
        if (k <= 0) {
            if (k == 0)
                *f |= SHM_F_EOF;
            else if (k != -EAGAIN && k != -ENOTCONN) {
                atomic_store_explicit(&s->so_error, -k, RLX);
                *f |= SHM_F_ERROR | SHM_F_RESET;
            }
            *f &= ~SHM_F_RX_BLOCKED;
            break;
        }
        uint8_t *p[2];
        uint32_t n[2];
        int w = shm_ring_wspan(&s->rx, data, R, p, n);
        if (w == 0) {
            if (*f & SHM_F_RX_BLOCKED)
                break;
            /* Tell the app to kick after reading, then look again: it may have read
             * between our look and the flag (it reads the flag after moving its tail). */
            *f |= SHM_F_RX_BLOCKED;
            CTR(sc, shm_rx_blocked, 1);
            atomic_store_explicit(&s->flags, *f, SC);
            atomic_thread_fence(SC);
            if (shm_ring_space(&s->rx, R))
                continue;
            break;
        }
        *f &= ~SHM_F_RX_BLOCKED;
        /* Copy min(readable, writable) from iov[] into p[]. */
        uint32_t copied = 0;
        int a = 0, b = 0;
        size_t aoff = 0, boff = 0;
        while (a < k && b < w) {
            size_t ra = iov[a].len - aoff, rb = n[b] - boff;
            size_t c = ra < rb ? ra : rb;
            memcpy(p[b] + boff, (const uint8_t *)iov[a].base + aoff, c);
            copied += (uint32_t)c;
            aoff += c;
            boff += c;
            if (aoff == iov[a].len) {
                a++;
                aoff = 0;
            }
            if (boff == n[b]) {
                b++;
                boff = 0;
            }
        }
        if (!counted && copied) {
            count_ev(s, SHM_EV_IN); /* the arrival, before the app can see its bytes */
            counted = true;
        }
        shm_ring_produce(&s->rx, copied);
        stk_recv_consume(sc->e, now, ss->sd, copied);
        total += copied;
    }
    if (total)
        CTR(sc, shm_rx_bytes, total);
    return total;
}

/* A lingering close() is done (delivered, reset, timed out, or the stack stops): it returns 0,
 * as Linux's close() does whichever way its wait ended. */
static void linger_done(struct srv_core *sc, struct ssock *ss)
{
    if (!(ss->fl & SS_LINGER))
        return;
    ss->fl &= ~SS_LINGER;
    struct shm_cmd c = {.reply = ss->linger_reply};
    post_rc(sc, &c, 0);
}

static void finish_close(struct srv_core *sc, uint32_t i, bool abort, stk_time_t now)
{
    struct ssock *ss = &sc->ss[i];
    linger_done(sc, ss);
    if (ss->fl & SS_UDP) {
        stk_udp_close(sc->e, ss->sd);
        CTR(sc, shm_closes, 1);
    } else if (abort) {
        stk_abort(sc->e, now, ss->sd);
        CTR(sc, shm_aborts, 1);
    } else {
        /* The engine itself aborts when data arrived after the app's close. */
        stk_close(sc->e, now, ss->sd);
        CTR(sc, shm_closes, 1);
    }
    release(sc, i);
    free_slot(sc, i);
}

/* A lingering close (SO_LINGER with a timeout) once the tx ring is drained: the FIN goes out
 * as a shutdown, and the engine socket stays ours until the FIN is acknowledged (FIN_WAIT_2,
 * TIME_WAIT), the connection ended, or linger_end; then the close completes and the
 * application's close() returns (Linux's sk_stream_wait_close). State changes are engine
 * events (the socket is served again); the time-out is the closing scan's. */
static int linger_step(struct srv_core *sc, uint32_t i, int st, stk_time_t now)
{
    struct ssock *ss = &sc->ss[i];
    if (st == STK_TCP_ESTABLISHED || st == STK_TCP_CLOSE_WAIT) {
        stk_shutdown(sc->e, now, ss->sd, STK_SHUT_WR);
        stk_getopt(sc->e, ss->sd, STK_SO_STATE, &st);
    }
    bool unacked = st == STK_TCP_FIN_WAIT_1 || st == STK_TCP_CLOSING || st == STK_TCP_LAST_ACK;
    if (unacked && now < ss->linger_end)
        return 0;
    finish_close(sc, i, false, now);
    return 1;
}

static unsigned accept_all(struct srv_core *sc, uint32_t l, stk_time_t now);
static void record_opt(struct srv_core *sc, uint32_t i, int opt, int val);

/* The engine's value of option opt set to val: SO_REUSEPORT's is a group key, one per user
 * across regions (Linux: sockets of the same effective uid), the region owner's uid + 1. */
static int reuseport_key(const struct dio_shm *srv, int opt, int val)
{
    if (opt != STK_SO_REUSEPORT || !val)
        return val;
    return (int)(srv->uid + 1 ? srv->uid + 1 : srv->uid);
}

/* ---- UDP ----------------------------------------------------------------------------------- */

/* tx ring -> engine: one datagram per record (docs/shm.md "Datagrams"). A record that does
 * not add up (a client scribbling) empties the ring. Returns datagrams sent; *more when the
 * budget ran out with records left. */
static uint32_t move_tx_udp(struct srv_core *sc, uint32_t i, struct ssock *ss, struct shm_sock *s,
                            uint32_t *f, stk_time_t now, bool *more)
{
    uint32_t R = sc->srv->ring, done = 0;
    const uint8_t *data = shm_tx_data(sc->srv->base, i);
    *more = false;
    for (;;) {
        uint32_t used = shm_ring_used(&s->tx, R);
        if (used == 0)
            break;
        if (done == UDP_TX_BUDGET) {
            *more = true;
            break;
        }
        struct shm_dgram h;
        if (used >= SHM_DGRAM_HLEN)
            shm_ring_get_at(&s->tx, data, R, 0, &h, SHM_DGRAM_HLEN);
        if (used < SHM_DGRAM_HLEN || h.len > SHM_DGRAM_MAX || h.len > used - SHM_DGRAM_HLEN) {
            CTR(sc, shm_ring_insane, 1);
            shm_ring_skip(&s->tx, R, used);
            break;
        }
        uint8_t *p[2];
        uint32_t n[2];
        int k = shm_ring_span_at(&s->tx, data, R, SHM_DGRAM_HLEN, h.len, false, p, n);
        struct stk_iov iov[2];
        for (int j = 0; j < k; j++) {
            iov[j].base = p[j];
            iov[j].len = n[j];
        }
        struct stk_sockaddr to;
        bool peer = h.addr.family == SHM_AF_INET && h.addr.ip == 0 && h.addr.port == 0;
        ssize_t rc = addr_in(&h.addr, &to);
        if (rc == 0)
            rc = stk_udp_sendto(sc->e, now, ss->sd, iov, k, peer ? NULL : &to);
        if (rc == -ECONNREFUSED || rc == -ENOPROTOOPT) {
            /* The error a connected socket's peer answered with: the app's next call. */
            atomic_store_explicit(&s->so_error, (int)-rc, RLX);
            *f |= SHM_F_ERROR;
        } else if (rc < 0) {
            CTR(sc, shm_udp_tx_fail, 1);
        }
        shm_ring_skip(&s->tx, R, SHM_DGRAM_HLEN + h.len);
        CTR(sc, shm_udp_tx, 1);
        CTR(sc, shm_tx_bytes, h.len);
        done++;
    }
    return done;
}

/* engine -> rx ring, whole datagrams only. SHM_F_RX_BLOCKED as for TCP (move_rx). */
static uint32_t move_rx_udp(struct srv_core *sc, uint32_t i, struct ssock *ss, struct shm_sock *s,
                            uint32_t *f)
{
    uint32_t R = sc->srv->ring, got = 0;
    uint8_t *data = shm_rx_data(sc->srv->base, i);
    for (;;) {
        struct stk_iov d;
        struct stk_udp_meta m;
        ssize_t len = stk_udp_peek(sc->e, ss->sd, &d, &m);
        if (len < 0) {
            *f &= ~SHM_F_RX_BLOCKED;
            break;
        }
        uint32_t need = SHM_DGRAM_HLEN + (uint32_t)len;
        if (need > R) {
            /* A ring smaller than the datagram (USTACK_SHM_RING) can never take it. */
            CTR(sc, shm_udp_rx_toolarge, 1);
            stk_udp_drop(sc->e, ss->sd);
            continue;
        }
        if (shm_ring_space(&s->rx, R) < need) {
            if (*f & SHM_F_RX_BLOCKED)
                break;
            *f |= SHM_F_RX_BLOCKED;
            CTR(sc, shm_rx_blocked, 1);
            atomic_store_explicit(&s->flags, *f, SC);
            atomic_thread_fence(SC);
            if (shm_ring_space(&s->rx, R) >= need)
                continue;
            break;
        }
        *f &= ~SHM_F_RX_BLOCKED;
        struct shm_dgram h = {.len = (uint32_t)len, .addr = addr_out(&m.from), .dst = m.dst};
        shm_ring_put_at(&s->rx, data, R, 0, &h, SHM_DGRAM_HLEN);
        shm_ring_put_at(&s->rx, data, R, SHM_DGRAM_HLEN, d.base, (uint32_t)len);
        if (!got)
            count_ev(s, SHM_EV_IN); /* the arrival, before the app can see it */
        shm_ring_produce(&s->rx, need);
        stk_udp_drop(sc->e, ss->sd);
        CTR(sc, shm_udp_rx, 1);
        CTR(sc, shm_rx_bytes, (uint64_t)len);
        got++;
    }
    return got;
}

/* The engine's pending error for the socket (an ICMP error) to the app's next call. */
static void udp_error(struct srv_core *sc, struct ssock *ss, struct shm_sock *s, uint32_t *f)
{
    if (stk_udp_events(sc->e, ss->sd) & STK_EV_ERR) {
        int err = 0;
        stk_udp_getopt(sc->e, ss->sd, STK_SO_ERROR, &err);
        if (err) {
            atomic_store_explicit(&s->so_error, err, RLX);
            *f |= SHM_F_ERROR;
        }
    }
}

static unsigned serve_udp(struct srv_core *sc, uint32_t i, stk_time_t now)
{
    struct ssock *ss = &sc->ss[i];
    struct shm_sock *s = sock_at(sc, i);
    bool sane = rings_sane(sc, s);
    if (!sane)
        CTR(sc, shm_ring_insane, 1);
    sc->cur = i;
    uint32_t f0 = atomic_load_explicit(&s->flags, RLX), f = f0;
    udp_error(sc, ss, s, &f);
    bool more = false;
    uint32_t sent = sane ? move_tx_udp(sc, i, ss, s, &f, now, &more) : 0;
    if (sent)
        udp_error(sc, ss, s, &f); /* a datagram to our own address that no socket took */
    uint32_t arrived = sane ? move_rx_udp(sc, i, ss, s, &f) : 0;
    sc->cur = SHM_NONE;
    if (more)
        mark_dirty(sc, i);
    uint32_t ev = (f ^ f0) & ~SHM_F_RX_BLOCKED ? SHM_EV_ALL : 0;
    count_ev(s, ev);
    if (f != f0)
        atomic_store_explicit(&s->flags, f, REL);
    if (f != f0 || sent || arrived)
        publish(sc, i, (arrived ? SHM_EV_IN : 0) | ev | PUB_COUNTED);
    return f != f0 || sent || arrived;
}

/* Everything in the tx ring goes out (before a close, connect or shutdown changes what the
 * socket may send), not just a serve's budget. */
static void drain_udp(struct srv_core *sc, uint32_t i, stk_time_t now)
{
    struct shm_sock *s = sock_at(sc, i);
    uint32_t R = sc->srv->ring;
    for (uint32_t n = 0; n <= R / (SHM_DGRAM_HLEN * UDP_TX_BUDGET) + 1; n++) {
        serve_udp(sc, i, now);
        if (!rings_sane(sc, s) || shm_ring_used(&s->tx, R) == 0)
            break;
    }
}

static unsigned serve(struct srv_core *sc, uint32_t i, stk_time_t now);

/* SHM_OP_KICK, of a TCP or UDP socket: tx data queued or rx space freed. */
static void op_kick(struct srv_core *sc, const struct shm_cmd *cmd, struct shm_sock *s,
                    stk_time_t now)
{
    uint32_t i = cmd->sock;
    CTR(sc, shm_kicks, 1);
    /* Clear first, then look: an app that adds bytes after our look kicks again. */
    atomic_exchange_explicit(&s->kick, 0, SC);
    atomic_thread_fence(SC);
    serve(sc, i, now);
    if (cmd->a1 & SHM_KICK_WAKE) {
        /* A dead holder may have consumed the signal (read the eventfd empty, or been the
         * one epoll an EPOLLEXCLUSIVE wake chose) without acting on it; the socket's other
         * holders hear of whatever is ready now. A spurious wake costs them a re-check. */
        uint32_t ready = shm_sock_poll(sc->srv->base, i);
        if (ready) {
            atomic_fetch_or_explicit(&s->sigb, ready, RLX);
            signal_efd(sc, i);
            CTR(sc, shm_reclaim_wakes, 1);
        }
    }
}

/* The commands of a UDP socket (after exec's checks). */
static void exec_udp(struct srv_core *sc, struct shm_cmd *cmd, struct shm_sock *s, struct ssock *ss,
                     stk_time_t now)
{
    struct dio_shm *srv = sc->srv;
    uint32_t i = cmd->sock;
    struct stk_sockaddr a;
    int rc = addr_in(&cmd->addr, &a), val = 0;
    switch (cmd->op) {
    case SHM_OP_BIND:
        if (rc == 0)
            rc = stk_udp_bind(sc->e, ss->sd, &a);
        if (rc == 0 && stk_udp_getsockname(sc->e, ss->sd, &a) == 0) {
            s->la = addr_out(&a);
            srv->rec[i].laddr = a;
        }
        post(sc, cmd, rc, 0, &a, NULL, 0);
        return;
    case SHM_OP_CONNECT: {
        /* Datagrams queued before go out first, to the destination they were sent to. */
        drain_udp(sc, i, now);
        if (cmd->a0 == 1)
            rc = stk_udp_connect(sc->e, now, ss->sd, NULL);
        else if (rc == 0)
            rc = stk_udp_connect(sc->e, now, ss->sd, &a);
        struct stk_sockaddr l = {.ip = 0, .port = 0}, r = {.ip = 0, .port = 0};
        stk_udp_getsockname(sc->e, ss->sd, &l);
        bool conn = stk_udp_getpeername(sc->e, ss->sd, &r) == 0;
        s->la = addr_out(&l);
        s->ra = addr_out(&r);
        if (rc == 0)
            atomic_store_explicit(&s->so_error, 0, RLX);
        if (conn)
            atomic_fetch_or_explicit(&s->flags, SHM_F_CONNECTED, REL);
        else
            atomic_fetch_and_explicit(&s->flags, ~(uint32_t)SHM_F_CONNECTED, REL);
        post(sc, cmd, rc, 0, &l, NULL, 0);
        return;
    }
    case SHM_OP_SHUTDOWN: {
        int how = cmd->a0;
        if (how != STK_SHUT_RD && how != STK_SHUT_WR && how != STK_SHUT_RDWR) {
            post_rc(sc, cmd, -EINVAL);
            return;
        }
        drain_udp(sc, i, now); /* what was sent before goes out */
        rc = stk_udp_shutdown(sc->e, ss->sd, (enum stk_shut)how);
        atomic_fetch_or_explicit(&s->flags,
                                 (how != STK_SHUT_WR ? SHM_F_RD_SHUT : 0) |
                                     (how != STK_SHUT_RD ? SHM_F_WR_SHUT : 0),
                                 REL);
        publish(sc, i, SHM_EV_ALL);
        post_rc(sc, cmd, rc);
        return;
    }
    case SHM_OP_SETOPT: {
        if (cmd->a0 < 1 || cmd->a0 >= NOPT) {
            post_rc(sc, cmd, -ENOPROTOOPT);
            return;
        }
        int v = reuseport_key(sc->srv, cmd->a0, cmd->a1);
        rc = stk_udp_setopt(sc->e, ss->sd, (enum stk_sockopt)cmd->a0, v);
        if (rc == 0)
            record_opt(sc, i, cmd->a0, v);
        post_rc(sc, cmd, rc);
        return;
    }
    case SHM_OP_GETOPT:
        if (cmd->a0 == STK_SO_ERROR) {
            int v = atomic_exchange(&s->so_error, 0), ev = 0;
            stk_udp_getopt(sc->e, ss->sd, STK_SO_ERROR, &ev);
            val = v ? v : ev;
            if (atomic_load(&s->flags) & SHM_F_ERROR) {
                atomic_fetch_and(&s->flags, ~SHM_F_ERROR);
                publish(sc, i, 0);
            }
            rc = 0;
        } else {
            rc = stk_udp_getopt(sc->e, ss->sd, (enum stk_sockopt)cmd->a0, &val);
        }
        post(sc, cmd, rc, val, NULL, NULL, 0);
        return;
    case SHM_OP_KICK:
        op_kick(sc, cmd, s, now);
        return;
    default:
        /* LISTEN, ATTACH, INFO: not for a datagram socket (the app never sends them). */
        CTR(sc, shm_cmd_invalid, 1);
        post_rc(sc, cmd, -EOPNOTSUPP);
        return;
    }
}

/* Brings slot i up to date with its engine socket: data both ways, flags, pending shutdown
 * and close, then wakes whoever waits. Returns nonzero if anything changed. */
static unsigned serve(struct srv_core *sc, uint32_t i, stk_time_t now)
{
    struct ssock *ss = &sc->ss[i];
    if (ss->sd < 0)
        return 0;
    struct shm_sock *s = sock_at(sc, i);
    if (atomic_load_explicit(&s->gen, ACQ) != ss->gen) {
        /* Freed or reused behind our back (a broken client): never write to it again. */
        CTR(sc, shm_orphans, 1);
        if (ss->fl & SS_LISTEN)
            atomic_fetch_and(&sc->srv->rec[i].lcores, ~(1ull << sc->idx));
        if (ss->fl & SS_UDP)
            stk_udp_close(sc->e, ss->sd);
        else
            stk_abort(sc->e, now, ss->sd);
        release(sc, i);
        return 1;
    }
    if (ss->fl & SS_LISTEN)
        return accept_all(sc, i, now);
    if (ss->fl & SS_UDP)
        return serve_udp(sc, i, now);

    struct stk_engine *e = sc->e;
    uint32_t R = sc->srv->ring;
    bool sane = rings_sane(sc, s);
    if (!sane)
        CTR(sc, shm_ring_insane, 1);
    sc->cur = i;
    uint32_t f0 = atomic_load_explicit(&s->flags, RLX), f = f0;
    /* The error first: stk_send and stk_recv_peek would consume it. */
    if (stk_events(e, ss->sd) & STK_EV_ERR) {
        int err = 0;
        stk_getopt(e, ss->sd, STK_SO_ERROR, &err);
        if (err) {
            atomic_store_explicit(&s->so_error, err, RLX);
            f |= SHM_F_ERROR | SHM_F_RESET;
        }
    }
    int st = STK_TCP_CLOSED;
    stk_getopt(e, ss->sd, STK_SO_STATE, &st);
    if (f & SHM_F_CONNECTING) {
        if (st >= STK_TCP_ESTABLISHED) {
            struct stk_sockaddr a;
            if (stk_getsockname(e, ss->sd, &a) == 0)
                s->la = addr_out(&a);
            if (stk_getpeername(e, ss->sd, &a) == 0)
                s->ra = addr_out(&a);
            f = (f & ~SHM_F_CONNECTING) | SHM_F_CONNECTED;
        } else if (st == STK_TCP_CLOSED) {
            f = (f & ~SHM_F_CONNECTING) | SHM_F_RESET;
        }
    }
    if (f & SHM_F_RESET)
        f &= ~SHM_F_CONNECTING;
    uint32_t moved = 0;
    if (sane)
        moved += move_tx(sc, i, ss, s, now);
    bool tx_empty = !sane || shm_ring_used(&s->tx, R) == 0;
    if ((ss->fl & SS_SHUT_WR) && (tx_empty || !can_send(st))) {
        ss->fl &= ~SS_SHUT_WR;
        stk_shutdown(e, now, ss->sd, STK_SHUT_WR);
        f |= SHM_F_WR_SHUT;
    }
    if (ss->fl & SS_CLOSING) {
        /* The app is gone: what it left in the tx ring goes out, then the engine closes
         * (or, if the peer keeps sending or never takes the data, resets). */
        if ((tx_empty || !can_send(st)) && (ss->fl & SS_LINGER)) {
            sc->cur = SHM_NONE;
            return linger_step(sc, i, st, now);
        }
        if (tx_empty || !can_send(st)) {
            sc->cur = SHM_NONE;
            finish_close(sc, i, false, now);
            return 1;
        }
        if (moved)
            ss->progress = now;
        sc->cur = SHM_NONE;
        return moved != 0;
    }
    uint32_t arrived = sane ? move_rx(sc, i, ss, s, &f, now) : 0;
    moved += arrived;
    if ((f & SHM_F_CONNECTED) && (stk_events(e, ss->sd) & STK_EV_HUP))
        f |= SHM_F_HUP;
    sc->cur = SHM_NONE;
    /* New data is an arrival (counted by move_rx); any other change of state concerns every
     * waiter, and is counted before it becomes visible (see PUB_COUNTED). */
    uint32_t ev = (f ^ f0) & ~SHM_F_RX_BLOCKED ? SHM_EV_ALL : 0;
    count_ev(s, ev);
    if (f != f0)
        atomic_store_explicit(&s->flags, f, REL);
    if (f != f0 || moved)
        publish(sc, i, (arrived ? SHM_EV_IN : 0) | ev | PUB_COUNTED);
    return f != f0 || moved;
}

/* ---- Accepting ----------------------------------------------------------------------------- */

/* Room in listener l's shared accept queue for one more connection from every core at once
 * (each core pushes at most one between this check and its push). */
static bool aq_room(struct dio_shm *srv, struct shm_sock *l)
{
    uint32_t cap = shm_aq_capacity(srv->ring);
    uint32_t used = atomic_load_explicit(&l->aq_enq, ACQ) - atomic_load_explicit(&l->aq_deq, ACQ);
    return used <= cap && cap - used > srv->ncores;
}

static unsigned accept_all(struct srv_core *sc, uint32_t l, stk_time_t now)
{
    struct dio_shm *srv = sc->srv;
    struct ssock *ls = &sc->ss[l];
    struct shm_sock *lsock = sock_at(sc, l);
    struct stk_engine *e = sc->e;
    unsigned n = 0;
    while (stk_events(e, ls->sd) & STK_EV_IN) {
        if (n == ACCEPT_BUDGET) {
            mark_dirty(sc, l); /* the rest next time round */
            break;
        }
        if (!aq_room(srv, lsock)) {
            /* The shared queue is full: leave the connection in the engine's queue (whose
             * backlog then makes the engine ignore new SYNs, as a full Linux listener does)
             * rather than accept and reset it. The app kicks every core when it takes one
             * (aq_unblock in shim/client.c); flag first, then look again. */
            atomic_fetch_or_explicit(&lsock->flags, SHM_F_RX_BLOCKED, SC);
            atomic_thread_fence(SC);
            if (!aq_room(srv, lsock)) {
                CTR(sc, shm_aq_full, 1);
                break;
            }
        }
        uint32_t j = shm_sock_alloc_in(srv->base, srv->shdr);
        if (j == SHM_NONE) {
            /* No slot: refuse it as an overflowing kernel listener would, visibly. */
            int sd = stk_accept(e, now, ls->sd, NULL, NULL);
            CTR(sc, shm_accept_noslot, 1);
            if (sd < 0)
                break;
            stk_abort(e, now, sd);
            continue;
        }
        struct stk_sockaddr peer, me;
        int sd = stk_accept(e, now, ls->sd, tag(sc, j), &peer);
        if (sd < 0) {
            shm_sock_free_in(srv->base, srv->shdr, j);
            break;
        }
        struct shm_sock *s = sock_at(sc, j);
        struct ssock *ss = &sc->ss[j];
        struct srec *r = &srv->rec[j];
        ss->sd = sd;
        ss->gen = atomic_load_explicit(&s->gen, RLX);
        ss->fl &= SS_DIRTY;
        rec_reset(sc, j);
        atomic_store_explicit(&r->holder, sc->idx + 1, RLX);
        atomic_store_explicit(&r->home, sc->idx + 1, RLX);
        if (stk_getsockname(e, sd, &me))
            me = (struct stk_sockaddr){.ip = 0, .port = 0};
        s->core = sc->idx;
        s->la = addr_out(&me);
        s->ra = addr_out(&peer);
        s->domain = lsock->domain; /* an AF_INET6 listener's connections are AF_INET6 */
        atomic_store_explicit(&s->so_error, 0, RLX);
        atomic_store_explicit(&s->refs, 0, RLX);
        atomic_store_explicit(&s->app_flags, 0, RLX);
        atomic_store_explicit(&s->flags, SHM_F_CONNECTED, RLX);
        atomic_store_explicit(&s->state, SHM_SOCK_LIVE, REL);
        if (!n)
            count_ev(lsock, SHM_EV_IN); /* before the app can see the queued connection */
        if (shm_aq_push(lsock, shm_rx_data(srv->base, l), srv->ring, j)) {
            CTR(sc, shm_aq_overflow, 1);
            stk_abort(e, now, sd);
            release(sc, j);
            free_slot(sc, j);
            continue;
        }
        CTR(sc, shm_accepts, 1);
        mark_dirty(sc, j); /* data may have come with the handshake */
        n++;
    }
    if (n)
        publish(sc, l, SHM_EV_IN | PUB_COUNTED);
    return n;
}

/* Connections queued on a closed listener that no app took: reset, as Linux does. Each is
 * served by the core that accepted it. */
static void abort_queued(struct srv_core *sc, uint32_t j, stk_time_t now)
{
    struct dio_shm *srv = sc->srv;
    if (j >= srv->nsocks)
        return;
    uint32_t h = atomic_load_explicit(&srv->rec[j].holder, RLX);
    if (h == 0 || h > srv->ncores)
        return;
    uint32_t gen = atomic_load_explicit(&sock_at(sc, j)->gen, ACQ);
    if (h - 1 == sc->idx) {
        if (ssock_held(sc, j, gen))
            finish_close(sc, j, true, now);
        return;
    }
    struct shm_cmd c;
    memset(&c, 0, sizeof(c));
    c.op = SHM_OP_CLOSE;
    c.flags = SHM_CMD_F_ABORT;
    c.sock = j;
    c.gen = gen;
    c.reply = SHM_NONE;
    c.pid = (int32_t)getpid();
    forward(sc, h - 1, &c);
}

static void close_listener(struct srv_core *sc, uint32_t l, stk_time_t now)
{
    struct dio_shm *srv = sc->srv;
    struct ssock *ss = &sc->ss[l];
    stk_close(sc->e, now, ss->sd);
    release(sc, l);
    CTR(sc, shm_closes, 1);
    uint64_t bit = 1ull << sc->idx;
    uint64_t prev = atomic_fetch_and(&srv->rec[l].lcores, ~bit);
    if ((prev & ~bit) != 0 || !(prev & bit))
        return;
    /* The last core: no more pushes can come, so the queue is ours to empty. */
    struct shm_sock *s = sock_at(sc, l);
    uint32_t j, cap = shm_aq_capacity(srv->ring);
    for (uint32_t k = 0; k < cap && shm_aq_pop(s, shm_rx_data(srv->base, l), srv->ring, &j); k++)
        abort_queued(sc, j, now);
    free_slot(sc, l);
}

/* ---- Commands ---------------------------------------------------------------------------- */

static void record_opt(struct srv_core *sc, uint32_t i, int opt, int val)
{
    struct srec *r = &sc->srv->rec[i];
    atomic_store_explicit(&r->opt[opt], val, RLX);
    atomic_fetch_or_explicit(&r->optmask, 1u << opt, REL);
}

static void apply_opts(struct srv_core *sc, uint32_t i, int sd, stk_time_t now)
{
    struct srec *r = &sc->srv->rec[i];
    uint32_t m = atomic_load_explicit(&r->optmask, ACQ);
    for (int o = 1; o < NOPT; o++)
        if (m & (1u << o))
            stk_setopt(sc->e, now, sd, (enum stk_sockopt)o, atomic_load_explicit(&r->opt[o], RLX));
}

/* SOCKET comes without a reply (the app's socket() returned at once): the eventfd's number
 * is held for us as an ATTACH's is (attach_begin/attach_done). A socket the app closed
 * before we came to it gets nothing made (its CLOSE, queued behind, frees the slot); one we
 * cannot make says why at its next command (SHM_F_NOSOCK). -EBADF: not a fresh slot of
 * ours. */
static int op_socket(struct srv_core *sc, const struct shm_cmd *cmd, struct shm_sock *s)
{
    struct dio_shm *srv = sc->srv;
    struct srec *r = &srv->rec[cmd->sock];
    struct ssock *ss = &sc->ss[cmd->sock];
    uint32_t state = atomic_load_explicit(&s->state, ACQ);
    if (ss->sd >= 0 || s->core != sc->idx || atomic_load(&r->holder) || atomic_load(&r->lcores) ||
        (state != SHM_SOCK_RESERVED && state != SHM_SOCK_CLOSING) ||
        (atomic_load(&s->flags) & SHM_F_NOSOCK))
        return -EBADF;
    if (!attach_begin(s)) {
        CTR(sc, shm_attach_cancelled, 1);
        attach_done(s);
        return 0;
    }
    int efd;
    int rc = fetch_efd(sc, cmd->pid, cmd->a0, &efd);
    bool udp = cmd->a1 == SHM_SOCK_DGRAM;
    int sd = rc;
    if (rc == 0)
        sd =
            udp ? stk_udp_socket(sc->e, tag(sc, cmd->sock)) : stk_socket(sc->e, tag(sc, cmd->sock));
    /* Kept also without an engine socket (freed with the slot): a queued connect's failure
     * reaches an epoll through it. */
    rec_reset(sc, cmd->sock);
    atomic_store_explicit(&r->efd, efd, REL);
    if (sd < 0) {
        if (rc != -ESRCH || cmd->pid <= 0)
            CTR(sc, shm_socket_fail, 1); /* not for a process that exited (fetch_efd) */
        atomic_store_explicit(&s->so_error, -sd, RLX);
        atomic_fetch_or_explicit(&s->flags, SHM_F_NOSOCK, REL);
        attach_done(s);
        return 0;
    }
    atomic_store_explicit(&r->holder, sc->idx + 1, RLX);
    atomic_store_explicit(&r->home, sc->idx + 1, RLX);
    ss->sd = sd;
    ss->gen = cmd->gen;
    ss->fl = (ss->fl & SS_DIRTY) | (udp ? SS_UDP : 0);
    atomic_store_explicit(&s->flags, udp ? SHM_F_DGRAM : 0, RLX);
    atomic_store_explicit(&s->so_error, 0, RLX);
    uint32_t expect = SHM_SOCK_RESERVED;
    atomic_compare_exchange_strong(&s->state, &expect, SHM_SOCK_LIVE);
    attach_done(s);
    CTR(sc, shm_sockets, 1);
    return 0;
}

static int op_listen(struct srv_core *sc, const struct shm_cmd *cmd, struct shm_sock *s,
                     stk_time_t now, struct stk_sockaddr *a)
{
    struct dio_shm *srv = sc->srv;
    uint32_t i = cmd->sock;
    struct srec *r = &srv->rec[i];
    struct ssock *ss = &sc->ss[i];
    uint64_t bit = 1ull << sc->idx;
    if (ssock_held(sc, i, cmd->gen)) {
        if (ss->fl & SS_UDP)
            return -EOPNOTSUPP;
        if (ss->fl & SS_LISTEN) /* listen() again: a new backlog */
            return stk_listen(sc->e, ss->sd, cmd->a0);
        /* The home core: the accept queue exists before any core can accept. Only a
         * socket that can listen gives its rx area to the queue. */
        int st = -1;
        stk_getopt(sc->e, ss->sd, STK_SO_STATE, &st);
        if (st != STK_TCP_CLOSED || (atomic_load(&s->flags) & SHM_F_CONNECTING))
            return -EINVAL;
        shm_aq_init(s, shm_rx_data(srv->base, i), srv->ring);
        int rc = stk_listen(sc->e, ss->sd, cmd->a0);
        if (rc)
            return rc;
        stk_getsockname(sc->e, ss->sd, a);
        s->la = addr_out(a);
        r->laddr = *a;
        atomic_store_explicit(&r->lcores, bit, REL);
        ss->fl |= SS_LISTEN;
        atomic_store_explicit(&s->flags, SHM_F_LISTENING, REL);
        CTR(sc, shm_listens, 1);
        return 0;
    }
    /* Another core: its own engine listener on the home core's address, with the options
     * recorded so far. Only for a socket that is listening (the home core went first). */
    if (ss->sd >= 0 || atomic_load_explicit(&r->lcores, ACQ) == 0)
        return -EBADF;
    int sd = stk_socket(sc->e, tag(sc, i));
    if (sd < 0)
        return sd;
    apply_opts(sc, i, sd, now);
    *a = r->laddr;
    int rc = stk_bind(sc->e, sd, a);
    if (rc == 0)
        rc = stk_listen(sc->e, sd, cmd->a0);
    uint64_t m = atomic_load_explicit(&r->lcores, ACQ);
    while (rc == 0) {
        if (m == 0) {
            rc = -EBADF; /* closed meanwhile */
            break;
        }
        if (atomic_compare_exchange_weak(&r->lcores, &m, m | bit))
            break;
    }
    if (rc) {
        stk_close(sc->e, now, sd);
        return rc;
    }
    ss->sd = sd;
    ss->gen = cmd->gen;
    ss->fl = (ss->fl & SS_DIRTY) | SS_LISTEN;
    CTR(sc, shm_listens, 1);
    mark_dirty(sc, i); /* a connection may already wait */
    return 0;
}

/* A listener's home core passes a command it ran on to the other cores listening for the
 * socket (without a reply). Returns whether this is the home core. */
static bool listener_forward(struct srv_core *sc, uint32_t i, const struct shm_cmd *cmd)
{
    struct dio_shm *srv = sc->srv;
    if (atomic_load(&srv->rec[i].home) != sc->idx + 1)
        return false;
    uint64_t m = atomic_load(&srv->rec[i].lcores) & ~(1ull << sc->idx);
    struct shm_cmd f = *cmd;
    f.reply = SHM_NONE;
    for (uint32_t c = 0; c < srv->ncores; c++)
        if (m & (1ull << c))
            forward(sc, c, &f);
    return true;
}

static int op_shutdown(struct srv_core *sc, const struct shm_cmd *cmd, struct shm_sock *s,
                       stk_time_t now)
{
    uint32_t i = cmd->sock;
    struct ssock *ss = &sc->ss[i];
    int how = cmd->a0;
    if (how != STK_SHUT_RD && how != STK_SHUT_WR && how != STK_SHUT_RDWR)
        return -EINVAL;
    int st = STK_TCP_CLOSED;
    stk_getopt(sc->e, ss->sd, STK_SO_STATE, &st);
    /* Linux's inet_shutdown: a connection that is over (TCP_CLOSE, which is also what a
     * socket whose connection went to TIME-WAIT shows) is not connected. */
    if (!(ss->fl & SS_LISTEN) && (st == STK_TCP_TIME_WAIT || st == STK_TCP_CLOSED) &&
        (atomic_load_explicit(&s->flags, RLX) & SHM_F_CONNECTED))
        return -ENOTCONN;
    if (ss->fl & SS_LISTEN) {
        /* A listener shut for reading stops in every core's engine (it keeps its port and
         * SS_LISTEN: listen() again resumes it, op_listen), and the connections in the
         * shared queue are reset, as Linux's tcp_disconnect does. */
        int rc = stk_shutdown(sc->e, now, ss->sd, (enum stk_shut)how);
        if (rc || how == STK_SHUT_WR || !listener_forward(sc, i, cmd))
            return rc;
        uint32_t j, cap = shm_aq_capacity(sc->srv->ring);
        for (uint32_t k = 0;
             k < cap && shm_aq_pop(s, shm_rx_data(sc->srv->base, i), sc->srv->ring, &j); k++)
            abort_queued(sc, j, now);
        return 0;
    }
    if (st == STK_TCP_CLOSED || st == STK_TCP_SYN_SENT || st == STK_TCP_LISTEN)
        return stk_shutdown(sc->e, now, ss->sd, (enum stk_shut)how); /* nothing to drain */
    /* SHUT_RD only marks the read side: recv() on an empty ring returns 0, but, as on
     * Linux (whose TCP keeps queueing), data that arrives later is still delivered. So the
     * engine, which would discard it, is not told. */
    if (how != STK_SHUT_WR)
        atomic_fetch_or_explicit(&s->flags, SHM_F_RD_SHUT, REL);
    if (how != STK_SHUT_RD)
        ss->fl |= SS_SHUT_WR; /* after the tx ring is drained (serve) */
    serve(sc, i, now);
    publish(sc, i, SHM_EV_ALL);
    return 0;
}

/* Returns true when the reply of a lingering close (SHM_CMD_F_LINGER) is left to the socket
 * (SS_LINGER: finish_close posts it); the caller posts it otherwise. */
static bool op_close(struct srv_core *sc, const struct shm_cmd *cmd, struct shm_sock *s,
                     stk_time_t now)
{
    uint32_t i = cmd->sock;
    struct ssock *ss = &sc->ss[i];
    struct srec *r = &sc->srv->rec[i];
    if (!ssock_held(sc, i, cmd->gen)) {
        /* A slot whose SOCKET failed, was cancelled or never ran: nobody serves it, so it
         * is ours to free (its SOCKET, if any, was queued before this). */
        uint32_t st = atomic_load(&s->state);
        if (s->core == sc->idx && atomic_load(&r->holder) == 0 && atomic_load(&r->lcores) == 0 &&
            (st == SHM_SOCK_RESERVED || st == SHM_SOCK_CLOSING)) {
            free_slot(sc, i);
            return false;
        }
        CTR(sc, shm_cmd_invalid, 1);
        return false;
    }
    if (ss->fl & SS_LISTEN) {
        close_listener(sc, i, now);
        return false;
    }
    if (ss->fl & SS_CLOSING)
        return false;
    if (ss->fl & SS_UDP) {
        /* Datagrams sent before close() still go out; unread ones are dropped. */
        drain_udp(sc, i, now);
        finish_close(sc, i, false, now);
        return false;
    }
    int nread = 0;
    stk_getopt(sc->e, ss->sd, STK_SO_NREAD, &nread);
    /* Unread data makes close() reset the connection (RFC 2525 2.17, as Linux does). */
    if ((cmd->flags & SHM_CMD_F_ABORT) || nread > 0 || !rings_sane(sc, s) ||
        shm_ring_used(&s->rx, sc->srv->ring)) {
        finish_close(sc, i, true, now);
        return false;
    }
    ss->fl |= SS_CLOSING;
    ss->progress = now;
    sc->nclosing++;
    bool linger = (cmd->flags & SHM_CMD_F_LINGER) && cmd->reply != SHM_NONE && cmd->a0 > 0;
    if (linger) {
        ss->fl |= SS_LINGER;
        ss->linger_reply = cmd->reply;
        ss->linger_end = now + (stk_time_t)cmd->a0 * STK_US_PER_S;
    }
    serve(sc, i, now);
    return linger;
}

static int op_getopt(struct srv_core *sc, const struct shm_cmd *cmd, struct shm_sock *s, int *val)
{
    struct ssock *ss = &sc->ss[cmd->sock];
    int opt = cmd->a0;
    if (opt < 1 || opt >= NOPT)
        return -ENOPROTOOPT;
    if (opt == STK_SO_ERROR) {
        /* What the stack published, else whatever the engine holds; reading clears it. */
        int v = atomic_exchange(&s->so_error, 0);
        int ev = 0;
        stk_getopt(sc->e, ss->sd, STK_SO_ERROR, &ev);
        *val = v ? v : ev;
        if (v || (atomic_load(&s->flags) & SHM_F_ERROR)) {
            atomic_fetch_and(&s->flags, ~SHM_F_ERROR);
            publish(sc, cmd->sock, 0);
        }
        return 0;
    }
    int rc = stk_getopt(sc->e, ss->sd, (enum stk_sockopt)opt, val);
    /* What the app sees counts the rings too. */
    if (rc == 0 && opt == STK_SO_NREAD && !(ss->fl & SS_LISTEN))
        *val += (int)shm_ring_used(&s->rx, sc->srv->ring);
    if (rc == 0 && opt == STK_SO_NWRITE)
        *val += (int)shm_ring_used(&s->tx, sc->srv->ring);
    return rc;
}

static int op_setopt(struct srv_core *sc, const struct shm_cmd *cmd, stk_time_t now)
{
    struct dio_shm *srv = sc->srv;
    uint32_t i = cmd->sock;
    struct ssock *ss = &sc->ss[i];
    int opt = cmd->a0, val = reuseport_key(srv, opt, cmd->a1);
    if (opt < 1 || opt >= NOPT)
        return -ENOPROTOOPT;
    int rc = stk_setopt(sc->e, now, ss->sd, (enum stk_sockopt)opt, val);
    if (rc)
        return rc;
    record_opt(sc, i, opt, val);
    if (ss->fl & SS_LISTEN)
        listener_forward(sc, i, cmd);
    return 0;
}

/* A CONNECT queued without a reply (SHM_A_CONNECTING) failed: the error is the attempt's,
 * as a handshake's failure would be (so_error, ERROR and RESET: POLLERR and POLLHUP). */
static void queued_connect_failed(struct srv_core *sc, uint32_t i, int err)
{
    struct shm_sock *s = sock_at(sc, i);
    atomic_store_explicit(&s->so_error, err, RLX);
    uint32_t f = atomic_load_explicit(&s->flags, RLX);
    atomic_store_explicit(&s->flags, (f & ~SHM_F_CONNECTING) | SHM_F_ERROR | SHM_F_RESET, REL);
    CTR(sc, shm_connect_fail, 1);
    publish(sc, i, SHM_EV_ALL);
}

static void exec(struct srv_core *sc, struct shm_cmd *cmd, stk_time_t now)
{
    struct dio_shm *srv = sc->srv;
    CTR(sc, shm_cmds, 1);
    uint32_t op = cmd->op, i = cmd->sock;
    if (cmd->reply != SHM_NONE && cmd->reply >= srv->nreplies) {
        CTR(sc, shm_reply_invalid, 1);
        return;
    }
    if (op == SHM_OP_NOP) {
        post_rc(sc, cmd, 0);
        return;
    }
    if (op >= SHM_OP_COUNT || i >= srv->nsocks || !shm_sock_valid(srv->base, i, cmd->gen))
        goto bad;
    struct shm_sock *s = sock_at(sc, i);
    if (op == SHM_OP_CLOSE) {
        if (!op_close(sc, cmd, s, now) && (cmd->flags & SHM_CMD_F_LINGER))
            post_rc(sc, cmd, 0);
        return;
    }
    if (op == SHM_OP_SOCKET) {
        if (op_socket(sc, cmd, s) == -EBADF)
            goto bad;
        return;
    }
    if (atomic_load_explicit(&s->flags, ACQ) & SHM_F_NOSOCK) {
        /* Its SOCKET failed: every call says why, as socket() would have; a connect queued
         * without a reply fails as an asynchronous one does. */
        int err = atomic_load_explicit(&s->so_error, RLX);
        if (op == SHM_OP_CONNECT && cmd->reply == SHM_NONE)
            queued_connect_failed(sc, i, err > 0 ? err : ENOBUFS);
        else if (op == SHM_OP_GETOPT && cmd->a0 == STK_SO_ERROR)
            post(sc, cmd, 0, atomic_exchange(&s->so_error, 0), NULL, NULL, 0);
        else if (op != SHM_OP_KICK)
            post_rc(sc, cmd, -(err > 0 ? err : ENOBUFS));
        return;
    }
    uint32_t state = atomic_load_explicit(&s->state, ACQ);
    if (state != SHM_SOCK_LIVE && state != SHM_SOCK_CLOSING)
        goto bad;
    if (!rings_sane(sc, s)) {
        CTR(sc, shm_ring_insane, 1);
        goto bad;
    }
    if (op == SHM_OP_LISTEN) {
        struct stk_sockaddr a = {.ip = 0, .port = 0};
        int rc = op_listen(sc, cmd, s, now, &a);
        if (rc == -EBADF)
            goto bad;
        post(sc, cmd, rc, 0, &a, NULL, 0);
        return;
    }
    if (!ssock_held(sc, i, cmd->gen))
        goto bad;
    struct ssock *ss = &sc->ss[i];
    bool listener = ss->fl & SS_LISTEN;
    if (ss->fl & SS_UDP) {
        exec_udp(sc, cmd, s, ss, now);
        return;
    }
    switch (op) {
    case SHM_OP_ATTACH: {
        if (listener)
            goto bad;
        if (!attach_begin(s)) {
            /* Closed by its last holder before we came to it: no eventfd to keep. */
            CTR(sc, shm_attach_cancelled, 1);
            attach_done(s);
            post_rc(sc, cmd, 0);
            return;
        }
        int efd;
        int rc = fetch_efd(sc, cmd->pid, cmd->a0, &efd);
        attach_done(s);
        if (rc == 0) {
            int old = atomic_exchange(&srv->rec[i].efd, efd);
            if (old >= 0)
                close(old);
            publish(sc, i, PUB_RECHECK); /* whatever is ready now reaches an armed waiter */
        }
        post_rc(sc, cmd, rc);
        return;
    }
    case SHM_OP_BIND: {
        struct stk_sockaddr a;
        int rc = addr_in(&cmd->addr, &a);
        if (rc == 0)
            rc = listener ? -EINVAL : stk_bind(sc->e, ss->sd, &a);
        if (rc == 0 && stk_getsockname(sc->e, ss->sd, &a) == 0) {
            s->la = addr_out(&a);
            srv->rec[i].laddr = a;
        }
        post(sc, cmd, rc, 0, &a, NULL, 0);
        return;
    }
    case SHM_OP_CONNECT: {
        struct stk_sockaddr to;
        int rc = addr_in(&cmd->addr, &to);
        if (rc == 0)
            rc = listener ? -EISCONN : stk_connect(sc->e, now, ss->sd, &to);
        struct stk_sockaddr a = {.ip = 0, .port = 0};
        if (rc == -EINPROGRESS) {
            /* Flags before the reply: the app's next look must see it connecting. */
            stk_getsockname(sc->e, ss->sd, &a);
            s->la = addr_out(&a);
            s->ra = addr_out(&to);
            /* A socket whose earlier connect failed tries again (Linux): what that attempt
             * left (reset, error, hang-up) belongs to it, not to this one. */
            atomic_store_explicit(&s->so_error, 0, RLX);
            atomic_fetch_and_explicit(
                &s->flags, ~(SHM_F_RESET | SHM_F_ERROR | SHM_F_HUP | SHM_F_EOF | SHM_F_RX_BLOCKED),
                RLX);
            atomic_fetch_or_explicit(&s->flags, SHM_F_CONNECTING, REL);
            CTR(sc, shm_connects, 1);
        } else if (rc < 0 && cmd->reply == SHM_NONE) {
            queued_connect_failed(sc, i, -rc);
        }
        post(sc, cmd, rc, 0, &a, NULL, 0);
        return;
    }
    case SHM_OP_SHUTDOWN:
        post_rc(sc, cmd, op_shutdown(sc, cmd, s, now));
        return;
    case SHM_OP_SETOPT:
        post_rc(sc, cmd, op_setopt(sc, cmd, now));
        return;
    case SHM_OP_GETOPT: {
        int val = 0;
        int rc = op_getopt(sc, cmd, s, &val);
        post(sc, cmd, rc, val, NULL, NULL, 0);
        return;
    }
    case SHM_OP_KICK:
        op_kick(sc, cmd, s, now);
        return;
    case SHM_OP_INFO: {
        struct stk_tcp_info info;
        int rc = stk_tcp_info(sc->e, ss->sd, &info);
        post(sc, cmd, rc, 0, NULL, rc == 0 ? &info : NULL, sizeof(info));
        return;
    }
    default:
        break;
    }
bad:
    CTR(sc, shm_cmd_invalid, 1);
    if ((op == SHM_OP_ATTACH || op == SHM_OP_SOCKET) && i < srv->nsocks &&
        shm_sock_valid(srv->base, i, cmd->gen))
        attach_done(sock_at(sc, i)); /* nobody may wait for it for ever */
    {
        /* Logged at the 1st, 2nd, 4th, 8th... rejection: visible, never a flood. */
        uint64_t nbad = atomic_load_explicit(&sc->ctr[C_shm_cmd_invalid], RLX);
        if ((nbad & (nbad - 1)) == 0)
            SHIM_WARN("core %u: rejected command %llu (op %u, socket %u, gen %u, pid %d): "
                      "invalid or stale",
                      sc->idx, (unsigned long long)nbad, op, i, cmd->gen, (int)cmd->pid);
    }
    if ((op != SHM_OP_CLOSE || (cmd->flags & SHM_CMD_F_LINGER)) && op != SHM_OP_KICK)
        post_rc(sc, cmd, op == SHM_OP_CLOSE ? 0 : -EBADF);
}

/* ---- The app hooks ------------------------------------------------------------------------- */

static struct srv_core *core_of(struct dio_shm *srv, struct dio_core *c)
{
    unsigned idx = dio_core_index(c);
    return idx < srv->ncores ? srv->cores[idx] : NULL;
}

/* Region srv's state on core c, on the core's own thread (at the stack's start, or when the
 * region is added to a running stack). Undoes itself on failure. */
/* What of IPv6 the engine serves (one that does not answers -EAFNOSUPPORT, stk.h), as
 * SHM_FEAT_* bits. Asked once, with a TCP and a UDP socket bound to the IPv6 wildcard for
 * IPv6 only, then closed. */
static uint32_t engine_inet6(struct stk_engine *e, stk_time_t now)
{
    struct stk_sockaddr any6 = {.family = STK_AF_INET6};
    uint32_t f = 0;
    int sd = stk_socket(e, NULL);
    if (sd >= 0) {
        stk_setopt(e, now, sd, STK_IPV6_V6ONLY, 1);
        if (stk_bind(e, sd, &any6) != -EAFNOSUPPORT)
            f |= SHM_FEAT_INET6;
        stk_close(e, now, sd);
    }
    sd = stk_udp_socket(e, NULL);
    if (sd >= 0) {
        stk_udp_setopt(e, sd, STK_IPV6_V6ONLY, 1);
        if (stk_udp_bind(e, sd, &any6) != -EAFNOSUPPORT)
            f |= SHM_FEAT_UDP6;
        stk_udp_close(e, sd);
    }
    return f;
}

static int reg_init(struct dio_shm *srv, struct dio_core *c)
{
    struct srv_core *sc = core_of(srv, c);
    if (!sc)
        return -EINVAL;
    sc->srv = srv;
    sc->e = dio_core_engine(c);
    sc->idx = dio_core_index(c);
    sc->dirty = sc->cur = SHM_NONE;
    sc->deq = atomic_load_explicit(&shm_cmdq(srv->base, sc->idx)->deq, RLX);
    sc->stall.since = -1;
    for (int k = 0; k < PIDFD_CACHE; k++)
        sc->pidfds[k].fd = -1;
    /* Allocated here, on the core's own thread, so that it lands on its NUMA node. */
    sc->ss = malloc((size_t)srv->nsocks * sizeof(*sc->ss));
    if (!sc->ss)
        return -ENOMEM;
    for (uint32_t i = 0; i < srv->nsocks; i++)
        sc->ss[i] = (struct ssock){.sd = -1, .next = SHM_NONE};
    if (sc->idx == 0)
        atomic_fetch_or_explicit(&srv->shdr->features, engine_inet6(sc->e, 0), RLX);
    if (srv->wake_fd[sc->idx] >= 0) {
        int rc = dio_core_add_wake_fd(c, srv->wake_fd[sc->idx]);
        if (rc) {
            free(sc->ss);
            sc->ss = NULL;
            return rc;
        }
    }
    return 0;
}

static void reg_event(struct dio_shm *srv, struct dio_core *c, int sd, uint32_t i)
{
    struct srv_core *sc = core_of(srv, c);
    if (!sc || !sc->ss || i >= srv->nsocks || sc->ss[i].sd != sd || i == sc->cur)
        return;
    mark_dirty(sc, i);
}

/* The engine's app_idle for slot i: the app has read everything we gave it and written
 * nothing we have not taken (1), and a thread of it sleeps in a read or polls for input
 * (2). A slot that is no longer this socket's says 2 (the ACK goes). */
static int reg_idle(struct dio_shm *srv, struct dio_core *c, int sd, uint32_t i)
{
    struct srv_core *sc = core_of(srv, c);
    if (!sc || !sc->ss || i >= srv->nsocks || sc->ss[i].sd != sd)
        return 2;
    struct shm_sock *s = sock_at(sc, i);
    if (shm_ring_used(&s->rx, srv->ring) || shm_ring_used(&s->tx, srv->ring))
        return 0;
    bool waits =
        atomic_load_explicit(&s->waiters, RLX) || (atomic_load_explicit(&s->armed, RLX) & POLLIN);
    return waits ? 2 : 1;
}

static unsigned reg_poll(struct dio_shm *srv, struct dio_core *c, stk_time_t now)
{
    struct srv_core *sc = core_of(srv, c);
    unsigned work = 0;
    if (sc->nob)
        work += flush_outbox(sc);
    struct shm_cmdq *q = shm_cmdq(srv->base, sc->idx);
    struct shm_cmd cmd;
    unsigned n = 0;
    for (; n < CMD_BUDGET && shm_cmdq_pop_at(q, &sc->deq, &cmd); n++) {
        exec(sc, &cmd, now);
        work++;
    }
    /* Now and then (never per command): a producer killed in the middle of a push, or a
     * client scribbling on the queue, must not stall this core's queue for every client. */
    if (n < CMD_BUDGET && now >= sc->next_qcheck) {
        sc->next_qcheck = now + QCHECK_US;
        unsigned fixed = shm_cmdq_repair(q, &sc->deq, &sc->stall, (int64_t)now * 1000, QSTALL_NS);
        if (fixed) {
            CTR(sc, shm_cmdq_repairs, fixed);
            work++;
            /* A skipped slot may have been someone's KICK, whose flag now stays raised
             * (so no new kick is queued): serve every socket with a raised flag. */
            for (uint32_t i = 0; i < srv->nsocks; i++)
                if (sc->ss[i].sd >= 0 && atomic_load_explicit(&sock_at(sc, i)->kick, RLX)) {
                    atomic_store_explicit(&sock_at(sc, i)->kick, 0, SC);
                    mark_dirty(sc, i);
                }
        }
    }
    /* Serving may mark slots again: those wait for the next round. */
    uint32_t list = sc->dirty;
    sc->dirty = SHM_NONE;
    while (list != SHM_NONE) {
        uint32_t i = list;
        struct ssock *ss = &sc->ss[i];
        list = ss->next;
        ss->fl &= ~SS_DIRTY;
        work += serve(sc, i, now) ? 1 : 0;
    }
    if (sc->nclosing && now >= sc->next_scan) {
        sc->next_scan = now + SCAN_US;
        for (uint32_t i = 0; i < srv->nsocks && sc->nclosing; i++) {
            struct ssock *ss = &sc->ss[i];
            if (ss->sd >= 0 && (ss->fl & SS_CLOSING) && now - ss->progress > CLOSE_STALL_US) {
                CTR(sc, shm_close_timeouts, 1);
                finish_close(sc, i, true, now);
            } else if (ss->sd >= 0 && (ss->fl & SS_LINGER) && now >= ss->linger_end) {
                /* close() returns; the connection goes on closing (Linux's orphan). */
                linger_done(sc, ss);
                serve(sc, i, now);
            }
        }
    }
    return work;
}

static int reg_sleep_prepare(struct dio_shm *srv, struct dio_core *c)
{
    struct srv_core *sc = core_of(srv, c);
    struct shm_cmdq *q = shm_cmdq(srv->base, sc->idx);
    /* Announce, then look (the other half is in the client: push, then read sleeping). */
    atomic_store_explicit(&q->sleeping, 1, SC);
    atomic_thread_fence(SC);
    int busy = !shm_cmdq_empty_at(q, sc->deq) || sc->dirty != SHM_NONE || sc->nob;
    return busy;
}

static void reg_sleep_done(struct dio_shm *srv, struct dio_core *c)
{
    struct srv_core *sc = core_of(srv, c);
    atomic_store_explicit(&shm_cmdq(srv->base, sc->idx)->sleeping, 0, RLX);
}

/* The region goes away (its last process exited, or ustackd stops) while socket i's tx
 * ring still holds what the application wrote: the engine takes all of it, its send buffer
 * grown to hold it, as the kernel keeps sending what an exited program wrote. Before, what
 * did not fit was dropped and the FIN followed what did: the peer read a clean end of the
 * stream with data missing. False when the engine cannot take it (its memory budget): the
 * caller resets the connection instead. */
static bool tx_handover(struct srv_core *sc, uint32_t i, struct ssock *ss, struct shm_sock *s,
                        stk_time_t now)
{
    move_tx(sc, i, ss, s, now);
    uint32_t left = shm_ring_used(&s->tx, sc->srv->ring);
    int st = STK_TCP_CLOSED, cur = 0;
    stk_getopt(sc->e, ss->sd, STK_SO_STATE, &st);
    if (!left || !can_send(st))
        return true; /* nothing left, or the engine refuses data anyway (as close would) */
    stk_getopt(sc->e, ss->sd, STK_SO_SNDBUF, &cur);
    stk_setopt(sc->e, now, ss->sd, STK_SO_SNDBUF, cur + (int)left);
    move_tx(sc, i, ss, s, now);
    return shm_ring_used(&s->tx, sc->srv->ring) == 0;
}

/* Stopping: queued commands are answered -ENETDOWN, connections closed (FIN, or RST where
 * data was unread), and every socket this core served is marked reset and woken, so that
 * no application thread keeps waiting for a stack that is gone. */
static void reg_fini(struct dio_shm *srv, struct dio_core *c, stk_time_t now)
{
    struct srv_core *sc = core_of(srv, c);
    if (sc && sc->ss) {
        struct shm_cmdq *q = shm_cmdq(srv->base, sc->idx);
        struct shm_cmd cmd;
        for (unsigned n = 0; n < 2 * SHM_CMDQ_LEN && shm_cmdq_pop_at(q, &sc->deq, &cmd); n++)
            if (cmd.op != SHM_OP_CLOSE && cmd.op != SHM_OP_KICK && cmd.reply < srv->nreplies)
                post_rc(sc, &cmd, -ENETDOWN);
        for (uint32_t i = 0; i < srv->nsocks; i++) {
            struct ssock *ss = &sc->ss[i];
            if (ss->sd < 0)
                continue;
            struct shm_sock *s = sock_at(sc, i);
            bool ours = atomic_load_explicit(&s->gen, ACQ) == ss->gen;
            if (ss->fl & SS_LISTEN) {
                stk_close(sc->e, now, ss->sd);
                atomic_fetch_and(&srv->rec[i].lcores, ~(1ull << sc->idx));
                release(sc, i);
                continue;
            }
            if (ss->fl & SS_UDP) {
                uint32_t f = 0;
                bool more;
                if (ours && rings_sane(sc, s))
                    move_tx_udp(sc, i, ss, s, &f, now, &more);
                stk_udp_close(sc->e, ss->sd);
            } else if (ours && rings_sane(sc, s) && !tx_handover(sc, i, ss, s, now)) {
                CTR(sc, shm_fini_resets, 1);
                stk_abort(sc->e, now, ss->sd);
            } else {
                stk_close(sc->e, now, ss->sd);
            }
            bool closing = ss->fl & SS_CLOSING;
            linger_done(sc, ss);
            release(sc, i);
            if (!ours)
                continue;
            if (closing) {
                free_slot(sc, i);
                continue;
            }
            int zero = 0;
            atomic_compare_exchange_strong(&s->so_error, &zero, ENETDOWN);
            atomic_fetch_or(&s->flags, SHM_F_ERROR | SHM_F_RESET | SHM_F_HUP);
            atomic_fetch_and(&s->flags, ~(SHM_F_CONNECTING | SHM_F_RX_BLOCKED));
            publish(sc, i, SHM_EV_ALL);
        }
        for (int k = 0; k < PIDFD_CACHE; k++)
            if (sc->pidfds[k].fd >= 0)
                close(sc->pidfds[k].fd);
        free(sc->ss);
        sc->ss = NULL;
        free(sc->ob);
        sc->ob = NULL;
        sc->nob = sc->cob = 0;
        if (srv->wake_fd[sc->idx] >= 0)
            dio_core_del_wake_fd(c, srv->wake_fd[sc->idx]);
    }
}

/* ---- The set of regions one ustackd serves ------------------------------------------------ */

/* What a core serves: written only by the core itself (its init and fini hooks, and the
 * functions the control thread runs on it through dio_stack_run_on), so the fast path reads
 * it without a lock. */
struct set_core {
    struct dio_shm *reg[DIO_SHM_MAX_REGIONS]; /* by place: an engine event's region */
    struct dio_shm *act[DIO_SHM_MAX_REGIONS]; /* the same, packed, for the loop */
    unsigned nact;
};

struct dio_shmset {
    unsigned ncores;
    struct dio_app other;
    bool has_other;
    /* The control thread's list (and the telemetry's view of it): never read by a core. */
    pthread_mutex_t lock;
    struct dio_shm *regs[DIO_SHM_MAX_REGIONS];
    unsigned nregs;
    uint64_t gone[DIO_MAX_CORES][NCTR]; /* counters of removed regions, per core */
    struct set_core *cores[DIO_MAX_CORES];
};

int dio_shmset_create(unsigned ncores, const struct dio_app *other, struct dio_shmset **out)
{
    if (ncores == 0 || ncores > DIO_MAX_CORES || ncores > SHM_MAX_CORES)
        return -EINVAL;
    struct dio_shmset *set = calloc(1, sizeof(*set));
    if (!set)
        return -ENOMEM;
    set->ncores = ncores;
    pthread_mutex_init(&set->lock, NULL);
    if (other) {
        set->other = *other;
        set->has_other = true;
    }
    for (unsigned c = 0; c < ncores; c++)
        if (!(set->cores[c] = calloc(1, sizeof(struct set_core)))) {
            dio_shmset_free(set);
            return -ENOMEM;
        }
    *out = set;
    return 0;
}

void dio_shmset_free(struct dio_shmset *set)
{
    if (!set)
        return;
    for (unsigned c = 0; c < DIO_MAX_CORES; c++)
        free(set->cores[c]);
    pthread_mutex_destroy(&set->lock);
    free(set);
}

static struct set_core *set_core_of(struct dio_shmset *set, struct dio_core *c)
{
    unsigned idx = dio_core_index(c);
    return idx < set->ncores ? set->cores[idx] : NULL;
}

static void act_add(struct set_core *k, struct dio_shm *srv)
{
    k->reg[srv->slot] = srv;
    k->act[k->nact++] = srv;
}

static void act_del(struct set_core *k, struct dio_shm *srv)
{
    k->reg[srv->slot] = NULL;
    for (unsigned j = 0; j < k->nact; j++)
        if (k->act[j] == srv) {
            k->act[j] = k->act[--k->nact];
            break;
        }
}

static int set_init(void *ctx, struct dio_core *c, stk_time_t now)
{
    struct dio_shmset *set = ctx;
    struct set_core *k = set_core_of(set, c);
    if (!k)
        return -EINVAL;
    /* The regions added before the start (a spawned ustackd's first one). */
    int rc = 0;
    pthread_mutex_lock(&set->lock);
    for (unsigned r = 0; r < DIO_SHM_MAX_REGIONS && rc == 0; r++)
        if (set->regs[r] && (rc = reg_init(set->regs[r], c)) == 0)
            act_add(k, set->regs[r]);
    pthread_mutex_unlock(&set->lock);
    if (rc)
        return rc;
    if (set->has_other && set->other.init)
        return set->other.init(set->other.ctx, c, now);
    return 0;
}

/* The region of one of our engine user pointers (tag()) on core c, and its slot; NULL for
 * a region this core no longer serves. */
static struct dio_shm *set_reg_of(struct dio_shmset *set, struct dio_core *c, void *user,
                                  uint32_t *slot)
{
    struct set_core *k = set_core_of(set, c);
    uintptr_t u = (uintptr_t)user;
    uintptr_t r = u >> 32;
    if (!k || r >= DIO_SHM_MAX_REGIONS || !k->reg[r])
        return NULL;
    *slot = (uint32_t)((u & 0xffffffffu) >> 1);
    return k->reg[r];
}

static void set_event(void *ctx, struct dio_core *c, int sd, void *user, uint32_t events)
{
    struct dio_shmset *set = ctx;
    if (!dio_shm_owns(user)) {
        if (set->has_other && set->other.event)
            set->other.event(set->other.ctx, c, sd, user, events);
        return;
    }
    uint32_t i;
    struct dio_shm *srv = set_reg_of(set, c, user, &i);
    if (srv)
        reg_event(srv, c, sd, i);
}

static int set_idle(void *ctx, struct dio_core *c, int sd, void *user)
{
    struct dio_shmset *set = ctx;
    if (!dio_shm_owns(user)) {
        if (set->has_other && set->other.idle)
            return set->other.idle(set->other.ctx, c, sd, user);
        return 2;
    }
    uint32_t i;
    struct dio_shm *srv = set_reg_of(set, c, user, &i);
    return srv ? reg_idle(srv, c, sd, i) : 2; /* a region gone: the ACK goes */
}

static unsigned set_poll(void *ctx, struct dio_core *c, stk_time_t now)
{
    struct dio_shmset *set = ctx;
    struct set_core *k = set_core_of(set, c);
    unsigned work = 0;
    for (unsigned j = 0; j < k->nact; j++)
        work += reg_poll(k->act[j], c, now);
    if (set->has_other && set->other.poll)
        work += set->other.poll(set->other.ctx, c, now);
    return work;
}

static int set_sleep_prepare(void *ctx, struct dio_core *c)
{
    struct dio_shmset *set = ctx;
    struct set_core *k = set_core_of(set, c);
    int busy = 0;
    for (unsigned j = 0; j < k->nact; j++)
        busy |= reg_sleep_prepare(k->act[j], c);
    if (set->has_other && set->other.sleep_prepare)
        busy |= set->other.sleep_prepare(set->other.ctx, c);
    return busy;
}

static void set_sleep_done(void *ctx, struct dio_core *c)
{
    struct dio_shmset *set = ctx;
    struct set_core *k = set_core_of(set, c);
    for (unsigned j = 0; j < k->nact; j++)
        reg_sleep_done(k->act[j], c);
    if (set->has_other && set->other.sleep_done)
        set->other.sleep_done(set->other.ctx, c);
}

static void set_fini(void *ctx, struct dio_core *c, stk_time_t now)
{
    struct dio_shmset *set = ctx;
    struct set_core *k = set_core_of(set, c);
    if (k)
        while (k->nact) {
            struct dio_shm *srv = k->act[0];
            reg_fini(srv, c, now);
            act_del(k, srv);
        }
    if (set->has_other && set->other.fini)
        set->other.fini(set->other.ctx, c, now);
}

struct dio_app dio_shmset_app(struct dio_shmset *set)
{
    struct dio_app a = {.ctx = set,
                        .init = set_init,
                        .poll = set_poll,
                        .event = set_event,
                        .idle = set_idle,
                        .fini = set_fini,
                        .sleep_prepare = set_sleep_prepare,
                        .sleep_done = set_sleep_done};
    return a;
}

struct set_op {
    struct dio_shmset *set;
    struct dio_shm *srv;
    int rc;
};

static void add_on_core(struct dio_core *c, void *arg)
{
    struct set_op *op = arg;
    struct set_core *k = set_core_of(op->set, c);
    op->rc = k ? reg_init(op->srv, c) : -EINVAL;
    if (op->rc == 0)
        act_add(k, op->srv);
}

static void del_on_core(struct dio_core *c, void *arg)
{
    struct set_op *op = arg;
    struct set_core *k = set_core_of(op->set, c);
    if (!k || !k->reg[op->srv->slot])
        return;
    reg_fini(op->srv, c, dio_now());
    act_del(k, op->srv);
}

/* Runs del_on_core on cores [0, n): a core busy for a moment is asked again (bounded). */
static int del_on_cores(struct dio_shmset *set, struct dio_stack *s, struct dio_shm *srv,
                        unsigned n)
{
    int rc = 0;
    for (unsigned c = 0; c < n; c++) {
        struct set_op op = {set, srv, 0};
        int r = -ETIMEDOUT;
        for (int tries = 0; tries < 10 && r == -ETIMEDOUT; tries++)
            r = dio_stack_run_on(s, c, del_on_core, &op, 1000);
        if (r && r != -ESRCH)
            rc = r;
    }
    return rc;
}

int dio_shmset_add(struct dio_shmset *set, struct dio_stack *s, struct dio_shm *srv, char *err,
                   size_t errlen)
{
    if (srv->ncores != set->ncores) {
        snprintf(err, errlen, "region made for %u stack cores, but this stack has %u", srv->ncores,
                 set->ncores);
        return -EINVAL;
    }
    pthread_mutex_lock(&set->lock);
    unsigned r = 0;
    while (r < DIO_SHM_MAX_REGIONS && set->regs[r])
        r++;
    if (r == DIO_SHM_MAX_REGIONS) {
        pthread_mutex_unlock(&set->lock);
        snprintf(err, errlen, "ustackd serves %d regions already", DIO_SHM_MAX_REGIONS);
        return -EMFILE;
    }
    srv->slot = r;
    set->regs[r] = srv; /* before the start: set_init takes it up on every core */
    set->nregs++;
    pthread_mutex_unlock(&set->lock);
    if (!s)
        return 0;
    for (unsigned c = 0; c < set->ncores; c++) {
        struct set_op op = {set, srv, 0};
        int rc = dio_stack_run_on(s, c, add_on_core, &op, 5000);
        if (rc == 0)
            rc = op.rc;
        if (rc) {
            snprintf(err, errlen, "stack core %u could not take the region: %s", c, strerror(-rc));
            del_on_cores(set, s, srv, c + 1);
            pthread_mutex_lock(&set->lock);
            set->regs[r] = NULL;
            set->nregs--;
            pthread_mutex_unlock(&set->lock);
            return rc;
        }
    }
    return 0;
}

int dio_shmset_remove(struct dio_shmset *set, struct dio_stack *s, struct dio_shm *srv)
{
    int rc = s ? del_on_cores(set, s, srv, set->ncores) : 0;
    if (rc)
        return rc; /* a core still holds it: never free it */
    pthread_mutex_lock(&set->lock);
    if (set->regs[srv->slot] == srv) {
        for (unsigned c = 0; c < srv->ncores; c++)
            for (int k = 0; k < NCTR; k++)
                set->gone[c][k] += atomic_load_explicit(&srv->cores[c]->ctr[k], RLX);
        set->regs[srv->slot] = NULL;
        set->nregs--;
    }
    pthread_mutex_unlock(&set->lock);
    return 0;
}

unsigned dio_shmset_count(struct dio_shmset *set)
{
    pthread_mutex_lock(&set->lock);
    unsigned n = set->nregs;
    pthread_mutex_unlock(&set->lock);
    return n;
}

int dio_shmset_counters(struct dio_shmset *set, unsigned core, struct dio_shm_counters *out)
{
    if (core >= set->ncores)
        return -EINVAL;
    uint64_t v[NCTR];
    pthread_mutex_lock(&set->lock);
    for (int k = 0; k < NCTR; k++)
        v[k] = set->gone[core][k];
    for (unsigned r = 0; r < DIO_SHM_MAX_REGIONS; r++)
        if (set->regs[r])
            for (int k = 0; k < NCTR; k++)
                v[k] += atomic_load_explicit(&set->regs[r]->cores[core]->ctr[k], RLX);
    pthread_mutex_unlock(&set->lock);
#define X(n) out->n = v[C_##n];
    DIO_SHM_COUNTERS(X)
#undef X
    return 0;
}

int dio_shmset_regions(struct dio_shmset *set, struct dio_shm_region_info *out, unsigned max)
{
    unsigned n = 0;
    pthread_mutex_lock(&set->lock);
    for (unsigned r = 0; r < DIO_SHM_MAX_REGIONS && n < max; r++) {
        struct dio_shm *srv = set->regs[r];
        if (!srv)
            continue;
        out[n].slot = r;
        out[n].pid = 0;
        out[n].procs = 0;
        for (uint32_t p = 0; p < srv->nprocs; p++) {
            struct shm_proc *e = shm_proc(srv->base, p);
            if (atomic_load_explicit(&e->state, RLX) != SHM_PROC_LIVE)
                continue;
            if (!out[n].procs++)
                out[n].pid = atomic_load_explicit(&e->pid, RLX);
        }
        out[n].nsocks = srv->nsocks;
        out[n].used = 0;
        for (uint32_t i = 0; i < srv->nsocks; i++)
            out[n].used +=
                atomic_load_explicit(&shm_sock(srv->base, i)->state, RLX) != SHM_SOCK_FREE;
        n++;
    }
    pthread_mutex_unlock(&set->lock);
    return (int)n;
}

/* One region served alone (tests, and what dio_shm_app always was). */
struct dio_app dio_shm_app_with(struct dio_shm *srv, const struct dio_app *other)
{
    struct dio_shmset *set = srv->own_set;
    char err[128];
    if (!set && dio_shmset_create(srv->ncores, other, &set) == 0) {
        srv->own_set = set;
        dio_shmset_add(set, NULL, srv, err, sizeof(err));
    }
    return dio_shmset_app(set);
}

struct dio_app dio_shm_app(struct dio_shm *srv)
{
    return dio_shm_app_with(srv, NULL);
}

/* ---- Statistics and reaping ------------------------------------------------------------ */

int dio_shm_counters(struct dio_shm *srv, unsigned core, struct dio_shm_counters *out)
{
    if (core >= srv->ncores)
        return -EINVAL;
    struct srv_core *sc = srv->cores[core];
#define X(n) out->n = atomic_load_explicit(&sc->ctr[C_##n], RLX);
    DIO_SHM_COUNTERS(X)
#undef X
    return 0;
}

static void print_counters(unsigned ncores, int (*get)(void *, unsigned, struct dio_shm_counters *),
                           void *ctx, FILE *f, const char *prefix)
{
    for (unsigned c = 0; c < ncores; c++) {
        struct dio_shm_counters k;
        get(ctx, c, &k);
        fprintf(f, "%s core=%u", prefix, c);
#define X(n)                                                                                       \
    if (k.n)                                                                                       \
        fprintf(f, " " #n "=%llu", (unsigned long long)k.n);
        DIO_SHM_COUNTERS(X)
#undef X
        fprintf(f, "\n");
    }
    fflush(f);
}

static int get_region(void *ctx, unsigned c, struct dio_shm_counters *k)
{
    return dio_shm_counters(ctx, c, k);
}

static int get_set(void *ctx, unsigned c, struct dio_shm_counters *k)
{
    return dio_shmset_counters(ctx, c, k);
}

void dio_shm_print_stats(struct dio_shm *srv, FILE *f, const char *prefix)
{
    print_counters(srv->ncores, get_region, srv, f, prefix);
}

void dio_shmset_print_stats(struct dio_shmset *set, FILE *f, const char *prefix)
{
    print_counters(set->ncores, get_set, set, f, prefix);
}

/* ---- Dead processes (the control thread) ---------------------------------------------- */

enum { R_PROCS, R_REFS, R_CLOSES, R_LOST };

/* A command from the control thread; the queue may be full for a moment. */
static bool ctl_push(struct dio_shm *srv, uint32_t core, const struct shm_cmd *c)
{
    for (int tries = 0; tries < 200; tries++) {
        if (srv_push(srv, core, c) == 0)
            return true;
        usleep(1000);
    }
    srv->reap_ctr[R_LOST]++;
    return false;
}

/* The dead process held socket i through c fds: drop them. If nobody else holds it, it is
 * closed as the last holder's close() would have: CLOSE to the core serving it (every core
 * for a listener). Otherwise the socket lives on, with the copy locks the dead held freed and
 * a kick, in case it died between raising the kick flag and queueing the KICK. */
static void drop_refs(struct dio_shm *srv, uint32_t p, uint32_t i, uint32_t c)
{
    struct shm_sock *s = shm_sock(srv->base, i);
    uint32_t st = atomic_load_explicit(&s->state, ACQ);
    if (st != SHM_SOCK_LIVE && st != SHM_SOCK_RESERVED)
        return; /* already closing or free: nothing of the dead is left in it */
    uint32_t lockv = p + 1;
    atomic_compare_exchange_strong(&s->wlock, &lockv, 0);
    lockv = p + 1;
    atomic_compare_exchange_strong(&s->rlock, &lockv, 0);
    uint32_t old = atomic_load(&s->refs), nw;
    do {
        if (old == 0)
            return; /* the counts disagree (a confused client): leave it */
        nw = old > c ? old - c : 0;
    } while (!atomic_compare_exchange_weak(&s->refs, &old, nw));
    srv->reap_ctr[R_REFS] += old - nw;
    struct srec *r = &srv->rec[i];
    uint32_t holder = atomic_load(&r->holder);
    uint64_t lcores = atomic_load(&r->lcores);
    struct shm_cmd cmd;
    memset(&cmd, 0, sizeof(cmd));
    cmd.sock = i;
    cmd.gen = atomic_load_explicit(&s->gen, ACQ);
    cmd.reply = SHM_NONE;
    cmd.pid = (int32_t)getpid();
    if (nw > 0) {
        /* Still held: a KICK to the core serving it (our record, not the slot, says which;
         * a listener's lowest listening core), which moves what the dead may have left
         * unkicked and signals the eventfd if the socket is ready: the dead may have taken
         * the signal meant for the living (SHM_KICK_WAKE). */
        uint32_t core;
        if (lcores)
            core = (uint32_t)__builtin_ctzll(lcores);
        else if (holder && holder <= srv->ncores)
            core = holder - 1;
        else
            return;
        if (core >= srv->ncores)
            return;
        atomic_store(&s->kick, 1);
        cmd.op = SHM_OP_KICK;
        cmd.a1 = SHM_KICK_WAKE;
        ctl_push(srv, core, &cmd);
        return;
    }
    uint32_t expect = SHM_SOCK_LIVE;
    atomic_compare_exchange_strong(&s->state, &expect, SHM_SOCK_CLOSING);
    cmd.op = SHM_OP_CLOSE;
    srv->reap_ctr[R_CLOSES]++;
    if (lcores) {
        for (uint32_t core = 0; core < srv->ncores; core++)
            if (lcores & (1ull << core))
                ctl_push(srv, core, &cmd);
    } else if (holder && holder <= srv->ncores) {
        ctl_push(srv, holder - 1, &cmd);
    } else if (s->core < srv->ncores) {
        ctl_push(srv, s->core, &cmd); /* a slot whose SOCKET never ran: its core frees it */
    }
}

static void mon_close(struct dio_shm *srv, uint32_t p)
{
    struct proc_mon *m = &srv->mon[p];
    if (m->pidfd >= 0) {
        if (srv->epfd >= 0)
            epoll_ctl(srv->epfd, EPOLL_CTL_DEL, m->pidfd, NULL);
        close(m->pidfd);
    }
    *m = (struct proc_mon){.pidfd = -1};
}

/* Process entry p is dead: every reference its row counts is dropped, the row given back to
 * the memfd, the entry freed. */
static void reclaim(struct dio_shm *srv, uint32_t p, uint32_t state)
{
    struct shm_proc *e = shm_proc(srv->base, p);
    if (!atomic_compare_exchange_strong(&e->state, &state, SHM_PROC_REAPING))
        return; /* it changed under us: look again next time */
    for (uint32_t i = 0; i < srv->nsocks; i++) {
        _Atomic uint32_t *hc = shm_hold(srv->base, p, i);
        if (atomic_load_explicit(hc, RLX) == 0)
            continue;
        uint32_t c = atomic_exchange(hc, 0);
        if (c)
            drop_refs(srv, p, i, c);
    }
    struct shm_hdr *h = shm_hdr(srv->base);
#ifdef FALLOC_FL_PUNCH_HOLE
    /* The row's pages back to the memfd (its next user starts from zeroes anyway). */
    (void)fallocate(srv->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                    (off_t)(h->off_hold + (uint64_t)p * h->hold_stride), (off_t)h->hold_stride);
#else
    (void)h;
#endif
    mon_close(srv, p);
    atomic_store(&e->pid, 0);
    atomic_store(&e->parent, 0);
    atomic_store_explicit(&e->state, SHM_PROC_FREE, REL);
    srv->reap_ctr[R_PROCS]++;
}

static bool pid_gone(int32_t pid)
{
    return pid <= 0 || (kill(pid, 0) < 0 && errno == ESRCH);
}

/* Is the LIVE entry p's process gone? Opens a pidfd for a pid seen for the first time (so
 * that its exit wakes the control thread); without pidfds, asks kill(pid, 0). */
static bool live_gone(struct dio_shm *srv, uint32_t p, int32_t pid)
{
    struct proc_mon *m = &srv->mon[p];
    if (pid <= 0)
        return true; /* no honest client leaves a LIVE entry without a pid */
    if (m->pid != pid) {
        mon_close(srv, p);
        m->pid = pid;
        m->pidfd = (int)syscall(SYS_pidfd_open, (pid_t)pid, 0);
        if (m->pidfd < 0)
            return errno == ESRCH;
        if (srv->epfd >= 0) {
            struct epoll_event ev = {.events = EPOLLIN, .data.u32 = p};
            epoll_ctl(srv->epfd, EPOLL_CTL_ADD, m->pidfd, &ev);
        }
        /* It may have died between our look at the table and the pidfd. */
    }
    if (m->pidfd < 0)
        return pid_gone(pid);
    if (m->exited)
        return true;
    struct pollfd pf = {.fd = m->pidfd, .events = POLLIN};
    return poll(&pf, 1, 0) > 0;
}

static unsigned reap_procs(struct dio_shm *srv)
{
    unsigned n = 0;
    if (srv->epfd >= 0) {
        struct epoll_event ev[64];
        int k = epoll_wait(srv->epfd, ev, 64, 0);
        for (int j = 0; j < k; j++)
            if (ev[j].data.u32 < srv->nprocs)
                srv->mon[ev[j].data.u32].exited = true;
    }
    for (uint32_t p = 0; p < srv->nprocs; p++) {
        struct shm_proc *e = shm_proc(srv->base, p);
        struct proc_mon *m = &srv->mon[p];
        uint32_t st = atomic_load_explicit(&e->state, ACQ);
        int32_t pid = atomic_load_explicit(&e->pid, RLX);
        if (st == SHM_PROC_LIVE) {
            m->dead = 0;
            if (live_gone(srv, p, pid)) {
                reclaim(srv, p, st);
                n++;
            }
        } else if (st == SHM_PROC_PENDING) {
            /* A fork child's entry: reclaimed if its parent died and no child named itself
             * for a while (the fork never happened, or both died). */
            int32_t parent = atomic_load_explicit(&e->parent, RLX);
            if (parent > 0 && pid_gone(parent) && ++m->dead > PENDING_SCANS) {
                reclaim(srv, p, st);
                n++;
            } else if (parent <= 0 || !pid_gone(parent)) {
                m->dead = 0;
            }
        } else if (st != SHM_PROC_REAPING && m->pidfd >= 0) {
            mon_close(srv, p); /* freed or scribbled: stop watching */
        }
    }
    if (srv->ncores) {
        struct srv_core *sc = srv->cores[0];
        /* Core 0 never writes these: the control thread is their one writer. */
        atomic_store_explicit(&sc->ctr[C_shm_procs_reaped], srv->reap_ctr[R_PROCS], RLX);
        atomic_store_explicit(&sc->ctr[C_shm_refs_dropped], srv->reap_ctr[R_REFS], RLX);
        atomic_store_explicit(&sc->ctr[C_shm_reclaim_closes], srv->reap_ctr[R_CLOSES], RLX);
        atomic_store_explicit(&sc->ctr[C_shm_reclaim_lost], srv->reap_ctr[R_LOST], RLX);
    }
    return n;
}

int dio_shm_watch_fd(struct dio_shm *srv)
{
    return srv ? srv->epfd : -1;
}

unsigned dio_shm_reap(struct dio_shm *srv)
{
    unsigned n = 0;
    for (uint32_t i = 0; i < srv->nreplies; i++) {
        struct shm_reply *r = shm_reply(srv->base, i);
        struct reap_mark *m = &srv->reap[i];
        uint32_t owner = atomic_load_explicit(&r->owner, ACQ);
        int32_t pid = r->pid;
        /* pid <= 0 would make kill() signal a process group: never. */
        bool dead = owner && pid > 0 && kill(pid, 0) < 0 && errno == ESRCH;
        if (!dead) {
            m->pid = 0;
            continue;
        }
        /* Seen dead twice with the same owner: not a slot being taken right now (whose pid
         * is written just after its owner). */
        if (m->pid == pid && m->owner == owner) {
            if (atomic_compare_exchange_strong(&r->owner, &owner, 0))
                n++;
            m->pid = 0;
            continue;
        }
        m->pid = pid;
        m->owner = owner;
    }
    if (n && srv->ncores)
        ctr_add(srv->cores[0], C_shm_replies_reaped, n);
    return n + reap_procs(srv);
}

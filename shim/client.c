/*
 * client.c - the application side of docs/shm.md: process state, commands and replies,
 * blocking waits, readiness, and the socket life cycle (socket, bind, listen, accept,
 * connect, shutdown, close, dup, fork, exec, the hand-over to a kernel socket).
 *
 * Data calls are in client_io.c, options/fcntl/ioctl in client_opt.c, poll/select/epoll
 * in client_poll.c.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "client_int.h"
#include "log.h"
#include "stk.h"
#include "intr.h"
#include "ucopy.h"

#include <errno.h>
#include <linux/futex.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <limits.h>
#include <netinet/in.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

struct shim_fdtab shim_fds;
struct shim_cli shim__c = {
    .lock = PTHREAD_MUTEX_INITIALIZER,
    .shm_fd = -1,
    .pipe_fd = -1,
    .proc_fd = -1,
    .scratch_fd = -1,
    .scratch4u_fd = -1,
    .scratch6_fd = {-1, -1},
};
#define C shim__c

/* Spins on a futex word before sleeping: a reply or an event often arrives within
 * microseconds while the stack core is busy, and a futex sleep/wake pair costs more. */
#define SHIM_SPIN 400

/* ---- diagnostics ---------------------------------------------------------------------- */

static pthread_mutex_t warn_lock = PTHREAD_MUTEX_INITIALIZER;
/* The keys are copied: a caller may build its key in a stack buffer (unsupported_set's
 * "opt<level>.<name>"), which is gone (and reused) once it returns. */
static char warned[64][32];
static unsigned nwarned;

bool shim_first_time(const char *key)
{
    pthread_mutex_lock(&warn_lock);
    for (unsigned i = 0; i < nwarned; i++) {
        if (!strncmp(warned[i], key, sizeof(warned[i]) - 1)) {
            pthread_mutex_unlock(&warn_lock);
            return false;
        }
    }
    if (nwarned < sizeof(warned) / sizeof(warned[0]))
        snprintf(warned[nwarned++], sizeof(warned[0]), "%s", key);
    pthread_mutex_unlock(&warn_lock);
    return true;
}

void shim_warn_once(const char *key, const char *fmt, ...)
{
    if (SHIM_LOG_WARN > shim__log_level || !shim_first_time(key))
        return;
    va_list ap;
    va_start(ap, fmt);
    shim_vlog(SHIM_LOG_WARN, fmt, ap);
    va_end(ap);
}

/* ---- process life cycle --------------------------------------------------------------- */

void shim_init(const struct shim_sys *sys)
{
    C.sys = *sys;
}

static __thread uint32_t t_reply __attribute__((tls_model("initial-exec"))) = SHM_NONE;
static __thread int32_t t_reply_pid __attribute__((tls_model("initial-exec")));
/* Reply slots whose command a signal stopped this thread waiting for (a lingering close):
 * each stays owned until the stack posts into it, so that no later command of any thread
 * takes that result for its own; reply_slot() gives them back. */
#define ORPHANS_MAX 4
static __thread struct {
    uint32_t slot, seq0;
    int32_t pid;
} t_orphan[ORPHANS_MAX] __attribute__((tls_model("initial-exec")));
static __thread unsigned t_norphan __attribute__((tls_model("initial-exec")));

static void reap_orphans(int32_t pid);

static void reply_dtor(void *v)
{
    (void)v;
    if (t_reply != SHM_NONE && t_reply_pid == SHIM_RLX(&C.pid) && SHIM_LOAD(&C.attached))
        shm_reply_release(C.base, t_reply);
    t_reply = SHM_NONE;
    /* Orphans still waiting for their reply stay owned: ustackd frees the slots of a
     * process that exited. */
    if (t_norphan && SHIM_LOAD(&C.attached))
        reap_orphans(SHIM_RLX(&C.pid));
}

int shim__priv(int *where)
{
    int cloexec = C.sys.fcntl(*where, F_GETFD);
    return shim_fdtab_set(&shim_fds, *where, SHIM_FD_PRIV, 0, 0, cloexec > 0 && (cloexec & 1),
                          where);
}

void shim__unpriv(int fd)
{
    if (shim_fd_kind(fd) == SHIM_FD_PRIV)
        shim_fdtab_clear(&shim_fds, fd);
}

int shim__high(int fd, bool cloexec)
{
    /* Programs dup2() onto low numbers they believe free; the library's fds live above
     * 1000 where that does not happen (docs/shm.md "Start-up"). */
    int n = C.sys.fcntl(fd, cloexec ? F_DUPFD_CLOEXEC : F_DUPFD, 1000);
    if (n < 0)
        return fd;
    C.sys.close(fd);
    return n;
}

_Atomic uint32_t *shim__map_row(uint32_t p)
{
    if (C.whole)
        return shm_hold(C.base, p, 0);
    int fd = C.shm_fd;
    void *r = fd >= 0 ? mmap(NULL, C.hold_stride, PROT_READ | PROT_WRITE, MAP_SHARED, fd,
                             (off_t)(C.off_hold + (uint64_t)p * C.hold_stride))
                      : MAP_FAILED;
    if (r == MAP_FAILED) {
        shim_warn_once("rowmap",
                       "cannot map a process's hold counts (%llu KiB of the region): %s; "
                       "ustackd cannot close its sockets if it dies",
                       (unsigned long long)(C.hold_stride >> 10),
                       strerror(fd >= 0 ? errno : EBADF));
        return NULL;
    }
    return r;
}

void shim__unmap_row(_Atomic uint32_t *row)
{
    if (row && !C.whole)
        munmap((void *)row, C.hold_stride);
}

uint8_t *shim__map_chunk(uint32_t c)
{
    uint64_t span = (2ull * C.ring) << C.chunk_shift;
    uint64_t off = C.off_data + (uint64_t)c * span;
    if (c >= C.nchunks || off >= C.region_size)
        return NULL;
    size_t len = (size_t)(C.region_size - off < span ? C.region_size - off : span);
    int fd = C.shm_fd;
    void *p =
        fd >= 0 ? mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, (off_t)off) : MAP_FAILED;
    if (p == MAP_FAILED) {
        int e = fd >= 0 ? errno : EBADF;
        shim_warn_once(
            "ringmap", "cannot map the rings of sockets %u-%u (%zu KiB of the region): %s%s",
            c << C.chunk_shift, ((c + 1) << C.chunk_shift) - 1, len >> 10, strerror(e),
            e == ENOMEM ? "; is RLIMIT_AS too low? (USTACK_SHM_RING makes rings smaller)" : "");
        return NULL;
    }
    uint8_t *was = NULL;
    if (!atomic_compare_exchange_strong_explicit(&C.chunk[c], &was, (uint8_t *)p,
                                                 memory_order_acq_rel, memory_order_acquire)) {
        munmap(p, len); /* another thread mapped it first */
        return was;
    }
    return p;
}

int shim_attach(const struct shim_attach *a)
{
    if (SHIM_LOAD(&C.attached))
        return 0;
    struct shm_hdr *h = a->base;
    int rc = shim_fdtab_init(&shim_fds, a->fdtab_size);
    if (rc < 0)
        return rc;
    size_t fsz = (size_t)h->nsocks * sizeof(struct shim_file);
    void *files =
        mmap(NULL, fsz, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (files == MAP_FAILED) {
        rc = -errno;
        shim_fdtab_destroy(&shim_fds);
        return rc;
    }
    size_t psz = (size_t)h->nsocks * sizeof(struct shim_pin);
    void *pins =
        mmap(NULL, psz, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (pins == MAP_FAILED) {
        rc = -errno;
        munmap(files, fsz);
        shim_fdtab_destroy(&shim_fds);
        return rc;
    }
    /* The rings' chunks: 2^shift slots of 2 x ring_size bytes in at most chunk_bytes. */
    uint64_t slot_bytes = 2ull * h->ring_size,
             cb = a->chunk_bytes ? a->chunk_bytes : SHIM_CHUNK_BYTES;
    uint32_t shift = 0;
    while (shift < 24 && (slot_bytes << (shift + 1)) <= cb)
        shift++;
    uint32_t nchunks = (uint32_t)(((uint64_t)h->nsocks + (1u << shift) - 1) >> shift);
    size_t csz = (size_t)nchunks * sizeof(*C.chunk);
    uint8_t *_Atomic *chunk =
        mmap(NULL, csz, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (chunk == MAP_FAILED) {
        rc = -errno;
        munmap(pins, psz);
        munmap(files, fsz);
        shim_fdtab_destroy(&shim_fds);
        return rc;
    }
    /* Mapped whole (a test's region): every chunk is there already. */
    C.whole = a->size >= h->size;
    C.off_hold = h->off_hold;
    C.hold_stride = h->hold_stride;
    if (C.whole)
        for (uint32_t c = 0; c < nchunks; c++)
            atomic_init(&chunk[c],
                        (uint8_t *)a->base + h->off_data + ((uint64_t)c * slot_bytes << shift));
    C.chunk = chunk;
    C.chunk_shift = shift;
    C.nchunks = nchunks;
    C.off_data = h->off_data;
    C.region_size = h->size;
    C.pins = pins;
    C.files = files;
    C.base = a->base;
    C.hdr = h;
    C.nsocks = h->nsocks;
    C.ring = h->ring_size;
    C.ncores = h->ncores;
    C.shm_fd = a->shm_fd;
    C.pipe_fd = a->pipe_fd;
    C.ip = a->ip;
    C.mask = a->prefix ? ~0u << (32 - a->prefix) : 0;
    C.gw = a->gw;
    C.ifindex = a->ifindex;
    memcpy(C.ip6, a->ip6, sizeof(C.ip6));
    C.ip6_prefix = a->ip6_prefix;
    C.gw6 = a->gw6;
    C.spare_max = a->spare_fds > SHIM_SPARE_MAX ? SHIM_SPARE_MAX : (int)a->spare_fds;
    struct rlimit nofile;
    C.spare_lim = getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < (rlim_t)INT_MAX
                      ? (int)nofile.rlim_cur - 2 * C.spare_max
                      : INT_MAX;
    SHIM_STORE(&C.pid, (int32_t)getpid());
    /* An exec'd image keeps the entry (and the hold counts) of the image before it. */
    C.child_pidx = SHM_NONE;
    C.pidx = shm_proc_find(C.base, (int32_t)getpid());
    if (C.pidx == SHM_NONE)
        C.pidx = shm_proc_alloc(C.base, (int32_t)getpid(), 0);
    if (C.pidx == SHM_NONE)
        shim_warn_once("procs",
                       "the region's process table (%u entries) is full: ustackd "
                       "cannot close this process's sockets if it dies",
                       h->nprocs);
    else if (!(C.row = shim__map_row(C.pidx)))
        C.pidx = SHM_NONE; /* untracked, as with a full table; ustackd frees the entry */
    C.lockval = C.pidx == SHM_NONE ? SHM_NONE : C.pidx + 1;
    for (uint32_t i = 0; i < C.ncores; i++) {
        C.wake_fd[i] = shm_cmdq(C.base, i)->wake_fd;
        if (C.wake_fd[i] >= 0)
            shim__priv(&C.wake_fd[i]);
    }
    if (C.shm_fd >= 0)
        shim__priv(&C.shm_fd);
    if (C.pipe_fd >= 0)
        shim__priv(&C.pipe_fd);
    C.proc_fd = open("/proc", O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (C.proc_fd >= 0) {
        C.proc_fd = shim__high(C.proc_fd, true);
        shim__priv(&C.proc_fd);
    }
    pthread_key_create(&C.reply_key, reply_dtor);
    /* Bad application pointers then fail with EFAULT instead of crashing (ucopy.h); without
     * the handler (it could not be installed) they fault as before. */
    if (C.sys.sigaction && shim_ucopy_install(C.sys.sigaction) < 0)
        shim_warn_once("ucopy", "cannot install the SIGSEGV/SIGBUS handler: bad buffers crash "
                                "instead of failing with EFAULT");
    /* The stack's pidfd now, not at the first wait: a process that later confines itself
     * (OpenSSH's pre-authentication child: seccomp, which kills on pidfd_open) still has
     * it, and so do its fork children. Not when the stack is still starting (no pid yet):
     * then the first wait opens it. */
    if (SHIM_LOAD(&h->stack_pid) > 0)
        shim__stack_pidfd_locked();
    SHIM_STORE(&C.attached, 1);
    return 0;
}

bool shim_attached(void)
{
    return SHIM_LOAD(&C.attached);
}

void shim_region_fds(int *shm_fd, int *pipe_fd)
{
    *shm_fd = C.shm_fd;
    *pipe_fd = C.pipe_fd;
}

bool shim_stack_dead(void)
{
    if (SHIM_RLX(&C.dead))
        return true;
    if (!C.hdr)
        return false;
    uint32_t st = SHIM_LOAD(&C.hdr->state);
    int32_t pid = SHIM_LOAD(&C.hdr->stack_pid);
    int e = errno;
    bool dead = st == SHM_GONE || st == SHM_FAILED;
    /* Its pidfd, when open, is readable once it has exited: a ppoll, which sandboxes that
     * let the application poll at all allow (OpenSSH's seccomp filter kills on kill()). */
    int pfd = __atomic_load_n(&C.stack_pidfd, __ATOMIC_ACQUIRE);
    struct pollfd p = {pfd, POLLIN, 0};
    struct timespec zero = {0, 0};
    int r = !dead && pfd > 0 ? C.sys.ppoll(&p, 1, &zero, NULL) : -1;
    if (r >= 0)
        dead = r == 1 && (p.revents & (POLLIN | POLLHUP | POLLNVAL));
    else if (!dead)
        dead = pid > 0 && kill(pid, 0) < 0 && errno == ESRCH;
    errno = e;
    if (dead)
        shim__stack_gone();
    return dead;
}

int shim__stack_pidfd_locked(void)
{
    if (C.stack_pidfd)
        return C.stack_pidfd;
    int32_t pid = C.hdr ? SHIM_LOAD(&C.hdr->stack_pid) : 0;
    int e = errno;
    int fd = pid > 0 ? (int)syscall(SYS_pidfd_open, (pid_t)pid, 0) : -1;
    if (fd < 0) {
        if (errno == ESRCH)
            shim_stack_dead();
        errno = e;
        __atomic_store_n(&C.stack_pidfd, -1, __ATOMIC_RELEASE);
        return -1;
    }
    /* Registered private with its home (a dup2 onto the number moves it and updates it). */
    __atomic_store_n(&C.stack_pidfd, shim__high(fd, true), __ATOMIC_RELEASE);
    shim__priv(&C.stack_pidfd);
    errno = e;
    return C.stack_pidfd;
}

int shim__stack_pidfd(void)
{
    int fd = __atomic_load_n(&C.stack_pidfd, __ATOMIC_ACQUIRE);
    if (fd)
        return fd;
    shim__lock();
    fd = shim__stack_pidfd_locked();
    shim__unlock();
    return fd;
}

void shim__stack_gone(void)
{
    if (atomic_exchange(&C.gone, 1))
        return;
    SHIM_STORE(&C.dead, 1);
    shim_warn_once("dead", "ustackd (pid %d) is gone; ustack sockets fail from now on",
                   (int)shim_stack_pid());
    /* Waiters of other threads sleeping on the eventfds (a poll that began after the stack
     * was known dead has no pidfd in its set) see it too. */
    int lim = shim_fdtab_limit(&shim_fds);
    for (int fd = 0; fd < lim; fd++) {
        struct shim_fd *e = shim_fdtab_get(&shim_fds, fd);
        if (e && SHIM_RLX(&e->kind) == SHIM_FD_SOCK)
            shim__signal(fd);
    }
}

int shim_stack_pid(void)
{
    return C.hdr ? SHIM_LOAD(&C.hdr->stack_pid) : 0;
}

void shim__lock(void)
{
    pthread_mutex_lock(&C.lock);
}

void shim__unlock(void)
{
    pthread_mutex_unlock(&C.lock);
}

/* ---- time ----------------------------------------------------------------------------- */

int64_t shim__now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * SHIM_NS_PER_S + ts.tv_nsec;
}

/* Called once by every blocking call when it first has to wait: signals handled from here
 * on interrupt it (intr.h). */
int64_t shim__deadline(int64_t timeout_ns)
{
    shim_intr_begin();
    if (timeout_ns <= 0)
        return SHIM_FOREVER;
    int64_t now = shim__now();
    return timeout_ns > SHIM_FOREVER - now ? SHIM_FOREVER : now + timeout_ns;
}

/* ---- commands ------------------------------------------------------------------------- */

/* Gives back the orphaned reply slots whose reply came (a fork child's are its parent's). */
static void reap_orphans(int32_t pid)
{
    unsigned k = 0;
    for (unsigned i = 0; i < t_norphan; i++) {
        if (t_orphan[i].pid != pid)
            continue;
        if (SHIM_LOAD(&shm_reply(C.base, t_orphan[i].slot)->seq) != t_orphan[i].seq0)
            shm_reply_release(C.base, t_orphan[i].slot);
        else
            t_orphan[k++] = t_orphan[i];
    }
    t_norphan = k;
}

static uint32_t reply_slot(void)
{
    int32_t pid = SHIM_RLX(&C.pid);
    if (__builtin_expect(t_norphan != 0, 0))
        reap_orphans(pid);
    if (t_reply != SHM_NONE && t_reply_pid == pid)
        return t_reply;
    uint32_t r = shm_reply_alloc(C.base, (uint32_t)syscall(SYS_gettid), pid);
    if (r == SHM_NONE)
        return r;
    t_reply = r;
    t_reply_pid = pid;
    pthread_setspecific(C.reply_key, (void *)(uintptr_t)(r + 1));
    return r;
}

void shim__cmd_init(struct shm_cmd *c, const struct shim_sk *k, enum shm_op op)
{
    memset(c, 0, sizeof(*c));
    c->op = (uint16_t)op;
    c->sock = k ? k->slot : SHM_NONE;
    c->gen = k ? k->gen : 0;
    c->reply = SHM_NONE;
    c->pid = SHIM_RLX(&C.pid);
}

int shim__push(uint32_t core, const struct shm_cmd *c)
{
    if (core >= C.ncores)
        return -EINVAL;
    struct shm_cmdq *q = shm_cmdq(C.base, core);
    for (unsigned tries = 0; shm_cmdq_push(q, c) != 0; tries++) {
        /* Full: the core is behind. Back off, but never give up while it lives. */
        if (tries < 64) {
            shim__relax();
            continue;
        }
        if ((tries & 255) == 0 && shim_stack_dead())
            return -ENETDOWN;
        struct timespec ts = {0, 20000};
        nanosleep(&ts, NULL);
    }
    /* Dekker pair with the core, which sets sleeping and then re-checks its queue. */
    atomic_thread_fence(memory_order_seq_cst);
    if (atomic_load_explicit(&q->sleeping, memory_order_relaxed)) {
        uint64_t one = 1;
        if (C.sys.write(C.wake_fd[core], &one, sizeof(one)) < 0)
            (void)0; /* EAGAIN: the counter is already non-zero, the core will wake */
    }
    return 0;
}

void shim__attach_wait(uint32_t slot)
{
    if (slot >= C.nsocks)
        return;
    struct shm_sock *s = shm_sock(C.base, slot);
    int64_t t0 = 0;
    bool told = false;
    uint32_t v;
    for (unsigned i = 0; (v = SHIM_LOAD(&s->attach_pend)) & (SHM_ATT_PEND | SHM_ATT_BUSY); i++) {
        if (i < SHIM_SPIN) {
            shim__relax();
            continue;
        }
        int64_t now = shim__now();
        if (!t0)
            t0 = now;
        /* The stack fetches the eventfd by its number: once the number is closed (and
         * maybe reused by the next accept), the socket's wake-ups are lost or go to another
         * socket, and whoever waits on it sleeps for ever. So wait as long as ustackd
         * lives, however slow it is (a busy or descheduled stack core took over a second
         * on a loaded machine); bounded only against a core that is wedged for good. */
        if (now - t0 > SHIM_ATTACH_WAIT_NS || shim_stack_dead())
            return;
        if (!told && now - t0 > SHIM_NS_PER_S) {
            told = true;
            shim_warn_once("attach-wait", "ustackd is slow to take a socket's eventfd: close() "
                                          "waits for it (over 1 s so far)");
        }
        if (!(v & SHM_ATT_WAIT) &&
            !atomic_compare_exchange_strong(&s->attach_pend, &v, v | SHM_ATT_WAIT))
            continue;
        shm_futex_wait(&s->attach_pend, v | SHM_ATT_WAIT, 10 * 1000 * 1000);
    }
}

/* The close of fd (this process's only fd of a socket nobody else holds, no call of ours
 * inside it) may take back a queued ATTACH instead of waiting for the stack to fetch the
 * eventfd: the socket is going away, so nothing will ever wait on its eventfd. Under
 * connection-per-request load that wait was a third of nginx's time. True when close need
 * not wait; caller holds the lock. own: the caller's own pins of the socket (a hand-over
 * runs inside the call that pinned it). */
bool shim__attach_cancel(uint32_t slot, uint32_t gen, uint32_t own)
{
    struct shm_sock *s = shm_sock(C.base, slot);
    uint32_t v = SHIM_LOAD(&s->attach_pend);
    if (!(v & (SHM_ATT_PEND | SHM_ATT_BUSY)))
        return true;
    struct shim_file *f = &C.files[slot];
    if (f->gen != gen || f->nfds != 1 || SHIM_LOAD(&s->refs) != 1 ||
        (uint32_t)atomic_load(&C.pins[slot].use) > own)
        return false;
    while (!(v & SHM_ATT_BUSY) && (v & SHM_ATT_PEND)) {
        if (atomic_compare_exchange_weak(&s->attach_pend, &v, SHM_ATT_CANCEL)) {
            if (v & SHM_ATT_WAIT)
                shm_futex_wake(&s->attach_pend, INT_MAX);
            return true;
        }
    }
    return !(v & (SHM_ATT_PEND | SHM_ATT_BUSY));
}

/* Waits for reply rep to move past seq0: 0, or -ENETDOWN when the stack died; with intr, -EINTR
 * once a signal handler ran during a sleep. */
static int await_reply_(struct shm_reply *rep, uint32_t seq0, bool intr)
{
    for (unsigned i = 0; SHIM_LOAD(&rep->seq) == seq0; i++) {
        if (i < SHIM_SPIN * 4) {
            shim__relax();
            continue;
        }
        /* A signal does not abandon the command: its reply slot must stay consistent, and
         * commands are short. A bound on each sleep lets a dead stack be noticed. The stack
         * wakes the futex only when sleeping is set (post() in shm_server.c). */
        atomic_store(&rep->sleeping, 1);
        int w = 0;
        if (atomic_load(&rep->seq) == seq0)
            w = shm_futex_wait(&rep->seq, seq0, 200 * 1000 * 1000);
        atomic_store_explicit(&rep->sleeping, 0, memory_order_relaxed);
        if (w == -ETIMEDOUT && shim_stack_dead())
            return -ENETDOWN;
        if (w == -EINTR && intr && SHIM_LOAD(&rep->seq) == seq0)
            return -EINTR;
    }
    return 0;
}

static int await_reply(struct shm_reply *rep, uint32_t seq0)
{
    return await_reply_(rep, seq0, false);
}

int shim__call(uint32_t core, struct shm_cmd *c, struct shm_reply **rp)
{
    if (SHIM_RLX(&C.dead))
        return -ENETDOWN;
    uint32_t r = reply_slot();
    if (r == SHM_NONE)
        return -ENOBUFS;
    struct shm_reply *rep = shm_reply(C.base, r);
    c->reply = r;
    uint32_t seq0 = SHIM_LOAD(&rep->seq);
    int rc = shim__push(core, c);
    if (rc < 0 || (rc = await_reply(rep, seq0)) < 0)
        return rc;
    if (rp)
        *rp = rep;
    return rep->result;
}

/* A close() that lingers (SO_LINGER with a timeout, docs/preload.md "Close"): the last
 * reference's CLOSE goes with a reply (shim__unref, while armed), which shim_close awaits
 * once it let go of the lock. */
static __thread struct {
    bool armed, pushed;
    uint32_t reply, seq0;
} t_linger;

void shim__kick(struct shim_sk *k)
{
    if (atomic_exchange(&k->s->kick, 1) == 0) {
        struct shm_cmd c;
        shim__cmd_init(&c, k, SHM_OP_KICK);
        shim__push(k->s->core, &c);
    }
}

/* An unbounded wait that a signal handler with SA_RESTART does not end. futex_waitv (Linux
 * 5.16) returns -ERESTARTSYS when a signal arrives, even with a timeout (an absolute one, so
 * a restart keeps the deadline), and the kernel then restarts it if the handler was installed
 * with SA_RESTART, or fails it with EINTR if not: exactly what a blocking socket call without
 * a timeout does on Linux. (FUTEX_WAIT with a timeout always ends with EINTR, as do socket
 * calls with SO_RCVTIMEO/SO_SNDTIMEO.) The thread's count of handlers run (intr.h) is the
 * second word waited on: a handler run after the caller's check and before the sleep makes
 * the sleep return at once, and the caller checks again. -ENOSYS on kernels without
 * futex_waitv. */
static int sleep_restartable(_Atomic uint32_t *word, uint32_t expected, int64_t until)
{
#ifdef __NR_futex_waitv
    struct futex_waitv w[2] = {
        {.val = expected, .uaddr = (uintptr_t)word, .flags = FUTEX_32},
        {.val = shim__intr.seq0,
         .uaddr = (uintptr_t)&shim__intr.seq,
         .flags = FUTEX_32 | FUTEX_PRIVATE_FLAG},
    };
    struct timespec ts = {(time_t)(until / SHIM_NS_PER_S), (long)(until % SHIM_NS_PER_S)};
    if (syscall(__NR_futex_waitv, w, 2, 0, &ts, CLOCK_MONOTONIC) >= 0)
        return 0;
    return errno == EAGAIN ? 0 : -errno;
#else
    (void)word, (void)expected, (void)until;
    return -ENOSYS;
#endif
}

static _Atomic int no_waitv;

int shim__sleep(struct shm_sock *s, uint32_t seq0, int64_t deadline)
{
    for (int i = 0; i < SHIM_SPIN; i++) {
        if (SHIM_LOAD(&s->seq) != seq0)
            return 0;
        shim__relax();
    }
    bool timed = deadline != SHIM_FOREVER;
    int rc = shim_intr_check(timed);
    if (rc < 0)
        return rc;
    atomic_fetch_add(&s->waiters, 1);
    if (atomic_load(&s->seq) == seq0) {
        int64_t now = shim__now();
        if (now >= deadline) {
            rc = -ETIMEDOUT;
        } else {
            int64_t t = deadline - now;
            if (t > SHIM_NS_PER_S)
                t = SHIM_NS_PER_S; /* notice a dead stack */
            rc = -ENOSYS;
            if (!timed && !SHIM_RLX(&no_waitv)) {
                rc = sleep_restartable(&s->seq, seq0, now + t);
                if (rc == -ENOSYS || rc == -EINVAL)
                    atomic_store(&no_waitv, 1);
            }
            if (rc == -ENOSYS || rc == -EINVAL)
                rc = shm_futex_wait(&s->seq, seq0, t);
            if (rc == -ETIMEDOUT)
                rc = shim_stack_dead() ? -ENETDOWN : 0; /* the caller re-checks the deadline */
            else if (rc != -EINTR)
                rc = 0;
        }
    }
    atomic_fetch_sub(&s->waiters, 1);
    /* A handler run through the trampoline while asleep or just before: EINTR or go on.
     * Linux looks for data before it looks for a signal (tcp_recvmsg, inet_csk_accept):
     * when the socket changed too, the caller re-checks first, and the EINTR, kept until
     * the call ends, comes at its next sleep if it still has to wait. */
    int ri = shim_intr_check(timed);
    if (ri < 0 && atomic_load(&s->seq) != seq0)
        return 0;
    return ri < 0 ? ri : rc;
}

int shim__take_error(struct shm_sock *s)
{
    return atomic_exchange(&s->so_error, 0);
}

/* ---- readiness ------------------------------------------------------------------------ */

uint32_t shim_sock_events(void *base, uint32_t i)
{
    /* shm_sock_poll() is the one definition both ends use: the stack signals an armed
     * eventfd exactly when it says ready, so the client must never see less. */
    if (SHIM_RLX(&C.dead) && base == C.base && i < C.nsocks) {
        /* The stack is gone: connections read as reset (Linux's tcp_poll after a RST);
         * a listener just never gets another connection. */
        if ((SHIM_RLX(&shm_sock(base, i)->flags) & SHM_F_LISTENING) ||
            C.files[i].cstate == SHIM_CS_LISTEN)
            return 0;
        return POLLIN | POLLRDNORM | POLLOUT | POLLWRNORM | POLLERR | POLLHUP | POLLRDHUP;
    }
    uint32_t ev = shm_sock_poll(base, i);
    if (ev & POLLIN)
        ev |= POLLRDNORM;
    if (ev & POLLOUT)
        ev |= POLLWRNORM;
    return ev;
}

/* ---- lookup --------------------------------------------------------------------------- */

/* ---- pins (client_int.h, struct shim_pin) ---------------------------------------------- */

static void release_now(uint32_t slot, uint32_t gen);

/* Makes the releases owed on slot once no call is left (takes the lock). */
static void pay_owed(uint32_t slot)
{
    struct shim_pin *p = &C.pins[slot];
    shim__lock();
    uint64_t u = atomic_load(&p->use);
    uint32_t n = 0;
    while ((uint32_t)u == 0 && (u >> 32)) {
        if (atomic_compare_exchange_weak(&p->use, &u, 0)) {
            n = (uint32_t)(u >> 32);
            break;
        }
    }
    for (uint32_t i = 0; i < n; i++)
        release_now(slot, p->owed_gen);
    shim__unlock();
}

static void unpin(uint32_t slot)
{
    uint64_t old = atomic_fetch_sub(&C.pins[slot].use, SHIM_PIN_CALL);
    if ((uint32_t)old == 1 && (old >> 32))
        pay_owed(slot); /* the last call out makes the releases closes left to it */
}

int shim__sk(int fd, struct shim_sk *k)
{
    k->pinned = false;
    struct shim_fd *e = shim_fdtab_get(&shim_fds, fd);
    for (;;) {
        if (!e || SHIM_LOAD(&e->kind) != SHIM_FD_SOCK)
            return e && SHIM_LOAD(&e->kind) == SHIM_FD_SPARE ? -EBADF : -ENOTSOCK;
        uint64_t sg = SHIM_LOAD(&e->sg);
        uint32_t slot = (uint32_t)sg;
        if (slot >= C.nsocks)
            return -ENOTSOCK;
        /* Dekker pair with a close, which clears the entry and then looks at the pins
         * (shim__release): either it sees this pin, or we see the entry gone. */
        atomic_fetch_add(&C.pins[slot].use, SHIM_PIN_CALL);
        if (atomic_load(&e->kind) == SHIM_FD_SOCK && atomic_load(&e->sg) == sg) {
            k->fd = fd;
            k->slot = slot;
            k->gen = (uint32_t)(sg >> 32);
            k->s = shm_sock(C.base, slot);
            k->f = &C.files[slot];
            k->pinned = true;
            return 0;
        }
        unpin(slot); /* closed (or replaced) meanwhile: look again */
    }
}

void shim__put(struct shim_sk *k)
{
    if (!k->pinned)
        return;
    k->pinned = false;
    unpin(k->slot);
}

bool shim__efd_hold(const struct shim_sk *k)
{
    struct shim_pin *p = &C.pins[k->slot];
    atomic_fetch_add(&p->efd, 1);
    /* Dekker pair with shim__efd_quiesce (entry cleared, then efd read). */
    struct shim_fd *e = shim_fdtab_get(&shim_fds, k->fd);
    if (e && atomic_load(&e->kind) == SHIM_FD_SOCK &&
        atomic_load(&e->sg) == shim_fd_sg(k->slot, k->gen))
        return true;
    atomic_fetch_sub(&p->efd, 1);
    return false;
}

void shim__efd_drop(const struct shim_sk *k)
{
    atomic_fetch_sub(&C.pins[k->slot].efd, 1);
}

void shim__efd_quiesce(uint32_t slot)
{
    if (slot >= C.nsocks)
        return;
    atomic_thread_fence(memory_order_seq_cst);
    /* A holder makes one non-blocking read or write of the eventfd. */
    for (unsigned i = 0; atomic_load(&C.pins[slot].efd); i++) {
        if (i < SHIM_SPIN)
            shim__relax();
        else
            sched_yield();
    }
}

void shim__pins_atfork_child(void)
{
    if (!C.pins)
        return;
    /* The owed releases are the parent's (the child holds no fd of those sockets: fork's
     * prepare step counted the fds in the table); only our bookkeeping of fds is settled. */
    for (uint32_t i = 0; i < C.nsocks; i++) {
        uint64_t u = atomic_load_explicit(&C.pins[i].use, memory_order_relaxed);
        uint32_t owed = (uint32_t)(u >> 32);
        struct shim_file *f = &C.files[i];
        if (owed && f->gen == C.pins[i].owed_gen) {
            f->nfds = f->nfds > owed ? f->nfds - owed : 0;
            if (f->nfds == 0)
                shim__lfd_close(f);
        }
        /* Only what is set is written: untouched pages stay unmapped. */
        if (u)
            atomic_store_explicit(&C.pins[i].use, 0, memory_order_relaxed);
        if (atomic_load_explicit(&C.pins[i].efd, memory_order_relaxed))
            atomic_store_explicit(&C.pins[i].efd, 0, memory_order_relaxed);
    }
}

void shim__pins_exec(void)
{
    if (!C.pins)
        return;
    for (uint32_t i = 0; i < C.nsocks; i++) {
        uint64_t u = atomic_load(&C.pins[i].use);
        while (u >> 32) {
            if (atomic_compare_exchange_weak(&C.pins[i].use, &u, (uint32_t)u)) {
                for (uint32_t n = (uint32_t)(u >> 32); n; n--)
                    release_now(i, C.pins[i].owed_gen);
                break;
            }
        }
    }
}

struct shim_file *shim__file_init(uint32_t slot, uint32_t gen, bool nonblock)
{
    struct shim_file *f = &C.files[slot];
    memset(f, 0, sizeof(*f));
    f->gen = gen;
    f->nfds = 1;
    f->nonblock = nonblock;
    f->lfd = f->lacc[0] = f->lacc[1] = -1;
    return f;
}

static bool sk_valid(const struct shim_sk *k)
{
    return shm_sock_valid(C.base, k->slot, k->gen);
}

bool shim__route_kernel(uint32_t dst)
{
    if (dst == 0 || (dst >> 24) == 127 || C.ip == 0)
        return true;
    return ((dst ^ C.ip) & C.mask) != 0 && C.gw == 0;
}

bool shim__inet6(const struct shim_sk *k)
{
    uint32_t f = atomic_load_explicit(&C.hdr->features, memory_order_relaxed);
    return f & (shim__dgram(k) ? SHM_FEAT_UDP6 : SHM_FEAT_INET6);
}

bool shim__route_kernel6(const struct shim_sk *k, const uint8_t ip6[16], uint32_t scope)
{
    static const uint8_t z[16];
    static const uint8_t lo[16] = {[15] = 1};
    /* Unspecified (Linux connects it to ::1), loopback, or an engine without IPv6. */
    if (!memcmp(ip6, z, 16) || !memcmp(ip6, lo, 16) || !shim__inet6(k))
        return true;
    if (ip6[0] == 0xfe && (ip6[1] & 0xc0) == 0x80) /* link-local: ustack's link, or another */
        return scope != 0 && scope != C.ifindex;
    if (C.gw6)
        return false;
    unsigned p = C.ip6_prefix;
    if (p == 0 || !memcmp(C.ip6, z, 16))
        return true; /* link-local only: nothing else is on ustack's link */
    if (memcmp(ip6, C.ip6, p / 8))
        return true;
    return p % 8 && ((ip6[p / 8] ^ C.ip6[p / 8]) & (0xff00u >> (p % 8)) & 0xff);
}

/* A private kernel socket of the family and type asked, made on first use (kept at a high
 * number, close-on-exec, hidden from the application's calls). */
static int scratch_get(int *slot, int dom, int type)
{
    shim__lock();
    if (*slot < 0) {
        int s = C.sys.socket(dom, type | SOCK_CLOEXEC, 0);
        if (s >= 0) {
            *slot = shim__high(s, true);
            shim__priv(slot);
        }
    }
    int fd = *slot;
    shim__unlock();
    return fd;
}

int shim__scratch_for(const struct shim_sk *k)
{
    int d = shim__dgram(k), type = d ? SOCK_DGRAM : SOCK_STREAM;
    if (shim__domain(k) == AF_INET6)
        return scratch_get(&C.scratch6_fd[d], AF_INET6, type);
    return d ? scratch_get(&C.scratch4u_fd, AF_INET, type) : shim__scratch();
}

int shim__scratch(void)
{
    return scratch_get(&C.scratch_fd, AF_INET, SOCK_STREAM);
}

/* ---- socket --------------------------------------------------------------------------- */

static int make_socket(int flags, bool dgram, int dom);

int shim_socket(int flags)
{
    return make_socket(flags, false, AF_INET);
}

int shim_socket6(int flags, bool dgram)
{
    return make_socket(flags, dgram, AF_INET6);
}

/* net.ipv6.bindv6only: the IPV6_V6ONLY a new AF_INET6 socket starts with. */
static bool bindv6only(void)
{
    static int v = -1;
    if (v < 0) {
        int fd = open("/proc/sys/net/ipv6/bindv6only", O_RDONLY | O_CLOEXEC);
        char b[8] = {0};
        v = fd >= 0 && C.sys.read(fd, b, sizeof(b) - 1) > 0 && b[0] == '1';
        if (fd >= 0)
            C.sys.close(fd);
    }
    return v;
}

/* UDP sockets all live on core 0, which every non-TCP frame is steered to (dpdk_io/core.c
 * classify(); docs/architecture.md "UDP"). */
int shim_socket_dgram(int flags)
{
    return make_socket(flags, true, AF_INET);
}

static int make_socket(int flags, bool dgram, int dom)
{
    if (!SHIM_LOAD(&C.attached) || SHIM_RLX(&C.dead))
        return -ENETDOWN;
    bool cloexec = flags & SOCK_CLOEXEC;
    bool stale;
    int efd = shim__efd_new(cloexec, &stale);
    if (efd < 0)
        return efd;
    uint32_t i = shm_sock_alloc(C.base);
    if (i == SHM_NONE) {
        shim__efd_close(efd);
        shim_warn_once("nsocks", "all %u socket slots of the region are in use", C.nsocks);
        return -ENOBUFS;
    }
    struct shm_sock *s = shm_sock(C.base, i);
    struct shim_sk k = {efd, i, SHIM_LOAD(&s->gen), s, NULL, false};
    s->core = dgram ? 0 : atomic_fetch_add(&C.next_core, 1) % C.ncores;
    atomic_store(&s->refs, 1);
    if (C.pidx != SHM_NONE)
        atomic_store(&C.row[i], 1);
    s->domain = (uint32_t)dom;
    atomic_store(&s->app_flags, dom == AF_INET6 && bindv6only() ? SHM_A_V6ONLY : 0);
    atomic_store(&s->flags, dgram ? SHM_F_DGRAM : 0);
    /* SOCKET goes without a reply, as an accepted socket's ATTACH does: a round trip per
     * socket() was a third of a connecting client's waits. Every later command on the socket
     * queues behind it on its core; the stack fetches the eventfd by number, so the number
     * stays until it has (shim__attach_wait); a SOCKET the stack cannot serve makes it say
     * why at the socket's next command (SHM_F_NOSOCK, docs/shm.md "Commands"). */
    struct shm_cmd c;
    shim__cmd_init(&c, &k, SHM_OP_SOCKET);
    c.a0 = efd;
    c.a1 = dgram ? SHM_SOCK_DGRAM : 0;
    atomic_store(&s->attach_pend, SHM_ATT_PEND);
    int rc = shim__push(s->core, &c);
    if (rc < 0) {
        /* Not queued: the stack never sees the slot, so it is ours to give back. */
        atomic_store(&s->attach_pend, 0);
        if (C.pidx != SHM_NONE)
            atomic_store(&C.row[i], 0);
        shm_sock_free(C.base, i);
        shim__efd_close(efd);
        return rc;
    }
    shim__file_init(i, k.gen, flags & SOCK_NONBLOCK)->efd_stale = stale;
    shim__lock();
    shim_fdtab_set(&shim_fds, efd, SHIM_FD_SOCK, i, k.gen, cloexec, NULL);
    shim__unlock();
    return efd;
}

/* ---- addresses ------------------------------------------------------------------------ */

/* May this process bind a port below ip_unprivileged_port_start? (The stack cannot tell:
 * it runs with the spawner's privileges, not the caller's.) */
static bool may_bind_low(uint16_t port)
{
    static int start = -1;
    if (start < 0) {
        start = 1024;
        int fd = open("/proc/sys/net/ipv4/ip_unprivileged_port_start", O_RDONLY | O_CLOEXEC);
        if (fd >= 0) {
            char b[16] = {0};
            if (C.sys.read(fd, b, sizeof(b) - 1) > 0)
                start = atoi(b);
            C.sys.close(fd);
        }
    }
    if (port == 0 || port >= start)
        return true;
    struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct d[2];
    if (syscall(SYS_capget, &h, d) < 0)
        return true;
    return d[CAP_NET_BIND_SERVICE / 32].effective & (1u << (CAP_NET_BIND_SERVICE % 32));
}

/* The engine's IPV6_V6ONLY, before the bind it matters to (an engine without IPv6 has no
 * such option: it serves IPv4 only anyway). */
int shim__push_v6only(struct shim_sk *k)
{
    if (shim__domain(k) != AF_INET6 || !(SHIM_LOAD(&k->s->app_flags) & SHM_A_V6ONLY))
        return 0; /* the engine's default */
    struct shm_cmd c;
    shim__cmd_init(&c, k, SHM_OP_SETOPT);
    c.a0 = STK_IPV6_V6ONLY;
    c.a1 = (SHIM_LOAD(&k->s->app_flags) & SHM_A_V6ONLY) != 0;
    int rc = shim__call(k->s->core, &c, NULL);
    return rc == -ENOPROTOOPT ? 0 : rc;
}

/* A port of the engine's ephemeral range (STK's default 32768..60999, also the kernel's). */
static uint16_t pick_port(void)
{
    static _Atomic uint32_t seq;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint32_t v =
        atomic_fetch_add(&seq, 0x9e3779b9u) ^ (uint32_t)ts.tv_nsec ^ ((uint32_t)getpid() << 16);
    v ^= v >> 16;
    v *= 0x7feb352du;
    v ^= v >> 15;
    return (uint16_t)(32768 + v % (61000 - 32768));
}

/* Is this port free on 127.0.0.1 for a kernel loopback listener (lo_listen)? Probed without
 * SO_REUSEADDR, so that a port whose earlier loopback connections linger in TIME_WAIT is not
 * taken either: the companion would bind it (it sets SO_REUSEADDR), but an application's
 * later bind of 127.0.0.1 on that port, which the kernel would allow next to a listener on
 * the host's address, would fail (asyncio's test_create_connection_local_addr, now and then). */
static bool lo_port_free(uint16_t port)
{
    int l = C.sys.socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (l < 0)
        return true; /* cannot tell */
    struct sockaddr_in a = {
        .sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    bool ok = C.sys.bind(l, (struct sockaddr *)&a, sizeof(a)) == 0;
    C.sys.close(l);
    return ok;
}

static int do_bind(struct shim_sk *k, const struct shm_addr *a)
{
    struct shm_cmd c;
    struct shm_reply *r;
    int rc = shim__push_v6only(k);
    if (rc < 0)
        return rc;
    /* A TCP socket on the wildcard or our own address gets a kernel loopback listener on its
     * port if it listens (shim__loopback_listener), and the engine's ephemeral ports are the
     * kernel's range: a port the engine picked for port 0 could be in use there (a loopback
     * client's, in TIME_WAIT or open), and connections over loopback would then be refused.
     * Port 0 takes a port free on both sides instead (a few tries, then the engine's pick). */
    rc = -EADDRINUSE;
    if (a->port == 0 && !shim__dgram(k) && (shim_addr_any(a) || shim__own_address(a)))
        for (int t = 0; t < 16 && rc == -EADDRINUSE; t++) {
            uint16_t p = pick_port();
            if (!lo_port_free(p))
                continue;
            shim__cmd_init(&c, k, SHM_OP_BIND);
            c.addr = *a;
            c.addr.port = p;
            rc = shim__call(k->s->core, &c, &r);
        }
    if (rc == -EADDRINUSE) {
        shim__cmd_init(&c, k, SHM_OP_BIND);
        c.addr = *a;
        rc = shim__call(k->s->core, &c, &r);
    }
    if (rc == -EAFNOSUPPORT && a->family == SHM_AF_INET6 && shim_addr_any(a) &&
        !(SHIM_LOAD(&k->s->app_flags) & SHM_A_V6ONLY)) {
        /* An engine without IPv6: the dual-stack wildcard serves what it can, IPv4. */
        shim_warn_once("any6", "the stack serves no IPv6: sockets bound to [::] serve IPv4 "
                               "only (v4-mapped)");
        shim__cmd_init(&c, k, SHM_OP_BIND);
        c.addr = (struct shm_addr){.port = a->port};
        if ((rc = shim__call(k->s->core, &c, &r)) == 0)
            k->f->any6 = 1;
    }
    if (rc < 0)
        return rc;
    k->f->bound = 1;
    k->f->bind_a = *a;
    if (r->addr.port)
        k->f->bind_a.port = r->addr.port;
    return 0;
}

/* The engine answered -EAFNOSUPPORT for a native IPv6 address (it serves none): the socket
 * becomes the kernel's, said once on stderr. */
void shim__no_inet6_warn(void)
{
    shim_warn_once("inet6", "the stack serves no IPv6: AF_INET6 sockets with native IPv6 "
                            "addresses are the kernel's");
}

static bool reuseport(const struct shim_file *f)
{
    for (unsigned i = 0; i < f->nopts; i++)
        if (f->opts[i].level == SOL_SOCKET && f->opts[i].name == SO_REUSEPORT)
            return f->opts[i].val[0] | f->opts[i].val[1] | f->opts[i].val[2] | f->opts[i].val[3];
    return false;
}

/* SO_REUSEPORT where the stack refused the port: a second socket of this process bound to
 * the same address becomes another fd of the first (as if dup'd onto its number). Sockets
 * share a port in the engine (STK_SO_REUSEPORT groups, one per user, across processes and
 * regions), so this is left for a socket whose group the stack did not take (one set up
 * before the option reached it). */
static int reuseport_alias(struct shim_sk *k, const struct shm_addr *a)
{
    int lim = shim_fdtab_limit(&shim_fds), other = -1;
    for (int fd = 0; fd < lim && other < 0; fd++) {
        struct shim_fd *e = shim_fdtab_get(&shim_fds, fd);
        if (fd == k->fd || !e || SHIM_RLX(&e->kind) != SHIM_FD_SOCK)
            continue;
        struct shim_file *f = &C.files[e->slot];
        struct shm_sock *s = shm_sock(C.base, e->slot);
        /* Only a socket of the same type and domain: a TCP listener and a UDP socket on the
         * same address and port (a DNS server's pair, per thread) are no reuseport group. */
        if (((SHIM_RLX(&s->flags) ^ SHIM_RLX(&k->s->flags)) & SHM_F_DGRAM) ||
            s->domain != k->s->domain)
            continue;
        if (f->gen == e->gen && f->bound && !memcmp(&f->bind_a, a, sizeof(*a)) && reuseport(f))
            other = fd;
    }
    if (other < 0)
        return -EADDRINUSE;
    struct shim_fd *me = shim_fdtab_get(&shim_fds, k->fd);
    bool cloexec = me && me->cloexec;
    return shim_dup3(other, k->fd, cloexec ? O_CLOEXEC : 0, false) < 0 ? -EADDRINUSE : 0;
}

int shim_bind(int fd, const struct sockaddr *addr, socklen_t len)
{
    SHIM_SK(k);
    int rc = shim__sk(fd, &k);
    if (rc < 0)
        return rc;
    struct sockaddr_storage ss;
    if ((rc = shim__get_sa(addr, len, &ss)) < 0)
        return rc;
    bool six = shim__domain(&k) == AF_INET6;
    if (six) {
        /* inet6_bind: the length, then the family (no AF_UNSPEC games). */
        if (len < SHIM_SIN6_LEN_RFC2133)
            return -EINVAL;
        if (ss.ss_family != AF_INET6)
            return -EAFNOSUPPORT;
    } else {
        if (len < sizeof(struct sockaddr_in))
            return -EINVAL;
        /* Linux accepts AF_UNSPEC for INADDR_ANY only ("compatibility games"). */
        if (ss.ss_family != AF_INET &&
            !(ss.ss_family == AF_UNSPEC && ((struct sockaddr_in *)&ss)->sin_addr.s_addr == 0))
            return -EAFNOSUPPORT;
        ss.ss_family = AF_INET;
    }
    struct shm_addr a;
    shim_addr_in(&ss, C.ifindex, &a);
    if (!sk_valid(&k))
        return -EINVAL;
    if (k.f->bound || k.f->cstate != SHIM_CS_NEW)
        return -EINVAL;
    if (!may_bind_low(a.port))
        return -EACCES;
    bool v6only = SHIM_LOAD(&k.s->app_flags) & SHM_A_V6ONLY;
    if (six && a.family == SHM_AF_INET && v6only)
        return -EINVAL; /* a v4-mapped address on a v6-only socket "makes no sense" */
    bool kernel;
    if (a.family == SHM_AF_INET)
        /* A UDP socket may bind a broadcast address of ustack's interface, v4-mapped too
         * (Linux's inet_addr_valid_or_nonlocal takes RTN_BROADCAST as RTN_LOCAL): it
         * receives what is sent there. */
        kernel = a.ip != 0 && a.ip != C.ip && !(shim__dgram(&k) && shim__dg_bcast(a.ip));
    else if (!shim__inet6(&k))
        kernel = !shim_addr_any(&a) || v6only;
    else
        kernel = !shim_addr_any(&a) && memcmp(a.ip6, C.ip6, 16) &&
                 !(a.ip6[0] == 0xfe && (a.ip6[1] & 0xc0) == 0x80 && a.scope == 0);
    if (kernel) {
        /* Loopback or an address of the host's: the application wants a kernel socket. */
        if (a.family == SHM_AF_INET6 && !shim__inet6(&k) && shim_addr_any(&a))
            shim__no_inet6_warn();
        if ((rc = shim__handover(&k)) < 0)
            return rc;
        return C.sys.bind(fd, addr, len) < 0 ? -errno : 0;
    }
    rc = do_bind(&k, &a);
    if (rc == -EAFNOSUPPORT && a.family == SHM_AF_INET6) {
        shim__no_inet6_warn();
        if ((rc = shim__handover(&k)) < 0)
            return rc;
        return C.sys.bind(fd, addr, len) < 0 ? -errno : 0;
    }
    if (rc == -EADDRINUSE && a.port && reuseport(k.f))
        rc = reuseport_alias(&k, &a);
    return rc;
}

/* ---- listen / accept ------------------------------------------------------------------ */

/* ustack's own address (IPv4, or its global IPv6 address). */
bool shim__own_address(const struct shm_addr *a)
{
    static const uint8_t z[16];
    if (a->family == SHM_AF_INET)
        return C.ip != 0 && a->ip == C.ip;
    return memcmp(C.ip6, z, 16) && !memcmp(a->ip6, C.ip6, 16);
}

/* One kernel listener on a loopback address (127.0.0.1 in dom's form, or ::1), or -1. The
 * companion of an SO_REUSEPORT listener has the option too, so that every listener of the
 * group has its own. */
static int lo_listen(int dom, bool v6, uint16_t port, int backlog, bool rport)
{
    int l = C.sys.socket(dom, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (l < 0)
        return -1;
    int one = 1, only = v6;
    C.sys.setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (rport)
        C.sys.setsockopt(l, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
    struct sockaddr_storage ss;
    struct shm_addr a = {.port = port, .ip = INADDR_LOOPBACK};
    if (v6)
        a = (struct shm_addr){.family = SHM_AF_INET6, .port = port, .ip6 = {[15] = 1}};
    socklen_t n = shim_addr_out(dom, &a, 0, &ss);
    if ((dom == AF_INET6 && C.sys.setsockopt(l, IPPROTO_IPV6, IPV6_V6ONLY, &only, sizeof(only))) ||
        C.sys.bind(l, (struct sockaddr *)&ss, n) < 0 || C.sys.listen(l, backlog) < 0) {
        shim_warn_once(v6 ? "lolisten6" : "lolisten",
                       "no loopback listener for port %u (%s): connections to "
                       "%s will not reach it",
                       port, strerror(errno), v6 ? "::1" : "127.0.0.1");
        C.sys.close(l);
        return -1;
    }
    return shim__high(l, true);
}

/* A listener on the wildcard also takes loopback connections, through kernel listeners on
 * 127.0.0.1 (an AF_INET6 one unless IPV6_V6ONLY: ::ffff:127.0.0.1) and, for AF_INET6, ::1,
 * on the same port, whose accepts are merged with ustack's (DESIGN.md). A listener on our
 * own address gets the one of them that a connect to that address from this host goes to
 * (shim_connect: 127.0.0.1 for IPv4, ::1 for the global IPv6 address). */
void shim__loopback_listener(struct shim_sk *k, uint16_t port, int backlog)
{
    struct shim_file *f = k->f;
    int dom = shim__domain(k), n = 0;
    bool any = shim_addr_any(&f->bind_a), v4 = f->bind_a.family == SHM_AF_INET, rp = reuseport(f);
    if (any ? dom == AF_INET || !(SHIM_LOAD(&k->s->app_flags) & SHM_A_V6ONLY) : v4)
        if ((f->lacc[n] = lo_listen(dom, false, port, backlog, rp)) >= 0)
            shim__priv(&f->lacc[n++]);
    if (dom == AF_INET6 && (any || !v4) &&
        (f->lacc[n] = lo_listen(dom, true, port, backlog, rp)) >= 0)
        shim__priv(&f->lacc[n++]);
    shim__lfd_set(f, n);
}

void shim__lfd_set(struct shim_file *f, int n)
{
    if (n == 1) {
        f->lfd = f->lacc[0];
        return;
    }
    if (n < 2)
        return;
    /* Two: poll and epoll watch an epoll set of both. */
    int ep = C.sys.epoll_create1(EPOLL_CLOEXEC);
    if (ep >= 0) {
        f->lfd = shim__high(ep, true);
        shim__priv(&f->lfd);
        for (int j = 0; j < 2; j++) {
            struct epoll_event ev = {.events = EPOLLIN, .data.fd = f->lacc[j]};
            C.sys.epoll_ctl(f->lfd, EPOLL_CTL_ADD, f->lacc[j], &ev);
        }
    }
}

void shim__lfd_close(struct shim_file *f)
{
    int fds[3] = {f->lfd, f->lacc[0], f->lacc[1]};
    f->lfd = f->lacc[0] = f->lacc[1] = -1;
    for (int j = 0; j < 3; j++) {
        if (fds[j] < 0 || (j > 0 && fds[j] == fds[0]))
            continue;
        shim__unpriv(fds[j]);
        C.sys.close(fds[j]);
    }
}

/* LISTEN (backlog already clamped) on the socket's home core first, which makes the accept
 * queue, then on every other core. */
static int listen_cores(struct shim_sk *k, int backlog)
{
    uint32_t home = k->s->core;
    for (uint32_t n = 0; n < C.ncores; n++) {
        struct shm_cmd c;
        shim__cmd_init(&c, k, SHM_OP_LISTEN);
        c.a0 = backlog;
        int rc = shim__call(n == 0 ? home : (n == home ? 0 : n), &c, NULL);
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* listen() on a listener stopped by shutdown(SHUT_RD): every core's engine listens again on
 * its port, and the loopback companions too (HAProxy resumes paused listeners so). */
static int relisten(struct shim_sk *k, int backlog)
{
    int rc = listen_cores(k, backlog);
    if (rc < 0)
        return rc;
    for (int i = 0; i < 2; i++)
        if (k->f->lacc[i] >= 0)
            C.sys.listen(k->f->lacc[i], backlog);
    atomic_fetch_and(&k->s->app_flags, ~SHM_A_RD_SHUT);
    return 0;
}

int shim_listen(int fd, int backlog)
{
    SHIM_SK(k);
    int rc = shim__sk(fd, &k);
    if (rc < 0)
        return rc;
    if (!sk_valid(&k))
        return -EINVAL;
    if (shim__dgram(&k))
        return -EOPNOTSUPP;
    backlog = backlog < 0 ? 0 : backlog > 65535 ? 65535 : backlog;
    if (k.f->cstate == SHIM_CS_LISTEN && (SHIM_LOAD(&k.s->app_flags) & SHM_A_RD_SHUT))
        return relisten(&k, backlog); /* after shutdown(SHUT_RD) */
    if (k.f->cstate == SHIM_CS_LISTEN)
        return 0; /* Linux only adjusts the backlog */
    if (k.f->cstate != SHIM_CS_NEW && k.f->cstate != SHIM_CS_FAILED)
        return -EINVAL;
    struct shm_addr any = {.family = shim__domain(&k) == AF_INET6 ? SHM_AF_INET6 : SHM_AF_INET};
    if (!k.f->bound && (rc = do_bind(&k, &any)) < 0) /* Linux binds an ephemeral port */
        return rc;
    if ((rc = listen_cores(&k, backlog)) < 0)
        return rc;
    k.f->cstate = SHIM_CS_LISTEN;
    if (shim_addr_any(&k.f->bind_a) || shim__own_address(&k.f->bind_a)) {
        uint16_t port = k.s->la.port ? k.s->la.port : k.f->bind_a.port;
        shim__loopback_listener(&k, port, backlog);
    }
    return 0;
}

/* Takes over an accepted socket popped from a listener's queue. */
/* The stack leaves connections in its engines' accept queues while the shared one is full,
 * as Linux leaves a full listener's handshakes unanswered (SHM_F_RX_BLOCKED on a listener:
 * docs/shm.md "Accepting"). After taking one, tell every core there is room again. Dekker
 * pair with the core, which sets the flag and then re-checks the queue's room. */
static void aq_unblock(struct shim_sk *k)
{
    atomic_thread_fence(memory_order_seq_cst);
    if (!(SHIM_RLX(&k->s->flags) & SHM_F_RX_BLOCKED))
        return;
    if (!(atomic_fetch_and(&k->s->flags, ~SHM_F_RX_BLOCKED) & SHM_F_RX_BLOCKED))
        return; /* another taker tells them */
    struct shm_cmd c;
    shim__cmd_init(&c, k, SHM_OP_KICK);
    for (uint32_t core = 0; core < C.ncores; core++)
        shim__push(core, &c);
}

static int take_accepted(const struct shim_file *lf, uint32_t i, int efd, bool stale, int flags,
                         struct sockaddr *addr, socklen_t *alen)
{
    if (i >= C.nsocks) {
        shim__efd_close(efd);
        return -ECONNABORTED;
    }
    struct shm_sock *s = shm_sock(C.base, i);
    struct shim_sk k = {efd, i, SHIM_LOAD(&s->gen), s, NULL, false};
    /* The eventfd is handed over without waiting for the stack (a round trip per accept was
     * a quarter of nginx's time): the socket's later commands queue behind it on its core,
     * and the stack re-publishes readiness once it holds the eventfd, so an epoll arming in
     * between is not lost. Until the stack has fetched it, the eventfd's number must stay
     * (shim__attach_wait before any close of it). An eventfd the stack cannot take (a dying
     * or hostile process) is counted there (shm_efd_fail); the socket then works without
     * wake-ups. */
    struct shm_cmd c;
    shim__cmd_init(&c, &k, SHM_OP_ATTACH);
    c.a0 = efd;
    atomic_store(&s->attach_pend, SHM_ATT_PEND);
    int rc = shim__push(s->core, &c);
    if (rc < 0) {
        atomic_store(&s->attach_pend, 0);
        shim__efd_close(efd);
        shim__file_init(i, k.gen, false);
        shim__lock();
        shim__release(i, k.gen);
        shim__unlock();
        return -ECONNABORTED;
    }
    struct shim_file *f = shim__file_init(i, k.gen, flags & SOCK_NONBLOCK);
    f->cstate = SHIM_CS_CONNECTED;
    f->efd_stale = stale;
    /* Linux's accepted sockets inherit the listener's timeouts (not O_NONBLOCK). */
    f->rcvtimeo = lf->rcvtimeo;
    f->sndtimeo = lf->sndtimeo;
    if (addr)
        shim__put_sa(s->domain == AF_INET6 ? AF_INET6 : AF_INET, &s->ra, addr, alen);
    shim__lock();
    shim_fdtab_set(&shim_fds, efd, SHIM_FD_SOCK, i, k.gen, flags & SOCK_CLOEXEC, NULL);
    shim__unlock();
    return efd;
}

/* Blocks on a socket and a kernel fd together (through the socket's eventfd). */
static int sleep_with(struct shim_sk *k, uint32_t want, int kfd, int64_t deadline)
{
    /* Another thread may close k->fd while we wait (the socket stays pinned, its number
     * does not): the eventfd is used by number only while held, and the sleep is bounded
     * (1 s; 10 ms once the number is gone) so that a number reused meanwhile for something
     * else delays nothing for long. */
    int64_t cap = SHIM_NS_PER_S;
    int efd = -1;
    if (shim__efd_hold(k)) {
        uint64_t v;
        if (C.sys.read(k->fd, &v, sizeof(v)) < 0)
            (void)0;
        atomic_fetch_or(&k->s->armed, want | POLLERR | POLLHUP);
        if (shim_sock_events(C.base, k->slot) & want) {
            shim__signal(k->fd);
            shim__efd_drop(k);
            return 0;
        }
        shim__efd_drop(k);
        efd = k->fd;
    } else {
        if (shim_sock_events(C.base, k->slot) & want)
            return 0;
        cap = 10 * 1000 * 1000;
    }
    struct pollfd p[2] = {{efd, POLLIN, 0}, {kfd, POLLIN, 0}};
    int64_t left = deadline == SHIM_FOREVER ? SHIM_FOREVER : deadline - shim__now();
    if (left <= 0)
        return -ETIMEDOUT;
    bool capped = left > cap; /* then a timeout is only a re-check */
    if (capped)
        left = cap;
    struct timespec ts = {left / SHIM_NS_PER_S, left % SHIM_NS_PER_S};
    bool timed = deadline != SHIM_FOREVER;
    int rc = shim_intr_check(timed);
    if (rc < 0)
        return rc;
    int n = C.sys.ppoll(p, 2, &ts, NULL);
    if (n < 0 && errno == EINTR) {
        /* A handler of ours: EINTR, or a restart (SA_RESTART, no timeout). Another one
         * (installed by a raw system call): EINTR, as ppoll gives. */
        uint32_t seq0 = shim__intr.seq0;
        rc = shim_intr_check(timed);
        if (rc < 0)
            return rc;
        return shim__intr.seq0 == seq0 ? -EINTR : 0;
    }
    if (n < 0)
        return -errno;
    rc = shim_intr_check(timed);
    if (rc < 0)
        return rc;
    return n == 0 && !capped ? -ETIMEDOUT : 0;
}

int shim_accept(int fd, struct sockaddr *addr, socklen_t *alen, int flags)
{
    SHIM_SK(k);
    int rc = shim__sk(fd, &k);
    if (rc < 0)
        return rc;
    if (flags & ~(SOCK_NONBLOCK | SOCK_CLOEXEC))
        return -EINVAL;
    if (shim__dgram(&k))
        return -EOPNOTSUPP;
    if (addr && shim__badp(alen))
        return -EFAULT;
    if (addr && (int)*alen < 0)
        return -EINVAL;
    if (!sk_valid(&k) || k.f->cstate != SHIM_CS_LISTEN)
        return -EINVAL;
    struct shm_sock *s = k.s;
    /* The accept queue lives in the listener's rx ring area. */
    uint8_t *aq = shim__rx_data(k.slot);
    if (!aq)
        return -ENOMEM;
    int64_t deadline = 0;
    for (;;) {
        uint32_t seq0 = SHIM_LOAD(&s->seq);
        if (SHIM_LOAD(&s->app_flags) & SHM_A_RD_SHUT)
            return -EINVAL;
        if (!shm_aq_empty(s)) {
            /* The eventfd first: if the process is out of fds the connection must stay
             * queued, as with the kernel. */
            bool stale;
            int efd = shim__efd_new(flags & SOCK_CLOEXEC, &stale);
            if (efd < 0)
                return efd;
            uint32_t i;
            if (shm_aq_pop(s, aq, C.ring, &i)) {
                /* The queue's reference becomes this fd's (nobody else can hold it yet),
                 * counted as ours at once: a process killed from here on leaves it to
                 * ustackd's reclaim, not open for ever (docs/shm.md "Holders"). */
                if (i < C.nsocks) {
                    atomic_store(&shm_sock(C.base, i)->refs, 1);
                    if (C.pidx != SHM_NONE)
                        atomic_store(&C.row[i], 1);
                }
                if (SHIM_RLX(&s->sigb) && shm_aq_empty(s) && shim__efd_hold(&k)) {
                    shim__settle(k.fd, k.slot);
                    shim__efd_drop(&k);
                }
                aq_unblock(&k);
                rc = take_accepted(k.f, i, efd, stale, flags, addr, alen);
                if (rc >= 0)
                    return rc;
                continue;
            }
            shim__efd_close(efd);
        }
        for (int j = 0; j < 2 && k.f->lacc[j] >= 0; j++) {
            int r = C.sys.accept4(k.f->lacc[j], addr, alen, flags);
            if (r >= 0)
                return r;
            if (errno != EAGAIN && errno != ECONNABORTED)
                return -errno;
        }
        if (k.f->nonblock)
            return -EAGAIN;
        if (!deadline)
            deadline = shim__deadline(k.f->rcvtimeo);
        rc = k.f->lfd >= 0 ? sleep_with(&k, POLLIN, k.f->lfd, deadline)
                           : shim__sleep(s, seq0, deadline);
        if (rc == -ETIMEDOUT)
            return -EAGAIN;
        if (rc < 0)
            return rc;
    }
}

/* ---- connect -------------------------------------------------------------------------- */

/* Waits for a connect in progress. timed_out: what expiry of SO_SNDTIMEO returns (Linux's
 * __inet_stream_connect: EINPROGRESS for the connect that started it, EALREADY for a
 * later blocking one, which waits too). */
static int connect_wait(struct shim_sk *k, int timed_out)
{
    int64_t deadline = shim__deadline(k->f->sndtimeo);
    for (;;) {
        uint32_t seq0 = SHIM_LOAD(&k->s->seq);
        uint32_t fl = SHIM_LOAD(&k->s->flags);
        if (fl & SHM_F_CONNECTED) {
            k->f->cstate = SHIM_CS_CONNECTED;
            return 0;
        }
        if (fl & (SHM_F_ERROR | SHM_F_RESET)) {
            k->f->cstate = SHIM_CS_FAILED;
            int e = shim__take_error(k->s);
            return e > 0 ? -e : -ECONNABORTED;
        }
        int rc = shim__sleep(k->s, seq0, deadline);
        if (rc == -ETIMEDOUT)
            return timed_out; /* Linux: a blocking connect bounded by SO_SNDTIMEO */
        if (rc < 0)
            return rc;
    }
}

/* A connect() destination of socket k as Linux's tcp_v4/v6_connect and datagram connects
 * check it (after AF_UNSPEC, which the caller handled): 0 and *a, or -errno. */
static int connect_addr(const struct shim_sk *k, const struct sockaddr_storage *ss, socklen_t len,
                        struct shm_addr *a)
{
    bool v6only = SHIM_LOAD(&k->s->app_flags) & SHM_A_V6ONLY;
    if (shim__domain(k) == AF_INET6 && !(shim__dgram(k) && ss->ss_family == AF_INET)) {
        if (len < SHIM_SIN6_LEN_RFC2133)
            return -EINVAL;
        if (ss->ss_family != AF_INET6)
            return -EAFNOSUPPORT;
        shim_addr_in(ss, C.ifindex, a);
        if (a->family == SHM_AF_INET)
            return v6only ? -ENETUNREACH : 0;
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)ss;
        if (a->ip6[0] == 0xff && !shim__dgram(k))
            return -ENETUNREACH; /* multicast */
        if (a->ip6[0] == 0xfe && (a->ip6[1] & 0xc0) == 0x80 &&
            (len < sizeof(struct sockaddr_in6) || s6->sin6_scope_id == 0))
            return -EINVAL; /* link-local needs an interface */
        return 0;
    }
    if (shim__domain(k) == AF_INET6 && v6only)
        return -EAFNOSUPPORT; /* AF_INET to a v6-only datagram socket */
    if (len < sizeof(struct sockaddr_in))
        return -EINVAL;
    if (ss->ss_family != AF_INET)
        return -EAFNOSUPPORT;
    shim_addr_in(ss, C.ifindex, a);
    return 0;
}

/* May connect() queue its CONNECT without waiting for the answer? Only where every error the
 * stack could answer is one Linux too may report asynchronously: a first connect of a fresh,
 * unbound IPv4 socket to another host's unicast address (what ab, wrk and curl do). Binding,
 * IPv6, a retry after a failure, or an address that is ours, a wildcard, a broadcast or a
 * multicast one keep the synchronous errors. */
static bool connect_async_ok(const struct shim_sk *k, const struct shm_addr *a)
{
    if (shim__domain(k) != AF_INET || a->family != SHM_AF_INET || k->f->cstate != SHIM_CS_NEW ||
        k->f->bound || k->s->la.port != 0 || a->port == 0)
        return false;
    uint32_t ip = a->ip;
    bool bcast = ip == 0xffffffffu || (C.mask != 0xffffffffu && (ip & ~C.mask) == ~C.mask &&
                                       ((ip ^ C.ip) & C.mask) == 0);
    return ip != 0 && ip != C.ip && (ip >> 28) != 14 && !bcast;
}

/* A CONNECT queued without a reply that the stack has not taken yet: wait until it has (a
 * NOP behind it on the same core), for calls that read what it sets (the local address). */
static void connect_settle(struct shim_sk *k)
{
    if (!shm_connect_queued(SHIM_LOAD(&k->s->flags), SHIM_LOAD(&k->s->app_flags)))
        return;
    struct shm_cmd c;
    shim__cmd_init(&c, k, SHM_OP_NOP);
    shim__call(k->s->core, &c, NULL);
}

/* A TCP connect to our own address: Linux delivers it over loopback, and the engine has no
 * path to itself. The socket goes to the kernel and connects to loopback instead (127.0.0.1,
 * ::ffff:127.0.0.1 or ::1, same port), where the companion of a ustack listener on the
 * wildcard or on that address takes it, as does a kernel listener; both ends then name
 * loopback as the peer (docs/preload.md "Routing"). ss (the caller's address, copied) is
 * rewritten in place. */
static struct sockaddr_storage *loopback_of(struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET) {
        ((struct sockaddr_in *)ss)->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    } else {
        struct in6_addr *ip6 = &((struct sockaddr_in6 *)ss)->sin6_addr;
        if (IN6_IS_ADDR_V4MAPPED(ip6))
            ip6->s6_addr32[3] = htonl(INADDR_LOOPBACK);
        else
            *ip6 = in6addr_loopback;
    }
    return ss;
}

int shim_connect(int fd, const struct sockaddr *addr, socklen_t len)
{
    SHIM_SK(k);
    int rc = shim__sk(fd, &k);
    if (rc < 0)
        return rc;
    struct sockaddr_storage ss;
    if ((rc = shim__get_sa(addr, len, &ss)) < 0)
        return rc;
    if (shim__dgram(&k))
        return shim__dg_connect(&k, &ss, addr, len);
    if (ss.ss_family == AF_UNSPEC) {
        /* Linux disconnects; ustack only supports this on a socket not yet connected. */
        if (k.f->cstate == SHIM_CS_NEW || k.f->cstate == SHIM_CS_FAILED)
            return 0;
        shim_warn_once("unspec", "connect(AF_UNSPEC) to disconnect is not supported");
        return -EOPNOTSUPP;
    }
    struct shm_addr a;
    if ((rc = connect_addr(&k, &ss, len, &a)) < 0)
        return rc;
    if (!sk_valid(&k))
        return -ECONNRESET;
    switch (k.f->cstate) {
    case SHIM_CS_LISTEN:
    case SHIM_CS_CONNECTED:
        return -EISCONN;
    case SHIM_CS_CONNECTING: {
        uint32_t fl = SHIM_LOAD(&k.s->flags);
        if (fl & SHM_F_CONNECTED) {
            /* The first connect() after a non-blocking one completed returns 0. */
            k.f->cstate = SHIM_CS_CONNECTED;
            return 0;
        }
        if (fl & (SHM_F_ERROR | SHM_F_RESET)) {
            k.f->cstate = SHIM_CS_FAILED;
            int e = shim__take_error(k.s);
            return e > 0 ? -e : -ECONNABORTED;
        }
        if (k.f->nonblock)
            return -EALREADY;
        return connect_wait(&k, -EALREADY);
    }
    default:
        break;
    }
    bool kernel = a.family == SHM_AF_INET ? shim__route_kernel(a.ip)
                                          : shim__route_kernel6(&k, a.ip6, a.scope);
    if (a.family == SHM_AF_INET6 && !shim__inet6(&k) && !shim_addr_any(&a))
        shim__no_inet6_warn();
    const struct sockaddr *to = addr;
    if (!kernel && shim__own_address(&a)) {
        kernel = true;
        to = (const struct sockaddr *)loopback_of(&ss);
    }
    if (!kernel && (rc = shim__push_v6only(&k)) < 0)
        return rc;
    struct shm_cmd c;
    shim__cmd_init(&c, &k, SHM_OP_CONNECT);
    c.addr = a;
    if (!kernel && connect_async_ok(&k, &a)) {
        /* No reply to wait for (the second round trip of a connecting client): the stack
         * publishes the outcome in the socket's flags as for a handshake's (an error it
         * would have returned becomes so_error, POLLERR, as an asynchronous failure). */
        atomic_fetch_or(&k.s->app_flags, SHM_A_CONNECTING);
        if ((rc = shim__push(k.s->core, &c)) < 0)
            return rc;
        k.f->cstate = SHIM_CS_CONNECTING;
        return k.f->nonblock ? -EINPROGRESS : connect_wait(&k, -EINPROGRESS);
    }
    rc = kernel ? -EAFNOSUPPORT : shim__call(k.s->core, &c, NULL);
    if (rc == -EAFNOSUPPORT) {
        /* Routed to the kernel, or an address family the engine does not serve. */
        if (!kernel)
            shim__no_inet6_warn();
        if ((rc = shim__handover(&k)) < 0)
            return rc;
        return C.sys.connect(fd, to, len) < 0 ? -errno : 0;
    }
    if (rc == 0) {
        k.f->cstate = SHIM_CS_CONNECTED;
        return 0;
    }
    if (rc != -EINPROGRESS)
        return rc;
    k.f->cstate = SHIM_CS_CONNECTING;
    if (k.f->nonblock)
        return -EINPROGRESS;
    return connect_wait(&k, -EINPROGRESS);
}

/* ---- datagram sockets: connect, shutdown ---------------------------------------------- */

/* A socket nothing was done to on ustack yet (no bind, no send, no connect): it may still
 * become a kernel socket. */
static bool dg_fresh(const struct shim_sk *k)
{
    return !k->f->bound && k->s->la.port == 0 && k->f->cstate == SHIM_CS_NEW;
}

int shim__dg_connect(struct shim_sk *k, const struct sockaddr_storage *ss,
                     const struct sockaddr *addr, socklen_t len)
{
    if (!sk_valid(k))
        return -ECONNRESET;
    struct shm_cmd c;
    shim__cmd_init(&c, k, SHM_OP_CONNECT);
    bool unspec = ss->ss_family == AF_UNSPEC;
    if (unspec) {
        /* Linux's udp_disconnect: the association goes (and an automatic port with it). */
        c.a0 = 1;
    } else {
        struct shm_addr a;
        int rc = connect_addr(k, ss, len, &a);
        if (rc < 0)
            return rc;
        uint32_t ip = a.ip;
        bool bcast =
            a.family == SHM_AF_INET &&
            (ip == 0xffffffffu || (C.mask != 0xffffffffu && C.mask != 0xfffffffeu &&
                                   (ip & ~C.mask) == ~C.mask && ((ip ^ C.ip) & C.mask) == 0));
        bool kernel = a.family == SHM_AF_INET ? shim__route_kernel(ip)
                                              : shim__route_kernel6(k, a.ip6, a.scope) ||
                                                    a.ip6[0] == 0xff || !memcmp(a.ip6, C.ip6, 16);
        if (a.family == SHM_AF_INET6 && !shim__inet6(k) && !shim_addr_any(&a))
            shim__no_inet6_warn();
        if (!bcast && kernel) {
            /* Loopback, or off ustack's subnet (a resolver's nameserver on 127.0.0.53): a
             * fresh socket becomes the kernel's, as TCP does. Our own IPv4 address stays
             * on ustack: the engine delivers to itself (stack/udp.c send_self). */
            if (!dg_fresh(k))
                return -ENETUNREACH;
            rc = shim__handover(k);
            if (rc < 0)
                return rc;
            return C.sys.connect(k->fd, addr, len) < 0 ? -errno : 0;
        }
        if ((rc = shim__push_v6only(k)) < 0)
            return rc;
        c.addr = a;
    }
    int rc = shim__call(k->s->core, &c, NULL);
    if (rc == 0)
        k->f->cstate = unspec ? SHIM_CS_NEW : SHIM_CS_CONNECTED;
    return rc;
}

int shim__dg_shutdown(struct shim_sk *k, int how)
{
    uint32_t bits = (how != SHUT_WR ? SHM_A_RD_SHUT : 0) | (how != SHUT_RD ? SHM_A_WR_SHUT : 0);
    atomic_fetch_or(&k->s->app_flags, bits);
    struct shm_cmd c;
    shim__cmd_init(&c, k, SHM_OP_SHUTDOWN);
    c.a0 = how;
    int rc = shim__call(k->s->core, &c, NULL);
    /* Threads blocked in recv() wake and return 0 (the way to stop a UDP reader on Linux). */
    shm_futex_wake(&k->s->seq, 1 << 30);
    shim__signal(k->fd);
    return rc;
}

/* ---- shutdown, names ------------------------------------------------------------------ */

int shim_shutdown(int fd, int how)
{
    SHIM_SK(k);
    int rc = shim__sk(fd, &k);
    if (rc < 0)
        return rc;
    if (how != SHUT_RD && how != SHUT_WR && how != SHUT_RDWR)
        return -EINVAL;
    if (!sk_valid(&k))
        return -ENOTCONN;
    if (shim__dgram(&k))
        return shim__dg_shutdown(&k, how);
    uint32_t bits = (how != SHUT_WR ? SHM_A_RD_SHUT : 0) | (how != SHUT_RD ? SHM_A_WR_SHUT : 0);
    if (k.f->cstate == SHIM_CS_LISTEN) {
        /* Linux stops a listener shut for reading: accept() then fails with EINVAL, no new
         * connection reaches it (the stack stops it, its SO_REUSEPORT group goes on without
         * it, and its loopback companions stop too) until listen() again. Wake threads
         * blocked in accept() so that they see it. */
        if (how != SHUT_WR && !(atomic_fetch_or(&k.s->app_flags, SHM_A_RD_SHUT) & SHM_A_RD_SHUT)) {
            struct shm_cmd c;
            shim__cmd_init(&c, &k, SHM_OP_SHUTDOWN);
            c.a0 = SHUT_RD;
            if ((rc = shim__call(k.s->core, &c, NULL)) < 0)
                return rc;
            for (int i = 0; i < 2; i++)
                if (k.f->lacc[i] >= 0)
                    syscall(SYS_shutdown, k.f->lacc[i], SHUT_RD);
            atomic_fetch_add(&k.s->ev_in, 1); /* a state change: an edge for every waiter */
            atomic_fetch_add(&k.s->ev_out, 1);
            shm_futex_wake(&k.s->seq, 1 << 30);
            if (shim__efd_hold(&k)) {
                shim__signal(fd);
                shim__efd_drop(&k);
            }
        }
        return 0;
    }
    connect_settle(&k);
    uint32_t fl = SHIM_LOAD(&k.s->flags);
    if (!(fl & (SHM_F_CONNECTED | SHM_F_CONNECTING)) || (fl & SHM_F_RESET))
        return -ENOTCONN;
    atomic_fetch_or(&k.s->app_flags, bits);
    struct shm_cmd c;
    shim__cmd_init(&c, &k, SHM_OP_SHUTDOWN);
    c.a0 = how;
    rc = shim__call(k.s->core, &c, NULL);
    /* Threads of this process blocked on the socket re-check the flags. */
    shm_futex_wake(&k.s->seq, 1 << 30);
    /* A connect still in progress is abandoned (Linux: 0); a connection that is over (both
     * FINs through, or reset meanwhile) is not connected. */
    return rc == -ENOTCONN && !(fl & SHM_F_CONNECTED) ? 0 : rc;
}

int shim_getsockname(int fd, struct sockaddr *addr, socklen_t *len)
{
    SHIM_SK(k);
    int rc = shim__sk(fd, &k);
    if (rc < 0)
        return rc;
    connect_settle(&k);
    struct shm_addr a = k.s->la;
    if (a.port == 0 && k.f->bound)
        a = k.f->bind_a;
    /* An AF_INET6 socket on no address shows [::] (not ::ffff:0.0.0.0), unless it was bound
     * to that v4-mapped wildcard itself. */
    if (shim__domain(&k) == AF_INET6 && a.family == SHM_AF_INET && a.ip == 0 &&
        !(k.f->bound && !k.f->any6 && k.f->bind_a.family == SHM_AF_INET))
        a = (struct shm_addr){.family = SHM_AF_INET6, .port = a.port};
    return shim__put_sa(shim__domain(&k), &a, addr, len);
}

int shim_getpeername(int fd, struct sockaddr *addr, socklen_t *len)
{
    SHIM_SK(k);
    int rc = shim__sk(fd, &k);
    if (rc < 0)
        return rc;
    if (!(SHIM_LOAD(&k.s->flags) & SHM_F_CONNECTED) || !sk_valid(&k))
        return -ENOTCONN;
    return shim__put_sa(shim__domain(&k), &k.s->ra, addr, len);
}

/* ---- close, dup ----------------------------------------------------------------------- */

/* Drops one reference to the socket; the last one closes it (to every core for a
 * listener, each of which has an engine socket). */
void shim__release_ref(uint32_t slot, uint32_t gen)
{
    if (!shm_sock_valid(C.base, slot, gen))
        return;
    /* Our count first: dying between the two leaves refs one too high (the socket stays
     * open), never one too low (ustackd would drop a reference twice). */
    if (C.pidx != SHM_NONE) {
        _Atomic uint32_t *hc = &C.row[slot];
        uint32_t h = atomic_load(hc);
        while (h && !atomic_compare_exchange_weak(hc, &h, h - 1)) {
        }
    }
    shim__unref(slot, gen);
}

void shim__unref(uint32_t slot, uint32_t gen)
{
    if (!shm_sock_valid(C.base, slot, gen))
        return;
    struct shm_sock *s = shm_sock(C.base, slot);
    uint32_t old = atomic_load(&s->refs);
    do {
        if (old == 0)
            return; /* never below zero, whatever a confused holder did */
    } while (!atomic_compare_exchange_weak(&s->refs, &old, old - 1));
    if (old != 1)
        return;
    struct shim_file *f = &C.files[slot];
    bool listener =
        (f->gen == gen && f->cstate == SHIM_CS_LISTEN) || (SHIM_LOAD(&s->flags) & SHM_F_LISTENING);
    SHIM_STORE(&s->state, SHM_SOCK_CLOSING);
    struct shim_sk k = {-1, slot, gen, s, f, false};
    struct shm_cmd c;
    shim__cmd_init(&c, &k, SHM_OP_CLOSE);
    uint32_t lg = SHIM_LOAD(&s->linger_s);
    if (t_linger.armed && lg && !listener && !(SHIM_LOAD(&s->flags) & SHM_F_DGRAM) &&
        !SHIM_RLX(&C.dead)) {
        uint32_t r = reply_slot();
        if (r != SHM_NONE) {
            c.flags |= SHM_CMD_F_LINGER;
            c.a0 = lg > INT32_MAX ? INT32_MAX : (int32_t)lg;
            c.reply = r;
            t_linger.reply = r;
            t_linger.seq0 = SHIM_LOAD(&shm_reply(C.base, r)->seq);
            t_linger.pushed = true;
        }
    }
    shim__push(s->core, &c);
    for (uint32_t core = 0; listener && core < C.ncores; core++)
        if (core != s->core)
            shim__push(core, &c);
}

void shim__ref_add(uint32_t slot, uint32_t n)
{
    atomic_fetch_add(&shm_sock(C.base, slot)->refs, n);
    if (C.pidx != SHM_NONE)
        atomic_fetch_add(&C.row[slot], n);
}

/* Drops this process's fd reference now (caller holds the lock). */
static void release_now(uint32_t slot, uint32_t gen)
{
    struct shim_file *f = &C.files[slot];
    if (f->gen == gen && f->nfds > 0 && --f->nfds == 0)
        shim__lfd_close(f);
    shim__release_ref(slot, gen);
}

/* Drops this process's fd reference (caller holds the lock; the fd's entry is cleared), or,
 * while calls of this process are inside the socket, leaves it to the last of them. */
void shim__release(uint32_t slot, uint32_t gen)
{
    if (slot >= C.nsocks)
        return;
    struct shim_pin *p = &C.pins[slot];
    atomic_thread_fence(memory_order_seq_cst); /* the entry was cleared: see shim__sk */
    uint64_t u = atomic_load(&p->use);
    while ((uint32_t)u) {
        p->owed_gen = gen; /* one socket at a time: owing keeps the slot ours */
        if (atomic_compare_exchange_weak(&p->use, &u, u + SHIM_PIN_OWED))
            return;
    }
    release_now(slot, gen);
}

/* Before this process's last fd of a listener that other processes hold goes (an nginx
 * worker closing its listening sockets at a reload): if the socket's eventfd is readable,
 * the wake-up it stands for may have been this process's (EPOLLEXCLUSIVE wakes a single
 * waiter) and will not be acted on here, and the stack signals again only once a waiter
 * re-arms. The other holders would sleep on with connections queued: nginx's reload under
 * `ab` stalled the run for ab's 30 s timeout now and then. One more write wakes another
 * waiter, which re-checks (accepts, or re-arms). */
static void pass_wake_on(int fd, uint32_t slot, uint32_t gen)
{
    if (slot >= C.nsocks)
        return;
    struct shim_file *f = &C.files[slot];
    struct shm_sock *s = shm_sock(C.base, slot);
    if (f->gen != gen || f->nfds != 1 || f->cstate != SHIM_CS_LISTEN || atomic_load(&s->refs) <= 1)
        return;
    struct pollfd p = {fd, POLLIN, 0};
    struct timespec zero = {0, 0};
    if (C.sys.ppoll(&p, 1, &zero, NULL) == 1)
        shim__signal(fd);
}

/* ---- spare eventfds -------------------------------------------------------------------- */

/* A connection per request cost an application four system calls for its socket's eventfd
 * alone (eventfd2, its EPOLL_CTL_ADD, the EPOLL_CTL_DEL before close, close: a quarter of
 * nginx's time under `ab`). The last close of a socket that only this fd holds keeps the
 * eventfd instead, with its plain registrations in the kernel's epoll sets parked, and the
 * next socket takes it: its ADD to the same set finds the registration there. For the
 * application the number is closed (close, dup and fcntl on it fail with EBADF, dup2 onto
 * it replaces it); it only is not the lowest free number again (docs/preload.md). */

/* Takes spare i off the list (caller holds the lock); the caller owns its number. */
static int spare_unlist(int i)
{
    int fd = C.spare[i];
    int n = SHIM_RLX(&C.nspare) - 1;
    C.spare[i] = C.spare[n];
    C.spare_stale[i] = C.spare_stale[n];
    SHIM_STORE(&C.nspare, n);
    shim_fdtab_clear(&shim_fds, fd);
    return fd;
}

static int spare_index(int fd)
{
    for (int i = 0; i < SHIM_RLX(&C.nspare); i++)
        if (C.spare[i] == fd)
            return i;
    return -1;
}

int shim__efd_new(bool cloexec, bool *stale)
{
    *stale = false;
    if (SHIM_RLX(&C.nspare) > 0) {
        shim__lock();
        int n = SHIM_RLX(&C.nspare), pick = n - 1;
        for (int i = n - 1; i >= 0; i--) {
            if (shim_fdtab_get(&shim_fds, C.spare[i])->cloexec == cloexec) {
                pick = i;
                break;
            }
        }
        int fd = n > 0 ? C.spare[pick] : -1;
        bool st = n > 0 && C.spare_stale[pick];
        bool flip = fd >= 0 && shim_fdtab_get(&shim_fds, fd)->cloexec != cloexec;
        if (fd >= 0)
            spare_unlist(pick);
        shim__unlock();
        if (fd >= 0) {
            if (!flip || C.sys.fcntl(fd, F_SETFD, cloexec ? FD_CLOEXEC : 0) == 0) {
                *stale = st;
                return fd;
            }
            shim__efd_close(fd);
        }
    }
    int efd = eventfd(0, EFD_NONBLOCK | (cloexec ? EFD_CLOEXEC : 0));
    if (efd < 0)
        return -errno;
    if ((unsigned)efd >= shim_fds.size) {
        C.sys.close(efd);
        return -EMFILE;
    }
    return efd;
}

void shim__efd_close(int efd)
{
    shim__lock();
    shim__epoll_unpark(efd);
    shim__unlock();
    C.sys.close(efd);
}

/* May the eventfd of the socket at fd, closing, become a spare? Reserves its place in the
 * list if so (caller holds the lock): only this fd holds the socket (no dup, no other
 * process, which would share the eventfd), not a listener (companions), not 0-2 (a
 * daemon's close-and-reopen of the standard numbers), and not near the fd limit. */
static bool spare_reserve(int fd, uint32_t slot, uint32_t gen)
{
    if (fd < 3 || fd >= C.spare_lim || SHIM_RLX(&C.nspare) + C.spare_resv >= C.spare_max ||
        slot >= C.nsocks || SHIM_RLX(&C.dead))
        return false;
    struct shim_file *f = &C.files[slot];
    if (f->gen != gen || f->nfds != 1 || f->cstate == SHIM_CS_LISTEN || f->lfd >= 0 ||
        !shm_sock_valid(C.base, slot, gen) || atomic_load(&shm_sock(C.base, slot)->refs) != 1)
        return false;
    C.spare_resv++;
    return true;
}

/* Closes spare fd (its parked registrations first); caller holds the lock. */
static void spare_close(int i)
{
    int fd = spare_unlist(i);
    shim__epoll_unpark(fd);
    C.sys.close(fd);
}

/* fork's child: the spares are the parent's eventfds (and their parked registrations the
 * parent's): the child's copies go, without touching the sets. */
void shim__spares_atfork_child(void)
{
    while (SHIM_RLX(&C.nspare) > 0)
        C.sys.close(spare_unlist(0));
    C.spare_resv = 0;
    shim__epoll_unpark_child();
}

void shim_spares_close(void)
{
    if (!SHIM_LOAD(&C.attached))
        return;
    shim__lock();
    while (SHIM_RLX(&C.nspare) > 0)
        spare_close(0);
    shim__unlock();
}

int shim_close(int fd)
{
    struct shim_fd *e = shim_fdtab_get(&shim_fds, fd);
    if (!e)
        return C.sys.close(fd) < 0 ? -errno : 0;
    switch (SHIM_RLX(&e->kind)) {
    case SHIM_FD_PRIV:
        /* The library's own fd (region, pipe, wake eventfds, helpers): closing it would
         * cut this process (or its exec'd children) off the stack. Loops that close every
         * fd above 2 are common; they get success and the fd stays. */
        return 0;
    case SHIM_FD_SPARE: {
        shim__lock(); /* closed for the application already; it goes for good now */
        int i = spare_index(fd);
        if (i >= 0)
            spare_close(i);
        shim__unlock();
        return -EBADF;
    }
    case SHIM_FD_EPOLL: {
        shim__lock();
        struct shim_epoll *ep = e->obj;
        shim_fdtab_clear(&shim_fds, fd);
        int rc = C.sys.close(fd) < 0 ? -errno : 0;
        shim__epoll_unref(ep);
        shim__unlock();
        return rc;
    }
    default: {
        uint32_t slot = e->slot, gen = e->gen;
        bool cloexec = e->cloexec;
        shim__lock();
        bool park = spare_reserve(fd, slot, gen);
        shim__unlock();
        bool lt_parked = shim__epoll_forget(fd, slot, gen, park);
        shim__lock();
        if (slot < C.nsocks && !shim__attach_cancel(slot, gen, 0)) {
            shim__unlock();
            shim__attach_wait(slot);
            shim__lock();
        }
        shim_fdtab_clear(&shim_fds, fd);
        shim__efd_quiesce(slot); /* a call reading or writing the eventfd by number */
        pass_wake_on(fd, slot, gen);
        int rc = 0;
        if (park) {
            C.spare_resv--;
            /* A dup made since the check (another thread) shares the eventfd: no spare. */
            struct shim_file *f = &C.files[slot];
            if (f->gen != gen || f->nfds != 1) {
                park = false;
                shim__epoll_unpark(fd);
            }
        }
        if (park) {
            /* The stack fetched the number (or never will: cancelled); the next socket's
             * SOCKET or ATTACH makes it fetch the same eventfd again. Nothing waits on this
             * socket any more (only this fd held it): the stack is told so. What the eventfd
             * still counts is emptied only if a level-triggered registration stays parked
             * with it (it would report the stale signal at every wait); an edge-triggered
             * one reports only new signals, and the next socket's own first registration
             * empties it (efd_stale), so a server whose sockets are all edge-triggered
             * (nginx) spends no system call on it. A publish already under way can still
             * write one: the next harvest finds nothing ready and drops it. */
            struct shm_sock *s = shm_sock(C.base, slot);
            atomic_store(&s->armed, 0);
            atomic_store(&s->armed_et, 0);
            uint64_t cnt;
            if (lt_parked && C.sys.read(fd, &cnt, sizeof(cnt)) < 0) {
                /* empty already (EAGAIN) */
            }
            C.spare[SHIM_RLX(&C.nspare)] = fd;
            C.spare_stale[SHIM_RLX(&C.nspare)] = !lt_parked;
            shim_fdtab_set(&shim_fds, fd, SHIM_FD_SPARE, 0, 0, cloexec, NULL);
            SHIM_STORE(&C.nspare, SHIM_RLX(&C.nspare) + 1);
        } else {
            rc = C.sys.close(fd) < 0 ? -errno : 0;
        }
        t_linger.armed = true;
        shim__release(slot, gen);
        t_linger.armed = false;
        shim__unlock();
        if (t_linger.pushed) {
            /* Linux's close() waits here, after the number is gone (sk_stream_wait_close),
             * until a signal: then close() returns 0 at once and the stack finishes alone. */
            t_linger.pushed = false;
            struct shm_reply *rep = shm_reply(C.base, t_linger.reply);
            bool room = t_norphan < ORPHANS_MAX && t_linger.reply == t_reply;
            if (await_reply_(rep, t_linger.seq0, room) == -EINTR) {
                t_orphan[t_norphan].slot = t_linger.reply;
                t_orphan[t_norphan].seq0 = t_linger.seq0;
                t_orphan[t_norphan].pid = t_reply_pid;
                t_norphan++;
                t_reply = SHM_NONE; /* this thread's next command takes a new slot */
            }
        }
        return rc;
    }
    }
}

/* newfd now refers to what oldfd does (the kernel dup'd it); caller holds the lock. */
static int took_dup(int oldfd, int newfd, bool cloexec)
{
    struct shim_fd *e = shim_fdtab_get(&shim_fds, oldfd);
    if (!e)
        return newfd;
    switch (SHIM_RLX(&e->kind)) {
    case SHIM_FD_SOCK:
        if (shim_fdtab_dup(&shim_fds, oldfd, newfd, cloexec) < 0) {
            C.sys.close(newfd);
            return -EMFILE;
        }
        if (shm_sock_valid(C.base, e->slot, e->gen))
            shim__ref_add(e->slot, 1);
        if (C.files[e->slot].gen == e->gen)
            C.files[e->slot].nfds++;
        return newfd;
    case SHIM_FD_EPOLL:
        if (shim_fdtab_dup(&shim_fds, oldfd, newfd, cloexec) < 0) {
            C.sys.close(newfd);
            return -EMFILE;
        }
        shim__epoll_ref(e->obj);
        return newfd;
    default:
        return newfd; /* a copy of a private fd is the application's own business */
    }
}

int shim_dup(int fd)
{
    if (shim_fd_kind(fd) == SHIM_FD_SPARE)
        return -EBADF;
    shim__lock();
    int n = C.sys.dup(fd);
    int rc = n < 0 ? -errno : took_dup(fd, n, false);
    shim__unlock();
    return rc;
}

/* What a dup2 onto fd is about to replace; forgets it (caller holds the lock). */
static void replaced(int fd, enum shim_fd_kind kind, uint32_t slot, uint32_t gen, void *obj)
{
    shim_fdtab_clear(&shim_fds, fd);
    if (kind == SHIM_FD_SOCK)
        shim__release(slot, gen);
    else if (kind == SHIM_FD_EPOLL)
        shim__epoll_unref(obj);
}

/* The application wants fd's number: move the library's fd that has it elsewhere. */
static int move_priv(int fd)
{
    struct shim_fd *e = shim_fdtab_get(&shim_fds, fd);
    int *where = e->obj;
    int cl = C.sys.fcntl(fd, F_GETFD);
    int n = C.sys.fcntl(fd, (cl > 0 && (cl & FD_CLOEXEC)) ? F_DUPFD_CLOEXEC : F_DUPFD, 1000);
    if (n < 0)
        return -errno;
    shim_fdtab_clear(&shim_fds, fd);
    *where = n;
    shim__priv(where);
    if (where >= C.wake_fd && where < C.wake_fd + SHM_MAX_CORES)
        shim_warn_once("wakemove",
                       "a wake eventfd was moved from %d to %d; programs this "
                       "process execs may not reach ustack",
                       fd, n);
    return 0;
}

int shim_dup3(int oldfd, int newfd, int flags, bool is_dup2)
{
    if (is_dup2 && oldfd == newfd)
        return C.sys.fcntl(oldfd, F_GETFD) < 0 ? -EBADF : newfd;
    if (oldfd == newfd)
        return -EINVAL;
    if (flags & ~O_CLOEXEC)
        return -EINVAL;
    if (shim_fd_kind(oldfd) == SHIM_FD_SPARE)
        return -EBADF;
    shim__lock();
    struct shim_fd *e = shim_fdtab_get(&shim_fds, newfd);
    enum shim_fd_kind kind = e ? (enum shim_fd_kind)SHIM_RLX(&e->kind) : SHIM_FD_KERNEL;
    int rc;
    bool spare = false;
    if (kind == SHIM_FD_SPARE && C.sys.fcntl(oldfd, F_GETFD) >= 0) {
        /* The application's number: the spare leaves (the kernel's dup3 closes it). */
        int i = spare_index(newfd);
        if (i >= 0)
            spare_unlist(i);
        shim__epoll_unpark(newfd);
        kind = SHIM_FD_KERNEL;
        spare = true;
    }
    if (kind == SHIM_FD_PRIV && C.sys.fcntl(oldfd, F_GETFD) >= 0) {
        if ((rc = move_priv(newfd)) < 0)
            goto out;
        kind = SHIM_FD_KERNEL;
    }
    uint32_t slot = e ? e->slot : 0, gen = e ? e->gen : 0;
    void *obj = e ? e->obj : NULL;
    bool cleared = false, cl_old = e && e->cloexec;
    if (kind == SHIM_FD_SOCK && C.sys.fcntl(oldfd, F_GETFD) >= 0) {
        shim__unlock();
        shim__attach_wait(slot);
        shim__epoll_forget(newfd, slot, gen, false);
        shim__lock();
        /* Calls that look newfd up from here on find it gone; one using its eventfd by
         * number finishes before the number changes hands. */
        shim_fdtab_clear(&shim_fds, newfd);
        shim__efd_quiesce(slot);
        cleared = true;
    }
    int n = C.sys.dup3(oldfd, newfd, flags);
    if (n < 0) {
        rc = -errno;
        if (spare)
            C.sys.close(newfd);
        if (cleared)
            shim_fdtab_set(&shim_fds, newfd, SHIM_FD_SOCK, slot, gen, cl_old, NULL);
        goto out;
    }
    if (kind == SHIM_FD_SOCK || kind == SHIM_FD_EPOLL)
        replaced(newfd, kind, slot, gen, obj);
    rc = took_dup(oldfd, newfd, flags & O_CLOEXEC);
out:
    shim__unlock();
    return rc;
}

int shim_close_range(unsigned first, unsigned last, int flags)
{
    if (first > last)
        return -EINVAL;
    int lim = shim_fdtab_limit(&shim_fds);
    unsigned from = first;
    /* Ours below the limit one by one; the kernel's in ranges between private fds. */
    for (unsigned fd = first; fd <= last && fd < (unsigned)lim; fd++) {
        enum shim_fd_kind kind = shim_fd_kind((int)fd);
        if (kind == SHIM_FD_KERNEL)
            continue;
        if (fd > from && syscall(SYS_close_range, from, fd - 1, flags) < 0)
            return -errno;
        from = fd + 1;
        if (kind == SHIM_FD_PRIV)
            continue;
        if (flags & CLOSE_RANGE_CLOEXEC)
            shim_fcntl((int)fd, F_SETFD, (void *)(intptr_t)FD_CLOEXEC);
        else
            shim_close((int)fd);
    }
    if (from <= last && syscall(SYS_close_range, from, last, flags) < 0)
        return -errno;
    return 0;
}

/*
 * client_poll.c - readiness over mixed sets of kernel and ustack fds: poll, select and
 * epoll (docs/shm.md "Waking" and "epoll"; docs/preload.md has the reasoning).
 *
 * A ustack socket's fd is an eventfd the stack writes to when the socket becomes ready
 * for bits a waiter armed. Whoever waits keeps this invariant, per socket and across all
 * waiters of all processes: the eventfd is readable, or the wanted bits are armed and the
 * socket was found not ready after arming. So a waiter that finds a socket not ready
 * drains the eventfd, arms, and re-checks; if the re-check finds it ready after all, it
 * makes the eventfd readable again itself (other waiters may have been relying on it).
 * A socket that is ready keeps a readable eventfd, so the kernel sees it as readable.
 *
 * poll/select check ustack sockets in user space and sleep in the kernel on their
 * eventfds together with the kernel fds. An epoll instance stays the application's kernel
 * epoll, and its ustack members' eventfds are registered in it, their data a per-instance
 * marker (top bit set) and the fd, the application's data and mask kept here:
 * level-triggered members as level-triggered EPOLLIN (a readable eventfd is the "still
 * ready" hot list the next epoll_wait re-checks), edge-triggered as EPOLLET, one-shot as
 * EPOLLONESHOT, exclusive as EPOLLEXCLUSIVE. epoll_wait rewrites the kernel's events of
 * members into the members' reports, in place, in the one system call. Polling or nesting
 * the application's epoll fd works through the kernel unchanged. An edge-triggered member
 * reports events, not levels: the stack counts arrivals and new write space per socket and
 * signals edge arms (armed_et) only for those; the member reports when a counter it cares
 * about moved since its last report (docs/shm.md "Events"). A second, inner kernel epoll,
 * registered in the application's under a private cookie, holds only ustackd's pidfd. A
 * registration whose fd is closed while a dup lives moves to a private dup of the eventfd,
 * as Linux keys it by the open file.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "client_int.h"
#include "intr.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#define C shim__c

#define EP_COMPANION 0x80000000u /* kernel data flag: the listener's loopback companion */
#define EP_MODE      (EPOLLET | EPOLLONESHOT | EPOLLEXCLUSIVE | EPOLLWAKEUP)
/* The inner epoll's datum for ustackd's pidfd. */
#define EP_STACKD 0x7fffffffull

struct shim_epm {
    uint32_t used;
    uint32_t events; /* the application's mask, mode bits included */
    uint32_t slot, gen;
    uint64_t data;
    int lfd; /* the listener companion registered with it, or -1 */
    uint32_t disabled, round;
    int out;
    uint32_t in_seen, out_seen; /* EPOLLET: the socket's event counters last reported */
    uint8_t pending;            /* EPOLLET: ready at ADD/MOD, not reported yet */
    uint8_t dead_seen;          /* EPOLLET: the stack's death was reported */
    /* Not used: the kernel set still has the registration of the eventfd at this number
     * (events: its mask then): a spare's, or one a new socket took from the spares and has
     * not added here (client.c "Spare eventfds"): PARK_SPARE; or a socket's that the
     * application removed (EPOLL_CTL_DEL), whose eventfd may still count a signal:
     * PARK_REMOVED. */
    uint8_t parked;
    int *held; /* a registration whose fd was closed while a dup lives: our private dup */
};

struct shim_epoll {
    _Atomic int refs; /* application fds referring to it */
    int ifd;          /* the inner kernel epoll (private fd): ustackd's pidfd only */
    int efd;          /* an application fd of it, last seen (check before use) */
    uint64_t cookie;
    uint32_t xhi; /* high half of the data of members' kernel events */
    struct shim_epm *m;
    uint32_t cap, round, nheld;
    /* A fork since it was made: the kernel set (and its members' registrations) may be
     * another process's too, which has its own copy of this table. */
    uint8_t forked;
    pthread_mutex_t lock;
    struct shim_epoll *next;
};

/* ---- the eventfd protocol ------------------------------------------------------------- */

void shim__signal(int fd)
{
    uint64_t one = 1;
    if (C.sys.write(fd, &one, sizeof(one)) < 0)
        (void)0; /* EAGAIN: already readable */
}

static void drain(int fd)
{
    uint64_t v;
    if (C.sys.read(fd, &v, sizeof(v)) < 0)
        (void)0;
}

/* Makes the eventfd readable for waiters of bits (level), as the stack's signal does. */
static void signal_for(int fd, uint32_t slot, uint32_t bits)
{
    if (slot < C.nsocks)
        atomic_fetch_or(&shm_sock(C.base, slot)->sigb, bits);
    shim__signal(fd);
}

static uint32_t arm_bits(uint32_t events)
{
    uint32_t b = POLLERR | POLLHUP;
    if (events & (POLLIN | POLLRDNORM))
        b |= POLLIN;
    if (events & (POLLOUT | POLLWRNORM))
        b |= POLLOUT;
    if (events & POLLRDHUP)
        b |= POLLRDHUP;
    return b;
}

/* The socket's readiness for a waiter interested in events (POLLERR/POLLHUP always). */
static uint32_t ready_of(uint32_t slot, uint32_t gen, uint32_t events)
{
    if (!shm_sock_valid(C.base, slot, gen))
        return (POLLIN | POLLOUT | POLLERR | POLLHUP) & (events | POLLERR | POLLHUP);
    return shim_sock_events(C.base, slot) & (events | POLLERR | POLLHUP);
}

/* Not ready: drain, arm, re-check. Returns the readiness found by the re-check. */
static uint32_t arm_and_check(int fd, uint32_t slot, uint32_t gen, uint32_t events, bool do_drain)
{
    if (do_drain)
        drain(fd);
    if (shm_sock_valid(C.base, slot, gen))
        atomic_fetch_or(&shm_sock(C.base, slot)->armed, arm_bits(events));
    uint32_t ev = ready_of(slot, gen, events);
    if (ev)
        signal_for(fd, slot, arm_bits(events));
    return ev;
}

/* The application consumed from socket slot (fd): if its eventfd was signalled for level
 * waiters and nothing they, or the level-triggered epoll members, wait for is ready any
 * more, empty it now rather than at the next epoll_wait, so that an epoll fd holding the
 * socket stops being readable to poll() or an outer epoll (Linux re-checks its ready list
 * there). Costs nothing unless the socket has level-triggered epoll members and a signal. */
void shim__settle(int fd, uint32_t slot)
{
    struct shm_sock *s = shm_sock(C.base, slot);
    uint32_t b = SHIM_RLX(&s->sigb);
    if (!b)
        return;
    uint32_t lt = SHIM_RLX(&s->lt_bits);
    if (!lt || (shim_sock_events(C.base, slot) & (b | lt)))
        return;
    drain(fd);
    /* Bits signalled while we looked are taken with the rest: armed, then re-checked. */
    b = atomic_exchange(&s->sigb, 0) | lt;
    atomic_fetch_or(&s->armed, b);
    if (shim_sock_events(C.base, slot) & b)
        signal_for(fd, slot, b);
}

/* ---- poll / select -------------------------------------------------------------------- */

bool shim_poll_has_ours(const struct pollfd *fds, nfds_t n)
{
    if (!shim_fds.size || !fds)
        return false;
    for (nfds_t i = 0; i < n; i++)
        if (shim_fd_sock_number(fds[i].fd))
            return true;
    return false;
}

static struct shim_fd *sock_ent(int fd)
{
    struct shim_fd *e = shim_fdtab_get(&shim_fds, fd);
    return e && SHIM_RLX(&e->kind) == SHIM_FD_SOCK ? e : NULL;
}

/* What a poll entry is in one pass (poll_impl): */
enum {
    PE_KERNEL,      /* a kernel fd, or a number no longer ours: the kernel polls it as asked */
    PE_PINNED,      /* the ustack socket pinned at the start, still behind the number */
    PE_OTHER,       /* a ustack socket that took the number during the call: readiness only */
    PE_NVAL,        /* a spare eventfd: a closed number for the application (POLLNVAL) */
    PE_COMP = 0x10, /* flag: its listener's companion follows in the kernel's set */
};

#define SEL_LATE 0x4000 /* select's revents: the fd was closed during the call */

/* k (pinned by the call) is still what its number refers to. */
static bool current(const struct shim_sk *k)
{
    struct shim_fd *e = shim_fdtab_get(&shim_fds, k->fd);
    return k->pinned && e && atomic_load(&e->kind) == SHIM_FD_SOCK &&
           atomic_load(&e->sg) == shim_fd_sg(k->slot, k->gen);
}

static int classify(const struct shim_sk *k, int fd, uint64_t *sg)
{
    if (current(k))
        return PE_PINNED;
    struct shim_fd *e = sock_ent(fd);
    if (!e)
        return shim_fd_kind(fd) == SHIM_FD_SPARE ? PE_NVAL : PE_KERNEL;
    *sg = atomic_load(&e->sg);
    return PE_OTHER;
}

static uint32_t ready_sg(uint64_t sg, uint32_t events)
{
    return ready_of((uint32_t)sg, (uint32_t)(sg >> 32), events);
}

static int companion(const struct shim_sk *k, short events)
{
    if (!(events & (POLLIN | POLLRDNORM)))
        return -1;
    struct shim_file *f = &C.files[k->slot];
    return f->gen == k->gen ? f->lfd : -1;
}

/* Not ready: drain the eventfd, arm, re-check, under an eventfd hold (the number is read and
 * written; a close in another thread must not give it to a file of the application's
 * meanwhile). */
static uint32_t arm_pinned(const struct shim_sk *k, short events)
{
    if (!shim__efd_hold(k))
        return 0;
    uint32_t ev = arm_and_check(k->fd, k->slot, k->gen, (uint16_t)events, true);
    shim__efd_drop(k);
    return ev;
}

/* poll over kernel and ustack fds. Like Linux, which holds the file of every fd it sleeps
 * on until it returns, the ustack sockets are pinned for the whole call (docs/preload.md
 * "Calls racing close"): a socket another thread closes meanwhile stays open (no FIN) until
 * the call returns, and its number, looked up again on every pass, reads as gone
 * (POLLNVAL; for select, POLLNVAL | SEL_LATE, which select reports in every set the fd is in,
 * as Linux 6.x's POLLIN_SET, POLLOUT_SET and POLLEX_SET include EPOLLNVAL). */
static int poll_impl(struct pollfd *fds, nfds_t n, int64_t timeout_ns, const sigset_t *mask,
                     bool sel)
{
    if (n && !fds)
        return -EFAULT;
    int64_t deadline = timeout_ns < 0 ? SHIM_FOREVER : shim__now() + timeout_ns;
    uint32_t sig0 = shim_intr_seq();
    struct shim_sk klocal[64], *ks = klocal;
    unsigned char clocal[64], *cls = clocal;
    struct pollfd local[2 * 64 + 1], *kp = local; /* an entry, its companion; the pidfd */
    if (n > 64) {
        ks = malloc(n * sizeof(*ks));
        cls = malloc(n);
        kp = malloc((2 * n + 1) * sizeof(*kp));
        if (!ks || !cls || !kp) {
            free(ks);
            free(cls);
            free(kp);
            return -ENOMEM;
        }
    }
    nfds_t ours = 0;
    for (nfds_t i = 0; i < n; i++) {
        ks[i] = (struct shim_sk){.fd = -1};
        if (shim_fd_kind(fds[i].fd) == SHIM_FD_SOCK && shim__sk(fds[i].fd, &ks[i]) == 0)
            ours++;
    }
    int rc;
    for (;;) {
        int ready = 0;
        for (nfds_t i = 0; i < n; i++) {
            uint64_t sg = 0;
            cls[i] = (unsigned char)classify(&ks[i], fds[i].fd, &sg);
            if (cls[i] == PE_PINNED)
                fds[i].revents = (short)ready_of(ks[i].slot, ks[i].gen, (uint16_t)fds[i].events);
            else if (cls[i] == PE_OTHER)
                fds[i].revents = (short)ready_sg(sg, (uint16_t)fds[i].events);
            else if (cls[i] == PE_NVAL)
                fds[i].revents = POLLNVAL | (sel && ks[i].pinned ? SEL_LATE : 0);
            else
                continue;
            ready += fds[i].revents != 0;
        }
        if (!ready && timeout_ns != 0) {
            /* Arm every ustack entry, then re-check (see the top of the file). */
            for (nfds_t i = 0; i < n; i++)
                if (cls[i] == PE_PINNED && arm_pinned(&ks[i], fds[i].events))
                    ready++;
        }
        nfds_t k = n;
        for (nfds_t i = 0; i < n; i++) {
            kp[i] = fds[i];
            kp[i].revents = 0;
            if (cls[i] == PE_NVAL)
                kp[i].fd = -1; /* the kernel skips it */
            if (cls[i] == PE_KERNEL || cls[i] == PE_NVAL)
                continue;
            kp[i].events = POLLIN;
            int l = cls[i] == PE_PINNED ? companion(&ks[i], fds[i].events) : -1;
            if (l >= 0) {
                kp[k++] = (struct pollfd){l, POLLIN, 0};
                cls[i] |= PE_COMP;
            }
        }
        /* ustackd's death ends the sleep (its pidfd, last, when there are ustack entries). */
        int pfd = -1;
        if (ours && !SHIM_RLX(&C.dead) && (pfd = shim__stack_pidfd()) > 0)
            kp[k++] = (struct pollfd){pfd, POLLIN, 0};
        struct timespec ts, *tp = NULL;
        int64_t left = 0;
        if (ready || timeout_ns == 0) {
            ts = (struct timespec){0, 0};
            tp = &ts;
        } else if (deadline != SHIM_FOREVER) {
            left = deadline - shim__now();
            if (left < 0)
                left = 0;
            ts.tv_sec = left / SHIM_NS_PER_S;
            ts.tv_nsec = left % SHIM_NS_PER_S;
            tp = &ts;
        }
        if (!ready && timeout_ns != 0 && shim_intr_seq() != sig0) {
            /* A handler ran during the user-space part of the call (intr.h). */
            rc = -EINTR;
            break;
        }
        int r = C.sys.ppoll(kp, k, tp, mask);
        if (r < 0 && errno == EINVAL && pfd > 0 && k <= n + 1) {
            /* More fds than RLIMIT_NOFILE (OpenSSH's sandboxed child allows one, and polls
             * one): without the pidfd, as the application asked. ustackd's death then shows
             * at the next call that waits for it. */
            pfd = -1;
            r = C.sys.ppoll(kp, --k, tp, mask);
        }
        if (r < 0) {
            rc = -errno;
            break;
        }
        if (pfd > 0 && (kp[k - 1].revents & POLLIN))
            shim__stack_gone();
        int total = 0;
        k = n;
        for (nfds_t i = 0; i < n; i++) {
            uint32_t ev = 0;
            bool comp = (cls[i] & PE_COMP) && (kp[k++].revents & POLLIN);
            cls[i] &= (unsigned char)~PE_COMP;
            if (cls[i] == PE_KERNEL) {
                ev = (uint16_t)kp[i].revents;
                if (sel && ks[i].pinned && (ev & POLLNVAL))
                    ev |= SEL_LATE; /* ours at the start, closed since */
            } else if (cls[i] == PE_OTHER || !current(&ks[i])) {
                /* Closed (or replaced) while we slept: as the next pass would see it. */
                uint64_t now = 0;
                int c = classify(&ks[i], fds[i].fd, &now);
                if (c == PE_OTHER)
                    ev = ready_sg(now, (uint16_t)fds[i].events);
                else if (c == PE_NVAL ||
                         (c == PE_KERNEL && C.sys.fcntl(fds[i].fd, F_GETFD) < 0 && errno == EBADF))
                    ev = POLLNVAL | (sel && cls[i] != PE_NVAL ? SEL_LATE : 0);
            } else {
                ev = ready_of(ks[i].slot, ks[i].gen, (uint16_t)fds[i].events);
                if (comp)
                    ev |= (POLLIN | POLLRDNORM) & (uint16_t)fds[i].events;
            }
            fds[i].revents = (short)ev;
            total += ev != 0;
        }
        if (total || ready || timeout_ns == 0 || (r == 0 && tp) ||
            (deadline != SHIM_FOREVER && shim__now() >= deadline)) {
            rc = total;
            break;
        }
        /* Only eventfds of sockets that were not ready after all: sleep again. */
    }
    for (nfds_t i = 0; i < n; i++)
        shim__put(&ks[i]);
    if (kp != local)
        free(kp);
    if (ks != klocal)
        free(ks);
    if (cls != clocal)
        free(cls);
    return rc;
}

int shim_poll(struct pollfd *fds, nfds_t n, int64_t timeout_ns, const sigset_t *mask)
{
    return poll_impl(fds, n, timeout_ns, mask, false);
}

#define FDS_BITS        (8 * (int)sizeof(unsigned long))
#define FDS_ISSET(s, d) (((const unsigned long *)(s))[(d) / FDS_BITS] >> ((d) % FDS_BITS) & 1)
#define FDS_SET(s, d)   (((unsigned long *)(s))[(d) / FDS_BITS] |= 1ul << ((d) % FDS_BITS))

bool shim_select_has_ours(int nfds, const fd_set *r, const fd_set *w, const fd_set *e)
{
    if (!shim_fds.size)
        return false;
    int lim = shim_fdtab_limit(&shim_fds);
    for (int fd = 0; fd < nfds && fd < lim; fd++) {
        if ((r && FDS_ISSET(r, fd)) || (w && FDS_ISSET(w, fd)) || (e && FDS_ISSET(e, fd)))
            if (shim_fd_sock_number(fd))
                return true;
    }
    return false;
}

int shim_select(int nfds, fd_set *r, fd_set *w, fd_set *e, int64_t timeout_ns, const sigset_t *mask,
                struct timeval *tv)
{
    if (nfds < 0)
        return -EINVAL;
    int n = 0;
    for (int fd = 0; fd < nfds; fd++)
        n += (r && FDS_ISSET(r, fd)) || (w && FDS_ISSET(w, fd)) || (e && FDS_ISSET(e, fd));
    struct pollfd local[64], *p = local;
    if (n > 64 && !(p = malloc((size_t)n * sizeof(*p))))
        return -ENOMEM;
    int k = 0;
    for (int fd = 0; fd < nfds; fd++) {
        short ev =
            (short)((r && FDS_ISSET(r, fd) ? POLLIN : 0) | (w && FDS_ISSET(w, fd) ? POLLOUT : 0) |
                    (e && FDS_ISSET(e, fd) ? POLLPRI : 0));
        if (ev)
            p[k++] = (struct pollfd){fd, ev, 0};
    }
    int64_t t0 = shim__now();
    int rc = poll_impl(p, (nfds_t)k, timeout_ns, mask, true);
    if (rc >= 0) {
        for (int i = 0; i < k; i++)
            if ((p[i].revents & (POLLNVAL | SEL_LATE)) == POLLNVAL)
                rc = -EBADF; /* bad from the start (Linux's max_select_fd) */
    }
    if (rc >= 0) {
        size_t words = ((size_t)nfds + FDS_BITS - 1) / FDS_BITS;
        if (r)
            memset(r, 0, words * sizeof(unsigned long));
        if (w)
            memset(w, 0, words * sizeof(unsigned long));
        if (e)
            memset(e, 0, words * sizeof(unsigned long));
        rc = 0;
        for (int i = 0; i < k; i++) {
            short re = p[i].revents;
            if (re & SEL_LATE)
                re = POLLIN | POLLOUT | POLLPRI; /* in every set it is in, as Linux */
            /* Linux's POLLIN_SET, POLLOUT_SET and POLLEX_SET. */
            if (r && (p[i].events & POLLIN) && (re & (POLLIN | POLLRDNORM | POLLHUP | POLLERR))) {
                FDS_SET(r, p[i].fd);
                rc++;
            }
            if (w && (p[i].events & POLLOUT) && (re & (POLLOUT | POLLWRNORM | POLLERR))) {
                FDS_SET(w, p[i].fd);
                rc++;
            }
            if (e && (p[i].events & POLLPRI) && (re & POLLPRI)) {
                FDS_SET(e, p[i].fd);
                rc++;
            }
        }
    }
    if (tv && timeout_ns >= 0) {
        int64_t left = timeout_ns - (shim__now() - t0);
        if (left < 0)
            left = 0;
        tv->tv_sec = (time_t)(left / SHIM_NS_PER_S);
        tv->tv_usec = (suseconds_t)(left % SHIM_NS_PER_S / 1000);
    }
    if (p != local)
        free(p);
    return rc;
}

/* ---- epoll ---------------------------------------------------------------------------- */

static uint32_t kernel_events(uint32_t events)
{
    return EPOLLIN | (events & EP_MODE);
}

/* Level-triggered, and neither one-shot nor exclusive. */
static bool plain_lt(uint32_t events)
{
    return !(events & (EPOLLET | EPOLLONESHOT | EPOLLEXCLUSIVE));
}

static bool is_et(const struct shim_epm *m)
{
    return (m->events & (EPOLLET | EPOLLONESHOT)) == EPOLLET;
}

/* The data of a member's kernel event in the application's epoll: xhi and fd, xhi having
 * its top bit set so that no user-space pointer an application stores there looks like it. */
static uint64_t kdata(struct shim_epoll *ep, int fd, bool comp)
{
    return (uint64_t)ep->xhi << 32 | (uint32_t)fd | (comp ? EP_COMPANION : 0);
}

static struct shim_epm *member(struct shim_epoll *ep, int fd, bool grow)
{
    if ((unsigned)fd < ep->cap)
        return &ep->m[fd];
    if (!grow)
        return NULL;
    uint32_t cap = ep->cap ? ep->cap : 64;
    while (cap <= (unsigned)fd)
        cap *= 2;
    struct shim_epm *m = realloc(ep->m, cap * sizeof(*m));
    if (!m)
        return NULL;
    memset(m + ep->cap, 0, (cap - ep->cap) * sizeof(*m));
    ep->m = m;
    ep->cap = cap;
    return &ep->m[fd];
}

void shim__epoll_ref(struct shim_epoll *ep)
{
    atomic_fetch_add(&ep->refs, 1);
}

static void unhold(struct shim_epm *m)
{
    if (!m->held)
        return;
    shim__unpriv(*m->held);
    C.sys.close(*m->held);
    free(m->held);
    m->held = NULL;
}

/* Caller holds the client lock (the list). */
void shim__epoll_unref(struct shim_epoll *ep)
{
    if (atomic_fetch_sub(&ep->refs, 1) != 1)
        return;
    for (struct shim_epoll **pp = &C.epolls; *pp; pp = &(*pp)->next) {
        if (*pp == ep) {
            *pp = ep->next;
            break;
        }
    }
    for (uint32_t i = 0; ep->nheld && i < ep->cap; i++)
        unhold(&ep->m[i]);
    shim__unpriv(ep->ifd);
    C.sys.close(ep->ifd);
    pthread_mutex_destroy(&ep->lock);
    free(ep->m);
    free(ep);
}

/* The instance behind an application epoll fd, made on its first ustack member. */
static int instance(int epfd, struct shim_epoll **out)
{
    shim__lock();
    struct shim_fd *e = shim_fdtab_get(&shim_fds, epfd);
    if (e && SHIM_RLX(&e->kind) == SHIM_FD_EPOLL) {
        *out = e->obj;
        shim__unlock();
        return 0;
    }
    int rc = -EINVAL;
    if (e) /* a socket or a private fd is no epoll */
        goto out;
    struct shim_epoll *ep = calloc(1, sizeof(*ep));
    if (!ep) {
        rc = -ENOMEM;
        goto out;
    }
    ep->ifd = C.sys.epoll_create1(EPOLL_CLOEXEC);
    if (ep->ifd < 0) {
        rc = -errno;
        free(ep);
        goto out;
    }
    ep->ifd = shim__high(ep->ifd, true);
    /* The cookie marks the inner epoll's events in the application's: random, so that no
     * application datum is mistaken for it in practice. */
    if (getrandom(&ep->cookie, sizeof(ep->cookie), GRND_NONBLOCK) != sizeof(ep->cookie))
        ep->cookie = 0x75736b6570636b31ull ^ (uint64_t)(uintptr_t)ep;
    ep->xhi = ~(uint32_t)(ep->cookie >> 32) | 0x80000000u; /* never the cookie's own half */
    ep->efd = epfd;
    struct epoll_event kev = {EPOLLIN, {.u64 = ep->cookie}};
    if (C.sys.epoll_ctl(epfd, EPOLL_CTL_ADD, ep->ifd, &kev) < 0) {
        rc = -errno; /* EBADF, or EINVAL: epfd is not an epoll */
        C.sys.close(ep->ifd);
        free(ep);
        goto out;
    }
    shim__priv(&ep->ifd);
    /* ustackd's death wakes the set (nothing else would signal its members' eventfds). */
    int pfd = shim__stack_pidfd_locked();
    if (pfd > 0) {
        struct epoll_event pe = {EPOLLIN | EPOLLONESHOT, {.u64 = EP_STACKD}};
        C.sys.epoll_ctl(ep->ifd, EPOLL_CTL_ADD, pfd, &pe);
    }
    pthread_mutex_init(&ep->lock, NULL);
    ep->refs = 1;
    ep->next = C.epolls;
    C.epolls = ep;
    int cl = C.sys.fcntl(epfd, F_GETFD);
    shim_fdtab_set(&shim_fds, epfd, SHIM_FD_EPOLL, 0, 0, cl > 0 && (cl & FD_CLOEXEC), ep);
    *out = ep;
    rc = 0;
out:
    shim__unlock();
    return rc;
}

static bool is_fd_of(struct shim_epoll *ep, int fd)
{
    struct shim_fd *e = fd >= 0 ? shim_fdtab_get(&shim_fds, fd) : NULL;
    return e && SHIM_RLX(&e->kind) == SHIM_FD_EPOLL && e->obj == ep;
}

/* An application fd number of ep (any of its dups; the last one seen unless it went), or
 * -1. Caller holds ep->lock. */
static int epoll_fd_of(struct shim_epoll *ep)
{
    if (is_fd_of(ep, ep->efd))
        return ep->efd;
    int lim = shim_fdtab_limit(&shim_fds);
    for (int fd = 0; fd < lim; fd++) {
        if (is_fd_of(ep, fd))
            return ep->efd = fd;
    }
    return -1;
}

/* The kernel epoll the members are registered in: the application's (epfd, if known).
 * Caller holds ep->lock. */
static int kep(struct shim_epoll *ep, int epfd)
{
    if (epfd >= 0)
        return ep->efd = epfd;
    return epoll_fd_of(ep);
}

static uint32_t member_ready(struct shim_epm *m)
{
    return ready_of(m->slot, m->gen, m->events & ~EP_MODE);
}

/* EPOLLET: arm for the next event, and record that a writer must report new write space. */
static void et_arm(struct shim_epm *m, int fd, uint32_t ready)
{
    struct shm_sock *s = shm_sock(C.base, m->slot);
    if ((m->events & EPOLLOUT) && !(ready & EPOLLOUT) && !SHIM_RLX(&s->nospace)) {
        /* Linux's tcp_poll sets SOCK_NOSPACE when it finds no room. Space freed before the
         * stack saw the flag is an event we count ourselves (see publish in the server). */
        atomic_store(&s->nospace, 1);
        if ((shm_sock_poll(C.base, m->slot) & SHM_POLLOUT) && atomic_exchange(&s->nospace, 0))
            atomic_fetch_add(&s->ev_out, 1);
    }
    atomic_fetch_or(&s->armed_et, arm_bits(m->events));
    /* Dekker pair with the stack, which counts an event and then reads armed_et: an event
     * it did not signal because we had not armed yet is seen here. */
    if (atomic_load(&s->ev_in) != m->in_seen || atomic_load(&s->ev_out) != m->out_seen)
        shim__signal(fd);
}

/* EPOLLET: counters moved (in, out) for a kind the member waits for (bits) whose readiness
 * does not show. */
static bool et_early(bool in, bool out, uint32_t bits, uint32_t ready)
{
    return (in && (bits & POLLIN) && !(ready & POLLIN)) ||
           (out && (bits & POLLOUT) && !(ready & POLLOUT));
}

/* EPOLLET: an edge is a new event of a kind the member waits for (the counters moved since
 * its last report), or readiness found at ADD/MOD; what is reported is the readiness now. */
static uint32_t et_take(struct shim_epm *m, int fd)
{
    if (!shm_sock_valid(C.base, m->slot, m->gen))
        return member_ready(m);
    struct shm_sock *s = shm_sock(C.base, m->slot);
    uint32_t cin = atomic_load(&s->ev_in), cout = atomic_load(&s->ev_out);
    uint32_t bits = arm_bits(m->events);
    bool in = cin != m->in_seen, out = cout != m->out_seen;
    bool fresh = m->pending || (in && shm_ev_match(SHM_EV_IN, bits)) ||
                 (out && shm_ev_match(SHM_EV_OUT, bits)) || (in && out);
    if (SHIM_RLX(&C.dead) && !m->dead_seen) {
        m->dead_seen = 1; /* the reset the stack's death stands for: one edge */
        fresh = true;
    }
    m->in_seen = cin;
    m->out_seen = cout;
    uint32_t ready = member_ready(m);
    /* The stack counts an event before its change shows: a count without its change is
     * either one the application consumed already or one whose change is on its way. Keep
     * it pending: the stack's signal after the change (we arm before it looks) brings a
     * harvest that reports it; and read the readiness again after arming, for a change that
     * showed after the stack looked at armed_et (the Dekker pair: one of us sees the other). */
    bool early = et_early(in, out, bits, ready);
    et_arm(m, fd, ready);
    if (early) {
        ready |= member_ready(m);
        early = et_early(in, out, bits, ready);
    }
    m->pending = early;
    return fresh ? ready : 0;
}

/* After ADD or MOD: arm, and if the socket is ready already make the kernel see it. */
static void prime(struct shim_epm *m, int fd)
{
    if (!shm_sock_valid(C.base, m->slot, m->gen)) {
        shim__signal(fd);
        return;
    }
    struct shm_sock *s = shm_sock(C.base, m->slot);
    if (!is_et(m)) {
        if (!(m->events & EPOLLONESHOT))
            atomic_fetch_or(&s->lt_bits, arm_bits(m->events));
        arm_and_check(fd, m->slot, m->gen, m->events & ~EP_MODE, false);
        return;
    }
    /* Linux's ep_insert/ep_modify queue an edge-triggered item that is ready now. */
    m->in_seen = atomic_load(&s->ev_in);
    m->out_seen = atomic_load(&s->ev_out);
    uint32_t ready = member_ready(m);
    et_arm(m, fd, ready);
    ready |= member_ready(m);
    /* An event counted just before we read the counters may not show yet, and the stack's
     * signal after its change finds us armed: the first harvest takes the counters of a
     * kind not ready now as moved, so that it reports that change or keeps it pending
     * (et_take). */
    uint32_t bits = arm_bits(m->events);
    m->in_seen -= et_early(true, false, bits, ready);
    m->out_seen -= et_early(false, true, bits, ready);
    m->pending = ready != 0;
    if (ready)
        shim__signal(fd);
}

static void companion_ctl(struct shim_epoll *ep, struct shim_epm *m, int fd, int op, int epfd)
{
    if (m->lfd < 0)
        return;
    struct epoll_event kev = {kernel_events(m->events), {.u64 = kdata(ep, fd, true)}};
    C.sys.epoll_ctl(kep(ep, epfd), op, m->lfd, &kev);
}

/* A registration that can stay parked: plain (level- or edge-triggered), in a set no other
 * process shares, without a companion or a private dup. */
static bool parkable(const struct shim_epoll *ep, const struct shim_epm *m)
{
    return !ep->forked && !(m->events & (EPOLLONESHOT | EPOLLEXCLUSIVE)) && m->lfd < 0 &&
           !m->held && !m->disabled;
}

enum { PARK_SPARE = 1, PARK_REMOVED = 2 };

static void park(struct shim_epm *m, uint8_t how)
{
    uint32_t events = m->events;
    memset(m, 0, sizeof(*m));
    m->events = events;
    m->parked = how;
}

/* The parked registration m at fd leaves the kernel's set (the eventfd at fd goes, or is
 * not to be reported there). Caller holds ep->lock. */
static void unpark_one(struct shim_epoll *ep, struct shim_epm *m, int fd, int epfd)
{
    int k = kep(ep, epfd);
    if (k >= 0)
        C.sys.epoll_ctl(k, EPOLL_CTL_DEL, fd, NULL);
    memset(m, 0, sizeof(*m));
}

/* Takes member m (at fd) out of the kernel epoll and forgets it. */
static void remove_member(struct shim_epoll *ep, struct shim_epm *m, int fd, int epfd)
{
    int k = kep(ep, epfd);
    /* (A private dup the application moved by dup2 onto its number is no longer ours to
     * delete by that number; its registration ends when the eventfd closes.) */
    if (k >= 0 && (!m->held || *m->held == fd))
        C.sys.epoll_ctl(k, EPOLL_CTL_DEL, fd, NULL);
    companion_ctl(ep, m, fd, EPOLL_CTL_DEL, epfd);
    if (m->held) {
        unhold(m);
        ep->nheld--;
    }
    memset(m, 0, sizeof(*m));
}

int shim_epoll_ctl(int epfd, int op, int fd, struct epoll_event *ev)
{
    struct shim_fd *fe = sock_ent(fd);
    if (!fe) {
        if (shim_fd_kind(fd) == SHIM_FD_SPARE)
            return -EBADF; /* closed for the application (client.c "Spare eventfds") */
        int r = C.sys.epoll_ctl(epfd, op, fd, ev);
        return r < 0 ? -errno : 0;
    }
    if (op != EPOLL_CTL_ADD && op != EPOLL_CTL_MOD && op != EPOLL_CTL_DEL)
        return -EINVAL;
    if (op != EPOLL_CTL_DEL && !ev)
        return -EFAULT;
    if (epfd == fd)
        return -EINVAL;
    /* Linux's ep_op_has_event checks: EPOLLEXCLUSIVE only with ADD, and only with the
     * in/out/err/hup, ET and wake-up bits (EPOLLEXCLUSIVE_OK_BITS). */
    if (op != EPOLL_CTL_DEL && (ev->events & EPOLLEXCLUSIVE) &&
        (op == EPOLL_CTL_MOD || (ev->events & ~(uint32_t)(EPOLLIN | EPOLLOUT | EPOLLERR | EPOLLHUP |
                                                          EPOLLWAKEUP | EPOLLET | EPOLLEXCLUSIVE))))
        return -EINVAL;
    struct shim_epoll *ep = NULL;
    int rc = instance(epfd, &ep);
    if (rc < 0)
        return rc;
    uint32_t slot = fe->slot, gen = fe->gen;
    pthread_mutex_lock(&ep->lock);
    struct shim_epm *m = member(ep, fd, op == EPOLL_CTL_ADD);
    if (!m) {
        rc = op == EPOLL_CTL_ADD ? -ENOMEM : -ENOENT;
        goto out;
    }
    if (op == EPOLL_CTL_MOD && m->used && (m->events & EPOLLEXCLUSIVE)) {
        rc = -EINVAL; /* Linux: EPOLL_CTL_MOD of an EPOLLEXCLUSIVE item */
        goto out;
    }
    if (op == EPOLL_CTL_DEL) {
        if (!m->used && m->parked) {
            rc = -ENOENT; /* the registration is a parked one, not the application's */
            goto out;
        }
        if (m->used && m->slot == slot && m->gen == gen && parkable(ep, m)) {
            /* Lazily: the kernel's registration stays, parked, for the next ADD of this
             * number (an event loop that removes a socket and adds it back for the next
             * phase of a request, as APR's pollset in ab, made two system calls per
             * change); it leaves at its first event or when the eventfd goes. */
            park(m, PARK_REMOVED);
            goto out;
        }
        if (C.sys.epoll_ctl(kep(ep, epfd), EPOLL_CTL_DEL, fd, NULL) < 0) {
            rc = -errno;
            goto out;
        }
        companion_ctl(ep, m, fd, EPOLL_CTL_DEL, epfd);
        memset(m, 0, sizeof(*m));
        goto out;
    }
    struct shim_epm nm = *m;
    int kop = op;
    if (op == EPOLL_CTL_ADD) {
        if (m->used && m->slot == slot && m->gen == gen) {
            rc = -EEXIST;
            goto out;
        }
        if (m->used) /* a socket this number named before, which left unseen */
            remove_member(ep, m, fd, epfd);
        /* The eventfd's registration is there already (parked): it stays, with a MOD only
         * if its kernel mask differs. A removed socket's signal from before is emptied if
         * it is not ready now (else the first wait would find a stale one). */
        uint8_t parked = m->parked;
        if (parked)
            kop = kernel_events(m->events) == kernel_events(ev->events) ? 0 : EPOLL_CTL_MOD;
        if (parked && (ev->events & EPOLLEXCLUSIVE)) {
            /* Linux refuses to MOD a registration to EPOLLEXCLUSIVE (EINVAL): the parked one
             * leaves and the ADD makes a new one. */
            unpark_one(ep, m, fd, epfd);
            kop = EPOLL_CTL_ADD;
        }
        /* An eventfd that may count a stale signal (a spare's: client.c) is emptied before
         * a registration that would report it: a new one, a MOD, a level-triggered one. */
        struct shim_file *f = &C.files[slot];
        bool stale = f->gen == gen && f->efd_stale &&
                     (kop || (ev->events & (EPOLLET | EPOLLONESHOT)) != EPOLLET);
        if ((parked == PARK_REMOVED || stale) && !ready_of(slot, gen, ev->events & ~EP_MODE))
            drain(fd);
        if (stale)
            f->efd_stale = 0;
        memset(&nm, 0, sizeof(nm));
        nm.slot = slot;
        nm.gen = gen;
        nm.lfd = f->gen == gen ? f->lfd : -1;
    }
    nm.events = ev->events;
    struct epoll_event kev = {kernel_events(ev->events), {.u64 = kdata(ep, fd, false)}};
    if (op == EPOLL_CTL_MOD) {
        if (!m->used) {
            rc = -ENOENT;
            goto out;
        }
        if (plain_lt(m->events) && plain_lt(ev->events) && !m->held && m->lfd < 0 &&
            kernel_events(m->events) == kernel_events(ev->events)) {
            /* Level-triggered before and after: the kernel's registration (EPOLLIN on the
             * eventfd, our data) would not change, so it stays, and a MOD costs at most
             * one system call instead of three (an event loop that turns EPOLLOUT on and
             * off around every write, as wrk's, does two per request). A stale signal is
             * emptied only when the socket is not ready for the new events. */
            m->events = ev->events;
            m->data = ev->data.u64;
            if (!ready_of(m->slot, m->gen, ev->events & ~EP_MODE))
                drain(fd);
            prime(m, fd);
            goto out;
        }
        drain(fd); /* a readable eventfd would be reported at once by the MOD */
    }
    if (kop && C.sys.epoll_ctl(kep(ep, epfd), kop, fd, &kev) < 0 &&
        (kop != EPOLL_CTL_MOD || op != EPOLL_CTL_ADD || errno != ENOENT ||
         C.sys.epoll_ctl(kep(ep, epfd), EPOLL_CTL_ADD, fd, &kev) < 0)) {
        rc = -errno;
        goto out;
    }
    nm.used = 1;
    nm.disabled = 0;
    nm.data = ev->data.u64;
    *m = nm;
    companion_ctl(ep, m, fd, op, epfd);
    prime(m, fd);
out:
    pthread_mutex_unlock(&ep->lock);
    return rc;
}

/* One kernel event for the member at fd (comp: for its companion): appends the member's
 * report to out[n] or merges it into its earlier one; returns the new count. Caller holds
 * ep->lock. */
static int take(struct shim_epoll *ep, int fd, bool comp, uint64_t d, uint32_t kevents, int epfd,
                struct epoll_event *out, int n)
{
    struct shim_epm *m = member(ep, fd, false);
    if (m && !m->used && m->parked && !comp && kdata(ep, fd, false) == d) {
        /* A spare's stale signal (from the stack, for the socket that had it): empty it.
         * A new socket's that is not a member here: its registration leaves (draining would
         * take the signal from the sets it is a member of). */
        if (shim_fd_kind(fd) == SHIM_FD_SPARE)
            drain(fd);
        else
            unpark_one(ep, m, fd, epfd);
        return n;
    }
    if (!m || !m->used || m->disabled || kdata(ep, fd, comp) != d)
        return n;
    bool oneshot = m->events & EPOLLONESHOT;
    uint32_t ev;
    if (is_et(m) && !comp) {
        ev = et_take(m, fd);
    } else {
        ev = member_ready(m);
        if (comp && (kevents & EPOLLIN))
            ev |= EPOLLIN & m->events;
        if (!ev && !comp) {
            /* Stale (someone else consumed it): the usual not-ready step. One-shot ones
             * were disabled by the kernel for this event: enable them again. */
            ev = arm_and_check(fd, m->slot, m->gen, m->events & ~EP_MODE, true);
            if (!ev && oneshot) {
                struct epoll_event re = {kernel_events(m->events), {.u64 = kdata(ep, fd, false)}};
                C.sys.epoll_ctl(kep(ep, epfd), EPOLL_CTL_MOD, fd, &re);
            }
        }
    }
    if (!ev)
        return n;
    if (m->round == ep->round) {
        out[m->out].events |= ev;
        return n;
    }
    m->round = ep->round;
    m->out = n;
    out[n].events = ev;
    out[n].data.u64 = m->data;
    if (oneshot) {
        m->disabled = 1;
        if (!comp) /* the kernel disabled the member itself; the companion too */
            companion_ctl(ep, m, fd, EPOLL_CTL_MOD, epfd);
    }
    return n + 1;
}

/* The inner epoll was readable: ustackd's pidfd, its only member, fired (one-shot). */
static void inner_ready(struct shim_epoll *ep)
{
    struct epoll_event kev;
    if (C.sys.epoll_pwait(ep->ifd, &kev, 1, 0, NULL) == 1 && kev.data.u64 == EP_STACKD)
        shim__stack_gone();
}

/* The kernel's events in evs[0..n): the application's own stay, ours become the members'
 * reports. Returns the new count. */
static int translate(struct shim_epoll *ep, int epfd, struct epoll_event *evs, int n)
{
    bool ours = false;
    for (int i = 0; i < n && !ours; i++)
        ours = evs[i].data.u64 == ep->cookie || (uint32_t)(evs[i].data.u64 >> 32) == ep->xhi;
    if (!ours)
        return n;
    pthread_mutex_lock(&ep->lock);
    ep->round++;
    int out = 0;
    bool inner = false;
    for (int i = 0; i < n; i++) {
        struct epoll_event e = evs[i];
        if (e.data.u64 == ep->cookie) {
            inner = true;
        } else if ((uint32_t)(e.data.u64 >> 32) == ep->xhi) {
            int fd = (int)(e.data.u64 & 0x7fffffff);
            out = take(ep, fd, e.data.u64 & EP_COMPANION, e.data.u64, e.events, epfd, evs, out);
        } else {
            evs[out++] = e;
        }
    }
    if (inner)
        inner_ready(ep);
    pthread_mutex_unlock(&ep->lock);
    return out;
}

int shim_epoll_wait(int epfd, struct epoll_event *evs, int max, int64_t timeout_ns,
                    const sigset_t *mask)
{
    struct shim_fd *e = shim_fdtab_get(&shim_fds, epfd);
    if (!e || SHIM_RLX(&e->kind) != SHIM_FD_EPOLL)
        return -EINVAL;
    struct shim_epoll *ep = e->obj;
    if (max <= 0 || max > INT_MAX / (int)sizeof(struct epoll_event))
        return -EINVAL;
    if (!evs)
        return -EFAULT;
    int64_t deadline = timeout_ns < 0 ? SHIM_FOREVER : shim__now() + timeout_ns;
    uint32_t sig0 = shim_intr_seq();
    for (;;) {
        int n;
        if (timeout_ns != 0 && shim_intr_seq() != sig0)
            return -EINTR; /* a handler ran while the call was in user space (intr.h) */
        if (timeout_ns == 0 || deadline == SHIM_FOREVER || !C.sys.epoll_pwait2) {
            int ms = -1;
            if (timeout_ns == 0) {
                ms = 0;
            } else if (deadline != SHIM_FOREVER) {
                int64_t left = deadline - shim__now();
                left = left < 0 ? 0 : (left + 999999) / 1000000;
                ms = left > INT_MAX ? INT_MAX : (int)left;
            }
            n = C.sys.epoll_pwait(epfd, evs, max, ms, mask);
        } else {
            int64_t left = deadline - shim__now();
            if (left < 0)
                left = 0;
            struct timespec ts = {(time_t)(left / SHIM_NS_PER_S), (long)(left % SHIM_NS_PER_S)};
            n = C.sys.epoll_pwait2(epfd, evs, max, &ts, mask);
        }
        if (n < 0)
            return -errno;
        int out = translate(ep, epfd, evs, n);
        if (out > 0 || n == 0 || timeout_ns == 0)
            return out;
        if (deadline != SHIM_FOREVER && shim__now() >= deadline)
            return 0;
        /* Only members that turned out not ready: wait again. */
    }
}

int64_t shim_clock_ns(void)
{
    return shim__now();
}

int shim_epoll_after_kernel(int epfd, struct epoll_event *evs, int max, int n, int64_t t0,
                            int64_t timeout_ns, const sigset_t *mask)
{
    struct shim_fd *e = shim_fdtab_get(&shim_fds, epfd);
    if (n <= 0 || !e || SHIM_RLX(&e->kind) != SHIM_FD_EPOLL)
        return n;
    /* The epoll became ours while this thread slept in the kernel (Java's EPollPort: its
     * thread waits before the first socket is added): the events of members are raw
     * (EPOLLIN on the eventfd, our data) and must be rewritten into the members' reports. */
    int out = translate(e->obj, epfd, evs, n);
    if (out > 0 || timeout_ns == 0)
        return out;
    int64_t left = timeout_ns < 0 ? -1 : timeout_ns - (shim__now() - t0);
    if (timeout_ns >= 0 && left <= 0)
        return 0;
    return shim_epoll_wait(epfd, evs, max, left, mask);
}

/* ---- sockets leaving epoll sets ------------------------------------------------------- */

/* The registration of m (at fd, about to be closed while a dup lives) moves to a private
 * dup of the eventfd: Linux keys it by the open file, so it outlives the fd number. */
static void hold(struct shim_epoll *ep, struct shim_epm *m, int fd)
{
    int *h = malloc(sizeof(*h));
    int k = kep(ep, -1);
    if (!h || k < 0 || (*h = C.sys.fcntl(fd, F_DUPFD_CLOEXEC, 1000)) < 0) {
        free(h);
        remove_member(ep, m, fd, -1);
        return;
    }
    struct shim_epm *hm = member(ep, *h, true);
    m = &ep->m[fd]; /* member() may have moved the table */
    if (!hm || hm->used) {
        C.sys.close(*h);
        free(h);
        remove_member(ep, m, fd, -1);
        return;
    }
    *hm = *m;
    struct epoll_event kev = {m->disabled ? 0 : kernel_events(m->events),
                              {.u64 = kdata(ep, *h, false)}};
    if (C.sys.epoll_ctl(k, EPOLL_CTL_ADD, *h, &kev) < 0) {
        memset(hm, 0, sizeof(*hm));
        C.sys.close(*h);
        free(h);
        remove_member(ep, m, fd, -1);
        return;
    }
    C.sys.epoll_ctl(k, EPOLL_CTL_DEL, fd, NULL);
    /* The companion's data names the new number (an EPOLLEXCLUSIVE item cannot be MODed). */
    if (hm->events & EPOLLEXCLUSIVE) {
        companion_ctl(ep, hm, *h, EPOLL_CTL_DEL, k);
        companion_ctl(ep, hm, *h, EPOLL_CTL_ADD, k);
    } else {
        companion_ctl(ep, hm, *h, EPOLL_CTL_MOD, k);
    }
    hm->held = h;
    shim__priv(h);
    ep->nheld++;
    memset(m, 0, sizeof(*m));
    if (!hm->disabled && !is_et(hm))
        arm_and_check(*h, hm->slot, hm->gen, hm->events & ~EP_MODE, false);
}

/* fd (a ustack socket) is being closed or replaced. Its registrations move to a private
 * dup while the process holds the socket by another fd; with the last one they all end.
 * In a set shared with another process (made before a fork) they stay as they are while
 * another process holds the socket: Linux keys a registration by the open file, which
 * lives on there, and the other process's table still names the member by this number
 * (Postfix's master watches its listeners in an epoll; each service child moves the
 * listener to a fixed number and closes the original before exec: deleting or moving the
 * registration took it from the master, whose next EPOLL_CTL_DEL failed with ENOENT). */
void shim__epoll_unpark(int fd)
{
    for (struct shim_epoll *ep = C.epolls; ep; ep = ep->next) {
        pthread_mutex_lock(&ep->lock);
        struct shim_epm *m = member(ep, fd, false);
        if (m && !m->used && m->parked) {
            unpark_one(ep, m, fd, -1);
        }
        pthread_mutex_unlock(&ep->lock);
    }
}

void shim__epoll_unpark_child(void)
{
    for (struct shim_epoll *ep = C.epolls; ep; ep = ep->next) {
        for (uint32_t i = 0; i < ep->cap; i++) {
            if (!ep->m[i].used && ep->m[i].parked)
                memset(&ep->m[i], 0, sizeof(ep->m[i]));
        }
    }
}

bool shim__epoll_forget(int fd, uint32_t slot, uint32_t gen, bool park_ok)
{
    bool lt = false;
    shim__lock();
    struct shim_file *f = &C.files[slot];
    bool last = f->gen != gen || f->nfds <= 1;
    bool elsewhere = f->gen == gen && shm_sock_valid(C.base, slot, gen) &&
                     atomic_load(&shm_sock(C.base, slot)->refs) > f->nfds;
    for (struct shim_epoll *ep = C.epolls; ep; ep = ep->next) {
        if (ep->forked && elsewhere)
            continue;
        pthread_mutex_lock(&ep->lock);
        struct shim_epm *m = member(ep, fd, false);
        if (m && m->used && m->slot == slot && m->gen == gen) {
            if (last && park_ok && parkable(ep, m)) {
                park(m, PARK_SPARE);
                lt |= !(m->events & EPOLLET);
            } else if (last)
                remove_member(ep, m, fd, -1);
            else
                hold(ep, m, fd);
        } else if (m && !m->used && m->parked && !park_ok) {
            unpark_one(ep, m, fd, -1);
        } else if (m && !m->used && m->parked) {
            m->parked = PARK_SPARE;
            lt |= !(m->events & EPOLLET);
        }
        for (uint32_t i = 0; last && ep->nheld && i < ep->cap; i++) {
            m = &ep->m[i];
            if (m->used && m->held && m->slot == slot && m->gen == gen)
                remove_member(ep, m, (int)i, -1);
        }
        pthread_mutex_unlock(&ep->lock);
    }
    shim__unlock();
    return lt;
}

int shim__epoll_detach(int fd, uint32_t slot, uint32_t gen, struct shim_epreg *regs, int max)
{
    int n = 0;
    shim__lock();
    for (struct shim_epoll *ep = C.epolls; ep; ep = ep->next) {
        pthread_mutex_lock(&ep->lock);
        struct shim_epm *m = member(ep, fd, false);
        if (m && m->used && m->slot == slot && m->gen == gen) {
            int epfd = epoll_fd_of(ep);
            if (epfd >= 0 && n < max) {
                regs[n].epfd = epfd;
                regs[n].ev.events = m->disabled ? 0 : m->events & ~EPOLLEXCLUSIVE;
                regs[n].ev.data.u64 = m->data;
                n++;
            }
            remove_member(ep, m, fd, epfd);
        } else if (m && !m->used && m->parked) {
            unpark_one(ep, m, fd, -1); /* the kernel socket replaces the eventfd at fd */
        }
        pthread_mutex_unlock(&ep->lock);
    }
    shim__unlock();
    return n;
}

void shim__epoll_attach_kernel(int fd, const struct shim_epreg *regs, int n)
{
    for (int i = 0; i < n; i++) {
        struct epoll_event ev = regs[i].ev;
        C.sys.epoll_ctl(regs[i].epfd, EPOLL_CTL_ADD, fd, &ev);
    }
}

void shim__epoll_forking(void)
{
    for (struct shim_epoll *ep = C.epolls; ep; ep = ep->next) {
        /* A socket removed lazily is the child's too: its ADD to the shared set must find no
         * registration (EEXIST), as on Linux. */
        pthread_mutex_lock(&ep->lock);
        for (uint32_t i = 0; i < ep->cap; i++) {
            struct shim_epm *m = &ep->m[i];
            if (!m->used && m->parked && shim_fd_kind((int)i) == SHIM_FD_SOCK)
                unpark_one(ep, m, (int)i, -1);
        }
        pthread_mutex_unlock(&ep->lock);
        ep->forked = 1;
    }
}

void shim__epoll_atfork_child(void)
{
    for (struct shim_epoll *ep = C.epolls; ep; ep = ep->next)
        pthread_mutex_init(&ep->lock, NULL);
}

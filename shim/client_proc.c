/*
 * client_proc.c - what processes do to the sockets they hold: fork (every socket gains the
 * child as a holder), exec (FD_CLOEXEC sockets are released, the others are described to
 * the new image, which adopts them), and the hand-over of a socket to the kernel when the
 * routing rules say so (docs/preload.md).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "client_int.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define C shim__c

/* ---- fork / exec ---------------------------------------------------------------------- */

static __thread int t_in_fork_hook __attribute__((tls_model("initial-exec")));

/* Every fd of ours is the child's too: refs and the child's hold counts (+1), or, when the
 * fork failed, refs only (-1; the child's entry is cancelled as a whole). */
static void bump_all(int delta)
{
    int lim = shim_fdtab_limit(&shim_fds);
    for (int fd = 0; fd < lim; fd++) {
        struct shim_fd *e = shim_fdtab_get(&shim_fds, fd);
        if (!e || SHIM_RLX(&e->kind) != SHIM_FD_SOCK || !shm_sock_valid(C.base, e->slot, e->gen))
            continue;
        if (delta > 0) {
            /* The stack fetches a new socket's eventfd from us: a parent that exits right
             * after fork() would take it along before the stack came to it. */
            shim__attach_wait(e->slot);
            atomic_fetch_add(&shm_sock(C.base, e->slot)->refs, 1);
            if (C.child_pidx != SHM_NONE)
                atomic_fetch_add(&C.child_row[e->slot], 1);
        } else {
            atomic_fetch_sub(&shm_sock(C.base, e->slot)->refs, 1);
        }
    }
}

/* The child's references are taken before the fork, in the parent: a parent that closes
 * its copy right after fork() (socat, inetd-style servers) must not bring a socket the
 * child holds to zero in between. */
void shim_fork_prepare(void)
{
    if (!SHIM_LOAD(&C.attached))
        return;
    pthread_mutex_lock(&C.lock);
    /* The child's process entry, PENDING until one of us names its pid: ustackd gives it
     * back if we die before that (and the child never does). */
    C.child_pidx = shm_proc_alloc(C.base, 0, (int32_t)getpid());
    if (C.child_pidx == SHM_NONE)
        shim_warn_once("procs", "the region's process table is full: ustackd cannot close "
                                "the sockets of a fork child if it dies");
    else if (!(C.child_row = shim__map_row(C.child_pidx))) {
        shm_proc_cancel(C.base, C.child_pidx, NULL);
        C.child_pidx = SHM_NONE;
    }
    bump_all(+1);
    shim__epoll_forking();
}

void shim_fork_parent(void)
{
    if (!SHIM_LOAD(&C.attached))
        return;
    if (t_in_fork_hook)
        return;                   /* the hook unlocks after it has seen fork's result */
    C.child_pidx = SHM_NONE;      /* the child names its pid itself */
    shim__unmap_row(C.child_row); /* the child's now, in its own mapping */
    C.child_row = NULL;
    pthread_mutex_unlock(&C.lock);
}

void shim_fork_child(void)
{
    shim_fork_child_pid((int32_t)getpid());
}

void shim_fork_child_pid(int32_t pid)
{
    t_in_fork_hook = 0; /* also unattached: a later fork's handlers must not see it set */
    if (!SHIM_LOAD(&C.attached))
        return;
    pthread_mutex_init(&C.lock, NULL);
    shim__epoll_atfork_child();
    shim__spares_atfork_child();
    shim__pins_atfork_child();
    SHIM_STORE(&C.pid, pid);
    shim__unmap_row(C.row); /* the parent's */
    C.pidx = C.child_pidx;
    C.row = C.child_row;
    C.child_pidx = SHM_NONE;
    C.child_row = NULL;
    if (C.pidx != SHM_NONE && !shm_proc_set_pid(C.base, C.pidx, pid)) {
        C.pidx = SHM_NONE; /* ustackd gave the entry back: we run untracked */
        shim__unmap_row(C.row);
        C.row = NULL;
    }
    C.lockval = C.pidx == SHM_NONE ? SHM_NONE : C.pidx + 1;
}

void shim_fork_hook_begin(void)
{
    t_in_fork_hook = 1;
}

void shim_fork_hook_end(int pid)
{
    if (!t_in_fork_hook)
        return;
    t_in_fork_hook = 0;
    if (!SHIM_LOAD(&C.attached))
        return;
    if (pid < 0) {
        bump_all(-1);
        shm_proc_cancel(C.base, C.child_pidx, C.child_row);
    } else if (C.child_pidx != SHM_NONE) {
        shm_proc_set_pid(C.base, C.child_pidx, pid);
    }
    C.child_pidx = SHM_NONE;
    shim__unmap_row(C.child_row);
    C.child_row = NULL;
    pthread_mutex_unlock(&C.lock);
}

void shim_fork_failed(void)
{
    shim_fork_hook_end(-1);
}

int shim_exec_prepare(char *buf, size_t len)
{
    if (len)
        buf[0] = '\0';
    if (!SHIM_LOAD(&C.attached))
        return 0;
    shim_spares_close(); /* the new image knows nothing of them */
    pthread_mutex_lock(&C.lock);
    int hdr = snprintf(buf, len, "USTACK_FDS=%d:", (int)getpid());
    if (hdr < 0 || (size_t)hdr >= len)
        goto nospace;
    size_t n = (size_t)hdr;
    shim__pins_exec();
    int lim = shim_fdtab_limit(&shim_fds);
    for (int fd = 0; fd < lim; fd++) {
        struct shim_fd *e = shim_fdtab_get(&shim_fds, fd);
        if (!e || SHIM_RLX(&e->kind) != SHIM_FD_SOCK)
            continue;
        shim__attach_wait(e->slot); /* exec may close the number the stack has yet to fetch */
        /* The kernel's FD_CLOEXEC is authoritative (it may have been set through paths we
         * do not see, e.g. open flags of a dup). */
        int cl = C.sys.fcntl(fd, F_GETFD);
        if (cl < 0)
            continue;
        if (cl & FD_CLOEXEC) {
            if (shm_sock_valid(C.base, e->slot, e->gen))
                shim__release_ref(e->slot, e->gen);
            continue;
        }
        /* A listener's kernel loopback listeners go along (kept open across exec): the new
         * image cannot make its own while another process (a parent that forked it) holds
         * them, and connections to 127.0.0.1 would wait in a queue nobody accepts from. */
        struct shim_file *f = &C.files[e->slot];
        int l0 = -1, l1 = -1;
        if (f->gen == e->gen && f->lacc[0] >= 0 && C.sys.fcntl(f->lacc[0], F_SETFD, 0) == 0) {
            l0 = f->lacc[0];
            if (f->lacc[1] >= 0 && C.sys.fcntl(f->lacc[1], F_SETFD, 0) == 0)
                l1 = f->lacc[1];
        }
        int m = snprintf(buf + n, len - n, "%s%d.%u.%u.%d.%d.%d", n > (size_t)hdr ? "," : "", fd,
                         e->slot, e->gen, f->nonblock, l0, l1);
        if (m < 0 || (size_t)m >= len - n)
            goto nospace;
        n += (size_t)m;
    }
    if (n == (size_t)hdr)
        buf[0] = '\0';
    return 0; /* the lock stays held until exec fails (or the image is gone) */
nospace:
    buf[0] = '\0';
    shim_exec_failed();
    return -ENOSPC;
}

void shim_exec_failed(void)
{
    if (!SHIM_LOAD(&C.attached))
        return;
    int lim = shim_fdtab_limit(&shim_fds);
    for (int fd = 0; fd < lim; fd++) {
        struct shim_fd *e = shim_fdtab_get(&shim_fds, fd);
        if (!e || SHIM_RLX(&e->kind) != SHIM_FD_SOCK)
            continue;
        struct shim_file *f = &C.files[e->slot];
        for (int j = 0; j < 2 && f->gen == e->gen && f->lacc[j] >= 0; j++)
            C.sys.fcntl(f->lacc[j], F_SETFD, FD_CLOEXEC); /* they stay ours */
        int cl = C.sys.fcntl(fd, F_GETFD);
        if (cl < 0 || !(cl & FD_CLOEXEC) || !shm_sock_valid(C.base, e->slot, e->gen))
            continue;
        /* A socket whose last reference went with the exec attempt is lost (see
         * docs/preload.md); the others get their reference back. */
        struct shm_sock *s = shm_sock(C.base, e->slot);
        if (SHIM_LOAD(&s->state) == SHM_SOCK_LIVE)
            shim__ref_add(e->slot, 1);
    }
    pthread_mutex_unlock(&C.lock);
}

/* A kernel loopback listener the old image passed along (shim_exec_prepare): taken back as
 * a private fd if it is a listening TCP socket. */
static bool adopt_lo(int fd)
{
    int v = 0, p = 0;
    socklen_t len = sizeof(v), plen = sizeof(p);
    if (fd < 0 || C.sys.fcntl(fd, F_SETFD, FD_CLOEXEC) < 0 ||
        C.sys.getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &v, &len) < 0 || v != 1 ||
        C.sys.getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &p, &plen) < 0 || p != IPPROTO_TCP)
        return false;
    return shim_fd_kind(fd) == SHIM_FD_KERNEL;
}

/* fd becomes this process's number of the socket in slot (generation gen): its file state
 * rebuilt from the region if this process had none, its fd table entry set; a listener on
 * the wildcard takes the loopback listeners lo[] of the old image (else makes its own). The
 * caller accounts for the reference. */
static bool adopt_fd(int fd, uint32_t slot, uint32_t gen, bool nb, const int lo[2])
{
    int cl = C.sys.fcntl(fd, F_GETFD);
    if (cl < 0 || (unsigned)fd >= shim_fds.size || !shm_sock_valid(C.base, slot, gen))
        return false;
    struct shm_sock *s = shm_sock(C.base, slot);
    struct shim_file *f = &C.files[slot];
    if (f->gen != gen || f->nfds == 0) {
        f = shim__file_init(slot, gen, nb);
        f->nfds = 0;
        uint32_t fl = SHIM_LOAD(&s->flags);
        bool connecting =
            (fl & SHM_F_CONNECTING) || shm_connect_queued(fl, SHIM_LOAD(&s->app_flags));
        f->cstate = (fl & SHM_F_LISTENING)   ? SHIM_CS_LISTEN
                    : (fl & SHM_F_CONNECTED) ? SHIM_CS_CONNECTED
                    : connecting             ? SHIM_CS_CONNECTING
                                             : SHIM_CS_NEW;
        f->bound = s->la.port != 0;
        f->bind_a = s->la;
        /* An AF_INET6 socket on IPv4's wildcard was bound to [::] (client.c do_bind). */
        f->any6 = s->domain == AF_INET6 && s->la.family == SHM_AF_INET && s->la.ip == 0;
        struct shim_sk k = {fd, slot, gen, s, f, false};
        if (f->cstate == SHIM_CS_LISTEN && (shim_addr_any(&s->la) || shim__own_address(&s->la))) {
            int nlo = 0;
            for (int j = 0; j < 2 && adopt_lo(lo[j]); j++) {
                f->lacc[nlo] = lo[j];
                shim__priv(&f->lacc[nlo++]);
            }
            if (nlo)
                shim__lfd_set(f, nlo);
            else
                shim__loopback_listener(&k, s->la.port, 511);
        }
    }
    f->nfds++;
    shim__lock();
    shim_fdtab_set(&shim_fds, fd, SHIM_FD_SOCK, slot, gen, cl & FD_CLOEXEC, NULL);
    shim__unlock();
    return true;
}

int shim_adopt(const char *v)
{
    char *end;
    long pid = strtol(v, &end, 10);
    if (*end != ':' || pid != getpid())
        return 0;
    int n = 0;
    for (const char *p = end + 1; *p;) {
        long fd = strtol(p, &end, 10);
        if (*end != '.')
            break;
        unsigned long slot = strtoul(end + 1, &end, 10);
        if (*end != '.')
            break;
        unsigned long gen = strtoul(end + 1, &end, 10);
        if (*end != '.')
            break;
        long nb = strtol(end + 1, &end, 10);
        int lo[2] = {-1, -1};
        for (int j = 0; j < 2 && *end == '.'; j++) {
            long l = strtol(end + 1, &end, 10);
            lo[j] = l >= 0 && l <= INT32_MAX ? (int)l : -1;
        }
        p = *end == ',' ? end + 1 : end;
        if (fd >= 0 && fd <= INT32_MAX && slot < C.nsocks && gen <= UINT32_MAX &&
            adopt_fd((int)fd, (uint32_t)slot, (uint32_t)gen, nb != 0, lo))
            n++;
    }
    return n;
}

/* ---- sockets passed over Unix sockets (SCM_RIGHTS) ---------------------------------------- */

/* The SCM_RIGHTS fds of msg, one after another: *c and *i are the cursor (CMSG_FIRSTHDR
 * and 0 to start); false at the end. */
static bool next_right(const struct msghdr *msg, struct cmsghdr **c, size_t *i, int *fd)
{
    for (; *c; *c = CMSG_NXTHDR((struct msghdr *)msg, *c), *i = 0) {
        if ((*c)->cmsg_level != SOL_SOCKET || (*c)->cmsg_type != SCM_RIGHTS ||
            (*c)->cmsg_len < CMSG_LEN(0))
            continue;
        /* No further than the buffer, whatever cmsg_len says (the kernel refuses such a
         * message; it must not make us read past it). */
        const char *end = (const char *)msg->msg_control + msg->msg_controllen;
        size_t room = (size_t)(end - (const char *)CMSG_DATA(*c));
        size_t n = ((*c)->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        if (n > room / sizeof(int))
            n = room / sizeof(int);
        if (*i < n) {
            memcpy(fd, CMSG_DATA(*c) + *i * sizeof(int), sizeof(*fd));
            (*i)++;
            return true;
        }
    }
    return false;
}

/* The identity of the eventfd behind fd, the same in sender and receiver. Every eventfd
 * shares one anonymous inode, so (st_dev, st_ino) tells none apart: with two passes in
 * flight a receiver took the other one's socket (node's cluster under `ab -c 20`: a request
 * answered on no connection). Where the kernel shows the eventfd's own id (Linux 6.0 on,
 * "eventfd-id:" in /proc/self/fdinfo) that id stands in for the inode, under a device
 * number no file has; else (dev, ino) as before. */
#define EFD_ID_DEV UINT64_MAX
static bool eventfd_id(int fd, uint64_t *id)
{
    char path[48], buf[512];
    snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", fd);
    /* Through procfs's root opened at attach: a process in a chroot without /proc (Dovecot's
     * login processes pass each connection to the post-login process) recorded only the
     * inode, which every eventfd shares, and with two in flight a receiver took the other's
     * connection (a client was answered by another user's session). */
    int f = C.proc_fd >= 0 ? openat(C.proc_fd, path + 6, O_RDONLY | O_CLOEXEC) : -1;
    if (f < 0)
        f = open(path, O_RDONLY | O_CLOEXEC);
    if (f < 0)
        return false;
    ssize_t n = C.sys.read(f, buf, sizeof(buf) - 1);
    C.sys.close(f);
    if (n <= 0)
        return false;
    buf[n] = '\0';
    static const char key[] = "\neventfd-id:";
    const char *p = strstr(buf, key);
    if (!p)
        return false;
    p += sizeof(key) - 1;
    char *end;
    unsigned long long v = strtoull(p, &end, 10);
    if (end == p)
        return false;
    *id = v;
    return true;
}

static bool stat_id(int fd, uint64_t *dev, uint64_t *ino)
{
    struct stat st;
    if (fstat(fd, &st) < 0)
        return false;
    *dev = st.st_dev;
    *ino = st.st_ino;
    return true;
}

/* What the sender records: the eventfd's id where the kernel shows it, else (dev, ino). */
static bool file_id(int fd, uint64_t *dev, uint64_t *ino)
{
    uint64_t id;
    if (!eventfd_id(fd, &id))
        return stat_id(fd, dev, ino);
    *dev = EFD_ID_DEV;
    *ino = id;
    return true;
}

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Messages whose fds nobody adopted within SHM_PASS_TTL_S (the receiver is not preloaded,
 * uses another region, or dropped the message): their references go, so the connections
 * do not stay open for ever. */
static void pass_reclaim(struct shm_hdr *h, uint64_t now)
{
    for (uint32_t k = 0; k < SHM_NPASS; k++) {
        struct shm_pass *ps = &h->pass[k];
        if (SHIM_LOAD(&ps->state) != SHM_PASS_INFLIGHT ||
            now - ps->sent_ns < (uint64_t)SHM_PASS_TTL_S * 1000000000u)
            continue;
        uint32_t st = SHM_PASS_INFLIGHT;
        if (!atomic_compare_exchange_strong(&ps->state, &st, SHM_PASS_CLAIMING))
            continue;
        shim__unref(ps->slot, ps->gen);
        SHIM_STORE(&ps->state, SHM_PASS_FREE);
    }
}

int shim_pass_send(const struct msghdr *umsg, uint32_t *taken, int max)
{
    /* The application's message, read through copies that fault safely: a bad pointer is
     * the kernel's to refuse (EFAULT), not ours to crash on. Rights beyond the first 4 KiB
     * of control data (Linux takes at most 253 fds a message) are not looked at. */
    struct msghdr m;
    union {
        struct cmsghdr align;
        char b[4096];
    } cb;
    if (!SHIM_LOAD(&C.attached) || !umsg || shim__uget(&m, umsg, sizeof(m)) < 0 || !m.msg_control ||
        m.msg_controllen < sizeof(struct cmsghdr))
        return 0;
    if (m.msg_controllen > sizeof(cb))
        m.msg_controllen = sizeof(cb);
    if (shim__uget(cb.b, m.msg_control, m.msg_controllen) < 0)
        return 0;
    m.msg_control = cb.b;
    const struct msghdr *msg = &m;
    struct shm_hdr *h = C.base;
    int n = 0;
    bool reclaimed = false;
    struct cmsghdr *c = CMSG_FIRSTHDR((struct msghdr *)msg);
    size_t i = 0;
    for (int fd; next_right(msg, &c, &i, &fd);) {
        shim__lock();
        struct shim_fd *e = shim_fdtab_get(&shim_fds, fd);
        bool ours = e && SHIM_RLX(&e->kind) == SHIM_FD_SOCK;
        uint32_t slot = ours ? e->slot : 0, gen = ours ? e->gen : 0;
        shim__unlock();
        uint64_t dev, ino;
        if (!ours || !shm_sock_valid(C.base, slot, gen) || !file_id(fd, &dev, &ino))
            continue;
        if (n == max)
            break;
        /* The stack must have the eventfd before the sender may close its number. */
        shim__attach_wait(slot);
        uint64_t now = mono_ns();
        if (!reclaimed) {
            pass_reclaim(h, now);
            reclaimed = true;
        }
        uint32_t k = 0;
        for (; k < SHM_NPASS; k++) {
            uint32_t fr = SHM_PASS_FREE;
            if (atomic_compare_exchange_strong(&h->pass[k].state, &fr, SHM_PASS_FILLING))
                break;
        }
        if (k == SHM_NPASS) {
            shim_warn_once("pass",
                           "more than %d ustack sockets in flight between processes: "
                           "the receiver gets a plain eventfd",
                           SHM_NPASS);
            continue;
        }
        struct shm_pass *ps = &h->pass[k];
        ps->slot = slot;
        ps->gen = gen;
        ps->nonblock = C.files[slot].gen == gen && C.files[slot].nonblock;
        ps->dev = dev;
        ps->ino = ino;
        ps->sent_ns = now;
        atomic_fetch_add(&shm_sock(C.base, slot)->refs, 1); /* the message's own */
        SHIM_STORE(&ps->state, SHM_PASS_INFLIGHT);
        taken[n++] = k;
    }
    return n;
}

void shim_pass_undo(const uint32_t *taken, int n)
{
    struct shm_hdr *h = C.base;
    for (int j = 0; j < n; j++) {
        struct shm_pass *ps = &h->pass[taken[j]];
        uint32_t st = SHM_PASS_INFLIGHT;
        if (!atomic_compare_exchange_strong(&ps->state, &st, SHM_PASS_CLAIMING))
            continue; /* a receiver has it after all */
        /* The sender's fd still holds the socket: the count cannot reach zero here. */
        shim__unref(ps->slot, ps->gen);
        SHIM_STORE(&ps->state, SHM_PASS_FREE);
    }
}

int shim_pass_recv(const struct msghdr *msg)
{
    if (!SHIM_LOAD(&C.attached) || !msg || !msg->msg_control ||
        msg->msg_controllen < sizeof(struct cmsghdr))
        return 0;
    struct shm_hdr *h = C.base;
    int n = 0;
    struct cmsghdr *c = CMSG_FIRSTHDR((struct msghdr *)msg);
    size_t i = 0;
    for (int fd; next_right(msg, &c, &i, &fd);) {
        /* Either key: a sender that could not read its fdinfo (out of fds) recorded the
         * inode, and then the first entry with it is taken, as before eventfd-id. The
         * fdinfo is read only once an entry in flight asks for the id. */
        uint64_t dev, ino, id = 0;
        if (!stat_id(fd, &dev, &ino))
            continue;
        int has_id = -1; /* not read yet */
        for (uint32_t k = 0; k < SHM_NPASS; k++) {
            struct shm_pass *ps = &h->pass[k];
            if (SHIM_LOAD(&ps->state) != SHM_PASS_INFLIGHT)
                continue;
            if (ps->dev == EFD_ID_DEV && has_id < 0)
                has_id = eventfd_id(fd, &id);
            bool same = ps->dev == EFD_ID_DEV ? has_id > 0 && ps->ino == id
                                              : ps->dev == dev && ps->ino == ino;
            if (!same)
                continue;
            uint32_t st = SHM_PASS_INFLIGHT;
            if (!atomic_compare_exchange_strong(&ps->state, &st, SHM_PASS_CLAIMING))
                continue;
            uint32_t slot = ps->slot, gen = ps->gen;
            static const int no_lo[2] = {-1, -1};
            if (slot < C.nsocks && adopt_fd(fd, slot, gen, ps->nonblock, no_lo)) {
                /* The message's reference becomes this process's. */
                if (C.pidx != SHM_NONE)
                    atomic_fetch_add(&C.row[slot], 1);
                n++;
            } else {
                shim__unref(slot, gen); /* the message's reference: the socket may close */
            }
            SHIM_STORE(&ps->state, SHM_PASS_FREE);
            break;
        }
    }
    return n;
}

/* ---- hand-over to the kernel ---------------------------------------------------------- */

int shim__handover(struct shim_sk *k)
{
    struct shim_file *f = k->f;
    int type = shim__dgram(k) ? SOCK_DGRAM : SOCK_STREAM;
    int dom = shim__domain(k);
    int ks = C.sys.socket(dom, type | SOCK_CLOEXEC | (f->nonblock ? SOCK_NONBLOCK : 0), 0);
    if (ks < 0)
        return -errno;
    /* What the application set so far, as far as the kernel takes it. */
    for (unsigned i = 0; i < f->nopts; i++)
        C.sys.setsockopt(ks, f->opts[i].level, f->opts[i].name, f->opts[i].val, f->opts[i].len);
    if (dom == AF_INET6) {
        int only = (SHIM_LOAD(&k->s->app_flags) & SHM_A_V6ONLY) != 0;
        C.sys.setsockopt(ks, IPPROTO_IPV6, IPV6_V6ONLY, &only, sizeof(only));
    }
    if (f->bound && f->bind_a.port) {
        /* The port, on the kernel's wildcard for ustack's own addresses. */
        struct shm_addr b = f->bind_a;
        if ((b.family == SHM_AF_INET && b.ip == C.ip) ||
            (b.family == SHM_AF_INET6 && !memcmp(b.ip6, C.ip6, 16)) || f->any6)
            b = (struct shm_addr){.family = f->any6 ? SHM_AF_INET6 : b.family, .port = b.port};
        struct sockaddr_storage ss;
        socklen_t n = shim_addr_out(dom, &b, C.ifindex, &ss);
        C.sys.bind(ks, (struct sockaddr *)&ss, n);
    }
    struct shim_epreg regs[8];
    int nreg = shim__epoll_detach(k->fd, k->slot, k->gen, regs, 8);
    shim__lock();
    /* The stack fetches the eventfd by its number (SOCKET goes without a reply): the number
     * must not become the kernel socket before it has, or it finds that there instead (an
     * application connecting to 127.0.0.1 right after socket() made shm_efd_fail count). */
    if (!shim__attach_cancel(k->slot, k->gen, k->pinned ? 1 : 0)) {
        shim__unlock();
        shim__attach_wait(k->slot);
        shim__lock();
    }
    struct shim_fd *e = shim_fdtab_get(&shim_fds, k->fd);
    bool cloexec = e && e->cloexec;
    /* Other threads' calls on the number find it gone from here on (or finish their use of
     * the eventfd first); the caller's own pin keeps the socket until it returns. */
    shim_fdtab_clear(&shim_fds, k->fd);
    shim__efd_quiesce(k->slot);
    if (C.sys.dup3(ks, k->fd, cloexec ? O_CLOEXEC : 0) < 0) {
        int rc = -errno;
        shim_fdtab_set(&shim_fds, k->fd, SHIM_FD_SOCK, k->slot, k->gen, cloexec, NULL);
        shim__unlock();
        C.sys.close(ks);
        return rc;
    }
    shim__release(k->slot, k->gen);
    shim__unlock();
    C.sys.close(ks);
    shim__epoll_attach_kernel(k->fd, regs, nreg);
    return 0;
}

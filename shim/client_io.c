/*
 * client_io.c - moving bytes: send/recv families and sendfile over the per-socket rings of
 * docs/shm.md "Data and readiness", with the kernel's blocking, timeout, signal and errno
 * behaviour (send(2), recv(2), tcp(7)).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "client_int.h"
#include "ucopy.h"

#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#define C shim__c

/* A position in an iovec array. */
struct iov_cur {
    const struct iovec *iov;
    size_t n, i, off;
    bool fault; /* a copy stopped at a bad application page (EFAULT) */
};

static int iov_total(const struct iovec *iov, size_t n, size_t *total)
{
    if (n > IOV_MAX)
        return -EMSGSIZE;
    if (n && shim__badp(iov))
        return -EFAULT;
    size_t t = 0;
    for (size_t i = 0; i < n; i++) {
        struct iovec v; /* read through ucopy: the array itself may be a bad pointer */
        if (shim__uget(&v, &iov[i], sizeof(v)) < 0)
            return -EFAULT;
        if ((ssize_t)v.iov_len < 0)
            return -EINVAL;
        if (v.iov_len && shim__badp(v.iov_base))
            return -EFAULT;
        /* Linux caps one call at MAX_RW_COUNT; SSIZE_MAX is enough to stay well-defined. */
        t = v.iov_len > (size_t)SSIZE_MAX - t ? (size_t)SSIZE_MAX : t + v.iov_len;
    }
    *total = t;
    return 0;
}

/* Copies up to len bytes between the cursor and buf (to_iov: buf -> iovecs); stops short,
 * with c->fault set, at an application page that faults (ucopy.h). */
static size_t iov_copy(struct iov_cur *c, uint8_t *buf, size_t len, bool to_iov)
{
    size_t done = 0;
    while (done < len && c->i < c->n && !c->fault) {
        const struct iovec *v = &c->iov[c->i];
        size_t k = v->iov_len - c->off, got;
        if (k > len - done)
            k = len - done;
        if (to_iov)
            got = shim_ucopy((uint8_t *)v->iov_base + c->off, buf + done, k);
        else
            got = shim_ucopy(buf + done, (const uint8_t *)v->iov_base + c->off, k);
        done += got;
        c->off += got;
        if (got < k) {
            c->fault = true;
            break;
        }
        if (c->off == v->iov_len) {
            c->i++;
            c->off = 0;
        }
    }
    return done;
}

static ssize_t epipe(int flags)
{
    /* Linux sends SIGPIPE to the calling thread unless MSG_NOSIGNAL. */
    if (!(flags & MSG_NOSIGNAL))
        raise(SIGPIPE);
    return -EPIPE;
}

/* Why the socket cannot take data now, or 0 if it can (or will, once connected). */
static ssize_t send_blocked(struct shim_sk *k, int flags, bool *connected)
{
    struct shm_sock *s = k->s;
    if (!shm_sock_valid(C.base, k->slot, k->gen))
        return -ECONNRESET;
    uint32_t fl = SHIM_LOAD(&s->flags), af = SHIM_LOAD(&s->app_flags);
    if (SHIM_RLX(&s->so_error)) {
        int e = shim__take_error(s);
        if (e == EPIPE)
            return epipe(flags); /* Linux's sk_stream_error: a pending EPIPE signals too */
        if (e > 0)
            return -e;
    }
    if ((af & SHM_A_WR_SHUT) || (fl & (SHM_F_WR_SHUT | SHM_F_RESET)) || SHIM_RLX(&C.dead))
        return epipe(flags); /* a dead stack: as after a reset whose error was taken */
    *connected = fl & SHM_F_CONNECTED;
    if (*connected) {
        if (k->f->cstate == SHIM_CS_CONNECTING)
            k->f->cstate = SHIM_CS_CONNECTED;
        return 0;
    }
    /* tcp_sendmsg waits for a connect in progress and fails a socket never connected. */
    if (!(fl & SHM_F_CONNECTING) && k->f->cstate != SHIM_CS_CONNECTING)
        return epipe(flags);
    return 0;
}

/* The send loop; fill() produces up to n bytes at p from the source, returning the count,
 * 0 at the source's end, or -errno. */
typedef ssize_t (*fill_fn)(void *ctx, uint8_t *p, size_t n);

static ssize_t send_loop(struct shim_sk *k, size_t total, int flags, fill_fn fill, void *ctx)
{
    struct shm_sock *s = k->s;
    uint8_t *data = shim__tx_data(k->slot);
    if (!data)
        return -ENOMEM;
    bool nb = k->f->nonblock || (flags & MSG_DONTWAIT);
    int64_t deadline = 0;
    size_t sent = 0;
    for (;;) {
        uint32_t seq0 = SHIM_LOAD(&s->seq);
        bool connected = false;
        ssize_t why = send_blocked(k, sent ? flags | MSG_NOSIGNAL : flags, &connected);
        if (why < 0)
            return sent ? (ssize_t)sent : why;
        if (connected) {
            if (total == 0)
                return 0;
            uint8_t *p[2];
            uint32_t n[2];
            shim__spin_lock(&s->wlock);
            int np = shm_ring_wspan(&s->tx, data, C.ring, p, n);
            size_t copied = 0;
            bool end = false;
            for (int i = 0; i < np && sent + copied < total; i++) {
                size_t want = total - sent - copied;
                ssize_t got = fill(ctx, p[i], n[i] < want ? n[i] : want);
                if (got < 0) {
                    if (copied)
                        break;
                    shim__spin_unlock(&s->wlock);
                    return sent ? (ssize_t)sent : got;
                }
                copied += (size_t)got;
                if ((size_t)got < (n[i] < want ? n[i] : want)) {
                    end = true; /* sendfile: the file ended */
                    break;
                }
            }
            if (copied)
                shm_ring_produce(&s->tx, (uint32_t)copied);
            shim__spin_unlock(&s->wlock);
            if (copied) {
                sent += copied;
                shim__kick(k);
            }
            if (sent == total || end)
                return (ssize_t)sent;
            if (copied)
                continue;
            /* The ring is full: new space will be an EPOLLOUT edge (Linux's SOCK_NOSPACE).
             * Dekker pair with the stack, which frees space and then reads the flag. */
            if (!SHIM_RLX(&s->nospace)) {
                atomic_store(&s->nospace, 1);
                if (shm_ring_space(&s->tx, C.ring))
                    continue;
            }
        }
        if (nb)
            return sent ? (ssize_t)sent : -EAGAIN;
        if (!deadline)
            deadline = shim__deadline(k->f->sndtimeo);
        int rc = shim__sleep(s, seq0, deadline);
        if (rc == -ETIMEDOUT)
            return sent ? (ssize_t)sent : -EAGAIN;
        if (rc < 0)
            return sent ? (ssize_t)sent : rc;
    }
}

static ssize_t fill_iov(void *ctx, uint8_t *p, size_t n)
{
    struct iov_cur *c = ctx;
    size_t got = iov_copy(c, p, n, false);
    /* Like tcp_sendmsg: a fault ends the call, with what was copied before it if any. */
    return !got && c->fault ? -EFAULT : (ssize_t)got;
}

static ssize_t send_iov(int fd, const struct iovec *iov, size_t niov, int flags)
{
    SHIM_SK(k);
    int rc = shim__sk(fd, &k);
    if (rc < 0)
        return rc;
    size_t total;
    if ((rc = iov_total(iov, niov, &total)) < 0)
        return rc;
    if (shim__dgram(&k)) {
        struct msghdr m = {.msg_iov = (struct iovec *)iov, .msg_iovlen = niov};
        return shim__dg_sendmsg(&k, &m, flags);
    }
    if (flags & MSG_FASTOPEN)
        return -EOPNOTSUPP; /* as Linux with client TCP Fast Open off */
    if (flags & MSG_OOB)
        shim_warn_once("oob", "MSG_OOB (urgent data) is not supported; sent as normal data");
    struct iov_cur cur = {iov, niov, 0, 0, false};
    return send_loop(&k, total, flags, fill_iov, &cur);
}

ssize_t shim_send(int fd, const void *buf, size_t len, int flags)
{
    if (len && shim__badp(buf))
        return -EFAULT;
    struct iovec v = {(void *)buf, len};
    return send_iov(fd, &v, 1, flags);
}

ssize_t shim_sendmsg(int fd, const struct msghdr *m, int flags)
{
    struct msghdr h;
    if (shim__uget(&h, m, sizeof(h)) < 0)
        return -EFAULT;
    SHIM_SK(k);
    if (shim__sk(fd, &k) == 0 && shim__dgram(&k))
        return shim__dg_sendmsg(&k, &h, flags);
    /* A destination address on a connected stream socket is ignored, as by Linux. */
    return send_iov(fd, h.msg_iov, h.msg_iovlen, flags);
}

int shim_sendmmsg(int fd, struct mmsghdr *v, unsigned n, int flags)
{
    if (shim__badp(v) && n)
        return -EFAULT;
    if (n > 1024)
        n = 1024; /* UIO_MAXIOV */
    unsigned i;
    for (i = 0; i < n; i++) {
        ssize_t r = shim_sendmsg(fd, &v[i].msg_hdr, flags);
        if (r < 0)
            return i ? (int)i : (int)r;
        v[i].msg_len = (unsigned)r;
    }
    return (int)i;
}

/* ---- receive ------------------------------------------------------------------------- */

static ssize_t recv_iov(int fd, const struct iovec *iov, size_t niov, int flags)
{
    SHIM_SK(k);
    int rc = shim__sk(fd, &k);
    if (rc < 0)
        return rc;
    size_t total;
    if ((rc = iov_total(iov, niov, &total)) < 0)
        return rc;
    if (shim__dgram(&k)) {
        struct msghdr m = {.msg_iov = (struct iovec *)iov, .msg_iovlen = niov};
        return shim__dg_recvmsg(&k, &m, flags);
    }
    if (flags & MSG_OOB)
        return -EINVAL; /* no urgent data, ever */
    if (flags & MSG_ERRQUEUE)
        return -EAGAIN;
    struct shm_sock *s = k.s;
    if (!shm_sock_valid(C.base, k.slot, k.gen))
        return -ECONNRESET;
    if (k.f->cstate == SHIM_CS_LISTEN || (SHIM_LOAD(&s->flags) & SHM_F_LISTENING))
        return -ENOTCONN;
    /* A zero-length recv waits for data like any other (Linux's tcp_recvmsg): it returns 0
     * once data is queued, or at EOF. (read() of 0 bytes returns at once: preload.) */
    bool peek = flags & MSG_PEEK, trunc = flags & MSG_TRUNC;
    bool waitall = (flags & MSG_WAITALL) && !peek;
    bool nb = k.f->nonblock || (flags & MSG_DONTWAIT);
    const uint8_t *data = shim__rx_data(k.slot);
    if (!data)
        return -ENOMEM;
    struct iov_cur cur = {iov, niov, 0, 0, false};
    int64_t deadline = 0;
    size_t got = 0;
    for (;;) {
        uint32_t seq0 = SHIM_LOAD(&s->seq);
        const uint8_t *p[2];
        uint32_t n[2];
        shim__spin_lock(&s->rlock);
        int np = shm_ring_rspan(&s->rx, data, C.ring, p, n);
        if (!np)
            shim__spin_unlock(&s->rlock);
        if (np) {
            size_t took = 0;
            for (int i = 0; i < np && got + took < total; i++) {
                size_t want = total - got - took;
                size_t c = n[i] < want ? n[i] : want;
                if (!trunc)
                    c = iov_copy(&cur, (uint8_t *)p[i], c, true);
                took += c;
                if (cur.fault)
                    break;
            }
            if (!peek)
                shm_ring_skip(&s->rx, C.ring, (uint32_t)took);
            shim__spin_unlock(&s->rlock);
            if (!peek) {
                /* Dekker pair with the stack, which sets RX_BLOCKED and then re-checks the
                 * ring's space: one of us sees the other. */
                atomic_thread_fence(memory_order_seq_cst);
                if (SHIM_RLX(&s->flags) & SHM_F_RX_BLOCKED)
                    shim__kick(&k);
                else if (SHIM_RLX(&s->sigb) && !shm_ring_used(&s->rx, C.ring) &&
                         shim__efd_hold(&k)) {
                    shim__settle(k.fd, k.slot);
                    shim__efd_drop(&k);
                }
            }
            got += took;
            if (cur.fault) /* tcp_recvmsg: what was copied, else EFAULT; the rest stays */
                return got ? (ssize_t)got : -EFAULT;
            if (got == total || !waitall)
                return (ssize_t)got;
            continue;
        }
        uint32_t fl = SHIM_LOAD(&s->flags);
        if (SHIM_RLX(&s->so_error)) {
            if (got)
                return (ssize_t)got;
            int e = shim__take_error(s);
            if (e > 0)
                return -e;
        }
        if ((fl & (SHM_F_EOF | SHM_F_RESET | SHM_F_RD_SHUT)) ||
            (SHIM_LOAD(&s->app_flags) & SHM_A_RD_SHUT))
            return (ssize_t)got;
        if (!(fl & (SHM_F_CONNECTED | SHM_F_CONNECTING)) && k.f->cstate != SHIM_CS_CONNECTING)
            return got ? (ssize_t)got : -ENOTCONN;
        if (!shm_sock_valid(C.base, k.slot, k.gen) || SHIM_RLX(&C.dead))
            return got ? (ssize_t)got : -ECONNRESET;
        if (nb)
            return got ? (ssize_t)got : -EAGAIN;
        if (!deadline)
            deadline = shim__deadline(k.f->rcvtimeo);
        rc = shim__sleep(s, seq0, deadline);
        if (rc == -ETIMEDOUT)
            return got ? (ssize_t)got : -EAGAIN;
        if (rc < 0)
            return got ? (ssize_t)got : rc;
    }
}

ssize_t shim_recv(int fd, void *buf, size_t len, int flags)
{
    if (len && shim__badp(buf))
        return -EFAULT;
    struct iovec v = {buf, len};
    return recv_iov(fd, &v, 1, flags);
}

ssize_t shim_recvmsg(int fd, struct msghdr *m, int flags)
{
    struct msghdr h;
    if (shim__uget(&h, m, sizeof(h)) < 0)
        return -EFAULT;
    SHIM_SK(k);
    if (shim__sk(fd, &k) == 0 && shim__dgram(&k)) {
        ssize_t r = shim__dg_recvmsg(&k, &h, flags);
        if (r >= 0 && shim__uput(m, &h, sizeof(h)) < 0)
            return -EFAULT;
        return r;
    }
    ssize_t r = recv_iov(fd, h.msg_iov, h.msg_iovlen, flags);
    if (r >= 0) {
        /* TCP fills in no address and no control data. */
        h.msg_namelen = 0;
        h.msg_controllen = 0;
        h.msg_flags = 0;
        if (shim__uput(m, &h, sizeof(h)) < 0)
            return -EFAULT;
    }
    return r;
}

ssize_t shim_recvfrom(int fd, void *buf, size_t len, int flags, struct sockaddr *addr,
                      socklen_t *alen)
{
    if (len && shim__badp(buf))
        return -EFAULT;
    SHIM_SK(k);
    int rc = shim__sk(fd, &k);
    if (rc < 0)
        return rc;
    struct iovec v = {buf, len};
    if (!shim__dgram(&k)) {
        ssize_t r = recv_iov(fd, &v, 1, flags);
        if (r >= 0 && addr && alen && shim__uput(alen, &(socklen_t){0}, sizeof(socklen_t)) < 0)
            return -EFAULT; /* TCP reports no source address */
        return r;
    }
    struct msghdr m = {.msg_iov = &v, .msg_iovlen = 1};
    if (addr && alen) {
        socklen_t n;
        if (shim__uget(&n, alen, sizeof(n)) < 0)
            return -EFAULT;
        if ((int)n < 0)
            return -EINVAL;
        m.msg_name = addr;
        m.msg_namelen = n;
    }
    ssize_t r = shim__dg_recvmsg(&k, &m, flags);
    if (r >= 0 && addr && alen && shim__uput(alen, &m.msg_namelen, sizeof(socklen_t)) < 0)
        return -EFAULT;
    return r;
}

ssize_t shim_sendto(int fd, const void *buf, size_t len, int flags, const struct sockaddr *addr,
                    socklen_t alen)
{
    if (len && shim__badp(buf))
        return -EFAULT;
    SHIM_SK(k);
    int rc = shim__sk(fd, &k);
    if (rc < 0)
        return rc;
    struct iovec v = {(void *)buf, len};
    if (!shim__dgram(&k))
        return send_iov(fd, &v, 1, flags);
    struct msghdr m = {
        .msg_iov = &v, .msg_iovlen = 1, .msg_name = (void *)addr, .msg_namelen = alen};
    return shim__dg_sendmsg(&k, &m, flags);
}

/* ---- datagrams (docs/shm.md "Datagrams") ----------------------------------------------- */

bool shim__dg_bcast(uint32_t ip)
{
    if (ip == 0xffffffffu)
        return true;
    /* Our subnet's directed broadcast (/31 and /32 have none). */
    return C.mask != 0xffffffffu && C.mask != 0xfffffffeu && ((ip ^ C.ip) & C.mask) == 0 &&
           (ip & ~C.mask) == ~C.mask;
}

/* The socket's first datagram needs a local port now, so that getsockname() right after
 * sendto() shows it (the record itself is sent asynchronously). */
static int dg_autobind(struct shim_sk *k)
{
    if (k->s->la.port)
        return 0;
    /* An AF_INET6 socket: [::] (IPv4's wildcard on an engine without IPv6, any6). */
    bool six = shim__domain(k) == AF_INET6 && shim__inet6(k);
    int rc = shim__push_v6only(k);
    if (rc < 0)
        return rc;
    struct shm_cmd c;
    shim__cmd_init(&c, k, SHM_OP_BIND);
    c.addr.family = six ? SHM_AF_INET6 : SHM_AF_INET;
    rc = shim__call(k->s->core, &c, NULL);
    if (rc == 0 && shim__domain(k) == AF_INET6 && !six)
        k->f->any6 = 1;
    return rc == -EINVAL ? 0 : rc; /* bound meanwhile (another thread) */
}

ssize_t shim__dg_sendmsg(struct shim_sk *k, const struct msghdr *m, int flags)
{
    struct shm_sock *s = k->s;
    size_t total;
    int rc = iov_total(m->msg_iov, m->msg_iovlen, &total);
    if (rc < 0)
        return rc;
    /* udpv6_sendmsg looks at the address first; an IPv4 one (AF_INET, or v4-mapped) then
     * goes udp_sendmsg's way: size, MSG_OOB, the address, then the socket's state. */
    struct shm_addr a = {.family = SHM_AF_INET};
    bool named = m->msg_name != NULL, six = shim__domain(k) == AF_INET6;
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    if (named && six) {
        socklen_t nl = m->msg_namelen;
        if (nl < offsetof(struct sockaddr, sa_data))
            return -EINVAL;
        if (shim__uget(&ss, m->msg_name, nl < sizeof(ss) ? nl : sizeof(ss)) < 0)
            return -EFAULT;
        bool v6only = SHIM_LOAD(&s->app_flags) & SHM_A_V6ONLY;
        if (ss.ss_family == AF_INET6) {
            if (nl < SHIM_SIN6_LEN_RFC2133)
                return -EINVAL;
            shim_addr_in(&ss, C.ifindex, &a);
            if (a.family == SHM_AF_INET && v6only)
                return -ENETUNREACH;
            if (a.family == SHM_AF_INET6 && a.port == 0)
                return -EINVAL;
        } else if (ss.ss_family == AF_INET) {
            if (v6only)
                return -ENETUNREACH;
            if (nl < sizeof(struct sockaddr_in))
                return -EINVAL;
            shim_addr_in(&ss, C.ifindex, &a);
        } else if (ss.ss_family == AF_UNSPEC) {
            named = false;
        } else {
            return -EINVAL;
        }
    }
    uint32_t max = a.family == SHM_AF_INET6 ? SHM_DGRAM_MAX : 65507u;
    if (total > max || SHM_DGRAM_HLEN + total > C.ring)
        return -EMSGSIZE;
    if (flags & MSG_OOB)
        return -EOPNOTSUPP;
    if (named && !six) {
        struct sockaddr_in a4;
        if (m->msg_namelen < sizeof(a4))
            return -EINVAL;
        if (shim__uget(&a4, m->msg_name, sizeof(a4)) < 0)
            return -EFAULT;
        if (a4.sin_family != AF_INET && a4.sin_family != AF_UNSPEC)
            return -EAFNOSUPPORT;
        a4.sin_family = AF_INET;
        memcpy(&ss, &a4, sizeof(a4));
        shim_addr_in(&ss, C.ifindex, &a);
    }
    if (named) {
        uint32_t ip = a.ip;
        if (a.port == 0)
            return -EINVAL;
        bool kernel = a.family == SHM_AF_INET
                          ? !shim__dg_bcast(ip) && (shim__route_kernel(ip) || (ip >> 28) >= 14)
                          : shim__route_kernel6(k, a.ip6, a.scope) || a.ip6[0] == 0xff ||
                                !memcmp(a.ip6, C.ip6, 16);
        if (a.family == SHM_AF_INET6 && !shim__inet6(k))
            shim__no_inet6_warn();
        if (a.family == SHM_AF_INET && shim__dg_bcast(ip)) {
            if (!shim__opt_on(k->f, SOL_SOCKET, SO_BROADCAST))
                return -EACCES;
        } else if (kernel) {
            /* Loopback, multicast, or off ustack's subnet: a socket that has done nothing
             * on ustack yet becomes the kernel's and sends there (docs/preload.md "UDP");
             * one bound on ustack cannot reach it. */
            if (k->f->bound || s->la.port || k->f->cstate != SHIM_CS_NEW || !C.sys.sendmsg)
                return -ENETUNREACH;
            if ((rc = shim__handover(k)) < 0)
                return rc;
            ssize_t r = C.sys.sendmsg(k->fd, m, flags);
            return r < 0 ? -errno : r;
        }
    } else if (!(SHIM_LOAD(&s->flags) & SHM_F_CONNECTED)) {
        return -EDESTADDRREQ;
    }
    if (!shm_sock_valid(C.base, k->slot, k->gen) || SHIM_RLX(&C.dead))
        return -ENETDOWN;
    if ((rc = dg_autobind(k)) < 0)
        return rc;
    uint8_t *data = shim__tx_data(k->slot);
    if (!data)
        return -ENOMEM;
    bool nb = k->f->nonblock || (flags & MSG_DONTWAIT);
    int64_t deadline = 0;
    for (;;) {
        uint32_t seq0 = SHIM_LOAD(&s->seq);
        if (SHIM_RLX(&s->so_error)) {
            int e = shim__take_error(s);
            if (e > 0)
                return -e;
        }
        if ((SHIM_LOAD(&s->app_flags) & SHM_A_WR_SHUT) || (SHIM_LOAD(&s->flags) & SHM_F_WR_SHUT))
            return -EPIPE; /* no SIGPIPE: that is for stream sockets */
        if (!shm_sock_valid(C.base, k->slot, k->gen) || SHIM_RLX(&C.dead))
            return -ENETDOWN;
        uint32_t need = SHM_DGRAM_HLEN + (uint32_t)total;
        shim__spin_lock(&s->wlock);
        if (shm_ring_space(&s->tx, C.ring) >= need) {
            struct shm_dgram h = {.len = (uint32_t)total};
            if (named)
                h.addr = a;
            shm_ring_put_at(&s->tx, data, C.ring, 0, &h, SHM_DGRAM_HLEN);
            uint8_t *p[2];
            uint32_t n[2];
            int np =
                shm_ring_span_at(&s->tx, data, C.ring, SHM_DGRAM_HLEN, (uint32_t)total, true, p, n);
            struct iov_cur cur = {m->msg_iov, m->msg_iovlen, 0, 0, false};
            for (int i = 0; i < np && !cur.fault; i++)
                iov_copy(&cur, p[i], n[i], false);
            if (!cur.fault)
                shm_ring_produce(&s->tx, need);
            shim__spin_unlock(&s->wlock);
            if (cur.fault)
                return -EFAULT;
            shim__kick(k);
            return (ssize_t)total;
        }
        shim__spin_unlock(&s->wlock);
        if (!SHIM_RLX(&s->nospace)) {
            atomic_store(&s->nospace, 1);
            if (shm_ring_space(&s->tx, C.ring) >= need)
                continue;
        }
        if (nb)
            return -EAGAIN;
        if (!deadline)
            deadline = shim__deadline(k->f->sndtimeo);
        rc = shim__sleep(s, seq0, deadline);
        if (rc == -ETIMEDOUT)
            return -EAGAIN;
        if (rc < 0)
            return rc;
    }
}

int shim__dg_next_len(struct shim_sk *k)
{
    struct shm_sock *s = k->s;
    struct shm_dgram h;
    const uint8_t *data = shim__rx_data(k->slot);
    if (!data)
        return 0;
    shim__spin_lock(&s->rlock);
    uint32_t used = shm_ring_used(&s->rx, C.ring);
    if (used >= SHM_DGRAM_HLEN)
        shm_ring_get_at(&s->rx, data, C.ring, 0, &h, SHM_DGRAM_HLEN);
    shim__spin_unlock(&s->rlock);
    return used >= SHM_DGRAM_HLEN && h.len <= used - SHM_DGRAM_HLEN ? (int)h.len : 0;
}

/* Appends one control message at *used of the application's buffer (room bytes): false
 * (and MSG_CTRUNC) when it does not fit. */
static bool put_cmsg(struct msghdr *m, size_t room, size_t *used, int level, int type,
                     const void *data, size_t len)
{
    union {
        struct cmsghdr c;
        uint8_t b[CMSG_SPACE(sizeof(struct in6_pktinfo))];
    } u;
    size_t sp = CMSG_SPACE(len);
    if (len > sizeof(struct in6_pktinfo) || room - *used < sp) {
        m->msg_flags |= MSG_CTRUNC;
        return false;
    }
    memset(&u, 0, sizeof(u));
    u.c.cmsg_len = CMSG_LEN(len);
    u.c.cmsg_level = level;
    u.c.cmsg_type = type;
    memcpy(CMSG_DATA(&u.c), data, len);
    if (shim__uput((uint8_t *)m->msg_control + *used, &u, sp) < 0) {
        m->msg_flags |= MSG_CTRUNC;
        return false;
    }
    *used += sp;
    return true;
}

/* The control messages a datagram carries: IP_PKTINFO (an IPv4 datagram) and, on an
 * AF_INET6 socket, IPV6_PKTINFO (v4-mapped for an IPv4 one), when asked for, in Linux's
 * order. */
static void dg_control(struct shim_sk *k, struct msghdr *m, const struct shm_dgram *h)
{
    size_t room = m->msg_control ? m->msg_controllen : 0, used = 0;
    m->msg_controllen = 0;
    bool ok = true;
    if (h->addr.family == SHM_AF_INET && shim__opt_on(k->f, IPPROTO_IP, IP_PKTINFO)) {
        struct in_pktinfo pi;
        memset(&pi, 0, sizeof(pi));
        pi.ipi_ifindex = (int)C.ifindex;
        pi.ipi_spec_dst.s_addr = htonl(C.ip);
        pi.ipi_addr.s_addr = htonl(h->dst);
        ok = put_cmsg(m, room, &used, IPPROTO_IP, IP_PKTINFO, &pi, sizeof(pi));
    }
    if (ok && shim__domain(k) == AF_INET6 && shim__opt_on(k->f, IPPROTO_IPV6, IPV6_RECVPKTINFO)) {
        struct in6_pktinfo pi;
        memset(&pi, 0, sizeof(pi));
        pi.ipi6_ifindex = C.ifindex;
        struct shm_addr d = {.family = h->addr.family, .ip = h->dst};
        memcpy(d.ip6, h->dst6, 16);
        /* The engine does not report an IPv6 datagram's destination (stk_udp_meta): one
         * from off the link-local prefix was sent to ustack's global address. */
        static const uint8_t z[16];
        bool ll = h->addr.ip6[0] == 0xfe && (h->addr.ip6[1] & 0xc0) == 0x80;
        if (d.family == SHM_AF_INET6 && !memcmp(d.ip6, z, 16) && !ll)
            memcpy(d.ip6, C.ip6, 16);
        struct sockaddr_storage ss;
        shim_addr_out(AF_INET6, &d, C.ifindex, &ss);
        pi.ipi6_addr = ((struct sockaddr_in6 *)&ss)->sin6_addr;
        put_cmsg(m, room, &used, IPPROTO_IPV6, IPV6_PKTINFO, &pi, sizeof(pi));
    }
    m->msg_controllen = used;
}

ssize_t shim__dg_recvmsg(struct shim_sk *k, struct msghdr *m, int flags)
{
    struct shm_sock *s = k->s;
    size_t total;
    int rc = iov_total(m->msg_iov, m->msg_iovlen, &total);
    if (rc < 0)
        return rc;
    if (flags & MSG_ERRQUEUE)
        return -EAGAIN; /* no IP_RECVERR queue */
    bool peek = flags & MSG_PEEK;
    bool nb = k->f->nonblock || (flags & MSG_DONTWAIT);
    const uint8_t *data = shim__rx_data(k->slot);
    if (!data)
        return -ENOMEM;
    int64_t deadline = 0;
    for (;;) {
        uint32_t seq0 = SHIM_LOAD(&s->seq);
        /* __skb_recv_udp reports a pending error before any queued datagram. */
        if (SHIM_RLX(&s->so_error)) {
            int e = shim__take_error(s);
            if (e > 0)
                return -e;
        }
        shim__spin_lock(&s->rlock);
        uint32_t used = shm_ring_used(&s->rx, C.ring);
        if (used >= SHM_DGRAM_HLEN) {
            struct shm_dgram h;
            shm_ring_get_at(&s->rx, data, C.ring, 0, &h, SHM_DGRAM_HLEN);
            if (h.len > used - SHM_DGRAM_HLEN) { /* the stack never writes that */
                shim__spin_unlock(&s->rlock);
                return -ECONNRESET;
            }
            uint8_t *p[2];
            uint32_t n[2];
            uint32_t want = h.len < total ? h.len : (uint32_t)total;
            int np = shm_ring_span_at(&s->rx, data, C.ring, SHM_DGRAM_HLEN, want, false, p, n);
            struct iov_cur cur = {m->msg_iov, m->msg_iovlen, 0, 0, false};
            for (int i = 0; i < np && !cur.fault; i++)
                iov_copy(&cur, p[i], n[i], true);
            if (!peek)
                shm_ring_skip(&s->rx, C.ring, SHM_DGRAM_HLEN + h.len);
            shim__spin_unlock(&s->rlock);
            if (!peek) {
                atomic_thread_fence(memory_order_seq_cst);
                if (SHIM_RLX(&s->flags) & SHM_F_RX_BLOCKED)
                    shim__kick(k);
                else if (SHIM_RLX(&s->sigb) && !shm_ring_used(&s->rx, C.ring))
                    shim__settle(k->fd, k->slot);
            }
            if (cur.fault)
                return -EFAULT;
            m->msg_flags = h.len > total ? MSG_TRUNC : 0;
            if (m->msg_name) {
                struct sockaddr_storage a;
                socklen_t full = shim_addr_out(shim__domain(k), &h.addr, C.ifindex, &a);
                size_t nl = m->msg_namelen < full ? m->msg_namelen : full;
                if (shim__uput(m->msg_name, &a, nl) < 0)
                    return -EFAULT;
                m->msg_namelen = full;
            } else {
                m->msg_namelen = 0;
            }
            dg_control(k, m, &h);
            return (flags & MSG_TRUNC) ? (ssize_t)h.len : (ssize_t)want;
        }
        shim__spin_unlock(&s->rlock);
        if ((SHIM_LOAD(&s->flags) & SHM_F_RD_SHUT) || (SHIM_LOAD(&s->app_flags) & SHM_A_RD_SHUT)) {
            m->msg_namelen = 0;
            m->msg_controllen = 0;
            m->msg_flags = 0;
            return 0;
        }
        if (!shm_sock_valid(C.base, k->slot, k->gen) || SHIM_RLX(&C.dead))
            return -ENETDOWN;
        if (nb)
            return -EAGAIN;
        if (!deadline)
            deadline = shim__deadline(k->f->rcvtimeo);
        rc = shim__sleep(s, seq0, deadline);
        if (rc == -ETIMEDOUT)
            return -EAGAIN;
        if (rc < 0)
            return rc;
    }
}

int shim_recvmmsg(int fd, struct mmsghdr *v, unsigned n, int flags, struct timespec *timeout)
{
    if (shim__badp(v) && n)
        return -EFAULT;
    SHIM_SK(k);
    bool dgram = shim__sk(fd, &k) == 0 && shim__dgram(&k);
    int64_t deadline = SHIM_FOREVER;
    if (timeout) {
        if (timeout->tv_sec < 0 || timeout->tv_nsec < 0 || timeout->tv_nsec >= SHIM_NS_PER_S)
            return -EINVAL;
        deadline = shim__now() + timeout->tv_sec * SHIM_NS_PER_S + timeout->tv_nsec;
    }
    unsigned i;
    for (i = 0; i < n; i++) {
        ssize_t r = shim_recvmsg(fd, &v[i].msg_hdr, flags & ~MSG_WAITFORONE);
        if (r < 0)
            return i ? (int)i : (int)r;
        v[i].msg_len = (unsigned)r;
        if (flags & MSG_WAITFORONE)
            flags |= MSG_DONTWAIT;
        /* Linux checks the timeout after each message, never while waiting for one. */
        if (timeout && shim__now() >= deadline) {
            i++;
            break;
        }
        /* A stream's EOF ends the batch; a datagram may simply be empty. */
        if (r == 0 && !dgram)
            break;
    }
    return (int)i;
}

/* ---- sendfile ------------------------------------------------------------------------ */

struct file_src {
    int fd;
    off_t *off; /* NULL: the file's own position */
    off_t pos;
};

static ssize_t fill_file(void *ctx, uint8_t *p, size_t n)
{
    struct file_src *f = ctx;
    for (;;) {
        ssize_t r = f->off ? pread(f->fd, p, n, f->pos) : C.sys.read(f->fd, p, n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -errno;
        f->pos += r;
        return r;
    }
}

ssize_t shim_sendfile(int out_fd, int in_fd, off_t *offset, size_t count)
{
    SHIM_SK(k);
    int rc = shim__sk(out_fd, &k);
    if (rc < 0)
        return rc;
    if (offset && *offset < 0)
        return -EINVAL;
    struct file_src src = {in_fd, offset, offset ? *offset : 0};
    if (count > 0x7ffff000)
        count = 0x7ffff000; /* MAX_RW_COUNT, as Linux */
    ssize_t r = send_loop(&k, count, 0, fill_file, &src);
    if (offset && r > 0)
        *offset = src.pos;
    return r;
}

ssize_t shim_sendfile_from(int out_fd, int in_fd, off_t *offset, size_t count)
{
    if (shim_fd_kind(in_fd) == SHIM_FD_SPARE)
        return -EBADF; /* closed for the application (client.c "Spare eventfds") */
    if (offset)
        return -ESPIPE;
    if (count == 0)
        return 0;
    uint8_t buf[16384];
    size_t want = count < sizeof(buf) ? count : sizeof(buf);
    ssize_t n = shim_recv(in_fd, buf, want, MSG_PEEK);
    if (n <= 0)
        return n;
    ssize_t w;
    if (shim_fd_kind(out_fd) == SHIM_FD_SOCK) {
        w = shim_send(out_fd, buf, (size_t)n, 0);
    } else {
        w = C.sys.write(out_fd, buf, (size_t)n);
        if (w < 0)
            w = -errno;
    }
    if (w > 0)
        shim_recv(in_fd, buf, (size_t)w, MSG_DONTWAIT); /* consume what was written */
    return w;
}

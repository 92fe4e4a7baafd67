/*
 * tcp_sock.c - the engine's non-blocking socket API (stk.h), on which the shim builds POSIX
 * sockets. Errors are the kernel's errno values for the same situation, negated.
 */
#include <string.h>

#include "tcp.h"

static struct stk_tcb *sock_get(struct stk_engine *e, int sd)
{
    if (sd < 0 || (uint32_t)sd >= e->cfg.max_socks)
        return NULL;
    return e->tcp->socks[sd];
}

#define GET_OR_EBADF(t, e, sd)                                                                     \
    struct stk_tcb *t = sock_get(e, sd);                                                           \
    if (!t)                                                                                        \
    return -EBADF

static int sd_alloc(struct stk_engine *e, struct stk_tcb *t)
{
    struct stk_tcp *tcp = e->tcp;
    if (tcp->nsd_free == 0)
        return -EMFILE;
    int sd = tcp->sd_free[--tcp->nsd_free];
    tcp->socks[sd] = t;
    t->sd = sd;
    return sd;
}

static void sd_release(struct stk_engine *e, struct stk_tcb *t)
{
    struct stk_tcp *tcp = e->tcp;
    if (t->sd < 0)
        return;
    tcp->socks[t->sd] = NULL;
    tcp->sd_free[tcp->nsd_free++] = t->sd;
    t->sd = -1;
    t->user = NULL;
    t->flags |= TF_ORPHAN;
    if (t->flags & TF_EV_PENDING) {
        for (struct stk_tcb **pp = &tcp->ev_head; *pp; pp = &(*pp)->evnext) {
            if (*pp == t) {
                *pp = t->evnext;
                break;
            }
        }
        t->flags &= ~TF_EV_PENDING;
    }
}

int stk_socket(struct stk_engine *e, void *user)
{
    struct stk_tcb *t = stk__tcb_new(e);
    if (!t)
        return -ENOBUFS;
    int sd = sd_alloc(e, t);
    if (sd < 0) {
        stk__tcb_free(e, t);
        return sd;
    }
    t->user = user;
    return sd;
}

void *stk_user(struct stk_engine *e, int sd)
{
    struct stk_tcb *t = sock_get(e, sd);
    return t ? t->user : NULL;
}

/* A socket's local (or remote) address as the API shows it: an IPv6 connection reports
 * STK_AF_INET6 (scope 0: ustack's one interface), an IPv4 one (also a dual-stack
 * listener's IPv4 child) STK_AF_INET. */
static void stk__tcb_addr(const struct stk_tcb *t, bool local, struct stk_sockaddr *a)
{
    *a = (struct stk_sockaddr){0};
    a->port = local ? t->lport : t->rport;
    if (t->flags & TF_V6) {
        a->family = STK_AF_INET6;
        memcpy(a->ip6, local ? t->lip6 : t->rip6, 16);
    } else {
        a->ip = local ? t->lip : t->rip;
    }
}

static int bind_any_port(struct stk_engine *e, struct stk_tcb *t, uint32_t ip)
{
    uint32_t lo = e->cfg.port_lo, range = e->cfg.port_hi - lo + 1u;
    uint32_t start = e->tcp->port_cursor++;
    for (uint32_t i = 0; i < range; i++) {
        uint16_t port = (uint16_t)(lo + (start + i) % range);
        if (stk__bind_port(e, t, ip, port) == 0)
            return 0;
    }
    return -EADDRINUSE;
}

/* bind(2) to an IPv6 address: the wildcard, or one of ours (ipv6(7)). ustack has one
 * interface, so a link-local address's scope is not checked (0 or any index means it). */
static int bind6(struct stk_engine *e, struct stk_tcb *t, const struct stk_sockaddr *addr)
{
    if (stk__ip6_is_mcast(addr->ip6))
        return -EINVAL; /* inet6_bind: no multicast for stream sockets */
    if (!stk__ip6_is_unspec(addr->ip6) && !stk__ip6_is_ours(e, addr->ip6))
        return -EADDRNOTAVAIL;
    t->flags |= TF_V6;
    memcpy(t->lip6, addr->ip6, 16);
    uint32_t f = stk__fold6(addr->ip6);
    int rc = addr->port == 0 ? bind_any_port(e, t, f) : stk__bind_port(e, t, f, addr->port);
    if (rc) {
        t->flags &= ~TF_V6;
        memset(t->lip6, 0, 16);
    }
    return rc;
}

int stk_bind(struct stk_engine *e, int sd, const struct stk_sockaddr *addr)
{
    GET_OR_EBADF(t, e, sd);
    if (!addr)
        return -EFAULT;
    if (addr->family != STK_AF_INET && addr->family != STK_AF_INET6)
        return -EAFNOSUPPORT;
    if ((t->flags & TF_BOUND) || t->state != STK_TCP_CLOSED)
        return -EINVAL;
    if (addr->family == STK_AF_INET6)
        return bind6(e, t, addr);
    if (addr->ip != 0 && addr->ip != e->cfg.ip)
        return -EADDRNOTAVAIL;
    if (addr->port == 0)
        return bind_any_port(e, t, addr->ip);
    return stk__bind_port(e, t, addr->ip, addr->port);
}

int stk_listen(struct stk_engine *e, int sd, int backlog)
{
    GET_OR_EBADF(t, e, sd);
    /* As Linux: backlog is clamped to [1, 65535]; listen() again just resizes it. */
    uint32_t bl = backlog < 1 ? 1u : backlog > 65535 ? 65535u : (uint32_t)backlog;
    if (t->state == STK_TCP_LISTEN) {
        t->backlog = bl;
        return 0;
    }
    if (t->state != STK_TCP_CLOSED || (t->flags & TF_WAS_SYNCED))
        return -EINVAL;
    if (!(t->flags & TF_BOUND)) {
        int rc = bind_any_port(e, t, 0);
        if (rc)
            return rc;
    }
    /* Two listeners on overlapping addresses and one port (SO_REUSEADDR lets both bind)
     * cannot coexist, unless both are of one SO_REUSEPORT group. */
    for (struct stk_tcb *o = e->tcp->listen_hash[t->lport & 255]; o; o = o->hnext)
        if (o->lport == t->lport && stk__addr_conflict(o, t) &&
            !(t->reuseport && t->reuseport == o->reuseport))
            return -EADDRINUSE;
    t->backlog = bl;
    stk__set_state(e, t, STK_TCP_LISTEN);
    stk__listen_insert(e, t);
    return 0;
}

/* A child is ready for accept() once established, and with TCP_DEFER_ACCEPT once data (or a
 * FIN) arrived or the deferral time passed. */
static bool child_ready(const struct stk_tcb *l, const struct stk_tcb *c, stk_time_t now)
{
    if (!l->defer_accept_s)
        return true;
    return (c->flags & (TF_DATA_SEEN | TF_RCV_FIN)) ||
           now - c->last_recv >= (stk_time_t)l->defer_accept_s * STK_US_PER_S;
}

int stk_accept(struct stk_engine *e, stk_time_t now, int sd, void *user, struct stk_sockaddr *peer)
{
    GET_OR_EBADF(l, e, sd);
    if (l->state != STK_TCP_LISTEN)
        return -EINVAL;
    struct stk_tcb *prev = NULL, *c = l->acc_head;
    while (c && !child_ready(l, c, now)) {
        prev = c;
        c = c->qnext;
    }
    if (!c)
        return -EAGAIN;
    int nsd = sd_alloc(e, c);
    if (nsd < 0)
        return nsd;
    if (prev)
        prev->qnext = c->qnext;
    else
        l->acc_head = c->qnext;
    if (l->acc_tail == c)
        l->acc_tail = prev;
    l->acc_len--;
    c->qnext = NULL;
    c->listener = NULL;
    c->flags |= TF_ACCEPTED;
    c->flags &= ~TF_ORPHAN;
    c->user = user;
    if (peer)
        stk__tcb_addr(c, false, peer);
    stk__notify(e, c);
    stk__flush_events(e);
    return nsd;
}

static int connect6(struct stk_engine *e, stk_time_t now, struct stk_tcb *t,
                    const struct stk_sockaddr *to);
static int connect_start(struct stk_engine *e, stk_time_t now, struct stk_tcb *t);

int stk_connect(struct stk_engine *e, stk_time_t now, int sd, const struct stk_sockaddr *to)
{
    GET_OR_EBADF(t, e, sd);
    if (!to)
        return -EFAULT;
    switch (t->state) {
    case STK_TCP_CLOSED:
        break;
    case STK_TCP_SYN_SENT:
    case STK_TCP_SYN_RECEIVED:
        return -EALREADY;
    default:
        return -EISCONN;
    }
    if (t->flags & TF_WAS_SYNCED)
        return -EISCONN;
    if (to->family == STK_AF_INET6)
        return connect6(e, now, t, to);
    if (to->family != STK_AF_INET)
        return -EAFNOSUPPORT;
    if (t->flags & TF_V6) {
        /* A socket bound to [::] that is not V6ONLY may reach IPv4 peers (through
         * v4-mapped addresses, which the caller turned into IPv4): it becomes IPv4. One
         * bound to an IPv6 address or V6ONLY cannot (Linux: ENETUNREACH). */
        if (t->lip != 0 || (t->flags & TF_V6ONLY))
            return -ENETUNREACH;
    }
    if (to->ip == 0 || to->ip == 0xffffffffu)
        return -EINVAL;
    if (to->port == 0)
        return -ECONNREFUSED;
    if (stk__ip_route(e, to->ip) == 0)
        return -ENETUNREACH;
    if (t->flags & TF_V6) {
        if (!stk__tw_take(e, stk__conn_lookup(e, e->cfg.ip, t->lport, to->ip, to->port)))
            return -EADDRNOTAVAIL;
        t->flags &= ~TF_V6;
        memset(t->lip6, 0, 16);
    }
    t->rip = to->ip;
    t->rport = to->port;
    if (!(t->flags & TF_BOUND)) {
        t->lip = e->cfg.ip;
        int rc = stk__pick_port(e, t);
        if (rc)
            return rc;
        rc = stk__bind_port(e, t, t->lip, t->lport);
        if (rc)
            return rc;
    } else {
        if (t->lip == 0)
            t->lip = e->cfg.ip;
        if (!stk__tw_take(e, stk__conn_lookup(e, t->lip, t->lport, t->rip, t->rport)))
            return -EADDRNOTAVAIL;
    }
    return connect_start(e, now, t);
}

/* connect(2) to an IPv6 peer. The socket is unbound or bound to an IPv6 address; the
 * source is the bound address or the one stk__ip6_select_src picks for the destination. */
static int connect6(struct stk_engine *e, stk_time_t now, struct stk_tcb *t,
                    const struct stk_sockaddr *to)
{
    if ((t->flags & TF_BOUND) && !(t->flags & TF_V6))
        return -EAFNOSUPPORT; /* an IPv4 socket */
    if (!stk__ip6_enabled(e))
        return -ENETUNREACH;
    if (stk__ip6_is_unspec(to->ip6))
        return -EINVAL;
    if (stk__ip6_is_mcast(to->ip6))
        return -ENETUNREACH; /* tcp_v6_connect */
    if (to->port == 0)
        return -ECONNREFUSED;
    uint8_t nh[16];
    if (stk__ip6_route(e, to->ip6, nh) != 0)
        return -ENETUNREACH;
    uint8_t src[16];
    if ((t->flags & TF_BOUND) && t->lip != 0)
        memcpy(src, t->lip6, 16);
    else
        stk__ip6_select_src(e, to->ip6, src);
    if (t->flags & TF_BOUND) {
        if (!stk__tw_take(e, stk__conn_lookup6(e, src, t->lport, to->ip6, to->port)))
            return -EADDRNOTAVAIL;
        memcpy(t->lip6, src, 16);
        t->lip = stk__fold6(src);
        memcpy(t->rip6, to->ip6, 16);
        t->rip = stk__fold6(to->ip6);
        t->rport = to->port;
    } else {
        t->flags |= TF_V6;
        memcpy(t->lip6, src, 16);
        t->lip = stk__fold6(src);
        memcpy(t->rip6, to->ip6, 16);
        t->rip = stk__fold6(to->ip6);
        t->rport = to->port;
        int rc = stk__pick_port(e, t);
        if (rc == 0)
            rc = stk__bind_port(e, t, t->lip, t->lport);
        if (rc) {
            t->flags &= ~TF_V6;
            t->lip = t->rip = 0;
            t->rport = t->lport = 0;
            memset(t->lip6, 0, 16);
            memset(t->rip6, 0, 16);
            return rc;
        }
    }
    return connect_start(e, now, t);
}

/* The handshake's first step, once the 4-tuple is fixed and bound. */
static int connect_start(struct stk_engine *e, stk_time_t now, struct stk_tcb *t)
{
    t->so_error = 0;
    t->soft_error = 0;
    t->pmtu = 0;
    t->iss = stk__isn(e, t, now);
    t->ts_offset = stk__ts_offset(e, t);
    t->snd_una = t->iss;
    t->snd_max = t->iss;
    t->snd_buf_seq = t->iss + 1;
    t->rcv_ws = 0;
    if (!e->cfg.no_ws)
        while (t->rcv_ws < STK_TCP_MAX_WS && (stk__rcvbuf_ceiling(e, t) >> t->rcv_ws) > 65535)
            t->rcv_ws++;
    t->rcv_mss = (uint16_t)(e->cfg.mtu - stk__tcp_nethlen(t));
    t->rtt_start = now;
    stk__set_state(e, t, STK_TCP_SYN_SENT);
    stk__conn_insert(e, t);
    e->ctr.tcp_active_opens++;
    stk__send_syn(e, t, now);
    t->t_rexmt = now + t->rto_us;
    stk__timer_update(e, t);
    return -EINPROGRESS;
}

/* A pending error is reported once, by the next call that can report it (as SO_ERROR). */
static int take_error(struct stk_tcb *t)
{
    int err = t->so_error;
    t->so_error = 0;
    return -err;
}

ssize_t stk_send(struct stk_engine *e, stk_time_t now, int sd, const void *buf, size_t len,
                 uint32_t flags)
{
    GET_OR_EBADF(t, e, sd);
    if (t->so_error)
        return take_error(t);
    switch (t->state) {
    case STK_TCP_ESTABLISHED:
    case STK_TCP_CLOSE_WAIT:
        break;
    case STK_TCP_SYN_SENT:
    case STK_TCP_SYN_RECEIVED:
        return -EAGAIN; /* the shim waits for the handshake, as the kernel does */
    case STK_TCP_LISTEN:
        return -ENOTCONN;
    case STK_TCP_CLOSED:
        return (t->flags & TF_WAS_SYNCED) ? -EPIPE : -ENOTCONN;
    default:
        return -EPIPE;
    }
    if (t->flags & TF_FIN_QUEUED)
        return -EPIPE;
    if (len && !buf)
        return -EFAULT;
    uint32_t room = stk__ring_free(&t->sndbuf);
    if (len > room)
        t->snd_nospace = true; /* the application wanted more room (send autotuning) */
    if (room == 0)
        return -EAGAIN;
    uint32_t n = (uint32_t)stk__min64(len, room);
    if (n && stk__ring_mem(e, &t->sndbuf))
        return -ENOMEM;
    stk__ring_write_at(&t->sndbuf, 0, buf, n);
    t->sndbuf.head += n;
    if (flags & STK_MSG_MORE)
        t->flags |= TF_MORE;
    else
        t->flags &= ~TF_MORE;
    if (t->snd_una == t->snd_max && now - t->last_send > t->rto_us)
        stk__cc_on_idle(&t->cc, now); /* RFC 5681 4.1: restart after idle */
    stk__tcp_output(e, t, now);
    stk__flush_events(e);
    return (ssize_t)n;
}

static bool read_side_done(const struct stk_tcb *t)
{
    if (t->flags & TF_SHUT_RD)
        return true;
    return (t->flags & TF_RCV_FIN) && t->rcv_nxt == t->rcv_fin_seq + 1;
}

/* The window may have grown enough to be worth announcing (the receiver half of SWS
 * avoidance, RFC 1122 4.2.3.3). At once when what the peer may still send is under two full
 * segments, or when the engine cannot see the application (no cfg.app_idle).
 *
 * Otherwise the peer is not held back by our window: what it sends of the window left draws
 * our ACKs, which carry the new edge. So the update is owed (t->owed) and rides on the next
 * segment we send, typically a request's reply. With a connection per request, the pure
 * ACK that each first read used to draw (the window growing past the SYN's unscaled
 * 64 KiB) was one frame in eight. A peer may still be waiting for an ACK, though: one
 * whose Nagle holds its next small write until its first is acknowledged (Linux's
 * quick ACKs at a connection's start spare it that wait). So the engine looks now and
 * then (STK_OWED_FAST_US, STK_OWED_CHECK_US) at the application (cfg.app_idle): the ACK
 * goes when it waits to read, or has taken everything and sent nothing at two looks in a
 * row, or at the delayed-ACK time (stk__ack_owe, owed_look in tcp_conn.c). */
static void window_update(struct stk_engine *e, struct stk_tcb *t, stk_time_t now)
{
    if (!stk__state_can_recv(t->state))
        return;
    uint32_t cur = stk__seq_gt(t->rcv_adv, t->rcv_nxt) ? t->rcv_adv - t->rcv_nxt : 0;
    uint32_t win = stk__rcv_window(t);
    if (win <= cur || win - cur < stk__min32(t->rcvbuf_size / 2, 2u * t->rcv_mss))
        return;
    if (cur >= 2u * t->rcv_mss && stk__ack_owe(e, t, now))
        return;
    t->flags |= TF_ACK_NOW;
    stk__tcp_output(e, t, now);
}

uint32_t stk__rcvbuf_ceiling(const struct stk_engine *e, const struct stk_tcb *t)
{
    if (t->flags & TF_RCVBUF_LOCK)
        return t->rcvbuf_size;
    return stk__max32(t->rcvbuf_size, e->cfg.rcvbuf_max);
}

/* Receive buffer autotuning (Linux's tcp_rcv_space_adjust, "dynamic right-sizing"): once
 * per round trip, if the application took more than half the buffer in it, the window may
 * be what limits the sender, so the buffer doubles (twice what was taken, a power of two)
 * up to the ceiling. Never shrinks; nothing happens where SO_RCVBUF fixed the size, or
 * without memory (the window then stays as it was). The window scale was chosen for the
 * ceiling at the handshake. */
static void rcvbuf_autotune(struct stk_engine *e, struct stk_tcb *t, uint32_t took, stk_time_t now)
{
    t->rcv_space_copied += took;
    if (!t->rcv_space_time) {
        t->rcv_space_time = now; /* the first measurement starts with the first read */
        return;
    }
    uint32_t rtt = t->srtt_us ? t->srtt_us : e->cfg.rto_min_us;
    if (now - t->rcv_space_time < stk__max32(rtt, 1000))
        return;
    uint32_t copied = t->rcv_space_copied;
    t->rcv_space_copied = 0;
    t->rcv_space_time = now;
    /* No larger than the window field can announce (without window scaling: 64 KiB). */
    uint32_t ceiling = stk__rcvbuf_ceiling(e, t);
    while (ceiling > 4096 && (uint64_t)ceiling > (uint64_t)65535 << t->rcv_ws)
        ceiling >>= 1;
    if (!t->rcvbuf.size || t->rcvbuf.size >= ceiling || copied <= t->rcvbuf.size / 2)
        return;
    uint32_t want = stk__min32(stk__roundup_pow2(stk__min32(copied, ceiling / 2) * 2u), ceiling);
    if (stk__ring_autogrow(e, &t->rcvbuf, want)) {
        t->rcvbuf_size = want;
        e->ctr.tcp_rcvbuf_grown++;
    }
}

int stk_recv_peek(struct stk_engine *e, int sd, struct stk_iov iov[2])
{
    GET_OR_EBADF(t, e, sd);
    uint32_t used = t->rcvbuf.size ? stk__ring_used(&t->rcvbuf) : 0;
    if (used == 0) {
        if (t->so_error)
            return take_error(t);
        if (read_side_done(t))
            return 0;
        if (t->state == STK_TCP_CLOSED || t->state == STK_TCP_LISTEN)
            return (t->flags & TF_WAS_SYNCED) ? 0 : -ENOTCONN;
        return -EAGAIN;
    }
    return stk__ring_iov(&t->rcvbuf, 0, used, iov);
}

int stk_recv_consume(struct stk_engine *e, stk_time_t now, int sd, size_t len)
{
    GET_OR_EBADF(t, e, sd);
    uint32_t used = t->rcvbuf.size ? stk__ring_used(&t->rcvbuf) : 0;
    if (len > used)
        return -EINVAL;
    t->rcvbuf.tail += (uint32_t)len;
    rcvbuf_autotune(e, t, (uint32_t)len, now);
    window_update(e, t, now);
    stk__flush_events(e);
    return 0;
}

ssize_t stk_recv(struct stk_engine *e, stk_time_t now, int sd, void *buf, size_t len,
                 uint32_t flags)
{
    struct stk_iov iov[2];
    int n = stk_recv_peek(e, sd, iov);
    if (n <= 0)
        return n;
    if (len && !buf)
        return -EFAULT;
    size_t got = 0;
    for (int i = 0; i < n && got < len; i++) {
        size_t c = stk__min64(iov[i].len, len - got);
        memcpy((uint8_t *)buf + got, iov[i].base, c);
        got += c;
    }
    if (!(flags & STK_MSG_PEEK))
        stk_recv_consume(e, now, sd, got);
    return (ssize_t)got;
}

int stk_shutdown(struct stk_engine *e, stk_time_t now, int sd, enum stk_shut how)
{
    GET_OR_EBADF(t, e, sd);
    if (how != STK_SHUT_RD && how != STK_SHUT_WR && how != STK_SHUT_RDWR)
        return -EINVAL;
    if (t->state == STK_TCP_LISTEN) {
        /* Linux (inet_shutdown, tcp_disconnect) stops a listener shut for reading and
         * resets its pending connections; the socket keeps its port (it leaves its
         * SO_REUSEPORT group), and listen() again resumes it (HAProxy pauses listeners so
         * during a reload). SHUT_WR alone changes nothing. */
        if (how == STK_SHUT_WR)
            return 0;
        uint32_t bound = t->flags & TF_BOUND;
        t->flags &= ~TF_BOUND; /* stk__tcp_drop leaves the bind list alone */
        stk__tcp_drop(e, t, 0);
        t->flags |= bound;
        stk__flush_events(e);
        return 0;
    }
    if (t->state == STK_TCP_CLOSED || t->state == STK_TCP_SYN_SENT) {
        if (t->state == STK_TCP_SYN_SENT)
            stk__tcp_drop(e, t, 0);
        return (t->flags & TF_WAS_SYNCED) ? 0 : -ENOTCONN;
    }
    if (how != STK_SHUT_WR)
        t->flags |= TF_SHUT_RD;
    if (how != STK_SHUT_RD && !(t->flags & TF_FIN_QUEUED)) {
        t->flags |= TF_FIN_QUEUED;
        t->flags &= ~(TF_CORK | TF_MORE);
        switch (t->state) {
        case STK_TCP_ESTABLISHED:
        case STK_TCP_SYN_RECEIVED:
            stk__set_state(e, t, STK_TCP_FIN_WAIT_1);
            break;
        case STK_TCP_CLOSE_WAIT:
            stk__set_state(e, t, STK_TCP_LAST_ACK);
            break;
        default:
            break;
        }
        stk__tcp_output(e, t, now);
    }
    stk__notify(e, t);
    stk__flush_events(e);
    return 0;
}

int stk_abort(struct stk_engine *e, stk_time_t now, int sd)
{
    GET_OR_EBADF(t, e, sd);
    if (t->state != STK_TCP_LISTEN && t->state != STK_TCP_CLOSED)
        stk__send_rst(e, t, now);
    sd_release(e, t);
    if (t->state == STK_TCP_CLOSED) {
        stk__unbind(e, t);
        stk__tcb_free(e, t);
    } else {
        stk__tcp_drop(e, t, 0);
    }
    stk__flush_events(e);
    return 0;
}

int stk_close(struct stk_engine *e, stk_time_t now, int sd)
{
    GET_OR_EBADF(t, e, sd);
    bool unread = t->rcvbuf.size && stk__ring_used(&t->rcvbuf) > 0;
    switch (t->state) {
    case STK_TCP_CLOSED:
    case STK_TCP_LISTEN:
    case STK_TCP_SYN_SENT:
        sd_release(e, t);
        if (t->state == STK_TCP_CLOSED) {
            stk__unbind(e, t);
            stk__tcb_free(e, t);
        } else {
            stk__tcp_drop(e, t, 0);
        }
        stk__flush_events(e);
        return 0;
    default:
        break;
    }
    /* Unread data or SO_LINGER 0 abort the connection (RFC 2525 2.17; Linux does the
     * same), so the peer learns its data was not consumed. */
    if (unread || t->linger_s == 0)
        return stk_abort(e, now, sd);
    sd_release(e, t);
    if (!(t->flags & TF_FIN_QUEUED)) {
        t->flags |= TF_FIN_QUEUED;
        t->flags &= ~(TF_CORK | TF_MORE);
        if (t->state == STK_TCP_ESTABLISHED || t->state == STK_TCP_SYN_RECEIVED)
            stk__set_state(e, t, STK_TCP_FIN_WAIT_1);
        else if (t->state == STK_TCP_CLOSE_WAIT)
            stk__set_state(e, t, STK_TCP_LAST_ACK);
        stk__tcp_output(e, t, now);
    }
    if (t->state == STK_TCP_TIME_WAIT)
        stk__bufs_release(e, t, true, true);
    if (t->state == STK_TCP_FIN_WAIT_2 && !t->t_2msl) {
        t->t_2msl = now + 2 * (stk_time_t)e->cfg.msl_us;
        stk__timer_update(e, t);
    }
    stk__flush_events(e);
    return 0;
}

static void set_flag(struct stk_tcb *t, uint32_t f, int on)
{
    if (on)
        t->flags |= f;
    else
        t->flags &= ~f;
}

/* SO_SNDBUF/SO_RCVBUF on a connection: as on Linux it ends autotuning, and a larger size
 * takes effect at once (the ring grows in place; a smaller one is kept for later: a ring
 * holding data does not shrink). A connection whose rings do not exist yet (SYN-SENT) or no
 * longer (closed) just records the size. */
static int resize_open(struct stk_engine *e, struct stk_tcb *t, bool snd, uint32_t v,
                       stk_time_t now)
{
    struct stk_ring *r = snd ? &t->sndbuf : &t->rcvbuf;
    t->flags |= snd ? TF_SNDBUF_LOCK : TF_RCVBUF_LOCK;
    if (r->size && (v <= r->size || stk__ring_grow(e, r, v) != 0))
        return 0;
    if (snd)
        t->sndbuf_size = v;
    else
        t->rcvbuf_size = v;
    if (r->size && snd) {
        stk__notify(e, t); /* room to write */
        stk__flush_events(e);
    } else if (r->size) {
        window_update(e, t, now);
    }
    return 0;
}

int stk_setopt(struct stk_engine *e, stk_time_t now, int sd, enum stk_sockopt opt, int val)
{
    GET_OR_EBADF(t, e, sd);
    bool before_open = t->state == STK_TCP_CLOSED && !t->sndbuf.size;
    switch (opt) {
    case STK_SO_REUSEADDR:
        set_flag(t, TF_REUSEADDR, val);
        return 0;
    case STK_SO_REUSEPORT:
        t->reuseport = (uint32_t)val;
        return 0;
    case STK_SO_KEEPALIVE:
        set_flag(t, TF_KEEPALIVE, val);
        if (val && stk__state_synced(t->state) && !t->t_keep) {
            t->t_keep = now + (stk_time_t)t->keep_idle_s * STK_US_PER_S;
            stk__timer_update(e, t);
        }
        return 0;
    case STK_SO_LINGER:
        t->linger_s = val < 0 ? -1 : val;
        return 0;
    case STK_SO_SNDBUF:
    case STK_SO_RCVBUF: {
        if (val < 0)
            return -EINVAL;
        uint32_t v = stk__roundup_pow2(stk__max32((uint32_t)val, 4096));
        v = stk__min32(v, 1u << 26);
        if (!before_open && t->state != STK_TCP_LISTEN)
            return resize_open(e, t, opt == STK_SO_SNDBUF, v, now);
        if (opt == STK_SO_SNDBUF) {
            t->sndbuf_size = v;
            t->flags |= TF_SNDBUF_LOCK; /* as Linux's SOCK_SNDBUF_LOCK */
        } else {
            t->rcvbuf_size = v;
            t->flags |= TF_RCVBUF_LOCK; /* as Linux's SOCK_RCVBUF_LOCK: no autotuning */
        }
        return 0;
    }
    case STK_TCP_NODELAY:
        set_flag(t, TF_NODELAY, val);
        if (val)
            stk__tcp_output(e, t, now);
        return 0;
    case STK_TCP_CORK:
        set_flag(t, TF_CORK, val);
        if (!val) {
            t->t_cork = 0;
            t->flags &= ~TF_MORE;
            stk__tcp_output(e, t, now);
        }
        return 0;
    case STK_TCP_KEEPIDLE:
    case STK_TCP_KEEPINTVL:
        if (val < 1 || val > 32767)
            return -EINVAL;
        if (opt == STK_TCP_KEEPIDLE)
            t->keep_idle_s = (uint32_t)val;
        else
            t->keep_intvl_s = (uint32_t)val;
        return 0;
    case STK_TCP_KEEPCNT:
        if (val < 1 || val > 127)
            return -EINVAL;
        t->keep_cnt = (uint32_t)val;
        return 0;
    case STK_TCP_USER_TIMEOUT:
        if (val < 0)
            return -EINVAL;
        t->user_timeout_ms = (uint32_t)val;
        return 0;
    case STK_TCP_SYNCNT:
        if (val < 1 || val > 127) /* Linux's MAX_TCP_SYNCNT */
            return -EINVAL;
        t->syn_retries = (uint8_t)val;
        return 0;
    case STK_IP_TOS:
    case STK_IPV6_TCLASS:
        return stk__tos_setopt(opt, val, 0xfc, &t->tos, &t->tclass); /* ECN bits clear */
    case STK_TCP_MAXSEG:
        if (val != 0 && (val < 88 || val > 65535))
            return -EINVAL;
        t->user_mss = (uint16_t)val;
        return 0;
    case STK_TCP_CONGESTION:
        if (val != STK_CC_NEWRENO && val != STK_CC_CUBIC)
            return -ENOENT;
        t->cc_algo = (uint8_t)val;
        if (stk__state_synced(t->state)) {
            uint32_t cwnd = t->cc.cwnd, ssthresh = t->cc.ssthresh;
            stk__cc_init(&t->cc, (enum stk_cc_algo)val, t->snd_mss, now);
            t->cc.cwnd = cwnd;
            t->cc.ssthresh = ssthresh;
        }
        return 0;
    case STK_TCP_DEFER_ACCEPT:
        t->defer_accept_s = val < 0 ? 0 : (uint32_t)val;
        return 0;
    case STK_TCP_QUICKACK:
        /* Linux sends a pending ACK at once (tcp_cleanup_rbuf) and leaves pingpong mode
         * until the application replies; that mode is not kept here (tcp(7): "not
         * permanent"), so 0 changes nothing: ACKs are delayed or owed as they are. */
        if (val && (t->t_delack || t->owed) && stk__state_synced(t->state)) {
            t->flags |= TF_ACK_NOW;
            stk__tcp_output(e, t, now);
        }
        return 0;
    case STK_IPV6_V6ONLY:
        /* As Linux (do_ipv6_setsockopt): only before bind. */
        if (t->flags & TF_BOUND)
            return -EINVAL;
        set_flag(t, TF_V6ONLY, val);
        return 0;
    default:
        return -ENOPROTOOPT;
    }
}

int stk_getopt(struct stk_engine *e, int sd, enum stk_sockopt opt, int *val)
{
    GET_OR_EBADF(t, e, sd);
    if (!val)
        return -EFAULT;
    switch (opt) {
    case STK_SO_ERROR:
        /* As Linux's SO_ERROR: the pending error, else the soft error (both cleared). */
        *val = t->so_error ? t->so_error : t->soft_error;
        if (!t->so_error)
            t->soft_error = 0;
        t->so_error = 0;
        return 0;
    case STK_SO_REUSEADDR:
        *val = !!(t->flags & TF_REUSEADDR);
        return 0;
    case STK_SO_REUSEPORT:
        *val = !!t->reuseport;
        return 0;
    case STK_SO_KEEPALIVE:
        *val = !!(t->flags & TF_KEEPALIVE);
        return 0;
    case STK_IPV6_V6ONLY:
        *val = !!(t->flags & TF_V6ONLY);
        return 0;
    case STK_SO_LINGER:
        *val = t->linger_s;
        return 0;
    case STK_SO_SNDBUF:
        *val = (int)t->sndbuf_size;
        return 0;
    case STK_SO_RCVBUF:
        *val = (int)t->rcvbuf_size;
        return 0;
    case STK_TCP_NODELAY:
        *val = !!(t->flags & TF_NODELAY);
        return 0;
    case STK_TCP_CORK:
        *val = !!(t->flags & TF_CORK);
        return 0;
    case STK_TCP_KEEPIDLE:
        *val = (int)t->keep_idle_s;
        return 0;
    case STK_TCP_KEEPINTVL:
        *val = (int)t->keep_intvl_s;
        return 0;
    case STK_TCP_KEEPCNT:
        *val = (int)t->keep_cnt;
        return 0;
    case STK_TCP_USER_TIMEOUT:
        *val = (int)t->user_timeout_ms;
        return 0;
    case STK_TCP_SYNCNT:
        *val = t->syn_retries;
        return 0;
    case STK_IP_TOS:
        *val = t->tos;
        return 0;
    case STK_IPV6_TCLASS:
        *val = t->tclass;
        return 0;
    case STK_TCP_MAXSEG:
        *val = stk__state_synced(t->state) ? t->snd_mss : (t->user_mss ? t->user_mss : 536);
        return 0;
    case STK_TCP_CONGESTION:
        *val = t->cc_algo;
        return 0;
    case STK_SO_STATE:
        *val = (int)t->state;
        return 0;
    case STK_SO_NREAD:
        *val = t->state == STK_TCP_LISTEN || !t->rcvbuf.size ? 0 : (int)stk__ring_used(&t->rcvbuf);
        return 0;
    case STK_SO_NWRITE:
        *val = t->sndbuf.size ? (int)stk__ring_used(&t->sndbuf) : 0;
        return 0;
    case STK_SO_SNDSPACE:
        *val =
            t->sndbuf.size && stk__state_can_send(t->state) ? (int)stk__ring_free(&t->sndbuf) : 0;
        return 0;
    case STK_TCP_DEFER_ACCEPT:
        *val = (int)t->defer_accept_s;
        return 0;
    default:
        return -ENOPROTOOPT;
    }
}

uint32_t stk_events(struct stk_engine *e, int sd)
{
    struct stk_tcb *t = sock_get(e, sd);
    if (!t)
        return STK_EV_ERR | STK_EV_HUP;
    uint32_t ev = 0;
    if (t->so_error)
        ev |= STK_EV_ERR;
    switch (t->state) {
    case STK_TCP_LISTEN:
        for (struct stk_tcb *c = t->acc_head; c; c = c->qnext) {
            if (child_ready(t, c, e->now)) {
                ev |= STK_EV_IN;
                break;
            }
        }
        return ev;
    case STK_TCP_SYN_SENT:
    case STK_TCP_SYN_RECEIVED:
        return ev;
    case STK_TCP_CLOSED:
        /* As Linux's tcp_poll: a closed socket is hung up and writable (writes fail). */
        ev |= STK_EV_HUP | STK_EV_OUT;
        if (t->flags & TF_WAS_SYNCED)
            ev |= STK_EV_IN | STK_EV_RDHUP;
        return ev;
    default:
        break;
    }
    if ((t->rcvbuf.size && stk__ring_used(&t->rcvbuf)) || read_side_done(t))
        ev |= STK_EV_IN;
    if (read_side_done(t))
        ev |= STK_EV_RDHUP;
    if (stk__state_can_send(t->state) && !(t->flags & TF_FIN_QUEUED)) {
        if (t->sndbuf.size && stk__ring_free(&t->sndbuf))
            ev |= STK_EV_OUT;
    } else if (t->flags & TF_FIN_QUEUED) {
        ev |= STK_EV_OUT; /* writes fail at once with EPIPE */
    }
    if (read_side_done(t) && (t->flags & TF_FIN_QUEUED))
        ev |= STK_EV_HUP;
    return ev;
}

int stk_getsockname(struct stk_engine *e, int sd, struct stk_sockaddr *addr)
{
    GET_OR_EBADF(t, e, sd);
    if (!addr)
        return -EFAULT;
    stk__tcb_addr(t, true, addr);
    return 0;
}

int stk_getpeername(struct stk_engine *e, int sd, struct stk_sockaddr *addr)
{
    GET_OR_EBADF(t, e, sd);
    if (!addr)
        return -EFAULT;
    if (t->state == STK_TCP_CLOSED || t->state == STK_TCP_LISTEN || t->state == STK_TCP_SYN_SENT)
        return -ENOTCONN;
    stk__tcb_addr(t, false, addr);
    return 0;
}

static void fill_info(const struct stk_tcb *t, struct stk_tcp_info *info)
{
    memset(info, 0, sizeof(*info));
    info->state = (uint8_t)t->state;
    info->ca_state = (t->flags & TF_IN_RECOVERY) ? 3 : 0;
    info->retransmits = t->retries;
    info->backoff = t->backoff;
    info->snd_wscale = t->snd_ws;
    info->rcv_wscale = t->rcv_ws;
    info->options = (uint8_t)(((t->flags & TF_TS) ? 1 : 0) | ((t->flags & TF_SACK) ? 2 : 0) |
                              ((t->flags & TF_WS) ? 4 : 0));
    info->rto_us = t->rto_us;
    info->rtt_us = t->srtt_us;
    info->rttvar_us = t->rttvar_us;
    info->snd_mss = t->snd_mss;
    info->rcv_mss = t->rcv_mss;
    info->snd_cwnd = t->cc.cwnd;
    info->snd_ssthresh = t->cc.ssthresh;
    info->snd_wnd = t->snd_wnd;
    info->rcv_wnd = stk__seq_gt(t->rcv_adv, t->rcv_nxt) ? t->rcv_adv - t->rcv_nxt : 0;
    info->unacked = stk__tcp_flight(t);
    info->sacked = stk__rs_bytes_above(&t->sb.sacked, t->snd_una);
    info->retrans = stk__seq_gt(t->sb.high_rxt, t->snd_una) ? t->sb.high_rxt - t->snd_una : 0;
    info->total_retrans = t->total_retrans;
    info->bytes_acked = t->bytes_acked;
    info->bytes_received = t->bytes_received;
    info->segs_in = t->segs_in;
    info->segs_out = t->segs_out;
}

int stk_tcp_info(struct stk_engine *e, int sd, struct stk_tcp_info *info)
{
    GET_OR_EBADF(t, e, sd);
    if (!info)
        return -EFAULT;
    fill_info(t, info);
    return 0;
}

static int walk_one(const struct stk_tcb *t, int (*fn)(void *, const struct stk_sock_entry *),
                    void *ctx)
{
    struct stk_sock_entry ent;
    memset(&ent, 0, sizeof(ent));
    ent.sd = t->sd;
    ent.user = t->sd >= 0 ? t->user : NULL;
    stk__tcb_addr(t, true, &ent.local);
    if (t->state == STK_TCP_LISTEN) {
        ent.rcvq = t->acc_len;
        ent.sndq = t->backlog;
    } else {
        stk__tcb_addr(t, false, &ent.remote);
        ent.rcvq = t->rcvbuf.size ? stk__ring_used(&t->rcvbuf) : 0;
        ent.sndq = t->sndbuf.size ? stk__ring_used(&t->sndbuf) : 0;
    }
    fill_info(t, &ent.info);
    return fn(ctx, &ent);
}

int stk_sock_walk(struct stk_engine *e, int (*fn)(void *ctx, const struct stk_sock_entry *ent),
                  void *ctx)
{
    struct stk_tcp *tcp = e->tcp;
    for (unsigned b = 0; b < sizeof(tcp->listen_hash) / sizeof(tcp->listen_hash[0]); b++)
        for (const struct stk_tcb *t = tcp->listen_hash[b]; t; t = t->hnext) {
            int rc = walk_one(t, fn, ctx);
            if (rc)
                return rc;
        }
    for (uint32_t b = 0; b <= tcp->conn_mask; b++)
        for (const struct stk_tcb *t = tcp->conn_hash[b]; t; t = t->hnext) {
            if (t->state == STK_TCP_CLOSED)
                continue;
            int rc = walk_one(t, fn, ctx);
            if (rc)
                return rc;
        }
    return 0;
}

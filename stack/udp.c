/*
 * udp.c - UDP over IPv4 (RFC 768, RFC 1122 4.1): sockets, the port table, input with a
 * bounded queue of datagrams per socket, output, ICMP errors both ways.
 *
 * Errors and corner cases follow Linux's udp(7) and ip(7), as stk.h documents.
 */
#include <string.h>

#include "udp.h"

#define ICMP_UNREACH          3
#define ICMP_UNREACH_PORT     3
#define ICMP_UNREACH_NEEDFRAG 4
#define ICMP6_PACKET_TOO_BIG  2
#define ICMP_HLEN             8
#define ICMP_QUOTE_MAX        (576 - STK_IP_HLEN - ICMP_HLEN) /* RFC 1812 4.3.2.3 */
#define ICMP_UNREACH_BURST    50u
#define UDP_DEFAULT_BUF       212992u
#define UDP_MAX_IOV           8
#define UDP_BUF_MIN_RCV       2304u /* Linux's SOCK_MIN_RCVBUF */
#define UDP_BUF_MIN_SND       4608u /* Linux's SOCK_MIN_SNDBUF */
#define UDP_BUF_MAX           (64u << 20)

static uint32_t rcvbuf_default(const struct stk_engine *e)
{
    return e->cfg.udp_rcvbuf ? e->cfg.udp_rcvbuf : UDP_DEFAULT_BUF;
}

int stk__udp_create(struct stk_engine *e)
{
    struct stk_udp *u = stk__alloc(e, sizeof(*u));
    if (!u)
        return -ENOMEM;
    uint32_t n = e->cfg.max_socks;
    u->socks = stk__alloc(e, n * sizeof(*u->socks));
    u->sd_free = stk__alloc(e, n * sizeof(*u->sd_free));
    if (!u->socks || !u->sd_free) {
        stk__free(e, u->socks, n * sizeof(*u->socks));
        stk__free(e, u->sd_free, n * sizeof(*u->sd_free));
        stk__free(e, u, sizeof(*u));
        return -ENOMEM;
    }
    for (uint32_t i = 0; i < n; i++)
        u->sd_free[i] = (int)(n - 1 - i);
    u->nsd_free = n;
    u->port_cursor = stk__get32(e->cfg.secret + 4);
    u->icmp_tokens = ICMP_UNREACH_BURST;
    u->icmp_last = e->now;
    e->udp = u;
    return 0;
}

static void queue_flush(struct stk_engine *e, struct stk_udp_sock *s)
{
    while (s->qhead) {
        struct stk_udp_dgram *d = s->qhead;
        s->qhead = d->next;
        stk__free(e, d, sizeof(*d) + d->len);
    }
    s->qtail = NULL;
    s->qlen = s->qbytes = 0;
}

void stk__udp_destroy(struct stk_engine *e)
{
    struct stk_udp *u = e->udp;
    if (!u)
        return;
    uint32_t n = e->cfg.max_socks;
    for (uint32_t i = 0; i < n; i++) {
        if (u->socks[i]) {
            queue_flush(e, u->socks[i]);
            stk__free(e, u->socks[i], sizeof(*u->socks[i]));
        }
    }
    stk__free(e, u->socks, n * sizeof(*u->socks));
    stk__free(e, u->sd_free, n * sizeof(*u->sd_free));
    stk__free(e, u, sizeof(*u));
    e->udp = NULL;
}

static struct stk_udp_sock *sock_get(struct stk_engine *e, int sd)
{
    if (sd < 0 || (uint32_t)sd >= e->cfg.max_socks)
        return NULL;
    return e->udp->socks[sd];
}

#define GET_OR_EBADF(s, e, sd)                                                                     \
    struct stk_udp_sock *s = sock_get(e, sd);                                                      \
    if (!s)                                                                                        \
    return -EBADF

int stk_udp_socket(struct stk_engine *e, void *user)
{
    struct stk_udp *u = e->udp;
    if (u->nsd_free == 0)
        return -EMFILE;
    struct stk_udp_sock *s = stk__alloc(e, sizeof(*s));
    if (!s) {
        e->ctr.udp_nomem++;
        return -ENOBUFS;
    }
    int sd = u->sd_free[--u->nsd_free];
    u->socks[sd] = s;
    s->sd = sd;
    s->user = user;
    s->rcvbuf = rcvbuf_default(e);
    s->sndbuf = e->cfg.udp_sndbuf ? e->cfg.udp_sndbuf : UDP_DEFAULT_BUF;
    return sd;
}

void *stk_udp_user(struct stk_engine *e, int sd)
{
    struct stk_udp_sock *s = sock_get(e, sd);
    return s ? s->user : NULL;
}

/* ---- Events --------------------------------------------------------------------------- */

uint32_t stk_udp_events(struct stk_engine *e, int sd)
{
    struct stk_udp_sock *s = sock_get(e, sd);
    if (!s)
        return STK_EV_ERR | STK_EV_HUP;
    uint32_t ev = STK_EV_OUT;
    if (s->qhead || (s->flags & UF_SHUT_RD))
        ev |= STK_EV_IN;
    if (s->flags & UF_SHUT_RD)
        ev |= STK_EV_RDHUP;
    if ((s->flags & (UF_SHUT_RD | UF_SHUT_WR)) == (UF_SHUT_RD | UF_SHUT_WR))
        ev |= STK_EV_HUP;
    if (s->so_error)
        ev |= STK_EV_ERR;
    return ev;
}

static void notify(struct stk_engine *e, struct stk_udp_sock *s)
{
    if (e->cfg.on_event)
        e->cfg.on_event(e->cfg.ev_ctx, s->sd, s->user, stk_udp_events(e, s->sd));
}

/* ---- Ports ---------------------------------------------------------------------------- */

static struct stk_udp_sock **bucket(struct stk_engine *e, uint16_t port)
{
    return &e->udp->ports[port & (STK_UDP_PORT_BUCKETS - 1)];
}

/* Linux (udp_lib_lport_inuse): a port is taken by another socket on it unless both set
 * SO_REUSEADDR, or both are of one SO_REUSEPORT group (the same key). */
/* Two bindings of one port overlap (ipv6(7), inet_rcv_saddr_equal): IPv4 when either is
 * 0.0.0.0 or they are equal (our address and our subnet's broadcast are two); IPv6 when
 * either is [::] or they are equal; IPv4 and IPv6 when the IPv6 one is a dual-stack [::].
 * s's address is the one it is about to bind (lip/lip6 and UF_V6 set by the caller; an
 * unbound socket's 0 overlaps everything). */
static bool overlap(const struct stk_udp_sock *o, const struct stk_udp_sock *s)
{
    uint32_t v6 = (o->flags | s->flags) & UF_V6;
    if (!v6)
        return o->lip == 0 || s->lip == 0 || o->lip == s->lip;
    if ((o->flags & UF_V6) && (s->flags & UF_V6))
        return o->lip == 0 || s->lip == 0 || memcmp(o->lip6, s->lip6, 16) == 0;
    const struct stk_udp_sock *x = (o->flags & UF_V6) ? o : s;
    return x->lip == 0 && !(x->flags & UF_V6ONLY);
}

static bool port_free(struct stk_engine *e, const struct stk_udp_sock *s, uint16_t port)
{
    for (struct stk_udp_sock *o = *bucket(e, port); o; o = o->pnext) {
        if (o != s && o->lport == port && overlap(o, s) &&
            !((o->flags & UF_REUSEADDR) && (s->flags & UF_REUSEADDR)) &&
            !(s->reuseport && s->reuseport == o->reuseport))
            return false;
    }
    return true;
}

static void hash_port(struct stk_engine *e, struct stk_udp_sock *s, uint32_t ip, uint16_t port)
{
    /* Newest first: among sockets sharing a port (SO_REUSEADDR) the last bound gets unicast
     * datagrams, as Linux's lookup ends up choosing. */
    struct stk_udp_sock **b = bucket(e, port);
    s->pnext = *b;
    *b = s;
    s->lip = ip;
    s->lport = port;
    s->flags |= UF_BOUND;
}

static void unhash_port(struct stk_engine *e, struct stk_udp_sock *s)
{
    if (!(s->flags & UF_BOUND))
        return;
    for (struct stk_udp_sock **pp = bucket(e, s->lport); *pp; pp = &(*pp)->pnext) {
        if (*pp == s) {
            *pp = s->pnext;
            break;
        }
    }
    s->pnext = NULL;
    s->lport = 0;
    s->flags &= ~(UF_BOUND | UF_BIND_PORT);
}

static bool is_bcast(const struct stk_engine *e, uint32_t a);

static int bind_any_port(struct stk_engine *e, struct stk_udp_sock *s, uint32_t ip)
{
    uint32_t lo = e->cfg.port_lo, range = e->cfg.port_hi - lo + 1u;
    uint32_t start = e->udp->port_cursor++;
    for (uint32_t i = 0; i < range; i++) {
        uint16_t port = (uint16_t)(lo + (start + i) % range);
        if (port_free(e, s, port)) {
            hash_port(e, s, ip, port);
            return 0;
        }
    }
    return -EAGAIN; /* Linux's answer when no ephemeral port is left for a UDP autobind */
}

int stk_udp_bind(struct stk_engine *e, int sd, const struct stk_sockaddr *addr)
{
    GET_OR_EBADF(s, e, sd);
    if (!addr)
        return -EFAULT;
    if (addr->family != STK_AF_INET && addr->family != STK_AF_INET6)
        return -EAFNOSUPPORT;
    if (s->flags & UF_BOUND)
        return -EINVAL;
    uint32_t ip = addr->ip;
    if (addr->family == STK_AF_INET6) {
        /* Ours or [::]; one interface, so a link-local scope is not checked. Multicast
         * groups are not joined by UDP sockets (not supported). */
        if (!stk__ip6_is_unspec(addr->ip6) && !stk__ip6_is_ours(e, addr->ip6))
            return -EADDRNOTAVAIL;
        s->flags |= UF_V6;
        memcpy(s->lip6, addr->ip6, 16);
        ip = stk__fold6(addr->ip6);
        s->lip = ip; /* port_free compares it */
        int rc = addr->port == 0 ? bind_any_port(e, s, ip)
                                 : (port_free(e, s, addr->port) ? 0 : -EADDRINUSE);
        if (rc) {
            s->flags &= ~UF_V6;
            s->lip = 0;
            memset(s->lip6, 0, 16);
            return rc == -EAGAIN ? -EADDRINUSE : rc;
        }
        if (addr->port) {
            hash_port(e, s, ip, addr->port);
            s->flags |= UF_BIND_PORT;
        }
        if (ip)
            s->flags |= UF_BIND_ADDR;
        return 0;
    }
    /* Ours, or a broadcast address of our interface: Linux's inet_bind takes RTN_LOCAL and
     * RTN_BROADCAST alike, and such a socket then receives the datagrams sent to that
     * broadcast address (nmbd binds one per interface with `bind interfaces only`). */
    if (addr->ip != 0 && addr->ip != e->cfg.ip && !is_bcast(e, addr->ip))
        return -EADDRNOTAVAIL;
    s->lip = addr->ip; /* port_free compares it */
    if (addr->port == 0) {
        int rc = bind_any_port(e, s, addr->ip);
        if (rc) {
            s->lip = 0;
            return rc == -EAGAIN ? -EADDRINUSE : rc;
        }
    } else {
        if (!port_free(e, s, addr->port)) {
            s->lip = 0;
            return -EADDRINUSE;
        }
        hash_port(e, s, addr->ip, addr->port);
        s->flags |= UF_BIND_PORT;
    }
    if (addr->ip)
        s->flags |= UF_BIND_ADDR;
    return 0;
}

/* ---- Destinations --------------------------------------------------------------------- */

static bool is_bcast(const struct stk_engine *e, uint32_t a)
{
    return a == 0xffffffffu || stk__ip_is_subnet_bcast(e, a);
}

/* Linux's route lookup for a datagram's destination: a broadcast needs SO_BROADCAST
 * (-EACCES), our own address is local, anything else ustack's interface cannot reach is
 * -ENETUNREACH. */
static int check_dst(struct stk_engine *e, const struct stk_udp_sock *s, uint32_t ip)
{
    if (is_bcast(e, ip))
        return (s->flags & UF_BROADCAST) ? 0 : -EACCES;
    if (ip == e->cfg.ip)
        return 0; /* ours: delivered here (send_self) */
    if (stk__ip_route(e, ip) == 0)
        return -ENETUNREACH;
    return 0;
}

/* An IPv4 destination for s: an IPv6 socket reaches IPv4 only from a dual-stack [::]. */
static int check_dst4(struct stk_engine *e, const struct stk_udp_sock *s, uint32_t ip)
{
    if ((s->flags & UF_V6) && (s->lip != 0 || (s->flags & UF_V6ONLY)))
        return -ENETUNREACH;
    return check_dst(e, s, ip);
}

/* An IPv6 destination for s: -EAFNOSUPPORT for a socket bound to IPv4, -EINVAL for ::,
 * -ENETUNREACH for multicast (no groups are joined) or what ip6_route cannot reach. */
static int check_dst6(struct stk_engine *e, const struct stk_udp_sock *s, const uint8_t ip6[16])
{
    if ((s->flags & UF_BOUND) && !(s->flags & UF_V6))
        return -EAFNOSUPPORT;
    if (!stk__ip6_enabled(e))
        return -ENETUNREACH;
    if (stk__ip6_is_unspec(ip6))
        return -EINVAL;
    uint8_t nh[16];
    if (stk__ip6_is_mcast(ip6) || stk__ip6_route(e, ip6, nh) != 0)
        return -ENETUNREACH;
    return 0;
}

/* An unbound socket sending to or connecting to IPv6 takes an ephemeral port on [::]. */
static int autobind6(struct stk_engine *e, struct stk_udp_sock *s)
{
    if (s->flags & UF_BOUND)
        return 0;
    s->flags |= UF_V6;
    memset(s->lip6, 0, 16);
    int rc = bind_any_port(e, s, 0);
    if (rc)
        s->flags &= ~UF_V6;
    return rc;
}

static int connect6(struct stk_engine *e, struct stk_udp_sock *s, const struct stk_sockaddr *to)
{
    int rc = check_dst6(e, s, to->ip6);
    if (rc)
        return rc;
    rc = autobind6(e, s);
    if (rc)
        return rc;
    if (!(s->flags & UF_BIND_ADDR)) {
        stk__ip6_select_src(e, to->ip6, s->lip6);
        s->lip = stk__fold6(s->lip6);
    }
    memcpy(s->rip6, to->ip6, 16);
    s->rip = stk__fold6(to->ip6);
    s->rport = to->port;
    s->flags |= UF_CONNECTED | UF_R6;
    s->so_error = 0;
    return 0;
}

int stk_udp_connect(struct stk_engine *e, stk_time_t now, int sd, const struct stk_sockaddr *to)
{
    (void)now;
    GET_OR_EBADF(s, e, sd);
    if (!to) {
        /* Linux's __udp_disconnect: the association goes, and with it an address and a port
         * the application did not bind itself. */
        s->flags &= ~(UF_CONNECTED | UF_R6);
        s->rip = 0;
        s->rport = 0;
        memset(s->rip6, 0, 16);
        if (!(s->flags & UF_BIND_ADDR)) {
            s->lip = 0;
            memset(s->lip6, 0, 16);
        }
        if (!(s->flags & UF_BIND_PORT))
            unhash_port(e, s);
        return 0;
    }
    if (to->family == STK_AF_INET6)
        return connect6(e, s, to);
    if (to->family != STK_AF_INET)
        return -EAFNOSUPPORT;
    int rc = check_dst4(e, s, to->ip);
    if (rc)
        return rc;
    if (!(s->flags & UF_BOUND)) {
        rc = bind_any_port(e, s, e->cfg.ip);
        if (rc)
            return rc;
    }
    /* The route's source, unless bound to an address (Linux's __ip4_datagram_connect keeps
     * inet_rcv_saddr); a dual-stack [::] socket keeps its wildcard. */
    if (!(s->flags & (UF_V6 | UF_BIND_ADDR)))
        s->lip = e->cfg.ip;
    s->flags &= ~UF_R6;
    s->rip = to->ip;
    s->rport = to->port;
    s->flags |= UF_CONNECTED;
    /* An error left over from an earlier association is not this one's. */
    s->so_error = 0;
    return 0;
}

int stk_udp_getsockname(struct stk_engine *e, int sd, struct stk_sockaddr *addr)
{
    GET_OR_EBADF(s, e, sd);
    if (!addr)
        return -EFAULT;
    *addr = (struct stk_sockaddr){0};
    addr->port = s->lport;
    if ((s->flags & (UF_V6 | UF_CONNECTED | UF_R6)) == (UF_V6 | UF_CONNECTED) &&
        stk__ip6_is_unspec(s->lip6)) {
        /* A dual-stack [::] socket connected to an IPv4 peer: Linux's
         * __ip4_datagram_connect gives it the route's source, which getsockname shows
         * v4-mapped (the caller maps an IPv4 address for an AF_INET6 socket). */
        addr->ip = e->cfg.ip;
        return 0;
    }
    if (s->flags & UF_V6) {
        addr->family = STK_AF_INET6;
        memcpy(addr->ip6, s->lip6, 16);
    } else {
        addr->ip = s->lip;
    }
    return 0;
}

int stk_udp_getpeername(struct stk_engine *e, int sd, struct stk_sockaddr *addr)
{
    GET_OR_EBADF(s, e, sd);
    if (!addr)
        return -EFAULT;
    if (!(s->flags & UF_CONNECTED))
        return -ENOTCONN;
    *addr = (struct stk_sockaddr){0};
    addr->port = s->rport;
    if (s->flags & UF_R6) {
        addr->family = STK_AF_INET6;
        memcpy(addr->ip6, s->rip6, 16);
    } else {
        addr->ip = s->rip;
    }
    return 0;
}

/* ---- Output --------------------------------------------------------------------------- */

/* Ones-complement sum over pieces of any length: a piece starting at an odd offset of the
 * whole has its bytes in swapped lanes, which a byte swap of its folded sum puts right. */
static uint32_t csum_iov(uint32_t sum, const struct stk_iov *iov, int n)
{
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        uint32_t part = stk__csum_add(0, iov[i].base, iov[i].len);
        if (off & 1) {
            while (part >> 16)
                part = (part & 0xffff) + (part >> 16);
            part = ((part & 0xff) << 8) | (part >> 8);
        }
        sum += part;
        while (sum >> 24) /* keep headroom: fold early */
            sum = (sum & 0xffff) + (sum >> 16);
        off += iov[i].len;
    }
    return sum;
}

/* The UDP header at uh for a payload iov[0..n) of ulen - 8 bytes, its checksum over the
 * pseudo-header sum pseudo (IPv4 or IPv6). RFC 768: a computed zero is sent as all ones (zero means
 * "no checksum"). */
static void put_udp_hdr(uint8_t *uh, uint16_t sport, uint16_t dport, uint16_t ulen, uint32_t pseudo,
                        const struct stk_iov *iov, int n)
{
    stk__put16(uh, sport);
    stk__put16(uh + 2, dport);
    stk__put16(uh + 4, ulen);
    stk__put16(uh + 6, 0);
    uint16_t c = stk__csum_fold(csum_iov(stk__csum_add(pseudo, uh, STK_UDP_HLEN), iov, n));
    stk__put16(uh + 6, c ? c : 0xffff);
}

/* A datagram over IPv6: fragmented beyond the MTU (RFC 8200 4.5; -EMSGSIZE beyond 65527
 * bytes of data: the UDP length, and the reassembled Payload Length, limits), the checksum always
 * set (RFC 8200 8.1). */
static ssize_t sendto6(struct stk_engine *e, stk_time_t now, struct stk_udp_sock *s,
                       const struct stk_iov *iov, int n, const uint8_t dst[16], uint16_t dport)
{
    size_t len = 0;
    for (int i = 0; i < n; i++)
        len += iov[i].len;
    int rc = check_dst6(e, s, dst);
    if (rc)
        return rc;
    if (STK_UDP_HLEN + len > 65535u)
        return -EMSGSIZE;
    rc = autobind6(e, s);
    if (rc)
        return rc;
    uint8_t src[16];
    if (s->lip != 0)
        memcpy(src, s->lip6, 16);
    else
        stk__ip6_select_src(e, dst, src);
    uint8_t hdr[STK_L2L3_HLEN6 + STK_UDP_HLEN];
    uint8_t *uh = hdr + STK_L2L3_HLEN6;
    uint16_t ulen = (uint16_t)(STK_UDP_HLEN + len);
    put_udp_hdr(uh, s->lport, dport, ulen, stk__csum_pseudo6(src, dst, STK_IP_PROTO_UDP, ulen), iov,
                n);
    /* More pieces than the IPv6 layer takes (7) are copied into one. */
    struct stk_iov one;
    uint8_t *buf = NULL;
    if (n > 7) {
        buf = stk__alloc(e, len ? len : 1);
        if (!buf) {
            e->ctr.udp_nomem++;
            return -ENOMEM;
        }
        size_t off = 0;
        for (int i = 0; i < n; i++) {
            memcpy(buf + off, iov[i].base, iov[i].len);
            off += iov[i].len;
        }
        one.base = buf;
        one.len = len;
        iov = &one;
        n = 1;
    }
    rc = stk__ip6_send_frags(e, now, src, dst, STK_IP_PROTO_UDP, hdr, STK_UDP_HLEN, iov, n,
                             s->tclass);
    if (buf)
        stk__free(e, buf, len ? len : 1);
    if (rc < 0 && rc != -ENOBUFS) {
        e->ctr.udp_send_fail++;
        return rc;
    }
    if (rc == -ENOBUFS)
        e->ctr.udp_send_fail++;
    e->ctr.udp_out++;
    e->ctr.udp_bytes_out += len;
    return (ssize_t)len;
}

static ssize_t send_self(struct stk_engine *e, struct stk_udp_sock *s, const struct stk_iov *iov,
                         int n, size_t len, uint16_t dport);

ssize_t stk_udp_sendto(struct stk_engine *e, stk_time_t now, int sd, const struct stk_iov *iov,
                       int n, const struct stk_sockaddr *to)
{
    GET_OR_EBADF(s, e, sd);
    if (n < 0 || n > UDP_MAX_IOV || (n > 0 && !iov))
        return -EINVAL;
    if (s->so_error) {
        int err = s->so_error;
        s->so_error = 0;
        return -err;
    }
    if (s->flags & UF_SHUT_WR)
        return -EPIPE;
    uint32_t dip;
    uint16_t dport;
    if (to) {
        if (to->family != STK_AF_INET && to->family != STK_AF_INET6)
            return -EAFNOSUPPORT;
        if (to->port == 0)
            return -EINVAL;
        if (to->family == STK_AF_INET6)
            return sendto6(e, now, s, iov, n, to->ip6, to->port);
        dip = to->ip;
        dport = to->port;
    } else {
        if (!(s->flags & UF_CONNECTED))
            return -EDESTADDRREQ;
        if (s->flags & UF_R6)
            return sendto6(e, now, s, iov, n, s->rip6, s->rport);
        dip = s->rip;
        dport = s->rport;
    }
    size_t len = 0;
    for (int i = 0; i < n; i++)
        len += iov[i].len;
    if (len > STK_UDP_MAX_PAYLOAD)
        return -EMSGSIZE;
    int rc = check_dst4(e, s, dip);
    if (rc)
        return rc;
    if (!(s->flags & UF_BOUND)) {
        rc = bind_any_port(e, s, 0);
        if (rc)
            return rc;
    }
    if (dip == e->cfg.ip)
        return send_self(e, s, iov, n, len, dport);

    uint8_t hdr[STK_L2L3_HLEN + STK_UDP_HLEN];
    uint8_t *uh = hdr + STK_L2L3_HLEN;
    uint16_t ulen = (uint16_t)(STK_UDP_HLEN + len);
    put_udp_hdr(uh, s->lport, dport, ulen, stk__csum_pseudo(e->cfg.ip, dip, STK_IP_PROTO_UDP, ulen),
                iov, n);

    if (STK_IP_HLEN + (size_t)ulen > e->cfg.mtu) {
        struct stk_iov l4[1 + UDP_MAX_IOV];
        l4[0].base = uh;
        l4[0].len = STK_UDP_HLEN;
        for (int i = 0; i < n; i++)
            l4[1 + i] = iov[i];
        rc = stk__ip_send_frags(e, now, dip, STK_IP_PROTO_UDP, l4, 1 + n, ulen, s->tos);
    } else {
        struct stk_txmeta meta = {.tos = s->tos};
        rc = stk__ip_send(e, now, dip, STK_IP_PROTO_UDP, hdr, STK_UDP_HLEN, iov, n, &meta);
    }
    /* A datagram queued behind ARP resolution counts as sent (Linux's neighbour queue). */
    if (rc < 0 && rc != -ENOBUFS) {
        e->ctr.udp_send_fail++;
        return rc;
    }
    if (rc == -ENOBUFS) {
        /* The device or the ARP queue is full: the datagram is lost, as when the kernel's
         * qdisc drops it; UDP promises nothing more. */
        e->ctr.udp_send_fail++;
    }
    e->ctr.udp_out++;
    e->ctr.udp_bytes_out += len;
    return (ssize_t)len;
}

/* ---- Receive queue -------------------------------------------------------------------- */

static void dgram_pop(struct stk_engine *e, struct stk_udp_sock *s)
{
    struct stk_udp_dgram *d = s->qhead;
    s->qhead = d->next;
    if (!s->qhead)
        s->qtail = NULL;
    s->qlen--;
    s->qbytes -= d->len + STK_UDP_DGRAM_COST;
    stk__free(e, d, sizeof(*d) + d->len);
}

ssize_t stk_udp_peek(struct stk_engine *e, int sd, struct stk_iov *data, struct stk_udp_meta *meta)
{
    GET_OR_EBADF(s, e, sd);
    struct stk_udp_dgram *d = s->qhead;
    if (!d)
        return -EAGAIN;
    if (data) {
        data->base = d->data;
        data->len = d->len;
    }
    if (meta)
        *meta = d->meta;
    return d->len;
}

int stk_udp_drop(struct stk_engine *e, int sd)
{
    GET_OR_EBADF(s, e, sd);
    if (!s->qhead)
        return -EAGAIN;
    dgram_pop(e, s);
    return 0;
}

ssize_t stk_udp_recvfrom(struct stk_engine *e, stk_time_t now, int sd, void *buf, size_t len,
                         uint32_t flags, struct stk_udp_meta *meta)
{
    (void)now;
    GET_OR_EBADF(s, e, sd);
    /* Linux's __skb_recv_udp checks the pending error before the queue. */
    if (s->so_error) {
        int err = s->so_error;
        s->so_error = 0;
        return -err;
    }
    struct stk_udp_dgram *d = s->qhead;
    if (!d)
        return (s->flags & UF_SHUT_RD) ? 0 : -EAGAIN;
    if (len && !buf)
        return -EFAULT;
    uint32_t n_copy = stk__min32(d->len, (uint32_t)stk__min64(len, UINT32_MAX));
    if (n_copy)
        memcpy(buf, d->data, n_copy);
    if (meta)
        *meta = d->meta;
    ssize_t n = d->len;
    if (!(flags & STK_MSG_PEEK))
        dgram_pop(e, s);
    return n;
}

int stk_udp_shutdown(struct stk_engine *e, int sd, enum stk_shut how)
{
    GET_OR_EBADF(s, e, sd);
    if (how != STK_SHUT_RD && how != STK_SHUT_WR && how != STK_SHUT_RDWR)
        return -EINVAL;
    if (how != STK_SHUT_WR)
        s->flags |= UF_SHUT_RD;
    if (how != STK_SHUT_RD)
        s->flags |= UF_SHUT_WR;
    notify(e, s);
    /* inet_shutdown: an unconnected datagram socket is shut all the same, but the call
     * reports ENOTCONN. */
    return (s->flags & UF_CONNECTED) ? 0 : -ENOTCONN;
}

int stk_udp_close(struct stk_engine *e, int sd)
{
    GET_OR_EBADF(s, e, sd);
    struct stk_udp *u = e->udp;
    unhash_port(e, s);
    queue_flush(e, s);
    u->socks[sd] = NULL;
    u->sd_free[u->nsd_free++] = sd;
    stk__free(e, s, sizeof(*s));
    return 0;
}

/* ---- Options -------------------------------------------------------------------------- */

int stk_udp_setopt(struct stk_engine *e, int sd, enum stk_sockopt opt, int val)
{
    GET_OR_EBADF(s, e, sd);
    uint32_t f = 0;
    switch (opt) {
    case STK_SO_REUSEADDR:
        f = UF_REUSEADDR;
        break;
    case STK_SO_BROADCAST:
        f = UF_BROADCAST;
        break;
    case STK_IPV6_V6ONLY:
        if (s->flags & UF_BOUND)
            return -EINVAL; /* as Linux: before bind only */
        f = UF_V6ONLY;
        break;
    case STK_SO_RCVBUF:
        /* As Linux: the value is doubled for bookkeeping, with a floor. */
        s->rcvbuf = stk__max32((uint32_t)stk__min64(val < 0 ? 0 : (uint64_t)val * 2, UDP_BUF_MAX),
                               UDP_BUF_MIN_RCV);
        return 0;
    case STK_SO_SNDBUF:
        s->sndbuf = stk__max32((uint32_t)stk__min64(val < 0 ? 0 : (uint64_t)val * 2, UDP_BUF_MAX),
                               UDP_BUF_MIN_SND);
        return 0;
    case STK_IP_TOS:
    case STK_IPV6_TCLASS:
        return stk__tos_setopt(opt, val, 0xff, &s->tos, &s->tclass); /* ECN bits kept */
    case STK_SO_REUSEPORT:
        s->reuseport = (uint32_t)val;
        return 0;
    default:
        return -ENOPROTOOPT;
    }
    if (val)
        s->flags |= f;
    else
        s->flags &= ~f;
    return 0;
}

int stk_udp_getopt(struct stk_engine *e, int sd, enum stk_sockopt opt, int *val)
{
    GET_OR_EBADF(s, e, sd);
    if (!val)
        return -EFAULT;
    switch (opt) {
    case STK_SO_ERROR:
        *val = s->so_error;
        s->so_error = 0;
        return 0;
    case STK_SO_REUSEADDR:
        *val = !!(s->flags & UF_REUSEADDR);
        return 0;
    case STK_SO_REUSEPORT:
        *val = !!s->reuseport;
        return 0;
    case STK_SO_BROADCAST:
        *val = !!(s->flags & UF_BROADCAST);
        return 0;
    case STK_IPV6_V6ONLY:
        *val = !!(s->flags & UF_V6ONLY);
        return 0;
    case STK_SO_RCVBUF:
        *val = (int)s->rcvbuf;
        return 0;
    case STK_SO_SNDBUF:
        *val = (int)s->sndbuf;
        return 0;
    case STK_SO_NREAD:
        *val = s->qhead ? (int)s->qhead->len : 0;
        return 0;
    case STK_IP_TOS:
        *val = s->tos;
        return 0;
    case STK_IPV6_TCLASS:
        *val = s->tclass;
        return 0;
    default:
        return -ENOPROTOOPT;
    }
}

/* ---- Input ---------------------------------------------------------------------------- */

struct udp_dgram_in {
    uint32_t src, dst;          /* IPv6: their stk__fold6 */
    const uint8_t *src6, *dst6; /* IPv6 addresses; NULL for IPv4 */
    uint16_t sport, dport;
    const uint8_t *data;
    uint32_t len;
};

/* Linux's compute_score: a socket matches the destination port; a bound address must be
 * the destination (ours, or the broadcast address it was bound to) and scores higher than
 * a wildcard; a connected one matches only its peer and scores higher again. */
static int score(const struct stk_udp_sock *s, const struct udp_dgram_in *d, bool bcast)
{
    if (s->lport != d->dport)
        return -1;
    if (s->flags & UF_V6) {
        if (!d->dst6) {
            /* IPv4 reaches an IPv6 socket only through a dual-stack [::] */
            if (s->lip != 0 || (s->flags & UF_V6ONLY))
                return -1;
        } else if (s->lip && (bcast || memcmp(s->lip6, d->dst6, 16) != 0)) {
            return -1;
        }
    } else if (d->dst6 || (s->lip && s->lip != d->dst)) {
        return -1;
    }
    int sc = s->lip ? 5 : 1; /* Linux: +4 for the local address */
    if (s->flags & UF_CONNECTED) {
        if (!(s->flags & UF_R6) != !d->src6 || s->rip != d->src || s->rport != d->sport ||
            (d->src6 && memcmp(s->rip6, d->src6, 16) != 0))
            return -1;
        sc += 8; /* +4 for the peer's address, +4 for its port */
    }
    return sc;
}

static void deliver(struct stk_engine *e, struct stk_udp_sock *s, const struct udp_dgram_in *in)
{
    if (s->flags & UF_SHUT_RD) {
        e->ctr.udp_drop_shut++;
        return;
    }
    /* Bounded by the receive buffer as Linux's __udp_enqueue_schedule_skb bounds it by
     * sk_rcvbuf: a datagram that would take the queue past the buffer is dropped, except
     * into an empty queue, which takes any one datagram. */
    if (s->qbytes > s->rcvbuf ||
        (s->qhead && s->qbytes + in->len + STK_UDP_DGRAM_COST > s->rcvbuf)) {
        e->ctr.udp_drop_rcvbuf++;
        return;
    }
    struct stk_udp_dgram *d = stk__alloc(e, sizeof(*d) + in->len);
    if (!d) {
        e->ctr.udp_nomem++;
        return;
    }
    memset(&d->meta, 0, sizeof(d->meta));
    d->next = NULL;
    d->meta.from.port = in->sport;
    if (in->src6) {
        d->meta.from.family = STK_AF_INET6;
        memcpy(d->meta.from.ip6, in->src6, 16);
    } else {
        d->meta.from.ip = in->src;
        d->meta.dst = in->dst;
    }
    d->len = in->len;
    memcpy(d->data, in->data, in->len);
    if (s->qtail)
        s->qtail->next = d;
    else
        s->qhead = d;
    s->qtail = d;
    s->qlen++;
    s->qbytes += in->len + STK_UDP_DGRAM_COST;
    e->ctr.udp_bytes_in += in->len;
    notify(e, s);
}

static bool icmp_budget(struct stk_engine *e, stk_time_t now)
{
    struct stk_udp *u = e->udp;
    uint32_t rate = e->cfg.icmp_unreach_per_s ? e->cfg.icmp_unreach_per_s : 1000;
    uint64_t add = (now - u->icmp_last) * rate / STK_US_PER_S;
    if (add) {
        u->icmp_tokens = (uint32_t)stk__min64(u->icmp_tokens + add, ICMP_UNREACH_BURST);
        u->icmp_last = now;
    }
    if (u->icmp_tokens == 0)
        return false;
    u->icmp_tokens--;
    return true;
}

/* RFC 1122 4.1.3.1: a datagram for a port nobody listens on is answered with ICMP port
 * unreachable (never for broadcasts, RFC 1122 3.2.2), rate-limited as RFC 1812 4.3.2.8
 * asks. The quote is the offending IP header and as much of its data as fits 576 bytes. */
static void send_port_unreach(struct stk_engine *e, stk_time_t now, const struct stk_ipv4_pkt *ip)
{
    if (!icmp_budget(e, now)) {
        e->ctr.udp_icmp_unreach_limited++;
        return;
    }
    const uint8_t *iph = ip->l4 - STK_IP_HLEN; /* IP options are dropped before us */
    size_t qlen = stk__min64(STK_IP_HLEN + ip->l4_len, ICMP_QUOTE_MAX);
    uint8_t hdr[STK_L2L3_HLEN + ICMP_HLEN];
    uint8_t *icmp = hdr + STK_L2L3_HLEN;
    memset(icmp, 0, ICMP_HLEN);
    icmp[0] = ICMP_UNREACH;
    icmp[1] = ICMP_UNREACH_PORT;
    struct stk_iov q = {iph, qlen};
    uint32_t sum = stk__csum_add(0, icmp, ICMP_HLEN);
    sum = csum_iov(sum, &q, 1);
    stk__put16(icmp + 2, stk__csum_fold(sum));
    if (stk__ip_send(e, now, ip->src, STK_IP_PROTO_ICMP, hdr, ICMP_HLEN, &q, 1, NULL) == 0)
        e->ctr.udp_icmp_unreach_out++;
}

/* Counts an arriving datagram and checks its header: returns the UDP length, or 0 (counted)
 * when the header is cut short or the length is impossible. The UDP length may be shorter
 * than the IP payload (trailing bytes are ignored), never longer, nor shorter than the
 * header. */
static uint16_t udp_len(struct stk_engine *e, const uint8_t *uh, size_t l4_len)
{
    e->ctr.udp_in++;
    if (l4_len < STK_UDP_HLEN) {
        e->ctr.udp_drop_hdr++;
        return 0;
    }
    uint16_t ulen = stk__get16(uh + 4);
    if (ulen < STK_UDP_HLEN || ulen > l4_len) {
        e->ctr.udp_drop_len++;
        return 0;
    }
    return ulen;
}

/* best, the socket a unicast datagram scores highest at, or the one of its SO_REUSEPORT group
 * (the same key and score) that a keyed hash of the datagram's addresses and ports picks, as
 * Linux's reuseport_select_sock: one sender's datagrams keep going to one socket while the
 * group is unchanged. */
static struct stk_udp_sock *reuseport_pick(struct stk_engine *e, struct stk_udp_sock *best,
                                           int best_score, const struct udp_dgram_in *in)
{
    uint32_t n = 0;
    for (struct stk_udp_sock *s = *bucket(e, in->dport); s; s = s->pnext)
        n += s->reuseport == best->reuseport && score(s, in, false) == best_score;
    if (n < 2)
        return best;
    struct {
        uint32_t src, dst;
        uint16_t sport, dport;
        uint8_t src6[16];
    } k = {in->src, in->dst, in->sport, in->dport, {0}};
    if (in->src6)
        memcpy(k.src6, in->src6, 16);
    uint32_t h = (uint32_t)stk__siphash(e->cfg.secret, &k, sizeof(k));
    uint32_t i = (uint32_t)(((uint64_t)h * n) >> 32);
    for (struct stk_udp_sock *s = *bucket(e, in->dport); s; s = s->pnext)
        if (s->reuseport == best->reuseport && score(s, in, false) == best_score && i-- == 0)
            return s;
    return best;
}

/* Delivers in to the socket it scores best with, or to every socket on its port for a
 * broadcast/multicast. Returns false (counted in udp_noport) when no socket took it. */
static bool demux(struct stk_engine *e, const struct udp_dgram_in *in, bool bcast)
{
    if (bcast) {
        e->ctr.udp_bcast_in++;
        bool any = false;
        for (struct stk_udp_sock *s = *bucket(e, in->dport); s; s = s->pnext) {
            if (score(s, in, true) > 0) {
                deliver(e, s, in);
                any = true;
            }
        }
        if (!any)
            e->ctr.udp_noport++;
        return any;
    }
    struct stk_udp_sock *best = NULL;
    int best_score = 0;
    for (struct stk_udp_sock *s = *bucket(e, in->dport); s; s = s->pnext) {
        int sc = score(s, in, false);
        if (sc > best_score) {
            best = s;
            best_score = sc;
        }
    }
    if (!best) {
        e->ctr.udp_noport++;
        return false;
    }
    if (best->reuseport)
        best = reuseport_pick(e, best, best_score, in);
    deliver(e, best, in);
    return true;
}

static void hard_error(struct stk_engine *e, struct stk_udp_sock *s, int err);

/* A datagram to our own address: Linux carries it over loopback; every UDP socket lives in
 * this engine (core 0), so it goes straight to the socket the demux picks. No socket on the
 * port: a connected sender gets ECONNREFUSED, as from the ICMP port unreachable Linux loops
 * back. */
static ssize_t send_self(struct stk_engine *e, struct stk_udp_sock *s, const struct stk_iov *iov,
                         int n, size_t len, uint16_t dport)
{
    uint8_t *buf = stk__alloc(e, len ? len : 1);
    if (!buf) {
        e->ctr.udp_nomem++;
        e->ctr.udp_send_fail++;
        return (ssize_t)len; /* lost, as a datagram the device drops */
    }
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        memcpy(buf + off, iov[i].base, iov[i].len);
        off += iov[i].len;
    }
    struct udp_dgram_in in = {
        .src = e->cfg.ip,
        .dst = e->cfg.ip,
        .sport = s->lport,
        .dport = dport,
        .data = buf,
        .len = (uint32_t)len,
    };
    if (!demux(e, &in, false) && (s->flags & UF_CONNECTED))
        hard_error(e, s, ECONNREFUSED);
    stk__free(e, buf, len ? len : 1);
    e->ctr.udp_out++;
    e->ctr.udp_bytes_out += len;
    return (ssize_t)len;
}

void stk__udp_input(struct stk_engine *e, stk_time_t now, const struct stk_ipv4_pkt *ip)
{
    const uint8_t *uh = ip->l4;
    uint16_t ulen = udp_len(e, uh, ip->l4_len);
    if (ulen == 0)
        return;
    /* A zero checksum means the sender computed none, which IPv4 allows (RFC 768). */
    if (stk__get16(uh + 6) != 0 && !(ip->rx_flags & STK_RX_L4_CSUM_OK)) {
        uint32_t sum = stk__csum_pseudo(ip->src, ip->dst, STK_IP_PROTO_UDP, ulen);
        if (stk__csum_fold(stk__csum_add(sum, uh, ulen)) != 0) {
            e->ctr.udp_drop_csum++;
            return;
        }
    }
    struct udp_dgram_in in = {
        .src = ip->src,
        .dst = ip->dst,
        .sport = stk__get16(uh),
        .dport = stk__get16(uh + 2),
        .data = uh + STK_UDP_HLEN,
        .len = ulen - STK_UDP_HLEN,
    };
    /* A broadcast goes to every socket on the port (Linux's __udp4_lib_mcast_deliver). */
    bool bcast = ip->dst != e->cfg.ip;
    if (!demux(e, &in, bcast) && !bcast)
        send_port_unreach(e, now, ip);
}

/* UDP over IPv6 (RFC 8200 8.1, RFC 768): the checksum is mandatory, so a zero one drops
 * the datagram (udp6_drop_zero_csum); no socket: ICMPv6 port unreachable (rate-limited,
 * never for multicast destinations, by stk__icmp6_error). */
void stk__udp6_input(struct stk_engine *e, stk_time_t now, const struct stk_ipv6_pkt *ip)
{
    const uint8_t *uh = ip->l4;
    uint16_t ulen = udp_len(e, uh, ip->l4_len);
    if (ulen == 0)
        return;
    if (stk__get16(uh + 6) == 0) {
        e->ctr.udp6_drop_zero_csum++;
        return;
    }
    if (!(ip->rx_flags & STK_RX_L4_CSUM_OK)) {
        uint32_t sum = stk__csum_pseudo6(ip->src, ip->dst, STK_IP_PROTO_UDP, ulen);
        if (stk__csum_fold(stk__csum_add(sum, uh, ulen)) != 0) {
            e->ctr.udp_drop_csum++;
            return;
        }
    }
    struct udp_dgram_in in = {
        .src = stk__fold6(ip->src),
        .dst = stk__fold6(ip->dst),
        .src6 = ip->src,
        .dst6 = ip->dst,
        .sport = stk__get16(uh),
        .dport = stk__get16(uh + 2),
        .data = uh + STK_UDP_HLEN,
        .len = ulen - STK_UDP_HLEN,
    };
    if (!demux(e, &in, ip->dst_mcast) && !ip->dst_mcast && icmp_budget(e, now)) {
        stk__icmp6_error(e, now, ip, 1 /* destination unreachable */, 4 /* port */, 0);
        e->ctr.udp_icmp_unreach_out++;
    }
}

/* The connected socket a quoted datagram (our port sport to dst:dport) came from, if any
 * (v6: an IPv6 one). Only connected sockets hear of errors: Linux's __udp4_lib_err and
 * __udp6_lib_err without IP_RECVERR. */
static struct stk_udp_sock *connected_to(struct stk_engine *e, bool v6, uint32_t dst,
                                         const uint8_t dst6[16], uint16_t sport, uint16_t dport)
{
    for (struct stk_udp_sock *s = *bucket(e, sport); s; s = s->pnext) {
        if (s->lport != sport || !(s->flags & UF_CONNECTED) || s->rport != dport ||
            !(s->flags & UF_R6) != !v6)
            continue;
        if (v6 ? memcmp(s->rip6, dst6, 16) == 0 : s->rip == dst)
            return s;
    }
    return NULL;
}

/* A hard error for s: reported once by its next call (SO_ERROR, recv, send). */
static void hard_error(struct stk_engine *e, struct stk_udp_sock *s, int err)
{
    e->ctr.udp_icmp_err_in++;
    s->so_error = err;
    notify(e, s);
}

void stk__udp_icmp_error(struct stk_engine *e, uint8_t type, uint8_t code, const uint8_t *q,
                         size_t len)
{
    int err;
    bool hard = stk__icmp4_err(type, code, &err);
    /* Fragmentation needed: EMSGSIZE, hard, as Linux with the default IP_PMTUDISC_WANT (the
     * datagram was sent with DF, which ustack sets on every datagram that fits the MTU). */
    if (type == ICMP_UNREACH && code == ICMP_UNREACH_NEEDFRAG) {
        err = EMSGSIZE;
        hard = true;
    }
    /* Linux (icmp_err_convert) keeps soft errors (net/host unreachable, time exceeded) for
     * IP_RECVERR, which ustack does not implement: not reported. */
    if (!hard || len < STK_IP_HLEN)
        return;
    size_t hlen = (size_t)(q[0] & 0x0f) * 4;
    if ((q[0] >> 4) != 4 || hlen < STK_IP_HLEN || len < hlen + 4 || q[9] != STK_IP_PROTO_UDP ||
        stk__get32(q + 12) != e->cfg.ip || (stk__get16(q + 6) & 0x1fff) != 0)
        return;
    struct stk_udp_sock *s = connected_to(e, false, stk__get32(q + 16), NULL, stk__get16(q + hlen),
                                          stk__get16(q + hlen + 2));
    if (s)
        hard_error(e, s, err);
}

void stk__udp6_icmp_error(struct stk_engine *e, uint8_t type, uint8_t code, const uint8_t src[16],
                          const uint8_t dst[16], const uint8_t *uh, size_t len)
{
    int err;
    bool hard = stk__icmp6_err(type, code, &err);
    /* Packet Too Big: EMSGSIZE, hard, as Linux unless IPV6_MTU_DISCOVER is IPV6_PMTUDISC_DONT
     * (recorded, not applied, by ustack). The path MTU itself is not kept: later datagrams
     * are still fragmented to the link MTU (docs/gaps.md). */
    if (type == ICMP6_PACKET_TOO_BIG)
        hard = true;
    if (!hard || len < 4 || !stk__ip6_is_ours(e, src))
        return;
    struct stk_udp_sock *s = connected_to(e, true, 0, dst, stk__get16(uh), stk__get16(uh + 2));
    if (s)
        hard_error(e, s, err);
}

/*
 * client_opt.c - socket options, fcntl and ioctl on ustack sockets, with Linux's argument
 * checks and errno values (socket(7), tcp(7), ip(7), fcntl(2), ioctl_list).
 *
 * Options the engine implements go to the stack (SHM_OP_SETOPT/GETOPT); a few are the
 * client's own (timeouts, type, pending error); everything else is tried on a private
 * kernel TCP socket (the "scratch" socket), so that an option the kernel would refuse is
 * refused with the kernel's errno and one it would accept is accepted, ignored, and
 * reported once on stderr.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "client_int.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>

#include "stk.h"

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24 /* linux/in.h */
#endif

#define C shim__c

/* struct tcp_info as Linux fills it today (glibc's stops at tcpi_total_retrans). */
struct shim_tcp_info {
    struct tcp_info base;
    uint64_t tcpi_pacing_rate, tcpi_max_pacing_rate;
    uint64_t tcpi_bytes_acked, tcpi_bytes_received;
    uint32_t tcpi_segs_out, tcpi_segs_in;
    uint32_t tcpi_notsent_bytes, tcpi_min_rtt;
    uint32_t tcpi_data_segs_in, tcpi_data_segs_out;
    uint64_t tcpi_delivery_rate, tcpi_busy_time, tcpi_rwnd_limited, tcpi_sndbuf_limited;
    uint32_t tcpi_delivered, tcpi_delivered_ce;
    uint64_t tcpi_bytes_sent, tcpi_bytes_retrans;
    uint32_t tcpi_dsack_dups, tcpi_reord_seen, tcpi_rcv_ooopack, tcpi_snd_wnd;
};

void shim__record_opt(struct shim_file *f, int level, int name, const void *val, socklen_t len)
{
    if (!val || len > sizeof(f->opts[0].val))
        return;
    unsigned i;
    for (i = 0; i < f->nopts; i++)
        if (f->opts[i].level == level && f->opts[i].name == name)
            break;
    if (i == SHIM_MAX_OPTS)
        return;
    if (i == f->nopts)
        f->nopts++;
    f->opts[i].level = level;
    f->opts[i].name = name;
    f->opts[i].len = len;
    memcpy(f->opts[i].val, val, len);
}

static const struct shim_opt *recorded(const struct shim_file *f, int level, int name);

bool shim__opt_on(const struct shim_file *f, int level, int name)
{
    const struct shim_opt *o = recorded(f, level, name);
    return o && (o->val[0] | o->val[1] | o->val[2] | o->val[3]);
}

static const struct shim_opt *recorded(const struct shim_file *f, int level, int name)
{
    for (unsigned i = 0; i < f->nopts; i++)
        if (f->opts[i].level == level && f->opts[i].name == name)
            return &f->opts[i];
    return NULL;
}

static int stack_set(struct shim_sk *k, enum stk_sockopt o, int v)
{
    struct shm_cmd c;
    shim__cmd_init(&c, k, SHM_OP_SETOPT);
    c.a0 = (int32_t)o;
    c.a1 = v;
    return shim__call(k->s->core, &c, NULL);
}

/* TCP_NODELAY and TCP_CORK cannot fail in the engine once the socket exists, and nginx sets
 * TCP_CORK (tcp_nopush) twice per response: they are pushed without waiting for a reply,
 * ordered with the socket's later commands (its data KICKs) on the same core queue. */
static int stack_set_async(struct shim_sk *k, enum stk_sockopt o, int v)
{
    struct shm_cmd c;
    shim__cmd_init(&c, k, SHM_OP_SETOPT);
    c.a0 = (int32_t)o;
    c.a1 = v;
    return shim__push(k->s->core, &c);
}

static int stack_get(struct shim_sk *k, enum stk_sockopt o, int *v)
{
    struct shm_cmd c;
    struct shm_reply *r;
    shim__cmd_init(&c, k, SHM_OP_GETOPT);
    c.a0 = (int32_t)o;
    int rc = shim__call(k->s->core, &c, &r);
    if (rc >= 0)
        *v = r->val;
    return rc;
}

static int get_int(const void *val, socklen_t len, int *out)
{
    if ((int)len < (int)sizeof(int))
        return -EINVAL;
    return shim__uget(out, val, sizeof(int));
}

/* Linux copies min(*len, size) bytes and reports that length. */
static int put_bytes(const void *v, socklen_t size, void *val, socklen_t *len)
{
    socklen_t n;
    if (shim__uget(&n, len, sizeof(n)) < 0)
        return -EFAULT;
    if ((int)n < 0)
        return -EINVAL;
    n = n < size ? n : size;
    if (shim__uput(val, v, n) < 0)
        return -EFAULT;
    return shim__uput(len, &n, sizeof(n));
}

static int put_int(int v, void *val, socklen_t *len)
{
    return put_bytes(&v, sizeof(v), val, len);
}

static int64_t tv_to_ns(const struct timeval *tv)
{
    if (tv->tv_sec < 0)
        return 1; /* Linux: a negative timeout expires at once */
    if (tv->tv_sec == 0 && tv->tv_usec == 0)
        return 0;
    if (tv->tv_sec > SHIM_FOREVER / SHIM_NS_PER_S - 1)
        return 0;
    return (int64_t)tv->tv_sec * SHIM_NS_PER_S + (int64_t)tv->tv_usec * 1000;
}

static int unsupported_set(struct shim_sk *k, int level, int name, const void *val, socklen_t len,
                           bool quiet)
{
    int s = shim__scratch_for(k);
    if (s < 0)
        return -ENOPROTOOPT;
    if (C.sys.setsockopt(s, level, name, val, len) < 0)
        return -errno;
    if (!quiet) {
        char key[32];
        snprintf(key, sizeof(key), "opt%d.%d", level, name);
        shim_warn_once(key,
                       "socket option level %d name %d is accepted but has no effect on "
                       "ustack sockets",
                       level, name);
    }
    shim__record_opt(k->f, level, name, val, len);
    return 0;
}

/* IP_TOS / IPV6_TCLASS: checked and masked by the kernel's scratch socket of the same type
 * (Linux clears the ECN bits of a stream socket's TOS, keeps all eight bits of a datagram
 * socket's, and takes -1 as 0 for the traffic class), recorded as the kernel reads it back,
 * and put on the socket's segments or datagrams. */
static int tos_set(struct shim_sk *k, int level, int name, const void *val, socklen_t len,
                   enum stk_sockopt o)
{
    int rc = unsupported_set(k, level, name, val, len, true);
    if (rc < 0)
        return rc;
    int s = shim__scratch_for(k), v = 0;
    socklen_t vl = sizeof(v);
    if (s < 0 || C.sys.getsockopt(s, level, name, &v, &vl) < 0 || vl != sizeof(v))
        return 0;
    shim__record_opt(k->f, level, name, &v, sizeof(v));
    return stack_set(k, o, v);
}

/* IPPROTO_IPV6 options of an AF_INET6 socket (ipv6(7)). */
static int set6(struct shim_sk *k, int name, const void *val, socklen_t len)
{
    bool dgram = shim__dgram(k);
    int v, rc;
    switch (name) {
    case IPV6_V6ONLY:
        /* Only before the socket has a port (Linux: EINVAL after bind). */
        if ((rc = get_int(val, len, &v)) < 0)
            return rc;
        if (k->f->bound || k->s->la.port)
            return -EINVAL;
        if (v)
            atomic_fetch_or(&k->s->app_flags, SHM_A_V6ONLY);
        else
            atomic_fetch_and(&k->s->app_flags, ~(uint32_t)SHM_A_V6ONLY);
        return 0;
    case IPV6_RECVPKTINFO:
        if (!dgram)
            break;
        /* Kept here: the client fills IPV6_PKTINFO from each datagram's record. */
        if ((rc = get_int(val, len, &v)) < 0)
            return rc;
        v = v != 0;
        shim__record_opt(k->f, IPPROTO_IPV6, name, &v, sizeof(v));
        return 0;
    case IPV6_MULTICAST_IF:
    case IPV6_MULTICAST_HOPS:
    case IPV6_MULTICAST_LOOP:
    case IPV6_MULTICAST_ALL:
        /* Linux accepts these on any UDP socket, and programs set them on every one (the
         * JDK sets IPV6_MULTICAST_HOPS on each AF_INET6 datagram socket it creates and
         * fails the creation otherwise): checked by the kernel, recorded, read back, as
         * IP_MULTICAST_TTL/LOOP/IF/ALL are for IPv4. A TCP socket gets the kernel's answer
         * below (ENOPROTOOPT). Joining a group stays refused. */
        if (dgram)
            return unsupported_set(k, IPPROTO_IPV6, name, val, len, true);
        break;
    case IPV6_ADD_MEMBERSHIP:
    case IPV6_DROP_MEMBERSHIP:
    case MCAST_JOIN_GROUP:
    case MCAST_LEAVE_GROUP:
    case MCAST_JOIN_SOURCE_GROUP:
    case MCAST_LEAVE_SOURCE_GROUP:
        /* No multicast on ustack: refused (a TCP socket's answer from the kernel below). */
        if (dgram)
            return -ENOPROTOOPT;
        break;
    default:
        break;
    }
    if (name == IPV6_TCLASS)
        return tos_set(k, IPPROTO_IPV6, name, val, len, STK_IPV6_TCLASS);
    /* IPV6_UNICAST_HOPS, ...: checked by a kernel AF_INET6 socket, recorded and read back,
     * not applied on the wire (docs/gaps.md "IPv6"). */
    bool quiet = name == IPV6_UNICAST_HOPS || name == IPV6_RECVPKTINFO ||
                 name == IPV6_MTU_DISCOVER || name == IPV6_RECVERR;
    return unsupported_set(k, IPPROTO_IPV6, name, val, len, quiet);
}

int shim_setsockopt(int fd, int level, int name, const void *val, socklen_t len)
{
    SHIM_SK(k);
    int rc = shim__sk(fd, &k);
    if (rc < 0)
        return rc;
    if (!shm_sock_valid(C.base, k.slot, k.gen))
        return -ECONNRESET;
    int v = 0;
    enum stk_sockopt o = 0;
    bool boolean = false;
    bool dgram = shim__dgram(&k);
    if (dgram && level == IPPROTO_TCP)
        return -ENOPROTOOPT; /* ip_setsockopt's answer for a level UDP does not have */
    if (dgram && level == IPPROTO_IP && name == IP_PKTINFO) {
        /* Kept here: the client fills the control message from each datagram's record. */
        if ((rc = get_int(val, len, &v)) < 0)
            return rc;
        v = v != 0;
        shim__record_opt(k.f, level, name, &v, sizeof(v));
        return 0;
    }
    if (level == IPPROTO_IPV6 && shim__domain(&k) == AF_INET6)
        return set6(&k, name, val, len);
    if (level == SOL_SOCKET) {
        switch (name) {
        case SO_REUSEADDR:
            o = STK_SO_REUSEADDR;
            boolean = true;
            break;
        case SO_BROADCAST:
            if (!dgram)
                return unsupported_set(&k, level, name, val, len, true);
            o = STK_SO_BROADCAST;
            boolean = true;
            break;
        case SO_KEEPALIVE:
            if (dgram) /* Linux accepts it on any socket; UDP never uses it */
                return unsupported_set(&k, level, name, val, len, true);
            o = STK_SO_KEEPALIVE;
            boolean = true;
            break;
        case SO_SNDBUF:
        case SO_SNDBUFFORCE:
            o = STK_SO_SNDBUF;
            break;
        case SO_RCVBUF:
        case SO_RCVBUFFORCE:
            o = STK_SO_RCVBUF;
            break;
        case SO_LINGER: {
            struct linger l;
            if (dgram)
                return unsupported_set(&k, level, name, val, len, true);
            if ((int)len < (int)sizeof(l))
                return -EINVAL;
            if (shim__uget(&l, val, sizeof(l)) < 0)
                return -EFAULT;
            if ((rc = stack_set(&k, STK_SO_LINGER, l.l_onoff ? l.l_linger : -1)) < 0)
                return rc;
            /* The last close() waits for the FIN's acknowledgement this long (shim_close). */
            SHIM_STORE(&k.s->linger_s, l.l_onoff && l.l_linger > 0 ? (uint32_t)l.l_linger : 0);
            shim__record_opt(k.f, level, name, val, sizeof(l));
            return 0;
        }
        case SO_RCVTIMEO:
        case SO_SNDTIMEO: {
            struct timeval tv;
            if ((int)len < (int)sizeof(tv))
                return -EINVAL;
            if (shim__uget(&tv, val, sizeof(tv)) < 0)
                return -EFAULT;
            if (tv.tv_usec < 0 || tv.tv_usec >= 1000000)
                return -EDOM;
            *(name == SO_RCVTIMEO ? &k.f->rcvtimeo : &k.f->sndtimeo) = tv_to_ns(&tv);
            shim__record_opt(k.f, level, name, val, sizeof(tv));
            return 0;
        }
        case SO_TYPE:
        case SO_DOMAIN:
        case SO_PROTOCOL:
        case SO_ERROR:
        case SO_ACCEPTCONN:
            return -ENOPROTOOPT;
        case SO_REUSEPORT:
            /* The stack's group key is the region owner's uid: sockets of any process of
             * that user may share the port (docs/preload.md "Routing"). */
            o = STK_SO_REUSEPORT;
            boolean = true;
            break;
        default:
            return unsupported_set(&k, level, name, val, len, false);
        }
    } else if (level == IPPROTO_TCP) {
        switch (name) {
        case TCP_NODELAY:
            o = STK_TCP_NODELAY;
            boolean = true;
            break;
        case TCP_CORK:
            o = STK_TCP_CORK;
            boolean = true;
            break;
        case TCP_KEEPIDLE:
        case TCP_KEEPINTVL:
            if ((rc = get_int(val, len, &v)) < 0)
                return rc;
            if (v < 1 || v > 32767)
                return -EINVAL;
            o = name == TCP_KEEPIDLE ? STK_TCP_KEEPIDLE : STK_TCP_KEEPINTVL;
            break;
        case TCP_KEEPCNT:
            if ((rc = get_int(val, len, &v)) < 0)
                return rc;
            if (v < 1 || v > 127)
                return -EINVAL;
            o = STK_TCP_KEEPCNT;
            break;
        case TCP_USER_TIMEOUT:
            if ((rc = get_int(val, len, &v)) < 0)
                return rc;
            if (v < 0)
                return -EINVAL;
            o = STK_TCP_USER_TIMEOUT;
            break;
        case TCP_SYNCNT:
            if ((rc = get_int(val, len, &v)) < 0)
                return rc;
            if (v < 1 || v > 127)
                return -EINVAL;
            o = STK_TCP_SYNCNT;
            break;
        case TCP_MAXSEG:
            o = STK_TCP_MAXSEG;
            break;
        case TCP_DEFER_ACCEPT:
            o = STK_TCP_DEFER_ACCEPT;
            break;
        case TCP_CONGESTION: {
            char name_[17] = {0};
            if ((int)len < 1)
                return -EINVAL;
            if (shim__uget(name_, val, len < 16 ? len : 16) < 0)
                return -EFAULT;
            int algo;
            if (!strcmp(name_, "reno"))
                algo = STK_CC_NEWRENO;
            else if (!strcmp(name_, "cubic"))
                algo = STK_CC_CUBIC;
            else
                return -ENOENT; /* as Linux for an algorithm it does not have */
            if ((rc = stack_set(&k, STK_TCP_CONGESTION, algo)) < 0)
                return rc;
            shim__record_opt(k.f, level, name, val, len < 16 ? len : 16);
            return 0;
        }
        case TCP_FASTOPEN_CONNECT:
            /* ustack has no TCP Fast Open: what Linux says with the client side off. */
            return -EOPNOTSUPP;
        case TCP_FASTOPEN:
            /* Linux accepts it whatever its sysctls say; it changes nothing here. */
            return unsupported_set(&k, level, name, val, len, true);
        case TCP_QUICKACK:
            /* Checked by the kernel (as Linux: any int), recorded for getsockopt; a nonzero
             * value sends an ACK the stack is delaying now, without waiting for a reply. */
            if ((rc = unsupported_set(&k, level, name, val, len, true)) < 0)
                return rc;
            if (get_int(val, len, &v) == 0 && v)
                stack_set_async(&k, STK_TCP_QUICKACK, 1);
            return 0;
        default:
            return unsupported_set(&k, level, name, val, len, false);
        }
    } else if (level == IPPROTO_IP && name == IP_TOS) {
        return tos_set(&k, level, name, val, len, STK_IP_TOS);
    } else if (level == IPPROTO_IP && name == IP_BIND_ADDRESS_NO_PORT) {
        /* A hint (curl sets it for --local-port): Linux then picks a bound socket's port at
         * connect, to share it among 4-tuples. ustack never shares a live local port
         * (docs/gaps.md), so the hint changes nothing: recorded without a word. */
        return unsupported_set(&k, level, name, val, len, true);
    } else {
        /* IP-level options UDP programs set as a matter of course (IP_MTU_DISCOVER,
         * IP_RECVERR, ...): recorded without a word (docs/gaps.md "UDP"). */
        return unsupported_set(&k, level, name, val, len, dgram && level == IPPROTO_IP);
    }
    if ((rc = get_int(val, len, &v)) < 0)
        return rc;
    if (boolean)
        v = v != 0;
    rc =
        o == STK_TCP_NODELAY || o == STK_TCP_CORK ? stack_set_async(&k, o, v) : stack_set(&k, o, v);
    if (rc < 0)
        return rc;
    shim__record_opt(k.f, level, name, &v, sizeof(v));
    return 0;
}

static uint8_t linux_state(uint8_t s)
{
    /* Linux's TCP_* state numbers (include/net/tcp_states.h). */
    static const uint8_t map[] = {
        [STK_TCP_CLOSED] = 7,       [STK_TCP_LISTEN] = 10,     [STK_TCP_SYN_SENT] = 2,
        [STK_TCP_SYN_RECEIVED] = 3, [STK_TCP_ESTABLISHED] = 1, [STK_TCP_FIN_WAIT_1] = 4,
        [STK_TCP_FIN_WAIT_2] = 5,   [STK_TCP_CLOSE_WAIT] = 8,  [STK_TCP_CLOSING] = 11,
        [STK_TCP_LAST_ACK] = 9,     [STK_TCP_TIME_WAIT] = 6,
    };
    return s < sizeof(map) ? map[s] : 7;
}

static int tcp_info(struct shim_sk *k, void *val, socklen_t *len)
{
    struct shim_tcp_info ti;
    memset(&ti, 0, sizeof(ti));
    struct shm_cmd c;
    struct shm_reply *r;
    shim__cmd_init(&c, k, SHM_OP_INFO);
    if (shim__call(k->s->core, &c, &r) < 0) {
        ti.base.tcpi_state = 7; /* TCP_CLOSE */
        return put_bytes(&ti, sizeof(ti), val, len);
    }
    struct stk_tcp_info si;
    memcpy(&si, r->info, sizeof(si) < sizeof(r->info) ? sizeof(si) : sizeof(r->info));
    uint32_t mss = si.snd_mss ? si.snd_mss : 1;
    ti.base.tcpi_state = linux_state(si.state);
    ti.base.tcpi_ca_state = si.ca_state;
    ti.base.tcpi_retransmits = si.retransmits;
    ti.base.tcpi_backoff = si.backoff;
    ti.base.tcpi_options = si.options; /* same bits: 1 TS, 2 SACK, 4 WSCALE */
    ti.base.tcpi_snd_wscale = si.snd_wscale & 15;
    ti.base.tcpi_rcv_wscale = si.rcv_wscale & 15;
    ti.base.tcpi_rto = si.rto_us;
    ti.base.tcpi_snd_mss = si.snd_mss;
    ti.base.tcpi_rcv_mss = si.rcv_mss;
    /* Linux counts these in segments; the engine in bytes. */
    ti.base.tcpi_unacked = (si.unacked + mss - 1) / mss;
    ti.base.tcpi_sacked = si.sacked / mss;
    ti.base.tcpi_lost = si.lost / mss;
    ti.base.tcpi_retrans = si.retrans / mss;
    ti.base.tcpi_rtt = si.rtt_us;
    ti.base.tcpi_rttvar = si.rttvar_us;
    ti.base.tcpi_snd_ssthresh = si.snd_ssthresh / mss;
    ti.base.tcpi_snd_cwnd = si.snd_cwnd / mss;
    ti.base.tcpi_advmss = si.rcv_mss;
    ti.base.tcpi_pmtu = si.snd_mss + 40;
    ti.base.tcpi_rcv_space = si.rcv_wnd;
    ti.base.tcpi_total_retrans = (uint32_t)si.total_retrans;
    ti.tcpi_bytes_acked = si.bytes_acked;
    ti.tcpi_bytes_received = si.bytes_received;
    ti.tcpi_segs_in = (uint32_t)si.segs_in;
    ti.tcpi_segs_out = (uint32_t)si.segs_out;
    ti.tcpi_snd_wnd = si.snd_wnd;
    ti.tcpi_notsent_bytes = shm_ring_used(&k->s->tx, C.ring);
    return put_bytes(&ti, sizeof(ti), val, len);
}

static int unsupported_get(struct shim_sk *k, int level, int name, void *val, socklen_t *len)
{
    const struct shim_opt *o = recorded(k->f, level, name);
    if (o)
        return put_bytes(o->val, o->len, val, len);
    int s = shim__scratch_for(k);
    if (s < 0)
        return -ENOPROTOOPT;
    return C.sys.getsockopt(s, level, name, val, len) < 0 ? -errno : 0;
}

int shim_getsockopt(int fd, int level, int name, void *val, socklen_t *len)
{
    SHIM_SK(k);
    int rc = shim__sk(fd, &k);
    if (rc < 0)
        return rc;
    socklen_t n0;
    if (shim__uget(&n0, len, sizeof(n0)) < 0)
        return -EFAULT;
    if ((int)n0 < 0)
        return -EINVAL;
    int v = 0;
    enum stk_sockopt o = 0;
    if (level == IPPROTO_IPV6 && shim__domain(&k) == AF_INET6) {
        if (name == IPV6_V6ONLY)
            return put_int((SHIM_LOAD(&k.s->app_flags) & SHM_A_V6ONLY) != 0, val, len);
        if (name == IPV6_RECVPKTINFO && shim__dgram(&k))
            return put_int(shim__opt_on(k.f, IPPROTO_IPV6, name), val, len);
        return unsupported_get(&k, level, name, val, len);
    }
    if (level == SOL_SOCKET) {
        switch (name) {
        case SO_TYPE:
            return put_int(shim__dgram(&k) ? SOCK_DGRAM : SOCK_STREAM, val, len);
        case SO_DOMAIN:
            return put_int(shim__domain(&k), val, len);
        case SO_PROTOCOL:
            return put_int(shim__dgram(&k) ? IPPROTO_UDP : IPPROTO_TCP, val, len);
        case SO_BROADCAST:
            if (!shim__dgram(&k))
                return unsupported_get(&k, level, name, val, len);
            o = STK_SO_BROADCAST;
            break;
        case SO_ACCEPTCONN:
            /* shutdown(SHUT_RD) stopped a listener (Linux: it is closed). */
            return put_int(k.f->cstate == SHIM_CS_LISTEN &&
                               !(SHIM_LOAD(&k.s->app_flags) & SHM_A_RD_SHUT),
                           val, len);
        case SO_ERROR: {
            /* Through the stack, which also clears SHM_F_ERROR and reports an error the
             * engine holds but has not published. */
            int e = 0;
            if (stack_get(&k, STK_SO_ERROR, &e) < 0)
                e = shim__take_error(k.s);
            if (e > 0 && k.f->cstate == SHIM_CS_CONNECTING)
                k.f->cstate = SHIM_CS_FAILED;
            return put_int(e > 0 ? e : 0, val, len);
        }
        case SO_RCVTIMEO:
        case SO_SNDTIMEO: {
            int64_t ns = name == SO_RCVTIMEO ? k.f->rcvtimeo : k.f->sndtimeo;
            struct timeval tv = {(time_t)(ns / SHIM_NS_PER_S),
                                 (suseconds_t)(ns % SHIM_NS_PER_S / 1000)};
            return put_bytes(&tv, sizeof(tv), val, len);
        }
        case SO_LINGER: {
            if ((rc = stack_get(&k, STK_SO_LINGER, &v)) < 0)
                return rc;
            struct linger l = {v >= 0, v >= 0 ? v : 0};
            return put_bytes(&l, sizeof(l), val, len);
        }
        case SO_REUSEADDR:
            o = STK_SO_REUSEADDR;
            break;
        case SO_KEEPALIVE:
            o = STK_SO_KEEPALIVE;
            break;
        case SO_SNDBUF:
        case SO_RCVBUF: {
            /* A size the application set reads back as Linux reports it (doubled for the
             * kernel's bookkeeping, clamped by net.core.[rw]mem_max): the kernel's own
             * answer, from the scratch socket. The engine's size is used otherwise. */
            const struct shim_opt *r = recorded(k.f, level, name);
            int s = r && r->len >= sizeof(int) ? shim__scratch() : -1;
            if (s >= 0) {
                shim__lock();
                socklen_t l = sizeof(v);
                rc = C.sys.setsockopt(s, level, name, r->val, sizeof(int)) == 0 &&
                             C.sys.getsockopt(s, level, name, &v, &l) == 0
                         ? 0
                         : -1;
                shim__unlock();
                if (rc == 0)
                    return put_int(v, val, len);
            }
            o = name == SO_SNDBUF ? STK_SO_SNDBUF : STK_SO_RCVBUF;
            break;
        }
        default:
            return unsupported_get(&k, level, name, val, len);
        }
    } else if (level == IPPROTO_TCP && shim__dgram(&k)) {
        return -EOPNOTSUPP; /* Linux: a TCP option on a UDP socket (ip_getsockopt) */
    } else if (level == IPPROTO_TCP) {
        switch (name) {
        case TCP_NODELAY:
            o = STK_TCP_NODELAY;
            break;
        case TCP_CORK:
            o = STK_TCP_CORK;
            break;
        case TCP_KEEPIDLE:
            o = STK_TCP_KEEPIDLE;
            break;
        case TCP_KEEPINTVL:
            o = STK_TCP_KEEPINTVL;
            break;
        case TCP_KEEPCNT:
            o = STK_TCP_KEEPCNT;
            break;
        case TCP_USER_TIMEOUT:
            o = STK_TCP_USER_TIMEOUT;
            break;
        case TCP_SYNCNT:
            o = STK_TCP_SYNCNT;
            break;
        case TCP_MAXSEG:
            o = STK_TCP_MAXSEG;
            break;
        case TCP_DEFER_ACCEPT:
            o = STK_TCP_DEFER_ACCEPT;
            break;
        case TCP_INFO:
            return tcp_info(&k, val, len);
        case TCP_CONGESTION: {
            if ((rc = stack_get(&k, STK_TCP_CONGESTION, &v)) < 0)
                return rc;
            char name_[16] = {0};
            strcpy(name_, v == STK_CC_CUBIC ? "cubic" : "reno");
            return put_bytes(name_, sizeof(name_), val, len);
        }
        case TCP_FASTOPEN_CONNECT:
            return put_int(0, val, len);
        default:
            return unsupported_get(&k, level, name, val, len);
        }
    } else {
        return unsupported_get(&k, level, name, val, len);
    }
    if ((rc = stack_get(&k, o, &v)) < 0)
        return rc;
    return put_int(v, val, len);
}

/* ---- fcntl, ioctl -------------------------------------------------------------------- */

int shim_fcntl(int fd, int cmd, void *arg)
{
    struct shim_fd *e = shim_fdtab_get(&shim_fds, fd);
    enum shim_fd_kind kind = e ? (enum shim_fd_kind)SHIM_RLX(&e->kind) : SHIM_FD_KERNEL;
    int iarg = (int)(intptr_t)arg;
    if (kind == SHIM_FD_SPARE)
        return -EBADF; /* closed for the application (client.c "Spare eventfds") */
    switch (cmd) {
    case F_DUPFD:
    case F_DUPFD_CLOEXEC:
        if (kind == SHIM_FD_SOCK || kind == SHIM_FD_EPOLL) {
            shim__lock();
            int n = C.sys.fcntl(fd, cmd, iarg);
            int rc = n < 0 ? -errno : n;
            if (n >= 0) {
                int r2 = shim_fdtab_dup(&shim_fds, fd, n, cmd == F_DUPFD_CLOEXEC);
                if (r2 < 0) {
                    C.sys.close(n);
                    rc = r2;
                } else if (kind == SHIM_FD_SOCK) {
                    if (shm_sock_valid(C.base, e->slot, e->gen))
                        shim__ref_add(e->slot, 1);
                    if (C.files[e->slot].gen == e->gen)
                        C.files[e->slot].nfds++;
                } else {
                    shim__epoll_ref(e->obj);
                }
            }
            shim__unlock();
            return rc;
        }
        break;
    case F_SETFD:
        if (kind == SHIM_FD_PRIV)
            return 0; /* the library's fds stay inheritable by exec'd programs */
        if (C.sys.fcntl(fd, cmd, iarg) < 0)
            return -errno;
        if (e)
            e->cloexec = (iarg & FD_CLOEXEC) != 0;
        return 0;
    case F_GETFL:
        if (kind == SHIM_FD_SOCK) {
            SHIM_SK(k);
            if (shim__sk(fd, &k) < 0)
                break; /* closed meanwhile: the kernel's answer */
            return O_RDWR | (k.f->nonblock ? O_NONBLOCK : 0);
        }
        break;
    case F_SETFL:
        if (kind == SHIM_FD_SOCK) {
            SHIM_SK(k);
            if (shim__sk(fd, &k) < 0)
                break; /* closed meanwhile: the kernel's answer */
            k.f->nonblock = (iarg & O_NONBLOCK) != 0;
            if (iarg & O_ASYNC)
                shim_warn_once("async", "O_ASYNC (SIGIO) is not supported on ustack sockets");
            return 0;
        }
        break;
    case F_SETOWN:
    case F_SETOWN_EX:
    case F_SETSIG:
        if (kind == SHIM_FD_SOCK)
            shim_warn_once("setown", "F_SETOWN/F_SETSIG: ustack sockets send no SIGIO/SIGURG");
        break;
    default:
        break;
    }
    int r = C.sys.fcntl(fd, cmd, arg);
    return r < 0 ? -errno : r;
}

int shim_ioctl(int fd, unsigned long req, void *arg)
{
    if (shim_fd_kind(fd) == SHIM_FD_SPARE)
        return -EBADF; /* closed for the application (client.c "Spare eventfds") */
    SHIM_SK(k);
    if (shim__sk(fd, &k) < 0) {
        int r = C.sys.ioctl(fd, req, arg);
        return r < 0 ? -errno : r;
    }
    int v;
    switch (req) {
    case FIONBIO:
        if (shim__uget(&v, arg, sizeof(v)) < 0)
            return -EFAULT;
        k.f->nonblock = v != 0;
        return 0;
    case FIOCLEX:
    case FIONCLEX: {
        if (C.sys.ioctl(fd, req, arg) < 0)
            return -errno;
        struct shim_fd *e = shim_fdtab_get(&shim_fds, fd);
        if (e)
            e->cloexec = req == FIOCLEX;
        return 0;
    }
    case FIONREAD: /* == SIOCINQ */
        if (shim__badp(arg))
            return -EFAULT;
        if (k.f->cstate == SHIM_CS_LISTEN)
            return -EINVAL;
        /* UDP: the next datagram's size, as Linux's udp_ioctl. */
        v = shim__dgram(&k) ? shim__dg_next_len(&k) : (int)shm_ring_used(&k.s->rx, C.ring);
        return shim__uput(arg, &v, sizeof(v));
    case SIOCOUTQ:
    case SIOCOUTQNSD: {
        if (shim__badp(arg))
            return -EFAULT;
        if (k.f->cstate == SHIM_CS_LISTEN)
            return -EINVAL;
        int unsent = 0;
        /* Unsent bytes in the ring, plus (SIOCOUTQ) what the engine holds unacknowledged. */
        if (req == SIOCOUTQ && (SHIM_LOAD(&k.s->flags) & SHM_F_CONNECTED) &&
            stack_get(&k, STK_SO_NWRITE, &unsent) < 0)
            unsent = 0;
        v = (int)shm_ring_used(&k.s->tx, C.ring) + unsent;
        return shim__uput(arg, &v, sizeof(v));
    }
    case SIOCATMARK:
        if (shim__badp(arg))
            return -EFAULT;
        v = 0;
        return shim__uput(arg, &v, sizeof(v));
    case FIOASYNC:
        shim_warn_once("async", "O_ASYNC (SIGIO) is not supported on ustack sockets");
        return 0;
    default: {
        /* Interface and routing ioctls are often made through any socket: the kernel's. */
        int s = shim__scratch();
        if (s < 0)
            return -ENOTTY;
        int r = C.sys.ioctl(s, req, arg);
        return r < 0 ? -errno : r;
    }
    }
}

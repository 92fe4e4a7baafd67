/*
 * tcp_icmp.c - ICMP and ICMPv6 errors about TCP segments we sent (RFC 1122 4.2.3.9,
 * RFC 5927, RFC 1191, RFC 8201), with Linux's semantics (tcp_v4_err, tcp_v6_err):
 *
 * - the connection is found from the quoted addresses and ports; the quoted sequence number
 *   must lie in [SND.UNA, SND.MAX] (RFC 5927 4.1), else the error is counted and ignored;
 * - in SYN-SENT (and an active open's SYN-RECEIVED) every error but a path MTU one ends the
 *   connection with its errno, so connect() fails at once;
 * - a passive SYN-RECEIVED child (not yet accepted) is dropped silently on the errors Linux
 *   drops its request socket for (tcp_req_err), and otherwise left alone;
 * - in a synchronized state the error is a soft error: not reported now (as Linux without
 *   IP_RECVERR), but if the connection then times out it is reported instead of ETIMEDOUT,
 *   and SO_ERROR returns it;
 * - a net/host unreachable about SND.UNA while the retransmission timer is backed off
 *   undoes one backoff step (RFC 6069);
 * - fragmentation needed / Packet Too Big lower the connection's path MTU and MSS, and what
 *   is in flight is sent again at the new size, without a congestion response (Linux's
 *   tcp_simple_retransmit).
 */
#include <string.h>

#include "tcp.h"

#define ICMP_UNREACH          3
#define ICMP_UNREACH_NEEDFRAG 4
#define ICMP_TIMXCEED         11
#define ICMP_PARAMPROB        12
#define ICMP_MIN_PMTU         552 /* Linux's min_pmtu (route.c) */

#define ICMP6_DST_UNREACH    1
#define ICMP6_PACKET_TOO_BIG 2
#define ICMP6_TIME_EXCEEDED  3
#define ICMP6_PARAM_PROB     4
#define ICMP6_MIN_MTU        1280 /* RFC 8200 section 5 */

/* Linux's icmp_err_convert: errno and fatality of each destination unreachable code. */
static const struct {
    uint8_t err;
    bool fatal;
} unreach4[16] = {
    {ENETUNREACH, false},  /* 0 network unreachable */
    {EHOSTUNREACH, false}, /* 1 host unreachable */
    {ENOPROTOOPT, true},   /* 2 protocol unreachable */
    {ECONNREFUSED, true},  /* 3 port unreachable */
    {EMSGSIZE, false},     /* 4 fragmentation needed (path MTU, handled apart) */
    {EOPNOTSUPP, false},   /* 5 source route failed */
    {ENETUNREACH, true},   /* 6 destination network unknown */
    {EHOSTDOWN, true},     /* 7 destination host unknown */
    {ENONET, true},        /* 8 source host isolated */
    {ENETUNREACH, true},   /* 9 network administratively prohibited */
    {EHOSTUNREACH, true},  /* 10 host administratively prohibited */
    {ENETUNREACH, false},  /* 11 network unreachable for TOS */
    {EHOSTUNREACH, false}, /* 12 host unreachable for TOS */
    {EHOSTUNREACH, true},  /* 13 communication administratively prohibited */
    {EHOSTUNREACH, true},  /* 14 host precedence violation */
    {EHOSTUNREACH, true},  /* 15 precedence cutoff in effect */
};

/* Linux's icmpv6_err_convert for destination unreachable. */
static const struct {
    uint8_t err;
    bool fatal;
} unreach6[7] = {
    {ENETUNREACH, false},  /* 0 no route */
    {EACCES, true},        /* 1 administratively prohibited */
    {EHOSTUNREACH, false}, /* 2 beyond the scope of the source address */
    {EHOSTUNREACH, false}, /* 3 address unreachable */
    {ECONNREFUSED, true},  /* 4 port unreachable */
    {EACCES, true},        /* 5 source address failed ingress/egress policy */
    {EACCES, true},        /* 6 reject route */
};

bool stk__icmp4_err(uint8_t type, uint8_t code, int *err)
{
    switch (type) {
    case ICMP_UNREACH:
        if (code >= 16) {
            *err = EHOSTUNREACH;
            return false;
        }
        *err = unreach4[code].err;
        return unreach4[code].fatal;
    case ICMP_TIMXCEED:
        *err = EHOSTUNREACH;
        return false;
    case ICMP_PARAMPROB:
        *err = EPROTO;
        return true;
    default:
        *err = 0;
        return false;
    }
}

bool stk__icmp6_err(uint8_t type, uint8_t code, int *err)
{
    *err = EPROTO; /* unknown error types: EPROTO, not fatal */
    switch (type) {
    case ICMP6_DST_UNREACH:
        if (code >= 7)
            return true;
        *err = unreach6[code].err;
        return unreach6[code].fatal;
    case ICMP6_PACKET_TOO_BIG:
        *err = EMSGSIZE;
        return false;
    case ICMP6_TIME_EXCEEDED:
        *err = EHOSTUNREACH;
        return false;
    case ICMP6_PARAM_PROB:
        return true;
    default:
        return false;
    }
}

/* Sends again, at the new MSS, everything in flight (Linux's tcp_simple_retransmit): the
 * segments were too big for the path and are gone, which says nothing about congestion, so
 * cwnd and ssthresh stay. As after a timeout, snd_nxt goes back to snd_una (output skips
 * what SACK says arrived) and duplicate ACKs do not start a fast retransmit until snd_una
 * passes what was outstanding. */
static void pmtu_retransmit(struct stk_engine *e, struct stk_tcb *t, stk_time_t now)
{
    if (!stk__state_synced(t->state) || t->snd_una == t->snd_max)
        return;
    t->flags &= ~(TF_RTT_TIMING | TF_IN_RECOVERY | TF_TLP_OUT | TF_TLP_RXT);
    t->t_pto = 0;
    t->dupacks = 0;
    stk__tcp_resend_flight(e, t, now);
    stk__timer_update(e, t);
}

/* RFC 6069: a net or host unreachable about the segment at SND.UNA while the retransmission
 * timer is backed off says the path, not congestion, lost it: one backoff step is undone and
 * the timer re-armed from when that segment was last sent (or it fires now), so that the
 * connection recovers quickly once the path is back (Linux's tcp_ld_RTO_revert). */
static void rto_revert(struct stk_engine *e, struct stk_tcb *t, uint32_t seq, stk_time_t now)
{
    if (seq != t->snd_una || !t->retries || !t->backoff || !t->t_rexmt || t->snd_una == t->snd_max)
        return;
    stk_time_t sent = t->t_rexmt > t->rto_us ? t->t_rexmt - t->rto_us : 0;
    t->backoff--;
    uint64_t base =
        t->srtt_us ? (uint64_t)t->srtt_us + stk__max32(4 * t->rttvar_us, 1000) : e->cfg.rto_init_us;
    base = stk__max64(base, e->cfg.rto_min_us);
    t->rto_us = (uint32_t)stk__min64(base << t->backoff, e->cfg.rto_max_us);
    e->ctr.tcp_rto_reverts++;
    t->t_rexmt = sent + t->rto_us > now ? sent + t->rto_us : now;
    stk__timer_update(e, t);
}

/* A new path MTU for t (already floored by the caller). Only a decrease is taken (RFC 1191
 * section 6.3; increases would come from probing, which is not done). */
static void pmtu_update(struct stk_engine *e, struct stk_tcb *t, uint32_t mtu, stk_time_t now)
{
    if (mtu >= stk__tcp_pmtu(e, t)) {
        e->ctr.tcp_pmtu_ignored++;
        return;
    }
    e->ctr.tcp_pmtu_updates++;
    t->pmtu = (uint16_t)mtu;
    /* Before the SYN-ACK the MSS is fixed later from the path MTU (tcp_in.c clamp_mss). */
    if (t->state == STK_TCP_SYN_SENT)
        return;
    uint32_t mss = mtu - stk__tcp_nethlen(t) - ((t->flags & TF_TS) ? 12u : 0u);
    if (mss >= t->snd_mss)
        return;
    t->snd_mss = (uint16_t)mss;
    stk__cc_set_mss(&t->cc, mss);
    pmtu_retransmit(e, t, now);
}

/* The connection an error names has passed the lookup: the sequence check, then the state
 * decides. err is the errno of the error; req_abort: a passive SYN-RECEIVED child is dropped
 * for it; pmtu nonzero: a path MTU message. Readiness is reported before returning. */
static void conn_error(struct stk_engine *e, struct stk_tcb *t, uint32_t seq, int err,
                       bool req_abort, uint32_t pmtu, bool revert, stk_time_t now)
{
    if (t->state == STK_TCP_TIME_WAIT || t->state == STK_TCP_CLOSED) {
        e->ctr.tcp_icmp_nosock++;
        return;
    }
    /* RFC 5927 4.1: only a segment in flight can be the one the error is about. */
    if (stk__seq_lt(seq, t->snd_una) || stk__seq_gt(seq, t->snd_max)) {
        e->ctr.tcp_icmp_outwin++;
        return;
    }
    if (pmtu) {
        pmtu_update(e, t, pmtu, now);
        return;
    }
    if (t->state == STK_TCP_SYN_RECEIVED && (t->flags & TF_PASSIVE)) {
        /* Linux keeps a request socket here and drops it, silently, only on some errors
         * (tcp_req_err); the quoted sequence number must be our ISN. */
        if (seq != t->iss) {
            e->ctr.tcp_icmp_outwin++;
        } else if (req_abort) {
            e->ctr.tcp_icmp_hard++;
            stk__tcp_drop(e, t, 0);
        } else {
            e->ctr.tcp_icmp_soft++;
        }
        return;
    }
    if (t->state == STK_TCP_SYN_SENT || t->state == STK_TCP_SYN_RECEIVED) {
        e->ctr.tcp_icmp_hard++;
        stk__tcp_drop(e, t, err);
        return;
    }
    e->ctr.tcp_icmp_soft++;
    t->soft_error = err;
    if (revert)
        rto_revert(e, t, seq, now);
}

void stk__tcp_icmp_error(struct stk_engine *e, stk_time_t now, uint8_t type, uint8_t code,
                         uint32_t info, const uint8_t *q, size_t len)
{
    if (!e->tcp || len < STK_IP_HLEN)
        return;
    size_t hlen = (size_t)(q[0] & 0x0f) * 4;
    /* A quote of a later fragment holds no TCP header (we never fragment TCP anyway). */
    if ((q[0] >> 4) != 4 || hlen < STK_IP_HLEN || len < hlen + 8 || q[9] != STK_IP_PROTO_TCP ||
        (stk__get16(q + 6) & 0x1fff) != 0)
        return;
    e->ctr.tcp_icmp_err_in++;
    bool unreach = type == ICMP_UNREACH;
    if (unreach ? code >= 16 : type != ICMP_TIMXCEED && type != ICMP_PARAMPROB)
        return; /* unknown types and codes are ignored, as Linux */
    int err;
    stk__icmp4_err(type, code, &err);
    bool req_abort = !unreach || code <= 1;
    uint32_t pmtu = 0;
    if (unreach && code == ICMP_UNREACH_NEEDFRAG) {
        pmtu = info & 0xffff;
        if (pmtu == 0) {
            /* An old router that does not say (RFC 1191 section 5): ignored. */
            e->ctr.tcp_pmtu_ignored++;
            return;
        }
        /* Below the floor Linux takes min_pmtu (and stops setting DF; we do not). */
        if (pmtu < ICMP_MIN_PMTU)
            pmtu = ICMP_MIN_PMTU;
    }
    uint32_t src = stk__get32(q + 12), dst = stk__get32(q + 16);
    const uint8_t *th = q + hlen;
    uint16_t sport = stk__get16(th), dport = stk__get16(th + 2);
    struct stk_tcb *t = stk__conn_lookup(e, src, sport, dst, dport);
    if (!t) {
        /* Listeners send nothing; a tuple without a connection is stale or forged. */
        e->ctr.tcp_icmp_nosock++;
        return;
    }
    conn_error(e, t, stk__get32(th + 4), err, req_abort, pmtu, type == ICMP_UNREACH && code <= 1,
               now);
    stk__flush_events(e);
}

void stk__tcp6_icmp_error(struct stk_engine *e, stk_time_t now, uint8_t type, uint8_t code,
                          uint32_t info, const uint8_t src[16], const uint8_t dst[16],
                          const uint8_t *th, size_t thlen)
{
    if (!e->tcp || thlen < 8)
        return;
    e->ctr.tcp_icmp_err_in++;
    int err;
    bool fatal = stk__icmp6_err(type, code, &err);
    uint32_t pmtu = 0;
    if (type == ICMP6_PACKET_TOO_BIG) {
        /* RFC 8201 section 4: below the IPv6 minimum the message is ignored (RFC 8200 no
         * longer has nodes add a Fragment header), as Linux does. */
        if (info < ICMP6_MIN_MTU) {
            e->ctr.tcp_pmtu_ignored++;
            return;
        }
        pmtu = stk__min32(info, 65535);
    }
    uint16_t sport = stk__get16(th), dport = stk__get16(th + 2);
    struct stk_tcb *t = stk__conn_lookup6(e, src, sport, dst, dport);
    if (!t) {
        e->ctr.tcp_icmp_nosock++;
        return;
    }
    conn_error(e, t, stk__get32(th + 4), err, fatal, pmtu, type == ICMP6_DST_UNREACH && code == 0,
               now);
    stk__flush_events(e);
}

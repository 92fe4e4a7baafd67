/*
 * engine.c - engine life cycle, time, timers and memory.
 */
#include <stdlib.h>
#include <string.h>

#include "stk_int.h"
#include "tcp.h"
#include "udp.h"

static void *default_alloc(void *ctx, size_t size)
{
    (void)ctx;
    return malloc(size);
}

static void default_free(void *ctx, void *p, size_t size)
{
    (void)ctx;
    (void)size;
    free(p);
}

void *stk__alloc(struct stk_engine *e, size_t size)
{
    void *p = e->cfg.alloc(e->cfg.mem_ctx, size);
    if (p)
        memset(p, 0, size);
    return p;
}

void stk__free(struct stk_engine *e, void *p, size_t size)
{
    if (p)
        e->cfg.free(e->cfg.mem_ctx, p, size);
}

/* Fills in the defaults documented in stk.h so the rest of the engine never checks for 0. */
static int apply_defaults(struct stk_config *c)
{
    if (!c->tx)
        return -EINVAL;
    if (c->prefix > 32)
        return -EINVAL;
    if (!c->alloc || !c->free) {
        c->alloc = default_alloc;
        c->free = default_free;
    }
    if (c->mtu == 0)
        c->mtu = 1500;
    if (c->mtu < 576 || c->mtu > 9000)
        return -EINVAL;
    if (c->tso_max == 0 || c->tso_max > 65000)
        c->tso_max = 65000;
    if (c->port_lo == 0 && c->port_hi == 0) {
        c->port_lo = 32768;
        c->port_hi = 60999;
    }
    if (c->port_lo == 0 || c->port_hi < c->port_lo)
        return -EINVAL;
    if (c->max_socks == 0)
        c->max_socks = 65536;
    if (c->max_socks > (1u << 24))
        return -EINVAL;
    c->sndbuf = stk__roundup_pow2(c->sndbuf ? c->sndbuf : STK_BUF_DEFAULT);
    c->rcvbuf = stk__roundup_pow2(c->rcvbuf ? c->rcvbuf : STK_BUF_DEFAULT);
    c->sndbuf = stk__max32(c->sndbuf, 4096);
    c->rcvbuf = stk__max32(c->rcvbuf, 4096);
    c->rcvbuf_max = stk__roundup_pow2(c->rcvbuf_max ? c->rcvbuf_max : STK_BUF_AUTO_MAX);
    c->rcvbuf_max = stk__min32(stk__max32(c->rcvbuf_max, c->rcvbuf), 1u << 26);
    c->sndbuf_max = stk__roundup_pow2(c->sndbuf_max ? c->sndbuf_max : STK_BUF_AUTO_MAX);
    c->sndbuf_max = stk__min32(stk__max32(c->sndbuf_max, c->sndbuf), 1u << 26);
    if (c->rto_min_us == 0)
        c->rto_min_us = 200 * 1000;
    if (c->rto_max_us == 0)
        c->rto_max_us = 60 * 1000 * 1000;
    if (c->rto_init_us == 0)
        c->rto_init_us = 1000 * 1000;
    if (c->delack_us == 0)
        c->delack_us = 40 * 1000;
    if (c->msl_us == 0)
        c->msl_us = 30 * 1000 * 1000;
    if (c->syn_retries == 0)
        c->syn_retries = 6;
    if (c->data_retries == 0)
        c->data_retries = 15;
    if (c->arp_timeout_us == 0)
        c->arp_timeout_us = 60 * 1000 * 1000;
    if (c->challenge_ack_per_s == 0)
        c->challenge_ack_per_s = 1000;
    if (c->ipfrag_mem == 0)
        c->ipfrag_mem = 4u << 20;
    if (c->ipfrag_max == 0)
        c->ipfrag_max = 1024;
    if (c->ipfrag_time_us == 0)
        c->ipfrag_time_us = 30 * 1000 * 1000;
    if (c->cc != STK_CC_NEWRENO && c->cc != STK_CC_CUBIC)
        return -EINVAL;
    if (c->nd_reachable_us == 0)
        c->nd_reachable_us = 30 * 1000 * 1000;
    /* A global IPv6 address needs a prefix, and neither it nor the gateway may be a group. */
    static const uint8_t zero16[16];
    bool has6 = memcmp(c->ip6, zero16, 16) != 0;
    if ((has6 && (c->ip6_prefix == 0 || c->ip6_prefix > 128 || c->ip6[0] == 0xff)) ||
        c->gateway6[0] == 0xff)
        return -EINVAL;
    return 0;
}

int stk_engine_create(const struct stk_config *cfg, stk_time_t now, struct stk_engine **out)
{
    struct stk_config c = *cfg;
    int rc = apply_defaults(&c);
    if (rc)
        return rc;
    struct stk_engine *e = c.alloc(c.mem_ctx, sizeof(*e));
    if (!e)
        return -ENOMEM;
    memset(e, 0, sizeof(*e));
    e->cfg = c;
    e->now = now;
    stk__wheel_init(&e->wheel, stk__tick(now));
    rc = stk__arp_create(e, now);
    if (rc)
        goto fail;
    rc = stk__nd_create(e, now);
    if (rc)
        goto fail_arp;
    rc = stk__ipfrag_create(e);
    if (rc)
        goto fail_nd;
    rc = stk__tcp_create(e);
    if (rc)
        goto fail_ipfrag;
    rc = stk__udp_create(e);
    if (rc)
        goto fail_tcp;
    stk__arp_announce(e, now);
    *out = e;
    return 0;
fail_tcp:
    stk__tcp_destroy(e);
fail_ipfrag:
    stk__ipfrag_destroy(e);
fail_nd:
    stk__nd_destroy(e);
fail_arp:
    stk__arp_destroy(e);
fail:
    c.free(c.mem_ctx, e, sizeof(*e));
    return rc;
}

void stk_engine_destroy(struct stk_engine *e)
{
    if (!e)
        return;
    stk__udp_destroy(e);
    stk__tcp_destroy(e);
    stk__ipfrag_destroy(e);
    stk__nd_destroy(e);
    stk__arp_destroy(e);
    e->cfg.free(e->cfg.mem_ctx, e, sizeof(*e));
}

static void set_now(struct stk_engine *e, stk_time_t now)
{
    /* Time never runs backwards inside the engine, whatever the caller passes. */
    if (now > e->now)
        e->now = now;
}

void stk_input(struct stk_engine *e, stk_time_t now, const void *frame, size_t len,
               uint32_t rx_flags)
{
    set_now(e, now);
    if (!frame) {
        e->ctr.eth_drop_short++;
        return;
    }
    stk__eth_input(e, e->now, frame, len, rx_flags);
}

void stk_input_ip(struct stk_engine *e, stk_time_t now, const void *ip, size_t len,
                  uint32_t rx_flags)
{
    set_now(e, now);
    if (!ip) {
        e->ctr.ip_drop_len++;
        return;
    }
    /* An IPv6 packet reassembled by another engine (its version nibble says so). */
    if (len >= 1 && (*(const uint8_t *)ip >> 4) == 6) {
        stk__ip6_input(e, e->now, ip, len, rx_flags, false);
        return;
    }
    stk__ip_input(e, e->now, ip, len, rx_flags);
}

void stk_rx_begin(struct stk_engine *e)
{
    e->rx_batch = true;
}

void stk_rx_end(struct stk_engine *e, stk_time_t now)
{
    set_now(e, now);
    e->rx_batch = false;
    stk__ack_flush(e, e->now);
}

static void fire(void *ctx, struct stk_wheel_node *n)
{
    stk__tcp_timer_fire(ctx, n);
}

void stk_poll(struct stk_engine *e, stk_time_t now)
{
    set_now(e, now);
    stk__wheel_advance(&e->wheel, stk__tick(e->now), fire, e);
    stk__arp_poll(e, e->now);
    stk__nd_poll(e, e->now);
    stk__ipfrag_poll(e, e->now);
    stk__tcp_poll(e, e->now);
}

stk_time_t stk_next_timer(const struct stk_engine *e)
{
    uint64_t tick = stk__wheel_next(&e->wheel);
    stk_time_t t = tick == UINT64_MAX ? UINT64_MAX : tick * STK_US_PER_MS;
    t = stk__min64(t, stk__nd_next_timer(e));
    t = stk__min64(t, stk__ipfrag_next_timer(e));
    return stk__min64(t, stk__min64(stk__arp_next_timer(e), stk__tcp_next_timer(e)));
}

const struct stk_counters *stk_counters(const struct stk_engine *e)
{
    return &e->ctr;
}

void stk_announce(struct stk_engine *e, stk_time_t now)
{
    set_now(e, now);
    stk__arp_announce(e, e->now);
}

const char *stk_state_name(enum stk_tcp_state s)
{
    static const char *const names[] = {
        "CLOSED",     "LISTEN",     "SYN-SENT", "SYN-RECEIVED", "ESTABLISHED", "FIN-WAIT-1",
        "FIN-WAIT-2", "CLOSE-WAIT", "CLOSING",  "LAST-ACK",     "TIME-WAIT",
    };
    return (unsigned)s < sizeof(names) / sizeof(names[0]) ? names[s] : "?";
}

/*
 * services.c - ustackd's built-in TCP services (echo, discard, source), so that a stack on a
 * device can be exercised from outside with ordinary kernel tools before (and besides) the
 * socket layer. They run on every stack core, directly on the engine API.
 *
 * echo:    everything received is sent back; after the peer's FIN the rest is sent and
 *          the connection closed.
 * discard: everything received is dropped; closed after the peer's FIN.
 * source:  an endless stream in which byte i of the connection is i % 251, until the peer
 *          closes or resets.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "dio.h"

enum kind { K_ECHO, K_DISCARD, K_SOURCE, K_NKINDS };

struct conn {
    struct conn *next; /* ready list */
    int sd;
    uint8_t kind;
    bool listener, queued, dead;
    uint64_t off; /* source: bytes sent */
};

struct svc_core {
    struct dio_services *svc;
    struct conn *ready;
    struct conn listeners[K_NKINDS];
    unsigned open;
};

#define PATTERN   251
#define SRC_CHUNK 16384
/* Any window of SRC_CHUNK bytes starting at any phase 0..PATTERN-1. */
static uint8_t pattern[SRC_CHUNK + PATTERN];

static void queue(struct svc_core *sc, struct conn *k)
{
    if (k->queued)
        return;
    k->queued = true;
    k->next = sc->ready;
    sc->ready = k;
}

static void conn_close(struct svc_core *sc, struct stk_engine *e, stk_time_t now, struct conn *k)
{
    stk_close(e, now, k->sd);
    sc->open--;
    /* The engine reports nothing more for a closed sd, but k may still sit on the ready
     * list: then the list frees it. */
    if (k->queued)
        k->dead = true;
    else
        free(k);
}

static void accept_all(struct svc_core *sc, struct stk_engine *e, stk_time_t now, struct conn *l)
{
    for (;;) {
        struct conn *k = calloc(1, sizeof(*k));
        if (!k)
            return;
        int sd = stk_accept(e, now, l->sd, k, NULL);
        if (sd < 0) {
            free(k);
            return;
        }
        k->sd = sd;
        k->kind = l->kind;
        sc->open++;
        stk_setopt(e, now, sd, STK_TCP_NODELAY, 1);
        queue(sc, k); /* data may have come with the handshake */
    }
}

/* Returns false when k was closed. */
static bool serve(struct svc_core *sc, struct stk_engine *e, stk_time_t now, struct conn *k)
{
    uint32_t ev = stk_events(e, k->sd);
    struct stk_iov iov[2];
    if (k->kind == K_SOURCE) {
        int space = 0;
        stk_getopt(e, k->sd, STK_SO_SNDSPACE, &space);
        while (space > 0 && !(ev & (STK_EV_ERR | STK_EV_HUP))) {
            size_t want = (size_t)space < SRC_CHUNK ? (size_t)space : SRC_CHUNK;
            ssize_t n = stk_send(e, now, k->sd, pattern + k->off % PATTERN, want, 0);
            if (n <= 0)
                break;
            k->off += (uint64_t)n;
            space -= (int)n;
        }
    }
    for (;;) {
        int n = stk_recv_peek(e, k->sd, iov);
        if (n <= 0)
            break;
        size_t used = 0;
        for (int i = 0; i < n; i++) {
            if (k->kind != K_ECHO) {
                used += iov[i].len;
                continue;
            }
            ssize_t w =
                stk_send(e, now, k->sd, iov[i].base, iov[i].len, i + 1 < n ? STK_MSG_MORE : 0);
            if (w > 0)
                used += (size_t)w;
            if (w < (ssize_t)iov[i].len)
                break;
        }
        if (used == 0)
            break; /* echo: no send space; EV_OUT brings us back */
        stk_recv_consume(e, now, k->sd, used);
    }
    int nread = 0;
    stk_getopt(e, k->sd, STK_SO_NREAD, &nread);
    if ((ev & (STK_EV_ERR | STK_EV_HUP)) || ((ev & STK_EV_RDHUP) && nread == 0)) {
        conn_close(sc, e, now, k);
        return false;
    }
    return true;
}

static int svc_init(void *ctx, struct dio_core *c, stk_time_t now)
{
    struct dio_services *svc = ctx;
    struct svc_core *sc = calloc(1, sizeof(*sc));
    if (!sc)
        return -ENOMEM;
    sc->svc = svc;
    struct stk_engine *e = dio_core_engine(c);
    uint16_t ports[K_NKINDS] = {svc->echo_port, svc->discard_port, svc->source_port};
    for (int k = 0; k < K_NKINDS; k++) {
        struct conn *l = &sc->listeners[k];
        l->sd = -1;
        l->kind = (uint8_t)k;
        l->listener = true;
        if (!ports[k])
            continue;
        int sd = stk_socket(e, l);
        if (sd < 0) {
            free(sc);
            return sd;
        }
        /* [::] without IPV6_V6ONLY: IPv4 and IPv6 clients alike (dual stack). */
        struct stk_sockaddr a = {.family = STK_AF_INET6, .port = ports[k]};
        int rc = stk_setopt(e, now, sd, STK_SO_REUSEADDR, 1);
        if (rc == 0)
            rc = stk_bind(e, sd, &a);
        if (rc == 0)
            rc = stk_listen(e, sd, 4096);
        if (rc) {
            stk_close(e, now, sd);
            free(sc);
            return rc;
        }
        l->sd = sd;
    }
    dio_core_set_app_data(c, sc);
    return 0;
}

static void svc_event(void *ctx, struct dio_core *c, int sd, void *user, uint32_t events)
{
    (void)ctx;
    (void)sd;
    (void)events;
    struct svc_core *sc = dio_core_app_data(c);
    if (sc && user)
        queue(sc, user);
}

static unsigned svc_poll(void *ctx, struct dio_core *c, stk_time_t now)
{
    (void)ctx;
    struct svc_core *sc = dio_core_app_data(c);
    struct stk_engine *e = dio_core_engine(c);
    unsigned work = 0;
    /* Events raised while serving go on a fresh list, handled next time round. */
    struct conn *list = sc->ready;
    sc->ready = NULL;
    while (list) {
        struct conn *k = list;
        list = k->next;
        k->queued = false;
        work++;
        if (k->dead) {
            free(k);
            continue;
        }
        if (k->listener)
            accept_all(sc, e, now, k);
        else
            serve(sc, e, now, k);
    }
    return work;
}

static void svc_fini(void *ctx, struct dio_core *c, stk_time_t now)
{
    (void)ctx;
    struct svc_core *sc = dio_core_app_data(c);
    struct stk_engine *e = dio_core_engine(c);
    if (!sc)
        return;
    for (int k = 0; k < K_NKINDS; k++)
        if (sc->listeners[k].sd >= 0)
            stk_close(e, now, sc->listeners[k].sd);
    /* Open connections: closing each user pointer we hold. The engine owns the list of
     * sds, so walk them all. */
    for (int sd = 0; sd < (1 << 20) && sc->open; sd++) {
        struct conn *k = stk_user(e, sd);
        if (!k || k->listener)
            continue;
        conn_close(sc, e, now, k);
    }
    while (sc->ready) {
        struct conn *k = sc->ready;
        sc->ready = k->next;
        if (k->dead)
            free(k);
    }
    free(sc);
    dio_core_set_app_data(c, NULL);
}

struct dio_app dio_services_app(struct dio_services *svc)
{
    /* Filled here, on the control thread, before any core reads it. */
    for (size_t i = 0; i < sizeof(pattern); i++)
        pattern[i] = (uint8_t)(i % PATTERN);
    struct dio_app a = {
        .ctx = svc, .init = svc_init, .poll = svc_poll, .event = svc_event, .fini = svc_fini};
    return a;
}

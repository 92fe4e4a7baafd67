/*
 * engine_conns.c - drives two engines (tests/lib/wire.h, fake clock) through N connections
 * (default 10,000), 100 at a time: connect, a 100-byte request, a 1000-byte reply, close
 * from both sides; a few connections are left in each state at the end (listening, a
 * queued unaccepted child, established with unread and unsent data, TIME-WAIT) and both
 * engines are destroyed with them. Meant for `valgrind --leak-check=full`: every byte the
 * engines allocated must be freed. Exits 0 if every exchange was byte-exact.
 *
 * Usage: engine_conns [N]
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "stk.h"
#include "wire.h"

#define BATCH 100

static int fail(const char *what, long v)
{
    fprintf(stderr, "engine_conns: %s (%ld)\n", what, v);
    return 1;
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 10000;
    struct wire *w;
    struct wire_opts o = {.seed = 7};
    if (wire_create(&w, &o))
        return fail("wire_create", 0);
    struct stk_engine *a = wire_engine(w, WIRE_A), *b = wire_engine(w, WIRE_B);
    int ls = stk_socket(b, NULL);
    struct stk_sockaddr any = {.ip = 0, .port = 80}, to = {.ip = WIRE_IP_B, .port = 80};
    if (ls < 0 || stk_bind(b, ls, &any) || stk_listen(b, ls, 1024))
        return fail("listen", ls);
    char req[100] = {0}, rep[1000], got[1000];
    for (size_t i = 0; i < sizeof rep; i++)
        rep[i] = (char)(i * 7);
    long done = 0;
    while (done < n) {
        int cs[BATCH], ss[BATCH], k = (int)(n - done < BATCH ? n - done : BATCH);
        for (int i = 0; i < k; i++) {
            cs[i] = stk_socket(a, NULL);
            if (cs[i] < 0 || stk_connect(a, w->now, cs[i], &to) != -EINPROGRESS)
                return fail("connect", cs[i]);
        }
        wire_run_for(w, 10000);
        for (int i = 0; i < k; i++) {
            /* The first batch waits behind ARP, whose queue holds only some SYNs; the
             * others come back with their retransmission. */
            for (int t = 0; t < 500; t++) {
                ss[i] = stk_accept(b, w->now, ls, NULL, NULL);
                if (ss[i] != -EAGAIN)
                    break;
                wire_run_for(w, 10000);
            }
            if (ss[i] < 0)
                return fail("accept", done + i);
            snprintf(req, sizeof req, "request %ld", done + i);
            if (stk_send(a, w->now, cs[i], req, sizeof req, 0) != sizeof req)
                return fail("send request", i);
        }
        wire_run_for(w, 10000);
        for (int i = 0; i < k; i++) {
            if (stk_recv(b, w->now, ss[i], got, sizeof got, 0) != sizeof req)
                return fail("recv request", i);
            if (stk_send(b, w->now, ss[i], rep, sizeof rep, 0) != sizeof rep)
                return fail("send reply", i);
            stk_close(b, w->now, ss[i]);
        }
        wire_run_for(w, 10000);
        for (int i = 0; i < k; i++) {
            if (stk_recv(a, w->now, cs[i], got, sizeof got, 0) != sizeof rep ||
                memcmp(got, rep, sizeof rep) != 0)
                return fail("recv reply", i);
            stk_close(a, w->now, cs[i]);
        }
        wire_run_for(w, 10000);
        done += k;
        if (done % 2000 == 0)
            wire_run_for(w, 61 * STK_US_PER_S); /* let TIME-WAIT expire now and then */
    }
    /* Leave some of everything behind for stk_engine_destroy. */
    int c1 = stk_socket(a, NULL), c2 = stk_socket(a, NULL), c3 = stk_socket(a, NULL);
    stk_connect(a, w->now, c1, &to);
    stk_connect(a, w->now, c2, &to);
    wire_run_for(w, 10000);
    int s1 = stk_accept(b, w->now, ls, NULL, NULL); /* c2's stays queued */
    stk_send(a, w->now, c1, req, sizeof req, 0);
    stk_send(b, w->now, s1, rep, sizeof rep, 0);
    struct stk_sockaddr dead = {.ip = PKT_IP(198, 18, 0, 99), .port = 80};
    stk_connect(a, w->now, c3, &dead); /* waits for ARP */
    wire_run_for(w, 1000);
    const struct stk_counters *ca = stk_counters(a);
    printf("engine_conns: %ld connections, %lu active opens, %lu in TIME-WAIT at the end\n", n,
           (unsigned long)ca->tcp_active_opens,
           (unsigned long)ca->conns_by_state[STK_TCP_TIME_WAIT]);
    wire_destroy(w);
    return 0;
}

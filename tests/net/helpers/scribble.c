/*
 * scribble - a misbehaving client for tests/net/test_scribble.sh. Run under
 * LD_PRELOAD=libustack.so: it opens sockets (spawning ustackd), starts PROG (which, as its
 * child, attaches to the same ustackd), then for SECONDS corrupts what it owns in the shared
 * region: its sockets' ring heads/tails, flags, accept queue words, core, kick and armed
 * words and data, and it pushes garbage commands (random ops, indices, generations, reply
 * slots, arguments) into the command queues. It never touches what another process uses:
 * only slots its own row of hold counts names, checked before every write, never a state or
 * generation (a slot freed could be reused by another client), never a CLOSE with a valid
 * generation. Prints "scribble: N writes M commands" and exits 0 if ustackd is still alive,
 * 1 otherwise. Usage: scribble SECONDS PEER_IP PEER_PORT PROG ARGS...
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "shm.h"

static uint64_t rs = 0x2545f4914f6cdd1dull;
static uint64_t rnd(void)
{
    rs ^= rs << 13;
    rs ^= rs >> 7;
    rs ^= rs << 17;
    return rs;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    if (argc < 5) {
        fprintf(stderr, "usage: scribble SECONDS PEER_IP PEER_PORT PROG ARGS...\n");
        return 2;
    }
    double secs = atof(argv[1]);
    struct sockaddr_in peer = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[3]))};
    inet_pton(AF_INET, argv[2], &peer.sin_addr);
    rs ^= (uint64_t)getpid() << 20;
    /* Our sockets (close-on-exec: PROG must not adopt them). */
    for (int k = 0; k < 8; k++) {
        int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (s < 0) {
            perror("scribble: socket");
            return 2;
        }
        if (k < 3) {
            struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)(9200 + k))};
            if (bind(s, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(s, 8) < 0)
                perror("scribble: listen");
        } else if (k < 6) {
            connect(s, (struct sockaddr *)&peer, sizeof(peer));
        }
    }
    const char *fdv = getenv("USTACK_SHM_FD");
    if (!fdv) {
        fprintf(stderr, "scribble: no USTACK_SHM_FD (not under libustack.so?)\n");
        return 2;
    }
    pid_t prog = fork();
    if (prog == 0) {
        execvp(argv[4], argv + 4);
        _exit(127);
    }
    sleep(1);
    int fd = atoi(fdv);
    struct stat st;
    if (fstat(fd, &st) < 0) {
        perror("scribble: fstat");
        return 2;
    }
    void *base = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (base == MAP_FAILED || shm_region_check(base, (uint64_t)st.st_size, (uint64_t)st.st_size)) {
        fprintf(stderr, "scribble: cannot map the region\n");
        return 2;
    }
    struct shm_hdr *h = shm_hdr(base);
    uint32_t me = shm_proc_find(base, getpid());
    if (me == SHM_NONE) {
        fprintf(stderr, "scribble: no process entry\n");
        return 2;
    }
    uint32_t mine[64], gens[64], n = 0;
    for (uint32_t i = 0; i < h->nsocks && n < 64; i++)
        if (atomic_load(shm_hold(base, me, i))) {
            mine[n] = i;
            gens[n++] = atomic_load(&shm_sock(base, i)->gen);
        }
    if (n == 0) {
        fprintf(stderr, "scribble: holds no socket\n");
        return 2;
    }
    unsigned long writes = 0, cmds = 0;
    double end = now() + secs;
    while (now() < end) {
        uint32_t k = (uint32_t)(rnd() % n), i = mine[k];
        struct shm_sock *s = shm_sock(base, i);
        /* Still ours? (A slot is never reused while we hold it; this is belt and braces.) */
        uint32_t state = atomic_load(&s->state);
        if (atomic_load(&s->gen) != gens[k] || state == SHM_SOCK_FREE)
            continue;
        switch (rnd() % 10) {
        case 0:
            atomic_store(&s->tx.head, (uint32_t)rnd());
            break;
        case 1:
            atomic_store(&s->rx.tail, (uint32_t)rnd());
            break;
        case 2:
            atomic_store(&s->tx.tail, (uint32_t)rnd());
            atomic_store(&s->rx.head, (uint32_t)rnd());
            break;
        case 3:
            atomic_store(&s->flags, (uint32_t)rnd());
            break;
        case 4:
            atomic_store(&s->aq_enq, (uint32_t)rnd());
            atomic_store(&s->aq_deq, (uint32_t)rnd());
            break;
        case 5:
            s->core = (uint32_t)rnd() % 8;
            break;
        case 6: {
            uint8_t *d = shm_rx_data(base, i) + rnd() % (2ull * h->ring_size - 64);
            for (int j = 0; j < 64; j++)
                d[j] = (uint8_t)rnd();
            break;
        }
        case 7:
            atomic_store(&s->armed, (uint32_t)rnd());
            atomic_store(&s->kick, (uint32_t)rnd() & 1);
            break;
        default: {
            /* A command: our socket with its generation (never CLOSE), or junk indices. */
            struct shm_cmd c;
            memset(&c, 0, sizeof(c));
            c.op = (uint16_t)(rnd() % (SHM_OP_COUNT + 3));
            uint64_t x = rnd();
            c.sock = (x & 1) ? i : (uint32_t)rnd();
            c.gen = (x & 1) ? gens[k] : (uint32_t)rnd();
            if (c.op == SHM_OP_CLOSE && c.sock == i)
                c.gen = gens[k] + 1 + (uint32_t)(rnd() % 1000);
            c.reply = (x & 2) ? (uint32_t)rnd() : SHM_NONE;
            c.pid = (x & 4) ? (int32_t)rnd() : getpid();
            c.a0 = (int32_t)(rnd() % 64) - 8;
            c.a1 = (int32_t)rnd();
            c.addr.ip = (uint32_t)rnd();
            c.addr.port = (uint16_t)rnd();
            c.flags = (uint16_t)rnd();
            shm_cmdq_push(shm_cmdq(base, (uint32_t)(rnd() % h->ncores)), &c);
            cmds++;
            break;
        }
        }
        writes++;
        if (writes % 256 == 0)
            usleep(1000);
    }
    int32_t sp = atomic_load(&h->stack_pid);
    bool alive =
        sp > 0 && (kill(sp, 0) == 0 || errno != ESRCH) && atomic_load(&h->state) == SHM_READY;
    printf("scribble: %lu writes %lu commands on %u sockets; ustackd %d %s\n", writes, cmds, n,
           (int)sp, alive ? "alive" : "GONE");
    fflush(stdout);
    /* Stay (holding the corrupted sockets) until killed: the test then SIGKILLs us. */
    pause();
    return alive ? 0 : 1;
}

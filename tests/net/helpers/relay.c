/* tests/net/helpers/relay.c - an impairing Ethernet relay for tests/net/test_faults.sh.
 *
 * The kernel here has no netem (nor tc gact/pedit), so faults on the wire are made by this
 * program: it runs in a network namespace of its own between two veths (--a IFACE, the
 * kernel peer's side, and --b IFACE, ustack's side), reads every frame arriving on one
 * through a promiscuous AF_PACKET socket and writes it out of the other, impaired from a
 * seeded PRNG (--seed; a run with the same seed and the same arrivals makes the same
 * decisions):
 *
 *   --loss P      drop a frame with probability P (0..1)
 *   --dup P       send a frame twice
 *   --corrupt P   flip one random byte past the Ethernet header of an IPv4 frame (XOR with a
 *                 non-zero value), so the IPv4 header or TCP checksum catches it; a one-byte
 *                 change is always seen by a ones'-complement sum. ARP is never corrupted
 *                 (nothing would catch it), it may still be dropped or delayed
 *   --delay MS    hold each frame MS milliseconds
 *   --jitter MS   plus a uniform -MS..+MS (never below 0); order is kept (a frame is never
 *                 due before the one ahead of it) unless --jitter-reorder
 *   --reorder P   hold a frame back (probability P) and send it after the next K frames of
 *                 its direction (--reorder-k K, default 3), or after --reorder-ms (default
 *                 20) when fewer follow; one frame held per direction at a time
 *   --down-at S --down-for D   the link is down (both directions dropped) from S seconds
 *                 after start for D seconds; SIGUSR2 starts a down window of D seconds now
 *
 * The options after --dir ab (a to b: kernel to ustack), --dir ba or --dir both (the
 * default) apply to that direction. Delayed and held frames wait in a binary heap keyed by
 * their due time, in at most --queue-cap frames (default 8192, frames up to 2048 bytes);
 * beyond it a frame is dropped and counted (qdrop). poll()'s timeout is the next due
 * frame's. Counters (per direction) are printed on SIGUSR1, and at exit (SIGTERM, SIGINT,
 * or --max-seconds, default 600) as
 *   relay: final ab forwarded=N dropped=N delayed=N reordered=N duplicated=N corrupted=N
 *          down=N qdrop=N oversize=N txerr=N rxdrop=N
 * (rxdrop: frames the kernel dropped on the relay's socket before it read them)
 * ("relay: stats" for SIGUSR1); "relay: ready" once both sockets are bound.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define FRAME_MAX 2048
#define BATCH     32

struct impair {
    double loss, dup, corrupt, reorder;
    uint64_t delay_ns, jitter_ns, reorder_ns;
    unsigned reorder_k;
    int jitter_reorder;
};

struct counters {
    uint64_t forwarded, dropped, delayed, reordered, duplicated, corrupted, down, qdrop, oversize,
        txerr, rxdrop;
};

struct slot {
    uint64_t due, seq;
    int dir;
    uint16_t len;
    unsigned char data[FRAME_MAX];
};

struct dir {
    const char *name;
    int in_fd, out_fd, out_ifindex;
    struct impair imp;
    struct counters c;
    uint64_t last_due;  /* FIFO-preserving jitter */
    struct slot *held;  /* reorder: the frame held back */
    unsigned held_left; /* frames still to pass it */
    uint64_t held_until;
};

static struct dir dirs[2];
static struct slot *pool;
static struct slot **freelist, **heap;
static size_t nfree, nheap, cap = 8192;
static uint64_t seq_next, rng_state;
static uint64_t down_from = UINT64_MAX, down_until, down_len_ns;
static volatile sig_atomic_t got_term, got_usr1, got_usr2;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* splitmix64 */
static uint64_t rnd(void)
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double rnd01(void)
{
    return (double)(rnd() >> 11) * (1.0 / 9007199254740992.0);
}

static int chance(double p)
{
    return p > 0 && rnd01() < p;
}

static void die(const char *what)
{
    fprintf(stderr, "relay: %s: %s\n", what, strerror(errno));
    exit(1);
}

static void usage(const char *msg)
{
    fprintf(stderr,
            "relay: %s\nusage: relay --a IFACE --b IFACE [--seed N] [--max-seconds S] "
            "[--queue-cap N] [--down-at S --down-for S] [--dir ab|ba|both] [--loss P] [--dup P] "
            "[--corrupt P] [--delay MS] [--jitter MS] [--jitter-reorder] [--reorder P] "
            "[--reorder-k K] [--reorder-ms MS] ...\n",
            msg);
    exit(2);
}

static double num(const char *opt, const char *s, double lo, double hi)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || v < lo || v > hi) {
        fprintf(stderr, "relay: %s: bad value '%s' (%g..%g)\n", opt, s, lo, hi);
        exit(2);
    }
    return v;
}

/* ------------------------------------------------------------------ heap of pending frames */

static int before(const struct slot *x, const struct slot *y)
{
    return x->due < y->due || (x->due == y->due && x->seq < y->seq);
}

static void heap_push(struct slot *s)
{
    size_t i = nheap++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!before(s, heap[p]))
            break;
        heap[i] = heap[p];
        i = p;
    }
    heap[i] = s;
}

static struct slot *heap_pop(void)
{
    struct slot *top = heap[0], *last = heap[--nheap];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, m = i;
        const struct slot *best = last;
        if (l < nheap && before(heap[l], best)) {
            m = l;
            best = heap[l];
        }
        if (l + 1 < nheap && before(heap[l + 1], best))
            m = l + 1;
        if (m == i)
            break;
        heap[i] = heap[m];
        i = m;
    }
    if (nheap > 0)
        heap[i] = last;
    return top;
}

static struct slot *slot_get(void)
{
    return nfree ? freelist[--nfree] : NULL;
}

static void slot_put(struct slot *s)
{
    freelist[nfree++] = s;
}

/* ------------------------------------------------------------------ output */

static void tx(struct dir *d, const unsigned char *f, size_t len)
{
    struct sockaddr_ll to = {.sll_family = AF_PACKET, .sll_ifindex = d->out_ifindex};
    for (int tries = 0; tries < 100; tries++) {
        if (sendto(d->out_fd, f, len, 0, (struct sockaddr *)&to, sizeof(to)) == (ssize_t)len) {
            d->c.forwarded++;
            return;
        }
        if (errno != EINTR && errno != ENOBUFS && errno != EAGAIN)
            break;
        if (errno != EINTR)
            usleep(50);
    }
    d->c.txerr++;
}

static void held_release(struct dir *d)
{
    struct slot *h = d->held;
    d->held = NULL;
    tx(d, h->data, h->len);
    slot_put(h);
}

/* A frame leaves (now): maybe held back for reordering, else sent; a held frame goes once K
 * others passed it. The slot (if any) is the caller's unless it is kept here (returns 1). */
static int emit(struct dir *d, struct slot *s, const unsigned char *f, size_t len)
{
    if (!d->held && chance(d->imp.reorder)) {
        struct slot *h = s ? s : slot_get();
        if (h) {
            if (h != s) {
                memcpy(h->data, f, len);
                h->len = (uint16_t)len;
            }
            d->held = h;
            d->held_left = d->imp.reorder_k;
            d->held_until = now_ns() + d->imp.reorder_ns;
            d->c.reordered++;
            return s != NULL;
        }
        /* no room to hold it: send in order */
    }
    tx(d, f, len);
    if (d->held && --d->held_left == 0)
        held_release(d);
    return 0;
}

/* A frame after loss/corruption: delayed through the heap, or out now. */
static void schedule(struct dir *d, const unsigned char *f, size_t len, uint64_t now)
{
    if (d->imp.delay_ns == 0 && d->imp.jitter_ns == 0 && nheap == 0) {
        emit(d, NULL, f, len);
        return;
    }
    uint64_t due = now + d->imp.delay_ns;
    if (d->imp.jitter_ns) {
        int64_t j = (int64_t)(rnd() % (2 * d->imp.jitter_ns + 1)) - (int64_t)d->imp.jitter_ns;
        due = (j < 0 && (uint64_t)-j > due) ? 0 : due + (uint64_t)j;
        if (due < now)
            due = now;
        if (!d->imp.jitter_reorder && due < d->last_due)
            due = d->last_due;
    }
    d->last_due = due;
    if (due <= now && nheap == 0) {
        emit(d, NULL, f, len);
        return;
    }
    struct slot *s = slot_get();
    if (!s) {
        d->c.qdrop++;
        return;
    }
    memcpy(s->data, f, len);
    s->len = (uint16_t)len;
    s->due = due;
    s->seq = seq_next++;
    s->dir = (int)(d - dirs);
    heap_push(s);
    if (due > now)
        d->c.delayed++;
}

static int link_down(uint64_t now)
{
    return now >= down_from && now < down_until;
}

static void ingress(struct dir *d, unsigned char *f, size_t len, uint64_t now)
{
    if (link_down(now)) {
        d->c.down++;
        return;
    }
    if (len > FRAME_MAX) {
        d->c.oversize++;
        return;
    }
    if (chance(d->imp.loss)) {
        d->c.dropped++;
        return;
    }
    int copies = 1;
    if (chance(d->imp.dup)) {
        copies = 2;
        d->c.duplicated++;
    }
    unsigned char *orig = NULL;
    unsigned char buf[FRAME_MAX];
    if (len > ETH_HLEN && f[12] == 0x08 && f[13] == 0x00 && chance(d->imp.corrupt)) {
        if (copies == 2) { /* only one of the two copies is corrupted */
            memcpy(buf, f, len);
            orig = buf;
        }
        size_t at = ETH_HLEN + (size_t)(rnd() % (len - ETH_HLEN));
        f[at] ^= (unsigned char)(1 + rnd() % 255);
        d->c.corrupted++;
    }
    schedule(d, f, len, now);
    if (copies == 2)
        schedule(d, orig ? orig : f, len, now);
}

/* Send every frame that is due, and held frames whose time is up. */
static void flush_due(uint64_t now)
{
    while (nheap > 0 && heap[0]->due <= now) {
        struct slot *s = heap_pop();
        struct dir *d = &dirs[s->dir];
        if (link_down(now)) {
            d->c.down++;
            slot_put(s);
            continue;
        }
        if (!emit(d, s, s->data, s->len))
            slot_put(s);
    }
    for (int i = 0; i < 2; i++)
        if (dirs[i].held && now >= dirs[i].held_until) {
            if (link_down(now)) {
                dirs[i].c.down++;
                slot_put(dirs[i].held);
                dirs[i].held = NULL;
            } else {
                held_release(&dirs[i]);
            }
        }
}

/* ------------------------------------------------------------------ set-up */

static int open_port(const char *ifname, int *ifindex)
{
    int fd = socket(AF_PACKET, SOCK_RAW | SOCK_NONBLOCK, htons(ETH_P_ALL));
    if (fd < 0)
        die("socket(AF_PACKET)");
    *ifindex = (int)if_nametoindex(ifname);
    if (*ifindex == 0)
        die(ifname);
    struct sockaddr_ll sll = {
        .sll_family = AF_PACKET, .sll_protocol = htons(ETH_P_ALL), .sll_ifindex = *ifindex};
    if (bind(fd, (struct sockaddr *)&sll, sizeof(sll)) < 0)
        die("bind");
    struct packet_mreq mr = {.mr_ifindex = *ifindex, .mr_type = PACKET_MR_PROMISC};
    if (setsockopt(fd, SOL_PACKET, PACKET_ADD_MEMBERSHIP, &mr, sizeof(mr)) < 0)
        die("PACKET_MR_PROMISC");
    int one = 1, big = 8 << 20;
    /* Our own transmissions on this interface are not input. */
    if (setsockopt(fd, SOL_PACKET, PACKET_IGNORE_OUTGOING, &one, sizeof(one)) < 0)
        die("PACKET_IGNORE_OUTGOING");
    if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof(big)) < 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &big, sizeof(big));
    if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &big, sizeof(big)) < 0)
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &big, sizeof(big));
    /* Frames queued before the bind (any interface) are not ours: drain them. */
    unsigned char junk[64];
    while (recv(fd, junk, sizeof(junk), MSG_DONTWAIT | MSG_TRUNC) >= 0) {
    }
    return fd;
}

/* Frames the kernel dropped before the relay read them (a full socket receive queue),
 * accumulated: PACKET_STATISTICS resets on each read. */
static void read_rxdrop(void)
{
    for (int i = 0; i < 2; i++) {
        struct tpacket_stats st;
        socklen_t len = sizeof(st);
        if (getsockopt(dirs[i].in_fd, SOL_PACKET, PACKET_STATISTICS, &st, &len) == 0)
            dirs[i].c.rxdrop += st.tp_drops;
    }
}

static void print_counters(const char *tag)
{
    read_rxdrop();
    for (int i = 0; i < 2; i++) {
        const struct counters *c = &dirs[i].c;
        printf("relay: %s %s forwarded=%" PRIu64 " dropped=%" PRIu64 " delayed=%" PRIu64
               " reordered=%" PRIu64 " duplicated=%" PRIu64 " corrupted=%" PRIu64 " down=%" PRIu64
               " qdrop=%" PRIu64 " oversize=%" PRIu64 " txerr=%" PRIu64 " rxdrop=%" PRIu64 "\n",
               tag, dirs[i].name, c->forwarded, c->dropped, c->delayed, c->reordered, c->duplicated,
               c->corrupted, c->down, c->qdrop, c->oversize, c->txerr, c->rxdrop);
    }
    printf("relay: %s end queued=%zu\n", tag, nheap);
    fflush(stdout);
}

static void on_sig(int sig)
{
    if (sig == SIGUSR1)
        got_usr1 = 1;
    else if (sig == SIGUSR2)
        got_usr2 = 1;
    else
        got_term = 1;
}

int main(int argc, char **argv)
{
    const char *ifa = NULL, *ifb = NULL;
    double max_s = 600, down_at = -1, down_for = 0;
    int sel = 3; /* bit 0: ab, bit 1: ba */
    uint64_t seed = 1;
    for (int i = 0; i < 2; i++)
        dirs[i].imp.reorder_k = 3, dirs[i].imp.reorder_ns = 20000000;
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i];
        if (!strcmp(o, "--jitter-reorder")) {
            for (int k = 0; k < 2; k++)
                if (sel & (1 << k))
                    dirs[k].imp.jitter_reorder = 1;
            continue;
        }
        if (i + 1 >= argc)
            usage("option without a value");
        const char *v = argv[++i];
        struct impair *im[2] = {(sel & 1) ? &dirs[0].imp : NULL, (sel & 2) ? &dirs[1].imp : NULL};
        if (!strcmp(o, "--a"))
            ifa = v;
        else if (!strcmp(o, "--b"))
            ifb = v;
        else if (!strcmp(o, "--seed"))
            seed = strtoull(v, NULL, 0);
        else if (!strcmp(o, "--max-seconds"))
            max_s = num(o, v, 0.1, 86400);
        else if (!strcmp(o, "--queue-cap"))
            cap = (size_t)num(o, v, 16, 1 << 20);
        else if (!strcmp(o, "--down-at"))
            down_at = num(o, v, 0, 86400);
        else if (!strcmp(o, "--down-for"))
            down_for = num(o, v, 0, 86400);
        else if (!strcmp(o, "--dir")) {
            if (!strcmp(v, "ab"))
                sel = 1;
            else if (!strcmp(v, "ba"))
                sel = 2;
            else if (!strcmp(v, "both"))
                sel = 3;
            else
                usage("--dir takes ab, ba or both");
        } else {
            for (int k = 0; k < 2; k++) {
                struct impair *p = im[k];
                if (!p)
                    continue;
                if (!strcmp(o, "--loss"))
                    p->loss = num(o, v, 0, 1);
                else if (!strcmp(o, "--dup"))
                    p->dup = num(o, v, 0, 1);
                else if (!strcmp(o, "--corrupt"))
                    p->corrupt = num(o, v, 0, 1);
                else if (!strcmp(o, "--reorder"))
                    p->reorder = num(o, v, 0, 1);
                else if (!strcmp(o, "--reorder-k"))
                    p->reorder_k = (unsigned)num(o, v, 1, 1000);
                else if (!strcmp(o, "--reorder-ms"))
                    p->reorder_ns = (uint64_t)(num(o, v, 0, 10000) * 1e6);
                else if (!strcmp(o, "--delay"))
                    p->delay_ns = (uint64_t)(num(o, v, 0, 10000) * 1e6);
                else if (!strcmp(o, "--jitter"))
                    p->jitter_ns = (uint64_t)(num(o, v, 0, 10000) * 1e6);
                else
                    usage("unknown option");
            }
        }
    }
    if (!ifa || !ifb)
        usage("--a and --b are required");
    rng_state = seed;
    dirs[0].name = "ab";
    dirs[1].name = "ba";

    pool = calloc(cap, sizeof(*pool));
    freelist = calloc(cap, sizeof(*freelist));
    heap = calloc(cap, sizeof(*heap));
    if (!pool || !freelist || !heap)
        die("calloc");
    for (size_t i = 0; i < cap; i++)
        freelist[nfree++] = &pool[cap - 1 - i];

    int ia, ib;
    int fa = open_port(ifa, &ia), fb = open_port(ifb, &ib);
    dirs[0].in_fd = fa, dirs[0].out_fd = fb, dirs[0].out_ifindex = ib;
    dirs[1].in_fd = fb, dirs[1].out_fd = fa, dirs[1].out_ifindex = ia;

    struct sigaction sa = {.sa_handler = on_sig};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL);
    sigaction(SIGUSR2, &sa, NULL);
    /* Signals are blocked except inside ppoll, so none is missed between checks. */
    sigset_t block, wait_mask;
    sigemptyset(&block);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGUSR1);
    sigaddset(&block, SIGUSR2);
    sigprocmask(SIG_BLOCK, &block, &wait_mask);
    sigdelset(&wait_mask, SIGTERM);
    sigdelset(&wait_mask, SIGINT);
    sigdelset(&wait_mask, SIGUSR1);
    sigdelset(&wait_mask, SIGUSR2);

    uint64_t start = now_ns(), end = start + (uint64_t)(max_s * 1e9);
    down_len_ns = (uint64_t)(down_for * 1e9);
    if (down_at >= 0 && down_for > 0) {
        down_from = start + (uint64_t)(down_at * 1e9);
        down_until = down_from + down_len_ns;
    }
    printf("relay: ready a=%s b=%s seed=%" PRIu64 " cap=%zu\n", ifa, ifb, seed, cap);
    fflush(stdout);

    struct mmsghdr msgs[BATCH];
    struct iovec iov[BATCH];
    static unsigned char bufs[BATCH][FRAME_MAX + 1];
    struct pollfd pfd[2] = {{.fd = fa, .events = POLLIN}, {.fd = fb, .events = POLLIN}};
    while (!got_term) {
        uint64_t now = now_ns();
        if (now >= end)
            break;
        if (got_usr1) {
            got_usr1 = 0;
            print_counters("stats");
        }
        if (got_usr2) {
            got_usr2 = 0;
            if (down_len_ns > 0) {
                down_from = now;
                down_until = now + down_len_ns;
                printf("relay: link down for %.3f s\n", down_len_ns / 1e9);
                fflush(stdout);
            }
        }
        flush_due(now);
        uint64_t next = end;
        if (nheap > 0 && heap[0]->due < next)
            next = heap[0]->due;
        for (int i = 0; i < 2; i++)
            if (dirs[i].held && dirs[i].held_until < next)
                next = dirs[i].held_until;
        uint64_t wait = next > now ? next - now : 0;
        if (wait > 1000000000u)
            wait = 1000000000u;
        struct timespec ts = {.tv_sec = (time_t)(wait / 1000000000u),
                              .tv_nsec = (long)(wait % 1000000000u)};
        int n = ppoll(pfd, 2, &ts, &wait_mask);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            die("ppoll");
        }
        for (int p = 0; p < 2; p++) {
            if (!(pfd[p].revents & POLLIN))
                continue;
            for (int k = 0; k < BATCH; k++) {
                iov[k].iov_base = bufs[k];
                iov[k].iov_len = sizeof(bufs[k]);
                memset(&msgs[k].msg_hdr, 0, sizeof(msgs[k].msg_hdr));
                msgs[k].msg_hdr.msg_iov = &iov[k];
                msgs[k].msg_hdr.msg_iovlen = 1;
            }
            int got = recvmmsg(pfd[p].fd, msgs, BATCH, MSG_DONTWAIT | MSG_TRUNC, NULL);
            if (got < 0) {
                if (errno == EAGAIN || errno == EINTR)
                    continue;
                die("recvmmsg");
            }
            now = now_ns();
            for (int k = 0; k < got; k++)
                ingress(&dirs[p], bufs[k], msgs[k].msg_len, now);
        }
    }
    print_counters("final");
    return 0;
}

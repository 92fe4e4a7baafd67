/*
 * test_client.c - the application side of the shared-memory protocol (shim/client*.c)
 * against a fake stack: a thread that serves the command queue of an in-memory region,
 * completes connects, and echoes every connected socket's tx ring into its rx ring,
 * signalling armed eventfds as ustackd does. Covers the fd life cycle (dup, close, fork and
 * exec references), blocking and non-blocking calls with the kernel's errno values, socket
 * options, and readiness through poll, select and epoll (level, edge, one-shot, nested),
 * plus the hand-over to kernel sockets for loopback.
 *
 * Each test runs in its own process (Check's fork mode): the client is per process.
 */
#define _GNU_SOURCE
/* The client side is linked only into libustack.so; this test builds it itself. */
#include "../shim/client.c"
#include "../shim/client_addr.c"
#include "../shim/client_io.c"
#include "../shim/client_opt.c"
#include "../shim/client_poll.c"
#include "../shim/client_proc.c"
#include "../shim/fdtab.c"
#include "../shim/intr.c"
#include "../shim/ucopy.c"

#include <arpa/inet.h>
#include <check.h>
#include <netinet/tcp.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>

#define NSOCKS   64
#define MY_IP    0xc6120002u /* 198.18.0.2 */
#define PEER_IP  0xc6120001u
#define P_REFUSE 1 /* connects to this port are refused */
#define P_SLOW   8 /* ... complete only when the test says so */
#define P_EOF    9 /* ... are closed by the peer at once */

static void *base;
static pthread_t stack_thread;
static atomic_int stop, slow_go, closes, paused, attach_cancels;
static struct {
    atomic_int efd, mode, connecting;
    int opt[32];
} fk[NSOCKS];

/* ---- the fake stack ------------------------------------------------------------------- */

#define PUB_RECHECK 0x100u
#define PUB_COUNTED 0x200u /* the caller counted the event before its change showed */

/* As ustackd's publish (dpdk_io/shm_server.c): level waiters, then edge-triggered ones for
 * events of the kinds they armed (docs/shm.md "Events"). */
static void publish(uint32_t i, uint32_t ev)
{
    struct shm_sock *s = shm_sock(base, i);
    shm_sock_notify(s);
    uint32_t ring = shm_hdr(base)->ring_size;
    if (atomic_load(&s->nospace) && shm_ring_space(&s->tx, ring) >= shm_nospace_end(ring) &&
        atomic_exchange(&s->nospace, 0))
        ev |= SHM_EV_OUT;
    if ((ev & SHM_EV_IN) && !(ev & PUB_COUNTED))
        atomic_fetch_add(&s->ev_in, 1);
    if ((ev & SHM_EV_OUT) && !(ev & PUB_COUNTED))
        atomic_fetch_add(&s->ev_out, 1);
    ev &= ~PUB_COUNTED;
    uint32_t armed = atomic_load(&s->armed), aet = atomic_load(&s->armed_et);
    uint32_t ready = shm_sock_poll(base, i);
    uint32_t a = (armed & ready) ? atomic_exchange(&s->armed, 0) : 0;
    if (a)
        atomic_fetch_or(&s->sigb, a);
    bool sig = a != 0;
    if ((aet & ready) && ((ev & PUB_RECHECK) || shm_ev_match(ev, aet)) &&
        atomic_exchange(&s->armed_et, 0))
        sig = true;
    if (sig) {
        uint64_t one = 1;
        int e = atomic_load(&fk[i].efd);
        if (e >= 0 && write(e, &one, 8) < 0)
            (void)0;
    }
}

static void post_addr(const struct shm_cmd *c, int rc, int val, const struct shm_addr *a)
{
    if (c->reply == SHM_NONE)
        return;
    struct shm_reply *r = shm_reply(base, c->reply);
    r->result = rc;
    r->val = val;
    r->addr = a ? *a : (struct shm_addr){0};
    atomic_fetch_add_explicit(&r->seq, 1, memory_order_release);
    shm_futex_wake(&r->seq, 1);
}

static void post(const struct shm_cmd *c, int rc, int val, uint32_t ip, uint16_t port)
{
    struct shm_addr a = {.ip = ip, .port = port};
    post_addr(c, rc, val, &a);
}

static void handle(const struct shm_cmd *c)
{
    uint32_t i = c->sock;
    if (i >= NSOCKS || !shm_sock_valid(base, i, c->gen)) {
        post(c, -EBADF, 0, 0, 0);
        return;
    }
    struct shm_sock *s = shm_sock(base, i);
    switch (c->op) {
    case SHM_OP_SOCKET:
    case SHM_OP_ATTACH: {
        /* As ustackd: a SOCKET or ATTACH taken back by the last close fetches nothing. */
        if (atomic_load(&s->attach_pend) & SHM_ATT_CANCEL) {
            atomic_store(&s->attach_pend, 0);
            atomic_fetch_add(&attach_cancels, 1);
            break;
        }
        /* A reference of our own, as ustackd's pidfd_getfd: the application may close the
         * number while a dup lives. */
        int old =
            atomic_exchange(&fk[i].efd, c->a0 >= 0 ? fcntl(c->a0, F_DUPFD_CLOEXEC, 1500) : -1);
        if (old >= 0)
            close(old);
        uint32_t expect = SHM_SOCK_RESERVED;
        atomic_compare_exchange_strong(&s->state, &expect, SHM_SOCK_LIVE);
        if (c->op == SHM_OP_SOCKET)
            memset(fk[i].opt, 0, sizeof(fk[i].opt));
        if (atomic_exchange(&s->attach_pend, 0) & SHM_ATT_WAIT)
            shm_futex_wake(&s->attach_pend, INT_MAX);
        post(c, 0, 0, 0, 0);
        publish(i, PUB_RECHECK);
        break;
    }
    case SHM_OP_BIND: {
        s->la = c->addr;
        if (!s->la.port)
            s->la.port = (uint16_t)(40000 + i);
        post_addr(c, 0, 0, &s->la);
        break;
    }
    case SHM_OP_LISTEN:
        if (!(atomic_load(&s->flags) & SHM_F_LISTENING)) {
            shm_aq_init(s, shm_rx_data(base, i), shm_hdr(base)->ring_size);
            atomic_store(&s->flags, SHM_F_LISTENING);
        }
        post(c, 0, 0, 0, 0);
        break;
    case SHM_OP_CONNECT:
        s->ra = c->addr;
        s->la = (struct shm_addr){.ip = MY_IP, .port = (uint16_t)(50000 + i)};
        atomic_store(&fk[i].mode, c->addr.port);
        atomic_fetch_or(&s->flags, SHM_F_CONNECTING);
        atomic_store(&fk[i].connecting, 1);
        post(c, -EINPROGRESS, 0, 0, 0);
        break;
    case SHM_OP_SHUTDOWN:
        if (c->a0 != SHUT_RD)
            atomic_fetch_or(&s->flags, SHM_F_WR_SHUT);
        post(c, 0, 0, 0, 0);
        publish(i, SHM_EV_ALL);
        break;
    case SHM_OP_CLOSE: {
        int old = atomic_exchange(&fk[i].efd, -1);
        if (old >= 0)
            close(old);
        shm_sock_free(base, i);
        atomic_fetch_add(&closes, 1); /* after the free: a test that sees it sees the slot free */
        break;
    }
    case SHM_OP_SETOPT:
        fk[i].opt[c->a0 & 31] = c->a1;
        post(c, 0, 0, 0, 0);
        break;
    case SHM_OP_GETOPT:
        if (c->a0 == STK_SO_ERROR)
            post(c, 0, atomic_exchange(&s->so_error, 0), 0, 0);
        else
            post(c, 0, fk[i].opt[c->a0 & 31], 0, 0);
        break;
    case SHM_OP_KICK:
        atomic_store(&s->kick, 0);
        break;
    case SHM_OP_INFO: {
        struct stk_tcp_info ti = {
            .state = STK_TCP_ESTABLISHED, .snd_mss = 1000, .snd_cwnd = 10000, .rtt_us = 123};
        struct shm_reply *r = shm_reply(base, c->reply);
        memcpy(r->info, &ti, sizeof(ti));
        post(c, 0, 0, 0, 0);
        break;
    }
    default:
        post(c, -EINVAL, 0, 0, 0);
    }
}

static void *fake_stack(void *arg)
{
    (void)arg;
    uint32_t ring = shm_hdr(base)->ring_size;
    struct shm_cmdq *q = shm_cmdq(base, 0);
    while (!atomic_load(&stop)) {
        struct shm_cmd c;
        while (!atomic_load(&paused) && shm_cmdq_pop(q, &c))
            handle(&c);
        for (uint32_t i = 0; i < NSOCKS; i++) {
            struct shm_sock *s = shm_sock(base, i);
            if (atomic_load(&s->state) != SHM_SOCK_LIVE)
                continue;
            if (atomic_load(&fk[i].connecting)) {
                int mode = atomic_load(&fk[i].mode);
                if (mode == P_SLOW && !atomic_load(&slow_go))
                    continue;
                atomic_store(&fk[i].connecting, 0);
                uint32_t f = atomic_load(&s->flags) & ~SHM_F_CONNECTING;
                if (mode == P_REFUSE) {
                    atomic_store(&s->so_error, ECONNREFUSED);
                    f |= SHM_F_RESET | SHM_F_ERROR;
                } else {
                    f |= SHM_F_CONNECTED | (mode == P_EOF ? SHM_F_EOF : 0);
                }
                atomic_store(&s->flags, f);
                publish(i, SHM_EV_ALL);
            }
            uint32_t f = atomic_load(&s->flags);
            if (!(f & SHM_F_CONNECTED) || (f & SHM_F_EOF))
                continue;
            /* Echo: the peer sends back what it gets. */
            uint8_t buf[1024];
            uint32_t n = shm_ring_used(&s->tx, ring), room = shm_ring_space(&s->rx, ring);
            n = n < room ? n : room;
            n = n < sizeof(buf) ? n : (uint32_t)sizeof(buf);
            if (n) {
                shm_ring_read(&s->tx, shm_tx_data(base, i), ring, buf, n, false);
                shm_ring_write(&s->rx, shm_rx_data(base, i), ring, buf, n);
                publish(i, SHM_EV_IN);
            }
        }
        usleep(50);
    }
    return NULL;
}

/* lazy: the region is a memfd and the client maps only its head, the rings a chunk of
 * LAZY_CHUNK bytes (two sockets) at a time as it uses them (docs/shm.md "Mapping"); the fake
 * stack maps it whole, as ustackd. Otherwise an anonymous region mapped whole. */
#define LAZY_CHUNK (2 * 2 * 4096)
static int region_fd = -1;

static void setup_with(bool lazy)
{
    atomic_store(&paused, 0);
    atomic_store(&attach_cancels, 0);
    for (int i = 0; i < NSOCKS; i++)
        atomic_store(&fk[i].efd, -1);
    struct shm_geometry g = {1, NSOCKS, 16, 4096, 0};
    uint64_t size = shm_region_size(&g);
    if (lazy) {
        region_fd = memfd_create("ustack-test", 0);
        ck_assert_int_ge(region_fd, 0);
        ck_assert_int_eq(ftruncate(region_fd, (off_t)size), 0);
        base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, region_fd, 0);
    } else {
        base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    }
    ck_assert_ptr_ne(base, MAP_FAILED);
    shm_region_init(base, &g);
    shm_cmdq(base, 0)->wake_fd = eventfd(0, EFD_NONBLOCK);
    atomic_store(&shm_hdr(base)->stack_pid, getpid());
    atomic_store(&shm_hdr(base)->state, SHM_READY);
    struct shim_sys sys = {socket,       bind,      listen, accept4,       connect,   getsockopt,
                           setsockopt,   close,     read,   write,         fcntl,     ioctl,
                           dup,          dup3,      ppoll,  epoll_create1, epoll_ctl, epoll_pwait,
                           epoll_pwait2, sigaction, sendmsg};
    shim_init(&sys);
    struct shim_attach a = {.base = base,
                            .size = size,
                            .shm_fd = -1,
                            .pipe_fd = -1,
                            .ip = MY_IP,
                            .prefix = 24,
                            .fdtab_size = 4096};
    if (lazy) {
        uint64_t head = shm_region_head(&g);
        ck_assert_uint_lt(head, size);
        a.base = mmap(NULL, head, PROT_READ | PROT_WRITE, MAP_SHARED, region_fd, 0);
        ck_assert_ptr_ne(a.base, MAP_FAILED);
        ck_assert_int_eq(shm_region_check(a.base, head, size), 0);
        ck_assert_int_eq(shm_region_check(a.base, head - 4096, size), -EINVAL);
        ck_assert_int_eq(shm_region_check(a.base, head, size - 1), -EINVAL);
        a.size = head;
        a.shm_fd = region_fd;
        a.chunk_bytes = LAZY_CHUNK;
    }
    ck_assert_int_eq(shim_attach(&a), 0);
    ck_assert_int_eq(pthread_create(&stack_thread, NULL, fake_stack, NULL), 0);
}

static void setup(void)
{
    setup_with(false);
}

static void setup_lazy(void)
{
    setup_with(true);
}

static void teardown(void)
{
    atomic_store(&stop, 1);
    pthread_join(stack_thread, NULL);
}

/* ---- helpers -------------------------------------------------------------------------- */

static struct sockaddr_in addr(uint32_t ip, uint16_t port)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(ip);
    return a;
}

static int connected(uint16_t port)
{
    int fd = shim_socket(0);
    ck_assert_int_ge(fd, 0);
    struct sockaddr_in a = addr(PEER_IP, port);
    ck_assert_int_eq(shim_connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    return fd;
}

static struct shm_sock *sock_of(int fd)
{
    return shm_sock(base, shim_fds.ent[fd].slot);
}

static int64_t ms_since(int64_t t0)
{
    return (shim__now() - t0) / 1000000;
}

/* ---- life cycle ----------------------------------------------------------------------- */

/* sockaddr_in / sockaddr_in6 to the protocol's addresses and back (client_addr.c): a
 * v4-mapped address travels as IPv4 and comes back v4-mapped to an AF_INET6 socket; a
 * link-local one keeps its scope, ustack's own interface travelling as 0. */
START_TEST(address_conversion)
{
    struct sockaddr_storage ss, out;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss, *o6 = (struct sockaddr_in6 *)&out;
    struct shm_addr a;
    memset(&ss, 0, sizeof(ss));
    s6->sin6_family = AF_INET6;
    s6->sin6_port = htons(8080);
    ck_assert_int_eq(inet_pton(AF_INET6, "::ffff:198.18.0.7", &s6->sin6_addr), 1);
    shim_addr_in(&ss, 5, &a);
    ck_assert_uint_eq(a.family, SHM_AF_INET);
    ck_assert_uint_eq(a.ip, 0xc6120007u);
    ck_assert_uint_eq(a.port, 8080);
    ck_assert(shim_v4mapped(s6->sin6_addr.s6_addr));
    /* Back to an AF_INET6 socket: v4-mapped, 28 bytes; to an AF_INET one: sockaddr_in. */
    ck_assert_uint_eq(shim_addr_out(AF_INET6, &a, 5, &out), sizeof(struct sockaddr_in6));
    ck_assert_int_eq(o6->sin6_family, AF_INET6);
    ck_assert_int_eq(memcmp(&o6->sin6_addr, &s6->sin6_addr, 16), 0);
    ck_assert_uint_eq(ntohs(o6->sin6_port), 8080);
    ck_assert_uint_eq(o6->sin6_scope_id, 0);
    ck_assert_uint_eq(shim_addr_out(AF_INET, &a, 5, &out), sizeof(struct sockaddr_in));
    ck_assert_uint_eq(((struct sockaddr_in *)&out)->sin_addr.s_addr, htonl(0xc6120007u));
    /* Native IPv6: kept as it is, network order. */
    ck_assert_int_eq(inet_pton(AF_INET6, "2001:2::9", &s6->sin6_addr), 1);
    s6->sin6_scope_id = 9; /* meaningless for a global address: dropped */
    shim_addr_in(&ss, 5, &a);
    ck_assert_uint_eq(a.family, SHM_AF_INET6);
    ck_assert_int_eq(memcmp(a.ip6, &s6->sin6_addr, 16), 0);
    ck_assert_uint_eq(a.scope, 0);
    ck_assert(!shim_v4mapped(a.ip6));
    ck_assert(!shim_addr_any(&a));
    shim_addr_out(AF_INET6, &a, 5, &out);
    ck_assert_int_eq(memcmp(&o6->sin6_addr, &s6->sin6_addr, 16), 0);
    ck_assert_uint_eq(o6->sin6_scope_id, 0);
    /* Link-local: ustack's interface (5) travels as 0 and comes back as 5; another stays. */
    ck_assert_int_eq(inet_pton(AF_INET6, "fe80::1", &s6->sin6_addr), 1);
    s6->sin6_scope_id = 5;
    shim_addr_in(&ss, 5, &a);
    ck_assert_uint_eq(a.scope, 0);
    shim_addr_out(AF_INET6, &a, 5, &out);
    ck_assert_uint_eq(o6->sin6_scope_id, 5);
    s6->sin6_scope_id = 3;
    shim_addr_in(&ss, 5, &a);
    ck_assert_uint_eq(a.scope, 3);
    /* The wildcards. */
    memset(&s6->sin6_addr, 0, 16);
    shim_addr_in(&ss, 5, &a);
    ck_assert(a.family == SHM_AF_INET6 && shim_addr_any(&a));
    struct sockaddr_in s4 = {.sin_family = AF_INET, .sin_port = htons(53)};
    memset(&ss, 0, sizeof(ss));
    memcpy(&ss, &s4, sizeof(s4));
    shim_addr_in(&ss, 5, &a);
    ck_assert(a.family == SHM_AF_INET && shim_addr_any(&a) && a.port == 53);
    /* IPv4's wildcard shown to an AF_INET6 socket is ::ffff:0.0.0.0 (getsockname decides
     * when that means [::], client.c). */
    shim_addr_out(AF_INET6, &a, 5, &out);
    ck_assert(shim_v4mapped(o6->sin6_addr.s6_addr));
}
END_TEST

START_TEST(socket_dup_close)
{
    int fd = shim_socket(SOCK_CLOEXEC);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(shim_fd_kind(fd), SHIM_FD_SOCK);
    ck_assert_int_eq(fcntl(fd, F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);
    struct shm_sock *s = sock_of(fd);
    ck_assert_uint_eq(atomic_load(&s->refs), 1);
    int d = shim_dup(fd);
    ck_assert_int_ge(d, 0);
    ck_assert_int_eq(shim_fd_kind(d), SHIM_FD_SOCK);
    ck_assert_uint_eq(atomic_load(&s->refs), 2);
    int d2 = shim_dup3(fd, 200, 0, true);
    ck_assert_int_eq(d2, 200);
    ck_assert_uint_eq(atomic_load(&s->refs), 3);
    ck_assert_int_eq(shim_close(fd), 0);
    ck_assert_int_eq(shim_close(d), 0);
    ck_assert_int_eq(shim_fd_kind(fd), SHIM_FD_KERNEL);
    usleep(20000);
    ck_assert_int_eq(atomic_load(&closes), 0);
    /* dup2 onto a ustack fd closes that socket first. */
    int other = shim_socket(0);
    ck_assert_int_eq(shim_dup3(other, 200, 0, true), 200);
    usleep(20000);
    ck_assert_int_eq(atomic_load(&closes), 1);
    ck_assert_int_eq(shim_close(200), 0);
    ck_assert_int_eq(shim_close(other), 0);
    usleep(20000);
    ck_assert_int_eq(atomic_load(&closes), 2);
}
END_TEST

/* A call in progress pins its socket (docs/preload.md "Calls racing close"): a close of its
 * fd in another thread frees the number at once, but the socket lives (refs, no CLOSE) until
 * the call returns, as Linux's fdget keeps the file; then the call's exit closes it. */
struct pinned_recv {
    int fd;
    ssize_t ret;
};

static void *recv_until_timeout(void *p)
{
    struct pinned_recv *r = p;
    char c;
    r->ret = shim_recv(r->fd, &c, 1, 0);
    return NULL;
}

/* A message carrying fd over SCM_RIGHTS (control in cb). */
static void rights_msg(struct msghdr *m, struct iovec *iov, void *cb, size_t cblen, int fd)
{
    static char byte = 'f';
    *iov = (struct iovec){&byte, 1};
    memset(cb, 0, cblen);
    *m = (struct msghdr){
        .msg_iov = iov, .msg_iovlen = 1, .msg_control = cb, .msg_controllen = cblen};
    struct cmsghdr *c = CMSG_FIRSTHDR(m);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &fd, sizeof(fd));
}

/* SCM_RIGHTS: the message takes a reference of its own, so the sender's close does not end
 * the socket; the receiver adopts the eventfd it got as the socket and its close does. A
 * message nobody adopts within SHM_PASS_TTL_S gives its reference back at the next send. */
START_TEST(pass_over_unix_refs)
{
    int u[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, u), 0);
    int fd = shim_socket(0);
    uint32_t i = shim_fds.ent[fd].slot;
    struct shm_sock *s = shm_sock(base, i);
    struct msghdr m;
    struct iovec iov;
    char cb[CMSG_SPACE(sizeof(int))];
    rights_msg(&m, &iov, cb, sizeof(cb), fd);
    uint32_t taken[4];
    ck_assert_int_eq(shim_pass_send(&m, taken, 4), 1);
    ck_assert_uint_eq(atomic_load(&s->refs), 2);
    ck_assert_int_eq(sendmsg(u[0], &m, 0), 1);
    ck_assert_int_eq(shim_close(fd), 0);
    usleep(20000);
    ck_assert_int_eq(atomic_load(&closes), 0);
    ck_assert_uint_eq(atomic_load(&s->refs), 1);
    char rcb[CMSG_SPACE(sizeof(int))];
    char byte;
    struct iovec riov = {&byte, 1};
    struct msghdr r = {
        .msg_iov = &riov, .msg_iovlen = 1, .msg_control = rcb, .msg_controllen = sizeof(rcb)};
    ck_assert_int_eq(recvmsg(u[1], &r, 0), 1);
    int got;
    memcpy(&got, CMSG_DATA(CMSG_FIRSTHDR(&r)), sizeof(got));
    ck_assert_int_eq(shim_fd_kind(got), SHIM_FD_KERNEL);
    ck_assert_int_eq(shim_pass_recv(&r), 1);
    ck_assert_int_eq(shim_fd_kind(got), SHIM_FD_SOCK);
    ck_assert_uint_eq(shim_fds.ent[got].slot, i);
    ck_assert_uint_eq(atomic_load(&s->refs), 1);
    ck_assert_uint_eq(atomic_load(shm_hold(base, shim__c.pidx, i)), 1);
    ck_assert_uint_eq(atomic_load(&shm_hdr(base)->pass[taken[0]].state), SHM_PASS_FREE);
    ck_assert_int_eq(shim_close(got), 0);
    usleep(20000);
    ck_assert_int_eq(atomic_load(&closes), 1);

    /* Never received: after the TTL the next send frees it, and the socket closes. */
    int a = shim_socket(0), b = shim_socket(0);
    rights_msg(&m, &iov, cb, sizeof(cb), a);
    ck_assert_int_eq(shim_pass_send(&m, taken, 4), 1);
    uint32_t ka = taken[0];
    ck_assert_int_eq(shim_close(a), 0);
    usleep(20000);
    ck_assert_int_eq(atomic_load(&closes), 1);
    shm_hdr(base)->pass[ka].sent_ns -= (uint64_t)(SHM_PASS_TTL_S + 1) * 1000000000u;
    rights_msg(&m, &iov, cb, sizeof(cb), b);
    ck_assert_int_eq(shim_pass_send(&m, taken, 4), 1);
    usleep(20000);
    ck_assert_int_eq(atomic_load(&closes), 2);
    ck_assert_uint_eq(taken[0], ka); /* the entry it freed, taken again */
    /* A failed send gives the reference back. */
    uint32_t ib = shim_fds.ent[b].slot;
    ck_assert_uint_eq(atomic_load(&shm_sock(base, ib)->refs), 2);
    shim_pass_undo(taken, 1);
    ck_assert_uint_eq(atomic_load(&shm_sock(base, ib)->refs), 1);
    /* Bad messages are the kernel's to refuse: no crash, nothing noted. */
    ck_assert_int_eq(shim_pass_send((const struct msghdr *)8, taken, 4), 0);
    rights_msg(&m, &iov, cb, sizeof(cb), b);
    m.msg_control = (void *)8;
    ck_assert_int_eq(shim_pass_send(&m, taken, 4), 0);
    rights_msg(&m, &iov, cb, sizeof(cb), b);
    CMSG_FIRSTHDR(&m)->cmsg_len = 1u << 30;            /* far past the buffer */
    ck_assert_int_eq(shim_pass_send(&m, taken, 4), 1); /* the one fd that is there */
    shim_pass_undo(taken, 1);
    ck_assert_uint_eq(atomic_load(&shm_sock(base, ib)->refs), 1);
    ck_assert_int_eq(shim_close(b), 0);
    close(u[0]);
    close(u[1]);
}
END_TEST

START_TEST(call_pins_socket_across_close)
{
    int fd = connected(7);
    struct shm_sock *s = sock_of(fd);
    uint32_t slot = shim_fds.ent[fd].slot, gen = shim_fds.ent[fd].gen;
    struct timeval tv = {0, 300000};
    ck_assert_int_eq(shim_setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)), 0);
    struct pinned_recv r = {fd, 0};
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, recv_until_timeout, &r), 0);
    usleep(50000); /* the reader is asleep in recv */
    ck_assert_uint_eq(atomic_load(&shim__c.pins[slot].use) & 0xffffffffu, 1);
    ck_assert_int_eq(shim_close(fd), 0);
    ck_assert_int_eq(shim_fd_kind(fd), SHIM_FD_KERNEL);
    ck_assert_int_eq(shim_send(fd, "x", 1, MSG_NOSIGNAL), -ENOTSOCK);
    usleep(50000);
    /* Still this process's: no CLOSE, the slot neither freed nor reused. */
    ck_assert_int_eq(atomic_load(&closes), 0);
    ck_assert_uint_eq(atomic_load(&s->refs), 1);
    ck_assert(shm_sock_valid(base, slot, gen));
    ck_assert_uint_eq(atomic_load(&shim__c.pins[slot].use) >> 32, 1);
    int other = shim_socket(0);
    ck_assert_int_ge(other, 0);
    ck_assert_uint_ne(shim_fds.ent[other].slot, slot);
    pthread_join(t, NULL);
    ck_assert_int_eq(r.ret, -EAGAIN); /* the old socket's timeout, as on Linux */
    /* The reader's return made the release it owed. */
    ck_assert_uint_eq(atomic_load(&shim__c.pins[slot].use), 0);
    for (int i = 0; i < 100 && atomic_load(&closes) == 0; i++)
        usleep(2000);
    ck_assert_int_eq(atomic_load(&closes), 1);
    ck_assert(!shm_sock_valid(base, slot, gen));
    ck_assert_int_eq(shim_close(other), 0);
}
END_TEST

/* Every call lets go of the pin it took (SHIM_SK), on success and on error: a pin left
 * behind would keep close() from releasing the socket, and the peer would never see its
 * FIN (nginx's connections under ab hung this way once). */
START_TEST(calls_leave_no_pin)
{
    int fd = connected(7);
    uint32_t slot = shim_fds.ent[fd].slot;
    char buf[64] = "ping";
    struct iovec v = {buf, 4};
    struct msghdr m = {.msg_iov = &v, .msg_iovlen = 1};
    struct mmsghdr mm = {.msg_hdr = m};
    struct sockaddr_in a = {0};
    socklen_t alen = sizeof(a);
    ck_assert_int_eq(shim_sendto(fd, buf, 4, MSG_NOSIGNAL, NULL, 0), 4);
    ck_assert_int_eq(shim_sendmsg(fd, &m, MSG_NOSIGNAL), 4);
    ck_assert_int_eq(shim_sendmmsg(fd, &mm, 1, MSG_NOSIGNAL), 1);
    ck_assert_int_ge(shim_recvfrom(fd, buf, sizeof(buf), 0, (struct sockaddr *)&a, &alen), 1);
    v.iov_len = sizeof(buf);
    ck_assert_int_ge(shim_recvmsg(fd, &m, MSG_DONTWAIT), -EAGAIN);
    struct timespec ts = {0, 1000000};
    mm.msg_hdr = m;
    ck_assert_int_ge(shim_recvmmsg(fd, &mm, 1, MSG_DONTWAIT, &ts), -EAGAIN);
    ck_assert_int_eq(shim_recvfrom(fd, NULL, 0, MSG_DONTWAIT, NULL, NULL), -EAGAIN);
    ck_assert_uint_eq(atomic_load(&shim__c.pins[slot].use), 0);
    ck_assert_int_eq(shim_close(fd), 0);
    for (int i = 0; i < 100 && atomic_load(&closes) == 0; i++)
        usleep(2000);
    ck_assert_int_eq(atomic_load(&closes), 1);
}
END_TEST

START_TEST(fork_and_exec_references)
{
    int a = shim_socket(0), b = shim_socket(SOCK_CLOEXEC);
    struct shm_sock *sa = sock_of(a), *sb = sock_of(b);
    /* Our process entry counts our fds (docs/shm.md "Holders"). */
    void *rb = base;
    uint32_t me = shm_proc_find(rb, getpid());
    ck_assert_uint_ne(me, SHM_NONE);
    uint32_t ia = (uint32_t)(sa - shm_sock(rb, 0));
    ck_assert_uint_eq(atomic_load(shm_hold(rb, me, ia)), 1);
    /* A failed fork gives back what its prepare step took, the child's entry included. */
    shim_fork_hook_begin();
    shim_fork_prepare();
    ck_assert_uint_eq(atomic_load(&sa->refs), 2);
    uint32_t pend = SHM_NONE;
    for (uint32_t p = 0; p < shm_hdr(rb)->nprocs; p++)
        if (atomic_load(&shm_proc(rb, p)->state) == SHM_PROC_PENDING)
            pend = p;
    ck_assert_uint_ne(pend, SHM_NONE);
    ck_assert_int_eq(atomic_load(&shm_proc(rb, pend)->parent), getpid());
    ck_assert_uint_eq(atomic_load(shm_hold(rb, pend, ia)), 1);
    shim_fork_parent();
    shim_fork_hook_end(-1);
    ck_assert_uint_eq(atomic_load(&sa->refs), 1);
    ck_assert_uint_eq(atomic_load(&shm_proc(rb, pend)->state), SHM_PROC_FREE);
    ck_assert_uint_eq(atomic_load(shm_hold(rb, pend, ia)), 0);
    /* A real fork: the child holds both, and its close leaves the parent's open. */
    pthread_atfork(shim_fork_prepare, shim_fork_parent, shim_fork_child);
    shim_fork_hook_begin();
    pid_t pid = fork();
    if (pid == 0) {
        shim_close(a);
        shim_close(b);
        _exit(0);
    }
    shim_fork_hook_end(pid < 0 ? -1 : pid);
    int st;
    waitpid(pid, &st, 0);
    uint32_t kid = shm_proc_find(rb, pid);
    ck_assert_uint_ne(kid, SHM_NONE); /* named LIVE (by the hook, the child, or both) */
    ck_assert_uint_eq(atomic_load(shm_hold(rb, kid, ia)), 0); /* its close counted */
    ck_assert_uint_eq(atomic_load(&sa->refs), 1);
    ck_assert_uint_eq(atomic_load(&sb->refs), 1);
    ck_assert_int_eq(atomic_load(&closes), 0);
    /* exec: the FD_CLOEXEC socket loses this holder, the other is described. */
    char buf[256];
    ck_assert_int_eq(shim_exec_prepare(buf, sizeof(buf)), 0);
    char want[64];
    snprintf(want, sizeof(want), "USTACK_FDS=%d:%d.", (int)getpid(), a);
    ck_assert_msg(!strncmp(buf, want, strlen(want)), "got %s", buf);
    ck_assert_ptr_null(strchr(buf, ','));
    usleep(20000);
    ck_assert_int_eq(atomic_load(&closes), 1); /* b's last reference went with the exec */
    shim_exec_failed();
    ck_assert_uint_eq(atomic_load(&sa->refs), 1);
}
END_TEST

START_TEST(private_fds_survive_close_loops)
{
    int priv = eventfd(0, 0);
    C.scratch_fd = priv;
    shim__priv(&C.scratch_fd);
    ck_assert_int_eq(shim_close(priv), 0);
    ck_assert_int_ge(fcntl(priv, F_GETFD), 0); /* still open */
    /* dup2 onto it moves the library's fd out of the way. */
    int p[2];
    ck_assert_int_eq(pipe(p), 0);
    ck_assert_int_eq(shim_dup3(p[0], priv, 0, true), priv);
    ck_assert_int_ne(C.scratch_fd, priv);
    ck_assert_int_eq(shim_fd_kind(C.scratch_fd), SHIM_FD_PRIV);
    ck_assert_int_eq(shim_fd_kind(priv), SHIM_FD_KERNEL);
    ck_assert_int_eq(shim_close_range(3, ~0u, 0), 0);
    ck_assert_int_ge(fcntl(C.scratch_fd, F_GETFD), 0);
    ck_assert_int_lt(fcntl(p[1], F_GETFD), 0);
}
END_TEST

/* ---- connect / send / recv ------------------------------------------------------------ */

START_TEST(blocking_echo)
{
    int fd = connected(7);
    ck_assert_int_eq(shim_send(fd, "hello", 5, 0), 5);
    char buf[16] = {0};
    ck_assert_int_eq(shim_recv(fd, buf, sizeof(buf), 0), 5);
    ck_assert_str_eq(buf, "hello");
    /* MSG_PEEK leaves the bytes; MSG_WAITALL collects across arrivals. */
    ck_assert_int_eq(shim_send(fd, "abcdef", 6, 0), 6);
    usleep(10000);
    ck_assert_int_eq(shim_recv(fd, buf, 3, MSG_PEEK), 3);
    ck_assert_int_eq(shim_recv(fd, buf, 6, MSG_WAITALL), 6);
    ck_assert_int_eq(memcmp(buf, "abcdef", 6), 0);
    /* Larger than a ring: the send blocks for space while the peer drains. */
    static char big[20000], back[20000];
    for (unsigned i = 0; i < sizeof(big); i++)
        big[i] = (char)(i * 7);
    struct iovec iov[2] = {{big, 10000}, {big + 10000, 10000}};
    struct msghdr m = {.msg_iov = iov, .msg_iovlen = 2};
    int64_t t0 = shim__now();
    /* The echo fills our rx ring too: read concurrently. */
    pthread_t t;
    struct {
        int fd;
        char *buf;
    } rd = {fd, back};
    void *reader(void *p);
    ck_assert_int_eq(pthread_create(&t, NULL, reader, &rd), 0);
    ck_assert_int_eq(shim_sendmsg(fd, &m, 0), 20000);
    pthread_join(t, NULL);
    ck_assert_int_eq(memcmp(big, back, sizeof(big)), 0);
    ck_assert_int_lt(ms_since(t0), 5000);
    struct sockaddr_in pa;
    socklen_t len = sizeof(pa);
    ck_assert_int_eq(shim_getpeername(fd, (struct sockaddr *)&pa, &len), 0);
    ck_assert_uint_eq(ntohl(pa.sin_addr.s_addr), PEER_IP);
    ck_assert_uint_eq(ntohs(pa.sin_port), 7);
    ck_assert_int_eq(shim_close(fd), 0);
}
END_TEST

void *reader(void *p)
{
    struct {
        int fd;
        char *buf;
    } *rd = p;
    ssize_t got = shim_recv(rd->fd, rd->buf, 20000, MSG_WAITALL);
    ck_assert_int_eq(got, 20000);
    return NULL;
}

/* With only the region's head mapped (setup_lazy), the process's own row of hold counts is
 * mapped at attach and a socket's rings when it first moves data, a chunk of two sockets at
 * a time; a chunk that cannot be mapped (here:
 * the region's fd swapped for a read-only one, as RLIMIT_AS would refuse it) fails that
 * socket's calls with ENOMEM, and the others go on. */
START_TEST(rings_mapped_on_first_use)
{
    ck_assert_uint_eq(shim__c.chunk_shift, 1);
    ck_assert_uint_eq(shim__c.nchunks, NSOCKS / 2);
    int fd[3];
    for (int i = 0; i < 3; i++)
        fd[i] = connected(7);
    uint32_t slot[3];
    for (int i = 0; i < 3; i++) {
        slot[i] = shim_fds.ent[fd[i]].slot;
        ck_assert_ptr_null(atomic_load(&shim__c.chunk[slot[i] >> 1]));
    }
    ck_assert_uint_ne(slot[0] >> 1, slot[2] >> 1);
    /* Our hold counts: a row of our own mapping, the stack's view the same. */
    ck_assert_ptr_ne(shim__c.row, shm_hold(base, shim__c.pidx, 0));
    ck_assert_uint_eq(atomic_load(&shim__c.row[slot[0]]), 1);
    ck_assert_uint_eq(atomic_load(shm_hold(base, shim__c.pidx, slot[0])), 1);
    ck_assert_int_eq(shim_send(fd[0], "hello", 5, 0), 5);
    ck_assert_ptr_nonnull(atomic_load(&shim__c.chunk[slot[0] >> 1]));
    char buf[16] = {0};
    ck_assert_int_eq(shim_recv(fd[0], buf, sizeof(buf), 0), 5);
    ck_assert_str_eq(buf, "hello");
    /* The client's view of the rings is the stack's. */
    ck_assert_int_eq(shim__tx_data(slot[0]) - shim__rx_data(slot[0]), 4096);
    /* A chunk that cannot be mapped. */
    int good = shim__c.shm_fd, ro = open("/dev/zero", O_RDONLY);
    ck_assert_int_ge(ro, 0);
    shim__c.shm_fd = ro;
    int other = slot[1] >> 1 == slot[0] >> 1 ? 2 : 1;
    ck_assert_int_eq(shim_send(fd[other], "x", 1, 0), -ENOMEM);
    ck_assert_int_eq(shim_recv(fd[other], buf, 1, MSG_DONTWAIT), -ENOMEM);
    ck_assert_ptr_null(atomic_load(&shim__c.chunk[slot[other] >> 1]));
    ck_assert_int_eq(shim_send(fd[0], "again", 5, 0), 5); /* a mapped one goes on */
    ck_assert_int_eq(shim_recv(fd[0], buf, 5, MSG_WAITALL), 5);
    shim__c.shm_fd = good;
    close(ro);
    ck_assert_int_eq(shim_send(fd[other], "x", 1, 0), 1);
    ck_assert_int_eq(shim_recv(fd[other], buf, 1, 0), 1);
    ck_assert_int_eq(buf[0], 'x');
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(shim_close(fd[i]), 0);
}
END_TEST

/* Bad buffers fail with EFAULT (ucopy.h) instead of crashing; a send stops at the first bad
 * page with what it copied, a recv into a bad buffer consumes nothing; faults outside the
 * copies still reach the application's handler. */
static sigjmp_buf app_jb;
static volatile int app_faults;

static void app_handler(int sig)
{
    (void)sig;
    app_faults++;
    siglongjmp(app_jb, 1);
}

START_TEST(bad_buffers_efault)
{
    ck_assert(shim_ucopy_installed());
    long pg = sysconf(_SC_PAGESIZE);
    uint8_t *m =
        mmap(NULL, (size_t)pg * 2, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    ck_assert_ptr_ne(m, MAP_FAILED);
    ck_assert_int_eq(mprotect(m + pg, (size_t)pg, PROT_NONE), 0);
    memset(m, 'a', (size_t)pg);
    int fd = connected(7);
    ck_assert_int_eq(shim_send(fd, m + pg, 10, 0), -EFAULT);
    /* The first page goes, then the fault ends the call (tcp_sendmsg). */
    ck_assert_int_eq(shim_send(fd, m + pg - 100, 200, 0), 100);
    struct iovec iov[2] = {{"xy", 2}, {m + pg, 5}};
    struct msghdr mh = {.msg_iov = iov, .msg_iovlen = 2};
    ck_assert_int_eq(shim_sendmsg(fd, &mh, 0), 2);
    char buf[128];
    usleep(20000);
    ck_assert_int_eq(shim_recv(fd, m + pg, 10, 0), -EFAULT);
    ck_assert_int_eq(shim_recv(fd, buf, sizeof(buf), 0), 102);
    ck_assert_int_eq(memcmp(buf + 100, "xy", 2), 0);
    /* A recv that fills the good page and faults on the next returns the good part. */
    ck_assert_int_eq(shim_send(fd, "0123456789", 10, 0), 10);
    usleep(20000);
    ck_assert_int_eq(shim_recv(fd, m + pg - 4, 10, 0), 4);
    ck_assert_int_eq(memcmp(m + pg - 4, "0123", 4), 0);
    ck_assert_int_eq(shim_recv(fd, buf, sizeof(buf), 0), 6);
    /* The application's own handler (recorded as the sigaction hook does) sees real faults. */
    struct sigaction act = {.sa_handler = app_handler}, old;
    sigemptyset(&act.sa_mask);
    ck_assert_int_eq(shim_ucopy_sigaction(SIGSEGV, &act, &old), 0);
    /* (old is SIG_DFL, or a sanitizer's handler in the sanitizer build) */
    if (!sigsetjmp(app_jb, 1))
        *(volatile uint8_t *)(m + pg) = 1;
    ck_assert_int_eq(app_faults, 1);
    ck_assert_int_eq(shim_send(fd, m + pg, 10, 0), -EFAULT);
    ck_assert_int_eq(app_faults, 1);
    ck_assert_int_eq(shim_close(fd), 0);
}
END_TEST

START_TEST(errors_as_linux)
{
    int fd = shim_socket(0);
    char c;
    /* Never connected: recv ENOTCONN, send EPIPE, getpeername ENOTCONN, shutdown ENOTCONN. */
    ck_assert_int_eq(shim_recv(fd, &c, 1, MSG_DONTWAIT), -ENOTCONN);
    ck_assert_int_eq(shim_send(fd, "x", 1, MSG_NOSIGNAL), -EPIPE);
    struct sockaddr_in a;
    socklen_t len = sizeof(a);
    ck_assert_int_eq(shim_getpeername(fd, (struct sockaddr *)&a, &len), -ENOTCONN);
    ck_assert_int_eq(shim_shutdown(fd, SHUT_WR), -ENOTCONN);
    ck_assert_int_eq(shim_shutdown(fd, 7), -EINVAL);
    /* Bad addresses. */
    ck_assert_int_eq(shim_connect(fd, NULL, sizeof(a)), -EFAULT);
    a = addr(PEER_IP, 7);
    ck_assert_int_eq(shim_connect(fd, (struct sockaddr *)&a, 8), -EINVAL);
    a.sin_family = AF_INET6;
    ck_assert_int_eq(shim_connect(fd, (struct sockaddr *)&a, sizeof(a)), -EAFNOSUPPORT);
    ck_assert_int_eq(shim_bind(fd, (struct sockaddr *)&a, sizeof(a)), -EAFNOSUPPORT);
    ck_assert_int_eq(shim_accept(fd, NULL, NULL, 0), -EINVAL); /* not listening */
    /* Refused: the blocking connect says so, then the socket is as fresh. */
    a = addr(PEER_IP, P_REFUSE);
    ck_assert_int_eq(shim_connect(fd, (struct sockaddr *)&a, sizeof(a)), -ECONNREFUSED);
    /* A fresh socket polls as OUT|HUP (Linux's TCP_CLOSE). */
    int f2 = shim_socket(0);
    struct pollfd p = {f2, POLLIN | POLLOUT, 0};
    ck_assert_int_eq(shim_poll(&p, 1, 0, NULL), 1);
    ck_assert_int_eq(p.revents, POLLOUT | POLLHUP);
}
END_TEST

START_TEST(nonblocking_connect)
{
    int fd = shim_socket(SOCK_NONBLOCK);
    struct sockaddr_in a = addr(PEER_IP, P_SLOW);
    ck_assert_int_eq(shim_connect(fd, (struct sockaddr *)&a, sizeof(a)), -EINPROGRESS);
    ck_assert_int_eq(shim_connect(fd, (struct sockaddr *)&a, sizeof(a)), -EALREADY);
    char c;
    ck_assert_int_eq(shim_recv(fd, &c, 1, 0), -EAGAIN);
    ck_assert_int_eq(shim_send(fd, "x", 1, 0), -EAGAIN);
    struct pollfd p = {fd, POLLOUT, 0};
    ck_assert_int_eq(shim_poll(&p, 1, 50 * 1000000ll, NULL), 0);
    /* Completion wakes a poll sleeping in the kernel on the eventfd. */
    int64_t t0 = shim__now();
    pthread_t t;
    void *go_later(void *);
    pthread_create(&t, NULL, go_later, NULL);
    ck_assert_int_eq(shim_poll(&p, 1, 5000 * 1000000ll, NULL), 1);
    ck_assert_int_eq(p.revents, POLLOUT);
    ck_assert_int_ge(ms_since(t0), 40);
    pthread_join(t, NULL);
    int err = -1;
    socklen_t len = sizeof(err);
    ck_assert_int_eq(shim_getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len), 0);
    ck_assert_int_eq(err, 0);
    /* The first connect() after completion says 0, the next EISCONN (as Linux). */
    ck_assert_int_eq(shim_connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    ck_assert_int_eq(shim_connect(fd, (struct sockaddr *)&a, sizeof(a)), -EISCONN);
}
END_TEST

void *go_later(void *p)
{
    (void)p;
    usleep(50000);
    atomic_store(&slow_go, 1);
    return NULL;
}

START_TEST(eof_shutdown_timeouts)
{
    int fd = connected(P_EOF);
    char c;
    ck_assert_int_eq(shim_recv(fd, &c, 1, 0), 0);
    struct pollfd p = {fd, POLLIN | POLLRDHUP, 0};
    ck_assert_int_eq(shim_poll(&p, 1, -1, NULL), 1);
    ck_assert_int_eq(p.revents & (POLLIN | POLLRDHUP), POLLIN | POLLRDHUP);
    int fd2 = connected(7);
    struct timeval tv = {0, 100000};
    ck_assert_int_eq(shim_setsockopt(fd2, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)), 0);
    int64_t t0 = shim__now();
    ck_assert_int_eq(shim_recv(fd2, &c, 1, 0), -EAGAIN);
    ck_assert_int_ge(ms_since(t0), 90);
    tv.tv_usec = 2000000;
    ck_assert_int_eq(shim_setsockopt(fd2, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)), -EDOM);
    ck_assert_int_eq(shim_shutdown(fd2, SHUT_WR), 0);
    ck_assert_int_eq(shim_send(fd2, "x", 1, MSG_NOSIGNAL), -EPIPE);
    p = (struct pollfd){fd2, POLLOUT, 0};
    ck_assert_int_eq(shim_poll(&p, 1, 0, NULL), 1); /* Linux: writable after SHUT_WR */
    ck_assert_int_eq(shim_shutdown(fd2, SHUT_RD), 0);
    ck_assert_int_eq(shim_recv(fd2, &c, 1, 0), 0);
}
END_TEST

START_TEST(options_fcntl_ioctl)
{
    int fd = connected(7);
    int v = 0;
    socklen_t len = sizeof(v);
    ck_assert_int_eq(shim_getsockopt(fd, SOL_SOCKET, SO_TYPE, &v, &len), 0);
    ck_assert_int_eq(v, SOCK_STREAM);
    v = 1;
    ck_assert_int_eq(shim_setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &v, sizeof(v)), 0);
    /* TCP_NODELAY goes without waiting for the reply; the getsockopt after it, on the same
     * queue, sees it applied. */
    v = 0;
    len = sizeof(v);
    ck_assert_int_eq(shim_getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &v, &len), 0);
    ck_assert_int_eq(v, 1);
    ck_assert_int_eq(fk[shim_fds.ent[fd].slot].opt[STK_TCP_NODELAY], 1);
    ck_assert_int_eq(shim_setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &v, 2), -EINVAL);
    ck_assert_int_eq(shim_setsockopt(fd, IPPROTO_TCP, TCP_FASTOPEN_CONNECT, &v, sizeof(v)),
                     -EOPNOTSUPP);
    ck_assert_int_eq(shim_setsockopt(fd, IPPROTO_TCP, TCP_CONGESTION, "bbr9", 4), -ENOENT);
    ck_assert_int_eq(shim_setsockopt(fd, IPPROTO_TCP, TCP_CONGESTION, "cubic", 5), 0);
    ck_assert_int_eq(shim_setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &(int){0}, sizeof(int)),
                     -EINVAL);
    /* Unknown to ustack: the kernel decides, through the scratch socket. */
    ck_assert_int_eq(shim_setsockopt(fd, SOL_SOCKET, 9999, &v, sizeof(v)), -ENOPROTOOPT);
    v = 16;
    ck_assert_int_eq(shim_setsockopt(fd, IPPROTO_IP, IP_TOS, &v, sizeof(v)), 0);
    v = 0;
    len = sizeof(v);
    ck_assert_int_eq(shim_getsockopt(fd, IPPROTO_IP, IP_TOS, &v, &len), 0);
    ck_assert_int_eq(v, 16);
    struct tcp_info ti;
    len = sizeof(ti);
    ck_assert_int_eq(shim_getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len), 0);
    ck_assert_int_eq(len, sizeof(ti));
    ck_assert_int_eq(ti.tcpi_state, 1); /* TCP_ESTABLISHED */
    ck_assert_int_eq(ti.tcpi_rtt, 123);
    ck_assert_int_eq(ti.tcpi_snd_cwnd, 10);
    /* O_NONBLOCK three ways. */
    ck_assert_int_eq(shim_fcntl(fd, F_GETFL, NULL) & O_NONBLOCK, 0);
    ck_assert_int_eq(shim_fcntl(fd, F_SETFL, (void *)(intptr_t)O_NONBLOCK), 0);
    ck_assert_int_eq(shim_fcntl(fd, F_GETFL, NULL), O_RDWR | O_NONBLOCK);
    char c;
    ck_assert_int_eq(shim_recv(fd, &c, 1, 0), -EAGAIN);
    v = 0;
    ck_assert_int_eq(shim_ioctl(fd, FIONBIO, &v), 0);
    ck_assert_int_eq(shim_recv(fd, &c, 1, MSG_DONTWAIT), -EAGAIN);
    ck_assert_int_eq(shim_send(fd, "abc", 3, 0), 3);
    usleep(20000);
    ck_assert_int_eq(shim_ioctl(fd, FIONREAD, &v), 0);
    ck_assert_int_eq(v, 3);
    int d = shim_fcntl(fd, F_DUPFD_CLOEXEC, (void *)(intptr_t)100);
    ck_assert_int_ge(d, 100);
    ck_assert_uint_eq(atomic_load(&sock_of(fd)->refs), 2);
    ck_assert_int_eq(shim_close(d), 0);
}
END_TEST

/* ---- listen / accept ------------------------------------------------------------------ */

static void inject(int lfd, uint16_t rport)
{
    uint32_t l = shim_fds.ent[lfd].slot;
    uint32_t i = shm_sock_alloc(base);
    struct shm_sock *s = shm_sock(base, i);
    s->core = 0;
    s->ra = (struct shm_addr){.ip = PEER_IP, .port = rport};
    s->la = (struct shm_addr){.ip = MY_IP, .port = 80};
    atomic_store(&s->flags, SHM_F_CONNECTED);
    atomic_store(&s->state, SHM_SOCK_LIVE);
    ck_assert_int_eq(shm_aq_push(shm_sock(base, l), shm_rx_data(base, l), 4096, i), 0);
    publish(l, SHM_EV_IN);
}

START_TEST(listen_accept)
{
    int l = shim_socket(0);
    struct sockaddr_in a = addr(MY_IP, 80);
    ck_assert_int_eq(shim_bind(l, (struct sockaddr *)&a, sizeof(a)), 0);
    ck_assert_int_eq(shim_bind(l, (struct sockaddr *)&a, sizeof(a)), -EINVAL);
    ck_assert_int_eq(shim_listen(l, 16), 0);
    shim_fcntl(l, F_SETFL, (void *)(intptr_t)O_NONBLOCK);
    ck_assert_int_eq(shim_accept(l, NULL, NULL, 0), -EAGAIN);
    inject(l, 1234);
    struct sockaddr_in pa;
    socklen_t len = sizeof(pa);
    int c = shim_accept(l, (struct sockaddr *)&pa, &len, SOCK_NONBLOCK);
    ck_assert_int_ge(c, 0);
    ck_assert_int_eq(len, sizeof(pa));
    ck_assert_uint_eq(ntohs(pa.sin_port), 1234);
    ck_assert_int_eq(shim_fcntl(c, F_GETFL, NULL), O_RDWR | O_NONBLOCK);
    ck_assert_int_eq(shim_send(c, "hi", 2, 0), 2);
    char buf[4];
    struct pollfd p = {c, POLLIN, 0};
    ck_assert_int_eq(shim_poll(&p, 1, -1, NULL), 1);
    ck_assert_int_eq(shim_recv(c, buf, 4, 0), 2);
    /* A blocking accept is woken by a connection arriving later. */
    shim_fcntl(l, F_SETFL, 0);
    pthread_t t;
    void *inject_later(void *);
    int lcopy = l;
    pthread_create(&t, NULL, inject_later, &lcopy);
    int c2 = shim_accept(l, NULL, NULL, 0);
    ck_assert_int_ge(c2, 0);
    pthread_join(t, NULL);
    int v = 0;
    len = sizeof(v);
    ck_assert_int_eq(shim_getsockopt(l, SOL_SOCKET, SO_ACCEPTCONN, &v, &len), 0);
    ck_assert_int_eq(v, 1);
    /* Closing the listener closes it on the stack. */
    ck_assert_int_eq(shim_close(l), 0);
    usleep(20000);
    ck_assert_int_eq(atomic_load(&closes), 1);
}
END_TEST

/* The last close of an accepted socket whose ATTACH the stack has not reached takes it back
 * instead of waiting for the stack to fetch the eventfd (docs/shm.md "Commands"); a close
 * that leaves another fd of the socket still waits, as the stack must get that eventfd. */
static void *close_in_thread(void *p)
{
    int *fd = p;
    fd[1] = shim_close(fd[0]);
    atomic_store((atomic_int *)&fd[2], 1);
    return NULL;
}

START_TEST(last_close_cancels_attach)
{
    int l = shim_socket(0);
    struct sockaddr_in a = addr(MY_IP, 81);
    ck_assert_int_eq(shim_bind(l, (struct sockaddr *)&a, sizeof(a)), 0);
    ck_assert_int_eq(shim_listen(l, 16), 0);
    inject(l, 1301);
    atomic_store(&paused, 1);
    int c = shim_accept(l, NULL, NULL, 0);
    ck_assert_int_ge(c, 0);
    uint32_t i = shim_fds.ent[c].slot;
    struct shm_sock *s = shm_sock(base, i);
    ck_assert_uint_eq(atomic_load(&s->attach_pend), SHM_ATT_PEND);
    int64_t t0 = shim__now();
    ck_assert_int_eq(shim_close(c), 0);
    ck_assert_int_lt(shim__now() - t0, 200 * 1000 * 1000); /* not the 1 s bound */
    ck_assert_uint_eq(atomic_load(&s->attach_pend), SHM_ATT_CANCEL);
    atomic_store(&paused, 0);
    for (int k = 0; k < 200 && atomic_load(&s->attach_pend); k++)
        usleep(1000);
    ck_assert_uint_eq(atomic_load(&s->attach_pend), 0);
    ck_assert_int_eq(atomic_load(&attach_cancels), 1);

    /* With a dup alive the close waits until the stack holds the eventfd. */
    inject(l, 1302);
    atomic_store(&paused, 1);
    c = shim_accept(l, NULL, NULL, 0);
    ck_assert_int_ge(c, 0);
    i = shim_fds.ent[c].slot;
    s = shm_sock(base, i);
    int d = shim_fcntl(c, F_DUPFD_CLOEXEC, (void *)(intptr_t)100);
    ck_assert_int_ge(d, 100);
    int arg[3] = {c, -1, 0};
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, close_in_thread, arg), 0);
    usleep(50000);
    ck_assert_int_eq(atomic_load((atomic_int *)&arg[2]), 0);
    ck_assert_uint_ne(atomic_load(&s->attach_pend) & SHM_ATT_PEND, 0);
    atomic_store(&paused, 0);
    pthread_join(t, NULL);
    ck_assert_int_eq(arg[1], 0);
    ck_assert_uint_eq(atomic_load(&s->attach_pend), 0);
    ck_assert_int_ge(atomic_load(&fk[i].efd), 0);
    ck_assert_int_eq(atomic_load(&attach_cancels), 1);
    ck_assert_int_eq(shim_close(d), 0);
    ck_assert_int_eq(shim_close(l), 0);
}
END_TEST

void *inject_later(void *p)
{
    usleep(30000);
    inject(*(int *)p, 2222);
    return NULL;
}

static void *inject_after_1300ms(void *p)
{
    usleep(1300000);
    inject(*(int *)p, 3333);
    return NULL;
}

/* A listener on INADDR_ANY has a loopback companion, so a blocking accept sleeps in ppoll on
 * both; its sleeps are bounded (1 s, docs/preload.md "Calls racing close"), and such a
 * bound must only re-check, never end the accept (it once returned EAGAIN after 1 s). */
START_TEST(blocking_accept_with_companion_waits)
{
    int l = shim_socket(0);
    struct sockaddr_in a = addr(0, 47811);
    ck_assert_int_eq(shim_bind(l, (struct sockaddr *)&a, sizeof(a)), 0);
    ck_assert_int_eq(shim_listen(l, 16), 0);
    ck_assert_int_ge(shim__c.files[shim_fds.ent[l].slot].lfd, 0);
    pthread_t t;
    int lcopy = l;
    ck_assert_int_eq(pthread_create(&t, NULL, inject_after_1300ms, &lcopy), 0);
    int64_t t0 = shim__now();
    int c = shim_accept(l, NULL, NULL, 0);
    pthread_join(t, NULL);
    ck_assert_int_ge(c, 0);
    ck_assert_int_ge(ms_since(t0), 1200);
    ck_assert_int_eq(shim_close(c), 0);
    ck_assert_int_eq(shim_close(l), 0);
}
END_TEST

/* ---- diagnostics ---------------------------------------------------------------------- */

/* Keys built in a reused stack buffer (as unsupported_set's "opt<level>.<name>"): each key
 * is said once, whatever buffer it was built in. Before, the stored pointer matched any
 * later key built in the same buffer, and a key built elsewhere was said again. */
static bool first_from(const char *key)
{
    char buf[32];
    snprintf(buf, sizeof(buf), "%s", key);
    return shim_first_time(buf);
}

START_TEST(warn_once_per_key)
{
    ck_assert(first_from("opt1.12"));
    ck_assert(first_from("opt6.10"));
    ck_assert(!first_from("opt1.12"));
    char other[32];
    snprintf(other, sizeof(other), "opt6.10");
    ck_assert(!shim_first_time(other));
    ck_assert(shim_first_time("opt41.24"));
}
END_TEST

/* ---- signals (intr.h) ----------------------------------------------------------------- */

static volatile sig_atomic_t usr2s;

static void on_usr2(int sig)
{
    (void)sig;
    usr2s++;
}

static void *notify_after_150ms(void *arg)
{
    usleep(150 * 1000);
    publish(*(uint32_t *)arg, 0);
    return NULL;
}

static pthread_t sleeper;

static void *notify_then_signal(void *arg)
{
    usleep(100 * 1000);
    publish(*(uint32_t *)arg, 0);
    pthread_kill(sleeper, SIGUSR2);
    return NULL;
}

/* A sleep that the socket's change ends while a handler (no SA_RESTART) also runs returns
 * to the caller's re-check, as Linux returns the data that woke it; the EINTR stays for the
 * rest of the call: the next sleep on an unchanged socket fails at once. */
START_TEST(data_before_signal)
{
    struct sigaction sa = {.sa_handler = on_usr2}, old;
    sigemptyset(&sa.sa_mask);
    ck_assert_int_eq(shim_intr_sigaction(sigaction, SIGUSR2, &sa, &old), 0);
    int fd = connected(7);
    struct shm_sock *s = sock_of(fd);
    uint32_t slot = shim_fds.ent[fd].slot;
    for (int round = 0; round < 5; round++) {
        uint32_t seq0 = atomic_load(&s->seq);
        usr2s = 0;
        sleeper = pthread_self();
        shim_intr_begin();
        pthread_t t;
        ck_assert_int_eq(pthread_create(&t, NULL, notify_then_signal, &slot), 0);
        int rc = shim__sleep(s, seq0, SHIM_FOREVER);
        pthread_join(t, NULL);
        ck_assert_int_eq(usr2s, 1);
        ck_assert_int_eq(rc, 0);
        ck_assert_uint_ne(atomic_load(&s->seq), seq0);
        int64_t t0 = shim__now();
        ck_assert_int_eq(shim__sleep(s, atomic_load(&s->seq), SHIM_FOREVER), -EINTR);
        ck_assert_int_lt(ms_since(t0), 100);
    }
    ck_assert_int_eq(shim_intr_sigaction(sigaction, SIGUSR2, &old, NULL), 0);
    ck_assert_int_eq(shim_close(fd), 0);
}
END_TEST

/* A handler installed through the interposer runs behind the trampoline, which the kernel
 * sees and the application does not; one that runs after a blocking call began to wait but
 * outside its sleep (here: raise() before the sleep) still ends the call, with EINTR, or,
 * for SA_RESTART and no timeout, lets it wait on. */
START_TEST(handler_outside_sleep_interrupts)
{
    struct sigaction sa = {.sa_handler = on_usr2}, k, old;
    sigemptyset(&sa.sa_mask);
    ck_assert_int_eq(shim_intr_sigaction(sigaction, SIGUSR2, &sa, NULL), 0);
    ck_assert_int_eq(sigaction(SIGUSR2, NULL, &k), 0);
    ck_assert_ptr_eq((void *)k.sa_sigaction, (void *)trampoline);
    ck_assert(k.sa_flags & SA_SIGINFO);
    ck_assert_int_eq(shim_intr_sigaction(sigaction, SIGUSR2, NULL, &old), 0);
    ck_assert_ptr_eq((void *)old.sa_handler, (void *)on_usr2);
    ck_assert_int_eq(old.sa_flags, 0);

    int fd = connected(7);
    struct shm_sock *s = sock_of(fd);
    uint32_t seq0 = atomic_load(&s->seq);
    usr2s = 0;
    shim_intr_begin();
    raise(SIGUSR2);
    ck_assert_int_eq(usr2s, 1);
    int64_t t0 = shim__now();
    ck_assert_int_eq(shim__sleep(s, seq0, SHIM_FOREVER), -EINTR);
    ck_assert_int_lt(ms_since(t0), 100);

    /* SA_RESTART: a call with a timeout still ends with EINTR; without one it waits on
     * until the socket changes. */
    sa.sa_flags = SA_RESTART;
    ck_assert_int_eq(shim_intr_sigaction(sigaction, SIGUSR2, &sa, &old), 0);
    ck_assert_int_eq(old.sa_flags, 0);
    shim_intr_begin();
    raise(SIGUSR2);
    ck_assert_int_eq(shim__sleep(s, seq0, shim__now() + 500 * 1000000ll), -EINTR);
    shim_intr_begin();
    raise(SIGUSR2);
    uint32_t slot = shim_fds.ent[fd].slot;
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, notify_after_150ms, &slot), 0);
    t0 = shim__now();
    int rc;
    while ((rc = shim__sleep(s, seq0, SHIM_FOREVER)) == 0 && atomic_load(&s->seq) == seq0)
        ;
    pthread_join(t, NULL);
    ck_assert_int_eq(rc, 0);
    ck_assert_int_ge(ms_since(t0), 100);
    ck_assert_int_eq(usr2s, 3);

    struct sigaction dfl = {.sa_handler = SIG_DFL};
    sigemptyset(&dfl.sa_mask);
    ck_assert_int_eq(shim_intr_sigaction(sigaction, SIGUSR2, &dfl, &old), 0);
    ck_assert_ptr_eq((void *)old.sa_handler, (void *)on_usr2);
    ck_assert_int_eq(old.sa_flags, SA_RESTART);
    ck_assert_int_eq(sigaction(SIGUSR2, NULL, &k), 0);
    ck_assert_ptr_eq((void *)k.sa_handler, (void *)SIG_DFL);
    ck_assert_int_eq(shim_close(fd), 0);
}
END_TEST

/* ---- readiness ------------------------------------------------------------------------ */

static int ep_wait(int ep, struct epoll_event *ev, int ms)
{
    return shim_epoll_wait(ep, ev, 8, ms < 0 ? -1 : ms * 1000000ll, NULL);
}

START_TEST(epoll_level_edge_oneshot)
{
    int lt = connected(7), et = connected(7), os = connected(7);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    int pfd[2];
    ck_assert_int_eq(pipe(pfd), 0);
    struct epoll_event ev = {EPOLLIN, {.u64 = 1}};
    ck_assert_int_eq(shim_epoll_ctl(ep, EPOLL_CTL_ADD, lt, &ev), 0);
    ck_assert_int_eq(shim_epoll_ctl(ep, EPOLL_CTL_ADD, lt, &ev), -EEXIST);
    ev = (struct epoll_event){EPOLLIN | EPOLLET, {.u64 = 2}};
    ck_assert_int_eq(shim_epoll_ctl(ep, EPOLL_CTL_ADD, et, &ev), 0);
    ev = (struct epoll_event){EPOLLIN | EPOLLONESHOT, {.u64 = 3}};
    ck_assert_int_eq(shim_epoll_ctl(ep, EPOLL_CTL_ADD, os, &ev), 0);
    ev = (struct epoll_event){EPOLLIN, {.u64 = 4}}; /* a kernel member in the same set */
    ck_assert_int_eq(shim_epoll_ctl(ep, EPOLL_CTL_ADD, pfd[0], &ev), 0);
    ck_assert_int_eq(shim_fd_kind(ep), SHIM_FD_EPOLL);
    struct epoll_event out[8];
    ck_assert_int_eq(ep_wait(ep, out, 0), 0);
    shim_send(lt, "a", 1, 0);
    shim_send(et, "b", 1, 0);
    shim_send(os, "c", 1, 0);
    ck_assert_int_eq(write(pfd[1], "k", 1), 1);
    usleep(20000);
    int n = ep_wait(ep, out, 1000);
    uint64_t seen = 0;
    for (int i = 0; i < n; i++) {
        ck_assert_int_eq(out[i].events, EPOLLIN);
        seen |= 1u << out[i].data.u64;
    }
    ck_assert_int_eq(n, 4);
    ck_assert_int_eq(seen, 0x1e);
    /* Nothing read: level-triggered ones again, the edge and the one-shot not. */
    n = ep_wait(ep, out, 100);
    seen = 0;
    for (int i = 0; i < n; i++)
        seen |= 1u << out[i].data.u64;
    ck_assert_int_eq(seen, 0x12);
    /* New data is a new edge. */
    shim_send(et, "d", 1, 0);
    usleep(20000);
    n = ep_wait(ep, out, 1000);
    seen = 0;
    for (int i = 0; i < n; i++)
        seen |= 1u << out[i].data.u64;
    ck_assert_int_eq(seen, 0x16);
    /* MOD re-arms the one-shot one. */
    ev = (struct epoll_event){EPOLLIN | EPOLLONESHOT, {.u64 = 3}};
    ck_assert_int_eq(shim_epoll_ctl(ep, EPOLL_CTL_MOD, os, &ev), 0);
    n = ep_wait(ep, out, 1000);
    seen = 0;
    for (int i = 0; i < n; i++)
        seen |= 1u << out[i].data.u64;
    ck_assert_int_eq(seen & 8, 8);
    /* Consumed: the level-triggered member stops reporting. */
    char buf[8];
    ck_assert_int_eq(shim_recv(lt, buf, 8, 0), 1);
    ck_assert_int_eq(read(pfd[0], buf, 8), 1);
    n = ep_wait(ep, out, 50);
    for (int i = 0; i < n; i++)
        ck_assert_int_ne(out[i].data.u64, 1);
    /* The epoll fd itself polls readable while a member is ready (nested use). */
    int ep2 = epoll_create1(0);
    ev = (struct epoll_event){EPOLLIN, {.u64 = 7}};
    ck_assert_int_eq(shim_epoll_ctl(ep2, EPOLL_CTL_ADD, lt, &ev), 0);
    struct pollfd p = {ep2, POLLIN, 0};
    ck_assert_int_eq(poll(&p, 1, 0), 0);
    shim_send(lt, "z", 1, 0);
    ck_assert_int_eq(poll(&p, 1, 1000), 1);
    /* DEL, and close removes a socket from every set. */
    ck_assert_int_eq(shim_epoll_ctl(ep, EPOLL_CTL_DEL, lt, NULL), 0);
    ck_assert_int_eq(shim_epoll_ctl(ep, EPOLL_CTL_DEL, lt, NULL), -ENOENT);
    shim_close(lt);
    usleep(20000);
    ck_assert_int_eq(poll(&p, 1, 0), 0);
    ck_assert_int_eq(shim_close(ep2), 0);
    ck_assert_int_eq(shim_close(ep), 0);
}
END_TEST

/* Edge-triggered members report events (each arrival, even undrained; EPOLLOUT once, not
 * at an arrival); registrations belong to the socket, not the fd number; a drained member
 * leaves its epoll fd unreadable; EPOLLEXCLUSIVE members work through the application's
 * own epoll. */
START_TEST(epoll_events_dups_nesting)
{
    int fd = connected(7), ep = epoll_create1(0);
    struct epoll_event ev = {EPOLLIN | EPOLLET, {.u64 = 1}}, out[8];
    char buf[8];
    ck_assert_int_eq(shim_epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev), 0);
    shim_send(fd, "a", 1, 0);
    ck_assert_int_eq(ep_wait(ep, out, 1000), 1);
    ck_assert_int_eq(ep_wait(ep, out, 50), 0);
    shim_send(fd, "b", 1, 0);
    ck_assert_int_eq(ep_wait(ep, out, 1000), 1); /* undrained: still a new event */
    ck_assert_int_eq(out[0].events, EPOLLIN);
    ck_assert_int_eq(ep_wait(ep, out, 50), 0);
    ck_assert_int_eq(shim_recv(fd, buf, 8, 0), 2);
    ev = (struct epoll_event){EPOLLOUT | EPOLLET, {.u64 = 2}};
    ck_assert_int_eq(shim_epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev), 0);
    ck_assert_int_eq(ep_wait(ep, out, 1000), 1);
    ck_assert_int_eq(out[0].events, EPOLLOUT);
    shim_send(fd, "c", 1, 0); /* the echo is an arrival: no EPOLLOUT edge */
    usleep(20000);
    ck_assert_int_eq(ep_wait(ep, out, 50), 0);
    ck_assert_int_eq(shim_recv(fd, buf, 8, 0), 1);
    ck_assert_int_eq(shim_epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL), 0);

    /* Closing the registered fd while a dup lives: the registration stays, with its tag. */
    int d = shim_dup(fd);
    ck_assert_int_ge(d, 0);
    ev = (struct epoll_event){EPOLLIN, {.u64 = 9}};
    ck_assert_int_eq(shim_epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev), 0);
    shim_send(fd, "d", 1, 0);
    ck_assert_int_eq(shim_close(fd), 0);
    ck_assert_int_eq(ep_wait(ep, out, 1000), 1);
    ck_assert_uint_eq(out[0].data.u64, 9);
    ck_assert_int_eq(shim_epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL), -EBADF);
    ck_assert_int_eq(shim_epoll_ctl(ep, EPOLL_CTL_DEL, d, NULL), -ENOENT);
    ev.data.u64 = 10;
    ck_assert_int_eq(shim_epoll_ctl(ep, EPOLL_CTL_ADD, d, &ev), 0);
    ck_assert_int_eq(ep_wait(ep, out, 1000), 2);

    /* Nested: drained, the epoll fd is no longer readable to poll(). */
    struct pollfd p = {ep, POLLIN, 0};
    ck_assert_int_eq(poll(&p, 1, 0), 1);
    ck_assert_int_eq(shim_recv(d, buf, 8, 0), 1);
    ck_assert_int_eq(poll(&p, 1, 0), 0);
    ck_assert_int_eq(shim_close(d), 0);
    ck_assert_int_eq(ep_wait(ep, out, 50), 0);

    /* EPOLLEXCLUSIVE: reported with the application's data; no MOD; DEL works. */
    int x = connected(7), ep2 = epoll_create1(0);
    ev = (struct epoll_event){EPOLLIN | EPOLLEXCLUSIVE, {.u64 = 11}};
    ck_assert_int_eq(shim_epoll_ctl(ep, EPOLL_CTL_ADD, x, &ev), 0);
    ev.data.u64 = 12;
    ck_assert_int_eq(shim_epoll_ctl(ep2, EPOLL_CTL_ADD, x, &ev), 0);
    ck_assert_int_eq(ep_wait(ep, out, 30), 0);
    shim_send(x, "e", 1, 0);
    ck_assert_int_eq(ep_wait(ep2, out, 1000), 1);
    ck_assert_uint_eq(out[0].data.u64, 12);
    ck_assert_int_eq(out[0].events, EPOLLIN);
    ev.events = EPOLLIN;
    ck_assert_int_eq(shim_epoll_ctl(ep2, EPOLL_CTL_MOD, x, &ev), -EINVAL);
    ck_assert_int_eq(shim_epoll_ctl(ep2, EPOLL_CTL_DEL, x, NULL), 0);
    ck_assert_int_eq(ep_wait(ep2, out, 30), 0);
    ck_assert_int_eq(shim_recv(x, buf, 8, 0), 1);
    ck_assert_int_eq(ep_wait(ep, out, 30), 0);
    ck_assert_int_eq(shim_close(x), 0);
    ck_assert_int_eq(shim_close(ep2), 0);
    ck_assert_int_eq(shim_close(ep), 0);
}
END_TEST

static int64_t thread_cpu_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Members sit in the application's epoll itself (docs/shm.md "epoll"): maxevents smaller
 * than the ready set rotates through ustack and kernel members alike (an inner epoll took
 * one place in the rotation for all its members), a kernel member's data that happens to
 * have the top bit set passes untouched, and a wake whose events all turn out stale neither
 * returns 0 before the timeout nor spins. */
START_TEST(epoll_direct_rotation_stale_wakes)
{
    int s[3], ep = epoll_create1(0), pfd[2];
    ck_assert_int_eq(pipe(pfd), 0);
    struct epoll_event ev, out[8];
    for (int i = 0; i < 3; i++) {
        s[i] = connected(7);
        ev = (struct epoll_event){EPOLLIN, {.u64 = (uint64_t)i}};
        ck_assert_int_eq(shim_epoll_ctl(ep, EPOLL_CTL_ADD, s[i], &ev), 0);
        shim_send(s[i], "a", 1, 0);
    }
    ev = (struct epoll_event){EPOLLIN, {.u64 = 0xfedcba9800000003ull}};
    ck_assert_int_eq(shim_epoll_ctl(ep, EPOLL_CTL_ADD, pfd[0], &ev), 0);
    ck_assert_int_eq(write(pfd[1], "k", 1), 1);
    usleep(20000);
    for (int round = 0; round < 3; round++) {
        unsigned seen = 0;
        for (int i = 0; i < 4; i++) {
            ck_assert_int_eq(shim_epoll_wait(ep, out, 1, SHIM_NS_PER_S, NULL), 1);
            ck_assert_int_eq(out[0].events, EPOLLIN);
            if (out[0].data.u64 >> 32)
                ck_assert_uint_eq(out[0].data.u64, 0xfedcba9800000003ull);
            seen |= 1u << (out[0].data.u64 & 3);
        }
        ck_assert_uint_eq(seen, 0xf);
    }
    /* Nothing ready, then stale signals: a level-triggered member's eventfd, and an
     * edge-triggered one's without an event. */
    char buf[8];
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(shim_recv(s[i], buf, sizeof(buf), 0), 1);
    ck_assert_int_eq(read(pfd[0], buf, sizeof(buf)), 1);
    ev = (struct epoll_event){EPOLLIN | EPOLLET, {.u64 = 1}};
    ck_assert_int_eq(shim_epoll_ctl(ep, EPOLL_CTL_MOD, s[1], &ev), 0);
    ck_assert_int_eq(ep_wait(ep, out, 0), 0);
    ck_assert_int_eq(ep_wait(ep, out, 0), 0);
    uint64_t one = 1;
    ck_assert_int_eq(write(s[0], &one, sizeof(one)), 8);
    ck_assert_int_eq(write(s[1], &one, sizeof(one)), 8);
    int64_t t0 = shim__now(), c0 = thread_cpu_ms();
    ck_assert_int_eq(ep_wait(ep, out, 300), 0);
    ck_assert_int_ge(ms_since(t0), 295);
    ck_assert_int_lt(thread_cpu_ms() - c0, 100);
    /* Real events still come through after that. */
    shim_send(s[1], "b", 1, 0);
    ck_assert_int_eq(ep_wait(ep, out, 1000), 1);
    ck_assert_uint_eq(out[0].data.u64, 1);
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(shim_close(s[i]), 0);
    close(pfd[0]);
    close(pfd[1]);
    ck_assert_int_eq(shim_close(ep), 0);
}
END_TEST

/* A one-shot member woken while not ready is enabled again in the application's epoll
 * (the kernel disabled it when it returned the stale event); an EPOLLEXCLUSIVE listener
 * whose fd is closed while a dup lives keeps reporting, its loopback companion too (its
 * registration cannot be MODed: it is deleted and added again under the new number). */
START_TEST(epoll_oneshot_stale_exclusive_hold)
{
    int os = connected(7), ep = epoll_create1(0);
    struct epoll_event ev = {EPOLLIN | EPOLLONESHOT, {.u64 = 5}}, out[8];
    ck_assert_int_eq(shim_epoll_ctl(ep, EPOLL_CTL_ADD, os, &ev), 0);
    uint64_t one = 1;
    ck_assert_int_eq(write(os, &one, sizeof(one)), 8);
    ck_assert_int_eq(ep_wait(ep, out, 50), 0);
    shim_send(os, "a", 1, 0);
    ck_assert_int_eq(ep_wait(ep, out, 1000), 1);
    ck_assert_uint_eq(out[0].data.u64, 5);
    ck_assert_int_eq(ep_wait(ep, out, 50), 0); /* reported: disabled until MOD */
    ck_assert_int_eq(shim_close(os), 0);

    int l = shim_socket(0);
    struct sockaddr_in a = addr(0, 47812);
    ck_assert_int_eq(shim_bind(l, (struct sockaddr *)&a, sizeof(a)), 0);
    ck_assert_int_eq(shim_listen(l, 16), 0);
    ck_assert_int_ge(shim__c.files[shim_fds.ent[l].slot].lfd, 0);
    ev = (struct epoll_event){EPOLLIN | EPOLLEXCLUSIVE, {.u64 = 21}};
    ck_assert_int_eq(shim_epoll_ctl(ep, EPOLL_CTL_ADD, l, &ev), 0);
    int d = shim_dup(l);
    ck_assert_int_ge(d, 0);
    ck_assert_int_eq(shim_close(l), 0);
    ck_assert_int_eq(ep_wait(ep, out, 30), 0);
    int k = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in lo = addr(INADDR_LOOPBACK, 47812);
    ck_assert_int_eq(connect(k, (struct sockaddr *)&lo, sizeof(lo)), 0);
    ck_assert_int_eq(ep_wait(ep, out, 1000), 1);
    ck_assert_uint_eq(out[0].data.u64, 21);
    ck_assert_int_eq(out[0].events, EPOLLIN);
    int c = shim_accept(d, NULL, NULL, 0);
    ck_assert_int_ge(c, 0);
    ck_assert_int_eq(ep_wait(ep, out, 30), 0);
    close(k);
    ck_assert_int_eq(shim_close(c), 0);
    ck_assert_int_eq(shim_close(d), 0);
    ck_assert_int_eq(shim_close(ep), 0);
}
END_TEST

/* The stack counts an event before its change shows (docs/shm.md "Events"). A harvest, or
 * an ADD, that falls between the two sees the count without the data: it must not use the
 * count up, or the stack's signal after the change reports nothing and the data waits
 * forever (nginx waited out client_header_timeout and reset the connection). */
START_TEST(epoll_et_count_before_change)
{
    uint32_t ring = shm_hdr(base)->ring_size;
    uint64_t one = 1;
    struct epoll_event ev = {EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, {.u64 = 1}}, out[8];
    char buf[8];
    for (int at_add = 0; at_add < 2; at_add++) {
        int fd = connected(7), ep = epoll_create1(0);
        usleep(20000); /* the fake stack's publish of the connect, after the flag */
        uint32_t i = shim_fds.ent[fd].slot;
        struct shm_sock *s = sock_of(fd);
        if (at_add) /* counted, then the ADD, then the bytes */
            atomic_fetch_add(&s->ev_in, 1);
        ck_assert_int_eq(shim_epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev), 0);
        ck_assert_int_eq(ep_wait(ep, out, 1000), 1);
        ck_assert_int_eq(out[0].events, EPOLLOUT);
        if (!at_add) {
            /* Counted; a harvest (the eventfd signalled for another reason) before the bytes. */
            atomic_fetch_add(&s->ev_in, 1);
            ck_assert_int_eq(write(atomic_load(&fk[i].efd), &one, 8), 8);
            int n = ep_wait(ep, out, 50);
            ck_assert(n == 0 || !(out[0].events & EPOLLIN));
        }
        ck_assert_int_eq(ep_wait(ep, out, 30), 0);
        shm_ring_write(&s->rx, shm_rx_data(base, i), ring, "x", 1);
        publish(i, SHM_EV_IN | PUB_COUNTED);
        ck_assert_int_eq(ep_wait(ep, out, 1000), 1);
        ck_assert_int_eq(out[0].events, EPOLLIN | EPOLLOUT);
        ck_assert_int_eq(shim_recv(fd, buf, 8, 0), 1);
        ck_assert_int_eq(ep_wait(ep, out, 30), 0);
        ck_assert_int_eq(shim_close(fd), 0);
        ck_assert_int_eq(shim_close(ep), 0);
    }
}
END_TEST

START_TEST(epoll_wakes_sleeper)
{
    int fd = shim_socket(SOCK_NONBLOCK);
    int ep = epoll_create1(0);
    struct epoll_event ev = {EPOLLOUT | EPOLLET, {.u64 = 5}}, out[8];
    struct sockaddr_in a = addr(PEER_IP, P_SLOW);
    ck_assert_int_eq(shim_connect(fd, (struct sockaddr *)&a, sizeof(a)), -EINPROGRESS);
    ck_assert_int_eq(shim_epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev), 0);
    ck_assert_int_eq(ep_wait(ep, out, 30), 0);
    pthread_t t;
    pthread_create(&t, NULL, go_later, NULL);
    int64_t t0 = shim__now();
    ck_assert_int_eq(ep_wait(ep, out, 5000), 1);
    ck_assert_int_ge(ms_since(t0), 40);
    ck_assert_int_eq(out[0].events, EPOLLOUT);
    pthread_join(t, NULL);
}
END_TEST

/* ---- the stack dies ------------------------------------------------------------------- */

/* The attach socket's path names the network namespace. Read through /proc/self, it is lost
 * once the main thread has exited (pthread_exit; /proc/self is that thread, a zombie without
 * namespaces): another thread of the process then computed a path no ustackd listens on,
 * spawned one, which found the device taken, and socket() failed with "the device is in use"
 * after 3 s. */
static char run_path_want[300];

static void *run_path_thread(void *arg)
{
    (void)arg;
    char got[300], ns[64];
    /* Until the main thread is gone (5 s at most). */
    for (int i = 0; i < 5000 && readlink("/proc/self/ns/net", ns, sizeof(ns)) > 0; i++)
        usleep(1000);
    _exit(shm_run_path("dev", ".sock", got, sizeof(got)) == 0 && strcmp(got, run_path_want) == 0
              ? 0
              : 1);
}

/* The child of run_path_after_main_thread_exit, this program exec'd again: a fresh image with
 * one thread (a fork of the test process, which may have others, deadlocked now and then in
 * pthread_create or pthread_exit under ASan). */
static int leaderless_main(void)
{
    if (shm_run_path("dev", ".sock", run_path_want, sizeof(run_path_want)) != 0)
        return 3;
    pthread_t t;
    if (pthread_create(&t, NULL, run_path_thread, NULL))
        return 2;
    pthread_exit(NULL);
}

START_TEST(run_path_after_main_thread_exit)
{
    ck_assert_int_eq(shm_run_path("dev", ".sock", run_path_want, sizeof(run_path_want)), 0);
    ck_assert_msg(strstr(run_path_want, ".0.sock") == NULL, "no namespace in %s", run_path_want);
    pid_t kid = fork();
    ck_assert_int_ge(kid, 0);
    if (kid == 0) {
        execl("/proc/self/exe", "test_client", "--leaderless-child", (char *)NULL);
        _exit(127);
    }
    int st = -1;
    ck_assert_int_eq(waitpid(kid, &st, 0), kid);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0,
                  "another path after the main thread exited");
}
END_TEST

/* A stand-in for ustackd's pid (a `sleep` spawned without fork handlers) that a thread kills
 * while the test sleeps in epoll_wait or poll: its pidfd must end the sleep. */
static pid_t stand_in(void)
{
    extern char **environ;
    pid_t pid;
    char *argv[] = {"sleep", "30", NULL};
    ck_assert_int_eq(posix_spawnp(&pid, "sleep", NULL, NULL, argv, environ), 0);
    atomic_store(&shm_hdr(base)->stack_pid, pid);
    /* The library opened the pidfd of the stack it attached to (this process, here): the
     * next wait opens the stand-in's (the old one stays open, so its number is not reused
     * under the library's private-fd entry). */
    __atomic_store_n(&shim__c.stack_pidfd, 0, __ATOMIC_RELEASE);
    return pid;
}

void *kill_later(void *p)
{
    usleep(100000);
    kill(*(pid_t *)p, SIGKILL);
    waitpid(*(pid_t *)p, NULL, 0);
    return NULL;
}

START_TEST(stack_death_wakes_epoll)
{
    pid_t stand = stand_in();
    int lt = connected(7), et = connected(7);
    int l = shim_socket(SOCK_NONBLOCK);
    struct sockaddr_in a = addr(MY_IP, 81);
    ck_assert_int_eq(shim_bind(l, (struct sockaddr *)&a, sizeof(a)), 0);
    ck_assert_int_eq(shim_listen(l, 16), 0);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {EPOLLIN, {.u64 = 1}}, out[8];
    ck_assert_int_eq(shim_epoll_ctl(ep, EPOLL_CTL_ADD, lt, &ev), 0);
    ev = (struct epoll_event){EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, {.u64 = 2}};
    ck_assert_int_eq(shim_epoll_ctl(ep, EPOLL_CTL_ADD, et, &ev), 0);
    ev = (struct epoll_event){EPOLLIN, {.u64 = 3}};
    ck_assert_int_eq(shim_epoll_ctl(ep, EPOLL_CTL_ADD, l, &ev), 0);
    ck_assert_int_eq(ep_wait(ep, out, 0), 1); /* et: writable at ADD */
    ck_assert_int_eq(ep_wait(ep, out, 20), 0);
    pthread_t t;
    pthread_create(&t, NULL, kill_later, &stand);
    int64_t t0 = shim__now();
    uint32_t got[4] = {0};
    while (ms_since(t0) < 3000 && !(got[1] && got[2])) {
        int n = ep_wait(ep, out, 3000);
        for (int i = 0; i < n; i++)
            got[out[i].data.u64 & 3] |= out[i].events;
    }
    pthread_join(t, NULL);
    ck_assert_int_lt(ms_since(t0), 2000);
    ck_assert_uint_eq(got[1], EPOLLIN | EPOLLERR | EPOLLHUP);
    ck_assert_uint_eq(got[2], EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLERR | EPOLLHUP);
    ck_assert_uint_eq(got[3], 0);
    /* Level-triggered: again; edge-triggered: once; the listener never. */
    ck_assert_int_eq(ep_wait(ep, out, 0), 1);
    ck_assert_uint_eq(out[0].data.u64, 1);
    t0 = shim__now();
    ck_assert_int_eq(ep_wait(ep, out, 0), 1);
    ck_assert_int_eq(ep_wait(ep, out, 0), 1);
    char buf[8];
    ck_assert_int_eq(shim_recv(lt, buf, sizeof(buf), MSG_DONTWAIT), -ECONNRESET);
    ck_assert_int_eq(shim_send(lt, "x", 1, MSG_NOSIGNAL), -EPIPE);
    ck_assert_int_eq(shim_accept(l, NULL, NULL, 0), -EAGAIN);
    /* A listener alone sleeps out its timeout (no busy loop on the dead stack's pidfd). */
    struct pollfd p = {l, POLLIN, 0};
    t0 = shim__now();
    ck_assert_int_eq(shim_poll(&p, 1, 200 * 1000000ll, NULL), 0);
    ck_assert_int_ge(ms_since(t0), 150);
    ck_assert_int_eq(shim_close(lt), 0);
    ck_assert_int_eq(shim_close(et), 0);
    ck_assert_int_eq(shim_close(l), 0);
}
END_TEST

START_TEST(stack_death_wakes_poll)
{
    pid_t stand = stand_in();
    int c = connected(7);
    struct pollfd p = {c, POLLIN, 0};
    ck_assert_int_eq(shim_poll(&p, 1, 20 * 1000000ll, NULL), 0);
    pthread_t t;
    pthread_create(&t, NULL, kill_later, &stand);
    int64_t t0 = shim__now();
    ck_assert_int_eq(shim_poll(&p, 1, 5000 * 1000000ll, NULL), 1);
    ck_assert_int_lt(ms_since(t0), 2000);
    ck_assert_int_eq(p.revents, POLLIN | POLLERR | POLLHUP);
    pthread_join(t, NULL);
    char buf[8];
    ck_assert_int_eq(shim_recv(c, buf, sizeof(buf), 0), -ECONNRESET);
    ck_assert_int_eq(shim_close(c), 0);
}
END_TEST

START_TEST(select_mixed)
{
    int fd = connected(7);
    int pfd[2];
    ck_assert_int_eq(pipe(pfd), 0);
    fd_set r, w;
    FD_ZERO(&r);
    FD_ZERO(&w);
    FD_SET(fd, &r);
    FD_SET(pfd[0], &r);
    int n = (fd > pfd[0] ? fd : pfd[0]) + 1;
    struct timeval tv = {0, 50000};
    ck_assert_int_eq(shim_select(n, &r, NULL, NULL, 50000000, NULL, &tv), 0);
    ck_assert_int_eq(tv.tv_sec, 0);
    ck_assert_int_eq(tv.tv_usec, 0);
    FD_SET(fd, &r);
    FD_SET(pfd[0], &r);
    FD_SET(fd, &w);
    ck_assert_int_eq(write(pfd[1], "x", 1), 1);
    ck_assert_int_eq(shim_select(n, &r, &w, NULL, -1, NULL, NULL), 2);
    ck_assert(FD_ISSET(pfd[0], &r));
    ck_assert(!FD_ISSET(fd, &r));
    ck_assert(FD_ISSET(fd, &w));
    FD_ZERO(&r);
    FD_SET(fd, &r);
    shim_send(fd, "q", 1, 0);
    ck_assert_int_eq(shim_select(n, &r, NULL, NULL, -1, NULL, NULL), 1);
    ck_assert(FD_ISSET(fd, &r));
}
END_TEST

/* ---- the kernel side ------------------------------------------------------------------ */

/* A kernel listener on 127.0.0.1 (its address in *a). */
static int kernel_lo_listener(struct sockaddr_in *a)
{
    int kl = socket(AF_INET, SOCK_STREAM, 0);
    *a = addr(INADDR_LOOPBACK, 0);
    ck_assert_int_eq(bind(kl, (struct sockaddr *)a, sizeof(*a)), 0);
    ck_assert_int_eq(listen(kl, 4), 0);
    socklen_t len = sizeof(*a);
    ck_assert_int_eq(getsockname(kl, (struct sockaddr *)a, &len), 0);
    return kl;
}

START_TEST(loopback_goes_to_the_kernel)
{
    /* A kernel listener on loopback; the ustack socket connecting to it is handed over. */
    struct sockaddr_in a;
    int kl = kernel_lo_listener(&a);
    socklen_t len;
    int fd = shim_socket(0);
    int v = 1;
    ck_assert_int_eq(shim_setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &v, sizeof(v)), 0);
    int ep = epoll_create1(0);
    struct epoll_event ev = {EPOLLIN, {.u64 = 9}}, out[8];
    ck_assert_int_eq(shim_epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev), 0);
    ck_assert_int_eq(shim_connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    ck_assert_int_eq(shim_fd_kind(fd), SHIM_FD_KERNEL);
    for (int i = 0; i < 2000 && atomic_load(&closes) == 0; i++) /* the fake stack's thread */
        usleep(1000);
    ck_assert_int_eq(atomic_load(&closes), 1); /* the ustack socket is gone */
    v = 0;
    len = sizeof(v);
    ck_assert_int_eq(getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &v, &len), 0);
    ck_assert_int_eq(v, 1); /* options were carried over */
    int c = accept(kl, NULL, NULL);
    ck_assert_int_ge(c, 0);
    ck_assert_int_eq(write(c, "k", 1), 1);
    /* ... and its epoll registration too, now as a kernel member. */
    ck_assert_int_eq(shim_epoll_wait(ep, out, 8, 1000000000ll, NULL), 1);
    ck_assert_int_eq(out[0].data.u64, 9);
    /* A listener on INADDR_ANY takes loopback connections through the kernel. */
    int l = shim_socket(0);
    a = addr(0, 0);
    ck_assert_int_eq(shim_bind(l, (struct sockaddr *)&a, sizeof(a)), 0);
    ck_assert_int_eq(shim_listen(l, 4), 0);
    len = sizeof(a);
    ck_assert_int_eq(shim_getsockname(l, (struct sockaddr *)&a, &len), 0);
    ck_assert_int_ne(a.sin_port, 0);
    int kc = socket(AF_INET, SOCK_STREAM, 0);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(connect(kc, (struct sockaddr *)&a, sizeof(a)), 0);
    struct pollfd p = {l, POLLIN, 0};
    ck_assert_int_eq(shim_poll(&p, 1, 1000000000ll, NULL), 1);
    int ac = shim_accept(l, NULL, NULL, 0);
    ck_assert_int_ge(ac, 0);
    ck_assert_int_eq(shim_fd_kind(ac), SHIM_FD_KERNEL);
}
END_TEST

/* A socket handed over to the kernel (a connect to loopback) before the stack took its
 * SOCKET: the number becomes the kernel socket only once the stack will not fetch the
 * eventfd by it. Here the SOCKET is taken back, at once; before, the stack fetched the
 * kernel socket at that number and refused it (shm_efd_fail, shm_socket_fail). */
START_TEST(handover_cancels_socket_attach)
{
    struct sockaddr_in a;
    int kl = kernel_lo_listener(&a);
    atomic_store(&paused, 1);
    int fd = shim_socket(0);
    ck_assert_int_ge(fd, 0);
    uint32_t i = shim_fds.ent[fd].slot;
    struct shm_sock *s = shm_sock(base, i);
    ck_assert_uint_eq(atomic_load(&s->attach_pend), SHM_ATT_PEND);
    int64_t t0 = shim__now();
    ck_assert_int_eq(shim_connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    ck_assert_int_lt(shim__now() - t0, 200 * 1000 * 1000);
    ck_assert_int_eq(shim_fd_kind(fd), SHIM_FD_KERNEL);
    ck_assert_uint_eq(atomic_load(&s->attach_pend), SHM_ATT_CANCEL);
    atomic_store(&paused, 0);
    for (int k = 0; k < 2000 && atomic_load(&s->attach_pend); k++)
        usleep(1000);
    ck_assert_uint_eq(atomic_load(&s->attach_pend), 0);
    ck_assert_int_eq(atomic_load(&attach_cancels), 1);
    int c = accept(kl, NULL, NULL);
    ck_assert_int_ge(c, 0);
    ck_assert_int_eq(write(fd, "h", 1), 1); /* the kernel socket at the number works */
    char ch;
    ck_assert_int_eq(read(c, &ch, 1), 1);
    close(c);
    close(fd);
    close(kl);
}
END_TEST

START_TEST(sendfile_from_file)
{
    int fd = connected(7);
    char path[] = "/tmp/ustack-test-XXXXXX";
    int f = mkstemp(path);
    unlink(path);
    static char data[9000], back[9000];
    for (unsigned i = 0; i < sizeof(data); i++)
        data[i] = (char)(i % 251);
    ck_assert_int_eq(write(f, data, sizeof(data)), sizeof(data));
    off_t off = 1000;
    pthread_t t;
    struct {
        int fd;
        char *buf;
    } rd = {fd, back};
    void *reader8(void *);
    pthread_create(&t, NULL, reader8, &rd);
    ck_assert_int_eq(shim_sendfile(fd, f, &off, 8000), 8000);
    ck_assert_int_eq(off, 9000);
    pthread_join(t, NULL);
    ck_assert_int_eq(memcmp(back, data + 1000, 8000), 0);
}
END_TEST

void *reader8(void *p)
{
    struct {
        int fd;
        char *buf;
    } *rd = p;
    ck_assert_int_eq(shim_recv(rd->fd, rd->buf, 8000, MSG_WAITALL), 8000);
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "--leaderless-child") == 0)
        return leaderless_main();
    Suite *s = suite_create("client");
    TCase *tc = tcase_create("core");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, address_conversion);
    tcase_add_test(tc, socket_dup_close);
    tcase_add_test(tc, call_pins_socket_across_close);
    tcase_add_test(tc, calls_leave_no_pin);
    tcase_add_test(tc, fork_and_exec_references);
    tcase_add_test(tc, private_fds_survive_close_loops);
    tcase_add_test(tc, blocking_echo);
    tcase_add_test(tc, bad_buffers_efault);
    tcase_add_test(tc, errors_as_linux);
    tcase_add_test(tc, nonblocking_connect);
    tcase_add_test(tc, eof_shutdown_timeouts);
    tcase_add_test(tc, options_fcntl_ioctl);
    tcase_add_test(tc, listen_accept);
    tcase_add_test(tc, last_close_cancels_attach);
    tcase_add_test(tc, handover_cancels_socket_attach);
    tcase_add_test(tc, pass_over_unix_refs);
    tcase_add_test(tc, blocking_accept_with_companion_waits);
    tcase_add_test(tc, handler_outside_sleep_interrupts);
    tcase_add_test(tc, data_before_signal);
    tcase_add_test(tc, warn_once_per_key);
    tcase_add_test(tc, epoll_level_edge_oneshot);
    tcase_add_test(tc, epoll_wakes_sleeper);
    tcase_add_test(tc, epoll_events_dups_nesting);
    tcase_add_test(tc, epoll_et_count_before_change);
    tcase_add_test(tc, epoll_direct_rotation_stale_wakes);
    tcase_add_test(tc, epoll_oneshot_stale_exclusive_hold);
    tcase_add_test(tc, select_mixed);
    tcase_add_test(tc, loopback_goes_to_the_kernel);
    tcase_add_test(tc, sendfile_from_file);
    tcase_add_test(tc, stack_death_wakes_epoll);
    tcase_add_test(tc, stack_death_wakes_poll);
    tcase_add_test(tc, run_path_after_main_thread_exit);
    /* The same calls with only the region's head mapped. */
    TCase *lz = tcase_create("lazy");
    tcase_add_checked_fixture(lz, setup_lazy, teardown);
    tcase_set_timeout(lz, 30);
    tcase_add_test(lz, rings_mapped_on_first_use);
    tcase_add_test(lz, blocking_echo);
    tcase_add_test(lz, listen_accept);
    tcase_add_test(lz, fork_and_exec_references);
    tcase_add_test(lz, nonblocking_connect);
    tcase_add_test(lz, epoll_level_edge_oneshot);
    tcase_add_test(lz, sendfile_from_file);
    suite_add_tcase(s, tc);
    suite_add_tcase(s, lz);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

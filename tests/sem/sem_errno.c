/* tests/sem/sem_errno.c - error numbers: EBADF, ENOTSOCK (regular file, pipe, the app's own
 * eventfd), EFAULT, EINVAL, EAFNOSUPPORT, ENOPROTOOPT, EOPNOTSUPP, EPIPE/SIGPIPE and
 * ECONNRESET after a reset, getsockopt basics. Every expectation is what Linux does; run.sh
 * proves it by running this on the kernel. */
#include "sem.h"

#include <setjmp.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/wait.h>

static int so_int(int fd, int opt)
{
    int v = -1;
    socklen_t l = sizeof v;
    if (getsockopt(fd, SOL_SOCKET, opt, &v, &l) < 0)
        return -100 - errno;
    return l == sizeof v ? v : -99;
}

/* Every socket call on fd must fail with err. Returns the name of the first call that did
 * not, or NULL. */
static const char *all_fail(int fd, int err)
{
    struct sockaddr_in a = sem_peer_addr(SEM_P_ECHO);
    socklen_t l = sizeof a;
    char buf[4];
    int v = 1;
    socklen_t vl = sizeof v;
    struct iovec iov = {buf, sizeof buf};
    struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1};
#define T(name, expr)                                                                              \
    do {                                                                                           \
        errno = 0;                                                                                 \
        if ((expr) != -1 || errno != err)                                                          \
            return name;                                                                           \
    } while (0)
    T("send", send(fd, "x", 1, MSG_NOSIGNAL));
    T("recv", recv(fd, buf, sizeof buf, MSG_DONTWAIT));
    T("sendto", sendto(fd, "x", 1, MSG_NOSIGNAL, NULL, 0));
    T("recvfrom", recvfrom(fd, buf, sizeof buf, MSG_DONTWAIT, NULL, NULL));
    T("sendmsg", sendmsg(fd, &m, MSG_NOSIGNAL));
    T("recvmsg", recvmsg(fd, &m, MSG_DONTWAIT));
    T("connect", connect(fd, (struct sockaddr *)&a, sizeof a));
    T("bind", bind(fd, (struct sockaddr *)&a, sizeof a));
    T("listen", listen(fd, 1));
    T("accept", accept(fd, NULL, NULL));
    T("accept4", accept4(fd, NULL, NULL, SOCK_NONBLOCK));
    T("getsockname", getsockname(fd, (struct sockaddr *)&a, &l));
    T("getpeername", getpeername(fd, (struct sockaddr *)&a, &l));
    T("getsockopt", getsockopt(fd, SOL_SOCKET, SO_TYPE, &v, &vl));
    T("setsockopt", setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &v, sizeof v));
    T("shutdown", shutdown(fd, SHUT_RDWR));
#undef T
    return NULL;
}

static void ebadf(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(fd >= 0, "socket");
    CHECK_OK(close(fd));
    const char *bad = all_fail(fd, EBADF);
    CHECK(!bad, "%s on a closed socket fd is not EBADF", bad);
    /* The file calls too (under ustack the number may be a spare eventfd, docs/preload.md
     * "Spare eventfds"). */
    char b[4];
    struct stat st;
    CHECK_ERR(read(fd, b, 1), EBADF);
    CHECK_ERR(read(fd, b, 0), EBADF);
    CHECK_ERR(write(fd, "x", 1), EBADF);
    CHECK_ERR(fcntl(fd, F_GETFD), EBADF);
    CHECK_ERR(fstat(fd, &st), EBADF);
    CHECK_ERR(dup(fd), EBADF);
    CHECK_ERR(shutdown(fd, SHUT_RDWR), EBADF);
    bad = all_fail(-1, EBADF);
    CHECK(!bad, "%s on fd -1 is not EBADF", bad);
    CHECK_ERR(close(fd), EBADF);
}

static void enotsock_file(void)
{
    char path[] = "/tmp/sem_errno.XXXXXX";
    int fd = sem_track(mkstemp(path));
    CHECK(fd >= 0, "mkstemp");
    unlink(path);
    const char *bad = all_fail(fd, ENOTSOCK);
    CHECK(!bad, "%s on a regular file is not ENOTSOCK", bad);
}

static void enotsock_pipe(void)
{
    int p[2];
    CHECK_OK(pipe(p));
    sem_track(p[0]);
    sem_track(p[1]);
    const char *bad = all_fail(p[1], ENOTSOCK);
    CHECK(!bad, "%s on a pipe is not ENOTSOCK", bad);
}

/* The application's own eventfd is no socket (ustack's sockets are eventfds underneath) and
 * still counts as an eventfd. */
static void enotsock_eventfd(void)
{
    int e = sem_track(eventfd(0, EFD_NONBLOCK));
    CHECK(e >= 0, "eventfd");
    const char *bad = all_fail(e, ENOTSOCK);
    CHECK(!bad, "%s on an eventfd is not ENOTSOCK", bad);
    uint64_t v = 5;
    CHECK(write(e, &v, sizeof v) == sizeof v, "eventfd write");
    v = 0;
    CHECK(read(e, &v, sizeof v) == sizeof v && v == 5, "eventfd read %llu", (unsigned long long)v);
    CHECK_ERR(read(e, &v, sizeof v), EAGAIN);
}

/* One EFAULT check in a child, so that a crash (a user-space stack copying from a bad
 * pointer) is one failed case rather than the end of the program. */
enum {
    F_SEND,
    F_RECV,
    F_WRITEV,
    F_CONNECT,
    F_BIND,
    F_GETSOCKNAME,
    F_GETSOCKOPT,
    F_SETSOCKOPT,
    F_N
};
static const char *const fault_names[F_N] = {"send", "recv",        "writev",     "connect",
                                             "bind", "getsockname", "getsockopt", "setsockopt"};

static void efault(void)
{
    int fd = sem_connect_peer(SEM_P_ECHO);
    CHECK(fd >= 0, "connect");
    CHECK(send(fd, "data", 4, 0) == 4, "send");
    CHECK(sem_wait_fd(fd, POLLIN, 5000) & POLLIN, "echo");
    sem_sleep_ms(50);
    /* Laundered through a volatile, so the compiler does not see the bad address. */
    void *volatile bad_v = (void *)16;
    void *bad = bad_v;
    char report[256] = "";
    for (int op = 0; op < F_N; op++) {
        int p[2];
        CHECK_OK(pipe(p));
        pid_t pid = fork();
        CHECK(pid >= 0, "fork");
        if (pid == 0) {
            close(p[0]);
            int s = fd;
            if (op == F_CONNECT || op == F_BIND)
                s = socket(AF_INET, SOCK_STREAM, 0);
            socklen_t l = 16;
            long r = 0;
            errno = 0;
            switch (op) {
            case F_SEND:
                r = send(s, bad, 10, MSG_NOSIGNAL);
                break;
            case F_RECV:
                r = recv(s, bad, 10, MSG_DONTWAIT);
                break;
            case F_WRITEV:
                r = writev(s, (struct iovec *)bad, 2);
                break;
            case F_CONNECT:
                r = connect(s, bad, 16);
                break;
            case F_BIND:
                r = bind(s, bad, 16);
                break;
            case F_GETSOCKNAME:
                r = getsockname(s, bad, &l);
                break;
            case F_GETSOCKOPT:
                r = getsockopt(s, SOL_SOCKET, SO_TYPE, bad, &l);
                break;
            default:
                r = setsockopt(s, SOL_SOCKET, SO_KEEPALIVE, bad, 4);
                break;
            }
            int res[2] = {(int)r, errno};
            (void)!write(p[1], res, sizeof res);
            _exit(0);
        }
        close(p[1]);
        int res[2] = {0, 0};
        int got = 0;
        if (sem_wait_fd(p[0], POLLIN, 5000) & (POLLIN | POLLHUP))
            got = read(p[0], res, sizeof res) == sizeof res;
        close(p[0]);
        int st = 0;
        for (int i = 0; i < 50 && waitpid(pid, &st, WNOHANG) == 0; i++)
            sem_sleep_ms(100);
        if (waitpid(pid, &st, WNOHANG) == 0) {
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
        }
        size_t n = strlen(report);
        if (!got && WIFSIGNALED(st))
            snprintf(report + n, sizeof report - n, " %s:killed by signal %d;", fault_names[op],
                     WTERMSIG(st));
        else if (!got)
            snprintf(report + n, sizeof report - n, " %s:no answer;", fault_names[op]);
        else if (res[0] != -1 || res[1] != EFAULT)
            snprintf(report + n, sizeof report - n, " %s:%d/%s;", fault_names[op], res[0],
                     sem_ename(res[1]));
    }
    CHECK(!report[0], "not EFAULT:%s", report);
}

/* Buffers in an unmapped page high in the address space (not just NULL) are EFAULT too, and
 * nothing is consumed by a recv that faults. The program's own SIGSEGV handler is not
 * called for them, still sees its real faults, and reads back as installed. */
static sigjmp_buf segv_jb;
static volatile int segv_count;

static void on_segv(int sig)
{
    (void)sig;
    segv_count++;
    siglongjmp(segv_jb, 1);
}

static void efault_unmapped(void)
{
    long pg = sysconf(_SC_PAGESIZE);
    char *m =
        mmap(NULL, (size_t)pg * 2, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(m != MAP_FAILED, "mmap");
    CHECK_OK(mprotect(m + pg, (size_t)pg, PROT_NONE));
    char *bad = m + pg;
    struct sigaction act = {.sa_handler = on_segv}, old, now;
    sigemptyset(&act.sa_mask);
    CHECK_OK(sigaction(SIGSEGV, &act, &old));
    int fd = sem_connect_peer(SEM_P_ECHO);
    CHECK(fd >= 0, "connect");
    CHECK_ERR(send(fd, bad, 10, MSG_NOSIGNAL), EFAULT);
    CHECK_ERR(write(fd, bad, 10), EFAULT);
    struct iovec iov[2] = {{bad, 5}, {bad, 5}};
    CHECK_ERR(writev(fd, iov, 2), EFAULT);
    /* The iovec array and the msghdr themselves on the unmapped page. */
    CHECK_ERR(writev(fd, (struct iovec *)bad, 2), EFAULT);
    CHECK_ERR(sendmsg(fd, (struct msghdr *)bad, MSG_NOSIGNAL), EFAULT);
    CHECK_ERR(recvmsg(fd, (struct msghdr *)bad, MSG_DONTWAIT), EFAULT);
    CHECK(send(fd, "abc", 3, 0) == 3, "send");
    CHECK(sem_wait_fd(fd, POLLIN, 5000) & POLLIN, "echo");
    sem_sleep_ms(50);
    CHECK_ERR(recv(fd, bad, 10, 0), EFAULT);
    CHECK_ERR(read(fd, bad, 10), EFAULT);
    struct msghdr mh = {.msg_iov = iov, .msg_iovlen = 1};
    CHECK_ERR(recvmsg(fd, &mh, 0), EFAULT);
    char buf[8] = {0};
    CHECK(recv(fd, buf, sizeof buf, MSG_DONTWAIT) == 3 && !memcmp(buf, "abc", 3),
          "data lost by the failed reads");
    CHECK(segv_count == 0, "the program's SIGSEGV handler ran %d times", segv_count);
    if (!sigsetjmp(segv_jb, 1))
        *(volatile char *)bad = 1;
    CHECK(segv_count == 1, "a real fault reached the program's handler %d times", segv_count);
    CHECK_OK(sigaction(SIGSEGV, NULL, &now));
    CHECK(now.sa_handler == on_segv, "sigaction reads back another handler");
    CHECK(signal(SIGSEGV, SIG_DFL) == on_segv, "signal() returned another handler");
    CHECK_OK(sigaction(SIGSEGV, &old, NULL));
    munmap(m, (size_t)pg * 2);
}

/* Zero-length buffers may be NULL: send returns 0; recv with MSG_DONTWAIT on an empty queue
 * is still EAGAIN (a zero-length recv waits for data like any other on Linux), read() of 0
 * bytes returns 0 at once. */
static void zero_length(void)
{
    int fd = sem_connect_peer(SEM_P_ECHO);
    CHECK(fd >= 0, "connect");
    CHECK(send(fd, NULL, 0, 0) == 0, "send of 0 bytes");
    CHECK_ERR(recv(fd, NULL, 0, MSG_DONTWAIT), EAGAIN);
    CHECK(read(fd, NULL, 0) == 0, "read of 0 bytes");
    CHECK(send(fd, "a", 1, 0) == 1, "send");
    CHECK(sem_wait_fd(fd, POLLIN, 5000) & POLLIN, "echo");
    CHECK(recv(fd, NULL, 0, 0) == 0, "recv of 0 bytes with data queued");
    char ch;
    CHECK(recv(fd, &ch, 1, 0) == 1 && ch == 'a', "the byte is still there");
}

static void einval(void)
{
    struct sockaddr_in a = sem_peer_addr(SEM_P_ECHO);
    int fd = sem_tcp(0);
    CHECK_ERR(bind(fd, (struct sockaddr *)&a, 4), EINVAL);
    CHECK_ERR(connect(fd, (struct sockaddr *)&a, 4), EINVAL);
    CHECK_ERR(accept(fd, NULL, NULL), EINVAL); /* not listening */
    int v = 1;
    CHECK_ERR(setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &v, 2), EINVAL);
    CHECK_ERR(setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &v, 2), EINVAL);
    struct linger lg = {1, 0};
    CHECK_ERR(setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, 4), EINVAL);
    socklen_t l = (socklen_t)-1;
    CHECK_ERR(getsockopt(fd, SOL_SOCKET, SO_TYPE, &v, &l), EINVAL);
    CHECK_ERR(socket(AF_INET, SOCK_STREAM | 0x40000000, 0), EINVAL);
    int c = sem_connect_peer(SEM_P_ECHO);
    CHECK(c >= 0, "connect");
    CHECK_ERR(listen(c, 4), EINVAL);
    CHECK_ERR(accept(c, NULL, NULL), EINVAL);
    char ch;
    CHECK_ERR(recv(c, &ch, 1, MSG_OOB), EINVAL); /* no urgent data */
}

static void eafnosupport(void)
{
    int fd = sem_tcp(0);
    struct sockaddr_in6 a6;
    memset(&a6, 0, sizeof a6);
    a6.sin6_family = AF_INET6;
    CHECK_ERR(bind(fd, (struct sockaddr *)&a6, sizeof a6), EAFNOSUPPORT);
    CHECK_ERR(connect(fd, (struct sockaddr *)&a6, sizeof a6), EAFNOSUPPORT);
    /* AF_UNSPEC with INADDR_ANY binds (an old compatibility rule); with an address it is
     * EAFNOSUPPORT. */
    struct sockaddr_in a = sem_sin(sem_self_ip, 0);
    a.sin_family = AF_UNSPEC;
    CHECK_ERR(bind(fd, (struct sockaddr *)&a, sizeof a), EAFNOSUPPORT);
    a.sin_addr.s_addr = htonl(INADDR_ANY);
    CHECK_OK(bind(fd, (struct sockaddr *)&a, sizeof a));
    CHECK(sem_port_of(fd, 0) > 0, "AF_UNSPEC bind picked no port");
}

static void eprotonosupport(void)
{
    CHECK_ERR(socket(AF_INET, SOCK_STREAM, IPPROTO_UDP), EPROTONOSUPPORT);
    int fd = sem_track(socket(AF_INET, SOCK_STREAM, IPPROTO_TCP));
    CHECK(fd >= 0, "IPPROTO_TCP");
    CHECK(so_int(fd, SO_PROTOCOL) == IPPROTO_TCP, "SO_PROTOCOL");
}

static void enoprotoopt(void)
{
    int fd = sem_tcp(0), v = 0;
    socklen_t l = sizeof v;
    CHECK_ERR(getsockopt(fd, SOL_SOCKET, 12345, &v, &l), ENOPROTOOPT);
    CHECK_ERR(setsockopt(fd, SOL_SOCKET, 12345, &v, sizeof v), ENOPROTOOPT);
    CHECK_ERR(getsockopt(fd, IPPROTO_TCP, 12345, &v, &l), ENOPROTOOPT);
    CHECK_ERR(setsockopt(fd, IPPROTO_TCP, 12345, &v, sizeof v), ENOPROTOOPT);
    /* An unknown level: Linux's getsockopt says EOPNOTSUPP, its setsockopt ENOPROTOOPT. */
    CHECK_ERR(getsockopt(fd, 4242, 1, &v, &l), EOPNOTSUPP);
    CHECK_ERR(setsockopt(fd, 4242, 1, &v, sizeof v), ENOPROTOOPT);
}

/* listen and accept on a UDP socket are EOPNOTSUPP. */
static void eopnotsupp(void)
{
    int u = sem_track(socket(AF_INET, SOCK_DGRAM, 0));
    CHECK(u >= 0, "udp socket");
    CHECK_ERR(listen(u, 1), EOPNOTSUPP);
    CHECK_ERR(accept(u, NULL, NULL), EOPNOTSUPP);
}

/* An address with no route (the test namespace has no default route). */
static void enetunreach(void)
{
    int fd = sem_tcp(0);
    struct sockaddr_in a = sem_sin((struct in_addr){htonl(0xc6130101)}, 80); /* 198.19.1.1 */
    CHECK_ERR(connect(fd, (struct sockaddr *)&a, sizeof a), ENETUNREACH);
}

/* Connects to the reset server, sends what it waits for, and waits for the RST. */
static int reset_conn(void)
{
    int fd = sem_connect_peer(SEM_P_RESET);
    if (fd < 0)
        return -1;
    char buf[SEM_RESET_AFTER];
    memset(buf, 'r', sizeof buf);
    if (sem_write_all(fd, buf, sizeof buf) < 0)
        return -1;
    double end = sem_ms() + 5000;
    while (sem_ms() < end)
        if (sem_wait_fd(fd, 0, 100) & (POLLERR | POLLHUP))
            return fd;
    errno = ETIMEDOUT;
    return -1;
}

/* After an RST: poll says IN|OUT|ERR|HUP|RDHUP; SO_ERROR gives ECONNRESET once, then 0 and
 * POLLERR is gone; recv then reads EOF. */
static void reset_so_error(void)
{
    int fd = reset_conn();
    CHECK(fd >= 0, "no reset");
    int ev = sem_wait_fd(fd, POLLIN | POLLOUT | POLLRDHUP, 0);
    CHECK(ev == (POLLIN | POLLOUT | POLLERR | POLLHUP | POLLRDHUP), "revents %#x", ev);
    CHECK(so_int(fd, SO_ERROR) == ECONNRESET, "SO_ERROR %d", so_int(fd, SO_ERROR));
    CHECK(so_int(fd, SO_ERROR) == 0, "SO_ERROR twice %d", so_int(fd, SO_ERROR));
    ev = sem_wait_fd(fd, POLLIN | POLLOUT | POLLRDHUP, 0);
    CHECK(ev == (POLLIN | POLLOUT | POLLHUP | POLLRDHUP), "revents after SO_ERROR %#x", ev);
    char ch;
    CHECK(recv(fd, &ch, 1, 0) == 0, "recv after SO_ERROR read");
}

/* After an RST: recv says ECONNRESET once, then EOF. */
static void reset_recv(void)
{
    int fd = reset_conn();
    CHECK(fd >= 0, "no reset");
    char ch;
    CHECK_ERR(recv(fd, &ch, 1, 0), ECONNRESET);
    CHECK(recv(fd, &ch, 1, 0) == 0, "second recv after RST");
    CHECK(so_int(fd, SO_ERROR) == 0, "SO_ERROR after recv");
}

/* After an RST: the first send reports the pending ECONNRESET (no SIGPIPE); later sends are
 * EPIPE, with SIGPIPE unless MSG_NOSIGNAL. */
static void reset_send(void)
{
    int fd = reset_conn();
    CHECK(fd >= 0, "no reset");
    int before = sem_sigpipes;
    CHECK_ERR(send(fd, "x", 1, 0), ECONNRESET);
    CHECK(sem_sigpipes == before, "SIGPIPE with ECONNRESET");
    CHECK_ERR(send(fd, "x", 1, MSG_NOSIGNAL), EPIPE);
    CHECK(sem_sigpipes == before, "SIGPIPE despite MSG_NOSIGNAL");
    CHECK_ERR(send(fd, "x", 1, 0), EPIPE);
    CHECK(sem_sigpipes == before + 1, "%d SIGPIPEs, want 1", sem_sigpipes - before);
    CHECK_ERR(write(fd, "x", 1), EPIPE);
    CHECK(sem_sigpipes == before + 2, "%d SIGPIPEs after write, want 2", sem_sigpipes - before);
    char ch;
    CHECK(recv(fd, &ch, 1, 0) == 0, "recv after the error was reported");
}

/* The peer closed (FIN) without reading: our first send is accepted, the peer answers it
 * with an RST, and then send fails with EPIPE (and SIGPIPE). */
static void send_after_peer_close(void)
{
    int fd = sem_connect_peer(SEM_P_CLOSE);
    CHECK(fd >= 0, "connect");
    char ch;
    CHECK(sem_read_full(fd, &ch, 1, 5000) == 0, "EOF");
    CHECK(send(fd, "x", 1, 0) == 1, "first send after the peer's FIN");
    double end = sem_ms() + 5000;
    while (sem_ms() < end && !(sem_wait_fd(fd, 0, 100) & POLLERR))
        ;
    CHECK(sem_wait_fd(fd, 0, 0) & POLLERR, "no RST");
    int before = sem_sigpipes;
    CHECK_ERR(send(fd, "x", 1, 0), EPIPE);
    CHECK(sem_sigpipes == before + 1, "%d SIGPIPEs, want 1", sem_sigpipes - before);
    CHECK(recv(fd, &ch, 1, 0) == 0, "recv after the error was reported");
}

static void epipe_after_shut_wr(void)
{
    int fd = sem_connect_peer(SEM_P_ECHO);
    CHECK(fd >= 0, "connect");
    CHECK_OK(shutdown(fd, SHUT_WR));
    int before = sem_sigpipes;
    CHECK_ERR(send(fd, "x", 1, MSG_NOSIGNAL), EPIPE);
    CHECK(sem_sigpipes == before, "SIGPIPE despite MSG_NOSIGNAL");
    CHECK_ERR(send(fd, "x", 1, 0), EPIPE);
    CHECK(sem_sigpipes == before + 1, "%d SIGPIPEs, want 1", sem_sigpipes - before);
    struct iovec iov = {"x", 1};
    CHECK_ERR(writev(fd, &iov, 1), EPIPE);
    CHECK(sem_sigpipes == before + 2, "%d SIGPIPEs after writev, want 2", sem_sigpipes - before);
}

static void getsockopt_basics(void)
{
    int fd = sem_tcp(0);
    CHECK(so_int(fd, SO_TYPE) == SOCK_STREAM, "SO_TYPE %d", so_int(fd, SO_TYPE));
    CHECK(so_int(fd, SO_DOMAIN) == AF_INET, "SO_DOMAIN %d", so_int(fd, SO_DOMAIN));
    CHECK(so_int(fd, SO_PROTOCOL) == IPPROTO_TCP, "SO_PROTOCOL %d", so_int(fd, SO_PROTOCOL));
    CHECK(so_int(fd, SO_ACCEPTCONN) == 0, "SO_ACCEPTCONN before listen");
    CHECK(so_int(fd, SO_ERROR) == 0, "SO_ERROR on a fresh socket");
    CHECK_OK(listen(fd, 4));
    CHECK(so_int(fd, SO_ACCEPTCONN) == 1, "SO_ACCEPTCONN after listen");
    /* A short buffer gets the first bytes, and the length says how many. */
    unsigned char b[4] = {0xaa, 0xaa, 0xaa, 0xaa};
    socklen_t l = 2;
    CHECK_OK(getsockopt(fd, SOL_SOCKET, SO_TYPE, b, &l));
    int one = 1;
    int le = *(unsigned char *)&one;
    CHECK(l == 2 && b[le ? 0 : 1] == (le ? SOCK_STREAM : 0) && b[2] == 0xaa,
          "short SO_TYPE: len %u bytes %02x %02x %02x", l, b[0], b[1], b[2]);
    l = 0;
    CHECK_OK(getsockopt(fd, SOL_SOCKET, SO_TYPE, b, &l));
    CHECK(l == 0, "zero-length SO_TYPE: len %u", l);
}

/* Boolean options read back as 0/1 whatever non-zero value was set; buffer sizes read back
 * doubled (the kernel adds its bookkeeping share). */
static void setsockopt_readback(void)
{
    int fd = sem_tcp(0), v = 5;
    CHECK_OK(setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &v, sizeof v));
    CHECK(so_int(fd, SO_REUSEADDR) == 1, "SO_REUSEADDR %d", so_int(fd, SO_REUSEADDR));
    CHECK_OK(setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &v, sizeof v));
    CHECK(so_int(fd, SO_KEEPALIVE) == 1, "SO_KEEPALIVE %d", so_int(fd, SO_KEEPALIVE));
    CHECK_OK(setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &v, sizeof v));
    socklen_t l = sizeof v;
    CHECK_OK(getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &v, &l));
    CHECK(v == 1, "TCP_NODELAY %d", v);
    v = 65536;
    CHECK_OK(setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &v, sizeof v));
    CHECK(so_int(fd, SO_RCVBUF) == 131072, "SO_RCVBUF %d", so_int(fd, SO_RCVBUF));
    CHECK_OK(setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &v, sizeof v));
    CHECK(so_int(fd, SO_SNDBUF) == 131072, "SO_SNDBUF %d", so_int(fd, SO_SNDBUF));
    struct linger lg = {1, 7}, got = {0, 0};
    CHECK_OK(setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg));
    l = sizeof got;
    CHECK_OK(getsockopt(fd, SOL_SOCKET, SO_LINGER, &got, &l));
    CHECK(l == sizeof got && got.l_onoff == 1 && got.l_linger == 7, "SO_LINGER %d/%d", got.l_onoff,
          got.l_linger);
    v = 30;
    CHECK_OK(setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &v, sizeof v));
    v = 0;
    l = sizeof v;
    CHECK_OK(getsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &v, &l));
    CHECK(v == 30, "TCP_KEEPIDLE %d", v);
    v = 0;
    CHECK_ERR(setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &v, sizeof v), EINVAL);
}

/* On a connected socket sendto ignores its address; recvfrom reports no address. */
static void sendto_connected(void)
{
    int fd = sem_connect_peer(SEM_P_ECHO);
    CHECK(fd >= 0, "connect");
    struct sockaddr_in other = sem_peer_addr(SEM_P_DISCARD);
    CHECK(sendto(fd, "to", 2, 0, (struct sockaddr *)&other, sizeof other) == 2, "sendto");
    char buf[4];
    struct sockaddr_in from;
    memset(&from, 0xee, sizeof from);
    socklen_t fl = sizeof from;
    CHECK(sem_wait_fd(fd, POLLIN, 5000) & POLLIN, "echo");
    ssize_t n = recvfrom(fd, buf, 2, MSG_WAITALL, (struct sockaddr *)&from, &fl);
    CHECK(n == 2 && !memcmp(buf, "to", 2), "recvfrom %zd", n);
    CHECK(fl == 0, "recvfrom address length %u, want 0", fl);
}

int main(void)
{
    sem_init("sem_errno", 4);
    SEM_RUN(ebadf);
    SEM_RUN(enotsock_file);
    SEM_RUN(enotsock_pipe);
    SEM_RUN(enotsock_eventfd);
    SEM_RUN(efault);
    SEM_RUN(efault_unmapped);
    SEM_RUN(zero_length);
    SEM_RUN(einval);
    SEM_RUN(eafnosupport);
    SEM_RUN(eprotonosupport);
    SEM_RUN(enoprotoopt);
    SEM_RUN(eopnotsupp);
    SEM_RUN(enetunreach);
    SEM_RUN(reset_so_error);
    SEM_RUN(reset_recv);
    SEM_RUN(reset_send);
    SEM_RUN(send_after_peer_close);
    SEM_RUN(epipe_after_shut_wr);
    SEM_RUN(getsockopt_basics);
    SEM_RUN(setsockopt_readback);
    SEM_RUN(sendto_connected);
    return sem_done();
}

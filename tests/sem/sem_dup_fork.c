/* tests/sem/sem_dup_fork.c - one socket under several fds and processes: dup/dup2/dup3,
 * F_DUPFD(_CLOEXEC), shared status flags, closing one of several holders, fork and exec.
 * Whether the peer saw our FIN is learnt from the peer itself (its control connection
 * reports "eof"). Every expectation is what Linux does; run.sh proves it by running this on
 * the kernel. */
#include "sem.h"

#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>

/* A connection from the peer, accepted on our listener k; *ctl gets the control connection
 * that will report the peer's view of it. */
static int accept_back(int k, int *ctl)
{
    int l = sem_listen_self(k, 0);
    if (l < 0)
        return -1;
    *ctl = sem_ctl(sem_lport(k), 0, 0, 1);
    if (*ctl < 0)
        return -1;
    int s = sem_accept_within(l, 5000);
    sem_close(l);
    char line[64];
    if (s < 0 || sem_ctl_line(*ctl, line, sizeof line, 5000) <= 0 || strcmp(line, "ok 0"))
        return -1;
    return s;
}

/* 1 if the peer reported EOF on its connection within ms, 0 if not, -1 on another answer. */
static int peer_eof(int ctl, int ms)
{
    char line[64];
    int n = sem_ctl_line(ctl, line, sizeof line, ms);
    if (n == 0)
        return 0;
    return n > 0 && !strncmp(line, "eof 0", 5) ? 1 : -1;
}

/* A round trip through whatever echoes on fd (echo server or connect-back connection). */
static int roundtrip(int fd, const char *msg)
{
    size_t n = strlen(msg);
    char buf[64];
    if (send(fd, msg, n, 0) != (ssize_t)n || sem_read_full(fd, buf, n, 5000) != (ssize_t)n)
        return -1;
    return memcmp(buf, msg, n) ? -1 : 0;
}

static void dup_shares(void)
{
    int a = sem_connect_peer(SEM_P_ECHO);
    CHECK(a >= 0, "connect");
    int d = sem_track(dup(a));
    CHECK(d >= 0 && d != a, "dup");
    CHECK(send(d, "dup", 3, 0) == 3, "send on the dup");
    char buf[4];
    CHECK(sem_read_full(a, buf, 3, 5000) == 3 && !memcmp(buf, "dup", 3), "recv on the original");
    CHECK(sem_port_of(a, 0) == sem_port_of(d, 0), "different local ports");
}

/* O_NONBLOCK lives in the shared open file; FD_CLOEXEC belongs to each fd. */
static void flags_shared(void)
{
    int a = sem_connect_peer(SEM_P_ECHO);
    CHECK(a >= 0, "connect");
    int d = sem_track(dup(a));
    CHECK_OK(fcntl(a, F_SETFL, O_NONBLOCK));
    CHECK(fcntl(d, F_GETFL) & O_NONBLOCK, "O_NONBLOCK not shared by the dup");
    char ch;
    CHECK_ERR(recv(d, &ch, 1, 0), EAGAIN);
    CHECK_OK(fcntl(d, F_SETFD, FD_CLOEXEC));
    CHECK(fcntl(a, F_GETFD) == 0, "FD_CLOEXEC leaked to the original");
}

/* dup2 onto a live socket fd closes that socket (the peer sees EOF); the number then
 * refers to the other connection. */
static void dup2_onto_socket(void)
{
    int ctl, s = accept_back(0, &ctl);
    CHECK(s >= 0, "accept");
    int a = sem_connect_peer(SEM_P_ECHO);
    CHECK(a >= 0, "connect");
    CHECK(dup2(a, s) == s, "dup2");
    CHECK(peer_eof(ctl, 5000) == 1, "peer did not see EOF after dup2 replaced its socket");
    CHECK(sem_port_of(s, 1) == sem_port_base + SEM_P_ECHO, "dup2 target is not the echo conn");
    CHECK_OK(roundtrip(s, "via-dup2"));
}

/* dup2 onto a number whose socket has another fd keeps that socket alive. */
static void dup2_keeps_other_holder(void)
{
    int ctl, s = accept_back(1, &ctl);
    CHECK(s >= 0, "accept");
    int keep = sem_track(dup(s));
    int a = sem_connect_peer(SEM_P_ECHO);
    CHECK(a >= 0, "connect");
    CHECK(dup2(a, s) == s, "dup2");
    CHECK(peer_eof(ctl, 300) == 0, "peer saw EOF while a dup still held the socket");
    CHECK_OK(roundtrip(keep, "kept"));
    CHECK_OK(sem_close(keep));
    CHECK(peer_eof(ctl, 5000) == 1, "peer did not see EOF after the last close");
}

static void dup2_dup3_edges(void)
{
    int a = sem_connect_peer(SEM_P_ECHO);
    CHECK(a >= 0, "connect");
    CHECK(dup2(a, a) == a, "dup2 onto itself");
    CHECK_OK(roundtrip(a, "self"));
    CHECK_ERR(dup3(a, a, 0), EINVAL);
    int x = sem_track(dup3(a, 700, O_CLOEXEC));
    CHECK(x == 700, "dup3 to 700 gave %d", x);
    CHECK(fcntl(x, F_GETFD) == FD_CLOEXEC, "dup3 O_CLOEXEC");
    CHECK_ERR(dup3(a, 701, O_NONBLOCK), EINVAL);
    CHECK_ERR(dup2(a, -1), EBADF);
}

/* A pipe dup2'ed onto a socket's number closes the socket; the number is then a pipe. */
static void dup2_kernel_onto_socket(void)
{
    int ctl, s = accept_back(2, &ctl);
    CHECK(s >= 0, "accept");
    int p[2];
    CHECK_OK(pipe(p));
    sem_track(p[0]);
    sem_track(p[1]);
    CHECK(dup2(p[1], s) == s, "dup2");
    CHECK(peer_eof(ctl, 5000) == 1, "peer did not see EOF");
    int v;
    socklen_t l = sizeof v;
    CHECK_ERR(getsockopt(s, SOL_SOCKET, SO_TYPE, &v, &l), ENOTSOCK);
    CHECK(write(s, "pipe", 4) == 4, "write to the pipe through the old socket number");
    char buf[4];
    CHECK(read(p[0], buf, 4) == 4 && !memcmp(buf, "pipe", 4), "pipe data");
}

/* A socket dup2'ed onto a pipe's number: the number is now the socket, and the pipe end
 * it held is closed. */
static void dup2_socket_onto_kernel(void)
{
    int p[2];
    CHECK_OK(pipe(p));
    sem_track(p[0]);
    sem_track(p[1]);
    int a = sem_connect_peer(SEM_P_ECHO);
    CHECK(a >= 0, "connect");
    CHECK(dup2(a, p[0]) == p[0], "dup2");
    int v = 0;
    socklen_t l = sizeof v;
    CHECK_OK(getsockopt(p[0], SOL_SOCKET, SO_TYPE, &v, &l));
    CHECK(v == SOCK_STREAM, "SO_TYPE %d", v);
    CHECK_OK(roundtrip(p[0], "onto-pipe"));
    CHECK_ERR(write(p[1], "x", 1), EPIPE); /* the pipe has no reader any more */
}

static void f_dupfd(void)
{
    int a = sem_connect_peer(SEM_P_ECHO);
    CHECK(a >= 0, "connect");
    int c = sem_track(fcntl(a, F_DUPFD_CLOEXEC, 500));
    CHECK(c >= 500, "F_DUPFD_CLOEXEC gave %d", c);
    CHECK(fcntl(c, F_GETFD) == FD_CLOEXEC, "FD_CLOEXEC not set");
    int d = sem_track(fcntl(a, F_DUPFD, 600));
    CHECK(d >= 600, "F_DUPFD gave %d", d);
    CHECK(fcntl(d, F_GETFD) == 0, "F_DUPFD set FD_CLOEXEC");
    CHECK_OK(sem_close(a));
    CHECK_OK(roundtrip(c, "cloexec"));
    CHECK_OK(roundtrip(d, "dupfd"));
}

/* Closing one of two fds leaves the connection up; the last close ends it. */
static void close_one_dup(void)
{
    int ctl, s = accept_back(3, &ctl);
    CHECK(s >= 0, "accept");
    int d = sem_track(dup(s));
    CHECK_OK(sem_close(s));
    CHECK(peer_eof(ctl, 300) == 0, "peer saw EOF while the dup was open");
    CHECK_OK(roundtrip(d, "still"));
    CHECK_OK(sem_close(d));
    CHECK(peer_eof(ctl, 5000) == 1, "peer did not see EOF after the last close");
}

/* shutdown() acts on the socket, whichever fd it goes through. */
static void shutdown_through_dup(void)
{
    int ctl, s = accept_back(4, &ctl);
    CHECK(s >= 0, "accept");
    int d = sem_track(dup(s));
    CHECK_OK(shutdown(d, SHUT_WR));
    CHECK(peer_eof(ctl, 5000) == 1, "peer did not see EOF after shutdown on a dup");
    CHECK_ERR(send(s, "x", 1, MSG_NOSIGNAL), EPIPE);
}

/* The child writes on the inherited socket; the parent reads the echo and goes on. */
static void fork_child_writes(void)
{
    int a = sem_connect_peer(SEM_P_ECHO);
    CHECK(a >= 0, "connect");
    pid_t pid = fork();
    CHECK(pid >= 0, "fork");
    if (pid == 0)
        _exit(send(a, "child", 5, 0) == 5 ? 0 : 1);
    CHECK(sem_wait_child(pid, 5000) == 0, "child failed");
    char buf[8];
    CHECK(sem_read_full(a, buf, 5, 5000) == 5 && !memcmp(buf, "child", 5), "child's data");
    CHECK_OK(roundtrip(a, "parent"));
}

/* After fork the connection ends only when both processes have closed it. */
static void fork_close_needs_both(void)
{
    int ctl, s = accept_back(5, &ctl);
    CHECK(s >= 0, "accept");
    int go[2];
    CHECK_OK(pipe(go));
    pid_t pid = fork();
    CHECK(pid >= 0, "fork");
    if (pid == 0) {
        close(go[1]);
        char ch;
        struct pollfd p = {go[0], POLLIN, 0};
        poll(&p, 1, 10000);
        ssize_t r = read(go[0], &ch, 1);
        int v = 0;
        socklen_t l = sizeof v;
        int ok = r == 1 && getsockopt(s, SOL_SOCKET, SO_TYPE, &v, &l) == 0 && v == SOCK_STREAM;
        close(s);
        _exit(ok ? 0 : 1);
    }
    close(go[0]);
    sem_close(s);
    int early = peer_eof(ctl, 300);
    (void)!write(go[1], "g", 1);
    close(go[1]);
    int rc = sem_wait_child(pid, 5000);
    CHECK(early == 0, "peer saw EOF while the child still held the socket");
    CHECK(rc == 0, "child failed (%d)", rc);
    CHECK(peer_eof(ctl, 5000) == 1, "peer did not see EOF after both closed");
}

/* A child that exits without closing leaves the parent's connection intact. */
static void fork_child_exits(void)
{
    int a = sem_connect_peer(SEM_P_ECHO);
    CHECK(a >= 0, "connect");
    pid_t pid = fork();
    CHECK(pid >= 0, "fork");
    if (pid == 0)
        _exit(0);
    CHECK(sem_wait_child(pid, 5000) == 0, "child failed");
    CHECK_OK(roundtrip(a, "after-child"));
}

/* A listener inherited across fork accepts in the child. */
static void fork_child_accepts(void)
{
    int l = sem_listen_self(6, 0);
    CHECK(l >= 0, "listen");
    int res[2];
    CHECK_OK(pipe(res));
    sem_track(res[0]);
    pid_t pid = fork();
    CHECK(pid >= 0, "fork");
    if (pid == 0) {
        int s = sem_accept_within(l, 5000);
        char buf[3] = {0};
        ssize_t n = s >= 0 ? sem_read_full(s, buf, 3, 5000) : -1;
        (void)!write(res[1], buf, n == 3 ? 3 : 0);
        _exit(n == 3 ? 0 : 1);
    }
    close(res[1]);
    int c = sem_ctl(sem_lport(6), 3, 0, 1);
    int rc = sem_wait_child(pid, 10000);
    CHECK(c >= 0, "control");
    CHECK(rc == 0, "child failed (%d)", rc);
    char buf[3];
    CHECK(read(res[0], buf, 3) == 3 && sem_check_pat(buf, 0, 3) < 0, "child's data");
}

/* An inetd-style server that forks with the raw clone system call, as vsftpd does
 * (syscall(SYS_clone, CLONE_NEWIPC | SIGCHLD, NULL): no fork handlers run): the child
 * closes the inherited listener and answers on the accepted connection, the parent closes
 * its copy of the connection at once and accepts the next one. The second round clones
 * into a new pid namespace (the child is pid 1 to itself). */
static void raw_clone_child(void)
{
    int l = sem_listen_self(7, 0);
    CHECK(l >= 0, "listen");
    CHECK_ERR(syscall(SYS_clone3, (void *)8, 64), EFAULT); /* a bad clone_args: no crash */
    for (int round = 0; round < 2; round++) {
        int ctl = sem_ctl(sem_lport(7), 0, 0, 1);
        CHECK(ctl >= 0, "control");
        int s = sem_accept_within(l, 5000);
        char line[64];
        CHECK(s >= 0, "accept (round %d)", round);
        CHECK(sem_ctl_line(ctl, line, sizeof line, 5000) > 0 && !strcmp(line, "ok 0"), "peer: %s",
              line);
        int go[2];
        CHECK_OK(pipe(go));
        unsigned long flags = SIGCHLD | (round ? CLONE_NEWPID : 0);
        long pid = syscall(SYS_clone, flags, NULL, NULL, NULL, NULL);
        CHECK(pid >= 0, "clone (round %d)", round);
        if (pid == 0) {
            close(l);
            close(go[1]);
            char ch;
            struct pollfd p = {go[0], POLLIN, 0};
            poll(&p, 1, 10000);
            char echo[5];
            int ok = read(go[0], &ch, 1) == 1 && send(s, "clone", 5, 0) == 5 &&
                     sem_read_full(s, echo, 5, 5000) == 5 && !memcmp(echo, "clone", 5);
            close(s); /* after the echo: no RST for data arriving after close */
            _exit(ok ? 0 : 1);
        }
        close(go[0]);
        sem_close(s); /* before the child has used it */
        (void)!write(go[1], "g", 1);
        close(go[1]);
        int rc = sem_wait_child((pid_t)pid, 5000);
        CHECK(rc == 0, "child failed (%d, round %d)", rc, round);
        /* The peer echoed the child's five bytes and then saw its FIN. */
        CHECK(sem_ctl_line(ctl, line, sizeof line, 5000) > 0 && !strcmp(line, "eof 0 5"),
              "peer: %s (round %d)", line, round);
        sem_close(ctl);
    }
}

/* A socket made just before fork() by a process that exits right after it: the child's
 * socket works (under ustack the stack may not yet have taken the new socket's eventfd from
 * the parent when the parent is gone). Several rounds, each a socket() straight into fork(). */
static void socket_fork_parent_exits(void)
{
    for (int round = 0; round < 8; round++) {
        int res[2];
        CHECK_OK(pipe(res));
        pid_t mid = fork();
        CHECK(mid >= 0, "fork");
        if (mid == 0) {
            close(res[0]);
            int s = socket(AF_INET, SOCK_STREAM, 0);
            pid_t me = getpid();
            pid_t pid = s >= 0 ? fork() : -1;
            if (pid != 0)
                _exit(pid < 0 ? 1 : 0); /* the parent goes at once */
            /* The grandchild: once its parent is gone, the socket must still work. */
            for (int i = 0; i < 500 && getppid() == me; i++)
                sem_sleep_ms(2);
            sem_sleep_ms(20);
            struct sockaddr_in a = sem_peer_addr(SEM_P_ECHO);
            char ok =
                connect(s, (struct sockaddr *)&a, sizeof a) == 0 && roundtrip(s, "orphan") == 0
                    ? 'y'
                    : 'n';
            (void)!write(res[1], &ok, 1);
            close(s);
            _exit(0);
        }
        close(res[1]);
        CHECK(sem_wait_child(mid, 5000) == 0, "the middle process failed (round %d)", round);
        struct pollfd p = {res[0], POLLIN, 0};
        char ok = 0;
        CHECK(poll(&p, 1, 10000) == 1 && read(res[0], &ok, 1) == 1 && ok == 'y',
              "the orphan's socket failed (round %d, answer %c)", round, ok ? ok : '-');
        close(res[0]);
    }
}

/* Sends fd over the Unix socket u (SCM_RIGHTS) with one byte. */
static int send_fd(int u, int fd)
{
    union {
        struct cmsghdr c;
        char b[CMSG_SPACE(sizeof(int))];
    } cb;
    memset(&cb, 0, sizeof cb);
    struct iovec iov = {"f", 1};
    struct msghdr m = {
        .msg_iov = &iov, .msg_iovlen = 1, .msg_control = &cb, .msg_controllen = sizeof cb};
    struct cmsghdr *c = CMSG_FIRSTHDR(&m);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &fd, sizeof fd);
    return sendmsg(u, &m, 0) == 1 ? 0 : -1;
}

/* Receives one fd from the Unix socket u (waits up to 10 s); -1 if none came. */
static int recv_fd(int u)
{
    struct pollfd p = {u, POLLIN, 0};
    if (poll(&p, 1, 10000) != 1)
        return -1;
    union {
        struct cmsghdr c;
        char b[CMSG_SPACE(sizeof(int))];
    } cb;
    char ch;
    struct iovec iov = {&ch, 1};
    struct msghdr m = {
        .msg_iov = &iov, .msg_iovlen = 1, .msg_control = &cb, .msg_controllen = sizeof cb};
    if (recvmsg(u, &m, 0) != 1)
        return -1;
    struct cmsghdr *c = CMSG_FIRSTHDR(&m);
    if (!c || c->cmsg_type != SCM_RIGHTS)
        return -1;
    int fd;
    memcpy(&fd, CMSG_DATA(c), sizeof fd);
    return fd;
}

/* What a process given a connection and a listener over a Unix socket does with them: the
 * connection is a stream socket that echoes a round trip and is then closed; the listener
 * accepts a connection the peer makes and reads 3 bytes of it. 0 if all went as on Linux. */
static int pass_receiver(int u)
{
    int a = recv_fd(u), l = recv_fd(u);
    int v = 0;
    socklen_t len = sizeof v;
    struct stat st;
    if (a < 0 || l < 0)
        return 2;
    if (getsockopt(a, SOL_SOCKET, SO_TYPE, &v, &len) < 0 || v != SOCK_STREAM)
        return 3;
    if (fstat(a, &st) < 0 || !S_ISSOCK(st.st_mode))
        return 4;
    if (roundtrip(a, "passed") < 0)
        return 5;
    close(a);
    char ok = 'k';
    if (write(u, &ok, 1) != 1) /* the parent now asks the peer to connect */
        return 6;
    int s = sem_accept_within(l, 5000);
    char buf[3];
    if (s < 0 || sem_read_full(s, buf, 3, 5000) != 3 || sem_check_pat(buf, 0, 3) >= 0)
        return 7;
    close(s);
    close(l);
    return 0;
}

/* Sockets passed to another process over a Unix socket (SCM_RIGHTS; Node.js's cluster,
 * vsftpd's privilege separation): the sender closes its copies at once; the receiver (a
 * fork child made before the sockets existed, then an exec'd program) uses them, and the
 * peer sees the connection end only when the receiver closes it. */
static const char *self_path;

/* A child that runs this program again as "<self> flag fd"; its pid, or -1. */
static pid_t fork_exec_self(const char *flag, int fd)
{
    char fa[16];
    snprintf(fa, sizeof fa, "%d", fd);
    pid_t pid = fork();
    if (pid == 0) {
        execl(self_path, self_path, flag, fa, (char *)NULL);
        _exit(127);
    }
    return pid;
}

static void pass_over_unix(void)
{
    for (int round = 0; round < 2; round++) {
        int sp[2];
        CHECK_OK(socketpair(AF_UNIX, SOCK_STREAM, 0, sp));
        pid_t pid = fork();
        CHECK(pid >= 0, "fork");
        if (pid == 0) {
            close(sp[0]);
            if (round == 1) {
                char fa[16];
                snprintf(fa, sizeof fa, "%d", sp[1]);
                execl(self_path, self_path, "--pass-child", fa, (char *)NULL);
                _exit(127);
            }
            _exit(pass_receiver(sp[1]));
        }
        close(sp[1]);
        int ctl, s = accept_back(8, &ctl);
        CHECK(s >= 0, "accept (round %d)", round);
        int l = sem_listen_self(9, 0);
        CHECK(l >= 0, "listen");
        CHECK_ERR(sendmsg(sp[0], (struct msghdr *)8, 0), EFAULT); /* refused, no crash */
        CHECK_OK(send_fd(sp[0], s));
        CHECK_OK(send_fd(sp[0], l));
        sem_close(s);
        sem_close(l);
        char ok = 0;
        struct pollfd p = {sp[0], POLLIN, 0};
        int got = poll(&p, 1, 10000) == 1 && read(sp[0], &ok, 1) == 1 && ok == 'k';
        int c = got ? sem_ctl(sem_lport(9), 3, 0, 1) : -1;
        int rc = sem_wait_child(pid, 15000);
        close(sp[0]);
        CHECK(got, "the receiver did not get through the connection (exit %d, round %d)", rc,
              round);
        CHECK(c >= 0, "control");
        CHECK(rc == 0, "receiver failed (%d, round %d)", rc, round);
        CHECK(peer_eof(ctl, 5000) == 1, "peer did not see EOF after the receiver closed");
        sem_close(ctl);
        sem_close(c);
    }
}

/* Local port of socket fd, 0 on error. */
static unsigned local_port(int fd)
{
    struct sockaddr_in a;
    socklen_t len = sizeof a;
    if (getsockname(fd, (struct sockaddr *)&a, &len) < 0)
        return 0;
    return ntohs(a.sin_port);
}

/* Two connections in flight at once over two Unix sockets, taken by the receiver in the
 * other order (node's cluster hands connections to two workers at once): each received fd
 * must be the connection that was sent over its Unix socket. All eventfds share one
 * anonymous inode, and the receiver matched the messages by (st_dev, st_ino), so it took the
 * first connection for the second (the library before 2026-11-28 failed here). */
static void pass_two_in_flight(void)
{
    int u1[2], u2[2];
    CHECK_OK(socketpair(AF_UNIX, SOCK_STREAM, 0, u1));
    CHECK_OK(socketpair(AF_UNIX, SOCK_STREAM, 0, u2));
    pid_t pid = fork();
    CHECK(pid >= 0, "fork");
    if (pid == 0) {
        close(u1[0]);
        close(u2[0]);
        /* Both are in flight before we take either: both Unix sockets readable. */
        struct pollfd p1 = {u1[1], POLLIN, 0}, p2 = {u2[1], POLLIN, 0};
        if (poll(&p1, 1, 10000) != 1 || poll(&p2, 1, 10000) != 1)
            _exit(2);
        int b = recv_fd(u2[1]), a = recv_fd(u1[1]);
        unsigned short want[2];
        if (a < 0 || b < 0 || read(u1[1], &want[0], 2) != 2 || read(u2[1], &want[1], 2) != 2)
            _exit(3);
        if (local_port(a) != want[0] || local_port(b) != want[1])
            _exit(4);
        _exit(roundtrip(a, "first") < 0 || roundtrip(b, "second") < 0 ? 5 : 0);
    }
    close(u1[1]);
    close(u2[1]);
    int a = sem_connect_peer(SEM_P_ECHO), b = sem_connect_peer(SEM_P_ECHO);
    CHECK(a >= 0 && b >= 0, "connect");
    unsigned short pa = (unsigned short)local_port(a), pb = (unsigned short)local_port(b);
    CHECK(pa && pb && pa != pb, "local ports %u %u", pa, pb);
    CHECK_OK(send_fd(u1[0], a));
    CHECK_OK(send_fd(u2[0], b));
    sem_close(a);
    sem_close(b);
    /* The ports after the fds, each over its own Unix socket. */
    CHECK(write(u1[0], &pa, 2) == 2 && write(u2[0], &pb, 2) == 2, "ports");
    int rc = sem_wait_child(pid, 15000);
    close(u1[0]);
    close(u2[0]);
    CHECK(rc == 0, "receiver failed (%d: 4 = a received fd is another connection)", rc);
}

/* The same with the sender in a chroot without /proc, as Dovecot's login processes (chrooted,
 * unprivileged) pass each logged-in client to the imap or pop3 process: each received fd
 * must still be the connection sent over its Unix socket. ustack tells the eventfds apart
 * by the id /proc/self/fdinfo shows; a sender that could not read it recorded the inode,
 * which every eventfd shares, and the receiver took the other connection (under 20
 * concurrent IMAP and POP3 logins, a third of the clients got another session's answers). */
static void pass_from_chroot(void)
{
    char dir[] = "/tmp/sem-chroot-XXXXXX";
    CHECK(mkdtemp(dir) != NULL, "mkdtemp");
    int u1[2], u2[2];
    CHECK_OK(socketpair(AF_UNIX, SOCK_STREAM, 0, u1));
    CHECK_OK(socketpair(AF_UNIX, SOCK_STREAM, 0, u2));
    int a = sem_connect_peer(SEM_P_ECHO), b = sem_connect_peer(SEM_P_ECHO);
    CHECK(a >= 0 && b >= 0, "connect");
    unsigned short pa = (unsigned short)local_port(a), pb = (unsigned short)local_port(b);
    CHECK(pa && pb && pa != pb, "local ports %u %u", pa, pb);
    pid_t pid = fork();
    CHECK(pid >= 0, "fork");
    if (pid == 0) {
        close(u1[0]);
        close(u2[0]);
        if (chroot(dir) < 0 || chdir("/") < 0)
            _exit(2);
        if (send_fd(u1[1], a) < 0 || send_fd(u2[1], b) < 0)
            _exit(3);
        if (write(u1[1], &pa, 2) != 2 || write(u2[1], &pb, 2) != 2)
            _exit(4);
        _exit(0);
    }
    close(u1[1]);
    close(u2[1]);
    sem_close(a);
    sem_close(b);
    int rc = sem_wait_child(pid, 10000);
    rmdir(dir);
    CHECK(rc == 0, "sender failed (%d)", rc);
    /* Both are in flight; take them in the other order. */
    int rb = sem_track(recv_fd(u2[0])), ra = sem_track(recv_fd(u1[0]));
    unsigned short want[2];
    CHECK(ra >= 0 && rb >= 0, "received %d %d", ra, rb);
    CHECK(read(u1[0], &want[0], 2) == 2 && read(u2[0], &want[1], 2) == 2, "ports");
    close(u1[0]);
    close(u2[0]);
    CHECK(local_port(ra) == want[0] && local_port(rb) == want[1],
          "received the other connection: ports %u %u, sent %u %u", local_port(ra), local_port(rb),
          want[0], want[1]);
    CHECK_OK(roundtrip(ra, "first"));
    CHECK_OK(roundtrip(rb, "second"));
}

/* An exec'ed program inherits the socket (and not the FD_CLOEXEC one) and can write on it. */

static void exec_inherits(void)
{
    int a = sem_connect_peer(SEM_P_ECHO), b = sem_connect_peer(SEM_P_ECHO);
    CHECK(a >= 0 && b >= 0, "connect");
    CHECK_OK(fcntl(b, F_SETFD, FD_CLOEXEC));
    char fa[16], fb[16];
    snprintf(fa, sizeof fa, "%d", a);
    snprintf(fb, sizeof fb, "%d", b);
    pid_t pid = fork();
    CHECK(pid >= 0, "fork");
    if (pid == 0) {
        execl(self_path, self_path, "--exec-child", fa, fb, (char *)NULL);
        _exit(127);
    }
    int rc = sem_wait_child(pid, 10000);
    CHECK(rc == 0, "exec'ed child failed (%d)", rc);
    char buf[8];
    CHECK(sem_read_full(a, buf, 4, 5000) == 4 && !memcmp(buf, "exec", 4), "child's data");
    CHECK_OK(roundtrip(b, "b-alive"));
}

static int exec_child(int a, int b)
{
    if (fcntl(b, F_GETFD) != -1 || errno != EBADF)
        return 2;
    int v = 0;
    socklen_t l = sizeof v;
    if (getsockopt(a, SOL_SOCKET, SO_TYPE, &v, &l) < 0 || v != SOCK_STREAM)
        return 3;
    return send(a, "exec", 4, 0) == 4 ? 0 : 4;
}

/* inetd-style: an exec'd program with the connection on its stdin, stdout and stderr
 * (inetd's services, tcpserver, netcat -e) talks through stdio: fileno, fputs and fflush,
 * fgets, unbuffered stderr, and exit's flush of stdout. Under ustack glibc's standard FILEs
 * read and wrote the eventfd behind the numbers (the first fflush failed). */
static void exec_stdio(void)
{
    int a = sem_connect_peer(SEM_P_ECHO);
    CHECK(a >= 0, "connect");
    pid_t pid = fork();
    CHECK(pid >= 0, "fork");
    if (pid == 0) {
        if (dup2(a, 0) < 0 || dup2(a, 1) < 0 || dup2(a, 2) < 0)
            _exit(126);
        close(a);
        execl(self_path, self_path, "--stdio-child", (char *)NULL);
        _exit(127);
    }
    int rc = sem_wait_child(pid, 10000);
    CHECK(rc == 0, "exec'd child failed (%d: 2 fileno, 3 fputs/fflush, 4 fgets, 5 echo)", rc);
    char buf[16];
    CHECK(sem_read_full(a, buf, 9, 5000) == 9 && !memcmp(buf, "err\ndone\n", 9),
          "the child's stderr line and exit-flushed stdout line, echoed");
    CHECK_OK(roundtrip(a, "parent"));
}

/* A forking server's child that puts the connection on stdout with dup2 and prints (no
 * exec), then puts /dev/null there and back: each printf goes where fd 1 is at its flush. */
static void dup2_stdout_printf(void)
{
    int a = sem_connect_peer(SEM_P_ECHO);
    CHECK(a >= 0, "connect");
    fflush(stdout);
    pid_t pid = fork();
    CHECK(pid >= 0, "fork");
    if (pid == 0) {
        int null = open("/dev/null", O_WRONLY);
        if (null < 0 || dup2(a, 1) != 1)
            _exit(2);
        if (printf("to-socket\n") != 10 || fflush(stdout) != 0)
            _exit(3);
        if (dup2(null, 1) != 1 || printf("to-null\n") != 8 || fflush(stdout) != 0)
            _exit(4);
        if (dup2(a, 1) != 1 || printf("again\n") != 6 || fflush(stdout) != 0)
            _exit(5);
        _exit(0);
    }
    int rc = sem_wait_child(pid, 10000);
    CHECK(rc == 0, "child failed (%d: 2 dup2, 3 printf to the socket, 4 to /dev/null, 5 again)",
          rc);
    char buf[32];
    CHECK(sem_read_full(a, buf, 16, 5000) == 16 && !memcmp(buf, "to-socket\nagain\n", 16),
          "echo of the lines printed to the socket: %.16s", buf);
    CHECK_OK(roundtrip(a, "parent"));
}

static int stdio_child(void)
{
    if (fileno(stdin) != 0 || fileno(stdout) != 1 || fileno(stderr) != 2)
        return 2;
    if (fputs("ping\n", stdout) == EOF || fflush(stdout) != 0)
        return 3;
    char line[32];
    if (!fgets(line, sizeof line, stdin))
        return 4;
    if (strcmp(line, "ping\n"))
        return 5;
    fputs("err\n", stderr); /* unbuffered: out before "done" */
    printf("done\n");       /* fully buffered (a socket): out at exit */
    return 0;
}

/* An exec'd program that closes every inherited fd before its first socket (closefrom(3),
 * as daemons and Erlang's erl_child_setup do) still gets working sockets: under ustack the
 * region named by the inherited USTACK_SHM_FD is gone, and the child attaches on its own.
 * Before, every socket of the child failed with EINVAL. */
static void exec_closefrom_child(void)
{
    int a = sem_connect_peer(SEM_P_ECHO);
    CHECK(a >= 0, "connect");
    CHECK_OK(fcntl(a, F_SETFD, FD_CLOEXEC));
    pid_t pid = fork();
    CHECK(pid >= 0, "fork");
    if (pid == 0) {
        execl(self_path, self_path, "--closefrom-child", (char *)NULL);
        _exit(127);
    }
    int rc = sem_wait_child(pid, 15000);
    CHECK(rc == 0, "exec'ed child failed (%d: 2 socket, 3 connect, 4 echo)", rc);
    CHECK_OK(roundtrip(a, "parent"));
}

static int closefrom_child(void)
{
    closefrom(3);
    struct in_addr peer;
    const char *pb = getenv("SEM_PORT_BASE");
    if (sem__env_ip("SEM_PEER", "198.18.50.1", &peer))
        return 9;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return 2;
    struct sockaddr_in to = sem_sin(peer, (pb && *pb ? atoi(pb) : 7000) + SEM_P_ECHO);
    if (connect(fd, (struct sockaddr *)&to, sizeof to) < 0)
        return 3;
    char buf[4];
    if (send(fd, "cfcf", 4, 0) != 4 || sem_read_full(fd, buf, 4, 5000) != 4 ||
        memcmp(buf, "cfcf", 4))
        return 4;
    close(fd);
    return 0;
}

/* Confines the calling process as OpenSSH confines its pre-authentication child: at most
 * one open file (RLIMIT_NOFILE 1, so poll() takes one fd at most) and a seccomp filter that
 * kills the process on any system call but a short list (OpenSSH's
 * sandbox-seccomp-filter.c allows about these). 0, or -1 with errno. */
static int confine(void)
{
#if defined(__x86_64__)
    const unsigned arch = AUDIT_ARCH_X86_64;
#elif defined(__aarch64__)
    const unsigned arch = AUDIT_ARCH_AARCH64;
#else
    errno = ENOSYS;
    return -1;
#endif
    static const long allow[] = {
        SYS_read,          SYS_write,        SYS_writev,         SYS_ppoll,
        SYS_pselect6,      SYS_futex,        SYS_getpid,         SYS_getrandom,
        SYS_clock_gettime, SYS_gettimeofday, SYS_nanosleep,      SYS_clock_nanosleep,
        SYS_exit,          SYS_exit_group,   SYS_rt_sigprocmask, SYS_rt_sigreturn,
        SYS_brk,           SYS_mmap,         SYS_munmap,         SYS_mremap,
        SYS_madvise,       SYS_close,        SYS_shutdown,
#ifdef SYS_poll
        SYS_poll,          SYS_select,
#endif
    };
    struct sock_filter f[8 + 2 * sizeof allow / sizeof allow[0]];
    unsigned n = 0;
    f[n++] =
        (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch));
    f[n++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, arch, 1, 0);
    f[n++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS);
    f[n++] =
        (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr));
    for (unsigned i = 0; i < sizeof allow / sizeof allow[0]; i++) {
        f[n++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (unsigned)allow[i], 0, 1);
        f[n++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
    }
    f[n++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS);
    struct sock_fprog prog = {(unsigned short)n, f};
    struct rlimit rl = {1, 1};
    if (setrlimit(RLIMIT_NOFILE, &rl) < 0 || prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
        return -1;
    return prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog);
}

/* The confined child's work (below): its exit status says what failed. */
static int sandbox_work(int a)
{
    if (confine() < 0)
        return 2;
    for (int i = 0; i < 20; i++) {
        char msg[16], buf[16];
        int n = snprintf(msg, sizeof msg, "sandbox %d", i);
        if (write(a, msg, (size_t)n) != n)
            return 3;
        struct pollfd p = {a, POLLIN, 0};
        int got = 0;
        while (got < n) {
            if (poll(&p, 1, 5000) != 1 || !(p.revents & POLLIN))
                return 4;
            ssize_t r = read(a, buf + got, (size_t)(n - got));
            if (r <= 0)
                return 5;
            got += (int)r;
        }
        if (memcmp(buf, msg, (size_t)n))
            return 6;
    }
    struct pollfd p = {a, POLLIN, 0};
    if (poll(&p, 1, 200) != 0) /* nothing to read: sleeps to its timeout */
        return 7;
    return close(a) == 0 ? 0 : 8;
}

/* OpenSSH's sshd: the listener forks a child for a connection, which executes sshd again
 * with the socket, and that image forks the pre-authentication child, which confines
 * itself before it uses the connection. So the last image never waited on the socket
 * before the confinement (ustack must not need a system call the filter forbids, such as
 * pidfd_open, nor poll more fds than the one given: OpenSSH's child dies or fails its poll).
 * Here: exec with the connection, fork, confine, write, poll for the echo, read it, a
 * poll that sleeps to its timeout, close. */
static void sandboxed_child(void)
{
    int a = sem_connect_peer(SEM_P_ECHO);
    CHECK(a >= 0, "connect");
    CHECK_OK(roundtrip(a, "before"));
    int fl = fcntl(a, F_GETFL);
    CHECK_OK(fcntl(a, F_SETFL, fl | O_NONBLOCK));
    pid_t pid = fork_exec_self("--sandbox-child", a);
    CHECK(pid >= 0, "fork");
    int st = sem_wait_child(pid, 15000);
    CHECK(st == 0, "the confined child %s %d", st > 128 ? "died of signal" : "exited with",
          st > 128 ? st - 128 : st);
    CHECK_OK(fcntl(a, F_SETFL, fl));
    CHECK_OK(roundtrip(a, "after"));
}

/* The exec'd image of sandboxed_child: forks the child that confines itself. */
static int sandbox_child(int a)
{
    pid_t pid = fork();
    if (pid < 0)
        return 9;
    if (pid == 0)
        _exit(sandbox_work(a));
    int st = sem_wait_child(pid, 12000);
    return st == 0 ? 0 : st;
}

/* A listener on the wildcard inherited by an exec'd program while the parent keeps its own
 * copy (Postfix's master and its smtpd, Dovecot's master and its login processes): the
 * program accepts what arrives on every address, 127.0.0.1 included. Under ustack a new
 * image made its own kernel listener for loopback connections, which failed (EADDRINUSE:
 * the parent's still held the port), and connections to 127.0.0.1 waited in the parent's
 * queue, never accepted. */
static void exec_child_accepts_loopback(void)
{
    int l = sem_tcp(0), one = 1;
    CHECK(l >= 0, "socket");
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(sem_lport(10))};
    CHECK_OK(setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one));
    CHECK_OK(bind(l, (struct sockaddr *)&a, sizeof a));
    CHECK_OK(listen(l, 16));
    pid_t pid = fork_exec_self("--lo-child", l);
    CHECK(pid >= 0, "fork");
    int c = sem_tcp(0);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int conn = c >= 0 ? connect(c, (struct sockaddr *)&a, sizeof a) : -1;
    char buf[3];
    sem_fill(buf, 0, 3);
    ssize_t sent = conn == 0 ? send(c, buf, 3, 0) : -1;
    int rc = sem_wait_child(pid, 10000);
    CHECK(conn == 0 && sent == 3, "connect to 127.0.0.1");
    CHECK(rc == 0, "exec'd child did not get the loopback connection (%d)", rc);
    sem_close(c);
    sem_close(l);
}

/* The exec'd image of exec_child_accepts_loopback: accepts one connection, reads 3 bytes. */
static int lo_child(int l)
{
    int s = sem_accept_within(l, 5000);
    char buf[3];
    if (s < 0)
        return 2;
    return sem_read_full(s, buf, 3, 5000) == 3 && sem_check_pat(buf, 0, 3) < 0 ? 0 : 3;
}

/* SO_REUSEPORT between processes: two fork children each make their own listener on one
 * address and port (no socket shared between them), and the peer's connections are spread
 * over the two, each accepted once; a socket without the option cannot join. (Linux: a
 * reuseport group of one user; under ustack the children are two processes of one region, so
 * the library's same-process alias cannot serve them.) */
static int reuseport_listener(int k)
{
    int fd = sem_tcp(0), one = 1;
    if (fd < 0)
        return -1;
    struct sockaddr_in a = sem_sin(sem_self_ip, sem_lport(k));
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0 ||
        bind(fd, (struct sockaddr *)&a, sizeof a) < 0 || listen(fd, 64) < 0) {
        sem_close(fd);
        return -1;
    }
    return fd;
}

static void reuseport_children(void)
{
    enum { K = 12, CONNS = 24 };
    int ready[2], res[2];
    CHECK_OK(pipe(ready));
    CHECK_OK(pipe(res));
    sem_track(ready[0]);
    sem_track(res[0]);
    pid_t pid[2];
    for (int c = 0; c < 2; c++) {
        pid[c] = fork();
        CHECK(pid[c] >= 0, "fork");
        if (pid[c] == 0) {
            int l = reuseport_listener(K);
            char ch = l >= 0 ? 'y' : 'n';
            (void)!write(ready[1], &ch, 1);
            unsigned char n = 0;
            /* Accept until none came for 1.5 s (bounded: at most CONNS, 10 s in all). */
            double end = sem_ms() + 10000;
            while (l >= 0 && n < CONNS && sem_ms() < end) {
                int s = sem_accept_within(l, 1500);
                if (s < 0)
                    break;
                sem_close(s);
                n++;
            }
            (void)!write(res[1], &n, 1);
            _exit(l >= 0 ? 0 : 1);
        }
    }
    close(ready[1]);
    close(res[1]);
    char ch[2] = {0, 0};
    CHECK(read(ready[0], &ch[0], 1) == 1 && read(ready[0], &ch[1], 1) == 1, "children ready");
    CHECK(ch[0] == 'y' && ch[1] == 'y', "a child's SO_REUSEPORT listener failed: %c %c", ch[0],
          ch[1]);
    int other = sem_tcp(0);
    CHECK(other >= 0, "socket");
    struct sockaddr_in a = sem_sin(sem_self_ip, sem_lport(K));
    CHECK_ERR(bind(other, (struct sockaddr *)&a, sizeof a), EADDRINUSE);
    int c = sem_ctl(sem_lport(K), 0, 0, CONNS);
    CHECK(c >= 0, "control");
    unsigned char n[2] = {0, 0};
    CHECK(read(res[0], &n[0], 1) == 1 && read(res[0], &n[1], 1) == 1, "counts");
    CHECK(sem_wait_child(pid[0], 10000) == 0 && sem_wait_child(pid[1], 10000) == 0, "children");
    CHECK(n[0] + n[1] == CONNS, "accepted %u + %u of %d", n[0], n[1], CONNS);
    CHECK(n[0] > 0 && n[1] > 0, "one listener got every connection: %u and %u", n[0], n[1]);
}

/* shutdown(SHUT_RD) stops a listener (Linux's tcp_disconnect): accept() fails with EINVAL, a
 * connection attempt is refused, listen() again resumes it on its port. A stopped member of an
 * SO_REUSEPORT group leaves the group's connections to the others (HAProxy pauses its
 * listeners so during a reload). */
static void listener_shutdown_resume(void)
{
    enum { K = 13 };
    int l = sem_listen_self(K, SOCK_NONBLOCK);
    CHECK(l >= 0, "listen");
    CHECK_OK(shutdown(l, SHUT_RD));
    CHECK_ERR(accept(l, NULL, NULL), EINVAL);
    int c = sem_ctl(sem_lport(K), 0, 0, 1);
    CHECK(c >= 0, "control");
    char line[64];
    CHECK(sem_ctl_line(c, line, sizeof line, 5000) > 0 && !strcmp(line, "err 0 111"),
          "a connection to the stopped listener: %s", line);
    CHECK_OK(listen(l, 16));
    int c2 = sem_ctl(sem_lport(K), 0, 0, 1);
    CHECK(c2 >= 0, "control");
    int s = sem_accept_within(l, 5000);
    CHECK(s >= 0, "accept after listen() again");
    CHECK(sem_ctl_line(c2, line, sizeof line, 5000) > 0 && !strcmp(line, "ok 0"), "ctl: %s", line);

    enum { K2 = 14, CONNS = 16 };
    int a = reuseport_listener(K2), b = reuseport_listener(K2);
    CHECK(a >= 0 && b >= 0, "two SO_REUSEPORT listeners");
    CHECK_OK(shutdown(a, SHUT_RD));
    int c3 = sem_ctl(sem_lport(K2), 0, 0, CONNS);
    CHECK(c3 >= 0, "control");
    int nb = 0;
    while (nb < CONNS && sem_accept_within(b, 3000) >= 0)
        nb++;
    CHECK(nb == CONNS, "the listener left in the group accepted %d of %d", nb, CONNS);
}

int main(int argc, char **argv)
{
    if (argc == 4 && !strcmp(argv[1], "--exec-child"))
        return exec_child(atoi(argv[2]), atoi(argv[3]));
    if (argc == 3 && !strcmp(argv[1], "--sandbox-child"))
        return sandbox_child(atoi(argv[2]));
    if (argc == 3 && !strcmp(argv[1], "--pass-child"))
        return pass_receiver(atoi(argv[2]));
    if (argc == 3 && !strcmp(argv[1], "--lo-child"))
        return lo_child(atoi(argv[2]));
    if (argc == 2 && !strcmp(argv[1], "--closefrom-child"))
        return closefrom_child();
    if (argc == 2 && !strcmp(argv[1], "--stdio-child"))
        return stdio_child();
    self_path = "/proc/self/exe";
    static char path[4096];
    ssize_t n = readlink("/proc/self/exe", path, sizeof path - 1);
    if (n > 0) {
        path[n] = 0;
        self_path = path;
    }
    sem_init("sem_dup_fork", 8);
    SEM_RUN(dup_shares);
    SEM_RUN(flags_shared);
    SEM_RUN(dup2_onto_socket);
    SEM_RUN(dup2_keeps_other_holder);
    SEM_RUN(dup2_dup3_edges);
    SEM_RUN(dup2_kernel_onto_socket);
    SEM_RUN(dup2_socket_onto_kernel);
    SEM_RUN(f_dupfd);
    SEM_RUN(close_one_dup);
    SEM_RUN(shutdown_through_dup);
    SEM_RUN(fork_child_writes);
    SEM_RUN(fork_close_needs_both);
    SEM_RUN(fork_child_exits);
    SEM_RUN(fork_child_accepts);
    SEM_RUN(raw_clone_child);
    SEM_RUN(socket_fork_parent_exits);
    SEM_RUN(pass_over_unix);
    SEM_RUN(pass_two_in_flight);
    SEM_RUN(pass_from_chroot);
    SEM_RUN(exec_inherits);
    SEM_RUN(sandboxed_child);
    SEM_RUN(exec_closefrom_child);
    SEM_RUN(exec_stdio);
    SEM_RUN(dup2_stdout_printf);
    SEM_RUN(exec_child_accepts_loopback);
    SEM_RUN(reuseport_children);
    SEM_RUN(listener_shutdown_resume);
    return sem_done();
}

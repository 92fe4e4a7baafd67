/*
 * preload.c - the interposer: every function of hooks.h, each a lookup of its fd in the
 * client's fd table and then either the client (shim/client*.c) or the real libc function.
 *
 * Until the process makes its first AF_INET stream socket the fd table is empty, so every
 * call goes straight through at the cost of one bounds check. With USTACK=0 that never
 * changes. The client returns -errno; only this file turns that into -1 + errno.
 */
#undef _FORTIFY_SOURCE
#include "preload.h"

#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <syslog.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <limits.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <sys/sendfile.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "client.h"
#include "log.h"
#include "intr.h"
#include "ucopy.h"

#define HOOK __attribute__((visibility("default")))

extern char **environ;
extern void __chk_fail(void) __attribute__((noreturn));

struct ustack_real ustack__real;

static __thread int t_resolving __attribute__((tls_model("initial-exec")));

void *ustack__resolve(const char *name, void **slot)
{
    if (t_resolving)
        return NULL;
    t_resolving = 1;
    void *p = dlsym(RTLD_NEXT, name);
    t_resolving = 0;
    __atomic_store_n(slot, p, __ATOMIC_RELEASE);
    return p;
}

static void resolve_all(void)
{
#define USTACK_RESOLVE(ret, name, params)                                                          \
    if (!ustack__real.name)                                                                        \
        ustack__resolve(#name, (void **)&ustack__real.name);
    USTACK_HOOKS(USTACK_RESOLVE)
#undef USTACK_RESOLVE
}

static long ret(long r)
{
    if (r < 0) {
        errno = (int)-r;
        return -1;
    }
    return r;
}

/* The same for a call into the shim, which on success leaves errno as it was before it: the
 * system calls the library makes inside (a futex wait's EAGAIN, an eventfd's) must not show
 * through (netcat prints errno after a successful listen). */
#define RET(call)                                                                                  \
    __extension__({                                                                                \
        int ret_e = errno;                                                                         \
        long ret_r = (call);                                                                       \
        if (ret_r < 0) {                                                                           \
            errno = (int)-ret_r;                                                                   \
            ret_r = -1;                                                                            \
        } else {                                                                                   \
            errno = ret_e;                                                                         \
        }                                                                                          \
        ret_r;                                                                                     \
    })

/* A ustack socket, or a spare eventfd the shim answers EBADF for (shim/client.c "Spare
 * eventfds"). */
static bool sock(int fd)
{
    return shim_fd_sock_number(fd);
}

/* A ustack socket (not a spare). */
static bool live_sock(int fd)
{
    return shim_fd_kind(fd) == SHIM_FD_SOCK;
}

static bool ours(int fd)
{
    return shim_fd_kind(fd) != SHIM_FD_KERNEL;
}

/* ---- start-up ------------------------------------------------------------------------- */

/* Yama (ptrace_scope 1) lets ustackd take this process's eventfds (pidfd_getfd) only if the
 * process names it; the exception does not survive fork. */
static void name_tracer(void)
{
    int pid = shim_stack_pid();
    if (pid > 0)
        prctl(PR_SET_PTRACER, (unsigned long)pid, 0, 0, 0);
}

static void atfork_child(void)
{
    shim_fork_child();
    name_tracer();
}

static pthread_once_t init_once = PTHREAD_ONCE_INIT;

static void init(void)
{
    resolve_all();
    struct shim_sys sys = {
        .socket = REAL(socket),
        .bind = REAL(bind),
        .listen = REAL(listen),
        .accept4 = REAL(accept4),
        .connect = REAL(connect),
        .sendmsg = REAL(sendmsg),
        .getsockopt = REAL(getsockopt),
        .setsockopt = REAL(setsockopt),
        .close = REAL(close),
        .read = REAL(read),
        .write = REAL(write),
        .fcntl = REAL(fcntl),
        .ioctl = REAL(ioctl),
        .dup = REAL(dup),
        .dup3 = REAL(dup3),
        .ppoll = REAL(ppoll),
        .epoll_create1 = REAL(epoll_create1),
        .epoll_ctl = REAL(epoll_ctl),
        .epoll_pwait = REAL(epoll_pwait),
        .epoll_pwait2 = REAL(epoll_pwait2),
        .sigaction = REAL(sigaction),
    };
    shim_init(&sys);
    pthread_atfork(shim_fork_prepare, shim_fork_parent, atfork_child);
}

void ustack__init(void)
{
    pthread_once(&init_once, init);
}

/* USTACK_ATTACH_EARLY: when a program attaches (spawning ustackd) before its first socket,
 * so that the workers it starts before it makes one share its region and can take the
 * connections it passes them (node's cluster, docs/preload.md "Passing sockets").
 * EARLY_START (1, on): when it starts. EARLY_FORK (unset, the default): when it starts a
 * process (fork, vfork, a fork-like clone, posix_spawn) while it holds a Unix socket, the
 * only way it can pass the child a socket later. EARLY_NEVER (0, off): at its first
 * socket only. */
enum { EARLY_NEVER, EARLY_FORK, EARLY_START };
static int attach_early(void)
{
    const char *v = getenv("USTACK_ATTACH_EARLY");
    if (!ustack__enabled())
        return EARLY_NEVER;
    if (!v || !*v)
        return EARLY_FORK;
    if (!strcmp(v, "0") || !strcmp(v, "off"))
        return EARLY_NEVER;
    if (!strcmp(v, "1") || !strcmp(v, "on"))
        return EARLY_START;
    shim_warn_once("early", "USTACK_ATTACH_EARLY=%.64s: expected 0 or 1; ignored", v);
    return EARLY_FORK;
}

/* True when one of this process's files is a Unix socket (/proc/self/fd; false when that
 * cannot be read). */
static bool holds_unix_socket(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return false;
    bool found = false;
    int self = dirfd(d);
    struct dirent *de;
    while (!found && (de = readdir(d)) != NULL) {
        char *end;
        long fd = strtol(de->d_name, &end, 10);
        if (*end || end == de->d_name || fd == self || fd < 0 || fd > INT_MAX)
            continue;
        int dom = 0;
        socklen_t len = sizeof(dom);
        found = REAL(getsockopt)((int)fd, SOL_SOCKET, SO_DOMAIN, &dom, &len) == 0 && dom == AF_UNIX;
    }
    closedir(d);
    return found;
}

/* Before a new process starts: a process not attached yet that holds a Unix socket attaches
 * now (EARLY_FORK), so the child shares its region. A failure is said once, as at a
 * socket(), and the child starts all the same. */
static void attach_for_child(void)
{
    if (shim_attached() || ustack__attaching() || attach_early() != EARLY_FORK ||
        !holds_unix_socket())
        return;
    (void)ustack__attach();
}

static void std_streams(void);

/* The library's own lines (shim/log.c) when fd 2 is one of our sockets (an inetd service's
 * stderr is its connection): not into the peer's stream, nor into the eventfd behind the
 * number (a write there adds to its counter), but to syslog, as such services log. */
static int log_fd_ok(int fd)
{
    return shim_fd_kind(fd) == SHIM_FD_KERNEL;
}

static void log_to_syslog(const char *line, size_t len)
{
    if (len && line[len - 1] == '\n')
        len--;
    syslog(LOG_USER | LOG_WARNING, "%.*s", (int)len, line);
}

__attribute__((constructor)) static void ustack_ctor(void)
{
    int e0 = errno; /* the program starts with its errno, not ours */
    shim_log_set_sink(log_fd_ok, log_to_syslog);
    ustack__init();
    ustack__stackd_path(); /* now, before the program can chdir() */
    /* An exec'd image: adopt the sockets the old image described (shim_exec_prepare). */
    const char *fds = getenv("USTACK_FDS");
    if (fds && ustack__enabled() && ustack__attach() == 0) {
        shim_adopt(fds);
        std_streams();
    }
    if (fds)
        unsetenv("USTACK_FDS");
    else if (attach_early() == EARLY_START)
        ustack__attach(); /* a failure is printed once and returned by socket() */
    errno = e0;
}

/* ---- sockets -------------------------------------------------------------------------- */

HOOK int socket(int domain, int type, int protocol)
{
    bool stream = (type & 0xf) == SOCK_STREAM && (protocol == 0 || protocol == IPPROTO_TCP);
    bool dgram = (type & 0xf) == SOCK_DGRAM && (protocol == 0 || protocol == IPPROTO_UDP);
    /* AF_INET6 (docs/preload.md "IPv6"): TCP unless USTACK_INET6=0, UDP unless that or
     * USTACK_UDP=0. */
    bool serve = false;
    if (domain == AF_INET)
        serve = stream ? ustack__enabled() : dgram && ustack__udp_enabled();
    else if (domain == AF_INET6)
        serve = (stream || dgram) && ustack__inet6_enabled() && (stream || ustack__udp_enabled());
    if (!serve)
        return REAL(socket)(domain, type, protocol);
    if (type & ~(0xf | SOCK_NONBLOCK | SOCK_CLOEXEC))
        return (int)ret(-EINVAL);
    int e0 = errno; /* attaching makes system calls that may fail harmlessly */
    ustack__init();
    int rc = ustack__attach();
    if (rc < 0)
        return (int)ret(rc);
    errno = e0;
    int flags = type & (SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (domain == AF_INET6)
        return (int)RET(shim_socket6(flags, dgram));
    return (int)RET(dgram ? shim_socket_dgram(flags) : shim_socket(flags));
}

HOOK int socketpair(int domain, int type, int protocol, int sv[2])
{
    return REAL(socketpair)(domain, type, protocol, sv);
}

HOOK int bind(int fd, const struct sockaddr *addr, socklen_t len)
{
    if (sock(fd))
        return (int)RET(shim_bind(fd, addr, len));
    return REAL(bind)(fd, addr, len);
}

HOOK int listen(int fd, int backlog)
{
    if (sock(fd))
        return (int)RET(shim_listen(fd, backlog));
    return REAL(listen)(fd, backlog);
}

HOOK int accept(int fd, struct sockaddr *addr, socklen_t *len)
{
    if (sock(fd))
        return (int)RET(shim_accept(fd, addr, len, 0));
    return REAL(accept)(fd, addr, len);
}

HOOK int accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags)
{
    if (sock(fd))
        return (int)RET(shim_accept(fd, addr, len, flags));
    return REAL(accept4)(fd, addr, len, flags);
}

HOOK int connect(int fd, const struct sockaddr *addr, socklen_t len)
{
    if (sock(fd))
        return (int)RET(shim_connect(fd, addr, len));
    return REAL(connect)(fd, addr, len);
}

HOOK int getsockname(int fd, struct sockaddr *addr, socklen_t *len)
{
    if (sock(fd))
        return (int)RET(shim_getsockname(fd, addr, len));
    return REAL(getsockname)(fd, addr, len);
}

HOOK int getpeername(int fd, struct sockaddr *addr, socklen_t *len)
{
    if (sock(fd))
        return (int)RET(shim_getpeername(fd, addr, len));
    return REAL(getpeername)(fd, addr, len);
}

HOOK int getsockopt(int fd, int level, int name, void *val, socklen_t *len)
{
    if (sock(fd))
        return (int)RET(shim_getsockopt(fd, level, name, val, len));
    return REAL(getsockopt)(fd, level, name, val, len);
}

HOOK int setsockopt(int fd, int level, int name, const void *val, socklen_t len)
{
    if (sock(fd))
        return (int)RET(shim_setsockopt(fd, level, name, val, len));
    return REAL(setsockopt)(fd, level, name, val, len);
}

HOOK int shutdown(int fd, int how)
{
    if (sock(fd))
        return (int)RET(shim_shutdown(fd, how));
    return REAL(shutdown)(fd, how);
}

/* ---- fds ------------------------------------------------------------------------------ */

HOOK int close(int fd)
{
    if (ours(fd))
        return (int)RET(shim_close(fd));
    return REAL(close)(fd);
}

HOOK int close_range(unsigned first, unsigned last, int flags)
{
    if (shim_attached())
        return (int)RET(shim_close_range(first, last, flags));
    return REAL(close_range)(first, last, flags);
}

HOOK void closefrom(int lowfd)
{
    if (shim_attached() && lowfd >= 0) {
        shim_close_range((unsigned)lowfd, ~0u, 0);
        return;
    }
    REAL(closefrom)(lowfd);
}

HOOK int dup(int fd)
{
    if (ours(fd) && shim_fd_kind(fd) != SHIM_FD_PRIV)
        return (int)RET(shim_dup(fd));
    return REAL(dup)(fd);
}

static bool std_redirect(int oldfd, int newfd);
static void std_stream(int fd);

HOOK int dup2(int oldfd, int newfd)
{
    if (ours(newfd) || (ours(oldfd) && shim_fd_kind(oldfd) != SHIM_FD_PRIV)) {
        bool std = std_redirect(oldfd, newfd);
        int r = (int)RET(shim_dup3(oldfd, newfd, 0, true));
        if (r >= 0 && std)
            std_stream(newfd);
        return r;
    }
    return REAL(dup2)(oldfd, newfd);
}

HOOK int dup3(int oldfd, int newfd, int flags)
{
    if (ours(newfd) || (ours(oldfd) && shim_fd_kind(oldfd) != SHIM_FD_PRIV)) {
        bool std = std_redirect(oldfd, newfd);
        int r = (int)RET(shim_dup3(oldfd, newfd, flags, false));
        if (r >= 0 && std)
            std_stream(newfd);
        return r;
    }
    return REAL(dup3)(oldfd, newfd, flags);
}

HOOK int fcntl(int fd, int cmd, ...)
{
    va_list ap;
    va_start(ap, cmd);
    void *arg = va_arg(ap, void *);
    va_end(ap);
    if (ours(fd))
        return (int)RET(shim_fcntl(fd, cmd, arg));
    return REAL(fcntl)(fd, cmd, arg);
}

HOOK int fcntl64(int fd, int cmd, ...)
{
    va_list ap;
    va_start(ap, cmd);
    void *arg = va_arg(ap, void *);
    va_end(ap);
    if (ours(fd))
        return (int)RET(shim_fcntl(fd, cmd, arg));
    return REAL(fcntl64)(fd, cmd, arg);
}

HOOK int ioctl(int fd, unsigned long req, ...)
{
    va_list ap;
    va_start(ap, req);
    void *arg = va_arg(ap, void *);
    va_end(ap);
    if (sock(fd))
        return (int)RET(shim_ioctl(fd, req, arg));
    return REAL(ioctl)(fd, req, arg);
}

/* ---- data ----------------------------------------------------------------------------- */

HOOK ssize_t read(int fd, void *buf, size_t n)
{
    if (sock(fd)) {
        if (n == 0 && live_sock(fd))
            return 0; /* Linux's sock_read_iter: nothing to read, no wait (recv waits) */
        return RET(shim_recv(fd, buf, n, 0));
    }
    return REAL(read)(fd, buf, n);
}

HOOK ssize_t readv(int fd, const struct iovec *iov, int n)
{
    if (sock(fd)) {
        if (n < 0 || n > IOV_MAX)
            return ret(-EINVAL); /* readv(2) checks the vector before the socket sees it */
        /* As read() of 0 bytes; a bad vector is the client's to refuse (EFAULT). */
        bool vec_ok = (uintptr_t)iov >= 65536;
        size_t total = 0;
        for (int i = 0; i < n && vec_ok; i++)
            total += iov[i].iov_len;
        if (total == 0 && vec_ok)
            return 0;
        struct msghdr m = {.msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)n};
        return RET(shim_recvmsg(fd, &m, 0));
    }
    return REAL(readv)(fd, iov, n);
}

HOOK ssize_t write(int fd, const void *buf, size_t n)
{
    if (sock(fd))
        return RET(shim_send(fd, buf, n, 0));
    return REAL(write)(fd, buf, n);
}

HOOK ssize_t writev(int fd, const struct iovec *iov, int n)
{
    if (sock(fd)) {
        if (n < 0 || n > IOV_MAX)
            return ret(-EINVAL); /* writev(2): EINVAL, where sendmsg says EMSGSIZE */
        struct msghdr m = {.msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)n};
        return RET(shim_sendmsg(fd, &m, 0));
    }
    return REAL(writev)(fd, iov, n);
}

HOOK ssize_t recv(int fd, void *buf, size_t n, int flags)
{
    if (sock(fd))
        return RET(shim_recv(fd, buf, n, flags));
    return REAL(recv)(fd, buf, n, flags);
}

HOOK ssize_t recvfrom(int fd, void *buf, size_t n, int flags, struct sockaddr *addr,
                      socklen_t *alen)
{
    if (sock(fd))
        return RET(shim_recvfrom(fd, buf, n, flags, addr, alen));
    return REAL(recvfrom)(fd, buf, n, flags, addr, alen);
}

/* Does m carry fds (SCM_RIGHTS)? Other control data (IP_PKTINFO, credentials) costs no
 * more than this walk. */
static bool has_rights(struct msghdr *m)
{
    if (!m || !m->msg_control || m->msg_controllen < sizeof(struct cmsghdr))
        return false;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(m); c; c = CMSG_NXTHDR(m, c))
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS)
            return true;
    return false;
}

HOOK ssize_t recvmsg(int fd, struct msghdr *m, int flags)
{
    if (sock(fd))
        return RET(shim_recvmsg(fd, m, flags));
    ssize_t r = REAL(recvmsg)(fd, m, flags);
    /* Fds received over a Unix socket: a ustack socket among them is adopted (a process
     * not yet attached attaches to the running ustackd first). */
    if (r >= 0 && has_rights(m)) {
        int err = errno;
        if (shim_attached() || ustack__attach_running() == 0)
            shim_pass_recv(m);
        errno = err;
    }
    return r;
}

HOOK int recvmmsg(int fd, struct mmsghdr *v, unsigned n, int flags, struct timespec *tmo)
{
    if (sock(fd))
        return (int)RET(shim_recvmmsg(fd, v, n, flags, tmo));
    return REAL(recvmmsg)(fd, v, n, flags, tmo);
}

HOOK ssize_t send(int fd, const void *buf, size_t n, int flags)
{
    if (sock(fd))
        return RET(shim_send(fd, buf, n, flags));
    return REAL(send)(fd, buf, n, flags);
}

HOOK ssize_t sendto(int fd, const void *buf, size_t n, int flags, const struct sockaddr *addr,
                    socklen_t alen)
{
    if (sock(fd))
        return RET(shim_sendto(fd, buf, n, flags, addr, alen));
    return REAL(sendto)(fd, buf, n, flags, addr, alen);
}

HOOK ssize_t sendmsg(int fd, const struct msghdr *m, int flags)
{
    if (sock(fd))
        return RET(shim_sendmsg(fd, m, flags));
    /* Ustack sockets sent over a Unix socket (SCM_RIGHTS): noted for the receiver. */
    uint32_t taken[64];
    int n = shim_pass_send(m, taken, 64);
    ssize_t r = REAL(sendmsg)(fd, m, flags);
    if (r < 0 && n > 0) {
        int err = errno;
        shim_pass_undo(taken, n);
        errno = err;
    }
    return r;
}

HOOK int sendmmsg(int fd, struct mmsghdr *v, unsigned n, int flags)
{
    if (sock(fd))
        return (int)RET(shim_sendmmsg(fd, v, n, flags));
    return REAL(sendmmsg)(fd, v, n, flags);
}

/* This process's pid as /proc (mounted in an outer pid namespace) names it: a child cloned
 * into a new pid namespace is 1 to getpid() but not to ustackd. getpid() if /proc fails. */
static int32_t outer_pid(void)
{
    char buf[32];
    ssize_t n = readlink("/proc/self", buf, sizeof(buf) - 1);
    if (n > 0) {
        buf[n] = '\0';
        char *end;
        long v = strtol(buf, &end, 10);
        if (*end == '\0' && v > 0 && v <= INT32_MAX)
            return (int32_t)v;
    }
    return (int32_t)getpid();
}

/* A clone that makes a process with its own memory and fd table, returning in both like
 * fork (no new stack): vsftpd forks each session with syscall(SYS_clone, CLONE_NEWIPC |
 * SIGCHLD, NULL). Without the fork handlers the child would act as its parent: its close of
 * the inherited listener closed the parent's, and the parent's close of the accepted
 * socket took the child's. */
static bool fork_like(unsigned long flags, unsigned long stack)
{
    return stack == 0 && !(flags & (CLONE_VM | CLONE_THREAD | CLONE_FILES | CLONE_SIGHAND));
}

static long clone_as_fork(long (*real)(long, ...), long n, const long a[6], unsigned long flags)
{
    attach_for_child();
    shim_fork_prepare();
    shim_fork_hook_begin();
    long p = real(n, a[0], a[1], a[2], a[3], a[4], a[5]);
    int err = errno;
    if (p == 0) {
        shim_fork_child_pid((flags & CLONE_NEWPID) ? outer_pid() : (int32_t)getpid());
        name_tracer();
        return 0;
    }
    shim_fork_hook_end(p < 0 ? -1 : (int)p);
    errno = err;
    return p;
}

/* The head of clone3's struct clone_args (linux/sched.h), all __aligned_u64. */
struct clone3_head {
    uint64_t flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size;
};

/* syscall(2) for the socket calls some libraries make that way rather than through libc:
 * libuv (node.js, bind9's dig, ...) sends and receives UDP batches with
 * syscall(__NR_sendmmsg / __NR_recvmmsg) and closes fds with syscall(__NR_close). On a ustack fd
 * they go to the client; every other call passes through with its six argument registers, as
 * glibc's syscall() takes them. (The library's own futex calls come through here too: one
 * comparison.) */
#define SOCK_MODE (S_IFSOCK | 0777)
static bool stat_self(int fd, const char *path, int flags);

static void statx_sock(struct statx *x)
{
    x->stx_mode = (uint16_t)SOCK_MODE;
    x->stx_mask |= STATX_TYPE | STATX_MODE;
}

/* The stat system calls made through syscall() (libuv's uv_guess_handle, which tells node
 * what a handle passed to a worker is): a ustack socket is a socket there too, as in the
 * fstat hooks below. */
static long stat_syscall(long (*real)(long, ...), long n, const long a[6])
{
    long r = real(n, a[0], a[1], a[2], a[3], a[4], a[5]);
    if (r != 0)
        return r;
    if (n == SYS_fstat && live_sock((int)a[0]))
        ((struct stat *)a[1])->st_mode = SOCK_MODE;
    else if (n == SYS_newfstatat && stat_self((int)a[0], (const char *)a[1], (int)a[3]))
        ((struct stat *)a[2])->st_mode = SOCK_MODE;
    else if (n == SYS_statx && stat_self((int)a[0], (const char *)a[1], (int)a[2]))
        statx_sock((struct statx *)a[4]);
    return r;
}

HOOK long syscall(long n, ...)
{
    va_list ap;
    va_start(ap, n);
    long a[6];
    for (int i = 0; i < 6; i++)
        a[i] = va_arg(ap, long);
    va_end(ap);
    switch (n) {
    case SYS_sendmmsg:
        if (sock((int)a[0]))
            return (long)RET(
                shim_sendmmsg((int)a[0], (struct mmsghdr *)a[1], (unsigned)a[2], (int)a[3]));
        break;
    case SYS_recvmmsg:
        if (sock((int)a[0]))
            return (long)RET(shim_recvmmsg((int)a[0], (struct mmsghdr *)a[1], (unsigned)a[2],
                                           (int)a[3], (struct timespec *)a[4]));
        break;
    case SYS_sendmsg:
        if (sock((int)a[0]))
            return (long)RET(shim_sendmsg((int)a[0], (const struct msghdr *)a[1], (int)a[2]));
        break;
    case SYS_recvmsg:
        if (sock((int)a[0]))
            return (long)RET(shim_recvmsg((int)a[0], (struct msghdr *)a[1], (int)a[2]));
        break;
    case SYS_close:
        /* libuv (node.js) closes every fd with syscall(SYS_close): a ustack socket closed
         * behind our back kept its slot for ever (16,384 connections, then none). */
        if (ours((int)a[0]))
            return (long)RET(shim_close((int)a[0]));
        break;
        /* Not SYS_close_range: CPython's subprocess calls it in a vfork child, where the
         * library must not touch its tables (they are the parent's). */
    default:
        break;
    }
    long (*real)(long, ...) = REAL(syscall);
    if (!real) {
        errno = ENOSYS;
        return -1;
    }
    if (n == SYS_fstat || n == SYS_newfstatat || n == SYS_statx)
        return stat_syscall(real, n, a);
    if (n == SYS_clone && fork_like((unsigned long)a[0], (unsigned long)a[1]))
        return clone_as_fork(real, n, a, (unsigned long)a[0]);
#ifdef SYS_clone3
    if (n == SYS_clone3 && a[0] && (size_t)a[1] >= sizeof(struct clone3_head)) {
        struct clone3_head h; /* a bad pointer is the kernel's EFAULT, not our fault */
        if ((uintptr_t)a[0] >= 65536 &&
            shim_ucopy(&h, (const void *)a[0], sizeof(h)) == sizeof(h) &&
            fork_like((unsigned long)h.flags, (unsigned long)h.stack))
            return clone_as_fork(real, n, a, (unsigned long)h.flags);
    }
#endif
    return real(n, a[0], a[1], a[2], a[3], a[4], a[5]);
}

HOOK ssize_t sendfile(int out, int in, off_t *off, size_t count)
{
    if (sock(in))
        return RET(shim_sendfile_from(out, in, off, count));
    if (sock(out))
        return RET(shim_sendfile(out, in, off, count));
    return REAL(sendfile)(out, in, off, count);
}

HOOK ssize_t sendfile64(int out, int in, off64_t *off, size_t count)
{
    if (sock(in))
        return RET(shim_sendfile_from(out, in, (off_t *)off, count));
    if (sock(out))
        return RET(shim_sendfile(out, in, (off_t *)off, count));
    return REAL(sendfile64)(out, in, off, count);
}

/* stdio on a socket: glibc's FILE reads and writes through its own internal read/write,
 * which this library cannot see, so a FILE over a ustack socket is a cookie stream. */
static ssize_t cookie_read(void *c, char *buf, size_t n)
{
    int fd = (int)(intptr_t)c;
    /* The number may have become something else (stdout restored with dup2). */
    if (!live_sock(fd))
        return REAL(read)(fd, buf, n);
    return RET(shim_recv(fd, buf, n, 0));
}

static ssize_t cookie_write(void *c, const char *buf, size_t n)
{
    int fd = (int)(intptr_t)c;
    if (!live_sock(fd))
        return REAL(write)(fd, buf, n);
    return RET(shim_send(fd, buf, n, 0));
}

static int cookie_close(void *c)
{
    return close((int)(intptr_t)c);
}

/* The stream keeps the socket's number for fileno() (glibc marks a cookie stream's -2),
 * which programs pass to poll, fstat or setsockopt; glibc's cookie I/O does not use it. */
static FILE *cookie_stream(int fd, const char *mode)
{
    cookie_io_functions_t io = {cookie_read, cookie_write, NULL, cookie_close};
    FILE *f = fopencookie((void *)(intptr_t)fd, mode, io);
    if (f)
        f->_fileno = fd;
    return f;
}

HOOK FILE *fdopen(int fd, const char *mode)
{
    if (live_sock(fd))
        return cookie_stream(fd, mode);
    return REAL(fdopen)(fd, mode);
}

/* An exec'd image that finds the connection on its fds 0-2 (inetd's services, tcpserver,
 * netcat -e, socat's nofork) talks through stdin, stdout and stderr, which glibc made
 * before this library ran and which read and write the eventfd behind the number: they
 * become cookie streams over the socket, with glibc's buffering for a socket (stdin and
 * stdout fully buffered, stderr not). The old FILEs are left alone: closing them would
 * close the numbers. */
static FILE *std_cookie[3]; /* the cookie stream made for fd 0, 1 or 2, if any */

static FILE **std_file(int fd)
{
    return fd == 0 ? &stdin : fd == 1 ? &stdout : &stderr;
}

/* fd (0-2) is a ustack socket now: its standard stream becomes a cookie stream over it,
 * unless it is one already. */
static void std_stream(int fd)
{
    FILE **std = std_file(fd);
    if (std_cookie[fd] && *std == std_cookie[fd])
        return;
    FILE *f = cookie_stream(fd, fd == 0 ? "r" : "w");
    if (!f)
        return;
    if (fd == 2)
        setvbuf(f, NULL, _IONBF, 0);
    *std = f;
    std_cookie[fd] = f;
}

static void std_streams(void)
{
    for (int fd = 0; fd <= 2; fd++)
        if (live_sock(fd))
            std_stream(fd);
}

/* dup2/dup3 of a ustack socket onto 0-2 (a forking server's child that then prints): what
 * the standard stream holds is flushed first, to where it was going (the kernel would send
 * it to the new file at the next flush; programs flush before they redirect), and what
 * stdin had read ahead is dropped. */
static bool std_redirect(int oldfd, int newfd)
{
    if (newfd < 0 || newfd > 2 || oldfd == newfd || !live_sock(oldfd))
        return false;
    if (newfd)
        fflush(*std_file(newfd));
    return true;
}

/* ---- stat ---------------------------------------------------------------------------- */

/* A ustack socket's fd is an eventfd in the kernel; to fstat() it must look like what it
 * stands for: a socket, mode S_IFSOCK|0777 as Linux's sockfs reports. The rest of the stat
 * (device, inode, times) is the eventfd's, which is as unique as a socket's. */

HOOK int fstat(int fd, struct stat *st)
{
    if (shim_fd_kind(fd) == SHIM_FD_SPARE)
        return (int)ret(-EBADF);
    int r = REAL(fstat)(fd, st);
    if (r == 0 && live_sock(fd))
        st->st_mode = SOCK_MODE;
    return r;
}

HOOK int fstat64(int fd, struct stat64 *st)
{
    if (shim_fd_kind(fd) == SHIM_FD_SPARE)
        return (int)ret(-EBADF);
    int r = REAL(fstat64)(fd, st);
    if (r == 0 && live_sock(fd))
        st->st_mode = SOCK_MODE;
    return r;
}

/* fstatat(fd, "", st, AT_EMPTY_PATH) is fstat(fd). */
static bool stat_self(int fd, const char *path, int flags)
{
    return (flags & AT_EMPTY_PATH) && path && path[0] == '\0' && live_sock(fd);
}

HOOK int fstatat(int fd, const char *path, struct stat *st, int flags)
{
    int r = REAL(fstatat)(fd, path, st, flags);
    if (r == 0 && stat_self(fd, path, flags))
        st->st_mode = SOCK_MODE;
    return r;
}

HOOK int fstatat64(int fd, const char *path, struct stat64 *st, int flags)
{
    int r = REAL(fstatat64)(fd, path, st, flags);
    if (r == 0 && stat_self(fd, path, flags))
        st->st_mode = SOCK_MODE;
    return r;
}

/* Programs built against glibc before 2.33 (official node.js binaries among them) call the
 * old stat entry points, which glibc keeps only as compatibility symbols: the same answer
 * through today's functions (x86-64's struct stat is the kernel's, whatever the version
 * number). Without them libuv's uv_guess_handle saw a passed ustack socket as an unknown
 * handle. */
HOOK int __fxstat(int ver, int fd, struct stat *st)
{
    (void)ver;
    return fstat(fd, st);
}

HOOK int __fxstat64(int ver, int fd, struct stat64 *st)
{
    (void)ver;
    return fstat64(fd, st);
}

HOOK int __fxstatat(int ver, int fd, const char *path, struct stat *st, int flags)
{
    (void)ver;
    return fstatat(fd, path, st, flags);
}

HOOK int __fxstatat64(int ver, int fd, const char *path, struct stat64 *st, int flags)
{
    (void)ver;
    return fstatat64(fd, path, st, flags);
}

HOOK int statx(int fd, const char *path, int flags, unsigned mask, struct statx *st)
{
    int r = REAL(statx)(fd, path, flags, mask, st);
    if (r == 0 && stat_self(fd, path, flags))
        statx_sock(st);
    return r;
}

/* ---- readiness ------------------------------------------------------------------------ */

static int64_t ms_ns(int ms)
{
    return ms < 0 ? -1 : (int64_t)ms * 1000000;
}

static int64_t ts_ns(const struct timespec *ts)
{
    if (!ts)
        return -1;
    if (ts->tv_sec < 0 || ts->tv_nsec < 0 || ts->tv_nsec >= 1000000000)
        return -2;
    if (ts->tv_sec > INT64_MAX / 1000000000 - 1)
        return -1;
    return (int64_t)ts->tv_sec * 1000000000 + ts->tv_nsec;
}

HOOK int epoll_create(int size)
{
    return REAL(epoll_create)(size);
}

HOOK int epoll_create1(int flags)
{
    return REAL(epoll_create1)(flags);
}

HOOK int epoll_ctl(int epfd, int op, int fd, struct epoll_event *ev)
{
    if (sock(fd))
        return (int)RET(shim_epoll_ctl(epfd, op, fd, ev));
    return REAL(epoll_ctl)(epfd, op, fd, ev);
}

HOOK int epoll_wait(int epfd, struct epoll_event *ev, int max, int timeout)
{
    if (shim_fd_kind(epfd) == SHIM_FD_EPOLL)
        return (int)RET(shim_epoll_wait(epfd, ev, max, ms_ns(timeout), NULL));
    int64_t t0 = timeout > 0 ? shim_clock_ns() : 0; /* only a finite wait needs it */
    int n = REAL(epoll_wait)(epfd, ev, max, timeout);
    if (n > 0 && shim_fd_kind(epfd) == SHIM_FD_EPOLL) /* a ustack member joined meanwhile */
        return (int)RET(shim_epoll_after_kernel(epfd, ev, max, n, t0, ms_ns(timeout), NULL));
    return n;
}

HOOK int epoll_pwait(int epfd, struct epoll_event *ev, int max, int timeout, const sigset_t *mask)
{
    if (shim_fd_kind(epfd) == SHIM_FD_EPOLL)
        return (int)RET(shim_epoll_wait(epfd, ev, max, ms_ns(timeout), mask));
    int64_t t0 = timeout > 0 ? shim_clock_ns() : 0; /* only a finite wait needs it */
    int n = REAL(epoll_pwait)(epfd, ev, max, timeout, mask);
    if (n > 0 && shim_fd_kind(epfd) == SHIM_FD_EPOLL)
        return (int)RET(shim_epoll_after_kernel(epfd, ev, max, n, t0, ms_ns(timeout), mask));
    return n;
}

HOOK int epoll_pwait2(int epfd, struct epoll_event *ev, int max, const struct timespec *ts,
                      const sigset_t *mask)
{
    if (shim_fd_kind(epfd) == SHIM_FD_EPOLL) {
        int64_t t = ts_ns(ts);
        if (t == -2)
            return (int)ret(-EINVAL);
        return (int)RET(shim_epoll_wait(epfd, ev, max, t, mask));
    }
    if (!REAL(epoll_pwait2))
        return (int)ret(-ENOSYS);
    int64_t t0 = ts && (ts->tv_sec || ts->tv_nsec) ? shim_clock_ns() : 0;
    int n = REAL(epoll_pwait2)(epfd, ev, max, ts, mask);
    if (n > 0 && shim_fd_kind(epfd) == SHIM_FD_EPOLL) {
        int64_t t = ts_ns(ts);
        return (int)RET(shim_epoll_after_kernel(epfd, ev, max, n, t0, t < 0 ? -1 : t, mask));
    }
    return n;
}

/* glibc declares poll's array write-only; here it is read first, as the kernel does. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
HOOK int poll(struct pollfd *fds, nfds_t n, int timeout)
{
    if (shim_poll_has_ours(fds, n))
        return (int)RET(shim_poll(fds, n, ms_ns(timeout), NULL));
    return REAL(poll)(fds, n, timeout);
}

HOOK int ppoll(struct pollfd *fds, nfds_t n, const struct timespec *ts, const sigset_t *mask)
{
    if (shim_poll_has_ours(fds, n)) {
        int64_t t = ts_ns(ts);
        if (t == -2)
            return (int)ret(-EINVAL);
        return (int)RET(shim_poll(fds, n, t, mask));
    }
    return REAL(ppoll)(fds, n, ts, mask);
}

#pragma GCC diagnostic pop

HOOK int select(int n, fd_set *r, fd_set *w, fd_set *e, struct timeval *tv)
{
    if (shim_select_has_ours(n, r, w, e)) {
        int64_t t = -1;
        if (tv) {
            if (tv->tv_sec < 0 || tv->tv_usec < 0)
                return (int)ret(-EINVAL);
            t = (int64_t)tv->tv_sec * 1000000000 + (int64_t)tv->tv_usec * 1000;
        }
        return (int)RET(shim_select(n, r, w, e, t, NULL, tv));
    }
    return REAL(select)(n, r, w, e, tv);
}

HOOK int pselect(int n, fd_set *r, fd_set *w, fd_set *e, const struct timespec *ts,
                 const sigset_t *mask)
{
    if (shim_select_has_ours(n, r, w, e)) {
        int64_t t = ts_ns(ts);
        if (t == -2)
            return (int)ret(-EINVAL);
        return (int)RET(shim_select(n, r, w, e, t, mask, NULL));
    }
    return REAL(pselect)(n, r, w, e, ts, mask);
}

/* ---- glibc's fortified entry points (-D_FORTIFY_SOURCE) ------------------------------- */

HOOK ssize_t __read_chk(int fd, void *buf, size_t n, size_t buflen)
{
    if (n > buflen)
        __chk_fail();
    return read(fd, buf, n);
}

HOOK ssize_t __recv_chk(int fd, void *buf, size_t n, size_t buflen, int flags)
{
    if (n > buflen)
        __chk_fail();
    return recv(fd, buf, n, flags);
}

HOOK ssize_t __recvfrom_chk(int fd, void *buf, size_t n, size_t buflen, int flags,
                            struct sockaddr *addr, socklen_t *alen)
{
    if (n > buflen)
        __chk_fail();
    return recvfrom(fd, buf, n, flags, addr, alen);
}

HOOK int __poll_chk(struct pollfd *fds, nfds_t n, int timeout, size_t fdslen)
{
    if (fdslen / sizeof(*fds) < n)
        __chk_fail();
    return poll(fds, n, timeout);
}

HOOK int __ppoll_chk(struct pollfd *fds, nfds_t n, const struct timespec *ts, const sigset_t *mask,
                     size_t fdslen)
{
    if (fdslen / sizeof(*fds) < n)
        __chk_fail();
    return ppoll(fds, n, ts, mask);
}

/* ---- fault signals -------------------------------------------------------------------- */

/* While ustack's SIGSEGV/SIGBUS handler is installed (ucopy.h: bad buffers fail with EFAULT),
 * the application's dispositions for those two are recorded, returned and honoured by it
 * instead of replacing it. sigset() and raw rt_sigaction system calls are not intercepted:
 * they replace ustack's handler, and bad buffers then crash as without ustack. */

/* The application's handlers of asynchronous signals run behind intr.h's trampoline, so that
 * they interrupt blocking ustack calls as they would interrupt the kernel's. Faults and traps
 * are raised by the faulting instruction itself and interrupt nothing: not wrapped. */
static bool intr_wraps(int sig)
{
    return sig != SIGSEGV && sig != SIGBUS && sig != SIGILL && sig != SIGFPE && sig != SIGTRAP &&
           sig != SIGSYS && ustack__enabled();
}

HOOK int sigaction(int sig, const struct sigaction *act, struct sigaction *old)
{
    if (shim_ucopy_owns(sig))
        return (int)RET(shim_ucopy_sigaction(sig, act, old));
    if (intr_wraps(sig))
        return (int)RET(shim_intr_sigaction(REAL(sigaction), sig, act, old));
    return REAL(sigaction)(sig, act, old);
}

/* glibc's signal() family, as sigaction with the flags glibc gives each. */
static sighandler_t set_handler(int sig, sighandler_t h, int flags, bool mask_self,
                                sighandler_t (*real)(int, sighandler_t))
{
    bool ucopy = shim_ucopy_owns(sig);
    if (!ucopy && !intr_wraps(sig))
        return real(sig, h);
    if (h == SIG_ERR) {
        errno = EINVAL;
        return SIG_ERR;
    }
    struct sigaction act = {.sa_handler = h, .sa_flags = flags}, old;
    sigemptyset(&act.sa_mask);
    if (mask_self)
        sigaddset(&act.sa_mask, sig);
    int rc = ucopy ? shim_ucopy_sigaction(sig, &act, &old)
                   : shim_intr_sigaction(REAL(sigaction), sig, &act, &old);
    if (rc < 0) {
        errno = -rc;
        return SIG_ERR;
    }
    return old.sa_handler;
}

HOOK sighandler_t signal(int sig, sighandler_t h)
{
    return set_handler(sig, h, SA_RESTART, true, REAL(signal));
}

HOOK sighandler_t bsd_signal(int sig, sighandler_t h)
{
    return set_handler(sig, h, SA_RESTART, true, REAL(bsd_signal));
}

HOOK sighandler_t ssignal(int sig, sighandler_t h)
{
    return set_handler(sig, h, SA_RESTART, true, REAL(ssignal));
}

HOOK sighandler_t sysv_signal(int sig, sighandler_t h)
{
    return set_handler(sig, h, SA_RESETHAND | SA_NODEFER, false, REAL(sysv_signal));
}

HOOK sighandler_t __sysv_signal(int sig, sighandler_t h)
{
    return set_handler(sig, h, SA_RESETHAND | SA_NODEFER, false, REAL(__sysv_signal));
}

/* ---- processes ------------------------------------------------------------------------ */

static pid_t do_fork(void)
{
    attach_for_child();
    shim_fork_hook_begin();
    pid_t p = REAL(fork)();
    if (p != 0)
        shim_fork_hook_end(p < 0 ? -1 : (int)p);
    return p;
}

HOOK pid_t fork(void)
{
    return do_fork();
}

/* vfork() is a fork() here: a vfork child shares the parent's memory, so the library could
 * neither take the child's socket references nor let its exec release them without
 * corrupting the parent's tables. POSIX allows vfork to be fork. */
HOOK pid_t vfork(void)
{
    return do_fork();
}

enum exec_kind { EXEC_PATH, EXEC_SEARCH, EXEC_FD };

/* The file an exec would run: path itself, or (EXEC_SEARCH of a bare name) the first
 * executable regular file of that name on PATH, as execvpe looks. False if none. */
static bool exec_target(enum exec_kind kind, const char *path, int fd, struct stat *st, char *buf,
                        size_t cap)
{
    if (kind == EXEC_FD)
        return fstat(fd, st) == 0;
    if (kind == EXEC_PATH || strchr(path, '/')) {
        snprintf(buf, cap, "%s", path);
        return stat(path, st) == 0;
    }
    const char *p = getenv("PATH");
    if (!p)
        p = "/bin:/usr/bin";
    while (*p) {
        size_t n = strcspn(p, ":");
        snprintf(buf, cap, "%.*s%s%s", (int)n, p, n ? "/" : "", path);
        if (stat(buf, st) == 0 && S_ISREG(st->st_mode) && access(buf, X_OK) == 0)
            return true;
        p += n + (p[n] == ':');
    }
    return false;
}

/* An exec that changes privileges (the kernel's "secure exec", AT_SECURE): this process's
 * effective IDs differ from its real ones, or the file is set-user-ID or set-group-ID to
 * another ID, or carries capabilities. The dynamic loader then ignores LD_PRELOAD, so the
 * new image runs on the kernel's sockets, and any ustack socket it inherits is an inert
 * eventfd. Said once (Squid's master re-executes its worker that way: its listener was a
 * kernel socket and ustack answered every SYN to it with a RST). */
static void warn_secure_exec(enum exec_kind kind, const char *path, int fd)
{
    if (!ustack__enabled())
        return;
    struct stat st;
    char file[PATH_MAX] = "";
    bool ids = getuid() != geteuid() || getgid() != getegid();
    bool have = exec_target(kind, path, fd, &st, file, sizeof(file));
    bool bits = have && (((st.st_mode & S_ISUID) && st.st_uid != getuid()) ||
                         ((st.st_mode & S_ISGID) && st.st_gid != getgid()));
    bool caps = have && kind != EXEC_FD && getuid() != 0 && file[0] &&
                getxattr(file, "security.capability", NULL, 0) > 0;
    if (!ids && !bits && !caps)
        return;
    shim_warn_once("secure-exec",
                   "exec of %s changes privileges (%s): the dynamic loader ignores "
                   "LD_PRELOAD for it, so its sockets are the kernel's, not ustack's",
                   file[0]           ? file
                   : kind == EXEC_FD ? "an fd"
                                     : path,
                   ids    ? "effective IDs differ from the real ones"
                   : bits ? "a set-user-ID or set-group-ID file"
                          : "a file with capabilities");
}

/* An exec that passes ustack sockets (described in USTACK_FDS) with an environment that
 * does not preload this library: the new image sees plain eventfds. Programs that rebuild
 * their children's environment do that unless told to keep LD_PRELOAD (Postfix's and
 * Dovecot's import_environment): Postfix's smtpd then failed every accept() with ENOTSOCK,
 * with nothing to say why. Said once. */
static void warn_unpreloaded(enum exec_kind kind, const char *path, char *const env[])
{
    Dl_info info;
    const char *self = "libustack.so";
    if (dladdr((void *)warn_unpreloaded, &info) && info.dli_fname && *info.dli_fname) {
        const char *b = strrchr(info.dli_fname, '/');
        self = b ? b + 1 : info.dli_fname;
    }
    for (char *const *e = env; e && *e; e++)
        if (!strncmp(*e, "LD_PRELOAD=", 11) && strstr(*e + 11, self))
            return;
    if (access("/etc/ld.so.preload", F_OK) == 0)
        return; /* may load it for every program: not looked into */
    shim_warn_once("exec-nopreload",
                   "exec of %s without %s in its LD_PRELOAD: the ustack sockets it inherits "
                   "are plain eventfds to it (does the program clear its children's "
                   "environment? Postfix and Dovecot: add LD_PRELOAD and the USTACK_ "
                   "variables to import_environment)",
                   kind == EXEC_FD ? "an fd" : path, self);
}

static int do_exec(enum exec_kind kind, const char *path, int fd, char *const argv[],
                   char *const envp[])
{
    warn_secure_exec(kind, path, fd);
    char fds[8192];
    char **env = NULL;
    bool prepared = false;
    if (shim_attached()) {
        /* Sockets marked FD_CLOEXEC lose this holder; the rest are described to the new
         * image, which adopts them if it loads this library too (docs/preload.md). */
        if (shim_exec_prepare(fds, sizeof(fds)) < 0) {
            shim_warn_once("execfds", "too many sockets to pass across exec; the new program "
                                      "sees them as plain fds");
            fds[0] = '\0';
        } else {
            prepared = true;
        }
        env = ustack__exec_env(envp, fds);
        if (prepared && fds[0])
            warn_unpreloaded(kind, path, envp);
    }
    char *const *e = env ? env : envp;
    int r;
    if (kind == EXEC_PATH)
        r = REAL(execve)(path, argv, e);
    else if (kind == EXEC_SEARCH)
        r = REAL(execvpe)(path, argv, e);
    else
        r = REAL(fexecve)(fd, argv, e);
    int err = errno;
    if (prepared)
        shim_exec_failed();
    ustack__free_env(env);
    errno = err;
    return r;
}

HOOK int execve(const char *path, char *const argv[], char *const envp[])
{
    return do_exec(EXEC_PATH, path, -1, argv, envp);
}

HOOK int execv(const char *path, char *const argv[])
{
    return do_exec(EXEC_PATH, path, -1, argv, environ);
}

HOOK int execvp(const char *file, char *const argv[])
{
    return do_exec(EXEC_SEARCH, file, -1, argv, environ);
}

HOOK int execvpe(const char *file, char *const argv[], char *const envp[])
{
    return do_exec(EXEC_SEARCH, file, -1, argv, envp);
}

HOOK int fexecve(int fd, char *const argv[], char *const envp[])
{
    return do_exec(EXEC_FD, NULL, fd, argv, envp);
}

/* posix_spawn starts the new image without our exec hooks (glibc's clone and execve are
 * internal), often with an environment the program copied before the library set
 * USTACK_SHM_FD (Python's subprocess with close_fds=False passes its os.environ): the child
 * would spawn a second ustackd for the same device and find it busy. The environment gets
 * the region's variables, as an exec's does; the child attaches to the same stack as a new
 * process. Sockets are not described to it (USTACK_FDS): inherited ones are plain fds to
 * it (docs/preload.md "Process life"). */
static int do_spawn(bool search, pid_t *pid, const char *path, const posix_spawn_file_actions_t *fa,
                    const posix_spawnattr_t *attr, char *const argv[], char *const envp[])
{
    attach_for_child();
    shim_spares_close();
    char **env = shim_attached() ? ustack__exec_env(envp, NULL) : NULL;
    char *const *e = env ? env : envp;
    int r = search ? REAL(posix_spawnp)(pid, path, fa, attr, argv, e)
                   : REAL(posix_spawn)(pid, path, fa, attr, argv, e);
    ustack__free_env(env);
    return r;
}

HOOK int posix_spawn(pid_t *pid, const char *path, const posix_spawn_file_actions_t *fa,
                     const posix_spawnattr_t *attr, char *const argv[], char *const envp[])
{
    return do_spawn(false, pid, path, fa, attr, argv, envp);
}

HOOK int posix_spawnp(pid_t *pid, const char *file, const posix_spawn_file_actions_t *fa,
                      const posix_spawnattr_t *attr, char *const argv[], char *const envp[])
{
    return do_spawn(true, pid, file, fa, attr, argv, envp);
}

/* The execl family: argv collected from the variable arguments (and envp after the NULL
 * for execle). */
#define COLLECT_ARGS(arg, argv, ap, last)                                                          \
    size_t argc_ = 1;                                                                              \
    va_start(ap, last);                                                                            \
    while (va_arg(ap, const char *))                                                               \
        argc_++;                                                                                   \
    va_end(ap);                                                                                    \
    const char *argv[argc_ + 1];                                                                   \
    argv[0] = arg;                                                                                 \
    va_start(ap, last);                                                                            \
    for (size_t i_ = 1; i_ <= argc_; i_++)                                                         \
        argv[i_] = va_arg(ap, const char *);

HOOK int execl(const char *path, const char *arg, ...)
{
    va_list ap;
    COLLECT_ARGS(arg, argv, ap, arg)
    va_end(ap);
    return do_exec(EXEC_PATH, path, -1, (char *const *)argv, environ);
}

HOOK int execlp(const char *file, const char *arg, ...)
{
    va_list ap;
    COLLECT_ARGS(arg, argv, ap, arg)
    va_end(ap);
    return do_exec(EXEC_SEARCH, file, -1, (char *const *)argv, environ);
}

HOOK int execle(const char *path, const char *arg, ...)
{
    va_list ap;
    COLLECT_ARGS(arg, argv, ap, arg)
    char *const *envp = va_arg(ap, char *const *);
    va_end(ap);
    return do_exec(EXEC_PATH, path, -1, (char *const *)argv, envp);
}

/* ---- names ------------------------------------------------------------------------------ */

/* Does the kernel have a non-loopback address of each family (glibc's own AI_ADDRCONFIG
 * test, check_pf)? */
static void kernel_families(bool *v4, bool *v6)
{
    *v4 = *v6 = false;
    struct ifaddrs *ifa = NULL;
    if (REAL(getifaddrs)(&ifa) < 0) /* the kernel's own list, not our hook's */
        return;
    for (struct ifaddrs *i = ifa; i; i = i->ifa_next) {
        if (!i->ifa_addr)
            continue;
        if (i->ifa_addr->sa_family == AF_INET) {
            const struct sockaddr_in *a = (const struct sockaddr_in *)i->ifa_addr;
            *v4 |= a->sin_addr.s_addr != htonl(INADDR_LOOPBACK);
        } else if (i->ifa_addr->sa_family == AF_INET6) {
            const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)i->ifa_addr;
            *v6 |= !IN6_IS_ADDR_LOOPBACK(&a->sin6_addr);
        }
    }
    REAL(freeifaddrs)(ifa);
}

/* getifaddrs: the kernel lists no address of ustack's, so programs that pick their addresses
 * from the interface list never served on ustack's: BIND's named listens on each address it
 * finds (`listen-on { any; }` included) and only ever bound 127.0.0.1; aria2c's
 * "IPv4 configured=0" made its c-ares resolver ask for no family ("No address returned").
 * ustack's IPv4 address and its global IPv6 address (USTACK_IP6) are appended as entries of
 * the interface of USTACK_DEV (as `ip addr` would show them had the kernel these
 * addresses), each unless the kernel lists it already. Appended entries are one malloc'd
 * block each, tagged by ifa_data, and freeifaddrs cuts them off before glibc frees its own
 * block. */
static char ustack_ifa_tag;

struct ustack_ifa {
    struct ifaddrs ifa;
    struct sockaddr_storage addr, mask, brd;
    char name[IF_NAMESIZE];
};

/* The entry of addr (AF_INET or AF_INET6, prefix bits) after *tail's list, unless the list
 * has that address; flags from the list's entry of the same interface. */
static void ifa_append(struct ifaddrs **head, const char *name, int family, const void *addr,
                       unsigned prefix)
{
    size_t alen = family == AF_INET ? 4 : 16;
    size_t off = family == AF_INET ? offsetof(struct sockaddr_in, sin_addr)
                                   : offsetof(struct sockaddr_in6, sin6_addr);
    unsigned flags = 0;
    struct ifaddrs **tail = head;
    for (; *tail; tail = &(*tail)->ifa_next) {
        const struct ifaddrs *i = *tail;
        if (i->ifa_addr && i->ifa_addr->sa_family == family &&
            !memcmp((const char *)i->ifa_addr + off, addr, alen))
            return; /* the kernel has it already */
        if (!strcmp(i->ifa_name, name))
            flags = i->ifa_flags;
    }
    struct ustack_ifa *u = calloc(1, sizeof(*u));
    if (!u)
        return; /* the kernel's list is still right */
    uint8_t mask[16] = {0};
    for (unsigned b = 0; b < prefix && b < alen * 8; b++)
        mask[b / 8] |= (uint8_t)(0x80u >> (b % 8));
    u->addr.ss_family = u->mask.ss_family = (sa_family_t)family;
    memcpy((char *)&u->addr + off, addr, alen);
    memcpy((char *)&u->mask + off, mask, alen);
    snprintf(u->name, sizeof(u->name), "%s", name);
    u->ifa.ifa_name = u->name;
    u->ifa.ifa_flags = (flags ? flags : IFF_UP | IFF_RUNNING) & ~(unsigned)IFF_MULTICAST;
    u->ifa.ifa_addr = (struct sockaddr *)&u->addr;
    u->ifa.ifa_netmask = (struct sockaddr *)&u->mask;
    if (family == AF_INET) {
        /* The subnet's broadcast address. */
        u->brd.ss_family = AF_INET;
        for (size_t i = 0; i < 4; i++)
            ((uint8_t *)&u->brd)[off + i] = ((const uint8_t *)addr)[i] | (uint8_t)~mask[i];
        u->ifa.ifa_broadaddr = (struct sockaddr *)&u->brd;
        u->ifa.ifa_flags |= IFF_BROADCAST;
    }
    u->ifa.ifa_data = &ustack_ifa_tag; /* no interface statistics: the tag */
    *tail = &u->ifa;
}

HOOK int getifaddrs(struct ifaddrs **ifap)
{
    int rc = REAL(getifaddrs)(ifap);
    if (rc < 0 || !ustack__enabled())
        return rc;
    struct ustack__addrs a;
    if (!ustack__addrs(&a))
        return rc;
    if (a.ip) {
        uint32_t ip = htonl(a.ip);
        ifa_append(ifap, a.iface, AF_INET, &ip, a.prefix);
    }
    static const uint8_t z[16];
    if (memcmp(a.ip6, z, 16) && ustack__inet6_enabled())
        ifa_append(ifap, a.iface, AF_INET6, a.ip6, a.ip6_prefix);
    return rc;
}

HOOK void freeifaddrs(struct ifaddrs *ifa)
{
    for (struct ifaddrs **p = &ifa; *p;) {
        if ((*p)->ifa_data == &ustack_ifa_tag) {
            struct ifaddrs *mine = *p;
            *p = mine->ifa_next;
            free(mine); /* ifa is the first member of struct ustack_ifa */
        } else {
            p = &(*p)->ifa_next;
        }
    }
    if (ifa)
        REAL(freeifaddrs)(ifa);
}

/* AI_ADDRCONFIG (glibc's default when hints is NULL) returns a family only if the host has a
 * non-loopback address of it, and glibc asks the kernel: where ustack owns the IPv4 address
 * the kernel has none, so a numeric IPv4 address or a name with only A records failed
 * (EAI_ADDRFAMILY, EAI_NONAME; libmemcached's clients, Node's dns.lookup). ustack's
 * addresses count too: glibc's own rule (narrow AF_UNSPEC to the one family seen, refuse a
 * family not seen) over the union, then the lookup without AI_ADDRCONFIG. */
HOOK int getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
                     struct addrinfo **res)
{
    int flags = hints ? hints->ai_flags : AI_V4MAPPED | AI_ADDRCONFIG;
    bool u4, u6, k4, k6;
    if (!(flags & AI_ADDRCONFIG) || !ustack__enabled())
        return REAL(getaddrinfo)(node, service, hints, res);
    ustack__families(&u4, &u6);
    kernel_families(&k4, &k6);
    if ((!u4 || k4) && (!u6 || k6))
        return REAL(getaddrinfo)(node, service, hints, res); /* ustack adds nothing */
    bool v4 = u4 || k4, v6 = u6 || k6;
    struct addrinfo h;
    if (hints)
        h = *hints;
    else
        h = (struct addrinfo){.ai_family = AF_UNSPEC};
    h.ai_flags = flags & ~AI_ADDRCONFIG;
    if (h.ai_family == AF_UNSPEC && v4 != v6)
        h.ai_family = v4 ? AF_INET : AF_INET6;
    else if ((h.ai_family == AF_INET && !v4) || (h.ai_family == AF_INET6 && !v6))
        return EAI_NONAME;
    return REAL(getaddrinfo)(node, service, &h, res);
}

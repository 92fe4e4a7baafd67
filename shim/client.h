/*
 * client.h - the application side of the shared-memory protocol (docs/shm.md): POSIX socket
 * semantics for ustack sockets, linked into libustack.so and driven by preload/.
 *
 * Every function returns 0 or a count on success and -errno on failure; only preload/ turns
 * that into -1 + errno. None of them allocates memory while the library initialises, and
 * none calls an interposed libc function directly: the real functions come in through
 * struct shim_sys (preload/ fills it from dlsym(RTLD_NEXT); unit tests with libc's own), so
 * this code never recurses into the interposer and links into test binaries unchanged.
 *
 * The fd numbers the application sees for ustack sockets are eventfds (see docs/shm.md):
 * shim_fd_kind() says whether a number is ours.
 */
#ifndef USTACK_SHIM_CLIENT_H
#define USTACK_SHIM_CLIENT_H

#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <time.h>

#include "fdtab.h"

/* The real libc functions the client needs (those the interposer hooks). */
struct shim_sys {
    int (*socket)(int, int, int);
    int (*bind)(int, const struct sockaddr *, socklen_t);
    int (*listen)(int, int);
    int (*accept4)(int, struct sockaddr *, socklen_t *, int);
    int (*connect)(int, const struct sockaddr *, socklen_t);
    int (*getsockopt)(int, int, int, void *, socklen_t *);
    int (*setsockopt)(int, int, int, const void *, socklen_t);
    int (*close)(int);
    ssize_t (*read)(int, void *, size_t);
    ssize_t (*write)(int, const void *, size_t);
    int (*fcntl)(int, int, ...);
    int (*ioctl)(int, unsigned long, ...);
    int (*dup)(int);
    int (*dup3)(int, int, int);
    int (*ppoll)(struct pollfd *, nfds_t, const struct timespec *, const sigset_t *);
    int (*epoll_create1)(int);
    int (*epoll_ctl)(int, int, int, struct epoll_event *);
    int (*epoll_pwait)(int, struct epoll_event *, int, int, const sigset_t *);
    /* May be NULL (glibc < 2.35): then timeouts are rounded up to milliseconds. */
    int (*epoll_pwait2)(int, struct epoll_event *, int, const struct timespec *, const sigset_t *);
    /* May be NULL: then no fault handler, and bad buffers fault instead of EFAULT (ucopy.h). */
    int (*sigaction)(int, const struct sigaction *, struct sigaction *);
    /* May be NULL (unit tests): then a datagram that needs the kernel fails ENETUNREACH. */
    ssize_t (*sendmsg)(int, const struct msghdr *, int);
};

/* What a process attaches with (preload/ maps the region; see docs/shm.md "Start-up"). */
struct shim_attach {
    uint32_t spare_fds;   /* USTACK_SPARE_FDS: closed sockets' eventfds kept for reuse */
    void *base;           /* the mapped region, already checked with shm_region_check() */
    uint64_t size;        /* bytes mapped at base: the whole region, or its head (the rings are
                             then mapped from shm_fd as sockets use them) */
    uint32_t chunk_bytes; /* the rings' mapping unit (0: SHIM_CHUNK_BYTES) */
    int shm_fd;           /* the memfd, or -1 */
    int pipe_fd;          /* the liveness pipe's write end, or -1 */
    uint32_t ip;          /* ustack's address and prefix, host order (routing to the kernel) */
    uint8_t prefix;
    uint32_t gw;         /* 0: none */
    uint32_t fdtab_size; /* the fd table's size: the hard RLIMIT_NOFILE */
    uint32_t ifindex;    /* the kernel's index of the device's interface (IP_PKTINFO), or 0 */
    uint8_t ip6[16];     /* USTACK_IP6 (network order), all zero: link-local only */
    uint8_t ip6_prefix;
    bool gw6; /* USTACK_GW6 is set: IPv6 off ustack's prefix goes through it */
};

/* The fd table (read by the interposer on every call). Empty until shim_attach(). */
extern struct shim_fdtab shim_fds;

static inline enum shim_fd_kind shim_fd_kind(int fd)
{
    return shim_fdtab_kind(&shim_fds, fd);
}

/* A number the shim answers for as a socket: a ustack socket, or a closed socket's eventfd
 * kept as a spare (open in the kernel, closed for the application: EBADF, POLLNVAL). */
static inline bool shim_fd_sock_number(int fd)
{
    enum shim_fd_kind k = shim_fd_kind(fd);
    return k == SHIM_FD_SOCK || k == SHIM_FD_SPARE;
}

/* ---- process life cycle --------------------------------------------------------------- */

/* Once, before anything else (sets the real functions). */
void shim_init(const struct shim_sys *sys);
/* Attaches to a region: fd table, per-socket state, library fds marked private. */
#define SHIM_CHUNK_BYTES (4u << 20)
int shim_attach(const struct shim_attach *a);
bool shim_attached(void);
/* The region's memfd and the liveness pipe's write end as this process numbers them now. */
void shim_region_fds(int *shm_fd, int *pipe_fd);
/* The stack is gone (its pid died or it said so): ops fail instead of waiting forever. */
bool shim_stack_dead(void);
/* ustackd's pid as it published it (0 before). */
int shim_stack_pid(void);

/* fork (pthread_atfork, plus the fork hook's result): a child holds every socket too. */
void shim_fork_prepare(void);
void shim_fork_parent(void);
void shim_fork_child(void);
/* The same for a child whose getpid() is not its pid in ustackd's namespace (a clone with
 * CLONE_NEWPID): pid is its pid as the parent saw it. */
void shim_fork_child_pid(int32_t pid);
/* The fork hook brackets the real fork() so that a failed fork undoes the prepare step's
 * references (the atfork handlers cannot see fork's result). */
void shim_fork_hook_begin(void);
void shim_fork_hook_end(int pid); /* fork's result: the child's pid, or -1 */
void shim_fork_failed(void);

/* exec: FD_CLOEXEC sockets are released (the kernel closes their eventfds); the others are
 * described in buf as "USTACK_FDS=<pid>:<fd>.<slot>.<gen>.<nonblock>,..." for the new image
 * to adopt (buf empty when there are none). shim_exec_failed() undoes the releases it can.
 * Returns 0 or -ENOSPC. */
int shim_exec_prepare(char *buf, size_t len);
void shim_exec_failed(void);
/* Closes the spare eventfds (their parked registrations first): before a program is started
 * without our exec hooks (posix_spawn), which would inherit those without FD_CLOEXEC. */
void shim_spares_close(void);
/* The new image: adopt the sockets a USTACK_FDS value names (after shim_attach). */
int shim_adopt(const char *value);
/* SCM_RIGHTS (docs/preload.md "Passing sockets"). Before a sendmsg on a kernel socket: notes
 * the ustack sockets among msg's rights (at most max; their pass entries in taken) and
 * returns how many; shim_pass_undo gives them back if the sendmsg failed. After a recvmsg:
 * adopts the ustack sockets among the fds received; returns how many. */
int shim_pass_send(const struct msghdr *msg, uint32_t *taken, int max);
void shim_pass_undo(const uint32_t *taken, int n);
int shim_pass_recv(const struct msghdr *msg);

/* ---- sockets -------------------------------------------------------------------------- */

/* socket(AF_INET, SOCK_STREAM | flags, 0): flags are SOCK_NONBLOCK / SOCK_CLOEXEC. */
int shim_socket(int flags);
/* socket(AF_INET, SOCK_DGRAM | flags, 0 or IPPROTO_UDP): a UDP socket (docs/preload.md). */
int shim_socket_dgram(int flags);
/* socket(AF_INET6, SOCK_STREAM or SOCK_DGRAM | flags, ...): the same in the IPv6 domain
 * (IPv4 peers as v4-mapped addresses, docs/preload.md "IPv6"). */
int shim_socket6(int flags, bool dgram);
int shim_bind(int fd, const struct sockaddr *addr, socklen_t len);
int shim_listen(int fd, int backlog);
int shim_accept(int fd, struct sockaddr *addr, socklen_t *len, int flags);
int shim_connect(int fd, const struct sockaddr *addr, socklen_t len);
int shim_shutdown(int fd, int how);
int shim_getsockname(int fd, struct sockaddr *addr, socklen_t *len);
int shim_getpeername(int fd, struct sockaddr *addr, socklen_t *len);
int shim_getsockopt(int fd, int level, int name, void *val, socklen_t *len);
int shim_setsockopt(int fd, int level, int name, const void *val, socklen_t len);

/* close() of any fd shim_fd_kind() calls ours (SHIM_FD_PRIV: pretends, see docs). */
int shim_close(int fd);
/* close_range(2) with ours taken out of the kernel's range and closed properly. */
int shim_close_range(unsigned first, unsigned last, int flags);
/* dup family: the kernel duplicates the eventfd, the copy shares the socket. */
int shim_dup(int fd);
int shim_dup3(int oldfd, int newfd, int flags, bool is_dup2);
int shim_fcntl(int fd, int cmd, void *arg);
int shim_ioctl(int fd, unsigned long req, void *arg);

/* ---- data ----------------------------------------------------------------------------- */

ssize_t shim_sendmsg(int fd, const struct msghdr *msg, int flags);
ssize_t shim_recvmsg(int fd, struct msghdr *msg, int flags);
ssize_t shim_send(int fd, const void *buf, size_t len, int flags);
ssize_t shim_recv(int fd, void *buf, size_t len, int flags);
/* recvfrom/sendto: the address is a datagram socket's; a stream socket reports none
 * (*alen = 0) and ignores the destination, as Linux's TCP. */
ssize_t shim_recvfrom(int fd, void *buf, size_t len, int flags, struct sockaddr *addr,
                      socklen_t *alen);
ssize_t shim_sendto(int fd, const void *buf, size_t len, int flags, const struct sockaddr *addr,
                    socklen_t alen);
int shim_sendmmsg(int fd, struct mmsghdr *v, unsigned n, int flags);
int shim_recvmmsg(int fd, struct mmsghdr *v, unsigned n, int flags, struct timespec *timeout);
/* sendfile(2) with out_fd ours: the file is read with pread/read straight into the tx ring. */
ssize_t shim_sendfile(int out_fd, int in_fd, off_t *offset, size_t count);
/* sendfile() with a ustack socket as the source (Linux splices from a socket): bytes are
 * peeked, written to out_fd (a ustack socket or a kernel fd), and only what was written is
 * consumed. offset must be NULL (ESPIPE). */
ssize_t shim_sendfile_from(int out_fd, int in_fd, off_t *offset, size_t count);

/* ---- readiness ------------------------------------------------------------------------ */

/* Any of these fds ours? (The interposer's test before taking the slow path.) */
bool shim_poll_has_ours(const struct pollfd *fds, nfds_t n);
bool shim_select_has_ours(int nfds, const fd_set *r, const fd_set *w, const fd_set *e);
/* timeout_ns < 0: forever. */
int shim_poll(struct pollfd *fds, nfds_t n, int64_t timeout_ns, const sigset_t *mask);
/* tv (may be NULL) gets the time left, as Linux select() does; mask for pselect. */
int shim_select(int nfds, fd_set *r, fd_set *w, fd_set *e, int64_t timeout_ns, const sigset_t *mask,
                struct timeval *tv);
int shim_epoll_ctl(int epfd, int op, int fd, struct epoll_event *ev);
int shim_epoll_wait(int epfd, struct epoll_event *ev, int max, int64_t timeout_ns,
                    const sigset_t *mask);
/* After a wait the hooks passed to the kernel because epfd had no ustack member when it
 * began: n events it returned. If a ustack member joined meanwhile (another thread's
 * EPOLL_CTL_ADD), they are translated as shim_epoll_wait does; if none is left, the rest
 * of the timeout (t0: shim clock at entry) is waited through shim_epoll_wait. */
int shim_epoll_after_kernel(int epfd, struct epoll_event *ev, int max, int n, int64_t t0,
                            int64_t timeout_ns, const sigset_t *mask);
int64_t shim_clock_ns(void);

/* POLL* readiness of socket slot i: shm_sock_poll() plus POLLRDNORM/POLLWRNORM. */
uint32_t shim_sock_events(void *base, uint32_t i);

/* ---- diagnostics ---------------------------------------------------------------------- */

/* "ustack: [pid] <msg>" on stderr (shim_log at SHIM_LOG_WARN, so USTACK_LOG=error
 * silences it), once per distinct key (a small fixed set of keys). */
void shim_warn_once(const char *key, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* True the first time it is called with key (the set shim_warn_once uses). */
bool shim_first_time(const char *key);

#endif

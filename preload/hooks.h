/*
 * hooks.h - the one list of libc functions libustack.so interposes.
 *
 * X(return type, name, parameter types). From it preload.c makes the table of real
 * functions (resolved with dlsym(RTLD_NEXT)), and tests/test_fdtab.c checks that
 * preload/libustack.map exports exactly these names: add a hook here, define it in
 * preload.c, and list it in the map.
 */
#ifndef USTACK_PRELOAD_HOOKS_H
#define USTACK_PRELOAD_HOOKS_H

/* clang-format off */
#define USTACK_HOOKS(X) \
    X(int, socket, (int, int, int)) \
    X(int, socketpair, (int, int, int, int *)) \
    X(int, bind, (int, const struct sockaddr *, socklen_t)) \
    X(int, listen, (int, int)) \
    X(int, accept, (int, struct sockaddr *, socklen_t *)) \
    X(int, accept4, (int, struct sockaddr *, socklen_t *, int)) \
    X(int, connect, (int, const struct sockaddr *, socklen_t)) \
    X(int, getsockname, (int, struct sockaddr *, socklen_t *)) \
    X(int, getpeername, (int, struct sockaddr *, socklen_t *)) \
    X(int, getsockopt, (int, int, int, void *, socklen_t *)) \
    X(int, setsockopt, (int, int, int, const void *, socklen_t)) \
    X(int, shutdown, (int, int)) \
    X(int, close, (int)) \
    X(int, close_range, (unsigned, unsigned, int)) \
    X(void, closefrom, (int)) \
    X(ssize_t, read, (int, void *, size_t)) \
    X(ssize_t, readv, (int, const struct iovec *, int)) \
    X(ssize_t, write, (int, const void *, size_t)) \
    X(ssize_t, writev, (int, const struct iovec *, int)) \
    X(ssize_t, recv, (int, void *, size_t, int)) \
    X(ssize_t, recvfrom, (int, void *, size_t, int, struct sockaddr *, socklen_t *)) \
    X(ssize_t, recvmsg, (int, struct msghdr *, int)) \
    X(int, recvmmsg, (int, struct mmsghdr *, unsigned, int, struct timespec *)) \
    X(ssize_t, send, (int, const void *, size_t, int)) \
    X(ssize_t, sendto, (int, const void *, size_t, int, const struct sockaddr *, socklen_t)) \
    X(ssize_t, sendmsg, (int, const struct msghdr *, int)) \
    X(int, sendmmsg, (int, struct mmsghdr *, unsigned, int)) \
    X(ssize_t, sendfile, (int, int, off_t *, size_t)) \
    X(ssize_t, sendfile64, (int, int, off64_t *, size_t)) \
    X(int, fcntl, (int, int, ...)) \
    X(int, fcntl64, (int, int, ...)) \
    X(int, ioctl, (int, unsigned long, ...)) \
    X(int, dup, (int)) \
    X(int, dup2, (int, int)) \
    X(int, dup3, (int, int, int)) \
    X(int, epoll_create, (int)) \
    X(int, epoll_create1, (int)) \
    X(int, epoll_ctl, (int, int, int, struct epoll_event *)) \
    X(int, epoll_wait, (int, struct epoll_event *, int, int)) \
    X(int, epoll_pwait, (int, struct epoll_event *, int, int, const sigset_t *)) \
    X(int, epoll_pwait2, (int, struct epoll_event *, int, const struct timespec *, \
                          const sigset_t *)) \
    X(int, poll, (struct pollfd *, nfds_t, int)) \
    X(int, ppoll, (struct pollfd *, nfds_t, const struct timespec *, const sigset_t *)) \
    X(int, select, (int, fd_set *, fd_set *, fd_set *, struct timeval *)) \
    X(int, pselect, (int, fd_set *, fd_set *, fd_set *, const struct timespec *, \
                     const sigset_t *)) \
    X(int, sigaction, (int, const struct sigaction *, struct sigaction *)) \
    X(sighandler_t, signal, (int, sighandler_t)) \
    X(sighandler_t, bsd_signal, (int, sighandler_t)) \
    X(sighandler_t, ssignal, (int, sighandler_t)) \
    X(sighandler_t, sysv_signal, (int, sighandler_t)) \
    X(sighandler_t, __sysv_signal, (int, sighandler_t)) \
    X(pid_t, fork, (void)) \
    X(pid_t, vfork, (void)) \
    X(int, execve, (const char *, char *const[], char *const[])) \
    X(int, execv, (const char *, char *const[])) \
    X(int, execvp, (const char *, char *const[])) \
    X(int, execvpe, (const char *, char *const[], char *const[])) \
    X(int, execl, (const char *, const char *, ...)) \
    X(int, execlp, (const char *, const char *, ...)) \
    X(int, execle, (const char *, const char *, ...)) \
    X(int, fexecve, (int, char *const[], char *const[])) \
    X(int, posix_spawn, (pid_t *, const char *, const posix_spawn_file_actions_t *, \
                         const posix_spawnattr_t *, char *const[], char *const[])) \
    X(int, posix_spawnp, (pid_t *, const char *, const posix_spawn_file_actions_t *, \
                          const posix_spawnattr_t *, char *const[], char *const[])) \
    X(FILE *, fdopen, (int, const char *)) \
    X(int, fstat, (int, struct stat *)) \
    X(int, fstat64, (int, struct stat64 *)) \
    X(int, fstatat, (int, const char *, struct stat *, int)) \
    X(int, fstatat64, (int, const char *, struct stat64 *, int)) \
    X(int, statx, (int, const char *, int, unsigned, struct statx *)) \
    X(int, __fxstat, (int, int, struct stat *)) \
    X(int, __fxstat64, (int, int, struct stat64 *)) \
    X(int, __fxstatat, (int, int, const char *, struct stat *, int)) \
    X(int, __fxstatat64, (int, int, const char *, struct stat64 *, int)) \
    X(ssize_t, __read_chk, (int, void *, size_t, size_t)) \
    X(ssize_t, __recv_chk, (int, void *, size_t, size_t, int)) \
    X(ssize_t, __recvfrom_chk, (int, void *, size_t, size_t, int, struct sockaddr *, \
                                socklen_t *)) \
    X(int, __poll_chk, (struct pollfd *, nfds_t, int, size_t)) \
    X(int, __ppoll_chk, (struct pollfd *, nfds_t, const struct timespec *, const sigset_t *, \
                         size_t)) \
    X(long, syscall, (long, ...)) \
    X(int, getaddrinfo, (const char *, const char *, const struct addrinfo *, \
                         struct addrinfo **)) \
    X(int, getifaddrs, (struct ifaddrs **)) \
    X(void, freeifaddrs, (struct ifaddrs *))
/* clang-format on */

#endif

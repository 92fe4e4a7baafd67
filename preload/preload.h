/*
 * preload.h - what the files of preload/ share: the table of real libc functions and the
 * start-up entry points (spawn.c).
 */
#ifndef USTACK_PRELOAD_H
#define USTACK_PRELOAD_H

#include <ifaddrs.h>
#include <net/if.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "hooks.h"

/* The real functions, one pointer per hook. */
struct ustack_real {
#define USTACK_REAL_FIELD(ret, name, params) ret(*name) params;
    USTACK_HOOKS(USTACK_REAL_FIELD)
#undef USTACK_REAL_FIELD
};
extern struct ustack_real ustack__real;

/* Resolves one real function (dlsym(RTLD_NEXT)); NULL while this thread is already inside
 * dlsym (an allocator that calls back into a hooked function during its own set-up). */
void *ustack__resolve(const char *name, void **slot);

#define REAL(f)                                                                                    \
    (ustack__real.f ? ustack__real.f                                                               \
                    : (__typeof__(ustack__real.f))ustack__resolve(#f, (void **)&ustack__real.f))

/* Once per process before anything that needs the client (idempotent, thread-safe). */
void ustack__init(void);
/* USTACK is not 0 (configuration loaded on first call). */
int ustack__enabled(void);
/* Are AF_INET UDP sockets ustack's (USTACK_UDP)? */
int ustack__udp_enabled(void);
int ustack__inet6_enabled(void);
/* The address families ustack gives this process (IPv4: USTACK_IP; IPv6: the link-local
 * address it always has, unless USTACK_INET6=0): for getaddrinfo's AI_ADDRCONFIG. */
void ustack__families(bool *v4, bool *v6);
/* ustack's addresses (IPv4 in host order, 0 when none; the global IPv6 address, zero when
 * none) and the kernel interface USTACK_DEV names (iface=, else "ustack0"): for getifaddrs.
 * False when ustack is off or its configuration is bad. */
struct ustack__addrs {
    uint32_t ip;
    uint8_t prefix;
    uint8_t ip6[16];
    uint8_t ip6_prefix;
    char iface[IF_NAMESIZE];
};
bool ustack__addrs(struct ustack__addrs *out);
/* Attaches to ustackd, spawning it if need be (docs/shm.md "Start-up"): 0 or -errno. The
 * first failure is printed once and returned from then on. */
int ustack__attach(void);
/* True while this thread is inside ustack__attach (its spawn clones through our hooks). */
bool ustack__attaching(void);
int ustack__attach_running(void);
/* The path of ustackd to spawn (USTACK_STACKD, else next to libustack.so). */
const char *ustack__stackd_path(void);
/* The environment for an exec: envp plus USTACK_SHM_FD / USTACK_PIPE_FD and fdsvar (if not
 * empty), minus stale copies of those. malloc'd; free with ustack__free_env. */
char **ustack__exec_env(char *const envp[], const char *fdsvar);
void ustack__free_env(char **env);

#endif

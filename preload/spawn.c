/*
 * spawn.c - attaching to ustackd, and spawning it on first use (docs/shm.md "Start-up").
 *
 * The first AF_INET stream socket of a process attaches: to the region named by
 * USTACK_SHM_FD if an ancestor made one, else to a new one, with a ustackd spawned for it.
 * The spawned ustackd is detached (double fork, own session): it is no child of the
 * application, whose wait() loops and SIGCHLD handlers must not see it, and a terminal's
 * ^C to the application's process group does not stop the stack other processes may use.
 * It exits when the last holder of the liveness pipe is gone.
 */
#undef _FORTIFY_SOURCE
#include "preload.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <link.h>
#include <linux/futex.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "client.h"
#include "conf.h"
#include "log.h"
#include <net/if.h>

#include "shm.h"

extern char **environ;

/* Variables of the client only: never handed to ustackd, whose configuration loader does
 * not know them. */
static const char *const client_vars[] = {
    "USTACK_SHM_FD",       "USTACK_PIPE_FD",
    "USTACK_FDS",          "USTACK_STACKD",
    "USTACK_SHM_SOCKS",    "USTACK_SHM_RING",
    "USTACK_STACKD_LOG",   "USTACK_ATTACH",
    "USTACK_ATTACH_EARLY", NULL,
};

static bool is_client_var(const char *name, size_t len)
{
    for (int i = 0; client_vars[i]; i++)
        if (strlen(client_vars[i]) == len && !memcmp(client_vars[i], name, len))
            return true;
    return false;
}

/* ---- configuration -------------------------------------------------------------------- */

static pthread_mutex_t conf_lock = PTHREAD_MUTEX_INITIALIZER;
static int conf_state; /* 0 not loaded, 1 ok, -errno failed */
static struct shim_conf conf;
static char conf_err[512];

/* shim_conf_load() rejects USTACK_* names it does not know, which includes the client's
 * own (USTACK_SHM_FD, ...). So the client loads through a lookup that records which names
 * the loader knows, and then applies the same unknown-name rule itself, knowing both. */
struct seen {
    const char *names[64];
    int n;
};

static const char *lookup(void *ctx, const char *name)
{
    struct seen *s = ctx;
    if (s->n < 64)
        s->names[s->n++] = name;
    return getenv(name);
}

static int load_conf(void)
{
    struct seen seen = {{0}, 0};
    int rc = shim_conf_load_from(&conf, lookup, &seen, conf_err, sizeof(conf_err));
    if (rc < 0)
        return rc;
    for (char **e = environ; e && *e; e++) {
        const char *eq = strchr(*e, '=');
        if (!eq)
            continue;
        size_t len = (size_t)(eq - *e);
        bool ustack =
            (len == 6 && !memcmp(*e, "USTACK", 6)) || (len > 7 && !memcmp(*e, "USTACK_", 7));
        if (!ustack || (len > 12 && !memcmp(*e, "USTACK_TEST_", 12)) || is_client_var(*e, len))
            continue;
        bool known = false;
        for (int i = 0; i < seen.n && !known; i++)
            known = strlen(seen.names[i]) == len && !memcmp(seen.names[i], *e, len);
        if (!known) {
            snprintf(conf_err, sizeof(conf_err),
                     "%.*s=%.64s: unknown variable (expected a USTACK_* name from "
                     "docs/configuration.md)",
                     (int)len, *e, eq + 1);
            return -EINVAL;
        }
    }
    shim_log_setup("ustack", conf.log_level);
    return 0;
}

/* ---- programs whose sockets these hooks cannot see -------------------------------------- */

/* A Go program makes its system calls from its own runtime: its net package never calls
 * libc's socket functions, so these hooks would see only what cgo routes through libc (name
 * lookups over UDP), and the ustackd spawned for those would take the device away from the
 * program's kernel sockets. ustack stays off in such a program and says so once (the
 * process's children run their own images and decide for themselves). The main image is a
 * Go program when its notes hold the Go linker's build ID: owner "Go", type 4. */
enum { NOTE_GO_BUILDID = 4 };

static bool note_is_go(const ElfW(Nhdr) * n, const char *name)
{
    return n->n_type == NOTE_GO_BUILDID && n->n_namesz >= 3 && !memcmp(name, "Go", 3);
}

static int find_go_note(struct dl_phdr_info *info, size_t size, void *data)
{
    (void)size;
    bool *go = data;
    for (int i = 0; i < info->dlpi_phnum && !*go; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_NOTE)
            continue;
        const char *p = (const char *)(info->dlpi_addr + ph->p_vaddr), *end = p + ph->p_memsz;
        size_t align = ph->p_align == 8 ? 8 : 4;
        while (!*go && (size_t)(end - p) >= sizeof(ElfW(Nhdr))) {
            const ElfW(Nhdr) *n = (const void *)p;
            size_t name = (n->n_namesz + align - 1) & ~(align - 1);
            size_t desc = (n->n_descsz + align - 1) & ~(align - 1);
            if (name > (size_t)(end - p) - sizeof(*n) ||
                desc > (size_t)(end - p) - sizeof(*n) - name)
                break;
            *go = note_is_go(n, p + sizeof(*n));
            p += sizeof(*n) + name + desc;
        }
    }
    return 1; /* the first object is the main image: stop there */
}

/* -1 not looked at yet, 0 no, 1 a Go program. */
static int go_image = -1;

static bool is_go_program(void)
{
    int v = __atomic_load_n(&go_image, __ATOMIC_RELAXED);
    if (v < 0) {
        bool go = false;
        dl_iterate_phdr(find_go_note, &go);
        v = go;
        __atomic_store_n(&go_image, v, __ATOMIC_RELAXED);
    }
    return v;
}

static int conf_enabled(void)
{
    if (__atomic_load_n(&conf_state, __ATOMIC_ACQUIRE) == 0) {
        pthread_mutex_lock(&conf_lock);
        if (conf_state == 0)
            __atomic_store_n(&conf_state, load_conf() < 0 ? -EINVAL : 1, __ATOMIC_RELEASE);
        pthread_mutex_unlock(&conf_lock);
    }
    if (conf_state > 0)
        return conf.enabled;
    /* A bad configuration still honours an explicit USTACK=0. */
    const char *v = getenv("USTACK");
    return !(v && (!strcmp(v, "0") || !strcmp(v, "off")));
}

int ustack__enabled(void)
{
    if (!conf_enabled())
        return 0;
    if (!is_go_program())
        return 1;
    shim_warn_once("go",
                   "%s is a Go program: its runtime makes system calls itself, not "
                   "through libc, so ustack cannot carry its sockets; ustack is off "
                   "in it (its sockets are the kernel's)",
                   program_invocation_short_name);
    return 0;
}

/* USTACK_UDP=0 leaves UDP to the kernel. A bad configuration fails UDP sockets as it fails
 * TCP ones (the attach reports it). */
int ustack__udp_enabled(void)
{
    return ustack__enabled() && (conf_state < 0 || conf.udp);
}

/* USTACK_INET6=0 leaves AF_INET6 sockets to the kernel. */
int ustack__inet6_enabled(void)
{
    return ustack__enabled() && (conf_state < 0 || conf.inet6);
}

void ustack__families(bool *v4, bool *v6)
{
    *v4 = ustack__enabled() && conf_state > 0 && conf.ip != 0;
    *v6 = ustack__inet6_enabled() && conf_state > 0;
}

bool ustack__addrs(struct ustack__addrs *out)
{
    if (!ustack__enabled() || conf_state <= 0)
        return false;
    const char *p = strstr(conf.dev, "iface=");
    size_t n = p ? strcspn(p + 6, ",") : 0;
    if (n > 0 && n < IF_NAMESIZE)
        snprintf(out->iface, sizeof(out->iface), "%.*s", (int)n, p + 6);
    else
        snprintf(out->iface, sizeof(out->iface), "ustack0");
    out->ip = conf.ip;
    out->prefix = conf.prefix;
    memcpy(out->ip6, conf.ip6, 16);
    out->ip6_prefix = conf.ip6_prefix;
    return true;
}

/* ---- paths ---------------------------------------------------------------------------- */

static char stackd[PATH_MAX];

const char *ustack__stackd_path(void)
{
    if (stackd[0])
        return stackd;
    const char *v = getenv("USTACK_STACKD");
    if (ustack__enabled() && conf_state > 0 && conf.stackd[0])
        v = conf.stackd;
    if (v && *v) {
        if (!realpath(v, stackd))
            snprintf(stackd, sizeof(stackd), "%s", v);
        return stackd;
    }
    Dl_info info;
    char lib[PATH_MAX];
    if (dladdr((void *)ustack__stackd_path, &info) && info.dli_fname &&
        realpath(info.dli_fname, lib)) {
        char *slash = strrchr(lib, '/');
        if (slash)
            *slash = '\0';
        snprintf(stackd, sizeof(stackd), "%.*s/ustackd", (int)(sizeof(stackd) - 9), lib);
    } else {
        snprintf(stackd, sizeof(stackd), "ustackd");
    }
    return stackd;
}

/* ---- helpers -------------------------------------------------------------------------- */

static int high_fd(int fd)
{
    /* Above 1000, where programs that dup2() onto "free" low numbers do not go. */
    int n = REAL(fcntl)(fd, F_DUPFD, 1000);
    if (n < 0)
        return fd;
    REAL(close)(fd);
    return n;
}

/* The kernel interface a vdev names ("...,iface=NAME,..."), for IP_PKTINFO's ipi_ifindex;
 * 0 when there is none (a PCI device). */
static uint32_t dev_ifindex(const char *dev)
{
    const char *p = strstr(dev, "iface=");
    if (!p)
        return 0;
    char name[IF_NAMESIZE];
    size_t n = strcspn(p + 6, ",");
    if (n == 0 || n >= sizeof(name))
        return 0;
    memcpy(name, p + 6, n);
    name[n] = 0;
    return if_nametoindex(name);
}

static uint32_t fdtab_size(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        return 65536;
    rlim_t n = rl.rlim_max;
    if (n == RLIM_INFINITY || n > (1u << 21))
        n = 1u << 21;
    if (n < rl.rlim_cur)
        n = rl.rlim_cur;
    return (uint32_t)n;
}

static int do_attach(void *base, uint64_t size, int shm_fd, int pipe_fd)
{
    struct shim_attach a = {
        .base = base,
        .size = size,
        .shm_fd = shm_fd,
        .pipe_fd = pipe_fd,
        .ip = conf.ip,
        .prefix = conf.prefix,
        .gw = conf.gw,
        .ifindex = dev_ifindex(conf.dev),
        .fdtab_size = fdtab_size(),
        .ip6_prefix = conf.ip6_prefix,
        .spare_fds = conf.spare_fds,
    };
    memcpy(a.ip6, conf.ip6, sizeof(a.ip6));
    static const uint8_t zero16[16];
    a.gw6 = memcmp(conf.gw6, zero16, sizeof(zero16)) != 0;
    return shim_attach(&a);
}

/* ---- attaching to an inherited region -------------------------------------------------- */

/* Maps the head of the region in fd (fsize bytes): everything but the sockets' rings, which
 * the client maps as sockets use them (docs/shm.md "Mapping"). The base and *mapped, or
 * MAP_FAILED with errno (EINVAL: no region's header there). The caller checks it. */
static void *map_head(int fd, uint64_t fsize, uint64_t *mapped)
{
    struct shm_hdr h;
    if (fsize < sizeof(h) || pread(fd, &h, sizeof(h), 0) != (ssize_t)sizeof(h)) {
        errno = EINVAL;
        return MAP_FAILED;
    }
    struct shm_geometry g = {h.ncores, h.nsocks, h.nreplies, h.ring_size, h.nprocs};
    uint64_t head = h.nprocs ? shm_region_head(&g) : 0;
    if (!head || head > fsize) {
        errno = EINVAL;
        return MAP_FAILED;
    }
    void *base = mmap(NULL, (size_t)head, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (base != MAP_FAILED)
        *mapped = head;
    return base;
}

static int attach_inherited(const char *shm, const char *pipe)
{
    char *end;
    long fd = strtol(shm, &end, 10);
    struct stat st;
    if (*end || fd < 0 || fstat((int)fd, &st) < 0 || st.st_size <= 0) {
        snprintf(conf_err, sizeof(conf_err), "USTACK_SHM_FD=%.32s: not an open region fd", shm);
        /* -EBADF: a number, but nothing of a region there (the image closed it). */
        return *end || fd < 0 ? -EINVAL : -EBADF;
    }
    uint64_t mapped = 0;
    void *base = map_head((int)fd, (uint64_t)st.st_size, &mapped);
    if (base == MAP_FAILED && errno == ENOMEM) {
        /* Not "not a region": the program bounds its address space (Dovecot's processes run
         * with RLIMIT_AS of 256 MiB, default_vsz_limit; vsftpd's session), docs/gaps.md. */
        snprintf(conf_err, sizeof(conf_err),
                 "USTACK_SHM_FD=%.32s: cannot map the region's head: %s; is RLIMIT_AS "
                 "too low? (USTACK_SHM_SOCKS makes it smaller)",
                 shm, strerror(ENOMEM));
        return -ENOMEM;
    }
    if (base == MAP_FAILED || shm_region_check(base, mapped, (uint64_t)st.st_size) < 0) {
        if (base != MAP_FAILED)
            munmap(base, (size_t)mapped);
        snprintf(conf_err, sizeof(conf_err), "USTACK_SHM_FD=%.32s: not a ustack region", shm);
        return -EINVAL;
    }
    if (__atomic_load_n(&shm_hdr(base)->state, __ATOMIC_ACQUIRE) != SHM_READY) {
        munmap(base, (size_t)mapped);
        snprintf(conf_err, sizeof(conf_err), "the ustackd of USTACK_SHM_FD=%.32s is gone", shm);
        return -ENETDOWN;
    }
    long pfd = pipe ? strtol(pipe, &end, 10) : -1;
    if (pfd >= 0 && REAL(fcntl)((int)pfd, F_GETFD) < 0)
        pfd = -1;
    return do_attach(base, mapped, (int)fd, (int)pfd);
}

/* ---- spawning ------------------------------------------------------------------------- */

struct ksigaction {
    void *handler;
    unsigned long flags;
    void *restorer;
    uint64_t mask;
};

/* In the grandchild, between clone and exec: raw system calls only (this is a copy of a
 * possibly multi-threaded process; no locks may be taken). */
static void child_exec(const char *path, char *const argv[], char *const envp[], const int *keep,
                       int nkeep, int out_fd)
{
    struct ksigaction dfl = {SIG_DFL, 0, NULL, 0};
    for (int sig = 1; sig < 65; sig++)
        if (sig != SIGKILL && sig != SIGSTOP)
            syscall(SYS_rt_sigaction, sig, &dfl, NULL, 8);
    uint64_t none = 0;
    syscall(SYS_rt_sigprocmask, SIG_SETMASK, &none, NULL, 8);
    int null = (int)syscall(SYS_openat, AT_FDCWD, "/dev/null", O_RDWR);
    if (null >= 0) {
        /* ustackd's output (EAL chatter, statistics) is not the application's: it goes to
         * USTACK_STACKD_LOG or nowhere. A start-up failure reaches the application through
         * hdr.errmsg, which it prints. */
        syscall(SYS_dup3, null, 0, 0);
        if (out_fd < 0) {
            syscall(SYS_dup3, null, 1, 0);
            syscall(SYS_dup3, null, 2, 0);
        }
        syscall(SYS_close, null);
    }
    if (out_fd >= 0) {
        syscall(SYS_dup3, out_fd, 1, 0);
        syscall(SYS_dup3, out_fd, 2, 0);
        syscall(SYS_close, out_fd);
    }
    /* Only the region, the pipe's read end and the wake eventfds go to ustackd: an fd of
     * the application (a pipe's write end, a listener) held by ustackd would change what
     * the application sees. keep[] is sorted. */
    unsigned from = 3;
    for (int i = 0; i < nkeep; i++) {
        if ((unsigned)keep[i] > from)
            syscall(SYS_close_range, from, (unsigned)keep[i] - 1, 0);
        from = (unsigned)keep[i] + 1;
    }
    syscall(SYS_close_range, from, ~0u, 0);
    syscall(SYS_execve, path, argv, envp);
    syscall(SYS_exit_group, 127);
}

static int spawn_stackd(const char *path, char *const argv[], char *const envp[], const int *keep,
                        int nkeep, int out_fd)
{
    /* Exit signal 0: the application never gets a SIGCHLD for the intermediate child. */
    long pid = syscall(SYS_clone, 0ul, NULL, NULL, NULL, NULL);
    if (pid < 0)
        return -errno;
    if (pid == 0) {
        syscall(SYS_setsid);
        long g = syscall(SYS_clone, (unsigned long)SIGCHLD, NULL, NULL, NULL, NULL);
        if (g == 0)
            child_exec(path, argv, envp, keep, nkeep, out_fd);
        syscall(SYS_exit_group, g < 0 ? 1 : 0);
    }
    int st;
    while (waitpid((pid_t)pid, &st, __WCLONE) < 0 && errno == EINTR)
        ;
    return 0;
}

static int cmp_int(const void *a, const void *b)
{
    return *(const int *)a - *(const int *)b;
}

/* Waits for SHM_READY / SHM_FAILED, or ustackd's death (the pipe loses its reader). */
static int wait_ready(struct shm_hdr *h, int pipe_w)
{
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        uint32_t st = __atomic_load_n(&h->state, __ATOMIC_ACQUIRE);
        if (st == SHM_READY)
            return 0;
        if (st == SHM_BUSY) {
            /* Another ustackd took the device meanwhile: the caller attaches to it. */
            snprintf(conf_err, sizeof(conf_err), "%.*s", (int)sizeof(h->errmsg), h->errmsg);
            return -EBUSY;
        }
        if (st == SHM_FAILED) {
            snprintf(conf_err, sizeof(conf_err), "%.*s", (int)sizeof(h->errmsg),
                     h->errmsg[0] ? h->errmsg : "ustackd failed to start");
            return -ENETDOWN;
        }
        struct pollfd p = {pipe_w, POLLOUT, 0};
        if (REAL(poll)(&p, 1, 0) > 0 && (p.revents & POLLERR)) {
            snprintf(conf_err, sizeof(conf_err), "ustackd (%.300s) exited before it was ready",
                     ustack__stackd_path());
            return -ENETDOWN;
        }
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (now.tv_sec - t0.tv_sec >= 30) {
            snprintf(conf_err, sizeof(conf_err), "ustackd (%.300s) not ready within 30 s",
                     ustack__stackd_path());
            return -ENETDOWN;
        }
        struct timespec ts = {0, 50 * 1000 * 1000};
        syscall(SYS_futex, &h->state, FUTEX_WAIT, st, &ts, NULL, 0);
    }
}

static int spawn(void)
{
    int rc;
    unsigned socks = conf.shm_socks, ring = conf.shm_ring;
    struct shm_geometry g = {conf.ncores, socks, 4096, ring, SHM_NPROCS};
    uint64_t size = shm_region_size(&g), head = shm_region_head(&g);
    if (!size || !head) {
        snprintf(conf_err, sizeof(conf_err), "no valid region for %u cores", conf.ncores);
        return -EINVAL;
    }
    int fd = memfd_create("ustack", 0);
    if (fd < 0 || ftruncate(fd, (off_t)size) < 0) {
        snprintf(conf_err, sizeof(conf_err), "cannot make a %llu-byte region: %s",
                 (unsigned long long)size, strerror(errno));
        if (fd >= 0)
            REAL(close)(fd);
        return -ENOMEM;
    }
    fd = high_fd(fd);
    /* The head only: the rings are mapped as sockets use them (docs/shm.md "Mapping"). */
    void *base = mmap(NULL, head, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (base == MAP_FAILED) {
        snprintf(conf_err, sizeof(conf_err), "cannot map the region: %s", strerror(errno));
        REAL(close)(fd);
        return -ENOMEM;
    }
    shm_region_init(base, &g);
    int keep[SHM_MAX_CORES + 2], nkeep = 0;
    keep[nkeep++] = fd;
    for (uint32_t c = 0; c < g.ncores; c++) {
        int e = eventfd(0, EFD_NONBLOCK);
        if (e < 0) {
            rc = -errno;
            goto fail;
        }
        e = high_fd(e);
        shm_cmdq(base, c)->wake_fd = e;
        keep[nkeep++] = e;
    }
    int p[2];
    if (pipe2(p, 0) < 0) {
        rc = -errno;
        goto fail;
    }
    int pr = high_fd(p[0]), pw = high_fd(p[1]);
    keep[nkeep++] = pr;
    qsort(keep, (size_t)nkeep, sizeof(int), cmp_int);

    char sfd[16], spfd[16];
    snprintf(sfd, sizeof(sfd), "%d", fd);
    snprintf(spfd, sizeof(spfd), "%d", pr);
    const char *path = ustack__stackd_path();
    char *argv[] = {(char *)path, "--shm-fd", sfd, "--pipe-fd", spfd, NULL};
    size_t n = 0;
    for (char **e = environ; e && *e; e++)
        n++;
    char **env = malloc((n + 1) * sizeof(*env));
    if (!env) {
        rc = -ENOMEM;
        goto fail;
    }
    size_t k = 0;
    for (char **e = environ; e && *e; e++) {
        const char *eq = strchr(*e, '=');
        size_t len = eq ? (size_t)(eq - *e) : strlen(*e);
        /* ustackd must not load this library, nor see the client's own variables. */
        if ((len == 10 && !memcmp(*e, "LD_PRELOAD", 10)) || is_client_var(*e, len))
            continue;
        env[k++] = *e;
    }
    env[k] = NULL;
    int out = -1;
    const char *log = getenv("USTACK_STACKD_LOG");
    if (log && *log)
        out = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    rc = spawn_stackd(path, argv, env, keep, nkeep, out);
    free(env);
    if (out >= 0)
        REAL(close)(out);
    REAL(close)(pr);
    if (rc < 0) {
        snprintf(conf_err, sizeof(conf_err), "cannot spawn %.300s: %s", path, strerror(-rc));
        REAL(close)(pw);
        goto fail_fds;
    }
    if ((rc = wait_ready(shm_hdr(base), pw)) < 0) {
        if (rc == -EBUSY) {
            REAL(close)(pw);
            for (uint32_t c = 0; c < g.ncores; c++)
                REAL(close)(shm_cmdq(base, c)->wake_fd);
            munmap(base, head);
            REAL(close)(fd);
            return -EBUSY;
        }
        REAL(close)(pw); /* a ustackd still starting sees EOF and exits */
        goto fail_fds;
    }
    int spid = __atomic_load_n(&shm_hdr(base)->stack_pid, __ATOMIC_ACQUIRE);
    if (spid > 0)
        prctl(PR_SET_PTRACER, (unsigned long)spid, 0, 0, 0);
    char v[16];
    snprintf(v, sizeof(v), "%d", fd);
    setenv("USTACK_SHM_FD", v, 1);
    snprintf(v, sizeof(v), "%d", pw);
    setenv("USTACK_PIPE_FD", v, 1);
    return do_attach(base, head, fd, pw);

fail:
    snprintf(conf_err, sizeof(conf_err), "cannot set up the region: %s", strerror(-rc));
fail_fds:
    for (uint32_t c = 0; c < g.ncores; c++)
        if (shm_cmdq(base, c)->wake_fd >= 0)
            REAL(close)(shm_cmdq(base, c)->wake_fd);
    munmap(base, head);
    REAL(close)(fd);
    return rc < 0 ? rc : -ENETDOWN;
}

/* ---- attaching to a running ustackd ---------------------------------------------------- */

/* Asks the ustackd listening on path for a region of our own (docs/shm.md "Start-up").
 * Returns 1 once attached, 0 if nobody answers there (no socket, refused, or hung up without
 * an answer: the caller spawns, or tries again), -errno with conf_err on a refusal. */
static int attach_socket(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof(sa.sun_path))
        return 0;
    memcpy(sa.sun_path, path, strlen(path) + 1);
    int fd = REAL(socket)(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return 0;
    if (REAL(connect)(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        int e = errno;
        REAL(close)(fd);
        if (e == EACCES || e == EPERM) {
            snprintf(conf_err, sizeof(conf_err), "%.300s: %s (cannot attach to its ustackd)", path,
                     strerror(e));
            return -EACCES;
        }
        return 0;
    }
    /* ustackd may still be starting (the EAL takes seconds): it answers once it serves. */
    struct timeval tv = {30, 0};
    REAL(setsockopt)(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    struct shm_attach_req q;
    memset(&q, 0, sizeof(q));
    q.magic = SHM_ATTACH_MAGIC;
    q.version = SHM_ATTACH_VERSION;
    q.ncores = conf.ncores;
    q.nsocks = conf.shm_socks;
    q.ring_size = conf.shm_ring;
    q.ip = conf.ip;
    q.prefix = conf.prefix;
    for (unsigned i = 0; i < conf.ncores && i < SHM_MAX_CORES; i++)
        q.cores[i] = conf.cores[i];
    snprintf(q.dev, sizeof(q.dev), "%s", conf.dev);
    if (REAL(send)(fd, &q, sizeof(q), MSG_NOSIGNAL) != (ssize_t)sizeof(q)) {
        REAL(close)(fd);
        return 0;
    }
    struct shm_attach_rep rep;
    union {
        char buf[CMSG_SPACE(sizeof(int) * (SHM_MAX_CORES + 2))];
        struct cmsghdr align;
    } u;
    struct iovec iov = {&rep, sizeof(rep)};
    struct msghdr m = {
        .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof(u.buf)};
    ssize_t n = REAL(recvmsg)(fd, &m, 0);
    REAL(close)(fd);
    int fds[SHM_MAX_CORES + 2];
    unsigned nfds = 0;
    for (struct cmsghdr *cm = n > 0 ? CMSG_FIRSTHDR(&m) : NULL; cm; cm = CMSG_NXTHDR(&m, cm))
        if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS) {
            unsigned k = (unsigned)((cm->cmsg_len - CMSG_LEN(0)) / sizeof(int));
            for (unsigned j = 0; j < k; j++) {
                int f;
                memcpy(&f, CMSG_DATA(cm) + j * sizeof(int), sizeof(int));
                if (nfds < SHM_MAX_CORES + 2)
                    fds[nfds++] = f;
                else
                    REAL(close)(f);
            }
        }
    int rc = 0;
    if (n != (ssize_t)sizeof(rep) || rep.magic != SHM_ATTACH_MAGIC) {
        rc = 0; /* hung up (a ustackd exiting): nobody answered */
    } else if (rep.status < 0) {
        rep.err[sizeof(rep.err) - 1] = 0;
        snprintf(conf_err, sizeof(conf_err), "%s", rep.err);
        rc = rep.status;
    } else if (nfds != 2 + conf.ncores || (m.msg_flags & MSG_CTRUNC)) {
        snprintf(conf_err, sizeof(conf_err), "%.300s: ustackd sent %u descriptors, not %u", path,
                 nfds, 2 + conf.ncores);
        rc = -EPROTO;
    }
    if (rc <= 0 && !(rc == 0 && n == (ssize_t)sizeof(rep) && rep.magic == SHM_ATTACH_MAGIC &&
                     rep.status == 0)) {
        for (unsigned j = 0; j < nfds; j++)
            REAL(close)(fds[j]);
        return rc;
    }
    /* Ours now: inherited by our descendants as a spawner's are (no CLOEXEC), above 1000. */
    for (unsigned j = 0; j < nfds; j++) {
        REAL(fcntl)(fds[j], F_SETFD, 0);
        fds[j] = high_fd(fds[j]);
    }
    struct stat st;
    void *base = MAP_FAILED;
    uint64_t mapped = 0;
    if (fstat(fds[0], &st) == 0 && st.st_size > 0)
        base = map_head(fds[0], (uint64_t)st.st_size, &mapped);
    if (base == MAP_FAILED || shm_region_check(base, mapped, (uint64_t)st.st_size) < 0 ||
        shm_hdr(base)->ncores != conf.ncores ||
        __atomic_load_n(&shm_hdr(base)->state, __ATOMIC_ACQUIRE) != SHM_READY) {
        if (base != MAP_FAILED)
            munmap(base, (size_t)mapped);
        for (unsigned j = 0; j < nfds; j++)
            REAL(close)(fds[j]);
        snprintf(conf_err, sizeof(conf_err), "%.300s: ustackd sent no usable region", path);
        return -EPROTO;
    }
    /* The wake eventfds as numbered here (ustackd took its own numbers at creation). */
    for (uint32_t c = 0; c < conf.ncores; c++)
        shm_cmdq(base, c)->wake_fd = fds[2 + c];
    int spid = __atomic_load_n(&shm_hdr(base)->stack_pid, __ATOMIC_ACQUIRE);
    if (spid > 0)
        prctl(PR_SET_PTRACER, (unsigned long)spid, 0, 0, 0);
    char v[16];
    snprintf(v, sizeof(v), "%d", fds[0]);
    setenv("USTACK_SHM_FD", v, 1);
    snprintf(v, sizeof(v), "%d", fds[1]);
    setenv("USTACK_PIPE_FD", v, 1);
    rc = do_attach(base, mapped, fds[0], fds[1]);
    return rc < 0 ? rc : 1;
}

/* A process with no inherited region: attach to the ustackd serving our device (or the one
 * USTACK_ATTACH names), else spawn one. Two processes spawning at once: the second's ustackd
 * finds the device taken (SHM_BUSY), and the second attaches to the first's instead. The
 * holder binds its attach socket right after taking the device lock, before its slow EAL
 * start (during which a connection waits for the answer, up to 30 s), so nobody answering
 * for 3 s means a holder that takes no clients (a ustackd serving built-in services only):
 * then the busy message is the error. */
static int attach_or_spawn(void)
{
    const char *ex = getenv("USTACK_ATTACH");
    char path[108];
    if (ex && *ex) {
        int rc = attach_socket(ex);
        if (rc == 0)
            snprintf(conf_err, sizeof(conf_err), "USTACK_ATTACH=%.300s: no ustackd answers there",
                     ex);
        return rc > 0 ? 0 : rc < 0 ? rc : -ENETDOWN;
    }
    bool can_attach = shm_run_path(conf.dev, ".sock", path, sizeof(path)) == 0;
    if (can_attach) {
        int rc = attach_socket(path);
        if (rc)
            return rc > 0 ? 0 : rc;
    }
    int rc = spawn();
    if (rc != -EBUSY)
        return rc;
    char busy[512];
    snprintf(busy, sizeof(busy), "%s", conf_err);
    struct timespec t0, now;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    do {
        if (can_attach && (rc = attach_socket(path)) != 0)
            return rc > 0 ? 0 : rc;
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
        clock_gettime(CLOCK_MONOTONIC, &now);
    } while (can_attach && now.tv_sec - t0.tv_sec < 3);
    /* The holder takes no attaching clients (a ustackd serving built-in services only). */
    snprintf(conf_err, sizeof(conf_err), "%s", busy);
    return -ENETDOWN;
}

static pthread_mutex_t attach_lock = PTHREAD_MUTEX_INITIALIZER;
static int attach_state; /* 0 not yet, 1 attached, -errno failed */

/* Attaches to a ustackd that is already running (the inherited region, USTACK_ATTACH, or
 * the device's attach socket), never spawning one; a failure is not remembered, so a later
 * socket() may still spawn. 0 when attached. For a process that receives a ustack socket
 * over a Unix socket before it made one of its own. */
int ustack__attach_running(void)
{
    if (__atomic_load_n(&attach_state, __ATOMIC_ACQUIRE) > 0)
        return 0;
    pthread_mutex_lock(&attach_lock);
    int rc = attach_state > 0 ? 0 : -ENETDOWN;
    if (!attach_state) {
        ustack__init();
        if (ustack__enabled() && conf_state >= 0) {
            const char *shm = getenv("USTACK_SHM_FD"), *ex = getenv("USTACK_ATTACH");
            char path[108];
            int r;
            if (shm)
                r = attach_inherited(shm, getenv("USTACK_PIPE_FD")) == 0 ? 1 : -1;
            else if (ex && *ex)
                r = attach_socket(ex);
            else
                r = shm_run_path(conf.dev, ".sock", path, sizeof(path)) == 0 ? attach_socket(path)
                                                                             : 0;
            if (r > 0) {
                __atomic_store_n(&attach_state, 1, __ATOMIC_RELEASE);
                rc = 0;
            }
        }
    }
    pthread_mutex_unlock(&attach_lock);
    return rc;
}

/* Set while this thread attaches: the spawn's own clone comes through the syscall hook, and
 * must not try to attach again (preload.c attach_for_child). */
static __thread bool attaching;

bool ustack__attaching(void)
{
    return attaching;
}

int ustack__attach(void)
{
    int st = __atomic_load_n(&attach_state, __ATOMIC_ACQUIRE);
    if (st)
        return st < 0 ? st : 0;
    pthread_mutex_lock(&attach_lock);
    attaching = true;
    if (!attach_state) {
        ustack__init();
        int rc;
        if (!ustack__enabled() || conf_state < 0) {
            rc = -EINVAL;
        } else {
            const char *shm = getenv("USTACK_SHM_FD");
            rc = shm ? attach_inherited(shm, getenv("USTACK_PIPE_FD")) : attach_or_spawn();
            if (shm && rc == -EBADF) {
                /* The region's fd was inherited but is gone: the image closed it before its
                 * first socket (closefrom(3) in a daemon, Erlang's erl_child_setup), while
                 * the close hooks could not know it yet. Attach as a process of its own
                 * (the device's attach socket) instead of failing every socket; nothing
                 * is wrong, so only USTACK_LOG=info says so. */
                shim_log(SHIM_LOG_INFO, "%s; attaching on its own", conf_err);
                unsetenv("USTACK_SHM_FD");
                unsetenv("USTACK_PIPE_FD");
                rc = attach_or_spawn();
            }
        }
        if (rc < 0) {
            /* Said once; every later socket() fails the same way. */
            if (shim_first_time("attach"))
                shim_log(SHIM_LOG_ERROR, "%s", conf_err);
            if (rc != -EINVAL)
                rc = -ENETDOWN;
        }
        __atomic_store_n(&attach_state, rc < 0 ? rc : 1, __ATOMIC_RELEASE);
    }
    st = attach_state;
    attaching = false;
    pthread_mutex_unlock(&attach_lock);
    return st < 0 ? st : 0;
}

/* ---- exec ----------------------------------------------------------------------------- */

char **ustack__exec_env(char *const envp[], const char *fdsvar)
{
    int shm_fd, pipe_fd;
    shim_region_fds(&shm_fd, &pipe_fd);
    size_t n = 0;
    for (char *const *e = envp; e && *e; e++)
        n++;
    char **env = malloc((n + 4) * sizeof(*env) + 64);
    if (!env)
        return NULL;
    char *buf = (char *)(env + n + 4);
    size_t k = 0;
    for (char *const *e = envp; e && *e; e++) {
        const char *eq = strchr(*e, '=');
        size_t len = eq ? (size_t)(eq - *e) : strlen(*e);
        if ((len == 13 && !memcmp(*e, "USTACK_SHM_FD", 13)) ||
            (len == 14 && !memcmp(*e, "USTACK_PIPE_FD", 14)) ||
            (len == 10 && !memcmp(*e, "USTACK_FDS", 10)))
            continue;
        env[k++] = *e;
    }
    if (shm_fd >= 0) {
        int m = snprintf(buf, 32, "USTACK_SHM_FD=%d", shm_fd);
        env[k++] = buf;
        buf += m + 1;
    }
    if (pipe_fd >= 0) {
        snprintf(buf, 32, "USTACK_PIPE_FD=%d", pipe_fd);
        env[k++] = buf;
    }
    if (fdsvar && *fdsvar)
        env[k++] = (char *)fdsvar;
    env[k] = NULL;
    return env;
}

void ustack__free_env(char **env)
{
    free(env);
}

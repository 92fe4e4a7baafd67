/*
 * eal.c - starting DPDK's EAL from ustack's configuration, finding the port, and the
 * back-to-back ring ports the tests use.
 */
#include <ctype.h>
#include <dirent.h>
#include <signal.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <ftw.h>
#include <limits.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_eth_ring.h>
#include <rte_ethdev.h>
#include <rte_lcore.h>
#include <rte_ring.h>

#include "dio_int.h"
#include "log.h"
#include "shm.h"

#define MAX_ARGS 64

/* "0000:01:00.0" or "01:00.0", optionally followed by ",devargs". */
static bool is_pci(const char *dev)
{
    unsigned a, b, c, d;
    char tail = 0;
    int n = 0;
    if (sscanf(dev, "%4x:%2x:%2x.%1u%n", &a, &b, &c, &d, &n) == 4 ||
        sscanf(dev, "%2x:%2x.%1u%n", &b, &c, &d, &n) == 3) {
        tail = dev[n];
        return tail == 0 || tail == ',';
    }
    return false;
}

/* Hugepages are used when some are free and a hugetlbfs is mounted for EAL to find. */
static bool hugepages_usable(void)
{
    FILE *f = fopen("/proc/meminfo", "r");
    long free_pages = 0;
    char line[128];
    if (!f)
        return false;
    while (fgets(line, sizeof(line), f))
        if (sscanf(line, "HugePages_Free: %ld", &free_pages) == 1)
            break;
    fclose(f);
    if (free_pages <= 0)
        return false;
    f = fopen("/proc/mounts", "r");
    bool mounted = false;
    if (!f)
        return false;
    while (fgets(line, sizeof(line), f))
        if (strstr(line, " hugetlbfs "))
            mounted = true;
    fclose(f);
    return mounted;
}

static int log_level(int lvl)
{
    static const int map[] = {4, 5, 7, 8}; /* RTE_LOG_ERR, WARNING, INFO, DEBUG */
    return (lvl >= 0 && lvl <= 3) ? map[lvl] : 5;
}

int dio_eal_init_args(int argc, char **argv, char *err, size_t errlen)
{
    if (rte_eal_init(argc, argv) < 0) {
        /* The EAL's own lines went to ustackd's stderr: USTACK_STACKD_LOG when spawned. A
         * process that dropped root (named -u, postgres) spawns a ustackd that cannot
         * open the device: say so, with the way out. */
        if (geteuid() != 0)
            dio__err(err, errlen,
                     "DPDK EAL start failed: %s; ustackd runs as uid %u, not root (start a "
                     "root `ustackd --standalone` and attach with USTACK_ATTACH, "
                     "docs/shm.md); the EAL's lines are in ustackd's stderr "
                     "(USTACK_STACKD_LOG)",
                     rte_strerror(rte_errno), (unsigned)geteuid());
        else
            dio__err(err, errlen,
                     "DPDK EAL start failed: %s (the EAL's lines are in ustackd's stderr: "
                     "above, or USTACK_STACKD_LOG)",
                     rte_strerror(rte_errno));
        return -(rte_errno ? rte_errno : EINVAL);
    }
    return 0;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

void dio_eal_cleanup(void)
{
    /* EAL leaves its runtime directory (config, fbarrays, sockets: megabytes) behind;
     * ours is per process, so remove it. */
    char dir[PATH_MAX];
    snprintf(dir, sizeof(dir), "%s", rte_eal_get_runtime_dir());
    rte_eal_cleanup();
    if (strstr(dir, "/ustack-"))
        nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static char lock_path[768];
static int lock_fd = -1;

#define LOCK_STOPPING      "stopping"
#define LOCK_WAIT_STOPPING 15 /* seconds: a stopping holder closes its connections first */

static void unlink_lock(void)
{
    /* Unlinked while still locked, so a newcomer that opened it before the unlink finds a
     * stale inode and retries (see the loop below). */
    if (lock_path[0])
        unlink(lock_path);
}

/* One ustackd per device: two stacks on one port would both answer (one with RSTs for
 * the other's connections). The lock is a file in /run/ustack named after the device and
 * the network namespace (the same interface name in two namespaces is two devices), held
 * with flock for the process's life; the holder's pid is written in it for the message. */
int dio_dev_lock(const char *dev, char *err, size_t errlen)
{
    static bool held;
    if (held)
        return 0; /* ustackd takes it early, then dio_eal_init asks again */
    char path[768];
    mkdir("/run/ustack", 0755);
    if (shm_run_path(dev, ".lock", path, sizeof(path)))
        return 0;
    int fd;
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    char waited_for[32] = "";
    for (int tries = 0;; tries++) {
        fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
        if (fd < 0) {
            /* Without /run (not root?) there is nothing to coordinate through: go on. */
            return 0;
        }
        if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
            /* A holder that is stopping (its last client went; a next one spawned us) gives
             * the device back soon: wait for it rather than fail that client. */
            char st[64] = "";
            ssize_t k = pread(fd, st, sizeof(st) - 1, 0);
            st[k > 0 ? k : 0] = 0;
            clock_gettime(CLOCK_MONOTONIC, &t);
            if (!strstr(st, LOCK_STOPPING) || t.tv_sec - t0.tv_sec >= LOCK_WAIT_STOPPING)
                break;
            snprintf(waited_for, sizeof(waited_for), "%.*s", (int)strcspn(st, " \n"), st);
            close(fd);
            usleep(20 * 1000);
            tries = 0;
            continue;
        }
        /* The holder unlinks the file at exit: a lock on a file no longer at the path
         * locks nothing, so take it again on the current file. */
        struct stat a, b;
        clock_gettime(CLOCK_MONOTONIC, &t);
        if (fstat(fd, &a) == 0 && stat(path, &b) == 0 && a.st_ino == b.st_ino) {
            snprintf(lock_path, sizeof(lock_path), "%s", path);
            atexit(unlink_lock);
            held = true;
            char pid[32];
            int len = snprintf(pid, sizeof(pid), "%ld\n", (long)getpid());
            if (ftruncate(fd, 0) == 0 && pwrite(fd, pid, (size_t)len, 0) != len) {
                /* The pid is only for the message. */
            }
            lock_fd = fd;
            long waited = (t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000;
            if (waited_for[0])
                SHIM_INFO("USTACK_DEV=%s: waited %ld ms for the stopping ustackd pid %s", dev,
                          waited, waited_for);
            return 0; /* fd stays open (and locked) until exit */
        }
        close(fd);
        if (tries > 8)
            return 0;
    }
    /* Held by another ustackd (the loop breaks only when flock fails), running or (after
     * LOCK_WAIT_STOPPING) still stopping. */
    char pid[32] = "?";
    ssize_t k = pread(fd, pid, sizeof(pid) - 1, 0);
    pid[k > 0 ? k : 0] = 0;
    pid[strcspn(pid, "\n ")] = 0;
    close(fd);
    dio__err(err, errlen, "USTACK_DEV=%s: the device is in use by ustackd pid %s", dev, pid);
    return -EBUSY;
}

void dio_dev_lock_stopping(void)
{
    if (lock_fd < 0)
        return;
    char line[64];
    int len = snprintf(line, sizeof(line), "%ld " LOCK_STOPPING "\n", (long)getpid());
    if (pwrite(lock_fd, line, (size_t)len, 0) != len) {
        /* Then a newcomer fails at once, as before. */
    }
}

/* Where EAL puts runtime directories: /var/run/dpdk for root, else $XDG_RUNTIME_DIR/dpdk. */
static const char *runtime_base(char *buf, size_t len)
{
    if (getuid() == 0)
        return "/var/run/dpdk";
    const char *x = getenv("XDG_RUNTIME_DIR");
    if (!x)
        return NULL;
    snprintf(buf, len, "%s/dpdk", x);
    return buf;
}

/* Runtime directories of ustackd processes that died without cleaning up (killed): ours
 * are named ustack-<pid>, so a directory whose process is gone is safe to remove. (Named
 * instances, ustack-<name>, always contain a letter and are reused by the next start.) */
static void remove_stale_runtime_dirs(void)
{
    char alt[PATH_MAX];
    const char *base = runtime_base(alt, sizeof(alt));
    if (!base)
        return;
    DIR *d = opendir(base);
    if (!d)
        return;
    struct dirent *de;
    while ((de = readdir(d))) {
        char *end;
        if (strncmp(de->d_name, "ustack-", 7) != 0)
            continue;
        long pid = strtol(de->d_name + 7, &end, 10);
        if (*end || pid <= 0 || (kill((pid_t)pid, 0) == 0 || errno != ESRCH))
            continue;
        char path[PATH_MAX + 300];
        snprintf(path, sizeof(path), "%s/%s", base, de->d_name);
        nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    }
    closedir(d);
}

/* A named instance whose name is taken: EAL's primary process holds a write lock on the
 * runtime directory's "config" file for its life, and EAL would only say "Is another
 * primary process running?"; say which. */
static int name_in_use(const char *name, char *err, size_t errlen)
{
    char alt[PATH_MAX], path[PATH_MAX + 64];
    const char *base = runtime_base(alt, sizeof(alt));
    if (!base)
        return 0;
    snprintf(path, sizeof(path), "%s/ustack-%s/config", base, name);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0};
    int held = fcntl(fd, F_GETLK, &fl) == 0 && fl.l_type != F_UNLCK;
    close(fd);
    if (!held)
        return 0;
    dio__err(err, errlen, "USTACK_NAME=%s: the name is in use by ustackd pid %ld", name,
             (long)fl.l_pid);
    return -EBUSY;
}

int dio_eal_init(const struct shim_conf *c, const char *prog, unsigned lcores[DIO_MAX_CORES],
                 char *err, size_t errlen)
{
    static char store[4096];
    static char *argv[MAX_ARGS + 1];
    char *p = store, *end = store + sizeof(store);
    int argc = 0;

#define ADD(...)                                                                                   \
    do {                                                                                           \
        int n_ = snprintf(p, (size_t)(end - p), __VA_ARGS__);                                      \
        if (n_ < 0 || n_ >= end - p || argc >= MAX_ARGS) {                                         \
            dio__err(err, errlen, "USTACK_EAL: too many EAL arguments");                           \
            return -E2BIG;                                                                         \
        }                                                                                          \
        argv[argc++] = p;                                                                          \
        p += n_ + 1;                                                                               \
    } while (0)

    if (c->dev[0] == 0) {
        dio__err(err, errlen,
                 "USTACK_DEV is not set (expected a PCI address or a DPDK vdev "
                 "string such as net_af_xdp0,iface=eth1)");
        return -EINVAL;
    }
    if (c->ip == 0) {
        dio__err(err, errlen, "USTACK_IP is not set (expected a.b.c.d/prefix)");
        return -EINVAL;
    }
    if (c->ncores + 1 > RTE_MAX_LCORE || c->ncores > DIO_MAX_CORES) {
        dio__err(err, errlen, "USTACK_CORES: too many cores (at most %d)", DIO_MAX_CORES);
        return -EINVAL;
    }
    int lrc = dio_dev_lock(c->dev, err, errlen);
    if (lrc)
        return lrc;
    remove_stale_runtime_dirs();
    if (c->name[0] && (lrc = name_in_use(c->name, err, errlen)) != 0)
        return lrc;
    ADD("%s", prog);
    /* Each process its own runtime directory, so two ustackd never share EAL state; its
     * name is how tools find our telemetry socket (docs/observability.md). */
    if (c->name[0])
        ADD("--file-prefix=ustack-%s", c->name);
    else
        ADD("--file-prefix=ustack-%ld", (long)getpid());
    /* lcore 0 is the control thread and may run on any stack CPU; lcore k (k >= 1) is
     * stack core k-1, pinned to its CPU. */
    char cpus[512], *q = cpus;
    for (unsigned i = 0; i < c->ncores; i++)
        q += snprintf(q, sizeof(cpus) - (size_t)(q - cpus), "%s%u", i ? "," : "", c->cores[i]);
    char lc[1024];
    int n = snprintf(lc, sizeof(lc), "--lcores=0@(%s)", cpus);
    for (unsigned i = 0; i < c->ncores; i++) {
        n += snprintf(lc + n, sizeof(lc) - (size_t)n, ",%u@%u", i + 1, c->cores[i]);
        lcores[i] = i + 1;
    }
    ADD("%s", lc);
    ADD("--main-lcore=0");
    bool huge = c->huge == 1 || (c->huge == -1 && hugepages_usable());
    if (!huge) {
        /* Memory for the mbuf pools (about 2.3 KiB per mbuf) plus rings and slack. */
        unsigned long mb = 128 + (unsigned long)c->ncores * c->mbufs * 3 / 1024 +
                           (c->mtu > 1500 ? (unsigned long)c->ncores * c->mbufs * 8 / 1024 : 0);
        ADD("--no-huge");
        ADD("-m");
        ADD("%lu", mb);
    }
    if (is_pci(c->dev)) {
        ADD("-a");
        ADD("%s", c->dev);
    } else {
        ADD("--no-pci");
        ADD("--vdev=%s%s", c->dev, dio__vdev_defaults(c->dev));
    }
    ADD("--log-level=%d", log_level(c->log_level));
    /* USTACK_EAL last, so it can override what we chose. */
    char extra[sizeof(c->eal)];
    snprintf(extra, sizeof(extra), "%s", c->eal);
    for (char *save = NULL, *tok = strtok_r(extra, " \t", &save); tok;
         tok = strtok_r(NULL, " \t", &save))
        ADD("%s", tok);
#undef ADD
    argv[argc] = NULL;
    if (c->log_level >= SHIM_LOG_DEBUG) {
        char line[400];
        size_t used = 0;
        line[0] = '\0';
        for (int i = 1; i < argc && used < sizeof(line); i++)
            used += (size_t)snprintf(line + used, sizeof(line) - used, " %s", argv[i]);
        SHIM_DEBUG("EAL arguments:%s", line);
    }
    int rc = dio_eal_init_args(argc, argv, err, errlen);
    if (rc) {
        char why[160];
        snprintf(why, sizeof(why), "%s", err);
        dio__err(err, errlen, "USTACK_DEV=%s USTACK_CORES=%s: %s", c->dev, cpus, why);
    }
    return rc;
}

const char *dio__vdev_defaults(const char *dev)
{
    /* AF_PACKET's default ring (512 frames) overflows under a few hundred connections'
     * bursts, and every overflow becomes a retransmission timeout at the peer; 4096 frames
     * (8 MiB per queue) unless the user chose a size. */
    if (strncmp(dev, "net_af_packet", 13) == 0 && !strstr(dev, "framecnt="))
        return ",framecnt=4096";
    /* AF_XDP's preferred busy polling (the PMD's busy_budget, 64 by default) makes every
     * empty receive poll a recvfrom; a stack core that shares its CPU with the
     * applications does better leaving the queue to the kernel's NAPI (docs/io.md). */
    if (strncmp(dev, "net_af_xdp", 10) == 0 && !strstr(dev, "busy_budget="))
        return ",busy_budget=0";
    return "";
}

int dio_port_find(const char *dev, uint16_t *port_id, char *err, size_t errlen)
{
    char name[RTE_ETH_NAME_MAX_LEN];
    size_t n = strcspn(dev, ",");
    if (n >= sizeof(name) - 5) {
        dio__err(err, errlen, "USTACK_DEV=%s: device name too long", dev);
        return -EINVAL;
    }
    memcpy(name, dev, n);
    name[n] = 0;
    if (rte_eth_dev_get_port_by_name(name, port_id) == 0)
        return 0;
    if (is_pci(dev) && strchr(name, ':') == strrchr(name, ':')) {
        /* DPDK names PCI ports with the domain: 01:00.0 is 0000:01:00.0. */
        char full[RTE_ETH_NAME_MAX_LEN + 8];
        snprintf(full, sizeof(full), "0000:%s", name);
        if (rte_eth_dev_get_port_by_name(full, port_id) == 0)
            return 0;
    }
    dio__err(err, errlen,
             "USTACK_DEV=%s: DPDK could not open this device (no port named %s after probing; "
             "see the EAL lines above: is the interface present, the PCI device bound to a "
             "DPDK-capable driver, and are we root?)",
             dev, name);
    return -ENODEV;
}

int dio_ring_pair(const char *name, unsigned nq, uint16_t *a, uint16_t *b, char *err, size_t errlen)
{
    struct rte_ring *ab[RTE_MAX_QUEUES_PER_PORT], *ba[RTE_MAX_QUEUES_PER_PORT];
    char rn[RTE_RING_NAMESIZE];
    if (nq == 0 || nq > 16) {
        dio__err(err, errlen, "ring pair %s: 1..16 queues", name);
        return -EINVAL;
    }
    for (unsigned i = 0; i < nq; i++) {
        snprintf(rn, sizeof(rn), "%s_ab%u", name, i);
        ab[i] = rte_ring_create(rn, 2048, (int)rte_socket_id(), RING_F_SP_ENQ | RING_F_SC_DEQ);
        snprintf(rn, sizeof(rn), "%s_ba%u", name, i);
        ba[i] = rte_ring_create(rn, 2048, (int)rte_socket_id(), RING_F_SP_ENQ | RING_F_SC_DEQ);
        if (!ab[i] || !ba[i]) {
            dio__err(err, errlen, "ring pair %s: %s", name, rte_strerror(rte_errno));
            return -ENOMEM;
        }
    }
    char pn[64];
    snprintf(pn, sizeof(pn), "%s_a", name);
    int pa = rte_eth_from_rings(pn, ba, nq, ab, nq, rte_socket_id());
    snprintf(pn, sizeof(pn), "%s_b", name);
    int pb = rte_eth_from_rings(pn, ab, nq, ba, nq, rte_socket_id());
    if (pa < 0 || pb < 0) {
        dio__err(err, errlen, "ring pair %s: rte_eth_from_rings: %s", name,
                 rte_strerror(rte_errno));
        return -ENODEV;
    }
    *a = (uint16_t)pa;
    *b = (uint16_t)pb;
    return 0;
}

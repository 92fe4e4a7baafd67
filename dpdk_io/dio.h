/*
 * dio.h - ustack's packet I/O layer and per-core runtime on DPDK.
 *
 * A dio_stack is one DPDK port served by N stack cores. Each core is an EAL lcore pinned
 * to one CPU that owns one protocol engine (stack/), at most one RX/TX queue pair of the
 * port, a steering ring, and its connections and timers. Its loop is: RX burst -> steer
 * (a frame whose connection another core owns is passed to that core) -> engine input ->
 * application hook -> timers -> TX burst; it spins while there is work and sleeps when
 * idle (see docs/io.md).
 *
 * Which core owns a connection is decided by one symmetric Toeplitz hash of the 4-tuple
 * and one redirection table, both known in software. Where the device does RSS it is
 * programmed with the same key and table, so frames normally arrive on the owner already;
 * where it does not, or has fewer queues than there are cores, the software steering
 * makes up the difference. Active opens pick a local port that hashes to the connecting
 * core (stk_config.port_ok).
 *
 * This is the only code in ustack that includes DPDK headers; this header itself does not,
 * so ustackd's main and the tests need only the names declared here.
 */
#ifndef USTACK_DIO_H
#define USTACK_DIO_H

#include <stdint.h>
#include <stdio.h>

#include "conf.h"
#include "stk.h"

#define DIO_MAX_CORES 64

struct dio_stack;
struct dio_core;

/* What runs on every stack core besides the engine: an application (the built-in
 * services, the shared-memory request handler, a test client). All hooks run on the
 * core's own thread and may call the stk_* API on dio_core_engine(c). */
struct dio_app {
    void *ctx;
    /* After the core's engine exists; nonzero fails the stack's start. */
    int (*init)(void *ctx, struct dio_core *c, stk_time_t now);
    /* Every loop iteration; returns how much work it did (0 lets the core go idle). */
    unsigned (*poll)(void *ctx, struct dio_core *c, stk_time_t now);
    /* A socket's readiness may have changed (the engine's on_event). */
    void (*event)(void *ctx, struct dio_core *c, int sd, void *user, uint32_t events);
    /* Optional (the engine's app_idle): 1 when the application holds nothing unread and
     * nothing unsent on the socket, so that it may be waiting for the peer; 2 when it is
     * also waiting to read; 0 otherwise. */
    int (*idle)(void *ctx, struct dio_core *c, int sd, void *user);
    /* The stack is stopping: close what is open (the engine keeps running briefly so that
     * FINs and RSTs go out). */
    void (*fini)(void *ctx, struct dio_core *c, stk_time_t now);
    /* The core is about to sleep: return nonzero if work is pending (then it does not).
     * An app with producers in other threads or processes publishes "asleep" here (and
     * re-checks its queues after), and clears it in sleep_done. */
    int (*sleep_prepare)(void *ctx, struct dio_core *c);
    void (*sleep_done)(void *ctx, struct dio_core *c);
};

struct dio_stack_conf {
    const struct shim_conf *conf; /* ip/prefix/gw/mac/mtu, tuning and idle settings */
    uint16_t port_id;
    unsigned ncores;
    unsigned lcores[DIO_MAX_CORES]; /* the EAL lcore of each stack core */
    struct dio_app app;
};

/* Per-core I/O counters (the engine has its own, see stk_counters). */
/* clang-format off */
#define DIO_COUNTERS(X) \
    X(rx_pkts) \
    X(rx_bursts) \
    X(rx_steered) \
    X(rx_steered_in) \
    X(rx_drop_oversize) \
    X(rx_drop_steer) \
    X(rx_arp_copies) \
    X(rx_reasm_steered) \
    X(rx_backlogged) \
    X(rx_backlog_full) \
    X(tx_pkts) \
    X(tx_bursts) \
    X(tx_forwarded) \
    X(tx_drop_nombuf) \
    X(tx_drop_full) \
    X(tx_tso) \
    X(sleeps) \
    X(wakeups) \
    X(rx_wakeups) \
    X(yields) \
    X(loop_stalls) \
    X(loop_stall_us) \
    X(pcap_frames) \
    X(pcap_bytes) \
    X(pcap_dropped)
/* clang-format on */

struct dio_counters {
#define DIO_CTR_FIELD(n) uint64_t n;
    DIO_COUNTERS(DIO_CTR_FIELD)
#undef DIO_CTR_FIELD
};

/* --- process set-up ------------------------------------------------------------------ */

/* Starts DPDK's EAL for ustackd from the configuration: the device (a PCI address becomes
 * an allow-list entry, anything else a --vdev), hugepages if reserved (else --no-huge),
 * a per-process --file-prefix, and one lcore per USTACK_CORES entry; lcore 0 is the
 * control thread (allowed on every stack CPU) and lcores 1..N the stack cores, returned in
 * lcores[]. Returns 0 or -errno with one line in err. */
int dio_eal_init(const struct shim_conf *c, const char *prog, unsigned lcores[DIO_MAX_CORES],
                 char *err, size_t errlen);

/* Takes the one-ustackd-per-device lock (dio_eal_init does): -EBUSY, naming the holder's
 * pid in err, when another ustackd serves the device in this network namespace. */
int dio_dev_lock(const char *dev, char *err, size_t errlen);
/* This ustackd is stopping: a ustackd started for the same device meanwhile waits for the
 * device (up to 15 s) instead of failing at once. */
void dio_dev_lock_stopping(void);

/* Starts the EAL with explicit arguments (tests). */
int dio_eal_init_args(int argc, char **argv, char *err, size_t errlen);
void dio_eal_cleanup(void);

/* The port a USTACK_DEV string names, once the EAL has probed it. */
int dio_port_find(const char *dev, uint16_t *port_id, char *err, size_t errlen);

/* Two ports joined back to back by rte_rings, nq queue pairs each: what one sends on queue
 * i the other receives on queue i (tests: two stacks in one process). No RSS, no offloads. */
int dio_ring_pair(const char *name, unsigned nq, uint16_t *a, uint16_t *b, char *err,
                  size_t errlen);

/* --- stacks ---------------------------------------------------------------------------- */

/* The host's ISN key (docs/architecture.md "ISNs and timestamps across instances"): 16
 * random bytes in the file at path (DIO_ISN_KEY_PATH), made by the first ustackd after boot
 * (/run is emptied at boot) and read by every later one, so that their ISNs and TCP
 * timestamps continue each other's. The file must be a regular file of 16 bytes, owned by
 * this user and private to it (mode 0600 or stricter). 0: key read or made; -errno: there
 * is none to use (the stack then keys by its own random secret). */
#define DIO_ISN_KEY_PATH "/run/ustack/isn.key"
int dio_host_isn_key(const char *path, uint8_t key[16]);

/* Configures the port (queues, RSS, offloads, MTU, mbuf pools) and starts it. */
int dio_stack_create(const struct dio_stack_conf *sc, struct dio_stack **out, char *err,
                     size_t errlen);
/* Launches the cores and waits (bounded) until every engine is up. */
int dio_stack_start(struct dio_stack *s, char *err, size_t errlen);
/* Asks every core to stop: app fini, then at most grace_ms of engine time to flush. */
void dio_stack_stop(struct dio_stack *s, unsigned grace_ms);
/* Stops the port and frees everything; the stack must be stopped. */
void dio_stack_destroy(struct dio_stack *s);

unsigned dio_stack_ncores(const struct dio_stack *s);
/* A consistent copy of one core's counters, taken by the core itself (bounded wait; falls
 * back to -ETIMEDOUT if the core does not answer). */
int dio_stack_counters(struct dio_stack *s, unsigned core, struct stk_counters *engine,
                       struct dio_counters *io);
/* Prints "<prefix> core=<i> name=value ..." for every core (nonzero counters only). */
void dio_stack_print_stats(struct dio_stack *s, FILE *f, const char *prefix);
/* Runs fn(c, arg) on stack core `core`'s own thread, between two iterations of its loop,
 * and waits for it: the way other threads read what a core owns (its engine). Calls are
 * serialized. Returns 0 once fn has run, -ETIMEDOUT if the core did not take it within
 * timeout_ms (then fn never runs), -ESRCH if the core is not running. fn must be short. */
int dio_stack_run_on(struct dio_stack *s, unsigned core, void (*fn)(struct dio_core *c, void *arg),
                     void *arg, unsigned timeout_ms);
/* A short description of the port set-up (driver, queues, RSS, offloads), one line. */
const char *dio_stack_describe(const struct dio_stack *s);

/* --- on a stack core ---------------------------------------------------------------- */

struct stk_engine *dio_core_engine(struct dio_core *c);
unsigned dio_core_index(const struct dio_core *c);
/* Per-core application state, set by the app's init. */
void dio_core_set_app_data(struct dio_core *c, void *p);
void *dio_core_app_data(struct dio_core *c);

/* Adds an eventfd that wakes this core from its idle sleep (the core drains it). Call on the
 * core's own thread (the app's init, or a function run through dio_stack_run_on). */
int dio_core_add_wake_fd(struct dio_core *c, int fd);
/* Removes it again (the same thread rules). */
void dio_core_del_wake_fd(struct dio_core *c, int fd);

/* Microseconds on the monotonic clock the engines use. */
stk_time_t dio_now(void);

/* --- the built-in services (ustackd --echo/--discard/--source) ----------------------- */

struct dio_services {
    uint16_t echo_port, discard_port, source_port; /* 0: off */
};
/* An app that serves the configured services on every core. */
struct dio_app dio_services_app(struct dio_services *svc);

/* --- the shared-memory server (docs/shm.md; dpdk_io/shm_server.c) -------------------- */

/* Counters of the shared-memory server, per core. */
/* clang-format off */
#define DIO_SHM_COUNTERS(X) \
    X(shm_cmds) \
    X(shm_cmd_invalid) \
    X(shm_reply_invalid) \
    X(shm_kicks) \
    X(shm_sockets) \
    X(shm_socket_fail) \
    X(shm_connect_fail) \
    X(shm_connects) \
    X(shm_listens) \
    X(shm_accepts) \
    X(shm_accept_noslot) \
    X(shm_aq_overflow) \
    X(shm_aq_full) \
    X(shm_closes) \
    X(shm_aborts) \
    X(shm_close_timeouts) \
    X(shm_fini_resets) \
    X(shm_orphans) \
    X(shm_rx_bytes) \
    X(shm_tx_bytes) \
    X(shm_rx_blocked) \
    X(shm_ring_insane) \
    X(shm_efd_writes) \
    X(shm_efd_fail) \
    X(shm_efd_exited) \
    X(shm_attach_cancelled) \
    X(shm_fwd) \
    X(shm_fwd_retry) \
    X(shm_replies_reaped) \
    X(shm_cmdq_repairs) \
    X(shm_procs_reaped) \
    X(shm_refs_dropped) \
    X(shm_reclaim_closes) \
    X(shm_reclaim_wakes) \
    X(shm_reclaim_lost) \
    X(shm_udp_tx) \
    X(shm_udp_rx) \
    X(shm_udp_tx_fail) \
    X(shm_udp_rx_toolarge)
/* clang-format on */

struct dio_shm_counters {
#define DIO_SHM_CTR_FIELD(n) uint64_t n;
    DIO_SHM_COUNTERS(DIO_SHM_CTR_FIELD)
#undef DIO_SHM_CTR_FIELD
};

struct dio_shm;

/* Maps the region in memfd fd (which the caller keeps) for a stack of ncores cores and
 * checks it: a valid header, a size that fits the file, hdr.ncores == ncores, usable
 * wake_fds. The header is copied once and the copy is what the stack reads afterwards, so a
 * client rewriting the header cannot move the stack's view of the region. Returns 0 or
 * -errno with one line in err. */
int dio_shm_open(int fd, unsigned ncores, struct dio_shm **out, char *err, size_t errlen);
/* Unmaps and frees; the stack must be stopped. */
void dio_shm_close(struct dio_shm *srv);
/* The user owning the region's processes (default: ustackd's effective uid; an attached
 * region: its client's, from SO_PEERCRED). SO_REUSEPORT groups are per user, as Linux's. */
void dio_shm_set_owner(struct dio_shm *srv, uint32_t uid);
/* Publishes stack_pid = getpid() and SHM_READY (and wakes the spawner). */
void dio_shm_ready(struct dio_shm *srv);
/* Publishes SHM_GONE: the stack is stopping; clients stop waiting for it. */
void dio_shm_gone(struct dio_shm *srv);
/* Start-up failure, with or without a usable region: writes msg into hdr.errmsg of the
 * region in fd (if it is large enough to hold a header), sets SHM_FAILED and wakes. */
void dio_shm_fail(int fd, const char *msg);
/* The same with SHM_BUSY: another ustackd serves the device (the spawner attaches to it). */
void dio_shm_busy(int fd, const char *msg);

/* The app that serves this one region on every stack core (it keeps its per-core state
 * itself and leaves dio_core_app_data to others): a set (below) of one region, owned by srv.
 * Call at most once per region. */
struct dio_app dio_shm_app(struct dio_shm *srv);
/* The same, also running *other on every core (e.g. the built-in services): other's hooks
 * are called after the server's, and engine events for sockets the server does not own
 * (see dio_shm_owns) go to other->event. *other is copied. */
struct dio_app dio_shm_app_with(struct dio_shm *srv, const struct dio_app *other);

/* A set of regions served by one stack (ustackd serves one region per independent client
 * process tree, docs/shm.md "Start-up"). Each core keeps its own list of the regions it
 * serves, changed only on its own thread: regions added before the stack starts are taken up
 * by the app's init on every core; regions added or removed later are taken up or let go
 * through dio_stack_run_on, so the cores' loops read their lists without locks. */
#define DIO_SHM_MAX_REGIONS 256
struct dio_shmset;
/* A set for a stack of ncores cores; other (copied, may be NULL) runs on every core too,
 * as with dio_shm_app_with. */
int dio_shmset_create(unsigned ncores, const struct dio_app *other, struct dio_shmset **out);
/* Frees the set (its regions are the caller's); the stack must be stopped. */
void dio_shmset_free(struct dio_shmset *set);
/* The app that serves every region of the set on every core. */
struct dio_app dio_shmset_app(struct dio_shmset *set);
/* Adds region srv. s NULL: before the stack starts (the cores' init takes it up); else on a
 * running stack s, each core initialising its state for the region on its own thread
 * (bounded waits). Returns 0 or -errno with one line in err. */
int dio_shmset_add(struct dio_shmset *set, struct dio_stack *s, struct dio_shm *srv, char *err,
                   size_t errlen);
/* Removes region srv from a running stack s (NULL: a stopped one): each core closes what it
 * serves of the region as the stack's stop would (FIN, or RST with unread data; listeners
 * stop) and lets go of it. Its counters stay in the set's totals. Returns 0, after which no
 * core touches srv (the caller closes it), or -ETIMEDOUT if a core did not answer (then srv
 * must stay allocated). */
int dio_shmset_remove(struct dio_shmset *set, struct dio_stack *s, struct dio_shm *srv);
/* How many regions the set holds. */
unsigned dio_shmset_count(struct dio_shmset *set);
/* One core's counters summed over the set's regions, present and removed. */
int dio_shmset_counters(struct dio_shmset *set, unsigned core, struct dio_shm_counters *out);
/* Prints "<prefix> core=<i> name=value ..." for every core (the sums; nonzero only). */
void dio_shmset_print_stats(struct dio_shmset *set, FILE *f, const char *prefix);
struct dio_shm_region_info {
    unsigned slot;   /* the region's place in the set */
    int32_t pid;     /* its first live client process (0: none) */
    uint32_t procs;  /* live client processes */
    uint32_t nsocks; /* socket slots */
    uint32_t used;   /* socket slots in use */
};
/* Up to max regions of the set, described. Returns how many. */
int dio_shmset_regions(struct dio_shmset *set, struct dio_shm_region_info *out, unsigned max);
/* Is this engine socket user pointer one of the server's? (Its user pointers are odd
 * numbers, which no real object pointer is.) */
int dio_shm_owns(const void *user);

/* A copy of one core's counters (relaxed reads; exact once the stack is stopped). */
int dio_shm_counters(struct dio_shm *srv, unsigned core, struct dio_shm_counters *out);
/* Prints "<prefix> core=<i> name=value ..." for every core (nonzero counters only). */
void dio_shm_print_stats(struct dio_shm *srv, FILE *f, const char *prefix);
/* Control thread, about once a second and whenever dio_shm_watch_fd() is readable:
 * releases reply slots whose owning process is gone (seen dead on two calls in a row), and
 * drops the socket references of dead processes (docs/shm.md "Holders"): a socket whose last
 * holder died is closed as if that holder had closed it (FIN, or RST with unread data; a
 * listener stops listening); copy locks the dead held are released. Returns the reply
 * slots and processes it released. */
unsigned dio_shm_reap(struct dio_shm *srv);
/* An fd (an epoll of pidfds of the region's processes) that becomes readable when one of
 * them exits: the control thread polls it and then calls dio_shm_reap. -1 if none. */
int dio_shm_watch_fd(struct dio_shm *srv);

/* --- DPDK telemetry (docs/observability.md; dpdk_io/telemetry.c) ------------------------ */

/* Registers the /ustack/... telemetry commands (once per process) and points them at this
 * stack, its set of shared-memory regions (NULL if none) and the configuration it runs with. The
 * commands answer on DPDK's telemetry threads and read each core's state through
 * dio_stack_run_on. */
int dio_telemetry_attach(struct dio_stack *s, struct dio_shmset *set, const struct shim_conf *conf);
/* The commands stop touching the stack (they answer with an error); waits for one in
 * progress. Call before dio_stack_stop. */
void dio_telemetry_detach(void);

#endif

/*
 * telemetry.c - ustackd's DPDK telemetry commands: what `ss` and `netstat` show for kernel
 * sockets, for the connections of a ustack (docs/observability.md).
 *
 *   /ustack/config        the effective configuration (USTACK_* and the port set-up)
 *   /ustack/stats[,CORE]  counters: totals over every core (and the device's), or one core's
 *   /ustack/conns[,START] the connection table, one page of CONNS_PAGE rows from START
 *   /ustack/regions       the shared-memory regions served (one per client process tree)
 *
 * The callbacks run on DPDK's telemetry threads (one per connected client, so possibly
 * several at once). They never read an engine themselves: a core copies what is asked
 * into a buffer of ours between two iterations of its loop (dio_stack_run_on), and the
 * callback waits for it, bounded. One mutex serializes the callbacks and guards the stack
 * pointer, which dio_telemetry_detach clears before the stack goes away.
 *
 * Replies must fit DPDK's 16 KiB output buffer, and a dict may hold only arrays of plain
 * values, not dicts: so the connection table is column-major (one array per field, row i
 * of every array is connection START+i), paged, and served from one snapshot: START=0
 * takes a new snapshot of every core, later pages read the same one (while it is younger
 * than SNAP_MAX_AGE_US), so paging through it sees one consistent table.
 */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <rte_ethdev.h>
#include <rte_telemetry.h>

#include "dio_int.h"

#define CONNS_PAGE      40
#define RUN_TIMEOUT_MS  500
#define SNAP_MAX_AGE_US (10 * STK_US_PER_S)

struct conn_row {
    uint16_t core;
    struct stk_sock_entry e;
};

static struct {
    pthread_mutex_t lock;
    bool registered;
    struct dio_stack *s;
    struct dio_shmset *set;
    struct shim_conf conf;
    /* The connection snapshot pages are served from. */
    struct conn_row *rows;
    size_t nrows, cap;
    stk_time_t snap_at;
    bool snap_truncated;
} tel = {.lock = PTHREAD_MUTEX_INITIALIZER};

/* ---- per-core copies (run on the core) ----------------------------------------------- */

struct stats_copy {
    struct stk_counters k;
    struct dio_counters d;
};

static void copy_stats(struct dio_core *c, void *arg)
{
    struct stats_copy *sc = arg;
    sc->k = *stk_counters(c->e);
    sc->d = c->ctr;
}

struct conns_copy {
    struct conn_row *rows;
    size_t n, cap, seen;
    uint16_t core;
};

static int count_one(void *ctx, const struct stk_sock_entry *ent)
{
    (void)ent;
    ((struct conns_copy *)ctx)->seen++;
    return 0;
}

static void count_conns(struct dio_core *c, void *arg)
{
    stk_sock_walk(c->e, count_one, arg);
}

static int copy_one(void *ctx, const struct stk_sock_entry *ent)
{
    struct conns_copy *cc = ctx;
    cc->seen++;
    if (cc->n < cc->cap) {
        cc->rows[cc->n].core = cc->core;
        cc->rows[cc->n].e = *ent;
        cc->n++;
    }
    return 0;
}

static void copy_conns(struct dio_core *c, void *arg)
{
    stk_sock_walk(c->e, copy_one, arg);
}

/* ---- helpers ----------------------------------------------------------------------------- */

static int stopped(struct rte_tel_data *d)
{
    rte_tel_data_string(d, "ustackd is stopping");
    return -ESRCH;
}

/* A parameter: empty (def) or a decimal number up to max. */
static int param_uint(const char *params, unsigned long max, unsigned long def, unsigned long *out)
{
    if (!params || !*params) {
        *out = def;
        return 0;
    }
    char *end;
    errno = 0;
    unsigned long v = strtoul(params, &end, 10);
    if (*params < '0' || *params > '9' || *end || errno || v > max)
        return -EINVAL;
    *out = v;
    return 0;
}

static uint32_t pow2_at_least(uint32_t v)
{
    uint32_t p = 4096;
    while (p < v && p < (1u << 31))
        p <<= 1;
    return p;
}

/* Telemetry strings hold at most RTE_TEL_MAX_STRING_LEN - 1 bytes. */
static void clip(char *buf, size_t len, const char *src)
{
    size_t n = strnlen(src, len - 1);
    memcpy(buf, src, n);
    buf[n] = 0;
}

static void addr_str(const struct stk_sockaddr *a, char *buf, size_t len)
{
    char ip[16];
    snprintf(buf, len, "%s:%u", shim_ip_str(a->ip, ip), a->port);
}

/* ---- /ustack/config ----------------------------------------------------------------------- */

static int cmd_config(const char *cmd, const char *params, struct rte_tel_data *d)
{
    (void)cmd;
    (void)params;
    pthread_mutex_lock(&tel.lock);
    if (!tel.s) {
        pthread_mutex_unlock(&tel.lock);
        return stopped(d);
    }
    const struct shim_conf *c = &tel.conf;
    char buf[RTE_TEL_MAX_STRING_LEN], ip[16];
    static const char *const levels[] = {"error", "warn", "info", "debug"};
    rte_tel_data_start_dict(d);
    rte_tel_data_add_dict_u64(d, "pid", (uint64_t)getpid());
    if (c->name[0])
        snprintf(buf, sizeof(buf), "ustack-%s", c->name);
    else
        snprintf(buf, sizeof(buf), "ustack-%ld", (long)getpid());
    rte_tel_data_add_dict_string(d, "file_prefix", buf);
    rte_tel_data_add_dict_string(d, "USTACK_NAME", c->name);
    clip(buf, sizeof(buf), c->dev);
    rte_tel_data_add_dict_string(d, "USTACK_DEV", buf);
    snprintf(buf, sizeof(buf), "%s/%u", shim_ip_str(c->ip, ip), c->prefix);
    rte_tel_data_add_dict_string(d, "USTACK_IP", buf);
    rte_tel_data_add_dict_string(d, "USTACK_GW", c->gw ? shim_ip_str(c->gw, ip) : "");
    {
        static const uint8_t zero[16];
        char a6[46];
        buf[0] = 0;
        if (memcmp(c->ip6, zero, 16) != 0)
            snprintf(buf, sizeof(buf), "%s/%u", shim_ip6_str(c->ip6, a6), c->ip6_prefix);
        rte_tel_data_add_dict_string(d, "USTACK_IP6", buf);
        rte_tel_data_add_dict_string(d, "USTACK_GW6",
                                     memcmp(c->gw6, zero, 16) != 0 ? shim_ip6_str(c->gw6, a6) : "");
    }
    const uint8_t *m = tel.s->mac;
    snprintf(buf, sizeof(buf), "%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2], m[3], m[4], m[5]);
    rte_tel_data_add_dict_string(d, "mac", buf);
    size_t n = 0;
    buf[0] = 0;
    for (unsigned i = 0; i < c->ncores && n < sizeof(buf); i++)
        n += (size_t)snprintf(buf + n, sizeof(buf) - n, "%s%u", i ? "," : "", c->cores[i]);
    rte_tel_data_add_dict_string(d, "USTACK_CORES", buf);
    clip(buf, sizeof(buf), c->eal);
    rte_tel_data_add_dict_string(d, "USTACK_EAL", buf);
    rte_tel_data_add_dict_string(d, "USTACK_LOG", levels[c->log_level & 3]);
    rte_tel_data_add_dict_u64(d, "USTACK_MTU", tel.s->mtu);
    rte_tel_data_add_dict_u64(d, "USTACK_IDLE_SPIN_US", c->idle_spin_us);
    rte_tel_data_add_dict_u64(d, "USTACK_IDLE_SLEEP_US", c->idle_sleep_us);
    rte_tel_data_add_dict_u64(d, "USTACK_IDLE_YIELD", c->idle_yield);
    rte_tel_data_add_dict_u64(d, "USTACK_TX_FLUSH_US", c->tx_flush_us);
    rte_tel_data_add_dict_u64(d, "USTACK_ACK_PIGGYBACK", c->ack_piggyback);
    /* The engine's effective sizes (0 in the configuration is its default). */
    uint64_t sbuf = pow2_at_least(c->sndbuf ? c->sndbuf : STK_BUF_DEFAULT);
    uint64_t rbuf = pow2_at_least(c->rcvbuf ? c->rcvbuf : STK_BUF_DEFAULT);
    uint64_t smax = pow2_at_least(c->sndbuf_max ? c->sndbuf_max : STK_BUF_AUTO_MAX);
    uint64_t rmax = pow2_at_least(c->rcvbuf_max ? c->rcvbuf_max : STK_BUF_AUTO_MAX);
    rte_tel_data_add_dict_u64(d, "USTACK_SNDBUF", sbuf);
    rte_tel_data_add_dict_u64(d, "USTACK_RCVBUF", rbuf);
    rte_tel_data_add_dict_u64(d, "USTACK_RCVBUF_MAX", rmax > rbuf ? rmax : rbuf);
    rte_tel_data_add_dict_u64(d, "USTACK_SNDBUF_MAX", smax > sbuf ? smax : sbuf);
    rte_tel_data_add_dict_u64(d, "USTACK_TCP_MEM", dio__tcp_mem(c, c->ncores));
    rte_tel_data_add_dict_u64(d, "USTACK_MAX_SOCKS", c->max_socks ? c->max_socks : 65536);
    rte_tel_data_add_dict_string(d, "USTACK_CC", c->cc == STK_CC_CUBIC ? "cubic" : "newreno");
    rte_tel_data_add_dict_u64(d, "USTACK_TCP_RETRIES", c->tcp_retries ? c->tcp_retries : 15);
    rte_tel_data_add_dict_u64(d, "USTACK_TCP_RTO_MAX_MS", c->rto_max_ms ? c->rto_max_ms : 60000);
    rte_tel_data_add_dict_u64(d, "USTACK_IPFRAG_MEM", c->ipfrag_mem ? c->ipfrag_mem : 4u << 20);
    rte_tel_data_add_dict_u64(d, "USTACK_IPFRAG_TIME", c->ipfrag_time_s ? c->ipfrag_time_s : 30);
    rte_tel_data_add_dict_u64(d, "USTACK_MBUFS", c->mbufs);
    rte_tel_data_add_dict_string(d, "USTACK_HUGE", c->huge < 0 ? "auto" : c->huge ? "1" : "0");
    rte_tel_data_add_dict_u64(d, "USTACK_SHM_SOCKS", c->shm_socks);
    rte_tel_data_add_dict_u64(d, "USTACK_SHM_RING", c->shm_ring);
    rte_tel_data_add_dict_u64(d, "USTACK_STACKD_IDLE_MS", c->stackd_idle_ms);
    clip(buf, sizeof(buf), c->pcap);
    rte_tel_data_add_dict_string(d, "USTACK_PCAP", buf);
    rte_tel_data_add_dict_u64(d, "USTACK_PCAP_MAX", c->pcap_max);
    rte_tel_data_add_dict_u64(d, "shm", tel.set != NULL);
    rte_tel_data_add_dict_u64(d, "regions", tel.set ? dio_shmset_count(tel.set) : 0);
    rte_tel_data_add_dict_u64(d, "port_id", tel.s->port);
    clip(buf, sizeof(buf), dio_stack_describe(tel.s));
    rte_tel_data_add_dict_string(d, "port", buf);
    pthread_mutex_unlock(&tel.lock);
    return 0;
}

/* ---- /ustack/stats ------------------------------------------------------------------------ */

static void add_counters(struct rte_tel_data *d, const struct stk_counters *k,
                         const struct dio_counters *io, const struct dio_shm_counters *sh)
{
#define ADD(n) rte_tel_data_add_dict_u64(d, #n, k->n);
    STK_COUNTERS(ADD)
#undef ADD
    uint64_t conns = 0;
    for (unsigned st = STK_TCP_LISTEN; st <= STK_TCP_TIME_WAIT; st++) {
        char name[40];
        snprintf(name, sizeof(name), "conns_%s", stk_state_name((enum stk_tcp_state)st));
        for (char *p = name; *p; p++)
            *p = *p == '-' ? '_' : (char)tolower((unsigned char)*p);
        rte_tel_data_add_dict_u64(d, name, k->conns_by_state[st]);
        if (st != STK_TCP_LISTEN)
            conns += k->conns_by_state[st];
    }
    rte_tel_data_add_dict_u64(d, "conns", conns);
#define ADD(n) rte_tel_data_add_dict_u64(d, #n, io->n);
    DIO_COUNTERS(ADD)
#undef ADD
    if (sh) {
#define ADD(n) rte_tel_data_add_dict_u64(d, #n, sh->n);
        DIO_SHM_COUNTERS(ADD)
#undef ADD
    }
}

static int cmd_stats(const char *cmd, const char *params, struct rte_tel_data *d)
{
    (void)cmd;
    pthread_mutex_lock(&tel.lock);
    if (!tel.s) {
        pthread_mutex_unlock(&tel.lock);
        return stopped(d);
    }
    unsigned ncores = tel.s->sc.ncores;
    unsigned long one;
    if (param_uint(params, ncores - 1, ULONG_MAX, &one)) {
        pthread_mutex_unlock(&tel.lock);
        rte_tel_data_string(d, "parameter: a core number, 0..ncores-1, or none for totals");
        return -EINVAL;
    }
    struct stk_counters k;
    struct dio_counters io;
    struct dio_shm_counters sh;
    memset(&k, 0, sizeof(k));
    memset(&io, 0, sizeof(io));
    memset(&sh, 0, sizeof(sh));
    unsigned answered = 0;
    for (unsigned i = 0; i < ncores; i++) {
        if (one != ULONG_MAX && i != one)
            continue;
        struct stats_copy sc;
        struct dio_shm_counters sh1;
        if (dio_stack_run_on(tel.s, i, copy_stats, &sc, RUN_TIMEOUT_MS) != 0)
            continue;
        answered++;
#define SUM(n) k.n += sc.k.n;
        STK_COUNTERS(SUM)
#undef SUM
        for (unsigned st = 0; st < sizeof(k.conns_by_state) / sizeof(k.conns_by_state[0]); st++)
            k.conns_by_state[st] += sc.k.conns_by_state[st];
#define SUM(n) io.n += sc.d.n;
        DIO_COUNTERS(SUM)
#undef SUM
        if (tel.set && dio_shmset_counters(tel.set, i, &sh1) == 0) {
#define SUM(n) sh.n += sh1.n;
            DIO_SHM_COUNTERS(SUM)
#undef SUM
        }
    }
    rte_tel_data_start_dict(d);
    rte_tel_data_add_dict_u64(d, "ncores", ncores);
    if (one != ULONG_MAX)
        rte_tel_data_add_dict_u64(d, "core", one);
    /* Cores that did not answer in time are left out, and said so. */
    rte_tel_data_add_dict_u64(d, "cores_answered", answered);
    add_counters(d, &k, &io, tel.set ? &sh : NULL);
    if (tel.set)
        rte_tel_data_add_dict_u64(d, "shm_regions", dio_shmset_count(tel.set));
    struct rte_eth_stats es;
    if (one == ULONG_MAX && rte_eth_stats_get(tel.s->port, &es) == 0) {
        rte_tel_data_add_dict_u64(d, "dev_ipackets", es.ipackets);
        rte_tel_data_add_dict_u64(d, "dev_opackets", es.opackets);
        rte_tel_data_add_dict_u64(d, "dev_ibytes", es.ibytes);
        rte_tel_data_add_dict_u64(d, "dev_obytes", es.obytes);
        rte_tel_data_add_dict_u64(d, "dev_imissed", es.imissed);
        rte_tel_data_add_dict_u64(d, "dev_ierrors", es.ierrors);
        rte_tel_data_add_dict_u64(d, "dev_oerrors", es.oerrors);
        rte_tel_data_add_dict_u64(d, "dev_rx_nombuf", es.rx_nombuf);
    }
    pthread_mutex_unlock(&tel.lock);
    return 0;
}

/* ---- /ustack/conns ------------------------------------------------------------------------ */

/* A new snapshot of every core's connections: count them, then copy (what appeared in
 * between may be left out: snap_truncated). Returns the number of cores that answered. */
static unsigned snapshot(void)
{
    unsigned ncores = tel.s->sc.ncores, answered = 0;
    size_t total = 0;
    for (unsigned i = 0; i < ncores; i++) {
        struct conns_copy cc = {.core = (uint16_t)i};
        if (dio_stack_run_on(tel.s, i, count_conns, &cc, RUN_TIMEOUT_MS) == 0)
            total += cc.seen;
    }
    size_t want = total + total / 8 + 16;
    if (want > tel.cap) {
        struct conn_row *r = realloc(tel.rows, want * sizeof(*r));
        if (r) {
            tel.rows = r;
            tel.cap = want;
        }
    }
    tel.nrows = 0;
    tel.snap_truncated = false;
    for (unsigned i = 0; i < ncores; i++) {
        struct conns_copy cc = {
            .rows = tel.rows + tel.nrows, .cap = tel.cap - tel.nrows, .core = (uint16_t)i};
        if (dio_stack_run_on(tel.s, i, copy_conns, &cc, RUN_TIMEOUT_MS) != 0)
            continue;
        answered++;
        tel.nrows += cc.n;
        if (cc.seen > cc.n)
            tel.snap_truncated = true;
    }
    tel.snap_at = dio_now();
    return answered;
}

static struct rte_tel_data *column(enum rte_tel_value_type type)
{
    struct rte_tel_data *a = rte_tel_data_alloc();
    if (a)
        rte_tel_data_start_array(a, type);
    return a;
}

static int cmd_conns(const char *cmd, const char *params, struct rte_tel_data *d)
{
    (void)cmd;
    unsigned long start;
    if (param_uint(params, 1ul << 30, 0, &start)) {
        rte_tel_data_string(d, "parameter: the first row to list (0 takes a new snapshot)");
        return -EINVAL;
    }
    pthread_mutex_lock(&tel.lock);
    if (!tel.s) {
        pthread_mutex_unlock(&tel.lock);
        return stopped(d);
    }
    unsigned answered = tel.s->sc.ncores;
    if (start == 0 || !tel.snap_at || dio_now() - tel.snap_at > SNAP_MAX_AGE_US)
        answered = snapshot();
    enum {
        C_CORE,
        C_REGION,
        C_SD,
        C_LOCAL,
        C_REMOTE,
        C_STATE,
        C_RECVQ,
        C_SENDQ,
        C_RTT,
        C_RTTVAR,
        C_RTO,
        C_CWND,
        C_SSTHRESH,
        C_MSS,
        C_RETRANSMITS,
        C_TOTAL_RETRANS,
        C_BYTES_ACKED,
        C_BYTES_RECEIVED,
        C_SEGS_IN,
        C_SEGS_OUT,
        C_N
    };
    static const char *const names[C_N] = {
        "core",     "region",  "sd",          "local",         "remote",      "state",
        "recv_q",   "send_q",  "rtt_us",      "rttvar_us",     "rto_us",      "cwnd",
        "ssthresh", "mss",     "retransmits", "total_retrans", "bytes_acked", "bytes_received",
        "segs_in",  "segs_out"};
    struct rte_tel_data *col[C_N];
    bool ok = true;
    for (int i = 0; i < C_N; i++) {
        col[i] = column(i == C_LOCAL || i == C_REMOTE || i == C_STATE ? RTE_TEL_STRING_VAL
                        : i == C_SD || i == C_REGION                  ? RTE_TEL_INT_VAL
                                                                      : RTE_TEL_U64_VAL);
        ok = ok && col[i];
    }
    if (!ok) {
        for (int i = 0; i < C_N; i++)
            rte_tel_data_free(col[i]);
        pthread_mutex_unlock(&tel.lock);
        return -ENOMEM;
    }
    size_t end = start + CONNS_PAGE < tel.nrows ? start + CONNS_PAGE : tel.nrows;
    for (size_t r = start; r < end; r++) {
        const struct conn_row *row = &tel.rows[r];
        const struct stk_sock_entry *e = &row->e;
        const struct stk_tcp_info *ti = &e->info;
        char a[32];
        rte_tel_data_add_array_u64(col[C_CORE], row->core);
        /* The shared-memory region (its place in ustackd's set) a socket belongs to: -1 for
         * none (a built-in service, or a connection no socket holds any more). */
        rte_tel_data_add_array_int(
            col[C_REGION], e->user && dio_shm_owns(e->user) ? (int)((uintptr_t)e->user >> 32) : -1);
        rte_tel_data_add_array_int(col[C_SD], e->sd);
        addr_str(&e->local, a, sizeof(a));
        rte_tel_data_add_array_string(col[C_LOCAL], a);
        addr_str(&e->remote, a, sizeof(a));
        rte_tel_data_add_array_string(col[C_REMOTE], a);
        rte_tel_data_add_array_string(col[C_STATE], stk_state_name((enum stk_tcp_state)ti->state));
        rte_tel_data_add_array_u64(col[C_RECVQ], e->rcvq);
        rte_tel_data_add_array_u64(col[C_SENDQ], e->sndq);
        rte_tel_data_add_array_u64(col[C_RTT], ti->rtt_us);
        rte_tel_data_add_array_u64(col[C_RTTVAR], ti->rttvar_us);
        rte_tel_data_add_array_u64(col[C_RTO], ti->rto_us);
        rte_tel_data_add_array_u64(col[C_CWND], ti->snd_cwnd);
        rte_tel_data_add_array_u64(col[C_SSTHRESH], ti->snd_ssthresh);
        rte_tel_data_add_array_u64(col[C_MSS], ti->snd_mss);
        rte_tel_data_add_array_u64(col[C_RETRANSMITS], ti->retransmits);
        rte_tel_data_add_array_u64(col[C_TOTAL_RETRANS], ti->total_retrans);
        rte_tel_data_add_array_u64(col[C_BYTES_ACKED], ti->bytes_acked);
        rte_tel_data_add_array_u64(col[C_BYTES_RECEIVED], ti->bytes_received);
        rte_tel_data_add_array_u64(col[C_SEGS_IN], ti->segs_in);
        rte_tel_data_add_array_u64(col[C_SEGS_OUT], ti->segs_out);
    }
    rte_tel_data_start_dict(d);
    rte_tel_data_add_dict_u64(d, "total", tel.nrows);
    rte_tel_data_add_dict_u64(d, "start", start);
    rte_tel_data_add_dict_u64(d, "count", end > start ? end - start : 0);
    /* Where the next page starts; absent on the last page. */
    if (end < tel.nrows)
        rte_tel_data_add_dict_u64(d, "next", end);
    rte_tel_data_add_dict_u64(d, "cores_answered", answered);
    rte_tel_data_add_dict_u64(d, "truncated", tel.snap_truncated);
    for (int i = 0; i < C_N; i++)
        rte_tel_data_add_dict_container(d, names[i], col[i], 0);
    pthread_mutex_unlock(&tel.lock);
    return 0;
}

/* ---- /ustack/regions ---------------------------------------------------------------------- */

/* The regions of the set, column-major: place (the "region" of /ustack/conns), the first
 * live client's pid, live client processes, socket slots and slots in use. At most
 * REGIONS_MAX rows (a reply must fit 16 KiB). */
#define REGIONS_MAX 128

static int cmd_regions(const char *cmd, const char *params, struct rte_tel_data *d)
{
    (void)cmd;
    (void)params;
    static struct dio_shm_region_info ri[DIO_SHM_MAX_REGIONS];
    pthread_mutex_lock(&tel.lock);
    if (!tel.s) {
        pthread_mutex_unlock(&tel.lock);
        return stopped(d);
    }
    int n = tel.set ? dio_shmset_regions(tel.set, ri, DIO_SHM_MAX_REGIONS) : 0;
    struct rte_tel_data *col[5];
    static const char *const names[5] = {"region", "pid", "procs", "socks", "socks_used"};
    bool ok = true;
    for (int i = 0; i < 5; i++)
        ok = (col[i] = column(i == 1 ? RTE_TEL_INT_VAL : RTE_TEL_U64_VAL)) != NULL && ok;
    if (!ok) {
        for (int i = 0; i < 5; i++)
            rte_tel_data_free(col[i]);
        pthread_mutex_unlock(&tel.lock);
        return -ENOMEM;
    }
    int shown = n < REGIONS_MAX ? n : REGIONS_MAX;
    for (int r = 0; r < shown; r++) {
        rte_tel_data_add_array_u64(col[0], ri[r].slot);
        rte_tel_data_add_array_int(col[1], ri[r].pid);
        rte_tel_data_add_array_u64(col[2], ri[r].procs);
        rte_tel_data_add_array_u64(col[3], ri[r].nsocks);
        rte_tel_data_add_array_u64(col[4], ri[r].used);
    }
    pthread_mutex_unlock(&tel.lock);
    rte_tel_data_start_dict(d);
    rte_tel_data_add_dict_u64(d, "total", (uint64_t)n);
    for (int i = 0; i < 5; i++)
        rte_tel_data_add_dict_container(d, names[i], col[i], 0);
    return 0;
}

/* ---- attach/detach -------------------------------------------------------------------------- */

int dio_telemetry_attach(struct dio_stack *s, struct dio_shmset *set, const struct shim_conf *conf)
{
    pthread_mutex_lock(&tel.lock);
    int rc = 0;
    if (!tel.registered) {
        rc = rte_telemetry_register_cmd("/ustack/config", cmd_config,
                                        "ustackd's effective configuration. No parameters");
        if (rc == 0)
            rc = rte_telemetry_register_cmd(
                "/ustack/stats", cmd_stats,
                "Counters: totals over all cores and the device's, or one core's. Parameters: "
                "int core (optional)");
        if (rc == 0)
            rc = rte_telemetry_register_cmd(
                "/ustack/conns", cmd_conns,
                "TCP listeners and connections, column-major, one page from a row. Parameters: "
                "int start (optional; 0 takes a new snapshot)");
        if (rc == 0)
            rc = rte_telemetry_register_cmd(
                "/ustack/regions", cmd_regions,
                "Shared-memory regions served (one per client process tree), column-major. "
                "No parameters");
        tel.registered = rc == 0;
    }
    if (rc == 0) {
        tel.s = s;
        tel.set = set;
        tel.conf = *conf;
        tel.snap_at = 0;
    }
    pthread_mutex_unlock(&tel.lock);
    return rc;
}

void dio_telemetry_detach(void)
{
    pthread_mutex_lock(&tel.lock);
    tel.s = NULL;
    tel.set = NULL;
    free(tel.rows);
    tel.rows = NULL;
    tel.nrows = tel.cap = 0;
    tel.snap_at = 0;
    pthread_mutex_unlock(&tel.lock);
}

/*
 * wire.h - two engines joined by an in-memory Ethernet link, with a fake clock and
 * deterministic fault injection.
 *
 * Each direction of the link is a struct wire_link: frames handed to it are copied, run
 * through the fault profile (link down, loss, corruption, duplication, reordering, delay,
 * jitter, a bandwidth limit with a bounded queue) and kept in a time-ordered queue until
 * their delivery time. All randomness comes from a PRNG seeded from the wire's seed, so a
 * run is a pure function of the seed and the test's actions; print the seed when a test
 * fails and the failure replays exactly.
 *
 * struct wire owns the two engines (endpoints A and B) and the clock. wire_step() advances
 * the clock to the next event - the earliest frame delivery or engine timer - and handles
 * exactly that one event: it calls stk_input() on the receiving engine, or stk_poll() on
 * the engine whose timer is due. Frames are handled before timers due at the same time.
 *
 * An endpoint may be "raw" (no engine): frames delivered to it are kept in a pkt_capture,
 * and the test sends from it with wire_inject(). That lets a scripted peer talk to one
 * engine across a faulty link. Every endpoint's cfg.tx / cfg.io_ctx is the wire's device
 * emulation (offload completion, TSO split, tx_fail), callable directly by such a test.
 */
#ifndef USTACK_TESTS_WIRE_H
#define USTACK_TESTS_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "pkt.h"
#include "stk.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Endpoints, and the direction of a link named by its sender. */
enum { WIRE_A = 0, WIRE_B = 1 };
#define WIRE_A_TO_B WIRE_A
#define WIRE_B_TO_A WIRE_B

/* Default addresses: A = 198.18.0.1/24 02:00:00:00:00:01, B = 198.18.0.2/24 ...:02. */
#define WIRE_IP_A PKT_IP(198, 18, 0, 1)
#define WIRE_IP_B PKT_IP(198, 18, 0, 2)
extern const uint8_t wire_mac_a[6], wire_mac_b[6];

/* ---- PRNG ----------------------------------------------------------------------------- */

/* splitmix64: tiny, statistically fine for fault injection, and every state is valid. */
struct wire_rng {
    uint64_t s;
};
void wire_rng_seed(struct wire_rng *r, uint64_t seed);
uint64_t wire_rng_next(struct wire_rng *r);
/* Uniform in [0, 1). */
double wire_rng_unit(struct wire_rng *r);
/* Uniform in [0, n) (0 when n == 0). */
uint64_t wire_rng_below(struct wire_rng *r, uint64_t n);

/* ---- One direction of the link -------------------------------------------------------- */

/* Probabilities are per frame, in [0, 1]. A zeroed profile is a perfect, instant link. */
struct wire_fault {
    double loss;    /* drop */
    double dup;     /* deliver a second copy (which gets its own jitter) */
    double corrupt; /* flip one random bit anywhere in the frame */
    double reorder; /* hold the frame back (see reorder_us) */
    /* 0: a held frame is released right after the next frame in this direction (or
     * after 10 ms if none comes); else it is delayed by reorder_us extra instead. */
    uint32_t reorder_us;
    uint32_t delay_us;    /* fixed one-way delay */
    uint32_t jitter_us;   /* extra delay uniform in [0, jitter_us]; never reorders frames */
    uint64_t rate;        /* bytes/s serialisation limit; 0 = unlimited */
    uint32_t queue_bytes; /* with rate: bytes that may wait for the link (tail drop beyond);
                             0 = unlimited */
    stk_time_t down_from, down_until; /* frames sent or due in [from, until) are lost */
    double tx_fail; /* tx() returns -ENOBUFS (the engine sees a full device queue) */
};

struct wire_stats {
    uint64_t frames, bytes; /* offered by the sender */
    uint64_t delivered, delivered_bytes;
    uint64_t lost;       /* by loss probability */
    uint64_t down;       /* by the link-down window */
    uint64_t qdrops;     /* by the bandwidth queue limit */
    uint64_t tap_drops;  /* by the tap callback */
    uint64_t tx_fails;   /* tx() made to fail */
    uint64_t duplicated; /* extra copies made */
    uint64_t corrupted;
    uint64_t reordered;
    uint64_t tso_frames; /* TSO frames split by the wire */
};

/* A frame in flight. */
struct wire_frame {
    stk_time_t t; /* delivery time */
    uint64_t seq; /* tie-break: order of scheduling */
    size_t len;
    uint8_t flags; /* WIRE_F_* */
    uint8_t data[];
};
enum { WIRE_F_DUP = 1, WIRE_F_CORRUPT = 2, WIRE_F_REORDERED = 4 };

struct wire_link {
    struct wire_fault fault;
    struct wire_stats st;
    struct wire_rng rng;
    struct wire_frame **heap; /* min-heap on (t, seq) */
    size_t n, cap;
    uint64_t seq;
    stk_time_t busy_until;   /* end of serialisation of the last frame (rate limit) */
    stk_time_t last_due;     /* latest delivery time scheduled, to keep jitter FIFO */
    struct wire_frame *held; /* a frame waiting to be overtaken (reorder_us == 0) */
    stk_time_t held_deadline;
};

void wire_link_init(struct wire_link *l, uint64_t seed);
void wire_link_fini(struct wire_link *l);
/* Offers a frame sent at now; copies it. Returns 0 (even if the fault profile drops it)
 * or -ENOBUFS when out of memory. tx_fail is not applied here but by the endpoint's tx(),
 * once per engine frame (a TSO frame becomes several link frames). */
int wire_link_send(struct wire_link *l, stk_time_t now, const uint8_t *frame, size_t len);
/* When the next frame becomes due (UINT64_MAX if none is in flight). */
stk_time_t wire_link_next(const struct wire_link *l);
/* Removes the next frame due at or before now; the caller frees it with free(). NULL when
 * nothing is due. */
struct wire_frame *wire_link_pop(struct wire_link *l, stk_time_t now);
/* Frames in flight (including a held one). */
size_t wire_link_inflight(const struct wire_link *l);

/* ---- pcap ----------------------------------------------------------------------------- */

/* Classic libpcap file, LINKTYPE_ETHERNET, microsecond timestamps from the fake clock. */
struct wire_pcap {
    FILE *f;
};
int wire_pcap_open(struct wire_pcap *p, const char *path);
int wire_pcap_write(struct wire_pcap *p, stk_time_t t, const uint8_t *frame, size_t len);
void wire_pcap_close(struct wire_pcap *p);

/* ---- The two-engine wire ------------------------------------------------------------- */

/* Called for each frame about to be delivered to endpoint (1 - dir); return nonzero to drop
 * it (counted in tap_drops). The frame may be modified in place. */
typedef int (*wire_tap_fn)(void *ctx, int dir, stk_time_t t, uint8_t *frame, size_t len);

struct wire_endpoint {
    struct wire *w;
    int side;
    struct stk_engine *eng;  /* NULL for a raw endpoint */
    struct stk_config cfg;   /* as given to stk_engine_create */
    struct pkt_capture *cap; /* raw endpoint: what it received */
    uint32_t rx_flags;       /* passed to stk_input (e.g. to claim checksums were checked) */
    stk_time_t polled_at;    /* last stk_poll time */
    unsigned polls_at_same_time;
    uint64_t inputs, polls;
    uint64_t timer_stalls; /* stk_next_timer() stayed at or before a time already polled
                              repeatedly; the wire moved on by 1 us rather than livelock */
    uint64_t offload_bad;  /* frames whose offload metadata or partial checksum was wrong */
    uint64_t l4sum_frames; /* frames whose payload sum the "device" added (STK_TX_L4_SUM) */
};

struct wire {
    stk_time_t now;
    uint64_t seed;
    struct wire_link link[2]; /* link[WIRE_A] carries A -> B */
    struct wire_endpoint ep[2];
    uint64_t steps, step_limit;
    wire_tap_fn tap;
    void *tap_ctx;
    struct wire_pcap pcap;
    bool bursts;
};

struct wire_opts {
    uint64_t seed;
    stk_time_t start;    /* initial clock; 0 means 1 s (so times never look "unset") */
    uint64_t step_limit; /* wire_step fails with -ELOOP beyond this; 0 = 50 million */
    /* Configurations to create the engines from (NULL: all defaults). The wire fills tx,
     * io_ctx, and - when left zero - mac, ip, prefix (24) and secret (from the seed). */
    const struct stk_config *cfg[2];
    bool raw[2];      /* no engine on that side */
    const char *pcap; /* write every delivered frame there when non-NULL */
    /* Deliver the frames due at the same instant in one direction (up to WIRE_BURST) as one
     * receive burst, between stk_rx_begin() and stk_rx_end(), as ustackd's loop does. */
    bool bursts;
};
#define WIRE_BURST 32

/* Fills mac, ip, prefix and secret for a side, as wire_create does for zero fields. */
void wire_default_config(struct stk_config *cfg, int side, uint64_t seed);
/* Creates the wire and the engines. Returns 0 or the negative errno of stk_engine_create
 * (or -ENOMEM, or -errno from opening the pcap file). */
int wire_create(struct wire **out, const struct wire_opts *o);
/* Destroys the engines, frees the frames in flight and closes the pcap file. */
void wire_destroy(struct wire *w);

static inline struct stk_engine *wire_engine(struct wire *w, int side)
{
    return w->ep[side].eng;
}
static inline struct wire_fault *wire_fault(struct wire *w, int dir)
{
    return &w->link[dir].fault;
}
static inline const struct wire_stats *wire_stats(const struct wire *w, int dir)
{
    return &w->link[dir].st;
}
void wire_set_tap(struct wire *w, wire_tap_fn tap, void *ctx);

/* Sends a frame from endpoint side through its link (for raw endpoints, or to inject
 * crafted frames towards an engine). */
int wire_inject(struct wire *w, int side, const uint8_t *frame, size_t len);

/* When the next event is (UINT64_MAX if the wire is idle: nothing in flight, no timers). */
stk_time_t wire_next_event(struct wire *w);
/* Handles one event. Returns 1 if it handled one, 0 if the wire is idle (clock unchanged),
 * -ELOOP once step_limit steps have been taken. */
int wire_step(struct wire *w);
/* Handles every event due at or before t, then sets the clock to t (if later). Returns 0
 * or -ELOOP. */
int wire_run_until(struct wire *w, stk_time_t t);
/* Runs for dt microseconds of fake time. */
int wire_run_for(struct wire *w, stk_time_t dt);
/* Steps until done(ctx) returns nonzero (checked before every step) or max_time of fake
 * time has passed. Returns 0 when done, -ETIMEDOUT (clock at now + max_time), or -ELOOP. */
int wire_run(struct wire *w, int (*done)(void *ctx), void *ctx, stk_time_t max_time);

#ifdef __cplusplus
}
#endif
#endif

/*
 * pcap.c - USTACK_PCAP: every frame the stack cores receive from the device and hand to it,
 * written to a classic pcap file (LINKTYPE_ETHERNET, nanosecond timestamps) that tcpdump,
 * tshark and wireshark read. docs/observability.md "Packet capture".
 *
 * Each core appends records to a buffer of its own (PCAP_BUF bytes) and writes the whole
 * buffer with one pwrite() at an offset it reserves with an atomic fetch-and-add on the
 * file's next free offset: no lock, and the cores' buffers never interleave inside a
 * record. A buffer is written when the next record does not fit, when the core goes idle,
 * when its oldest record is PCAP_AGE_US old, and when the core stops. So records are in
 * time order within one core's stretches, not across cores (mergecap/reordercap sort).
 *
 * USTACK_PCAP_MAX bounds the file: the buffer whose reservation crosses the bound writes the
 * whole records that fit below it, and from then on every core counts its frames as
 * pcap_dropped instead of buffering them. The file never has a partial record (the
 * reservations below the bound are written whole), so it parses at any size.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "dio_int.h"
#include "log.h"

#define PCAP_MAGIC_NS 0xa1b23c4du
#define PCAP_SNAPLEN  65535u
#define PCAP_LINKTYPE 1u /* LINKTYPE_ETHERNET */
#define PCAP_HDR      24u
#define PCAP_REC_HDR  16u
#define PCAP_BUF      (256u * 1024u)
#define PCAP_AGE_US   100000u

struct dio_pcap {
    int fd;
    uint64_t max;
    atomic_uint_fast64_t off; /* the file's next free offset */
    atomic_bool full;         /* the bound was reached: capture has stopped */
    atomic_bool failed;       /* a write failed: said once */
    char path[256];
};

struct dio_pcap_core {
    struct dio_pcap *p;
    uint32_t len;      /* bytes buffered */
    uint32_t nframes;  /* records buffered */
    uint64_t first_us; /* dio_now() of the oldest buffered record */
    uint8_t buf[PCAP_BUF];
};

static void put32(uint8_t *d, uint32_t v)
{
    memcpy(d, &v, 4); /* host order: the magic number tells readers which it is */
}

int dio__pcap_open(struct dio_stack *s, char *err, size_t errlen)
{
    const struct shim_conf *k = &s->conf;
    if (!k->pcap[0])
        return 0;
    struct dio_pcap *p = calloc(1, sizeof(*p));
    if (!p)
        return -ENOMEM;
    p->fd = open(k->pcap, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (p->fd < 0) {
        int e = errno;
        dio__err(err, errlen, "USTACK_PCAP=%s: cannot create the capture file: %s", k->pcap,
                 strerror(e));
        free(p);
        return -e;
    }
    uint8_t h[PCAP_HDR];
    put32(h, PCAP_MAGIC_NS);
    memcpy(h + 4, (uint16_t[]){2, 4}, 4); /* version 2.4 */
    memset(h + 8, 0, 8);                  /* thiszone, sigfigs */
    put32(h + 16, PCAP_SNAPLEN);
    put32(h + 20, PCAP_LINKTYPE);
    if (pwrite(p->fd, h, sizeof(h), 0) != (ssize_t)sizeof(h)) {
        int e = errno ? errno : EIO;
        dio__err(err, errlen, "USTACK_PCAP=%s: cannot write the capture file: %s", k->pcap,
                 strerror(e));
        close(p->fd);
        free(p);
        return -e;
    }
    p->max = k->pcap_max;
    atomic_init(&p->off, PCAP_HDR);
    snprintf(p->path, sizeof(p->path), "%s", k->pcap);
    s->pcap = p;
    return 0;
}

void dio__pcap_close(struct dio_stack *s)
{
    if (!s->pcap)
        return;
    close(s->pcap->fd);
    free(s->pcap);
    s->pcap = NULL;
}

int dio__pcap_core_init(struct dio_core *c)
{
    if (!c->s->pcap)
        return 0;
    /* On the core's thread, after numa_set_localalloc: the buffer is on its node. */
    c->pcap = malloc(sizeof(*c->pcap));
    if (!c->pcap)
        return -ENOMEM;
    c->pcap->p = c->s->pcap;
    c->pcap->len = c->pcap->nframes = 0;
    return 0;
}

void dio__pcap_core_fini(struct dio_core *c)
{
    if (!c->pcap)
        return;
    dio__pcap_flush(c);
    free(c->pcap);
    c->pcap = NULL;
}

static int write_all(int fd, const uint8_t *b, size_t n, uint64_t off)
{
    while (n) {
        ssize_t w = pwrite(fd, b, n, (off_t)off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return w < 0 ? -errno : -EIO;
        b += w;
        n -= (size_t)w;
        off += (uint64_t)w;
    }
    return 0;
}

void dio__pcap_flush(struct dio_core *c)
{
    struct dio_pcap_core *pc = c->pcap;
    struct dio_pcap *p = pc->p;
    if (pc->len == 0)
        return;
    uint32_t len = pc->len, nframes = pc->nframes;
    uint64_t off = atomic_fetch_add(&p->off, len);
    if (off + len > p->max) {
        /* The bound: keep the whole records that fit below it, drop the rest. */
        atomic_store(&p->full, true);
        uint64_t room = off < p->max ? p->max - off : 0;
        uint32_t keep = 0, kept = 0;
        while (kept < nframes) {
            uint32_t caplen;
            memcpy(&caplen, pc->buf + keep + 8, 4);
            if (keep + PCAP_REC_HDR + caplen > room)
                break;
            keep += PCAP_REC_HDR + caplen;
            kept++;
        }
        len = keep;
        nframes = kept;
    }
    if (len) {
        int rc = write_all(p->fd, pc->buf, len, off);
        if (rc) {
            nframes = 0;
            len = 0;
            atomic_store(&p->full, true);
            if (!atomic_exchange(&p->failed, true))
                SHIM_ERR("USTACK_PCAP=%s: write failed: %s; capture stopped", p->path,
                         strerror(-rc));
        }
    }
    c->ctr.pcap_frames += nframes;
    c->ctr.pcap_bytes += len;
    c->ctr.pcap_dropped += pc->nframes - nframes;
    pc->len = pc->nframes = 0;
}

/* Room for one record of caplen bytes: flushes first when the buffer is too full. Returns
 * where the record goes, or NULL when the capture has stopped (the frame is counted). */
static uint8_t *reserve(struct dio_core *c, uint32_t caplen, uint32_t origlen,
                        const struct timespec *ts)
{
    struct dio_pcap_core *pc = c->pcap;
    if (atomic_load_explicit(&pc->p->full, memory_order_relaxed)) {
        if (pc->len)
            dio__pcap_flush(c);
        c->ctr.pcap_dropped++;
        return NULL;
    }
    if (pc->len + PCAP_REC_HDR + caplen > PCAP_BUF)
        dio__pcap_flush(c);
    if (pc->len == 0)
        pc->first_us = dio_now();
    uint8_t *r = pc->buf + pc->len;
    put32(r, (uint32_t)ts->tv_sec);
    put32(r + 4, (uint32_t)ts->tv_nsec);
    put32(r + 8, caplen);
    put32(r + 12, origlen);
    pc->len += PCAP_REC_HDR + caplen;
    pc->nframes++;
    return r + PCAP_REC_HDR;
}

void dio__pcap_mbufs(struct dio_core *c, struct rte_mbuf **pkts, unsigned n)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    for (unsigned i = 0; i < n; i++) {
        const struct rte_mbuf *m = pkts[i];
        uint32_t len = rte_pktmbuf_pkt_len(m);
        uint32_t cap = len < PCAP_SNAPLEN ? len : PCAP_SNAPLEN;
        uint8_t *d = reserve(c, cap, len, &ts);
        if (!d)
            continue;
        for (const struct rte_mbuf *seg = m; seg && cap; seg = seg->next) {
            uint32_t k = seg->data_len < cap ? seg->data_len : cap;
            memcpy(d, rte_pktmbuf_mtod(seg, const uint8_t *), k);
            d += k;
            cap -= k;
        }
    }
}

void dio__pcap_tx(struct dio_core *c, const struct stk_iov *iov, int n)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    size_t len = 0;
    for (int i = 0; i < n; i++)
        len += iov[i].len;
    uint32_t cap = len < PCAP_SNAPLEN ? (uint32_t)len : PCAP_SNAPLEN;
    uint8_t *d = reserve(c, cap, (uint32_t)len, &ts);
    if (!d)
        return;
    for (int i = 0; i < n && cap; i++) {
        uint32_t k = iov[i].len < cap ? (uint32_t)iov[i].len : cap;
        memcpy(d, iov[i].base, k);
        d += k;
        cap -= k;
    }
}

void dio__pcap_poll(struct dio_core *c, uint64_t now_us, bool idle)
{
    struct dio_pcap_core *pc = c->pcap;
    if (pc->len && (idle || now_us - pc->first_us >= PCAP_AGE_US))
        dio__pcap_flush(c);
}

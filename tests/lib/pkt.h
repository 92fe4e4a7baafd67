/*
 * pkt.h - frame crafting, parsing and capture for the engine's tests.
 *
 * The builders write complete Ethernet II frames (IPv4/TCP, IPv4/ICMP, ARP) with correct
 * checksums unless a spec asks for a specific defect. The parser validates a frame
 * completely and fills a flat struct with every field, so a test can assert on exactly what
 * the engine sent. Its checksum code is written independently of stack/csum.c, so that the
 * test oracle does not share the engine's bugs.
 *
 * A struct pkt_capture plugs into stk_config.tx and keeps the frames an engine transmits,
 * finishing any checksum the engine left to the "device" (offloads).
 *
 * Addresses, ports and numbers are in host byte order throughout.
 */
#ifndef USTACK_TESTS_PKT_H
#define USTACK_TESTS_PKT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "stk.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Wire constants the tests need (kept here so tests do not include engine internals). */
#define PKT_ETH_HLEN       14
#define PKT_ETH_MIN_FRAME  60 /* without FCS: shorter frames are padded on a real link */
#define PKT_ETH_P_IP       0x0800
#define PKT_ETH_P_ARP      0x0806
#define PKT_IP_HLEN        20
#define PKT_IP_PROTO_ICMP  1
#define PKT_IP_PROTO_TCP   6
#define PKT_TCP_HLEN       20
#define PKT_ICMP_HLEN      8
#define PKT_ARP_LEN        28
#define PKT_ICMP_ECHOREPLY 0
#define PKT_ICMP_UNREACH   3
#define PKT_ICMP_ECHO      8
#define PKT_ARP_REQUEST    1
#define PKT_ARP_REPLY      2

/* IPv4 flags/fragment-offset field. */
#define PKT_IP_DF      0x4000
#define PKT_IP_MF      0x2000
#define PKT_IP_OFFMASK 0x1fff /* in units of 8 bytes */

/* TCP header flags. */
#define PKT_TCP_FIN 0x01
#define PKT_TCP_SYN 0x02
#define PKT_TCP_RST 0x04
#define PKT_TCP_PSH 0x08
#define PKT_TCP_ACK 0x10
#define PKT_TCP_URG 0x20
#define PKT_TCP_ECE 0x40
#define PKT_TCP_CWR 0x80

/* TCP option kinds. */
#define PKT_TCPOPT_EOL       0
#define PKT_TCPOPT_NOP       1
#define PKT_TCPOPT_MSS       2
#define PKT_TCPOPT_WSCALE    3
#define PKT_TCPOPT_SACK_PERM 4
#define PKT_TCPOPT_SACK      5
#define PKT_TCPOPT_TS        8

#define PKT_MAX_SACK 4

/* Test addresses from the benchmarking range 198.18.0.0/15 (RFC 2544). */
#define PKT_IP(a, b, c, d) ((uint32_t)(a) << 24 | (uint32_t)(b) << 16 | (uint32_t)(c) << 8 | (d))

extern const uint8_t pkt_mac_broadcast[6];
extern const uint8_t pkt_mac_zero[6];

struct pkt_sack_block {
    uint32_t start, end;
};

/* ---- Building ------------------------------------------------------------------------- */

/* Everything that goes into an Ethernet + IPv4 + TCP frame. Call pkt_tcp_spec_init() first:
 * a zeroed spec would mean "window scale 0 present" (wscale is -1 when absent). */
struct pkt_tcp_spec {
    uint8_t src_mac[6], dst_mac[6];
    uint32_t src_ip, dst_ip;
    uint16_t sport, dport;
    uint32_t seq, ack;
    uint8_t flags; /* PKT_TCP_* */
    uint16_t window;
    uint16_t urp; /* urgent pointer */

    /* Options, emitted in the order Linux uses. */
    uint16_t mss;   /* 0: absent */
    int wscale;     /* -1: absent, else the shift count (0..255 as sent) */
    bool sack_perm; /* SACK permitted */
    bool ts;        /* timestamps present */
    uint32_t tsval, tsecr;
    int nsack; /* SACK blocks, 0..PKT_MAX_SACK */
    struct pkt_sack_block sack[PKT_MAX_SACK];

    const void *payload;
    size_t payload_len;

    /* IPv4 header. */
    uint8_t ttl; /* pkt_tcp_spec_init sets 64 */
    uint8_t tos;
    uint16_t ip_id;
    uint16_t frag;          /* flags + offset field as sent (PKT_IP_DF, PKT_IP_MF, offset / 8) */
    const uint8_t *ip_opts; /* IP options, padded with EOL to a multiple of 4 (<= 40) */
    size_t ip_opts_len;

    /* Defects, for the engine's input validation tests. */
    bool bad_ip_csum;        /* IPv4 header checksum off by one */
    bool bad_tcp_csum;       /* TCP checksum off by one */
    size_t truncate;         /* cut this many bytes off the end of the frame; the headers
                                still claim the full length */
    int ip_len_delta;        /* added to the IPv4 total-length field */
    int ip_ihl;              /* 0: correct; else this value goes in the IHL nibble */
    int tcp_doff;            /* 0: correct; else this value goes in the data-offset nibble */
    const uint8_t *raw_opts; /* when non-NULL, these TCP option bytes replace the ones the */
    size_t raw_opts_len;     /* fields above describe (zero-padded to a multiple of 4) */
    bool eth_pad;            /* pad short frames to 60 bytes like a real link */
};

/* Sets the defaults: no options (wscale -1), TTL 64, DF, window 65535, ACK flag clear, and
 * the wire's addresses (A = 198.18.0.1 02:00:00:00:00:01 sending to B = 198.18.0.2
 * 02:00:00:00:00:02). */
void pkt_tcp_spec_init(struct pkt_tcp_spec *s);

/* Writes the frame into buf. Returns its length, or 0 if it does not fit in cap or the
 * options do not fit in 40 bytes. */
size_t pkt_build_tcp(const struct pkt_tcp_spec *s, uint8_t *buf, size_t cap);

struct pkt_arp_spec {
    uint8_t eth_src[6], eth_dst[6];
    uint16_t op; /* PKT_ARP_REQUEST / PKT_ARP_REPLY */
    uint8_t sha[6], tha[6];
    uint32_t spa, tpa;
};
size_t pkt_build_arp(const struct pkt_arp_spec *s, uint8_t *buf, size_t cap);
/* Broadcast "who has tpa? tell spa". */
size_t pkt_build_arp_request(uint8_t *buf, size_t cap, const uint8_t sha[6], uint32_t spa,
                             uint32_t tpa);
/* Unicast "spa is at sha" to (tha, tpa). */
size_t pkt_build_arp_reply(uint8_t *buf, size_t cap, const uint8_t sha[6], uint32_t spa,
                           const uint8_t tha[6], uint32_t tpa);

struct pkt_icmp_spec {
    uint8_t src_mac[6], dst_mac[6];
    uint32_t src_ip, dst_ip;
    uint8_t type, code;
    uint16_t id, seq; /* the second header word: echo identifier and sequence */
    const void *payload;
    size_t payload_len;
    uint8_t ttl; /* 0 means 64 */
    bool bad_icmp_csum;
};
size_t pkt_build_icmp(const struct pkt_icmp_spec *s, uint8_t *buf, size_t cap);
size_t pkt_build_icmp_echo(uint8_t *buf, size_t cap, const uint8_t src_mac[6],
                           const uint8_t dst_mac[6], uint32_t src_ip, uint32_t dst_ip, uint16_t id,
                           uint16_t seq, const void *data, size_t len);

/* ---- Parsing -------------------------------------------------------------------------- */

/* What pkt_parse found wrong. These are not errno values. */
enum pkt_err {
    PKT_OK = 0,
    PKT_E_EMPTY = -100, /* no frame (pkt_capture_pop_parse on an empty capture) */
    PKT_E_ETH_SHORT,    /* shorter than an Ethernet header */
    PKT_E_ETH_TYPE,     /* neither IPv4 nor ARP */
    PKT_E_ARP_SHORT,    /* ARP body truncated */
    PKT_E_ARP_FORMAT,   /* not Ethernet/IPv4 ARP, or an unknown operation */
    PKT_E_IP_SHORT,     /* IPv4 header truncated */
    PKT_E_IP_VERSION,   /* version is not 4 */
    PKT_E_IP_HLEN,      /* IHL < 5 or beyond the frame / total length */
    PKT_E_IP_LEN,       /* total length below the header or beyond the frame */
    PKT_E_IP_CSUM,      /* header checksum wrong */
    PKT_E_IP_FRAG,      /* a fragment (MF or nonzero offset) */
    PKT_E_IP_PROTO,     /* neither TCP nor ICMP (IPv4 fields are filled) */
    PKT_E_TCP_SHORT,    /* TCP header truncated */
    PKT_E_TCP_HLEN,     /* data offset < 5 or beyond the segment */
    PKT_E_TCP_CSUM,     /* TCP checksum (with pseudo-header) wrong */
    PKT_E_TCP_OPT,      /* malformed option: bad length or overrunning the header */
    PKT_E_ICMP_SHORT,   /* ICMP header truncated */
    PKT_E_ICMP_CSUM,    /* ICMP checksum wrong */
    PKT_E_OFFLOAD,      /* pkt_offload_finish: meta does not match the frame */
};
const char *pkt_strerror(int err);

enum pkt_kind { PKT_KIND_NONE = 0, PKT_KIND_ARP, PKT_KIND_TCP, PKT_KIND_ICMP, PKT_KIND_IP };

struct pkt_tcp_opts {
    bool has_mss;
    uint16_t mss;
    int wscale; /* -1: absent */
    bool sack_perm;
    bool ts;
    uint32_t tsval, tsecr;
    int nsack;
    struct pkt_sack_block sack[PKT_MAX_SACK];
    int nops;    /* NOP bytes seen */
    int unknown; /* options of unknown kind (skipped using their length) */
    bool eol;    /* an explicit EOL ended the list */
};

/* Every field of a frame. Pointers point into the frame that was parsed. When pkt_parse
 * fails, the fields of the layers before the failing one are filled. */
struct pkt_info {
    enum pkt_kind kind;
    size_t frame_len;

    /* Ethernet */
    uint8_t dst_mac[6], src_mac[6];
    uint16_t ethertype;

    /* ARP */
    uint16_t arp_op;
    uint8_t arp_sha[6], arp_tha[6];
    uint32_t arp_spa, arp_tpa;

    /* IPv4 */
    uint8_t ip_hlen; /* bytes */
    uint8_t tos, ttl, proto;
    uint16_t ip_len; /* total length */
    uint16_t ip_id;
    uint16_t frag; /* raw flags + offset field */
    bool df, mf;
    uint16_t frag_offset; /* bytes */
    uint16_t ip_csum;
    uint32_t src_ip, dst_ip;
    const uint8_t *ip_opts;
    size_t ip_opts_len;
    size_t eth_pad; /* frame bytes after the IPv4 total length (link padding) */

    /* TCP */
    uint16_t sport, dport;
    uint32_t seq, ack;
    uint8_t tcp_hlen; /* bytes */
    uint8_t flags;
    uint16_t window, tcp_csum, urp;
    const uint8_t *tcp_opts_raw;
    size_t tcp_opts_len;
    struct pkt_tcp_opts opt;
    /* The TCP payload, or the ICMP data after the 8-byte header. */
    const uint8_t *payload;
    size_t payload_len;

    /* ICMP */
    uint8_t icmp_type, icmp_code;
    uint16_t icmp_csum, icmp_id, icmp_seq;
};

/* Validates and decodes a frame. Returns PKT_OK or a PKT_E_* value. */
int pkt_parse(const uint8_t *frame, size_t len, struct pkt_info *out);
/* Decodes a TCP option list (exposed for tests of the decoder itself). */
int pkt_parse_tcp_opts(const uint8_t *opts, size_t len, struct pkt_tcp_opts *out);

/* A short human-readable line ("TCP 198.18.0.1:80 > ... [S.] seq=... ack=... win=... len=...
 * <mss 1460,sackOK,TS 1:0,wscale 7>"), for failure messages. Returns buf. */
char *pkt_format(const struct pkt_info *p, char *buf, size_t cap);

/* RFC 1071 Internet checksum of data, continuing from sum (not folded), and the fold +
 * complement step: kept public so tests can craft checksums by hand. */
uint32_t pkt_csum_add(uint32_t sum, const void *data, size_t len);
uint16_t pkt_csum_fold(uint32_t sum);
/* Sum of the IPv4 pseudo-header for an L4 segment of l4_len bytes. */
uint32_t pkt_csum_pseudo(uint32_t src, uint32_t dst, uint8_t proto, uint16_t l4_len);

/* ---- Device emulation ----------------------------------------------------------------- */

/* What a NIC does with a frame carrying STK_TX_IP_CSUM / STK_TX_TCP_CSUM / STK_TX_TSO:
 * writes the IPv4 header checksum, and completes the TCP checksum from the pseudo-header
 * sum the engine left in the field (as a device would, so a wrong partial sum yields a bad
 * checksum). For STK_TX_TSO the TCP checksum is recomputed from scratch because devices
 * ignore the length in the pseudo-header of a TSO frame. *partial_ok (may be NULL) tells
 * whether the partial sum matched the expected pseudo-header sum. Returns PKT_OK or
 * PKT_E_OFFLOAD. */
int pkt_offload_finish(uint8_t *frame, size_t len, const struct stk_txmeta *meta, bool *partial_ok);

/* Splits a finished TSO frame (valid checksums) into frames of at most mss payload bytes,
 * as a device does: IPv4 id incremented per segment, seq advanced, FIN and PSH only on the
 * last segment and CWR only on the first, checksums recomputed. Calls emit for each;
 * returns the number of segments, or the first negative value emit returned, or
 * PKT_E_OFFLOAD if the frame is not IPv4/TCP. */
int pkt_tso_segment(const uint8_t *frame, size_t len, uint16_t mss,
                    int (*emit)(void *ctx, const uint8_t *seg, size_t seg_len), void *ctx);

/* ---- Capture -------------------------------------------------------------------------- */

#define PKT_CAP_MAX_FRAMES 1024
#define PKT_CAP_MAX_LEN    9216  /* a jumbo frame; TSO frames may be larger: */
#define PKT_CAP_MAX_TSO    70000 /* Ethernet + IPv4 + TCP + a 64 KiB payload */

struct pkt_frame {
    uint8_t *data;
    size_t len;
    uint32_t offloads; /* STK_TX_* flags the engine asked for */
    uint16_t tso_mss;  /* meta->tso_mss when STK_TX_TSO */
    uint16_t l2_len, l3_len, l4_len;
    bool partial_ok; /* the partial checksum matched (true when no offload) */
    uint64_t index;  /* 0, 1, 2 ... in the order the engine sent */
};

struct pkt_capture {
    struct pkt_frame q[PKT_CAP_MAX_FRAMES];
    size_t head, count;
    struct pkt_frame popped; /* owned until the next pop/clear/fini */
    uint64_t total;          /* frames accepted */
    uint64_t full_drops;     /* tx() calls refused with -ENOBUFS because the queue was full */
    uint64_t bad_frames;     /* oversize, or offload meta inconsistent with the frame */
    uint64_t offload_frames; /* frames that used any STK_TX_* offload */
    uint64_t tso_frames;
    int fail_next; /* the next fail_next tx() calls return -ENOBUFS (tests of tx failure) */
};

void pkt_capture_init(struct pkt_capture *c);
void pkt_capture_fini(struct pkt_capture *c);
/* stk_config.tx: io_ctx is the struct pkt_capture. */
int pkt_capture_tx(void *io_ctx, const struct stk_iov *iov, int n, const struct stk_txmeta *meta);
/* Stores a frame the caller already has (no offloads). Returns 0 or -ENOBUFS. */
int pkt_capture_add(struct pkt_capture *c, const uint8_t *frame, size_t len);
size_t pkt_capture_count(const struct pkt_capture *c);
/* The i-th oldest frame still queued, or NULL. */
const struct pkt_frame *pkt_capture_peek(const struct pkt_capture *c, size_t i);
/* Removes the oldest frame and returns it (valid until the next pop, clear or fini), or
 * NULL when empty. */
const struct pkt_frame *pkt_capture_pop(struct pkt_capture *c);
/* pop + pkt_parse: PKT_E_EMPTY when there is no frame. out's pointers stay valid until the
 * next pop. */
int pkt_capture_pop_parse(struct pkt_capture *c, struct pkt_info *out);
void pkt_capture_clear(struct pkt_capture *c);

#ifdef __cplusplus
}
#endif
#endif

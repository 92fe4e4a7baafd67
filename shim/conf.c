/*
 * conf.c - the USTACK_* variables: defaults, the USTACK_CONF file, the environment, and the
 * checks that turn a bad value into one line naming it.
 *
 * No allocation anywhere: the interposer calls this while the allocator itself may still be
 * resolving, so the file is read with open()/read() into a buffer on the stack (never
 * stdio), error text is formatted into the caller's buffer, and strerror_r() replaces
 * strerror().
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "conf.h"

#include <errno.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The USTACK_CONF file is read whole; a settings file has no business being larger. */
#define CONF_FILE_MAX 8192
/* CPU ids accepted in USTACK_CORES, and the width of the affinity mask we ask the kernel
 * for (a fixed array instead of CPU_ALLOC, which mallocs). */
#define CPU_MAX    4096
#define MASK_WORDS (CPU_MAX / (8 * sizeof(unsigned long)))
/* At most this much of a bad value is echoed back, so the reason still fits the line; a
 * file name gets more room, being what the user has to go and find. */
#define ECHO_MAX      64
#define PATH_MAX_ECHO 200
/* Environment names starting with this are test-harness knobs (USTACK_TEST_PCAP), never
 * configuration, so the unknown-name check lets them through. */
#define TEST_PREFIX "USTACK_TEST_"

/* Where one variable's value came from: the lookup (line 0) or a line of the file. */
struct val {
    const char *s;
    unsigned line;
};

struct ctx {
    struct shim_conf *c;
    char *err;
    size_t errlen;
    const char *path; /* the USTACK_CONF file, for " [from path:line]" */
    unsigned long mask[MASK_WORDS];
    int mask_ok;
};

struct var;
typedef int (*parse_fn)(struct ctx *x, const struct var *v, const struct val *val);

/* Each variable, how its value is parsed, and for the numeric ones the field and range. */
struct var {
    const char *name;
    parse_fn parse;
    size_t off;
    unsigned min, max;
};

static int parse_enabled(struct ctx *x, const struct var *v, const struct val *val);
static int parse_udp(struct ctx *x, const struct var *v, const struct val *val);
static int parse_inet6(struct ctx *x, const struct var *v, const struct val *val);
static int parse_dev(struct ctx *x, const struct var *v, const struct val *val);
static int parse_ip(struct ctx *x, const struct var *v, const struct val *val);
static int parse_gw(struct ctx *x, const struct var *v, const struct val *val);
static int parse_ip6(struct ctx *x, const struct var *v, const struct val *val);
static int parse_gw6(struct ctx *x, const struct var *v, const struct val *val);
static int parse_mac(struct ctx *x, const struct var *v, const struct val *val);
static int parse_cores(struct ctx *x, const struct var *v, const struct val *val);
static int parse_eal(struct ctx *x, const struct var *v, const struct val *val);
static int parse_log(struct ctx *x, const struct var *v, const struct val *val);
static int parse_uint(struct ctx *x, const struct var *v, const struct val *val);
static int parse_bytes(struct ctx *x, const struct var *v, const struct val *val);
static int parse_cc(struct ctx *x, const struct var *v, const struct val *val);
static int parse_huge(struct ctx *x, const struct var *v, const struct val *val);
static int parse_ring(struct ctx *x, const struct var *v, const struct val *val);
static int parse_path(struct ctx *x, const struct var *v, const struct val *val);
static int parse_name(struct ctx *x, const struct var *v, const struct val *val);
static int parse_pcap(struct ctx *x, const struct var *v, const struct val *val);
static int parse_internal(struct ctx *x, const struct var *v, const struct val *val);

#define FIELD(f) offsetof(struct shim_conf, f)

/* Every variable, in parse order (USTACK_GW is checked against USTACK_IP, and USTACK_GW6
 * against USTACK_IP6, once both are parsed): id, name, parser, and for the numeric ones the field
 * and range. USTACK_CONF has no parser: it is consumed before the others. */
#define SHIM_VARS(X)                                                                               \
    X(CONF, "USTACK_CONF", NULL, 0, 0, 0)                                                          \
    X(ENABLED, "USTACK", parse_enabled, 0, 0, 0)                                                   \
    X(UDP, "USTACK_UDP", parse_udp, 0, 0, 0)                                                       \
    X(INET6, "USTACK_INET6", parse_inet6, 0, 0, 0)                                                 \
    X(DEV, "USTACK_DEV", parse_dev, 0, 0, 0)                                                       \
    X(IP, "USTACK_IP", parse_ip, 0, 0, 0)                                                          \
    X(GW, "USTACK_GW", parse_gw, 0, 0, 0)                                                          \
    X(IP6, "USTACK_IP6", parse_ip6, 0, 0, 0)                                                       \
    X(GW6, "USTACK_GW6", parse_gw6, 0, 0, 0)                                                       \
    X(MAC, "USTACK_MAC", parse_mac, 0, 0, 0)                                                       \
    X(CORES, "USTACK_CORES", parse_cores, 0, 0, 0)                                                 \
    X(EAL, "USTACK_EAL", parse_eal, 0, 0, 0)                                                       \
    X(LOG, "USTACK_LOG", parse_log, 0, 0, 0)                                                       \
    X(MTU, "USTACK_MTU", parse_uint, FIELD(mtu), 576, 9000)                                        \
    X(IDLE_SPIN, "USTACK_IDLE_SPIN_US", parse_uint, FIELD(idle_spin_us), 0, 1000000)               \
    X(IDLE_SLEEP, "USTACK_IDLE_SLEEP_US", parse_uint, FIELD(idle_sleep_us), 10, 100000)            \
    X(IDLE_YIELD, "USTACK_IDLE_YIELD", parse_uint, FIELD(idle_yield), 0, 1)                        \
    X(TX_FLUSH, "USTACK_TX_FLUSH_US", parse_uint, FIELD(tx_flush_us), 0, 1000)                     \
    X(ACK_PIGGYBACK, "USTACK_ACK_PIGGYBACK", parse_uint, FIELD(ack_piggyback), 0, 1)               \
    X(SNDBUF, "USTACK_SNDBUF", parse_bytes, FIELD(sndbuf), 4096, 64u << 20)                        \
    X(RCVBUF, "USTACK_RCVBUF", parse_bytes, FIELD(rcvbuf), 4096, 64u << 20)                        \
    X(RCVBUF_MAX, "USTACK_RCVBUF_MAX", parse_bytes, FIELD(rcvbuf_max), 4096, 64u << 20)            \
    X(SNDBUF_MAX, "USTACK_SNDBUF_MAX", parse_bytes, FIELD(sndbuf_max), 4096, 64u << 20)            \
    X(TCP_MEM, "USTACK_TCP_MEM", parse_bytes, FIELD(tcp_mem), 1u << 20, 4095u << 20)               \
    X(MAX_SOCKS, "USTACK_MAX_SOCKS", parse_uint, FIELD(max_socks), 16, 1u << 24)                   \
    X(CC, "USTACK_CC", parse_cc, 0, 0, 0)                                                          \
    X(TCP_RETRIES, "USTACK_TCP_RETRIES", parse_uint, FIELD(tcp_retries), 1, 255)                   \
    X(TCP_RTO_MAX, "USTACK_TCP_RTO_MAX_MS", parse_uint, FIELD(rto_max_ms), 1000, 120000)           \
    X(IPFRAG_MEM, "USTACK_IPFRAG_MEM", parse_bytes, FIELD(ipfrag_mem), 65536, 1024u << 20)         \
    X(IPFRAG_TIME, "USTACK_IPFRAG_TIME", parse_uint, FIELD(ipfrag_time_s), 1, 3600)                \
    X(MBUFS, "USTACK_MBUFS", parse_uint, FIELD(mbufs), 1024, 1u << 20)                             \
    X(HUGE, "USTACK_HUGE", parse_huge, 0, 0, 0)                                                    \
    X(SHM_SOCKS, "USTACK_SHM_SOCKS", parse_uint, FIELD(shm_socks), 16, 1u << 20)                   \
    X(SHM_RING, "USTACK_SHM_RING", parse_ring, FIELD(shm_ring), 4096, 16u << 20)                   \
    X(SPARE_FDS, "USTACK_SPARE_FDS", parse_uint, FIELD(spare_fds), 0, 256)                         \
    X(STACKD_IDLE, "USTACK_STACKD_IDLE_MS", parse_uint, FIELD(stackd_idle_ms), 0, 3600000)         \
    X(STACKD, "USTACK_STACKD", parse_path, 0, 0, 0)                                                \
    X(NAME, "USTACK_NAME", parse_name, 0, 0, 0)                                                    \
    X(PCAP, "USTACK_PCAP", parse_pcap, 0, 0, 0)                                                    \
    X(PCAP_MAX, "USTACK_PCAP_MAX", parse_bytes, FIELD(pcap_max), 4096, 4095u << 20)                \
    X(STACKD_LOG, "USTACK_STACKD_LOG", parse_internal, 0, 0, 0)                                    \
    X(SHM_FD, "USTACK_SHM_FD", parse_internal, 0, 0, 0)                                            \
    X(PIPE_FD, "USTACK_PIPE_FD", parse_internal, 0, 0, 0)                                          \
    X(FDS, "USTACK_FDS", parse_internal, 0, 0, 0)                                                  \
    X(READY_FD, "USTACK_READY_FD", parse_internal, 0, 0, 0)

#define X_ENUM(id, name, parse, off, min, max) V_##id,
enum { SHIM_VARS(X_ENUM) V_COUNT };
#undef X_ENUM

#define X_TABLE(id, name, parse, off, min, max) {name, parse, off, min, max},
static const struct var vars[V_COUNT] = {SHIM_VARS(X_TABLE)};
#undef X_TABLE

/* ---- error text ---------------------------------------------------------------------- */

/* Lets the compiler check the callers' formats against their arguments. */
#define PRINTF(fmt, args) __attribute__((format(printf, fmt, args)))

/* Appends to the caller's buffer, truncating silently: a short buffer loses the tail of the
 * reason, never the terminator. */
PRINTF(2, 0) static void vput(struct ctx *x, const char *fmt, va_list ap)
{
    if (!x->err || x->errlen == 0)
        return;
    size_t pos = strlen(x->err);
    if (pos + 1 < x->errlen)
        vsnprintf(x->err + pos, x->errlen - pos, fmt, ap);
}

PRINTF(2, 3) static void put(struct ctx *x, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vput(x, fmt, ap);
    va_end(ap);
}

/* Text as typed, but at most max bytes and on one line: control bytes become '?'. */
static void put_text(struct ctx *x, const char *s, size_t len, size_t max)
{
    char buf[PATH_MAX_ECHO + 4];
    size_t i;
    for (i = 0; i < len && i < max && i < PATH_MAX_ECHO; i++)
        buf[i] = ((unsigned char)s[i] < 0x20 || s[i] == 0x7f) ? '?' : s[i];
    if (i < len) {
        memcpy(buf + i, "...", 3);
        i += 3;
    }
    buf[i] = '\0';
    put(x, "%s", buf);
}

/* "NAME=value: <reason>", plus " [from file:line]" when the value came from the file.
 * The reason ends with "(expected ...)" by convention. */
PRINTF(7, 8)
static int fail(struct ctx *x, int rc, const char *name, size_t namelen, const char *value,
                unsigned line, const char *fmt, ...)
{
    if (!x->err || x->errlen == 0)
        return rc;
    x->err[0] = '\0';
    put_text(x, name, namelen, ECHO_MAX);
    put(x, "=");
    put_text(x, value, strlen(value), ECHO_MAX);
    put(x, ": ");
    va_list ap;
    va_start(ap, fmt);
    vput(x, fmt, ap);
    va_end(ap);
    if (line) {
        put(x, " [from ");
        put_text(x, x->path, strlen(x->path), PATH_MAX_ECHO);
        put(x, ":%u]", line);
    }
    return rc;
}

#define BAD(x, v, val, ...)                                                                        \
    fail((x), -EINVAL, (v)->name, strlen((v)->name), (val)->s, (val)->line, __VA_ARGS__)

/* ---- small parsers ------------------------------------------------------------------- */

/* A decimal number at *s: digits only (no sign, blank or leading zero), stopping at the
 * first non-digit, which *s is left pointing at. Returns 0, -1 if there is no number (or
 * it has a leading zero), -2 if it is above limit. */
static int dec(const char **s, unsigned long limit, unsigned long *out)
{
    const char *p = *s;
    unsigned long n = 0;
    if (*p < '0' || *p > '9')
        return -1;
    if (*p == '0' && p[1] >= '0' && p[1] <= '9')
        return -1;
    for (; *p >= '0' && *p <= '9'; p++) {
        unsigned long d = (unsigned long)(*p - '0');
        if (d > limit || n > (limit - d) / 10)
            return -2;
        n = n * 10 + d;
    }
    *s = p;
    *out = n;
    return 0;
}

/* A dotted quad at *s ("1.2.3.4"), octets without leading zeros: inet_aton() would read
 * "010" as octal 8, which no user means. */
static int quad(const char **s, uint32_t *out)
{
    uint32_t a = 0;
    for (int i = 0; i < 4; i++) {
        unsigned long o;
        if (i > 0 && *(*s)++ != '.')
            return -1;
        if (dec(s, 255, &o) != 0)
            return -1;
        a = a << 8 | (uint32_t)o;
    }
    *out = a;
    return 0;
}

/* Unicast in the sense that matters for our own address and the gateway: not "this
 * network" (0/8), loopback (127/8), multicast or reserved (224/3 up to the broadcast). */
static int unicast(uint32_t a)
{
    uint32_t top = a >> 24;
    return top != 0 && top != 127 && top < 224;
}

static uint32_t netmask(unsigned prefix)
{
    return prefix ? 0xffffffffu << (32 - prefix) : 0;
}

static int is_blank(char ch)
{
    return ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r' || ch == '\v' || ch == '\f';
}

/* ---- one parser per variable --------------------------------------------------------- */

static int parse_enabled(struct ctx *x, const struct var *v, const struct val *val)
{
    const char *s = val->s;
    if (!strcmp(s, "1") || !strcmp(s, "on"))
        x->c->enabled = 1;
    else if (!strcmp(s, "0") || !strcmp(s, "off"))
        x->c->enabled = 0;
    else
        return BAD(x, v, val, "not a switch (expected 0, 1, off or on)");
    return 0;
}

static int parse_udp(struct ctx *x, const struct var *v, const struct val *val)
{
    const char *s = val->s;
    if (!strcmp(s, "1") || !strcmp(s, "on"))
        x->c->udp = 1;
    else if (!strcmp(s, "0") || !strcmp(s, "off"))
        x->c->udp = 0;
    else
        return BAD(x, v, val, "not a switch (expected 0, 1, off or on)");
    return 0;
}

static int parse_inet6(struct ctx *x, const struct var *v, const struct val *val)
{
    const char *s = val->s;
    if (!strcmp(s, "1") || !strcmp(s, "on"))
        x->c->inet6 = 1;
    else if (!strcmp(s, "0") || !strcmp(s, "off"))
        x->c->inet6 = 0;
    else
        return BAD(x, v, val, "not a switch (expected 0, 1, off or on)");
    return 0;
}

static int parse_dev(struct ctx *x, const struct var *v, const struct val *val)
{
    size_t n = strlen(val->s);
    if (n >= sizeof x->c->dev)
        return BAD(x, v, val,
                   "longer than %zu characters (expected a PCI address or vdev string, "
                   "1..%zu characters, no blanks)",
                   sizeof x->c->dev - 1, sizeof x->c->dev - 1);
    for (size_t i = 0; i < n; i++)
        if (is_blank(val->s[i]) || (unsigned char)val->s[i] < 0x20)
            return BAD(x, v, val,
                       "contains a blank or control character (expected a PCI address or "
                       "vdev string, 1..%zu characters, no blanks)",
                       sizeof x->c->dev - 1);
    memcpy(x->c->dev, val->s, n + 1);
    return 0;
}

static int parse_ip(struct ctx *x, const struct var *v, const struct val *val)
{
    const char *s = val->s;
    uint32_t a;
    unsigned long prefix;
    if (quad(&s, &a) != 0 || *s++ != '/' || dec(&s, 32, &prefix) != 0 || *s != '\0')
        return BAD(x, v, val, "not an IPv4 address/prefix (expected a.b.c.d/0..32)");
    if (!unicast(a))
        return BAD(x, v, val, "not a unicast address (expected a unicast a.b.c.d/0..32)");
    /* /31 (RFC 3021) and /32 have no network or broadcast address to avoid. */
    uint32_t mask = netmask((unsigned)prefix);
    if (prefix < 31 && ((a & ~mask) == 0 || (a & ~mask) == ~mask)) {
        char net[16];
        shim_ip_str(a & mask, net);
        return BAD(x, v, val, "is the %s address of its subnet (expected a host address in %s/%lu)",
                   (a & ~mask) == 0 ? "network" : "broadcast", net, prefix);
    }
    x->c->ip = a;
    x->c->prefix = (uint8_t)prefix;
    return 0;
}

/* Syntax only; the subnet checks need USTACK_IP and run in check_gw(). */
static int parse_gw(struct ctx *x, const struct var *v, const struct val *val)
{
    const char *s = val->s;
    uint32_t a;
    if (quad(&s, &a) != 0 || *s != '\0')
        return BAD(x, v, val, "not an IPv4 address (expected a.b.c.d)");
    if (!unicast(a))
        return BAD(x, v, val, "not a unicast address (expected a unicast a.b.c.d)");
    x->c->gw = a;
    return 0;
}

static int check_gw(struct ctx *x, const struct val *val)
{
    const struct var *v = &vars[V_GW];
    struct shim_conf *c = x->c;
    if (!c->gw || !c->ip)
        return 0;
    uint32_t mask = netmask(c->prefix);
    char net[16];
    shim_ip_str(c->ip & mask, net);
    if ((c->gw & mask) != (c->ip & mask))
        return BAD(x, v, val, "not inside USTACK_IP's subnet %s/%u (expected an address in %s/%u)",
                   net, c->prefix, net, c->prefix);
    if (c->gw == c->ip)
        return BAD(x, v, val, "is USTACK_IP itself (expected another host in %s/%u)", net,
                   c->prefix);
    if (c->prefix < 31 && ((c->gw & ~mask) == 0 || (c->gw & ~mask) == ~mask))
        return BAD(x, v, val, "is the %s address of %s/%u (expected a host address in %s/%u)",
                   (c->gw & ~mask) == 0 ? "network" : "broadcast", net, c->prefix, net, c->prefix);
    return 0;
}

/* ---- IPv6 ---- */

/* An IPv6 address in any RFC 4291 text form inet_pton() takes (which allocates nothing),
 * with no zone ("%eth0") and nothing after it. */
static int addr6(const char *s, size_t len, uint8_t out[16])
{
    char buf[64];
    if (len == 0 || len >= sizeof buf)
        return -1;
    memcpy(buf, s, len);
    buf[len] = '\0';
    return inet_pton(AF_INET6, buf, out) == 1 ? 0 : -1;
}

/* What an address we own or route through may not be; NULL if it is fine. */
static const char *bad6(const uint8_t a[16])
{
    static const uint8_t zero[16], lo[16] = {[15] = 1}, mapped[12] = {[10] = 0xff, [11] = 0xff};
    if (!memcmp(a, zero, 16))
        return "the unspecified address";
    if (!memcmp(a, lo, 16))
        return "the loopback address";
    if (a[0] == 0xff)
        return "a multicast address";
    if (!memcmp(a, mapped, 12))
        return "an IPv4-mapped address";
    return NULL;
}

static int ll6(const uint8_t a[16])
{
    return a[0] == 0xfe && (a[1] & 0xc0) == 0x80;
}

static int parse_ip6(struct ctx *x, const struct var *v, const struct val *val)
{
    const char *s = val->s, *slash = strchr(s, '/');
    uint8_t a[16];
    unsigned long prefix;
    const char *p = slash ? slash + 1 : NULL;
    if (!slash || addr6(s, (size_t)(slash - s), a) != 0 || dec(&p, 128, &prefix) != 0 ||
        *p != '\0' || prefix == 0)
        return BAD(x, v, val,
                   "not an IPv6 address/prefix (expected e.g. 2001:db8::2/64, prefix 1..128)");
    const char *why = bad6(a);
    if (why)
        return BAD(x, v, val, "is %s (expected a global unicast address/prefix)", why);
    if (ll6(a))
        return BAD(x, v, val,
                   "is link-local (expected a global unicast address/prefix; the link-local "
                   "address is always derived from the MAC)");
    memcpy(x->c->ip6, a, 16);
    x->c->ip6_prefix = (uint8_t)prefix;
    return 0;
}

/* Syntax only; the prefix check needs USTACK_IP6 and runs in check_gw6(). */
static int parse_gw6(struct ctx *x, const struct var *v, const struct val *val)
{
    uint8_t a[16];
    if (addr6(val->s, strlen(val->s), a) != 0)
        return BAD(x, v, val, "not an IPv6 address (expected e.g. fe80::1 or 2001:db8::1)");
    const char *why = bad6(a);
    if (why)
        return BAD(x, v, val, "is %s (expected a unicast IPv6 address)", why);
    memcpy(x->c->gw6, a, 16);
    return 0;
}

static int check_gw6(struct ctx *x, const struct val *val)
{
    const struct var *v = &vars[V_GW6];
    struct shim_conf *c = x->c;
    static const uint8_t zero[16];
    if (!memcmp(c->gw6, zero, 16) || ll6(c->gw6))
        return 0;
    if (!memcmp(c->ip6, zero, 16))
        return BAD(x, v, val,
                   "is not link-local and USTACK_IP6 is not set (expected a link-local "
                   "gateway, or USTACK_IP6 with a prefix holding this one)");
    unsigned plen = c->ip6_prefix, bytes = plen / 8, bits = plen % 8;
    int inside = !memcmp(c->gw6, c->ip6, bytes) &&
                 (bits == 0 || !((c->gw6[bytes] ^ c->ip6[bytes]) & (0xff << (8 - bits))));
    char net[46];
    shim_ip6_str(c->ip6, net);
    if (!inside)
        return BAD(x, v, val,
                   "not inside USTACK_IP6's prefix %s/%u (expected a link-local address or "
                   "one in that prefix)",
                   net, plen);
    if (!memcmp(c->gw6, c->ip6, 16))
        return BAD(x, v, val,
                   "is USTACK_IP6 itself (expected another host, or a link-local "
                   "address)");
    return 0;
}

static int hex(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

static int parse_mac(struct ctx *x, const struct var *v, const struct val *val)
{
    const char *s = val->s;
    uint8_t m[6];
    for (int i = 0; i < 6; i++) {
        if (i > 0 && *s++ != ':')
            goto bad;
        int hi = hex(s[0]), lo = hi < 0 ? -1 : hex(s[1]);
        if (lo < 0)
            goto bad;
        m[i] = (uint8_t)(hi << 4 | lo);
        s += 2;
    }
    if (*s != '\0')
        goto bad;
    if (m[0] & 1)
        return BAD(x, v, val, "is a multicast address (expected a unicast xx:xx:xx:xx:xx:xx)");
    if (!(m[0] | m[1] | m[2] | m[3] | m[4] | m[5]))
        return BAD(x, v, val, "is all zeros (expected a unicast xx:xx:xx:xx:xx:xx)");
    memcpy(x->c->mac, m, 6);
    x->c->mac_set = 1;
    return 0;
bad:
    return BAD(x, v, val, "not a MAC address (expected xx:xx:xx:xx:xx:xx, hex digits)");
}

static int cpu_allowed(const struct ctx *x, unsigned cpu)
{
    const unsigned bits = 8 * sizeof(unsigned long);
    return cpu < CPU_MAX && (x->mask[cpu / bits] >> (cpu % bits) & 1);
}

/* The affinity mask as a CPU list ("0-3,6"), cut short with "..." if it does not fit. */
static void allowed_list(const struct ctx *x, char *buf, size_t len)
{
    size_t pos = 0;
    buf[0] = '\0';
    for (unsigned cpu = 0; cpu < CPU_MAX; cpu++) {
        if (!cpu_allowed(x, cpu))
            continue;
        unsigned end = cpu;
        while (end + 1 < CPU_MAX && cpu_allowed(x, end + 1))
            end++;
        char item[32];
        int n = end == cpu ? snprintf(item, sizeof item, "%s%u", pos ? "," : "", cpu)
                           : snprintf(item, sizeof item, "%s%u-%u", pos ? "," : "", cpu, end);
        if (pos + (size_t)n + 4 > len) {
            snprintf(buf + pos, len - pos, "%s", pos + 4 <= len ? "..." : "");
            return;
        }
        memcpy(buf + pos, item, (size_t)n + 1);
        pos += (size_t)n;
        cpu = end;
    }
}

#define CORES_EXPECT "(expected CPU ids and ranges in ascending order, e.g. 0,2-3)"

static int parse_cores(struct ctx *x, const struct var *v, const struct val *val)
{
    struct shim_conf *c = x->c;
    const char *s = val->s;
    long last = -1;
    c->ncores = 0;
    for (;;) {
        unsigned long lo, hi;
        int r = dec(&s, CPU_MAX - 1, &lo);
        if (r == 0 && *s == '-') {
            s++;
            r = dec(&s, CPU_MAX - 1, &hi);
        } else {
            hi = lo;
        }
        if (r == -2)
            return BAD(x, v, val, "CPU id out of range (expected ids 0..%u)", CPU_MAX - 1);
        if (r != 0 || (*s != ',' && *s != '\0'))
            return BAD(x, v, val, "not a CPU list " CORES_EXPECT);
        if (lo > hi)
            return BAD(x, v, val, "range %lu-%lu is reversed " CORES_EXPECT, lo, hi);
        if ((long)lo <= last) {
            /* Everything up to last is listed in ascending order, so lo is either one of
             * those (listed twice) or falls in a gap (out of order). */
            for (unsigned i = 0; i < c->ncores; i++)
                if (c->cores[i] == lo)
                    return BAD(x, v, val, "CPU %lu is listed twice " CORES_EXPECT, lo);
            return BAD(x, v, val, "CPU %lu is out of order " CORES_EXPECT, lo);
        }
        if (hi - lo + 1 > SHIM_MAX_CORES - c->ncores)
            return BAD(x, v, val, "more than %d CPUs (expected at most %d)", SHIM_MAX_CORES,
                       SHIM_MAX_CORES);
        for (unsigned long cpu = lo; cpu <= hi; cpu++)
            c->cores[c->ncores++] = (unsigned)cpu;
        last = (long)hi;
        if (*s++ == '\0')
            break;
    }
    /* Checked only once the whole list parsed, so a typo later in the list is reported as
     * the typo it is. */
    for (unsigned i = 0; i < c->ncores; i++) {
        if (!x->mask_ok)
            return BAD(x, v, val,
                       "cannot read this process's CPU affinity (expected a CPU "
                       "list the kernel confirms)");
        if (!cpu_allowed(x, c->cores[i])) {
            char allowed[128];
            allowed_list(x, allowed, sizeof allowed);
            return BAD(x, v, val, "CPU %u is not available to this process (allowed: %s)",
                       c->cores[i], allowed);
        }
    }
    return 0;
}

static int parse_eal(struct ctx *x, const struct var *v, const struct val *val)
{
    size_t n = strlen(val->s);
    if (n >= sizeof x->c->eal)
        return BAD(x, v, val,
                   "longer than %zu characters (expected EAL arguments, at most %zu "
                   "characters)",
                   sizeof x->c->eal - 1, sizeof x->c->eal - 1);
    memcpy(x->c->eal, val->s, n + 1);
    return 0;
}

static int parse_log(struct ctx *x, const struct var *v, const struct val *val)
{
    static const char *const names[] = {"error", "warn", "info", "debug"};
    const char *s = val->s;
    for (int i = 0; i < 4; i++) {
        if (!strcmp(s, names[i]) || (s[0] == '0' + i && s[1] == '\0')) {
            x->c->log_level = SHIM_LOG_ERROR + i;
            return 0;
        }
    }
    return BAD(x, v, val, "not a log level (expected error, warn, info, debug or 0..3)");
}

static int store_uint(struct ctx *x, const struct var *v, unsigned long n)
{
    unsigned *f = (unsigned *)(void *)((char *)x->c + v->off);
    *f = (unsigned)n;
    return 0;
}

static int parse_uint(struct ctx *x, const struct var *v, const struct val *val)
{
    const char *s = val->s;
    unsigned long n;
    int r = dec(&s, v->max, &n);
    if (r == -1 || (r == 0 && *s != '\0'))
        return BAD(x, v, val, "not a decimal number (expected %u..%u)", v->min, v->max);
    if (r == -2 || n < v->min)
        return BAD(x, v, val, "out of range (expected %u..%u)", v->min, v->max);
    return store_uint(x, v, n);
}

/* Bytes, optionally with a K or M suffix (binary: 1K = 1024). */
static int parse_bytes(struct ctx *x, const struct var *v, const struct val *val)
{
    const char *s = val->s;
    unsigned long n;
    unsigned shift = 0;
    int r = dec(&s, v->max, &n);
    if (r == 0 && (*s == 'K' || *s == 'k' || *s == 'M' || *s == 'm'))
        shift = (*s++ | 0x20) == 'k' ? 10 : 20;
    if (r == -1 || (r == 0 && *s != '\0'))
        return BAD(x, v, val, "not a size (expected %u..%u bytes, or %uK..%uM)", v->min, v->max,
                   v->min >> 10, v->max >> 20);
    if (r == -2 || n > (v->max >> shift) || (n << shift) < v->min)
        return BAD(x, v, val, "out of range (expected %u..%u bytes, or %uK..%uM)", v->min, v->max,
                   v->min >> 10, v->max >> 20);
    return store_uint(x, v, n << shift);
}

static int parse_cc(struct ctx *x, const struct var *v, const struct val *val)
{
    if (!strcmp(val->s, "newreno"))
        x->c->cc = 0;
    else if (!strcmp(val->s, "cubic"))
        x->c->cc = 1;
    else
        return BAD(x, v, val, "not a congestion control algorithm (expected newreno or cubic)");
    return 0;
}

/* A power of two of bytes (the shared-memory rings are indexed by masking). */
static int parse_ring(struct ctx *x, const struct var *v, const struct val *val)
{
    int rc = parse_bytes(x, v, val);
    if (rc)
        return rc;
    unsigned n = x->c->shm_ring;
    if (n & (n - 1))
        return BAD(x, v, val, "not a power of two (expected 4096..16M, a power of two)");
    return 0;
}

static int parse_path(struct ctx *x, const struct var *v, const struct val *val)
{
    size_t n = strlen(val->s);
    if (n >= sizeof x->c->stackd)
        return BAD(x, v, val, "longer than %zu characters (expected a path to ustackd)",
                   sizeof x->c->stackd - 1);
    memcpy(x->c->stackd, val->s, n + 1);
    return 0;
}

/* The instance name becomes DPDK's file prefix "ustack-<name>" (a directory name, and what
 * dpdk-telemetry.py -f takes). All digits are refused: "ustack-<digits>" is the unnamed
 * form, whose directory is removed as stale when no process has that pid. */
static int parse_name(struct ctx *x, const struct var *v, const struct val *val)
{
    size_t n = strlen(val->s);
    int letter = 0;
    for (size_t i = 0; i < n; i++) {
        char ch = val->s[i];
        int alpha = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z');
        letter |= alpha;
        if (!alpha && !(ch >= '0' && ch <= '9') &&
            !(i > 0 && (ch == '_' || ch == '-' || ch == '.')))
            return BAD(x, v, val,
                       "not an instance name (expected 1..%zu letters, digits, '_', '-' or '.', "
                       "starting with a letter or digit, at least one letter)",
                       sizeof x->c->name - 1);
    }
    if (n >= sizeof x->c->name || !letter)
        return BAD(x, v, val,
                   "not an instance name (expected 1..%zu letters, digits, '_', '-' or '.', "
                   "starting with a letter or digit, at least one letter)",
                   sizeof x->c->name - 1);
    memcpy(x->c->name, val->s, n + 1);
    return 0;
}

/* The capture file: any path ustackd can create (checked when it opens it); a control byte
 * would only make the name impossible to type back. */
static int parse_pcap(struct ctx *x, const struct var *v, const struct val *val)
{
    size_t n = strlen(val->s);
    if (n >= sizeof x->c->pcap)
        return BAD(x, v, val, "longer than %zu characters (expected the path of a file to write)",
                   sizeof x->c->pcap - 1);
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)val->s[i] < 0x20 || val->s[i] == 0x7f)
            return BAD(x, v, val,
                       "contains a control character (expected the path of a file to write)");
    if (val->s[n - 1] == '/')
        return BAD(x, v, val, "names a directory (expected the path of a file to write)");
    memcpy(x->c->pcap, val->s, n + 1);
    return 0;
}

/* Set by libustack.so for its descendants (inherited descriptors, ustackd's log); their
 * consumers check them, the configuration only knows the names. */
static int parse_internal(struct ctx *x, const struct var *v, const struct val *val)
{
    (void)x;
    (void)v;
    (void)val;
    return 0;
}

static int parse_huge(struct ctx *x, const struct var *v, const struct val *val)
{
    if (!strcmp(val->s, "auto"))
        x->c->huge = -1;
    else if (!strcmp(val->s, "0") || !strcmp(val->s, "1"))
        x->c->huge = val->s[0] - '0';
    else
        return BAD(x, v, val, "not a hugepage mode (expected auto, 0 or 1)");
    return 0;
}

/* ---- names --------------------------------------------------------------------------- */

static int find_var(const char *name, size_t len)
{
    for (int i = 0; i < V_COUNT; i++)
        if (strlen(vars[i].name) == len && !memcmp(vars[i].name, name, len))
            return i;
    return -1;
}

static char upper(char ch)
{
    return ch >= 'a' && ch <= 'z' ? (char)(ch - 'a' + 'A') : ch;
}

/* Edit distance ignoring case, for "did you mean"; names longer than the rows are never
 * close. */
static unsigned distance(const char *a, size_t la, const char *b)
{
    unsigned row[33], prev[33];
    size_t lb = strlen(b);
    if (la > 32 || lb > 32)
        return 99;
    for (size_t j = 0; j <= lb; j++)
        prev[j] = (unsigned)j;
    for (size_t i = 1; i <= la; i++) {
        row[0] = (unsigned)i;
        for (size_t j = 1; j <= lb; j++) {
            unsigned sub = prev[j - 1] + (upper(a[i - 1]) != upper(b[j - 1]));
            unsigned del = prev[j] + 1, ins = row[j - 1] + 1;
            row[j] = sub < del ? (sub < ins ? sub : ins) : (del < ins ? del : ins);
        }
        memcpy(prev, row, sizeof row);
    }
    return prev[lb];
}

static int unknown_name(struct ctx *x, const char *name, size_t len, const char *value,
                        unsigned line)
{
    int best = -1;
    unsigned best_d = 3; /* suggest only within two edits */
    for (int i = 0; i < V_COUNT; i++) {
        unsigned d = distance(name, len, vars[i].name);
        if (d < best_d) {
            best = i;
            best_d = d;
        }
    }
    if (best >= 0)
        return fail(x, -EINVAL, name, len, value, line,
                    "unknown variable (expected a USTACK_* name from docs/configuration.md; did "
                    "you mean %s?)",
                    vars[best].name);
    return fail(x, -EINVAL, name, len, value, line,
                "unknown variable (expected a USTACK_* name from docs/configuration.md)");
}

static int ustack_name(const char *name, size_t len)
{
    return (len == 6 && !memcmp(name, "USTACK", 6)) || (len > 7 && !memcmp(name, "USTACK_", 7));
}

/* ---- the file ------------------------------------------------------------------------ */

#define FILE_SHAPE  "NAME=value lines, blank lines and # comments"
#define FILE_EXPECT "(expected " FILE_SHAPE ")"

PRINTF(3, 4) static int conf_fail(struct ctx *x, int rc, const char *fmt, ...)
{
    if (!x->err || x->errlen == 0)
        return rc;
    x->err[0] = '\0';
    put(x, "USTACK_CONF=");
    put_text(x, x->path, strlen(x->path), PATH_MAX_ECHO);
    put(x, ": ");
    va_list ap;
    va_start(ap, fmt);
    vput(x, fmt, ap);
    va_end(ap);
    return rc;
}

static char *trim(char *s, char *end)
{
    while (s < end && is_blank(*s))
        s++;
    while (end > s && is_blank(end[-1]))
        end--;
    *end = '\0';
    return s;
}

/* Reads the file into buf and points fv[] at the values in it. */
static int read_file(struct ctx *x, char *buf, size_t size, struct val *fv)
{
    int fd = open(x->path, O_RDONLY | O_CLOEXEC);
    size_t len = 0;
    int e = 0;
    if (fd < 0) {
        e = errno;
    } else {
        for (;;) {
            ssize_t n = read(fd, buf + len, size - len);
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0)
                e = errno;
            if (n <= 0)
                break;
            len += (size_t)n;
            if (len == size)
                break;
        }
        close(fd);
    }
    if (e) {
        char eb[128];
        return conf_fail(x, -ENOENT, "%s (expected a readable file of " FILE_SHAPE ")",
                         strerror_r(e, eb, sizeof eb));
    }
    if (len == size)
        return conf_fail(x, -EINVAL, "larger than %zu bytes (expected a file of at most %zu bytes)",
                         size - 1, size - 1);
    if (memchr(buf, '\0', len))
        return conf_fail(x, -EINVAL,
                         "contains a NUL byte (expected a text file of " FILE_SHAPE ")");
    buf[len] = '\0';

    char *p = buf;
    for (unsigned line = 1; *p; line++) {
        char *nl = strchr(p, '\n');
        char *end = nl ? nl : p + strlen(p);
        char *next = nl ? nl + 1 : end;
        char *s = trim(p, end);
        p = next;
        if (*s == '\0' || *s == '#')
            continue;
        char *eq = strchr(s, '=');
        if (!eq)
            return conf_fail(x, -EINVAL, "line %u has no '=' " FILE_EXPECT, line);
        char *name = trim(s, eq);
        char *value = trim(eq + 1, eq + 1 + strlen(eq + 1));
        size_t vlen = strlen(value);
        /* One pair of matching quotes is dropped, so the file can also be sourced by a
         * shell (USTACK_EAL="--no-huge -m 256"); there are no escapes. */
        if (vlen >= 2 && (value[0] == '"' || value[0] == '\'') && value[vlen - 1] == value[0]) {
            value[vlen - 1] = '\0';
            value++;
        }
        size_t nlen = strlen(name);
        if (!ustack_name(name, nlen)) {
            conf_fail(x, -EINVAL, "line %u: ", line);
            put_text(x, name, nlen, ECHO_MAX);
            put(x, " is not a USTACK_* name " FILE_EXPECT);
            return -EINVAL;
        }
        int id = find_var(name, nlen);
        if (id < 0)
            return unknown_name(x, name, nlen, value, line);
        if (id == V_CONF)
            return fail(x, -EINVAL, name, nlen, value, line,
                        "set inside the USTACK_CONF file (expected it in the environment only)");
        if (fv[id].s)
            return fail(x, -EINVAL, name, nlen, value, line,
                        "set twice in the file (expected each name once; first at line %u)",
                        fv[id].line);
        fv[id].s = value;
        fv[id].line = line;
    }
    return 0;
}

/* ---- entry points -------------------------------------------------------------------- */

static void defaults(struct ctx *x)
{
    struct shim_conf *c = x->c;
    memset(c, 0, sizeof *c);
    c->enabled = 1;
    c->udp = 1;
    c->inet6 = 1;
    c->ncores = 1;
    c->log_level = SHIM_LOG_WARN;
    c->mtu = 1500;
    c->idle_spin_us = 50;
    c->idle_sleep_us = 2000;
    c->stackd_idle_ms = 500;
    c->idle_yield = 1;
    c->tx_flush_us = 0;
    c->ack_piggyback = 1;
    c->cc = 0;
    c->mbufs = 16384;
    c->huge = -1;
    c->shm_socks = 16384;
    c->shm_ring = 65536;
    c->spare_fds = 64;
    c->pcap_max = 64u << 20;
    /* CPU 0, or the lowest CPU we may run on if taskset/cgroups keep us off CPU 0: a
     * default that start-up then refuses would be no default at all. */
    memset(x->mask, 0, sizeof x->mask);
    x->mask_ok = sched_getaffinity(0, sizeof x->mask, (cpu_set_t *)(void *)x->mask) == 0;
    c->cores[0] = 0;
    for (unsigned cpu = 0; x->mask_ok && cpu < CPU_MAX; cpu++)
        if (cpu_allowed(x, cpu)) {
            c->cores[0] = cpu;
            break;
        }
}

static int load(struct ctx *x, shim_conf_lookup_fn lookup, void *ctx)
{
    struct val v[V_COUNT] = {{NULL, 0}}, fv[V_COUNT] = {{NULL, 0}};
    char buf[CONF_FILE_MAX + 1];

    for (int i = 0; i < V_COUNT && lookup; i++)
        v[i].s = lookup(ctx, vars[i].name);
    if (v[V_CONF].s) {
        x->path = v[V_CONF].s;
        if (!*x->path)
            return fail(x, -EINVAL, vars[V_CONF].name, strlen(vars[V_CONF].name), "", 0,
                        "empty value (expected the path of a settings file)");
        int rc = read_file(x, buf, sizeof buf, fv);
        if (rc)
            return rc;
        for (int i = 0; i < V_COUNT; i++)
            if (!v[i].s)
                v[i] = fv[i];
    }
    for (int i = 0; i < V_COUNT; i++) {
        if (!v[i].s || !vars[i].parse)
            continue;
        if (!*v[i].s)
            return BAD(x, &vars[i], &v[i], "empty value (expected a value, or leave it unset)");
        int rc = vars[i].parse(x, &vars[i], &v[i]);
        if (rc)
            return rc;
    }
    int rc = check_gw(x, &v[V_GW]);
    return rc ? rc : check_gw6(x, &v[V_GW6]);
}

int shim_conf_load_from(struct shim_conf *c, shim_conf_lookup_fn lookup, void *ctx, char *err,
                        size_t errlen)
{
    struct ctx x = {.c = c, .err = err, .errlen = errlen, .path = ""};
    if (err && errlen)
        err[0] = '\0';
    defaults(&x);
    return load(&x, lookup, ctx);
}

static const char *env_lookup(void *ctx, const char *name)
{
    (void)ctx;
    return getenv(name);
}

int shim_conf_load(struct shim_conf *c, char *err, size_t errlen)
{
    struct ctx x = {.c = c, .err = err, .errlen = errlen, .path = ""};
    if (err && errlen)
        err[0] = '\0';
    defaults(&x);
    /* getenv() cannot tell us about names we do not ask for, so typos (USTACK_CORE) are
     * found by walking the environment itself. */
    for (char **e = environ; e && *e; e++) {
        const char *eq = strchr(*e, '=');
        size_t len = eq ? (size_t)(eq - *e) : strlen(*e);
        if (!ustack_name(*e, len) || !strncmp(*e, TEST_PREFIX, strlen(TEST_PREFIX)))
            continue;
        if (find_var(*e, len) < 0)
            return unknown_name(&x, *e, len, eq ? eq + 1 : "", 0);
    }
    return load(&x, env_lookup, NULL);
}

const char *shim_ip_str(uint32_t ip, char *buf)
{
    snprintf(buf, 16, "%u.%u.%u.%u", ip >> 24, ip >> 16 & 255, ip >> 8 & 255, ip & 255);
    return buf;
}

const char *shim_ip6_str(const uint8_t a[16], char *buf)
{
    if (!inet_ntop(AF_INET6, a, buf, 46))
        strcpy(buf, "?");
    return buf;
}

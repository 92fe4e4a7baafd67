/*
 * test_config.c - the USTACK_* configuration (shim/conf.c): defaults, every variable's good
 * and bad values, the USTACK_CONF file, environment-over-file precedence, unknown names,
 * and the CPU affinity check, always asserting on the one-line error that names the
 * variable.
 */
#define _GNU_SOURCE
#include <check.h>
#include <errno.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "conf.h"

/* ---- a fake environment for shim_conf_load_from() ------------------------------------ */

#define MAX_KV 32

struct env {
    const char *name[MAX_KV], *value[MAX_KV];
    unsigned n;
};

static const char *lookup(void *ctx, const char *name)
{
    const struct env *e = ctx;
    for (unsigned i = 0; i < e->n; i++)
        if (!strcmp(e->name[i], name))
            return e->value[i];
    return NULL;
}

static struct shim_conf c;
static char err[512];

/* load("NAME", "value", ..., NULL): shim_conf_load_from() over exactly those pairs. */
static int load(const char *first, ...)
{
    struct env e = {.n = 0};
    va_list ap;
    va_start(ap, first);
    for (const char *name = first; name; name = va_arg(ap, const char *)) {
        ck_assert_uint_lt(e.n, MAX_KV);
        e.name[e.n] = name;
        e.value[e.n++] = va_arg(ap, const char *);
    }
    va_end(ap);
    memset(&c, 0xa5, sizeof c); /* the loader must set every field itself */
    strcpy(err, "stale");
    return shim_conf_load_from(&c, lookup, &e, err, sizeof err);
}

#define OK(...)                                                                                    \
    do {                                                                                           \
        int rc_ = load(__VA_ARGS__, (const char *)NULL);                                           \
        ck_assert_msg(rc_ == 0, "rc %d: %s", rc_, err);                                            \
        ck_assert_str_eq(err, "");                                                                 \
    } while (0)

/* A failed load: rc, one line, starting "NAME=value: " and saying what is accepted (or, for
 * the affinity check, what is allowed), and containing needle. */
static void check_bad(int rc, int want_rc, const char *name, const char *value, const char *needle,
                      int line)
{
    char prefix[600];
    snprintf(prefix, sizeof prefix, "%s=%s: ", name, value);
    ck_assert_msg(rc == want_rc, "line %d: %s=%s: rc %d, want %d (%s)", line, name, value, rc,
                  want_rc, err);
    ck_assert_msg(!strncmp(err, prefix, strlen(prefix)), "line %d: err '%s' does not start '%s'",
                  line, err, prefix);
    ck_assert_msg(!strchr(err, '\n'), "line %d: err has a newline: %s", line, err);
    ck_assert_msg(strstr(err, "(expected ") || strstr(err, "(allowed: "),
                  "line %d: err does not say what is accepted: %s", line, err);
    if (needle)
        ck_assert_msg(strstr(err, needle), "line %d: err '%s' lacks '%s'", line, err, needle);
}

/* One variable alone with a bad value. */
#define BAD(name, value, needle)                                                                   \
    check_bad(load(name, value, (const char *)NULL), -EINVAL, name, value, needle, __LINE__)
/* A bad value among others: BAD_IN(name, value, needle, pairs...). */
#define BAD_IN(name, value, needle, ...)                                                           \
    check_bad(load(__VA_ARGS__, (const char *)NULL), -EINVAL, name, value, needle, __LINE__)

/* ---- CPU affinity helpers ------------------------------------------------------------ */

static cpu_set_t allowed;

static void get_allowed(void)
{
    CPU_ZERO(&allowed);
    ck_assert_int_eq(sched_getaffinity(0, sizeof allowed, &allowed), 0);
}

static int first_allowed(int from)
{
    for (int i = from; i < CPU_SETSIZE; i++)
        if (CPU_ISSET(i, &allowed))
            return i;
    return -1;
}

/* The affinity mask as the loader prints it, written independently: "0-1", "0,2-5". */
static void allowed_str(char *buf, size_t len)
{
    buf[0] = '\0';
    for (int i = 0; i < CPU_SETSIZE; i++) {
        if (!CPU_ISSET(i, &allowed))
            continue;
        int j = i;
        while (j + 1 < CPU_SETSIZE && CPU_ISSET(j + 1, &allowed))
            j++;
        size_t n = strlen(buf);
        if (j == i)
            snprintf(buf + n, len - n, "%s%d", n ? "," : "", i);
        else
            snprintf(buf + n, len - n, "%s%d-%d", n ? "," : "", i, j);
        i = j;
    }
}

/* ---- temporary files ----------------------------------------------------------------- */

static void write_file(char *path, const char *text, size_t len)
{
    strcpy(path, "/tmp/ustack-conf-XXXXXX");
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, text, len), (ssize_t)len);
    close(fd);
}

static void conf_file(char *path, const char *text)
{
    write_file(path, text, strlen(text));
}

/* ---- defaults and helpers ------------------------------------------------------------ */

START_TEST(defaults)
{
    get_allowed();
    OK(NULL);
    ck_assert_int_eq(c.enabled, 1);
    ck_assert_str_eq(c.dev, "");
    ck_assert_uint_eq(c.ip, 0);
    ck_assert_uint_eq(c.prefix, 0);
    ck_assert_uint_eq(c.gw, 0);
    ck_assert_int_eq(c.mac_set, 0);
    for (int i = 0; i < 6; i++)
        ck_assert_uint_eq(c.mac[i], 0);
    ck_assert_uint_eq(c.ncores, 1);
    ck_assert_uint_eq(c.cores[0], (unsigned)first_allowed(0));
    ck_assert_str_eq(c.eal, "");
    ck_assert_int_eq(c.log_level, SHIM_LOG_WARN);
    ck_assert_uint_eq(c.mtu, 1500);
    ck_assert_uint_eq(c.idle_spin_us, 50);
    ck_assert_uint_eq(c.idle_sleep_us, 2000);
    ck_assert_uint_eq(c.tx_flush_us, 0);
    ck_assert_uint_eq(c.sndbuf, 0);
    ck_assert_uint_eq(c.rcvbuf, 0);
    ck_assert_uint_eq(c.max_socks, 0);
    ck_assert_int_eq(c.cc, 0);
    ck_assert_uint_eq(c.tcp_retries, 0);
    ck_assert_uint_eq(c.rto_max_ms, 0);
    ck_assert_uint_eq(c.ipfrag_mem, 0);
    ck_assert_uint_eq(c.ipfrag_time_s, 0);
    ck_assert_uint_eq(c.mbufs, 16384);
    ck_assert_int_eq(c.huge, -1);

    /* No lookup at all is an empty environment. */
    memset(&c, 0xa5, sizeof c);
    ck_assert_int_eq(shim_conf_load_from(&c, NULL, NULL, err, sizeof err), 0);
    ck_assert_uint_eq(c.mtu, 1500);
    ck_assert_int_eq(c.huge, -1);
}
END_TEST

START_TEST(ip_str)
{
    char buf[16];
    ck_assert_str_eq(shim_ip_str(0, buf), "0.0.0.0");
    ck_assert_str_eq(shim_ip_str(0xffffffffu, buf), "255.255.255.255");
    ck_assert_str_eq(shim_ip_str(0xc6120001u, buf), "198.18.0.1");
    ck_assert_ptr_eq(shim_ip_str(0x0a000001u, buf), buf);
    ck_assert_str_eq(buf, "10.0.0.1");
}
END_TEST

/* ---- one test per variable ----------------------------------------------------------- */

/* The shared-memory sizes, ustackd's path, and the names libustack.so sets for its
 * descendants (which the configuration must know, or ustackd would refuse to start). */
START_TEST(shm_and_internal)
{
    OK("USTACK_DEV", "net_ring0");
    ck_assert_uint_eq(c.shm_socks, 16384);
    ck_assert_uint_eq(c.shm_ring, 65536);
    ck_assert_str_eq(c.stackd, "");
    OK("USTACK_SHM_SOCKS", "1024", "USTACK_SHM_RING", "1M", "USTACK_STACKD", "/opt/ustackd");
    ck_assert_uint_eq(c.shm_socks, 1024);
    ck_assert_uint_eq(c.shm_ring, 1u << 20);
    ck_assert_str_eq(c.stackd, "/opt/ustackd");
    BAD("USTACK_SHM_RING", "5000", "power of two");
    BAD("USTACK_SHM_RING", "2048", "out of range");
    BAD("USTACK_SHM_SOCKS", "8", "out of range");
    ck_assert_uint_eq(c.spare_fds, 64);
    OK("USTACK_SPARE_FDS", "0");
    ck_assert_uint_eq(c.spare_fds, 0);
    OK("USTACK_SPARE_FDS", "256");
    ck_assert_uint_eq(c.spare_fds, 256);
    BAD("USTACK_SPARE_FDS", "257", "out of range (expected 0..256)");
    BAD("USTACK_SPARE_FDS", "-1", "not a decimal number");
    OK("USTACK_DEV", "net_ring0");
    ck_assert_uint_eq(c.stackd_idle_ms, 500);
    OK("USTACK_STACKD_IDLE_MS", "0");
    ck_assert_uint_eq(c.stackd_idle_ms, 0);
    OK("USTACK_STACKD_IDLE_MS", "3600000");
    ck_assert_uint_eq(c.stackd_idle_ms, 3600000);
    BAD("USTACK_STACKD_IDLE_MS", "3600001", "out of range (expected 0..3600000)");
    OK("USTACK_SHM_FD", "1001", "USTACK_PIPE_FD", "1002", "USTACK_FDS", "1003,1004",
       "USTACK_READY_FD", "5", "USTACK_STACKD_LOG", "/tmp/x.log");
}
END_TEST

/* USTACK_NAME: a file-prefix-safe instance name that cannot pass for the unnamed form. */
START_TEST(instance_name)
{
    OK("USTACK_DEV", "net_ring0");
    ck_assert_str_eq(c.name, "");
    OK("USTACK_NAME", "web1");
    ck_assert_str_eq(c.name, "web1");
    OK("USTACK_NAME", "9a_b-c.d");
    ck_assert_str_eq(c.name, "9a_b-c.d");
    OK("USTACK_NAME", "abcdefghijklmnopqrstuvwxyz012345"); /* 32 */
    const char *bad[] = {
        "1234", "-x", ".x", "_x", "a/b", "a b", "a,b", "../x", "abcdefghijklmnopqrstuvwxyz0123456"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        BAD("USTACK_NAME", bad[i], "not an instance name");
}
END_TEST

/* USTACK_PCAP names a file (opened by ustackd); USTACK_PCAP_MAX bounds it in bytes. */
START_TEST(pcap)
{
    OK("USTACK_DEV", "net_ring0");
    ck_assert_str_eq(c.pcap, "");
    ck_assert_uint_eq(c.pcap_max, 64u << 20);
    OK("USTACK_PCAP", "/tmp/x.pcap", "USTACK_PCAP_MAX", "65536");
    ck_assert_str_eq(c.pcap, "/tmp/x.pcap");
    ck_assert_uint_eq(c.pcap_max, 65536);
    OK("USTACK_PCAP", "cap.pcap", "USTACK_PCAP_MAX", "4095M");
    ck_assert_str_eq(c.pcap, "cap.pcap");
    ck_assert_uint_eq(c.pcap_max, 4095u << 20);
    OK("USTACK_PCAP_MAX", "4K");
    ck_assert_uint_eq(c.pcap_max, 4096);
    BAD("USTACK_PCAP", "/tmp/", "names a directory");
    ck_assert_int_eq(load("USTACK_PCAP", "a\tb", (const char *)NULL), -EINVAL);
    ck_assert_str_eq(err, "USTACK_PCAP=a?b: contains a control character (expected the path of a "
                          "file to write)");
    char longp[300];
    memset(longp, 'a', sizeof longp - 1);
    longp[sizeof longp - 1] = '\0';
    ck_assert_int_eq(load("USTACK_PCAP", longp, (const char *)NULL), -EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "...: longer than 255 characters (expected the path"));
    BAD("USTACK_PCAP_MAX", "4095", "out of range (expected 4096..4293918720 bytes, or 4K..4095M)");
    BAD("USTACK_PCAP_MAX", "4096M", "out of range");
    BAD("USTACK_PCAP_MAX", "1G", "not a size");
    BAD("USTACK_PCAP_MAX", "-1", "not a size");
}
END_TEST

START_TEST(enabled)
{
    OK("USTACK", "0");
    ck_assert_int_eq(c.enabled, 0);
    OK("USTACK", "off");
    ck_assert_int_eq(c.enabled, 0);
    OK("USTACK", "1");
    ck_assert_int_eq(c.enabled, 1);
    OK("USTACK", "on");
    ck_assert_int_eq(c.enabled, 1);
    const char *bad[] = {"2", "yes", "ON", "true", " 1", "1 ", "01", "-1", "o"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        BAD("USTACK", bad[i], "(expected 0, 1, off or on)");
    /* Disabled still validates everything else. */
    BAD_IN("USTACK_MTU", "1", "out of range", "USTACK", "0", "USTACK_MTU", "1");
}
END_TEST

START_TEST(dev)
{
    OK("USTACK_DEV", "0000:01:00.0");
    ck_assert_str_eq(c.dev, "0000:01:00.0");
    OK("USTACK_DEV", "net_af_xdp0,iface=veth0");
    ck_assert_str_eq(c.dev, "net_af_xdp0,iface=veth0");

    char longest[300];
    memset(longest, 'd', 255);
    longest[255] = '\0';
    OK("USTACK_DEV", longest);
    ck_assert_str_eq(c.dev, longest);
    longest[255] = 'd';
    longest[256] = '\0';
    ck_assert_int_eq(load("USTACK_DEV", longest, NULL), -EINVAL);
    ck_assert_msg(!strncmp(err, "USTACK_DEV=ddd", 14), "%s", err);
    ck_assert_ptr_nonnull(strstr(err, "longer than 255 characters"));

    BAD("USTACK_DEV", "net_tap0, iface=x", "contains a blank");
    BAD("USTACK_DEV", " net_tap0", "contains a blank");
    ck_assert_int_eq(load("USTACK_DEV", "net_tap0\t", NULL), -EINVAL);
    ck_assert_msg(!strncmp(err, "USTACK_DEV=net_tap0?: contains a blank", 38), "%s", err);
    ck_assert_int_eq(load("USTACK_DEV", "net_tap0\x01", NULL), -EINVAL);
    ck_assert_msg(!strncmp(err, "USTACK_DEV=net_tap0?: contains", 30), "%s", err);
}
END_TEST

START_TEST(ip_good)
{
    OK("USTACK_IP", "10.0.0.1/24");
    ck_assert_uint_eq(c.ip, 0x0a000001u);
    ck_assert_uint_eq(c.prefix, 24);
    OK("USTACK_IP", "198.18.0.1/15");
    ck_assert_uint_eq(c.ip, 0xc6120001u);
    ck_assert_uint_eq(c.prefix, 15);
    OK("USTACK_IP", "223.255.255.254/32");
    ck_assert_uint_eq(c.ip, 0xdffffffeu);
    ck_assert_uint_eq(c.prefix, 32);
    /* RFC 3021: both addresses of a /31 are hosts; a /32 is its own network. */
    OK("USTACK_IP", "192.168.1.0/31");
    ck_assert_uint_eq(c.ip, 0xc0a80100u);
    OK("USTACK_IP", "192.168.1.255/32");
    OK("USTACK_IP", "10.0.0.5/30");
    OK("USTACK_IP", "1.2.3.4/0");
    ck_assert_uint_eq(c.prefix, 0);
}
END_TEST

START_TEST(ip_syntax)
{
    const char *bad[] = {"10.0.0/24",
                         "10.0.0.1",
                         "10.0.0.1/",
                         "10.0.0.1/33",
                         "10.0.0.1/100",
                         "256.0.0.1/24",
                         "10.0.0.01/24",
                         "010.0.0.1/24",
                         "10.0.0.1/024",
                         "10.0.0.1/24x",
                         "10.0.0.1/24/8",
                         "10.0.0.1 /24",
                         " 10.0.0.1/24",
                         "10.0.0.1/24 ",
                         "10.0.0.1/-1",
                         "10.0.0.1/+8",
                         "10.0.0.1.5/24",
                         "10..0.1/24",
                         "a.b.c.d/8",
                         "0x0a.0.0.1/8",
                         "10.0.0.1/99999999999999999999",
                         "99999999999999999999.0.0.1/8",
                         "::1/128"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        BAD("USTACK_IP", bad[i], "not an IPv4 address/prefix (expected a.b.c.d/0..32)");
    /* The header's own example, verbatim. */
    ck_assert_int_eq(load("USTACK_IP", "10.0.0/24", NULL), -EINVAL);
    ck_assert_str_eq(err, "USTACK_IP=10.0.0/24: not an IPv4 address/prefix (expected "
                          "a.b.c.d/0..32)");
}
END_TEST

START_TEST(ip_not_unicast)
{
    const char *bad[] = {"0.0.0.0/0",    "0.1.2.3/8",   "127.0.0.1/8",        "224.0.0.1/4",
                         "239.1.1.1/24", "240.0.0.1/4", "255.255.255.254/31", "255.255.255.255/32"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        BAD("USTACK_IP", bad[i], "not a unicast address");
}
END_TEST

START_TEST(ip_host_part)
{
    BAD("USTACK_IP", "10.0.0.0/24",
        "is the network address of its subnet (expected a host "
        "address in 10.0.0.0/24)");
    BAD("USTACK_IP", "10.0.0.255/24",
        "is the broadcast address of its subnet (expected a host "
        "address in 10.0.0.0/24)");
    BAD("USTACK_IP", "10.0.0.0/8", "network");
    BAD("USTACK_IP", "10.255.255.255/8", "broadcast");
    BAD("USTACK_IP", "10.0.0.4/30", "(expected a host address in 10.0.0.4/30)");
    BAD("USTACK_IP", "10.0.0.7/30", "broadcast");
    BAD("USTACK_IP", "198.19.255.255/15", "(expected a host address in 198.18.0.0/15)");
}
END_TEST

START_TEST(gw)
{
    OK("USTACK_IP", "10.0.0.2/24", "USTACK_GW", "10.0.0.1");
    ck_assert_uint_eq(c.gw, 0x0a000001u);
    OK("USTACK_IP", "10.0.0.2/24", "USTACK_GW", "10.0.0.254");
    OK("USTACK_IP", "198.18.0.1/15", "USTACK_GW", "198.19.0.1");
    OK("USTACK_IP", "10.0.0.1/31", "USTACK_GW", "10.0.0.0");
    /* Without USTACK_IP there is no subnet to check against. */
    OK("USTACK_GW", "192.0.2.1");
    ck_assert_uint_eq(c.gw, 0xc0000201u);
    ck_assert_uint_eq(c.ip, 0);

    BAD("USTACK_GW", "10.0.0.1/24", "not an IPv4 address (expected a.b.c.d)");
    BAD("USTACK_GW", "10.0.0", "not an IPv4 address");
    BAD("USTACK_GW", "10.0.0.1 ", "not an IPv4 address");
    BAD("USTACK_GW", "gateway", "not an IPv4 address");
    BAD("USTACK_GW", "0.0.0.0", "not a unicast address");
    BAD("USTACK_GW", "224.0.0.1", "not a unicast address");

    ck_assert_int_eq(load("USTACK_IP", "10.0.0.2/24", "USTACK_GW", "10.0.1.1", NULL), -EINVAL);
    ck_assert_str_eq(err, "USTACK_GW=10.0.1.1: not inside USTACK_IP's subnet 10.0.0.0/24 "
                          "(expected an address in 10.0.0.0/24)");
    BAD_IN("USTACK_GW", "10.0.0.2", "is USTACK_IP itself", "USTACK_IP", "10.0.0.2/24", "USTACK_GW",
           "10.0.0.2");
    BAD_IN("USTACK_GW", "10.0.0.0", "network address of 10.0.0.0/24", "USTACK_IP", "10.0.0.2/24",
           "USTACK_GW", "10.0.0.0");
    BAD_IN("USTACK_GW", "10.0.0.255", "broadcast address of 10.0.0.0/24", "USTACK_IP",
           "10.0.0.2/24", "USTACK_GW", "10.0.0.255");
    BAD_IN("USTACK_GW", "10.0.0.3", "not inside", "USTACK_IP", "10.0.0.2/32", "USTACK_GW",
           "10.0.0.3");
}
END_TEST

START_TEST(ip6_and_gw6)
{
    static const uint8_t want[16] = {0x20, 0x01, 0, 2, [15] = 2};
    static const uint8_t ll1[16] = {0xfe, 0x80, [15] = 1};
    static const uint8_t zero[16];
    OK("USTACK_IP6", "2001:2::2/64");
    ck_assert_mem_eq(c.ip6, want, 16);
    ck_assert_uint_eq(c.ip6_prefix, 64);
    ck_assert_mem_eq(c.gw6, zero, 16);
    OK("USTACK_IP6", "2001:0002:0:0:0:0:0:2/128");
    ck_assert_mem_eq(c.ip6, want, 16);
    OK("USTACK_IP6", "2001:2::2/48", "USTACK_GW6", "2001:2::1");
    OK("USTACK_IP6", "2001:2::2/64", "USTACK_GW6", "fe80::1");
    ck_assert_mem_eq(c.gw6, ll1, 16);
    /* A link-local gateway needs no global address. */
    OK("USTACK_GW6", "fe80::1");
    OK("USTACK", "1");
    ck_assert_mem_eq(c.ip6, zero, 16);

    BAD("USTACK_IP6", "2001:2::2", "not an IPv6 address/prefix (expected e.g. 2001:db8::2/64");
    BAD("USTACK_IP6", "2001:2::2/0", "not an IPv6 address/prefix");
    BAD("USTACK_IP6", "2001:2::2/129", "not an IPv6 address/prefix");
    BAD("USTACK_IP6", "2001:2::2/064", "not an IPv6 address/prefix");
    BAD("USTACK_IP6", "2001:2::g/64", "not an IPv6 address/prefix");
    BAD("USTACK_IP6", "2001:2::2%eth0/64", "not an IPv6 address/prefix");
    BAD("USTACK_IP6", "198.18.0.1/24", "not an IPv6 address/prefix");
    BAD("USTACK_IP6", "::/64", "is the unspecified address");
    BAD("USTACK_IP6", "::1/128", "is the loopback address");
    BAD("USTACK_IP6", "ff02::1/64", "is a multicast address");
    BAD("USTACK_IP6", "::ffff:198.18.0.1/96", "is an IPv4-mapped address");
    BAD("USTACK_IP6", "fe80::2/64", "is link-local");
    BAD("USTACK_GW6", "2001:2::1/64", "not an IPv6 address (expected e.g. fe80::1");
    BAD("USTACK_GW6", "ff02::2", "is a multicast address");
    BAD("USTACK_GW6", "2001:2::1", "USTACK_IP6 is not set");
    BAD_IN("USTACK_GW6", "2001:3::1", "not inside USTACK_IP6's prefix 2001:2::2/64", "USTACK_IP6",
           "2001:2::2/64", "USTACK_GW6", "2001:3::1");
    BAD_IN("USTACK_GW6", "2001:2::2", "is USTACK_IP6 itself", "USTACK_IP6", "2001:2::2/64",
           "USTACK_GW6", "2001:2::2");
}
END_TEST

START_TEST(mac)
{
    OK("USTACK_MAC", "02:00:00:00:00:01");
    ck_assert_int_eq(c.mac_set, 1);
    const uint8_t want[6] = {2, 0, 0, 0, 0, 1};
    ck_assert_mem_eq(c.mac, want, 6);
    OK("USTACK_MAC", "02:AB:cd:Ef:90:fe");
    const uint8_t want2[6] = {0x02, 0xab, 0xcd, 0xef, 0x90, 0xfe};
    ck_assert_mem_eq(c.mac, want2, 6);

    const char *bad[] = {"02:00:00:00:00",     "02:00:00:00:00:01:02", "2:00:00:00:00:01",
                         "02:00:00:00:00:1",   "02-00-00-00-00-01",    "02:00:00:00:00:0g",
                         "0200.0000.0001",     "02:00:00:00:00:01 ",   " 02:00:00:00:00:01",
                         "020:00:00:00:00:01", "02:00:00:00:00:",      "x"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        BAD("USTACK_MAC", bad[i], "not a MAC address (expected xx:xx:xx:xx:xx:xx");
    BAD("USTACK_MAC", "01:00:5e:00:00:01", "is a multicast address");
    BAD("USTACK_MAC", "ff:ff:ff:ff:ff:ff", "is a multicast address");
    BAD("USTACK_MAC", "00:00:00:00:00:00", "is all zeros");
}
END_TEST

START_TEST(cores_good)
{
    get_allowed();
    int a = first_allowed(0);
    ck_assert_int_ge(a, 0);
    char s[64];
    snprintf(s, sizeof s, "%d", a);
    OK("USTACK_CORES", s);
    ck_assert_uint_eq(c.ncores, 1);
    ck_assert_uint_eq(c.cores[0], (unsigned)a);

    int b = first_allowed(a + 1);
    if (b < 0)
        return; /* a one-CPU machine: nothing more to list */
    snprintf(s, sizeof s, "%d,%d", a, b);
    OK("USTACK_CORES", s);
    ck_assert_uint_eq(c.ncores, 2);
    ck_assert_uint_eq(c.cores[0], (unsigned)a);
    ck_assert_uint_eq(c.cores[1], (unsigned)b);
    if (b == a + 1) {
        snprintf(s, sizeof s, "%d-%d", a, b);
        OK("USTACK_CORES", s);
        ck_assert_uint_eq(c.ncores, 2);
        ck_assert_uint_eq(c.cores[1], (unsigned)b);
        snprintf(s, sizeof s, "%d-%d", a, a);
        OK("USTACK_CORES", s);
        ck_assert_uint_eq(c.ncores, 1);
    }
    /* Every allowed CPU (up to the limit), as single ids: the list form that grows. */
    size_t n = 0;
    unsigned count = 0;
    for (int i = first_allowed(0); i >= 0 && count < SHIM_MAX_CORES && n < 40;
         i = first_allowed(i + 1), count++)
        n += (size_t)snprintf(s + n, sizeof s - n, "%s%d", n ? "," : "", i);
    OK("USTACK_CORES", s);
    ck_assert_uint_eq(c.ncores, count);
    for (unsigned i = 1; i < c.ncores; i++)
        ck_assert_uint_gt(c.cores[i], c.cores[i - 1]);
}
END_TEST

START_TEST(cores_syntax)
{
    const char *bad[] = {"a",    "0,",   ",0", "0,,1", "0-",  "-1", "0-1-2", "0 ,1",
                         "0, 1", " 0",   "0 ", "0x1",  "00",  "01", "1.5",   "+1",
                         "0;1",  "0-1,", "-",  "0--1", "0:1", "all"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        BAD("USTACK_CORES", bad[i],
            "not a CPU list (expected CPU ids and ranges in ascending "
            "order, e.g. 0,2-3)");
}
END_TEST

START_TEST(cores_order)
{
    BAD("USTACK_CORES", "1,0", "CPU 0 is out of order");
    BAD("USTACK_CORES", "0,2,1", "CPU 1 is out of order");
    BAD("USTACK_CORES", "2-3,0-1", "CPU 0 is out of order");
    BAD("USTACK_CORES", "0,0", "CPU 0 is listed twice");
    BAD("USTACK_CORES", "0-3,2", "CPU 2 is listed twice");
    BAD("USTACK_CORES", "0-3,3-4", "CPU 3 is listed twice");
    BAD("USTACK_CORES", "3-1", "range 3-1 is reversed");
    /* Syntax is reported before affinity, wherever the typo is. */
    BAD("USTACK_CORES", "4000,x", "not a CPU list");
}
END_TEST

START_TEST(cores_limits)
{
    BAD("USTACK_CORES", "0-64", "more than 64 CPUs (expected at most 64)");
    BAD("USTACK_CORES", "0-4095", "more than 64 CPUs");
    BAD("USTACK_CORES", "0-31,100-132", "more than 64 CPUs");
    BAD("USTACK_CORES", "4096", "CPU id out of range (expected ids 0..4095)");
    BAD("USTACK_CORES", "0-4096", "CPU id out of range");
    BAD("USTACK_CORES", "99999999999999999999", "CPU id out of range");
    /* Exactly 64 parses; only the affinity check (on a small machine) can refuse it. */
    int rc = load("USTACK_CORES", "0-63", NULL);
    if (rc != 0)
        ck_assert_msg(strstr(err, "is not available to this process"), "%s", err);
}
END_TEST

START_TEST(cores_affinity)
{
    get_allowed();
    int outside = -1;
    for (int i = 0; i < CPU_SETSIZE && outside < 0; i++)
        if (!CPU_ISSET(i, &allowed))
            outside = i;
    ck_assert_int_ge(outside, 0);
    char val[32], want[256], list[128];
    allowed_str(list, sizeof list);
    snprintf(val, sizeof val, "%d", outside);
    snprintf(want, sizeof want,
             "USTACK_CORES=%d: CPU %d is not available to this process "
             "(allowed: %s)",
             outside, outside, list);
    ck_assert_int_eq(load("USTACK_CORES", val, NULL), -EINVAL);
    ck_assert_str_eq(err, want);

    /* Past CPU_SETSIZE, and in the middle of an otherwise good list. */
    BAD("USTACK_CORES", "4095", "CPU 4095 is not available to this process (allowed: ");
    snprintf(val, sizeof val, "%d,4000-4001", first_allowed(0));
    BAD("USTACK_CORES", val, "CPU 4000 is not available");
}
END_TEST

/* With CPU 0 taken away (taskset), the default follows the mask instead of naming a CPU
 * that start-up would then refuse. */
START_TEST(cores_default_follows_affinity)
{
    get_allowed();
    int a = first_allowed(0), b = a >= 0 ? first_allowed(a + 1) : -1;
    if (b < 0)
        return; /* one CPU: nothing to take away */
    cpu_set_t saved = allowed, only;
    CPU_ZERO(&only);
    CPU_SET(b, &only);
    ck_assert_int_eq(sched_setaffinity(0, sizeof only, &only), 0);
    OK(NULL);
    ck_assert_uint_eq(c.ncores, 1);
    ck_assert_uint_eq(c.cores[0], (unsigned)b);
    char val[16], want[32];
    snprintf(val, sizeof val, "%d", a);
    snprintf(want, sizeof want, "(allowed: %d)", b);
    BAD("USTACK_CORES", val, want);
    ck_assert_int_eq(sched_setaffinity(0, sizeof saved, &saved), 0);
}
END_TEST

START_TEST(eal)
{
    OK("USTACK_EAL", "--no-huge -m 256 --no-pci");
    ck_assert_str_eq(c.eal, "--no-huge -m 256 --no-pci");
    char v[600];
    memset(v, 'e', 511);
    v[511] = '\0';
    OK("USTACK_EAL", v);
    ck_assert_uint_eq(strlen(c.eal), 511);
    v[511] = 'e';
    v[512] = '\0';
    ck_assert_int_eq(load("USTACK_EAL", v, NULL), -EINVAL);
    ck_assert_msg(!strncmp(err, "USTACK_EAL=eee", 14), "%s", err);
    ck_assert_ptr_nonnull(strstr(err, "longer than 511 characters (expected"));
}
END_TEST

START_TEST(log_level)
{
    const char *good[] = {"error", "warn", "info", "debug", "0", "1", "2", "3"};
    for (int i = 0; i < 8; i++) {
        OK("USTACK_LOG", good[i]);
        ck_assert_int_eq(c.log_level, SHIM_LOG_ERROR + i % 4);
    }
    const char *bad[] = {"4", "-1", "01", "WARN", "warning", "err", "debug ", "3x", "trace"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        BAD("USTACK_LOG", bad[i], "not a log level (expected error, warn, info, debug or 0..3)");
}
END_TEST

START_TEST(mtu)
{
    OK("USTACK_MTU", "576");
    ck_assert_uint_eq(c.mtu, 576);
    OK("USTACK_MTU", "9000");
    ck_assert_uint_eq(c.mtu, 9000);
    OK("USTACK_MTU", "1500");
    ck_assert_uint_eq(c.mtu, 1500);
    BAD("USTACK_MTU", "575", "out of range (expected 576..9000)");
    BAD("USTACK_MTU", "9001", "out of range (expected 576..9000)");
    BAD("USTACK_MTU", "0", "out of range");
    BAD("USTACK_MTU", "4294967297", "out of range");
    BAD("USTACK_MTU", "99999999999999999999999999", "out of range");
    const char *bad[] = {"1500x", "abc",   "-1500", "+1500",  "01500", "1e3",   " 1500",
                         "1500 ", "15 00", "0x5dc", "1500.0", "1,500", "1500\n"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        ck_assert_int_eq(load("USTACK_MTU", bad[i], NULL), -EINVAL);
        ck_assert_msg(strstr(err, "not a decimal number (expected 576..9000)"), "%s", err);
        ck_assert_msg(!strncmp(err, "USTACK_MTU=", 11), "%s", err);
    }
}
END_TEST

START_TEST(idle_and_flush)
{
    OK("USTACK_IDLE_SPIN_US", "0", "USTACK_IDLE_SLEEP_US", "10", "USTACK_TX_FLUSH_US", "0");
    ck_assert_uint_eq(c.idle_spin_us, 0);
    ck_assert_uint_eq(c.idle_sleep_us, 10);
    ck_assert_uint_eq(c.tx_flush_us, 0);
    OK("USTACK_IDLE_SPIN_US", "1000000", "USTACK_IDLE_SLEEP_US", "100000", "USTACK_TX_FLUSH_US",
       "1000");
    ck_assert_uint_eq(c.idle_spin_us, 1000000);
    ck_assert_uint_eq(c.idle_sleep_us, 100000);
    ck_assert_uint_eq(c.tx_flush_us, 1000);
    ck_assert_uint_eq(c.idle_yield, 1);
    OK("USTACK_IDLE_YIELD", "0");
    ck_assert_uint_eq(c.idle_yield, 0);
    OK("USTACK_IDLE_YIELD", "1");
    ck_assert_uint_eq(c.idle_yield, 1);
    BAD("USTACK_IDLE_YIELD", "2", "out of range (expected 0..1)");
    BAD("USTACK_IDLE_YIELD", "yes", "not a decimal number");
    BAD("USTACK_IDLE_SPIN_US", "1000001", "out of range (expected 0..1000000)");
    BAD("USTACK_IDLE_SPIN_US", "-1", "not a decimal number");
    BAD("USTACK_IDLE_SLEEP_US", "9", "out of range (expected 10..100000)");
    BAD("USTACK_IDLE_SLEEP_US", "100001", "out of range (expected 10..100000)");
    BAD("USTACK_IDLE_SLEEP_US", "1ms", "not a decimal number");
    BAD("USTACK_TX_FLUSH_US", "1001", "out of range (expected 0..1000)");
    BAD("USTACK_TX_FLUSH_US", "00", "not a decimal number");
    ck_assert_uint_eq(c.ack_piggyback, 1);
    OK("USTACK_ACK_PIGGYBACK", "0");
    ck_assert_uint_eq(c.ack_piggyback, 0);
    OK("USTACK_ACK_PIGGYBACK", "1");
    ck_assert_uint_eq(c.ack_piggyback, 1);
    BAD("USTACK_ACK_PIGGYBACK", "2", "out of range (expected 0..1)");
    BAD("USTACK_ACK_PIGGYBACK", "on", "not a decimal number");
}
END_TEST

START_TEST(buffers)
{
    OK("USTACK_SNDBUF", "4096", "USTACK_RCVBUF", "67108864");
    ck_assert_uint_eq(c.sndbuf, 4096);
    ck_assert_uint_eq(c.rcvbuf, 64u << 20);
    OK("USTACK_SNDBUF", "4K", "USTACK_RCVBUF", "64M");
    ck_assert_uint_eq(c.sndbuf, 4096);
    ck_assert_uint_eq(c.rcvbuf, 64u << 20);
    OK("USTACK_SNDBUF", "256k", "USTACK_RCVBUF", "1m");
    ck_assert_uint_eq(c.sndbuf, 256u << 10);
    ck_assert_uint_eq(c.rcvbuf, 1u << 20);
    OK("USTACK_SNDBUF", "65536K");
    ck_assert_uint_eq(c.sndbuf, 64u << 20);
    OK("USTACK_RCVBUF", "100000"); /* the engine rounds up to a power of two */
    ck_assert_uint_eq(c.rcvbuf, 100000);
    OK("USTACK_RCVBUF_MAX", "8M");
    ck_assert_uint_eq(c.rcvbuf_max, 8u << 20);
    OK("USTACK_SNDBUF_MAX", "512K");
    ck_assert_uint_eq(c.sndbuf_max, 512u << 10);
    ck_assert_uint_eq(c.tcp_mem, 0);
    OK("USTACK_TCP_MEM", "1M");
    ck_assert_uint_eq(c.tcp_mem, 1u << 20);
    OK("USTACK_TCP_MEM", "4095M");
    ck_assert_uint_eq(c.tcp_mem, 4095u << 20);
    OK("USTACK_TCP_MEM", "262144K");
    ck_assert_uint_eq(c.tcp_mem, 256u << 20);
    const char *mem_bad[] = {"1023K", "4096M", "4294967296", "0"};
    for (size_t i = 0; i < sizeof mem_bad / sizeof *mem_bad; i++)
        BAD("USTACK_TCP_MEM", mem_bad[i],
            "out of range (expected 1048576..4293918720 bytes, or 1024K..4095M)");
    BAD("USTACK_TCP_MEM", "4G", "not a size");

    const char *range[] = {"4095",   "3K",       "0",          "65M",
                           "65537K", "67108865", "4294967296", "99999999999999999999M"};
    for (size_t i = 0; i < sizeof range / sizeof *range; i++) {
        BAD("USTACK_SNDBUF", range[i], "out of range (expected 4096..67108864 bytes, or 4K..64M)");
        BAD("USTACK_RCVBUF", range[i], "out of range");
        BAD("USTACK_RCVBUF_MAX", range[i], "out of range");
        BAD("USTACK_SNDBUF_MAX", range[i], "out of range");
    }
    const char *syntax[] = {"4KB", "4G", "K", "1.5M", "-4096", "4 K", "4096 ", "0x1000", "04K"};
    for (size_t i = 0; i < sizeof syntax / sizeof *syntax; i++) {
        BAD("USTACK_SNDBUF", syntax[i], "not a size (expected 4096..67108864 bytes, or 4K..64M)");
        BAD("USTACK_RCVBUF", syntax[i], "not a size");
        BAD("USTACK_RCVBUF_MAX", syntax[i], "not a size");
        BAD("USTACK_SNDBUF_MAX", syntax[i], "not a size");
    }
}
END_TEST

START_TEST(socks_and_mbufs)
{
    OK("USTACK_MAX_SOCKS", "16", "USTACK_MBUFS", "1024");
    ck_assert_uint_eq(c.max_socks, 16);
    ck_assert_uint_eq(c.mbufs, 1024);
    OK("USTACK_MAX_SOCKS", "16777216", "USTACK_MBUFS", "1048576");
    ck_assert_uint_eq(c.max_socks, 16777216);
    ck_assert_uint_eq(c.mbufs, 1048576);
    BAD("USTACK_MAX_SOCKS", "15", "out of range (expected 16..16777216)");
    BAD("USTACK_MAX_SOCKS", "16777217", "out of range");
    BAD("USTACK_MAX_SOCKS", "0", "out of range");
    BAD("USTACK_MAX_SOCKS", "1K", "not a decimal number");
    BAD("USTACK_MBUFS", "1023", "out of range (expected 1024..1048576)");
    BAD("USTACK_MBUFS", "1048577", "out of range");
    BAD("USTACK_MBUFS", "16384 ", "not a decimal number");
}
END_TEST

START_TEST(tcp_timers)
{
    OK("USTACK_TCP_RETRIES", "1", "USTACK_TCP_RTO_MAX_MS", "1000");
    ck_assert_uint_eq(c.tcp_retries, 1);
    ck_assert_uint_eq(c.rto_max_ms, 1000);
    OK("USTACK_TCP_RETRIES", "255", "USTACK_TCP_RTO_MAX_MS", "120000");
    ck_assert_uint_eq(c.tcp_retries, 255);
    ck_assert_uint_eq(c.rto_max_ms, 120000);
    BAD("USTACK_TCP_RETRIES", "0", "out of range (expected 1..255)");
    BAD("USTACK_TCP_RETRIES", "256", "out of range");
    BAD("USTACK_TCP_RETRIES", "-1", "not a decimal number");
    BAD("USTACK_TCP_RTO_MAX_MS", "999", "out of range (expected 1000..120000)");
    BAD("USTACK_TCP_RTO_MAX_MS", "120001", "out of range");
    BAD("USTACK_TCP_RTO_MAX_MS", "1s", "not a decimal number");
}
END_TEST

START_TEST(ipfrag)
{
    OK("USTACK_IPFRAG_MEM", "64K", "USTACK_IPFRAG_TIME", "1");
    ck_assert_uint_eq(c.ipfrag_mem, 65536);
    ck_assert_uint_eq(c.ipfrag_time_s, 1);
    OK("USTACK_IPFRAG_MEM", "1024M", "USTACK_IPFRAG_TIME", "3600");
    ck_assert_uint_eq(c.ipfrag_mem, 1024u << 20);
    ck_assert_uint_eq(c.ipfrag_time_s, 3600);
    OK("USTACK_IPFRAG_MEM", "4194304");
    ck_assert_uint_eq(c.ipfrag_mem, 4u << 20);
    BAD("USTACK_IPFRAG_MEM", "65535", "out of range");
    BAD("USTACK_IPFRAG_MEM", "1025M", "out of range");
    BAD("USTACK_IPFRAG_MEM", "4G", "");
    BAD("USTACK_IPFRAG_TIME", "0", "out of range (expected 1..3600)");
    BAD("USTACK_IPFRAG_TIME", "3601", "out of range");
    BAD("USTACK_IPFRAG_TIME", "30s", "not a decimal number");
}
END_TEST

START_TEST(cc_and_huge)
{
    OK("USTACK_CC", "cubic");
    ck_assert_int_eq(c.cc, 1);
    OK("USTACK_CC", "newreno");
    ck_assert_int_eq(c.cc, 0);
    BAD("USTACK_CC", "reno", "(expected newreno or cubic)");
    BAD("USTACK_CC", "CUBIC", "(expected newreno or cubic)");
    BAD("USTACK_CC", "1", "(expected newreno or cubic)");
    BAD("USTACK_CC", "bbr", "(expected newreno or cubic)");

    OK("USTACK_HUGE", "0");
    ck_assert_int_eq(c.huge, 0);
    OK("USTACK_HUGE", "1");
    ck_assert_int_eq(c.huge, 1);
    OK("USTACK_HUGE", "auto");
    ck_assert_int_eq(c.huge, -1);
    BAD("USTACK_HUGE", "2", "(expected auto, 0 or 1)");
    BAD("USTACK_HUGE", "yes", "(expected auto, 0 or 1)");
    BAD("USTACK_HUGE", "AUTO", "(expected auto, 0 or 1)");
    BAD("USTACK_HUGE", "-1", "(expected auto, 0 or 1)");
}
END_TEST

/* Set but empty is a mistake (a script's unset shell variable), never "the default". */
START_TEST(empty_values)
{
    const char *names[] = {"USTACK",
                           "USTACK_DEV",
                           "USTACK_IP",
                           "USTACK_GW",
                           "USTACK_MAC",
                           "USTACK_CORES",
                           "USTACK_EAL",
                           "USTACK_LOG",
                           "USTACK_MTU",
                           "USTACK_IDLE_SPIN_US",
                           "USTACK_IDLE_SLEEP_US",
                           "USTACK_IDLE_YIELD",
                           "USTACK_TX_FLUSH_US",
                           "USTACK_ACK_PIGGYBACK",
                           "USTACK_SNDBUF",
                           "USTACK_RCVBUF",
                           "USTACK_RCVBUF_MAX",
                           "USTACK_SNDBUF_MAX",
                           "USTACK_TCP_MEM",
                           "USTACK_MAX_SOCKS",
                           "USTACK_CC",
                           "USTACK_MBUFS",
                           "USTACK_HUGE",
                           "USTACK_SPARE_FDS",
                           "USTACK_CONF"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        BAD(names[i], "", "empty value");
}
END_TEST

/* The first bad variable is reported, and the rest of the struct is not trusted. */
START_TEST(several_bad)
{
    int rc = load("USTACK_MTU", "1", "USTACK_LOG", "loud", NULL);
    ck_assert_int_eq(rc, -EINVAL);
    ck_assert_msg(!strncmp(err, "USTACK_LOG=loud: ", 17), "%s", err);
}
END_TEST

START_TEST(error_text)
{
    /* Long values are cut, control bytes masked, and the reason survives. */
    char v[200];
    memset(v, 'x', sizeof v - 1);
    v[sizeof v - 1] = '\0';
    ck_assert_int_eq(load("USTACK_LOG", v, NULL), -EINVAL);
    ck_assert_msg(strstr(err, "xxx...: not a log level (expected"), "%s", err);
    ck_assert_uint_lt(strlen(err), 160);
    ck_assert_int_eq(load("USTACK_LOG", "de\nbug\x1b", NULL), -EINVAL);
    ck_assert_str_eq(err, "USTACK_LOG=de?bug?: not a log level (expected error, warn, info, "
                          "debug or 0..3)");

    /* A short buffer is truncated and terminated; none at all still returns the error. */
    struct env e = {.name = {"USTACK_MTU"}, .value = {"1"}, .n = 1};
    char small[12];
    memset(small, '#', sizeof small);
    ck_assert_int_eq(shim_conf_load_from(&c, lookup, &e, small, sizeof small), -EINVAL);
    ck_assert_str_eq(small, "USTACK_MTU=");
    char one[1] = {'#'};
    ck_assert_int_eq(shim_conf_load_from(&c, lookup, &e, one, sizeof one), -EINVAL);
    ck_assert_int_eq(one[0], '\0');
    ck_assert_int_eq(shim_conf_load_from(&c, lookup, &e, NULL, 0), -EINVAL);
    char untouched[4] = "abc";
    ck_assert_int_eq(shim_conf_load_from(&c, lookup, &e, untouched, 0), -EINVAL);
    ck_assert_str_eq(untouched, "abc");
    /* Success clears err. */
    e.value[0] = "1500";
    strcpy(err, "stale");
    ck_assert_int_eq(shim_conf_load_from(&c, lookup, &e, err, sizeof err), 0);
    ck_assert_str_eq(err, "");
}
END_TEST

/* ---- the USTACK_CONF file ------------------------------------------------------------ */

START_TEST(file_basic)
{
    char path[64];
    conf_file(path, "# ustack settings\n"
                    "\n"
                    "USTACK_IP=10.0.0.2/24\n"
                    "  USTACK_GW =  10.0.0.1  \n"
                    "\t# indented comment\n"
                    "USTACK_MTU=9000\r\n"
                    "USTACK_EAL=\"--no-huge -m 256\"\n"
                    "USTACK_DEV='net_tap0,iface=t0'\n"
                    "USTACK_LOG=debug\n"
                    "   \n"
                    "USTACK_CC=cubic"); /* no final newline */
    OK("USTACK_CONF", path);
    unlink(path);
    ck_assert_uint_eq(c.ip, 0x0a000002u);
    ck_assert_uint_eq(c.prefix, 24);
    ck_assert_uint_eq(c.gw, 0x0a000001u);
    ck_assert_uint_eq(c.mtu, 9000);
    ck_assert_str_eq(c.eal, "--no-huge -m 256");
    ck_assert_str_eq(c.dev, "net_tap0,iface=t0");
    ck_assert_int_eq(c.log_level, SHIM_LOG_DEBUG);
    ck_assert_int_eq(c.cc, 1);
    ck_assert_uint_eq(c.mbufs, 16384); /* untouched defaults stay */

    /* An empty file, and one of only comments, change nothing. */
    conf_file(path, "");
    OK("USTACK_CONF", path);
    ck_assert_uint_eq(c.mtu, 1500);
    unlink(path);
    conf_file(path, "#USTACK_MTU=9000\n# USTACK_CORE=1\n");
    OK("USTACK_CONF", path);
    ck_assert_uint_eq(c.mtu, 1500);
    unlink(path);
}
END_TEST

/* A bad value in the file says which line it is on. */
START_TEST(file_value_location)
{
    char path[64], want[256];
    conf_file(path, "# tuning\nUSTACK_LOG=info\nUSTACK_MTU=10\n");
    ck_assert_int_eq(load("USTACK_CONF", path, NULL), -EINVAL);
    snprintf(want, sizeof want, "USTACK_MTU=10: out of range (expected 576..9000) [from %s:3]",
             path);
    ck_assert_str_eq(err, want);
    unlink(path);

    /* Comments do not follow values; an empty value after trimming is empty; quotes that
     * enclose nothing leave nothing. */
    conf_file(path, "USTACK_MTU=1500 # standard\n");
    ck_assert_int_eq(load("USTACK_CONF", path, NULL), -EINVAL);
    ck_assert_msg(!strncmp(err, "USTACK_MTU=1500 # standard: not a decimal number", 48), "%s", err);
    unlink(path);
    conf_file(path, "USTACK_EAL=   \n");
    ck_assert_int_eq(load("USTACK_CONF", path, NULL), -EINVAL);
    ck_assert_msg(!strncmp(err, "USTACK_EAL=: empty value", 24), "%s", err);
    unlink(path);
    conf_file(path, "USTACK_EAL=\"\"\n");
    ck_assert_int_eq(load("USTACK_CONF", path, NULL), -EINVAL);
    ck_assert_msg(!strncmp(err, "USTACK_EAL=: empty value", 24), "%s", err);
    unlink(path);
    conf_file(path, "USTACK_LOG=\"info'\n"); /* mismatched quotes are kept */
    ck_assert_int_eq(load("USTACK_CONF", path, NULL), -EINVAL);
    ck_assert_msg(!strncmp(err, "USTACK_LOG=\"info': not a log level", 34), "%s", err);
    unlink(path);

    /* The gateway check runs on the file's values too, and blames the gateway's line. */
    conf_file(path, "USTACK_GW=10.9.0.1\nUSTACK_IP=10.0.0.2/16\n");
    ck_assert_int_eq(load("USTACK_CONF", path, NULL), -EINVAL);
    snprintf(want, sizeof want,
             "USTACK_GW=10.9.0.1: not inside USTACK_IP's subnet 10.0.0.0/16 "
             "(expected an address in 10.0.0.0/16) [from %s:1]",
             path);
    ck_assert_str_eq(err, want);
    unlink(path);
}
END_TEST

START_TEST(file_syntax)
{
    char path[64];
    struct {
        const char *text, *err_start, *needle;
    } cases[] = {
        {"USTACK_MTU=1500\nUSTACK_LOG\n", "USTACK_CONF=", "line 2 has no '=' (expected"},
        {"FOO=1\n", "USTACK_CONF=", "line 1: FOO is not a USTACK_* name (expected"},
        {"ustack_mtu=1500\n", "USTACK_CONF=", "line 1: ustack_mtu is not a USTACK_* name"},
        {"=1500\n", "USTACK_CONF=", "is not a USTACK_* name"},
        {"USTACK_=1\n", "USTACK_CONF=", "line 1: USTACK_ is not a USTACK_* name"},
        {"\n\nUSTACK_CORE=0\n", "USTACK_CORE=0: ",
         "unknown variable (expected a USTACK_* name from docs/configuration.md; did you mean "
         "USTACK_CORES?) [from "},
        {"USTACK_MTUU=1500\n", "USTACK_MTUU=1500: ", "did you mean USTACK_MTU?"},
        {"USTACK_FROBNICATE=1\n", "USTACK_FROBNICATE=1: ",
         "unknown variable (expected a USTACK_* name from docs/configuration.md) [from "},
        {"USTACK_TEST_PCAP=/tmp/x\n", "USTACK_TEST_PCAP=/tmp/x: ", "unknown variable"},
        {"USTACK_MTU=1500\nUSTACK_LOG=info\nUSTACK_MTU=9000\n",
         "USTACK_MTU=9000: ", "set twice in the file (expected each name once; first at line 1)"},
        {"USTACK_CONF=/etc/other\n", "USTACK_CONF=/etc/other: ",
         "set inside the USTACK_CONF file (expected it in the environment only)"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        conf_file(path, cases[i].text);
        ck_assert_int_eq(load("USTACK_CONF", path, NULL), -EINVAL);
        unlink(path);
        ck_assert_msg(!strncmp(err, cases[i].err_start, strlen(cases[i].err_start)), "case %zu: %s",
                      i, err);
        ck_assert_msg(strstr(err, cases[i].needle), "case %zu: %s", i, err);
        ck_assert_msg(!strchr(err, '\n'), "case %zu: %s", i, err);
    }

    /* Binary content and oversized files are refused whole. */
    write_file(path, "USTACK_MTU=1500\n\0\n", 18);
    ck_assert_int_eq(load("USTACK_CONF", path, NULL), -EINVAL);
    unlink(path);
    ck_assert_msg(strstr(err, "contains a NUL byte"), "%s", err);
    ck_assert_msg(!strncmp(err, "USTACK_CONF=/tmp/", 17), "%s", err);
    static char big[10000];
    for (size_t i = 0; i < sizeof big; i++)
        big[i] = i % 50 == 49 ? '\n' : '#';
    write_file(path, big, sizeof big);
    ck_assert_int_eq(load("USTACK_CONF", path, NULL), -EINVAL);
    unlink(path);
    ck_assert_msg(strstr(err, "larger than 8192 bytes"), "%s", err);
    write_file(path, big, 8193);
    ck_assert_int_eq(load("USTACK_CONF", path, NULL), -EINVAL);
    unlink(path);
    ck_assert_msg(strstr(err, "larger than 8192 bytes"), "%s", err);
    /* ... while 8192 bytes of comments are fine. */
    write_file(path, big, 8192);
    OK("USTACK_CONF", path);
    unlink(path);
}
END_TEST

START_TEST(file_missing)
{
    char want[256];
    ck_assert_int_eq(load("USTACK_CONF", "/nonexistent/ustack.conf", NULL), -ENOENT);
    snprintf(want, sizeof want, "USTACK_CONF=/nonexistent/ustack.conf: %s (expected",
             strerror(ENOENT));
    ck_assert_msg(!strncmp(err, want, strlen(want)), "%s", err);
    ck_assert_int_eq(load("USTACK_CONF", "/tmp", NULL), -ENOENT);
    ck_assert_msg(strstr(err, strerror(EISDIR)), "%s", err);
    ck_assert_msg(!strncmp(err, "USTACK_CONF=/tmp: ", 18), "%s", err);

    if (geteuid() != 0) { /* root reads anything */
        char path[64];
        conf_file(path, "USTACK_MTU=1500\n");
        chmod(path, 0);
        ck_assert_int_eq(load("USTACK_CONF", path, NULL), -ENOENT);
        ck_assert_msg(strstr(err, strerror(EACCES)), "%s", err);
        unlink(path);
    }
}
END_TEST

START_TEST(env_over_file)
{
    char path[64];
    conf_file(path, "USTACK_MTU=9000\nUSTACK_LOG=debug\nUSTACK_IP=10.0.0.2/24\nUSTACK_CC=bad\n");
    /* The environment's USTACK_CC replaces the file's (bad) one, which is then never read. */
    OK("USTACK_CONF", path, "USTACK_MTU", "1400", "USTACK_CC", "cubic");
    ck_assert_uint_eq(c.mtu, 1400);
    ck_assert_int_eq(c.log_level, SHIM_LOG_DEBUG);
    ck_assert_int_eq(c.cc, 1);
    /* Values from both places are checked together: the environment's gateway against the
     * file's address, blamed on the environment (no file location). */
    ck_assert_int_eq(
        load("USTACK_CONF", path, "USTACK_CC", "newreno", "USTACK_GW", "10.0.1.1", NULL), -EINVAL);
    ck_assert_str_eq(err, "USTACK_GW=10.0.1.1: not inside USTACK_IP's subnet 10.0.0.0/24 "
                          "(expected an address in 10.0.0.0/24)");
    /* Without the override the file's bad value is reported. */
    ck_assert_int_eq(load("USTACK_CONF", path, NULL), -EINVAL);
    ck_assert_msg(!strncmp(err, "USTACK_CC=bad: ", 15), "%s", err);
    ck_assert_msg(strstr(err, ":4]"), "%s", err);
    /* A bad environment value is not excused by a good one in the file. */
    BAD_IN("USTACK_MTU", "90000", "out of range", "USTACK_CONF", path, "USTACK_MTU", "90000",
           "USTACK_CC", "cubic");
    unlink(path);
}
END_TEST

/* ---- the real environment (shim_conf_load) ------------------------------------------- */

extern char **environ;

/* Check forks each test, so this only clears the child's environment. */
static void clear_ustack_env(void)
{
    char names[64][64];
    int n = 0;
    for (char **e = environ; *e && n < 64; e++) {
        if (strncmp(*e, "USTACK", 6))
            continue;
        size_t len = strcspn(*e, "=");
        if (len < sizeof names[0]) {
            memcpy(names[n], *e, len);
            names[n++][len] = '\0';
        }
    }
    for (int i = 0; i < n; i++)
        unsetenv(names[i]);
}

START_TEST(env_load)
{
    clear_ustack_env();
    ck_assert_int_eq(shim_conf_load(&c, err, sizeof err), 0);
    ck_assert_uint_eq(c.mtu, 1500);

    setenv("USTACK_MTU", "4000", 1);
    setenv("USTACK_LOG", "info", 1);
    setenv("USTACK_TEST_PCAP", "/tmp/x.pcap", 1); /* test-harness knob: let through */
    setenv("USTACKX", "1", 1);                    /* not a USTACK_ name at all */
    setenv("MY_USTACK_THING", "1", 1);
    ck_assert_msg(shim_conf_load(&c, err, sizeof err) == 0, "%s", err);
    ck_assert_uint_eq(c.mtu, 4000);
    ck_assert_int_eq(c.log_level, SHIM_LOG_INFO);

    setenv("USTACK_MTU", "40", 1);
    ck_assert_int_eq(shim_conf_load(&c, err, sizeof err), -EINVAL);
    ck_assert_msg(!strncmp(err, "USTACK_MTU=40: out of range (expected 576..9000)", 48), "%s", err);
    unsetenv("USTACK_MTU");

    char path[64];
    conf_file(path, "USTACK_MTU=9000\nUSTACK_LOG=error\n");
    setenv("USTACK_CONF", path, 1);
    ck_assert_msg(shim_conf_load(&c, err, sizeof err) == 0, "%s", err);
    ck_assert_uint_eq(c.mtu, 9000);               /* from the file */
    ck_assert_int_eq(c.log_level, SHIM_LOG_INFO); /* the environment wins */
    unlink(path);
    ck_assert_int_eq(shim_conf_load(&c, err, sizeof err), -ENOENT);
    ck_assert_msg(!strncmp(err, "USTACK_CONF=/tmp/", 17), "%s", err);
    unsetenv("USTACK_CONF");
}
END_TEST

/* Typos in the environment are caught by walking environ; the lookup-based loader cannot
 * see names it does not ask for. */
START_TEST(env_unknown_names)
{
    clear_ustack_env();
    setenv("USTACK_CORE", "0", 1);
    ck_assert_int_eq(shim_conf_load(&c, err, sizeof err), -EINVAL);
    ck_assert_str_eq(err, "USTACK_CORE=0: unknown variable (expected a USTACK_* name from "
                          "docs/configuration.md; did you mean USTACK_CORES?)");
    unsetenv("USTACK_CORE");

    setenv("USTACK_LOGLEVEL", "debug", 1);
    ck_assert_int_eq(shim_conf_load(&c, err, sizeof err), -EINVAL);
    ck_assert_msg(!strncmp(err, "USTACK_LOGLEVEL=debug: unknown variable", 39), "%s", err);
    unsetenv("USTACK_LOGLEVEL");

    setenv("USTACK_ip", "10.0.0.1/24", 1); /* names are case-sensitive */
    ck_assert_int_eq(shim_conf_load(&c, err, sizeof err), -EINVAL);
    ck_assert_msg(strstr(err, "did you mean USTACK_IP?"), "%s", err);
    unsetenv("USTACK_ip");

    /* The same typo through shim_conf_load_from() goes unnoticed: documented. */
    OK("USTACK_CORE", "0");
    ck_assert_int_eq(shim_conf_load(&c, err, sizeof err), 0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("config");
    TCase *vars = tcase_create("vars");
    tcase_add_test(vars, defaults);
    tcase_add_test(vars, ip_str);
    tcase_add_test(vars, enabled);
    tcase_add_test(vars, dev);
    tcase_add_test(vars, ip_good);
    tcase_add_test(vars, ip_syntax);
    tcase_add_test(vars, ip_not_unicast);
    tcase_add_test(vars, ip_host_part);
    tcase_add_test(vars, gw);
    tcase_add_test(vars, ip6_and_gw6);
    tcase_add_test(vars, mac);
    tcase_add_test(vars, eal);
    tcase_add_test(vars, log_level);
    tcase_add_test(vars, mtu);
    tcase_add_test(vars, idle_and_flush);
    tcase_add_test(vars, buffers);
    tcase_add_test(vars, socks_and_mbufs);
    tcase_add_test(vars, tcp_timers);
    tcase_add_test(vars, ipfrag);
    tcase_add_test(vars, cc_and_huge);
    tcase_add_test(vars, empty_values);
    tcase_add_test(vars, several_bad);
    tcase_add_test(vars, error_text);
    suite_add_tcase(s, vars);

    TCase *cores = tcase_create("cores");
    tcase_add_test(cores, cores_good);
    tcase_add_test(cores, cores_syntax);
    tcase_add_test(cores, cores_order);
    tcase_add_test(cores, cores_limits);
    tcase_add_test(cores, cores_affinity);
    tcase_add_test(cores, cores_default_follows_affinity);
    suite_add_tcase(s, cores);

    TCase *file = tcase_create("file");
    tcase_add_test(file, file_basic);
    tcase_add_test(file, file_value_location);
    tcase_add_test(file, file_syntax);
    tcase_add_test(file, file_missing);
    tcase_add_test(file, env_over_file);
    tcase_add_test(file, env_load);
    tcase_add_test(file, env_unknown_names);
    tcase_add_test(file, shm_and_internal);
    tcase_add_test(file, instance_name);
    tcase_add_test(file, pcap);
    suite_add_tcase(s, file);

    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

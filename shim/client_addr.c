/*
 * client_addr.c - socket addresses of ustack sockets: sockaddr_in and sockaddr_in6 to and
 * from the protocol's struct shm_addr (docs/preload.md "IPv6", docs/shm.md "Addresses").
 *
 * The engine never sees a v4-mapped address (::ffff:a.b.c.d): an AF_INET6 socket's IPv4
 * peers travel as SHM_AF_INET and come back to the application as v4-mapped sockaddr_in6,
 * as Linux's dual-stack sockets show them.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "client_int.h"

#include <arpa/inet.h>
#include <errno.h>
#include <string.h>

bool shim_v4mapped(const uint8_t ip6[16])
{
    static const uint8_t pre[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    return memcmp(ip6, pre, sizeof(pre)) == 0;
}

static bool linklocal(const uint8_t ip6[16])
{
    return ip6[0] == 0xfe && (ip6[1] & 0xc0) == 0x80;
}

void shim_addr_in(const struct sockaddr_storage *ss, uint32_t ifindex, struct shm_addr *out)
{
    memset(out, 0, sizeof(*out));
    if (ss->ss_family != AF_INET6) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
        out->family = SHM_AF_INET;
        out->ip = ntohl(a->sin_addr.s_addr);
        out->port = ntohs(a->sin_port);
        return;
    }
    const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
    out->port = ntohs(a->sin6_port);
    if (shim_v4mapped(a->sin6_addr.s6_addr)) {
        const uint8_t *b = a->sin6_addr.s6_addr;
        out->family = SHM_AF_INET;
        out->ip = (uint32_t)b[12] << 24 | (uint32_t)b[13] << 16 | (uint32_t)b[14] << 8 | b[15];
        return;
    }
    out->family = SHM_AF_INET6;
    memcpy(out->ip6, a->sin6_addr.s6_addr, 16);
    out->scope = linklocal(out->ip6) && a->sin6_scope_id != ifindex ? a->sin6_scope_id : 0;
}

socklen_t shim_addr_out(int dom, const struct shm_addr *a, uint32_t ifindex,
                        struct sockaddr_storage *out)
{
    memset(out, 0, sizeof(*out));
    if (dom != AF_INET6) {
        struct sockaddr_in *s = (struct sockaddr_in *)out;
        s->sin_family = AF_INET;
        s->sin_port = htons(a->port);
        s->sin_addr.s_addr = a->family == SHM_AF_INET ? htonl(a->ip) : 0;
        return sizeof(*s);
    }
    struct sockaddr_in6 *s = (struct sockaddr_in6 *)out;
    s->sin6_family = AF_INET6;
    s->sin6_port = htons(a->port);
    if (a->family == SHM_AF_INET) {
        uint8_t *b = s->sin6_addr.s6_addr;
        b[10] = b[11] = 0xff;
        b[12] = (uint8_t)(a->ip >> 24);
        b[13] = (uint8_t)(a->ip >> 16);
        b[14] = (uint8_t)(a->ip >> 8);
        b[15] = (uint8_t)a->ip;
    } else {
        memcpy(s->sin6_addr.s6_addr, a->ip6, 16);
        if (linklocal(a->ip6))
            s->sin6_scope_id = a->scope ? a->scope : ifindex;
    }
    return sizeof(*s);
}

int shim__get_sa(const struct sockaddr *addr, socklen_t len, struct sockaddr_storage *ss)
{
    if ((int)len < 0 || len > sizeof(struct sockaddr_storage))
        return -EINVAL;
    if (len < sizeof(sa_family_t))
        return -EINVAL;
    memset(ss, 0, sizeof(*ss));
    return shim__uget(ss, addr, len);
}

int shim__put_sa(int dom, const struct shm_addr *a, struct sockaddr *addr, socklen_t *len)
{
    socklen_t n;
    if (shim__badp(addr) || shim__uget(&n, len, sizeof(n)) < 0)
        return -EFAULT;
    if ((int)n < 0)
        return -EINVAL;
    struct sockaddr_storage ss;
    socklen_t full = shim_addr_out(dom, a, shim__c.ifindex, &ss);
    if (shim__uput(addr, &ss, n < full ? n : full) < 0)
        return -EFAULT;
    return shim__uput(len, &full, sizeof(full));
}

/*
 * ipfrag_stub.c - TEMPORARY stand-in for stack/ipfrag.c (IPv4 fragmentation, written on
 * another branch). Delete this file when that branch is merged: it defines the same
 * function. Until then a datagram above the MTU cannot be sent (Linux would fragment it).
 */
#include "stk_int.h"

int stk__ip_send_frags(struct stk_engine *e, stk_time_t now, uint32_t dst, uint8_t proto,
                       const struct stk_iov *l4, int n, size_t l4_len)
{
    (void)e;
    (void)now;
    (void)dst;
    (void)proto;
    (void)l4;
    (void)n;
    (void)l4_len;
    return -EMSGSIZE;
}

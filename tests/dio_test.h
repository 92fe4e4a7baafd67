/* dio_test.h - set-up shared by the suites that run stacks over ring ports in one process
 * (test_dio.c, test_shmsrv.c): EAL start and a stack configuration. Header-only: those
 * suites link DPDK, the others (built from tests/lib) must not. */
#ifndef USTACK_DIO_TEST_H
#define USTACK_DIO_TEST_H

#include <check.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "dio.h"

/* EAL with --no-huge and a per-process file prefix. lcore 0: the test thread; 1..4 stack
 * cores spread over the first two CPUs (all on CPU 0 on a one-CPU machine). */
static inline void dio_test_eal_start(const char *name)
{
    char prefix[96];
    snprintf(prefix, sizeof(prefix), "--file-prefix=ustack-%s-%ld", name, (long)getpid());
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    const char *lc = ncpu > 1 ? "--lcores=0@0,1@0,2@1,3@1,4@0" : "--lcores=0@0,1@0,2@0,3@0,4@0";
    char *argv[] = {(char *)name, prefix,           "--no-huge",     "-m", "600", "--no-pci",
                    (char *)lc,   "--main-lcore=0", "--log-level=3", NULL};
    char err[256];
    int rc = dio_eal_init_args(9, argv, err, sizeof(err));
    ck_assert_msg(rc == 0, "%s", err);
}

static inline struct shim_conf dio_test_conf(uint32_t ip)
{
    struct shim_conf c;
    memset(&c, 0, sizeof(c));
    c.ip = ip;
    c.prefix = 24;
    c.mtu = 1500;
    c.idle_spin_us = 0; /* four stack threads share two CPUs: yield as soon as idle */
    c.idle_sleep_us = 200;
    c.mbufs = 8192;
    c.sndbuf = c.rcvbuf = 256 * 1024;
    c.huge = 0;
    return c;
}

#endif

/*
 * ustackd - the ustack stack process: owns the DPDK device and runs one pinned stack
 * thread per configured core. Configured by the USTACK_* environment (docs/configuration.md).
 *
 *   ustackd [--echo PORT] [--discard PORT] [--source PORT]
 *
 * Prints "ustackd: ready ..." on stdout once every core serves (and writes "ready\n" to the
 * file descriptor named by USTACK_READY_FD, if set). SIGUSR1 prints per-core statistics;
 * SIGTERM or SIGINT closes connections, prints the statistics and exits 0. A bad setting
 * stops start-up with one line naming it, and exit status 1.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dio.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: ustackd [--echo PORT] [--discard PORT] [--source PORT]\n"
               "  configured by USTACK_DEV, USTACK_IP, USTACK_GW, USTACK_CORES, USTACK_EAL, ...\n"
               "  (see docs/configuration.md)\n");
}

static int parse_port(const char *flag, const char *v, uint16_t *out)
{
    char *end;
    errno = 0;
    unsigned long p = strtoul(v ? v : "", &end, 10);
    if (!v || !*v || *end || errno || p == 0 || p > 65535) {
        fprintf(stderr, "ustackd: %s %s: not a TCP port (expected 1..65535)\n", flag,
                v ? v : "(missing)");
        return -1;
    }
    *out = (uint16_t)p;
    return 0;
}

static void report_ready(const struct shim_conf *c, struct dio_stack *s)
{
    char ip[16];
    printf("ustackd: ready ip=%s/%u %s\n", shim_ip_str(c->ip, ip), c->prefix,
           dio_stack_describe(s));
    fflush(stdout);
    const char *fdv = getenv("USTACK_READY_FD");
    if (fdv && *fdv) {
        int fd = atoi(fdv);
        if (fd > 2 && write(fd, "ready\n", 6) != 6)
            fprintf(stderr, "ustackd: USTACK_READY_FD=%s: %s\n", fdv, strerror(errno));
        if (fd > 2)
            close(fd);
    }
}

int main(int argc, char **argv)
{
    static struct dio_services svc;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        uint16_t *dst = NULL;
        if (!strcmp(a, "--echo"))
            dst = &svc.echo_port;
        else if (!strcmp(a, "--discard"))
            dst = &svc.discard_port;
        else if (!strcmp(a, "--source"))
            dst = &svc.source_port;
        else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "ustackd: unknown argument %s\n", a);
            usage(stderr);
            return 2;
        }
        if (parse_port(a, i + 1 < argc ? argv[i + 1] : NULL, dst))
            return 2;
        i++;
    }

    static struct shim_conf conf;
    char err[512];
    if (shim_conf_load(&conf, err, sizeof(err))) {
        fprintf(stderr, "ustackd: %s\n", err);
        return 1;
    }
    /* Signals are taken synchronously by this (control) thread; block them before EAL
     * starts its threads, which inherit the mask. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGUSR1);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    struct dio_stack_conf sc;
    memset(&sc, 0, sizeof(sc));
    if (dio_eal_init(&conf, argv[0], sc.lcores, err, sizeof(err))) {
        fprintf(stderr, "ustackd: %s\n", err);
        return 1;
    }
    sc.conf = &conf;
    sc.ncores = conf.ncores;
    sc.app = dio_services_app(&svc);
    struct dio_stack *s = NULL;
    if (dio_port_find(conf.dev, &sc.port_id, err, sizeof(err)) ||
        dio_stack_create(&sc, &s, err, sizeof(err)) || dio_stack_start(s, err, sizeof(err))) {
        fprintf(stderr, "ustackd: %s\n", err);
        if (s)
            dio_stack_destroy(s);
        dio_eal_cleanup();
        return 1;
    }
    report_ready(&conf, s);

    for (;;) {
        int sig = 0;
        if (sigwait(&set, &sig))
            continue;
        if (sig == SIGUSR1) {
            dio_stack_print_stats(s, stdout, "ustackd: stats");
            printf("ustackd: stats end\n");
            fflush(stdout);
            continue;
        }
        if (sig == SIGHUP)
            continue;
        break;
    }
    dio_stack_stop(s, 1000);
    dio_stack_print_stats(s, stdout, "ustackd: stats");
    printf("ustackd: stats end\nustackd: stopped\n");
    fflush(stdout);
    dio_stack_destroy(s);
    dio_eal_cleanup();
    return 0;
}

/*
 * intr.c - signals interrupting blocking ustack calls (intr.h).
 *
 * The application's dispositions live in two slots per signal: sigaction() writes the slot
 * not in use and then publishes it, so a trampoline running meanwhile reads a whole record,
 * the old or the new one. Updates are serialised by a lock taken with every signal blocked
 * (sigaction() is async-signal-safe, and may be called from a handler).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "intr.h"

#include <errno.h>
#include <pthread.h>
#include <string.h>

__thread struct shim_intr shim__intr __attribute__((tls_model("initial-exec")));

static struct sigaction intr_app[_NSIG][2];
static _Atomic unsigned char intr_cur[_NSIG];
static pthread_mutex_t intr_lock = PTHREAD_MUTEX_INITIALIZER;
static shim_sigaction_fn intr_real;

static void trampoline(int sig, siginfo_t *si, void *uc)
{
    const struct sigaction *a =
        &intr_app[sig][atomic_load_explicit(&intr_cur[sig], memory_order_acquire)];
    int flags = a->sa_flags;
    atomic_fetch_add_explicit(&shim__intr.seq, 1, memory_order_relaxed);
    if (!(flags & SA_RESTART))
        shim__intr.eintr = 1;
    if (flags & SA_SIGINFO) {
        a->sa_sigaction(sig, si, uc);
    } else if (a->sa_handler == SIG_DFL) {
        /* Set to the default while this one was on its way: deliver it that way. */
        int err = errno;
        struct sigaction d = {.sa_handler = SIG_DFL};
        sigemptyset(&d.sa_mask);
        if (intr_real)
            intr_real(sig, &d, NULL);
        raise(sig);
        errno = err;
    } else if (a->sa_handler != SIG_IGN) {
        a->sa_handler(sig);
    }
}

int shim_intr_sigaction(shim_sigaction_fn real, int sig, const struct sigaction *act,
                        struct sigaction *old)
{
    if (sig <= 0 || sig >= _NSIG)
        return real(sig, act, old) < 0 ? -errno : 0;
    intr_real = real;
    sigset_t all, mask;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &mask);
    pthread_mutex_lock(&intr_lock);
    unsigned char was = atomic_load_explicit(&intr_cur[sig], memory_order_relaxed), slot = !was;
    struct sigaction k, prev;
    bool wrap = act && act->sa_handler != SIG_DFL && act->sa_handler != SIG_IGN;
    int rc;
    if (wrap) {
        /* The record is published before the kernel has the trampoline: a signal caught
         * in between must find the handler it was installed for. */
        intr_app[sig][slot] = *act;
        atomic_store_explicit(&intr_cur[sig], slot, memory_order_release);
        k = *act;
        k.sa_sigaction = trampoline;
        k.sa_flags |= SA_SIGINFO;
        rc = real(sig, &k, &prev);
        if (rc < 0)
            atomic_store_explicit(&intr_cur[sig], was, memory_order_release);
    } else {
        rc = real(sig, act, &prev);
    }
    if (rc < 0) {
        rc = -errno;
    } else {
        if (old)
            *old = (prev.sa_flags & SA_SIGINFO) && prev.sa_sigaction == trampoline
                       ? intr_app[sig][was]
                       : prev;
    }
    pthread_mutex_unlock(&intr_lock);
    pthread_sigmask(SIG_SETMASK, &mask, NULL);
    return rc;
}

int shim_intr_check(bool timed)
{
    uint32_t now = atomic_load_explicit(&shim__intr.seq, memory_order_relaxed);
    if (now == shim__intr.seq0)
        return 0;
    if (timed || shim__intr.eintr)
        return -EINTR;
    shim__intr.seq0 = now;
    return 0;
}

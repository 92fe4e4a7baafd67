/*
 * ucopy.c - fault-tolerant copies to and from application buffers (ucopy.h).
 *
 * The handler is installed with SA_NODEFER and an empty mask, so a fault inside
 * shim_ucopy() leaves the thread's signal mask as it was and siglongjmp() needs no saved
 * mask (sigsetjmp(.., 0): no system call on the fast path). Faults anywhere else are passed
 * on to the application's recorded disposition, with the mask and flags it asked for.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "ucopy.h"

#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

static shim_sigaction_fn real_sa;
static _Atomic bool installed;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct sigaction app[2]; /* SIGSEGV, SIGBUS: the application's dispositions */

static __thread sigjmp_buf *volatile tl_jb __attribute__((tls_model("initial-exec")));

static int idx(int sig)
{
    return sig == SIGBUS;
}

bool shim_ucopy_owns(int sig)
{
    return (sig == SIGSEGV || sig == SIGBUS) &&
           atomic_load_explicit(&installed, memory_order_acquire);
}

bool shim_ucopy_installed(void)
{
    return atomic_load_explicit(&installed, memory_order_acquire);
}

/* The application's disposition for a fault that is not ours. */
static void chain(int sig, siginfo_t *si, void *uc)
{
    struct sigaction a = app[idx(sig)];
    bool kernel = si && si->si_code > 0; /* a real fault, not kill()/sigqueue() */
    if (!(a.sa_flags & SA_SIGINFO) && (a.sa_handler == SIG_DFL || a.sa_handler == SIG_IGN)) {
        if (a.sa_handler == SIG_IGN && !kernel)
            return; /* a sent, ignored signal */
        /* The default action (the kernel forces it for an ignored fault too): restore it and
         * let the faulting instruction run again, or re-raise a sent signal. */
        struct sigaction d = {.sa_handler = SIG_DFL};
        sigemptyset(&d.sa_mask);
        real_sa(sig, &d, NULL);
        if (!kernel)
            raise(sig);
        return;
    }
    sigset_t blk = a.sa_mask, old;
    if (!(a.sa_flags & SA_NODEFER))
        sigaddset(&blk, sig);
    pthread_sigmask(SIG_BLOCK, &blk, &old);
    if (a.sa_flags & SA_RESETHAND) {
        memset(&app[idx(sig)], 0, sizeof(app[0]));
        app[idx(sig)].sa_handler = SIG_DFL;
    }
    if (a.sa_flags & SA_SIGINFO)
        a.sa_sigaction(sig, si, uc);
    else
        a.sa_handler(sig);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
}

static void on_fault(int sig, siginfo_t *si, void *uc)
{
    sigjmp_buf *jb = tl_jb;
    if (jb && si && si->si_code > 0) {
        tl_jb = NULL;
        siglongjmp(*jb, 1);
    }
    chain(sig, si, uc);
}

int shim_ucopy_install(shim_sigaction_fn real)
{
    int rc = 0;
    pthread_mutex_lock(&lock);
    if (atomic_load_explicit(&installed, memory_order_relaxed))
        goto out;
    real_sa = real;
    struct sigaction act = {.sa_sigaction = on_fault,
                            .sa_flags = SA_SIGINFO | SA_NODEFER | SA_ONSTACK | SA_RESTART};
    sigemptyset(&act.sa_mask);
    const int sigs[2] = {SIGSEGV, SIGBUS};
    for (int i = 0; i < 2; i++) {
        if (real(sigs[i], NULL, &app[i]) < 0 || real(sigs[i], &act, NULL) < 0) {
            rc = -errno;
            if (i)
                real(SIGSEGV, &app[0], NULL);
            goto out;
        }
    }
    atomic_store_explicit(&installed, true, memory_order_release);
out:
    pthread_mutex_unlock(&lock);
    return rc;
}

int shim_ucopy_sigaction(int sig, const struct sigaction *act, struct sigaction *old)
{
    pthread_mutex_lock(&lock);
    if (old)
        *old = app[idx(sig)];
    if (act)
        app[idx(sig)] = *act;
    pthread_mutex_unlock(&lock);
    return 0;
}

static size_t page_left(const void *p)
{
    return 4096 - ((uintptr_t)p & 4095);
}

/* After a fault: page by page, to report how much could be copied. */
static size_t ucopy_slow(void *dst, const void *src, size_t n)
{
    volatile size_t done = 0;
    sigjmp_buf jb;
    if (sigsetjmp(jb, 0))
        return done;
    tl_jb = &jb;
    atomic_signal_fence(memory_order_seq_cst);
    while (done < n) {
        size_t c = n - done, a = page_left((const char *)src + done),
               b = page_left((char *)dst + done);
        c = c < a ? c : a;
        c = c < b ? c : b;
        memcpy((char *)dst + done, (const char *)src + done, c);
        atomic_signal_fence(memory_order_seq_cst);
        done += c;
    }
    tl_jb = NULL;
    return n;
}

size_t shim_ucopy(void *dst, const void *src, size_t n)
{
    if (!atomic_load_explicit(&installed, memory_order_relaxed)) {
        memcpy(dst, src, n);
        return n;
    }
    sigjmp_buf jb;
    if (sigsetjmp(jb, 0))
        return ucopy_slow(dst, src, n);
    tl_jb = &jb;
    atomic_signal_fence(memory_order_seq_cst);
    memcpy(dst, src, n);
    atomic_signal_fence(memory_order_seq_cst);
    tl_jb = NULL;
    return n;
}

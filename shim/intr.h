/*
 * intr.h - signals interrupting blocking ustack calls (docs/preload.md "Signals").
 *
 * A blocking socket call on Linux sleeps inside the kernel for its whole length, so a
 * signal handled meanwhile ends it: EINTR, or a restart when the handler has SA_RESTART and
 * the call has no timeout. A blocking ustack call runs partly in user space (spinning on the
 * shared ring, re-checking after a wake-up), and a handler run there used to go unnoticed:
 * the call slept on. Java's Socket.close() is the case that showed it: it replaces the fd
 * (dup2) and signals the thread blocked on it, which must return EINTR.
 *
 * So the sigaction()/signal() interposers install the application's handlers behind a
 * trampoline that counts, per thread, the handlers run and whether one lacked SA_RESTART.
 * A blocking call notes the count when it first needs to sleep (shim_intr_begin) and checks
 * it before and after each sleep (shim_intr_check); its futex sleep waits on the count's
 * word too, so a handler run between the check and the sleep ends the sleep at once.
 * Handlers installed behind the interposers' backs (raw rt_sigaction, sigset()) work as
 * before: the kernel's own EINTR or restart of the sleep, which a user-space window can miss.
 */
#ifndef USTACK_SHIM_INTR_H
#define USTACK_SHIM_INTR_H

#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "ucopy.h"

struct shim_intr {
    _Atomic uint32_t seq; /* handlers run on this thread through the trampoline */
    uint32_t seq0;        /* seq when the current blocking call began to wait */
    uint32_t eintr;       /* a handler without SA_RESTART ran since then */
};
extern __thread struct shim_intr shim__intr __attribute__((tls_model("initial-exec")));

/* sigaction() for a signal the application handles: its disposition is recorded and, for a
 * handler, the trampoline installed in its place with the same mask and flags (plus
 * SA_SIGINFO); old gets the application's previous disposition. 0 or -errno. */
int shim_intr_sigaction(shim_sigaction_fn real, int sig, const struct sigaction *act,
                        struct sigaction *old);

/* The calling thread's count of handlers run (for poll and epoll, which a handler always
 * ends with EINTR). */
static inline uint32_t shim_intr_seq(void)
{
    return atomic_load_explicit(&shim__intr.seq, memory_order_relaxed);
}

/* The calling thread's blocking call starts to wait. */
static inline void shim_intr_begin(void)
{
    shim__intr.seq0 = atomic_load_explicit(&shim__intr.seq, memory_order_relaxed);
    shim__intr.eintr = 0;
}

/* After shim_intr_begin: 0 when no handler ran on this thread since, or only handlers with
 * SA_RESTART and the call has no timeout (the wait goes on, as a restarted call; later
 * handlers count afresh); -EINTR otherwise (Linux's sock_intr_errno: a call with a timeout
 * is never restarted). */
int shim_intr_check(bool timed);

#endif

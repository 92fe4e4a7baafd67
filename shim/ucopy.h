/*
 * ucopy.h - copies to and from application buffers that fail with EFAULT instead of
 * crashing, the way the kernel's copy_{from,to}_user do (docs/preload.md, "EFAULT").
 *
 * A ustack socket's data is copied in user space, so a bad pointer would fault inside
 * libustack.so. Once shim_ucopy_install() has run, a SIGSEGV or SIGBUS raised inside
 * shim_ucopy() returns to it (a thread-local sigjmp_buf) and it reports a short copy;
 * any other SIGSEGV/SIGBUS goes to whatever the application installed, which the
 * sigaction()/signal() interposers record through shim_ucopy_sigaction() instead of
 * replacing ustack's handler. The fast path is one memcpy and two thread-local stores.
 */
#ifndef USTACK_SHIM_UCOPY_H
#define USTACK_SHIM_UCOPY_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>

typedef int (*shim_sigaction_fn)(int, const struct sigaction *, struct sigaction *);

/* Installs the fault handler for SIGSEGV and SIGBUS, keeping the application's current
 * dispositions to pass other faults to. real is the libc sigaction (not the interposer).
 * Idempotent; 0 or -errno. */
int shim_ucopy_install(shim_sigaction_fn real);
bool shim_ucopy_installed(void);

/* Copies n bytes; returns n, or the number of bytes copied before the first bad page. */
size_t shim_ucopy(void *dst, const void *src, size_t n);

/* True for the signals whose disposition ustack keeps on the application's behalf while
 * its handler is installed. */
bool shim_ucopy_owns(int sig);
/* sigaction() for such a signal: records act as the application's disposition and
 * returns the previous one in old (either may be NULL); 0 or -errno. */
int shim_ucopy_sigaction(int sig, const struct sigaction *act, struct sigaction *old);

#endif

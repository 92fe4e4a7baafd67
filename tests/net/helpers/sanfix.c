/*
 * libsanfix.so: preloaded right after the ASan runtime (tests/net "Sanitizer builds",
 * `make net-san-test`) into programs that are not built with ASan (curl, dnsmasq).
 *
 * Why: GCC 12's libasan.so, preloaded into such a program, initialises itself lazily, on the
 * first malloc() of the process. The constructors of the program's libraries run before the
 * preloaded runtime's own constructor, and some of them allocate while glibc holds one of
 * its locale locks for writing: libp11-kit's (under curl) in newlocale() with
 * __libc_setlocale_lock, libgpg-error's (under dnsmasq) in bindtextdomain() with
 * _nl_state_lock. The runtime's start-up looks up the optional symbol "swift_demangle" with
 * dlsym() and clears the failure with dlerror(), which translates the message through
 * gettext; gettext read-locks those same locks, gets EDEADLK (the thread is their writer),
 * ignores it and unlocks anyway. The rwlock's reader count goes negative and the program
 * blocks for ever in its next setlocale() or textdomain(), without any report.
 *
 * With a "swift_demangle" in the global scope the lookup succeeds, dlerror() has no error to
 * translate and takes no lock. The sanitizer calls it only for Swift names; answering NULL
 * makes it fall back to its usual demangling.
 */
#include <stddef.h>
#include <stdint.h>

__attribute__((visibility("default"))) char *swift_demangle(const char *name, size_t len, char *out,
                                                            size_t *out_len, uint32_t flags);

char *swift_demangle(const char *name, size_t len, char *out, size_t *out_len, uint32_t flags)
{
    (void)name;
    (void)len;
    (void)out;
    (void)out_len;
    (void)flags;
    return NULL;
}

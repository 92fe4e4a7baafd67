/*
 * fdtab.h - the per-process fd table of libustack.so: which application fd numbers are
 * ustack's, and what they refer to.
 *
 * Every call the interposer sees starts with one lookup here, so a lookup is one bounds
 * check and one load. The table is an array indexed by fd, sized once from the hard
 * RLIMIT_NOFILE and allocated with mmap (never malloc: the interposer may run while the
 * allocator itself is being set up). Untouched pages cost nothing, so a large limit is cheap.
 *
 * An entry is written by the thread that creates or closes the fd, under the client's table
 * lock; readers do not lock. A socket's slot and generation are one 64-bit word (sg), so a
 * reader never sees the slot of one socket with the generation of another. A call that
 * races with a close of its fd pins the socket (client_int.h, shim__sk) and re-reads the
 * entry to be sure it still refers to the socket it pinned.
 */
#ifndef USTACK_SHIM_FDTAB_H
#define USTACK_SHIM_FDTAB_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

enum shim_fd_kind {
    SHIM_FD_KERNEL = 0, /* not ours: the call goes straight to libc */
    SHIM_FD_SOCK,       /* a ustack socket; the fd itself is its eventfd */
    SHIM_FD_EPOLL,      /* a kernel epoll that has (or had) ustack members */
    SHIM_FD_PRIV,       /* the library's own (region, pipe, wake eventfds, helpers) */
    SHIM_FD_SPARE,      /* a closed socket's eventfd kept for the next socket (closed for
                           the application: docs/preload.md "Spare eventfds") */
};

/* What a ustack fd refers to. SHIM_FD_PRIV entries point obj at the int that holds the
 * fd number, so that the fd can be moved out of an application's way (dup2 onto it). */
struct shim_fd {
    _Atomic uint32_t kind; /* enum shim_fd_kind */
    uint32_t cloexec;      /* FD_CLOEXEC, mirrored from the kernel fd */
    union {
        struct {
            uint32_t slot, gen; /* SHIM_FD_SOCK: the region's socket slot and its generation */
        };
        _Atomic uint64_t sg; /* both at once: shim_fd_sg() */
    };
    void *obj; /* SHIM_FD_EPOLL: struct shim_epoll; SHIM_FD_PRIV: int * */
};

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "shim_fd.sg assumes little endian");

/* The (slot, gen) word of an entry: slot in the low half, gen in the high half. */
static inline uint64_t shim_fd_sg(uint32_t slot, uint32_t gen)
{
    return (uint64_t)gen << 32 | slot;
}

struct shim_fdtab {
    struct shim_fd *ent;
    uint32_t size;            /* entries: fds 0..size-1 can be ours */
    _Atomic uint32_t hiwater; /* 1 + the highest fd ever made ours (bounds scans) */
};

/* Maps a table of size entries (size 0 or mapping failure: -errno). */
int shim_fdtab_init(struct shim_fdtab *t, uint32_t size);
void shim_fdtab_destroy(struct shim_fdtab *t);

/* The entry of fd if it is ours, else NULL. */
static inline struct shim_fd *shim_fdtab_get(const struct shim_fdtab *t, int fd)
{
    if ((unsigned)fd >= t->size)
        return 0;
    struct shim_fd *e = &t->ent[fd];
    return atomic_load_explicit(&e->kind, memory_order_acquire) ? e : 0;
}

static inline enum shim_fd_kind shim_fdtab_kind(const struct shim_fdtab *t, int fd)
{
    if ((unsigned)fd >= t->size)
        return SHIM_FD_KERNEL;
    return (enum shim_fd_kind)atomic_load_explicit(&t->ent[fd].kind, memory_order_acquire);
}

/* Makes fd ours (fields first, the kind last, so lock-free readers see a whole entry).
 * Returns 0, or -EMFILE when fd does not fit the table. */
int shim_fdtab_set(struct shim_fdtab *t, int fd, enum shim_fd_kind kind, uint32_t slot,
                   uint32_t gen, bool cloexec, void *obj);
/* Copies entry from to entry to, with its own cloexec (dup). */
int shim_fdtab_dup(struct shim_fdtab *t, int from, int to, bool cloexec);
/* Forgets fd (back to the kernel's). */
void shim_fdtab_clear(struct shim_fdtab *t, int fd);

/* Upper bound for scans: every fd that is ours is below this. */
static inline int shim_fdtab_limit(const struct shim_fdtab *t)
{
    return (int)atomic_load_explicit(&t->hiwater, memory_order_acquire);
}

#endif

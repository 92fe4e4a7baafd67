/*
 * fdtab.c - the per-process fd table (see fdtab.h).
 */
#include "fdtab.h"

#include <errno.h>
#include <string.h>
#include <sys/mman.h>

int shim_fdtab_init(struct shim_fdtab *t, uint32_t size)
{
    memset(t, 0, sizeof(*t));
    if (size == 0)
        return -EINVAL;
    /* mmap, not malloc: see the header. MAP_NORESERVE because most entries stay untouched. */
    void *p = mmap(NULL, (size_t)size * sizeof(struct shim_fd), PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED)
        return -errno;
    t->ent = p;
    t->size = size;
    return 0;
}

void shim_fdtab_destroy(struct shim_fdtab *t)
{
    if (t->ent)
        munmap(t->ent, (size_t)t->size * sizeof(struct shim_fd));
    memset(t, 0, sizeof(*t));
}

static void raise_hiwater(struct shim_fdtab *t, int fd)
{
    uint32_t want = (uint32_t)fd + 1;
    uint32_t cur = atomic_load_explicit(&t->hiwater, memory_order_relaxed);
    while (cur < want && !atomic_compare_exchange_weak_explicit(
                             &t->hiwater, &cur, want, memory_order_release, memory_order_relaxed))
        ;
}

int shim_fdtab_set(struct shim_fdtab *t, int fd, enum shim_fd_kind kind, uint32_t slot,
                   uint32_t gen, bool cloexec, void *obj)
{
    if (fd < 0 || (unsigned)fd >= t->size)
        return -EMFILE;
    struct shim_fd *e = &t->ent[fd];
    /* A reader that still sees the old kind must not see new fields under it: clear first. */
    atomic_store_explicit(&e->kind, SHIM_FD_KERNEL, memory_order_release);
    e->cloexec = cloexec;
    atomic_store_explicit(&e->sg, shim_fd_sg(slot, gen), memory_order_relaxed);
    e->obj = obj;
    raise_hiwater(t, fd);
    atomic_store_explicit(&e->kind, kind, memory_order_release);
    return 0;
}

int shim_fdtab_dup(struct shim_fdtab *t, int from, int to, bool cloexec)
{
    struct shim_fd *f = shim_fdtab_get(t, from);
    if (!f)
        return -EBADF;
    return shim_fdtab_set(t, to, (enum shim_fd_kind)atomic_load(&f->kind), f->slot, f->gen, cloexec,
                          f->obj);
}

void shim_fdtab_clear(struct shim_fdtab *t, int fd)
{
    if (fd < 0 || (unsigned)fd >= t->size)
        return;
    struct shim_fd *e = &t->ent[fd];
    atomic_store_explicit(&e->kind, SHIM_FD_KERNEL, memory_order_release);
    e->obj = NULL;
}

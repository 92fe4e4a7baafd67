/*
 * pending.h - frames waiting for a neighbour's link-layer address (pending.c), shared by
 * ARP (arp.c) and neighbour discovery (nd.c).
 *
 * A pool is a fixed array of slots, each holding one frame copied into its own buffer; a
 * neighbour entry keeps a FIFO of slots (a stk_pend_list) threaded through the array, and
 * free slots form a list of their own. Nothing grows with input.
 */
#ifndef USTACK_PENDING_H
#define USTACK_PENDING_H

#include "stk_int.h"

#define STK_PEND_NIL 0xffffu

struct stk_pend_frame {
    uint16_t next; /* FIFO of one neighbour, or the free list */
    bool has_meta;
    uint32_t len;
    uint8_t *data;
    struct stk_txmeta meta;
};

/* One neighbour's waiting frames, oldest first. */
struct stk_pend_list {
    uint16_t head, tail;
    uint8_t len;
};

struct stk_pend_pool {
    struct stk_pend_frame *f; /* n slots, owned by the caller */
    uint16_t n;
    uint16_t free; /* first free slot */
};

/* Threads all n slots of f (n < STK_PEND_NIL) onto the free list. */
void stk__pend_init(struct stk_pend_pool *p, struct stk_pend_frame *f, uint16_t n);
/* Frees the buffers of every slot still holding a frame. */
void stk__pend_fini(struct stk_engine *e, struct stk_pend_pool *p);
static inline void stk__pend_list_init(struct stk_pend_list *l)
{
    l->head = l->tail = STK_PEND_NIL;
    l->len = 0;
}
/* Copies the frame iov[0..n) (len bytes in all) to the tail of l. -ENOBUFS, counted in
 * *drops, when l already holds per frames, the pool is empty, or the copy cannot be
 * allocated. */
int stk__pend_add(struct stk_engine *e, struct stk_pend_pool *p, struct stk_pend_list *l,
                  unsigned per, const struct stk_iov *iov, int n, size_t len,
                  const struct stk_txmeta *meta, uint64_t *drops);
/* Would n more frames fit in l (NULL: a neighbour with none yet) and in the pool? */
bool stk__pend_fits(const struct stk_pend_pool *p, const struct stk_pend_list *l, unsigned per,
                    unsigned n);
/* Sends l's frames in the order they were queued, with Ethernet destination mac. */
void stk__pend_flush(struct stk_engine *e, struct stk_pend_pool *p, struct stk_pend_list *l,
                     const uint8_t mac[6]);
/* Drops l's frames, counting each in *drops. */
void stk__pend_drop_all(struct stk_engine *e, struct stk_pend_pool *p, struct stk_pend_list *l,
                        uint64_t *drops);

#endif

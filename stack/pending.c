/*
 * pending.c - the bounded queue of frames waiting for a neighbour's link-layer address,
 * used by ARP and neighbour discovery (pending.h).
 */
#include <string.h>

#include "pending.h"

void stk__pend_init(struct stk_pend_pool *p, struct stk_pend_frame *f, uint16_t n)
{
    p->f = f;
    p->n = n;
    for (unsigned i = 0; i < n; i++)
        f[i].next = i + 1 < n ? (uint16_t)(i + 1) : STK_PEND_NIL;
    p->free = n ? 0 : STK_PEND_NIL;
}

void stk__pend_fini(struct stk_engine *e, struct stk_pend_pool *p)
{
    for (unsigned i = 0; i < p->n; i++)
        stk__free(e, p->f[i].data, p->f[i].len);
}

/* Unlinks l's oldest frame and returns its slot (l not empty). */
static struct stk_pend_frame *take(struct stk_pend_pool *p, struct stk_pend_list *l)
{
    struct stk_pend_frame *q = &p->f[l->head];
    l->head = q->next;
    if (l->head == STK_PEND_NIL) {
        l->tail = STK_PEND_NIL;
        l->len = 0;
    } else {
        l->len--;
    }
    return q;
}

/* Frees q's buffer and returns q to the free list. */
static void release(struct stk_engine *e, struct stk_pend_pool *p, struct stk_pend_frame *q)
{
    stk__free(e, q->data, q->len);
    q->data = NULL;
    q->next = p->free;
    p->free = (uint16_t)(q - p->f);
}

int stk__pend_add(struct stk_engine *e, struct stk_pend_pool *p, struct stk_pend_list *l,
                  unsigned per, const struct stk_iov *iov, int n, size_t len,
                  const struct stk_txmeta *meta, uint64_t *drops)
{
    if (l->len >= per || p->free == STK_PEND_NIL) {
        (*drops)++;
        return -ENOBUFS;
    }
    uint8_t *data = stk__alloc(e, len);
    if (!data) {
        (*drops)++;
        return -ENOBUFS;
    }
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        if (iov[i].len) /* an empty piece may have a NULL base */
            memcpy(data + off, iov[i].base, iov[i].len);
        off += iov[i].len;
    }
    uint16_t qi = p->free;
    struct stk_pend_frame *q = &p->f[qi];
    p->free = q->next;
    q->next = STK_PEND_NIL;
    q->data = data;
    q->len = (uint32_t)len;
    q->has_meta = meta != NULL;
    if (meta)
        q->meta = *meta;
    if (l->tail == STK_PEND_NIL)
        l->head = qi;
    else
        p->f[l->tail].next = qi;
    l->tail = qi;
    l->len++;
    return 0;
}

bool stk__pend_fits(const struct stk_pend_pool *p, const struct stk_pend_list *l, unsigned per,
                    unsigned n)
{
    if (n > per || (l && l->len + n > per))
        return false;
    unsigned free = 0;
    for (uint16_t i = p->free; i != STK_PEND_NIL && free < n; i = p->f[i].next)
        free++;
    return free >= n;
}

void stk__pend_flush(struct stk_engine *e, struct stk_pend_pool *p, struct stk_pend_list *l,
                     const uint8_t mac[6])
{
    while (l->head != STK_PEND_NIL) {
        struct stk_pend_frame *q = take(p, l);
        memcpy(q->data, mac, 6);
        struct stk_iov iov = {q->data, q->len};
        (void)stk__eth_tx(e, &iov, 1, q->has_meta ? &q->meta : NULL);
        release(e, p, q);
    }
}

void stk__pend_drop_all(struct stk_engine *e, struct stk_pend_pool *p, struct stk_pend_list *l,
                        uint64_t *drops)
{
    while (l->head != STK_PEND_NIL) {
        release(e, p, take(p, l));
        (*drops)++;
    }
}

/*
 * deque.c -- the cold half of the work-stealing deque (deque.h): growing
 * the array and freeing it.
 */
#include "deque.h"

#include <stdlib.h>
#include <string.h>

#define INITIAL_CAPACITY 64

void cf__deque_init(cf_deque *d)
{
    memset(d, 0, sizeof *d);
    atomic_init(&d->top, 0);
    atomic_init(&d->bottom, 0);
    atomic_init(&d->buf, NULL);
}

void cf__deque_fini(cf_deque *d)
{
    cf_deque_buf *a = atomic_load_explicit(&d->buf, memory_order_relaxed);
    while (a != NULL) {
        cf_deque_buf *older = a->older;
        free(a);
        a = older;
    }
    atomic_store_explicit(&d->buf, NULL, memory_order_relaxed);
}

/* Owner only.  Copies the live range [t, b) into an array twice as large
 * and publishes it (release: a thief that reads the new pointer reads the
 * copied slots).  The old array stays readable for thieves that loaded it
 * before; it holds the same tasks at the same indices. */
int cf__deque_grow(cf_deque *d, int64_t t, int64_t b)
{
    cf_deque_buf *old = atomic_load_explicit(&d->buf, memory_order_relaxed);
    int64_t cap = old ? 2 * (old->mask + 1) : INITIAL_CAPACITY;
    cf_deque_buf *a = malloc(sizeof *a + (size_t)cap * sizeof a->slot[0]);
    if (a == NULL)
        return CF_ENOMEM;
    a->mask = cap - 1;
    a->older = old;
    for (int64_t i = t; i < b; i++)
        atomic_init(&a->slot[i & a->mask],
                    atomic_load_explicit(&old->slot[i & old->mask],
                                         memory_order_relaxed));
    atomic_store_explicit(&d->buf, a, memory_order_release);
    return CF_OK;
}

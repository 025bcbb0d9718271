/*
 * deque.h -- the work-stealing deque of a thread pool's worker (Chase-Lev).
 *
 * One owner pushes and pops at the bottom (LIFO: its newest task first);
 * any thread steals at the top (FIFO: the oldest task, the root of the
 * largest untouched subtree).  No lock: the owner's fast paths are plain
 * loads and stores plus one sequentially consistent store; only the race
 * for the last element costs a CAS.
 *
 * The algorithm is the C11 version of Le, Pop, Cohen & Zappa Nardelli,
 * "Correct and efficient work-stealing for weak memory models" (PPoPP
 * 2013), with one change: instead of relaxed accesses separated by
 * seq_cst fences, the accesses to top and bottom that the fences order
 * are seq_cst themselves.  That is at least as strong (every seq_cst
 * access is in the single total order S), costs the same on x86 (the
 * fence was an mfence, a seq_cst store is an xchg), and ThreadSanitizer,
 * which does not model fences, understands it.
 *
 * The seq_cst store of bottom in push is also half of the pool's sleep
 * protocol (thread_pool.c): a pusher that then reads "no sleeper" knows
 * that a thread about to sleep will see the task.
 *
 * The array grows (doubles) when full; the old arrays stay allocated until
 * the deque is destroyed, since a thief may still read from one.  The
 * total is under twice the largest size reached.
 */
#ifndef CF_DEQUE_H
#define CF_DEQUE_H

#include "internal.h"

typedef struct cf_deque_buf {
    int64_t mask; /* capacity - 1, capacity a power of two */
    struct cf_deque_buf *older;
    _Atomic(cf_future *) slot[];
} cf_deque_buf;

typedef struct cf_deque {
    _Atomic int64_t top; /* thieves' end */
    char pad_[64 - sizeof(int64_t)];
    _Atomic int64_t bottom; /* the owner's end */
    _Atomic(cf_deque_buf *) buf;
} cf_deque;

/** Zeroes d; no allocation until the first push. */
CF_HIDDEN void cf__deque_init(cf_deque *d);
/** Frees the arrays.  d must be empty and no thread may use it anymore. */
CF_HIDDEN void cf__deque_fini(cf_deque *d);
/** Owner only: grows the array (CF_OK or CF_ENOMEM). */
CF_HIDDEN int cf__deque_grow(cf_deque *d, int64_t t, int64_t b);

/** Owner only: pushes f at the bottom.  CF_OK or CF_ENOMEM. */
static inline int cf__deque_push(cf_deque *d, cf_future *f)
{
    int64_t b = atomic_load_explicit(&d->bottom, memory_order_relaxed);
    int64_t t = atomic_load_explicit(&d->top, memory_order_acquire);
    cf_deque_buf *a = atomic_load_explicit(&d->buf, memory_order_relaxed);
    if (CF_UNLIKELY(a == NULL || b - t > a->mask)) {
        if (cf__deque_grow(d, t, b) != CF_OK)
            return CF_ENOMEM;
        a = atomic_load_explicit(&d->buf, memory_order_relaxed);
    }
    atomic_store_explicit(&a->slot[b & a->mask], f, memory_order_relaxed);
    atomic_store_explicit(&d->bottom, b + 1, memory_order_seq_cst);
    return CF_OK;
}

/** Owner only: pops the newest task, or NULL if empty. */
static inline cf_future *cf__deque_pop(cf_deque *d)
{
    int64_t b = atomic_load_explicit(&d->bottom, memory_order_relaxed) - 1;
    cf_deque_buf *a = atomic_load_explicit(&d->buf, memory_order_relaxed);
    if (a == NULL)
        return NULL;
    atomic_store_explicit(&d->bottom, b, memory_order_seq_cst);
    int64_t t = atomic_load_explicit(&d->top, memory_order_seq_cst);
    if (t > b) { /* empty */
        atomic_store_explicit(&d->bottom, b + 1, memory_order_relaxed);
        return NULL;
    }
    cf_future *f = atomic_load_explicit(&a->slot[b & a->mask],
                                        memory_order_relaxed);
    if (t == b) { /* the last one: race the thieves for it */
        if (!atomic_compare_exchange_strong_explicit(
                &d->top, &t, t + 1, memory_order_seq_cst, memory_order_relaxed))
            f = NULL;
        atomic_store_explicit(&d->bottom, b + 1, memory_order_relaxed);
    }
    return f;
}

/** Any thread: steals the oldest task.  NULL if empty or if another thread
 *  won the race (*lost is then set: try again). */
static inline cf_future *cf__deque_steal(cf_deque *d, bool *lost)
{
    int64_t t = atomic_load_explicit(&d->top, memory_order_seq_cst);
    int64_t b = atomic_load_explicit(&d->bottom, memory_order_seq_cst);
    if (t >= b)
        return NULL;
    cf_deque_buf *a = atomic_load_explicit(&d->buf, memory_order_acquire);
    cf_future *f = atomic_load_explicit(&a->slot[t & a->mask],
                                        memory_order_relaxed);
    if (!atomic_compare_exchange_strong_explicit(
            &d->top, &t, t + 1, memory_order_seq_cst, memory_order_relaxed)) {
        *lost = true;
        return NULL;
    }
    return f;
}

/** Owner only: is f queued in d (not yet popped or stolen)?  A hint: a
 *  thief may take it at any time. */
static inline bool cf__deque_holds(cf_deque *d, const cf_future *f)
{
    int64_t b = atomic_load_explicit(&d->bottom, memory_order_relaxed);
    int64_t t = atomic_load_explicit(&d->top, memory_order_seq_cst);
    cf_deque_buf *a = atomic_load_explicit(&d->buf, memory_order_relaxed);
    for (int64_t i = b - 1; a != NULL && i >= t; i--)
        if (atomic_load_explicit(&a->slot[i & a->mask], memory_order_relaxed) ==
            f)
            return true;
    return false;
}

/** Any thread: true if the deque looked non-empty (a hint). */
static inline bool cf__deque_nonempty(cf_deque *d)
{
    int64_t t = atomic_load_explicit(&d->top, memory_order_seq_cst);
    int64_t b = atomic_load_explicit(&d->bottom, memory_order_seq_cst);
    return b > t;
}

#endif /* CF_DEQUE_H */

/*
 * fqueue.h -- a pool's queue of futures: a FIFO, or ordered by
 * cf_task_opts.priority with aging (fqueue.c explains the order).
 */
#ifndef CF_FQUEUE_H
#define CF_FQUEUE_H

#include "internal.h"

/* The queue of futures of a pool, linked through cf_future.next (the
 * executor's lock guards it): a FIFO until a task with a priority comes,
 * then ordered by priority with aging (fqueue.c); the head is next. */
typedef struct cf_fqueue {
    cf_future *head, *tail;
    size_t n;
    bool by_priority; /* set by the first task with a priority, for good */
    int64_t since;    /* when it was set (ns) */
} cf_fqueue;

CF_HIDDEN void cf__fq_push(cf_fqueue *q, cf_future *f);
/* Puts a list (futures that had been taken off) back: at the front in its
 * order, or, by priority, each where its key says. */
CF_HIDDEN void cf__fq_splice_front(cf_fqueue *q, cf_future *list);
/* Takes the head off (NULL if empty). */
CF_HIDDEN cf_future *cf__fq_pop(cf_fqueue *q);
CF_HIDDEN cf_future *cf__fq_take_all(cf_fqueue *q);
/* True if f (queued elsewhere, e.g. sent ahead to a worker) should start
 * after the head of q: q is by priority and its head's key is higher. */
CF_HIDDEN bool cf__fq_head_before(const cf_fqueue *q, cf_future *f);

#endif

/*
 * fqueue.c -- a pool's queue of futures, in submission order or by
 * priority (fqueue.h).
 */
#include "fqueue.h"

/*
 * Priorities with aging.  A task's effective priority is its priority plus
 * one level per CF_PRIORITY_AGING seconds it has waited.  Comparing two
 * waiting tasks at any moment, p1 + (now - t1)/A > p2 + (now - t2)/A is
 * p1*A - t1 > p2*A - t2: the order does not change with time.  So each
 * task gets a fixed key, priority*A - (time it was queued), and the queue
 * is kept sorted by key, highest first; equal priorities keep submission
 * order (a later one has a lower key).
 *
 * Until the first task with a priority comes, the queue is a plain FIFO:
 * a push is one more branch.  From then on, a push walks from the head
 * past the tasks that start before it: O(1) when priorities are equal
 * (tasks go at the end), O(tasks of higher priority) otherwise.
 */
#define AGING_NS ((int64_t)(CF_PRIORITY_AGING * 1e9))

/* The key of f: its priority, in nanoseconds of waiting, minus the time
 * it was queued (out.v.i64, see internal.h).  Tasks queued before the
 * queue went by priority count from that moment (their order is kept). */
static int64_t key_of(const cf_fqueue *q, cf_future *f)
{
    int64_t t = f->out.v.i64 != 0 ? f->out.v.i64 : q->since;
    return (int64_t)*cf__queued_priority(f) * AGING_NS - t;
}

/* Switches q to priority order: what it holds keeps its order, with keys
 * as if queued now (their earlier wait is not counted). */
static void fq_order_by_priority(cf_fqueue *q)
{
    int64_t now = (int64_t)cf__now_ns();
    for (cf_future *f = q->head; f != NULL; f = f->next)
        if (f->out.v.i64 == 0 || f->out.v.i64 > now)
            f->out.v.i64 = now;
    q->since = now;
    q->by_priority = true;
}

/* Inserts f (its key set) after every task whose key is at least its. */
static void fq_insert_by_key(cf_fqueue *q, cf_future *f)
{
    int64_t k = key_of(q, f);
    cf_future **at = &q->head;
    if (q->tail != NULL && key_of(q, q->tail) >= k) /* the usual case */
        at = &q->tail->next;
    else
        while (*at != NULL && key_of(q, *at) >= k)
            at = &(*at)->next;
    f->next = *at;
    *at = f;
    if (f->next == NULL)
        q->tail = f;
    q->n++;
}

void cf__fq_push(cf_fqueue *q, cf_future *f)
{
    f->next = NULL;
    if (CF_UNLIKELY(q->by_priority || *cf__queued_priority(f) != 0)) {
        if (!q->by_priority)
            fq_order_by_priority(q);
        if (f->out.v.i64 == 0) /* else the trace noted the submit time */
            f->out.v.i64 = (int64_t)cf__now_ns();
        fq_insert_by_key(q, f);
        return;
    }
    if (q->tail)
        q->tail->next = f;
    else
        q->head = f;
    q->tail = f;
    q->n++;
}

cf_future *cf__fq_pop(cf_fqueue *q)
{
    cf_future *f = q->head;
    if (f == NULL)
        return NULL;
    q->head = f->next;
    if (q->head == NULL)
        q->tail = NULL;
    q->n--;
    f->next = NULL;
    return f;
}

bool cf__fq_head_before(const cf_fqueue *q, cf_future *f)
{
    return q->by_priority && q->head != NULL &&
           key_of(q, q->head) > key_of(q, f);
}

void cf__fq_splice_front(cf_fqueue *q, cf_future *list)
{
    if (list == NULL)
        return;
    if (q->by_priority) { /* each keeps the key it was queued with */
        while (list != NULL) {
            cf_future *f = list;
            list = f->next;
            fq_insert_by_key(q, f);
        }
        return;
    }
    cf_future *last = list;
    size_t n = 1;
    for (; last->next != NULL; last = last->next)
        n++;
    last->next = q->head;
    if (q->tail == NULL)
        q->tail = last;
    q->head = list;
    q->n += n;
}

cf_future *cf__fq_take_all(cf_fqueue *q)
{
    cf_future *all = q->head;
    q->head = q->tail = NULL;
    q->n = 0;
    return all;
}

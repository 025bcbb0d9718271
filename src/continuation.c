/*
 * continuation.c -- cf_then, cf_when_all, cf_when_any.
 *
 * A continuation is a done callback on the future(s) it waits for, so no
 * thread ever blocks for it.  The callback does its work (run the next
 * task inline, submit it, or settle the combined future) through a
 * per-thread trampoline: when a continuation completes a future whose own
 * continuation fires, that one is queued and run by the outermost loop
 * instead of recursing, so a chain of any length uses constant stack.
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------ */
/* The trampoline                                                            */
/* ------------------------------------------------------------------------ */

typedef struct deferred {
    struct deferred *next;
    void (*run)(struct deferred *d);
} deferred;

static _Thread_local struct {
    bool active;
    deferred *head, **tail;
} tramp;

static void defer(deferred *d)
{
    d->next = NULL;
    if (tramp.active) {
        *tramp.tail = d;
        tramp.tail = &d->next;
        return;
    }
    tramp.active = true;
    tramp.head = NULL;
    tramp.tail = &tramp.head;
    d->run(d);
    while (tramp.head != NULL) {
        deferred *x = tramp.head;
        tramp.head = x->next;
        if (tramp.head == NULL)
            tramp.tail = &tramp.head;
        x->run(x);
    }
    tramp.active = false;
}

/* ------------------------------------------------------------------------ */
/* cf_then                                                                   */
/* ------------------------------------------------------------------------ */

typedef struct then_ctx {
    deferred d;
    cf_future *ante; /* the future continued (a reference, once fired) */
    cf_future *next; /* the continuation's future (a reference) */
    cf_executor *ex; /* a reference (cf__executor_retain), or NULL */
    cf_task_fn fn;
    unsigned flags;
} then_ctx;

cf_future *cf_antecedent(cf_call *c)
{
    return c ? c->antecedent : NULL;
}

static void run_inline(then_ctx *t, const void *arg, size_t len)
{
    if (cf_set_running_or_notify_cancel(t->next) != CF_OK)
        return; /* the continuation was cancelled */
    cf_call c;
    cf__call_init(&c, arg, len, &t->next->state);
    c.antecedent = t->ante;
    t->fn(&c);
    if (cf__future_claim(t->next) != CF_OK) {
        cf__outcome_clear(&c.out);
        return;
    }
    if (c.out.status != CF_OK)
        cf__outcome_set(&c.out, CF_KIND_NONE, NULL, 0); /* a raise wins */
    t->next->out = c.out;
    cf__future_publish(t->next);
}

static void then_run(deferred *d)
{
    then_ctx *t = (then_ctx *)d;
    const void *data = NULL;
    size_t len = 0;
    if (!cf_done(t->next)) { /* not cancelled by its owner meanwhile */
        int st = cf_result(t->ante, 0, &data, &len);
        const cf_outcome *o = &t->ante->out;
        if (st != CF_OK && !(t->flags & CF_THEN_ALWAYS)) {
            if (st == CF_ECANCELLED)
                cf_cancel(t->next);
            else
                cf__future_fail(t->next, st, o->code, "%s",
                                o->msg ? o->msg : "");
        } else {
            if (st != CF_OK) {
                data = NULL;
                len = 0;
            }
            if (t->ex == NULL) {
                run_inline(t, data, len);
            } else {
                int rc = cf__submit_into(t->ex, t->next, t->fn, data, len, NULL,
                                         1);
                if (rc != CF_OK)
                    cf__future_fail(t->next, rc, 0,
                                    "cf_then could not submit: %s",
                                    cf_strerror(rc));
            }
        }
    }
    cf_future_release(t->ante);
    cf_future_release(t->next);
    cf__executor_release(t->ex);
    free(t);
}

static void then_fired(cf_future *f, void *arg)
{
    then_ctx *t = arg;
    t->ante = cf_future_retain(f);
    defer(&t->d);
}

static void then_dropped(void *arg)
{
    then_ctx *t = arg;
    cf__future_fail(t->next, CF_EBROKEN, 0,
                    "cf_then: the future it continues was released before "
                    "it completed");
    cf_future_release(t->next);
    cf__executor_release(t->ex);
    free(t);
}

cf_future *cf_then(cf_future *f, cf_executor *ex, cf_task_fn fn, unsigned flags)
{
    if (f == NULL || fn == NULL || (flags & ~(unsigned)CF_THEN_ALWAYS))
        return cf__fail_null(CF_EINVAL);
    then_ctx *t = calloc(1, sizeof *t);
    cf_future *next = cf__future_alloc();
    if (t == NULL || next == NULL) {
        free(t);
        cf_future_release(next);
        return cf__fail_null(CF_ENOMEM);
    }
    t->d.run = then_run;
    t->next = cf_future_retain(next);
    /* Held until the continuation fires: if the user frees ex first, the
     * continuation finds it shut down (CF_ESHUTDOWN), not freed. */
    t->ex = cf__executor_retain(ex);
    t->fn = fn;
    t->flags = flags;
    if (cf__add_callback(f, then_fired, t, then_dropped) != CF_OK) {
        cf_future_release(next);
        cf_future_release(next);
        cf__executor_release(t->ex);
        free(t);
        return cf__fail_null(CF_ENOMEM);
    }
    return next;
}

/* ------------------------------------------------------------------------ */
/* cf_when_all, cf_when_any                                                  */
/* ------------------------------------------------------------------------ */

typedef struct when_ctx {
    deferred d;
    cf_future *out;           /* a reference */
    _Atomic size_t remaining; /* inputs not yet done (when_all) */
    _Atomic size_t refs;      /* callbacks that still hold the context */
    _Atomic bool fired;       /* when_any: a winner was chosen */
    _Atomic bool dropped;     /* an input was released while pending */
    bool any;
    int64_t winner;
    size_t n;
    cf_future *const *fs; /* when_any: a copy of the inputs, to find the
                             winner's index (compared, never followed) */
} when_ctx;

static void when_unref(when_ctx *w)
{
    if (atomic_fetch_sub_explicit(&w->refs, 1, memory_order_acq_rel) == 1) {
        cf_future_release(w->out);
        free((void *)w->fs);
        free(w);
    }
}

static void when_settle(deferred *d)
{
    when_ctx *w = (when_ctx *)d;
    if (w->any && w->winner >= 0)
        cf_set_result_i64(w->out, w->winner);
    else if (w->any || atomic_load(&w->dropped))
        cf__future_fail(w->out, CF_EBROKEN, 0,
                        "an input future was released before it completed");
    else
        cf_set_result(w->out, NULL, 0);
    when_unref(w);
}

static void when_fired(cf_future *f, void *arg)
{
    when_ctx *w = arg;
    if (w->any) {
        bool no = false;
        if (atomic_compare_exchange_strong(&w->fired, &no, true)) {
            size_t i = 0;
            while (i < w->n && w->fs[i] != f)
                i++;
            w->winner = (int64_t)i;
            atomic_fetch_add(&w->refs, 1); /* held by when_settle */
            defer(&w->d);
        }
    } else if (atomic_fetch_sub(&w->remaining, 1) == 1) {
        atomic_fetch_add(&w->refs, 1);
        defer(&w->d);
    }
    when_unref(w);
}

static void when_dropped(void *arg)
{
    when_ctx *w = arg;
    atomic_store(&w->dropped, true);
    /* when_any fails only if every input was dropped. */
    if (atomic_fetch_sub(&w->remaining, 1) == 1 &&
        (!w->any || !atomic_load(&w->fired))) {
        w->winner = -1;
        atomic_fetch_add(&w->refs, 1);
        defer(&w->d);
    }
    when_unref(w);
}

static cf_future *when_new(cf_future *const *fs, size_t n, bool any)
{
    if (fs == NULL && n > 0)
        return cf__fail_null(CF_EINVAL);
    for (size_t i = 0; i < n; i++)
        if (fs[i] == NULL)
            return cf__fail_null(CF_EINVAL);
    cf_future *out = cf__future_alloc();
    if (out == NULL)
        return cf__fail_null(CF_ENOMEM);
    if (n == 0) { /* nothing to wait for */
        if (any)
            cf_set_result_i64(out, -1);
        else
            cf_set_result(out, NULL, 0);
        return out;
    }
    when_ctx *w = calloc(1, sizeof *w);
    cf_future **copy = any ? malloc(n * sizeof *copy) : NULL;
    if (w == NULL || (any && copy == NULL)) {
        free(w);
        free(copy);
        cf_future_release(out);
        return cf__fail_null(CF_ENOMEM);
    }
    if (any)
        memcpy(copy, fs, n * sizeof *copy);
    w->d.run = when_settle;
    w->out = cf_future_retain(out);
    w->any = any;
    w->n = n;
    w->fs = copy;
    w->winner = -1;
    atomic_init(&w->remaining, n);
    atomic_init(&w->refs, n + 1); /* one per input, one for this call */
    for (size_t i = 0; i < n; i++)
        if (cf__add_callback(fs[i], when_fired, w, when_dropped) != CF_OK)
            when_dropped(w); /* no memory to listen: as if it vanished */
    when_unref(w);
    return out;
}

cf_future *cf_when_all(cf_future *const *fs, size_t n)
{
    return when_new(fs, n, false);
}

cf_future *cf_when_any(cf_future *const *fs, size_t n)
{
    return when_new(fs, n, true);
}

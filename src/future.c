/*
 * future.c -- the future's state machine, its outcome, waiters and
 * callbacks.  Knows nothing about executors: they complete a future
 * through cf__future_claim + cf__future_publish (or cf__run_future).
 *
 * Transitions (the state word is documented in internal.h):
 *
 *   PENDING --set_running_or_notify_cancel--> RUNNING --publish--> FINISHED
 *   PENDING --cancel--> CANCELLED            PENDING --publish--> FINISHED
 *
 * Fast paths touch only the state word: reading a finished future's
 * result is one acquire load; completing a future nobody waits on is one
 * CAS.  Sleepers (FS_SLEEPERS) are woken with one futex wake; listeners
 * (FS_LISTENERS) live in a list guarded by a striped lock, so a future
 * carries no mutex of its own.
 *
 * Lock order: stripe lock -> a waiter's own lock (taken inside notify).
 * User callbacks run with no lock held.
 */
#include "internal.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------ */
/* Striped locks for the listener lists                                      */
/* ------------------------------------------------------------------------ */

#define STRIPES 64

static struct {
    pthread_mutex_t m;
    char pad[64 - sizeof(pthread_mutex_t) % 64];
    /* clang-format off */
} stripes[STRIPES] = {
#define S_ {PTHREAD_MUTEX_INITIALIZER, {0}}
#define S8_ S_, S_, S_, S_, S_, S_, S_, S_
    S8_, S8_, S8_, S8_, S8_, S8_, S8_, S8_,
#undef S8_
#undef S_
};
/* clang-format on */

static pthread_mutex_t *stripe_of(const cf_future *f)
{
    uintptr_t h = (uintptr_t)f >> 4;
    h *= 0x9E3779B97F4A7C15ull;
    return &stripes[h >> (64 - 6)].m;
}

/* ------------------------------------------------------------------------ */
/* Outcome                                                                   */
/* ------------------------------------------------------------------------ */

const void *cf__outcome_data(const cf_outcome *o)
{
    return o->len > CF_INLINE_BYTES ? o->v.ptr : o->v.bytes;
}

static void outcome_free_data(cf_outcome *o)
{
    if (o->len > CF_INLINE_BYTES)
        free(o->v.ptr);
    o->len = 0;
}

int cf__outcome_set(cf_outcome *o, uint8_t kind, const void *data, size_t len)
{
    if (len > CF_INLINE_BYTES) {
        void *p = malloc(len);
        if (p == NULL)
            return CF_ENOMEM;
        memcpy(p, data, len);
        outcome_free_data(o);
        o->v.ptr = p;
    } else {
        outcome_free_data(o);
        if (len > 0)
            memcpy(o->v.bytes, data, len);
    }
    o->len = len;
    o->kind = kind;
    return CF_OK;
}

void cf__outcome_adopt(cf_outcome *o, void *buf, size_t len)
{
    if (len <= CF_INLINE_BYTES) {
        cf__outcome_set(o, CF_KIND_BYTES, buf, len); /* cannot fail */
        free(buf);
        return;
    }
    outcome_free_data(o);
    o->v.ptr = buf;
    o->len = len;
    o->kind = CF_KIND_BYTES;
}

void cf__outcome_fail(cf_outcome *o, int status, int code, const char *fmt,
                      va_list ap)
{
    free(o->msg);
    o->msg = NULL;
    o->status = status;
    o->code = code;
    if (fmt != NULL && vasprintf(&o->msg, fmt, ap) < 0)
        o->msg = NULL; /* out of memory: the status and code still arrive */
}

void cf__outcome_failf(cf_outcome *o, int status, int code, const char *fmt,
                       ...)
{
    va_list ap;
    va_start(ap, fmt);
    cf__outcome_fail(o, status, code, fmt, ap);
    va_end(ap);
}

void cf__outcome_clear(cf_outcome *o)
{
    outcome_free_data(o);
    free(o->msg);
    memset(o, 0, sizeof *o);
}

/* ------------------------------------------------------------------------ */
/* Errors nobody read                                                        */
/* ------------------------------------------------------------------------ */

static void print_unobserved(cf_future *f, const cf_error *err, void *arg)
{
    (void)arg;
    char d[256];
    fprintf(stderr, "cfutures: a future's error was never read: %s (%s%s%s)\n",
            cf_describe(f, d, sizeof d), cf_err_name(err->status),
            *err->message ? ": " : "", err->message);
}

static cf_hook default_hook = {.refs = 1, .fn = print_unobserved};

cf_hook *cf__hook_retain(cf_hook *h)
{
    if (h != NULL && h != &default_hook)
        atomic_fetch_add_explicit(&h->refs, 1, memory_order_relaxed);
    return h;
}

void cf__hook_release(cf_hook *h)
{
    if (h != NULL && h != &default_hook &&
        atomic_fetch_sub_explicit(&h->refs, 1, memory_order_acq_rel) == 1)
        free(h);
}

void cf__hook_call(cf_hook *h, cf_future *f, const cf_error *err)
{
    if (h == NULL)
        h = &default_hook;
    if (h->fn != NULL)
        h->fn(f, err, h->arg);
}

void cf_set_default_error_hook(cf_error_hook fn, void *arg)
{
    default_hook.fn = fn;
    default_hook.arg = arg;
}

/* Where a failed future finds its hook: set by the executor layer (a
 * future knows no executor); NULL: the default hook. */
static _Atomic(cf_hook *(*)(const cf_future *)) hook_source;

void cf__future_hook_source(cf_hook *(*fn)(const cf_future *f))
{
    atomic_store_explicit(&hook_source, fn, memory_order_release);
}

/* ------------------------------------------------------------------------ */
/* Life cycle                                                                */
/* ------------------------------------------------------------------------ */

static cf_future *future_alloc(size_t size)
{
    cf_future *f = cf__fcache_alloc(size);
    if (f == NULL)
        return NULL;
    atomic_init(&f->state, CF_PENDING);
    atomic_init(&f->refs, 1);
    return f;
}

cf_future *cf__future_alloc(void)
{
    return future_alloc(sizeof(cf_future));
}

/* A standalone future has no task: its block ends before the task's
 * fields (internal.h), and ex stays NULL. */
cf_future *cf_future_new(void)
{
    cf_future *f = future_alloc(CF_FUTURE_BARE_SIZE);
    return f ? f : cf__fail_null(CF_ENOMEM);
}

#ifdef CF_DEBUG
/* A debug build (-DCF_DEBUG=ON) catches a future released once too often:
 * a freed future is poisoned and kept aside for a while (the last
 * QUARANTINE of them) before its memory is reused, so that a release or
 * retain of it aborts with a message instead of corrupting another
 * future. */
#define POISON 0xdeadf00du
#define QUARANTINE 4096
/* Lock-free, so that a child of fork() never finds it held. */
static cf_future *_Atomic quarantine[QUARANTINE];
static _Atomic size_t quarantine_next;

static _Noreturn void misuse(const char *what, const cf_future *f)
{
    fprintf(stderr,
            "cfutures: %s(%p): the future was already released "
            "(released more than once?)\n",
            what, (const void *)f);
    abort();
}

static void check_live(const char *what, cf_future *f, uint32_t refs)
{
    if (refs == 0 || refs == POISON)
        misuse(what, f);
}

static void free_future(cf_future *f)
{
    atomic_store_explicit(&f->refs, POISON, memory_order_relaxed);
    size_t i = atomic_fetch_add_explicit(&quarantine_next, 1,
                                         memory_order_relaxed) %
               QUARANTINE;
    cf__fcache_free(
        atomic_exchange_explicit(&quarantine[i], f, memory_order_acq_rel));
}
#else
#define check_live(what, f, refs) ((void)(refs))
#define free_future cf__fcache_free
#endif

cf_future *cf_future_retain(cf_future *f)
{
    if (f != NULL) {
        uint32_t r = atomic_fetch_add_explicit(&f->refs, 1,
                                               memory_order_relaxed);
        check_live("cf_future_retain", f, r);
    }
    return f;
}

void cf_future_release(cf_future *f)
{
    if (f == NULL)
        return;
    /* acq_rel rather than release + fence: the same code on x86, and
     * ThreadSanitizer understands it. */
    uint32_t r = atomic_fetch_sub_explicit(&f->refs, 1, memory_order_acq_rel);
    check_live("cf_future_release", f, r);
    if (r != 1)
        return;
    uint32_t s = atomic_load_explicit(&f->state, memory_order_relaxed);
    if ((s & FS_STATE) == CF_FINISHED && f->out.status != CF_OK) {
        cf_hook *h = f->out.v.ptr; /* see internal.h */
        if (!(s & FS_OBSERVED)) {
            cf_error e = {f->out.status, f->out.code,
                          f->out.msg ? f->out.msg : ""};
            atomic_store_explicit(&f->refs, 1, memory_order_relaxed);
            cf__hook_call(h, f, &e); /* f is readable, not retainable */
        }
        cf__hook_release(h);
        f->out.v.ptr = NULL;
    }
    /* Callbacks of a standalone future released while pending never run;
     * executors hold a reference until their task ends. */
    cf_listener *l = f->listeners;
    if (l != NULL) {
        l->prev->next = NULL;
        while (l != NULL) {
            cf_listener *next = l->next;
            if (l->notify == NULL) {
                if (l->drop != NULL)
                    l->drop(l->arg);
                free(l);
            }
            l = next;
        }
    }
    if (f->arg_flags & CF_ARG_OWNED)
        free((void *)f->arg.ptr);
    cf__outcome_clear(&f->out);
    free_future(f);
}

int cf__future_set_arg(cf_future *f, const void *arg, size_t len, bool borrow)
{
    f->arg_len = len;
    if (len <= CF_INLINE_BYTES) {
        if (len > 0)
            memcpy(f->arg.bytes, arg, len);
    } else if (borrow) {
        f->arg.ptr = arg;
    } else {
        void *p = malloc(len);
        if (p == NULL)
            return CF_ENOMEM;
        memcpy(p, arg, len);
        f->arg.ptr = p;
        f->arg_flags |= CF_ARG_OWNED;
    }
    return CF_OK;
}

const void *cf__future_arg(const cf_future *f)
{
    return f->arg_len > CF_INLINE_BYTES ? f->arg.ptr : f->arg.bytes;
}

/* ------------------------------------------------------------------------ */
/* Listeners                                                                 */
/* ------------------------------------------------------------------------ */

bool cf__listen(cf_future *f, cf_listener *l)
{
    pthread_mutex_t *m = stripe_of(f);
    pthread_mutex_lock(m);
    uint32_t s = atomic_load_explicit(&f->state, memory_order_acquire);
    for (;;) {
        if (cf__state_done(s)) {
            pthread_mutex_unlock(m);
            return false;
        }
        if (s & FS_LISTENERS)
            break;
        if (atomic_compare_exchange_weak_explicit(
                &f->state, &s, s | FS_LISTENERS, memory_order_acq_rel,
                memory_order_acquire))
            break;
    }
    if (f->listeners == NULL) {
        l->next = l->prev = l;
        f->listeners = l;
    } else {
        cf_listener *head = f->listeners;
        l->prev = head->prev;
        l->next = head;
        head->prev->next = l;
        head->prev = l;
    }
    pthread_mutex_unlock(m);
    return true;
}

static void unlink_locked(cf_future *f, cf_listener *l)
{
    if (l->next == l) {
        f->listeners = NULL;
    } else {
        l->prev->next = l->next;
        l->next->prev = l->prev;
        if (f->listeners == l)
            f->listeners = l->next;
    }
    l->next = l->prev = NULL;
}

void cf__unlisten(cf_future *f, cf_listener *l)
{
    pthread_mutex_t *m = stripe_of(f);
    pthread_mutex_lock(m);
    if (l->next != NULL)
        unlink_locked(f, l);
    pthread_mutex_unlock(m);
}

/*
 * After the transition to FINISHED or CANCELLED: wake sleepers, notify
 * internal waiters (under the stripe lock, so a waiter that unlistens
 * after we are done can free its node), then run user callbacks in
 * registration order with no lock held.
 */
static void after_done(cf_future *f, uint32_t old)
{
    if (old & FS_SLEEPERS)
        cf__futex_wake_all(&f->state);
    if (!(old & FS_LISTENERS))
        return;
    cf_listener *cbs = NULL, **tail = &cbs;
    pthread_mutex_t *m = stripe_of(f);
    pthread_mutex_lock(m);
    while (f->listeners != NULL) {
        cf_listener *l = f->listeners;
        unlink_locked(f, l);
        if (l->notify != NULL) {
            l->notify(l, f);
        } else {
            *tail = l;
            tail = &l->next;
        }
    }
    pthread_mutex_unlock(m);
    if (cbs == NULL)
        return;
    cf_future_retain(f); /* a callback may drop the caller's reference */
    while (cbs != NULL) {
        cf_listener *next = cbs->next;
        cbs->fn(f, cbs->arg);
        free(cbs);
        cbs = next;
    }
    cf_future_release(f);
}

/* ------------------------------------------------------------------------ */
/* Transitions                                                               */
/* ------------------------------------------------------------------------ */

cf_state cf_future_state(const cf_future *f)
{
    if (f == NULL)
        return CF_PENDING;
    return (cf_state)(cf__state_load(f) & FS_STATE);
}

bool cf_cancelled(const cf_future *f)
{
    return f != NULL && (cf__state_load(f) & FS_STATE) == CF_CANCELLED;
}

bool cf_running(const cf_future *f)
{
    return f != NULL && (cf__state_load(f) & FS_STATE) == CF_RUNNING;
}

bool cf_done(const cf_future *f)
{
    return f != NULL && cf__state_done(cf__state_load(f));
}

bool cf_cancel(cf_future *f)
{
    if (f == NULL)
        return false;
    uint32_t s = atomic_load_explicit(&f->state, memory_order_acquire);
    /* A task handed to a worker ahead of time is still pending: its
     * executor takes it back, unless it has just started. */
    if ((s & FS_STATE) == CF_PENDING && f->ex != NULL &&
        f->ex->vt->cancel_queued != NULL && !f->ex->vt->cancel_queued(f->ex, f))
        return false;
    for (;;) {
        if ((s & FS_STATE) == CF_CANCELLED)
            return true;
        if ((s & FS_STATE) != CF_PENDING || (s & FS_COMPLETING))
            return false;
        uint32_t n = (s & (FS_CANCEL_REQ | FS_OBSERVED)) | CF_CANCELLED;
        if (atomic_compare_exchange_weak_explicit(
                &f->state, &s, n, memory_order_acq_rel, memory_order_acquire))
            break;
    }
    after_done(f, s);
    return true;
}

bool cf_request_cancel(cf_future *f)
{
    if (f == NULL)
        return false;
    uint32_t s = atomic_fetch_or_explicit(&f->state, FS_CANCEL_REQ,
                                          memory_order_acq_rel);
    if (cf_cancel(f))
        return true;
    if ((s & FS_STATE) == CF_RUNNING && f->ex != NULL &&
        f->ex->vt->cancel_running != NULL)
        f->ex->vt->cancel_running(f->ex, f, false);
    return false;
}

int cf_kill_task(cf_future *f)
{
    if (f == NULL)
        return CF_EINVAL;
    uint32_t s = atomic_fetch_or_explicit(
        &f->state, FS_CANCEL_REQ | FS_KILL_REQ, memory_order_acq_rel);
    if (cf_cancel(f))
        return CF_OK;
    if (cf__state_done(s))
        return CF_ESTATE;
    if (f->ex == NULL || f->ex->vt->cancel_running == NULL)
        return CF_EINVAL; /* a thread cannot be killed: the flag is up */
    f->ex->vt->cancel_running(f->ex, f, true);
    return CF_OK;
}

int cf_set_running_or_notify_cancel(cf_future *f)
{
    if (f == NULL)
        return CF_EINVAL;
    uint32_t s = atomic_load_explicit(&f->state, memory_order_acquire);
    for (;;) {
        if ((s & FS_STATE) == CF_CANCELLED)
            return CF_ECANCELLED;
        if ((s & FS_STATE) != CF_PENDING || (s & FS_COMPLETING))
            return CF_ESTATE;
        if (atomic_compare_exchange_weak_explicit(
                &f->state, &s, (s & ~FS_STATE) | CF_RUNNING,
                memory_order_acq_rel, memory_order_acquire))
            return CF_OK;
    }
}

int cf__future_claim(cf_future *f)
{
    uint32_t s = atomic_load_explicit(&f->state, memory_order_acquire);
    for (;;) {
        if (cf__state_done(s) || (s & FS_COMPLETING))
            return CF_ESTATE;
        if (atomic_compare_exchange_weak_explicit(
                &f->state, &s, s | FS_COMPLETING, memory_order_acq_rel,
                memory_order_acquire))
            return CF_OK;
    }
}

void cf__future_publish(cf_future *f)
{
    cf_outcome *o = &f->out;
    if (o->status != CF_OK) { /* no result bytes; v holds the error hook */
        if (o->len > CF_INLINE_BYTES)
            free(o->v.ptr);
        o->len = 0;
        o->kind = CF_KIND_NONE;
        cf_hook *(*src)(const cf_future *) =
            atomic_load_explicit(&hook_source, memory_order_acquire);
        o->v.ptr = src ? src(f) : NULL;
    }
    uint32_t s = atomic_load_explicit(&f->state, memory_order_relaxed);
    uint32_t n;
    do {
        n = (s & (FS_CANCEL_REQ | FS_OBSERVED)) | CF_FINISHED;
    } while (!atomic_compare_exchange_weak_explicit(
        &f->state, &s, n, memory_order_acq_rel, memory_order_relaxed));
    after_done(f, s);
}

static int fail_v(cf_future *f, int status, int code, const char *fmt,
                  va_list ap)
{
    int rc = cf__future_claim(f);
    if (rc != CF_OK)
        return rc;
    cf__outcome_fail(&f->out, status, code, fmt, ap);
    cf__future_publish(f);
    return CF_OK;
}

int cf__future_fail(cf_future *f, int status, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = fail_v(f, status, code, fmt, ap);
    va_end(ap);
    return rc;
}

static int set_result_kind(cf_future *f, uint8_t kind, const void *data,
                           size_t len)
{
    if (f == NULL || (data == NULL && len > 0))
        return CF_EINVAL;
    int rc = cf__future_claim(f);
    if (rc != CF_OK)
        return rc;
    rc = cf__outcome_set(&f->out, kind, data, len);
    if (rc != CF_OK) /* no room for the result: the future still ends */
        cf__outcome_failf(&f->out, CF_ENOMEM, 0,
                          "no memory for a %zu-byte "
                          "result",
                          len);
    cf__future_publish(f);
    return rc;
}

int cf_set_result(cf_future *f, const void *data, size_t len)
{
    return set_result_kind(f, CF_KIND_BYTES, data, len);
}

int cf_set_result_i64(cf_future *f, int64_t v)
{
    return set_result_kind(f, CF_KIND_I64, &v, sizeof v);
}

int cf_set_result_f64(cf_future *f, double v)
{
    return set_result_kind(f, CF_KIND_F64, &v, sizeof v);
}

int cf_set_result_str(cf_future *f, const char *s)
{
    if (s == NULL)
        return CF_EINVAL;
    return set_result_kind(f, CF_KIND_STR, s, strlen(s) + 1);
}

int cf_set_exception(cf_future *f, int code, const char *fmt, ...)
{
    if (f == NULL)
        return CF_EINVAL;
    va_list ap;
    va_start(ap, fmt);
    int rc = fail_v(f, CF_ETASK, code, fmt, ap);
    va_end(ap);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Waiting and reading                                                       */
/* ------------------------------------------------------------------------ */

_Thread_local cf_helper *cf__current_helper;

/* How long cf_result spins before it sleeps (see cf__future_wait). */
#define WAIT_SPIN_NS 10000

static void wake_helper(cf_listener *l, cf_future *f)
{
    (void)f;
    cf_helper *h = l->arg;
    pthread_mutex_lock(h->lock);
    pthread_cond_broadcast(h->cv);
    pthread_mutex_unlock(h->lock);
}

/* A pool thread waits by running its pool's queued tasks (internal.h). */
static int help_wait(cf_helper *h, cf_future *f, const cf_deadline *d)
{
    /* Fast: run work with no lock and no listener while there is some
     * (in a fork-join program the awaited task is usually among it). */
    for (unsigned i = 1; !cf__state_done(cf__state_load(f)); i++) {
        if (!h->run_one(h))
            break;
        if (!d->forever && (i & 15) == 0 && cf__deadline_passed(d))
            return cf__state_done(cf__state_load(f)) ? CF_OK : CF_ETIMEDOUT;
    }
    if (cf__state_done(cf__state_load(f)))
        return CF_OK; /* no stripe lock for a listener we do not need */
    cf_listener l = {.notify = wake_helper, .arg = h};
    if (!cf__listen(f, &l))
        return CF_OK;
    int rc = CF_OK;
    cf_future *outer = h->awaited; /* a nested wait's, on this thread */
    h->awaited = f;
    pthread_mutex_lock(h->lock);
    while (!cf__state_done(cf__state_load(f))) {
        if (h->run_one_locked(h))
            continue;
        if (h->sleep_locked(h, d) == ETIMEDOUT) {
            if (!cf__state_done(cf__state_load(f)))
                rc = CF_ETIMEDOUT;
            break;
        }
    }
    pthread_mutex_unlock(h->lock);
    h->awaited = outer;
    cf__unlisten(f, &l);
    return rc;
}

int cf__future_wait(cf_future *f, const cf_deadline *d)
{
    if (cf__state_done(cf__state_load(f)))
        return CF_OK;
    cf_helper *h = cf__current_helper;
    if (h != NULL)
        return help_wait(h, f, d);
    /* Spin a few microseconds first: a result that is about to arrive is
     * taken without the two system calls and the context switch of a
     * futex sleep and wake-up. */
    uint64_t until = 0;
    for (unsigned i = 1;; i++) {
        if (cf__state_done(cf__state_load(f)))
            return CF_OK;
        cf__cpu_relax();
        if ((i & 63) == 0) {
            uint64_t now = cf__now_ns();
            if (until == 0)
                until = now + WAIT_SPIN_NS;
            else if (now > until)
                break;
        }
    }
    uint32_t s = atomic_load_explicit(&f->state, memory_order_acquire);
    for (;;) {
        if (cf__state_done(s))
            return CF_OK;
        if (!(s & FS_SLEEPERS)) {
            if (!atomic_compare_exchange_weak_explicit(
                    &f->state, &s, s | FS_SLEEPERS, memory_order_acq_rel,
                    memory_order_acquire))
                continue;
            s |= FS_SLEEPERS;
        }
        if (cf__futex_wait(&f->state, s, d) == ETIMEDOUT) {
            s = atomic_load_explicit(&f->state, memory_order_acquire);
            return cf__state_done(s) ? CF_OK : CF_ETIMEDOUT;
        }
        s = atomic_load_explicit(&f->state, memory_order_acquire);
    }
}

/* Waits until f is done: CF_OK, CF_ETIMEDOUT (not done in time) or
 * CF_EINVAL.  Marks the outcome as read. */
static int wait_done(cf_future *f, double timeout)
{
    if (f == NULL || isnan(timeout) || timeout < 0)
        return CF_EINVAL;
    uint32_t s = cf__state_load(f);
    if (!cf__state_done(s)) {
        if (timeout == 0)
            return CF_ETIMEDOUT; /* a poll never sleeps */
        cf_deadline d;
        cf__deadline(timeout, &d);
        if (cf__future_wait(f, &d) != CF_OK)
            return CF_ETIMEDOUT;
        s = cf__state_load(f);
    }
    /* Only an error can go unread (the hook); a result needs no mark, and
     * the fast path of a successful read stays free of atomic writes. */
    if (!(s & FS_OBSERVED) && (s & FS_STATE) == CF_FINISHED &&
        f->out.status != CF_OK)
        atomic_fetch_or_explicit(&f->state, FS_OBSERVED, memory_order_relaxed);
    return CF_OK;
}

/* Waits, then says how the future ended (its status, or CF_ECANCELLED). */
static int wait_outcome(cf_future *f, double timeout)
{
    int rc = wait_done(f, timeout);
    if (rc != CF_OK)
        return rc;
    if ((cf__state_load(f) & FS_STATE) == CF_CANCELLED)
        return CF_ECANCELLED;
    return f->out.status;
}

int cf_result(cf_future *f, double timeout, const void **data, size_t *len)
{
    int rc = wait_outcome(f, timeout);
    if (rc == CF_OK) {
        if (data != NULL)
            *data = cf__outcome_data(&f->out);
        if (len != NULL)
            *len = f->out.len;
    }
    return rc;
}

static int result_8(cf_future *f, double timeout, void *out)
{
    const void *p;
    size_t n;
    int rc = cf_result(f, timeout, &p, &n);
    if (rc != CF_OK)
        return rc;
    if (n != 8 || out == NULL)
        return CF_EINVAL;
    memcpy(out, p, 8);
    return CF_OK;
}

int cf_result_i64(cf_future *f, double timeout, int64_t *out)
{
    return result_8(f, timeout, out);
}

int cf_result_f64(cf_future *f, double timeout, double *out)
{
    return result_8(f, timeout, out);
}

int cf_result_str(cf_future *f, double timeout, const char **out)
{
    const void *p;
    size_t n;
    int rc = cf_result(f, timeout, &p, &n);
    if (rc != CF_OK)
        return rc;
    if (out == NULL || n == 0 || ((const char *)p)[n - 1] != '\0')
        return CF_EINVAL;
    *out = p;
    return CF_OK;
}

int cf_exception(cf_future *f, double timeout, cf_error *err)
{
    if (err == NULL)
        return CF_EINVAL;
    int rc = wait_done(f, timeout);
    if (rc != CF_OK)
        return rc;
    if ((cf__state_load(f) & FS_STATE) == CF_CANCELLED)
        return CF_ECANCELLED;
    err->status = f->out.status;
    err->code = f->out.code;
    err->message = f->out.msg ? f->out.msg : "";
    return CF_OK;
}

int cf_add_done_callback(cf_future *f, cf_done_fn fn, void *arg)
{
    return cf__add_callback(f, fn, arg, NULL);
}

int cf__add_callback(cf_future *f, cf_done_fn fn, void *arg,
                     void (*drop)(void *arg))
{
    if (f == NULL || fn == NULL)
        return CF_EINVAL;
    if (!cf__state_done(cf__state_load(f))) {
        cf_listener *l = calloc(1, sizeof *l);
        if (l == NULL)
            return CF_ENOMEM;
        l->fn = fn;
        l->arg = arg;
        l->drop = drop;
        if (cf__listen(f, l))
            return CF_OK;
        free(l); /* finished meanwhile: run it now */
    }
    fn(f, arg);
    return CF_OK;
}

/* ------------------------------------------------------------------------ */
/* describe                                                                  */
/* ------------------------------------------------------------------------ */

char *cf_describe(const cf_future *f, char *buf, size_t size)
{
    static const char *names[] = {"pending", "running", "finished",
                                  "cancelled"};
    if (buf == NULL || size == 0)
        return buf;
    if (f == NULL) {
        snprintf(buf, size, "<cf_future NULL>");
        return buf;
    }
    uint32_t s = cf__state_load(f);
    int n = snprintf(buf, size, "<cf_future at %p state=%s", (void *)f,
                     names[s & FS_STATE]);
    if (n < 0 || (size_t)n >= size)
        return buf;
    char *p = buf + n;
    size_t left = size - (size_t)n;
    if ((s & FS_STATE) != CF_FINISHED) {
        snprintf(p, left, ">");
        return buf;
    }
    const cf_outcome *o = &f->out;
    if (o->status != CF_OK) {
        snprintf(p, left, " raised %s(%d)%s%s>", cf_err_name(o->status),
                 o->code, o->msg ? ": " : "", o->msg ? o->msg : "");
        return buf;
    }
    const void *d = cf__outcome_data(o);
    int64_t i;
    double x;
    switch (o->kind) {
    case CF_KIND_I64:
        memcpy(&i, d, 8);
        snprintf(p, left, " returned i64 %" PRId64 ">", i);
        break;
    case CF_KIND_F64:
        memcpy(&x, d, 8);
        snprintf(p, left, " returned f64 %g>", x);
        break;
    case CF_KIND_STR:
        snprintf(p, left, " returned str \"%.40s%s\">", (const char *)d,
                 o->len > 41 ? "..." : "");
        break;
    case CF_KIND_NONE:
        snprintf(p, left, " returned nothing>");
        break;
    default:
        snprintf(p, left, " returned %zu bytes>", o->len);
        break;
    }
    return buf;
}

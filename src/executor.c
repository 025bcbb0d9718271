/*
 * executor.c -- the front every executor kind plugs into: argument checks,
 * the shutdown rule (no submit after shutdown), the typed submit helpers,
 * and dispatch through the kind's vtable.
 */
#include "internal.h"

#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define BUMP(ex, field, n) \
    atomic_fetch_add_explicit(&(ex)->stats.field, (n), memory_order_relaxed)

int cf__cpu_count(void)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) {
        int n = CPU_COUNT(&set);
        if (n > 0)
            return n;
    }
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

/* ------------------------------------------------------------------------ */
/* fork()                                                                    */
/* ------------------------------------------------------------------------ */

/* A child of fork() gets a copy of every executor but none of its threads
 * (nor, for a process pool, its workers, which are its parent's children),
 * and locks that other threads held at the fork stay held.  So an executor
 * remembers the process's fork generation, bumped in every child; one
 * from an older generation fails fast instead of hanging. */
static _Atomic unsigned fork_gen;
static pthread_once_t fork_once = PTHREAD_ONCE_INIT;
static const char inherited_msg[] =
    "this executor was inherited through fork(): its workers are in the "
    "parent process; create a new executor in the child";

static void after_fork_in_child(void)
{
    atomic_fetch_add_explicit(&fork_gen, 1, memory_order_relaxed);
}

static void watch_forks(void)
{
    pthread_atfork(NULL, NULL, after_fork_in_child);
}

bool cf__inherited(const cf_executor *ex)
{
    return ex->fork_gen !=
           atomic_load_explicit(&fork_gen, memory_order_relaxed);
}

/* The hook a failed future of ours keeps (future.c asks through
 * cf__future_hook_source, so that the future layer knows no executor). */
static cf_hook *hook_of(const cf_future *f)
{
    return f->ex ? cf__hook_retain(atomic_load(&f->ex->hook)) : NULL;
}

void cf__executor_init(cf_executor *ex, const cf_executor_vtable *vt,
                       int max_workers)
{
    static _Atomic int next_id = 1;
    cf__future_hook_source(hook_of);
    pthread_once(&fork_once, watch_forks);
    ex->fork_gen = atomic_load_explicit(&fork_gen, memory_order_relaxed);
    ex->vt = vt;
    ex->max_workers = max_workers;
    ex->id = atomic_fetch_add(&next_id, 1);
    atomic_init(&ex->refs, 1); /* the user's */
    atomic_init(&ex->no_wait, false);
    atomic_init(&ex->shut_down, false);
    atomic_init(&ex->hook, NULL);
}

/* ------------------------------------------------------------------------ */
/* Statistics                                                                */
/* ------------------------------------------------------------------------ */

/* The shard this thread counts in (initial-exec: no __tls_get_addr call
 * on the per-task path). */
static _Thread_local __attribute__((tls_model("initial-exec")))
cf_stats_shard *here;

void cf__stats_shard_enter(cf_executor *ex, cf_stats_shard *s)
{
    if (s->ex == NULL) {
        s->ex = ex;
        cf_stats_shard *head = atomic_load(&ex->shards);
        do
            s->next = head;
        while (!atomic_compare_exchange_weak(&ex->shards, &head, s));
    }
    here = s;
}

void cf__stats_shard_leave(void)
{
    here = NULL;
}

/* Counts in this thread's shard of ex if it has one (one writer: a load
 * and a release store), else in ex's shared counters. */
#define BUMP_HERE(ex, field, n)                                               \
    do {                                                                      \
        cf_stats_shard *s_ = here;                                            \
        if (s_ != NULL && s_->ex == (ex))                                     \
            atomic_store_explicit(                                            \
                &s_->field,                                                   \
                atomic_load_explicit(&s_->field, memory_order_relaxed) + (n), \
                memory_order_release);                                        \
        else                                                                  \
            BUMP(ex, field, n);                                               \
    } while (0)

void cf__stats_started(cf_executor *ex)
{
    BUMP_HERE(ex, started, 1);
}

void cf__stats_ended(cf_executor *ex, int status)
{
    if (status == CF_OK)
        BUMP_HERE(ex, ok, 1);
    else if (status == CF_ECRASHED)
        BUMP_HERE(ex, crashed, 1);
    else
        BUMP_HERE(ex, failed, 1);
}

void cf__stats_cancelled(cf_executor *ex)
{
    BUMP_HERE(ex, cancelled, 1);
}

void cf__stats_busy(cf_executor *ex, uint64_t ns)
{
    BUMP_HERE(ex, busy_ns, ns);
}

/* A counter: the shared one plus every shard's (acquire: a count read
 * here covers what its thread counted before it). */
static uint64_t stat_sum(cf_executor *e, _Atomic uint64_t *shared,
                         size_t shard_off)
{
    uint64_t n = atomic_load_explicit(shared, memory_order_acquire);
    for (cf_stats_shard *s =
             atomic_load_explicit(&e->shards, memory_order_acquire);
         s != NULL; s = s->next)
        n += atomic_load_explicit(
            (_Atomic uint64_t *)(void *)((char *)s + shard_off),
            memory_order_acquire);
    return n;
}

int cf_executor_stats(const cf_executor *ex, cf_stats *out)
{
    if (ex == NULL || out == NULL)
        return CF_EINVAL;
    cf_executor *e = (cf_executor *)ex;
#define LOAD(field) atomic_load_explicit(&e->stats.field, memory_order_acquire)
#define SUM(field) stat_sum(e, &e->stats.field, offsetof(cf_stats_shard, field))
    /* Read the ends before the starts before the submits, so that a
     * snapshot taken while tasks run never goes negative. */
    uint64_t ok = SUM(ok), failed = SUM(failed), crashed = SUM(crashed);
    uint64_t cancelled = SUM(cancelled);
    uint64_t started = SUM(started);
    uint64_t submitted = SUM(submitted);
    out->submitted = submitted;
    out->done = ok;
    out->failed = failed;
    out->crashed = crashed;
    out->cancelled = cancelled;
    out->running = started - ok - failed - crashed;
    out->queued = submitted - started - cancelled;
    out->busy_seconds = (double)SUM(busy_ns) / 1e9;
    out->workers = LOAD(workers);
    out->worker_starts = LOAD(worker_starts);
    out->idle_exits = LOAD(idle_exits);
#undef LOAD
#undef SUM
    return CF_OK;
}

/* ------------------------------------------------------------------------ */
/* Errors nobody read                                                        */
/* ------------------------------------------------------------------------ */

int cf_executor_set_error_hook(cf_executor *ex, cf_error_hook fn, void *arg)
{
    if (ex == NULL)
        return CF_EINVAL;
    cf_hook *h = malloc(sizeof *h);
    if (h == NULL)
        return CF_ENOMEM;
    atomic_init(&h->refs, 1);
    h->fn = fn;
    h->arg = arg;
    cf__hook_release(atomic_exchange(&ex->hook, h));
    return CF_OK;
}

int cf__submit_into(cf_executor *ex, cf_future *f, cf_task_fn fn,
                    const void *arg, size_t len, const cf_task_opts *opts,
                    unsigned chunk)
{
    static const cf_task_opts none;
    if (ex == NULL || fn == NULL || (arg == NULL && len > 0))
        return CF_EINVAL;
    if (opts == NULL)
        opts = &none;
    /* CF_FOREVER is the library's own "no limit", as 0 is. */
    double limit = opts->time_limit == CF_FOREVER ? 0 : opts->time_limit;
    if (!(limit >= 0) || limit > 1e9 || opts->retries < 0 ||
        opts->retries > 255)
        return CF_EINVAL;
    if (cf__inherited(ex))
        return CF_EBROKEN;
    if (atomic_load_explicit(&ex->shut_down, memory_order_acquire))
        return CF_ESHUTDOWN;
    f->fn = fn;
    f->ex = ex;
    f->retries = (uint8_t)opts->retries;
    f->time_limit = (float)limit;
    f->chunk = (uint16_t)(chunk > 65535 ? 65535 : chunk);
    if (opts->priority != 0)
        *cf__queued_priority(f) = opts->priority;
    if (cf__future_set_arg(f, arg, len, opts->flags & CF_BORROW_ARG) != CF_OK)
        return CF_ENOMEM;
    if (cf__tracing())
        f->out.v.i64 = (int64_t)cf__now_ns(); /* see internal.h */
    cf_future_retain(f);                      /* the executor's reference */
    /* Counted before it can start, so that a snapshot never shows more
     * tasks started than submitted; taken back if refused. */
    BUMP_HERE(ex, submitted, 1);
    int rc = ex->vt->submit(ex, f, opts->flags);
    if (rc != CF_OK) {
        BUMP_HERE(ex, submitted, UINT64_MAX); /* - 1, modulo 2^64 */
        cf_future_release(f);
    }
    return rc;
}

cf_future *cf__submit(cf_executor *ex, cf_task_fn fn, const void *arg,
                      size_t len, const cf_task_opts *opts, unsigned chunk)
{
    if (ex == NULL || fn == NULL || (arg == NULL && len > 0))
        return cf__fail_null(CF_EINVAL);
    cf_future *f = cf__future_alloc();
    if (f == NULL)
        return cf__fail_null(CF_ENOMEM);
    int rc = cf__submit_into(ex, f, fn, arg, len, opts, chunk);
    if (rc != CF_OK) {
        cf_future_release(f);
        return rc == CF_EBROKEN && cf__inherited(ex)
                   ? cf__fail_null_msg(rc, inherited_msg)
                   : cf__fail_null(rc);
    }
    return f;
}

cf_future *cf_submit_ex(cf_executor *ex, cf_task_fn fn, const void *arg,
                        size_t len, const cf_task_opts *opts)
{
    return cf__submit(ex, fn, arg, len, opts, 1);
}

cf_future *cf_submit(cf_executor *ex, cf_task_fn fn, const void *arg,
                     size_t len)
{
    return cf_submit_ex(ex, fn, arg, len, NULL);
}

cf_future *cf_submit_i64(cf_executor *ex, cf_task_fn fn, int64_t v)
{
    return cf_submit_ex(ex, fn, &v, sizeof v, NULL);
}

cf_future *cf_submit_f64(cf_executor *ex, cf_task_fn fn, double v)
{
    return cf_submit_ex(ex, fn, &v, sizeof v, NULL);
}

cf_future *cf_submit_str(cf_executor *ex, cf_task_fn fn, const char *s)
{
    if (s == NULL)
        return cf__fail_null(CF_EINVAL);
    return cf_submit_ex(ex, fn, s, strlen(s) + 1, NULL);
}

cf_executor *cf__executor_retain(cf_executor *ex)
{
    if (ex != NULL)
        atomic_fetch_add_explicit(&ex->refs, 1, memory_order_relaxed);
    return ex;
}

void cf__executor_release(cf_executor *ex)
{
    if (ex == NULL ||
        atomic_fetch_sub_explicit(&ex->refs, 1, memory_order_acq_rel) != 1)
        return;
    cf__hook_release(atomic_exchange(&ex->hook, NULL));
    ex->vt->destroy(ex);
}

int cf_shutdown(cf_executor *ex, bool wait, bool cancel_futures)
{
    if (ex == NULL)
        return CF_EINVAL;
    if (cf__inherited(ex))
        return CF_EBROKEN; /* nothing of it runs here */
    atomic_store_explicit(&ex->shut_down, true, memory_order_release);
    ex->vt->shutdown(ex, cancel_futures);
    if (!wait) {
        atomic_store_explicit(&ex->no_wait, true, memory_order_relaxed);
        return CF_OK;
    }
    cf_deadline forever = {.forever = true};
    return ex->vt->wait(ex, &forever);
}

int cf_shutdown_within(cf_executor *ex, double timeout)
{
    cf_deadline d;
    if (ex == NULL || cf__deadline(timeout, &d) != CF_OK)
        return CF_EINVAL;
    if (cf__inherited(ex))
        return CF_EBROKEN;
    atomic_store_explicit(&ex->shut_down, true, memory_order_release);
    ex->vt->shutdown(ex, false);
    if (ex->vt->wait(ex, &d) == CF_OK)
        return CF_OK;
    /* Out of time: drop what has not started, then stop the workers. */
    ex->vt->shutdown(ex, true);
    if (ex->vt->signal_workers != NULL) {
        ex->vt->signal_workers(ex, SIGTERM);
        cf__deadline(1.0, &d);
        if (ex->vt->wait(ex, &d) != CF_OK) {
            ex->vt->signal_workers(ex, SIGKILL);
            cf__deadline(CF_FOREVER, &d);
            ex->vt->wait(ex, &d);
        }
    }
    return CF_ETIMEDOUT;
}

static int signal_workers(cf_executor *ex, int sig)
{
    if (ex == NULL)
        return CF_EINVAL;
    if (ex->vt->signal_workers == NULL)
        return CF_EINVAL; /* threads cannot be killed */
    if (cf__inherited(ex))
        return CF_EBROKEN; /* its workers are the parent's children */
    atomic_store_explicit(&ex->shut_down, true, memory_order_release);
    ex->vt->shutdown(ex, true);
    return ex->vt->signal_workers(ex, sig);
}

int cf_terminate_workers(cf_executor *ex)
{
    return signal_workers(ex, SIGTERM);
}

int cf_kill_workers(cf_executor *ex)
{
    return signal_workers(ex, SIGKILL);
}

void cf_executor_free(cf_executor *ex)
{
    if (ex == NULL)
        return;
    /* In a forked child: no thread to join, locks perhaps held by threads
     * that are not here.  The copy is left as it is (exit or exec returns
     * the memory). */
    if (cf__inherited(ex))
        return;
    /* After shutdown(wait=false) the workers finish on their own and the
     * memory goes with the last of them (or the last map / continuation
     * holding a reference). */
    bool wait = !atomic_load_explicit(&ex->no_wait, memory_order_relaxed);
    cf_shutdown(ex, wait, false);
    cf__executor_release(ex);
}

int cf_executor_max_workers(const cf_executor *ex)
{
    return ex ? ex->max_workers : CF_EINVAL;
}

/*
 * executor.c -- the front every executor kind plugs into: argument checks,
 * the shutdown rule (no submit after shutdown), the typed submit helpers,
 * and dispatch through the kind's vtable.
 */
#include "internal.h"

#include <sched.h>
#include <string.h>
#include <unistd.h>

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

void cf__executor_init(cf_executor *ex, const cf_executor_vtable *vt,
                       int max_workers)
{
    ex->vt = vt;
    ex->max_workers = max_workers;
    atomic_init(&ex->shut_down, false);
}

cf_future *cf_submit_ex(cf_executor *ex, cf_task_fn fn, const void *arg,
                        size_t len, const cf_task_opts *opts)
{
    static const cf_task_opts none;
    if (ex == NULL || fn == NULL || (arg == NULL && len > 0))
        return cf__fail_null(CF_EINVAL);
    if (opts == NULL)
        opts = &none;
    if (opts->time_limit < 0 || opts->time_limit != opts->time_limit ||
        opts->retries < 0)
        return cf__fail_null(CF_EINVAL);
    if (atomic_load_explicit(&ex->shut_down, memory_order_acquire))
        return cf__fail_null(CF_ESHUTDOWN);
    cf_future *f = cf__future_alloc();
    if (f == NULL)
        return cf__fail_null(CF_ENOMEM);
    f->fn = fn;
    f->ex = ex;
    if (cf__future_set_arg(f, arg, len, opts->flags & CF_BORROW_ARG) !=
        CF_OK) {
        cf_future_release(f);
        return cf__fail_null(CF_ENOMEM);
    }
    cf_future_retain(f); /* the executor's reference */
    int rc = ex->vt->submit(ex, f, opts->flags, opts);
    if (rc != CF_OK) {
        cf_future_release(f);
        cf_future_release(f);
        return cf__fail_null(rc);
    }
    return f;
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

int cf_shutdown(cf_executor *ex, bool wait, bool cancel_futures)
{
    if (ex == NULL)
        return CF_EINVAL;
    atomic_store_explicit(&ex->shut_down, true, memory_order_release);
    return ex->vt->shutdown(ex, wait, cancel_futures);
}

void cf_executor_free(cf_executor *ex)
{
    if (ex == NULL)
        return;
    cf_shutdown(ex, true, false);
    ex->vt->destroy(ex);
}

int cf_executor_max_workers(const cf_executor *ex)
{
    return ex ? ex->max_workers : CF_EINVAL;
}

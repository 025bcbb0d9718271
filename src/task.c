/*
 * task.c -- the one task signature: what a running task sees (cf_call:
 * its argument, its result, its error, its cancel flag), and running a
 * queued future's task on the current thread.
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

static const _Atomic uint32_t no_cancel;

_Thread_local long cf__trace_tid;

void cf__call_init(cf_call *c, const void *arg, size_t len,
                   const _Atomic uint32_t *cancel_word)
{
    memset(c, 0, sizeof *c);
    c->arg = arg;
    c->arg_len = len;
    c->cancel_word = cancel_word ? cancel_word : &no_cancel;
}

const void *cf_arg(cf_call *c, size_t *len)
{
    if (c == NULL) {
        if (len != NULL)
            *len = 0;
        return NULL;
    }
    if (len != NULL)
        *len = c->arg_len;
    return c->arg;
}

int64_t cf_arg_i64(cf_call *c)
{
    int64_t v = 0;
    if (c != NULL && c->arg_len == sizeof v)
        memcpy(&v, c->arg, sizeof v);
    return v;
}

double cf_arg_f64(cf_call *c)
{
    double v = 0;
    if (c != NULL && c->arg_len == sizeof v)
        memcpy(&v, c->arg, sizeof v);
    return v;
}

const char *cf_arg_str(cf_call *c)
{
    if (c == NULL || c->arg_len == 0)
        return "";
    const char *s = c->arg;
    if (s[c->arg_len - 1] != '\0')
        return "";
    return s;
}

int cf_return(cf_call *c, const void *data, size_t len)
{
    if (c == NULL || (data == NULL && len > 0))
        return CF_EINVAL;
    return cf__outcome_set(&c->out, CF_KIND_BYTES, data, len);
}

int cf_return_i64(cf_call *c, int64_t v)
{
    if (c == NULL)
        return CF_EINVAL;
    return cf__outcome_set(&c->out, CF_KIND_I64, &v, sizeof v);
}

int cf_return_f64(cf_call *c, double v)
{
    if (c == NULL)
        return CF_EINVAL;
    return cf__outcome_set(&c->out, CF_KIND_F64, &v, sizeof v);
}

int cf_return_str(cf_call *c, const char *s)
{
    if (c == NULL || s == NULL)
        return CF_EINVAL;
    return cf__outcome_set(&c->out, CF_KIND_STR, s, strlen(s) + 1);
}

int cf_raise(cf_call *c, int code, const char *fmt, ...)
{
    if (c == NULL)
        return CF_EINVAL;
    va_list ap;
    va_start(ap, fmt);
    cf__outcome_fail(&c->out, CF_ETASK, code, fmt, ap);
    va_end(ap);
    return (fmt != NULL && c->out.msg == NULL) ? CF_ENOMEM : CF_OK;
}

bool cf_cancel_requested(cf_call *c)
{
    if (c == NULL)
        return false;
    if (atomic_load_explicit(c->cancel_word, memory_order_relaxed) &
        FS_CANCEL_REQ)
        return true;
    return c->cancel_id != NULL &&
           atomic_load_explicit(c->cancel_id, memory_order_relaxed) ==
               c->id + 1;
}

bool cf__run_future(cf_future *f, _Atomic int *finishing)
{
    if (cf_set_running_or_notify_cancel(f) != CF_OK) {
        cf__stats_cancelled(f->ex); /* cancelled while queued */
        return false;
    }
    cf__stats_started(f->ex);
    uint64_t queued = 0, start = 0;
    if (cf__tracing()) {
        queued = (uint64_t)f->out.v.i64;
        start = cf__now_ns();
    }
    cf_call c;
    cf__call_init(&c, cf__future_arg(f), f->arg_len, &f->state);
    f->fn(&c);
    if (start != 0)
        cf__trace_task(f->ex, cf__trace_tid, f->fn, queued, start, cf__now_ns(),
                       c.out.status);
    if (cf__future_claim(f) != CF_OK) { /* cannot happen: we run it */
        cf__outcome_clear(&c.out);
        return false;
    }
    if (c.out.status != CF_OK && c.out.len > 0) { /* a raise drops results */
        if (c.out.len > CF_INLINE_BYTES)
            free(c.out.v.ptr);
        c.out.len = 0;
        c.out.kind = CF_KIND_NONE;
    }
    f->out = c.out; /* moves ownership of the buffers */
    cf__stats_ended(f->ex, c.out.status);
    if (finishing != NULL)
        atomic_fetch_add_explicit(finishing, 1, memory_order_relaxed);
    cf__future_publish(f);
    return finishing != NULL;
}

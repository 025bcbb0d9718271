/*
 * remote.c -- in-flight tracking and frames shared by the process pool and
 * the MPI pool (remote.h).
 */
#include "remote.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

cf_inflight *cf__remote_at(cf_remote *r, size_t i)
{
    return &r->fl[(r->head + i) % r->cap];
}

/* Makes room for n more items in flight. */
static bool remote_reserve(cf_remote *r, size_t n)
{
    if (r->cap - r->count >= n)
        return true;
    size_t cap = r->cap ? r->cap : 16;
    while (cap - r->count < n)
        cap *= 2;
    cf_inflight *fl = malloc(cap * sizeof *fl);
    if (fl == NULL)
        return false;
    for (size_t i = 0; i < r->count; i++)
        fl[i] = *cf__remote_at(r, i);
    free(r->fl);
    r->fl = fl;
    r->head = 0;
    r->cap = cap;
    return true;
}

static bool remote_push(cf_remote *r, cf_future *f, bool last)
{
    if (r->count == r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 16;
        cf_inflight *n = malloc(cap * sizeof *n);
        if (n == NULL)
            return false;
        for (size_t i = 0; i < r->count; i++)
            n[i] = *cf__remote_at(r, i);
        free(r->fl);
        r->fl = n;
        r->head = 0;
        r->cap = cap;
    }
    uint64_t queued = cf__tracing() ? (uint64_t)f->out.v.i64 : 0;
    *cf__remote_at(r, r->count) = (cf_inflight){f, r->next_id++, last, queued};
    r->count++;
    return true;
}

void cf__remote_free(cf_remote *r)
{
    free(r->fl);
    memset(r, 0, sizeof *r);
}

cf_future *cf__take_batch(cf_executor *ex, cf_fqueue *q, size_t limit,
                          size_t *n)
{
    cf_future *batch = NULL, **tail = &batch;
    size_t k = 0, max = 1;
    cf_task_fn fn = NULL;
    while (q->head != NULL && k < max) {
        if (k > 0 && q->head->fn != fn)
            break;
        cf_future *f = cf__fq_pop(q);
        /* Requeued items (their worker died before starting them) are
         * already RUNNING. */
        int st = cf_set_running_or_notify_cancel(f);
        if (st == CF_ECANCELLED) {
            cf__stats_cancelled(ex);
            cf_future_release(f);
            continue;
        }
        if (st == CF_OK)
            cf__stats_started(ex);
        if (k == 0) {
            fn = f->fn;
            max = f->chunk > 1 ? f->chunk : 1;
            if (max > limit)
                max = limit;
        }
        *tail = f;
        tail = &f->next;
        k++;
    }
    *n = k;
    return batch;
}

int cf__fncache_get(cf_fncache *c, cf_task_fn fn, cf_fnref *ref)
{
    if (fn != c->fn) {
        cf_fnref r;
        if (cf__fnref_make(fn, &r) != CF_OK)
            return CF_EINVAL;
        c->fn = fn;
        c->ref = r;
    }
    *ref = c->ref;
    return CF_OK;
}

void cf__task_items(const cf_future *f, uint32_t start, const unsigned char **p,
                    size_t *len, bool *prefix)
{
    const unsigned char *a = cf__future_arg(f);
    size_t n = f->arg_len;
    *prefix = !(f->arg_flags & CF_ARG_CHUNK);
    if (*prefix) {
        *p = a;
        *len = n;
        return;
    }
    size_t off = 0; /* skip `start` items: the map wrote them, trusted */
    for (uint32_t i = 0; i < start && off + 8 <= n; i++) {
        uint64_t l = 0;
        for (int k = 0; k < 8; k++)
            l |= (uint64_t)a[off + (size_t)k] << (8 * k);
        off += 8 + (size_t)l;
    }
    *p = a + off;
    *len = n - off;
}

void cf__send_batch(cf_remote *r, cf_future *batch, size_t n, cf_wbuf *out,
                    cf_fncache *cache)
{
    cf_fnref ref;
    if (cf__fncache_get(cache, batch->fn, &ref) != CF_OK) {
        cf__fail_list(batch, CF_EINVAL,
                      "the task function is in no loaded module");
        return;
    }
    /* Room first: the frame and the in-flight slots, or nothing at all. */
    size_t bytes = CF_WIRE_HEADER + 2 + ref.module_len + 1 + ref.build_id_len +
                   16;
    for (cf_future *f = batch; f != NULL; f = f->next)
        bytes += 8 + f->arg_len;
    if (!remote_reserve(r, n) || !cf__wbuf_reserve(out, bytes)) {
        cf__fail_list(batch, CF_ENOMEM,
                      "no memory to send the task to a worker");
        return;
    }
    bool was_idle = r->count == 0;
    size_t off = cf__wire_begin(out, CF_FRAME_TASK, (uint32_t)n);
    cf__wire_task_head(out, &ref, r->next_id);
    size_t k = 0;
    for (cf_future *f = batch, *next; f != NULL; f = next, k++) {
        next = f->next;
        f->next = NULL;
        cf__wire_item(out, cf__future_arg(f), f->arg_len);
        remote_push(r, f, k + 1 == n); /* cannot fail: reserved */
    }
    cf__wire_end(out, off);
    r->frames++;
    r->sent += n;
    if (was_idle)
        r->busy_since = r->head_start = cf__now_ns();
}

void cf__remote_finish(cf_future *f, const cf_wire_result *r)
{
    if (cf__future_claim(f) != CF_OK)
        return;
    cf__stats_ended(f->ex, r->status);
    cf_outcome *o = &f->out;
    if (r->status == CF_OK) {
        o->code = 0; /* it held the priority (internal.h) */
        if (cf__outcome_set(o, r->kind, r->data, r->len) != CF_OK)
            cf__outcome_failf(o, CF_ENOMEM, 0,
                              "no memory for a %zu-byte result", r->len);
    } else {
        cf__outcome_failf(o, r->status, r->code, "%.*s", (int)r->msg_len,
                          r->msg);
    }
    cf__future_publish(f);
}

/* ------------------------------------------------------------------------ */
/* A chunk's results across workers                                          */
/* ------------------------------------------------------------------------ */

cf_chunk_run *cf__chunk_run_new(const cf_future *f)
{
    cf_chunk_run *rs = calloc(1, sizeof *rs);
    if (rs == NULL)
        return NULL;
    rs->retries = f->retries;
    /* Room for as many small results (an i64 each) as the chunk has
     * items: one allocation instead of a realloc at each doubling. */
    if (!cf__wbuf_reserve(&rs->acc, (size_t)cf__task_count(f) *
                                        (size_t)cf__wire_result_size(8, 0)))
        rs->acc.oom = false; /* then it grows as results come */
    return rs;
}

void cf__chunk_run_add(cf_chunk_run *rs, const void *item, size_t len)
{
    cf__wbuf_put(&rs->acc, item, len);
    rs->next++;
}

void cf__chunk_run_fail(cf_chunk_run *rs, int status, int code, const char *msg)
{
    cf__wire_result(&rs->acc, rs->next, status, code, CF_KIND_NONE, NULL, 0,
                    msg, strlen(msg));
    rs->next++;
}

void cf__chunk_run_free(cf_chunk_run *rs)
{
    if (rs == NULL)
        return;
    cf__wbuf_free(&rs->acc);
    free(rs);
}

void cf__chunk_run_finish(cf_future *f, cf_chunk_run *rs)
{
    if (cf__future_claim(f) != CF_OK) {
        cf__chunk_run_free(rs);
        return;
    }
    if (rs->acc.oom) {
        cf__outcome_failf(&f->out, CF_ENOMEM, 0,
                          "no memory for the results of a chunk");
    } else {
        cf__outcome_adopt(&f->out, rs->acc.p, rs->acc.len);
        rs->acc.p = NULL;
    }
    cf__chunk_run_free(rs);
    cf__future_publish(f);
}

bool cf__remote_result(cf_executor *ex, cf_remote *r, long tid,
                       const cf_wire_result *res)
{
    if (r->count == 0 || res->id != cf__remote_at(r, 0)->id)
        return false;
    cf_inflight it = *cf__remote_at(r, 0);
    r->head = (r->head + 1) % r->cap;
    r->count--;
    if (it.last)
        r->frames--;
    uint64_t now = cf__now_ns();
    if (it.queued != 0)
        cf__trace_task(ex, tid, it.f->fn, it.queued, r->head_start, now,
                       res->status);
    r->head_start = now; /* the next item starts now */
    if (r->count == 0)
        cf__stats_busy(ex, now - r->busy_since);
    cf__remote_finish(it.f, res);
    cf_future_release(it.f);
    return true;
}

void cf__fail_list(cf_future *f, int status, const char *msg)
{
    while (f != NULL) {
        cf_future *next = f->next;
        f->next = NULL;
        if (cf_set_running_or_notify_cancel(f) == CF_OK)
            cf__stats_started(f->ex);
        cf__stats_ended(f->ex, status);
        cf__future_fail(f, status, 0, "%s", msg);
        cf_future_release(f);
        f = next;
    }
}

/* ------------------------------------------------------------------------ */
/* The manager thread's life cycle                                           */
/* ------------------------------------------------------------------------ */

static _Thread_local const cf_manager *current_manager;

int cf__manager_start(cf_manager *m, pthread_mutex_t *lock, void *(*fn)(void *),
                      void *arg)
{
    m->lock = lock;
    m->done = m->orphaned = false;
    if (cf__cond_init(&m->done_cv) != 0)
        return CF_ENOMEM;
    if (pthread_create(&m->thread, NULL, fn, arg) != 0)
        return CF_ENOMEM; /* cf__manager_fini destroys the cv */
    return CF_OK;
}

void cf__manager_enter(cf_manager *m)
{
    current_manager = m;
}

bool cf__manager_is_self(const cf_manager *m)
{
    return current_manager == m;
}

bool cf__manager_exit(cf_manager *m)
{
    current_manager = NULL;
    pthread_mutex_lock(m->lock);
    m->done = true;
    pthread_cond_broadcast(&m->done_cv);
    bool orphan = m->orphaned;
    pthread_mutex_unlock(m->lock);
    if (orphan)
        pthread_detach(pthread_self());
    return orphan;
}

int cf__manager_wait(cf_manager *m, const cf_deadline *d)
{
    if (cf__manager_is_self(m))
        return CF_OK; /* a callback on the manager thread cannot wait */
    int rc = CF_OK;
    pthread_mutex_lock(m->lock);
    while (!m->done)
        if (cf__cond_wait(&m->done_cv, m->lock, d) == ETIMEDOUT && !m->done) {
            rc = CF_ETIMEDOUT;
            break;
        }
    pthread_mutex_unlock(m->lock);
    return rc;
}

bool cf__manager_release(cf_manager *m)
{
    /* Freed from a callback on the manager, or after a shutdown that did
     * not wait (the manager still runs the queued work): the manager frees
     * the pool as it exits (cf__manager_exit). */
    pthread_mutex_lock(m->lock);
    bool running = !m->done || cf__manager_is_self(m);
    if (running)
        m->orphaned = true;
    pthread_mutex_unlock(m->lock);
    if (running)
        return false;
    pthread_join(m->thread, NULL);
    return true;
}

void cf__manager_fini(cf_manager *m)
{
    pthread_cond_destroy(&m->done_cv);
}

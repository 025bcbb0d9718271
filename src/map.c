/*
 * map.c -- cf_map: Executor.map with results in input order.
 *
 * A window of at most `buffersize` futures runs ahead of the consumer
 * (Python 3.14's buffersize): creating the map submits the first window,
 * and once half of it has been taken the map tops it up again, so a huge
 * or endless input never sits in memory at once.  (Topping up after every
 * result, one submit per result, kept the consumer and the pool's threads
 * taking turns: 850 ns/item against 430 in half-window batches, trivial
 * tasks on 2 threads.)  An error at position i surfaces when
 * result i is taken; in fail-fast mode (Python's) it ends the map and
 * cancels the rest, as does the map's overall timeout.
 *
 * On an executor that takes chunks (process and MPI pools: chunk.h), a
 * chunksize above 1 makes one future per chunk of inputs, whose result
 * holds the items' results: the window then counts chunks, and
 * cf_map_next reads items out of the head chunk, with no future per item
 * (one is made for the caller only when cf_map_next is asked for it).
 */
#include "chunk.h"
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The smallest default window of a map with a task per item.  With 4 per
 * worker, a map of trivial tasks on 2 threads ran at 980 ns/item against
 * 410 ns/task for submit-all-then-collect: the consumer and the threads
 * took turns on a window of 8.  256 futures are 30 KiB. */
#define MIN_WINDOW ((size_t)256)

/* The largest window over a generator (the ring is allocated up front). */
#define MAX_GEN_WINDOW ((size_t)1 << 16)

struct cf_map {
    cf_executor *ex; /* a reference: the map may outlive the user's */
    cf_task_fn fn;
    /* input: an array, or a generator */
    const unsigned char *items;
    size_t item_size, n;
    cf_input_fn gen;
    void *gen_ctx;
    bool input_done;
    size_t taken_in; /* inputs read so far */
    /* the window: ring of submitted futures, oldest first */
    cf_future **ring;
    size_t cap, head, count;
    cf_future *current; /* last result handed out (borrowed by the user) */
    cf_deadline deadline;
    bool continue_on_error;
    bool finished;
    unsigned chunk;   /* items per frame, for executors that batch */
    size_t taken_out; /* results handed out */
    cf_progress progress;
    /* chunked: the ring holds one future per chunk (its f->chunk items) */
    bool chunked;
    uint32_t item_idx;    /* items taken from the head chunk */
    size_t item_pos;      /* where the next one is in its result */
    int head_st;          /* the head chunk's status, once it is done */
    const void *head_buf; /* ... and its result (CF_OK) */
    size_t head_len;
    cf_chunk_in cin; /* the inputs of the next chunk */
    int gen_error;   /* the generator failed: this error comes next */
};

/* Reads the next input: 1 an item, 0 the end, or a negative value the
 * generator returned to report that the input failed (the end, too). */
static int next_input(cf_map *m, const void **data, size_t *len)
{
    if (m->input_done)
        return 0;
    if (m->gen == NULL) {
        if (m->taken_in == m->n) {
            m->input_done = true;
            return 0;
        }
        *data = m->items + m->taken_in * m->item_size;
        *len = m->item_size;
    } else {
        int rc = m->gen(m->gen_ctx, data, len);
        if (rc != 1) {
            m->input_done = true;
            return rc < 0 ? rc : 0;
        }
    }
    m->taken_in++;
    return 1;
}

/* A future that already ended with an error, so the error surfaces at its
 * position in the results.  The map reports it where it stands; dropped
 * unread when the map stops early, it is not an error nobody saw. */
static cf_future *failed_future(int status, int code, const char *msg)
{
    cf_future *f = cf__future_alloc();
    if (f != NULL) {
        cf__future_fail(f, status, code, "%s", msg);
        atomic_fetch_or(&f->state, FS_OBSERVED);
    }
    return f;
}

/* Pushes a future onto the window (which has room). */
static void push(cf_map *m, cf_future *f)
{
    m->ring[(m->head + m->count) % m->cap] = f;
    m->count++;
}

/* Tops a chunked window up: each future is one chunk of inputs. */
static void fill_chunks(cf_map *m)
{
    char msg[96];
    while (m->count < m->cap) {
        if (m->gen_error != 0) { /* the input raised: that error, as one */
            snprintf(msg, sizeof msg,
                     "the map's input failed (its generator returned %d)",
                     m->gen_error);
            cf_future *f = failed_future(CF_ETASK, m->gen_error, msg);
            m->gen_error = 0;
            if (f == NULL)
                return;
            f->chunk = 1;
            push(m, f);
            continue;
        }
        const void *data;
        size_t len;
        int rc = CF_OK, in = 1;
        m->cin.len = 0;
        m->cin.n = 0;
        uint32_t n = 0;
        if (m->gen == NULL && !m->input_done) { /* an array: all at once */
            size_t k = m->n - m->taken_in;
            n = k < m->chunk ? (uint32_t)k : m->chunk;
            rc = cf__chunk_add_array(&m->cin,
                                     m->items + m->taken_in * m->item_size,
                                     m->item_size, n);
            m->taken_in += n;
            m->input_done = m->taken_in == m->n;
        }
        while (n < m->chunk && (in = next_input(m, &data, &len)) == 1) {
            n++;
            if (rc == CF_OK)
                rc = cf__chunk_add(&m->cin, data, len);
        }
        if (in < 0)
            m->gen_error = in; /* after the items read before it */
        if (n == 0) {
            if (m->gen_error != 0)
                continue;
            return;
        }
        cf_future *f = rc == CF_OK ? cf__submit_chunk(m->ex, m->fn, &m->cin)
                                   : NULL;
        if (f == NULL) {
            int st = rc == CF_OK ? cf_last_error() : rc;
            snprintf(msg, sizeof msg, "submit failed: %s", cf_strerror(st));
            f = failed_future(st, 0, msg);
            if (f == NULL) { /* not even room for the error: stop */
                m->input_done = true;
                m->gen_error = 0;
                return;
            }
            f->chunk = (uint16_t)n; /* the items it stands for */
        }
        push(m, f);
    }
}

/* Tops the window up to its capacity. */
static void fill(cf_map *m)
{
    if (m->chunked) {
        fill_chunks(m);
        return;
    }
    while (m->count < m->cap) {
        const void *data;
        size_t len;
        char msg[96];
        cf_future *f;
        int in = next_input(m, &data, &len);
        if (in == 0)
            return;
        if (in < 0) { /* the input raised: that error, then the end */
            snprintf(msg, sizeof msg,
                     "the map's input failed (its generator returned %d)", in);
            f = failed_future(CF_ETASK, in, msg);
        } else {
            f = cf__submit(m->ex, m->fn, data, len, NULL, m->chunk);
            if (f == NULL) {
                int st = cf_last_error();
                snprintf(msg, sizeof msg, "submit failed: %s", cf_strerror(st));
                f = failed_future(st, 0, msg);
            }
        }
        if (f == NULL) { /* not even room for the error: stop the input */
            m->input_done = true;
            return;
        }
        m->ring[(m->head + m->count) % m->cap] = f;
        m->count++;
    }
}

static void cancel_rest(cf_map *m)
{
    /* Newest first, so a worker does not start one we are about to
     * cancel (as Python's map does). */
    while (m->count > 0) {
        m->count--;
        cf_future *f = m->ring[(m->head + m->count) % m->cap];
        cf_cancel(f);
        cf_future_release(f);
    }
    m->input_done = true;
    m->finished = true;
}

static cf_map *map_new(cf_executor *ex, cf_task_fn fn, const cf_map_opts *opts,
                       cf_map *m)
{
    static const cf_map_opts defaults;
    if (opts == NULL)
        opts = &defaults;
    if (opts->timeout < 0 || opts->timeout != opts->timeout) {
        free(m);
        return cf__fail_null(CF_EINVAL);
    }
    if (atomic_load(&ex->shut_down)) { /* as Python's map: at once */
        free(m);
        return cf__fail_null(CF_ESHUTDOWN);
    }
    m->ex = cf__executor_retain(ex);
    m->fn = fn;
    m->continue_on_error = opts->continue_on_error;
    cf__deadline(opts->timeout > 0 ? opts->timeout : CF_FOREVER, &m->deadline);
    size_t chunk = opts->chunksize ? opts->chunksize : 1;
    m->chunk = chunk > 65535 ? 65535 : (unsigned)chunk;
    size_t cap = opts->buffersize;
    if (cap == 0) /* 4 per worker; a task per item: at least MIN_WINDOW */
        cap = 4 * (size_t)ex->max_workers * chunk;
    if (opts->buffersize == 0 && !(ex->vt->chunks && chunk > 1) &&
        cap < MIN_WINDOW)
        cap = MIN_WINDOW;
    if (m->gen == NULL && cap > m->n)
        cap = m->n;
    if (cap == 0)
        cap = 1;
    if (m->gen != NULL && cap > MAX_GEN_WINDOW)
        cap = MAX_GEN_WINDOW; /* "everything" of a possibly endless input */
    m->chunked = ex->vt->chunks && m->chunk > 1;
    if (m->chunked) /* the window counts chunks */
        cap = cap / m->chunk + (cap % m->chunk != 0);
    m->cap = cap;
    cf__progress_init(&m->progress, opts->progress, m->gen ? 0 : m->n);
    m->ring = malloc(cap * sizeof *m->ring);
    if (m->ring == NULL) {
        cf__executor_release(m->ex);
        free(m);
        return cf__fail_null(CF_ENOMEM);
    }
    fill(m);
    return m;
}

cf_map *cf_map_array(cf_executor *ex, cf_task_fn fn, const void *items,
                     size_t item_size, size_t n, const cf_map_opts *opts)
{
    if (ex == NULL || fn == NULL || (items == NULL && n > 0 && item_size > 0))
        return cf__fail_null(CF_EINVAL);
    cf_map *m = calloc(1, sizeof *m);
    if (m == NULL)
        return cf__fail_null(CF_ENOMEM);
    m->items = items;
    m->item_size = item_size;
    m->n = n;
    return map_new(ex, fn, opts, m);
}

cf_map *cf_map_i64(cf_executor *ex, cf_task_fn fn, const int64_t *items,
                   size_t n, const cf_map_opts *opts)
{
    return cf_map_array(ex, fn, items, sizeof *items, n, opts);
}

cf_map *cf_map_gen(cf_executor *ex, cf_task_fn fn, cf_input_fn next, void *ctx,
                   const cf_map_opts *opts)
{
    if (ex == NULL || fn == NULL || next == NULL)
        return cf__fail_null(CF_EINVAL);
    cf_map *m = calloc(1, sizeof *m);
    if (m == NULL)
        return cf__fail_null(CF_ENOMEM);
    m->gen = next;
    m->gen_ctx = ctx;
    return map_new(ex, fn, opts, m);
}

/* A finished future holding one item's outcome, for the caller of a
 * chunked map (read: the map reports its status). */
static cf_future *item_future(const cf_chunk_item *it)
{
    cf_future *f = cf__future_alloc();
    if (f == NULL)
        return NULL;
    cf__future_claim(f);
    if (it->status == CF_OK) {
        if (cf__outcome_set(&f->out, it->kind, it->data, it->len) != CF_OK)
            cf__outcome_failf(&f->out, CF_ENOMEM, 0,
                              "no memory for a %zu-byte result", it->len);
    } else {
        cf__outcome_failf(&f->out, it->status, it->code, "%.*s",
                          (int)it->msg_len, it->msg);
    }
    cf__future_publish(f);
    atomic_fetch_or(&f->state, FS_OBSERVED);
    return f;
}

/* cf_map_next of a chunked map; v8 (if not NULL) takes an 8-byte result. */
static int next_chunked(cf_map *m, cf_future **out, void *v8)
{
    if (m->count > 0 && m->item_idx == m->ring[m->head]->chunk) {
        cf_future_release(m->ring[m->head]); /* its items are all taken */
        m->head = (m->head + 1) % m->cap;
        m->count--;
        m->item_idx = 0;
        m->item_pos = 0;
    }
    fill(m);
    if (m->count == 0) {
        m->finished = true;
        cf__progress_update(&m->progress, m->taken_out, true);
        return CF_END;
    }
    cf_future *f = m->ring[m->head];
    if (m->item_idx == 0) { /* a new head chunk: wait for all of it */
        if (cf__future_wait(f, &m->deadline) != CF_OK) {
            cancel_rest(m); /* the map's time is up, in either mode */
            return CF_ETIMEDOUT;
        }
        m->head_st = cf_result(f, 0, &m->head_buf, &m->head_len);
    }
    cf_chunk_item it;
    if (m->head_st == CF_OK) {
        if (cf__chunk_read(m->head_buf, m->head_len, &m->item_pos, &it) !=
            CF_OK)
            it = (cf_chunk_item){.status = CF_EBROKEN,
                                 .msg = "malformed results of a chunk",
                                 .msg_len = 28};
    } else { /* the chunk failed as a whole: so does each of its items */
        cf_error e;
        cf_exception(f, 0, &e);
        it = (cf_chunk_item){.status = m->head_st,
                             .code = e.code,
                             .msg = e.message,
                             .msg_len = strlen(e.message)};
    }
    m->item_idx++;
    cf__progress_update(&m->progress, ++m->taken_out, false);
    int rc = it.status;
    if (out != NULL) {
        m->current = item_future(&it);
        *out = m->current;
        if (m->current == NULL)
            rc = CF_ENOMEM;
    }
    if (rc == CF_OK && v8 != NULL) {
        if (it.len != 8)
            rc = CF_EINVAL;
        else
            memcpy(v8, it.data, 8);
    }
    if (it.status != CF_OK && !m->continue_on_error)
        cancel_rest(m);
    return rc;
}

int cf_map_next(cf_map *m, cf_future **out)
{
    if (m == NULL)
        return CF_EINVAL;
    cf_future_release(m->current);
    m->current = NULL;
    if (out != NULL)
        *out = NULL;
    if (m->finished)
        return CF_END;
    if (m->chunked)
        return next_chunked(m, out, NULL);
    if (m->count == 0)
        fill(m);
    if (m->count == 0) {
        m->finished = true;
        cf__progress_update(&m->progress, m->taken_out, true);
        return CF_END;
    }
    cf_future *f = m->ring[m->head];
    if (cf__future_wait(f, &m->deadline) != CF_OK) {
        cancel_rest(m); /* the map's time is up, in either mode */
        return CF_ETIMEDOUT;
    }
    m->head = (m->head + 1) % m->cap;
    m->count--;
    cf__progress_update(&m->progress, ++m->taken_out, false);
    m->current = f;
    if (out != NULL)
        *out = f;
    int rc = cf_result(f, 0, NULL, NULL);
    if (rc != CF_OK && !m->continue_on_error)
        cancel_rest(m);
    else if (m->count <= m->cap / 2)
        fill(m); /* in batches of half a window (see top) */
    return rc;
}

/* cf_map_next for 8-byte results (no future made on a chunked map). */
static int next_8(cf_map *m, void *v)
{
    if (m != NULL && v != NULL && m->chunked && !m->finished) {
        cf_future_release(m->current);
        m->current = NULL;
        return next_chunked(m, NULL, v);
    }
    cf_future *f;
    int rc = cf_map_next(m, &f);
    return rc == CF_OK ? cf_result_i64(f, 0, v) : rc;
}

int cf_map_next_i64(cf_map *m, int64_t *out)
{
    return next_8(m, out);
}

int cf_map_next_f64(cf_map *m, double *out)
{
    return next_8(m, out);
}

void cf_map_free(cf_map *m)
{
    if (m == NULL)
        return;
    cancel_rest(m);
    cf_future_release(m->current);
    cf__chunk_in_free(&m->cin);
    cf__executor_release(m->ex);
    free(m->ring);
    free(m);
}

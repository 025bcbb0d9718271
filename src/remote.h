/*
 * remote.h -- what the executors whose workers live elsewhere (process
 * pool, MPI pool) share: the items in flight on
 * each worker (MPI), turning queued futures into TASK frames, completing
 * futures from RESULT items, a chunk's results across workers, and the
 * manager thread's life cycle.  The transport (a socket, MPI messages) and
 * worker life cycle stay in each executor.
 */
#ifndef CF_REMOTE_H
#define CF_REMOTE_H

#include "fnref.h"
#include "fqueue.h"

/* One item sent to a worker and not answered yet. */
typedef struct cf_inflight {
    cf_future *f;
    uint64_t id;
    bool last;       /* last item of its frame */
    uint64_t queued; /* submit time, for the trace (0: not tracing) */
} cf_inflight;

/* A worker's items in flight, oldest first: the worker runs them in
 * order, so the oldest is the one it runs now. */
typedef struct cf_remote {
    cf_inflight *fl;
    size_t head, count, cap;
    int frames; /* frames in flight */
    uint64_t next_id;
    uint64_t sent;       /* items sent over the worker's life */
    uint64_t busy_since; /* ns; when count went above 0 */
    uint64_t head_start; /* ns; when the oldest item started */
} cf_remote;

CF_HIDDEN cf_inflight *cf__remote_at(cf_remote *r, size_t i);
CF_HIDDEN void cf__remote_free(cf_remote *r);

/* Caches the reference of the last function sent. */
typedef struct cf_fncache {
    cf_task_fn fn;
    cf_fnref ref;
} cf_fncache;

/* The reference of fn (through the cache): CF_OK, or CF_EINVAL when fn is
 * in no loaded module. */
CF_HIDDEN int cf__fncache_get(cf_fncache *c, cf_task_fn fn, cf_fnref *ref);

/* The items of a task from item `start` on, as a TASK body carries them
 * (count x (u64 len | arg)): a plain task's one argument needs its length
 * prefix written before it (*prefix true), a chunk's are stored so. */
CF_HIDDEN void cf__task_items(const cf_future *f, uint32_t start,
                              const unsigned char **p, size_t *len,
                              bool *prefix);
/* Items in a task: a chunk's count, or 1. */
static inline uint32_t cf__task_count(const cf_future *f)
{
    return (f->arg_flags & CF_ARG_CHUNK) ? f->chunk : 1;
}

/* Completes f (RUNNING) from one RESULT item. */
CF_HIDDEN void cf__remote_finish(cf_future *f, const cf_wire_result *res);

/* A chunk's results so far, while it runs (on one worker after another,
 * when a worker dies under it). */
typedef struct cf_chunk_run {
    cf_wbuf acc;     /* RESULT items of items 0 .. next-1 */
    uint32_t next;   /* items done */
    uint8_t retries; /* crash retries left for item `next` */
} cf_chunk_run;

CF_HIDDEN cf_chunk_run *cf__chunk_run_new(const cf_future *f);
/* Adds the next item's RESULT item (raw bytes, already checked). */
CF_HIDDEN void cf__chunk_run_add(cf_chunk_run *rs, const void *item,
                                 size_t len);
/* Adds a failure as the next item's result. */
CF_HIDDEN void cf__chunk_run_fail(cf_chunk_run *rs, int status, int code,
                                  const char *msg);
/* Completes chunk f (RUNNING) with its results and frees rs; if a result
 * could not be kept (no memory), f fails with CF_ENOMEM. */
CF_HIDDEN void cf__chunk_run_finish(cf_future *f, cf_chunk_run *rs);
CF_HIDDEN void cf__chunk_run_free(cf_chunk_run *rs);

/*
 * Takes the next frame's worth of queued futures (lock held): the first
 * future and the ones behind it with the same function, up to its chunk
 * hint and `limit`.  Marks them running; drops cancelled ones.  Returns
 * the list (linked through next) and its length in *n, or NULL.
 */
CF_HIDDEN cf_future *cf__take_batch(cf_executor *ex, cf_fqueue *q, size_t limit,
                                    size_t *n);

/* Appends a TASK frame of the batch to out and puts its items in flight on
 * r.  If the function cannot be referenced, fails the batch instead. */
CF_HIDDEN void cf__send_batch(cf_remote *r, cf_future *batch, size_t n,
                              cf_wbuf *out, cf_fncache *cache);

/* Completes the oldest item in flight on r with res (which must answer
 * it: false otherwise, a protocol error).  tid names the worker in the
 * trace. */
CF_HIDDEN bool cf__remote_result(cf_executor *ex, cf_remote *r, long tid,
                                 const cf_wire_result *res);

/* ---- the manager thread's life cycle ---- */

/* The thread that runs a remote pool (process_pool.c, mpi_pool.c).  The
 * pool's lock guards done and orphaned. */
typedef struct cf_manager {
    pthread_t thread;
    pthread_mutex_t *lock;
    pthread_cond_t done_cv;
    bool done;     /* the manager has finished */
    bool orphaned; /* the pool was freed while the manager ran: it frees
                      the pool as it exits */
} cf_manager;

/* Starts fn(arg) as the manager: CF_OK or CF_ENOMEM. */
CF_HIDDEN int cf__manager_start(cf_manager *m, pthread_mutex_t *lock,
                                void *(*fn)(void *), void *arg);
/* On the manager thread, first thing. */
CF_HIDDEN void cf__manager_enter(cf_manager *m);
/* True on the manager thread of m (a callback runs there). */
CF_HIDDEN bool cf__manager_is_self(const cf_manager *m);
/* On the manager thread, last thing: marks it done and wakes waiters.
 * True if the pool was freed meanwhile: the caller frees it now. */
CF_HIDDEN bool cf__manager_exit(cf_manager *m);
/* Waits until the manager is done (CF_OK, CF_ETIMEDOUT); returns at once
 * on the manager thread itself, which cannot wait for itself. */
CF_HIDDEN int cf__manager_wait(cf_manager *m, const cf_deadline *d);
/* The pool is being freed: true if the caller frees it now (the manager
 * was joined), false if the manager will, as it exits. */
CF_HIDDEN bool cf__manager_release(cf_manager *m);
CF_HIDDEN void cf__manager_fini(cf_manager *m);

/* ---- the worker side ---- */

/* A worker's link to its parent: a socket (process pool), MPI messages. */
typedef struct cf_link {
    /* Next frame from the parent (*body malloc'd); false at the end. */
    bool (*recv)(struct cf_link *l, cf_wire_header *h, unsigned char **body);
    void (*send)(struct cf_link *l, const void *p, size_t n);
    /* Optional: runs fn for the call some other way (MPI crash isolation
     * runs it in a local process pool); NULL: fn(c) right here. */
    void (*run)(struct cf_link *l, cf_task_fn fn, cf_call *c);
    void *ctx;
} cf_link;

/* Serves a parent: INIT (runs the initializer, answers HELLO), then TASK
 * frames, one RESULT per item, until recv says the end. */
CF_HIDDEN void cf__serve(cf_link *link);

/* Fails a list of futures that never ran (broken pool, lost worker). */
CF_HIDDEN void cf__fail_list(cf_future *f, int status, const char *msg);

#endif

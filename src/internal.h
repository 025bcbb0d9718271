/*
 * internal.h -- what the layers of cfutures share, and nothing public.
 *
 * Layers (see DESIGN.md): future.c (state machine) <- executor.c (front,
 * vtable) <- thread_pool.c / process_pool.c; wait.c and map.c on top.
 * Every symbol here is hidden: only cf_* functions of cfutures.h are
 * exported from the shared library.
 */
#ifndef CF_INTERNAL_H
#define CF_INTERNAL_H

#include "cfutures.h"

#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

#include "fault.h" /* fault injection: nothing unless CF_FAULT_INJECTION */

#define CF_HIDDEN __attribute__((visibility("hidden")))
#define CF_NOINLINE __attribute__((noinline))
#define CF_LIKELY(x) __builtin_expect(!!(x), 1)
#define CF_UNLIKELY(x) __builtin_expect(!!(x), 0)

/* A polite pause inside a spin loop. */
static inline void cf__cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ volatile("yield");
#endif
}

/* ------------------------------------------------------------------------ */
/* status.c                                                                  */
/* ------------------------------------------------------------------------ */

/** Records status as this thread's cf_last_error() and returns NULL. */
CF_HIDDEN void *cf__fail_null(int status);
/** The same, with a message (static storage) for cf_last_error_message. */
CF_HIDDEN void *cf__fail_null_msg(int status, const char *msg);

/* ------------------------------------------------------------------------ */
/* time.c: deadlines on CLOCK_MONOTONIC                                      */
/* ------------------------------------------------------------------------ */

typedef struct cf_deadline {
    bool forever;
    struct timespec at; /* CLOCK_MONOTONIC, valid unless forever */
} cf_deadline;

/** CF_OK, or CF_EINVAL for a negative or NaN timeout. */
CF_HIDDEN int cf__deadline(double timeout, cf_deadline *d);
CF_HIDDEN bool cf__deadline_passed(const cf_deadline *d);
CF_HIDDEN uint64_t cf__now_ns(void);

/** pthread_cond_timedwait on CLOCK_MONOTONIC (the cond must be made by
 *  cf__cond_init).  Returns 0 or ETIMEDOUT. */
CF_HIDDEN int cf__cond_wait(pthread_cond_t *c, pthread_mutex_t *m,
                            const cf_deadline *d);
CF_HIDDEN int cf__cond_init(pthread_cond_t *c);

/** futex(2) on a 32-bit word: sleep while *addr == val (until the
 *  deadline), and wake every sleeper. */
CF_HIDDEN int cf__futex_wait(_Atomic uint32_t *addr, uint32_t val,
                             const cf_deadline *d);
CF_HIDDEN void cf__futex_wake_all(_Atomic uint32_t *addr);

/* ------------------------------------------------------------------------ */
/* Outcome of a task: what a cf_call collects and a future keeps             */
/* ------------------------------------------------------------------------ */

#define CF_INLINE_BYTES 16

/* How the result was produced; for describe and typed reads. */
enum cf_kind {
    CF_KIND_NONE = 0,
    CF_KIND_BYTES,
    CF_KIND_I64,
    CF_KIND_F64,
    CF_KIND_STR,
};

typedef struct cf_outcome {
    uint8_t kind;   /* enum cf_kind */
    int32_t status; /* CF_OK or the error the task ended with */
    int32_t code;   /* task's own code / signal / exit status */
    size_t len;     /* result length; > CF_INLINE_BYTES lives in v.ptr */
    union {
        unsigned char bytes[CF_INLINE_BYTES];
        int64_t i64;
        double f64;
        void *ptr;
    } v;
    char *msg; /* malloc'd error message or NULL */
} cf_outcome;

CF_HIDDEN const void *cf__outcome_data(const cf_outcome *o);
/** Replaces the result with a copy of data (CF_OK or CF_ENOMEM). */
CF_HIDDEN int cf__outcome_set(cf_outcome *o, uint8_t kind, const void *data,
                              size_t len);
/** Takes ownership of a malloc'd buffer as the result. */
CF_HIDDEN void cf__outcome_adopt(cf_outcome *o, void *buf, size_t len);
/** Records an error; the message is formatted (fmt may be NULL). */
CF_HIDDEN void cf__outcome_fail(cf_outcome *o, int status, int code,
                                const char *fmt, va_list ap);
CF_HIDDEN void cf__outcome_failf(cf_outcome *o, int status, int code,
                                 const char *fmt, ...) CF_PRINTF(4, 5);
CF_HIDDEN void cf__outcome_clear(cf_outcome *o);

/* ------------------------------------------------------------------------ */
/* future.c                                                                  */
/* ------------------------------------------------------------------------ */

/*
 * The state word (cf_future.state), one 32-bit atomic, also the futex that
 * cf_result sleeps on:
 *
 *   bits 0-1  FS_STATE      PENDING, RUNNING, FINISHED or CANCELLED
 *   bit  2    FS_COMPLETING one completer has claimed the future and is
 *                           writing its outcome; it becomes FINISHED next
 *   bit  3    FS_LISTENERS  the listener list may be non-empty (set under
 *                           the future's stripe lock)
 *   bit  4    FS_SLEEPERS   a thread sleeps on the word: wake it on change
 *   bit  5    FS_CANCEL_REQ cf_request_cancel was called (cooperative)
 *   bit  6    FS_OBSERVED   someone read the result or error
 *   bit  7    FS_KILL_REQ   cf_kill_task was called (process pool)
 *
 * A future that failed keeps no result bytes, so its outcome's v.ptr holds
 * the hook (cf_hook, a reference) to tell if it is released unobserved.
 *
 * The outcome is written before the release-CAS that sets FINISHED and
 * read after an acquire load that sees FINISHED, so it needs no lock.
 */
enum {
    FS_STATE = 3u,
    FS_COMPLETING = 1u << 2,
    FS_LISTENERS = 1u << 3,
    FS_SLEEPERS = 1u << 4,
    FS_CANCEL_REQ = 1u << 5,
    FS_OBSERVED = 1u << 6,
    FS_KILL_REQ = 1u << 7,
};

/*
 * Something to tell when a future is done: a user callback (notify ==
 * NULL) or an internal waiter (wait / as_completed / continuations), whose
 * notify runs under the future's stripe lock and must only signal.
 */
typedef struct cf_listener cf_listener;
struct cf_listener {
    cf_listener *next, *prev; /* circular list; next == NULL: not linked */
    void (*notify)(cf_listener *self, cf_future *f);
    cf_done_fn fn;
    void *arg;
    /* A callback whose future is freed before it completes (a standalone
     * future released while pending) is dropped: drop(arg) is called so
     * that its owner can settle what depended on it.  May be NULL. */
    void (*drop)(void *arg);
};

/** cf_add_done_callback with a drop hook (see cf_listener). */
CF_HIDDEN int cf__add_callback(cf_future *f, cf_done_fn fn, void *arg,
                               void (*drop)(void *arg));

/* Task fields, owned by the executor the future was submitted to.
 * CF_ARG_CHUNK: the future is a map's chunk (chunk.h).  CF_ARG_SLOT: the
 * process pool holds the future in a worker's task slot, not yet claimed
 * (its `next` then points to the pool's record of that slot; pool lock). */
enum {
    CF_ARG_OWNED = 1u << 0,
    CF_ARG_CHUNK = 1u << 1,
    CF_ARG_SLOT = 1u << 2,
    CF_ARG_CANCELLING = 1u << 3, /* process pool: a cancel is under way */
};

struct cf_future {
    _Atomic uint32_t state;
    _Atomic uint32_t refs;
    cf_listener *listeners; /* guarded by the stripe lock of the future */
    cf_outcome out;
    /* -- executor side: a bare future (cf_future_new) has only ex (NULL)
     * and the four small fields, CF_FUTURE_BARE_SIZE bytes (fcache.c) -- */
    struct cf_executor *ex; /* not a reference; for helping waits */
    uint8_t arg_flags;
    uint8_t retries;  /* process pool: crash retries left */
    uint16_t chunk;   /* map's chunksize hint: batch this many per frame */
    float time_limit; /* seconds, 0 = none (process pool) */
    /* -- the task's own fields: futures of submitted tasks only -- */
    cf_future *next; /* queue link (the executor's) */
    cf_task_fn fn;
    size_t arg_len;
    union {
        unsigned char bytes[CF_INLINE_BYTES];
        const void *ptr;
    } arg;
};

#define CF_FUTURE_BARE_SIZE offsetof(struct cf_future, next)

/* fcache.c: futures' memory, a per-thread cache of fixed-size blocks.
 * cf__fcache_alloc returns size zeroed bytes (size is CF_FUTURE_BARE_SIZE
 * or sizeof(cf_future)), or NULL when out of memory; cf__fcache_free takes
 * any block it returned, from any thread. */
CF_HIDDEN void *cf__fcache_alloc(size_t size);
CF_HIDDEN void cf__fcache_free(void *block);

/* Until a future completes its outcome is not set, and the executor keeps
 * the task's priority (cf_task_opts.priority) in out.code; in a queue
 * ordered by priority, out.v.i64 holds the time it was queued, as for the
 * trace (fqueue.c).  Completion overwrites both (a success sets code 0). */
static inline int32_t *cf__queued_priority(cf_future *f)
{
    return &f->out.code;
}

/* The unobserved-error hook (future.c): an executor's is shared with the
 * failed futures that may outlive it (reference counted). */
typedef struct cf_hook {
    _Atomic uint32_t refs;
    cf_error_hook fn;
    void *arg;
} cf_hook;

CF_HIDDEN cf_hook *cf__hook_retain(cf_hook *h);
CF_HIDDEN void cf__hook_release(cf_hook *h);
/** Tells hook h (NULL: the default hook) that f's error went unread. */
CF_HIDDEN void cf__hook_call(cf_hook *h, cf_future *f, const cf_error *err);
/** Sets where a future that fails finds its hook (a reference, or NULL for
 *  the default): the executor layer registers it, so that future.c does
 *  not call into executor.c. */
CF_HIDDEN void cf__future_hook_source(cf_hook *(*fn)(const cf_future *f));

/** Allocates a future; with the caller's reference. */
CF_HIDDEN cf_future *cf__future_alloc(void);
/** Sets the argument of a future that is about to be queued. */
CF_HIDDEN int cf__future_set_arg(cf_future *f, const void *arg, size_t len,
                                 bool borrow);
CF_HIDDEN const void *cf__future_arg(const cf_future *f);

/** Claims f for completion (CF_OK) or says why not (CF_ESTATE). */
CF_HIDDEN int cf__future_claim(cf_future *f);
/** Publishes the outcome of a claimed future: FINISHED, wake, callbacks. */
CF_HIDDEN void cf__future_publish(cf_future *f);
/** Completes with an error (claim + outcome + publish); CF_ESTATE if done. */
CF_HIDDEN int cf__future_fail(cf_future *f, int status, int code,
                              const char *fmt, ...) CF_PRINTF(4, 5);

static inline uint32_t cf__state_load(const cf_future *f)
{
    return atomic_load_explicit(&((cf_future *)f)->state, memory_order_acquire);
}
static inline bool cf__state_done(uint32_t s)
{
    return (s & FS_STATE) >= CF_FINISHED;
}

/** Registers l on f unless f is done.  Returns true if registered, false
 *  if f was already done (l untouched; the caller handles it). */
CF_HIDDEN bool cf__listen(cf_future *f, cf_listener *l);
/** Unregisters l if still registered (safe against concurrent completion). */
CF_HIDDEN void cf__unlisten(cf_future *f, cf_listener *l);

/** Blocks until f is done or the deadline passes: CF_OK or CF_ETIMEDOUT.
 *  On a pool thread it helps run that pool's queued tasks meanwhile. */
CF_HIDDEN int cf__future_wait(cf_future *f, const cf_deadline *d);

/* ------------------------------------------------------------------------ */
/* Running a task: cf_call (task.c)                                          */
/* ------------------------------------------------------------------------ */

struct cf_call {
    const void *arg;
    size_t arg_len;
    cf_future *antecedent; /* cf_then: the future it continues, or NULL */
    cf_outcome out;
    const _Atomic uint32_t *cancel_word; /* word holding FS_CANCEL_REQ */
    /* Process workers: the parent writes id + 1 into *cancel_id (shared
     * memory) to ask the running item to stop. */
    const _Atomic uint64_t *cancel_id;
    uint64_t id;
};

CF_HIDDEN void cf__call_init(cf_call *c, const void *arg, size_t len,
                             const _Atomic uint32_t *cancel_word);
/** Runs f's task on this thread: RUNNING -> task -> FINISHED.  Skips a
 *  cancelled future.  The caller keeps its reference.  If finishing is not
 *  NULL it is incremented just before the result is published (a pool
 *  counts the thread as available from then on); returns true if it was. */
CF_HIDDEN bool cf__run_future(cf_future *f, _Atomic int *finishing);

/* ------------------------------------------------------------------------ */
/* Helping waits: a pool thread that must wait runs its pool's work         */
/* ------------------------------------------------------------------------ */

/*
 * A pool thread that must block (cf_result, cf_wait, cf_as_completed, a
 * full queue of its own pool) runs queued tasks of its pool meanwhile
 * (work-helping, so a task that waits on a task of its own saturated pool
 * never deadlocks): its own children first, then others' (thread_pool.c).
 * When it finds none it can run, it sleeps on its own condition variable
 * under the pool's lock, and whoever completes what it waits for
 * broadcasts that variable.
 */
typedef struct cf_helper {
    pthread_mutex_t *lock;
    pthread_cond_t *cv; /* broadcast it (under lock) to wake the helper */
    /* No lock held: runs one queued task and returns true, or returns
     * false if there is none this thread may run (none queued, or its
     * stack is nearly used up). */
    bool (*run_one)(struct cf_helper *h);
    /* lock held: run_one, dropping the lock meanwhile. */
    bool (*run_one_locked)(struct cf_helper *h);
    /* lock held: sleeps until cv is broadcast, or until there is work
     * this thread can run; 0 or ETIMEDOUT. */
    int (*sleep_locked)(struct cf_helper *h, const cf_deadline *d);
    struct cf_executor *ex; /* the pool this thread belongs to */
    /* The future this thread waits for in cf_result (NULL: several, or
     * none): a thread blocked at its stack margin hands it, and the tasks
     * it queued after it, to another thread. */
    cf_future *awaited;
} cf_helper;

/** The pool thread's helper, NULL on other threads. */
CF_HIDDEN extern _Thread_local cf_helper *cf__current_helper;

/* ------------------------------------------------------------------------ */
/* executor.c: the front every executor kind plugs into                    */
/* ------------------------------------------------------------------------ */

typedef struct cf_executor_vtable {
    const char *kind; /* "thread", "process", "mpi" */
    /* Queues f (its fn and argument set, a reference owned by the executor
     * from now on, released when the task ends).  CF_OK or an error, in
     * which case the executor took no reference. */
    int (*submit)(struct cf_executor *ex, cf_future *f, unsigned flags);
    /* Stops accepting work (the front already set shut_down) and cancels
     * queued work if asked.  Never blocks on running tasks. */
    void (*shutdown)(struct cf_executor *ex, bool cancel_futures);
    /* Blocks until every task has ended and the workers have exited, or
     * the deadline passes: CF_OK or CF_ETIMEDOUT. */
    int (*wait)(struct cf_executor *ex, const cf_deadline *d);
    /* Optional: tells the worker running f that f's cancel flag was
     * raised (cooperative), or kills that worker (force). */
    void (*cancel_running)(struct cf_executor *ex, cf_future *f, bool force);
    /* Optional: sends sig to every worker process (terminate / kill). */
    int (*signal_workers)(struct cf_executor *ex, int sig);
    /* Optional: f (pending) is about to be cancelled.  Returns false if
     * its task has started after all (f is then RUNNING and the cancel
     * fails); true once it can no longer start (process pool: its task
     * slot is taken back). */
    bool (*cancel_queued)(struct cf_executor *ex, cf_future *f);
    /* The executor runs a map's chunk (chunk.h) as one task. */
    bool chunks;
    /* Frees everything.  Called once, when the last reference to the
     * executor is dropped (cf__executor_release), possibly on one of the
     * executor's own threads (a callback or a task released it).  The
     * executor has been shut down and waited for, unless the user shut it
     * down without waiting: then workers may still be running, and
     * destroy must not block; the last of them frees the memory. */
    void (*destroy)(struct cf_executor *ex);
} cf_executor_vtable;

struct cf_executor {
    const cf_executor_vtable *vt;
    /* References: the user's (dropped by cf_executor_free), and one per
     * map and pending continuation that may still submit to it, so that
     * neither ever touches freed memory: once the user has freed the
     * executor they find it shut down (CF_ESHUTDOWN). */
    _Atomic uint32_t refs;
    /* cf_shutdown(ex, wait=false) was called: cf_executor_free returns at
     * once, and the workers finish the queued work on their own (Python's
     * shutdown(wait=False)). */
    _Atomic bool no_wait;
    int max_workers;
    int id;                  /* 1, 2, ... in creation order (traces) */
    unsigned fork_gen;       /* the process's fork generation at creation */
    _Atomic bool shut_down;  /* set by cf_shutdown before the vtable call */
    _Atomic(cf_hook *) hook; /* NULL: the process-wide default hook */
    struct {                 /* cf_executor_stats; relaxed atomics */
        _Atomic uint64_t submitted, started, ok, failed, crashed, cancelled;
        _Atomic uint64_t busy_ns;
        _Atomic uint64_t workers, worker_starts, idle_exits;
    } stats;
    _Atomic(struct cf_stats_shard *) shards; /* per-thread counts, pushed */
};

/* A pool thread's own statistics (executor.c): the tasks it runs are
 * counted here, by this thread alone, with a load and a store instead of
 * an atomic read-modify-write on a line every thread writes;
 * cf_executor_stats adds the shards to the executor's counts.  Lives as
 * long as the executor (in the pool's worker). */
typedef struct cf_stats_shard {
    struct cf_stats_shard *next; /* the executor's list */
    cf_executor *ex;             /* set when listed */
    _Atomic uint64_t submitted, started, ok, failed, crashed, cancelled;
    _Atomic uint64_t busy_ns;
} cf_stats_shard;

/** From now on this thread counts ex's tasks in s (listing s in ex the
 *  first time); cf__stats_shard_leave() stops it. */
CF_HIDDEN void cf__stats_shard_enter(cf_executor *ex, cf_stats_shard *s);
CF_HIDDEN void cf__stats_shard_leave(void);

/** True in a process forked from the one that created ex: its threads and
 *  workers are not there, and its locks may have been copied held. */
CF_HIDDEN bool cf__inherited(const cf_executor *ex);

/** Statistics: a task started running / ended with `status`. */
CF_HIDDEN void cf__stats_started(cf_executor *ex);
CF_HIDDEN void cf__stats_ended(cf_executor *ex, int status);
CF_HIDDEN void cf__stats_cancelled(cf_executor *ex);
CF_HIDDEN void cf__stats_busy(cf_executor *ex, uint64_t ns);

/** Queues fn(arg) on ex as the task of an existing pending future f (which
 *  the caller keeps its reference to).  CF_OK or an error (f untouched). */
CF_HIDDEN int cf__submit_into(cf_executor *ex, cf_future *f, cf_task_fn fn,
                              const void *arg, size_t len,
                              const cf_task_opts *opts, unsigned chunk);
/** cf_submit_ex with the map's chunk hint (items per frame). */
CF_HIDDEN cf_future *cf__submit(cf_executor *ex, cf_task_fn fn, const void *arg,
                                size_t len, const cf_task_opts *opts,
                                unsigned chunk);

CF_HIDDEN void cf__executor_init(cf_executor *ex, const cf_executor_vtable *vt,
                                 int max_workers);
/** A reference that keeps the executor's memory valid (maps,
 *  continuations).  ex may be NULL. */
CF_HIDDEN cf_executor *cf__executor_retain(cf_executor *ex);
/** Drops a reference; the last one destroys the executor. */
CF_HIDDEN void cf__executor_release(cf_executor *ex);

/* trace.c: the timeline (cf_trace_start).  cf__trace_on is the only cost
 * when tracing is off.  While a future is queued, its outcome is unused,
 * so the submit time is kept in f->out.v.i64 for the trace.  Priorities
 * use the outcome the same way (cf__queued_priority, fqueue.c). */
CF_HIDDEN extern _Atomic bool cf__trace_on;
static inline bool cf__tracing(void)
{
    return CF_UNLIKELY(
        atomic_load_explicit(&cf__trace_on, memory_order_relaxed));
}
CF_HIDDEN void cf__trace_task(const cf_executor *ex, long tid, cf_task_fn fn,
                              uint64_t queued, uint64_t start, uint64_t end,
                              int status);
/* The same, with the task's outcome code: < 0, the signal that killed its
 * process (-code); > 0, its exit or error code. */
CF_HIDDEN void cf__trace_task_code(const cf_executor *ex, long tid,
                                   cf_task_fn fn, uint64_t queued,
                                   uint64_t start, uint64_t end, int status,
                                   int code);
/** The trace row of the current pool thread (its index). */
CF_HIDDEN extern _Thread_local long cf__trace_tid;

/* progress.c: the opt-in progress bar of cf_map and cf_as_completed. */
typedef struct cf_progress {
    const char *label;
    size_t total; /* 0: unknown */
    uint64_t start, last;
    bool on, finished;
} cf_progress;
CF_HIDDEN void cf__progress_init(cf_progress *p, const char *label,
                                 size_t total);
CF_HIDDEN void cf__progress_update(cf_progress *p, size_t done, bool final);

/** Number of CPUs this process may run on (sched_getaffinity), >= 1. */
CF_HIDDEN int cf__cpu_count(void);

#endif /* CF_INTERNAL_H */

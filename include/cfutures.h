/**
 * @file
 * cfutures.h -- Python's concurrent.futures for C.
 *
 * Submit a function to an executor and get a future; wait on it with a
 * timeout, cancel it, add callbacks, or collect many with cf_wait,
 * cf_as_completed and cf_map.  Every executor runs the same task signature,
 * so switching from threads to processes is a one-line change.
 *
 * Conventions used throughout this header
 * ---------------------------------------
 * - Status codes: functions that can fail return an int, CF_OK (0) or a
 *   negative CF_E* code (see cf_status).  cf_strerror() names it.
 *   Functions that return a pointer return NULL on failure and set the
 *   calling thread's cf_last_error().
 * - Timeouts are in seconds, as a double.  CF_FOREVER (+infinity) waits
 *   without limit, 0 polls, a positive value waits at most that long.
 *   A negative or NaN timeout is CF_EINVAL.
 * - Ownership: a function that returns a new object (cf_future_new,
 *   cf_submit*, cf_thread_pool, cf_as_completed_new, cf_map_*) gives the
 *   caller one reference, which the caller gives back with the matching
 *   release/free call.  Pointers handed out by accessors ("borrowed") stay
 *   valid while the caller holds its reference to the owning object.
 * - Thread safety: every function may be called from any thread, on the
 *   same object concurrently, unless its comment says otherwise.
 * - Blocking: only the functions documented as blocking ever sleep; none
 *   busy-waits.
 */
#ifndef CFUTURES_H
#define CFUTURES_H

#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define CF_API __attribute__((visibility("default")))
#define CF_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define CF_API
#define CF_PRINTF(f, a)
#endif

/** Major version of this header (cf_version() gives the library's). */
#define CF_VERSION_MAJOR 0
/** Minor version of this header. */
#define CF_VERSION_MINOR 1
/** Patch version of this header. */
#define CF_VERSION_PATCH 0
/** Version of this header, "MAJOR.MINOR.PATCH". */
#define CF_VERSION_STRING "0.1.0"

/** Runtime version of the library, "MAJOR.MINOR.PATCH". */
CF_API const char *cf_version(void);

/* ------------------------------------------------------------------------ */
/* Status codes                                                              */
/* ------------------------------------------------------------------------ */

/**
 * X-macro table: name, value, message.  Each error code stands for one of
 * the exceptions Python's concurrent.futures raises (named on the right).
 */
#define CF_STATUS_MAP(X)                                                      \
    X(OK, 0, "success")                                                       \
    X(ECANCELLED, -1, "future was cancelled")         /* CancelledError */    \
    X(ETIMEDOUT, -2, "timed out")                     /* TimeoutError */      \
    X(ETASK, -3, "task raised an error")              /* the task's raise */  \
    X(EBROKEN, -4, "executor is broken")              /* BrokenExecutor */    \
    X(ESHUTDOWN, -5, "executor has been shut down")   /* RuntimeError */      \
    X(ESTATE, -6, "invalid state for this operation") /* InvalidStateError */ \
    X(ECRASHED, -7, "worker crashed while running the task")                  \
    X(ENOMEM, -8, "out of memory")          /* MemoryError */                 \
    X(EINVAL, -9, "invalid argument")       /* ValueError/TypeError*/         \
    X(EFULL, -10, "executor queue is full") /* (no Python peer) */            \
    X(END, -11, "no more items")            /* StopIteration */

/** Status codes: CF_OK (0) or a negative error (see CF_STATUS_MAP). */
typedef enum cf_status {
#define CF_STATUS_ENUM_(name, value, msg) CF_##name = value,
    CF_STATUS_MAP(CF_STATUS_ENUM_)
#undef CF_STATUS_ENUM_
} cf_status;

/** Message for a status code ("timed out"); never NULL, static storage. */
CF_API const char *cf_strerror(int status);
/** Name of a status code ("CF_ETIMEDOUT"); never NULL, static storage. */
CF_API const char *cf_err_name(int status);
/**
 * Status of the last failed call on this thread that returned a pointer
 * (NULL) instead of a status.  Thread-local; not reset by successful calls.
 */
CF_API int cf_last_error(void);
/**
 * Why the last failed call on this thread that returned NULL failed: a
 * message when the library knows more than the code says (for example, an
 * executor inherited through fork()), else cf_strerror(cf_last_error()).
 * Never NULL; static storage.  Thread-local.
 */
CF_API const char *cf_last_error_message(void);

/* ------------------------------------------------------------------------ */
/* Timeouts                                                                  */
/* ------------------------------------------------------------------------ */

/** Wait without a time limit (Python's timeout=None). */
#define CF_FOREVER INFINITY

/* ------------------------------------------------------------------------ */
/* Futures                                                                   */
/* ------------------------------------------------------------------------ */

/** A future: the eventual result of a task.  Opaque, reference counted. */
typedef struct cf_future cf_future;

/** The state of a future (cf_future_state). */
typedef enum cf_state {
    CF_PENDING = 0,   /**< not started yet; can be cancelled */
    CF_RUNNING = 1,   /**< a worker runs it (set_running_or_notify_cancel) */
    CF_FINISHED = 2,  /**< has a result or an error */
    CF_CANCELLED = 3, /**< cancelled before it ran */
} cf_state;

/**
 * What a future ended with, when it did not return normally (see
 * cf_exception).  `message` is owned by the future and is valid while the
 * caller holds a reference to it.
 */
typedef struct cf_error {
    int status;          /**< CF_OK if the future returned normally, else
                            CF_ETASK (the task raised), CF_ECRASHED,
                            CF_EBROKEN, CF_ETIMEDOUT (task time limit), ... */
    int code;            /**< CF_ETASK: the code the task passed to cf_raise;
                            CF_ECRASHED: the signal number, or exit status
                            (see message); 0 otherwise */
    const char *message; /**< human-readable text, never NULL ("" if none) */
} cf_error;

/**
 * A new standalone future in state PENDING, for code that completes it
 * itself (the promise side, like instantiating concurrent.futures.Future).
 * The caller owns one reference.  NULL on out of memory (cf_last_error()).
 */
CF_API cf_future *cf_future_new(void);

/** Adds a reference.  Returns f.  f must be a live future. */
CF_API cf_future *cf_future_retain(cf_future *f);

/**
 * Drops a reference; the last one frees the future.  NULL is ignored.
 * Releasing a future does not cancel its task: an executor keeps its own
 * reference until the task ends.  Never blocks.
 */
CF_API void cf_future_release(cf_future *f);

/** Current state (a snapshot).  Never blocks. */
CF_API cf_state cf_future_state(const cf_future *f);

/**
 * Attempts to cancel (Future.cancel).  Returns true if the future is now
 * cancelled (it was pending, or already cancelled); false if it is running
 * or finished.  A successful cancel wakes every thread blocked on the
 * future and runs its done callbacks in the calling thread.
 */
CF_API bool cf_cancel(cf_future *f);
/** True if the future was cancelled (Future.cancelled). */
CF_API bool cf_cancelled(const cf_future *f);
/** True while a worker runs the task (Future.running). */
CF_API bool cf_running(const cf_future *f);
/** True if finished or cancelled (Future.done). */
CF_API bool cf_done(const cf_future *f);

/**
 * Waits for the future and returns its outcome (Future.result).
 * Blocks up to `timeout` seconds.
 * - CF_OK: the task returned; *data and *len (either may be NULL) point
 *   to the result bytes, owned by the future and valid while the caller
 *   holds a reference.  A task that returned nothing gives len 0 (and a
 *   non-NULL data pointer).
 * - CF_ETIMEDOUT: not done within the timeout (the future is untouched);
 *   also when the task itself ran past its time limit
 *   (cf_task_opts.time_limit): cf_done() tells which.
 * - CF_ECANCELLED: the future was cancelled (also when cancelled while
 *   this call was waiting).
 * - CF_ETASK, CF_ECRASHED, CF_EBROKEN, ...: the future ended with an
 *   error; cf_exception() gives its code and message.
 * - CF_EINVAL: f is NULL or the timeout is negative / NaN.
 *
 * On a pool thread, waiting on a pending future of the same pool runs
 * queued tasks of that pool meanwhile, so nested waits never deadlock.
 */
CF_API int cf_result(cf_future *f, double timeout, const void **data,
                     size_t *len);
/** cf_result for an int64 result (set by cf_return_i64 or 8 bytes).
 *  CF_EINVAL if the result has another size. */
CF_API int cf_result_i64(cf_future *f, double timeout, int64_t *out);
/** cf_result for a double result (cf_return_f64 or 8 bytes). */
CF_API int cf_result_f64(cf_future *f, double timeout, double *out);
/** cf_result for a string result (cf_return_str); *out is borrowed,
 *  NUL-terminated.  CF_EINVAL if the result is not NUL-terminated. */
CF_API int cf_result_str(cf_future *f, double timeout, const char **out);

/**
 * Waits for the future and reports its error (Future.exception).
 * Blocks up to `timeout` seconds.  Returns CF_OK once the future finished,
 * with *err filled in: err->status is CF_OK if it returned normally, else
 * the error it ended with.  Returns CF_ECANCELLED if cancelled,
 * CF_ETIMEDOUT on timeout, CF_EINVAL on bad arguments (*err untouched
 * unless CF_OK).
 */
CF_API int cf_exception(cf_future *f, double timeout, cf_error *err);

/** A done callback: receives the future (borrowed; the library holds a
 *  reference for the duration of the call) and the user's argument. */
typedef void (*cf_done_fn)(cf_future *f, void *arg);

/**
 * Adds a callback run when the future finishes or is cancelled
 * (Future.add_done_callback).  If the future is already done, runs it at
 * once in the calling thread; otherwise it runs later in the thread that
 * completes the future.  Callbacks run in registration order, with no
 * library lock held: a callback may release futures, wait on other
 * futures, submit work or shut an executor down.  Returns CF_OK, CF_EINVAL
 * (NULL f or fn) or CF_ENOMEM (the callback will not run).
 */
CF_API int cf_add_done_callback(cf_future *f, cf_done_fn fn, void *arg);

/**
 * A short description like Python's repr(future), for logs.  Examples:
 *   "<cf_future at 0x5581... state=finished returned i64 5050>"
 *   "<cf_future at 0x5581... state=finished raised CF_ETASK(7): bad input>"
 * Writes at most `size` bytes (NUL-terminated) into buf and returns buf.
 */
CF_API char *cf_describe(const cf_future *f, char *buf, size_t size);

/* Promise side: completing a future yourself. */

/**
 * Marks a pending future running (Future.set_running_or_notify_cancel).
 * Returns CF_OK if it is now RUNNING (go ahead and run the work),
 * CF_ECANCELLED if it was cancelled (do not run the work), CF_ESTATE if it
 * is already running or finished.
 */
CF_API int cf_set_running_or_notify_cancel(cf_future *f);

/**
 * Completes the future with a result (a copy of len bytes of data).
 * Wakes waiters and runs callbacks in the calling thread.  CF_ESTATE if the
 * future is already finished or cancelled (InvalidStateError), CF_ENOMEM.
 */
CF_API int cf_set_result(cf_future *f, const void *data, size_t len);
/** cf_set_result with an int64 result (8 bytes). */
CF_API int cf_set_result_i64(cf_future *f, int64_t v);
/** cf_set_result with a double result (8 bytes). */
CF_API int cf_set_result_f64(cf_future *f, double v);
/** cf_set_result with a copy of the string s, NUL included. */
CF_API int cf_set_result_str(cf_future *f, const char *s);

/**
 * Completes the future with an error (Future.set_exception): the future's
 * status becomes CF_ETASK with the given code and a printf-formatted
 * message (fmt may be NULL).  CF_ESTATE if already finished or cancelled.
 */
CF_API int cf_set_exception(cf_future *f, int code, const char *fmt, ...)
    CF_PRINTF(3, 4);

/* ------------------------------------------------------------------------ */
/* Tasks: one signature for every executor                                   */
/* ------------------------------------------------------------------------ */

/**
 * The context of one running task.  Valid only inside the task function;
 * owned by the executor.
 */
typedef struct cf_call cf_call;

/**
 * A task.  Reads its argument with cf_arg*, returns with cf_return*, or
 * "raises" with cf_raise.  Returning without either gives an empty
 * result (Python's None).  The same function runs on every executor.
 */
typedef void (*cf_task_fn)(cf_call *call);

/** The argument bytes (borrowed, valid during the task); *len may be NULL.
 *  Aligned for any type of up to 8 bytes on every executor, so a task may
 *  read a struct argument through the pointer (with CF_BORROW_ARG, the
 *  caller's pointer is passed as it is). */
CF_API const void *cf_arg(cf_call *c, size_t *len);
/** The argument as an int64 (0 if it is not 8 bytes long). */
CF_API int64_t cf_arg_i64(cf_call *c);
/** The argument as a double (0.0 if it is not 8 bytes long). */
CF_API double cf_arg_f64(cf_call *c);
/** The argument as a string ("" if it is not NUL-terminated). */
CF_API const char *cf_arg_str(cf_call *c);

/**
 * Sets the task's result to a copy of len bytes.  Results of up to 16
 * bytes live inside the future (no allocation).  Calling it again replaces
 * the earlier result.  Returns CF_OK or CF_ENOMEM.
 */
CF_API int cf_return(cf_call *c, const void *data, size_t len);
/** cf_return with an int64 result (8 bytes; read with cf_result_i64). */
CF_API int cf_return_i64(cf_call *c, int64_t v);
/** cf_return with a double result (8 bytes; read with cf_result_f64). */
CF_API int cf_return_f64(cf_call *c, double v);
/** cf_return with a copy of the string s, NUL included (cf_result_str). */
CF_API int cf_return_str(cf_call *c, const char *s);

/**
 * The task "raises": its future ends with CF_ETASK, this code and a
 * printf-formatted message, which reach the caller intact through
 * cf_exception().  Overrides any cf_return.  The task should return after
 * it.  Returns CF_OK (or CF_ENOMEM; the error is still recorded).
 */
CF_API int cf_raise(cf_call *c, int code, const char *fmt, ...) CF_PRINTF(3, 4);

/**
 * True once someone asked the running task to stop (cf_request_cancel).
 * Long tasks check it now and then and return early.  Never blocks.
 */
CF_API bool cf_cancel_requested(cf_call *c);

/**
 * Cooperative cancellation: cancels the future if it is still pending (as
 * cf_cancel), and otherwise raises a flag that its running task sees
 * through cf_cancel_requested().  The task decides how to end.  Returns
 * true if the future is now cancelled, false if the request was only
 * flagged (running) or came too late (finished).
 */
CF_API bool cf_request_cancel(cf_future *f);

/**
 * Forceful cancellation: cancels the future if it is pending; if its task
 * runs on a process pool, kills the worker running it (a fresh worker takes
 * its place) and the future ends with CF_ECANCELLED (state finished, since
 * it had started).  Returns CF_OK; CF_ESTATE if already done; CF_EINVAL if
 * the task runs on threads, which cannot be killed, or on an MPI rank of a
 * pool without crash_isolation (the cooperative flag of cf_request_cancel
 * is raised instead).  Do not call it
 * concurrently with cf_executor_free of the future's executor.
 */
CF_API int cf_kill_task(cf_future *f);

/* ------------------------------------------------------------------------ */
/* Executors                                                                 */
/* ------------------------------------------------------------------------ */

/** An executor (thread pool, process pool, MPI pool).  Opaque. */
typedef struct cf_executor cf_executor;

/** Options of a thread pool.  Zero-initialise; every zero means default. */
typedef struct cf_thread_pool_opts {
    /** Maximum threads; 0 means min(32, CPUs + 4), as Python. */
    int max_workers;
    /** Threads are named "<prefix>_<N>" (cut to 15 bytes, the kernel's
     *  limit); NULL means "cf_thread". */
    const char *thread_name_prefix;
    /** Runs once at the start of each worker thread.  A non-zero return
     *  breaks the pool: every pending future ends with CF_EBROKEN and
     *  further submits fail with CF_EBROKEN (BrokenThreadPool). */
    int (*initializer)(void *initarg);
    void *initarg; /**< the initializer's argument */
    /** Maximum tasks waiting in the queue (not counting running ones);
     *  0 means unbounded.  When full, submit blocks until there is room,
     *  or fails with CF_EFULL if fail_when_full is set (or the submit
     *  passes CF_NOWAIT). */
    size_t max_queued;
    bool fail_when_full; /**< fail with CF_EFULL instead of blocking */
    /** Stack size of each pool thread in bytes, rounded up to the page
     *  size; 0 means 8 MiB.  Below CF_THREAD_POOL_MIN_STACK (or above
     *  1 GiB) cf_thread_pool fails with CF_EINVAL. */
    size_t stack_size;
    /** Seconds a thread may sit idle before it exits; threads start again
     *  on demand.  0 (or CF_FOREVER) = keep them, as Python does.  For
     *  servers with bursty load (the guide's "Elastic pools"). */
    double idle_timeout;
} cf_thread_pool_opts;

/** The smallest cf_thread_pool_opts.stack_size (128 KiB). */
#define CF_THREAD_POOL_MIN_STACK (128u << 10)
/** Compensating threads a thread pool may start beyond max_workers. */
#define CF_THREAD_POOL_COMPENSATION 256

/**
 * Creates a thread pool (ThreadPoolExecutor).  opts may be NULL (defaults).
 * Threads start lazily, on submit, when no idle thread can take the task,
 * and are reused when idle.  NULL on error (cf_last_error(): CF_EINVAL for
 * max_workers < 0 or a stack_size out of range, CF_ENOMEM).  Free with
 * cf_executor_free.
 *
 * Scheduling.  A task submitted from one of the pool's threads goes on that
 * thread's own deque: the thread runs its newest task first, and idle
 * threads steal the oldest.  A task submitted from any other thread goes
 * on a FIFO queue: those start in submission order.
 *
 * Nested waits.  A pool thread that waits (cf_result, cf_wait,
 * cf_as_completed, cf_map, a full bounded queue of its own pool) runs
 * queued tasks of its pool meanwhile, its own children first.  It never
 * starts a task while less than a quarter of its stack (at least 64 KiB,
 * the "margin") is left; then it sleeps until what it waits for is done.
 * When every thread of the pool is asleep in such a wait and tasks are
 * queued, the pool starts a compensating thread, up to
 * CF_THREAD_POOL_COMPENSATION beyond max_workers; an extra thread exits
 * as soon as it finds nothing to do.  Hence:
 *
 * - No stack overflow: a pool thread runs tasks nested only while the
 *   margin is left, so it cannot overflow as long as no single task uses
 *   more than the margin (minus a few KiB for the library) between two of
 *   its waits.  Deep recursion inside one task is the task's business.
 * - No deadlock for fork-join programs: if every future a task waits on is
 *   a task submitted to the same pool (or one completed by such a task),
 *   and the waits form no cycle, the program completes whatever
 *   max_workers and the stack size, as long as no more than
 *   max_workers + CF_THREAD_POOL_COMPENSATION threads need to be blocked
 *   at the same time.  Beyond that bound a waiting thread just sleeps: a
 *   program that needs more blocked threads than that may deadlock, as it
 *   would on Python's pool.  A wait on something completed outside the
 *   pool blocks its thread until then, as on Python's pool.
 */
CF_API cf_executor *cf_thread_pool(const cf_thread_pool_opts *opts);

/** Submit flags (cf_task_opts.flags). */
enum {
    /** Thread pool: do not copy the argument; the caller keeps the buffer
     *  alive and unchanged until the future is done.  Other executors
     *  copy anyway. */
    CF_BORROW_ARG = 1u << 0,
    /** Fail with CF_EFULL instead of blocking when the queue is full. */
    CF_NOWAIT = 1u << 1,
};

/** Per-task options for cf_submit_ex.  Zero-initialise. */
typedef struct cf_task_opts {
    unsigned flags;    /**< CF_BORROW_ARG, CF_NOWAIT */
    double time_limit; /**< seconds the task may run; 0 or CF_FOREVER =
                          none.  Process
                          pool only: the worker is killed and the future
                          ends with CF_ETIMEDOUT.  Thread pools accept
                          it and ignore it (a thread cannot be killed);
                          MPI pools enforce it with crash_isolation and
                          refuse it (CF_EINVAL) without. */
    int retries;       /**< process pool: re-run a task whose worker crashed
                          up to this many times on fresh workers; 0 means
                          the pool's max_retries (0 by default) */
    int priority;      /**< higher starts first; equal priorities keep
                          submission order.  A waiting task gains one
                          level per CF_PRIORITY_AGING seconds, so a task
                          is never passed by one submitted more than
                          (difference of priorities) x CF_PRIORITY_AGING
                          seconds after it.  Running tasks are not
                          pre-empted.  Every executor: on a thread pool
                          it orders the tasks submitted from outside the
                          pool (and prioritised ones from inside); the
                          guide's "Priorities". */
} cf_task_opts;

/** Seconds of waiting worth one priority level (cf_task_opts.priority). */
#define CF_PRIORITY_AGING 1.0

/**
 * Schedules fn(arg) and returns its future (Executor.submit).  The
 * executor copies len bytes of arg (unless CF_BORROW_ARG); arg may be NULL
 * when len is 0.  The caller owns one reference to the returned future.
 * Returns NULL on failure, with cf_last_error(): CF_ESHUTDOWN after
 * shutdown, CF_EBROKEN if the pool is broken or was inherited through
 * fork() (cf_last_error_message() says which), CF_EFULL (see
 * cf_thread_pool_opts), CF_EINVAL (NULL ex or fn), CF_ENOMEM.
 * May block only when the queue is bounded and full.
 */
CF_API cf_future *cf_submit(cf_executor *ex, cf_task_fn fn, const void *arg,
                            size_t len);
/** cf_submit with per-task options (opts may be NULL: defaults). */
CF_API cf_future *cf_submit_ex(cf_executor *ex, cf_task_fn fn, const void *arg,
                               size_t len, const cf_task_opts *opts);
/** cf_submit with an int64 argument (the task reads it with cf_arg_i64). */
CF_API cf_future *cf_submit_i64(cf_executor *ex, cf_task_fn fn, int64_t v);
/** cf_submit with a double argument (cf_arg_f64). */
CF_API cf_future *cf_submit_f64(cf_executor *ex, cf_task_fn fn, double v);
/** cf_submit with a C string argument, NUL included (cf_arg_str);
 *  CF_EINVAL if s is NULL. */
CF_API cf_future *cf_submit_str(cf_executor *ex, cf_task_fn fn, const char *s);

/**
 * Shuts the executor down (Executor.shutdown).  Further submits fail with
 * CF_ESHUTDOWN.  With cancel_futures, every task still queued is
 * cancelled.  With wait, blocks until every running and queued task has
 * ended and the workers have exited (a pool thread calling it for its own
 * pool waits for the others only).  Without wait, returns at once; the
 * queued work still runs, and a later cf_executor_free does not wait for
 * it either (Python's shutdown(wait=False)).  Safe to call more than once
 * and from a done callback.  Returns CF_OK or CF_EINVAL.
 */
CF_API int cf_shutdown(cf_executor *ex, bool wait, bool cancel_futures);

/**
 * Shuts down (as cf_shutdown(ex, true, false) unless already shut down
 * with cancel_futures) and frees the executor: what was queued still
 * runs, so no future is left pending.  Blocks until the workers have
 * exited, except after cf_shutdown(ex, false, ...): then it returns at
 * once, the workers finish the queued work, and the last of them reclaims
 * the executor's memory.  NULL is ignored.  In a child of fork(), an
 * executor inherited from the parent is left alone: free returns at once,
 * and cf_submit / cf_shutdown on it fail with CF_EBROKEN (the guide's
 * "fork()" section).
 *
 * What outlives the executor: its futures (readable, waitable, releasable
 * on any thread); a cf_map over it (cf_map_next goes on with the items
 * already submitted; an item that was still to be submitted ends with
 * CF_ESHUTDOWN, which in fail-fast mode ends the map); a cf_then
 * continuation to run on it (when its input completes, the continuation's
 * future ends with CF_ESHUTDOWN instead of running).  Each of them keeps
 * the executor's memory alive until it is freed or has fired, so none
 * touches freed memory.  Using `ex` itself after this call is undefined.
 */
CF_API void cf_executor_free(cf_executor *ex);

/**
 * Shuts down and waits at most `timeout` seconds for the work to end; past
 * it, escalates: tasks not started are cancelled, then (process pool) the
 * workers get SIGTERM and, a second later, SIGKILL; their running futures
 * end with CF_EBROKEN.  A thread pool cannot stop a running thread: it
 * cancels what is queued and returns.  Returns CF_OK if everything ended
 * in time, CF_ETIMEDOUT if it had to escalate, CF_EINVAL.  Blocks.
 */
CF_API int cf_shutdown_within(cf_executor *ex, double timeout);

/**
 * Process pool: shuts down with cancel_futures and sends SIGTERM
 * (terminate) or SIGKILL (kill) to every worker at once
 * (ProcessPoolExecutor.terminate_workers / kill_workers).  Futures whose
 * task was running end with CF_EBROKEN.  Does not wait; cf_executor_free
 * or cf_shutdown(wait) reaps.  CF_EINVAL on a thread pool.
 */
CF_API int cf_terminate_workers(cf_executor *ex);
/** As cf_terminate_workers, with SIGKILL. */
CF_API int cf_kill_workers(cf_executor *ex);

/** Maximum number of workers of the executor (>= 1), or CF_EINVAL
 *  (negative) if ex is NULL.  Never blocks. */
CF_API int cf_executor_max_workers(const cf_executor *ex);

/** Counters of an executor (cf_executor_stats).  They add up:
 *  submitted == queued + running + done + failed + crashed + cancelled. */
typedef struct cf_stats {
    uint64_t submitted;  /**< tasks accepted by submit (and map) */
    uint64_t queued;     /**< waiting for a worker (a future cancelled while
                            queued counts here until a worker drops it) */
    uint64_t running;    /**< running now */
    uint64_t done;       /**< finished with a result */
    uint64_t failed;     /**< finished with an error (raised, timed out, ...) */
    uint64_t crashed;    /**< their worker process died (CF_ECRASHED) */
    uint64_t cancelled;  /**< cancelled before they ran */
    double busy_seconds; /**< total time workers spent with work to do */
    uint64_t workers;    /**< workers (threads or processes) alive now */
    uint64_t worker_starts; /**< workers started so far, restarts included */
    uint64_t idle_exits;    /**< workers that exited after idle_timeout */
} cf_stats;

/** A snapshot of the executor's counters.  CF_OK or CF_EINVAL.  Lock-free. */
CF_API int cf_executor_stats(const cf_executor *ex, cf_stats *out);

/**
 * Told when a future that ended with an error (or a crash) is freed without
 * anyone having read its result or error (cf_result, cf_exception,
 * cf_map_next, a cf_then continuation): errors are never silent.  Runs in
 * the thread that drops the last reference; f is still readable.
 */
typedef void (*cf_error_hook)(cf_future *f, const cf_error *err, void *arg);

/**
 * Sets the hook for futures of this executor (fn NULL: ignore such errors).
 * Futures of an executor without its own hook, and standalone futures, use
 * the process-wide hook, which by default prints one line to stderr.
 * Returns CF_OK, CF_ENOMEM or CF_EINVAL.
 */
CF_API int cf_executor_set_error_hook(cf_executor *ex, cf_error_hook fn,
                                      void *arg);
/** Sets the process-wide hook (fn NULL: ignore); not thread-safe against
 *  failing futures being freed at the same moment: call it at start-up. */
CF_API void cf_set_default_error_hook(cf_error_hook fn, void *arg);

/**
 * Starts recording the timeline of every executor: when each task was
 * queued, started and ended, on which worker.  cf_trace_stop writes it to
 * `path` in the Trace Event JSON format (open it in ui.perfetto.dev or
 * chrome://tracing).  Setting CFUTURES_TRACE=path in the environment does
 * the same for the whole run (written at exit; if the path cannot be
 * written, one line on stderr says so and nothing is recorded).  When off,
 * recording costs one relaxed atomic load per task.  The file is created
 * (empty) at once: CF_EINVAL if path is NULL, empty or cannot be written;
 * CF_OK; CF_ENOMEM.
 */
CF_API int cf_trace_start(const char *path);
/** Stops recording and writes the file: CF_OK, CF_ESTATE if not
 *  recording, CF_EINVAL if the file cannot be written. */
CF_API int cf_trace_stop(void);

/* ------------------------------------------------------------------------ */
/* Process pool                                                              */
/* ------------------------------------------------------------------------ */

/** The most workers a process pool may have: a larger max_workers is
 *  CF_EINVAL (the default, the CPU count, is capped to it).  Per-worker
 *  state is allocated as workers start, never for max_workers up front. */
#define CF_PROCESS_POOL_MAX_WORKERS 4096

/** Options of a process pool.  Zero-initialise; every zero means default. */
typedef struct cf_process_pool_opts {
    /** Worker processes, 1 .. CF_PROCESS_POOL_MAX_WORKERS; 0 means the
     *  CPUs this process may run on (sched_getaffinity), as Python. */
    int max_workers;
    /** Runs once in each worker before its first task, with a copy of
     *  initarg (initarg_len bytes).  A raise (cf_raise) or a crash breaks
     *  the pool: pending futures end with CF_EBROKEN, submits fail with
     *  CF_EBROKEN (BrokenProcessPool). */
    cf_task_fn initializer;
    const void *initarg; /**< the initializer's argument (copied) */
    size_t initarg_len;  /**< its length in bytes */
    /** A worker is replaced after this many tasks (a chunk of a map
     *  counts as one, as in Python); 0 = never. */
    int max_tasks_per_child;
    /** Default for cf_task_opts.retries: re-run a task whose worker
     *  crashed up to this many times, each on a fresh worker. */
    int max_retries;
    /** Seconds a worker may sit idle (nothing queued for it) before it
     *  exits, its process and descriptors going back to the system;
     *  workers start again on demand.  0 (or CF_FOREVER) = keep them, as
     *  Python does.  For servers with bursty load (the guide's "Elastic
     *  pools"). */
    double idle_timeout;
} cf_process_pool_opts;

/**
 * Creates a process pool (ProcessPoolExecutor), with crash isolation: a
 * task that dies (signal, _exit, killed from outside) fails only its own
 * future, with CF_ECRASHED (cf_error.code is -signal, or the exit status;
 * the message names the worker pid, the signal or status and the task);
 * the worker is replaced and the pool keeps serving.  Python breaks the
 * whole pool instead.  cf_task_opts.time_limit kills a task's worker when
 * the task runs too long (the future ends with CF_ETIMEDOUT).
 *
 * What a worker sees: workers are fresh copies of this program, started
 * with posix_spawn of the image this process runs (safe in a program that
 * runs other threads: nothing is forked while another thread holds a
 * lock).  Deleting or replacing the executable while pools run does not
 * matter (the image is held open), nor starting the program through the
 * dynamic loader (workers start through it too).  Each worker leads its
 * own process group: a time limit, cf_kill_task and cf_terminate_workers /
 * cf_kill_workers signal the group, so children a task started go with
 * its worker; the worker's socket is close-on-exec, so they inherit no
 * descriptor of the pool.  A crash is reported with its signal even when
 * the program ignores SIGCHLD or reaps children itself (the worker notes
 * the signal in memory shared with the parent); an exit status that
 * someone else collected is reported as unavailable.  A worker
 * runs the program's static initializers and constructors, never main();
 * then the initializer; then tasks.  So globals hold their initial values,
 * not what main set them to: pass what a task needs as its argument or
 * set it up in the initializer.  Replacement workers start the same way.
 * Task functions travel as (module, build-id, offset) and are checked in
 * the worker before it calls them.  stdin is /dev/null; stdout and stderr
 * are the parent's; SIGINT is ignored (Ctrl-C goes to the parent, whose
 * program decides: see the README); a worker exits within a second once
 * the parent is gone, even after SIGKILL.
 *
 * How tasks reach workers: each worker shares memory with the parent,
 * task slots one way and a result ring the other (an argument or result
 * above 256 KiB goes through the worker's socket instead).  To keep
 * workers busy, the pool hands a worker tasks ahead of time (many while
 * tasks are short, one behind the running one otherwise).  Such a task is
 * only queued there: it stays pending (cf_running() is false) until the
 * worker starts it, cf_cancel() takes it back, cf_map_free() cancels it,
 * and a worker that goes idle takes it over, so a short task never waits
 * behind a long one while another worker idles.
 *
 * Done callbacks of process-pool futures run on the pool's manager
 * thread: a callback must not block on another future of the same
 * process pool.  NULL on error (cf_last_error()): CF_EINVAL (a negative
 * option, max_workers above CF_PROCESS_POOL_MAX_WORKERS, max_retries above
 * 255, an initializer in no loaded module), CF_ENOMEM.
 */
CF_API cf_executor *cf_process_pool(const cf_process_pool_opts *opts);

/* ------------------------------------------------------------------------ */
/* wait and as_completed                                                     */
/* ------------------------------------------------------------------------ */

/** When cf_wait returns (its return_when argument). */
typedef enum cf_return_when {
    CF_FIRST_COMPLETED = 1, /**< any future finished or cancelled */
    CF_FIRST_EXCEPTION = 2, /**< any finished with an error, or all done */
    CF_ALL_COMPLETED = 3,   /**< all finished or cancelled */
} cf_return_when;

/**
 * Waits for futures (concurrent.futures.wait).  fs holds n futures from
 * any executors, standalone ones too; a future listed twice counts once.
 * Blocks until the return_when condition holds or the timeout expires.
 * On return, done[0..*ndone) and not_done[0..*nnot_done) (each array has
 * room for n; either may be NULL if not wanted) hold the distinct futures
 * in input order, borrowed from fs.
 * Returns CF_OK when the condition holds, CF_ETIMEDOUT when the timeout
 * expired first (both sets are still filled), CF_EINVAL for a NULL fs with
 * n > 0, a NULL entry, a bad timeout or return_when, CF_ENOMEM.  n == 0 is
 * valid and returns at once, as in Python.  Never polls: costs O(n).
 */
CF_API int cf_wait(cf_future *const *fs, size_t n, double timeout,
                   cf_return_when return_when, cf_future **done, size_t *ndone,
                   cf_future **not_done, size_t *nnot_done);

/** An as_completed iterator.  Use from one thread at a time. */
typedef struct cf_as_completed cf_as_completed;

/**
 * Starts iterating over futures as they complete (as_completed).  Futures
 * already done come first, in input order; duplicates are yielded once.
 * The timeout counts for the whole iteration, from this call.  The
 * iterator holds a reference to each future until it is freed.  NULL on
 * error (cf_last_error(): CF_EINVAL, CF_ENOMEM).
 */
CF_API cf_as_completed *cf_as_completed_new(cf_future *const *fs, size_t n,
                                            double timeout);
/**
 * Adds futures to a running iteration (duplicates of futures already in it
 * are ignored).  Returns CF_OK, CF_EINVAL, CF_ENOMEM.
 */
CF_API int cf_as_completed_add(cf_as_completed *it, cf_future *const *fs,
                               size_t n);
/**
 * Next completed future, blocking until one is done.  *out is borrowed
 * (valid until the iterator is freed).  Returns CF_OK, CF_END when every
 * future has been yielded, CF_ETIMEDOUT when the overall timeout expired
 * first (iteration may go on if the caller wishes, with a zero timeout).
 */
CF_API int cf_as_completed_next(cf_as_completed *it, cf_future **out);
/**
 * Drains up to max futures that are done now, without blocking (the
 * completion queue).  Returns how many were stored in out (borrowed), 0 if
 * none is ready.
 */
CF_API size_t cf_as_completed_drain(cf_as_completed *it, cf_future **out,
                                    size_t max);
/**
 * A file descriptor for event loops (epoll, poll, libuv's uv_poll_t, GLib):
 * it is readable exactly while at least one done future waits to be taken
 * with cf_as_completed_drain (or _next).  Watch it for readability, then
 * drain until drain returns 0; the fd stops being readable once the queue
 * is empty.  Do not read or write it yourself.
 *
 * An eventfd (EFD_NONBLOCK | EFD_CLOEXEC), made on the first call (later
 * calls return the same fd), owned by the iterator and closed by
 * cf_as_completed_free (remove it from your loop first).  Costs: none
 * until asked for; then one write when the queue becomes non-empty and
 * one read when it is emptied, never one per future.  The overall timeout
 * of cf_as_completed_new is not signalled on the fd: an event loop keeps
 * its own timers.  Returns the fd, CF_EINVAL (NULL it) or CF_ENOMEM (no
 * descriptor could be made).  Never blocks.
 */
CF_API int cf_as_completed_fd(cf_as_completed *it);

/** Number of futures not yet yielded. */
CF_API size_t cf_as_completed_pending(const cf_as_completed *it);
/**
 * Draws a progress bar ("label [#####.....] 12/64 3.2s") on stderr as
 * futures are yielded, when stderr is a terminal (or the environment has
 * CFUTURES_PROGRESS=always); label NULL turns it off.  The label must stay
 * valid while the iterator lives.
 */
CF_API void cf_as_completed_progress(cf_as_completed *it, const char *label);
/** Frees the iterator: removes its waiters and drops its references. */
CF_API void cf_as_completed_free(cf_as_completed *it);

/* ------------------------------------------------------------------------ */
/* Continuations                                                             */
/* ------------------------------------------------------------------------ */

/** cf_then flags. */
enum {
    /** Run the continuation even when the first future failed or was
     *  cancelled (its argument is then empty; see cf_antecedent). */
    CF_THEN_ALWAYS = 1u << 0,
};

/**
 * A future of fn applied to f's result: when f finishes, fn runs with a
 * copy of f's result bytes as its argument, on executor ex, or inline in
 * the thread that completed f if ex is NULL.  An error or cancellation of
 * f passes to the new future without running fn (unless CF_THEN_ALWAYS).
 * No thread blocks waiting for f; chains of any length use constant stack.
 * If f is released while still pending, the new future ends with
 * CF_EBROKEN.  If ex is shut down or freed before f completes, the new
 * future ends with CF_ESHUTDOWN and fn does not run (ex may be freed at
 * any time: the continuation keeps its memory valid until it fires).
 * The caller owns the returned future; f may be released at once.  NULL on
 * error (cf_last_error(): CF_EINVAL, CF_ENOMEM).
 */
CF_API cf_future *cf_then(cf_future *f, cf_executor *ex, cf_task_fn fn,
                          unsigned flags);

/** Inside an inline continuation (cf_then with ex == NULL): the future it
 *  continues (borrowed), to read its outcome.  NULL in other tasks. */
CF_API cf_future *cf_antecedent(cf_call *c);

/**
 * A future that finishes (with an empty result, CF_OK) once every future
 * of fs is done -- finished, failed or cancelled: inspect them for their
 * outcomes.  n == 0 gives a finished future.  The inputs may be released
 * at once; if one is freed while pending, the result ends with CF_EBROKEN.
 * NULL on error (CF_EINVAL, CF_ENOMEM).
 */
CF_API cf_future *cf_when_all(cf_future *const *fs, size_t n);

/**
 * A future whose int64 result is the index in fs of the first future that
 * is done (finished, failed or cancelled); -1 when n == 0.  Read it with
 * cf_result_i64.  NULL on error (CF_EINVAL, CF_ENOMEM).
 */
CF_API cf_future *cf_when_any(cf_future *const *fs, size_t n);

/* ------------------------------------------------------------------------ */
/* map                                                                       */
/* ------------------------------------------------------------------------ */

/** A map in progress (Executor.map's result iterator). One thread at a time. */
typedef struct cf_map cf_map;

/** Options of a map.  Zero-initialise; every zero means default. */
typedef struct cf_map_opts {
    /** Seconds for the whole map, counted from its creation; 0 = none. */
    double timeout;
    /** Items per task sent to a worker; 0 means 1.  On a process pool a
     *  chunk of items is one task: its items run in order on one worker
     *  and their results come back together, with no future per item
     *  (cf_map_next makes one only when asked for *out).  If the worker
     *  dies during a chunk, the item it was running fails alone (or is
     *  retried, cf_process_pool_opts.max_retries), the items done keep
     *  their results and the rest of the chunk runs on another worker.
     *  The MPI pool sends a chunk in one message. */
    size_t chunksize;
    /** Items submitted ahead of the consumer (Python 3.14's buffersize).
     *  0 means 4 x max_workers x chunksize, and at least 256 when each
     *  item is its own task (chunksize 1, or a thread pool: a shallow
     *  window of trivial tasks keeps the consumer waiting); SIZE_MAX
     *  submits everything at once, as Python without buffersize (over
     *  cf_map_gen, at most 65536 ahead). */
    size_t buffersize;
    /** Python fails fast: the first error ends the map (the rest is
     *  cancelled).  With continue_on_error, cf_map_next reports the error
     *  of item i and the map goes on with item i+1. */
    bool continue_on_error;
    /** A label turns on a progress bar on stderr (when it is a terminal,
     *  or CFUTURES_PROGRESS=always); NULL: none.  Must outlive the map. */
    const char *progress;
} cf_map_opts;

/**
 * Maps fn over n items of item_size bytes each, laid out contiguously in
 * items (copied item by item as tasks are submitted; items must stay valid
 * until cf_map_free).  NULL on error (cf_last_error(): CF_EINVAL,
 * CF_ESHUTDOWN, CF_ENOMEM).  A submit that fails later (the executor shut
 * down or freed meanwhile: the map keeps the executor's memory valid)
 * surfaces as that item's error (CF_ESHUTDOWN) in cf_map_next.
 */
CF_API cf_map *cf_map_array(cf_executor *ex, cf_task_fn fn, const void *items,
                            size_t item_size, size_t n,
                            const cf_map_opts *opts);
/** cf_map_array over an int64 array. */
CF_API cf_map *cf_map_i64(cf_executor *ex, cf_task_fn fn, const int64_t *items,
                          size_t n, const cf_map_opts *opts);

/**
 * An input generator for cf_map_gen: stores the next item (borrowed until
 * the next call) in *data / *len and returns 1, or returns 0 at the end.
 * To report that the input itself failed (Python: the iterable raised),
 * return a negative value: the map yields the items read before it, then
 * one more item that fails with CF_ETASK, whose cf_error.code is that
 * value, then ends (the generator is not called again).  Any other return
 * value counts as the end.  Called from the thread that calls cf_map_gen /
 * cf_map_next.
 */
typedef int (*cf_input_fn)(void *ctx, const void **data, size_t *len);
/** Maps fn over a lazily pulled input: only buffersize items are read
 *  ahead of the consumer, so an endless input is fine. */
CF_API cf_map *cf_map_gen(cf_executor *ex, cf_task_fn fn, cf_input_fn next,
                          void *ctx, const cf_map_opts *opts);

/**
 * Takes the next result, in input order, blocking until it is done (or the
 * map's timeout).  *out (may be NULL) is the item's future, borrowed until
 * the next call or cf_map_free.  Returns the item's status: CF_OK, or the
 * error it ended with (CF_ETASK, ...: see cf_exception on *out); CF_END
 * when all items were taken; CF_ETIMEDOUT when the map's timeout expired.
 * In fail-fast mode an error or timeout ends the map: the remaining items
 * are cancelled and later calls return CF_END.
 */
CF_API int cf_map_next(cf_map *m, cf_future **out);
/** cf_map_next for int64 results. */
CF_API int cf_map_next_i64(cf_map *m, int64_t *out);
/** cf_map_next for double results. */
CF_API int cf_map_next_f64(cf_map *m, double *out);
/** Stops the map (cancels what has not started) and frees it.  Never
 *  blocks on running tasks.  NULL is ignored. */
CF_API void cf_map_free(cf_map *m);

#ifdef __cplusplus
}
#endif

#endif /* CFUTURES_H */

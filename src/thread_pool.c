/*
 * thread_pool.c -- the thread pool executor (ThreadPoolExecutor).
 *
 * One FIFO queue of futures (linked through cf_future.next, so queueing
 * allocates nothing), one mutex, two condition variables:
 *
 *   work_cv   idle workers (and helping waiters, see internal.h) sleep here
 *   space_cv  submitters sleep here while a bounded queue is full, and
 *             cf_shutdown(wait) sleeps here until the workers have exited
 *
 * Threads start lazily: a submit starts one when more tasks are queued than
 * threads are idle, up to max_workers (Python's rule).  A submit signals the
 * condition variable only when a worker sleeps, so a busy pool makes no
 * system call per task.
 *
 * Lock order: a future's stripe lock -> pool lock (a helping waiter is
 * woken by a listener that runs under the stripe lock).  Tasks and
 * callbacks run with no lock held.
 */
#include "internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct thread_pool thread_pool;

typedef struct worker {
    cf_helper helper; /* first: cf__current_helper points here */
    thread_pool *pool;
    pthread_t tid;
    int index;
    bool started; /* tid is valid and must be joined */
} worker;

struct thread_pool {
    cf_executor base;
    pthread_mutex_t lock;
    pthread_cond_t work_cv;
    pthread_cond_t space_cv;
    cf_future *head, *tail; /* the queue */
    _Atomic size_t queued;  /* written under lock; read without by spinners */
    size_t max_queued;      /* 0: unbounded */
    bool fail_when_full;
    bool shutdown;
    bool broken;
    bool orphaned;         /* freed from one of its own threads: the last
                              thread to exit frees the pool */
    int nthreads;          /* threads started */
    int alive;             /* threads not yet exited */
    int idle;              /* threads sleeping on work_cv */
    int spinning;          /* idle threads polling the queue before sleeping */
    _Atomic int finishing; /* threads publishing a result, about to look
                              for work (cf__run_future) */
    int self_waiters;      /* pool threads inside cf_shutdown(wait) */
    int space_waiters;     /* submitters sleeping on space_cv */
    int (*initializer)(void *);
    void *initarg;
    char prefix[32];
    worker *workers; /* max_workers slots */
};

static thread_pool *pool_of(cf_executor *ex)
{
    return (thread_pool *)ex;
}

/* The worker of `pool` running on this thread, or NULL. */
static worker *self_in(thread_pool *pool)
{
    cf_helper *h = cf__current_helper;
    if (h == NULL || h->ex != &pool->base)
        return NULL;
    return (worker *)h;
}

/* lock held */
static cf_future *pop_locked(thread_pool *p)
{
    cf_future *f = p->head;
    if (f == NULL)
        return NULL;
    p->head = f->next;
    if (p->head == NULL)
        p->tail = NULL;
    f->next = NULL;
    p->queued--;
    if (p->space_waiters > 0)
        pthread_cond_signal(&p->space_cv);
    return f;
}

/* lock held; returns the detached queue */
static cf_future *take_all_locked(thread_pool *p)
{
    cf_future *all = p->head;
    p->head = p->tail = NULL;
    p->queued = 0;
    if (p->space_waiters > 0)
        pthread_cond_broadcast(&p->space_cv);
    return all;
}

static bool run_and_release(cf_future *f, _Atomic int *finishing)
{
    bool counted = cf__run_future(f, finishing);
    cf_future_release(f);
    return counted;
}

/* ------------------------------------------------------------------------ */
/* Helping (internal.h): a pool thread that waits runs queued tasks          */
/* ------------------------------------------------------------------------ */

static bool run_one_locked(cf_helper *h)
{
    thread_pool *p = ((worker *)h)->pool;
    cf_future *f = pop_locked(p);
    if (f == NULL)
        return false;
    pthread_mutex_unlock(&p->lock);
    run_and_release(f, NULL);
    pthread_mutex_lock(&p->lock);
    return true;
}

static int sleep_locked(cf_helper *h, const cf_deadline *d)
{
    thread_pool *p = ((worker *)h)->pool;
    p->idle++;
    int rc = cf__cond_wait(&p->work_cv, &p->lock, d);
    p->idle--;
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Workers                                                                   */
/* ------------------------------------------------------------------------ */

static void free_pool(thread_pool *p)
{
    pthread_mutex_destroy(&p->lock);
    pthread_cond_destroy(&p->work_cv);
    pthread_cond_destroy(&p->space_cv);
    free(p->workers);
    free(p);
}

/* Initializer failed: the pool is broken (BrokenThreadPool).  Every queued
 * future ends with CF_EBROKEN; new submits fail. */
static void break_pool(thread_pool *p, int rc)
{
    pthread_mutex_lock(&p->lock);
    p->broken = true;
    cf_future *f = take_all_locked(p);
    pthread_cond_broadcast(&p->work_cv);
    pthread_mutex_unlock(&p->lock);
    while (f != NULL) {
        cf_future *next = f->next;
        f->next = NULL;
        cf__stats_started(&p->base);
        cf__stats_ended(&p->base, CF_EBROKEN);
        cf__future_fail(f, CF_EBROKEN, rc,
                        "a thread initializer failed (returned %d)", rc);
        cf_future_release(f);
        f = next;
    }
}

/*
 * Before sleeping, an idle worker polls the queue for a few microseconds
 * without the lock.  Work that arrives meanwhile is taken with no system
 * call on either side: the submitter does not signal a spinning worker, and
 * the worker does not sleep.  A wake-up costs two system calls and a
 * context switch (several microseconds here), more than most fine-grained
 * tasks.  Called and returns with the lock held.
 */
#define SPIN_NS 20000

static void spin_for_work(thread_pool *p)
{
    p->spinning++;
    pthread_mutex_unlock(&p->lock);
    uint64_t until = cf__now_ns() + SPIN_NS;
    for (unsigned i = 1;; i++) {
        if (atomic_load_explicit(&p->queued, memory_order_relaxed) > 0 ||
            atomic_load_explicit(&p->base.shut_down, memory_order_relaxed))
            break;
        cf__cpu_relax();
        if ((i & 63) == 0 && cf__now_ns() > until)
            break;
    }
    pthread_mutex_lock(&p->lock);
    p->spinning--;
    /* The caller looks at the queue and the flags again, under the lock:
     * a submit that saw us spinning did not signal. */
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    thread_pool *p = w->pool;
    char name[48];
    snprintf(name, sizeof name, "%s_%d", p->prefix, w->index);
    name[15] = '\0'; /* the kernel's limit for thread names */
    pthread_setname_np(pthread_self(), name);
    cf__current_helper = &w->helper;
    cf__trace_tid = w->index;

    int rc = p->initializer ? p->initializer(p->initarg) : 0;
    if (rc != 0)
        break_pool(p, rc);

    /* Busy time is counted from wake-up to sleep, not per task: two clock
     * reads per sleep instead of two per task. */
    uint64_t busy_since = cf__now_ns();
    bool spun = false; /* spun since the last task: sleep next time */
    pthread_mutex_lock(&p->lock);
    while (rc == 0) {
        cf_future *f = pop_locked(p);
        if (f != NULL) {
            /* One task at a time, in submission order: a task taken in a
             * batch could wait behind a long one while a thread idles. */
            spun = false;
            pthread_mutex_unlock(&p->lock);
            /* From the moment the result is published, whoever waited for
             * it may submit again: count this thread as about to be idle
             * so that the submit reuses it instead of starting another
             * (Python's idle-thread reuse). */
            bool counted = run_and_release(f, &p->finishing);
            pthread_mutex_lock(&p->lock);
            if (counted)
                atomic_fetch_sub_explicit(&p->finishing, 1,
                                          memory_order_relaxed);
            continue;
        }
        cf__stats_busy(&p->base, cf__now_ns() - busy_since);
        if (p->shutdown || p->broken)
            break;
        if (!spun) { /* then look at the queue and the flags again */
            spun = true;
            spin_for_work(p);
            continue;
        }
        spun = false;
        p->idle++;
        pthread_cond_wait(&p->work_cv, &p->lock);
        p->idle--;
        busy_since = cf__now_ns();
    }
    cf__current_helper = NULL;
    p->alive--;
    bool last_orphan = p->orphaned && p->alive == 0;
    pthread_cond_broadcast(&p->space_cv); /* cf_shutdown(wait) watches alive */
    pthread_mutex_unlock(&p->lock);
    if (last_orphan)
        free_pool(p);
    return NULL;
}

/* lock held.  Starts one more worker; false if the system refused. */
static bool start_worker_locked(thread_pool *p)
{
    worker *w = &p->workers[p->nthreads];
    w->pool = p;
    w->index = p->nthreads;
    w->helper = (cf_helper){
        .lock = &p->lock,
        .cv = &p->work_cv,
        .run_one_locked = run_one_locked,
        .sleep_locked = sleep_locked,
        .ex = &p->base,
    };
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 8u << 20); /* deep nested waits */
    int rc = pthread_create(&w->tid, &attr, worker_main, w);
    pthread_attr_destroy(&attr);
    if (rc != 0)
        return false;
    w->started = true;
    p->nthreads++;
    p->alive++;
    return true;
}

/* ------------------------------------------------------------------------ */
/* vtable                                                                    */
/* ------------------------------------------------------------------------ */

static int tp_submit(cf_executor *ex, cf_future *f, unsigned flags)
{
    thread_pool *p = pool_of(ex);
    pthread_mutex_lock(&p->lock);
    for (;;) {
        if (p->broken) {
            pthread_mutex_unlock(&p->lock);
            return CF_EBROKEN;
        }
        if (p->shutdown) {
            pthread_mutex_unlock(&p->lock);
            return CF_ESHUTDOWN;
        }
        if (p->max_queued == 0 || p->queued < p->max_queued)
            break;
        if (p->fail_when_full || (flags & CF_NOWAIT)) {
            pthread_mutex_unlock(&p->lock);
            return CF_EFULL;
        }
        worker *self = self_in(p);
        if (self != NULL) { /* our own pool is full: make room ourselves */
            run_one_locked(&self->helper);
            continue;
        }
        p->space_waiters++;
        pthread_cond_wait(&p->space_cv, &p->lock);
        p->space_waiters--;
    }
    f->next = NULL;
    if (p->tail)
        p->tail->next = f;
    else
        p->head = f;
    p->tail = f;
    p->queued++;
    if ((size_t)(p->idle + p->spinning) + (size_t)atomic_load(&p->finishing) <
            p->queued &&
        p->nthreads < p->base.max_workers && !start_worker_locked(p) &&
        p->nthreads == 0) {
        /* No thread at all and none can start: undo, report. */
        p->head = p->tail = NULL;
        p->queued = 0;
        pthread_mutex_unlock(&p->lock);
        return CF_ENOMEM;
    }
    if (p->idle > 0 && p->spinning == 0) /* a spinner will see it */
        pthread_cond_signal(&p->work_cv);
    pthread_mutex_unlock(&p->lock);
    return CF_OK;
}

static void tp_shutdown(cf_executor *ex, bool cancel_futures)
{
    thread_pool *p = pool_of(ex);
    pthread_mutex_lock(&p->lock);
    p->shutdown = true;
    cf_future *cancelled = cancel_futures ? take_all_locked(p) : NULL;
    pthread_cond_broadcast(&p->work_cv);
    pthread_cond_broadcast(&p->space_cv);
    pthread_mutex_unlock(&p->lock);

    while (cancelled != NULL) { /* callbacks run: no lock held */
        cf_future *next = cancelled->next;
        cancelled->next = NULL;
        cf_cancel(cancelled);
        cf__stats_cancelled(ex);
        cf_future_release(cancelled);
        cancelled = next;
    }
}

static int tp_wait(cf_executor *ex, const cf_deadline *d)
{
    thread_pool *p = pool_of(ex);
    int rc = CF_OK;
    pthread_mutex_lock(&p->lock);
    worker *self = self_in(p);
    if (self != NULL)
        p->self_waiters++; /* do not wait for ourselves */
    while (p->alive > p->self_waiters) {
        p->space_waiters++;
        int e = cf__cond_wait(&p->space_cv, &p->lock, d);
        p->space_waiters--;
        if (e == ETIMEDOUT && p->alive > p->self_waiters) {
            rc = CF_ETIMEDOUT;
            break;
        }
    }
    if (self != NULL)
        p->self_waiters--;
    pthread_mutex_unlock(&p->lock);
    return rc;
}

static void tp_destroy(cf_executor *ex)
{
    thread_pool *p = pool_of(ex);
    /* Threads still run when this is one of them (freed from a task or
     * callback) or when the pool was shut down without waiting: they
     * finish the queued work, and the last one to leave its loop frees the
     * pool.  The threads are detached under the lock, before any of them
     * can see `orphaned` and free the pool. */
    pthread_mutex_lock(&p->lock);
    bool running = p->alive > 0;
    if (running) {
        for (int i = 0; i < p->nthreads; i++)
            if (p->workers[i].started)
                pthread_detach(p->workers[i].tid);
        p->orphaned = true;
    }
    pthread_mutex_unlock(&p->lock);
    if (running)
        return;
    for (int i = 0; i < p->nthreads; i++)
        if (p->workers[i].started)
            pthread_join(p->workers[i].tid, NULL);
    free_pool(p);
}

static const cf_executor_vtable thread_pool_vtable = {
    .kind = "thread",
    .submit = tp_submit,
    .shutdown = tp_shutdown,
    .wait = tp_wait,
    .destroy = tp_destroy,
};

cf_executor *cf_thread_pool(const cf_thread_pool_opts *opts)
{
    static const cf_thread_pool_opts defaults;
    if (opts == NULL)
        opts = &defaults;
    if (opts->max_workers < 0)
        return cf__fail_null(CF_EINVAL);
    int n = opts->max_workers;
    if (n == 0) {
        n = cf__cpu_count() + 4;
        if (n > 32)
            n = 32;
    }
    thread_pool *p = calloc(1, sizeof *p);
    worker *ws = calloc((size_t)n, sizeof *ws);
    if (p == NULL || ws == NULL) {
        free(p);
        free(ws);
        return cf__fail_null(CF_ENOMEM);
    }
    cf__executor_init(&p->base, &thread_pool_vtable, n);
    p->workers = ws;
    /* Adaptive: spins a little before sleeping in the kernel.  The lock is
     * held for a few instructions, so a contended acquisition almost
     * always gets it while spinning, without the futex wait and wake. */
    pthread_mutexattr_t ma;
    pthread_mutexattr_init(&ma);
    pthread_mutexattr_settype(&ma, PTHREAD_MUTEX_ADAPTIVE_NP);
    pthread_mutex_init(&p->lock, &ma);
    pthread_mutexattr_destroy(&ma);
    cf__cond_init(&p->work_cv); /* timed waits use CLOCK_MONOTONIC */
    cf__cond_init(&p->space_cv);
    p->max_queued = opts->max_queued;
    p->fail_when_full = opts->fail_when_full;
    p->initializer = opts->initializer;
    p->initarg = opts->initarg;
    snprintf(p->prefix, sizeof p->prefix, "%s",
             opts->thread_name_prefix ? opts->thread_name_prefix : "cf_thread");
    return &p->base;
}

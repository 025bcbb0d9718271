/*
 * thread_pool.c -- the thread pool executor (ThreadPoolExecutor): a
 * work-stealing scheduler.
 *
 * Queues.  Each thread owns a Chase-Lev deque (deque.h).  A task submitted
 * from one of the pool's own threads goes on that thread's deque: its owner
 * pops the newest first (depth-first, like a plain recursive call), other
 * threads steal the oldest.  A task submitted from anywhere else goes on
 * the injection queue, so external submissions start in submission order,
 * as Python's.  A thread looks for work in its own deque, then steals,
 * then takes from the injection queue.
 *
 * The injection queue is the lane, an intrusive multi-producer queue
 * (Vyukov's MPSC queue, linked through cf_future.next): a submitter pushes
 * with one atomic exchange and no lock, and pool threads take from it
 * under the pool lock.  Once a task with a priority has come, the pool
 * orders by priority for good (fqueue.c, under the lock), and the lane
 * only carries what racing submitters pushed meanwhile.  A submit takes
 * the pool lock only to wake or start a thread, when the pool is not fully
 * started, or has an idle_timeout, or in priority mode.  Shutdown and a
 * broken initializer wait for submitters that are between their check of
 * the pool's state and their push (lane_pushers), so no task lands in the
 * lane after the pool stopped taking it.
 *
 * Helping waits (internal.h: cf_helper).  A pool thread that waits for a
 * future runs work meanwhile, in the same order, so it runs its own
 * children first.  It never starts a task while less than `margin` bytes
 * of its stack are left (stack_ok): then it sleeps until the future is
 * done.  When every thread of the pool is blocked that way and work is
 * queued, the pool starts a compensating thread (ForkJoinPool's managed
 * blocking), up to max_workers + CF_THREAD_POOL_COMPENSATION threads in
 * all; an extra thread exits when it finds nothing to do.  cfutures.h
 * states the guarantee.
 *
 * Sleeping.  An idle thread spins about 20 us, then sleeps on its own
 * condition variable, on the pool's list of sleepers.  A submit wakes one
 * sleeper only when no thread is spinning, so a busy pool makes no system
 * call per task.  The race between "I found no work, I sleep" and "I
 * pushed work, nobody sleeps" is closed Dekker-style with seq_cst
 * accesses: a sleeper registers (sleepers++) and then looks at the queues
 * once more; a pusher publishes the task and then reads spinning and
 * sleepers.  One of the two sees the other.  A spinner that finds work
 * wakes a sleeper if it was the last spinner (Go's scheduler does the
 * same), so a burst of submits gets every thread going.
 *
 * Lazy start (Python's rule): a submit starts a thread when the queued
 * external tasks outnumber the threads that could take them (`avail`:
 * threads that are not running a task, counted from the moment a running
 * task publishes its result).
 *
 * Lock order: a future's stripe lock -> a waiter's lock -> pool lock (a
 * helping waiter is woken by a listener that runs under the stripe lock).
 * Tasks and callbacks run with no lock held.
 */
#include "internal.h"

#include "deque.h"
#include "fqueue.h"

#include <errno.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Compensating threads beyond max_workers (cfutures.h says so). */
#define MAX_COMPENSATION CF_THREAD_POOL_COMPENSATION
#define DEFAULT_STACK (8u << 20)
#define MIN_STACK CF_THREAD_POOL_MIN_STACK
#define MAX_STACK (1ull << 30)
#define MIN_MARGIN (64u << 10)

typedef struct thread_pool thread_pool;

typedef struct worker {
    cf_helper helper; /* first: cf__current_helper points here */
    thread_pool *pool;
    cf_deque dq;
    pthread_cond_t cv; /* this thread sleeps here, idle or waiting */
    pthread_t tid;
    int index;
    bool started;  /* tid is valid and must be joined (lock) */
    bool running;  /* the thread has not exited (lock) */
    bool sleeping; /* on the pool's sleeper list (lock) */
    struct worker *next_sleeper;
    uintptr_t stack_limit; /* no task starts below this frame address */
    uint32_t rng;          /* victim selection */
    /* written by this thread alone, per task: on a line of its own */
    _Alignas(64) cf_stats_shard stats;
} worker;

struct thread_pool {
    cf_executor base;
    pthread_mutex_t lock;
    pthread_cond_t space_cv; /* bounded-queue submitters; shutdown(wait) */
    cf_fqueue q;             /* the injection queue in priority mode (lock) */
    _Atomic bool prio_mode;  /* q.by_priority, readable without the lock */
    _Atomic size_t injected; /* tasks in the lane and q */
    cf_future *handed;       /* handed off by blocked threads (lock) */
    _Atomic size_t nhanded;  /* its length (written under lock) */
    _Atomic size_t queued;   /* tasks in every queue; bounded pools only */
    size_t max_queued;       /* 0: unbounded */
    bool fail_when_full;
    _Atomic bool shutdown;
    _Atomic bool broken;
    bool orphaned;        /* freed from one of its own threads, or shut down
                             without waiting: the last thread to exit frees it */
    _Atomic int spinning; /* threads polling the queues before sleeping */
    _Atomic int sleepers; /* threads on the sleeper list */
    worker *sleep_list;   /* (lock) */
    _Atomic int avail;    /* threads not running a task (see top) */
    _Atomic int alive;    /* threads not yet exited (written under lock) */
    _Atomic int blocked;  /* threads inside a wait (written under lock) */
    int self_waiters;     /* pool threads inside cf_shutdown(wait) */
    _Atomic int space_waiters;
    int (*initializer)(void *);
    void *initarg;
    char prefix[32];
    size_t stack_size;
    uint64_t idle_ns;      /* idle_timeout; 0 = forever */
    int cap;               /* slots: max_workers + MAX_COMPENSATION */
    _Atomic int nslots;    /* slots ever used: thieves look below it */
    worker *_Atomic *slot; /* cap entries; a worker is never freed before
                              the pool */
    /* The lane (see top); the pushers' end on a line of its own. */
    char pad_[64];
    _Atomic(cf_future *) lane_tail; /* pushed by any submitter */
    _Atomic int lane_pushers;       /* submitters about to push */
    char pad2_[64];
    cf_future *lane_head; /* (lock) */
    cf_future lane_stub;
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

static bool stopping(thread_pool *p)
{
    return atomic_load_explicit(&p->shutdown, memory_order_relaxed) ||
           atomic_load_explicit(&p->broken, memory_order_relaxed);
}

/* May this thread start one more task on its stack? */
static CF_NOINLINE bool stack_ok(const worker *w)
{
    return (uintptr_t)__builtin_frame_address(0) > w->stack_limit;
}

/* ------------------------------------------------------------------------ */
/* Finding work                                                              */
/* ------------------------------------------------------------------------ */

/* A task left a queue: make room in a bounded pool. */
static void dequeued(thread_pool *p, size_t n)
{
    if (p->max_queued == 0)
        return;
    atomic_fetch_sub_explicit(&p->queued, n, memory_order_seq_cst);
    if (atomic_load_explicit(&p->space_waiters, memory_order_seq_cst) > 0) {
        pthread_mutex_lock(&p->lock);
        pthread_cond_broadcast(&p->space_cv);
        pthread_mutex_unlock(&p->lock);
    }
}

/* The lane: a push is an exchange of the tail and a store of the old
 * tail's link.  Between the two the lane looks shorter to the taker; the
 * pusher has already counted the task in `injected`, so threads keep
 * looking until the link lands. */
static void lane_push(thread_pool *p, cf_future *f)
{
    __atomic_store_n(&f->next, NULL, __ATOMIC_RELAXED);
    cf_future *prev = atomic_exchange_explicit(&p->lane_tail, f,
                                               memory_order_seq_cst);
    __atomic_store_n(&prev->next, f, __ATOMIC_RELEASE);
}

/* lock held.  The oldest task of the lane, or NULL (also while a push is
 * half done). */
static cf_future *lane_pop_locked(thread_pool *p)
{
    cf_future *head = p->lane_head, *stub = &p->lane_stub;
    cf_future *next = __atomic_load_n(&head->next, __ATOMIC_ACQUIRE);
    if (head == stub) {
        if (next == NULL)
            return NULL;
        p->lane_head = head = next;
        next = __atomic_load_n(&head->next, __ATOMIC_ACQUIRE);
    }
    if (next == NULL) { /* head is the last one: put the stub behind it */
        if (atomic_load_explicit(&p->lane_tail, memory_order_seq_cst) != head)
            return NULL; /* a push is half done */
        lane_push(p, stub);
        next = __atomic_load_n(&head->next, __ATOMIC_ACQUIRE);
        if (next == NULL)
            return NULL;
    }
    p->lane_head = next;
    head->next = NULL;
    return head;
}

/* lock held.  Moves what the lane holds to q, in its order. */
static void lane_to_queue_locked(thread_pool *p)
{
    cf_future *f;
    while ((f = lane_pop_locked(p)) != NULL)
        cf__fq_push(&p->q, f);
}

/* lock held.  The next external task: by priority once the pool is in
 * priority mode (the lane's stragglers join q first), else the lane's
 * oldest. */
static cf_future *inject_pop_locked(thread_pool *p)
{
    cf_future *f;
    if (p->q.by_priority) {
        lane_to_queue_locked(p);
        f = cf__fq_pop(&p->q);
    } else {
        f = lane_pop_locked(p);
    }
    if (f == NULL)
        return NULL;
    atomic_fetch_sub_explicit(&p->injected, 1, memory_order_seq_cst);
    return f;
}

/* Waits until no submitter is between its look at the pool's state and
 * its push: called after setting shutdown or broken. */
static void lane_quiesce(thread_pool *p)
{
    while (atomic_load_explicit(&p->lane_pushers, memory_order_seq_cst) > 0)
        sched_yield();
}

/* Tasks handed off by a thread blocked at its stack margin: its whole
 * deque, newest first (the order it would have run them in).  Taken
 * before stealing, so that the work goes on depth-first on a fresh stack
 * (see find_work). */
static cf_future *handed_pop(thread_pool *p)
{
    if (atomic_load_explicit(&p->nhanded, memory_order_seq_cst) == 0)
        return NULL;
    pthread_mutex_lock(&p->lock);
    cf_future *f = p->handed;
    if (f != NULL) {
        p->handed = f->next;
        f->next = NULL;
        atomic_fetch_sub_explicit(&p->nhanded, 1, memory_order_seq_cst);
    }
    pthread_mutex_unlock(&p->lock);
    return f;
}

static cf_future *inject_pop(thread_pool *p)
{
    if (atomic_load_explicit(&p->injected, memory_order_seq_cst) == 0)
        return NULL;
    pthread_mutex_lock(&p->lock);
    cf_future *f = inject_pop_locked(p);
    pthread_mutex_unlock(&p->lock);
    return f;
}

static uint32_t next_rand(uint32_t *s)
{
    uint32_t x = *s; /* xorshift32 */
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return *s = x;
}

/* Steals the oldest task of another thread, trying each once, from a
 * random one on; again while a race was lost. */
static cf_future *steal(thread_pool *p, worker *self)
{
    int n = atomic_load_explicit(&p->nslots, memory_order_acquire);
    if (n <= 1 && self != NULL)
        return NULL;
    uint32_t start = self ? next_rand(&self->rng) : 0;
    for (int round = 0; round < 64; round++) {
        bool lost = false;
        for (int k = 0; k < n; k++) {
            worker *v = atomic_load_explicit(&p->slot[(start + k) % n],
                                             memory_order_acquire);
            if (v == NULL || v == self)
                continue;
            cf_future *f = cf__deque_steal(&v->dq, &lost);
            if (f != NULL)
                return f;
        }
        if (!lost)
            break;
    }
    return NULL;
}

/* The next task for thread w: its own newest, a handed-off one, another's
 * oldest, or the injection queue's oldest.  A compensating thread (beyond
 * max_workers) does not steal: it is there to carry on the work of a
 * thread blocked at its margin, depth-first.  Were it to steal the oldest
 * task of a deque, the root of a large subtree, it would soon block at its
 * own margin, its replacement would steal another, and so on, up to the
 * compensation bound. */
static bool regular(thread_pool *p, const worker *w)
{
    return w->index < p->base.max_workers;
}

static cf_future *find_work(thread_pool *p, worker *w)
{
    cf_future *f = cf__deque_pop(&w->dq);
    if (f == NULL)
        f = handed_pop(p);
    if (f == NULL && regular(p, w))
        f = steal(p, w);
    if (f == NULL)
        f = inject_pop(p);
    if (f != NULL)
        dequeued(p, 1);
    return f;
}

/* Is there queued work anywhere?  A hint, except in the sleep protocol,
 * where its seq_cst loads pair with the pushers' (see top). */
static bool work_visible(thread_pool *p)
{
    if (atomic_load_explicit(&p->injected, memory_order_seq_cst) > 0 ||
        atomic_load_explicit(&p->nhanded, memory_order_seq_cst) > 0)
        return true;
    int n = atomic_load_explicit(&p->nslots, memory_order_acquire);
    for (int i = 0; i < n; i++) {
        worker *v = atomic_load_explicit(&p->slot[i], memory_order_acquire);
        if (v != NULL && cf__deque_nonempty(&v->dq))
            return true;
    }
    return false;
}

/* Is there queued work that thread w may take (find_work)?  A compensating
 * thread only looks at its own deque, the handed-off tasks and the
 * injection queue. */
static bool runnable(thread_pool *p, worker *w)
{
    if (regular(p, w))
        return work_visible(p);
    return cf__deque_nonempty(&w->dq) ||
           atomic_load_explicit(&p->nhanded, memory_order_seq_cst) > 0 ||
           atomic_load_explicit(&p->injected, memory_order_seq_cst) > 0;
}

/* ------------------------------------------------------------------------ */
/* Threads                                                                   */
/* ------------------------------------------------------------------------ */

static void *worker_main(void *arg);

/* lock held: wakes one sleeping thread (false if none). */
static bool wake_one_locked(thread_pool *p)
{
    worker *w = p->sleep_list;
    if (w == NULL)
        return false;
    p->sleep_list = w->next_sleeper;
    w->next_sleeper = NULL;
    w->sleeping = false;
    atomic_fetch_sub_explicit(&p->sleepers, 1, memory_order_seq_cst);
    pthread_cond_signal(&w->cv);
    return true;
}

/* lock held */
static void sleep_list_add_locked(thread_pool *p, worker *w)
{
    w->sleeping = true;
    w->next_sleeper = p->sleep_list;
    p->sleep_list = w;
    atomic_fetch_add_explicit(&p->sleepers, 1, memory_order_seq_cst);
}

/* lock held */
static void sleep_list_remove_locked(thread_pool *p, worker *w)
{
    if (!w->sleeping)
        return;
    for (worker **pp = &p->sleep_list; *pp != NULL; pp = &(*pp)->next_sleeper)
        if (*pp == w) {
            *pp = w->next_sleeper;
            break;
        }
    w->next_sleeper = NULL;
    w->sleeping = false;
    atomic_fetch_sub_explicit(&p->sleepers, 1, memory_order_seq_cst);
}

static void helper_init(worker *w);

/* lock held.  Starts one more thread in the first free slot; false if
 * every slot is taken or the system refused. */
static bool start_thread_locked(thread_pool *p)
{
    int alive = atomic_load_explicit(&p->alive, memory_order_relaxed);
    if (alive >= p->cap)
        return false;
    int i = 0;
    worker *w = NULL;
    for (; i < p->cap; i++) {
        w = atomic_load_explicit(&p->slot[i], memory_order_relaxed);
        if (w == NULL || !w->running)
            break;
    }
    if (i == p->cap)
        return false;
    if (w == NULL) {
        w = aligned_alloc(_Alignof(worker), sizeof *w); /* stats' line */
        if (w == NULL)
            return false;
        memset(w, 0, sizeof *w);
        if (cf__cond_init(&w->cv) != 0) {
            free(w);
            return false;
        }
        cf__deque_init(&w->dq);
        w->pool = p;
        w->index = i;
        w->rng = 0x9E3779B9u * (uint32_t)(i + 1);
        helper_init(w);
        atomic_store_explicit(&p->slot[i], w, memory_order_release);
        if (atomic_load_explicit(&p->nslots, memory_order_relaxed) <= i)
            atomic_store_explicit(&p->nslots, i + 1, memory_order_release);
    } else if (w->started) { /* an extra thread that exited: reap it */
        pthread_join(w->tid, NULL);
        w->started = false;
    }
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, p->stack_size);
    int rc = pthread_create(&w->tid, &attr, worker_main, w);
    pthread_attr_destroy(&attr);
    if (rc != 0)
        return false;
    if (p->orphaned) /* nobody will join it */
        pthread_detach(w->tid);
    else
        w->started = true;
    w->running = true;
    atomic_fetch_add_explicit(&p->alive, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&p->base.stats.workers, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&p->base.stats.worker_starts, 1,
                              memory_order_relaxed);
    atomic_fetch_add_explicit(&p->avail, 1, memory_order_seq_cst);
    return true;
}

/* lock held.  Queued work that the caller cannot run: make sure a thread
 * will.  Wakes a sleeper, or starts a thread (lazily up to max_workers,
 * then as compensation when every thread is blocked in a wait). */
static void ensure_progress_locked(thread_pool *p, bool lazy_start)
{
    if (atomic_load_explicit(&p->spinning, memory_order_seq_cst) > 0)
        return;
    if (wake_one_locked(p))
        return;
    int alive = atomic_load_explicit(&p->alive, memory_order_relaxed);
    if ((lazy_start && alive < p->base.max_workers) ||
        alive == atomic_load_explicit(&p->blocked, memory_order_relaxed))
        start_thread_locked(p);
}

/* After a push by a pool thread: wake a sleeper if nobody spins, or start
 * a thread while fewer than max_workers run.  No lock, no system call on a
 * busy pool. */
static void notify(thread_pool *p)
{
    if (atomic_load_explicit(&p->spinning, memory_order_seq_cst) > 0)
        return;
    if (atomic_load_explicit(&p->sleepers, memory_order_seq_cst) == 0 &&
        atomic_load_explicit(&p->alive, memory_order_relaxed) >=
            p->base.max_workers)
        return;
    pthread_mutex_lock(&p->lock);
    ensure_progress_locked(p, true);
    pthread_mutex_unlock(&p->lock);
}

static void free_pool(thread_pool *p)
{
    for (int i = 0; i < p->cap; i++) {
        worker *w = atomic_load_explicit(&p->slot[i], memory_order_relaxed);
        if (w == NULL)
            continue;
        cf__deque_fini(&w->dq);
        pthread_cond_destroy(&w->cv);
        free(w);
    }
    pthread_mutex_destroy(&p->lock);
    pthread_cond_destroy(&p->space_cv);
    free((void *)p->slot);
    free(p);
}

/* lock held; detaches every queued task (injection queue and deques) as a
 * list linked through next, in no particular order. */
static cf_future *take_all_locked(thread_pool *p)
{
    cf_future *all = cf__fq_take_all(&p->q), **tail = &all, *f;
    size_t n = atomic_load_explicit(&p->injected, memory_order_relaxed);
    while (*tail != NULL)
        tail = &(*tail)->next;
    while ((f = lane_pop_locked(p)) != NULL) {
        *tail = f;
        tail = &f->next;
    }
    atomic_store_explicit(&p->injected, 0, memory_order_seq_cst);
    *tail = p->handed;
    n += atomic_load_explicit(&p->nhanded, memory_order_relaxed);
    while (*tail != NULL)
        tail = &(*tail)->next;
    p->handed = NULL;
    atomic_store_explicit(&p->nhanded, 0, memory_order_seq_cst);
    int ns = atomic_load_explicit(&p->nslots, memory_order_acquire);
    for (int i = 0; i < ns; i++) {
        worker *v = atomic_load_explicit(&p->slot[i], memory_order_acquire);
        if (v == NULL)
            continue;
        for (;;) {
            bool lost = false;
            f = cf__deque_steal(&v->dq, &lost);
            if (f == NULL && !lost)
                break;
            if (f == NULL)
                continue;
            f->next = NULL;
            *tail = f;
            tail = &f->next;
            n++;
        }
    }
    if (p->max_queued != 0 && n > 0) {
        atomic_fetch_sub_explicit(&p->queued, n, memory_order_seq_cst);
        pthread_cond_broadcast(&p->space_cv);
    }
    return all;
}

/* lock held */
static void wake_all_locked(thread_pool *p)
{
    while (wake_one_locked(p))
        ;
}

/* Initializer failed: the pool is broken (BrokenThreadPool).  Every queued
 * future ends with CF_EBROKEN; new submits fail. */
static void break_pool(thread_pool *p, int rc)
{
    atomic_store(&p->broken, true);
    lane_quiesce(p);
    pthread_mutex_lock(&p->lock);
    cf_future *f = take_all_locked(p);
    wake_all_locked(p);
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

/* lock held.  Thread w leaves the pool; true if it must free it (the last
 * thread of an orphaned pool).  Decided under the same lock as the reason
 * to leave, so that nobody counts on a thread that is gone: a blocked
 * thread compensates only when every thread alive is blocked. */
static bool leave_locked(thread_pool *p, worker *w)
{
    atomic_fetch_sub_explicit(&p->avail, 1, memory_order_seq_cst);
    w->running = false;
    atomic_fetch_sub_explicit(&p->base.stats.workers, 1, memory_order_relaxed);
    int alive = atomic_fetch_sub_explicit(&p->alive, 1, memory_order_relaxed) -
                1;
    if (alive > 0 &&
        alive == atomic_load_explicit(&p->blocked, memory_order_relaxed) &&
        work_visible(p))
        ensure_progress_locked(p, false);
    pthread_cond_broadcast(&p->space_cv); /* cf_shutdown(wait) watches alive */
    return p->orphaned && alive == 0;
}

#define SPIN_NS 20000

/*
 * An idle thread polls the queues for a few microseconds (no lock, no
 * system call on either side when work arrives meanwhile), then sleeps.
 * Returns false if the thread has left the pool (leave_locked): a
 * compensating thread that found nothing to do; *free_it is then set if
 * it must free the pool.
 */
static bool idle_wait(thread_pool *p, worker *w, uint64_t *busy_since,
                      bool *free_it)
{
    atomic_fetch_add_explicit(&p->spinning, 1, memory_order_seq_cst);
    uint64_t until = cf__now_ns() + SPIN_NS;
    for (unsigned i = 1;; i++) {
        if (runnable(p, w) || stopping(p)) {
            /* The last spinner to leave with work wakes a sleeper: more
             * of it may be waiting (pushers saw us and did not wake). */
            if (atomic_fetch_sub_explicit(&p->spinning, 1,
                                          memory_order_seq_cst) == 1 &&
                atomic_load_explicit(&p->sleepers, memory_order_seq_cst) > 0) {
                pthread_mutex_lock(&p->lock);
                wake_one_locked(p);
                pthread_mutex_unlock(&p->lock);
            }
            return true;
        }
        /* Yield now and then: with more threads than cores (the
         * submitting thread and the pool's), a spinning thread would take
         * the core of the thread that makes the work. */
        if ((i & 15) == 0)
            sched_yield();
        else
            cf__cpu_relax();
        if ((i & 63) == 0 && cf__now_ns() > until)
            break;
    }
    pthread_mutex_lock(&p->lock);
    /* A compensating thread exits instead of sleeping: only threads that
     * may steal sleep on the list (a wake-up is for any queued task). */
    bool extra = !regular(p, w);
    if (!extra)
        sleep_list_add_locked(p, w);
    atomic_fetch_sub_explicit(&p->spinning, 1, memory_order_seq_cst);
    /* After leaving the spinners (a pusher that saw us spinning relied on
     * us), look once more. */
    bool work = runnable(p, w) || stopping(p);
    if (extra) {
        if (!work) {
            cf__stats_busy(&p->base, cf__now_ns() - *busy_since);
            *free_it = leave_locked(p, w);
        }
        pthread_mutex_unlock(&p->lock);
        return work;
    }
    if (!work) {
        cf__stats_busy(&p->base, cf__now_ns() - *busy_since);
        if (p->idle_ns == 0) {
            pthread_cond_wait(&w->cv, &p->lock);
        } else { /* elastic: leave after idle_timeout without work */
            cf_deadline d;
            cf__deadline((double)p->idle_ns / 1e9, &d);
            int e = 0;
            while (w->sleeping && e != ETIMEDOUT)
                e = cf__cond_wait(&w->cv, &p->lock, &d);
            if (w->sleeping && !runnable(p, w) && !stopping(p)) {
                /* Still asleep (nobody woke it for work): it leaves,
                 * under the lock that submitters take, so one that comes
                 * next counts one thread fewer and starts another. */
                sleep_list_remove_locked(p, w);
                atomic_fetch_add_explicit(&p->base.stats.idle_exits, 1,
                                          memory_order_relaxed);
                *free_it = leave_locked(p, w);
                pthread_mutex_unlock(&p->lock);
                return false;
            }
        }
        *busy_since = cf__now_ns();
    }
    sleep_list_remove_locked(p, w);
    pthread_mutex_unlock(&p->lock);
    return true;
}

static void stack_init(worker *w)
{
    pthread_attr_t a;
    void *lo;
    size_t size;
    w->stack_limit = 0;
    if (pthread_getattr_np(pthread_self(), &a) != 0)
        return;
    if (pthread_attr_getstack(&a, &lo, &size) == 0) {
        /* The margin must hold one task's own frames between two waits
         * (plus the library's), with room for libc's deeper calls: a
         * quarter of the stack, at least 64 KiB. */
        size_t margin = size / 4 > MIN_MARGIN ? size / 4 : MIN_MARGIN;
        w->stack_limit = (uintptr_t)lo + margin;
    }
    pthread_attr_destroy(&a);
}

/* Does a task taken now count its thread out of `avail` while it runs?
 * Only the lazy start reads avail, and only while fewer than max_workers
 * threads are alive: a pool fully started for good (no idle_timeout)
 * never reads it again, so its threads skip the two read-modify-writes per
 * task on the line they share (each pair is net zero). */
static bool counts_avail(thread_pool *p)
{
    return p->idle_ns != 0 ||
           atomic_load_explicit(&p->alive, memory_order_relaxed) <
               p->base.max_workers;
}

static void run_and_release(thread_pool *p, cf_future *f, bool counted)
{
    /* From the moment the result is published, whoever waited for it may
     * submit again: this thread counts as available from then on
     * (Python's idle-thread reuse). */
    if (!counted)
        cf__run_future(f, NULL);
    else if (!cf__run_future(f, &p->avail))
        atomic_fetch_add_explicit(&p->avail, 1, memory_order_seq_cst);
    cf_future_release(f);
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    thread_pool *p = w->pool;
    char name[48];
    snprintf(name, sizeof name, "%s_%d", p->prefix, w->index);
    name[15] = '\0'; /* the kernel's limit for thread names */
    pthread_setname_np(pthread_self(), name);
    stack_init(w);
    cf__current_helper = &w->helper;
    cf__stats_shard_enter(&p->base, &w->stats);
    cf__trace_tid = w->index;

    int rc = p->initializer ? p->initializer(p->initarg) : 0;
    if (rc != 0)
        break_pool(p, rc);

    /* Busy time is counted from wake-up to sleep, not per task: two clock
     * reads per sleep instead of two per task. */
    uint64_t busy_since = cf__now_ns();
    bool left = false, free_it = false;
    while (rc == 0) {
        cf_future *f = find_work(p, w);
        if (f != NULL && !counts_avail(p)) {
            run_and_release(p, f, false);
            continue;
        }
        if (f != NULL) {
            int avail = atomic_fetch_sub_explicit(&p->avail, 1,
                                                  memory_order_seq_cst) -
                        1;
            /* A submit that looked between our pop and this decrement
             * counted us as available and started no thread for its task;
             * then start one now (the seq_cst pair: avail here, injected
             * there; one of the two sees the other). */
            if ((size_t)(avail < 0 ? 0 : avail) <
                    atomic_load_explicit(&p->injected, memory_order_seq_cst) &&
                atomic_load_explicit(&p->alive, memory_order_relaxed) <
                    p->base.max_workers) {
                pthread_mutex_lock(&p->lock);
                if ((size_t)atomic_load_explicit(&p->avail,
                                                 memory_order_seq_cst) <
                        atomic_load_explicit(&p->injected,
                                             memory_order_seq_cst) &&
                    atomic_load_explicit(&p->alive, memory_order_relaxed) <
                        p->base.max_workers &&
                    !stopping(p))
                    start_thread_locked(p);
                pthread_mutex_unlock(&p->lock);
            }
            run_and_release(p, f, true);
            continue;
        }
        /* Stopping: leave once no submitter is about to push (it saw the
         * pool running) and nothing is left that this thread may take. */
        if (stopping(p)) {
            if (atomic_load_explicit(&p->lane_pushers, memory_order_seq_cst) ==
                    0 &&
                !runnable(p, w))
                break;
            cf__cpu_relax();
            continue;
        }
        if (!idle_wait(p, w, &busy_since, &free_it)) {
            left = true;
            break;
        }
    }
    cf__current_helper = NULL;
    cf__stats_shard_leave();
    if (!left) {
        cf__stats_busy(&p->base, cf__now_ns() - busy_since);
        pthread_mutex_lock(&p->lock);
        free_it = leave_locked(p, w);
        pthread_mutex_unlock(&p->lock);
    }
    if (free_it)
        free_pool(p);
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* Helping (internal.h): a pool thread that waits runs queued tasks          */
/* ------------------------------------------------------------------------ */

static bool run_one(cf_helper *h)
{
    worker *w = (worker *)h;
    thread_pool *p = w->pool;
    if (!stack_ok(w))
        return false;
    cf_future *f = find_work(p, w);
    if (f == NULL)
        return false;
    cf__run_future(f, NULL); /* false: cancelled while queued */
    cf_future_release(f);
    return true;
}

/* Returns false, the lock kept, if there is nothing this thread may run;
 * else drops the lock, runs a task (unless another thread took it first)
 * and returns true: the caller must look at what it waits for again, since
 * it may have missed its wake-up meanwhile. */
static bool run_one_locked(cf_helper *h)
{
    worker *w = (worker *)h;
    thread_pool *p = w->pool;
    if (!stack_ok(w) || !runnable(p, w))
        return false;
    pthread_mutex_unlock(&p->lock);
    run_one(h);
    pthread_mutex_lock(&p->lock);
    return true;
}

/* lock held.  The caller found nothing to run and its wait is not over:
 * sleep until woken (the awaited event, or new work if this thread can
 * still run some).  Returns 0 at once if there is work this thread can
 * run; ETIMEDOUT at the deadline. */
static int sleep_locked(cf_helper *h, const cf_deadline *d)
{
    worker *w = (worker *)h;
    thread_pool *p = w->pool;
    /* The slack keeps this answer consistent with run_one's, whose frame
     * is a little deeper: "can help" here means run_one can start a task,
     * or the wait loop would spin. */
    bool can_help = (uintptr_t)__builtin_frame_address(0) >
                    w->stack_limit + 8192;
    bool work = runnable(p, w);
    if (can_help && work)
        return 0; /* the caller runs it */
    atomic_fetch_add_explicit(&p->blocked, 1, memory_order_seq_cst);
    /* Only a thread that may steal waits for new work on the list (a
     * wake-up is for any queued task); a compensating thread sleeps until
     * what it waits for is done. */
    bool listed = can_help && regular(p, w);
    if (listed) {
        sleep_list_add_locked(p, w);
        atomic_fetch_add_explicit(&p->avail, 1, memory_order_seq_cst);
        work = runnable(p, w); /* after registering (see top) */
    } else if (!can_help) {
        /* At the margin.  If what we wait for is queued in our deque,
         * hand it and the tasks queued after it (which we would have run
         * first) to threads with stack to spare (handed_pop), newest
         * first, and make sure one runs them.  Older tasks stay: they wait
         * for us, as they would have.  Waiting for several futures
         * (cf_wait), we cannot tell: hand all. */
        cf_future *awaited = h->awaited, *list = NULL, **tail = &list, *f;
        size_t n = 0;
        if (awaited == NULL || cf__deque_holds(&w->dq, awaited))
            while ((f = cf__deque_pop(&w->dq)) != NULL) {
                *tail = f;
                tail = &f->next;
                n++;
                if (f == awaited)
                    break;
            }
        if (n > 0) {
            *tail = p->handed;
            p->handed = list;
            atomic_fetch_add_explicit(&p->nhanded, n, memory_order_seq_cst);
        }
        if (n > 0 || work_visible(p))
            ensure_progress_locked(p, true);
    }
    int rc = 0;
    if (!(can_help && work))
        rc = cf__cond_wait(&w->cv, &p->lock, d);
    /* Taken off the list by a waker: woken for work, which this thread
     * must now run, even if what it waits for is done meanwhile, or
     * nobody else may (the waker woke only us). */
    bool for_work = listed && !w->sleeping;
    if (listed) {
        sleep_list_remove_locked(p, w);
        atomic_fetch_sub_explicit(&p->avail, 1, memory_order_seq_cst);
    }
    atomic_fetch_sub_explicit(&p->blocked, 1, memory_order_relaxed);
    if (for_work) {
        pthread_mutex_unlock(&p->lock);
        run_one(h);
        pthread_mutex_lock(&p->lock);
    }
    return rc;
}

static void helper_init(worker *w)
{
    thread_pool *p = w->pool;
    w->helper = (cf_helper){
        .lock = &p->lock,
        .cv = &w->cv,
        .run_one = run_one,
        .run_one_locked = run_one_locked,
        .sleep_locked = sleep_locked,
        .ex = &p->base,
    };
}

/* ------------------------------------------------------------------------ */
/* vtable                                                                    */
/* ------------------------------------------------------------------------ */

/* Bounded pool: takes one place in the queue, waiting for room unless
 * told not to.  A pool thread makes room itself by running queued work. */
static int reserve(thread_pool *p, worker *self, unsigned flags)
{
    size_t q = atomic_load_explicit(&p->queued, memory_order_seq_cst);
    for (;;) {
        if (atomic_load_explicit(&p->broken, memory_order_relaxed))
            return CF_EBROKEN;
        if (atomic_load_explicit(&p->shutdown, memory_order_relaxed))
            return CF_ESHUTDOWN;
        if (q < p->max_queued) {
            if (atomic_compare_exchange_weak_explicit(&p->queued, &q, q + 1,
                                                      memory_order_seq_cst,
                                                      memory_order_seq_cst))
                return CF_OK;
            continue;
        }
        if (p->fail_when_full || (flags & CF_NOWAIT))
            return CF_EFULL;
        if (self != NULL && run_one(&self->helper)) {
            q = atomic_load_explicit(&p->queued, memory_order_seq_cst);
            continue;
        }
        pthread_mutex_lock(&p->lock);
        atomic_fetch_add_explicit(&p->space_waiters, 1, memory_order_seq_cst);
        q = atomic_load_explicit(&p->queued, memory_order_seq_cst);
        if (q >= p->max_queued && !stopping(p)) {
            if (self != NULL) { /* blocked: the queue needs another thread */
                atomic_fetch_add_explicit(&p->blocked, 1, memory_order_seq_cst);
                ensure_progress_locked(p, true);
            }
            pthread_cond_wait(&p->space_cv, &p->lock);
            if (self != NULL)
                atomic_fetch_sub_explicit(&p->blocked, 1, memory_order_relaxed);
        }
        atomic_fetch_sub_explicit(&p->space_waiters, 1, memory_order_seq_cst);
        pthread_mutex_unlock(&p->lock);
        q = atomic_load_explicit(&p->queued, memory_order_seq_cst);
    }
}

static int tp_submit(cf_executor *ex, cf_future *f, unsigned flags)
{
    thread_pool *p = pool_of(ex);
    if (atomic_load_explicit(&p->broken, memory_order_relaxed))
        return CF_EBROKEN;
    if (atomic_load_explicit(&p->shutdown, memory_order_relaxed))
        return CF_ESHUTDOWN;
    worker *self = self_in(p);
    if (p->max_queued != 0) {
        int rc = reserve(p, self, flags);
        if (rc != CF_OK)
            return rc;
    }
    /* A prioritised task goes to the injection queue, which is ordered by
     * priority (fqueue.c), even from inside the pool. */
    if (self != NULL && *cf__queued_priority(f) == 0 &&
        cf__deque_push(&self->dq, f) == CF_OK) {
        notify(p);
        return CF_OK;
    }
    /* From outside the pool (or no memory to grow the deque): the
     * injection queue.  Without the lock if the pool is fully started, for
     * good (no idle_timeout), and not ordered by priority. */
    if (*cf__queued_priority(f) == 0 && p->idle_ns == 0 &&
        !atomic_load_explicit(&p->prio_mode, memory_order_seq_cst) &&
        atomic_load_explicit(&p->alive, memory_order_relaxed) >=
            p->base.max_workers) {
        atomic_fetch_add_explicit(&p->lane_pushers, 1, memory_order_seq_cst);
        bool open = !atomic_load_explicit(&p->shutdown, memory_order_seq_cst) &&
                    !atomic_load_explicit(&p->broken, memory_order_seq_cst);
        if (open) {
            atomic_fetch_add_explicit(&p->injected, 1, memory_order_seq_cst);
            lane_push(p, f);
        }
        atomic_fetch_sub_explicit(&p->lane_pushers, 1, memory_order_seq_cst);
        if (open) {
            /* The pusher's side of the sleep protocol (see top); a thread
             * about to block in a wait looks at the queues after counting
             * itself in `blocked`. */
            if (atomic_load_explicit(&p->spinning, memory_order_seq_cst) > 0)
                return CF_OK;
            if (atomic_load_explicit(&p->sleepers, memory_order_seq_cst) == 0 &&
                atomic_load_explicit(&p->blocked, memory_order_seq_cst) <
                    atomic_load_explicit(&p->alive, memory_order_seq_cst))
                return CF_OK;
            pthread_mutex_lock(&p->lock);
            ensure_progress_locked(p, false);
            pthread_mutex_unlock(&p->lock);
            return CF_OK;
        }
    }
    pthread_mutex_lock(&p->lock);
    int rc = CF_OK;
    if (atomic_load_explicit(&p->broken, memory_order_relaxed))
        rc = CF_EBROKEN;
    else if (atomic_load_explicit(&p->shutdown, memory_order_relaxed))
        rc = CF_ESHUTDOWN;
    if (rc != CF_OK) {
        pthread_mutex_unlock(&p->lock);
        if (p->max_queued != 0)
            dequeued(p, 1);
        return rc;
    }
    if (*cf__queued_priority(f) != 0 && !p->q.by_priority) {
        /* Priority mode from now on: what the lane holds joins q first,
         * in its order (fqueue.c orders them as older than f). */
        atomic_store_explicit(&p->prio_mode, true, memory_order_seq_cst);
        lane_to_queue_locked(p);
    }
    if (p->q.by_priority || *cf__queued_priority(f) != 0)
        cf__fq_push(&p->q, f);
    else
        lane_push(p, f);
    size_t inj =
        atomic_fetch_add_explicit(&p->injected, 1, memory_order_seq_cst) + 1;
    int alive = atomic_load_explicit(&p->alive, memory_order_relaxed);
    if ((size_t)atomic_load_explicit(&p->avail, memory_order_seq_cst) < inj &&
        alive < p->base.max_workers && !start_thread_locked(p) && alive == 0) {
        /* No thread at all and none can start: undo, report.  (Nothing
         * else is queued: a submit that found no thread failed too, and
         * the lane's lock-free pushes need the pool fully started.) */
        cf__fq_take_all(&p->q);
        while (lane_pop_locked(p) != NULL)
            ;
        atomic_store_explicit(&p->injected, 0, memory_order_seq_cst);
        pthread_mutex_unlock(&p->lock);
        if (p->max_queued != 0)
            dequeued(p, 1);
        return CF_ENOMEM;
    }
    /* Python's lazy start is above; here: wake a sleeper, or compensate
     * when every thread is blocked in a wait. */
    ensure_progress_locked(p, false);
    pthread_mutex_unlock(&p->lock);
    return CF_OK;
}

static void tp_shutdown(cf_executor *ex, bool cancel_futures)
{
    thread_pool *p = pool_of(ex);
    atomic_store(&p->shutdown, true);
    lane_quiesce(p);
    pthread_mutex_lock(&p->lock);
    cf_future *cancelled = cancel_futures ? take_all_locked(p) : NULL;
    wake_all_locked(p);
    pthread_cond_broadcast(&p->space_cv);
    pthread_mutex_unlock(&p->lock);

    while (cancelled != NULL) { /* callbacks run: no lock held */
        cf_future *next = cancelled->next;
        cancelled->next = NULL;
        if (cf_cancel(cancelled))
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
    while (atomic_load(&p->alive) > p->self_waiters) {
        atomic_fetch_add(&p->space_waiters, 1);
        int e = cf__cond_wait(&p->space_cv, &p->lock, d);
        atomic_fetch_sub(&p->space_waiters, 1);
        if (e == ETIMEDOUT && atomic_load(&p->alive) > p->self_waiters) {
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
    bool running = atomic_load(&p->alive) > 0;
    if (running) {
        for (int i = 0; i < p->cap; i++) {
            worker *w = atomic_load(&p->slot[i]);
            if (w != NULL && w->started) {
                pthread_detach(w->tid);
                w->started = false;
            }
        }
        p->orphaned = true;
    }
    pthread_mutex_unlock(&p->lock);
    if (running)
        return;
    for (int i = 0; i < p->cap; i++) {
        worker *w = atomic_load(&p->slot[i]);
        if (w != NULL && w->started)
            pthread_join(w->tid, NULL);
    }
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
    if (opts->max_workers < 0 || !(opts->idle_timeout >= 0) ||
        (opts->idle_timeout > 1e9 && opts->idle_timeout != CF_FOREVER))
        return cf__fail_null(CF_EINVAL);
    size_t stack = opts->stack_size ? opts->stack_size : DEFAULT_STACK;
    if (stack < MIN_STACK || stack > MAX_STACK)
        return cf__fail_null(CF_EINVAL);
    long page = sysconf(_SC_PAGESIZE);
    if (page > 0)
        stack = (stack + (size_t)page - 1) / (size_t)page * (size_t)page;
    int n = opts->max_workers;
    if (n == 0) {
        n = cf__cpu_count() + 4;
        if (n > 32)
            n = 32;
    }
    thread_pool *p = calloc(1, sizeof *p);
    int cap = n + MAX_COMPENSATION;
    worker *_Atomic *slot = calloc((size_t)cap, sizeof *slot);
    if (p == NULL || slot == NULL) {
        free(p);
        free((void *)slot);
        return cf__fail_null(CF_ENOMEM);
    }
    cf__executor_init(&p->base, &thread_pool_vtable, n);
    p->lane_head = &p->lane_stub;
    atomic_init(&p->lane_tail, &p->lane_stub);
    p->slot = slot;
    p->cap = cap;
    p->stack_size = stack;
    p->idle_ns = opts->idle_timeout == CF_FOREVER
                     ? 0
                     : (uint64_t)(opts->idle_timeout * 1e9);
    /* Adaptive: spins a little before sleeping in the kernel.  The lock is
     * held for a few instructions, so a contended acquisition almost
     * always gets it while spinning, without the futex wait and wake. */
    pthread_mutexattr_t ma;
    pthread_mutexattr_init(&ma);
    pthread_mutexattr_settype(&ma, PTHREAD_MUTEX_ADAPTIVE_NP);
    pthread_mutex_init(&p->lock, &ma);
    pthread_mutexattr_destroy(&ma);
    cf__cond_init(&p->space_cv); /* timed waits use CLOCK_MONOTONIC */
    p->max_queued = opts->max_queued;
    p->fail_when_full = opts->fail_when_full;
    p->initializer = opts->initializer;
    p->initarg = opts->initarg;
    snprintf(p->prefix, sizeof p->prefix, "%s",
             opts->thread_name_prefix ? opts->thread_name_prefix : "cf_thread");
    return &p->base;
}

/*
 * test-shutdown.c -- cf_shutdown and cf_executor_free (Executor.shutdown).
 *
 * Ports CPython's test_shutdown.py (and ExecutorTest's shutdown race):
 * no submit after shutdown, shutdown(wait) waits for queued and running
 * work, shutdown(wait=false) does not, cancel_futures cancels only what is
 * queued, shutdown twice, freeing without shutdown, futures outliving
 * their executor, shutdown from a done callback and freeing a pool from
 * one of its own tasks, and a submitter blocked on a full queue released
 * by shutdown.  No sleeps: gates, latches and callbacks order the events.
 */
#include "test.h"

#include <stdatomic.h>

/* ------------------------------------------------------------------------ */
/* Helpers                                                                   */
/* ------------------------------------------------------------------------ */

static atomic_int ran;

typedef struct gated_arg {
    gate *g;
    int64_t v;
} gated_arg;

/* Optionally blocks on a gate, then returns v * v. */
static void t_gated(cf_call *c)
{
    gated_arg a;
    size_t n;
    const void *p = cf_arg(c, &n);
    ASSERT_EQ(n, sizeof a);
    memcpy(&a, p, sizeof a);
    atomic_fetch_add(&ran, 1);
    if (a.g != NULL)
        gate_pass(a.g);
    cf_return_i64(c, a.v * a.v);
}

static cf_future *submit_gated(cf_executor *ex, gate *g, int64_t v)
{
    gated_arg a = {g, v};
    return cf_submit(ex, t_gated, &a, sizeof a);
}

/* A little real work: sum of 1..n. */
static void t_sum(cf_call *c)
{
    atomic_fetch_add(&ran, 1);
    int64_t n = cf_arg_i64(c), s = 0;
    for (int64_t i = 1; i <= n; i++)
        s += i;
    cf_return_i64(c, s);
}

static int64_t sum_to(int64_t n)
{
    return n * (n + 1) / 2;
}

static cf_executor *pool(int workers)
{
    cf_executor *ex =
        cf_thread_pool(&(cf_thread_pool_opts){.max_workers = workers});
    ASSERT(ex);
    return ex;
}

static void t_nothing(cf_call *c)
{
    (void)c;
}

/* ------------------------------------------------------------------------ */
/* Tests                                                                     */
/* ------------------------------------------------------------------------ */

/* Submitting after shutdown fails with CF_ESHUTDOWN, whatever the submit
 * function (test_run_after_shutdown). */
static void test_submit_after_shutdown(void)
{
    cf_executor *ex = pool(2);
    cf_future *f = cf_submit_i64(ex, t_sum, 10);
    ASSERT(f);
    ASSERT_OK(cf_shutdown(ex, true, false));
    ASSERT(cf_done(f));
    ASSERT(cf_submit(ex, t_nothing, NULL, 0) == NULL);
    ASSERT_ST(cf_last_error(), CF_ESHUTDOWN);
    ASSERT(cf_submit_i64(ex, t_sum, 1) == NULL);
    ASSERT_ST(cf_last_error(), CF_ESHUTDOWN);
    ASSERT(cf_submit_f64(ex, t_nothing, 1.0) == NULL);
    ASSERT_ST(cf_last_error(), CF_ESHUTDOWN);
    ASSERT(cf_submit_str(ex, t_nothing, "x") == NULL);
    ASSERT_ST(cf_last_error(), CF_ESHUTDOWN);
    ASSERT(cf_submit_ex(ex, t_nothing, NULL, 0,
                        &(cf_task_opts){.flags = CF_NOWAIT}) == NULL);
    ASSERT_ST(cf_last_error(), CF_ESHUTDOWN);
    int64_t v;
    ASSERT_OK(cf_result_i64(f, 0, &v));
    ASSERT_EQ(v, sum_to(10));
    cf_future_release(f);
    cf_executor_free(ex);

    /* shutdown(wait=false) also refuses at once. */
    ex = pool(1);
    ASSERT_OK(cf_shutdown(ex, false, false));
    ASSERT(cf_submit(ex, t_nothing, NULL, 0) == NULL);
    ASSERT_ST(cf_last_error(), CF_ESHUTDOWN);
    cf_executor_free(ex);
}

/* Opens a gate when a latch says the main thread is about to shut down. */
typedef struct opener {
    latch go;
    gate *g;
} opener;

static void *opener_main(void *arg)
{
    opener *o = arg;
    latch_wait(&o->go, 1);
    gate_open(o->g);
    return NULL;
}

/* shutdown(wait=true) returns only once every running and queued task has
 * ended: right after it, all futures are done with the right results
 * (test_hang_issue12364, test_threads_terminate). */
static void test_shutdown_wait_waits(void)
{
    enum { N = 50 };
    cf_executor *ex = pool(2);
    atomic_store(&ran, 0);
    gate g = GATE_INIT;
    cf_future *fs[N];
    for (int i = 0; i < N; i++) {
        fs[i] = submit_gated(ex, &g, i);
        ASSERT(fs[i]);
    }
    gate_wait_for(&g, 2); /* two running, 48 queued */
    opener o = {.go = LATCH_INIT, .g = &g};
    pthread_t t;
    ASSERT_EQ(pthread_create(&t, NULL, opener_main, &o), 0);
    latch_add(&o.go);
    ASSERT_OK(cf_shutdown(ex, true, false));
    for (int i = 0; i < N; i++) {
        ASSERT(cf_done(fs[i]));
        int64_t v;
        ASSERT_OK(cf_result_i64(fs[i], 0, &v));
        ASSERT_EQ(v, (int64_t)i * i);
    }
    ASSERT_EQ(atomic_load(&ran), N);
    ASSERT_EQ(pthread_join(t, NULL), 0);
    for (int i = 0; i < N; i++)
        cf_future_release(fs[i]);
    cf_executor_free(ex);

    /* Unblocked work too: a few thousand small tasks. */
    ex = pool(3);
    cf_future *many[2000];
    for (int i = 0; i < 2000; i++)
        many[i] = cf_submit_i64(ex, t_sum, i);
    ASSERT_OK(cf_shutdown(ex, true, false));
    for (int i = 0; i < 2000; i++) {
        ASSERT(cf_done(many[i]));
        int64_t v;
        ASSERT_OK(cf_result_i64(many[i], 0, &v));
        ASSERT_EQ(v, sum_to(i));
        cf_future_release(many[i]);
    }
    cf_executor_free(ex);
}

/* shutdown(wait=false) returns at once while tasks are blocked; they still
 * run to the end once the gate opens (test_shutdown_no_wait). */
static void test_shutdown_no_wait(void)
{
    enum { N = 10 };
    cf_executor *ex = pool(2);
    atomic_store(&ran, 0);
    gate g = GATE_INIT;
    cf_future *fs[N];
    for (int i = 0; i < N; i++)
        fs[i] = submit_gated(ex, &g, i + 1);
    gate_wait_for(&g, 2);
    ASSERT_OK(cf_shutdown(ex, false, false)); /* must not block */
    ASSERT(cf_running(fs[0]) && cf_running(fs[1]));
    for (int i = 2; i < N; i++)
        ASSERT_EQ(cf_future_state(fs[i]), CF_PENDING);
    ASSERT(submit_gated(ex, NULL, 1) == NULL);
    ASSERT_ST(cf_last_error(), CF_ESHUTDOWN);
    gate_open(&g);
    for (int i = 0; i < N; i++) {
        int64_t v;
        ASSERT_OK(cf_result_i64(fs[i], CF_FOREVER, &v));
        ASSERT_EQ(v, (int64_t)(i + 1) * (i + 1));
        cf_future_release(fs[i]);
    }
    cf_executor_free(ex);
    ASSERT_EQ(atomic_load(&ran), N);
}

/* Opens the gate from the done callback of the first queued future, which
 * runs when shutdown(cancel_futures) cancels it: by then the queue is
 * already emptied, so the running tasks can finish without the workers
 * taking anything else. */
static void open_gate_cb(cf_future *f, void *arg)
{
    ASSERT(cf_cancelled(f));
    gate_open(arg);
}

/* shutdown(cancel_futures=true) cancels what is queued, not what runs;
 * with wait=false (test_cancel_futures_wait_false) and wait=true
 * (test_cancel_futures). */
static void test_shutdown_cancel_futures(void)
{
    enum { N = 12 };
    for (int wait = 0; wait <= 1; wait++) {
        cf_executor *ex = pool(2);
        atomic_store(&ran, 0);
        gate g = GATE_INIT;
        cf_future *fs[N];
        for (int i = 0; i < N; i++)
            fs[i] = submit_gated(ex, &g, i);
        gate_wait_for(&g, 2);
        if (wait)
            ASSERT_OK(cf_add_done_callback(fs[2], open_gate_cb, &g));
        ASSERT_OK(cf_shutdown(ex, wait, true));
        for (int i = 2; i < N; i++) {
            ASSERT(cf_cancelled(fs[i]));
            ASSERT_ST(cf_result(fs[i], 0, NULL, NULL), CF_ECANCELLED);
        }
        ASSERT(!cf_cancelled(fs[0]) && !cf_cancelled(fs[1]));
        if (wait) {
            ASSERT(cf_done(fs[0]) && cf_done(fs[1]));
        } else {
            ASSERT(cf_running(fs[0]) && cf_running(fs[1]));
            gate_open(&g);
        }
        for (int i = 0; i < 2; i++) {
            int64_t v;
            ASSERT_OK(cf_result_i64(fs[i], CF_FOREVER, &v));
            ASSERT_EQ(v, (int64_t)i * i);
        }
        cf_executor_free(ex);
        ASSERT_EQ(atomic_load(&ran), 2);
        for (int i = 0; i < N; i++) {
            ASSERT(cf_done(fs[i]));
            cf_future_release(fs[i]);
        }
    }
}

/* Shutting down twice (or more, in any mix) is fine; so is freeing after. */
static void test_shutdown_twice(void)
{
    cf_executor *ex = pool(2);
    cf_future *f = cf_submit_i64(ex, t_sum, 100);
    ASSERT_OK(cf_shutdown(ex, false, false));
    ASSERT_OK(cf_shutdown(ex, false, false));
    ASSERT_OK(cf_shutdown(ex, true, false));
    ASSERT(cf_done(f));
    ASSERT_OK(cf_shutdown(ex, true, true));
    ASSERT_OK(cf_shutdown(ex, true, false));
    int64_t v;
    ASSERT_OK(cf_result_i64(f, 0, &v));
    ASSERT_EQ(v, sum_to(100));
    cf_future_release(f);
    cf_executor_free(ex);

    /* A pool that never ran anything. */
    ex = pool(4);
    ASSERT_OK(cf_shutdown(ex, true, false));
    ASSERT_OK(cf_shutdown(ex, true, true));
    cf_executor_free(ex);
    ex = pool(0);
    cf_executor_free(ex);
}

/* cf_executor_free without a shutdown still runs everything queued: no
 * future is left pending (test_del_shutdown). */
static void test_free_without_shutdown(void)
{
    enum { N = 300 };
    for (int workers = 1; workers <= 3; workers++) {
        cf_executor *ex = pool(workers);
        atomic_store(&ran, 0);
        cf_future *fs[N];
        for (int i = 0; i < N; i++)
            fs[i] = cf_submit_i64(ex, t_sum, i);
        cf_executor_free(ex);
        ASSERT_EQ(atomic_load(&ran), N);
        for (int i = 0; i < N; i++) {
            ASSERT(cf_done(fs[i]));
            ASSERT(!cf_cancelled(fs[i]));
            int64_t v;
            ASSERT_OK(cf_result_i64(fs[i], 0, &v));
            ASSERT_EQ(v, sum_to(i));
            cf_future_release(fs[i]);
        }
    }
    /* With blocked tasks: free waits for them (the gate opens from another
     * thread), and still runs the queue. */
    cf_executor *ex = pool(1);
    atomic_store(&ran, 0);
    gate g = GATE_INIT;
    cf_future *fs[5];
    for (int i = 0; i < 5; i++)
        fs[i] = submit_gated(ex, &g, i);
    gate_wait_for(&g, 1);
    opener o = {.go = LATCH_INIT, .g = &g};
    pthread_t t;
    ASSERT_EQ(pthread_create(&t, NULL, opener_main, &o), 0);
    latch_add(&o.go);
    cf_executor_free(ex);
    ASSERT_EQ(pthread_join(t, NULL), 0);
    ASSERT_EQ(atomic_load(&ran), 5);
    for (int i = 0; i < 5; i++) {
        ASSERT(cf_done(fs[i]));
        cf_future_release(fs[i]);
    }
}

/* After shutdown(cancel_futures) the free does not resurrect anything:
 * the cancelled stay cancelled, nothing is pending.  (The shutdown did not
 * wait, so neither does the free: the running task ends on its own.) */
static void test_free_after_cancel_futures(void)
{
    cf_executor *ex = pool(1);
    atomic_store(&ran, 0);
    gate g = GATE_INIT;
    cf_future *fs[6];
    for (int i = 0; i < 6; i++)
        fs[i] = submit_gated(ex, &g, i);
    gate_wait_for(&g, 1);
    ASSERT_OK(cf_shutdown(ex, false, true));
    gate_open(&g);
    cf_executor_free(ex);
    ASSERT_OK(cf_result(fs[0], LONG_WAIT, NULL, NULL));
    ASSERT_EQ(atomic_load(&ran), 1);
    for (int i = 1; i < 6; i++)
        ASSERT(cf_cancelled(fs[i]));
    for (int i = 0; i < 6; i++)
        cf_future_release(fs[i]);
}

/* Futures outlive their executor: results, errors and states are readable
 * after cf_executor_free, and releasing them then is fine. */
static void t_raise(cf_call *c)
{
    cf_raise(c, 5, "failed with %s", "five");
}

static void count_cb(cf_future *f, void *arg)
{
    ASSERT(cf_done(f));
    (*(int *)arg)++;
}

static void test_futures_outlive_executor(void)
{
    cf_executor *ex = pool(2);
    cf_future *a = cf_submit_i64(ex, t_sum, 1000);
    cf_future *b = cf_submit(ex, t_raise, NULL, 0);
    char big[5000];
    memset(big, 'q', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    cf_future *c = cf_submit_str(ex, t_nothing, big);
    ASSERT(a && b && c);
    cf_executor_free(ex);
    int64_t v;
    ASSERT_OK(cf_result_i64(a, CF_FOREVER, &v));
    ASSERT_EQ(v, sum_to(1000));
    ASSERT_ST(cf_result(b, CF_FOREVER, NULL, NULL), CF_ETASK);
    cf_error e;
    ASSERT_OK(cf_exception(b, 0, &e));
    ASSERT_EQ(e.code, 5);
    ASSERT_STR_EQ(e.message, "failed with five");
    size_t n = 9;
    ASSERT_OK(cf_result(c, 0, NULL, &n));
    ASSERT_EQ(n, 0);
    char buf[256];
    ASSERT(strstr(cf_describe(a, buf, sizeof buf), "finished") != NULL);
    /* Callbacks added now run at once. */
    int hits = 0;
    ASSERT_OK(cf_add_done_callback(a, count_cb, &hits));
    ASSERT_OK(cf_add_done_callback(b, count_cb, &hits));
    ASSERT_EQ(hits, 2);
    cf_future_release(c);
    cf_future_release(b);
    cf_future_release(a);
}

/* shutdown from a done callback. */
typedef struct cb_shutdown {
    cf_executor *ex;
    bool wait;
    cf_future *watch[3]; /* must be done when shutdown(wait) returns */
    bool watch_done[3];
    int submit_err;
    latch ran;
} cb_shutdown;

static void shutdown_cb(cf_future *f, void *arg)
{
    (void)f;
    cb_shutdown *s = arg;
    ASSERT_OK(cf_shutdown(s->ex, s->wait, false));
    for (int i = 0; i < 3; i++)
        s->watch_done[i] = s->watch[i] != NULL && cf_done(s->watch[i]);
    cf_future *g = cf_submit(s->ex, t_nothing, NULL, 0);
    s->submit_err = g ? CF_OK : cf_last_error();
    cf_future_release(g);
    latch_add(&s->ran);
}

/* wait=false from the callback in a worker: returns, submits then fail;
 * wait=true from the callback in a worker: waits for the other workers
 * only (no self-deadlock), so the other running and queued tasks are done
 * when it returns. */
static void test_shutdown_from_callback(void)
{
    /* wait = false */
    {
        cf_executor *ex = pool(2);
        gate g = GATE_INIT;
        cb_shutdown s = {.ex = ex, .wait = false, .ran = LATCH_INIT};
        cf_future *a = submit_gated(ex, &g, 3);
        gate_wait_for(&g, 1);
        ASSERT_OK(cf_add_done_callback(a, shutdown_cb, &s));
        gate_open(&g);
        latch_wait(&s.ran, 1);
        ASSERT_ST(s.submit_err, CF_ESHUTDOWN);
        ASSERT(submit_gated(ex, NULL, 1) == NULL);
        ASSERT_ST(cf_last_error(), CF_ESHUTDOWN);
        cf_future_release(a);
        cf_executor_free(ex);
    }
    /* wait = true */
    {
        cf_executor *ex = pool(2);
        gate gb = GATE_INIT, ga = GATE_INIT;
        atomic_store(&ran, 0);
        cb_shutdown s = {.ex = ex, .wait = true, .ran = LATCH_INIT};
        cf_future *b = submit_gated(ex, &gb, 2); /* worker 1, blocked */
        gate_wait_for(&gb, 1);
        cf_future *a = submit_gated(ex, &ga, 1); /* worker 2, blocked */
        gate_wait_for(&ga, 1);
        cf_future *d = submit_gated(ex, NULL, 4); /* queued */
        cf_future *e = submit_gated(ex, NULL, 5); /* queued */
        s.watch[0] = b;
        s.watch[1] = d;
        s.watch[2] = e;
        ASSERT_OK(cf_add_done_callback(a, shutdown_cb, &s));
        gate_open(&ga); /* a ends; its callback shuts down and waits */
        gate_open(&gb); /* b can end; d and e run */
        latch_wait(&s.ran, 1);
        for (int i = 0; i < 3; i++)
            ASSERT(s.watch_done[i]);
        ASSERT_ST(s.submit_err, CF_ESHUTDOWN);
        int64_t v;
        ASSERT_OK(cf_result_i64(d, 0, &v));
        ASSERT_EQ(v, 16);
        ASSERT_OK(cf_result_i64(e, 0, &v));
        ASSERT_EQ(v, 25);
        cf_future_release(a);
        cf_future_release(b);
        cf_future_release(d);
        cf_future_release(e);
        cf_executor_free(ex);
        ASSERT_EQ(atomic_load(&ran), 4);
    }
    /* From a callback that runs in the main thread (future already done):
     * wait=true waits for the pool, like a plain call. */
    {
        cf_executor *ex = pool(1);
        cb_shutdown s = {.ex = ex, .wait = true, .ran = LATCH_INIT};
        cf_future *a = cf_submit_i64(ex, t_sum, 10);
        int64_t v;
        ASSERT_OK(cf_result_i64(a, CF_FOREVER, &v));
        cf_future *b = cf_submit_i64(ex, t_sum, 20);
        s.watch[0] = b;
        ASSERT_OK(cf_add_done_callback(a, shutdown_cb, &s));
        ASSERT_EQ(s.ran.count, 1);
        ASSERT(s.watch_done[0]);
        cf_future_release(a);
        cf_future_release(b);
        cf_executor_free(ex);
    }
}

/* cf_executor_free from a task running on the pool itself: no deadlock;
 * the task ends normally and what was queued behind it still runs. */
typedef struct self_free {
    cf_executor *ex;
    gate g;
} self_free;

static void t_free_own_pool(cf_call *c)
{
    self_free *sf;
    memcpy(&sf, cf_arg(c, NULL), sizeof sf);
    gate_pass(&sf->g);
    cf_executor_free(sf->ex);
    cf_return_i64(c, 42);
}

static void test_free_from_own_task(void)
{
    for (int workers = 1; workers <= 3; workers++) {
        self_free sf = {.ex = pool(workers), .g = GATE_INIT};
        atomic_store(&ran, 0);
        self_free *p = &sf;
        cf_future *f = cf_submit(sf.ex, t_free_own_pool, &p, sizeof p);
        ASSERT(f);
        gate_wait_for(&sf.g, 1);
        cf_future *rest[10];
        for (int i = 0; i < 10; i++) {
            rest[i] = cf_submit_i64(sf.ex, t_sum, i);
            ASSERT(rest[i]);
        }
        gate_open(&sf.g);
        int64_t v;
        ASSERT_OK(cf_result_i64(f, CF_FOREVER, &v));
        ASSERT_EQ(v, 42);
        for (int i = 0; i < 10; i++) {
            ASSERT_OK(cf_result_i64(rest[i], CF_FOREVER, &v));
            ASSERT_EQ(v, sum_to(i));
            cf_future_release(rest[i]);
        }
        ASSERT_EQ(atomic_load(&ran), 10);
        cf_future_release(f);
    }
}

/* cf_executor_free from a done callback that runs in a worker. */
static void free_pool_cb(cf_future *f, void *arg)
{
    (void)f;
    cb_shutdown *s = arg;
    cf_executor_free(s->ex);
    latch_add(&s->ran);
}

static void test_free_from_callback(void)
{
    cf_executor *ex = pool(2);
    gate g = GATE_INIT;
    cb_shutdown s = {.ex = ex, .ran = LATCH_INIT};
    cf_future *a = submit_gated(ex, &g, 6);
    gate_wait_for(&g, 1);
    cf_future *b = cf_submit_i64(ex, t_sum, 50);
    ASSERT_OK(cf_add_done_callback(a, free_pool_cb, &s));
    gate_open(&g);
    latch_wait(&s.ran, 1);
    int64_t v;
    ASSERT_OK(cf_result_i64(a, CF_FOREVER, &v));
    ASSERT_EQ(v, 36);
    ASSERT_OK(cf_result_i64(b, CF_FOREVER, &v));
    ASSERT_EQ(v, sum_to(50));
    cf_future_release(a);
    cf_future_release(b);
}

/* NULL arguments: cf_shutdown gives CF_EINVAL, cf_executor_free ignores
 * it, cf_executor_max_workers gives CF_EINVAL. */
static void test_null_executor(void)
{
    ASSERT_ST(cf_shutdown(NULL, true, false), CF_EINVAL);
    ASSERT_ST(cf_shutdown(NULL, false, true), CF_EINVAL);
    cf_executor_free(NULL);
    ASSERT_EQ(cf_executor_max_workers(NULL), CF_EINVAL);
}

/* A thread blocked submitting to a full bounded queue is released by
 * shutdown with CF_ESHUTDOWN (and submits nothing). */
typedef struct blocked_submitter {
    cf_executor *ex;
    latch started;
    cf_future *f;
    int err;
} blocked_submitter;

static void *blocked_submitter_main(void *arg)
{
    blocked_submitter *b = arg;
    latch_add(&b->started);
    b->f = submit_gated(b->ex, NULL, 7);
    b->err = b->f ? CF_OK : cf_last_error();
    return NULL;
}

static void test_shutdown_releases_blocked_submitter(void)
{
    for (int round = 0; round < 20; round++) {
        bool cancel = round % 2 == 1;
        cf_executor *ex = cf_thread_pool(
            &(cf_thread_pool_opts){.max_workers = 1, .max_queued = 1});
        ASSERT(ex);
        atomic_store(&ran, 0);
        gate g = GATE_INIT;
        cf_future *a = submit_gated(ex, &g, 1);
        gate_wait_for(&g, 1);
        cf_future *q = submit_gated(ex, NULL, 2); /* fills the queue */
        ASSERT(a && q);
        enum { NT = 3 };
        blocked_submitter bs[NT];
        pthread_t t[NT];
        for (int i = 0; i < NT; i++) {
            bs[i] = (blocked_submitter){.ex = ex, .started = LATCH_INIT};
            ASSERT_EQ(
                pthread_create(&t[i], NULL, blocked_submitter_main, &bs[i]), 0);
        }
        for (int i = 0; i < NT; i++)
            latch_wait(&bs[i].started, 1);
        ASSERT_OK(cf_shutdown(ex, false, cancel)); /* gate still closed */
        for (int i = 0; i < NT; i++) {
            ASSERT_EQ(pthread_join(t[i], NULL), 0);
            ASSERT(bs[i].f == NULL);
            ASSERT_ST(bs[i].err, CF_ESHUTDOWN);
        }
        gate_open(&g);
        int64_t v;
        ASSERT_OK(cf_result_i64(a, CF_FOREVER, &v));
        ASSERT_EQ(v, 1);
        if (cancel) {
            ASSERT_ST(cf_result(q, CF_FOREVER, NULL, NULL), CF_ECANCELLED);
        } else {
            ASSERT_OK(cf_result_i64(q, CF_FOREVER, &v));
            ASSERT_EQ(v, 4);
        }
        cf_executor_free(ex);
        ASSERT_EQ(atomic_load(&ran), cancel ? 1 : 2);
        cf_future_release(a);
        cf_future_release(q);
    }
}

/* Submitting races with shutdown (test_shutdown_race_issue12456): every
 * submit either fails with CF_ESHUTDOWN or gives a future that ends; none
 * is left pending after the free. */
typedef struct racer {
    cf_executor *ex;
    latch started;
    cf_future *fs[4000];
    int n;
    int bad;
} racer;

static void *racer_main(void *arg)
{
    racer *r = arg;
    latch_add(&r->started);
    for (int i = 0; i < 4000; i++) {
        cf_future *f = cf_submit_i64(r->ex, t_sum, i % 50);
        if (f == NULL) {
            if (cf_last_error() != CF_ESHUTDOWN)
                r->bad++;
            break;
        }
        r->fs[r->n++] = f;
    }
    return NULL;
}

static void test_shutdown_race_with_submit(void)
{
    for (int round = 0; round < 20; round++) {
        cf_executor *ex = pool(2);
        racer *r = calloc(1, sizeof *r);
        ASSERT(r);
        r->ex = ex;
        r->started = (latch)LATCH_INIT;
        pthread_t t;
        ASSERT_EQ(pthread_create(&t, NULL, racer_main, r), 0);
        latch_wait(&r->started, 1);
        ASSERT_OK(cf_shutdown(ex, round % 2 == 0, round % 4 == 1));
        ASSERT_EQ(pthread_join(t, NULL), 0);
        cf_executor_free(ex);
        ASSERT_EQ(r->bad, 0);
        /* Rounds that shut down without waiting do not wait in the free
         * either: the work ends on its own, but it does end. */
        ASSERT_OK(cf_wait(r->fs, (size_t)r->n, LONG_WAIT, CF_ALL_COMPLETED,
                          NULL, NULL, NULL, NULL));
        for (int i = 0; i < r->n; i++) {
            ASSERT(cf_done(r->fs[i]));
            if (round % 4 != 1)
                ASSERT(!cf_cancelled(r->fs[i]));
            if (!cf_cancelled(r->fs[i])) {
                int64_t v;
                ASSERT_OK(cf_result_i64(r->fs[i], 0, &v));
                ASSERT_EQ(v, sum_to(i % 50));
            }
            cf_future_release(r->fs[i]);
        }
        free(r);
    }
}

TEST_MAIN(T(test_submit_after_shutdown), T(test_shutdown_wait_waits),
          T(test_shutdown_no_wait), T(test_shutdown_cancel_futures),
          T(test_shutdown_twice), T(test_free_without_shutdown),
          T(test_free_after_cancel_futures), T(test_futures_outlive_executor),
          T(test_shutdown_from_callback), T(test_free_from_own_task),
          T(test_free_from_callback), T(test_null_executor),
          T(test_shutdown_releases_blocked_submitter),
          T(test_shutdown_race_with_submit))

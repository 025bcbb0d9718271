/*
 * test-stress.c -- bounded stress of the thread pool and futures.
 *
 * Races cf_cancel, cf_request_cancel, cf_result, cf_wait,
 * cf_add_done_callback and completion over 20,000 tasks on pools of 2 to
 * 4 workers, and checks every future ends exactly once (one callback run
 * per future), either cancelled (and its task never ran) or with the right
 * result (and its task ran once).  Also: 200 create/submit/shutdown/free
 * cycles (leaks show under ASan), 4 threads submitting to one pool (with
 * and without a bounded queue), and set_result racing cancel on standalone
 * futures.  Each part is bounded: the whole binary runs in seconds.
 */
#include "test.h"

#include <sched.h>
#include <stdatomic.h>

static cf_executor *pool(int workers, size_t max_queued)
{
    cf_executor *ex = cf_thread_pool(&(
        cf_thread_pool_opts){.max_workers = workers, .max_queued = max_queued});
    ASSERT(ex);
    return ex;
}

/* ------------------------------------------------------------------------ */
/* cancel / result / callbacks / completion, all at once                     */
/* ------------------------------------------------------------------------ */

enum { BATCH = 2000, ROUNDS = 10 }; /* 20,000 tasks */

typedef struct round_state {
    cf_future *fs[BATCH];
    atomic_int ran[BATCH];       /* times the task body ran */
    atomic_int callbacks[BATCH]; /* times the done callback ran */
    atomic_int bad_callbacks;    /* callbacks that saw a wrong state */
    atomic_bool cancel_ok[BATCH];
    atomic_int wait_bad; /* waiters that saw a wrong outcome */
    gate start;          /* first tasks block until the race starts */
    pthread_barrier_t barrier;
} round_state;

static round_state *cur; /* the round the tasks belong to */

static int64_t expected(int64_t i)
{
    return i * 3 + 1;
}

static void t_work(cf_call *c)
{
    int64_t i = cf_arg_i64(c);
    atomic_fetch_add(&cur->ran[i], 1);
    gate_pass(&cur->start);
    int64_t x = 0;
    for (int k = 0; k < (int)(i % 64); k++) /* a little, uneven work */
        x += k;
    (void)x;
    cf_return_i64(c, expected(i));
}

static void done_cb(cf_future *f, void *arg)
{
    intptr_t i = (intptr_t)arg;
    atomic_fetch_add(&cur->callbacks[i], 1);
    if (!cf_done(f)) {
        atomic_fetch_add(&cur->bad_callbacks, 1);
        return;
    }
    if (cf_cancelled(f))
        return;
    int64_t v = -1;
    if (cf_result_i64(f, 0, &v) != CF_OK || v != expected(i))
        atomic_fetch_add(&cur->bad_callbacks, 1);
}

static void *canceller(void *arg)
{
    round_state *r = arg;
    pthread_barrier_wait(&r->barrier);
    for (int i = BATCH - 1; i >= 0; i--) {
        if (i % 3 == 0)
            atomic_store(&r->cancel_ok[i], cf_cancel(r->fs[i]));
        else if (i % 7 == 0)
            atomic_store(&r->cancel_ok[i], cf_request_cancel(r->fs[i]));
    }
    return NULL;
}

static void *adder(void *arg)
{
    round_state *r = arg;
    pthread_barrier_wait(&r->barrier);
    for (int i = 0; i < BATCH; i++)
        if (cf_add_done_callback(r->fs[i], done_cb, (void *)(intptr_t)i) !=
            CF_OK)
            atomic_fetch_add(&r->bad_callbacks, 1);
    return NULL;
}

/* Checks the outcome a waiter sees: right value, or cancelled. */
static void check_outcome(round_state *r, int i)
{
    int64_t v = -1;
    int rc = cf_result_i64(r->fs[i], CF_FOREVER, &v);
    if (rc == CF_OK) {
        if (v != expected(i) || cf_cancelled(r->fs[i]))
            atomic_fetch_add(&r->wait_bad, 1);
    } else if (rc != CF_ECANCELLED || !cf_cancelled(r->fs[i])) {
        atomic_fetch_add(&r->wait_bad, 1);
    }
}

static void *waiter_result(void *arg)
{
    round_state *r = arg;
    pthread_barrier_wait(&r->barrier);
    for (int i = 0; i < BATCH; i++)
        check_outcome(r, i);
    return NULL;
}

static void *waiter_wait(void *arg)
{
    round_state *r = arg;
    pthread_barrier_wait(&r->barrier);
    enum { CHUNK = 100 };
    cf_future *done[CHUNK], *not_done[CHUNK];
    for (int base = BATCH - CHUNK; base >= 0; base -= CHUNK) {
        size_t nd = 0, nn = 0;
        int rc = cf_wait(&r->fs[base], CHUNK, CF_FOREVER, CF_ALL_COMPLETED,
                         done, &nd, not_done, &nn);
        if (rc != CF_OK || nd != CHUNK || nn != 0)
            atomic_fetch_add(&r->wait_bad, 1);
        for (int i = base; i < base + CHUNK; i++) {
            if (!cf_done(r->fs[i]))
                atomic_fetch_add(&r->wait_bad, 1);
            check_outcome(r, i);
        }
    }
    return NULL;
}

static void test_stress_cancel_result_callbacks(void)
{
    long total_cancelled = 0, total_ran = 0;
    for (int round = 0; round < ROUNDS; round++) {
        round_state *r = calloc(1, sizeof *r);
        ASSERT(r);
        r->start = (gate)GATE_INIT;
        ASSERT_EQ(pthread_barrier_init(&r->barrier, NULL, 5), 0);
        cur = r;
        int workers = 2 + round % 3;
        cf_executor *ex = pool(workers, 0);
        for (int i = 0; i < BATCH; i++) {
            r->fs[i] = cf_submit_i64(ex, t_work, i);
            ASSERT(r->fs[i]);
        }
        pthread_t t[4];
        ASSERT_EQ(pthread_create(&t[0], NULL, canceller, r), 0);
        ASSERT_EQ(pthread_create(&t[1], NULL, adder, r), 0);
        ASSERT_EQ(pthread_create(&t[2], NULL, waiter_result, r), 0);
        ASSERT_EQ(pthread_create(&t[3], NULL, waiter_wait, r), 0);
        pthread_barrier_wait(&r->barrier);
        gate_open(&r->start); /* the workers go, racing the four threads */
        for (int k = 0; k < 4; k++)
            ASSERT_EQ(pthread_join(t[k], NULL), 0);
        cf_executor_free(ex); /* the workers' callbacks are over too */

        ASSERT_EQ(atomic_load(&r->bad_callbacks), 0);
        ASSERT_EQ(atomic_load(&r->wait_bad), 0);
        for (int i = 0; i < BATCH; i++) {
            cf_future *f = r->fs[i];
            ASSERT(cf_done(f));
            ASSERT_EQ(atomic_load(&r->callbacks[i]), 1);
            if (atomic_load(&r->cancel_ok[i]))
                ASSERT(cf_cancelled(f));
            if (cf_cancelled(f)) {
                ASSERT(atomic_load(&r->cancel_ok[i]));
                ASSERT_EQ(atomic_load(&r->ran[i]), 0);
                ASSERT_ST(cf_result(f, 0, NULL, NULL), CF_ECANCELLED);
                total_cancelled++;
            } else {
                ASSERT_EQ(atomic_load(&r->ran[i]), 1);
                int64_t v;
                ASSERT_OK(cf_result_i64(f, 0, &v));
                ASSERT_EQ(v, expected(i));
                total_ran++;
            }
            /* Too late now, whatever happened. */
            ASSERT(!cf_cancel(f) || cf_cancelled(f));
            cf_future_release(f);
        }
        pthread_barrier_destroy(&r->barrier);
        cur = NULL;
        free(r);
    }
    ASSERT_EQ(total_cancelled + total_ran, (long)BATCH * ROUNDS);
    printf("# %ld cancelled, %ld ran\n", total_cancelled, total_ran);
}

/* ------------------------------------------------------------------------ */
/* Pool life cycles                                                          */
/* ------------------------------------------------------------------------ */

static atomic_int cycle_ran;

static void t_cycle(cf_call *c)
{
    atomic_fetch_add(&cycle_ran, 1);
    cf_return_i64(c, cf_arg_i64(c) + 1);
}

static void cycle_cb(cf_future *f, void *arg)
{
    (void)f;
    atomic_fetch_add((atomic_int *)arg, 1);
}

/* 200 cycles of create / submit / (shutdown in one of four ways) / free:
 * every future ends (cancelled only with cancel_futures), every callback
 * runs once, nothing leaks. */
static void test_stress_pool_cycles(void)
{
    enum { CYCLES = 200, N = 20 };
    for (int cyc = 0; cyc < CYCLES; cyc++) {
        atomic_store(&cycle_ran, 0);
        atomic_int cbs;
        atomic_init(&cbs, 0);
        cf_executor *ex = pool(1 + cyc % 4, cyc % 5 == 0 ? 4 : 0);
        cf_future *fs[N];
        for (int i = 0; i < N; i++) {
            fs[i] = cf_submit_i64(ex, t_cycle, i);
            ASSERT(fs[i]);
            ASSERT_OK(cf_add_done_callback(fs[i], cycle_cb, &cbs));
        }
        int how = cyc % 4;
        if (how == 1)
            ASSERT_OK(cf_shutdown(ex, true, false));
        else if (how == 2)
            ASSERT_OK(cf_shutdown(ex, false, true));
        else if (how == 3)
            ASSERT_OK(cf_shutdown(ex, false, false));
        cf_executor_free(ex);
        /* After a shutdown that did not wait, free does not wait either
         * (Python's shutdown(wait=False)): the work ends on its own. */
        ASSERT_OK(cf_wait(fs, N, LONG_WAIT, CF_ALL_COMPLETED, NULL, NULL, NULL,
                          NULL));
        double until = now_s() + LONG_WAIT; /* callbacks run after done */
        while (atomic_load(&cbs) < N && now_s() < until)
            sched_yield();
        int cancelled = 0;
        for (int i = 0; i < N; i++) {
            ASSERT(cf_done(fs[i]));
            if (cf_cancelled(fs[i])) {
                ASSERT_EQ(how, 2);
                cancelled++;
            } else {
                int64_t v;
                ASSERT_OK(cf_result_i64(fs[i], 0, &v));
                ASSERT_EQ(v, i + 1);
            }
            cf_future_release(fs[i]);
        }
        ASSERT_EQ(atomic_load(&cbs), N);
        ASSERT_EQ(atomic_load(&cycle_ran) + cancelled, N);
    }
    /* Pools that never get a task. */
    for (int cyc = 0; cyc < 200; cyc++) {
        cf_executor *ex = pool(1 + cyc % 8, 0);
        if (cyc % 2)
            ASSERT_OK(cf_shutdown(ex, cyc % 3 == 0, cyc % 5 == 0));
        cf_executor_free(ex);
    }
}

/* ------------------------------------------------------------------------ */
/* Concurrent submitters                                                     */
/* ------------------------------------------------------------------------ */

enum { SUBMITTERS = 4, PER_THREAD = 5000, WINDOW = 256 };

typedef struct sub_ctx {
    cf_executor *ex;
    int id;
    pthread_barrier_t *barrier;
    int bad;
} sub_ctx;

static void t_ident(cf_call *c)
{
    atomic_fetch_add(&cycle_ran, 1);
    cf_return_i64(c, cf_arg_i64(c) ^ 0x5555);
}

static void *submitter_main(void *arg)
{
    sub_ctx *s = arg;
    cf_future *fs[WINDOW];
    pthread_barrier_wait(s->barrier);
    for (int base = 0; base < PER_THREAD; base += WINDOW) {
        int n = PER_THREAD - base < WINDOW ? PER_THREAD - base : WINDOW;
        for (int k = 0; k < n; k++) {
            int64_t v = (int64_t)s->id * 1000000 + base + k;
            fs[k] = cf_submit_i64(s->ex, t_ident, v);
            if (fs[k] == NULL)
                s->bad++;
        }
        for (int k = 0; k < n; k++) {
            int64_t want = ((int64_t)s->id * 1000000 + base + k) ^ 0x5555;
            int64_t v = -1;
            if (fs[k] == NULL)
                continue;
            if (cf_result_i64(fs[k], CF_FOREVER, &v) != CF_OK || v != want)
                s->bad++;
            cf_future_release(fs[k]);
        }
    }
    return NULL;
}

/* 4 threads submit 5,000 tasks each to one 3-worker pool at once, and
 * check their own results; again with a bounded queue of 8 (submitters
 * block) -- every task runs exactly once. */
static void test_stress_concurrent_submitters(void)
{
    for (int bounded = 0; bounded <= 1; bounded++) {
        atomic_store(&cycle_ran, 0);
        cf_executor *ex = pool(3, bounded ? 8 : 0);
        pthread_barrier_t b;
        ASSERT_EQ(pthread_barrier_init(&b, NULL, SUBMITTERS), 0);
        sub_ctx s[SUBMITTERS];
        pthread_t t[SUBMITTERS];
        for (int i = 0; i < SUBMITTERS; i++) {
            s[i] = (sub_ctx){.ex = ex, .id = i, .barrier = &b};
            ASSERT_EQ(pthread_create(&t[i], NULL, submitter_main, &s[i]), 0);
        }
        for (int i = 0; i < SUBMITTERS; i++) {
            ASSERT_EQ(pthread_join(t[i], NULL), 0);
            ASSERT_EQ(s[i].bad, 0);
        }
        cf_executor_free(ex);
        pthread_barrier_destroy(&b);
        ASSERT_EQ(atomic_load(&cycle_ran), SUBMITTERS * PER_THREAD);
    }
}

/* ------------------------------------------------------------------------ */
/* Standalone futures: set_result races cancel                               */
/* ------------------------------------------------------------------------ */

enum { PROMISES = 20000 };

typedef struct promise_race {
    cf_future *fs[PROMISES];
    atomic_bool set_ok[PROMISES];
    atomic_bool cancel_ok[PROMISES];
    atomic_int callbacks[PROMISES];
    pthread_barrier_t barrier;
} promise_race;

static promise_race *pr;

static void promise_cb(cf_future *f, void *arg)
{
    (void)f;
    atomic_fetch_add(&pr->callbacks[(intptr_t)arg], 1);
}

/* Both threads go through the futures in chunks, meeting at a barrier
 * before each chunk; the setter goes up and the canceller down within a
 * chunk, so each side wins some and they collide in every chunk. */
enum { PCHUNK = 2500 };

static void *promise_setter(void *arg)
{
    (void)arg;
    for (int i = 0; i < PROMISES; i++) {
        if (i % PCHUNK == 0)
            pthread_barrier_wait(&pr->barrier);
        bool ok;
        if (i % 2)
            ok = cf_set_result_i64(pr->fs[i], i) == CF_OK;
        else
            ok = cf_set_running_or_notify_cancel(pr->fs[i]) == CF_OK &&
                 cf_set_result_i64(pr->fs[i], i) == CF_OK;
        atomic_store(&pr->set_ok[i], ok);
    }
    return NULL;
}

static void *promise_canceller(void *arg)
{
    (void)arg;
    for (int base = 0; base < PROMISES; base += PCHUNK) {
        pthread_barrier_wait(&pr->barrier);
        for (int i = base + PCHUNK - 1; i >= base; i--)
            atomic_store(&pr->cancel_ok[i], cf_cancel(pr->fs[i]));
    }
    return NULL;
}

/* Exactly one of completing and cancelling wins on every future; the
 * callback runs once; the outcome matches the winner.  (Half the futures
 * are first marked running, which cancel must then respect.) */
static void test_stress_promise_set_vs_cancel(void)
{
    pr = calloc(1, sizeof *pr);
    ASSERT(pr);
    for (int i = 0; i < PROMISES; i++) {
        pr->fs[i] = cf_future_new();
        ASSERT(pr->fs[i]);
        ASSERT_OK(
            cf_add_done_callback(pr->fs[i], promise_cb, (void *)(intptr_t)i));
    }
    ASSERT_EQ(pthread_barrier_init(&pr->barrier, NULL, 2), 0);
    pthread_t a, b;
    ASSERT_EQ(pthread_create(&a, NULL, promise_setter, NULL), 0);
    ASSERT_EQ(pthread_create(&b, NULL, promise_canceller, NULL), 0);
    ASSERT_EQ(pthread_join(a, NULL), 0);
    ASSERT_EQ(pthread_join(b, NULL), 0);
    int cancelled = 0;
    for (int i = 0; i < PROMISES; i++) {
        cf_future *f = pr->fs[i];
        bool set = atomic_load(&pr->set_ok[i]);
        bool can = atomic_load(&pr->cancel_ok[i]);
        ASSERT(set != can);
        ASSERT(cf_done(f));
        ASSERT_EQ(atomic_load(&pr->callbacks[i]), 1);
        if (can) {
            ASSERT(cf_cancelled(f));
            cancelled++;
        } else {
            int64_t v;
            ASSERT_OK(cf_result_i64(f, 0, &v));
            ASSERT_EQ(v, i);
        }
        cf_future_release(f);
    }
    pthread_barrier_destroy(&pr->barrier);
    free(pr);
    pr = NULL;
    printf("# %d of %d promises cancelled\n", cancelled, PROMISES);
}

/* ------------------------------------------------------------------------ */
/* Many waiters on one future, woken by completion or cancel                 */
/* ------------------------------------------------------------------------ */

typedef struct many_waiters {
    cf_future *f;
    pthread_barrier_t *b;
    int rc;
} many_waiters;

static void *one_waiter(void *arg)
{
    many_waiters *w = arg;
    pthread_barrier_wait(w->b);
    w->rc = cf_result(w->f, CF_FOREVER, NULL, NULL);
    return NULL;
}

/* 8 threads block in cf_result on one future, over and over; each round
 * it either completes or is cancelled, and every waiter wakes with that
 * outcome. */
static void test_stress_many_waiters(void)
{
    enum { W = 8, R = 300 };
    for (int round = 0; round < R; round++) {
        cf_future *f = cf_future_new();
        ASSERT(f);
        pthread_barrier_t b;
        ASSERT_EQ(pthread_barrier_init(&b, NULL, W + 1), 0);
        many_waiters w[W];
        pthread_t t[W];
        for (int i = 0; i < W; i++) {
            w[i] = (many_waiters){.f = f, .b = &b, .rc = 99};
            ASSERT_EQ(pthread_create(&t[i], NULL, one_waiter, &w[i]), 0);
        }
        pthread_barrier_wait(&b);
        int want;
        if (round % 2) {
            ASSERT(cf_cancel(f));
            want = CF_ECANCELLED;
        } else {
            ASSERT_OK(cf_set_result_i64(f, round));
            want = CF_OK;
        }
        for (int i = 0; i < W; i++) {
            ASSERT_EQ(pthread_join(t[i], NULL), 0);
            ASSERT_ST(w[i].rc, want);
        }
        pthread_barrier_destroy(&b);
        cf_future_release(f);
    }
}

TEST_MAIN(T(test_stress_cancel_result_callbacks), T(test_stress_pool_cycles),
          T(test_stress_concurrent_submitters),
          T(test_stress_promise_set_vs_cancel), T(test_stress_many_waiters))

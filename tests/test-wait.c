/*
 * test-wait.c -- cf_wait (concurrent.futures.wait).
 *
 * Ports the behaviours of CPython's Lib/test/test_concurrent_futures/
 * test_wait.py (FIRST_COMPLETED, FIRST_EXCEPTION, ALL_COMPLETED over
 * mixes of pending / running / finished / raised / cancelled futures,
 * with and without a timeout) to the C API, plus what the C API adds:
 * duplicates, argument checks, wake-ups from other threads, waiters that
 * must not be left behind, and a million futures in one call.
 *
 * In C a cancelled future is always "done" (Python's CANCELLED and
 * CANCELLED_AND_NOTIFIED states are one state here), so the Python tests
 * that list CANCELLED_FUTURE as not done are ported with the cancelled
 * future in the done set.
 *
 * No sleeps sequence anything: a thread that must be blocked in cf_wait
 * before the futures complete is watched through /proc (bounded; if it
 * gives up, the test still holds, it only takes the "already done" path).
 */
#include "test.h"

#include <math.h>
#include <sched.h>
#include <stdatomic.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------------------ */
/* Helpers                                                                   */
/* ------------------------------------------------------------------------ */

/* The result of one cf_wait, with output arrays large enough. */
typedef struct outcome {
    int rc;
    cf_future *done[64], *not_done[64];
    size_t ndone, nnot_done;
} outcome;

static outcome wait_on(cf_future *const *fs, size_t n, double timeout,
                       cf_return_when when)
{
    outcome o;
    ASSERT(n <= 64);
    memset(&o, 0, sizeof o);
    o.ndone = o.nnot_done = 999;
    o.rc = cf_wait(fs, n, timeout, when, o.done, &o.ndone, o.not_done,
                   &o.nnot_done);
    return o;
}

/* set[0..n) is exactly the futures of want[0..nwant), in that order. */
static void assert_set(cf_future *const *set, size_t n, cf_future *const *want,
                       size_t nwant)
{
    ASSERT_EQ(n, nwant);
    for (size_t i = 0; i < n; i++)
        ASSERT(set[i] == want[i]);
}

#define SET(...) ((cf_future *const[]){__VA_ARGS__})
#define NSET(...) (sizeof SET(__VA_ARGS__) / sizeof(cf_future *))
#define ASSERT_DONE(o, ...) \
    assert_set((o).done, (o).ndone, SET(__VA_ARGS__), NSET(__VA_ARGS__))
#define ASSERT_NOT_DONE(o, ...) \
    assert_set((o).not_done, (o).nnot_done, SET(__VA_ARGS__), NSET(__VA_ARGS__))
#define ASSERT_NONE_DONE(o) ASSERT_EQ((o).ndone, 0)
#define ASSERT_ALL_DONE(o) ASSERT_EQ((o).nnot_done, 0)

/* A thread that blocks in cf_wait and reports what it got. */
typedef struct waiter_thread {
    pthread_t th;
    _Atomic int tid;
    cf_future *const *fs;
    size_t n;
    double timeout;
    cf_return_when when;
    outcome o;
} waiter_thread;

static void *waiter_main(void *arg)
{
    waiter_thread *w = arg;
    atomic_store(&w->tid, current_tid());
    w->o = wait_on(w->fs, w->n, w->timeout, w->when);
    return NULL;
}

/* Starts a thread in cf_wait and returns once it is blocked there. */
static void start_waiter(waiter_thread *w, cf_future *const *fs, size_t n,
                         double timeout, cf_return_when when)
{
    w->fs = fs;
    w->n = n;
    w->timeout = timeout;
    w->when = when;
    atomic_store(&w->tid, 0);
    ASSERT_EQ(pthread_create(&w->th, NULL, waiter_main, w), 0);
    wait_until_blocked(&w->tid);
}

static void join_waiter(waiter_thread *w)
{
    ASSERT_EQ(pthread_join(w->th, NULL), 0);
}

/* ------------------------------------------------------------------------ */
/* CPython's WaitTests                                                       */
/* ------------------------------------------------------------------------ */

/* test_first_completed: wait(FIRST_COMPLETED) returns when the first of
 * several pending futures completes (from another thread); the others are
 * in not_done. */
static void test_first_completed(void)
{
    cf_future *f1 = make(FX_PENDING), *f2 = make(FX_PENDING);
    cf_future *fs[] = {f1, f2};
    waiter_thread w;
    start_waiter(&w, fs, 2, LONG_WAIT, CF_FIRST_COMPLETED);
    ASSERT_OK(cf_set_result_i64(f1, 42));
    join_waiter(&w);
    ASSERT_OK(w.o.rc);
    ASSERT_DONE(w.o, f1);
    ASSERT_NOT_DONE(w.o, f2);
    release_all(fs, 2);
}

/* test_first_completed_some_already_completed: futures already done
 * (cancelled, successful) satisfy FIRST_COMPLETED at once, even with no
 * timeout; the pending one stays in not_done. */
static void test_first_completed_some_already_completed(void)
{
    cf_future *c = make(FX_CANCELLED), *s = make(FX_FINISHED);
    cf_future *p = make(FX_PENDING), *r = make(FX_RUNNING);
    cf_future *fs[] = {c, s, p, r};
    outcome o = wait_on(fs, 4, CF_FOREVER, CF_FIRST_COMPLETED);
    ASSERT_OK(o.rc);
    ASSERT_DONE(o, c, s);
    ASSERT_NOT_DONE(o, p, r);
    o = wait_on(fs, 4, 0, CF_FIRST_COMPLETED); /* timeout 0: same answer */
    ASSERT_OK(o.rc);
    ASSERT_DONE(o, c, s);
    ASSERT_NOT_DONE(o, p, r);
    ASSERT_OK(cf_set_result_i64(p, 1));
    ASSERT_OK(cf_set_result_i64(r, 1));
    release_all(fs, 4);
}

/* test_first_exception: FIRST_EXCEPTION waits past successful completions
 * and returns when one future raises; done holds the successful and the
 * raised one, the still-pending one is in not_done. */
static void test_first_exception(void)
{
    cf_future *f1 = make(FX_PENDING), *f2 = make(FX_RUNNING);
    cf_future *f3 = make(FX_PENDING);
    cf_future *fs[] = {f1, f2, f3};
    waiter_thread w;
    start_waiter(&w, fs, 3, LONG_WAIT, CF_FIRST_EXCEPTION);
    ASSERT_OK(cf_set_result_i64(f1, 42)); /* not enough */
    ASSERT_OK(cf_set_exception(f2, 1, "raised"));
    join_waiter(&w);
    ASSERT_OK(w.o.rc);
    ASSERT_DONE(w.o, f1, f2);
    ASSERT_NOT_DONE(w.o, f3);
    release_all(fs, 3);
}

/* test_first_exception_some_already_complete: with a success, a cancelled
 * and a raised future already done, FIRST_EXCEPTION returns at once;
 * a cancellation is not an exception. */
static void test_first_exception_some_already_complete(void)
{
    cf_future *s = make(FX_FINISHED), *c = make(FX_CANCELLED);
    cf_future *e = make(FX_RAISED), *p = make(FX_PENDING);
    cf_future *fs[] = {s, c, e, p};
    outcome o = wait_on(fs, 4, CF_FOREVER, CF_FIRST_EXCEPTION);
    ASSERT_OK(o.rc);
    ASSERT_DONE(o, s, c, e);
    ASSERT_NOT_DONE(o, p);

    /* Without the raised one, success + cancelled is not enough. */
    cf_future *fs2[] = {s, c, p};
    o = wait_on(fs2, 3, 0, CF_FIRST_EXCEPTION);
    ASSERT_ST(o.rc, CF_ETIMEDOUT);
    ASSERT_DONE(o, s, c);
    ASSERT_NOT_DONE(o, p);
    o = wait_on(fs2, 3, 0.01, CF_FIRST_EXCEPTION);
    ASSERT_ST(o.rc, CF_ETIMEDOUT);
    ASSERT_DONE(o, s, c);
    ASSERT_NOT_DONE(o, p);

    /* ... and a future raising later wakes the waiter. */
    waiter_thread w;
    start_waiter(&w, fs2, 3, LONG_WAIT, CF_FIRST_EXCEPTION);
    ASSERT_OK(cf_set_exception(p, 2, "late"));
    join_waiter(&w);
    ASSERT_OK(w.o.rc);
    ASSERT_DONE(w.o, s, c, p);
    ASSERT_ALL_DONE(w.o);
    release_all(fs, 4);
}

/* test_first_exception_one_already_failed: one raised future is enough. */
static void test_first_exception_one_already_failed(void)
{
    cf_future *e = make(FX_RAISED), *p = make(FX_PENDING);
    cf_future *fs[] = {e, p};
    outcome o = wait_on(fs, 2, CF_FOREVER, CF_FIRST_EXCEPTION);
    ASSERT_OK(o.rc);
    ASSERT_DONE(o, e);
    ASSERT_NOT_DONE(o, p);
    release_all(fs, 2);
}

/* FIRST_EXCEPTION with no exception at all behaves as ALL_COMPLETED: it
 * returns once everything is done (successes and cancellations). */
static void test_first_exception_none_raised(void)
{
    cf_future *s = make(FX_FINISHED), *p1 = make(FX_PENDING);
    cf_future *p2 = make(FX_PENDING);
    cf_future *fs[] = {s, p1, p2};
    waiter_thread w;
    start_waiter(&w, fs, 3, LONG_WAIT, CF_FIRST_EXCEPTION);
    ASSERT_OK(cf_set_result_i64(p1, 1));
    ASSERT(cf_cancel(p2));
    join_waiter(&w);
    ASSERT_OK(w.o.rc);
    ASSERT_DONE(w.o, s, p1, p2);
    ASSERT_ALL_DONE(w.o);
    release_all(fs, 3);
}

/* test_all_completed: ALL_COMPLETED over already-done futures of every
 * kind plus two that complete from other threads. */
static void test_all_completed(void)
{
    cf_future *s = make(FX_FINISHED), *c = make(FX_CANCELLED);
    cf_future *e = make(FX_RAISED), *f1 = make(FX_PENDING);
    cf_future *f2 = make(FX_RUNNING);
    cf_future *fs[] = {s, c, e, f1, f2};
    waiter_thread w;
    start_waiter(&w, fs, 5, LONG_WAIT, CF_ALL_COMPLETED);
    ASSERT_OK(cf_set_result_i64(f1, 1)); /* not all yet */
    ASSERT_OK(cf_set_exception(f2, 1, "x"));
    join_waiter(&w);
    ASSERT_OK(w.o.rc);
    ASSERT_DONE(w.o, s, c, e, f1, f2);
    ASSERT_ALL_DONE(w.o);
    /* All done: returns at once, whatever the timeout. */
    outcome o = wait_on(fs, 5, 0, CF_ALL_COMPLETED);
    ASSERT_OK(o.rc);
    ASSERT_DONE(o, s, c, e, f1, f2);
    release_all(fs, 5);
}

/* test_timeout: ALL_COMPLETED with a short timeout and one future that
 * never completes returns TimeoutError with the done ones in done and the
 * other in not_done (timeout 0 and a short positive one). */
static void test_timeout(void)
{
    cf_future *c = make(FX_CANCELLED), *e = make(FX_RAISED);
    cf_future *s = make(FX_FINISHED), *p = make(FX_RUNNING);
    cf_future *fs[] = {c, e, s, p};
    const double timeouts[] = {0, 0.05};
    for (int t = 0; t < 2; t++) {
        outcome o = wait_on(fs, 4, timeouts[t], CF_ALL_COMPLETED);
        ASSERT_ST(o.rc, CF_ETIMEDOUT);
        ASSERT_DONE(o, c, e, s);
        ASSERT_NOT_DONE(o, p);
    }
    /* FIRST_COMPLETED over nothing done times out with an empty done set. */
    cf_future *q = make(FX_PENDING);
    cf_future *fs2[] = {p, q};
    for (int t = 0; t < 2; t++) {
        outcome o = wait_on(fs2, 2, timeouts[t], CF_FIRST_COMPLETED);
        ASSERT_ST(o.rc, CF_ETIMEDOUT);
        ASSERT_NONE_DONE(o);
        ASSERT_NOT_DONE(o, p, q);
        o = wait_on(fs2, 2, timeouts[t], CF_FIRST_EXCEPTION);
        ASSERT_ST(o.rc, CF_ETIMEDOUT);
        ASSERT_NONE_DONE(o);
        ASSERT_NOT_DONE(o, p, q);
    }
    /* The futures are untouched by the timeouts. */
    ASSERT(cf_running(p));
    ASSERT_EQ(cf_future_state(q), CF_PENDING);
    ASSERT(cf_cancel(q));
    ASSERT_OK(cf_set_result_i64(p, 1));
    cf_future_release(q);
    release_all(fs, 4);
}

/* Every return_when over every single state: done / not_done sorted by
 * cf_done, and the status by the condition. */
static void test_each_state_each_mode(void)
{
    const cf_return_when modes[] = {CF_FIRST_COMPLETED, CF_FIRST_EXCEPTION,
                                    CF_ALL_COMPLETED};
    for (int k = 0; k < 5; k++) {
        for (int m = 0; m < 3; m++) {
            cf_future *f = make((enum fixture)k);
            bool done = cf_done(f);
            outcome o = wait_on(&f, 1, 0, modes[m]);
            ASSERT_ST(o.rc, done ? CF_OK : CF_ETIMEDOUT);
            ASSERT_EQ(o.ndone, done ? 1 : 0);
            ASSERT_EQ(o.nnot_done, done ? 0 : 1);
            ASSERT(done ? o.done[0] == f : o.not_done[0] == f);
            if (!done) {
                o = wait_on(&f, 1, 0.002, modes[m]);
                ASSERT_ST(o.rc, CF_ETIMEDOUT);
                ASSERT(o.not_done[0] == f);
                ASSERT_OK(cf_set_result_i64(f, 0));
            }
            cf_future_release(f);
        }
    }
}

/* ------------------------------------------------------------------------ */
/* Arguments                                                                 */
/* ------------------------------------------------------------------------ */

/* A future listed several times counts once: done / not_done hold distinct
 * futures, in the order of their first appearance (small inputs and large
 * ones, which take a different path). */
static void test_duplicates(void)
{
    cf_future *a = make(FX_FINISHED), *b = make(FX_PENDING);
    cf_future *fs[] = {a, a, b, a, b, b, a};
    outcome o = wait_on(fs, 7, 0, CF_FIRST_COMPLETED);
    ASSERT_OK(o.rc);
    ASSERT_DONE(o, a);
    ASSERT_NOT_DONE(o, b);
    o = wait_on(fs, 7, 0, CF_ALL_COMPLETED);
    ASSERT_ST(o.rc, CF_ETIMEDOUT);
    ASSERT_DONE(o, a);
    ASSERT_NOT_DONE(o, b);

    /* Same future many times, pending, then completed by another thread
     * while a waiter sleeps on it: ALL_COMPLETED is met with one
     * completion. */
    cf_future *rep[40];
    for (int i = 0; i < 40; i++)
        rep[i] = b;
    waiter_thread w;
    start_waiter(&w, rep, 40, LONG_WAIT, CF_ALL_COMPLETED);
    ASSERT_OK(cf_set_result_i64(b, 1));
    join_waiter(&w);
    ASSERT_OK(w.o.rc);
    ASSERT_DONE(w.o, b);
    ASSERT_ALL_DONE(w.o);
    cf_future_release(a);
    cf_future_release(b);

    /* 30 distinct futures, each listed twice (60 > 16 entries): */
    enum { D = 30 };
    cf_future *distinct[D], *twice[2 * D];
    for (int i = 0; i < D; i++)
        distinct[i] = make(i % 3 == 0 ? FX_PENDING : FX_FINISHED);
    for (int i = 0; i < D; i++) {
        twice[i] = distinct[(i * 7) % D];
        twice[D + i] = distinct[i];
    }
    o = wait_on(twice, 2 * D, 0, CF_ALL_COMPLETED);
    ASSERT_ST(o.rc, CF_ETIMEDOUT);
    ASSERT_EQ(o.ndone + o.nnot_done, D);
    size_t di = 0, ni = 0;
    for (int i = 0; i < D; i++) { /* first-appearance order */
        cf_future *f = distinct[(i * 7) % D];
        if (cf_done(f))
            ASSERT(o.done[di++] == f);
        else
            ASSERT(o.not_done[ni++] == f);
    }
    ASSERT_EQ(di, o.ndone);
    ASSERT_EQ(ni, o.nnot_done);
    for (int i = 0; i < D; i += 3)
        ASSERT_OK(cf_set_result_i64(distinct[i], 1));
    o = wait_on(twice, 2 * D, LONG_WAIT, CF_ALL_COMPLETED);
    ASSERT_OK(o.rc);
    ASSERT_EQ(o.ndone, D);
    ASSERT_EQ(o.nnot_done, 0);
    release_all(distinct, D);
}

/* wait([]) returns at once with two empty sets, for every mode. */
static void test_empty(void)
{
    const cf_return_when modes[] = {CF_FIRST_COMPLETED, CF_FIRST_EXCEPTION,
                                    CF_ALL_COMPLETED};
    for (int m = 0; m < 3; m++) {
        size_t nd = 99, nn = 99;
        ASSERT_OK(cf_wait(NULL, 0, CF_FOREVER, modes[m], NULL, &nd, NULL, &nn));
        ASSERT_EQ(nd, 0);
        ASSERT_EQ(nn, 0);
        cf_future *dummy[1] = {NULL};
        nd = nn = 99;
        ASSERT_OK(
            cf_wait(dummy, 0, CF_FOREVER, modes[m], dummy, &nd, dummy, &nn));
        ASSERT_EQ(nd, 0);
        ASSERT_EQ(nn, 0);
        ASSERT_OK(cf_wait(NULL, 0, 0, modes[m], NULL, NULL, NULL, NULL));
    }
}

/* Output arrays and counters are optional. */
static void test_optional_outputs(void)
{
    cf_future *s = make(FX_FINISHED), *p = make(FX_PENDING);
    cf_future *fs[] = {s, p};
    ASSERT_OK(cf_wait(fs, 2, 0, CF_FIRST_COMPLETED, NULL, NULL, NULL, NULL));
    ASSERT_ST(cf_wait(fs, 2, 0, CF_ALL_COMPLETED, NULL, NULL, NULL, NULL),
              CF_ETIMEDOUT);
    size_t nd = 99, nn = 99;
    cf_future *nds[2];
    ASSERT_OK(cf_wait(fs, 2, 0, CF_FIRST_COMPLETED, NULL, &nd, nds, &nn));
    ASSERT_EQ(nd, 1);
    ASSERT_EQ(nn, 1);
    ASSERT(nds[0] == p);
    cf_future *ds[2];
    nd = nn = 99;
    ASSERT_OK(cf_wait(fs, 2, 0, CF_FIRST_COMPLETED, ds, &nd, NULL, &nn));
    ASSERT_EQ(nd, 1);
    ASSERT_EQ(nn, 1);
    ASSERT(ds[0] == s);
    ASSERT_OK(cf_set_result_i64(p, 1));
    release_all(fs, 2);
}

/* Bad arguments are CF_EINVAL (Python's ValueError / TypeError), and the
 * futures are untouched. */
static void test_bad_arguments(void)
{
    cf_future *s = make(FX_FINISHED), *p = make(FX_PENDING);
    cf_future *fs[] = {s, p};
    cf_future *with_null[] = {s, NULL, p};
    cf_future *only_null[] = {NULL};
    cf_future *d[4], *nd[4];
    size_t n1, n2;
    const cf_return_when modes[] = {CF_FIRST_COMPLETED, CF_FIRST_EXCEPTION,
                                    CF_ALL_COMPLETED};
    for (int m = 0; m < 3; m++) {
        ASSERT_ST(cf_wait(NULL, 2, 0, modes[m], d, &n1, nd, &n2), CF_EINVAL);
        ASSERT_ST(cf_wait(NULL, 1, CF_FOREVER, modes[m], d, &n1, nd, &n2),
                  CF_EINVAL);
        ASSERT_ST(cf_wait(with_null, 3, 0, modes[m], d, &n1, nd, &n2),
                  CF_EINVAL);
        ASSERT_ST(cf_wait(with_null, 3, CF_FOREVER, modes[m], d, &n1, nd, &n2),
                  CF_EINVAL);
        ASSERT_ST(cf_wait(only_null, 1, CF_FOREVER, modes[m], d, &n1, nd, &n2),
                  CF_EINVAL);
        const double bad[] = {-1.0, -1e-9, -INFINITY, NAN};
        for (int t = 0; t < 4; t++) {
            ASSERT_ST(cf_wait(fs, 2, bad[t], modes[m], d, &n1, nd, &n2),
                      CF_EINVAL);
            ASSERT_ST(cf_wait(NULL, 0, bad[t], modes[m], d, &n1, nd, &n2),
                      CF_EINVAL);
        }
    }
    const int bad_when[] = {0, 4, -1, 100};
    for (int i = 0; i < 4; i++) {
        ASSERT_ST(cf_wait(fs, 2, 0, (cf_return_when)bad_when[i], d, &n1, nd,
                          &n2),
                  CF_EINVAL);
        ASSERT_ST(cf_wait(fs, 2, CF_FOREVER, (cf_return_when)bad_when[i], d,
                          &n1, nd, &n2),
                  CF_EINVAL);
    }
    ASSERT_EQ(cf_future_state(p), CF_PENDING);
    ASSERT(cf_cancel(p));
    release_all(fs, 2);
}

/* ------------------------------------------------------------------------ */
/* Wake-ups from other threads                                               */
/* ------------------------------------------------------------------------ */

typedef struct completer {
    cf_future **fs;
    size_t n;
    pthread_barrier_t *start;
} completer;

static void *complete_some(void *arg)
{
    completer *c = arg;
    pthread_barrier_wait(c->start);
    for (size_t i = 0; i < c->n; i++) {
        if (i % 3 == 2)
            ASSERT_OK(cf_set_exception(c->fs[i], 1, "x"));
        else if (i % 3 == 1 && !cf_running(c->fs[i]))
            ASSERT(cf_cancel(c->fs[i]));
        else
            ASSERT_OK(cf_set_result_i64(c->fs[i], (int64_t)i));
    }
    return NULL;
}

/* A waiter blocked with ALL_COMPLETED is woken only once the last future
 * completes, by completions from several threads at once. */
static void test_all_completed_woken_by_threads(void)
{
    enum { THREADS = 4, PER = 16, N = THREADS * PER };
    for (int round = 0; round < 20; round++) {
        cf_future *fs[N];
        for (int i = 0; i < N; i++)
            fs[i] = make(i % 2 ? FX_RUNNING : FX_PENDING);
        waiter_thread w;
        start_waiter(&w, fs, N, LONG_WAIT, CF_ALL_COMPLETED);
        pthread_barrier_t start;
        pthread_barrier_init(&start, NULL, THREADS);
        pthread_t th[THREADS];
        completer c[THREADS];
        for (int t = 0; t < THREADS; t++) {
            c[t] = (completer){fs + t * PER, PER, &start};
            ASSERT_EQ(pthread_create(&th[t], NULL, complete_some, &c[t]), 0);
        }
        for (int t = 0; t < THREADS; t++)
            ASSERT_EQ(pthread_join(th[t], NULL), 0);
        join_waiter(&w);
        pthread_barrier_destroy(&start);
        ASSERT_OK(w.o.rc);
        ASSERT_EQ(w.o.ndone, N);
        ASSERT_EQ(w.o.nnot_done, 0);
        for (int i = 0; i < N; i++)
            ASSERT(w.o.done[i] == fs[i]);
        release_all(fs, N);
    }
}

/* A FIRST_COMPLETED wait returns when another thread cancels one of the
 * futures (cancel wakes waiters); the cancelled future is in done. */
static void test_first_completed_woken_by_cancel(void)
{
    cf_future *p1 = make(FX_PENDING), *p2 = make(FX_PENDING);
    cf_future *r = make(FX_RUNNING);
    cf_future *fs[] = {p1, r, p2};
    waiter_thread w;
    start_waiter(&w, fs, 3, LONG_WAIT, CF_FIRST_COMPLETED);
    ASSERT(cf_cancel(p2));
    join_waiter(&w);
    ASSERT_OK(w.o.rc);
    ASSERT_DONE(w.o, p2);
    ASSERT_NOT_DONE(w.o, p1, r);
    ASSERT(cf_cancelled(w.o.done[0]));

    /* And a FIRST_EXCEPTION wait is not satisfied by cancellations. */
    ASSERT(cf_cancel(p1));
    outcome o = wait_on(fs, 3, 0.01, CF_FIRST_EXCEPTION);
    ASSERT_ST(o.rc, CF_ETIMEDOUT);
    ASSERT_DONE(o, p1, p2);
    ASSERT_NOT_DONE(o, r);
    ASSERT_OK(cf_set_result_i64(r, 1));
    release_all(fs, 3);
}

/* Several threads waiting on overlapping sets at once are all woken. */
static void test_many_waiters(void)
{
    enum { W = 6 };
    cf_future *a = make(FX_PENDING), *b = make(FX_PENDING);
    cf_future *fs_a[] = {a}, *fs_ab[] = {a, b}, *fs_ba[] = {b, a};
    waiter_thread w[W];
    start_waiter(&w[0], fs_a, 1, LONG_WAIT, CF_ALL_COMPLETED);
    start_waiter(&w[1], fs_ab, 2, LONG_WAIT, CF_FIRST_COMPLETED);
    start_waiter(&w[2], fs_ba, 2, LONG_WAIT, CF_ALL_COMPLETED);
    start_waiter(&w[3], fs_ba, 2, LONG_WAIT, CF_FIRST_EXCEPTION);
    start_waiter(&w[4], fs_ab, 2, LONG_WAIT, CF_FIRST_COMPLETED);
    start_waiter(&w[5], fs_a, 1, LONG_WAIT, CF_FIRST_EXCEPTION);
    ASSERT_OK(cf_set_result_i64(a, 1));
    join_waiter(&w[0]);
    join_waiter(&w[1]);
    join_waiter(&w[4]);
    join_waiter(&w[5]);
    ASSERT_OK(cf_set_exception(b, 1, "x"));
    join_waiter(&w[2]);
    join_waiter(&w[3]);
    for (int i = 0; i < W; i++)
        ASSERT_OK(w[i].o.rc);
    ASSERT_DONE(w[0].o, a);
    ASSERT_DONE(w[2].o, b, a);
    ASSERT_DONE(w[3].o, b, a);
    ASSERT(w[1].o.done[0] == a);
    ASSERT(w[4].o.done[0] == a);
    cf_future_release(a);
    cf_future_release(b);
}

/* ------------------------------------------------------------------------ */
/* Thread-pool futures mixed with standalone ones                            */
/* ------------------------------------------------------------------------ */

static void gate_task(cf_call *c)
{
    gate_pass((gate *)(uintptr_t)cf_arg_i64(c));
    cf_return_i64(c, 7);
}

static void raise_task(cf_call *c)
{
    cf_raise(c, (int)cf_arg_i64(c), "raised %d", (int)cf_arg_i64(c));
}

static void square_task(cf_call *c)
{
    int64_t v = cf_arg_i64(c);
    cf_return_i64(c, v * v);
}

/* wait() over futures of a thread pool (running, queued, raised) and
 * standalone ones together, in every mode. */
static void test_pool_and_standalone(void)
{
    cf_executor *ex = cf_thread_pool(&(cf_thread_pool_opts){.max_workers = 2});
    ASSERT(ex != NULL);
    gate g = GATE_INIT;
    intptr_t ga = (intptr_t)&g;
    cf_future *run1 = cf_submit_i64(ex, gate_task, ga);
    cf_future *run2 = cf_submit_i64(ex, gate_task, ga);
    ASSERT(run1 && run2);
    gate_wait_for(&g, 2); /* both workers busy */
    cf_future *queued = cf_submit_i64(ex, square_task, 9);
    ASSERT(queued != NULL);
    ASSERT_EQ(cf_future_state(queued), CF_PENDING);
    cf_future *s = make(FX_FINISHED), *p = make(FX_PENDING);
    cf_future *fs[] = {run1, s, queued, p, run2};

    outcome o = wait_on(fs, 5, 0, CF_FIRST_COMPLETED);
    ASSERT_OK(o.rc);
    ASSERT_DONE(o, s);
    ASSERT_NOT_DONE(o, run1, queued, p, run2);
    o = wait_on(fs, 5, 0.01, CF_ALL_COMPLETED);
    ASSERT_ST(o.rc, CF_ETIMEDOUT);
    ASSERT_DONE(o, s);

    /* A pool task that raises satisfies FIRST_EXCEPTION. */
    cf_future *bad = cf_submit_i64(ex, raise_task, 3);
    cf_future *fs2[] = {p, run1, bad};
    waiter_thread w;
    start_waiter(&w, fs2, 3, LONG_WAIT, CF_FIRST_EXCEPTION);
    gate_open(&g); /* run1, run2 finish, then queued and bad run */
    join_waiter(&w);
    ASSERT_OK(w.o.rc);
    ASSERT(cf_done(bad));
    ASSERT_ST(cf_result(bad, 0, NULL, NULL), CF_ETASK);
    ASSERT(!cf_done(p));
    ASSERT(w.o.ndone >= 1 && w.o.nnot_done >= 1);
    ASSERT(w.o.not_done[0] == p); /* p never completed: first of not_done */
    ASSERT(w.o.done[w.o.ndone - 1] == bad); /* the raised one: last input */

    /* ALL_COMPLETED returns once the standalone one completes too. */
    start_waiter(&w, fs, 5, LONG_WAIT, CF_ALL_COMPLETED);
    ASSERT_OK(cf_set_result_i64(p, 1));
    join_waiter(&w);
    ASSERT_OK(w.o.rc);
    ASSERT_DONE(w.o, run1, s, queued, p, run2);
    int64_t v;
    ASSERT_OK(cf_result_i64(queued, 0, &v));
    ASSERT_EQ(v, 81);
    ASSERT_OK(cf_result_i64(run1, 0, &v));
    ASSERT_EQ(v, 7);
    release_all(fs, 5);
    cf_future_release(bad);
    cf_executor_free(ex);
}

/* Many pool tasks: ALL_COMPLETED sees every result; futures cancelled by
 * shutdown(cancel_futures=True) count as done. */
static void test_pool_all_completed_and_shutdown_cancel(void)
{
    enum { N = 200 };
    cf_executor *ex = cf_thread_pool(&(cf_thread_pool_opts){.max_workers = 2});
    ASSERT(ex != NULL);
    cf_future *fs[N];
    for (int i = 0; i < N; i++)
        fs[i] = cf_submit_i64(ex, square_task, i);
    cf_future **done = malloc(N * sizeof *done);
    size_t nd = 0, nn = 99;
    ASSERT_OK(
        cf_wait(fs, N, LONG_WAIT, CF_ALL_COMPLETED, done, &nd, NULL, &nn));
    ASSERT_EQ(nd, N);
    ASSERT_EQ(nn, 0);
    for (int i = 0; i < N; i++) {
        int64_t v;
        ASSERT(done[i] == fs[i]);
        ASSERT_OK(cf_result_i64(fs[i], 0, &v));
        ASSERT_EQ(v, (int64_t)i * i);
    }
    release_all(fs, N);

    /* One worker blocked, the rest queued; a waiter sleeps on them all;
     * shutdown(cancel_futures) cancels the queue, the gate lets the first
     * finish, and the waiter wakes with everything done. */
    cf_executor *ex1 = cf_thread_pool(&(cf_thread_pool_opts){.max_workers = 1});
    gate g = GATE_INIT;
    cf_future *q[10];
    q[0] = cf_submit_i64(ex1, gate_task, (intptr_t)&g);
    gate_wait_for(&g, 1);
    for (int i = 1; i < 10; i++)
        q[i] = cf_submit_i64(ex1, square_task, i);
    waiter_thread w;
    start_waiter(&w, q, 10, LONG_WAIT, CF_ALL_COMPLETED);
    ASSERT_OK(cf_shutdown(ex1, false, true));
    for (int i = 1; i < 10; i++)
        ASSERT(cf_cancelled(q[i]));
    gate_open(&g);
    join_waiter(&w);
    ASSERT_OK(w.o.rc);
    ASSERT_EQ(w.o.ndone, 10);
    ASSERT_OK(cf_result(q[0], 0, NULL, NULL));
    release_all(q, 10);
    cf_executor_free(ex1);
    free(done);
    cf_executor_free(ex);
}

typedef struct nested {
    cf_executor *ex;
    cf_future *standalone;
    _Atomic int tid;
    int rc;
    size_t ndone;
} nested;

static void nested_wait_task(cf_call *c)
{
    nested *n = (nested *)(uintptr_t)cf_arg_i64(c);
    /* A task of the same (1-worker) pool, queued behind this one. */
    cf_future *inner = cf_submit_i64(n->ex, square_task, 5);
    ASSERT(inner != NULL);
    cf_future *fs[] = {n->standalone, inner};
    atomic_store(&n->tid, current_tid());
    n->rc = cf_wait(fs, 2, LONG_WAIT, CF_ALL_COMPLETED, NULL, &n->ndone, NULL,
                    NULL);
    int64_t v = 0;
    if (cf_result_i64(inner, 0, &v) != CF_OK)
        v = -1;
    cf_future_release(inner);
    cf_return_i64(c, v);
}

/* A pool task may wait on standalone futures and on a task of its own
 * saturated pool: the nested wait runs the queued task meanwhile (no
 * deadlock), and another thread's set_result wakes it. */
static void test_wait_inside_pool_task(void)
{
    cf_executor *ex = cf_thread_pool(&(cf_thread_pool_opts){.max_workers = 1});
    ASSERT(ex != NULL);
    nested n = {.ex = ex, .standalone = make(FX_PENDING), .rc = 99};
    cf_future *outer = cf_submit_i64(ex, nested_wait_task, (intptr_t)&n);
    ASSERT(outer != NULL);
    wait_until_blocked(&n.tid);
    ASSERT_OK(cf_set_result_i64(n.standalone, 1));
    int64_t v = 0;
    ASSERT_OK(cf_result_i64(outer, LONG_WAIT, &v));
    ASSERT_OK(n.rc);
    ASSERT_EQ(n.ndone, 2);
    ASSERT_EQ(v, 25);
    cf_future_release(outer);
    cf_future_release(n.standalone);
    cf_executor_free(ex);
}

/* ------------------------------------------------------------------------ */
/* No waiter left behind, and scale                                          */
/* ------------------------------------------------------------------------ */

static void count_cb(cf_future *f, void *arg)
{
    (void)f;
    atomic_fetch_add((_Atomic int *)arg, 1);
}

/* cf_wait removes every waiter it installed before returning: 100000
 * polling waits plus thousands that install their waiters and time out,
 * all on one long-lived pending future, which is then completed.  Were
 * waiters left registered, completing it would touch freed memory (ASan)
 * or walk a huge list. */
static void test_no_waiter_left_behind(void)
{
    cf_future *f = make(FX_PENDING), *other = make(FX_PENDING);
    _Atomic int runs = 0;
    ASSERT_OK(cf_add_done_callback(f, count_cb, &runs));
    cf_future *fs[] = {f, other};
    const cf_return_when modes[] = {CF_FIRST_COMPLETED, CF_FIRST_EXCEPTION,
                                    CF_ALL_COMPLETED};
    for (int i = 0; i < 100000; i++) /* timeout 0: polls */
        ASSERT_ST(cf_wait(fs, 2, 0, modes[i % 3], NULL, NULL, NULL, NULL),
                  CF_ETIMEDOUT);
    /* A tiny timeout: installs the waiters, then times out.  (Each such
     * call costs a timed sleep in the kernel, hence fewer of them.) */
    for (int i = 0; i < 5000; i++)
        ASSERT_ST(cf_wait(fs, 2, 1e-9, modes[i % 3], NULL, NULL, NULL, NULL),
                  CF_ETIMEDOUT);
    for (int i = 0; i < 100; i++) /* waits that really sleep a little */
        ASSERT_ST(cf_wait(&f, 1, 1e-4, modes[i % 3], NULL, NULL, NULL, NULL),
                  CF_ETIMEDOUT);
    ASSERT_OK(cf_set_result_i64(f, 1));
    ASSERT_EQ(atomic_load(&runs), 1);
    ASSERT(cf_cancel(other));
    release_all(fs, 2);
}

/* The same with waits that are woken for real: each round one waiter
 * thread sleeps on a long-lived future plus a fresh one, and the fresh one
 * completes it. */
static void test_no_waiter_left_after_wakeup(void)
{
    cf_future *longlived = make(FX_PENDING);
    for (int i = 0; i < 200; i++) {
        cf_future *fresh = make(FX_PENDING);
        cf_future *fs[] = {longlived, fresh};
        waiter_thread w;
        start_waiter(&w, fs, 2, LONG_WAIT, CF_FIRST_COMPLETED);
        ASSERT_OK(cf_set_result_i64(fresh, i));
        join_waiter(&w);
        ASSERT_OK(w.o.rc);
        ASSERT_DONE(w.o, fresh);
        cf_future_release(fresh);
    }
    ASSERT_OK(cf_set_result_i64(longlived, 1)); /* would touch dead waiters */
    cf_future_release(longlived);
}

typedef struct late {
    cf_future **fs;
    size_t n;
    _Atomic int *main_tid;
} late;

static void *complete_late(void *arg)
{
    late *l = arg;
    wait_until_blocked(l->main_tid);
    for (size_t i = 0; i < l->n; i++)
        ASSERT_OK(cf_set_result_i64(l->fs[i], -1));
    return NULL;
}

/* One cf_wait over 1,000,000 futures (almost all already done, a few
 * pending that another thread completes) finishes in linear time; the
 * CTest timeout is the only bound. */
static void test_million_futures(void)
{
    enum { N = 1000000, PENDING = 3 };
    cf_future **fs = malloc(N * sizeof *fs);
    cf_future **done = malloc(N * sizeof *done);
    cf_future **not_done = malloc(N * sizeof *not_done);
    ASSERT(fs && done && not_done);
    const size_t pending_at[PENDING] = {17, N / 2, N - 1};
    for (size_t i = 0; i < N; i++) {
        fs[i] = cf_future_new();
        ASSERT(fs[i] != NULL);
    }
    size_t k = 0;
    for (size_t i = 0; i < N; i++) {
        if (k < PENDING && i == pending_at[k]) {
            k++;
            continue;
        }
        ASSERT_OK(cf_set_result_i64(fs[i], (int64_t)i));
    }
    size_t nd, nn;
    ASSERT_ST(cf_wait(fs, N, 0, CF_ALL_COMPLETED, done, &nd, not_done, &nn),
              CF_ETIMEDOUT);
    ASSERT_EQ(nd, N - PENDING);
    ASSERT_EQ(nn, PENDING);
    for (size_t i = 0; i < PENDING; i++)
        ASSERT(not_done[i] == fs[pending_at[i]]);
    ASSERT_OK(cf_wait(fs, N, CF_FOREVER, CF_FIRST_COMPLETED, done, &nd,
                      not_done, &nn));
    ASSERT_EQ(nd, N - PENDING);
    ASSERT(done[0] == fs[0] && done[nd - 1] == fs[N - 2]);

    /* Block on all of them; another thread completes the last three. */
    cf_future *pend[PENDING];
    for (size_t i = 0; i < PENDING; i++)
        pend[i] = fs[pending_at[i]];
    _Atomic int tid = 0;
    late l = {pend, PENDING, &tid};
    pthread_t th;
    ASSERT_EQ(pthread_create(&th, NULL, complete_late, &l), 0);
    atomic_store(&tid, current_tid());
    ASSERT_OK(
        cf_wait(fs, N, LONG_WAIT, CF_ALL_COMPLETED, done, &nd, not_done, &nn));
    ASSERT_EQ(pthread_join(th, NULL), 0);
    ASSERT_EQ(nd, N);
    ASSERT_EQ(nn, 0);
    for (size_t i = 0; i < N; i += 9973)
        ASSERT(done[i] == fs[i]);
    ASSERT(done[N - 1] == fs[N - 1]);
    release_all(fs, N);
    free(fs);
    free(done);
    free(not_done);
}

TEST_MAIN(T(test_first_completed),
          T(test_first_completed_some_already_completed),
          T(test_first_exception),
          T(test_first_exception_some_already_complete),
          T(test_first_exception_one_already_failed),
          T(test_first_exception_none_raised), T(test_all_completed),
          T(test_timeout), T(test_each_state_each_mode), T(test_duplicates),
          T(test_empty), T(test_optional_outputs), T(test_bad_arguments),
          T(test_all_completed_woken_by_threads),
          T(test_first_completed_woken_by_cancel), T(test_many_waiters),
          T(test_pool_and_standalone),
          T(test_pool_all_completed_and_shutdown_cancel),
          T(test_wait_inside_pool_task), T(test_no_waiter_left_behind),
          T(test_no_waiter_left_after_wakeup), T(test_million_futures))

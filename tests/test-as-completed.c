/*
 * test-as-completed.c -- cf_as_completed (concurrent.futures.as_completed).
 *
 * Ports the behaviours of CPython's Lib/test/test_concurrent_futures/
 * test_as_completed.py (every future yielded once, duplicates once, the
 * overall timeout with the completed ones yielded first, the "N (of M)
 * futures unfinished" count) to the C API, plus what the C iterator adds:
 * already-done futures first in input order, cf_as_completed_add while
 * iterating, cf_as_completed_drain, cf_as_completed_pending, freeing the
 * iterator early, and a million futures.
 *
 * No sleeps sequence anything: threads meet on barriers and gates; where
 * the iterating thread should be blocked in cf_as_completed_next before a
 * future completes, its state is watched through /proc (bounded; if it
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

/* Index of f in fs[0..n), or -1. */
static long index_of(cf_future *const *fs, size_t n, const cf_future *f)
{
    for (size_t i = 0; i < n; i++)
        if (fs[i] == f)
            return (long)i;
    return -1;
}

/* Takes the next future, which must be `want`. */
static void expect_next(cf_as_completed *it, cf_future *want)
{
    cf_future *f = NULL;
    ASSERT_OK(cf_as_completed_next(it, &f));
    ASSERT(f == want);
    ASSERT(cf_done(f));
}

static void expect_end(cf_as_completed *it)
{
    cf_future *f = NULL;
    ASSERT_ST(cf_as_completed_next(it, &f), CF_END);
    ASSERT_ST(cf_as_completed_next(it, &f), CF_END); /* and it stays ended */
    ASSERT_EQ(cf_as_completed_pending(it), 0);
}

static void square_task(cf_call *c)
{
    int64_t v = cf_arg_i64(c);
    cf_return_i64(c, v * v);
}

static void gate_task(cf_call *c)
{
    gate_pass((gate *)(uintptr_t)cf_arg_i64(c));
    cf_return_i64(c, 7);
}

/* ------------------------------------------------------------------------ */
/* CPython's AsCompletedTests                                                */
/* ------------------------------------------------------------------------ */

/* test_no_timeout: as_completed over done futures of every kind and two
 * pool futures yields each of the five exactly once, then stops. */
static void test_no_timeout(void)
{
    cf_executor *ex = cf_thread_pool(&(cf_thread_pool_opts){.max_workers = 2});
    ASSERT(ex != NULL);
    cf_future *fs[5] = {make(FX_CANCELLED), make(FX_RAISED), make(FX_FINISHED),
                        cf_submit_i64(ex, square_task, 21),
                        cf_submit_i64(ex, square_task, 6)};
    ASSERT(fs[3] && fs[4]);
    cf_as_completed *it = cf_as_completed_new(fs, 5, CF_FOREVER);
    ASSERT(it != NULL);
    int seen[5] = {0};
    cf_future *f;
    for (int i = 0; i < 5; i++) {
        ASSERT_OK(cf_as_completed_next(it, &f));
        ASSERT(cf_done(f));
        long k = index_of(fs, 5, f);
        ASSERT(k >= 0);
        seen[k]++;
    }
    expect_end(it);
    for (int i = 0; i < 5; i++)
        ASSERT_EQ(seen[i], 1);
    int64_t v;
    ASSERT_OK(cf_result_i64(fs[3], 0, &v));
    ASSERT_EQ(v, 441);
    cf_as_completed_free(it);
    release_all(fs, 5);
    cf_executor_free(ex);
}

/* Futures already done come first, in input order; the ones completing
 * later follow in completion order. */
static void test_done_first_in_input_order(void)
{
    cf_future *p1 = make(FX_PENDING), *s1 = make(FX_FINISHED);
    cf_future *e = make(FX_RAISED), *p2 = make(FX_RUNNING);
    cf_future *c = make(FX_CANCELLED), *s2 = make(FX_FINISHED);
    cf_future *fs[] = {p1, s1, e, p2, c, s2};
    cf_as_completed *it = cf_as_completed_new(fs, 6, CF_FOREVER);
    ASSERT(it != NULL);
    ASSERT_EQ(cf_as_completed_pending(it), 6);
    /* Completing now (after the iterator was made) puts p2 after them. */
    ASSERT_OK(cf_set_result_i64(p2, 2));
    expect_next(it, s1);
    expect_next(it, e);
    expect_next(it, c);
    expect_next(it, s2);
    expect_next(it, p2);
    ASSERT_EQ(cf_as_completed_pending(it), 1);
    ASSERT(cf_cancel(p1));
    expect_next(it, p1);
    expect_end(it);
    cf_as_completed_free(it);
    release_all(fs, 6);
}

/* test_future_times_out: with a timeout (0 and a short one) and one future
 * that never completes, the completed ones are yielded, then TimeoutError
 * (CF_ETIMEDOUT); the late one was not yielded. */
static void test_future_times_out(void)
{
    const double timeouts[] = {0, 0.1};
    for (int t = 0; t < 2; t++) {
        cf_future *c = make(FX_CANCELLED), *e = make(FX_RAISED);
        cf_future *s = make(FX_FINISHED), *p = make(FX_RUNNING);
        cf_future *fs[] = {c, e, s, p};
        cf_as_completed *it = cf_as_completed_new(fs, 4, timeouts[t]);
        ASSERT(it != NULL);
        cf_future *f = NULL;
        int got = 0;
        int rc;
        while ((rc = cf_as_completed_next(it, &f)) == CF_OK) {
            ASSERT(f != p);
            ASSERT(f == fs[got]); /* the done ones, in input order */
            got++;
        }
        ASSERT_ST(rc, CF_ETIMEDOUT);
        ASSERT_EQ(got, 3);
        ASSERT_EQ(cf_as_completed_pending(it), 1);
        /* The timeout has expired: further calls time out at once... */
        ASSERT_ST(cf_as_completed_next(it, &f), CF_ETIMEDOUT);
        /* ...but iteration may go on: a future done meanwhile is yielded. */
        ASSERT_OK(cf_set_result_i64(p, 1));
        expect_next(it, p);
        expect_end(it);
        cf_as_completed_free(it);
        release_all(fs, 4);
    }
}

/* test_correct_timeout_exception_msg: "2 (of 4) futures unfinished" --
 * after the timeout, pending() counts the two not yet yielded. */
static void test_timeout_unfinished_count(void)
{
    cf_future *c = make(FX_CANCELLED), *p = make(FX_PENDING);
    cf_future *r = make(FX_RUNNING), *s = make(FX_FINISHED);
    cf_future *fs[] = {c, p, r, s};
    cf_as_completed *it = cf_as_completed_new(fs, 4, 0);
    ASSERT(it != NULL);
    expect_next(it, c);
    expect_next(it, s);
    cf_future *f;
    ASSERT_ST(cf_as_completed_next(it, &f), CF_ETIMEDOUT);
    ASSERT_EQ(cf_as_completed_pending(it), 2);
    cf_as_completed_free(it);
    ASSERT(cf_cancel(p));
    ASSERT_OK(cf_set_result_i64(r, 0));
    release_all(fs, 4);
}

/* With a timeout of 0 and every future done, all are yielded and the
 * iteration ends normally (no TimeoutError). */
static void test_zero_timeout_all_done(void)
{
    cf_future *fs[] = {make(FX_FINISHED), make(FX_CANCELLED), make(FX_RAISED)};
    cf_as_completed *it = cf_as_completed_new(fs, 3, 0);
    ASSERT(it != NULL);
    for (int i = 0; i < 3; i++)
        expect_next(it, fs[i]);
    expect_end(it);
    cf_as_completed_free(it);
    release_all(fs, 3);
}

typedef struct delayed {
    cf_future *f;
    _Atomic int *tid; /* the iterating thread, blocked once this is set */
    int how;          /* 0 set_result, 1 cancel, 2 set_exception */
} delayed;

static void *complete_when_blocked(void *arg)
{
    delayed *d = arg;
    wait_until_blocked(d->tid);
    if (d->how == 0)
        ASSERT_OK(cf_set_result_i64(d->f, 5));
    else if (d->how == 1)
        ASSERT(cf_cancel(d->f));
    else
        ASSERT_OK(cf_set_exception(d->f, 5, "late"));
    return NULL;
}

/* test_duplicate_futures: the same future three times is yielded once;
 * here it completes from another thread while the iterator is blocked. */
static void test_duplicate_futures(void)
{
    for (int how = 0; how < 3; how++) {
        cf_future *f = make(FX_PENDING);
        cf_future *fs[] = {f, f, f};
        cf_as_completed *it = cf_as_completed_new(fs, 3, LONG_WAIT);
        ASSERT(it != NULL);
        ASSERT_EQ(cf_as_completed_pending(it), 1);
        _Atomic int tid = 0;
        delayed d = {f, &tid, how};
        pthread_t th;
        ASSERT_EQ(pthread_create(&th, NULL, complete_when_blocked, &d), 0);
        atomic_store(&tid, current_tid());
        expect_next(it, f);
        expect_end(it);
        ASSERT_EQ(pthread_join(th, NULL), 0);
        cf_as_completed_free(it);
        cf_future_release(f);
    }

    /* Many duplicates (the large-input path), done and pending mixed. */
    enum { D = 25 };
    cf_future *distinct[D], *rep[4 * D];
    for (int i = 0; i < D; i++)
        distinct[i] = make(i % 2 ? FX_FINISHED : FX_PENDING);
    for (int i = 0; i < 4 * D; i++)
        rep[i] = distinct[(i * 3) % D];
    cf_as_completed *it = cf_as_completed_new(rep, 4 * D, LONG_WAIT);
    ASSERT(it != NULL);
    ASSERT_EQ(cf_as_completed_pending(it), D);
    for (int i = 0; i < D; i += 2)
        ASSERT_OK(cf_set_result_i64(distinct[i], i));
    int seen[D] = {0};
    cf_future *f;
    for (int i = 0; i < D; i++) {
        ASSERT_OK(cf_as_completed_next(it, &f));
        long k = index_of(distinct, D, f);
        ASSERT(k >= 0);
        seen[k]++;
    }
    expect_end(it);
    for (int i = 0; i < D; i++)
        ASSERT_EQ(seen[i], 1);
    cf_as_completed_free(it);
    release_all(distinct, D);
}

/* as_completed([]) ends at once. */
static void test_empty(void)
{
    cf_as_completed *it = cf_as_completed_new(NULL, 0, CF_FOREVER);
    ASSERT(it != NULL);
    ASSERT_EQ(cf_as_completed_pending(it), 0);
    expect_end(it);
    cf_future *out[4];
    ASSERT_EQ(cf_as_completed_drain(it, out, 4), 0);
    cf_as_completed_free(it);

    cf_future *dummy[1] = {NULL};
    it = cf_as_completed_new(dummy, 0, 0);
    ASSERT(it != NULL);
    expect_end(it);
    cf_as_completed_free(it);
}

/* Python's generator drops its references to yielded futures (issue
 * 14406); the C iterator instead documents that it holds a reference to
 * each future until freed: the caller may release its own right away. */
static void test_iterator_holds_references(void)
{
    cf_future *fs[] = {make(FX_FINISHED), make(FX_PENDING), make(FX_RAISED)};
    cf_future *pending = fs[1];
    cf_as_completed *it = cf_as_completed_new(fs, 3, CF_FOREVER);
    ASSERT(it != NULL);
    cf_future_retain(pending); /* to complete it below */
    release_all(fs, 3);        /* the iterator keeps them alive */
    ASSERT_OK(cf_set_result_i64(pending, 9));
    cf_future_release(pending);
    cf_future *f;
    int64_t v;
    ASSERT_OK(cf_as_completed_next(it, &f));
    ASSERT_OK(cf_result_i64(f, 0, &v));
    ASSERT_EQ(v, 42);
    ASSERT_OK(cf_as_completed_next(it, &f));
    ASSERT_ST(cf_result(f, 0, NULL, NULL), CF_ETASK);
    ASSERT_OK(cf_as_completed_next(it, &f));
    ASSERT_OK(cf_result_i64(f, 0, &v));
    ASSERT_EQ(v, 9);
    expect_end(it);
    cf_as_completed_free(it); /* drops the last references (LSan) */
}

/* ------------------------------------------------------------------------ */
/* add, drain, pending                                                       */
/* ------------------------------------------------------------------------ */

/* cf_as_completed_add while iterating: new futures join the iteration
 * (done ones queued at once, in input order), duplicates of futures
 * already in it are ignored, pending() counts them. */
static void test_add_while_iterating(void)
{
    cf_future *a = make(FX_FINISHED), *b = make(FX_PENDING);
    cf_future *fs1[] = {a, b};
    cf_as_completed *it = cf_as_completed_new(fs1, 2, LONG_WAIT);
    ASSERT(it != NULL);
    expect_next(it, a);
    ASSERT_EQ(cf_as_completed_pending(it), 1);

    cf_future *c = make(FX_FINISHED), *d = make(FX_PENDING);
    cf_future *e = make(FX_CANCELLED);
    cf_future *fs2[] = {c, b, a, d, c, e};
    ASSERT_OK(cf_as_completed_add(it, fs2, 6));
    ASSERT_EQ(cf_as_completed_pending(it), 4); /* b, c, d, e */
    expect_next(it, c);
    expect_next(it, e);
    ASSERT_EQ(cf_as_completed_pending(it), 2);
    ASSERT_OK(cf_set_result_i64(d, 1));
    ASSERT_OK(cf_set_exception(b, 1, "b"));
    expect_next(it, d);
    expect_next(it, b);
    expect_end(it);

    /* Adding after the end starts it again; adding nothing is fine. */
    ASSERT_OK(cf_as_completed_add(it, NULL, 0));
    cf_future *f = make(FX_PENDING);
    ASSERT_OK(cf_as_completed_add(it, &f, 1));
    ASSERT_EQ(cf_as_completed_pending(it), 1);
    _Atomic int tid = 0;
    delayed dl = {f, &tid, 0};
    pthread_t th;
    ASSERT_EQ(pthread_create(&th, NULL, complete_when_blocked, &dl), 0);
    atomic_store(&tid, current_tid());
    expect_next(it, f);
    ASSERT_EQ(pthread_join(th, NULL), 0);
    expect_end(it);
    cf_as_completed_free(it);
    cf_future *all[] = {a, b, c, d, e, f};
    release_all(all, 6);
}

/* cf_as_completed_drain takes what is done now, without blocking, up to
 * max per call, in queue order; it mixes with next() and pending(). */
static void test_drain(void)
{
    enum { DONE = 10, PEND = 5, N = DONE + PEND };
    cf_future *fs[N];
    for (int i = 0; i < N; i++)
        fs[i] = make(i < PEND ? FX_PENDING : FX_FINISHED);
    cf_as_completed *it = cf_as_completed_new(fs, N, CF_FOREVER);
    ASSERT(it != NULL);
    cf_future *out[N + 5];
    ASSERT_EQ(cf_as_completed_drain(it, out, 0), 0);
    ASSERT_EQ(cf_as_completed_drain(it, out, 4), 4);
    for (int i = 0; i < 4; i++)
        ASSERT(out[i] == fs[PEND + i]);
    ASSERT_EQ(cf_as_completed_pending(it), N - 4);
    expect_next(it, fs[PEND + 4]);
    ASSERT_EQ(cf_as_completed_drain(it, out, 100), 5);
    for (int i = 0; i < 5; i++)
        ASSERT(out[i] == fs[PEND + 5 + i]);
    ASSERT_EQ(cf_as_completed_drain(it, out, 100), 0); /* nothing ready */
    ASSERT_EQ(cf_as_completed_pending(it), PEND);

    /* Complete three (in the order 3, 0, 4): drained in that order. */
    ASSERT_OK(cf_set_result_i64(fs[3], 3));
    ASSERT(cf_cancel(fs[0]));
    ASSERT_OK(cf_set_exception(fs[4], 4, "x"));
    ASSERT_EQ(cf_as_completed_drain(it, out, N), 3);
    ASSERT(out[0] == fs[3] && out[1] == fs[0] && out[2] == fs[4]);
    ASSERT_EQ(cf_as_completed_pending(it), 2);
    ASSERT_OK(cf_set_result_i64(fs[1], 1));
    ASSERT_OK(cf_set_result_i64(fs[2], 2));
    ASSERT_EQ(cf_as_completed_drain(it, out, 1), 1);
    ASSERT(out[0] == fs[1]);
    expect_next(it, fs[2]);
    expect_end(it);
    ASSERT_EQ(cf_as_completed_drain(it, out, N), 0);
    cf_as_completed_free(it);
    release_all(fs, N);
}

/* pending() counts down by one per yielded future and never counts a
 * duplicate. */
static void test_pending_counts(void)
{
    enum { N = 20 };
    cf_future *fs[N];
    for (int i = 0; i < N; i++)
        fs[i] = make(FX_PENDING);
    cf_as_completed *it = cf_as_completed_new(fs, N, CF_FOREVER);
    ASSERT(it != NULL);
    ASSERT_EQ(cf_as_completed_pending(it), N);
    ASSERT_OK(cf_as_completed_add(it, fs, N)); /* all duplicates */
    ASSERT_EQ(cf_as_completed_pending(it), N);
    for (int i = 0; i < N; i++) {
        ASSERT_OK(cf_set_result_i64(fs[i], i));
        ASSERT_EQ(cf_as_completed_pending(it), (size_t)(N - i)); /* queued,
                                                         not yet yielded */
        expect_next(it, fs[i]);
        ASSERT_EQ(cf_as_completed_pending(it), (size_t)(N - i - 1));
    }
    expect_end(it);
    cf_as_completed_free(it);
    release_all(fs, N);
}

/* ------------------------------------------------------------------------ */
/* Completions from other threads                                            */
/* ------------------------------------------------------------------------ */

typedef struct completer {
    cf_future **fs;
    size_t n;
    pthread_barrier_t *start;
} completer;

static void *complete_range(void *arg)
{
    completer *c = arg;
    pthread_barrier_wait(c->start);
    for (size_t i = 0; i < c->n; i++) {
        switch (i % 4) {
        case 0:
        case 1:
            ASSERT_OK(cf_set_result_i64(c->fs[i], 1));
            break;
        case 2:
            ASSERT(cf_cancel(c->fs[i]));
            break;
        default:
            ASSERT_OK(cf_set_exception(c->fs[i], 1, "x"));
            break;
        }
    }
    return NULL;
}

/* Futures completing (result, exception, cancel) from several threads
 * while the iterator runs: each is yielded exactly once, done, and the
 * iteration ends. */
static void test_completions_from_threads(void)
{
    enum { THREADS = 4, PER = 250, N = THREADS * PER };
    for (int round = 0; round < 5; round++) {
        cf_future *fs[N];
        for (int i = 0; i < N; i++)
            fs[i] = make(FX_PENDING);
        cf_as_completed *it = cf_as_completed_new(fs, N, LONG_WAIT);
        ASSERT(it != NULL);
        pthread_barrier_t start;
        pthread_barrier_init(&start, NULL, THREADS + 1);
        pthread_t th[THREADS];
        completer c[THREADS];
        for (int t = 0; t < THREADS; t++) {
            c[t] = (completer){fs + t * PER, PER, &start};
            ASSERT_EQ(pthread_create(&th[t], NULL, complete_range, &c[t]), 0);
        }
        pthread_barrier_wait(&start);
        static unsigned char seen[N];
        memset(seen, 0, sizeof seen);
        cf_future *f;
        cf_future *batch[16];
        int got = 0;
        while (got < N) {
            /* Alternate blocking next() and non-blocking drain(). */
            if (got % 3 == 0) {
                size_t k = cf_as_completed_drain(it, batch, 16);
                for (size_t j = 0; j < k; j++) {
                    long idx = index_of(fs, N, batch[j]);
                    ASSERT(idx >= 0 && cf_done(batch[j]));
                    seen[idx]++;
                }
                got += (int)k;
                if (k > 0)
                    continue;
            }
            ASSERT_OK(cf_as_completed_next(it, &f));
            long idx = index_of(fs, N, f);
            ASSERT(idx >= 0 && cf_done(f));
            seen[idx]++;
            got++;
        }
        expect_end(it);
        for (int t = 0; t < THREADS; t++)
            ASSERT_EQ(pthread_join(th[t], NULL), 0);
        for (int i = 0; i < N; i++)
            ASSERT_EQ(seen[i], 1);
        pthread_barrier_destroy(&start);
        cf_as_completed_free(it);
        release_all(fs, N);
    }
}

/* Cancelled futures are done and yielded: cancelled from another thread
 * while the iterator sleeps, and queued pool tasks cancelled by
 * shutdown(cancel_futures=True). */
static void test_cancelled_futures_yielded(void)
{
    cf_future *p = make(FX_PENDING), *q = make(FX_PENDING);
    cf_future *fs[] = {p, q};
    cf_as_completed *it = cf_as_completed_new(fs, 2, LONG_WAIT);
    ASSERT(it != NULL);
    _Atomic int tid = 0;
    delayed d = {q, &tid, 1};
    pthread_t th;
    ASSERT_EQ(pthread_create(&th, NULL, complete_when_blocked, &d), 0);
    atomic_store(&tid, current_tid());
    expect_next(it, q);
    ASSERT(cf_cancelled(q));
    ASSERT_EQ(pthread_join(th, NULL), 0);
    ASSERT(cf_cancel(p));
    expect_next(it, p);
    expect_end(it);
    cf_as_completed_free(it);
    release_all(fs, 2);

    cf_executor *ex = cf_thread_pool(&(cf_thread_pool_opts){.max_workers = 1});
    ASSERT(ex != NULL);
    gate g = GATE_INIT;
    cf_future *pf[6];
    pf[0] = cf_submit_i64(ex, gate_task, (intptr_t)&g);
    ASSERT(pf[0] != NULL);
    gate_wait_for(&g, 1);
    for (int i = 1; i < 6; i++) {
        pf[i] = cf_submit_i64(ex, square_task, i);
        ASSERT(pf[i] != NULL);
    }
    it = cf_as_completed_new(pf, 6, LONG_WAIT);
    ASSERT(it != NULL);
    ASSERT_OK(cf_shutdown(ex, false, true));
    for (int i = 1; i < 6; i++) {
        cf_future *f;
        ASSERT_OK(cf_as_completed_next(it, &f));
        ASSERT(cf_cancelled(f));
        ASSERT(index_of(pf, 6, f) >= 1);
    }
    gate_open(&g);
    expect_next(it, pf[0]);
    ASSERT(!cf_cancelled(pf[0]));
    expect_end(it);
    cf_as_completed_free(it);
    release_all(pf, 6);
    cf_executor_free(ex);
}

/* ------------------------------------------------------------------------ */
/* Freeing early                                                             */
/* ------------------------------------------------------------------------ */

/* Freeing the iterator before the end removes its waiters: futures that
 * complete afterwards must not touch the freed iterator (ASan). */
static void test_free_early(void)
{
    enum { N = 100 };
    cf_future *fs[N];
    for (int i = 0; i < N; i++)
        fs[i] = make(i % 10 == 0 ? FX_FINISHED : FX_PENDING);
    cf_as_completed *it = cf_as_completed_new(fs, N, CF_FOREVER);
    ASSERT(it != NULL);
    expect_next(it, fs[0]);
    ASSERT_OK(cf_set_result_i64(fs[1], 1)); /* queued, never taken */
    cf_as_completed_free(it);
    for (int i = 2; i < N; i++) {
        if (i % 10 == 0)
            continue;
        if (i % 3 == 0)
            ASSERT(cf_cancel(fs[i]));
        else
            ASSERT_OK(cf_set_result_i64(fs[i], i));
    }
    release_all(fs, N);

    /* Freed without ever calling next(). */
    for (int i = 0; i < N; i++)
        fs[i] = make(FX_PENDING);
    it = cf_as_completed_new(fs, N, 0);
    ASSERT(it != NULL);
    cf_as_completed_free(it);
    for (int i = 0; i < N; i++)
        ASSERT_OK(cf_set_exception(fs[i], i, "late"));
    release_all(fs, N);
}

/* 100000 iterators made and freed on one long-lived pending future leave
 * no waiter behind: completing it afterwards touches nothing freed. */
static void test_no_waiter_left_behind(void)
{
    cf_future *longlived = make(FX_PENDING), *done = make(FX_FINISHED);
    cf_future *fs[] = {done, longlived};
    for (int i = 0; i < 100000; i++) {
        cf_as_completed *it = cf_as_completed_new(fs, 2, (i % 2) ? 0 : 1e-9);
        ASSERT(it != NULL);
        if (i % 4 == 0) {
            expect_next(it, done);
            cf_future *f;
            ASSERT_ST(cf_as_completed_next(it, &f), CF_ETIMEDOUT);
        }
        cf_as_completed_free(it);
    }
    ASSERT_OK(cf_set_result_i64(longlived, 1));
    release_all(fs, 2);
}

typedef struct racer {
    cf_future **fs;
    size_t n;
    pthread_barrier_t *start;
} racer;

static void *complete_all_racing(void *arg)
{
    racer *r = arg;
    pthread_barrier_wait(r->start);
    for (size_t i = 0; i < r->n; i++)
        ASSERT_OK(cf_set_result_i64(r->fs[i], (int64_t)i));
    return NULL;
}

/* Freeing the iterator while another thread is completing its futures:
 * every completion either reaches the iterator before it is freed or
 * finds no waiter (ASan checks for use after free). */
static void test_free_while_completing(void)
{
    enum { N = 2000 };
    for (int round = 0; round < 20; round++) {
        cf_future **fs = malloc(N * sizeof *fs);
        ASSERT(fs != NULL);
        for (int i = 0; i < N; i++)
            fs[i] = make(FX_PENDING);
        cf_as_completed *it = cf_as_completed_new(fs, N, CF_FOREVER);
        ASSERT(it != NULL);
        pthread_barrier_t start;
        pthread_barrier_init(&start, NULL, 2);
        racer r = {fs, N, &start};
        pthread_t th;
        ASSERT_EQ(pthread_create(&th, NULL, complete_all_racing, &r), 0);
        pthread_barrier_wait(&start);
        cf_future *batch[8];
        for (int k = 0; k < round; k++) /* take a few, or none */
            (void)cf_as_completed_drain(it, batch, 8);
        cf_as_completed_free(it);
        ASSERT_EQ(pthread_join(th, NULL), 0);
        pthread_barrier_destroy(&start);
        release_all(fs, N);
        free(fs);
    }
}

/* ------------------------------------------------------------------------ */
/* Scale and executors                                                       */
/* ------------------------------------------------------------------------ */

/* An iterator over 1,000,000 finished futures yields them all, in input
 * order, then ends (bounded only by the CTest timeout). */
static void test_million_finished(void)
{
    enum { N = 1000000 };
    cf_future **fs = malloc(N * sizeof *fs);
    ASSERT(fs != NULL);
    for (size_t i = 0; i < N; i++) {
        fs[i] = cf_future_new();
        ASSERT(fs[i] != NULL);
        ASSERT_OK(cf_set_result_i64(fs[i], (int64_t)i));
    }
    cf_as_completed *it = cf_as_completed_new(fs, N, CF_FOREVER);
    ASSERT(it != NULL);
    ASSERT_EQ(cf_as_completed_pending(it), N);
    cf_future *batch[1000];
    size_t i = 0;
    while (i < N / 2) { /* half through next() */
        cf_future *f;
        ASSERT_OK(cf_as_completed_next(it, &f));
        ASSERT(f == fs[i]);
        i++;
    }
    for (size_t k; (k = cf_as_completed_drain(it, batch, 1000)) > 0;) {
        for (size_t j = 0; j < k; j++)
            ASSERT(batch[j] == fs[i + j]);
        i += k;
    }
    ASSERT_EQ(i, N);
    expect_end(it);
    cf_as_completed_free(it);
    release_all(fs, N);
    free(fs);
}

/* Thread-pool futures and standalone futures in one iteration. */
static void test_pool_and_standalone(void)
{
    cf_executor *ex = cf_thread_pool(&(cf_thread_pool_opts){.max_workers = 2});
    ASSERT(ex != NULL);
    gate g = GATE_INIT;
    cf_future *r1 = cf_submit_i64(ex, gate_task, (intptr_t)&g);
    cf_future *r2 = cf_submit_i64(ex, gate_task, (intptr_t)&g);
    ASSERT(r1 && r2);
    gate_wait_for(&g, 2);
    cf_future *queued = cf_submit_i64(ex, square_task, 12);
    cf_future *s = make(FX_FINISHED), *p = make(FX_PENDING);
    cf_future *fs[] = {r1, p, queued, s, r2};
    cf_as_completed *it = cf_as_completed_new(fs, 5, LONG_WAIT);
    ASSERT(it != NULL);
    expect_next(it, s); /* the only one done */
    cf_future *out[5];
    ASSERT_EQ(cf_as_completed_drain(it, out, 5), 0);
    ASSERT_OK(cf_set_result_i64(p, 3));
    expect_next(it, p);
    gate_open(&g);
    int seen[5] = {0};
    for (int i = 0; i < 3; i++) {
        cf_future *f;
        ASSERT_OK(cf_as_completed_next(it, &f));
        long k = index_of(fs, 5, f);
        ASSERT(k == 0 || k == 2 || k == 4);
        seen[k]++;
    }
    ASSERT(seen[0] == 1 && seen[2] == 1 && seen[4] == 1);
    expect_end(it);
    int64_t v;
    ASSERT_OK(cf_result_i64(queued, 0, &v));
    ASSERT_EQ(v, 144);
    cf_as_completed_free(it);
    release_all(fs, 5);

    /* Many pool tasks: every result arrives once. */
    enum { N = 300 };
    cf_future *many[N];
    for (int i = 0; i < N; i++)
        many[i] = cf_submit_i64(ex, square_task, i);
    it = cf_as_completed_new(many, N, LONG_WAIT);
    ASSERT(it != NULL);
    int hits[N] = {0};
    for (cf_future *f; cf_as_completed_next(it, &f) == CF_OK;) {
        ASSERT_OK(cf_result_i64(f, 0, &v));
        long k = index_of(many, N, f);
        ASSERT(k >= 0 && v == (int64_t)k * k);
        hits[k]++;
    }
    for (int i = 0; i < N; i++)
        ASSERT_EQ(hits[i], 1);
    ASSERT_EQ(cf_as_completed_pending(it), 0);
    cf_as_completed_free(it);
    release_all(many, N);
    cf_executor_free(ex);
}

typedef struct nested {
    cf_executor *ex;
    cf_future *standalone;
    _Atomic int tid;
    int yielded;
    int end_rc;
} nested;

static void nested_iter_task(cf_call *c)
{
    nested *n = (nested *)(uintptr_t)cf_arg_i64(c);
    /* A task of the same (1-worker) pool, queued behind this one. */
    cf_future *inner = cf_submit_i64(n->ex, square_task, 6);
    ASSERT(inner != NULL);
    cf_future *fs[] = {n->standalone, inner};
    cf_as_completed *it = cf_as_completed_new(fs, 2, LONG_WAIT);
    ASSERT(it != NULL);
    cf_future_release(inner); /* the iterator holds it */
    atomic_store(&n->tid, current_tid());
    cf_future *f;
    int rc;
    while ((rc = cf_as_completed_next(it, &f)) == CF_OK)
        n->yielded++;
    n->end_rc = rc;
    cf_as_completed_free(it);
}

/* A pool task may iterate over a standalone future and a task of its own
 * saturated pool: the blocked next() runs the queued task meanwhile (no
 * deadlock), and another thread's set_result wakes it. */
static void test_as_completed_inside_pool_task(void)
{
    cf_executor *ex = cf_thread_pool(&(cf_thread_pool_opts){.max_workers = 1});
    ASSERT(ex != NULL);
    nested n = {.ex = ex, .standalone = make(FX_PENDING), .end_rc = 99};
    cf_future *outer = cf_submit_i64(ex, nested_iter_task, (intptr_t)&n);
    ASSERT(outer != NULL);
    wait_until_blocked(&n.tid);
    ASSERT_OK(cf_set_result_i64(n.standalone, 1));
    ASSERT_OK(cf_result(outer, LONG_WAIT, NULL, NULL));
    ASSERT_EQ(n.yielded, 2);
    ASSERT_ST(n.end_rc, CF_END);
    cf_future_release(outer);
    cf_future_release(n.standalone);
    cf_executor_free(ex);
}

/* ------------------------------------------------------------------------ */
/* Bad arguments                                                             */
/* ------------------------------------------------------------------------ */

/* Sets cf_last_error() to something other than CF_EINVAL (a submit to a
 * shut-down pool), so each check below sees its own call's error. */
static void poison_last_error(cf_executor *dead)
{
    ASSERT(cf_submit_i64(dead, square_task, 1) == NULL);
    ASSERT_ST(cf_last_error(), CF_ESHUTDOWN);
}

/* Bad arguments: NULL with cf_last_error() == CF_EINVAL from
 * cf_as_completed_new, CF_EINVAL from the status-returning calls, 0 / no
 * crash from the rest. */
static void test_bad_arguments(void)
{
    cf_executor *dead = cf_thread_pool(NULL);
    ASSERT(dead != NULL);
    ASSERT_OK(cf_shutdown(dead, true, false));
    cf_future *p = make(FX_PENDING), *s = make(FX_FINISHED);
    cf_future *good[] = {s, p};
    cf_future *with_null[] = {s, NULL, p};

    poison_last_error(dead);
    ASSERT(cf_as_completed_new(NULL, 2, CF_FOREVER) == NULL);
    ASSERT_ST(cf_last_error(), CF_EINVAL);
    poison_last_error(dead);
    ASSERT(cf_as_completed_new(with_null, 3, CF_FOREVER) == NULL);
    ASSERT_ST(cf_last_error(), CF_EINVAL);
    const double bad[] = {-1.0, -1e-9, -INFINITY, NAN};
    for (int t = 0; t < 4; t++) {
        poison_last_error(dead);
        ASSERT(cf_as_completed_new(good, 2, bad[t]) == NULL);
        ASSERT_ST(cf_last_error(), CF_EINVAL);
        poison_last_error(dead);
        ASSERT(cf_as_completed_new(NULL, 0, bad[t]) == NULL);
        ASSERT_ST(cf_last_error(), CF_EINVAL);
    }
    /* The failed calls kept no reference: our futures are intact. */
    ASSERT_EQ(cf_future_state(p), CF_PENDING);

    cf_as_completed *it = cf_as_completed_new(good, 2, CF_FOREVER);
    ASSERT(it != NULL);
    ASSERT_ST(cf_as_completed_add(NULL, good, 2), CF_EINVAL);
    ASSERT_ST(cf_as_completed_add(it, NULL, 2), CF_EINVAL);
    ASSERT_ST(cf_as_completed_add(it, with_null, 3), CF_EINVAL);
    ASSERT_EQ(cf_as_completed_pending(it), 2); /* nothing was added */
    cf_future *f = NULL;
    ASSERT_ST(cf_as_completed_next(NULL, &f), CF_EINVAL);
    ASSERT_ST(cf_as_completed_next(it, NULL), CF_EINVAL);
    cf_future *out[2];
    ASSERT_EQ(cf_as_completed_drain(NULL, out, 2), 0);
    ASSERT_EQ(cf_as_completed_pending(NULL), 0);
    cf_as_completed_free(NULL);
    expect_next(it, s); /* still usable */
    ASSERT(cf_cancel(p));
    expect_next(it, p);
    expect_end(it);
    cf_as_completed_free(it);
    release_all(good, 2);
    cf_executor_free(dead);
}

TEST_MAIN(T(test_no_timeout), T(test_done_first_in_input_order),
          T(test_future_times_out), T(test_timeout_unfinished_count),
          T(test_zero_timeout_all_done), T(test_duplicate_futures),
          T(test_empty), T(test_iterator_holds_references),
          T(test_add_while_iterating), T(test_drain), T(test_pending_counts),
          T(test_completions_from_threads), T(test_cancelled_futures_yielded),
          T(test_free_early), T(test_no_waiter_left_behind),
          T(test_free_while_completing), T(test_million_finished),
          T(test_pool_and_standalone), T(test_as_completed_inside_pool_task),
          T(test_bad_arguments))

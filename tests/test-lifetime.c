/*
 * test-lifetime.c -- what outlives an executor, and freeing one without
 * waiting (issue 13, items 1, 2 and 12).
 *
 * - A cf_then continuation to run on an executor that the user frees
 *   before the continued future completes ends with CF_ESHUTDOWN (ASan
 *   used to see a heap-use-after-free here).
 * - A cf_map whose executor is freed goes on with the items already
 *   submitted; the next item to submit ends with CF_ESHUTDOWN (again a
 *   use-after-free before).
 * - After cf_shutdown(ex, wait=false), cf_executor_free returns at once,
 *   the queued work still runs, and the futures and maps stay usable.
 *
 * Each test runs on the thread pool and the process pool.  Blocking tasks
 * are held by a cross-process gate (fgate.h), never by sleeps.
 */
#define LIVENESS 30.0
#include "fgate.h"

static void add_one(cf_call *c)
{
    cf_return_i64(c, cf_arg_i64(c) + 1);
}

typedef enum { THREADS, PROCESSES } kind;

static cf_executor *make_pool(kind k, int workers)
{
    cf_executor *ex =
        k == THREADS
            ? cf_thread_pool(&(cf_thread_pool_opts){.max_workers = workers})
            : cf_process_pool(&(cf_process_pool_opts){.max_workers = workers});
    ASSERT(ex != NULL);
    return ex;
}

/* Item 1: the continuation holds the executor's memory, not a bare
 * pointer.  f is a standalone future, completed after ex is freed. */
static void then_after_free(kind k)
{
    cf_executor *ex = make_pool(k, 1);
    cf_future *f = cf_future_new();
    cf_future *g = cf_then(f, ex, add_one, 0);
    ASSERT(g != NULL);
    cf_executor_free(ex);
    ASSERT_OK(cf_set_result_i64(f, 41));
    ASSERT_ST(cf_result(g, LONG_WAIT, NULL, NULL), CF_ESHUTDOWN);
    cf_error e;
    ASSERT_OK(cf_exception(g, 0, &e));
    ASSERT_ST(e.status, CF_ESHUTDOWN);
    ASSERT(strstr(e.message, "shut down") != NULL);
    cf_future_release(f);
    cf_future_release(g);
}

static void test_then_outlives_thread_pool(void)
{
    then_after_free(THREADS);
}

static void test_then_outlives_process_pool(void)
{
    then_after_free(PROCESSES);
}

/* The issue's own case: a process-pool future continued on a thread pool
 * that is freed while the process task is still running. */
static void test_then_process_future_on_freed_thread_pool(void)
{
    cf_executor *pp = make_pool(PROCESSES, 1);
    cf_executor *tp = make_pool(THREADS, 1);
    fgate g;
    fgate_init(&g);
    cf_future *f = submit_gated(pp, &g, 7);
    fgate_wait_started(&g, 1, NULL);
    cf_future *next = cf_then(f, tp, add_one, 0);
    ASSERT(next != NULL);
    cf_executor_free(tp); /* before f completes */
    fgate_open(&g);
    int64_t v;
    ASSERT_OK(cf_result_i64(f, LONG_WAIT, &v));
    ASSERT_EQ(v, 7);
    ASSERT_ST(cf_result(next, LONG_WAIT, NULL, NULL), CF_ESHUTDOWN);
    cf_future_release(f);
    cf_future_release(next);
    cf_executor_free(pp);
    fgate_destroy(&g);
}

/* A continuation that never fires (its input is released pending) still
 * lets go of the executor: LeakSanitizer checks that nothing is kept. */
static void test_then_dropped_releases_executor(void)
{
    cf_executor *ex = make_pool(THREADS, 1);
    cf_future *f = cf_future_new();
    cf_future *g = cf_then(f, ex, add_one, 0);
    ASSERT(g != NULL);
    cf_executor_free(ex);
    cf_future_release(f); /* pending: the continuation is dropped */
    ASSERT_ST(cf_result(g, LONG_WAIT, NULL, NULL), CF_EBROKEN);
    cf_future_release(g);
}

/* Item 2: a map over a freed executor.  Window 4 over 100 inputs: after
 * two results, items 0..5 were submitted.  Items 2..5 still come (free
 * waited for them); item 6 can no longer be submitted. */
static void map_after_free(kind k, bool continue_on_error)
{
    enum { N = 100 };
    int64_t in[N];
    for (int i = 0; i < N; i++)
        in[i] = i;
    cf_executor *ex = make_pool(k, 1);
    cf_map *m =
        cf_map_i64(ex, add_one, in, N,
                   &(cf_map_opts){.buffersize = 4,
                                  .continue_on_error = continue_on_error});
    ASSERT(m != NULL);
    int64_t v;
    for (int i = 0; i < 2; i++) {
        ASSERT_OK(cf_map_next_i64(m, &v));
        ASSERT_EQ(v, i + 1);
    }
    cf_executor_free(ex);
    for (int i = 2; i < 6; i++) {
        ASSERT_OK(cf_map_next_i64(m, &v));
        ASSERT_EQ(v, i + 1);
    }
    int rest = continue_on_error ? N - 6 : 1;
    for (int i = 0; i < rest; i++) {
        cf_future *f;
        ASSERT_ST(cf_map_next(m, &f), CF_ESHUTDOWN);
        cf_error e;
        ASSERT_OK(cf_exception(f, 0, &e));
        ASSERT_ST(e.status, CF_ESHUTDOWN);
    }
    ASSERT_ST(cf_map_next(m, NULL), CF_END);
    cf_map_free(m);
}

static void test_map_outlives_thread_pool(void)
{
    map_after_free(THREADS, false);
    map_after_free(THREADS, true);
}

static void test_map_outlives_process_pool(void)
{
    map_after_free(PROCESSES, false);
    map_after_free(PROCESSES, true);
}

/* A map freed after its executor, without reading: nothing leaks. */
static void test_map_freed_after_executor(void)
{
    int64_t in[64] = {0};
    cf_executor *ex = make_pool(THREADS, 2);
    cf_map *m = cf_map_i64(ex, add_one, in, 64, NULL);
    ASSERT(m != NULL);
    cf_executor_free(ex);
    cf_map_free(m);
}

/* Item 12: after shutdown(wait=false), free returns while a task is still
 * blocked (the gate is closed until after free returned), the queued
 * tasks still run, and every future ends with its result. */
static void free_without_wait(kind k)
{
    enum { QUEUED = 10 };
    cf_executor *ex = make_pool(k, 1);
    fgate g;
    fgate_init(&g);
    cf_future *blocked = submit_gated(ex, &g, -1);
    cf_future *fs[QUEUED];
    for (int i = 0; i < QUEUED; i++) {
        fs[i] = cf_submit_i64(ex, add_one, i);
        ASSERT(fs[i] != NULL);
    }
    fgate_wait_started(&g, 1, NULL);
    ASSERT_OK(cf_shutdown(ex, false, false));
    ASSERT(cf_submit_i64(ex, add_one, 0) == NULL);
    ASSERT_ST(cf_last_error(), CF_ESHUTDOWN);
    cf_executor_free(ex); /* returns: the gate is still closed */
    ASSERT(!cf_done(blocked));
    fgate_open(&g);
    int64_t v;
    ASSERT_OK(cf_result_i64(blocked, LONG_WAIT, &v));
    ASSERT_EQ(v, -1);
    for (int i = 0; i < QUEUED; i++) {
        ASSERT_OK(cf_result_i64(fs[i], LONG_WAIT, &v));
        ASSERT_EQ(v, i + 1);
        cf_future_release(fs[i]);
    }
    cf_future_release(blocked);
    fgate_destroy(&g);
}

static void test_free_without_wait_thread_pool(void)
{
    free_without_wait(THREADS);
}

static void test_free_without_wait_process_pool(void)
{
    free_without_wait(PROCESSES);
}

/* A map keeps working over an executor freed without waiting: the items
 * it had submitted still arrive, in order. */
static void test_map_after_free_without_wait(void)
{
    enum { N = 32 };
    int64_t in[N];
    for (int i = 0; i < N; i++)
        in[i] = i;
    cf_executor *ex = make_pool(THREADS, 2);
    cf_map *m = cf_map_i64(ex, add_one, in, N,
                           &(cf_map_opts){.buffersize = SIZE_MAX});
    ASSERT(m != NULL);
    ASSERT_OK(cf_shutdown(ex, false, false));
    cf_executor_free(ex);
    int64_t v;
    for (int i = 0; i < N; i++) {
        ASSERT_OK(cf_map_next_i64(m, &v));
        ASSERT_EQ(v, i + 1);
    }
    ASSERT_ST(cf_map_next(m, NULL), CF_END);
    cf_map_free(m);
}

/* Freed without waiting from many threads' points of view at once: a
 * stress of the hand-over between the freeing thread and the last worker
 * (ASan and TSan watch the pool's memory). */
static void test_free_without_wait_stress(void)
{
    for (int round = 0; round < 200; round++) {
        cf_executor *ex = make_pool(THREADS, 1 + round % 4);
        cf_future *fs[8];
        for (int i = 0; i < 8; i++) {
            fs[i] = cf_submit_i64(ex, add_one, i);
            ASSERT(fs[i] != NULL);
        }
        ASSERT_OK(cf_shutdown(ex, false, round % 2 == 0));
        cf_executor_free(ex);
        for (int i = 0; i < 8; i++) {
            int rc = cf_result(fs[i], LONG_WAIT, NULL, NULL);
            ASSERT(rc == CF_OK || rc == CF_ECANCELLED);
            cf_future_release(fs[i]);
        }
    }
}

TEST_MAIN(T(test_then_outlives_thread_pool), T(test_then_outlives_process_pool),
          T(test_then_process_future_on_freed_thread_pool),
          T(test_then_dropped_releases_executor),
          T(test_map_outlives_thread_pool), T(test_map_outlives_process_pool),
          T(test_map_freed_after_executor),
          T(test_free_without_wait_thread_pool),
          T(test_free_without_wait_process_pool),
          T(test_map_after_free_without_wait), T(test_free_without_wait_stress))

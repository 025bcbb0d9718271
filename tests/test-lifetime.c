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
 * - fork() with live executors (item 9): in the child, an inherited
 *   executor fails fast with CF_EBROKEN and says why; it used to hang or
 *   time out silently, also when the fork raced other submitters.
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

/* ------------------------------------------------------------------------ */
/* fork() with live executors                                                */
/* ------------------------------------------------------------------------ */

#include <sys/wait.h>

#if defined(__SANITIZE_THREAD__)
#define TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define TSAN 1
#endif
#endif

/* In a forked child: what an inherited executor does.  Exit status 0 if
 * all is as documented, else the number of the check that failed. */
static int child_checks(cf_executor *inherited)
{
    cf_future *f = cf_submit_i64(inherited, add_one, 1);
    if (f != NULL)
        return 1;
    if (cf_last_error() != CF_EBROKEN)
        return 2;
    if (strstr(cf_last_error_message(), "fork") == NULL)
        return 3;
    if (cf_shutdown(inherited, true, false) != CF_EBROKEN)
        return 4;
    cf_executor_free(inherited); /* returns: nothing to join here */
#ifndef TSAN /* TSan does not support threads started after such a fork */
    /* A new executor in the child works. */
    cf_executor *ex = cf_thread_pool(&(cf_thread_pool_opts){.max_workers = 1});
    f = cf_submit_i64(ex, add_one, 41);
    int64_t v = 0;
    if (f == NULL || cf_result_i64(f, LONG_WAIT, &v) != CF_OK || v != 42)
        return 5;
    cf_future_release(f);
    cf_executor_free(ex);
#endif
    return 0;
}

static void fork_and_check(cf_executor *ex)
{
    fflush(stdout);
    pid_t pid = fork();
    ASSERT(pid >= 0);
    if (pid == 0)
        _exit(child_checks(ex));
    int st;
    ASSERT_EQ(waitpid(pid, &st, 0), pid);
    ASSERT(WIFEXITED(st));
    ASSERT_EQ(WEXITSTATUS(st), 0);
}

static void test_fork_inherited_executor(void)
{
    for (kind k = THREADS; k <= PROCESSES; k++) {
        cf_executor *ex = make_pool(k, 2);
        cf_future *f = cf_submit_i64(ex, add_one, 1); /* workers running */
        int64_t v;
        ASSERT_OK(cf_result_i64(f, LONG_WAIT, &v));
        cf_future_release(f);
        fork_and_check(ex);
        /* The parent's executor is untouched. */
        f = cf_submit_i64(ex, add_one, 2);
        ASSERT_OK(cf_result_i64(f, LONG_WAIT, &v));
        ASSERT_EQ(v, 3);
        cf_future_release(f);
        cf_executor_free(ex);
    }
}

typedef struct hammer {
    cf_executor *ex;
    atomic_bool stop;
} hammer;

static void *submit_loop(void *arg)
{
    hammer *h = arg;
    while (!atomic_load(&h->stop)) { /* one at a time: a bounded queue */
        cf_future *f = cf_submit_i64(h->ex, add_one, 1);
        int64_t v;
        ASSERT(f != NULL);
        ASSERT_OK(cf_result_i64(f, LONG_WAIT, &v));
        cf_future_release(f);
    }
    return NULL;
}

/* Forks while two threads submit: every child fails fast (3 of 20 hung). */
static void test_fork_races_submitters(void)
{
    hammer h = {.ex = make_pool(THREADS, 2)};
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        ASSERT_EQ(pthread_create(&t[i], NULL, submit_loop, &h), 0);
    for (int i = 0; i < 20; i++)
        fork_and_check(h.ex);
    atomic_store(&h.stop, true);
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    cf_executor_free(h.ex);
}

TEST_MAIN(T(test_then_outlives_thread_pool), T(test_then_outlives_process_pool),
          T(test_then_process_future_on_freed_thread_pool),
          T(test_then_dropped_releases_executor),
          T(test_map_outlives_thread_pool), T(test_map_outlives_process_pool),
          T(test_map_freed_after_executor),
          T(test_free_without_wait_thread_pool),
          T(test_free_without_wait_process_pool),
          T(test_map_after_free_without_wait), T(test_free_without_wait_stress),
          T(test_fork_inherited_executor), T(test_fork_races_submitters))

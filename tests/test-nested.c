/*
 * test-nested.c -- deadlock-free nested waits on the thread pool.
 *
 * Python's ThreadPoolExecutor deadlocks when a task waits on a task of
 * its own saturated pool; cfutures promises it does not: a pool thread
 * that waits (cf_result, cf_wait, cf_as_completed, cf_map, a full queue of
 * its own pool) runs queued tasks of its pool meanwhile.  These tests
 * saturate 1- and 2-thread pools with tasks that wait on their own
 * children.  A deadlock shows as a hang (CTest's timeout fails it).
 */
#include "test.h"

#include <stdatomic.h>

static cf_executor *g_ex; /* the pool the nested tasks submit to */

static cf_executor *pool(int workers, size_t max_queued)
{
    cf_executor *ex = cf_thread_pool(&(
        cf_thread_pool_opts){.max_workers = workers, .max_queued = max_queued});
    ASSERT(ex);
    return ex;
}

static void t_twice(cf_call *c)
{
    cf_return_i64(c, cf_arg_i64(c) * 2);
}

/* ------------------------------------------------------------------------ */
/* submit + cf_result inside a task                                          */
/* ------------------------------------------------------------------------ */

/* Submits t_twice(x) to its own pool and waits for it: returns 2x + 1. */
static void t_outer(cf_call *c)
{
    int64_t x = cf_arg_i64(c);
    cf_future *f = cf_submit_i64(g_ex, t_twice, x);
    ASSERT(f);
    int64_t v = -1;
    ASSERT_OK(cf_result_i64(f, CF_FOREVER, &v));
    cf_future_release(f);
    cf_return_i64(c, v + 1);
}

/* A task that submits to its own pool and waits on the result, on pools
 * of 1 and 2 threads, with as many such tasks as threads (and more). */
static void test_nested_submit_wait(void)
{
    for (int workers = 1; workers <= 2; workers++) {
        g_ex = pool(workers, 0);
        cf_future *one = cf_submit_i64(g_ex, t_outer, 20);
        int64_t v;
        ASSERT_OK(cf_result_i64(one, CF_FOREVER, &v));
        ASSERT_EQ(v, 41);
        cf_future_release(one);

        enum { N = 16 };
        cf_future *fs[N];
        for (int i = 0; i < N; i++)
            fs[i] = cf_submit_i64(g_ex, t_outer, i);
        for (int i = 0; i < N; i++) {
            ASSERT_OK(cf_result_i64(fs[i], CF_FOREVER, &v));
            ASSERT_EQ(v, 2 * i + 1);
            cf_future_release(fs[i]);
        }
        cf_executor_free(g_ex);
        g_ex = NULL;
    }
}

/* Recursive parallel fib: each task submits fib(n-1) and fib(n-2) to its
 * own pool and waits on both. */
static atomic_long fib_tasks;

static void t_fib(cf_call *c)
{
    atomic_fetch_add(&fib_tasks, 1);
    int64_t n = cf_arg_i64(c);
    if (n < 2) {
        cf_return_i64(c, n);
        return;
    }
    cf_future *a = cf_submit_i64(g_ex, t_fib, n - 1);
    cf_future *b = cf_submit_i64(g_ex, t_fib, n - 2);
    ASSERT(a && b);
    int64_t x = -1, y = -1;
    ASSERT_OK(cf_result_i64(a, CF_FOREVER, &x));
    ASSERT_OK(cf_result_i64(b, CF_FOREVER, &y));
    cf_future_release(a);
    cf_future_release(b);
    cf_return_i64(c, x + y);
}

static int64_t fib_calls(int n) /* tasks a fib(n) tree runs */
{
    return n < 2 ? 1 : 1 + fib_calls(n - 1) + fib_calls(n - 2);
}

/* fib(18) = 2584 on a 1-thread and a 2-thread pool, every one of its 8361
 * tasks run once. */
static void test_nested_fib(void)
{
    for (int workers = 1; workers <= 2; workers++) {
        atomic_store(&fib_tasks, 0);
        g_ex = pool(workers, 0);
        cf_future *f = cf_submit_i64(g_ex, t_fib, 18);
        ASSERT(f);
        int64_t v;
        ASSERT_OK(cf_result_i64(f, CF_FOREVER, &v));
        ASSERT_EQ(v, 2584);
        cf_future_release(f);
        cf_executor_free(g_ex);
        g_ex = NULL;
        ASSERT_EQ(atomic_load(&fib_tasks), fib_calls(18));
    }
}

/* A chain: task n submits task n-1 and waits on it, 300 deep, on one
 * thread. */
static void t_chain(cf_call *c)
{
    int64_t n = cf_arg_i64(c);
    if (n == 0) {
        cf_return_i64(c, 0);
        return;
    }
    cf_future *f = cf_submit_i64(g_ex, t_chain, n - 1);
    ASSERT(f);
    int64_t v = -1;
    ASSERT_OK(cf_result_i64(f, CF_FOREVER, &v));
    cf_future_release(f);
    cf_return_i64(c, v + 1);
}

static void test_nested_chain(void)
{
    g_ex = pool(1, 0);
    cf_future *f = cf_submit_i64(g_ex, t_chain, 300);
    int64_t v;
    ASSERT_OK(cf_result_i64(f, CF_FOREVER, &v));
    ASSERT_EQ(v, 300);
    cf_future_release(f);
    cf_executor_free(g_ex);
    g_ex = NULL;
}

/* ------------------------------------------------------------------------ */
/* cf_wait, cf_as_completed, cf_map inside a task                            */
/* ------------------------------------------------------------------------ */

enum { KIDS = 10 };

static void submit_kids(cf_future **fs, int64_t base)
{
    for (int i = 0; i < KIDS; i++) {
        fs[i] = cf_submit_i64(g_ex, t_twice, base + i);
        ASSERT(fs[i]);
    }
}

static int64_t kids_sum(int64_t base)
{
    int64_t s = 0;
    for (int i = 0; i < KIDS; i++)
        s += 2 * (base + i);
    return s;
}

/* cf_wait(FIRST_COMPLETED) then cf_wait(ALL_COMPLETED) on its own
 * children, from a task. */
static void t_wait_kids(cf_call *c)
{
    int64_t base = cf_arg_i64(c);
    cf_future *fs[KIDS], *done[KIDS], *not_done[KIDS];
    submit_kids(fs, base);
    size_t nd = 0, nn = 0;
    ASSERT_OK(cf_wait(fs, KIDS, CF_FOREVER, CF_FIRST_COMPLETED, done, &nd,
                      not_done, &nn));
    ASSERT(nd >= 1);
    ASSERT_EQ(nd + nn, KIDS);
    ASSERT_OK(cf_wait(fs, KIDS, CF_FOREVER, CF_ALL_COMPLETED, done, &nd,
                      not_done, &nn));
    ASSERT_EQ(nd, KIDS);
    ASSERT_EQ(nn, 0);
    ASSERT_OK(
        cf_wait(fs, KIDS, 5.0, CF_FIRST_EXCEPTION, NULL, NULL, NULL, NULL));
    int64_t s = 0;
    for (int i = 0; i < KIDS; i++) {
        int64_t v;
        ASSERT_OK(cf_result_i64(fs[i], 0, &v));
        s += v;
        cf_future_release(fs[i]);
    }
    cf_return_i64(c, s);
}

/* cf_as_completed over its own children, from a task. */
static void t_as_completed_kids(cf_call *c)
{
    int64_t base = cf_arg_i64(c);
    cf_future *fs[KIDS];
    submit_kids(fs, base);
    cf_as_completed *it = cf_as_completed_new(fs, KIDS, CF_FOREVER);
    ASSERT(it);
    int64_t s = 0;
    int n = 0;
    cf_future *f;
    int rc;
    while ((rc = cf_as_completed_next(it, &f)) == CF_OK) {
        ASSERT(cf_done(f));
        int64_t v;
        ASSERT_OK(cf_result_i64(f, 0, &v));
        s += v;
        n++;
    }
    ASSERT_ST(rc, CF_END);
    ASSERT_EQ(n, KIDS);
    cf_as_completed_free(it);
    for (int i = 0; i < KIDS; i++)
        cf_future_release(fs[i]);
    cf_return_i64(c, s);
}

/* cf_map over 100 items of its own pool, from a task. */
static void t_map_kids(cf_call *c)
{
    int64_t base = cf_arg_i64(c);
    int64_t in[100];
    for (int i = 0; i < 100; i++)
        in[i] = base + i;
    cf_map *m = cf_map_i64(g_ex, t_twice, in, 100,
                           &(cf_map_opts){.buffersize = 8});
    ASSERT(m);
    int64_t s = 0, v;
    for (int i = 0; i < 100; i++) {
        ASSERT_OK(cf_map_next_i64(m, &v));
        ASSERT_EQ(v, 2 * (base + i));
        s += v;
    }
    ASSERT_ST(cf_map_next_i64(m, &v), CF_END);
    cf_map_free(m);
    cf_return_i64(c, s);
}

static void run_nested(cf_task_fn fn, int64_t (*want)(int64_t))
{
    for (int workers = 1; workers <= 2; workers++) {
        g_ex = pool(workers, 0);
        enum { N = 6 };
        cf_future *fs[N];
        for (int i = 0; i < N; i++)
            fs[i] = cf_submit_i64(g_ex, fn, 1000 * i);
        for (int i = 0; i < N; i++) {
            int64_t v;
            ASSERT_OK(cf_result_i64(fs[i], CF_FOREVER, &v));
            ASSERT_EQ(v, want(1000 * i));
            cf_future_release(fs[i]);
        }
        cf_executor_free(g_ex);
        g_ex = NULL;
    }
}

static int64_t map_sum(int64_t base)
{
    int64_t s = 0;
    for (int i = 0; i < 100; i++)
        s += 2 * (base + i);
    return s;
}

/* Nested cf_wait inside tasks on a 1-thread (and 2-thread) pool. */
static void test_nested_wait(void)
{
    run_nested(t_wait_kids, kids_sum);
}

/* Nested cf_as_completed inside tasks on a 1-thread (and 2-thread) pool. */
static void test_nested_as_completed(void)
{
    run_nested(t_as_completed_kids, kids_sum);
}

/* Nested cf_map inside tasks on a 1-thread (and 2-thread) pool. */
static void test_nested_map(void)
{
    run_nested(t_map_kids, map_sum);
}

/* ------------------------------------------------------------------------ */
/* Own full bounded queue                                                    */
/* ------------------------------------------------------------------------ */

/* Submits 30 children to its own pool, whose queue holds 2: a blocking
 * submit from a pool thread makes room by running queued work. */
static void t_flood(cf_call *c)
{
    int64_t base = cf_arg_i64(c);
    enum { K = 30 };
    cf_future *fs[K];
    for (int i = 0; i < K; i++) {
        fs[i] = cf_submit_i64(g_ex, t_twice, base + i);
        ASSERT(fs[i]);
    }
    int64_t s = 0;
    for (int i = 0; i < K; i++) {
        int64_t v;
        ASSERT_OK(cf_result_i64(fs[i], CF_FOREVER, &v));
        ASSERT_EQ(v, 2 * (base + i));
        s += v;
        cf_future_release(fs[i]);
    }
    cf_return_i64(c, s);
}

static int64_t flood_sum(int64_t base)
{
    int64_t s = 0;
    for (int i = 0; i < 30; i++)
        s += 2 * (base + i);
    return s;
}

/* A task submitting to its own full bounded pool does not deadlock, on 1
 * and 2 threads, with one flooding task and with one per thread. */
static void test_nested_full_queue(void)
{
    for (int workers = 1; workers <= 2; workers++) {
        g_ex = pool(workers, 2);
        cf_future *f = cf_submit_i64(g_ex, t_flood, 0);
        int64_t v;
        ASSERT_OK(cf_result_i64(f, CF_FOREVER, &v));
        ASSERT_EQ(v, flood_sum(0));
        cf_future_release(f);

        cf_future *fs[2];
        for (int i = 0; i < workers; i++)
            fs[i] = cf_submit_i64(g_ex, t_flood, 100 * i);
        for (int i = 0; i < workers; i++) {
            ASSERT_OK(cf_result_i64(fs[i], CF_FOREVER, &v));
            ASSERT_EQ(v, flood_sum(100 * i));
            cf_future_release(fs[i]);
        }
        cf_executor_free(g_ex);
        g_ex = NULL;
    }
}

/* Nested fib on a bounded pool (queue of 4): submits that find their own
 * queue full run queued work, waits help too; still no deadlock. */
static void test_nested_fib_bounded(void)
{
    for (int workers = 1; workers <= 2; workers++) {
        atomic_store(&fib_tasks, 0);
        g_ex = pool(workers, 4);
        cf_future *f = cf_submit_i64(g_ex, t_fib, 14);
        int64_t v;
        ASSERT_OK(cf_result_i64(f, CF_FOREVER, &v));
        ASSERT_EQ(v, 377);
        cf_future_release(f);
        cf_executor_free(g_ex);
        g_ex = NULL;
        ASSERT_EQ(atomic_load(&fib_tasks), fib_calls(14));
    }
}

/* ------------------------------------------------------------------------ */
/* Timed waits and cancelled children                                        */
/* ------------------------------------------------------------------------ */

typedef struct timed_ctx {
    cf_future *promise; /* completed by the test thread */
    latch waiting;
    int how; /* 0: cf_result, 1: cf_wait, 2: cf_as_completed */
} timed_ctx;

/* Waits on a future nobody in the pool will complete, with a finite (long)
 * timeout: the wait must last until the test thread completes it. */
static void t_timed_wait(cf_call *c)
{
    timed_ctx *x;
    memcpy(&x, cf_arg(c, NULL), sizeof x);
    latch_add(&x->waiting);
    int rc;
    if (x->how == 0) {
        rc = cf_result(x->promise, 60.0, NULL, NULL);
    } else if (x->how == 1) {
        rc = cf_wait(&x->promise, 1, 60.0, CF_ALL_COMPLETED, NULL, NULL, NULL,
                     NULL);
    } else {
        cf_as_completed *it = cf_as_completed_new(&x->promise, 1, 60.0);
        ASSERT(it);
        cf_future *f;
        rc = cf_as_completed_next(it, &f);
        cf_as_completed_free(it);
    }
    cf_return_i64(c, rc);
}

/* A pool thread waiting with a finite timeout (cf_result, cf_wait,
 * cf_as_completed) on a future completed later from outside the pool gets
 * it: the timeout does not expire early while the thread sleeps as a
 * helper.  Repeated, so the wait usually starts before the completion. */
static void test_nested_timed_wait(void)
{
    g_ex = pool(1, 0);
    for (int round = 0; round < 30; round++) {
        timed_ctx x = {.waiting = LATCH_INIT, .how = round % 3};
        x.promise = cf_future_new();
        ASSERT(x.promise);
        timed_ctx *p = &x;
        cf_future *f = cf_submit(g_ex, t_timed_wait, &p, sizeof p);
        ASSERT(f);
        latch_wait(&x.waiting, 1);
        ASSERT_OK(cf_set_result_i64(x.promise, round));
        int64_t rc = -100;
        ASSERT_OK(cf_result_i64(f, CF_FOREVER, &rc));
        ASSERT_ST((int)rc, CF_OK);
        cf_future_release(f);
        cf_future_release(x.promise);
    }
    cf_executor_free(g_ex);
    g_ex = NULL;
}

/* Waits with a short timeout on a future that never completes. */
static void t_short_timeout(cf_call *c)
{
    cf_future *never;
    memcpy(&never, cf_arg(c, NULL), sizeof never);
    int rc = cf_result(never, 0.05, NULL, NULL);
    ASSERT(!cf_done(never));
    cf_return_i64(c, rc);
}

/* A pool thread's timed wait on a future that never ends times out
 * (CF_ETIMEDOUT, the future untouched) instead of hanging. */
static void test_nested_wait_times_out(void)
{
    g_ex = pool(2, 0);
    cf_future *never = cf_future_new();
    cf_future *f = cf_submit(g_ex, t_short_timeout, &never, sizeof never);
    int64_t rc;
    ASSERT_OK(cf_result_i64(f, CF_FOREVER, &rc));
    ASSERT_ST((int)rc, CF_ETIMEDOUT);
    cf_future_release(f);
    ASSERT(cf_cancel(never));
    cf_future_release(never);
    cf_executor_free(g_ex);
    g_ex = NULL;
}

typedef struct parent_ctx {
    latch submitted;
    gate go;
} parent_ctx;

/* Submits a child, lets the test shut the pool down with cancel_futures,
 * then waits on the (cancelled) child. */
static void t_parent_of_cancelled(cf_call *c)
{
    parent_ctx *x;
    memcpy(&x, cf_arg(c, NULL), sizeof x);
    cf_future *child = cf_submit_i64(g_ex, t_twice, 5);
    ASSERT(child);
    latch_add(&x->submitted);
    gate_pass(&x->go);
    int rc = cf_result(child, CF_FOREVER, NULL, NULL);
    cf_future_release(child);
    cf_return_i64(c, rc);
}

/* A task waiting on its own child that shutdown(cancel_futures) cancelled
 * from outside gets CF_ECANCELLED, no hang. */
static void test_nested_wait_on_cancelled_child(void)
{
    g_ex = pool(1, 0);
    parent_ctx x = {.submitted = LATCH_INIT, .go = GATE_INIT};
    parent_ctx *p = &x;
    cf_future *f = cf_submit(g_ex, t_parent_of_cancelled, &p, sizeof p);
    ASSERT(f);
    latch_wait(&x.submitted, 1);
    ASSERT_OK(cf_shutdown(g_ex, false, true));
    gate_open(&x.go);
    int64_t rc;
    ASSERT_OK(cf_result_i64(f, CF_FOREVER, &rc));
    ASSERT_ST((int)rc, CF_ECANCELLED);
    cf_future_release(f);
    cf_executor_free(g_ex);
    g_ex = NULL;
}

/* ------------------------------------------------------------------------ */
/* Fine-grained fork-join with small stacks (issue 11)                      */
/* ------------------------------------------------------------------------ */

/*
 * Each program runs with a task per call and no cutoff, on pools of 1, 2
 * and 8 threads whose stacks are 256 KiB.  Before the work-stealing
 * scheduler, a waiting thread ran the *oldest* queued task on its stack,
 * and these overflowed it (fib(21) on one thread).  Sizes: the in
 * the plain build (fib(25), 1,000,000 tasks, 12 queens, 30,000 x 4);
 * under ASan and TSan, which run each task 10-50 times slower, the tree
 * has 200,000 tasks and the board 10 queens, so that the file stays under
 * about a minute there.
 */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define SANITIZED 1
#endif
#endif
#ifdef SANITIZED
enum { FIB_N = 25, TREE_N = 200000, QUEENS_N = 10, FAN_OUT = 30000 };
#else
enum { FIB_N = 25, TREE_N = 1000000, QUEENS_N = 12, FAN_OUT = 30000 };
#endif

static const int pool_sizes[] = {1, 2, 8};

static cf_executor *small_stack_pool(int workers)
{
    cf_executor *ex = cf_thread_pool(&(
        cf_thread_pool_opts){.max_workers = workers, .stack_size = 256u << 10});
    ASSERT(ex);
    return ex;
}

/* Runs fn(arg) on each pool size and checks the i64 result. */
static void on_small_pools(cf_task_fn fn, int64_t arg, int64_t want)
{
    for (size_t i = 0; i < sizeof pool_sizes / sizeof pool_sizes[0]; i++) {
        g_ex = small_stack_pool(pool_sizes[i]);
        cf_future *f = cf_submit_i64(g_ex, fn, arg);
        ASSERT(f);
        int64_t v = -1;
        ASSERT_OK(cf_result_i64(f, CF_FOREVER, &v));
        ASSERT_EQ(v, want);
        cf_future_release(f);
        cf_executor_free(g_ex);
        g_ex = NULL;
    }
}

static int64_t fib_serial(int n)
{
    return n < 2 ? n : fib_serial(n - 1) + fib_serial(n - 2);
}

/* fib(25) with a task per call (242,785 tasks) and no cutoff. */
static void test_nested_fib_nocutoff(void)
{
    on_small_pools(t_fib, FIB_N, fib_serial(FIB_N));
}

/* A tree of exactly n tasks: each splits the rest between two children
 * and returns the size of its subtree. */
static void t_tree(cf_call *c)
{
    int64_t n = cf_arg_i64(c);
    if (n == 1) {
        cf_return_i64(c, 1);
        return;
    }
    int64_t left = (n - 1) / 2, right = n - 1 - left, sum = 1;
    cf_future *a = left ? cf_submit_i64(g_ex, t_tree, left) : NULL;
    cf_future *b = cf_submit_i64(g_ex, t_tree, right);
    ASSERT(b && (a || left == 0));
    int64_t v;
    if (a) {
        ASSERT_OK(cf_result_i64(a, CF_FOREVER, &v));
        sum += v;
        cf_future_release(a);
    }
    ASSERT_OK(cf_result_i64(b, CF_FOREVER, &v));
    cf_future_release(b);
    cf_return_i64(c, sum + v);
}

/* A tree of 1,000,000 tasks, each waiting on its children. */
static void test_nested_million_task_tree(void)
{
    on_small_pools(t_tree, TREE_N, TREE_N);
}

/* n-queens with one task per placement: the argument is the board so far
 * (row, columns and both diagonals taken, as bit masks), the result the
 * number of solutions below it. */
typedef struct board {
    uint32_t row, cols, d1, d2;
} board;

static void t_queens(cf_call *c)
{
    board b;
    memcpy(&b, cf_arg(c, NULL), sizeof b);
    if ((int)b.row == QUEENS_N) {
        cf_return_i64(c, 1);
        return;
    }
    cf_future *fs[32];
    int n = 0;
    uint32_t all = (1u << QUEENS_N) - 1;
    uint32_t free_ = all & ~(b.cols | b.d1 | b.d2);
    while (free_) {
        uint32_t bit = free_ & -free_;
        free_ ^= bit;
        board k = {b.row + 1, b.cols | bit, ((b.d1 | bit) << 1) & all,
                   (b.d2 | bit) >> 1};
        fs[n] = cf_submit(g_ex, t_queens, &k, sizeof k);
        ASSERT(fs[n]);
        n++;
    }
    int64_t sum = 0;
    for (int i = 0; i < n; i++) {
        int64_t v;
        ASSERT_OK(cf_result_i64(fs[i], CF_FOREVER, &v));
        sum += v;
        cf_future_release(fs[i]);
    }
    cf_return_i64(c, sum);
}

static void test_nested_nqueens_per_placement(void)
{
    static const int64_t solutions[] = {1,  0,  0,   2,   10,   4,
                                        40, 92, 352, 724, 2680, 14200};
    for (size_t i = 0; i < sizeof pool_sizes / sizeof pool_sizes[0]; i++) {
        g_ex = small_stack_pool(pool_sizes[i]);
        board b = {0, 0, 0, 0};
        cf_future *f = cf_submit(g_ex, t_queens, &b, sizeof b);
        ASSERT(f);
        int64_t v = -1;
        ASSERT_OK(cf_result_i64(f, CF_FOREVER, &v));
        ASSERT_EQ(v, solutions[QUEENS_N - 1]);
        cf_future_release(f);
        cf_executor_free(g_ex);
        g_ex = NULL;
    }
}

/* Fan-out / fan-in: 30,000 tasks submitted from outside, each waiting on 4
 * leaves of its own. */
static void t_fan(cf_call *c)
{
    int64_t base = cf_arg_i64(c);
    cf_future *fs[4];
    for (int i = 0; i < 4; i++) {
        fs[i] = cf_submit_i64(g_ex, t_twice, base + i);
        ASSERT(fs[i]);
    }
    int64_t s = 0;
    for (int i = 0; i < 4; i++) {
        int64_t v;
        ASSERT_OK(cf_result_i64(fs[i], CF_FOREVER, &v));
        s += v;
        cf_future_release(fs[i]);
    }
    cf_return_i64(c, s);
}

static void test_nested_fan_out_in(void)
{
    cf_future **fs = calloc(FAN_OUT, sizeof *fs);
    ASSERT(fs);
    for (size_t k = 0; k < sizeof pool_sizes / sizeof pool_sizes[0]; k++) {
        g_ex = small_stack_pool(pool_sizes[k]);
        for (int i = 0; i < FAN_OUT; i++) {
            fs[i] = cf_submit_i64(g_ex, t_fan, 4 * (int64_t)i);
            ASSERT(fs[i]);
        }
        for (int i = 0; i < FAN_OUT; i++) {
            int64_t v = -1, b = 4 * (int64_t)i;
            ASSERT_OK(cf_result_i64(fs[i], CF_FOREVER, &v));
            ASSERT_EQ(v, 2 * (4 * b + 6));
            cf_future_release(fs[i]);
        }
        cf_executor_free(g_ex);
        g_ex = NULL;
    }
    free(fs);
}

/* A stack_size below the minimum is refused; a size that is not a multiple
 * of the page size is rounded up. */
static void test_stack_size_option(void)
{
    ASSERT(cf_thread_pool(&(cf_thread_pool_opts){.stack_size = 4096}) == NULL);
    ASSERT_ST(cf_last_error(), CF_EINVAL);
    ASSERT(cf_thread_pool(&(cf_thread_pool_opts){
               .stack_size = CF_THREAD_POOL_MIN_STACK - 1}) == NULL);
    ASSERT_ST(cf_last_error(), CF_EINVAL);
    g_ex = cf_thread_pool(&(cf_thread_pool_opts){
        .max_workers = 1, .stack_size = CF_THREAD_POOL_MIN_STACK + 1});
    ASSERT(g_ex);
    cf_future *f = cf_submit_i64(g_ex, t_fib, 15);
    int64_t v;
    ASSERT_OK(cf_result_i64(f, CF_FOREVER, &v));
    ASSERT_EQ(v, 610);
    cf_future_release(f);
    cf_executor_free(g_ex);
    g_ex = NULL;
}

/* A task waiting on a future that a *later* external submission computes,
 * on a 1-thread pool: the waiting thread runs it (from the FIFO queue). */
typedef struct later_ctx {
    cf_future *later;
    latch submitted;
} later_ctx;

static void t_wait_later(cf_call *c)
{
    later_ctx *x;
    memcpy(&x, cf_arg(c, NULL), sizeof x);
    latch_wait(&x->submitted, 1);
    int64_t v = -1;
    ASSERT_OK(cf_result_i64(x->later, CF_FOREVER, &v));
    cf_return_i64(c, v + 1);
}

static void test_nested_wait_on_external_task(void)
{
    g_ex = pool(1, 0);
    later_ctx x = {.submitted = LATCH_INIT};
    later_ctx *p = &x;
    cf_future *f = cf_submit(g_ex, t_wait_later, &p, sizeof p);
    x.later = cf_submit_i64(g_ex, t_twice, 20);
    ASSERT(f && x.later);
    latch_add(&x.submitted);
    int64_t v;
    ASSERT_OK(cf_result_i64(f, CF_FOREVER, &v));
    ASSERT_EQ(v, 41);
    cf_future_release(f);
    cf_future_release(x.later);
    cf_executor_free(g_ex);
    g_ex = NULL;
}

/* External submissions to a 1-thread pool start in submission order
 * (Python's FIFO), even with tasks of the pool's own in between. */
static atomic_int order_next;
static int order_seen[64];

static void t_record(cf_call *c)
{
    order_seen[atomic_fetch_add(&order_next, 1)] = (int)cf_arg_i64(c);
}

static void t_block_then_spawn(cf_call *c)
{
    gate *g;
    memcpy(&g, cf_arg(c, NULL), sizeof g);
    gate_pass(g);
    /* An internal submission: runs on this thread's own deque, before the
     * queued external ones (it is this thread's newest work). */
    cf_future *k = cf_submit_i64(g_ex, t_record, 1000);
    ASSERT(k);
    cf_future_release(k);
}

static void test_external_submission_order(void)
{
    g_ex = pool(1, 0);
    atomic_store(&order_next, 0);
    gate g = GATE_INIT;
    gate *gp = &g;
    cf_future *first = cf_submit(g_ex, t_block_then_spawn, &gp, sizeof gp);
    ASSERT(first);
    gate_wait_for(&g, 1);
    enum { N = 40 };
    cf_future *fs[N];
    for (int i = 0; i < N; i++) {
        fs[i] = cf_submit_i64(g_ex, t_record, i);
        ASSERT(fs[i]);
    }
    gate_open(&g);
    for (int i = 0; i < N; i++) {
        ASSERT_OK(cf_result(fs[i], CF_FOREVER, NULL, NULL));
        cf_future_release(fs[i]);
    }
    ASSERT_OK(cf_result(first, CF_FOREVER, NULL, NULL));
    cf_future_release(first);
    cf_executor_free(g_ex);
    g_ex = NULL;
    ASSERT_EQ(atomic_load(&order_next), N + 1);
    ASSERT_EQ(order_seen[0], 1000);
    for (int i = 0; i < N; i++)
        ASSERT_EQ(order_seen[i + 1], i);
}

TEST_MAIN(T(test_nested_submit_wait), T(test_nested_fib), T(test_nested_chain),
          T(test_nested_wait), T(test_nested_as_completed), T(test_nested_map),
          T(test_nested_full_queue), T(test_nested_fib_bounded),
          T(test_nested_timed_wait), T(test_nested_wait_times_out),
          T(test_nested_wait_on_cancelled_child),
          T(test_external_submission_order), T(test_stack_size_option),
          T(test_nested_wait_on_external_task), T(test_nested_fib_nocutoff),
          T(test_nested_million_task_tree),
          T(test_nested_nqueens_per_placement), T(test_nested_fan_out_in))

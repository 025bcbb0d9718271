/*
 * test-map.c -- cf_map_i64 / cf_map_array / cf_map_gen (Executor.map).
 *
 * Ports what CPython's executor.py and test_thread_pool.py check of map:
 * results in input order, an error surfacing exactly at its position, the
 * map's timeout, buffersize (Python 3.14) bounding the work in flight over
 * a huge input, submitting without iteration, early close; plus the C
 * API's continue_on_error and chunksize.  No sleeps: tasks block on gates.
 */
#include "test.h"

#include <sched.h>
#include <stdatomic.h>

/* ------------------------------------------------------------------------ */
/* Tasks and helpers                                                         */
/* ------------------------------------------------------------------------ */

static atomic_int ran; /* tasks that started, per test */

static void t_square(cf_call *c)
{
    atomic_fetch_add(&ran, 1);
    int64_t x = cf_arg_i64(c);
    cf_return_i64(c, x * x);
}

/* Square, but item `fail_at` raises (code = the item); fail_at == -2
 * makes every item x with x % 1000 == 999 raise; -1 none. */
static atomic_long fail_at = -1;

static void t_square_or_raise(cf_call *c)
{
    atomic_fetch_add(&ran, 1);
    int64_t x = cf_arg_i64(c);
    long at = atomic_load(&fail_at);
    if (x == at || (at == -2 && x % 1000 == 999)) {
        cf_raise(c, (int)x, "item %lld failed", (long long)x);
        return;
    }
    cf_return_i64(c, x * x);
}

static cf_executor *pool(int workers)
{
    cf_executor *ex =
        cf_thread_pool(&(cf_thread_pool_opts){.max_workers = workers});
    ASSERT(ex);
    return ex;
}

/* ------------------------------------------------------------------------ */
/* Order                                                                     */
/* ------------------------------------------------------------------------ */

/* Items that complete out of order still come back in input order: item 0
 * waits on a gate that item 5 opens, so 1..5 finish first (test_map). */
static gate order_gate = GATE_INIT;

static void t_order(cf_call *c)
{
    int64_t x = cf_arg_i64(c);
    if (x == 0)
        gate_pass(&order_gate);
    if (x == 5)
        gate_open(&order_gate);
    cf_return_i64(c, x + 1000);
}

static void test_map_order(void)
{
    cf_executor *ex = pool(2);
    int64_t in[200];
    for (int i = 0; i < 200; i++)
        in[i] = i;
    cf_map *m = cf_map_i64(ex, t_order, in, 200,
                           &(cf_map_opts){.buffersize = 16});
    ASSERT(m);
    for (int i = 0; i < 200; i++) {
        int64_t v = -1;
        ASSERT_OK(cf_map_next_i64(m, &v));
        ASSERT_EQ(v, i + 1000);
    }
    int64_t v;
    ASSERT_ST(cf_map_next_i64(m, &v), CF_END);
    ASSERT_ST(cf_map_next_i64(m, &v), CF_END);
    cf_map_free(m);
    cf_executor_free(ex);
}

/* cf_map_next hands out the item's future: done, with its result. */
static void test_map_next_future(void)
{
    cf_executor *ex = pool(3);
    int64_t in[50];
    for (int i = 0; i < 50; i++)
        in[i] = i - 25;
    cf_map *m = cf_map_i64(ex, t_square, in, 50, NULL);
    ASSERT(m);
    for (int i = 0; i < 50; i++) {
        cf_future *f = NULL;
        ASSERT_OK(cf_map_next(m, &f));
        ASSERT(f);
        ASSERT(cf_done(f));
        int64_t v;
        ASSERT_OK(cf_result_i64(f, 0, &v));
        ASSERT_EQ(v, in[i] * in[i]);
    }
    cf_future *f = (cf_future *)&f;
    ASSERT_ST(cf_map_next(m, &f), CF_END);
    ASSERT(f == NULL);
    ASSERT_ST(cf_map_next(m, NULL), CF_END);
    cf_map_free(m);
    cf_executor_free(ex);
}

/* cf_map_array over structs, double results, in order. */
typedef struct pair {
    int32_t a;
    double b;
} pair;

static void t_mul_pair(cf_call *c)
{
    size_t n;
    const void *p = cf_arg(c, &n);
    ASSERT_EQ(n, sizeof(pair));
    pair x;
    memcpy(&x, p, sizeof x);
    cf_return_f64(c, x.a * x.b);
}

static void test_map_array(void)
{
    cf_executor *ex = pool(2);
    pair in[300];
    for (int i = 0; i < 300; i++)
        in[i] = (pair){.a = i, .b = 0.5 * i};
    cf_map *m = cf_map_array(ex, t_mul_pair, in, sizeof in[0], 300, NULL);
    ASSERT(m);
    for (int i = 0; i < 300; i++) {
        double d = -1;
        ASSERT_OK(cf_map_next_f64(m, &d));
        ASSERT(d == i * (0.5 * i));
    }
    double d;
    ASSERT_ST(cf_map_next_f64(m, &d), CF_END);
    cf_map_free(m);
    cf_executor_free(ex);
}

/* A generator over 0..n-1 that records how far it ran ahead. */
typedef struct counter_gen {
    int64_t next, n;
    int64_t cur;       /* the item handed out (borrowed until next call) */
    int64_t consumed;  /* results the consumer has taken */
    int64_t max_ahead; /* max over calls of (read - consumed) */
    int64_t calls_after_end;
} counter_gen;

static int gen_next(void *ctx, const void **data, size_t *len)
{
    counter_gen *g = ctx;
    if (g->next >= g->n) {
        g->calls_after_end++;
        return 0;
    }
    g->cur = g->next++;
    int64_t ahead = g->next - g->consumed;
    if (ahead > g->max_ahead)
        g->max_ahead = ahead;
    *data = &g->cur;
    *len = sizeof g->cur;
    return 1;
}

/* cf_map_gen: results in order over a lazily pulled input
 * (test_map_buffersize_on_infinite_iterable's first results too). */
static void test_map_gen(void)
{
    cf_executor *ex = pool(2);
    counter_gen g = {.n = 5000};
    cf_map *m = cf_map_gen(ex, t_square, gen_next, &g, NULL);
    ASSERT(m);
    for (int64_t i = 0; i < 5000; i++) {
        int64_t v = -1;
        ASSERT_OK(cf_map_next_i64(m, &v));
        ASSERT_EQ(v, i * i);
        g.consumed++;
    }
    int64_t v;
    ASSERT_ST(cf_map_next_i64(m, &v), CF_END);
    ASSERT_ST(cf_map_next_i64(m, &v), CF_END);
    ASSERT(g.max_ahead >= 1);
    cf_map_free(m);
    cf_executor_free(ex);
}

/* A generator whose input fails (Python: the iterable raises) after
 * `fail_after` items, returning `code` (negative). */
typedef struct failing_gen {
    int64_t next, fail_after, cur;
    int code, calls_after_failure;
} failing_gen;

static int gen_failing(void *ctx, const void **data, size_t *len)
{
    failing_gen *g = ctx;
    if (g->next >= g->fail_after) {
        if (g->next++ > g->fail_after)
            g->calls_after_failure++;
        return g->code;
    }
    g->cur = g->next++;
    *data = &g->cur;
    *len = sizeof g->cur;
    return 1;
}

/* A failing input is not the end of the input: the map yields the items
 * read before the failure, then that error (CF_ETASK with the generator's
 * value as its code), then ends, in both error modes, and never calls the
 * generator again.  Before, the map ended silently, cut short. */
static void test_map_gen_error(void)
{
    cf_executor *ex = pool(2);
    for (int mode = 0; mode < 2; mode++) {
        for (int64_t at = 0; at < 40; at += 13) {
            failing_gen g = {.fail_after = at, .code = -42};
            cf_map *m = cf_map_gen(ex, t_square, gen_failing, &g,
                                   &(cf_map_opts){.buffersize = 4,
                                                  .continue_on_error = mode});
            ASSERT(m);
            int64_t v;
            for (int64_t i = 0; i < at; i++) {
                ASSERT_OK(cf_map_next_i64(m, &v));
                ASSERT_EQ(v, i * i);
            }
            cf_future *f;
            ASSERT_ST(cf_map_next(m, &f), CF_ETASK);
            cf_error e;
            ASSERT_OK(cf_exception(f, 0, &e));
            ASSERT_EQ(e.code, -42);
            ASSERT(strstr(e.message, "input") != NULL);
            ASSERT_ST(cf_map_next(m, NULL), CF_END);
            ASSERT_ST(cf_map_next(m, NULL), CF_END);
            ASSERT_EQ(g.calls_after_failure, 0);
            cf_map_free(m);
        }
    }
    cf_executor_free(ex);
}

/* ------------------------------------------------------------------------ */
/* Errors                                                                    */
/* ------------------------------------------------------------------------ */

/* An error at position i surfaces exactly when result i is taken, even if
 * it happened before the earlier items finished; every item before it is
 * OK.  Fail-fast (Python's default): the map then ends (CF_END) and the
 * items after it were cancelled or never ran (test_map_exception). */
static gate err_gate = GATE_INIT;

static void t_early_error(cf_call *c)
{
    atomic_fetch_add(&ran, 1);
    int64_t x = cf_arg_i64(c);
    if (x == 0)
        gate_pass(&err_gate); /* finishes after item 5 raised */
    if (x == 5) {
        cf_raise(c, 5, "item %d failed", 5);
        gate_open(&err_gate);
        return;
    }
    cf_return_i64(c, x * x);
}

static void test_map_error_position(void)
{
    enum { N = 1000, B = 8, AT = 5 };
    cf_executor *ex = pool(2);
    atomic_store(&ran, 0);
    int64_t in[N];
    for (int i = 0; i < N; i++)
        in[i] = i;
    cf_map *m = cf_map_i64(ex, t_early_error, in, N,
                           &(cf_map_opts){.buffersize = B});
    ASSERT(m);
    for (int i = 0; i < AT; i++) {
        int64_t v = -1;
        ASSERT_OK(cf_map_next_i64(m, &v));
        ASSERT_EQ(v, i * i);
    }
    cf_future *f = NULL;
    ASSERT_ST(cf_map_next(m, &f), CF_ETASK);
    ASSERT(f);
    cf_error e;
    ASSERT_OK(cf_exception(f, 0, &e));
    ASSERT_ST(e.status, CF_ETASK);
    ASSERT_EQ(e.code, AT);
    ASSERT_STR_EQ(e.message, "item 5 failed");
    ASSERT_ST(cf_map_next(m, &f), CF_END);
    ASSERT_ST(cf_map_next(m, &f), CF_END);
    cf_map_free(m);
    ASSERT_OK(cf_shutdown(ex, true, false));
    int r = atomic_load(&ran);
    ASSERT(r >= AT + 1);
    ASSERT(r <= AT + B); /* at most the window was ever submitted */
    cf_executor_free(ex);
}

/* Fail-fast with a small buffersize over a long input: after the error at
 * item i, CF_END, and almost nothing past i ran. */
static void test_map_fail_fast_stops(void)
{
    enum { N = 100000, B = 4, AT = 10 };
    cf_executor *ex = pool(2);
    atomic_store(&ran, 0);
    atomic_store(&fail_at, AT);
    int64_t *in = malloc(N * sizeof *in);
    ASSERT(in);
    for (int i = 0; i < N; i++)
        in[i] = i;
    cf_map *m = cf_map_i64(ex, t_square_or_raise, in, N,
                           &(cf_map_opts){.buffersize = B});
    ASSERT(m);
    int64_t v;
    for (int i = 0; i < AT; i++) {
        ASSERT_OK(cf_map_next_i64(m, &v));
        ASSERT_EQ(v, i * i);
    }
    ASSERT_ST(cf_map_next_i64(m, &v), CF_ETASK);
    ASSERT_ST(cf_map_next_i64(m, &v), CF_END);
    cf_map_free(m);
    ASSERT_OK(cf_shutdown(ex, true, false));
    ASSERT(atomic_load(&ran) <= AT + B);
    cf_executor_free(ex);
    free(in);
    atomic_store(&fail_at, -1);
}

/* continue_on_error: the error of item i is reported at i, and the map
 * goes on to the end; every item ran. */
static void test_map_continue_on_error(void)
{
    enum { N = 5000 };
    cf_executor *ex = pool(2);
    atomic_store(&ran, 0);
    atomic_store(&fail_at, -2); /* every x % 1000 == 999 raises */
    int64_t in[N];
    for (int i = 0; i < N; i++)
        in[i] = i;
    cf_map *m =
        cf_map_i64(ex, t_square_or_raise, in, N,
                   &(cf_map_opts){.continue_on_error = true, .buffersize = 4});
    ASSERT(m);
    int errors = 0;
    for (int i = 0; i < N; i++) {
        cf_future *f = NULL;
        int rc = cf_map_next(m, &f);
        ASSERT(f);
        if (i % 1000 == 999) {
            ASSERT_ST(rc, CF_ETASK);
            cf_error e;
            ASSERT_OK(cf_exception(f, 0, &e));
            ASSERT_EQ(e.code, i);
            char want[64];
            snprintf(want, sizeof want, "item %d failed", i);
            ASSERT_STR_EQ(e.message, want);
            errors++;
        } else {
            ASSERT_OK(rc);
            int64_t v;
            ASSERT_OK(cf_result_i64(f, 0, &v));
            ASSERT_EQ(v, (int64_t)i * i);
        }
    }
    ASSERT_EQ(errors, N / 1000);
    ASSERT_ST(cf_map_next(m, NULL), CF_END);
    cf_map_free(m);
    cf_executor_free(ex);
    ASSERT_EQ(atomic_load(&ran), N);
    atomic_store(&fail_at, -1);

    /* The typed reader reports the error too, and continues. */
    ex = pool(1);
    atomic_store(&fail_at, 3);
    int64_t small[6] = {0, 1, 2, 3, 4, 5};
    m = cf_map_i64(ex, t_square_or_raise, small, 6,
                   &(cf_map_opts){.continue_on_error = true});
    for (int i = 0; i < 6; i++) {
        int64_t v = -1;
        if (i == 3) {
            ASSERT_ST(cf_map_next_i64(m, &v), CF_ETASK);
        } else {
            ASSERT_OK(cf_map_next_i64(m, &v));
            ASSERT_EQ(v, i * i);
        }
    }
    int64_t v;
    ASSERT_ST(cf_map_next_i64(m, &v), CF_END);
    cf_map_free(m);
    cf_executor_free(ex);
    atomic_store(&fail_at, -1);
}

/* ------------------------------------------------------------------------ */
/* Timeout                                                                   */
/* ------------------------------------------------------------------------ */

/* A task that blocks on the gate passed in arg bytes [8..16) when its
 * value (bytes [0..8)) is the `block` value. */
typedef struct timed_item {
    int64_t v;
    gate *g;
} timed_item;

static void t_timed(cf_call *c)
{
    atomic_fetch_add(&ran, 1);
    size_t n;
    const void *p = cf_arg(c, &n);
    ASSERT_EQ(n, sizeof(timed_item));
    timed_item it;
    memcpy(&it, p, sizeof it);
    if (it.g != NULL)
        gate_pass(it.g);
    cf_return_i64(c, it.v);
}

/* The map's timeout (test_map_timeout): results 0 and 1 (done) come back,
 * item 2 blocks past the 0.2 s, so CF_ETIMEDOUT, then CF_END; items 3 and
 * 4 (pending behind the one worker) are cancelled: they never run. */
static void test_map_timeout(void)
{
    cf_executor *ex = pool(1);
    atomic_store(&ran, 0);
    gate g = GATE_INIT;
    timed_item in[5] = {{0, NULL}, {1, NULL}, {2, &g}, {3, NULL}, {4, NULL}};
    cf_map *m = cf_map_array(ex, t_timed, in, sizeof in[0], 5,
                             &(cf_map_opts){.timeout = 0.2});
    ASSERT(m);
    /* One worker: item 2 running means items 0 and 1 are done, so their
     * results are there whatever the clock says. */
    gate_wait_for(&g, 1);
    int64_t v;
    ASSERT_OK(cf_map_next_i64(m, &v));
    ASSERT_EQ(v, 0);
    ASSERT_OK(cf_map_next_i64(m, &v));
    ASSERT_EQ(v, 1);
    ASSERT_ST(cf_map_next_i64(m, &v), CF_ETIMEDOUT);
    ASSERT_ST(cf_map_next_i64(m, &v), CF_END);
    gate_open(&g);
    cf_map_free(m);
    ASSERT_OK(cf_shutdown(ex, true, false));
    ASSERT_EQ(atomic_load(&ran), 3); /* 3 and 4 were cancelled */
    cf_executor_free(ex);
}

/* The current future is cancelled by the timeout too
 * (test_executor_map_current_future_cancel): the pool's only worker is
 * busy, the map times out on its first item; neither item ever runs. */
static void test_map_timeout_cancels_current(void)
{
    cf_executor *ex = pool(1);
    atomic_store(&ran, 0);
    gate g = GATE_INIT;
    timed_item first = {100, &g};
    cf_future *busy = cf_submit(ex, t_timed, &first, sizeof first);
    ASSERT(busy);
    gate_wait_for(&g, 1);
    timed_item in[2] = {{1, &g}, {2, &g}};
    cf_map *m = cf_map_array(ex, t_timed, in, sizeof in[0], 2,
                             &(cf_map_opts){.timeout = 0.2});
    ASSERT(m);
    cf_future *f = (cf_future *)&f;
    ASSERT_ST(cf_map_next(m, &f), CF_ETIMEDOUT);
    ASSERT_ST(cf_map_next(m, &f), CF_END);
    gate_open(&g);
    int64_t v;
    ASSERT_OK(cf_result_i64(busy, CF_FOREVER, &v));
    ASSERT_EQ(v, 100);
    cf_map_free(m);
    ASSERT_OK(cf_shutdown(ex, true, false));
    ASSERT_EQ(atomic_load(&ran), 1); /* only the busy task */
    cf_future_release(busy);
    cf_executor_free(ex);
}

/* Everything blocked from the start: CF_ETIMEDOUT on the first item, then
 * CF_END; with one worker, only item 0 ever ran. */
static void test_map_timeout_first(void)
{
    cf_executor *ex = pool(1);
    atomic_store(&ran, 0);
    gate g = GATE_INIT;
    timed_item in[20];
    for (int i = 0; i < 20; i++)
        in[i] = (timed_item){i, &g};
    cf_map *m = cf_map_array(ex, t_timed, in, sizeof in[0], 20,
                             &(cf_map_opts){.timeout = 0.2});
    ASSERT(m);
    int64_t v;
    ASSERT_ST(cf_map_next_i64(m, &v), CF_ETIMEDOUT);
    ASSERT_ST(cf_map_next_i64(m, &v), CF_END);
    gate_open(&g);
    cf_map_free(m);
    ASSERT_OK(cf_shutdown(ex, true, false));
    ASSERT_EQ(atomic_load(&ran), 1);
    cf_executor_free(ex);
}

/* A negative or NaN timeout is CF_EINVAL. */
static void test_map_bad_timeout(void)
{
    cf_executor *ex = pool(1);
    int64_t in[3] = {1, 2, 3};
    ASSERT(cf_map_i64(ex, t_square, in, 3, &(cf_map_opts){.timeout = -1}) ==
           NULL);
    ASSERT_ST(cf_last_error(), CF_EINVAL);
    ASSERT(cf_map_i64(ex, t_square, in, 3, &(cf_map_opts){.timeout = NAN}) ==
           NULL);
    ASSERT_ST(cf_last_error(), CF_EINVAL);
    cf_executor_free(ex);
}

/* ------------------------------------------------------------------------ */
/* buffersize                                                                */
/* ------------------------------------------------------------------------ */

/* A generator over 1,000,000 items with buffersize 8 never reads more than
 * 8 (+1) items ahead of the consumer; the map is stopped early and the
 * rest of the input is never read (test_map_buffersize_on_infinite_...). */
static void test_map_buffersize_bounds_input(void)
{
    enum { B = 8, TAKE = 30000 };
    cf_executor *ex = pool(2);
    counter_gen g = {.n = 1000000};
    cf_map *m = cf_map_gen(ex, t_square, gen_next, &g,
                           &(cf_map_opts){.buffersize = B});
    ASSERT(m);
    ASSERT(g.next <= B + 1); /* creating the map reads one window */
    for (int64_t i = 0; i < TAKE; i++) {
        int64_t v;
        ASSERT_OK(cf_map_next_i64(m, &v));
        ASSERT_EQ(v, i * i);
        g.consumed++;
        ASSERT(g.next - g.consumed <= B + 1);
    }
    ASSERT(g.max_ahead <= B + 1);
    ASSERT(g.next <= TAKE + B + 1);
    cf_map_free(m);
    ASSERT(g.next <= TAKE + B + 1); /* freeing reads nothing more */
    cf_executor_free(ex);
}

/* With a buffersize, only that many tasks are submitted until results are
 * taken (test_map_buffersize_without_iteration). */
static void test_map_buffersize_without_iteration(void)
{
    cf_executor *ex = pool(2);
    atomic_store(&ran, 0);
    int64_t in[1000];
    for (int i = 0; i < 1000; i++)
        in[i] = i;
    cf_map *m = cf_map_i64(ex, t_square, in, 1000,
                           &(cf_map_opts){.buffersize = 2});
    ASSERT(m);
    counter_gen g = {.n = 1000};
    cf_map *mg = cf_map_gen(ex, t_square, gen_next, &g,
                            &(cf_map_opts){.buffersize = 3});
    ASSERT(mg);
    ASSERT_EQ(g.next, 3);
    ASSERT_OK(cf_shutdown(ex, true, false)); /* what was submitted ran */
    ASSERT_EQ(atomic_load(&ran), 2 + 3);
    cf_map_free(m);
    cf_map_free(mg);
    ASSERT_EQ(g.next, 3);
    cf_executor_free(ex);
}

/* Without a buffer limit (SIZE_MAX), the whole input is submitted at once
 * and runs even if nobody iterates (test_map_submits_without_iteration). */
static void test_map_submits_without_iteration(void)
{
    cf_executor *ex = pool(2);
    atomic_store(&ran, 0);
    int64_t in[500];
    for (int i = 0; i < 500; i++)
        in[i] = i;
    cf_map *m = cf_map_i64(ex, t_square, in, 500,
                           &(cf_map_opts){.buffersize = SIZE_MAX});
    ASSERT(m);
    ASSERT_OK(cf_shutdown(ex, true, false));
    ASSERT_EQ(atomic_load(&ran), 500);
    /* The results are all there, in order. */
    for (int i = 0; i < 500; i++) {
        int64_t v;
        ASSERT_OK(cf_map_next_i64(m, &v));
        ASSERT_EQ(v, i * i);
    }
    ASSERT_ST(cf_map_next(m, NULL), CF_END);
    cf_map_free(m);
    cf_executor_free(ex);
}

/* The default window (4 x max_workers x chunksize, at least 256 with a
 * task per item) also bounds a generator: the input is pulled lazily,
 * never all at once. */
static void test_map_default_window_lazy(void)
{
    cf_executor *ex = pool(2);
    counter_gen g = {.n = 1000000};
    cf_map *m = cf_map_gen(ex, t_square, gen_next, &g, NULL);
    ASSERT(m);
    ASSERT(g.next <= 256 + 1);
    for (int64_t i = 0; i < 1000; i++) {
        int64_t v;
        ASSERT_OK(cf_map_next_i64(m, &v));
        ASSERT_EQ(v, i * i);
        g.consumed++;
    }
    ASSERT(g.max_ahead <= 256 + 1);
    cf_map_free(m);
    cf_executor_free(ex);
}

/* ------------------------------------------------------------------------ */
/* Early stop, empty input, sizes, bad arguments, chunksize                  */
/* ------------------------------------------------------------------------ */

/* cf_map_free before the end cancels the rest and does not block on the
 * running tasks: here they are still blocked on a gate when it returns. */
static void test_map_free_early(void)
{
    cf_executor *ex = pool(2);
    atomic_store(&ran, 0);
    gate g = GATE_INIT;
    timed_item in[100];
    for (int i = 0; i < 100; i++)
        in[i] = (timed_item){i, &g};
    cf_map *m = cf_map_array(ex, t_timed, in, sizeof in[0], 100,
                             &(cf_map_opts){.buffersize = 10});
    ASSERT(m);
    gate_wait_for(&g, 2); /* both workers busy, items 2..9 queued */
    cf_map_free(m);       /* must return while 0 and 1 still block */
    gate_open(&g);
    ASSERT_OK(cf_shutdown(ex, true, false));
    ASSERT_EQ(atomic_load(&ran), 2);
    cf_executor_free(ex);

    /* Freed after taking some results: same. */
    ex = pool(1);
    atomic_store(&ran, 0);
    gate g2 = GATE_INIT;
    timed_item in2[50];
    for (int i = 0; i < 50; i++)
        in2[i] = (timed_item){i, i >= 3 ? &g2 : NULL};
    m = cf_map_array(ex, t_timed, in2, sizeof in2[0], 50,
                     &(cf_map_opts){.buffersize = 5});
    for (int i = 0; i < 3; i++) {
        int64_t v;
        ASSERT_OK(cf_map_next_i64(m, &v));
        ASSERT_EQ(v, i);
    }
    gate_wait_for(&g2, 1); /* item 3 runs */
    cf_map_free(m);
    gate_open(&g2);
    ASSERT_OK(cf_shutdown(ex, true, false));
    ASSERT_EQ(atomic_load(&ran), 4);
    cf_executor_free(ex);
    cf_map_free(NULL); /* ignored */
}

static int gen_empty(void *ctx, const void **data, size_t *len)
{
    (void)ctx;
    (void)data;
    (void)len;
    return 0;
}

/* Empty input: CF_END at once, every time (test_map_buffersize_on_empty). */
static void test_map_empty(void)
{
    cf_executor *ex = pool(2);
    atomic_store(&ran, 0);
    cf_map *m = cf_map_i64(ex, t_square, NULL, 0, NULL);
    ASSERT(m);
    int64_t v;
    ASSERT_ST(cf_map_next_i64(m, &v), CF_END);
    ASSERT_ST(cf_map_next_i64(m, &v), CF_END);
    cf_map_free(m);
    int64_t one = 1;
    m = cf_map_i64(ex, t_square, &one, 0, &(cf_map_opts){.buffersize = 4});
    ASSERT(m);
    ASSERT_ST(cf_map_next(m, NULL), CF_END);
    cf_map_free(m);
    m = cf_map_gen(ex, t_square, gen_empty, NULL,
                   &(cf_map_opts){.buffersize = 4});
    ASSERT(m);
    ASSERT_ST(cf_map_next(m, NULL), CF_END);
    ASSERT_ST(cf_map_next(m, NULL), CF_END);
    cf_map_free(m);
    m = cf_map_array(ex, t_square, NULL, 8, 0, NULL);
    ASSERT(m);
    ASSERT_ST(cf_map_next(m, NULL), CF_END);
    cf_map_free(m);
    cf_executor_free(ex);
    ASSERT_EQ(atomic_load(&ran), 0);
    ASSERT_ST(cf_map_next(NULL, NULL), CF_EINVAL);
}

/* 100,000 items on 2 workers: every result right, in order. */
static void test_map_large(void)
{
    enum { N = 100000 };
    cf_executor *ex = pool(2);
    atomic_store(&ran, 0);
    int64_t *in = malloc(N * sizeof *in);
    ASSERT(in);
    for (int i = 0; i < N; i++)
        in[i] = i;
    cf_map *m = cf_map_i64(ex, t_square, in, N, NULL);
    ASSERT(m);
    for (int64_t i = 0; i < N; i++) {
        int64_t v;
        ASSERT_OK(cf_map_next_i64(m, &v));
        if (v != i * i)
            ASSERT_EQ(v, i * i);
    }
    ASSERT_ST(cf_map_next(m, NULL), CF_END);
    cf_map_free(m);
    cf_executor_free(ex);
    ASSERT_EQ(atomic_load(&ran), N);
    free(in);
}

/* NULL executor, function or generator: NULL with CF_EINVAL. */
static void test_map_bad_args(void)
{
    cf_executor *ex = pool(1);
    int64_t in[2] = {1, 2};
    counter_gen g = {.n = 3};
    ASSERT(cf_map_i64(NULL, t_square, in, 2, NULL) == NULL);
    ASSERT_ST(cf_last_error(), CF_EINVAL);
    ASSERT(cf_map_i64(ex, NULL, in, 2, NULL) == NULL);
    ASSERT_ST(cf_last_error(), CF_EINVAL);
    ASSERT(cf_map_i64(ex, t_square, NULL, 2, NULL) == NULL);
    ASSERT_ST(cf_last_error(), CF_EINVAL);
    ASSERT(cf_map_array(NULL, t_square, in, 8, 2, NULL) == NULL);
    ASSERT_ST(cf_last_error(), CF_EINVAL);
    ASSERT(cf_map_array(ex, NULL, in, 8, 2, NULL) == NULL);
    ASSERT_ST(cf_last_error(), CF_EINVAL);
    ASSERT(cf_map_gen(NULL, t_square, gen_next, &g, NULL) == NULL);
    ASSERT_ST(cf_last_error(), CF_EINVAL);
    ASSERT(cf_map_gen(ex, NULL, gen_next, &g, NULL) == NULL);
    ASSERT_ST(cf_last_error(), CF_EINVAL);
    ASSERT(cf_map_gen(ex, t_square, NULL, &g, NULL) == NULL);
    ASSERT_ST(cf_last_error(), CF_EINVAL);
    ASSERT_EQ(g.next, 0); /* nothing was read */
    cf_executor_free(ex);
}

/* chunksize > 1 changes batching only: results stay in order and right,
 * for arrays and generators, with and without a buffersize. */
static void test_map_chunksize(void)
{
    cf_executor *ex = pool(3);
    int64_t in[1001];
    for (int i = 0; i < 1001; i++)
        in[i] = i;
    size_t chunks[] = {2, 7, 64, 5000};
    for (size_t c = 0; c < 4; c++) {
        cf_map *m = cf_map_i64(ex, t_square, in, 1001,
                               &(cf_map_opts){.chunksize = chunks[c]});
        ASSERT(m);
        for (int64_t i = 0; i < 1001; i++) {
            int64_t v;
            ASSERT_OK(cf_map_next_i64(m, &v));
            ASSERT_EQ(v, i * i);
        }
        ASSERT_ST(cf_map_next(m, NULL), CF_END);
        cf_map_free(m);

        counter_gen g = {.n = 777};
        m = cf_map_gen(ex, t_square, gen_next, &g,
                       &(cf_map_opts){.chunksize = chunks[c],
                                      .buffersize = 16});
        ASSERT(m);
        for (int64_t i = 0; i < 777; i++) {
            int64_t v;
            ASSERT_OK(cf_map_next_i64(m, &v));
            ASSERT_EQ(v, i * i);
        }
        ASSERT_ST(cf_map_next(m, NULL), CF_END);
        cf_map_free(m);
    }
    cf_executor_free(ex);
}

/* A map over a pool that is shut down part-way: the items submitted
 * before still give their results in order; the map never hangs. */
static void test_map_after_shutdown_no_hang(void)
{
    cf_executor *ex = pool(2);
    int64_t in[100];
    for (int i = 0; i < 100; i++)
        in[i] = i;
    cf_map *m = cf_map_i64(ex, t_square, in, 100,
                           &(cf_map_opts){.buffersize = 4});
    ASSERT(m);
    ASSERT_OK(cf_shutdown(ex, true, false));
    int ok = 0;
    for (int i = 0; i < 100; i++) {
        int64_t v;
        int rc = cf_map_next_i64(m, &v);
        if (rc != CF_OK)
            break;
        ASSERT_EQ(v, i * i);
        ok++;
    }
    ASSERT(ok >= 4); /* the first window was submitted before shutdown */
    cf_map_free(m);
    cf_executor_free(ex);
}

TEST_MAIN(T(test_map_order), T(test_map_next_future), T(test_map_array),
          T(test_map_gen), T(test_map_gen_error), T(test_map_error_position),
          T(test_map_fail_fast_stops), T(test_map_continue_on_error),
          T(test_map_timeout), T(test_map_timeout_cancels_current),
          T(test_map_timeout_first), T(test_map_bad_timeout),
          T(test_map_buffersize_bounds_input),
          T(test_map_buffersize_without_iteration),
          T(test_map_submits_without_iteration),
          T(test_map_default_window_lazy), T(test_map_free_early),
          T(test_map_empty), T(test_map_large), T(test_map_bad_args),
          T(test_map_chunksize), T(test_map_after_shutdown_no_hang))

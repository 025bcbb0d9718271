/* Continuations: cf_then, cf_when_all, cf_when_any. */
#include "test.h"

static void plus_one(cf_call *c)
{
    cf_return_i64(c, cf_arg_i64(c) + 1);
}

static void fail_task(cf_call *c)
{
    cf_raise(c, 5, "failed on %lld", (long long)cf_arg_i64(c));
}

/* Sees failures too (CF_THEN_ALWAYS): returns 100 + the antecedent's code. */
static void recover(cf_call *c)
{
    cf_error e;
    cf_future *a = cf_antecedent(c);
    ASSERT(a != NULL);
    if (cf_exception(a, 0, &e) == CF_ECANCELLED)
        cf_return_i64(c, -1);
    else
        cf_return_i64(c, 100 + e.code);
}

/* A chain of 10,000 inline continuations completes without deep recursion
 * (the stack would overflow if each link recursed). */
static void test_long_inline_chain(void)
{
    cf_future *first = cf_future_new(), *f = cf_future_retain(first);
    for (int i = 0; i < 10000; i++) {
        cf_future *n = cf_then(f, NULL, plus_one, 0);
        ASSERT(n);
        cf_future_release(f);
        f = n;
    }
    ASSERT(!cf_done(f));
    ASSERT_OK(cf_set_result_i64(first, 0));
    int64_t v;
    ASSERT_OK(cf_result_i64(f, CF_FOREVER, &v));
    ASSERT_EQ(v, 10000);
    cf_future_release(f);
    cf_future_release(first);
}

/* The same chain on a thread pool: each link is submitted when the previous
 * finishes; nothing blocks a pool thread. */
static void test_long_pool_chain(void)
{
    cf_executor *ex = cf_thread_pool(&(cf_thread_pool_opts){.max_workers = 2});
    cf_future *f = cf_submit_i64(ex, plus_one, 0);
    for (int i = 0; i < 10000; i++) {
        cf_future *n = cf_then(f, ex, plus_one, 0);
        cf_future_release(f);
        f = n;
    }
    int64_t v;
    ASSERT_OK(cf_result_i64(f, CF_FOREVER, &v));
    ASSERT_EQ(v, 10001);
    cf_future_release(f);
    cf_executor_free(ex);
}

/* An error passes down a chain of 10,000 without running the tasks. */
static void test_error_propagates(void)
{
    cf_future *first = cf_future_new(), *f = cf_future_retain(first);
    for (int i = 0; i < 10000; i++) {
        cf_future *n = cf_then(f, NULL, plus_one, 0);
        cf_future_release(f);
        f = n;
    }
    cf_set_exception(first, 9, "root cause %d", 1);
    cf_error e;
    ASSERT_ST(cf_result(f, CF_FOREVER, NULL, NULL), CF_ETASK);
    ASSERT_OK(cf_exception(f, 0, &e));
    ASSERT_ST(e.status, CF_ETASK);
    ASSERT_EQ(e.code, 9);
    ASSERT_STR_EQ(e.message, "root cause 1");
    cf_future_release(f);
    cf_future_release(first);
}

static void test_cancel_propagates_and_always(void)
{
    cf_future *a = cf_future_new();
    cf_future *b = cf_then(a, NULL, plus_one, 0);
    cf_future *c = cf_then(a, NULL, recover, CF_THEN_ALWAYS);
    ASSERT(cf_cancel(a));
    ASSERT(cf_cancelled(b));
    ASSERT_ST(cf_result(b, 0, NULL, NULL), CF_ECANCELLED);
    int64_t r;
    ASSERT_OK(cf_result_i64(c, 0, &r)); /* ran anyway, saw the cancel */
    ASSERT_EQ(r, -1);
    cf_future_release(a);
    cf_future_release(b);
    cf_future_release(c);

    cf_executor *ex = cf_thread_pool(NULL);
    cf_future *x = cf_submit_i64(ex, fail_task, 3);
    cf_future *y = cf_then(x, NULL, recover, CF_THEN_ALWAYS);
    int64_t v;
    ASSERT_OK(cf_result_i64(y, CF_FOREVER, &v));
    ASSERT_EQ(v, 105);
    cf_future_release(x);
    cf_future_release(y);
    cf_executor_free(ex);
}

/* A continuation whose antecedent is released while pending ends broken,
 * never pending forever. */
static void test_dropped_antecedent(void)
{
    cf_future *a = cf_future_new();
    cf_future *b = cf_then(a, NULL, plus_one, 0);
    cf_future *all = cf_when_all(&a, 1);
    cf_future_release(a);
    ASSERT_ST(cf_result(b, 0, NULL, NULL), CF_EBROKEN);
    ASSERT_ST(cf_result(all, 0, NULL, NULL), CF_EBROKEN);
    cf_future_release(b);
    cf_future_release(all);
}

static void test_when_all_any(void)
{
    cf_future *fs[4];
    for (int i = 0; i < 4; i++)
        fs[i] = cf_future_new();
    cf_future *all = cf_when_all(fs, 4);
    cf_future *any = cf_when_any(fs, 4);
    ASSERT(!cf_done(all) && !cf_done(any));
    cf_set_exception(fs[2], 1, "err"); /* errors count as done */
    int64_t idx;
    ASSERT_OK(cf_result_i64(any, 0, &idx));
    ASSERT_EQ(idx, 2);
    ASSERT(!cf_done(all));
    cf_cancel(fs[0]);
    cf_set_result_i64(fs[1], 1);
    ASSERT(!cf_done(all));
    cf_set_result_i64(fs[3], 3);
    ASSERT_OK(cf_result(all, 0, NULL, NULL));
    cf_future *empty_all = cf_when_all(NULL, 0),
              *empty_any = cf_when_any(NULL, 0);
    ASSERT_OK(cf_result(empty_all, 0, NULL, NULL));
    ASSERT_OK(cf_result_i64(empty_any, 0, &idx));
    ASSERT_EQ(idx, -1);
    ASSERT(cf_then(NULL, NULL, plus_one, 0) == NULL);
    ASSERT_ST(cf_last_error(), CF_EINVAL);
    for (int i = 0; i < 4; i++)
        cf_future_release(fs[i]);
    cf_future_release(all);
    cf_future_release(any);
    cf_future_release(empty_all);
    cf_future_release(empty_any);
}

/* when_all over many pool futures completes once all are done. */
static void test_when_all_pool(void)
{
    cf_executor *ex = cf_thread_pool(&(cf_thread_pool_opts){.max_workers = 2});
    enum { N = 1000 };
    cf_future *fs[N];
    for (int i = 0; i < N; i++)
        fs[i] = cf_submit_i64(ex, i % 10 ? plus_one : fail_task, i);
    cf_future *all = cf_when_all(fs, N);
    ASSERT_OK(cf_result(all, CF_FOREVER, NULL, NULL));
    for (int i = 0; i < N; i++) {
        ASSERT(cf_done(fs[i]));
        cf_future_release(fs[i]);
    }
    cf_future_release(all);
    cf_executor_free(ex);
}

TEST_MAIN(T(test_long_inline_chain), T(test_long_pool_chain),
          T(test_error_propagates), T(test_cancel_propagates_and_always),
          T(test_dropped_antecedent), T(test_when_all_any),
          T(test_when_all_pool))

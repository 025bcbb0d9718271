#include "test.h"

static void sum_to(cf_call *c)
{
    int64_t n = cf_arg_i64(c), s = 0;
    for (int64_t i = 1; i <= n; i++)
        s += i;
    cf_return_i64(c, s);
}

static void test_submit_result(void)
{
    cf_executor *ex = cf_thread_pool(NULL);
    ASSERT(ex);
    cf_future *fs[100];
    for (int i = 0; i < 100; i++)
        fs[i] = cf_submit_i64(ex, sum_to, i);
    for (int i = 0; i < 100; i++) {
        int64_t v;
        ASSERT_OK(cf_result_i64(fs[i], CF_FOREVER, &v));
        ASSERT_EQ(v, (int64_t)i * (i + 1) / 2);
        cf_future_release(fs[i]);
    }
    cf_executor_free(ex);
}

static void test_map(void)
{
    cf_executor *ex = cf_thread_pool(&(cf_thread_pool_opts){.max_workers = 2});
    int64_t in[1000];
    for (int i = 0; i < 1000; i++)
        in[i] = i;
    cf_map *m = cf_map_i64(ex, sum_to, in, 1000, NULL);
    int64_t v;
    for (int i = 0; i < 1000; i++) {
        ASSERT_OK(cf_map_next_i64(m, &v));
        ASSERT_EQ(v, (int64_t)i * (i + 1) / 2);
    }
    ASSERT_ST(cf_map_next_i64(m, &v), CF_END);
    cf_map_free(m);
    cf_executor_free(ex);
}

static void test_as_completed(void)
{
    cf_executor *ex = cf_thread_pool(NULL);
    cf_future *fs[50];
    for (int i = 0; i < 50; i++)
        fs[i] = cf_submit_i64(ex, sum_to, 1000 * i);
    cf_as_completed *it = cf_as_completed_new(fs, 50, CF_FOREVER);
    int n = 0;
    for (cf_future *f; cf_as_completed_next(it, &f) == CF_OK;) {
        ASSERT(cf_done(f));
        n++;
    }
    ASSERT_EQ(n, 50);
    cf_as_completed_free(it);
    size_t nd, nn;
    cf_future *done[50], *nd_[50];
    ASSERT_OK(
        cf_wait(fs, 50, CF_FOREVER, CF_ALL_COMPLETED, done, &nd, nd_, &nn));
    ASSERT_EQ(nd, 50);
    for (int i = 0; i < 50; i++)
        cf_future_release(fs[i]);
    cf_executor_free(ex);
}

TEST_MAIN(T(test_submit_result), T(test_map), T(test_as_completed))

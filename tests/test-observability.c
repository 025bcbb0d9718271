/* Statistics and the unobserved-error hook. */
#include "test.h"

#include <stdatomic.h>

static void ok_task(cf_call *c)
{
    cf_return_i64(c, cf_arg_i64(c));
}

static void bad_task(cf_call *c)
{
    cf_raise(c, 3, "bad %lld", (long long)cf_arg_i64(c));
}

static gate g = GATE_INIT;
static void gated(cf_call *c)
{
    gate_pass(&g);
    cf_return_i64(c, 1);
}

static void check_adds_up(const cf_stats *s)
{
    ASSERT_EQ(s->submitted, s->queued + s->running + s->done + s->failed +
                                s->crashed + s->cancelled);
}

/* Counters add up while work is queued, running, and after it ended. */
static void test_stats_add_up(void)
{
    cf_executor *ex = cf_thread_pool(&(cf_thread_pool_opts){.max_workers = 1});
    cf_future *block = cf_submit_i64(ex, gated, 0);
    gate_wait_for(&g, 1);
    cf_future *fs[30];
    for (int i = 0; i < 30; i++)
        fs[i] = cf_submit_i64(ex, i % 3 ? ok_task : bad_task, i);
    for (int i = 0; i < 5; i++)
        ASSERT(cf_cancel(fs[i]));
    cf_stats s;
    ASSERT_OK(cf_executor_stats(ex, &s));
    check_adds_up(&s);
    ASSERT_EQ(s.submitted, 31);
    ASSERT_EQ(s.running, 1);
    gate_open(&g);
    ASSERT_OK(cf_shutdown(ex, true, false));
    ASSERT_OK(cf_executor_stats(ex, &s));
    check_adds_up(&s);
    ASSERT_EQ(s.queued, 0);
    ASSERT_EQ(s.running, 0);
    ASSERT_EQ(s.cancelled, 5);
    ASSERT_EQ(s.failed, 8); /* i = 6, 9, ..., 27 */
    ASSERT_EQ(s.done, 31 - 5 - 8);
    ASSERT(s.busy_seconds >= 0);
    for (int i = 0; i < 30; i++) {
        cf_error e;
        cf_exception(fs[i], 0, &e); /* read: no hook */
        cf_future_release(fs[i]);
    }
    cf_future_release(block);
    ASSERT_ST(cf_executor_stats(NULL, &s), CF_EINVAL);
    cf_executor_free(ex);
}

static atomic_int hook_calls;
static int last_code;
static void count_hook(cf_future *f, const cf_error *e, void *arg)
{
    (void)f;
    ASSERT(arg == &hook_calls);
    last_code = e->code;
    atomic_fetch_add(&hook_calls, 1);
}

/* An error nobody read reaches the executor's hook when released; a read
 * one does not; the process-wide hook serves standalone futures. */
static void test_unobserved_error_hook(void)
{
    cf_executor *ex = cf_thread_pool(NULL);
    ASSERT_OK(cf_executor_set_error_hook(ex, count_hook, &hook_calls));
    cf_future *a = cf_submit_i64(ex, bad_task, 1);
    cf_future *b = cf_submit_i64(ex, bad_task, 2);
    cf_future *c = cf_submit_i64(ex, ok_task, 3);
    cf_future *all[] = {a, b, c};
    ASSERT_OK(
        cf_wait(all, 3, CF_FOREVER, CF_ALL_COMPLETED, NULL, NULL, NULL, NULL));
    ASSERT_ST(cf_result(b, 0, NULL, NULL), CF_ETASK); /* b is read */
    cf_executor_free(ex); /* the hook outlives the executor */
    cf_future_release(a);
    cf_future_release(b);
    cf_future_release(c);
    ASSERT_EQ(atomic_load(&hook_calls), 1);
    ASSERT_EQ(last_code, 3);

    cf_set_default_error_hook(count_hook, &hook_calls);
    cf_future *s = cf_future_new();
    cf_set_exception(s, 42, "standalone");
    cf_future_release(s);
    ASSERT_EQ(atomic_load(&hook_calls), 2);
    ASSERT_EQ(last_code, 42);
    cf_future *t = cf_future_new(); /* cancelled: not an error */
    cf_cancel(t);
    cf_future_release(t);
    ASSERT_EQ(atomic_load(&hook_calls), 2);
    cf_set_default_error_hook(NULL, NULL); /* silence */
    s = cf_future_new();
    cf_set_exception(s, 1, "ignored");
    cf_future_release(s);
    ASSERT_EQ(atomic_load(&hook_calls), 2);
}

TEST_MAIN(T(test_stats_add_up), T(test_unobserved_error_hook))

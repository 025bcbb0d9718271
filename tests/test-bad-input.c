/*
 * Bad input, every public function: NULL handles, zero and huge counts,
 * NaN / negative / infinite timeouts, invalid enum values, shutdown twice,
 * release during a callback, submit from a callback, waiting on a future
 * from inside its own callback.  Each gets its documented error or
 * behaviour; none crashes or hangs.
 */
#include "test.h"

#include <signal.h>

#include <math.h>

static void ok_task(cf_call *c)
{
    cf_return_i64(c, 1);
}

#define EXPECT_NULL(call, status)           \
    do {                                    \
        ASSERT((call) == NULL);             \
        ASSERT_ST(cf_last_error(), status); \
    } while (0)

static const double bad_timeouts[] = {-1.0, -INFINITY, NAN, -0.5};

static void test_null_handles(void)
{
    cf_error e;
    const void *d;
    size_t n;
    int64_t i;
    double x;
    const char *s;
    char buf[64];
    ASSERT_STR_EQ(cf_describe(NULL, buf, sizeof buf), "<cf_future NULL>");
    ASSERT(cf_describe(NULL, NULL, 0) == NULL);
    ASSERT(cf_future_retain(NULL) == NULL);
    cf_future_release(NULL);
    ASSERT(!cf_cancel(NULL) && !cf_cancelled(NULL) && !cf_running(NULL) &&
           !cf_done(NULL) && !cf_request_cancel(NULL));
    ASSERT_EQ(cf_future_state(NULL), CF_PENDING);
    ASSERT_ST(cf_result(NULL, 0, &d, &n), CF_EINVAL);
    ASSERT_ST(cf_result_i64(NULL, 0, &i), CF_EINVAL);
    ASSERT_ST(cf_result_f64(NULL, 0, &x), CF_EINVAL);
    ASSERT_ST(cf_result_str(NULL, 0, &s), CF_EINVAL);
    ASSERT_ST(cf_exception(NULL, 0, &e), CF_EINVAL);
    ASSERT_ST(cf_add_done_callback(NULL, NULL, NULL), CF_EINVAL);
    ASSERT_ST(cf_set_running_or_notify_cancel(NULL), CF_EINVAL);
    ASSERT_ST(cf_set_result(NULL, NULL, 0), CF_EINVAL);
    ASSERT_ST(cf_set_result_i64(NULL, 1), CF_EINVAL);
    ASSERT_ST(cf_set_result_f64(NULL, 1), CF_EINVAL);
    ASSERT_ST(cf_set_result_str(NULL, "x"), CF_EINVAL);
    ASSERT_ST(cf_set_exception(NULL, 1, "x"), CF_EINVAL);
    ASSERT_ST(cf_kill_task(NULL), CF_EINVAL);
    /* task-side calls with no call */
    ASSERT(cf_arg(NULL, &n) == NULL && n == 0);
    ASSERT_EQ(cf_arg_i64(NULL), 0);
    ASSERT(cf_arg_f64(NULL) == 0.0);
    ASSERT_STR_EQ(cf_arg_str(NULL), "");
    ASSERT_ST(cf_return(NULL, "x", 1), CF_EINVAL);
    ASSERT_ST(cf_return_i64(NULL, 1), CF_EINVAL);
    ASSERT_ST(cf_return_f64(NULL, 1), CF_EINVAL);
    ASSERT_ST(cf_return_str(NULL, "x"), CF_EINVAL);
    ASSERT_ST(cf_raise(NULL, 1, "x"), CF_EINVAL);
    ASSERT(!cf_cancel_requested(NULL));
    ASSERT(cf_antecedent(NULL) == NULL);
    /* executors */
    EXPECT_NULL(cf_submit(NULL, ok_task, NULL, 0), CF_EINVAL);
    EXPECT_NULL(cf_submit_ex(NULL, ok_task, NULL, 0, NULL), CF_EINVAL);
    EXPECT_NULL(cf_submit_i64(NULL, ok_task, 1), CF_EINVAL);
    EXPECT_NULL(cf_submit_f64(NULL, ok_task, 1), CF_EINVAL);
    EXPECT_NULL(cf_submit_str(NULL, ok_task, "x"), CF_EINVAL);
    ASSERT_ST(cf_shutdown(NULL, true, true), CF_EINVAL);
    ASSERT_ST(cf_shutdown_within(NULL, 1), CF_EINVAL);
    ASSERT_ST(cf_terminate_workers(NULL), CF_EINVAL);
    ASSERT_ST(cf_kill_workers(NULL), CF_EINVAL);
    ASSERT_ST(cf_executor_max_workers(NULL), CF_EINVAL);
    cf_stats st;
    ASSERT_ST(cf_executor_stats(NULL, &st), CF_EINVAL);
    ASSERT_ST(cf_executor_set_error_hook(NULL, NULL, NULL), CF_EINVAL);
    cf_executor_free(NULL);
    /* collections */
    ASSERT_ST(cf_wait(NULL, 1, 0, CF_ALL_COMPLETED, NULL, NULL, NULL, NULL),
              CF_EINVAL);
    EXPECT_NULL(cf_as_completed_new(NULL, 1, 0), CF_EINVAL);
    ASSERT_ST(cf_as_completed_add(NULL, NULL, 0), CF_EINVAL);
    cf_future *f;
    ASSERT_ST(cf_as_completed_next(NULL, &f), CF_EINVAL);
    ASSERT_EQ(cf_as_completed_drain(NULL, &f, 1), 0);
    ASSERT_EQ(cf_as_completed_pending(NULL), 0);
    cf_as_completed_progress(NULL, "x");
    cf_as_completed_free(NULL);
    EXPECT_NULL(cf_then(NULL, NULL, ok_task, 0), CF_EINVAL);
    EXPECT_NULL(cf_when_all(NULL, 3), CF_EINVAL);
    EXPECT_NULL(cf_when_any(NULL, 3), CF_EINVAL);
    EXPECT_NULL(cf_map_array(NULL, ok_task, NULL, 0, 0, NULL), CF_EINVAL);
    EXPECT_NULL(cf_map_i64(NULL, ok_task, NULL, 0, NULL), CF_EINVAL);
    EXPECT_NULL(cf_map_gen(NULL, ok_task, NULL, NULL, NULL), CF_EINVAL);
    ASSERT_ST(cf_map_next(NULL, &f), CF_EINVAL);
    ASSERT_ST(cf_map_next_i64(NULL, &i), CF_EINVAL);
    ASSERT_ST(cf_map_next_f64(NULL, &x), CF_EINVAL);
    cf_map_free(NULL);
    ASSERT_ST(cf_trace_start(NULL), CF_EINVAL);
    ASSERT_ST(cf_trace_start(""), CF_EINVAL);
    ASSERT_ST(cf_trace_stop(), CF_ESTATE);
    ASSERT(cf_strerror(12345) != NULL && cf_err_name(-12345) != NULL);
    ASSERT(cf_version() != NULL);
}

/* NaN, negative and -inf timeouts are refused everywhere; +inf waits. */
static void test_bad_timeouts(void)
{
    cf_future *f = cf_future_new();
    cf_set_result_i64(f, 5);
    for (size_t k = 0; k < sizeof bad_timeouts / sizeof *bad_timeouts; k++) {
        double t = bad_timeouts[k];
        cf_error e;
        ASSERT_ST(cf_result(f, t, NULL, NULL), CF_EINVAL);
        ASSERT_ST(cf_exception(f, t, &e), CF_EINVAL);
        ASSERT_ST(cf_wait(&f, 1, t, CF_ALL_COMPLETED, NULL, NULL, NULL, NULL),
                  CF_EINVAL);
        EXPECT_NULL(cf_as_completed_new(&f, 1, t), CF_EINVAL);
        cf_executor *ex = cf_thread_pool(NULL);
        ASSERT_ST(cf_shutdown_within(ex, t), CF_EINVAL);
        EXPECT_NULL(cf_map_i64(ex, ok_task, NULL, 0,
                               &(cf_map_opts){.timeout = t}),
                    CF_EINVAL);
        EXPECT_NULL(cf_submit_ex(ex, ok_task, NULL, 0,
                                 &(cf_task_opts){.time_limit = t}),
                    CF_EINVAL);
        cf_executor_free(ex);
    }
    int64_t v;
    ASSERT_OK(cf_result_i64(f, CF_FOREVER, &v));
    ASSERT_OK(cf_result_i64(f, 1e300, &v)); /* huge is forever */
    cf_future_release(f);
}

/* CF_FOREVER is the library's own "no limit": a time limit of CF_FOREVER
 * is accepted, as 0 is, on every executor (it was CF_EINVAL). */
static void test_time_limit_forever(void)
{
    cf_executor *exs[2] = {
        cf_thread_pool(&(cf_thread_pool_opts){.max_workers = 1}),
        cf_process_pool(&(cf_process_pool_opts){.max_workers = 1})};
    for (int i = 0; i < 2; i++) {
        ASSERT(exs[i] != NULL);
        cf_future *f = cf_submit_ex(exs[i], ok_task, NULL, 0,
                                    &(cf_task_opts){.time_limit = CF_FOREVER});
        ASSERT(f != NULL);
        ASSERT_OK(cf_result(f, LONG_WAIT, NULL, NULL));
        cf_future_release(f);
        cf_executor_free(exs[i]);
    }
}

/* Invalid enum values, counts and option values. */
static void test_invalid_values(void)
{
    cf_future *f = cf_future_new();
    ASSERT_ST(cf_wait(&f, 1, 0, (cf_return_when)0, NULL, NULL, NULL, NULL),
              CF_EINVAL);
    ASSERT_ST(cf_wait(&f, 1, 0, (cf_return_when)77, NULL, NULL, NULL, NULL),
              CF_EINVAL);
    cf_future *withnull[2] = {f, NULL};
    ASSERT_ST(cf_wait(withnull, 2, 0, CF_ALL_COMPLETED, NULL, NULL, NULL, NULL),
              CF_EINVAL);
    EXPECT_NULL(cf_as_completed_new(withnull, 2, 0), CF_EINVAL);
    EXPECT_NULL(cf_when_all(withnull, 2), CF_EINVAL);
    EXPECT_NULL(cf_then(f, NULL, ok_task, 0x80), CF_EINVAL);
    EXPECT_NULL(cf_then(f, NULL, NULL, 0), CF_EINVAL);
    ASSERT_ST(cf_add_done_callback(f, NULL, NULL), CF_EINVAL);
    EXPECT_NULL(cf_thread_pool(&(cf_thread_pool_opts){.max_workers = -1}),
                CF_EINVAL);
    EXPECT_NULL(cf_process_pool(&(cf_process_pool_opts){.max_workers = -3}),
                CF_EINVAL);
    EXPECT_NULL(cf_process_pool(&(cf_process_pool_opts){.max_retries = 999}),
                CF_EINVAL);
    EXPECT_NULL(cf_process_pool(&(cf_process_pool_opts){.initarg_len = 8}),
                CF_EINVAL);
    cf_executor *ex = cf_thread_pool(&(cf_thread_pool_opts){.max_workers = 1});
    EXPECT_NULL(cf_submit(ex, NULL, NULL, 0), CF_EINVAL);
    EXPECT_NULL(cf_submit(ex, ok_task, NULL, 5), CF_EINVAL);
    EXPECT_NULL(cf_submit_str(ex, ok_task, NULL), CF_EINVAL);
    EXPECT_NULL(cf_submit_ex(ex, ok_task, NULL, 0,
                             &(cf_task_opts){.retries = -1}),
                CF_EINVAL);
    EXPECT_NULL(cf_map_array(ex, ok_task, NULL, 8, 3, NULL), CF_EINVAL);
    /* n == 0 is valid everywhere (Python's empty iterables). */
    ASSERT_OK(cf_wait(&f, 0, 0, CF_ALL_COMPLETED, NULL, NULL, NULL, NULL));
    cf_map *m = cf_map_i64(ex, ok_task, NULL, 0, NULL);
    ASSERT_ST(cf_map_next(m, NULL), CF_END);
    cf_map_free(m);
    ASSERT_ST(cf_terminate_workers(ex), CF_EINVAL); /* threads: no */
    cf_executor_free(ex);
    cf_future_release(f);
}

/* Shutdown twice, submit after, free after shutdown. */
static void test_shutdown_twice(void)
{
    cf_executor *ex = cf_thread_pool(NULL);
    ASSERT_OK(cf_shutdown(ex, true, false));
    ASSERT_OK(cf_shutdown(ex, true, true));
    ASSERT_OK(cf_shutdown(ex, false, false));
    EXPECT_NULL(cf_submit_i64(ex, ok_task, 1), CF_ESHUTDOWN);
    EXPECT_NULL(cf_map_i64(ex, ok_task, (int64_t[]){1}, 1, NULL), CF_ESHUTDOWN);
    cf_executor_free(ex);
}

static cf_executor *cb_ex;
static cf_future *cb_submitted;
static int cb_wait_rc = -100;

/* Inside its own callback the future is done: waiting returns at once. */
static void cb_wait_self(cf_future *f, void *arg)
{
    (void)arg;
    cb_wait_rc = cf_result(f, CF_FOREVER, NULL, NULL);
    size_t nd;
    ASSERT_OK(
        cf_wait(&f, 1, CF_FOREVER, CF_ALL_COMPLETED, NULL, &nd, NULL, NULL));
    ASSERT_EQ(nd, 1);
}

static void cb_submit(cf_future *f, void *arg)
{
    (void)f;
    (void)arg;
    cb_submitted = cf_submit_i64(cb_ex, ok_task, 1);
}

static void cb_release(cf_future *f, void *arg)
{
    (void)arg;
    cf_future_release(f); /* the caller's reference, given to us */
}

/* Release during a callback, submit from a callback, wait on a future from
 * inside its own callback. */
static void test_callback_reentry(void)
{
    cb_ex = cf_thread_pool(&(cf_thread_pool_opts){.max_workers = 1});
    cf_future *f = cf_submit_i64(cb_ex, ok_task, 1);
    ASSERT_OK(cf_add_done_callback(f, cb_wait_self, NULL));
    ASSERT_OK(cf_add_done_callback(f, cb_submit, NULL));
    ASSERT_OK(cf_add_done_callback(f, cb_release, NULL)); /* takes our ref */
    ASSERT_OK(cf_shutdown(cb_ex, true, false));
    ASSERT_ST(cb_wait_rc, CF_OK);
    ASSERT(cb_submitted != NULL || cf_last_error() == CF_ESHUTDOWN);
    if (cb_submitted != NULL) {
        ASSERT_OK(cf_result(cb_submitted, CF_FOREVER, NULL, NULL));
        cf_future_release(cb_submitted);
    }
    cf_executor_free(cb_ex);
}

/* Huge counts fail cleanly (no allocation of absurd size succeeds). */
static void test_huge_counts(void)
{
    cf_future *f = cf_future_new();
    cf_future *fs[1] = {f};
    /* the array is only 1 long: a huge n must not be read past the end */
    (void)fs;
    cf_executor *ex = cf_thread_pool(NULL);
    cf_map *m = cf_map_i64(ex, ok_task, (int64_t[]){1, 2}, 2,
                           &(cf_map_opts){.buffersize = SIZE_MAX});
    int64_t v;
    ASSERT_OK(cf_map_next_i64(m, &v));
    ASSERT_OK(cf_map_next_i64(m, &v));
    ASSERT_ST(cf_map_next_i64(m, &v), CF_END);
    cf_map_free(m);
    ASSERT_ST(cf_as_completed_add(NULL, fs, SIZE_MAX), CF_EINVAL);
    cf_executor_free(ex);
    cf_future_release(f);
}

/* A future released twice: undefined behaviour, caught in a CF_DEBUG
 * build, which aborts with a message (the TSan build of make check is one). */
#include <sys/wait.h>

static void test_double_release_caught_in_debug_build(void)
{
#ifndef CF_DEBUG
    printf("# skipped: the library is not built with -DCF_DEBUG=ON\n");
#else
    int pipefd[2];
    ASSERT_EQ(pipe(pipefd), 0);
    fflush(stdout);
    pid_t pid = fork();
    ASSERT(pid >= 0);
    if (pid == 0) {
        dup2(pipefd[1], 2);
        cf_future *f = cf_future_new();
        cf_future_release(f);
        cf_future_release(f); /* aborts */
        _exit(0);
    }
    close(pipefd[1]);
    char buf[512] = {0};
    size_t n = 0;
    for (ssize_t r; n < sizeof buf - 1 &&
                    (r = read(pipefd[0], buf + n, sizeof buf - 1 - n)) > 0;)
        n += (size_t)r;
    close(pipefd[0]);
    int st;
    ASSERT_EQ(waitpid(pid, &st, 0), pid);
    ASSERT(WIFSIGNALED(st));
    ASSERT_EQ(WTERMSIG(st), SIGABRT);
    if (strstr(buf, "released more than once") == NULL)
        fprintf(stderr, "child said: %s\n", buf);
    ASSERT(strstr(buf, "cf_future_release") != NULL);
    ASSERT(strstr(buf, "released more than once") != NULL);
#endif
}

TEST_MAIN(T(test_null_handles), T(test_bad_timeouts),
          T(test_time_limit_forever), T(test_invalid_values),
          T(test_shutdown_twice), T(test_callback_reentry), T(test_huge_counts),
          T(test_double_release_caught_in_debug_build))

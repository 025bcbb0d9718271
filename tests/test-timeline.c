/* The timeline (Trace Event JSON), the progress bar, and cancelling
 * running tasks: cooperative on every executor, forceful on processes. */
#include "test.h"

#include <fcntl.h>
#include <unistd.h>

static void plus_one(cf_call *c)
{
    cf_return_i64(c, cf_arg_i64(c) + 1);
}

/* Runs until asked to stop, then raises. */
static void until_cancelled(cf_call *c)
{
    while (!cf_cancel_requested(c))
        usleep(1000);
    cf_raise(c, 99, "stopped on request");
}

static void hang(cf_call *c)
{
    (void)c;
    for (;;)
        pause();
}

/* Parses the trace with Python's json module and counts complete events. */
static int count_complete_events(const char *path)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd,
             "python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); "
             "print(sum(1 for e in d[\"traceEvents\"] if e[\"ph\"]==\"X\" "
             "and e[\"dur\"]>=0 and \"tid\" in e))' %s",
             path);
    FILE *p = popen(cmd, "r");
    ASSERT(p != NULL);
    int n = -1;
    if (fscanf(p, "%d", &n) != 1)
        n = -1;
    ASSERT_EQ(pclose(p), 0);
    return n;
}

static void trace_executor(cf_executor *ex, int ntasks)
{
    char path[] = "/tmp/cf-trace-XXXXXX";
    int fd = mkstemp(path);
    ASSERT(fd >= 0);
    close(fd);
    ASSERT_OK(cf_trace_start(path));
    int64_t in[64];
    for (int i = 0; i < ntasks; i++)
        in[i] = i;
    cf_map *m = cf_map_i64(ex, plus_one, in, (size_t)ntasks, NULL);
    int64_t v;
    for (int i = 0; i < ntasks; i++)
        ASSERT_OK(cf_map_next_i64(m, &v));
    cf_map_free(m);
    ASSERT_OK(cf_trace_stop());
    ASSERT_ST(cf_trace_stop(), CF_ESTATE);
    ASSERT_EQ(count_complete_events(path), ntasks);
    unlink(path);
}

/* One complete event per task, on threads and on processes; the file
 * parses as JSON. */
static void test_trace_one_event_per_task(void)
{
    cf_executor *t = cf_thread_pool(&(cf_thread_pool_opts){.max_workers = 2});
    trace_executor(t, 50);
    cf_executor_free(t);
    cf_executor *p = cf_process_pool(&(cf_process_pool_opts){.max_workers = 2});
    trace_executor(p, 20);
    cf_executor_free(p);
    ASSERT_ST(cf_trace_start(NULL), CF_EINVAL);
}

/* Does nothing: run by test_trace_unwritable_path in a child process. */
static void test_trace_noop(void)
{
}

/* An unwritable trace path is never silent: cf_trace_start fails with
 * CF_EINVAL (and records nothing), and CFUTURES_TRACE prints one line on
 * stderr at start-up. */
static void test_trace_unwritable_path(void)
{
    const char *bad = "/nonexistent-cf-dir/trace.json";
    ASSERT_ST(cf_trace_start(bad), CF_EINVAL);
    ASSERT_ST(cf_trace_stop(), CF_ESTATE);

    char self[512];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    ASSERT(n > 0);
    self[n] = '\0';
    char cmd[1200];
    snprintf(cmd, sizeof cmd,
             "CFUTURES_TRACE=%s '%s' test_trace_noop 2>&1 >/dev/null", bad,
             self);
    FILE *p = popen(cmd, "r");
    ASSERT(p != NULL);
    char out[1024] = "";
    size_t got = fread(out, 1, sizeof out - 1, p);
    out[got] = '\0';
    ASSERT_EQ(pclose(p), 0);
    ASSERT(strstr(out, "CFUTURES_TRACE") != NULL);
    ASSERT(strstr(out, bad) != NULL);
    ASSERT(strchr(out, '\n') == out + strlen(out) - 1); /* one line */
}

/* The progress bar draws on stderr when forced; the last line shows the
 * total. */
static void test_progress_bar(void)
{
    char path[] = "/tmp/cf-progress-XXXXXX";
    int fd = mkstemp(path);
    ASSERT(fd >= 0);
    fflush(stderr);
    int saved = dup(STDERR_FILENO);
    dup2(fd, STDERR_FILENO);
    setenv("CFUTURES_PROGRESS", "always", 1);
    cf_executor *ex = cf_thread_pool(NULL);
    int64_t in[10] = {0};
    cf_map *m = cf_map_i64(ex, plus_one, in, 10,
                           &(cf_map_opts){.progress = "squares"});
    int64_t v;
    while (cf_map_next_i64(m, &v) == CF_OK)
        ;
    cf_map_free(m);
    cf_future *fs[3];
    for (int i = 0; i < 3; i++)
        fs[i] = cf_submit_i64(ex, plus_one, i);
    cf_as_completed *it = cf_as_completed_new(fs, 3, CF_FOREVER);
    cf_as_completed_progress(it, "gather");
    for (cf_future *f; cf_as_completed_next(it, &f) == CF_OK;)
        ;
    cf_as_completed_free(it);
    for (int i = 0; i < 3; i++)
        cf_future_release(fs[i]);
    cf_executor_free(ex);
    unsetenv("CFUTURES_PROGRESS");
    fflush(stderr);
    dup2(saved, STDERR_FILENO);
    close(saved);
    char buf[4096] = {0};
    ASSERT(pread(fd, buf, sizeof buf - 1, 0) > 0);
    close(fd);
    unlink(path);
    ASSERT(strstr(buf, "squares [") != NULL);
    ASSERT(strstr(buf, "10/10") != NULL);
    ASSERT(strstr(buf, "gather [") != NULL);
    ASSERT(strstr(buf, "3/3") != NULL);
}

static void wait_running(cf_future *f)
{
    while (!cf_running(f) && !cf_done(f))
        usleep(1000); /* the state is polled: no hook to wait on */
}

/* A running task sees cf_request_cancel through cf_cancel_requested, on
 * threads and on processes; cf_cancel keeps Python's meaning (false). */
static void test_cooperative_cancel(void)
{
    cf_executor *exs[2] = {
        cf_thread_pool(&(cf_thread_pool_opts){.max_workers = 1}),
        cf_process_pool(&(cf_process_pool_opts){.max_workers = 1}),
    };
    for (int k = 0; k < 2; k++) {
        cf_future *f = cf_submit(exs[k], until_cancelled, NULL, 0);
        wait_running(f);
        ASSERT(!cf_cancel(f));
        ASSERT(!cf_request_cancel(f));
        cf_error e;
        ASSERT_OK(cf_exception(f, 30, &e));
        ASSERT_ST(e.status, CF_ETASK);
        ASSERT_EQ(e.code, 99);
        /* The next task on the same worker is not cancelled. */
        cf_future *g = cf_submit_i64(exs[k], plus_one, 1);
        int64_t v;
        ASSERT_OK(cf_result_i64(g, 30, &v));
        ASSERT_EQ(v, 2);
        cf_future_release(f);
        cf_future_release(g);
        cf_executor_free(exs[k]);
    }
}

/* cf_kill_task stops a hung task on a process pool; the pool goes on. On
 * threads it is refused (threads cannot be killed). */
static void test_kill_task(void)
{
    cf_executor *ex =
        cf_process_pool(&(cf_process_pool_opts){.max_workers = 1});
    cf_future *f = cf_submit(ex, hang, NULL, 0);
    wait_running(f);
    ASSERT_OK(cf_kill_task(f));
    ASSERT_ST(cf_result(f, 30, NULL, NULL), CF_ECANCELLED);
    ASSERT(!cf_cancelled(f)); /* it had started: finished, not cancelled */
    ASSERT_ST(cf_kill_task(f), CF_ESTATE);
    cf_future *g = cf_submit_i64(ex, plus_one, 41);
    int64_t v;
    ASSERT_OK(cf_result_i64(g, 30, &v));
    ASSERT_EQ(v, 42);
    cf_future_release(f);
    cf_future_release(g);
    cf_executor_free(ex);

    cf_executor *t = cf_thread_pool(&(cf_thread_pool_opts){.max_workers = 1});
    cf_future *h = cf_submit(t, until_cancelled, NULL, 0);
    wait_running(h);
    ASSERT_ST(cf_kill_task(h), CF_EINVAL);
    ASSERT_ST(cf_result(h, 30, NULL, NULL), CF_ETASK); /* flag was raised */
    cf_future *pending = cf_future_new();
    ASSERT_OK(cf_kill_task(pending)); /* pending: plainly cancelled */
    ASSERT(cf_cancelled(pending));
    ASSERT_ST(cf_kill_task(NULL), CF_EINVAL);
    cf_future_release(h);
    cf_future_release(pending);
    cf_executor_free(t);
}

TEST_MAIN(T(test_trace_one_event_per_task), T(test_trace_noop),
          T(test_trace_unwritable_path), T(test_progress_bar),
          T(test_cooperative_cancel), T(test_kill_task))

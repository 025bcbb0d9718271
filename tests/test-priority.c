/*
 * test-priority.c -- cf_task_opts.priority: higher starts first, equal
 * priorities keep submission order, running tasks are not pre-empted, and
 * under load with mixed priorities every task finishes.
 *
 * Order is observed on one worker held by a gate (fgate.h) while the
 * prioritised tasks are queued; each task appends its tag to a file as it
 * starts.  Nothing here depends on timing: the tasks are queued within far
 * less than CF_PRIORITY_AGING of one another.
 */
#define LIVENESS 30.0
#include "fgate.h"

typedef struct tag_arg {
    char path[96];
    int32_t tag;
} tag_arg;

/* Appends its tag to the file, returns it. */
static void t_tag(cf_call *c)
{
    const tag_arg *a = cf_arg(c, NULL);
    int fd = open(a->path, O_WRONLY | O_APPEND | O_CLOEXEC);
    if (fd < 0 || write(fd, &a->tag, sizeof a->tag) != sizeof a->tag) {
        cf_raise(c, 1, "cannot append to %s", a->path);
        if (fd >= 0)
            close(fd);
        return;
    }
    close(fd);
    cf_return_i64(c, a->tag);
}

static cf_executor *make_pool(bool processes)
{
    cf_executor *ex =
        processes ? cf_process_pool(&(cf_process_pool_opts){.max_workers = 1})
                  : cf_thread_pool(&(cf_thread_pool_opts){.max_workers = 1});
    ASSERT(ex != NULL);
    return ex;
}

/* Starts order of tasks with the given priorities, queued behind a gated
 * task on a 1-worker pool. */
static void start_order(bool processes, const int *prio, int n, int32_t *got)
{
    cf_executor *ex = make_pool(processes);
    fgate g;
    fgate_init(&g);
    cf_future *blocker = submit_gated(ex, &g, 0);
    fgate_wait_started(&g, 1, NULL);
    tag_arg a;
    tmpdir_file(&g.dir, "order", a.path, sizeof a.path);
    int fd = open(a.path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    ASSERT(fd >= 0);
    close(fd);
    cf_future *fs[16];
    ASSERT(n <= 16);
    for (int i = 0; i < n; i++) {
        a.tag = i;
        fs[i] = cf_submit_ex(ex, t_tag, &a, sizeof a,
                             &(cf_task_opts){.priority = prio[i]});
        ASSERT(fs[i] != NULL);
    }
    fgate_open(&g);
    ASSERT_OK(cf_result(blocker, LONG_WAIT, NULL, NULL));
    cf_future_release(blocker);
    for (int i = 0; i < n; i++) {
        int64_t v;
        ASSERT_OK(cf_result_i64(fs[i], LONG_WAIT, &v));
        ASSERT_EQ(v, i);
        cf_future_release(fs[i]);
    }
    fd = open(a.path, O_RDONLY | O_CLOEXEC);
    ASSERT(fd >= 0);
    ASSERT_EQ(read(fd, got, (size_t)n * sizeof *got),
              (ssize_t)(n * (int)sizeof *got));
    close(fd);
    fgate_destroy(&g);
    cf_executor_free(ex);
}

static void check_order(bool processes)
{
    static const int prio[] = {0, 5, 1, 5, -3, 1, 0};
    static const int32_t want[] = {1, 3, 2, 5, 0, 6, 4};
    enum { N = sizeof prio / sizeof prio[0] };
    int32_t got[N];
    start_order(processes, prio, N, got);
    for (int i = 0; i < N; i++) {
        if (got[i] != want[i]) {
            fprintf(stderr,
                    "%s pool, start order:", processes ? "process" : "thread");
            for (int j = 0; j < N; j++)
                fprintf(stderr, " %d", got[j]);
            fprintf(stderr, "\n");
        }
        ASSERT_EQ(got[i], want[i]);
    }
}

static void test_process_pool_priority_order(void)
{
    check_order(true);
}

static void test_thread_pool_priority_order(void)
{
    check_order(false);
}

/* All equal (the default 0, or any one value): submission order. */
static void test_equal_priorities_keep_order(void)
{
    static const int same[] = {7, 7, 7, 7, 7, 7};
    int32_t got[6];
    start_order(true, same, 6, got);
    for (int i = 0; i < 6; i++)
        ASSERT_EQ(got[i], i);
}

static void t_add_one(cf_call *c)
{
    cf_return_i64(c, cf_arg_i64(c) + 1);
}

/* Mixed priorities under load: every task ends, with its own result. */
static void load(cf_executor *ex, int n)
{
    cf_future **fs = calloc((size_t)n, sizeof *fs);
    ASSERT(fs != NULL);
    unsigned seed = 7;
    for (int i = 0; i < n; i++) {
        fs[i] = cf_submit_ex(
            ex, t_add_one, &(int64_t){i}, sizeof(int64_t),
            &(cf_task_opts){.priority = (int)(rand_r(&seed) % 11) - 5});
        ASSERT(fs[i] != NULL);
    }
    for (int i = 0; i < n; i++) {
        int64_t v;
        ASSERT_OK(cf_result_i64(fs[i], LONG_WAIT, &v));
        ASSERT_EQ(v, i + 1);
        cf_future_release(fs[i]);
    }
    free(fs);
    cf_stats s;
    ASSERT_OK(cf_executor_stats(ex, &s));
    ASSERT_EQ(s.done, s.submitted);
}

static void test_process_pool_mixed_load(void)
{
    cf_executor *ex =
        cf_process_pool(&(cf_process_pool_opts){.max_workers = 2});
    load(ex, 3000);
    cf_executor_free(ex);
}

static void test_thread_pool_mixed_load(void)
{
    cf_executor *ex = cf_thread_pool(&(cf_thread_pool_opts){.max_workers = 3});
    load(ex, 20000);
    cf_executor_free(ex);
}

/* Prioritised tasks submitted from inside the pool, while it is busy with
 * fork-join work: every one ends. */
static cf_executor *inner_pool;

static void t_spawner(cf_call *c)
{
    int64_t n = cf_arg_i64(c);
    cf_future *fs[8];
    for (int i = 0; i < 8; i++)
        fs[i] = cf_submit_ex(inner_pool, t_add_one, &n, sizeof n,
                             &(cf_task_opts){.priority = i % 3});
    int64_t sum = 0;
    for (int i = 0; i < 8; i++) {
        int64_t v = 0;
        if (fs[i] == NULL || cf_result_i64(fs[i], LONG_WAIT, &v) != CF_OK) {
            cf_raise(c, 1, "inner task failed");
            return;
        }
        sum += v;
        cf_future_release(fs[i]);
    }
    cf_return_i64(c, sum);
}

static void test_thread_pool_priorities_from_inside(void)
{
    inner_pool = cf_thread_pool(&(cf_thread_pool_opts){.max_workers = 2});
    cf_future *fs[200];
    for (int i = 0; i < 200; i++)
        fs[i] = cf_submit_ex(inner_pool, t_spawner, &(int64_t){i},
                             sizeof(int64_t),
                             &(cf_task_opts){.priority = i % 5});
    for (int i = 0; i < 200; i++) {
        int64_t v;
        ASSERT_OK(cf_result_i64(fs[i], LONG_WAIT, &v));
        ASSERT_EQ(v, 8 * (i + 1));
        cf_future_release(fs[i]);
    }
    cf_executor_free(inner_pool);
}

/* A cancelled prioritised task does not run; the others do. */
static void test_cancel_prioritised(void)
{
    cf_executor *ex = make_pool(true);
    fgate g;
    fgate_init(&g);
    cf_future *blocker = submit_gated(ex, &g, 0);
    fgate_wait_started(&g, 1, NULL);
    cf_future *hi = cf_submit_ex(ex, t_add_one, &(int64_t){1}, sizeof(int64_t),
                                 &(cf_task_opts){.priority = 9});
    cf_future *lo = cf_submit_ex(ex, t_add_one, &(int64_t){2}, sizeof(int64_t),
                                 &(cf_task_opts){.priority = -9});
    ASSERT(cf_cancel(hi));
    fgate_open(&g);
    int64_t v;
    ASSERT_OK(cf_result_i64(lo, LONG_WAIT, &v));
    ASSERT_EQ(v, 3);
    ASSERT_ST(cf_result(hi, 0, NULL, NULL), CF_ECANCELLED);
    ASSERT_OK(cf_result(blocker, LONG_WAIT, NULL, NULL));
    cf_error e;
    ASSERT_OK(cf_exception(lo, 0, &e));
    ASSERT_EQ(e.code, 0); /* the priority does not leak into the outcome */
    cf_future_release(hi);
    cf_future_release(lo);
    cf_future_release(blocker);
    fgate_destroy(&g);
    cf_executor_free(ex);
}

TEST_MAIN(T(test_process_pool_priority_order),
          T(test_thread_pool_priority_order), T(test_thread_pool_mixed_load),
          T(test_thread_pool_priorities_from_inside),
          T(test_equal_priorities_keep_order), T(test_process_pool_mixed_load),
          T(test_cancel_prioritised))

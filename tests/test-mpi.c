/*
 * The MPI executor.  One binary, three ways to run (tests/CMakeLists.txt):
 *   mpirun -np 3 test-mpi comm    SPMD: rank 0 submits, ranks 1.. serve
 *   mpirun -np 5 test-mpi comm    the same with 4 workers
 *   test-mpi spawn                a singleton that spawns 2 workers
 * Every rank runs main; only the root runs the test cases.
 */
#include "cfutures_mpi.h"
#include "test.h"

#include <signal.h>
#include <unistd.h>

static cf_executor *ex; /* the MPI executor under test (root only) */

static void sum_to(cf_call *c)
{
    int64_t n = cf_arg_i64(c), s = 0;
    for (int64_t i = 1; i <= n; i++)
        s += i;
    cf_return_i64(c, s);
}

static void raise_task(cf_call *c)
{
    cf_raise(c, 11, "bad input %lld", (long long)cf_arg_i64(c));
}

/* Sleeps for the given milliseconds (so that work queues up). */
static void nap(cf_call *c)
{
    usleep((useconds_t)cf_arg_i64(c) * 1000);
    cf_return_i64(c, cf_arg_i64(c));
}

/* Returns its argument reversed, byte by byte (big payloads). */
static void reverse(cf_call *c)
{
    size_t n;
    const unsigned char *in = cf_arg(c, &n);
    unsigned char *out = malloc(n ? n : 1);
    for (size_t i = 0; i < n; i++)
        out[i] = in[n - 1 - i];
    cf_return(c, out, n);
    free(out);
}

/* A checksum of the argument (FNV-1a over every 4096th byte, and length). */
static uint64_t sum_of(const unsigned char *p, size_t n)
{
    uint64_t h = 1469598103934665603ull ^ n;
    for (size_t i = 0; i < n; i += 4096)
        h = (h ^ p[i]) * 1099511628211ull;
    return n ? (h ^ p[n - 1]) * 1099511628211ull : h;
}

static void checksum(cf_call *c)
{
    size_t n;
    const unsigned char *p = cf_arg(c, &n);
    cf_return_i64(c, (int64_t)sum_of(p, n));
}

/* Returns a buffer of the asked size, byte i = (i * 7) >> 12. */
static void make_bytes(cf_call *c)
{
    size_t n = (size_t)cf_arg_i64(c);
    unsigned char *out = malloc(n);
    if (out == NULL) {
        cf_raise(c, 1, "no memory");
        return;
    }
    for (size_t i = 0; i < n; i++)
        out[i] = (unsigned char)((i * 7) >> 12);
    cf_return(c, out, n);
    free(out);
}

static void crash(cf_call *c)
{
    (void)c;
    raise(SIGSEGV);
}

/* The pool's initializer sets this; a task reads it (issue 15.2). */
static int64_t init_value;

static void set_init_value(cf_call *c)
{
    init_value = cf_arg_i64(c);
}

static void get_init_value(cf_call *c)
{
    cf_return_i64(c, init_value);
}

/* Sleeps 400 ms and returns its rank's pid. */
static void long_pid(cf_call *c)
{
    usleep(400 * 1000);
    cf_return_i64(c, (int64_t)getpid());
}

/* Creates the file its argument names (proof that it ran). */
static void touch(cf_call *c)
{
    size_t n;
    const char *a = cf_arg(c, &n);
    char path[256];
    snprintf(path, sizeof path, "%.*s", (int)n, a);
    FILE *f = fopen(path, "w");
    if (f != NULL)
        fclose(f);
    cf_return_i64(c, 1);
}

static void rank_of_worker(cf_call *c)
{
    cf_return_i64(c, (int64_t)getpid());
}

/* submit + result, a task error with its message, many tasks. */
static void test_submit_result_errors(void)
{
    cf_future *fs[100];
    for (int i = 0; i < 100; i++)
        fs[i] = cf_submit_i64(ex, i % 10 == 3 ? raise_task : sum_to, i);
    for (int i = 0; i < 100; i++) {
        int64_t v;
        int rc = cf_result_i64(fs[i], 60, &v);
        if (i % 10 == 3) {
            ASSERT_ST(rc, CF_ETASK);
            cf_error e;
            ASSERT_OK(cf_exception(fs[i], 0, &e));
            ASSERT_EQ(e.code, 11);
            char want[64];
            snprintf(want, sizeof want, "bad input %d", i);
            ASSERT_STR_EQ(e.message, want);
        } else {
            ASSERT_OK(rc);
            ASSERT_EQ(v, (int64_t)i * (i + 1) / 2);
        }
        cf_future_release(fs[i]);
    }
}

/* A result timeout leaves the future alone; it completes later. */
static void test_result_timeout(void)
{
    cf_future *f = cf_submit_i64(ex, nap, 300);
    ASSERT_ST(cf_result(f, 0.01, NULL, NULL), CF_ETIMEDOUT);
    int64_t v;
    ASSERT_OK(cf_result_i64(f, 60, &v));
    ASSERT_EQ(v, 300);
    cf_future_release(f);
}

/* Pending tasks can be cancelled while the workers are busy. */
static void test_cancel_pending(void)
{
    int n = cf_executor_max_workers(ex);
    enum { EXTRA = 20 };
    cf_future *busy[8], *extra[EXTRA];
    for (int i = 0; i < n; i++)
        busy[i] = cf_submit_i64(ex, nap, 200);
    for (int i = 0; i < EXTRA; i++)
        extra[i] = cf_submit_i64(ex, sum_to, i);
    int cancelled = 0;
    for (int i = EXTRA; i-- > 0;)
        cancelled += cf_cancel(extra[i]);
    ASSERT(cancelled > 0);
    for (int i = 0; i < EXTRA; i++) {
        int64_t v;
        int rc = cf_result_i64(extra[i], 60, &v);
        if (cf_cancelled(extra[i])) {
            ASSERT_ST(rc, CF_ECANCELLED);
        } else {
            ASSERT_OK(rc);
            ASSERT_EQ(v, (int64_t)i * (i + 1) / 2);
        }
        cf_future_release(extra[i]);
    }
    for (int i = 0; i < n; i++) {
        ASSERT_OK(cf_result(busy[i], 60, NULL, NULL));
        cf_future_release(busy[i]);
    }
}

/* 64 MiB each way, byte for byte. */
static void test_large_payload(void)
{
    size_t n = (size_t)64 << 20;
    unsigned char *buf = malloc(n);
    for (size_t i = 0; i < n; i++)
        buf[i] = (unsigned char)(i * 131 + (i >> 13));
    cf_future *f = cf_submit(ex, reverse, buf, n);
    const void *out;
    size_t len;
    ASSERT_OK(cf_result(f, 120, &out, &len));
    ASSERT_EQ(len, n);
    const unsigned char *o = out;
    for (size_t i = 0; i < n; i++)
        if (o[i] != buf[n - 1 - i])
            ASSERT(!"payload differs");
    cf_future_release(f);
    free(buf);
}

/* Over 2 GiB each way (MPI counts are int): only with CF_TEST_HUGE=1 (it
 * needs about 12 GiB); make check covers the same path with pieces of
 * CF_MPI_PIECE bytes instead (test-mpi-comm-pieces). */
static void test_huge_payload(void)
{
    if (getenv("CF_TEST_HUGE") == NULL) {
        printf("# skipped: > 2 GiB payloads (set CF_TEST_HUGE=1)\n");
        return;
    }
    size_t n = ((size_t)2 << 30) + 4097;
    unsigned char *buf = malloc(n);
    ASSERT(buf != NULL);
    for (size_t i = 0; i < n; i++)
        buf[i] = (unsigned char)(i * 131 + (i >> 13));
    cf_future *f = cf_submit_ex(ex, checksum, buf, n,
                                &(cf_task_opts){.flags = CF_BORROW_ARG});
    int64_t v;
    ASSERT_OK(cf_result_i64(f, 600, &v));
    ASSERT_EQ((uint64_t)v, sum_of(buf, n));
    cf_future_release(f);
    free(buf);
    f = cf_submit_i64(ex, make_bytes, (int64_t)n);
    const void *out;
    size_t len;
    ASSERT_OK(cf_result(f, 600, &out, &len));
    ASSERT_EQ(len, n);
    const unsigned char *o = out;
    for (size_t i = 0; i < n; i += 4093)
        ASSERT_EQ(o[i], (unsigned char)((i * 7) >> 12));
    ASSERT_EQ(o[n - 1], (unsigned char)(((n - 1) * 7) >> 12));
    cf_future_release(f);
}

/* A 10,000-item map with chunksize 64: results in input order. */
static void test_chunked_map(void)
{
    enum { N = 10000 };
    int64_t *in = malloc(N * sizeof *in);
    for (int i = 0; i < N; i++)
        in[i] = i % 500;
    cf_map *m = cf_map_i64(ex, sum_to, in, N,
                           &(cf_map_opts){.chunksize = 64, .timeout = 120});
    for (int i = 0; i < N; i++) {
        int64_t v;
        ASSERT_OK(cf_map_next_i64(m, &v));
        ASSERT_EQ(v, in[i] * (in[i] + 1) / 2);
    }
    int64_t v;
    ASSERT_ST(cf_map_next_i64(m, &v), CF_END);
    cf_map_free(m);
    free(in);
}

/* wait and as_completed over futures of a thread pool, a process pool and
 * the MPI executor at once. */
static void test_mixed_executors(void)
{
    cf_executor *tp = cf_thread_pool(&(cf_thread_pool_opts){.max_workers = 2});
    cf_executor *pp =
        cf_process_pool(&(cf_process_pool_opts){.max_workers = 1});
    cf_future *fs[9];
    for (int i = 0; i < 9; i++) {
        cf_executor *e = i % 3 == 0 ? tp : i % 3 == 1 ? pp : ex;
        fs[i] = cf_submit_i64(e, sum_to, 100 * i);
        ASSERT(fs[i] != NULL);
    }
    cf_as_completed *it = cf_as_completed_new(fs, 9, 120);
    int n = 0;
    for (cf_future *f; cf_as_completed_next(it, &f) == CF_OK; n++)
        ASSERT(cf_done(f));
    ASSERT_EQ(n, 9);
    cf_as_completed_free(it);
    size_t nd = 0;
    ASSERT_OK(cf_wait(fs, 9, 0, CF_ALL_COMPLETED, NULL, &nd, NULL, NULL));
    ASSERT_EQ(nd, 9);
    for (int i = 0; i < 9; i++) {
        int64_t v;
        ASSERT_OK(cf_result_i64(fs[i], 0, &v));
        ASSERT_EQ(v, (int64_t)(100 * i) * (100 * i + 1) / 2);
        cf_future_release(fs[i]);
    }
    cf_executor_free(tp);
    cf_executor_free(pp);
}

/* Placement (issue 15.4): 2 long tasks per rank run as 2 rounds, each
 * rank running exactly 2 -- never one queued behind another while a rank
 * idles (the old window sent up to 4 to one rank). */
static void test_placement_rounds(void)
{
    int n = cf_executor_max_workers(ex);
    cf_future *fs[16];
    for (int i = 0; i < 2 * n; i++)
        fs[i] = cf_submit_i64(ex, long_pid, 0);
    int64_t pids[16];
    for (int i = 0; i < 2 * n; i++) {
        ASSERT_OK(cf_result_i64(fs[i], 60, &pids[i]));
        cf_future_release(fs[i]);
    }
    for (int i = 0; i < 2 * n; i++) {
        int same = 0;
        for (int j = 0; j < 2 * n; j++)
            same += pids[j] == pids[i];
        if (same != 2)
            printf("# rank pid %lld ran %d of the %d tasks\n",
                   (long long)pids[i], same, 2 * n);
        ASSERT_EQ(same, 2);
    }
}

/* A task sent ahead to a busy rank is only queued there: pending (not
 * running), cf_cancel succeeds, and it never runs. */
static void test_cancel_sent_ahead(void)
{
    int n = cf_executor_max_workers(ex);
    enum { M = 12 };
    cf_future *busy[8], *mk[M];
    char paths[M][64];
    for (int i = 0; i < n; i++)
        busy[i] = cf_submit_i64(ex, nap, 1000);
    for (int i = 0; i < n; i++)
        while (!cf_running(busy[i]))
            usleep(1000);
    for (int i = 0; i < M; i++) {
        snprintf(paths[i], sizeof paths[i], "/tmp/cf-mpi-ahead-%d-%d",
                 (int)getpid(), i);
        unlink(paths[i]);
        mk[i] = cf_submit(ex, touch, paths[i], strlen(paths[i]));
    }
    usleep(100 * 1000); /* let the manager send some ahead */
    for (int i = 0; i < M; i++) {
        ASSERT(!cf_running(mk[i]));
        ASSERT(cf_cancel(mk[i]));
    }
    for (int i = 0; i < n; i++) {
        ASSERT_OK(cf_result(busy[i], 60, NULL, NULL));
        cf_future_release(busy[i]);
    }
    /* The ranks have claimed (and dropped) what was sent ahead. */
    cf_future *after[8];
    for (int i = 0; i < n; i++)
        after[i] = cf_submit_i64(ex, nap, 50);
    for (int i = 0; i < n; i++) {
        ASSERT_OK(cf_result(after[i], 60, NULL, NULL));
        cf_future_release(after[i]);
    }
    for (int i = 0; i < M; i++) {
        ASSERT_ST(cf_result(mk[i], 0, NULL, NULL), CF_ECANCELLED);
        ASSERT(access(paths[i], F_OK) != 0);
        cf_future_release(mk[i]);
    }
}

/* Creates the file its argument names, if any, then runs until its cancel
 * is requested (at most 60 s), and raises. */
static void until_cancelled(cf_call *c)
{
    size_t n;
    const char *a = cf_arg(c, &n);
    if (n > 0) {
        char path[256];
        snprintf(path, sizeof path, "%.*s", (int)n, a);
        FILE *fp = fopen(path, "w");
        if (fp != NULL)
            fclose(fp);
    }
    for (int i = 0; i < 60000; i++) {
        if (cf_cancel_requested(c)) {
            cf_raise(c, 42, "stopped on request");
            return;
        }
        usleep(1000);
    }
    cf_return_i64(c, -1);
}

static void wait_running(cf_future *f)
{
    for (int i = 0; i < 60000 && !cf_running(f) && !cf_done(f); i++)
        usleep(1000);
    ASSERT(cf_running(f));
}

/* Issue 14.4: cf_request_cancel reaches a task running on a rank. */
static void test_request_cancel_running(void)
{
    cf_future *f = cf_submit(ex, until_cancelled, NULL, 0);
    wait_running(f);
    ASSERT(!cf_request_cancel(f));
    cf_error e;
    ASSERT_OK(cf_exception(f, 60, &e));
    ASSERT_ST(e.status, CF_ETASK);
    ASSERT_EQ(e.code, 42);
    cf_future_release(f);
}

/* Without crash isolation: cf_kill_task and time limits are refused
 * (CF_EINVAL); the kill raises the cooperative flag, which the task
 * sees. */
static void test_kill_and_limit_need_isolation(void)
{
    ASSERT(cf_submit_ex(ex, nap, NULL, 0, &(cf_task_opts){.time_limit = 0.5}) ==
           NULL);
    ASSERT_ST(cf_last_error(), CF_EINVAL);
    cf_future *f = cf_submit(ex, until_cancelled, NULL, 0);
    wait_running(f);
    ASSERT_ST(cf_kill_task(f), CF_EINVAL);
    cf_error e;
    ASSERT_OK(cf_exception(f, 60, &e));
    ASSERT_EQ(e.code, 42);
    cf_future_release(f);
}

static void host_of_worker(cf_call *c)
{
    char h[256] = "";
    gethostname(h, sizeof h - 1);
    usleep(200 * 1000); /* so that the tasks below spread */
    cf_return(c, h, strlen(h));
}

/* Spawn mode onto given hosts (tests/mpi/netns.sh): the workers are
 * there. */
static void test_spawn_hosts(void)
{
    const char *want = getenv("CF_TEST_SPAWN_HOSTS");
    if (want == NULL)
        return;
    cf_future *fs[2];
    char names[2][256];
    for (int i = 0; i < 2; i++)
        fs[i] = cf_submit(ex, host_of_worker, NULL, 0);
    for (int i = 0; i < 2; i++) {
        const void *h;
        size_t n;
        ASSERT_OK(cf_result(fs[i], 60, &h, &n));
        snprintf(names[i], sizeof names[i], "%.*s", (int)n, (const char *)h);
        printf("# a worker runs on %s\n", names[i]);
        ASSERT(n > 0 && strstr(want, names[i]) != NULL);
        cf_future_release(fs[i]);
    }
    ASSERT(strcmp(names[0], names[1]) != 0); /* one per host */
}

/* Tasks really run on other processes (the ranks). */
static void test_runs_on_ranks(void)
{
    cf_future *f = cf_submit_i64(ex, rank_of_worker, 0);
    int64_t pid;
    ASSERT_OK(cf_result_i64(f, 60, &pid));
    ASSERT(pid != (int64_t)getpid());
    cf_future_release(f);
}

/* Last: shutdown(cancel_futures) cancels what is queued, finishes what
 * runs, and later submits fail. */
static void test_shutdown_cancel_futures(void)
{
    int n = cf_executor_max_workers(ex);
    cf_future *busy[8], *queued[30];
    for (int i = 0; i < n; i++)
        busy[i] = cf_submit_i64(ex, nap, 300);
    for (int i = 0; i < 30; i++)
        queued[i] = cf_submit_i64(ex, sum_to, i);
    for (int i = 0; i < n; i++) /* dispatched: running on a rank */
        while (!cf_running(busy[i]) && !cf_done(busy[i]))
            usleep(1000);
    ASSERT_OK(cf_shutdown(ex, true, true));
    int cancelled = 0;
    for (int i = 0; i < 30; i++) {
        ASSERT(cf_done(queued[i]));
        cancelled += cf_cancelled(queued[i]);
        cf_future_release(queued[i]);
    }
    ASSERT(cancelled > 0);
    for (int i = 0; i < n; i++) {
        ASSERT_OK(cf_result(busy[i], 0, NULL, NULL));
        cf_future_release(busy[i]);
    }
    ASSERT(cf_submit_i64(ex, sum_to, 1) == NULL);
    ASSERT_ST(cf_last_error(), CF_ESHUTDOWN);
}

static const test_entry tests[] = {
    T(test_submit_result_errors),
    T(test_result_timeout),
    T(test_cancel_pending),
    T(test_large_payload),
    T(test_huge_payload),
    T(test_chunked_map),
    T(test_mixed_executors),
    T(test_runs_on_ranks),
    T(test_placement_rounds),
    T(test_request_cancel_running),
    T(test_kill_and_limit_need_isolation),
    T(test_spawn_hosts),
    T(test_cancel_sent_ahead),
    T(test_shutdown_cancel_futures),
};

/* With crash isolation, a crashing task fails alone. */
static void crash_isolation_case(int argc, char **argv, bool spawn)
{
    (void)argc;
    (void)argv;
    cf_executor *iso = NULL;
    int64_t seed = 4242;
    cf_mpi_opts o = {.max_workers = 2,
                     .hosts = getenv("CF_TEST_SPAWN_HOSTS"),
                     .hostfile = getenv("CF_TEST_SPAWN_HOSTFILE"),
                     .crash_isolation = true,
                     .max_tasks_per_child = 2,
                     .initializer = set_init_value,
                     .initarg = &seed,
                     .initarg_len = sizeof seed};
    if (spawn)
        iso = cf_mpi_pool(&o);
    else
        ASSERT_OK(cf_mpi_comm_executor(MPI_COMM_WORLD, 0, &o, &iso));
    if (iso == NULL)
        return; /* a serving rank, done */
    cf_future *bad = cf_submit(iso, crash, NULL, 0);
    cf_future *good = cf_submit_i64(iso, sum_to, 10);
    cf_error e;
    ASSERT_OK(cf_exception(bad, 60, &e));
    ASSERT_ST(e.status, CF_ECRASHED);
    ASSERT_EQ(e.code, -SIGSEGV);
    int64_t v;
    ASSERT_OK(cf_result_i64(good, 60, &v));
    ASSERT_EQ(v, 55);
    cf_future_release(bad);
    cf_future_release(good);
    /* The tasks run in the rank's local process: it ran the initializer
     * too, before and after the crash replaced it. */
    for (int i = 0; i < 4; i++) {
        cf_future *f = cf_submit(iso, get_init_value, NULL, 0);
        ASSERT_OK(cf_result_i64(f, 60, &v));
        ASSERT_EQ(v, 4242);
        cf_future_release(f);
    }
    /* Time limits, cf_kill_task and cf_request_cancel reach tasks in the
     * ranks' local processes (issue 14.4). */
    cf_future *lim = cf_submit_ex(iso, nap, &(int64_t){30000}, 8,
                                  &(cf_task_opts){.time_limit = 0.3});
    ASSERT_ST(cf_result(lim, 60, NULL, NULL), CF_ETIMEDOUT);
    cf_future_release(lim);
    cf_future *k = cf_submit_i64(iso, nap, 30000);
    wait_running(k);
    ASSERT_OK(cf_kill_task(k));
    ASSERT_ST(cf_result(k, 60, NULL, NULL), CF_ECANCELLED);
    cf_future_release(k);
    char started[64];
    snprintf(started, sizeof started, "/tmp/cf-mpi-started-%d", (int)getpid());
    unlink(started);
    cf_future *rq = cf_submit(iso, until_cancelled, started, strlen(started));
    for (int i = 0; i < 60000 && access(started, F_OK) != 0; i++)
        usleep(1000); /* it runs in the local process */
    unlink(started);
    ASSERT(!cf_request_cancel(rq));
    ASSERT_OK(cf_exception(rq, 60, &e));
    ASSERT_EQ(e.code, 42);
    cf_future_release(rq);
    /* max_tasks_per_child = 2: a local process runs 2 tasks at most. */
    int64_t pids[8];
    for (int i = 0; i < 8; i++) {
        cf_future *f = cf_submit(iso, rank_of_worker, NULL, 0);
        ASSERT_OK(cf_result_i64(f, 60, &pids[i]));
        cf_future_release(f);
    }
    for (int i = 0; i < 8; i++) {
        int same = 0;
        for (int j = 0; j < 8; j++)
            same += pids[j] == pids[i];
        ASSERT(same <= 2);
    }
    cf_executor_free(iso);
    printf("ok - crash isolation (%s)\n", spawn ? "spawn" : "comm");
}

int main(int argc, char **argv)
{
    ASSERT_OK(cf_mpi_worker_main(&argc, &argv));
    cf_set_default_error_hook(NULL, NULL);
    bool spawn = argc > 1 && strcmp(argv[1], "spawn") == 0;
    if (spawn) {
        /* tests/mpi/netns.sh spawns onto other hosts. */
        ex = cf_mpi_pool(
            &(cf_mpi_opts){.max_workers = 2,
                           .hosts = getenv("CF_TEST_SPAWN_HOSTS"),
                           .hostfile = getenv("CF_TEST_SPAWN_HOSTFILE")});
        ASSERT(ex != NULL);
    } else {
        ASSERT_OK(cf_mpi_comm_executor(MPI_COMM_WORLD, 0, NULL, &ex));
    }
    if (ex != NULL) { /* the root */
        int rc = test_main(1, argv, tests, sizeof tests / sizeof tests[0]);
        cf_executor_free(ex);
        if (rc != 0)
            return rc;
    }
    crash_isolation_case(argc, argv, spawn);
    MPI_Finalize();
    return 0;
}

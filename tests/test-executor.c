/*
 * test-executor.c -- executor-generic behaviour, one suite for every kind.
 *
 * The environment variable CF_TEST_EXECUTOR picks the executor: "thread"
 * (the default), "process", or "mpi" (built as test-executor-mpi, run
 * under mpirun).  make_executor() builds a pool of WORKERS workers of that
 * kind; every case below goes through it only, so the same checks hold
 * for threads, processes and MPI ranks (CTest runs it three times:
 * test-executor-thread, -process and -mpi, see executors.cmake).
 *
 * Tasks are plain functions of this binary that read only their argument:
 * in a process pool they run in a fresh copy of the program whose globals
 * hold their initial values.  A task that must block waits on a FIFO gate
 * (fgate below) under a private /tmp directory: it tells the test it runs
 * by writing to one FIFO and blocks until the test closes the other, which
 * works across processes where an in-memory gate cannot.  No sleeps.
 */
#include "test.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdatomic.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define WORKERS 2
/* Bound on any wait that only a library bug could make endless (seconds):
 * a liveness guard so a hang fails the test, never a timing assertion. */
#define LIVENESS 20.0

/* ------------------------------------------------------------------------ */
/* The executor under test                                                   */
/* ------------------------------------------------------------------------ */

static const char *executor_kind(void)
{
    const char *k = getenv("CF_TEST_EXECUTOR");
    return k != NULL && *k != '\0' ? k : "thread";
}

#ifdef CF_TEST_MPI
/*
 * The MPI executor, in SPMD mode under `mpirun -np WORKERS+1` (the third
 * run of this suite, test-executor-mpi): rank 0 runs the tests; the other
 * ranks serve one executor after another, each started by a broadcast of
 * 1 from rank 0 (0: the end), since every test makes its own executor.
 */
#include "cfutures_mpi.h"

static cf_executor *make_mpi_executor(void)
{
    int go = 1;
    MPI_Bcast(&go, 1, MPI_INT, 0, MPI_COMM_WORLD);
    cf_executor *ex = NULL;
    ASSERT_OK(cf_mpi_comm_executor(MPI_COMM_WORLD, 0, NULL, &ex));
    return ex;
}
#endif

static cf_executor *make_executor(void)
{
    const char *k = executor_kind();
    cf_executor *ex = NULL;
    if (strcmp(k, "thread") == 0) {
        ex = cf_thread_pool(&(cf_thread_pool_opts){.max_workers = WORKERS});
    } else if (strcmp(k, "process") == 0) {
        ex = cf_process_pool(&(cf_process_pool_opts){.max_workers = WORKERS});
#ifdef CF_TEST_MPI
    } else if (strcmp(k, "mpi") == 0) {
        ex = make_mpi_executor();
#endif
    } else {
        fprintf(stderr, "CF_TEST_EXECUTOR=%s: want thread or process\n", k);
        abort();
    }
    ASSERT(ex != NULL);
    ASSERT_EQ(cf_executor_max_workers(ex), WORKERS);
    static bool said;
    if (!said)
        printf("# executor: %s pool, %d workers\n", k, WORKERS);
    said = true;
    return ex;
}

#include "fgate.h"

/*
 * Saturates the pool: WORKERS gated tasks, all running, then WORKERS
 * fillers.  A process pool may send a filler ahead to a busy worker (it
 * is then RUNNING and cannot be cancelled); a thread pool keeps it
 * queued.  Anything submitted after this is surely still queued.
 */
static void t_square(cf_call *c);
static void saturate(cf_executor *ex, fgate *g, cf_future **gated,
                     cf_future **fillers)
{
    for (int i = 0; i < WORKERS; i++)
        gated[i] = submit_gated(ex, g, 100 + i);
    int32_t pids[WORKERS];
    fgate_wait_started(g, WORKERS, pids);
    if (strcmp(executor_kind(), "process") == 0)
        for (int i = 1; i < WORKERS; i++)
            ASSERT(pids[i] != pids[0]); /* each on its own worker */
    for (int i = 0; i < WORKERS; i++) {
        fillers[i] = cf_submit_i64(ex, t_square, 1000 + i);
        ASSERT(fillers[i] != NULL);
    }
}

/* A filler ended OK with its value, or was cancelled while queued. */
static void check_filler(cf_future *f, int64_t v)
{
    int64_t got;
    int rc = cf_result_i64(f, LIVENESS, &got);
    if (rc == CF_ECANCELLED)
        return;
    ASSERT_OK(rc);
    ASSERT_EQ(got, v * v + 1);
}

/* ------------------------------------------------------------------------ */
/* Tasks                                                                     */
/* ------------------------------------------------------------------------ */

static void t_square(cf_call *c)
{
    int64_t v = cf_arg_i64(c);
    cf_return_i64(c, v * v + 1);
}

static void t_not(cf_call *c)
{
    cf_return_i64(c, ~cf_arg_i64(c));
}

static void t_twice(cf_call *c)
{
    cf_return_f64(c, cf_arg_f64(c) * 2.0);
}

static void t_reverse(cf_call *c)
{
    const char *s = cf_arg_str(c);
    size_t n = strlen(s);
    char *r = malloc(n + 1);
    if (r == NULL) {
        cf_raise(c, 1, "no memory");
        return;
    }
    for (size_t i = 0; i < n; i++)
        r[i] = s[n - 1 - i];
    r[n] = '\0';
    cf_return_str(c, r);
    free(r);
}

static unsigned char pattern_byte(size_t i, size_t len)
{
    return (unsigned char)(i * 7u + (i >> 8) * 13u + len);
}

/* Checks the pattern of its argument (raises at the first wrong byte),
 * then returns the argument unchanged. */
static void t_echo_checked(cf_call *c)
{
    size_t n;
    const unsigned char *p = cf_arg(c, &n);
    for (size_t i = 0; i < n; i++)
        if (p[i] != pattern_byte(i, n)) {
            cf_raise(c, 1, "argument byte %zu of %zu is %u", i, n, p[i]);
            return;
        }
    cf_return(c, p, n);
}

/* Sets a result, then raises: the raise wins. */
static void t_raise(cf_call *c)
{
    int64_t v = cf_arg_i64(c);
    cf_return_i64(c, v);
    cf_raise(c, 42, "bad input %" PRId64 ": %s", v, "oops");
}

static void t_raise_long(cf_call *c)
{
    char msg[3001];
    for (int i = 0; i < 3000; i++)
        msg[i] = (char)('a' + i % 26);
    msg[3000] = '\0';
    cf_raise(c, -5, "%s|%" PRId64, msg, cf_arg_i64(c));
}

static void t_raise_null(cf_call *c)
{
    cf_raise(c, 3, NULL);
}

static void t_nothing(cf_call *c)
{
    (void)c;
}

static void t_inc(cf_call *c)
{
    cf_return_i64(c, cf_arg_i64(c) + 1);
}

static void t_map_fn(cf_call *c)
{
    cf_return_i64(c, cf_arg_i64(c) * 3 + 1);
}

/* Raises for items i with i % 100 == 37, with code i. */
static void t_fail_at(cf_call *c)
{
    int64_t i = cf_arg_i64(c);
    if (i % 100 == 37) {
        cf_raise(c, (int)i, "item %" PRId64 " failed", i);
        return;
    }
    cf_return_i64(c, i * 3 + 1);
}

/* ------------------------------------------------------------------------ */
/* Cases                                                                     */
/* ------------------------------------------------------------------------ */

/* int64, double and string arguments and results, edge values included. */
static void test_scalar_types(void)
{
    cf_executor *ex = make_executor();
    static const int64_t iv[] = {0, 1, -1, 42, INT64_MAX, INT64_MIN};
    cf_future *fi[6];
    for (int i = 0; i < 6; i++)
        ASSERT((fi[i] = cf_submit_i64(ex, t_not, iv[i])) != NULL);
    static const double dv[] = {0.0, -0.0, 1.5, -3.25, 1e300, 5e-324};
    cf_future *fd[6];
    for (int i = 0; i < 6; i++)
        ASSERT((fd[i] = cf_submit_f64(ex, t_twice, dv[i])) != NULL);
    static const char *sv[] = {"", "a", "hello, world", "0123456789abcdef",
                               "0123456789abcdefg"};
    cf_future *fs[5];
    for (int i = 0; i < 5; i++)
        ASSERT((fs[i] = cf_submit_str(ex, t_reverse, sv[i])) != NULL);

    for (int i = 0; i < 6; i++) {
        int64_t v;
        ASSERT_OK(cf_result_i64(fi[i], CF_FOREVER, &v));
        ASSERT_EQ(v, ~iv[i]);
        cf_future_release(fi[i]);
    }
    for (int i = 0; i < 6; i++) {
        double v;
        ASSERT_OK(cf_result_f64(fd[i], CF_FOREVER, &v));
        ASSERT(v == dv[i] * 2.0);
        ASSERT(signbit(v) == signbit(dv[i]));
        cf_future_release(fd[i]);
    }
    for (int i = 0; i < 5; i++) {
        const char *s;
        ASSERT_OK(cf_result_str(fs[i], CF_FOREVER, &s));
        size_t n = strlen(sv[i]);
        ASSERT_EQ(strlen(s), n);
        for (size_t k = 0; k < n; k++)
            ASSERT(s[k] == sv[i][n - 1 - k]);
        cf_future_release(fs[i]);
    }
    cf_executor_free(ex);
}

/* Byte arguments and results of 0, 1, 16, 17 bytes and 1 MiB cross intact
 * both ways (the task checks the pattern, the test checks the echo). */
static void test_bytes_sizes(void)
{
    cf_executor *ex = make_executor();
    static const size_t sizes[] = {0, 1, 16, 17, 1 << 20};
    enum { N = sizeof sizes / sizeof sizes[0] };
    unsigned char *bufs[N];
    cf_future *fs[N];
    for (size_t k = 0; k < N; k++) {
        size_t n = sizes[k];
        bufs[k] = malloc(n ? n : 1);
        ASSERT(bufs[k] != NULL);
        for (size_t i = 0; i < n; i++)
            bufs[k][i] = pattern_byte(i, n);
        fs[k] = cf_submit(ex, t_echo_checked, n ? bufs[k] : NULL, n);
        ASSERT(fs[k] != NULL);
    }
    for (size_t k = 0; k < N; k++) {
        const void *data = NULL;
        size_t len = 12345;
        int rc = cf_result(fs[k], CF_FOREVER, &data, &len);
        if (rc != CF_OK) {
            cf_error e;
            ASSERT_OK(cf_exception(fs[k], 0, &e));
            fprintf(stderr, "size %zu: %s\n", sizes[k], e.message);
        }
        ASSERT_OK(rc);
        ASSERT_EQ(len, sizes[k]);
        ASSERT(data != NULL);
        ASSERT(len == 0 || memcmp(data, bufs[k], len) == 0);
        cf_future_release(fs[k]);
        free(bufs[k]);
    }
    cf_executor_free(ex);
}

/* A raising task: CF_ETASK from cf_result, code and formatted message
 * intact through cf_exception (also a long one and a NULL format); the
 * raise wins over an earlier cf_return. */
static void test_raise(void)
{
    cf_executor *ex = make_executor();
    cf_future *f = cf_submit_i64(ex, t_raise, 7);
    cf_future *g = cf_submit_i64(ex, t_raise_long, 99);
    cf_future *h = cf_submit(ex, t_raise_null, NULL, 0);
    ASSERT(f && g && h);

    int64_t v;
    ASSERT_ST(cf_result(f, CF_FOREVER, NULL, NULL), CF_ETASK);
    ASSERT_ST(cf_result_i64(f, CF_FOREVER, &v), CF_ETASK);
    cf_error e;
    ASSERT_OK(cf_exception(f, CF_FOREVER, &e));
    ASSERT_ST(e.status, CF_ETASK);
    ASSERT_EQ(e.code, 42);
    ASSERT_STR_EQ(e.message, "bad input 7: oops");

    ASSERT_OK(cf_exception(g, CF_FOREVER, &e));
    ASSERT_ST(e.status, CF_ETASK);
    ASSERT_EQ(e.code, -5);
    ASSERT_EQ(strlen(e.message), 3003);
    for (int i = 0; i < 3000; i++)
        ASSERT(e.message[i] == (char)('a' + i % 26));
    ASSERT_STR_EQ(e.message + 3000, "|99");

    ASSERT_OK(cf_exception(h, CF_FOREVER, &e));
    ASSERT_ST(e.status, CF_ETASK);
    ASSERT_EQ(e.code, 3);
    ASSERT(e.message != NULL);
    ASSERT_STR_EQ(e.message, "");
    ASSERT_EQ(cf_future_state(h), CF_FINISHED);

    cf_future_release(f);
    cf_future_release(g);
    cf_future_release(h);
    cf_executor_free(ex);
}

/* A task that returns nothing: CF_OK, length 0, a non-NULL pointer. */
static void test_returns_nothing(void)
{
    cf_executor *ex = make_executor();
    cf_future *f = cf_submit(ex, t_nothing, NULL, 0);
    ASSERT(f != NULL);
    const void *data = NULL;
    size_t len = 99;
    ASSERT_OK(cf_result(f, CF_FOREVER, &data, &len));
    ASSERT_EQ(len, 0);
    ASSERT(data != NULL);
    cf_error e;
    ASSERT_OK(cf_exception(f, 0, &e));
    ASSERT_OK(e.status);
    ASSERT_STR_EQ(e.message, "");
    int64_t v;
    ASSERT_ST(cf_result_i64(f, 0, &v), CF_EINVAL); /* not 8 bytes */
    cf_future_release(f);
    cf_executor_free(ex);
}

/* 2,000 tasks in flight at once, every result right. */
static void test_many_tasks(void)
{
    enum { N = 2000 };
    cf_executor *ex = make_executor();
    cf_future **fs = malloc(N * sizeof *fs);
    ASSERT(fs != NULL);
    for (int i = 0; i < N; i++)
        ASSERT((fs[i] = cf_submit_i64(ex, t_square, i)) != NULL);
    for (int i = 0; i < N; i++) {
        int64_t v;
        ASSERT_OK(cf_result_i64(fs[i], CF_FOREVER, &v));
        ASSERT_EQ(v, (int64_t)i * i + 1);
        cf_future_release(fs[i]);
    }
    free(fs);
    cf_executor_free(ex);
}

/* Completes the standalone future passed as arg (a done callback). */
static void cb_complete_standalone(cf_future *f, void *arg)
{
    (void)f;
    ASSERT_OK(cf_set_result_i64(arg, 555));
}

/* cf_wait's three modes over pool futures mixed with standalone ones:
 * FIRST_COMPLETED wakes for a pool future, ALL_COMPLETED with timeout 0
 * times out but fills both sets, FIRST_EXCEPTION wakes for a pool raise,
 * ALL_COMPLETED waits for a pool future and a standalone one that a pool
 * future's callback completes. */
static void test_wait_modes_mixed(void)
{
    cf_executor *ex = make_executor();
    fgate g;
    fgate_init(&g);
    cf_future *blocked = submit_gated(ex, &g, 1);
    fgate_wait_started(&g, 1, NULL);
    cf_future *quick = cf_submit_i64(ex, t_square, 3); /* the other worker */
    cf_future *sa = cf_future_new(), *sb = cf_future_new();
    ASSERT(quick && sa && sb);
    cf_future *fs[4] = {blocked, sa, quick, sb};
    cf_future *done[4], *nd[4];
    size_t ndone = 99, nnd = 99;

    ASSERT_OK(
        cf_wait(fs, 4, LIVENESS, CF_FIRST_COMPLETED, done, &ndone, nd, &nnd));
    ASSERT_EQ(ndone, 1);
    ASSERT(done[0] == quick);
    ASSERT_EQ(nnd, 3);
    ASSERT(nd[0] == blocked && nd[1] == sa && nd[2] == sb);

    ASSERT_ST(cf_wait(fs, 4, 0, CF_ALL_COMPLETED, done, &ndone, nd, &nnd),
              CF_ETIMEDOUT);
    ASSERT_EQ(ndone, 1);
    ASSERT_EQ(nnd, 3);

    /* FIRST_EXCEPTION: quick's success does not count, the raise does. */
    cf_future *raising = cf_submit_i64(ex, t_raise, 1);
    ASSERT(raising != NULL);
    cf_future *fe[5] = {blocked, sa, quick, raising, sb};
    cf_future *done5[5], *nd5[5];
    ASSERT_OK(
        cf_wait(fe, 5, LIVENESS, CF_FIRST_EXCEPTION, done5, &ndone, nd5, &nnd));
    ASSERT_EQ(ndone, 2);
    ASSERT(done5[0] == quick && done5[1] == raising);
    ASSERT_EQ(nnd, 3);
    ASSERT_ST(cf_result(raising, 0, NULL, NULL), CF_ETASK);

    /* ALL_COMPLETED: blocked's callback completes sa; sb is cancelled. */
    ASSERT_OK(cf_add_done_callback(blocked, cb_complete_standalone, sa));
    ASSERT(cf_cancel(sb));
    fgate_open(&g);
    ASSERT_OK(
        cf_wait(fe, 5, LIVENESS, CF_ALL_COMPLETED, done5, &ndone, nd5, &nnd));
    ASSERT_EQ(ndone, 5);
    ASSERT_EQ(nnd, 0);
    int64_t v;
    ASSERT_OK(cf_result_i64(sa, 0, &v));
    ASSERT_EQ(v, 555);
    ASSERT_OK(cf_result_i64(blocked, 0, &v));
    ASSERT_EQ(v, 1);
    ASSERT_OK(cf_result_i64(quick, 0, &v));
    ASSERT_EQ(v, 10);
    ASSERT_ST(cf_result(sb, 0, NULL, NULL), CF_ECANCELLED);

    /* A future listed twice counts once; n == 0 returns at once. */
    cf_future *dup[3] = {quick, quick, sa};
    ASSERT_OK(cf_wait(dup, 3, 0, CF_ALL_COMPLETED, done, &ndone, nd, &nnd));
    ASSERT_EQ(ndone, 2);
    ASSERT_OK(cf_wait(NULL, 0, 0, CF_ALL_COMPLETED, NULL, NULL, NULL, NULL));

    for (int i = 0; i < 5; i++)
        cf_future_release(fe[i]);
    cf_executor_free(ex);
    fgate_destroy(&g);
}

/* as_completed over pool futures (one raises) and a standalone future that
 * is already done: the done one comes first, every future comes out once
 * and done, futures added mid-way (with a duplicate) too, then CF_END. */
static void test_as_completed_pool(void)
{
    enum { N = 50, M = 10 };
    cf_executor *ex = make_executor();
    cf_future *fs[1 + N + M];
    fs[0] = cf_future_new();
    ASSERT(fs[0] != NULL);
    ASSERT_OK(cf_set_result_i64(fs[0], -7));
    for (int i = 1; i <= N + M; i++) {
        fs[i] = i == 10 ? cf_submit_i64(ex, t_raise, i)
                        : cf_submit_i64(ex, t_square, i);
        ASSERT(fs[i] != NULL);
    }
    cf_as_completed *it = cf_as_completed_new(fs, 1 + N, LIVENESS);
    ASSERT(it != NULL);
    bool seen[1 + N + M] = {false};
    int got = 0;
    for (cf_future *f; cf_as_completed_next(it, &f) == CF_OK; got++) {
        ASSERT(cf_done(f));
        if (got == 0)
            ASSERT(f == fs[0]); /* done before the call, first in input */
        int idx = -1;
        for (int i = 0; i <= N + M; i++)
            if (fs[i] == f)
                idx = i;
        ASSERT(idx >= 0 && !seen[idx]);
        seen[idx] = true;
        int64_t v;
        if (idx == 0) {
            ASSERT_OK(cf_result_i64(f, 0, &v));
            ASSERT_EQ(v, -7);
        } else if (idx == 10) {
            ASSERT_ST(cf_result_i64(f, 0, &v), CF_ETASK);
        } else {
            ASSERT_OK(cf_result_i64(f, 0, &v));
            ASSERT_EQ(v, (int64_t)idx * idx + 1);
        }
        if (got == 5) /* add the rest, and one we already have */
            ASSERT_OK(cf_as_completed_add(it, fs + N, M + 1));
    }
    ASSERT_EQ(got, 1 + N + M);
    ASSERT_EQ(cf_as_completed_pending(it), 0);
    cf_future *f;
    ASSERT_ST(cf_as_completed_next(it, &f), CF_END);
    cf_as_completed_free(it);
    for (int i = 0; i <= N + M; i++)
        cf_future_release(fs[i]);
    cf_executor_free(ex);
}

/* While one task blocks a worker, 20 short tasks submitted after it all
 * finish on the other worker (none waits behind the blocked one), as
 * as_completed shows; the blocked one comes out last. */
static void test_short_tasks_not_stuck(void)
{
    enum { N = 20 };
    cf_executor *ex = make_executor();
    fgate g;
    fgate_init(&g);
    cf_future *fs[N + 1];
    fs[0] = submit_gated(ex, &g, -1);
    fgate_wait_started(&g, 1, NULL);
    for (int i = 1; i <= N; i++)
        ASSERT((fs[i] = cf_submit_i64(ex, t_square, i)) != NULL);
    cf_as_completed *it = cf_as_completed_new(fs, N + 1, LIVENESS);
    ASSERT(it != NULL);
    bool seen[N + 1] = {false};
    for (int k = 0; k < N; k++) {
        cf_future *f;
        int rc = cf_as_completed_next(it, &f);
        if (rc != CF_OK) {
            int stuck = 0;
            for (int i = 1; i <= N; i++)
                stuck += !cf_done(fs[i]);
            fprintf(stderr,
                    "%d short task(s) not done after %gs while one "
                    "worker is blocked\n",
                    stuck, LIVENESS);
        }
        ASSERT_OK(rc);
        ASSERT(f != fs[0]);
        ASSERT(cf_done(f));
        int idx = -1;
        for (int i = 1; i <= N; i++)
            if (fs[i] == f)
                idx = i;
        ASSERT(idx > 0 && !seen[idx]);
        seen[idx] = true;
        int64_t v;
        ASSERT_OK(cf_result_i64(f, 0, &v));
        ASSERT_EQ(v, (int64_t)idx * idx + 1);
    }
    ASSERT_EQ(cf_as_completed_pending(it), 1);
    ASSERT(!cf_done(fs[0]));
    fgate_open(&g);
    cf_future *last;
    ASSERT_OK(cf_as_completed_next(it, &last));
    ASSERT(last == fs[0]);
    ASSERT_ST(cf_as_completed_next(it, &last), CF_END);
    cf_as_completed_free(it);
    for (int i = 0; i <= N; i++)
        cf_future_release(fs[i]);
    cf_executor_free(ex);
    fgate_destroy(&g);
}

/* cf_map_i64 over 10,000 items with chunksize 1, 16 and 256: results in
 * input order, then CF_END. */
static void test_map_in_order(void)
{
    enum { N = 10000 };
    static int64_t in[N];
    for (int i = 0; i < N; i++)
        in[i] = i;
    cf_executor *ex = make_executor();
    static const size_t chunks[] = {1, 16, 256};
    for (int k = 0; k < 3; k++) {
        cf_map *m = cf_map_i64(ex, t_map_fn, in, N,
                               &(cf_map_opts){.chunksize = chunks[k]});
        ASSERT(m != NULL);
        for (int i = 0; i < N; i++) {
            int64_t v = -1;
            ASSERT_OK(cf_map_next_i64(m, &v));
            ASSERT_EQ(v, (int64_t)i * 3 + 1);
        }
        int64_t v;
        ASSERT_ST(cf_map_next_i64(m, &v), CF_END);
        ASSERT_ST(cf_map_next_i64(m, &v), CF_END);
        cf_map_free(m);
    }
    cf_executor_free(ex);
}

/* A map whose item 37 raises: fail-fast reports it and then CF_END;
 * continue_on_error reports every failing item and goes on. */
static void test_map_errors(void)
{
    enum { N = 1000 };
    static int64_t in[N];
    for (int i = 0; i < N; i++)
        in[i] = i;
    cf_executor *ex = make_executor();
    static const size_t chunks[] = {1, 16};
    for (int k = 0; k < 2; k++) {
        cf_map *m = cf_map_i64(ex, t_fail_at, in, N,
                               &(cf_map_opts){.chunksize = chunks[k]});
        ASSERT(m != NULL);
        int64_t v;
        for (int i = 0; i < 37; i++) {
            ASSERT_OK(cf_map_next_i64(m, &v));
            ASSERT_EQ(v, (int64_t)i * 3 + 1);
        }
        cf_future *f;
        ASSERT_ST(cf_map_next(m, &f), CF_ETASK);
        cf_error e;
        ASSERT_OK(cf_exception(f, 0, &e));
        ASSERT_EQ(e.code, 37);
        ASSERT_STR_EQ(e.message, "item 37 failed");
        ASSERT_ST(cf_map_next(m, &f), CF_END);
        ASSERT_ST(cf_map_next_i64(m, &v), CF_END);
        cf_map_free(m);

        m = cf_map_i64(ex, t_fail_at, in, N,
                       &(cf_map_opts){.chunksize = chunks[k],
                                      .continue_on_error = true});
        ASSERT(m != NULL);
        for (int i = 0; i < N; i++) {
            int rc = cf_map_next(m, &f);
            if (i % 100 == 37) {
                ASSERT_ST(rc, CF_ETASK);
                ASSERT_OK(cf_exception(f, 0, &e));
                ASSERT_EQ(e.code, i);
            } else {
                ASSERT_OK(rc);
                ASSERT_OK(cf_result_i64(f, 0, &v));
                ASSERT_EQ(v, (int64_t)i * 3 + 1);
            }
        }
        ASSERT_ST(cf_map_next(m, &f), CF_END);
        cf_map_free(m);
    }
    cf_executor_free(ex);
}

/* shutdown(wait) returns once every queued and running task has ended. */
static void test_shutdown_wait_completes(void)
{
    enum { N = 300 };
    cf_executor *ex = make_executor();
    cf_future *fs[N];
    for (int i = 0; i < N; i++)
        ASSERT((fs[i] = cf_submit_i64(ex, t_square, i)) != NULL);
    ASSERT_OK(cf_shutdown(ex, true, false));
    for (int i = 0; i < N; i++) {
        ASSERT(cf_done(fs[i]));
        int64_t v;
        ASSERT_OK(cf_result_i64(fs[i], 0, &v));
        ASSERT_EQ(v, (int64_t)i * i + 1);
        cf_future_release(fs[i]);
    }
    ASSERT_OK(cf_shutdown(ex, true, false)); /* twice is fine */
    cf_executor_free(ex);
}

/* shutdown(cancel_futures) on a saturated pool cancels what is queued;
 * what runs completes. */
static void test_shutdown_cancel_futures(void)
{
    enum { Q = 10 };
    cf_executor *ex = make_executor();
    fgate g;
    fgate_init(&g);
    cf_future *gated[WORKERS], *fill[WORKERS], *q[Q];
    saturate(ex, &g, gated, fill);
    for (int i = 0; i < Q; i++)
        ASSERT((q[i] = cf_submit_i64(ex, t_square, i)) != NULL);
    ASSERT_OK(cf_shutdown(ex, false, true));
    for (int i = 0; i < Q; i++) {
        ASSERT(cf_cancelled(q[i]));
        ASSERT_ST(cf_result(q[i], 0, NULL, NULL), CF_ECANCELLED);
    }
    ASSERT(cf_submit_i64(ex, t_square, 1) == NULL);
    ASSERT_ST(cf_last_error(), CF_ESHUTDOWN);
    fgate_open(&g);
    ASSERT_OK(cf_shutdown(ex, true, false));
    for (int i = 0; i < WORKERS; i++) {
        int64_t v;
        ASSERT_OK(cf_result_i64(gated[i], 0, &v));
        ASSERT_EQ(v, 100 + i);
        check_filler(fill[i], 1000 + i);
        cf_future_release(gated[i]);
        cf_future_release(fill[i]);
    }
    for (int i = 0; i < Q; i++)
        cf_future_release(q[i]);
    cf_executor_free(ex);
    fgate_destroy(&g);
}

/* Submitting after shutdown fails with NULL and CF_ESHUTDOWN, by every
 * submit flavour; a map after shutdown reports it at its first item. */
static void test_submit_after_shutdown(void)
{
    cf_executor *ex = make_executor();
    ASSERT_OK(cf_shutdown(ex, true, false));
    ASSERT(cf_submit_i64(ex, t_square, 1) == NULL);
    ASSERT_ST(cf_last_error(), CF_ESHUTDOWN);
    ASSERT(cf_submit(ex, t_nothing, NULL, 0) == NULL);
    ASSERT_ST(cf_last_error(), CF_ESHUTDOWN);
    ASSERT(cf_submit_str(ex, t_reverse, "x") == NULL);
    ASSERT_ST(cf_last_error(), CF_ESHUTDOWN);
    ASSERT(cf_submit_f64(ex, t_twice, 1.0) == NULL);
    ASSERT_ST(cf_last_error(), CF_ESHUTDOWN);
    ASSERT(cf_submit_ex(ex, t_square, NULL, 0, &(cf_task_opts){0}) == NULL);
    ASSERT_ST(cf_last_error(), CF_ESHUTDOWN);
    int64_t in[3] = {1, 2, 3};
    cf_map *m = cf_map_i64(ex, t_map_fn, in, 3, NULL);
    if (m != NULL) {
        int64_t v;
        ASSERT_ST(cf_map_next_i64(m, &v), CF_ESHUTDOWN);
        ASSERT_ST(cf_map_next_i64(m, &v), CF_END);
        cf_map_free(m);
    } else {
        ASSERT_ST(cf_last_error(), CF_ESHUTDOWN);
    }
    cf_executor_free(ex);
}

/* cf_executor_free without a shutdown runs what was queued: no future is
 * left pending, and the futures outlive the executor. */
static void test_free_without_shutdown(void)
{
    enum { N = 300 };
    cf_executor *ex = make_executor();
    cf_future *fs[N];
    for (int i = 0; i < N; i++)
        ASSERT((fs[i] = cf_submit_i64(ex, t_square, i)) != NULL);
    cf_executor_free(ex);
    for (int i = 0; i < N; i++) {
        ASSERT_EQ(cf_future_state(fs[i]), CF_FINISHED);
        int64_t v;
        ASSERT_OK(cf_result_i64(fs[i], 0, &v));
        ASSERT_EQ(v, (int64_t)i * i + 1);
        cf_future_release(fs[i]);
    }
}

/* Done callbacks run exactly once per future, in registration order when
 * registered before the future can finish; a callback added after it is
 * done runs at once in the calling thread; a callback racing with the
 * completion still runs exactly once. */
enum { CB_N = 500 };
static _Atomic int cb_state[CB_N];
static _Atomic int cb_racy[CB_N];

static void cb_first(cf_future *f, void *arg)
{
    int i = (int)(intptr_t)arg;
    ASSERT(cf_done(f));
    int expect = 0;
    ASSERT(atomic_compare_exchange_strong(&cb_state[i], &expect, 1));
}

static void cb_second(cf_future *f, void *arg)
{
    (void)f;
    int i = (int)(intptr_t)arg;
    int expect = 1;
    ASSERT(atomic_compare_exchange_strong(&cb_state[i], &expect, 2));
}

static void cb_late(cf_future *f, void *arg)
{
    (void)f;
    int i = (int)(intptr_t)arg;
    int expect = 2;
    ASSERT(atomic_compare_exchange_strong(&cb_state[i], &expect, 3));
}

static void cb_count(cf_future *f, void *arg)
{
    (void)f;
    atomic_fetch_add(&cb_racy[(int)(intptr_t)arg], 1);
}

static void test_callbacks_once(void)
{
    cf_executor *ex = make_executor();
    fgate g;
    fgate_init(&g);
    cf_future *gated[WORKERS];
    for (int i = 0; i < WORKERS; i++)
        gated[i] = submit_gated(ex, &g, i);
    fgate_wait_started(&g, WORKERS, NULL);
    /* Nothing below can finish before the gate opens. */
    cf_future *fs[CB_N], *rs[CB_N];
    for (int i = 0; i < CB_N; i++) {
        atomic_store(&cb_state[i], 0);
        ASSERT((fs[i] = cf_submit_i64(ex, t_square, i)) != NULL);
        ASSERT_OK(cf_add_done_callback(fs[i], cb_first, (void *)(intptr_t)i));
        ASSERT_OK(cf_add_done_callback(fs[i], cb_second, (void *)(intptr_t)i));
    }
    fgate_open(&g);
    /* These race with their completion. */
    for (int i = 0; i < CB_N; i++) {
        atomic_store(&cb_racy[i], 0);
        ASSERT((rs[i] = cf_submit_i64(ex, t_square, i)) != NULL);
        ASSERT_OK(cf_add_done_callback(rs[i], cb_count, (void *)(intptr_t)i));
    }
    cf_executor_free(ex); /* the workers (and completions) are over */
    for (int i = 0; i < CB_N; i++) {
        ASSERT_EQ(atomic_load(&cb_state[i]), 2);
        ASSERT_OK(cf_add_done_callback(fs[i], cb_late, (void *)(intptr_t)i));
        ASSERT_EQ(atomic_load(&cb_state[i]), 3); /* ran at once */
        ASSERT_EQ(atomic_load(&cb_racy[i]), 1);
        cf_future_release(fs[i]);
        cf_future_release(rs[i]);
    }
    for (int i = 0; i < WORKERS; i++)
        cf_future_release(gated[i]);
    fgate_destroy(&g);
}

/* On a saturated pool, a queued future can be cancelled: cancelled state,
 * CF_ECANCELLED from cf_result and cf_exception; the rest still runs. */
static void test_cancel_queued_saturated(void)
{
    cf_executor *ex = make_executor();
    fgate g;
    fgate_init(&g);
    cf_future *gated[WORKERS], *fill[WORKERS];
    saturate(ex, &g, gated, fill);
    cf_future *t = cf_submit_i64(ex, t_square, 5);
    cf_future *u = cf_submit_i64(ex, t_square, 6);
    ASSERT(t && u);
    ASSERT_EQ(cf_future_state(t), CF_PENDING);
    ASSERT(cf_cancel(t));
    ASSERT(cf_cancelled(t));
    ASSERT(cf_done(t));
    ASSERT(cf_cancel(t)); /* still cancelled */
    ASSERT_ST(cf_result(t, 0, NULL, NULL), CF_ECANCELLED);
    cf_error e;
    ASSERT_ST(cf_exception(t, 0, &e), CF_ECANCELLED);
    ASSERT_EQ(cf_future_state(u), CF_PENDING);
    fgate_open(&g);
    int64_t v;
    ASSERT_OK(cf_result_i64(u, LIVENESS, &v));
    ASSERT_EQ(v, 37);
    for (int i = 0; i < WORKERS; i++) {
        ASSERT_OK(cf_result_i64(gated[i], LIVENESS, &v));
        ASSERT_EQ(v, 100 + i);
        ASSERT(!cf_cancel(gated[i])); /* finished: too late */
        ASSERT_OK(cf_result_i64(fill[i], LIVENESS, &v));
        ASSERT_EQ(v, (int64_t)(1000 + i) * (1000 + i) + 1);
        cf_future_release(gated[i]);
        cf_future_release(fill[i]);
    }
    ASSERT(cf_cancelled(t));
    cf_future_release(t);
    cf_future_release(u);
    cf_executor_free(ex);
    fgate_destroy(&g);
}

/* Two chains of tasks driven by cf_wait(FIRST_COMPLETED): whichever link
 * finishes is replaced by the next one with its result (a standalone
 * future that never completes sits in the set too). */
static void test_chain_first_completed(void)
{
    enum { STEPS = 300 };
    cf_executor *ex = make_executor();
    cf_future *never = cf_future_new();
    ASSERT(never != NULL);
    int64_t start[2] = {0, 100000};
    int steps[2] = {0, 0};
    cf_future *fs[3] = {cf_submit_i64(ex, t_inc, start[0]), never,
                        cf_submit_i64(ex, t_inc, start[1])};
    ASSERT(fs[0] && fs[2]);
    int total = 0;
    while (total < STEPS) {
        cf_future *done[3];
        size_t nd = 0;
        ASSERT_OK(cf_wait(fs, 3, LIVENESS, CF_FIRST_COMPLETED, done, &nd, NULL,
                          NULL));
        ASSERT(nd >= 1 && nd <= 2);
        for (size_t k = 0; k < nd; k++) {
            ASSERT(done[k] != never);
            int j = done[k] == fs[0] ? 0 : 2;
            ASSERT(done[k] == fs[j]);
            int64_t v;
            ASSERT_OK(cf_result_i64(fs[j], 0, &v));
            steps[j / 2]++;
            ASSERT_EQ(v, start[j / 2] + steps[j / 2]);
            cf_future_release(fs[j]);
            ASSERT((fs[j] = cf_submit_i64(ex, t_inc, v)) != NULL);
            total++;
        }
    }
    for (int j = 0; j < 3; j += 2) {
        int64_t v;
        ASSERT_OK(cf_result_i64(fs[j], LIVENESS, &v));
        ASSERT_EQ(v, start[j / 2] + steps[j / 2] + 1);
        cf_future_release(fs[j]);
    }
    ASSERT(!cf_done(never));
    cf_future_release(never);
    cf_executor_free(ex);
}

#ifdef CF_TEST_MPI
#undef TEST_MAIN
#define TEST_MAIN(...)                                                    \
    int main(int argc, char **argv)                                       \
    {                                                                     \
        static const test_entry tests_[] = {__VA_ARGS__};                 \
        int provided, rank, go = 1, rc = 0;                               \
        MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);    \
        MPI_Comm_rank(MPI_COMM_WORLD, &rank);                             \
        if (rank == 0) {                                                  \
            rc = test_main(argc, argv, tests_,                            \
                           sizeof tests_ / sizeof *tests_);               \
            go = 0;                                                       \
            MPI_Bcast(&go, 1, MPI_INT, 0, MPI_COMM_WORLD);                \
        } else {                                                          \
            for (;;) {                                                    \
                MPI_Bcast(&go, 1, MPI_INT, 0, MPI_COMM_WORLD);            \
                cf_executor *none = NULL;                                 \
                if (!go ||                                                \
                    cf_mpi_comm_executor(MPI_COMM_WORLD, 0, NULL, &none)) \
                    break;                                                \
            }                                                             \
        }                                                                 \
        MPI_Finalize();                                                   \
        return rc;                                                        \
    }
#endif

TEST_MAIN(T(test_scalar_types), T(test_bytes_sizes), T(test_raise),
          T(test_returns_nothing), T(test_many_tasks), T(test_wait_modes_mixed),
          T(test_as_completed_pool), T(test_map_in_order), T(test_map_errors),
          T(test_shutdown_wait_completes), T(test_shutdown_cancel_futures),
          T(test_submit_after_shutdown), T(test_free_without_shutdown),
          T(test_callbacks_once), T(test_cancel_queued_saturated),
          T(test_chain_first_completed), T(test_short_tasks_not_stuck))

/*
 * test-thread-pool.c -- the thread pool executor (ThreadPoolExecutor).
 *
 * Ports the behaviours CPython checks in Lib/test/test_concurrent_futures
 * (test_thread_pool.py, executor.py's ExecutorTest, test_init.py) to the C
 * API: submit and result for every argument / result shape, raising tasks,
 * max_workers, thread names, lazy start and idle reuse, saturation and
 * cancel, initializers (and BrokenThreadPool), the bounded queue, done
 * callbacks and cooperative cancellation.  No sleeps: tasks block on gates
 * and latches the test controls.
 */
#include "test.h"

#include <sys/resource.h>

#include <math.h>
#include <sched.h>
#include <stdatomic.h>

/* ------------------------------------------------------------------------ */
/* Helpers                                                                   */
/* ------------------------------------------------------------------------ */

/* A counter threads can wait on (a countdown latch turned around). */

/* A pointer passed as the task's argument bytes. */
static void *arg_ptr(cf_call *c)
{
    void *p = NULL;
    size_t n;
    const void *a = cf_arg(c, &n);
    ASSERT_EQ(n, sizeof p);
    memcpy(&p, a, sizeof p);
    return p;
}

static cf_future *submit_ptr(cf_executor *ex, cf_task_fn fn, void *p)
{
    return cf_submit(ex, fn, &p, sizeof p);
}

/* A task that optionally blocks on a gate, then returns a value. */
typedef struct gated_arg {
    gate *g;
    int64_t v;
} gated_arg;

static void t_gated(cf_call *c)
{
    gated_arg a;
    size_t n;
    const void *p = cf_arg(c, &n);
    ASSERT_EQ(n, sizeof a);
    memcpy(&a, p, sizeof a);
    if (a.g != NULL)
        gate_pass(a.g);
    cf_return_i64(c, a.v);
}

static cf_future *submit_gated(cf_executor *ex, gate *g, int64_t v)
{
    gated_arg a = {g, v};
    return cf_submit(ex, t_gated, &a, sizeof a);
}

static cf_future *submit_gated_ex(cf_executor *ex, gate *g, int64_t v,
                                  unsigned flags)
{
    gated_arg a = {g, v};
    cf_task_opts o = {.flags = flags};
    return cf_submit_ex(ex, t_gated, &a, sizeof a, &o);
}

static int64_t result_i64(cf_future *f)
{
    int64_t v = 0;
    ASSERT_OK(cf_result_i64(f, CF_FOREVER, &v));
    return v;
}

/* A task that returns the pthread_t it runs on, after an optional gate. */
static void t_self(cf_call *c)
{
    size_t n;
    const void *a = cf_arg(c, &n);
    if (n == sizeof(gate *)) {
        gate *g;
        memcpy(&g, a, sizeof g);
        gate_pass(g);
    }
    pthread_t self = pthread_self();
    cf_return(c, &self, sizeof self);
}

static pthread_t result_thread(cf_future *f)
{
    const void *p;
    size_t n;
    ASSERT_OK(cf_result(f, CF_FOREVER, &p, &n));
    ASSERT_EQ(n, sizeof(pthread_t));
    pthread_t t;
    memcpy(&t, p, sizeof t);
    return t;
}

/* Adds t to the set ts[0..*n) unless present. */
static void add_thread(pthread_t *ts, int *n, pthread_t t)
{
    for (int i = 0; i < *n; i++)
        if (pthread_equal(ts[i], t))
            return;
    ts[(*n)++] = t;
}

/* ------------------------------------------------------------------------ */
/* submit / result: arguments and results of every shape                     */
/* ------------------------------------------------------------------------ */

static void t_double_i64(cf_call *c)
{
    cf_return_i64(c, cf_arg_i64(c) * 2);
}

static void t_scale_f64(cf_call *c)
{
    cf_return_f64(c, cf_arg_f64(c) * 1.5);
}

/* Returns "<len>:" + the string upper-cased. */
static void t_upper(cf_call *c)
{
    const char *s = cf_arg_str(c);
    size_t n = strlen(s);
    char *out = malloc(n + 32);
    ASSERT(out);
    int k = snprintf(out, n + 32, "%zu:", n);
    for (size_t i = 0; i <= n; i++) {
        char ch = s[i];
        out[(size_t)k + i] = (ch >= 'a' && ch <= 'z') ? (char)(ch - 32) : ch;
    }
    cf_return_str(c, out);
    free(out);
}

/* Returns the argument bytes, each xor 0xA5. */
static void t_echo_xor(cf_call *c)
{
    size_t n;
    const unsigned char *a = cf_arg(c, &n);
    ASSERT(a != NULL || n == 0);
    unsigned char *out = malloc(n ? n : 1);
    ASSERT(out);
    for (size_t i = 0; i < n; i++)
        out[i] = a[i] ^ 0xA5;
    ASSERT_OK(cf_return(c, out, n));
    free(out);
}

/* Returns {address of the argument bytes, their length}. */
static void t_arg_where(cf_call *c)
{
    size_t n;
    const void *a = cf_arg(c, &n);
    uint64_t out[2] = {(uint64_t)(uintptr_t)a, (uint64_t)n};
    cf_return(c, out, sizeof out);
}

static unsigned char pattern(size_t i)
{
    return (unsigned char)(i * 31u + 7u);
}

/* Returns n bytes (n = the int64 argument) of pattern(). */
static void t_make(cf_call *c)
{
    size_t n = (size_t)cf_arg_i64(c);
    unsigned char *out = malloc(n ? n : 1);
    ASSERT(out);
    for (size_t i = 0; i < n; i++)
        out[i] = pattern(i);
    ASSERT_OK(cf_return(c, out, n));
    free(out);
}

/* submit(pow, 2, 8) == 256 and friends: int64 and double round trips. */
static void test_submit_i64_f64(void)
{
    cf_executor *ex = cf_thread_pool(NULL);
    ASSERT(ex);
    int64_t in[] = {0, 1, -1, 128, INT64_MAX / 2, INT64_MIN / 2};
    cf_future *fs[6];
    for (int i = 0; i < 6; i++) {
        fs[i] = cf_submit_i64(ex, t_double_i64, in[i]);
        ASSERT(fs[i]);
    }
    for (int i = 0; i < 6; i++) {
        ASSERT_EQ(result_i64(fs[i]), in[i] * 2);
        ASSERT(cf_done(fs[i]));
        ASSERT(!cf_cancelled(fs[i]));
        ASSERT(!cf_running(fs[i]));
        ASSERT_EQ(cf_future_state(fs[i]), CF_FINISHED);
        cf_error e;
        ASSERT_OK(cf_exception(fs[i], 0, &e));
        ASSERT_ST(e.status, CF_OK);
        ASSERT_EQ(e.code, 0);
        ASSERT_STR_EQ(e.message, "");
        cf_future_release(fs[i]);
    }
    double din[] = {0.0, 2.0, -3.25, 1e300, 1e-300};
    for (int i = 0; i < 5; i++) {
        cf_future *f = cf_submit_f64(ex, t_scale_f64, din[i]);
        ASSERT(f);
        double d = NAN;
        ASSERT_OK(cf_result_f64(f, CF_FOREVER, &d));
        ASSERT(d == din[i] * 1.5);
        cf_future_release(f);
    }
    cf_executor_free(ex);
}

/* String arguments and results, short (inline) and long (heap). */
static void test_submit_str(void)
{
    cf_executor *ex = cf_thread_pool(&(cf_thread_pool_opts){.max_workers = 2});
    ASSERT(ex);
    char longs[300];
    for (int i = 0; i < 299; i++)
        longs[i] = (char)('a' + i % 26);
    longs[299] = '\0';
    const char *in[] = {"", "x", "hello", "exactly 15 char", longs};
    for (int i = 0; i < 5; i++) {
        cf_future *f = cf_submit_str(ex, t_upper, in[i]);
        ASSERT(f);
        const char *s = NULL;
        ASSERT_OK(cf_result_str(f, CF_FOREVER, &s));
        char want[340];
        int k = snprintf(want, sizeof want, "%zu:", strlen(in[i]));
        for (size_t j = 0; j <= strlen(in[i]); j++) {
            char ch = in[i][j];
            want[(size_t)k + j] = (ch >= 'a' && ch <= 'z') ? (char)(ch - 32)
                                                           : ch;
        }
        ASSERT_STR_EQ(s, want);
        /* A string result is not an int64. */
        int64_t v;
        if (strlen(s) + 1 != 8)
            ASSERT_ST(cf_result_i64(f, 0, &v), CF_EINVAL);
        cf_future_release(f);
    }
    cf_executor_free(ex);
}

/* Byte arguments of 0, 16 (inline), 17 (first heap size) and 1 MiB arrive
 * intact, copied: the caller may scribble on its buffer after submit. */
static void test_submit_bytes_args(void)
{
    cf_executor *ex = cf_thread_pool(&(cf_thread_pool_opts){.max_workers = 3});
    ASSERT(ex);
    size_t sizes[] = {0, 1, 8, 16, 17, 4096, (size_t)1 << 20};
    enum { NS = sizeof sizes / sizeof sizes[0] };
    cf_future *fs[NS];
    unsigned char *bufs[NS];
    for (int i = 0; i < NS; i++) {
        bufs[i] = malloc(sizes[i] ? sizes[i] : 1);
        ASSERT(bufs[i]);
        for (size_t j = 0; j < sizes[i]; j++)
            bufs[i][j] = pattern(j + (size_t)i);
        fs[i] = cf_submit(ex, t_echo_xor, sizes[i] ? bufs[i] : NULL, sizes[i]);
        ASSERT(fs[i]);
        /* Copied at submit: changing the buffer now must not matter. */
        memset(bufs[i], 0xEE, sizes[i] ? sizes[i] : 1);
    }
    for (int i = 0; i < NS; i++) {
        const unsigned char *p = NULL;
        size_t n = 12345;
        ASSERT_OK(cf_result(fs[i], CF_FOREVER, (const void **)&p, &n));
        ASSERT_EQ(n, sizes[i]);
        ASSERT(p != NULL);
        for (size_t j = 0; j < n; j++)
            if (p[j] != (pattern(j + (size_t)i) ^ 0xA5))
                ASSERT_EQ(p[j], pattern(j + (size_t)i) ^ 0xA5);
        /* Reading it again gives the same bytes. */
        const void *p2;
        ASSERT_OK(cf_result(fs[i], 0, &p2, NULL));
        ASSERT(p2 == p);
        cf_future_release(fs[i]);
        free(bufs[i]);
    }
    /* A zero-length argument reads as 0 / "" through the typed readers. */
    cf_future *f = cf_submit(ex, t_double_i64, NULL, 0);
    ASSERT(f);
    ASSERT_EQ(result_i64(f), 0);
    cf_future_release(f);
    f = cf_submit(ex, t_upper, NULL, 0);
    const char *s;
    ASSERT_OK(cf_result_str(f, CF_FOREVER, &s));
    ASSERT_STR_EQ(s, "0:");
    cf_future_release(f);
    cf_executor_free(ex);
}

/* Results of 0, 16, 17 bytes and 1 MiB come back intact. */
static void test_submit_bytes_results(void)
{
    cf_executor *ex = cf_thread_pool(&(cf_thread_pool_opts){.max_workers = 2});
    ASSERT(ex);
    size_t sizes[] = {0, 1, 15, 16, 17, 1000, (size_t)1 << 20};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        cf_future *f = cf_submit_i64(ex, t_make, (int64_t)sizes[i]);
        ASSERT(f);
        const unsigned char *p = NULL;
        size_t n = 999;
        ASSERT_OK(cf_result(f, CF_FOREVER, (const void **)&p, &n));
        ASSERT_EQ(n, sizes[i]);
        ASSERT(p != NULL);
        for (size_t j = 0; j < n; j++)
            if (p[j] != pattern(j))
                ASSERT_EQ(p[j], pattern(j));
        int64_t v;
        if (n != 8)
            ASSERT_ST(cf_result_i64(f, 0, &v), CF_EINVAL);
        cf_future_release(f);
    }
    cf_executor_free(ex);
}

/* CF_BORROW_ARG: the task sees the caller's own buffer (no copy) for
 * arguments too big to live inline, and the bytes arrive intact. */
static void test_submit_borrow_arg(void)
{
    cf_executor *ex = cf_thread_pool(&(cf_thread_pool_opts){.max_workers = 2});
    ASSERT(ex);
    size_t sizes[] = {16, 17, 4096, (size_t)1 << 20};
    cf_task_opts o = {.flags = CF_BORROW_ARG};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        unsigned char *buf = malloc(sizes[i]);
        ASSERT(buf);
        for (size_t j = 0; j < sizes[i]; j++)
            buf[j] = pattern(j);
        cf_future *where = cf_submit_ex(ex, t_arg_where, buf, sizes[i], &o);
        cf_future *echo = cf_submit_ex(ex, t_echo_xor, buf, sizes[i], &o);
        ASSERT(where && echo);
        const uint64_t *w;
        size_t n;
        ASSERT_OK(cf_result(where, CF_FOREVER, (const void **)&w, &n));
        ASSERT_EQ(n, 16);
        ASSERT_EQ(w[1], sizes[i]);
        if (sizes[i] > 16) /* "do not copy": the very same buffer */
            ASSERT(w[0] == (uint64_t)(uintptr_t)buf);
        const unsigned char *p;
        ASSERT_OK(cf_result(echo, CF_FOREVER, (const void **)&p, &n));
        ASSERT_EQ(n, sizes[i]);
        for (size_t j = 0; j < n; j++)
            if (p[j] != (pattern(j) ^ 0xA5))
                ASSERT_EQ(p[j], pattern(j) ^ 0xA5);
        cf_future_release(where);
        cf_future_release(echo);
        free(buf); /* both futures are done: the borrow is over */
    }
    cf_executor_free(ex);
}

/* ------------------------------------------------------------------------ */
/* Raising tasks, tasks returning nothing                                    */
/* ------------------------------------------------------------------------ */

static void t_raise(cf_call *c)
{
    int64_t code = cf_arg_i64(c);
    ASSERT_OK(
        cf_raise(c, (int)code, "bad input %d (%s)", (int)code * 10, "details"));
}

/* Returns a value, then raises: the raise wins and the result is gone. */
static void t_return_then_raise(cf_call *c)
{
    char big[100];
    memset(big, 'z', sizeof big);
    cf_return(c, big, sizeof big);
    cf_raise(c, 3, "late %s", "failure");
}

static void t_raise_no_message(cf_call *c)
{
    cf_raise(c, -12, NULL);
}

static void t_nothing(cf_call *c)
{
    (void)c;
}

/* A task that raises: cf_result gives CF_ETASK, cf_exception the task's
 * code and formatted message, intact (Python: the exception propagates). */
static void test_task_raises(void)
{
    cf_executor *ex = cf_thread_pool(&(cf_thread_pool_opts){.max_workers = 2});
    ASSERT(ex);
    cf_future *f = cf_submit_i64(ex, t_raise, 7);
    ASSERT(f);
    const void *p = (const void *)1;
    size_t n = 77;
    ASSERT_ST(cf_result(f, CF_FOREVER, &p, &n), CF_ETASK);
    int64_t v;
    ASSERT_ST(cf_result_i64(f, CF_FOREVER, &v), CF_ETASK);
    cf_error e;
    ASSERT_OK(cf_exception(f, CF_FOREVER, &e));
    ASSERT_ST(e.status, CF_ETASK);
    ASSERT_EQ(e.code, 7);
    ASSERT_STR_EQ(e.message, "bad input 70 (details)");
    ASSERT_EQ(cf_future_state(f), CF_FINISHED);
    ASSERT(cf_done(f) && !cf_cancelled(f));
    ASSERT(!cf_cancel(f)); /* finished: cannot be cancelled */
    char buf[200];
    cf_describe(f, buf, sizeof buf);
    ASSERT(strstr(buf, "bad input 70 (details)") != NULL);
    cf_future_release(f);

    f = cf_submit(ex, t_return_then_raise, NULL, 0);
    ASSERT_ST(cf_result(f, CF_FOREVER, NULL, NULL), CF_ETASK);
    ASSERT_OK(cf_exception(f, 0, &e));
    ASSERT_ST(e.status, CF_ETASK);
    ASSERT_EQ(e.code, 3);
    ASSERT_STR_EQ(e.message, "late failure");
    cf_future_release(f);

    f = cf_submit(ex, t_raise_no_message, NULL, 0);
    ASSERT_ST(cf_result(f, CF_FOREVER, NULL, NULL), CF_ETASK);
    ASSERT_OK(cf_exception(f, 0, &e));
    ASSERT_EQ(e.code, -12);
    ASSERT(e.message != NULL);
    ASSERT_STR_EQ(e.message, "");
    cf_future_release(f);

    /* The pool is not hurt by raising tasks. */
    f = cf_submit_i64(ex, t_double_i64, 21);
    ASSERT_EQ(result_i64(f), 42);
    cf_future_release(f);
    cf_executor_free(ex);
}

/* A task that returns nothing (Python's None): CF_OK, len 0, data
 * non-NULL. */
static void test_task_returns_nothing(void)
{
    cf_executor *ex = cf_thread_pool(NULL);
    ASSERT(ex);
    cf_future *f = cf_submit(ex, t_nothing, NULL, 0);
    ASSERT(f);
    const void *p = NULL;
    size_t n = 1234;
    ASSERT_OK(cf_result(f, CF_FOREVER, &p, &n));
    ASSERT_EQ(n, 0);
    ASSERT(p != NULL);
    cf_error e = {.status = 99, .code = 99, .message = NULL};
    ASSERT_OK(cf_exception(f, 0, &e));
    ASSERT_ST(e.status, CF_OK);
    ASSERT_EQ(e.code, 0);
    ASSERT_STR_EQ(e.message, "");
    int64_t v;
    ASSERT_ST(cf_result_i64(f, 0, &v), CF_EINVAL);
    const char *s;
    ASSERT_ST(cf_result_str(f, 0, &s), CF_EINVAL);
    cf_future_release(f);
    cf_executor_free(ex);
}

/* Bad arguments to submit and result: NULL with CF_EINVAL, no crash. */
static void test_submit_bad_args(void)
{
    cf_executor *ex = cf_thread_pool(NULL);
    ASSERT(ex);
    ASSERT(cf_submit(NULL, t_nothing, NULL, 0) == NULL);
    ASSERT_ST(cf_last_error(), CF_EINVAL);
    ASSERT(cf_submit(ex, NULL, NULL, 0) == NULL);
    ASSERT_ST(cf_last_error(), CF_EINVAL);
    ASSERT(cf_submit(ex, t_nothing, NULL, 5) == NULL);
    ASSERT_ST(cf_last_error(), CF_EINVAL);
    ASSERT(cf_submit_str(ex, t_upper, NULL) == NULL);
    ASSERT_ST(cf_last_error(), CF_EINVAL);
    ASSERT(cf_submit_i64(NULL, t_double_i64, 1) == NULL);
    ASSERT_ST(cf_last_error(), CF_EINVAL);

    gate g = GATE_INIT;
    cf_future *f = submit_gated(ex, &g, 5);
    ASSERT(f);
    ASSERT_ST(cf_result(f, -1.0, NULL, NULL), CF_EINVAL);
    ASSERT_ST(cf_result(f, NAN, NULL, NULL), CF_EINVAL);
    ASSERT_ST(cf_result(NULL, 0, NULL, NULL), CF_EINVAL);
    /* Python's result(timeout): TimeoutError, the future untouched. */
    ASSERT_ST(cf_result(f, 0, NULL, NULL), CF_ETIMEDOUT);
    ASSERT_ST(cf_result(f, 0.01, NULL, NULL), CF_ETIMEDOUT);
    cf_error e;
    ASSERT_ST(cf_exception(f, 0.01, &e), CF_ETIMEDOUT);
    ASSERT(!cf_done(f));
    ASSERT(!cf_cancelled(f));
    gate_open(&g);
    ASSERT_EQ(result_i64(f), 5);
    cf_future_release(f);
    cf_executor_free(ex);
}

/* ------------------------------------------------------------------------ */
/* max_workers                                                               */
/* ------------------------------------------------------------------------ */

/* Default max_workers is min(32, cpus + 4), cpus from the affinity mask
 * (test_default_workers); an explicit value is kept. */
static void test_default_max_workers(void)
{
    cpu_set_t set;
    ASSERT_EQ(sched_getaffinity(0, sizeof set, &set), 0);
    int cpus = CPU_COUNT(&set);
    int want = cpus + 4 < 32 ? cpus + 4 : 32;
    cf_executor *ex = cf_thread_pool(NULL);
    ASSERT(ex);
    ASSERT_EQ(cf_executor_max_workers(ex), want);
    cf_executor_free(ex);
    ex = cf_thread_pool(&(cf_thread_pool_opts){.max_workers = 0});
    ASSERT(ex);
    ASSERT_EQ(cf_executor_max_workers(ex), want);
    cf_executor_free(ex);
    ex = cf_thread_pool(&(cf_thread_pool_opts){.max_workers = 3});
    ASSERT(ex);
    ASSERT_EQ(cf_executor_max_workers(ex), 3);
    cf_executor_free(ex);
    ex = cf_thread_pool(&(cf_thread_pool_opts){.max_workers = 100});
    ASSERT(ex);
    ASSERT_EQ(cf_executor_max_workers(ex), 100);
    cf_executor_free(ex);
}

/* max_workers < 0 is ValueError: NULL with CF_EINVAL
 * (test_max_workers_negative). */
static void test_max_workers_negative(void)
{
    ASSERT(cf_thread_pool(&(cf_thread_pool_opts){.max_workers = -1}) == NULL);
    ASSERT_ST(cf_last_error(), CF_EINVAL);
    ASSERT(cf_thread_pool(&(cf_thread_pool_opts){.max_workers = -100}) == NULL);
    ASSERT_ST(cf_last_error(), CF_EINVAL);
}

/* ------------------------------------------------------------------------ */
/* Thread names                                                              */
/* ------------------------------------------------------------------------ */

/* Returns the thread's name, after an optional gate. */
static void t_name(cf_call *c)
{
    size_t n;
    const void *a = cf_arg(c, &n);
    if (n == sizeof(gate *)) {
        gate *g;
        memcpy(&g, a, sizeof g);
        gate_pass(g);
    }
    char name[16] = {0};
    ASSERT_EQ(pthread_getname_np(pthread_self(), name, sizeof name), 0);
    cf_return_str(c, name);
}

/* name matches ^prefix_[0-(max-1)]$; returns the number. */
static int check_name(const char *name, const char *prefix, int max)
{
    size_t pl = strlen(prefix);
    if (strncmp(name, prefix, pl) != 0 || name[pl] != '_') {
        fprintf(stderr, "thread name \"%s\" lacks prefix \"%s_\"\n", name,
                prefix);
        abort();
    }
    char *end;
    const char *digits = name + pl + 1;
    ASSERT(*digits >= '0' && *digits <= '9');
    long k = strtol(digits, &end, 10);
    ASSERT(*end == '\0');
    ASSERT(k >= 0 && k < max);
    return (int)k;
}

/* Runs `max` tasks at once on a pool of `max` threads named by prefix
 * (NULL: default) and checks every thread is "<prefix>_N", N distinct
 * (test_thread_names_assigned, test_thread_names_default). */
static void check_pool_names(const char *prefix, int max)
{
    cf_executor *ex = cf_thread_pool(&(
        cf_thread_pool_opts){.max_workers = max, .thread_name_prefix = prefix});
    ASSERT(ex);
    gate g = GATE_INIT;
    cf_future *fs[16];
    ASSERT(max <= 16);
    for (int i = 0; i < max; i++)
        fs[i] = submit_ptr(ex, t_name, &g);
    gate_wait_for(&g, max); /* all threads exist: one task each */
    gate_open(&g);
    bool seen[16] = {false};
    for (int i = 0; i < max; i++) {
        const char *name;
        ASSERT_OK(cf_result_str(fs[i], CF_FOREVER, &name));
        int k = check_name(name, prefix ? prefix : "cf_thread", max);
        ASSERT(!seen[k]);
        seen[k] = true;
        cf_future_release(fs[i]);
    }
    cf_executor_free(ex);
}

static void test_thread_names(void)
{
    check_pool_names("SpecialPool", 5);
    check_pool_names(NULL, 5);
    check_pool_names("p", 12); /* two-digit numbers */

    /* A one-thread pool's only thread is "<prefix>_0". */
    cf_executor *ex = cf_thread_pool(
        &(cf_thread_pool_opts){.max_workers = 1, .thread_name_prefix = "solo"});
    cf_future *f = cf_submit(ex, t_name, NULL, 0);
    const char *name;
    ASSERT_OK(cf_result_str(f, CF_FOREVER, &name));
    ASSERT_STR_EQ(name, "solo_0");
    cf_future_release(f);
    cf_executor_free(ex);
}

/* A long prefix is cut to the kernel's 15 bytes. */
static void test_thread_names_truncated(void)
{
    const char *prefix = "a_very_long_thread_name_prefix";
    cf_executor *ex = cf_thread_pool(
        &(cf_thread_pool_opts){.max_workers = 1, .thread_name_prefix = prefix});
    ASSERT(ex);
    cf_future *f = cf_submit(ex, t_name, NULL, 0);
    const char *name;
    ASSERT_OK(cf_result_str(f, CF_FOREVER, &name));
    ASSERT_EQ(strlen(name), 15);
    ASSERT(strncmp(name, prefix, 15) == 0);
    cf_future_release(f);
    cf_executor_free(ex);

    /* Exactly at the limit: "abcdefghijkl" + "_0" = 14 bytes, kept whole. */
    ex = cf_thread_pool(&(cf_thread_pool_opts){
        .max_workers = 1, .thread_name_prefix = "abcdefghijkl"});
    f = cf_submit(ex, t_name, NULL, 0);
    ASSERT_OK(cf_result_str(f, CF_FOREVER, &name));
    ASSERT_STR_EQ(name, "abcdefghijkl_0");
    cf_future_release(f);
    cf_executor_free(ex);
}

/* ------------------------------------------------------------------------ */
/* Lazy start, idle reuse, saturation                                        */
/* ------------------------------------------------------------------------ */

/* Threads start lazily and an idle one is reused: submitting one task at a
 * time and waiting for each result runs them all on a single thread
 * (test_idle_thread_reuse, 1000 rounds instead of Python's 3), though the
 * pool may start 8.  Once cf_result has returned, the only worker has
 * nothing left to run, so the next submit must not start another. */
static void test_idle_thread_reuse(void)
{
    cf_executor *ex = cf_thread_pool(&(cf_thread_pool_opts){.max_workers = 8});
    ASSERT(ex);
    pthread_t ts[64];
    int nt = 0;
    for (int i = 0; i < 1000; i++) {
        cf_future *f = cf_submit(ex, t_self, NULL, 0);
        ASSERT(f);
        add_thread(ts, &nt, result_thread(f));
        cf_future_release(f);
    }
    ASSERT_EQ(nt, 1);
    ASSERT(!pthread_equal(ts[0], pthread_self()));
    cf_executor_free(ex);
}

/* A pool never runs more than max_workers threads, and starts all of them
 * when saturated (test_saturation): 4 x 15 blocked tasks on 4 workers run
 * on exactly 4 distinct threads; the 5th task waits in the queue. */
static void test_saturation(void)
{
    enum { W = 4, N = W * 15 };
    cf_executor *ex = cf_thread_pool(&(cf_thread_pool_opts){.max_workers = W});
    ASSERT(ex);
    gate g = GATE_INIT;
    cf_future *fs[N];
    for (int i = 0; i < N; i++) {
        fs[i] = submit_ptr(ex, t_self, &g);
        ASSERT(fs[i]);
    }
    gate_wait_for(&g, W);
    for (int i = W; i < N; i++)
        ASSERT_EQ(cf_future_state(fs[i]), CF_PENDING);
    for (int i = 0; i < W; i++)
        ASSERT_EQ(cf_future_state(fs[i]), CF_RUNNING);
    gate_open(&g);
    pthread_t ts[N];
    int nt = 0;
    for (int i = 0; i < N; i++) {
        add_thread(ts, &nt, result_thread(fs[i]));
        cf_future_release(fs[i]);
    }
    ASSERT_EQ(nt, W);
    cf_executor_free(ex);
}

/* A 2-worker pool saturated by blocked tasks: the third task stays
 * pending and can be cancelled (its result is CF_ECANCELLED and it never
 * runs), the running ones cannot (Future.cancel). */
static void test_cancel_pending_not_running(void)
{
    cf_executor *ex = cf_thread_pool(&(cf_thread_pool_opts){.max_workers = 2});
    ASSERT(ex);
    gate g = GATE_INIT;
    cf_future *a = submit_gated(ex, &g, 1);
    cf_future *b = submit_gated(ex, &g, 2);
    gate_wait_for(&g, 2);
    cf_future *c = submit_gated(ex, &g, 3);
    cf_future *d = submit_gated(ex, &g, 4);
    ASSERT(a && b && c && d);
    ASSERT(cf_running(a) && cf_running(b));
    ASSERT_EQ(cf_future_state(c), CF_PENDING);
    ASSERT(!cf_running(c) && !cf_done(c));

    ASSERT(cf_cancel(c));
    ASSERT(cf_cancel(c)); /* already cancelled: still true */
    ASSERT(cf_cancelled(c));
    ASSERT(cf_done(c));
    ASSERT_EQ(cf_future_state(c), CF_CANCELLED);
    ASSERT_ST(cf_result(c, CF_FOREVER, NULL, NULL), CF_ECANCELLED);
    cf_error e;
    ASSERT_ST(cf_exception(c, 0, &e), CF_ECANCELLED);

    ASSERT(!cf_cancel(a));
    ASSERT(!cf_cancel(b));
    ASSERT(cf_running(a) && !cf_cancelled(a));

    gate_open(&g);
    ASSERT_EQ(result_i64(a), 1);
    ASSERT_EQ(result_i64(b), 2);
    ASSERT_EQ(result_i64(d), 4);
    ASSERT(!cf_cancel(d)); /* finished */
    ASSERT(!cf_cancelled(d));
    ASSERT_ST(cf_result(c, 0, NULL, NULL), CF_ECANCELLED);
    cf_future_release(a);
    cf_future_release(b);
    cf_future_release(c);
    cf_future_release(d);
    cf_executor_free(ex);
}

/* Releasing the caller's reference does not cancel the task: the executor
 * keeps its own until the task ends (test_free_reference). */
static atomic_int released_ran;

static void t_count_ran(cf_call *c)
{
    gate *g = arg_ptr(c);
    gate_pass(g);
    atomic_fetch_add(&released_ran, 1);
}

static void test_release_before_done(void)
{
    cf_executor *ex = cf_thread_pool(&(cf_thread_pool_opts){.max_workers = 1});
    ASSERT(ex);
    gate g = GATE_INIT;
    atomic_store(&released_ran, 0);
    for (int i = 0; i < 5; i++) {
        cf_future *f = submit_ptr(ex, t_count_ran, &g);
        ASSERT(f);
        cf_future_release(f);
    }
    gate_open(&g);
    ASSERT_OK(cf_shutdown(ex, true, false));
    ASSERT_EQ(atomic_load(&released_ran), 5);
    cf_executor_free(ex);
}

/* ------------------------------------------------------------------------ */
/* Initializers (test_init.py)                                               */
/* ------------------------------------------------------------------------ */

typedef struct init_ctx {
    atomic_int calls;
    int magic;
} init_ctx;

static _Thread_local int tl_init_calls;
static _Thread_local int tl_magic;

static int init_ok(void *arg)
{
    init_ctx *x = arg;
    atomic_fetch_add(&x->calls, 1);
    tl_init_calls++;
    tl_magic = x->magic;
    return 0;
}

/* Returns what the initializer left in this thread: calls * 1e6 + magic. */
static void t_init_status(cf_call *c)
{
    size_t n;
    const void *a = cf_arg(c, &n);
    if (n == sizeof(gate *)) {
        gate *g;
        memcpy(&g, a, sizeof g);
        gate_pass(g);
    }
    cf_return_i64(c, (int64_t)tl_init_calls * 1000000 + tl_magic);
}

/* The initializer runs once at the start of each thread, with its
 * argument, before any task of that thread (InitializerMixin). */
static void test_initializer(void)
{
    enum { W = 3, N = 30 };
    init_ctx x = {.magic = 4242};
    atomic_init(&x.calls, 0);
    cf_executor *ex = cf_thread_pool(&(cf_thread_pool_opts){
        .max_workers = W, .initializer = init_ok, .initarg = &x});
    ASSERT(ex);
    ASSERT_EQ(atomic_load(&x.calls), 0); /* lazily: no thread yet */
    gate g = GATE_INIT;
    cf_future *fs[N];
    for (int i = 0; i < W; i++)
        fs[i] = submit_ptr(ex, t_init_status, &g);
    gate_wait_for(&g, W); /* every thread started */
    for (int i = W; i < N; i++)
        fs[i] = cf_submit(ex, t_init_status, NULL, 0);
    gate_open(&g);
    for (int i = 0; i < N; i++) {
        ASSERT(fs[i]);
        ASSERT_EQ(result_i64(fs[i]), 1000000 + 4242);
        cf_future_release(fs[i]);
    }
    cf_executor_free(ex);
    ASSERT_EQ(atomic_load(&x.calls), W);
    ASSERT_EQ(tl_init_calls, 0); /* never on the submitting thread */
}

typedef struct finit_ctx {
    gate g;
    atomic_int calls;
} finit_ctx;

static int init_fail(void *arg)
{
    finit_ctx *x = arg;
    atomic_fetch_add(&x->calls, 1);
    gate_pass(&x->g); /* fail only once the test has queued its tasks */
    return -7;
}

static atomic_int broken_ran;

static void t_must_not_run(cf_call *c)
{
    (void)c;
    atomic_fetch_add(&broken_ran, 1);
}

/* A failing initializer breaks the pool (FailingInitializerMixin): every
 * pending future ends with CF_EBROKEN, no task runs, and later submits
 * fail with CF_EBROKEN (BrokenThreadPool). */
static void check_failing_initializer(int workers)
{
    finit_ctx x = {.g = GATE_INIT};
    atomic_init(&x.calls, 0);
    atomic_store(&broken_ran, 0);
    cf_executor *ex = cf_thread_pool(&(cf_thread_pool_opts){
        .max_workers = workers, .initializer = init_fail, .initarg = &x});
    ASSERT(ex);
    enum { N = 5 };
    cf_future *fs[N];
    for (int i = 0; i < N; i++) {
        fs[i] = cf_submit(ex, t_must_not_run, NULL, 0);
        ASSERT(fs[i]);
    }
    gate_wait_for(&x.g, 1);
    gate_open(&x.g);
    for (int i = 0; i < N; i++) {
        ASSERT_ST(cf_result(fs[i], CF_FOREVER, NULL, NULL), CF_EBROKEN);
        cf_error e;
        ASSERT_OK(cf_exception(fs[i], 0, &e));
        ASSERT_ST(e.status, CF_EBROKEN);
        ASSERT(e.message != NULL);
        ASSERT(!cf_cancelled(fs[i]));
        cf_future_release(fs[i]);
    }
    /* Broken for good. */
    for (int i = 0; i < 3; i++) {
        ASSERT(cf_submit(ex, t_must_not_run, NULL, 0) == NULL);
        ASSERT_ST(cf_last_error(), CF_EBROKEN);
    }
    ASSERT(cf_submit_i64(ex, t_double_i64, 1) == NULL);
    ASSERT_ST(cf_last_error(), CF_EBROKEN);
    cf_executor_free(ex);
    ASSERT_EQ(atomic_load(&broken_ran), 0);
    ASSERT(atomic_load(&x.calls) >= 1);
    ASSERT(atomic_load(&x.calls) <= workers);
}

static void test_failing_initializer(void)
{
    check_failing_initializer(1);
    check_failing_initializer(2);
}

/* ------------------------------------------------------------------------ */
/* Bounded queue                                                             */
/* ------------------------------------------------------------------------ */

/* fail_when_full: a submit beyond max_queued waiting tasks fails at once
 * with CF_EFULL; once the queue drains, submits work again. */
static void test_queue_fail_when_full(void)
{
    cf_executor *ex = cf_thread_pool(&(cf_thread_pool_opts){
        .max_workers = 1, .max_queued = 2, .fail_when_full = true});
    ASSERT(ex);
    gate g = GATE_INIT;
    cf_future *a = submit_gated(ex, &g, 1);
    gate_wait_for(&g, 1); /* a runs: it does not count as queued */
    cf_future *b = submit_gated(ex, &g, 2);
    cf_future *c = submit_gated(ex, &g, 3);
    ASSERT(a && b && c);
    for (int i = 0; i < 3; i++) {
        ASSERT(submit_gated(ex, &g, 4) == NULL);
        ASSERT_ST(cf_last_error(), CF_EFULL);
    }
    ASSERT(submit_gated_ex(ex, &g, 4, CF_NOWAIT) == NULL);
    ASSERT_ST(cf_last_error(), CF_EFULL);
    gate_open(&g);
    ASSERT_EQ(result_i64(a), 1);
    ASSERT_EQ(result_i64(b), 2);
    ASSERT_EQ(result_i64(c), 3); /* c done: the queue is empty */
    cf_future *d = submit_gated(ex, NULL, 4);
    ASSERT(d);
    ASSERT_EQ(result_i64(d), 4);
    cf_future_release(a);
    cf_future_release(b);
    cf_future_release(c);
    cf_future_release(d);
    cf_executor_free(ex);
}

typedef struct submitter {
    cf_executor *ex;
    int64_t v;
    latch started;
    atomic_bool returned;
    cf_future *f;
    int err;
} submitter;

static void *submitter_main(void *arg)
{
    submitter *s = arg;
    latch_add(&s->started);
    s->f = submit_gated(s->ex, NULL, s->v);
    s->err = s->f ? CF_OK : cf_last_error();
    atomic_store(&s->returned, true);
    return NULL;
}

/* Without fail_when_full, CF_NOWAIT still fails with CF_EFULL, and a plain
 * submit to a full queue blocks until a worker takes a task from the queue
 * (not until everything is done). */
static void test_queue_blocks_when_full(void)
{
    cf_executor *ex = cf_thread_pool(
        &(cf_thread_pool_opts){.max_workers = 1, .max_queued = 2});
    ASSERT(ex);
    gate g1 = GATE_INIT, g2 = GATE_INIT;
    cf_future *a = submit_gated(ex, &g1, 1);
    gate_wait_for(&g1, 1);
    cf_future *b = submit_gated(ex, &g2, 2);
    cf_future *c = submit_gated(ex, &g2, 3);
    ASSERT(a && b && c);
    ASSERT(submit_gated_ex(ex, NULL, 9, CF_NOWAIT) == NULL);
    ASSERT_ST(cf_last_error(), CF_EFULL);

    submitter s = {.ex = ex, .v = 5, .started = LATCH_INIT};
    atomic_init(&s.returned, false);
    pthread_t t;
    ASSERT_EQ(pthread_create(&t, NULL, submitter_main, &s), 0);
    latch_wait(&s.started, 1);
    /* The queue is full and its only worker is stuck in a: the submit
     * cannot have gone through. */
    ASSERT(!atomic_load(&s.returned));
    ASSERT_EQ(cf_future_state(b), CF_PENDING);
    gate_open(&g1); /* a ends, the worker takes b: room for one */
    ASSERT_EQ(pthread_join(t, NULL), 0);
    ASSERT_OK(s.err);
    ASSERT(s.f);
    gate_wait_for(&g2, 1); /* b runs (and blocks); c and e still wait */
    ASSERT(cf_running(b));
    ASSERT_EQ(cf_future_state(c), CF_PENDING);
    ASSERT_EQ(cf_future_state(s.f), CF_PENDING);
    /* Full again (c, e): CF_NOWAIT fails once more. */
    ASSERT(submit_gated_ex(ex, NULL, 9, CF_NOWAIT) == NULL);
    ASSERT_ST(cf_last_error(), CF_EFULL);
    gate_open(&g2);
    ASSERT_EQ(result_i64(a), 1);
    ASSERT_EQ(result_i64(b), 2);
    ASSERT_EQ(result_i64(c), 3);
    ASSERT_EQ(result_i64(s.f), 5);
    cf_future_release(a);
    cf_future_release(b);
    cf_future_release(c);
    cf_future_release(s.f);
    cf_executor_free(ex);
}

/* Many submitters blocked on a full queue all get through, in the end,
 * and every task runs once. */
static void test_queue_many_blocked_submitters(void)
{
    enum { NT = 6 };
    cf_executor *ex = cf_thread_pool(
        &(cf_thread_pool_opts){.max_workers = 1, .max_queued = 1});
    ASSERT(ex);
    gate g = GATE_INIT;
    cf_future *a = submit_gated(ex, &g, 100);
    gate_wait_for(&g, 1);
    cf_future *b = submit_gated(ex, NULL, 101); /* the queue is full */
    ASSERT(a && b);
    submitter s[NT];
    pthread_t t[NT];
    for (int i = 0; i < NT; i++) {
        s[i] = (submitter){.ex = ex, .v = i, .started = LATCH_INIT};
        atomic_init(&s[i].returned, false);
        ASSERT_EQ(pthread_create(&t[i], NULL, submitter_main, &s[i]), 0);
    }
    for (int i = 0; i < NT; i++)
        latch_wait(&s[i].started, 1);
    for (int i = 0; i < NT; i++)
        ASSERT(!atomic_load(&s[i].returned));
    gate_open(&g);
    for (int i = 0; i < NT; i++) {
        ASSERT_EQ(pthread_join(t[i], NULL), 0);
        ASSERT_OK(s[i].err);
        ASSERT_EQ(result_i64(s[i].f), i);
        cf_future_release(s[i].f);
    }
    ASSERT_EQ(result_i64(a), 100);
    ASSERT_EQ(result_i64(b), 101);
    cf_future_release(a);
    cf_future_release(b);
    cf_executor_free(ex);
}

/* ------------------------------------------------------------------------ */
/* Done callbacks                                                            */
/* ------------------------------------------------------------------------ */

typedef struct cb_rec {
    latch ran;
    atomic_int next; /* order counter */
    int order[4];    /* order[k] = position at which callback k ran */
    pthread_t thread[4];
    bool was_done[4];
    int64_t value[4];
} cb_rec;

static void record(cb_rec *r, int k, cf_future *f)
{
    r->order[k] = atomic_fetch_add(&r->next, 1);
    r->thread[k] = pthread_self();
    r->was_done[k] = cf_done(f);
    int64_t v = -1;
    if (cf_result_i64(f, 0, &v) != CF_OK)
        v = -1;
    r->value[k] = v;
    latch_add(&r->ran);
}

static void cb0(cf_future *f, void *arg)
{
    record(arg, 0, f);
}
static void cb1(cf_future *f, void *arg)
{
    record(arg, 1, f);
}
static void cb2(cf_future *f, void *arg)
{
    record(arg, 2, f);
}
static void cb3(cf_future *f, void *arg)
{
    record(arg, 3, f);
}

static void t_self_gated_i64(cf_call *c)
{
    gate *g = arg_ptr(c);
    gate_pass(g);
    cf_return_i64(c, 77);
}

/* Callbacks added to a pending future run in the worker thread that
 * completes it, in registration order, with the future done and its result
 * readable; one added once it is done runs at once in the caller's
 * thread. */
static void test_callbacks_run_in_worker(void)
{
    cf_executor *ex = cf_thread_pool(&(cf_thread_pool_opts){.max_workers = 1});
    ASSERT(ex);
    gate g = GATE_INIT;
    /* Learn the worker's identity first (one thread only). */
    cf_future *who = cf_submit(ex, t_self, NULL, 0);
    pthread_t worker = result_thread(who);
    cf_future_release(who);

    cb_rec r = {.ran = LATCH_INIT};
    atomic_init(&r.next, 0);
    cf_future *f = submit_ptr(ex, t_self_gated_i64, &g);
    ASSERT(f);
    gate_wait_for(&g, 1); /* running: not done, the callbacks must wait */
    ASSERT_OK(cf_add_done_callback(f, cb0, &r));
    ASSERT_OK(cf_add_done_callback(f, cb1, &r));
    ASSERT_OK(cf_add_done_callback(f, cb2, &r));
    ASSERT_EQ(atomic_load(&r.next), 0);
    gate_open(&g);
    latch_wait(&r.ran, 3);
    for (int k = 0; k < 3; k++) {
        ASSERT_EQ(r.order[k], k);
        ASSERT(pthread_equal(r.thread[k], worker));
        ASSERT(r.was_done[k]);
        ASSERT_EQ(r.value[k], 77);
    }
    /* Already done: runs now, here. */
    ASSERT_OK(cf_add_done_callback(f, cb3, &r));
    ASSERT_EQ(r.ran.count, 4);
    ASSERT_EQ(r.order[3], 3);
    ASSERT(pthread_equal(r.thread[3], pthread_self()));
    ASSERT(r.was_done[3]);
    ASSERT_EQ(r.value[3], 77);
    ASSERT_ST(cf_add_done_callback(f, NULL, &r), CF_EINVAL);
    ASSERT_ST(cf_add_done_callback(NULL, cb0, &r), CF_EINVAL);
    cf_future_release(f);
    cf_executor_free(ex);
}

/* A callback on a pending future that gets cancelled runs in the thread
 * that cancels it, before cf_cancel returns. */
static void test_callback_on_cancel(void)
{
    cf_executor *ex = cf_thread_pool(&(cf_thread_pool_opts){.max_workers = 1});
    ASSERT(ex);
    gate g = GATE_INIT;
    cf_future *a = submit_gated(ex, &g, 1);
    gate_wait_for(&g, 1);
    cf_future *b = submit_gated(ex, &g, 2);
    cb_rec r = {.ran = LATCH_INIT};
    atomic_init(&r.next, 0);
    ASSERT_OK(cf_add_done_callback(b, cb0, &r));
    ASSERT(cf_cancel(b));
    ASSERT_EQ(r.ran.count, 1);
    ASSERT(pthread_equal(r.thread[0], pthread_self()));
    ASSERT(r.was_done[0]);
    ASSERT_EQ(r.value[0], -1); /* cancelled: no value */
    ASSERT(!cf_cancel(a));
    gate_open(&g);
    ASSERT_EQ(result_i64(a), 1);
    cf_future_release(a);
    cf_future_release(b);
    cf_executor_free(ex);
    ASSERT_EQ(r.ran.count, 1); /* ran exactly once */
}

/* A callback may submit new work to the same pool: a chain of 100 tasks,
 * each submitted by the done callback of the one before. */
enum { CHAIN = 100 };

typedef struct chain {
    cf_executor *ex;
    _Atomic(cf_future *) fs[CHAIN];
    atomic_int next;
    latch end;
} chain;

static void t_chain(cf_call *c)
{
    cf_return_i64(c, cf_arg_i64(c) * 3);
}

static void chain_cb(cf_future *f, void *arg)
{
    chain *ch = arg;
    int64_t v = -1;
    ASSERT_OK(cf_result_i64(f, 0, &v));
    int k = atomic_fetch_add(&ch->next, 1) + 1;
    ASSERT_EQ(v, (int64_t)(k - 1) * 3);
    if (k == CHAIN) {
        latch_add(&ch->end);
        return;
    }
    cf_future *n = cf_submit_i64(ch->ex, t_chain, k);
    ASSERT(n);
    atomic_store(&ch->fs[k], n);
    ASSERT_OK(cf_add_done_callback(n, chain_cb, ch));
}

static void test_callback_submits(void)
{
    for (int workers = 1; workers <= 2; workers++) {
        chain ch = {.end = LATCH_INIT};
        ch.ex = cf_thread_pool(&(cf_thread_pool_opts){.max_workers = workers});
        ASSERT(ch.ex);
        atomic_init(&ch.next, 0);
        for (int i = 0; i < CHAIN; i++)
            atomic_init(&ch.fs[i], NULL);
        cf_future *first = cf_submit_i64(ch.ex, t_chain, 0);
        ASSERT(first);
        atomic_store(&ch.fs[0], first);
        ASSERT_OK(cf_add_done_callback(first, chain_cb, &ch));
        latch_wait(&ch.end, 1);
        for (int i = 0; i < CHAIN; i++) {
            cf_future *f = atomic_load(&ch.fs[i]);
            ASSERT(f);
            ASSERT_EQ(result_i64(f), (int64_t)i * 3);
            cf_future_release(f);
        }
        cf_executor_free(ch.ex);
        ASSERT_EQ(atomic_load(&ch.next), CHAIN);
    }
}

/* ------------------------------------------------------------------------ */
/* Cooperative cancellation                                                  */
/* ------------------------------------------------------------------------ */

typedef struct coop {
    latch started;
    bool raise;
} coop;

static void t_coop(cf_call *c)
{
    coop *x = arg_ptr(c);
    latch_add(&x->started);
    while (!cf_cancel_requested(c))
        sched_yield();
    if (x->raise)
        cf_raise(c, 99, "stopped on request");
    else
        cf_return_i64(c, 7);
}

static void t_requested(cf_call *c)
{
    cf_return_i64(c, cf_cancel_requested(c));
}

/* A running task loops until cf_cancel_requested() turns true after
 * cf_request_cancel() from another thread (which returns false: only
 * flagged), then raises or returns as it likes.  A pending one is simply
 * cancelled (true); a finished one is too late (false). */
static void test_cooperative_cancel(void)
{
    cf_executor *ex = cf_thread_pool(&(cf_thread_pool_opts){.max_workers = 1});
    ASSERT(ex);
    for (int mode = 0; mode < 2; mode++) {
        coop x = {.started = LATCH_INIT, .raise = mode == 1};
        cf_future *f = submit_ptr(ex, t_coop, &x);
        ASSERT(f);
        latch_wait(&x.started, 1);
        ASSERT(cf_running(f));
        cf_future *queued = cf_submit(ex, t_must_not_run, NULL, 0);
        ASSERT(queued);
        ASSERT(cf_request_cancel(queued)); /* pending: cancelled outright */
        ASSERT(cf_cancelled(queued));
        ASSERT_ST(cf_result(f, 0, NULL, NULL), CF_ETIMEDOUT);
        ASSERT(!cf_request_cancel(f)); /* running: only flagged */
        ASSERT(!cf_cancelled(f));
        if (mode == 1) {
            ASSERT_ST(cf_result(f, CF_FOREVER, NULL, NULL), CF_ETASK);
            cf_error e;
            ASSERT_OK(cf_exception(f, 0, &e));
            ASSERT_EQ(e.code, 99);
            ASSERT_STR_EQ(e.message, "stopped on request");
        } else {
            ASSERT_EQ(result_i64(f), 7);
        }
        ASSERT(!cf_cancelled(f));
        ASSERT(!cf_request_cancel(f)); /* finished: too late */
        ASSERT_EQ(cf_future_state(f), CF_FINISHED);
        cf_future_release(f);
        cf_future_release(queued);
    }
    /* Nobody asked: the flag is false. */
    cf_future *f = cf_submit(ex, t_requested, NULL, 0);
    ASSERT_EQ(result_i64(f), 0);
    cf_future_release(f);
    cf_executor_free(ex);
    ASSERT(!cf_request_cancel(NULL));
}

/* No busy-waiting: a pool whose workers have nothing to do, and a thread
 * blocked in cf_result, use no CPU once past their brief spin (about
 * 20 us).  Measured as CPU time over 300 ms of wall time; a busy-waiting
 * pool would burn about 600 ms there. */
static void t_block_on_gate(cf_call *c)
{
    gate_pass((gate *)(uintptr_t)cf_arg_i64(c));
}

static void t_quick(cf_call *c)
{
    cf_return_i64(c, cf_arg_i64(c));
}

static double cpu_seconds(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static void test_idle_uses_no_cpu(void)
{
    cf_executor *ex = cf_thread_pool(&(cf_thread_pool_opts){.max_workers = 2});
    gate g = GATE_INIT;
    cf_future *f = cf_submit_i64(ex, t_block_on_gate, (int64_t)(uintptr_t)&g);
    gate_wait_for(&g, 1);
    cf_future *idle = cf_submit_i64(ex, t_quick, 1); /* starts the 2nd worker */
    ASSERT_OK(cf_result(idle, LONG_WAIT, NULL, NULL));
    double before = cpu_seconds();
    /* One worker blocked in a task, one idle, main blocked in cf_result. */
    ASSERT_ST(cf_result(f, 0.3, NULL, NULL), CF_ETIMEDOUT);
    double used = cpu_seconds() - before;
    gate_open(&g);
    ASSERT_OK(cf_result(f, LONG_WAIT, NULL, NULL));
    cf_future_release(f);
    cf_future_release(idle);
    cf_executor_free(ex);
    if (used > 0.1)
        fprintf(stderr, "idle pool used %.3f s of CPU in 0.3 s\n", used);
    ASSERT(used < 0.1);
}

/* The injection lane (thread_pool.c): external submits push without the
 * pool lock once the pool is fully started.  Three threads submit to a
 * 1-thread pool at once, while its thread is held at a gate: each
 * submitter's tasks still start in that submitter's order, and none is
 * lost or run twice. */
enum { LANE_SUBMITTERS = 3, LANE_PER = 3000 };

static cf_executor *pool(int n)
{
    cf_executor *ex = cf_thread_pool(&(cf_thread_pool_opts){.max_workers = n});
    ASSERT(ex);
    return ex;
}
static _Atomic int lane_pos;
static int lane_seen[LANE_SUBMITTERS * LANE_PER];

static void t_lane_record(cf_call *c)
{
    lane_seen[atomic_fetch_add(&lane_pos, 1)] = (int)cf_arg_i64(c);
}

typedef struct lane_submitter {
    cf_executor *ex;
    int id;
    latch *ready;
    cf_future *fs[LANE_PER];
} lane_submitter;

static void *lane_submit_main(void *arg)
{
    lane_submitter *s = arg;
    latch_add(s->ready);
    for (int i = 0; i < LANE_PER; i++) {
        s->fs[i] = cf_submit_i64(s->ex, t_lane_record, s->id * LANE_PER + i);
        ASSERT(s->fs[i]);
    }
    return NULL;
}

static void test_lane_per_submitter_order(void)
{
    cf_executor *ex = pool(1);
    atomic_store(&lane_pos, 0);
    gate g = GATE_INIT;
    cf_future *hold = submit_gated(ex, &g, 0);
    ASSERT(hold);
    gate_wait_for(&g, 1); /* the pool's one thread is started, and held */
    latch ready = LATCH_INIT;
    lane_submitter *ss = calloc(LANE_SUBMITTERS, sizeof *ss);
    ASSERT(ss);
    pthread_t t[LANE_SUBMITTERS];
    for (int k = 0; k < LANE_SUBMITTERS; k++) {
        ss[k] = (lane_submitter){.ex = ex, .id = k, .ready = &ready};
        ASSERT_EQ(pthread_create(&t[k], NULL, lane_submit_main, &ss[k]), 0);
    }
    latch_wait(&ready, LANE_SUBMITTERS);
    gate_open(&g); /* runs while they submit */
    for (int k = 0; k < LANE_SUBMITTERS; k++)
        ASSERT_EQ(pthread_join(t[k], NULL), 0);
    ASSERT_EQ(result_i64(hold), 0);
    cf_future_release(hold);
    for (int k = 0; k < LANE_SUBMITTERS; k++)
        for (int i = 0; i < LANE_PER; i++) {
            ASSERT_OK(cf_result(ss[k].fs[i], CF_FOREVER, NULL, NULL));
            cf_future_release(ss[k].fs[i]);
        }
    ASSERT_EQ(atomic_load(&lane_pos), LANE_SUBMITTERS * LANE_PER);
    int next[LANE_SUBMITTERS] = {0};
    for (int j = 0; j < LANE_SUBMITTERS * LANE_PER; j++) {
        int k = lane_seen[j] / LANE_PER, i = lane_seen[j] % LANE_PER;
        ASSERT_EQ(i, next[k]); /* this submitter's next one */
        next[k]++;
    }
    free(ss);
    cf_executor_free(ex);
}

/* Shutdown (with and without cancel_futures) and the free race four
 * threads that submit through the lane: a submit either fails with
 * CF_ESHUTDOWN or gives a future that ends, exactly once; nothing is left
 * in the lane after the pool stopped taking work. */
typedef struct lane_racer {
    cf_executor *ex;
    latch *ready;
    cf_future *fs[3000];
    int n;
} lane_racer;

static void t_lane_inc(cf_call *c)
{
    cf_return_i64(c, cf_arg_i64(c) + 1);
}

static void *lane_race_main(void *arg)
{
    lane_racer *r = arg;
    latch_add(r->ready);
    for (int i = 0; i < 3000; i++) {
        cf_future *f = cf_submit_i64(r->ex, t_lane_inc, i);
        if (f == NULL) {
            ASSERT_ST(cf_last_error(), CF_ESHUTDOWN);
            break;
        }
        r->fs[r->n++] = f;
    }
    return NULL;
}

static void test_lane_races_shutdown(void)
{
    for (int round = 0; round < 24; round++) {
        cf_executor *ex = pool(2);
        /* Start both threads, so that the submits take the lane. */
        cf_future *w[2] = {cf_submit_i64(ex, t_lane_inc, 0),
                           cf_submit_i64(ex, t_lane_inc, 0)};
        ASSERT(w[0] && w[1]);
        for (int k = 0; k < 2; k++) {
            ASSERT_OK(cf_result(w[k], LONG_WAIT, NULL, NULL));
            cf_future_release(w[k]);
        }
        latch ready = LATCH_INIT;
        lane_racer *rs = calloc(4, sizeof *rs);
        ASSERT(rs);
        pthread_t t[4];
        for (int k = 0; k < 4; k++) {
            rs[k] = (lane_racer){.ex = ex, .ready = &ready};
            ASSERT_EQ(pthread_create(&t[k], NULL, lane_race_main, &rs[k]), 0);
        }
        latch_wait(&ready, 4);
        bool cancel = round % 3 == 1;
        ASSERT_OK(cf_shutdown(ex, round % 2 == 0, cancel));
        for (int k = 0; k < 4; k++)
            ASSERT_EQ(pthread_join(t[k], NULL), 0);
        cf_executor_free(ex);
        for (int k = 0; k < 4; k++) {
            ASSERT_OK(cf_wait(rs[k].fs, (size_t)rs[k].n, LONG_WAIT,
                              CF_ALL_COMPLETED, NULL, NULL, NULL, NULL));
            for (int i = 0; i < rs[k].n; i++) {
                ASSERT(cf_done(rs[k].fs[i]));
                if (!cancel)
                    ASSERT(!cf_cancelled(rs[k].fs[i]));
                if (!cf_cancelled(rs[k].fs[i])) {
                    int64_t v;
                    ASSERT_OK(cf_result_i64(rs[k].fs[i], 0, &v));
                    ASSERT_EQ(v, i + 1);
                }
                cf_future_release(rs[k].fs[i]);
            }
        }
        free(rs);
    }
}

TEST_MAIN(T(test_idle_uses_no_cpu), T(test_lane_per_submitter_order),
          T(test_lane_races_shutdown), T(test_submit_i64_f64),
          T(test_submit_str), T(test_submit_bytes_args),
          T(test_submit_bytes_results), T(test_submit_borrow_arg),
          T(test_task_raises), T(test_task_returns_nothing),
          T(test_submit_bad_args), T(test_default_max_workers),
          T(test_max_workers_negative), T(test_thread_names),
          T(test_thread_names_truncated), T(test_saturation),
          T(test_cancel_pending_not_running), T(test_release_before_done),
          T(test_initializer), T(test_failing_initializer),
          T(test_queue_fail_when_full), T(test_queue_blocks_when_full),
          T(test_queue_many_blocked_submitters),
          T(test_callbacks_run_in_worker), T(test_callback_on_cancel),
          T(test_callback_submits), T(test_cooperative_cancel),
          /* Last: it fails on the library as of this writing (a worker
           * that just completed a future is not yet counted idle). */
          T(test_idle_thread_reuse))

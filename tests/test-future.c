/*
 * test-future.c -- standalone futures (the promise side) and their states.
 *
 * Ports the behaviours that CPython's Lib/test/test_concurrent_futures/
 * test_future.py checks (FutureTests: cancel / cancelled / running / done
 * in every state, result and exception with timeouts, set_result /
 * set_exception twice, done callbacks, repr, waking blocked waiters from
 * other threads) to the C API, plus the C-only parts: result sizes,
 * reference counting, status names, NULL arguments and bad timeouts.
 *
 * Nothing is sequenced with sleeps: threads meet on barriers, gates or
 * flags.  Where a test wants a thread to be *blocked* in a call before the
 * future completes, wait_until_blocked() watches the thread's state in
 * /proc (bounded); if it gives up, the test is still correct, it only
 * covers the "already done" path instead of the "woken" one.
 */
#include "test.h"

#include <math.h>
#include <sched.h>
#include <stdatomic.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------------------ */
/* Helpers                                                                   */
/* ------------------------------------------------------------------------ */

static bool contains(const char *s, const char *sub)
{
    return strstr(s, sub) != NULL;
}

/* ------------------------------------------------------------------------ */
/* States                                                                    */
/* ------------------------------------------------------------------------ */

/* Future() starts PENDING: not cancelled, not running, not done, and
 * result()/exception() with timeout=0 raise TimeoutError. */
static void test_new_future_is_pending(void)
{
    cf_future *f = cf_future_new();
    ASSERT(f != NULL);
    ASSERT_EQ(cf_future_state(f), CF_PENDING);
    ASSERT(!cf_cancelled(f));
    ASSERT(!cf_running(f));
    ASSERT(!cf_done(f));
    const void *data = (const void *)&data;
    size_t len = 12345;
    ASSERT_ST(cf_result(f, 0, &data, &len), CF_ETIMEDOUT);
    ASSERT(data == (const void *)&data && len == 12345); /* untouched */
    cf_error e = {.status = 99, .code = 99, .message = "untouched"};
    ASSERT_ST(cf_exception(f, 0, &e), CF_ETIMEDOUT);
    ASSERT_EQ(e.status, 99);
    ASSERT_STR_EQ(e.message, "untouched");
    ASSERT_EQ(cf_future_state(f), CF_PENDING); /* the timeout changed nothing */
    cf_future_release(f);
}

/* test_cancelled / test_running / test_done: the three predicates in every
 * state. */
static void test_predicates_in_each_state(void)
{
    static const struct {
        enum fixture k;
        cf_state state;
        bool cancelled, running, done;
    } rows[] = {
        {FX_PENDING, CF_PENDING, false, false, false},
        {FX_RUNNING, CF_RUNNING, false, true, false},
        {FX_CANCELLED, CF_CANCELLED, true, false, true},
        {FX_RAISED, CF_FINISHED, false, false, true},
        {FX_FINISHED, CF_FINISHED, false, false, true},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        cf_future *f = make(rows[i].k);
        ASSERT_EQ(cf_future_state(f), rows[i].state);
        ASSERT_EQ(cf_cancelled(f), rows[i].cancelled);
        ASSERT_EQ(cf_running(f), rows[i].running);
        ASSERT_EQ(cf_done(f), rows[i].done);
        cf_future_release(f);
    }
}

/* test_cancel: pending -> True (now cancelled), cancelled -> True again,
 * running -> False, finished (with result or exception) -> False; a failed
 * cancel changes nothing. */
static void test_cancel_rules(void)
{
    cf_future *f = make(FX_PENDING);
    ASSERT(cf_cancel(f));
    ASSERT_EQ(cf_future_state(f), CF_CANCELLED);
    ASSERT(cf_cancelled(f) && cf_done(f) && !cf_running(f));
    ASSERT(cf_cancel(f)); /* already cancelled: still true */
    ASSERT(cf_cancel(f));
    ASSERT_EQ(cf_future_state(f), CF_CANCELLED);
    cf_future_release(f);

    f = make(FX_RUNNING);
    ASSERT(!cf_cancel(f));
    ASSERT_EQ(cf_future_state(f), CF_RUNNING);
    ASSERT(cf_running(f) && !cf_cancelled(f) && !cf_done(f));
    ASSERT_OK(cf_set_result_i64(f, 1)); /* it can still finish */
    ASSERT(!cf_cancel(f));
    cf_future_release(f);

    f = make(FX_RAISED);
    ASSERT(!cf_cancel(f));
    ASSERT_EQ(cf_future_state(f), CF_FINISHED);
    ASSERT_ST(cf_result(f, 0, NULL, NULL), CF_ETASK);
    cf_future_release(f);

    f = make(FX_FINISHED);
    ASSERT(!cf_cancel(f));
    ASSERT_EQ(cf_future_state(f), CF_FINISHED);
    int64_t v = 0;
    ASSERT_OK(cf_result_i64(f, 0, &v));
    ASSERT_EQ(v, 42);
    cf_future_release(f);
}

/* Future.set_running_or_notify_cancel: True (now RUNNING) if pending,
 * False if cancelled (CF_ECANCELLED), RuntimeError if running or finished
 * (CF_ESTATE). */
static void test_set_running_or_notify_cancel(void)
{
    cf_future *f = make(FX_PENDING);
    ASSERT_OK(cf_set_running_or_notify_cancel(f));
    ASSERT_EQ(cf_future_state(f), CF_RUNNING);
    ASSERT(cf_running(f) && !cf_done(f));
    ASSERT_ST(cf_set_running_or_notify_cancel(f), CF_ESTATE);
    ASSERT_EQ(cf_future_state(f), CF_RUNNING);
    /* set_running does not complete: a waiter still times out. */
    ASSERT_ST(cf_result(f, 0.001, NULL, NULL), CF_ETIMEDOUT);
    ASSERT_OK(cf_set_result_i64(f, 3));
    ASSERT_ST(cf_set_running_or_notify_cancel(f), CF_ESTATE);
    ASSERT_EQ(cf_future_state(f), CF_FINISHED);
    cf_future_release(f);

    f = make(FX_CANCELLED);
    ASSERT_ST(cf_set_running_or_notify_cancel(f), CF_ECANCELLED);
    ASSERT_ST(cf_set_running_or_notify_cancel(f), CF_ECANCELLED);
    ASSERT_EQ(cf_future_state(f), CF_CANCELLED);
    cf_future_release(f);

    f = make(FX_RAISED);
    ASSERT_ST(cf_set_running_or_notify_cancel(f), CF_ESTATE);
    ASSERT_EQ(cf_future_state(f), CF_FINISHED);
    cf_future_release(f);

    f = make(FX_FINISHED);
    ASSERT_ST(cf_set_running_or_notify_cancel(f), CF_ESTATE);
    cf_future_release(f);
}

/* test_result_with_timeout: pending/running -> TimeoutError, cancelled ->
 * CancelledError, exception -> that exception, success -> the result. */
static void test_result_with_timeout(void)
{
    const double timeouts[] = {0, 0.01};
    for (size_t t = 0; t < 2; t++) {
        double to = timeouts[t];
        cf_future *f = make(FX_PENDING);
        ASSERT_ST(cf_result(f, to, NULL, NULL), CF_ETIMEDOUT);
        ASSERT_EQ(cf_future_state(f), CF_PENDING);
        cf_future_release(f);

        f = make(FX_RUNNING);
        ASSERT_ST(cf_result(f, to, NULL, NULL), CF_ETIMEDOUT);
        ASSERT_EQ(cf_future_state(f), CF_RUNNING);
        cf_future_release(f);

        f = make(FX_CANCELLED);
        ASSERT_ST(cf_result(f, to, NULL, NULL), CF_ECANCELLED);
        int64_t v;
        ASSERT_ST(cf_result_i64(f, to, &v), CF_ECANCELLED);
        cf_future_release(f);

        f = make(FX_RAISED);
        ASSERT_ST(cf_result(f, to, NULL, NULL), CF_ETASK);
        ASSERT_ST(cf_result_i64(f, to, &v), CF_ETASK);
        cf_future_release(f);

        f = make(FX_FINISHED);
        v = 0;
        ASSERT_OK(cf_result_i64(f, to, &v));
        ASSERT_EQ(v, 42);
        ASSERT_OK(cf_result_i64(f, CF_FOREVER, &v)); /* done: returns at once */
        ASSERT_EQ(v, 42);
        cf_future_release(f);
    }
}

/* ------------------------------------------------------------------------ */
/* Completing: set_result / set_exception                                    */
/* ------------------------------------------------------------------------ */

/* set_result with the typed helpers round-trips through the typed reads;
 * a typed read of a result of another size is CF_EINVAL. */
static void test_set_result_typed(void)
{
    const int64_t ints[] = {0, 42, -1, INT64_MIN, INT64_MAX};
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
        cf_future *f = cf_future_new();
        ASSERT_OK(cf_set_result_i64(f, ints[i]));
        int64_t v = 0;
        ASSERT_OK(cf_result_i64(f, 0, &v));
        ASSERT(v == ints[i]);
        const void *data;
        size_t len;
        ASSERT_OK(cf_result(f, 0, &data, &len));
        ASSERT_EQ(len, 8);
        ASSERT(memcmp(data, &ints[i], 8) == 0);
        cf_future_release(f);
    }

    const double dbls[] = {0.0, -0.0, 1.5, -1e300, INFINITY, -INFINITY};
    for (size_t i = 0; i < sizeof dbls / sizeof dbls[0]; i++) {
        cf_future *f = cf_future_new();
        ASSERT_OK(cf_set_result_f64(f, dbls[i]));
        double x = 123;
        ASSERT_OK(cf_result_f64(f, 0, &x));
        ASSERT(memcmp(&x, &dbls[i], sizeof x) == 0); /* bit-exact, -0.0 too */
        cf_future_release(f);
    }
    cf_future *f = cf_future_new();
    ASSERT_OK(cf_set_result_f64(f, NAN));
    double x = 0;
    ASSERT_OK(cf_result_f64(f, 0, &x));
    ASSERT(isnan(x));
    cf_future_release(f);

    const char *strs[] = {"", "hello",
                          "a somewhat longer string, past 16 bytes"};
    for (size_t i = 0; i < 3; i++) {
        f = cf_future_new();
        ASSERT_OK(cf_set_result_str(f, strs[i]));
        const char *s = NULL;
        ASSERT_OK(cf_result_str(f, 0, &s));
        ASSERT_STR_EQ(s, strs[i]);
        ASSERT(s != strs[i]); /* a copy, owned by the future */
        size_t len;
        ASSERT_OK(cf_result(f, 0, NULL, &len));
        ASSERT_EQ(len, strlen(strs[i]) + 1);
        cf_future_release(f);
    }

    /* Wrong sizes / not NUL-terminated: CF_EINVAL. */
    f = cf_future_new();
    ASSERT_OK(cf_set_result(f, "abc", 3)); /* 3 bytes, no NUL */
    int64_t v;
    ASSERT_ST(cf_result_i64(f, 0, &v), CF_EINVAL);
    ASSERT_ST(cf_result_f64(f, 0, &x), CF_EINVAL);
    const char *s;
    ASSERT_ST(cf_result_str(f, 0, &s), CF_EINVAL);
    ASSERT_OK(cf_result(f, 0, NULL, NULL)); /* the raw read still works */
    cf_future_release(f);

    f = cf_future_new();
    ASSERT_OK(cf_set_result(f, NULL, 0)); /* Python's set_result(None) */
    ASSERT_ST(cf_result_str(f, 0, &s), CF_EINVAL);
    ASSERT_ST(cf_result_i64(f, 0, &v), CF_EINVAL);
    cf_future_release(f);

    f = cf_future_new();
    ASSERT_OK(cf_set_result_str(f, "0123456789abcdef0123")); /* 21 bytes */
    ASSERT_ST(cf_result_i64(f, 0, &v), CF_EINVAL);
    cf_future_release(f);
}

/* Result bytes of many sizes round-trip intact, around the 16-byte inline
 * limit and up to 1 MiB; a 0-byte result gives len 0 and non-NULL data. */
static void test_result_sizes(void)
{
    const size_t sizes[] = {0, 1, 15, 16, 17, 100, 4096, 1u << 20};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        size_t n = sizes[i];
        unsigned char *buf = malloc(n + 1);
        ASSERT(buf != NULL);
        for (size_t j = 0; j < n; j++)
            buf[j] = (unsigned char)(j * 131 + n);
        cf_future *f = cf_future_new();
        ASSERT_OK(cf_set_result(f, buf, n));
        memset(buf, 0xEE, n); /* the future has its own copy */
        for (size_t j = 0; j < n; j++)
            buf[j] = (unsigned char)(j * 131 + n);
        const void *data = NULL;
        size_t len = 999;
        ASSERT_OK(cf_result(f, 0, &data, &len));
        ASSERT_EQ(len, n);
        ASSERT(data != NULL);
        ASSERT(n == 0 || memcmp(data, buf, n) == 0);
        /* Each out-pointer may be NULL. */
        ASSERT_OK(cf_result(f, 0, NULL, &len));
        ASSERT_EQ(len, n);
        const void *d2 = NULL;
        ASSERT_OK(cf_result(f, CF_FOREVER, &d2, NULL));
        ASSERT(d2 == data); /* stable while we hold our reference */
        cf_future_release(f);
        free(buf);
    }
    /* A NULL buffer of length 0 (set_result(None)). */
    cf_future *f = cf_future_new();
    ASSERT_OK(cf_set_result(f, NULL, 0));
    const void *data = NULL;
    size_t len = 7;
    ASSERT_OK(cf_result(f, 0, &data, &len));
    ASSERT(data != NULL);
    ASSERT_EQ(len, 0);
    cf_future_release(f);
}

/* test_multiple_set_result: a second set_result raises InvalidStateError
 * (CF_ESTATE) and leaves the first result in place; so do every other
 * completion call and set_running_or_notify_cancel. */
static void test_multiple_set_result(void)
{
    cf_future *f = cf_future_new();
    ASSERT_OK(cf_set_result_i64(f, 1));
    ASSERT_ST(cf_set_result_i64(f, 2), CF_ESTATE);
    ASSERT_ST(cf_set_result(f, "xyz", 3), CF_ESTATE);
    ASSERT_ST(cf_set_result_f64(f, 2.0), CF_ESTATE);
    ASSERT_ST(cf_set_result_str(f, "two"), CF_ESTATE);
    ASSERT_ST(cf_set_exception(f, 2, "two"), CF_ESTATE);
    ASSERT_ST(cf_set_running_or_notify_cancel(f), CF_ESTATE);
    ASSERT(cf_done(f));
    int64_t v = 0;
    ASSERT_OK(cf_result_i64(f, 0, &v));
    ASSERT_EQ(v, 1);
    cf_error e;
    ASSERT_OK(cf_exception(f, 0, &e));
    ASSERT_ST(e.status, CF_OK);
    cf_future_release(f);
}

/* test_multiple_set_exception: the same with set_exception first; the
 * first error stays. */
static void test_multiple_set_exception(void)
{
    cf_future *f = cf_future_new();
    ASSERT_OK(cf_set_exception(f, 1, "first %s", "error"));
    ASSERT_ST(cf_set_exception(f, 2, "second"), CF_ESTATE);
    ASSERT_ST(cf_set_result_i64(f, 2), CF_ESTATE);
    ASSERT_ST(cf_set_result_str(f, "x"), CF_ESTATE);
    ASSERT(cf_done(f));
    cf_error e;
    ASSERT_OK(cf_exception(f, 0, &e));
    ASSERT_ST(e.status, CF_ETASK);
    ASSERT_EQ(e.code, 1);
    ASSERT_STR_EQ(e.message, "first error");
    ASSERT_ST(cf_result(f, 0, NULL, NULL), CF_ETASK);
    cf_future_release(f);
}

/* set_result / set_exception on a cancelled future raise InvalidStateError;
 * the future stays cancelled. */
static void test_set_on_cancelled(void)
{
    cf_future *f = make(FX_CANCELLED);
    ASSERT_ST(cf_set_result(f, "a", 1), CF_ESTATE);
    ASSERT_ST(cf_set_result_i64(f, 1), CF_ESTATE);
    ASSERT_ST(cf_set_result_f64(f, 1.0), CF_ESTATE);
    ASSERT_ST(cf_set_result_str(f, "a"), CF_ESTATE);
    ASSERT_ST(cf_set_exception(f, 1, "x"), CF_ESTATE);
    ASSERT_EQ(cf_future_state(f), CF_CANCELLED);
    ASSERT_ST(cf_result(f, 0, NULL, NULL), CF_ECANCELLED);
    cf_future_release(f);
}

/* ------------------------------------------------------------------------ */
/* exception()                                                               */
/* ------------------------------------------------------------------------ */

static void raise_task(cf_call *c)
{
    cf_raise(c, (int)cf_arg_i64(c), "bad input %d", 99);
}

/* test_exception_with_timeout / test_exception_with_success: exception()
 * is None (status CF_OK) after a result, the error with its code and
 * message after set_exception, CancelledError if cancelled, TimeoutError
 * while pending or running. */
static void test_exception(void)
{
    cf_error e;
    cf_future *f = make(FX_FINISHED);
    memset(&e, 0x5A, sizeof e);
    ASSERT_OK(cf_exception(f, 0, &e));
    ASSERT_ST(e.status, CF_OK);
    ASSERT_EQ(e.code, 0);
    ASSERT(e.message != NULL);
    ASSERT_STR_EQ(e.message, "");
    cf_future_release(f);

    f = cf_future_new();
    ASSERT_OK(cf_set_exception(f, 7, "boom %d/%s", 3, "x"));
    ASSERT_OK(cf_exception(f, 0, &e));
    ASSERT_ST(e.status, CF_ETASK);
    ASSERT_EQ(e.code, 7);
    ASSERT_STR_EQ(e.message, "boom 3/x");
    ASSERT_OK(cf_exception(f, CF_FOREVER, &e)); /* again: same answer */
    ASSERT_EQ(e.code, 7);
    ASSERT_ST(cf_result(f, 0, NULL, NULL), CF_ETASK);
    cf_future_release(f);

    /* A NULL format: the message is "", never NULL.  Negative codes too. */
    f = cf_future_new();
    ASSERT_OK(cf_set_exception(f, -12345, NULL));
    ASSERT_OK(cf_exception(f, 0, &e));
    ASSERT_ST(e.status, CF_ETASK);
    ASSERT_EQ(e.code, -12345);
    ASSERT(e.message != NULL);
    ASSERT_STR_EQ(e.message, "");
    cf_future_release(f);

    /* A long message arrives intact. */
    char big[5000];
    for (size_t i = 0; i < sizeof big - 1; i++)
        big[i] = (char)('a' + i % 26);
    big[sizeof big - 1] = '\0';
    f = cf_future_new();
    ASSERT_OK(cf_set_exception(f, 1, "%s", big));
    ASSERT_OK(cf_exception(f, 0, &e));
    ASSERT_STR_EQ(e.message, big);
    cf_future_release(f);

    /* Cancelled: CF_ECANCELLED, *err untouched. */
    f = make(FX_CANCELLED);
    e = (cf_error){.status = 99, .code = 98, .message = "keep"};
    ASSERT_ST(cf_exception(f, 0, &e), CF_ECANCELLED);
    ASSERT_EQ(e.status, 99);
    ASSERT_EQ(e.code, 98);
    ASSERT_STR_EQ(e.message, "keep");
    cf_future_release(f);

    /* Pending and running: CF_ETIMEDOUT, *err untouched. */
    for (int k = 0; k < 2; k++) {
        f = make(k == 0 ? FX_PENDING : FX_RUNNING);
        ASSERT_ST(cf_exception(f, 0, &e), CF_ETIMEDOUT);
        ASSERT_ST(cf_exception(f, 0.005, &e), CF_ETIMEDOUT);
        ASSERT_EQ(e.status, 99);
        ASSERT_STR_EQ(e.message, "keep");
        cf_future_release(f);
    }

    /* The same through a task that raises on a thread pool. */
    cf_executor *ex = cf_thread_pool(&(cf_thread_pool_opts){.max_workers = 1});
    ASSERT(ex != NULL);
    f = cf_submit_i64(ex, raise_task, 5);
    ASSERT(f != NULL);
    ASSERT_OK(cf_exception(f, LONG_WAIT, &e));
    ASSERT_ST(e.status, CF_ETASK);
    ASSERT_EQ(e.code, 5);
    ASSERT_STR_EQ(e.message, "bad input 99");
    ASSERT_ST(cf_result(f, 0, NULL, NULL), CF_ETASK);
    cf_future_release(f);
    cf_executor_free(ex);
}

/* ------------------------------------------------------------------------ */
/* Done callbacks                                                            */
/* ------------------------------------------------------------------------ */

typedef struct cb_log {
    pthread_mutex_t m;
    int n;
    int ids[64];
    pthread_t threads[64];
    cf_future *futures[64];
    bool cancelled[64];
    int statuses[64];
    int64_t values[64];
} cb_log;

/* clang-format off */
#define CB_LOG_INIT {.m = PTHREAD_MUTEX_INITIALIZER}
/* clang-format on */

typedef struct cb_arg {
    cb_log *log;
    int id;
} cb_arg;

/* Records who ran, where, and what the future looked like. */
static void record_cb(cf_future *f, void *arg)
{
    cb_arg *a = arg;
    int64_t v = -1;
    int st = cf_result_i64(f, 0, &v); /* done: must not block */
    pthread_mutex_lock(&a->log->m);
    int i = a->log->n++;
    ASSERT(i < 64);
    a->log->ids[i] = a->id;
    a->log->threads[i] = pthread_self();
    a->log->futures[i] = f;
    a->log->cancelled[i] = cf_cancelled(f);
    a->log->statuses[i] = st;
    a->log->values[i] = v;
    pthread_mutex_unlock(&a->log->m);
}

static int log_count(cb_log *log)
{
    pthread_mutex_lock(&log->m);
    int n = log->n;
    pthread_mutex_unlock(&log->m);
    return n;
}

/* test_done_callback_with_result: the callback runs once, when the result
 * is set, and sees the result. */
static void test_done_callback_with_result(void)
{
    cb_log log = CB_LOG_INIT;
    cb_arg a = {&log, 1};
    cf_future *f = cf_future_new();
    ASSERT_OK(cf_add_done_callback(f, record_cb, &a));
    ASSERT_EQ(log_count(&log), 0); /* not yet */
    ASSERT_OK(cf_set_result_i64(f, 5));
    ASSERT_EQ(log.n, 1); /* ran during set_result, in this thread */
    ASSERT(log.futures[0] == f);
    ASSERT(pthread_equal(log.threads[0], pthread_self()));
    ASSERT_ST(log.statuses[0], CF_OK);
    ASSERT_EQ(log.values[0], 5);
    ASSERT(!log.cancelled[0]);
    cf_future_release(f);
    ASSERT_EQ(log.n, 1); /* and only once */
}

/* test_done_callback_with_exception: the callback sees the exception. */
static void test_done_callback_with_exception(void)
{
    cb_log log = CB_LOG_INIT;
    cb_arg a = {&log, 1};
    cf_future *f = cf_future_new();
    ASSERT_OK(cf_add_done_callback(f, record_cb, &a));
    ASSERT_OK(cf_set_exception(f, 3, "test"));
    ASSERT_EQ(log.n, 1);
    ASSERT_ST(log.statuses[0], CF_ETASK);
    cf_future_release(f);
}

/* test_done_callback_with_cancel: cancel() runs the callback (in the
 * cancelling thread), which sees cancelled() true. */
static void test_done_callback_with_cancel(void)
{
    cb_log log = CB_LOG_INIT;
    cb_arg a = {&log, 1};
    cf_future *f = cf_future_new();
    ASSERT_OK(cf_add_done_callback(f, record_cb, &a));
    ASSERT(cf_cancel(f));
    ASSERT_EQ(log.n, 1);
    ASSERT(log.cancelled[0]);
    ASSERT_ST(log.statuses[0], CF_ECANCELLED);
    ASSERT(pthread_equal(log.threads[0], pthread_self()));
    ASSERT(cf_cancel(f)); /* cancelling again does not run it again */
    ASSERT_EQ(log.n, 1);
    cf_future_release(f);
}

/* test_done_callback_already_successful / _already_failed /
 * _already_cancelled: on a done future the callback runs at once, in the
 * calling thread, before add_done_callback returns. */
static void test_done_callback_already_done(void)
{
    const enum fixture ks[] = {FX_FINISHED, FX_RAISED, FX_CANCELLED};
    const int want[] = {CF_OK, CF_ETASK, CF_ECANCELLED};
    for (int i = 0; i < 3; i++) {
        cb_log log = CB_LOG_INIT;
        cb_arg a = {&log, i};
        cf_future *f = make(ks[i]);
        ASSERT_OK(cf_add_done_callback(f, record_cb, &a));
        ASSERT_EQ(log.n, 1);
        ASSERT(log.futures[0] == f);
        ASSERT(pthread_equal(log.threads[0], pthread_self()));
        ASSERT_ST(log.statuses[0], want[i]);
        if (ks[i] == FX_FINISHED)
            ASSERT_EQ(log.values[0], 42);
        ASSERT_EQ(log.cancelled[0], ks[i] == FX_CANCELLED);
        cf_future_release(f);
    }
}

/* Callbacks run in registration order -- on set_result, on cancel, and
 * when some are added after the future is done. */
static void test_done_callback_order(void)
{
    for (int how = 0; how < 3; how++) {
        cb_log log = CB_LOG_INIT;
        cb_arg a[20];
        cf_future *f = cf_future_new();
        for (int i = 0; i < 10; i++) {
            a[i] = (cb_arg){&log, i};
            ASSERT_OK(cf_add_done_callback(f, record_cb, &a[i]));
        }
        if (how == 0)
            ASSERT_OK(cf_set_result_i64(f, 1));
        else if (how == 1)
            ASSERT(cf_cancel(f));
        else
            ASSERT_OK(cf_set_exception(f, 1, "x"));
        ASSERT_EQ(log.n, 10);
        for (int i = 10; i < 20; i++) { /* done now: each runs at once */
            a[i] = (cb_arg){&log, i};
            ASSERT_OK(cf_add_done_callback(f, record_cb, &a[i]));
            ASSERT_EQ(log.n, i + 1);
        }
        for (int i = 0; i < 20; i++)
            ASSERT_EQ(log.ids[i], i);
        cf_future_release(f);
    }
}

typedef struct completer {
    cf_future *f;
    int how; /* 0 set_result, 1 cancel, 2 set_exception */
    pthread_t self;
} completer;

static void *complete_thread(void *arg)
{
    completer *c = arg;
    c->self = pthread_self();
    if (c->how == 0)
        ASSERT_OK(cf_set_result_i64(c->f, 77));
    else if (c->how == 1)
        ASSERT(cf_cancel(c->f));
    else
        ASSERT_OK(cf_set_exception(c->f, 1, "x"));
    return NULL;
}

/* A callback added to a pending future runs in the thread that completes
 * it (set_result, set_exception or cancel from another thread). */
static void test_done_callback_runs_in_completing_thread(void)
{
    for (int how = 0; how < 3; how++) {
        cb_log log = CB_LOG_INIT;
        cb_arg a[3] = {{&log, 0}, {&log, 1}, {&log, 2}};
        cf_future *f = cf_future_new();
        for (int i = 0; i < 3; i++)
            ASSERT_OK(cf_add_done_callback(f, record_cb, &a[i]));
        completer c = {.f = f, .how = how};
        pthread_t th;
        ASSERT_EQ(pthread_create(&th, NULL, complete_thread, &c), 0);
        ASSERT_EQ(pthread_join(th, NULL), 0);
        ASSERT_EQ(log.n, 3);
        for (int i = 0; i < 3; i++) {
            ASSERT(pthread_equal(log.threads[i], c.self));
            ASSERT(!pthread_equal(log.threads[i], pthread_self()));
            ASSERT_EQ(log.ids[i], i);
        }
        if (how == 0)
            ASSERT_EQ(log.values[0], 77);
        cf_future_release(f);
    }
}

static void gate_task(cf_call *c)
{
    gate_pass((gate *)(uintptr_t)cf_arg_i64(c));
    cf_return_i64(c, 1);
}

/* The same for a thread-pool future: the callback runs on the worker that
 * finished the task, not in the submitting thread. */
static void test_done_callback_pool_thread(void)
{
    cf_executor *ex = cf_thread_pool(&(cf_thread_pool_opts){.max_workers = 1});
    ASSERT(ex != NULL);
    gate g = GATE_INIT;
    cf_future *f = cf_submit_i64(ex, gate_task, (int64_t)(uintptr_t)&g);
    ASSERT(f != NULL);
    gate_wait_for(&g, 1); /* the task is running, so the future is not done */
    cb_log log = CB_LOG_INIT;
    cb_arg a = {&log, 0};
    ASSERT_OK(cf_add_done_callback(f, record_cb, &a));
    gate_open(&g);
    ASSERT_OK(cf_result(f, LONG_WAIT, NULL, NULL));
    cf_executor_free(ex); /* joins the worker: the callback has run */
    ASSERT_EQ(log.n, 1);
    ASSERT(!pthread_equal(log.threads[0], pthread_self()));
    ASSERT_EQ(log.values[0], 1);
    cf_future_release(f);
}

static void release_cb(cf_future *f, void *arg)
{
    atomic_fetch_add((_Atomic int *)arg, 1);
    cf_future_release(f); /* drops the reference the test handed over */
}

static void count_cb(cf_future *f, void *arg)
{
    (void)f;
    atomic_fetch_add((_Atomic int *)arg, 1);
}

/* A callback may release the future -- even its last reference -- and the
 * callbacks after it still run (ASan checks nothing touches freed memory). */
static void test_done_callback_releases_future(void)
{
    for (int how = 0; how < 3; how++) {
        _Atomic int runs = 0;
        cf_future *f = cf_future_new();
        ASSERT_OK(cf_add_done_callback(f, count_cb, &runs));
        ASSERT_OK(cf_add_done_callback(f, release_cb, &runs)); /* takes ours */
        ASSERT_OK(cf_add_done_callback(f, count_cb, &runs));
        if (how == 0)
            ASSERT_OK(cf_set_result_i64(f, 1));
        else if (how == 1)
            ASSERT(cf_cancel(f));
        else
            ASSERT_OK(cf_set_exception(f, 1, "x"));
        ASSERT_EQ(atomic_load(&runs), 3);
        /* f is gone: no release here. */
    }
    /* The same through the "already done" path. */
    _Atomic int runs = 0;
    cf_future *f = make(FX_FINISHED);
    ASSERT_OK(cf_add_done_callback(f, release_cb, &runs));
    ASSERT_EQ(atomic_load(&runs), 1);

    /* And from another thread: the completer drops the last reference. */
    runs = 0;
    f = cf_future_new();
    ASSERT_OK(cf_add_done_callback(f, release_cb, &runs));
    completer c = {.f = f, .how = 0};
    pthread_t th;
    ASSERT_EQ(pthread_create(&th, NULL, complete_thread, &c), 0);
    ASSERT_EQ(pthread_join(th, NULL), 0);
    ASSERT_EQ(atomic_load(&runs), 1);
}

typedef struct nest_arg {
    cb_log *log;
    cb_arg inner;
    cb_arg self;
    int add_status;
} nest_arg;

static void adding_cb(cf_future *f, void *arg)
{
    nest_arg *na = arg;
    record_cb(f, &na->self);
    na->add_status = cf_add_done_callback(f, record_cb, &na->inner);
}

/* A callback may add another callback to the same (now done) future: it
 * runs at once, in that thread; callbacks registered later still run. */
static void test_done_callback_adds_callback(void)
{
    for (int how = 0; how < 2; how++) {
        cb_log log = CB_LOG_INIT;
        nest_arg na = {.log = &log,
                       .inner = {&log, 2},
                       .self = {&log, 1},
                       .add_status = 99};
        cb_arg last = {&log, 3};
        cf_future *f = cf_future_new();
        ASSERT_OK(cf_add_done_callback(f, adding_cb, &na));
        ASSERT_OK(cf_add_done_callback(f, record_cb, &last));
        if (how == 0) {
            ASSERT_OK(cf_set_result_i64(f, 9));
        } else {
            ASSERT(cf_cancel(f));
        }
        ASSERT_OK(na.add_status);
        ASSERT_EQ(log.n, 3);
        ASSERT_EQ(log.ids[0], 1);
        ASSERT_EQ(log.ids[1], 2);
        ASSERT_EQ(log.ids[2], 3);
        for (int i = 0; i < 3; i++)
            ASSERT(pthread_equal(log.threads[i], pthread_self()));
        cf_future_release(f);
    }
}

static void chain_cb(cf_future *f, void *arg)
{
    /* Completes the next future with this one's value + 1, and waits on it
     * (done by then: must not block). */
    cf_future *next = arg;
    int64_t v;
    ASSERT_OK(cf_result_i64(f, 0, &v));
    ASSERT_OK(cf_set_result_i64(next, v + 1));
    int64_t w;
    ASSERT_OK(cf_result_i64(next, LONG_WAIT, &w));
    ASSERT_EQ(w, v + 1);
}

/* A callback may complete and wait on other futures (no lock is held):
 * a chain of 100 futures, each completed by the previous one's callback. */
static void test_done_callback_chain(void)
{
    enum { N = 100 };
    cf_future *fs[N];
    for (int i = 0; i < N; i++)
        fs[i] = cf_future_new();
    for (int i = 0; i + 1 < N; i++)
        ASSERT_OK(cf_add_done_callback(fs[i], chain_cb, fs[i + 1]));
    ASSERT_OK(cf_set_result_i64(fs[0], 0));
    for (int i = 0; i < N; i++) {
        int64_t v;
        ASSERT_OK(cf_result_i64(fs[i], 0, &v));
        ASSERT_EQ(v, i);
        cf_future_release(fs[i]);
    }
}

typedef struct adder {
    cf_future *f;
    pthread_barrier_t *start;
    _Atomic int *runs;
    int n;
} adder;

static void *adder_thread(void *arg)
{
    adder *a = arg;
    pthread_barrier_wait(a->start);
    for (int i = 0; i < a->n; i++)
        ASSERT_OK(cf_add_done_callback(a->f, count_cb, a->runs));
    return NULL;
}

/* Callbacks added from several threads while another completes the
 * future: each runs exactly once, either on completion or at once. */
static void test_done_callback_concurrent_add(void)
{
    enum { THREADS = 4, PER = 2000 };
    for (int round = 0; round < 5; round++) {
        _Atomic int runs = 0;
        cf_future *f = cf_future_new();
        pthread_barrier_t start;
        pthread_barrier_init(&start, NULL, THREADS + 1);
        pthread_t th[THREADS];
        adder a = {.f = f, .start = &start, .runs = &runs, .n = PER};
        for (int i = 0; i < THREADS; i++)
            ASSERT_EQ(pthread_create(&th[i], NULL, adder_thread, &a), 0);
        pthread_barrier_wait(&start);
        if (round % 2)
            ASSERT(cf_cancel(f));
        else
            ASSERT_OK(cf_set_result_i64(f, round));
        for (int i = 0; i < THREADS; i++)
            ASSERT_EQ(pthread_join(th[i], NULL), 0);
        ASSERT_EQ(atomic_load(&runs), THREADS * PER);
        pthread_barrier_destroy(&start);
        cf_future_release(f);
    }
}

typedef struct racer {
    cf_future *f;
    pthread_barrier_t *start;
    int how; /* 0 set_result, 1 set_exception, 2 set_running */
    int rc;
} racer;

static void *race_complete(void *arg)
{
    racer *r = arg;
    pthread_barrier_wait(r->start);
    if (r->how == 0)
        r->rc = cf_set_result_i64(r->f, 1);
    else if (r->how == 1)
        r->rc = cf_set_exception(r->f, 1, "x");
    else
        r->rc = cf_set_running_or_notify_cancel(r->f);
    return NULL;
}

/* cancel() racing set_result / set_exception / set_running_or_notify_cancel
 * from another thread: exactly one side wins, the loser gets the
 * documented answer, and the callbacks run exactly once. */
static void test_cancel_races_completion(void)
{
    for (int round = 0; round < 3000; round++) {
        int how = round % 3;
        _Atomic int runs = 0;
        cf_future *f = cf_future_new();
        ASSERT_OK(cf_add_done_callback(f, count_cb, &runs));
        pthread_barrier_t start;
        pthread_barrier_init(&start, NULL, 2);
        racer r = {f, &start, how, 99};
        pthread_t th;
        ASSERT_EQ(pthread_create(&th, NULL, race_complete, &r), 0);
        pthread_barrier_wait(&start);
        bool cancelled = cf_cancel(f);
        ASSERT_EQ(pthread_join(th, NULL), 0);
        pthread_barrier_destroy(&start);
        if (cancelled) {
            ASSERT_ST(r.rc, how == 2 ? CF_ECANCELLED : CF_ESTATE);
            ASSERT_EQ(cf_future_state(f), CF_CANCELLED);
            ASSERT_EQ(atomic_load(&runs), 1);
        } else {
            ASSERT_OK(r.rc);
            if (how == 2) {
                ASSERT_EQ(cf_future_state(f), CF_RUNNING);
                ASSERT_EQ(atomic_load(&runs), 0);
                ASSERT_OK(cf_set_result_i64(f, 2));
            }
            ASSERT_EQ(cf_future_state(f), CF_FINISHED);
            ASSERT_EQ(atomic_load(&runs), 1);
        }
        cf_future_release(f);
    }
}

/* A callback on a standalone future released while still pending never
 * runs (and its registration is not leaked: ASan/LSan). */
static void test_done_callback_released_pending(void)
{
    _Atomic int runs = 0;
    cf_future *f = cf_future_new();
    for (int i = 0; i < 5; i++)
        ASSERT_OK(cf_add_done_callback(f, count_cb, &runs));
    cf_future_release(f);
    ASSERT_EQ(atomic_load(&runs), 0);
}

/* ------------------------------------------------------------------------ */
/* Blocked waiters woken from other threads                                  */
/* ------------------------------------------------------------------------ */

typedef struct blocked {
    cf_future *f;
    _Atomic int tid;
    int kind; /* 0: cf_result_i64, 1: cf_exception */
    int rc;
    int64_t v;
    cf_error e;
} blocked;

static void *blocked_thread(void *arg)
{
    blocked *b = arg;
    atomic_store(&b->tid, current_tid());
    if (b->kind == 0)
        b->rc = cf_result_i64(b->f, LONG_WAIT, &b->v);
    else
        b->rc = cf_exception(b->f, LONG_WAIT, &b->e);
    return NULL;
}

/* Starts n threads blocked on f (cf_result or cf_exception), returns once
 * they all sleep in the call. */
static void start_blocked(blocked *b, pthread_t *th, int n, cf_future *f,
                          int kind)
{
    for (int i = 0; i < n; i++) {
        b[i] = (blocked){.f = f, .kind = kind, .rc = 99};
        ASSERT_EQ(pthread_create(&th[i], NULL, blocked_thread, &b[i]), 0);
    }
    for (int i = 0; i < n; i++)
        wait_until_blocked(&b[i].tid);
}

/* test_result_with_success: threads blocked in result() get the value
 * once another thread calls set_result. */
static void test_result_woken_by_set_result(void)
{
    enum { N = 4 };
    blocked b[N];
    pthread_t th[N];
    cf_future *f = cf_future_new();
    start_blocked(b, th, N, f, 0);
    ASSERT(!cf_done(f));
    ASSERT_OK(cf_set_result_i64(f, 42));
    for (int i = 0; i < N; i++) {
        ASSERT_EQ(pthread_join(th[i], NULL), 0);
        ASSERT_OK(b[i].rc);
        ASSERT_EQ(b[i].v, 42);
    }
    cf_future_release(f);
}

/* test_result_with_cancel: cancel() wakes every thread blocked in result()
 * and they get CancelledError. */
static void test_result_woken_by_cancel(void)
{
    enum { N = 4 };
    blocked b[N];
    pthread_t th[N];
    cf_future *f = cf_future_new();
    start_blocked(b, th, N, f, 0);
    ASSERT(cf_cancel(f));
    for (int i = 0; i < N; i++) {
        ASSERT_EQ(pthread_join(th[i], NULL), 0);
        ASSERT_ST(b[i].rc, CF_ECANCELLED);
    }
    cf_future_release(f);
}

/* test_exception_with_success: a thread blocked in exception() gets the
 * error set by set_exception from another thread; another one blocked in
 * result() gets CF_ETASK. */
static void test_exception_woken_by_set_exception(void)
{
    blocked b[2];
    pthread_t th[2];
    cf_future *f = cf_future_new();
    start_blocked(&b[0], &th[0], 1, f, 1);
    start_blocked(&b[1], &th[1], 1, f, 0);
    ASSERT_OK(cf_set_exception(f, 11, "oops"));
    for (int i = 0; i < 2; i++)
        ASSERT_EQ(pthread_join(th[i], NULL), 0);
    ASSERT_OK(b[0].rc);
    ASSERT_ST(b[0].e.status, CF_ETASK);
    ASSERT_EQ(b[0].e.code, 11);
    ASSERT_STR_EQ(b[0].e.message, "oops");
    ASSERT_ST(b[1].rc, CF_ETASK);
    cf_future_release(f);
}

typedef struct remote {
    cf_future *f;
    _Atomic int *main_tid;
    int how; /* 0 set_result, 1 cancel */
} remote;

static void *remote_complete(void *arg)
{
    remote *r = arg;
    wait_until_blocked(r->main_tid);
    if (r->how == 0)
        ASSERT_OK(cf_set_result_i64(r->f, 42));
    else
        ASSERT(cf_cancel(r->f));
    return NULL;
}

/* Python's shape exactly: the main thread blocks in result() and another
 * thread (Python's Timer) completes or cancels the future.  A running
 * future is woken the same way. */
static void test_result_main_woken_by_other_thread(void)
{
    for (int how = 0; how < 4; how++) {
        cf_future *f = make(how < 2 ? FX_PENDING : FX_RUNNING);
        _Atomic int tid = 0;
        remote r = {.f = f, .main_tid = &tid, .how = how % 2};
        if (how == 3) /* a running future cannot be cancelled */
            r.how = 0;
        pthread_t th;
        ASSERT_EQ(pthread_create(&th, NULL, remote_complete, &r), 0);
        atomic_store(&tid, current_tid());
        int64_t v = 0;
        int rc = cf_result_i64(f, LONG_WAIT, &v);
        if (r.how == 0) {
            ASSERT_OK(rc);
            ASSERT_EQ(v, 42);
        } else {
            ASSERT_ST(rc, CF_ECANCELLED);
        }
        ASSERT_EQ(pthread_join(th, NULL), 0);
        cf_future_release(f);
    }
}

/* ------------------------------------------------------------------------ */
/* repr                                                                      */
/* ------------------------------------------------------------------------ */

/* test_repr: "<Future at 0x... state=pending>", "state=running",
 * "state=cancelled", "state=finished raised ...", "state=finished
 * returned ...". */
static void test_describe(void)
{
    char buf[256];
    cf_future *f = make(FX_PENDING);
    cf_describe(f, buf, sizeof buf);
    ASSERT(contains(buf, "<cf_future at "));
    ASSERT(contains(buf, "state=pending"));
    ASSERT(buf[strlen(buf) - 1] == '>');
    char addr[64];
    snprintf(addr, sizeof addr, "%p", (void *)f);
    ASSERT(contains(buf, addr));
    cf_future_release(f);

    f = make(FX_RUNNING);
    ASSERT(cf_describe(f, buf, sizeof buf) == buf);
    ASSERT(contains(buf, "state=running"));
    cf_future_release(f);

    f = make(FX_CANCELLED);
    cf_describe(f, buf, sizeof buf);
    ASSERT(contains(buf, "state=cancelled"));
    cf_future_release(f);

    f = make(FX_FINISHED);
    cf_describe(f, buf, sizeof buf);
    ASSERT(contains(buf, "state=finished returned i64 42"));
    cf_future_release(f);

    f = cf_future_new();
    ASSERT_OK(cf_set_exception(f, 7, "boom"));
    cf_describe(f, buf, sizeof buf);
    ASSERT(contains(buf, "state=finished raised CF_ETASK(7): boom"));
    cf_future_release(f);

    f = cf_future_new();
    ASSERT_OK(cf_set_result_i64(f, -5050));
    cf_describe(f, buf, sizeof buf);
    ASSERT(contains(buf, "returned i64 -5050"));
    cf_future_release(f);

    /* Other result kinds say "returned" at least. */
    f = cf_future_new();
    ASSERT_OK(cf_set_result_f64(f, 2.5));
    cf_describe(f, buf, sizeof buf);
    ASSERT(contains(buf, "state=finished returned"));
    cf_future_release(f);
    f = cf_future_new();
    ASSERT_OK(cf_set_result_str(f, "hi"));
    cf_describe(f, buf, sizeof buf);
    ASSERT(contains(buf, "state=finished returned"));
    ASSERT(contains(buf, "hi"));
    cf_future_release(f);
    f = cf_future_new();
    ASSERT_OK(cf_set_result(f, "\x01\x02\x03", 3));
    cf_describe(f, buf, sizeof buf);
    ASSERT(contains(buf, "state=finished returned"));
    cf_future_release(f);

    /* Truncation: at most size bytes, NUL-terminated, a prefix of the
     * full text. */
    f = cf_future_new();
    ASSERT_OK(cf_set_exception(f, 7, "a long message to be truncated"));
    char full[256];
    cf_describe(f, full, sizeof full);
    for (size_t size = 1; size < strlen(full) + 3; size++) {
        char small[256];
        memset(small, 'X', sizeof small);
        ASSERT(cf_describe(f, small, size) == small);
        size_t n = strnlen(small, sizeof small);
        ASSERT(n < size);
        ASSERT(strncmp(small, full, n) == 0);
        ASSERT(small[size] == 'X'); /* nothing written past size */
    }
    cf_describe(f, buf, 0); /* size 0: writes nothing, no crash */
    cf_future_release(f);
    cf_describe(NULL, buf, sizeof buf); /* no crash, some text */
    ASSERT(strlen(buf) > 0);
}

/* ------------------------------------------------------------------------ */
/* Reference counting                                                        */
/* ------------------------------------------------------------------------ */

static void *release_after_complete(void *arg)
{
    cf_future *f = arg;
    ASSERT_OK(cf_set_result_i64(f, 8));
    cf_future_release(f); /* the reference handed to this thread */
    return NULL;
}

/* retain / release: each retain needs one release; the future lives until
 * the last one (ASan/LSan check for leaks and use after free). */
static void test_retain_release(void)
{
    cf_future *f = cf_future_new();
    ASSERT(cf_future_retain(f) == f);
    ASSERT(cf_future_retain(f) == f);
    cf_future_release(f);
    cf_future_release(f);
    ASSERT_OK(cf_set_result_i64(f, 3)); /* still alive: one reference left */
    int64_t v;
    ASSERT_OK(cf_result_i64(f, 0, &v));
    ASSERT_EQ(v, 3);
    cf_future_release(f);
    cf_future_release(NULL); /* ignored */

    /* Another thread keeps the future alive after we let go. */
    f = cf_future_new();
    cf_future_retain(f);
    pthread_t th;
    ASSERT_EQ(pthread_create(&th, NULL, release_after_complete, f), 0);
    ASSERT_OK(cf_result_i64(f, LONG_WAIT, &v));
    ASSERT_EQ(v, 8);
    cf_future_release(f);
    ASSERT_EQ(pthread_join(th, NULL), 0);

    /* Many futures with results of every size, released in every state. */
    for (int i = 0; i < 1000; i++) {
        cf_future *g = make((enum fixture)(i % 5));
        if (i % 7 == 0) {
            char big[100];
            memset(big, i, sizeof big);
            cf_future *h = cf_future_new();
            ASSERT_OK(cf_set_result(h, big, sizeof big));
            cf_future_release(h);
        }
        cf_future_release(g);
    }
}

/* ------------------------------------------------------------------------ */
/* Status codes                                                              */
/* ------------------------------------------------------------------------ */

/* Every status code has its documented name and message (the error
 * classes of concurrent.futures), values are distinct, unknown codes give
 * some text rather than NULL. */
static void test_status_names(void)
{
    static const struct {
        int value;
        const char *name, *msg;
    } table[] = {
#define ROW_(name, value, msg) {value, "CF_" #name, msg},
        CF_STATUS_MAP(ROW_)
#undef ROW_
    };
    size_t n = sizeof table / sizeof table[0];
    ASSERT_EQ(n, 12);
    for (size_t i = 0; i < n; i++) {
        ASSERT_STR_EQ(cf_err_name(table[i].value), table[i].name);
        ASSERT_STR_EQ(cf_strerror(table[i].value), table[i].msg);
        ASSERT(table[i].value <= 0);
        for (size_t j = 0; j < i; j++)
            ASSERT(table[i].value != table[j].value);
    }
    ASSERT_EQ(CF_OK, 0);
    ASSERT_STR_EQ(cf_err_name(CF_ETIMEDOUT), "CF_ETIMEDOUT");
    ASSERT_STR_EQ(cf_strerror(CF_ETIMEDOUT), "timed out");
    ASSERT_STR_EQ(cf_err_name(CF_OK), "CF_OK");
    const int unknown[] = {1, 42, -12, -1000, INT32_MIN, INT32_MAX};
    for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
        const char *name = cf_err_name(unknown[i]);
        const char *msg = cf_strerror(unknown[i]);
        ASSERT(name != NULL && msg != NULL);
        ASSERT(strlen(name) > 0 && strlen(msg) > 0);
        for (size_t j = 0; j < n; j++)
            ASSERT(strcmp(name, table[j].name) != 0);
    }
    ASSERT_STR_EQ(cf_version(), CF_VERSION_STRING);
}

/* ------------------------------------------------------------------------ */
/* Bad arguments                                                             */
/* ------------------------------------------------------------------------ */

static void never_cb(cf_future *f, void *arg)
{
    (void)f;
    (void)arg;
    ASSERT(!"callback must not run");
}

/* Every call that takes a future: NULL is CF_EINVAL (or false / ignored),
 * never a crash. */
static void test_null_arguments(void)
{
    const void *data;
    size_t len;
    int64_t v;
    double x;
    const char *s;
    cf_error e;
    ASSERT_ST(cf_result(NULL, 0, &data, &len), CF_EINVAL);
    ASSERT_ST(cf_result(NULL, CF_FOREVER, NULL, NULL), CF_EINVAL);
    ASSERT_ST(cf_result_i64(NULL, 0, &v), CF_EINVAL);
    ASSERT_ST(cf_result_f64(NULL, 0, &x), CF_EINVAL);
    ASSERT_ST(cf_result_str(NULL, 0, &s), CF_EINVAL);
    ASSERT_ST(cf_exception(NULL, 0, &e), CF_EINVAL);
    ASSERT_ST(cf_exception(NULL, CF_FOREVER, &e), CF_EINVAL);
    ASSERT_ST(cf_add_done_callback(NULL, never_cb, NULL), CF_EINVAL);
    ASSERT_ST(cf_set_running_or_notify_cancel(NULL), CF_EINVAL);
    ASSERT_ST(cf_set_result(NULL, "a", 1), CF_EINVAL);
    ASSERT_ST(cf_set_result(NULL, NULL, 0), CF_EINVAL);
    ASSERT_ST(cf_set_result_i64(NULL, 1), CF_EINVAL);
    ASSERT_ST(cf_set_result_f64(NULL, 1.0), CF_EINVAL);
    ASSERT_ST(cf_set_result_str(NULL, "a"), CF_EINVAL);
    ASSERT_ST(cf_set_exception(NULL, 1, "x"), CF_EINVAL);
    ASSERT(!cf_cancel(NULL));
    ASSERT(!cf_request_cancel(NULL));
    ASSERT(!cf_cancelled(NULL));
    ASSERT(!cf_running(NULL));
    ASSERT(!cf_done(NULL));
    cf_future_release(NULL);

    /* NULL out-pointers and callbacks on a real future. */
    cf_future *f = make(FX_FINISHED);
    ASSERT_ST(cf_exception(f, 0, NULL), CF_EINVAL);
    ASSERT_ST(cf_add_done_callback(f, NULL, NULL), CF_EINVAL);
    ASSERT_ST(cf_result_i64(f, 0, NULL), CF_EINVAL);
    ASSERT_ST(cf_result_f64(f, 0, NULL), CF_EINVAL);
    ASSERT_ST(cf_result_str(f, 0, NULL), CF_EINVAL);
    cf_future_release(f);

    f = cf_future_new();
    ASSERT_ST(cf_add_done_callback(f, NULL, NULL), CF_EINVAL);
    ASSERT_ST(cf_exception(f, 0, NULL), CF_EINVAL);
    ASSERT_ST(cf_set_result(f, NULL, 4), CF_EINVAL); /* NULL bytes, len 4 */
    ASSERT_EQ(cf_future_state(f), CF_PENDING);       /* nothing changed */
    ASSERT_OK(cf_set_result_i64(f, 1));
    cf_future_release(f);
}

/* A negative or NaN timeout is CF_EINVAL for result() and exception(),
 * whatever the state; a pending future stays untouched. */
static void test_bad_timeouts(void)
{
    const double bad[] = {-1.0, -0.001, -INFINITY, NAN, -NAN};
    for (int k = 0; k < 5; k++) {
        cf_future *f = make((enum fixture)k);
        cf_state before = cf_future_state(f);
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
            int64_t v;
            double x;
            const char *s;
            cf_error e;
            ASSERT_ST(cf_result(f, bad[i], NULL, NULL), CF_EINVAL);
            ASSERT_ST(cf_result_i64(f, bad[i], &v), CF_EINVAL);
            ASSERT_ST(cf_result_f64(f, bad[i], &x), CF_EINVAL);
            ASSERT_ST(cf_result_str(f, bad[i], &s), CF_EINVAL);
            ASSERT_ST(cf_exception(f, bad[i], &e), CF_EINVAL);
        }
        ASSERT_EQ(cf_future_state(f), before);
        cf_future_release(f);
    }
    /* Large timeouts are fine (they mean "a long time"). */
    cf_future *f = make(FX_FINISHED);
    int64_t v;
    ASSERT_OK(cf_result_i64(f, 1e300, &v));
    ASSERT_OK(cf_result_i64(f, CF_FOREVER, &v));
    cf_future_release(f);
    f = make(FX_PENDING);
    ASSERT_ST(cf_result_i64(f, 1e-9, &v), CF_ETIMEDOUT);
    cf_future_release(f);
}

/* ------------------------------------------------------------------------ */
/* Cooperative cancellation                                                  */
/* ------------------------------------------------------------------------ */

/* Reports whether a cancel was requested before and after it blocks on
 * the gate passed as its argument. */
static void coop_task(cf_call *c)
{
    gate *g = (gate *)(uintptr_t)cf_arg_i64(c);
    bool before = cf_cancel_requested(c);
    gate_pass(g);
    cf_return_i64(c, (before ? 10 : 0) + (cf_cancel_requested(c) ? 1 : 0));
}

/* cf_request_cancel: cancels a pending future (as cancel()), only raises
 * the flag on a running one (false), is too late for a finished one. */
static void test_request_cancel(void)
{
    cb_log log = CB_LOG_INIT;
    cb_arg a = {&log, 0};
    cf_future *f = cf_future_new();
    ASSERT_OK(cf_add_done_callback(f, record_cb, &a));
    ASSERT(cf_request_cancel(f));
    ASSERT(cf_cancelled(f));
    ASSERT_EQ(log.n, 1); /* callbacks ran, as for cancel() */
    ASSERT_ST(cf_result(f, 0, NULL, NULL), CF_ECANCELLED);
    ASSERT(cf_request_cancel(f)); /* already cancelled */
    ASSERT_ST(cf_set_running_or_notify_cancel(f), CF_ECANCELLED);
    cf_future_release(f);

    /* Standalone running future: false, still running, still completes. */
    f = make(FX_RUNNING);
    ASSERT(!cf_request_cancel(f));
    ASSERT(cf_running(f) && !cf_cancelled(f));
    ASSERT(!cf_request_cancel(f));
    ASSERT_OK(cf_set_result_i64(f, 5));
    int64_t v;
    ASSERT_OK(cf_result_i64(f, 0, &v));
    ASSERT_EQ(v, 5);
    cf_future_release(f);

    /* Finished: false, result intact. */
    f = make(FX_FINISHED);
    ASSERT(!cf_request_cancel(f));
    ASSERT_OK(cf_result_i64(f, 0, &v));
    ASSERT_EQ(v, 42);
    cf_future_release(f);
    f = make(FX_RAISED);
    ASSERT(!cf_request_cancel(f));
    ASSERT_ST(cf_result(f, 0, NULL, NULL), CF_ETASK);
    cf_future_release(f);

    /* A running pool task sees the flag through cf_cancel_requested. */
    cf_executor *ex = cf_thread_pool(&(cf_thread_pool_opts){.max_workers = 1});
    ASSERT(ex != NULL);
    gate g = GATE_INIT;
    f = cf_submit_i64(ex, coop_task, (int64_t)(uintptr_t)&g);
    ASSERT(f != NULL);
    gate_wait_for(&g, 1); /* the task runs, blocked on the gate */
    ASSERT(cf_running(f));
    ASSERT(!cf_request_cancel(f)); /* flagged only */
    ASSERT(cf_running(f));
    gate_open(&g);
    ASSERT_OK(cf_result_i64(f, LONG_WAIT, &v));
    ASSERT_EQ(v, 1); /* not requested before, requested after */
    ASSERT(!cf_cancelled(f));
    cf_future_release(f);

    /* Without a request the flag stays down (the gate is open now). */
    f = cf_submit_i64(ex, coop_task, (int64_t)(uintptr_t)&g);
    ASSERT(f != NULL);
    ASSERT_OK(cf_result_i64(f, LONG_WAIT, &v));
    ASSERT_EQ(v, 0);
    cf_future_release(f);
    cf_executor_free(ex);
}

/* Futures' memory (fcache.c): made on threads that then exit, released on
 * others, reused.  Each round, 4 threads make standalone futures and hand
 * them through a shared array to 4 other threads, which complete, read
 * and release them; every thread exits before the next round, handing its
 * cached blocks on.  Values must survive (no block is handed out twice),
 * under ASan, TSan and valgrind too. */
#define FC_N 20000
typedef struct fc_round {
    cf_future *fs[FC_N];
    _Atomic int made;
    _Atomic long sum;
} fc_round;

static void *fc_maker(void *arg)
{
    fc_round *r = arg;
    for (;;) {
        int i = atomic_fetch_add(&r->made, 1);
        if (i >= FC_N)
            return NULL;
        cf_future *f = cf_future_new();
        ASSERT(f);
        ASSERT_OK(cf_set_result_i64(f, i));
        __atomic_store_n(&r->fs[i], f, __ATOMIC_RELEASE);
    }
}

typedef struct fc_taker_arg {
    fc_round *r;
    int k; /* takes the futures i with i % 4 == k */
} fc_taker_arg;

static void *fc_taker(void *arg)
{
    fc_taker_arg *a = arg;
    long sum = 0;
    for (int i = a->k; i < FC_N; i += 4) {
        cf_future *f;
        while ((f = __atomic_load_n(&a->r->fs[i], __ATOMIC_ACQUIRE)) == NULL)
            sched_yield();
        int64_t v = -1;
        ASSERT_OK(cf_result_i64(f, 0, &v));
        ASSERT_EQ(v, i);
        sum += v;
        cf_future_release(f);
    }
    atomic_fetch_add(&a->r->sum, sum);
    return NULL;
}

static void test_future_memory_across_threads(void)
{
    for (int round = 0; round < 5; round++) {
        fc_round *r = calloc(1, sizeof *r);
        ASSERT(r);
        pthread_t t[8];
        fc_taker_arg ta[4];
        for (int k = 0; k < 4; k++) {
            ta[k] = (fc_taker_arg){r, k};
            ASSERT_EQ(pthread_create(&t[k], NULL, fc_maker, r), 0);
            ASSERT_EQ(pthread_create(&t[4 + k], NULL, fc_taker, &ta[k]), 0);
        }
        for (int k = 0; k < 8; k++)
            ASSERT_EQ(pthread_join(t[k], NULL), 0);
        ASSERT_EQ(atomic_load(&r->sum), (long)FC_N * (FC_N - 1) / 2);
        free(r);
    }
}

TEST_MAIN(T(test_new_future_is_pending), T(test_predicates_in_each_state),
          T(test_cancel_rules), T(test_set_running_or_notify_cancel),
          T(test_result_with_timeout), T(test_set_result_typed),
          T(test_result_sizes), T(test_multiple_set_result),
          T(test_multiple_set_exception), T(test_set_on_cancelled),
          T(test_exception), T(test_done_callback_with_result),
          T(test_done_callback_with_exception),
          T(test_done_callback_with_cancel), T(test_done_callback_already_done),
          T(test_done_callback_order),
          T(test_done_callback_runs_in_completing_thread),
          T(test_done_callback_pool_thread),
          T(test_done_callback_releases_future),
          T(test_done_callback_adds_callback), T(test_done_callback_chain),
          T(test_done_callback_concurrent_add), T(test_cancel_races_completion),
          T(test_done_callback_released_pending),
          T(test_result_woken_by_set_result), T(test_result_woken_by_cancel),
          T(test_exception_woken_by_set_exception),
          T(test_result_main_woken_by_other_thread), T(test_describe),
          T(test_retain_release), T(test_status_names), T(test_null_arguments),
          T(test_bad_timeouts), T(test_request_cancel),
          T(test_future_memory_across_threads))

/*
 * test.h -- the tiny test harness of cfutures' tests.
 *
 * A test file defines `static void test_x(void)` functions and lists them
 * in TEST_MAIN(...).  The binary runs every test, or only those named on
 * the command line, printing TAP-style lines; a failed assertion prints
 * where and aborts (CTest reports the binary as failed).  Each test binary
 * is one CTest test with a timeout, so a hang fails instead of blocking.
 */
#ifndef CF_TEST_H
#define CF_TEST_H

#include "cfutures.h"

#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define ASSERT(c)                                                      \
    do {                                                               \
        if (!(c)) {                                                    \
            fprintf(stderr, "%s:%d: assertion failed: %s\n", __FILE__, \
                    __LINE__, #c);                                     \
            abort();                                                   \
        }                                                              \
    } while (0)

#define ASSERT_EQ(a, b)                                               \
    do {                                                              \
        long long a_ = (long long)(a), b_ = (long long)(b);           \
        if (a_ != b_) {                                               \
            fprintf(stderr, "%s:%d: %s == %s failed: %lld != %lld\n", \
                    __FILE__, __LINE__, #a, #b, a_, b_);              \
            abort();                                                  \
        }                                                             \
    } while (0)

/* Compares status codes and prints their names. */
#define ASSERT_ST(a, b)                                                     \
    do {                                                                    \
        int a_ = (a), b_ = (b);                                             \
        if (a_ != b_) {                                                     \
            fprintf(stderr, "%s:%d: %s == %s failed: %s != %s\n", __FILE__, \
                    __LINE__, #a, #b, cf_err_name(a_), cf_err_name(b_));    \
            abort();                                                        \
        }                                                                   \
    } while (0)

#define ASSERT_OK(a) ASSERT_ST(a, CF_OK)
#define ASSERT_STR_EQ(a, b)                                               \
    do {                                                                  \
        const char *a_ = (a), *b_ = (b);                                  \
        if (strcmp(a_, b_) != 0) {                                        \
            fprintf(stderr, "%s:%d: %s == %s failed: \"%s\" != \"%s\"\n", \
                    __FILE__, __LINE__, #a, #b, a_, b_);                  \
            abort();                                                      \
        }                                                                 \
    } while (0)

typedef struct test_entry {
    const char *name;
    void (*fn)(void);
} test_entry;

/* clang-format off */
#define T(fn) {#fn, fn}
/* clang-format on */

static inline int test_main(int argc, char **argv, const test_entry *tests,
                            size_t n)
{
    int ran = 0;
    setvbuf(stdout, NULL, _IOLBF, 0);
    /* Tests fail tasks on purpose and drop many of those futures unread:
     * silence the default "error never read" line (CF_TEST_VERBOSE=1 keeps
     * it).  test-observability tests the hook itself. */
    if (getenv("CF_TEST_VERBOSE") == NULL)
        cf_set_default_error_hook(NULL, NULL);
    for (size_t i = 0; i < n; i++) {
        bool wanted = argc < 2;
        for (int a = 1; a < argc; a++)
            if (strcmp(argv[a], tests[i].name) == 0)
                wanted = true;
        if (!wanted)
            continue;
        tests[i].fn();
        printf("ok %d - %s\n", ++ran, tests[i].name);
    }
    printf("1..%d\n", ran);
    return ran > 0 ? 0 : 1;
}

#define TEST_MAIN(...)                                      \
    int main(int argc, char **argv)                         \
    {                                                       \
        static const test_entry tests_[] = {__VA_ARGS__};   \
        return test_main(argc, argv, tests_,                \
                         sizeof tests_ / sizeof tests_[0]); \
    }

/* A reusable barrier-like gate: tasks block on it until the test opens it
 * (race-free saturation of a pool, no sleeps). */
typedef struct gate {
    pthread_mutex_t m;
    pthread_cond_t c;
    bool open;
    int waiting; /* threads currently blocked in gate_pass */
} gate;

/* clang-format off */
#define GATE_INIT {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false, 0}
/* clang-format on */

static inline void gate_pass(gate *g)
{
    pthread_mutex_lock(&g->m);
    g->waiting++;
    pthread_cond_broadcast(&g->c);
    while (!g->open)
        pthread_cond_wait(&g->c, &g->m);
    g->waiting--;
    pthread_mutex_unlock(&g->m);
}

/* Blocks until n threads wait at the gate. */
static inline void gate_wait_for(gate *g, int n)
{
    pthread_mutex_lock(&g->m);
    while (g->waiting < n)
        pthread_cond_wait(&g->c, &g->m);
    pthread_mutex_unlock(&g->m);
}

static inline void gate_open(gate *g)
{
    pthread_mutex_lock(&g->m);
    g->open = true;
    pthread_cond_broadcast(&g->c);
    pthread_mutex_unlock(&g->m);
}

/* ------------------------------------------------------------------------ */
/* Helpers shared by the tests                                               */
/* ------------------------------------------------------------------------ */

/* A bound for blocking calls that must return: a bug fails, never hangs. */
#define LONG_WAIT 30.0

static inline int current_tid(void)
{
    return (int)syscall(SYS_gettid);
}

static inline double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Waits (bounded, no sleep) until the thread whose id is published in
 * *tidp is asleep in the kernel: it then is blocked in the call under
 * test, which it enters right after publishing its id. */
static inline void wait_until_blocked(_Atomic int *tidp)
{
    int tid;
    while ((tid = atomic_load(tidp)) == 0)
        sched_yield();
    char path[64];
    snprintf(path, sizeof path, "/proc/self/task/%d/stat", tid);
    double end = now_s() + 5.0;
    while (now_s() < end) {
        FILE *fp = fopen(path, "r");
        if (fp == NULL)
            return;
        char buf[512];
        size_t n = fread(buf, 1, sizeof buf - 1, fp);
        fclose(fp);
        buf[n] = '\0';
        const char *p = strrchr(buf, ')');
        if (p != NULL && p[1] == ' ' && p[2] == 'S')
            return;
        sched_yield();
    }
}

/* CPython's fixtures (test_concurrent_futures/util.py): PENDING_FUTURE,
 * RUNNING_FUTURE, CANCELLED_FUTURE (and CANCELLED_AND_NOTIFIED_FUTURE, the
 * same state in C), EXCEPTION_FUTURE, SUCCESSFUL_FUTURE (result 42). */
enum fixture { FX_PENDING, FX_RUNNING, FX_CANCELLED, FX_RAISED, FX_FINISHED };

static inline cf_future *make(enum fixture k)
{
    cf_future *f = cf_future_new();
    ASSERT(f != NULL);
    switch (k) {
    case FX_PENDING:
        break;
    case FX_RUNNING:
        ASSERT_OK(cf_set_running_or_notify_cancel(f));
        break;
    case FX_CANCELLED:
        ASSERT(cf_cancel(f));
        break;
    case FX_RAISED:
        ASSERT_OK(cf_set_exception(f, 7, "boom"));
        break;
    case FX_FINISHED:
        ASSERT_OK(cf_set_result_i64(f, 42));
        break;
    }
    return f;
}

static inline void release_all(cf_future **fs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        cf_future_release(fs[i]);
}

/* A counter that threads wait on until it reaches n. */
typedef struct latch {
    pthread_mutex_t m;
    pthread_cond_t c;
    int count;
} latch;

/* clang-format off */
#define LATCH_INIT {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0}
/* clang-format on */

static inline void latch_add(latch *l)
{
    pthread_mutex_lock(&l->m);
    l->count++;
    pthread_cond_broadcast(&l->c);
    pthread_mutex_unlock(&l->m);
}

static inline void latch_wait(latch *l, int n)
{
    pthread_mutex_lock(&l->m);
    while (l->count < n)
        pthread_cond_wait(&l->c, &l->m);
    pthread_mutex_unlock(&l->m);
}

#endif

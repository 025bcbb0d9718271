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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

#endif

/*
 * Invariants under injected faults.  Built everywhere (without faults it
 * must simply pass); `make check-faults` runs it in the CF_FAULT_INJECTION
 * build under ASan/LeakSanitizer with several CF_FAULTS seeds, so that
 * allocations, thread and process starts and socket I/O fail at random.
 * Whatever fails, every call answers with a status code, every future that
 * was handed out ends exactly once (its callbacks run once), a finished
 * one holds the right result, and nothing leaks.
 */
#include "test.h"

#include <stdatomic.h>

enum { ROUNDS = 12, N = 40 };

static void plus_one(cf_call *c)
{
    if (cf_arg_i64(c) % 7 == 3) {
        cf_raise(c, 3, "seven");
        return;
    }
    cf_return_i64(c, cf_arg_i64(c) + 1);
}

typedef struct slot {
    cf_future *f;
    atomic_int calls;
    bool listening;
    int64_t arg;
} slot;

static void count(cf_future *f, void *arg)
{
    (void)f;
    atomic_fetch_add(&((slot *)arg)->calls, 1);
}

static bool allowed_error(int rc)
{
    return rc == CF_ENOMEM || rc == CF_EBROKEN || rc == CF_ESHUTDOWN ||
           rc == CF_EINVAL;
}

static void check_slot(slot *s)
{
    if (!cf_done(s->f)) { /* ends exactly once: never left pending */
        char d[200];
        fprintf(stderr, "left pending: %s\n", cf_describe(s->f, d, sizeof d));
    }
    ASSERT(cf_done(s->f));
    if (s->listening)
        ASSERT_EQ(atomic_load(&s->calls), 1);
    int64_t v;
    int rc = cf_result_i64(s->f, 0, &v);
    if (rc == CF_OK)
        ASSERT_EQ(v, s->arg + 1);
    else
        ASSERT(rc == CF_ETASK || rc == CF_ECANCELLED || rc == CF_ECRASHED ||
               rc == CF_EBROKEN || rc == CF_ENOMEM || rc == CF_EINVAL ||
               rc == CF_ESHUTDOWN);
    if (rc == CF_ETASK)
        ASSERT_EQ(s->arg % 7, 3);
}

static void one_round(int round)
{
    bool procs = round % 3 == 2;
    if (getenv("CF_TEST_VERBOSE"))
        fprintf(stderr, "# round %d on %s\n", round,
                procs ? "processes" : "threads");
    cf_executor *ex =
        procs ? cf_process_pool(&(cf_process_pool_opts){.max_workers = 2})
              : cf_thread_pool(&(cf_thread_pool_opts){.max_workers = 2});
    if (ex == NULL) {
        ASSERT(allowed_error(cf_last_error()));
        return;
    }
    static slot s[N];
    int n = 0;
    for (int i = 0; i < N; i++) {
        cf_future *f = cf_submit_i64(ex, plus_one, i);
        if (f == NULL) {
            ASSERT(allowed_error(cf_last_error()));
            continue;
        }
        s[n].f = f;
        s[n].arg = i;
        atomic_store(&s[n].calls, 0);
        int rc = cf_add_done_callback(f, count, &s[n]);
        ASSERT(rc == CF_OK || rc == CF_ENOMEM);
        s[n].listening = rc == CF_OK;
        if (i % 5 == 0)
            cf_cancel(f);
        n++;
    }
    /* Gather with as_completed when it can allocate, else one by one. */
    cf_future *fs[N];
    for (int i = 0; i < n; i++)
        fs[i] = s[i].f;
    cf_as_completed *it = cf_as_completed_new(fs, (size_t)n, 60);
    if (it != NULL) {
        cf_future *f;
        while (cf_as_completed_next(it, &f) == CF_OK)
            ASSERT(cf_done(f));
        cf_as_completed_free(it);
    } else {
        ASSERT(allowed_error(cf_last_error()));
    }
    int64_t in[16];
    for (int i = 0; i < 16; i++)
        in[i] = i;
    cf_map *m = cf_map_i64(ex, plus_one, in, 16,
                           &(cf_map_opts){.continue_on_error = true});
    if (m != NULL) {
        int64_t v;
        int rc;
        size_t k = 0;
        while ((rc = cf_map_next_i64(m, &v)) != CF_END) {
            if (rc == CF_OK)
                ASSERT_EQ(v, in[k] + 1);
            k++;
            ASSERT(k <= 16);
        }
        cf_map_free(m);
    } else {
        ASSERT(allowed_error(cf_last_error()));
    }
    cf_executor_free(ex);
    for (int i = 0; i < n; i++) {
        check_slot(&s[i]);
        cf_future_release(s[i].f);
    }
}

/* Rounds of submit / cancel / as_completed / map / free on thread and
 * process pools, checking the invariants after each. */
static void test_invariants_hold(void)
{
    for (int r = 0; r < ROUNDS; r++)
        one_round(r);
}

/* Standalone futures and continuations under allocation failures. */
static void test_promises_and_continuations(void)
{
    for (int r = 0; r < 200; r++) {
        cf_future *a = cf_future_new();
        if (a == NULL) {
            ASSERT_ST(cf_last_error(), CF_ENOMEM);
            continue;
        }
        cf_future *b = cf_then(a, NULL, plus_one, 0);
        cf_future *all = cf_when_all(&a, 1);
        int rc = cf_set_result_i64(a, r);
        ASSERT(rc == CF_OK || rc == CF_ENOMEM);
        ASSERT(cf_done(a));
        if (b != NULL) {
            ASSERT(cf_done(b));
            cf_future_release(b);
        }
        if (all != NULL) {
            ASSERT(cf_done(all));
            cf_future_release(all);
        }
        cf_future_release(a);
    }
}

TEST_MAIN(T(test_invariants_hold), T(test_promises_and_continuations))

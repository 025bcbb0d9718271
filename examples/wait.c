/*
 * wait.c -- the article's second pattern: submit every task, then
 * wait(futures, timeout=0.5) and report what finished in time and what is
 * still pending.  Every sum is checked against n(n+1)/2.
 */
#include "cfutures.h"

#include <inttypes.h>
#include <stdio.h>

#define NWORK 4
static const int64_t WORK_LIST[NWORK] = {10000, 100000, 1000000, 10000000};

/* The sum of 1..n; the empty asm keeps the compiler from folding the loop. */
static void sum_to(cf_call *c)
{
    int64_t n = cf_arg_i64(c), s = 0;
    for (int64_t i = 1; i <= n; i++) {
        s += i;
        __asm__ volatile("" : "+r"(s));
    }
    cf_return_i64(c, s);
}

int main(void)
{
    cf_executor *ex = cf_thread_pool(NULL);
    cf_future *fs[NWORK], *done[NWORK], *pending[NWORK];
    size_t ndone, npending;
    for (int i = 0; i < NWORK; i++)
        if ((fs[i] = cf_submit_i64(ex, sum_to, WORK_LIST[i])) == NULL) {
            fprintf(stderr, "wait: %s\n", cf_strerror(cf_last_error()));
            return 1;
        }
    /* CF_OK: all done in time; CF_ETIMEDOUT: some are still pending. */
    int rc = cf_wait(fs, NWORK, 0.5, CF_ALL_COMPLETED, done, &ndone, pending,
                     &npending);
    printf("after 0.5 s: %zu done, %zu pending (%s)\n", ndone, npending,
           cf_err_name(rc));
    int bad = rc != CF_OK && rc != CF_ETIMEDOUT;
    for (int i = 0; i < NWORK; i++) { /* pending ones: wait for them */
        int64_t v = 0, n = WORK_LIST[i];
        rc = cf_result_i64(fs[i], CF_FOREVER, &v);
        printf("sum_to(%" PRId64 ") = %" PRId64 "\n", n, v);
        bad += rc != CF_OK || v != n * (n + 1) / 2;
        cf_future_release(fs[i]);
    }
    cf_executor_free(ex);
    if (bad)
        fprintf(stderr, "wait: FAILED (%d wrong)\n", bad);
    return bad ? 1 : 0;
}

/*
 * as_completed.c -- the article's third pattern: submit every task, then
 * take the futures as they complete (as_completed), whatever their order.
 * Every sum is checked against n(n+1)/2.
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
    cf_future *fs[NWORK], *f;
    for (int i = 0; i < NWORK; i++)
        if ((fs[i] = cf_submit_i64(ex, sum_to, WORK_LIST[i])) == NULL) {
            fprintf(stderr, "as_completed: %s\n", cf_strerror(cf_last_error()));
            return 1;
        }
    cf_as_completed *it = cf_as_completed_new(fs, NWORK, CF_FOREVER);
    int rc, seen = 0, bad = 0;
    while (it && (rc = cf_as_completed_next(it, &f)) == CF_OK) {
        int64_t v = 0, n = 0;
        for (int i = 0; i < NWORK; i++) /* which input was it? */
            if (fs[i] == f)
                n = WORK_LIST[i];
        bad += cf_result_i64(f, 0, &v) != CF_OK || v != n * (n + 1) / 2;
        printf("Future Result: %" PRId64 ", Done: %d, Cancelled: %d\n", v,
               cf_done(f), cf_cancelled(f));
        seen++;
    }
    cf_as_completed_free(it);
    for (int i = 0; i < NWORK; i++)
        cf_future_release(fs[i]);
    cf_executor_free(ex);
    if (seen != NWORK || bad) {
        fprintf(stderr, "as_completed: FAILED (%d of %d seen, %d wrong)\n",
                seen, NWORK, bad);
        return 1;
    }
    return 0;
}

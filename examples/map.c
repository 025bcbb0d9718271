/*
 * map.c -- the article's first pattern: executor.map(sum_generator,
 * WORK_LIST) on a thread pool.  Results come back in input order; each is
 * checked against n(n+1)/2.
 */
#include "cfutures.h"

#include <inttypes.h>
#include <stdio.h>

static const int64_t WORK_LIST[] = {10000, 100000, 1000000, 10000000};
#define NWORK (sizeof WORK_LIST / sizeof WORK_LIST[0])

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
    cf_executor *ex = cf_thread_pool(NULL); /* ThreadPoolExecutor() */
    cf_map *m = ex ? cf_map_i64(ex, sum_to, WORK_LIST, NWORK, NULL) : NULL;
    if (m == NULL) {
        fprintf(stderr, "map: %s\n", cf_strerror(cf_last_error()));
        return 1;
    }
    int64_t v;
    size_t i = 0;
    int rc, bad = 0;
    while ((rc = cf_map_next_i64(m, &v)) == CF_OK) { /* in input order */
        int64_t n = i < NWORK ? WORK_LIST[i] : -1;
        printf("sum_to(%" PRId64 ") = %" PRId64 "\n", n, v);
        bad += v != n * (n + 1) / 2;
        i++;
    }
    cf_map_free(m);
    cf_executor_free(ex); /* the end of Python's with-block */
    if (rc != CF_END || i != NWORK || bad) {
        fprintf(stderr, "map: FAILED (%s, %zu results, %d wrong)\n",
                cf_err_name(rc), i, bad);
        return 1;
    }
    return 0;
}

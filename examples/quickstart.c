#include <cfutures.h>
#include <inttypes.h>
#include <stdio.h>

static void sum_to(cf_call *c) /* a task: same signature on every executor */
{
    int64_t n = cf_arg_i64(c), s = 0;
    for (int64_t i = 1; i <= n; i++)
        s += i;
    cf_return_i64(c, s);
}

int main(void)
{
    const int64_t work[4] = {10000, 100000, 1000000, 10000000};
    cf_executor *ex = cf_thread_pool(NULL); /* ThreadPoolExecutor() */
    cf_future *fs[4];
    for (int i = 0; i < 4; i++)
        fs[i] = cf_submit_i64(ex, sum_to, work[i]); /* executor.submit */
    cf_as_completed *it = cf_as_completed_new(fs, 4, CF_FOREVER);
    int got = 0;
    for (cf_future *f; cf_as_completed_next(it, &f) == CF_OK; got++) {
        int64_t s;
        if (cf_result_i64(f, CF_FOREVER, &s) == CF_OK)
            printf("%" PRId64 "\n", s);
    }
    cf_as_completed_free(it);
    for (int i = 0; i < 4; i++)
        cf_future_release(fs[i]);
    cf_executor_free(ex); /* shutdown(wait=True), then free */
    return got == 4 ? 0 : 1;
}

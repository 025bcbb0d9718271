/*
 * consumer.c -- a program built out of tree against an installed cfutures
 * (tests/install/test-install.sh builds it with pkg-config and with CMake's
 * find_package).  Prints "consumer ok <sum>" and exits 0 when the library
 * works and its header and runtime versions agree.
 */
#include <cfutures.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

static void sum_to(cf_call *c)
{
    int64_t n = cf_arg_i64(c), s = 0;
    for (int64_t i = 1; i <= n; i++)
        s += i;
    cf_return_i64(c, s);
}

int main(void)
{
    if (strcmp(cf_version(), CF_VERSION_STRING) != 0) {
        fprintf(stderr, "consumer: header %s, library %s\n", CF_VERSION_STRING,
                cf_version());
        return 1;
    }
    cf_executor *ex = cf_thread_pool(&(cf_thread_pool_opts){.max_workers = 2});
    if (ex == NULL) {
        fprintf(stderr, "consumer: cf_thread_pool: %s\n",
                cf_strerror(cf_last_error()));
        return 1;
    }
    cf_future *f = cf_submit_i64(ex, sum_to, 1000);
    int64_t sum = 0;
    int rc = f ? cf_result_i64(f, 30.0, &sum) : cf_last_error();
    cf_future_release(f);
    cf_executor_free(ex);
    if (rc != CF_OK) {
        fprintf(stderr, "consumer: %s\n", cf_strerror(rc));
        return 1;
    }
    printf("consumer ok %" PRId64 "\n", sum);
    return sum == 500500 ? 0 : 1;
}

/*
 * consumer_mpi.c -- an out-of-tree program using an installed cfutures_mpi
 * (tests/install/test-install.sh builds it with pkg-config cfutures-mpi and
 * with CMake's cfutures::mpi, and runs it under mpirun -np 2).  SPMD: rank
 * 0 gets the executor and prints "consumer ok <sum>"; rank 1 serves.
 */
#include <cfutures.h>
#include <cfutures_mpi.h>
#include <inttypes.h>
#include <stdio.h>

static void sum_to(cf_call *c)
{
    int64_t n = cf_arg_i64(c), s = 0;
    for (int64_t i = 1; i <= n; i++)
        s += i;
    cf_return_i64(c, s);
}

int main(void)
{
    cf_executor *ex = NULL;
    int rc = cf_mpi_comm_executor(MPI_COMM_WORLD, 0, NULL, &ex);
    if (rc != CF_OK) {
        fprintf(stderr, "consumer_mpi: cf_mpi_comm_executor: %s\n",
                cf_strerror(rc));
        return 1;
    }
    if (ex == NULL) { /* a worker rank: the root is done */
        MPI_Finalize();
        return 0;
    }
    cf_future *f = cf_submit_i64(ex, sum_to, 1000);
    int64_t sum = 0;
    rc = f ? cf_result_i64(f, 60.0, &sum) : cf_last_error();
    cf_future_release(f);
    cf_executor_free(ex); /* releases the worker ranks */
    MPI_Finalize();
    if (rc != CF_OK) {
        fprintf(stderr, "consumer_mpi: %s\n", cf_strerror(rc));
        return 1;
    }
    printf("consumer ok %" PRId64 "\n", sum);
    return sum == 500500 ? 0 : 1;
}

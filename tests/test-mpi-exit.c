/*
 * Exiting with a live MPI pool (issue 15.1): MPI_Finalize -- the library's
 * at exit, or the program's own -- shuts every live pool down first (its
 * queued and running tasks finish), so the program exits cleanly instead
 * of crashing under the pool's manager thread.
 *   test-mpi-exit spawn-idle | spawn-busy      a singleton, returns from main
 *   mpirun -np 3 test-mpi-exit comm-return     root returns from main
 *   mpirun -np 3 test-mpi-exit comm-finalize   root calls MPI_Finalize
 * The exit status is the verdict; a check at exit (registered before MPI
 * is initialized, so it runs after the finalize) checks the futures.
 */
#include "cfutures_mpi.h"
#include "test.h"

#include <unistd.h>

enum { NTASKS = 6 };
static cf_future *fs[NTASKS];
static int nfs;
static bool is_root;

static void nap(cf_call *c)
{
    usleep((useconds_t)cf_arg_i64(c) * 1000);
    cf_return_i64(c, cf_arg_i64(c));
}

/* At exit, after MPI_Finalize: every future ended with its result. */
static void check_futures(void)
{
    if (!is_root)
        return;
    for (int i = 0; i < nfs; i++) {
        int64_t v;
        if (!cf_done(fs[i]) || cf_result_i64(fs[i], 0, &v) != CF_OK ||
            v != 100 + i) {
            fprintf(stderr, "not ok - future %d did not finish before exit\n",
                    i);
            _exit(1);
        }
        cf_future_release(fs[i]);
    }
    printf("ok - exit with a live MPI pool (%d tasks finished)\n", nfs);
}

static void submit_some(cf_executor *ex)
{
    for (nfs = 0; nfs < NTASKS; nfs++) {
        fs[nfs] = cf_submit_i64(ex, nap, 100 + nfs);
        ASSERT(fs[nfs] != NULL);
    }
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "spawn-idle";
    bool comm = strncmp(mode, "comm", 4) == 0;
    atexit(check_futures); /* before MPI: runs after its finalize */
    cf_executor *ex = NULL;
    if (comm) {
        if (strcmp(mode, "comm-finalize") == 0) {
            int provided;
            MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
        }
        ASSERT_OK(cf_mpi_comm_executor(MPI_COMM_WORLD, 0, NULL, &ex));
    } else {
        ASSERT_OK(cf_mpi_worker_main(&argc, &argv));
        ex = cf_mpi_pool(&(cf_mpi_opts){.max_workers = 2});
        ASSERT(ex != NULL);
    }
    is_root = ex != NULL;
    if (ex != NULL && strcmp(mode, "spawn-idle") != 0)
        submit_some(ex);
    if (strcmp(mode, "comm-finalize") == 0)
        MPI_Finalize(); /* the pool is live on the root */
    return 0;           /* the pool is never freed */
}

/*
 * A worker rank that dies (issue 15.6), under
 *   mpirun --enable-recovery -np 3 test-mpi-dead kill | stop
 * kill: a task SIGKILLs its own rank; stop: a task SIGSTOPs it (it goes
 * silent: the heartbeats stop, and the liveness timeout finds it).  The
 * task's future ends with CF_ECRASHED naming the rank and its host, the
 * pool goes on with the other rank, and cf_executor_free returns.
 */
#include "cfutures_mpi.h"
#include "test.h"

#include <signal.h>
#include <unistd.h>

static void sum_to(cf_call *c)
{
    int64_t n = cf_arg_i64(c), s = 0;
    for (int64_t i = 1; i <= n; i++)
        s += i;
    cf_return_i64(c, s);
}

static void nap(cf_call *c)
{
    usleep((useconds_t)cf_arg_i64(c) * 1000);
    cf_return_i64(c, cf_arg_i64(c));
}

/* Writes its pid to the file named by its argument, then stops or dies. */
static void die_task(cf_call *c)
{
    size_t n;
    const char *arg = cf_arg(c, &n);
    char path[256];
    snprintf(path, sizeof path, "%.*s", (int)n, arg);
    bool stop = path[strlen(path) - 1] == 's';
    FILE *f = fopen(path, "w");
    if (f != NULL) {
        fprintf(f, "%d\n", (int)getpid());
        fclose(f);
    }
    raise(stop ? SIGSTOP : SIGKILL);
    cf_return_i64(c, 1);
}

/* The file item 13 leaves: one per job (every rank sees the same job
 * id). */
static void chunk_marker(char *path, size_t size)
{
    const char *job = getenv("OMPI_MCA_ess_base_jobid");
    snprintf(path, size, "/tmp/cf-mpi-dead-chunk-%s", job ? job : "0");
}

/* A map item: item 13 kills its rank (once: it leaves a file). */
static void item_or_die(cf_call *c)
{
    int64_t v = cf_arg_i64(c);
    if (v == 13) {
        char path[64];
        chunk_marker(path, sizeof path);
        if (access(path, F_OK) != 0) {
            FILE *f = fopen(path, "w");
            if (f != NULL)
                fclose(f);
            raise(SIGKILL);
        }
    }
    cf_return_i64(c, 2 * v);
}

/* chunk mode: a rank dies inside a map's chunk: that item fails with
 * CF_ECRASHED (and its chunk-mates not answered yet), every other chunk
 * runs on the other rank. */
static void chunk_case(cf_executor *ex)
{
    enum { N = 40 };
    int64_t in[N];
    for (int i = 0; i < N; i++)
        in[i] = i;
    cf_map *m = cf_map_i64(ex, item_or_die, in, N,
                           &(cf_map_opts){.chunksize = 8,
                                          .timeout = 120,
                                          .continue_on_error = true});
    for (int i = 0; i < N; i++) {
        int64_t v;
        int rc = cf_map_next_i64(m, &v);
        if (i == 13) {
            ASSERT_ST(rc, CF_ECRASHED);
        } else if (i / 8 == 13 / 8 && rc == CF_ECRASHED) {
            /* its chunk-mates without an answer yet fail too (a rank
             * answers a chunk in batches): never run twice */
        } else {
            ASSERT_OK(rc);
            ASSERT_EQ(v, 2 * i);
        }
    }
    cf_map_free(m);
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "kill";
    bool stop = strcmp(mode, "stop") == 0;
    cf_set_default_error_hook(NULL, NULL);
    cf_executor *ex = NULL;
    ASSERT_OK(cf_mpi_comm_executor(
        MPI_COMM_WORLD, 0, &(cf_mpi_opts){.liveness_timeout = 2.0}, &ex));
    if (ex == NULL) /* a serving rank: MPI_Finalize would wait for the */
        _exit(0);   /* dead one (Open MPI 4.1 has no fault tolerance) */
    char path[64];
    snprintf(path, sizeof path, "/tmp/cf-mpi-dead-%d.%c", (int)getpid(),
             stop ? 's' : 'k');
    if (strcmp(mode, "chunk") == 0) {
        char cpath[64];
        chunk_marker(cpath, sizeof cpath);
        unlink(cpath);
        chunk_case(ex);
        unlink(cpath);
        cf_executor_free(ex);
        printf("ok - a rank dead inside a chunk fails one item\n");
        fflush(stdout);
        _exit(0);
    }
    /* Warm up: both ranks answer. */
    cf_future *w[4];
    for (int i = 0; i < 4; i++)
        w[i] = cf_submit_i64(ex, nap, 20);
    for (int i = 0; i < 4; i++) {
        ASSERT_OK(cf_result(w[i], 60, NULL, NULL));
        cf_future_release(w[i]);
    }
    cf_future *bad = cf_submit(ex, die_task, path, strlen(path));
    cf_future *good[20];
    for (int i = 0; i < 20; i++)
        good[i] = cf_submit_i64(ex, i % 2 ? sum_to : nap, 10 + i);
    cf_error e;
    ASSERT_OK(cf_exception(bad, 120, &e));
    ASSERT_ST(e.status, CF_ECRASHED);
    printf("# %s\n", e.message);
    ASSERT(strstr(e.message, "MPI rank ") != NULL);
    ASSERT(strstr(e.message, " on host ") != NULL);
    for (int i = 0; i < 20; i++) {
        int64_t v;
        ASSERT_OK(cf_result_i64(good[i], 120, &v));
        ASSERT_EQ(v, i % 2 ? (int64_t)(10 + i) * (11 + i) / 2 : 10 + i);
        cf_future_release(good[i]);
    }
    cf_future_release(bad);
    /* The pool goes on with the rank that is left. */
    cf_future *f = cf_submit_i64(ex, sum_to, 100);
    int64_t v;
    ASSERT_OK(cf_result_i64(f, 60, &v));
    ASSERT_EQ(v, 5050);
    cf_future_release(f);
    cf_executor_free(ex);
    FILE *pf = fopen(path, "r");
    int pid = 0;
    if (pf != NULL) {
        if (fscanf(pf, "%d", &pid) != 1)
            pid = 0;
        fclose(pf);
    }
    unlink(path);
    if (stop && pid > 0)
        kill(pid, SIGKILL); /* the stopped rank */
    printf("ok - a dead rank (%s) fails its task alone\n", mode);
    fflush(stdout);
    _exit(0); /* MPI_Finalize waits for every rank, the dead one too */
}

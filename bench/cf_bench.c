/*
 * cf_bench.c -- cfutures' side of the benchmarks (issue 8).
 *
 *   cf_bench BENCH [N]
 *   cf_bench --list          the benches this build has, one a line
 *
 * Runs one benchmark once (after a short warm-up inside the process) and
 * prints one machine-readable line on stdout:
 *
 *   RESULT <bench> cfutures <n> <value> <unit>
 *
 * bench/run.py runs it several times, interleaved with the peers, and
 * computes medians and ratios.  Every bench checks its results and exits 1
 * on a wrong one (a fast wrong answer is not a result).  Exit 2: bad usage.
 *
 * Benches (2 workers; the trivial task returns its int64 argument + 1):
 *   thread_submit_result  submit N tasks, then cf_result each in order  ns/task
 *   thread_map            cf_map_i64 over N inputs, results in order   ns/item
 *   future_set_result     new, set_result_i64, result_i64, release    ns/future
 *   as_completed_done     as_completed over N finished futures        ns/future
 *   process_submit_result thread_submit_result on a process pool      ns/task
 *   process_map_chunked   thread_map on a process pool, chunksize 256  ns/item
 *   seed_speedup_thread   serial time / map time, the sum workload     x
 *   seed_speedup_process  the same on a process pool                   x
 *   memory_per_future     RSS growth per pending standalone future     B
 *   nested_*              fork-join kernels (peers/nested_kernels.h)
 */
#include "cfutures.h"
#ifdef CF_BENCH_MPI
#include "cfutures_mpi.h" /* cf_bench built against cfutures_mpi */
#endif

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define WORKERS 2

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static _Noreturn void die(const char *what, int status)
{
    fprintf(stderr, "cf_bench: %s failed: %s (%s)\n", what, cf_strerror(status),
            cf_err_name(status));
    exit(1);
}

static _Noreturn void wrong(const char *bench, size_t i, int64_t got,
                            int64_t want)
{
    fprintf(stderr,
            "cf_bench: %s: WRONG result for item %zu: got %" PRId64
            ", expected %" PRId64 "\n",
            bench, i, got, want);
    exit(1);
}

static void report(const char *bench, size_t n, double value, const char *unit)
{
    printf("RESULT %s cfutures %zu %.6g %s\n", bench, n, value, unit);
    fflush(stdout);
}

static void *xmalloc(size_t size)
{
    void *p = malloc(size ? size : 1);
    if (p == NULL) {
        fprintf(stderr, "cf_bench: out of memory\n");
        exit(1);
    }
    return p;
}

/* ------------------------------------------------------------------------ */
/* Tasks                                                                     */
/* ------------------------------------------------------------------------ */

/* The trivial task: returns its argument + 1. */
static void inc(cf_call *c)
{
    cf_return_i64(c, cf_arg_i64(c) + 1);
}

/* The article's workload: the sum of 1..n, really O(n): the empty asm
 * hides s from the optimiser, which could otherwise fold the loop into
 * n(n+1)/2. */
static int64_t sum_to_n(int64_t n)
{
    int64_t s = 0;
    for (int64_t i = 1; i <= n; i++) {
        s += i;
        __asm__ volatile("" : "+r"(s));
    }
    return s;
}

static void sum_task(cf_call *c)
{
    cf_return_i64(c, sum_to_n(cf_arg_i64(c)));
}

/* ------------------------------------------------------------------------ */
/* Executors                                                                 */
/* ------------------------------------------------------------------------ */

/* mpi_* benches run under mpirun: rank 0 measures on the MPI executor
 * made in main, the other ranks serve it. */
static cf_executor *mpi_ex;

static cf_executor *make_pool(bool process)
{
    if (mpi_ex != NULL)
        return mpi_ex;
    cf_executor *ex =
        process
            ? cf_process_pool(&(cf_process_pool_opts){.max_workers = WORKERS})
            : cf_thread_pool(&(cf_thread_pool_opts){.max_workers = WORKERS});
    if (ex == NULL)
        die(process ? "cf_process_pool" : "cf_thread_pool", cf_last_error());
    return ex;
}

/* Submits n trivial tasks, then takes each result in order.  Also the
 * warm-up, with the same n: it starts every worker and touches the memory
 * that n pending futures take, as the peers touch their n result slots
 * before they start the clock (bench/README.md: a first-touch page fault
 * costs about 11 us on the VMs we measure on). */
static void submit_result(const char *bench, cf_executor *ex, size_t n,
                          cf_future **fs)
{
    for (size_t i = 0; i < n; i++) {
        fs[i] = cf_submit_i64(ex, inc, (int64_t)i);
        if (fs[i] == NULL)
            die("cf_submit_i64", cf_last_error());
    }
    for (size_t i = 0; i < n; i++) {
        int64_t v = 0;
        int rc = cf_result_i64(fs[i], CF_FOREVER, &v);
        if (rc != CF_OK)
            die("cf_result_i64", rc);
        if (v != (int64_t)i + 1)
            wrong(bench, i, v, (int64_t)i + 1);
        cf_future_release(fs[i]);
    }
}

static void bench_submit_result(const char *bench, bool process, size_t n)
{
    cf_executor *ex = make_pool(process);
    cf_future **fs = xmalloc(n * sizeof *fs);
    submit_result(bench, ex, n, fs);
    double t0 = now();
    submit_result(bench, ex, n, fs);
    double t1 = now();
    cf_executor_free(ex);
    free(fs);
    report(bench, n, (t1 - t0) * 1e9 / (double)n, "ns/task");
}

static void map_items(const char *bench, cf_executor *ex, const int64_t *items,
                      size_t n, size_t chunksize)
{
    cf_map *m = cf_map_i64(ex, inc, items, n,
                           &(cf_map_opts){.chunksize = chunksize});
    if (m == NULL)
        die("cf_map_i64", cf_last_error());
    for (size_t i = 0; i < n; i++) {
        int64_t v = 0;
        int rc = cf_map_next_i64(m, &v);
        if (rc != CF_OK)
            die("cf_map_next_i64", rc);
        if (v != items[i] + 1)
            wrong(bench, i, v, items[i] + 1);
    }
    int64_t extra;
    int rc = cf_map_next_i64(m, &extra);
    if (rc != CF_END)
        die("cf_map_next_i64 (end)", rc);
    cf_map_free(m);
}

static void bench_map(const char *bench, bool process, size_t n,
                      size_t chunksize)
{
    cf_executor *ex = make_pool(process);
    int64_t *items = xmalloc(n * sizeof *items);
    for (size_t i = 0; i < n; i++)
        items[i] = (int64_t)i;
    size_t warm = n < 4096 ? n : 4096;
    map_items(bench, ex, items, warm, chunksize);
    double t0 = now();
    map_items(bench, ex, items, n, chunksize);
    double t1 = now();
    cf_executor_free(ex);
    free(items);
    report(bench, n, (t1 - t0) * 1e9 / (double)n, "ns/item");
}

/* ------------------------------------------------------------------------ */
/* Futures alone                                                             */
/* ------------------------------------------------------------------------ */

static void set_result_loop(const char *bench, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        cf_future *f = cf_future_new();
        if (f == NULL)
            die("cf_future_new", cf_last_error());
        int rc = cf_set_result_i64(f, (int64_t)i);
        if (rc != CF_OK)
            die("cf_set_result_i64", rc);
        int64_t v = -1;
        rc = cf_result_i64(f, CF_FOREVER, &v);
        if (rc != CF_OK)
            die("cf_result_i64", rc);
        if (v != (int64_t)i)
            wrong(bench, i, v, (int64_t)i);
        cf_future_release(f);
    }
}

static void bench_future_set_result(const char *bench, size_t n)
{
    set_result_loop(bench, n < 10000 ? n : 10000);
    double t0 = now();
    set_result_loop(bench, n);
    double t1 = now();
    report(bench, n, (t1 - t0) * 1e9 / (double)n, "ns/future");
}

/* Iterates as_completed over n finished futures: the timed part is what
 * `for f in as_completed(fs): f.result()` does in Python (start, every
 * next, the end), not the creation of the futures. */
static void bench_as_completed_done(const char *bench, size_t n)
{
    cf_future **fs = xmalloc(n * sizeof *fs);
    for (size_t i = 0; i < n; i++) {
        fs[i] = cf_future_new();
        if (fs[i] == NULL)
            die("cf_future_new", cf_last_error());
        int rc = cf_set_result_i64(fs[i], (int64_t)i);
        if (rc != CF_OK)
            die("cf_set_result_i64", rc);
    }
    double t0 = now();
    cf_as_completed *it = cf_as_completed_new(fs, n, CF_FOREVER);
    if (it == NULL)
        die("cf_as_completed_new", cf_last_error());
    size_t count = 0;
    int64_t sum = 0;
    for (;;) {
        cf_future *f;
        int rc = cf_as_completed_next(it, &f);
        if (rc == CF_END)
            break;
        if (rc != CF_OK)
            die("cf_as_completed_next", rc);
        int64_t v = 0;
        rc = cf_result_i64(f, 0, &v);
        if (rc != CF_OK)
            die("cf_result_i64", rc);
        sum += v;
        count++;
    }
    cf_as_completed_free(it);
    double t1 = now();
    int64_t want = (int64_t)n * ((int64_t)n - 1) / 2;
    if (count != n || sum != want)
        wrong(bench, count, sum, want);
    for (size_t i = 0; i < n; i++)
        cf_future_release(fs[i]);
    free(fs);
    report(bench, n, (t1 - t0) * 1e9 / (double)n, "ns/future");
}

/* ------------------------------------------------------------------------ */
/* Speedup on the article's workload                                         */
/* ------------------------------------------------------------------------ */

#define SEED_SIZES 4
#define SEED_REPEAT 16
#define SEED_TASKS (SEED_SIZES * SEED_REPEAT)

/* The article's four sizes, each 16 times, in a fixed shuffled order
 * (Fisher-Yates driven by a fixed LCG: the same order on every run). */
static void seed_workload(int64_t work[SEED_TASKS])
{
    static const int64_t sizes[SEED_SIZES] = {10000, 100000, 1000000, 10000000};
    for (int i = 0; i < SEED_TASKS; i++)
        work[i] = sizes[i % SEED_SIZES];
    uint64_t x = 0x2545F4914F6CDD1Dull;
    for (int i = SEED_TASKS - 1; i > 0; i--) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        int j = (int)((x >> 33) % (uint64_t)(i + 1));
        int64_t t = work[i];
        work[i] = work[j];
        work[j] = t;
    }
}

static double serial_loop(const int64_t work[SEED_TASKS],
                          int64_t serial[SEED_TASKS])
{
    double t0 = now();
    for (int i = 0; i < SEED_TASKS; i++)
        serial[i] = sum_to_n(work[i]);
    return now() - t0;
}

/* Speedup of a map over the pool against a serial loop of the same calls.
 * The serial loop runs before the pool exists, so that nothing of the pool
 * competes with it: it is the time a program without a pool would take.
 * Each side is the best of two runs (the machines drift in speed). */
static void bench_seed_speedup(const char *bench, bool process)
{
    int64_t work[SEED_TASKS], serial[SEED_TASKS];
    seed_workload(work);

    double ts = serial_loop(work, serial), ts2 = serial_loop(work, serial);
    if (ts2 < ts)
        ts = ts2;

    cf_executor *ex = make_pool(process);
    /* Warm-up: starts the workers, faults in the code. */
    int64_t small[2 * WORKERS];
    for (int i = 0; i < 2 * WORKERS; i++)
        small[i] = 1000;
    cf_map *m = cf_map_i64(ex, sum_task, small, 2 * WORKERS, NULL);
    if (m == NULL)
        die("cf_map_i64", cf_last_error());
    int64_t v;
    while (cf_map_next_i64(m, &v) == CF_OK)
        ;
    cf_map_free(m);

    /* The map over the pool, best of two runs like the serial loop. */
    double tm = 0;
    for (int run = 0; run < 2; run++) {
        double t0 = now();
        m = cf_map_i64(ex, sum_task, work, SEED_TASKS, NULL);
        if (m == NULL)
            die("cf_map_i64", cf_last_error());
        for (int i = 0; i < SEED_TASKS; i++) {
            int rc = cf_map_next_i64(m, &v);
            if (rc != CF_OK)
                die("cf_map_next_i64", rc);
            if (v != serial[i] || v != work[i] * (work[i] + 1) / 2)
                wrong(bench, (size_t)i, v, work[i] * (work[i] + 1) / 2);
        }
        double t = now() - t0;
        cf_map_free(m);
        if (run == 0 || t < tm)
            tm = t;
    }
    cf_executor_free(ex);
    fprintf(stderr, "cf_bench: %s: serial %.4f s, map %.4f s\n", bench, ts, tm);
    report(bench, SEED_TASKS, ts / tm, "x");
}

/* ------------------------------------------------------------------------ */
/* Memory                                                                    */
/* ------------------------------------------------------------------------ */

static long resident_bytes(void)
{
    FILE *fp = fopen("/proc/self/statm", "r");
    long size = 0, resident = 0;
    if (fp == NULL || fscanf(fp, "%ld %ld", &size, &resident) != 2) {
        fprintf(stderr, "cf_bench: cannot read /proc/self/statm\n");
        exit(1);
    }
    fclose(fp);
    return resident * sysconf(_SC_PAGESIZE);
}

/* RSS growth per pending standalone future.  The array that holds the
 * pointers is allocated and touched before the first reading, so it is
 * not counted (Python's peer does the same with its list). */
static void bench_memory_per_future(const char *bench, size_t n)
{
    cf_future **fs = xmalloc(n * sizeof *fs);
    memset(fs, 0, n * sizeof *fs);
    /* Warm the allocator with one future made and freed. */
    cf_future_release(cf_future_new());
    long before = resident_bytes();
    for (size_t i = 0; i < n; i++) {
        fs[i] = cf_future_new();
        if (fs[i] == NULL)
            die("cf_future_new", cf_last_error());
    }
    long after = resident_bytes();
    for (size_t i = 0; i < n; i++) {
        if (cf_future_state(fs[i]) != CF_PENDING)
            wrong(bench, i, cf_future_state(fs[i]), CF_PENDING);
        cf_future_release(fs[i]);
    }
    free(fs);
    report(bench, n, (double)(after - before) / (double)n, "B");
}

/* ------------------------------------------------------------------------ */
/* Nested (fork-join) kernels: spawn = cf_submit, join = cf_result         */
/* ------------------------------------------------------------------------ */

static cf_executor *nk_ex;

typedef struct nk_group {
    cf_future *fs[32];
    int n;
} nk_group;

typedef struct nk_thunk {
    void (*fn)(void *);
    void *arg;
} nk_thunk;

static void nk_task(cf_call *c)
{
    nk_thunk t;
    memcpy(&t, cf_arg(c, NULL), sizeof t);
    t.fn(t.arg);
}

static void nk_spawn(nk_group *g, void (*fn)(void *), void *arg)
{
    nk_thunk t = {fn, arg};
    cf_future *f = cf_submit(nk_ex, nk_task, &t, sizeof t);
    if (f == NULL)
        die("cf_submit", cf_last_error());
    g->fs[g->n++] = f;
}

static void nk_wait(nk_group *g)
{
    for (int i = 0; i < g->n; i++) {
        int rc = cf_result(g->fs[i], CF_FOREVER, NULL, NULL);
        if (rc != CF_OK)
            die("cf_result", rc);
        cf_future_release(g->fs[i]);
    }
    g->n = 0;
}

static const char *nk_impl = "cfutures";
#define NK_GROUP nk_group
#define NK_INIT(g) ((g).n = 0)
#define NK_SPAWN(g, f, a) nk_spawn(&(g), (f), (a))
#define NK_WAIT(g) nk_wait(&(g))
#include "peers/nested_kernels.h"

static void nk_run_root(void (*root)(void *), void *frame)
{
    nk_group g;
    NK_INIT(g);
    nk_spawn(&g, root, frame);
    nk_wait(&g);
}

/* ------------------------------------------------------------------------ */

static const struct {
    const char *name;
    size_t default_n;
} BENCHES[] = {
    {"thread_submit_result", 200000},
    {"thread_map", 200000},
    {"future_set_result", 1000000},
    {"as_completed_done", 1000000},
    {"process_submit_result", 100000},
    {"process_map_chunked", 1000000},
    {"seed_speedup_thread", 64},
    {"seed_speedup_process", 64},
    {"memory_per_future", 1000000},
    {"nested_fib_nocutoff", 25},
    {"nested_fib", 38},
    {"nested_nqueens", 12},
    {"nested_nqueens_placement", 12},
    {"nested_sort", 16777216},
#ifdef CF_BENCH_MPI
    {"mpi_submit_result", 20000},
    {"mpi_map_chunked", 1000000},
#endif
};

static _Noreturn void usage(void)
{
    fprintf(stderr, "usage: cf_bench BENCH [N] | cf_bench --list\nbenches:");
    for (size_t i = 0; i < sizeof BENCHES / sizeof BENCHES[0]; i++)
        fprintf(stderr, " %s", BENCHES[i].name);
    fprintf(stderr, "\n");
    exit(2);
}

int main(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "--list") == 0) {
        for (size_t i = 0; i < sizeof BENCHES / sizeof BENCHES[0]; i++)
            printf("%s\n", BENCHES[i].name);
        return 0;
    }
    if (argc < 2 || argc > 3)
        usage();
    const char *bench = argv[1];
    size_t n = 0;
    bool known = false;
    for (size_t i = 0; i < sizeof BENCHES / sizeof BENCHES[0]; i++)
        if (strcmp(bench, BENCHES[i].name) == 0) {
            known = true;
            n = BENCHES[i].default_n;
        }
    if (!known)
        usage();
    if (argc == 3) {
        char *end;
        unsigned long long v = strtoull(argv[2], &end, 10);
        if (*end != '\0' || v == 0)
            usage();
        n = (size_t)v;
    }

#ifdef CF_BENCH_MPI
    if (strncmp(bench, "mpi_", 4) == 0) {
        if (cf_mpi_comm_executor(MPI_COMM_WORLD, 0, NULL, &mpi_ex) != CF_OK)
            die("cf_mpi_comm_executor", CF_EINVAL);
        if (mpi_ex == NULL) { /* a worker rank: served until rank 0 ended */
            MPI_Finalize();
            return 0;
        }
        if (strcmp(bench, "mpi_submit_result") == 0)
            bench_submit_result(bench, true, n);
        else
            bench_map(bench, true, n, 256);
        MPI_Finalize();
        return 0;
    }
#endif
    if (strncmp(bench, "nested_", 7) == 0) {
        nk_ex = make_pool(false);
        int rc = nk_main(bench, n);
        cf_executor_free(nk_ex);
        return rc;
    }
    if (strcmp(bench, "thread_submit_result") == 0)
        bench_submit_result(bench, false, n);
    else if (strcmp(bench, "process_submit_result") == 0)
        bench_submit_result(bench, true, n);
    else if (strcmp(bench, "thread_map") == 0)
        bench_map(bench, false, n, 0);
    else if (strcmp(bench, "process_map_chunked") == 0)
        bench_map(bench, true, n, 256);
    else if (strcmp(bench, "future_set_result") == 0)
        bench_future_set_result(bench, n);
    else if (strcmp(bench, "as_completed_done") == 0)
        bench_as_completed_done(bench, n);
    else if (strcmp(bench, "seed_speedup_thread") == 0)
        bench_seed_speedup(bench, false);
    else if (strcmp(bench, "seed_speedup_process") == 0)
        bench_seed_speedup(bench, true);
    else if (strcmp(bench, "memory_per_future") == 0)
        bench_memory_per_future(bench, n);
    return 0;
}

/*
 * demo.c -- the reference article's three concurrent.futures patterns in C.
 *
 *   demo [--executor thread|process|mpi] [--workers N] [--scale K]
 *        [--trace FILE.json]
 *
 *   (a) map over WORK_LIST, results in input order
 *   (b) submit all, then wait with a 0.5 s time limit (ALL_COMPLETED);
 *       C sums the article's sizes in milliseconds, so (b) runs once more
 *       at a scale where the limit really leaves tasks pending, and
 *       cancels those (cf_cancel if not started, cf_request_cancel if
 *       running)
 *   (c) submit all, then as_completed
 *   (d) the long version, with a progress bar
 *
 * --scale K multiplies every size of WORK_LIST by K (1 to 400).
 * Each task sums 1..n.  The demo checks every sum against n(n+1)/2 and
 * exits 1 if one is wrong.  The executor is chosen in make_executor() only:
 * the three patterns run unchanged on any executor.  Exit status: 0 ok,
 * 1 a wrong sum or a failed call, 2 bad usage or an executor not built.
 */
#include "cfutures.h"
#ifdef CF_DEMO_MPI
#include "cfutures_mpi.h" /* demo-mpi: the same program with MPI */
#endif

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define NWORK 4
static const int64_t WORK_LIST[NWORK] = {10000, 100000, 1000000, 10000000};
static int64_t work[NWORK]; /* WORK_LIST times --scale */
#define MAX_SCALE 400       /* 1 + ... + 4e9 still fits in an int64 */

static int failures; /* wrong results seen so far */

/* The task: the sum of 1..n.  The empty asm hides s from the optimiser,
 * which could otherwise replace the loop by n(n+1)/2: the task really
 * does O(n) work, like the article's sum_generator.  Every 2^20 steps it
 * looks whether it was asked to stop (cf_request_cancel). */
static void sum_to(cf_call *c)
{
    int64_t n = cf_arg_i64(c), s = 0;
    for (int64_t i = 1; i <= n; i++) {
        s += i;
        __asm__ volatile("" : "+r"(s));
        if ((i & 0xFFFFF) == 0 && cf_cancel_requested(c)) {
            cf_raise(c, 1, "stopped at %" PRId64 " of %" PRId64 " on request",
                     i, n);
            return;
        }
    }
    cf_return_i64(c, s);
}

/* sum_to's loop, in the calling thread (the serial baseline). */
static int64_t serial_sum(int64_t n)
{
    int64_t s = 0;
    for (int64_t i = 1; i <= n; i++) {
        s += i;
        __asm__ volatile("" : "+r"(s));
    }
    return s;
}

/* The one place that picks the executor.  Each kind is one line here. */
static _Noreturn void die(const char *what, int status)
{
    fprintf(stderr, "demo: %s failed: %s (%s)\n", what, cf_strerror(status),
            cf_err_name(status));
    exit(1);
}

static cf_executor *make_executor(const char *kind, int workers)
{
    if (strcmp(kind, "thread") == 0)
        return cf_thread_pool(&(cf_thread_pool_opts){.max_workers = workers});
    if (strcmp(kind, "process") == 0)
        return cf_process_pool(&(cf_process_pool_opts){.max_workers = workers});
#ifdef CF_DEMO_MPI
    if (strcmp(kind, "mpi") == 0) {
        /* Under mpirun: rank 0 gets the executor; the other ranks serve
         * inside the call until rank 0 is done, then leave. */
        cf_executor *ex = NULL;
        int rc = cf_mpi_comm_executor(MPI_COMM_WORLD, 0, NULL, &ex);
        if (rc != CF_OK)
            die("cf_mpi_comm_executor", rc);
        if (ex == NULL) {
            MPI_Finalize();
            exit(0);
        }
        return ex;
    }
#endif
    fprintf(stderr, "executor '%s' is not available in this build yet\n", kind);
    exit(2);
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A duration with three significant digits: "412 us", "3.12 ms", "1.50 s". */
static const char *fmt_time(double sec, char buf[32])
{
    static const char *units[] = {"s", "ms", "us"};
    int u = 0;
    while (u < 2 && sec < 1.0) {
        sec *= 1000;
        u++;
    }
    snprintf(buf, 32,
             sec >= 100  ? "%.0f %s"
             : sec >= 10 ? "%.1f %s"
                         : "%.2f %s",
             sec, units[u]);
    return buf;
}

/* Checks one sum against n(n+1)/2 (halving first: no overflow). */
static void check(int64_t n, int64_t got)
{
    int64_t want = n % 2 == 0 ? n / 2 * (n + 1) : (n + 1) / 2 * n;
    if (got != want) {
        fprintf(stderr,
                "demo: WRONG sum for n=%" PRId64 ": got %" PRId64
                ", expected %" PRId64 "\n",
                n, got, want);
        failures++;
    }
}

/* The size that future f (one of fs, made by submit_all) was given. */
static int64_t size_of(cf_future *const fs[NWORK], cf_future *f)
{
    for (int i = 0; i < NWORK; i++)
        if (fs[i] == f)
            return work[i];
    return -1;
}

/* The result of f, one of fs (submitted by submit_all), checked. */
static int64_t checked_result(cf_future *const fs[NWORK], cf_future *f)
{
    int64_t v = 0;
    int rc = cf_result_i64(f, CF_FOREVER, &v);
    if (rc != CF_OK)
        die("cf_result_i64", rc);
    check(size_of(fs, f), v);
    return v;
}

/* Submits sum_to for every entry of the work list, as the article does. */
static void submit_all(cf_executor *ex, cf_future *fs[NWORK])
{
    char buf[128];
    for (int i = 0; i < NWORK; i++) {
        fs[i] = cf_submit_i64(ex, sum_to, work[i]);
        if (fs[i] == NULL)
            die("cf_submit_i64", cf_last_error());
        printf("Scheduled for %" PRId64 ": %s\n", work[i],
               cf_describe(fs[i], buf, sizeof buf));
    }
}

static void release_all(cf_future *fs[NWORK])
{
    for (int i = 0; i < NWORK; i++)
        cf_future_release(fs[i]);
}

static void print_futures(cf_future **fs, size_t n)
{
    char buf[160];
    printf("%s\n", n == 0 ? " (none)" : "");
    for (size_t i = 0; i < n; i++)
        printf("    %s\n", cf_describe(fs[i], buf, sizeof buf));
}

/* (a) result = executor.map(sum_generator, WORK_LIST) */
static void pattern_map(cf_executor *ex)
{
    double start = now();
    cf_map *m = cf_map_i64(ex, sum_to, work, NWORK, NULL);
    if (m == NULL)
        die("cf_map_i64", cf_last_error());
    int64_t results[NWORK];
    for (int i = 0; i < NWORK; i++) {
        int rc = cf_map_next_i64(m, &results[i]); /* in input order */
        if (rc != CF_OK)
            die("cf_map_next_i64", rc);
        check(work[i], results[i]);
    }
    int64_t extra;
    int rc = cf_map_next_i64(m, &extra);
    if (rc != CF_END)
        die("cf_map_next_i64 after the last item", rc);
    cf_map_free(m);
    double elapsed = now() - start;

    char t[32];
    printf("Result -> [");
    for (int i = 0; i < NWORK; i++)
        printf("%s%" PRId64, i ? ", " : "", results[i]);
    printf("] Time: %s\n", fmt_time(elapsed, t));
}

/* (b) submit each, then wait(futures_list, timeout=0.5).  What is still
 * pending at the limit is cancelled: cf_cancel stops a task that has not
 * started; one that runs is asked to stop (cf_request_cancel), and sum_to
 * looks at that flag.  Returns how many were pending at the limit. */
static size_t pattern_wait(cf_executor *ex)
{
    const double time_limit = 0.5;
    double start = now();
    cf_future *fs[NWORK], *done[NWORK], *pending[NWORK];
    size_t ndone, npending;
    submit_all(ex, fs);
    int rc = cf_wait(fs, NWORK, time_limit, CF_ALL_COMPLETED, done, &ndone,
                     pending, &npending);
    if (rc != CF_OK && rc != CF_ETIMEDOUT) /* CF_ETIMEDOUT: some pending */
        die("cf_wait", rc);
    printf("Completed tasks:");
    print_futures(done, ndone);
    printf("Pending ones after waiting for %.1f seconds:", time_limit);
    print_futures(pending, npending);
    for (size_t i = 0; i < npending; i++)
        if (!cf_cancel(pending[i])) /* running: ask it to stop */
            cf_request_cancel(pending[i]);
    if (npending > 0) {
        /* Python's with-block waits for them: so do we, then show how
         * each ended (cancelled, stopped on request, or finished). */
        cf_wait(pending, npending, CF_FOREVER, CF_ALL_COMPLETED, NULL, NULL,
                NULL, NULL);
        printf("After cancelling them:");
        print_futures(pending, npending);
        for (size_t i = 0; i < npending; i++)
            if (cf_result(pending[i], 0, NULL, NULL) == CF_OK)
                checked_result(fs, pending[i]); /* finished meanwhile */
    }
    char t[32];
    printf("Result -> [");
    for (size_t i = 0; i < ndone; i++)
        printf("%s%" PRId64, i ? ", " : "", checked_result(fs, done[i]));
    printf("] Time: %s\n", fmt_time(now() - start, t));
    release_all(fs);
    return npending;
}

/* (c) submit each, then: for future in as_completed(futures_list) */
static void pattern_as_completed(cf_executor *ex)
{
    double start = now();
    cf_future *fs[NWORK], *f;
    submit_all(ex, fs);
    cf_as_completed *it = cf_as_completed_new(fs, NWORK, CF_FOREVER);
    if (it == NULL)
        die("cf_as_completed_new", cf_last_error());
    int rc;
    while ((rc = cf_as_completed_next(it, &f)) == CF_OK)
        printf("Future Result: %" PRId64 ", Done: %d, Cancelled: %d\n",
               checked_result(fs, f), cf_done(f), cf_cancelled(f));
    if (rc != CF_END)
        die("cf_as_completed_next", rc);
    cf_as_completed_free(it);
    char t[32];
    printf("Result -> Time: %s\n", fmt_time(now() - start, t));
    release_all(fs);
}

/* (d) the long version: each size 16 times (64 tasks, balanced), as a
 * map with a progress bar, against the same calls in a serial loop. */
static void pattern_long(cf_executor *ex)
{
    enum { REPEAT = 16, N = NWORK * REPEAT };
    int64_t sizes[N];
    for (int i = 0; i < N; i++) /* a fixed shuffle: sizes interleaved */
        sizes[i] = WORK_LIST[(i * 7 + i / NWORK) % NWORK];
    double start = now();
    int64_t serial = 0;
    for (int i = 0; i < N; i++)
        serial += serial_sum(sizes[i]);
    double t_serial = now() - start;
    start = now();
    cf_map *m = cf_map_i64(ex, sum_to, sizes, N,
                           &(cf_map_opts){.progress = "64 sums"});
    if (m == NULL)
        die("cf_map_i64", cf_last_error());
    int64_t total = 0, v;
    int rc;
    while ((rc = cf_map_next_i64(m, &v)) == CF_OK)
        total += v;
    if (rc != CF_END)
        die("cf_map_next_i64", rc);
    cf_map_free(m);
    double t_map = now() - start;
    if (total != serial) {
        fprintf(stderr, "WRONG total %" PRId64 " != %" PRId64 "\n", total,
                serial);
        failures++;
    }
    char a[32], b[32];
    printf("serial %s, map %s: speedup %.2fx on %d workers\n",
           fmt_time(t_serial, a), fmt_time(t_map, b), t_serial / t_map,
           cf_executor_max_workers(ex));
}

static _Noreturn void usage(const char *prog)
{
    fprintf(stderr,
            "usage: %s [--executor thread|process|mpi] "
            "[--workers N] [--scale K] [--trace FILE.json]\n",
            prog);
    exit(2);
}

int main(int argc, char **argv)
{
    const char *kind = "thread";
    int workers = 0; /* 0: the executor's default */
    const char *trace = NULL;
    long scale = 1;
    for (int i = 1; i < argc; i++) {
        char *end;
        if (strcmp(argv[i], "--executor") == 0 && i + 1 < argc) {
            kind = argv[++i];
        } else if (strcmp(argv[i], "--trace") == 0 && i + 1 < argc) {
            trace = argv[++i];
        } else if (strcmp(argv[i], "--workers") == 0 && i + 1 < argc) {
            long w = strtol(argv[++i], &end, 10);
            if (*end != '\0' || end == argv[i] || w < 1 || w > 1024)
                usage(argv[0]);
            workers = (int)w;
        } else if (strcmp(argv[i], "--scale") == 0 && i + 1 < argc) {
            scale = strtol(argv[++i], &end, 10);
            if (*end != '\0' || end == argv[i] || scale < 1 ||
                scale > MAX_SCALE)
                usage(argv[0]);
        } else {
            usage(argv[0]);
        }
    }
    if (strcmp(kind, "thread") != 0 && strcmp(kind, "process") != 0 &&
        strcmp(kind, "mpi") != 0)
        usage(argv[0]);

    if (trace != NULL && cf_trace_start(trace) != CF_OK)
        usage(argv[0]);
    cf_executor *ex = make_executor(kind, workers);
    if (ex == NULL)
        die("make_executor", cf_last_error());
    printf("cfutures %s demo: executor %s, %d workers\n", cf_version(), kind,
           cf_executor_max_workers(ex));
    for (int i = 0; i < NWORK; i++)
        work[i] = WORK_LIST[i] * scale;
    printf("\n(a) map\n");
    pattern_map(ex);
    printf("\n(b) wait with a time limit\n");
    if (pattern_wait(ex) == 0 && scale < MAX_SCALE) {
        /* Everything beat the limit.  Once more at a scale where the
         * largest sum alone needs about four times the limit (timed here,
         * in this thread). */
        double t0 = now();
        check(work[NWORK - 1], serial_sum(work[NWORK - 1]));
        double t_big = now() - t0;
        long k = scale * (long)(2.0 / (t_big > 1e-4 ? t_big : 1e-4) + 1);
        if (k > MAX_SCALE)
            k = MAX_SCALE;
        printf("\n(b) again, each size times %ld: the limit leaves some "
               "pending\n",
               k);
        for (int i = 0; i < NWORK; i++)
            work[i] = WORK_LIST[i] * k;
        pattern_wait(ex);
        for (int i = 0; i < NWORK; i++)
            work[i] = WORK_LIST[i] * scale;
    }
    printf("\n(c) as_completed\n");
    pattern_as_completed(ex);
    printf("\n(d) the long version: 64 sums, balanced\n");
    pattern_long(ex);
    cf_executor_free(ex); /* shutdown(wait=True): Python's with-block end */
    if (trace != NULL && cf_trace_stop() == CF_OK)
        printf("timeline written to %s (open it in ui.perfetto.dev)\n", trace);

    if (failures) {
        fprintf(stderr, "\ndemo: FAILED: %d sum(s) differ from n(n+1)/2\n",
                failures);
        return 1;
    }
    printf("\nOK: every sum equals n(n+1)/2\n");
#ifdef CF_DEMO_MPI
    MPI_Finalize();
#endif
    return 0;
}

/*
 * nested_kernels.h -- the nested (fork-join) benches, written once against
 * a four-macro adapter that each implementation defines before including
 * this file (cf_bench.c: cfutures; nested_onetbb.cpp: oneTBB task_group;
 * nested_openmp.c: OpenMP tasks):
 *
 *   NK_GROUP          the type of a group of child tasks (a local)
 *   NK_INIT(g)        makes g empty
 *   NK_SPAWN(g, f, a) runs f(a) as a child task (spawn = submit)
 *   NK_WAIT(g)        waits for every child of g (join = result)
 *
 * and nk_impl, its name in the RESULT line.  Kernels (2 threads):
 *
 *   nested_fib_nocutoff       fib(N), a task per call         ns/task
 *   nested_fib                fib(N), serial below 20         x (speedup)
 *   nested_nqueens            N queens, tasks down to row 3   x
 *   nested_nqueens_placement  N queens, a task per placement  ns/task
 *   nested_sort               mergesort of N int32, serial below 32K  x
 *
 * A speedup is the kernel's serial time (plain recursion, no tasks) over
 * its time with tasks, in the same process.  Every kernel checks its
 * answer and exits 1 on a wrong one.  Valid as C and as C++.
 */
#ifndef NESTED_KERNELS_H
#define NESTED_KERNELS_H

#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double nk_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void nk_wrong(const char *what)
{
    fprintf(stderr, "%s: WRONG result (%s)\n", nk_impl, what);
    exit(1);
}

/* ---- fib ---------------------------------------------------------------- */

typedef struct nk_fib_frame {
    int n, cutoff;
    int64_t result;
} nk_fib_frame;

static int64_t nk_fib_serial(int n)
{
    return n < 2 ? n : nk_fib_serial(n - 1) + nk_fib_serial(n - 2);
}

static void nk_fib(void *p)
{
    nk_fib_frame *f = (nk_fib_frame *)p;
    if (f->n < 2 || f->n < f->cutoff) {
        f->result = nk_fib_serial(f->n);
        return;
    }
    nk_fib_frame a = {f->n - 1, f->cutoff, 0}, b = {f->n - 2, f->cutoff, 0};
    NK_GROUP g;
    NK_INIT(g);
    NK_SPAWN(g, nk_fib, &a);
    NK_SPAWN(g, nk_fib, &b);
    NK_WAIT(g);
    f->result = a.result + b.result;
}

static int64_t nk_fib_calls(int n) /* tasks of fib(n) without a cutoff */
{
    int64_t a = 1, b = 1; /* calls(0), calls(1) */
    for (int i = 2; i <= n; i++) {
        int64_t c = a + b + 1;
        a = b;
        b = c;
    }
    return n < 1 ? 1 : b;
}

/* ---- n-queens ----------------------------------------------------------- */

typedef struct nk_q_frame {
    int n, row, cutoff;
    uint32_t cols, d1, d2;
    int64_t result;
} nk_q_frame;

static int64_t nk_q_serial(int n, int row, uint32_t cols, uint32_t d1,
                           uint32_t d2)
{
    if (row == n)
        return 1;
    uint32_t all = (1u << n) - 1, free_ = all & ~(cols | d1 | d2);
    int64_t s = 0;
    while (free_) {
        uint32_t bit = free_ & (0u - free_);
        free_ ^= bit;
        s += nk_q_serial(n, row + 1, cols | bit, ((d1 | bit) << 1) & all,
                         (d2 | bit) >> 1);
    }
    return s;
}

/* Tasks of the per-placement run: one per node of the search tree. */
static int64_t nk_q_count(int n, int row, uint32_t cols, uint32_t d1,
                          uint32_t d2)
{
    if (row == n)
        return 1;
    uint32_t all = (1u << n) - 1, free_ = all & ~(cols | d1 | d2);
    int64_t s = 1;
    while (free_) {
        uint32_t bit = free_ & (0u - free_);
        free_ ^= bit;
        s += nk_q_count(n, row + 1, cols | bit, ((d1 | bit) << 1) & all,
                        (d2 | bit) >> 1);
    }
    return s;
}

static void nk_queens(void *p)
{
    nk_q_frame *q = (nk_q_frame *)p;
    if (q->row == q->n) {
        q->result = 1;
        return;
    }
    if (q->row >= q->cutoff) {
        q->result = nk_q_serial(q->n, q->row, q->cols, q->d1, q->d2);
        return;
    }
    nk_q_frame kids[32];
    int k = 0;
    uint32_t all = (1u << q->n) - 1, free_ = all & ~(q->cols | q->d1 | q->d2);
    NK_GROUP g;
    NK_INIT(g);
    while (free_) {
        uint32_t bit = free_ & (0u - free_);
        free_ ^= bit;
        nk_q_frame c = {q->n,
                        q->row + 1,
                        q->cutoff,
                        q->cols | bit,
                        ((q->d1 | bit) << 1) & all,
                        (q->d2 | bit) >> 1,
                        0};
        kids[k] = c;
        NK_SPAWN(g, nk_queens, &kids[k]);
        k++;
    }
    NK_WAIT(g);
    int64_t s = 0;
    for (int i = 0; i < k; i++)
        s += kids[i].result;
    q->result = s;
}

/* ---- mergesort ---------------------------------------------------------- */

typedef struct nk_s_frame {
    int32_t *a, *tmp;
    size_t n, cutoff;
} nk_s_frame;

static void nk_merge(int32_t *a, int32_t *tmp, size_t h, size_t n)
{
    size_t i = 0, j = h, k = 0;
    while (i < h && j < n)
        tmp[k++] = a[j] < a[i] ? a[j++] : a[i++];
    while (i < h)
        tmp[k++] = a[i++];
    while (j < n)
        tmp[k++] = a[j++];
    memcpy(a, tmp, n * sizeof *a);
}

static void nk_sort_serial(int32_t *a, int32_t *tmp, size_t n)
{
    if (n <= 32) {
        for (size_t i = 1; i < n; i++) {
            int32_t v = a[i];
            size_t j = i;
            for (; j > 0 && a[j - 1] > v; j--)
                a[j] = a[j - 1];
            a[j] = v;
        }
        return;
    }
    size_t h = n / 2;
    nk_sort_serial(a, tmp, h);
    nk_sort_serial(a + h, tmp + h, n - h);
    nk_merge(a, tmp, h, n);
}

static void nk_sort(void *p)
{
    nk_s_frame *s = (nk_s_frame *)p;
    if (s->n <= s->cutoff) {
        nk_sort_serial(s->a, s->tmp, s->n);
        return;
    }
    size_t h = s->n / 2;
    nk_s_frame l = {s->a, s->tmp, h, s->cutoff};
    nk_s_frame r = {s->a + h, s->tmp + h, s->n - h, s->cutoff};
    NK_GROUP g;
    NK_INIT(g);
    NK_SPAWN(g, nk_sort, &l);
    NK_SPAWN(g, nk_sort, &r);
    NK_WAIT(g);
    nk_merge(s->a, s->tmp, h, s->n);
}

static void nk_fill(int32_t *a, size_t n)
{
    uint32_t x = 12345;
    for (size_t i = 0; i < n; i++) {
        x = x * 1664525u + 1013904223u;
        a[i] = (int32_t)(x >> 1);
    }
}

static void nk_check_sorted(const int32_t *a, const int32_t *b, size_t n)
{
    if (memcmp(a, b, n * sizeof *a) != 0)
        nk_wrong("sort");
    for (size_t i = 1; i < n; i++)
        if (a[i - 1] > a[i])
            nk_wrong("sort order");
}

/* ---- the driver --------------------------------------------------------- */

/* Runs root(frame) with tasks; implemented by the includer (a pool, a
 * task_group, an OpenMP parallel region). */
static void nk_run_root(void (*root)(void *), void *frame);

static void nk_result(const char *bench, size_t n, double v, const char *unit)
{
    printf("RESULT %s %s %zu %.6g %s\n", bench, nk_impl, n, v, unit);
    fflush(stdout);
}

/* Runs a nested bench; returns 0, or 2 if the bench is unknown. */
static int nk_main(const char *bench, size_t n)
{
    if (strcmp(bench, "nested_fib_nocutoff") == 0 ||
        strcmp(bench, "nested_fib") == 0) {
        int cutoff = strcmp(bench, "nested_fib") == 0 ? 20 : 2;
        nk_fib_frame w = {20, cutoff, 0}; /* warm-up */
        nk_run_root(nk_fib, &w);
        double t0 = nk_now();
        int64_t want = nk_fib_serial((int)n);
        double serial = nk_now() - t0;
        nk_fib_frame f = {(int)n, cutoff, 0};
        t0 = nk_now();
        nk_run_root(nk_fib, &f);
        double par = nk_now() - t0;
        if (f.result != want)
            nk_wrong("fib");
        if (cutoff == 2)
            nk_result(bench, n, par * 1e9 / (double)nk_fib_calls((int)n),
                      "ns/task");
        else
            nk_result(bench, n, serial / par, "x");
        return 0;
    }
    if (strcmp(bench, "nested_nqueens") == 0 ||
        strcmp(bench, "nested_nqueens_placement") == 0) {
        bool placement = strcmp(bench, "nested_nqueens_placement") == 0;
        int cutoff = placement ? (int)n : 3;
        nk_q_frame w = {8, 0, cutoff < 8 ? cutoff : 8, 0, 0, 0, 0};
        nk_run_root(nk_queens, &w);
        double t0 = nk_now();
        int64_t want = nk_q_serial((int)n, 0, 0, 0, 0);
        double serial = nk_now() - t0;
        nk_q_frame q = {(int)n, 0, cutoff, 0, 0, 0, 0};
        t0 = nk_now();
        nk_run_root(nk_queens, &q);
        double par = nk_now() - t0;
        if (q.result != want)
            nk_wrong("nqueens");
        if (placement)
            nk_result(bench, n,
                      par * 1e9 / (double)nk_q_count((int)n, 0, 0, 0, 0),
                      "ns/task");
        else
            nk_result(bench, n, serial / par, "x");
        return 0;
    }
    if (strcmp(bench, "nested_sort") == 0) {
        int32_t *a = (int32_t *)malloc(n * sizeof *a);
        int32_t *b = (int32_t *)malloc(n * sizeof *b);
        int32_t *tmp = (int32_t *)malloc(n * sizeof *tmp);
        if (a == NULL || b == NULL || tmp == NULL)
            nk_wrong("out of memory");
        size_t cutoff = 32768;
        nk_fill(a, n < 65536 ? n : 65536); /* warm-up */
        nk_s_frame w = {a, tmp, n < 65536 ? n : 65536, 4096};
        nk_run_root(nk_sort, &w);
        nk_fill(b, n);
        double t0 = nk_now();
        nk_sort_serial(b, tmp, n);
        double serial = nk_now() - t0;
        nk_fill(a, n);
        nk_s_frame s = {a, tmp, n, cutoff};
        t0 = nk_now();
        nk_run_root(nk_sort, &s);
        double par = nk_now() - t0;
        nk_check_sorted(a, b, n);
        free(a);
        free(b);
        free(tmp);
        nk_result(bench, n, serial / par, "x");
        return 0;
    }
    return 2;
}

#endif /* NESTED_KERNELS_H */

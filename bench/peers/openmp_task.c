/*
 * openmp_task.c -- peer of thread_submit_result: OpenMP tasks (gcc's
 * libgomp), a team of 2 threads.  One thread creates N tasks (each stores
 * its argument + 1 in its own slot), taskwait, then the results are read
 * in order.  No per-task future: the peer does less than cfutures does.
 *
 *   peer_openmp_task N
 */
#include <omp.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

static void run(int64_t *out, size_t n)
{
#pragma omp parallel num_threads(2)
#pragma omp single
    {
        for (size_t i = 0; i < n; i++) {
#pragma omp task firstprivate(i) shared(out)
            out[i] = (int64_t)i + 1;
        }
#pragma omp taskwait
    }
    for (size_t i = 0; i < n; i++)
        if (out[i] != (int64_t)i + 1) {
            fprintf(stderr, "openmp: WRONG result at %zu\n", i);
            exit(1);
        }
}

int main(int argc, char **argv)
{
    size_t n = argc > 1 ? strtoull(argv[1], NULL, 10) : 200000;
    if (n == 0)
        return 2;
    int64_t *out = calloc(n, sizeof *out);
    if (out == NULL)
        return 1;
    run(out, n); /* warm-up, the same N: starts the team (bench/README.md) */
    double t0 = omp_get_wtime();
    run(out, n);
    double t1 = omp_get_wtime();
    free(out);
    printf("RESULT thread_submit_result openmp_task %zu %.6g ns/task\n", n,
           (t1 - t0) * 1e9 / (double)n);
    return 0;
}

/*
 * nested_openmp.c -- peer of the nested_* benches: OpenMP tasks (gcc's
 * libgomp, a team of 2) through the adapter of nested_kernels.h: spawn =
 * omp task, join = omp taskwait.
 *
 *   peer_nested_openmp BENCH N
 */
#include <omp.h>

static const char *nk_impl = "openmp_task";
#define NK_GROUP int
#define NK_INIT(g) ((g) = 0)
#define NK_SPAWN(g, f, a)                                \
    do {                                                 \
        void (*f_)(void *) = (f);                        \
        void *a_ = (a);                                  \
        (void)(g);                                       \
        _Pragma("omp task firstprivate(f_, a_)") f_(a_); \
    } while (0)
#define NK_WAIT(g) _Pragma("omp taskwait")
#include "nested_kernels.h"

static void nk_run_root(void (*root)(void *), void *frame)
{
#pragma omp parallel num_threads(2)
#pragma omp single
    root(frame);
}

int main(int argc, char **argv)
{
    if (argc != 3)
        return 2;
    return nk_main(argv[1], strtoull(argv[2], NULL, 10));
}

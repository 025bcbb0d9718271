/*
 * c_thread_pool.c -- peer of thread_submit_result: Pithikos' C thread pool
 * (Debian cthreadpool-dev, header in /usr/include/cthreadpool, compiled
 * from /usr/share/cthreadpool/thpool.c), 2 threads.  thpool_add_work N
 * trivial tasks (each stores its argument + 1 in its own slot), then
 * thpool_wait and the results are read in order.  The library has no
 * futures: the peer does less per task than cfutures does.
 *
 *   peer_c_thread_pool N
 */
#include <thpool.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

typedef struct slot {
    int64_t in, out;
} slot;

static void inc(void *arg)
{
    slot *s = arg;
    s->out = s->in + 1;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void run(threadpool pool, slot *slots, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        slots[i].in = (int64_t)i;
        if (thpool_add_work(pool, inc, &slots[i]) != 0) {
            fprintf(stderr, "c_thread_pool: thpool_add_work failed\n");
            exit(1);
        }
    }
    thpool_wait(pool);
    for (size_t i = 0; i < n; i++)
        if (slots[i].out != (int64_t)i + 1) {
            fprintf(stderr, "c_thread_pool: WRONG result at %zu\n", i);
            exit(1);
        }
}

int main(int argc, char **argv)
{
    size_t n = argc > 1 ? strtoull(argv[1], NULL, 10) : 200000;
    if (n == 0)
        return 2;
    slot *slots = calloc(n, sizeof *slots);
    threadpool pool = thpool_init(2);
    if (slots == NULL || pool == NULL)
        return 1;
    run(pool, slots, n); /* warm-up: the same N (see bench/README.md) */
    double t0 = now();
    run(pool, slots, n);
    double t1 = now();
    thpool_destroy(pool);
    free(slots);
    printf("RESULT thread_submit_result c_thread_pool %zu %.6g ns/task\n", n,
           (t1 - t0) * 1e9 / (double)n);
    return 0;
}

/*
 * shm_floor.c -- the shared-memory floors of the process benches: what
 * moving an int64 to another process and its result back costs through a
 * spinning single-producer single-consumer ring in shared memory, with no
 * futures, no framing and no system call at all.
 *
 *   shm_floor pingpong N   one item in flight: the parent writes it, spins
 *                          until the worker's answer is there, next item
 *                                                   -> process_submit_result
 *   shm_floor batched N    pipelined: the parent keeps up to 4 x 256 items
 *                          queued to the worker and reads the results in
 *                          order                    -> process_map_chunked
 *
 * Two processes only (the parent and one worker, both spinning): with the
 * benches' 2 workers the three spinners would share 2 cores, and the
 * figure would measure the scheduler, not the memory.  The worker answers
 * item + 1, like the benches' task.  Prints "RESULT <bench> <impl> <n>
 * <ns per item> <unit>".
 */
#include <inttypes.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define CAP 4096 /* slots per ring, a power of two */
#define DEPTH (4 * 256)

/* One direction: the producer advances tail, the consumer head; each on
 * a line of its own. */
typedef struct ring {
    _Alignas(64) _Atomic uint64_t tail;
    _Alignas(64) _Atomic uint64_t head;
    _Alignas(64) int64_t slot[CAP];
} ring;

typedef struct shared {
    ring req, res;
} shared;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static inline void relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static void put(ring *r, int64_t v)
{
    uint64_t t = atomic_load_explicit(&r->tail, memory_order_relaxed);
    while (t - atomic_load_explicit(&r->head, memory_order_acquire) >= CAP)
        relax();
    r->slot[t & (CAP - 1)] = v;
    atomic_store_explicit(&r->tail, t + 1, memory_order_release);
}

static int64_t get(ring *r)
{
    uint64_t h = atomic_load_explicit(&r->head, memory_order_relaxed);
    while (atomic_load_explicit(&r->tail, memory_order_acquire) == h)
        relax();
    int64_t v = r->slot[h & (CAP - 1)];
    atomic_store_explicit(&r->head, h + 1, memory_order_release);
    return v;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: shm_floor pingpong|batched N\n");
        return 2;
    }
    int batched = strcmp(argv[1], "batched") == 0;
    if (!batched && strcmp(argv[1], "pingpong") != 0)
        return 2;
    size_t n = strtoull(argv[2], NULL, 10);
    shared *s = mmap(NULL, sizeof *s, PROT_READ | PROT_WRITE,
                     MAP_SHARED | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (s == MAP_FAILED) {
        perror("shm_floor: mmap");
        return 1;
    }
    memset(s, 0, sizeof *s);
    pid_t pid = fork();
    if (pid < 0) {
        perror("shm_floor: fork");
        return 1;
    }
    if (pid == 0) { /* the worker: answer item + 1 until -1 */
        for (;;) {
            int64_t v = get(&s->req);
            if (v < 0)
                _exit(0);
            put(&s->res, v + 1);
        }
    }
    size_t warm = n < 10000 ? n : 10000;
    double t0 = 0;
    for (int pass = 0; pass < 2; pass++) {
        size_t m = pass == 0 ? warm : n;
        if (pass == 1)
            t0 = now();
        size_t sent = 0;
        for (size_t i = 0; i < m; i++) {
            size_t ahead = batched ? DEPTH : 1;
            while (sent < m && sent < i + ahead)
                put(&s->req, (int64_t)sent++);
            int64_t v = get(&s->res);
            if (v != (int64_t)i + 1) {
                fprintf(stderr, "shm_floor: WRONG result for item %zu\n", i);
                kill(pid, SIGKILL);
                return 1;
            }
        }
    }
    double t = now() - t0;
    put(&s->req, -1);
    waitpid(pid, NULL, 0);
    printf("RESULT %s shm_%s %zu %.6g ns/%s\n",
           batched ? "process_map_chunked" : "process_submit_result",
           batched ? "batched" : "pingpong", n, t * 1e9 / (double)n,
           batched ? "item" : "task");
    return 0;
}

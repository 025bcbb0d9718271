/*
 * pipe_floor.c -- the physical floors of the process benches: what moving
 * an int64 to a worker process and its result back costs with nothing but
 * pipes (no futures, no framing beyond a count, no bookkeeping).
 *
 *   pipe_floor pingpong N   one request in flight: write one item to a
 *                           worker, read its answer, next item (2 workers,
 *                           used in turn)             -> process_submit_result
 *   pipe_floor batched N    pipelined batches of 256 items, several in
 *                           flight per worker, results read in order
 *                                                     -> process_map_chunked
 *
 * The worker answers each item with item + 1, like the benches' task.
 * Prints "RESULT <bench> <impl> <n> <ns per item> <unit>".
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define WORKERS 2
#define CHUNK 256
#define DEPTH                                                 \
    4 /* batches in flight per worker (4 x 2 KiB: far below a \
         pipe's 64 KiB, so no write ever blocks on a full pipe) */

typedef struct worker {
    pid_t pid;
    int to;   /* parent -> worker */
    int from; /* worker -> parent */
} worker;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void write_full(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len > 0) {
        ssize_t w = write(fd, p, len);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            perror("pipe_floor: write");
            exit(1);
        }
        p += w;
        len -= (size_t)w;
    }
}

/* Returns 0 at end of file before any byte, 1 when len bytes were read. */
static int read_full(int fd, void *buf, size_t len)
{
    char *p = buf;
    size_t got = 0;
    while (got < len) {
        ssize_t r = read(fd, p + got, len - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r == 0 && got == 0)
            return 0;
        if (r <= 0) {
            perror("pipe_floor: read");
            exit(1);
        }
        got += (size_t)r;
    }
    return 1;
}

/* A message is an int64 count followed by count int64 items. */
static void worker_loop(int in, int out)
{
    int64_t buf[1 + CHUNK];
    for (;;) {
        if (!read_full(in, buf, sizeof buf[0]) || buf[0] <= 0)
            _exit(0);
        size_t count = (size_t)buf[0];
        read_full(in, buf + 1, count * sizeof buf[0]);
        for (size_t i = 1; i <= count; i++)
            buf[i] += 1;
        write_full(out, buf, (1 + count) * sizeof buf[0]);
    }
}

static void start_workers(worker w[WORKERS])
{
    for (int k = 0; k < WORKERS; k++) {
        int down[2], up[2];
        if (pipe(down) != 0 || pipe(up) != 0) {
            perror("pipe_floor: pipe");
            exit(1);
        }
        pid_t pid = fork();
        if (pid < 0) {
            perror("pipe_floor: fork");
            exit(1);
        }
        if (pid == 0) {
            for (int j = 0; j < k; j++) {
                close(w[j].to);
                close(w[j].from);
            }
            close(down[1]);
            close(up[0]);
            worker_loop(down[0], up[1]);
        }
        close(down[0]);
        close(up[1]);
        w[k] = (worker){.pid = pid, .to = down[1], .from = up[0]};
    }
}

static void stop_workers(worker w[WORKERS])
{
    for (int k = 0; k < WORKERS; k++) {
        close(w[k].to); /* EOF ends the worker */
        close(w[k].from);
        waitpid(w[k].pid, NULL, 0);
    }
}

static void check(int64_t got, int64_t want)
{
    if (got != want) {
        fprintf(stderr,
                "pipe_floor: WRONG result %" PRId64 ", expected %" PRId64 "\n",
                got, want);
        exit(1);
    }
}

static void pingpong(worker w[WORKERS], size_t n)
{
    for (size_t i = 0; i < n; i++) {
        worker *k = &w[i % WORKERS];
        int64_t msg[2] = {1, (int64_t)i};
        write_full(k->to, msg, sizeof msg);
        read_full(k->from, msg, sizeof msg);
        check(msg[1], (int64_t)i + 1);
    }
}

/* Batches of CHUNK items go to the workers in turn, DEPTH per worker in
 * flight; results are read back in input order. */
static void batched(worker w[WORKERS], size_t n)
{
    size_t nchunks = (n + CHUNK - 1) / CHUNK;
    size_t sent = 0, done = 0;
    int64_t buf[1 + CHUNK];
    while (done < nchunks) {
        if (sent < nchunks && sent - done < (size_t)WORKERS * DEPTH) {
            size_t first = sent * CHUNK;
            size_t count = n - first < CHUNK ? n - first : CHUNK;
            buf[0] = (int64_t)count;
            for (size_t i = 0; i < count; i++)
                buf[1 + i] = (int64_t)(first + i);
            write_full(w[sent % WORKERS].to, buf, (1 + count) * sizeof buf[0]);
            sent++;
            continue;
        }
        worker *k = &w[done % WORKERS];
        if (!read_full(k->from, buf, sizeof buf[0])) {
            fprintf(stderr, "pipe_floor: worker died\n");
            exit(1);
        }
        size_t count = (size_t)buf[0];
        read_full(k->from, buf + 1, count * sizeof buf[0]);
        size_t first = done * CHUNK;
        for (size_t i = 0; i < count; i++)
            check(buf[1 + i], (int64_t)(first + i) + 1);
        done++;
    }
}

int main(int argc, char **argv)
{
    if (argc != 3 ||
        (strcmp(argv[1], "pingpong") != 0 && strcmp(argv[1], "batched") != 0)) {
        fprintf(stderr, "usage: pipe_floor pingpong|batched N\n");
        return 2;
    }
    size_t n = (size_t)strtoull(argv[2], NULL, 10);
    if (n == 0)
        return 2;
    signal(SIGPIPE, SIG_IGN);
    int pp = strcmp(argv[1], "pingpong") == 0;
    worker w[WORKERS];
    start_workers(w);
    size_t warm = n < 1000 ? n : 1000;
    if (pp)
        pingpong(w, warm);
    else
        batched(w, warm);
    double t0 = now();
    if (pp)
        pingpong(w, n);
    else
        batched(w, n);
    double t1 = now();
    stop_workers(w);
    printf("RESULT %s %s %zu %.6g %s\n",
           pp ? "process_submit_result" : "process_map_chunked",
           pp ? "pipe_pingpong" : "pipe_batched", n,
           (t1 - t0) * 1e9 / (double)n, pp ? "ns/task" : "ns/item");
    return 0;
}

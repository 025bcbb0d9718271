/*
 * fgate.h -- a gate that works across processes, for the tests of the
 * process pool (and of any executor): tasks announce themselves on one
 * FIFO and block reading another until the test closes its end.  Both
 * live in a private directory under /tmp.  Every wait is bounded by
 * LIVENESS (seconds, defined by the includer): a hang fails the test.
 */
#ifndef CF_FGATE_H
#define CF_FGATE_H

#include "test.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef LIVENESS
#error "define LIVENESS (seconds) before including fgate.h"
#endif

/* A private directory under /tmp for a test's files and FIFOs. */
typedef struct tmpdir {
    char path[32];
} tmpdir;

static inline void tmpdir_init(tmpdir *d)
{
    snprintf(d->path, sizeof d->path, "/tmp/cf-test-XXXXXX");
    ASSERT(mkdtemp(d->path) != NULL);
}

static inline void tmpdir_file(const tmpdir *d, const char *name, char *out,
                               size_t size)
{
    ASSERT((size_t)snprintf(out, size, "%s/%s", d->path, name) < size);
}

static inline void tmpdir_destroy(tmpdir *d)
{
    DIR *dir = opendir(d->path);
    ASSERT(dir != NULL);
    for (struct dirent *e; (e = readdir(dir)) != NULL;) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        unlinkat(dirfd(dir), e->d_name, 0);
    }
    closedir(dir);
    ASSERT(rmdir(d->path) == 0);
}

/* ------------------------------------------------------------------------ */
/* The gate                                                                  */
/* ------------------------------------------------------------------------ */

typedef struct fgate_arg {
    char started[96]; /* a task writes its pid here once it runs */
    char release[96]; /* ... then reads here until the test closes it */
    int64_t v;        /* what the task returns */
} fgate_arg;

typedef struct fgate {
    tmpdir dir;
    fgate_arg a;
    int started_fd; /* O_RDWR: a reader, so tasks never block opening */
    int release_fd; /* O_RDWR: the only writer; closing it opens the gate */
} fgate;

static inline void fgate_init(fgate *g)
{
    memset(g, 0, sizeof *g);
    tmpdir_init(&g->dir);
    tmpdir_file(&g->dir, "started", g->a.started, sizeof g->a.started);
    tmpdir_file(&g->dir, "release", g->a.release, sizeof g->a.release);
    ASSERT(mkfifo(g->a.started, 0600) == 0);
    ASSERT(mkfifo(g->a.release, 0600) == 0);
    g->started_fd = open(g->a.started, O_RDWR | O_CLOEXEC);
    g->release_fd = open(g->a.release, O_RDWR | O_CLOEXEC);
    ASSERT(g->started_fd >= 0 && g->release_fd >= 0);
}

/* Reads n int32 values from fd, bounded by LIVENESS (a hang fails). */
static inline void read_pids(int fd, int n, int32_t *pids, const char *what)
{
    for (int i = 0; i < n; i++) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int r;
        do
            r = poll(&p, 1, (int)(LIVENESS * 1000));
        while (r < 0 && errno == EINTR);
        if (r == 0) {
            fprintf(stderr, "%s: got %d of %d within %gs\n", what, i, n,
                    LIVENESS);
            abort();
        }
        int32_t pid;
        ASSERT_EQ(read(fd, &pid, sizeof pid), sizeof pid);
        if (pids != NULL)
            pids[i] = pid;
    }
}

static inline void fgate_wait_started(fgate *g, int n, int32_t *pids)
{
    read_pids(g->started_fd, n, pids, "gated tasks started");
}

static inline void fgate_open(fgate *g)
{
    if (g->release_fd >= 0)
        close(g->release_fd);
    g->release_fd = -1;
}

static inline void fgate_destroy(fgate *g)
{
    fgate_open(g);
    close(g->started_fd);
    tmpdir_destroy(&g->dir);
}

/* Task side: announce, then block until released.  0 or -1 (errno). */
static inline int fgate_pass(const fgate_arg *a)
{
    int32_t me = (int32_t)getpid();
    int fd = open(a->started, O_WRONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t w = write(fd, &me, sizeof me);
    close(fd);
    if (w != (ssize_t)sizeof me)
        return -1;
    fd = open(a->release, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return -1;
    double until = now_s() + 3 * LIVENESS;
    for (;;) {
        char b;
        ssize_t r = read(fd, &b, 1);
        if (r == 0)
            break; /* no writer left: released */
        if (r < 0 && errno != EAGAIN && errno != EINTR)
            break;
        if (now_s() > until) {
            close(fd);
            errno = ETIMEDOUT;
            return -1;
        }
        struct pollfd p = {.fd = fd, .events = POLLIN};
        poll(&p, 1, 500);
    }
    close(fd);
    return 0;
}

static void t_gated(cf_call *c)
{
    size_t n;
    const void *p = cf_arg(c, &n);
    fgate_arg a;
    if (n != sizeof a) {
        cf_raise(c, 1, "t_gated: argument of %zu bytes", n);
        return;
    }
    memcpy(&a, p, sizeof a);
    if (fgate_pass(&a) != 0) {
        cf_raise(c, 2, "t_gated: %s", strerror(errno));
        return;
    }
    cf_return_i64(c, a.v);
}

static inline cf_future *submit_gated(cf_executor *ex, fgate *g, int64_t v)
{
    g->a.v = v;
    cf_future *f = cf_submit(ex, t_gated, &g->a, sizeof g->a);
    ASSERT(f != NULL);
    return f;
}

#endif

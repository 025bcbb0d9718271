/*
 * test-eventloop.c -- cf_as_completed_fd from real event loops: plain
 * epoll, and libuv (a uv_poll_t on the fd) when the build found libuv.
 *
 * 10,000 futures from a thread pool and from a process pool complete in
 * any order; the loop watches the fd and drains with cf_as_completed_drain
 * (never blocking).  Every future must be reported exactly once, the fd
 * must be quiet once everything was taken, and a stream of completions
 * that nobody drains must have written the eventfd once, not per future.
 */
#include "test.h"

#include <errno.h>
#include <poll.h>
#include <sys/epoll.h>

#ifdef CF_HAVE_LIBUV
#include <uv.h>
#endif

enum { N = 10000 };

/* Spins a pseudo-random amount, so that completions come out of order. */
static void scrambled(cf_call *c)
{
    int64_t i = cf_arg_i64(c);
    int64_t x = 0, spins = (i * 7919) % 20000;
    for (int64_t k = 0; k < spins; k++) {
        x += k;
        __asm__ volatile("" : "+r"(x)); /* the loop really runs */
    }
    cf_return_i64(c, 2 * i);
}

typedef struct run {
    cf_future *fs[N];
    unsigned char seen[N];
    size_t reported;
    cf_as_completed *it;
} run;

static run *run_new(cf_executor *ex)
{
    run *r = calloc(1, sizeof *r);
    ASSERT(r != NULL);
    for (int64_t i = 0; i < N; i++) {
        r->fs[i] = cf_submit_i64(ex, scrambled, i);
        ASSERT(r->fs[i] != NULL);
    }
    r->it = cf_as_completed_new(r->fs, N, CF_FOREVER);
    ASSERT(r->it != NULL);
    return r;
}

/* Takes what is ready: each future once, with the right result.  Returns
 * how many were taken. */
static size_t drain(run *r)
{
    cf_future *batch[256];
    size_t total = 0, k;
    while ((k = cf_as_completed_drain(r->it, batch, 256)) > 0) {
        for (size_t j = 0; j < k; j++) {
            /* Which input is it?  The result says: 2 * index. */
            int64_t v;
            ASSERT_OK(cf_result_i64(batch[j], 0, &v));
            ASSERT(v % 2 == 0 && v / 2 >= 0 && v / 2 < N);
            size_t i = (size_t)(v / 2);
            ASSERT(batch[j] == r->fs[i]);
            ASSERT_EQ(r->seen[i], 0); /* never twice */
            r->seen[i] = 1;
        }
        total += k;
    }
    r->reported += total;
    return total;
}

static bool readable_now(int fd)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int n = poll(&p, 1, 0);
    ASSERT(n >= 0);
    return n == 1 && (p.revents & POLLIN);
}

static void run_free(run *r)
{
    ASSERT_EQ(r->reported, N);
    for (size_t i = 0; i < N; i++)
        ASSERT_EQ(r->seen[i], 1);
    ASSERT_EQ(cf_as_completed_pending(r->it), 0);
    ASSERT(!readable_now(cf_as_completed_fd(r->it))); /* quiet at the end */
    cf_as_completed_free(r->it);
    release_all(r->fs, N);
    free(r);
}

static cf_executor *make_pool(bool processes)
{
    cf_executor *ex =
        processes ? cf_process_pool(&(cf_process_pool_opts){.max_workers = 2})
                  : cf_thread_pool(&(cf_thread_pool_opts){.max_workers = 4});
    ASSERT(ex != NULL);
    return ex;
}

/* ------------------------------------------------------------------------ */
/* epoll                                                                     */
/* ------------------------------------------------------------------------ */

static void epoll_run(bool processes)
{
    cf_executor *ex = make_pool(processes);
    run *r = run_new(ex);
    int fd = cf_as_completed_fd(r->it);
    ASSERT(fd >= 0);
    ASSERT_EQ(cf_as_completed_fd(r->it), fd); /* the same fd each time */
    int ep = epoll_create1(EPOLL_CLOEXEC);
    ASSERT(ep >= 0);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};
    ASSERT_EQ(epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev), 0);
    int wakeups = 0;
    while (r->reported < N) {
        struct epoll_event got;
        int n = epoll_wait(ep, &got, 1, (int)(LONG_WAIT * 1000));
        ASSERT(n == 1 || (n < 0 && errno == EINTR)); /* 0: a lost wake-up */
        if (n == 1) {
            wakeups++;
            /* Readable means something is there: a wake-up is never
             * empty-handed (the fd is not left readable after a drain). */
            ASSERT(drain(r) > 0);
        }
    }
    printf("# epoll, %s: %d futures in %d wake-ups\n",
           processes ? "processes" : "threads", N, wakeups);
    close(ep);
    run_free(r);
    cf_executor_free(ex);
}

static void test_epoll_thread_pool(void)
{
    epoll_run(false);
}

static void test_epoll_process_pool(void)
{
    epoll_run(true);
}

/* No system call per completion: 1,000 futures completed while nobody
 * drains leave the eventfd's counter at 1 (one write), and the fd goes
 * quiet only when the queue is empty. */
static void test_fd_one_write_per_batch(void)
{
    enum { M = 1000 };
    cf_future *fs[M];
    for (int i = 0; i < M; i++)
        fs[i] = cf_future_new();
    cf_as_completed *it = cf_as_completed_new(fs, M, CF_FOREVER);
    ASSERT(it != NULL);
    int fd = cf_as_completed_fd(it);
    ASSERT(fd >= 0);
    ASSERT(!readable_now(fd)); /* nothing done yet */
    for (int i = 0; i < M; i++)
        ASSERT_OK(cf_set_result_i64(fs[i], i));
    ASSERT(readable_now(fd));
    uint64_t count = 0; /* peek at the counter, then put it back */
    ASSERT_EQ(read(fd, &count, sizeof count), (ssize_t)sizeof count);
    ASSERT_EQ(count, 1);
    ASSERT_EQ(write(fd, &count, sizeof count), (ssize_t)sizeof count);
    cf_future *out[M];
    ASSERT_EQ(cf_as_completed_drain(it, out, M - 1), M - 1);
    ASSERT(readable_now(fd)); /* one left */
    ASSERT_EQ(cf_as_completed_drain(it, out, M), 1);
    ASSERT(!readable_now(fd));
    ASSERT_EQ(cf_as_completed_drain(it, out, M), 0);
    cf_as_completed_free(it);
    release_all(fs, M);
}

/* An fd asked for after futures completed is readable at once; futures
 * added later (cf_as_completed_add) signal it too; _next also clears it. */
static void test_fd_late_and_added(void)
{
    cf_future *a = make(FX_FINISHED), *b = cf_future_new();
    cf_as_completed *it = cf_as_completed_new(&a, 1, CF_FOREVER);
    ASSERT(it != NULL);
    int fd = cf_as_completed_fd(it);
    ASSERT(readable_now(fd));
    cf_future *out;
    ASSERT_OK(cf_as_completed_next(it, &out));
    ASSERT(out == a);
    ASSERT(!readable_now(fd));
    ASSERT_OK(cf_as_completed_add(it, &b, 1));
    ASSERT(!readable_now(fd));
    ASSERT_OK(cf_set_result_i64(b, 1));
    ASSERT(readable_now(fd));
    ASSERT_EQ(cf_as_completed_drain(it, &out, 1), 1);
    ASSERT(out == b);
    ASSERT(!readable_now(fd));
    ASSERT_ST(cf_as_completed_fd(NULL), CF_EINVAL);
    cf_as_completed_free(it);
    cf_future_release(a);
    cf_future_release(b);
}

/* ------------------------------------------------------------------------ */
/* libuv                                                                     */
/* ------------------------------------------------------------------------ */

#ifdef CF_HAVE_LIBUV
typedef struct uv_run_ctx {
    run *r;
    uv_poll_t poll;
    uv_timer_t watchdog;
    int wakeups;
} uv_run_ctx;

static void on_readable(uv_poll_t *h, int status, int events)
{
    uv_run_ctx *c = h->data;
    ASSERT_EQ(status, 0);
    ASSERT(events & UV_READABLE);
    c->wakeups++;
    ASSERT(drain(c->r) > 0);
    if (c->r->reported == N) { /* all in: leave the loop */
        uv_poll_stop(&c->poll);
        uv_timer_stop(&c->watchdog);
    }
}

static void on_watchdog(uv_timer_t *t)
{
    uv_run_ctx *c = t->data;
    fprintf(stderr, "libuv loop: %zu of %d futures after %gs\n", c->r->reported,
            N, LONG_WAIT);
    abort();
}

static void uv_run_pool(bool processes)
{
    cf_executor *ex = make_pool(processes);
    uv_loop_t loop;
    ASSERT_EQ(uv_loop_init(&loop), 0);
    uv_run_ctx c = {.r = run_new(ex)};
    int fd = cf_as_completed_fd(c.r->it);
    ASSERT(fd >= 0);
    ASSERT_EQ(uv_poll_init(&loop, &c.poll, fd), 0);
    c.poll.data = &c;
    ASSERT_EQ(uv_poll_start(&c.poll, UV_READABLE, on_readable), 0);
    ASSERT_EQ(uv_timer_init(&loop, &c.watchdog), 0);
    c.watchdog.data = &c;
    ASSERT_EQ(uv_timer_start(&c.watchdog, on_watchdog,
                             (uint64_t)(LONG_WAIT * 1000), 0),
              0);
    ASSERT_EQ(uv_run(&loop, UV_RUN_DEFAULT), 0);
    printf("# libuv, %s: %d futures in %d wake-ups\n",
           processes ? "processes" : "threads", N, c.wakeups);
    uv_close((uv_handle_t *)&c.poll, NULL);
    uv_close((uv_handle_t *)&c.watchdog, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    ASSERT_EQ(uv_loop_close(&loop), 0);
    run_free(c.r);
    cf_executor_free(ex);
}

static void test_libuv_thread_pool(void)
{
    uv_run_pool(false);
}

static void test_libuv_process_pool(void)
{
    uv_run_pool(true);
}
#else
static void test_libuv_thread_pool(void)
{
    printf("# skipped: libuv not found at build time (libuv1-dev)\n");
}

static void test_libuv_process_pool(void)
{
    test_libuv_thread_pool();
}
#endif

TEST_MAIN(T(test_epoll_thread_pool), T(test_epoll_process_pool),
          T(test_fd_one_write_per_batch), T(test_fd_late_and_added),
          T(test_libuv_thread_pool), T(test_libuv_process_pool))

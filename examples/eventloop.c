/*
 * eventloop.c -- futures in a libuv event loop, with no thread blocked.
 *
 *   eventloop [--executor thread|process]
 *
 * The article's sums run on a pool while the loop stays free for other
 * work (here a 1 ms ticker).  cf_as_completed_fd gives a descriptor that
 * is readable while done futures wait; a uv_poll_t watches it, and the
 * callback drains them with cf_as_completed_drain, which never blocks.
 */
#include "cfutures.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <uv.h>

#define NWORK 4
static const int64_t WORK_LIST[NWORK] = {10000, 100000, 1000000, 10000000};

static void sum_to(cf_call *c)
{
    int64_t n = cf_arg_i64(c), s = 0;
    for (int64_t i = 1; i <= n; i++) {
        s += i;
        __asm__ volatile("" : "+r"(s));
    }
    cf_return_i64(c, s);
}

typedef struct app {
    cf_as_completed *it;
    uv_poll_t poll;
    uv_timer_t ticker;
    int ticks, wrong;
} app;

static void on_done(uv_poll_t *h, int status, int events)
{
    app *a = h->data;
    (void)events;
    if (status < 0)
        return;
    cf_future *done[NWORK];
    size_t n = cf_as_completed_drain(a->it, done, NWORK);
    for (size_t i = 0; i < n; i++) {
        int64_t s;
        if (cf_result_i64(done[i], 0, &s) != CF_OK)
            a->wrong++;
        printf("Future Result: %" PRId64 " (after %d ticks of the loop)\n", s,
               a->ticks);
    }
    if (cf_as_completed_pending(a->it) == 0) { /* all in: let the loop end */
        uv_poll_stop(&a->poll);
        uv_timer_stop(&a->ticker);
    }
}

static void on_tick(uv_timer_t *t)
{
    ((app *)t->data)->ticks++; /* the loop is free for other work */
}

int main(int argc, char **argv)
{
    bool processes = argc == 3 && strcmp(argv[1], "--executor") == 0 &&
                     strcmp(argv[2], "process") == 0;
    cf_executor *ex = processes ? cf_process_pool(NULL) : cf_thread_pool(NULL);
    cf_future *fs[NWORK];
    for (int i = 0; i < NWORK; i++)
        fs[i] = cf_submit_i64(ex, sum_to, WORK_LIST[i]);
    app a = {.it = cf_as_completed_new(fs, NWORK, CF_FOREVER)};

    uv_loop_t *loop = uv_default_loop();
    uv_poll_init(loop, &a.poll, cf_as_completed_fd(a.it));
    uv_timer_init(loop, &a.ticker);
    a.poll.data = a.ticker.data = &a;
    uv_poll_start(&a.poll, UV_READABLE, on_done);
    uv_timer_start(&a.ticker, on_tick, 1, 1);
    uv_run(loop, UV_RUN_DEFAULT);

    uv_close((uv_handle_t *)&a.poll, NULL); /* before the fd goes away */
    uv_close((uv_handle_t *)&a.ticker, NULL);
    uv_run(loop, UV_RUN_DEFAULT);
    uv_loop_close(loop);
    cf_as_completed_free(a.it);
    for (int i = 0; i < NWORK; i++)
        cf_future_release(fs[i]);
    cf_executor_free(ex);
    return a.wrong ? 1 : 0;
}

/*
 * worker.c -- the worker process of a process pool.
 *
 * A process pool starts each worker with posix_spawn of /proc/self/exe and
 * CFUTURES_WORKER_FD in its environment.  This file's constructor sees that
 * variable before main() runs, and turns the process into a worker: it
 * never returns to the program's main.
 *
 * The worker: closes every descriptor it does not need, ignores SIGINT
 * (Ctrl-C is the parent's business), starts a thread that ends the process
 * when the parent dies (a pidfd on the parent, so even a SIGKILLed parent
 * is noticed at once), runs the initializer and says HELLO, then serves
 * TASK frames one item at a time, writing one RESULT per item so that the
 * parent always knows which task a crash interrupted.
 */
#include "remote.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#define WORKER_FD_ENV "CFUTURES_WORKER_FD"
#define PARENT_ENV "CFUTURES_PARENT_PID"
#define SHM_ENV "CFUTURES_WORKER_SHM"

/* Referenced by process_pool.c so that a static link keeps this file (and
 * its constructor) whenever the program uses a process pool. */
const char cf__worker_env[] = WORKER_FD_ENV;

static int wfd = -1;
static pid_t parent;
static const _Atomic uint32_t cancel_word; /* unused: requests come by shm */
static cf_worker_shm *parent_shm;          /* the page shared with the parent */

static void die(const char *what)
{
    fprintf(stderr, "cfutures worker %d: %s\n", (int)getpid(), what);
    _exit(70);
}

static bool read_full(void *buf, size_t n)
{
    unsigned char *p = buf;
    while (n > 0) {
        ssize_t r = cf__io_read(wfd, p, n);
        if (r > 0) {
            p += r;
            n -= (size_t)r;
        } else if (r == 0 || (errno != EINTR && errno != EAGAIN)) {
            return false;
        }
    }
    return true;
}

static void write_full(const void *buf, size_t n)
{
    const unsigned char *p = buf;
    while (n > 0) {
        ssize_t w = cf__io_write(wfd, p, n);
        if (w > 0) {
            p += w;
            n -= (size_t)w;
        } else if (w < 0 && errno != EINTR && errno != EAGAIN) {
            _exit(0); /* the parent is gone */
        }
    }
}

/* Ends the process when the parent does: poll a pidfd of the parent (or,
 * where pidfds do not exist, check getppid() every 200 ms). */
static void *watch_parent(void *arg)
{
    (void)arg;
    int pfd = (int)syscall(SYS_pidfd_open, parent, 0);
    if (getppid() != parent)
        _exit(0);
    for (;;) {
        if (pfd >= 0) {
            struct pollfd p = {.fd = pfd, .events = POLLIN};
            if (poll(&p, 1, -1) > 0)
                _exit(0);
        } else {
            usleep(200 * 1000);
            if (getppid() != parent)
                _exit(0);
        }
    }
    return NULL;
}

/* Reads one frame; false at EOF.  *body is malloc'd (caller frees). */
static bool read_frame(cf_wire_header *h, unsigned char **body)
{
    unsigned char hdr[CF_WIRE_HEADER];
    if (!read_full(hdr, sizeof hdr))
        return false;
    if (cf__wire_header(hdr, h) != CF_OK)
        die("bad frame header from the parent");
    *body = malloc(h->body_len ? (size_t)h->body_len : 1);
    if (*body == NULL)
        die("out of memory for a task frame");
    if (!read_full(*body, (size_t)h->body_len))
        return false;
    return true;
}

static void run_init(cf_wbuf *out, const unsigned char *body, size_t len)
{
    cf_rbuf r = {body, len, 0};
    cf_fnref ref;
    const void *arg;
    size_t arg_len;
    char err[256];
    if (cf__wire_read_fnref(&r, &ref) != CF_OK ||
        cf__wire_read_bytes(&r, &arg, &arg_len) != CF_OK) {
        cf__wire_hello(out, CF_EINVAL, 0, "malformed INIT frame");
        return;
    }
    if (ref.module_len == 0 && ref.offset == 0) { /* no initializer */
        cf__wire_hello(out, CF_OK, 0, NULL);
        return;
    }
    cf_task_fn fn;
    if (cf__fnref_resolve(&ref, &fn, err, sizeof err) != CF_OK) {
        cf__wire_hello(out, CF_EINVAL, 0, err);
        return;
    }
    cf_call c;
    cf__call_init(&c, arg, arg_len, &cancel_word);
    fn(&c);
    cf__wire_hello(out, c.out.status, c.out.code,
                   c.out.status != CF_OK && c.out.msg == NULL
                       ? "the initializer failed"
                       : c.out.msg);
    cf__outcome_clear(&c.out);
}

/*
 * Runs the items of a TASK frame in order.  A frame of one item is
 * answered at once.  A frame of many (a chunked map) is answered in batches
 * of up to BATCH_BYTES, or at its end: one write per batch instead of one
 * per item.  Before each item the worker writes its id in the shared page,
 * so that if it dies the parent knows which item was running; items that
 * had finished but whose results were still in the batch run again.
 */
#define BATCH_BYTES 65536

static void run_tasks(cf_link *link, cf_wbuf *out, const cf_wire_header *h,
                      const unsigned char *body, cf_worker_shm *shm)
{
    cf_rbuf r = {body, (size_t)h->body_len, 0};
    cf_fnref ref;
    if (cf__wire_read_fnref(&r, &ref) != CF_OK)
        die("malformed TASK frame");
    out->len = 0;
    char err[256];
    cf_task_fn fn = NULL;
    bool ok = cf__fnref_resolve(&ref, &fn, err, sizeof err) == CF_OK;
    for (uint32_t i = 0; i < h->count; i++) {
        cf_wire_item it;
        if (cf__wire_read_item(&r, &it) != CF_OK)
            die("malformed TASK item");
        if (shm != NULL)
            atomic_store_explicit(&shm->running_id, it.id + 1,
                                  memory_order_relaxed);
        cf_call c;
        cf__call_init(&c, it.arg, it.arg_len, &cancel_word);
        c.cancel_id = shm ? &shm->cancel_id : NULL;
        c.id = it.id;
        if (ok && link->run != NULL)
            link->run(link, fn, &c);
        else if (ok)
            fn(&c);
        else
            cf__outcome_failf(&c.out, CF_EINVAL, 0, "%s", err);
        if (c.out.status != CF_OK && c.out.len > 0) /* a raise wins */
            cf__outcome_set(&c.out, CF_KIND_NONE, NULL, 0);
        size_t off = cf__wire_begin(out, CF_FRAME_RESULT, 1);
        cf__wire_result(out, it.id, &c.out);
        cf__wire_end(out, off);
        cf__outcome_clear(&c.out);
        if (out->oom)
            die("out of memory for a result");
        if (h->count == 1 || out->len >= BATCH_BYTES || i + 1 == h->count) {
            link->send(link, out->p, out->len);
            out->len = 0;
        }
    }
}

/* Closes the descriptors from..to (close_range(2), or one by one). */
void cf__serve(cf_link *link, cf_worker_shm *shm)
{
    cf_wbuf out = {0};
    cf_wire_header h;
    unsigned char *body;
    if (!link->recv(link, &h, &body))
        return;
    if (h.type != CF_FRAME_INIT)
        die("the first frame is not INIT");
    run_init(&out, body, (size_t)h.body_len);
    free(body);
    link->send(link, out.p, out.len);
    while (link->recv(link, &h, &body)) {
        if (h.type == CF_FRAME_TASK)
            run_tasks(link, &out, &h, body, shm);
        free(body);
    }
    cf__wbuf_free(&out);
}

static bool pipe_recv(cf_link *link, cf_wire_header *h, unsigned char **body)
{
    (void)link;
    return read_frame(h, body);
}

static void pipe_send(cf_link *link, const void *p, size_t n)
{
    (void)link;
    write_full(p, n);
}

static void close_between(int from, int to)
{
    if (from > to)
        return;
    if (syscall(SYS_close_range, (unsigned)from, (unsigned)to, 0u) == 0)
        return;
    long max = sysconf(_SC_OPEN_MAX);
    for (long fd = from; fd <= to && fd < (max > 0 ? max : 1024); fd++)
        close((int)fd);
}

/* Closes every descriptor above 2 but a and b (a <= b). */
static void close_other_fds(int a, int b)
{
    close_between(3, a - 1);
    close_between(a + 1, b - 1);
    close_between(b + 1, INT_MAX);
}

static void worker_main(int fd)
{
    wfd = fd;
    const char *pp = getenv(PARENT_ENV);
    parent = pp ? (pid_t)atol(pp) : getppid();
    const char *sm = getenv(SHM_ENV);
    int shm_fd = sm ? atoi(sm) : -1;
    unsetenv(WORKER_FD_ENV); /* tasks that spawn programs do not pass it on */
    unsetenv(PARENT_ENV);
    unsetenv(SHM_ENV);
    signal(SIGINT, SIG_IGN);
    signal(SIGPIPE, SIG_DFL);
    if (shm_fd < 3 || shm_fd == wfd)
        shm_fd = -1;
    close_other_fds(shm_fd >= 0 && shm_fd < wfd ? shm_fd : wfd,
                    shm_fd > wfd ? shm_fd : wfd);
    if (shm_fd >= 0) {
        void *p = mmap(NULL, sizeof(cf_worker_shm), PROT_READ | PROT_WRITE,
                       MAP_SHARED, shm_fd, 0);
        parent_shm = p == MAP_FAILED ? NULL : p;
        close(shm_fd);
    }

    pthread_t t;
    if (pthread_create(&t, NULL, watch_parent, NULL) != 0)
        die("cannot start the parent watcher");
    pthread_detach(t);

    cf_link link = {.recv = pipe_recv, .send = pipe_send};
    cf__serve(&link, parent_shm);
    _exit(0); /* EOF: the parent shut the pool down or retired us */
}

__attribute__((constructor)) static void cf_worker_entry(void)
{
    const char *s = getenv(WORKER_FD_ENV);
    if (s == NULL)
        return;
    char *end;
    long fd = strtol(s, &end, 10);
    if (*end != '\0' || fd < 0 || fd > 1 << 20)
        return;
    worker_main((int)fd);
}

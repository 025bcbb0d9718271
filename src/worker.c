/*
 * worker.c -- the worker side: a process pool's worker process, and the
 * frame server the MPI ranks run (cf__serve).
 *
 * A process pool starts each worker with posix_spawn of the program and
 * CFUTURES_WORKER_FD in its environment.  This file's constructor sees that
 * variable before main() runs, and turns the process into a worker: it
 * never returns to the program's main.
 *
 * The worker: closes every descriptor it does not need, ignores SIGINT
 * (Ctrl-C is the parent's business), starts a thread that ends the process
 * when the parent dies (a pidfd on the parent, so even a SIGKILLed parent
 * is noticed at once), reads the INIT frame from its socket, runs the
 * initializer and says HELLO, then serves the task slots of the memory it
 * shares with the parent (ring.h): it claims each slot with a CAS (a slot
 * the parent took back is skipped), writes the id of the item it runs in
 * the shared page before running it (so the parent knows which item a
 * crash interrupted), and writes each result to the result ring as soon
 * as it has it.  It spins briefly when out of work, then sleeps on a futex
 * the parent wakes; it wakes a sleeping parent with a WAKE frame.
 */
#include "remote.h"
#include "ring.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <sched.h>
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
/* An idle worker polls its slots this long before it sleeps. */
#define SPIN_NS 20000

/* Referenced by process_pool.c so that a static link keeps this file (and
 * its constructor) whenever the program uses a process pool. */
const char cf__worker_env[] = WORKER_FD_ENV;

static int wfd = -1;
static pid_t parent;
static const _Atomic uint32_t cancel_word; /* unused: requests come by shm */

static _Noreturn void die(const char *what)
{
    fprintf(stderr, "cfutures worker %d: %s\n", (int)getpid(), what);
    _exit(70);
}

/* A task's argument as cf_arg gives it: aligned for any type (a task may
 * cast it to its struct).  Arguments sit at any offset of a frame or a
 * ring slot; a misaligned one is copied to a buffer kept for the next
 * task (a worker runs one task at a time). */
static const void *aligned_arg(const void *arg, size_t len)
{
    static void *buf;
    static size_t cap;
    if (((uintptr_t)arg & (_Alignof(max_align_t) - 1)) == 0 || len == 0)
        return arg;
    if (len > cap) {
        void *n = realloc(buf, len);
        if (n == NULL)
            die("out of memory for a task's argument");
        buf = n;
        cap = len;
    }
    memcpy(buf, arg, len);
    return buf;
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

/* Reads one frame from the socket; false at EOF.  *body is malloc'd. */
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
    cf__call_init(&c, aligned_arg(arg, arg_len), arg_len, &cancel_word);
    fn(&c);
    cf__wire_hello(out, c.out.status, c.out.code,
                   c.out.status != CF_OK && c.out.msg == NULL
                       ? "the initializer failed"
                       : c.out.msg);
    cf__outcome_clear(&c.out);
}

/* The function of the last TASK body, resolved once per function. */
typedef struct fn_cache {
    unsigned char key[512]; /* the encoded reference */
    size_t key_len;
    cf_task_fn fn;
    bool ok;
    char err[256];
} fn_cache;

static void resolve(fn_cache *fc, const cf_fnref *ref, const unsigned char *enc,
                    size_t enc_len)
{
    if (enc_len == fc->key_len && memcmp(enc, fc->key, enc_len) == 0)
        return;
    fc->ok = cf__fnref_resolve(ref, &fc->fn, fc->err, sizeof fc->err) == CF_OK;
    fc->key_len = enc_len <= sizeof fc->key ? enc_len : 0;
    memcpy(fc->key, enc, fc->key_len);
}

/* Runs one item: its outcome in c->out (a raise wins over a result). */
static void run_item(cf_link *link, const fn_cache *fc, cf_call *c)
{
    if (fc->ok && link != NULL && link->run != NULL)
        link->run(link, fc->fn, c);
    else if (fc->ok)
        fc->fn(c);
    else
        cf__outcome_failf(&c->out, CF_EINVAL, 0, "%s", fc->err);
    if (c->out.status != CF_OK && c->out.len > 0)
        cf__outcome_set(&c->out, CF_KIND_NONE, NULL, 0);
}

/* Appends the RESULT item of an outcome. */
static void put_outcome(cf_wbuf *out, uint64_t id, const cf_outcome *o)
{
    cf__wire_result(out, id, o->status, o->code, o->kind, cf__outcome_data(o),
                    o->len, o->msg, o->msg ? strlen(o->msg) : 0);
}

/* Parses the head of a TASK body: the function and the first item's id. */
static void task_head(fn_cache *fc, cf_rbuf *r, uint64_t *first_id)
{
    cf_fnref ref;
    size_t at = r->pos;
    if (cf__wire_read_task_head(r, &ref, first_id) != CF_OK)
        die("malformed TASK frame");
    resolve(fc, &ref, r->p + at, r->pos - at - 8);
}

/* ------------------------------------------------------------------------ */
/* cf__serve: frames in, frames out (the MPI ranks)                          */
/* ------------------------------------------------------------------------ */

/*
 * Runs the items of a TASK frame in order.  A frame of one item is
 * answered at once.  A frame of many (a chunked map) is answered in batches
 * of up to BATCH_BYTES, or at its end: one message per batch instead of
 * one per item.
 */
#define BATCH_BYTES 65536

static void serve_task(cf_link *link, cf_wbuf *out, fn_cache *fc,
                       const cf_wire_header *h, const unsigned char *body)
{
    cf_rbuf r = {body, (size_t)h->body_len, 0};
    uint64_t id;
    task_head(fc, &r, &id);
    out->len = 0;
    for (uint32_t i = 0; i < h->count; i++, id++) {
        cf_wire_item it;
        if (cf__wire_read_item(&r, &it) != CF_OK)
            die("malformed TASK item");
        cf_call c;
        cf__call_init(&c, aligned_arg(it.arg, it.arg_len), it.arg_len,
                      &cancel_word);
        c.id = id;
        run_item(link, fc, &c);
        size_t off = cf__wire_begin(out, CF_FRAME_RESULT, 1);
        put_outcome(out, id, &c.out);
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

void cf__serve(cf_link *link)
{
    cf_wbuf out = {0};
    cf_wire_header h;
    unsigned char *body;
    fn_cache *fc = calloc(1, sizeof *fc);
    if (fc == NULL)
        die("out of memory");
    if (!link->recv(link, &h, &body))
        goto done;
    if (h.type != CF_FRAME_INIT)
        die("the first frame is not INIT");
    run_init(&out, body, (size_t)h.body_len);
    free(body);
    link->send(link, out.p, out.len);
    while (link->recv(link, &h, &body)) {
        if (h.type == CF_FRAME_TASK)
            serve_task(link, &out, fc, &h, body);
        free(body);
    }
done:
    free(fc);
    cf__wbuf_free(&out);
}

/* ------------------------------------------------------------------------ */
/* The process worker: task slots and the result ring                        */
/* ------------------------------------------------------------------------ */

static cf_shm *shm;
static uint64_t res_head; /* our write position in the result ring */
static uint64_t res_tail; /* the parent's read position, as last read */

/* Tells a sleeping parent that something happened (a claim, results, a
 * slot done): a WAKE frame on the socket, at most one per parent sleep. */
static void poke_parent(void)
{
    atomic_thread_fence(memory_order_seq_cst);
    if (atomic_load_explicit(&shm->parent_sleeping, memory_order_relaxed) &&
        atomic_exchange(&shm->parent_sleeping, 0)) {
        unsigned char f[CF_WIRE_HEADER];
        cf_wbuf b = {.p = f, .cap = sizeof f};
        cf__wire_begin(&b, CF_FRAME_WAKE, 0);
        write_full(f, sizeof f);
    }
}

/* Waits until slot pos is published (true) or the parent said stop and
 * every slot is done (false). */
static bool wait_slot(uint64_t pos)
{
    uint64_t spin_until = 0;
    for (unsigned i = 0;; i++) {
        if (atomic_load_explicit(&shm->task_head, memory_order_acquire) > pos)
            return true;
        if (atomic_load_explicit(&shm->stop, memory_order_acquire) &&
            atomic_load_explicit(&shm->task_head, memory_order_acquire) == pos)
            return false;
        if ((i & 15) != 15) {
            cf__cpu_relax();
            continue;
        }
        uint64_t now = cf__now_ns();
        if (spin_until == 0)
            spin_until = now + SPIN_NS;
        if (now < spin_until) {
            sched_yield(); /* on a busy machine the parent may need it */
            continue;
        }
        uint32_t seen = atomic_load(&shm->task_futex);
        atomic_store(&shm->worker_sleeping, 1);
        atomic_thread_fence(memory_order_seq_cst);
        if (atomic_load(&shm->task_head) > pos || atomic_load(&shm->stop)) {
            atomic_store(&shm->worker_sleeping, 0);
            continue;
        }
        cf__shm_futex_wait(&shm->task_futex, seen);
        atomic_store(&shm->worker_sleeping, 0);
        spin_until = 0;
    }
}

/* Room for a result record of len body bytes: waits for the parent to
 * read (waking it) when the ring is full. */
static unsigned char *reserve_result(uint32_t len)
{
    uint64_t spin_until = 0;
    for (unsigned i = 0;; i++) {
        unsigned char *p = cf__ring_rec_reserve_at(shm, &res_head, &res_tail,
                                                   len);
        if (p != NULL)
            return p;
        if (i == 0)
            poke_parent();
        if ((i & 63) != 63) {
            cf__cpu_relax();
            continue;
        }
        uint64_t now = cf__now_ns();
        if (spin_until == 0)
            spin_until = now + SPIN_NS;
        if (now < spin_until)
            continue;
        uint32_t seen = atomic_load(&shm->space_futex);
        atomic_store(&shm->space_waiting, 1);
        atomic_thread_fence(memory_order_seq_cst);
        if ((p = cf__ring_rec_reserve_at(shm, &res_head, &res_tail, len)) !=
            NULL) {
            atomic_store(&shm->space_waiting, 0);
            return p;
        }
        poke_parent();
        cf__shm_futex_wait(&shm->space_futex, seen);
        atomic_store(&shm->space_waiting, 0);
        spin_until = 0;
    }
}

/* Writes the result of item id: in the ring, or (too big for it) as a
 * RESULT frame on the socket announced by a SPILL record. */
static void put_result(uint64_t id, const cf_outcome *o)
{
    size_t msg_len = o->msg ? strlen(o->msg) : 0;
    const void *data = cf__outcome_data(o);
    uint64_t size = cf__wire_result_size(o->len, msg_len);
    if (size <= CF_RING_RES_MAX) {
        unsigned char *p = reserve_result((uint32_t)size);
        cf__wire_result_put(p, id, o->status, o->code, o->kind, data, o->len,
                            o->msg, msg_len);
        cf__ring_rec_commit(shm, &res_head, CF_REC_RESULT, (uint32_t)size);
        return;
    }
    unsigned char *p = reserve_result(8);
    memcpy(p, &id, 8);
    cf__ring_rec_commit(shm, &res_head, CF_REC_SPILL, 8);
    cf_wbuf out = {0};
    size_t off = cf__wire_begin(&out, CF_FRAME_RESULT, 1);
    put_outcome(&out, id, o);
    cf__wire_end(&out, off);
    if (out.oom)
        die("out of memory for a result");
    write_full(out.p, out.len);
    cf__wbuf_free(&out);
}

/* Runs the items of a claimed slot, each result written as it comes. */
static void run_slot(fn_cache *fc, const unsigned char *body, uint64_t len)
{
    cf_rbuf r = {body, (size_t)len, 0};
    uint64_t id;
    task_head(fc, &r, &id);
    while (r.pos < r.len) {
        cf_wire_item it;
        if (cf__wire_read_item(&r, &it) != CF_OK)
            die("malformed TASK item");
        atomic_store_explicit(&shm->running_id, id + 1, memory_order_relaxed);
        cf_call c;
        cf__call_init(&c, aligned_arg(it.arg, it.arg_len), it.arg_len,
                      &cancel_word);
        c.cancel_id = &shm->cancel_id;
        c.id = id;
        run_item(NULL, fc, &c);
        put_result(id, &c.out);
        cf__outcome_clear(&c.out);
        id++;
    }
    atomic_store_explicit(&shm->running_id, 0, memory_order_relaxed);
}

static void serve_slots(void)
{
    fn_cache *fc = calloc(1, sizeof *fc);
    if (fc == NULL)
        die("out of memory");
    for (uint64_t pos = 0; wait_slot(pos); pos++) {
        cf_ring_slot *sl = &shm->slots[pos % CF_RING_SLOTS];
        uint32_t want = CF_SLOT_QUEUED;
        bool mine = atomic_compare_exchange_strong(&sl->state, &want,
                                                   CF_SLOT_CLAIMED);
        if (!mine && want != CF_SLOT_REVOKED)
            die("a task slot in a bad state");
        unsigned char *spilled = NULL;
        const unsigned char *body;
        uint64_t len;
        if (sl->flags & CF_SLOT_SPILL) { /* the frame is on the socket */
            cf_wire_header h;
            if (!read_frame(&h, &spilled))
                _exit(0); /* the parent is gone */
            if (h.type != CF_FRAME_TASK)
                die("a spilled frame that is no TASK");
            body = spilled;
            len = h.body_len;
        } else {
            len = sl->len;
            if (sl->off > CF_RING_TASK_BYTES ||
                len > CF_RING_TASK_BYTES - sl->off)
                die("a task slot out of bounds");
            body = shm->task_data + sl->off;
        }
        if (mine) {
            atomic_store_explicit(&shm->claimed, pos + 1, memory_order_release);
            poke_parent();
            run_slot(fc, body, len);
        } else {
            atomic_store_explicit(&shm->claimed, pos + 1, memory_order_release);
        }
        free(spilled);
        atomic_store_explicit(&shm->released, pos + 1, memory_order_release);
        poke_parent();
    }
    free(fc);
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

/* A fatal signal in a task: note it in the shared page, then die of it.
 * The parent reads the signal from there even when it cannot read the
 * exit status (SIGCHLD ignored, or another thread's waitpid(-1) reaped
 * the worker first). */
static void on_fatal_signal(int sig)
{
    if (shm != NULL)
        atomic_store_explicit(&shm->fatal_signal, sig, memory_order_relaxed);
    /* SA_RESETHAND restored the default action; a fault re-executes the
     * faulting instruction and dies of it, raise() covers the rest. */
    raise(sig);
}

static void catch_fatal_signals(void)
{
    /* An alternate stack, so that a task's stack overflow is noted too. */
    static char altstack[1 << 16];
    stack_t ss = {.ss_sp = altstack, .ss_size = sizeof altstack};
    sigaltstack(&ss, NULL);
    static const int sigs[] = {SIGSEGV, SIGBUS, SIGFPE,  SIGILL, SIGABRT,
                               SIGTRAP, SIGSYS, SIGXCPU, SIGXFSZ};
    struct sigaction sa = {.sa_handler = on_fatal_signal,
                           .sa_flags = SA_RESETHAND | SA_NODEFER | SA_ONSTACK};
    sigemptyset(&sa.sa_mask);
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
        sigaction(sigs[i], &sa, NULL);
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
        die("no shared memory from the parent");
    close_other_fds(shm_fd < wfd ? shm_fd : wfd, shm_fd > wfd ? shm_fd : wfd);
    /* Populated now (the parent allocated the pages): no page fault when
     * the rings come round to a page for the first time. */
    void *p = mmap(NULL, sizeof(cf_shm), PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_POPULATE, shm_fd, 0);
    close(shm_fd);
    if (p == MAP_FAILED)
        die("cannot map the memory shared with the parent");
    shm = p;
    atomic_store(&shm->phase, CF_PHASE_MAPPED);
    /* The socket stays ours: a task's fork()/popen() children do not get
     * it (and cannot keep the parent from seeing this worker's death). */
    fcntl(wfd, F_SETFD, FD_CLOEXEC);
    catch_fatal_signals();

    pthread_t t;
    if (pthread_create(&t, NULL, watch_parent, NULL) != 0)
        die("cannot start the parent watcher");
    pthread_detach(t);

    /* INIT and HELLO on the socket, then the slots. */
    cf_wire_header h;
    unsigned char *body;
    if (!read_frame(&h, &body))
        _exit(0);
    if (h.type != CF_FRAME_INIT)
        die("the first frame is not INIT");
    cf_wbuf out = {0};
    atomic_store(&shm->phase, CF_PHASE_INIT);
    run_init(&out, body, (size_t)h.body_len);
    free(body);
    atomic_store(&shm->phase, CF_PHASE_SERVING);
    write_full(out.p, out.len);
    cf__wbuf_free(&out);
    serve_slots();
    _exit(0); /* the parent shut the pool down or retired us */
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

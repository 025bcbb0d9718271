/*
 * process_pool.c -- the process pool executor (ProcessPoolExecutor) with
 * crash isolation and per-task time limits: the policy.  The mechanisms
 * live elsewhere: the memory shared with each worker (ring.c), the
 * frames (wire.c), the worker's side (worker.c), what the MPI pool shares
 * (remote.c), a map's chunk (chunk.c).
 *
 * Threads and ownership:
 *   - Submitters push futures on the pool queue (pool lock) and poke the
 *     manager through an eventfd, only when it sleeps.
 *   - One manager thread owns the workers: it spawns them (posix_spawn of
 *     the program, see worker.c), puts tasks in their slots, reads their
 *     results, completes futures, and notices deaths through a pidfd per
 *     worker.  Everything in `pworker` is the manager's; the pool lock
 *     guards the queue and which future sits in which slot (CF_ARG_SLOT).
 *
 * A task in a worker's slot is only queued there: it stays PENDING, and
 * cf_cancel takes it back (pp_cancel_queued), until the worker claims the
 * slot.  Tasks are sent ahead (a window per worker, deep for short tasks),
 * and a worker that goes idle while another runs a long task takes back
 * the tasks queued behind it, so a short task never waits behind a long
 * one while a worker idles.
 *
 * A worker runs its slots in order and writes each item's result as soon
 * as it has it, and the id of the item it runs in the shared page: when a
 * worker dies, the item it was running crashed (or timed out); items
 * behind it never started and go back to the queue, still PENDING.
 *
 * Lock order: pool lock -> nothing.  Futures are completed (callbacks run)
 * by the manager with no lock held.
 */
#include "chunk.h"
#include "image.h"
#include "remote.h"
#include "ring.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

#define READ_CHUNK 65536 /* bytes read per read(2) */
/* Tasks given to a worker ahead of time: many while tasks are short on
 * average (then the worker never waits for the parent), else one behind
 * the running one. */
#define WINDOW_SHORT 32
#define WINDOW_LONG 2
#define PIPELINE_MAX_NS 200000
/* The manager polls the rings this long before it sleeps. */
#define SPIN_NS 20000
/* Tasks queued behind one that has run this long (or 4 x the average) go
 * to an idle worker. */
#define TAKEBACK_NS 100000
#define WORKER_FD 3     /* the worker's end of its socket, in the worker */
#define WORKER_SHM_FD 4 /* the memory shared with the worker, in the worker */

enum wstate { W_STARTING, W_READY, W_RETIRING, W_DEAD };

/* The parent's view of a task slot (ring.h). */
enum pstate {
    PS_FREE,    /* not in use */
    PS_QUEUED,  /* published; its claim not seen yet */
    PS_RUNNING, /* claimed: the worker runs it (or ran it) */
    PS_SKIPPED, /* revoked: the worker skips it */
};

typedef struct pworker pworker;

typedef struct pslot {
    pworker *w;
    uint64_t seq;
    cf_future *f;      /* NULL once settled or given back */
    cf_chunk_run *rs;  /* a chunk's results (NULL: a plain task) */
    uint64_t first_id; /* id of the first item this slot runs */
    uint32_t count;    /* items this slot runs */
    uint32_t done;     /* their results received */
    uint8_t st;        /* enum pstate */
    bool fresh;        /* f was PENDING when it was put in the slot */
    uint64_t queued;   /* trace: submit time (0: not tracing) */
    uint64_t last;     /* ns: claim, then each result */
} pslot;

struct pworker {
    pid_t pid;
    int fd;    /* socket to the worker; -1 once closed */
    int pidfd; /* -1 if the kernel has no pidfds */
    enum wstate state;
    cf_wbuf out;       /* bytes waiting to be written (INIT, spills) */
    unsigned char *in; /* bytes read, not yet parsed */
    size_t in_len, in_cap;
    cf_shm *shm; /* the memory shared with the worker */
    cf_ring_tx tx;
    uint64_t claimed_seen; /* slots whose claim or skip was handled */
    uint64_t rx;           /* the slot the next result is for */
    uint64_t res_tail;     /* result ring: bytes read */
    bool spill_pending;    /* the next result comes on the socket */
    uint64_t next_id;      /* id of the next item given */
    uint64_t tasks;        /* tasks given (max_tasks_per_child) */
    uint64_t busy_since;   /* ns; 0 while idle */
    uint64_t idle_since;   /* ns; 0 while it has work (idle_timeout) */
    bool idle_exit;        /* retired for idling */
    uint64_t rel_seen;     /* last value of shm->released read */
    uint64_t kill_seq;     /* seq + 1 of the slot it was killed for */
    bool timed_out;        /* killed because a task ran too long */
    bool killed_task;      /* killed by cf_kill_task of its task */
    int kill_signal;       /* signal sent by terminate / kill */
    bool stopping;         /* told to stop once its slots are done */
    const char *broke;     /* why it broke the protocol (then killed) */
    pslot slots[CF_RING_SLOTS];
};

/* Work whose worker died under it: a RUNNING task to re-run (retries), or
 * the rest of a chunk.  It goes before the queue. */
typedef struct redo {
    struct redo *next;
    cf_future *f;
    cf_chunk_run *rs;
} redo;

typedef struct process_pool {
    cf_executor base;
    pthread_mutex_t lock;
    cf_fqueue q;            /* guarded by lock */
    _Atomic uint64_t pokes; /* bumped by each submit, shutdown, cancel or
                               signal request: the manager, spinning
                               without the lock, sees them */
    bool shutdown, broken;
    bool manager_sleeping;
    int pending_signal; /* for the manager: terminate / kill the workers */
    int start_failures; /* workers in a row that died before HELLO */
    bool cancel_check;  /* cf_request_cancel / cf_kill_task happened */
    bool cancel_all;    /* shut down with cancel_futures */
    bool cancel_done;   /* ... and the slots were emptied */
    char *broken_msg;
    int efd;
    cf_manager manager;
    /* manager-owned */
    redo *redo;
    uint64_t ewma_ns; /* average task run time; 0: unknown */
    uint64_t pass_ns; /* the time of this pass over a worker (pass_now) */
    pworker **w;      /* nslots worker slots, allocated as workers start */
    int nslots;
    int nworkers; /* slots in use (alive or starting) */
    cf_fnref init_ref;
    bool has_init;
    void *initarg;
    size_t initarg_len;
    int max_tasks_per_child;
    uint64_t idle_ns; /* idle_timeout; 0 = forever */
    int max_retries;
    cf_fncache fncache;
    cf_wbuf fnenc;      /* the encoded reference of fncache.fn */
    struct pollfd *pfd; /* the manager's poll set: 2 per slot + 1 */
    struct pworker **who;
} process_pool;

static void pool_free(process_pool *p);

static process_pool *pool_of(cf_executor *ex)
{
    return (process_pool *)ex;
}

/* Tells the manager there is news (pool lock held): it sees the counter
 * while it spins, and gets a write on the eventfd if it sleeps. */
static void wake_manager_locked(process_pool *p)
{
    atomic_fetch_add_explicit(&p->pokes, 1, memory_order_release);
    if (p->manager_sleeping) {
        uint64_t one = 1;
        p->manager_sleeping = false;
        ssize_t rc = write(p->efd, &one, sizeof one);
        (void)rc; /* the counter cannot overflow at one per sleep */
    }
}

/* A future in a slot, or not (pool lock held). */
static void mark(cf_future *f, pslot *ps)
{
    f->arg_flags |= CF_ARG_SLOT;
    f->next = (cf_future *)(void *)ps;
}

static void unmark(cf_future *f)
{
    if (f->arg_flags & CF_ARG_SLOT) {
        f->arg_flags &= (uint8_t)~CF_ARG_SLOT;
        f->next = NULL;
    }
}

static bool cancelled(const cf_future *f)
{
    return (cf__state_load(f) & FS_STATE) == CF_CANCELLED ||
           (f->arg_flags & CF_ARG_CANCELLING);
}

/* ------------------------------------------------------------------------ */
/* Workers: spawn, reset                                                     */
/* ------------------------------------------------------------------------ */

static void worker_reset(pworker *w)
{
    if (w->shm != NULL)
        munmap(w->shm, sizeof *w->shm);
    cf__wbuf_free(&w->out);
    free(w->in);
    memset(w, 0, sizeof *w);
    w->fd = w->pidfd = -1;
    w->state = W_DEAD;
}

/* Appends NAME=value options for the sanitizers, so that a task's crash in
 * a sanitizer build still kills the worker with the real signal. */
static char *sanitizer_env(const char *name)
{
    const char *old = getenv(name);
    char *s = NULL;
    if (asprintf(&s,
                 "%s=%s%shandle_segv=0:handle_sigbus=0:handle_sigfpe=0:"
                 "handle_sigill=0:handle_abort=0:detect_leaks=0",
                 name, old ? old : "", old && *old ? ":" : "") < 0)
        return NULL;
    return s;
}

/* Starts a worker in w.  CF_OK; else a status, with what went wrong in
 * err. */
static int spawn_worker(process_pool *p, pworker *w, char *err, size_t errlen)
{
    worker_reset(w);
    cf_image_cmd cmd;
    if (cf__image_cmd(&cmd, err, errlen) != CF_OK)
        return CF_EBROKEN;
    snprintf(err, errlen, "out of memory");
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
        return CF_ENOMEM;
    /* Bigger buffers: fewer wake-ups per large payload. */
    int sz = 1 << 20;
    setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &sz, sizeof sz);
    setsockopt(sv[0], SOL_SOCKET, SO_RCVBUF, &sz, sizeof sz);

    /* The environment: ours, plus the worker's variables. */
    size_t n = 0;
    while (environ[n] != NULL)
        n++;
    char **env = calloc(n + 6, sizeof *env);
    char fdvar[64], ppvar[64], shmvar[64];
    char *asan = sanitizer_env("ASAN_OPTIONS");
    char *tsan = sanitizer_env("TSAN_OPTIONS");
    int rc = CF_ENOMEM;
    int mfd = -1;
    if (env == NULL || asan == NULL || tsan == NULL)
        goto out;
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (strncmp(environ[i], "ASAN_OPTIONS=", 13) != 0 &&
            strncmp(environ[i], "TSAN_OPTIONS=", 13) != 0 &&
            strncmp(environ[i], "CFUTURES_", 9) != 0)
            env[k++] = environ[i];
    snprintf(fdvar, sizeof fdvar, "%s=%d", cf__worker_env, WORKER_FD);
    snprintf(ppvar, sizeof ppvar, "CFUTURES_PARENT_PID=%d", (int)getpid());
    snprintf(shmvar, sizeof shmvar, "CFUTURES_WORKER_SHM=%d", WORKER_SHM_FD);
    env[k++] = fdvar;
    env[k++] = ppvar;
    env[k++] = shmvar;
    env[k++] = asan;
    env[k++] = tsan;
    env[k] = NULL;

    mfd = memfd_create("cfutures-worker", MFD_CLOEXEC);
    if (mfd < 0 || ftruncate(mfd, sizeof(cf_shm)) != 0)
        goto out;
    /* Populated now: a page fault costs microseconds (more on a VM), and
     * the rings would fault each page in the first time round. */
    void *shm = mmap(NULL, sizeof(cf_shm), PROT_READ | PROT_WRITE,
                     MAP_SHARED | MAP_POPULATE, mfd, 0);
    if (shm == MAP_FAILED)
        goto out;
    w->shm = shm;
    w->tx.s = shm;
    /* The sources of the dup2s must not be the targets (3, 4). */
    int child = sv[1] > WORKER_SHM_FD
                    ? sv[1]
                    : fcntl(sv[1], F_DUPFD_CLOEXEC, WORKER_SHM_FD + 1);
    int child_shm = mfd > WORKER_SHM_FD
                        ? mfd
                        : fcntl(mfd, F_DUPFD_CLOEXEC, WORKER_SHM_FD + 1);
    /* The image's descriptor too, when it is started from it. */
    int child_img = cmd.fd < 0 || cmd.fd > CF_IMAGE_FD
                        ? cmd.fd
                        : fcntl(cmd.fd, F_DUPFD_CLOEXEC, CF_IMAGE_FD + 1);
    if (child < 0 || child_shm < 0 || (cmd.fd >= 0 && child_img < 0)) {
        if (child_img >= 0 && child_img != cmd.fd)
            close(child_img);
        if (child >= 0 && child != sv[1])
            close(child);
        if (child_shm >= 0 && child_shm != mfd)
            close(child_shm);
        goto out;
    }
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t at;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, child, WORKER_FD);
    posix_spawn_file_actions_adddup2(&fa, child_shm, WORKER_SHM_FD);
    if (child_img >= 0)
        posix_spawn_file_actions_adddup2(&fa, child_img, CF_IMAGE_FD);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawnattr_init(&at);
    sigset_t none;
    sigemptyset(&none);
    posix_spawnattr_setsigmask(&at, &none);
    /* Its own process group: a time limit or cf_kill_task kills what its
     * task started too (kill_group). */
    posix_spawnattr_setpgroup(&at, 0);
    posix_spawnattr_setflags(&at,
                             POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETPGROUP);
    pid_t pid;
    int e = posix_spawn(&pid, cmd.file, &fa, &at, cmd.argv, env);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&at);
    if (child_img >= 0 && child_img != cmd.fd)
        close(child_img);
    if (child != sv[1])
        close(child);
    if (child_shm != mfd)
        close(child_shm);
    if (e != 0) {
        snprintf(err, errlen, "cannot start %s: %s", cmd.file, strerror(e));
        rc = e == ENOMEM || e == EAGAIN ? CF_ENOMEM : CF_EBROKEN;
        goto out;
    }
    w->pid = pid;
    w->fd = sv[0];
    sv[0] = -1;
    fcntl(w->fd, F_SETFL, O_NONBLOCK);
    w->pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    w->state = W_STARTING;
    /* INIT frame: the initializer (if any) and its argument. */
    size_t off = cf__wire_begin(&w->out, CF_FRAME_INIT, 1);
    cf_fnref none_ref = {0};
    cf__wire_fnref(&w->out, p->has_init ? &p->init_ref : &none_ref);
    cf__wbuf_u64(&w->out, p->initarg_len);
    cf__wbuf_put(&w->out, p->initarg, p->initarg_len);
    cf__wire_end(&w->out, off);
    rc = w->out.oom ? CF_ENOMEM : CF_OK;
out:
    if (mfd >= 0)
        close(mfd);
    if (sv[0] >= 0)
        close(sv[0]);
    close(sv[1]);
    free(env);
    free(asan);
    free(tsan);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Results (manager only)                                                    */
/* ------------------------------------------------------------------------ */

static pslot *slot_of(pworker *w, uint64_t seq)
{
    return &w->slots[seq % CF_RING_SLOTS];
}

/* The time, read once per pass over a worker (service, read_worker): a
 * clock read costs ~90 ns on a VM's kvm-clock, and a pass may handle many
 * claims and results. */
static uint64_t pass_now(process_pool *p)
{
    if (p->pass_ns == 0)
        p->pass_ns = cf__now_ns();
    return p->pass_ns;
}

static void update_ewma(process_pool *p, uint64_t ran)
{
    /* Never 0 (that means unknown): claim and result may be seen in the
     * same pass, at the same pass_now. */
    p->ewma_ns = p->ewma_ns ? (7 * p->ewma_ns + ran) / 8 : ran;
    if (p->ewma_ns == 0)
        p->ewma_ns = 1;
}

static bool service_claims(process_pool *p, pworker *w);

/* w broke the protocol (what it wrote makes no sense): false. */
static bool broke(pworker *w, const char *why)
{
    if (w->broke == NULL)
        w->broke = why;
    return false;
}

/* Delivers one RESULT item (bytes checked here) to the slot it answers.
 * False on a protocol error. */
static bool deliver(process_pool *p, pworker *w, const unsigned char *item,
                    size_t len)
{
    /* Which item it answers (a chunk's items are checked in full by the
     * map that reads them: only their id and status here). */
    cf_wire_result res;
    if (cf__wire_result_head(item, len, &res.id, &res.status) != CF_OK)
        return broke(w, "a malformed result");
    pslot *ps = NULL;
    /* Slots before tx.released are gone (a slot is only freed once its
     * results are all in): the next result is for one after. */
    if (w->rx < w->tx.released)
        w->rx = w->tx.released;
    for (int pass = 0; pass < 2 && ps == NULL; pass++) {
        while (w->rx < w->claimed_seen) {
            pslot *s = slot_of(w, w->rx);
            if (s->st == PS_RUNNING && s->done < s->count) {
                ps = s;
                break;
            }
            w->rx++;
        }
        if (ps == NULL && pass == 0)
            service_claims(p, w); /* the claim came after our last look */
    }
    if (ps == NULL)
        return broke(w, "a result for no task it runs");
    if (res.id != ps->first_id + ps->done)
        return broke(w, "a result out of order");
    cf_rbuf r = {item, len, 0};
    if (ps->rs == NULL &&
        (cf__wire_read_result(&r, &res) != CF_OK || r.pos != len))
        return broke(w, "a malformed result");
    ps->done++;
    cf_future *f = ps->f;
    bool last = ps->done == ps->count;
    if (ps->queued != 0 || last) { /* a chunk's items are timed together */
        uint64_t now = ps->queued != 0 ? cf__now_ns() : pass_now(p);
        if (ps->queued != 0)
            cf__trace_task(&p->base, w->pid, f->fn, ps->queued, ps->last, now,
                           res.status);
        if (last)
            update_ewma(p, (now - ps->last) / ps->count);
        ps->last = now;
    }
    if (ps->rs != NULL) {
        cf__stats_ended(&p->base, res.status);
        cf__chunk_run_add(ps->rs, item, len);
        if (ps->rs->next == cf__task_count(f)) {
            cf__chunk_run_finish(f, ps->rs);
            ps->rs = NULL;
            ps->f = NULL;
            cf_future_release(f);
        }
    } else {
        ps->f = NULL;
        cf__remote_finish(f, &res);
        cf_future_release(f);
    }
    return true;
}

/* Handles the claims (and skips) the worker made since last time.  False
 * on a protocol error. */
static bool service_claims(process_pool *p, pworker *w)
{
    uint64_t c = atomic_load_explicit(&w->shm->claimed, memory_order_acquire);
    if (c > w->tx.head)
        return broke(w, "a claim past the tasks it was given");
    if (c <= w->claimed_seen)
        return true;
    uint64_t started = 0;
    bool ok = true;
    pthread_mutex_lock(&p->lock);
    for (uint64_t seq = w->claimed_seen; seq < c; seq++) {
        pslot *ps = slot_of(w, seq);
        uint32_t st = cf__ring_slot_state(w->shm, seq);
        if (st == CF_SLOT_REVOKED) {
            ps->st = PS_SKIPPED;
            continue;
        }
        if (st != CF_SLOT_CLAIMED || ps->st != PS_QUEUED) {
            ok = false;
            break;
        }
        ps->st = PS_RUNNING;
        ps->last = pass_now(p);
        cf_future *f = ps->f;
        unmark(f);
        if (ps->fresh) {
            cf_set_running_or_notify_cancel(f); /* or the cancel hook did */
            started += cf__task_count(f);
        }
        if (w->busy_since == 0)
            w->busy_since = ps->last;
    }
    pthread_mutex_unlock(&p->lock);
    w->claimed_seen = c;
    if (!ok)
        broke(w, "a claim of a task slot in a bad state");
    if (started > 0)
        atomic_fetch_add_explicit(&p->base.stats.started, started,
                                  memory_order_relaxed);
    return ok;
}

/* Slots the worker has passed: free them (and their data), release what
 * was cancelled in them.  Stops at a slot whose results are not all in
 * (a spilled one still on its way). */
static bool service_released(process_pool *p, pworker *w)
{
    uint64_t rel = atomic_load_explicit(&w->shm->released,
                                        memory_order_acquire);
    w->rel_seen = rel;
    if (rel > w->claimed_seen)
        rel = w->claimed_seen; /* its claim is handled first */
    uint64_t seq = w->tx.released;
    for (; seq < rel; seq++) {
        pslot *ps = slot_of(w, seq);
        if (ps->st == PS_RUNNING && ps->done < ps->count)
            break;
        if (ps->st == PS_SKIPPED && ps->f != NULL) { /* cancelled in it */
            cf_future *f = ps->f;
            atomic_fetch_add_explicit(&p->base.stats.cancelled,
                                      cf__task_count(f), memory_order_relaxed);
            cf__chunk_run_free(ps->rs);
            cf_future_release(f);
        }
        memset(ps, 0, sizeof *ps);
    }
    cf__ring_tx_free_to(&w->tx, seq);
    if (w->tx.head == w->tx.released && w->busy_since != 0) {
        cf__stats_busy(&p->base, cf__now_ns() - w->busy_since);
        w->busy_since = 0;
    }
    return true;
}

/* Reads the result ring.  False on a protocol error. */
static bool service_results(process_pool *p, pworker *w)
{
    uint64_t head = atomic_load_explicit(&w->shm->res_head,
                                         memory_order_acquire);
    uint64_t pos = w->res_tail;
    cf_ring_rec rec;
    int rc = CF_END;
    while (!w->spill_pending &&
           (rc = cf__ring_next(w->shm->res_data, CF_RING_RES_BYTES, head, &pos,
                               &rec)) == CF_OK) {
        if (rec.type == CF_REC_SPILL)
            w->spill_pending = true;
        else if (!deliver(p, w, rec.body, rec.len))
            return false;
    }
    if (rc == CF_EINVAL)
        return broke(w, "a malformed result ring");
    if (pos != w->res_tail) {
        w->res_tail = pos;
        atomic_store_explicit(&w->shm->res_tail, pos, memory_order_release);
        atomic_thread_fence(memory_order_seq_cst);
        if (atomic_load_explicit(&w->shm->space_waiting,
                                 memory_order_relaxed) &&
            atomic_exchange(&w->shm->space_waiting, 0)) {
            atomic_fetch_add(&w->shm->space_futex, 1);
            cf__shm_futex_wake(&w->shm->space_futex);
        }
    }
    return true;
}

/* ------------------------------------------------------------------------ */
/* The socket: INIT and spilled frames out, HELLO, WAKE, spills in           */
/* ------------------------------------------------------------------------ */

static bool handle_hello(process_pool *p, pworker *w, cf_rbuf *r)
{
    int32_t st, code;
    const char *msg;
    size_t len;
    if (w->state != W_STARTING ||
        cf__wire_read_hello(r, &st, &code, &msg, &len) != CF_OK)
        return false;
    pthread_mutex_lock(&p->lock);
    if (st != CF_OK && !p->broken) {
        p->broken = true;
        if (asprintf(&p->broken_msg,
                     "the initializer failed in worker %d: %s(%d)%s%.*s",
                     (int)w->pid, cf_err_name(st), code, len ? ": " : "",
                     (int)len, msg) < 0)
            p->broken_msg = NULL;
    }
    p->start_failures = 0;
    pthread_mutex_unlock(&p->lock);
    w->state = W_READY;
    return true;
}

/* Handles the complete frames read from w: HELLO, WAKE, and a RESULT that
 * a SPILL record announced (one that comes before its record waits).
 * False on a protocol error. */
static bool parse_frames(process_pool *p, pworker *w)
{
    size_t pos = 0;
    bool ok = true;
    while (w->in_len - pos >= CF_WIRE_HEADER) {
        cf_wire_header h;
        if (cf__wire_header(w->in + pos, &h) != CF_OK) {
            ok = false;
            break;
        }
        if (w->in_len - pos - CF_WIRE_HEADER < h.body_len) {
            /* Make room for a large frame in one go. */
            size_t need = CF_WIRE_HEADER + (size_t)h.body_len;
            if (need > w->in_cap && pos == 0) {
                unsigned char *n = realloc(w->in, need + READ_CHUNK);
                if (n == NULL) {
                    ok = false;
                    break;
                }
                w->in = n;
                w->in_cap = need + READ_CHUNK;
            }
            break;
        }
        const unsigned char *body = w->in + pos + CF_WIRE_HEADER;
        cf_rbuf r = {body, (size_t)h.body_len, 0};
        if (h.type == CF_FRAME_RESULT && !w->spill_pending)
            break; /* its SPILL record is not read yet */
        if (h.type == CF_FRAME_HELLO) {
            ok = handle_hello(p, w, &r) && r.pos == r.len;
        } else if (h.type == CF_FRAME_WAKE) {
            ok = h.body_len == 0;
        } else if (h.type == CF_FRAME_RESULT && h.count == 1) {
            w->spill_pending = false;
            ok = deliver(p, w, body, (size_t)h.body_len);
        } else {
            ok = false;
        }
        if (!ok)
            break;
        pos += CF_WIRE_HEADER + (size_t)h.body_len;
    }
    if (pos > 0) {
        memmove(w->in, w->in + pos, w->in_len - pos);
        w->in_len -= pos;
    }
    return ok;
}

/* Reads what w sent and handles it.  False on EOF or a protocol error
 * (the worker is then killed and reaped by handle_death). */
static bool read_worker(process_pool *p, pworker *w)
{
    if (w->fd < 0)
        return false;
    p->pass_ns = 0;
    for (;;) {
        if (w->in_cap - w->in_len < READ_CHUNK) {
            size_t cap = w->in_cap ? w->in_cap * 2 : 2 * READ_CHUNK;
            unsigned char *n = realloc(w->in, cap);
            if (n == NULL)
                return false;
            w->in = n;
            w->in_cap = cap;
        }
        ssize_t got = cf__io_read(w->fd, w->in + w->in_len,
                                  w->in_cap - w->in_len);
        if (got == 0)
            return false;
        if (got < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN)
                break;
            return false;
        }
        w->in_len += (size_t)got;
        if (!parse_frames(p, w))
            return false;
    }
    /* Keep idle workers' buffers small. */
    if (w->in_len == 0 && w->in_cap > 4 * READ_CHUNK) {
        free(w->in);
        w->in = NULL;
        w->in_cap = 0;
    }
    return true;
}

static bool write_worker(pworker *w)
{
    while (w->out.len > 0) {
        /* send(MSG_NOSIGNAL): a worker that died must not SIGPIPE us. */
        ssize_t n = cf__io_send(w->fd, w->out.p, w->out.len, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return errno == EAGAIN;
        }
        cf__wbuf_consume(&w->out, (size_t)n);
    }
    if (w->out.cap > 4 * READ_CHUNK) /* do not keep a 256 MiB buffer */
        cf__wbuf_free(&w->out);
    return true;
}

/* Everything the worker did since last time: claims, results, spilled
 * results, slots passed.  *progress tells if anything happened.  False on
 * a protocol error (or EOF while reading a spill). */
static bool service(process_pool *p, pworker *w, bool *progress)
{
    if (w->shm == NULL || w->state == W_DEAD)
        return true;
    uint64_t c0 = w->claimed_seen, r0 = w->res_tail, f0 = w->tx.released;
    p->pass_ns = 0;
    if (!service_claims(p, w))
        return false;
    for (;;) {
        if (!service_results(p, w))
            return false;
        if (!w->spill_pending)
            break;
        size_t before = w->in_len;
        if (!parse_frames(p, w))
            return false;
        if (w->spill_pending) { /* not all read yet: read on */
            if (!read_worker(p, w))
                return false;
            if (w->spill_pending && w->in_len == before)
                break;
        }
    }
    if (!service_released(p, w))
        return false;
    if (w->out.len > 0 && !write_worker(w))
        return false;
    *progress |= c0 != w->claimed_seen || r0 != w->res_tail ||
                 f0 != w->tx.released;
    return true;
}

/* ------------------------------------------------------------------------ */
/* Giving out tasks (pool lock held)                                         */
/* ------------------------------------------------------------------------ */

/* The encoded reference of fn (cached): CF_OK or CF_EINVAL. */
static int fn_encoding(process_pool *p, cf_task_fn fn, const cf_wbuf **enc)
{
    if (p->fncache.fn != fn || p->fnenc.len == 0) {
        cf_fnref ref;
        if (cf__fncache_get(&p->fncache, fn, &ref) != CF_OK)
            return CF_EINVAL;
        p->fnenc.len = 0;
        cf__wire_fnref(&p->fnenc, &ref);
        if (p->fnenc.oom) {
            cf__wbuf_free(&p->fnenc);
            p->fncache.fn = NULL;
            return CF_ENOMEM;
        }
    }
    *enc = &p->fnenc;
    return CF_OK;
}

/* Stores v little-endian at q; returns q + 8. */
static unsigned char *put_u64le(unsigned char *q, uint64_t v)
{
#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    memcpy(q, &v, 8);
    return q + 8;
}

/* Ends a future that cannot be sent (no memory, a function in no loaded
 * module) with the pool lock dropped; true. */
static void fail_unsendable(process_pool *p, cf_future *f, cf_chunk_run *rs,
                            int status, const char *msg)
{
    pthread_mutex_unlock(&p->lock);
    uint32_t n = cf__task_count(f) - (rs ? rs->next : 0);
    if (cf_set_running_or_notify_cancel(f) == CF_OK)
        atomic_fetch_add_explicit(&p->base.stats.started, n,
                                  memory_order_relaxed);
    for (uint32_t i = 0; i < n; i++)
        cf__stats_ended(&p->base, status);
    cf__chunk_run_free(rs);
    cf__future_fail(f, status, 0, "%s", msg);
    cf_future_release(f);
    pthread_mutex_lock(&p->lock);
}

/* Gives w up to `room` tasks, redo first, then the queue, and publishes
 * them.  Lock held (dropped while a big argument is copied to the socket
 * buffer).  Returns how many were given. */
static int dispatch(process_pool *p, pworker *w, int room)
{
    int given = 0;
    while (given < room && (p->redo != NULL || p->q.head != NULL)) {
        bool from_redo = p->redo != NULL;
        cf_future *f;
        cf_chunk_run *rs = NULL;
        if (from_redo) {
            redo *r = p->redo;
            f = r->f;
            rs = r->rs;
        } else {
            f = p->q.head;
            if (cancelled(f)) { /* dropped here, counted as cancelled */
                cf__fq_pop(&p->q);
                atomic_fetch_add_explicit(&p->base.stats.cancelled,
                                          cf__task_count(f),
                                          memory_order_relaxed);
                cf_future_release(f);
                continue;
            }
        }
        static const cf_wbuf no_enc;
        const cf_wbuf *enc = &no_enc;
        int erc = fn_encoding(p, f->fn, &enc);
        uint32_t start = rs ? rs->next : 0;
        const unsigned char *items;
        size_t items_len;
        bool prefix;
        cf__task_items(f, start, &items, &items_len, &prefix);
        uint64_t body = enc->len + 8 + (prefix ? 8 : 0) + (uint64_t)items_len;
        bool spill = body > CF_RING_TASK_MAX;
        unsigned char *dst = NULL;
        uint64_t off = 0;
        if (erc == CF_OK && !spill &&
            (dst = cf__ring_tx_alloc(&w->tx, body, &off)) == NULL)
            break; /* the data area is full: later */
        /* Take it off its list. */
        if (from_redo) {
            redo *r = p->redo;
            p->redo = r->next;
            free(r);
        } else {
            cf__fq_pop(&p->q);
        }
        if (erc != CF_OK) {
            fail_unsendable(p, f, rs, erc,
                            erc == CF_EINVAL
                                ? "the task function is in no loaded module"
                                : "no memory to send the task to a worker");
            continue;
        }
        if (rs == NULL && (f->arg_flags & CF_ARG_CHUNK)) {
            rs = cf__chunk_run_new(f);
            if (rs == NULL) {
                fail_unsendable(p, f, NULL, CF_ENOMEM,
                                "no memory for the results of a chunk");
                continue;
            }
        }
        uint32_t count = cf__task_count(f) - start;
        uint64_t first_id = w->next_id;
        w->next_id += count;
        if (spill) { /* a TASK frame on the socket (copied unlocked) */
            pthread_mutex_unlock(&p->lock);
            size_t fo = cf__wire_begin(&w->out, CF_FRAME_TASK, count);
            cf__wbuf_put(&w->out, enc->p, enc->len);
            cf__wbuf_u64(&w->out, first_id);
            if (prefix)
                cf__wbuf_u64(&w->out, items_len);
            cf__wbuf_put(&w->out, items, items_len);
            cf__wire_end(&w->out, fo);
            pthread_mutex_lock(&p->lock);
            if (w->out.oom) {
                cf__wbuf_free(&w->out);
                fail_unsendable(p, f, rs, CF_ENOMEM,
                                "no memory to send the task to a worker");
                continue;
            }
        } else {
            unsigned char *q = dst;
            memcpy(q, enc->p, enc->len);
            q += enc->len;
            q = put_u64le(q, first_id);
            if (prefix)
                q = put_u64le(q, (uint64_t)items_len);
            if (items_len > 0)
                memcpy(q, items, items_len);
        }
        uint64_t seq = cf__ring_tx_fill(&w->tx, off, body, spill);
        pslot *ps = slot_of(w, seq);
        *ps = (pslot){.w = w,
                      .seq = seq,
                      .f = f,
                      .rs = rs,
                      .first_id = first_id,
                      .count = count,
                      .st = PS_QUEUED,
                      .fresh = !from_redo};
        if (cf__tracing())
            ps->queued = from_redo ? cf__now_ns() : (uint64_t)f->out.v.i64;
        if (!from_redo) {
            if (cancelled(f)) /* cancelled while we copied it */
                cf__ring_revoke(w->shm, seq);
            else
                mark(f, ps);
        }
        given++;
        w->tasks++;
    }
    if (given > 0)
        cf__ring_tx_publish(&w->tx);
    return given;
}

/* Outstanding slots of w (published, not passed). */
static uint64_t outstanding(const pworker *w)
{
    return w->tx.head - w->tx.released;
}

static bool may_take(const process_pool *p, const pworker *w)
{
    return w->state == W_READY && !w->stopping &&
           (p->max_tasks_per_child == 0 ||
            w->tasks < (uint64_t)p->max_tasks_per_child);
}

static int window(const process_pool *p, const pworker *w)
{
    /* Nothing ahead until a task has ended and its time is known: a task
     * sent ahead behind the pool's very first one (which may be long)
     * could be claimed before a higher-priority task submitted next has
     * it taken back (test-priority's start order failed 1 run in 5 under
     * load). */
    if (p->ewma_ns == 0)
        return outstanding(w) == 0 ? 1 : 0;
    int n = p->ewma_ns < PIPELINE_MAX_NS ? WINDOW_SHORT : WINDOW_LONG;
    if (p->max_tasks_per_child > 0) {
        uint64_t left = (uint64_t)p->max_tasks_per_child - w->tasks;
        if (left < (uint64_t)n)
            n = (int)left;
    }
    int used = (int)outstanding(w);
    return n > used ? n - used : 0;
}

/* When the running slot of w started, or 0 if none runs. */
static uint64_t running_since(pworker *w)
{
    for (uint64_t s = w->tx.released; s < w->claimed_seen; s++) {
        pslot *ps = slot_of(w, s);
        if (ps->st == PS_RUNNING && ps->done < ps->count)
            return ps->last;
    }
    return 0;
}

/* Unclaimed tasks in w's slots. */
static int queued_in(pworker *w)
{
    int n = 0;
    for (uint64_t s = w->claimed_seen; s < w->tx.head; s++)
        n += slot_of(w, s)->st == PS_QUEUED && slot_of(w, s)->f != NULL;
    return n;
}

static bool has_queued(pworker *w)
{
    return queued_in(w) > 0;
}

static int take_back(process_pool *p, pworker *w, int max);

/* Priorities: a task handed to a worker ahead of time, which a queued
 * task should now precede, is taken back (it is only queued there), so
 * that the next task a worker starts is always the first by priority. */
static void take_back_for_priority(process_pool *p)
{
    if (!p->q.by_priority || p->q.head == NULL)
        return;
    for (int i = 0; i < p->nslots; i++) {
        pworker *w = p->w[i];
        if (w->state == W_DEAD)
            continue;
        for (uint64_t s = w->claimed_seen; s < w->tx.head; s++) {
            pslot *ps = slot_of(w, s);
            if (ps->st == PS_QUEUED && ps->fresh && ps->f != NULL &&
                cf__fq_head_before(&p->q, ps->f)) {
                take_back(p, w, INT_MAX);
                break;
            }
        }
    }
}

/* The worker, other than idle, with the most tasks queued and not
 * started, or NULL if none has any. */
static pworker *busiest(process_pool *p, pworker *idle)
{
    pworker *best = NULL;
    int most = 0;
    for (int i = 0; i < p->nslots; i++) {
        pworker *w = p->w[i];
        if (w == idle || w->state == W_DEAD || w->state == W_STARTING)
            continue;
        int n = queued_in(w);
        if (n > most) {
            most = n;
            best = w;
        }
    }
    return best;
}

/* Takes back up to max tasks still queued in w's slots, oldest first
 * (lock held): PENDING ones go to the front of the queue, redo ones to
 * the front of redo, in their order.  Returns how many. */
static int take_back(process_pool *p, pworker *w, int max)
{
    if (w == NULL)
        return 0;
    cf_future *list = NULL, **tail = &list;
    redo *rl = NULL, **rtail = &rl;
    int n = 0;
    for (uint64_t s = w->claimed_seen; s < w->tx.head && n < max; s++) {
        pslot *ps = slot_of(w, s);
        if (ps->st != PS_QUEUED || ps->f == NULL)
            continue;
        redo *r = NULL;
        if (!ps->fresh && (r = malloc(sizeof *r)) == NULL)
            continue; /* no memory: it stays and runs where it is */
        if (!cf__ring_revoke(w->shm, s)) {
            free(r);
            continue;
        }
        cf_future *f = ps->f;
        unmark(f);
        if (ps->fresh) {
            *tail = f;
            tail = &f->next;
            cf__chunk_run_free(ps->rs); /* a fresh chunk has no results */
        } else {
            *r = (redo){NULL, f, ps->rs};
            *rtail = r;
            rtail = &r->next;
        }
        ps->f = NULL;
        ps->rs = NULL;
        w->tasks--;
        n++;
    }
    cf__fq_splice_front(&p->q, list);
    if (rl != NULL) {
        *rtail = p->redo;
        p->redo = rl;
    }
    return n;
}

/* ------------------------------------------------------------------------ */
/* Cancel requests, time limits, deaths (manager only)                       */
/* ------------------------------------------------------------------------ */

/* The slot w runs now (claimed, results not all in), or NULL. */
static pslot *running_slot(pworker *w)
{
    for (uint64_t s = w->tx.released; s < w->claimed_seen; s++) {
        pslot *ps = slot_of(w, s);
        if (ps->st == PS_RUNNING && ps->done < ps->count && ps->f != NULL)
            return ps;
    }
    return NULL;
}

/* When the task w runs reaches its time limit (ns), or 0. */
static uint64_t task_deadline(pworker *w)
{
    pslot *ps = running_slot(w);
    if (ps == NULL || ps->rs != NULL || ps->f->time_limit <= 0)
        return 0;
    return ps->last + (uint64_t)(ps->f->time_limit * 1e9);
}

/* Forwards cancel requests of the running task: the cooperative flag
 * through the shared page, a kill by SIGKILL. */
/* Sends sig to worker w and to its process group: the processes its tasks
 * started (popen, fork) go with it, unless they left the group. */
static void kill_group(pworker *w, int sig)
{
    kill(-w->pid, sig);
    kill(w->pid, sig); /* should it have left its group */
}

/* True when w claimed a slot this manager has not handled yet: the
 * request may be for its task, so apply_cancel must look again after the
 * claim is handled (it was lost: cf_kill_task of a task whose claim raced
 * it let the task run to its end). */
static bool apply_cancel(pworker *w)
{
    if (w->state == W_DEAD)
        return false;
    pslot *ps = running_slot(w);
    if (ps == NULL)
        return w->shm != NULL &&
               atomic_load_explicit(&w->shm->claimed, memory_order_acquire) >
                   w->claimed_seen;
    if (ps->rs != NULL)
        return false;
    uint32_t st = cf__state_load(ps->f);
    if ((st & FS_KILL_REQ) && !w->killed_task && !w->timed_out) {
        w->killed_task = true;
        w->kill_seq = ps->seq + 1;
        kill_group(w, SIGKILL);
    } else if (st & FS_CANCEL_REQ) {
        atomic_store_explicit(&w->shm->cancel_id, ps->first_id + ps->done + 1,
                              memory_order_relaxed);
    }
    return false;
}

/* How worker w died, from its wait status if we could reap it (reaped),
 * else from what it or we know: the fatal signal its handler noted in the
 * shared page, or the signal we sent.  Where nothing tells, says so:
 * never "status 0".  Updates *status to match what is reported. */
static void describe_death(char *buf, size_t len, const pworker *w, bool reaped,
                           int *status)
{
    if (!reaped) {
        int sig = w->shm ? atomic_load(&w->shm->fatal_signal) : 0;
        if (sig == 0 && (w->timed_out || w->killed_task))
            sig = SIGKILL;
        if (sig == 0)
            sig = w->kill_signal;
        if (sig == 0) {
            *status = 0;
            snprintf(buf, len,
                     "ended, and its exit status is unavailable (SIGCHLD is "
                     "ignored, or another waitpid() reaped it)");
            return;
        }
        *status = sig; /* a wait status that says "killed by sig" */
    }
    if (WIFSIGNALED(*status))
        snprintf(buf, len, "was killed by signal %d (%s)", WTERMSIG(*status),
                 strsignal(WTERMSIG(*status)));
    else
        snprintf(buf, len, "exited with status %d", WEXITSTATUS(*status));
}

/* Fails what is left of a chunk with status and completes it. */
static void chunk_fail_rest(process_pool *p, cf_future *f, cf_chunk_run *rs,
                            int status, const char *msg)
{
    uint32_t n = cf__task_count(f);
    while (rs->next < n) {
        cf__stats_ended(&p->base, status);
        cf__chunk_run_fail(rs, status, 0, msg);
    }
    cf__chunk_run_finish(f, rs);
}

static redo *redo_new(cf_future *f, cf_chunk_run *rs)
{
    redo *r = malloc(sizeof *r);
    if (r != NULL)
        *r = (redo){NULL, f, rs};
    return r;
}

/* Settles the task that was running in slot ps when its worker died.
 * Appends what must run again to *rd. */
static void settle_running(process_pool *p, pslot *ps, bool crashed, int status,
                           const char *how, pid_t pid, bool timed_out,
                           bool killed_task, int killsig, redo ***rd)
{
    cf_future *f = ps->f;
    cf_chunk_run *rs = ps->rs;
    ps->f = NULL;
    ps->rs = NULL;
    char name[128];
    cf__fn_name(f->fn, name, sizeof name);
    if (!crashed) { /* between items, or before the first: run on */
        redo *r = redo_new(f, rs);
        if (r == NULL) {
            if (rs != NULL)
                chunk_fail_rest(p, f, rs, CF_ENOMEM, "no memory to run on");
            else
                cf__future_fail(f, CF_ENOMEM, 0, "no memory to run it again");
            cf_future_release(f);
            return;
        }
        **rd = r;
        *rd = &r->next;
        return;
    }
    int code = WIFSIGNALED(status) ? -WTERMSIG(status) : WEXITSTATUS(status);
    if (ps->queued != 0) /* its slice on the timeline, with its outcome */
        cf__trace_task_code(&p->base, pid, f->fn, ps->queued, ps->last,
                            cf__now_ns(),
                            timed_out     ? CF_ETIMEDOUT
                            : killed_task ? CF_ECANCELLED
                            : killsig     ? CF_EBROKEN
                                          : CF_ECRASHED,
                            code);
    if (rs != NULL) { /* a chunk: the item alone fails, the rest runs on */
        if (killsig != 0) {
            chunk_fail_rest(p, f, rs, CF_EBROKEN,
                            "its worker was stopped by terminate/kill_workers");
            cf_future_release(f);
            return;
        }
        if (rs->retries > 0) {
            rs->retries--;
        } else {
            char msg[400];
            snprintf(msg, sizeof msg, "worker %d %s while running task %s",
                     (int)pid, how, name);
            cf__stats_ended(&p->base, CF_ECRASHED);
            cf__wire_result(&rs->acc, rs->next, CF_ECRASHED, code, CF_KIND_NONE,
                            NULL, 0, msg, strlen(msg));
            rs->next++;
            rs->retries = f->retries;
        }
        if (rs->next == cf__task_count(f)) {
            cf__chunk_run_finish(f, rs);
            cf_future_release(f);
            return;
        }
        redo *r = redo_new(f, rs);
        if (r == NULL) {
            chunk_fail_rest(p, f, rs, CF_ENOMEM, "no memory to run on");
            cf_future_release(f);
            return;
        }
        **rd = r;
        *rd = &r->next;
        return;
    }
    if (timed_out) {
        cf__stats_ended(&p->base, CF_ETIMEDOUT);
        cf__future_fail(f, CF_ETIMEDOUT, 0,
                        "task %s ran past its time limit of %gs; worker %d "
                        "was killed",
                        name, (double)f->time_limit, (int)pid);
    } else if (killed_task) {
        cf__stats_ended(&p->base, CF_ECANCELLED);
        cf__future_fail(f, CF_ECANCELLED, 0,
                        "task %s was stopped by cf_kill_task; worker %d was "
                        "killed",
                        name, (int)pid);
    } else if (killsig != 0) {
        cf__stats_ended(&p->base, CF_EBROKEN);
        cf__future_fail(f, CF_EBROKEN, -killsig,
                        "worker %d running task %s was stopped by "
                        "terminate/kill_workers (%s)",
                        (int)pid, name, strsignal(killsig));
    } else if (f->retries > 0 && (**rd = redo_new(f, NULL)) != NULL) {
        f->retries--; /* again, on a fresh worker */
        *rd = &(**rd)->next;
        return;
    } else {
        cf__stats_ended(&p->base, CF_ECRASHED);
        cf__future_fail(f, CF_ECRASHED, code,
                        "worker %d %s while running task %s", (int)pid, how,
                        name);
    }
    cf_future_release(f);
}

/* w has died (or must die): reap it, settle its slots, free it.  The task
 * it ran crashed, timed out or was stopped; tasks queued behind it never
 * started: they go back to the queue, still PENDING. */
static void handle_death(process_pool *p, pworker *w)
{
    bool progress = false;
    bool trusted = true;
    if (w->fd >= 0)
        read_worker(p, w); /* results it sent before dying still count */
    int status = 0;
    bool reaped = false;
    if (w->pid > 0) {
        kill(w->pid, SIGKILL); /* no-op if it already exited */
        pid_t r;
        while ((r = waitpid(w->pid, &status, 0)) < 0 && errno == EINTR)
            ;
        reaped = r == w->pid; /* not when SIGCHLD is ignored, or reaped */
    }
    /* Its memory is final now: a last look. */
    if (w->shm != NULL && w->state != W_STARTING)
        trusted = service(p, w, &progress);
    if (w->fd >= 0)
        close(w->fd);
    w->fd = -1;
    if (w->pidfd >= 0)
        close(w->pidfd);
    w->pidfd = -1;
    char how[160];
    describe_death(how, sizeof how, w, reaped, &status);
    bool died_starting = w->state == W_STARTING;
    bool idle_exit = w->idle_exit;
    uint32_t phase = w->shm ? atomic_load(&w->shm->phase) : CF_PHASE_EXEC;
    pid_t pid = w->pid;
    uint64_t rid = w->shm ? atomic_load(&w->shm->running_id) : 0;

    cf_future *requeue = NULL, **rq = &requeue; /* PENDING, in order */
    redo *rd = NULL, **rdt = &rd;
    cf_future *gone = NULL;     /* cancelled in their slot */
    cf_future *nomem = NULL;    /* to run again, without memory to */
    pslot *runs[CF_RING_SLOTS]; /* claimed and not settled: normally one */
    int nrun = 0;
    pthread_mutex_lock(&p->lock);
    for (uint64_t seq = w->tx.released; seq < w->tx.head; seq++) {
        pslot *ps = slot_of(w, seq);
        if (ps->f == NULL)
            continue;
        uint32_t st = cf__ring_slot_state(w->shm, seq);
        if (ps->st == PS_QUEUED && st == CF_SLOT_QUEUED &&
            cf__ring_revoke(w->shm, seq))
            st = CF_SLOT_FREE; /* never claimed: taken back */
        else if (st == CF_SLOT_QUEUED)
            st = cf__ring_slot_state(w->shm, seq); /* the hook won */
        cf_future *f = ps->f;
        unmark(f);
        if (st == CF_SLOT_REVOKED) { /* cancelled */
            cf__chunk_run_free(ps->rs);
            atomic_fetch_add_explicit(&p->base.stats.cancelled,
                                      cf__task_count(f), memory_order_relaxed);
            f->next = gone;
            gone = f;
        } else if (st == CF_SLOT_FREE) {
            if (ps->fresh) {
                cf__chunk_run_free(ps->rs);
                *rq = f;
                rq = &f->next;
            } else {
                redo *r = redo_new(f, ps->rs);
                if (r != NULL) {
                    *rdt = r;
                    rdt = &r->next;
                } else {
                    cf__chunk_run_free(ps->rs);
                    f->next = nomem;
                    nomem = f;
                }
            }
        } else { /* claimed: the one that ran */
            if (ps->fresh && ps->st == PS_QUEUED) {
                cf_set_running_or_notify_cancel(f);
                atomic_fetch_add_explicit(&p->base.stats.started,
                                          cf__task_count(f),
                                          memory_order_relaxed);
                ps->last = cf__now_ns();
            }
            ps->st = PS_RUNNING;
            runs[nrun++] = ps;
            continue;
        }
        ps->f = NULL;
        ps->rs = NULL;
    }
    pthread_mutex_unlock(&p->lock);
    if (nrun > 0 && w->busy_since != 0)
        cf__stats_busy(&p->base, cf__now_ns() - w->busy_since);
    for (int i = 0; i < nrun; i++) {
        /* The last slot claimed is the one it ran; earlier ones (only
         * when it broke the protocol) lost their results. */
        pslot *run = runs[i];
        bool killed_for = (w->timed_out || w->killed_task) &&
                          w->kill_seq == run->seq + 1;
        bool crashed = killed_for || !trusted || i + 1 < nrun ||
                       rid == run->first_id + run->done + 1;
        settle_running(p, run, crashed, status, how, pid,
                       killed_for && w->timed_out, killed_for && w->killed_task,
                       w->kill_signal, &rdt);
    }
    int killsig = w->kill_signal;
    for (uint64_t seq = w->tx.released; seq < w->tx.head; seq++)
        cf__chunk_run_free(slot_of(w, seq)->rs);
    worker_reset(w);
    while (gone != NULL) {
        cf_future *f = gone;
        gone = f->next;
        f->next = NULL;
        cf_future_release(f);
    }
    cf__fail_list(nomem, CF_ENOMEM, "no memory to run it again");

    pthread_mutex_lock(&p->lock);
    if (killsig != 0 || p->cancel_all) {
        /* Stopped by terminate / kill_workers, or the queue was cancelled
         * by shutdown: what waited behind does not run on a fresh worker:
         * the tasks that never started are cancelled, the rest fail. */
        pthread_mutex_unlock(&p->lock);
        while (requeue != NULL) {
            cf_future *f = requeue;
            requeue = f->next;
            f->next = NULL;
            if (cf_cancel(f))
                atomic_fetch_add_explicit(&p->base.stats.cancelled,
                                          cf__task_count(f),
                                          memory_order_relaxed);
            cf_future_release(f);
        }
        while (rd != NULL) {
            redo *r = rd;
            rd = r->next;
            if (r->rs != NULL) {
                chunk_fail_rest(p, r->f, r->rs, CF_EBROKEN,
                                "the pool was shut down with its work "
                                "cancelled before this task could start");
            } else {
                cf__stats_ended(&p->base, CF_EBROKEN);
                cf__future_fail(r->f, CF_EBROKEN, 0,
                                "the pool was shut down with its work "
                                "cancelled before this task could start");
            }
            cf_future_release(r->f);
            free(r);
        }
        pthread_mutex_lock(&p->lock);
    }
    cf__fq_splice_front(&p->q, requeue);
    if (rd != NULL) {
        *rdt = p->redo;
        p->redo = rd;
    }
    /* A worker that dies before saying HELLO may have crashed in the
     * initializer, or been killed from outside: three in a row break the
     * pool (BrokenProcessPool), so a crashing initializer cannot make the
     * pool respawn forever. */
    if (!died_starting)
        p->start_failures = 0;
    else if (killsig == 0 && ++p->start_failures >= 3 && !p->broken) {
        p->broken = true;
        /* Where it was, from the phase it noted: not a guess. */
        const char *where =
            phase == CF_PHASE_INIT && p->has_init
                ? "while running the initializer"
            : phase == CF_PHASE_EXEC
                ? "before it could start as a worker (the program, started "
                  "again, never reached cfutures' worker code)"
                : "while starting";
        if (asprintf(&p->broken_msg, "worker %d %s %s", (int)pid, how, where) <
            0)
            p->broken_msg = NULL;
    }
    pthread_mutex_unlock(&p->lock);
    p->nworkers--;
    atomic_fetch_sub_explicit(&p->base.stats.workers, 1, memory_order_relaxed);
    if (idle_exit)
        atomic_fetch_add_explicit(&p->base.stats.idle_exits, 1,
                                  memory_order_relaxed);
}

/* ------------------------------------------------------------------------ */
/* The manager thread                                                        */
/* ------------------------------------------------------------------------ */

/* A slot for a new worker: a dead one, or a new one (the arrays grow as
 * workers start, so a pool of many workers costs little until it uses
 * them).  NULL when out of memory. */
static pworker *free_slot(process_pool *p)
{
    for (int i = 0; i < p->nslots; i++)
        if (p->w[i]->state == W_DEAD)
            return p->w[i];
    if (p->nslots == p->base.max_workers)
        return NULL;
    size_t n = (size_t)p->nslots + 1;
    pworker **w = realloc(p->w, n * sizeof *w);
    if (w == NULL)
        return NULL;
    p->w = w;
    struct pollfd *pfd = realloc(p->pfd, (2 * n + 1) * sizeof *pfd);
    if (pfd == NULL)
        return NULL;
    p->pfd = pfd;
    pworker **who = realloc(p->who, (2 * n + 1) * sizeof *who);
    if (who == NULL)
        return NULL;
    p->who = who;
    pworker *slot = malloc(sizeof *slot);
    if (slot == NULL)
        return NULL;
    memset(slot, 0, sizeof *slot);
    worker_reset(slot);
    p->w[p->nslots++] = slot;
    return slot;
}

/* Fails a list of futures (linked through next) or redo entries with the
 * pool lock dropped. */
static void fail_all_locked(process_pool *p, cf_future *list, redo *rd,
                            int status, const char *msg)
{
    pthread_mutex_unlock(&p->lock);
    cf__fail_list(list, status, msg);
    while (rd != NULL) {
        redo *r = rd;
        rd = r->next;
        if (r->rs != NULL) {
            chunk_fail_rest(p, r->f, r->rs, status, msg);
        } else {
            cf__stats_ended(&p->base, status);
            cf__future_fail(r->f, status, 0, "%s", msg);
        }
        cf_future_release(r->f);
        free(r);
    }
    pthread_mutex_lock(&p->lock);
}

/* Sleeps until a worker speaks or dies, a submit, or a deadline (lock
 * held on entry and exit). */
static void sleep_and_serve(process_pool *p, uint64_t wake_at, uint64_t seen)
{
    p->manager_sleeping = true;
    pthread_mutex_unlock(&p->lock);
    for (int i = 0; i < p->nslots; i++)
        if (p->w[i]->shm != NULL)
            atomic_store(&p->w[i]->shm->parent_sleeping, 1);
    atomic_thread_fence(memory_order_seq_cst);
    /* Look again: what a worker did before it saw our flag. */
    bool news = atomic_load(&p->pokes) != seen;
    int n = 0;
    struct pollfd *pfd = p->pfd;
    pworker **who = p->who;
    pfd[n] = (struct pollfd){.fd = p->efd, .events = POLLIN};
    who[n++] = NULL;
    for (int i = 0; i < p->nslots; i++) {
        pworker *w = p->w[i];
        if (w->state == W_DEAD)
            continue;
        if (w->shm != NULL &&
            (atomic_load(&w->shm->claimed) != w->claimed_seen ||
             atomic_load(&w->shm->released) != w->rel_seen ||
             (!w->spill_pending &&
              atomic_load(&w->shm->res_head) != w->res_tail)))
            news = true;
        if (w->fd >= 0) {
            short ev = POLLIN;
            if (w->out.len > 0)
                ev |= POLLOUT;
            pfd[n] = (struct pollfd){.fd = w->fd, .events = ev};
            who[n++] = w;
        }
        if (w->pidfd >= 0) {
            pfd[n] = (struct pollfd){.fd = w->pidfd, .events = POLLIN};
            who[n++] = w;
        }
        uint64_t dl = task_deadline(w);
        if (dl && (wake_at == 0 || dl < wake_at))
            wake_at = dl;
    }
    int timeout = -1;
    if (news) {
        timeout = 0;
    } else if (wake_at) {
        uint64_t now = cf__now_ns();
        timeout = wake_at <= now ? 0 : (int)((wake_at - now) / 1000000 + 1);
    }
    poll(pfd, (nfds_t)n, timeout);
    for (int i = 0; i < p->nslots; i++)
        if (p->w[i]->shm != NULL)
            atomic_store(&p->w[i]->shm->parent_sleeping, 0);
    pthread_mutex_lock(&p->lock);
    p->manager_sleeping = false;
    pthread_mutex_unlock(&p->lock);
    uint64_t drain;
    if (pfd[0].revents & POLLIN) {
        ssize_t rc = read(p->efd, &drain, sizeof drain);
        (void)rc;
    }
    for (int i = 1; i < n; i++) {
        pworker *w = who[i];
        if (w->state == W_DEAD || pfd[i].revents == 0)
            continue;
        bool dead = false;
        if (pfd[i].fd == w->pidfd) {
            dead = true;
        } else {
            if ((pfd[i].revents & POLLOUT) && !write_worker(w))
                dead = true;
            if (pfd[i].revents & (POLLIN | POLLHUP | POLLERR))
                if (!read_worker(p, w))
                    dead = true;
        }
        if (dead)
            handle_death(p, w);
    }
    /* Time limits: kill the worker; its death settles the future. */
    uint64_t now = cf__now_ns();
    for (int i = 0; i < p->nslots; i++) {
        pworker *w = p->w[i];
        if (w->state == W_DEAD || w->timed_out || w->killed_task)
            continue;
        uint64_t dl = task_deadline(w);
        if (dl && dl <= now) {
            pslot *ps = running_slot(w);
            w->timed_out = true;
            w->kill_seq = ps->seq + 1;
            kill_group(w, SIGKILL);
        }
    }
    pthread_mutex_lock(&p->lock);
}

static void *manager_main(void *arg)
{
    process_pool *p = arg;
    cf__manager_enter(&p->manager);
    int max = p->base.max_workers;
    uint64_t spin_from = cf__now_ns(), seen_pokes = 0;

    pthread_mutex_lock(&p->lock);
    for (;;) {
        /* Terminate / kill requests. */
        if (p->pending_signal != 0) {
            int sig = p->pending_signal;
            p->pending_signal = 0;
            for (int i = 0; i < p->nslots; i++)
                if (p->w[i]->state != W_DEAD) {
                    p->w[i]->kill_signal = sig;
                    kill_group(p->w[i], sig);
                }
        }
        if (p->cancel_check) {
            p->cancel_check = false;
            for (int i = 0; i < p->nslots; i++)
                if (apply_cancel(p->w[i]))
                    p->cancel_check = true; /* again after its claim */
        }
        if (p->cancel_all && !p->cancel_done) {
            /* shutdown(cancel_futures): what waits in the slots too. */
            p->cancel_done = true;
            for (int i = 0; i < p->nslots; i++)
                if (p->w[i]->state != W_DEAD)
                    take_back(p, p->w[i], INT_MAX);
        }
        if (p->cancel_all && p->q.head != NULL) {
            cf_future *all = cf__fq_take_all(&p->q);
            pthread_mutex_unlock(&p->lock);
            while (all != NULL) {
                cf_future *f = all;
                all = f->next;
                f->next = NULL;
                if (cf_cancel(f))
                    atomic_fetch_add_explicit(&p->base.stats.cancelled,
                                              cf__task_count(f),
                                              memory_order_relaxed);
                cf_future_release(f);
            }
            pthread_mutex_lock(&p->lock);
        }
        if (p->cancel_all && p->redo != NULL) {
            redo *rd = p->redo;
            p->redo = NULL;
            fail_all_locked(p, NULL, rd, CF_EBROKEN,
                            "cancelled by shutdown after its worker died");
        }
        if (p->broken && (p->q.head != NULL || p->redo != NULL)) {
            cf_future *all = cf__fq_take_all(&p->q);
            redo *rd = p->redo;
            p->redo = NULL;
            char *msg = p->broken_msg;
            fail_all_locked(p, all, rd, CF_EBROKEN,
                            msg ? msg : "the pool is broken");
        }
        /* Hand out work: one task to each idle worker first, then fill
         * every window (a deep one while tasks are short).  An idle worker
         * first takes a task another worker has queued and not started
         * (the oldest there is), so a task sent ahead never waits while a
         * worker idles, and tasks start in about the order they came
         * (or of their priorities). */
        take_back_for_priority(p);
        for (int i = 0; i < p->nslots; i++) {
            pworker *w = p->w[i];
            if (!may_take(p, w) || outstanding(w) != 0)
                continue;
            take_back(p, busiest(p, w), 1);
            dispatch(p, w, 1);
        }
        for (int i = 0; i < p->nslots; i++)
            if (may_take(p, p->w[i]))
                dispatch(p, p->w[i], window(p, p->w[i]));
        /* A worker idles while another has tasks queued behind one that
         * runs long: take those back, they go to the idle one. */
        uint64_t wake_at = 0;
        if (p->q.head == NULL && p->redo == NULL) {
            bool idle = false;
            for (int i = 0; i < p->nslots && !idle; i++)
                idle = may_take(p, p->w[i]) && outstanding(p->w[i]) == 0;
            int taken = 0;
            uint64_t now = idle ? cf__now_ns() : 0;
            uint64_t thr = 4 * p->ewma_ns > TAKEBACK_NS ? 4 * p->ewma_ns
                                                        : TAKEBACK_NS;
            for (int i = 0; i < p->nslots && idle; i++) {
                pworker *w = p->w[i];
                if (w->state == W_DEAD || !has_queued(w))
                    continue;
                uint64_t since = running_since(w);
                if (since == 0 || w->state == W_RETIRING)
                    continue;
                if (now - since >= thr)
                    taken += take_back(p, w, INT_MAX);
                else if (wake_at == 0 || since + thr < wake_at)
                    wake_at = since + thr;
            }
            if (taken > 0)
                continue;
        }
        /* Start a worker when more work waits than idle workers can take
         * (lazily, as Python: an idle pool has no processes). */
        size_t waiting = p->q.n + (p->redo != NULL);
        int idle = 0;
        for (int i = 0; i < p->nslots; i++) {
            pworker *w = p->w[i];
            if (w->state == W_STARTING ||
                (w->state == W_READY && outstanding(w) == 0))
                idle++;
            else if (w->state != W_DEAD)
                waiting += w->tx.head - w->claimed_seen;
        }
        if (waiting > (size_t)idle && !p->broken && p->nworkers < max) {
            pworker *w = free_slot(p);
            pthread_mutex_unlock(&p->lock);
            char why[300] = "out of memory";
            int rc = w ? spawn_worker(p, w, why, sizeof why) : CF_ENOMEM;
            pthread_mutex_lock(&p->lock);
            if (rc == CF_OK) {
                p->nworkers++;
                atomic_fetch_add_explicit(&p->base.stats.workers, 1,
                                          memory_order_relaxed);
                atomic_fetch_add_explicit(&p->base.stats.worker_starts, 1,
                                          memory_order_relaxed);
                continue;
            }
            if (w != NULL)
                worker_reset(w);
            if (p->nworkers == 0) { /* no worker at all: the pool is broken */
                p->broken = true;
                if (asprintf(&p->broken_msg, "cannot start a worker: %s", why) <
                    0)
                    p->broken_msg = NULL;
                continue;
            }
        }
        /* Retire workers that reached max_tasks_per_child, or idled for
         * idle_timeout while nothing waited (they start again on demand;
         * a submit that races the exit finds the worker retiring, so it
         * gets none of its tasks, and waits for a new one). */
        uint64_t now = p->idle_ns ? cf__now_ns() : 0;
        bool none_waits = p->q.head == NULL && p->redo == NULL;
        for (int i = 0; i < p->nslots; i++) {
            pworker *w = p->w[i];
            bool idle_out = false;
            if (p->idle_ns && w->state == W_READY && outstanding(w) == 0 &&
                none_waits) {
                if (w->idle_since == 0)
                    w->idle_since = now;
                idle_out = now - w->idle_since >= p->idle_ns;
                if (!idle_out &&
                    (wake_at == 0 || w->idle_since + p->idle_ns < wake_at))
                    wake_at = w->idle_since + p->idle_ns;
            } else {
                w->idle_since = 0;
            }
            if (w->state == W_READY &&
                (idle_out || (p->max_tasks_per_child > 0 &&
                              w->tasks >= (uint64_t)p->max_tasks_per_child))) {
                w->state = W_RETIRING;
                w->stopping = true;
                w->idle_exit = idle_out;
                cf__ring_tx_stop(&w->tx); /* it exits once its slots are done */
            }
        }
        bool busy = false;
        for (int i = 0; i < p->nslots; i++)
            busy |= p->w[i]->state != W_DEAD && outstanding(p->w[i]) > 0;
        if (p->shutdown && p->q.head == NULL && p->redo == NULL && !busy)
            break;

        pthread_mutex_unlock(&p->lock);
        /* Serve the workers, without the lock, until something changes
         * that the section above must see; spin a little, then sleep. */
        for (;;) {
            bool progress = false;
            for (int i = 0; i < p->nslots; i++) {
                pworker *w = p->w[i];
                if (w->state != W_DEAD && !service(p, w, &progress)) {
                    fprintf(stderr,
                            "cfutures: process pool worker %d sent %s: "
                            "killed\n",
                            (int)w->pid, w->broke ? w->broke : "nonsense");
                    kill(w->pid, SIGKILL); /* a protocol error */
                    handle_death(p, w);
                    progress = true;
                }
            }
            uint64_t pk = atomic_load_explicit(&p->pokes, memory_order_acquire);
            if (pk != seen_pokes) {
                seen_pokes = pk;
                progress = true;
            }
            if (progress) {
                spin_from = 0; /* the spin starts at the next idle look */
                break;
            }
            now = cf__now_ns();
            if (spin_from == 0)
                spin_from = now;
            if (now - spin_from >= SPIN_NS || (wake_at && now >= wake_at)) {
                pthread_mutex_lock(&p->lock);
                sleep_and_serve(p, wake_at, seen_pokes);
                pthread_mutex_unlock(&p->lock);
                spin_from = cf__now_ns();
                break;
            }
            sched_yield(); /* on a busy machine a worker may need the CPU */
        }
        pthread_mutex_lock(&p->lock);
    }
    pthread_mutex_unlock(&p->lock);

    /* Shut the workers down: they exit once told to stop. */
    for (int i = 0; i < p->nslots; i++)
        if (p->w[i]->state != W_DEAD) {
            cf__ring_tx_stop(&p->w[i]->tx);
            if (p->w[i]->fd >= 0)
                shutdown(p->w[i]->fd, SHUT_WR);
        }
    for (int i = 0; i < p->nslots; i++) {
        pworker *w = p->w[i];
        if (w->state == W_DEAD)
            continue;
        /* Give it a second to exit on its own, then SIGKILL. */
        if (w->pidfd >= 0) {
            struct pollfd one = {.fd = w->pidfd, .events = POLLIN};
            if (poll(&one, 1, 1000) == 0)
                kill(w->pid, SIGKILL);
        }
        handle_death(p, w);
    }
    if (cf__manager_exit(&p->manager)) { /* freed from a callback here */
        pool_free(p);
    }
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* vtable                                                                    */
/* ------------------------------------------------------------------------ */

static int pp_submit(cf_executor *ex, cf_future *f, unsigned flags)
{
    (void)flags;
    process_pool *p = pool_of(ex);
    if (f->retries == 0 && p->max_retries > 0)
        f->retries = (uint8_t)p->max_retries;
    uint32_t items = cf__task_count(f); /* f is the manager's once queued */
    pthread_mutex_lock(&p->lock);
    int rc = CF_OK;
    if (p->broken)
        rc = CF_EBROKEN;
    else if (p->shutdown)
        rc = CF_ESHUTDOWN;
    else {
        cf__fq_push(&p->q, f);
        wake_manager_locked(p);
    }
    pthread_mutex_unlock(&p->lock);
    if (rc == CF_OK && items > 1) /* a chunk: count its items */
        atomic_fetch_add_explicit(&ex->stats.submitted, items - 1,
                                  memory_order_relaxed);
    return rc;
}

static void pp_shutdown(cf_executor *ex, bool cancel_futures)
{
    process_pool *p = pool_of(ex);
    pthread_mutex_lock(&p->lock);
    p->shutdown = true;
    p->cancel_all |= cancel_futures;
    cf_future *cancelled = cancel_futures ? cf__fq_take_all(&p->q) : NULL;
    p->manager_sleeping = true; /* force a wake-up */
    wake_manager_locked(p);
    pthread_mutex_unlock(&p->lock);
    while (cancelled != NULL) {
        cf_future *next = cancelled->next;
        cancelled->next = NULL;
        if (cf_cancel(cancelled))
            atomic_fetch_add_explicit(&ex->stats.cancelled,
                                      cf__task_count(cancelled),
                                      memory_order_relaxed);
        cf_future_release(cancelled);
        cancelled = next;
    }
}

static int pp_wait(cf_executor *ex, const cf_deadline *d)
{
    return cf__manager_wait(&pool_of(ex)->manager, d);
}

static void pp_cancel_running(cf_executor *ex, cf_future *f, bool force)
{
    (void)f;
    (void)force; /* the manager reads the request from f's state word */
    process_pool *p = pool_of(ex);
    pthread_mutex_lock(&p->lock);
    p->cancel_check = true;
    p->manager_sleeping = true;
    wake_manager_locked(p);
    pthread_mutex_unlock(&p->lock);
}

/* cf_cancel of a pending future: take it back from its slot, unless the
 * worker claimed it (then it runs: RUNNING now, the cancel fails).  A
 * future not in a slot yet is flagged, so that the manager never puts it
 * in one. */
static bool pp_cancel_queued(cf_executor *ex, cf_future *f)
{
    process_pool *p = pool_of(ex);
    bool ok = true;
    pthread_mutex_lock(&p->lock);
    if ((cf__state_load(f) & FS_STATE) == CF_PENDING) {
        if (f->arg_flags & CF_ARG_SLOT) {
            pslot *ps = (pslot *)(void *)f->next;
            unmark(f);
            if (!cf__ring_revoke(ps->w->shm, ps->seq)) {
                cf_set_running_or_notify_cancel(f);
                ok = false;
            }
        } else {
            f->arg_flags |= CF_ARG_CANCELLING;
        }
    }
    pthread_mutex_unlock(&p->lock);
    return ok;
}

static int pp_signal_workers(cf_executor *ex, int sig)
{
    process_pool *p = pool_of(ex);
    pthread_mutex_lock(&p->lock);
    p->pending_signal = sig;
    p->manager_sleeping = true;
    wake_manager_locked(p);
    pthread_mutex_unlock(&p->lock);
    return CF_OK;
}

static void pool_free(process_pool *p)
{
    close(p->efd);
    pthread_mutex_destroy(&p->lock);
    cf__manager_fini(&p->manager);
    for (int i = 0; i < p->nslots; i++)
        free(p->w[i]);
    free(p->w);
    free(p->pfd);
    free(p->who);
    free(p->initarg);
    free(p->broken_msg);
    cf__wbuf_free(&p->fnenc);
    free(p);
}

static void pp_destroy(cf_executor *ex)
{
    process_pool *p = pool_of(ex);
    if (cf__manager_release(&p->manager))
        pool_free(p);
}

static const cf_executor_vtable process_pool_vtable = {
    .kind = "process",
    .submit = pp_submit,
    .shutdown = pp_shutdown,
    .wait = pp_wait,
    .cancel_running = pp_cancel_running,
    .signal_workers = pp_signal_workers,
    .cancel_queued = pp_cancel_queued,
    .destroy = pp_destroy,
    .chunks = true,
};

cf_executor *cf_process_pool(const cf_process_pool_opts *opts)
{
    static const cf_process_pool_opts defaults;
    if (opts == NULL)
        opts = &defaults;
    if (opts->max_workers < 0 ||
        opts->max_workers > CF_PROCESS_POOL_MAX_WORKERS ||
        opts->max_tasks_per_child < 0 || opts->max_retries < 0 ||
        opts->max_retries > 255 || !(opts->idle_timeout >= 0) ||
        (opts->idle_timeout > 1e9 && opts->idle_timeout != CF_FOREVER) ||
        (opts->initarg == NULL && opts->initarg_len > 0))
        return cf__fail_null(CF_EINVAL);
    int n = opts->max_workers ? opts->max_workers : cf__cpu_count();
    process_pool *p = calloc(1, sizeof *p);
    if (p == NULL)
        return cf__fail_null(CF_ENOMEM);
    if (n > CF_PROCESS_POOL_MAX_WORKERS) /* a machine with more CPUs */
        n = CF_PROCESS_POOL_MAX_WORKERS;
    p->pfd = calloc(1, sizeof *p->pfd); /* grown as workers start */
    p->who = calloc(1, sizeof *p->who);
    p->initarg = malloc(opts->initarg_len ? opts->initarg_len : 1);
    p->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (p->initarg == NULL || p->efd < 0 || p->pfd == NULL || p->who == NULL) {
        if (p->efd >= 0)
            close(p->efd);
        free(p->pfd);
        free(p->who);
        free(p->initarg);
        free(p);
        return cf__fail_null(CF_ENOMEM);
    }
    if (opts->initarg_len)
        memcpy(p->initarg, opts->initarg, opts->initarg_len);
    p->initarg_len = opts->initarg_len;
    if (opts->initializer != NULL) {
        if (cf__fnref_make(opts->initializer, &p->init_ref) != CF_OK) {
            pool_free(p);
            return cf__fail_null(CF_EINVAL);
        }
        p->has_init = true;
    }
    /* Hold the program's image from now on (image.c); a failure is
     * reported when a worker cannot start. */
    cf_image_cmd img;
    char img_err[64];
    (void)cf__image_cmd(&img, img_err, sizeof img_err);
    p->max_tasks_per_child = opts->max_tasks_per_child;
    p->idle_ns = opts->idle_timeout == CF_FOREVER
                     ? 0
                     : (uint64_t)(opts->idle_timeout * 1e9);
    p->max_retries = opts->max_retries;
    cf__executor_init(&p->base, &process_pool_vtable, n);
    /* Adaptive: submitters and the manager hold it briefly, so a contended
     * acquisition mostly gets it while spinning, without a futex sleep. */
    pthread_mutexattr_t ma;
    pthread_mutexattr_init(&ma);
    pthread_mutexattr_settype(&ma, PTHREAD_MUTEX_ADAPTIVE_NP);
    pthread_mutex_init(&p->lock, &ma);
    pthread_mutexattr_destroy(&ma);
    if (cf__manager_start(&p->manager, &p->lock, manager_main, p) != CF_OK) {
        pool_free(p);
        return cf__fail_null(CF_ENOMEM);
    }
    return &p->base;
}

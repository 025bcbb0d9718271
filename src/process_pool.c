/*
 * process_pool.c -- the process pool executor (ProcessPoolExecutor) with
 * crash isolation and per-task time limits.
 *
 * Threads and ownership:
 *   - Submitters push futures on the pool queue (pool lock) and poke the
 *     manager through an eventfd, only when it sleeps.
 *   - One manager thread owns the workers: it spawns them (posix_spawn of
 *     /proc/self/exe, see worker.c), sends TASK frames, reads RESULT
 *     frames, completes futures, and notices deaths through a pidfd per
 *     worker.  Everything in `pworker` is touched by the manager only.
 *
 * A worker has at most WINDOW frames in flight.  It runs items in order
 * and answers each with one RESULT, so the oldest unanswered item of a
 * worker is the one it is running: when the worker dies, that item is the
 * one that crashed (or timed out); the items behind it never started and
 * go back to the front of the queue.
 *
 * Lock order: pool lock -> nothing.  Futures are completed (callbacks run)
 * by the manager with no lock held.
 */
#include "remote.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
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

#define WINDOW 2         /* frames in flight per worker */
#define READ_CHUNK 65536 /* bytes read per read(2) */
/* Pipelining (a second frame to a busy worker) only while tasks are short
 * on average: then a task queued behind another waits little. */
#define PIPELINE_MAX_NS 200000
#define WORKER_FD 3     /* the worker's end of its socket, in the worker */
#define WORKER_SHM_FD 4 /* the page shared with the worker, in the worker */

enum wstate { W_STARTING, W_READY, W_RETIRING, W_DEAD };

typedef struct pworker {
    pid_t pid;
    int fd;    /* socket to the worker; -1 once closed */
    int pidfd; /* -1 if the kernel has no pidfds */
    enum wstate state;
    cf_wbuf out;       /* bytes waiting to be written */
    unsigned char *in; /* bytes read, not yet parsed */
    size_t in_len, in_cap;
    cf_remote r;            /* items sent, oldest first */
    uint64_t head_deadline; /* ns; 0: the head item has no limit */
    bool timed_out;         /* killed because the head ran too long */
    int kill_signal;        /* signal sent by terminate / kill */
    cf_worker_shm *shm;     /* shared page (cooperative cancel) */
    bool killed_task;       /* killed by cf_kill_task of the head */
} pworker;

typedef struct process_pool {
    cf_executor base;
    pthread_mutex_t lock;
    cf_fqueue q; /* guarded by lock */
    bool shutdown, broken;
    bool manager_sleeping;
    int pending_signal; /* for the manager: terminate / kill the workers */
    int start_failures; /* workers in a row that died before HELLO */
    bool cancel_check;  /* cf_request_cancel / cf_kill_task happened */
    bool cancel_all;    /* shut down with cancel_futures */
    uint64_t ewma_ns;   /* average task run time (manager); 0: unknown */
    char *broken_msg;
    int efd;
    cf_manager manager;
    /* manager-owned */
    pworker **w; /* nslots worker slots, allocated as workers start */
    int nslots;
    int nworkers; /* slots in use (alive or starting) */
    char exe[PATH_MAX];
    cf_fnref init_ref;
    bool has_init;
    void *initarg;
    size_t initarg_len;
    int max_tasks_per_child;
    int max_retries;
    cf_fncache fncache;
    struct pollfd *pfd; /* the manager's poll set: 2 per slot + 1 */
    struct pworker **who;
} process_pool;

static void pool_free(process_pool *p);

static process_pool *pool_of(cf_executor *ex)
{
    return (process_pool *)ex;
}

static void wake_manager_locked(process_pool *p)
{
    if (p->manager_sleeping) {
        uint64_t one = 1;
        p->manager_sleeping = false;
        ssize_t rc = write(p->efd, &one, sizeof one);
        (void)rc; /* the counter cannot overflow at one per sleep */
    }
}

/* ------------------------------------------------------------------------ */
/* Workers: spawn, I/O, death (manager only)                                 */
/* ------------------------------------------------------------------------ */

static void worker_reset(pworker *w)
{
    if (w->shm != NULL)
        munmap(w->shm, sizeof *w->shm);
    cf__wbuf_free(&w->out);
    free(w->in);
    cf__remote_free(&w->r);
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

static int spawn_worker(process_pool *p, pworker *w)
{
    worker_reset(w);
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
    if (mfd < 0 || ftruncate(mfd, sizeof(cf_worker_shm)) != 0)
        goto out;
    void *shm = mmap(NULL, sizeof(cf_worker_shm), PROT_READ | PROT_WRITE,
                     MAP_SHARED, mfd, 0);
    if (shm == MAP_FAILED)
        goto out;
    w->shm = shm;
    /* The sources of the dup2s must not be the targets (3, 4). */
    int child = sv[1] > WORKER_SHM_FD
                    ? sv[1]
                    : fcntl(sv[1], F_DUPFD_CLOEXEC, WORKER_SHM_FD + 1);
    int child_shm = mfd > WORKER_SHM_FD
                        ? mfd
                        : fcntl(mfd, F_DUPFD_CLOEXEC, WORKER_SHM_FD + 1);
    if (child < 0 || child_shm < 0) {
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
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawnattr_init(&at);
    sigset_t none;
    sigemptyset(&none);
    posix_spawnattr_setsigmask(&at, &none);
    posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGMASK);
    char *argv[] = {p->exe, NULL};
    pid_t pid;
    int e = posix_spawn(&pid, p->exe, &fa, &at, argv, env);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&at);
    if (child != sv[1])
        close(child);
    if (child_shm != mfd)
        close(child_shm);
    if (e != 0) {
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

/* Forwards cancel requests of the head item (the one running): the
 * cooperative flag through the shared page, a kill by SIGKILL. */
static void apply_cancel(pworker *w)
{
    if (w->r.count == 0 || w->state == W_DEAD)
        return;
    cf_inflight *h = cf__remote_at(&w->r, 0);
    uint32_t st = cf__state_load(h->f);
    if ((st & FS_KILL_REQ) && !w->killed_task && !w->timed_out) {
        w->killed_task = true;
        kill(w->pid, SIGKILL);
    } else if ((st & FS_CANCEL_REQ) && w->shm != NULL) {
        atomic_store_explicit(&w->shm->cancel_id, h->id + 1,
                              memory_order_relaxed);
    }
}

/* The oldest item in flight changed: it is the one running now. */
static void new_head(pworker *w)
{
    apply_cancel(w);
    w->head_deadline = 0;
    if (w->r.count > 0) {
        float lim = cf__remote_at(&w->r, 0)->f->time_limit;
        if (lim > 0)
            w->head_deadline = cf__now_ns() + (uint64_t)(lim * 1e9);
    }
}

/* Sends w the next frame of queued work (pool lock held; dropped while
 * encoding, which copies the arguments).  False if nothing was queued. */
static bool dispatch_one_locked(process_pool *p, pworker *w)
{
    size_t limit = SIZE_MAX, n;
    if (p->max_tasks_per_child > 0)
        limit = (size_t)((uint64_t)p->max_tasks_per_child - w->r.sent);
    cf_future *batch = cf__take_batch(&p->base, &p->q, limit, &n);
    if (batch == NULL)
        return p->q.head != NULL; /* all cancelled: try again */
    pthread_mutex_unlock(&p->lock);
    bool was_idle = w->r.count == 0;
    cf__send_batch(&w->r, batch, n, &w->out, &p->fncache);
    if (was_idle)
        new_head(w);
    pthread_mutex_lock(&p->lock);
    return true;
}

/* Handles one complete frame from w.  False on a protocol error. */
static bool handle_frame(process_pool *p, pworker *w, const cf_wire_header *h,
                         const unsigned char *body)
{
    cf_rbuf r = {body, (size_t)h->body_len, 0};
    if (h->type == CF_FRAME_HELLO && w->state == W_STARTING) {
        int32_t st, code;
        const char *msg;
        size_t len;
        if (cf__wire_read_hello(&r, &st, &code, &msg, &len) != CF_OK)
            return false;
        if (st != CF_OK) {
            pthread_mutex_lock(&p->lock);
            if (!p->broken) {
                p->broken = true;
                if (asprintf(&p->broken_msg,
                             "the initializer failed in worker %d: "
                             "%s(%d)%s%.*s",
                             (int)w->pid, cf_err_name(st), code,
                             len ? ": " : "", (int)len, msg) < 0)
                    p->broken_msg = NULL;
            }
            pthread_mutex_unlock(&p->lock);
        }
        w->state = W_READY;
        pthread_mutex_lock(&p->lock);
        p->start_failures = 0;
        pthread_mutex_unlock(&p->lock);
        return true;
    }
    if (h->type != CF_FRAME_RESULT || w->state == W_STARTING)
        return false;
    for (uint32_t i = 0; i < h->count; i++) {
        cf_wire_result res;
        uint64_t ran = cf__now_ns() - w->r.head_start;
        if (cf__wire_read_result(&r, &res) != CF_OK ||
            !cf__remote_result(&p->base, &w->r, w->pid, &res))
            return false;
        p->ewma_ns = p->ewma_ns ? (7 * p->ewma_ns + ran) / 8 : ran;
        new_head(w);
    }
    return true;
}

/* Reads what w sent; parses complete frames.  False on EOF or a protocol
 * error (the worker is then killed and reaped by handle_death). */
static bool read_worker(process_pool *p, pworker *w)
{
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
        /* Parse every complete frame. */
        size_t pos = 0;
        while (w->in_len - pos >= CF_WIRE_HEADER) {
            cf_wire_header h;
            if (cf__wire_header(w->in + pos, &h) != CF_OK)
                return false;
            if (w->in_len - pos - CF_WIRE_HEADER < h.body_len) {
                /* Make room for a large frame in one go. */
                size_t need = CF_WIRE_HEADER + (size_t)h.body_len;
                if (need > w->in_cap && pos == 0) {
                    unsigned char *n = realloc(w->in, need + READ_CHUNK);
                    if (n == NULL)
                        return false;
                    w->in = n;
                    w->in_cap = need + READ_CHUNK;
                }
                break;
            }
            if (!handle_frame(p, w, &h, w->in + pos + CF_WIRE_HEADER))
                return false;
            pos += CF_WIRE_HEADER + (size_t)h.body_len;
        }
        if (pos > 0) {
            memmove(w->in, w->in + pos, w->in_len - pos);
            w->in_len -= pos;
        }
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

static void describe_death(char *buf, size_t len, int status)
{
    if (WIFSIGNALED(status))
        snprintf(buf, len, "was killed by signal %d (%s)", WTERMSIG(status),
                 strsignal(WTERMSIG(status)));
    else
        snprintf(buf, len, "exited with status %d", WEXITSTATUS(status));
}

/* w has died (or must die): reap it, settle its in-flight items, free the
 * slot.  The head item crashed, timed out or was terminated; the others
 * never started and go back to the front of the queue. */
static void handle_death(process_pool *p, pworker *w)
{
    if (w->fd >= 0) {
        read_worker(p, w); /* results it sent before dying still count */
        close(w->fd);
        w->fd = -1;
    }
    int status = 0;
    if (w->pid > 0) {
        kill(w->pid, SIGKILL); /* no-op if it already exited */
        while (waitpid(w->pid, &status, 0) < 0 && errno == EINTR)
            ;
    }
    if (w->pidfd >= 0)
        close(w->pidfd);
    char how[128];
    describe_death(how, sizeof how, status);
    bool died_starting = w->state == W_STARTING;

    /* Which item was running?  The worker wrote its id in the shared page
     * (worker.c).  Items before it had finished, but their results were
     * still in the worker's batch: they run again.  Items after it never
     * started.  With no page, the oldest item is the one. */
    size_t running = 0;
    bool idle = false;
    /* A worker we killed for its oldest item (time limit, cf_kill_task)
     * was killed for that item, even if it had not started it yet. */
    if (w->shm != NULL && w->r.count > 0 && !w->timed_out && !w->killed_task) {
        uint64_t id1 = atomic_load(&w->shm->running_id);
        running = w->r.count;
        for (size_t i = 0; i < w->r.count; i++)
            if (cf__remote_at(&w->r, i)->id + 1 == id1)
                running = i;
        idle = running == w->r.count; /* between items: nobody crashed */
    }
    cf_future *requeue = NULL;
    for (size_t i = w->r.count; i-- > 0;) {
        if (i == running && !idle)
            continue;
        cf_future *f = cf__remote_at(&w->r, i)->f;
        f->next = requeue;
        requeue = f;
    }
    cf_future *head = w->r.count > 0 && !idle ? cf__remote_at(&w->r, running)->f
                                              : NULL;
    if (head != NULL)
        cf__stats_busy(&p->base, cf__now_ns() - w->r.busy_since);
    pid_t pid = w->pid;
    bool timed_out = w->timed_out;
    int killsig = w->kill_signal;
    bool killed_task = w->killed_task;
    w->r.count = 0;
    worker_reset(w);

    if (head != NULL) {
        char name[128];
        cf__fn_name(head->fn, name, sizeof name);
        if (timed_out) {
            cf__stats_ended(&p->base, CF_ETIMEDOUT);
            cf__future_fail(head, CF_ETIMEDOUT, 0,
                            "task %s ran past its time limit of %gs; worker "
                            "%d was killed",
                            name, (double)head->time_limit, (int)pid);
        } else if (killed_task) {
            cf__stats_ended(&p->base, CF_ECANCELLED);
            cf__future_fail(head, CF_ECANCELLED, 0,
                            "task %s was stopped by cf_kill_task; worker %d "
                            "was killed",
                            name, (int)pid);
        } else if (killsig != 0) {
            cf__stats_ended(&p->base, CF_EBROKEN);
            cf__future_fail(head, CF_EBROKEN, -killsig,
                            "worker %d running task %s was stopped by "
                            "terminate/kill_workers (%s)",
                            (int)pid, name, strsignal(killsig));
        } else if (head->retries > 0) {
            head->retries--;
            head->next = requeue;
            requeue = head;
            head = NULL;
        } else {
            int code = WIFSIGNALED(status) ? -WTERMSIG(status)
                                           : WEXITSTATUS(status);
            cf__stats_ended(&p->base, CF_ECRASHED);
            cf__future_fail(head, CF_ECRASHED, code,
                            "worker %d %s while running task %s", (int)pid, how,
                            name);
        }
        cf_future_release(head);
    }

    pthread_mutex_lock(&p->lock);
    if (killsig != 0 || p->cancel_all) {
        /* Stopped by terminate / kill_workers, or the queue was cancelled
         * by shutdown: what was waiting behind the head does not run on a
         * fresh worker either (it is RUNNING, so it cannot be cancelled). */
        pthread_mutex_unlock(&p->lock);
        cf__fail_list(requeue, CF_EBROKEN,
                      "the pool was shut down with its work cancelled "
                      "before this task could start");
        requeue = NULL;
        pthread_mutex_lock(&p->lock);
    }
    cf__fq_splice_front(&p->q, requeue);
    /* A worker that dies before saying HELLO may have crashed in the
     * initializer, or been killed from outside: three in a row break the
     * pool (BrokenProcessPool), so a crashing initializer cannot make the
     * pool respawn forever. */
    if (!died_starting)
        p->start_failures = 0;
    else if (killsig == 0 && ++p->start_failures >= 3 && !p->broken) {
        p->broken = true;
        if (asprintf(&p->broken_msg,
                     "worker %d %s while starting (in the initializer?)",
                     (int)pid, how) < 0)
            p->broken_msg = NULL;
    }
    pthread_mutex_unlock(&p->lock);
    p->nworkers--;
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

static void *manager_main(void *arg)
{
    process_pool *p = arg;
    cf__manager_enter(&p->manager);
    int max = p->base.max_workers;

    pthread_mutex_lock(&p->lock);
    for (;;) {
        /* Terminate / kill requests. */
        if (p->pending_signal != 0) {
            int sig = p->pending_signal;
            p->pending_signal = 0;
            for (int i = 0; i < p->nslots; i++)
                if (p->w[i]->state != W_DEAD) {
                    p->w[i]->kill_signal = sig;
                    kill(p->w[i]->pid, sig);
                }
        }
        if (p->cancel_check) {
            p->cancel_check = false;
            for (int i = 0; i < p->nslots; i++)
                apply_cancel(p->w[i]);
        }
        if (p->broken && p->q.head != NULL) {
            cf_future *all = cf__fq_take_all(&p->q);
            char *msg = p->broken_msg;
            pthread_mutex_unlock(&p->lock);
            cf__fail_list(all, CF_EBROKEN, msg ? msg : "the pool is broken");
            pthread_mutex_lock(&p->lock);
        }
        /* Hand out work.  Idle workers first, one frame each.  A busy
         * worker gets a second frame (so it never waits for the parent
         * between tasks) only when every worker is started and the backlog
         * holds at least a frame per worker: otherwise a short task could
         * sit behind a long one while another worker idles. */
        int idle = 0, ready = 0;
        for (int i = 0; i < p->nslots; i++) {
            pworker *w = p->w[i];
            bool can = w->state == W_READY &&
                       (p->max_tasks_per_child == 0 ||
                        w->r.sent < (uint64_t)p->max_tasks_per_child);
            if (can && w->r.count == 0 && p->q.head != NULL)
                dispatch_one_locked(p, w);
            if (can)
                ready++;
            if ((w->state == W_READY || w->state == W_STARTING) &&
                w->r.count == 0)
                idle++;
        }
        if (p->nworkers == max && ready == max && p->q.n >= (size_t)max &&
            p->ewma_ns > 0 && p->ewma_ns < PIPELINE_MAX_NS) {
            uint64_t now = cf__now_ns();
            for (int i = 0; i < p->nslots && p->q.head != NULL; i++) {
                pworker *w = p->w[i];
                /* Not behind a task that already runs long. */
                if (now - w->r.head_start > 4 * p->ewma_ns + 50000)
                    continue;
                while (w->state == W_READY && w->r.frames < WINDOW &&
                       p->q.head != NULL &&
                       (p->max_tasks_per_child == 0 ||
                        w->r.sent < (uint64_t)p->max_tasks_per_child))
                    if (!dispatch_one_locked(p, w))
                        break;
            }
        }
        /* Start a worker when more work waits than idle workers can take
         * (lazily, as Python: an idle pool has no processes). */
        if (p->q.n > (size_t)idle && !p->broken && p->nworkers < max) {
            pworker *w = free_slot(p);
            pthread_mutex_unlock(&p->lock);
            int rc = w ? spawn_worker(p, w) : CF_ENOMEM;
            pthread_mutex_lock(&p->lock);
            if (rc == CF_OK) {
                p->nworkers++;
                continue;
            }
            if (p->nworkers == 0) { /* no worker at all: the pool is broken */
                p->broken = true;
                if (asprintf(&p->broken_msg, "cannot start a worker: %s",
                             strerror(errno)) < 0)
                    p->broken_msg = NULL;
                continue;
            }
        }
        /* Retire workers that reached max_tasks_per_child. */
        for (int i = 0; i < p->nslots; i++) {
            pworker *w = p->w[i];
            if (w->state == W_READY && p->max_tasks_per_child > 0 &&
                w->r.sent >= (uint64_t)p->max_tasks_per_child &&
                w->r.count == 0) {
                w->state = W_RETIRING;
                shutdown(w->fd, SHUT_WR); /* EOF: the worker exits */
            }
        }
        size_t busy = 0;
        for (int i = 0; i < p->nslots; i++)
            busy += p->w[i]->r.count;
        if (p->shutdown && p->q.head == NULL && busy == 0)
            break;

        /* Sleep until a worker speaks or dies, a submit, or a deadline. */
        p->manager_sleeping = true;
        pthread_mutex_unlock(&p->lock);
        int n = 0;
        struct pollfd *pfd = p->pfd;
        pworker **who = p->who;
        pfd[n] = (struct pollfd){.fd = p->efd, .events = POLLIN};
        who[n++] = NULL;
        uint64_t next_deadline = 0;
        for (int i = 0; i < p->nslots; i++) {
            pworker *w = p->w[i];
            if (w->state == W_DEAD)
                continue;
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
            if (w->head_deadline &&
                (next_deadline == 0 || w->head_deadline < next_deadline))
                next_deadline = w->head_deadline;
        }
        int timeout = -1;
        if (next_deadline) {
            uint64_t now = cf__now_ns();
            timeout = next_deadline <= now
                          ? 0
                          : (int)((next_deadline - now) / 1000000 + 1);
        }
        poll(pfd, (nfds_t)n, timeout);
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
            if (w->state != W_DEAD && w->head_deadline &&
                w->head_deadline <= now && !w->timed_out) {
                w->timed_out = true;
                kill(w->pid, SIGKILL);
            }
        }
        pthread_mutex_lock(&p->lock);
    }
    pthread_mutex_unlock(&p->lock);

    /* Shut the workers down: EOF on their socket makes them exit. */
    for (int i = 0; i < p->nslots; i++)
        if (p->w[i]->state != W_DEAD && p->w[i]->fd >= 0)
            shutdown(p->w[i]->fd, SHUT_WR);
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
        if (cf_cancel(cancelled)) {
            cf__stats_cancelled(ex);
        } else { /* a requeued one is RUNNING */
            cf__stats_ended(ex, CF_EBROKEN);
            cf__future_fail(cancelled, CF_EBROKEN, 0,
                            "cancelled by shutdown after its worker died");
        }
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
    .destroy = pp_destroy,
};

cf_executor *cf_process_pool(const cf_process_pool_opts *opts)
{
    static const cf_process_pool_opts defaults;
    if (opts == NULL)
        opts = &defaults;
    if (opts->max_workers < 0 ||
        opts->max_workers > CF_PROCESS_POOL_MAX_WORKERS ||
        opts->max_tasks_per_child < 0 || opts->max_retries < 0 ||
        opts->max_retries > 255 ||
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
    p->max_tasks_per_child = opts->max_tasks_per_child;
    p->max_retries = opts->max_retries;
    /* The program's path, read once (under valgrind, /proc/self/exe is
     * valgrind itself, while readlink answers the program).  If the file
     * was deleted or replaced since, /proc/self/exe still is this very
     * program. */
    ssize_t len = readlink("/proc/self/exe", p->exe, sizeof p->exe - 1);
    if (len <= 0 || len >= (ssize_t)sizeof p->exe - 1 ||
        access(p->exe, X_OK) != 0)
        len = snprintf(p->exe, sizeof p->exe, "/proc/self/exe");
    p->exe[len] = '\0';
    cf__executor_init(&p->base, &process_pool_vtable, n);
    pthread_mutex_init(&p->lock, NULL);
    if (cf__manager_start(&p->manager, &p->lock, manager_main, p) != CF_OK) {
        pool_free(p);
        return cf__fail_null(CF_ENOMEM);
    }
    return &p->base;
}

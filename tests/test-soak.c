/*
 * test-soak.c -- bounded-time soak and fault storms (issue 6, part 4).
 *
 * Three parts share the run's length, CF_SOAK_SECONDS (default 20 s; set
 * it higher for a long soak, e.g. CF_SOAK_SECONDS=3600):
 *
 *  (a) test_churn, 40%: a thread pool and a process pool (2 workers each)
 *      under constant submit / cancel / request_cancel / wait /
 *      as_completed / map / shutdown+recreate churn from 3 threads.
 *  (b) test_fault_storm, 35%: a process pool whose workers a chaos thread
 *      SIGKILLs and SIGSTOPs at random (a stopped worker is SIGCONTed or
 *      SIGKILLed a little later) while 2 threads run tasks with retries
 *      and time limits.  Every future ends with its result, CF_ECRASHED or
 *      CF_ETIMEDOUT; nothing hangs; the pool works afterwards.
 *  (c) test_memory_stable, 25%: a steady submit / result loop on a thread
 *      pool with RSS (/proc/self/statm) sampled once a second (up to 4
 *      times a second in short runs); past a warm-up (20%, at least 2 s),
 *      the median RSS of the last third of the samples is at most 10% +
 *      4 MiB above the first third's (CF_SOAK_SHOW_RSS=1 prints them).
 *      Under ASan the figures are printed but not checked: its quarantine
 *      (256 MiB of freed blocks held back) grows RSS by design.  Every
 *      future's done callback counts only into a total here (the per-future
 *      slots below would grow RSS themselves).
 *
 * In (a) and (b), every future gets a done callback that counts into its
 * own slot: each must run exactly once (checked when it runs, and for all of
 * them once every executor is freed).  Every successful result is checked.
 * Every wait is bounded (LIVENESS), and a watchdog aborts the run if it
 * overstays its budget, so a hang fails with a message instead of a CTest
 * timeout.  The figures are printed as "# " lines for CI logs.
 */
#include "test.h"

#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* Bound on waits that only a library bug could make endless (seconds). */
#define LIVENESS 60.0

static void sleep_s(double s)
{
    struct timespec t = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    while (nanosleep(&t, &t) != 0 && errno == EINTR)
        ;
}

static double soak_seconds(void)
{
    const char *e = getenv("CF_SOAK_SECONDS");
    double s = e ? atof(e) : 20.0;
    return s >= 3.0 ? s : 3.0;
}

/* ------------------------------------------------------------------------ */
/* Watchdog                                                                  */
/* ------------------------------------------------------------------------ */

static void *watchdog_main(void *arg)
{
    double budget = *(double *)arg;
    sleep_s(budget);
    fprintf(stderr, "test-soak: still running after %.0f s: a hang\n", budget);
    abort();
}

static void watchdog_start(void)
{
    static bool started;
    static double budget;
    if (started)
        return;
    started = true;
    budget = 2 * soak_seconds() + 120;
    pthread_t t;
    ASSERT(pthread_create(&t, NULL, watchdog_main, &budget) == 0);
    pthread_detach(t);
}

/* ------------------------------------------------------------------------ */
/* Tasks (they run on threads and in worker processes: they use only their */
/* argument)                                                                 */
/* ------------------------------------------------------------------------ */

enum { K_ADD1, K_RAISE, K_NAP, K_COOP, NKINDS };

static void t_add1(cf_call *c)
{
    cf_return_i64(c, cf_arg_i64(c) + 1);
}

static void t_raise(cf_call *c)
{
    cf_raise(c, 42, "raised on purpose (%lld)", (long long)cf_arg_i64(c));
}

/* Sleeps arg microseconds. */
static void t_nap(cf_call *c)
{
    int64_t us = cf_arg_i64(c);
    sleep_s((double)us / 1e6);
    cf_return_i64(c, us + 1);
}

/* Runs about arg microseconds in 100 us naps; stops (raising 43) when
 * asked to. */
static void t_coop(cf_call *c)
{
    int64_t us = cf_arg_i64(c);
    for (int64_t t = 0; t < us; t += 100) {
        if (cf_cancel_requested(c)) {
            cf_raise(c, 43, "stopped on request");
            return;
        }
        sleep_s(100e-6);
    }
    cf_return_i64(c, us + 1);
}

static const cf_task_fn kind_fn[NKINDS] = {t_add1, t_raise, t_nap, t_coop};

/* Storm task: works arg microseconds (half spinning, half asleep), then
 * returns {arg * 3 + 1, its pid}. */
static void t_work(cf_call *c)
{
    int64_t us = cf_arg_i64(c);
    double until = now_s() + (double)us / 2e6;
    while (now_s() < until)
        ;
    sleep_s((double)us / 2e6);
    int64_t out[2] = {us * 3 + 1, (int64_t)getpid()};
    cf_return(c, out, sizeof out);
}

/* ------------------------------------------------------------------------ */
/* Exactly-once accounting of done callbacks                                 */
/* ------------------------------------------------------------------------ */

#define CB_CAP (1u << 22) /* futures with their own slot (4 MiB) */

static _Atomic unsigned char cb_runs[CB_CAP];
static atomic_ullong cb_next, cb_ran; /* callbacks registered, run */
static atomic_ullong cb_slot_next;    /* slots handed out */

static void cb_once(cf_future *f, void *arg)
{
    uintptr_t i = (uintptr_t)arg;
    if (!cf_done(f)) {
        fprintf(stderr, "callback %zu ran on a future not done\n", (size_t)i);
        abort();
    }
    /* Relaxed: the totals are read after the executors are freed (joins
     * order them), and relaxed atomics cost TSan no sync object per byte. */
    atomic_fetch_add_explicit(&cb_ran, 1, memory_order_relaxed);
    if (i < CB_CAP &&
        atomic_fetch_add_explicit(&cb_runs[i], 1, memory_order_relaxed) != 0) {
        char buf[200];
        fprintf(stderr, "callback %zu ran twice: %s\n", (size_t)i,
                cf_describe(f, buf, sizeof buf));
        abort();
    }
}

static void track(cf_future *f)
{
    uintptr_t i = (uintptr_t)atomic_fetch_add(&cb_slot_next, 1);
    if (i > CB_CAP)
        i = CB_CAP; /* out of slots: counted in the total only */
    atomic_fetch_add(&cb_next, 1);
    ASSERT_OK(cf_add_done_callback(f, cb_once, (void *)i));
}

/* track() without a slot of its own: only the total is checked (for the
 * memory test, whose RSS the slots would grow). */
static void track_total(cf_future *f)
{
    atomic_fetch_add(&cb_next, 1);
    ASSERT_OK(cf_add_done_callback(f, cb_once, (void *)(uintptr_t)CB_CAP));
}

/* Once every executor is freed: each callback ran exactly once.  Resets. */
static unsigned long long cb_check_all(void)
{
    ASSERT_EQ(atomic_load(&cb_ran), atomic_load(&cb_next));
    unsigned long long n = atomic_load(&cb_slot_next);
    if (n > CB_CAP) /* the first CB_CAP futures had a slot each */
        n = CB_CAP;
    for (unsigned long long i = 0; i < n; i++) {
        if (atomic_load_explicit(&cb_runs[i], memory_order_relaxed) != 1) {
            fprintf(stderr, "callback %llu ran %d times\n", i,
                    (int)atomic_load(&cb_runs[i]));
            abort();
        }
        atomic_store_explicit(&cb_runs[i], 0, memory_order_relaxed);
    }
    n = atomic_load(&cb_next);
    atomic_store(&cb_next, 0);
    atomic_store(&cb_slot_next, 0);
    atomic_store(&cb_ran, 0);
    return n;
}

static void describe_fail(const char *what, cf_future *f, int st)
{
    char buf[256];
    fprintf(stderr, "%s: unexpected %s: %s\n", what, cf_err_name(st),
            cf_describe(f, buf, sizeof buf));
    abort();
}

/* Counters of an executor shut down with wait add up, nothing in flight. */
static void check_stats_settled(cf_executor *ex)
{
    cf_stats s;
    ASSERT_OK(cf_executor_stats(ex, &s));
    if (s.queued != 0 || s.running != 0 ||
        s.submitted != s.done + s.failed + s.crashed + s.cancelled) {
        fprintf(stderr,
                "stats do not add up after shutdown(wait): submitted %llu "
                "queued %llu running %llu done %llu failed %llu crashed "
                "%llu cancelled %llu\n",
                (unsigned long long)s.submitted, (unsigned long long)s.queued,
                (unsigned long long)s.running, (unsigned long long)s.done,
                (unsigned long long)s.failed, (unsigned long long)s.crashed,
                (unsigned long long)s.cancelled);
        abort();
    }
}

/* ------------------------------------------------------------------------ */
/* (a) Mixed executors under churn                                           */
/* ------------------------------------------------------------------------ */

typedef struct slot {
    pthread_rwlock_t lock; /* read: using ex; write: swapping it */
    cf_executor *ex;
    bool process;
} slot;

static slot slots[2];
static atomic_bool churn_stop;
static atomic_long n_tasks, n_ok, n_cancelled, n_raised, n_recreated, n_maps,
    n_map_items, n_waits, n_as_completed, n_stopped_req;

static cf_executor *make_executor(bool process)
{
    cf_executor *ex =
        process ? cf_process_pool(&(cf_process_pool_opts){.max_workers = 2})
                : cf_thread_pool(&(cf_thread_pool_opts){.max_workers = 2});
    ASSERT(ex != NULL);
    return ex;
}

/* Swaps a fresh executor into the slot, then shuts the old one down (wait
 * or not, cancel or not) and frees it. */
static void recreate(slot *sl, unsigned *seed)
{
    cf_executor *fresh = make_executor(sl->process);
    pthread_rwlock_wrlock(&sl->lock);
    cf_executor *old = sl->ex;
    sl->ex = fresh;
    pthread_rwlock_unlock(&sl->lock);
    unsigned r = (unsigned)rand_r(seed);
    bool wait = r & 1, cancel = (r & 2) != 0;
    ASSERT_OK(cf_shutdown(old, wait, cancel));
    if (wait)
        check_stats_settled(old);
    cf_executor_free(old);
    atomic_fetch_add(&n_recreated, 1);
}

typedef struct item {
    cf_future *f;
    int kind;
    int64_t arg;
} item;

static void check_item(const item *it)
{
    const void *d;
    size_t len;
    int st = cf_result(it->f, 0, &d, &len);
    if (st == CF_OK) {
        int64_t v;
        if (it->kind == K_RAISE || len != 8)
            describe_fail("churn", it->f, st);
        memcpy(&v, d, 8);
        ASSERT_EQ(v, it->arg + 1);
        atomic_fetch_add(&n_ok, 1);
    } else if (st == CF_ECANCELLED) {
        ASSERT(cf_cancelled(it->f) || cf_done(it->f));
        atomic_fetch_add(&n_cancelled, 1);
    } else if (st == CF_ETASK) {
        cf_error e;
        ASSERT_OK(cf_exception(it->f, 0, &e));
        if (!(it->kind == K_RAISE && e.code == 42) &&
            !(it->kind == K_COOP && e.code == 43))
            describe_fail("churn", it->f, st);
        if (e.code == 43)
            atomic_fetch_add(&n_stopped_req, 1);
        atomic_fetch_add(&n_raised, 1);
    } else {
        describe_fail("churn", it->f, st);
    }
}

static int64_t kind_arg(int kind, unsigned *seed)
{
    switch (kind) {
    case K_NAP:
        return rand_r(seed) % 500;
    case K_COOP:
        return rand_r(seed) % 3000;
    default:
        return rand_r(seed) % 1000000;
    }
}

/* A map of up to 16 items on the slot's executor, under its read lock (a
 * map submits as it goes, so it must not outlive its executor). */
static void churn_map(slot *sl, unsigned *seed)
{
    int64_t in[16];
    size_t n = 1 + (size_t)(rand_r(seed) % 16);
    for (size_t i = 0; i < n; i++)
        in[i] = rand_r(seed) % 100000;
    cf_map_opts o = {.chunksize = 1 + (size_t)(rand_r(seed) % 4),
                     .buffersize = (size_t)(rand_r(seed) % 8)};
    pthread_rwlock_rdlock(&sl->lock);
    cf_map *m = cf_map_i64(sl->ex, t_add1, in, n, &o);
    ASSERT(m != NULL);
    size_t take = rand_r(seed) % 4 == 0 ? (size_t)(rand_r(seed) % n) : n;
    for (size_t i = 0; i < take; i++) {
        int64_t v;
        ASSERT_OK(cf_map_next_i64(m, &v));
        ASSERT_EQ(v, in[i] + 1);
        atomic_fetch_add(&n_map_items, 1);
    }
    if (take == n)
        ASSERT_ST(cf_map_next_i64(m, NULL), CF_END);
    cf_map_free(m); /* early, sometimes */
    pthread_rwlock_unlock(&sl->lock);
    atomic_fetch_add(&n_maps, 1);
}

static void *churner(void *arg)
{
    unsigned seed = (unsigned)(uintptr_t)arg * 7919u + 17u;
    item batch[16];
    cf_future *fs[16];
    double next_recreate = now_s() + 0.2 + (rand_r(&seed) % 500) / 1000.0;
    while (!atomic_load(&churn_stop)) {
        slot *sl = &slots[rand_r(&seed) % 2];
        if (now_s() > next_recreate) {
            recreate(sl, &seed);
            next_recreate = now_s() + 0.2 + (rand_r(&seed) % 600) / 1000.0;
            continue;
        }
        if (rand_r(&seed) % 6 == 0) {
            churn_map(sl, &seed);
            continue;
        }
        int n = 1 + rand_r(&seed) % 16;
        pthread_rwlock_rdlock(&sl->lock);
        for (int i = 0; i < n; i++) {
            item *it = &batch[i];
            it->kind = rand_r(&seed) % NKINDS;
            it->arg = kind_arg(it->kind, &seed);
            it->f = cf_submit_i64(sl->ex, kind_fn[it->kind], it->arg);
            if (it->f == NULL) {
                fprintf(stderr, "submit failed: %s\n",
                        cf_err_name(cf_last_error()));
                abort();
            }
            fs[i] = it->f;
            track(it->f);
        }
        pthread_rwlock_unlock(&sl->lock);
        atomic_fetch_add(&n_tasks, n);

        /* Cancel some, ask others to stop. */
        for (int i = 0; i < n; i++) {
            unsigned r = (unsigned)rand_r(&seed) % 10;
            if (r == 0) {
                if (cf_cancel(batch[i].f))
                    ASSERT(cf_cancelled(batch[i].f));
            } else if (r == 1) {
                cf_request_cancel(batch[i].f);
            }
        }
        /* Then look at them one of several ways. */
        switch (rand_r(&seed) % 4) {
        case 0: { /* a short wait in some mode */
            cf_future *done[16], *not_done[16];
            size_t nd, nn;
            cf_return_when rw = (cf_return_when)(1 + rand_r(&seed) % 3);
            double t = (rand_r(&seed) % 6) / 1000.0;
            int st = cf_wait(fs, (size_t)n, t, rw, done, &nd, not_done, &nn);
            ASSERT(st == CF_OK || st == CF_ETIMEDOUT);
            ASSERT_EQ(nd + nn, n);
            for (size_t i = 0; i < nd; i++)
                ASSERT(cf_done(done[i]));
            atomic_fetch_add(&n_waits, 1);
            break;
        }
        case 1: { /* as_completed to the end (or stopped early) */
            cf_as_completed *it = cf_as_completed_new(fs, (size_t)n, LIVENESS);
            ASSERT(it != NULL);
            int stop_at = rand_r(&seed) % 3 == 0 ? rand_r(&seed) % n : n;
            bool seen[16] = {0};
            for (int k = 0; k < stop_at; k++) {
                cf_future *f;
                ASSERT_OK(cf_as_completed_next(it, &f));
                ASSERT(cf_done(f));
                int j = 0;
                while (j < n && fs[j] != f)
                    j++;
                ASSERT(j < n && !seen[j]);
                seen[j] = true;
            }
            cf_future *none;
            if (stop_at == n)
                ASSERT_ST(cf_as_completed_next(it, &none), CF_END);
            cf_as_completed_free(it);
            atomic_fetch_add(&n_as_completed, 1);
            break;
        }
        case 2: /* results one by one, with a timeout sometimes too short */
            for (int i = 0; i < n; i++) {
                int st = cf_result(fs[i], (rand_r(&seed) % 3) / 1000.0, NULL,
                                   NULL);
                (void)st;
            }
            break;
        default:
            break;
        }
        ASSERT_OK(cf_wait(fs, (size_t)n, LIVENESS, CF_ALL_COMPLETED, NULL, NULL,
                          NULL, NULL));
        for (int i = 0; i < n; i++) {
            check_item(&batch[i]);
            cf_future_release(batch[i].f);
        }
    }
    return NULL;
}

static void test_churn(void)
{
    watchdog_start();
    double len = soak_seconds() * 0.40;
    for (int i = 0; i < 2; i++) {
        pthread_rwlockattr_t a;
        pthread_rwlockattr_init(&a);
        pthread_rwlockattr_setkind_np(
            &a, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
        ASSERT(pthread_rwlock_init(&slots[i].lock, &a) == 0);
        pthread_rwlockattr_destroy(&a);
        slots[i].process = i == 1;
        slots[i].ex = make_executor(slots[i].process);
    }
    atomic_store(&churn_stop, false);
    pthread_t t[3];
    double t0 = now_s();
    for (int i = 0; i < 3; i++)
        ASSERT(pthread_create(&t[i], NULL, churner,
                              (void *)(uintptr_t)(i + 1)) == 0);
    sleep_s(len);
    atomic_store(&churn_stop, true);
    for (int i = 0; i < 3; i++)
        pthread_join(t[i], NULL);
    for (int i = 0; i < 2; i++) {
        ASSERT_OK(cf_shutdown(slots[i].ex, true, false));
        check_stats_settled(slots[i].ex);
        cf_executor_free(slots[i].ex);
        pthread_rwlock_destroy(&slots[i].lock);
    }
    unsigned long long cbs = cb_check_all();
    long tasks = atomic_load(&n_tasks);
    ASSERT_EQ(tasks, atomic_load(&n_ok) + atomic_load(&n_cancelled) +
                         atomic_load(&n_raised));
    ASSERT_EQ(cbs, (unsigned long long)tasks);
    printf("# churn: %.1f s, %ld tasks (%ld ok, %ld cancelled, %ld raised, "
           "%ld of them stopped on request), %ld map items in %ld maps, "
           "%ld waits, %ld as_completed, %ld executors recreated; every "
           "callback ran once\n",
           now_s() - t0, tasks, atomic_load(&n_ok), atomic_load(&n_cancelled),
           atomic_load(&n_raised), atomic_load(&n_stopped_req),
           atomic_load(&n_map_items), atomic_load(&n_maps),
           atomic_load(&n_waits), atomic_load(&n_as_completed),
           atomic_load(&n_recreated));
}

/* ------------------------------------------------------------------------ */
/* (b) Fault storm on a process pool                                         */
/* ------------------------------------------------------------------------ */

/* The parent pid and state of pid from /proc, or -1. */
static pid_t parent_of(pid_t pid, char *state)
{
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *p = strrchr(buf, ')');
    char st;
    int ppid;
    if (p == NULL || sscanf(p + 1, " %c %d", &st, &ppid) != 2)
        return -1;
    if (state)
        *state = st;
    return st == 'Z' || st == 'X' ? -1 : (pid_t)ppid;
}

/* Sends sig to pid if it is (still) a live child of ours: the pidfd pins
 * the process, so a recycled pid is never hit. */
static bool signal_our_child(pid_t pid, int sig)
{
    int pfd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (pfd < 0)
        return false;
    bool ok = parent_of(pid, NULL) == getpid() &&
              syscall(SYS_pidfd_send_signal, pfd, sig, NULL, 0) == 0;
    close(pfd);
    return ok;
}

enum { MAX_SEEN = 64, MAX_STOPPED = 2 };

typedef struct storm {
    pthread_mutex_t m;
    pid_t seen[MAX_SEEN]; /* workers that ran a task (past their start) */
    int nseen;
    struct {
        pid_t pid;
        double until;
        bool then_kill;
    } stopped[MAX_STOPPED];
    int nstopped;
    atomic_bool stop;
    long kills, stops, conts, stop_kills, stop_reaped;
} storm;

static storm S = {.m = PTHREAD_MUTEX_INITIALIZER};
static atomic_long s_tasks, s_ok, s_crashed, s_timedout;

static void storm_saw(pid_t pid)
{
    pthread_mutex_lock(&S.m);
    bool known = false;
    for (int i = 0; i < S.nseen; i++)
        known |= S.seen[i] == pid;
    if (!known) {
        if (S.nseen == MAX_SEEN) { /* forget the oldest */
            memmove(S.seen, S.seen + 1, (MAX_SEEN - 1) * sizeof *S.seen);
            S.nseen--;
        }
        S.seen[S.nseen++] = pid;
    }
    pthread_mutex_unlock(&S.m);
}

/* Resumes (or kills) the stopped workers whose time is up, or all. */
static void storm_release_stopped(bool all)
{
    double now = now_s();
    for (int i = 0; i < S.nstopped;) {
        if (!all && S.stopped[i].until > now) {
            i++;
            continue;
        }
        pid_t pid = S.stopped[i].pid;
        if (S.stopped[i].then_kill && !all) {
            if (signal_our_child(pid, SIGKILL)) {
                S.kills++;
                S.stop_kills++;
            } else {
                S.stop_reaped++; /* the pool killed it (time limit) */
            }
        } else if (signal_our_child(pid, SIGCONT)) {
            S.conts++;
        } else {
            S.stop_reaped++; /* the pool killed it (time limit) */
        }
        S.stopped[i] = S.stopped[--S.nstopped];
    }
}

static bool storm_is_stopped(pid_t pid)
{
    for (int i = 0; i < S.nstopped; i++)
        if (S.stopped[i].pid == pid)
            return true;
    return false;
}

static void *chaos_main(void *arg)
{
    unsigned seed = (unsigned)(uintptr_t)arg;
    while (!atomic_load(&S.stop)) {
        sleep_s((20 + rand_r(&seed) % 100) / 1000.0);
        pthread_mutex_lock(&S.m);
        storm_release_stopped(false);
        /* Forget workers that are gone. */
        for (int i = 0; i < S.nseen;) {
            if (parent_of(S.seen[i], NULL) != getpid())
                S.seen[i] = S.seen[--S.nseen];
            else
                i++;
        }
        if (S.nseen > 0) {
            pid_t pid = S.seen[rand_r(&seed) % (unsigned)S.nseen];
            unsigned r = (unsigned)rand_r(&seed) % 10;
            if (storm_is_stopped(pid)) {
                /* its timer decides */
            } else if (r < 6 || S.nstopped == MAX_STOPPED) {
                if (signal_our_child(pid, SIGKILL))
                    S.kills++;
            } else if (signal_our_child(pid, SIGSTOP)) {
                int k = S.nstopped++;
                S.stopped[k].pid = pid;
                /* 20 ms .. 1 s: longer than the time limit, sometimes */
                S.stopped[k].until = now_s() +
                                     (20 + rand_r(&seed) % 980) / 1000.0;
                S.stopped[k].then_kill = rand_r(&seed) % 3 == 0;
                S.stops++;
            }
        }
        pthread_mutex_unlock(&S.m);
    }
    pthread_mutex_lock(&S.m);
    storm_release_stopped(true); /* SIGCONT every stopped one */
    pthread_mutex_unlock(&S.m);
    return NULL;
}

typedef struct storm_item {
    cf_future *f;
    int64_t us;
} storm_item;

static atomic_bool submit_stop;

static void *storm_submitter(void *arg)
{
    cf_executor *ex = arg;
    unsigned seed = (unsigned)(uintptr_t)ex ^ (unsigned)pthread_self();
    storm_item batch[16];
    cf_future *fs[16];
    while (!atomic_load(&submit_stop)) {
        int n = 1 + rand_r(&seed) % 16;
        for (int i = 0; i < n; i++) {
            batch[i].us = rand_r(&seed) % 20000;
            cf_task_opts o = {.time_limit = 0.25, .retries = rand_r(&seed) % 3};
            batch[i].f = cf_submit_ex(ex, t_work, &batch[i].us,
                                      sizeof batch[i].us, &o);
            if (batch[i].f == NULL) {
                fprintf(stderr, "storm: submit failed: %s\n",
                        cf_err_name(cf_last_error()));
                abort();
            }
            fs[i] = batch[i].f;
            track(batch[i].f);
        }
        atomic_fetch_add(&s_tasks, n);
        int st = cf_wait(fs, (size_t)n, LIVENESS, CF_ALL_COMPLETED, NULL, NULL,
                         NULL, NULL);
        if (st != CF_OK) {
            for (int i = 0; i < n; i++)
                if (!cf_done(fs[i]))
                    describe_fail("storm: not done in time", fs[i], st);
        }
        for (int i = 0; i < n; i++) {
            const void *d;
            size_t len;
            st = cf_result(fs[i], 0, &d, &len);
            if (st == CF_OK) {
                int64_t out[2];
                ASSERT_EQ(len, sizeof out);
                memcpy(out, d, sizeof out);
                ASSERT_EQ(out[0], batch[i].us * 3 + 1);
                storm_saw((pid_t)out[1]);
                atomic_fetch_add(&s_ok, 1);
            } else if (st == CF_ECRASHED) {
                atomic_fetch_add(&s_crashed, 1);
            } else if (st == CF_ETIMEDOUT && cf_done(fs[i])) {
                atomic_fetch_add(&s_timedout, 1);
            } else {
                describe_fail("storm", fs[i], st);
            }
            cf_future_release(fs[i]);
        }
    }
    return NULL;
}

static void test_fault_storm(void)
{
    watchdog_start();
    double len = soak_seconds() * 0.35;
    cf_executor *ex =
        cf_process_pool(&(cf_process_pool_opts){.max_workers = 2});
    ASSERT(ex != NULL);
    atomic_store(&S.stop, false);
    atomic_store(&submit_stop, false);
    double t0 = now_s();
    pthread_t chaos, sub[2];
    ASSERT(pthread_create(&chaos, NULL, chaos_main, (void *)(uintptr_t)4242) ==
           0);
    for (int i = 0; i < 2; i++)
        ASSERT(pthread_create(&sub[i], NULL, storm_submitter, ex) == 0);
    sleep_s(len);
    atomic_store(&S.stop, true); /* chaos ends first, resuming the stopped */
    pthread_join(chaos, NULL);
    atomic_store(&submit_stop, true);
    for (int i = 0; i < 2; i++)
        pthread_join(sub[i], NULL);
    double storm_len = now_s() - t0;

    /* Usable afterwards: every task succeeds now. */
    cf_future *fs[16];
    int64_t us[16];
    for (int i = 0; i < 16; i++) {
        us[i] = i * 10;
        fs[i] = cf_submit_ex(ex, t_work, &us[i], sizeof us[i],
                             &(cf_task_opts){.time_limit = LIVENESS});
        ASSERT(fs[i] != NULL);
        track(fs[i]);
    }
    for (int i = 0; i < 16; i++) {
        const void *d;
        size_t n;
        int st = cf_result(fs[i], LIVENESS, &d, &n);
        if (st != CF_OK)
            describe_fail("storm: after the storm", fs[i], st);
        int64_t out[2];
        ASSERT_EQ(n, sizeof out);
        memcpy(out, d, sizeof out);
        ASSERT_EQ(out[0], us[i] * 3 + 1);
        cf_future_release(fs[i]);
    }
    ASSERT_OK(cf_shutdown(ex, true, false));
    check_stats_settled(ex);
    cf_executor_free(ex);
    unsigned long long cbs = cb_check_all();
    long tasks = atomic_load(&s_tasks);
    ASSERT_EQ(tasks, atomic_load(&s_ok) + atomic_load(&s_crashed) +
                         atomic_load(&s_timedout));
    ASSERT_EQ(cbs, (unsigned long long)tasks + 16);
    ASSERT(S.kills > 0);
    printf("# storm: %.1f s, %ld tasks (%ld ok, %ld crashed past their "
           "retries, %ld timed out), %ld SIGKILLs survived (%ld of stopped "
           "workers), %ld SIGSTOPs (%ld resumed, %ld killed by the pool "
           "past a time limit); pool usable after; every callback ran "
           "once\n",
           storm_len, tasks, atomic_load(&s_ok), atomic_load(&s_crashed),
           atomic_load(&s_timedout), S.kills, S.stop_kills, S.stops, S.conts,
           S.stop_reaped);
}

/* ------------------------------------------------------------------------ */
/* (c) Memory stability                                                      */
/* ------------------------------------------------------------------------ */

#if defined(__SANITIZE_ADDRESS__)
#define CF_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CF_ASAN 1
#endif
#endif

/* Resident set size in KiB (/proc/self/statm, second field). */
static long rss_kib(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    ASSERT(f != NULL);
    long size, res;
    ASSERT(fscanf(f, "%ld %ld", &size, &res) == 2);
    fclose(f);
    return res * (sysconf(_SC_PAGESIZE) / 1024);
}

/* VmHWM from /proc/self/status (peak RSS) in KiB, or -1. */
static long hwm_kib(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    if (f == NULL)
        return -1;
    char line[256];
    long v = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmHWM: %ld", &v) == 1)
            break;
    fclose(f);
    return v;
}

static int cmp_long(const void *a, const void *b)
{
    long x = *(const long *)a, y = *(const long *)b;
    return (x > y) - (x < y);
}

static long median(const long *v, size_t n)
{
    long *c = malloc(n * sizeof *c);
    ASSERT(c != NULL);
    memcpy(c, v, n * sizeof *c);
    qsort(c, n, sizeof *c, cmp_long);
    long m = c[n / 2];
    free(c);
    return m;
}

static void test_memory_stable(void)
{
    watchdog_start();
    double len = soak_seconds() * 0.25;
    double warmup = len * 0.2 > 2.0 ? len * 0.2 : 2.0;
    double period = len / 30 > 1.0 ? 1.0 : len / 30 < 0.25 ? 0.25 : len / 30;
    size_t cap = (size_t)(len / period) + 8, ns = 0;
    long *samples = calloc(cap, sizeof *samples);
    ASSERT(samples != NULL);
    cf_executor *ex = cf_thread_pool(&(cf_thread_pool_opts){.max_workers = 2});
    ASSERT(ex != NULL);
    long tasks = 0, submitted = 0, peak = 0, first_rss = rss_kib();
    double t0 = now_s(), next_sample = t0 + warmup;
    int64_t in[64];
    cf_future *fs[64];
    for (unsigned round = 0; now_s() - t0 < len; round++) {
        for (int i = 0; i < 64; i++) {
            in[i] = (int64_t)round * 64 + i;
            fs[i] = cf_submit_i64(ex, t_add1, in[i]);
            ASSERT(fs[i] != NULL);
            track_total(fs[i]);
        }
        if (round % 8 == 1) { /* the other ways in, now and then */
            cf_as_completed *it = cf_as_completed_new(fs, 64, LIVENESS);
            ASSERT(it != NULL);
            cf_future *f;
            for (int i = 0; i < 64; i++)
                ASSERT_OK(cf_as_completed_next(it, &f));
            cf_as_completed_free(it);
        } else if (round % 8 == 2) {
            ASSERT_OK(cf_wait(fs, 64, LIVENESS, CF_ALL_COMPLETED, NULL, NULL,
                              NULL, NULL));
        }
        for (int i = 0; i < 64; i++) {
            int64_t v;
            ASSERT_OK(cf_result_i64(fs[i], LIVENESS, &v));
            ASSERT_EQ(v, in[i] + 1);
            cf_future_release(fs[i]);
        }
        if (round % 16 == 3) {
            cf_map *m = cf_map_i64(ex, t_add1, in, 64, NULL);
            ASSERT(m != NULL);
            for (int i = 0; i < 64; i++) {
                int64_t v;
                ASSERT_OK(cf_map_next_i64(m, &v));
                ASSERT_EQ(v, in[i] + 1);
            }
            cf_map_free(m);
            tasks += 64;
        }
        tasks += 64;
        submitted += 64;
        double now = now_s();
        if (now >= next_sample && ns < cap) {
            long r = rss_kib();
            samples[ns++] = r;
            peak = r > peak ? r : peak;
            next_sample += period;
        }
    }
    cf_executor_free(ex);
    double ran = now_s() - t0;
    ASSERT_EQ(cb_check_all(), (unsigned long long)submitted);
    ASSERT(ns >= 3);
    size_t third = ns / 3;
    long first = median(samples, third),
         last = median(samples + ns - third, third);
    long limit = first + first / 10 + 4096;
    printf("# memory: %.1f s, %ld tasks, RSS %ld KiB at start, %zu samples "
           "every %.2f s after a %.1f s warm-up: first third median %ld KiB, "
           "last third median %ld KiB (limit %ld), peak sampled %ld KiB, "
           "VmHWM %ld KiB\n",
           ran, tasks, first_rss, ns, period, warmup, first, last, limit, peak,
           hwm_kib());
    if (getenv("CF_SOAK_SHOW_RSS") != NULL)
        for (size_t i = 0; i < ns; i++)
            printf("# memory: sample %zu: %ld KiB\n", i, samples[i]);
#ifdef CF_ASAN
    printf("# memory: growth not checked under ASan (its quarantine keeps "
           "freed blocks)\n");
#else
    if (last > limit) {
        fprintf(stderr, "RSS grew: last third median %ld KiB > %ld KiB\n", last,
                limit);
        for (size_t i = 0; i < ns; i++)
            fprintf(stderr, "  sample %zu: %ld KiB\n", i, samples[i]);
        abort();
    }
#endif
    free(samples);
}

TEST_MAIN(T(test_churn), T(test_fault_storm), T(test_memory_stable))

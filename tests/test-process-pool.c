/*
 * test-process-pool.c -- what only a process pool does: crash isolation
 * (segfault, abort, _exit, time limits), retries on fresh workers, worker
 * recycling, initializers in the workers, terminate / kill, shutdown with
 * a deadline, workers killed from outside in the middle of a map, spawning
 * while other threads hold locks, the parent dying, and what a worker
 * inherits (descriptors, SIGINT) -- plus big payloads.
 *
 * Workers are fresh copies of this binary: a task sees only its argument
 * (globals hold their initial values there), so tasks that must talk to
 * the test do it through files and FIFOs under a private /tmp directory.
 * A blocked task waits on a FIFO gate the test opens; no sleeps sequence
 * anything.
 */
#include "test.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* Bound on waits that only a library bug could make endless (seconds): a
 * liveness guard so that a hang fails the test, not a timing assertion. */
#define LIVENESS 20.0

static cf_executor *pool_n(int n)
{
    cf_executor *ex =
        cf_process_pool(&(cf_process_pool_opts){.max_workers = n});
    ASSERT(ex != NULL);
    return ex;
}

#include "fgate.h"

/* ------------------------------------------------------------------------ */
/* Tasks                                                                     */
/* ------------------------------------------------------------------------ */

static void t_square(cf_call *c)
{
    int64_t v = cf_arg_i64(c);
    cf_return_i64(c, v * v + 1);
}

static void t_getpid(cf_call *c)
{
    cf_return_i64(c, (int64_t)getpid());
}

static void check_square(cf_future *f, int64_t v)
{
    int64_t got = -1;
    int rc = cf_result_i64(f, LIVENESS, &got);
    if (rc != CF_OK) {
        cf_error e = {0};
        cf_exception(f, 0, &e);
        fprintf(stderr, "square(%" PRId64 "): %s: %s\n", v, cf_err_name(rc),
                e.message ? e.message : "");
    }
    ASSERT_OK(rc);
    ASSERT_EQ(got, v * v + 1);
}

enum { DIE_SEGV, DIE_ABORT, DIE_EXIT3, DIE_HANG };

typedef struct die_arg {
    int mode;
    char pidfile[96]; /* the worker writes its pid here before dying */
} die_arg;

/* Writes the worker's pid to a file, then dies the way it is told to. */
static void t_die(cf_call *c)
{
    die_arg a;
    size_t n;
    const void *p = cf_arg(c, &n);
    if (n != sizeof a) {
        cf_raise(c, 1, "t_die: argument of %zu bytes", n);
        return;
    }
    memcpy(&a, p, sizeof a);
    int fd = open(a.pidfile, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd >= 0) {
        dprintf(fd, "%d", (int)getpid());
        close(fd);
    }
    switch (a.mode) {
    case DIE_SEGV: { /* a real fault, that no sanitizer check intercepts */
        volatile int *page = mmap(NULL, 4096, PROT_NONE,
                                  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (page != MAP_FAILED)
            *page = 1;
        break;
    }
    case DIE_ABORT:
        abort();
    case DIE_EXIT3:
        _exit(3);
    case DIE_HANG: {
        struct timespec ts = {30, 0}; /* bounded: the limit is far lower */
        while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
            ;
        break;
    }
    }
    cf_raise(c, 1, "t_die: survived mode %d", a.mode);
}

static int read_pid_file(const char *path)
{
    FILE *f = fopen(path, "r");
    ASSERT(f != NULL);
    int pid = 0;
    ASSERT_EQ(fscanf(f, "%d", &pid), 1);
    fclose(f);
    ASSERT(pid > 0);
    return pid;
}

/* Appends a byte to the file named by the argument (one per attempt), then
 * aborts. */
static void t_crash_count(cf_call *c)
{
    int fd = open(cf_arg_str(c), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC,
                  0600);
    if (fd < 0) {
        cf_raise(c, 1, "open %s: %s", cf_arg_str(c), strerror(errno));
        return;
    }
    ssize_t w = write(fd, "x", 1);
    (void)w;
    close(fd);
    abort();
}

/* Aborts on its first attempt only (it creates the marker file named by
 * its argument with O_EXCL), then returns 7. */
static void t_crash_once(cf_call *c)
{
    int fd = open(cf_arg_str(c), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd >= 0) {
        close(fd);
        abort();
    }
    if (errno != EEXIST) {
        cf_raise(c, 1, "open %s: %s", cf_arg_str(c), strerror(errno));
        return;
    }
    cf_return_i64(c, 7);
}

static off_t file_size(const char *path)
{
    struct stat st;
    ASSERT(stat(path, &st) == 0);
    return st.st_size;
}

/* Initializer state: in the workers only (the parent never sets it). */
static int64_t g_init_value;
static int g_init_runs;

static void t_init(cf_call *c)
{
    g_init_value = cf_arg_i64(c);
    g_init_runs++;
}

static void t_read_init(cf_call *c)
{
    cf_return_i64(c, g_init_value * 1000 + g_init_runs);
}

static void t_init_fail(cf_call *c)
{
    cf_raise(c, 5, "initializer refused %" PRId64, cf_arg_i64(c));
}

/* errno of fcntl(fd, F_GETFD) for the fd in the argument, or -1 if open. */
static void t_fd_errno(cf_call *c)
{
    int fd = (int)cf_arg_i64(c);
    cf_return_i64(c, fcntl(fd, F_GETFD) == -1 ? errno : -1);
}

static void t_sigint_ignored(cf_call *c)
{
    struct sigaction sa;
    if (sigaction(SIGINT, NULL, &sa) != 0) {
        cf_raise(c, 1, "sigaction: %s", strerror(errno));
        return;
    }
    cf_return_i64(c, sa.sa_handler == SIG_IGN);
}

/* A cheap pattern for big payloads, checked by the task and the test. */
static unsigned char pattern_byte(size_t i, size_t len)
{
    return (unsigned char)(i * 7u + (i >> 12) + len);
}

static void t_echo_checked(cf_call *c)
{
    size_t n;
    const unsigned char *p = cf_arg(c, &n);
    for (size_t i = 0; i < n; i++)
        if (p[i] != pattern_byte(i, n)) {
            cf_raise(c, 1, "argument byte %zu of %zu is %u", i, n, p[i]);
            return;
        }
    cf_return(c, p, n);
}

/* ------------------------------------------------------------------------ */
/* Crash isolation and time limits                                           */
/* ------------------------------------------------------------------------ */

/* Submits 10 good tasks, one that dies as told, 10 more: the bad one fails
 * alone with want_status / want_code and a message naming its worker's pid
 * and `what`; the others succeed; the pool serves on. */
static void crash_case(int mode, double time_limit, int want_status,
                       int want_code, const char *what)
{
    tmpdir d;
    tmpdir_init(&d);
    die_arg a = {.mode = mode};
    tmpdir_file(&d, "pid", a.pidfile, sizeof a.pidfile);
    cf_executor *ex = pool_n(2);
    cf_future *before[10], *after[10];
    for (int i = 0; i < 10; i++)
        ASSERT((before[i] = cf_submit_i64(ex, t_square, i)) != NULL);
    cf_future *bad = cf_submit_ex(ex, t_die, &a, sizeof a,
                                  &(cf_task_opts){.time_limit = time_limit});
    ASSERT(bad != NULL);
    for (int i = 0; i < 10; i++)
        ASSERT((after[i] = cf_submit_i64(ex, t_square, 100 + i)) != NULL);

    cf_error e;
    ASSERT_OK(cf_exception(bad, LIVENESS, &e));
    if (e.status != want_status || e.code != want_code) {
        fprintf(stderr, "want %s(%d), got %s(%d): %s\n",
                cf_err_name(want_status), want_code, cf_err_name(e.status),
                e.code, e.message);
        abort();
    }
    ASSERT(cf_done(bad));
    ASSERT_EQ(cf_future_state(bad), CF_FINISHED);
    ASSERT_ST(cf_result(bad, 0, NULL, NULL), want_status);
    char needle[64];
    snprintf(needle, sizeof needle, "worker %d ", read_pid_file(a.pidfile));
    if (strstr(e.message, needle) == NULL || strstr(e.message, what) == NULL) {
        fprintf(stderr, "message \"%s\" lacks \"%s\" or \"%s\"\n", e.message,
                needle, what);
        abort();
    }
    for (int i = 0; i < 10; i++) {
        check_square(before[i], i);
        check_square(after[i], 100 + i);
        cf_future_release(before[i]);
        cf_future_release(after[i]);
    }
    cf_future_release(bad);
    /* Still serving. */
    for (int i = 0; i < 5; i++) {
        cf_future *f = cf_submit_i64(ex, t_square, 1000 + i);
        ASSERT(f != NULL);
        check_square(f, 1000 + i);
        cf_future_release(f);
    }
    cf_executor_free(ex);
    tmpdir_destroy(&d);
}

/* A segfaulting task: CF_ECRASHED, code -SIGSEGV, others unaffected. */
static void test_crash_segv(void)
{
    crash_case(DIE_SEGV, 0, CF_ECRASHED, -SIGSEGV, "signal 11");
}

/* An aborting task: CF_ECRASHED, code -SIGABRT. */
static void test_crash_abort(void)
{
    crash_case(DIE_ABORT, 0, CF_ECRASHED, -SIGABRT, "signal 6");
}

/* A task calling _exit(3): CF_ECRASHED, code 3. */
static void test_crash_exit3(void)
{
    crash_case(DIE_EXIT3, 0, CF_ECRASHED, 3, "status 3");
}

/* A task sleeping past its 0.3 s time limit: CF_ETIMEDOUT (and done). */
static void test_time_limit(void)
{
    crash_case(DIE_HANG, 0.3, CF_ETIMEDOUT, 0, "time limit");
}

/* ------------------------------------------------------------------------ */
/* Retries                                                                   */
/* ------------------------------------------------------------------------ */

/* A task that crashes every time with retries=2 fails with CF_ECRASHED
 * after exactly 3 attempts; one that crashes only on its first attempt
 * succeeds with retries=1; the pool default (max_retries) works too, and
 * without retries a crash is final. */
static void test_retries(void)
{
    tmpdir d;
    tmpdir_init(&d);
    char count1[96], count2[96], once1[96], once2[96];
    tmpdir_file(&d, "count1", count1, sizeof count1);
    tmpdir_file(&d, "count2", count2, sizeof count2);
    tmpdir_file(&d, "once1", once1, sizeof once1);
    tmpdir_file(&d, "once2", once2, sizeof once2);

    cf_executor *ex = pool_n(2);
    cf_future *f = cf_submit_ex(ex, t_crash_count, count1, strlen(count1) + 1,
                                &(cf_task_opts){.retries = 2});
    cf_future *g = cf_submit_ex(ex, t_crash_once, once1, strlen(once1) + 1,
                                &(cf_task_opts){.retries = 1});
    ASSERT(f && g);
    cf_error e;
    ASSERT_OK(cf_exception(f, LIVENESS, &e));
    ASSERT_ST(e.status, CF_ECRASHED);
    ASSERT_EQ(e.code, -SIGABRT);
    ASSERT_EQ(file_size(count1), 3);
    int64_t v;
    ASSERT_OK(cf_result_i64(g, LIVENESS, &v));
    ASSERT_EQ(v, 7);
    cf_future_release(f);
    cf_future_release(g);
    /* No retries: the first crash is final. */
    f = cf_submit_str(ex, t_crash_once, once2);
    ASSERT(f != NULL);
    ASSERT_ST(cf_result(f, LIVENESS, NULL, NULL), CF_ECRASHED);
    cf_future_release(f);
    cf_executor_free(ex);

    ex = cf_process_pool(
        &(cf_process_pool_opts){.max_workers = 2, .max_retries = 2});
    ASSERT(ex != NULL);
    f = cf_submit_str(ex, t_crash_count, count2);
    ASSERT(f != NULL);
    ASSERT_ST(cf_result(f, LIVENESS, NULL, NULL), CF_ECRASHED);
    ASSERT_EQ(file_size(count2), 3);
    cf_future_release(f);
    cf_executor_free(ex);
    tmpdir_destroy(&d);
}

/* ------------------------------------------------------------------------ */
/* Worker lifetime                                                           */
/* ------------------------------------------------------------------------ */

/* max_tasks_per_child=2 with one worker: 6 tasks run on 3 workers, two
 * each, whether submitted one by one or all at once. */
static void test_max_tasks_per_child(void)
{
    cf_executor *ex = cf_process_pool(
        &(cf_process_pool_opts){.max_workers = 1, .max_tasks_per_child = 2});
    ASSERT(ex != NULL);
    int64_t pids[6];
    for (int i = 0; i < 6; i++) {
        cf_future *f = cf_submit(ex, t_getpid, NULL, 0);
        ASSERT(f != NULL);
        ASSERT_OK(cf_result_i64(f, LIVENESS, &pids[i]));
        ASSERT(pids[i] != getpid());
        cf_future_release(f);
    }
    for (int i = 0; i < 6; i += 2) {
        ASSERT_EQ(pids[i], pids[i + 1]);
        for (int j = 0; j < i; j++)
            ASSERT(pids[j] != pids[i]);
    }
    cf_future *fs[6];
    for (int i = 0; i < 6; i++)
        ASSERT((fs[i] = cf_submit(ex, t_getpid, NULL, 0)) != NULL);
    int distinct = 0;
    for (int i = 0; i < 6; i++) {
        ASSERT_OK(cf_result_i64(fs[i], LIVENESS, &pids[i]));
        int same = 0;
        for (int j = 0; j < i; j++)
            same += pids[j] == pids[i];
        ASSERT(same <= 1);
        distinct += same == 0;
        cf_future_release(fs[i]);
    }
    ASSERT_EQ(distinct, 3);
    cf_executor_free(ex);
}

/* The default max_workers is the number of CPUs in our affinity mask. */
static void test_default_max_workers(void)
{
    cpu_set_t set;
    ASSERT(sched_getaffinity(0, sizeof set, &set) == 0);
    cf_executor *ex = cf_process_pool(NULL);
    ASSERT(ex != NULL);
    ASSERT_EQ(cf_executor_max_workers(ex), CPU_COUNT(&set));
    cf_executor_free(ex);
    ex = cf_process_pool(&(cf_process_pool_opts){0});
    ASSERT(ex != NULL);
    ASSERT_EQ(cf_executor_max_workers(ex), CPU_COUNT(&set));
    cf_executor_free(ex);
}

/* Resident set size in KiB (/proc/self/statm, second field, in pages). */
static long rss_kib(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    ASSERT(f != NULL);
    long size = 0, res = 0;
    ASSERT(fscanf(f, "%ld %ld", &size, &res) == 2);
    fclose(f);
    return res * (sysconf(_SC_PAGESIZE) / 1024);
}

/* max_workers has a documented bound (issue 13, item 3): beyond it
 * CF_EINVAL, never a signed overflow (INT_MAX once computed 2*n+1) or an
 * allocation for every possible worker up front (1e6 took 172 MB).  A pool
 * at the bound starts workers lazily and costs little until it uses them. */
static void test_max_workers_bound(void)
{
    int bad[] = {CF_PROCESS_POOL_MAX_WORKERS + 1, 1000000, INT_MAX};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ASSERT(cf_process_pool(
                   &(cf_process_pool_opts){.max_workers = bad[i]}) == NULL);
        ASSERT_ST(cf_last_error(), CF_EINVAL);
    }
    enum { POOLS = 16 };
    cf_executor *ex[POOLS];
    long before = rss_kib();
    for (int i = 0; i < POOLS; i++)
        ex[i] = pool_n(CF_PROCESS_POOL_MAX_WORKERS);
    long grew = rss_kib() - before;
    /* Up-front per-worker state of 4096 slots was ~700 KiB a pool. */
    ASSERT(grew < POOLS * 256);
    ASSERT_EQ(cf_executor_max_workers(ex[0]), CF_PROCESS_POOL_MAX_WORKERS);
    cf_future *f = cf_submit_i64(ex[0], t_square, 12);
    check_square(f, 12);
    cf_future_release(f);
    for (int i = 0; i < POOLS; i++)
        cf_executor_free(ex[i]);
}

/* The initializer runs once in each worker, with its argument, before the
 * first task (also in workers that replace retired ones); never in the
 * parent. */
static void test_initializer(void)
{
    int64_t arg = 77;
    for (int recycle = 0; recycle <= 1; recycle++) {
        cf_executor *ex = cf_process_pool(
            &(cf_process_pool_opts){.max_workers = 2,
                                    .initializer = t_init,
                                    .initarg = &arg,
                                    .initarg_len = sizeof arg,
                                    .max_tasks_per_child = recycle ? 1 : 0});
        ASSERT(ex != NULL);
        cf_future *fs[40];
        for (int i = 0; i < 40; i++)
            ASSERT((fs[i] = cf_submit(ex, t_read_init, NULL, 0)) != NULL);
        for (int i = 0; i < 40; i++) {
            int64_t v;
            ASSERT_OK(cf_result_i64(fs[i], LIVENESS, &v));
            ASSERT_EQ(v, 77001);
            cf_future_release(fs[i]);
        }
        cf_executor_free(ex);
    }
    ASSERT_EQ(g_init_value, 0);
    ASSERT_EQ(g_init_runs, 0);
}

/* An initializer that raises breaks the pool: pending futures end with
 * CF_EBROKEN (the message names the initializer's error), later submits
 * fail with CF_EBROKEN, and free returns. */
static void test_initializer_fails(void)
{
    int64_t arg = 9;
    cf_executor *ex =
        cf_process_pool(&(cf_process_pool_opts){.max_workers = 2,
                                                .initializer = t_init_fail,
                                                .initarg = &arg,
                                                .initarg_len = sizeof arg});
    ASSERT(ex != NULL);
    cf_future *fs[3];
    for (int i = 0; i < 3; i++)
        ASSERT((fs[i] = cf_submit_i64(ex, t_square, i)) != NULL);
    for (int i = 0; i < 3; i++) {
        cf_error e;
        ASSERT_OK(cf_exception(fs[i], LIVENESS, &e));
        ASSERT_ST(e.status, CF_EBROKEN);
        if (strstr(e.message, "initializer refused 9") == NULL) {
            fprintf(stderr, "message: %s\n", e.message);
            abort();
        }
        ASSERT_ST(cf_result(fs[i], 0, NULL, NULL), CF_EBROKEN);
        cf_future_release(fs[i]);
    }
    ASSERT(cf_submit_i64(ex, t_square, 1) == NULL);
    ASSERT_ST(cf_last_error(), CF_EBROKEN);
    cf_executor_free(ex);
}

/* ------------------------------------------------------------------------ */
/* Stopping workers                                                          */
/* ------------------------------------------------------------------------ */

static bool proc_gone(pid_t pid)
{
    if (kill(pid, 0) != 0)
        return errno == ESRCH;
    /* Exists: gone all the same if it is a zombie its reaper has not
     * collected yet. */
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return true;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *p = strrchr(buf, ')');
    return p != NULL && (p[2] == 'Z' || p[2] == 'X');
}

/* Runs 20 short tasks one by one: a pool that has seen only short tasks
 * may send the next task ahead to a busy worker. */
static void warm_up(cf_executor *ex)
{
    for (int i = 0; i < 20; i++) {
        cf_future *f = cf_submit_i64(ex, t_square, i);
        ASSERT(f != NULL);
        check_square(f, i);
        cf_future_release(f);
    }
}

/* terminate / kill while two tasks run and six wait: the running futures
 * end with CF_EBROKEN, the waiting ones are cancelled (or, the ones a
 * worker had been sent ahead, end with CF_EBROKEN: at most one per
 * worker); nothing runs after the call, nothing hangs, free returns and
 * the workers are gone.  With sent_ahead, the pool first runs short tasks
 * and everything is submitted in one burst, so that a waiting task is
 * sent ahead to a busy worker (pipelining). */
static void stop_workers_case(bool use_kill, bool sent_ahead)
{
    enum { Q = 6 };
    cf_executor *ex = pool_n(2);
    if (sent_ahead)
        warm_up(ex);
    fgate g;
    fgate_init(&g);
    cf_future *run[2], *q[Q];
    int32_t pids[2] = {0, 0};
    for (int i = 0; i < 2; i++)
        run[i] = submit_gated(ex, &g, i);
    if (!sent_ahead)
        fgate_wait_started(&g, 2, pids);
    for (int i = 0; i < Q; i++)
        ASSERT((q[i] = cf_submit_i64(ex, t_square, i)) != NULL);
    if (sent_ahead)
        fgate_wait_started(&g, 2, pids);
    ASSERT(pids[0] != pids[1]);
    ASSERT_OK(use_kill ? cf_kill_workers(ex) : cf_terminate_workers(ex));
    for (int i = 0; i < 2; i++) {
        cf_error e;
        ASSERT_OK(cf_exception(run[i], LIVENESS, &e));
        ASSERT_ST(e.status, CF_EBROKEN);
        char n0[32], n1[32];
        snprintf(n0, sizeof n0, "worker %d ", (int)pids[0]);
        snprintf(n1, sizeof n1, "worker %d ", (int)pids[1]);
        ASSERT(strstr(e.message, n0) != NULL || strstr(e.message, n1) != NULL);
    }
    int broken = 0;
    for (int i = 0; i < Q; i++) {
        cf_error e = {0};
        int rc = cf_exception(q[i], LIVENESS, &e);
        ASSERT(rc == CF_ECANCELLED || rc == CF_OK);
        if (rc == CF_OK && e.status != CF_EBROKEN) {
            fprintf(stderr,
                    "waiting future %d: %s (%s) after %s: it ran on "
                    "a worker started after the call\n",
                    i, cf_err_name(e.status), e.message,
                    use_kill ? "kill_workers" : "terminate_workers");
            abort();
        }
        broken += rc == CF_OK;
    }
    ASSERT(broken <= 2);
    ASSERT(cf_submit_i64(ex, t_square, 1) == NULL);
    ASSERT_ST(cf_last_error(), CF_ESHUTDOWN);
    cf_executor_free(ex);
    for (int i = 0; i < 2; i++)
        ASSERT(proc_gone(pids[i]));
    for (int i = 0; i < 2; i++)
        cf_future_release(run[i]);
    for (int i = 0; i < Q; i++)
        cf_future_release(q[i]);
    fgate_destroy(&g);
}

/* cf_terminate_workers while tasks run (see stop_workers_case). */
static void test_terminate_workers(void)
{
    stop_workers_case(false, false);
}

/* cf_kill_workers while tasks run (see stop_workers_case). */
static void test_kill_workers(void)
{
    stop_workers_case(true, false);
}

/* terminate and kill when waiting tasks were sent ahead to the busy
 * workers: they must not run on fresh workers after the call (see
 * stop_workers_case). */
static void test_stop_workers_sent_ahead(void)
{
    stop_workers_case(false, true);
    stop_workers_case(true, true);
}

/* cf_shutdown_within(0.3) with a hung task: CF_ETIMEDOUT, and the hung
 * task's future ends with CF_EBROKEN. */
static void test_shutdown_within_hung(void)
{
    cf_executor *ex = pool_n(1);
    fgate g;
    fgate_init(&g);
    cf_future *hung = submit_gated(ex, &g, 1);
    fgate_wait_started(&g, 1, NULL);
    ASSERT_ST(cf_shutdown_within(ex, 0.3), CF_ETIMEDOUT);
    ASSERT(cf_done(hung));
    cf_error e;
    ASSERT_OK(cf_exception(hung, 0, &e));
    ASSERT_ST(e.status, CF_EBROKEN);
    cf_executor_free(ex);
    cf_future_release(hung);
    fgate_destroy(&g);
}

/* The escalation of cf_shutdown_within must end even when the task that
 * waits behind a hung one (same burst, so possibly sent ahead to the same
 * worker) would hang too: cf_shutdown_within(0.3) returns CF_ETIMEDOUT
 * (bounded by LIVENESS here), both futures end, neither runs on a worker
 * started after the escalation. */
typedef struct sw_call {
    cf_executor *ex;
    int rc;
    int done_fd; /* written once cf_shutdown_within returned */
} sw_call;

static void *shutdown_within_thread(void *arg)
{
    sw_call *s = arg;
    s->rc = cf_shutdown_within(s->ex, 0.3);
    char b = 1;
    ASSERT_EQ(write(s->done_fd, &b, 1), 1);
    return NULL;
}

static void test_shutdown_within_sent_ahead(void)
{
    cf_executor *ex = pool_n(1);
    warm_up(ex);
    fgate g;
    fgate_init(&g);
    cf_future *a = submit_gated(ex, &g, 1);
    cf_future *b = submit_gated(ex, &g, 2);
    fgate_wait_started(&g, 1, NULL);
    int pfd[2];
    ASSERT(pipe2(pfd, O_CLOEXEC) == 0);
    sw_call s = {.ex = ex, .rc = 1, .done_fd = pfd[1]};
    pthread_t t;
    ASSERT(pthread_create(&t, NULL, shutdown_within_thread, &s) == 0);
    struct pollfd p = {.fd = pfd[0], .events = POLLIN};
    if (poll(&p, 1, (int)(LIVENESS * 1000)) != 1) {
        fprintf(stderr,
                "cf_shutdown_within(0.3) has not returned after %gs; "
                "first task %s, second %s%s\n",
                LIVENESS, cf_done(a) ? "done" : "not done",
                cf_done(b) ? "done" : "not done",
                cf_running(b) ? " (running on a new worker?)" : "");
        abort();
    }
    pthread_join(t, NULL);
    ASSERT_ST(s.rc, CF_ETIMEDOUT);
    /* The second task never started: it announced nothing on the gate. */
    struct pollfd sp = {.fd = g.started_fd, .events = POLLIN};
    if (poll(&sp, 1, 0) != 0) {
        int32_t pid = 0;
        ASSERT_EQ(read(g.started_fd, &pid, sizeof pid), sizeof pid);
        fprintf(stderr,
                "the second task started on worker %d after "
                "cf_shutdown_within had escalated\n",
                (int)pid);
        abort();
    }
    cf_error e;
    ASSERT_OK(cf_exception(a, 0, &e));
    ASSERT_ST(e.status, CF_EBROKEN);
    int rc = cf_exception(b, 0, &e);
    ASSERT(rc == CF_ECANCELLED || (rc == CF_OK && e.status == CF_EBROKEN));
    close(pfd[0]);
    close(pfd[1]);
    cf_executor_free(ex);
    cf_future_release(a);
    cf_future_release(b);
    fgate_destroy(&g);
}

/* A worker that dies while the parent is still writing a big frame to it
 * (a 64 MiB task; the test SIGKILLs the worker right after submitting)
 * must not kill the parent with SIGPIPE, whose default disposition we
 * keep: the task fails with CF_ECRASHED, the pool serves on. */
static bool kill_our_child(pid_t pid);

static void test_crash_no_sigpipe(void)
{
    struct sigaction sa;
    ASSERT(sigaction(SIGPIPE, NULL, &sa) == 0);
    ASSERT(sa.sa_handler == SIG_DFL);
    size_t n = (size_t)64 << 20;
    unsigned char *buf = malloc(n);
    ASSERT(buf != NULL);
    for (size_t i = 0; i < n; i++)
        buf[i] = pattern_byte(i, n);
    cf_executor *ex = pool_n(1);
    for (int round = 0; round < 3; round++) {
        cf_future *f = cf_submit(ex, t_getpid, NULL, 0);
        ASSERT(f != NULL);
        int64_t pid;
        ASSERT_OK(cf_result_i64(f, LIVENESS, &pid));
        cf_future_release(f);
        cf_future *big = cf_submit(ex, t_echo_checked, buf, n);
        ASSERT(big != NULL);
        ASSERT(kill_our_child((pid_t)pid));
        const void *data;
        size_t len;
        int rc = cf_result(big, LIVENESS, &data, &len);
        if (rc == CF_OK) { /* it was all done before the kill */
            ASSERT_EQ(len, n);
            ASSERT(memcmp(data, buf, n) == 0);
        } else {
            ASSERT_ST(rc, CF_ECRASHED);
        }
        cf_future_release(big);
    }
    cf_future *f = cf_submit_i64(ex, t_square, 5);
    ASSERT(f != NULL);
    check_square(f, 5);
    cf_future_release(f);
    cf_executor_free(ex);
    free(buf);
}

/* ------------------------------------------------------------------------ */
/* Workers killed from outside during a map                                  */
/* ------------------------------------------------------------------------ */

static void t_map_pid(cf_call *c)
{
    int64_t out[2] = {cf_arg_i64(c) * 3 + 1, (int64_t)getpid()};
    cf_return(c, out, sizeof out);
}

/* The parent pid of pid from /proc, or -1. */
static pid_t parent_of(pid_t pid)
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
    char state;
    int ppid;
    if (p == NULL || sscanf(p + 1, " %c %d", &state, &ppid) != 2 ||
        state == 'Z')
        return -1;
    return (pid_t)ppid;
}

/* SIGKILLs pid if it is (still) a live child of ours: the pidfd pins the
 * process, so a recycled pid is never hit. */
static bool kill_our_child(pid_t pid)
{
    int pfd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (pfd < 0)
        return false;
    bool ok = parent_of(pid) == getpid() &&
              syscall(SYS_pidfd_send_signal, pfd, SIGKILL, NULL, 0) == 0;
    close(pfd);
    return ok;
}

enum { CHAOS_N = 10000, CHAOS_STEP = 500, CHAOS_EXTRA = 20, MAX_SEEN = 256 };

typedef struct chaos {
    pthread_mutex_t m;
    pthread_cond_t c;
    long progress; /* map items taken */
    bool stop;
    pid_t seen[MAX_SEEN]; /* workers that ran a task (past their start) */
    int nseen;
    int kills;
} chaos;

static void chaos_saw(chaos *ch, pid_t pid)
{
    pthread_mutex_lock(&ch->m);
    bool known = false;
    for (int i = 0; i < ch->nseen; i++)
        known |= ch->seen[i] == pid;
    if (!known && ch->nseen < MAX_SEEN)
        ch->seen[ch->nseen++] = pid;
    pthread_mutex_unlock(&ch->m);
}

/* Every CHAOS_STEP items taken, SIGKILLs a random worker that has already
 * run tasks (one that is still starting would count as a startup failure,
 * a different rule). */
static void *chaos_killer(void *arg)
{
    chaos *ch = arg;
    unsigned seed = 12345;
    long next = CHAOS_STEP / 2;
    pthread_mutex_lock(&ch->m);
    for (;;) {
        while (!ch->stop && ch->progress < next)
            pthread_cond_wait(&ch->c, &ch->m);
        if (ch->stop)
            break;
        next += CHAOS_STEP;
        int start = ch->nseen ? (int)(rand_r(&seed) % (unsigned)ch->nseen) : 0;
        for (int k = 0; k < ch->nseen; k++) {
            pid_t pid = ch->seen[(start + k) % ch->nseen];
            if (kill_our_child(pid)) {
                ch->kills++;
                break;
            }
        }
    }
    pthread_mutex_unlock(&ch->m);
    return NULL;
}

static _Atomic int chaos_cb[CHAOS_N / CHAOS_STEP * CHAOS_EXTRA];

static void cb_chaos(cf_future *f, void *arg)
{
    (void)f;
    atomic_fetch_add(&chaos_cb[(intptr_t)arg], 1);
}

/* A 10,000-item map (chunksize 64) while a helper thread SIGKILLs workers,
 * with individual submits (and done callbacks) mixed in: every item comes
 * out once, in order, correct or CF_ECRASHED (retries make that rare);
 * every callback runs exactly once; the pool is usable afterwards. */
static void test_chaos_map(void)
{
    static int64_t in[CHAOS_N];
    for (int i = 0; i < CHAOS_N; i++)
        in[i] = i;
    enum { NX = CHAOS_N / CHAOS_STEP * CHAOS_EXTRA };
    static cf_future *extra[NX];
    int nextra = 0;
    cf_executor *ex = cf_process_pool(
        &(cf_process_pool_opts){.max_workers = 2, .max_retries = 3});
    ASSERT(ex != NULL);
    chaos ch = {.m = PTHREAD_MUTEX_INITIALIZER, .c = PTHREAD_COND_INITIALIZER};
    pthread_t killer;
    ASSERT(pthread_create(&killer, NULL, chaos_killer, &ch) == 0);

    cf_map *m =
        cf_map_i64(ex, t_map_pid, in, CHAOS_N,
                   &(cf_map_opts){.chunksize = 64, .continue_on_error = true});
    ASSERT(m != NULL);
    int crashed = 0;
    for (int i = 0; i < CHAOS_N; i++) {
        cf_future *f;
        int rc = cf_map_next(m, &f);
        ASSERT(f != NULL && cf_done(f));
        if (rc == CF_ECRASHED) {
            crashed++;
        } else {
            ASSERT_OK(rc);
            const void *data;
            size_t len;
            ASSERT_OK(cf_result(f, 0, &data, &len));
            ASSERT_EQ(len, 16);
            int64_t out[2];
            memcpy(out, data, sizeof out);
            ASSERT_EQ(out[0], (int64_t)i * 3 + 1);
            chaos_saw(&ch, (pid_t)out[1]);
        }
        if ((i + 1) % CHAOS_STEP == 0) {
            for (int k = 0; k < CHAOS_EXTRA; k++, nextra++) {
                extra[nextra] = cf_submit_i64(ex, t_square, nextra);
                ASSERT(extra[nextra] != NULL);
                ASSERT_OK(cf_add_done_callback(extra[nextra], cb_chaos,
                                               (void *)(intptr_t)nextra));
            }
        }
        pthread_mutex_lock(&ch.m);
        ch.progress = i + 1;
        pthread_cond_broadcast(&ch.c);
        pthread_mutex_unlock(&ch.m);
    }
    ASSERT_ST(cf_map_next(m, NULL), CF_END);
    cf_map_free(m);
    pthread_mutex_lock(&ch.m);
    ch.stop = true;
    pthread_cond_broadcast(&ch.c);
    pthread_mutex_unlock(&ch.m);
    pthread_join(killer, NULL);

    ASSERT_OK(cf_wait(extra, (size_t)nextra, LIVENESS, CF_ALL_COMPLETED, NULL,
                      NULL, NULL, NULL));
    int xcrashed = 0;
    for (int i = 0; i < nextra; i++) {
        int64_t v;
        int rc = cf_result_i64(extra[i], 0, &v);
        if (rc == CF_ECRASHED) {
            xcrashed++;
        } else {
            ASSERT_OK(rc);
            ASSERT_EQ(v, (int64_t)i * i + 1);
        }
    }
    ASSERT(ch.kills > 0);
    ASSERT(crashed + xcrashed <= ch.kills);
    printf("# chaos: %d workers killed, %d map items and %d tasks crashed "
           "past their retries\n",
           ch.kills, crashed, xcrashed);
    /* Usable afterwards. */
    cf_future *f = cf_submit_i64(ex, t_square, 12);
    ASSERT(f != NULL);
    check_square(f, 12);
    cf_future_release(f);
    cf_executor_free(ex); /* every completion (and callback) is over */
    for (int i = 0; i < nextra; i++) {
        ASSERT_EQ(atomic_load(&chaos_cb[i]), 1);
        cf_future_release(extra[i]);
    }
}

/* ------------------------------------------------------------------------ */
/* Spawning, the parent's death, what workers inherit                        */
/* ------------------------------------------------------------------------ */

static pthread_mutex_t busy_lock = PTHREAD_MUTEX_INITIALIZER;
static atomic_bool busy_stop;

static void *busy_thread(void *arg)
{
    unsigned seed = (unsigned)(uintptr_t)arg;
    while (!atomic_load(&busy_stop)) {
        pthread_mutex_lock(&busy_lock);
        void *p = malloc(1 + rand_r(&seed) % 4096);
        ASSERT(p != NULL);
        memset(p, 1, 1);
        free(p);
        pthread_mutex_unlock(&busy_lock);
        void *q = malloc(1 + rand_r(&seed) % 65536);
        ASSERT(q != NULL);
        free(q);
    }
    return NULL;
}

/* Creating pools while four threads hold and release a mutex and malloc
 * and free in a loop: no deadlock (workers are spawned, not forked). */
static void test_spawn_under_lock_traffic(void)
{
    pthread_t t[4];
    atomic_store(&busy_stop, false);
    for (int i = 0; i < 4; i++)
        ASSERT(pthread_create(&t[i], NULL, busy_thread,
                              (void *)(uintptr_t)(i + 1)) == 0);
    for (int i = 0; i < 20; i++) {
        cf_executor *ex = pool_n(2);
        cf_future *f = cf_submit_i64(ex, t_square, i);
        ASSERT(f != NULL);
        check_square(f, i);
        cf_future_release(f);
        cf_executor_free(ex);
    }
    atomic_store(&busy_stop, true);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
}

/* A parent killed with SIGKILL takes its workers along: a forked child
 * makes a pool of 2 workers, learns their pids, starts a long task and
 * writes the pids to a pipe; the test SIGKILLs the child and checks that
 * both workers are gone within 2 seconds (a liveness bound). */
static void test_parent_sigkill(void)
{
    /* fork below: no pool of ours is alive (earlier tests freed theirs, so
     * no library thread can hold a lock); it runs first in TEST_MAIN. */
    fgate g;
    fgate_init(&g);
    int pfd[2];
    ASSERT(pipe2(pfd, O_CLOEXEC) == 0);
    pid_t child = fork();
    ASSERT(child >= 0);
    if (child == 0) {
        close(pfd[0]);
        cf_executor *ex = pool_n(2);
        /* Enough quick tasks to start both workers and see their pids. */
        int32_t pids[2] = {0, 0};
        for (int round = 0; round < 100 && pids[1] == 0; round++) {
            cf_future *fs[64];
            for (int i = 0; i < 64; i++)
                fs[i] = cf_submit(ex, t_getpid, NULL, 0);
            for (int i = 0; i < 64; i++) {
                int64_t v;
                if (fs[i] == NULL || cf_result_i64(fs[i], LIVENESS, &v))
                    _exit(2);
                if (pids[0] == 0)
                    pids[0] = (int32_t)v;
                else if (v != pids[0])
                    pids[1] = (int32_t)v;
                cf_future_release(fs[i]);
            }
        }
        submit_gated(ex, &g, 1); /* the long task */
        if (write(pfd[1], pids, sizeof pids) != (ssize_t)sizeof pids)
            _exit(3);
        for (;;)
            pause();
    }
    close(pfd[1]);
    int32_t pids[2];
    read_pids(pfd[0], 2, pids, "worker pids from the child");
    close(pfd[0]);
    ASSERT(pids[0] > 0 && pids[1] > 0 && pids[0] != pids[1]);
    fgate_wait_started(&g, 1, NULL); /* the long task runs */
    for (int i = 0; i < 2; i++)
        ASSERT(!proc_gone(pids[i]));
    ASSERT(kill(child, SIGKILL) == 0);
    int status;
    ASSERT_EQ(waitpid(child, &status, 0), child);
    ASSERT(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    for (int i = 0; i < 2; i++) {
        int spins = 0;
        while (!proc_gone(pids[i]) && spins++ < 200) {
            struct timespec ts = {0, 10 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
        if (!proc_gone(pids[i])) {
            fprintf(stderr, "worker %d outlived its SIGKILLed parent by 2s\n",
                    (int)pids[i]);
            abort();
        }
    }
    fgate_destroy(&g);
}

/* Workers do not inherit the parent's descriptors, even ones opened
 * without O_CLOEXEC. */
static void test_no_fd_inheritance(void)
{
    int fd = open("/dev/null", O_RDONLY); /* no O_CLOEXEC on purpose */
    ASSERT(fd >= 0);
    ASSERT_EQ(dup2(fd, 100), 100); /* high numbers: clear of the worker's */
    ASSERT_EQ(dup2(fd, 1000), 1000);
    ASSERT_EQ(fcntl(100, F_GETFD), 0); /* inheritable here */
    cf_executor *ex = pool_n(2);
    static const int fds[] = {100, 1000};
    for (int i = 0; i < 2; i++) {
        cf_future *f = cf_submit_i64(ex, t_fd_errno, fds[i]);
        ASSERT(f != NULL);
        int64_t v;
        ASSERT_OK(cf_result_i64(f, LIVENESS, &v));
        ASSERT_EQ(v, EBADF);
        cf_future_release(f);
    }
    cf_executor_free(ex);
    close(100);
    close(1000);
    close(fd);
}

/* Ctrl-C is the parent's business: workers ignore SIGINT. */
static void test_sigint_ignored(void)
{
    cf_executor *ex = pool_n(2);
    cf_future *f = cf_submit(ex, t_sigint_ignored, NULL, 0);
    ASSERT(f != NULL);
    int64_t v;
    ASSERT_OK(cf_result_i64(f, LIVENESS, &v));
    ASSERT_EQ(v, 1);
    cf_future_release(f);
    cf_executor_free(ex);
}

/* After crashes of every kind and cf_executor_free, no child is left to
 * reap: waitpid(-1, WNOHANG) says ECHILD. */
static void test_no_zombies(void)
{
    tmpdir d;
    tmpdir_init(&d);
    cf_executor *ex = pool_n(2);
    cf_future *fs[6];
    for (int i = 0; i < 6; i++) {
        die_arg a = {.mode = i % 3}; /* segv, abort, exit(3) */
        char name[16];
        snprintf(name, sizeof name, "pid%d", i);
        tmpdir_file(&d, name, a.pidfile, sizeof a.pidfile);
        ASSERT((fs[i] = cf_submit(ex, t_die, &a, sizeof a)) != NULL);
    }
    for (int i = 0; i < 6; i++) {
        ASSERT_ST(cf_result(fs[i], LIVENESS, NULL, NULL), CF_ECRASHED);
        cf_future_release(fs[i]);
    }
    cf_future *f = cf_submit_i64(ex, t_square, 4);
    ASSERT(f != NULL);
    check_square(f, 4);
    cf_future_release(f);
    cf_executor_free(ex);
    errno = 0;
    ASSERT_EQ(waitpid(-1, NULL, WNOHANG), -1);
    ASSERT_EQ(errno, ECHILD);
    tmpdir_destroy(&d);
}

/* Payloads of 0 B, 1 B, 1 MiB and 256 MiB cross both ways byte for byte
 * (the task checks the pattern, the test the echo). */
static void test_payloads(void)
{
    static const size_t sizes[] = {0, 1, 1 << 20, (size_t)256 << 20};
    cf_executor *ex = pool_n(2);
    for (size_t k = 0; k < 4; k++) {
        size_t n = sizes[k];
        unsigned char *buf = malloc(n ? n : 1);
        ASSERT(buf != NULL);
        for (size_t i = 0; i < n; i++)
            buf[i] = pattern_byte(i, n);
        cf_future *f = cf_submit(ex, t_echo_checked, n ? buf : NULL, n);
        ASSERT(f != NULL);
        const void *data = NULL;
        size_t len = 1;
        int rc = cf_result(f, CF_FOREVER, &data, &len);
        if (rc != CF_OK) {
            cf_error e = {0};
            cf_exception(f, 0, &e);
            fprintf(stderr, "%zu bytes: %s\n", n, e.message);
        }
        ASSERT_OK(rc);
        ASSERT_EQ(len, n);
        ASSERT(data != NULL);
        ASSERT(n == 0 || memcmp(data, buf, n) == 0);
        cf_future_release(f);
        free(buf);
    }
    cf_executor_free(ex);
}

/* ------------------------------------------------------------------------ */
/* Tasks sent ahead stay queued until a worker starts them                   */
/* ------------------------------------------------------------------------ */

/* A task that appends its index to a log file (one line per run), and, if
 * told to, first passes a gate.  So a test sees which items ran, and how
 * many times. */
typedef struct log_arg {
    char log[96];
    fgate_arg gate;
    int32_t index;
    int32_t gated;   /* pass the gate first */
    int32_t crashes; /* this index crashes (SIGSEGV) instead */
} log_arg;

static void t_log(cf_call *c)
{
    size_t n;
    const void *p = cf_arg(c, &n);
    log_arg a;
    if (n != sizeof a) {
        cf_raise(c, 1, "t_log: argument of %zu bytes", n);
        return;
    }
    memcpy(&a, p, sizeof a);
    if (a.gated && fgate_pass(&a.gate) != 0) {
        cf_raise(c, 2, "t_log: %s", strerror(errno));
        return;
    }
    int fd = open(a.log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        cf_raise(c, 1, "open %s: %s", a.log, strerror(errno));
        return;
    }
    dprintf(fd, "%d\n", (int)a.index);
    close(fd);
    if (a.crashes == a.index)
        raise(SIGSEGV);
    cf_return_i64(c, a.index);
}

/* How many times each index appears in the log (counts[0..n)). */
static void read_log(const char *path, int *counts, int n)
{
    memset(counts, 0, (size_t)n * sizeof *counts);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return;
    for (int i; fscanf(f, "%d", &i) == 1;) {
        ASSERT(i >= 0 && i < n);
        counts[i]++;
    }
    fclose(f);
}

/* A task sent ahead to a busy worker is still pending: it does not report
 * running, cf_cancel succeeds, and it never runs (issue 12). */
static void test_sent_ahead_is_pending(void)
{
    fgate g;
    fgate_init(&g);
    log_arg a = {.gate = g.a, .gated = 1, .crashes = -1};
    tmpdir_file(&g.dir, "log", a.log, sizeof a.log);
    cf_executor *ex = pool_n(1);
    warm_up(ex);
    /* All at once: the worker is handed the later ones before the first
     * one turns out to block. */
    cf_future *busy = cf_submit(ex, t_log, &a, sizeof a);
    ASSERT(busy != NULL);
    a.gated = 0;
    enum { N = 4 };
    cf_future *later[N];
    for (int i = 0; i < N; i++) {
        a.index = 1 + i;
        later[i] = cf_submit(ex, t_log, &a, sizeof a);
        ASSERT(later[i] != NULL);
    }
    fgate_wait_started(&g, 1, NULL);
    for (int i = 0; i < N; i++) {
        ASSERT(!cf_running(later[i]));
        ASSERT(!cf_done(later[i]));
    }
    for (int i = 0; i < N; i += 2) /* every other one */
        ASSERT(cf_cancel(later[i]));
    fgate_open(&g);
    ASSERT_OK(cf_result(busy, LIVENESS, NULL, NULL));
    for (int i = 0; i < N; i++) {
        int64_t v;
        int rc = cf_result_i64(later[i], LIVENESS, &v);
        if (i % 2 == 0) {
            ASSERT_ST(rc, CF_ECANCELLED);
        } else {
            ASSERT_OK(rc);
            ASSERT_EQ(v, 1 + i);
        }
    }
    cf_executor_free(ex);
    int counts[1 + N];
    read_log(a.log, counts, 1 + N);
    ASSERT_EQ(counts[0], 1);
    for (int i = 0; i < N; i++)
        ASSERT_EQ(counts[1 + i], i % 2 == 0 ? 0 : 1); /* cancelled: never ran */
    for (int i = 0; i < N; i++)
        cf_future_release(later[i]);
    cf_future_release(busy);
    fgate_destroy(&g);
}

/* Freeing a map cancels the items still queued, also those already handed
 * to a worker that has not started them: they never run. */
static void test_map_free_cancels_sent_ahead(void)
{
    fgate g;
    fgate_init(&g);
    enum { N = 16 };
    log_arg items[N];
    for (int i = 0; i < N; i++) {
        items[i] =
            (log_arg){.gate = g.a, .index = i, .gated = i == 0, .crashes = -1};
        tmpdir_file(&g.dir, "log", items[i].log, sizeof items[i].log);
    }
    cf_executor *ex = pool_n(1);
    warm_up(ex);
    for (int chunk = 1; chunk <= 4; chunk += 3) {
        unlink(items[0].log);
        cf_map *m = cf_map_array(ex, t_log, items, sizeof items[0], N,
                                 &(cf_map_opts){.chunksize = (size_t)chunk,
                                                .buffersize = N});
        ASSERT(m != NULL);
        fgate_wait_started(&g, 1, NULL);
        cf_map_free(m); /* item 0 runs; the rest waits behind it */
        fgate_open(&g);
        /* Every task has ended once a new one has run after them. */
        cf_future *f = cf_submit_i64(ex, t_square, 3);
        check_square(f, 3);
        cf_future_release(f);
        int counts[N];
        read_log(items[0].log, counts, N);
        ASSERT_EQ(counts[0], 1);
        /* With chunks, the rest of item 0's chunk ran with it. */
        for (int i = 1; i < N; i++)
            ASSERT_EQ(counts[i], i < chunk ? 1 : 0);
        /* A fresh gate for the next round. */
        fgate_destroy(&g);
        fgate_init(&g);
        for (int i = 0; i < N; i++) {
            items[i].gate = g.a;
            tmpdir_file(&g.dir, "log", items[i].log, sizeof items[i].log);
        }
    }
    cf_executor_free(ex);
    fgate_destroy(&g);
}

/* A short task never waits behind a long one while another worker idles
 * (issue 12): with one worker held by a task that runs until the test
 * lets it go, every short task submitted after it completes. */
static void test_no_head_of_line_wait(void)
{
    fgate g;
    fgate_init(&g);
    cf_executor *ex = pool_n(2);
    warm_up(ex); /* both workers up, tasks known to be short */
    for (int round = 0; round < 3; round++) {
        /* The long one and the short ones at once: the pool cannot know
         * yet that the first one is long. */
        cf_future *long_one = submit_gated(ex, &g, 7);
        enum { N = 6 };
        cf_future *s[N];
        for (int i = 0; i < N; i++) {
            s[i] = cf_submit_i64(ex, t_square, 10 + i);
            ASSERT(s[i] != NULL);
        }
        /* All of them end while the long one still runs. */
        ASSERT_OK(
            cf_wait(s, N, LIVENESS, CF_ALL_COMPLETED, NULL, NULL, NULL, NULL));
        ASSERT(!cf_done(long_one));
        for (int i = 0; i < N; i++) {
            check_square(s[i], 10 + i);
            cf_future_release(s[i]);
        }
        fgate_wait_started(&g, 1, NULL);
        fgate_open(&g);
        int64_t v;
        ASSERT_OK(cf_result_i64(long_one, LIVENESS, &v));
        ASSERT_EQ(v, 7);
        cf_future_release(long_one);
        fgate_destroy(&g);
        fgate_init(&g);
    }
    cf_executor_free(ex);
    fgate_destroy(&g);
}

/* A chunked map whose item crashes its worker: that item alone fails
 * (CF_ECRASHED), the others succeed, and every item that ran before the
 * crash ran once: its result was kept, not run again. */
static void test_chunk_crash_runs_once(void)
{
    tmpdir d;
    tmpdir_init(&d);
    enum { N = 200, CRASH = 77 };
    log_arg *items = calloc(N, sizeof *items);
    ASSERT(items != NULL);
    for (int i = 0; i < N; i++) {
        items[i] = (log_arg){.index = i, .crashes = CRASH};
        tmpdir_file(&d, "log", items[i].log, sizeof items[i].log);
    }
    cf_executor *ex = pool_n(2);
    cf_map *m = cf_map_array(ex, t_log, items, sizeof items[0], N,
                             &(cf_map_opts){.chunksize = 32,
                                            .continue_on_error = true});
    ASSERT(m != NULL);
    for (int i = 0; i < N; i++) {
        cf_future *f;
        int rc = cf_map_next(m, &f);
        ASSERT(f != NULL && cf_done(f));
        if (i == CRASH) {
            ASSERT_ST(rc, CF_ECRASHED);
            cf_error e;
            ASSERT_OK(cf_exception(f, 0, &e));
            ASSERT_EQ(e.code, -SIGSEGV);
            ASSERT(strstr(e.message, "t_log") != NULL);
        } else {
            ASSERT_OK(rc);
            int64_t v;
            ASSERT_OK(cf_result_i64(f, 0, &v));
            ASSERT_EQ(v, i);
        }
    }
    ASSERT_ST(cf_map_next(m, NULL), CF_END);
    cf_map_free(m);
    cf_executor_free(ex);
    int counts[N];
    read_log(items[0].log, counts, N);
    for (int i = 0; i < N; i++)
        ASSERT_EQ(counts[i], 1);
    free(items);
    tmpdir_destroy(&d);
}

/* Freeing the pool from a done callback, which runs on the pool's manager
 * thread: the manager frees the pool as it exits; nothing hangs or leaks
 * (LeakSanitizer and valgrind check the second half). */
static cf_executor *cb_pool;
static latch cb_freed = LATCH_INIT;

static void free_pool_cb(cf_future *f, void *arg)
{
    (void)f;
    (void)arg;
    cf_executor_free(cb_pool);
    latch_add(&cb_freed);
}

static void t_plus1(cf_call *c)
{
    cf_return_i64(c, cf_arg_i64(c) + 1);
}

static void test_free_from_callback(void)
{
    for (int k = 0; k < 3; k++) {
        cb_pool = cf_process_pool(&(cf_process_pool_opts){.max_workers = 1});
        ASSERT(cb_pool != NULL);
        cf_future *f = cf_submit_i64(cb_pool, t_plus1, k);
        ASSERT(f != NULL);
        ASSERT_OK(cf_add_done_callback(f, free_pool_cb, NULL));
        latch_wait(&cb_freed, k + 1);
        int64_t v;
        ASSERT_OK(cf_result_i64(f, 0, &v));
        ASSERT_EQ(v, k + 1);
        cf_future_release(f);
    }
}

TEST_MAIN(T(test_parent_sigkill), T(test_free_from_callback),
          T(test_sent_ahead_is_pending), T(test_map_free_cancels_sent_ahead),
          T(test_no_head_of_line_wait), T(test_chunk_crash_runs_once),
          T(test_crash_segv), T(test_crash_abort), T(test_crash_exit3),
          T(test_time_limit), T(test_retries), T(test_max_tasks_per_child),
          T(test_default_max_workers), T(test_max_workers_bound),
          T(test_initializer), T(test_initializer_fails),
          T(test_spawn_under_lock_traffic), T(test_no_fd_inheritance),
          T(test_sigint_ignored), T(test_no_zombies), T(test_payloads),
          T(test_kill_workers), T(test_terminate_workers),
          T(test_shutdown_within_hung), T(test_stop_workers_sent_ahead),
          T(test_shutdown_within_sent_ahead), T(test_crash_no_sigpipe),
          T(test_chaos_map))

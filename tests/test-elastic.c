/*
 * test-elastic.c -- elastic pools (cf_process_pool_opts.idle_timeout): a
 * worker idle for longer exits, its process and descriptors go back to the
 * system, workers start again on demand, the statistics count the exits
 * and the starts, and nothing is lost when a submit races an exit.
 *
 * What the system holds is read from /proc (our children, our open
 * descriptors).  Waiting for an idle worker to go needs time to pass: the
 * tests poll the state they wait for, each poll bounded by LIVENESS, and
 * never assert how long anything took.
 */
#define LIVENESS 30.0
#include "fgate.h"

#include <dirent.h>
#include <math.h>

static void add_one(cf_call *c)
{
    cf_return_i64(c, cf_arg_i64(c) + 1);
}

/* Our live (not zombie) child processes, from /proc/PID/stat. */
static int children(void)
{
    DIR *d = opendir("/proc");
    ASSERT(d != NULL);
    int n = 0;
    pid_t self = getpid();
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        if (e->d_name[0] < '1' || e->d_name[0] > '9')
            continue;
        char path[300], buf[512];
        snprintf(path, sizeof path, "/proc/%s/stat", e->d_name);
        FILE *f = fopen(path, "re");
        if (f == NULL)
            continue; /* gone meanwhile */
        size_t len = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[len] = '\0';
        char *close_paren = strrchr(buf, ')'); /* the name may hold spaces */
        char state;
        int ppid;
        if (close_paren != NULL &&
            sscanf(close_paren + 1, " %c %d", &state, &ppid) == 2 &&
            ppid == self && state != 'Z')
            n++;
    }
    closedir(d);
    return n;
}

/* Our open descriptors. */
static int open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    ASSERT(d != NULL);
    int n = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;)
        n += e->d_name[0] != '.';
    closedir(d);
    return n - 1; /* the directory's own */
}

/* Our threads whose name starts with prefix (/proc/self/task/N/comm). */
static int threads_named(const char *prefix)
{
    DIR *d = opendir("/proc/self/task");
    ASSERT(d != NULL);
    int n = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        if (e->d_name[0] == '.')
            continue;
        char path[300], comm[64] = {0};
        snprintf(path, sizeof path, "/proc/self/task/%s/comm", e->d_name);
        FILE *f = fopen(path, "re");
        if (f == NULL)
            continue;
        if (fgets(comm, sizeof comm, f) != NULL &&
            strncmp(comm, prefix, strlen(prefix)) == 0)
            n++;
        fclose(f);
    }
    closedir(d);
    return n;
}

static void stats_of(cf_executor *ex, cf_stats *s)
{
    ASSERT_OK(cf_executor_stats(ex, s));
}

/* Waits (bounded) until the pool has no worker left. */
static void wait_no_workers(cf_executor *ex)
{
    double until = now_s() + LIVENESS;
    cf_stats s;
    for (;;) {
        stats_of(ex, &s);
        if (s.workers == 0 && children() == 0)
            return;
        ASSERT(now_s() < until);
        usleep(5000);
    }
}

static void run_tasks(cf_executor *ex, int n)
{
    cf_future *fs[64];
    ASSERT(n <= 64);
    for (int i = 0; i < n; i++)
        ASSERT((fs[i] = cf_submit_i64(ex, add_one, i)) != NULL);
    for (int i = 0; i < n; i++) {
        int64_t v = -1;
        ASSERT_OK(cf_result_i64(fs[i], LONG_WAIT, &v));
        ASSERT_EQ(v, i + 1);
        cf_future_release(fs[i]);
    }
}

/* After the timeout, the pool holds no process and no more descriptors
 * than before its first worker; a new submit starts a worker again. */
static void test_process_workers_exit_when_idle(void)
{
    ASSERT_EQ(children(), 0);
    cf_executor *ex = cf_process_pool(
        &(cf_process_pool_opts){.max_workers = 2, .idle_timeout = 0.05});
    ASSERT(ex != NULL);
    int fds_empty = open_fds();
    run_tasks(ex, 16);
    cf_stats s;
    stats_of(ex, &s);
    ASSERT(s.worker_starts >= 1 && s.worker_starts <= 2);
    wait_no_workers(ex);
    ASSERT_EQ(open_fds(), fds_empty);
    stats_of(ex, &s);
    ASSERT_EQ(s.idle_exits, s.worker_starts);
    uint64_t starts = s.worker_starts;

    run_tasks(ex, 4); /* on demand again */
    stats_of(ex, &s);
    ASSERT(s.worker_starts > starts);
    ASSERT_EQ(s.done, 20);
    wait_no_workers(ex);
    cf_executor_free(ex);
    ASSERT_EQ(children(), 0);
}

/* Submits that race the exits: every task runs, exactly once. */
static void test_process_submit_races_idle_exit(void)
{
    cf_executor *ex = cf_process_pool(
        &(cf_process_pool_opts){.max_workers = 2, .idle_timeout = 0.002});
    ASSERT(ex != NULL);
    unsigned seed = 12345;
    for (int i = 0; i < 150; i++) {
        run_tasks(ex, 1 + (int)(rand_r(&seed) % 3));
        usleep(rand_r(&seed) % 4000); /* around the timeout */
    }
    cf_stats s;
    stats_of(ex, &s);
    ASSERT_EQ(s.failed + s.crashed + s.cancelled, 0);
    ASSERT_EQ(s.done, s.submitted);
    ASSERT(s.idle_exits >= 1); /* the race did happen */
    cf_executor_free(ex);
}

/* Thread pool: after the timeout no thread of the pool is left (read from
 * /proc/self/task); a submit starts threads again. */
static void test_threads_exit_when_idle(void)
{
    cf_executor *ex =
        cf_thread_pool(&(cf_thread_pool_opts){.max_workers = 3,
                                              .thread_name_prefix = "elastic",
                                              .idle_timeout = 0.05});
    ASSERT(ex != NULL);
    run_tasks(ex, 30);
    cf_stats s;
    stats_of(ex, &s);
    ASSERT(s.worker_starts >= 1 && s.worker_starts <= 3);
    double until = now_s() + LIVENESS;
    for (;;) {
        stats_of(ex, &s);
        if (s.workers == 0 && threads_named("elastic") == 0)
            break;
        ASSERT(now_s() < until);
        usleep(5000);
    }
    ASSERT_EQ(s.idle_exits, s.worker_starts);
    uint64_t starts = s.worker_starts;
    run_tasks(ex, 10);
    stats_of(ex, &s);
    ASSERT(s.worker_starts > starts);
    ASSERT_EQ(s.done, 40);
    cf_executor_free(ex);
    ASSERT_EQ(threads_named("elastic"), 0);
}

static void *thread_submitter(void *arg)
{
    cf_executor *ex = arg;
    unsigned seed = (unsigned)(uintptr_t)pthread_self();
    for (int i = 0; i < 300; i++) {
        run_tasks(ex, 1 + (int)(rand_r(&seed) % 4));
        if (rand_r(&seed) % 2)
            usleep(rand_r(&seed) % 3000);
    }
    return NULL;
}

/* Submits from two threads race the exits: every task runs once. */
static void test_thread_submit_races_idle_exit(void)
{
    cf_executor *ex = cf_thread_pool(
        &(cf_thread_pool_opts){.max_workers = 2, .idle_timeout = 0.001});
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        ASSERT_EQ(pthread_create(&t[i], NULL, thread_submitter, ex), 0);
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    cf_stats s;
    stats_of(ex, &s);
    ASSERT_EQ(s.failed + s.crashed + s.cancelled, 0);
    ASSERT_EQ(s.done, s.submitted);
    ASSERT(s.idle_exits >= 1);
    cf_executor_free(ex);
}

/* idle_timeout = 0 keeps the workers (as before); bad values are refused. */
static void test_idle_timeout_values(void)
{
    cf_executor *ex =
        cf_process_pool(&(cf_process_pool_opts){.max_workers = 1});
    run_tasks(ex, 2);
    cf_stats s;
    stats_of(ex, &s);
    ASSERT_EQ(s.workers, 1);
    ASSERT_EQ(s.idle_exits, 0);
    cf_executor_free(ex);
    ex = cf_process_pool(&(cf_process_pool_opts){.idle_timeout = CF_FOREVER});
    ASSERT(ex != NULL);
    cf_executor_free(ex);
    ASSERT(cf_process_pool(&(cf_process_pool_opts){.idle_timeout = -1}) ==
           NULL);
    ASSERT_ST(cf_last_error(), CF_EINVAL);
    ASSERT(cf_process_pool(&(cf_process_pool_opts){.idle_timeout = NAN}) ==
           NULL);
    ASSERT_ST(cf_last_error(), CF_EINVAL);
    ASSERT(cf_thread_pool(&(cf_thread_pool_opts){.idle_timeout = -0.5}) ==
           NULL);
    ASSERT_ST(cf_last_error(), CF_EINVAL);
}

TEST_MAIN(T(test_process_workers_exit_when_idle),
          T(test_threads_exit_when_idle), T(test_thread_submit_races_idle_exit),
          T(test_process_submit_races_idle_exit), T(test_idle_timeout_values))

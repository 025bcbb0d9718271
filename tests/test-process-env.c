/*
 * test-process-env.c -- the process pool and the program's environment
 * (issue 13, items 4 to 8): modules loaded by a relative path, the
 * executable deleted or replaced while a pool runs, a parent that handles
 * SIGCHLD itself, a program started through the loader, and what a task's
 * own children inherit and how they end.
 */
#define LIVENESS 30.0
#include "fgate.h"

#include <dirent.h>
#include <dlfcn.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <spawn.h>
#include <sys/auxv.h>
#include <sys/prctl.h>
#include <sys/wait.h>

extern char **environ;

static void add_one(cf_call *c)
{
    cf_return_i64(c, cf_arg_i64(c) + 1);
}

static cf_executor *procs(int n)
{
    cf_executor *ex =
        cf_process_pool(&(cf_process_pool_opts){.max_workers = n});
    ASSERT(ex != NULL);
    return ex;
}

/* Copies file `from` to `to` (mode 0755). */
static void copy_file(const char *from, const char *to)
{
    int in = open(from, O_RDONLY | O_CLOEXEC);
    int out = open(to, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0755);
    ASSERT(in >= 0 && out >= 0);
    char buf[65536];
    ssize_t n;
    while ((n = read(in, buf, sizeof buf)) > 0)
        ASSERT_EQ(write(out, buf, (size_t)n), n);
    ASSERT_EQ(n, 0);
    close(in);
    ASSERT_EQ(close(out), 0);
}

/* ------------------------------------------------------------------------ */
/* Item 8: a module loaded by a relative path                                */
/* ------------------------------------------------------------------------ */

/* dlopen("./plugin.so"), then chdir("/"), then submit a function from it:
 * the workers (started after the chdir) load the module by its absolute
 * path.  It failed with "its module is not loaded in the worker". */
static void test_relative_dlopen_then_chdir(void)
{
    char cwd[PATH_MAX], dir[PATH_MAX], rel[PATH_MAX + 8];
    ASSERT(getcwd(cwd, sizeof cwd) != NULL);
    snprintf(dir, sizeof dir, "%s", CF_TEST_PLUGIN);
    char *base = basename(dir);
    snprintf(rel, sizeof rel, "./%s", base);
    snprintf(dir, sizeof dir, "%s", CF_TEST_PLUGIN);
    ASSERT_EQ(chdir(dirname(dir)), 0);
    void *h = dlopen(rel, RTLD_NOW);
    if (h == NULL)
        fprintf(stderr, "dlopen %s: %s\n", rel, dlerror());
    ASSERT(h != NULL);
    cf_task_fn fn = (cf_task_fn)dlsym(h, "cf_test_plugin_task");
    ASSERT(fn != NULL);
    ASSERT_EQ(chdir("/"), 0);

    cf_executor *ex = procs(2);
    cf_future *f = cf_submit_i64(ex, fn, 14);
    ASSERT(f != NULL);
    int64_t v = 0;
    int rc = cf_result_i64(f, LONG_WAIT, &v);
    if (rc != CF_OK) {
        cf_error e;
        cf_exception(f, 0, &e);
        fprintf(stderr, "plugin task: %s: %s\n", cf_err_name(rc), e.message);
    }
    ASSERT_OK(rc);
    ASSERT_EQ(v, 42);
    cf_future_release(f);
    cf_executor_free(ex);
    ASSERT_EQ(chdir(cwd), 0);
    /* The module stays loaded: a fnref may still name it. */
}

/* A module that cannot be loaded in the worker (deleted after the parent
 * loaded it): the task fails with a message that names the path tried. */
static void test_unloadable_module_names_path(void)
{
    tmpdir d;
    tmpdir_init(&d);
    char copy[128];
    tmpdir_file(&d, "libgone.so", copy, sizeof copy);
    copy_file(CF_TEST_PLUGIN, copy);
    void *h = dlopen(copy, RTLD_NOW);
    ASSERT(h != NULL);
    cf_task_fn fn = (cf_task_fn)dlsym(h, "cf_test_plugin_task");
    ASSERT(fn != NULL);
    ASSERT_EQ(unlink(copy), 0);

    cf_executor *ex = procs(1);
    cf_future *f = cf_submit_i64(ex, fn, 1);
    ASSERT(f != NULL);
    ASSERT_ST(cf_result(f, LONG_WAIT, NULL, NULL), CF_EINVAL);
    cf_error e;
    ASSERT_OK(cf_exception(f, 0, &e));
    if (strstr(e.message, copy) == NULL)
        fprintf(stderr, "message: %s\n", e.message);
    ASSERT(strstr(e.message, copy) != NULL);
    cf_future_release(f);
    /* The pool goes on serving functions it can resolve. */
    f = cf_submit_i64(ex, add_one, 1);
    int64_t v;
    ASSERT_OK(cf_result_i64(f, LONG_WAIT, &v));
    ASSERT_EQ(v, 2);
    cf_future_release(f);
    cf_executor_free(ex);
    tmpdir_destroy(&d);
}

/* ------------------------------------------------------------------------ */
/* Children: some cases need a program of their own                          */
/* ------------------------------------------------------------------------ */

/* Runs this test binary again as `prefix... self test_name` with
 * CF_TEST_CHILD=1 (the child_* tests only act then) and returns its wait
 * status. */
static int run_child(const char *self, const char *loader,
                     const char *test_name)
{
    char *argv[4];
    int n = 0;
    if (loader != NULL)
        argv[n++] = (char *)loader;
    argv[n++] = (char *)self;
    argv[n++] = (char *)test_name;
    argv[n] = NULL;
    ASSERT_EQ(setenv("CF_TEST_CHILD", "1", 1), 0);
    pid_t pid;
    int e = posix_spawn(&pid, argv[0], NULL, NULL, argv, environ);
    unsetenv("CF_TEST_CHILD");
    ASSERT_EQ(e, 0);
    int st;
    ASSERT_EQ(waitpid(pid, &st, 0), pid);
    return st;
}

static bool in_child(void)
{
    return getenv("CF_TEST_CHILD") != NULL;
}

/* n tasks of add_one on ex, each checked. */
static void run_tasks(cf_executor *ex, int n)
{
    for (int i = 0; i < n; i++) {
        cf_future *f = cf_submit_i64(ex, add_one, i);
        ASSERT(f != NULL);
        int64_t v = -1;
        int rc = cf_result_i64(f, LONG_WAIT, &v);
        if (rc != CF_OK) {
            cf_error e;
            cf_exception(f, 0, &e);
            fprintf(stderr, "task %d: %s: %s\n", i, cf_err_name(rc), e.message);
        }
        ASSERT_OK(rc);
        ASSERT_EQ(v, i + 1);
        cf_future_release(f);
    }
}

/* ------------------------------------------------------------------------ */
/* Item 4: the executable deleted or replaced while a pool runs              */
/* ------------------------------------------------------------------------ */

/* In a copy of this program: delete the copy, then replace it with another
 * program, while a pool that starts a new worker per task runs. */
static void child_exe_deleted_then_replaced(void)
{
    if (!in_child())
        return;
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    ASSERT(n > 0);
    self[n] = '\0';
    cf_executor *ex = cf_process_pool(
        &(cf_process_pool_opts){.max_workers = 1, .max_tasks_per_child = 1});
    ASSERT(ex != NULL);
    run_tasks(ex, 2);
    ASSERT_EQ(unlink(self), 0); /* a reinstall */
    run_tasks(ex, 3);
    copy_file("/bin/true", self); /* a rebuild: another program there */
    run_tasks(ex, 3);
    cf_executor_free(ex);
    /* A pool created after the replacement still runs this image. */
    ex = procs(2);
    run_tasks(ex, 4);
    cf_executor_free(ex);
}

static void test_exe_deleted_then_replaced(void)
{
    tmpdir d;
    tmpdir_init(&d);
    char copy[128], self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    ASSERT(n > 0);
    self[n] = '\0';
    tmpdir_file(&d, "prog", copy, sizeof copy);
    copy_file(self, copy);
    int st = run_child(copy, NULL, "child_exe_deleted_then_replaced");
    ASSERT(WIFEXITED(st));
    ASSERT_EQ(WEXITSTATUS(st), 0);
    tmpdir_destroy(&d);
}

/* ------------------------------------------------------------------------ */
/* Item 6: a program started through the dynamic loader                      */
/* ------------------------------------------------------------------------ */

static void child_through_loader(void)
{
    if (!in_child())
        return;
    cf_executor *ex = procs(2);
    run_tasks(ex, 6);
    cf_executor_free(ex);
}

static void child_noop(void)
{
}

/* The loader this program was started with: the file mapped at AT_BASE. */
static bool loader_path(char *out, size_t len)
{
    uintptr_t base = getauxval(AT_BASE);
    FILE *maps = fopen("/proc/self/maps", "re");
    ASSERT(maps != NULL);
    bool found = false;
    char line[PATH_MAX + 128];
    while (!found && base != 0 && fgets(line, sizeof line, maps) != NULL) {
        unsigned long lo, hi;
        int at = 0;
        if (sscanf(line, "%lx-%lx %*s %*s %*s %*s %n", &lo, &hi, &at) < 2 ||
            at == 0 || base < lo || base >= hi || line[at] != '/')
            continue;
        line[strcspn(line, "\n")] = '\0';
        found = snprintf(out, len, "%s", line + at) < (int)len;
    }
    fclose(maps);
    return found;
}

/* `/lib64/ld-linux-x86-64.so.2 ./prog`: the workers were the loader with
 * no arguments, and the pool broke "in the initializer?".  They are now
 * started through the same loader. */
static void test_started_through_loader(void)
{
    char ld[PATH_MAX], self[PATH_MAX];
    ASSERT(loader_path(ld, sizeof ld));
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    ASSERT(n > 0);
    self[n] = '\0';
    int st = run_child(self, ld, "child_noop");
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        /* e.g. ThreadSanitizer, whose fixed memory layout a program
         * loaded by ld.so at another address does not fit */
        printf("# skipped: this build cannot run through %s at all\n", ld);
        return;
    }
    st = run_child(self, ld, "child_through_loader");
    ASSERT(WIFEXITED(st));
    ASSERT_EQ(WEXITSTATUS(st), 0);
}

/* ------------------------------------------------------------------------ */
/* Item 5: a parent that handles SIGCHLD itself                               */
/* ------------------------------------------------------------------------ */

static void segv_task(cf_call *c)
{
    (void)c;
    raise(SIGSEGV);
}

static void exit3_task(cf_call *c)
{
    (void)c;
    _exit(3);
}

static void *reaper(void *arg)
{
    atomic_bool *stop = arg;
    while (!atomic_load(stop)) {
        int st;
        if (waitpid(-1, &st, WNOHANG) <= 0)
            sched_yield();
    }
    return NULL;
}

/* The failure of a task that died as `fn` does, in a fresh pool. */
static void crash_message(cf_task_fn fn, char *msg, size_t len)
{
    cf_executor *ex = procs(1);
    cf_future *f = cf_submit(ex, fn, NULL, 0);
    ASSERT(f != NULL);
    ASSERT_ST(cf_result(f, LONG_WAIT, NULL, NULL), CF_ECRASHED);
    cf_error e;
    ASSERT_OK(cf_exception(f, 0, &e));
    snprintf(msg, len, "%s", e.message);
    cf_future_release(f);
    run_tasks(ex, 2); /* and the pool goes on */
    cf_executor_free(ex);
}

/* SIGCHLD ignored (children reaped by the kernel) or a waitpid(-1) reaper
 * thread: the worker's exit status is lost, and a SIGSEGV was reported as
 * "exited with status 0".  The signal now comes from the worker itself;
 * an _exit whose status is lost is said to be unknown. */
static void test_sigchld_handled_by_the_program(void)
{
    char msg[512];
    struct sigaction ign = {.sa_handler = SIG_IGN}, old;
    sigemptyset(&ign.sa_mask);
    ASSERT_EQ(sigaction(SIGCHLD, &ign, &old), 0);
    crash_message(segv_task, msg, sizeof msg);
    if (strstr(msg, "signal 11") == NULL)
        fprintf(stderr, "message: %s\n", msg);
    ASSERT(strstr(msg, "signal 11") != NULL);
    crash_message(exit3_task, msg, sizeof msg);
    if (strstr(msg, "status 0") != NULL || strstr(msg, "unavailable") == NULL)
        fprintf(stderr, "message: %s\n", msg);
    ASSERT(strstr(msg, "status 0") == NULL);
    ASSERT(strstr(msg, "unavailable") != NULL);
    ASSERT_EQ(sigaction(SIGCHLD, &old, NULL), 0);

    /* A reaper thread: whoever reaps, the message is right. */
    atomic_bool stop = false;
    pthread_t t;
    ASSERT_EQ(pthread_create(&t, NULL, reaper, &stop), 0);
    for (int i = 0; i < 3; i++) {
        crash_message(segv_task, msg, sizeof msg);
        ASSERT(strstr(msg, "signal 11") != NULL);
        crash_message(exit3_task, msg, sizeof msg);
        if (strstr(msg, "status 3") == NULL &&
            strstr(msg, "unavailable") == NULL)
            fprintf(stderr, "message: %s\n", msg);
        ASSERT(strstr(msg, "status 3") != NULL ||
               strstr(msg, "unavailable") != NULL);
    }
    atomic_store(&stop, true);
    pthread_join(t, NULL);
}

/* ------------------------------------------------------------------------ */
/* Item 7: what a task's children inherit, and how they end                  */
/* ------------------------------------------------------------------------ */

/* How many descriptors above 2 a program this task started would inherit
 * (those without FD_CLOEXEC). */
static void inheritable_fds(cf_call *c)
{
    DIR *d = opendir("/proc/self/fd");
    if (d == NULL) {
        cf_raise(c, 1, "no /proc/self/fd");
        return;
    }
    int64_t n = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        int fd = atoi(e->d_name);
        if (fd > 2 && fd != dirfd(d) && !(fcntl(fd, F_GETFD) & FD_CLOEXEC))
            n++;
    }
    closedir(d);
    cf_return_i64(c, n);
}

static void test_task_children_get_no_fds(void)
{
    cf_executor *ex = procs(1);
    cf_future *f = cf_submit(ex, inheritable_fds, NULL, 0);
    int64_t n = -1;
    ASSERT_OK(cf_result_i64(f, LONG_WAIT, &n));
    ASSERT_EQ(n, 0);
    cf_future_release(f);
    cf_executor_free(ex);
}

/* Starts a grandchild that writes its pid to the file named by the
 * argument and waits forever; then waits forever itself. */
static void grandchild_then_hang(cf_call *c)
{
    const char *file = cf_arg_str(c);
    pid_t g = fork();
    if (g == 0) {
        FILE *out = fopen(file, "w");
        if (out != NULL) {
            fprintf(out, "%d\n", (int)getpid());
            fclose(out);
        }
        for (;;)
            pause();
    }
    for (;;)
        pause();
}

/* A task past its time limit is killed with what it started: a grandchild
 * survived before (the worker now leads its own process group). */
static void test_time_limit_kills_grandchildren(void)
{
    tmpdir d;
    tmpdir_init(&d);
    char file[128];
    tmpdir_file(&d, "grandchild", file, sizeof file);
    /* Orphans come to us, so that we can wait for the grandchild. */
    ASSERT_EQ(prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0), 0);
    cf_executor *ex = procs(1);
    cf_future *f = cf_submit_ex(ex, grandchild_then_hang, file,
                                strlen(file) + 1,
                                &(cf_task_opts){.time_limit = 0.3});
    ASSERT(f != NULL);
    ASSERT_ST(cf_result(f, LONG_WAIT, NULL, NULL), CF_ETIMEDOUT);
    cf_future_release(f);
    int gpid = 0;
    for (int i = 0; i < 1000 && gpid == 0; i++) { /* it wrote before */
        FILE *in = fopen(file, "r");
        if (in != NULL) {
            if (fscanf(in, "%d", &gpid) != 1)
                gpid = 0;
            fclose(in);
        }
        if (gpid == 0)
            usleep(10000);
    }
    ASSERT(gpid > 0);
    int st;
    ASSERT_EQ(waitpid(gpid, &st, 0), gpid); /* hangs if it survived */
    ASSERT(WIFSIGNALED(st));
    ASSERT_EQ(WTERMSIG(st), SIGKILL);
    run_tasks(ex, 2);
    cf_executor_free(ex);
    ASSERT_EQ(prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0), 0);
    tmpdir_destroy(&d);
}

/* ------------------------------------------------------------------------ */
/* Item 10: every task has its slice on the timeline, with its outcome       */
/* ------------------------------------------------------------------------ */

static void fail_task(cf_call *c)
{
    cf_raise(c, 7, "failed on purpose");
}

static void hang_task(cf_call *c)
{
    (void)c;
    for (;;)
        pause();
}

static int count_of(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = hay; (p = strstr(p, needle)) != NULL; p++)
        n++;
    return n;
}

static void test_timeline_has_crashed_tasks(void)
{
    tmpdir d;
    tmpdir_init(&d);
    char file[128];
    tmpdir_file(&d, "trace.json", file, sizeof file);
    ASSERT_OK(cf_trace_start(file));
    cf_executor *ex = procs(2);
    cf_future *fs[8];
    fs[0] = cf_submit_i64(ex, add_one, 1);
    fs[1] = cf_submit(ex, segv_task, NULL, 0);
    fs[2] = cf_submit(ex, exit3_task, NULL, 0);
    fs[3] = cf_submit_ex(ex, hang_task, NULL, 0,
                         &(cf_task_opts){.time_limit = 0.2});
    fs[4] = cf_submit(ex, fail_task, NULL, 0);
    fs[5] = cf_submit(ex, hang_task, NULL, 0);
    fs[6] = cf_submit_i64(ex, add_one, 2);
    fs[7] = cf_submit(ex, segv_task, NULL, 0);
    /* fs[5] hangs until killed: once it runs, kill it. */
    while (!cf_running(fs[5]))
        usleep(1000); /* polls a state, bounded by the test's timeout */
    ASSERT_OK(cf_kill_task(fs[5]));
    static const int want[8] = {CF_OK,        CF_ECRASHED, CF_ECRASHED,
                                CF_ETIMEDOUT, CF_ETASK,    CF_ECANCELLED,
                                CF_OK,        CF_ECRASHED};
    for (int i = 0; i < 8; i++) {
        ASSERT(fs[i] != NULL);
        ASSERT_ST(cf_result(fs[i], LONG_WAIT, NULL, NULL), want[i]);
        cf_future_release(fs[i]);
    }
    cf_executor_free(ex);
    ASSERT_OK(cf_trace_stop());
    FILE *in = fopen(file, "r");
    ASSERT(in != NULL);
    static char json[1 << 16];
    size_t n = fread(json, 1, sizeof json - 1, in);
    fclose(in);
    json[n] = '\0';
    int slices = count_of(json, "\"ph\":\"X\"");
    if (slices != 8)
        fprintf(stderr, "%s\n", json);
    ASSERT_EQ(slices, 8);
    ASSERT_EQ(count_of(json, "\"status\":\"CF_ECRASHED\""), 3);
    ASSERT_EQ(count_of(json, "\"signal\":11"), 2);
    ASSERT_EQ(count_of(json, "\"code\":3"), 1);
    ASSERT_EQ(count_of(json, "\"status\":\"CF_ETIMEDOUT\""), 1);
    ASSERT_EQ(count_of(json, "\"status\":\"CF_ECANCELLED\""), 1);
    ASSERT_EQ(count_of(json, "\"status\":\"CF_OK\""), 2);
    tmpdir_destroy(&d);
}

/* ------------------------------------------------------------------------ */
/* Arguments are aligned (found by UBSan: a struct read through cf_arg)      */
/* ------------------------------------------------------------------------ */

static void arg_misalignment(cf_call *c)
{
    cf_return_i64(c, (int64_t)((uintptr_t)cf_arg(c, NULL) % 8));
}

static void test_args_are_aligned(void)
{
    cf_executor *ex = procs(2);
    unsigned char buf[64] = {0};
    cf_future *fs[40];
    for (int i = 0; i < 40; i++)
        ASSERT((fs[i] = cf_submit(ex, arg_misalignment, buf, 1 + (size_t)i)) !=
               NULL);
    for (int i = 0; i < 40; i++) {
        int64_t v = -1;
        ASSERT_OK(cf_result_i64(fs[i], LONG_WAIT, &v));
        ASSERT_EQ(v, 0);
        cf_future_release(fs[i]);
    }
    /* Items of a chunked map, of odd sizes, one after another. */
    cf_map *m = cf_map_array(ex, arg_misalignment, buf, 3, 21,
                             &(cf_map_opts){.chunksize = 7});
    ASSERT(m != NULL);
    int64_t v;
    int n = 0, rc;
    while ((rc = cf_map_next_i64(m, &v)) == CF_OK) {
        ASSERT_EQ(v, 0);
        n++;
    }
    ASSERT_ST(rc, CF_END);
    ASSERT_EQ(n, 21);
    cf_map_free(m);
    cf_executor_free(ex);
}

TEST_MAIN(T(test_relative_dlopen_then_chdir),
          T(test_unloadable_module_names_path),
          T(test_exe_deleted_then_replaced), T(test_started_through_loader),
          T(test_sigchld_handled_by_the_program),
          T(test_task_children_get_no_fds),
          T(test_time_limit_kills_grandchildren),
          T(test_timeline_has_crashed_tasks), T(test_args_are_aligned),
          /* run only as children of the tests above */
          T(child_exe_deleted_then_replaced), T(child_through_loader),
          T(child_noop))

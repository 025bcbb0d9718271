/*
 * test-process-env.c -- the process pool and the program's environment
 * (issue 13, items 4 to 8): modules loaded by a relative path, the
 * executable deleted or replaced while a pool runs, a parent that handles
 * SIGCHLD itself, a program started through the loader, and what a task's
 * own children inherit and how they end.
 */
#define LIVENESS 30.0
#include "fgate.h"

#include <dlfcn.h>
#include <libgen.h>
#include <limits.h>

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

TEST_MAIN(T(test_relative_dlopen_then_chdir),
          T(test_unloadable_module_names_path))

/*
 * plugin-task.c -- a task in a module the tests load with dlopen, to check
 * that a process pool finds it in its workers (test-process-env.c).
 */
#include "cfutures.h"

void cf_test_plugin_task(cf_call *c);

void cf_test_plugin_task(cf_call *c)
{
    cf_return_i64(c, cf_arg_i64(c) * 3);
}

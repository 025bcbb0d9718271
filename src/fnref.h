/*
 * fnref.h -- checked references to task functions across processes
 * (fnref.c explains the scheme).
 */
#ifndef CF_FNREF_H
#define CF_FNREF_H

#include "wire.h"

/* A reference to fn, valid while its module stays loaded (the strings point
 * into the dynamic loader's memory, or fnref.c's cache of absolute paths
 * for modules loaded by a relative path).  CF_EINVAL if fn is in no loaded
 * module's executable segment. */
CF_HIDDEN int cf__fnref_make(cf_task_fn fn, cf_fnref *out);

/* Resolves ref in this process after checking module (by build-id, or by
 * name for a module without one), build-id and segment (dlopen'ing the
 * module by its absolute path if the parent had it loaded and we do not).
 * CF_OK, or CF_EINVAL with a message in err that names the module. */
CF_HIDDEN int cf__fnref_resolve(const cf_fnref *ref, cf_task_fn *fn, char *err,
                                size_t errlen);

/* The symbol name of fn for messages ("sum_to"), or its address. */
CF_HIDDEN const char *cf__fn_name(cf_task_fn fn, char *buf, size_t len);

/* The path of the file mapped at addr in this process (/proc/self/maps);
 * false if none (or it does not fit in len). */
CF_HIDDEN bool cf__mapped_path(uintptr_t addr, char *out, size_t len);

/* The environment variable that turns a process into a worker (worker.c). */
CF_HIDDEN extern const char cf__worker_env[];

#endif

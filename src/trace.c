/*
 * trace.c -- the timeline: when each task was queued, started and ended,
 * on which worker, written as a Trace Event JSON file that Perfetto
 * (ui.perfetto.dev) and chrome://tracing open.
 *
 * Off by default; on with CFUTURES_TRACE=path in the environment (written
 * at exit) or cf_trace_start / cf_trace_stop.  When off, a task pays one
 * relaxed load of a global flag at submit and one at start.
 */
#include "fnref.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

_Atomic bool cf__trace_on;

typedef struct event {
    cf_task_fn fn;
    int ex_id;
    const char *ex_kind;
    long tid; /* worker: thread index, or worker process pid */
    uint64_t queued, start, end; /* ns, CLOCK_MONOTONIC */
    int status;
    int code; /* < 0: killed by signal -code; > 0: exit code or error code */
} event;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static event *events;
static size_t nevents, cap;
static char *path;
static uint64_t epoch; /* ns at start: timestamps are relative to it */

void cf__trace_task(const cf_executor *ex, long tid, cf_task_fn fn,
                    uint64_t queued, uint64_t start, uint64_t end, int status)
{
    cf__trace_task_code(ex, tid, fn, queued, start, end, status, 0);
}

void cf__trace_task_code(const cf_executor *ex, long tid, cf_task_fn fn,
                         uint64_t queued, uint64_t start, uint64_t end,
                         int status, int code)
{
    pthread_mutex_lock(&lock);
    if (atomic_load(&cf__trace_on)) {
        if (nevents == cap) {
            size_t ncap = cap ? cap * 2 : 4096;
            event *n = realloc(events, ncap * sizeof *n);
            if (n == NULL) {
                pthread_mutex_unlock(&lock);
                return; /* the trace loses an event, the program goes on */
            }
            events = n;
            cap = ncap;
        }
        events[nevents++] =
            (event){fn,    ex->id, ex->vt->kind, tid, queued ? queued : start,
                    start, end,    status,       code};
    }
    pthread_mutex_unlock(&lock);
}

static void json_string(FILE *out, const char *s)
{
    fputc('"', out);
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            fprintf(out, "\\%c", ch);
        else if (ch < 0x20)
            fprintf(out, "\\u%04x", ch);
        else
            fputc(ch, out);
    }
    fputc('"', out);
}

static double us(uint64_t ns)
{
    return ns > epoch ? (double)(ns - epoch) / 1000.0 : 0.0;
}

/* lock held */
static int write_file(void)
{
    FILE *out = fopen(path, "w");
    if (out == NULL)
        return CF_EINVAL;
    fprintf(out, "{\"displayTimeUnit\":\"ms\",\"traceEvents\":[\n");
    bool first = true;
    /* Name each executor (a "process" row group) and worker (a row). */
    typedef struct {
        int ex;
        long tid;
    } row;
    row *rows = NULL;
    size_t nrows = 0;
    for (size_t i = 0; i < nevents; i++) {
        event *e = &events[i];
        bool seen_ex = false, seen_row = false;
        for (size_t j = 0; j < nrows; j++) {
            seen_ex |= rows[j].ex == e->ex_id;
            seen_row |= rows[j].ex == e->ex_id && rows[j].tid == e->tid;
        }
        if (seen_row)
            continue;
        row *n = realloc(rows, (nrows + 1) * sizeof *n);
        if (n == NULL)
            break;
        rows = n;
        rows[nrows++] = (row){e->ex_id, e->tid};
        if (!seen_ex) {
            fprintf(out,
                    "%s{\"name\":\"process_name\",\"ph\":\"M\",\"pid\":%d,"
                    "\"args\":{\"name\":\"%s pool #%d\"}}",
                    first ? "" : ",\n", e->ex_id, e->ex_kind, e->ex_id);
            first = false;
        }
        fprintf(out,
                ",\n{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":%d,"
                "\"tid\":%ld,\"args\":{\"name\":\"%s %ld\"}}",
                e->ex_id, e->tid,
                strcmp(e->ex_kind, "thread") == 0 ? "thread" : "worker pid",
                e->tid);
    }
    free(rows);
    for (size_t i = 0; i < nevents; i++) {
        event *e = &events[i];
        char name[256];
        cf__fn_name(e->fn, name, sizeof name);
        fprintf(out, "%s{\"name\":", first ? "" : ",\n");
        first = false;
        json_string(out, name);
        fprintf(out,
                ",\"cat\":\"task\",\"ph\":\"X\",\"ts\":%.3f,\"dur\":%.3f,"
                "\"pid\":%d,\"tid\":%ld,\"args\":{\"queued_us\":%.3f,"
                "\"wait_us\":%.3f,\"status\":\"%s\"",
                us(e->start),
                e->end > e->start ? (double)(e->end - e->start) / 1e3 : 0.0,
                e->ex_id, e->tid, us(e->queued),
                e->start > e->queued ? (double)(e->start - e->queued) / 1e3
                                     : 0.0,
                cf_err_name(e->status));
        if (e->code < 0)
            fprintf(out, ",\"signal\":%d,\"signal_name\":\"%s\"", -e->code,
                    sigabbrev_np(-e->code) ? sigabbrev_np(-e->code) : "?");
        else if (e->code > 0)
            fprintf(out, ",\"code\":%d", e->code);
        fprintf(out, "}}");
    }
    fprintf(out, "\n]}\n");
    return fclose(out) == 0 ? CF_OK : CF_EINVAL;
}

int cf_trace_start(const char *file)
{
    if (file == NULL || *file == '\0')
        return CF_EINVAL;
    /* Say now, not at the end of the run, that the file cannot be
     * written (it is created empty, and written by cf_trace_stop). */
    FILE *probe = fopen(file, "w");
    if (probe == NULL)
        return CF_EINVAL;
    fclose(probe);
    char *copy = strdup(file);
    if (copy == NULL)
        return CF_ENOMEM;
    pthread_mutex_lock(&lock);
    free(path);
    path = copy;
    nevents = 0;
    epoch = cf__now_ns();
    atomic_store(&cf__trace_on, true);
    pthread_mutex_unlock(&lock);
    return CF_OK;
}

int cf_trace_stop(void)
{
    pthread_mutex_lock(&lock);
    if (!atomic_load(&cf__trace_on)) {
        pthread_mutex_unlock(&lock);
        return CF_ESTATE;
    }
    atomic_store(&cf__trace_on, false);
    int rc = write_file();
    free(events);
    events = NULL;
    nevents = cap = 0;
    free(path);
    path = NULL;
    pthread_mutex_unlock(&lock);
    return rc;
}

static void trace_at_exit(void)
{
    if (atomic_load(&cf__trace_on) && cf_trace_stop() == CF_EINVAL)
        fprintf(stderr, "cfutures: CFUTURES_TRACE: the timeline could not "
                        "be written\n");
}

__attribute__((constructor)) static void trace_from_env(void)
{
    const char *p = getenv("CFUTURES_TRACE");
    if (p == NULL || *p == '\0' || getenv(cf__worker_env) != NULL)
        return;
    if (cf_trace_start(p) == CF_OK)
        atexit(trace_at_exit);
    else /* one line, so that a typo in the path is not silent */
        fprintf(stderr,
                "cfutures: CFUTURES_TRACE=%s: cannot write it (%m); "
                "no timeline will be recorded\n",
                p);
}

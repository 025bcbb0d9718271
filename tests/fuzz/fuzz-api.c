/*
 * fuzz-api.c -- libFuzzer target for the public API.
 *
 * The input is a small program: the first byte configures a thread pool
 * (1-3 workers, sometimes a bounded queue that fails when full), then each
 * operation is an opcode byte followed by its operand bytes (missing bytes
 * read as 0).  At most MAX_OPS operations run per input.  Operations:
 *
 *   submit (tasks: arg+1, raise, spin a few us, spin checking
 *   cf_cancel_requested), new standalone future, complete a standalone
 *   future (set_running / set_result / set_exception), cancel,
 *   request_cancel, kill_task, result / exception with timeout 0 or
 *   <= 10 ms, add_done_callback (counting; some also submit work from the
 *   callback), cf_wait in each mode over a subset, as_completed over a
 *   subset (add, drain, next; often freed before the end), map over a few
 *   items (often freed early), then / when_all / when_any, shutdown (wait
 *   or not, cancel or not; or shutdown_within), release of a reference.
 *
 * Every future the program creates is recorded with two references: the
 * "user's" and the harness's.  Release drops one, then the other (the
 * future may then be freed while pending: continuations of it must end
 * with CF_EBROKEN).  No operation blocks unboundedly: every timeout is at
 * most 10 ms, and the only untimed waits (cf_map_next) are on pool tasks
 * that always end.
 *
 * Invariants, checked after the standalone futures are completed and
 * cf_executor_free returned:
 *   - every recorded future is done (none pending or running);
 *   - each done callback ran exactly once (and saw a done future);
 *   - a successful result of a task, a standalone future or a continuation
 *     is its argument + 1; when_any's result is a valid index;
 *   - the executor's counters add up with nothing queued or running;
 * and during the run: wait's done sets hold done futures only, and sets
 * add up; as_completed yields each future once and only done ones; map
 * results come in order and are item + 1.
 * Nothing may crash, leak, or hit undefined behaviour (ASan + UBSan).
 */
#include "cfutures.h"

#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

#define MAX_OPS 64
#define MAX_REC 96

#define CHECK(c)                                                               \
    do {                                                                       \
        if (!(c)) {                                                            \
            fprintf(stderr, "fuzz-api.c:%d: invariant failed: %s\n", __LINE__, \
                    #c);                                                       \
            abort();                                                           \
        }                                                                      \
    } while (0)

/* ------------------------------------------------------------------------ */
/* Tasks                                                                     */
/* ------------------------------------------------------------------------ */

static void spin_us(unsigned us)
{
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (;;) {
        clock_gettime(CLOCK_MONOTONIC, &b);
        long d = (b.tv_sec - a.tv_sec) * 1000000L +
                 (b.tv_nsec - a.tv_nsec) / 1000L;
        if (d >= (long)us)
            return;
    }
}

static void t_inc(cf_call *c)
{
    cf_return_i64(c, cf_arg_i64(c) + 1);
}

static void t_raise(cf_call *c)
{
    cf_raise(c, 7, "raised on %lld", (long long)cf_arg_i64(c));
}

static void t_spin(cf_call *c)
{
    spin_us(1 + (unsigned)(cf_arg_i64(c) & 7));
    cf_return_i64(c, cf_arg_i64(c) + 1);
}

/* Spins up to ~200 us; ends early, raising, when asked to stop. */
static void t_coop(cf_call *c)
{
    for (int i = 0; i < 40; i++) {
        if (cf_cancel_requested(c)) {
            cf_raise(c, 99, "stopped");
            return;
        }
        spin_us(5);
    }
    cf_return_i64(c, cf_arg_i64(c) + 1);
}

/* A continuation: the antecedent's int64 result + 1; raises when it ran
 * without one (CF_THEN_ALWAYS after a failure). */
static void t_then(cf_call *c)
{
    size_t len;
    cf_arg(c, &len);
    if (len != 8) {
        cf_raise(c, 3, "no antecedent result");
        return;
    }
    cf_return_i64(c, cf_arg_i64(c) + 1);
}

/* A map item: item + 1, except multiples of 5 raise. */
static void t_item(cf_call *c)
{
    int64_t v = cf_arg_i64(c);
    if (v % 5 == 0)
        cf_raise(c, 5, "item %lld", (long long)v);
    else
        cf_return_i64(c, v + 1);
}

static const cf_task_fn tasks[] = {t_inc, t_raise, t_spin, t_coop};

/* ------------------------------------------------------------------------ */
/* The interpreter's state                                                   */
/* ------------------------------------------------------------------------ */

enum kind { K_TASK, K_STANDALONE, K_THEN, K_WHEN_ALL, K_WHEN_ANY };

typedef struct rec {
    cf_future *f; /* NULL once both references were dropped */
    int refs;     /* ours: 2, then 1, then 0 */
    enum kind kind;
    bool raises;   /* a task that always raises */
    bool has_base; /* a successful result must be base + 1 */
    int64_t base;
    int64_t borrowed;  /* the argument, for CF_BORROW_ARG submits */
    size_t nin;        /* when_any: number of inputs */
    bool pending_drop; /* freed while not done (callbacks may never run) */
    int cb_expected;   /* callbacks registered */
    _Atomic int cb_count;
    _Atomic int cb_not_done; /* callbacks that saw a future not done */
} rec;

static rec recs[MAX_REC];
static size_t nrec;
static cf_executor *ex;
static _Atomic(cf_executor *) cb_ex; /* for callbacks that submit */
static _Atomic long cb_submits;
static unsigned long total_ops, total_inputs;

typedef struct input {
    const uint8_t *p;
    size_t n, i;
} input;

static unsigned byte(input *in)
{
    return in->i < in->n ? in->p[in->i++] : 0;
}

/* A live record chosen by b, or NULL. */
static rec *pick(unsigned b)
{
    size_t live = 0;
    for (size_t i = 0; i < nrec; i++)
        live += recs[i].f != NULL;
    if (live == 0)
        return NULL;
    size_t k = b % live;
    for (size_t i = 0; i < nrec; i++)
        if (recs[i].f != NULL && k-- == 0)
            return &recs[i];
    return NULL;
}

/* Up to 8 live futures chosen by a bit mask over the live records taken
 * from `start` (b2) on.  Duplicates are possible when bit 7 is set. */
static size_t pick_set(unsigned mask, unsigned start, cf_future **fs, rec **rs)
{
    size_t n = 0, live = 0;
    rec *l[MAX_REC];
    for (size_t i = 0; i < nrec; i++)
        if (recs[i].f != NULL)
            l[live++] = &recs[i];
    if (live == 0)
        return 0;
    for (unsigned bit = 0; bit < 7; bit++)
        if (mask & (1u << bit)) {
            rec *r = l[(start + bit) % live];
            fs[n] = r->f;
            if (rs)
                rs[n] = r;
            n++;
        }
    if ((mask & 0x80) && n > 0) { /* the first one again */
        fs[n] = fs[0];
        if (rs)
            rs[n] = rs[0];
        n++;
    }
    return n;
}

/* Records a new future: the creator's reference becomes the "user's",
 * and the harness takes a second one. */
static rec *record(cf_future *f, enum kind k)
{
    if (nrec == MAX_REC) { /* no room: give it back at once */
        cf_future_release(f);
        return NULL;
    }
    rec *r = &recs[nrec++];
    memset(r, 0, sizeof *r);
    r->f = cf_future_retain(f);
    r->refs = 2;
    r->kind = k;
    return r;
}

static double timeout_of(unsigned b)
{
    static const double t[] = {0, 0, 0, 0.0001, 0.001, 0.002, 0.005, 0.01};
    return t[b % 8];
}

static void check_done_result(rec *r)
{
    if (!r->has_base || cf_future_state(r->f) != CF_FINISHED)
        return;
    const void *d;
    size_t len;
    int st = cf_result(r->f, 0, &d, &len);
    if (st == CF_OK) {
        CHECK(!r->raises);
        CHECK(len == 8);
        int64_t v;
        memcpy(&v, d, 8);
        CHECK(v == r->base + 1);
    } else {
        CHECK(st != CF_ETIMEDOUT && st != CF_EINVAL);
    }
}

/* ------------------------------------------------------------------------ */
/* Callbacks                                                                 */
/* ------------------------------------------------------------------------ */

static void cb_count(cf_future *f, void *arg)
{
    rec *r = arg;
    if (!cf_done(f))
        atomic_fetch_add(&r->cb_not_done, 1);
    atomic_fetch_add(&r->cb_count, 1);
}

/* Counts, and submits a task from the callback (fire and forget). */
static void cb_submit(cf_future *f, void *arg)
{
    cb_count(f, arg);
    cf_executor *e = atomic_load(&cb_ex);
    if (e == NULL)
        return;
    cf_future *g = cf_submit_i64(e, t_inc, 1);
    if (g != NULL) {
        atomic_fetch_add(&cb_submits, 1);
        cf_future_release(g);
    }
}

/* Counts, and reads the result from inside the callback (never blocks:
 * the future is done). */
static void cb_read(cf_future *f, void *arg)
{
    cb_count(f, arg);
    const void *d;
    size_t len;
    int st = cf_result(f, CF_FOREVER, &d, &len);
    if (st == CF_ETIMEDOUT)
        abort();
    cf_error e;
    if (st != CF_ECANCELLED)
        CHECK(cf_exception(f, 0, &e) == CF_OK);
}

/* ------------------------------------------------------------------------ */
/* Operations                                                                */
/* ------------------------------------------------------------------------ */

static void op_submit(input *in)
{
    unsigned k = byte(in), a = byte(in);
    int64_t arg = (int8_t)a;
    cf_task_fn fn = tasks[k % 4];
    cf_task_opts o = {0};
    if (k & 0x10)
        o.flags |= CF_NOWAIT;
    if (nrec == MAX_REC)
        return;
    /* The record is set up before the submit: with CF_BORROW_ARG the
     * argument lives in it, which outlives the task. */
    rec *r = &recs[nrec];
    memset(r, 0, sizeof *r);
    r->borrowed = arg;
    cf_future *f;
    if (k & 0x20) {
        o.flags |= CF_BORROW_ARG;
        f = cf_submit_ex(ex, fn, &r->borrowed, 8, &o);
    } else if (k & 0x40) {
        f = cf_submit_ex(ex, fn, &arg, 8, &o);
    } else {
        f = cf_submit_i64(ex, fn, arg);
    }
    if (f == NULL) {
        int e = cf_last_error();
        CHECK(e == CF_ESHUTDOWN || e == CF_EFULL);
        return;
    }
    nrec++;
    r->f = f;
    r->refs = 2;
    cf_future_retain(f);
    r->kind = K_TASK;
    r->has_base = true;
    r->base = arg;
    r->raises = fn == t_raise;
}

static void op_new(input *in)
{
    unsigned b = byte(in);
    cf_future *f = cf_future_new();
    CHECK(f != NULL);
    rec *r = record(f, K_STANDALONE);
    if (r == NULL)
        return;
    r->has_base = true;
    r->base = (int8_t)b;
    CHECK(cf_future_state(r->f) == CF_PENDING);
}

static void op_complete(input *in)
{
    unsigned b = byte(in);
    rec *r = pick(byte(in));
    if (r == NULL || r->kind != K_STANDALONE)
        return;
    cf_state s = cf_future_state(r->f);
    int st;
    switch (b % 4) {
    case 0:
        st = cf_set_running_or_notify_cancel(r->f);
        if (s == CF_PENDING)
            CHECK(st == CF_OK && cf_running(r->f));
        else if (s == CF_CANCELLED)
            CHECK(st == CF_ECANCELLED);
        else
            CHECK(st == CF_ESTATE);
        break;
    case 1:
    case 2:
        st = cf_set_result_i64(r->f, r->base + 1);
        CHECK(st == (s == CF_PENDING || s == CF_RUNNING ? CF_OK : CF_ESTATE));
        break;
    default:
        st = cf_set_exception(r->f, (int)b, "set %u", b);
        CHECK(st == (s == CF_PENDING || s == CF_RUNNING ? CF_OK : CF_ESTATE));
        break;
    }
    if (st == CF_OK && b % 4 != 0)
        CHECK(cf_done(r->f));
}

static void op_cancel(input *in)
{
    unsigned how = byte(in);
    rec *r = pick(byte(in));
    if (r == NULL)
        return;
    switch (how % 3) {
    case 0:
        if (cf_cancel(r->f))
            CHECK(cf_cancelled(r->f) && cf_done(r->f));
        break;
    case 1:
        if (cf_request_cancel(r->f))
            CHECK(cf_cancelled(r->f) && cf_done(r->f));
        break;
    default: {
        int st = cf_kill_task(r->f);
        CHECK(st == CF_OK || st == CF_ESTATE || st == CF_EINVAL);
        if (st == CF_OK)
            CHECK(cf_done(r->f));
        break;
    }
    }
}

static void op_result(input *in)
{
    unsigned how = byte(in);
    rec *r = pick(byte(in));
    if (r == NULL)
        return;
    double t = timeout_of(how);
    if (how & 8) {
        cf_error e;
        int st = cf_exception(r->f, t, &e);
        if (st == CF_OK) {
            CHECK(cf_done(r->f) && !cf_cancelled(r->f));
            CHECK(e.message != NULL);
            if (r->raises)
                CHECK(e.status == CF_ETASK && e.code == 7);
        } else if (st == CF_ECANCELLED) {
            CHECK(cf_cancelled(r->f));
        } else {
            CHECK(st == CF_ETIMEDOUT);
        }
        return;
    }
    const void *d;
    size_t len;
    int st = cf_result(r->f, t, &d, &len);
    if (st == CF_ETIMEDOUT) {
        return; /* may have completed just after */
    }
    CHECK(cf_done(r->f));
    if (st == CF_ECANCELLED)
        CHECK(cf_cancelled(r->f));
    check_done_result(r);
    if (r->kind == K_WHEN_ALL && st == CF_OK)
        CHECK(len == 0);
    if (r->kind == K_WHEN_ANY && st == CF_OK) {
        int64_t v;
        CHECK(len == 8);
        memcpy(&v, d, 8);
        CHECK(r->nin == 0 ? v == -1 : v >= 0 && (size_t)v < r->nin);
    }
}

static void op_callback(input *in)
{
    unsigned how = byte(in);
    rec *r = pick(byte(in));
    if (r == NULL)
        return;
    static const cf_done_fn fns[] = {cb_count, cb_count, cb_submit, cb_read};
    r->cb_expected++;
    int st = cf_add_done_callback(r->f, fns[how % 4], r);
    CHECK(st == CF_OK);
}

static void op_wait(input *in)
{
    unsigned how = byte(in), mask = byte(in), start = byte(in);
    cf_future *fs[8], *done[8], *not_done[8];
    size_t n = pick_set(mask, start, fs, NULL);
    size_t nd = 99, nn = 99;
    cf_return_when rw = (cf_return_when)(1 + how % 3);
    int st = cf_wait(fs, n, timeout_of(how >> 2), rw, done, &nd, not_done, &nn);
    CHECK(st == CF_OK || st == CF_ETIMEDOUT);
    size_t distinct = 0;
    for (size_t i = 0; i < n; i++) {
        bool dup = false;
        for (size_t j = 0; j < i; j++)
            dup |= fs[j] == fs[i];
        distinct += !dup;
    }
    CHECK(nd + nn == distinct);
    for (size_t i = 0; i < nd; i++)
        CHECK(cf_done(done[i]));
    if (st == CF_OK && rw == CF_ALL_COMPLETED)
        CHECK(nn == 0);
    if (st == CF_OK && rw == CF_FIRST_COMPLETED && n > 0)
        CHECK(nd > 0);
    if (n == 0)
        CHECK(st == CF_OK);
}

static void op_as_completed(input *in)
{
    unsigned how = byte(in), mask = byte(in), start = byte(in);
    cf_future *fs[8];
    rec *rs[8];
    size_t n = pick_set(mask, start, fs, rs);
    size_t split = how & 1 ? n / 2 : n;
    cf_as_completed *it = cf_as_completed_new(fs, split, timeout_of(how >> 1));
    CHECK(it != NULL);
    if (split < n)
        CHECK(cf_as_completed_add(it, fs + split, n - split) == CF_OK);
    size_t distinct = 0;
    for (size_t i = 0; i < n; i++) {
        bool dup = false;
        for (size_t j = 0; j < i; j++)
            dup |= fs[j] == fs[i];
        distinct += !dup;
    }
    CHECK(cf_as_completed_pending(it) == distinct);
    cf_future *seen[8];
    size_t nseen = 0;
    unsigned take = (how >> 4) % 10; /* 9: until the end */
    if (how & 0x40) {
        nseen = cf_as_completed_drain(it, seen, 8);
        CHECK(nseen <= distinct);
        for (size_t i = 0; i < nseen; i++)
            CHECK(cf_done(seen[i]));
    }
    for (unsigned k = 0; take == 9 || k < take; k++) {
        cf_future *f = NULL;
        int st = cf_as_completed_next(it, &f);
        if (st == CF_END) {
            CHECK(nseen == distinct);
            break;
        }
        if (st == CF_ETIMEDOUT)
            break;
        CHECK(st == CF_OK);
        CHECK(f != NULL && cf_done(f));
        bool member = false;
        for (size_t i = 0; i < n; i++)
            member |= fs[i] == f;
        CHECK(member);
        for (size_t i = 0; i < nseen; i++)
            CHECK(seen[i] != f);
        CHECK(nseen < 8);
        seen[nseen++] = f;
    }
    CHECK(cf_as_completed_pending(it) == distinct - nseen);
    cf_as_completed_free(it);
}

static void op_map(input *in)
{
    unsigned how = byte(in), a = byte(in), b = byte(in);
    size_t n = a % 6;
    int64_t items[6];
    for (size_t i = 0; i < n; i++)
        items[i] = (int64_t)(int8_t)b + (int64_t)i;
    cf_map_opts o = {0};
    o.continue_on_error = how & 1;
    o.chunksize = (how >> 1) & 3;
    o.buffersize = (how & 8) ? 1 : (how & 0x80) ? SIZE_MAX : 0;
    o.timeout = (how & 0x10) ? 0.01 : 0;
    cf_map *m = cf_map_i64(ex, t_item, items, n, &o);
    if (m == NULL) {
        CHECK(cf_last_error() == CF_ESHUTDOWN || cf_last_error() == CF_EFULL);
        return;
    }
    size_t take = (how >> 5) & 3 ? ((how >> 5) & 3) - 1 : n + 1;
    for (size_t i = 0; i < take; i++) {
        cf_future *f = NULL;
        int st = cf_map_next(m, &f);
        if (st == CF_END)
            break;
        if (st == CF_ETIMEDOUT) /* the map's own timeout (10 ms) */
            break;
        CHECK(i < n);
        CHECK(f != NULL && cf_done(f));
        if (st == CF_OK) {
            int64_t v;
            CHECK(cf_result_i64(f, 0, &v) == CF_OK);
            CHECK(items[i] % 5 != 0);
            CHECK(v == items[i] + 1);
        } else if (st == CF_ETASK) {
            cf_error e;
            CHECK(cf_exception(f, 0, &e) == CF_OK);
            CHECK(e.code == 5 && items[i] % 5 == 0);
        } else {
            /* The executor was shut down under the map (its queue
             * cancelled), or its bounded queue was full. */
            CHECK(st == CF_ESHUTDOWN || st == CF_ECANCELLED || st == CF_EFULL);
        }
        if (st != CF_OK && !o.continue_on_error) {
            CHECK(cf_map_next(m, NULL) == CF_END);
            break;
        }
    }
    cf_map_free(m);
}

static void op_then(input *in)
{
    unsigned how = byte(in);
    rec *r = pick(byte(in));
    if (r == NULL)
        return;
    bool chained = r->has_base;
    int64_t base = r->base + 1;
    cf_future *f = cf_then(r->f, how & 1 ? ex : NULL, t_then,
                           how & 2 ? CF_THEN_ALWAYS : 0);
    CHECK(f != NULL);
    rec *t = record(f, K_THEN);
    if (t == NULL)
        return;
    t->has_base = chained;
    t->base = base;
}

static void op_when(input *in, bool any)
{
    unsigned mask = byte(in), start = byte(in);
    cf_future *fs[8];
    size_t n = pick_set(mask, start, fs, NULL);
    cf_future *f = any ? cf_when_any(fs, n) : cf_when_all(fs, n);
    CHECK(f != NULL);
    if (n == 0)
        CHECK(cf_done(f));
    rec *r = record(f, any ? K_WHEN_ANY : K_WHEN_ALL);
    if (r != NULL)
        r->nin = n;
}

static void op_shutdown(input *in)
{
    unsigned how = byte(in);
    if (how & 4) {
        int st = cf_shutdown_within(ex, timeout_of(how));
        CHECK(st == CF_OK || st == CF_ETIMEDOUT);
    } else {
        CHECK(cf_shutdown(ex, how & 1, how & 2) == CF_OK);
    }
    CHECK(cf_submit_i64(ex, t_inc, 0) == NULL);
    CHECK(cf_last_error() == CF_ESHUTDOWN);
}

static void drop_ref(rec *r)
{
    if (r->refs == 1 && !cf_done(r->f))
        r->pending_drop = true;
    cf_future *f = r->f;
    if (--r->refs == 0)
        r->f = NULL;
    cf_future_release(f);
}

static void op_release(input *in)
{
    rec *r = pick(byte(in));
    if (r != NULL)
        drop_ref(r);
}

static void op_state(input *in)
{
    rec *r = pick(byte(in));
    if (r == NULL)
        return;
    cf_state s = cf_future_state(r->f);
    CHECK(s >= CF_PENDING && s <= CF_CANCELLED);
    char buf[160];
    CHECK(cf_describe(r->f, buf, sizeof buf) == buf);
    CHECK(strlen(buf) < sizeof buf);
    cf_stats st;
    CHECK(cf_executor_stats(ex, &st) == CF_OK);
}

/* ------------------------------------------------------------------------ */
/* The end: settle, free, check                                              */
/* ------------------------------------------------------------------------ */

static void finish(void)
{
    /* Standalone futures are completed by us: do it now, so that every
     * continuation of theirs fires while the executor still exists. */
    for (size_t i = 0; i < nrec; i++) {
        rec *r = &recs[i];
        if (r->f != NULL && r->kind == K_STANDALONE && !cf_done(r->f))
            CHECK(cf_set_result_i64(r->f, r->base + 1) == CF_OK);
    }
    /* Wait for everything, read the counters, free. */
    CHECK(cf_shutdown(ex, true, false) == CF_OK);
    cf_stats st;
    CHECK(cf_executor_stats(ex, &st) == CF_OK);
    atomic_store(&cb_ex, NULL);
    cf_executor_free(ex);
    ex = NULL;
    CHECK(st.queued == 0 && st.running == 0);
    CHECK(st.submitted == st.done + st.failed + st.crashed + st.cancelled);
    CHECK(st.crashed == 0);

    for (size_t i = 0; i < nrec; i++) {
        rec *r = &recs[i];
        int cbs = atomic_load(&r->cb_count);
        CHECK(atomic_load(&r->cb_not_done) == 0);
        if (r->f == NULL) {
            /* Freed by us.  A standalone future freed while pending
             * never completes (nobody else held it): its callbacks never
             * ran.  Everything else completed (its executor, or the
             * continuation machinery, held it). */
            if (r->pending_drop && r->kind == K_STANDALONE)
                CHECK(cbs == 0);
            else
                CHECK(cbs == r->cb_expected);
            continue;
        }
        cf_state s = cf_future_state(r->f);
        if (s != CF_FINISHED && s != CF_CANCELLED) {
            char buf[200];
            fprintf(stderr, "record %zu (kind %d) not done: %s\n", i,
                    (int)r->kind, cf_describe(r->f, buf, sizeof buf));
        }
        CHECK(s == CF_FINISHED || s == CF_CANCELLED);
        CHECK(cf_done(r->f) && !cf_running(r->f));
        if (cbs != r->cb_expected)
            fprintf(stderr,
                    "record %zu (kind %d): %d callbacks ran, %d "
                    "registered\n",
                    i, (int)r->kind, cbs, r->cb_expected);
        CHECK(cbs == r->cb_expected);
        check_done_result(r);
        if (r->kind == K_WHEN_ANY && s == CF_FINISHED) {
            int64_t v;
            int rc = cf_result_i64(r->f, 0, &v);
            if (rc == CF_OK)
                CHECK(r->nin == 0 ? v == -1 : v >= 0 && (size_t)v < r->nin);
            else
                CHECK(rc == CF_EBROKEN);
        }
        if (r->kind == K_WHEN_ALL && s == CF_FINISHED) {
            int rc = cf_result(r->f, 0, NULL, NULL);
            CHECK(rc == CF_OK || rc == CF_EBROKEN);
        }
        while (r->refs > 0)
            drop_ref(r);
    }
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    cf_set_default_error_hook(NULL, NULL); /* unread errors are expected */
    return 0;
}

static void report(void)
{
    fprintf(stderr,
            "# fuzz-api: %lu inputs, %lu operations, %ld submits "
            "from callbacks\n",
            total_inputs, total_ops, atomic_load(&cb_submits));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static bool reg;
    if (!reg) {
        reg = true;
        atexit(report);
    }
    input in = {data, size, 0};
    unsigned cfg = byte(&in);
    cf_thread_pool_opts o = {.max_workers = 1 + (int)(cfg % 3)};
    if (cfg & 4) {
        o.max_queued = 1 + ((cfg >> 3) & 3);
        o.fail_when_full = true; /* a blocking submit from a callback on a
                                    pool thread could wait forever */
    }
    ex = cf_thread_pool(&o);
    CHECK(ex != NULL);
    atomic_store(&cb_ex, (cfg & 0x80) ? ex : NULL);
    nrec = 0;
    total_inputs++;
    for (int ops = 0; ops < MAX_OPS && in.i < in.n; ops++) {
        total_ops++;
        switch (byte(&in) % 16) {
        case 0:
        case 1:
            op_submit(&in);
            break;
        case 2:
            op_new(&in);
            break;
        case 3:
            op_complete(&in);
            break;
        case 4:
            op_cancel(&in);
            break;
        case 5:
            op_result(&in);
            break;
        case 6:
            op_callback(&in);
            break;
        case 7:
            op_wait(&in);
            break;
        case 8:
            op_as_completed(&in);
            break;
        case 9:
            op_map(&in);
            break;
        case 10:
            op_then(&in);
            break;
        case 11:
            op_when(&in, false);
            break;
        case 12:
            op_when(&in, true);
            break;
        case 13:
            op_shutdown(&in);
            break;
        case 14:
            op_release(&in);
            break;
        default:
            op_state(&in);
            break;
        }
    }
    finish();
    return 0;
}

/*
 * wait.c -- cf_wait and cf_as_completed over any mix of futures.
 *
 * Each call installs one listener per distinct pending future (one
 * allocation for all of them), sleeps on a condition variable until the
 * listeners say enough happened, and removes every listener it installed
 * before returning, so long-lived futures collect no dead waiters.  Cost is
 * linear in the number of futures; nothing polls.
 *
 * A pool thread sleeps through its pool's helper instead (internal.h), so
 * it runs queued tasks of its pool while it waits.
 */
#include "internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

/* ------------------------------------------------------------------------ */
/* A set of pointers (open addressing), for "the same future counts once"    */
/* ------------------------------------------------------------------------ */

typedef struct ptrset {
    const void **slots;
    size_t cap; /* power of two, or 0 */
    size_t count;
} ptrset;

static size_t ptr_hash(const void *p)
{
    return (size_t)(((uintptr_t)p >> 4) * 0x9E3779B97F4A7C15ull >> 17);
}

static int ptrset_reserve(ptrset *s, size_t n)
{
    if ((n + 1) * 2 <= s->cap)
        return CF_OK;
    size_t cap = 16;
    while (cap < (n + 1) * 2)
        cap <<= 1;
    const void **slots = calloc(cap, sizeof *slots);
    if (slots == NULL)
        return CF_ENOMEM;
    for (size_t i = 0; i < s->cap; i++) {
        const void *p = s->slots[i];
        if (p == NULL)
            continue;
        size_t j = ptr_hash(p) & (cap - 1);
        while (slots[j] != NULL)
            j = (j + 1) & (cap - 1);
        slots[j] = p;
    }
    free(s->slots);
    s->slots = slots;
    s->cap = cap;
    return CF_OK;
}

/* Inserts p (room must be reserved); false if it was already there. */
static bool ptrset_add(ptrset *s, const void *p)
{
    size_t j = ptr_hash(p) & (s->cap - 1);
    while (s->slots[j] != NULL) {
        if (s->slots[j] == p)
            return false;
        j = (j + 1) & (s->cap - 1);
    }
    s->slots[j] = p;
    s->count++;
    return true;
}

/* Removes duplicates from fs[0..n) into out (input order kept).  Small
 * inputs are compared pairwise, larger ones go through a hash set. */
static int dedupe(cf_future *const *fs, size_t n, cf_future **out, size_t *nout)
{
    size_t k = 0;
    if (n <= 16) {
        for (size_t i = 0; i < n; i++) {
            size_t j = 0;
            while (j < k && out[j] != fs[i])
                j++;
            if (j == k)
                out[k++] = fs[i];
        }
    } else {
        ptrset s = {0};
        if (ptrset_reserve(&s, n) != CF_OK)
            return CF_ENOMEM;
        for (size_t i = 0; i < n; i++)
            if (ptrset_add(&s, fs[i]))
                out[k++] = fs[i];
        free(s.slots);
    }
    *nout = k;
    return CF_OK;
}

/* ------------------------------------------------------------------------ */
/* The sleeping side, shared by cf_wait and cf_as_completed                  */
/* ------------------------------------------------------------------------ */

typedef struct waiter {
    pthread_mutex_t lock;
    pthread_cond_t cv;
    cf_helper *helper; /* set under lock while a pool thread sleeps */
    _Atomic uint64_t events;
} waiter;

static int waiter_init(waiter *w)
{
    if (pthread_mutex_init(&w->lock, NULL) != 0)
        return CF_ENOMEM;
    if (cf__cond_init(&w->cv) != 0) {
        pthread_mutex_destroy(&w->lock);
        return CF_ENOMEM;
    }
    w->helper = NULL;
    atomic_init(&w->events, 0);
    return CF_OK;
}

static void waiter_fini(waiter *w)
{
    pthread_mutex_destroy(&w->lock);
    pthread_cond_destroy(&w->cv);
}

/* w->lock held: something changed; wake the sleeper. */
static void waiter_wake_locked(waiter *w)
{
    atomic_fetch_add_explicit(&w->events, 1, memory_order_release);
    pthread_cond_signal(&w->cv);
    cf_helper *h = w->helper;
    if (h != NULL) {
        /* Lock order: stripe -> waiter -> pool (we never hold the pool
         * lock and then take a waiter's). */
        pthread_mutex_lock(h->lock);
        pthread_cond_broadcast(h->cv);
        pthread_mutex_unlock(h->lock);
    }
}

/* w->lock held: sleeps once until woken or the deadline; returns 0 or
 * ETIMEDOUT.  On a pool thread, runs queued tasks of its pool meanwhile. */
static int waiter_sleep_locked(waiter *w, const cf_deadline *d)
{
    cf_helper *h = cf__current_helper;
    if (h == NULL)
        return cf__cond_wait(&w->cv, &w->lock, d);
    uint64_t seen = atomic_load_explicit(&w->events, memory_order_acquire);
    w->helper = h;
    pthread_mutex_unlock(&w->lock);
    int rc = 0;
    pthread_mutex_lock(h->lock);
    while (atomic_load_explicit(&w->events, memory_order_acquire) == seen) {
        if (h->run_one_locked(h))
            break; /* re-check the condition after each task */
        if (h->sleep_locked(h, d) == ETIMEDOUT) {
            rc = ETIMEDOUT;
            break;
        }
    }
    pthread_mutex_unlock(h->lock);
    pthread_mutex_lock(&w->lock);
    w->helper = NULL;
    return rc;
}

/* ------------------------------------------------------------------------ */
/* cf_wait                                                                   */
/* ------------------------------------------------------------------------ */

static bool has_exception(const cf_future *f)
{
    uint32_t s = cf__state_load(f);
    return (s & FS_STATE) == CF_FINISHED && f->out.status != CF_OK;
}

typedef struct wait_state {
    waiter w;
    size_t total, ndone, nexc;
    cf_return_when when;
} wait_state;

static bool wait_met(const wait_state *ws)
{
    switch (ws->when) {
    case CF_FIRST_COMPLETED:
        return ws->ndone > 0 || ws->total == 0;
    case CF_FIRST_EXCEPTION:
        return ws->nexc > 0 || ws->ndone == ws->total;
    default:
        return ws->ndone == ws->total;
    }
}

static void wait_notify(cf_listener *l, cf_future *f)
{
    wait_state *ws = l->arg;
    pthread_mutex_lock(&ws->w.lock);
    ws->ndone++;
    if (has_exception(f))
        ws->nexc++;
    if (wait_met(ws))
        waiter_wake_locked(&ws->w);
    pthread_mutex_unlock(&ws->w.lock);
}

int cf_wait(cf_future *const *fs, size_t n, double timeout,
            cf_return_when return_when, cf_future **done, size_t *ndone,
            cf_future **not_done, size_t *nnot_done)
{
    cf_deadline d;
    if ((fs == NULL && n > 0) || cf__deadline(timeout, &d) != CF_OK ||
        (return_when != CF_FIRST_COMPLETED &&
         return_when != CF_FIRST_EXCEPTION && return_when != CF_ALL_COMPLETED))
        return CF_EINVAL;
    for (size_t i = 0; i < n; i++)
        if (fs[i] == NULL)
            return CF_EINVAL;

    cf_future *small[16];
    cf_future **uniq = n <= 16 ? small : malloc(n * sizeof *uniq);
    if (uniq == NULL)
        return CF_ENOMEM;
    size_t nu = 0;
    int rc = dedupe(fs, n, uniq, &nu);
    if (rc != CF_OK)
        goto out;

    wait_state ws = {.total = nu, .when = return_when};
    for (size_t i = 0; i < nu; i++) {
        if (cf_done(uniq[i])) {
            ws.ndone++;
            ws.nexc += has_exception(uniq[i]);
        }
    }
    if (!wait_met(&ws) && !(timeout == 0)) {
        cf_listener *ls = calloc(nu, sizeof *ls);
        if (ls == NULL || waiter_init(&ws.w) != CF_OK) {
            free(ls);
            rc = CF_ENOMEM;
            goto out;
        }
        /* Count again, racing with completions: a future counts either
         * here (already done) or in its listener, never both. */
        ws.ndone = ws.nexc = 0;
        pthread_mutex_lock(&ws.w.lock);
        for (size_t i = 0; i < nu; i++) {
            ls[i].notify = wait_notify;
            ls[i].arg = &ws;
            pthread_mutex_unlock(&ws.w.lock);
            bool listening = cf__listen(uniq[i], &ls[i]);
            pthread_mutex_lock(&ws.w.lock);
            if (!listening) {
                ws.ndone++;
                ws.nexc += has_exception(uniq[i]);
            }
        }
        while (!wait_met(&ws))
            if (waiter_sleep_locked(&ws.w, &d) == ETIMEDOUT)
                break;
        pthread_mutex_unlock(&ws.w.lock);
        for (size_t i = 0; i < nu; i++)
            cf__unlisten(uniq[i], &ls[i]);
        waiter_fini(&ws.w);
        free(ls);
    }

    /* The answer is a snapshot taken now, as Python's. */
    size_t nd = 0, nn = 0, nexc = 0;
    for (size_t i = 0; i < nu; i++) {
        if (cf_done(uniq[i])) {
            nexc += has_exception(uniq[i]);
            if (done)
                done[nd] = uniq[i];
            nd++;
        } else {
            if (not_done)
                not_done[nn] = uniq[i];
            nn++;
        }
    }
    if (ndone)
        *ndone = nd;
    if (nnot_done)
        *nnot_done = nn;
    ws.ndone = nd;
    ws.nexc = nexc;
    rc = wait_met(&ws) ? CF_OK : CF_ETIMEDOUT;
out:
    if (uniq != small)
        free(uniq);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* cf_as_completed                                                           */
/* ------------------------------------------------------------------------ */

typedef struct entry {
    cf_listener l;
    cf_future *f;
    bool queued; /* pushed by the first pass of cf_as_completed_add */
} entry;

typedef struct chunk {
    struct chunk *next;
    size_t n;
    entry e[];
} chunk;

struct cf_as_completed {
    waiter w;
    cf_deadline deadline;
    ptrset seen;
    chunk *chunks;
    /* The completion queue: every future is pushed exactly once, so a
     * plain array of `total` slots with two cursors suffices.  Guarded by
     * w.lock (listeners push from completing threads). */
    cf_future **ready;
    size_t cap, head, tail;
    size_t total;
    cf_progress progress;
    /* cf_as_completed_fd: an eventfd, -1 until asked for.  It is readable
     * exactly while the queue holds a future (head < tail): written once
     * when the queue becomes non-empty, read once when it is emptied, so
     * a busy stream of completions costs no system call per future.
     * Guarded by w.lock, as the queue. */
    int efd;
    bool efd_set;
};

static void ac_push_locked(cf_as_completed *it, cf_future *f)
{
    it->ready[it->tail++] = f;
    if (it->efd >= 0 && !it->efd_set) {
        uint64_t one = 1;
        if (write(it->efd, &one, sizeof one) == (ssize_t)sizeof one)
            it->efd_set = true;
    }
}

/* w.lock held, after taking from the queue: the fd stops being readable
 * once the queue is empty. */
static void ac_took_locked(cf_as_completed *it)
{
    if (it->efd_set && it->head == it->tail) {
        uint64_t v;
        if (read(it->efd, &v, sizeof v) == (ssize_t)sizeof v)
            it->efd_set = false;
    }
}

static void ac_notify(cf_listener *l, cf_future *f)
{
    cf_as_completed *it = l->arg;
    pthread_mutex_lock(&it->w.lock);
    ac_push_locked(it, f);
    waiter_wake_locked(&it->w);
    pthread_mutex_unlock(&it->w.lock);
}

int cf_as_completed_add(cf_as_completed *it, cf_future *const *fs, size_t n)
{
    if (it == NULL || (fs == NULL && n > 0))
        return CF_EINVAL;
    for (size_t i = 0; i < n; i++)
        if (fs[i] == NULL)
            return CF_EINVAL;
    if (n == 0)
        return CF_OK;
    if (ptrset_reserve(&it->seen, it->seen.count + n) != CF_OK)
        return CF_ENOMEM;
    chunk *c = malloc(sizeof *c + n * sizeof(entry));
    if (c == NULL)
        return CF_ENOMEM;
    pthread_mutex_lock(&it->w.lock);
    if (it->cap < it->total + n) {
        size_t cap = it->cap ? it->cap : 16;
        while (cap < it->total + n)
            cap *= 2;
        cf_future **r = realloc(it->ready, cap * sizeof *r);
        if (r == NULL) {
            pthread_mutex_unlock(&it->w.lock);
            free(c);
            return CF_ENOMEM;
        }
        it->ready = r;
        it->cap = cap;
    }
    /* First pass: the distinct futures; those already done are queued
     * now, in input order, ahead of any that completes later. */
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (!ptrset_add(&it->seen, fs[i]))
            continue;
        entry *e = &c->e[k++];
        e->f = cf_future_retain(fs[i]);
        e->l = (cf_listener){.notify = ac_notify, .arg = it};
        e->queued = cf_done(e->f);
        if (e->queued)
            ac_push_locked(it, e->f);
    }
    it->total += k;
    c->n = k;
    c->next = it->chunks;
    it->chunks = c;
    pthread_mutex_unlock(&it->w.lock);
    /* Second pass: listen to the rest. */
    for (size_t i = 0; i < k; i++) {
        entry *e = &c->e[i];
        if (!e->queued && !cf__listen(e->f, &e->l)) {
            pthread_mutex_lock(&it->w.lock);
            ac_push_locked(it, e->f);
            pthread_mutex_unlock(&it->w.lock);
        }
    }
    return CF_OK;
}

cf_as_completed *cf_as_completed_new(cf_future *const *fs, size_t n,
                                     double timeout)
{
    if (fs == NULL && n > 0)
        return cf__fail_null(CF_EINVAL);
    cf_as_completed *it = calloc(1, sizeof *it);
    if (it == NULL)
        return cf__fail_null(CF_ENOMEM);
    it->efd = -1;
    if (cf__deadline(timeout, &it->deadline) != CF_OK) {
        free(it);
        return cf__fail_null(CF_EINVAL);
    }
    if (waiter_init(&it->w) != CF_OK) {
        free(it);
        return cf__fail_null(CF_ENOMEM);
    }
    int rc = cf_as_completed_add(it, fs, n);
    if (rc != CF_OK) {
        cf_as_completed_free(it);
        return cf__fail_null(rc);
    }
    return it;
}

int cf_as_completed_next(cf_as_completed *it, cf_future **out)
{
    if (it == NULL || out == NULL)
        return CF_EINVAL;
    pthread_mutex_lock(&it->w.lock);
    int rc = CF_OK;
    for (;;) {
        if (it->head < it->tail) {
            *out = it->ready[it->head++];
            ac_took_locked(it);
            cf__progress_update(&it->progress, it->head, false);
            break;
        }
        if (it->head == it->total) {
            cf__progress_update(&it->progress, it->head, true);
            rc = CF_END;
            break;
        }
        if (cf__deadline_passed(&it->deadline) ||
            waiter_sleep_locked(&it->w, &it->deadline) == ETIMEDOUT) {
            if (it->head < it->tail)
                continue;
            rc = CF_ETIMEDOUT;
            break;
        }
    }
    pthread_mutex_unlock(&it->w.lock);
    return rc;
}

size_t cf_as_completed_drain(cf_as_completed *it, cf_future **out, size_t max)
{
    if (it == NULL || out == NULL)
        return 0;
    pthread_mutex_lock(&it->w.lock);
    size_t k = it->tail - it->head;
    if (k > max)
        k = max;
    if (k > 0) {
        memcpy(out, it->ready + it->head, k * sizeof *out);
        it->head += k;
        ac_took_locked(it);
        cf__progress_update(&it->progress, it->head, it->head == it->total);
    }
    pthread_mutex_unlock(&it->w.lock);
    return k;
}

int cf_as_completed_fd(cf_as_completed *it)
{
    if (it == NULL)
        return CF_EINVAL;
    pthread_mutex_lock(&it->w.lock);
    if (it->efd < 0) {
        it->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (it->efd < 0) { /* EMFILE, ENFILE, ENOMEM: out of resources */
            pthread_mutex_unlock(&it->w.lock);
            return CF_ENOMEM;
        }
        if (it->head < it->tail) { /* already something to take */
            uint64_t one = 1;
            if (write(it->efd, &one, sizeof one) == (ssize_t)sizeof one)
                it->efd_set = true;
        }
    }
    int fd = it->efd;
    pthread_mutex_unlock(&it->w.lock);
    return fd;
}

void cf_as_completed_progress(cf_as_completed *it, const char *label)
{
    if (it == NULL)
        return;
    pthread_mutex_lock(&it->w.lock);
    cf__progress_init(&it->progress, label, it->total);
    pthread_mutex_unlock(&it->w.lock);
}

size_t cf_as_completed_pending(const cf_as_completed *it)
{
    if (it == NULL)
        return 0;
    cf_as_completed *m = (cf_as_completed *)it;
    pthread_mutex_lock(&m->w.lock);
    size_t n = m->total - m->head;
    pthread_mutex_unlock(&m->w.lock);
    return n;
}

void cf_as_completed_free(cf_as_completed *it)
{
    if (it == NULL)
        return;
    chunk *c = it->chunks;
    while (c != NULL) {
        for (size_t i = 0; i < c->n; i++) {
            cf__unlisten(c->e[i].f, &c->e[i].l);
            cf_future_release(c->e[i].f);
        }
        chunk *next = c->next;
        free(c);
        c = next;
    }
    waiter_fini(&it->w);
    if (it->efd >= 0)
        close(it->efd);
    free(it->seen.slots);
    free(it->ready);
    free(it);
}

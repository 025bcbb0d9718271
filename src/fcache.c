/*
 * fcache.c -- where futures' memory comes from: fixed-size blocks cut from
 * 64 KiB slabs and kept in a cache per thread, so that submitting a task
 * and releasing its future call neither malloc nor free.
 *
 * Two sizes: a task's future (the whole struct cf_future) and a bare one
 * (cf_future_new: the struct up to its task fields, CF_FUTURE_BARE_SIZE).
 * A slab holds blocks of one size and starts on a 64 KiB boundary with a
 * header naming that size, so freeing a block needs no size from the
 * caller: the header is at the block's address rounded down.
 *
 * Each thread keeps a LIFO free list per size.  Allocation pops from it;
 * when it is empty, the thread cuts the next block of its current slab, or
 * takes a batch of BATCH blocks that other threads handed back (the depot,
 * one mutex), or allocates a new slab.  Freeing pushes onto the freeing
 * thread's list; at 2 * BATCH blocks the thread hands BATCH of them to the
 * depot.  A thread that exits hands everything it holds to the depot (a
 * pthread key's destructor).  So a task submitted and released on one
 * thread costs a push and a pop, and a producer/consumer pair (one thread
 * submits, another releases) takes the depot's lock once per BATCH futures.
 *
 * Why hand-rolled rather than malloc: glibc's malloc puts a 16-byte header
 * on every block (a 120-byte future took 128 bytes, a bare one 80 -> 96),
 * and its per-call cost was about a quarter of the thread pool's per-task
 * instructions (callgrind, fib(20) with a task per call: calloc + free
 * 26% of the total).
 *
 * Memory: slabs come from 4 MiB anonymous mappings (only the pages used
 * are resident) and are never given back to the system: the peak number
 * of live futures sets the footprint.
 *
 * ASan and fault-injection builds allocate each future with calloc instead
 * (CF_FCACHE_PASSTHROUGH), so that AddressSanitizer sees every future's
 * life (use after free, leaks) and injected allocation failures reach the
 * callers.
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#if defined(__SANITIZE_ADDRESS__) || defined(CF_FAULT_INJECTION)
#define CF_FCACHE_PASSTHROUGH 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CF_FCACHE_PASSTHROUGH 1
#endif
#endif

#ifdef CF_FCACHE_PASSTHROUGH

void *cf__fcache_alloc(size_t size)
{
    return calloc(1, size);
}

void cf__fcache_free(void *block)
{
    free(block);
}

#else

#define SLAB_BYTES ((size_t)64 * 1024) /* also the slabs' alignment */
#define BATCH 64                       /* blocks per hand-over to the depot */

enum { CLS_BARE, CLS_TASK, NCLS };

static const size_t class_size[NCLS] = {
    (CF_FUTURE_BARE_SIZE + 7) & ~(size_t)7,
    (sizeof(cf_future) + 7) & ~(size_t)7,
};

typedef struct slab {
    unsigned cls;
} slab;

#define SLAB_HEADER ((sizeof(slab) + 15) & ~(size_t)15)

/* A free block's first words: the next block of its list, and (in the
 * depot) the next batch and the batch's length. */
typedef struct fblock {
    struct fblock *next;
    struct fblock *next_batch;
    size_t n;
} fblock;

typedef struct {
    fblock *head; /* free list */
    size_t n;
    char *bump, *end; /* uncut rest of this thread's current slab */
} tlist;

/* initial-exec: one load off the thread pointer, no __tls_get_addr call
 * (the library is linked, not dlopen'ed, in every use we know of; glibc
 * keeps spare static TLS for the few bytes this takes otherwise). */
static _Thread_local __attribute__((tls_model("initial-exec"))) struct {
    tlist l[NCLS];
    bool registered; /* the exit destructor is armed */
} tc;

#define ARENA_SLABS 64 /* slabs mapped at a time: 4 MiB */

static struct {
    pthread_mutex_t m;
    fblock *batches[NCLS];
    char *arena, *arena_end; /* slabs not yet handed out */
} depot = {.m = PTHREAD_MUTEX_INITIALIZER};

static pthread_once_t once = PTHREAD_ONCE_INIT;
static pthread_key_t exit_key;

/* depot lock held: puts the chain head..(n blocks) in the depot. */
static void depot_put_locked(unsigned cls, fblock *head, size_t n)
{
    head->n = n;
    head->next_batch = depot.batches[cls];
    depot.batches[cls] = head;
}

/* Hands everything the exiting thread holds to the depot: its free lists,
 * and the uncut rest of its slabs cut into blocks. */
static void thread_exit(void *unused)
{
    (void)unused;
    pthread_mutex_lock(&depot.m);
    for (unsigned c = 0; c < NCLS; c++) {
        tlist *l = &tc.l[c];
        while (l->bump != NULL && l->bump + class_size[c] <= l->end) {
            fblock *b = (fblock *)(void *)l->bump;
            l->bump += class_size[c];
            b->next = l->head;
            l->head = b;
            l->n++;
        }
        l->bump = l->end = NULL;
        if (l->head != NULL)
            depot_put_locked(c, l->head, l->n);
        l->head = NULL;
        l->n = 0;
    }
    pthread_mutex_unlock(&depot.m);
    tc.registered = false;
}

static void before_fork(void)
{
    pthread_mutex_lock(&depot.m);
}

static void after_fork(void)
{
    pthread_mutex_unlock(&depot.m);
}

static void init_once(void)
{
    if (pthread_key_create(&exit_key, thread_exit) != 0)
        abort(); /* only with PTHREAD_KEYS_MAX keys in use */
    pthread_atfork(before_fork, after_fork, after_fork);
}

static void register_thread(void)
{
    pthread_once(&once, init_once);
    tc.registered = pthread_setspecific(exit_key, &tc) == 0;
}

/* depot lock held: a new slab, from the current arena or a new one.
 * Arenas are mmap'ed (aligned by trimming the mapping), not malloc'ed:
 * posix_memalign's trimmed ends cost about 10% more resident memory. */
static slab *new_slab_locked(void)
{
    if (depot.arena == depot.arena_end) {
        size_t len = ARENA_SLABS * SLAB_BYTES;
        char *p = mmap(NULL, len + SLAB_BYTES, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED)
            return NULL;
        char *a = (char *)(((uintptr_t)p + SLAB_BYTES - 1) &
                           ~(uintptr_t)(SLAB_BYTES - 1));
        if (a > p)
            munmap(p, (size_t)(a - p));
        if (a + len < p + len + SLAB_BYTES)
            munmap(a + len, (size_t)(p + len + SLAB_BYTES - (a + len)));
        depot.arena = a;
        depot.arena_end = a + len;
    }
    slab *s = (slab *)(void *)depot.arena;
    depot.arena += SLAB_BYTES;
    return s;
}

/* The slow path of an allocation: a batch from the depot, else a new
 * slab.  NULL when out of memory. */
static void *refill(unsigned cls)
{
    tlist *l = &tc.l[cls];
    size_t size = class_size[cls];
    if (l->bump != NULL && l->bump + size <= l->end) {
        void *b = l->bump;
        l->bump += size;
        return b;
    }
    if (!tc.registered)
        register_thread();
    pthread_mutex_lock(&depot.m);
    fblock *batch = depot.batches[cls];
    if (batch != NULL) {
        depot.batches[cls] = batch->next_batch;
        pthread_mutex_unlock(&depot.m);
        l->head = batch->next;
        l->n = batch->n - 1;
        return batch;
    }
    slab *s = new_slab_locked();
    pthread_mutex_unlock(&depot.m);
    if (s == NULL)
        return NULL;
    s->cls = cls;
    l->bump = (char *)s + SLAB_HEADER + size;
    l->end = (char *)s + SLAB_BYTES;
    return (char *)s + SLAB_HEADER;
}

static void *alloc_class(unsigned cls)
{
    tlist *l = &tc.l[cls];
    fblock *b = l->head;
    if (b != NULL) {
        l->head = b->next;
        l->n--;
        return b;
    }
    return refill(cls);
}

void *cf__fcache_alloc(size_t size)
{
    unsigned cls = size <= class_size[CLS_BARE] ? CLS_BARE : CLS_TASK;
    void *b = alloc_class(cls);
    if (b != NULL)
        memset(b, 0, size);
    return b;
}

void cf__fcache_free(void *block)
{
    if (block == NULL)
        return;
    if (!tc.registered) /* so that what it holds is handed on at its exit */
        register_thread();
    const slab *s = (const slab *)((uintptr_t)block & ~(SLAB_BYTES - 1));
    tlist *l = &tc.l[s->cls];
    fblock *b = block;
    b->next = l->head;
    l->head = b;
    if (++l->n < 2 * BATCH)
        return;
    /* Keep the BATCH blocks freed last (warm in the cache) and hand the
     * older half to the depot. */
    fblock *last = l->head;
    for (int i = 1; i < BATCH; i++)
        last = last->next;
    fblock *give = last->next;
    last->next = NULL;
    pthread_mutex_lock(&depot.m);
    depot_put_locked(s->cls, give, l->n - BATCH);
    pthread_mutex_unlock(&depot.m);
    l->n = BATCH;
}

#endif /* !CF_FCACHE_PASSTHROUGH */

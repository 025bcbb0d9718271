/*
 * fault.c -- the wrappers of the fault-injection build (fault.h).  Only
 * compiled with -DCF_FAULT_INJECTION; worker processes inherit CF_FAULTS
 * and fail the same way.
 */
#define CF_FAULT_IMPL
#include "fault.h"
#include "internal.h"

#include <errno.h>
#include <stdio.h>

enum { F_ALLOC, F_THREAD, F_SPAWN, F_IO, F_KINDS };

static double rate[F_KINDS];
static _Atomic uint64_t rng;
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void parse(void)
{
    const char *s = getenv("CF_FAULTS");
    uint64_t seed = 1;
    while (s != NULL && *s) {
        char key[16];
        double v;
        int used = 0;
        if (sscanf(s, "%15[a-z]=%lf%n", key, &v, &used) != 2)
            break;
        if (strcmp(key, "seed") == 0)
            seed = (uint64_t)v;
        else if (strcmp(key, "alloc") == 0)
            rate[F_ALLOC] = v;
        else if (strcmp(key, "thread") == 0)
            rate[F_THREAD] = v;
        else if (strcmp(key, "spawn") == 0)
            rate[F_SPAWN] = v;
        else if (strcmp(key, "io") == 0)
            rate[F_IO] = v;
        s += used;
        if (*s == ',')
            s++;
    }
    atomic_store(&rng, seed * 0x9E3779B97F4A7C15ull + 1);
}

/* true with probability rate[kind] (a shared xorshift: racy draws are
 * fine, the point is that some calls fail). */
static bool fail(int kind)
{
    pthread_once(&once, parse);
    if (rate[kind] <= 0)
        return false;
    uint64_t x = atomic_load_explicit(&rng, memory_order_relaxed);
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    atomic_store_explicit(&rng, x, memory_order_relaxed);
    return (double)(x >> 11) / 9007199254740992.0 < rate[kind];
}

void *cf__fault_malloc(size_t n)
{
    return fail(F_ALLOC) ? NULL : malloc(n);
}

void *cf__fault_calloc(size_t n, size_t size)
{
    return fail(F_ALLOC) ? NULL : calloc(n, size);
}

void *cf__fault_realloc(void *p, size_t n)
{
    return fail(F_ALLOC) ? NULL : realloc(p, n);
}

int cf__fault_pthread_create(pthread_t *t, const pthread_attr_t *a,
                             void *(*fn)(void *), void *arg)
{
    return fail(F_THREAD) ? EAGAIN : pthread_create(t, a, fn, arg);
}

int cf__fault_posix_spawn(pid_t *pid, const char *path,
                          const posix_spawn_file_actions_t *fa,
                          const posix_spawnattr_t *at, char *const argv[],
                          char *const envp[])
{
    return fail(F_SPAWN) ? EAGAIN : posix_spawn(pid, path, fa, at, argv, envp);
}

ssize_t cf__fault_read(int fd, void *buf, size_t n)
{
    if (fail(F_IO)) {
        static const int errs[] = {EINTR, EAGAIN};
        errno = errs[atomic_load(&rng) % 2];
        return -1;
    }
    if (n > 1 && fail(F_IO))
        n /= 2; /* a short read */
    return read(fd, buf, n);
}

ssize_t cf__fault_send(int fd, const void *buf, size_t n, int flags)
{
    if (fail(F_IO)) {
        errno = (atomic_load(&rng) & 1) ? EINTR : EAGAIN;
        return -1;
    }
    if (n > 1 && fail(F_IO))
        n /= 2; /* a short write */
    return send(fd, buf, n, flags);
}

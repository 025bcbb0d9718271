/*
 * time.c -- deadlines on CLOCK_MONOTONIC, and the two ways cfutures
 * sleeps: a futex on a future's state word (one word per future, no
 * mutex or condition variable in it) and a condition variable on the
 * monotonic clock (pools and multi-future waiters).
 */
#include "internal.h"

#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <math.h>
#include <sys/syscall.h>
#include <unistd.h>

uint64_t cf__now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int cf__deadline(double timeout, cf_deadline *d)
{
    if (isnan(timeout) || timeout < 0)
        return CF_EINVAL;
    /* Anything past ~30 years is as good as forever (and would overflow). */
    if (isinf(timeout) || timeout > 1e9) {
        d->forever = true;
        return CF_OK;
    }
    d->forever = false;
    clock_gettime(CLOCK_MONOTONIC, &d->at);
    double whole = floor(timeout);
    d->at.tv_sec += (time_t)whole;
    d->at.tv_nsec += (long)((timeout - whole) * 1e9);
    if (d->at.tv_nsec >= 1000000000L) {
        d->at.tv_sec++;
        d->at.tv_nsec -= 1000000000L;
    }
    return CF_OK;
}

bool cf__deadline_passed(const cf_deadline *d)
{
    if (d->forever)
        return false;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return now.tv_sec > d->at.tv_sec ||
           (now.tv_sec == d->at.tv_sec && now.tv_nsec >= d->at.tv_nsec);
}

int cf__cond_init(pthread_cond_t *c)
{
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    int rc = pthread_cond_init(c, &a);
    pthread_condattr_destroy(&a);
    return rc;
}

int cf__cond_wait(pthread_cond_t *c, pthread_mutex_t *m, const cf_deadline *d)
{
    if (d == NULL || d->forever)
        return pthread_cond_wait(c, m);
    return pthread_cond_timedwait(c, m, &d->at);
}

int cf__futex_wait(_Atomic uint32_t *addr, uint32_t val, const cf_deadline *d)
{
    /* FUTEX_WAIT_BITSET takes an absolute CLOCK_MONOTONIC deadline, so a
     * wake-up that is not ours does not stretch the timeout. */
    const struct timespec *ts = (d == NULL || d->forever) ? NULL : &d->at;
    long rc = syscall(SYS_futex, (uint32_t *)addr,
                      FUTEX_WAIT_BITSET | FUTEX_PRIVATE_FLAG, val, ts, NULL,
                      FUTEX_BITSET_MATCH_ANY);
    if (rc == -1 && errno == ETIMEDOUT)
        return ETIMEDOUT;
    return 0; /* woken, value changed (EAGAIN) or EINTR: caller re-checks */
}

void cf__futex_wake_all(_Atomic uint32_t *addr)
{
    syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAKE | FUTEX_PRIVATE_FLAG,
            INT_MAX, NULL, NULL, 0);
}

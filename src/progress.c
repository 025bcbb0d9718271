/*
 * progress.c -- an opt-in progress bar for cf_map and cf_as_completed, on
 * stderr, drawn only when stderr is a terminal (or CFUTURES_PROGRESS=always)
 * and at most ten times a second.
 */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void cf__progress_init(cf_progress *p, const char *label, size_t total)
{
    memset(p, 0, sizeof *p);
    if (label == NULL)
        return;
    const char *force = getenv("CFUTURES_PROGRESS");
    p->on = isatty(STDERR_FILENO) ||
            (force != NULL && strcmp(force, "always") == 0);
    p->label = label;
    p->total = total;
    p->start = cf__now_ns();
}

void cf__progress_update(cf_progress *p, size_t done, bool final)
{
    if (!p->on || p->finished)
        return;
    uint64_t now = cf__now_ns();
    if (!final && now - p->last < 100000000u)
        return;
    p->last = now;
    double secs = (double)(now - p->start) / 1e9;
    if (p->total > 0) {
        char bar[31];
        size_t fill = done >= p->total ? 30 : done * 30 / p->total;
        memset(bar, '#', fill);
        memset(bar + fill, '.', 30 - fill);
        bar[30] = '\0';
        fprintf(stderr, "\r%s [%s] %zu/%zu %.1fs", p->label, bar, done,
                p->total, secs);
    } else {
        fprintf(stderr, "\r%s %zu done %.1fs", p->label, done, secs);
    }
    if (final) {
        fputc('\n', stderr);
        p->finished = true;
    }
    fflush(stderr);
}

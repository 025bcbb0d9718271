/*
 * ring.c -- the shared-memory rings of a process pool (ring.h).
 */
#include "ring.h"

#include <limits.h>
#include <linux/futex.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

void cf__shm_futex_wait(_Atomic uint32_t *w, uint32_t val)
{
    syscall(SYS_futex, (uint32_t *)w, FUTEX_WAIT, val, NULL, NULL, 0);
}

void cf__shm_futex_wake(_Atomic uint32_t *w)
{
    syscall(SYS_futex, (uint32_t *)w, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
}

/* ------------------------------------------------------------------------ */
/* Task slots (parent side)                                                  */
/* ------------------------------------------------------------------------ */

void cf__ring_tx_free_to(cf_ring_tx *t, uint64_t seq)
{
    if (seq > t->head)
        seq = t->head;
    if (seq > t->released) {
        t->data_tail = t->slot_end[(seq - 1) % CF_RING_SLOTS];
        t->released = seq;
    }
}

static void wake_worker(cf_shm *s)
{
    /* Dekker with the worker's sleep: our store, then its flag. */
    atomic_thread_fence(memory_order_seq_cst);
    if (atomic_load_explicit(&s->worker_sleeping, memory_order_relaxed) &&
        atomic_exchange(&s->worker_sleeping, 0)) {
        atomic_fetch_add(&s->task_futex, 1);
        cf__shm_futex_wake(&s->task_futex);
    }
}

void cf__ring_tx_stop(cf_ring_tx *t)
{
    atomic_store_explicit(&t->s->stop, 1, memory_order_release);
    wake_worker(t->s);
}

unsigned char *cf__ring_tx_alloc(cf_ring_tx *t, uint64_t len, uint64_t *off)
{
    if (len > CF_RING_TASK_MAX)
        return NULL;
    uint64_t need = (len + 63) & ~(uint64_t)63; /* keep bodies aligned */
    uint64_t at = t->data_head;
    uint64_t in = at % CF_RING_TASK_BYTES;
    if (in + need > CF_RING_TASK_BYTES) /* would cross the end: skip it */
        at += CF_RING_TASK_BYTES - in;
    if (at + need - t->data_tail > CF_RING_TASK_BYTES)
        return NULL;
    t->data_head = at + need;
    *off = at % CF_RING_TASK_BYTES;
    return t->s->task_data + *off;
}

uint64_t cf__ring_tx_fill(cf_ring_tx *t, uint64_t off, uint64_t len, bool spill)
{
    uint64_t seq = t->head++;
    cf_ring_slot *sl = &t->s->slots[seq % CF_RING_SLOTS];
    sl->flags = spill ? CF_SLOT_SPILL : 0;
    sl->off = off;
    sl->len = len;
    atomic_store_explicit(&sl->state, CF_SLOT_QUEUED, memory_order_relaxed);
    t->slot_end[seq % CF_RING_SLOTS] = t->data_head;
    return seq;
}

void cf__ring_tx_publish(cf_ring_tx *t)
{
    atomic_store_explicit(&t->s->task_head, t->head, memory_order_release);
    wake_worker(t->s);
}

bool cf__ring_revoke(cf_shm *s, uint64_t seq)
{
    uint32_t want = CF_SLOT_QUEUED;
    return atomic_compare_exchange_strong(&s->slots[seq % CF_RING_SLOTS].state,
                                          &want, CF_SLOT_REVOKED);
}

uint32_t cf__ring_slot_state(const cf_shm *s, uint64_t seq)
{
    return atomic_load_explicit(
        &((cf_shm *)s)->slots[seq % CF_RING_SLOTS].state, memory_order_acquire);
}

/* ------------------------------------------------------------------------ */
/* The result ring                                                           */
/* ------------------------------------------------------------------------ */

static uint32_t get_u32(const unsigned char *p)
{
    uint32_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

int cf__ring_next(const unsigned char *data, uint64_t cap, uint64_t head,
                  uint64_t *pos, cf_ring_rec *rec)
{
    for (;;) {
        uint64_t at = *pos;
        if (at == head)
            return CF_END;
        /* head - at: the bytes written and unread; never more than cap. */
        if (head < at || head - at > cap || (at & 7) != 0)
            return CF_EINVAL;
        uint64_t in = at % cap;
        if (head - at < CF_REC_HEADER || cap - in < CF_REC_HEADER)
            return CF_EINVAL;
        uint32_t type = get_u32(data + in);
        uint32_t len = get_u32(data + in + 4);
        if (type == CF_REC_WRAP) {
            if (len != 0 || head - at < cap - in)
                return CF_EINVAL;
            *pos = at + (cap - in);
            continue;
        }
        if (type != CF_REC_RESULT && type != CF_REC_SPILL)
            return CF_EINVAL;
        uint64_t size = cf__ring_rec_size(len);
        if (size > head - at || size > cap - in)
            return CF_EINVAL;
        rec->type = type;
        rec->body = data + in + CF_REC_HEADER;
        rec->len = len;
        *pos = at + size;
        return CF_OK;
    }
}

unsigned char *cf__ring_rec_reserve(cf_shm *s, uint64_t *head, uint32_t len)
{
    uint64_t tail = atomic_load_explicit(&s->res_tail, memory_order_acquire);
    return cf__ring_rec_reserve_at(s, head, &tail, len);
}

unsigned char *cf__ring_rec_reserve_at(cf_shm *s, uint64_t *head,
                                       uint64_t *tail, uint32_t len)
{
    uint64_t size = cf__ring_rec_size(len);
    uint64_t in = *head % CF_RING_RES_BYTES;
    uint64_t wrap = in + size > CF_RING_RES_BYTES ? CF_RING_RES_BYTES - in : 0;
    if (*head + wrap + size - *tail > CF_RING_RES_BYTES) {
        *tail = atomic_load_explicit(&s->res_tail, memory_order_acquire);
        if (*head + wrap + size - *tail > CF_RING_RES_BYTES)
            return NULL;
    }
    if (wrap) {
        uint32_t hdr[2] = {CF_REC_WRAP, 0};
        memcpy(s->res_data + in, hdr, sizeof hdr);
        *head += wrap;
        in = 0;
    }
    return s->res_data + in + CF_REC_HEADER;
}

void cf__ring_rec_commit(cf_shm *s, uint64_t *head, uint32_t type, uint32_t len)
{
    uint32_t hdr[2] = {type, len};
    memcpy(s->res_data + *head % CF_RING_RES_BYTES, hdr, sizeof hdr);
    *head += cf__ring_rec_size(len);
    atomic_store_explicit(&s->res_head, *head, memory_order_release);
}

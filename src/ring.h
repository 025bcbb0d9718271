/*
 * ring.h -- the memory a process pool's parent shares with one worker
 * (one memfd mapping per worker): task slots with their data area
 * (parent -> worker), a result ring (worker -> parent), the words each
 * side sleeps on, and the page that says which item runs (crash
 * attribution) and which one to stop (cooperative cancel).
 *
 * Task slots.  The parent writes a task (a TASK frame body, wire.h) into
 * the data area, fills the next slot (state QUEUED) and publishes it by
 * advancing task_head.  The worker takes slots in order; it owns a slot
 * only once it has moved it from QUEUED to CLAIMED with a CAS.  Until
 * then the parent may take it back by moving it from QUEUED to REVOKED
 * (a cancel, or a task given to a worker that went idle): the worker then
 * skips it.  Exactly one CAS wins, so a task runs at most once and a
 * cancelled one never starts.  A slot is free again once the worker has
 * passed it (`released`), which also frees its data.  A frame too big
 * for the data area travels on the socket instead (SPILL): the worker
 * reads it there when it reaches the slot, claimed or not.
 *
 * Result ring.  A byte ring of records (below), written by the worker,
 * read by the parent: res_head and res_tail count bytes since the start.
 * A result too big for the ring travels on the socket, announced by a
 * SPILL record, so results keep their order.
 *
 * Sleeping.  Each side spins briefly, then sleeps: the worker on a futex
 * in the mapping (the parent wakes it only if worker_sleeping is set),
 * the parent in poll(2) on the worker's socket (a worker that sees
 * parent_sleeping set sends a WAKE frame).  Both sides set their flag,
 * then look again before sleeping (a full barrier in between), so no
 * wake-up is lost; none is made while the other side is awake.
 *
 * Every length and position a worker wrote is checked before the parent
 * uses it (cf__ring_next): a worker that crashed mid-write, or wrote
 * garbage, is a protocol error, never an out-of-bounds access.
 */
#ifndef CF_RING_H
#define CF_RING_H

#include "internal.h"

#include <stdalign.h>

#define CF_RING_SLOTS 64u                      /* task slots */
#define CF_RING_TASK_BYTES ((uint64_t)1 << 20) /* task data area */
#define CF_RING_RES_BYTES ((uint64_t)1 << 20)  /* result ring */
/* Frames above these sizes go through the socket. */
#define CF_RING_TASK_MAX (CF_RING_TASK_BYTES / 4)
#define CF_RING_RES_MAX (CF_RING_RES_BYTES / 4)

enum cf_slot_state {
    CF_SLOT_FREE = 0,
    CF_SLOT_QUEUED = 1,  /* published, not claimed: the parent may revoke */
    CF_SLOT_CLAIMED = 2, /* the worker owns it: it runs */
    CF_SLOT_REVOKED = 3, /* taken back by the parent: the worker skips it */
};

enum { CF_SLOT_SPILL = 1u }; /* the frame body is on the socket */

typedef struct cf_ring_slot {
    _Atomic uint32_t state; /* enum cf_slot_state */
    uint32_t flags;         /* CF_SLOT_SPILL */
    uint64_t off;           /* frame body in the data area (not SPILL) */
    uint64_t len;           /* its length */
} cf_ring_slot;

/* How far a worker got in starting (cf_shm.phase), so that a worker that
 * dies early is diagnosed, not guessed at. */
enum cf_worker_phase {
    CF_PHASE_EXEC = 0,    /* the program started; the library not yet */
    CF_PHASE_MAPPED = 1,  /* the worker code runs, shared memory mapped */
    CF_PHASE_INIT = 2,    /* running the pool's initializer */
    CF_PHASE_SERVING = 3, /* said HELLO: serving tasks */
};

/* Result records: u32 type | u32 body length | body, padded to 8 bytes. */
enum cf_rec_type {
    CF_REC_RESULT = 1, /* body: one RESULT item (cf__wire_read_result) */
    CF_REC_SPILL = 2,  /* body: u64 id; its RESULT frame is on the socket */
    CF_REC_WRAP = 3,   /* no body: the rest of the ring to its end is unused */
};
#define CF_REC_HEADER 8u

typedef struct cf_shm {
    /* Written by the worker at each item, read by the parent only after
     * the worker died: a line of its own, so that its store does not take
     * back the line the parent polls. */
    alignas(64) _Atomic uint64_t running_id; /* id + 1 of the item it runs */
    /* Written by the worker. */
    alignas(64) _Atomic uint64_t claimed; /* slots claimed or skipped so far */
    _Atomic uint64_t released; /* slots done: results written, data free */
    _Atomic uint64_t res_head; /* result ring: bytes written */
    _Atomic uint32_t worker_sleeping; /* asleep on task_futex */
    _Atomic uint32_t space_waiting;   /* asleep on space_futex */
    _Atomic uint32_t phase;           /* enum cf_worker_phase: how far it got */
    _Atomic int32_t fatal_signal;     /* the signal that is killing it, or 0 */
    /* Written by the parent. */
    alignas(64) _Atomic uint64_t cancel_id; /* id + 1 of the item to stop */
    _Atomic uint64_t task_head;             /* slots published */
    _Atomic uint64_t res_tail;              /* result ring: bytes read */
    _Atomic uint32_t parent_sleeping;       /* in poll: send a WAKE frame */
    _Atomic uint32_t stop;                  /* no more slots: exit once done */
    _Atomic uint32_t task_futex;            /* bumped to wake the worker */
    _Atomic uint32_t space_futex; /* bumped when result room was made */
    alignas(64) cf_ring_slot slots[CF_RING_SLOTS];
    alignas(64) unsigned char task_data[CF_RING_TASK_BYTES];
    alignas(64) unsigned char res_data[CF_RING_RES_BYTES];
} cf_shm;

/* ---- futexes in shared memory (not FUTEX_PRIVATE) ---- */

CF_HIDDEN void cf__shm_futex_wait(_Atomic uint32_t *w, uint32_t val);
CF_HIDDEN void cf__shm_futex_wake(_Atomic uint32_t *w);

/* ---- the parent's side of the task slots ---- */

typedef struct cf_ring_tx {
    cf_shm *s;
    uint64_t head;      /* slots written (published or about to be) */
    uint64_t released;  /* slots freed */
    uint64_t data_head; /* data area: bytes allocated */
    uint64_t data_tail; /* data area: bytes freed */
    uint64_t slot_end[CF_RING_SLOTS]; /* data_head after each slot */
} cf_ring_tx;

/* Frees the slots before seq (which the worker has passed) and their
 * data. */
CF_HIDDEN void cf__ring_tx_free_to(cf_ring_tx *t, uint64_t seq);
/* No more slots: the worker exits once it has done those published. */
CF_HIDDEN void cf__ring_tx_stop(cf_ring_tx *t);
/* Room for a frame body of len bytes in the data area: a pointer to write
 * it at (and its offset in *off), or NULL if there is no room now (or
 * ever: len > CF_RING_TASK_MAX, which must be spilled). */
CF_HIDDEN unsigned char *cf__ring_tx_alloc(cf_ring_tx *t, uint64_t len,
                                           uint64_t *off);
/* Fills the next slot (a free one: the caller checked) for the body
 * written at off (or a spilled one); returns its sequence number.  Not
 * visible to the worker until cf__ring_tx_publish. */
CF_HIDDEN uint64_t cf__ring_tx_fill(cf_ring_tx *t, uint64_t off, uint64_t len,
                                    bool spill);
/* Publishes the slots filled so far and wakes the worker if it sleeps. */
CF_HIDDEN void cf__ring_tx_publish(cf_ring_tx *t);
/* Tries to take back slot seq (published or not): true if it was still
 * QUEUED (now REVOKED; the worker will skip it), false if claimed. */
CF_HIDDEN bool cf__ring_revoke(cf_shm *s, uint64_t seq);
CF_HIDDEN uint32_t cf__ring_slot_state(const cf_shm *s, uint64_t seq);

/* ---- the result ring ---- */

/* One decoded record. */
typedef struct cf_ring_rec {
    uint32_t type;
    const unsigned char *body;
    uint32_t len;
} cf_ring_rec;

/* Decodes the record at byte position *pos of a result ring of `cap`
 * bytes (a power of two) whose writer is at `head`: CF_OK (record in
 * *rec, *pos moved past it; WRAP records are skipped), CF_END if *pos ==
 * head, CF_EINVAL if the ring is malformed (positions or lengths out of
 * bounds, an unknown type).  Trusts nothing in data. */
CF_HIDDEN int cf__ring_next(const unsigned char *data, uint64_t cap,
                            uint64_t head, uint64_t *pos, cf_ring_rec *rec);

/* Worker side: room for a record with a body of len bytes at the writer's
 * position *head: a pointer to write the body at, or NULL when the ring
 * has no room now (wait for the parent).  Writes a WRAP record first if
 * the record would cross the end. */
CF_HIDDEN unsigned char *cf__ring_rec_reserve(cf_shm *s, uint64_t *head,
                                              uint32_t len);
/* The same, against *tail, the reader's position as last read: res_tail
 * (a line the parent writes) is read again only when *tail leaves too
 * little room. */
CF_HIDDEN unsigned char *cf__ring_rec_reserve_at(cf_shm *s, uint64_t *head,
                                                 uint64_t *tail, uint32_t len);
/* Writes the record header and publishes the record (res_head). */
CF_HIDDEN void cf__ring_rec_commit(cf_shm *s, uint64_t *head, uint32_t type,
                                   uint32_t len);
/* Bytes a record with a body of len bytes takes (header, padding). */
static inline uint64_t cf__ring_rec_size(uint64_t len)
{
    return CF_REC_HEADER + ((len + 7) & ~(uint64_t)7);
}

#endif

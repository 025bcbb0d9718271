/*
 * chunk.h -- a map's chunk: many inputs as one task, for executors whose
 * workers live elsewhere (process and MPI pools: cf_executor_vtable.chunks).
 *
 * A chunk is one future.  Its argument is its inputs, each as u64 length
 * (little-endian) then bytes; f->chunk holds their number and f->arg_flags
 * has CF_ARG_CHUNK.  Its result, once every item has run, is the items'
 * results in input order, each a RESULT item of wire.h (u64 id | i32
 * status | i32 code | u8 kind | u64 len | data | u32 msg_len | msg): one
 * buffer for the whole chunk, so a chunked map keeps no future per item.
 * If the chunk as a whole fails (cancelled, broken pool), every item ends
 * with its error.
 */
#ifndef CF_CHUNK_H
#define CF_CHUNK_H

#include "internal.h"

/* The inputs of a chunk being filled. */
typedef struct cf_chunk_in {
    unsigned char *p;
    size_t len, cap;
    uint32_t n;
} cf_chunk_in;

/* Appends one input: CF_OK or CF_ENOMEM. */
CF_HIDDEN int cf__chunk_add(cf_chunk_in *c, const void *data, size_t len);
/* Appends n inputs of item_size bytes each, laid out contiguously. */
CF_HIDDEN int cf__chunk_add_array(cf_chunk_in *c, const unsigned char *items,
                                  size_t item_size, size_t n);
CF_HIDDEN void cf__chunk_in_free(cf_chunk_in *c);

/* Submits the chunk's inputs (copied; c may be reused) as one future:
 * NULL on error (cf_last_error()). */
CF_HIDDEN cf_future *cf__submit_chunk(cf_executor *ex, cf_task_fn fn,
                                      const cf_chunk_in *c);

/* One item's result, pointing into the chunk's result buffer. */
typedef struct cf_chunk_item {
    int32_t status, code;
    uint8_t kind;
    const void *data;
    size_t len;
    const char *msg; /* not NUL-terminated */
    size_t msg_len;
} cf_chunk_item;

/* Reads the item at *pos of a chunk's result: CF_OK (*pos moved past it)
 * or CF_EINVAL (malformed, or the end). */
CF_HIDDEN int cf__chunk_read(const void *buf, size_t len, size_t *pos,
                             cf_chunk_item *it);

#endif

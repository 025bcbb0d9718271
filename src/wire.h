/*
 * wire.h -- the frames that carry tasks and results between a parent and
 * its worker processes (process pool) or ranks (MPI pool).
 *
 * A frame is a 24-byte header and a body, every integer little-endian:
 *
 *   header  u32 magic "CFW1" | u8 type | u8 version | u16 zero
 *           | u32 count (items in the body) | u32 zero | u64 body_len
 *
 *   INIT    (parent -> worker) fnref of the initializer (module_len 0: none)
 *           | u64 arg_len | arg
 *   HELLO   (worker -> parent) i32 status | i32 code | u32 msg_len | msg
 *   TASK    (parent -> worker) fnref | u64 first_id
 *           | count x (u64 arg_len | arg)      item i has id first_id + i
 *   RESULT  (worker -> parent) count x (u64 id | i32 status | i32 code
 *           | u8 kind | u64 len | data | u32 msg_len | msg)
 *   CANCEL  (parent -> worker) u64 id  (cooperative cancel request)
 *   WAKE    (worker -> parent) no body: the parent sleeps, something
 *           happened in the memory they share (ring.h)
 *
 *   fnref   u16 module_len | module | u8 build_id_len | build_id | u64 offset
 *
 * Frames are bytes only: the encoders take plain fields, never a future
 * or an outcome, so this file knows nothing of the layers above.
 *
 * The decoder never trusts a length: every field is bounds-checked against
 * the body, and a malformed frame is an error (CF_EINVAL), never a crash.
 * Decoded pointers point into the caller's buffer (no copies).
 */
#ifndef CF_WIRE_H
#define CF_WIRE_H

#include "internal.h"

#define CF_WIRE_MAGIC 0x31574643u /* "CFW1" */
#define CF_WIRE_VERSION 1
#define CF_WIRE_HEADER 24
/* Largest body accepted (bounds allocation on a corrupt header). */
#define CF_WIRE_MAX_BODY ((uint64_t)1 << 36)

enum cf_frame_type {
    CF_FRAME_INIT = 1,
    CF_FRAME_HELLO = 2,
    CF_FRAME_TASK = 3,
    CF_FRAME_RESULT = 4,
    CF_FRAME_CANCEL = 5,
    CF_FRAME_WAKE = 6,
};

typedef struct cf_wire_header {
    uint8_t type;
    uint32_t count;
    uint64_t body_len;
} cf_wire_header;

/* A reference to a function that another process can check and resolve:
 * the module (shared object path, "" for the main program), its build-id,
 * and the offset from the module's load address. */
typedef struct cf_fnref {
    const char *module;
    size_t module_len;
    const uint8_t *build_id;
    size_t build_id_len;
    uint64_t offset;
} cf_fnref;

typedef struct cf_wire_item { /* one task of a TASK frame */
    const void *arg;
    size_t arg_len;
} cf_wire_item;

typedef struct cf_wire_result { /* one result of a RESULT frame */
    uint64_t id;
    int32_t status;
    int32_t code;
    uint8_t kind;
    const void *data;
    size_t len;
    const char *msg; /* not NUL-terminated */
    size_t msg_len;
} cf_wire_result;

/* ---- encoding: a growable buffer; an allocation failure sticks (oom) ---- */

typedef struct cf_wbuf {
    unsigned char *p;
    size_t len, cap;
    bool oom;
} cf_wbuf;

CF_HIDDEN void cf__wbuf_free(cf_wbuf *b);
CF_HIDDEN bool cf__wbuf_reserve(cf_wbuf *b, size_t more);
CF_HIDDEN void cf__wbuf_put(cf_wbuf *b, const void *p, size_t n);
CF_HIDDEN void cf__wbuf_u8(cf_wbuf *b, uint8_t v);
CF_HIDDEN void cf__wbuf_u16(cf_wbuf *b, uint16_t v);
CF_HIDDEN void cf__wbuf_u32(cf_wbuf *b, uint32_t v);
CF_HIDDEN void cf__wbuf_u64(cf_wbuf *b, uint64_t v);
/* Drops the first n bytes (what a write sent). */
CF_HIDDEN void cf__wbuf_consume(cf_wbuf *b, size_t n);

/* Starts a frame; returns its offset, for cf__wire_end. */
CF_HIDDEN size_t cf__wire_begin(cf_wbuf *b, uint8_t type, uint32_t count);
/* Patches the body length of the frame begun at off. */
CF_HIDDEN void cf__wire_end(cf_wbuf *b, size_t off);
CF_HIDDEN void cf__wire_fnref(cf_wbuf *b, const cf_fnref *r);
/* A TASK body's head: the function and the id of its first item. */
CF_HIDDEN void cf__wire_task_head(cf_wbuf *b, const cf_fnref *r,
                                  uint64_t first_id);
CF_HIDDEN void cf__wire_item(cf_wbuf *b, const void *arg, size_t len);
/* One RESULT item. */
CF_HIDDEN void cf__wire_result(cf_wbuf *b, uint64_t id, int32_t status,
                               int32_t code, uint8_t kind, const void *data,
                               size_t len, const char *msg, size_t msg_len);
/* The bytes of that RESULT item, and the same written at p (which has
 * that room); returns the bytes written. */
CF_HIDDEN uint64_t cf__wire_result_size(size_t len, size_t msg_len);
CF_HIDDEN size_t cf__wire_result_put(unsigned char *p, uint64_t id,
                                     int32_t status, int32_t code, uint8_t kind,
                                     const void *data, size_t len,
                                     const char *msg, size_t msg_len);
CF_HIDDEN void cf__wire_hello(cf_wbuf *b, int32_t status, int32_t code,
                              const char *msg);

/* ---- decoding: a cursor over one frame's body ---- */

typedef struct cf_rbuf {
    const unsigned char *p;
    size_t len, pos;
} cf_rbuf;

/* Parses a header from at least CF_WIRE_HEADER bytes: CF_OK or CF_EINVAL
 * (bad magic, version, type, reserved bits or body length). */
CF_HIDDEN int cf__wire_header(const unsigned char *p, cf_wire_header *h);
CF_HIDDEN int cf__wire_read_fnref(cf_rbuf *r, cf_fnref *out);
/* The fnref and first id of a TASK body. */
CF_HIDDEN int cf__wire_read_task_head(cf_rbuf *r, cf_fnref *fn,
                                      uint64_t *first_id);
CF_HIDDEN int cf__wire_read_item(cf_rbuf *r, cf_wire_item *out);
CF_HIDDEN int cf__wire_read_result(cf_rbuf *r, cf_wire_result *out);
/* The id and status of the RESULT item of len bytes at p, which must be at
 * least as long as the item's fixed part: CF_OK or CF_EINVAL. */
CF_HIDDEN int cf__wire_result_head(const unsigned char *p, size_t len,
                                   uint64_t *id, int32_t *status);
CF_HIDDEN int cf__wire_read_hello(cf_rbuf *r, int32_t *status, int32_t *code,
                                  const char **msg, size_t *msg_len);
CF_HIDDEN int cf__wire_read_u64(cf_rbuf *r, uint64_t *v);
CF_HIDDEN int cf__wire_read_bytes(cf_rbuf *r, const void **p, size_t *len);

/* Decodes a whole frame (header + body of `len` bytes), checking that every
 * item parses and the body is consumed exactly: the fuzzed entry point. */
CF_HIDDEN int cf__wire_check_frame(const unsigned char *p, size_t len);

#endif

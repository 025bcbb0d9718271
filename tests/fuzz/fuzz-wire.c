/*
 * fuzz-wire.c -- libFuzzer target for the wire decoder (src/wire.c).
 *
 * Every input goes to cf__wire_check_frame (one whole frame), then to a
 * streaming parse like the one the process pool runs on a worker's socket:
 * frame after frame, a header then its items, every decoded pointer read
 * (so ASan sees any out-of-bounds span).  Invariants that abort:
 *   - a frame cf__wire_check_frame accepts parses the same way here, body
 *     consumed exactly;
 *   - a valid TASK, INIT, CANCEL or WAKE frame re-encodes to the same
 *     bytes, and so does each item of a valid RESULT frame;
 *   - the process pool's quick look at a result (cf__wire_result_head)
 *     agrees with the full decoder.
 * Nothing may crash, leak or hit undefined behaviour.
 */
#include "wire.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static volatile unsigned sink;

/* Reads every byte of a decoded span. */
static void touch(const void *p, size_t n)
{
    const unsigned char *b = p;
    unsigned s = 0;
    for (size_t i = 0; i < n; i++)
        s += b[i];
    sink += s;
}

/* Parses one frame's body the way the readers of the pools do.  Returns
 * CF_OK if every field decoded and the body was consumed exactly; on
 * success of a TASK / INIT / CANCEL frame, re-encodes it into *re. */
static int parse_body(const cf_wire_header *h, const unsigned char *body,
                      cf_wbuf *re)
{
    cf_rbuf r = {body, (size_t)h->body_len, 0};
    cf_fnref fn;
    size_t off = cf__wire_begin(re, h->type, h->count);
    switch (h->type) {
    case CF_FRAME_INIT: {
        const void *arg;
        size_t n;
        if (cf__wire_read_fnref(&r, &fn) != CF_OK ||
            cf__wire_read_bytes(&r, &arg, &n) != CF_OK)
            return CF_EINVAL;
        touch(fn.module, fn.module_len);
        touch(fn.build_id, fn.build_id_len);
        touch(arg, n);
        cf__wire_fnref(re, &fn);
        cf__wbuf_u64(re, n);
        cf__wbuf_put(re, arg, n);
        break;
    }
    case CF_FRAME_HELLO: {
        int32_t st, code;
        const char *msg;
        size_t n;
        if (cf__wire_read_hello(&r, &st, &code, &msg, &n) != CF_OK)
            return CF_EINVAL;
        touch(msg, n);
        break;
    }
    case CF_FRAME_TASK: {
        uint64_t first;
        if (cf__wire_read_task_head(&r, &fn, &first) != CF_OK)
            return CF_EINVAL;
        touch(fn.module, fn.module_len);
        touch(fn.build_id, fn.build_id_len);
        cf__wire_task_head(re, &fn, first);
        for (uint32_t i = 0; i < h->count; i++) {
            cf_wire_item it;
            if (cf__wire_read_item(&r, &it) != CF_OK)
                return CF_EINVAL;
            touch(it.arg, it.arg_len);
            cf__wire_item(re, it.arg, it.arg_len);
        }
        break;
    }
    case CF_FRAME_RESULT:
        for (uint32_t i = 0; i < h->count; i++) {
            cf_wire_result res;
            size_t at = r.pos;
            if (cf__wire_read_result(&r, &res) != CF_OK)
                return CF_EINVAL;
            if (res.status > 0 || res.status < CF_END)
                abort(); /* the decoder promised a known status */
            touch(res.data, res.len);
            touch(res.msg, res.msg_len);
            /* The quick look of the process pool agrees with it. */
            uint64_t id;
            int32_t st;
            if (cf__wire_result_head(r.p + at, r.pos - at, &id, &st) != CF_OK ||
                id != res.id || st != res.status)
                abort();
            /* And it re-encodes to the same bytes. */
            cf_wbuf one = {0};
            cf__wire_result(&one, res.id, res.status, res.code, res.kind,
                            res.data, res.len, res.msg, res.msg_len);
            if (!one.oom && (one.len != r.pos - at ||
                             memcmp(one.p, r.p + at, one.len) != 0))
                abort();
            cf__wbuf_free(&one);
        }
        break;
    case CF_FRAME_CANCEL: {
        uint64_t id;
        if (cf__wire_read_u64(&r, &id) != CF_OK)
            return CF_EINVAL;
        cf__wbuf_u64(re, id);
        break;
    }
    case CF_FRAME_WAKE:
        if (h->count != 0)
            return CF_EINVAL;
        break;
    default:
        abort(); /* cf__wire_header let an unknown type through */
    }
    cf__wire_end(re, off);
    return r.pos == r.len ? CF_OK : CF_EINVAL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int whole = cf__wire_check_frame(data, size);

    /* Streaming: as many complete frames as the input holds. */
    size_t pos = 0;
    int frames = 0;
    while (size - pos >= CF_WIRE_HEADER) {
        cf_wire_header h;
        if (cf__wire_header(data + pos, &h) != CF_OK)
            break;
        if (h.body_len > CF_WIRE_MAX_BODY)
            abort();
        if (size - pos - CF_WIRE_HEADER < h.body_len)
            break; /* incomplete: a reader would wait for more */
        const unsigned char *body = data + pos + CF_WIRE_HEADER;
        size_t flen = CF_WIRE_HEADER + (size_t)h.body_len;
        cf_wbuf re = {0};
        int rc = parse_body(&h, body, &re);
        bool single = frames == 0 && flen == size;
        if (single && (rc == CF_OK) != (whole == CF_OK))
            abort(); /* the two parses disagree on a single frame */
        if (rc == CF_OK && !re.oom &&
            (h.type == CF_FRAME_TASK || h.type == CF_FRAME_INIT ||
             h.type == CF_FRAME_CANCEL || h.type == CF_FRAME_WAKE) &&
            (re.len != flen || memcmp(re.p, data + pos, flen) != 0))
            abort(); /* decode and encode disagree */
        cf__wbuf_free(&re);
        if (rc != CF_OK)
            break; /* a reader drops a worker that sends a bad frame */
        pos += flen;
        frames++;
    }
    return 0;
}

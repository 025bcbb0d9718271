/*
 * wire.c -- encoding and checked decoding of the frames in wire.h.
 */
#include "wire.h"

#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------ */
/* Encoding                                                                  */
/* ------------------------------------------------------------------------ */

void cf__wbuf_free(cf_wbuf *b)
{
    free(b->p);
    memset(b, 0, sizeof *b);
}

bool cf__wbuf_reserve(cf_wbuf *b, size_t more)
{
    if (b->oom)
        return false;
    if (b->cap - b->len >= more)
        return true;
    size_t cap = b->cap ? b->cap : 256;
    while (cap - b->len < more) {
        if (cap > SIZE_MAX / 2) {
            b->oom = true;
            return false;
        }
        cap *= 2;
    }
    unsigned char *p = realloc(b->p, cap);
    if (p == NULL) {
        b->oom = true;
        return false;
    }
    b->p = p;
    b->cap = cap;
    return true;
}

void cf__wbuf_put(cf_wbuf *b, const void *p, size_t n)
{
    if (n == 0 || !cf__wbuf_reserve(b, n))
        return;
    memcpy(b->p + b->len, p, n);
    b->len += n;
}

/* Little-endian loads and stores of 1, 2, 4 or 8 bytes (memcpy: the
 * compiler makes them single moves). */
static inline void store_le(unsigned char *p, uint64_t v, int bytes)
{
#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
    v = __builtin_bswap64(v) >> (64 - 8 * bytes);
#endif
    switch (bytes) {
    case 1: {
        uint8_t x = (uint8_t)v;
        memcpy(p, &x, 1);
        break;
    }
    case 2: {
        uint16_t x = (uint16_t)v;
        memcpy(p, &x, 2);
        break;
    }
    case 4: {
        uint32_t x = (uint32_t)v;
        memcpy(p, &x, 4);
        break;
    }
    default:
        memcpy(p, &v, 8);
    }
}

static inline uint64_t load_le(const unsigned char *p, int bytes)
{
    uint64_t v;
    switch (bytes) {
    case 1:
        return p[0];
    case 2: {
        uint16_t x;
        memcpy(&x, p, 2);
        v = x;
        break;
    }
    case 4: {
        uint32_t x;
        memcpy(&x, p, 4);
        v = x;
        break;
    }
    default:
        memcpy(&v, p, 8);
    }
#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
    v = __builtin_bswap64(v) >> (64 - 8 * bytes);
#endif
    return v;
}

static void put_le(cf_wbuf *b, uint64_t v, int bytes)
{
    if (!cf__wbuf_reserve(b, (size_t)bytes))
        return;
    store_le(b->p + b->len, v, bytes);
    b->len += (size_t)bytes;
}

void cf__wbuf_u8(cf_wbuf *b, uint8_t v)
{
    put_le(b, v, 1);
}
void cf__wbuf_u16(cf_wbuf *b, uint16_t v)
{
    put_le(b, v, 2);
}
void cf__wbuf_u32(cf_wbuf *b, uint32_t v)
{
    put_le(b, v, 4);
}
void cf__wbuf_u64(cf_wbuf *b, uint64_t v)
{
    put_le(b, v, 8);
}

void cf__wbuf_consume(cf_wbuf *b, size_t n)
{
    if (n >= b->len) {
        b->len = 0;
        return;
    }
    memmove(b->p, b->p + n, b->len - n);
    b->len -= n;
}

size_t cf__wire_begin(cf_wbuf *b, uint8_t type, uint32_t count)
{
    size_t off = b->len;
    cf__wbuf_u32(b, CF_WIRE_MAGIC);
    cf__wbuf_u8(b, type);
    cf__wbuf_u8(b, CF_WIRE_VERSION);
    cf__wbuf_u16(b, 0);
    cf__wbuf_u32(b, count);
    cf__wbuf_u32(b, 0);
    cf__wbuf_u64(b, 0); /* body length, patched by cf__wire_end */
    return off;
}

void cf__wire_end(cf_wbuf *b, size_t off)
{
    if (b->oom)
        return;
    uint64_t body = b->len - off - CF_WIRE_HEADER;
    for (int i = 0; i < 8; i++)
        b->p[off + 16 + i] = (unsigned char)(body >> (8 * i));
}

void cf__wire_fnref(cf_wbuf *b, const cf_fnref *r)
{
    cf__wbuf_u16(b, (uint16_t)r->module_len);
    cf__wbuf_put(b, r->module, r->module_len);
    cf__wbuf_u8(b, (uint8_t)r->build_id_len);
    cf__wbuf_put(b, r->build_id, r->build_id_len);
    cf__wbuf_u64(b, r->offset);
}

void cf__wire_task_head(cf_wbuf *b, const cf_fnref *r, uint64_t first_id)
{
    cf__wire_fnref(b, r);
    cf__wbuf_u64(b, first_id);
}

void cf__wire_item(cf_wbuf *b, const void *arg, size_t len)
{
    cf__wbuf_u64(b, len);
    cf__wbuf_put(b, arg, len);
}

uint64_t cf__wire_result_size(size_t len, size_t msg_len)
{
    return 8 + 4 + 4 + 1 + 8 + (uint64_t)len + 4 + (uint64_t)msg_len;
}

static unsigned char *put_le_at(unsigned char *p, uint64_t v, int bytes)
{
    store_le(p, v, bytes);
    return p + bytes;
}

size_t cf__wire_result_put(unsigned char *p, uint64_t id, int32_t status,
                           int32_t code, uint8_t kind, const void *data,
                           size_t len, const char *msg, size_t msg_len)
{
    unsigned char *q = p;
    q = put_le_at(q, id, 8);
    q = put_le_at(q, (uint32_t)status, 4);
    q = put_le_at(q, (uint32_t)code, 4);
    q = put_le_at(q, kind, 1);
    q = put_le_at(q, len, 8);
    if (len > 0)
        memcpy(q, data, len);
    q += len;
    q = put_le_at(q, (uint32_t)msg_len, 4);
    if (msg_len > 0)
        memcpy(q, msg, msg_len);
    q += msg_len;
    return (size_t)(q - p);
}

void cf__wire_result(cf_wbuf *b, uint64_t id, int32_t status, int32_t code,
                     uint8_t kind, const void *data, size_t len,
                     const char *msg, size_t msg_len)
{
    uint64_t n = cf__wire_result_size(len, msg_len);
    if (n > SIZE_MAX || !cf__wbuf_reserve(b, (size_t)n))
        return;
    b->len += cf__wire_result_put(b->p + b->len, id, status, code, kind, data,
                                  len, msg, msg_len);
}

void cf__wire_hello(cf_wbuf *b, int32_t status, int32_t code, const char *msg)
{
    size_t off = cf__wire_begin(b, CF_FRAME_HELLO, 1);
    size_t n = msg ? strlen(msg) : 0;
    cf__wbuf_u32(b, (uint32_t)status);
    cf__wbuf_u32(b, (uint32_t)code);
    cf__wbuf_u32(b, (uint32_t)n);
    cf__wbuf_put(b, msg, n);
    cf__wire_end(b, off);
}

/* ------------------------------------------------------------------------ */
/* Decoding                                                                  */
/* ------------------------------------------------------------------------ */

static uint64_t get_le(const unsigned char *p, int bytes)
{
    return load_le(p, bytes);
}

int cf__wire_header(const unsigned char *p, cf_wire_header *h)
{
    if (get_le(p, 4) != CF_WIRE_MAGIC || p[5] != CF_WIRE_VERSION ||
        get_le(p + 6, 2) != 0 || get_le(p + 12, 4) != 0)
        return CF_EINVAL;
    h->type = p[4];
    if (h->type < CF_FRAME_INIT || h->type > CF_FRAME_WAKE)
        return CF_EINVAL;
    h->count = (uint32_t)get_le(p + 8, 4);
    h->body_len = get_le(p + 16, 8);
    if (h->body_len > CF_WIRE_MAX_BODY)
        return CF_EINVAL;
    return CF_OK;
}

static int take(cf_rbuf *r, size_t n, const unsigned char **out)
{
    if (r->len - r->pos < n)
        return CF_EINVAL;
    *out = r->p + r->pos;
    r->pos += n;
    return CF_OK;
}

static int read_le(cf_rbuf *r, int bytes, uint64_t *v)
{
    const unsigned char *p;
    if (take(r, (size_t)bytes, &p) != CF_OK)
        return CF_EINVAL;
    *v = get_le(p, bytes);
    return CF_OK;
}

int cf__wire_read_u64(cf_rbuf *r, uint64_t *v)
{
    return read_le(r, 8, v);
}

/* A u64-length-prefixed byte string. */
int cf__wire_read_bytes(cf_rbuf *r, const void **p, size_t *len)
{
    uint64_t n;
    const unsigned char *q;
    if (read_le(r, 8, &n) != CF_OK || n > r->len - r->pos ||
        take(r, (size_t)n, &q) != CF_OK)
        return CF_EINVAL;
    *p = q;
    *len = (size_t)n;
    return CF_OK;
}

int cf__wire_read_fnref(cf_rbuf *r, cf_fnref *out)
{
    uint64_t n, b;
    const unsigned char *m, *id;
    if (read_le(r, 2, &n) != CF_OK || take(r, (size_t)n, &m) != CF_OK ||
        read_le(r, 1, &b) != CF_OK || b > 64 ||
        take(r, (size_t)b, &id) != CF_OK ||
        read_le(r, 8, &out->offset) != CF_OK)
        return CF_EINVAL;
    if (memchr(m, '\0', (size_t)n) != NULL)
        return CF_EINVAL;
    out->module = (const char *)m;
    out->module_len = (size_t)n;
    out->build_id = id;
    out->build_id_len = (size_t)b;
    return CF_OK;
}

int cf__wire_read_task_head(cf_rbuf *r, cf_fnref *fn, uint64_t *first_id)
{
    if (cf__wire_read_fnref(r, fn) != CF_OK)
        return CF_EINVAL;
    return read_le(r, 8, first_id);
}

int cf__wire_read_item(cf_rbuf *r, cf_wire_item *out)
{
    return cf__wire_read_bytes(r, &out->arg, &out->arg_len);
}

static int read_msg(cf_rbuf *r, const char **msg, size_t *len)
{
    uint64_t n;
    const unsigned char *p;
    if (read_le(r, 4, &n) != CF_OK || take(r, (size_t)n, &p) != CF_OK)
        return CF_EINVAL;
    *msg = (const char *)p;
    *len = (size_t)n;
    return CF_OK;
}

int cf__wire_read_result(cf_rbuf *r, cf_wire_result *out)
{
    /* The hot path of every result: one bounds check per variable part. */
    enum { FIXED = 8 + 4 + 4 + 1 + 8 };
    size_t left = r->len - r->pos;
    const unsigned char *p = r->p + r->pos;
    if (r->pos > r->len || left < FIXED + 4)
        return CF_EINVAL;
    uint64_t len = load_le(p + 17, 8);
    uint8_t kind = p[16];
    if (kind > CF_KIND_STR || len > left - FIXED - 4)
        return CF_EINVAL;
    uint64_t msg_len = load_le(p + FIXED + len, 4);
    if (msg_len > left - FIXED - 4 - len)
        return CF_EINVAL;
    out->id = load_le(p, 8);
    out->status = (int32_t)(uint32_t)load_le(p + 8, 4);
    out->code = (int32_t)(uint32_t)load_le(p + 12, 4);
    out->kind = kind;
    out->data = p + FIXED;
    out->len = (size_t)len;
    out->msg = (const char *)p + FIXED + len + 4;
    out->msg_len = (size_t)msg_len;
    r->pos += FIXED + (size_t)len + 4 + (size_t)msg_len;
    /* A status must be one we know: a corrupt frame cannot invent one. */
    if (out->status > 0 || out->status < CF_END)
        return CF_EINVAL;
    return CF_OK;
}

int cf__wire_result_head(const unsigned char *p, size_t len, uint64_t *id,
                         int32_t *status)
{
    if (len < 8 + 4 + 4 + 1 + 8 + 4)
        return CF_EINVAL;
    *id = load_le(p, 8);
    *status = (int32_t)(uint32_t)load_le(p + 8, 4);
    return *status > 0 || *status < CF_END ? CF_EINVAL : CF_OK;
}

int cf__wire_read_hello(cf_rbuf *r, int32_t *status, int32_t *code,
                        const char **msg, size_t *msg_len)
{
    uint64_t st, c;
    if (read_le(r, 4, &st) != CF_OK || read_le(r, 4, &c) != CF_OK ||
        read_msg(r, msg, msg_len) != CF_OK)
        return CF_EINVAL;
    *status = (int32_t)(uint32_t)st;
    *code = (int32_t)(uint32_t)c;
    return CF_OK;
}

int cf__wire_check_frame(const unsigned char *p, size_t len)
{
    cf_wire_header h;
    if (len < CF_WIRE_HEADER || cf__wire_header(p, &h) != CF_OK ||
        h.body_len != len - CF_WIRE_HEADER)
        return CF_EINVAL;
    cf_rbuf r = {p + CF_WIRE_HEADER, (size_t)h.body_len, 0};
    cf_fnref fn;
    cf_wire_item it;
    cf_wire_result res;
    const void *arg;
    size_t n;
    int32_t st, code;
    const char *msg;
    uint64_t id;
    switch (h.type) {
    case CF_FRAME_INIT:
        if (cf__wire_read_fnref(&r, &fn) != CF_OK ||
            cf__wire_read_bytes(&r, &arg, &n) != CF_OK)
            return CF_EINVAL;
        break;
    case CF_FRAME_HELLO:
        if (cf__wire_read_hello(&r, &st, &code, &msg, &n) != CF_OK)
            return CF_EINVAL;
        break;
    case CF_FRAME_TASK:
        if (cf__wire_read_task_head(&r, &fn, &id) != CF_OK)
            return CF_EINVAL;
        for (uint32_t i = 0; i < h.count; i++)
            if (cf__wire_read_item(&r, &it) != CF_OK)
                return CF_EINVAL;
        break;
    case CF_FRAME_RESULT:
        for (uint32_t i = 0; i < h.count; i++)
            if (cf__wire_read_result(&r, &res) != CF_OK)
                return CF_EINVAL;
        break;
    case CF_FRAME_CANCEL:
        if (cf__wire_read_u64(&r, &id) != CF_OK)
            return CF_EINVAL;
        break;
    case CF_FRAME_WAKE:
        if (h.count != 0)
            return CF_EINVAL;
        break;
    }
    return r.pos == r.len ? CF_OK : CF_EINVAL;
}

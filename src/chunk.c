/*
 * chunk.c -- a map's chunk as one task (chunk.h).
 */
#include "chunk.h"
#include "wire.h"

#include <stdlib.h>
#include <string.h>

int cf__chunk_add(cf_chunk_in *c, const void *data, size_t len)
{
    if (len > SIZE_MAX - 8 - c->len)
        return CF_ENOMEM;
    size_t need = c->len + 8 + len;
    if (need > c->cap) {
        size_t cap = c->cap ? c->cap : 256;
        while (cap < need)
            cap = cap > SIZE_MAX / 2 ? need : cap * 2;
        unsigned char *p = realloc(c->p, cap);
        if (p == NULL)
            return CF_ENOMEM;
        c->p = p;
        c->cap = cap;
    }
    uint64_t n = len;
#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
    n = __builtin_bswap64(n);
#endif
    memcpy(c->p + c->len, &n, 8);
    if (len > 0)
        memcpy(c->p + c->len + 8, data, len);
    c->len = need;
    c->n++;
    return CF_OK;
}

int cf__chunk_add_array(cf_chunk_in *c, const unsigned char *items,
                        size_t item_size, size_t n)
{
    if (item_size > (SIZE_MAX - c->len) / (n ? n : 1) - 8)
        return CF_ENOMEM;
    size_t need = c->len + n * (8 + item_size);
    if (need > c->cap) {
        unsigned char *p = realloc(c->p, need);
        if (p == NULL)
            return CF_ENOMEM;
        c->p = p;
        c->cap = need;
    }
    uint64_t l = item_size;
#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
    l = __builtin_bswap64(l);
#endif
    unsigned char *q = c->p + c->len;
    for (size_t i = 0; i < n; i++) {
        memcpy(q, &l, 8);
        memcpy(q + 8, items + i * item_size, item_size);
        q += 8 + item_size;
    }
    c->len = need;
    c->n += (uint32_t)n;
    return CF_OK;
}

void cf__chunk_in_free(cf_chunk_in *c)
{
    free(c->p);
    memset(c, 0, sizeof *c);
}

cf_future *cf__submit_chunk(cf_executor *ex, cf_task_fn fn,
                            const cf_chunk_in *c)
{
    if (c->n == 0 || c->n > 65535)
        return cf__fail_null(CF_EINVAL);
    cf_future *f = cf__future_alloc();
    if (f == NULL)
        return cf__fail_null(CF_ENOMEM);
    f->arg_flags = CF_ARG_CHUNK; /* set_arg only adds CF_ARG_OWNED */
    int rc = cf__submit_into(ex, f, fn, c->p, c->len, NULL, c->n);
    if (rc != CF_OK) {
        cf_future_release(f);
        return cf__fail_null(rc);
    }
    return f;
}

int cf__chunk_read(const void *buf, size_t len, size_t *pos, cf_chunk_item *it)
{
    cf_rbuf r = {buf, len, *pos};
    cf_wire_result res;
    if (*pos >= len || cf__wire_read_result(&r, &res) != CF_OK)
        return CF_EINVAL;
    *pos = r.pos;
    *it = (cf_chunk_item){res.status, res.code, res.kind,   res.data,
                          res.len,    res.msg,  res.msg_len};
    return CF_OK;
}

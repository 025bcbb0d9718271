/*
 * fuzz-ring.c -- libFuzzer target for the result ring of the process pool
 * (src/ring.c) and a chunk's results (src/chunk.c): what the parent reads
 * from memory a worker wrote, which it must never trust.
 *
 * Each input is used three ways:
 *   1. as the bytes of a result ring (capacity 64 .. 2048 bytes, read and
 *      write positions taken from the input): cf__ring_next walks it; every
 *      record it returns must lie inside the ring and before the writer's
 *      position, and each RESULT body is decoded as the parent does;
 *   2. as a chunk's result buffer: cf__chunk_read walks it, every item's
 *      spans inside the buffer;
 *   3. as a script for the writer: records of lengths and bytes taken from
 *      the input are written into a real ring (cf__ring_rec_reserve /
 *      commit, starting near the end so that they wrap) and read back with
 *      cf__ring_next, byte for byte, the reader freeing room as it goes.
 * Nothing may crash, leak or hit undefined behaviour.
 */
#include "chunk.h"
#include "ring.h"
#include "wire.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static volatile unsigned sink;

static void touch(const void *p, size_t n)
{
    const unsigned char *b = p;
    unsigned s = 0;
    for (size_t i = 0; i < n; i++)
        s += b[i];
    sink += s;
}

static uint64_t le(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

/* 1: the input as a ring. */
static void read_ring(const uint8_t *data, size_t size)
{
    if (size < 6)
        return;
    uint64_t cap = (uint64_t)64 << (data[0] % 6);
    uint64_t pos = le(data + 1, 3); /* any position, aligned or not */
    uint64_t head = pos + le(data + 4, 2) % (2 * cap);
    unsigned char *ring = calloc(1, cap);
    if (ring == NULL)
        abort();
    size_t n = size - 6 < cap ? size - 6 : cap;
    memcpy(ring, data + 6, n);
    cf_ring_rec rec;
    for (int k = 0; k < 10000; k++) {
        uint64_t before = pos;
        int rc = cf__ring_next(ring, cap, head, &pos, &rec);
        if (rc != CF_OK)
            break;
        if (pos <= before || pos > head)
            abort(); /* no progress, or past the writer */
        if (rec.body < ring + CF_REC_HEADER || rec.body > ring + cap ||
            rec.len > (uint64_t)(ring + cap - rec.body))
            abort(); /* a record outside the ring */
        if (rec.type != CF_REC_RESULT && rec.type != CF_REC_SPILL)
            abort();
        touch(rec.body, rec.len);
        if (rec.type == CF_REC_RESULT) {
            cf_rbuf r = {rec.body, rec.len, 0};
            cf_wire_result res;
            if (cf__wire_read_result(&r, &res) == CF_OK) {
                touch(res.data, res.len);
                touch(res.msg, res.msg_len);
            }
            uint64_t id;
            int32_t st;
            cf__wire_result_head(rec.body, rec.len, &id, &st);
        }
    }
    free(ring);
}

/* 2: the input as a chunk's results. */
static void read_chunk(const uint8_t *data, size_t size)
{
    size_t pos = 0;
    cf_chunk_item it;
    while (cf__chunk_read(data, size, &pos, &it) == CF_OK) {
        if (pos > size)
            abort();
        touch(it.data, it.len);
        touch(it.msg, it.msg_len);
    }
}

/* 3: the input as records to write, then read back. */
static cf_shm *shm;

static void round_trip(const uint8_t *data, size_t size)
{
    if (size < 2)
        return;
    if (shm == NULL && (shm = calloc(1, sizeof *shm)) == NULL)
        abort();
    /* Start near the end of the ring, so that records wrap. */
    uint64_t start = CF_RING_RES_BYTES - 8 * (uint64_t)(data[0] % 64 + 1);
    atomic_store(&shm->res_head, start);
    atomic_store(&shm->res_tail, start);
    uint64_t whead = start, rpos = start;
    size_t i = 1;
    while (i < size) {
        /* A record: its length from one byte (scaled), its bytes next. */
        uint32_t len = (uint32_t)data[i] * 17 % 4096;
        uint32_t type = data[i] & 1 ? CF_REC_RESULT : CF_REC_SPILL;
        i++;
        unsigned char *p = cf__ring_rec_reserve(shm, &whead, len);
        if (p == NULL)
            abort(); /* the reader keeps the ring empty: always room */
        for (uint32_t k = 0; k < len; k++)
            p[k] = data[(i + k) % size];
        cf__ring_rec_commit(shm, &whead, type, len);
        cf_ring_rec rec;
        uint64_t head = atomic_load(&shm->res_head);
        if (cf__ring_next(shm->res_data, CF_RING_RES_BYTES, head, &rpos,
                          &rec) != CF_OK ||
            rec.type != type || rec.len != len || rpos != head)
            abort();
        for (uint32_t k = 0; k < len; k++)
            if (rec.body[k] != data[(i + k) % size])
                abort();
        atomic_store(&shm->res_tail, rpos);
        i += len < 8 ? len : 8;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    read_ring(data, size);
    read_chunk(data, size);
    round_trip(data, size);
    return 0;
}

/*
 * make-seeds.c -- writes the seed corpus of fuzz-wire: a few valid frames
 * of every type, made by the library's own encoder (src/wire.c), each
 * checked with cf__wire_check_frame before it is written.
 *
 *   make-seeds DIR      (the committed seeds live in tests/fuzz/corpus-wire)
 */
#include "wire.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *dir;

static void emit(const char *name, cf_wbuf *b, bool single)
{
    if (b->oom || (single && cf__wire_check_frame(b->p, b->len) != CF_OK)) {
        fprintf(stderr, "make-seeds: %s is not a valid frame\n", name);
        exit(1);
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (f == NULL || fwrite(b->p, 1, b->len, f) != b->len || fclose(f) != 0) {
        perror(path);
        exit(1);
    }
    cf__wbuf_free(b);
}

static const uint8_t build_id[20] = {0x3a, 0x11, 0x9c, 0x42, 0x07, 0xee, 0x51,
                                     0x90, 0x2b, 0x6d, 0xc4, 0x18, 0x73, 0x05,
                                     0xaf, 0x66, 0x81, 0x3e, 0xd2, 0x4c};

static const cf_fnref main_fn = {"", 0, build_id, sizeof build_id, 0x1234};
static const cf_fnref lib_fn = {"/usr/lib/libtasks.so", 20, build_id,
                                sizeof build_id, 0x9f80};

static void result(cf_wbuf *b, uint64_t id, int32_t status, int32_t code,
                   uint8_t kind, const void *data, size_t len, char *msg)
{
    cf__wire_result(b, id, status, code, kind, data, len, msg,
                    msg ? strlen(msg) : 0);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: make-seeds DIR\n");
        return 2;
    }
    dir = argv[1];
    cf_wbuf b = {0};
    size_t off;
    int64_t v = 42;
    char text[40] = "0123456789abcdefghijklmnopqrstuvwxyz";

    /* INIT without an initializer, and with one and an 8-byte argument. */
    off = cf__wire_begin(&b, CF_FRAME_INIT, 1);
    cf__wire_fnref(&b, &(cf_fnref){0});
    cf__wbuf_u64(&b, 0);
    cf__wire_end(&b, off);
    emit("init-none", &b, true);
    off = cf__wire_begin(&b, CF_FRAME_INIT, 1);
    cf__wire_fnref(&b, &lib_fn);
    cf__wbuf_u64(&b, sizeof v);
    cf__wbuf_put(&b, &v, sizeof v);
    cf__wire_end(&b, off);
    emit("init-arg", &b, true);

    /* HELLO: fine, and an initializer that raised. */
    cf__wire_hello(&b, CF_OK, 0, NULL);
    emit("hello-ok", &b, true);
    cf__wire_hello(&b, CF_ETASK, 5, "initializer refused 9");
    emit("hello-raised", &b, true);

    /* TASK: one int64 item; a chunk of three (empty, 8, 17 bytes). */
    off = cf__wire_begin(&b, CF_FRAME_TASK, 1);
    cf__wire_task_head(&b, &main_fn, 0);
    cf__wire_item(&b, &v, sizeof v);
    cf__wire_end(&b, off);
    emit("task-one", &b, true);
    off = cf__wire_begin(&b, CF_FRAME_TASK, 3);
    cf__wire_task_head(&b, &lib_fn, 7);
    cf__wire_item(&b, NULL, 0);
    cf__wire_item(&b, &v, sizeof v);
    cf__wire_item(&b, text, 17);
    cf__wire_end(&b, off);
    emit("task-chunk", &b, true);

    /* RESULT: an int64; then a string, bytes and a raise in one frame. */
    off = cf__wire_begin(&b, CF_FRAME_RESULT, 1);
    result(&b, 0, CF_OK, 0, CF_KIND_I64, &v, sizeof v, NULL);
    cf__wire_end(&b, off);
    emit("result-i64", &b, true);
    off = cf__wire_begin(&b, CF_FRAME_RESULT, 3);
    result(&b, 7, CF_OK, 0, CF_KIND_STR, "hello", 6, NULL);
    result(&b, 8, CF_OK, 0, CF_KIND_BYTES, text, 33, NULL);
    result(&b, 9, CF_ETASK, 42, CF_KIND_NONE, NULL, 0, "bad input 7: oops");
    cf__wire_end(&b, off);
    emit("result-mixed", &b, true);

    /* CANCEL. */
    off = cf__wire_begin(&b, CF_FRAME_CANCEL, 1);
    cf__wbuf_u64(&b, 9);
    cf__wire_end(&b, off);
    emit("cancel", &b, true);

    /* A stream of frames, as a reader sees it: TASK, CANCEL, RESULT. */
    off = cf__wire_begin(&b, CF_FRAME_TASK, 1);
    cf__wire_task_head(&b, &main_fn, 3);
    cf__wire_item(&b, "x", 2);
    cf__wire_end(&b, off);
    off = cf__wire_begin(&b, CF_FRAME_CANCEL, 1);
    cf__wbuf_u64(&b, 3);
    cf__wire_end(&b, off);
    off = cf__wire_begin(&b, CF_FRAME_RESULT, 1);
    result(&b, 3, CF_ECANCELLED, 0, CF_KIND_NONE, NULL, 0, "cancelled");
    cf__wire_end(&b, off);
    emit("stream-three", &b, false);

    /* WAKE: a header alone. */
    off = cf__wire_begin(&b, CF_FRAME_WAKE, 0);
    cf__wire_end(&b, off);
    emit("wake", &b, true);
    return 0;
}

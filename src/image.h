/*
 * image.h -- the program image that a process worker starts from
 * (image.c explains the rules).
 */
#ifndef CF_IMAGE_H
#define CF_IMAGE_H

#include "internal.h"

/* The descriptor a worker's image is passed on when it must be started
 * from the open file rather than by its path (see cf_image_cmd.fd). */
#define CF_IMAGE_FD 5

/* How to start a worker: exec `file` with `argv`.  When fd >= 0, the
 * child must first dup2(fd, CF_IMAGE_FD): `file` or argv[1] then names
 * /proc/self/fd/5, the very image this process runs. */
typedef struct cf_image_cmd {
    const char *file;
    char *argv[3];
    int fd;
} cf_image_cmd;

/* Fills cmd for starting a worker now.  CF_OK, or CF_EBROKEN with a
 * message in err when this program cannot be started again (no /proc). */
CF_HIDDEN int cf__image_cmd(cf_image_cmd *cmd, char *err, size_t errlen);

#endif

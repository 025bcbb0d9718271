/*
 * image.c -- the program image that a process worker starts from.
 *
 * A worker is this program, started again (its constructor in worker.c
 * turns it into a worker before main).  It must be the very image the
 * parent runs, because tasks are named by module, build-id and offset:
 *
 *   - The file may have been deleted (a reinstall) or replaced (a
 *     rebuild) since the program started.  The image is opened once, from
 *     /proc/self/exe, which names the running image in both cases.  While
 *     the path still names that file (the usual case), workers start from
 *     the path: `ps` and valgrind show the program's name.  Otherwise they
 *     start from the open file, passed on as /proc/self/fd/5.
 *   - The program may have been started through the dynamic loader
 *     (`/lib64/ld-linux-x86-64.so.2 ./prog`).  /proc/self/exe is then the
 *     loader, and starting it with no arguments fails.  Such a start is
 *     recognised (the kernel gave no interpreter, AT_BASE = 0, although the
 *     program has one, PT_INTERP), and workers are started the same way:
 *     the loader, with the program's absolute path (or its open file).
 *     Loader options given on that command line (--library-path, ...) are
 *     not repeated; the environment (LD_LIBRARY_PATH) is.
 */
#include "image.h"
#include "fnref.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <link.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/stat.h>
#include <unistd.h>

static struct {
    int fd;    /* the running image (the program), or -1 */
    dev_t dev; /* ... and its identity */
    ino_t ino;
    char path[PATH_MAX];      /* where it was started from */
    char loader[PATH_MAX];    /* the loader it was started through, or "" */
    char fdpath[32];          /* "/proc/self/fd/5" */
    char err[PATH_MAX + 256]; /* why it cannot be started, if fd < 0 */
} img = {.fd = -1};

static pthread_once_t img_once = PTHREAD_ONCE_INIT;

/* Drops the " (deleted)" that the kernel appends to a deleted file. */
static void strip_deleted(char *path)
{
    static const char tag[] = " (deleted)";
    size_t n = strlen(path), t = sizeof tag - 1;
    if (n > t && strcmp(path + n - t, tag) == 0)
        path[n - t] = '\0';
}

/* True if the program was started by naming the loader on the command
 * line: the kernel then ran the loader as the program (no interpreter,
 * AT_BASE = 0), although the program asks for one (PT_INTERP). */
static bool started_through_loader(void)
{
    if (getauxval(AT_BASE) != 0)
        return false;
    const ElfW(Phdr) *ph = (const ElfW(Phdr) *)getauxval(AT_PHDR);
    size_t n = getauxval(AT_PHNUM);
    for (size_t i = 0; ph != NULL && i < n; i++)
        if (ph[i].p_type == PT_INTERP)
            return true;
    return false;
}

static void img_init(void)
{
    snprintf(img.fdpath, sizeof img.fdpath, "/proc/self/fd/%d", CF_IMAGE_FD);
    ssize_t len = readlink("/proc/self/exe", img.path, sizeof img.path - 1);
    if (len <= 0 || len >= (ssize_t)sizeof img.path - 1) {
        snprintf(img.err, sizeof img.err,
                 "cannot find this program's executable (/proc/self/exe: %s)",
                 len < 0 ? strerror(errno) : "path too long");
        return;
    }
    img.path[len] = '\0';
    strip_deleted(img.path);
    const char *open_path = "/proc/self/exe";
    if (started_through_loader()) {
        /* The program is the file mapped at its program headers. */
        memcpy(img.loader, img.path, sizeof img.loader);
        if (!cf__mapped_path(getauxval(AT_PHDR), img.path, sizeof img.path)) {
            snprintf(img.err, sizeof img.err,
                     "this program was started through the loader %s, and "
                     "its own file cannot be found in /proc/self/maps",
                     img.loader);
            return;
        }
        strip_deleted(img.path);
        open_path = img.path;
    }
    img.fd = open(open_path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (img.fd < 0 || fstat(img.fd, &st) != 0) {
        snprintf(img.err, sizeof img.err, "cannot open this program (%s): %s",
                 open_path, strerror(errno));
        if (img.fd >= 0)
            close(img.fd);
        img.fd = -1;
        return;
    }
    img.dev = st.st_dev;
    img.ino = st.st_ino;
}

int cf__image_cmd(cf_image_cmd *cmd, char *err, size_t errlen)
{
    pthread_once(&img_once, img_init);
    if (img.fd < 0) {
        snprintf(err, errlen, "%s", img.err);
        return CF_EBROKEN;
    }
    /* One stat per worker start: is the path still this image? */
    struct stat st;
    bool same = stat(img.path, &st) == 0 && st.st_dev == img.dev &&
                st.st_ino == img.ino;
    char *prog = same ? img.path : img.fdpath;
    cmd->fd = same ? -1 : img.fd;
    if (img.loader[0] != '\0') {
        cmd->file = img.loader;
        cmd->argv[0] = img.loader;
        cmd->argv[1] = prog;
        cmd->argv[2] = NULL;
    } else {
        cmd->file = prog;
        cmd->argv[0] = img.path;
        cmd->argv[1] = NULL;
    }
    return CF_OK;
}

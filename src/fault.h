/*
 * fault.h -- fault injection (the CF_FAULT_INJECTION build option).
 *
 * In that build, every allocation, thread creation, process spawn, and
 * socket read and write made by the library goes through a wrapper that
 * fails it now and then, as the environment asks:
 *
 *   CF_FAULTS="seed=7,alloc=0.01,thread=0.2,spawn=0.2,io=0.01"
 *
 * (a probability per call and kind; io failures are EINTR, EAGAIN, short
 * reads and writes, or EPIPE).  The tests then check that every public call
 * answers with an error code instead of crashing, every future still ends
 * exactly once, and nothing leaks.  In a normal build this header defines
 * nothing and costs nothing.
 */
#ifndef CF_FAULT_H
#define CF_FAULT_H

#ifdef CF_FAULT_INJECTION

#include <pthread.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

void *cf__fault_malloc(size_t n);
void *cf__fault_calloc(size_t n, size_t size);
void *cf__fault_realloc(void *p, size_t n);
int cf__fault_pthread_create(pthread_t *t, const pthread_attr_t *a,
                             void *(*fn)(void *), void *arg);
int cf__fault_posix_spawn(pid_t *pid, const char *path,
                          const posix_spawn_file_actions_t *fa,
                          const posix_spawnattr_t *at, char *const argv[],
                          char *const envp[]);
ssize_t cf__fault_read(int fd, void *buf, size_t n);
ssize_t cf__fault_send(int fd, const void *buf, size_t n, int flags);

#ifndef CF_FAULT_IMPL
#define malloc(n) cf__fault_malloc(n)
#define calloc(n, s) cf__fault_calloc(n, s)
#define realloc(p, n) cf__fault_realloc(p, n)
#define pthread_create(t, a, f, x) cf__fault_pthread_create(t, a, f, x)
#define posix_spawn(p, s, f, a, v, e) cf__fault_posix_spawn(p, s, f, a, v, e)
#endif
/* Socket I/O is wrapped where the library calls it (not by a macro: the
 * names are also struct members). */
#define cf__io_read cf__fault_read
#define cf__io_send cf__fault_send
#define cf__io_write(f, b, n) cf__fault_send(f, b, n, 0)

#else /* !CF_FAULT_INJECTION */

#define cf__io_read read
#define cf__io_send send
#define cf__io_write write

#endif /* CF_FAULT_INJECTION */
#endif

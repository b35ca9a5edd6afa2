/* util: allocation wrappers that never return NULL, fatal errors, and small
 * string helpers shared by every module. */
#ifndef POSTHORN_UTIL_H
#define POSTHORN_UTIL_H

#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

void *xmalloc(size_t n);
void *xcalloc(size_t nmemb, size_t size);
void *xrealloc(void *p, size_t n);
/* Grow *arr (of *n elements of size elsize) by one zeroed element; returns it. */
void *xappend(void *arrp, size_t *n, size_t elsize);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Grow the array *arrp (*n used of *cap, elements of elsize) by one zeroed
 * element, doubling the capacity as needed; returns the new element. */
void *xgrow(void *arrp, size_t *n, size_t *cap, size_t elsize);

/* Format a message into err (size errsz), ending in "..." when cut. */
void errfmt(char *err, size_t errsz, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void verrfmt(char *err, size_t errsz, const char *fmt, va_list ap) __attribute__((format(printf, 3, 0)));

/* One line "posthorn: message" on stderr, for the command line.  When
 * stderr cannot be written there is nobody left to tell: nothing is
 * reported back. */
void complain(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void vcomplain(const char *fmt, va_list ap) __attribute__((format(printf, 1, 0)));
/* Text as it is on stderr (a prompt, a usage line), flushed; like
 * complain(), nothing is reported back. */
void stderr_puts(const char *text);

/* fprintf for a report (to stdout, or a stream the caller reads) whose
 * writes are checked once, at its end: a failed write sets the stream's
 * error flag (ferror(3)) and report_end() finds it. */
void report(FILE *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Flush f; 0, or -1 with errno when any write to it failed. */
int report_end(FILE *f);
/* A file written whole under the temporary name tmp (mode 0600, never
 * through a link), then put in place by replace_commit(): readers see the
 * old file or the new one, never a part.  NULL with errno. */
FILE *replace_open(const char *tmp);
/* Flush fp (and fdatasync it when durable), close it and rename tmp over
 * path; on any failure tmp is removed.  0, or -1 with errno. */
int replace_commit(FILE *fp, const char *tmp, const char *path, bool durable);

/* Print "posthorn: message" on stderr and exit(1).  For broken invariants and
 * set-up failures only; a peer's error is never fatal. */
void fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

/* snprintf that reports truncation: true when everything fit.  The
 * result must be used: text that was cut is never to be used as if whole
 * (a path, a host name, a key).  When a cut cannot happen by construction,
 * use xsnprintf() and say why in a comment. */
bool bsnprintf(char *buf, size_t size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4), warn_unused_result));
/* bsnprintf() for text that fits by construction (a bounded value in a
 * buffer sized for it): a cut is a broken invariant, fatal(). */
void xsnprintf(char *buf, size_t size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* ASCII lower-casing in place; returns s. */
char *str_lower(char *s);
bool str_ieq(const char *a, const char *b);
/* true when s ends with suffix, case-insensitively. */
bool str_iendswith(const char *s, const char *suffix);

/* Write all of buf to fd, retrying on EINTR / short writes.  0 or -1. */
int write_all(int fd, const void *buf, size_t len);
/* fsync a directory by path.  0 or -1 (errno set). */
int fsync_dir(const char *path);
/* An exclusive lock on all of fd's file, held by its open file
 * description (fcntl(2) F_OFD_SETLK: unlike flock(2), NFSv4 and cluster
 * file systems honour it between hosts); closing the last descriptor of
 * that description, or a crash, releases it.  wait: block until it is
 * free.  0, or -1 with errno (EWOULDBLOCK: not wait and someone holds it). */
int file_lock(int fd, bool wait);
/* fdatasync every fd, several at once (up to 8 threads): the device sees
 * the flushes together instead of one after the other.  errs[i] is 0 or
 * the errno for fds[i]. */
void fdatasync_all(const int *fds, int *errs, size_t n);

/* pthread_create() for a thread that never takes a signal: signals go to
 * the event loop's thread.  0 or an errno. */
int thread_start(pthread_t *t, void *(*fn)(void *), void *arg);
/* mkdir -p with mode; 0 or -1. */
int mkdir_p(const char *path, unsigned mode);

/* The folder part of path (caller frees): "." when it has none, "/" at
 * the root. */
char *path_dirname(const char *path);

#endif

/* util: allocation wrappers, fatal errors and small string and file helpers. */
#define _GNU_SOURCE
#include "util.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

static void out_of_memory(void) __attribute__((noreturn));
static void out_of_memory(void)
{
	fatal("out of memory");
}

void *xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);
	if (!p)
		out_of_memory();
	return p;
}

void *xcalloc(size_t nmemb, size_t size)
{
	void *p = calloc(nmemb ? nmemb : 1, size ? size : 1);
	if (!p)
		out_of_memory();
	return p;
}

void *xrealloc(void *p, size_t n)
{
	void *q = realloc(p, n ? n : 1);
	if (!q)
		out_of_memory();
	return q;
}

void *xappend(void *arrp, size_t *n, size_t elsize)
{
	void **arr = arrp;
	if (*n >= ((size_t)-1) / elsize - 1)
		out_of_memory();
	char *a = xrealloc(*arr, (*n + 1) * elsize);
	memset(a + *n * elsize, 0, elsize);
	*arr = a;
	return a + (*n)++ * elsize;
}

void *xgrow(void *arrp, size_t *n, size_t *cap, size_t elsize)
{
	void **arr = arrp;
	if (*n == *cap) {
		size_t c = *cap ? *cap * 2 : 16;
		if (c > ((size_t)-1) / elsize)
			out_of_memory();
		*arr = xrealloc(*arr, c * elsize);
		*cap = c;
	}
	char *e = (char *)*arr + (*n)++ * elsize;
	memset(e, 0, elsize);
	return e;
}

void verrfmt(char *err, size_t errsz, const char *fmt, va_list ap)
{
	if (errsz == 0)
		return;
	int n = vsnprintf(err, errsz, fmt, ap);
	if (n < 0)
		err[0] = '\0';
	else if ((size_t)n >= errsz && errsz > 4)
		memcpy(err + errsz - 4, "...", 4); /* cut: say so */
}

void errfmt(char *err, size_t errsz, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	verrfmt(err, errsz, fmt, ap);
	va_end(ap);
}

void vcomplain(const char *fmt, va_list ap)
{
	fputs("posthorn: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
}

void complain(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vcomplain(fmt, ap);
	va_end(ap);
}

char *xstrdup(const char *s)
{
	char *p = strdup(s);
	if (!p)
		out_of_memory();
	return p;
}

char *xstrndup(const char *s, size_t n)
{
	char *p = strndup(s, n);
	if (!p)
		out_of_memory();
	return p;
}

char *xasprintf(const char *fmt, ...)
{
	va_list ap;
	char *s;
	va_start(ap, fmt);
	int r = vasprintf(&s, fmt, ap);
	va_end(ap);
	if (r < 0)
		out_of_memory();
	return s;
}

void fatal(const char *fmt, ...)
{
	va_list ap;
	fputs("posthorn: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(1);
}

bool bsnprintf(char *buf, size_t size, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int r = vsnprintf(buf, size, fmt, ap);
	va_end(ap);
	return r >= 0 && (size_t)r < size;
}

char *str_lower(char *s)
{
	for (char *p = s; *p; p++)
		*p = (char)tolower((unsigned char)*p);
	return s;
}

bool str_ieq(const char *a, const char *b)
{
	return strcasecmp(a, b) == 0;
}

bool str_iendswith(const char *s, const char *suffix)
{
	size_t ls = strlen(s), lx = strlen(suffix);
	return lx <= ls && strcasecmp(s + ls - lx, suffix) == 0;
}

int write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;
	while (len > 0) {
		ssize_t w = write(fd, p, len);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += w;
		len -= (size_t)w;
	}
	return 0;
}

int fsync_dir(const char *path)
{
	int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	int r = fsync(fd);
	int saved = errno;
	close(fd);
	errno = saved;
	return r;
}

int mkdir_p(const char *path, unsigned mode)
{
	char *p = xstrdup(path);
	for (char *s = p + 1; *s; s++) {
		if (*s != '/')
			continue;
		*s = '\0';
		if (mkdir(p, mode) < 0 && errno != EEXIST) {
			free(p);
			return -1;
		}
		*s = '/';
	}
	int r = mkdir(p, mode);
	free(p);
	if (r < 0 && errno != EEXIST)
		return -1;
	return 0;
}

/* ---- syncing many files at once ------------------------------------------ */

enum { SYNC_THREADS_MAX = 8 };

struct sync_job {
	const int *fds;
	int *errs;
	size_t n;
	size_t next;            /* the next index to take, atomically */
};

static void *sync_worker(void *arg)
{
	struct sync_job *j = arg;
	for (;;) {
		size_t i = __atomic_fetch_add(&j->next, 1, __ATOMIC_RELAXED);
		if (i >= j->n)
			return NULL;
		j->errs[i] = fdatasync(j->fds[i]) < 0 ? errno : 0;
	}
}

void fdatasync_all(const int *fds, int *errs, size_t n)
{
	struct sync_job j = {.fds = fds, .errs = errs, .n = n};
	pthread_t t[SYNC_THREADS_MAX - 1];
	size_t started = 0;
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old); /* signals stay with the loop thread */
	while (started < SYNC_THREADS_MAX - 1 && started + 1 < n &&
	       pthread_create(&t[started], NULL, sync_worker, &j) == 0)
		started++;
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	sync_worker(&j); /* this thread takes its share too */
	for (size_t k = 0; k < started; k++)
		pthread_join(t[k], NULL);
}

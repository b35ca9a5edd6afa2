/* util: allocation wrappers, fatal errors and small string and file helpers. */
#define _GNU_SOURCE
#include "lib/util.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

/* One message of complain() and fatal(); longer ones are cut, with "...". */
#define UTIL_MESSAGE_MAX 8192

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
	char msg[UTIL_MESSAGE_MAX];
	verrfmt(msg, sizeof msg, fmt, ap); /* a cut message ends in "..." */
	(void)fprintf(stderr, "posthorn: %s\n", msg);
}

void stderr_puts(const char *text)
{
	(void)fputs(text, stderr);
	(void)fflush(stderr);
}

void report(FILE *f, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	(void)vfprintf(f, fmt, ap); /* a failure sets ferror(f): report_end() */
	va_end(ap);
}

int report_end(FILE *f)
{
	if (fflush(f) == EOF)
		return -1;
	if (ferror(f)) {
		errno = EIO;
		return -1;
	}
	return 0;
}

FILE *replace_open(const char *tmp)
{
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		return NULL;
	FILE *fp = fdopen(fd, "w");
	if (!fp) {
		int e = errno;
		close(fd);
		(void)unlink(tmp);
		errno = e;
	}
	return fp;
}

int replace_commit(FILE *fp, const char *tmp, const char *path, bool durable)
{
	bool ok = report_end(fp) == 0 && (!durable || fdatasync(fileno(fp)) == 0);
	int e = errno;
	if (fclose(fp) != 0 && ok) {
		ok = false;
		e = errno;
	}
	if (ok && rename(tmp, path) == 0)
		return 0;
	if (ok)
		e = errno;
	(void)unlink(tmp);
	errno = e;
	return -1;
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
	va_start(ap, fmt);
	vcomplain(fmt, ap);
	va_end(ap);
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

void xsnprintf(char *buf, size_t size, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int r = vsnprintf(buf, size, fmt, ap);
	va_end(ap);
	if (r < 0 || (size_t)r >= size)
		fatal("text does not fit its buffer (%zu bytes): \"%.40s\"", size, fmt);
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

int file_lock(int fd, bool wait)
{
	struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0};
	for (;;) {
		if (fcntl(fd, wait ? F_OFD_SETLKW : F_OFD_SETLK, &fl) == 0)
			return 0;
		if (errno == EINTR)
			continue;
		if (errno == EACCES || errno == EAGAIN)
			errno = EWOULDBLOCK; /* fcntl(2): either means "held by another" */
		return -1;
	}
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

/* A few threads, started at the first batch and kept: starting threads
 * for every batch cost more than the syncs they ran side by side.  A job
 * is a set of descriptors; workers and the caller take indexes until none
 * is left, the caller waits until every sync has returned. */
enum { SYNC_THREADS_MAX = 8 };

struct sync_job {
	const int *fds;
	int *errs;
	size_t n;
	size_t next;            /* the next index to take */
	size_t finished;        /* syncs returned */
	struct sync_job *later; /* jobs waiting for hands, oldest first */
};

static struct {
	pthread_mutex_t lock;
	pthread_cond_t work, done;
	struct sync_job *jobs;  /* with indexes left to take */
	size_t threads;
} sync_pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, PTHREAD_COND_INITIALIZER,
	       NULL, 0};

/* Under the lock: one index of the oldest job, which leaves the list when
 * its last index is taken; NULL when no work is waiting. */
static struct sync_job *sync_take(size_t *i)
{
	struct sync_job *j = sync_pool.jobs;
	if (!j)
		return NULL;
	*i = j->next++;
	if (j->next == j->n)
		sync_pool.jobs = j->later;
	return j;
}

/* Called with the lock held, returns with it held. */
static void sync_run(struct sync_job *j, size_t i)
{
	pthread_mutex_unlock(&sync_pool.lock);
	int e = fdatasync(j->fds[i]) < 0 ? errno : 0;
	pthread_mutex_lock(&sync_pool.lock);
	j->errs[i] = e;
	if (++j->finished == j->n)
		pthread_cond_broadcast(&sync_pool.done);
}

static void *sync_worker(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&sync_pool.lock);
	for (;;) {
		size_t i;
		struct sync_job *j = sync_take(&i);
		if (j)
			sync_run(j, i);
		else
			pthread_cond_wait(&sync_pool.work, &sync_pool.lock);
	}
	return NULL;
}

/* Under the lock: the workers, started once (signals stay with the loop
 * thread); fewer when threads cannot be made, the caller syncs alone. */
static void sync_pool_start(void)
{
	if (sync_pool.threads > 0)
		return;
	pthread_t t;
	while (sync_pool.threads < SYNC_THREADS_MAX - 1 && thread_start(&t, sync_worker, NULL) == 0) {
		pthread_detach(t); /* they live as long as the process */
		sync_pool.threads++;
	}
	if (sync_pool.threads == 0)
		sync_pool.threads = SIZE_MAX; /* none: do not try again */
}

int thread_start(pthread_t *t, void *(*fn)(void *), void *arg)
{
	sigset_t all, old;
	sigfillset(&all);
	int e = pthread_sigmask(SIG_SETMASK, &all, &old);
	if (e != 0)
		return e;
	e = pthread_create(t, NULL, fn, arg);
	int e2 = pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (e2 != 0)
		fatal("pthread_sigmask: %s", strerror(e2));
	return e;
}

void fdatasync_all(const int *fds, int *errs, size_t n)
{
	if (n == 0)
		return;
	struct sync_job j = {.fds = fds, .errs = errs, .n = n};
	pthread_mutex_lock(&sync_pool.lock);
	sync_pool_start();
	struct sync_job **tail = &sync_pool.jobs;
	while (*tail)
		tail = &(*tail)->later;
	*tail = &j;
	pthread_cond_broadcast(&sync_pool.work);
	while (j.next < j.n) { /* the caller takes its share of its own job */
		size_t i = j.next++;
		if (j.next == j.n) { /* last index: off the list */
			struct sync_job **p = &sync_pool.jobs;
			while (*p != &j)
				p = &(*p)->later;
			*p = j.later;
		}
		sync_run(&j, i);
	}
	while (j.finished < j.n)
		pthread_cond_wait(&sync_pool.done, &sync_pool.lock);
	pthread_mutex_unlock(&sync_pool.lock);
}

char *path_dirname(const char *path)
{
	const char *slash = strrchr(path, '/');
	if (!slash)
		return xstrdup(".");
	if (slash == path)
		return xstrdup("/");
	return xstrndup(path, (size_t)(slash - path));
}

/* deliver_local: Maildir delivery (https://cr.yp.to/proto/maildir.html:
 * write in tmp/, fsync, rename into new/) and the delivery worker thread
 * that delivers committed spool messages off the event loop (SPEC.md §5). */
#define _GNU_SOURCE /* sync_file_range */
#include "queue/deliver_local.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/rand.h>

#include "queue/deliver_remote.h"
#include "lib/log.h"
#include "queue/spool.h"
#include "lib/util.h"

enum {
	MAILDIR_COPY_BUF = 64 * 1024,   /* spool → Maildir copy buffer */
	MAILDIR_NAME_TRIES = 3,         /* fresh names tried when one exists */
	MAILDIR_HOST_MAX = 256,
	DELIVERY_RETRY_FIRST = 30,      /* seconds; doubles per failure ... */
	DELIVERY_RETRY_MAX = 600,       /* ... up to this */
	DELIVERY_REASON_MAX = 512,
	DELIVERY_BATCH_MAX = 128,       /* messages taken from the queue at once */
	DELIVERY_GATHER_MS = 30,        /* under steady load: a batch gathers this long */
	DELIVERY_PARALLEL_MIN = 3,      /* copies in a batch: their fdatasyncs run at once */
	/* The worker's nice value: when the CPU is short, the event loop
	 * (greetings, replies, 250s) runs first and delivery catches up in
	 * larger batches; not so low that it starves under a busy loop. */
	DELIVERY_NICE = 10,
};

/* ---- Maildir paths ------------------------------------------------------ */

static bool maildir_is_ctl(unsigned char c)
{
	return c < 0x20 || c == 0x7f;
}

/* '%', '/', a leading '.' and control bytes become %XX: every local part
 * gets its own folder, and none is hidden or leaves <domain>/. */
static char *maildir_encode_local(const char *local, size_t len)
{
	static const char hex[] = "0123456789ABCDEF";
	char *out = xmalloc(len * 3 + 1);
	size_t o = 0;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)local[i];
		if (c == '%' || c == '/' || (i == 0 && c == '.') || maildir_is_ctl(c)) {
			out[o++] = '%';
			out[o++] = hex[c >> 4];
			out[o++] = hex[c & 15];
		} else {
			out[o++] = (char)c;
		}
	}
	out[o] = '\0';
	return out;
}

/* The domain as a folder name: lower-cased; NULL when it could escape or
 * hide ("", ".", "..", a leading '.', '/', control bytes). */
static char *maildir_domain(const char *domain)
{
	if (domain[0] == '\0' || domain[0] == '.')
		return NULL;
	for (const char *p = domain; *p; p++)
		if (*p == '/' || maildir_is_ctl((unsigned char)*p))
			return NULL;
	return str_lower(xstrdup(domain));
}

char *maildir_path(const char *mailboxes, const char *address)
{
	const char *at = strrchr(address, '@');
	if (!at || at == address)
		return NULL;
	char *domain = maildir_domain(at + 1);
	if (!domain)
		return NULL;
	char *local = maildir_encode_local(address, (size_t)(at - address));
	char *path = xasprintf("%s/%s/%s", mailboxes, domain, local);
	free(domain);
	free(local);
	return path;
}

/* ---- Maildir delivery --------------------------------------------------- */

static void maildir_err(char *err, size_t errsz, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void maildir_err(char *err, size_t errsz, const char *fmt, ...)
{
	if (errsz == 0)
		return;
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(err, errsz, fmt, ap);
	va_end(ap);
	if (n < 0)
		err[0] = '\0';
	else if ((size_t)n >= errsz && errsz >= 4)
		memcpy(err + errsz - 4, "...", 4); /* truncated: say so */
}

static int maildir_is_dir(const char *path)
{
	struct stat st;
	if (stat(path, &st) < 0)
		return -1;
	if (!S_ISDIR(st.st_mode)) {
		errno = ENOTDIR;
		return -1;
	}
	return 0;
}

/* fsync the folder holding path, so that a new entry in it is durable. */
static int maildir_sync_parent(const char *path)
{
	char *parent = xstrdup(path);
	char *slash = strrchr(parent, '/');
	int r;
	if (!slash)
		r = fsync_dir(".");
	else if (slash == parent)
		r = fsync_dir("/");
	else {
		*slash = '\0';
		r = fsync_dir(parent);
	}
	int saved = errno;
	free(parent);
	errno = saved;
	return r;
}

/* mkdir -p (mode 0700) that fsyncs the parent of every folder it creates
 * and fails with ENOTDIR when something else is in the way. */
static int maildir_mkdir(const char *path)
{
	if (mkdir(path, 0700) == 0)
		return maildir_sync_parent(path);
	if (errno == EEXIST)
		return maildir_is_dir(path);
	if (errno != ENOENT)
		return -1;
	char *parent = xstrdup(path);
	char *slash = strrchr(parent, '/');
	while (slash && slash > parent && slash[-1] == '/')
		slash--;
	int r = -1;
	if (slash && slash != parent) {
		*slash = '\0';
		r = maildir_mkdir(parent);
	}
	free(parent);
	if (r < 0)
		return -1;
	if (mkdir(path, 0700) == 0)
		return maildir_sync_parent(path);
	if (errno == EEXIST)
		return maildir_is_dir(path);
	return -1;
}

static int maildir_make_folders(const char *dir, char *err, size_t errsz)
{
	static const char *const subs[] = {"", "/tmp", "/new", "/cur"};
	for (size_t i = 0; i < ARRAY_LEN(subs); i++) {
		char *p = xasprintf("%s%s", dir, subs[i]);
		int r = maildir_mkdir(p);
		if (r < 0)
			maildir_err(err, errsz, "cannot create folder %s: %s", p, strerror(errno));
		free(p);
		if (r < 0)
			return -1;
	}
	return 0;
}

/* The host part of a Maildir name: '/' and ':' written as \057 and \072. */
static void maildir_host(char *out, size_t outsz)
{
	char host[MAILDIR_HOST_MAX + 1];
	if (gethostname(host, sizeof host - 1) < 0 || host[0] == '\0')
		memcpy(host, "localhost", sizeof "localhost");
	host[sizeof host - 1] = '\0';
	size_t o = 0;
	for (const char *p = host; *p && o + 5 < outsz; p++) {
		if (*p == '/' || *p == ':') {
			memcpy(out + o, *p == '/' ? "\\057" : "\\072", 4);
			o += 4;
		} else {
			out[o++] = *p;
		}
	}
	out[o] = '\0';
}

static struct {
	pthread_once_t once;
	long pid;
	char host[MAILDIR_HOST_MAX * 4 + 1];
} maildir_self = {.once = PTHREAD_ONCE_INIT};

/* The process's ID and host name, read once: not two system calls for
 * every copy. */
static void maildir_self_init(void)
{
	maildir_self.pid = (long)getpid();
	maildir_host(maildir_self.host, sizeof maildir_self.host);
}

/* time.M<usec>P<pid>Q<deliveries>R<random>.<host>; ",S=<size>,W=<size
 * with CRLF>" is added when the message moves into new/. */
static char *maildir_unique_name(void)
{
	static uint64_t deliveries;
	pthread_once(&maildir_self.once, maildir_self_init);
	struct timespec ts;
	if (clock_gettime(CLOCK_REALTIME, &ts) < 0)
		fatal("clock_gettime: %s", strerror(errno));
	unsigned char rnd[4];
	if (RAND_bytes(rnd, sizeof rnd) != 1)
		fatal("maildir: no random bytes for a file name");
	uint32_t r = (uint32_t)rnd[0] << 24 | (uint32_t)rnd[1] << 16 | (uint32_t)rnd[2] << 8 | rnd[3];
	uint64_t q = __atomic_add_fetch(&deliveries, 1, __ATOMIC_RELAXED);
	return xasprintf("%lld.M%06ldP%ldQ%lluR%08x.%s", (long long)ts.tv_sec,
			 ts.tv_nsec / 1000, maildir_self.pid, (unsigned long long)q, (unsigned)r,
			 maildir_self.host);
}

/* Bytes written to a Maildir file and its lines, for S= and W=. */
struct maildir_size {
	off_t bytes;
	off_t lines;
};

/* Write buf with CRLF turned into LF, the line end of Maildir files on
 * Unix.  The spool holds no bare CR (smtp_data refuses it), so every CR is
 * half of a CRLF and can simply be dropped. */
static int maildir_write_lf(int dst, char *buf, size_t n, struct maildir_size *sz)
{
	size_t o = 0;
	for (size_t i = 0; i < n; i++) {
		if (buf[i] == '\r')
			continue;
		if (buf[i] == '\n')
			sz->lines++;
		buf[o++] = buf[i];
	}
	sz->bytes += (off_t)o;
	return write_all(dst, buf, o);
}

/* Copy len bytes at offset of src into dst. */
static int maildir_copy(int dst, int src, off_t offset, off_t len, struct maildir_size *sz)
{
	char *buf = xmalloc(MAILDIR_COPY_BUF);
	int r = 0;
	while (len > 0) {
		size_t want = len < MAILDIR_COPY_BUF ? (size_t)len : MAILDIR_COPY_BUF;
		ssize_t n = pread(src, buf, want, offset);
		if (n < 0 && errno == EINTR)
			continue;
		if (n == 0)
			errno = EIO; /* the spool file is shorter than its envelope says */
		if (n <= 0 || maildir_write_lf(dst, buf, (size_t)n, sz) < 0) {
			r = -1;
			break;
		}
		offset += n;
		len -= n;
	}
	int saved = errno;
	free(buf);
	errno = saved;
	return r;
}

struct maildir_file {
	char *dir;              /* <mailboxes>/<domain>/<local> */
	char *name;
	char *tmp;              /* dir/tmp/name */
	char *new;              /* dir/new/name,S=...,W=... once renamed */
	int fd;
	struct maildir_size sz;
};

static int maildir_create(struct maildir_file *mf, char *err, size_t errsz)
{
	for (int try = 0; try < MAILDIR_NAME_TRIES; try++) {
		mf->name = maildir_unique_name();
		mf->tmp = xasprintf("%s/tmp/%s", mf->dir, mf->name);
		mf->fd = open(mf->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
		if (mf->fd >= 0)
			return 0;
		int e = errno;
		maildir_err(err, errsz, "cannot create %s: %s", mf->tmp, strerror(e));
		free(mf->name);
		free(mf->tmp);
		mf->name = mf->tmp = NULL;
		errno = e;
		if (e != EEXIST)
			break;
	}
	return -1;
}

/* Write the copy into tmp/ and start its writeback, so that the copies of
 * a batch reach the disk together. */
static int maildir_write(struct maildir_file *mf, const char *hdr, int src, off_t offset,
			 off_t len, char *err, size_t errsz)
{
	char *h = xstrdup(hdr);
	int w = maildir_write_lf(mf->fd, h, strlen(h), &mf->sz);
	free(h);
	if (w < 0 || maildir_copy(mf->fd, src, offset, len, &mf->sz) < 0) {
		maildir_err(err, errsz, "cannot write %s: %s", mf->tmp, strerror(errno));
		return -1;
	}
	(void)sync_file_range(mf->fd, 0, 0, SYNC_FILE_RANGE_WRITE); /* a hint only */
	return 0;
}

/* fdatasync (unless a syncfs did it), close, rename into new/ (new/
 * itself is the caller's to fsync). */
static int maildir_publish(struct maildir_file *mf, bool synced, char *err, size_t errsz)
{
	if (!synced && fdatasync(mf->fd) < 0) {
		maildir_err(err, errsz, "cannot fsync %s: %s", mf->tmp, strerror(errno));
		return -1;
	}
	int fd = mf->fd;
	mf->fd = -1;
	if (close(fd) < 0) {
		maildir_err(err, errsz, "cannot close %s: %s", mf->tmp, strerror(errno));
		return -1;
	}
	/* S= the file's size, W= its size with CRLF line ends (what POP3
	 * and IMAP report), so readers need not count */
	mf->new = xasprintf("%s/new/%s,S=%lld,W=%lld", mf->dir, mf->name, (long long)mf->sz.bytes,
			    (long long)mf->sz.bytes + (long long)mf->sz.lines);
	int r = rename(mf->tmp, mf->new);
	if (r < 0 && errno == ENOENT && maildir_make_folders(mf->dir, err, errsz) == 0)
		r = rename(mf->tmp, mf->new); /* new/ was taken away: made again */
	if (r < 0) {
		maildir_err(err, errsz, "cannot rename %s: %s", mf->tmp, strerror(errno));
		free(mf->new);
		mf->new = NULL;
		return -1;
	}
	return 0;
}

static int maildir_sync_new(const char *dir, char *err, size_t errsz)
{
	char *newdir = xasprintf("%s/new", dir);
	int r = fsync_dir(newdir);
	if (r < 0)
		maildir_err(err, errsz, "cannot fsync %s: %s", newdir, strerror(errno));
	free(newdir);
	return r;
}

/* After a failure: remove what was written, so that nothing half-made (or
 * not known to be durable, and so to be delivered again) stays behind. */
static void maildir_discard(struct maildir_file *mf)
{
	if (mf->fd >= 0)
		close(mf->fd); /* the copy is thrown away: its close error is moot */
	mf->fd = -1;
	const char *path = mf->new ? mf->new : mf->tmp;
	if (path && unlink(path) < 0 && errno != ENOENT) {
		char p[LOG_VALUE_MAX];
		log_warn("event=maildir-error file=%s reason=\"cannot remove: %s\"",
			 log_escape(p, sizeof p, path, strlen(path)), strerror(errno));
	}
}

static void maildir_file_clear(struct maildir_file *mf)
{
	free(mf->dir);
	free(mf->name);
	free(mf->tmp);
	free(mf->new);
	memset(mf, 0, sizeof *mf);
	mf->fd = -1;
}

/* Header values must not be able to start a new header line. */
static bool maildir_header_safe(const char *s)
{
	for (; *s; s++)
		if (maildir_is_ctl((unsigned char)*s))
			return false;
	return true;
}

/* A file in tmp/ with the copy (the folders made first when missing), its
 * writeback started.  On failure nothing is left behind
 * and mf is cleared. */
static int maildir_stage(const char *mailboxes, const char *address, const char *sender,
			 int fd, off_t offset, off_t len, struct maildir_file *mf, char *err, size_t errsz)
{
	memset(mf, 0, sizeof *mf);
	mf->fd = -1;
	if (!maildir_header_safe(address) || !maildir_header_safe(sender)) {
		maildir_err(err, errsz, "address contains control characters");
		errno = EINVAL;
		return -1;
	}
	if (offset < 0 || len < 0) {
		maildir_err(err, errsz, "bad message offset or length");
		errno = EINVAL;
		return -1;
	}
	mf->dir = maildir_path(mailboxes, address);
	if (!mf->dir) {
		maildir_err(err, errsz, "address cannot name a Maildir folder");
		errno = EINVAL;
		return -1;
	}
	char *hdr = xasprintf("Return-Path: <%s>\r\nDelivered-To: %s\r\n", sender, address);
	/* the folders are made when the first try says they are missing (a
	 * Maildir that exists, the usual case, costs no mkdir and stat) */
	int r = maildir_create(mf, err, errsz);
	if (r < 0 && errno == ENOENT) {
		r = maildir_make_folders(mf->dir, err, errsz);
		if (r == 0)
			r = maildir_create(mf, err, errsz);
	}
	if (r == 0) {
		r = maildir_write(mf, hdr, fd, offset, len, err, errsz);
		if (r < 0)
			maildir_discard(mf);
	}
	int saved = errno;
	free(hdr);
	if (r < 0)
		maildir_file_clear(mf);
	errno = saved;
	return r;
}

int maildir_deliver(const char *mailboxes, const char *address, const char *sender,
		    int fd, off_t offset, off_t len, char *err, size_t errsz)
{
	struct maildir_file mf;
	if (maildir_stage(mailboxes, address, sender, fd, offset, len, &mf, err, errsz) < 0)
		return -1;
	int r = maildir_publish(&mf, false, err, errsz);
	if (r == 0)
		r = maildir_sync_new(mf.dir, err, errsz);
	int saved = errno;
	if (r < 0)
		maildir_discard(&mf);
	maildir_file_clear(&mf);
	errno = saved;
	return r;
}

/* ---- the delivery worker ------------------------------------------------ */

struct delivery_item {
	struct delivery_item *next;
	char id[SPOOL_ID_SIZE];
};

/* A message whose delivery failed, waiting for its next attempt. */
struct delivery_retry {
	struct delivery_retry *next;
	char id[SPOOL_ID_SIZE];
	struct timespec due;    /* CLOCK_MONOTONIC */
	unsigned failures;
	bool *unrecorded;       /* delivered, but spool_mark_done() failed */
	size_t nrcpts;
};

static struct {
	pthread_mutex_t lock;
	pthread_cond_t wake;
	pthread_t thread;
	pthread_cond_t ready;                   /* the worker has started */
	bool worker_ready;
	bool running;
	bool stopping;
	struct spool *sp;
	char *mailboxes;
	struct delivery_item *head, *tail;      /* FIFO of IDs to try now */
	char max_id[SPOOL_ID_SIZE];             /* the largest ID ever pushed */
	struct delivery_retry *retries;         /* deferred, unordered */
	/* the worker's own, read after it ends: */
	unsigned long long messages, batches, gathered;
} dl = {.lock = PTHREAD_MUTEX_INITIALIZER, .ready = PTHREAD_COND_INITIALIZER};

static bool delivery_id_ok(const char *id)
{
	size_t n = strlen(id);
	return n > 0 && n < SPOOL_ID_SIZE && strspn(id, "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ") == n;
}

/* 30s, 1m, 2m, 4m, 8m, 10m, 10m ... */
static unsigned delivery_backoff(unsigned failures)
{
	unsigned s = DELIVERY_RETRY_FIRST;
	for (unsigned i = 1; i < failures && s < DELIVERY_RETRY_MAX; i++)
		s *= 2;
	return s < DELIVERY_RETRY_MAX ? s : DELIVERY_RETRY_MAX;
}

static void delivery_format_duration(char *out, size_t outsz, unsigned s)
{
	bool ok = s % 60 == 0 ? bsnprintf(out, outsz, "%um", s / 60)
			      : bsnprintf(out, outsz, "%us", s);
	if (!ok)
		fatal("delivery_format_duration: buffer too small");
}

/* A quoted log value: printable ASCII and spaces kept, '"', '\\' and the
 * rest written as \xNN; truncated with "...". */
static const char *delivery_escape_reason(char *out, size_t outsz, const char *in)
{
	size_t o = 0;
	for (const char *p = in; *p; p++) {
		if (*p == ' ') {
			if (o + 1 + 4 > outsz) {
				memcpy(out + o, "...", 3);
				o += 3;
				break;
			}
			out[o++] = ' ';
			continue;
		}
		char one[8];
		log_escape(one, sizeof one, p, 1);
		size_t k = strlen(one);
		if (o + k + 4 > outsz) {
			memcpy(out + o, "...", 3);
			o += 3;
			break;
		}
		memcpy(out + o, one, k);
		o += k;
	}
	out[o] = '\0';
	return out;
}

static struct timespec delivery_now(void)
{
	struct timespec ts;
	if (clock_gettime(CLOCK_MONOTONIC, &ts) < 0)
		fatal("clock_gettime: %s", strerror(errno));
	return ts;
}

static bool delivery_before(const struct timespec *a, const struct timespec *b)
{
	return a->tv_sec < b->tv_sec || (a->tv_sec == b->tv_sec && a->tv_nsec < b->tv_nsec);
}

static void delivery_retry_free(struct delivery_retry *r)
{
	free(r->unrecorded);
	free(r);
}

/* Unlink and return the retry record of id, or a fresh one.  Lock held. */
static struct delivery_retry *delivery_take_retry(const char *id)
{
	for (struct delivery_retry **pp = &dl.retries; *pp; pp = &(*pp)->next) {
		struct delivery_retry *r = *pp;
		if (strcmp(r->id, id) == 0) {
			*pp = r->next;
			r->next = NULL;
			return r;
		}
	}
	struct delivery_retry *r = xcalloc(1, sizeof *r);
	memcpy(r->id, id, strlen(id) + 1);
	return r;
}

/* The earliest retry that is due, unlinked, or NULL.  Lock held. */
static struct delivery_retry *delivery_take_due(void)
{
	struct timespec now = delivery_now();
	struct delivery_retry **best = NULL;
	for (struct delivery_retry **pp = &dl.retries; *pp; pp = &(*pp)->next)
		if (!delivery_before(&now, &(*pp)->due) &&
		    (!best || delivery_before(&(*pp)->due, &(*best)->due)))
			best = pp;
	if (!best)
		return NULL;
	struct delivery_retry *r = *best;
	*best = r->next;
	r->next = NULL;
	return r;
}

/* The next message to work on, with its retry record.  Lock held. */
static struct delivery_retry *delivery_next(void)
{
	struct delivery_item *it = dl.head;
	if (it) {
		dl.head = it->next;
		if (!dl.head)
			dl.tail = NULL;
		struct delivery_retry *r = delivery_take_retry(it->id);
		free(it);
		return r;
	}
	return delivery_take_due();
}

/* Sleep until woken or until the earliest retry is due.  Lock held. */
static void delivery_wait(void)
{
	if (!dl.retries) {
		pthread_cond_wait(&dl.wake, &dl.lock);
		return;
	}
	struct timespec due = dl.retries->due;
	for (struct delivery_retry *r = dl.retries->next; r; r = r->next)
		if (delivery_before(&r->due, &due))
			due = r->due;
	pthread_cond_timedwait(&dl.wake, &dl.lock, &due);
}

static void delivery_defer(struct delivery_retry *r, unsigned delay)
{
	r->failures++;
	r->due = delivery_now();
	r->due.tv_sec += delay;
	pthread_mutex_lock(&dl.lock);
	r->next = dl.retries;
	dl.retries = r;
	pthread_mutex_unlock(&dl.lock);
}

static char *delivery_mailboxes(void)
{
	pthread_mutex_lock(&dl.lock);
	char *m = xstrdup(dl.mailboxes);
	pthread_mutex_unlock(&dl.lock);
	return m;
}

struct delivery_job {
	const char *id;
	const struct spool_envelope *env;
	const char *mailboxes;
	int fd;
	char retry_in[16];      /* what a failure in this attempt logs */
	struct delivery_retry *retry;
};

/* One line per failed attempt; to is NULL when the whole message failed. */
static void delivery_log_failure(const struct delivery_job *job, const char *to, const char *why)
{
	char t[LOG_VALUE_MAX], reason[DELIVERY_REASON_MAX];
	delivery_escape_reason(reason, sizeof reason, why);
	if (!to) {
		log_warn("event=delivery-failed id=%s reason=\"%s\" retry_in=%s", job->id, reason,
			 job->retry_in);
		return;
	}
	log_warn("event=delivery-failed id=%s to=%s reason=\"%s\" retry_in=%s", job->id,
		 log_escape(t, sizeof t, to, strlen(to)), reason, job->retry_in);
}

/* The retry record keeps one flag per recipient. */
static void delivery_fit_retry(struct delivery_retry *r, size_t nrcpts)
{
	if (r->nrcpts == nrcpts)
		return;
	free(r->unrecorded);
	r->unrecorded = xcalloc(nrcpts, sizeof *r->unrecorded);
	r->nrcpts = nrcpts;
}

enum delivery_load_result {
	DELIVERY_LOADED,        /* job->env filled, job->fd open */
	DELIVERY_GONE,          /* removed, or malformed (logged): drop the ID */
	DELIVERY_UNREADABLE,    /* logged; try again later */
};

static enum delivery_load_result delivery_load(struct delivery_job *job, struct spool_envelope *env)
{
	const char *what = "read";
	if (spool_read_envelope(dl.sp, job->id, env) == 0) {
		job->fd = spool_open_message(dl.sp, env);
		if (job->fd >= 0) {
			delivery_fit_retry(job->retry, env->nrcpts);
			return DELIVERY_LOADED;
		}
		int e = errno;
		spool_envelope_clear(env);
		errno = e;
		what = "open";
	}
	if (errno == ENOENT || errno == EINVAL)
		return DELIVERY_GONE;
	char why[DELIVERY_REASON_MAX];
	if (!bsnprintf(why, sizeof why, "cannot %s spool file: %s", what, strerror(errno)))
		why[0] = '\0';
	delivery_log_failure(job, NULL, why);
	return DELIVERY_UNREADABLE;
}

/* The local part is done: remote recipients go to the outbound runner,
 * which removes the message when they are done too.  Until the hand-over
 * only this thread touches the message, after it only the runner. */
static void delivery_finish(const char *id, bool remote)
{
	if (remote) {
		log_info("event=handoff id=%s to=outbound", id);
		outbound_handoff(id);
		return;
	}
	if (spool_remove(dl.sp, id) < 0)
		log_warn("event=spool-error id=%s reason=\"cannot remove: %s\"", id,
			 strerror(errno));
}

/* ---- a batch ------------------------------------------------------------
 *
 * The worker takes every message waiting (up to DELIVERY_BATCH_MAX) and
 * delivers them together, like the spool's group commit: all copies are
 * written into tmp/ first, then each is synced and renamed into new/, and
 * each new/ folder is fsynced once for the batch.  A message whose local
 * recipients are then all delivered (and which has no remote ones) is
 * removed from the spool without .done records, and queue/ is fsynced once
 * for all removals; otherwise each delivered recipient is recorded in
 * ID.done as before.  A crash between the Maildir renames and the removal
 * being durable delivers those copies again at the next start (at least
 * once, README "Storage"). */

struct delivery_msg {
	struct delivery_retry *r;
	struct spool_envelope env;
	struct delivery_job job;
	unsigned delay;
	bool loaded, failed, remote;
};

struct delivery_copy {
	struct maildir_file mf;
	struct delivery_msg *m;
	size_t rcpt;
	bool staged;            /* a file was written (not an earlier, unrecorded one) */
	bool ok;
};

struct delivery_batch {
	struct delivery_msg msgs[DELIVERY_BATCH_MAX];
	size_t nmsgs;
	struct delivery_copy *copies;
	size_t ncopies, capcopies;
	char *mailboxes;
};

static void delivery_batch_load(struct delivery_batch *b)
{
	for (size_t i = 0; i < b->nmsgs; i++) {
		struct delivery_msg *m = &b->msgs[i];
		m->delay = delivery_backoff(m->r->failures + 1);
		m->job = (struct delivery_job){.id = m->r->id, .env = &m->env, .fd = -1, .retry = m->r,
					       .mailboxes = b->mailboxes};
		delivery_format_duration(m->job.retry_in, sizeof m->job.retry_in, m->delay);
		enum delivery_load_result lr = delivery_load(&m->job, &m->env);
		if (lr == DELIVERY_GONE) {
			delivery_retry_free(m->r);
			m->r = NULL;
		}
		m->loaded = lr == DELIVERY_LOADED;
		m->failed = lr == DELIVERY_UNREADABLE;
	}
}

/* Every local recipient not yet done gets a copy in tmp/. */
static void delivery_batch_stage(struct delivery_batch *b)
{
	for (size_t i = 0; i < b->nmsgs; i++) {
		struct delivery_msg *m = &b->msgs[i];
		for (size_t k = 0; m->loaded && k < m->env.nrcpts; k++) {
			const struct spool_rcpt *rc = &m->env.rcpts[k];
			if (rc->done)
				continue;
			if (!rc->local) {
				m->remote = true;
				continue;
			}
			struct delivery_copy *c = xgrow(&b->copies, &b->ncopies, &b->capcopies, sizeof *c);
			c->m = m;
			c->rcpt = k;
			c->mf.fd = -1;
			if (m->r->unrecorded[k]) { /* delivered earlier, only the record failed */
				c->ok = true;
				continue;
			}
			char err[DELIVERY_REASON_MAX];
			if (maildir_stage(b->mailboxes, rc->address, m->env.sender, m->job.fd,
					  m->env.body_offset, m->env.size, &c->mf, err,
					  sizeof err) < 0) {
				delivery_log_failure(&m->job, rc->address, err);
				m->failed = true;
				continue;
			}
			c->staged = true;
			c->ok = true;
		}
	}
}

static void delivery_copy_failed(struct delivery_copy *c, const char *err)
{
	delivery_log_failure(&c->m->job, c->m->env.rcpts[c->rcpt].address, err);
	maildir_discard(&c->mf);
	c->ok = false;
	c->m->failed = true;
}

/* The data of many copies made durable at once: their fdatasyncs run
 * together (fdatasync_all).  false when the batch is too small for that to
 * pay; then each copy is synced as it is renamed. */
static bool delivery_batch_sync(struct delivery_batch *b)
{
	size_t n = 0;
	for (size_t i = 0; i < b->ncopies; i++)
		n += b->copies[i].staged && b->copies[i].ok;
	if (n < DELIVERY_PARALLEL_MIN)
		return false;
	int *fds = xcalloc(n, sizeof *fds);
	int *errs = xcalloc(n, sizeof *errs);
	size_t k = 0;
	for (size_t i = 0; i < b->ncopies; i++)
		if (b->copies[i].staged && b->copies[i].ok)
			fds[k++] = b->copies[i].mf.fd;
	fdatasync_all(fds, errs, n);
	k = 0;
	for (size_t i = 0; i < b->ncopies; i++) {
		struct delivery_copy *c = &b->copies[i];
		if (!c->staged || !c->ok)
			continue;
		int e = errs[k++];
		if (e) {
			char err[DELIVERY_REASON_MAX];
			errfmt(err, sizeof err, "cannot fsync %s: %s", c->mf.tmp, strerror(e));
			delivery_copy_failed(c, err);
		}
	}
	free(fds);
	free(errs);
	return true;
}

/* Sync and rename each copy; then fsync each new/ folder once. */
static void delivery_batch_publish(struct delivery_batch *b)
{
	char err[DELIVERY_REASON_MAX];
	bool synced = delivery_batch_sync(b);
	for (size_t i = 0; i < b->ncopies; i++) {
		struct delivery_copy *c = &b->copies[i];
		if (!c->staged || !c->ok || maildir_publish(&c->mf, synced, err, sizeof err) == 0)
			continue;
		delivery_copy_failed(c, err);
	}
	for (size_t i = 0; i < b->ncopies; i++) {
		struct delivery_copy *c = &b->copies[i];
		bool first = c->staged && c->ok;
		for (size_t j = 0; first && j < i; j++)
			first = !(b->copies[j].staged && b->copies[j].ok &&
				  strcmp(b->copies[j].mf.dir, c->mf.dir) == 0);
		if (!first || maildir_sync_new(c->mf.dir, err, sizeof err) == 0)
			continue;
		/* not known to be durable: take back every copy in that folder */
		for (size_t j = i; j < b->ncopies; j++) {
			struct delivery_copy *d = &b->copies[j];
			if (d->staged && d->ok && strcmp(d->mf.dir, c->mf.dir) == 0)
				delivery_copy_failed(d, err);
		}
	}
}

static void delivery_log_delivered(const struct delivery_msg *m, const struct delivery_copy *c)
{
	const char *to = m->env.rcpts[c->rcpt].address;
	char t[LOG_VALUE_MAX], p[LOG_VALUE_MAX];
	log_info("event=delivered id=%s to=%s maildir=%s", m->r->id,
		 log_escape(t, sizeof t, to, strlen(to)),
		 log_escape(p, sizeof p, c->mf.dir, strlen(c->mf.dir)));
}

/* Record the delivered recipients of m in ID.done.  false when one could
 * not be recorded (it stays "unrecorded" for the retry). */
static bool delivery_record(struct delivery_batch *b, struct delivery_msg *m)
{
	bool ok = true;
	for (size_t i = 0; i < b->ncopies; i++) {
		struct delivery_copy *c = &b->copies[i];
		if (c->m != m || !c->ok)
			continue;
		if (spool_mark_done(dl.sp, m->r->id, c->rcpt) == 0) {
			m->r->unrecorded[c->rcpt] = false;
			continue;
		}
		char why[DELIVERY_REASON_MAX];
		if (!bsnprintf(why, sizeof why, "delivered, but cannot record it in the spool: %s",
			       strerror(errno)))
			why[0] = '\0';
		delivery_log_failure(&m->job, m->env.rcpts[c->rcpt].address, why);
		ok = false;
	}
	return ok;
}

/* Log the deliveries, then remove, record, hand over or defer each
 * message; true when some message was removed (queue/ needs its fsync). */
static bool delivery_batch_conclude(struct delivery_batch *b)
{
	bool removed = false;
	for (size_t i = 0; i < b->ncopies; i++) {
		struct delivery_copy *c = &b->copies[i];
		if (c->ok && c->staged)
			delivery_log_delivered(c->m, c);
		if (c->ok)
			c->m->r->unrecorded[c->rcpt] = true;
	}
	for (size_t i = 0; i < b->nmsgs; i++) {
		struct delivery_msg *m = &b->msgs[i];
		if (!m->r)
			continue; /* gone */
		if (m->loaded && !m->failed && !m->remote &&
		    spool_unlink_message(dl.sp, m->r->id) == 0) {
			removed = true;
			delivery_retry_free(m->r);
			continue;
		}
		if (m->loaded && !delivery_record(b, m))
			m->failed = true;
		if (m->failed) {
			delivery_defer(m->r, m->delay);
			continue;
		}
		delivery_finish(m->r->id, m->remote);
		delivery_retry_free(m->r);
	}
	return removed;
}

/* Work on a batch of messages; each r is owned here: freed, or queued for
 * a retry. */
static void delivery_process_batch(struct delivery_retry **rs, size_t n)
{
	struct delivery_batch *b = xcalloc(1, sizeof *b);
	b->mailboxes = delivery_mailboxes();
	b->nmsgs = n;
	for (size_t i = 0; i < n; i++)
		b->msgs[i].r = rs[i];
	delivery_batch_load(b);
	for (size_t i = 0; i < n; i++)
		if (b->msgs[i].loaded)
			delivery_fit_retry(b->msgs[i].r, b->msgs[i].env.nrcpts);
	delivery_batch_stage(b);
	delivery_batch_publish(b);
	if (delivery_batch_conclude(b) && spool_sync_queue(dl.sp) < 0)
		log_warn("event=spool-error reason=\"cannot fsync the queue after removals: %s\"",
			 strerror(errno));
	for (size_t i = 0; i < b->ncopies; i++)
		maildir_file_clear(&b->copies[i].mf);
	for (size_t i = 0; i < n; i++) {
		if (b->msgs[i].job.fd >= 0)
			close(b->msgs[i].job.fd); /* read-only: nothing to lose */
		if (b->msgs[i].loaded)
			spool_envelope_clear(&b->msgs[i].env);
	}
	free(b->copies);
	free(b->mailboxes);
	free(b);
}

/* Append id to the FIFO unless it is already waiting there.  Lock held. */
static void delivery_push(const char *id)
{
	/* IDs grow with time: a new message's ID is above every ID pushed
	 * before, so only a repeated one needs the search */
	bool fresh = strcmp(id, dl.max_id) > 0;
	for (struct delivery_item *w = dl.head; !fresh && w; w = w->next)
		if (strcmp(w->id, id) == 0)
			return;
	if (fresh)
		memcpy(dl.max_id, id, strlen(id) + 1);
	struct delivery_item *it = xcalloc(1, sizeof *it);
	memcpy(it->id, id, strlen(id) + 1);
	if (dl.tail)
		dl.tail->next = it;
	else
		dl.head = it;
	dl.tail = it;
}

/* Messages waiting, appended to rs[0..n), up to a full batch.  Lock held. */
static size_t delivery_take(struct delivery_retry **rs, size_t n)
{
	while (n < DELIVERY_BATCH_MAX && (rs[n] = delivery_next()) != NULL)
		n++;
	return n;
}

static struct timespec delivery_after_ms(struct timespec t, long ms)
{
	t.tv_sec += ms / 1000;
	t.tv_nsec += ms % 1000 * 1000000L;
	if (t.tv_nsec >= 1000000000L) {
		t.tv_sec++;
		t.tv_nsec -= 1000000000L;
	}
	return t;
}

/* Group commit for deliveries.  A batch's syncs cost about the same for
 * one message as for fifty (file system commits, cache flushes), and each
 * competes with the spool's own for the disk; under steady load (the last
 * batch ended less than two gathering times ago) a batch that is not full
 * waits up to DELIVERY_GATHER_MS for more.  After a quiet spell a message
 * goes at once.  Lock held; returns the new count. */
static size_t delivery_gather(struct delivery_retry **rs, size_t n, struct timespec last_end)
{
	struct timespec now = delivery_now();
	struct timespec steady_until = delivery_after_ms(last_end, 2 * DELIVERY_GATHER_MS);
	if (n == DELIVERY_BATCH_MAX || !delivery_before(&now, &steady_until))
		return n;
	dl.gathered++;
	struct timespec due = delivery_after_ms(now, DELIVERY_GATHER_MS);
	while (n < DELIVERY_BATCH_MAX && !dl.stopping) {
		int e = pthread_cond_timedwait(&dl.wake, &dl.lock, &due);
		n = delivery_take(rs, n);
		if (e == ETIMEDOUT)
			break;
	}
	return n;
}

/* Before the process is confined (delivery_start() waits for it). */
static void delivery_lower_priority(void)
{
	/* on Linux the nice value is the calling thread's own */
	if (setpriority(PRIO_PROCESS, 0, DELIVERY_NICE) < 0)
		log_warn("event=delivery-priority nice=%d reason=\"%s\"", DELIVERY_NICE,
			 strerror(errno));
}

static void *delivery_main(void *unused)
{
	(void)unused;
	struct timespec last_end = {0, 0};
	delivery_lower_priority();
	pthread_mutex_lock(&dl.lock);
	dl.worker_ready = true;
	pthread_cond_signal(&dl.ready);
	while (!dl.stopping) {
		struct delivery_retry *rs[DELIVERY_BATCH_MAX];
		size_t n = delivery_take(rs, 0);
		if (n == 0) {
			delivery_wait();
			continue;
		}
		n = delivery_gather(rs, n, last_end);
		dl.messages += n;
		dl.batches++;
		pthread_mutex_unlock(&dl.lock);
		delivery_process_batch(rs, n);
		last_end = delivery_now();
		pthread_mutex_lock(&dl.lock);
	}
	pthread_mutex_unlock(&dl.lock);
	return NULL;
}

/* Lock held. */
static void delivery_reset(void)
{
	while (dl.head) {
		struct delivery_item *it = dl.head;
		dl.head = it->next;
		free(it);
	}
	dl.tail = NULL;
	while (dl.retries) {
		struct delivery_retry *r = dl.retries;
		dl.retries = r->next;
		delivery_retry_free(r);
	}
	free(dl.mailboxes);
	dl.mailboxes = NULL;
	dl.sp = NULL;
	dl.running = false;
	dl.stopping = false;
	dl.messages = dl.batches = dl.gathered = 0;
}

static int delivery_init_cond(void)
{
	pthread_condattr_t attr;
	int e = pthread_condattr_init(&attr);
	if (e == 0) {
		e = pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
		if (e == 0)
			e = pthread_cond_init(&dl.wake, &attr);
		pthread_condattr_destroy(&attr);
	}
	return e;
}

int delivery_start(struct spool *sp, const char *mailboxes)
{
	if (!sp || !mailboxes) {
		errno = EINVAL;
		return -1;
	}
	pthread_mutex_lock(&dl.lock);
	if (dl.running) {
		pthread_mutex_unlock(&dl.lock);
		errno = EBUSY;
		return -1;
	}
	int e = delivery_init_cond();
	if (e == 0) {
		dl.sp = sp;
		free(dl.mailboxes);
		dl.mailboxes = xstrdup(mailboxes);
		dl.stopping = false;
		dl.worker_ready = false;
		e = thread_start(&dl.thread, delivery_main, NULL);
		if (e == 0) {
			dl.running = true;
			while (!dl.worker_ready)
				pthread_cond_wait(&dl.ready, &dl.lock);
		} else {
			pthread_cond_destroy(&dl.wake);
			delivery_reset();
		}
	}
	pthread_mutex_unlock(&dl.lock);
	if (e != 0) {
		errno = e;
		return -1;
	}
	return 0;
}

void delivery_enqueue(const char *id)
{
	if (!delivery_id_ok(id)) {
		char v[LOG_VALUE_MAX];
		log_warn("event=delivery-error id=%s reason=\"not a queue ID\"",
			 log_escape(v, sizeof v, id, strlen(id)));
		return;
	}
	pthread_mutex_lock(&dl.lock);
	if (dl.running && !dl.stopping) { /* else it waits in the spool for the next start */
		delivery_push(id);
		pthread_cond_signal(&dl.wake);
	}
	pthread_mutex_unlock(&dl.lock);
}

void delivery_set_mailboxes(const char *mailboxes)
{
	char *copy = xstrdup(mailboxes);
	pthread_mutex_lock(&dl.lock);
	if (dl.running) { /* else delivery_start() names the root */
		free(dl.mailboxes);
		dl.mailboxes = copy;
		copy = NULL;
	}
	pthread_mutex_unlock(&dl.lock);
	free(copy);
}

void delivery_stop(void)
{
	pthread_mutex_lock(&dl.lock);
	if (!dl.running || dl.stopping) {
		pthread_mutex_unlock(&dl.lock);
		return;
	}
	dl.stopping = true;
	pthread_cond_signal(&dl.wake);
	pthread_mutex_unlock(&dl.lock);
	int e = pthread_join(dl.thread, NULL);
	if (e != 0)
		fatal("pthread_join: %s", strerror(e));
	pthread_mutex_lock(&dl.lock);
	log_info("event=delivery-stats messages=%llu batches=%llu gathered=%llu", dl.messages,
		 dl.batches, dl.gathered);
	pthread_cond_destroy(&dl.wake);
	delivery_reset();
	pthread_mutex_unlock(&dl.lock);
}

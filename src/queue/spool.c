/* spool: the durable queue.  One file per message, written in
 * tmp/, fsynced and renamed into queue/; delivered recipients appended to
 * queue/ID.done.  Envelope values are xtext (RFC 3461 §4).
 *
 * Envelope lines, in this order, after "posthorn-spool 1":
 *   id ID
 *   arrival UNIXTIME
 *   sender XTEXT            the null sender <> is the empty xtext: "sender "
 *   client XTEXT            may be empty
 *   helo XTEXT              optional
 *   auth XTEXT              optional
 *   server XTEXT            optional: the virtual server that accepted it
 *   tls required            optional: MAIL FROM ... REQUIRETLS (RFC 8689)
 *   junk yes                optional: deliver into the recipients' Junk folders
 *   rcpt local|remote XTEXT(address) XTEXT(orig)   one or more
 * then an empty line and the message.  The reader is strict: any other line,
 * a missing or repeated key, or a bad xtext makes the file malformed.
 *
 * Files are recycled: a delivered message's file is renamed into free/
 * (when small enough and the pool is not full) and the next message is
 * written over it, cut to its length and renamed into queue/.  Creating and
 * deleting an inode per message is most of the kernel work of a busy
 * spool (ext4 inode allocation); a rename and an overwrite are not.  What is
 * in free/ is never a queued message: an old message's bytes at most, as
 * private as the queue itself (0600 in a 0700 folder). */
#define _GNU_SOURCE /* sync_file_range */
#include "queue/spool.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <openssl/rand.h>

#include "queue/journal.h"
#include "lib/log.h"
#include "lib/util.h"
#include "lib/waker.h"

enum {
	SPOOL_BUF_SIZE = 64 * 1024,     /* write buffer of a message being received */
	SPOOL_LINE_MAX = 16 * 1024,     /* longest envelope line, LF included */
	SPOOL_COPY_CHUNK = 64 * 1024,   /* spool_msg_copy reads and writes this much at a time */
	SPOOL_DONE_LINE_MAX = 32,       /* longest .done record, LF included */
	SPOOL_ID_TIME_CHARS = 11,       /* 55 bits of microseconds: past the year 3000 */
	SPOOL_ID_SEQ_CHARS = 4,         /* 20 bits of a per-process counter */
	SPOOL_ID_RAND_CHARS = 6,        /* 30 bits of randomness */
	SPOOL_ID_LEN = SPOOL_ID_TIME_CHARS + SPOOL_ID_SEQ_CHARS + SPOOL_ID_RAND_CHARS,
	SPOOL_PARALLEL_MIN = 3,         /* batches this large: their fdatasyncs run at once */
	SPOOL_FREE_MAX = 512,           /* recycled files kept in free/ */
	SPOOL_RECYCLE_MAX = 256 * 1024, /* larger files are deleted, not kept */
	SPOOL_CHECKPOINT_IDLE_S = 1,    /* idle this long: checkpoint the journal */
	SPOOL_GONE_BATCH = 8192,        /* removals recorded by one batch, at most */
	SPOOL_JOURNAL_SHARE = 8,        /* the journal: at most 1/8 of the spool's file system */
};

_Static_assert((int)SPOOL_ID_LEN < (int)SPOOL_ID_SIZE, "spool ID does not fit SPOOL_ID_SIZE");

static const char spool_magic[] = "posthorn-spool 1";
static const char spool_done_suffix[] = ".done";

/* Crockford's base-32 alphabet: ascending in ASCII, so IDs sort as numbers. */
static const char spool_b32[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/* The group commit thread and its two lists: messages waiting for the
 * next batch, and messages whose batch is done, waiting for their
 * callbacks on the loop.  Both under the spool's lock; the waker wakes the
 * loop. */
struct spool_committer {
	pthread_t thread;
	bool stopping;
	struct spool_msg *pending, **pending_tail;
	struct spool_msg *done, **done_tail;
	struct waker *waker;
};

/* The names in free/, a stack under its lock (the loop takes, the
 * delivery threads give back). */
struct spool_pool {
	pthread_mutex_t lock;
	char (*names)[SPOOL_ID_SIZE];
	size_t n;
};

struct spool {
	char *dir;
	char *tmpdir;
	char *queuedir;
	char *freedir;
	struct spool_pool pool;
	struct spool_committer *gc;     /* NULL: commits are synchronous */
	struct journal *journal;        /* the committer's; NULL once broken */
	/* Under lock: the committer's lists (gc), and the removals that the
	 * journal is to record.  wake tells the committer of work and the
	 * removers that their removals are durable (broadcast). */
	pthread_mutex_t lock;
	pthread_cond_t wake;
	bool journaling;                /* a committer with a usable journal */
	char (*gone)[SPOOL_ID_SIZE];    /* removed IDs, not yet recorded */
	size_t ngone, capgone;
	unsigned long long gone_seq;    /* removals noted so far */
	unsigned long long gone_durable; /* removals recorded durably so far */
	unsigned gone_waiters;
	size_t restore_later;           /* journaled messages with no room to be restored */
	bool free_dropped;              /* free/ emptied to make room for them */
	struct spool_stats stats;       /* updated with __atomic builtins */
};

struct spool_msg {
	struct spool *sp;
	char id[SPOOL_ID_SIZE];
	char *tmppath;
	int fd;
	off_t old_size;         /* what a file from free/ held (0: a new file); cut if longer */
	unsigned version;       /* 0, or the replacement's number (spool_msg_begin_replacement) */
	int err;                /* errno of the first failed write; sticky */
	char *buf;
	size_t buflen;
	off_t written;          /* bytes in the file (the envelope's too) */
	bool all_in_buf;        /* at the commit: every byte of the file still in buf */
	off_t size;             /* message bytes written, envelope excluded */
	/* the commit: */
	struct spool_msg *next; /* in a committer list */
	spool_commit_cb cb;
	void *cb_arg;
	int commit_err;
	bool queued;            /* renamed into queue/, not yet known durable */
	bool journaled;         /* made durable by a journal record */
};

/* ---- IDs ---------------------------------------------------------------- */

static pthread_mutex_t spool_id_lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t spool_id_last_us;
static uint32_t spool_id_seq;

static void spool_b32_put(char *out, size_t nchars, uint64_t v)
{
	for (size_t i = nchars; i-- > 0;) {
		out[i] = spool_b32[v & 31];
		v >>= 5;
	}
}

/* Microseconds since the epoch, strictly increasing within this process so
 * that IDs made here are unique and ordered even if the clock steps back. */
static uint64_t spool_id_clock(uint32_t *seq)
{
	struct timespec ts;
	if (clock_gettime(CLOCK_REALTIME, &ts) < 0)
		fatal("clock_gettime: %s", strerror(errno));
	uint64_t us = (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
	pthread_mutex_lock(&spool_id_lock);
	if (us <= spool_id_last_us)
		us = spool_id_last_us + 1;
	spool_id_last_us = us;
	*seq = spool_id_seq++;
	pthread_mutex_unlock(&spool_id_lock);
	return us;
}

void spool_new_id(char id[SPOOL_ID_SIZE])
{
	uint32_t seq;
	uint64_t us = spool_id_clock(&seq);
	unsigned char rnd[4];
	if (RAND_bytes(rnd, sizeof rnd) != 1)
		fatal("spool: no random bytes for a queue ID");
	uint32_t r = (uint32_t)rnd[0] << 24 | (uint32_t)rnd[1] << 16 | (uint32_t)rnd[2] << 8 | rnd[3];
	spool_b32_put(id, SPOOL_ID_TIME_CHARS, us);
	spool_b32_put(id + SPOOL_ID_TIME_CHARS, SPOOL_ID_SEQ_CHARS, seq);
	spool_b32_put(id + SPOOL_ID_TIME_CHARS + SPOOL_ID_SEQ_CHARS, SPOOL_ID_RAND_CHARS, r);
	id[SPOOL_ID_LEN] = '\0';
}

/* A name that can be an ID: this keeps paths built from IDs inside queue/. */
static bool spool_id_valid(const char *id)
{
	size_t n = strlen(id);
	if (n == 0 || n >= SPOOL_ID_SIZE)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = id[i];
		if (!((c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z')))
			return false;
	}
	return true;
}

/* ---- xtext (RFC 3461 §4) ------------------------------------------------ */

static bool spool_xtext_plain(unsigned char c)
{
	return c >= 33 && c <= 126 && c != '+' && c != '=';
}

/* RFC 3461: "+" followed by two upper case hexadecimal digits. */
static int spool_xtext_hex(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

char *spool_xtext_encode(const char *s)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t n = strlen(s);
	if (n > (SIZE_MAX - 1) / 3)
		fatal("spool_xtext_encode: string too long");
	char *out = xmalloc(n * 3 + 1);
	size_t o = 0;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (spool_xtext_plain(c)) {
			out[o++] = (char)c;
		} else {
			out[o++] = '+';
			out[o++] = hex[c >> 4];
			out[o++] = hex[c & 15];
		}
	}
	out[o] = '\0';
	return out;
}

char *spool_xtext_decode(const char *s)
{
	size_t n = strlen(s);
	char *out = xmalloc(n + 1);
	size_t o = 0;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (spool_xtext_plain(c)) {
			out[o++] = (char)c;
			continue;
		}
		int hi = c == '+' ? spool_xtext_hex(s[i + 1]) : -1;
		int lo = hi >= 0 ? spool_xtext_hex(s[i + 2]) : -1;
		if (lo < 0 || (hi == 0 && lo == 0)) { /* "+00" cannot be a C string */
			free(out);
			return NULL;
		}
		out[o++] = (char)(hi << 4 | lo);
		i += 2;
	}
	out[o] = '\0';
	return out;
}

/* ---- opening ------------------------------------------------------------ */

static char *spool_queue_path(const struct spool *sp, const char *id, const char *suffix)
{
	return xasprintf("%s/%s%s", sp->queuedir, id, suffix);
}

/* mkdir that accepts an existing folder; 1 when it was created. */
static int spool_mkdir(const char *path)
{
	if (mkdir(path, 0700) == 0)
		return 1;
	if (errno != EEXIST)
		return -1;
	struct stat st;
	if (stat(path, &st) < 0)
		return -1;
	if (!S_ISDIR(st.st_mode)) {
		errno = ENOTDIR;
		return -1;
	}
	return 0;
}

/* ---- the pool of recycled files ----------------------------------------------- */

static bool spool_pool_take(struct spool *sp, char name[SPOOL_ID_SIZE])
{
	pthread_mutex_lock(&sp->pool.lock);
	bool got = sp->pool.n > 0;
	if (got)
		memcpy(name, sp->pool.names[--sp->pool.n], SPOOL_ID_SIZE);
	pthread_mutex_unlock(&sp->pool.lock);
	return got;
}

static bool spool_pool_has_room(struct spool *sp)
{
	pthread_mutex_lock(&sp->pool.lock);
	bool room = sp->pool.n < SPOOL_FREE_MAX;
	pthread_mutex_unlock(&sp->pool.lock);
	return room;
}

static bool spool_pool_give(struct spool *sp, const char *name)
{
	size_t len = strlen(name); /* an ID string: shorter than SPOOL_ID_SIZE */
	if (len >= SPOOL_ID_SIZE)
		return false;
	pthread_mutex_lock(&sp->pool.lock);
	bool kept = sp->pool.n < SPOOL_FREE_MAX;
	if (kept)
		memcpy(sp->pool.names[sp->pool.n++], name, len + 1);
	pthread_mutex_unlock(&sp->pool.lock);
	return kept;
}

static char *spool_free_path(const struct spool *sp, const char *name)
{
	return xasprintf("%s/%s", sp->freedir, name);
}

void spool_test_pool_give(struct spool *sp, const char *name)
{
	if (!spool_pool_give(sp, name))
		fatal("spool_test_pool_give: the pool is full");
}

/* A delivered message's file into free/ instead of deleting it: 0, or -1
 * when it is not kept (too large, pool full, rename failed) and the caller
 * deletes it. */
static int spool_recycle(struct spool *sp, const char *id, const char *qpath)
{
	struct stat st;
	if (!spool_pool_has_room(sp) || stat(qpath, &st) < 0 || !S_ISREG(st.st_mode) ||
	    st.st_size > SPOOL_RECYCLE_MAX)
		return -1;
	char *fpath = spool_free_path(sp, id);
	int r = rename(qpath, fpath);
	if (r == 0 && !spool_pool_give(sp, id) && unlink(fpath) < 0)
		log_warn("event=spool-error file=%s reason=\"cannot remove: %s\"", fpath,
			 strerror(errno));
	free(fpath);
	return r;
}

/* A name in queue/: a file in free/ named so is the recycled file of a
 * message that the journal's replay brought back (its removal was not yet
 * recorded when the daemon died).  Kept in the pool, the name would be
 * given again when that message is delivered and recycled once more, and
 * two messages would be written into one file. */
static bool spool_name_queued(const struct spool *sp, const char *name)
{
	char *qpath = spool_queue_path(sp, name, "");
	struct stat st;
	bool queued = lstat(qpath, &st) == 0;
	free(qpath);
	return queued;
}

/* What free/ holds from an earlier run goes back into the pool; the rest
 * (strays, names of queued messages, more than the pool holds) is
 * removed. */
static int spool_pool_load(struct spool *sp)
{
	DIR *d = opendir(sp->freedir);
	if (!d)
		return -1;
	struct dirent *de;
	while ((errno = 0, de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		struct stat st;
		bool keep = spool_id_valid(de->d_name) &&
			    fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
			    S_ISREG(st.st_mode) && !spool_name_queued(sp, de->d_name) &&
			    spool_pool_give(sp, de->d_name);
		if (!keep && unlinkat(dirfd(d), de->d_name, 0) < 0 && errno != ENOENT)
			log_warn("event=spool-error dir=%s reason=\"cannot remove a stray: %s\"",
				 sp->freedir, strerror(errno));
	}
	int saved = errno;
	closedir(d);
	errno = saved;
	return saved ? -1 : 0;
}

/* Messages left in tmp/ were never acknowledged: remove them.  A stray
 * folder is only reported; any other failure stops spool_open(). */
static int spool_clean_tmp(const struct spool *sp)
{
	DIR *d = opendir(sp->tmpdir);
	if (!d)
		return -1;
	int err = 0;
	struct dirent *de;
	while ((errno = 0, de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		if (unlinkat(dirfd(d), de->d_name, 0) == 0 || errno == ENOENT)
			continue;
		int e = errno;
		char name[LOG_VALUE_MAX];
		log_warn("event=spool-error dir=%s file=%s reason=\"cannot remove: %s\"",
			 sp->tmpdir, log_escape(name, sizeof name, de->d_name, strlen(de->d_name)),
			 strerror(e));
		if (e != EISDIR && e != EPERM) {
			err = e;
			break;
		}
	}
	if (!de && errno != 0)
		err = errno;
	closedir(d);
	errno = err;
	return err ? -1 : 0;
}

/* ID.done whose message is gone: spool_remove() was interrupted. */
static bool spool_done_orphan(DIR *d, const char *name)
{
	size_t n = strlen(name), ns = sizeof spool_done_suffix - 1;
	if (n <= ns || strcmp(name + n - ns, spool_done_suffix) != 0)
		return false;
	char id[SPOOL_ID_SIZE];
	if (n - ns >= sizeof id)
		return false;
	memcpy(id, name, n - ns);
	id[n - ns] = '\0';
	struct stat st;
	return spool_id_valid(id) && fstatat(dirfd(d), id, &st, 0) < 0 && errno == ENOENT;
}

static int spool_clean_orphans(const struct spool *sp)
{
	DIR *d = opendir(sp->queuedir);
	if (!d)
		return -1;
	struct dirent *de;
	while ((errno = 0, de = readdir(d)) != NULL) {
		if (!spool_done_orphan(d, de->d_name))
			continue;
		if (unlinkat(dirfd(d), de->d_name, 0) < 0 && errno != ENOENT)
			log_warn("event=spool-error dir=%s file=%s reason=\"cannot remove: %s\"",
				 sp->queuedir, de->d_name, strerror(errno));
	}
	int saved = errno;
	closedir(d);
	errno = saved;
	return saved ? -1 : 0;
}

/* ---- the journal, replayed (journal.h) ---------------------------------- */

/* The journal broke or cannot start: reported once, and commits go the slower way. */
static void spool_journal_broken(struct spool *sp, int err)
{
	log_err("event=journal-error dir=%s reason=\"%s: the journal is no longer used\"", sp->dir,
		strerror(err));
	pthread_mutex_lock(&sp->lock);
	sp->journaling = false;
	pthread_cond_broadcast(&sp->wake);
	pthread_mutex_unlock(&sp->lock);
	journal_close(sp->journal);
	sp->journal = NULL;
}

/* Whether the file holds exactly len bytes, these: 1, 0, or -1. */
static int spool_file_holds(int fd, const unsigned char *data, size_t len)
{
	struct stat st;
	if (fstat(fd, &st) < 0)
		return -1;
	if (st.st_size != (off_t)len)
		return 0;
	unsigned char *buf = xmalloc(len ? len : 1);
	size_t got = 0;
	int r = 1;
	while (got < len && r == 1) {
		ssize_t n = pread(fd, buf + got, len - got, (off_t)got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			r = -1;
		else if (n == 0)
			r = 0;
		else
			got += (size_t)n;
	}
	if (r == 1)
		r = memcmp(buf, data, len) == 0;
	int saved = errno;
	free(buf);
	errno = saved;
	return r;
}

/* The file at path made to hold exactly data, durably (fdatasync).  A
 * file that holds it already (a kill -9 leaves the page cache whole) is
 * only synced; one that does not (torn, or never renamed in) is written
 * over in place, which needs no room for what it already holds.  0, or -1
 * with errno; a file made here and not finished is removed. */
static int spool_rewrite(const char *path, const unsigned char *data, size_t len)
{
	bool created = true;
	int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0 && errno == EEXIST) {
		created = false;
		fd = open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
	}
	if (fd < 0)
		return -1;
	int same = created ? 0 : spool_file_holds(fd, data, len);
	int r = same < 0 ? -1 : 0;
	if (same == 0 && (write_all(fd, data, len) < 0 || ftruncate(fd, (off_t)len) < 0))
		r = -1;
	if (r == 0 && fdatasync(fd) < 0)
		r = -1;
	int saved = errno;
	if (close(fd) < 0 && r == 0) {
		r = -1;
		saved = errno;
	}
	if (r < 0 && created && unlink(path) < 0 && errno != ENOENT)
		log_warn("event=spool-error file=%s reason=\"cannot remove: %s\"", path,
			 strerror(errno));
	errno = saved;
	return r;
}

/* Room for the journal's replay on a full disk: free/ holds delivered
 * messages' files only, which nothing needs.  The number removed. */
static size_t spool_drop_free(struct spool *sp)
{
	DIR *d = opendir(sp->freedir);
	if (!d)
		return 0;
	size_t n = 0;
	struct dirent *de;
	while ((de = readdir(d)) != NULL)
		if (de->d_name[0] != '.' && unlinkat(dirfd(d), de->d_name, 0) == 0)
			n++;
	closedir(d);
	sp->free_dropped = true;
	return n;
}

/* A journaled message back into queue/, durable before the journal starts
 * afresh: the file a crash left there (whole, torn, or none) made to hold
 * the record (the record stays live until then, so a crash meanwhile
 * replays it again), queue/ fsynced.  With no room for it even after
 * emptying free/, it waits in the journal for the next start
 * (JOURNAL_RESTORE_LATER): a full disk never stops the daemon. */
static int spool_restore_message(struct spool *sp, const char *id, const unsigned char *data,
				 size_t len)
{
	char *qpath = spool_queue_path(sp, id, "");
	int r = spool_rewrite(qpath, data, len);
	if (r < 0 && errno == ENOSPC && !sp->free_dropped && spool_drop_free(sp) > 0)
		r = spool_rewrite(qpath, data, len);
	int saved = errno;
	free(qpath);
	if (r == 0 && fsync_dir(sp->queuedir) < 0)
		return -1;
	if (r < 0 && (saved == ENOSPC || saved == EDQUOT)) {
		log_err("event=journal-error dir=%s id=%s reason=\"no room to restore it: %s\"",
			sp->dir, id, strerror(saved));
		sp->restore_later++;
		return JOURNAL_RESTORE_LATER;
	}
	errno = saved;
	return r;
}

/* A message removed after it was journaled: gone again (a crash may have
 * lost the removal), queue/ fsynced. */
static int spool_restore_removal(struct spool *sp, const char *id)
{
	int r = 0;
	const char *const suffixes[] = {"", spool_done_suffix};
	for (size_t i = 0; i < ARRAY_LEN(suffixes) && r == 0; i++) {
		char *path = spool_queue_path(sp, id, suffixes[i]);
		if (unlink(path) < 0 && errno != ENOENT)
			r = -1;
		free(path);
	}
	return r < 0 ? -1 : fsync_dir(sp->queuedir);
}

static int spool_restore(void *arg, enum journal_type type, const char *id,
			 const unsigned char *data, size_t len)
{
	struct spool *sp = arg;
	if (!spool_id_valid(id)) { /* the digest matched: not from this code */
		log_warn("event=journal-error dir=%s reason=\"a record with a bad ID: skipped\"",
			 sp->dir);
		return 0;
	}
	if (type == JOURNAL_MESSAGE)
		return spool_restore_message(sp, id, data, len);
	return spool_restore_removal(sp, id);
}

/* The journal's bound: a share of the spool's file system, so that a
 * small spool keeps most of its room for messages (journal.h clamps it
 * between JOURNAL_MIN and JOURNAL_MAX). */
static off_t spool_journal_bound(const struct spool *sp)
{
	struct statvfs vfs;
	if (statvfs(sp->dir, &vfs) < 0)
		return JOURNAL_MAX;
	unsigned long long total = (unsigned long long)vfs.f_blocks * vfs.f_frsize;
	unsigned long long share = total / SPOOL_JOURNAL_SHARE;
	return share > JOURNAL_MAX ? JOURNAL_MAX : (off_t)share;
}

/* Replayed, or the open fails: acknowledged mail may be in it.  Records
 * that found no room to be restored (a full disk) stay live for the next
 * start; the journal is then not used in this run. */
static int spool_open_journal(struct spool *sp)
{
	char *path = xasprintf("%s/journal", sp->dir);
	sp->journal = journal_open(path, spool_journal_bound(sp), spool_restore, sp);
	int saved = errno;
	free(path);
	if (!sp->journal) {
		errno = saved;
		return -1;
	}
	if (sp->restore_later > 0)
		log_err("event=journal-error dir=%s restore_later=%zu reason=\"no room to restore "
			"every message: the journal keeps them for the next start\"",
			sp->dir, sp->restore_later);
	if (journal_usable(sp->journal))
		spool_journal_broken(sp, journal_usable(sp->journal));
	return 0;
}

struct spool *spool_open(const char *dir)
{
	if (mkdir_p(dir, 0700) < 0)
		return NULL;
	struct spool *sp = xcalloc(1, sizeof *sp);
	sp->dir = xstrdup(dir);
	sp->tmpdir = xasprintf("%s/tmp", dir);
	sp->queuedir = xasprintf("%s/queue", dir);
	sp->freedir = xasprintf("%s/free", dir);
	pthread_mutex_init(&sp->pool.lock, NULL);
	pthread_mutex_init(&sp->lock, NULL);
	pthread_condattr_t attr;
	pthread_condattr_init(&attr);
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	pthread_cond_init(&sp->wake, &attr);
	pthread_condattr_destroy(&attr);
	sp->pool.names = xcalloc(SPOOL_FREE_MAX, sizeof *sp->pool.names);
	int t = spool_mkdir(sp->tmpdir);
	int q = t < 0 ? -1 : spool_mkdir(sp->queuedir);
	int f = q < 0 ? -1 : spool_mkdir(sp->freedir);
	bool ok = t >= 0 && q >= 0 && f >= 0;
	if (ok && (t > 0 || q > 0))
		ok = fsync_dir(sp->dir) == 0;
	if (ok)
		ok = spool_clean_tmp(sp) == 0 && spool_open_journal(sp) == 0 &&
		     spool_clean_orphans(sp) == 0 && spool_pool_load(sp) == 0;
	if (!ok) {
		int saved = errno;
		spool_close(sp);
		errno = saved;
		return NULL;
	}
	return sp;
}

void spool_close(struct spool *sp)
{
	if (!sp)
		return;
	spool_committer_stop(sp);
	journal_close(sp->journal);
	free(sp->dir);
	free(sp->tmpdir);
	free(sp->queuedir);
	free(sp->freedir);
	free(sp->pool.names);
	pthread_mutex_destroy(&sp->pool.lock);
	free(sp->gone);
	pthread_cond_destroy(&sp->wake);
	pthread_mutex_destroy(&sp->lock);
	free(sp);
}

const char *spool_dir(const struct spool *sp)
{
	return sp->dir;
}

/* ---- writing ------------------------------------------------------------ */

static int spool_msg_flush(struct spool_msg *m)
{
	if (m->err) {
		errno = m->err;
		return -1;
	}
	if (m->buflen == 0)
		return 0;
	if (write_all(m->fd, m->buf, m->buflen) < 0) {
		m->err = errno ? errno : EIO;
		return -1;
	}
	m->written += (off_t)m->buflen;
	m->buflen = 0;
	return 0;
}

static int spool_msg_put(struct spool_msg *m, const void *data, size_t len)
{
	const char *p = data;
	if (m->err) {
		errno = m->err;
		return -1;
	}
	while (len > 0) {
		if (m->buflen == SPOOL_BUF_SIZE && spool_msg_flush(m) < 0)
			return -1;
		if (m->buflen == 0 && len >= SPOOL_BUF_SIZE) { /* large write: skip the copy */
			if (write_all(m->fd, p, len) < 0) {
				m->err = errno ? errno : EIO;
				return -1;
			}
			m->written += (off_t)len;
			return 0;
		}
		size_t room = SPOOL_BUF_SIZE - m->buflen;
		size_t k = len < room ? len : room;
		memcpy(m->buf + m->buflen, p, k);
		m->buflen += k;
		p += k;
		len -= k;
	}
	return 0;
}

/* One envelope line; EINVAL when the reader would refuse it as too long. */
static int spool_msg_put_line(struct spool_msg *m, char *line)
{
	size_t n = strlen(line);
	int r = -1;
	if (n + 1 > SPOOL_LINE_MAX)
		errno = EINVAL;
	else if (spool_msg_put(m, line, n) == 0)
		r = spool_msg_put(m, "\n", 1);
	free(line);
	return r;
}

static int spool_msg_put_field(struct spool_msg *m, const char *key, const char *value)
{
	char *x = spool_xtext_encode(value);
	char *line = xasprintf("%s %s", key, x);
	free(x);
	return spool_msg_put_line(m, line);
}

static int spool_msg_put_rcpt(struct spool_msg *m, const struct spool_rcpt *r)
{
	if (!r->address || !*r->address) {
		errno = EINVAL;
		return -1;
	}
	char *a = spool_xtext_encode(r->address);
	char *o = spool_xtext_encode(r->orig ? r->orig : r->address);
	char *line = xasprintf("rcpt %s %s %s", r->local ? "local" : "remote", a, o);
	free(a);
	free(o);
	return spool_msg_put_line(m, line);
}

static int spool_msg_put_envelope(struct spool_msg *m, const struct spool_envelope *env)
{
	if (env->nrcpts == 0) {
		errno = EINVAL;
		return -1;
	}
	if (spool_msg_put_line(m, xstrdup(spool_magic)) < 0 ||
	    spool_msg_put_line(m, xasprintf("id %s", env->id)) < 0 ||
	    spool_msg_put_line(m, xasprintf("arrival %lld", (long long)env->arrival)) < 0 ||
	    spool_msg_put_field(m, "sender", env->sender ? env->sender : "") < 0 ||
	    spool_msg_put_field(m, "client", env->client ? env->client : "") < 0)
		return -1;
	if (env->helo && spool_msg_put_field(m, "helo", env->helo) < 0)
		return -1;
	if (env->auth_user && spool_msg_put_field(m, "auth", env->auth_user) < 0)
		return -1;
	if (env->server && spool_msg_put_field(m, "server", env->server) < 0)
		return -1;
	if (env->requiretls && spool_msg_put_line(m, xstrdup("tls required")) < 0)
		return -1;
	if (env->junk && spool_msg_put_line(m, xstrdup("junk yes")) < 0)
		return -1;
	for (size_t i = 0; i < env->nrcpts; i++)
		if (spool_msg_put_rcpt(m, &env->rcpts[i]) < 0)
			return -1;
	return spool_msg_put(m, "\n", 1);
}

static void spool_msg_free(struct spool_msg *m)
{
	free(m->tmppath);
	free(m->buf);
	free(m);
}

/* Close and unlink the temporary file of a message that failed. */
static void spool_msg_discard(struct spool_msg *m)
{
	if (m->fd >= 0) {
		close(m->fd); /* the message is thrown away: its close error is moot */
		m->fd = -1;
	}
	if (unlink(m->tmppath) < 0 && errno != ENOENT)
		log_warn("event=spool-error file=%s reason=\"cannot remove: %s\"", m->tmppath,
			 strerror(errno));
}

/* A file from the pool to write over, or -1 (pool empty; a file that
 * cannot be opened is forgotten, and the next one tried).  Its length is
 * noted: only a longer old message needs cutting (an fstat costs less
 * than an ftruncate).  The file is claimed with an exclusive flock(2) held
 * until the message is committed or thrown away: should the pool ever name
 * a file twice, a second message never writes into the same file (which
 * would mix two messages and fail the second one's commit with ENOENT
 * after its journal record was written). */
static int spool_msg_open_recycled(struct spool_msg *m)
{
	char name[SPOOL_ID_SIZE];
	while (spool_pool_take(m->sp, name)) {
		char *path = spool_free_path(m->sp, name);
		int fd = open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW); /* the journal reads it */
		struct stat st;
		if (fd >= 0 && flock(fd, LOCK_EX | LOCK_NB) < 0 && errno == EWOULDBLOCK) {
			log_warn("event=spool-error file=%s reason=\"taken by another message\"", path);
			close(fd);
			free(path);
			continue;
		}
		if (fd >= 0 && fstat(fd, &st) == 0) {
			m->tmppath = path;
			m->old_size = st.st_size;
			return fd;
		}
		if (fd >= 0) {
			int e = errno;
			close(fd);
			errno = e;
		}
		log_warn("event=spool-error file=%s reason=\"cannot reuse: %s\"", path,
			 strerror(errno));
		free(path);
	}
	return -1;
}

/* Under env->id (set); version 0 is the first, later ones replace it
 * (tmp/ID.N when no recycled file is at hand). */
static struct spool_msg *spool_msg_start(struct spool *sp, struct spool_envelope *env,
					 unsigned version)
{
	if (env->arrival == 0)
		env->arrival = time(NULL);
	struct spool_msg *m = xcalloc(1, sizeof *m);
	m->sp = sp;
	memcpy(m->id, env->id, sizeof m->id);
	m->version = version;
	m->fd = spool_msg_open_recycled(m);
	if (m->fd < 0) {
		m->tmppath = version ? xasprintf("%s/%s.%u", sp->tmpdir, m->id, version)
				     : xasprintf("%s/%s", sp->tmpdir, m->id);
		m->fd = open(m->tmppath, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
	}
	if (m->fd < 0) {
		int saved = errno;
		spool_msg_free(m);
		errno = saved;
		return NULL;
	}
	m->buf = xmalloc(SPOOL_BUF_SIZE);
	if (spool_msg_put_envelope(m, env) < 0) {
		int saved = errno;
		spool_msg_discard(m);
		spool_msg_free(m);
		errno = saved;
		return NULL;
	}
	return m;
}

/* Besides env->id, env->arrival is set to now when the caller left it 0. */
struct spool_msg *spool_msg_begin(struct spool *sp, struct spool_envelope *env)
{
	spool_new_id(env->id);
	return spool_msg_start(sp, env, 0);
}

struct spool_msg *spool_msg_begin_replacement(struct spool *sp, struct spool_envelope *env,
					      const struct spool_msg *old)
{
	memcpy(env->id, old->id, sizeof env->id);
	return spool_msg_start(sp, env, old->version + 1);
}

int spool_msg_read_fd(struct spool_msg *m, off_t *offset)
{
	if (spool_msg_flush(m) < 0)
		return -1;
	*offset = m->written - m->size;
	return m->fd;
}

int spool_msg_write(struct spool_msg *m, const void *data, size_t len)
{
	if (spool_msg_put(m, data, len) < 0)
		return -1;
	m->size += (off_t)len;
	return 0;
}

off_t spool_msg_size(const struct spool_msg *m)
{
	return m->size;
}

struct spool_msg *spool_msg_copy(struct spool *sp, struct spool_envelope *env,
				 struct spool_msg *old)
{
	off_t start;
	int fd = spool_msg_read_fd(old, &start);
	if (fd < 0)
		return NULL;
	struct spool_msg *m = spool_msg_begin_replacement(sp, env, old);
	if (!m)
		return NULL;
	char *buf = xmalloc(SPOOL_COPY_CHUNK);
	int err = 0;
	for (off_t done = 0; done < old->size && !err;) {
		size_t want = (size_t)(old->size - done < SPOOL_COPY_CHUNK ? old->size - done
									   : SPOOL_COPY_CHUNK);
		ssize_t n = pread(fd, buf, want, start + done);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			err = n == 0 ? EIO : errno;
		else if (spool_msg_write(m, buf, (size_t)n) < 0)
			err = errno ? errno : EIO;
		else
			done += n;
	}
	free(buf);
	if (err) {
		spool_msg_abort(m);
		errno = err;
		return NULL;
	}
	return m;
}

void spool_msg_abort(struct spool_msg *m)
{
	spool_msg_discard(m);
	spool_msg_free(m);
}

/* ---- committing ------------------------------------------------------------ */

static void spool_count(unsigned long long *counter, unsigned long long n)
{
	__atomic_add_fetch(counter, n, __ATOMIC_RELAXED);
}

void spool_get_stats(struct spool *sp, struct spool_stats *out)
{
	out->messages = __atomic_load_n(&sp->stats.messages, __ATOMIC_RELAXED);
	out->batches = __atomic_load_n(&sp->stats.batches, __ATOMIC_RELAXED);
	out->accept_fsyncs = __atomic_load_n(&sp->stats.accept_fsyncs, __ATOMIC_RELAXED);
	out->fsyncs = __atomic_load_n(&sp->stats.fsyncs, __ATOMIC_RELAXED);
}

/* The rest of the buffer into the file, cut to its length: 0 or an errno. */
static int spool_msg_write_out(struct spool_msg *m)
{
	m->all_in_buf = m->written == 0; /* then the journal copies it from buf */
	if (spool_msg_flush(m) < 0)
		return errno;
	/* the old message's bytes beyond ours go */
	if (m->old_size > m->written && ftruncate(m->fd, m->written) < 0)
		return errno;
	return 0;
}

/* Data on stable storage (unless the batch's syncfs did that), file
 * closed, renamed into queue/: 0 or an errno. */
static int spool_msg_sync_rename(struct spool_msg *m, bool synced)
{
	if (!synced) {
		spool_count(&m->sp->stats.fsyncs, 1);
		if (fdatasync(m->fd) < 0)
			return errno;
	}
	int fd = m->fd;
	m->fd = -1;
	if (close(fd) < 0)
		return errno;
	char *qpath = spool_queue_path(m->sp, m->id, "");
	int r = rename(m->tmppath, qpath);
	int e = errno;
	free(qpath);
	if (r < 0)
		return e;
	m->queued = true;
	return 0;
}

/* Not known to be durable, so never acknowledged: take it back. */
static void spool_msg_unqueue(struct spool_msg *m)
{
	char *qpath = spool_queue_path(m->sp, m->id, "");
	if (unlink(qpath) < 0 && errno != ENOENT)
		log_warn("event=spool-error file=%s reason=\"cannot remove: %s\"", qpath,
			 strerror(errno));
	free(qpath);
	m->queued = false;
}

/* The data of a whole batch made durable together: the fdatasyncs of its
 * files run at once (the device merges their cache flushes), where one
 * after the other each would wait for a flush of its own. */
static void spool_sync_all(struct spool *sp, struct spool_msg *batch, size_t n)
{
	int *fds = xcalloc(n, sizeof *fds);
	int *errs = xcalloc(n, sizeof *errs);
	size_t k = 0;
	for (struct spool_msg *m = batch; m; m = m->next)
		if (!m->commit_err && !m->journaled)
			fds[k++] = m->fd;
	spool_count(&sp->stats.fsyncs, k);
	fdatasync_all(fds, errs, k);
	k = 0;
	for (struct spool_msg *m = batch; m; m = m->next)
		if (!m->commit_err && !m->journaled)
			m->commit_err = errs[k++];
	free(fds);
	free(errs);
}

/* The messages of a batch that the journal does not take (too large, or no
 * journal): each file synced (at once for a larger batch), renamed, queue/
 * fsynced once. */
static void spool_batch_commit_files(struct spool *sp, struct spool_msg *batch)
{
	size_t n = 0;
	for (struct spool_msg *m = batch; m; m = m->next) {
		if (m->commit_err || m->journaled)
			continue;
		/* only a hint: the fdatasync reports what matters */
		(void)sync_file_range(m->fd, 0, 0, SYNC_FILE_RANGE_WRITE);
		n++;
	}
	if (n == 0)
		return;
	bool synced = false;
	if (n >= SPOOL_PARALLEL_MIN) {
		spool_sync_all(sp, batch, n);
		synced = true;
	}
	bool any_queued = false;
	for (struct spool_msg *m = batch; m; m = m->next) {
		if (m->commit_err || m->journaled)
			continue;
		m->commit_err = spool_msg_sync_rename(m, synced);
		any_queued |= m->queued;
	}
	if (!any_queued)
		return;
	spool_count(&sp->stats.fsyncs, 1);
	if (fsync_dir(sp->queuedir) == 0)
		return;
	int e = errno;
	for (struct spool_msg *m = batch; m; m = m->next) {
		if (m->queued && !m->journaled) {
			spool_msg_unqueue(m);
			m->commit_err = e;
		}
	}
}

/* The messages the journal takes: their records, and those of the
 * removals noted since the last batch, written and synced at once; then
 * each file renamed into queue/, where a checkpoint makes it durable
 * later.  What the journal cannot take, or takes and then fails, is left
 * to spool_batch_commit_files().  false when the removals' records did not
 * reach the disk. */
static bool spool_batch_commit_journal(struct spool *sp, struct spool_msg *batch,
				       char (*gone)[SPOOL_ID_SIZE], size_t ngone)
{
	struct journal *j = sp->journal;
	for (size_t i = 0; i < ngone; i++)
		journal_add_done(j, gone[i]);
	bool any = ngone > 0;
	for (struct spool_msg *m = batch; m; m = m->next) {
		if (m->commit_err)
			continue;
		const void *data = m->all_in_buf ? m->buf : NULL; /* else read back from the file */
		m->journaled = journal_add_message(j, m->id, data, m->fd, (size_t)m->written) == 0;
		any |= m->journaled;
	}
	if (!any)
		return true;
	unsigned syncs = 0;
	int r = journal_commit(j, &syncs);
	int e = errno;
	spool_count(&sp->stats.fsyncs, syncs);
	if (r < 0) {
		for (struct spool_msg *m = batch; m; m = m->next)
			m->journaled = false;
		if (journal_usable(j))
			spool_journal_broken(sp, e);
		return false;
	}
	for (struct spool_msg *m = batch; m; m = m->next)
		if (m->journaled && !m->commit_err)
			m->commit_err = spool_msg_sync_rename(m, true);
	return true;
}

/* Removals made durable without the journal: queue/ fsynced. */
static void spool_sync_removals(struct spool *sp)
{
	spool_count(&sp->stats.fsyncs, 1);
	if (fsync_dir(sp->queuedir) < 0)
		log_warn("event=spool-error dir=%s reason=\"cannot fsync after removals: %s\"",
			 sp->queuedir, strerror(errno));
}

/* Make a batch (a list linked by next, maybe empty) durable, with the
 * removals in gone; only the committer thread uses the journal (it alone
 * checkpoints it).  Sets every message's commit_err; failed messages are
 * removed. */
static void spool_batch_commit(struct spool *sp, struct spool_msg *batch, bool on_committer,
			       char (*gone)[SPOOL_ID_SIZE], size_t ngone)
{
	unsigned long long n = 0;
	unsigned long long syncs_before = __atomic_load_n(&sp->stats.fsyncs, __ATOMIC_RELAXED);
	for (struct spool_msg *m = batch; m; m = m->next, n++)
		m->commit_err = spool_msg_write_out(m);
	bool removals_durable = ngone == 0;
	if (on_committer && sp->journal)
		removals_durable = spool_batch_commit_journal(sp, batch, gone, ngone);
	if (!removals_durable)
		spool_sync_removals(sp);
	spool_batch_commit_files(sp, batch);
	for (struct spool_msg *m = batch; m; m = m->next)
		if (m->commit_err)
			spool_msg_discard(m);
	if (n == 0)
		return;
	spool_count(&sp->stats.messages, n);
	spool_count(&sp->stats.batches, 1);
	spool_count(&sp->stats.accept_fsyncs,
		    __atomic_load_n(&sp->stats.fsyncs, __ATOMIC_RELAXED) - syncs_before);
}

/* Every queue file written since the last checkpoint made durable, the
 * journal emptied and cut back to its first size: the room a burst took is
 * the file system's again.  On the committer thread, when it is idle or
 * stops. */
static void spool_checkpoint(struct spool *sp)
{
	if (!sp->journal)
		return;
	if (journal_dirty(sp->journal)) {
		unsigned syncs = 0;
		int r = journal_checkpoint(sp->journal, &syncs);
		int e = errno;
		spool_count(&sp->stats.fsyncs, syncs);
		if (r < 0)
			log_warn("event=journal-error dir=%s reason=\"checkpoint failed: %s\"",
				 sp->dir, strerror(e));
	}
	if (journal_shrink(sp->journal) < 0)
		log_warn("event=journal-error dir=%s reason=\"cannot cut the journal back: %s\"",
			 sp->dir, strerror(errno));
}

/* The callbacks of a finished list, in commit order; each m freed first. */
static void spool_run_callbacks(struct spool_msg *list)
{
	while (list) {
		struct spool_msg *m = list;
		list = m->next;
		spool_commit_cb cb = m->cb;
		void *arg = m->cb_arg;
		int err = m->commit_err;
		spool_msg_free(m);
		cb(arg, err);
	}
}

void spool_msg_commit(struct spool_msg *m, spool_commit_cb cb, void *arg)
{
	m->cb = cb;
	m->cb_arg = arg;
	m->next = NULL;
	struct spool *sp = m->sp;
	pthread_mutex_lock(&sp->lock);
	struct spool_committer *gc = sp->gc;
	if (gc) {
		*gc->pending_tail = m;
		gc->pending_tail = &m->next;
		pthread_cond_broadcast(&sp->wake);
	}
	pthread_mutex_unlock(&sp->lock);
	if (!gc) {
		spool_batch_commit(sp, m, false, NULL, 0);
		spool_run_callbacks(m);
	}
}

/* What the committer takes for a batch, under sp->lock. */
struct spool_take {
	struct spool_msg *batch;
	char (*gone)[SPOOL_ID_SIZE];
	size_t ngone;
	unsigned long long gone_seq; /* durable once this batch is */
};

static void spool_take(struct spool *sp, struct spool_committer *gc, struct spool_take *t)
{
	t->batch = gc->pending;
	gc->pending = NULL;
	gc->pending_tail = &gc->pending;
	if (sp->ngone <= SPOOL_GONE_BATCH) { /* all of them: the array changes hands */
		t->gone = sp->gone;
		t->ngone = sp->ngone;
		t->gone_seq = sp->gone_seq;
		sp->gone = NULL;
		sp->ngone = sp->capgone = 0;
		return;
	}
	/* the oldest removals; the rest wait for the next batch */
	size_t rest = sp->ngone - SPOOL_GONE_BATCH;
	t->ngone = SPOOL_GONE_BATCH;
	t->gone_seq = sp->gone_seq - rest;
	t->gone = xcalloc(t->ngone, sizeof *t->gone);
	memcpy(t->gone, sp->gone, t->ngone * sizeof *t->gone);
	memmove(sp->gone, sp->gone + t->ngone, rest * sizeof *sp->gone);
	sp->ngone = rest;
}

/* Removals up to t->gone_seq are durable: their waiters go on. */
static void spool_removals_done(struct spool *sp, struct spool_take *t)
{
	free(t->gone);
	t->gone = NULL;
	if (t->gone_seq > sp->gone_durable)
		sp->gone_durable = t->gone_seq;
	pthread_cond_broadcast(&sp->wake);
}

static bool spool_committer_has_work(struct spool *sp, struct spool_committer *gc)
{
	return gc->pending || gc->stopping || (sp->ngone && sp->gone_waiters);
}

/* Wait, under sp->lock, for work or the end; with live journal records, an
 * idle second brings a checkpoint, which ends their life. */
static void spool_committer_wait(struct spool *sp, struct spool_committer *gc)
{
	while (!spool_committer_has_work(sp, gc)) {
		if (!sp->journal || !journal_dirty(sp->journal)) {
			pthread_cond_wait(&sp->wake, &sp->lock);
			continue;
		}
		struct timespec due;
		clock_gettime(CLOCK_MONOTONIC, &due);
		due.tv_sec += SPOOL_CHECKPOINT_IDLE_S;
		if (pthread_cond_timedwait(&sp->wake, &sp->lock, &due) != ETIMEDOUT ||
		    spool_committer_has_work(sp, gc))
			continue;
		/* the checkpoint's syncfs makes the removals so far durable too */
		struct spool_take t;
		spool_take(sp, gc, &t);
		pthread_mutex_unlock(&sp->lock);
		spool_checkpoint(sp);
		pthread_mutex_lock(&sp->lock);
		spool_removals_done(sp, &t);
	}
}

/* The thread: whatever is pending when it looks is one batch.  At the end
 * a checkpoint leaves the journal empty for the next start. */
static void *spool_committer_main(void *arg)
{
	struct spool *sp = arg;
	struct spool_committer *gc = sp->gc;
	pthread_mutex_lock(&sp->lock);
	for (;;) {
		spool_committer_wait(sp, gc);
		if (!gc->pending && !sp->ngone)
			break; /* stopping, and nothing is left */
		struct spool_take t;
		spool_take(sp, gc, &t);
		pthread_mutex_unlock(&sp->lock);
		spool_batch_commit(sp, t.batch, true, t.gone, t.ngone);
		pthread_mutex_lock(&sp->lock);
		spool_removals_done(sp, &t);
		if (!t.batch)
			continue;
		*gc->done_tail = t.batch;
		while (*gc->done_tail)
			gc->done_tail = &(*gc->done_tail)->next;
		(void)waker_wake(gc->waker); /* only a closed pipe fails: not before the join */
	}
	sp->journaling = false; /* removals from now on: queue/ fsynced */
	pthread_cond_broadcast(&sp->wake);
	pthread_mutex_unlock(&sp->lock);
	spool_checkpoint(sp);
	return NULL;
}

/* A message removed from queue/: with a journal, the next batch records
 * the removal (lest a replay bring the message back). */
static void spool_note_gone(struct spool *sp, const char *id)
{
	size_t len = strlen(id);
	if (len >= SPOOL_ID_SIZE)
		return;
	pthread_mutex_lock(&sp->lock);
	if (sp->journaling) {
		char(*slot)[SPOOL_ID_SIZE] = xgrow(&sp->gone, &sp->ngone, &sp->capgone, sizeof *slot);
		memcpy(*slot, id, len + 1);
		sp->gone_seq++;
	}
	pthread_mutex_unlock(&sp->lock);
}

static struct spool_msg *spool_take_done(struct spool *sp, struct spool_committer *gc)
{
	pthread_mutex_lock(&sp->lock);
	struct spool_msg *list = gc->done;
	gc->done = NULL;
	gc->done_tail = &gc->done;
	pthread_mutex_unlock(&sp->lock);
	return list;
}

static void spool_committer_ready(void *arg)
{
	struct spool *sp = arg;
	if (sp->gc)
		spool_run_callbacks(spool_take_done(sp, sp->gc));
}

int spool_committer_start(struct spool *sp, struct event_base *base)
{
	if (sp->gc) {
		errno = EBUSY;
		return -1;
	}
	struct waker *waker = waker_new(base, spool_committer_ready, sp);
	if (!waker)
		return -1;
	struct spool_committer *gc = xcalloc(1, sizeof *gc);
	gc->pending_tail = &gc->pending;
	gc->done_tail = &gc->done;
	gc->waker = waker;
	pthread_mutex_lock(&sp->lock);
	sp->gc = gc;
	sp->journaling = sp->journal != NULL;
	pthread_mutex_unlock(&sp->lock);
	int e = thread_start(&sp->gc->thread, spool_committer_main, sp);
	if (e != 0) {
		pthread_mutex_lock(&sp->lock);
		sp->gc = NULL;
		sp->journaling = false;
		pthread_mutex_unlock(&sp->lock);
		waker_free(gc->waker);
		free(gc);
		errno = e;
		return -1;
	}
	return 0;
}

void spool_committer_stop(struct spool *sp)
{
	struct spool_committer *gc = sp->gc;
	if (!gc)
		return;
	pthread_mutex_lock(&sp->lock);
	gc->stopping = true;
	pthread_cond_broadcast(&sp->wake);
	pthread_mutex_unlock(&sp->lock);
	int e = pthread_join(gc->thread, NULL);
	if (e != 0)
		fatal("pthread_join: %s", strerror(e));
	struct spool_msg *done = spool_take_done(sp, gc);
	pthread_mutex_lock(&sp->lock);
	sp->gc = NULL; /* commits from the callbacks below are synchronous */
	pthread_mutex_unlock(&sp->lock);
	spool_run_callbacks(done);
	waker_free(gc->waker);
	free(gc);
	struct spool_stats st;
	spool_get_stats(sp, &st);
	log_info("event=spool-stats messages=%llu batches=%llu accept_fsyncs=%llu fsyncs=%llu",
		 st.messages, st.batches, st.accept_fsyncs, st.fsyncs);
}

/* ---- reading ------------------------------------------------------------ */

enum spool_line_status {
	SPOOL_LINE_OK,
	SPOOL_LINE_EOF,         /* clean end of file */
	SPOOL_LINE_TORN,        /* bytes without a final LF at end of file */
	SPOOL_LINE_BAD,         /* too long, or a NUL byte */
	SPOOL_LINE_ERROR,       /* read error, errno set */
};

/* Read one LF-terminated line into buf (LF removed), never more than size-1
 * bytes including the LF. */
static enum spool_line_status spool_get_line(FILE *f, char *buf, size_t size, size_t *len)
{
	size_t n = 0;
	for (;;) {
		int c = getc(f);
		if (c == EOF) {
			if (ferror(f))
				return SPOOL_LINE_ERROR;
			*len = n;
			return n == 0 ? SPOOL_LINE_EOF : SPOOL_LINE_TORN;
		}
		if (c == '\n')
			break;
		if (c == '\0' || n + 1 >= size)
			return SPOOL_LINE_BAD;
		buf[n++] = (char)c;
	}
	buf[n] = '\0';
	*len = n;
	return SPOOL_LINE_OK;
}

/* Envelope keys in the order they must appear; rcpt may repeat. */
enum spool_key_rank {
	SPOOL_KEY_NONE,
	SPOOL_KEY_ID,
	SPOOL_KEY_ARRIVAL,
	SPOOL_KEY_SENDER,
	SPOOL_KEY_CLIENT,
	SPOOL_KEY_HELO,
	SPOOL_KEY_AUTH,
	SPOOL_KEY_SERVER,
	SPOOL_KEY_TLS,
	SPOOL_KEY_JUNK,
	SPOOL_KEY_RCPT,
};

struct spool_reader {
	const char *path;
	const char *want_id;
	struct spool_envelope *env;
	enum spool_key_rank last;       /* the last key read */
	unsigned lineno;
	const char *problem;    /* for the log line */
};

static int spool_parse_id(struct spool_reader *rd, const char *v)
{
	if (strcmp(v, rd->want_id) != 0) {
		rd->problem = "id does not match the file name";
		return -1;
	}
	memcpy(rd->env->id, rd->want_id, strlen(rd->want_id) + 1);
	return 0;
}

static int spool_parse_arrival(struct spool_reader *rd, const char *v)
{
	size_t n = strlen(v);
	if (n == 0 || n > 18 || strspn(v, "0123456789") != n) { /* 18 digits: no overflow */
		rd->problem = "bad arrival time";
		return -1;
	}
	rd->env->arrival = (time_t)strtoll(v, NULL, 10);
	return 0;
}

static int spool_parse_xtext(struct spool_reader *rd, const char *v, char **out)
{
	*out = spool_xtext_decode(v);
	if (!*out) {
		rd->problem = "bad xtext";
		return -1;
	}
	return 0;
}

static int spool_parse_sender(struct spool_reader *rd, const char *v)
{
	return spool_parse_xtext(rd, v, &rd->env->sender);
}

static int spool_parse_client(struct spool_reader *rd, const char *v)
{
	return spool_parse_xtext(rd, v, &rd->env->client);
}

static int spool_parse_helo(struct spool_reader *rd, const char *v)
{
	return spool_parse_xtext(rd, v, &rd->env->helo);
}

static int spool_parse_auth(struct spool_reader *rd, const char *v)
{
	return spool_parse_xtext(rd, v, &rd->env->auth_user);
}

static int spool_parse_server(struct spool_reader *rd, const char *v)
{
	return spool_parse_xtext(rd, v, &rd->env->server);
}

static int spool_parse_tls(struct spool_reader *rd, const char *v)
{
	if (strcmp(v, "required") != 0) {
		rd->problem = "bad tls value";
		return -1;
	}
	rd->env->requiretls = true;
	return 0;
}

static int spool_parse_junk(struct spool_reader *rd, const char *v)
{
	if (strcmp(v, "yes") != 0) {
		rd->problem = "bad junk mark";
		return -1;
	}
	spool_envelope_mark_junk(rd->env);
	return 0;
}

/* "local|remote ADDRESS ORIG" */
static int spool_parse_rcpt(struct spool_reader *rd, const char *v)
{
	bool local;
	if (strncmp(v, "local ", 6) == 0) {
		local = true;
		v += 6;
	} else if (strncmp(v, "remote ", 7) == 0) {
		local = false;
		v += 7;
	} else {
		rd->problem = "bad recipient kind";
		return -1;
	}
	const char *sp = strchr(v, ' ');
	if (!sp || sp == v) {
		rd->problem = "bad recipient";
		return -1;
	}
	struct spool_rcpt *r = xappend(&rd->env->rcpts, &rd->env->nrcpts, sizeof *r);
	r->local = local;
	char *addr = xstrndup(v, (size_t)(sp - v));
	int ret = spool_parse_xtext(rd, addr, &r->address);
	free(addr);
	if (ret == 0)
		ret = spool_parse_xtext(rd, sp + 1, &r->orig);
	return ret;
}

static const struct spool_key {
	const char *name;
	enum spool_key_rank rank;
	int (*parse)(struct spool_reader *rd, const char *value);
} spool_keys[] = {
	{"id", SPOOL_KEY_ID, spool_parse_id},
	{"arrival", SPOOL_KEY_ARRIVAL, spool_parse_arrival},
	{"sender", SPOOL_KEY_SENDER, spool_parse_sender},
	{"client", SPOOL_KEY_CLIENT, spool_parse_client},
	{"helo", SPOOL_KEY_HELO, spool_parse_helo},
	{"auth", SPOOL_KEY_AUTH, spool_parse_auth},
	{"server", SPOOL_KEY_SERVER, spool_parse_server},
	{"tls", SPOOL_KEY_TLS, spool_parse_tls},
	{"junk", SPOOL_KEY_JUNK, spool_parse_junk},
	{"rcpt", SPOOL_KEY_RCPT, spool_parse_rcpt},
};

/* Keys come in rank order, each once but rcpt; id to client are required
 * (helo, auth, server, tls and junk are optional), so each may follow only its
 * predecessor. */
static bool spool_key_may_follow(enum spool_key_rank key, enum spool_key_rank last)
{
	if (key <= SPOOL_KEY_CLIENT)
		return last == key - 1;
	if (key == SPOOL_KEY_RCPT)
		return last >= SPOOL_KEY_CLIENT;
	return last >= SPOOL_KEY_CLIENT && last < key;
}

static int spool_parse_line(struct spool_reader *rd, char *line)
{
	char *sp = strchr(line, ' ');
	if (!sp) {
		rd->problem = "line without a value";
		return -1;
	}
	*sp = '\0';
	for (size_t i = 0; i < ARRAY_LEN(spool_keys); i++) {
		const struct spool_key *k = &spool_keys[i];
		if (strcmp(line, k->name) != 0)
			continue;
		if (!spool_key_may_follow(k->rank, rd->last)) {
			rd->problem = "key repeated, missing or out of order";
			return -1;
		}
		rd->last = k->rank;
		return k->parse(rd, sp + 1);
	}
	rd->problem = "unknown key";
	return -1;
}

/* The envelope up to and including the empty line.  0, or -1 with
 * rd->problem set (malformed) or errno set (read error, problem NULL). */
static int spool_parse_envelope(struct spool_reader *rd, FILE *f)
{
	char *line = xmalloc(SPOOL_LINE_MAX);
	off_t offset = 0;
	int r = -1;
	for (;;) {
		size_t len;
		enum spool_line_status st = spool_get_line(f, line, SPOOL_LINE_MAX, &len);
		rd->lineno++;
		if (st == SPOOL_LINE_ERROR)
			break;
		if (st != SPOOL_LINE_OK) {
			rd->problem = st == SPOOL_LINE_BAD ? "line too long or NUL byte"
							   : "no end of envelope";
			break;
		}
		offset += (off_t)len + 1;
		if (rd->lineno == 1) {
			if (strcmp(line, spool_magic) != 0) {
				rd->problem = "not a posthorn spool file";
				break;
			}
			continue;
		}
		if (len == 0) {
			if (rd->last != SPOOL_KEY_RCPT)
				rd->problem = "envelope incomplete";
			else
				r = 0;
			break;
		}
		if (spool_parse_line(rd, line) < 0)
			break;
	}
	rd->env->body_offset = offset;
	free(line);
	return r;
}

static void spool_warn_malformed(const char *path, unsigned lineno, const char *problem)
{
	char p[LOG_VALUE_MAX];
	log_warn("event=spool-corrupt file=%s line=%u reason=\"%s\"",
		 log_escape(p, sizeof p, path, strlen(path)), lineno, problem);
}

/* One .done record: a canonical decimal index below nrcpts. */
static int spool_done_index(const char *s, size_t len, size_t nrcpts, size_t *out)
{
	if (len == 0 || len > 19 || strspn(s, "0123456789") != len || (len > 1 && s[0] == '0'))
		return -1;
	unsigned long long v = strtoull(s, NULL, 10);
	if (v >= nrcpts)
		return -1;
	*out = (size_t)v;
	return 0;
}

/* Set rcpts[i].done from ID.done; a torn last record is ignored. */
static int spool_read_done(const struct spool *sp, const char *id, struct spool_envelope *env)
{
	char *path = spool_queue_path(sp, id, spool_done_suffix);
	FILE *f = fopen(path, "re");
	if (!f) {
		int e = errno;
		free(path);
		errno = e;
		return e == ENOENT ? 0 : -1;
	}
	int r = 0;
	unsigned lineno = 0;
	for (;;) {
		char line[SPOOL_DONE_LINE_MAX];
		size_t len, idx;
		enum spool_line_status st = spool_get_line(f, line, sizeof line, &len);
		lineno++;
		if (st == SPOOL_LINE_EOF || st == SPOOL_LINE_TORN)
			break;
		if (st == SPOOL_LINE_ERROR || st == SPOOL_LINE_BAD ||
		    spool_done_index(line, len, env->nrcpts, &idx) < 0) {
			if (st != SPOOL_LINE_ERROR) {
				spool_warn_malformed(path, lineno, "bad recipient index");
				errno = EINVAL;
			}
			r = -1;
			break;
		}
		env->rcpts[idx].done = true;
	}
	int saved = errno;
	(void)fclose(f); /* read-only: nothing to lose */
	free(path);
	errno = saved;
	return r;
}

int spool_read_envelope(struct spool *sp, const char *id, struct spool_envelope *env)
{
	memset(env, 0, sizeof *env);
	if (!spool_id_valid(id)) {
		errno = EINVAL;
		return -1;
	}
	char *path = spool_queue_path(sp, id, "");
	FILE *f = fopen(path, "re");
	struct stat st;
	if (!f || fstat(fileno(f), &st) < 0) {
		int e = errno;
		if (f)
			(void)fclose(f); /* read-only: nothing to lose */
		free(path);
		errno = e;
		return -1;
	}
	struct spool_reader rd = {.path = path, .want_id = id, .env = env};
	int r = spool_parse_envelope(&rd, f);
	int saved = errno;
	(void)fclose(f); /* read-only: nothing to lose */
	if (r < 0 && rd.problem) {
		spool_warn_malformed(path, rd.lineno, rd.problem);
		saved = EINVAL;
	}
	free(path);
	if (r == 0) {
		env->size = st.st_size - env->body_offset;
		r = spool_read_done(sp, id, env);
		saved = errno;
	}
	if (r < 0) {
		spool_envelope_clear(env);
		errno = saved;
	}
	return r;
}

int spool_open_message(struct spool *sp, const struct spool_envelope *env)
{
	if (!spool_id_valid(env->id)) {
		errno = EINVAL;
		return -1;
	}
	char *path = spool_queue_path(sp, env->id, "");
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	int saved = errno;
	free(path);
	if (fd < 0) {
		errno = saved;
		return -1;
	}
	if (lseek(fd, env->body_offset, SEEK_SET) < 0) {
		saved = errno;
		close(fd);
		errno = saved;
		return -1;
	}
	return fd;
}

/* ---- recording progress and removing ------------------------------------ */

/* Cut a torn last record (a crash mid-append) so that the next record does
 * not glue onto it: "1" + "2\n" must not read as "12". */
static int spool_done_trim(int fd, off_t size)
{
	off_t end = size;
	while (end > 0) {
		char buf[64];
		off_t start = end > (off_t)sizeof buf ? end - (off_t)sizeof buf : 0;
		size_t want = (size_t)(end - start);
		ssize_t n = pread(fd, buf, want, start);
		if (n < 0)
			return -1;
		if ((size_t)n != want) {
			errno = EIO;
			return -1;
		}
		for (size_t i = want; i-- > 0;)
			if (buf[i] == '\n') {
				off_t keep = start + (off_t)i + 1;
				return keep == size ? 0 : ftruncate(fd, keep);
			}
		end = start;
	}
	return ftruncate(fd, 0);
}

static int spool_done_append(int fd, size_t i, bool *created)
{
	struct stat st;
	if (fstat(fd, &st) < 0)
		return -1;
	*created = st.st_size == 0;
	if (st.st_size > 0 && spool_done_trim(fd, st.st_size) < 0)
		return -1;
	char rec[SPOOL_DONE_LINE_MAX];
	if (!bsnprintf(rec, sizeof rec, "%zu\n", i)) {
		errno = EOVERFLOW;
		return -1;
	}
	if (write_all(fd, rec, strlen(rec)) < 0 || fsync(fd) < 0)
		return -1;
	return 0;
}

int spool_mark_done(struct spool *sp, const char *id, size_t i)
{
	if (!spool_id_valid(id)) {
		errno = EINVAL;
		return -1;
	}
	char *path = spool_queue_path(sp, id, spool_done_suffix);
	int fd = open(path, O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	free(path);
	if (fd < 0)
		return -1;
	bool created = false;
	int r = spool_done_append(fd, i, &created);
	int saved = errno;
	if (close(fd) < 0 && r == 0) {
		r = -1;
		saved = errno;
	}
	if (r == 0 && created && fsync_dir(sp->queuedir) < 0) {
		r = -1;
		saved = errno;
	}
	errno = saved;
	return r;
}

int spool_remove(struct spool *sp, const char *id)
{
	if (spool_unlink_message(sp, id) < 0)
		return -1;
	return spool_sync_queue(sp);
}

/* With a journal, the removals noted so far are durable once the
 * committer has recorded them (with its next batch, at once when it is
 * idle); otherwise queue/ is fsynced. */
int spool_sync_queue(struct spool *sp)
{
	pthread_mutex_lock(&sp->lock);
	bool journaled = sp->journaling; /* then the removals were noted */
	unsigned long long want = sp->gone_seq;
	if (journaled && sp->gone_durable < want) {
		sp->gone_waiters++;
		pthread_cond_broadcast(&sp->wake);
		while (sp->journaling && sp->gone_durable < want)
			pthread_cond_wait(&sp->wake, &sp->lock);
		sp->gone_waiters--;
	}
	bool recorded = journaled && sp->gone_durable >= want;
	pthread_mutex_unlock(&sp->lock);
	return recorded ? 0 : fsync_dir(sp->queuedir);
}

int spool_unlink_message(struct spool *sp, const char *id)
{
	if (!spool_id_valid(id)) {
		errno = EINVAL;
		return -1;
	}
	/* The message first: a crash in between leaves an orphan .done, which
	 * spool_open() removes, never a message without its done records. */
	char *path = spool_queue_path(sp, id, "");
	int r = spool_recycle(sp, id, path) == 0 ? 0 : unlink(path);
	free(path);
	if (r < 0)
		return -1;
	spool_note_gone(sp, id);
	path = spool_queue_path(sp, id, spool_done_suffix);
	r = unlink(path);
	free(path);
	if (r < 0 && errno != ENOENT)
		return -1;
	return 0;
}

static int spool_cmp_ids(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

size_t spool_list(struct spool *sp, char ***ids)
{
	size_t n = 0;
	*ids = NULL;
	DIR *d = opendir(sp->queuedir);
	if (!d) {
		log_warn("event=spool-error dir=%s reason=\"cannot list: %s\"", sp->queuedir,
			 strerror(errno));
		return 0;
	}
	struct dirent *de;
	while ((errno = 0, de = readdir(d)) != NULL) {
		if (!spool_id_valid(de->d_name)) /* dotfiles, ID.done, strays */
			continue;
		char **slot = xappend(ids, &n, sizeof *slot);
		*slot = xstrdup(de->d_name);
	}
	if (errno != 0)
		log_warn("event=spool-error dir=%s reason=\"cannot list: %s\"", sp->queuedir,
			 strerror(errno));
	closedir(d);
	if (n > 0)
		qsort(*ids, n, sizeof **ids, spool_cmp_ids);
	return n;
}

void spool_free_ids(char **ids, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(ids[i]);
	free(ids);
}

void spool_envelope_clear(struct spool_envelope *env)
{
	free(env->sender);
	for (size_t i = 0; i < env->nrcpts; i++) {
		free(env->rcpts[i].address);
		free(env->rcpts[i].orig);
	}
	free(env->rcpts);
	free(env->client);
	free(env->helo);
	free(env->auth_user);
	free(env->server);
	memset(env, 0, sizeof *env);
}

void spool_envelope_mark_junk(struct spool_envelope *env)
{
	env->junk = true;
}

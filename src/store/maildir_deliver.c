/* maildir_deliver: writing new messages into Maildirs (see
 * maildir_deliver.h and maildir(5): write in tmp/,
 * fsync, rename into new/). */
#define _GNU_SOURCE /* sync_file_range */
#include "store/maildir_deliver.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "lib/log.h"
#include "lib/util.h"
#include "store/mailbox.h"
#include "store/maildir.h"

enum {
	MAILDIR_DELIVER_COPY_BUF = 64 * 1024,   /* spool → Maildir copy buffer */
	MAILDIR_DELIVER_NAME_TRIES = 3,         /* fresh names tried when one exists */
	MAILDIR_DELIVER_SWEPT_SLOTS = 4096,     /* Maildirs remembered as swept */
	MAILDIR_DELIVER_RESWEEP = 24 * 3600,    /* seconds before a Maildir's tmp/ is swept again */
};

/* ---- folders ------------------------------------------------------------ */

static int maildir_deliver_is_dir(const char *path)
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
static int maildir_deliver_sync_parent(const char *path)
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
static int maildir_deliver_mkdir(const char *path)
{
	if (mkdir(path, 0700) == 0)
		return maildir_deliver_sync_parent(path);
	if (errno == EEXIST)
		return maildir_deliver_is_dir(path);
	if (errno != ENOENT)
		return -1;
	char *parent = xstrdup(path);
	char *slash = strrchr(parent, '/');
	while (slash && slash > parent && slash[-1] == '/')
		slash--;
	int r = -1;
	if (slash && slash != parent) {
		*slash = '\0';
		r = maildir_deliver_mkdir(parent);
	}
	free(parent);
	if (r < 0)
		return -1;
	if (mkdir(path, 0700) == 0)
		return maildir_deliver_sync_parent(path);
	if (errno == EEXIST)
		return maildir_deliver_is_dir(path);
	return -1;
}

static int maildir_deliver_make_folders(const char *dir, char *err, size_t errsz)
{
	static const char *const subs[] = {"", "/tmp", "/new", "/cur"};
	for (size_t i = 0; i < ARRAY_LEN(subs); i++) {
		char *p = xasprintf("%s%s", dir, subs[i]);
		int r = maildir_deliver_mkdir(p);
		if (r < 0)
			errfmt(err, errsz, "cannot create folder %s: %s", p, strerror(errno));
		free(p);
		if (r < 0)
			return -1;
	}
	return 0;
}

/* ---- tmp/ leftovers ------------------------------------------------------ */

/* The Maildirs whose tmp/ was swept, and when: a table of path hashes,
 * each in its slot (two Maildirs that share a slot only cost an extra
 * sweep), so that its size is fixed however many Maildirs there are. */
struct maildir_deliver_swept_slot {
	uint64_t key;           /* the hash of the Maildir's path */
	time_t at;              /* when its tmp/ was swept; 0: empty */
};

static struct {
	pthread_mutex_t lock;
	struct maildir_deliver_swept_slot slot[MAILDIR_DELIVER_SWEPT_SLOTS];
} maildir_deliver_swept = {.lock = PTHREAD_MUTEX_INITIALIZER};

static uint64_t maildir_deliver_hash(const char *s)
{
	uint64_t h = 14695981039346656037ull; /* FNV-1a */
	for (; *s; s++) {
		h ^= (unsigned char)*s;
		h *= 1099511628211ull;
	}
	return h;
}

/* The first delivery to dir in this process, or the first a day after
 * the last sweep: time to sweep its tmp/ (and it counts as swept). */
static bool maildir_deliver_sweep_due(const char *dir, time_t now)
{
	uint64_t key = maildir_deliver_hash(dir);
	pthread_mutex_lock(&maildir_deliver_swept.lock);
	struct maildir_deliver_swept_slot *e =
	    &maildir_deliver_swept.slot[key % MAILDIR_DELIVER_SWEPT_SLOTS];
	bool due = e->at == 0 || e->key != key || now - e->at >= MAILDIR_DELIVER_RESWEEP;
	if (due) {
		e->key = key;
		e->at = now;
	}
	pthread_mutex_unlock(&maildir_deliver_swept.lock);
	return due;
}

/* What a killed daemon left in dir/tmp (its own names) and what stayed
 * there 36 hours (maildir(5)) goes, at the first delivery into the Maildir
 * after a start and daily after that: bounded (one directory read per
 * Maildir a day) and only in Maildirs that posthorn delivers to. */
static void maildir_deliver_sweep(const char *dir)
{
	if (!maildir_deliver_sweep_due(dir, time(NULL)))
		return;
	size_t n = maildir_sweep_tmp(dir);
	if (n > 0) {
		char d[LOG_VALUE_MAX];
		log_info("event=maildir-tmp-cleaned maildir=%s removed=%zu",
			 log_escape(d, sizeof d, dir, strlen(dir)), n);
	}
}

/* ---- writing ------------------------------------------------------------ */

/* Drop every CR of buf[0, n) in place, moving the runs between them with
 * memmove (memchr finds the next CR): the new length. */
static size_t maildir_deliver_drop_cr(char *buf, size_t n)
{
	size_t o = 0;
	for (size_t i = 0; i < n;) {
		const char *cr = memchr(buf + i, '\r', n - i);
		size_t run = cr ? (size_t)(cr - (buf + i)) : n - i;
		if (o != i)
			memmove(buf + o, buf + i, run);
		o += run;
		i += run + (cr ? 1 : 0);
	}
	return o;
}

static off_t maildir_deliver_count_lf(const char *buf, size_t n)
{
	off_t lines = 0;
	for (const char *p = buf, *end = buf + n; (p = memchr(p, '\n', (size_t)(end - p))); p++)
		lines++;
	return lines;
}

/* Write buf with CRLF turned into LF, the line end of Maildir files on
 * Unix.  The spool holds no bare CR (smtp_data refuses it), so every CR is
 * half of a CRLF and can simply be dropped. */
static int maildir_deliver_write_lf(struct maildir_deliver_file *mf, char *buf, size_t n)
{
	size_t o = maildir_deliver_drop_cr(buf, n);
	mf->lines += maildir_deliver_count_lf(buf, o);
	mf->bytes += (off_t)o;
	return write_all(mf->fd, buf, o);
}

/* Copy len bytes at offset of src into the file. */
static int maildir_deliver_copy(struct maildir_deliver_file *mf, int src, off_t offset, off_t len)
{
	char *buf = xmalloc(MAILDIR_DELIVER_COPY_BUF);
	int r = 0;
	while (len > 0) {
		size_t want = len < MAILDIR_DELIVER_COPY_BUF ? (size_t)len : MAILDIR_DELIVER_COPY_BUF;
		ssize_t n = pread(src, buf, want, offset);
		if (n < 0 && errno == EINTR)
			continue;
		if (n == 0)
			errno = EIO; /* the spool file is shorter than its envelope says */
		if (n <= 0 || maildir_deliver_write_lf(mf, buf, (size_t)n) < 0) {
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

/* A new file in tmp/ under a fresh unique name (O_EXCL: a name that
 * exists is never reused), or under the name given (its own: written
 * over). */
static int maildir_deliver_open(struct maildir_deliver_file *mf, const char *unique, char *err,
				size_t errsz)
{
	for (int try = 0; try < MAILDIR_DELIVER_NAME_TRIES; try++) {
		mf->name = unique ? xstrdup(unique) : maildir_unique_name(0);
		mf->tmp = xasprintf("%s/tmp/%s", mf->dir, mf->name);
		mf->fd = open(mf->tmp,
			      O_WRONLY | O_CREAT | (unique ? O_TRUNC : O_EXCL) | O_CLOEXEC | O_NOFOLLOW,
			      0600);
		if (mf->fd >= 0)
			return 0;
		int e = errno;
		errfmt(err, errsz, "cannot create %s: %s", mf->tmp, strerror(e));
		free(mf->name);
		free(mf->tmp);
		mf->name = mf->tmp = NULL;
		errno = e;
		if (e != EEXIST || unique)
			break;
	}
	return -1;
}

/* Write the copy into tmp/ and start its writeback, so that the copies of
 * a batch reach the disk together. */
static int maildir_deliver_write(struct maildir_deliver_file *mf, const char *hdr, int src,
				 off_t offset, off_t len, char *err, size_t errsz)
{
	char *h = xstrdup(hdr);
	int w = maildir_deliver_write_lf(mf, h, strlen(h));
	free(h);
	if (w < 0 || maildir_deliver_copy(mf, src, offset, len) < 0) {
		errfmt(err, errsz, "cannot write %s: %s", mf->tmp, strerror(errno));
		return -1;
	}
	(void)sync_file_range(mf->fd, 0, 0, SYNC_FILE_RANGE_WRITE); /* a hint only */
	return 0;
}

/* Header values must not be able to start a new header line. */
static bool maildir_deliver_header_safe(const char *s)
{
	for (; *s; s++)
		if (maildir_is_ctl((unsigned char)*s))
			return false;
	return true;
}

/* ---- the steps ------------------------------------------------------------ */

#define MAILDIR_DELIVER_JUNK ".Junk" /* Maildir++: the folder "Junk" */

static int maildir_deliver_stage_in(char *dir, const char *address, const char *sender,
				    const char *unique, int fd, off_t offset, off_t len,
				    struct maildir_deliver_file *mf, char *err, size_t errsz);

int maildir_deliver_stage(const char *mailboxes, const char *address, const char *sender,
			  int fd, off_t offset, off_t len, struct maildir_deliver_file *mf,
			  char *err, size_t errsz)
{
	return maildir_deliver_stage_as(mailboxes, address, sender, NULL, fd, offset, len, mf, err,
					errsz);
}

bool maildir_deliver_present(const char *mailboxes, const char *address, const char *unique)
{
	char *dir = maildir_path(mailboxes, address);
	bool found = dir && maildir_has_unique(dir, unique);
	free(dir);
	return found;
}

/* The recipient's Junk folder (Maildir++ .Junk), made with the \Junk
 * special use (RFC 6154) when missing; the Maildir itself first if the
 * user has none yet.  The folder's path, or NULL with err set. */
static char *maildir_deliver_junk_dir(const char *mailboxes, const char *address, char *err,
				      size_t errsz)
{
	char *root = maildir_path(mailboxes, address);
	if (!root) {
		errfmt(err, errsz, "address cannot name a Maildir folder");
		return NULL;
	}
	char *dir = xasprintf("%s/" MAILDIR_DELIVER_JUNK, root);
	struct stat st;
	if (stat(dir, &st) < 0 && errno == ENOENT) {
		enum mailbox_result r = MAILBOX_OK;
		if (maildir_deliver_make_folders(root, err, errsz) == 0)
			r = mailbox_create_special(root, "Junk", MAILBOX_SPECIAL_JUNK, err, errsz);
		else
			r = MAILBOX_ERR_IO;
		if (r != MAILBOX_OK && r != MAILBOX_ERR_EXISTS) {
			free(root);
			free(dir);
			return NULL;
		}
	}
	free(root);
	return dir;
}

int maildir_deliver_stage_junk(const char *mailboxes, const char *address, const char *sender,
			       const char *unique, int fd, off_t offset, off_t len,
			       struct maildir_deliver_file *mf, char *err, size_t errsz)
{
	memset(mf, 0, sizeof *mf);
	mf->fd = -1;
	char *dir = maildir_deliver_junk_dir(mailboxes, address, err, errsz);
	if (!dir) {
		errno = EIO;
		return -1;
	}
	return maildir_deliver_stage_in(dir, address, sender, unique, fd, offset, len, mf, err,
					errsz);
}

bool maildir_deliver_present_junk(const char *mailboxes, const char *address, const char *unique)
{
	char *root = maildir_path(mailboxes, address);
	char *dir = root ? xasprintf("%s/" MAILDIR_DELIVER_JUNK, root) : NULL;
	bool found = dir && maildir_has_unique(dir, unique);
	free(root);
	free(dir);
	return found;
}

int maildir_deliver_stage_as(const char *mailboxes, const char *address, const char *sender,
			     const char *unique, int fd, off_t offset, off_t len,
			     struct maildir_deliver_file *mf, char *err, size_t errsz)
{
	memset(mf, 0, sizeof *mf);
	mf->fd = -1;
	char *dir = maildir_path(mailboxes, address);
	if (!dir) {
		errfmt(err, errsz, "address cannot name a Maildir folder");
		errno = EINVAL;
		return -1;
	}
	return maildir_deliver_stage_in(dir, address, sender, unique, fd, offset, len, mf, err,
					errsz);
}

/* Into the Maildir dir (owned: mf keeps it, or it is freed). */
static int maildir_deliver_stage_in(char *dir, const char *address, const char *sender,
				    const char *unique, int fd, off_t offset, off_t len,
				    struct maildir_deliver_file *mf, char *err, size_t errsz)
{
	mf->dir = dir;
	mf->fd = -1;
	if (!maildir_deliver_header_safe(address) || !maildir_deliver_header_safe(sender)) {
		errfmt(err, errsz, "address contains control characters");
		maildir_deliver_clear(mf);
		errno = EINVAL;
		return -1;
	}
	if (offset < 0 || len < 0) {
		errfmt(err, errsz, "bad message offset or length");
		maildir_deliver_clear(mf);
		errno = EINVAL;
		return -1;
	}
	maildir_deliver_sweep(mf->dir);
	char *hdr = xasprintf("Return-Path: <%s>\r\nDelivered-To: %s\r\n", sender, address);
	/* the folders are made when the first try says they are missing (a
	 * Maildir that exists, the usual case, costs no mkdir and stat) */
	int r = maildir_deliver_open(mf, unique, err, errsz);
	if (r < 0 && errno == ENOENT) {
		r = maildir_deliver_make_folders(mf->dir, err, errsz);
		if (r == 0)
			r = maildir_deliver_open(mf, unique, err, errsz);
	}
	if (r == 0) {
		r = maildir_deliver_write(mf, hdr, fd, offset, len, err, errsz);
		if (r < 0)
			maildir_deliver_discard(mf);
	}
	int saved = errno;
	free(hdr);
	if (r < 0)
		maildir_deliver_clear(mf);
	errno = saved;
	return r;
}

int maildir_deliver_publish(struct maildir_deliver_file *mf, bool synced, char *err,
			    size_t errsz)
{
	if (!synced && fdatasync(mf->fd) < 0) {
		errfmt(err, errsz, "cannot fsync %s: %s", mf->tmp, strerror(errno));
		return -1;
	}
	int fd = mf->fd;
	mf->fd = -1;
	if (close(fd) < 0) {
		errfmt(err, errsz, "cannot close %s: %s", mf->tmp, strerror(errno));
		return -1;
	}
	/* S= the file's size, W= its size with CRLF line ends (what POP3
	 * and IMAP report), so readers need not count */
	mf->new = xasprintf("%s/new/%s,S=%lld,W=%lld", mf->dir, mf->name, (long long)mf->bytes,
			    (long long)mf->bytes + (long long)mf->lines);
	int r = rename(mf->tmp, mf->new);
	if (r < 0 && errno == ENOENT && maildir_deliver_make_folders(mf->dir, err, errsz) == 0)
		r = rename(mf->tmp, mf->new); /* new/ was taken away: made again */
	if (r < 0) {
		errfmt(err, errsz, "cannot rename %s: %s", mf->tmp, strerror(errno));
		free(mf->new);
		mf->new = NULL;
		return -1;
	}
	return 0;
}

int maildir_deliver_sync_new(const char *dir, char *err, size_t errsz)
{
	char *newdir = xasprintf("%s/new", dir);
	int r = fsync_dir(newdir);
	if (r < 0)
		errfmt(err, errsz, "cannot fsync %s: %s", newdir, strerror(errno));
	free(newdir);
	return r;
}

void maildir_deliver_discard(struct maildir_deliver_file *mf)
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

void maildir_deliver_clear(struct maildir_deliver_file *mf)
{
	free(mf->dir);
	free(mf->name);
	free(mf->tmp);
	free(mf->new);
	memset(mf, 0, sizeof *mf);
	mf->fd = -1;
}

int maildir_deliver(const char *mailboxes, const char *address, const char *sender, int fd,
		    off_t offset, off_t len, char *err, size_t errsz)
{
	struct maildir_deliver_file mf;
	if (maildir_deliver_stage(mailboxes, address, sender, fd, offset, len, &mf, err, errsz) < 0)
		return -1;
	int r = maildir_deliver_publish(&mf, false, err, errsz);
	if (r == 0)
		r = maildir_deliver_sync_new(mf.dir, err, errsz);
	int saved = errno;
	if (r < 0)
		maildir_deliver_discard(&mf);
	maildir_deliver_clear(&mf);
	errno = saved;
	return r;
}

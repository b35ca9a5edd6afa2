/* quota: a user's usage in the Maildir++ maildirsize file (see quota.h);
 * RFC 9208's STORAGE and MESSAGE resources are read from it. */
#include "store/quota.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lib/util.h"
#include "store/maildir.h"

enum { QUOTA_LINE_MAX = 64 };

/* ---- the file's text ------------------------------------------------------ */

/* One signed decimal of at most 18 digits (well inside int64_t) at *p,
 * which moves past it. */
static bool quota_number(const char **p, const char *end, int64_t *out)
{
	const char *s = *p;
	bool neg = s < end && *s == '-';
	if (neg)
		s++;
	int64_t v = 0;
	size_t digits = 0;
	for (; s < end && *s >= '0' && *s <= '9'; s++, digits++) {
		if (digits == 18)
			return false;
		v = v * 10 + (*s - '0');
	}
	if (digits == 0)
		return false;
	*out = neg ? -v : v;
	*p = s;
	return true;
}

/* The limit line: comma-separated "<n>S" and "<n>C", in any order, either
 * absent; empty means no limit. */
static bool quota_parse_limit(const char *s, const char *end, struct quota_limit *limit)
{
	memset(limit, 0, sizeof *limit);
	while (s < end) {
		int64_t n;
		if (!quota_number(&s, end, &n) || n < 0 || s == end)
			return false;
		if (*s == 'S')
			limit->bytes = (uint64_t)n;
		else if (*s == 'C')
			limit->messages = (uint64_t)n;
		else
			return false;
		s++;
		if (s < end && *s++ != ',')
			return false;
	}
	return true;
}

/* A usage line: "<bytes> <messages>". */
static bool quota_parse_delta(const char *s, const char *end, int64_t *bytes, int64_t *messages)
{
	if (!quota_number(&s, end, bytes))
		return false;
	while (s < end && *s == ' ')
		s++;
	return quota_number(&s, end, messages) && s == end;
}

static uint64_t quota_clamp(int64_t sum)
{
	return sum < 0 ? 0 : (uint64_t)sum;
}

int quota_parse(const char *text, size_t len, struct quota_limit *limit,
		struct quota_usage *usage)
{
	const char *end = text + len;
	const char *nl = memchr(text, '\n', len);
	if (!nl || !quota_parse_limit(text, nl, limit))
		return -1;
	int64_t bytes = 0, messages = 0;
	for (const char *line = nl + 1; line < end;) {
		nl = memchr(line, '\n', (size_t)(end - line));
		if (!nl)
			break; /* a torn last write: not counted */
		int64_t b, m;
		if (!quota_parse_delta(line, nl, &b, &m))
			return -1;
		/* each term is below 10^18: the sums cannot overflow in a file
		 * of QUOTA_FILE_MAX octets, but a crafted one is refused */
		if ((b > 0 && bytes > INT64_MAX - b) || (b < 0 && bytes < INT64_MIN - b) ||
		    (m > 0 && messages > INT64_MAX - m) || (m < 0 && messages < INT64_MIN - m))
			return -1;
		bytes += b;
		messages += m;
		line = nl + 1;
	}
	usage->bytes = quota_clamp(bytes);
	usage->messages = quota_clamp(messages);
	return 0;
}

bool quota_exceeded(const struct quota_limit *limit, const struct quota_usage *u,
		    uint64_t bytes, uint64_t messages)
{
	if (limit->bytes && (bytes > limit->bytes || u->bytes > limit->bytes - bytes))
		return true;
	return limit->messages &&
	       (messages > limit->messages || u->messages > limit->messages - messages);
}

/* ---- scanning --------------------------------------------------------------- */

struct quota_scan {
	const char *dir;
	struct quota_usage sum;
};

/* A message's octets: the name's ",S=" when it has one, else its file's. */
static int quota_count_file(void *arg, const char *name, bool in_new, char *err, size_t errsz)
{
	struct quota_scan *sc = arg;
	uint64_t size;
	if (!maildir_name_field(name, 'S', &size)) {
		char *path = xasprintf("%s/%s/%s", sc->dir, in_new ? "new" : "cur", name);
		struct stat st;
		int r = stat(path, &st);
		free(path);
		if (r < 0)
			return 0; /* removed meanwhile: not counted */
		size = (uint64_t)st.st_size;
	}
	sc->sum.bytes += size;
	sc->sum.messages++;
	return 0;
}

static int quota_scan_folder(const char *dir, struct quota_usage *sum, char *err, size_t errsz)
{
	struct quota_scan sc = {.dir = dir};
	if (maildir_each_file(dir, true, quota_count_file, &sc, err, errsz) < 0 ||
	    maildir_each_file(dir, false, quota_count_file, &sc, err, errsz) < 0)
		return -1;
	sum->bytes += sc.sum.bytes;
	sum->messages += sc.sum.messages;
	return 0;
}

/* A Maildir++ folder: a directory ".NAME" (not "." or "..") in the root. */
static bool quota_is_folder(int dfd, const struct dirent *de)
{
	if (de->d_name[0] != '.' || strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
		return false;
	struct stat st;
	return fstatat(dfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode);
}

static int quota_scan_all(const char *root, struct quota_usage *sum, char *err, size_t errsz)
{
	memset(sum, 0, sizeof *sum);
	if (quota_scan_folder(root, sum, err, errsz) < 0)
		return -1;
	DIR *d = opendir(root);
	if (!d) {
		if (errno == ENOENT)
			return 0;
		errfmt(err, errsz, "cannot open %s: %s", root, strerror(errno));
		return -1;
	}
	int r = 0;
	for (;;) {
		errno = 0;
		struct dirent *de = readdir(d);
		if (!de) {
			if (errno) {
				errfmt(err, errsz, "cannot read %s: %s", root, strerror(errno));
				r = -1;
			}
			break;
		}
		if (!quota_is_folder(dirfd(d), de))
			continue;
		char *dir = xasprintf("%s/%s", root, de->d_name);
		r = quota_scan_folder(dir, sum, err, errsz);
		free(dir);
		if (r < 0)
			break;
	}
	closedir(d);
	return r;
}

/* ---- the file --------------------------------------------------------------- */

static char *quota_path(const char *root)
{
	return xasprintf("%s/" QUOTA_FILE, root);
}

/* Write root's maildirsize anew: the limit, then one line of usage.  The
 * file is a cache: not synced; a lost one is counted again. */
static int quota_write(const char *root, const struct quota_limit *limit,
		       const struct quota_usage *u, char *err, size_t errsz)
{
	char *path = quota_path(root);
	char *tmp = xasprintf("%s/" QUOTA_FILE ".%ld.tmp", root, (long)getpid());
	int r = -1;
	FILE *fp = replace_open(tmp);
	if (!fp) {
		errfmt(err, errsz, "cannot write %s: %s", tmp, strerror(errno));
		goto out;
	}
	/* a failed write is found by replace_commit, which then removes tmp */
	report(fp, "%" PRIu64 "S,%" PRIu64 "C\n%" PRIu64 " %" PRIu64 "\n", limit->bytes,
	       limit->messages, u->bytes, u->messages);
	if (replace_commit(fp, tmp, path, false) < 0) {
		errfmt(err, errsz, "cannot write %s: %s", path, strerror(errno));
		goto out;
	}
	r = 0;
out:
	free(tmp);
	free(path);
	return r;
}

int quota_recalc(const char *root, const struct quota_limit *limit, struct quota_usage *out,
		 char *err, size_t errsz)
{
	if (quota_scan_all(root, out, err, errsz) < 0)
		return -1;
	struct stat st;
	if (stat(root, &st) < 0)
		return 0; /* no Maildir yet: nothing to write the count into */
	return quota_write(root, limit, out, err, errsz);
}

/* Read root's maildirsize: 1 with the usage and the file's age, 0 when it
 * must be counted again (missing, too long, damaged), -1 on an error. */
static int quota_read(const char *root, struct quota_usage *u, time_t *mtime, char *err,
		      size_t errsz)
{
	char *path = quota_path(root);
	int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) {
		int e = errno;
		if (e != ENOENT)
			errfmt(err, errsz, "cannot open %s: %s", path, strerror(e));
		free(path);
		return e == ENOENT ? 0 : -1;
	}
	free(path);
	char buf[QUOTA_FILE_MAX + 1];
	size_t n = 0;
	ssize_t got;
	while (n < sizeof buf && (got = read(fd, buf + n, sizeof buf - n)) > 0)
		n += (size_t)got;
	struct stat st;
	int r = fstat(fd, &st);
	if (close(fd) < 0 || r < 0)
		return 0;
	if (n > QUOTA_FILE_MAX)
		return 0;
	struct quota_limit ignored;
	if (quota_parse(buf, n, &ignored, u) < 0)
		return 0;
	*mtime = st.st_mtime;
	return 1;
}

int quota_usage_get(const char *root, const struct quota_limit *limit, struct quota_usage *out,
		    char *err, size_t errsz)
{
	time_t mtime;
	int r = quota_read(root, out, &mtime, err, errsz);
	if (r < 0)
		return -1;
	if (r == 1)
		return 0;
	return quota_recalc(root, limit, out, err, errsz);
}

int quota_usage_peek(const char *root, struct quota_usage *out, char *err, size_t errsz)
{
	time_t mtime;
	int r = quota_read(root, out, &mtime, err, errsz);
	if (r != 0)
		return r < 0 ? -1 : 0;
	return quota_scan_all(root, out, err, errsz);
}

int quota_check(const char *root, const struct quota_limit *limit, uint64_t bytes,
		uint64_t messages, char *err, size_t errsz)
{
	if (limit->bytes == 0 && limit->messages == 0)
		return 1;
	struct quota_usage u;
	time_t mtime = 0;
	int r = quota_read(root, &u, &mtime, err, errsz);
	if (r < 0)
		return -1;
	if (r == 0 && quota_recalc(root, limit, &u, err, errsz) < 0)
		return -1;
	if (!quota_exceeded(limit, &u, bytes, messages))
		return 1;
	/* Maildir++: a full answer from an old file is checked by a scan */
	if (r == 1 && time(NULL) - mtime > QUOTA_STALE_SECONDS) {
		if (quota_recalc(root, limit, &u, err, errsz) < 0)
			return -1;
		return !quota_exceeded(limit, &u, bytes, messages);
	}
	return 0;
}

int quota_add(const char *root, int64_t bytes, int64_t messages, char *err, size_t errsz)
{
	char *path = quota_path(root);
	int fd = open(path, O_WRONLY | O_APPEND | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) {
		int e = errno;
		if (e != ENOENT)
			errfmt(err, errsz, "cannot open %s: %s", path, strerror(e));
		free(path);
		return e == ENOENT ? 0 : -1;
	}
	char line[QUOTA_LINE_MAX];
	/* two int64 values and three separators fit QUOTA_LINE_MAX */
	xsnprintf(line, sizeof line, "%" PRId64 " %" PRId64 "\n", bytes, messages);
	size_t len = strlen(line);
	/* one write with O_APPEND: the line lands whole or not at all */
	ssize_t w = write(fd, line, len);
	int e = errno;
	int r = 0;
	if (close(fd) < 0 || w != (ssize_t)len) {
		errfmt(err, errsz, "cannot append to %s: %s", path,
		       w < 0 ? strerror(e) : "short write");
		r = -1;
	}
	free(path);
	return r;
}

int quota_invalidate(const char *root, char *err, size_t errsz)
{
	char *path = quota_path(root);
	int r = 0;
	if (unlink(path) < 0 && errno != ENOENT) {
		errfmt(err, errsz, "cannot remove %s: %s", path, strerror(errno));
		r = -1;
	}
	free(path);
	return r;
}

/* ---- the table of limits ----------------------------------------------------- */

struct quota_entry {
	char *address;
	struct quota_limit limit;
};

struct quota_table {
	struct quota_limit dflt;
	struct quota_entry *v;
	size_t n, cap;
};

struct quota_table *quota_table_new(const struct quota_limit *dflt)
{
	struct quota_table *t = xcalloc(1, sizeof *t);
	t->dflt = *dflt;
	return t;
}

void quota_table_add(struct quota_table *t, const char *address, const struct quota_limit *l)
{
	struct quota_entry *e = xgrow(&t->v, &t->n, &t->cap, sizeof *e);
	e->address = xstrdup(address);
	e->limit = *l;
}

static int quota_entry_cmp(const void *a, const void *b)
{
	return strcasecmp(((const struct quota_entry *)a)->address,
			  ((const struct quota_entry *)b)->address);
}

void quota_table_seal(struct quota_table *t)
{
	if (t->n > 1)
		qsort(t->v, t->n, sizeof *t->v, quota_entry_cmp);
}

void quota_table_lookup(const struct quota_table *t, const char *address,
			struct quota_limit *out)
{
	const struct quota_entry key = {.address = (char *)address};
	const struct quota_entry *e =
	    t->n ? bsearch(&key, t->v, t->n, sizeof *t->v, quota_entry_cmp) : NULL;
	*out = e ? e->limit : t->dflt;
}

void quota_table_free(struct quota_table *t)
{
	if (!t)
		return;
	for (size_t i = 0; i < t->n; i++)
		free(t->v[i].address);
	free(t->v);
	free(t);
}

/* modseq: a folder's MODSEQs, HIGHESTMODSEQ and remembered expunges in
 * posthorn-modseq (RFC 7162 §3; the format is in modseq.h).  Used by
 * mailbox.c under the folder's index lock. */
#include "store/modseq.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "lib/util.h"

#define MODSEQ_FILE MODSEQ_FILE_NAME
#define MODSEQ_FILE_TMP "posthorn-modseq.tmp"

/* RFC 7162 §7 mod-sequence-value: 1 .. 2^63 - 1 */
#define MODSEQ_VALUE_MAX 0x7fffffffffffffffULL

enum {
	MODSEQ_FILE_MAX = 256 * 1024 * 1024, /* octets read: far above 2,000,000 messages' lines */
	MODSEQ_LINE_MAX = 64,                /* octets of the longest valid line */
	MODSEQ_PER_SECOND = 1000,            /* see modseq_time_floor */
};

void modseq_free(struct modseq_table *t)
{
	free(t->v);
	free(t->x);
	free(t->out);
	memset(t, 0, sizeof *t);
}

/* ---- reading ---------------------------------------------------------------- */

static bool modseq_digit(char c)
{
	return c >= '0' && c <= '9';
}

/* A decimal number at *p (before end) up to max; *p moves past it. */
static bool modseq_number(const char **p, const char *end, uint64_t max, uint64_t *v)
{
	const char *s = *p;
	uint64_t n = 0;
	if (s >= end || !modseq_digit(*s))
		return false;
	for (; s < end && modseq_digit(*s); s++) {
		uint64_t d = (uint64_t)(*s - '0');
		if (n > (max - d) / 10)
			return false;
		n = n * 10 + d;
	}
	*p = s;
	*v = n;
	return true;
}

static bool modseq_hex(const char **p, const char *end, uint32_t *v)
{
	const char *s = *p;
	uint32_t n = 0;
	int digits = 0;
	for (; s < end && digits <= 8; s++, digits++) {
		char c = *s;
		unsigned d;
		if (modseq_digit(c))
			d = (unsigned)(c - '0');
		else if (c >= 'a' && c <= 'f')
			d = (unsigned)(c - 'a' + 10);
		else
			break;
		n = n << 4 | d;
	}
	if (digits == 0 || digits > 8)
		return false;
	*p = s;
	*v = n;
	return true;
}

static bool modseq_expect(const char **p, const char *end, char c)
{
	if (*p >= end || **p != c)
		return false;
	(*p)++;
	return true;
}

/* A line as read: a message, an expunge, or a lower bound of HIGHESTMODSEQ. */
struct modseq_rec {
	char kind;                       /* 'M', 'X', 'H' */
	uint32_t uid, flags;
	uint64_t modseq;
	size_t order;                    /* line number: the later wins */
};

/* One line (without its LF) into r; false when it is not valid. */
static bool modseq_line(const char *p, const char *end, struct modseq_rec *r)
{
	uint64_t uid = 0;
	memset(r, 0, sizeof *r);
	if (p < end && (*p == 'X' || *p == 'H'))
		r->kind = *p++;
	else
		r->kind = 'M';
	if (r->kind == 'H')
		return modseq_number(&p, end, MODSEQ_VALUE_MAX, &r->modseq) && p == end;
	if (!modseq_number(&p, end, UINT32_MAX, &uid) || uid == 0 || !modseq_expect(&p, end, ' ') ||
	    !modseq_number(&p, end, MODSEQ_VALUE_MAX, &r->modseq) || r->modseq == 0)
		return false;
	r->uid = (uint32_t)uid;
	if (r->kind == 'M' && (!modseq_expect(&p, end, ' ') || !modseq_hex(&p, end, &r->flags)))
		return false;
	return p == end;
}

static bool modseq_header(const char *p, const char *end, struct modseq_table *t)
{
	uint64_t v;
	if (!modseq_expect(&p, end, 'V') || !modseq_number(&p, end, UINT32_MAX, &v) || v == 0)
		return false;
	t->validity = (uint32_t)v;
	return modseq_expect(&p, end, ' ') && modseq_expect(&p, end, 'H') &&
	       modseq_number(&p, end, MODSEQ_VALUE_MAX, &t->highest) &&
	       modseq_expect(&p, end, ' ') && modseq_expect(&p, end, 'F') &&
	       modseq_number(&p, end, MODSEQ_VALUE_MAX, &t->forgotten) &&
	       t->forgotten <= t->highest && p == end;
}

/* The largest number in text: what a torn or damaged part may have named. */
static uint64_t modseq_largest(const char *p, const char *end)
{
	uint64_t top = 0;
	while (p < end) {
		uint64_t v;
		if (modseq_digit(*p) && modseq_number(&p, end, MODSEQ_VALUE_MAX, &v)) {
			if (v > top)
				top = v;
			continue;
		}
		p++; /* a non-digit, or a number too large for any MODSEQ */
	}
	return top;
}

/* HIGHESTMODSEQ after a torn or damaged part [p, end): past every number
 * it has and by its length. */
static void modseq_skip(struct modseq_table *t, const char *p, const char *end)
{
	uint64_t next = modseq_largest(p, end);
	if (next < t->highest)
		next = t->highest;
	uint64_t len = (uint64_t)(end - p);
	t->highest = next > MODSEQ_VALUE_MAX - len ? MODSEQ_VALUE_MAX : next + len;
}

static int modseq_cmp_rec(const void *a, const void *b)
{
	const struct modseq_rec *x = a, *y = b;
	if (x->uid != y->uid)
		return x->uid < y->uid ? -1 : 1;
	return x->order < y->order ? -1 : x->order > y->order;
}

static int modseq_cmp_gone(const void *a, const void *b)
{
	const struct modseq_gone *x = a, *y = b;
	if (x->modseq != y->modseq)
		return x->modseq < y->modseq ? -1 : 1;
	return x->uid < y->uid ? -1 : x->uid > y->uid;
}

/* The records (sorted by UID, then line): per UID the last decides
 * whether it is a message or an expunge. */
static void modseq_build(struct modseq_table *t, struct modseq_rec *r, size_t n)
{
	if (n > 1)
		qsort(r, n, sizeof *r, modseq_cmp_rec);
	for (size_t i = 0; i < n; i++) {
		if (i + 1 < n && r[i + 1].uid == r[i].uid)
			continue; /* a later line of the same UID */
		if (r[i].kind == 'M') {
			struct modseq_msg *m = xgrow(&t->v, &t->n, &t->cap, sizeof *m);
			*m = (struct modseq_msg){r[i].uid, r[i].flags, r[i].modseq};
		} else {
			struct modseq_gone *g = xgrow(&t->x, &t->nx, &t->xcap, sizeof *g);
			*g = (struct modseq_gone){r[i].uid, r[i].modseq};
		}
	}
	if (t->nx > 1)
		qsort(t->x, t->nx, sizeof *t->x, modseq_cmp_gone);
}

bool modseq_parse(const char *text, size_t len, struct modseq_table *t)
{
	memset(t, 0, sizeof *t);
	const char *end = text + len;
	const char *nl = memchr(text, '\n', len);
	if (!nl || !modseq_header(text, nl, t)) {
		memset(t, 0, sizeof *t);
		return false;
	}
	struct modseq_rec *recs = NULL;
	size_t nrec = 0, cap = 0;
	const char *p = nl + 1;
	t->valid_len = t->size = (off_t)len;
	while (p < end) {
		nl = memchr(p, '\n', (size_t)(end - p));
		struct modseq_rec r;
		if (!nl || nl - p > MODSEQ_LINE_MAX || !modseq_line(p, nl, &r)) {
			t->valid_len = (off_t)(p - text);
			t->torn = true;
			break;
		}
		if (r.modseq > t->highest)
			t->highest = r.modseq;
		if (r.kind != 'H') {
			r.order = nrec;
			*(struct modseq_rec *)xgrow(&recs, &nrec, &cap, sizeof r) = r;
		}
		t->lines++;
		p = nl + 1;
	}
	modseq_build(t, recs, nrec);
	free(recs);
	if (t->torn)
		modseq_skip(t, text + t->valid_len, end);
	return true;
}

/* The whole file into memory (NUL-terminated, *len octets): 1, 0 when it
 * does not exist, -1 with a reason in err. */
static int modseq_read_file(const char *path, char **text, size_t *len, char *err, size_t errsz)
{
	*text = NULL;
	*len = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0) {
		if (errno == ENOENT)
			return 0;
		errfmt(err, errsz, "cannot read %s: %s", path, strerror(errno));
		return -1;
	}
	struct stat st;
	if (fstat(fd, &st) < 0 || st.st_size > MODSEQ_FILE_MAX) {
		errfmt(err, errsz, "cannot read %s: %s", path,
		       st.st_size > MODSEQ_FILE_MAX ? "too large" : strerror(errno));
		close(fd);
		return -1;
	}
	size_t want = (size_t)st.st_size, got = 0;
	char *buf = xmalloc(want + 1);
	while (got < want) {
		ssize_t r = read(fd, buf + got, want - got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			errfmt(err, errsz, "cannot read %s: %s", path, strerror(errno));
			free(buf);
			close(fd);
			return -1;
		}
		if (r == 0)
			break; /* shorter than it was a moment ago */
		got += (size_t)r;
	}
	close(fd);
	buf[got] = '\0';
	*text = buf;
	*len = got;
	return 1;
}

/* Where a new file's numbers start: the time in milliseconds.  A file
 * that was lost or damaged named numbers from the time it was made on,
 * one per change; it could only have reached the time of its successor
 * with more than MODSEQ_PER_SECOND changes a second over its whole life,
 * so a client's cached HIGHESTMODSEQ is never met again (the way RFC 3501
 * §2.3.1.1 makes UIDVALIDITY from the time). */
static uint64_t modseq_time_floor(void)
{
	time_t now = time(NULL);
	return now > 0 ? (uint64_t)now * MODSEQ_PER_SECOND : 0;
}

int modseq_load(const char *dir, struct modseq_table *t, char *err, size_t errsz)
{
	char *path = xasprintf("%s/%s", dir, MODSEQ_FILE);
	char *text;
	size_t len;
	int r = modseq_read_file(path, &text, &len, err, errsz);
	free(path);
	if (r < 0)
		return -1;
	if (r == 0 || !modseq_parse(text, len, t)) {
		/* missing or damaged: start afresh above whatever it named */
		memset(t, 0, sizeof *t);
		if (r == 1)
			modseq_skip(t, text, text + len);
		if (t->highest < modseq_time_floor())
			t->highest = modseq_time_floor();
		t->rewrite = true;
	}
	free(text);
	return 0;
}

/* ---- changing ---------------------------------------------------------------- */

static void modseq_addf(struct modseq_table *t, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void modseq_addf(struct modseq_table *t, const char *fmt, ...)
{
	char line[MODSEQ_LINE_MAX + 2];
	va_list ap;
	va_start(ap, fmt);
	int k = vsnprintf(line, sizeof line, fmt, ap);
	va_end(ap);
	if (k < 0 || (size_t)k >= sizeof line)
		fatal("modseq: a line does not fit %zu octets", sizeof line);
	if (t->out_n + (size_t)k > t->out_cap) {
		t->out_cap = (t->out_cap + (size_t)k) * 2;
		t->out = xrealloc(t->out, t->out_cap);
	}
	memcpy(t->out + t->out_n, line, (size_t)k);
	t->out_n += (size_t)k;
	t->lines++;
}

/* The next MODSEQ.  At the top of the range it stays there (2^63 - 1
 * changes are not reached in practice). */
static uint64_t modseq_next(struct modseq_table *t)
{
	if (t->highest < MODSEQ_VALUE_MAX)
		t->highest++;
	return t->highest;
}

static void modseq_gone_add(struct modseq_table *t, uint32_t uid)
{
	struct modseq_gone *g = xgrow(&t->x, &t->nx, &t->xcap, sizeof *g);
	g->uid = uid;
	g->modseq = modseq_next(t);
	modseq_addf(t, "X%u %llu\n", uid, (unsigned long long)g->modseq);
}

static uint64_t modseq_changed(struct modseq_table *t, struct modseq_msg *m)
{
	m->modseq = modseq_next(t);
	modseq_addf(t, "%u %llu %x\n", m->uid, (unsigned long long)m->modseq, m->flags);
	return m->modseq;
}

/* Another UIDVALIDITY: the old UIDs mean nothing any more. */
static void modseq_restart(struct modseq_table *t, uint32_t validity)
{
	t->validity = validity;
	t->forgotten = t->highest;
	t->n = t->nx = 0;
	t->out_n = 0;
	t->rewrite = true;
}

void modseq_reconcile(struct modseq_table *t, uint32_t validity, struct modseq_msg *cur,
		      size_t n)
{
	if (t->validity != validity)
		modseq_restart(t, validity);
	struct modseq_msg *old = t->v;
	size_t nold = t->n, j = 0;
	t->v = NULL;
	t->n = t->cap = 0;
	for (size_t i = 0; i < n; i++) {
		while (j < nold && old[j].uid < cur[i].uid)
			modseq_gone_add(t, old[j++].uid);
		if (j < nold && old[j].uid == cur[i].uid && old[j].flags == cur[i].flags)
			cur[i].modseq = old[j].modseq;
		else
			(void)modseq_changed(t, &cur[i]);
		if (j < nold && old[j].uid == cur[i].uid)
			j++;
	}
	while (j < nold)
		modseq_gone_add(t, old[j++].uid);
	free(old);
	if (n > 0) {
		t->v = xcalloc(n, sizeof *t->v);
		memcpy(t->v, cur, n * sizeof *t->v);
	}
	t->n = t->cap = n;
}

static struct modseq_msg *modseq_find(const struct modseq_table *t, uint32_t uid)
{
	size_t lo = 0, hi = t->n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (t->v[mid].uid < uid)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < t->n && t->v[lo].uid == uid ? &t->v[lo] : NULL;
}

uint64_t modseq_set(struct modseq_table *t, uint32_t uid, uint32_t flags)
{
	struct modseq_msg *m = modseq_find(t, uid);
	if (!m)
		return 0;
	m->flags = flags;
	return modseq_changed(t, m);
}

uint64_t modseq_of(const struct modseq_table *t, uint32_t uid)
{
	const struct modseq_msg *m = modseq_find(t, uid);
	return m ? m->modseq : 0;
}

/* ---- writing ------------------------------------------------------------------ */

/* Keep the latest MODSEQ_EXPUNGED_MAX expunges; F rises to the last one
 * dropped. */
static void modseq_trim(struct modseq_table *t)
{
	if (t->nx <= MODSEQ_EXPUNGED_MAX)
		return;
	size_t drop = t->nx - MODSEQ_EXPUNGED_MAX;
	if (t->x[drop - 1].modseq > t->forgotten)
		t->forgotten = t->x[drop - 1].modseq;
	memmove(t->x, t->x + drop, MODSEQ_EXPUNGED_MAX * sizeof *t->x);
	t->nx = MODSEQ_EXPUNGED_MAX;
	t->rewrite = true;
}

static bool modseq_compaction_due(const struct modseq_table *t)
{
	return t->lines > 2 * (t->n + t->nx) + MODSEQ_COMPACT_MIN;
}

static int modseq_write_all(const char *dir, struct modseq_table *t, char *err, size_t errsz)
{
	char *tmp = xasprintf("%s/%s", dir, MODSEQ_FILE_TMP);
	char *path = xasprintf("%s/%s", dir, MODSEQ_FILE);
	FILE *fp = replace_open(tmp);
	int r = -1;
	if (!fp) {
		errfmt(err, errsz, "cannot write %s: %s", tmp, strerror(errno));
		goto out;
	}
	report(fp, "V%u H%llu F%llu\n", t->validity, (unsigned long long)t->highest,
	       (unsigned long long)t->forgotten);
	for (size_t i = 0; i < t->n; i++)
		report(fp, "%u %llu %x\n", t->v[i].uid, (unsigned long long)t->v[i].modseq,
		       t->v[i].flags);
	for (size_t i = 0; i < t->nx; i++)
		report(fp, "X%u %llu\n", t->x[i].uid, (unsigned long long)t->x[i].modseq);
	if (replace_commit(fp, tmp, path, false) < 0) {
		errfmt(err, errsz, "cannot write %s: %s", tmp, strerror(errno));
		goto out;
	}
	t->lines = t->n + t->nx;
	t->torn = t->rewrite = false;
	t->out_n = 0;
	r = 0;
out:
	free(tmp);
	free(path);
	return r;
}

static int modseq_append(const char *dir, struct modseq_table *t, char *err, size_t errsz)
{
	char *path = xasprintf("%s/%s", dir, MODSEQ_FILE);
	int fd = open(path, O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
	int r = -1;
	if (fd < 0 || (t->torn && ftruncate(fd, t->valid_len) < 0)) {
		errfmt(err, errsz, "cannot write %s: %s", path, strerror(errno));
		goto out;
	}
	char mark[32];
	int k = t->torn ? snprintf(mark, sizeof mark, "H%llu\n", (unsigned long long)t->highest) : 0;
	if (k < 0 || (size_t)k >= sizeof mark)
		fatal("modseq: an H line does not fit");
	struct iov {
		const char *p;
		size_t n;
	} parts[2] = {{mark, (size_t)k}, {t->out, t->out_n}};
	off_t at = t->valid_len;
	for (size_t i = 0; i < 2; i++) {
		size_t done = 0;
		while (done < parts[i].n) {
			ssize_t w = pwrite(fd, parts[i].p + done, parts[i].n - done, at);
			if (w < 0 && errno == EINTR)
				continue;
			if (w <= 0) {
				errfmt(err, errsz, "cannot write %s: %s", path,
				       w < 0 ? strerror(errno) : "nothing written");
				goto out;
			}
			done += (size_t)w;
			at += w;
		}
	}
	t->valid_len = t->size = at;
	t->torn = false;
	t->out_n = 0;
	r = 0;
out:
	if (fd >= 0)
		close(fd);
	free(path);
	return r;
}

int modseq_store(const char *dir, struct modseq_table *t, char *err, size_t errsz)
{
	modseq_trim(t);
	if (t->rewrite || modseq_compaction_due(t))
		return modseq_write_all(dir, t, err, errsz);
	if (t->out_n == 0)
		return 0;
	return modseq_append(dir, t, err, errsz);
}

int modseq_flush(const char *dir, char *err, size_t errsz)
{
	char *path = xasprintf("%s/%s", dir, MODSEQ_FILE);
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	int r = 0;
	/* the file's octets first, then its name (a rewrite renamed it) */
	if ((fd < 0 && errno != ENOENT) || (fd >= 0 && fdatasync(fd) < 0)) {
		errfmt(err, errsz, "cannot sync %s: %s", path, strerror(errno));
		r = -1;
	} else if (fd >= 0 && fsync_dir(dir) < 0) {
		errfmt(err, errsz, "cannot sync %s: %s", dir, strerror(errno));
		r = -1;
	}
	if (fd >= 0)
		close(fd);
	free(path);
	return r;
}

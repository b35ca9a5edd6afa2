/* listing: a folder's listing snapshot (listing.h): its encoding, its
 * checksum, and reading it back without trusting a byte of it. */
#define _GNU_SOURCE
#include "store/listing.h"

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "store/maildir.h"
#include "lib/util.h"

static const char listing_magic[8] = {'P', 'H', 'L', 'S', 'T', 'S', 'N', 'P'};

/* ---- little-endian integers ---------------------------------------------- */

static void listing_put(unsigned char *p, uint64_t v, size_t octets)
{
	for (size_t i = 0; i < octets; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

static uint64_t listing_get(const unsigned char *p, size_t octets)
{
	if (octets == 8) {
		uint64_t v;
		memcpy(&v, p, sizeof v);
		return le64toh(v);
	}
	if (octets == 4) {
		uint32_t v;
		memcpy(&v, p, sizeof v);
		return le32toh(v);
	}
	uint64_t v = 0;
	for (size_t i = 0; i < octets; i++)
		v |= (uint64_t)p[i] << (8 * i);
	return v;
}

/* ---- the checksum -------------------------------------------------------- */

/* A 64-bit hash in four lanes over 8-octet words (the shape of xxHash64):
 * it finds damage (a torn write, flipped bits) fast; it is no defence
 * against someone who can write the folder, who could change the mail
 * itself. */
enum { LISTING_LANES = 4 };
static const uint64_t listing_p1 = 0x9E3779B185EBCA87ULL, listing_p2 = 0xC2B2AE3D27D4EB4FULL,
		      listing_p3 = 0x165667B19E3779F9ULL;

static uint64_t listing_rotl(uint64_t v, unsigned r)
{
	return (v << r) | (v >> (64 - r));
}

static uint64_t listing_sum(const unsigned char *p, size_t n)
{
	uint64_t h[LISTING_LANES] = {listing_p1 + listing_p2, listing_p2, 0, 0 - listing_p1};
	size_t i = 0;
	for (; i + 8 * LISTING_LANES <= n; i += 8 * LISTING_LANES)
		for (size_t k = 0; k < LISTING_LANES; k++)
			h[k] = listing_rotl(h[k] + listing_get(p + i + 8 * k, 8) * listing_p2, 31) *
			       listing_p1;
	uint64_t s = listing_rotl(h[0], 1) + listing_rotl(h[1], 7) + listing_rotl(h[2], 12) +
		     listing_rotl(h[3], 18) + (uint64_t)n;
	for (; i < n; i++)
		s = listing_rotl(s ^ (p[i] * listing_p3), 11) * listing_p1;
	s ^= s >> 33;
	s *= listing_p2;
	s ^= s >> 29;
	s *= listing_p3;
	s ^= s >> 32;
	return s;
}

/* ---- the header ------------------------------------------------------------ */

static unsigned char *listing_put_time(unsigned char *p, const struct listing_time *t)
{
	listing_put(p, (uint64_t)t->sec, 8);
	listing_put(p + 8, t->nsec, 8);
	return p + 16;
}

static const unsigned char *listing_get_time(const unsigned char *p, struct listing_time *t)
{
	t->sec = (int64_t)listing_get(p, 8);
	t->nsec = listing_get(p + 8, 8);
	return p + 16;
}

static void listing_head_encode(unsigned char *p, const struct listing_head *h)
{
	memset(p, 0, LISTING_HEADER);
	memcpy(p, listing_magic, sizeof listing_magic);
	listing_put(p + 8, LISTING_VERSION, 4);
	listing_put(p + 12, h->count, 4);
	listing_put(p + 16, h->validity, 4);
	listing_put(p + 20, h->uidnext, 4);
	listing_put(p + 24, h->highest, 8);
	unsigned char *q = listing_put_time(p + 32, &h->stamp.new_m);
	q = listing_put_time(q, &h->stamp.cur_m);
	listing_put(q, h->stamp.index_ino, 8);
	q = listing_put_time(q + 8, &h->stamp.index_c);
	listing_put(q, h->stamp.modseq_ino, 8);
	listing_put(q + 8, h->stamp.modseq_size, 8);
	(void)listing_put_time(q + 16, &h->stamp.modseq_c); /* ends at 120; the rest is 0 */
}

/* false: not a header of this version. */
static bool listing_head_decode(const unsigned char *p, struct listing_head *h)
{
	memset(h, 0, sizeof *h);
	if (memcmp(p, listing_magic, sizeof listing_magic) != 0 ||
	    listing_get(p + 8, 4) != LISTING_VERSION)
		return false;
	h->count = (uint32_t)listing_get(p + 12, 4);
	h->validity = (uint32_t)listing_get(p + 16, 4);
	h->uidnext = (uint32_t)listing_get(p + 20, 4);
	h->highest = listing_get(p + 24, 8);
	const unsigned char *q = listing_get_time(p + 32, &h->stamp.new_m);
	q = listing_get_time(q, &h->stamp.cur_m);
	h->stamp.index_ino = listing_get(q, 8);
	q = listing_get_time(q + 8, &h->stamp.index_c);
	h->stamp.modseq_ino = listing_get(q, 8);
	h->stamp.modseq_size = listing_get(q + 8, 8);
	q = listing_get_time(q + 16, &h->stamp.modseq_c);
	for (; q < p + LISTING_HEADER; q++)
		if (*q)
			return false;
	return h->validity > 0 && h->uidnext > 0 && h->count <= LISTING_MESSAGES_MAX;
}

static bool listing_time_eq(const struct listing_time *a, const struct listing_time *b)
{
	return a->sec == b->sec && a->nsec == b->nsec;
}

bool listing_stamp_eq(const struct listing_stamp *a, const struct listing_stamp *b)
{
	return listing_time_eq(&a->new_m, &b->new_m) && listing_time_eq(&a->cur_m, &b->cur_m) &&
	       listing_time_eq(&a->index_c, &b->index_c) &&
	       listing_time_eq(&a->modseq_c, &b->modseq_c) && a->index_ino == b->index_ino &&
	       a->modseq_ino == b->modseq_ino && a->modseq_size == b->modseq_size;
}

/* ---- writing ---------------------------------------------------------------- */

static bool listing_name_ok(const unsigned char *name, size_t len)
{
	if (len == 0 || len > LISTING_NAME_MAX)
		return false;
	for (size_t i = 0; i < len; i++)
		if (name[i] < 0x20 || name[i] == 0x7f || name[i] == '/')
			return false;
	return true;
}

static bool listing_out_room(struct listing_out *o, size_t more)
{
	if (o->failed || more > LISTING_FILE_MAX - o->n) {
		o->failed = true;
		return false;
	}
	if (o->n + more > o->cap) {
		size_t cap = o->cap ? o->cap : 64 * 1024;
		while (cap < o->n + more)
			cap *= 2;
		o->p = xrealloc(o->p, cap);
		o->cap = cap;
	}
	return true;
}

void listing_out_begin(struct listing_out *o, const struct listing_head *h)
{
	memset(o, 0, sizeof *o);
	o->count = h->count;
	if (h->count > LISTING_MESSAGES_MAX || !listing_out_room(o, LISTING_HEADER)) {
		o->failed = true;
		return;
	}
	listing_head_encode(o->p, h);
	o->n = LISTING_HEADER;
}

bool listing_out_add(struct listing_out *o, const struct listing_msg *m)
{
	size_t len = strlen(m->name);
	if (o->failed || o->added >= o->count || !listing_name_ok((const unsigned char *)m->name, len)) {
		o->failed = true;
		return false;
	}
	if (!listing_out_room(o, LISTING_RECORD_MIN - 1 + len))
		return false;
	unsigned char *p = o->p + o->n;
	listing_put(p, m->uid, 4);
	listing_put(p + 4, m->size, 8);
	listing_put(p + 12, (uint64_t)m->date, 8);
	listing_put(p + 20, m->modseq, 8);
	p[28] = (unsigned char)len;
	memcpy(p + 29, m->name, len);
	o->n += LISTING_RECORD_MIN - 1 + len;
	o->added++;
	return true;
}

bool listing_out_seal(struct listing_out *o)
{
	if (o->failed || o->added != o->count || !listing_out_room(o, LISTING_TRAILER)) {
		o->failed = true;
		return false;
	}
	listing_put(o->p + o->n, listing_sum(o->p, o->n), 8);
	o->n += LISTING_TRAILER;
	return true;
}

void listing_out_free(struct listing_out *o)
{
	free(o->p);
	memset(o, 0, sizeof *o);
}

int listing_write(const char *dir, struct listing_out *o, char *err, size_t errsz)
{
	if (!listing_out_seal(o)) {
		errfmt(err, errsz, "the listing of %s does not fit a snapshot", dir);
		return -1;
	}
	char *unique = maildir_unique_name(0);
	char *tmp = xasprintf("%s/tmp/%s.%s", dir, LISTING_FILE_NAME, unique);
	char *path = xasprintf("%s/%s", dir, LISTING_FILE_NAME);
	free(unique);
	int r = -1;
	int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0) {
		errfmt(err, errsz, "cannot write %s: %s", tmp, strerror(errno));
		goto out;
	}
	/* synced before the rename: a crash leaves the old file or the new */
	if (write_all(fd, o->p, o->n) < 0 || fdatasync(fd) < 0) {
		errfmt(err, errsz, "cannot write %s: %s", tmp, strerror(errno));
		close(fd);
		(void)unlink(tmp); /* a leftover is swept from tmp/ later */
		goto out;
	}
	close(fd);
	if (rename(tmp, path) < 0) {
		errfmt(err, errsz, "cannot rename %s: %s", tmp, strerror(errno));
		(void)unlink(tmp);
		goto out;
	}
	r = 0; /* the rename is not synced: a lost one only costs a listing */
out:
	free(tmp);
	free(path);
	return r;
}

/* ---- reading ---------------------------------------------------------------- */

void listing_free(struct listing *l)
{
	free(l->v);
	free(l->names);
	memset(l, 0, sizeof *l);
}

/* The records of p[0 .. len) (between header and trailer) into l. */
static bool listing_records(const unsigned char *p, size_t len, struct listing *l)
{
	/* every record has a name of one octet at least: a count that cannot
	 * fit is refused before anything is allocated for it */
	if (l->h.count > len / LISTING_RECORD_MIN)
		return false;
	l->v = xcalloc(l->h.count ? l->h.count : 1, sizeof *l->v);
	/* each name with its NUL: what the records hold but their fixed parts */
	l->names_len = len - (size_t)l->h.count * (LISTING_RECORD_MIN - 2);
	l->names = xmalloc(l->names_len ? l->names_len : 1);
	size_t at = 0, out = 0;
	uint32_t last = 0;
	for (uint32_t i = 0; i < l->h.count; i++) {
		if (len - at < LISTING_RECORD_MIN)
			return false;
		struct listing_msg *m = &l->v[i];
		m->uid = (uint32_t)listing_get(p + at, 4);
		m->size = listing_get(p + at + 4, 8);
		m->date = (int64_t)listing_get(p + at + 12, 8);
		m->modseq = listing_get(p + at + 20, 8);
		size_t nlen = p[at + 28];
		at += LISTING_RECORD_MIN - 1;
		if (m->uid <= last || m->uid >= l->h.uidnext || m->modseq > l->h.highest ||
		    nlen > len - at || nlen + 1 > l->names_len - out ||
		    !listing_name_ok(p + at, nlen))
			return false;
		last = m->uid;
		memcpy(l->names + out, p + at, nlen);
		l->names[out + nlen] = '\0';
		m->name = l->names + out;
		out += nlen + 1;
		at += nlen;
	}
	l->n = l->h.count;
	return at == len;
}

enum listing_result listing_decode(const void *buf, size_t len, struct listing *out)
{
	const unsigned char *p = buf;
	memset(out, 0, sizeof *out);
	if (len < LISTING_HEADER + LISTING_TRAILER || len > LISTING_FILE_MAX ||
	    !listing_head_decode(p, &out->h) ||
	    listing_get(p + len - LISTING_TRAILER, 8) != listing_sum(p, len - LISTING_TRAILER))
		return LISTING_DAMAGED;
	if (!listing_records(p + LISTING_HEADER, len - LISTING_HEADER - LISTING_TRAILER, out)) {
		listing_free(out);
		return LISTING_DAMAGED;
	}
	return LISTING_OK;
}

static bool listing_pread_all(int fd, unsigned char *p, size_t len, off_t at)
{
	size_t done = 0;
	while (done < len) {
		ssize_t r = pread(fd, p + done, len - done, at + (off_t)done);
		if (r < 0 && errno == EINTR)
			continue;
		if (r == 0)
			errno = 0; /* cut short */
		if (r <= 0)
			return false;
		done += (size_t)r;
	}
	return true;
}

enum listing_result listing_read(const char *dir, const struct listing_stamp *want,
				 struct listing *out, char *err, size_t errsz)
{
	memset(out, 0, sizeof *out);
	char *path = xasprintf("%s/%s", dir, LISTING_FILE_NAME);
	enum listing_result r = LISTING_IO;
	unsigned char head[LISTING_HEADER];
	struct listing_head h;
	unsigned char *buf = NULL;
	struct stat st;
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
	if (fd < 0) {
		r = errno == ENOENT ? LISTING_MISSING : LISTING_IO;
		if (r == LISTING_IO)
			errfmt(err, errsz, "cannot open %s: %s", path, strerror(errno));
		goto out;
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size < LISTING_HEADER + LISTING_TRAILER ||
	    st.st_size > LISTING_FILE_MAX) {
		r = LISTING_DAMAGED;
		goto out;
	}
	if (!listing_pread_all(fd, head, sizeof head, 0)) {
		errfmt(err, errsz, "cannot read %s: %s", path, errno ? strerror(errno) : "cut short");
		goto out;
	}
	if (!listing_head_decode(head, &h)) {
		r = LISTING_DAMAGED;
		goto out;
	}
	if (!listing_stamp_eq(&h.stamp, want)) {
		r = LISTING_STALE;
		goto out;
	}
	size_t len = (size_t)st.st_size;
	buf = xmalloc(len);
	if (!listing_pread_all(fd, buf, len, 0)) {
		errfmt(err, errsz, "cannot read %s: %s", path, errno ? strerror(errno) : "cut short");
		goto out;
	}
	r = listing_decode(buf, len, out);
out:
	free(buf);
	if (fd >= 0)
		close(fd);
	free(path);
	return r;
}

/* message: ENVELOPE, BODYSTRUCTURE, BODY (RFC 3501 §7.4.2, §9), body
 * sections in the CRLF form (§6.4.5) and SEARCH tests (§6.4.4) for one
 * Maildir message, with GMime 3 as the MIME parser (RFC 2045-2047, 2183,
 * 2231, 5322).  See message.h.
 *
 * A parse maps the file (read-only), lets GMime build its tree from a file
 * stream with persist_stream (contents stay on disk), and records for every
 * MIME entity the raw offsets of its header, body and end.  GMime gives
 * header offsets and leaf content bounds; the ends of multiparts are found
 * by the next boundary line of an enclosing multipart, the way GMime itself
 * ends them.  One pass over the file then turns raw offsets into CRLF ones
 * (every LF not preceded by CR gains a CR; an unterminated last line gains
 * its line end, as maildir_stream_read does) and counts lines. */
#define _GNU_SOURCE /* memmem */
#include "store/message.h"

#include "lib/util.h"

#include <gmime/gmime.h>

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

enum {
	MESSAGE_QUOTED_MAX = 1000,      /* longer strings are sent as literals */
	MESSAGE_STREAM_CHUNK = 64 * 1024, /* octets read from disk at a time */
	MESSAGE_SEARCH_CHUNK = 64 * 1024, /* decoded octets searched at a time */
	MESSAGE_DASH_LINES_MAX = 4 * MESSAGE_PARTS_MAX, /* boundary lines GMime sees */
	MESSAGE_CUTS_MAX = 4096,        /* header blocks cut short for GMime */
	MESSAGE_CHECKPOINT_STEP = 1024 * 1024, /* raw octets between stream starts */
	MESSAGE_ROUTES_MAX = 64,        /* source routes kept of one address field */
	MESSAGE_ROUTE_MAX = 512,        /* octets of an angle-addr read for its route */
	MESSAGE_COMMENT_DEPTH_MAX = 64, /* comments inside comments */
	MESSAGE_READ_MAX = 256 * 1024,  /* larger files are mapped for SEARCH */
};

static bool is_cut(const size_t *cuts, size_t ncuts, size_t pos);

/* ---- the mapped file ------------------------------------------------------ */

struct mfile {
	int fd;
	const char *p;
	size_t n;
	void *map;
	char *buf;                 /* read rather than mapped (mfile_read) */
};

/* f cleared and path opened (never through a symbolic link), its status
 * in st; -1 with err and errno, nothing left open. */
static int mfile_open_fd(struct mfile *f, const char *path, struct stat *st, char *err,
			 size_t errsz)
{
	memset(f, 0, sizeof *f);
	f->fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (f->fd < 0 || fstat(f->fd, st) < 0) {
		int e = errno;
		errfmt(err, errsz, "%s: %s", path, strerror(e));
		if (f->fd >= 0)
			close(f->fd);
		errno = e;
		return -1;
	}
	return 0;
}

static int mfile_open(struct mfile *f, const char *path, char *err, size_t errsz)
{
	struct stat st;
	if (mfile_open_fd(f, path, &st, err, errsz) < 0)
		return -1;
	f->n = (size_t)st.st_size;
	f->p = "";
	if (f->n > 0) {
		f->map = mmap(NULL, f->n, PROT_READ, MAP_PRIVATE, f->fd, 0);
		if (f->map == MAP_FAILED) {
			int e = errno;
			errfmt(err, errsz, "%s: mmap: %s", path, strerror(e));
			close(f->fd);
			errno = e;
			return -1;
		}
		f->p = f->map;
	}
	return 0;
}

static void mfile_close(struct mfile *f)
{
	free(f->buf);
	f->buf = NULL;
	if (f->map && f->map != MAP_FAILED)
		munmap(f->map, f->n);
	if (f->fd >= 0)
		close(f->fd);
	f->fd = -1;
	f->map = NULL;
}

/* A small file read in one go (a mapping costs more: its page faults,
 * and the unmapping's TLB shootdown on every core), a large one mapped. */
static int mfile_read(struct mfile *f, const char *path, char *err, size_t errsz)
{
	struct stat st;
	if (mfile_open_fd(f, path, &st, err, errsz) < 0)
		return -1;
	if ((uint64_t)st.st_size > MESSAGE_READ_MAX) {
		close(f->fd);
		return mfile_open(f, path, err, errsz);
	}
	f->n = (size_t)st.st_size;
	f->buf = xmalloc(f->n + 1);
	size_t got = 0;
	while (got < f->n) {
		ssize_t r = pread(f->fd, f->buf + got, f->n - got, (off_t)got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			int e = r < 0 ? errno : EIO;
			errfmt(err, errsz, "%s: %s", path, r < 0 ? strerror(e) : "changed while read");
			mfile_close(f);
			errno = e;
			return -1;
		}
		got += (size_t)r;
	}
	f->p = f->buf;
	return 0;
}

/* The start of the line after the one holding pos (n at the end). */
static size_t next_line(const struct mfile *f, size_t pos)
{
	if (pos >= f->n)
		return f->n;
	const char *lf = memchr(f->p + pos, '\n', f->n - pos);
	return lf ? (size_t)(lf - f->p) + 1 : f->n;
}

/* The first line start at or after pos. */
static size_t line_start_from(const struct mfile *f, size_t pos)
{
	if (pos == 0 || pos >= f->n || f->p[pos - 1] == '\n')
		return pos < f->n ? pos : f->n;
	return next_line(f, pos);
}

static bool line_is_blank(const struct mfile *f, size_t pos)
{
	return pos < f->n && (f->p[pos] == '\n' || (f->p[pos] == '\r' && pos + 1 < f->n &&
						      f->p[pos + 1] == '\n'));
}

/* Where the body starts after the header field that begins at last: past
 * its continuation lines and the blank line (RFC 5322 §2.2.3, §2.1). */
static size_t header_block_end(const struct mfile *f, size_t last, const size_t *cuts,
			       size_t ncuts)
{
	size_t pos = next_line(f, last);
	while (pos < f->n && (f->p[pos] == ' ' || f->p[pos] == '\t') && !is_cut(cuts, ncuts, pos))
		pos = next_line(f, pos);
	if (is_cut(cuts, ncuts, pos))
		return pos;
	if (line_is_blank(f, pos))
		pos = next_line(f, pos);
	return pos;
}

/* ---- GMime's view of the file -------------------------------------------------
 * GMime keeps every header field of every entity in memory, at several
 * times its size.  So that no header block it reads exceeds
 * MESSAGE_HEADER_MAX octets, it is shown a line end instead of the first
 * octet of the line that would pass the limit, which ends the header there
 * for GMime: the file's offsets stay the same (a GMimeStreamCat of the
 * file's pieces and "\n"), and persist_stream still keeps contents on disk.
 * The lines after a cut count as the entity's body. */

/* Could the line at pos be part of a header: a field "name:" or a
 * continuation line? */
static bool line_headerish(const struct mfile *f, size_t pos, size_t end)
{
	if (f->p[pos] == ' ' || f->p[pos] == '\t')
		return true;
	for (size_t i = pos; i < end; i++) {
		char c = f->p[i];
		if (c == ':')
			return i > pos;
		if (c == ' ' || c == '\t' || c == '\r' || c == '\n')
			return false;
	}
	return false;
}

/* What GMime is shown of the file: line starts where runs of header-like
 * lines pass MESSAGE_HEADER_MAX (ascending, at most MESSAGE_CUTS_MAX), and
 * where the view ends: before the line that is the MESSAGE_DASH_LINES_MAX+1st
 * to start with "--", as GMime makes a part of each boundary (about 1 KiB
 * and some time apiece). */
struct view {
	size_t *cuts;
	size_t ncuts;
	size_t end;
};

static void view_plan(const struct mfile *f, struct view *v)
{
	size_t cap = 0, run = 0, pos = 0, dashes = 0;
	memset(v, 0, sizeof *v);
	v->end = f->n;
	while (pos < f->n) {
		size_t next = next_line(f, pos);
		if (next - pos >= 2 && f->p[pos] == '-' && f->p[pos + 1] == '-' &&
		    ++dashes > MESSAGE_DASH_LINES_MAX) {
			v->end = pos;
			return;
		}
		if (!line_headerish(f, pos, next)) {
			run = 0;
		} else if (run > 0 && run + (next - pos) > MESSAGE_HEADER_MAX &&
			   v->ncuts < MESSAGE_CUTS_MAX) {
			xgrow(&v->cuts, &v->ncuts, &cap, sizeof *v->cuts);
			v->cuts[v->ncuts - 1] = pos;
			run = 0;
		} else {
			run += next - pos;
		}
		pos = next;
	}
}

/* Does GMime see the file as it is? */
static bool view_exact(const struct view *v, const struct mfile *f)
{
	return v->ncuts == 0 && v->end == f->n;
}

static bool is_cut(const size_t *cuts, size_t ncuts, size_t pos)
{
	size_t lo = 0, hi = ncuts;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		if (cuts[mid] == pos)
			return true;
		if (cuts[mid] < pos)
			lo = mid + 1;
		else
			hi = mid;
	}
	return false;
}

/* The stream GMime parses, as planned.  NULL with a reason. */
static GMimeStream *gmime_view(const struct mfile *f, const struct view *v, char *err,
			       size_t errsz)
{
	int fd = dup(f->fd);
	if (fd < 0) {
		errfmt(err, errsz, "dup: %s", strerror(errno));
		return NULL;
	}
	GMimeStream *fs = g_mime_stream_fs_new(fd); /* owns fd */
	if (view_exact(v, f))
		return fs;
	GMimeStream *cat = g_mime_stream_cat_new();
	size_t prev = 0;
	for (size_t i = 0; i <= v->ncuts; i++) {
		size_t upto = i < v->ncuts ? v->cuts[i] : v->end;
		if (upto > prev) {
			GMimeStream *sub = g_mime_stream_substream(fs, (gint64)prev, (gint64)upto);
			g_mime_stream_cat_add_source(GMIME_STREAM_CAT(cat), sub);
			g_object_unref(sub);
		}
		if (i < v->ncuts) {
			GMimeStream *nl = g_mime_stream_mem_new_with_buffer("\n", 1);
			g_mime_stream_cat_add_source(GMIME_STREAM_CAT(cat), nl);
			g_object_unref(nl);
			prev = v->cuts[i] + 1;
		}
	}
	g_object_unref(fs);
	return cat;
}

/* ---- entities --------------------------------------------------------------- */

enum ent_type { ENT_LEAF, ENT_MULTI, ENT_MSG };

struct ent {
	enum ent_type type;
	bool root;                 /* a message's top entity (its header is a
				    * message header) */
	size_t raw_hdr, raw_body, raw_end;
	uint64_t hdr, body, end;   /* CRLF form */
	uint64_t lines;            /* lines in [body, end): LFs, and a last
				    * line without one */
	size_t nkids, kids;        /* MULTI: children at kid[kids..]; MSG: kid[kids] */
};

/* An offset of the raw file and its CRLF counterpart: the places streaming
 * may start from without reading the file from its beginning. */
struct checkpoint {
	uint64_t raw, crlf;
};

struct message {
	unsigned refs;
	char *key;                 /* see message_key() */
	uint64_t raw_size, size;
	char *envelope, *bodystructure, *body;
	size_t envelope_len, bodystructure_len, body_len;
	bool has_date;
	int64_t date;
	int date_tz;
	struct ent *ents;          /* ents[0]: the message */
	size_t nents;
	size_t *kid;
	size_t nkid;
	struct checkpoint *cps;    /* sorted by raw */
	size_t ncps;
	size_t mem;                /* what the cache counts */
	struct message *lru_prev, *lru_next; /* in the cache's list, when held */
	bool cached;
};

/* What a parse builds besides the result. */
struct builder {
	struct message *m;
	const struct mfile *f;
	GMimeObject **objs;        /* per entity: the GMime object with its
				    * Content-* headers */
	GMimeMessage **msgs;       /* per root entity: its message (else NULL) */
	size_t cap, kidcap;
	const size_t *cuts;        /* see view_plan() */
	size_t ncuts;
	bool exact;                /* GMime's offsets are the file's */
	const char *bounds[MESSAGE_DEPTH_MAX + 1]; /* enclosing boundaries */
	size_t nbounds;
};

static size_t ent_new(struct builder *b, GMimeObject *obj, GMimeMessage *msg)
{
	struct message *m = b->m;
	size_t cap = b->cap;
	xgrow(&m->ents, &m->nents, &b->cap, sizeof *m->ents);
	if (b->cap != cap) {
		b->objs = xrealloc(b->objs, b->cap * sizeof *b->objs);
		b->msgs = xrealloc(b->msgs, b->cap * sizeof *b->msgs);
	}
	size_t i = m->nents - 1;
	b->objs[i] = obj;
	b->msgs[i] = msg;
	return i;
}

static size_t kids_reserve(struct builder *b, size_t n)
{
	struct message *m = b->m;
	size_t first = m->nkid;
	for (size_t i = 0; i < n; i++) {
		xgrow(&m->kid, &m->nkid, &b->kidcap, sizeof *m->kid);
		m->kid[m->nkid - 1] = 0;
	}
	return first;
}

/* Does the line at pos start with "--" + one of the enclosing boundaries,
 * followed by "--", white space or the line end (RFC 2046 §5.1.1)? */
static bool boundary_line(const struct mfile *f, const char *const *bounds, size_t nb, size_t pos,
			  bool *close)
{
	for (size_t i = 0; i < nb; i++) {
		size_t bl = strlen(bounds[i]);
		if (pos + 2 + bl > f->n || f->p[pos] != '-' || f->p[pos + 1] != '-' ||
		    memcmp(f->p + pos + 2, bounds[i], bl) != 0)
			continue;
		size_t q = pos + 2 + bl;
		bool c = q + 1 < f->n && f->p[q] == '-' && f->p[q + 1] == '-';
		size_t r = c ? q + 2 : q;
		while (r < f->n && (f->p[r] == ' ' || f->p[r] == '\t'))
			r++;
		if (r == f->n || f->p[r] == '\n' || f->p[r] == '\r') {
			*close = c;
			return true;
		}
	}
	return false;
}

/* The first line at or after from that is a boundary line of one of
 * bounds[0..nb); n (end of file) when none. */
static size_t find_boundary(const struct mfile *f, const char *const *bounds, size_t nb,
			    size_t from, bool *close)
{
	size_t pos = line_start_from(f, from);
	while (pos < f->n) {
		if (boundary_line(f, bounds, nb, pos, close))
			return pos;
		pos = next_line(f, pos);
	}
	*close = true;
	return f->n;
}

/* An entity that ends before a boundary line at pos ends before the line
 * end preceding that line: it belongs to the boundary (RFC 2046 §5.1.1). */
static size_t end_before(const struct mfile *f, size_t pos, size_t floor)
{
	if (pos >= f->n)
		return f->n;
	if (pos > floor && f->p[pos - 1] == '\n')
		pos--;
	if (pos > floor && f->p[pos - 1] == '\r')
		pos--;
	return pos;
}

/* The end of an entity whose last known content ends at from: before the
 * next boundary line of an enclosing multipart, else the end of file. */
static size_t scan_end(const struct builder *b, size_t from)
{
	bool close;
	size_t pos = find_boundary(b->f, b->bounds, b->nbounds, from, &close);
	return end_before(b->f, pos, from);
}

static void header_extent(GMimeObject *obj, bool *any, size_t *lo, size_t *hi)
{
	if (!obj)
		return;
	GMimeHeaderList *hl = g_mime_object_get_header_list(obj);
	int n = hl ? g_mime_header_list_get_count(hl) : 0;
	for (int i = 0; i < n; i++) {
		gint64 off = g_mime_header_get_offset(g_mime_header_list_get_header_at(hl, i));
		if (off < 0)
			continue;
		size_t o = (size_t)off;
		if (!*any || o < *lo)
			*lo = o;
		if (!*any || o > *hi)
			*hi = o;
		*any = true;
	}
}

static void build_body(struct builder *b, size_t e, GMimeObject *obj, size_t depth);

/* A leaf's content as GMime keeps it: a substream of the file whose bounds
 * are file offsets.  Not when GMime read a view with cuts: a substream of
 * a GMimeStreamCat counts from 0; the scans find the bounds then. */
static GMimeStream *content_stream(const struct builder *b, GMimeObject *obj)
{
	if (!b->exact || !obj || !GMIME_IS_PART(obj))
		return NULL;
	GMimeDataWrapper *w = g_mime_part_get_content(GMIME_PART(obj));
	return w ? g_mime_data_wrapper_get_stream(w) : NULL;
}

/* An entity with a header: a message (msg != NULL, obj its MIME part) or a
 * part of a multipart.  start: where it begins when it has no header. */
static size_t build_entity(struct builder *b, GMimeMessage *msg, GMimeObject *obj, size_t start,
			   size_t depth)
{
	size_t e = ent_new(b, obj, msg);
	bool any = false;
	size_t lo = 0, hi = 0;
	header_extent(msg ? GMIME_OBJECT(msg) : NULL, &any, &lo, &hi);
	header_extent(obj, &any, &lo, &hi);
	struct ent *x = &b->m->ents[e];
	x->root = msg != NULL;
	if (any && lo < start)
		lo = start; /* an offset before the entity's start is not GMime's */
	x->raw_hdr = start;
	if (any)
		x->raw_body = header_block_end(b->f, hi > lo ? hi : lo, b->cuts, b->ncuts);
	else
		x->raw_body = line_is_blank(b->f, start) ? next_line(b->f, start) : start;
	GMimeStream *s = content_stream(b, obj);
	if (s && s->bound_start >= 0 && (size_t)s->bound_start >= start &&
	    (size_t)s->bound_start <= b->f->n)
		b->m->ents[e].raw_body = (size_t)s->bound_start;
	build_body(b, e, obj, depth);
	return e;
}

static bool is_rfc822(GMimeObject *obj)
{
	GMimeContentType *ct = g_mime_object_get_content_type(obj);
	return ct && g_mime_content_type_is_type(ct, "message", "rfc822");
}

static void build_multi(struct builder *b, size_t e, GMimeMultipart *mp, size_t depth)
{
	int n = g_mime_multipart_get_count(mp);
	size_t room = MESSAGE_PARTS_MAX > b->m->nents ? MESSAGE_PARTS_MAX - b->m->nents : 0;
	size_t nk = (size_t)(n > 0 ? n : 0);
	if (nk > room)
		nk = room;
	size_t first = kids_reserve(b, nk);
	b->m->ents[e].type = ENT_MULTI;
	b->m->ents[e].nkids = nk;
	b->m->ents[e].kids = first;
	/* the parameter as sent: g_mime_multipart_get_boundary() would invent
	 * one for a multipart that lacks it */
	const char *bd = g_mime_object_get_content_type_parameter(GMIME_OBJECT(mp), "boundary");
	size_t cursor = b->m->ents[e].raw_body;
	if (bd && *bd)
		b->bounds[b->nbounds++] = bd;
	for (size_t i = 0; i < nk; i++) {
		if (b->m->nents >= MESSAGE_PARTS_MAX) {
			b->m->ents[e].nkids = i; /* nested parts took the room */
			break;
		}
		bool close = false;
		size_t start = cursor;
		if (bd && *bd) {
			size_t pos = find_boundary(b->f, &bd, 1, cursor, &close);
			start = next_line(b->f, pos);
		}
		size_t k = build_entity(b, NULL, g_mime_multipart_get_part(mp, (int)i), start, depth + 1);
		b->m->kid[first + i] = k;
		cursor = b->m->ents[k].raw_end;
	}
	if (bd && *bd)
		b->nbounds--;
	b->m->ents[e].raw_end = scan_end(b, cursor);
}

static void build_body(struct builder *b, size_t e, GMimeObject *obj, size_t depth)
{
	struct ent *x = &b->m->ents[e];
	size_t body = x->raw_body;
	if (obj && GMIME_IS_MULTIPART(obj) && depth < MESSAGE_DEPTH_MAX &&
	    b->nbounds < MESSAGE_DEPTH_MAX) {
		build_multi(b, e, GMIME_MULTIPART(obj), depth);
		return;
	}
	if (obj && GMIME_IS_MESSAGE_PART(obj) && is_rfc822(obj) && depth < MESSAGE_DEPTH_MAX &&
	    b->m->nents < MESSAGE_PARTS_MAX) {
		GMimeMessage *inner = g_mime_message_part_get_message(GMIME_MESSAGE_PART(obj));
		if (inner) {
			size_t slot = kids_reserve(b, 1);
			size_t k = build_entity(b, inner, g_mime_message_get_mime_part(inner), body,
						depth + 1);
			x = &b->m->ents[e];
			x->type = ENT_MSG;
			x->nkids = 1;
			x->kids = slot;
			b->m->kid[slot] = k;
			x->raw_end = b->m->ents[k].raw_end;
			return;
		}
	}
	x->type = ENT_LEAF;
	GMimeStream *s = content_stream(b, obj);
	if (s && s->bound_end >= (gint64)body && (size_t)s->bound_end <= b->f->n)
		x->raw_end = (size_t)s->bound_end;
	else
		x->raw_end = scan_end(b, body);
}

/* ---- raw offsets to CRLF offsets ------------------------------------------ */

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

struct offmap {
	uint64_t *raw;             /* sorted, unique */
	uint64_t *crlf, *lf;       /* CRLF offset, LFs before it */
	size_t n;
};

/* The tail an unterminated last line gains: CRLF, or LF after a CR. */
static unsigned file_tail(const struct mfile *f)
{
	if (f->n == 0 || f->p[f->n - 1] == '\n')
		return 0;
	return f->p[f->n - 1] == '\r' ? 1 : 2;
}

static void offmap_build(struct offmap *om, const struct mfile *f, const struct message *m)
{
	size_t cap = m->nents * 3 + 2 + f->n / MESSAGE_CHECKPOINT_STEP, n = 0;
	om->raw = xmalloc(cap * sizeof *om->raw);
	om->raw[n++] = 0;
	om->raw[n++] = f->n;
	/* so that streaming from an offset never reads more than a step
	 * before its first octet */
	for (size_t at = MESSAGE_CHECKPOINT_STEP; at < f->n; at += MESSAGE_CHECKPOINT_STEP)
		om->raw[n++] = at;
	for (size_t i = 0; i < m->nents; i++) {
		om->raw[n++] = m->ents[i].raw_hdr;
		om->raw[n++] = m->ents[i].raw_body;
		om->raw[n++] = m->ents[i].raw_end;
	}
	qsort(om->raw, n, sizeof *om->raw, cmp_u64);
	size_t u = 0;
	for (size_t i = 0; i < n; i++)
		if (u == 0 || om->raw[u - 1] != om->raw[i])
			om->raw[u++] = om->raw[i];
	om->n = u;
	om->crlf = xmalloc(u * sizeof *om->crlf);
	om->lf = xmalloc(u * sizeof *om->lf);
	/* one pass: bare LFs and LFs before each offset */
	uint64_t bare = 0, lfs = 0;
	size_t pos = 0;
	for (size_t i = 0; i < u; i++) {
		size_t target = om->raw[i] < f->n ? (size_t)om->raw[i] : f->n;
		while (pos < target) {
			const char *lf = memchr(f->p + pos, '\n', target - pos);
			if (!lf) {
				pos = target;
				break;
			}
			size_t at = (size_t)(lf - f->p);
			lfs++;
			if (at == 0 || f->p[at - 1] != '\r')
				bare++;
			pos = at + 1;
		}
		om->crlf[i] = om->raw[i] + bare;
		om->lf[i] = lfs;
		if (om->raw[i] >= f->n) {
			unsigned t = file_tail(f);
			om->crlf[i] += t;
			om->lf[i] += t ? 1 : 0;
		}
	}
}

static size_t offmap_find(const struct offmap *om, uint64_t raw)
{
	size_t lo = 0, hi = om->n;
	while (lo + 1 < hi) {
		size_t mid = (lo + hi) / 2;
		if (om->raw[mid] <= raw)
			lo = mid;
		else
			hi = mid;
	}
	return lo;
}

static void offmap_apply(const struct offmap *om, const struct mfile *f, struct message *m)
{
	for (size_t i = 0; i < m->nents; i++) {
		struct ent *x = &m->ents[i];
		size_t h = offmap_find(om, x->raw_hdr), bo = offmap_find(om, x->raw_body),
		       en = offmap_find(om, x->raw_end);
		x->hdr = om->crlf[h];
		x->body = om->crlf[bo];
		x->end = om->crlf[en];
		if (x->body < x->hdr)
			x->body = x->hdr;
		if (x->end < x->body)
			x->end = x->body;
		x->lines = om->lf[en] >= om->lf[bo] ? om->lf[en] - om->lf[bo] : 0;
		/* a last line without its line end (the one before a boundary
		 * belongs to the boundary) is a line too */
		if (x->raw_end > x->raw_body && x->raw_end < f->n && f->p[x->raw_end - 1] != '\n')
			x->lines++;
	}
	m->ncps = om->n;
	m->cps = xmalloc(om->n * sizeof *m->cps);
	for (size_t i = 0; i < om->n; i++) {
		m->cps[i].raw = om->raw[i];
		m->cps[i].crlf = om->crlf[i];
	}
	m->size = om->crlf[om->n - 1];
}

static void offmap_free(struct offmap *om)
{
	free(om->raw);
	free(om->crlf);
	free(om->lf);
}

/* ---- IMAP strings ------------------------------------------------------------ */

/* nstring (RFC 3501 §9): NIL, a quoted string, or a literal when the value
 * holds CR, LF, NUL or 8-bit octets, or is long. */
static void put_nstring(GString *o, const char *s, size_t len)
{
	if (!s) {
		g_string_append(o, "NIL");
		return;
	}
	bool quoted = len <= MESSAGE_QUOTED_MAX;
	for (size_t i = 0; quoted && i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == 0 || c == '\r' || c == '\n' || c >= 0x80)
			quoted = false;
	}
	if (!quoted) {
		g_string_append_printf(o, "{%zu}\r\n", len);
		g_string_append_len(o, s, (gssize)len);
		return;
	}
	g_string_append_c(o, '"');
	for (size_t i = 0; i < len; i++) {
		if (s[i] == '"' || s[i] == '\\')
			g_string_append_c(o, '\\');
		g_string_append_c(o, s[i]);
	}
	g_string_append_c(o, '"');
}

static void put_str(GString *o, const char *s)
{
	put_nstring(o, s, s ? strlen(s) : 0);
}

/* A header value as sent, unfolded (CR and LF removed, RFC 5322 §2.2.3)
 * and trimmed; NULL when the object has no such field.  Caller frees. */
static char *header_raw(GMimeObject *obj, const char *name)
{
	if (!obj)
		return NULL;
	GMimeHeaderList *hl = g_mime_object_get_header_list(obj);
	GMimeHeader *h = hl ? g_mime_header_list_get_header(hl, name) : NULL;
	if (!h)
		return NULL;
	const char *raw = g_mime_header_get_raw_value(h);
	if (!raw)
		raw = "";
	size_t n = strlen(raw), o = 0;
	char *v = xmalloc(n + 1);
	for (size_t i = 0; i < n; i++)
		if (raw[i] != '\r' && raw[i] != '\n')
			v[o++] = raw[i];
	while (o > 0 && (v[o - 1] == ' ' || v[o - 1] == '\t'))
		o--;
	size_t s = 0;
	while (s < o && (v[s] == ' ' || v[s] == '\t'))
		s++;
	memmove(v, v + s, o - s);
	v[o - s] = '\0';
	return v;
}

static void put_header(GString *o, GMimeObject *obj, const char *name)
{
	char *v = header_raw(obj, name);
	put_str(o, v);
	free(v);
}

/* ENVELOPE carries header text as sent (RFC 3501 §7.4.2), so encoded words
 * in display names stay encoded, but GMime's address parser decodes them.
 * It is handed the field with each "=?" turned into "=" U+E000 (a private
 * use character), which no decoder takes for an encoded word, and the
 * names it returns are turned back. */
static const char HIDE_Q[] = "\xee\x80\x80";

static char *words_hide(const char *v)
{
	GString *g = g_string_new(NULL);
	for (const char *p = v; *p; p++) {
		g_string_append_c(g, *p);
		if (p[0] == '=' && p[1] == '?') {
			g_string_append(g, HIDE_Q);
			p++;
		}
	}
	return g_string_free(g, FALSE);
}

static char *words_restore(const char *name)
{
	GString *g = g_string_new(NULL);
	size_t hl = sizeof HIDE_Q - 1;
	for (const char *p = name; *p; p++) {
		if (p[0] == '=' && strncmp(p + 1, HIDE_Q, hl) == 0) {
			g_string_append(g, "=?");
			p += hl;
		} else {
			g_string_append_c(g, *p);
		}
	}
	return g_string_free(g, FALSE);
}

static void put_name(GString *o, const char *name)
{
	if (!name || !*name) {
		g_string_append(o, "NIL");
		return;
	}
	char *raw = words_restore(name);
	put_str(o, raw);
	g_free(raw);
}

/* ---- source routes ---------------------------------------------------------
 * RFC 5322 §4.4 obs-angle-addr: "<" obs-route addr-spec ">", obs-route
 * being "@a,@b:".  ENVELOPE gives it as an address's second field (RFC
 * 3501 §7.4.2 "at-domain-list (source route)"), but GMime's parser reads
 * past it.  So a bounded scan of the raw field finds each angle-addr, with
 * its route or none, and an address GMime returns gets what the first
 * unused angle-addr of the same address had. */

struct message_route {
	char *route;                /* "@a,@b", CFWS left out; NULL: none */
	char *addr;                 /* "user@domain", CFWS left out */
	bool used;
};

struct message_routes {
	struct message_route v[MESSAGE_ROUTES_MAX];
	size_t n;
};

/* The end of the quoted string at v[i] == '"' (past its closing quote, or
 * the end of v); copied to out when out is not NULL. */
static size_t route_skip_quoted(const char *v, size_t i, GString *out)
{
	size_t start = i++;
	while (v[i] && v[i] != '"')
		i += v[i] == '\\' && v[i + 1] ? 2 : 1;
	if (v[i] == '"')
		i++;
	if (out)
		g_string_append_len(out, v + start, (gssize)(i - start));
	return i;
}

/* The end of the comment at v[i] == '(' (nested ones inside; past the
 * end of v when it is not closed). */
static size_t route_skip_comment(const char *v, size_t i)
{
	int depth = 0;
	for (; v[i]; i++) {
		if (v[i] == '\\' && v[i + 1])
			i++;
		else if (v[i] == '(' && depth < MESSAGE_COMMENT_DEPTH_MAX)
			depth++;
		else if (v[i] == ')' && --depth == 0)
			return i + 1;
	}
	return i;
}

/* The angle-addr whose "<" is at v[i], CFWS left out, into out (at most
 * MESSAGE_ROUTE_MAX octets); the index past its ">", or 0 when it is not
 * closed or too long. */
static size_t route_angle_addr(const char *v, size_t i, GString *out)
{
	for (i++; v[i] && v[i] != '>' && out->len <= MESSAGE_ROUTE_MAX;) {
		if (v[i] == '"')
			i = route_skip_quoted(v, i, out);
		else if (v[i] == '(')
			i = route_skip_comment(v, i);
		else if (v[i] == '<')
			return 0;
		else if (v[i] != ' ' && v[i] != '\t')
			g_string_append_c(out, v[i++]);
		else
			i++;
	}
	return v[i] == '>' && out->len <= MESSAGE_ROUTE_MAX ? i + 1 : 0;
}

static void routes_scan(const char *v, struct message_routes *rs)
{
	rs->n = 0;
	GString *a = g_string_new(NULL);
	for (size_t i = 0; v[i] && rs->n < MESSAGE_ROUTES_MAX;) {
		if (v[i] == '"') {
			i = route_skip_quoted(v, i, NULL);
		} else if (v[i] == '(') {
			i = route_skip_comment(v, i);
		} else if (v[i] != '<') {
			i++;
		} else {
			g_string_truncate(a, 0);
			size_t end = route_angle_addr(v, i, a);
			if (end == 0)
				break;
			i = end;
			const char *colon = a->str[0] == '@' ? strchr(a->str, ':') : NULL;
			struct message_route *r = &rs->v[rs->n++];
			r->route = colon ? xstrndup(a->str, (size_t)(colon - a->str)) : NULL;
			r->addr = xstrdup(colon ? colon + 1 : a->str);
			r->used = false;
		}
	}
	g_string_free(a, TRUE);
}

static void routes_free(struct message_routes *rs)
{
	for (size_t i = 0; i < rs->n; i++) {
		free(rs->v[i].route);
		free(rs->v[i].addr);
	}
	rs->n = 0;
}

/* The route of the next address addr, NULL when it has none. */
static const char *routes_take(struct message_routes *rs, const char *addr)
{
	for (size_t i = 0; addr && i < rs->n; i++) {
		if (!rs->v[i].used && strcmp(rs->v[i].addr, addr) == 0) {
			rs->v[i].used = true;
			return rs->v[i].route;
		}
	}
	return NULL;
}

static void put_mailbox(GString *o, InternetAddressMailbox *mb, struct message_routes *rs)
{
	const char *addr = internet_address_mailbox_get_addr(mb);
	const char *at = addr ? strrchr(addr, '@') : NULL;
	g_string_append_c(o, '(');
	put_name(o, internet_address_get_name(INTERNET_ADDRESS(mb)));
	g_string_append_c(o, ' ');
	put_str(o, routes_take(rs, addr));
	g_string_append_c(o, ' ');
	if (at) {
		put_nstring(o, addr, (size_t)(at - addr));
		g_string_append_c(o, ' ');
		put_str(o, at + 1);
	} else {
		put_str(o, addr && *addr ? addr : NULL);
		g_string_append(o, " NIL");
	}
	g_string_append_c(o, ')');
}

/* RFC 3501 §7.4.2: groups are (NIL NIL "name" NIL) ... (NIL NIL NIL NIL). */
static void put_addresses(GString *o, InternetAddressList *l, struct message_routes *rs,
			  size_t *count)
{
	int n = l ? internet_address_list_length(l) : 0;
	for (int i = 0; i < n; i++) {
		InternetAddress *a = internet_address_list_get_address(l, i);
		if (INTERNET_ADDRESS_IS_MAILBOX(a)) {
			put_mailbox(o, INTERNET_ADDRESS_MAILBOX(a), rs);
			(*count)++;
		} else if (INTERNET_ADDRESS_IS_GROUP(a)) {
			g_string_append(o, "(NIL NIL ");
			const char *gname = internet_address_get_name(a);
			if (gname && *gname)
				put_name(o, gname);
			else
				put_str(o, "");
			g_string_append(o, " NIL)");
			put_addresses(o, internet_address_group_get_members(INTERNET_ADDRESS_GROUP(a)),
				      rs, count);
			g_string_append(o, "(NIL NIL NIL NIL)");
			(*count)++;
		}
	}
}

static bool put_address_field(GString *o, GMimeObject *msg, const char *name)
{
	char *v = header_raw(msg, name);
	if (!v)
		return false;
	struct message_routes rs;
	routes_scan(v, &rs);
	char *hidden = words_hide(v);
	free(v);
	InternetAddressList *l = internet_address_list_parse(NULL, hidden);
	g_free(hidden);
	GString *t = g_string_new("(");
	size_t count = 0;
	put_addresses(t, l, &rs, &count);
	g_string_append_c(t, ')');
	routes_free(&rs);
	if (l)
		g_object_unref(l);
	if (count == 0) {
		g_string_free(t, TRUE);
		return false;
	}
	g_string_append_len(o, t->str, (gssize)t->len);
	g_string_free(t, TRUE);
	return true;
}

static void put_envelope(GString *o, GMimeMessage *msg)
{
	GMimeObject *m = GMIME_OBJECT(msg);
	g_string_append_c(o, '(');
	put_header(o, m, "Date");
	g_string_append_c(o, ' ');
	put_header(o, m, "Subject");
	g_string_append_c(o, ' ');
	/* From; Sender and Reply-To default to From (RFC 3501 §7.4.2) */
	GString *from = g_string_new(NULL);
	if (!put_address_field(from, m, "From"))
		g_string_assign(from, "NIL");
	g_string_append_len(o, from->str, (gssize)from->len);
	static const char *const dflt[] = {"Sender", "Reply-To"};
	for (size_t i = 0; i < 2; i++) {
		g_string_append_c(o, ' ');
		if (!put_address_field(o, m, dflt[i]))
			g_string_append_len(o, from->str, (gssize)from->len);
	}
	g_string_free(from, TRUE);
	static const char *const lists[] = {"To", "Cc", "Bcc"};
	for (size_t i = 0; i < 3; i++) {
		g_string_append_c(o, ' ');
		if (!put_address_field(o, m, lists[i]))
			g_string_append(o, "NIL");
	}
	g_string_append_c(o, ' ');
	put_header(o, m, "In-Reply-To");
	g_string_append_c(o, ' ');
	put_header(o, m, "Message-ID");
	g_string_append_c(o, ')');
}

static void put_envelope_empty(GString *o)
{
	g_string_append(o, "(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)");
}

/* body-fld-param: ("name" "value" ...) or NIL. */
static void put_params(GString *o, GMimeParamList *pl, bool dflt_charset)
{
	int n = pl ? g_mime_param_list_length(pl) : 0;
	if (n == 0) {
		g_string_append(o, dflt_charset ? "(\"charset\" \"us-ascii\")" : "NIL");
		return;
	}
	g_string_append_c(o, '(');
	for (int i = 0; i < n; i++) {
		GMimeParam *p = g_mime_param_list_get_parameter_at(pl, i);
		if (i)
			g_string_append_c(o, ' ');
		put_str(o, g_mime_param_get_name(p));
		g_string_append_c(o, ' ');
		put_str(o, g_mime_param_get_value(p) ? g_mime_param_get_value(p) : "");
	}
	g_string_append_c(o, ')');
}

/* body-fld-dsp, body-fld-lang, body-fld-loc (RFC 3501 §9). */
static void put_extension_tail(GString *o, GMimeObject *obj)
{
	g_string_append_c(o, ' ');
	GMimeContentDisposition *d = obj ? g_mime_object_get_content_disposition(obj) : NULL;
	if (d && g_mime_content_disposition_get_disposition(d)) {
		g_string_append_c(o, '(');
		put_str(o, g_mime_content_disposition_get_disposition(d));
		g_string_append_c(o, ' ');
		put_params(o, g_mime_content_disposition_get_parameters(d), false);
		g_string_append_c(o, ')');
	} else {
		g_string_append(o, "NIL");
	}
	g_string_append_c(o, ' ');
	char *lang = header_raw(obj, "Content-Language");
	if (lang && strchr(lang, ',')) {
		g_string_append_c(o, '(');
		char *save = NULL;
		bool first = true;
		for (char *t = strtok_r(lang, ", \t", &save); t; t = strtok_r(NULL, ", \t", &save)) {
			if (!first)
				g_string_append_c(o, ' ');
			put_str(o, t);
			first = false;
		}
		g_string_append_c(o, ')');
	} else {
		put_str(o, lang);
	}
	free(lang);
	g_string_append_c(o, ' ');
	put_header(o, obj, "Content-Location");
}

static void put_structure(GString *o, const struct message *m, struct builder *b, size_t e,
			  bool ext);

static void put_multi(GString *o, const struct message *m, struct builder *b, size_t e, bool ext)
{
	const struct ent *x = &m->ents[e];
	GMimeObject *obj = b->objs[e];
	GMimeContentType *ct = obj ? g_mime_object_get_content_type(obj) : NULL;
	g_string_append_c(o, '(');
	for (size_t i = 0; i < x->nkids; i++)
		put_structure(o, m, b, m->kid[x->kids + i], ext);
	if (x->nkids == 0) /* RFC 3501 needs 1*body: an empty part stands in */
		g_string_append(o, "(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 0 0)");
	g_string_append_c(o, ' ');
	put_str(o, ct && g_mime_content_type_get_media_subtype(ct) ?
			   g_mime_content_type_get_media_subtype(ct) : "mixed");
	if (ext) {
		g_string_append_c(o, ' ');
		put_params(o, ct ? g_mime_content_type_get_parameters(ct) : NULL, false);
		put_extension_tail(o, obj);
	}
	g_string_append_c(o, ')');
}

static void put_structure(GString *o, const struct message *m, struct builder *b, size_t e,
			  bool ext)
{
	const struct ent *x = &m->ents[e];
	if (x->type == ENT_MULTI) {
		put_multi(o, m, b, e, ext);
		return;
	}
	GMimeObject *obj = b->objs[e];
	GMimeContentType *ct = obj ? g_mime_object_get_content_type(obj) : NULL;
	const char *type = ct ? g_mime_content_type_get_media_type(ct) : NULL;
	const char *sub = ct ? g_mime_content_type_get_media_subtype(ct) : NULL;
	bool typed = obj && g_mime_object_get_header(obj, "Content-Type") && type && sub;
	if (!typed) {
		type = "text";
		sub = "plain";
	}
	bool text = g_ascii_strcasecmp(type, "text") == 0;
	bool rfc822 = g_ascii_strcasecmp(type, "message") == 0 &&
		      g_ascii_strcasecmp(sub, "rfc822") == 0;
	g_string_append_c(o, '(');
	put_str(o, type);
	g_string_append_c(o, ' ');
	put_str(o, sub);
	g_string_append_c(o, ' ');
	put_params(o, typed ? g_mime_content_type_get_parameters(ct) : NULL, text);
	g_string_append_c(o, ' ');
	put_header(o, obj, "Content-ID");
	g_string_append_c(o, ' ');
	put_header(o, obj, "Content-Description");
	g_string_append_c(o, ' ');
	char *enc = header_raw(obj, "Content-Transfer-Encoding");
	put_str(o, enc && *enc ? enc : "7bit");
	free(enc);
	g_string_append_printf(o, " %llu", (unsigned long long)(x->end - x->body));
	if (rfc822) {
		g_string_append_c(o, ' ');
		if (x->type == ENT_MSG) {
			size_t k = m->kid[x->kids];
			put_envelope(o, b->msgs[k]);
			g_string_append_c(o, ' ');
			put_structure(o, m, b, k, ext);
		} else {
			put_envelope_empty(o);
			g_string_append(o, " (\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL "
					   "\"7bit\" 0 0)");
		}
	}
	if (text || rfc822)
		g_string_append_printf(o, " %llu", (unsigned long long)x->lines);
	if (ext) {
		g_string_append_c(o, ' ');
		put_header(o, obj, "Content-MD5");
		put_extension_tail(o, obj);
	}
	g_string_append_c(o, ')');
}

/* ---- parsing -------------------------------------------------------------------- */

static size_t message_mem(const struct message *m)
{
	return sizeof *m + strlen(m->key) + m->envelope_len + m->bodystructure_len + m->body_len +
	       m->nents * sizeof *m->ents + m->nkid * sizeof *m->kid + m->ncps * sizeof *m->cps;
}

static char *gstring_take(GString *g, size_t *len)
{
	*len = g->len;
	char *s = xmalloc(g->len + 1);
	memcpy(s, g->str, g->len + 1);
	g_string_free(g, TRUE);
	return s;
}

static void message_free(struct message *m)
{
	free(m->key);
	free(m->envelope);
	free(m->bodystructure);
	free(m->body);
	free(m->ents);
	free(m->kid);
	free(m->cps);
	free(m);
}

/* Parse the mapped file with GMime from its descriptor: offsets, strings,
 * the date.  The GMime tree is dropped afterwards. */
static struct message *message_parse(const struct mfile *f, const char *key, char *err,
				     size_t errsz)
{
	struct view v;
	view_plan(f, &v);
	GMimeStream *st = gmime_view(f, &v, err, errsz);
	if (!st) {
		free(v.cuts);
		return NULL;
	}
	GMimeParser *p = g_mime_parser_new_with_stream(st);
	g_mime_parser_set_persist_stream(p, TRUE);
	GMimeMessage *gm = g_mime_parser_construct_message(p, NULL);
	struct message *m = xcalloc(1, sizeof *m);
	m->refs = 1;
	m->key = xstrdup(key);
	m->raw_size = f->n;
	struct builder b = {.m = m, .f = f, .cuts = v.cuts, .ncuts = v.ncuts,
			    .exact = view_exact(&v, f)};
	if (gm) {
		build_entity(&b, gm, g_mime_message_get_mime_part(gm), 0, 0);
	} else {
		/* not even a header GMime understands: one text body */
		size_t e = ent_new(&b, NULL, NULL);
		m->ents[e].root = true;
		m->ents[e].type = ENT_LEAF;
		m->ents[e].raw_end = f->n;
	}
	m->ents[0].raw_hdr = 0;
	m->ents[0].raw_end = f->n; /* the message's text runs to the end */
	struct offmap om;
	offmap_build(&om, f, m);
	offmap_apply(&om, f, m);
	offmap_free(&om);
	GString *g = g_string_new(NULL);
	if (gm)
		put_envelope(g, gm);
	else
		put_envelope_empty(g);
	m->envelope = gstring_take(g, &m->envelope_len);
	g = g_string_new(NULL);
	put_structure(g, m, &b, 0, true);
	m->bodystructure = gstring_take(g, &m->bodystructure_len);
	g = g_string_new(NULL);
	put_structure(g, m, &b, 0, false);
	m->body = gstring_take(g, &m->body_len);
	GDateTime *dt = gm ? g_mime_message_get_date(gm) : NULL;
	if (dt) {
		m->has_date = true;
		m->date = g_date_time_to_unix(dt);
		m->date_tz = (int)(g_date_time_get_utc_offset(dt) / G_TIME_SPAN_MINUTE);
	}
	free(b.objs);
	free(b.msgs);
	free(v.cuts);
	if (gm)
		g_object_unref(gm);
	g_object_unref(p);
	g_object_unref(st);
	m->mem = message_mem(m);
	return m;
}

/* ---- the cache -------------------------------------------------------------------- */

struct message_cache {
	GHashTable *by_key;        /* key -> struct message (held) */
	struct message *head, *tail; /* most recently used first */
	size_t mem, max;
};

static bool g_inited;

void message_init(void)
{
	if (!g_inited)
		g_mime_init();
	g_inited = true;
}

void message_shutdown(void)
{
	if (g_inited)
		g_mime_shutdown();
	g_inited = false;
}

struct message_cache *message_cache_new(size_t max_bytes)
{
	struct message_cache *c = xcalloc(1, sizeof *c);
	c->by_key = g_hash_table_new(g_str_hash, g_str_equal);
	c->max = max_bytes ? max_bytes : MESSAGE_CACHE_DEFAULT;
	return c;
}

static void lru_unlink(struct message_cache *c, struct message *m)
{
	if (m->lru_prev)
		m->lru_prev->lru_next = m->lru_next;
	else
		c->head = m->lru_next;
	if (m->lru_next)
		m->lru_next->lru_prev = m->lru_prev;
	else
		c->tail = m->lru_prev;
	m->lru_prev = m->lru_next = NULL;
}

static void lru_push(struct message_cache *c, struct message *m)
{
	m->lru_next = c->head;
	m->lru_prev = NULL;
	if (c->head)
		c->head->lru_prev = m;
	c->head = m;
	if (!c->tail)
		c->tail = m;
}

static void cache_drop(struct message_cache *c, struct message *m)
{
	lru_unlink(c, m);
	g_hash_table_remove(c->by_key, m->key);
	c->mem -= m->mem;
	m->cached = false;
	message_put(m);
}

void message_cache_free(struct message_cache *c)
{
	if (!c)
		return;
	/* each link read before its summary may be freed */
	for (struct message *m = c->head, *next; m; m = next) {
		next = m->lru_next;
		cache_drop(c, m);
	}
	g_hash_table_destroy(c->by_key);
	free(c);
}

static void lru_append(struct message_cache *c, struct message *m)
{
	m->lru_prev = c->tail;
	m->lru_next = NULL;
	if (c->tail)
		/* NOLINTNEXTLINE(clang-analyzer-unix.Malloc): cache_drop unlinks a summary (lru_unlink moves c->tail) before its last reference goes; the analyzer assumes a tail with a successor */
		c->tail->lru_next = m;
	c->tail = m;
	if (!c->head)
		c->head = m;
}

/* A new summary goes in front while there is room.  Once the cache is
 * full it goes in last place, to be promoted by a second use: a FETCH
 * over more messages than fit would otherwise evict each summary before
 * the next FETCH comes back to it, and nothing would ever hit (LRU
 * insertion policy, scan resistant). */
static void cache_add(struct message_cache *c, struct message *m)
{
	if (m->mem > c->max / 4)
		return; /* a giant summary is not worth evicting many for */
	bool full = false;
	for (struct message *v = c->tail, *prev; v && c->mem + m->mem > c->max; v = prev) {
		prev = v->lru_prev; /* the next tail, read before v may be freed */
		cache_drop(c, v);
		full = true;
	}
	m->refs++;
	m->cached = true;
	g_hash_table_insert(c->by_key, m->key, m);
	if (full)
		lru_append(c, m);
	else
		lru_push(c, m);
	c->mem += m->mem;
}

void message_put(struct message *m)
{
	if (m && --m->refs == 0)
		message_free(m);
}

/* The cache key: the unique part of the name, which flag changes leave
 * alone, the size, and the file's identity (device and inode, which a
 * rename keeps): the cache is shared by every user's sessions, and a name
 * and size alone could be made to match another user's message. */
static char *message_key(const char *path, const struct stat *st)
{
	const char *base = strrchr(path, '/');
	base = base ? base + 1 : path;
	size_t ul = 0;
	while (base[ul] && base[ul] != ':' &&
	       !(base[ul] == ',' && base[ul + 1] && base[ul + 2] == '='))
		ul++;
	return xasprintf("%.*s/%llu/%llu/%llu", (int)ul, base, (unsigned long long)st->st_size,
			 (unsigned long long)st->st_dev, (unsigned long long)st->st_ino);
}

struct message *message_get(struct message_cache *c, const char *path, char *err, size_t errsz)
{
	struct stat st;
	if (stat(path, &st) < 0) {
		int e = errno;
		errfmt(err, errsz, "%s: %s", path, strerror(e));
		errno = e;
		return NULL;
	}
	char *key = message_key(path, &st);
	struct message *m = c ? g_hash_table_lookup(c->by_key, key) : NULL;
	if (m) {
		free(key);
		lru_unlink(c, m);
		lru_push(c, m);
		m->refs++;
		return m;
	}
	struct mfile f;
	if (mfile_open(&f, path, err, errsz) < 0) {
		free(key);
		return NULL;
	}
	m = message_parse(&f, key, err, errsz);
	mfile_close(&f);
	free(key);
	if (m && c)
		cache_add(c, m);
	return m;
}

uint64_t message_size(const struct message *m)
{
	return m->size;
}

const char *message_envelope(const struct message *m, size_t *len)
{
	*len = m->envelope_len;
	return m->envelope;
}

const char *message_bodystructure(const struct message *m, size_t *len)
{
	*len = m->bodystructure_len;
	return m->bodystructure;
}

const char *message_body(const struct message *m, size_t *len)
{
	*len = m->body_len;
	return m->body;
}

bool message_sent_date(const struct message *m, int64_t *when, int *tz_minutes)
{
	if (!m->has_date)
		return false;
	*when = m->date;
	*tz_minutes = m->date_tz;
	return true;
}

/* ---- sections (RFC 3501 §6.4.5) -------------------------------------------------- */

/* The entity that part numbers name: a multipart's child, or "1" of a
 * message that is not multipart (its body); after a message/rfc822 part,
 * numbers go on in the message it holds.  -1 when there is none. */
static long section_part(const struct message *m, const struct message_section_spec *sec)
{
	long part = -1;
	for (size_t i = 0; i < sec->nparts; i++) {
		uint32_t n = sec->parts[i];
		size_t cont = part < 0 ? 0 : (size_t)part;
		if (part >= 0 && m->ents[cont].type == ENT_MSG)
			cont = m->kid[m->ents[cont].kids];
		const struct ent *c = &m->ents[cont];
		if (c->type == ENT_MULTI && n >= 1 && n <= c->nkids)
			part = (long)m->kid[c->kids + n - 1];
		else if (c->type != ENT_MULTI && c->root && n == 1 && (long)cont != part)
			part = (long)cont;
		else
			return -1;
	}
	return part;
}

static void section_range(struct message_section *out, uint64_t from, uint64_t to)
{
	out->kind = MESSAGE_SECTION_RANGE;
	out->offset = from;
	out->length = to > from ? to - from : 0;
}

/* Read raw octets [from, from+len) of the file, which must still be the
 * one m was parsed from.  Caller frees. */
static char *read_raw(const struct message *m, const char *path, uint64_t from, size_t len,
		      char *err, size_t errsz)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) < 0) {
		errfmt(err, errsz, "%s: %s", path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return NULL;
	}
	if ((uint64_t)st.st_size != m->raw_size) {
		errfmt(err, errsz, "%s: changed since it was parsed", path);
		close(fd);
		return NULL;
	}
	char *buf = xmalloc(len + 1);
	size_t got = 0;
	while (got < len) {
		ssize_t n = pread(fd, buf + got, len - got, (off_t)(from + got));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			errfmt(err, errsz, "%s: %s", path, n < 0 ? strerror(errno) : "short read");
			free(buf);
			close(fd);
			return NULL;
		}
		got += (size_t)n;
	}
	buf[len] = '\0';
	close(fd);
	return buf;
}

/* The raw header of entity e with its blank line (message_header_fields() stops
 * there), at most MESSAGE_HEADER_MAX octets of it. */
static char *read_header(const struct message *m, const char *path, size_t e, size_t *len,
			 char *err, size_t errsz)
{
	const struct ent *x = &m->ents[e];
	size_t n = x->raw_body - x->raw_hdr;
	if (n > MESSAGE_HEADER_MAX)
		n = MESSAGE_HEADER_MAX;
	*len = n;
	return read_raw(m, path, x->raw_hdr, n, err, errsz);
}

int message_header_fields(const char *h, size_t n, message_field_fn fn, void *arg)
{
	size_t pos = 0;
	while (pos < n) {
		if (h[pos] == '\n' || (h[pos] == '\r' && pos + 1 < n && h[pos + 1] == '\n'))
			break; /* the blank line */
		size_t start = pos;
		do {
			const char *lf = memchr(h + pos, '\n', n - pos);
			pos = lf ? (size_t)(lf - h) + 1 : n;
		} while (pos < n && (h[pos] == ' ' || h[pos] == '\t'));
		const char *colon = memchr(h + start, ':', pos - start);
		if (!colon)
			continue; /* not a field: skipped */
		size_t nl = (size_t)(colon - (h + start));
		while (nl > 0 && (h[start + nl - 1] == ' ' || h[start + nl - 1] == '\t'))
			nl--;
		int r = fn(h + start, nl, h + start, pos - start, arg);
		if (r)
			return r;
	}
	return 0;
}

struct fields_sel {
	const struct message_section_spec *sec;
	bool not;
	GString *out;
};

static int fields_pick(const char *name, size_t namelen, const char *field, size_t len, void *arg)
{
	struct fields_sel *s = arg;
	bool listed = false;
	for (size_t i = 0; i < s->sec->nfields && !listed; i++)
		listed = strlen(s->sec->fields[i]) == namelen &&
			 g_ascii_strncasecmp(s->sec->fields[i], name, namelen) == 0;
	if (listed == s->not)
		return 0;
	/* the field's lines in CRLF form; an unterminated last line is ended */
	for (size_t i = 0; i < len; i++) {
		if (field[i] == '\n' && (i == 0 || field[i - 1] != '\r'))
			g_string_append_c(s->out, '\r');
		g_string_append_c(s->out, field[i]);
	}
	if (len > 0 && field[len - 1] != '\n')
		g_string_append(s->out, field[len - 1] == '\r' ? "\n" : "\r\n");
	return 0;
}

static int section_fields(const struct message *m, const char *path, size_t e,
			  const struct message_section_spec *sec, struct message_section *out, char *err,
			  size_t errsz)
{
	size_t n;
	char *h = read_header(m, path, e, &n, err, errsz);
	if (!h)
		return -1;
	struct fields_sel s = {.sec = sec, .not = sec->text == MESSAGE_SECTION_HEADER_FIELDS_NOT,
			       .out = g_string_new(NULL)};
	message_header_fields(h, n, fields_pick, &s);
	free(h);
	g_string_append(s.out, "\r\n"); /* the delimiting blank line (§6.4.5) */
	out->kind = MESSAGE_SECTION_BUFFER;
	out->buf = gstring_take(s.out, &out->len);
	return 0;
}

int message_section(const struct message *m, const char *path,
		    const struct message_section_spec *sec, struct message_section *out, char *err,
		    size_t errsz)
{
	memset(out, 0, sizeof *out);
	out->kind = MESSAGE_SECTION_NONE;
	long part = sec->nparts ? section_part(m, sec) : 0;
	if (part < 0)
		return 0;
	const struct ent *p = &m->ents[part];
	if (sec->text == MESSAGE_SECTION_WHOLE) {
		if (sec->nparts == 0)
			section_range(out, 0, m->size);
		else
			section_range(out, p->body, p->end);
		return 0;
	}
	if (sec->text == MESSAGE_SECTION_MIME) {
		if (sec->nparts > 0)
			section_range(out, p->hdr, p->body);
		return 0;
	}
	/* HEADER, TEXT, HEADER.FIELDS (.NOT): of the message or of a
	 * message/rfc822 part */
	size_t t = 0;
	if (sec->nparts > 0) {
		if (p->type != ENT_MSG)
			return 0;
		t = m->kid[p->kids];
	}
	const struct ent *x = &m->ents[t];
	switch (sec->text) {
	case MESSAGE_SECTION_HEADER:
		section_range(out, x->hdr, x->body);
		return 0;
	case MESSAGE_SECTION_TEXT:
		section_range(out, x->body, x->end);
		return 0;
	case MESSAGE_SECTION_HEADER_FIELDS:
	case MESSAGE_SECTION_HEADER_FIELDS_NOT:
		return section_fields(m, path, t, sec, out, err, errsz);
	default:
		return 0;
	}
}

void message_section_free(struct message_section *s)
{
	free(s->buf);
	s->buf = NULL;
	s->len = 0;
}

/* ---- streaming the CRLF form ------------------------------------------------------ */

struct message_stream {
	int fd;
	uint64_t raw;              /* next raw offset to read */
	uint64_t raw_size;
	uint64_t pos;              /* CRLF offset of the next octet produced */
	uint64_t start, end;       /* the range wanted */
	bool prev_cr, line_start;
	bool tail_done;
	size_t bpos, blen;
	char buf[MESSAGE_STREAM_CHUNK];
};

struct message_stream *message_stream_open(const struct message *m, const char *path,
					   uint64_t offset, uint64_t length)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return NULL;
	struct stat st;
	if (fstat(fd, &st) < 0 || (uint64_t)st.st_size != m->raw_size) {
		close(fd);
		errno = ESTALE;
		return NULL;
	}
	struct message_stream *s = xcalloc(1, sizeof *s);
	s->fd = fd;
	s->raw_size = m->raw_size;
	s->start = offset < m->size ? offset : m->size;
	s->end = length > m->size - s->start ? m->size : s->start + length;
	/* start from the last checkpoint at or before the range */
	size_t i = 0;
	for (size_t k = 0; k < m->ncps; k++)
		if (m->cps[k].crlf <= s->start && m->cps[k].raw <= m->raw_size)
			i = k;
	s->raw = m->ncps ? m->cps[i].raw : 0;
	s->pos = m->ncps ? m->cps[i].crlf : 0;
	if (s->raw >= s->raw_size) {
		/* past the last raw octet: only the added line end remains */
		s->raw = s->raw_size;
	}
	s->line_start = true;
	if (s->raw > 0) {
		char c;
		if (pread(fd, &c, 1, (off_t)(s->raw - 1)) != 1) {
			message_stream_close(s);
			errno = EIO;
			return NULL;
		}
		s->prev_cr = c == '\r';
		s->line_start = c == '\n';
	}
	return s;
}

/* Produce one octet of the CRLF form; kept when inside the range. */
static void stream_emit(struct message_stream *s, char c, char *out, size_t *o)
{
	if (s->pos >= s->start && s->pos < s->end)
		out[(*o)++] = c;
	s->pos++;
}

ssize_t message_stream_read(struct message_stream *s, char *out, size_t outsz)
{
	if (outsz < MESSAGE_STREAM_MIN)
		fatal("message_stream_read: buffer of %zu bytes", outsz);
	size_t o = 0;
	/* each step emits at most 2 octets */
	while (s->pos < s->end && o + 2 <= outsz) {
		if (s->bpos == s->blen) {
			if (s->raw >= s->raw_size) {
				if (!s->line_start && !s->tail_done) {
					if (!s->prev_cr)
						stream_emit(s, '\r', out, &o);
					stream_emit(s, '\n', out, &o);
				}
				s->tail_done = true;
				break;
			}
			uint64_t want = s->raw_size - s->raw;
			if (want > sizeof s->buf)
				want = sizeof s->buf;
			ssize_t n = pread(s->fd, s->buf, (size_t)want, (off_t)s->raw);
			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0) {
				if (n == 0)
					errno = EIO; /* the file shrank */
				return -1;
			}
			s->bpos = 0;
			s->blen = (size_t)n;
			s->raw += (uint64_t)n;
		}
		char c = s->buf[s->bpos++];
		if (c == '\n' && !s->prev_cr)
			stream_emit(s, '\r', out, &o);
		stream_emit(s, c, out, &o);
		s->prev_cr = c == '\r';
		s->line_start = c == '\n';
	}
	return (ssize_t)o;
}

void message_stream_close(struct message_stream *s)
{
	if (!s)
		return;
	close(s->fd);
	free(s);
}

/* ---- SEARCH ---------------------------------------------------------------------------- */

/* Case-insensitive search of UTF-8 text arriving in chunks. */
struct finder {
	char *needle;              /* case-folded */
	size_t nlen;
	GString *tail;             /* last folded octets, fewer than nlen */
	GString *carry;            /* an incomplete UTF-8 sequence */
	bool found;
};

static void finder_init(struct finder *fd, const char *needle)
{
	char *valid = g_utf8_make_valid(needle, -1);
	fd->needle = g_utf8_casefold(valid, -1);
	g_free(valid);
	fd->nlen = strlen(fd->needle);
	fd->tail = g_string_new(NULL);
	fd->carry = g_string_new(NULL);
	fd->found = fd->nlen == 0;
}

static void finder_free(struct finder *fd)
{
	g_free(fd->needle);
	g_string_free(fd->tail, TRUE);
	g_string_free(fd->carry, TRUE);
}

/* Octets at the end of s[0..n) that start a UTF-8 sequence not complete yet. */
static size_t utf8_incomplete(const char *s, size_t n)
{
	for (size_t back = 1; back <= 3 && back <= n; back++) {
		unsigned char c = (unsigned char)s[n - back];
		if ((c & 0xC0) == 0x80)
			continue;
		size_t need = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
		return need > back ? back : 0;
	}
	return 0;
}

/* Only US-ASCII without NUL: text whose case folding is ASCII's
 * (g_utf8_casefold changes only A-Z there) and that g_utf8_make_valid
 * leaves alone. */
static bool text_plain_ascii(const char *s, size_t n)
{
	unsigned char bad = 0;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		bad |= (unsigned char)((c & 0x80) | (c == 0));
	}
	return bad == 0;
}

/* s[0..n) lower-cased into d when it is plain ASCII (one pass, no call
 * per octet); false, d undefined, when it is not. */
static bool ascii_fold(char *d, const char *s, size_t n)
{
	unsigned char bad = 0;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		bad |= (unsigned char)((c & 0x80) | (c == 0));
		d[i] = (char)(c + ((unsigned char)(c - 'A') < 26 ? 32 : 0));
	}
	return bad == 0;
}

/* Folded text into the tail: ASCII directly, the rest through GLib. */
static void finder_fold(struct finder *fd, const char *s, size_t n, bool last)
{
	if (fd->carry->len == 0) {
		size_t old = fd->tail->len;
		g_string_set_size(fd->tail, old + n);
		if (ascii_fold(fd->tail->str + old, s, n))
			return;
		g_string_truncate(fd->tail, old);
	}
	g_string_append_len(fd->carry, s, (gssize)n);
	size_t keep = last ? 0 : utf8_incomplete(fd->carry->str, fd->carry->len);
	size_t use = fd->carry->len - keep;
	char *valid = g_utf8_make_valid(fd->carry->str, (gssize)use);
	char *folded = g_utf8_casefold(valid, -1);
	g_free(valid);
	g_string_erase(fd->carry, 0, (gssize)use);
	g_string_append(fd->tail, folded);
	g_free(folded);
}

static void finder_feed(struct finder *fd, const char *s, size_t n, bool last)
{
	if (fd->found)
		return;
	finder_fold(fd, s, n, last);
	if (memmem(fd->tail->str, fd->tail->len, fd->needle, fd->nlen)) {
		fd->found = true;
		return;
	}
	if (fd->tail->len >= fd->nlen)
		g_string_erase(fd->tail, 0, (gssize)(fd->tail->len - (fd->nlen - 1)));
}

/* A field's value unfolded (its line ends left out), made valid UTF-8.
 * Caller g_frees. */
static char *field_unfolded(const char *field, size_t len, size_t namelen)
{
	const char *colon = memchr(field, ':', len);
	size_t from = colon ? (size_t)(colon - field) + 1 : namelen;
	if (from > len)
		from = len;
	char *v = g_malloc(len - from + 1);
	size_t o = 0;
	for (size_t i = from; i < len; i++)
		if (field[i] != '\r' && field[i] != '\n')
			v[o++] = field[i];
	v[o] = '\0';
	if (text_plain_ascii(v, o))
		return v; /* valid UTF-8 as it is */
	char *valid = g_utf8_make_valid(v, (gssize)o);
	g_free(v);
	return valid;
}

/* A field's value unfolded, RFC 2047 decoded, as UTF-8.  Caller g_frees. */
static char *field_decoded(const char *field, size_t len, size_t namelen)
{
	char *valid = field_unfolded(field, len, namelen);
	if (text_plain_ascii(valid, strlen(valid)) && !strstr(valid, "=?"))
		return valid; /* no encoded word: RFC 2047 decoding keeps it as it is */
	char *dec = g_mime_utils_header_decode_text(NULL, valid);
	g_free(valid);
	return dec;
}

struct header_search {
	const char *field;         /* NULL: every field (TEXT) */
	struct finder *fd;
	bool seen;
};

/* Search text on its own: a match may not begin in what came before. */
static void finder_feed_alone(struct finder *fd, const char *text)
{
	g_string_truncate(fd->tail, 0);
	g_string_truncate(fd->carry, 0);
	finder_feed(fd, text, strlen(text), true);
}

/* RFC 5322 §3.6.2, §3.6.3: the fields whose value is a list of addresses. */
static bool is_address_field(const char *name, size_t namelen)
{
	static const char *const fields[] = {"From", "Sender", "Reply-To", "To", "Cc", "Bcc"};
	for (size_t i = 0; i < sizeof fields / sizeof *fields; i++)
		if (strlen(fields[i]) == namelen && g_ascii_strncasecmp(fields[i], name, namelen) == 0)
			return true;
	return false;
}

/* Each mailbox of l as "name <mailbox@host>" (groups' members too; RFC
 * 5322 groups do not nest, GMime's list is walked one level down). */
static void search_address_list(struct finder *fd, InternetAddressList *l, int depth)
{
	int n = l ? internet_address_list_length(l) : 0;
	for (int i = 0; i < n && !fd->found; i++) {
		InternetAddress *a = internet_address_list_get_address(l, i);
		if (INTERNET_ADDRESS_IS_GROUP(a) && depth == 0) {
			search_address_list(fd, internet_address_group_get_members(
						    INTERNET_ADDRESS_GROUP(a)), depth + 1);
		} else if (INTERNET_ADDRESS_IS_MAILBOX(a)) {
			const char *name = internet_address_get_name(a);
			const char *addr = internet_address_mailbox_get_addr(INTERNET_ADDRESS_MAILBOX(a));
			char *text = g_strdup_printf("%s <%s>", name ? name : "", addr ? addr : "");
			finder_feed_alone(fd, text);
			g_free(text);
		}
	}
}

/* SEARCH FROM/TO/CC/BCC (and HEADER of an address field) match an address
 * however the header writes it: "<user (comment)@ (comment) domain>" holds
 * user@domain.  So the addresses as GMime's parser reads them (ENVELOPE's
 * parser) are searched as well as the field's text. */
static void search_addresses(struct finder *fd, const char *field, size_t len, size_t namelen)
{
	char *valid = field_unfolded(field, len, namelen);
	InternetAddressList *l = internet_address_list_parse(NULL, valid);
	g_free(valid);
	search_address_list(fd, l, 0);
	if (l)
		g_object_unref(l);
}

static int header_search_field(const char *name, size_t namelen, const char *field, size_t len,
			       void *arg)
{
	struct header_search *hs = arg;
	if (hs->field && !(strlen(hs->field) == namelen &&
			   g_ascii_strncasecmp(hs->field, name, namelen) == 0))
		return 0;
	hs->seen = true;
	char *dec = field_decoded(field, len, namelen);
	if (!hs->field) {
		finder_feed(hs->fd, name, namelen, false);
		finder_feed(hs->fd, ": ", 2, false);
	}
	finder_feed(hs->fd, dec ? dec : "", dec ? strlen(dec) : 0, true);
	if (!hs->field)
		finder_feed(hs->fd, "\n", 1, true);
	g_free(dec);
	if (hs->field && !hs->fd->found && hs->fd->nlen > 0 && is_address_field(name, namelen))
		search_addresses(hs->fd, field, len, namelen);
	if (hs->field && !hs->fd->found) {
		/* each field is searched on its own */
		g_string_truncate(hs->fd->tail, 0);
	}
	return hs->fd->found;
}

/* HEADER field / TEXT's header part (field NULL) over the header h[0..n). */
static bool header_has(const char *h, size_t n, const char *field, const char *needle)
{
	struct finder fd;
	finder_init(&fd, needle);
	fd.found = false; /* "" matches a field that exists */
	struct header_search hs = {.field = field, .fd = &fd};
	message_header_fields(h, n, header_search_field, &hs);
	bool found = hs.seen && (fd.found || fd.nlen == 0);
	finder_free(&fd);
	return found;
}

int message_header_contains(const struct message *m, const char *path, const char *field,
			    const char *needle, char *err, size_t errsz)
{
	size_t n;
	char *h = read_header(m, path, 0, &n, err, errsz);
	if (!h)
		return -1;
	bool found = header_has(h, n, field, needle);
	free(h);
	return found;
}

/* The decoded, UTF-8 text of a text/ part, fed to the finder in chunks. */
static void search_part(GMimePart *part, struct finder *fd)
{
	GMimeDataWrapper *w = g_mime_part_get_content(part);
	GMimeStream *raw = w ? g_mime_data_wrapper_get_stream(w) : NULL;
	if (!raw)
		return;
	g_mime_stream_reset(raw);
	GMimeStream *fs = g_mime_stream_filter_new(raw);
	GMimeContentEncoding enc = g_mime_data_wrapper_get_encoding(w);
	if (enc != GMIME_CONTENT_ENCODING_DEFAULT) {
		GMimeFilter *f = g_mime_filter_basic_new(enc, FALSE);
		g_mime_stream_filter_add(GMIME_STREAM_FILTER(fs), f);
		g_object_unref(f);
	}
	const char *cs = g_mime_object_get_content_type_parameter(GMIME_OBJECT(part), "charset");
	if (cs && g_ascii_strcasecmp(cs, "utf-8") != 0 && g_ascii_strcasecmp(cs, "us-ascii") != 0) {
		GMimeFilter *f = g_mime_filter_charset_new(cs, "utf-8");
		if (f) { /* an unknown charset is searched as it is */
			g_mime_stream_filter_add(GMIME_STREAM_FILTER(fs), f);
			g_object_unref(f);
		}
	}
	char *buf = xmalloc(MESSAGE_SEARCH_CHUNK);
	ssize_t n;
	while (!fd->found && (n = g_mime_stream_read(fs, buf, MESSAGE_SEARCH_CHUNK)) > 0)
		finder_feed(fd, buf, (size_t)n, false);
	finder_feed(fd, "", 0, true);
	free(buf);
	g_object_unref(fs);
}

static void search_headers(GMimeObject *obj, struct finder *fd)
{
	GMimeHeaderList *hl = obj ? g_mime_object_get_header_list(obj) : NULL;
	int n = hl ? g_mime_header_list_get_count(hl) : 0;
	for (int i = 0; i < n && !fd->found; i++) {
		GMimeHeader *h = g_mime_header_list_get_header_at(hl, i);
		const char *v = g_mime_header_get_value(h);
		finder_feed(fd, v ? v : "", v ? strlen(v) : 0, true);
		finder_feed(fd, "\n", 1, true);
	}
}

static void search_object(GMimeObject *obj, struct finder *fd, size_t depth)
{
	if (!obj || fd->found || depth > MESSAGE_DEPTH_MAX)
		return;
	if (GMIME_IS_MULTIPART(obj)) {
		int n = g_mime_multipart_get_count(GMIME_MULTIPART(obj));
		for (int i = 0; i < n && !fd->found; i++)
			search_object(g_mime_multipart_get_part(GMIME_MULTIPART(obj), i), fd, depth + 1);
	} else if (GMIME_IS_MESSAGE_PART(obj)) {
		GMimeMessage *in = g_mime_message_part_get_message(GMIME_MESSAGE_PART(obj));
		if (in) {
			search_headers(GMIME_OBJECT(in), fd);
			search_object(g_mime_message_get_mime_part(in), fd, depth + 1);
		}
	} else if (GMIME_IS_PART(obj)) {
		GMimeContentType *ct = g_mime_object_get_content_type(obj);
		if (!ct || g_mime_content_type_is_type(ct, "text", "*"))
			search_part(GMIME_PART(obj), fd);
	}
}

int message_text_contains(const struct message *m, const char *path, bool text,
			  const char *needle, char *err, size_t errsz)
{
	struct finder fd;
	finder_init(&fd, needle);
	if (fd.found) {
		finder_free(&fd);
		return 1;
	}
	if (text) {
		int r = message_header_contains(m, path, NULL, needle, err, errsz);
		if (r != 0) {
			finder_free(&fd);
			return r;
		}
	}
	struct mfile f;
	if (mfile_open(&f, path, err, errsz) < 0) {
		finder_free(&fd);
		return -1;
	}
	struct view v;
	view_plan(&f, &v);
	GMimeStream *st = gmime_view(&f, &v, err, errsz);
	mfile_close(&f);
	free(v.cuts);
	if (!st) {
		finder_free(&fd);
		return -1;
	}
	GMimeParser *p = g_mime_parser_new_with_stream(st);
	g_mime_parser_set_persist_stream(p, TRUE);
	GMimeMessage *gm = g_mime_parser_construct_message(p, NULL);
	if (gm)
		search_object(g_mime_message_get_mime_part(gm), &fd, 0);
	bool found = fd.found;
	if (gm)
		g_object_unref(gm);
	g_object_unref(p);
	g_object_unref(st);
	finder_free(&fd);
	return found;
}

/* ---- SEARCH on a worker: one open per message, no shared state ----------------
 * A message whose text needs no MIME decoding (a header of well-formed
 * fields, then one text part in 7bit, 8bit or binary, in US-ASCII or
 * UTF-8, or a body that is not text) is searched in its mapped octets:
 * what GMime's parse would hand search_part() is the body as it is.  Any
 * other message goes through the GMime parse of message_text_contains(). */

/* Its first line with a name of printable US-ASCII but ':' before the
 * colon (RFC 5322 §2.2, §3.6.8 ftext)? */
static bool line_is_field(const struct mfile *f, size_t pos, size_t end)
{
	for (size_t i = pos; i < end; i++) {
		unsigned char c = (unsigned char)f->p[i];
		if (c == ':')
			return i > pos;
		if (c < 33 || c > 126)
			return false;
	}
	return false;
}

/* Does the line at pos hold only blanks before its end? */
static bool line_is_white(const struct mfile *f, size_t pos, size_t end)
{
	for (size_t i = pos; i < end; i++)
		if (f->p[i] != ' ' && f->p[i] != '\t' && f->p[i] != '\r' && f->p[i] != '\n')
			return false;
	return true;
}

/* Where the body starts, when the header is fields and their continuation
 * lines up to a blank line, within MESSAGE_HEADER_MAX; else false. */
static bool plain_header_end(const struct mfile *f, size_t *body)
{
	size_t pos = 0, fields = 0;
	while (pos < f->n && pos < MESSAGE_HEADER_MAX) {
		size_t next = next_line(f, pos);
		if (line_is_blank(f, pos)) {
			*body = next;
			return fields > 0;
		}
		if (line_is_white(f, pos, next))
			return false; /* blanks alone: which end of header is it? */
		if (f->p[pos] == ' ' || f->p[pos] == '\t') {
			if (fields == 0)
				return false;
		} else if (line_is_field(f, pos, next)) {
			fields++;
		} else {
			return false;
		}
		pos = next;
	}
	return false;
}

/* The two fields that say how the body is encoded. */
struct plain_fields {
	unsigned nct, ncte;
	char *ct, *cte;            /* unfolded values (g_free) */
};

static int plain_field(const char *name, size_t namelen, const char *field, size_t len, void *arg)
{
	struct plain_fields *pf = arg;
	char **slot = NULL;
	if (namelen == 12 && g_ascii_strncasecmp(name, "Content-Type", 12) == 0) {
		slot = &pf->ct;
		pf->nct++;
	} else if (namelen == 25 && g_ascii_strncasecmp(name, "Content-Transfer-Encoding", 25) == 0) {
		slot = &pf->cte;
		pf->ncte++;
	}
	if (slot && !*slot)
		*slot = field_unfolded(field, len, namelen);
	return 0;
}

static bool is_token_char(char c)
{
	return (unsigned char)c > 32 && (unsigned char)c < 127 && !strchr("()<>@,;:\\\"/[]?=", c);
}

/* A token at *pos after blanks, its length (0: none). */
static size_t token_at(const char *v, size_t *pos)
{
	while (v[*pos] == ' ' || v[*pos] == '\t')
		(*pos)++;
	size_t from = *pos;
	while (v[*pos] && is_token_char(v[*pos]))
		(*pos)++;
	return *pos - from;
}

enum plain_body { PLAIN_NO, PLAIN_TEXT, PLAIN_NOT_TEXT };

/* A parameter's value at *pos: a token, or a quoted string without
 * escapes (its inside). */
static bool param_value(const char *v, size_t *pos, const char **val, size_t *vlen)
{
	if (v[*pos] != '"') {
		*vlen = token_at(v, pos);
		*val = v + *pos - *vlen;
		return *vlen > 0;
	}
	size_t from = ++*pos;
	while (v[*pos] && v[*pos] != '"' && v[*pos] != '\\')
		(*pos)++;
	if (v[*pos] != '"')
		return false;
	*val = v + from;
	*vlen = *pos - from;
	(*pos)++;
	return true;
}

/* RFC 2045 §5.1 parameters: "; name=value" with a token or a quoted string
 * without escapes; the charset must be absent, US-ASCII or UTF-8 (what
 * search_part() reads without conversion).  Anything else (RFC 2231
 * "name*", comments) is left to GMime. */
static bool plain_params(const char *v, size_t pos)
{
	unsigned ncharset = 0;
	for (;;) {
		while (v[pos] == ' ' || v[pos] == '	')
			pos++;
		if (!v[pos])
			return true;
		if (v[pos++] != ';')
			return false;
		size_t nlen = token_at(v, &pos);
		const char *name = v + pos - nlen;
		if (nlen == 0 || memchr(name, '*', nlen) || v[pos] != '=')
			return false;
		pos++;
		const char *val;
		size_t vlen;
		if (!param_value(v, &pos, &val, &vlen))
			return false;
		if (nlen == 7 && g_ascii_strncasecmp(name, "charset", 7) == 0) {
			bool known = (vlen == 8 && g_ascii_strncasecmp(val, "us-ascii", 8) == 0) ||
				     (vlen == 5 && g_ascii_strncasecmp(val, "utf-8", 5) == 0);
			if (!known || ++ncharset > 1)
				return false;
		}
	}
}

static bool token_is(const char *t, size_t len, const char *want)
{
	return len == strlen(want) && g_ascii_strncasecmp(t, want, len) == 0;
}

/* What Content-Type says of the body (RFC 2045 §5.1; none: text/plain). */
static enum plain_body plain_content_type(const char *v)
{
	if (!v)
		return PLAIN_TEXT;
	size_t pos = 0, tlen = token_at(v, &pos);
	const char *type = v + pos - tlen;
	if (tlen == 0 || v[pos] != '/')
		return PLAIN_NO;
	pos++;
	if (v[pos] == ' ' || v[pos] == '\t' || token_at(v, &pos) == 0 || !plain_params(v, pos))
		return PLAIN_NO;
	if (token_is(type, tlen, "multipart") || token_is(type, tlen, "message"))
		return PLAIN_NO;
	return token_is(type, tlen, "text") ? PLAIN_TEXT : PLAIN_NOT_TEXT;
}

/* An identity transfer encoding (RFC 2045 §6.2: 7bit, 8bit, binary)? */
static bool plain_encoding(const char *v)
{
	if (!v)
		return true;
	size_t pos = 0, len = token_at(v, &pos);
	size_t from = pos - len;
	while (v[pos] == ' ' || v[pos] == '\t')
		pos++;
	if (v[pos])
		return false;
	return token_is(v + from, len, "7bit") || token_is(v + from, len, "8bit") ||
	       token_is(v + from, len, "binary");
}

/* How a message is searched without GMime: header [0, body), and the
 * body's text when text (else the body is not searched). */
struct plain {
	size_t body;
	bool text;
};

static bool plain_plan(const struct mfile *f, struct plain *pl)
{
	if (f->n >= 3 * (MESSAGE_DASH_LINES_MAX + 1)) {
		struct view v; /* GMime would be shown a changed file */
		view_plan(f, &v);
		free(v.cuts);
		if (!view_exact(&v, f))
			return false;
	}
	if (!plain_header_end(f, &pl->body))
		return false;
	struct plain_fields pf = {0};
	(void)message_header_fields(f->p, pl->body, plain_field, &pf); /* plain_field never stops */
	enum plain_body b = PLAIN_NO;
	if (pf.nct <= 1 && pf.ncte <= 1)
		b = plain_content_type(pf.ct);
	bool ok = b == PLAIN_NOT_TEXT || (b == PLAIN_TEXT && plain_encoding(pf.cte));
	pl->text = b == PLAIN_TEXT;
	g_free(pf.ct);
	g_free(pf.cte);
	return ok;
}

static bool plain_body_has(const struct mfile *f, const struct plain *pl, const char *needle)
{
	if (!pl->text)
		return false;
	struct finder fd;
	finder_init(&fd, needle);
	for (size_t pos = pl->body; pos < f->n && !fd.found; pos += MESSAGE_SEARCH_CHUNK) {
		size_t n = f->n - pos < MESSAGE_SEARCH_CHUNK ? f->n - pos : MESSAGE_SEARCH_CHUNK;
		finder_feed(&fd, f->p + pos, n, false);
	}
	finder_feed(&fd, "", 0, true);
	bool found = fd.found;
	finder_free(&fd);
	return found;
}

static bool plain_key(const struct mfile *f, const struct plain *pl,
		      const struct message_search_key *k)
{
	switch (k->kind) {
	case MESSAGE_SEARCH_HEADER:
		return header_has(f->p, pl->body, k->field, k->needle);
	case MESSAGE_SEARCH_BODY:
		return plain_body_has(f, pl, k->needle);
	case MESSAGE_SEARCH_TEXT:
		return header_has(f->p, pl->body, NULL, k->needle) ||
		       plain_body_has(f, pl, k->needle);
	}
	return false;
}

/* Through GMime, as on the loop (no cache). */
static int parsed_keys(const char *path, const struct message_search_key *keys, size_t n,
		       uint64_t *found, char *err, size_t errsz)
{
	struct message *m = message_get(NULL, path, err, errsz);
	if (!m)
		return -1;
	int r = 0;
	for (size_t k = 0; k < n && r >= 0; k++) {
		if (keys[k].kind == MESSAGE_SEARCH_HEADER)
			r = message_header_contains(m, path, keys[k].field, keys[k].needle, err, errsz);
		else
			r = message_text_contains(m, path, keys[k].kind == MESSAGE_SEARCH_TEXT,
						  keys[k].needle, err, errsz);
		if (r == 1)
			*found |= UINT64_C(1) << k;
	}
	message_put(m);
	return r < 0 ? -1 : 0;
}

int message_search_file(const char *path, const struct message_search_key *keys, size_t n,
			enum message_search_how how, uint64_t *found, char *err, size_t errsz)
{
	*found = 0;
	if (n > MESSAGE_SEARCH_KEYS_MAX) {
		errfmt(err, errsz, "more than %d search keys", MESSAGE_SEARCH_KEYS_MAX);
		errno = EINVAL;
		return -1;
	}
	struct mfile f;
	if (mfile_read(&f, path, err, errsz) < 0)
		return -1;
	struct plain pl;
	if (how == MESSAGE_SEARCH_PARSED || !plain_plan(&f, &pl)) {
		mfile_close(&f);
		if (how == MESSAGE_SEARCH_PLAIN) {
			errfmt(err, errsz, "%s: needs MIME decoding", path);
			errno = EAGAIN;
			return -1;
		}
		return parsed_keys(path, keys, n, found, err, errsz);
	}
	for (size_t k = 0; k < n; k++)
		if (plain_key(&f, &pl, &keys[k]))
			*found |= UINT64_C(1) << k;
	mfile_close(&f);
	return 0;
}

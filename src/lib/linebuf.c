/* linebuf: the bounded line reader (see linebuf.h). */
#include "lib/linebuf.h"

#include <string.h>

#include <event2/buffer.h>

#include "lib/util.h"

/* Position of the first LF in [from, within), or -1. */
static ssize_t find_lf_from(struct evbuffer *in, size_t from, size_t within)
{
	struct evbuffer_ptr start, end;
	if (from >= within || evbuffer_ptr_set(in, &start, from, EVBUFFER_PTR_SET) < 0 ||
	    evbuffer_ptr_set(in, &end, within, EVBUFFER_PTR_SET) < 0)
		return -1;
	struct evbuffer_ptr p = evbuffer_search_range(in, "\n", 1, &start, &end);
	return p.pos;
}

static ssize_t find_lf(struct evbuffer *in, size_t within)
{
	return find_lf_from(in, 0, within);
}

void linebuf_reset(struct linebuf *lb)
{
	lb->discarding = false;
	lb->dropped_cr = false;
	lb->after_bare_lf = false;
	lb->scanned = 0;
}

/* The octet at pos, which is inside in. */
static char octet_at(struct evbuffer *in, size_t pos)
{
	struct evbuffer_ptr p;
	char c;
	if (evbuffer_ptr_set(in, &p, pos, EVBUFFER_PTR_SET) < 0 ||
	    evbuffer_copyout_from(in, &p, &c, 1) != 1)
		fatal("linebuf: no octet at %zu", pos);
	return c;
}

static void drain(struct evbuffer *in, size_t n)
{
	if (evbuffer_drain(in, n) < 0)
		fatal("linebuf: evbuffer_drain failed");
}

/* Drop the n octets of an over-long line that have come so far (no LF
 * among them), remembering whether the last one was a CR: the LF may come
 * in a later read, and a CR LF split over two reads is still CRLF. */
static void drop(struct linebuf *lb, struct evbuffer *in, size_t n)
{
	if (n == 0)
		return;
	lb->dropped_cr = octet_at(in, n - 1) == '\r';
	drain(in, n);
}

/* The over-long line's LF is at lf: drop through it, and remember how the
 * line ended for the one after it (RFC 5321 §4.1.1.4: the end of data is
 * a dot line after a line that ended in CRLF, a refused one included). */
static void drop_through_lf(struct linebuf *lb, struct evbuffer *in, size_t lf)
{
	bool crlf = lf > 0 ? octet_at(in, lf - 1) == '\r' : lb->dropped_cr;
	drain(in, lf + 1);
	lb->after_bare_lf = !crlf;
	lb->discarding = false;
	lb->dropped_cr = false;
}

static void classify(struct linebuf_line *line, char *s, size_t n_with_lf)
{
	size_t n = n_with_lf - 1; /* without the LF */
	line->crlf = n > 0 && s[n - 1] == '\r';
	line->bare_lf = !line->crlf;
	if (line->crlf)
		n--;
	s[n] = '\0';
	line->data = s;
	line->len = n;
	line->bare_cr = memchr(s, '\r', n) != NULL;
	line->has_nul = memchr(s, '\0', n) != NULL;
}

enum linebuf_status linebuf_peek(struct linebuf *lb, struct evbuffer *in, size_t limit,
				 size_t *len)
{
	if (limit == 0)
		fatal("linebuf_peek: limit 0");

	if (lb->discarding) {
		size_t avail = evbuffer_get_length(in);
		ssize_t lf = find_lf(in, avail);
		if (lf < 0) {
			drop(lb, in, avail);
			return LINEBUF_NEED_MORE;
		}
		drop_through_lf(lb, in, (size_t)lf);
	}

	size_t avail = evbuffer_get_length(in);
	size_t within = avail < limit ? avail : limit;
	/* a client sending a byte at a time must not make us rescan the
	 * whole partial line each time */
	if (lb->scanned > within)
		lb->scanned = 0;
	ssize_t lf = find_lf_from(in, lb->scanned, within);
	if (lf < 0) {
		lb->scanned = within;
		if (avail < limit)
			return LINEBUF_NEED_MORE;
		lb->scanned = 0;
		/* limit bytes and no line end: too long.  Drop what we have and
		 * everything up to the next LF. */
		lb->discarding = true;
		lb->dropped_cr = false;
		ssize_t later = find_lf(in, avail);
		if (later >= 0)
			drop_through_lf(lb, in, (size_t)later);
		else
			drop(lb, in, avail);
		return LINEBUF_TOO_LONG;
	}
	lb->scanned = 0;
	*len = (size_t)lf + 1;
	return LINEBUF_LINE;
}

void linebuf_take(struct linebuf *lb, struct evbuffer *in, size_t len, char *storage,
		  size_t storage_size, struct linebuf_line *line)
{
	if (len == 0 || len >= storage_size)
		fatal("linebuf_take: a line of %zu bytes does not fit storage %zu", len,
		      storage_size);
	if (evbuffer_remove(in, storage, len) != (int)len)
		fatal("linebuf_take: evbuffer_remove failed");
	classify(line, storage, len);
	line->after_crlf = !lb->after_bare_lf;
	lb->after_bare_lf = !line->crlf;
}

bool linebuf_between_lines(const struct linebuf *lb)
{
	return !lb->discarding;
}

void linebuf_skip_lines(struct linebuf *lb, struct evbuffer *in, size_t n)
{
	if (lb->discarding || n == 0 || n > evbuffer_get_length(in))
		fatal("linebuf_skip_lines: %zu bytes cannot be whole lines here", n);
	drain(in, n);
	lb->after_bare_lf = false;
	lb->scanned = 0;
}

enum linebuf_status linebuf_get(struct linebuf *lb, struct evbuffer *in, size_t limit,
				char *storage, size_t storage_size, struct linebuf_line *line)
{
	if (limit == 0 || limit >= storage_size)
		fatal("linebuf_get: limit %zu does not fit storage %zu", limit, storage_size);
	size_t n;
	enum linebuf_status st = linebuf_peek(lb, in, limit, &n);
	if (st == LINEBUF_LINE)
		linebuf_take(lb, in, n, storage, storage_size, line);
	return st;
}

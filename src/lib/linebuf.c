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
	lb->scanned = 0;
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

	while (lb->discarding) {
		size_t avail = evbuffer_get_length(in);
		ssize_t lf = find_lf(in, avail);
		if (lf < 0) {
			evbuffer_drain(in, avail);
			return LINEBUF_NEED_MORE;
		}
		evbuffer_drain(in, (size_t)lf + 1);
		lb->discarding = false;
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
		ssize_t later = find_lf(in, avail);
		if (later >= 0) {
			evbuffer_drain(in, (size_t)later + 1);
			lb->discarding = false;
		} else {
			evbuffer_drain(in, avail);
		}
		return LINEBUF_TOO_LONG;
	}
	lb->scanned = 0;
	*len = (size_t)lf + 1;
	return LINEBUF_LINE;
}

void linebuf_take(struct evbuffer *in, size_t len, char *storage, size_t storage_size,
		  struct linebuf_line *line)
{
	if (len == 0 || len >= storage_size)
		fatal("linebuf_take: a line of %zu bytes does not fit storage %zu", len,
		      storage_size);
	if (evbuffer_remove(in, storage, len) != (int)len)
		fatal("linebuf_take: evbuffer_remove failed");
	classify(line, storage, len);
}

enum linebuf_status linebuf_get(struct linebuf *lb, struct evbuffer *in, size_t limit,
				char *storage, size_t storage_size, struct linebuf_line *line)
{
	if (limit == 0 || limit >= storage_size)
		fatal("linebuf_get: limit %zu does not fit storage %zu", limit, storage_size);
	size_t n;
	enum linebuf_status st = linebuf_peek(lb, in, limit, &n);
	if (st == LINEBUF_LINE)
		linebuf_take(in, n, storage, storage_size, line);
	return st;
}

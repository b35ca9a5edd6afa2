/* dkim_canon: DKIM's simple and relaxed canonicalisations (RFC 6376 §3.4),
 * shared by the signer and the verifier. */
#include "mailauth/dkim_canon.h"

#include <stdlib.h>
#include <string.h>

#include "lib/util.h"
#include "mailauth/dkim_header.h"

static bool is_wsp(char c)
{
	return c == ' ' || c == '\t';
}

static char lower(char c)
{
	return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

/* §3.4.2: lower-case name, unfolded value, one space per run, none at the
 * ends of the value or around the colon. */
static void canon_header_relaxed(const char *f, size_t len, dkim_sink_fn sink, void *arg)
{
	const char *colon = memchr(f, ':', len);
	size_t name_end = colon ? (size_t)(colon - f) : len;
	size_t n = name_end;
	while (n > 0 && is_wsp(f[n - 1]))
		n--;
	char out[256];
	size_t k = 0;
	for (size_t i = 0; i < n; i++) {
		out[k++] = lower(f[i]);
		if (k == sizeof out) {
			sink(arg, out, k);
			k = 0;
		}
	}
	out[k++] = ':';
	bool wsp = false, any = false;
	for (size_t i = colon ? name_end + 1 : len; i < len; i++) {
		char c = f[i];
		if (c == '\r' || c == '\n')
			continue;
		if (is_wsp(c)) {
			wsp = true;
			continue;
		}
		if (k + 2 > sizeof out) {
			sink(arg, out, k);
			k = 0;
		}
		if (wsp && any)
			out[k++] = ' ';
		out[k++] = c;
		wsp = false;
		any = true;
	}
	sink(arg, out, k);
}

void dkim_canon_header(enum dkim_canon c, const char *field, size_t len, bool crlf,
		       dkim_sink_fn sink, void *arg)
{
	if (c == DKIM_CANON_SIMPLE)
		sink(arg, field, len);
	else
		canon_header_relaxed(field, len, sink, arg);
	if (crlf)
		sink(arg, "\r\n", 2);
}

/* ---- the body ----------------------------------------------------------------- */

static void body_flush(struct dkim_body *b)
{
	if (b->buflen)
		b->sink(b->arg, b->buf, b->buflen);
	b->buflen = 0;
}

static void body_out(struct dkim_body *b, const char *p, size_t n)
{
	if (n > b->limit)
		n = (size_t)b->limit;
	b->limit -= n;
	b->out += n;
	while (n > 0) {
		if (b->buflen == sizeof b->buf)
			body_flush(b);
		size_t room = sizeof b->buf - b->buflen;
		size_t k = n < room ? n : room;
		memcpy(b->buf + b->buflen, p, k);
		b->buflen += k;
		p += k;
		n -= k;
	}
}

/* The line gets content: the empty lines held back were not the end. */
static void body_open_line(struct dkim_body *b)
{
	if (b->line_open)
		return;
	for (; b->blank_lines > 0 && b->limit > 0; b->blank_lines--)
		body_out(b, "\r\n", 2);
	b->blank_lines = 0;
	b->line_open = true;
}

static void body_content(struct dkim_body *b, char c)
{
	if (b->canon == DKIM_CANON_RELAXED) {
		if (is_wsp(c)) {
			b->wsp = true;
			return;
		}
		body_open_line(b);
		if (b->wsp)
			body_out(b, " ", 1);
		b->wsp = false;
	} else {
		body_open_line(b);
	}
	body_out(b, &c, 1);
}

static void body_end_line(struct dkim_body *b)
{
	b->wsp = false;
	b->any_line = true;
	if (b->line_open)
		body_out(b, "\r\n", 2);
	else
		b->blank_lines++;
	b->line_open = false;
}

void dkim_body_begin(struct dkim_body *b, enum dkim_canon c, uint64_t limit, dkim_sink_fn sink,
		     void *arg)
{
	memset(b, 0, sizeof *b);
	b->canon = c;
	b->limit = limit;
	b->sink = sink;
	b->arg = arg;
}

/* Bytes that go out as they are (in a run): not a line end, and in
 * relaxed not white space either. */
static bool body_plain(const struct dkim_body *b, char c)
{
	return c != '\r' && c != '\n' && (b->canon == DKIM_CANON_SIMPLE || !is_wsp(c));
}

void dkim_body_feed(struct dkim_body *b, const char *data, size_t len)
{
	size_t i = 0;
	while (i < len) {
		char c = data[i];
		if (!b->cr && body_plain(b, c)) {
			size_t j = i + 1;
			while (j < len && body_plain(b, data[j]))
				j++;
			body_open_line(b);
			if (b->wsp)
				body_out(b, " ", 1);
			b->wsp = false;
			body_out(b, data + i, j - i);
			i = j;
			continue;
		}
		i++;
		if (c == '\n') {
			b->cr = false;
			body_end_line(b);
			continue;
		}
		if (b->cr)
			body_content(b, '\r');
		b->cr = c == '\r';
		if (!b->cr)
			body_content(b, c);
	}
}

void dkim_body_end(struct dkim_body *b)
{
	if (b->cr)
		body_content(b, '\r');
	b->cr = false;
	if (b->line_open)
		body_end_line(b);
	/* §3.4.3: a simple body that is empty (or only empty lines) is CRLF */
	if (b->canon == DKIM_CANON_SIMPLE && b->out == 0)
		body_out(b, "\r\n", 2);
	body_flush(b);
}

void dkim_canon_header_cut(enum dkim_canon c, const char *field, size_t len, size_t cut,
			   size_t resume, dkim_sink_fn sink, void *arg)
{
	char *copy = xmalloc(len ? len : 1);
	memcpy(copy, field, cut);
	memcpy(copy + cut, field + resume, len - resume);
	dkim_canon_header(c, copy, len - (resume - cut), false, sink, arg);
	free(copy);
}

/* ---- lists of fields ------------------------------------------------------------ */

static bool is_list_space(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

void dkim_canon_h_list(enum dkim_canon c, const struct dkim_header *h, const char *list,
		       size_t len, dkim_sink_fn sink, void *arg)
{
	struct dkim_pick *pick = xmalloc(sizeof *pick);
	dkim_pick_begin(pick);
	size_t i = 0;
	while (i <= len) {
		size_t j = i;
		while (j < len && list[j] != ':')
			j++;
		size_t a = i, b = j;
		while (a < b && is_list_space(list[a]))
			a++;
		while (b > a && is_list_space(list[b - 1]))
			b--;
		const struct dkim_field *f = b > a ? dkim_pick_next(pick, h, list + a, b - a) : NULL;
		if (f)
			dkim_canon_header(c, f->start, f->len, true, sink, arg);
		i = j + 1;
	}
	free(pick);
}

static int canon_word(const char *w, size_t n, enum dkim_canon *out)
{
	if (n == 7 && memcmp(w, "relaxed", 7) == 0)
		*out = DKIM_CANON_RELAXED;
	else if (n == 6 && memcmp(w, "simple", 6) == 0)
		*out = DKIM_CANON_SIMPLE;
	else
		return -1;
	return 0;
}

int dkim_canon_parse(const char *v, size_t len, enum dkim_canon *hc, enum dkim_canon *bc)
{
	*hc = *bc = DKIM_CANON_SIMPLE;
	const char *slash = memchr(v, '/', len);
	size_t hn = slash ? (size_t)(slash - v) : len;
	if (canon_word(v, hn, hc) < 0)
		return -1;
	return slash ? canon_word(slash + 1, len - hn - 1, bc) : 0;
}

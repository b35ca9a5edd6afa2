/* milter_msg: header fields of a spooled message for milters, and the
 * milters' header changes.  RFC 5322 §2.2. */
#include "filter/milter_msg.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "lib/util.h"

static bool milter_is_wsp(char c)
{
	return c == ' ' || c == '\t';
}

/* The end of the field starting at p (CRLF or LF lines; continuation lines
 * start with WSP): the offset after its last line end, or 0 when the field
 * does not end inside len (and whole is false). */
static size_t milter_field_end(const char *p, size_t len, bool whole)
{
	size_t at = 0;
	for (;;) {
		const char *lf = memchr(p + at, '\n', len - at);
		if (!lf)
			return whole ? len : 0;
		at = (size_t)(lf - p) + 1;
		if (at == len)
			return whole ? len : 0; /* the next line may continue it */
		if (!milter_is_wsp(p[at]))
			return at;
	}
}

/* "Name: value" of n bytes (line ends included) into a field in milter form. */
static bool milter_field_split(const char *p, size_t n, struct milter_header *f)
{
	const char *colon = memchr(p, ':', n);
	if (!colon || colon == p)
		return false;
	for (const char *c = p; c < colon; c++)
		if ((unsigned char)*c <= 32 || (unsigned char)*c >= 127)
			return false;
	const char *v = colon + 1;
	const char *end = p + n;
	if (v < end && *v == ' ')
		v++;
	while (end > v && (end[-1] == '\n' || end[-1] == '\r'))
		end--;
	f->name = xstrndup(p, (size_t)(colon - p));
	char *value = xmalloc((size_t)(end - v) + 1);
	size_t k = 0;
	for (const char *c = v; c < end; c++)
		if (!(*c == '\r' && c + 1 < end && c[1] == '\n'))
			value[k++] = *c; /* folds as LF: the milter form */
	value[k] = '\0';
	f->value = value;
	return true;
}

int milter_headers_parse(const char *buf, size_t len, bool whole, struct milter_headers *out)
{
	memset(out, 0, sizeof *out);
	size_t at = 0;
	while (at < len) {
		if (buf[at] == '\n' || (buf[at] == '\r' && at + 1 < len && buf[at + 1] == '\n')) {
			at += buf[at] == '\n' ? 1 : 2; /* the empty line */
			break;
		}
		size_t n = milter_field_end(buf + at, len - at, whole);
		if (n == 0) {
			/* the block goes on past the bound: the fields read so
			 * far are the filters' header, the rest their body (as
			 * Postfix's header_size_limit keeps a header bounded),
			 * and the message is written back without an empty line
			 * between them */
			out->cut = true;
			break;
		}
		struct milter_header f;
		if (!milter_field_split(buf + at, n, &f))
			break; /* not a field: the body starts here */
		*(struct milter_header *)xappend(&out->v, &out->n, sizeof f) = f;
		at += n;
	}
	if (at >= len && !whole)
		out->cut = true; /* no empty line within the bound */
	out->body_offset = (off_t)at;
	return 0;
}

int milter_headers_read(int fd, off_t offset, off_t size, struct milter_headers *out)
{
	size_t want = size < MILTER_HEADERS_MAX ? (size_t)size : MILTER_HEADERS_MAX;
	char *buf = xmalloc(want + 1);
	size_t got = 0;
	while (got < want) {
		ssize_t n = pread(fd, buf + got, want - got, offset + (off_t)got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			int e = n < 0 ? errno : EIO;
			free(buf);
			errno = e;
			return -1;
		}
		got += (size_t)n;
	}
	int r = milter_headers_parse(buf, got, (off_t)got == size, out);
	int e = errno;
	free(buf);
	errno = e;
	return r;
}

void milter_headers_free(struct milter_headers *h)
{
	for (size_t i = 0; i < h->n; i++) {
		free(h->v[i].name);
		free(h->v[i].value);
	}
	free(h->v);
	memset(h, 0, sizeof *h);
}

static bool milter_value_is(const char *v, const char *want)
{
	while (milter_is_wsp(*v) || *v == '\n')
		v++;
	size_t n = strlen(v);
	while (n > 0 && (milter_is_wsp(v[n - 1]) || v[n - 1] == '\n'))
		n--;
	return n == strlen(want) && strncasecmp(v, want, n) == 0;
}

bool milter_headers_has(const struct milter_headers *h, const char *name, const char *value)
{
	for (size_t i = 0; i < h->n; i++)
		if (strcasecmp(h->v[i].name, name) == 0 && milter_value_is(h->v[i].value, value))
			return true;
	return false;
}

void milter_headers_add(struct milter_headers *h, const char *name, const char *value)
{
	milter_headers_insert(h, h->n, name, value);
}

void milter_headers_insert(struct milter_headers *h, size_t index, const char *name,
			   const char *value)
{
	if (index > h->n)
		index = h->n;
	(void)xappend(&h->v, &h->n, sizeof *h->v);
	memmove(&h->v[index + 1], &h->v[index], (h->n - 1 - index) * sizeof *h->v);
	h->v[index].name = xstrdup(name);
	h->v[index].value = xstrdup(value);
}

void milter_headers_change(struct milter_headers *h, const char *name, size_t index,
			   const char *value)
{
	size_t seen = 0;
	for (size_t i = 0; i < h->n; i++) {
		if (strcasecmp(h->v[i].name, name) != 0 || ++seen != index)
			continue;
		free(h->v[i].value);
		if (*value) {
			h->v[i].value = xstrdup(value);
			return;
		}
		free(h->v[i].name);
		memmove(&h->v[i], &h->v[i + 1], (h->n - i - 1) * sizeof *h->v);
		h->n--;
		return;
	}
	if (*value)
		milter_headers_add(h, name, value);
}

/* A value in milter form back with CRLF line ends. */
static int milter_value_write(const char *v, milter_write_fn out, void *arg)
{
	while (*v) {
		size_t n = strcspn(v, "\r\n");
		if (n > 0 && out(arg, v, n) < 0)
			return -1;
		v += n;
		if (!*v)
			break;
		if (*v == '\r')
			v++;
		if (*v == '\n') {
			v++;
			if (out(arg, "\r\n", 2) < 0)
				return -1;
		}
	}
	return 0;
}

int milter_headers_write(const struct milter_headers *h, milter_write_fn out, void *arg)
{
	for (size_t i = 0; i < h->n; i++) {
		const struct milter_header *f = &h->v[i];
		/* the space after the colon that reading took off (or that a
		 * filter's value goes without, as Postfix writes it) */
		bool space = f->value[0] != '\0';
		if (out(arg, f->name, strlen(f->name)) < 0 || out(arg, space ? ": " : ":", space ? 2 : 1) < 0 ||
		    milter_value_write(f->value, out, arg) < 0 || out(arg, "\r\n", 2) < 0)
			return -1;
	}
	return h->cut ? 0 : out(arg, "\r\n", 2);
}

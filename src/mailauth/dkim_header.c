/* dkim_header: header fields of untrusted messages for DKIM (RFC 5322
 * §2.2, RFC 6376 §5.4.2). */
#include "mailauth/dkim_header.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "lib/util.h"

static bool is_wsp(char c)
{
	return c == ' ' || c == '\t';
}

/* The line at msg[i..): its end without line end in *content_end, the
 * start of the next line returned. */
static size_t line_at(const char *msg, size_t len, size_t i, size_t *content_end)
{
	const char *nl = memchr(msg + i, '\n', len - i);
	size_t end = nl ? (size_t)(nl - msg) : len;
	size_t next = nl ? end + 1 : len;
	if (end > i && msg[end - 1] == '\r')
		end--;
	*content_end = end;
	return next;
}

static void field_name(struct dkim_field *f)
{
	const char *colon = memchr(f->start, ':', f->len);
	size_t n = colon ? (size_t)(colon - f->start) : f->len;
	while (n > 0 && is_wsp(f->start[n - 1]))
		n--;
	f->name_len = n;
}

int dkim_header_parse(const char *msg, size_t len, struct dkim_header *h)
{
	memset(h, 0, sizeof *h);
	size_t i = 0;
	struct dkim_field *cur = NULL;
	while (i < len) {
		size_t end;
		size_t next = line_at(msg, len, i, &end);
		if (end == i) { /* the empty line */
			i = next;
			break;
		}
		if (next > DKIM_HEADER_MAX)
			goto fail;
		if (is_wsp(msg[i]) && cur) {
			cur->len = end - (size_t)(cur->start - msg);
		} else if (!is_wsp(msg[i])) {
			if (h->n == DKIM_FIELDS_MAX)
				goto fail;
			cur = xappend(&h->fields, &h->n, sizeof *h->fields);
			cur->start = msg + i;
			cur->len = end - i;
		}
		i = next;
	}
	h->body_offset = i;
	for (size_t k = 0; k < h->n; k++)
		field_name(&h->fields[k]);
	return 0;
fail:
	dkim_header_free(h);
	return -1;
}

void dkim_header_free(struct dkim_header *h)
{
	free(h->fields);
	memset(h, 0, sizeof *h);
}

bool dkim_field_is(const struct dkim_field *f, const char *name, size_t name_len)
{
	return f->name_len == name_len && strncasecmp(f->start, name, name_len) == 0;
}

void dkim_pick_begin(struct dkim_pick *p)
{
	memset(p, 0, sizeof *p);
}

const struct dkim_field *dkim_pick_next(struct dkim_pick *p, const struct dkim_header *h,
					const char *name, size_t name_len)
{
	for (size_t k = h->n; k-- > 0;) {
		if (p->used[k] || !dkim_field_is(&h->fields[k], name, name_len))
			continue;
		p->used[k] = true;
		return &h->fields[k];
	}
	return NULL;
}

static bool is_domain_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '-' || c == '.' || c == '_';
}

/* The address part of a From value: inside the last <...>, else all. */
static void from_address(const char *v, size_t n, size_t *a, size_t *b)
{
	*a = 0;
	*b = n;
	for (size_t k = n; k-- > 0;) {
		if (v[k] != '<')
			continue;
		const char *gt = memchr(v + k, '>', n - k);
		if (gt) {
			*a = k + 1;
			*b = (size_t)(gt - v);
		}
		return;
	}
}

int dkim_from_domain(const struct dkim_header *h, char *out, size_t outsz)
{
	const struct dkim_field *from = NULL;
	for (size_t k = 0; k < h->n; k++) {
		if (!dkim_field_is(&h->fields[k], "from", 4))
			continue;
		if (from)
			return -1; /* RFC 5322 §3.6: one From */
		from = &h->fields[k];
	}
	if (!from)
		return -1;
	const char *colon = memchr(from->start, ':', from->len);
	if (!colon)
		return -1;
	const char *v = colon + 1;
	size_t n = from->len - (size_t)(v - from->start), a, b;
	from_address(v, n, &a, &b);
	const char *at = NULL;
	for (size_t k = a; k < b; k++)
		if (v[k] == '@')
			at = v + k;
	if (!at)
		return -1;
	size_t d = (size_t)(at + 1 - v), e = d;
	while (e < b && is_domain_char(v[e]))
		e++;
	if (e == d || e - d >= outsz || e - d > DKIM_DOMAIN_MAX)
		return -1;
	for (size_t k = d; k < e; k++)
		out[k - d] = (v[k] >= 'A' && v[k] <= 'Z') ? (char)(v[k] - 'A' + 'a') : v[k];
	out[e - d] = '\0';
	while (e - d > 1 && out[e - d - 1] == '.')
		out[--e - d] = '\0';
	return 0;
}

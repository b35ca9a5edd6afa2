/* imap_catenate: the message of a CATENATE (RFC 4469 §5) written part by
 * part: TEXT literals as they are, URL parts read from the named message
 * of one of the user's folders (RFC 5092 relative URLs, section and
 * partial as FETCH BODY[section]<partial> would give them). */
#include "proto/imap/imap_catenate.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "proto/imap/imap_context.h"
#include "proto/imap/imap_parse.h"
#include "store/mailbox.h"
#include "lib/util.h"

/* ---- the URL (RFC 5092 §9 imessagepart, relative form) -------------------- */

static int imap_url_hex(unsigned char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c = (unsigned char)(c | 0x20);
	return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* %-decode s[0..n) into a new string; NULL for a bad escape, a control
 * character (no mailbox name holds one) or an octet a URL does not
 * carry as it is (RFC 3986 §2: printable US-ASCII but space). */
static char *imap_url_decode(const char *s, size_t n)
{
	char *out = xmalloc(n + 1);
	size_t o = 0;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c <= ' ' || c >= 0x7f) {
			free(out);
			return NULL;
		}
		if (c != '%') {
			out[o++] = s[i];
			continue;
		}
		int hi = i + 1 < n ? imap_url_hex((unsigned char)s[i + 1]) : -1;
		int lo = i + 2 < n ? imap_url_hex((unsigned char)s[i + 2]) : -1;
		if (hi < 0 || lo < 0 || (hi << 4 | lo) < 0x20 || (hi << 4 | lo) == 0x7f) {
			free(out);
			return NULL;
		}
		out[o++] = (char)(hi << 4 | lo);
		i += 2;
	}
	out[o] = '\0';
	return out;
}

static bool imap_url_number(const char *s, size_t n, uint32_t *v)
{
	uint64_t x = 0;
	if (n == 0 || n > 10)
		return false;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		x = x * 10 + (uint64_t)(s[i] - '0');
	}
	if (x > UINT32_MAX)
		return false;
	*v = (uint32_t)x;
	return true;
}

/* SECTION=1.2.MIME, HEADER, TEXT, 2.TEXT ... (HEADER.FIELDS is not
 * taken: its field list has no place in this form). */
static bool imap_url_section(const char *s, size_t n, struct message_section_spec *sec)
{
	memset(sec, 0, sizeof *sec);
	sec->text = MESSAGE_SECTION_WHOLE;
	size_t i = 0;
	while (i < n && s[i] >= '0' && s[i] <= '9') {
		size_t j = i;
		while (j < n && s[j] >= '0' && s[j] <= '9')
			j++;
		uint32_t part;
		if (!imap_url_number(s + i, j - i, &part) || part == 0 ||
		    sec->nparts == MESSAGE_SECTION_PARTS_MAX)
			return false;
		sec->parts[sec->nparts++] = part;
		i = j;
		if (i == n)
			return true;
		if (s[i] != '.')
			return false;
		i++;
	}
	static const struct {
		const char *name;
		enum message_section_text text;
		bool needs_part;
	} texts[] = {
		{"HEADER", MESSAGE_SECTION_HEADER, false},
		{"TEXT", MESSAGE_SECTION_TEXT, false},
		{"MIME", MESSAGE_SECTION_MIME, true},
	};
	for (size_t k = 0; k < ARRAY_LEN(texts); k++)
		if (n - i == strlen(texts[k].name) && strncasecmp(s + i, texts[k].name, n - i) == 0 &&
		    (!texts[k].needs_part || sec->nparts > 0)) {
			sec->text = texts[k].text;
			return true;
		}
	return false;
}

/* One ";KEY=value" of the URL. */
static bool imap_url_param(struct imap_url *u, const char *key, size_t klen, const char *v,
			   size_t vlen)
{
	if (klen == 11 && strncasecmp(key, "UIDVALIDITY", 11) == 0)
		return imap_url_number(v, vlen, &u->uidvalidity) && u->uidvalidity > 0;
	if (klen == 3 && strncasecmp(key, "UID", 3) == 0)
		return imap_url_number(v, vlen, &u->uid) && u->uid > 0;
	if (klen == 7 && strncasecmp(key, "SECTION", 7) == 0) {
		u->has_section = true;
		return imap_url_section(v, vlen, &u->section);
	}
	if (klen == 7 && strncasecmp(key, "PARTIAL", 7) == 0) {
		const char *dot = memchr(v, '.', vlen);
		u->partial = true;
		if (!dot)
			return imap_url_number(v, vlen, &u->origin);
		return imap_url_number(v, (size_t)(dot - v), &u->origin) &&
		       imap_url_number(dot + 1, vlen - (size_t)(dot - v) - 1, &u->count) &&
		       u->count > 0;
	}
	return false;
}

bool imap_url_parse(const char *s, size_t len, struct imap_url *u)
{
	memset(u, 0, sizeof *u);
	if (len < 2 || len > IMAP_URL_MAX || s[0] != '/' || memchr(s, '\0', len))
		return false;
	/* "/" mailbox, then ";KEY=value" items, each after "/" or ";" */
	size_t i = 1, end = 1;
	while (end < len && s[end] != ';' && s[end] != '/')
		end++;
	if (end == i || !(u->mailbox = imap_url_decode(s + i, end - i)))
		return false;
	i = end;
	while (i < len) {
		if (s[i] == '/')
			i++;
		if (i >= len || s[i] != ';')
			goto bad;
		i++;
		size_t k = i;
		while (i < len && s[i] != '=')
			i++;
		if (i >= len)
			goto bad;
		size_t klen = i - k, v = ++i;
		while (i < len && s[i] != '/' && s[i] != ';')
			i++;
		if (!imap_url_param(u, s + k, klen, s + v, i - v))
			goto bad;
	}
	if (u->uid == 0)
		goto bad;
	return true;
bad:
	imap_url_free(u);
	return false;
}

void imap_url_free(struct imap_url *u)
{
	free(u->mailbox);
	memset(u, 0, sizeof *u);
}

/* ---- writing the parts ------------------------------------------------------ */

/* The octets [off, off + len) of the message at path to fd. */
static bool imap_catenate_copy(const struct message *m, const char *path, uint64_t off,
			       uint64_t len, int fd)
{
	if (len == 0)
		return true;
	struct message_stream *st = message_stream_open(m, path, off, len);
	if (!st)
		return false;
	char buf[IMAP_CHUNK];
	uint64_t left = len;
	ssize_t n;
	while (left > 0 && (n = message_stream_read(st, buf, sizeof buf)) > 0) {
		size_t k = (uint64_t)n < left ? (size_t)n : (size_t)left;
		if (write_all(fd, buf, k) < 0)
			break;
		left -= k;
	}
	message_stream_close(st);
	return left == 0;
}

/* The section (or whole message) the URL names, clipped by PARTIAL. */
static bool imap_catenate_section(const struct imap_url *u, const struct message *m,
				  const char *path, int fd, bool *found)
{
	struct message_section_spec whole = {.text = MESSAGE_SECTION_WHOLE};
	struct message_section ms;
	char err[256];
	if (message_section(m, path, u->has_section ? &u->section : &whole, &ms, err, sizeof err) < 0)
		return false;
	*found = ms.kind != MESSAGE_SECTION_NONE;
	uint64_t total = ms.kind == MESSAGE_SECTION_RANGE ? ms.length : ms.len, off = 0;
	uint64_t len = total;
	if (u->partial) {
		off = u->origin < total ? u->origin : total;
		len = total - off;
		if (u->count && len > u->count)
			len = u->count;
	}
	bool ok = true;
	if (ms.kind == MESSAGE_SECTION_RANGE)
		ok = imap_catenate_copy(m, path, ms.offset + off, len, fd);
	else if (ms.kind == MESSAGE_SECTION_BUFFER && len > 0)
		ok = write_all(fd, ms.buf + off, (size_t)len) == 0;
	message_section_free(&ms);
	return ok;
}

/* A URL part: the named message must exist with that UIDVALIDITY. */
static enum imap_catenate_result imap_catenate_url(struct imap_session *s, const char *url,
						   size_t len, int fd)
{
	struct imap_url u;
	if (!imap_url_parse(url, len, &u))
		return IMAP_CATENATE_BADURL;
	struct mailbox *mb = NULL;
	char err[256];
	enum imap_catenate_result r = IMAP_CATENATE_BADURL;
	if (mailbox_open(s->maildir, u.mailbox, true, &mb, err, sizeof err) != MAILBOX_OK)
		goto out;
	size_t seq = mailbox_seq_of_uid(mb, u.uid);
	if (seq == 0 || (u.uidvalidity && u.uidvalidity != mailbox_uidvalidity(mb)))
		goto out;
	char *path = mailbox_msg_path(mb, seq);
	struct message_cache *cache = message_cache_new(0);
	struct message *m = path ? message_get(cache, path, err, sizeof err) : NULL;
	bool found = false;
	if (m && imap_catenate_section(&u, m, path, fd, &found))
		r = found ? IMAP_CATENATE_OK : IMAP_CATENATE_BADURL;
	else if (m)
		r = IMAP_CATENATE_FAILED;
	if (m)
		message_put(m);
	message_cache_free(cache);
	free(path);
out:
	if (mb)
		mailbox_close(mb);
	imap_url_free(&u);
	return r;
}

enum imap_catenate_result imap_catenate_write(struct imap_session *s, const struct imap_args *parts,
					      int fd, const char **badurl)
{
	*badurl = NULL;
	if (!parts || parts->n == 0 || parts->n % 2 != 0)
		return IMAP_CATENATE_SYNTAX;
	for (size_t i = 0; i < parts->n; i += 2) {
		const struct imap_arg *kind = imap_args_at(parts, i);
		const struct imap_arg *v = imap_args_at(parts, i + 1);
		size_t len;
		if (imap_arg_is(kind, "TEXT") && v->type == IMAP_ARG_LITERAL && v->str) {
			if (write_all(fd, v->str, v->len) < 0)
				return IMAP_CATENATE_FAILED;
			continue;
		}
		const char *url = imap_arg_is(kind, "URL") ? imap_arg_astring(v, &len) : NULL;
		if (!url)
			return IMAP_CATENATE_SYNTAX;
		enum imap_catenate_result r = imap_catenate_url(s, url, len, fd);
		if (r != IMAP_CATENATE_OK) {
			*badurl = url;
			return r;
		}
	}
	return IMAP_CATENATE_OK;
}

/* dkim_tags: tag=value lists (RFC 6376 §3.2) and base64 (RFC 2045 §6.8)
 * of untrusted DKIM-Signature fields and key records. */
#include "mailauth/dkim_tags.h"

#include <stdint.h>
#include <string.h>

#include <openssl/evp.h>

#include "lib/util.h"

static bool is_fws(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

static bool is_alpha(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool is_digit(char c)
{
	return c >= '0' && c <= '9';
}

/* tag-name = ALPHA *ALNUMPUNC (ALNUMPUNC: letters, digits, '_') */
static bool tag_name_ok(const char *s, size_t n)
{
	if (n == 0 || !is_alpha(s[0]))
		return false;
	for (size_t i = 1; i < n; i++)
		if (!is_alpha(s[i]) && !is_digit(s[i]) && s[i] != '_')
			return false;
	return true;
}

/* tag-value: VALCHAR (%x21-3A / %x3C-7E) and white space between them */
static bool tag_value_ok(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (!is_fws(s[i]) && (c < 0x21 || c > 0x7e || c == ';'))
			return false;
	}
	return true;
}

static void trim(const char **s, size_t *n)
{
	while (*n > 0 && is_fws(**s)) {
		(*s)++;
		(*n)--;
	}
	while (*n > 0 && is_fws((*s)[*n - 1]))
		(*n)--;
}

static bool tags_has(const struct dkim_tags *t, const char *name, size_t n)
{
	for (size_t i = 0; i < t->n; i++)
		if (t->tag[i].name_len == n && memcmp(t->tag[i].name, name, n) == 0)
			return true;
	return false;
}

/* One tag-spec, text[start..end). */
static int tag_spec(const char *text, size_t start, size_t end, struct dkim_tags *out, char *err,
		    size_t errsz)
{
	const char *eq = memchr(text + start, '=', end - start);
	if (!eq) {
		errfmt(err, errsz, "tag without '='");
		return -1;
	}
	const char *name = text + start;
	size_t name_len = (size_t)(eq - name);
	trim(&name, &name_len);
	if (!tag_name_ok(name, name_len)) {
		errfmt(err, errsz, "bad tag name");
		return -1;
	}
	if (tags_has(out, name, name_len)) {
		errfmt(err, errsz, "tag %.*s given twice", (int)(name_len > 16 ? 16 : name_len), name);
		return -1;
	}
	if (out->n == DKIM_TAGS_MAX) {
		errfmt(err, errsz, "more than %d tags", DKIM_TAGS_MAX);
		return -1;
	}
	size_t raw_start = (size_t)(eq - text) + 1;
	const char *value = text + raw_start;
	size_t value_len = end - raw_start;
	trim(&value, &value_len);
	if (!tag_value_ok(value, value_len)) {
		errfmt(err, errsz, "bad character in the value of tag %.*s",
		       (int)(name_len > 16 ? 16 : name_len), name);
		return -1;
	}
	out->tag[out->n++] = (struct dkim_tag){name, name_len, value, value_len, raw_start, end};
	return 0;
}

int dkim_tags_parse(const char *text, size_t len, struct dkim_tags *out, char *err, size_t errsz)
{
	out->n = 0;
	size_t start = 0;
	while (start <= len) {
		const char *semi = memchr(text + start, ';', len - start);
		size_t end = semi ? (size_t)(semi - text) : len;
		const char *s = text + start;
		size_t n = end - start;
		trim(&s, &n);
		if (n == 0) {
			/* only the last spec may be empty: "a=1;" (§3.2) */
			if (semi || out->n == 0) {
				errfmt(err, errsz, semi ? "empty tag" : "no tags");
				return -1;
			}
		} else if (tag_spec(text, start, end, out, err, errsz) < 0) {
			return -1;
		}
		if (!semi)
			break;
		start = end + 1;
		if (start == len)
			break; /* trailing ';' */
	}
	return 0;
}

const struct dkim_tag *dkim_tags_get(const struct dkim_tags *t, const char *name)
{
	size_t n = strlen(name);
	for (size_t i = 0; i < t->n; i++)
		if (t->tag[i].name_len == n && memcmp(t->tag[i].name, name, n) == 0)
			return &t->tag[i];
	return NULL;
}

bool dkim_tag_is(const struct dkim_tag *t, const char *s)
{
	size_t n = strlen(s);
	return t->value_len == n && memcmp(t->value, s, n) == 0;
}

long dkim_base64_decode(const char *in, size_t len, unsigned char *out, size_t outsz)
{
	/* white space out, then whole 4-character groups */
	size_t n = 0, pad = 0;
	char *clean = xmalloc(len + 1);
	for (size_t i = 0; i < len; i++) {
		if (is_fws(in[i]))
			continue;
		if (in[i] == '=')
			pad++;
		else if (pad)
			n = SIZE_MAX; /* data after padding */
		if (n == SIZE_MAX)
			break;
		clean[n++] = in[i];
	}
	long r = -1;
	if (n != SIZE_MAX && n % 4 == 0 && pad <= 2 && n / 4 * 3 <= outsz && n / 4 * 3 < (size_t)1 << 30) {
		int k = n ? EVP_DecodeBlock(out, (const unsigned char *)clean, (int)n) : 0;
		if (k >= 0 && (size_t)k >= pad)
			r = k - (long)pad;
	}
	free(clean);
	return r;
}

char *dkim_base64_encode(const unsigned char *in, size_t n)
{
	char *out = xmalloc(4 * ((n + 2) / 3) + 1);
	(void)EVP_EncodeBlock((unsigned char *)out, in, (int)n); /* length known: 4*ceil(n/3) */
	return out;
}

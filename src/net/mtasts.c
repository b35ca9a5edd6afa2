/* mtasts: MTA-STS texts (RFC 8461 §3.1, §3.2) and mx matching (§4.1). */
#include "net/mtasts.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "lib/util.h"

const char *mtasts_mode_name(enum mtasts_mode m)
{
	switch (m) {
	case MTASTS_ENFORCE:
		return "enforce";
	case MTASTS_TESTING:
		return "testing";
	case MTASTS_NONE:
		break;
	}
	return "none";
}

static bool mtasts_wsp(char c)
{
	return c == ' ' || c == '\t';
}

/* The bytes [*p, end) with blanks skipped on the left. */
static void mtasts_skip_wsp(const char **p, const char *end)
{
	while (*p < end && mtasts_wsp(**p))
		(*p)++;
}

/* "v" *WSP "=" *WSP "STSv1": the record's first field. */
static bool mtasts_version_field(const char **p, const char *end)
{
	if (*p >= end || **p != 'v')
		return false;
	(*p)++;
	mtasts_skip_wsp(p, end);
	if (*p >= end || **p != '=')
		return false;
	(*p)++;
	mtasts_skip_wsp(p, end);
	if ((size_t)(end - *p) < 5 || memcmp(*p, "STSv1", 5) != 0)
		return false;
	*p += 5;
	return true;
}

bool mtasts_record_is_sts(const char *txt, size_t len)
{
	const char *p = txt, *end = txt + len;
	return mtasts_version_field(&p, end);
}

/* One "name=value" field up to ';' or the end; name and value trimmed. */
static bool mtasts_field(const char **p, const char *end, const char **name, size_t *nlen,
			 const char **value, size_t *vlen)
{
	mtasts_skip_wsp(p, end);
	const char *f = *p;
	while (*p < end && **p != ';')
		(*p)++;
	const char *fend = *p;
	const char *eq = memchr(f, '=', (size_t)(fend - f));
	if (!eq)
		return false;
	const char *n = f, *ne = eq;
	while (ne > n && mtasts_wsp(ne[-1]))
		ne--;
	const char *v = eq + 1;
	while (v < fend && mtasts_wsp(*v))
		v++;
	const char *ve = fend;
	while (ve > v && mtasts_wsp(ve[-1]))
		ve--;
	*name = n;
	*nlen = (size_t)(ne - n);
	*value = v;
	*vlen = (size_t)(ve - v);
	return *nlen > 0;
}

bool mtasts_record_id(const char *txt, size_t len, char id[MTASTS_ID_MAX + 1])
{
	const char *p = txt, *end = txt + len;
	bool have_id = false;
	if (!mtasts_version_field(&p, end))
		return false;
	mtasts_skip_wsp(&p, end);
	while (p < end) {
		if (*p != ';')
			return false;
		p++;
		mtasts_skip_wsp(&p, end);
		if (p == end)
			break; /* a trailing delimiter */
		const char *name, *value;
		size_t nlen, vlen;
		if (!mtasts_field(&p, end, &name, &nlen, &value, &vlen))
			return false;
		if (nlen == 2 && memcmp(name, "id", 2) == 0) {
			if (have_id || vlen == 0 || vlen > MTASTS_ID_MAX)
				return false;
			for (size_t i = 0; i < vlen; i++)
				if (!isalnum((unsigned char)value[i]))
					return false;
			memcpy(id, value, vlen);
			id[vlen] = '\0';
			have_id = true;
		}
	}
	return have_id;
}

void mtasts_policy_clear(struct mtasts_policy *p)
{
	for (size_t i = 0; i < p->nmx; i++)
		free(p->mx[i]);
	memset(p, 0, sizeof *p);
}

void mtasts_policy_copy(struct mtasts_policy *dst, const struct mtasts_policy *src)
{
	*dst = *src;
	for (size_t i = 0; i < src->nmx; i++)
		dst->mx[i] = xstrdup(src->mx[i]);
}

static bool mtasts_is(const char *s, size_t n, const char *word)
{
	return strlen(word) == n && memcmp(s, word, n) == 0;
}

/* An mx value: a host name, or "*." and a host name (§3.2). */
static bool mtasts_mx_pattern_ok(const char *v, size_t n)
{
	size_t i = 0;
	if (n >= 2 && v[0] == '*' && v[1] == '.')
		i = 2;
	if (i >= n || n > 253 || v[i] == '.' || v[i] == '-')
		return false;
	for (; i < n; i++)
		if (!isalnum((unsigned char)v[i]) && v[i] != '-' && v[i] != '.' && v[i] != '_')
			return false;
	return true;
}

/* One "key: value" line of the policy into out.  Unknown keys are ignored
 * (§3.2: "senders MUST ignore" them). */
static bool mtasts_policy_line(const char *line, size_t n, struct mtasts_policy *out,
			       unsigned *seen, char *err, size_t errsz)
{
	const char *colon = memchr(line, ':', n);
	if (!colon) {
		errfmt(err, errsz, "a line without \"key: value\"");
		return false;
	}
	size_t klen = (size_t)(colon - line);
	const char *v = colon + 1, *ve = line + n;
	while (v < ve && mtasts_wsp(*v))
		v++;
	while (ve > v && mtasts_wsp(ve[-1]))
		ve--;
	size_t vlen = (size_t)(ve - v);
	if (mtasts_is(line, klen, "version")) {
		if (!mtasts_is(v, vlen, "STSv1")) {
			errfmt(err, errsz, "version is not STSv1");
			return false;
		}
		*seen |= 1;
	} else if (mtasts_is(line, klen, "mode")) {
		if (mtasts_is(v, vlen, "enforce"))
			out->mode = MTASTS_ENFORCE;
		else if (mtasts_is(v, vlen, "testing"))
			out->mode = MTASTS_TESTING;
		else if (mtasts_is(v, vlen, "none"))
			out->mode = MTASTS_NONE;
		else {
			errfmt(err, errsz, "mode is not enforce, testing or none");
			return false;
		}
		*seen |= 2;
	} else if (mtasts_is(line, klen, "max_age")) {
		unsigned long age = 0;
		if (vlen == 0 || vlen > 10) {
			errfmt(err, errsz, "bad max_age");
			return false;
		}
		for (size_t i = 0; i < vlen; i++) {
			if (!isdigit((unsigned char)v[i])) {
				errfmt(err, errsz, "bad max_age");
				return false;
			}
			age = age * 10 + (unsigned long)(v[i] - '0');
		}
		out->max_age = age > MTASTS_MAX_AGE_MAX ? MTASTS_MAX_AGE_MAX : age;
		*seen |= 4;
	} else if (mtasts_is(line, klen, "mx")) {
		if (!mtasts_mx_pattern_ok(v, vlen) || out->nmx >= MTASTS_MX_MAX) {
			errfmt(err, errsz, out->nmx >= MTASTS_MX_MAX ? "too many mx lines"
								    : "bad mx pattern");
			return false;
		}
		char *mx = xstrndup(v, vlen);
		for (char *c = mx; *c; c++)
			*c = (char)tolower((unsigned char)*c);
		out->mx[out->nmx++] = mx;
	}
	return true;
}

bool mtasts_policy_parse(const char *text, size_t len, struct mtasts_policy *out, char *err,
			 size_t errsz)
{
	memset(out, 0, sizeof *out);
	unsigned seen = 0;
	if (len > MTASTS_POLICY_MAX) {
		errfmt(err, errsz, "policy larger than %d bytes", MTASTS_POLICY_MAX);
		return false;
	}
	for (size_t i = 0; i < len;) {
		const char *nl = memchr(text + i, '\n', len - i);
		size_t end = nl ? (size_t)(nl - text) : len;
		size_t n = end - i;
		if (n > 0 && text[i + n - 1] == '\r')
			n--;
		if (n > 0 && !mtasts_policy_line(text + i, n, out, &seen, err, errsz)) {
			mtasts_policy_clear(out);
			return false;
		}
		i = end + 1;
	}
	if (seen != 7) {
		errfmt(err, errsz, "version, mode or max_age missing");
		mtasts_policy_clear(out);
		return false;
	}
	if (out->mode != MTASTS_NONE && out->nmx == 0) {
		errfmt(err, errsz, "no mx line");
		mtasts_policy_clear(out);
		return false;
	}
	return true;
}

/* host without a trailing dot, compared to pattern (lower case). */
static bool mtasts_match_one(const char *pattern, const char *host, size_t hlen)
{
	if (pattern[0] == '*' && pattern[1] == '.') {
		const char *dot = memchr(host, '.', hlen);
		if (!dot || dot == host)
			return false;
		size_t rest = hlen - (size_t)(dot + 1 - host);
		return strlen(pattern + 2) == rest && strncasecmp(pattern + 2, dot + 1, rest) == 0;
	}
	return strlen(pattern) == hlen && strncasecmp(pattern, host, hlen) == 0;
}

bool mtasts_mx_matches(const struct mtasts_policy *p, const char *host)
{
	size_t hlen = strlen(host);
	if (hlen > 0 && host[hlen - 1] == '.')
		hlen--;
	for (size_t i = 0; i < p->nmx; i++)
		if (mtasts_match_one(p->mx[i], host, hlen))
			return true;
	return false;
}

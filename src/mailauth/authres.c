/* authres: Authentication-Results (RFC 8601).  The field posthorn adds
 * names its host name as authserv-id and carries the SPF (§2.7.2), DKIM
 * (§2.7.1) and DMARC (RFC 7489 §11.2) results; a field from outside that
 * claims the same authserv-id is recognised here so that it can be
 * removed (§5).  Values from the peer are quoted or left out, never
 * written raw. */
#include "mailauth/authres.h"

#include <ctype.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>

#include "lib/strbuf.h"
#include "lib/util.h"
#include "mailauth/arc.h"

enum { AUTHRES_B_SHOWN = 12 }; /* characters of header.b (§2.7.1: 8 at least) */

const char *authres_dkim_result_name(enum authres_dkim_result r)
{
	switch (r) {
	case AUTHRES_DKIM_NONE: return "none";
	case AUTHRES_DKIM_PASS: return "pass";
	case AUTHRES_DKIM_FAIL: return "fail";
	case AUTHRES_DKIM_NEUTRAL: return "neutral";
	case AUTHRES_DKIM_POLICY: return "policy";
	case AUTHRES_DKIM_TEMPERROR: return "temperror";
	case AUTHRES_DKIM_PERMERROR: return "permerror";
	}
	return "permerror";
}

/* ---- writing -------------------------------------------------------------- */

/* RFC 2045 token characters: a value made only of them needs no quotes */
static bool authres_token_char(unsigned char c)
{
	return c > 0x20 && c < 0x7f && !strchr("()<>@,;:\\\"/[]?=", c);
}

/* A pvalue (§2.2): as it is when it is a token, or local@domain of
 * dot-atom and domain characters, else a quoted-string.  Bytes that
 * cannot be in a quoted-string (controls, 8-bit) are written as '?'. */
static void authres_pvalue(struct strbuf *sb, const char *v)
{
	bool token = *v != '\0', addr = false;
	for (const char *p = v; *p; p++) {
		if (*p == '@' && !addr && p != v && p[1]) {
			addr = true;
			continue;
		}
		if (!authres_token_char((unsigned char)*p))
			token = false;
	}
	if (token) {
		(void)strbuf_adds(sb, v);
		return;
	}
	(void)strbuf_addc(sb, '"');
	for (const char *p = v; *p; p++) {
		unsigned char c = (unsigned char)*p;
		if (c == '"' || c == '\\')
			(void)strbuf_addc(sb, '\\');
		(void)strbuf_addc(sb, (c < 0x20 || c > 0x7e) ? '?' : (char)c);
	}
	(void)strbuf_addc(sb, '"');
}

/* A comment's text: parentheses and backslashes dropped, controls and
 * 8-bit as '?', at most 64 characters. */
static void authres_comment(struct strbuf *sb, const char *text)
{
	(void)strbuf_adds(sb, " (");
	for (size_t i = 0; i < 64 && text[i]; i++) {
		unsigned char c = (unsigned char)text[i];
		if (c == '(' || c == ')' || c == '\\')
			continue;
		(void)strbuf_addc(sb, (c < 0x20 || c > 0x7e) ? '?' : (char)c);
	}
	(void)strbuf_addc(sb, ')');
}

static void authres_spf(struct strbuf *sb, const struct authres_input *in)
{
	(void)strbuf_addf(sb, ";\r\n\tspf=%s smtp.%s=", spf_result_name(in->spf),
			  in->spf_identity);
	authres_pvalue(sb, in->spf_sender ? in->spf_sender : "");
}

static void authres_dkim_one(struct strbuf *sb, const struct authres_dkim *d)
{
	(void)strbuf_addf(sb, ";\r\n\tdkim=%s", authres_dkim_result_name(d->result));
	if (d->reason && *d->reason)
		authres_comment(sb, d->reason);
	if (d->domain) {
		(void)strbuf_adds(sb, " header.d=");
		authres_pvalue(sb, d->domain);
	}
	if (d->selector) {
		(void)strbuf_adds(sb, " header.s=");
		authres_pvalue(sb, d->selector);
	}
	if (d->algorithm) {
		(void)strbuf_adds(sb, " header.a=");
		authres_pvalue(sb, d->algorithm);
	}
	if (d->header_b) {
		char b[AUTHRES_B_SHOWN + 1];
		size_t n = strnlen(d->header_b, AUTHRES_B_SHOWN);
		memcpy(b, d->header_b, n);
		b[n] = '\0';
		(void)strbuf_adds(sb, " header.b=");
		authres_pvalue(sb, b);
	}
}

static void authres_dmarc(struct strbuf *sb, const struct authres_input *in)
{
	const struct dmarc_verdict *v = in->dmarc;
	(void)strbuf_addf(sb, ";\r\n\tdmarc=%s", dmarc_result_name(v->result));
	if (v->result == DMARC_RESULT_PASS || v->result == DMARC_RESULT_FAIL)
		(void)strbuf_addf(sb, " (p=%s dis=%s)", dmarc_policy_name(v->policy),
				  dmarc_disposition_name(v->disposition));
	if (in->from_domain) {
		(void)strbuf_adds(sb, " header.from=");
		authres_pvalue(sb, in->from_domain);
	}
}

/* RFC 8617 §10.1: the arc method, the chain's length in a comment, and
 * header.oldest-pass when it passed. */
static void authres_arc(struct strbuf *sb, const struct arc_result *r)
{
	(void)strbuf_addf(sb, ";\r\n\tarc=%s", arc_status_name(r->status));
	if (r->status == ARC_FAIL && *r->reason)
		authres_comment(sb, r->reason);
	else if (r->instances > 0)
		(void)strbuf_addf(sb, " (i=%u)", r->instances);
	if (r->status == ARC_PASS)
		(void)strbuf_addf(sb, " header.oldest-pass=%u", r->oldest_pass);
}

bool authres_build(const struct authres_input *in, char *out, size_t outsz)
{
	struct strbuf sb;
	strbuf_init(&sb, out, outsz);
	(void)strbuf_adds(&sb, "Authentication-Results: ");
	authres_pvalue(&sb, in->authserv_id);
	if (in->spf_checked)
		authres_spf(&sb, in);
	if (in->dkim_checked && in->ndkim == 0) /* §2.7.1: no signature: dkim=none */
		(void)strbuf_adds(&sb, ";\r\n\tdkim=none");
	for (size_t i = 0; in->dkim_checked && i < in->ndkim; i++)
		authres_dkim_one(&sb, &in->dkim[i]);
	if (in->dmarc_checked && in->dmarc)
		authres_dmarc(&sb, in);
	if (in->arc)
		authres_arc(&sb, in->arc);
	if (!in->spf_checked && !in->dkim_checked && !(in->dmarc_checked && in->dmarc) && !in->arc)
		(void)strbuf_adds(&sb, "; none"); /* §2.2: nothing was checked */
	(void)strbuf_adds(&sb, "\r\n");
	return strbuf_ok(&sb);
}

/* ---- reading -------------------------------------------------------------- */

/* Skip folding white space and comments (RFC 5322 §3.2.2), nested up to
 * a bound; returns the new position. */
static size_t authres_skip_cfws(const char *s, size_t len, size_t i)
{
	enum { DEPTH_MAX = 16 };
	unsigned depth = 0;
	while (i < len) {
		char c = s[i];
		if (depth == 0 && (c == ' ' || c == '\t' || c == '\r' || c == '\n')) {
			i++;
		} else if (c == '(') {
			if (++depth > DEPTH_MAX)
				return len;
			i++;
		} else if (depth > 0 && c == ')') {
			depth--;
			i++;
		} else if (depth > 0 && c == '\\' && i + 1 < len) {
			i += 2;
		} else if (depth > 0) {
			i++;
		} else {
			break;
		}
	}
	return i;
}

bool authres_authserv_id(const char *value, size_t len, char *out, size_t outsz)
{
	size_t i = authres_skip_cfws(value, len, 0), n = 0;
	if (i >= len || outsz == 0)
		return false;
	if (value[i] == '"') { /* quoted-string */
		for (i++; i < len && value[i] != '"'; i++) {
			if (value[i] == '\\' && i + 1 < len)
				i++;
			unsigned char c = (unsigned char)value[i];
			if (c < 0x20 || c == 0x7f || n + 1 >= outsz)
				return false; /* a control (a NUL) is no part of a name */
			out[n++] = value[i];
		}
		if (i >= len)
			return false; /* no closing quote */
	} else {
		/* a token; ';' ends it, and so does white space or a comment */
		for (; i < len && authres_token_char((unsigned char)value[i]); i++) {
			if (n + 1 >= outsz)
				return false;
			out[n++] = value[i];
		}
	}
	out[n] = '\0';
	return n > 0;
}

bool authres_claims(const char *field, size_t len, const char *authserv_id)
{
	static const char name[] = "Authentication-Results";
	size_t nlen = sizeof name - 1, i = nlen;
	if (len < nlen || strncasecmp(field, name, nlen) != 0)
		return false;
	while (i < len && (field[i] == ' ' || field[i] == '\t'))
		i++;
	if (i >= len || field[i] != ':')
		return false;
	char id[256];
	return authres_authserv_id(field + i + 1, len - i - 1, id, sizeof id) &&
	       strcasecmp(id, authserv_id) == 0;
}

/* From i, past the next ';' outside comments and quoted strings: the
 * start of the next resinfo, or len. */
static size_t authres_next_resinfo(const char *s, size_t len, size_t i)
{
	bool quoted = false;
	while (i < len) {
		size_t j = quoted ? i : authres_skip_cfws(s, len, i);
		if (j != i) {
			i = j;
			continue;
		}
		if (s[i] == '"')
			quoted = !quoted;
		else if (quoted && s[i] == '\\')
			i++;
		else if (!quoted && s[i] == ';')
			return i + 1;
		i++;
	}
	return len;
}

/* A token at i into out (lower case); the position after it, or
 * SIZE_MAX when there is none or it does not fit. */
static size_t authres_token(const char *s, size_t len, size_t i, char *out, size_t outsz)
{
	size_t n = 0;
	for (; i < len && authres_token_char((unsigned char)s[i]) && s[i] != '='; i++) {
		if (n + 1 >= outsz)
			return SIZE_MAX;
		out[n++] = (char)tolower((unsigned char)s[i]);
	}
	out[n] = '\0';
	return n ? i : SIZE_MAX;
}

bool authres_method_result(const char *value, size_t len, const char *method, char *out,
			   size_t outsz)
{
	size_t i = authres_next_resinfo(value, len, 0);
	while (i < len) {
		char name[32];
		size_t j = authres_token(value, len, authres_skip_cfws(value, len, i), name,
					 sizeof name);
		j = j == SIZE_MAX ? len : authres_skip_cfws(value, len, j);
		if (j < len && value[j] == '=' && strcmp(name, method) == 0)
			return authres_token(value, len, authres_skip_cfws(value, len, j + 1), out,
					     outsz) != SIZE_MAX;
		i = authres_next_resinfo(value, len, i);
	}
	return false;
}

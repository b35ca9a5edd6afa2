/* spf_record: SPF record syntax (RFC 7208 §4.5, §4.6, §5, §6, §12) and
 * macro expansion (§7).  Everything here reads untrusted bytes from DNS:
 * every length is checked, nothing is cut silently. */
#include "mailauth/spf_record.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "lib/strbuf.h"
#include "lib/util.h"

const char *spf_result_name(enum spf_result r)
{
	switch (r) {
	case SPF_NONE: return "none";
	case SPF_NEUTRAL: return "neutral";
	case SPF_PASS: return "pass";
	case SPF_FAIL: return "fail";
	case SPF_SOFTFAIL: return "softfail";
	case SPF_TEMPERROR: return "temperror";
	case SPF_PERMERROR: return "permerror";
	}
	return "permerror";
}

bool spf_record_is_spf(const char *text, size_t len)
{
	/* §4.5: exactly "v=spf1" followed by a space or nothing */
	return len >= 6 && strncasecmp(text, "v=spf1", 6) == 0 && (len == 6 || text[6] == ' ');
}

/* ---- macro strings (§7.1) ------------------------------------------------ */

static bool spf_macro_letter(char c, bool explanation)
{
	switch (tolower((unsigned char)c)) {
	case 's': case 'l': case 'o': case 'd': case 'i': case 'p': case 'h': case 'v':
		return true;
	case 'c': case 'r': case 't':
		return explanation;
	default:
		return false;
	}
}

static bool spf_is_delimiter(char c)
{
	return c && strchr(".-+,/_=", c) != NULL;
}

/* One %{...} body at *p (after the '{'); moves *p past the '}'. */
struct spf_macro_expr {
	char letter;
	bool url_escape;        /* upper-case letter (§7.3) */
	unsigned keep;          /* rightmost parts to keep; 0: all */
	bool reverse;
	char delims[8];         /* "." when none given */
};

static bool spf_macro_expr_parse(const char **pp, const char *end, bool explanation,
				 struct spf_macro_expr *e)
{
	const char *p = *pp;
	memset(e, 0, sizeof *e);
	if (p >= end || !spf_macro_letter(*p, explanation))
		return false;
	e->letter = (char)tolower((unsigned char)*p);
	e->url_escape = isupper((unsigned char)*p) != 0;
	p++;
	if (p < end && isdigit((unsigned char)*p)) {
		unsigned n = 0;
		while (p < end && isdigit((unsigned char)*p)) {
			n = n * 10 + (unsigned)(*p - '0');
			if (n > 128) /* more parts than a name can have */
				return false;
			p++;
		}
		if (n == 0) /* §7.1: the digit transformer counts parts, one at least */
			return false;
		e->keep = n;
	}
	if (p < end && (*p == 'r' || *p == 'R')) {
		e->reverse = true;
		p++;
	}
	size_t nd = 0;
	while (p < end && spf_is_delimiter(*p)) {
		if (!strchr(e->delims, *p) && nd + 1 < sizeof e->delims)
			e->delims[nd++] = *p;
		p++;
	}
	if (nd == 0)
		e->delims[0] = '.';
	if (p >= end || *p != '}')
		return false;
	*pp = p + 1;
	return true;
}

static void spf_ip_dotted(const struct spf_macro_vars *v, struct strbuf *sb)
{
	if (v->family == AF_INET) {
		(void)strbuf_addf(sb, "%u.%u.%u.%u", v->ip[0], v->ip[1], v->ip[2], v->ip[3]);
		return;
	}
	/* §7.3: IPv6 as dot-separated nibbles, most significant first */
	static const char hex[] = "0123456789abcdef";
	for (int i = 0; i < 16; i++) {
		(void)strbuf_addc(sb, hex[v->ip[i] >> 4]);
		(void)strbuf_addc(sb, '.');
		(void)strbuf_addc(sb, hex[v->ip[i] & 15]);
		if (i < 15)
			(void)strbuf_addc(sb, '.');
	}
}

/* The value of a letter into sb (bounded by its storage). */
static void spf_macro_value(const struct spf_macro_vars *v, char letter, struct strbuf *sb)
{
	char ip[INET6_ADDRSTRLEN];
	switch (letter) {
	case 's': (void)strbuf_adds(sb, v->sender); break;
	case 'l': (void)strbuf_adds(sb, v->local); break;
	case 'o': (void)strbuf_adds(sb, v->sender_domain); break;
	case 'd': (void)strbuf_adds(sb, v->domain); break;
	case 'h': (void)strbuf_adds(sb, v->helo); break;
	case 'p': (void)strbuf_adds(sb, v->ptr ? v->ptr : "unknown"); break;
	case 'r': (void)strbuf_adds(sb, v->receiver ? v->receiver : "unknown"); break;
	case 'v': (void)strbuf_adds(sb, v->family == AF_INET ? "in-addr" : "ip6"); break;
	case 't': (void)strbuf_addf(sb, "%lld", (long long)v->now); break;
	case 'i': spf_ip_dotted(v, sb); break;
	case 'c':
		if (inet_ntop(v->family, v->ip, ip, sizeof ip))
			(void)strbuf_adds(sb, ip);
		break;
	default: break;
	}
}

/* Split value at the delimiters, reverse, keep the rightmost parts, join
 * with '.' (§7.3). */
static void spf_macro_transform(const char *value, const struct spf_macro_expr *e,
				struct strbuf *out)
{
	enum { PARTS_MAX = 256 };
	const char *start[PARTS_MAX];
	size_t len[PARTS_MAX], n = 0;
	const char *p = value;
	for (;;) {
		size_t l = strcspn(p, e->delims);
		if (n == PARTS_MAX) /* a value from SPF_EXPAND_MAX bytes has fewer */
			break;
		start[n] = p;
		len[n++] = l;
		if (!p[l])
			break;
		p += l + 1;
	}
	size_t first = 0;
	if (e->reverse)
		for (size_t i = 0; i < n / 2; i++) {
			const char *ts = start[i];
			size_t tl = len[i];
			start[i] = start[n - 1 - i];
			len[i] = len[n - 1 - i];
			start[n - 1 - i] = ts;
			len[n - 1 - i] = tl;
		}
	if (e->keep && e->keep < n)
		first = n - e->keep;
	for (size_t i = first; i < n; i++) {
		if (i > first)
			(void)strbuf_addc(out, '.');
		(void)strbuf_add(out, start[i], len[i]);
	}
}

static void spf_url_escape(const char *s, struct strbuf *out)
{
	/* §7.3: RFC 3986 unreserved characters stay, the rest is %XX */
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~')
			(void)strbuf_addc(out, (char)c);
		else
			(void)strbuf_addf(out, "%%%02X", c);
	}
}

static enum spf_macro_status spf_macro_one(const char **pp, const char *end,
					   const struct spf_macro_vars *v, bool explanation,
					   struct strbuf *out)
{
	struct spf_macro_expr e;
	if (!spf_macro_expr_parse(pp, end, explanation, &e))
		return SPF_MACRO_SYNTAX;
	if (!v) /* syntax check only */
		return SPF_MACRO_OK;
	if (e.letter == 'p' && !v->ptr)
		return SPF_MACRO_NEEDS_PTR;
	char raw[SPF_EXPAND_MAX], done[SPF_EXPAND_MAX];
	struct strbuf rb, db;
	strbuf_init(&rb, raw, sizeof raw);
	spf_macro_value(v, e.letter, &rb);
	strbuf_init(&db, done, sizeof done);
	spf_macro_transform(strbuf_str(&rb), &e, &db);
	if (!strbuf_ok(&rb) || !strbuf_ok(&db))
		return SPF_MACRO_TOO_LONG;
	if (e.url_escape)
		spf_url_escape(done, out);
	else
		(void)strbuf_adds(out, done);
	return SPF_MACRO_OK;
}

/* v NULL: check the syntax only. */
static enum spf_macro_status spf_macro_walk(const char *spec, size_t len,
					    const struct spf_macro_vars *v, bool explanation,
					    struct strbuf *out)
{
	const char *p = spec, *end = spec + len;
	while (p < end) {
		unsigned char c = (unsigned char)*p;
		if (c != '%') {
			/* macro-literal: visible characters (§7.1); an explanation
			 * may hold spaces too */
			if (c < 0x20 || c > 0x7e || (c == ' ' && !explanation))
				return SPF_MACRO_SYNTAX;
			(void)strbuf_addc(out, (char)c);
			p++;
			continue;
		}
		if (++p >= end)
			return SPF_MACRO_SYNTAX;
		char k = *p++;
		enum spf_macro_status st = SPF_MACRO_OK;
		if (k == '%')
			(void)strbuf_addc(out, '%');
		else if (k == '_')
			(void)strbuf_addc(out, ' ');
		else if (k == '-')
			(void)strbuf_adds(out, "%20");
		else if (k == '{')
			st = spf_macro_one(&p, end, v, explanation, out);
		else
			return SPF_MACRO_SYNTAX;
		if (st != SPF_MACRO_OK)
			return st;
	}
	return strbuf_ok(out) ? SPF_MACRO_OK : SPF_MACRO_TOO_LONG;
}

enum spf_macro_status spf_macro_expand(const char *spec, size_t len,
				       const struct spf_macro_vars *v, bool explanation,
				       char *out, size_t outsz)
{
	char scratch[1];
	struct strbuf sb;
	if (!v)
		strbuf_init(&sb, scratch, sizeof scratch); /* syntax only: nothing kept */
	else
		strbuf_init(&sb, out, outsz);
	enum spf_macro_status st = spf_macro_walk(spec, len, v, explanation, &sb);
	return (!v && st == SPF_MACRO_TOO_LONG) ? SPF_MACRO_OK : st;
}

enum spf_macro_status spf_expand_domain(const char *spec, const struct spf_macro_vars *v,
					char out[SPF_NAME_MAX + 1])
{
	char buf[SPF_EXPAND_MAX];
	enum spf_macro_status st = spf_macro_expand(spec, strlen(spec), v, false, buf, sizeof buf);
	if (st != SPF_MACRO_OK)
		return st;
	size_t n = strlen(buf);
	if (n > 0 && buf[n - 1] == '.')
		buf[--n] = '\0';
	const char *p = buf;
	/* §7.3: over 253 characters, labels go from the left until it fits */
	while (strlen(p) > SPF_NAME_MAX) {
		const char *dot = strchr(p, '.');
		if (!dot)
			return SPF_MACRO_TOO_LONG;
		p = dot + 1;
	}
	xsnprintf(out, SPF_NAME_MAX + 1, "%s", p); /* fits: checked just above */
	return SPF_MACRO_OK;
}

bool spf_domain_labels_ok(const char *name)
{
	size_t n = strlen(name), label = 0;
	if (n == 0 || n > SPF_NAME_MAX || name[0] == '.')
		return false;
	for (size_t i = 0; i < n; i++) {
		if (name[i] != '.')
			label++;
		else if (label == 0)
			return false;
		else
			label = 0;
		if (label > 63)
			return false;
	}
	return true;
}

bool spf_domain_valid(const char *name)
{
	size_t n = strlen(name), label = 0, labels = 0;
	if (n == 0 || n > SPF_NAME_MAX || name[0] == '.')
		return false;
	for (size_t i = 0; i < n; i++) {
		if (name[i] == '.') {
			if (label == 0)
				return false;
			labels++;
			label = 0;
		} else if (++label > 63) {
			return false;
		}
	}
	if (label > 0)
		labels++;
	return labels >= 2;
}

/* ---- domain-spec (§7.1: macro-string domain-end) ------------------------ */

static bool spf_toplabel_ok(const char *s, size_t n)
{
	/* toplabel = ( *alphanum ALPHA *alphanum ) /
	 *            ( 1*alphanum "-" *( alphanum / "-" ) alphanum ) */
	if (n == 0 || !isalnum((unsigned char)s[0]) || !isalnum((unsigned char)s[n - 1]))
		return false;
	bool alpha = false, hyphen = false;
	for (size_t i = 0; i < n; i++) {
		if (isalpha((unsigned char)s[i]))
			alpha = true;
		else if (s[i] == '-')
			hyphen = true;
		else if (!isdigit((unsigned char)s[i]))
			return false;
	}
	return alpha || hyphen;
}

static bool spf_domain_end_ok(const char *s, size_t n)
{
	if (n >= 1 && s[n - 1] == '}')
		return true; /* ends in a macro-expand (its syntax checked apart) */
	if (n >= 2 && s[n - 2] == '%' && strchr("%_-", s[n - 1]))
		return n < 3 || s[n - 3] != '%';
	if (n > 0 && s[n - 1] == '.')
		n--;
	size_t i = n;
	while (i > 0 && s[i - 1] != '.')
		i--;
	if (i == 0) /* domain-end needs "." toplabel */
		return false;
	return spf_toplabel_ok(s + i, n - i);
}

static bool spf_domain_spec_ok(const char *s, size_t n)
{
	return n > 0 && spf_macro_expand(s, n, NULL, false, NULL, 0) == SPF_MACRO_OK &&
	       spf_domain_end_ok(s, n);
}

/* ---- terms --------------------------------------------------------------- */

/* A cidr length "/N" with no leading zero (§5.6). */
static bool spf_cidr_number(const char *s, size_t n, unsigned max, unsigned *out)
{
	if (n == 0 || n > 3 || (n > 1 && s[0] == '0'))
		return false;
	unsigned v = 0;
	for (size_t i = 0; i < n; i++) {
		if (!isdigit((unsigned char)s[i]))
			return false;
		v = v * 10 + (unsigned)(s[i] - '0');
	}
	if (v > max)
		return false;
	*out = v;
	return true;
}

/* Where a trailing "/digits" starts in s[0..n), or n when none. */
static size_t spf_trailing_cidr(const char *s, size_t n)
{
	size_t i = n;
	while (i > 0 && isdigit((unsigned char)s[i - 1]))
		i--;
	return (i < n && i > 0 && s[i - 1] == '/') ? i - 1 : n;
}

/* dual-cidr-length at the end of arg (§5.6): "/N", "//N" or "/N//N";
 * *n shrinks to what is left before it. */
static bool spf_dual_cidr(const char *arg, size_t *n, struct spf_term *t)
{
	size_t at = spf_trailing_cidr(arg, *n);
	if (at < *n && at > 0 && arg[at - 1] == '/') {
		if (!spf_cidr_number(arg + at + 1, *n - at - 1, 128, &t->cidr6))
			return false;
		*n = at - 1;
		at = spf_trailing_cidr(arg, *n);
	}
	if (at < *n) {
		if (!spf_cidr_number(arg + at + 1, *n - at - 1, 32, &t->cidr4))
			return false;
		*n = at;
	}
	return true;
}

static bool spf_take_domain(const char *arg, size_t n, bool required, struct spf_term *t)
{
	if (n == 0)
		return !required;
	if (arg[0] != ':' || !spf_domain_spec_ok(arg + 1, n - 1))
		return false;
	t->domain_spec = xstrndup(arg + 1, n - 1);
	return true;
}

static bool spf_take_ip(const char *arg, size_t n, int family, struct spf_term *t)
{
	char text[INET6_ADDRSTRLEN + 1];
	unsigned max = family == AF_INET ? 32 : 128;
	unsigned *cidr = family == AF_INET ? &t->cidr4 : &t->cidr6;
	if (n < 2 || arg[0] != ':')
		return false;
	arg++;
	n--;
	size_t at = spf_trailing_cidr(arg, n);
	if (at < n && !spf_cidr_number(arg + at + 1, n - at - 1, max, cidr))
		return false;
	if (at >= sizeof text)
		return false;
	memcpy(text, arg, at);
	text[at] = '\0';
	return inet_pton(family, text, t->ip) == 1;
}

static const struct {
	const char *name;
	enum spf_mech mech;
} spf_mechs[] = {
	{"all", SPF_MECH_ALL}, {"include", SPF_MECH_INCLUDE}, {"a", SPF_MECH_A},
	{"mx", SPF_MECH_MX}, {"ptr", SPF_MECH_PTR}, {"ip4", SPF_MECH_IP4},
	{"ip6", SPF_MECH_IP6}, {"exists", SPF_MECH_EXISTS},
};

static bool spf_mech_args(struct spf_term *t, const char *arg, size_t n)
{
	switch (t->mech) {
	case SPF_MECH_ALL:
		return n == 0;
	case SPF_MECH_INCLUDE:
	case SPF_MECH_EXISTS:
		return spf_take_domain(arg, n, true, t);
	case SPF_MECH_A:
	case SPF_MECH_MX:
		return spf_dual_cidr(arg, &n, t) && spf_take_domain(arg, n, false, t);
	case SPF_MECH_PTR:
		return spf_take_domain(arg, n, false, t);
	case SPF_MECH_IP4:
		return spf_take_ip(arg, n, AF_INET, t);
	case SPF_MECH_IP6:
		return spf_take_ip(arg, n, AF_INET6, t);
	}
	return false;
}

static bool spf_directive(const char *s, size_t n, struct spf_term *t, char *why, size_t whysz)
{
	memset(t, 0, sizeof *t);
	t->qualifier = SPF_PASS;
	t->cidr4 = 32;
	t->cidr6 = 128;
	switch (n ? s[0] : 0) {
	case '+': t->qualifier = SPF_PASS; s++; n--; break;
	case '-': t->qualifier = SPF_FAIL; s++; n--; break;
	case '~': t->qualifier = SPF_SOFTFAIL; s++; n--; break;
	case '?': t->qualifier = SPF_NEUTRAL; s++; n--; break;
	default: break;
	}
	size_t name = 0;
	while (name < n && isalnum((unsigned char)s[name]))
		name++;
	for (size_t i = 0; i < ARRAY_LEN(spf_mechs); i++) {
		if (strlen(spf_mechs[i].name) != name || strncasecmp(s, spf_mechs[i].name, name) != 0)
			continue;
		t->mech = spf_mechs[i].mech;
		if (spf_mech_args(t, s + name, n - name))
			return true;
		free(t->domain_spec);
		t->domain_spec = NULL;
		errfmt(why, whysz, "bad argument to %s", spf_mechs[i].name);
		return false;
	}
	errfmt(why, whysz, "unknown mechanism");
	return false;
}

/* name = ALPHA *( ALPHA / DIGIT / "-" / "_" / "." ) (§12); its length, or
 * 0 when s does not start with name "=". */
static size_t spf_modifier_name(const char *s, size_t n)
{
	if (n == 0 || !isalpha((unsigned char)s[0]))
		return 0;
	size_t i = 1;
	while (i < n && (isalnum((unsigned char)s[i]) || strchr("-_.", s[i])))
		i++;
	return (i < n && s[i] == '=') ? i : 0;
}

static bool spf_modifier(struct spf_record *rec, const char *s, size_t n, size_t name, char *why,
			 size_t whysz)
{
	const char *val = s + name + 1;
	size_t vn = n - name - 1;
	char **slot = NULL;
	if (name == 8 && strncasecmp(s, "redirect", 8) == 0)
		slot = &rec->redirect;
	else if (name == 3 && strncasecmp(s, "exp", 3) == 0)
		slot = &rec->exp;
	if (!slot) { /* §6: unknown modifiers are ignored, but must be macro-strings */
		if (spf_macro_expand(val, vn, NULL, false, NULL, 0) == SPF_MACRO_OK)
			return true;
		errfmt(why, whysz, "bad value of a modifier");
		return false;
	}
	if (*slot) { /* §6: redirect and exp at most once each */
		errfmt(why, whysz, "%s given twice", slot == &rec->redirect ? "redirect" : "exp");
		return false;
	}
	if (!spf_domain_spec_ok(val, vn)) {
		errfmt(why, whysz, "bad domain in %s", slot == &rec->redirect ? "redirect" : "exp");
		return false;
	}
	*slot = xstrndup(val, vn);
	return true;
}

static bool spf_term(struct spf_record *rec, const char *s, size_t n, char *why, size_t whysz)
{
	size_t name = spf_modifier_name(s, n);
	if (name)
		return spf_modifier(rec, s, n, name, why, whysz);
	if (rec->nterms == SPF_TERMS_MAX) {
		errfmt(why, whysz, "more than %d mechanisms", SPF_TERMS_MAX);
		return false;
	}
	struct spf_term t;
	if (!spf_directive(s, n, &t, why, whysz))
		return false;
	*(struct spf_term *)xappend(&rec->terms, &rec->nterms, sizeof t) = t;
	return true;
}

bool spf_record_parse(const char *text, size_t len, struct spf_record *rec, char *why,
		      size_t whysz)
{
	struct spf_record r = {0};
	if (len > SPF_RECORD_MAX || memchr(text, '\0', len)) {
		errfmt(why, whysz, len > SPF_RECORD_MAX ? "record too long" : "NUL in record");
		return false;
	}
	if (!spf_record_is_spf(text, len)) {
		errfmt(why, whysz, "not an SPF record");
		return false;
	}
	size_t i = 6;
	while (i < len) {
		while (i < len && text[i] == ' ')
			i++;
		size_t start = i;
		while (i < len && text[i] != ' ')
			i++;
		if (i > start && !spf_term(&r, text + start, i - start, why, whysz)) {
			spf_record_free(&r);
			return false;
		}
	}
	*rec = r;
	return true;
}

void spf_record_free(struct spf_record *rec)
{
	for (size_t i = 0; i < rec->nterms; i++)
		free(rec->terms[i].domain_spec);
	free(rec->terms);
	free(rec->redirect);
	free(rec->exp);
	memset(rec, 0, sizeof *rec);
}

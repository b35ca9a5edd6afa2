/* smtp_addr: RFC 5321 §4.1.2 Reverse-path, Forward-path, A-d-l, Mailbox,
 * Local-part, Domain and esmtp-param; §4.1.3 address literals; §4.5.3.1
 * size limits; RFC 6531 §3.3 UTF-8 in local parts and domains; RFC 3461
 * §4 xtext for the AUTH= parameter of RFC 4954 §5. */
#include "proto/smtp/smtp_addr.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "lib/util.h"

enum {
	SMTP_LABEL_MAX = 63,    /* RFC 1035 §2.3.4 */
	/* Longest literal content worth handing to inet_pton: "IPv6:" plus
	 * the 45 characters of the longest IPv6-v4-full form. */
	SMTP_LITERAL_MAX = 64,
};

/* A piece of the input, not yet copied. */
struct span {
	const char *p;
	size_t n;
};

/* What parsing a path found.  Nothing is allocated until the whole
 * argument has been checked, so an error never has anything to free. */
struct path_parse {
	bool null;              /* <> */
	bool postmaster;        /* the bare <Postmaster> of RCPT */
	bool quoted;            /* Local-part is a Quoted-string */
	bool literal;           /* address-literal instead of Domain */
	bool route;             /* an A-d-l was skipped */
	bool too_long;          /* syntax fine but a part exceeds its limit */
	struct span local, domain;
};

static bool is_alpha(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool is_digit(unsigned char c)
{
	return c >= '0' && c <= '9';
}

/* atext (RFC 5322 §3.2.3) plus UTF8-non-ascii (RFC 6531 §3.3).  Bytes
 * >= 0x80 were checked to be well-formed UTF-8 beforehand. */
static bool is_atext(unsigned char c)
{
	return is_alpha(c) || is_digit(c) || c >= 0x80 ||
	       (c != '\0' && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL);
}

/* Let-dig / Ldh-str characters of a sub-domain, plus U-label bytes. */
static bool is_ldh(unsigned char c)
{
	return is_alpha(c) || is_digit(c) || c == '-' || c >= 0x80;
}

/* esmtp-value = 1*(%d33-60 / %d62-126), §4.1.2 */
static bool is_value_char(unsigned char c)
{
	return c >= 33 && c <= 126 && c != '=';
}

/* Length of the well-formed UTF-8 sequence at s (RFC 3629 §4), 0 when it
 * is not one: overlong forms, surrogates, code points past U+10FFFF and
 * the C1 controls are refused.  Stops at a NUL, which is never a
 * continuation byte. */
static size_t utf8_len(const unsigned char *s)
{
	unsigned cp, min;
	size_t n;
	if (s[0] < 0x80)
		return 1;
	if (s[0] >= 0xc2 && s[0] <= 0xdf) {
		n = 2, cp = s[0] & 0x1fu, min = 0x80;
	} else if (s[0] >= 0xe0 && s[0] <= 0xef) {
		n = 3, cp = s[0] & 0x0fu, min = 0x800;
	} else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
		n = 4, cp = s[0] & 0x07u, min = 0x10000;
	} else {
		return 0;
	}
	for (size_t i = 1; i < n; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (s[i] & 0x3fu);
	}
	if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff) || cp <= 0x9f)
		return 0;
	return n;
}

/* No control characters (< 0x20, 0x7f) and only well-formed UTF-8. */
static bool smtp_addr_text_ok(const char *str)
{
	const unsigned char *s = (const unsigned char *)str;
	while (*s) {
		if (*s < 0x20 || *s == 0x7f)
			return false;
		size_t n = utf8_len(s);
		if (n == 0)
			return false;
		s += n;
	}
	return true;
}

static bool span_has_8bit(const char *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)p[i] >= 0x80)
			return true;
	return false;
}

/* Dot-string = Atom *("." Atom), Atom = 1*atext */
static bool parse_dot_string(const char **pp, struct span *out)
{
	const char *p = *pp;
	for (;;) {
		const char *atom = p;
		while (is_atext((unsigned char)*p))
			p++;
		if (p == atom)
			return false;
		if (*p != '.')
			break;
		p++;
	}
	out->p = *pp;
	out->n = (size_t)(p - *pp);
	*pp = p;
	return true;
}

/* Quoted-string = DQUOTE *QcontentSMTP DQUOTE, with quoted-pairSMTP =
 * "\" %d32-126.  The empty "" is refused: a mailbox without a name is
 * never one we deliver to. */
static bool parse_quoted(const char **pp, struct span *out)
{
	const unsigned char *start = (const unsigned char *)*pp;
	const unsigned char *p = start + 1;
	while (*p != '"') {
		if (*p == '\\') {
			if (p[1] < 32 || p[1] > 126)
				return false;
			p += 2;
			continue;
		}
		if (*p < 32 || *p == 127) /* includes the NUL of an unterminated string */
			return false;
		p++;
	}
	p++;
	if (p - start == 2)
		return false;
	out->p = *pp;
	out->n = (size_t)(p - start);
	*pp = (const char *)p;
	return true;
}

/* Domain = sub-domain *("." sub-domain); sub-domain = Let-dig [Ldh-str]
 * (no leading or trailing hyphen) or a U-label.  One trailing dot (a
 * fully qualified name) is accepted and kept. */
static bool parse_domain(const char **pp, struct span *out, struct path_parse *st)
{
	const char *p = *pp;
	for (;;) {
		const char *label = p;
		while (is_ldh((unsigned char)*p))
			p++;
		if (p == label || label[0] == '-' || p[-1] == '-')
			return false;
		if ((size_t)(p - label) > SMTP_LABEL_MAX)
			st->too_long = true;
		if (*p != '.')
			break;
		p++;
		if (!is_ldh((unsigned char)*p))
			break; /* the trailing dot */
	}
	out->p = *pp;
	out->n = (size_t)(p - *pp);
	if (out->n > SMTP_DOMAIN_MAX)
		st->too_long = true;
	*pp = p;
	return true;
}

/* address-literal = "[" (IPv4-address-literal / IPv6-address-literal) "]"
 * (§4.1.3); General-address-literal tags are refused. */
static bool parse_literal(const char **pp, struct span *out)
{
	const char *start = *pp, *close = start + 1;
	while (*close && *close != ']' && close - start <= SMTP_LITERAL_MAX)
		close++;
	if (*close != ']')
		return false;
	char buf[SMTP_LITERAL_MAX + 1];
	size_t n = (size_t)(close - start - 1);
	memcpy(buf, start + 1, n);
	buf[n] = '\0';
	unsigned char bin[sizeof(struct in6_addr)];
	int ok;
	if (n > 5 && strncasecmp(buf, "IPv6:", 5) == 0)
		ok = inet_pton(AF_INET6, buf + 5, bin);
	else
		ok = inet_pton(AF_INET, buf, bin);
	if (ok != 1)
		return false;
	out->p = start;
	out->n = n + 2;
	*pp = close + 1;
	return true;
}

static bool is_postmaster(const struct span *local)
{
	return local->n == 10 && strncasecmp(local->p, "postmaster", 10) == 0;
}

/* Mailbox = Local-part "@" (Domain / address-literal).  With
 * allow_postmaster, a bare "Postmaster" followed by ">" is accepted too
 * (the RCPT form of §4.1.1.3). */
static bool parse_mailbox(const char **pp, struct path_parse *st, bool allow_postmaster)
{
	const char *p = *pp;
	if (*p == '"') {
		if (!parse_quoted(&p, &st->local))
			return false;
		st->quoted = true;
	} else if (!parse_dot_string(&p, &st->local)) {
		return false;
	}
	if (st->local.n > SMTP_LOCAL_MAX)
		st->too_long = true;
	if (*p != '@') {
		if (!allow_postmaster || st->quoted || *p != '>' || !is_postmaster(&st->local))
			return false;
		st->postmaster = true;
		*pp = p;
		return true;
	}
	p++;
	if (*p == '[') {
		if (!parse_literal(&p, &st->domain))
			return false;
		st->literal = true;
	} else if (!parse_domain(&p, &st->domain, st)) {
		return false;
	}
	*pp = p;
	return true;
}

/* A-d-l = At-domain *( "," At-domain ) ":"; At-domain = "@" Domain.  The
 * route is checked and thrown away (§4.1.1.3, Appendix C). */
static bool parse_route(const char **pp, struct path_parse *st)
{
	const char *p = *pp;
	for (;;) {
		struct span hop;
		if (*p != '@')
			return false;
		p++;
		if (!parse_domain(&p, &hop, st))
			return false;
		if (*p == ':')
			break;
		if (*p != ',')
			return false;
		p++;
	}
	st->route = true;
	*pp = p + 1;
	return true;
}

/* Path = "<" [ A-d-l ":" ] Mailbox ">", or "<>".  *pp is at the "<". */
static bool parse_path(const char **pp, struct path_parse *st, bool is_rcpt)
{
	const char *p = *pp + 1;
	if (*p == '>') {
		st->null = true;
	} else {
		if (*p == '@' && !parse_route(&p, st))
			return false;
		if (!parse_mailbox(&p, st, is_rcpt && !st->route))
			return false;
		if (*p != '>')
			return false;
	}
	p++;
	if ((size_t)(p - *pp) > SMTP_PATH_MAX)
		st->too_long = true;
	*pp = p;
	return true;
}

/* esmtp-param *(SP esmtp-param); several spaces and trailing spaces are
 * tolerated.  Fills kw[] and val[] (val.p NULL when there is no value). */
static bool parse_params(const char *p, struct span *kw, struct span *val, size_t *n)
{
	*n = 0;
	for (;;) {
		while (*p == ' ')
			p++;
		if (*p == '\0')
			return true;
		if (*n == SMTP_PARAMS_MAX)
			return false;
		struct span k = { p, 0 }, v = { NULL, 0 };
		if (!is_alpha((unsigned char)*p) && !is_digit((unsigned char)*p))
			return false;
		while (is_alpha((unsigned char)*p) || is_digit((unsigned char)*p) || *p == '-')
			p++;
		k.n = (size_t)(p - k.p);
		if (*p == '=') {
			v.p = ++p;
			while (is_value_char((unsigned char)*p))
				p++;
			v.n = (size_t)(p - v.p);
			if (v.n == 0)
				return false;
		}
		if (*p != ' ' && *p != '\0')
			return false;
		for (size_t i = 0; i < *n; i++)
			if (kw[i].n == k.n && strncasecmp(kw[i].p, k.p, k.n) == 0)
				return false;
		kw[*n] = k;
		val[*n] = v;
		(*n)++;
	}
}

/* Copy of a Quoted-string without the quotes and with quoted-pairs
 * resolved. */
static char *unquote(const struct span *q)
{
	char *out = xmalloc(q->n);
	size_t o = 0;
	for (size_t i = 1; i + 1 < q->n; i++) {
		if (q->p[i] == '\\')
			i++;
		out[o++] = q->p[i];
	}
	out[o] = '\0';
	return out;
}

static char *join_at(const struct span *local, const struct span *domain)
{
	char *s = xmalloc(local->n + 1 + domain->n + 1);
	memcpy(s, local->p, local->n);
	s[local->n] = '@';
	memcpy(s + local->n + 1, domain->p, domain->n);
	s[local->n + 1 + domain->n] = '\0';
	return s;
}

/* esmtp-keyword in upper case; it is ASCII by construction. */
static char *upper_dup(const struct span *k)
{
	char *s = xstrndup(k->p, k->n);
	for (char *c = s; *c; c++)
		if (*c >= 'a' && *c <= 'z')
			*c = (char)(*c - 'a' + 'A');
	return s;
}

static void smtp_addr_fill(struct smtp_addr *addr, const struct path_parse *st, bool utf8)
{
	if (st->null) {
		addr->null = true;
		addr->text = xstrdup("");
		return;
	}
	addr->local = xstrndup(st->local.p, st->local.n);
	addr->local_unquoted = st->quoted ? unquote(&st->local) : xstrdup(addr->local);
	if (st->postmaster) {
		addr->text = xstrdup(addr->local);
	} else {
		addr->domain = xstrndup(st->domain.p, st->domain.n);
		addr->text = join_at(&st->local, &st->domain);
	}
	addr->literal = st->literal;
	addr->route_stripped = st->route;
	addr->utf8 = utf8;
}

enum smtp_addr_result smtp_addr_parse_arg(const char *arg, bool is_rcpt, struct smtp_addr *addr,
					  struct smtp_param *params, size_t *nparams)
{
	memset(addr, 0, sizeof(*addr));
	if (nparams)
		*nparams = 0;
	const char *prefix = is_rcpt ? "TO:" : "FROM:";
	size_t plen = strlen(prefix);
	if (!arg || strncasecmp(arg, prefix, plen) != 0)
		return SMTP_ADDR_BAD_PREFIX;
	const char *p = arg + plen;
	if (!smtp_addr_text_ok(p))
		return SMTP_ADDR_BAD_SYNTAX;
	if (*p == ' ') /* one space after the colon: a common client bug */
		p++;
	if (*p != '<')
		return SMTP_ADDR_BAD_SYNTAX; /* no bare addresses, §4.1.2 */
	struct path_parse st = { 0 };
	const char *path = p;
	if (!parse_path(&p, &st, is_rcpt) || (*p != '\0' && *p != ' '))
		return SMTP_ADDR_BAD_SYNTAX;
	if (st.null && is_rcpt)
		return SMTP_ADDR_NULL_NOT_ALLOWED;
	if (st.too_long)
		return SMTP_ADDR_TOO_LONG;

	struct span kw[SMTP_PARAMS_MAX], val[SMTP_PARAMS_MAX];
	size_t n;
	if (!parse_params(p, kw, val, &n) || (n > 0 && (!params || !nparams)))
		return SMTP_ADDR_BAD_PARAM;

	smtp_addr_fill(addr, &st, span_has_8bit(path, (size_t)(p - path)));
	for (size_t i = 0; i < n; i++) {
		params[i].keyword = upper_dup(&kw[i]);
		params[i].value = val[i].p ? xstrndup(val[i].p, val[i].n) : NULL;
	}
	if (nparams)
		*nparams = n;
	return SMTP_ADDR_OK;
}

/* The path limit applies here too, to the address as it would be written
 * in a path: one that could never appear in MAIL or RCPT is refused. */
enum smtp_addr_result smtp_addr_parse(const char *s, struct smtp_addr *addr)
{
	memset(addr, 0, sizeof(*addr));
	if (!s || !smtp_addr_text_ok(s))
		return SMTP_ADDR_BAD_SYNTAX;
	struct path_parse st = { 0 };
	const char *p = s;
	if (*p == '<') {
		if (!parse_path(&p, &st, false))
			return SMTP_ADDR_BAD_SYNTAX;
	} else {
		if (!parse_mailbox(&p, &st, false))
			return SMTP_ADDR_BAD_SYNTAX;
		if ((size_t)(p - s) + 2 > SMTP_PATH_MAX)
			st.too_long = true;
	}
	if (*p != '\0')
		return SMTP_ADDR_BAD_SYNTAX;
	if (st.null)
		return SMTP_ADDR_NULL_NOT_ALLOWED;
	if (st.too_long)
		return SMTP_ADDR_TOO_LONG;
	smtp_addr_fill(addr, &st, span_has_8bit(s, (size_t)(p - s)));
	return SMTP_ADDR_OK;
}

static int hex_value(unsigned char c)
{
	if (is_digit(c))
		return c - '0';
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	if (c >= 'a' && c <= 'f') /* RFC 3461 asks for upper case; lower is unambiguous */
		return c - 'a' + 10;
	return -1;
}

/* xtext = *( xchar / hexchar ): xchar is "!" to "~" but "+" and "=",
 * hexchar is "+" and two hex digits (RFC 3461 §4).  Decodes into out
 * (outsz with the NUL); false when malformed, when it does not fit, or
 * when it decodes to a NUL, which would cut the string. */
static bool xtext_decode(const char *in, char *out, size_t outsz)
{
	size_t o = 0;
	for (const unsigned char *p = (const unsigned char *)in; *p; p++) {
		int c = *p;
		if (c == '+') {
			int hi = hex_value(p[1]);
			int lo = hi < 0 ? -1 : hex_value(p[2]);
			if (lo < 0)
				return false;
			c = hi << 4 | lo;
			p += 2;
			if (c == 0)
				return false;
		} else if (c < '!' || c > '~' || c == '=') {
			return false;
		}
		if (o + 1 >= outsz)
			return false;
		out[o++] = (char)c;
	}
	out[o] = '\0';
	return true;
}

enum smtp_addr_result smtp_addr_parse_auth_param(const char *xtext, struct smtp_addr *addr)
{
	char decoded[SMTP_PATH_MAX + 1] = { 0 }; /* zeroed for clang-tidy's analyzer */
	memset(addr, 0, sizeof(*addr));
	if (!xtext || !xtext_decode(xtext, decoded, sizeof decoded))
		return SMTP_ADDR_BAD_PARAM;
	if (strcmp(decoded, "<>") == 0) {
		addr->null = true;
		addr->text = xstrdup("");
		return SMTP_ADDR_OK;
	}
	if (smtp_addr_parse(decoded, addr) != SMTP_ADDR_OK)
		return SMTP_ADDR_BAD_PARAM; /* nothing allocated on error */
	return SMTP_ADDR_OK;
}

void smtp_addr_clear(struct smtp_addr *addr)
{
	if (!addr)
		return;
	free(addr->local);
	free(addr->local_unquoted);
	free(addr->domain);
	free(addr->text);
	memset(addr, 0, sizeof(*addr));
}

void smtp_params_clear(struct smtp_param *params, size_t n)
{
	if (!params)
		return;
	for (size_t i = 0; i < n; i++) {
		free(params[i].keyword);
		free(params[i].value);
		params[i].keyword = NULL;
		params[i].value = NULL;
	}
}

char *smtp_domain_normalize(const char *domain)
{
	if (!domain)
		return NULL;
	char *d = str_lower(xstrdup(domain));
	size_t n = strlen(d);
	if (n > 0 && d[n - 1] == '.')
		d[n - 1] = '\0';
	return d;
}

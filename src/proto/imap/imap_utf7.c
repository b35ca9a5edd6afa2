/* imap_utf7: modified UTF-7 (RFC 3501 §5.1.3: RFC 2152's UTF-7 with "&"
 * for "+", "," for "/" in base64, printable ASCII but "&" as itself)
 * to and from UTF-8 (RFC 3629), for RFC 6855's UTF8=ACCEPT. */
#include "proto/imap/imap_utf7.h"

#include <stdint.h>
#include <string.h>

#include "lib/strbuf.h"

static const char imap_b64[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,";

static bool imap_utf7_direct(uint32_t c)
{
	return c >= 0x20 && c <= 0x7e;
}

/* ---- UTF-8 -------------------------------------------------------------------- */

/* One code point of valid UTF-8 at *p, which moves past it; false at a
 * malformed sequence. */
static bool imap_utf8_next(const unsigned char **p, uint32_t *out)
{
	const unsigned char *s = *p;
	uint32_t c = s[0];
	size_t n;
	uint32_t min;
	if (c < 0x80) {
		n = 0;
		min = 0;
	} else if ((c & 0xe0) == 0xc0) {
		n = 1;
		c &= 0x1f;
		min = 0x80;
	} else if ((c & 0xf0) == 0xe0) {
		n = 2;
		c &= 0x0f;
		min = 0x800;
	} else if ((c & 0xf8) == 0xf0) {
		n = 3;
		c &= 0x07;
		min = 0x10000;
	} else {
		return false;
	}
	for (size_t i = 1; i <= n; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return false;
		c = (c << 6) | (s[i] & 0x3f);
	}
	if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
		return false;
	*out = c;
	*p = s + n + 1;
	return true;
}

static void imap_utf8_put(struct strbuf *b, uint32_t c)
{
	char u[4];
	size_t n;
	if (c < 0x80) {
		u[0] = (char)c;
		n = 1;
	} else if (c < 0x800) {
		u[0] = (char)(0xc0 | (c >> 6));
		u[1] = (char)(0x80 | (c & 0x3f));
		n = 2;
	} else if (c < 0x10000) {
		u[0] = (char)(0xe0 | (c >> 12));
		u[1] = (char)(0x80 | ((c >> 6) & 0x3f));
		u[2] = (char)(0x80 | (c & 0x3f));
		n = 3;
	} else {
		u[0] = (char)(0xf0 | (c >> 18));
		u[1] = (char)(0x80 | ((c >> 12) & 0x3f));
		u[2] = (char)(0x80 | ((c >> 6) & 0x3f));
		u[3] = (char)(0x80 | (c & 0x3f));
		n = 4;
	}
	strbuf_add(b, u, n);
}

/* ---- encoding ------------------------------------------------------------------- */

struct imap_b64_run {
	uint32_t bits;          /* pending bits, the last nbits of it */
	unsigned nbits;
	bool open;              /* inside "&...-" */
};

static void imap_b64_unit(struct strbuf *b, struct imap_b64_run *r, uint32_t unit)
{
	if (!r->open) {
		strbuf_addc(b, '&');
		r->open = true;
	}
	r->bits = (r->bits << 16) | unit;
	r->nbits += 16;
	while (r->nbits >= 6) {
		r->nbits -= 6;
		strbuf_addc(b, imap_b64[(r->bits >> r->nbits) & 0x3f]);
	}
	r->bits &= (1u << r->nbits) - 1;
}

static void imap_b64_close(struct strbuf *b, struct imap_b64_run *r)
{
	if (!r->open)
		return;
	if (r->nbits) /* the last bits, padded with zeros */
		strbuf_addc(b, imap_b64[(r->bits << (6 - r->nbits)) & 0x3f]);
	strbuf_addc(b, '-');
	*r = (struct imap_b64_run){0};
}

bool imap_utf7_encode(const char *in, char *out, size_t outsz)
{
	struct strbuf b;
	strbuf_init(&b, out, outsz);
	struct imap_b64_run r = {0};
	const unsigned char *p = (const unsigned char *)in;
	while (*p) {
		uint32_t c;
		if (!imap_utf8_next(&p, &c))
			return false;
		if (imap_utf7_direct(c)) {
			imap_b64_close(&b, &r);
			if (c == '&')
				strbuf_adds(&b, "&-");
			else
				strbuf_addc(&b, (char)c);
		} else if (c >= 0x10000) { /* a surrogate pair in UTF-16 */
			imap_b64_unit(&b, &r, 0xd800 + ((c - 0x10000) >> 10));
			imap_b64_unit(&b, &r, 0xdc00 + ((c - 0x10000) & 0x3ff));
		} else {
			imap_b64_unit(&b, &r, c);
		}
	}
	imap_b64_close(&b, &r);
	return strbuf_ok(&b);
}

/* ---- decoding ------------------------------------------------------------------- */

static int imap_b64_value(unsigned char c)
{
	const char *at = c ? strchr(imap_b64, c) : NULL;
	return at ? (int)(at - imap_b64) : -1;
}

/* The run of base64 after "&" at *p (up to its "-", which *p moves past)
 * as UTF-8 into b; false when it is not valid. */
static bool imap_utf7_run(const unsigned char **p, struct strbuf *b)
{
	const unsigned char *s = *p;
	uint32_t bits = 0, high = 0;
	unsigned nbits = 0;
	bool any = false;
	for (; *s != '-'; s++) {
		int v = imap_b64_value(*s);
		if (v < 0)
			return false;
		bits = ((bits << 6) | (uint32_t)v) & 0x3fffff;
		nbits += 6;
		if (nbits < 16)
			continue;
		nbits -= 16;
		uint32_t unit = (bits >> nbits) & 0xffff;
		any = true;
		if (high) {
			if (unit < 0xdc00 || unit > 0xdfff)
				return false;
			imap_utf8_put(b, 0x10000 + ((high - 0xd800) << 10) + (unit - 0xdc00));
			high = 0;
		} else if (unit >= 0xd800 && unit <= 0xdbff) {
			high = unit;
		} else if (unit >= 0xdc00 && unit <= 0xdfff) {
			return false;
		} else if (imap_utf7_direct(unit) || unit == 0) {
			return false; /* §5.1.3: printable ASCII is never encoded */
		} else {
			imap_utf8_put(b, unit);
		}
	}
	/* what is left is padding: fewer than 6 bits, all zero */
	if (!any || high || nbits >= 6 || (bits & ((1u << nbits) - 1)) != 0)
		return false;
	*p = s + 1;
	return true;
}

bool imap_utf7_decode(const char *in, char *out, size_t outsz)
{
	struct strbuf b;
	strbuf_init(&b, out, outsz);
	const unsigned char *p = (const unsigned char *)in;
	bool after_run = false; /* a run right after another is not how one encodes */
	while (*p) {
		bool ok;
		bool run = *p == '&' && p[1] != '-';
		if (run && after_run)
			return false;
		after_run = run;
		if (*p != '&') {
			ok = imap_utf7_direct(*p);
			if (ok)
				strbuf_addc(&b, (char)*p++);
		} else if (p[1] == '-') {
			strbuf_addc(&b, '&');
			p += 2;
			ok = true;
		} else {
			p++;
			ok = imap_utf7_run(&p, &b);
		}
		if (!ok)
			return false;
	}
	return strbuf_ok(&b);
}

/* milter_proto: the packets of the Sendmail mail filter protocol, version
 * 6 (libmilter's mfdef.h, Postfix's milter8.c): commands built, replies
 * read and checked. */
#include "filter/milter_proto.h"

#include <stdlib.h>
#include <string.h>

#include "lib/util.h"

enum { MILTER_HEADER_LEN = 5 };  /* 32-bit length, command byte */

static uint32_t milter_get_u32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* The NUL-ended strings of data, exactly between min and max of them and
 * nothing after the last NUL.  False when the data is not that. */
static bool milter_strings(const uint8_t *data, size_t len, unsigned min, unsigned max,
			   const char **s1, const char **s2)
{
	const char *out[2] = {NULL, NULL};
	unsigned n = 0;
	size_t at = 0;
	while (at < len) {
		const uint8_t *nul = memchr(data + at, '\0', len - at);
		if (!nul || n == max)
			return false;
		out[n++] = (const char *)data + at;
		at = (size_t)(nul - data) + 1;
	}
	if (n < min)
		return false;
	*s1 = out[0];
	*s2 = out[1];
	return true;
}

/* RFC 5322 §2.2: printable ASCII but the colon, at least one. */
static bool milter_header_name_ok(const char *s)
{
	if (!*s)
		return false;
	for (; *s; s++)
		if ((unsigned char)*s <= 32 || (unsigned char)*s >= 127 || *s == ':')
			return false;
	return true;
}

/* A value may be folded (a line end followed by a space or tab, as
 * libmilter's smfi_addheader allows); any other CR or LF could start a new
 * header field or end the header, and is refused. */
static bool milter_header_value_ok(const char *s)
{
	for (; *s; s++) {
		if (*s == '\r' && s[1] == '\n')
			s++;
		if (*s == '\r')
			return false;
		if (*s == '\n' && s[1] != ' ' && s[1] != '\t')
			return false;
	}
	return true;
}

/* An envelope address as a milter writes it: "<a@b>" or "a@b", printable,
 * no spaces, bounded (RFC 5321 §4.5.3.1.3: a path is at most 256 octets). */
static bool milter_address_ok(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n > 258)
		return false;
	for (; *s; s++)
		if ((unsigned char)*s <= 32 || (unsigned char)*s >= 127)
			return false;
	return true;
}

static bool milter_esmtp_args_ok(const char *s)
{
	if (!s)
		return true;
	if (strlen(s) > 1024)
		return false;
	for (; *s; s++)
		if ((unsigned char)*s < 32 || (unsigned char)*s >= 127)
			return false;
	return true;
}

static enum milter_parse milter_bad(const char **why, const char *what)
{
	*why = what;
	return MILTER_PARSE_BAD;
}

static enum milter_parse milter_parse_header_mod(struct milter_reply *r, const uint8_t *d,
						 size_t n, bool indexed, const char **why)
{
	if (indexed) {
		if (n < 4)
			return milter_bad(why, "header change without its index");
		r->index = milter_get_u32(d);
		d += 4;
		n -= 4;
	}
	if (!milter_strings(d, n, 2, 2, &r->s1, &r->s2))
		return milter_bad(why, "header change is not a name and a value");
	if (!milter_header_name_ok(r->s1))
		return milter_bad(why, "bad header field name");
	if (!milter_header_value_ok(r->s2))
		return milter_bad(why, "bad header field value");
	return MILTER_PARSE_OK;
}

static enum milter_parse milter_parse_address(struct milter_reply *r, const uint8_t *d, size_t n,
					      unsigned max, const char **why)
{
	if (!milter_strings(d, n, 1, max, &r->s1, &r->s2) || !milter_address_ok(r->s1))
		return milter_bad(why, "bad address");
	if (!milter_esmtp_args_ok(r->s2))
		return milter_bad(why, "bad ESMTP arguments");
	return MILTER_PARSE_OK;
}

static enum milter_parse milter_parse_fields(struct milter_reply *r, const uint8_t *d, size_t n,
					     const char **why)
{
	switch (r->cmd) {
	case MILTER_R_OPTNEG:
		/* version, actions, protocol; v6 may append the macros it
		 * wants per stage, which posthorn does not need to read */
		if (n < 12)
			return milter_bad(why, "short option negotiation");
		r->version = milter_get_u32(d);
		r->actions = milter_get_u32(d + 4);
		r->protocol = milter_get_u32(d + 8);
		return MILTER_PARSE_OK;
	case MILTER_R_ACCEPT: case MILTER_R_CONTINUE: case MILTER_R_DISCARD:
	case MILTER_R_REJECT: case MILTER_R_TEMPFAIL: case MILTER_R_SKIP:
	case MILTER_R_PROGRESS: case MILTER_R_CONN_FAIL: case MILTER_R_SHUTDOWN:
	case MILTER_R_SETSYMLIST:
		return MILTER_PARSE_OK; /* any data is ignored */
	case MILTER_R_REPLYCODE:
		if (!milter_strings(d, n, 1, 1, &r->s1, &r->s2) || strlen(r->s1) > MILTER_REPLY_TEXT_MAX ||
		    !milter_reply_text_ok(r->s1))
			return milter_bad(why, "bad reply code text");
		return MILTER_PARSE_OK;
	case MILTER_R_QUARANTINE:
		if (!milter_strings(d, n, 1, 1, &r->s1, &r->s2))
			return milter_bad(why, "bad quarantine reason");
		return MILTER_PARSE_OK;
	case MILTER_R_ADDHEADER:
		return milter_parse_header_mod(r, d, n, false, why);
	case MILTER_R_INSHEADER: case MILTER_R_CHGHEADER:
		return milter_parse_header_mod(r, d, n, true, why);
	case MILTER_R_CHGFROM: case MILTER_R_ADDRCPT_PAR:
		return milter_parse_address(r, d, n, 2, why);
	case MILTER_R_ADDRCPT: case MILTER_R_DELRCPT:
		return milter_parse_address(r, d, n, 1, why);
	case MILTER_R_REPLBODY:
		r->data = d;
		r->len = n;
		return MILTER_PARSE_OK;
	}
	return milter_bad(why, "unknown reply");
}

enum milter_parse milter_reply_parse(const uint8_t *buf, size_t len, size_t *used,
				     struct milter_reply *out, const char **why)
{
	memset(out, 0, sizeof *out);
	*why = NULL;
	if (len < 4)
		return MILTER_PARSE_NEED_MORE;
	uint32_t plen = milter_get_u32(buf);
	if (plen == 0 || plen > MILTER_PACKET_MAX)
		return milter_bad(why, plen ? "reply too long" : "empty reply");
	if (len - 4 < plen)
		return MILTER_PARSE_NEED_MORE;
	out->cmd = (char)buf[4];
	*used = 4 + (size_t)plen;
	return milter_parse_fields(out, buf + MILTER_HEADER_LEN, plen - 1, why);
}

/* One line of a custom reply: "NNN" alone, "NNN text" or "NNN-text". */
static bool milter_reply_line_ok(const char *s, size_t n, const char *code, bool last)
{
	if (n < 3 || memcmp(s, code, 3) != 0)
		return false;
	if (n > 3 && s[3] != (last ? ' ' : '-'))
		return false;
	if (n == 3 && !last)
		return false;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] < 32 || (unsigned char)s[i] >= 127)
			return false;
	return true;
}

bool milter_reply_text_ok(const char *text)
{
	if ((text[0] != '4' && text[0] != '5') || text[1] < '0' || text[1] > '9' || text[2] < '0' ||
	    text[2] > '9')
		return false;
	const char *code = text;
	const char *line = text;
	for (;;) {
		const char *end = strstr(line, "\r\n");
		bool last = end == NULL;
		size_t n = last ? strlen(line) : (size_t)(end - line);
		if (!milter_reply_line_ok(line, n, code, last))
			return false;
		if (last)
			return true;
		line = end + 2;
	}
}

/* ---- building ------------------------------------------------------------ */

void milter_packet_begin(struct milter_packet *p, char cmd)
{
	memset(p, 0, sizeof *p);
	p->cap = 256;
	p->buf = xmalloc(p->cap);
	p->len = MILTER_HEADER_LEN;
	p->buf[4] = (uint8_t)cmd;
}

void milter_packet_add(struct milter_packet *p, const void *data, size_t len)
{
	if (p->overflow)
		return;
	if (len > MILTER_PACKET_MAX || p->len + len > MILTER_PACKET_MAX) {
		p->overflow = true;
		return;
	}
	if (p->len + len > p->cap) {
		while (p->len + len > p->cap)
			p->cap *= 2;
		p->buf = xrealloc(p->buf, p->cap);
	}
	memcpy(p->buf + p->len, data, len);
	p->len += len;
}

void milter_packet_add_str(struct milter_packet *p, const char *s)
{
	milter_packet_add(p, s, strlen(s) + 1);
}

void milter_packet_add_u32(struct milter_packet *p, uint32_t v)
{
	uint8_t b[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
	milter_packet_add(p, b, sizeof b);
}

void milter_packet_add_u16(struct milter_packet *p, uint16_t v)
{
	uint8_t b[2] = {(uint8_t)(v >> 8), (uint8_t)v};
	milter_packet_add(p, b, sizeof b);
}

bool milter_packet_end(struct milter_packet *p)
{
	if (p->overflow) {
		milter_packet_free(p);
		return false;
	}
	uint32_t n = (uint32_t)(p->len - 4);
	p->buf[0] = (uint8_t)(n >> 24);
	p->buf[1] = (uint8_t)(n >> 16);
	p->buf[2] = (uint8_t)(n >> 8);
	p->buf[3] = (uint8_t)n;
	return true;
}

void milter_packet_free(struct milter_packet *p)
{
	free(p->buf);
	memset(p, 0, sizeof *p);
}

/* dkim_tags: the tag=value lists of DKIM-Signature fields and key records
 * (RFC 6376 §3.2), and the base64 of their b=, bh= and p= values. */
#ifndef POSTHORN_DKIM_TAGS_H
#define POSTHORN_DKIM_TAGS_H

#include <stdbool.h>
#include <stddef.h>

enum { DKIM_TAGS_MAX = 32 }; /* tags in one list (a signature has 14 at most) */

/* One tag: name and value point into the parsed text (value without the
 * white space around it); raw_start..raw_end is everything between '='
 * and the ';' or the end, white space included (what §3.7 removes of b=). */
struct dkim_tag {
	const char *name;
	size_t name_len;
	const char *value;
	size_t value_len;
	size_t raw_start, raw_end;  /* offsets into the parsed text */
};

struct dkim_tags {
	struct dkim_tag tag[DKIM_TAGS_MAX];
	size_t n;
};

/* Parse a tag-list of len bytes.  0, or -1 with the reason in err: bad
 * syntax, a tag given twice (§3.2), more than DKIM_TAGS_MAX tags. */
int dkim_tags_parse(const char *text, size_t len, struct dkim_tags *out, char *err, size_t errsz);

/* The tag called name, or NULL. */
const struct dkim_tag *dkim_tags_get(const struct dkim_tags *t, const char *name);

/* Does the tag's value equal s (case-sensitive, as tag values are)? */
bool dkim_tag_is(const struct dkim_tag *t, const char *s);

/* base64 (white space inside ignored, §3.5 b=) into out (room for outsz
 * bytes).  The decoded length, or -1 when malformed or too long. */
long dkim_base64_decode(const char *in, size_t len, unsigned char *out, size_t outsz);

/* base64 of n bytes: a new NUL-terminated string. */
char *dkim_base64_encode(const unsigned char *in, size_t n);

#endif

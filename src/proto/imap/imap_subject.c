/* imap_subject: i;unicode-casemap (RFC 5051) and the base subject of RFC
 * 5256 §2.1, for SORT SUBJECT, THREAD ORDEREDSUBJECT and the subject
 * merging of THREAD REFERENCES. */
#include "proto/imap/imap_subject.h"

#include <glib.h>
#include <string.h>

#include "lib/util.h"

static bool subject_is_ascii(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s >= 0x80)
			return false;
	return true;
}

char *imap_casemap(const char *s)
{
	if (subject_is_ascii(s)) { /* titlecase of ASCII is its upper case */
		char *c = xstrdup(s);
		for (char *p = c; *p; p++)
			*p = g_ascii_toupper(*p);
		return c;
	}
	char *valid = g_utf8_make_valid(s, -1);
	GString *t = g_string_sized_new(strlen(valid));
	for (const char *p = valid; *p; p = g_utf8_next_char(p))
		g_string_append_unichar(t, g_unichar_totitle(g_utf8_get_char(p)));
	g_free(valid);
	char *nfkd = g_utf8_normalize(t->str, (gssize)t->len, G_NORMALIZE_NFKD);
	g_string_free(t, TRUE);
	char *c = xstrdup(nfkd ? nfkd : "");
	g_free(nfkd);
	return c;
}

/* The subject being reduced: the octets [b, e) of a casemapped string. */
struct subject {
	const char *b, *e;
	bool reply;
};

static bool subject_wsp(char c)
{
	return c == ' ' || c == '\t';
}

static bool subject_starts(const struct subject *s, const char *p, const char *word)
{
	size_t n = strlen(word);
	return (size_t)(s->e - p) >= n && memcmp(p, word, n) == 0;
}

/* subj-blob = "[" *BLOBCHAR "]" *WSP at p: its end, or NULL. */
static const char *subject_blob(const struct subject *s, const char *p)
{
	if (p >= s->e || *p != '[')
		return NULL;
	for (p++; p < s->e && *p != '[' && *p != ']'; p++)
		;
	if (p >= s->e || *p != ']')
		return NULL;
	for (p++; p < s->e && subject_wsp(*p); p++)
		;
	return p;
}

/* subj-refwd = ("re" / ("fw" ["d"])) *WSP [subj-blob] ":" at p: its end,
 * or NULL. */
static const char *subject_refwd(const struct subject *s, const char *p)
{
	if (subject_starts(s, p, "RE"))
		p += 2;
	else if (subject_starts(s, p, "FWD"))
		p += 3;
	else if (subject_starts(s, p, "FW"))
		p += 2;
	else
		return NULL;
	while (p < s->e && subject_wsp(*p))
		p++;
	const char *blob = subject_blob(s, p);
	if (blob)
		p = blob;
	return p < s->e && *p == ':' ? p + 1 : NULL;
}

/* Step 2: subj-trailer = "(fwd)" / WSP, removed from the end. */
static void subject_trailers(struct subject *s)
{
	for (;;) {
		if (s->e > s->b && subject_wsp(s->e[-1]))
			s->e--;
		else if (s->e - s->b >= 5 && memcmp(s->e - 5, "(FWD)", 5) == 0) {
			s->e -= 5;
			s->reply = true;
		} else
			return;
	}
}

/* Step 3: subj-leader = (*subj-blob subj-refwd) / WSP, removed from the
 * start until none is left; true when something was. */
static bool subject_leaders(struct subject *s)
{
	bool any = false;
	for (;;) {
		if (s->b < s->e && subject_wsp(*s->b)) {
			s->b++;
			any = true;
			continue;
		}
		const char *p = s->b, *next;
		while ((next = subject_blob(s, p)) != NULL)
			p = next;
		const char *end = subject_refwd(s, p);
		if (!end)
			return any;
		s->b = end;
		s->reply = true;
		any = true;
	}
}

/* Step 4: a leading subj-blob, when something is left after it. */
static bool subject_leading_blob(struct subject *s)
{
	const char *end = subject_blob(s, s->b);
	if (!end)
		return false;
	struct subject rest = {.b = end, .e = s->e};
	subject_leaders(&rest);
	if (rest.b >= rest.e)
		return false; /* it is the whole subject: kept */
	s->b = end;
	return true;
}

/* Step 5: subj-fwd = "[fwd:" base-subject "]"; true when removed. */
static bool subject_fwd_wrapper(struct subject *s)
{
	if (!subject_starts(s, s->b, "[FWD:") || s->e - s->b < 6 || s->e[-1] != ']')
		return false;
	s->b += 5;
	s->e--;
	s->reply = true;
	return true;
}

/* Step 1's whitespace: runs of WSP become one space. */
static void subject_squeeze(char *c)
{
	char *w = c;
	bool blank = false;
	for (const char *r = c; *r; r++) {
		if (subject_wsp(*r) || *r == '\r' || *r == '\n') {
			if (!blank)
				*w++ = ' ';
			blank = true;
		} else {
			*w++ = *r;
			blank = false;
		}
	}
	*w = '\0';
}

char *imap_base_subject(const char *s, bool *reply)
{
	char *c = imap_casemap(s ? s : "");
	subject_squeeze(c);
	struct subject sub = {.b = c, .e = c + strlen(c)};
	do {
		subject_trailers(&sub); /* (2) */
		bool changed;
		do {
			changed = subject_leaders(&sub);           /* (3) */
			changed = subject_leading_blob(&sub) || changed; /* (4) */
		} while (changed);
	} while (subject_fwd_wrapper(&sub)); /* (5), then (2) again */
	*reply = sub.reply;
	char *base = xstrndup(sub.b, (size_t)(sub.e - sub.b));
	free(c);
	return base;
}

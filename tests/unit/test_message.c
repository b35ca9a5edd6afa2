/* test_message: ENVELOPE, BODYSTRUCTURE and BODY (RFC 3501 §7.4.2, §9)
 * checked against strings derived by hand, body sections (§6.4.5) in the
 * CRLF form of LF files, streaming of ranges, the cache, and the SEARCH
 * helpers with RFC 2047 words and quoted-printable latin-1 text. */
#define _GNU_SOURCE
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "store/maildir.h"
#include "store/message.h"
#include "lib/util.h"

static char dir[64];
static unsigned serial;

/* Write text to a new file of the test directory; returns its path. */
static char *write_msg(const char *text, size_t len)
{
	char *path = xasprintf("%s/%u.M1P1.test,S=%zu:2,S", dir, ++serial, len);
	FILE *f = fopen(path, "wb");
	assert_non_null(f);
	assert_int_equal(fwrite(text, 1, len, f), len);
	assert_int_equal(fclose(f), 0);
	return path;
}

/* The CRLF form by its definition: every LF not after CR gains one. */
static char *crlf_of(const char *s, size_t *outlen)
{
	size_t n = strlen(s), o = 0;
	char *r = xmalloc(2 * n + 3);
	for (size_t i = 0; i < n; i++) {
		if (s[i] == '\n' && (i == 0 || s[i - 1] != '\r'))
			r[o++] = '\r';
		r[o++] = s[i];
	}
	if (n > 0 && s[n - 1] != '\n') {
		if (s[n - 1] != '\r')
			r[o++] = '\r';
		r[o++] = '\n';
	}
	r[o] = '\0';
	*outlen = o;
	return r;
}

/* Parse a section text like "1.2.MIME", "HEADER", "" into sec. */
static void parse_section(const char *spec, struct message_section_spec *sec, char **fields,
			  size_t nf)
{
	memset(sec, 0, sizeof *sec);
	while (*spec >= '0' && *spec <= '9') {
		char *end;
		sec->parts[sec->nparts++] = (uint32_t)strtoul(spec, &end, 10);
		spec = *end == '.' ? end + 1 : end;
	}
	if (strcmp(spec, "HEADER") == 0)
		sec->text = MESSAGE_SECTION_HEADER;
	else if (strcmp(spec, "TEXT") == 0)
		sec->text = MESSAGE_SECTION_TEXT;
	else if (strcmp(spec, "MIME") == 0)
		sec->text = MESSAGE_SECTION_MIME;
	else if (strcmp(spec, "HEADER.FIELDS") == 0)
		sec->text = MESSAGE_SECTION_HEADER_FIELDS;
	else if (strcmp(spec, "HEADER.FIELDS.NOT") == 0)
		sec->text = MESSAGE_SECTION_HEADER_FIELDS_NOT;
	else
		assert_string_equal(spec, "");
	sec->fields = fields;
	sec->nfields = nf;
}

/* Stream [off, off+len) in chunks of chunk octets. */
static char *stream_range(const struct message *m, const char *path, uint64_t off, uint64_t len,
			  size_t chunk, size_t *outlen)
{
	struct message_stream *s = message_stream_open(m, path, off, len);
	assert_non_null(s);
	char *buf = xmalloc(chunk);
	char *r = xmalloc(1);
	size_t n = 0;
	ssize_t k;
	while ((k = message_stream_read(s, buf, chunk)) > 0) {
		r = xrealloc(r, n + (size_t)k + 1);
		memcpy(r + n, buf, (size_t)k);
		n += (size_t)k;
	}
	assert_int_equal(k, 0);
	r[n] = '\0';
	free(buf);
	message_stream_close(s);
	*outlen = n;
	return r;
}

/* The octets of BODY[spec] (NULL for a part that does not exist). */
static char *fetch(const struct message *m, const char *path, const char *spec, char **fields,
		   size_t nf)
{
	struct message_section_spec sec;
	parse_section(spec, &sec, fields, nf);
	struct message_section out;
	char err[256];
	assert_int_equal(message_section(m, path, &sec, &out, err, sizeof err), 0);
	if (out.kind == MESSAGE_SECTION_NONE)
		return NULL;
	if (out.kind == MESSAGE_SECTION_BUFFER) {
		char *r = xstrndup(out.buf, out.len);
		message_section_free(&out);
		return r;
	}
	size_t n;
	char *r = stream_range(m, path, out.offset, out.length, 4096, &n);
	assert_int_equal(n, out.length);
	return r;
}

static struct message *get(struct message_cache *c, const char *path)
{
	char err[256];
	struct message *m = message_get(c, path, err, sizeof err);
	if (!m)
		fail_msg("message_get: %s", err);
	return m;
}

static const char *env(const struct message *m)
{
	size_t n;
	const char *s = message_envelope(m, &n);
	assert_int_equal(strlen(s), n);
	return s;
}

static const char *bs(const struct message *m)
{
	size_t n;
	const char *s = message_bodystructure(m, &n);
	assert_int_equal(strlen(s), n);
	return s;
}

static const char *body(const struct message *m)
{
	size_t n;
	const char *s = message_body(m, &n);
	assert_int_equal(strlen(s), n);
	return s;
}

/* ---- the multipart/mixed message of a typical mail client ------------------ */

static const char MIXED[] =
	"From: Alice Example <alice@example.org>\n"
	"To: Bob <bob@example.com>, carol@example.net\n"
	"Cc: \"Dave, Jr.\" <dave@example.com>\n"
	"Subject: Quarterly report\n"
	"Date: Wed, 4 Nov 2026 09:30:00 +0100\n"
	"Message-ID: <q1@example.org>\n"
	"In-Reply-To: <q0@example.org>\n"
	"MIME-Version: 1.0\n"
	"Content-Type: multipart/mixed; boundary=\"mix\"\n"
	"\n"
	"This is a multi-part message in MIME format.\n"
	"--mix\n"
	"Content-Type: multipart/alternative; boundary=\"alt\"\n"
	"\n"
	"--alt\n"
	"Content-Type: text/plain; charset=us-ascii\n"
	"\n"
	"Hi Bob,\n"
	"see attached.\n"
	"--alt\n"
	"Content-Type: text/html; charset=utf-8\n"
	"Content-Transfer-Encoding: quoted-printable\n"
	"\n"
	"<p>Hi Bob</p>\n"
	"--alt--\n"
	"--mix\n"
	"Content-Type: application/octet-stream; name=\"report.bin\"\n"
	"Content-Disposition: attachment; filename=\"report.bin\"\n"
	"Content-Transfer-Encoding: base64\n"
	"Content-Language: en\n"
	"Content-Location: http://example.org/report.bin\n"
	"Content-ID: <r1@example.org>\n"
	"Content-Description: the numbers\n"
	"\n"
	"AAECAwQF\n"
	"--mix--\n";

static void test_mixed_envelope(void **state)
{
	(void)state;
	char *path = write_msg(MIXED, strlen(MIXED));
	struct message *m = get(NULL, path);
	/* date subject from sender reply-to to cc bcc in-reply-to message-id;
	 * Sender and Reply-To default to From (RFC 3501 §7.4.2) */
	assert_string_equal(env(m), "(\"Wed, 4 Nov 2026 09:30:00 +0100\" \"Quarterly report\" "
				    "((\"Alice Example\" NIL \"alice\" \"example.org\")) "
				    "((\"Alice Example\" NIL \"alice\" \"example.org\")) "
				    "((\"Alice Example\" NIL \"alice\" \"example.org\")) "
				    "((\"Bob\" NIL \"bob\" \"example.com\")"
				    "(NIL NIL \"carol\" \"example.net\")) "
				    "((\"Dave, Jr.\" NIL \"dave\" \"example.com\")) "
				    "NIL \"<q0@example.org>\" \"<q1@example.org>\")");
	int64_t when;
	int tz;
	assert_true(message_sent_date(m, &when, &tz));
	struct tm tm = {.tm_year = 126, .tm_mon = 10, .tm_mday = 4, .tm_hour = 8, .tm_min = 30};
	assert_int_equal(when, (int64_t)timegm(&tm));
	assert_int_equal(tz, 60);
	message_put(m);
	free(path);
}

static void test_mixed_bodystructure(void **state)
{
	(void)state;
	char *path = write_msg(MIXED, strlen(MIXED));
	struct message *m = get(NULL, path);
	/* text/plain: "Hi Bob,\r\nsee attached." = 22 octets, 2 lines (the
	 * line end before "--alt" belongs to the boundary, RFC 2046 §5.1.1);
	 * text/html: "<p>Hi Bob</p>" = 13 octets, 1 line; the attachment:
	 * "AAECAwQF" = 8 octets, no line count (not text). */
	assert_string_equal(
		bs(m),
		"(((\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 22 2 NIL NIL NIL NIL)"
		"(\"text\" \"html\" (\"charset\" \"utf-8\") NIL NIL \"quoted-printable\" 13 1 NIL NIL NIL NIL)"
		" \"alternative\" (\"boundary\" \"alt\") NIL NIL NIL)"
		"(\"application\" \"octet-stream\" (\"name\" \"report.bin\") \"<r1@example.org>\""
		" \"the numbers\" \"base64\" 8 NIL (\"attachment\" (\"filename\" \"report.bin\"))"
		" \"en\" \"http://example.org/report.bin\")"
		" \"mixed\" (\"boundary\" \"mix\") NIL NIL NIL)");
	assert_string_equal(
		body(m),
		"(((\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 22 2)"
		"(\"text\" \"html\" (\"charset\" \"utf-8\") NIL NIL \"quoted-printable\" 13 1)"
		" \"alternative\")"
		"(\"application\" \"octet-stream\" (\"name\" \"report.bin\") \"<r1@example.org>\""
		" \"the numbers\" \"base64\" 8) \"mixed\")");
	size_t crlfn;
	char *crlf = crlf_of(MIXED, &crlfn);
	assert_int_equal(message_size(m), crlfn);
	free(crlf);
	message_put(m);
	free(path);
}

static void test_mixed_sections(void **state)
{
	(void)state;
	char *path = write_msg(MIXED, strlen(MIXED));
	struct message *m = get(NULL, path);
	size_t crlfn;
	char *crlf = crlf_of(MIXED, &crlfn);
	char *s = fetch(m, path, "", NULL, 0);
	assert_string_equal(s, crlf);
	free(s);
	const char *blank = strstr(crlf, "\r\n\r\n") + 4;
	s = fetch(m, path, "HEADER", NULL, 0);
	assert_int_equal(strlen(s), (size_t)(blank - crlf));
	assert_memory_equal(s, crlf, strlen(s));
	free(s);
	s = fetch(m, path, "TEXT", NULL, 0);
	assert_string_equal(s, blank);
	free(s);
	s = fetch(m, path, "1.1", NULL, 0);
	assert_string_equal(s, "Hi Bob,\r\nsee attached.");
	free(s);
	s = fetch(m, path, "1.2", NULL, 0);
	assert_string_equal(s, "<p>Hi Bob</p>");
	free(s);
	s = fetch(m, path, "1.2.MIME", NULL, 0);
	assert_string_equal(s, "Content-Type: text/html; charset=utf-8\r\n"
			       "Content-Transfer-Encoding: quoted-printable\r\n\r\n");
	free(s);
	s = fetch(m, path, "1", NULL, 0);
	assert_string_equal(s, "--alt\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
			       "Hi Bob,\r\nsee attached.\r\n--alt\r\n"
			       "Content-Type: text/html; charset=utf-8\r\n"
			       "Content-Transfer-Encoding: quoted-printable\r\n\r\n"
			       "<p>Hi Bob</p>\r\n--alt--");
	free(s);
	s = fetch(m, path, "1.MIME", NULL, 0);
	assert_string_equal(s, "Content-Type: multipart/alternative; boundary=\"alt\"\r\n\r\n");
	free(s);
	s = fetch(m, path, "2", NULL, 0);
	assert_string_equal(s, "AAECAwQF");
	free(s);
	/* parts that do not exist; HEADER of a part that is not a message */
	assert_null(fetch(m, path, "3", NULL, 0));
	assert_null(fetch(m, path, "1.3", NULL, 0));
	assert_null(fetch(m, path, "2.1", NULL, 0));
	assert_null(fetch(m, path, "2.HEADER", NULL, 0));
	free(crlf);
	message_put(m);
	free(path);
}

static void test_header_fields(void **state)
{
	(void)state;
	char *path = write_msg(MIXED, strlen(MIXED));
	struct message *m = get(NULL, path);
	char *want[] = {"SUBJECT", "from", "x-absent"};
	char *s = fetch(m, path, "HEADER.FIELDS", want, 3);
	assert_string_equal(s, "From: Alice Example <alice@example.org>\r\n"
			       "Subject: Quarterly report\r\n\r\n");
	free(s);
	char *skip[] = {"to", "CC", "Message-Id", "date", "in-reply-to", "mime-version",
			"content-type", "subject"};
	s = fetch(m, path, "HEADER.FIELDS.NOT", skip, 8);
	assert_string_equal(s, "From: Alice Example <alice@example.org>\r\n\r\n");
	free(s);
	message_put(m);
	free(path);
}

/* ---- encoded words, missing headers ---------------------------------------- */

static void test_encoded_words(void **state)
{
	(void)state;
	static const char msg[] =
		"From: =?ISO-8859-1?Q?Andr=E9?= <andre@example.org>\n"
		"To: undisclosed-recipients:;\n"
		"Cc: \"=?UTF-8?B?w6k=?=\" <c@example.com>\n"
		"Subject: =?ISO-8859-1?Q?Caf=E9_cr=E8me?= and\n"
		" =?UTF-8?B?0L/RgNC40LLQtdGC?=\n"
		"\n"
		"Body\n";
	char *path = write_msg(msg, sizeof msg - 1);
	struct message *m = get(NULL, path);
	const char *e = env(m);
	/* the Subject as sent, unfolded; an empty group (RFC 3501 §7.4.2) */
	const char *subj = "NIL \"=?ISO-8859-1?Q?Caf=E9_cr=E8me?= and =?UTF-8?B?0L/RgNC40LLQtdGC?=\" ";
	assert_memory_equal(e, "(", 1);
	assert_memory_equal(e + 1, subj, strlen(subj));
	assert_non_null(strstr(e, " ((NIL NIL \"undisclosed-recipients\" NIL)(NIL NIL NIL NIL)) "
				  "((\"=?UTF-8?B?w6k=?=\" NIL \"c\" \"example.com\")) NIL NIL NIL)"));
	/* display names as sent too */
	assert_non_null(strstr(e, " ((\"=?ISO-8859-1?Q?Andr=E9?=\" NIL \"andre\" \"example.org\")) "));
	char err[256];
	assert_int_equal(message_header_contains(m, path, "subject", "CAF\xc3\x89 CR\xc3\x88ME", err, sizeof err), 1);
	assert_int_equal(message_header_contains(m, path, "Subject", "\xd0\xbf\xd1\x80\xd0\xb8\xd0\xb2\xd0\xb5\xd1\x82", err, sizeof err), 1);
	assert_int_equal(message_header_contains(m, path, "SUBJECT", "=E9", err, sizeof err), 0);
	assert_int_equal(message_header_contains(m, path, "from", "andr\xc3\xa9", err, sizeof err), 1);
	assert_int_equal(message_header_contains(m, path, "from", "bob", err, sizeof err), 0);
	/* "" matches a field that exists, only */
	assert_int_equal(message_header_contains(m, path, "To", "", err, sizeof err), 1);
	assert_int_equal(message_header_contains(m, path, "Bcc", "", err, sizeof err), 0);
	assert_int_equal(message_header_contains(m, path, "cc", "\xc3\x89", err, sizeof err), 1);
	message_put(m);
	free(path);
}

static void test_missing_headers(void **state)
{
	(void)state;
	static const char msg[] = "Subject: x\n\nbody\n";
	char *path = write_msg(msg, sizeof msg - 1);
	struct message *m = get(NULL, path);
	assert_string_equal(env(m), "(NIL \"x\" NIL NIL NIL NIL NIL NIL NIL NIL)");
	/* no Content-Type: text/plain; charset=us-ascii (RFC 2045 §5.2) */
	assert_string_equal(bs(m), "(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 6 1 NIL NIL NIL NIL)");
	assert_string_equal(body(m), "(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 6 1)");
	int64_t when;
	int tz;
	assert_false(message_sent_date(m, &when, &tz));
	assert_int_equal(message_size(m), 20); /* 12 + 2 + 6 */
	char *s = fetch(m, path, "1", NULL, 0);
	assert_string_equal(s, "body\r\n");
	free(s);
	s = fetch(m, path, "1.MIME", NULL, 0);
	assert_string_equal(s, "Subject: x\r\n\r\n");
	free(s);
	assert_null(fetch(m, path, "2", NULL, 0));
	assert_null(fetch(m, path, "1.1", NULL, 0));
	message_put(m);
	free(path);
}

static void test_quoting(void **state)
{
	(void)state;
	static const char msg[] = "Subject: say \"hi\" \\ there\n"
				  "Message-ID: caf\xc3\xa9\n"
				  "\n";
	char *path = write_msg(msg, sizeof msg - 1);
	struct message *m = get(NULL, path);
	/* quoted with escapes; 8-bit text as a literal */
	assert_string_equal(env(m), "(NIL \"say \\\"hi\\\" \\\\ there\" NIL NIL NIL NIL NIL NIL NIL "
				    "{5}\r\ncaf\xc3\xa9)");
	message_put(m);
	free(path);
}

/* ---- addresses: source routes, SEARCH on the address -------------------------- */

/* RFC 3501 §7.4.2: the at-domain-list of an obsolete route (RFC 5322
 * §4.4) is an address's second field; GMime reads past it. */
static void test_source_routes(void **state)
{
	(void)state;
	static const char msg[] =
		"From: <@route:user@domain>\n"
		"Sender: Name (c) <@a.example, @b.example (c) : u@d.example>\n"
		"Reply-To: \"<@fake:x@y>\" <x@y>, <@r:x@y>\n"
		"To: plain@d.example, g: <@g:m@d.example>;\n"
		"Cc: <@unclosed:user@domain\n"
		"\n";
	char *path = write_msg(msg, sizeof msg - 1);
	struct message *m = get(NULL, path);
	const char *e = env(m);
	assert_non_null(strstr(e, " ((NIL \"@route\" \"user\" \"domain\")) "));
	assert_non_null(strstr(e, " ((\"Name\" \"@a.example,@b.example\" \"u\" \"d.example\")) "));
	/* a route inside a quoted display name is no route; the one after is
	 * given to the address that had it, not to the first x@y */
	assert_non_null(strstr(e, " ((\"<@fake:x@y>\" NIL \"x\" \"y\")(NIL \"@r\" \"x\" \"y\")) "));
	assert_non_null(strstr(e, " ((NIL NIL \"plain\" \"d.example\")(NIL NIL \"g\" NIL)"
				  "(NIL \"@g\" \"m\" \"d.example\")(NIL NIL NIL NIL)) "));
	message_put(m);
	free(path);
}

/* SEARCH FROM/TO/CC/BCC match the address however the field writes it. */
static void test_search_addresses(void **state)
{
	(void)state;
	static const char msg[] =
		"From: <user-from (comment)@ (comment) domain.org>\n"
		"To: user-to@domain.org (RealTo)\n"
		"Cc: group: <user-cc@ domain.org>;\n"
		"Bcc: =?UTF-8?Q?Andr=C3=A9?= <a (x) @b.example>\n"
		"Subject: user-from@domain.org\n"
		"\n";
	char *path = write_msg(msg, sizeof msg - 1);
	struct message *m = get(NULL, path);
	char err[256];
	assert_int_equal(message_header_contains(m, path, "From", "user-from@domain.org", err, sizeof err), 1);
	assert_int_equal(message_header_contains(m, path, "From", "comment", err, sizeof err), 1);
	assert_int_equal(message_header_contains(m, path, "To", "realto <user-to@", err, sizeof err), 1);
	assert_int_equal(message_header_contains(m, path, "Cc", "user-cc@domain.org", err, sizeof err), 1);
	assert_int_equal(message_header_contains(m, path, "Bcc", "Andr\xc3\xa9 <a@b.example>", err, sizeof err), 1);
	/* the address form is searched on its own, not run into the text */
	assert_int_equal(message_header_contains(m, path, "Cc", ";user-cc", err, sizeof err), 0);
	/* only address fields: the Subject holds the text, not an address */
	assert_int_equal(message_header_contains(m, path, "To", "user-from", err, sizeof err), 0);
	message_put(m);
	free(path);
}

/* ---- message/rfc822 ---------------------------------------------------------- */

static const char NESTED[] =
	"From: a@example.org\n"
	"Subject: fwd\n"
	"Content-Type: multipart/mixed; boundary=o\n"
	"\n"
	"--o\n"
	"\n"
	"see below\n"
	"--o\n"
	"Content-Type: message/rfc822\n"
	"\n"
	"From: Inner <in@example.net>\n"
	"Subject: inner\n"
	"Content-Type: multipart/mixed; boundary=i\n"
	"\n"
	"--i\n"
	"Content-Type: text/plain\n"
	"\n"
	"one\n"
	"--i\n"
	"Content-Type: text/plain; charset=utf-8\n"
	"\n"
	"two\n"
	"--i--\n"
	"--o--\n";

static void test_nested_message(void **state)
{
	(void)state;
	char *path = write_msg(NESTED, sizeof NESTED - 1);
	struct message *m = get(NULL, path);
	/* part 2's body, the inner message from "From:" to "--i--" in CRLF
	 * form: 30+16+43+2 octets of header, 5+26+2+5+5+41+2+5+5 of body =
	 * 187 octets in 13 lines (the last, "--i--", without its line end);
	 * text/plain without charset is us-ascii (RFC 2045 §5.2) */
	assert_string_equal(
		bs(m),
		"((\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 9 1 NIL NIL NIL NIL)"
		"(\"message\" \"rfc822\" NIL NIL NIL \"7bit\" 187 "
		"(NIL \"inner\" ((\"Inner\" NIL \"in\" \"example.net\")) ((\"Inner\" NIL \"in\" \"example.net\")) "
		"((\"Inner\" NIL \"in\" \"example.net\")) NIL NIL NIL NIL NIL) "
		"((\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 3 1 NIL NIL NIL NIL)"
		"(\"text\" \"plain\" (\"charset\" \"utf-8\") NIL NIL \"7bit\" 3 1 NIL NIL NIL NIL)"
		" \"mixed\" (\"boundary\" \"i\") NIL NIL NIL) 13 NIL NIL NIL NIL)"
		" \"mixed\" (\"boundary\" \"o\") NIL NIL NIL)");
	char *s = fetch(m, path, "2.HEADER", NULL, 0);
	assert_string_equal(s, "From: Inner <in@example.net>\r\nSubject: inner\r\n"
			       "Content-Type: multipart/mixed; boundary=i\r\n\r\n");
	free(s);
	s = fetch(m, path, "2.TEXT", NULL, 0);
	assert_string_equal(s, "--i\r\nContent-Type: text/plain\r\n\r\none\r\n--i\r\n"
			       "Content-Type: text/plain; charset=utf-8\r\n\r\ntwo\r\n--i--");
	free(s);
	s = fetch(m, path, "2.2", NULL, 0);
	assert_string_equal(s, "two");
	free(s);
	s = fetch(m, path, "2.1.MIME", NULL, 0);
	assert_string_equal(s, "Content-Type: text/plain\r\n\r\n");
	free(s);
	s = fetch(m, path, "2.MIME", NULL, 0);
	assert_string_equal(s, "Content-Type: message/rfc822\r\n\r\n");
	free(s);
	s = fetch(m, path, "2", NULL, 0);
	assert_int_equal(strlen(s), 187);
	assert_memory_equal(s, "From: Inner", 11);
	free(s);
	/* a part without a header: its MIME header is the blank line */
	s = fetch(m, path, "1.MIME", NULL, 0);
	assert_string_equal(s, "\r\n");
	free(s);
	char *want[] = {"subject"};
	s = fetch(m, path, "2.HEADER.FIELDS", want, 1);
	assert_string_equal(s, "Subject: inner\r\n\r\n");
	free(s);
	assert_null(fetch(m, path, "2.3", NULL, 0));
	assert_null(fetch(m, path, "1.HEADER", NULL, 0));
	message_put(m);
	free(path);
}

/* ---- LF and CRLF files agree; streaming of any range ------------------------- */

static void test_lf_and_crlf_agree(void **state)
{
	(void)state;
	size_t n;
	char *crlf = crlf_of(NESTED, &n);
	char *p1 = write_msg(NESTED, sizeof NESTED - 1);
	char *p2 = write_msg(crlf, n);
	struct message *a = get(NULL, p1), *b = get(NULL, p2);
	assert_int_equal(message_size(a), n);
	assert_int_equal(message_size(b), n);
	assert_string_equal(bs(a), bs(b));
	assert_string_equal(env(a), env(b));
	const char *specs[] = {"", "HEADER", "TEXT", "1", "2", "2.1", "2.2.MIME", "2.TEXT"};
	for (size_t i = 0; i < ARRAY_LEN(specs); i++) {
		char *x = fetch(a, p1, specs[i], NULL, 0), *y = fetch(b, p2, specs[i], NULL, 0);
		assert_string_equal(x, y);
		free(x);
		free(y);
	}
	/* the whole stream equals maildir.c's CRLF form */
	struct maildir_stream *ms = maildir_stream_open(p1, 0, -1);
	char buf[4096];
	ssize_t k = maildir_stream_read(ms, buf, sizeof buf);
	maildir_stream_close(ms);
	assert_int_equal(k, (ssize_t)n);
	assert_memory_equal(buf, crlf, n);
	message_put(a);
	message_put(b);
	free(p1);
	free(p2);
	free(crlf);
}

static void test_stream_ranges(void **state)
{
	(void)state;
	/* no line end at the end: the CRLF form adds one */
	static const char msg[] = "Subject: s\n\nab\ncd\r\nef";
	char *path = write_msg(msg, sizeof msg - 1);
	struct message *m = get(NULL, path);
	size_t n;
	char *crlf = crlf_of(msg, &n);
	assert_int_equal(n, 26); /* 12 + 2 + 4 + 4 + 4 */
	assert_int_equal(message_size(m), n);
	for (size_t off = 0; off <= n; off++) {
		for (size_t len = 0; len <= n - off + 2; len++) {
			size_t got;
			char *s = stream_range(m, path, off, len, off % 3 == 0 ? 4 : 5, &got);
			size_t want = len < n - off ? len : n - off;
			assert_int_equal(got, want);
			assert_memory_equal(s, crlf + off, want);
			free(s);
		}
	}
	char *t = fetch(m, path, "TEXT", NULL, 0);
	assert_string_equal(t, "ab\r\ncd\r\nef\r\n");
	free(t);
	assert_string_equal(bs(m), "(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 12 3 NIL NIL NIL NIL)");
	free(crlf);
	message_put(m);
	free(path);
}

/* A body of some MiB: a range deep inside is streamed exactly, whether
 * the line ends are LF or CRLF or mixed. */
static void test_stream_large(void **state)
{
	(void)state;
	size_t lines = 160000, o = 0;
	char *msg = xmalloc(lines * 40 + 64);
	o += (size_t)sprintf(msg, "Subject: large\n\n");
	for (size_t i = 0; i < lines; i++)
		o += (size_t)sprintf(msg + o, i % 7 == 3 ? "line %zu of the text\r\n" : "line %zu of the text\n", i);
	char *path = write_msg(msg, o);
	struct message *m = get(NULL, path);
	size_t n;
	char *crlf = crlf_of(msg, &n);
	assert_true(n > 3 * 1024 * 1024);
	assert_int_equal(message_size(m), n);
	const uint64_t offs[] = {0, 1024 * 1024 - 1, 1024 * 1024 + 1, 2500000, n - 10, n - 1};
	for (size_t i = 0; i < ARRAY_LEN(offs); i++) {
		size_t got;
		char *s = stream_range(m, path, offs[i], 5000, 4096, &got);
		size_t want = n - offs[i] < 5000 ? n - offs[i] : 5000;
		assert_int_equal(got, want);
		assert_memory_equal(s, crlf + offs[i], want);
		free(s);
	}
	message_put(m);
	free(crlf);
	free(path);
	free(msg);
}

/* ---- SEARCH body text -------------------------------------------------------------- */

static void test_search_body(void **state)
{
	(void)state;
	static const char msg[] =
		"Subject: greetings\n"
		"Content-Type: multipart/mixed; boundary=b\n"
		"\n"
		"--b\n"
		"Content-Type: text/plain; charset=iso-8859-1\n"
		"Content-Transfer-Encoding: quoted-printable\n"
		"\n"
		"Gr=FC=DFe aus K=F6ln, sch=F6ne Gr=FC=DFe an alle Freunde und Bekannt=\n"
		"en.\n"
		"--b\n"
		"Content-Type: application/octet-stream\n"
		"Content-Transfer-Encoding: base64\n"
		"\n"
		"c2VjcmV0IGJpbmFyeQ==\n"
		"--b--\n";
	char *path = write_msg(msg, sizeof msg - 1);
	struct message *m = get(NULL, path);
	char err[256];
	assert_int_equal(message_text_contains(m, path, false, "K\xc3\x96LN", err, sizeof err), 1);
	assert_int_equal(message_text_contains(m, path, false, "gr\xc3\xbc\xc3\x9f" "e aus", err, sizeof err), 1);
	/* a soft line break joins the word */
	assert_int_equal(message_text_contains(m, path, false, "bekannten", err, sizeof err), 1);
	/* decoded: the quoted-printable form is not in the text */
	assert_int_equal(message_text_contains(m, path, false, "K=F6ln", err, sizeof err), 0);
	assert_int_equal(message_text_contains(m, path, false, "Koln", err, sizeof err), 0);
	/* only text parts are searched */
	assert_int_equal(message_text_contains(m, path, false, "secret", err, sizeof err), 0);
	/* BODY does not look at the header, TEXT does */
	assert_int_equal(message_text_contains(m, path, false, "greetings", err, sizeof err), 0);
	assert_int_equal(message_text_contains(m, path, true, "GREETINGS", err, sizeof err), 1);
	assert_int_equal(message_text_contains(m, path, true, "freunde", err, sizeof err), 1);
	message_put(m);
	free(path);
}

static void test_search_long_text(void **state)
{
	(void)state;
	/* a match across the search's chunks (64 KiB) and UTF-8 split there */
	size_t pad = 64 * 1024 - 3;
	size_t hl = strlen("Content-Type: text/plain; charset=utf-8\n\n");
	char *msg = xmalloc(hl + pad + 64);
	memcpy(msg, "Content-Type: text/plain; charset=utf-8\n\n", hl);
	memset(msg + hl, 'x', pad);
	strcpy(msg + hl + pad, "\xc3\xa9t\xc3\xa9 NEEDLE\n");
	char *path = write_msg(msg, strlen(msg));
	struct message *m = get(NULL, path);
	char err[256];
	assert_int_equal(message_text_contains(m, path, false, "X\xc3\x89T\xc3\x89 needle", err, sizeof err), 1);
	assert_int_equal(message_text_contains(m, path, false, "needles", err, sizeof err), 0);
	message_put(m);
	free(path);
	free(msg);
}

/* ---- SEARCH on a worker: the octets and GMime agree ---------------------------------- */

/* The keys every message of the table is searched with. */
static const struct message_search_key plain_keys[] = {
	{MESSAGE_SEARCH_BODY, NULL, "needle"},                  /* bit 0 */
	{MESSAGE_SEARCH_TEXT, NULL, "needle"},                  /* bit 1 */
	{MESSAGE_SEARCH_HEADER, "subject", "NEEDLE"},           /* bit 2 */
	{MESSAGE_SEARCH_BODY, NULL, "gr\xc3\xbc\xc3\x9f" "e"},  /* bit 3: "grüße" */
	{MESSAGE_SEARCH_HEADER, "From", "alice"},               /* bit 4 */
	{MESSAGE_SEARCH_TEXT, NULL, ""},                        /* bit 5: always */
	{MESSAGE_SEARCH_HEADER, "X-Missing", ""},               /* bit 6: the field exists */
	{MESSAGE_SEARCH_TEXT, NULL, "partheader"},              /* bit 7 */
};

#define B(k) (UINT64_C(1) << (k))

static const struct {
	const char *name;
	const char *text;
	bool plain;                      /* searched without GMime */
	uint64_t found;
} plain_cases[] = {
	{"ascii body, CRLF", "From: Alice <alice@example.org>\r\nSubject: hi\r\n\r\nA NEEDLE here\r\n",
	 true, B(0) | B(1) | B(4) | B(5)},
	{"needle in the subject, LF", "From: bob@example.org\nSubject: the needle\n\nnothing\n", true,
	 B(1) | B(2) | B(5)},
	{"folded subject", "Subject: the\n nee\n dle\n\nx\n", true, B(5)},
	{"encoded word", "Subject: =?utf-8?q?a_needle?=\n\nx\n", true, B(1) | B(2) | B(5)},
	{"quoted-printable soft break",
	 "Subject: qp\nContent-Type: text/plain; charset=us-ascii\n"
	 "Content-Transfer-Encoding: quoted-printable\n\nnee=\ndle\n", false, B(0) | B(1) | B(5)},
	{"base64", "Subject: b\nContent-Transfer-Encoding: base64\n\nbmVlZGxlCg==\n", false,
	 B(0) | B(1) | B(5)},
	{"needle only in a part's header",
	 "Subject: m\nContent-Type: multipart/mixed; boundary=b\n\n--b\n"
	 "Content-Description: partheader\nContent-Type: text/plain\n\nplain\n--b--\n", false, B(5)},
	{"latin-1 text", "Subject: l\nContent-Type: text/plain; charset=iso-8859-1\n"
	 "Content-Transfer-Encoding: 8bit\n\nGr\xfc\xdf" "e\n", false, B(3) | B(5)},
	{"utf-8 text", "Subject: u\nContent-Type: text/plain; charset=\"UTF-8\"\n"
	 "Content-Transfer-Encoding: 8BIT\n\nGR\xc3\x9c\xc3\x9f" "E and a needle\n", true,
	 B(0) | B(1) | B(3) | B(5)},
	{"not text", "Subject: a\nContent-Type: application/octet-stream\n\nneedle\n", true, B(5)},
	{"not text, base64", "Content-Type: image/png; name=\"x.png\"\n"
	 "Content-Transfer-Encoding: base64\n\nbmVlZGxlCg==\n", true, B(5)},
	{"a line that is no field", "Subject: x\nnot a field\n\nneedle\n", false,
	 B(0) | B(1) | B(5)},
	{"RFC 2231 charset", "Content-Type: text/plain; charset*=utf-8''x\n\nneedle\n", false,
	 B(0) | B(1) | B(5)},
	{"empty field exists", "X-Missing:\nSubject: e\n\nneedle\n", true,
	 B(0) | B(1) | B(5) | B(6)},
	{"no header", "\nneedle\n", false, B(0) | B(1) | B(5)},
	{"no body", "Subject: needle\n", false, B(1) | B(2) | B(5)},
	{"8-bit header", "From: J\xc3\xb6rg <alice@example.org>\nSubject: S\xc3\x9c\xc3\x9f\n\nx\n", true,
	 B(4) | B(5)},
	{"NUL in the body", "Subject: z\n\nne\0edle needle\n", true, B(0) | B(1) | B(5)},
};

/* Each message of the table: the same answers with and without GMime,
 * the ones expected, and the octets path taken where it should be. */
static void test_search_plain_agrees(void **state)
{
	(void)state;
	size_t nk = sizeof plain_keys / sizeof *plain_keys;
	unsigned wrong = 0;
	for (size_t i = 0; i < sizeof plain_cases / sizeof *plain_cases; i++) {
		const char *t = plain_cases[i].text;
		size_t len = strlen(t);
		if (strcmp(plain_cases[i].name, "NUL in the body") == 0)
			len += strlen(t + len + 1) + 1;
		char *path = write_msg(t, len);
		char err[256];
		uint64_t fast = 0, slow = 0;
		assert_int_equal(message_search_file(path, plain_keys, nk, MESSAGE_SEARCH_PARSED, &slow,
						     err, sizeof err), 0);
		assert_int_equal(message_search_file(path, plain_keys, nk, MESSAGE_SEARCH_AUTO, &fast,
						     err, sizeof err), 0);
		uint64_t only = 0;
		int r = message_search_file(path, plain_keys, nk, MESSAGE_SEARCH_PLAIN, &only, err,
					    sizeof err);
		if (fast != slow || slow != plain_cases[i].found || (r == 0) != plain_cases[i].plain) {
			wrong++;
			print_error("%s: octets %#llx, GMime %#llx, expected %#llx, plain %d\n",
				    plain_cases[i].name, (unsigned long long)fast, (unsigned long long)slow,
				    (unsigned long long)plain_cases[i].found, r == 0);
		}
		free(path);
	}
	assert_int_equal(wrong, 0);
}

/* A file gone meanwhile is an error the caller counts as no match. */
static void test_search_file_gone(void **state)
{
	(void)state;
	char err[256];
	uint64_t found = 1;
	char *path = xasprintf("%s/gone-too", dir);
	assert_int_equal(message_search_file(path, plain_keys, 1, MESSAGE_SEARCH_AUTO, &found, err,
					     sizeof err), -1);
	assert_int_equal(errno, ENOENT);
	assert_true(found == 0);
	free(path);
}

/* ---- malformed MIME ------------------------------------------------------------------- */

static bool balanced(const char *s)
{
	long depth = 0;
	bool q = false;
	for (; *s; s++) {
		if (q && *s == '\\')
			s++;
		else if (*s == '"')
			q = !q;
		else if (!q && *s == '(')
			depth++;
		else if (!q && *s == ')' && --depth < 0)
			return false;
	}
	return depth == 0 && !q;
}

static void check_sane(const char *text, size_t len)
{
	char *path = write_msg(text, len);
	struct message *m = get(NULL, path);
	assert_true(balanced(bs(m)));
	assert_true(balanced(body(m)));
	assert_true(balanced(env(m)));
	const char *specs[] = {"", "1", "2", "1.1", "1.2", "2.1", "3", "1.MIME", "TEXT", "HEADER"};
	for (size_t i = 0; i < ARRAY_LEN(specs); i++) {
		struct message_section_spec sec;
		parse_section(specs[i], &sec, NULL, 0);
		struct message_section out;
		char err[256];
		assert_int_equal(message_section(m, path, &sec, &out, err, sizeof err), 0);
		if (out.kind == MESSAGE_SECTION_RANGE)
			assert_true(out.offset + out.length <= message_size(m));
		char *s = fetch(m, path, specs[i], NULL, 0);
		free(s);
	}
	char err[256];
	assert_true(message_text_contains(m, path, true, "zzz-not-there", err, sizeof err) == 0);
	message_put(m);
	free(path);
}

static void test_malformed(void **state)
{
	(void)state;
	/* the inner multipart never ends: the outer boundary ends it */
	static const char unended[] =
		"Content-Type: multipart/mixed; boundary=X\n\n"
		"--X\nContent-Type: text/plain\n\none\n"
		"--X\nContent-Type: multipart/alternative; boundary=Y\n\n"
		"--Y\n\ntwo\n--Y\n\nthree\n"
		"--X\n\nfour\n";
	char *path = write_msg(unended, sizeof unended - 1);
	struct message *m = get(NULL, path);
	char *s = fetch(m, path, "2.2", NULL, 0);
	assert_string_equal(s, "three");
	free(s);
	s = fetch(m, path, "3", NULL, 0);
	assert_string_equal(s, "four\r\n");
	free(s);
	message_put(m);
	free(path);
	check_sane(unended, sizeof unended - 1);
	static const char noboundary[] = "Content-Type: multipart/mixed\n\n--\nx\n";
	check_sane(noboundary, sizeof noboundary - 1);
	/* no boundary parameter: none invented */
	path = write_msg(noboundary, sizeof noboundary - 1);
	m = get(NULL, path);
	assert_null(strstr(bs(m), "boundary"));
	message_put(m);
	free(path);
	static const char junk[] = "From: <<<@@@>>> ,,, \"unterminated\nSubject: \xe9t\xe9 \x01\n"
				   "Content-Type: text/plain; charset=\"\nContent-Transfer-Encoding: x-what\n\n"
				   "\x01\x02 binary \xff\xfe";
	check_sane(junk, sizeof junk - 1);
	static const char headless[] = "no colon here at all\nand more\n";
	check_sane(headless, sizeof headless - 1);
	check_sane("", 0);
	check_sane("\n", 1);
	/* pseudo-random octets, with line ends and boundary-like lines mixed in */
	char noise[4096];
	unsigned x = 12345;
	for (size_t i = 0; i < sizeof noise; i++) {
		x = x * 1103515245u + 12345u;
		noise[i] = (char)(x >> 16);
		if ((x >> 8) % 29 == 0)
			noise[i] = '\n';
	}
	check_sane(noise, sizeof noise);
	static const char deep_head[] = "Content-Type: multipart/mixed; boundary=a\n\n";
	size_t cap = sizeof deep_head + 100 * 64;
	char *deep = xmalloc(cap);
	size_t o = 0;
	for (int i = 0; i < 100; i++)
		o += (size_t)snprintf(deep + o, cap - o,
				      "--a%d\nContent-Type: multipart/mixed; boundary=a%d\n\n", i, i + 1);
	check_sane(deep, o);
	free(deep);
	/* 40 multiparts of 40 parts: at most MESSAGE_PARTS_MAX described */
	cap = 40 * (64 + 40 * 16) + 64;
	char *wide = xmalloc(cap);
	o = (size_t)snprintf(wide, cap, "Content-Type: multipart/mixed; boundary=top\n\n");
	for (int i = 0; i < 40; i++) {
		o += (size_t)snprintf(wide + o, cap - o,
				      "--top\nContent-Type: multipart/mixed; boundary=in\n\n");
		for (int j = 0; j < 40; j++)
			o += (size_t)snprintf(wide + o, cap - o, "--in\n\n%d.%d\n", i, j);
		o += (size_t)snprintf(wide + o, cap - o, "--in--\n");
	}
	o += (size_t)snprintf(wide + o, cap - o, "--top--\n");
	check_sane(wide, o);
	char *wpath = write_msg(wide, o);
	struct message *w = get(NULL, wpath);
	size_t described = 0;
	for (const char *q = bs(w); (q = strstr(q, "(\"text\" \"plain\"")); q++)
		described++;
	assert_true(described > 500);
	assert_true(described < MESSAGE_PARTS_MAX);
	char *s5 = fetch(w, wpath, "5.7", NULL, 0);
	assert_string_equal(s5, "4.6");
	free(s5);
	message_put(w);
	free(wpath);
	free(wide);
}

/* A header larger than MESSAGE_HEADER_MAX: GMime reads only that much of
 * it, the rest counts as body; parts and offsets stay right. */
static void test_huge_header(void **state)
{
	(void)state;
	static const char head[] = "Subject: big\nContent-Type: multipart/mixed; boundary=q\n";
	static const char tail[] = "\n--q\nContent-Type: text/plain\n\nhello\n--q\n\nworld\n--q--\n";
	size_t lines = MESSAGE_HEADER_MAX / 50 + 100;
	char *msg = xmalloc(sizeof head + lines * 64 + sizeof tail);
	size_t o = 0;
	memcpy(msg, head, sizeof head - 1);
	o += sizeof head - 1;
	for (size_t i = 0; i < lines; i++)
		o += (size_t)sprintf(msg + o, "X-Filler-%06zu: %s\n", i,
				     "0123456789012345678901234567890123");
	memcpy(msg + o, tail, sizeof tail);
	o += sizeof tail - 1;
	char *path = write_msg(msg, o);
	struct message *m = get(NULL, path);
	assert_string_equal(env(m), "(NIL \"big\" NIL NIL NIL NIL NIL NIL NIL NIL)");
	char *s = fetch(m, path, "1", NULL, 0);
	assert_string_equal(s, "hello");
	free(s);
	s = fetch(m, path, "2", NULL, 0);
	assert_string_equal(s, "world");
	free(s);
	s = fetch(m, path, "HEADER", NULL, 0);
	/* the CRLF form: one CR more per line of 52 octets */
	assert_true(strlen(s) <= MESSAGE_HEADER_MAX + MESSAGE_HEADER_MAX / 50 + 64);
	assert_memory_equal(s, "Subject: big\r\n", 14);
	char last[32];
	snprintf(last, sizeof last, "X-Filler-%06zu:", lines - 1);
	assert_null(strstr(s, last));
	free(s);
	char err[256];
	assert_int_equal(message_header_contains(m, path, "x-filler-000001", "0123", err, sizeof err), 1);
	assert_int_equal(message_text_contains(m, path, false, "world", err, sizeof err), 1);
	size_t n;
	free(crlf_of(msg, &n));
	assert_int_equal(message_size(m), n);
	message_put(m);
	free(path);
	free(msg);
}

/* Tens of thousands of boundaries: GMime sees the first
 * MESSAGE_DASH_LINES_MAX lines starting with "--" only, at most
 * MESSAGE_PARTS_MAX parts are described, and the sizes stay right. */
static void test_many_parts(void **state)
{
	(void)state;
	static const char head[] = "Content-Type: multipart/mixed; boundary=a\n\n";
	enum { PARTS = 30000 };
	size_t cap = sizeof head + PARTS * 16 + 16;
	char *msg = xmalloc(cap);
	size_t o = 0;
	memcpy(msg, head, sizeof head - 1);
	o += sizeof head - 1;
	for (int i = 0; i < PARTS; i++)
		o += (size_t)snprintf(msg + o, cap - o, "--a\n\np%d\n", i);
	o += (size_t)snprintf(msg + o, cap - o, "--a--\n");
	char *path = write_msg(msg, o);
	struct message *m = get(NULL, path);
	const char *b = bs(m);
	assert_true(balanced(b));
	size_t described = 0;
	for (const char *p = b; (p = strstr(p, "(\"text\" \"plain\"")); p++)
		described++;
	assert_true(described >= 100);
	assert_true(described < MESSAGE_PARTS_MAX);
	char *s = fetch(m, path, "7", NULL, 0);
	assert_string_equal(s, "p6");
	free(s);
	assert_null(fetch(m, path, "29999", NULL, 0));
	size_t n;
	free(crlf_of(msg, &n));
	assert_int_equal(message_size(m), n);
	message_put(m);
	free(path);
	free(msg);
}

/* ---- the cache -------------------------------------------------------------------------- */

static void test_cache(void **state)
{
	(void)state;
	char *p1 = write_msg(MIXED, strlen(MIXED));
	struct message_cache *c = message_cache_new(0);
	struct message *a = get(c, p1), *b = get(c, p1);
	assert_ptr_equal(a, b); /* parsed once */
	message_put(b);
	/* the same message renamed (flags changed) is still cached */
	const char *colon = strrchr(p1, ':');
	char *p2 = xasprintf("%.*s:2,FS", (int)(colon - p1), p1);
	assert_int_equal(rename(p1, p2), 0);
	b = get(c, p2);
	assert_ptr_equal(a, b);
	message_put(b);
	/* another size: parsed again */
	FILE *f = fopen(p2, "ab");
	fputs("x\n", f);
	fclose(f);
	b = get(c, p2);
	assert_ptr_not_equal(a, b);
	message_put(b);
	/* the same name and size elsewhere (another user's Maildir) is
	 * another file: not served from the cache */
	char *sub = xasprintf("%s/other", dir);
	assert_int_equal(mkdir(sub, 0700), 0);
	char *mixed2 = xstrdup(MIXED);
	memcpy(strstr(mixed2, "Quarterly"), "Confident", 9);
	char *p3 = xasprintf("%s/%s", sub, strrchr(p2, '/') + 1);
	FILE *g = fopen(p3, "wb");
	fputs(mixed2, g);
	fclose(g);
	struct message *o = get(c, p3);
	assert_ptr_not_equal(o, a);
	assert_non_null(strstr(env(o), "Confident"));
	message_put(o);
	unlink(p3);
	rmdir(sub);
	free(p3);
	free(mixed2);
	free(sub);
	message_put(a); /* still valid until now, though the cache dropped it */
	message_cache_free(c);
	free(p1);
	free(p2);
}

static void test_cache_bounded(void **state)
{
	(void)state;
	/* room for a few summaries only (about 1.7 KiB each) */
	struct message_cache *c = message_cache_new(16 * 1024);
	enum { N = 40 };
	char *paths[N];
	struct message *held[N]; /* held: a pointer seen again means a hit */
	for (size_t i = 0; i < N; i++) {
		paths[i] = write_msg(MIXED, strlen(MIXED));
		held[i] = get(c, paths[i]);
	}
	/* the least recently used went */
	struct message *again = get(c, paths[0]);
	assert_ptr_not_equal(again, held[0]);
	assert_string_equal(bs(again), bs(held[0]));
	message_put(again);
	/* a pass over more messages than fit still hits: once full, new
	 * summaries queue last instead of pushing out the whole cache */
	size_t hits = 0;
	for (size_t i = 0; i < N; i++) {
		struct message *m = get(c, paths[i]);
		hits += m == held[i];
		message_put(held[i]);
		held[i] = m;
	}
	assert_true(hits >= 4);
	assert_true(hits < N);
	for (size_t i = 0; i < N; i++) {
		message_put(held[i]);
		free(paths[i]);
	}
	message_cache_free(c);
}

static void test_vanished(void **state)
{
	(void)state;
	char err[256];
	char *path = xasprintf("%s/gone", dir);
	assert_null(message_get(NULL, path, err, sizeof err));
	assert_int_equal(errno, ENOENT);
	free(path);
}

static int group_setup(void **state)
{
	(void)state;
	memcpy(dir, "/tmp/posthorn-message-XXXXXX", sizeof "/tmp/posthorn-message-XXXXXX");
	if (!mkdtemp(dir))
		return -1;
	message_init();
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	message_shutdown();
	char *cmd = xasprintf("rm -rf '%s'", dir);
	int r = system(cmd);
	free(cmd);
	return r == 0 ? 0 : -1;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_mixed_envelope),
		cmocka_unit_test(test_mixed_bodystructure),
		cmocka_unit_test(test_mixed_sections),
		cmocka_unit_test(test_header_fields),
		cmocka_unit_test(test_encoded_words),
		cmocka_unit_test(test_missing_headers),
		cmocka_unit_test(test_quoting),
		cmocka_unit_test(test_source_routes),
		cmocka_unit_test(test_search_addresses),
		cmocka_unit_test(test_nested_message),
		cmocka_unit_test(test_lf_and_crlf_agree),
		cmocka_unit_test(test_stream_ranges),
		cmocka_unit_test(test_stream_large),
		cmocka_unit_test(test_search_body),
		cmocka_unit_test(test_search_long_text),
		cmocka_unit_test(test_search_plain_agrees),
		cmocka_unit_test(test_search_file_gone),
		cmocka_unit_test(test_malformed),
		cmocka_unit_test(test_huge_header),
		cmocka_unit_test(test_many_parts),
		cmocka_unit_test(test_cache),
		cmocka_unit_test(test_cache_bounded),
		cmocka_unit_test(test_vanished),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}

/* Unit tests for imap_parse, the IMAP command parser: the command forms
 * of RFC 3501 §6 with their §9 syntax, literals and the continuation flow
 * (§7.5), LITERAL+/LITERAL- (RFC 7888), SASL-IR (RFC 4959), sequence sets,
 * and hostile input: every limit, garbage, NULs, and recovery after BAD. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <event2/buffer.h>

#include "proto/imap/imap_parse.h"

struct fixture {
	struct imap_parser *p;
	struct evbuffer *in;
	struct imap_command *cmd;       /* the last command parsed */
	/* the APPEND sink */
	char *sunk;
	size_t sunk_len, sunk_cap;
	size_t writes;
	bool fail_writes;
	size_t starts;          /* sink_start calls */
};

static int sink_write(void *arg, const void *data, size_t len)
{
	struct fixture *f = arg;
	assert_true(len > 0);
	f->writes++;
	if (f->fail_writes)
		return -1;
	if (f->sunk_len + len > f->sunk_cap) {
		f->sunk_cap = (f->sunk_len + len) * 2;
		f->sunk = realloc(f->sunk, f->sunk_cap);
		assert_non_null(f->sunk);
	}
	memcpy(f->sunk + f->sunk_len, data, len);
	f->sunk_len += len;
	return 0;
}

static int sink_start(void *arg, const struct imap_command *c)
{
	assert_string_equal(c->name, "APPEND");
	struct fixture *f = arg;
	f->starts++;
	return 0;
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	assert_non_null(f);
	f->p = imap_parser_new();
	f->in = evbuffer_new();
	assert_non_null(f->in);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	imap_command_free(f->cmd);
	imap_parser_free(f->p);
	evbuffer_free(f->in);
	free(f->sunk);
	free(f);
	return 0;
}

static void authenticate(struct fixture *f)
{
	imap_parser_set_authenticated(f->p, true);
}

static void use_sink(struct fixture *f, uint64_t max)
{
	struct imap_literal_sink sink = { f, sink_write, sink_start };
	authenticate(f);
	imap_parser_set_append(f->p, max, &sink);
}

static void add(struct fixture *f, const void *data, size_t n)
{
	assert_int_equal(evbuffer_add(f->in, data, n), 0);
}

static void add_str(struct fixture *f, const char *s)
{
	add(f, s, strlen(s));
}

#define ADD_LIT(f, s) add((f), (s), sizeof(s) - 1)

static void add_fill(struct fixture *f, char c, size_t n)
{
	char *b = malloc(n ? n : 1);
	assert_non_null(b);
	memset(b, c, n);
	add(f, b, n);
	free(b);
}

static enum imap_parse_status feed(struct fixture *f)
{
	struct imap_command *c = NULL;
	enum imap_parse_status st = imap_parse_feed(f->p, f->in, &c);
	if (st == IMAP_PARSE_COMMAND) {
		assert_non_null(c);
		imap_command_free(f->cmd);
		f->cmd = c;
	} else {
		assert_null(c);
	}
	if (st == IMAP_PARSE_NEED_MORE)
		assert_true(evbuffer_get_length(f->in) < IMAP_LINE_MAX);
	return st;
}

/* Add s; the next thing must be a whole command (continuations allowed). */
static struct imap_command *command(struct fixture *f, const char *s)
{
	add_str(f, s);
	enum imap_parse_status st;
	while ((st = feed(f)) == IMAP_PARSE_CONTINUE)
		;
	assert_int_equal(st, IMAP_PARSE_COMMAND);
	return f->cmd;
}

/* Add s; the next thing must be an error. */
static const struct imap_parse_error *error(struct fixture *f, const char *s)
{
	add_str(f, s);
	enum imap_parse_status st;
	while ((st = feed(f)) == IMAP_PARSE_CONTINUE)
		;
	assert_int_equal(st, IMAP_PARSE_ERROR);
	const struct imap_parse_error *e = imap_parser_error(f->p);
	assert_true(e->reason[0] != '\0');
	return e;
}

static void expect_error_tag(const struct imap_parse_error *e, const char *tag)
{
	if (!tag) {
		assert_false(e->has_tag);
		return;
	}
	assert_true(e->has_tag);
	assert_string_equal(e->tag, tag);
}

/* Nothing more buffered, no more events. */
static void expect_idle(struct fixture *f)
{
	assert_int_equal(feed(f), IMAP_PARSE_NEED_MORE);
	assert_int_equal(evbuffer_get_length(f->in), 0);
}

/* Recovery: a NOOP after whatever came before parses cleanly. */
static void expect_recovers(struct fixture *f)
{
	struct imap_command *c = command(f, "Z9 NOOP\r\n");
	assert_string_equal(c->tag, "Z9");
	assert_string_equal(c->name, "NOOP");
	assert_int_equal(c->args.n, 0);
	expect_idle(f);
}

/* Feed data in chunks of the given sizes (cycled), calling feed until
 * NEED_MORE after each; the events go to trace: C continue, M command,
 * E error. */
static void feed_chunks(struct fixture *f, const char *data, size_t n, const size_t *sizes,
			size_t nsizes, char *trace, size_t tracesz)
{
	size_t t = 0, k = 0;
	for (size_t i = 0; i < n;) {
		size_t c = sizes[k++ % nsizes];
		if (c > n - i)
			c = n - i;
		add(f, data + i, c);
		i += c;
		enum imap_parse_status st;
		while ((st = feed(f)) != IMAP_PARSE_NEED_MORE) {
			assert_true(t + 1 < tracesz);
			trace[t++] = st == IMAP_PARSE_CONTINUE ? 'C' : st == IMAP_PARSE_COMMAND ? 'M' : 'E';
		}
	}
	trace[t] = '\0';
}

static void feed_bytewise(struct fixture *f, const char *s, char *trace, size_t tracesz)
{
	const size_t one = 1;
	feed_chunks(f, s, strlen(s), &one, 1, trace, tracesz);
}

static const struct imap_arg *arg(const struct imap_command *c, size_t i)
{
	const struct imap_arg *a = imap_args_at(&c->args, i);
	assert_non_null(a);
	return a;
}

static void expect_astring(const struct imap_arg *a, const char *want)
{
	size_t len;
	const char *s = imap_arg_astring(a, &len);
	assert_non_null(s);
	assert_string_equal(s, want);
	assert_int_equal(len, strlen(want));
}

/* ---- RFC 3501 command forms -------------------------------------------------- */

static void test_login_atoms_and_quoted(void **state)
{
	struct fixture *f = *state;
	/* §6.2.3 */
	struct imap_command *c = command(f, "a001 LOGIN SMITH SESAME\r\n");
	assert_string_equal(c->tag, "a001");
	assert_string_equal(c->name, "LOGIN");
	assert_int_equal(c->args.n, 2);
	expect_astring(arg(c, 0), "SMITH");
	expect_astring(arg(c, 1), "SESAME");
	assert_int_equal(arg(c, 0)->type, IMAP_ARG_ATOM);

	c = command(f, "a002 login \"fred smith\" \"pa\\\"ss\\\\word\"\r\n");
	assert_string_equal(c->name, "LOGIN");
	assert_int_equal(arg(c, 0)->type, IMAP_ARG_QUOTED);
	expect_astring(arg(c, 0), "fred smith");
	expect_astring(arg(c, 1), "pa\"ss\\word");
	assert_null(imap_args_at(&c->args, 2));
	expect_idle(f);
}

static void test_login_literals(void **state)
{
	struct fixture *f = *state;
	add_str(f, "A1 LOGIN {11}\r\n");
	assert_int_equal(feed(f), IMAP_PARSE_CONTINUE);
	const struct imap_command *pend = imap_parser_pending(f->p);
	assert_non_null(pend);
	assert_string_equal(pend->tag, "A1");
	assert_string_equal(pend->name, "LOGIN");
	assert_int_equal(pend->args.n, 1);
	assert_int_equal(pend->args.v[0].type, IMAP_ARG_LITERAL);
	assert_int_equal(pend->args.v[0].literal_size, 11);
	assert_int_equal(feed(f), IMAP_PARSE_NEED_MORE);

	add_str(f, "FRED FOOBAR {7}\r\n");
	assert_int_equal(feed(f), IMAP_PARSE_CONTINUE);
	add_str(f, "fat man\r\n");
	assert_int_equal(feed(f), IMAP_PARSE_COMMAND);
	struct imap_command *c = f->cmd;
	assert_int_equal(c->args.n, 2);
	assert_int_equal(arg(c, 0)->type, IMAP_ARG_LITERAL);
	assert_true(arg(c, 0)->literal_sync);
	assert_false(arg(c, 0)->sunk);
	expect_astring(arg(c, 0), "FRED FOOBAR");
	size_t len;
	assert_string_equal(imap_arg_string(arg(c, 1), &len), "fat man");
	assert_int_equal(len, 7);
	assert_null(imap_arg_atom(arg(c, 1)));
	expect_idle(f);

	/* an empty literal still gets its continuation */
	add_str(f, "A2 LOGIN {0}\r\n");
	assert_int_equal(feed(f), IMAP_PARSE_CONTINUE);
	c = command(f, " x\r\n");
	expect_astring(arg(c, 0), "");
	expect_astring(arg(c, 1), "x");
	expect_idle(f);
}

static void test_select_mailboxes(void **state)
{
	struct fixture *f = *state;
	struct imap_command *c = command(f, "A142 SELECT INBOX\r\n");
	assert_string_equal(c->name, "SELECT");
	expect_astring(arg(c, 0), "INBOX");

	/* "]" is an ASTRING-CHAR, "[" an ATOM-CHAR: Gmail-style names */
	c = command(f, "A143 select [Gmail]/Sent\r\n");
	assert_string_equal(c->name, "SELECT");
	expect_astring(arg(c, 0), "[Gmail]/Sent");
	assert_null(imap_arg_atom(arg(c, 0)));

	c = command(f, "A144 EXAMINE \"[Gmail]/All Mail\"\r\n");
	expect_astring(arg(c, 0), "[Gmail]/All Mail");

	/* a mailbox called NIL is still an astring */
	c = command(f, "A145 SELECT nil\r\n");
	assert_true(imap_arg_is_nil(arg(c, 0)));
	expect_astring(arg(c, 0), "nil");

	/* LIST patterns: wildcards are list-mailbox, not astring */
	c = command(f, "A146 LIST \"\" %/*\r\n");
	expect_astring(arg(c, 0), "");
	assert_null(imap_arg_astring(arg(c, 1), NULL));
	assert_string_equal(imap_arg_list_mailbox(arg(c, 1), NULL), "%/*");
	expect_idle(f);
}

static void test_fetch_attributes(void **state)
{
	struct fixture *f = *state;
	/* §6.4.5 examples */
	struct imap_command *c = command(f, "a003 fetch 12 full\r\n");
	assert_string_equal(c->name, "FETCH");
	uint32_t n;
	assert_true(imap_arg_u32(arg(c, 0), &n));
	assert_int_equal(n, 12);
	assert_true(imap_arg_is(arg(c, 1), "FULL"));

	c = command(f, "a004 fetch 12 body[header]\r\n");
	const struct imap_section *s = imap_arg_section(arg(c, 1));
	assert_non_null(s);
	assert_int_equal(s->att, IMAP_SECTION_BODY);
	assert_false(s->peek);
	assert_int_equal(s->spec.nparts, 0);
	assert_int_equal(s->spec.text, MESSAGE_SECTION_HEADER);
	assert_false(s->partial);
	assert_string_equal(arg(c, 1)->str, "body[header]");

	c = command(f, "A654 FETCH 2:4 (FLAGS BODY[HEADER.FIELDS (DATE FROM)])\r\n");
	assert_string_equal(arg(c, 0)->str, "2:4");
	const struct imap_args *l = imap_arg_list(arg(c, 1));
	assert_non_null(l);
	assert_int_equal(l->n, 2);
	assert_true(imap_arg_is(imap_args_at(l, 0), "FLAGS"));
	s = imap_arg_section(imap_args_at(l, 1));
	assert_non_null(s);
	assert_int_equal(s->spec.text, MESSAGE_SECTION_HEADER_FIELDS);
	assert_int_equal(s->spec.nfields, 2);
	assert_string_equal(s->spec.fields[0], "DATE");
	assert_string_equal(s->spec.fields[1], "FROM");

	c = command(f, "A1 FETCH 1:* (UID BODY.PEEK[HEADER.FIELDS.NOT (\"X-Spam\" Received)]<0.100> "
		       "BODY[1.2.MIME] BODY[3.TEXT]<5.2048> BODY[] BODY[4.1] BINARY.PEEK[1.2] "
		       "BINARY.SIZE[3] ENVELOPE)\r\n");
	l = imap_arg_list(arg(c, 1));
	assert_int_equal(l->n, 9);
	s = imap_arg_section(imap_args_at(l, 1));
	assert_true(s->peek);
	assert_int_equal(s->spec.text, MESSAGE_SECTION_HEADER_FIELDS_NOT);
	assert_int_equal(s->spec.nfields, 2);
	assert_string_equal(s->spec.fields[0], "X-Spam");
	assert_string_equal(s->spec.fields[1], "Received");
	assert_true(s->partial);
	assert_int_equal(s->origin, 0);
	assert_int_equal(s->count, 100);
	s = imap_arg_section(imap_args_at(l, 2));
	assert_int_equal(s->spec.nparts, 2);
	assert_int_equal(s->spec.parts[0], 1);
	assert_int_equal(s->spec.parts[1], 2);
	assert_int_equal(s->spec.text, MESSAGE_SECTION_MIME);
	s = imap_arg_section(imap_args_at(l, 3));
	assert_int_equal(s->spec.nparts, 1);
	assert_int_equal(s->spec.parts[0], 3);
	assert_int_equal(s->spec.text, MESSAGE_SECTION_TEXT);
	assert_int_equal(s->origin, 5);
	assert_int_equal(s->count, 2048);
	s = imap_arg_section(imap_args_at(l, 4));
	assert_int_equal(s->spec.nparts, 0);
	assert_int_equal(s->spec.text, MESSAGE_SECTION_WHOLE);
	s = imap_arg_section(imap_args_at(l, 5));
	assert_int_equal(s->spec.nparts, 2);
	assert_int_equal(s->spec.text, MESSAGE_SECTION_WHOLE);
	s = imap_arg_section(imap_args_at(l, 6));
	assert_int_equal(s->att, IMAP_SECTION_BINARY);
	assert_true(s->peek);
	s = imap_arg_section(imap_args_at(l, 7));
	assert_int_equal(s->att, IMAP_SECTION_BINARY_SIZE);
	assert_true(imap_arg_is(imap_args_at(l, 8), "ENVELOPE"));

	/* a "]" inside a quoted header name does not end the section */
	c = command(f, "A2 FETCH 1 BODY[HEADER.FIELDS (\"a]b\")]\r\n");
	s = imap_arg_section(arg(c, 1));
	assert_string_equal(s->spec.fields[0], "a]b");

	/* outside FETCH, brackets are just ASTRING-CHARs */
	c = command(f, "A3 SELECT BODY[x]\r\n");
	assert_int_equal(arg(c, 0)->type, IMAP_ARG_ATOM);
	expect_idle(f);
}

static void test_fetch_bad_sections(void **state)
{
	struct fixture *f = *state;
	static const char *const bad[] = {
		"BODY[1.]", "BODY[MIME]", "BODY[0]", "BODY[01]", "BODY[HEADER.FIELDS]",
		"BODY[HEADER.FIELDS ()]", "BODY[HEADER.FIELDS (a  b)]", "BODY[HEADER.FIELDS (a)",
		"BODY[]<0>", "BODY[]<0.0>", "BODY[]<1.2>x", "BODY[]<.2>", "FOO[1]", "[1]",
		"BODY[HEADERS]", "BODY[TEXT.MIME]", "BINARY[TEXT]", "BINARY.SIZE[1]<0.1>",
		"BODY[1][2]", "BODY[[1]]", "BODY[HEADER.FIELDS (\"a\\x\")]",
		"BODY[4294967296]", "BODY[]<4294967296.1>",
		("BODY[1.2.3.4.5.6.7.8.9.10.11.12.13.14.15.16."
		 "17.18.19.20.21.22.23.24.25.26.27.28.29.30.31.32.33]"),
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char line[256];
		snprintf(line, sizeof(line), "B%zu FETCH 1 (FLAGS %s)\r\n", i, bad[i]);
		const struct imap_parse_error *e = error(f, line);
		char tag[16];
		snprintf(tag, sizeof(tag), "B%zu", i);
		expect_error_tag(e, tag);
		expect_idle(f);
	}
	/* no literal inside a section: the rest arrives as a new line */
	expect_error_tag(error(f, "B99 FETCH 1 BODY[HEADER.FIELDS ({4}\r\n"), "B99");
	expect_idle(f);
	/* the 32 part numbers that are allowed */
	struct imap_command *c = command(f, "A1 FETCH 1 BODY[1.2.3.4.5.6.7.8.9.10.11.12.13.14.15.16."
					    "17.18.19.20.21.22.23.24.25.26.27.28.29.30.31.32]\r\n");
	assert_int_equal(imap_arg_section(arg(c, 1))->spec.nparts, 32);
	assert_int_equal(imap_arg_section(arg(c, 1))->spec.parts[31], 32);
	expect_recovers(f);
}

static void test_store_flags(void **state)
{
	struct fixture *f = *state;
	struct imap_command *c = command(f, "A003 STORE 2:4 +FLAGS (\\Deleted)\r\n");
	assert_string_equal(c->name, "STORE");
	assert_true(imap_arg_is(arg(c, 1), "+flags"));
	const struct imap_args *l = imap_arg_list(arg(c, 2));
	assert_int_equal(l->n, 1);
	assert_string_equal(imap_arg_flag(imap_args_at(l, 0)), "\\Deleted");
	assert_null(imap_arg_atom(imap_args_at(l, 0)));

	c = command(f, "A004 UID STORE 1:* -FLAGS.SILENT (\\Seen $Forwarded Junk)\r\n");
	assert_string_equal(c->name, "UID STORE");
	l = imap_arg_list(arg(c, 2));
	assert_int_equal(l->n, 3);
	assert_string_equal(imap_arg_flag(imap_args_at(l, 0)), "\\Seen");
	assert_string_equal(imap_arg_flag(imap_args_at(l, 1)), "$Forwarded");
	assert_string_equal(imap_arg_flag(imap_args_at(l, 2)), "Junk");

	c = command(f, "A005 STORE 1 FLAGS ()\r\n");
	assert_int_equal(imap_arg_list(arg(c, 2))->n, 0);

	/* "\" alone, "\" inside an atom and "\*" are not flags */
	expect_error_tag(error(f, "A006 STORE 1 FLAGS (\\)\r\n"), "A006");
	expect_error_tag(error(f, "A007 STORE 1 FLAGS (a\\b)\r\n"), "A007");
	c = command(f, "A008 STORE 1 FLAGS (\\*)\r\n");
	assert_null(imap_arg_flag(imap_args_at(imap_arg_list(arg(c, 2)), 0)));
	expect_idle(f);
}

static void test_search_nested(void **state)
{
	struct fixture *f = *state;
	struct imap_command *c =
	    command(f, "A282 SEARCH FLAGGED SINCE 1-Feb-1994 NOT FROM \"Smith\"\r\n");
	assert_string_equal(c->name, "SEARCH");
	assert_int_equal(c->args.n, 6);
	assert_true(imap_arg_is(arg(c, 2), "1-feb-1994"));
	assert_int_equal(arg(c, 5)->type, IMAP_ARG_QUOTED);

	c = command(f, "A283 UID SEARCH OR (FROM \"a\" SUBJECT b) (NOT (SEEN DELETED)) UID 1:*\r\n");
	assert_string_equal(c->name, "UID SEARCH");
	assert_int_equal(c->args.n, 5);
	assert_true(imap_arg_is(arg(c, 0), "OR"));
	const struct imap_args *l = imap_arg_list(arg(c, 1));
	assert_int_equal(l->n, 4);
	l = imap_arg_list(arg(c, 2));
	assert_int_equal(l->n, 2);
	l = imap_arg_list(imap_args_at(l, 1));
	assert_int_equal(l->n, 2);
	assert_true(imap_arg_is(imap_args_at(l, 1), "DELETED"));
	assert_string_equal(arg(c, 4)->str, "1:*");

	/* 8-bit search text must come as a literal (RFC 3501 §9 quoted is
	 * 7-bit; CHAR8 is for literals) */
	add_str(f, "A284 SEARCH CHARSET UTF-8 TEXT {6}\r\n");
	assert_int_equal(feed(f), IMAP_PARSE_CONTINUE);
	c = command(f, "\xc3\xa4\xc3\xb6\xc3\xbc\r\n");
	assert_string_equal(imap_arg_string(arg(c, 3), NULL), "\xc3\xa4\xc3\xb6\xc3\xbc");
	const struct imap_parse_error *e = error(f, "A285 SEARCH TEXT \"\xc3\xa4\"\r\n");
	expect_error_tag(e, "A285");
	assert_non_null(strstr(e->reason, "8-bit"));
	expect_recovers(f);
}

static void test_append_in_memory(void **state)
{
	struct fixture *f = *state;
	authenticate(f);
	/* §6.3.11 (message shortened) */
	static const char msg[] = "Date: Mon, 7 Feb 1994 21:52:25 -0800 (PST)\r\n"
				  "Subject: afternoon meeting\r\n\r\nHello Joe\r\n";
	char line[128];
	snprintf(line, sizeof(line),
		 "A003 APPEND saved-messages (\\Seen) \"05-Jan-2004 10:00:00 +0100\" {%zu}\r\n",
		 sizeof(msg) - 1);
	add_str(f, line);
	assert_int_equal(feed(f), IMAP_PARSE_CONTINUE);
	add_str(f, msg);
	struct imap_command *c = command(f, "\r\n");
	assert_string_equal(c->name, "APPEND");
	assert_int_equal(c->args.n, 4);
	expect_astring(arg(c, 0), "saved-messages");
	assert_string_equal(imap_arg_flag(imap_args_at(imap_arg_list(arg(c, 1)), 0)), "\\Seen");
	assert_string_equal(imap_arg_string(arg(c, 2), NULL), "05-Jan-2004 10:00:00 +0100");
	assert_int_equal(arg(c, 3)->type, IMAP_ARG_LITERAL);
	assert_false(arg(c, 3)->sunk);
	assert_string_equal(arg(c, 3)->str, msg);
	expect_idle(f);
}

/* 200,000 octets to the sink, fed in odd pieces: every octet arrives, in
 * order, in more than one chunk, and none is kept in the command. */
static void test_append_streamed_to_sink(void **state)
{
	struct fixture *f = *state;
	use_sink(f, 1024 * 1024);
	enum { SIZE = 200000 };
	static const char head[] = "A1 APPEND {5}\r\nINBOX (\\Draft) {200000}\r\n";
	static const char tail[] = "\r\nA2 NOOP\r\n";
	size_t n = sizeof(head) - 1 + SIZE + sizeof(tail) - 1;
	char *data = malloc(n);
	assert_non_null(data);
	memcpy(data, head, sizeof(head) - 1);
	for (size_t i = 0; i < SIZE; i++)
		data[sizeof(head) - 1 + i] = (char)("A3 DELETE INBOX\r\n"[i % 17]);
	memcpy(data + sizeof(head) - 1 + SIZE, tail, sizeof(tail) - 1);

	static const size_t sizes[] = { 1, 7, 4096, 3, 65536, 13, 999 };
	char trace[16];
	struct imap_command *c1 = NULL;
	/* collect A1 before A2 replaces it: feed up to the end of A1 first */
	size_t first = sizeof(head) - 1 + SIZE + 2;
	feed_chunks(f, data, first, sizes, 7, trace, sizeof(trace));
	assert_string_equal(trace, "CCM");
	c1 = f->cmd;
	assert_string_equal(c1->name, "APPEND");
	assert_int_equal(c1->args.n, 3);
	expect_astring(arg(c1, 0), "INBOX");
	const struct imap_arg *m = arg(c1, 2);
	assert_int_equal(m->type, IMAP_ARG_LITERAL);
	assert_true(m->sunk);
	assert_null(m->str);
	assert_int_equal(m->literal_size, SIZE);
	assert_false(m->sink_failed);
	assert_false(m->literal_nul);
	assert_int_equal(f->sunk_len, SIZE);
	assert_memory_equal(f->sunk, data + sizeof(head) - 1, SIZE);
	assert_true(f->writes > 1);

	feed_chunks(f, data + first, n - first, sizes, 7, trace, sizeof(trace));
	assert_string_equal(trace, "M");
	assert_string_equal(f->cmd->tag, "A2");
	expect_idle(f);
	free(data);
}

static void test_append_sink_limits(void **state)
{
	struct fixture *f = *state;
	use_sink(f, 1000);
	/* over limits.message-size: refused before any octet */
	const struct imap_parse_error *e = error(f, "A1 APPEND INBOX {1001}\r\n");
	expect_error_tag(e, "A1");
	assert_non_null(strstr(e->reason, "[TOOBIG]"));
	assert_int_equal(f->writes, 0);
	expect_recovers(f);

	/* a small LITERAL+ message also goes to the sink */
	struct imap_command *c = command(f, "A2 APPEND INBOX {5+}\r\nhello\r\n");
	assert_true(arg(c, 1)->sunk);
	assert_int_equal(f->sunk_len, 5);

	/* RFC 3502 MULTIAPPEND: several messages, each begun by start */
	size_t starts = f->starts, len = f->sunk_len;
	c = command(f, "A3 APPEND INBOX {1+}\r\nx (\\Seen) {1+}\r\ny\r\n");
	assert_int_equal(c->args.n, 4);
	assert_true(arg(c, 1)->sunk);
	assert_true(arg(c, 3)->sunk);
	assert_int_equal(f->starts, starts + 2);
	assert_int_equal(f->sunk_len, len + 2);
	/* but a literal inside a list is no message */
	c = command(f, "A3 APPEND INBOX {1+}\r\nx (a {1+}\r\nz)\r\n");
	assert_false(arg(c, 2)->list.v[1].sunk);
	assert_int_equal(f->starts, starts + 3);
	expect_recovers(f);

	/* the sink fails: the literal is still consumed, the command flagged */
	f->fail_writes = true;
	ADD_LIT(f, "A4 APPEND INBOX {3+}\r\na\0b\r\n");
	assert_int_equal(feed(f), IMAP_PARSE_COMMAND);
	c = f->cmd;
	assert_true(arg(c, 1)->sink_failed);
	assert_true(arg(c, 1)->literal_nul);
	f->fail_writes = false;
	expect_recovers(f);

	/* RFC 3516 literal8: APPEND's message may be ~{n} and hold NUL */
	ADD_LIT(f, "A6 APPEND INBOX ~{3+}\r\nx\0y\r\n");
	assert_int_equal(feed(f), IMAP_PARSE_COMMAND);
	c = f->cmd;
	assert_true(arg(c, 1)->literal8);
	assert_true(arg(c, 1)->literal_nul);
	assert_true(arg(c, 1)->sunk);
	expect_recovers(f);
	/* anywhere else a literal8 is refused, its octets skipped */
	e = error(f, "A7 LOGIN ~{1+}\r\nx y\r\n");
	expect_error_tag(e, "A7");
	expect_recovers(f);

	/* before authentication there is no sink: a plain small literal */
	imap_parser_set_authenticated(f->p, false);
	size_t before = f->writes;
	c = command(f, "A5 APPEND INBOX {5+}\r\nhello\r\n");
	assert_false(arg(c, 1)->sunk);
	assert_string_equal(arg(c, 1)->str, "hello");
	assert_int_equal(f->writes, before);
	expect_idle(f);
}

/* RFC 6855 §4: APPEND's append-data "UTF8" SP "(" literal8 ")", taken
 * only after ENABLE UTF8=ACCEPT; its literal8 is the message. */
static void test_append_utf8_data(void **state)
{
	struct fixture *f = *state;
	use_sink(f, 1000);
	/* before ENABLE UTF8=ACCEPT: BAD, the literal's octets skipped */
	const struct imap_parse_error *e =
	    error(f, "U1 APPEND INBOX UTF8 (~{4+}\r\n\xc3\xa4\r\n)\r\n");
	expect_error_tag(e, "U1");
	assert_non_null(strstr(e->reason, "UTF8=ACCEPT"));
	assert_int_equal(f->writes, 0);
	expect_recovers(f);

	imap_parser_set_utf8(f->p, true);
	size_t starts = f->starts;
	struct imap_command *c =
	    command(f, "U2 APPEND INBOX (\\Seen) \"01-Jan-2024 10:00:00 +0000\" UTF8 "
		       "(~{4+}\r\n\xc3\xa4\r\n)\r\n");
	assert_int_equal(c->args.n, 5);
	assert_true(imap_arg_is(arg(c, 3), "UTF8"));
	const struct imap_args *l = imap_arg_list(arg(c, 4));
	assert_non_null(l);
	assert_int_equal(l->n, 1);
	assert_true(l->v[0].sunk);
	assert_true(l->v[0].literal8);
	assert_int_equal(f->starts, starts + 1);
	assert_memory_equal(f->sunk + f->sunk_len - 4, "\xc3\xa4\r\n", 4);

	/* MULTIAPPEND: a plain message, then a UTF8 one */
	c = command(f, "U3 APPEND INBOX {1+}\r\nx UTF8 (~{1+}\r\ny)\r\n");
	assert_int_equal(c->args.n, 4);
	assert_true(arg(c, 1)->sunk);
	assert_true(imap_arg_list(arg(c, 3))->v[0].sunk);
	assert_int_equal(f->starts, starts + 3);

	/* UTF8 data is a literal8, never a plain literal */
	expect_error_tag(error(f, "U4 APPEND INBOX UTF8 ({1+}\r\nx)\r\n"), "U4");
	expect_recovers(f);
	/* a second literal in the list is no message (and the command BAD later) */
	c = command(f, "U5 APPEND INBOX UTF8 (~{1+}\r\nx {1+}\r\ny)\r\n");
	assert_false(imap_arg_list(arg(c, 2))->v[1].sunk);
	/* UTF8 elsewhere than in APPEND: a literal8 is refused as before */
	expect_error_tag(error(f, "U6 SEARCH UTF8 (~{1+}\r\nx)\r\n"), "U6");
	expect_recovers(f);
	expect_idle(f);
}

static void test_uid_fetch(void **state)
{
	struct fixture *f = *state;
	struct imap_command *c = command(f, "A999 UID FETCH 4827313:4828442 FLAGS\r\n");
	assert_string_equal(c->name, "UID FETCH");
	assert_int_equal(c->args.n, 2);
	assert_string_equal(arg(c, 0)->str, "4827313:4828442");

	c = command(f, "A1 uid fetch 1 (BODY.PEEK[])\r\n");
	assert_string_equal(c->name, "UID FETCH");
	assert_true(imap_arg_section(imap_args_at(imap_arg_list(arg(c, 1)), 0))->peek);

	expect_error_tag(error(f, "A2 UID\r\n"), "A2");
	expect_error_tag(error(f, "A3 UID  FETCH 1 FLAGS\r\n"), "A3");
	expect_recovers(f);
}

static void test_authenticate_sasl_ir(void **state)
{
	struct fixture *f = *state;
	/* RFC 4959 §3 */
	struct imap_command *c = command(f, "a01 AUTHENTICATE PLAIN dGVzdAB0ZXN0AHRlc3Q=\r\n");
	assert_string_equal(c->name, "AUTHENTICATE");
	assert_int_equal(c->args.n, 2);
	assert_true(imap_arg_is(arg(c, 0), "plain"));
	assert_string_equal(imap_arg_atom(arg(c, 1)), "dGVzdAB0ZXN0AHRlc3Q=");
	/* an empty initial response is "=" */
	c = command(f, "a02 AUTHENTICATE PLAIN =\r\n");
	assert_string_equal(imap_arg_atom(arg(c, 1)), "=");
	/* base64 of a long response: up to the line limit before login */
	char *line = malloc(IMAP_PREAUTH_LINE_MAX + 1);
	assert_non_null(line);
	int k = snprintf(line, IMAP_PREAUTH_LINE_MAX, "a03 AUTHENTICATE PLAIN ");
	memset(line + k, 'Q', IMAP_PREAUTH_LINE_MAX - 2 - (size_t)k);
	memcpy(line + IMAP_PREAUTH_LINE_MAX - 2, "\r\n", 3);
	c = command(f, line);
	assert_int_equal(arg(c, 1)->len, IMAP_PREAUTH_LINE_MAX - 2 - (size_t)k);
	expect_idle(f);
	free(line);
}

static void test_pipelined_and_bare_lf(void **state)
{
	struct fixture *f = *state;
	add_str(f, "1 NOOP\r\n2 CAPABILITY\n3 CHECK\r\n4 LOG");
	assert_int_equal(feed(f), IMAP_PARSE_COMMAND);
	assert_string_equal(f->cmd->tag, "1");
	assert_int_equal(feed(f), IMAP_PARSE_COMMAND);
	assert_string_equal(f->cmd->name, "CAPABILITY");
	assert_int_equal(feed(f), IMAP_PARSE_COMMAND);
	assert_string_equal(f->cmd->name, "CHECK");
	assert_int_equal(feed(f), IMAP_PARSE_NEED_MORE);
	assert_int_equal(evbuffer_get_length(f->in), 5);
	struct imap_command *c = command(f, "OUT\r\n");
	assert_string_equal(c->name, "LOGOUT");
	expect_idle(f);
}

static void test_numbers_and_nil(void **state)
{
	struct fixture *f = *state;
	struct imap_command *c = command(f, "A1 X 4294967295 4294967296 18446744073709551615 "
					    "18446744073709551616 007 NIL \"NIL\" -1\r\n");
	uint32_t v32;
	uint64_t v64;
	assert_true(imap_arg_u32(arg(c, 0), &v32));
	assert_int_equal(v32, UINT32_MAX);
	assert_false(imap_arg_u32(arg(c, 1), &v32));
	assert_true(imap_arg_u64(arg(c, 1), &v64));
	assert_int_equal(v64, 4294967296ULL);
	assert_true(imap_arg_u64(arg(c, 2), &v64));
	assert_true(v64 == UINT64_MAX);
	assert_false(imap_arg_u64(arg(c, 3), &v64));
	assert_true(imap_arg_u32(arg(c, 4), &v32));
	assert_int_equal(v32, 7);
	assert_true(imap_arg_is_nil(arg(c, 5)));
	assert_false(imap_arg_is_nil(arg(c, 6)));
	assert_false(imap_arg_u32(arg(c, 7), &v32));
	assert_false(imap_arg_u32(NULL, &v32));
	assert_null(imap_arg_atom(NULL));
	assert_null(imap_args_at(&c->args, 99));
	expect_idle(f);
}

/* ---- literals: continuation flow, LITERAL+, LITERAL- ----------------------------- */

static void test_literal_one_byte_at_a_time(void **state)
{
	struct fixture *f = *state;
	char trace[16];
	feed_bytewise(f, "A1 LOGIN {5}\r\nsmith {6}\r\nsesame\r\nA2 LOGIN {3+}\r\nabc {1+}\r\n) \"x\"\r\n",
		      trace, sizeof(trace));
	assert_string_equal(trace, "CCMM");
	struct imap_command *c = f->cmd;
	assert_string_equal(c->tag, "A2");
	expect_astring(arg(c, 0), "abc");
	expect_astring(arg(c, 1), ")");
	expect_astring(arg(c, 2), "x");
	expect_idle(f);

	/* a literal's octets are not a line: CR LF and "{" inside are data */
	add_str(f, "A3 LOGIN {9}\r\n");
	assert_int_equal(feed(f), IMAP_PARSE_CONTINUE);
	add_str(f, "a\r\n{5}\r\nb");
	c = command(f, " x\r\n");
	expect_astring(arg(c, 0), "a\r\n{5}\r\nb");
	expect_idle(f);
}

static void test_literal_plus(void **state)
{
	struct fixture *f = *state;
	struct imap_command *c = command(f, "A1 LOGIN {5+}\r\nsmith {6+}\r\nsesame\r\n");
	assert_false(arg(c, 0)->literal_sync);
	expect_astring(arg(c, 1), "sesame");

	/* RFC 7888 LITERAL+: a {n+} as large as a {n} may be (IMAP_LITERAL_MAX
	 * after login) is taken without a continuation */
	authenticate(f);
	add_str(f, "A2 X {65536+}\r\n");
	add_fill(f, 'a', IMAP_LITERAL_MAX);
	c = command(f, "\r\n");
	assert_int_equal(arg(c, 0)->len, IMAP_LITERAL_MAX);
	expect_idle(f);
}

/* RFC 7888 §4: a {n+} over the literal limit is refused with BAD
 * [TOOBIG], and its octets (which may look like commands) are skipped, in
 * any pieces, never held. */
static void test_literal_plus_too_big(void **state)
{
	struct fixture *f = *state;
	authenticate(f);
	enum { BIG = IMAP_LITERAL_MAX + 1 };
	static const char head[] = "A1 SEARCH TEXT {65537+}\r\n";
	static const char tail[] = " (x)\r\nA2 NOOP\r\n";
	size_t n = sizeof(head) - 1 + BIG + sizeof(tail) - 1;
	char *data = malloc(n);
	assert_non_null(data);
	memcpy(data, head, sizeof(head) - 1);
	for (size_t i = 0; i < BIG; i++)
		data[sizeof(head) - 1 + i] = "A9 DELETE INBOX\r\n"[i % 17];
	memcpy(data + sizeof(head) - 1 + BIG, tail, sizeof(tail) - 1);

	add(f, data, n);
	assert_int_equal(feed(f), IMAP_PARSE_ERROR);
	const struct imap_parse_error *e = imap_parser_error(f->p);
	expect_error_tag(e, "A1");
	assert_non_null(strstr(e->reason, "[TOOBIG]"));
	assert_int_equal(feed(f), IMAP_PARSE_COMMAND);
	assert_string_equal(f->cmd->tag, "A2");
	expect_idle(f);

	static const size_t sizes[] = { 1, 2, 1000, 5 };
	char trace[8];
	feed_chunks(f, data, n, sizes, 4, trace, sizeof(trace));
	assert_string_equal(trace, "EM");
	assert_string_equal(f->cmd->tag, "A2");
	expect_idle(f);
	free(data);
}

static void test_sync_literal_too_big(void **state)
{
	struct fixture *f = *state;
	/* before login: IMAP_PREAUTH_LITERAL_MAX */
	const struct imap_parse_error *e = error(f, "A1 LOGIN {8193}\r\n");
	expect_error_tag(e, "A1");
	assert_non_null(strstr(e->reason, "[TOOBIG]"));
	expect_recovers(f);
	add_str(f, "A2 LOGIN {8192}\r\n");
	assert_int_equal(feed(f), IMAP_PARSE_CONTINUE);
	imap_parser_reject_literal(f->p);
	expect_recovers(f);

	/* after login: IMAP_LITERAL_MAX */
	authenticate(f);
	e = error(f, "A3 SEARCH TEXT {65537}\r\n");
	expect_error_tag(e, "A3");
	add_str(f, "A4 SEARCH TEXT {65536}\r\n");
	assert_int_equal(feed(f), IMAP_PARSE_CONTINUE);
	add_fill(f, 'z', 65536);
	struct imap_command *c = command(f, "\r\n");
	assert_int_equal(arg(c, 1)->len, 65536);

	/* sizes beyond any integer */
	expect_error_tag(error(f, "A5 LOGIN {99999999999999999999999}\r\n"), "A5");
	expect_error_tag(error(f, "A6 LOGIN {4294967296}\r\n"), "A6");
	expect_recovers(f);
}

static void test_reject_literal(void **state)
{
	struct fixture *f = *state;
	add_str(f, "A1 APPEND INBOX {10}\r\n");
	assert_int_equal(feed(f), IMAP_PARSE_CONTINUE);
	const struct imap_command *pend = imap_parser_pending(f->p);
	assert_string_equal(pend->name, "APPEND");
	imap_parser_reject_literal(f->p);
	assert_null(imap_parser_pending(f->p));
	expect_recovers(f);
}

static void test_bad_literal_syntax(void **state)
{
	struct fixture *f = *state;
	static const char *const bad[] = {
		"L1 LOGIN {5} x\r\n", "L2 LOGIN {}\r\n", "L3 LOGIN {+}\r\n", "L4 LOGIN {-1}\r\n",
		"L5 LOGIN {5++}\r\n", "L6 LOGIN {5\r\n", "L7 LOGIN{5}\r\n", "L8 LOGIN ~{5}\r\n",
		"L9 LOGIN {5}{5}\r\n", "L10 LOGIN { 5}\r\n",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char tag[8];
		snprintf(tag, sizeof(tag), "L%zu", i + 1);
		expect_error_tag(error(f, bad[i]), tag);
		expect_idle(f);
	}
	expect_recovers(f);
}

/* ---- hostile input ------------------------------------------------------------------ */

static void test_unbalanced_parentheses(void **state)
{
	struct fixture *f = *state;
	expect_error_tag(error(f, "A1 FETCH 1 (FLAGS\r\n"), "A1");
	expect_error_tag(error(f, "A2 FETCH 1 FLAGS)\r\n"), "A2");
	expect_error_tag(error(f, "A3 FETCH 1 ((FLAGS)\r\n"), "A3");
	expect_error_tag(error(f, "A4 FETCH 1 (FLAGS))\r\n"), "A4");
	expect_error_tag(error(f, "A5 FETCH 1 (FLAGS )\r\n"), "A5");
	expect_error_tag(error(f, "A6 FETCH 1 ( FLAGS)\r\n"), "A6");
	expect_error_tag(error(f, "A7 FETCH 1 (FLAGS)(UID)\r\n"), "A7");
	expect_error_tag(error(f, "A8 )\r\n"), "A8");
	/* an unclosed list across a literal is still caught at the end */
	expect_error_tag(error(f, "A9 X ({1+}\r\na\r\n"), "A9");
	expect_recovers(f);
}

static void test_deep_nesting(void **state)
{
	struct fixture *f = *state;
	char line[256];
	int k = snprintf(line, sizeof(line), "A1 X ");
	for (int i = 0; i < IMAP_DEPTH_MAX; i++)
		line[k++] = '(';
	for (int i = 0; i < IMAP_DEPTH_MAX; i++)
		line[k++] = ')';
	memcpy(line + k, "\r\n", 3);
	struct imap_command *c = command(f, line);
	const struct imap_arg *a = arg(c, 0);
	for (int i = 0; i < IMAP_DEPTH_MAX - 1; i++)
		a = imap_args_at(imap_arg_list(a), 0);
	assert_int_equal(imap_arg_list(a)->n, 0);

	k = snprintf(line, sizeof(line), "A2 X ");
	for (int i = 0; i <= IMAP_DEPTH_MAX; i++)
		line[k++] = '(';
	memcpy(line + k, "\r\n", 3);
	const struct imap_parse_error *e = error(f, line);
	expect_error_tag(e, "A2");
	assert_non_null(strstr(e->reason, "nested"));
	expect_recovers(f);

	/* a megabyte of "(": too long a line, refused once as soon as the
	 * limit is reached, nothing kept from then on, then back in sync */
	size_t fed = 0;
	for (int i = 0; i < 128; i++) {
		add_fill(f, '(', 8192);
		fed += 8192;
		bool reached = fed >= IMAP_PREAUTH_LINE_MAX && fed - 8192 < IMAP_PREAUTH_LINE_MAX;
		enum imap_parse_status st = feed(f);
		assert_int_equal(st, reached ? IMAP_PARSE_ERROR : IMAP_PARSE_NEED_MORE);
		if (st == IMAP_PARSE_ERROR)
			assert_int_equal(feed(f), IMAP_PARSE_NEED_MORE);
		if (fed >= IMAP_PREAUTH_LINE_MAX)
			assert_int_equal(evbuffer_get_length(f->in), 0);
	}
	add_str(f, "\r\n");
	expect_recovers(f);
}

static void test_invalid_tags(void **state)
{
	struct fixture *f = *state;
	static const char *const bad[] = {
		"+A NOOP\r\n", "A+ NOOP\r\n", "* NOOP\r\n", "A(1 NOOP\r\n", "\"a\" NOOP\r\n",
		"A%1 NOOP\r\n", "A{1 NOOP\r\n", "A\\1 NOOP\r\n", " A1 NOOP\r\n", "\x01 NOOP\r\n",
		"\xe4 NOOP\r\n", "A1\tNOOP\r\n",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		expect_error_tag(error(f, bad[i]), NULL);
		expect_idle(f);
	}
	char line[128];
	memset(line, 't', IMAP_TAG_MAX + 1);
	memcpy(line + IMAP_TAG_MAX + 1, " NOOP\r\n", 8);
	expect_error_tag(error(f, line), NULL);
	line[IMAP_TAG_MAX] = ' ';
	line[IMAP_TAG_MAX + 1] = '\0';
	struct imap_command *c = command(f, strcat(line, "NOOP\r\n"));
	assert_int_equal(strlen(c->tag), IMAP_TAG_MAX);

	/* "]" is allowed in a tag (ASTRING-CHAR) */
	c = command(f, "a]1 NOOP\r\n");
	assert_string_equal(c->tag, "a]1");

	/* a valid tag with a bad or missing name is answered with the tag */
	expect_error_tag(error(f, "A1\r\n"), "A1");
	expect_error_tag(error(f, "A2 \r\n"), "A2");
	expect_error_tag(error(f, "A3 NO(OP\r\n"), "A3");
	expect_error_tag(error(f, "A4 \"NOOP\"\r\n"), "A4");
	expect_error_tag(error(f, "A5 AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\r\n"), "A5");
	/* an empty line */
	expect_error_tag(error(f, "\r\n"), NULL);
	expect_recovers(f);
}

static void test_spaces(void **state)
{
	struct fixture *f = *state;
	expect_error_tag(error(f, "A1 NOOP \r\n"), "A1");
	expect_error_tag(error(f, "A2 LOGIN a  b\r\n"), "A2");
	expect_error_tag(error(f, "A3  NOOP\r\n"), "A3");
	expect_error_tag(error(f, "A4 LOGIN \"a\"\"b\"\r\n"), "A4");
	expect_error_tag(error(f, "A5 LOGIN a\"b\"\r\n"), "A5");
	expect_recovers(f);
}

static void test_over_long_line(void **state)
{
	struct fixture *f = *state;
	/* exactly the limit before login: fine */
	const size_t lim = IMAP_PREAUTH_LINE_MAX;
	char *line = malloc(lim + 2);
	assert_non_null(line);
	int k = snprintf(line, lim, "A1 LOGIN a ");
	memset(line + k, 'b', lim - 2 - (size_t)k);
	memcpy(line + lim - 2, "\r\n", 3);
	struct imap_command *c = command(f, line);
	assert_int_equal(arg(c, 1)->len, lim - 2 - (size_t)k);

	/* one more: refused with the tag, the whole line dropped */
	line[1] = '2';
	memcpy(line + lim - 2, "b\r\n", 4);
	const struct imap_parse_error *e = error(f, line);
	expect_error_tag(e, "A2");
	assert_non_null(strstr(e->reason, "too long"));
	expect_recovers(f);

	/* arriving in pieces with no line end yet: nothing kept past the
	 * limit, the error as soon as the limit is reached */
	add_str(f, "A3 X ");
	int errors = 0;
	for (int i = 0; i < 100; i++) {
		add_fill(f, 'x', 1000);
		enum imap_parse_status st;
		while ((st = feed(f)) != IMAP_PARSE_NEED_MORE) {
			assert_int_equal(st, IMAP_PARSE_ERROR);
			expect_error_tag(imap_parser_error(f->p), "A3");
			/* the first piece that reaches the limit: 5 + (i + 1) * 1000 */
			assert_int_equal(i, (int)((lim - 5 + 999) / 1000) - 1);
			errors++;
		}
		assert_true(evbuffer_get_length(f->in) < lim);
	}
	assert_int_equal(errors, 1);
	add_str(f, "\r\n");
	expect_recovers(f);

	/* after login the limit is IMAP_LINE_MAX: exactly it is fine */
	authenticate(f);
	free(line);
	line = malloc(IMAP_LINE_MAX + 2);
	assert_non_null(line);
	k = snprintf(line, IMAP_LINE_MAX, "A5 SELECT ");
	memset(line + k, 'c', IMAP_LINE_MAX - 2 - (size_t)k);
	memcpy(line + IMAP_LINE_MAX - 2, "\r\n", 3);
	c = command(f, line);
	assert_int_equal(arg(c, 0)->len, IMAP_LINE_MAX - 2 - (size_t)k);
	line[1] = '6';
	memcpy(line + IMAP_LINE_MAX - 2, "c\r\n", 4);
	expect_error_tag(error(f, line), "A6");
	expect_recovers(f);

	/* an over-long line part after a literal: the tag is known */
	add_str(f, "A4 X {1+}\r\nx ");
	add_fill(f, 'y', IMAP_LINE_MAX);
	add_str(f, "\r\n");
	expect_error_tag(error(f, ""), "A4");
	expect_recovers(f);
	free(line);
}

/* Regression: an over-long line that first arrived in part (so linebuf had
 * searched its head in vain) must not leave linebuf believing that a later
 * buffer has no line end in its head. */
static void test_over_long_line_after_partial(void **state)
{
	struct fixture *f = *state;
	add_str(f, "A1 X ");
	add_fill(f, 'x', IMAP_PREAUTH_LINE_MAX * 5 / 8);
	assert_int_equal(feed(f), IMAP_PARSE_NEED_MORE);
	add_fill(f, 'x', IMAP_PREAUTH_LINE_MAX / 2);
	add_str(f, "\r\nA2 NOOP\r\nA3 X ");
	add_fill(f, 'y', IMAP_PREAUTH_LINE_MAX * 3 / 4);
	add_str(f, "\r\n");
	assert_int_equal(feed(f), IMAP_PARSE_ERROR);
	expect_error_tag(imap_parser_error(f->p), "A1");
	assert_int_equal(feed(f), IMAP_PARSE_COMMAND);
	assert_string_equal(f->cmd->tag, "A2");
	assert_int_equal(feed(f), IMAP_PARSE_COMMAND);
	assert_string_equal(f->cmd->tag, "A3");
	expect_idle(f);
}

/* An over-long line that ends by announcing a {n+} literal: the literal's
 * octets belong to the bad command and are skipped with it. */
static void test_over_long_line_then_literal_plus(void **state)
{
	struct fixture *f = *state;
	add_str(f, "A1 X ");
	add_fill(f, 'x', IMAP_LINE_MAX + 100);
	add_str(f, " {17+}\r\nA9 DELETE INBOX\r\n {3+}\r\nA8 \r\n");
	expect_error_tag(error(f, ""), "A1");
	expect_recovers(f);

	/* the same, one byte at a time */
	size_t n = 5 + IMAP_LINE_MAX + 100;
	char *data = malloc(n + 64);
	assert_non_null(data);
	memcpy(data, "A1 X ", 5);
	memset(data + 5, 'x', n - 5);
	strcpy(data + n, " {17+}\r\nA9 DELETE INBOX\r\n\r\nA2 NOOP\r\n");
	const size_t one = 1;
	char trace[8];
	feed_chunks(f, data, strlen(data), &one, 1, trace, sizeof(trace));
	assert_string_equal(trace, "EM");
	assert_string_equal(f->cmd->tag, "A2");
	expect_idle(f);

	/* ending in a synchronizing literal: no octets will come */
	add_str(f, "A3 X ");
	add_fill(f, 'x', IMAP_LINE_MAX);
	expect_error_tag(error(f, " {17}\r\n"), "A3");
	expect_recovers(f);
	free(data);
}

/* A command found bad in a line part that ends in {n+}: the octets and
 * the rest of the command are skipped, through further {n+} literals. */
static void test_skip_bad_command_with_literals(void **state)
{
	struct fixture *f = *state;
	expect_error_tag(error(f, "A1 FOO ((( {5+}\r\nA9 X {3+}\r\nxyz\r\n"), "A1");
	expect_recovers(f);
	expect_error_tag(error(f, "A2 X {1+}\r\na ) {3+}\r\nxyz {2+}\r\nab\r\n"), "A2");
	expect_recovers(f);
	/* the bad part ends in a synchronizing literal: nothing to skip */
	expect_error_tag(error(f, "A3 X {1+}\r\na ) {3}\r\n"), "A3");
	expect_recovers(f);
}

static void test_seqset_valid(void **state)
{
	(void)state;
	struct imap_seqset s;
	char err[IMAP_REASON_MAX];
	assert_true(imap_parse_seqset("1:5,7,9:*", &s, err, sizeof(err)));
	assert_false(s.saved);
	assert_int_equal(s.n, 3);
	assert_int_equal(s.ranges[0].lo, 1);
	assert_int_equal(s.ranges[0].hi, 5);
	assert_int_equal(s.ranges[1].lo, 7);
	assert_int_equal(s.ranges[2].lo, 9);
	assert_int_equal(s.ranges[2].hi, IMAP_SEQ_STAR);
	imap_seqset_resolve(&s, 20);
	assert_int_equal(s.n, 3);
	assert_true(imap_seqset_contains(&s, 1));
	assert_true(imap_seqset_contains(&s, 5));
	assert_false(imap_seqset_contains(&s, 6));
	assert_true(imap_seqset_contains(&s, 7));
	assert_false(imap_seqset_contains(&s, 8));
	assert_true(imap_seqset_contains(&s, 20));
	assert_false(imap_seqset_contains(&s, 21));
	assert_false(imap_seqset_contains(&s, 0));
	imap_seqset_clear(&s);

	/* "*" beyond the given number: 559:* includes the last (§6.4.8) */
	assert_true(imap_parse_seqset("559:*", &s, err, sizeof(err)));
	imap_seqset_resolve(&s, 500);
	assert_int_equal(s.n, 1);
	assert_int_equal(s.ranges[0].lo, 500);
	assert_int_equal(s.ranges[0].hi, 559);
	imap_seqset_clear(&s);

	/* ranges in any order, merged when resolved */
	assert_true(imap_parse_seqset("10:8,*,3,1:2,4:*", &s, err, sizeof(err)));
	imap_seqset_resolve(&s, 6);
	assert_int_equal(s.n, 2);
	assert_int_equal(s.ranges[0].lo, 1);
	assert_int_equal(s.ranges[0].hi, 6);
	assert_int_equal(s.ranges[1].lo, 8);
	assert_int_equal(s.ranges[1].hi, 10);
	imap_seqset_clear(&s);

	/* "*" in an empty mailbox matches nothing */
	assert_true(imap_parse_seqset("*", &s, err, sizeof(err)));
	imap_seqset_resolve(&s, 0);
	assert_int_equal(s.n, 0);
	assert_false(imap_seqset_contains(&s, 1));
	imap_seqset_clear(&s);

	assert_true(imap_parse_seqset("$", &s, err, sizeof(err)));
	assert_true(s.saved);
	assert_int_equal(s.n, 0);
	imap_seqset_clear(&s);

	assert_true(imap_parse_seqset("4294967295:1", &s, err, sizeof(err)));
	assert_int_equal(s.ranges[0].lo, 1);
	assert_int_equal(s.ranges[0].hi, UINT32_MAX);
	imap_seqset_resolve(&s, 3);
	assert_true(imap_seqset_contains(&s, UINT32_MAX));
	imap_seqset_clear(&s);
}

static void test_seqset_invalid(void **state)
{
	(void)state;
	static const char *const bad[] = {
		"", "0", "0:5", "1:0", "01", "1:", ":1", "1,,2", ",1", "1,", "1:2:3", "a", "1 2",
		"4294967296", "99999999999999999999999", "$,1", "1,$", "$$", "**", "*:", "1:*:2",
		"-1", "+1", "1.5",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct imap_seqset s;
		char err[IMAP_REASON_MAX] = "";
		assert_false(imap_parse_seqset(bad[i], &s, err, sizeof(err)));
		assert_int_equal(s.n, 0);
		assert_null(s.ranges);
		assert_true(err[0] != '\0');
	}
	struct imap_seqset s;
	char err[IMAP_REASON_MAX];
	assert_false(imap_parse_seqset(NULL, &s, err, sizeof(err)));
}

/* 100,000 elements: consecutive ones merge into one range; 100,000
 * separate ones exceed IMAP_SEQSET_RANGES_MAX and are refused. */
static void test_seqset_huge(void **state)
{
	(void)state;
	size_t cap = 100000 * 8;
	char *buf = malloc(cap);
	assert_non_null(buf);
	struct imap_seqset s;
	char err[IMAP_REASON_MAX];

	size_t k = 0;
	for (unsigned i = 1; i <= 100000; i++)
		k += (size_t)snprintf(buf + k, cap - k, "%s%u", i > 1 ? "," : "", i);
	assert_true(imap_parse_seqset(buf, &s, err, sizeof(err)));
	assert_int_equal(s.n, 1);
	assert_int_equal(s.ranges[0].lo, 1);
	assert_int_equal(s.ranges[0].hi, 100000);
	imap_seqset_clear(&s);

	assert_true(imap_parse_seqset("1:100000", &s, err, sizeof(err)));
	assert_int_equal(s.n, 1);
	imap_seqset_clear(&s);

	k = 0;
	for (unsigned i = 0; i < 100000; i++)
		k += (size_t)snprintf(buf + k, cap - k, "%s%u", i ? "," : "", 2 * i + 1);
	assert_false(imap_parse_seqset(buf, &s, err, sizeof(err)));
	assert_non_null(strstr(err, "too many"));
	assert_null(s.ranges);

	/* exactly the limit */
	k = 0;
	for (unsigned i = 0; i < IMAP_SEQSET_RANGES_MAX; i++)
		k += (size_t)snprintf(buf + k, cap - k, "%s%u", i ? "," : "", 2 * i + 1);
	assert_true(imap_parse_seqset(buf, &s, err, sizeof(err)));
	assert_int_equal(s.n, IMAP_SEQSET_RANGES_MAX);
	imap_seqset_resolve(&s, 100000);
	assert_true(imap_seqset_contains(&s, 19999));
	assert_false(imap_seqset_contains(&s, 19998));
	imap_seqset_clear(&s);
	free(buf);
}

static void test_garbage(void **state)
{
	struct fixture *f = *state;
	/* 8-bit octets outside a literal */
	char line[300];
	size_t k = 0;
	memcpy(line, "A1 X ", 5);
	k = 5;
	for (int c = 0x80; c <= 0xff; c++)
		line[k++] = (char)c;
	memcpy(line + k, "\r\n", 3);
	const struct imap_parse_error *e = error(f, line);
	expect_error_tag(e, "A1");
	assert_non_null(strstr(e->reason, "8-bit"));
	/* control characters, a bare CR, DEL */
	expect_error_tag(error(f, "A2 X a\x01\r\n"), "A2");
	expect_error_tag(error(f, "A3 X a\rb\r\n"), "A3");
	expect_error_tag(error(f, "A4 X \x7f\r\n"), "A4");
	expect_error_tag(error(f, "A5 X \"a\\b\"\r\n"), "A5");
	expect_error_tag(error(f, "A6 X \"abc\r\n"), "A6");
	expect_error_tag(error(f, "A7 X \\\r\n"), "A7");
	expect_recovers(f);

	/* pseudo-random bytes: whatever happens, bounded, and a line end plus
	 * a NOOP afterwards is still understood once any {n+} is consumed */
	uint32_t x = 12345;
	for (int round = 0; round < 200; round++) {
		char junk[512];
		for (size_t i = 0; i < sizeof(junk); i++) {
			x = x * 1103515245u + 12345u;
			junk[i] = (char)(x >> 16);
			if (junk[i] == '{' || junk[i] == '}')
				junk[i] = '.';  /* keep {n+} out, or the NOOP could be skipped */
		}
		add(f, junk, sizeof(junk));
		while (feed(f) != IMAP_PARSE_NEED_MORE)
			;
		assert_true(evbuffer_get_length(f->in) < IMAP_LINE_MAX);
	}
	add_str(f, "\r\n");
	while (feed(f) != IMAP_PARSE_NEED_MORE)
		;
	expect_recovers(f);
}

static void test_nul(void **state)
{
	struct fixture *f = *state;
	ADD_LIT(f, "A1 LOGIN a\0b c\r\n");
	assert_int_equal(feed(f), IMAP_PARSE_ERROR);
	expect_error_tag(imap_parser_error(f->p), "A1");
	assert_non_null(strstr(imap_parser_error(f->p)->reason, "NUL"));
	ADD_LIT(f, "\0 NOOP\r\n");
	assert_int_equal(feed(f), IMAP_PARSE_ERROR);
	expect_error_tag(imap_parser_error(f->p), NULL);
	/* a NUL in a literal: refused once the literal is read, the rest of
	 * the command skipped (RFC 3501 §4.3: CHAR8 excludes NUL) */
	ADD_LIT(f, "A2 LOGIN {3+}\r\na\0b {1+}\r\nx\r\n");
	assert_int_equal(feed(f), IMAP_PARSE_ERROR);
	expect_error_tag(imap_parser_error(f->p), "A2");
	assert_non_null(strstr(imap_parser_error(f->p)->reason, "NUL"));
	ADD_LIT(f, "A3 X \"a\0\"\r\n");
	assert_int_equal(feed(f), IMAP_PARSE_ERROR);
	expect_recovers(f);
}

static void test_argument_limits(void **state)
{
	struct fixture *f = *state;
	/* before login: IMAP_PREAUTH_ARGS_MAX nodes */
	char *line = malloc(IMAP_LINE_MAX);
	assert_non_null(line);
	size_t k = (size_t)snprintf(line, IMAP_LINE_MAX, "A1 ID (");
	for (int i = 0; i < IMAP_PREAUTH_ARGS_MAX - 1; i++)
		k += (size_t)snprintf(line + k, IMAP_LINE_MAX - k, "%sa", i ? " " : "");
	snprintf(line + k, IMAP_LINE_MAX - k, ")\r\n");
	struct imap_command *c = command(f, line);
	assert_int_equal(imap_arg_list(arg(c, 0))->n, IMAP_PREAUTH_ARGS_MAX - 1);
	line[1] = '2';
	snprintf(line + k, IMAP_LINE_MAX - k, " a)\r\n");
	const struct imap_parse_error *e = error(f, line);
	expect_error_tag(e, "A2");
	assert_non_null(strstr(e->reason, "Too many"));
	expect_recovers(f);

	/* after login: IMAP_ARGS_MAX, reached over several line parts joined
	 * by empty literals */
	authenticate(f);
	add_str(f, "A3 X");
	size_t nodes = 0;
	while (nodes <= IMAP_ARGS_MAX) {
		k = 0;
		for (int i = 0; i < 1000; i++, nodes++)
			k += (size_t)snprintf(line + k, IMAP_LINE_MAX - k, " a");
		nodes++; /* the literal */
		snprintf(line + k, IMAP_LINE_MAX - k, " {0+}\r\n");
		add_str(f, line);
	}
	e = error(f, "\r\n");
	expect_error_tag(e, "A3");
	assert_non_null(strstr(e->reason, "Too many"));
	expect_recovers(f);

	/* IMAP_MEM_MAX: sixteen 64 KiB literals are too much for one command */
	add_str(f, "A4 X");
	enum imap_parse_status st = IMAP_PARSE_NEED_MORE;
	int sent;
	for (sent = 0; sent < 20 && st != IMAP_PARSE_ERROR; sent++) {
		add_str(f, " {65536}\r\n");
		st = feed(f);
		if (st == IMAP_PARSE_CONTINUE) {
			add_fill(f, 'm', 65536);
			st = feed(f);
		}
	}
	assert_int_equal(st, IMAP_PARSE_ERROR);
	assert_int_equal(sent, IMAP_MEM_MAX / 65536);
	e = imap_parser_error(f->p);
	expect_error_tag(e, "A4");
	assert_non_null(strstr(e->reason, "[TOOBIG]"));
	expect_recovers(f);
	free(line);
}

/* RFC 2971 §3.3: the largest ID (30 fields of 30 octets, values of 1024)
 * is one command before login. */
static void test_largest_id(void **state)
{
	struct fixture *f = *state;
	char *line = malloc(IMAP_PREAUTH_LINE_MAX);
	assert_non_null(line);
	size_t k = (size_t)snprintf(line, IMAP_PREAUTH_LINE_MAX, "A1 ID (");
	for (int i = 0; i < 30; i++) {
		k += (size_t)snprintf(line + k, IMAP_PREAUTH_LINE_MAX - k, "%s\"f%02d", i ? " " : "", i);
		memset(line + k, 'k', 27);
		k += 27;
		memcpy(line + k, "\" \"", 3);
		k += 3;
		memset(line + k, 'v', 1024);
		k += 1024;
		line[k++] = '"';
	}
	assert_true(k + 4 < IMAP_PREAUTH_LINE_MAX);
	memcpy(line + k, ")\r\n", 4);
	struct imap_command *c = command(f, line);
	const struct imap_args *l = imap_arg_list(arg(c, 0));
	assert_int_equal(l->n, 60);
	assert_int_equal(imap_args_at(l, 1)->len, 1024);
	expect_idle(f);
	free(line);
}

/* The line part's storage grows with the line part and goes back after
 * it: a session waiting for its next command never holds IMAP_LINE_MAX. */
static void test_line_storage_on_demand(void **state)
{
	struct fixture *f = *state;
	assert_int_equal(imap_parser_line_capacity(f->p), 0);
	command(f, "A1 NOOP\r\n");
	size_t small = imap_parser_line_capacity(f->p);
	assert_true(small > 0 && small <= 4096);
	authenticate(f);
	char *line = malloc(IMAP_LINE_MAX);
	assert_non_null(line);
	int k = snprintf(line, IMAP_LINE_MAX, "A2 SELECT ");
	memset(line + k, 'x', 60000);
	memcpy(line + k + 60000, "\r\n", 3);
	/* in pieces: nothing held for the line part before its end is there */
	add(f, line, 30000);
	assert_int_equal(feed(f), IMAP_PARSE_NEED_MORE);
	assert_int_equal(imap_parser_line_capacity(f->p), small);
	struct imap_command *c = command(f, line + 30000);
	assert_int_equal(arg(c, 0)->len, 60000);
	assert_true(imap_parser_line_capacity(f->p) <= 4096);
	/* a bad long line too */
	line[1] = '3';
	memcpy(line + k, "((", 2);
	expect_error_tag(error(f, line), "A3");
	assert_true(imap_parser_line_capacity(f->p) <= 4096);
	expect_recovers(f);
	free(line);
}

static void test_reset(void **state)
{
	struct fixture *f = *state;
	add_str(f, "A1 LOGIN {5}\r\n");
	assert_int_equal(feed(f), IMAP_PARSE_CONTINUE);
	add_str(f, "sm");
	assert_int_equal(feed(f), IMAP_PARSE_NEED_MORE);
	/* STARTTLS-like: the buffer is thrown away and the parser forgets */
	evbuffer_drain(f->in, evbuffer_get_length(f->in));
	imap_parser_reset(f->p);
	expect_recovers(f);

	add_str(f, "A2 X ");
	add_fill(f, 'x', IMAP_LINE_MAX);
	assert_int_equal(feed(f), IMAP_PARSE_ERROR);
	evbuffer_drain(f->in, evbuffer_get_length(f->in));
	imap_parser_reset(f->p);
	expect_recovers(f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_login_atoms_and_quoted, setup, teardown),
		cmocka_unit_test_setup_teardown(test_login_literals, setup, teardown),
		cmocka_unit_test_setup_teardown(test_select_mailboxes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_fetch_attributes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_fetch_bad_sections, setup, teardown),
		cmocka_unit_test_setup_teardown(test_store_flags, setup, teardown),
		cmocka_unit_test_setup_teardown(test_search_nested, setup, teardown),
		cmocka_unit_test_setup_teardown(test_append_in_memory, setup, teardown),
		cmocka_unit_test_setup_teardown(test_append_streamed_to_sink, setup, teardown),
		cmocka_unit_test_setup_teardown(test_append_sink_limits, setup, teardown),
		cmocka_unit_test_setup_teardown(test_append_utf8_data, setup, teardown),
		cmocka_unit_test_setup_teardown(test_uid_fetch, setup, teardown),
		cmocka_unit_test_setup_teardown(test_authenticate_sasl_ir, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pipelined_and_bare_lf, setup, teardown),
		cmocka_unit_test_setup_teardown(test_numbers_and_nil, setup, teardown),
		cmocka_unit_test_setup_teardown(test_literal_one_byte_at_a_time, setup, teardown),
		cmocka_unit_test_setup_teardown(test_literal_plus, setup, teardown),
		cmocka_unit_test_setup_teardown(test_literal_plus_too_big, setup, teardown),
		cmocka_unit_test_setup_teardown(test_sync_literal_too_big, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reject_literal, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_literal_syntax, setup, teardown),
		cmocka_unit_test_setup_teardown(test_unbalanced_parentheses, setup, teardown),
		cmocka_unit_test_setup_teardown(test_deep_nesting, setup, teardown),
		cmocka_unit_test_setup_teardown(test_invalid_tags, setup, teardown),
		cmocka_unit_test_setup_teardown(test_spaces, setup, teardown),
		cmocka_unit_test_setup_teardown(test_over_long_line, setup, teardown),
		cmocka_unit_test_setup_teardown(test_over_long_line_after_partial, setup, teardown),
		cmocka_unit_test_setup_teardown(test_over_long_line_then_literal_plus, setup, teardown),
		cmocka_unit_test_setup_teardown(test_skip_bad_command_with_literals, setup, teardown),
		cmocka_unit_test(test_seqset_valid),
		cmocka_unit_test(test_seqset_invalid),
		cmocka_unit_test(test_seqset_huge),
		cmocka_unit_test_setup_teardown(test_garbage, setup, teardown),
		cmocka_unit_test_setup_teardown(test_nul, setup, teardown),
		cmocka_unit_test_setup_teardown(test_argument_limits, setup, teardown),
		cmocka_unit_test_setup_teardown(test_largest_id, setup, teardown),
		cmocka_unit_test_setup_teardown(test_line_storage_on_demand, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reset, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

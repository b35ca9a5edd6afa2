/* Unit tests for imap_esearch: the RETURN options of SEARCH (RFC 4731
 * §3.1, RFC 5182 SAVE, RFC 5267 UPDATE and PARTIAL), valid and refused,
 * from a table; the compressed sequence sets and the ESEARCH lines,
 * MODSEQ included (RFC 7162 §3.1.5). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <event2/buffer.h>

#include "proto/imap/imap_context.h"
#include "proto/imap/imap_esearch.h"
#include "proto/imap/imap_parse.h"

/* The arguments of "t SEARCH <line>" as the parser makes them. */
static struct imap_command *parse(const char *line)
{
	struct imap_parser *p = imap_parser_new();
	struct evbuffer *in = evbuffer_new();
	assert_non_null(in);
	char buf[512];
	int n = snprintf(buf, sizeof buf, "t SEARCH %s\r\n", line);
	assert_true(n > 0 && (size_t)n < sizeof buf);
	assert_int_equal(evbuffer_add(in, buf, (size_t)n), 0);
	struct imap_command *c = NULL;
	assert_int_equal(imap_parse_feed(p, in, &c), IMAP_PARSE_COMMAND);
	imap_parser_free(p);
	evbuffer_free(in);
	return c;
}

static char *take(struct imap_out *out)
{
	size_t n = imap_out_len(out);
	char *s = malloc(n + 1);
	assert_non_null(s);
	assert_int_equal(evbuffer_remove(out->buf, s, n), (int)n);
	s[n] = '\0';
	return s;
}

/* ---- RETURN ------------------------------------------------------------------ */

static const struct {
	const char *line;
	bool ok;
	bool given;
	unsigned opts;
	uint32_t lo, hi;
	size_t pos;                      /* of the first search key */
} return_cases[] = {
	{"ALL", true, false, 0, 0, 0, 0},
	{"RETURN () ALL", true, true, IMAP_RET_ALL, 0, 0, 2},
	{"return (min max) seen", true, true, IMAP_RET_MIN | IMAP_RET_MAX, 0, 0, 2},
	{"RETURN (COUNT ALL SAVE) 1:*", true, true,
	 IMAP_RET_COUNT | IMAP_RET_ALL | IMAP_RET_SAVE, 0, 0, 2},
	{"RETURN (UPDATE) body x", true, true, IMAP_RET_UPDATE, 0, 0, 2},
	{"RETURN (PARTIAL 2:4) ALL", true, true, IMAP_RET_PARTIAL, 2, 4, 2},
	{"RETURN (PARTIAL 4:2 COUNT) ALL", true, true, IMAP_RET_PARTIAL | IMAP_RET_COUNT, 2, 4, 2},
	{"RETURN (PARTIAL 7:7) CHARSET UTF-8 ALL", true, true, IMAP_RET_PARTIAL, 7, 7, 2},
	/* refused: BAD */
	{"RETURN ALL", false, false, 0, 0, 0, 0},
	{"RETURN", false, false, 0, 0, 0, 0},
	{"RETURN (MIN MIN) ALL", false, false, 0, 0, 0, 0},
	{"RETURN (FIRST) ALL", false, false, 0, 0, 0, 0},
	{"RETURN (PARTIAL 1) ALL", false, false, 0, 0, 0, 0},
	{"RETURN (PARTIAL 1:*) ALL", false, false, 0, 0, 0, 0},
	{"RETURN (PARTIAL *:1) ALL", false, false, 0, 0, 0, 0},
	{"RETURN (PARTIAL 0:3) ALL", false, false, 0, 0, 0, 0},
	{"RETURN (PARTIAL 1:99999999999) ALL", false, false, 0, 0, 0, 0},
	{"RETURN (PARTIAL) ALL", false, false, 0, 0, 0, 0},
	{"RETURN ((MIN)) ALL", false, false, 0, 0, 0, 0},
};

static void test_return_options(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof return_cases / sizeof return_cases[0]; i++) {
		struct imap_command *c = parse(return_cases[i].line);
		struct imap_search_return r;
		char err[IMAP_REASON_MAX] = "";
		size_t pos = 0;
		bool ok = imap_search_return_parse(&c->args, &pos, &r, err, sizeof err);
		if (ok != return_cases[i].ok)
			fail_msg("%s: %s", return_cases[i].line, err);
		if (ok) {
			assert_int_equal(r.given, return_cases[i].given);
			assert_int_equal(r.opts, return_cases[i].opts);
			assert_int_equal(pos, return_cases[i].pos);
			assert_int_equal(r.partial_lo, return_cases[i].lo);
			assert_int_equal(r.partial_hi, return_cases[i].hi);
		} else {
			assert_true(err[0] != '\0');
		}
		imap_command_free(c);
	}
}

/* ---- sequence sets --------------------------------------------------------- */

static void test_numbers_compressed(void **state)
{
	(void)state;
	static const uint32_t v[] = {1, 2, 3, 5, 7, 8, 10, 4294967294u, 4294967295u};
	static const struct {
		size_t n;
		const char *want;
	} cases[] = {
		{0, ""}, {1, "1"}, {2, "1:2"}, {3, "1:3"}, {4, "1:3,5"}, {6, "1:3,5,7:8"},
		{9, "1:3,5,7:8,10,4294967294:4294967295"},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		struct imap_out out;
		imap_out_init(&out);
		imap_put_numbers(&out, v, cases[i].n);
		char *s = take(&out);
		assert_string_equal(s, cases[i].want);
		free(s);
		imap_out_free(&out);
	}
	/* ESORT's ALL keeps the sort order: only ascending runs become ranges */
	static const uint32_t sorted[] = {5, 3, 4, 2, 1, 7, 8, 9};
	struct imap_out out;
	imap_out_init(&out);
	imap_put_numbers(&out, sorted, 8);
	char *s = take(&out);
	assert_string_equal(s, "5,3:4,2,1,7:9");
	free(s);
	imap_out_free(&out);
}

/* ---- ESEARCH responses ------------------------------------------------------- */

static void found_of(struct imap_search_found *f, const uint32_t *seq, size_t n)
{
	memset(f, 0, sizeof *f);
	for (size_t i = 0; i < n; i++) /* UID = 100 + seq, MODSEQ = 10 * seq (the 3rd: 99) */
		imap_search_found_add(f, seq[i], 100 + seq[i], i == 2 ? 99 : 10 * seq[i]);
}

static void expect_response(const struct imap_search_found *f, bool uid, unsigned opts,
			    uint32_t lo, uint32_t hi, bool modseq, const char *want)
{
	struct imap_search_return r = {.given = true, .opts = opts, .partial_lo = lo,
				       .partial_hi = hi};
	struct imap_out out;
	imap_out_init(&out);
	imap_esearch_response(&out, "A7", uid, &r, f, modseq);
	char *s = take(&out);
	assert_string_equal(s, want);
	free(s);
	imap_out_free(&out);
}

static void test_esearch_lines(void **state)
{
	(void)state;
	static const uint32_t seq[] = {1, 2, 3, 5, 6};
	struct imap_search_found f, none;
	found_of(&f, seq, 5);
	found_of(&none, NULL, 0);
	expect_response(&f, false, IMAP_RET_ALL, 0, 0, false, "* ESEARCH (TAG \"A7\") ALL 1:3,5:6\r\n");
	expect_response(&f, true, IMAP_RET_ALL, 0, 0, false,
			"* ESEARCH (TAG \"A7\") UID ALL 101:103,105:106\r\n");
	expect_response(&f, false, IMAP_RET_MIN | IMAP_RET_MAX | IMAP_RET_COUNT, 0, 0, false,
			"* ESEARCH (TAG \"A7\") MIN 1 MAX 6 COUNT 5\r\n");
	/* nothing found: COUNT 0, and no MIN, MAX or ALL (RFC 4731 §3.1) */
	expect_response(&none, false, IMAP_RET_MIN | IMAP_RET_MAX | IMAP_RET_ALL, 0, 0, true,
			"* ESEARCH (TAG \"A7\")\r\n");
	expect_response(&none, true, IMAP_RET_COUNT, 0, 0, true,
			"* ESEARCH (TAG \"A7\") UID COUNT 0\r\n");
	/* PARTIAL: positions in the result (RFC 5267 §4.4) */
	expect_response(&f, false, IMAP_RET_PARTIAL, 2, 4, false,
			"* ESEARCH (TAG \"A7\") PARTIAL (2:4 2:3,5)\r\n");
	expect_response(&f, false, IMAP_RET_PARTIAL, 4, 10, false,
			"* ESEARCH (TAG \"A7\") PARTIAL (4:10 5:6)\r\n");
	expect_response(&f, false, IMAP_RET_PARTIAL, 6, 6, false,
			"* ESEARCH (TAG \"A7\") PARTIAL (6:6 NIL)\r\n");
	/* MODSEQ: of the MIN or MAX message alone, else the highest of all */
	expect_response(&f, false, IMAP_RET_MIN, 0, 0, true,
			"* ESEARCH (TAG \"A7\") MIN 1 MODSEQ 10\r\n");
	expect_response(&f, false, IMAP_RET_MAX, 0, 0, true,
			"* ESEARCH (TAG \"A7\") MAX 6 MODSEQ 60\r\n");
	expect_response(&f, false, IMAP_RET_MIN | IMAP_RET_MAX, 0, 0, true,
			"* ESEARCH (TAG \"A7\") MIN 1 MAX 6 MODSEQ 60\r\n");
	expect_response(&f, false, IMAP_RET_COUNT, 0, 0, true,
			"* ESEARCH (TAG \"A7\") COUNT 5 MODSEQ 99\r\n");
	imap_search_found_free(&f);
	imap_search_found_free(&none);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_return_options),
		cmocka_unit_test(test_numbers_compressed),
		cmocka_unit_test(test_esearch_lines),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

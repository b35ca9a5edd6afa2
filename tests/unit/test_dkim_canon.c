/* Unit tests for dkim_canon: the examples of RFC 6376 §3.4.6, empty and
 * blank-only bodies (§3.4.3, §3.4.4), input cut anywhere (a CR and its LF
 * in two pieces), and l= (§3.5). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "mailauth/dkim_canon.h"

struct out {
	char buf[4096];
	size_t len;
};

static void sink(void *arg, const void *data, size_t len)
{
	struct out *o = arg;
	assert_true(o->len + len < sizeof o->buf);
	memcpy(o->buf + o->len, data, len);
	o->len += len;
	o->buf[o->len] = '\0';
}

static void header(enum dkim_canon c, const char *field, bool crlf, struct out *o)
{
	dkim_canon_header(c, field, strlen(field), crlf, sink, o);
}

/* The body in pieces of `step` bytes. */
static void body(enum dkim_canon c, const char *text, size_t step, uint64_t limit, struct out *o)
{
	struct dkim_body *b = malloc(sizeof *b);
	assert_non_null(b);
	dkim_body_begin(b, c, limit, sink, o);
	size_t n = strlen(text);
	for (size_t i = 0; i < n; i += step)
		dkim_body_feed(b, text + i, n - i < step ? n - i : step);
	dkim_body_end(b);
	free(b);
}

/* RFC 6376 §3.4.6 */
static const char rfc_body[] = " C \r\nD \t E\r\n\r\n\r\n";

static void test_rfc6376_relaxed_example(void **state)
{
	struct out o = {.len = 0};
	header(DKIM_CANON_RELAXED, "A: X", true, &o);
	header(DKIM_CANON_RELAXED, "B : Y\t\r\n\tZ  ", true, &o);
	assert_string_equal(o.buf, "a:X\r\nb:Y Z\r\n");
	for (size_t step = 1; step <= sizeof rfc_body; step++) {
		struct out b = {.len = 0};
		body(DKIM_CANON_RELAXED, rfc_body, step, UINT64_MAX, &b);
		assert_string_equal(b.buf, " C\r\nD E\r\n");
	}
}

static void test_rfc6376_simple_example(void **state)
{
	struct out o = {.len = 0};
	header(DKIM_CANON_SIMPLE, "B : Y\t\r\n\tZ  ", true, &o);
	assert_string_equal(o.buf, "B : Y\t\r\n\tZ  \r\n");
	for (size_t step = 1; step <= sizeof rfc_body; step++) {
		struct out b = {.len = 0};
		body(DKIM_CANON_SIMPLE, rfc_body, step, UINT64_MAX, &b);
		assert_string_equal(b.buf, " C \r\nD \t E\r\n");
	}
}

static void test_empty_and_blank_bodies(void **state)
{
	const char *const empties[] = {"", "\r\n", "\r\n\r\n", "  \r\n\t\r\n"};
	for (size_t i = 0; i < 4; i++) {
		struct out r = {.len = 0}, s = {.len = 0};
		body(DKIM_CANON_RELAXED, empties[i], 1, UINT64_MAX, &r);
		assert_int_equal(r.len, 0); /* relaxed: nothing */
		body(DKIM_CANON_SIMPLE, empties[i], 1, UINT64_MAX, &s);
		if (i < 3)
			assert_string_equal(s.buf, "\r\n"); /* simple: one CRLF */
		else
			assert_string_equal(s.buf, "  \r\n\t\r\n"); /* white space is text there */
	}
}

static void test_missing_last_line_end(void **state)
{
	struct out r = {.len = 0}, s = {.len = 0};
	body(DKIM_CANON_RELAXED, "last\t ", 2, UINT64_MAX, &r);
	assert_string_equal(r.buf, "last\r\n");
	body(DKIM_CANON_SIMPLE, "last\r", 2, UINT64_MAX, &s);
	assert_string_equal(s.buf, "last\r\r\n"); /* a lone CR is text */
}

static void test_header_name_case_and_colon_space(void **state)
{
	struct out o = {.len = 0};
	header(DKIM_CANON_RELAXED, "SUBJECT:   Hello   World   ", false, &o);
	assert_string_equal(o.buf, "subject:Hello World");
}

static void test_length_limit(void **state)
{
	struct out o = {.len = 0};
	body(DKIM_CANON_RELAXED, "abc\r\n\r\ndef\r\n", 3, 7, &o);
	/* l= counts canonical bytes: "abc\r\n\r\nd" */
	assert_string_equal(o.buf, "abc\r\n\r\n");
	struct out p = {.len = 0};
	body(DKIM_CANON_RELAXED, "abc\r\n\r\ndef\r\n", 3, 8, &p);
	assert_string_equal(p.buf, "abc\r\n\r\nd");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_rfc6376_relaxed_example),
		cmocka_unit_test(test_rfc6376_simple_example),
		cmocka_unit_test(test_empty_and_blank_bodies),
		cmocka_unit_test(test_missing_last_line_end),
		cmocka_unit_test(test_header_name_case_and_colon_space),
		cmocka_unit_test(test_length_limit),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

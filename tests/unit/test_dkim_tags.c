/* Unit tests for dkim_tags: RFC 6376 §3.2 tag lists (white space and
 * folding, a trailing ';', a tag given twice, bad names and values, where
 * b= starts and ends) and base64 with folding white space. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "mailauth/dkim_tags.h"

static int parse(const char *s, struct dkim_tags *t, char *err, size_t errsz)
{
	return dkim_tags_parse(s, strlen(s), t, err, errsz);
}

static void test_values_without_surrounding_space(void **state)
{
	struct dkim_tags t;
	char err[128];
	const char *s = " v=1;  a = rsa-sha256 ;\r\n\td=example.com; b=abc\r\n def ;";
	assert_int_equal(parse(s, &t, err, sizeof err), 0);
	assert_int_equal(t.n, 4);
	assert_true(dkim_tag_is(dkim_tags_get(&t, "v"), "1"));
	assert_true(dkim_tag_is(dkim_tags_get(&t, "a"), "rsa-sha256"));
	assert_true(dkim_tag_is(dkim_tags_get(&t, "d"), "example.com"));
	const struct dkim_tag *b = dkim_tags_get(&t, "b");
	assert_int_equal(b->value_len, strlen("abc\r\n def"));
	/* §3.7: what is deleted of b= is everything between '=' and ';' */
	assert_int_equal(b->raw_start, (size_t)(strstr(s, "b=") - s) + 2);
	assert_int_equal(s[b->raw_end], ';');
	assert_null(dkim_tags_get(&t, "bh"));
	/* an empty value is a value */
	assert_int_equal(parse("p=", &t, err, sizeof err), 0);
	assert_int_equal(dkim_tags_get(&t, "p")->value_len, 0);
}

static void test_malformed_lists(void **state)
{
	struct dkim_tags t;
	char err[128];
	const char *const bad[] = {
		"",              /* no tags */
		"a=1;;b=2",      /* an empty tag in the middle */
		"a=1; a=2",      /* twice (§3.2) */
		"a",             /* no '=' */
		"1a=x",          /* a name starts with a letter */
		"a-b=x",         /* and has letters, digits and '_' only */
		"a=x\x01y",      /* a control character in a value */
		"a=\xc3\xa9",    /* 8-bit */
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		err[0] = '\0';
		assert_int_equal(parse(bad[i], &t, err, sizeof err), -1);
		assert_true(err[0] != '\0');
	}
	assert_int_equal(parse("a=1; a=2", &t, err, sizeof err), -1);
	assert_string_equal(err, "tag a given twice");
}

static void test_too_many_tags(void **state)
{
	char text[DKIM_TAGS_MAX * 8 + 16];
	size_t n = 0;
	for (int i = 0; i <= DKIM_TAGS_MAX; i++)
		n += (size_t)snprintf(text + n, sizeof text - n, "t%d=x;", i);
	struct dkim_tags t;
	char err[128];
	assert_int_equal(dkim_tags_parse(text, n, &t, err, sizeof err), -1);
	assert_string_equal(err, "more than 32 tags");
}

static void test_base64(void **state)
{
	unsigned char out[16];
	const char *in = "aGVs\r\n\tbG8=";
	assert_int_equal(dkim_base64_decode(in, strlen(in), out, sizeof out), 5);
	assert_memory_equal(out, "hello", 5);
	assert_int_equal(dkim_base64_decode("", 0, out, sizeof out), 0);
	assert_int_equal(dkim_base64_decode("aGVsbG8", 7, out, sizeof out), -1);   /* not whole */
	assert_int_equal(dkim_base64_decode("aG=sbG8=", 8, out, sizeof out), -1); /* after '=' */
	assert_int_equal(dkim_base64_decode("aGV*bG8=", 8, out, sizeof out), -1); /* not base64 */
	assert_int_equal(dkim_base64_decode("aGVsbG8=", 8, out, 3), -1);          /* no room */
	char *enc = dkim_base64_encode((const unsigned char *)"hello", 5);
	assert_string_equal(enc, "aGVsbG8=");
	free(enc);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_values_without_surrounding_space),
		cmocka_unit_test(test_malformed_lists),
		cmocka_unit_test(test_too_many_tags),
		cmocka_unit_test(test_base64),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

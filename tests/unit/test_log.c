/* Unit tests for the log helpers that carry untrusted bytes into a line:
 * log_escape, log_quote, and the counted list (log_list_*). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "lib/log.h"
#include "lib/strbuf.h"

static void test_escape(void **state)
{
	char out[64];
	const char in[] = "a b\"c\\d=e\x01\xff";
	assert_string_equal(log_escape(out, sizeof out, in, sizeof in - 1),
			    "a\\x20b\\x22c\\x5cd\\x3de\\x01\\xff");
	assert_string_equal(log_quote(out, sizeof out, in, sizeof in - 1),
			    "a b\\x22c\\x5cd\\x3de\\x01\\xff");
	assert_string_equal(log_escape(out, sizeof out, "", 0), "");
}

static void test_escape_cut(void **state)
{
	char out[8]; /* 7 bytes: 4 of text and "..." */
	assert_string_equal(log_escape(out, sizeof out, "abcdefgh", 8), "abcd...");
	assert_string_equal(log_escape(out, sizeof out, "abcdefg", 7), "abcd...");
	assert_string_equal(log_escape(out, sizeof out, "abcd", 4), "abcd");
	/* an escape is never cut in half */
	assert_string_equal(log_escape(out, sizeof out, "a\x01" "bc", 4), "a...");
	char tiny[3];
	assert_string_equal(log_escape(tiny, sizeof tiny, "abc", 3), "");
}

static void list(struct strbuf *sb, const char *const *items, size_t n)
{
	struct log_list l;
	log_list_begin(&l, sb, "<", ">");
	for (size_t i = 0; i < n; i++)
		log_list_add(&l, items[i]);
	assert_true(log_list_end(&l));
}

static void test_list_fits(void **state)
{
	char buf[128];
	struct strbuf sb;
	strbuf_init(&sb, buf, sizeof buf);
	const char *items[] = {"a@example.org", "b c@example.org", "x=y"};
	list(&sb, items, 3);
	assert_string_equal(buf, "<a@example.org>,<b\\x20c@example.org>,<x\\x3dy>");
	strbuf_reset(&sb);
	list(&sb, items, 0);
	assert_string_equal(buf, "");
}

static void test_list_counted(void **state)
{
	char buf[LOG_LIST_MARKER_MAX + 12];
	struct strbuf sb;
	strbuf_init(&sb, buf, sizeof buf);
	const char *items[] = {"aaaa", "bbbb", "c", "d"};
	list(&sb, items, 4);
	/* "<aaaa>" fits with the marker's room; "<bbbb>" does not; "c" would,
	 * but the list stays in order */
	assert_string_equal(buf, "<aaaa>,+3-more");
	assert_true(strbuf_ok(&sb));

	char small[LOG_LIST_MARKER_MAX + 1];
	strbuf_init(&sb, small, sizeof small);
	list(&sb, items, 2);
	assert_string_equal(small, "+2-more");
}

static void test_list_appends(void **state)
{
	char buf[64];
	struct strbuf sb;
	strbuf_init(&sb, buf, sizeof buf);
	assert_true(strbuf_adds(&sb, "to="));
	struct log_list l;
	log_list_begin(&l, &sb, "", "");
	log_list_add(&l, "one");
	log_list_add(&l, "two");
	assert_true(log_list_end(&l));
	assert_string_equal(buf, "to=one,two");
}

static void test_list_too_small(void **state)
{
	char buf[4];
	struct strbuf sb;
	strbuf_init(&sb, buf, sizeof buf);
	struct log_list l;
	log_list_begin(&l, &sb, "<", ">");
	log_list_add(&l, "a");
	assert_false(log_list_end(&l)); /* not even the marker: said, not hidden */
	assert_false(strbuf_ok(&sb));
	assert_string_equal(buf, "");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_escape),
		cmocka_unit_test(test_escape_cut),
		cmocka_unit_test(test_list_fits),
		cmocka_unit_test(test_list_counted),
		cmocka_unit_test(test_list_appends),
		cmocka_unit_test(test_list_too_small),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

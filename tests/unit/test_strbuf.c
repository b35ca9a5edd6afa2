/* Unit tests for strbuf, the bounded string builder: an append that fits
 * exactly, one byte over, all or nothing, formatting, the NUL after every
 * call, and the overflow flag that stays set. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "lib/strbuf.h"

/* Storage of exactly n bytes on the heap, so ASan sees any overrun. */
static char *storage(size_t n)
{
	char *p = malloc(n);
	assert_non_null(p);
	memset(p, 'X', n);
	return p;
}

static void assert_terminated(const struct strbuf *sb)
{
	assert_true(strbuf_len(sb) < sb->cap);
	assert_int_equal(strlen(strbuf_str(sb)), strbuf_len(sb));
}

static void test_init(void **state)
{
	char *buf = storage(1);
	struct strbuf sb;
	strbuf_init(&sb, buf, 1);
	assert_string_equal(strbuf_str(&sb), "");
	assert_int_equal(strbuf_len(&sb), 0);
	assert_int_equal(strbuf_avail(&sb), 0);
	assert_true(strbuf_ok(&sb));
	assert_true(strbuf_add(&sb, "", 0)); /* nothing always fits */
	assert_false(strbuf_addc(&sb, 'a'));
	assert_string_equal(strbuf_str(&sb), "");
	free(buf);
}

static void test_fits_exactly(void **state)
{
	char *buf = storage(6);
	struct strbuf sb;
	strbuf_init(&sb, buf, 6);
	assert_true(strbuf_adds(&sb, "abc"));
	assert_true(strbuf_adds(&sb, "de"));
	assert_string_equal(strbuf_str(&sb), "abcde");
	assert_int_equal(strbuf_len(&sb), 5);
	assert_int_equal(strbuf_avail(&sb), 0);
	assert_true(strbuf_ok(&sb));

	strbuf_reset(&sb);
	assert_true(strbuf_addf(&sb, "%05d", 42));
	assert_string_equal(strbuf_str(&sb), "00042");
	assert_true(strbuf_ok(&sb));
	free(buf);
}

static void test_one_byte_over(void **state)
{
	char *buf = storage(6);
	struct strbuf sb;
	strbuf_init(&sb, buf, 6);
	assert_false(strbuf_adds(&sb, "abcdef"));
	assert_string_equal(strbuf_str(&sb), "");
	assert_false(strbuf_ok(&sb));

	strbuf_reset(&sb);
	assert_true(strbuf_adds(&sb, "abcde"));
	assert_false(strbuf_addc(&sb, 'f'));
	assert_string_equal(strbuf_str(&sb), "abcde");

	strbuf_reset(&sb);
	assert_false(strbuf_addf(&sb, "%06d", 42));
	assert_string_equal(strbuf_str(&sb), "");
	assert_int_equal(strbuf_len(&sb), 0);
	free(buf);
}

static void test_all_or_nothing(void **state)
{
	char *buf = storage(8);
	struct strbuf sb;
	strbuf_init(&sb, buf, 8);
	assert_true(strbuf_adds(&sb, "key="));
	assert_false(strbuf_add(&sb, "value", 5));   /* 4 + 5 > 7 */
	assert_string_equal(strbuf_str(&sb), "key=");
	assert_false(strbuf_addf(&sb, "%s", "long")); /* 4 + 4 > 7 */
	assert_string_equal(strbuf_str(&sb), "key=");
	assert_int_equal(strbuf_len(&sb), 4);
	assert_true(strbuf_adds(&sb, "val"));        /* a smaller one still fits */
	assert_string_equal(strbuf_str(&sb), "key=val");
	free(buf);
}

static void test_formatting(void **state)
{
	char *buf = storage(64);
	struct strbuf sb;
	strbuf_init(&sb, buf, 64);
	assert_true(strbuf_addf(&sb, "%s=%d", "n", 7));
	assert_true(strbuf_addc(&sb, ' '));
	assert_true(strbuf_addf(&sb, "size=%llu", 1234567890123ULL));
	assert_true(strbuf_addf(&sb, "%s", ""));
	assert_true(strbuf_add(&sb, " x\0y", 2)); /* n bytes, not up to a NUL */
	assert_string_equal(strbuf_str(&sb), "n=7 size=1234567890123 x");
	assert_true(strbuf_ok(&sb));

	strbuf_truncate(&sb, 3);
	assert_string_equal(strbuf_str(&sb), "n=7");
	strbuf_truncate(&sb, 30); /* longer than the text: nothing happens */
	assert_string_equal(strbuf_str(&sb), "n=7");
	assert_int_equal(strbuf_len(&sb), 3);
	free(buf);
}

/* After every call, failed or not, the text is a C string of len bytes. */
static void test_nul_at_every_step(void **state)
{
	char *buf = storage(10);
	struct strbuf sb;
	strbuf_init(&sb, buf, 10);
	assert_terminated(&sb);
	const char *parts[] = {"ab", "cdefghijk", "cd", "efghij", "efg", "hi", "j"};
	for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) {
		size_t before = strbuf_len(&sb);
		bool ok = strbuf_adds(&sb, parts[i]);
		assert_terminated(&sb);
		assert_int_equal(strbuf_len(&sb), ok ? before + strlen(parts[i]) : before);
		ok = strbuf_addf(&sb, "%s", parts[i]);
		assert_terminated(&sb);
		if (ok)
			strbuf_truncate(&sb, before + strlen(parts[i]));
		assert_terminated(&sb);
	}
	assert_string_equal(strbuf_str(&sb), "abcdefghi");
	assert_int_equal(strbuf_len(&sb), 9);
	assert_false(strbuf_addc(&sb, 'j'));
	assert_terminated(&sb);
	free(buf);
}

static void test_overflow_sticky(void **state)
{
	char *buf = storage(4);
	struct strbuf sb;
	strbuf_init(&sb, buf, 4);
	assert_false(strbuf_adds(&sb, "toolong"));
	assert_false(strbuf_ok(&sb));
	assert_true(strbuf_adds(&sb, "ok"));   /* fits, but the text is short of one part */
	assert_false(strbuf_ok(&sb));
	strbuf_truncate(&sb, 0);
	assert_false(strbuf_ok(&sb));
	strbuf_reset(&sb);
	assert_true(strbuf_ok(&sb));
	assert_string_equal(strbuf_str(&sb), "");
	free(buf);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_init),
		cmocka_unit_test(test_fits_exactly),
		cmocka_unit_test(test_one_byte_over),
		cmocka_unit_test(test_all_or_nothing),
		cmocka_unit_test(test_formatting),
		cmocka_unit_test(test_nul_at_every_step),
		cmocka_unit_test(test_overflow_sticky),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

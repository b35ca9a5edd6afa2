/* Unit tests for imap_date: RFC 3501 §9 date and date-time (SEARCH
 * BEFORE/ON/SINCE, APPEND's internal date) and the INTERNALDATE format. */
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "proto/imap/imap_date.h"

static void test_days_from_civil(void **state)
{
	assert_int_equal(imap_days_from_civil(1970, 1, 1), 0);
	assert_int_equal(imap_days_from_civil(1969, 12, 31), -1);
	assert_int_equal(imap_days_from_civil(2000, 3, 1), 11017);   /* after a leap day */
	assert_int_equal(imap_days_from_civil(2026, 11, 28), 20785);
}

static void test_date(void **state)
{
	long long day;
	assert_true(imap_parse_date("1-Feb-1994", &day));
	assert_int_equal(day, imap_days_from_civil(1994, 2, 1));
	assert_true(imap_parse_date("03-nov-2026", &day));      /* month any case, 2-digit day */
	assert_int_equal(day, imap_days_from_civil(2026, 11, 3));
	const char *bad[] = {"", "1-Feb-94", "32-Jan-2020", "0-Jan-2020", "1-Foo-2020",
			     "1-Feb-2020x", "1 Feb 2020", "-1-Feb-2020", "1-February-2020",
			     "+1-Feb-2020", "1-Feb-+202", "1-Feb- 2020", "1", "1-"};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
		assert_false(imap_parse_date(bad[i], &day));
}

static void test_datetime(void **state)
{
	long long t;
	assert_true(imap_parse_datetime("17-Nov-2026 10:00:05 +0100", &t));
	assert_int_equal(t, imap_days_from_civil(2026, 11, 17) * 86400 + 9 * 3600 + 5);
	assert_true(imap_parse_datetime(" 7-Nov-2026 10:00:05 -0530", &t)); /* date-day-fixed */
	assert_int_equal(t, imap_days_from_civil(2026, 11, 7) * 86400 + 15 * 3600 + 30 * 60 + 5);
	const char *bad[] = {"17-Nov-2026 10:00:05", "17-Nov-2026 24:00:00 +0000",
			     "17-Nov-2026 10:60:00 +0000", "17-Nov-2026 10:00:05 +0160",
			     "17-Nov-2026 10:00:05 *0100", "17-Xyz-2026 10:00:05 +0100",
			     "17-Nov-2026 10:00:05 +0100 ", "17-Nov-2026 10:00:05 +-100",
			     "17-Nov-2026 1a:00:05 +0100", "17-Nov-2026 10:+0:05 +0100",
			     "17-Nov-2026 10:00:05+ 0100", "17-Nov-2026 10:00:05 + 100"};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
		assert_false(imap_parse_datetime(bad[i], &t));
}

static void test_format_datetime(void **state)
{
	char out[IMAP_DATETIME_SIZE];
	setenv("TZ", "UTC", 1);
	tzset();
	assert_true(imap_format_datetime(0, out));
	assert_string_equal(out, "01-Jan-1970 00:00:00 +0000");
	long long t;
	assert_true(imap_parse_datetime("17-Nov-2026 10:00:05 +0100", &t));
	assert_true(imap_format_datetime(t, out));
	assert_string_equal(out, "17-Nov-2026 09:00:05 +0000");
	setenv("TZ", "EST5", 1); /* a fixed zone west of UTC */
	tzset();
	assert_true(imap_format_datetime(t, out));
	assert_string_equal(out, "17-Nov-2026 04:00:05 -0500");
	long long back;
	assert_true(imap_parse_datetime(out, &back));
	assert_int_equal(back, t);
}

/* RFC 3501 date-year is 4DIGIT: a time outside years 0 to 9999 has no
 * date-time, and none is made up (it used to be "00-Jan-1900"). */
static void test_format_datetime_out_of_range(void **state)
{
	char out[IMAP_DATETIME_SIZE];
	setenv("TZ", "UTC", 1);
	tzset();
	long long last = imap_days_from_civil(10000, 1, 1) * 86400 - 1;
	assert_true(imap_format_datetime(last, out));
	assert_string_equal(out, "31-Dec-9999 23:59:59 +0000");
	assert_false(imap_format_datetime(last + 1, out));
	assert_string_equal(out, "");
	long long first = imap_days_from_civil(0, 1, 1) * 86400;
	assert_true(imap_format_datetime(first, out));
	assert_string_equal(out, "01-Jan-0000 00:00:00 +0000");
	assert_false(imap_format_datetime(first - 1, out));
	assert_false(imap_format_datetime(99999999999999LL, out)); /* a Maildir name's digits */
	assert_false(imap_format_datetime(LLONG_MAX, out)); /* localtime_r fails */
	assert_false(imap_format_datetime(LLONG_MIN, out));
	assert_string_equal(out, "");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_days_from_civil),
		cmocka_unit_test(test_date),
		cmocka_unit_test(test_datetime),
		cmocka_unit_test(test_format_datetime),
		cmocka_unit_test(test_format_datetime_out_of_range),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Unit tests for date_rfc5322: the RFC 5322 §3.3 form in the local time
 * zone (TZ set per test), both signs of the offset, and no half date. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "lib/date.h"

static void set_tz(const char *tz)
{
	assert_int_equal(setenv("TZ", tz, 1), 0);
	tzset();
}

static void test_utc(void **state)
{
	char d[DATE_RFC5322_MAX];
	set_tz("UTC");
	assert_true(date_rfc5322(0, d, sizeof d));
	assert_string_equal(d, "Thu, 01 Jan 1970 00:00:00 +0000");
	assert_true(date_rfc5322(1796663379, d, sizeof d));
	assert_string_equal(d, "Mon, 07 Dec 2026 17:09:39 +0000");
}

static void test_offsets(void **state)
{
	char d[64];
	/* POSIX TZ: the offset is west of UTC, RFC 5322 writes it east */
	set_tz("XST-5:30");
	assert_true(date_rfc5322(0, d, sizeof d));
	assert_string_equal(d, "Thu, 01 Jan 1970 05:30:00 +0530");
	set_tz("YST8");
	assert_true(date_rfc5322(0, d, sizeof d));
	assert_string_equal(d, "Wed, 31 Dec 1969 16:00:00 -0800");
	set_tz("ZST+0:45");
	assert_true(date_rfc5322(3600, d, sizeof d));
	assert_string_equal(d, "Thu, 01 Jan 1970 00:15:00 -0045");
	set_tz("UTC");
}

static void test_exact_size(void **state)
{
	set_tz("UTC");
	char *d = malloc(DATE_RFC5322_MAX); /* exactly, so ASan sees an overrun */
	assert_non_null(d);
	assert_true(date_rfc5322(0, d, DATE_RFC5322_MAX));
	assert_int_equal(strlen(d) + 1, DATE_RFC5322_MAX);
	free(d);
}

static void test_no_half_date(void **state)
{
	set_tz("UTC");
	char d[DATE_RFC5322_MAX - 1];
	memset(d, 'X', sizeof d);
	assert_false(date_rfc5322(0, d, sizeof d));
	assert_string_equal(d, "");
	char one[1] = {'X'};
	assert_false(date_rfc5322(0, one, sizeof one));
	assert_int_equal(one[0], '\0');
	assert_false(date_rfc5322(0, d, 0));
}

static void test_out_of_range(void **state)
{
	set_tz("UTC");
	char d[64];
	/* RFC 5322 §3.3: the year is 1900 or later, written with 4 digits here */
	assert_false(date_rfc5322((time_t)-2300000000LL, d, sizeof d)); /* 1897 */
	assert_string_equal(d, "");
	assert_false(date_rfc5322((time_t)253402300800LL, d, sizeof d)); /* 10000 */
	assert_string_equal(d, "");
	assert_true(date_rfc5322((time_t)253402300799LL, d, sizeof d));
	assert_string_equal(d, "Fri, 31 Dec 9999 23:59:59 +0000");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_utc),
		cmocka_unit_test(test_offsets),
		cmocka_unit_test(test_exact_size),
		cmocka_unit_test(test_no_half_date),
		cmocka_unit_test(test_out_of_range),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

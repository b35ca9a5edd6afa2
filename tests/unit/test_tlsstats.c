/* Unit tests for tlsstats.c: counting TLS outcomes per day and policy
 * domain (RFC 8460 §4.3), the bounds, and the state file's text form read
 * back. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "queue/tlsstats.h"

static const char DAY[] = "2026-12-08";

static struct tlsstats_session ok_session(const char *domain)
{
	return (struct tlsstats_session){.domain = domain, .type = TLSRPT_POLICY_TLSA};
}

static struct tlsstats_session failed(const char *domain, const char *result, const char *mx)
{
	return (struct tlsstats_session){.domain = domain, .type = TLSRPT_POLICY_TLSA,
					 .result = result, .mx = mx, .receiving_ip = "192.0.2.1",
					 .sending_ip = "192.0.2.9"};
}

static void test_day(void **state)
{
	(void)state;
	char day[TLSSTATS_DAY_MAX];
	assert_true(tlsstats_day(0, day));
	assert_string_equal(day, "1970-01-01");
	assert_true(tlsstats_day(1796774399, day)); /* the last second of a day */
	assert_string_equal(day, "2026-12-08");
}

static void test_counts(void **state)
{
	(void)state;
	struct tlsstats s;
	tlsstats_init(&s);
	struct tlsstats_session ok = ok_session("Dane.Example");
	struct tlsstats_session bad = failed("dane.example", "validation-failure", "mx1.dane.example");
	assert_true(tlsstats_add(&s, DAY, &ok));
	assert_true(tlsstats_add(&s, DAY, &ok));
	assert_true(tlsstats_add(&s, DAY, &bad));
	assert_true(tlsstats_add(&s, DAY, &bad));
	assert_true(tlsstats_add(&s, "2026-12-09", &ok));
	assert_int_equal(s.n, 2); /* one per day; the domain's case does not matter */
	assert_string_equal(s.entries[0].domain, "dane.example");
	assert_int_equal(s.entries[0].successes, 2);
	assert_int_equal(s.entries[0].nfailures, 1);
	assert_int_equal(s.entries[0].failures[0].sessions, 2);
	assert_string_equal(s.entries[0].failures[0].result, "validation-failure");
	/* refused: an unknown result, a name that is no host name, no MX */
	struct tlsstats_session odd = failed("dane.example", "tlsa-mismatch", "mx1.dane.example");
	assert_false(tlsstats_add(&s, DAY, &odd));
	odd = failed("dane example", "validation-failure", "mx1");
	assert_false(tlsstats_add(&s, DAY, &odd));
	odd = failed("dane.example", "validation-failure", NULL);
	assert_false(tlsstats_add(&s, DAY, &odd));
	tlsstats_remove(&s, 0);
	assert_int_equal(s.n, 1);
	assert_string_equal(s.entries[0].day, "2026-12-09");
	tlsstats_free(&s);
}

static void test_bounds(void **state)
{
	(void)state;
	struct tlsstats s;
	tlsstats_init(&s);
	char mx[64], domain[64];
	/* more distinct failures than rows: the rest still count in the total */
	for (int i = 0; i < TLSRPT_FAILURES_MAX + 5; i++) {
		snprintf(mx, sizeof mx, "mx%d.example", i);
		struct tlsstats_session f = failed("example", "starttls-not-supported", mx);
		assert_true(tlsstats_add(&s, DAY, &f));
	}
	assert_int_equal(s.entries[0].nfailures, TLSRPT_FAILURES_MAX);
	assert_int_equal(s.entries[0].other_failures, 5);
	/* more domains than entries: the newest are not counted */
	for (int i = 1; i < TLSSTATS_ENTRIES_MAX; i++) {
		snprintf(domain, sizeof domain, "d%d.example", i);
		struct tlsstats_session ok = ok_session(domain);
		assert_true(tlsstats_add(&s, DAY, &ok));
	}
	struct tlsstats_session one_more = ok_session("one-more.example");
	assert_false(tlsstats_add(&s, DAY, &one_more));
	struct tlsstats_session known = ok_session("d1.example");
	assert_true(tlsstats_add(&s, DAY, &known));
	assert_int_equal(s.n, TLSSTATS_ENTRIES_MAX);
	tlsstats_free(&s);
}

static void test_text_round_trip(void **state)
{
	(void)state;
	struct tlsstats s, back;
	tlsstats_init(&s);
	tlsstats_init(&back);
	struct tlsstats_session ok = ok_session("dane.example");
	struct tlsstats_session bad = failed("dane.example", "validation-failure", "mx1.dane.example");
	bad.receiving_ip = NULL;
	struct tlsstats_session sts = {.domain = "sts.example", .type = TLSRPT_POLICY_STS,
				       .result = "certificate-host-mismatch", .mx = "mx.sts.example",
				       .receiving_ip = "2001:db8::1"};
	static const char *const lines[] = {"version: STSv1", "mode: testing", "bad\nline",
					    "max_age: 86400", "mx: mx.sts.example"};
	sts.policy = lines;
	sts.npolicy = 5;
	assert_true(tlsstats_add(&s, DAY, &ok));
	assert_true(tlsstats_add(&s, DAY, &bad));
	assert_true(tlsstats_add(&s, DAY, &sts));
	sts.policy = lines + 1; /* the first session's policy is kept */
	sts.npolicy = 1;
	sts.result = NULL;
	assert_true(tlsstats_add(&s, DAY, &sts));
	s.entries[1].tries = 2;
	size_t len;
	char *text = tlsstats_format(&s, &len);
	assert_string_equal(text, "E 2026-12-08 dane.example tlsa 1 0 0\n"
				  "F validation-failure mx1.dane.example - 192.0.2.9 1\n"
				  "E 2026-12-08 sts.example sts 1 0 2\n"
				  "P version: STSv1\nP mode: testing\nP max_age: 86400\n"
				  "P mx: mx.sts.example\n"
				  "F certificate-host-mismatch mx.sts.example 2001:db8::1 - 1\n");
	char err[128];
	assert_true(tlsstats_parse(&back, text, len, err, sizeof err));
	size_t len2;
	char *again = tlsstats_format(&back, &len2);
	assert_string_equal(again, text);
	free(again);
	free(text);
	tlsstats_free(&back);
	/* a damaged file says where */
	static const char *const bad_files[] = {
		"E 2026-12-08 dane.example tlsa 1 0\n",
		"F validation-failure mx1 - - 1\n",
		"E 2026-12-08 dane.example tlsa 1 0 0\nF made-up mx1 - - 1\n",
		"E 2026-12-08 dane.example weird 1 0 0\n",
		"E 2026-12-08 dane.example tlsa -1 0 0\n",
		"E 2026-12-08 dane.example tlsa 1 0 0 extra\n",
		"P version: STSv1\n",
		"E 2026-12-08 dane.example tlsa 1 0 0\nP \n",
	};
	for (size_t i = 0; i < sizeof bad_files / sizeof *bad_files; i++) {
		tlsstats_init(&back);
		assert_false(tlsstats_parse(&back, bad_files[i], strlen(bad_files[i]), err, sizeof err));
		assert_non_null(strstr(err, "line "));
		tlsstats_free(&back);
	}
	tlsstats_free(&s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_day),
		cmocka_unit_test(test_counts),
		cmocka_unit_test(test_bounds),
		cmocka_unit_test(test_text_round_trip),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

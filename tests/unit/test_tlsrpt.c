/* Unit tests for tlsrpt.c: the "_smtp._tls" record (RFC 8460 §3), the
 * JSON report (§4.4, read back with jansson) and its gzip form (§5.1,
 * read back with zlib). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "net/tlsrpt.h"

static bool parse(const char *txt, struct tlsrpt_rua *rua, size_t *n)
{
	return tlsrpt_record_parse(txt, strlen(txt), rua, n);
}

static void test_record(void **state)
{
	(void)state;
	struct tlsrpt_rua rua[TLSRPT_RUA_MAX];
	size_t n;
	assert_true(parse("v=TLSRPTv1; rua=mailto:reports@example.com", rua, &n));
	assert_int_equal(n, 1);
	assert_false(rua[0].https);
	assert_string_equal(rua[0].uri, "reports@example.com");
	assert_true(parse("v=TLSRPTv1;rua=mailto:a@x.example , https://r.example/tlsrpt ;ext=1;", rua,
			  &n));
	assert_int_equal(n, 2);
	assert_true(rua[1].https);
	assert_string_equal(rua[1].uri, "https://r.example/tlsrpt");
	/* not a record, no rua, two rua, nothing usable, headers in a mailto */
	assert_false(parse("v=spf1 -all", rua, &n));
	assert_false(parse("v=TLSRPTv1;", rua, &n));
	assert_false(parse("v=TLSRPTv1; rua=mailto:a@x.example; rua=mailto:b@x.example", rua, &n));
	assert_false(parse("v=TLSRPTv1; rua=http://r.example/", rua, &n));
	assert_false(parse("v=TLSRPTv1; rua=mailto:a@x.example?subject=x", rua, &n));
	assert_false(parse("v=TLSRPTv1 rua=mailto:a@x.example", rua, &n));
}

static void test_report_json(void **state)
{
	(void)state;
	static const char *const lines[] = {"version: STSv1", "mode: enforce",
					    "mx: *.mail.example.net", "max_age: 604800"};
	struct tlsrpt_failure f[] = {
		{"certificate-not-trusted", "mx1.mail.example.net", "192.0.2.25", 3},
		{"starttls-not-supported", "mx2.mail.example.net", NULL, 2},
	};
	struct tlsrpt_policy p = {
		.domain = "example.net", .type = TLSRPT_POLICY_STS, .strings = lines, .nstrings = 4,
		.mx_host = "*.mail.example.net", .successes = 41, .failures = f, .nfailures = 2,
	};
	struct tlsrpt_report r = {
		.organization = "mail.example.test", .contact = "postmaster@mail.example.test",
		.report_id = "2026-12-07T00:00:00Z_example.net", .start = 1796601600,
		.end = 1796687999, .policies = &p, .npolicies = 1,
	};
	char *text = tlsrpt_report_json(&r);
	assert_non_null(text);
	json_error_t err;
	json_t *root = json_loads(text, 0, &err);
	assert_non_null(root);
	assert_string_equal(json_string_value(json_object_get(root, "organization-name")),
			    "mail.example.test");
	json_t *range = json_object_get(root, "date-range");
	assert_string_equal(json_string_value(json_object_get(range, "start-datetime")),
			    "2026-12-07T00:00:00Z");
	assert_string_equal(json_string_value(json_object_get(range, "end-datetime")),
			    "2026-12-07T23:59:59Z");
	json_t *pol = json_array_get(json_object_get(root, "policies"), 0);
	json_t *policy = json_object_get(pol, "policy");
	assert_string_equal(json_string_value(json_object_get(policy, "policy-type")), "sts");
	assert_int_equal(json_array_size(json_object_get(policy, "policy-string")), 4);
	json_t *summary = json_object_get(pol, "summary");
	assert_int_equal(json_integer_value(json_object_get(summary, "total-successful-session-count")),
			 41);
	assert_int_equal(json_integer_value(json_object_get(summary, "total-failure-session-count")), 5);
	json_t *d0 = json_array_get(json_object_get(pol, "failure-details"), 0);
	assert_string_equal(json_string_value(json_object_get(d0, "result-type")),
			    "certificate-not-trusted");
	assert_int_equal(json_integer_value(json_object_get(d0, "failed-session-count")), 3);
	json_decref(root);
	/* a string that is not UTF-8: no report rather than a broken one */
	p.domain = "bad\xff.example";
	assert_null(tlsrpt_report_json(&r));
	free(text);
}

static void test_gzip(void **state)
{
	(void)state;
	const char *text = "{\"organization-name\":\"mail.example.test\"}";
	size_t n;
	unsigned char *gz = tlsrpt_gzip(text, strlen(text), &n);
	assert_non_null(gz);
	assert_true(n > 18 && gz[0] == 0x1f && gz[1] == 0x8b); /* RFC 1952 magic */
	char out[256];
	z_stream z;
	memset(&z, 0, sizeof z);
	assert_int_equal(inflateInit2(&z, 15 + 16), Z_OK);
	z.next_in = gz;
	z.avail_in = (uInt)n;
	z.next_out = (Bytef *)out;
	z.avail_out = sizeof out;
	assert_int_equal(inflate(&z, Z_FINISH), Z_STREAM_END);
	assert_int_equal(z.total_out, strlen(text));
	assert_memory_equal(out, text, strlen(text));
	inflateEnd(&z);
	free(gz);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_record),
		cmocka_unit_test(test_report_json),
		cmocka_unit_test(test_gzip),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

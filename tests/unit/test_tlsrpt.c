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
		{"certificate-not-trusted", "mx1.mail.example.net", "192.0.2.25", 3, "192.0.2.9"},
		{"starttls-not-supported", "mx2.mail.example.net", NULL, 2, NULL},
	};
	struct tlsrpt_policy p = {
		.domain = "example.net", .type = TLSRPT_POLICY_STS, .strings = lines, .nstrings = 4,
		.mx_host = "*.mail.example.net", .successes = 41, .failures = f, .nfailures = 2,
		.other_failures = 4, /* beyond the detail rows: in the total only */
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
	assert_int_equal(json_integer_value(json_object_get(summary, "total-failure-session-count")), 9);
	json_t *d0 = json_array_get(json_object_get(pol, "failure-details"), 0);
	assert_string_equal(json_string_value(json_object_get(d0, "result-type")),
			    "certificate-not-trusted");
	assert_int_equal(json_integer_value(json_object_get(d0, "failed-session-count")), 3);
	assert_string_equal(json_string_value(json_object_get(d0, "sending-mta-ip")), "192.0.2.9");
	json_t *d1 = json_array_get(json_object_get(pol, "failure-details"), 1);
	assert_null(json_object_get(d1, "sending-mta-ip"));
	assert_null(json_object_get(d1, "receiving-ip"));
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

static void test_https_target(void **state)
{
	(void)state;
	char host[64];
	unsigned short port;
	assert_true(tlsrpt_https_target("https://reports.example/tlsrpt", host, sizeof host, &port));
	assert_string_equal(host, "reports.example");
	assert_int_equal(port, 443);
	assert_true(tlsrpt_https_target("https://r.example:8443/x", host, sizeof host, &port));
	assert_string_equal(host, "r.example");
	assert_int_equal(port, 8443);
	assert_true(tlsrpt_https_target("https://r.example:8443", host, sizeof host, &port));
	static const char *const bad[] = {
		"http://r.example/", "https://user@r.example/", "https://[2001:db8::1]/",
		"https://r.example:0/", "https://r.example:65536/", "https://r.example:12ab/",
		"https:///path", "https://r%2eexample/",
	};
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
		assert_false(tlsrpt_https_target(bad[i], host, sizeof host, &port));
	assert_false(tlsrpt_https_target("https://a-rather-long-host-name.example/", host, 8, &port));
}

static void test_mail_compose(void **state)
{
	(void)state;
	static const unsigned char gz[100] = {0x1f, 0x8b};
	struct tlsrpt_mail m = {
		.from = "postmaster@example.test", .to = "tlsrpt@example.net",
		.domain = "example.net", .submitter = "mail.example.test",
		.report_id = "2026-12-07T00:00:00Z_example.net_1@mail.example.test",
		.message_id = "<r1@mail.example.test>", .now = 1796688000, .start = 1796601600,
		.end = 1796688000, .gz = gz, .gzlen = sizeof gz,
	};
	size_t len;
	char *text = tlsrpt_mail_compose(&m, &len);
	assert_non_null(text);
	assert_int_equal(strlen(text), len);
	assert_non_null(strstr(text, "\r\nSubject: Report Domain: example.net Submitter: "
				     "mail.example.test Report-ID: <2026-12-07T00:00:00Z_example.net_1"
				     "@mail.example.test>\r\n"));
	assert_non_null(strstr(text, "\r\nTLS-Report-Domain: example.net\r\n"));
	assert_non_null(strstr(text, "\r\nTLS-Report-Submitter: mail.example.test\r\n"));
	assert_non_null(strstr(text, "multipart/report; report-type=\"tlsrpt\""));
	assert_non_null(strstr(text, "Content-Type: application/tlsrpt+gzip\r\n"));
	assert_non_null(strstr(text, "filename=\"mail.example.test!example.net!1796601600!"
				     "1796688000.json.gz\""));
	assert_non_null(strstr(text, "\r\nH4sAAAAA")); /* base64 of 1f 8b 00 ... */
	free(text);
	/* a line end smuggled into a header field: no message */
	m.to = "a@example.net\r\nBcc: b@example.net";
	assert_null(tlsrpt_mail_compose(&m, &len));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_record),
		cmocka_unit_test(test_report_json),
		cmocka_unit_test(test_gzip),
		cmocka_unit_test(test_https_target),
		cmocka_unit_test(test_mail_compose),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

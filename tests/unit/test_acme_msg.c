/* Unit tests for acme_msg: RFC 8555 responses read into bounded structures
 * (directory §7.1.1, order §7.1.3, authorization §7.1.4, problem §6.7),
 * and what is refused: non-https URLs, bad tokens, wrong types, size. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "net/acme_msg.h"

#define PARSE(fn, text, out) fn(text, strlen(text), out, err, sizeof err)
#define AUTHZ(text, type, out) acme_parse_authz(text, strlen(text), type, out, err, sizeof err)

static void test_directory(void **state)
{
	char err[256];
	struct acme_directory d;
	assert_int_equal(PARSE(acme_parse_directory,
			       "{\"newNonce\":\"https://ca/n\",\"newAccount\":\"https://ca/a\","
			       "\"newOrder\":\"https://ca/o\",\"meta\":{\"x\":1}}", &d), 0);
	assert_string_equal(d.new_nonce, "https://ca/n");
	assert_string_equal(d.new_account, "https://ca/a");
	assert_string_equal(d.new_order, "https://ca/o");
	assert_int_equal(PARSE(acme_parse_directory,
			       "{\"newNonce\":\"http://ca/n\",\"newAccount\":\"https://ca/a\","
			       "\"newOrder\":\"https://ca/o\"}", &d), -1);
	assert_string_equal(err, "\"newNonce\" is not an https URL");
	assert_int_equal(PARSE(acme_parse_directory, "{\"newNonce\":\"https://ca/n\"}", &d), -1);
	assert_string_equal(err, "\"newAccount\" is missing");
	assert_int_equal(PARSE(acme_parse_directory, "[1]", &d), -1);
	assert_string_equal(err, "JSON response is not an object");
	assert_int_equal(PARSE(acme_parse_directory, "{\"a\":1,\"a\":2}", &d), -1);
	assert_int_equal(PARSE(acme_parse_directory, "{", &d), -1);
}

static void test_order(void **state)
{
	char err[256];
	struct acme_order o;
	assert_int_equal(PARSE(acme_parse_order,
			       "{\"status\":\"pending\",\"finalize\":\"https://ca/f\","
			       "\"authorizations\":[\"https://ca/z/1\",\"https://ca/z/2\"]}", &o), 0);
	assert_int_equal(o.status, ACME_ST_PENDING);
	assert_string_equal(o.finalize, "https://ca/f");
	assert_string_equal(o.certificate, "");
	assert_int_equal(o.nauthz, 2);
	assert_string_equal(o.authz[1], "https://ca/z/2");
	acme_order_free(&o);
	assert_int_equal(PARSE(acme_parse_order,
			       "{\"status\":\"valid\",\"finalize\":\"https://ca/f\","
			       "\"certificate\":\"https://ca/c\",\"authorizations\":[\"https://ca/z\"]}",
			       &o), 0);
	assert_int_equal(o.status, ACME_ST_VALID);
	assert_string_equal(o.certificate, "https://ca/c");
	acme_order_free(&o);
	assert_int_equal(PARSE(acme_parse_order,
			       "{\"status\":\"bogus\",\"finalize\":\"https://ca/f\","
			       "\"authorizations\":[\"https://ca/z\"]}", &o), -1);
	assert_string_equal(err, "order without a known \"status\"");
	assert_int_equal(PARSE(acme_parse_order,
			       "{\"status\":\"ready\",\"finalize\":\"https://ca/f\","
			       "\"authorizations\":[]}", &o), -1);
	assert_int_equal(PARSE(acme_parse_order,
			       "{\"status\":\"ready\",\"finalize\":\"https://ca/f\","
			       "\"authorizations\":[\"https://ca/z\", 7]}", &o), -1);
	assert_string_equal(err, "authorization 2 is not an https URL");
	assert_null(o.authz);
}

static void test_authz(void **state)
{
	char err[256];
	struct acme_authz z;
	assert_int_equal(AUTHZ("{\"status\":\"pending\",\"identifier\":{\"type\":\"dns\","
			       "\"value\":\"mail.example.test\"},\"challenges\":["
			       "{\"type\":\"dns-01\",\"url\":\"https://ca/c/0\",\"token\":\"AAA\"},"
			       "{\"type\":\"http-01\",\"url\":\"https://ca/c/1\",\"token\":\"x/../y\"},"
			       "{\"type\":\"http-01\",\"url\":\"https://ca/c/2\",\"token\":\"Ab-_9\","
			       "\"status\":\"pending\"}]}", "http-01", &z), 0);
	assert_string_equal(z.name, "mail.example.test");
	assert_true(z.has_challenge);
	/* the token with a slash is skipped: it could name another path */
	assert_string_equal(z.challenge_url, "https://ca/c/2");
	assert_string_equal(z.token, "Ab-_9");
	/* the same authorization read for tls-alpn-01 (RFC 8737): it offers none */
	assert_int_equal(AUTHZ("{\"status\":\"pending\",\"identifier\":{\"value\":\"a.test\"},"
			       "\"challenges\":[{\"type\":\"http-01\",\"url\":\"https://ca/1\","
			       "\"token\":\"t1\"},{\"type\":\"tls-alpn-01\",\"url\":\"https://ca/2\","
			       "\"token\":\"t2\"}]}", "tls-alpn-01", &z), 0);
	assert_true(z.has_challenge);
	assert_string_equal(z.challenge_url, "https://ca/2");
	assert_string_equal(z.token, "t2");
	assert_int_equal(AUTHZ("{\"status\":\"invalid\",\"identifier\":{\"value\":\"a.test\"},"
			       "\"challenges\":[{\"type\":\"http-01\",\"url\":\"https://ca/c\","
			       "\"token\":\"t\",\"status\":\"invalid\",\"error\":{\"type\":"
			       "\"urn:ietf:params:acme:error:connection\",\"detail\":\"refused \\\"x\\\"\\n\"}}]}",
			       "http-01", &z), 0);
	assert_int_equal(z.status, ACME_ST_INVALID);
	assert_string_equal(z.error, "connection: refused ?x??"); /* quotes, control: ? */
	assert_int_equal(AUTHZ("{\"status\":\"pending\"}", "http-01", &z), -1);
	assert_string_equal(err, "authorization without a usable identifier");
}

static void test_problem(void **state)
{
	char out[128];
	const char *p = "{\"type\":\"urn:ietf:params:acme:error:badNonce\",\"detail\":\"stale\"}";
	assert_true(acme_parse_problem(p, strlen(p), out, sizeof out));
	assert_string_equal(out, "badNonce: stale");
	assert_true(acme_problem_is_bad_nonce(p, strlen(p)));
	const char *q = "{\"type\":\"urn:ietf:params:acme:error:rejectedIdentifier\"}";
	assert_false(acme_problem_is_bad_nonce(q, strlen(q)));
	assert_false(acme_parse_problem("<html>", 6, out, sizeof out));
	assert_string_equal(out, "no problem document in the response");
	char small[8];
	assert_true(acme_parse_problem(p, strlen(p), small, sizeof small));
	assert_string_equal(small, "badNonc"); /* bounded, terminated */
}

static void test_body_too_large(void **state)
{
	char err[256];
	struct acme_directory d;
	size_t n = ACME_BODY_MAX + 1;
	char *big = calloc(1, n + 1);
	assert_non_null(big);
	memset(big, ' ', n);
	assert_int_equal(acme_parse_directory(big, n, &d, err, sizeof err), -1);
	assert_non_null(strstr(err, "at most"));
	free(big);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_directory),
		cmocka_unit_test(test_order),
		cmocka_unit_test(test_authz),
		cmocka_unit_test(test_problem),
		cmocka_unit_test(test_body_too_large),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

/* test_authres: the Authentication-Results field posthorn writes (RFC 8601
 * §2.2, §2.7), and recognising fields that claim posthorn's authserv-id
 * (§5), through comments, quoting and odd spacing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "mailauth/authres.h"

static bool claims(const char *field)
{
	return authres_claims(field, strlen(field), "mx.example.org");
}

static void test_claims(void **state)
{
	(void)state;
	assert_true(claims("Authentication-Results: mx.example.org; spf=pass"));
	assert_true(claims("authentication-results:MX.Example.ORG;dkim=pass"));
	assert_true(claims("Authentication-Results : (forged) mx.example.org 1; none"));
	assert_true(claims("Authentication-Results:\r\n\t\"mx.example.org\"; none"));
	assert_true(claims("Authentication-Results: mx.example.org"));
	assert_false(claims("Authentication-Results: other.example.org; spf=pass"));
	assert_false(claims("Authentication-Results: mx.example.org.evil; spf=pass"));
	assert_false(claims("X-Authentication-Results: mx.example.org; spf=pass"));
	assert_false(claims("Authentication-Results-Original: mx.example.org; spf=pass"));
	assert_false(claims("Authentication-Results: (unclosed mx.example.org; none"));
	assert_false(claims("Authentication-Results: \"mx.example.org; none"));
	assert_false(claims("Authentication-Results:"));
	/* comments nested past the bound are not read through */
	char deep[200] = "Authentication-Results: ";
	for (int i = 0; i < 40; i++)
		strcat(deep, "(");
	strcat(deep, "mx.example.org");
	assert_false(claims(deep));
}

static void test_authserv_id_bounds(void **state)
{
	(void)state;
	char out[8];
	assert_true(authres_authserv_id(" a.b ;", 6, out, sizeof out));
	assert_string_equal(out, "a.b");
	assert_false(authres_authserv_id(" abcdefghij;", 12, out, sizeof out)); /* does not fit */
	assert_false(authres_authserv_id("  ", 2, out, sizeof out));
	/* found by fuzz_authres: a NUL inside a quoted id */
	assert_false(authres_authserv_id(" \"\0\x1cu$\"", 8, out, sizeof out));
}

static void test_build(void **state)
{
	(void)state;
	struct dmarc_verdict v = {.result = DMARC_RESULT_FAIL, .policy = DMARC_POLICY_REJECT,
				  .disposition = DMARC_DISP_REJECT};
	struct authres_dkim dkim[2] = {
		{.domain = "example.com", .selector = "sel", .algorithm = "rsa-sha256",
		 .result = AUTHRES_DKIM_PASS, .header_b = "abcdefghijklmnopqrstuvwxyz"},
		{.domain = "example.net", .selector = "s2", .algorithm = "ed25519-sha256",
		 .result = AUTHRES_DKIM_FAIL, .reason = "body hash (did not) verify"},
	};
	struct authres_input in = {
		.authserv_id = "mx.example.org", .spf_checked = true, .spf = SPF_SOFTFAIL,
		.spf_identity = "mailfrom", .spf_sender = "bob@example.com", .dkim = dkim,
		.ndkim = 2, .dkim_checked = true, .dmarc_checked = true, .dmarc = &v,
		.from_domain = "example.com",
	};
	char out[AUTHRES_MAX];
	assert_true(authres_build(&in, out, sizeof out));
	assert_string_equal(out,
		"Authentication-Results: mx.example.org;\r\n"
		"\tspf=softfail smtp.mailfrom=bob@example.com;\r\n"
		"\tdkim=pass header.d=example.com header.s=sel header.a=rsa-sha256"
		" header.b=abcdefghijkl;\r\n"
		"\tdkim=fail (body hash did not verify) header.d=example.net header.s=s2"
		" header.a=ed25519-sha256;\r\n"
		"\tdmarc=fail (p=reject dis=reject) header.from=example.com\r\n");
	/* a sender that is no dot-atom is quoted; controls never pass */
	in.spf_sender = "we\"ird\x01 name@example.com";
	in.dkim_checked = in.dmarc_checked = false;
	assert_true(authres_build(&in, out, sizeof out));
	assert_string_equal(out, "Authentication-Results: mx.example.org;\r\n"
				 "\tspf=softfail smtp.mailfrom=\"we\\\"ird? name@example.com\"\r\n");
	/* nothing checked */
	in.spf_checked = false;
	assert_true(authres_build(&in, out, sizeof out));
	assert_string_equal(out, "Authentication-Results: mx.example.org; none\r\n");
	/* too small: false, never a cut field */
	assert_false(authres_build(&in, out, 20));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_claims),
		cmocka_unit_test(test_authserv_id_bounds),
		cmocka_unit_test(test_build),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

/* test_spf_record: SPF record syntax (RFC 7208 §4.6, §5, §6, §12) and
 * macro expansion with the examples of §7.4. */
#include <arpa/inet.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include <cmocka.h>

#include "mailauth/spf_record.h"

static bool parses(const char *text)
{
	struct spf_record r;
	char why[128];
	if (!spf_record_parse(text, strlen(text), &r, why, sizeof why))
		return false;
	spf_record_free(&r);
	return true;
}

static void test_is_spf(void **state)
{
	(void)state;
	assert_true(spf_record_is_spf("v=spf1", 6));
	assert_true(spf_record_is_spf("V=SPF1 -all", 11));
	assert_false(spf_record_is_spf("v=spf10 -all", 12));
	assert_false(spf_record_is_spf("v=spf", 5));
	assert_false(spf_record_is_spf("spf1 v=spf1", 11));
}

static void test_terms(void **state)
{
	(void)state;
	struct spf_record r;
	char why[128];
	const char *text = "v=spf1 +a -mx:mail.example.com/24//64 ~ip4:192.0.2.0/24 "
			   "?ip6:2001:db8::/32 include:_spf.example.net exists:%{i}.x.example "
			   "ptr redirect=other.example exp=explain.example -all";
	assert_true(spf_record_parse(text, strlen(text), &r, why, sizeof why));
	assert_int_equal(r.nterms, 8);
	assert_int_equal(r.terms[0].mech, SPF_MECH_A);
	assert_int_equal(r.terms[0].qualifier, SPF_PASS);
	assert_null(r.terms[0].domain_spec);
	assert_int_equal(r.terms[1].mech, SPF_MECH_MX);
	assert_int_equal(r.terms[1].qualifier, SPF_FAIL);
	assert_string_equal(r.terms[1].domain_spec, "mail.example.com");
	assert_int_equal(r.terms[1].cidr4, 24);
	assert_int_equal(r.terms[1].cidr6, 64);
	assert_int_equal(r.terms[2].qualifier, SPF_SOFTFAIL);
	assert_int_equal(r.terms[2].cidr4, 24);
	assert_int_equal(r.terms[2].ip[0], 192);
	assert_int_equal(r.terms[3].qualifier, SPF_NEUTRAL);
	assert_int_equal(r.terms[3].cidr6, 32);
	assert_string_equal(r.terms[4].domain_spec, "_spf.example.net");
	assert_int_equal(r.terms[5].mech, SPF_MECH_EXISTS);
	assert_int_equal(r.terms[6].mech, SPF_MECH_PTR);
	assert_int_equal(r.terms[7].mech, SPF_MECH_ALL);
	assert_string_equal(r.redirect, "other.example");
	assert_string_equal(r.exp, "explain.example");
	spf_record_free(&r);
}

static void test_syntax_errors(void **state)
{
	(void)state;
	assert_true(parses("v=spf1"));
	assert_true(parses("v=spf1  -all  "));
	assert_true(parses("v=spf1 moo.cow=far_out -all")); /* unknown modifier */
	assert_false(parses("v=spf1 -all:foobar"));        /* all takes nothing */
	assert_false(parses("v=spf1 foo -all"));           /* unknown mechanism */
	assert_false(parses("v=spf1 ip4:1.2.3.4/33"));
	assert_false(parses("v=spf1 ip4:1.2.3.4/032"));    /* leading zero */
	assert_false(parses("v=spf1 ip6:::1/129"));
	assert_false(parses("v=spf1 ip4:1.2.3"));
	assert_false(parses("v=spf1 include"));
	assert_false(parses("v=spf1 include:foo"));        /* no "." toplabel */
	assert_false(parses("v=spf1 a:example.123"));      /* numeric toplabel */
	assert_false(parses("v=spf1 redirect=a.example redirect=b.example"));
	assert_false(parses("v=spf1 exp=a.example exp=b.example"));
	assert_false(parses("v=spf1 exists:%{x}.example.com")); /* bad letter */
	assert_false(parses("v=spf1 exists:%{d0}.example.com")); /* zero parts */
	assert_false(parses("v=spf1 a:%{c}.example.com"));  /* c only in exp */
	assert_false(parses("v=spf1 a:foo%example.com"));
	assert_false(parses("v=spf1 -all\x01"));
	char nul[] = "v=spf1 -all";
	nul[7] = '\0';
	struct spf_record r;
	char why[64];
	assert_false(spf_record_parse(nul, sizeof nul - 1, &r, why, sizeof why));
}

static void test_too_many_terms(void **state)
{
	(void)state;
	char text[SPF_RECORD_MAX];
	size_t n = 0;
	n += (size_t)snprintf(text + n, sizeof text - n, "v=spf1");
	for (int i = 0; i < SPF_TERMS_MAX + 1; i++)
		n += (size_t)snprintf(text + n, sizeof text - n, " a");
	assert_false(parses(text));
	char big[SPF_RECORD_MAX + 8];
	memset(big, 'a', sizeof big);
	memcpy(big, "v=spf1 ", 7);
	struct spf_record r;
	char why[64];
	assert_false(spf_record_parse(big, sizeof big, &r, why, sizeof why));
}

/* RFC 7208 §7.4: strong-bad@email.example.com from 192.0.2.3 */
static struct spf_macro_vars example_vars(uint8_t *ip, int family)
{
	return (struct spf_macro_vars){
		.sender = "strong-bad@email.example.com", .local = "strong-bad",
		.sender_domain = "email.example.com", .domain = "email.example.com", .ip = ip,
		.family = family, .helo = "mx.example.org", .ptr = "mx.example.org",
		.receiver = "mx.posthorn.test", .now = 1000,
	};
}

static void expands(const struct spf_macro_vars *v, const char *spec, const char *want)
{
	char out[SPF_EXPAND_MAX];
	assert_int_equal(spf_macro_expand(spec, strlen(spec), v, true, out, sizeof out),
			 SPF_MACRO_OK);
	assert_string_equal(out, want);
}

static void test_macros_rfc_examples(void **state)
{
	(void)state;
	uint8_t ip4[16] = {192, 0, 2, 3};
	struct spf_macro_vars v = example_vars(ip4, AF_INET);
	expands(&v, "%{s}", "strong-bad@email.example.com");
	expands(&v, "%{o}", "email.example.com");
	expands(&v, "%{d}", "email.example.com");
	expands(&v, "%{d4}", "email.example.com");
	expands(&v, "%{d3}", "email.example.com");
	expands(&v, "%{d2}", "example.com");
	expands(&v, "%{d1}", "com");
	expands(&v, "%{dr}", "com.example.email");
	expands(&v, "%{d2r}", "example.email");
	expands(&v, "%{l}", "strong-bad");
	expands(&v, "%{l-}", "strong.bad");
	expands(&v, "%{lr}", "strong-bad");
	expands(&v, "%{lr-}", "bad.strong");
	expands(&v, "%{l1r-}", "strong");
	expands(&v, "%{ir}.%{v}._spf.%{d2}", "3.2.0.192.in-addr._spf.example.com");
	expands(&v, "%{lr-}.lp._spf.%{d2}", "bad.strong.lp._spf.example.com");
	expands(&v, "%{lr-}.lp.%{ir}.%{v}._spf.%{d2}",
		"bad.strong.lp.3.2.0.192.in-addr._spf.example.com");
	expands(&v, "%{ir}.%{v}.%{l1r-}.lp._spf.%{d2}",
		"3.2.0.192.in-addr.strong.lp._spf.example.com");
	expands(&v, "%{d2}.trusted-domains.example.net", "example.com.trusted-domains.example.net");
	expands(&v, "%%%_%-", "% %20");
	expands(&v, "%{S}", "strong-bad%40email.example.com");
	uint8_t ip6[16];
	assert_int_equal(inet_pton(AF_INET6, "2001:db8::cb01", ip6), 1);
	v = example_vars(ip6, AF_INET6);
	expands(&v, "%{ir}.%{v}._spf.%{d2}",
		"1.0.b.c.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6._spf.example.com");
	expands(&v, "%{c}", "2001:db8::cb01");
}

static void test_macro_needs_ptr_and_length(void **state)
{
	(void)state;
	uint8_t ip4[16] = {192, 0, 2, 3};
	struct spf_macro_vars v = example_vars(ip4, AF_INET);
	v.ptr = NULL;
	char out[SPF_EXPAND_MAX];
	assert_int_equal(spf_macro_expand("%{p}.x", 6, &v, false, out, sizeof out),
			 SPF_MACRO_NEEDS_PTR);
	assert_int_equal(spf_macro_expand("%{p", 3, &v, false, out, sizeof out), SPF_MACRO_SYNTAX);
	assert_int_equal(spf_macro_expand("abc", 3, &v, false, out, 3), SPF_MACRO_TOO_LONG);
	/* §7.3: an expanded name over 253 characters loses labels at the left */
	char longlocal[200];
	memset(longlocal, 'x', sizeof longlocal - 1);
	longlocal[sizeof longlocal - 1] = '\0';
	v.local = longlocal;
	char name[SPF_NAME_MAX + 1];
	assert_int_equal(spf_expand_domain("%{l}.%{l}.example.com", &v, name), SPF_MACRO_OK);
	assert_true(strlen(name) <= SPF_NAME_MAX);
	assert_string_equal(name + strlen(name) - 12, ".example.com");
}

static void test_domain_valid(void **state)
{
	(void)state;
	assert_true(spf_domain_valid("example.com"));
	assert_false(spf_domain_valid("localhost"));
	assert_false(spf_domain_valid("a..example.com"));
	assert_false(spf_domain_valid(".example.com"));
	char label[80];
	memset(label, 'a', 64);
	strcpy(label + 64, ".example.com");
	assert_false(spf_domain_valid(label));
	assert_true(spf_domain_labels_ok("OEMCOMPUTER"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_is_spf),
		cmocka_unit_test(test_terms),
		cmocka_unit_test(test_syntax_errors),
		cmocka_unit_test(test_too_many_terms),
		cmocka_unit_test(test_macros_rfc_examples),
		cmocka_unit_test(test_macro_needs_ptr_and_length),
		cmocka_unit_test(test_domain_valid),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

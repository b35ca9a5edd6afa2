/* Unit tests for dirfilter: RFC 4515 §3 escaping of every byte that could
 * change a filter's structure, template expansion of %a %u %d %%, the
 * bound on the result, and Active Directory's address values. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "auth/dirfilter.h"
#include "lib/util.h"

static const char *expand(const char *tmpl, const char *address, size_t len, char *out,
			  size_t outsz)
{
	return dirfilter_expand(tmpl, address, len, out, outsz) ? out : NULL;
}

static void test_escape_specials(void **state)
{
	(void)state;
	char buf[128];
	struct strbuf sb;
	strbuf_init(&sb, buf, sizeof buf);
	static const char in[] = "a*b(c)d\\e\0f";
	assert_true(dirfilter_escape(&sb, in, sizeof in - 1));
	assert_string_equal(buf, "a\\2ab\\28c\\29d\\5ce\\00f");
}

static void test_escape_non_ascii_and_controls(void **state)
{
	(void)state;
	char buf[128];
	struct strbuf sb;
	strbuf_init(&sb, buf, sizeof buf);
	assert_true(dirfilter_escape(&sb, "\xc3\xa9\r\n\x7f", 5));
	assert_string_equal(buf, "\\c3\\a9\\0d\\0a\\7f");
}

static void test_escape_does_not_fit(void **state)
{
	(void)state;
	char buf[5];
	struct strbuf sb;
	strbuf_init(&sb, buf, sizeof buf);
	assert_false(dirfilter_escape(&sb, "ab*", 3)); /* "ab\2a" needs 5 + NUL */
	assert_false(strbuf_ok(&sb));
}

static void test_expand_parts(void **state)
{
	(void)state;
	char out[256];
	const char *a = "Alice@Example.Test";
	assert_string_equal(expand("(|(mail=%a)(uid=%u)(dc=%d)(x=100%%))", a, strlen(a), out,
				   sizeof out),
			    "(|(mail=Alice@Example.Test)(uid=Alice)(dc=Example.Test)(x=100%))");
}

static void test_expand_local_part_with_at_sign(void **state)
{
	(void)state;
	char out[256];
	const char *a = "\"a@b\"@example.test"; /* the domain starts after the last '@' */
	assert_string_equal(expand("(u=%u)(d=%d)", a, strlen(a), out, sizeof out),
			    "(u=\"a@b\")(d=example.test)");
	assert_string_equal(expand("(u=%u)(d=%d)", "alice", 5, out, sizeof out),
			    "(u=alice)(d=)");
}

/* Injection attempts stay one assertion value each. */
static void test_expand_injection_matches_only_itself(void **state)
{
	(void)state;
	char out[256];
	const char *a = "*)(objectClass=*";
	assert_string_equal(expand("(mail=%a)", a, strlen(a), out, sizeof out),
			    "(mail=\\2a\\29\\28objectClass=\\2a)");
	static const char nul[] = "alice@example.test\0*";
	assert_string_equal(expand("(mail=%a)", nul, sizeof nul - 1, out, sizeof out),
			    "(mail=alice@example.test\\00\\2a)");
	assert_string_equal(expand("(mail=%a)", "\\2a", 3, out, sizeof out), "(mail=\\5c2a)");
}

static void test_expand_refuses_unknown_sequence_and_overflow(void **state)
{
	(void)state;
	char out[32];
	assert_null(expand("(mail=%x)", "a@b", 3, out, sizeof out));
	assert_null(expand("(mail=%a)", "a@b", 3, out, 9)); /* "(mail=a@b)" is 11 */
	assert_non_null(expand("(mail=%a)", "a@b", 3, out, 12));
	assert_string_equal(out, "(mail=a@b)");
	char big[DIRFILTER_MAX];
	memset(big, '*', sizeof big);
	assert_false(dirfilter_expand("(m=%a)", big, sizeof big / 3, out, sizeof out));
}

static void test_address_values(void **state)
{
	(void)state;
	char out[DIRFILTER_VALUE_MAX + 1];
	assert_true(dirfilter_address_value("SMTP:Alice@Example.Test", 23, out, sizeof out));
	assert_string_equal(out, "alice@example.test");
	assert_true(dirfilter_address_value("smtp:al@example.test", 20, out, sizeof out));
	assert_string_equal(out, "al@example.test");
	assert_true(dirfilter_address_value("bob@example.test", 16, out, sizeof out));
	assert_string_equal(out, "bob@example.test");
	assert_false(dirfilter_address_value("x500:/o=Org/cn=alice", 20, out, sizeof out));
	assert_false(dirfilter_address_value("sip:alice@example.test", 22, out, sizeof out));
	assert_false(dirfilter_address_value("smtp:", 5, out, sizeof out));
	assert_false(dirfilter_address_value("no-at-sign", 10, out, sizeof out));
	assert_false(dirfilter_address_value("a/b@example.test", 16, out, sizeof out));
	assert_false(dirfilter_address_value("a\0b@example.test", 16, out, sizeof out));
	assert_false(dirfilter_address_value("al@example.test", 15, out, 10));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_escape_specials),
		cmocka_unit_test(test_escape_non_ascii_and_controls),
		cmocka_unit_test(test_escape_does_not_fit),
		cmocka_unit_test(test_expand_parts),
		cmocka_unit_test(test_expand_local_part_with_at_sign),
		cmocka_unit_test(test_expand_injection_matches_only_itself),
		cmocka_unit_test(test_expand_refuses_unknown_sequence_and_overflow),
		cmocka_unit_test(test_address_values),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

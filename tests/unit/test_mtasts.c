/* Unit tests for mtasts.c: the "_mta-sts" TXT record (RFC 8461 §3.1), the
 * policy file (§3.2, with its example) and mx patterns (§4.1). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "net/mtasts.h"

static bool id_of(const char *txt, char *id)
{
	return mtasts_record_id(txt, strlen(txt), id);
}

static void test_record(void **state)
{
	(void)state;
	char id[MTASTS_ID_MAX + 1];
	assert_true(id_of("v=STSv1; id=20160831085700Z;", id));
	assert_string_equal(id, "20160831085700Z");
	assert_true(id_of("v = STSv1 ;id = abc ; ext=1", id));
	assert_string_equal(id, "abc");
	assert_true(id_of("v=STSv1; id=abc", id));
	/* no id, a bad id, two ids, not first, another version */
	assert_false(id_of("v=STSv1;", id));
	assert_false(id_of("v=STSv1; id=a-b;", id));
	assert_false(id_of("v=STSv1; id=123456789012345678901234567890123;", id));
	assert_false(id_of("v=STSv1; id=a; id=b;", id));
	assert_false(id_of("id=a; v=STSv1;", id));
	assert_false(id_of("v=STSv2; id=a;", id));
	assert_false(id_of("v=STSv1 id=a", id));
	assert_true(mtasts_record_is_sts("v=STSv1; junk", 13));
	assert_false(mtasts_record_is_sts("v=spf1 -all", 11));
}

static const char RFC_EXAMPLE[] = "version: STSv1\r\n"
				  "mode: enforce\r\n"
				  "mx: mail.example.com\r\n"
				  "mx: *.example.net\r\n"
				  "mx: backupmx.example.com\r\n"
				  "max_age: 604800\r\n";

static void test_policy_example(void **state)
{
	(void)state;
	struct mtasts_policy p;
	char err[128];
	assert_true(mtasts_policy_parse(RFC_EXAMPLE, strlen(RFC_EXAMPLE), &p, err, sizeof err));
	assert_int_equal(p.mode, MTASTS_ENFORCE);
	assert_int_equal(p.max_age, 604800);
	assert_int_equal(p.nmx, 3);
	assert_true(mtasts_mx_matches(&p, "mail.example.com"));
	assert_true(mtasts_mx_matches(&p, "MAIL.Example.COM."));
	assert_true(mtasts_mx_matches(&p, "mx1.example.net"));
	/* the wildcard covers one label, not two, not none */
	assert_false(mtasts_mx_matches(&p, "a.b.example.net"));
	assert_false(mtasts_mx_matches(&p, "example.net"));
	assert_false(mtasts_mx_matches(&p, "mail.example.com.evil.test"));
	struct mtasts_policy copy;
	mtasts_policy_copy(&copy, &p);
	mtasts_policy_clear(&p);
	assert_true(mtasts_mx_matches(&copy, "backupmx.example.com"));
	mtasts_policy_clear(&copy);
}

static bool parses(const char *text, const char *want_err)
{
	struct mtasts_policy p;
	char err[128] = "";
	bool ok = mtasts_policy_parse(text, strlen(text), &p, err, sizeof err);
	if (ok)
		mtasts_policy_clear(&p);
	else if (want_err)
		assert_string_equal(err, want_err);
	return ok;
}

static void test_policy_errors(void **state)
{
	(void)state;
	/* LF line ends, unknown keys, a year at most */
	assert_true(parses("version: STSv1\nmode: testing\nmx: a.test\nmax_age: 9999999999\nx: y\n",
			   NULL));
	assert_true(parses("version: STSv1\nmode: none\nmax_age: 0\n", NULL));
	assert_false(parses("version: STSv2\nmode: enforce\nmx: a.test\nmax_age: 1\n",
			    "version is not STSv1"));
	assert_false(parses("version: STSv1\nmode: strict\nmx: a.test\nmax_age: 1\n",
			    "mode is not enforce, testing or none"));
	assert_false(parses("version: STSv1\nmode: enforce\nmax_age: 1\n", "no mx line"));
	assert_false(parses("version: STSv1\nmode: enforce\nmx: a.test\n",
			    "version, mode or max_age missing"));
	assert_false(parses("version: STSv1\nmode: enforce\nmx: a.test\nmax_age: -1\n",
			    "bad max_age"));
	assert_false(parses("version: STSv1\nmode: enforce\nmx: *.*.test\nmax_age: 1\n",
			    "bad mx pattern"));
	assert_false(parses("<html>not a policy</html>\n", "a line without \"key: value\""));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_record),
		cmocka_unit_test(test_policy_example),
		cmocka_unit_test(test_policy_errors),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

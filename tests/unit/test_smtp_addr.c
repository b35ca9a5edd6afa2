/* Unit tests for smtp_addr: RFC 5321 §4.1.2 paths, §4.1.3 literals,
 * §4.5.3.1 limits, ESMTP parameters and RFC 6531 UTF-8. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "proto/smtp/smtp_addr.h"

/* Parse arg as MAIL (is_rcpt false) or RCPT, return the result; on error
 * also check that nothing was left behind. */
static enum smtp_addr_result parse(const char *arg, bool is_rcpt, struct smtp_addr *a,
				   struct smtp_param *p, size_t *np)
{
	enum smtp_addr_result r = smtp_addr_parse_arg(arg, is_rcpt, a, p, np);
	if (r != SMTP_ADDR_OK) {
		assert_null(a->local);
		assert_null(a->local_unquoted);
		assert_null(a->domain);
		assert_null(a->text);
		assert_false(a->null);
		assert_false(a->utf8);
		assert_int_equal(*np, 0);
	}
	return r;
}

static enum smtp_addr_result mail(const char *arg)
{
	struct smtp_addr a;
	struct smtp_param p[SMTP_PARAMS_MAX];
	size_t np = 99;
	enum smtp_addr_result r = parse(arg, false, &a, p, &np);
	smtp_addr_clear(&a);
	smtp_params_clear(p, np);
	return r;
}

static enum smtp_addr_result rcpt(const char *arg)
{
	struct smtp_addr a;
	struct smtp_param p[SMTP_PARAMS_MAX];
	size_t np = 99;
	enum smtp_addr_result r = parse(arg, true, &a, p, &np);
	smtp_addr_clear(&a);
	smtp_params_clear(p, np);
	return r;
}

static enum smtp_addr_result bare(const char *s)
{
	struct smtp_addr a;
	enum smtp_addr_result r = smtp_addr_parse(s, &a);
	if (r != SMTP_ADDR_OK)
		assert_null(a.text);
	smtp_addr_clear(&a);
	return r;
}

/* "x" repeated n times, then suffix; caller frees. */
static char *rep(const char *prefix, char c, size_t n, const char *suffix)
{
	size_t lp = strlen(prefix), ls = strlen(suffix);
	char *s = malloc(lp + n + ls + 1);
	assert_non_null(s);
	memcpy(s, prefix, lp);
	memset(s + lp, c, n);
	memcpy(s + lp + n, suffix, ls + 1);
	return s;
}

static void test_simple(void **state)
{
	struct smtp_addr a;
	struct smtp_param p[SMTP_PARAMS_MAX];
	size_t np;
	assert_int_equal(parse("FROM:<alice@example.test>", false, &a, p, &np), SMTP_ADDR_OK);
	assert_false(a.null);
	assert_string_equal(a.local, "alice");
	assert_string_equal(a.local_unquoted, "alice");
	assert_string_equal(a.domain, "example.test");
	assert_string_equal(a.text, "alice@example.test");
	assert_false(a.literal);
	assert_false(a.route_stripped);
	assert_false(a.utf8);
	assert_int_equal(np, 0);
	smtp_addr_clear(&a);
	assert_null(a.text);

	assert_int_equal(parse("TO:<Bob.Smith+tag@Mail.Example.TEST>", true, &a, p, &np),
			 SMTP_ADDR_OK);
	assert_string_equal(a.local, "Bob.Smith+tag");
	assert_string_equal(a.domain, "Mail.Example.TEST");
	assert_string_equal(a.text, "Bob.Smith+tag@Mail.Example.TEST");
	smtp_addr_clear(&a);
}

static void test_null_sender(void **state)
{
	struct smtp_addr a;
	struct smtp_param p[SMTP_PARAMS_MAX];
	size_t np;
	assert_int_equal(parse("FROM:<>", false, &a, p, &np), SMTP_ADDR_OK);
	assert_true(a.null);
	assert_null(a.local);
	assert_null(a.domain);
	assert_string_equal(a.text, "");
	smtp_addr_clear(&a);

	assert_int_equal(parse("FROM:<> BODY=8BITMIME", false, &a, p, &np), SMTP_ADDR_OK);
	assert_true(a.null);
	assert_int_equal(np, 1);
	smtp_addr_clear(&a);
	smtp_params_clear(p, np);

	assert_int_equal(rcpt("TO:<>"), SMTP_ADDR_NULL_NOT_ALLOWED);
	assert_int_equal(rcpt("TO:<> NOTIFY=NEVER"), SMTP_ADDR_NULL_NOT_ALLOWED);
	assert_int_equal(bare("<>"), SMTP_ADDR_NULL_NOT_ALLOWED);
	assert_int_equal(mail("FROM:<@a.test:>"), SMTP_ADDR_BAD_SYNTAX);
}

static void test_postmaster(void **state)
{
	struct smtp_addr a;
	struct smtp_param p[SMTP_PARAMS_MAX];
	size_t np;
	assert_int_equal(parse("TO:<Postmaster>", true, &a, p, &np), SMTP_ADDR_OK);
	assert_string_equal(a.local, "Postmaster");
	assert_string_equal(a.local_unquoted, "Postmaster");
	assert_null(a.domain);
	assert_string_equal(a.text, "Postmaster");
	smtp_addr_clear(&a);

	assert_int_equal(rcpt("TO:<postmaster>"), SMTP_ADDR_OK);
	assert_int_equal(rcpt("TO:<POSTMASTER>"), SMTP_ADDR_OK);
	assert_int_equal(rcpt("TO:<postmaster@example.test>"), SMTP_ADDR_OK);
	/* only at RCPT, and only the bare word */
	assert_int_equal(mail("FROM:<postmaster>"), SMTP_ADDR_BAD_SYNTAX);
	assert_int_equal(rcpt("TO:<\"postmaster\">"), SMTP_ADDR_BAD_SYNTAX);
	assert_int_equal(rcpt("TO:<@a.test:postmaster>"), SMTP_ADDR_BAD_SYNTAX);
	assert_int_equal(rcpt("TO:<postmaster2>"), SMTP_ADDR_BAD_SYNTAX);
	assert_int_equal(rcpt("TO:<user>"), SMTP_ADDR_BAD_SYNTAX);
	assert_int_equal(bare("postmaster"), SMTP_ADDR_BAD_SYNTAX);
}

static void test_quoted_local(void **state)
{
	struct smtp_addr a;
	struct smtp_param p[SMTP_PARAMS_MAX];
	size_t np;
	assert_int_equal(parse("FROM:<\"john doe\"@example.test>", false, &a, p, &np), SMTP_ADDR_OK);
	assert_string_equal(a.local, "\"john doe\"");
	assert_string_equal(a.local_unquoted, "john doe");
	assert_string_equal(a.text, "\"john doe\"@example.test");
	smtp_addr_clear(&a);

	assert_int_equal(parse("FROM:<\"john \\\"doe\\\"\"@example.test>", false, &a, p, &np),
			 SMTP_ADDR_OK);
	assert_string_equal(a.local, "\"john \\\"doe\\\"\"");
	assert_string_equal(a.local_unquoted, "john \"doe\"");
	smtp_addr_clear(&a);

	assert_int_equal(parse("FROM:<\"a\\\\b\\c\"@example.test>", false, &a, p, &np), SMTP_ADDR_OK);
	assert_string_equal(a.local_unquoted, "a\\bc");
	smtp_addr_clear(&a);

	assert_int_equal(mail("FROM:<\"unterminated@x>"), SMTP_ADDR_BAD_SYNTAX);
	assert_int_equal(mail("FROM:<\"a\"b\"@x>"), SMTP_ADDR_BAD_SYNTAX);
	assert_int_equal(mail("FROM:<a\"b@x>"), SMTP_ADDR_BAD_SYNTAX);
	assert_int_equal(mail("FROM:<\"ab\\\"@x>"), SMTP_ADDR_BAD_SYNTAX);
	assert_int_equal(mail("FROM:<\"\"@x>"), SMTP_ADDR_BAD_SYNTAX);
	assert_int_equal(mail("FROM:<\"a\".b@x>"), SMTP_ADDR_BAD_SYNTAX);
}

static void test_dot_string(void **state)
{
	assert_int_equal(mail("FROM:<a.b.c@x.test>"), SMTP_ADDR_OK);
	assert_int_equal(mail("FROM:<!#$%&'*+-/=?^_`{|}~@x.test>"), SMTP_ADDR_OK);
	assert_int_equal(mail("FROM:<.a@x.test>"), SMTP_ADDR_BAD_SYNTAX);
	assert_int_equal(mail("FROM:<a.@x.test>"), SMTP_ADDR_BAD_SYNTAX);
	assert_int_equal(mail("FROM:<a..b@x.test>"), SMTP_ADDR_BAD_SYNTAX);
	assert_int_equal(mail("FROM:<a b@x.test>"), SMTP_ADDR_BAD_SYNTAX);
	assert_int_equal(mail("FROM:<a,b@x.test>"), SMTP_ADDR_BAD_SYNTAX);
	assert_int_equal(mail("FROM:<a(b)@x.test>"), SMTP_ADDR_BAD_SYNTAX);
	assert_int_equal(mail("FROM:<a\\b@x.test>"), SMTP_ADDR_BAD_SYNTAX);
}

static void test_domain(void **state)
{
	struct smtp_addr a;
	assert_int_equal(smtp_addr_parse("u@example.test.", &a), SMTP_ADDR_OK);
	assert_string_equal(a.domain, "example.test.");
	assert_string_equal(a.text, "u@example.test.");
	smtp_addr_clear(&a);

	assert_int_equal(mail("FROM:<u@a-b.c0.test>"), SMTP_ADDR_OK);
	assert_int_equal(mail("FROM:<u@localhost>"), SMTP_ADDR_OK);
	assert_int_equal(mail("FROM:<u@123.test>"), SMTP_ADDR_OK);
	assert_int_equal(mail("FROM:<u@a..b>"), SMTP_ADDR_BAD_SYNTAX);
	assert_int_equal(mail("FROM:<u@.a.b>"), SMTP_ADDR_BAD_SYNTAX);
	assert_int_equal(mail("FROM:<u@a.b..>"), SMTP_ADDR_BAD_SYNTAX);
	assert_int_equal(mail("FROM:<u@.>"), SMTP_ADDR_BAD_SYNTAX);
	assert_int_equal(mail("FROM:<u@-a.test>"), SMTP_ADDR_BAD_SYNTAX);
	assert_int_equal(mail("FROM:<u@a-.test>"), SMTP_ADDR_BAD_SYNTAX);
	assert_int_equal(mail("FROM:<u@a_b.test>"), SMTP_ADDR_BAD_SYNTAX);
	assert_int_equal(mail("FROM:<u@a b.test>"), SMTP_ADDR_BAD_SYNTAX);
	assert_int_equal(mail("FROM:<user@>"), SMTP_ADDR_BAD_SYNTAX);
	assert_int_equal(mail("FROM:<@>"), SMTP_ADDR_BAD_SYNTAX);
	assert_int_equal(mail("FROM:<@domain.test>"), SMTP_ADDR_BAD_SYNTAX);
	assert_int_equal(mail("FROM:<user>"), SMTP_ADDR_BAD_SYNTAX);
	assert_int_equal(mail("FROM:<a@b@c>"), SMTP_ADDR_BAD_SYNTAX);
	assert_int_equal(mail("FROM:<@a@b>"), SMTP_ADDR_BAD_SYNTAX);
}

static void test_ipv4_literal(void **state)
{
	struct smtp_addr a;
	struct smtp_param p[SMTP_PARAMS_MAX];
	size_t np;
	assert_int_equal(parse("TO:<root@[192.0.2.1]>", true, &a, p, &np), SMTP_ADDR_OK);
	assert_true(a.literal);
	assert_string_equal(a.domain, "[192.0.2.1]");
	assert_string_equal(a.text, "root@[192.0.2.1]");
	smtp_addr_clear(&a);

	assert_int_equal(mail("FROM:<u@[300.1.1.1]>"), SMTP_ADDR_BAD_SYNTAX);
	assert_int_equal(mail("FROM:<u@[1.2.3]>"), SMTP_ADDR_BAD_SYNTAX);
	assert_int_equal(mail("FROM:<u@[1.2.3.4.5]>"), SMTP_ADDR_BAD_SYNTAX);
	assert_int_equal(mail("FROM:<u@[]>"), SMTP_ADDR_BAD_SYNTAX);
	assert_int_equal(mail("FROM:<u@[192.0.2.1>"), SMTP_ADDR_BAD_SYNTAX);
	assert_int_equal(mail("FROM:<u@[192.0.2.1]x>"), SMTP_ADDR_BAD_SYNTAX);
	assert_int_equal(mail("FROM:<u@[192.0.2.1].test>"), SMTP_ADDR_BAD_SYNTAX);
	assert_int_equal(mail("FROM:<u@[ 192.0.2.1]>"), SMTP_ADDR_BAD_SYNTAX);
	assert_int_equal(mail("FROM:<u@192.0.2.1]>"), SMTP_ADDR_BAD_SYNTAX);
}

static void test_ipv6_literal(void **state)
{
	struct smtp_addr a;
	struct smtp_param p[SMTP_PARAMS_MAX];
	size_t np;
	assert_int_equal(parse("TO:<root@[IPv6:2001:db8::1]>", true, &a, p, &np), SMTP_ADDR_OK);
	assert_true(a.literal);
	assert_string_equal(a.domain, "[IPv6:2001:db8::1]");
	smtp_addr_clear(&a);

	assert_int_equal(mail("FROM:<u@[IPv6:::1]>"), SMTP_ADDR_OK);
	assert_int_equal(mail("FROM:<u@[ipv6:2001:db8:0:0:0:0:0:1]>"), SMTP_ADDR_OK);
	assert_int_equal(mail("FROM:<u@[IPv6:::ffff:192.0.2.1]>"), SMTP_ADDR_OK);
	assert_int_equal(mail("FROM:<u@[IPv6:zz]>"), SMTP_ADDR_BAD_SYNTAX);
	assert_int_equal(mail("FROM:<u@[IPv6:]>"), SMTP_ADDR_BAD_SYNTAX);
	assert_int_equal(mail("FROM:<u@[IPv6:1:2:3:4:5:6:7:8:9]>"), SMTP_ADDR_BAD_SYNTAX);
	assert_int_equal(mail("FROM:<u@[2001:db8::1]>"), SMTP_ADDR_BAD_SYNTAX);
	assert_int_equal(mail("FROM:<u@[IPv6:fe80::1%eth0]>"), SMTP_ADDR_BAD_SYNTAX);
	/* General-address-literal: refused */
	assert_int_equal(mail("FROM:<u@[x-tag:content]>"), SMTP_ADDR_BAD_SYNTAX);
	/* absurdly long literal content */
	char *s = rep("FROM:<u@[IPv6:", '1', 200, "]>");
	assert_int_equal(mail(s), SMTP_ADDR_BAD_SYNTAX);
	free(s);
}

static void test_source_route(void **state)
{
	struct smtp_addr a;
	struct smtp_param p[SMTP_PARAMS_MAX];
	size_t np;
	assert_int_equal(parse("TO:<@hosta.test,@jkl.test:userc@d.bar.test>", true, &a, p, &np),
			 SMTP_ADDR_OK);
	assert_true(a.route_stripped);
	assert_string_equal(a.local, "userc");
	assert_string_equal(a.domain, "d.bar.test");
	assert_string_equal(a.text, "userc@d.bar.test");
	smtp_addr_clear(&a);

	assert_int_equal(parse("FROM:<@a.test:u@b.test>", false, &a, p, &np), SMTP_ADDR_OK);
	assert_true(a.route_stripped);
	assert_string_equal(a.text, "u@b.test");
	smtp_addr_clear(&a);

	/* the route's domains are still checked */
	assert_int_equal(mail("FROM:<@a..test:u@b.test>"), SMTP_ADDR_BAD_SYNTAX);
	assert_int_equal(mail("FROM:<@:u@b.test>"), SMTP_ADDR_BAD_SYNTAX);
	assert_int_equal(mail("FROM:<@a.test,:u@b.test>"), SMTP_ADDR_BAD_SYNTAX);
	assert_int_equal(mail("FROM:<@a.test,b.test:u@b.test>"), SMTP_ADDR_BAD_SYNTAX);
	assert_int_equal(mail("FROM:<@a.test u@b.test>"), SMTP_ADDR_BAD_SYNTAX);
	assert_int_equal(mail("FROM:<@a.test:>"), SMTP_ADDR_BAD_SYNTAX);
	assert_int_equal(mail("FROM:<@a_b.test:u@b.test>"), SMTP_ADDR_BAD_SYNTAX);
}

static void test_params(void **state)
{
	struct smtp_addr a;
	struct smtp_param p[SMTP_PARAMS_MAX];
	size_t np;
	assert_int_equal(parse("FROM:<a@b.test> SIZE=1000 BODY=8BITMIME SMTPUTF8", false, &a, p, &np),
			 SMTP_ADDR_OK);
	assert_int_equal(np, 3);
	assert_string_equal(p[0].keyword, "SIZE");
	assert_string_equal(p[0].value, "1000");
	assert_string_equal(p[1].keyword, "BODY");
	assert_string_equal(p[1].value, "8BITMIME");
	assert_string_equal(p[2].keyword, "SMTPUTF8");
	assert_null(p[2].value);
	smtp_addr_clear(&a);
	smtp_params_clear(p, np);
	assert_null(p[0].keyword);

	/* lower-case keyword is upper-cased, the value kept; several spaces */
	assert_int_equal(parse("FROM:<a@b.test>  size=10   x-Foo-1=Bar+2B  ", false, &a, p, &np),
			 SMTP_ADDR_OK);
	assert_int_equal(np, 2);
	assert_string_equal(p[0].keyword, "SIZE");
	assert_string_equal(p[1].keyword, "X-FOO-1");
	assert_string_equal(p[1].value, "Bar+2B");
	smtp_addr_clear(&a);
	smtp_params_clear(p, np);

	assert_int_equal(rcpt("TO:<a@b.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a@b.test"),
			 SMTP_ADDR_OK);
	assert_int_equal(mail("FROM:<a@b.test> SIZE=1 size=2"), SMTP_ADDR_BAD_PARAM);
	assert_int_equal(mail("FROM:<a@b.test> SIZE="), SMTP_ADDR_BAD_PARAM);
	assert_int_equal(mail("FROM:<a@b.test> =1"), SMTP_ADDR_BAD_PARAM);
	assert_int_equal(mail("FROM:<a@b.test> -X=1"), SMTP_ADDR_BAD_PARAM);
	assert_int_equal(mail("FROM:<a@b.test> A_B=1"), SMTP_ADDR_BAD_PARAM);
	assert_int_equal(mail("FROM:<a@b.test> A=b=c"), SMTP_ADDR_BAD_PARAM);
	assert_int_equal(mail("FROM:<a@b.test> A=\xc3\xa9"), SMTP_ADDR_BAD_PARAM);
	assert_int_equal(mail("FROM:<a@b.test>SIZE=1"), SMTP_ADDR_BAD_SYNTAX);
	assert_int_equal(mail("FROM:<a@b.test> A=1\tB=2"), SMTP_ADDR_BAD_SYNTAX);
}

static void test_params_count(void **state)
{
	char buf[1024];
	size_t o = (size_t)snprintf(buf, sizeof(buf), "FROM:<a@b.test>");
	for (int i = 0; i < SMTP_PARAMS_MAX; i++)
		o += (size_t)snprintf(buf + o, sizeof(buf) - o, " P%d=%d", i, i);
	struct smtp_addr a;
	struct smtp_param p[SMTP_PARAMS_MAX];
	size_t np;
	assert_int_equal(parse(buf, false, &a, p, &np), SMTP_ADDR_OK);
	assert_int_equal(np, SMTP_PARAMS_MAX);
	assert_string_equal(p[SMTP_PARAMS_MAX - 1].keyword, "P15");
	smtp_addr_clear(&a);
	smtp_params_clear(p, np);

	snprintf(buf + o, sizeof(buf) - o, " EXTRA");
	assert_int_equal(mail(buf), SMTP_ADDR_BAD_PARAM);

	/* no parameter storage: a parameter cannot be returned */
	size_t n0 = 7;
	assert_int_equal(smtp_addr_parse_arg("FROM:<a@b.test> SIZE=1", false, &a, NULL, &n0),
			 SMTP_ADDR_BAD_PARAM);
	assert_int_equal(n0, 0);
	assert_int_equal(smtp_addr_parse_arg("FROM:<a@b.test>", false, &a, NULL, NULL), SMTP_ADDR_OK);
	smtp_addr_clear(&a);
}

static void test_prefix(void **state)
{
	assert_int_equal(mail("FROM:<a@b.test>"), SMTP_ADDR_OK);
	assert_int_equal(mail("from:<a@b.test>"), SMTP_ADDR_OK);
	assert_int_equal(mail("From:<a@b.test>"), SMTP_ADDR_OK);
	assert_int_equal(rcpt("to:<a@b.test>"), SMTP_ADDR_OK);
	assert_int_equal(rcpt("To:<a@b.test>"), SMTP_ADDR_OK);
	assert_int_equal(mail("TO:<a@b.test>"), SMTP_ADDR_BAD_PREFIX);
	assert_int_equal(rcpt("FROM:<a@b.test>"), SMTP_ADDR_BAD_PREFIX);
	assert_int_equal(mail("FROM<a@b.test>"), SMTP_ADDR_BAD_PREFIX);
	assert_int_equal(mail("FROM :<a@b.test>"), SMTP_ADDR_BAD_PREFIX);
	assert_int_equal(mail(" FROM:<a@b.test>"), SMTP_ADDR_BAD_PREFIX);
	assert_int_equal(mail("FRO:<a@b.test>"), SMTP_ADDR_BAD_PREFIX);
	assert_int_equal(mail(""), SMTP_ADDR_BAD_PREFIX);
	assert_int_equal(mail("FROM:"), SMTP_ADDR_BAD_SYNTAX);
	assert_int_equal(mail("FROM: "), SMTP_ADDR_BAD_SYNTAX);

	/* one space after the colon is tolerated, not two, not a tab */
	assert_int_equal(mail("FROM: <a@b.test>"), SMTP_ADDR_OK);
	assert_int_equal(rcpt("TO: <a@b.test>"), SMTP_ADDR_OK);
	assert_int_equal(mail("FROM:  <a@b.test>"), SMTP_ADDR_BAD_SYNTAX);
	assert_int_equal(mail("FROM:\t<a@b.test>"), SMTP_ADDR_BAD_SYNTAX);

	/* the path must be in angle brackets */
	assert_int_equal(mail("FROM:a@b.test"), SMTP_ADDR_BAD_SYNTAX);
	assert_int_equal(rcpt("TO:a@b.test"), SMTP_ADDR_BAD_SYNTAX);
	assert_int_equal(mail("FROM:<a@b.test"), SMTP_ADDR_BAD_SYNTAX);
	assert_int_equal(mail("FROM:a@b.test>"), SMTP_ADDR_BAD_SYNTAX);
	assert_int_equal(mail("FROM:<<a@b.test>>"), SMTP_ADDR_BAD_SYNTAX);
	assert_int_equal(mail("FROM:<a@b.test>>"), SMTP_ADDR_BAD_SYNTAX);
	assert_int_equal(mail("FROM:<a@b.test> <c@d.test>"), SMTP_ADDR_BAD_PARAM);
}

static void test_limit_local(void **state)
{
	char *s = rep("FROM:<", 'l', SMTP_LOCAL_MAX, "@b.test>");
	assert_int_equal(mail(s), SMTP_ADDR_OK);
	free(s);
	s = rep("FROM:<", 'l', SMTP_LOCAL_MAX + 1, "@b.test>");
	assert_int_equal(mail(s), SMTP_ADDR_TOO_LONG);
	free(s);
	/* a quoted local part counts as written, quotes included */
	s = rep("FROM:<\"", 'l', SMTP_LOCAL_MAX - 2, "\"@b.test>");
	assert_int_equal(mail(s), SMTP_ADDR_OK);
	free(s);
	s = rep("FROM:<\"", 'l', SMTP_LOCAL_MAX - 1, "\"@b.test>");
	assert_int_equal(mail(s), SMTP_ADDR_TOO_LONG);
	free(s);
	s = rep("", 'l', SMTP_LOCAL_MAX + 1, "@b.test");
	assert_int_equal(bare(s), SMTP_ADDR_TOO_LONG);
	free(s);
}

/* A domain of n octets: labels of 61 "d" separated by dots; n must not
 * end right after a dot. */
static char *make_domain(size_t n)
{
	char *d = malloc(n + 1);
	assert_non_null(d);
	for (size_t i = 0; i < n; i++)
		d[i] = (i % 62 == 61) ? '.' : 'd';
	d[n] = '\0';
	assert_true(d[n - 1] != '.');
	return d;
}

static void test_limit_domain(void **state)
{
	char buf[600];
	/* one label: 63 is fine, 64 is not */
	char *s = rep("FROM:<u@", 'd', 63, ".test>");
	assert_int_equal(mail(s), SMTP_ADDR_OK);
	free(s);
	s = rep("FROM:<u@", 'd', 64, ".test>");
	assert_int_equal(mail(s), SMTP_ADDR_TOO_LONG);
	free(s);
	s = rep("FROM:<@", 'd', 64, ":u@b.test>");
	assert_int_equal(mail(s), SMTP_ADDR_TOO_LONG);
	free(s);

	/* The path limit (256 with "<u@" and ">") caps the domain at 252
	 * octets before the 255-octet domain limit can be reached; both
	 * are TOO_LONG. */
	char *d = make_domain(SMTP_PATH_MAX - 4);
	snprintf(buf, sizeof(buf), "FROM:<u@%s>", d);
	assert_int_equal(mail(buf), SMTP_ADDR_OK);
	snprintf(buf, sizeof(buf), "u@%s", d);
	assert_int_equal(bare(buf), SMTP_ADDR_OK);
	free(d);
	d = make_domain(SMTP_DOMAIN_MAX);
	snprintf(buf, sizeof(buf), "FROM:<u@%s>", d);
	assert_int_equal(mail(buf), SMTP_ADDR_TOO_LONG);
	snprintf(buf, sizeof(buf), "u@%s", d);
	assert_int_equal(bare(buf), SMTP_ADDR_TOO_LONG);
	free(d);
	d = make_domain(SMTP_DOMAIN_MAX + 1);
	snprintf(buf, sizeof(buf), "FROM:<u@%s>", d);
	assert_int_equal(mail(buf), SMTP_ADDR_TOO_LONG);
	/* a route hop over the domain limit */
	snprintf(buf, sizeof(buf), "FROM:<@%s:u@b.test>", d);
	assert_int_equal(mail(buf), SMTP_ADDR_TOO_LONG);
	free(d);
}

static void test_limit_path(void **state)
{
	char buf[600];
	/* "<" + 64 + "@" + 190 + ">" = 256 */
	char *local = rep("", 'l', SMTP_LOCAL_MAX, "");
	char *d = make_domain(SMTP_PATH_MAX - SMTP_LOCAL_MAX - 3);
	snprintf(buf, sizeof(buf), "TO:<%s@%s>", local, d);
	assert_int_equal(rcpt(buf), SMTP_ADDR_OK);
	snprintf(buf, sizeof(buf), "%s@%s", local, d);
	assert_int_equal(bare(buf), SMTP_ADDR_OK);
	snprintf(buf, sizeof(buf), "<%s@%s>", local, d);
	assert_int_equal(bare(buf), SMTP_ADDR_OK);
	free(d);
	d = make_domain(SMTP_PATH_MAX - SMTP_LOCAL_MAX - 2);
	snprintf(buf, sizeof(buf), "TO:<%s@%s>", local, d);
	assert_int_equal(rcpt(buf), SMTP_ADDR_TOO_LONG);
	snprintf(buf, sizeof(buf), "%s@%s", local, d);
	assert_int_equal(bare(buf), SMTP_ADDR_TOO_LONG);
	free(d);

	/* the source route counts towards the path */
	d = make_domain(SMTP_PATH_MAX - SMTP_LOCAL_MAX - 3 - 8);
	snprintf(buf, sizeof(buf), "TO:<@a.test:%s@%s>", local, d);
	assert_int_equal(rcpt(buf), SMTP_ADDR_OK);
	snprintf(buf, sizeof(buf), "TO:<@ab.test:%s@%s>", local, d);
	assert_int_equal(rcpt(buf), SMTP_ADDR_TOO_LONG);
	free(d);
	free(local);
}

static void test_utf8(void **state)
{
	struct smtp_addr a;
	struct smtp_param p[SMTP_PARAMS_MAX];
	size_t np;
	assert_int_equal(parse("FROM:<j\xc3\xb6rg@b\xc3\xbc" "cher.test> SMTPUTF8", false, &a, p, &np),
			 SMTP_ADDR_OK);
	assert_true(a.utf8);
	assert_string_equal(a.local, "j\xc3\xb6rg");
	assert_string_equal(a.domain, "b\xc3\xbc" "cher.test");
	smtp_addr_clear(&a);
	smtp_params_clear(p, np);

	assert_int_equal(parse("TO:<\"\xe7\x94\xa8 \xe6\x88\xb7\"@example.test>", true, &a, p, &np),
			 SMTP_ADDR_OK);
	assert_true(a.utf8);
	assert_string_equal(a.local_unquoted, "\xe7\x94\xa8 \xe6\x88\xb7");
	smtp_addr_clear(&a);

	assert_int_equal(parse("TO:<u@\xf0\x9f\x93\xa7.test>", true, &a, p, &np), SMTP_ADDR_OK);
	assert_true(a.utf8);
	smtp_addr_clear(&a);

	assert_int_equal(smtp_addr_parse("\xd0\xb8\xd0\xbc\xd1\x8f@\xd0\xb4\xd0\xbe\xd0\xbc\xd0\xb5\xd0\xbd",
					 &a), SMTP_ADDR_OK);
	assert_true(a.utf8);
	smtp_addr_clear(&a);

	/* invalid UTF-8: stray continuation, truncated, overlong, surrogate,
	 * past U+10FFFF, 0xff, and a C1 control */
	assert_int_equal(mail("FROM:<a\x80@b.test>"), SMTP_ADDR_BAD_SYNTAX);
	assert_int_equal(mail("FROM:<a\xc3@b.test>"), SMTP_ADDR_BAD_SYNTAX);
	assert_int_equal(mail("FROM:<a@b.test\xc3>"), SMTP_ADDR_BAD_SYNTAX);
	assert_int_equal(mail("FROM:<a\xe2\x82@b.test>"), SMTP_ADDR_BAD_SYNTAX);
	assert_int_equal(mail("FROM:<a\xc0\xaf@b.test>"), SMTP_ADDR_BAD_SYNTAX);
	assert_int_equal(mail("FROM:<a\xe0\x80\xaf@b.test>"), SMTP_ADDR_BAD_SYNTAX);
	assert_int_equal(mail("FROM:<a\xed\xa0\x80@b.test>"), SMTP_ADDR_BAD_SYNTAX);
	assert_int_equal(mail("FROM:<a\xf4\x90\x80\x80@b.test>"), SMTP_ADDR_BAD_SYNTAX);
	assert_int_equal(mail("FROM:<a\xff@b.test>"), SMTP_ADDR_BAD_SYNTAX);
	assert_int_equal(mail("FROM:<a\xc2\x85@b.test>"), SMTP_ADDR_BAD_SYNTAX);
	assert_int_equal(mail("FROM:<a@b.test> X=\xc3"), SMTP_ADDR_BAD_SYNTAX);
	assert_int_equal(bare("a\xc3@b.test"), SMTP_ADDR_BAD_SYNTAX);
	/* UTF-8 is not accepted inside address literals */
	assert_int_equal(mail("FROM:<a@[\xc3\xa9]>"), SMTP_ADDR_BAD_SYNTAX);
}

static void test_control_chars(void **state)
{
	assert_int_equal(mail("FROM:<a\x01@b.test>"), SMTP_ADDR_BAD_SYNTAX);
	assert_int_equal(mail("FROM:<a@b\x7f.test>"), SMTP_ADDR_BAD_SYNTAX);
	assert_int_equal(mail("FROM:<\"a\tb\"@b.test>"), SMTP_ADDR_BAD_SYNTAX);
	assert_int_equal(mail("FROM:<\"a\\\x01\"@b.test>"), SMTP_ADDR_BAD_SYNTAX);
	assert_int_equal(mail("FROM:<a@b.test>\r\n"), SMTP_ADDR_BAD_SYNTAX);
	assert_int_equal(rcpt("TO:<a@b.test>\rRCPT TO:<c@d.test>"), SMTP_ADDR_BAD_SYNTAX);
	assert_int_equal(mail("FROM:<a@b.test> SIZE=1\x1b"), SMTP_ADDR_BAD_SYNTAX);
	assert_int_equal(bare("a\n@b.test"), SMTP_ADDR_BAD_SYNTAX);
}

/* RFC 5321 §3.6.1 / Appendix C "relay tricks" parse as the grammar says;
 * refusing to relay them is the session's business. */
static void test_relay_tricks(void **state)
{
	struct smtp_addr a;
	struct smtp_param p[SMTP_PARAMS_MAX];
	size_t np;
	assert_int_equal(parse("TO:<user%other@local.test>", true, &a, p, &np), SMTP_ADDR_OK);
	assert_string_equal(a.local, "user%other");
	assert_string_equal(a.domain, "local.test");
	smtp_addr_clear(&a);

	assert_int_equal(parse("TO:<\"user@other\"@local.test>", true, &a, p, &np), SMTP_ADDR_OK);
	assert_string_equal(a.local, "\"user@other\"");
	assert_string_equal(a.local_unquoted, "user@other");
	assert_string_equal(a.domain, "local.test");
	smtp_addr_clear(&a);

	assert_int_equal(parse("TO:<other!user@local.test>", true, &a, p, &np), SMTP_ADDR_OK);
	assert_string_equal(a.local, "other!user");
	assert_string_equal(a.domain, "local.test");
	smtp_addr_clear(&a);

	assert_int_equal(parse("TO:<@local.test:user@other.test>", true, &a, p, &np), SMTP_ADDR_OK);
	assert_true(a.route_stripped);
	assert_string_equal(a.domain, "other.test");
	smtp_addr_clear(&a);
}

static void test_bare_parse(void **state)
{
	struct smtp_addr a;
	assert_int_equal(smtp_addr_parse("alice@example.test", &a), SMTP_ADDR_OK);
	assert_string_equal(a.text, "alice@example.test");
	assert_string_equal(a.domain, "example.test");
	smtp_addr_clear(&a);
	assert_int_equal(smtp_addr_parse("<alice@example.test>", &a), SMTP_ADDR_OK);
	assert_string_equal(a.text, "alice@example.test");
	smtp_addr_clear(&a);
	assert_int_equal(smtp_addr_parse("\"a b\"@[192.0.2.7]", &a), SMTP_ADDR_OK);
	assert_string_equal(a.local_unquoted, "a b");
	assert_true(a.literal);
	smtp_addr_clear(&a);

	assert_int_equal(bare(""), SMTP_ADDR_BAD_SYNTAX);
	assert_int_equal(bare(NULL), SMTP_ADDR_BAD_SYNTAX);
	assert_int_equal(bare("alice"), SMTP_ADDR_BAD_SYNTAX);
	assert_int_equal(bare("alice@"), SMTP_ADDR_BAD_SYNTAX);
	assert_int_equal(bare("@example.test"), SMTP_ADDR_BAD_SYNTAX);
	assert_int_equal(bare("<alice@example.test"), SMTP_ADDR_BAD_SYNTAX);
	assert_int_equal(bare("alice@example.test>"), SMTP_ADDR_BAD_SYNTAX);
	assert_int_equal(bare("<alice@example.test> "), SMTP_ADDR_BAD_SYNTAX);
	assert_int_equal(bare(" alice@example.test"), SMTP_ADDR_BAD_SYNTAX);
	assert_int_equal(bare("alice@example.test "), SMTP_ADDR_BAD_SYNTAX);
	assert_int_equal(bare("a@b@c"), SMTP_ADDR_BAD_SYNTAX);
}

static void test_huge_input(void **state)
{
	size_t n = 10 * 1024;
	char *s = rep("FROM:<", 'a', n, "@b.test>");
	assert_int_equal(mail(s), SMTP_ADDR_TOO_LONG);
	free(s);
	s = rep("TO:<u@", 'a', n, ">");
	assert_int_equal(rcpt(s), SMTP_ADDR_TOO_LONG);
	free(s);
	s = rep("FROM:<\"", 'a', n, "");
	assert_int_equal(mail(s), SMTP_ADDR_BAD_SYNTAX);
	free(s);
	s = rep("FROM:<a@b.test> X=", 'v', n, "");
	assert_int_equal(mail(s), SMTP_ADDR_OK);
	free(s);
	s = rep("FROM:<a@b.test>", ' ', n, "");
	assert_int_equal(mail(s), SMTP_ADDR_OK);
	free(s);
	s = rep("FROM:<", '@', n, ">");
	assert_int_equal(mail(s), SMTP_ADDR_BAD_SYNTAX);
	free(s);
	s = rep("FROM:<", '.', n, ">");
	assert_int_equal(mail(s), SMTP_ADDR_BAD_SYNTAX);
	free(s);
	s = rep("FROM:<u@", '[', n, ">");
	assert_int_equal(mail(s), SMTP_ADDR_BAD_SYNTAX);
	free(s);
	s = rep("", 'a', n, "@b.test");
	assert_int_equal(bare(s), SMTP_ADDR_TOO_LONG);
	free(s);
}

static void test_clear_and_normalize(void **state)
{
	smtp_addr_clear(NULL);
	smtp_params_clear(NULL, 3);
	struct smtp_addr a;
	assert_int_equal(smtp_addr_parse("u@Example.TEST.", &a), SMTP_ADDR_OK);
	char *d = smtp_domain_normalize(a.domain);
	assert_string_equal(d, "example.test");
	free(d);
	smtp_addr_clear(&a);
	smtp_addr_clear(&a); /* twice is harmless */

	d = smtp_domain_normalize("A.B..");
	assert_string_equal(d, "a.b.");
	free(d);
	d = smtp_domain_normalize("B\xc3\x9c" "CHER.Test");
	assert_string_equal(d, "b\xc3\x9c" "cher.test");
	free(d);
	d = smtp_domain_normalize("");
	assert_string_equal(d, "");
	free(d);
	assert_null(smtp_domain_normalize(NULL));
}

/* The AUTH= value of MAIL, RFC 4954 §5: xtext (RFC 3461 §4) of <> or of
 * a mailbox. */
static enum smtp_addr_result auth_param(const char *xtext, const char *want_text)
{
	struct smtp_addr a;
	enum smtp_addr_result r = smtp_addr_parse_auth_param(xtext, &a);
	if (r == SMTP_ADDR_OK) {
		assert_non_null(want_text);
		assert_string_equal(a.text, want_text);
		assert_int_equal(a.null, want_text[0] == '\0');
	} else {
		assert_null(a.text);
		assert_null(a.local);
		assert_null(a.domain);
	}
	smtp_addr_clear(&a);
	return r;
}

static void test_auth_param(void **state)
{
	assert_int_equal(auth_param("<>", ""), SMTP_ADDR_OK);
	assert_int_equal(auth_param("+3C+3E", ""), SMTP_ADDR_OK);
	assert_int_equal(auth_param("bob@example.test", "bob@example.test"), SMTP_ADDR_OK);
	assert_int_equal(auth_param("<bob@example.test>", "bob@example.test"), SMTP_ADDR_OK);
	/* RFC 4954 §5's example, and a "+" in the local part */
	assert_int_equal(auth_param("e+3Dmc2@example.com", "e=mc2@example.com"), SMTP_ADDR_OK);
	assert_int_equal(auth_param("a+2Bb@example.test", "a+b@example.test"), SMTP_ADDR_OK);
	assert_int_equal(auth_param("a+2bb@example.test", "a+b@example.test"), SMTP_ADDR_OK);

	/* malformed xtext: a lone or short "+", a non-hex digit, "=" */
	assert_int_equal(auth_param("+", NULL), SMTP_ADDR_BAD_PARAM);
	assert_int_equal(auth_param("a+4", NULL), SMTP_ADDR_BAD_PARAM);
	assert_int_equal(auth_param("a+4G@b.test", NULL), SMTP_ADDR_BAD_PARAM);
	assert_int_equal(auth_param("+ZZ", NULL), SMTP_ADDR_BAD_PARAM);
	assert_int_equal(auth_param("a=b@c.test", NULL), SMTP_ADDR_BAD_PARAM);
	assert_int_equal(auth_param("a b@c.test", NULL), SMTP_ADDR_BAD_PARAM);
	assert_int_equal(auth_param("a\xc3\xa9@c.test", NULL), SMTP_ADDR_BAD_PARAM);
	assert_int_equal(auth_param("", NULL), SMTP_ADDR_BAD_PARAM);
	assert_int_equal(auth_param(NULL, NULL), SMTP_ADDR_BAD_PARAM);
	/* decodes to a NUL or a control character: never a cut string */
	assert_int_equal(auth_param("a+00b@c.test", NULL), SMTP_ADDR_BAD_PARAM);
	assert_int_equal(auth_param("a+0Ab@c.test", NULL), SMTP_ADDR_BAD_PARAM);
	/* well-formed xtext, but not <> or a mailbox */
	assert_int_equal(auth_param("bob", NULL), SMTP_ADDR_BAD_PARAM);
	assert_int_equal(auth_param("<bob@example.test", NULL), SMTP_ADDR_BAD_PARAM);
	assert_int_equal(auth_param("bob@", NULL), SMTP_ADDR_BAD_PARAM);
	assert_int_equal(auth_param("<>x", NULL), SMTP_ADDR_BAD_PARAM);

	/* longer than a path once decoded */
	char big[600];
	memset(big, 'a', 300);
	strcpy(big + 300, "@example.test");
	assert_int_equal(auth_param(big, NULL), SMTP_ADDR_BAD_PARAM);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_simple),
		cmocka_unit_test(test_null_sender),
		cmocka_unit_test(test_postmaster),
		cmocka_unit_test(test_quoted_local),
		cmocka_unit_test(test_dot_string),
		cmocka_unit_test(test_domain),
		cmocka_unit_test(test_ipv4_literal),
		cmocka_unit_test(test_ipv6_literal),
		cmocka_unit_test(test_source_route),
		cmocka_unit_test(test_params),
		cmocka_unit_test(test_params_count),
		cmocka_unit_test(test_prefix),
		cmocka_unit_test(test_limit_local),
		cmocka_unit_test(test_limit_domain),
		cmocka_unit_test(test_limit_path),
		cmocka_unit_test(test_utf8),
		cmocka_unit_test(test_control_chars),
		cmocka_unit_test(test_relay_tricks),
		cmocka_unit_test(test_bare_parse),
		cmocka_unit_test(test_huge_input),
		cmocka_unit_test(test_clear_and_normalize),
		cmocka_unit_test(test_auth_param),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

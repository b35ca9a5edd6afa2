/* test_dmarc: DMARC (RFC 7489) records, organizational domains from the
 * Public Suffix List, and the decision on a table of From / SPF / DKIM
 * domain combinations written from §3.1 (alignment), §6.3 (sp=, pct=),
 * §6.6.2 (the result) and §6.6.4 (pct lowers the policy one step). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "mailauth/dmarc.h"

static bool parse(const char *text, struct dmarc_record *r)
{
	char why[64];
	return dmarc_record_parse(text, strlen(text), r, why, sizeof why);
}

static void test_record(void **state)
{
	(void)state;
	struct dmarc_record r;
	assert_true(parse("v=DMARC1; p=reject", &r));
	assert_int_equal(r.p, DMARC_POLICY_REJECT);
	assert_int_equal(r.sp, DMARC_POLICY_REJECT); /* sp defaults to p */
	assert_int_equal(r.pct, 100);
	assert_int_equal(r.adkim, DMARC_ALIGN_RELAXED);
	assert_true(parse("v=DMARC1 ;p = Quarantine; sp=none; adkim=s; aspf=s; pct=25; fo=1;", &r));
	assert_int_equal(r.p, DMARC_POLICY_QUARANTINE);
	assert_int_equal(r.sp, DMARC_POLICY_NONE);
	assert_int_equal(r.adkim, DMARC_ALIGN_STRICT);
	assert_int_equal(r.aspf, DMARC_ALIGN_STRICT);
	assert_int_equal(r.pct, 25);
	assert_true(parse("v=DMARC1; p=none; pct=150", &r)); /* bad pct: default */
	assert_int_equal(r.pct, 100);
	/* §6.6.3 step 6: a bad p= with a report address is p=none */
	assert_true(parse("v=DMARC1; p=bogus; rua=mailto:d@example.com", &r));
	assert_int_equal(r.p, DMARC_POLICY_NONE);
	assert_false(parse("v=DMARC1; p=bogus", &r));
	assert_false(parse("v=DMARC1", &r));
	assert_false(parse("p=reject; v=DMARC1", &r));  /* v= first */
	assert_false(parse("v=dmarc1; p=reject", &r));  /* exactly DMARC1 */
	assert_false(parse("v=DMARC1; p=reject; junk", &r));
	char nul[] = "v=DMARC1; p=reject";
	nul[3] = '\0';
	char why[64];
	assert_false(dmarc_record_parse(nul, sizeof nul - 1, &r, why, sizeof why));
}

static void test_org_domain(void **state)
{
	(void)state;
	char org[256];
	assert_true(dmarc_org_domain("mail.Example.COM", org, sizeof org));
	assert_string_equal(org, "example.com");
	assert_true(dmarc_org_domain("a.b.example.co.uk", org, sizeof org));
	assert_string_equal(org, "example.co.uk");
	assert_true(dmarc_org_domain("news.example.test", org, sizeof org));
	assert_string_equal(org, "example.test");
	assert_false(dmarc_org_domain("co.uk", org, sizeof org)); /* a public suffix */
}

struct align_case {
	const char *a, *b;
	bool relaxed, strict;
};

/* §3.1.1 and §3.1.2, with public suffixes of more than one label */
static const struct align_case align_table[] = {
	{"example.com", "example.com", true, true},
	{"news.example.com", "example.com", true, false},
	{"example.com", "news.example.com", true, false},
	{"a.example.com", "b.example.com", true, false},
	{"EXAMPLE.com", "example.COM", true, true},
	{"example.com", "example.net", false, false},
	{"example.co.uk", "other.co.uk", false, false},
	{"mail.example.co.uk", "example.co.uk", true, false},
	{"example.com", "com", false, false},
	{"", "example.com", false, false},
};

static void test_alignment_table(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof align_table / sizeof align_table[0]; i++) {
		const struct align_case *c = &align_table[i];
		assert_int_equal(dmarc_aligned(c->a, c->b, DMARC_ALIGN_RELAXED), c->relaxed);
		assert_int_equal(dmarc_aligned(c->a, c->b, DMARC_ALIGN_STRICT), c->strict);
	}
}

struct decision_case {
	const char *from;
	enum spf_result spf;
	const char *spf_domain;
	const char *dkim;       /* one passing d=, or NULL */
	const char *record;     /* NULL: none published */
	bool at_org, temperror;
	unsigned sample;
	enum dmarc_result result;
	enum dmarc_disposition disposition;
};

static const struct decision_case decisions[] = {
	/* SPF aligned (relaxed), DKIM aligned, neither */
	{"example.com", SPF_PASS, "bounce.example.com", NULL, "v=DMARC1; p=reject", false, false,
	 0, DMARC_RESULT_PASS, DMARC_DISP_NONE},
	{"example.com", SPF_FAIL, "example.com", "example.com", "v=DMARC1; p=reject", false, false,
	 0, DMARC_RESULT_PASS, DMARC_DISP_NONE},
	{"example.com", SPF_PASS, "example.net", "example.org", "v=DMARC1; p=reject", false, false,
	 0, DMARC_RESULT_FAIL, DMARC_DISP_REJECT},
	/* only a pass counts: softfail and neutral on the From domain fail */
	{"example.com", SPF_SOFTFAIL, "example.com", NULL, "v=DMARC1; p=quarantine", false, false,
	 0, DMARC_RESULT_FAIL, DMARC_DISP_QUARANTINE},
	{"example.com", SPF_NEUTRAL, "example.com", NULL, "v=DMARC1; p=none", false, false, 0,
	 DMARC_RESULT_FAIL, DMARC_DISP_NONE},
	/* strict modes */
	{"example.com", SPF_PASS, "bounce.example.com", NULL, "v=DMARC1; p=reject; aspf=s", false,
	 false, 0, DMARC_RESULT_FAIL, DMARC_DISP_REJECT},
	{"example.com", SPF_NONE, "", "news.example.com", "v=DMARC1; p=reject; adkim=s", false,
	 false, 0, DMARC_RESULT_FAIL, DMARC_DISP_REJECT},
	{"example.com", SPF_NONE, "", "news.example.com", "v=DMARC1; p=reject; adkim=r", false,
	 false, 0, DMARC_RESULT_PASS, DMARC_DISP_NONE},
	/* DKIM alone, SPF failing: the signer's domain against the From domain */
	{"news.example.com", SPF_FAIL, "example.net", "example.com", "v=DMARC1; p=reject", false,
	 false, 0, DMARC_RESULT_PASS, DMARC_DISP_NONE},
	{"news.example.com", SPF_FAIL, "example.net", "example.com", "v=DMARC1; p=reject; adkim=s",
	 false, false, 0, DMARC_RESULT_FAIL, DMARC_DISP_REJECT},
	{"example.com", SPF_FAIL, "example.net", "example.com.evil.test", "v=DMARC1; p=reject",
	 false, false, 0, DMARC_RESULT_FAIL, DMARC_DISP_REJECT},
	{"example.co.uk", SPF_FAIL, "example.net", "co.uk", "v=DMARC1; p=quarantine", false, false,
	 0, DMARC_RESULT_FAIL, DMARC_DISP_QUARANTINE}, /* a public suffix signs for nobody */
	/* pct: inside the sample the policy, outside it one step lower */
	{"example.com", SPF_FAIL, "example.com", NULL, "v=DMARC1; p=reject; pct=50", false, false,
	 10, DMARC_RESULT_FAIL, DMARC_DISP_REJECT},
	{"example.com", SPF_FAIL, "example.com", NULL, "v=DMARC1; p=reject; pct=50", false, false,
	 70, DMARC_RESULT_FAIL, DMARC_DISP_QUARANTINE},
	{"example.com", SPF_FAIL, "example.com", NULL, "v=DMARC1; p=quarantine; pct=0", false,
	 false, 0, DMARC_RESULT_FAIL, DMARC_DISP_NONE},
	/* a subdomain under the organizational domain's record: sp= */
	{"news.example.com", SPF_FAIL, "news.example.com", NULL,
	 "v=DMARC1; p=reject; sp=quarantine", true, false, 0, DMARC_RESULT_FAIL,
	 DMARC_DISP_QUARANTINE},
	{"news.example.com", SPF_FAIL, "news.example.com", NULL, "v=DMARC1; p=reject; sp=none",
	 false, false, 0, DMARC_RESULT_FAIL, DMARC_DISP_REJECT}, /* its own record: p= */
	{"news.example.com", SPF_FAIL, "x.example.net", NULL, "v=DMARC1; p=reject", true, false, 0,
	 DMARC_RESULT_FAIL, DMARC_DISP_REJECT}, /* no sp=: p= for subdomains too */
	/* no policy, a DNS failure, no From domain */
	{"example.com", SPF_FAIL, "example.com", NULL, NULL, false, false, 0, DMARC_RESULT_NONE,
	 DMARC_DISP_NONE},
	{"example.com", SPF_FAIL, "example.com", NULL, NULL, false, true, 0, DMARC_RESULT_TEMPERROR,
	 DMARC_DISP_NONE},
	{NULL, SPF_PASS, "example.com", NULL, "v=DMARC1; p=reject", false, false, 0,
	 DMARC_RESULT_PERMERROR, DMARC_DISP_NONE},
	/* a public suffix is no organizational domain */
	{"example.co.uk", SPF_PASS, "other.co.uk", NULL, "v=DMARC1; p=reject", false, false, 0,
	 DMARC_RESULT_FAIL, DMARC_DISP_REJECT},
};

static void test_decision_table(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof decisions / sizeof decisions[0]; i++) {
		const struct decision_case *c = &decisions[i];
		struct dmarc_discovery d = {.temperror = c->temperror, .at_org = c->at_org};
		if (c->record) {
			assert_true(parse(c->record, &d.rec));
			d.found = true;
		}
		const char *dkim[1] = {c->dkim};
		struct dmarc_input in = {
			.from_domain = c->from, .spf = c->spf, .spf_domain = c->spf_domain,
			.dkim_pass = dkim, .ndkim_pass = c->dkim ? 1 : 0, .sample = c->sample,
		};
		struct dmarc_verdict v;
		dmarc_evaluate(&in, &d, &v);
		assert_int_equal(v.result, c->result);
		assert_int_equal(v.disposition, c->disposition);
	}
}

/* A DNS failure on the way to an aligned identifier is a temperror, never
 * a failure that refuses; one for an unaligned domain changes nothing, and
 * an aligned pass still wins. */
struct unsure_case {
	enum spf_result spf;
	const char *spf_domain;
	const char *dkim_pass, *dkim_temperror; /* one d= each, or NULL */
	const char *record;
	enum dmarc_result result;
	enum dmarc_disposition disposition;
};

static const struct unsure_case unsure[] = {
	{SPF_FAIL, "example.net", NULL, "example.com", "v=DMARC1; p=reject", DMARC_RESULT_TEMPERROR,
	 DMARC_DISP_NONE},
	{SPF_FAIL, "example.net", NULL, "mail.example.com", "v=DMARC1; p=reject",
	 DMARC_RESULT_TEMPERROR, DMARC_DISP_NONE},
	{SPF_FAIL, "example.net", NULL, "mail.example.com", "v=DMARC1; p=reject; adkim=s",
	 DMARC_RESULT_FAIL, DMARC_DISP_REJECT},
	{SPF_FAIL, "example.net", NULL, "example.org", "v=DMARC1; p=reject", DMARC_RESULT_FAIL,
	 DMARC_DISP_REJECT},
	{SPF_TEMPERROR, "example.com", NULL, NULL, "v=DMARC1; p=reject", DMARC_RESULT_TEMPERROR,
	 DMARC_DISP_NONE},
	{SPF_TEMPERROR, "example.net", NULL, NULL, "v=DMARC1; p=reject", DMARC_RESULT_FAIL,
	 DMARC_DISP_REJECT},
	{SPF_TEMPERROR, "example.com", "example.com", "example.com", "v=DMARC1; p=reject",
	 DMARC_RESULT_PASS, DMARC_DISP_NONE},
};

static void test_dns_failure_is_temperror(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof unsure / sizeof unsure[0]; i++) {
		const struct unsure_case *c = &unsure[i];
		struct dmarc_discovery d = {.found = true};
		assert_true(parse(c->record, &d.rec));
		const char *pass[1] = {c->dkim_pass}, *temp[1] = {c->dkim_temperror};
		struct dmarc_input in = {
			.from_domain = "example.com", .spf = c->spf, .spf_domain = c->spf_domain,
			.dkim_pass = pass, .ndkim_pass = c->dkim_pass ? 1 : 0,
			.dkim_temperror = temp, .ndkim_temperror = c->dkim_temperror ? 1 : 0,
		};
		struct dmarc_verdict v;
		dmarc_evaluate(&in, &d, &v);
		assert_int_equal(v.result, c->result);
		assert_int_equal(v.disposition, c->disposition);
	}
}

static bool from(const char *value, const char *want)
{
	char out[256];
	bool ok = dmarc_from_domain(value, strlen(value), out, sizeof out);
	if (ok && want)
		assert_string_equal(out, want);
	return ok;
}

static void test_from_domain(void **state)
{
	(void)state;
	assert_true(from(" Alice <alice@Example.COM>", "example.com"));
	assert_true(from(" bob@news.example.com", "news.example.com"));
	assert_true(from(" \"Smith, Bob\" <bob@example.org>", "example.org"));
	assert_true(from(" (comment, here) bob@example.org (more)", "example.org"));
	assert_true(from(" \"a@evil.example\" <bob@example.org>", "example.org"));
	assert_false(from(" a@example.com, b@example.net", NULL)); /* several mailboxes */
	assert_false(from(" undisclosed", NULL));
	assert_false(from(" <bob@example.org", NULL));
	assert_false(from(" bob@localhost", NULL));
	assert_false(from(" bob@exa mple.org", NULL));
	assert_false(from(" bob@example.org.", NULL));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_record),
		cmocka_unit_test(test_org_domain),
		cmocka_unit_test(test_alignment_table),
		cmocka_unit_test(test_decision_table),
		cmocka_unit_test(test_dns_failure_is_temperror),
		cmocka_unit_test(test_from_domain),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

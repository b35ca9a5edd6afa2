/* test_dmarc_opendmarc: posthorn's DMARC identifier alignment (RFC 7489
 * §3.1) and pass/fail (§6.6.2) against OpenDMARC's libopendmarc on one
 * table of From / SPF / DKIM domain combinations.  Both read the same
 * record text (each with its own parser) and the same Public Suffix List
 * (/usr/share/publicsuffix/public_suffix_list.dat). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

/* posthorn's header first: OpenDMARC's defines DMARC_POLICY_NONE and its
 * kin as macros, which would break posthorn's enum of the same names.
 * Below, DMARC_POLICY_* are OpenDMARC's; this file uses none of posthorn's. */
#include "mailauth/dmarc.h"

#include <opendmarc/dmarc.h>

enum { MAX_DKIM = 3 };

static const char PSL_FILE[] = "/usr/share/publicsuffix/public_suffix_list.dat";

struct row {
	const char *from;
	bool spf_pass;
	const char *spf_domain;
	const char *dkim[MAX_DKIM]; /* passing d= values, NULL-terminated */
	const char *record;
	bool spf_aligned, dkim_aligned, pass; /* what RFC 7489 §3.1 says */
	unsigned opendmarc_differs; /* OD_* columns where OpenDMARC says otherwise */
};

/* Columns on which libopendmarc 1.4.2 answers against RFC 7489 §3.1; the
 * test asserts the opposite answer there, so a change in either shows. */
enum { OD_SPF = 1, OD_DKIM = 2, OD_PASS = 4 };

#define R "v=DMARC1; p=reject"
#define RS "v=DMARC1; p=reject; adkim=s; aspf=s"

static const struct row rows[] = {
	/* equal domains, relaxed and strict */
	{"example.com", true, "example.com", {"example.com"}, R, true, true, true, 0},
	{"example.com", true, "example.com", {"example.com"}, RS, true, true, true, 0},
	/* the authenticated domain a subdomain of From's */
	{"example.com", true, "bounce.example.com", {"news.example.com"}, R, true, true, true, 0},
	/* §3.1.1, §3.1.2: "In strict mode, only an exact match" of the FQDNs
	 * aligns; OpenDMARC aligns these subdomains in strict mode too. */
	{"example.com", true, "bounce.example.com", {"news.example.com"}, RS, false, false, false,
	 OD_SPF | OD_DKIM | OD_PASS},
	/* From a subdomain of the authenticated domain */
	{"news.example.com", true, "example.com", {"example.com"}, R, true, true, true, 0},
	{"news.example.com", true, "example.com", {"example.com"}, RS, false, false, false, 0},
	/* sibling subdomains share the organizational domain */
	{"a.example.com", true, "b.example.com", {"c.example.com"}, R, true, true, true, 0},
	{"a.example.com", true, "b.example.com", {"c.example.com"},
	 "v=DMARC1; p=quarantine; aspf=s", false, true, true, OD_SPF}, /* strict: as above */
	{"a.example.com", true, "b.example.com", {"c.example.com"},
	 "v=DMARC1; p=none; adkim=s", true, false, true, OD_DKIM}, /* strict: as above */
	/* multi-label public suffixes */
	{"example.co.uk", true, "mail.example.co.uk", {NULL}, R, true, false, true, 0},
	{"news.example.co.uk", false, "", {"example.co.uk"}, R, false, true, true, 0},
	{"a.b.example.co.uk", true, "c.example.co.uk", {"d.example.co.uk"}, R, true, true, true, 0},
	{"a.b.example.co.uk", true, "c.example.co.uk", {"d.example.co.uk"}, RS, false, false,
	 false, 0},
	/* §3.2: a public suffix has no organizational domain (no "x+1"th
	 * label), so d=co.uk is not example.co.uk's; OpenDMARC aligns it. */
	{"example.co.uk", true, "other.co.uk", {"co.uk"}, R, false, false, false,
	 OD_DKIM | OD_PASS},
	{"shop.example.com.au", true, "example.com.au", {NULL}, R, true, false, true, 0},
	{"example.com.au", true, "example.net.au", {"example.org.au"}, R, false, false, false, 0},
	/* different organizations */
	{"example.com", true, "example.net", {"example.org"}, R, false, false, false, 0},
	{"example.com", true, "example.com.evil.test", {"evilexample.com"}, R, false, false, false, 0},
	{"example.com", true, "com", {"com"}, R, false, false, false,
	 OD_SPF | OD_DKIM | OD_PASS}, /* as above: "com" is a public suffix */
	/* case differences (§3.1: domain names compare case-insensitively) */
	{"Example.COM", true, "example.com", {"EXAMPLE.com"}, RS, true, true, true, 0},
	{"example.com", true, "BOUNCE.Example.Com", {"News.EXAMPLE.com"}, R, true, true, true, 0},
	{"NEWS.example.co.uk", true, "Example.Co.UK", {NULL}, R, true, false, true, 0},
	/* SPF passes but for a domain not aligned; DKIM decides */
	{"example.com", true, "mailer.example.net", {NULL}, R, false, false, false, 0},
	{"example.com", true, "mailer.example.net", {"example.com"}, R, false, true, true, 0},
	{"example.com", true, "mailer.example.net", {"example.com"}, RS, false, true, true, 0},
	/* an aligned SPF domain that did not pass */
	{"example.com", false, "example.com", {NULL}, R, false, false, false, 0},
	{"example.com", false, "example.com", {"example.net"}, R, false, false, false, 0},
	/* several passing DKIM signatures, one aligned */
	{"example.com", false, "", {"example.net", "example.com", "example.org"}, R, false, true,
	 true, 0},
	{"example.com", false, "", {"esp.example.net", "mail.example.com"}, R, false, true, true, 0},
	{"example.com", false, "", {"esp.example.net", "mail.example.com"}, RS, false, false,
	 false, 0},
	{"news.example.com", false, "", {"example.org", "news.example.com"}, RS, false, true,
	 true, 0},
	{"example.com", false, "", {"example.net", "example.org", "example.co.uk"}, R, false,
	 false, false, 0},
	/* neither identifier matches From at all */
	{"example.com", false, "", {NULL}, R, false, false, false, 0},
	{"example.com", false, "", {NULL}, "v=DMARC1; p=none", false, false, false, 0},
};

struct outcome {
	bool spf_aligned, dkim_aligned, pass;
};

static struct outcome posthorn_outcome(const struct row *r)
{
	struct dmarc_discovery d = {.found = true};
	char why[64];
	assert_true(dmarc_record_parse(r->record, strlen(r->record), &d.rec, why, sizeof why));
	size_t ndkim = 0;
	while (ndkim < MAX_DKIM && r->dkim[ndkim])
		ndkim++;
	struct dmarc_input in = {
		.from_domain = r->from,
		.spf = r->spf_pass ? SPF_PASS : SPF_FAIL,
		.spf_domain = r->spf_domain,
		.dkim_pass = r->dkim,
		.ndkim_pass = ndkim,
	};
	struct dmarc_verdict v;
	dmarc_evaluate(&in, &d, &v);
	return (struct outcome){v.spf_aligned, v.dkim_aligned, v.result == DMARC_RESULT_PASS};
}

/* libopendmarc's API takes u_char * for strings it does not change. */
static u_char *uc(const char *s)
{
	return (u_char *)(uintptr_t)s;
}

static void store_opendmarc_row(DMARC_POLICY_T *p, const struct row *r)
{
	assert_int_equal(opendmarc_policy_store_from_domain(p, uc(r->from)), DMARC_PARSE_OKAY);
	assert_int_equal(opendmarc_policy_store_dmarc(p, uc(r->record), uc(r->from), NULL),
			 DMARC_PARSE_OKAY);
	if (r->spf_domain[0] != '\0')
		assert_int_equal(opendmarc_policy_store_spf(
					 p, uc(r->spf_domain),
					 r->spf_pass ? DMARC_POLICY_SPF_OUTCOME_PASS
						     : DMARC_POLICY_SPF_OUTCOME_FAIL,
					 DMARC_POLICY_SPF_ORIGIN_MAILFROM, NULL),
				 DMARC_PARSE_OKAY);
	for (size_t i = 0; i < MAX_DKIM && r->dkim[i]; i++)
		assert_int_equal(opendmarc_policy_store_dkim(p, uc(r->dkim[i]), uc("sel"),
							     DMARC_POLICY_DKIM_OUTCOME_PASS,
							     NULL),
				 DMARC_PARSE_OKAY);
}

static struct outcome opendmarc_outcome(const struct row *r)
{
	DMARC_POLICY_T *p = opendmarc_policy_connect_init(uc("127.0.0.1"), AF_INET);
	assert_non_null(p);
	store_opendmarc_row(p, r);
	int policy = opendmarc_get_policy_to_enforce(p);
	int dkim = 0, spf = 0;
	assert_int_equal(opendmarc_policy_fetch_alignment(p, &dkim, &spf), DMARC_PARSE_OKAY);
	assert_null(opendmarc_policy_connect_shutdown(p));
	return (struct outcome){spf == DMARC_POLICY_SPF_ALIGNMENT_PASS,
				dkim == DMARC_POLICY_DKIM_ALIGNMENT_PASS,
				policy == DMARC_POLICY_PASS};
}

static void expect_equal(size_t i, const char *what, bool rfc, bool posthorn, bool opendmarc,
			 bool opendmarc_differs)
{
	if (rfc == posthorn && (rfc != opendmarc) == opendmarc_differs)
		return;
	print_error("row %zu %s: RFC 7489 %d, posthorn %d, OpenDMARC %d (expected %d)\n", i,
		    what, rfc, posthorn, opendmarc, rfc != opendmarc_differs);
	fail();
}

static void test_alignment_table(void **state)
{
	(void)state;
	OPENDMARC_LIB_T lib = {.tld_type = OPENDMARC_TLD_TYPE_MOZILLA};
	assert_true(strlen(PSL_FILE) < sizeof lib.tld_source_file);
	memcpy(lib.tld_source_file, PSL_FILE, sizeof PSL_FILE);
	assert_int_equal(opendmarc_policy_library_init(&lib), DMARC_PARSE_OKAY);
	for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
		struct outcome ph = posthorn_outcome(&rows[i]);
		struct outcome od = opendmarc_outcome(&rows[i]);
		unsigned differs = rows[i].opendmarc_differs;
		expect_equal(i, "SPF aligned", rows[i].spf_aligned, ph.spf_aligned,
			     od.spf_aligned, differs & OD_SPF);
		expect_equal(i, "DKIM aligned", rows[i].dkim_aligned, ph.dkim_aligned,
			     od.dkim_aligned, differs & OD_DKIM);
		expect_equal(i, "pass", rows[i].pass, ph.pass, od.pass, differs & OD_PASS);
	}
	assert_int_equal(opendmarc_policy_library_shutdown(&lib), DMARC_PARSE_OKAY);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_alignment_table),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Unit tests for dkim_verify and dkim_sign: the RFC 8463 §A.3 message
 * (ed25519-sha256 and rsa-sha256 over one body) verified with the keys of
 * §A.2; a broken body, a broken header, keys that are missing, revoked,
 * of the wrong type; rsa-sha1, x=, tags missing; posthorn's own
 * signatures (RSA and Ed25519 at once) verified; the From over-signed;
 * answers that come later, and cancel. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <event2/event.h>

#include "lib/offload.h"
#include "lib/util.h"
#include "mailauth/dkim_key.h"
#include "mailauth/dkim_sign.h"
#include "mailauth/dkim_verify.h"

/* RFC 8463 §A.3 (the signed message) and §A.2 (its key records) */
static const char rfc8463_message[] =
    "DKIM-Signature: v=1; a=ed25519-sha256; c=relaxed/relaxed;\r\n"
    " d=football.example.com; i=@football.example.com;\r\n"
    " q=dns/txt; s=brisbane; t=1528637909; h=from : to :\r\n"
    " subject : date : message-id : from : subject : date;\r\n"
    " bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=;\r\n"
    " b=/gCrinpcQOoIfuHNQIbq4pgh9kyIK3AQUdt9OdqQehSwhEIug4D11Bus\r\n"
    " Fa3bT3FY5OsU7ZbnKELq+eXdp1Q1Dw==\r\n"
    "DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed;\r\n"
    " d=football.example.com; i=@football.example.com;\r\n"
    " q=dns/txt; s=test; t=1528637909; h=from : to : subject :\r\n"
    " date : message-id : from : subject : date;\r\n"
    " bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=;\r\n"
    " b=F45dVWDfMbQDGHJFlXUNB2HKfbCeLRyhDXgFpEL8GwpsRe0IeIixNTe3\r\n"
    " DhCVlUrSjV4BwcVcOF6+FF3Zo9Rpo1tFOeS9mPYQTnGdaSGsgeefOsk2Jz\r\n"
    " dA+L10TeYt9BgDfQNZtKdN1WO//KgIqXP7OdEFE4LjFYNcUxZQ4FADY+8=\r\n"
    "From: Joe SixPack <joe@football.example.com>\r\n"
    "To: Suzie Q <suzie@shopping.example.net>\r\n"
    "Subject: Is dinner ready?\r\n"
    "Date: Fri, 11 Jul 2003 21:00:37 -0700 (PDT)\r\n"
    "Message-ID: <20030712040037.46341.5F8J@football.example.com>\r\n"
    "\r\n"
    "Hi.\r\n"
    "\r\n"
    "We lost the game.  Are you hungry yet?\r\n"
    "\r\n"
    "Joe.\r\n";

static const char brisbane[] = "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=";
static const char test_rsa[] =
    "v=DKIM1; k=rsa; p=MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDkHlOQoBTzWR"
    "iGs5V6NpP3idY6Wk08a5qhdR6wy5bdOKb2jLQiY/J16JYi0Qvx/byYzCNb3W91y3FutAC"
    "DfzwQ/BC/e/8uBsCR+yz1Lxj+PL6lHvqMKrM3rG4hstT5QjvHO9PzoxZyVYLzBfO2EeC3"
    "Ip3G+2kryOTIKT+l/K4w3QIDAQAB";

/* ---- a key source over a table: at once, or held until answer_held() ---------- */

struct fake_record {
	const char *name;
	const char *text;       /* NULL: NXDOMAIN */
	enum dns_status st;
};

static struct fake_record records[8];
static size_t nrecords;
static bool hold;
static struct {
	dns_txt_cb cb;
	void *arg;
	char name[300];
	bool cancelled;
} held[8];
static size_t nheld;

static void answer(const char *name, dns_txt_cb cb, void *arg)
{
	for (size_t i = 0; i < nrecords; i++) {
		if (strcmp(records[i].name, name) != 0)
			continue;
		if (records[i].st != DNS_OK) {
			cb(arg, records[i].st, NULL, 0, 0);
			return;
		}
		struct dns_txt t = {(char *)records[i].text, strlen(records[i].text)};
		cb(arg, DNS_OK, &t, 1, 300);
		return;
	}
	cb(arg, DNS_NOTFOUND, NULL, 0, 0);
}

static dns_query_id fake_lookup(void *ctx, const char *name, dns_txt_cb cb, void *arg)
{
	if (!hold) {
		answer(name, cb, arg);
		return 0;
	}
	assert_true(nheld < 8);
	held[nheld].cb = cb;
	held[nheld].arg = arg;
	held[nheld].cancelled = false;
	snprintf(held[nheld].name, sizeof held[nheld].name, "%s", name);
	nheld++;
	return nheld;
}

static void fake_cancel(void *ctx, dns_query_id id)
{
	held[id - 1].cancelled = true;
}

static const struct dkim_key_source fake = {fake_lookup, fake_cancel, NULL};

static void answer_held(size_t i)
{
	answer(held[i].name, held[i].cb, held[i].arg);
}

static void set_records(const struct fake_record *r, size_t n)
{
	memcpy(records, r, n * sizeof *r);
	nrecords = n;
	hold = false;
	nheld = 0;
}

/* ---- results --------------------------------------------------------------------- */

static struct dkim_result got[DKIM_VERIFY_SIGNATURES_MAX + 1];
static size_t ngot;
static int calls;

static void done(void *arg, const struct dkim_result *res, size_t n)
{
	calls++;
	ngot = n;
	memcpy(got, res, n * sizeof *res);
}

static void verify(const char *msg, size_t len, time_t now)
{
	calls = 0;
	ngot = 0;
	struct dkim_verify *v = dkim_verify_start_with(&fake, msg, len, now, done, NULL);
	assert_null(v); /* every answer came at once */
	assert_int_equal(calls, 1);
}

static const struct fake_record rfc_records[] = {
	{"brisbane._domainkey.football.example.com", brisbane, DNS_OK},
	{"test._domainkey.football.example.com", test_rsa, DNS_OK},
};

static void test_rfc8463_message_verifies(void **state)
{
	set_records(rfc_records, 2);
	verify(rfc8463_message, strlen(rfc8463_message), 1528637909);
	assert_int_equal(ngot, 2);
	assert_int_equal(got[0].status, DKIM_PASS);
	assert_string_equal(got[0].domain, "football.example.com");
	assert_string_equal(got[0].selector, "brisbane");
	assert_string_equal(got[0].algorithm, "ed25519-sha256");
	assert_string_equal(got[0].header_b, "/gCrinpc");
	assert_string_equal(got[0].reason, "");
	assert_int_equal(got[1].status, DKIM_PASS);
	assert_string_equal(got[1].algorithm, "rsa-sha256");
	assert_int_equal(got[1].key_bits, 1024);
	/* LF line ends are read as CRLF */
	char *lf = xstrdup(rfc8463_message);
	size_t k = 0;
	for (size_t i = 0; lf[i]; i++)
		if (lf[i] != '\r')
			lf[k++] = lf[i];
	verify(lf, k, 1528637909);
	assert_int_equal(got[0].status, DKIM_PASS);
	assert_int_equal(got[1].status, DKIM_PASS);
	free(lf);
}

static void test_changes_fail(void **state)
{
	set_records(rfc_records, 2);
	char *m = xstrdup(rfc8463_message);
	char *p = strstr(m, "hungry");
	p[0] = 'H';
	verify(m, strlen(m), 1528637909);
	assert_int_equal(got[0].status, DKIM_FAIL);
	assert_string_equal(got[0].reason, "body hash did not verify");
	p[0] = 'h';
	p = strstr(m, "Is dinner");
	p[0] = 'i';
	verify(m, strlen(m), 1528637909);
	assert_int_equal(got[0].status, DKIM_FAIL);
	assert_string_equal(got[0].reason, "signature did not verify");
	assert_int_equal(got[1].status, DKIM_FAIL);
	free(m);
	/* white space that relaxed canonicalisation ignores changes nothing */
	m = xasprintf("%s", rfc8463_message);
	char *subject = strstr(m, "Subject: Is");
	subject[8] = '\t';
	verify(m, strlen(m), 1528637909);
	assert_int_equal(got[0].status, DKIM_PASS);
	free(m);
}

static void test_key_problems(void **state)
{
	const struct fake_record recs[] = {
		{"brisbane._domainkey.football.example.com", "v=DKIM1; k=ed25519; p=", DNS_OK},
		{"test._domainkey.football.example.com", brisbane, DNS_OK},
	};
	set_records(recs, 2);
	verify(rfc8463_message, strlen(rfc8463_message), 1528637909);
	assert_int_equal(got[0].status, DKIM_PERMERROR);
	assert_string_equal(got[0].reason, "key revoked");
	assert_int_equal(got[1].status, DKIM_PERMERROR);
	assert_string_equal(got[1].reason, "key type ed25519 does not match a=");
	const struct fake_record dns_down[] = {
		{"brisbane._domainkey.football.example.com", NULL, DNS_TIMEOUT},
	};
	set_records(dns_down, 1);
	verify(rfc8463_message, strlen(rfc8463_message), 1528637909);
	assert_int_equal(got[0].status, DKIM_TEMPERROR); /* never a failure */
	assert_string_equal(got[0].reason, "key lookup: timeout");
	assert_int_equal(got[1].status, DKIM_PERMERROR);
	assert_string_equal(got[1].reason, "no key record");
	const struct fake_record junk[] = {
		{"brisbane._domainkey.football.example.com", "v=spf1 -all", DNS_OK},
	};
	set_records(junk, 1);
	verify(rfc8463_message, strlen(rfc8463_message), 1528637909);
	assert_int_equal(got[0].status, DKIM_PERMERROR);
	assert_string_equal(got[0].reason, "key record: v= is not DKIM1 in first place");
}

static void test_signature_problems(void **state)
{
	set_records(rfc_records, 2);
	const struct {
		const char *sig;
		enum dkim_status st;
		const char *why;
	} cases[] = {
		{"v=1; a=rsa-sha1; d=football.example.com; s=test; h=from; bh=AA==; b=AA==",
		 DKIM_FAIL, "rsa-sha1 is not accepted (RFC 8301)"},
		{"v=1; a=rsa-sha256; d=football.example.com; s=test; h=from; bh=AA==", DKIM_PERMERROR,
		 "a required tag is missing (v, a, b, bh, d, h, s)"},
		{"v=1; a=rsa-sha256; d=football.example.com; s=test; h=to; bh=AA==; b=AA==",
		 DKIM_PERMERROR, "From is not signed (h=)"},
		{"v=1; a=rsa-sha256; d=football.example.com; s=test; h=from; bh=AA==; b=AA==; x=100",
		 DKIM_FAIL, "signature expired"},
		{"v=1; a=rsa-sha256; d=football.example.com; s=test; h=from; bh=AA==; b=AA==; "
		 "i=joe@example.net", DKIM_PERMERROR, "i= is not in the domain d="},
		{"v=2; a=rsa-sha256; d=football.example.com; s=test; h=from; bh=AA==; b=AA==",
		 DKIM_PERMERROR, "unknown version (v= is not 1)"},
		{"v=1; a=rsa-sha256; d=football.example.com; s=test; h=from; bh=AA==; b=AA==",
		 DKIM_PERMERROR, "bh= is not a SHA-256 hash"},
		{"v=1; v=1", DKIM_PERMERROR, "signature syntax: tag v given twice"},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		char *m = xasprintf("DKIM-Signature: %s\r\nFrom: a@football.example.com\r\n\r\nhi\r\n",
				    cases[i].sig);
		verify(m, strlen(m), 1000);
		assert_int_equal(ngot, 1);
		assert_int_equal(got[0].status, cases[i].st);
		assert_string_equal(got[0].reason, cases[i].why);
		free(m);
	}
	verify("From: a@b.example\r\n\r\nno signature\r\n", 37, 1000);
	assert_int_equal(ngot, 0);
}

/* ---- posthorn's signatures -------------------------------------------------------------- */

static void make_key(struct dkim_privkey *k, enum dkim_key_type t, const char *selector)
{
	memset(k, 0, sizeof *k);
	k->domain = xstrdup("example.test");
	k->selector = xstrdup(selector);
	k->type = t;
	k->pkey = dkim_key_generate(t);
	assert_non_null(k->pkey);
	k->bits = (unsigned)EVP_PKEY_get_bits(k->pkey);
}

static char *sign(const struct dkim_privkey *keys, size_t n, const char *msg, size_t step)
{
	struct dkim_sign *s = dkim_sign_new();
	size_t len = strlen(msg);
	for (size_t i = 0; i < len; i += step)
		dkim_sign_feed(s, msg + i, len - i < step ? len - i : step);
	char err[128];
	char *fields = dkim_sign_finish(s, keys, n, 1796680000, err, sizeof err);
	dkim_sign_free(s);
	return fields;
}

static const char own_message[] =
    "From: Alice <alice@example.test>\r\nTo: bob@example.net\r\n"
    "Subject: a folded\r\n  subject\r\nMessage-ID: <x@example.test>\r\n\r\n"
    "body  line \r\n\r\n\r\n";

static void test_own_signatures_verify(void **state)
{
	struct dkim_privkey keys[3];
	make_key(&keys[0], DKIM_KEY_RSA, "rsa");
	make_key(&keys[1], DKIM_KEY_ED25519, "ed");
	make_key(&keys[2], DKIM_KEY_ED25519, "else");
	free(keys[2].domain);
	keys[2].domain = xstrdup("elsewhere.test"); /* not the From domain: not used */
	char *rsa_rec = dkim_key_record(keys[0].pkey), *ed_rec = dkim_key_record(keys[1].pkey);
	const struct fake_record recs[] = {
		{"rsa._domainkey.example.test", rsa_rec, DNS_OK},
		{"ed._domainkey.example.test", ed_rec, DNS_OK},
	};
	for (size_t step = 1; step <= 64; step *= 4) {
		char *fields = sign(keys, 3, own_message, step);
		assert_non_null(fields);
		assert_non_null(strstr(fields, "h=from:from:to:subject:message-id;"));
		char *m = xasprintf("%s%s", fields, own_message);
		set_records(recs, 2);
		verify(m, strlen(m), 1796680001);
		assert_int_equal(ngot, 2);
		assert_int_equal(got[0].status, DKIM_PASS);
		assert_string_equal(got[0].algorithm, "rsa-sha256");
		assert_int_equal(got[0].key_bits, 2048);
		assert_int_equal(got[1].status, DKIM_PASS);
		assert_string_equal(got[1].algorithm, "ed25519-sha256");
		free(m);
		/* a second From added below the signatures breaks them (over-signing) */
		m = xasprintf("%sFrom: mallory@evil.example\r\n%s", fields, own_message);
		verify(m, strlen(m), 1796680001);
		assert_int_equal(got[0].status, DKIM_FAIL);
		assert_int_equal(got[1].status, DKIM_FAIL);
		free(m);
		free(fields);
	}
	/* no key for the From domain, no single From: nothing signed */
	assert_null(sign(keys, 3, "From: a@other.test\r\n\r\nx\r\n", 8));
	assert_null(sign(keys, 3, "From: a@example.test\r\nFrom: b@example.test\r\n\r\nx\r\n", 8));
	free(rsa_rec);
	free(ed_rec);
	for (size_t i = 0; i < 3; i++)
		dkim_privkey_clear(&keys[i]);
}

static void test_later_answers_and_cancel(void **state)
{
	set_records(rfc_records, 2);
	hold = true;
	calls = 0;
	struct dkim_verify *v = dkim_verify_start_with(&fake, rfc8463_message,
						       strlen(rfc8463_message), 1528637909, done, NULL);
	assert_non_null(v);
	assert_int_equal(nheld, 2);
	assert_string_equal(held[0].name, "brisbane._domainkey.football.example.com");
	answer_held(1);
	assert_int_equal(calls, 0); /* still waiting for the first */
	answer_held(0);
	assert_int_equal(calls, 1);
	assert_int_equal(got[0].status, DKIM_PASS);
	assert_int_equal(got[1].status, DKIM_PASS);
	/* cancelled: the lookups are cancelled and done never runs */
	nheld = 0;
	calls = 0;
	v = dkim_verify_start_with(&fake, rfc8463_message, strlen(rfc8463_message), 1528637909,
				   done, NULL);
	assert_non_null(v);
	dkim_verify_cancel(v);
	assert_true(held[0].cancelled && held[1].cancelled);
	assert_int_equal(calls, 0);
}

/* With worker threads the hashes are made on one, from a copy: the
 * caller's buffer may go at once; a cancelled job frees its copy. */
static void test_on_a_worker(void **state)
{
	struct event_base *base = event_base_new();
	assert_non_null(base);
	assert_int_equal(offload_start(base, 1), 0);
	set_records(rfc_records, 2);
	calls = 0;
	char *m = xstrdup(rfc8463_message);
	struct dkim_verify *v = dkim_verify_start_with(&fake, m, strlen(m), 1528637909, done, NULL);
	assert_non_null(v);
	memset(m, 'x', strlen(m)); /* the worker has its own copy */
	free(m);
	for (int i = 0; i < 500 && calls == 0; i++)
		event_base_loop(base, EVLOOP_ONCE);
	assert_int_equal(calls, 1);
	assert_int_equal(ngot, 2);
	assert_int_equal(got[0].status, DKIM_PASS);
	assert_int_equal(got[1].status, DKIM_PASS);
	/* cancelled while the worker hashes: done never runs */
	calls = 0;
	v = dkim_verify_start_with(&fake, rfc8463_message, strlen(rfc8463_message), 1528637909,
				   done, NULL);
	dkim_verify_cancel(v);
	offload_stop();
	assert_int_equal(calls, 0);
	event_base_free(base);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_rfc8463_message_verifies),
		cmocka_unit_test(test_changes_fail),
		cmocka_unit_test(test_key_problems),
		cmocka_unit_test(test_signature_problems),
		cmocka_unit_test(test_own_signatures_verify),
		cmocka_unit_test(test_later_answers_and_cancel),
		cmocka_unit_test(test_on_a_worker),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

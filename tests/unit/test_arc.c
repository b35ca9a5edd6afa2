/* Unit tests for arc and arc_seal: chains made by dkimpy's arc_sign
 * (arc_vectors.h) validate; a changed body, a changed earlier set, broken
 * structures (a table), missing keys and DNS failures fail; posthorn's
 * own sets, on a bare message (cv=none) and on dkimpy's chain (cv=pass),
 * validate, and a chain changed before our seal passes with oldest-pass;
 * no seal where the chain failed before or was not validated
 * here; the arc= result read back from Authentication-Results; the
 * hashes on a worker, and cancel. */
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
#include "mailauth/arc.h"
#include "mailauth/arc_seal.h"
#include "mailauth/authres.h"
#include "mailauth/dkim_key.h"
#include "mailauth/dkim_sign.h"

#include "arc_vectors.h"

/* ---- a key source over a table ------------------------------------------------ */

static const char *seal_record;    /* posthorn's own key, once made */
static enum dns_status dns_answer = DNS_OK;
static bool hold;
static struct {
	dns_txt_cb cb;
	void *arg;
	bool cancelled;
} held[4];
static size_t nheld;

static const char *record_for(const char *name)
{
	if (strcmp(name, "arc._domainkey.lists.example.org") == 0 ||
	    strcmp(name, "arc._domainkey.relay.example.net") == 0)
		return arc_rsa_record;
	if (strcmp(name, "seal._domainkey.fwd.example.test") == 0)
		return seal_record;
	return NULL;
}

static dns_query_id fake_lookup(void *ctx, const char *name, dns_txt_cb cb, void *arg)
{
	if (hold) {
		assert_true(nheld < 4);
		held[nheld].cb = cb;
		held[nheld].arg = arg;
		held[nheld].cancelled = false;
		return ++nheld;
	}
	const char *text = record_for(name);
	if (dns_answer != DNS_OK) {
		cb(arg, dns_answer, NULL, 0, 0);
	} else if (!text) {
		cb(arg, DNS_NOTFOUND, NULL, 0, 0);
	} else {
		struct dns_txt t = {(char *)text, strlen(text)};
		cb(arg, DNS_OK, &t, 1, 300);
	}
	return 0;
}

static void fake_cancel(void *ctx, dns_query_id id)
{
	held[id - 1].cancelled = true;
}

static const struct dkim_key_source fake = {fake_lookup, fake_cancel, NULL};

static int calls;
static struct arc_result got;

static void done(void *arg, const struct arc_result *r)
{
	calls++;
	got = *r;
}

static void validate(const char *msg, size_t len)
{
	calls = 0;
	assert_null(arc_verify_start_with(&fake, msg, len, done, NULL));
	assert_int_equal(calls, 1);
}

/* msg with the first "from" replaced by "to" (must be there). */
static char *replaced(const char *msg, const char *from, const char *to)
{
	const char *at = strstr(msg, from);
	assert_non_null(at);
	size_t pre = (size_t)(at - msg), fl = strlen(from), tl = strlen(to);
	char *out = xmalloc(strlen(msg) - fl + tl + 1);
	memcpy(out, msg, pre);
	memcpy(out + pre, to, tl);
	strcpy(out + pre + tl, at + fl); /* sized above */
	return out;
}

static void validate_changed(const char *msg, const char *from, const char *to)
{
	char *m = replaced(msg, from, to);
	validate(m, strlen(m));
	free(m);
}

/* ---- dkimpy's chains ------------------------------------------------------------ */

static void test_dkimpy_chains_pass(void **state)
{
	validate(arc_one, strlen(arc_one));
	assert_int_equal(got.status, ARC_PASS);
	assert_int_equal(got.instances, 1);
	assert_int_equal(got.oldest_pass, 0);
	assert_string_equal(got.domain, "lists.example.org");
	validate(arc_two, strlen(arc_two));
	assert_int_equal(got.status, ARC_PASS);
	assert_int_equal(got.instances, 2);
	assert_string_equal(got.domain, "relay.example.net");
	assert_string_equal(got.reason, "");
	/* LF line ends, as a file has them, are the same message */
	char *lf = xstrdup(arc_two);
	size_t k = 0;
	for (size_t i = 0; lf[i]; i++)
		if (lf[i] != '\r')
			lf[k++] = lf[i];
	validate(lf, k);
	assert_int_equal(got.status, ARC_PASS);
	free(lf);
	const char plain[] = "From: a@b.example\r\n\r\nno chain\r\n";
	validate(plain, strlen(plain));
	assert_int_equal(got.status, ARC_NONE);
	assert_int_equal(got.instances, 0);
}

static void test_changes_fail(void **state)
{
	validate_changed(arc_two, "with spaces", "with changes");
	assert_int_equal(got.status, ARC_FAIL);
	assert_non_null(strstr(got.reason, "ARC-Message-Signature i=2: body hash"));
	validate_changed(arc_two, "Subject: ARC test", "Subject: ARC tost");
	assert_int_equal(got.status, ARC_FAIL);
	assert_non_null(strstr(got.reason, "ARC-Message-Signature i=2: signature did not"));
	/* the results an earlier hop recorded, changed: the seals break */
	validate_changed(arc_two, "i=1; lists.example.org; spf=pass", "i=1; lists.example.org; spf=none");
	assert_int_equal(got.status, ARC_FAIL);
	assert_non_null(strstr(got.reason, "ARC-Seal i=2: signature did not verify"));
	/* the Authentication-Results field outside the chain is no part of it */
	validate_changed(arc_two, "Authentication-Results: relay.example.net; arc=pass",
			 "Authentication-Results: relay.example.net; arc=fail");
	assert_int_equal(got.status, ARC_PASS);
}

/* Broken structures (RFC 8617 §5.2 steps 2 and 3). */
static void test_structure(void **state)
{
	static const struct {
		const char *from, *to, *why;
	} cases[] = {
	    {"ARC-Seal: i=1; cv=none", "ARC-Seal: i=1; cv=pass", "ARC-Seal i=1 says cv=pass"},
	    {"ARC-Seal: i=2; cv=pass", "ARC-Seal: i=2; cv=none", "ARC-Seal i=2 says cv=none"},
	    {"ARC-Seal: i=2; cv=pass", "ARC-Seal: i=2; cv=fail", "cv=fail at i=2"},
	    {"ARC-Seal: i=2; cv=pass", "ARC-Seal: i=2; cv=maybe", "without a valid cv="},
	    {"ARC-Seal: i=2;", "ARC-Seal: i=1;", "two ARC-Seal fields of i=1"},
	    {"ARC-Seal: i=2;", "ARC-Seal: i=3;", "i=2 is incomplete"},
	    {"ARC-Seal: i=2;", "ARC-Seal: i=0;", "ARC-Seal without a valid i="},
	    {"ARC-Seal: i=2;", "ARC-Seal: i=51;", "ARC-Seal without a valid i="},
	    {"ARC-Seal: i=2;", "ARC-Seal: i=02;", "ARC-Seal without a valid i="},
	    {"ARC-Message-Signature: i=2;", "ARC-Message-Signature: i=x;",
	     "ARC-Message-Signature without"},
	    {"ARC-Authentication-Results: i=2;", "ARC-Authentication-Results: i=2 ",
	     "ARC-Authentication-Results without"},
	    {"ARC-Authentication-Results: i=2", "X-Was-ARC-Authentication-Results: i=2",
	     "i=2 is incomplete"},
	};
	for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
		validate_changed(arc_two, cases[i].from, cases[i].to);
		assert_int_equal(got.status, ARC_FAIL);
		if (!strstr(got.reason, cases[i].why))
			fail_msg("case %zu: reason \"%s\", wanted \"%s\"", i, got.reason, cases[i].why);
	}
}

static void test_keys(void **state)
{
	validate_changed(arc_two, "d=relay.example.net; s=arc", "d=relay.example.net; s=gone");
	assert_int_equal(got.status, ARC_FAIL);
	assert_non_null(strstr(got.reason, "ARC-Seal i=2: no key record"));
	dns_answer = DNS_TIMEOUT;
	validate(arc_one, strlen(arc_one));
	dns_answer = DNS_OK;
	assert_int_equal(got.status, ARC_FAIL);
	assert_non_null(strstr(got.reason, "key lookup"));
	validate_changed(arc_two, "ARC-Seal: i=2; cv=pass; a=rsa-sha256", "ARC-Seal: i=2; cv=pass; a=rsa-sha1");
	assert_int_equal(got.status, ARC_FAIL);
	assert_non_null(strstr(got.reason, "ARC-Seal i=2: unknown algorithm"));
}

/* ---- posthorn's seals ----------------------------------------------------------- */

static struct dkim_privkey key;

static void make_key(void)
{
	if (key.pkey)
		return;
	key.domain = xstrdup("fwd.example.test");
	key.selector = xstrdup("seal");
	key.type = DKIM_KEY_RSA;
	key.pkey = dkim_key_generate(DKIM_KEY_RSA);
	assert_non_null(key.pkey);
	key.bits = 2048;
	seal_record = dkim_key_record(key.pkey);
	assert_non_null(seal_record);
}

/* The message sealed by posthorn: the new fields on top, or NULL. */
static char *sealed(const char *msg, char *err, size_t errsz)
{
	struct dkim_sign *s = dkim_sign_new();
	size_t len = strlen(msg);
	for (size_t i = 0; i < len; i += 100) /* in pieces, as the signer reads */
		dkim_sign_feed(s, msg + i, len - i < 100 ? len - i : 100);
	char *fields = arc_seal(s, &key, "mx.fwd.example.test", 1765000200, err, errsz);
	dkim_sign_free(s);
	if (!fields)
		return NULL;
	char *out = xmalloc(strlen(fields) + len + 1);
	strcpy(out, fields);  /* sized above */
	strcat(out, msg);     /* sized above */
	free(fields);
	return out;
}

static void test_own_seals_validate(void **state)
{
	make_key();
	char err[128];
	/* a message without a chain: i=1, cv=none */
	const char bare[] = "Authentication-Results: mx.fwd.example.test;\r\n\tspf=pass "
			    "smtp.mailfrom=a@b.example\r\nFrom: A <a@b.example>\r\nTo: "
			    "list@fwd.example.test\r\nSubject: hi\r\n\r\nbody\r\n";
	char *m = sealed(bare, err, sizeof err);
	assert_non_null(m);
	assert_non_null(strstr(m, "ARC-Seal: i=1; a=rsa-sha256; t=1765000200; cv=none;"));
	assert_non_null(strstr(m, "ARC-Authentication-Results: i=1; mx.fwd.example.test;\r\n\tspf=pass"));
	validate(m, strlen(m));
	assert_int_equal(got.status, ARC_PASS);
	assert_int_equal(got.instances, 1);
	assert_string_equal(got.domain, "fwd.example.test");
	free(m);
	/* dkimpy's chain, validated here: i=3, cv=pass */
	char *in = xmalloc(strlen(arc_two) + 128);
	strcpy(in, "Authentication-Results: mx.fwd.example.test; arc=pass (i=2)\r\n"); /* fits */
	strcat(in, arc_two); /* fits */
	m = sealed(in, err, sizeof err);
	assert_non_null(m);
	assert_non_null(strstr(m, "ARC-Seal: i=3; a=rsa-sha256; t=1765000200; cv=pass;"));
	validate(m, strlen(m));
	assert_int_equal(got.status, ARC_PASS);
	assert_int_equal(got.instances, 3);
	free(m);
	/* changed before our seal: the older AMSs no longer verify, ours does
	 * and every seal does: pass, the oldest AMS that verifies is ours
	 * (RFC 8617 §5.2 step 5) */
	char *edited = replaced(in, "Subject: ARC test", "Subject: [list] ARC test");
	m = sealed(edited, err, sizeof err);
	assert_non_null(m);
	validate(m, strlen(m));
	assert_int_equal(got.status, ARC_PASS);
	assert_int_equal(got.oldest_pass, 3);
	free(m);
	free(edited);
	/* ... that we found failed: cv=fail, and the chain is over */
	char *bad = replaced(in, "arc=pass (i=2)", "arc=fail (ARC-Seal i=2)");
	m = sealed(bad, err, sizeof err);
	assert_non_null(m);
	assert_non_null(strstr(m, "ARC-Seal: i=3; a=rsa-sha256; t=1765000200; cv=fail;"));
	validate(m, strlen(m));
	assert_int_equal(got.status, ARC_FAIL);
	assert_non_null(strstr(got.reason, "cv=fail at i=3"));
	/* no seal on a chain that failed before */
	assert_null(sealed(m, err, sizeof err));
	assert_non_null(strstr(err, "cv=fail"));
	free(m);
	free(bad);
	/* no seal on a chain not validated here (no arc= of ours) */
	assert_null(sealed(arc_two, err, sizeof err));
	assert_non_null(strstr(err, "not validated"));
	/* nor on a broken one, whatever we found: the seal would sign sets
	 * that are not there (found by fuzz_arc) */
	char *gap = replaced(in, "ARC-Seal: i=1;", "X-Old-Seal: i=1;");
	char *gap_fail = replaced(gap, "arc=pass (i=2)", "arc=fail (gap)");
	assert_null(sealed(gap_fail, err, sizeof err));
	assert_non_null(strstr(err, "the chain is broken (the ARC set i=1 is incomplete)"));
	free(gap_fail);
	free(gap);
	free(in);
	/* our field with a byte that is no text is not copied (the fields go
	 * out as one string; found by fuzz_arc) */
	const char ctl[] = "Authentication-Results: mx.fwd.example.test; arc=no\x01ne\r\n"
			   "From: a@b.example\r\n\r\nbody\r\n";
	assert_null(sealed(ctl, err, sizeof err));
	assert_non_null(strstr(err, "not plain ASCII"));
}

static void test_our_result(void **state)
{
	static const struct {
		const char *field;
		int r;
		enum arc_status st;
	} cases[] = {
	    {"Authentication-Results: mx.example; spf=pass; arc=pass (i=1)\r\n", 0, ARC_PASS},
	    {"Authentication-Results: mx.example;\r\n\tarc = fail (x=1; y)\r\n", 0, ARC_FAIL},
	    {"Authentication-Results: MX.Example (c); dkim=none; ARC=None\r\n", 0, ARC_NONE},
	    {"Authentication-Results: mx.example; dkim=pass (arc=pass) header.d=a\r\n", -1, ARC_NONE},
	    {"Authentication-Results: mx.example; spf=pass smtp.mailfrom=\"arc=pass;\"\r\n", -1,
	     ARC_NONE},
	    {"Authentication-Results: other.example; arc=pass\r\n", -1, ARC_NONE},
	    {"Authentication-Results: mx.example; arc=\r\n", -1, ARC_NONE},
	};
	for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
		char msg[256];
		assert_true(bsnprintf(msg, sizeof msg, "%s%s", cases[i].field, "From: a@b\r\n\r\n"));
		struct dkim_header h;
		assert_int_equal(dkim_header_parse(msg, strlen(msg), &h), 0);
		enum arc_status st = ARC_NONE;
		int r = arc_our_result(&h, "mx.example", &st);
		dkim_header_free(&h);
		if (r != cases[i].r || (r == 0 && st != cases[i].st))
			fail_msg("case %zu: %d %d", i, r, (int)st);
	}
}

static void test_authres_field(void **state)
{
	struct arc_result r = {.status = ARC_PASS, .instances = 2, .oldest_pass = 0};
	struct authres_input in = {.authserv_id = "mx.example", .arc = &r};
	char out[512];
	assert_true(authres_build(&in, out, sizeof out));
	assert_string_equal(out, "Authentication-Results: mx.example;\r\n\tarc=pass (i=2) "
				 "header.oldest-pass=0\r\n");
	r.status = ARC_FAIL;
	xsnprintf(r.reason, sizeof r.reason, "ARC-Seal i=2: (bad)");
	assert_true(authres_build(&in, out, sizeof out));
	assert_string_equal(out, "Authentication-Results: mx.example;\r\n\tarc=fail (ARC-Seal i=2: "
				 "bad)\r\n");
	r.status = ARC_NONE;
	r.instances = 0;
	assert_true(authres_build(&in, out, sizeof out));
	assert_string_equal(out, "Authentication-Results: mx.example;\r\n\tarc=none\r\n");
}

/* ---- asynchronous -------------------------------------------------------------- */

static void test_later_answers_and_cancel(void **state)
{
	hold = true;
	nheld = 0;
	calls = 0;
	struct arc_verify *v = arc_verify_start_with(&fake, arc_one, strlen(arc_one), done, NULL);
	assert_non_null(v);
	assert_int_equal(nheld, 2); /* the AMS's key and the AS's */
	hold = false;
	held[0].cb(held[0].arg, DNS_OK, &(struct dns_txt){(char *)arc_rsa_record,
							  strlen(arc_rsa_record)}, 1, 60);
	assert_int_equal(calls, 0);
	held[1].cb(held[1].arg, DNS_OK, &(struct dns_txt){(char *)arc_rsa_record,
							  strlen(arc_rsa_record)}, 1, 60);
	assert_int_equal(calls, 1);
	assert_int_equal(got.status, ARC_PASS);
	hold = true;
	nheld = 0;
	calls = 0;
	v = arc_verify_start_with(&fake, arc_one, strlen(arc_one), done, NULL);
	arc_verify_cancel(v);
	hold = false;
	assert_true(held[0].cancelled && held[1].cancelled);
	assert_int_equal(calls, 0);
}

static void test_on_a_worker(void **state)
{
	struct event_base *base = event_base_new();
	assert_non_null(base);
	assert_int_equal(offload_start(base, 1), 0);
	calls = 0;
	char *m = xstrdup(arc_two);
	struct arc_verify *v = arc_verify_start_with(&fake, m, strlen(m), done, NULL);
	assert_non_null(v);
	memset(m, 'x', strlen(m)); /* the worker has its own copy */
	free(m);
	for (int i = 0; i < 500 && calls == 0; i++)
		event_base_loop(base, EVLOOP_ONCE);
	assert_int_equal(calls, 1);
	assert_int_equal(got.status, ARC_PASS);
	calls = 0;
	v = arc_verify_start_with(&fake, arc_two, strlen(arc_two), done, NULL);
	arc_verify_cancel(v);
	offload_stop();
	assert_int_equal(calls, 0);
	event_base_free(base);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_dkimpy_chains_pass),
		cmocka_unit_test(test_changes_fail),
		cmocka_unit_test(test_structure),
		cmocka_unit_test(test_keys),
		cmocka_unit_test(test_own_seals_validate),
		cmocka_unit_test(test_our_result),
		cmocka_unit_test(test_authres_field),
		cmocka_unit_test(test_later_answers_and_cancel),
		cmocka_unit_test(test_on_a_worker),
	};
	int r = cmocka_run_group_tests(tests, NULL, NULL);
	dkim_privkey_clear(&key);
	free((char *)seal_record);
	return r;
}

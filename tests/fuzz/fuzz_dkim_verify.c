/* libFuzzer entry point for DKIM verification and signing of untrusted
 * messages (mailauth/dkim_verify.h, mailauth/dkim_sign.h): the input is a
 * message; every DKIM-Signature in it is checked against fixed key records
 * (Ed25519 and RSA, answered at once), and done must run exactly once with
 * at most DKIM_VERIFY_SIGNATURES_MAX + 1 results of printable text.  Then
 * the message is signed with the Ed25519 key when its From is in
 * example.test, and the signed message must verify: pass. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lib/util.h"
#include "mailauth/dkim_key.h"
#include "mailauth/dkim_sign.h"
#include "mailauth/dkim_verify.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#include "harness.h"

static struct dkim_privkey key;
static char *record;

static dns_query_id lookup(void *ctx, const char *name, dns_txt_cb cb, void *arg)
{
	struct dns_txt t = {record, strlen(record)};
	if (strcmp(name, "fz._domainkey.example.test") == 0)
		cb(arg, DNS_OK, &t, 1, 60);
	else
		cb(arg, DNS_NOTFOUND, NULL, 0, 0);
	return 0;
}

static void cancel(void *ctx, dns_query_id id)
{
	CHECK(0); /* every answer comes at once */
}

static const struct dkim_key_source source = {lookup, cancel, NULL};

static int calls;
static size_t nres;
static enum dkim_status first;

static bool printable(const char *s, size_t cap)
{
	const char *end = memchr(s, '\0', cap);
	if (!end)
		return false;
	for (; s < end; s++)
		if ((unsigned char)*s < ' ' || (unsigned char)*s > '~')
			return false;
	return true;
}

static void done(void *arg, const struct dkim_result *res, size_t n)
{
	calls++;
	nres = n;
	CHECK(n <= DKIM_VERIFY_SIGNATURES_MAX + 1);
	first = n > 0 ? res[0].status : DKIM_PERMERROR;
	for (size_t i = 0; i < n; i++) {
		CHECK(printable(res[i].domain, sizeof res[i].domain));
		CHECK(printable(res[i].selector, sizeof res[i].selector));
		CHECK(printable(res[i].algorithm, sizeof res[i].algorithm));
		CHECK(printable(res[i].header_b, sizeof res[i].header_b));
		CHECK(printable(res[i].reason, sizeof res[i].reason));
		CHECK((unsigned)res[i].status <= DKIM_PERMERROR);
	}
}

static void verify(const char *msg, size_t len)
{
	calls = 0;
	CHECK(dkim_verify_start_with(&source, msg, len, 2000000000, done, NULL) == NULL);
	CHECK(calls == 1);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!key.pkey) {
		key.domain = xstrdup("example.test");
		key.selector = xstrdup("fz");
		key.type = DKIM_KEY_ED25519;
		key.pkey = dkim_key_generate(DKIM_KEY_ED25519);
		record = dkim_key_record(key.pkey);
		CHECK(key.pkey && record);
	}
	if (size > 65536)
		size = 65536;
	char *msg = malloc(size ? size : 1);
	if (!msg)
		return 0;
	memcpy(msg, data, size);
	verify(msg, size);
	size_t before = nres;

	struct dkim_sign *s = dkim_sign_new();
	dkim_sign_feed(s, msg, size);
	char err[128];
	char *fields = dkim_sign_finish(s, &key, 1, 1900000000, err, sizeof err);
	dkim_sign_free(s);
	if (fields && before < DKIM_VERIFY_SIGNATURES_MAX) {
		/* our own signature, on top: it must verify */
		size_t flen = strlen(fields);
		char *signed_msg = malloc(flen + size);
		CHECK(signed_msg != NULL);
		memcpy(signed_msg, fields, flen);
		memcpy(signed_msg + flen, msg, size);
		verify(signed_msg, flen + size);
		CHECK(nres >= 1 && first == DKIM_PASS);
		free(signed_msg);
	}
	free(fields);
	free(msg);
	return 0;
}

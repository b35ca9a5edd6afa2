/* libFuzzer entry point for ARC (mailauth/arc.h, mailauth/arc_seal.h) on
 * untrusted messages: the input is a message; its ARC sets are parsed
 * (every set found complete when the structure passes), the chain is
 * validated against one fixed RSA key record answered at once (done runs
 * exactly once, printable reason, instances within 0..50), the arc=
 * result of an Authentication-Results field is read, and the message is
 * sealed: a message that brought no chain, sealed, must validate pass. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lib/util.h"
#include "mailauth/arc.h"
#include "mailauth/arc_seal.h"
#include "mailauth/dkim_key.h"
#include "mailauth/dkim_sign.h"

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
static struct arc_result got;

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

static void done(void *arg, const struct arc_result *r)
{
	calls++;
	got = *r;
	CHECK((unsigned)r->status <= ARC_FAIL);
	CHECK(r->instances <= ARC_INSTANCE_MAX);
	CHECK(printable(r->reason, sizeof r->reason));
	CHECK(printable(r->domain, sizeof r->domain));
}

static void validate(const char *msg, size_t len)
{
	calls = 0;
	CHECK(arc_verify_start_with(&source, msg, len, done, NULL) == NULL);
	CHECK(calls == 1);
}

/* The parser alone: a sound structure has every set whole. */
static enum arc_status parse(const char *msg, size_t len)
{
	struct dkim_header h;
	if (dkim_header_parse(msg, len, &h) < 0)
		return ARC_FAIL;
	struct arc_chain *c = malloc(sizeof *c);
	CHECK(c != NULL);
	char why[ARC_REASON_MAX];
	enum arc_status st = arc_chain_parse(&h, c, why, sizeof why);
	CHECK(printable(why, sizeof why));
	if (st == ARC_PASS) {
		CHECK(c->n >= 1 && c->n <= ARC_INSTANCE_MAX);
		for (unsigned i = 1; i <= c->n; i++)
			CHECK(c->set[i].aar && c->set[i].ams && c->set[i].as);
	}
	enum arc_status ours;
	(void)arc_our_result(&h, "mx.example.test", &ours); /* -1 is an answer too */
	free(c);
	dkim_header_free(&h);
	return st;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!key.pkey) {
		key.domain = xstrdup("example.test");
		key.selector = xstrdup("fz");
		key.type = DKIM_KEY_RSA;
		key.pkey = dkim_key_generate(DKIM_KEY_RSA);
		record = dkim_key_record(key.pkey);
		CHECK(key.pkey && record);
	}
	if (size > 65536)
		size = 65536;
	char *msg = malloc(size ? size : 1);
	if (!msg)
		return 0;
	memcpy(msg, data, size);
	enum arc_status st = parse(msg, size);
	validate(msg, size);
	CHECK(st != ARC_NONE || got.status == ARC_NONE);

	struct dkim_sign *s = dkim_sign_new();
	dkim_sign_feed(s, msg, size);
	char err[128];
	char *fields = arc_seal(s, &key, "mx.example.test", 1900000000, err, sizeof err);
	dkim_sign_free(s);
	if (fields && st == ARC_NONE) {
		/* our own set, on top of a message without a chain: it must pass */
		size_t flen = strlen(fields);
		char *sealed = malloc(flen + size);
		CHECK(sealed != NULL);
		memcpy(sealed, fields, flen);
		memcpy(sealed + flen, msg, size);
		validate(sealed, flen + size);
		CHECK(got.status == ARC_PASS && got.instances == 1);
		free(sealed);
	}
	free(fields);
	free(msg);
	return 0;
}

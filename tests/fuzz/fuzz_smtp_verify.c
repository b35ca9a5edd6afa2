/* libFuzzer entry point for what a `verify { dkim yes arc yes }` server
 * does with an untrusted message (proto/smtp/smtp_verify.h): its lines held (the
 * header section, then the body for DKIM), the fields claiming our
 * authserv-id dropped (RFC 8601 §5), every DKIM-Signature verified (keys
 * answered at once: none, or a DNS failure for selectors starting with
 * "t"), the ARC chain validated with the same keys, and our
 * Authentication-Results field composed.  What goes to the
 * spool must start with our field, keep no field claiming our id, and be
 * no longer than the input's lines with CRLF plus that field; a message
 * that ends inside what is held is handled at its end.
 * Input: the message, lines separated by LF (a CR before it dropped). */
#define _GNU_SOURCE /* memmem */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "conf/conf.h"
#include "mailauth/authres.h"
#include "mailauth/dkim_verify.h"
#include "proto/smtp/smtp_verify.h"

#include "harness.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char conf_text[] = "hostname mx.example.test\n"
				"domains example.test\n"
				"server mx {\n"
				"    listen 127.0.0.1:25\n"
				"    auth { anonymous yes }\n"
				"    verify {\n"
				"        dkim yes\n"
				"        arc yes\n"
				"    }\n"
				"}\n";
static const char our_field[] = "Authentication-Results: mx.example.test;";

static dns_query_id lookup(void *ctx, const char *name, dns_txt_cb cb, void *arg)
{
	(void)ctx;
	cb(arg, name[0] == 't' ? DNS_ERROR : DNS_NOTFOUND, NULL, 0, 0);
	return 0;
}

static void cancel(void *ctx, dns_query_id id)
{
	(void)ctx;
	(void)id;
	CHECK(0); /* every answer comes at once */
}

static const struct dkim_key_source keys = {lookup, cancel, NULL};

/* No field of what is spooled claims our authserv-id but our own, first. */
static void check_header(const char *h, size_t len)
{
	CHECK(len >= sizeof our_field - 1 && memcmp(h, our_field, sizeof our_field - 1) == 0);
	size_t i = 0;
	bool first = true;
	while (i < len) {
		size_t end = i;
		do { /* the field's lines: up to a CRLF not followed by WSP */
			const char *crlf = memmem(h + end, len - end, "\r\n", 2);
			end = crlf ? (size_t)(crlf - h) + 2 : len;
		} while (end < len && (h[end] == ' ' || h[end] == '\t'));
		if (!first)
			CHECK(!authres_claims(h + i, end - i - (end - i >= 2 ? 2 : 0),
					      "mx.example.test"));
		first = false;
		i = end;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct conf *conf;
	if (size > 300000)
		return 0;
	if (!conf)
		CHECK(conf_parse_string("fuzz.conf", conf_text, "/", &conf, stderr) == 0);
	struct smtp_verify *v = smtp_verify_new(&conf->servers[0], conf, NULL, "F1", "192.0.2.1",
						true);
	CHECK(v != NULL);
	smtp_verify_set_key_source(v, &keys);
	size_t given = 0, passed = 0;
	const char *p = (const char *)data, *end = p + size;
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
		size_t len = n > 0 && p[n - 1] == '\r' ? n - 1 : n;
		given += len + 2;
		if (!smtp_verify_header_line(v, p, len))
			passed += len + 2; /* the caller's to store */
		else if (smtp_verify_header_done(v))
			CHECK(!smtp_verify_header_end(v, NULL, NULL));
		p = nl ? nl + 1 : end;
	}
	if (!smtp_verify_header_handled(v))
		CHECK(!smtp_verify_header_end(v, NULL, NULL));
	size_t hlen, rlen;
	const char *h = smtp_verify_header_out(v, &hlen);
	(void)smtp_verify_rest_out(v, &rlen);
	check_header(h, hlen);
	CHECK(hlen + rlen + passed <= given + AUTHRES_MAX);
	smtp_verify_free(v);
	return 0;
}

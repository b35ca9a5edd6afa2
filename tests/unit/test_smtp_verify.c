/* Unit tests for proto/smtp/smtp_verify: what a `verify { dkim yes }`
 * server holds of a message and writes to the spool — the whole message
 * held until its end, our Authentication-Results field on top, forged
 * ones claiming our authserv-id removed (RFC 8601 §5), dkim=none without
 * a signature, and a message over SMTP_VERIFY_HOLD_MAX decided when it
 * crosses the bound (dkim=neutral, its signatures named).  Nothing here
 * needs DNS: no lookup is started for these messages. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conf/conf.h"
#include "proto/smtp/smtp_verify.h"

static const char conf_text[] = "hostname mx.example.test\n"
				"domains example.test\n"
				"server mx {\n"
				"    listen 127.0.0.1:25\n"
				"    auth { anonymous yes }\n"
				"    verify { dkim yes }\n"
				"}\n";

static struct conf *load(void)
{
	struct conf *c = NULL;
	assert_int_equal(conf_parse_string("t.conf", conf_text, "/etc/posthorn", &c, stderr), 0);
	return c;
}

/* Feed one line as the session does: true when v took it. */
static bool feed(struct smtp_verify *v, const char *line)
{
	return smtp_verify_header_line(v, line, strlen(line));
}

/* What goes to the spool: our field and the header, then the rest. */
static char *spooled(struct smtp_verify *v)
{
	size_t hlen, rlen;
	const char *h = smtp_verify_header_out(v, &hlen);
	const char *r = smtp_verify_rest_out(v, &rlen);
	char *out = malloc(hlen + rlen + 1);
	assert_non_null(out);
	memcpy(out, h, hlen);
	memcpy(out + hlen, r, rlen);
	out[hlen + rlen] = '\0';
	return out;
}

static void test_whole_message_held_until_the_end(void **state)
{
	(void)state;
	struct conf *c = load();
	struct smtp_verify *v = smtp_verify_new(&c->servers[0], c, NULL, "S1", "192.0.2.1", true);
	assert_non_null(v);
	const char *lines[] = {"From: a@example.org", "Authentication-Results: MX.example.test;",
			       "\tdkim=pass", "Subject: x", "", "body 1", "", "body 2"};
	for (size_t i = 0; i < sizeof lines / sizeof lines[0]; i++) {
		assert_true(feed(v, lines[i]));
		assert_false(smtp_verify_header_done(v)); /* DKIM waits for the end */
	}
	assert_false(smtp_verify_header_end(v, NULL, NULL)); /* no signature: no lookup */
	assert_true(smtp_verify_header_handled(v));
	assert_false(feed(v, "after")); /* the caller's now */
	char *out = spooled(v);
	assert_string_equal(out, "Authentication-Results: mx.example.test;\r\n\tdkim=none\r\n"
				 "From: a@example.org\r\nSubject: x\r\n\r\nbody 1\r\n\r\nbody 2\r\n");
	free(out);
	smtp_verify_free(v);
	conf_free(c);
}

static void test_message_over_the_bound_is_not_verified(void **state)
{
	(void)state;
	struct conf *c = load();
	struct smtp_verify *v = smtp_verify_new(&c->servers[0], c, NULL, "S2", "192.0.2.1", true);
	assert_true(feed(v, "DKIM-Signature: v=1; a=rsa-sha256; d=example.org;"));
	assert_true(feed(v, "\ts=sel1; h=from; bh=AAAA; b=BBBB"));
	assert_true(feed(v, "DKIM-Signature: v=1; a=ed25519-sha256; d=Example.NET; s=ed; b=CC"));
	assert_true(feed(v, "From: a@example.org"));
	assert_true(feed(v, ""));
	char line[1001];
	memset(line, 'y', 1000);
	line[1000] = '\0';
	size_t held = 0, lines = 0;
	while (!smtp_verify_header_done(v)) {
		assert_true(feed(v, line));
		held += 1002;
		lines++;
		assert_true(lines < SMTP_VERIFY_HOLD_MAX / 1002 + 2); /* bounded */
	}
	assert_true(held >= SMTP_VERIFY_HOLD_MAX - 2000);
	assert_false(smtp_verify_header_end(v, NULL, NULL));
	size_t hlen;
	const char *h = smtp_verify_header_out(v, &hlen);
	const char *want = "Authentication-Results: mx.example.test;\r\n"
			   "\tdkim=neutral (message too large to verify) header.d=example.org "
			   "header.s=sel1;\r\n"
			   "\tdkim=neutral (message too large to verify) header.d=example.net "
			   "header.s=ed\r\n";
	assert_true(hlen > strlen(want));
	assert_memory_equal(h, want, strlen(want));
	size_t rlen;
	(void)smtp_verify_rest_out(v, &rlen);
	assert_int_equal(rlen, 2 + held); /* the empty line and every body line so far */
	smtp_verify_free(v);
	conf_free(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_whole_message_held_until_the_end),
		cmocka_unit_test(test_message_over_the_bound_is_not_verified),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

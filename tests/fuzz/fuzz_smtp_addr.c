/* libFuzzer entry point for smtp_addr: the arguments of MAIL and RCPT
 * (RFC 5321 §4.1.2 paths, quoted local parts, address literals, source
 * routes, ESMTP parameters) and bare addresses as aliases and user names
 * use them.  Checks what the session relies on: the RFC limits hold for
 * every accepted path, the strings are clean C strings, keywords are
 * upper case, and an accepted path written back as <text> parses again to
 * the same address (what the spool stores is what was accepted).  The
 * xtext value of MAIL's AUTH= parameter (RFC 4954 §5) decodes to <> or to
 * a mailbox that passes the same checks.
 *
 * Input: byte 0 = mode (bit 0: RCPT, bit 1: bare address, bit 2: AUTH=
 * value), then the argument text (cut at the first NUL, as the session's
 * lines are). */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/smtp/smtp_addr.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#include "harness.h"

static void check_addr(const struct smtp_addr *a, bool is_rcpt)
{
	CHECK(a->text != NULL);
	if (a->null) {
		CHECK(!is_rcpt && a->local == NULL && a->domain == NULL && a->text[0] == '\0');
		return;
	}
	CHECK(a->local && a->local_unquoted);
	CHECK(strlen(a->local) <= SMTP_LOCAL_MAX);
	CHECK(strlen(a->local_unquoted) <= strlen(a->local));
	if (a->domain) {
		CHECK(strlen(a->domain) <= SMTP_DOMAIN_MAX);
		CHECK(a->domain[0] != '\0');
		CHECK(a->literal == (a->domain[0] == '['));
		char *norm = smtp_domain_normalize(a->domain);
		CHECK(norm != NULL && strlen(norm) <= strlen(a->domain));
		free(norm);
	} else {
		CHECK(is_rcpt);  /* only the bare <postmaster> has no domain */
	}
	CHECK(strlen(a->text) + 2 <= SMTP_PATH_MAX);
	for (const char *p = a->text; *p; p++)
		CHECK((unsigned char)*p >= 0x20 && *p != 0x7f);
}

static void check_params(const struct smtp_param *params, size_t n)
{
	CHECK(n <= SMTP_PARAMS_MAX);
	for (size_t i = 0; i < n; i++) {
		CHECK(params[i].keyword && params[i].keyword[0]);
		for (const char *p = params[i].keyword; *p; p++)
			CHECK(!(*p >= 'a' && *p <= 'z'));
	}
}

/* <text> as a path again: the same address. */
static void check_roundtrip(const struct smtp_addr *a, bool is_rcpt)
{
	char arg[SMTP_PATH_MAX + 16];
	snprintf(arg, sizeof arg, "%s<%s>", is_rcpt ? "TO:" : "FROM:", a->text);
	struct smtp_addr b;
	struct smtp_param params[SMTP_PARAMS_MAX];
	size_t n = 0;
	CHECK(smtp_addr_parse_arg(arg, is_rcpt, &b, params, &n) == SMTP_ADDR_OK);
	CHECK(n == 0 && b.null == a->null && strcmp(b.text, a->text) == 0);
	CHECK(!b.route_stripped && b.literal == a->literal);
	/* a stripped source route may have held the only non-ASCII octets */
	CHECK(b.utf8 == a->utf8 || (a->route_stripped && !b.utf8));
	if (!a->null) {
		CHECK(strcmp(b.local, a->local) == 0);
		CHECK(strcmp(b.local_unquoted, a->local_unquoted) == 0);
		CHECK((a->domain == NULL) == (b.domain == NULL));
		CHECK(!a->domain || strcmp(a->domain, b.domain) == 0);
	}
	smtp_addr_clear(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1 || size > 4096)
		return 0;
	unsigned mode = data[0];
	char *s = malloc(size);
	CHECK(s != NULL);
	memcpy(s, data + 1, size - 1);
	s[size - 1] = '\0';

	struct smtp_addr a;
	memset(&a, 0x5a, sizeof a);
	if (mode & 4) {
		enum smtp_addr_result r = smtp_addr_parse_auth_param(s, &a);
		CHECK(r == SMTP_ADDR_OK || r == SMTP_ADDR_BAD_PARAM);
		if (r == SMTP_ADDR_OK) {
			check_addr(&a, false);
			CHECK(a.null || a.domain != NULL);
			smtp_addr_clear(&a);
		} else {
			CHECK(a.text == NULL && a.local == NULL && a.domain == NULL);
		}
	} else if (mode & 2) {
		if (smtp_addr_parse(s, &a) == SMTP_ADDR_OK) {
			check_addr(&a, false);
			smtp_addr_clear(&a);
		}
	} else {
		bool is_rcpt = mode & 1;
		struct smtp_param params[SMTP_PARAMS_MAX];
		size_t n = 12345;
		enum smtp_addr_result r = smtp_addr_parse_arg(s, is_rcpt, &a, params, &n);
		CHECK(r >= SMTP_ADDR_OK && r <= SMTP_ADDR_NULL_NOT_ALLOWED);
		if (r == SMTP_ADDR_OK) {
			check_addr(&a, is_rcpt);
			check_params(params, n);
			check_roundtrip(&a, is_rcpt);
			smtp_params_clear(params, n);
			smtp_addr_clear(&a);
		}
	}
	free(s);
	return 0;
}

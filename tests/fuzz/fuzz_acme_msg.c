/* libFuzzer entry point for what an ACME server answers (acme_msg.c, on
 * top of jansson): a directory, an order, an authorization and a problem
 * document (RFC 8555 §7.1, §6.7), the same bytes read as each.  Checks:
 * every kept URL is https, printable and bounded, a kept token is
 * base64url, the problem text printable and terminated. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "harness.h"
#include "net/acme_msg.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_url(const char *u, bool may_be_empty)
{
	size_t n = strnlen(u, ACME_URL_MAX);
	CHECK(n < ACME_URL_MAX);
	if (n == 0) {
		CHECK(may_be_empty);
		return;
	}
	CHECK(strncmp(u, "https://", 8) == 0);
	for (size_t i = 0; i < n; i++)
		CHECK((unsigned char)u[i] > 0x20 && (unsigned char)u[i] < 0x7f);
}

static void check_printable(const char *s, size_t cap)
{
	size_t n = strnlen(s, cap);
	CHECK(n < cap);
	for (size_t i = 0; i < n; i++)
		CHECK((unsigned char)s[i] >= 0x20 && (unsigned char)s[i] < 0x7f);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *body = (const char *)data;
	char err[256];
	struct acme_directory d;
	if (acme_parse_directory(body, size, &d, err, sizeof err) == 0) {
		check_url(d.new_nonce, false);
		check_url(d.new_account, false);
		check_url(d.new_order, false);
	}
	struct acme_order o;
	if (acme_parse_order(body, size, &o, err, sizeof err) == 0) {
		CHECK(o.status != ACME_ST_UNKNOWN);
		check_url(o.finalize, false);
		check_url(o.certificate, true);
		CHECK(o.nauthz >= 1 && o.nauthz <= ACME_AUTHZ_MAX);
		for (size_t i = 0; i < o.nauthz; i++)
			check_url(o.authz[i], false);
		acme_order_free(&o);
	} else {
		CHECK(o.authz == NULL);
	}
	struct acme_authz z;
	const char *type = size % 2 ? "http-01" : "tls-alpn-01";
	if (acme_parse_authz(body, size, type, &z, err, sizeof err) == 0) {
		check_printable(z.name, sizeof z.name);
		check_printable(z.error, sizeof z.error);
		if (z.has_challenge) {
			check_url(z.challenge_url, false);
			size_t n = strnlen(z.token, sizeof z.token);
			CHECK(n > 0 && n <= ACME_TOKEN_MAX);
			CHECK(strspn(z.token, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
					      "0123456789-_") == n);
		}
	}
	char problem[ACME_PROBLEM_MAX];
	(void)acme_parse_problem(body, size, problem, sizeof problem);
	check_printable(problem, sizeof problem);
	(void)acme_problem_is_bad_nonce(body, size);
	return 0;
}

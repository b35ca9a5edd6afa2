/* libFuzzer entry point for SPF record syntax and macro expansion
 * (mailauth/spf_record.h): TXT records come from any DNS zone a sender
 * names.  A record parses or is refused without reading past its length;
 * a parsed record has at most SPF_TERMS_MAX terms with prefix lengths in
 * range; every domain-spec in it expands, or is refused, within its
 * bounds, and an expanded name is never over SPF_NAME_MAX. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>

#include "mailauth/spf_record.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#include "harness.h"

static void expand_all(const struct spf_record *r)
{
	uint8_t ip[16] = {192, 0, 2, 1};
	struct spf_macro_vars v = {
		.sender = "user@example.com", .local = "user", .sender_domain = "example.com",
		.domain = "example.com", .ip = ip, .family = AF_INET, .helo = "helo.example.com",
		.ptr = "host.example.com", .receiver = "mx.example.org", .now = 1,
	};
	char name[SPF_NAME_MAX + 1];
	for (size_t i = 0; i < r->nterms; i++) {
		CHECK(r->terms[i].cidr4 <= 32 && r->terms[i].cidr6 <= 128);
		if (r->terms[i].domain_spec &&
		    spf_expand_domain(r->terms[i].domain_spec, &v, name) == SPF_MACRO_OK)
			CHECK(strlen(name) <= SPF_NAME_MAX);
	}
	if (r->redirect && spf_expand_domain(r->redirect, &v, name) == SPF_MACRO_OK)
		CHECK(strlen(name) <= SPF_NAME_MAX);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct spf_record r;
	char why[128];
	if (spf_record_parse((const char *)data, size, &r, why, sizeof why)) {
		CHECK(r.nterms <= SPF_TERMS_MAX);
		expand_all(&r);
		spf_record_free(&r);
	}
	/* the input as an explanation string */
	uint8_t ip[16] = {0x20, 0x01, 0x0d, 0xb8};
	struct spf_macro_vars v = {
		.sender = "a@b.example", .local = "a", .sender_domain = "b.example",
		.domain = "b.example", .ip = ip, .family = AF_INET6, .helo = "h.example",
		.ptr = NULL, .receiver = "r.example", .now = 2,
	};
	char out[256];
	if (spf_macro_expand((const char *)data, size, &v, true, out, sizeof out) == SPF_MACRO_OK)
		CHECK(strlen(out) < sizeof out);
	return 0;
}

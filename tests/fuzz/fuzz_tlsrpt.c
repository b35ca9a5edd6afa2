/* libFuzzer entry point for the "_smtp._tls" TXT record (net/tlsrpt.h),
 * which comes from whoever runs the receiving domain.  Checks: a record
 * that parses names 1 to TLSRPT_RUA_MAX destinations, each a non-empty
 * printable URI within its bound, a mailto one holding an '@'; an https
 * one's host, when taken, is a non-empty name that fits, with a port. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "net/tlsrpt.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#include "harness.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct tlsrpt_rua rua[TLSRPT_RUA_MAX];
	size_t n = 0;
	if (!tlsrpt_record_parse((const char *)data, size, rua, &n))
		return 0;
	CHECK(n >= 1 && n <= TLSRPT_RUA_MAX);
	for (size_t i = 0; i < n; i++) {
		size_t len = strnlen(rua[i].uri, sizeof rua[i].uri);
		CHECK(len > 0 && len < sizeof rua[i].uri);
		for (size_t k = 0; k < len; k++)
			CHECK((unsigned char)rua[i].uri[k] > 0x20 && (unsigned char)rua[i].uri[k] < 0x7f);
		CHECK(rua[i].https || strchr(rua[i].uri, '@') != NULL);
		char host[64];
		unsigned short port = 0;
		if (rua[i].https && tlsrpt_https_target(rua[i].uri, host, sizeof host, &port))
			CHECK(host[0] != '\0' && strlen(host) < sizeof host && port > 0 &&
			      !strchr(host, '@') && !strchr(host, '/'));
	}
	return 0;
}

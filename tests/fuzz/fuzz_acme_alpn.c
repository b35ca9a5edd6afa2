/* libFuzzer entry point for the ClientHello extensions acme_alpn.c reads
 * from any TLS client (RFC 6066 §3 server_name, RFC 7301 §3.1 ALPN):
 * the name found is terminated, bounded and has no NUL inside it; only
 * the exact one-entry list acme-tls/1 counts as a validation. */
#define _GNU_SOURCE /* memmem */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "harness.h"
#include "net/acme_alpn.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char name[64];
	if (acme_alpn_sni(data, size, name, sizeof name)) {
		size_t n = strnlen(name, sizeof name);
		CHECK(n > 0 && n < sizeof name);
		CHECK(memmem(data, size, name, n) != NULL);
	}
	if (acme_alpn_only_acme(data, size))
		CHECK(size == 13 && memcmp(data + 3, ACME_ALPN_PROTOCOL, 10) == 0);
	return 0;
}

/* libFuzzer entry point for what a DNS block list sends that reaches a
 * client (RFC 5782): the TXT text made fit for a reply line, and the
 * refusal built from it; and the query name of any address under a zone.
 * Checks: the text is printable ASCII, within its buffer, a cut marked
 * with "..."; the refusal fits an SMTP reply line (RFC 5321 §4.5.3.1.5);
 * a query name ends in the zone.
 *
 * Input: byte 0 = the output size for the text (1..255), bytes 1..16 an
 * IPv6 address, the rest the TXT text (its first 63 bytes also a zone). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "harness.h"
#include "net/dnsbl.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_clean(const char *text, size_t len, size_t outsz)
{
	char out[256];
	memset(out, 'X', sizeof out);
	dnsbl_reason_clean(text, len, out, outsz);
	size_t n = strlen(out);
	CHECK(n < outsz);
	CHECK(out[outsz - 1] == '\0' || n < outsz - 1);
	for (size_t i = 0; i < n; i++)
		CHECK(out[i] >= 0x20 && out[i] < 0x7f);
	if (len > outsz - 1 && outsz > 4)
		CHECK(n >= 3 && memcmp(out + n - 3, "...", 3) == 0);
	if (len <= outsz - 1)
		CHECK(n == len);
}

static void check_query_name(const uint8_t addr[16], const char *zone)
{
	struct sockaddr_in6 sa6 = {.sin6_family = AF_INET6};
	memcpy(&sa6.sin6_addr, addr, 16);
	char name[DNSBL_QUERY_MAX];
	if (dnsbl_query_name((struct sockaddr *)&sa6, zone, name, sizeof name)) {
		size_t n = strlen(name), z = strlen(zone);
		CHECK(n > z && strcmp(name + n - z, zone) == 0 && name[n - z - 1] == '.');
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 17 || size > 64 * 1024)
		return 0;
	size_t outsz = data[0] ? data[0] : 1;
	const char *text = (const char *)data + 17;
	size_t len = size - 17;
	check_clean(text, len, outsz);
	char reason[DNSBL_REASON_MAX];
	dnsbl_reason_clean(text, len, reason, sizeof reason);
	char refusal[DNSBL_REFUSAL_MAX];
	dnsbl_refusal_text("2001:db8::ffff:ffff:ffff:ffff", /* the longest form */
			   "a-zone-of-sixty-three-bytes-for-the-longest-name.bl.example.test", reason,
			   refusal, sizeof refusal);
	CHECK(strlen("554 5.7.1 ") + strlen(refusal) + 2 <= 512);
	char zone[64];
	size_t z = len < sizeof zone - 1 ? len : sizeof zone - 1;
	memcpy(zone, text, z);
	zone[z] = '\0';
	check_query_name(data + 1, zone);
	return 0;
}

/* libFuzzer entry point for DMARC records (mailauth/dmarc.h): TXT records
 * from the zone of any From domain, and the From header field that any
 * sender writes.  A record is parsed or refused without reading past its
 * length, and a parsed one holds values in range only; a From domain
 * found fits its buffer and has a dot. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "mailauth/dmarc.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#include "harness.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char domain[64];
	if (dmarc_from_domain((const char *)data, size, domain, sizeof domain))
		CHECK(strlen(domain) > 0 && strlen(domain) < sizeof domain && strchr(domain, '.'));
	struct dmarc_record r;
	char why[64];
	if (!dmarc_record_parse((const char *)data, size, &r, why, sizeof why))
		return 0;
	CHECK(r.pct <= 100);
	CHECK(r.p <= DMARC_POLICY_REJECT && r.sp <= DMARC_POLICY_REJECT);
	CHECK(r.adkim <= DMARC_ALIGN_STRICT && r.aspf <= DMARC_ALIGN_STRICT);
	return 0;
}

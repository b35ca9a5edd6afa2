/* libFuzzer entry point for imap_catenate.c's IMAP URL parser (RFC 5092
 * relative URLs in APPEND's CATENATE, RFC 4469): whatever a client sends,
 * an accepted URL names a mailbox without control characters and a UID,
 * and its section's part numbers stay within their array. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "harness.h"
#include "proto/imap/imap_catenate.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct imap_url u;
	if (!imap_url_parse((const char *)data, size, &u))
		return 0;
	CHECK(u.mailbox && u.mailbox[0] != '\0' && u.uid > 0);
	for (const char *p = u.mailbox; *p; p++)
		CHECK((unsigned char)*p >= 0x20 && *p != 0x7f);
	CHECK(u.section.nparts <= MESSAGE_SECTION_PARTS_MAX);
	imap_url_free(&u);
	return 0;
}

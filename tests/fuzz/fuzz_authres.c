/* libFuzzer entry point for reading Authentication-Results header fields
 * (mailauth/authres.h): any sender writes them.  The authserv-id found
 * fits its buffer, and a field that claims posthorn's id really starts
 * with the field name. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>

#include "mailauth/authres.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#include "harness.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char id[32];
	if (authres_authserv_id((const char *)data, size, id, sizeof id))
		CHECK(strlen(id) > 0 && strlen(id) < sizeof id);
	if (authres_claims((const char *)data, size, "mx.example.org"))
		CHECK(size >= 22 && strncasecmp((const char *)data, "Authentication-Results", 22) == 0);
	return 0;
}

/* libFuzzer entry point for mailbox names between modified UTF-7 and
 * UTF-8 (imap_utf7.c, RFC 3501 §5.1.3, RFC 6855): both directions on any
 * bytes.  Checks: what decodes encodes back to the same octets (one name,
 * one encoding), and what encodes decodes back to the input.
 *
 * Input: a name (cut at its first NUL). */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "proto/imap/imap_utf7.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *in = malloc(size + 1);
	CHECK(in != NULL);
	memcpy(in, data, size);
	in[size] = '\0';
	char a[IMAP_UTF7_NAME_SIZE], b[IMAP_UTF7_NAME_SIZE];
	if (imap_utf7_decode(in, a, sizeof a) && imap_utf7_encode(a, b, sizeof b))
		CHECK(strcmp(b, in) == 0);
	if (imap_utf7_encode(in, a, sizeof a)) {
		CHECK(imap_utf7_decode(a, b, sizeof b));
		CHECK(strcmp(b, in) == 0);
	}
	free(in);
	return 0;
}

/* libFuzzer entry point for imap_binary.c's readers of message octets a
 * sender chose (RFC 2045 §6): the Content-Transfer-Encoding of a MIME
 * header and the base64 and quoted-printable decoders behind FETCH BINARY
 * (RFC 3516).  Decoding never writes past its bound: base64 shrinks,
 * quoted-printable grows at most LF -> CRLF. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "harness.h"
#include "proto/imap/imap_binary.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *in = (const char *)data;
	enum imap_cte cte = imap_binary_cte(in, size);
	CHECK(cte == IMAP_CTE_IDENTITY || cte == IMAP_CTE_BASE64 || cte == IMAP_CTE_QP ||
	      cte == IMAP_CTE_UNKNOWN);
	size_t n = 0;
	char *out = imap_binary_decode(IMAP_CTE_BASE64, in, size, &n);
	CHECK(n <= size * 3 / 4 + 1);
	free(out);
	out = imap_binary_decode(IMAP_CTE_QP, in, size, &n);
	CHECK(n <= 2 * size);
	free(out);
	return 0;
}

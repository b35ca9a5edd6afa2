/* libFuzzer entry point for the PROXY protocol header parser (net/proxy.h):
 * untrusted bytes from whoever connects to a `proxy` listener.  Every
 * prefix of the input is parsed as if it were all that had arrived so
 * far, and the answers must agree: needing more until a verdict, then
 * the same verdict for every longer prefix; a header never longer than
 * what was there nor than PROXY_HEADER_MAX; a client address of a family
 * the rules know; never needing more once PROXY_HEADER_MAX octets are
 * there. */
#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "net/proxy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#include "harness.h"

static void check_header(const struct proxy_header *h, size_t len)
{
	CHECK(h->length > 0 && h->length <= len && h->length <= PROXY_HEADER_MAX);
	CHECK(h->version == 1 || h->version == 2);
	if (h->version == 1)
		CHECK(h->length <= PROXY_V1_MAX);
	if (h->local)
		return;
	CHECK((h->src.ss_family == AF_INET && h->srclen == sizeof(struct sockaddr_in)) ||
	      (h->src.ss_family == AF_INET6 && h->srclen == sizeof(struct sockaddr_in6)));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > PROXY_HEADER_MAX + 64)
		size = PROXY_HEADER_MAX + 64;
	enum proxy_status verdict = PROXY_NEED_MORE;
	struct proxy_header first;
	const char *first_why = NULL;
	memset(&first, 0, sizeof first);
	for (size_t len = 0; len <= size; len++) {
		struct proxy_header h;
		const char *why;
		enum proxy_status st = proxy_parse(data, len, &h, &why);
		if (len >= PROXY_HEADER_MAX)
			CHECK(st != PROXY_NEED_MORE);
		if (verdict == PROXY_NEED_MORE) {
			verdict = st;
			first = h;
			first_why = why;
		}
		CHECK(st == verdict);
		if (st == PROXY_DONE) {
			check_header(&h, len);
			CHECK(why == NULL && memcmp(&h, &first, sizeof h) == 0);
		} else if (st == PROXY_BAD) {
			CHECK(why != NULL && strcmp(why, first_why) == 0);
		} else {
			CHECK(why == NULL);
		}
	}
	return 0;
}

/* libFuzzer entry point for the maildirsize text (quota.c, Maildir++; a
 * file in the user's Maildir, which the user may write): its parser on
 * any bytes.  Checks: a text that parses parses the same again; the
 * comparison with its limit never wraps around (adding nothing to a usage
 * within the limit is never over it, and adding UINT64_MAX octets to any
 * usage is over a byte limit).
 *
 * Input: the file's text. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "harness.h"
#include "store/quota.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct quota_limit l, l2;
	struct quota_usage u, u2;
	if (quota_parse((const char *)data, size, &l, &u) < 0)
		return 0;
	CHECK(quota_parse((const char *)data, size, &l2, &u2) == 0);
	CHECK(l.bytes == l2.bytes && l.messages == l2.messages);
	CHECK(u.bytes == u2.bytes && u.messages == u2.messages);
	bool within = (!l.bytes || u.bytes <= l.bytes) && (!l.messages || u.messages <= l.messages);
	CHECK(quota_exceeded(&l, &u, 0, 0) == !within);
	if (l.bytes)
		CHECK(quota_exceeded(&l, &u, UINT64_MAX, 0));
	return 0;
}

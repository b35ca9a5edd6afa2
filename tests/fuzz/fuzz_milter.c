/* libFuzzer entry point for the milter reply parser (filter/milter_proto.h)
 * and the header block reader of milter_msg.h: bytes from a mail filter,
 * which posthorn never trusts.  The input is read as a stream of replies
 * until one is incomplete or garbage; every reply taken must lie inside
 * the input, be at least a header long, and have its strings NUL-ended
 * inside it; a custom reply text must pass milter_reply_text_ok.  The same
 * bytes as a message's header block are parsed, changed as a filter would
 * change them and written out again. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "filter/milter_msg.h"
#include "filter/milter_proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#include "harness.h"

static bool inside(const void *p, const uint8_t *buf, size_t len)
{
	return (const uint8_t *)p >= buf && (const uint8_t *)p < buf + len;
}

static void check_string(const char *s, const uint8_t *buf, size_t len)
{
	if (!s)
		return;
	CHECK(inside(s, buf, len));
	CHECK(memchr(s, '\0', (size_t)(buf + len - (const uint8_t *)s)) != NULL);
}

static void check_replies(const uint8_t *data, size_t size)
{
	size_t at = 0;
	for (int n = 0; n < 10000 && at < size; n++) {
		struct milter_reply r;
		size_t used = 0;
		const char *why = NULL;
		enum milter_parse st = milter_reply_parse(data + at, size - at, &used, &r, &why);
		if (st == MILTER_PARSE_BAD) {
			CHECK(why != NULL);
			return;
		}
		if (st == MILTER_PARSE_NEED_MORE)
			return;
		CHECK(used >= 5 && used <= size - at && used <= MILTER_PACKET_MAX + 4);
		check_string(r.s1, data + at, used);
		check_string(r.s2, data + at, used);
		if (r.cmd == MILTER_R_REPLYCODE)
			CHECK(r.s1 && milter_reply_text_ok(r.s1));
		if (r.cmd == MILTER_R_REPLBODY && r.len)
			CHECK(inside(r.data, data + at, used) && r.len < used);
		at += used;
	}
}

static int count_out(void *arg, const void *d, size_t len)
{
	*(size_t *)arg += len;
	return 0;
}

static void check_headers(const uint8_t *data, size_t size)
{
	struct milter_headers h;
	if (milter_headers_parse((const char *)data, size, true, &h) < 0)
		return;
	CHECK(h.body_offset >= 0 && (size_t)h.body_offset <= size);
	milter_headers_insert(&h, 0, "X-First", "one");
	milter_headers_add(&h, "X-Last", "two\n\tfolded");
	milter_headers_change(&h, "Subject", 1, "");
	milter_headers_change(&h, "X-First", 1, "changed");
	size_t out = 0;
	CHECK(milter_headers_write(&h, count_out, &out) == 0 && out >= 2);
	CHECK(milter_headers_has(&h, "x-first", "CHANGED"));
	milter_headers_free(&h);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	check_replies(data, size);
	check_headers(data, size);
	return 0;
}

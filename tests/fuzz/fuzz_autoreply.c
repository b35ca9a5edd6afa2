/* libFuzzer entry point for the out-of-office reply's parsers: the header
 * of a message delivered to a user (untrusted: anybody can send it) with
 * the rules that decide on a reply and the reply composed from it, and the
 * vacation setting's file.  Checks: the reply is text with CRLF line ends
 * only, its header lines are at most 998 bytes, it carries
 * Auto-Submitted: auto-replied, and a setting that parses formats back to
 * the same setting.
 *
 * Input: byte 0 = mode (bit 0: a setting file instead of a header), then
 * the bytes. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "queue/autoreply.h"
#include "store/vacation.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_reply(const char *r, size_t len)
{
	CHECK(r != NULL);
	CHECK(strlen(r) == len);
	CHECK(strstr(r, "\r\nAuto-Submitted: auto-replied\r\n") != NULL);
	const char *body = strstr(r, "\r\n\r\n");
	CHECK(body != NULL);
	size_t line = 0;
	for (size_t i = 0; i < len; i++) {
		if (r[i] == '\n') {
			CHECK(i > 0 && r[i - 1] == '\r');
			line = 0;
			continue;
		}
		if (r[i] == '\r')
			CHECK(i + 1 < len && r[i + 1] == '\n');
		if (r + i < body)
			CHECK(++line <= 998);
	}
}

static void fuzz_header(const char *text, size_t len)
{
	struct autoreply_header h;
	autoreply_header_parse(text, len, &h);
	const char *addrs[2] = {"bob@example.test", NULL};
	const char *why = autoreply_refusal("carol@example.net", addrs, 2, &h);
	CHECK(why == NULL || *why);
	struct autoreply_msg m = {.from = "bob@example.test", .to = "carol@example.net",
				  .subject = NULL, .text = "Away.\n", .message_id = "<r@example.test>",
				  .now = 1767225600, .orig = &h};
	size_t n;
	char *r = autoreply_compose(&m, &n);
	check_reply(r, n);
	free(r);
	m.subject = "Abwesend \xc3\xbc\xc3\xbc\xc3\xbc\xc3\xbc\xc3\xbc\xc3\xbc\xc3\xbc\xc3\xbc"
		    "\xc3\xbc\xc3\xbc\xc3\xbc\xc3\xbc\xc3\xbc\xc3\xbc\xc3\xbc\xc3\xbc\xc3\xbc";
	r = autoreply_compose(&m, &n);
	check_reply(r, n);
	free(r);
	autoreply_header_clear(&h);
}

static void fuzz_setting(const char *text, size_t len)
{
	struct vacation v;
	char err[256];
	if (vacation_parse(text, len, &v, err, sizeof err) < 0) {
		CHECK(err[0] != '\0');
		return;
	}
	size_t flen;
	char *again = vacation_format(&v, &flen);
	struct vacation w;
	CHECK(vacation_parse(again, flen, &w, err, sizeof err) == 0);
	CHECK(v.on == w.on && v.days == w.days && strcmp(v.until, w.until) == 0);
	CHECK((v.subject == NULL) == (w.subject == NULL));
	CHECK(!v.subject || strcmp(v.subject, w.subject) == 0);
	CHECK(strcmp(v.message, w.message) == 0);
	free(again);
	vacation_clear(&w);
	vacation_clear(&v);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1 || size > 128 * 1024)
		return 0;
	const char *text = (const char *)data + 1;
	if (data[0] & 1)
		fuzz_setting(text, size - 1);
	else
		fuzz_header(text, size - 1);
	return 0;
}

/* libFuzzer entry point for what the outbound client reads from remote
 * SMTP servers (smtp_client.c): multi-line replies (RFC 5321 §4.2), their
 * enhanced status codes (RFC 3463) and the EHLO keywords; and the
 * dot-stuffing of message text it sends (RFC 5321 §4.5.2).  Checks: the
 * kept text stays printable and bounded, a status is "C.S.D" of the
 * reply's class, and un-stuffing the stuffed text gives the text back.
 *
 * Input: reply lines separated by LF (one reply after another), then
 * after a 0xff octet the message text to stuff. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "queue/smtp_client.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_reply(const struct smtp_client_reply *r)
{
	size_t n = strnlen(r->text, sizeof r->text);
	CHECK(n < sizeof r->text);
	for (size_t i = 0; i < n; i++)
		CHECK((unsigned char)r->text[i] >= 0x20 && (unsigned char)r->text[i] < 0x7f);
	char st[SMTP_STATUS_MAX];
	smtp_client_reply_status(r, st, sizeof st);
	CHECK((st[0] == '2' || st[0] == '4' || st[0] == '5') && st[1] == '.');
	/* the class of the code; 3xx (and no code yet) count as temporary */
	unsigned cls = r->code / 100;
	CHECK(st[0] == (cls == 2 || cls == 5 ? (char)('0' + cls) : '4'));
}

static void check_stuffing(const uint8_t *d, size_t n)
{
	char *out = malloc(2 * n + 1);
	CHECK(out != NULL);
	bool bol = true;
	/* in two pieces: the state carries over */
	size_t half = n / 2;
	size_t w = smtp_client_dot_stuff((const char *)d, half, out, &bol);
	w += smtp_client_dot_stuff((const char *)d + half, n - half, out + w, &bol);
	CHECK(w <= 2 * n);
	/* undo: a '.' at the start of a line was doubled */
	size_t k = 0;
	bool at_bol = true;
	for (size_t i = 0; i < w; i++) {
		if (at_bol && out[i] == '.') {
			CHECK(i + 1 < w && out[i + 1] == '.');
			i++;
		}
		CHECK(k < n && out[i] == (char)d[k]);
		k++;
		at_bol = out[i] == '\n';
	}
	CHECK(k == n);
	free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t rlen, tlen;
	const uint8_t *text = fuzz_split(data, size, 0xff, &rlen, &tlen);
	struct smtp_client_reply r;
	smtp_client_reply_reset(&r);
	const uint8_t *p = data;
	size_t left = rlen;
	unsigned ext = 0;
	while (left > 0) {
		const uint8_t *lf = memchr(p, '\n', left);
		size_t n = lf ? (size_t)(lf - p) : left;
		char *line = malloc(n + 1);
		CHECK(line != NULL);
		memcpy(line, p, n);
		line[n] = '\0';
		const char *rest = NULL;
		enum smtp_client_reply_status st = smtp_client_reply_feed(&r, line, n, &rest);
		if (rest) {
			CHECK(strlen(rest) + 4 <= n || rest[0] == '\0');
			ext |= smtp_client_ehlo_line(rest);
		}
		check_reply(&r);
		if (st != SMTP_CLIENT_REPLY_MORE)
			smtp_client_reply_reset(&r);
		free(line);
		if (!lf)
			break;
		left -= n + 1;
		p = lf + 1;
	}
	CHECK((ext & ~(unsigned)SMTP_EXT_ALL) == 0);
	if (text)
		check_stuffing(text, tlen);
	return 0;
}

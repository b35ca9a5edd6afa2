/* libFuzzer entry point for the DATA phase's text (smtp_data): the client's
 * bytes arrive in reads of arbitrary sizes and go through the session's
 * way — runs of plain lines taken whole (smtp_data_plain_lines), every
 * other line through the line reader and smtp_data_line — and, beside it,
 * line by line only.  Both must store the same text, set the same flags
 * and size, and end the data at the same octet; a run of plain lines never
 * holds the end of data, a dot at a line's start, a bare CR or LF or a NUL.
 *
 * Input: byte 0 = the size limit's choice, byte 1 = seed of the read
 * sizes, then the bytes a client sends after DATA. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "lib/linebuf.h"
#include "lib/util.h"
#include "proto/smtp/smtp_data.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#include "harness.h"

static const uint64_t limits[] = {0, 1, 5, 64, 1000, 4096, 1000000};

struct side {
	bool plain;             /* take runs of plain lines */
	struct smtp_data d;
	struct linebuf lb;
	struct evbuffer *in;
	char *text;             /* what would be stored */
	size_t len;
	bool ended;
	size_t end_at;          /* octets of the input read when the data ended */
};

static void side_store(struct side *s, const char *p, size_t n, const char *crlf)
{
	size_t extra = crlf ? 2 : 0;
	s->text = xrealloc(s->text, s->len + n + extra + 1);
	memcpy(s->text + s->len, p, n);
	if (crlf)
		memcpy(s->text + s->len + n, crlf, 2);
	s->len += n + extra;
}

/* A run of plain lines: each ends in CRLF and holds nothing special. */
static void check_plain_run(const char *p, size_t n)
{
	CHECK(n >= 2 && p[n - 2] == '\r' && p[n - 1] == '\n');
	for (size_t i = 0, start = 0; i < n; i++) {
		CHECK(p[i] != '\0');
		if (i == start)
			CHECK(p[i] != '.');
		if (p[i] == '\r')
			CHECK(i + 1 < n && p[i + 1] == '\n');
		if (p[i] == '\n') {
			CHECK(i > 0 && p[i - 1] == '\r' && i + 1 - start <= LINE_MAX_TEXT);
			start = i + 1;
		}
	}
}

static bool side_plain(struct side *s)
{
	struct evbuffer_iovec v;
	if (!s->plain || !linebuf_between_lines(&s->lb) || evbuffer_peek(s->in, -1, NULL, &v, 1) < 1)
		return false;
	uint64_t size_before = s->d.size;
	size_t n = smtp_data_plain_lines(&s->d, v.iov_base, v.iov_len);
	if (n == 0)
		return false;
	check_plain_run(v.iov_base, n);
	CHECK(s->d.size == size_before + n && s->d.size <= s->d.limit && s->d.flags == 0);
	side_store(s, v.iov_base, n, NULL);
	linebuf_skip_lines(&s->lb, s->in, n);
	return true;
}

/* Everything the buffer holds now, as the session's input loop takes it. */
static void side_run(struct side *s, size_t read_so_far)
{
	static char line[SMTP_DATA_READ_MAX + 1];
	while (!s->ended) {
		if (side_plain(s))
			continue;
		struct linebuf_line l;
		enum linebuf_status st =
		    linebuf_get(&s->lb, s->in, SMTP_DATA_READ_MAX, line, sizeof line, &l);
		if (st == LINEBUF_NEED_MORE)
			return;
		if (st == LINEBUF_TOO_LONG) {
			smtp_data_long_line(&s->d);
			continue;
		}
		const char *text;
		size_t len;
		if (smtp_data_line(&s->d, &l, &text, &len) == SMTP_DATA_END) {
			s->ended = true;
			s->end_at = read_so_far - evbuffer_get_length(s->in);
		} else if (text) {
			side_store(s, text, len, "\r\n");
		}
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 2)
		return 0;
	uint64_t limit = limits[data[0] % (sizeof limits / sizeof limits[0])];
	bool tiny = data[0] & 0x80;
	uint32_t rnd = data[1] * 2654435761u + 1;
	data += 2;
	size -= 2;

	struct side sides[2] = {{.plain = false}, {.plain = true}};
	for (int i = 0; i < 2; i++) {
		smtp_data_begin(&sides[i].d, limit);
		sides[i].in = evbuffer_new();
		CHECK(sides[i].in != NULL);
	}
	for (size_t off = 0; off < size && !sides[0].ended;) {
		rnd ^= rnd << 13;
		rnd ^= rnd >> 17;
		rnd ^= rnd << 5;
		size_t c = 1 + rnd % (tiny ? 4 : 2048);
		if (c > size - off)
			c = size - off;
		/* each read its own piece of the buffer, as reads from a socket */
		for (int i = 0; i < 2; i++)
			CHECK(evbuffer_add_reference(sides[i].in, data + off, c, NULL, NULL) == 0);
		off += c;
		for (int i = 0; i < 2; i++)
			side_run(&sides[i], off);
		CHECK(sides[0].ended == sides[1].ended);
	}
	CHECK(sides[0].ended == sides[1].ended && sides[0].end_at == sides[1].end_at);
	CHECK(sides[0].d.flags == sides[1].d.flags && sides[0].d.size == sides[1].d.size);
	CHECK(sides[0].len == sides[1].len &&
	      (sides[0].len == 0 || memcmp(sides[0].text, sides[1].text, sides[0].len) == 0));
	for (int i = 0; i < 2; i++) {
		evbuffer_free(sides[i].in);
		free(sides[i].text);
	}
	return 0;
}

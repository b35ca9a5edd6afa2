/* libFuzzer entry point for linebuf, the one bounded line reader: the
 * client's bytes arrive in arbitrary chunks and are read with one of the
 * named limits.  Every event must match a reference model that sees the
 * whole stream at once (a line of n octets including its LF is a line when
 * n <= limit, else reported once as too long; a final unterminated part
 * reaching the limit is too long too), every line must be classified
 * right (how the line before it ended included), and the buffer never
 * holds `limit` octets while waiting.
 *
 * Input: byte 0 = which limit, byte 1 = seed of the chunk sizes, then the
 * bytes a client sends. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "lib/linebuf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#include "harness.h"

static const size_t limits[] = {
	1, 2, 3, 16, LINE_MAX_COMMAND, LINE_MAX_COMMAND_EXT, LINE_MAX_TEXT, LINE_MAX_AUTH,
};

/* The reference model's next event at *pos, knowing the first avail
 * octets of the whole stream (full octets): 1 = a line of *n octets (LF
 * included), 2 = too long (then *pos moves past that line's LF, wherever
 * it is), 0 = nothing yet. */
static int model_next(const uint8_t *s, size_t avail, size_t full, size_t *pos, size_t limit,
		      size_t *n)
{
	if (*pos >= avail)
		return 0;
	const uint8_t *lf = memchr(s + *pos, '\n', avail - *pos);
	size_t len = lf ? (size_t)(lf - (s + *pos)) + 1 : avail - *pos;
	if (lf && len <= limit) {
		*n = len;
		*pos += len;
		return 1;
	}
	if (!lf && len < limit)
		return 0;
	lf = memchr(s + *pos, '\n', full - *pos);
	*pos = lf ? (size_t)(lf - s) + 1 : full;
	return 2;
}

static void check_line(const struct linebuf_line *l, const uint8_t *raw, size_t n)
{
	/* raw: n octets ending in LF */
	size_t body = n - 1;
	bool crlf = body > 0 && raw[body - 1] == '\r';
	if (crlf)
		body--;
	CHECK(l->len == body && l->crlf == crlf && l->bare_lf == !crlf);
	CHECK(memcmp(l->data, raw, body) == 0 && l->data[body] == '\0');
	CHECK(l->bare_cr == (memchr(raw, '\r', body) != NULL));
	CHECK(l->has_nul == (memchr(raw, '\0', body) != NULL));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 2)
		return 0;
	size_t limit = limits[data[0] % (sizeof limits / sizeof limits[0])];
	bool tiny = data[0] & 0x80;
	uint32_t rnd = data[1] * 2654435761u + 1;
	data += 2;
	size -= 2;

	static char storage[LINE_MAX_AUTH + 1];
	struct linebuf lb = {0};
	struct evbuffer *in = evbuffer_new();
	CHECK(in != NULL);
	size_t model_pos = 0;

	for (size_t off = 0; off < size;) {
		rnd ^= rnd << 13;
		rnd ^= rnd >> 17;
		rnd ^= rnd << 5;
		size_t c = 1 + rnd % (tiny ? 4 : 2048);
		if (c > size - off)
			c = size - off;
		CHECK(evbuffer_add(in, data + off, c) == 0);
		off += c;
		for (;;) {
			struct linebuf_line line;
			memset(&line, 0xa5, sizeof line);
			enum linebuf_status st = linebuf_get(&lb, in, limit, storage, limit + 1, &line);
			if (st == LINEBUF_NEED_MORE) {
				CHECK(evbuffer_get_length(in) < limit);
				break;
			}
			size_t n = 0;
			size_t before = model_pos;
			int ev = model_next(data, off, size, &model_pos, limit, &n);
			if (st == LINEBUF_LINE) {
				CHECK(ev == 1);
				check_line(&line, data + before, n);
				/* the line before, returned or dropped, ended in
				 * CR LF (the stream's start counts as such) */
				CHECK(line.after_crlf ==
				      (before == 0 || (before >= 2 && data[before - 2] == '\r')));
			} else {
				CHECK(st == LINEBUF_TOO_LONG && ev == 2);
			}
		}
	}
	/* everything the reader reported, the model reports too, and no more */
	size_t n;
	CHECK(model_next(data, size, size, &model_pos, limit, &n) == 0);
	evbuffer_free(in);
	return 0;
}

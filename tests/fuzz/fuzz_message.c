/* libFuzzer entry point for message.c, IMAP's view of a message (the
 * message parsing behind FETCH): arbitrary bytes as a Maildir file, parsed
 * with GMime into ENVELOPE, BODYSTRUCTURE and BODY, every section of the
 * first parts located and streamed, HEADER.FIELDS built, SEARCH helpers
 * run, and a worker's SEARCH (message_search_file) answering as GMime's
 * parse does.  Checks what the IMAP session relies on: the strings are C strings
 * of the length given, a RANGE lies inside the CRLF form whose size
 * message_size() reports, and streaming it yields exactly its length.
 *
 * Input: the bytes of the message file. */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "store/message.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(x) do { if (!(x)) __builtin_trap(); } while (0)

static struct message_cache *cache;
static char path[64];

static void fuzz_setup(void)
{
	if (cache)
		return;
	message_init();
	cache = message_cache_new(4 * 1024 * 1024);
	snprintf(path, sizeof path, "/tmp/posthorn-fuzz-message.%ld", (long)getpid());
}

static void check_string(const char *s, size_t len)
{
	CHECK(s != NULL);
	CHECK(strlen(s) == len);
}

/* Stream a RANGE and count what comes out. */
static void check_range(const struct message *m, const struct message_section *sec)
{
	CHECK(sec->offset + sec->length <= message_size(m));
	struct message_stream *st = message_stream_open(m, path, sec->offset, sec->length);
	CHECK(st != NULL);
	char buf[4096];
	uint64_t got = 0;
	ssize_t n;
	while ((n = message_stream_read(st, buf, sizeof buf)) > 0)
		got += (uint64_t)n;
	CHECK(n == 0);
	CHECK(got == sec->length);
	message_stream_close(st);
}

static void check_section(const struct message *m, const struct message_section_spec *sec)
{
	struct message_section out;
	char err[256];
	if (message_section(m, path, sec, &out, err, sizeof err) < 0)
		return;
	if (out.kind == MESSAGE_SECTION_RANGE)
		check_range(m, &out);
	else if (out.kind == MESSAGE_SECTION_BUFFER)
		CHECK(out.buf != NULL || out.len == 0);
	message_section_free(&out);
}

static void check_sections(const struct message *m)
{
	static const enum message_section_text texts[] = {
		MESSAGE_SECTION_WHOLE, MESSAGE_SECTION_HEADER, MESSAGE_SECTION_TEXT,
		MESSAGE_SECTION_MIME,
	};
	char *fields[] = {"Subject", "FROM", "x-unknown"};
	/* [], [HEADER], [TEXT]; then parts 1, 2, 1.1, 2.1, 1.2 with each text */
	static const uint32_t parts[][2] = {{0, 0}, {1, 0}, {2, 0}, {1, 1}, {2, 1}, {1, 2}};
	for (size_t p = 0; p < sizeof parts / sizeof parts[0]; p++) {
		for (size_t t = 0; t < sizeof texts / sizeof texts[0]; t++) {
			struct message_section_spec sec = {.text = texts[t]};
			sec.nparts = parts[p][0] == 0 ? 0 : parts[p][1] == 0 ? 1 : 2;
			sec.parts[0] = parts[p][0];
			sec.parts[1] = parts[p][1];
			if (sec.nparts == 0 && texts[t] == MESSAGE_SECTION_MIME)
				continue; /* MIME only after part numbers */
			check_section(m, &sec);
		}
	}
	struct message_section_spec hf = {.text = MESSAGE_SECTION_HEADER_FIELDS, .nfields = 3,
					  .fields = fields};
	check_section(m, &hf);
	hf.text = MESSAGE_SECTION_HEADER_FIELDS_NOT;
	check_section(m, &hf);
}

static void check_search(const struct message *m)
{
	char err[256];
	int64_t when;
	int tz;
	(void)message_sent_date(m, &when, &tz);
	CHECK(message_header_contains(m, path, "subject", "a", err, sizeof err) >= 0);
	CHECK(message_header_contains(m, path, "from", "", err, sizeof err) >= 0);
	CHECK(message_text_contains(m, path, false, "zz", err, sizeof err) >= 0);
	CHECK(message_text_contains(m, path, true, "\xc3\xa9", err, sizeof err) >= 0);
	/* a worker's search: from the octets when they suffice, the same
	 * answers as GMime's parse */
	static const struct message_search_key keys[] = {
		{MESSAGE_SEARCH_BODY, NULL, "a"}, {MESSAGE_SEARCH_TEXT, NULL, "Zz"},
		{MESSAGE_SEARCH_HEADER, "subject", "a"}, {MESSAGE_SEARCH_HEADER, "from", ""},
		{MESSAGE_SEARCH_TEXT, NULL, "\xc3\xa9"}, {MESSAGE_SEARCH_BODY, NULL, "-"},
	};
	uint64_t fast = 0, slow = 0;
	size_t nk = sizeof keys / sizeof keys[0];
	CHECK(message_search_file(path, keys, nk, MESSAGE_SEARCH_AUTO, &fast, err, sizeof err) == 0);
	CHECK(message_search_file(path, keys, nk, MESSAGE_SEARCH_PARSED, &slow, err, sizeof err) == 0);
	CHECK(fast == slow);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fuzz_setup();
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	CHECK(fd >= 0);
	CHECK(write(fd, data, size) == (ssize_t)size);
	close(fd);
	char err[256];
	struct message *m = message_get(cache, path, err, sizeof err);
	CHECK(m != NULL);
	size_t len;
	const char *s = message_envelope(m, &len);
	check_string(s, len);
	s = message_bodystructure(m, &len);
	check_string(s, len);
	s = message_body(m, &len);
	check_string(s, len);
	check_sections(m);
	check_search(m);
	message_put(m);
	/* the next input has the same name and maybe the same size: a fresh
	 * cache entry must not be confused with this one */
	message_cache_free(cache);
	cache = message_cache_new(4 * 1024 * 1024);
	unlink(path);
	return 0;
}

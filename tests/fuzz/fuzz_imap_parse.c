/* libFuzzer entry point for imap_parse: arbitrary bytes through the IMAP
 * command parser in arbitrary chunk sizes, with and without the limits
 * after authentication, an APPEND sink that may fail, literals refused at
 * the continuation, and a STARTTLS-style reset.  Checks the invariants the
 * session relies on: nothing buffered past IMAP_LINE_MAX while waiting,
 * every string a clean C string, a sunk literal's octets all delivered,
 * error texts printable, and the same commands and errors whether the
 * bytes come in pieces or all at once.  Leaks are found by LeakSanitizer.
 *
 * Input: byte 0 = mode bits, byte 1 = seed of the chunk sizes, then the
 * bytes a client sends. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "proto/imap/imap_parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

enum {
	MODE_AUTH = 1,          /* limits after authentication */
	MODE_SINK = 2,          /* APPEND's message to a sink ... */
	MODE_SMALL_APPEND = 4,  /* ... of at most 100 octets, else 100000;
				 * without MODE_SINK: in memory, at most 100 */
	MODE_SINK_FAILS = 8,    /* every write fails */
	MODE_REJECT = 16,       /* refuse every other synchronizing literal */
	MODE_SMALL_CHUNKS = 32, /* chunks of 1-8 octets, else 1-16384 */
	MODE_RESET = 64,        /* throw the buffer away once, as STARTTLS does */
	MODE_UTF8 = 128,        /* after ENABLE UTF8=ACCEPT (RFC 6855: UTF8 data) */
};

#define CHECK(x) do { if (!(x)) __builtin_trap(); } while (0)

struct sink_state {
	uint64_t got;
	uint64_t hash;          /* of the octets, in order */
	bool fail;
};

static uint64_t fnv(uint64_t h, const void *data, size_t len)
{
	const unsigned char *d = data;
	for (size_t i = 0; i < len; i++)
		h = (h ^ d[i]) * 1099511628211ull;
	return h;
}

static uint64_t fnv_u64(uint64_t h, uint64_t v)
{
	return fnv(h, &v, sizeof(v));
}

static int fuzz_sink_write(void *arg, const void *d, size_t len)
{
	struct sink_state *s = arg;
	CHECK(len > 0 && d != NULL);
	s->got += len;
	s->hash = fnv(s->hash, d, len);
	return s->fail ? -1 : 0;
}

static bool printable(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || (unsigned char)*s > 0x7e)
			return false;
	return true;
}

static uint64_t hash_section(uint64_t h, const struct imap_section *sec)
{
	CHECK(sec && sec->spec.nparts <= IMAP_SECTION_PARTS_MAX);
	h = fnv_u64(h, sec->att * 2u + sec->peek);
	for (size_t k = 0; k < sec->spec.nparts; k++) {
		CHECK(sec->spec.parts[k] != 0);
		h = fnv_u64(h, sec->spec.parts[k]);
	}
	h = fnv_u64(h, sec->spec.text);
	for (size_t k = 0; k < sec->spec.nfields; k++) {
		CHECK(sec->spec.fields[k] != NULL);
		h = fnv(h, sec->spec.fields[k], strlen(sec->spec.fields[k]) + 1);
	}
	CHECK(!sec->partial || sec->count != 0);
	h = fnv_u64(h, sec->partial);
	return fnv_u64(h, ((uint64_t)sec->origin << 32) | sec->count);
}

static void check_seqset(const char *atom)
{
	struct imap_seqset set;
	char err[IMAP_REASON_MAX];
	if (imap_parse_seqset(atom, &set, err, sizeof(err))) {
		CHECK(set.n <= IMAP_SEQSET_RANGES_MAX);
		imap_seqset_resolve(&set, (uint32_t)(strlen(atom) * 7 % 64)); /* 0 too */
		for (size_t k = 0; k < set.n; k++) {
			CHECK(set.ranges[k].lo >= 1 && set.ranges[k].lo <= set.ranges[k].hi);
			CHECK(k == 0 || set.ranges[k].lo > set.ranges[k - 1].hi + 1ull);
			CHECK(imap_seqset_contains(&set, set.ranges[k].lo));
			CHECK(imap_seqset_contains(&set, set.ranges[k].hi));
		}
	} else {
		CHECK(set.n == 0 && set.ranges == NULL && printable(err));
	}
	imap_seqset_clear(&set);
}

/* Walk the tree like a session would; hash what it holds into *h and
 * return the octets that went to the sink. */
static uint64_t walk(const struct imap_args *args, unsigned depth, uint64_t *h)
{
	uint64_t sunk = 0;
	CHECK(depth <= IMAP_DEPTH_MAX);
	*h = fnv_u64(*h, args->n);
	for (size_t i = 0; i < args->n; i++) {
		const struct imap_arg *a = imap_args_at(args, i);
		CHECK(a != NULL);
		*h = fnv_u64(*h, a->type);
		if (a->str) {
			CHECK(strlen(a->str) == a->len);
			*h = fnv(*h, a->str, a->len + 1);
		}
		size_t len;
		uint32_t u32;
		uint64_t u64;
		(void)imap_arg_atom(a);
		(void)imap_arg_flag(a);
		(void)imap_arg_is(a, "BODY");
		(void)imap_arg_is_nil(a);
		(void)imap_arg_u32(a, &u32);
		(void)imap_arg_u64(a, &u64);
		const char *s = imap_arg_astring(a, &len);
		if (s)
			CHECK(strlen(s) == len);
		s = imap_arg_list_mailbox(a, &len);
		if (s)
			CHECK(strlen(s) == len);
		switch (a->type) {
		case IMAP_ARG_LIST:
			CHECK(imap_arg_list(a) != NULL);
			sunk += walk(imap_arg_list(a), depth + 1, h);
			break;
		case IMAP_ARG_LITERAL:
			if (a->sunk)
				sunk += a->literal_size;
			else
				CHECK(a->str && a->len == a->literal_size);
			*h = fnv_u64(*h, a->literal_size);
			*h = fnv_u64(*h, a->literal_sync * 8u + a->sunk * 4u + a->sink_failed * 2u +
					     a->literal_nul);
			break;
		case IMAP_ARG_SECTION:
			*h = hash_section(*h, imap_arg_section(a));
			break;
		case IMAP_ARG_ATOM:
			check_seqset(a->str);
			break;
		default:
			break;
		}
	}
	return sunk;
}

/* Parse all of data, in chunks or in one piece; returns a hash of every
 * event and what it carried, which must not depend on the chunking. */
static uint64_t run(const uint8_t *data, size_t size, unsigned mode, uint32_t rnd, bool whole)
{
	struct imap_parser *p = imap_parser_new();
	struct evbuffer *in = evbuffer_new();
	CHECK(in != NULL);
	struct sink_state ss = { 0, 14695981039346656037ull, (mode & MODE_SINK_FAILS) != 0 };
	if (mode & MODE_AUTH)
		imap_parser_set_authenticated(p, true);
	if (mode & MODE_UTF8)
		imap_parser_set_utf8(p, true);
	if (mode & MODE_SINK) {
		struct imap_literal_sink sink = { &ss, fuzz_sink_write, NULL };
		imap_parser_set_append(p, (mode & MODE_SMALL_APPEND) ? 100 : 100000, &sink);
	} else if (mode & MODE_SMALL_APPEND) {
		imap_parser_set_append(p, 100, NULL);
	}
	size_t reset_at = (mode & MODE_RESET) ? rnd % 16 : (size_t)-1;
	unsigned continues = 0;
	uint64_t h = 14695981039346656037ull;

	for (size_t off = 0, chunk_no = 0; off < size; chunk_no++) {
		rnd ^= rnd << 13;
		rnd ^= rnd >> 17;
		rnd ^= rnd << 5;
		size_t c = whole ? size : 1 + rnd % ((mode & MODE_SMALL_CHUNKS) ? 8 : 16384);
		if (c > size - off)
			c = size - off;
		CHECK(evbuffer_add(in, data + off, c) == 0);
		off += c;
		if (chunk_no == reset_at) {
			evbuffer_drain(in, evbuffer_get_length(in));
			imap_parser_reset(p);
			ss.got = 0;
		}
		for (;;) {
			struct imap_command *cmd = NULL;
			enum imap_parse_status st = imap_parse_feed(p, in, &cmd);
			if (st == IMAP_PARSE_NEED_MORE) {
				/* how often depends on the chunks: not hashed */
				CHECK(cmd == NULL);
				CHECK(evbuffer_get_length(in) < IMAP_LINE_MAX);
				break;
			}
			h = fnv_u64(h, st);
			if (st == IMAP_PARSE_CONTINUE) {
				CHECK(cmd == NULL);
				const struct imap_command *pend = imap_parser_pending(p);
				CHECK(pend != NULL && pend->tag[0] && printable(pend->tag));
				if ((mode & MODE_REJECT) && (continues++ & 1))
					imap_parser_reject_literal(p);
				continue;
			}
			if (st == IMAP_PARSE_ERROR) {
				CHECK(cmd == NULL);
				const struct imap_parse_error *e = imap_parser_error(p);
				CHECK(e->reason[0] && printable(e->reason));
				CHECK(!e->has_tag || (e->tag[0] && printable(e->tag)));
				h = fnv(h, e->reason, strlen(e->reason) + 1);
				h = fnv(h, e->tag, strlen(e->tag) + 1);
				h = fnv_u64(h, e->has_tag);
				ss.got = 0;
				ss.hash = 14695981039346656037ull;
				continue;
			}
			CHECK(st == IMAP_PARSE_COMMAND && cmd != NULL);
			CHECK(cmd->tag[0] && printable(cmd->tag) && cmd->name[0] && printable(cmd->name));
			h = fnv(h, cmd->tag, strlen(cmd->tag) + 1);
			h = fnv(h, cmd->name, strlen(cmd->name) + 1);
			uint64_t sunk = walk(&cmd->args, 0, &h);
			if (!ss.fail) {
				CHECK(sunk == ss.got);
				h = fnv_u64(h, ss.hash);
			}
			ss.got = 0;
			ss.hash = 14695981039346656037ull;
			imap_command_free(cmd);
		}
	}
	imap_parser_free(p);
	evbuffer_free(in);
	return h;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 2)
		return 0;
	unsigned mode = data[0];
	uint32_t seed = data[1] * 2654435761u + 1;
	uint64_t chunked = run(data + 2, size - 2, mode, seed, false);
	/* The same bytes in one piece must give the same commands, errors and
	 * continuations: how the network splits a stream changes nothing.
	 * (Not with MODE_RESET, whose drain depends on the chunks.) */
	if (!(mode & MODE_RESET))
		CHECK(run(data + 2, size - 2, mode, seed, true) == chunked);
	return 0;
}

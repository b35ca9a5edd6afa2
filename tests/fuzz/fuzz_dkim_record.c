/* libFuzzer entry point for the DKIM tag-list and key-record parsers
 * (mailauth/dkim_tags.h, mailauth/dkim_key.h): untrusted text from
 * DKIM-Signature fields and from TXT answers.  Every tag found lies inside
 * the input, its value inside its raw span; names are never repeated; a
 * parsed key is of a known type with a usable size; base64 never writes
 * past its buffer. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mailauth/dkim_key.h"
#include "mailauth/dkim_tags.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#include "harness.h"

static void check_tags(const char *text, size_t len)
{
	struct dkim_tags t;
	char err[128];
	if (dkim_tags_parse(text, len, &t, err, sizeof err) < 0) {
		CHECK(memchr(err, '\0', sizeof err) != NULL && err[0] != '\0');
		return;
	}
	CHECK(t.n >= 1 && t.n <= DKIM_TAGS_MAX);
	for (size_t i = 0; i < t.n; i++) {
		const struct dkim_tag *g = &t.tag[i];
		CHECK(g->name >= text && g->name + g->name_len <= text + len && g->name_len > 0);
		CHECK(g->raw_start <= g->raw_end && g->raw_end <= len);
		CHECK(g->value >= text + g->raw_start && g->value + g->value_len <= text + g->raw_end);
		CHECK(dkim_tags_get(&t, "") == NULL);
		for (size_t k = 0; k < i; k++)
			CHECK(t.tag[k].name_len != g->name_len ||
			      memcmp(t.tag[k].name, g->name, g->name_len) != 0);
	}
}

static void check_key(const char *text, size_t len)
{
	struct dkim_pubkey k;
	char err[128];
	if (dkim_pubkey_parse(text, len, &k, err, sizeof err) < 0) {
		CHECK(k.pkey == NULL);
		return;
	}
	CHECK(k.type == DKIM_KEY_RSA || k.type == DKIM_KEY_ED25519);
	if (k.pkey && k.type == DKIM_KEY_ED25519)
		CHECK(k.bits == 256);
	if (k.pkey && k.type == DKIM_KEY_RSA)
		CHECK(k.bits > 0);
	dkim_pubkey_clear(&k);
}

static void check_base64(const char *text, size_t len)
{
	unsigned char out[64 + 1];
	out[64] = 0xa5;
	long n = dkim_base64_decode(text, len, out, 64);
	CHECK(n >= -1 && n <= 64);
	CHECK(out[64] == 0xa5);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > 8192)
		size = 8192;
	/* a copy of exactly size bytes, so that ASan sees any read past it */
	char *text = malloc(size ? size : 1);
	if (!text)
		return 0;
	memcpy(text, data, size);
	check_tags(text, size);
	check_key(text, size);
	check_base64(text, size);
	free(text);
	return 0;
}

/* libFuzzer entry point for the SASL layer: the canonical base64 decoder,
 * PLAIN (RFC 4616), LOGIN, and SCRAM-SHA-256 client-first and client-final
 * messages (RFC 5802: gs2 header, saslname escapes, attributes, channel
 * binding, nonce, proof), against a user database with one known user and
 * a fixed server nonce, so that whole successful exchanges are reachable.
 * Checks: challenges are canonical base64, a finished exchange stays
 * finished, only the real user with the real password gets SASL_OK.
 *
 * Input: byte 0 = mode (bits 0-1: PLAIN / LOGIN / SCRAM-SHA-256,
 * bit 2: the fuzzer's messages are raw and base64-encoded here, bit 3: the
 * first message is an initial response), then the client's messages
 * separated by 0xff octets (which UTF-8 never contains). */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "conf/conf.h"
#include "harness.h"
#include "auth/sasl.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const unsigned mechs[] = {MECH_PLAIN, MECH_LOGIN, MECH_SCRAM_SHA_256, MECH_SCRAM_SHA_256};

static void check_base64(const char *s)
{
	size_t n = strlen(s);
	CHECK(n % 4 == 0);
	if (n == 0)
		return;
	unsigned char *out = malloc(n / 4 * 3 + 1);
	CHECK(out != NULL);
	CHECK(EVP_DecodeBlock(out, (const unsigned char *)s, (int)n) >= 0);
	free(out);
}

static char *encode(const uint8_t *d, size_t n)
{
	char *out = malloc(4 * ((n + 2) / 3) + 2);
	CHECK(out != NULL);
	if (n == 0) {
		strcpy(out, "");
		return out;
	}
	EVP_EncodeBlock((unsigned char *)out, d, (int)n);
	return out;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1 || size > 40000)
		return 0;
	struct userdb *db = fuzz_userdb();
	sasl_test_set_nonce(FUZZ_SERVER_NONCE);
	unsigned mode = data[0];
	unsigned mech = mechs[mode & 3];
	bool raw = mode & 4, initial = mode & 8;
	struct sasl_session *s = sasl_start(mech, db);
	CHECK(s != NULL);
	const uint8_t *p = data + 1;
	size_t left = size - 1;
	bool over = false, first = true;
	while (p) {
		size_t n, rest;
		const uint8_t *next = fuzz_split(p, left, 0xff, &n, &rest);
		char *in;
		char *challenge = (char *)1;
		enum sasl_status st;
		if (first && !initial) {
			st = sasl_step(s, NULL, &challenge);
			CHECK(st == SASL_CONTINUE);
			first = false;
			free(challenge);
			continue;
		}
		first = false;
		if (raw) {
			in = encode(p, n);
		} else {
			in = malloc(n + 1);
			CHECK(in != NULL);
			memcpy(in, p, n);
			in[n] = '\0';
		}
		st = sasl_step(s, in, &challenge);
		free(in);
		if (getenv("FUZZ_TRACE"))
			fprintf(stderr, "step: status %d challenge %s\n", (int)st,
				challenge ? challenge : "-");
		if (over)
			CHECK(st == SASL_BAD_MESSAGE && challenge == NULL);
		switch (st) {
		case SASL_CONTINUE:
			CHECK(challenge != NULL);
			check_base64(challenge);
			break;
		case SASL_OK:
			CHECK(sasl_user(s) && strcmp(sasl_user(s), FUZZ_USER) == 0);
			if (challenge)
				check_base64(challenge);
			over = true;
			break;
		default:
			CHECK(challenge == NULL);
			over = true;
			break;
		}
		free(challenge);
		p = next;
		left = rest;
	}
	sasl_free(s);
	return 0;
}

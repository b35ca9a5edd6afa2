/* libFuzzer entry point for the keys of SORT and THREAD: message_keys.c
 * parsing a header (GMime for addresses, dates, message IDs and RFC 2047
 * words), imap_subject.c's base subject and casemap, and imap_thread.c's
 * two algorithms over the messages.  Checks that every key is a C string
 * and that a thread-list has balanced parentheses and names each message
 * once.
 *
 * Input: up to 16 message headers separated by NUL octets. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/imap/imap_subject.h"
#include "proto/imap/imap_thread.h"
#include "store/message.h"
#include "store/message_keys.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(x) do { if (!(x)) __builtin_trap(); } while (0)

enum { FUZZ_MSGS_MAX = 16 };

static void check_thread_list(const char *s, size_t len, size_t n)
{
	CHECK(strlen(s) == len);
	long depth = 0;
	size_t numbers = 0;
	for (size_t i = 0; i < len; i++) {
		if (s[i] == '(')
			depth++;
		else if (s[i] == ')')
			depth--;
		CHECK(depth >= 0);
		if (s[i] >= '1' && s[i] <= '9' && (i == 0 || s[i - 1] < '0' || s[i - 1] > '9'))
			numbers++;
	}
	CHECK(depth == 0);
	CHECK(numbers == n);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static bool ready;
	if (!ready) {
		message_init();
		ready = true;
	}
	struct message_keys k[FUZZ_MSGS_MAX];
	struct imap_thread_msg m[FUZZ_MSGS_MAX];
	size_t n = 0, pos = 0;
	while (pos <= size && n < FUZZ_MSGS_MAX) {
		const uint8_t *nul = memchr(data + pos, 0, size - pos);
		size_t end = nul ? (size_t)(nul - data) : size;
		message_keys_parse((const char *)data + pos, end - pos, &k[n]);
		CHECK(message_keys_size(&k[n]) >= sizeof k[n]);
		m[n] = (struct imap_thread_msg){.num = (uint32_t)(n + 1), .date = k[n].date,
						.message_id = k[n].message_id, .refs = k[n].refs,
						.nrefs = k[n].nrefs};
		m[n].subject = imap_base_subject(k[n].subject, &m[n].reply);
		if (k[n].from.display) {
			char *c = imap_casemap(k[n].from.display);
			free(c);
		}
		n++;
		pos = end + 1;
	}
	size_t len;
	char *t = imap_thread_references(m, n, &len);
	check_thread_list(t, len, n);
	free(t);
	t = imap_thread_orderedsubject(m, n, &len);
	check_thread_list(t, len, n);
	free(t);
	for (size_t i = 0; i < n; i++) {
		free((char *)m[i].subject);
		message_keys_free(&k[i]);
	}
	return 0;
}

/* libFuzzer entry point for a whole POP3 session: arbitrary bytes from a
 * client through the real transport, the line reader, the command table
 * with its states (AUTHORIZATION, TRANSACTION, UPDATE), USER/PASS and SASL
 * AUTH with a known user, and the maildrop commands (STAT, LIST, UIDL,
 * RETR, TOP, DELE, RSET, QUIT) on a Maildir of two messages that is put
 * back before every input.  Every status line must be "+OK" or "-ERR",
 * every line printable and at most 512 octets (RETR/TOP message lines
 * are the messages' own).
 *
 * The server has a certificate: STLS (with pipelined plaintext that must be
 * thrown away) and implicit TLS handshakes get the bytes that follow.
 *
 * Input: byte 0 = mode (bit 0: refused by the connection rules, bit 1:
 * implicit TLS), byte 1 =
 * seed of the chunk sizes, then what the client sends. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "harness.h"
#include "proto/pop3/pop3_session.h"
#include "runtime/runtime.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char conf_text[] =
	"hostname mail.example.test\n"
	"domains example.test\n"
	"server pop {\n"
	"    protocol pop3\n"
	"    listen 127.0.0.1:110\n"
	"    tls {\n"
	"        certificate @DIR@/mail.example.test.crt\n"
	"        key @DIR@/mail.example.test.key\n"
	"    }\n"
	"    auth {\n"
	"        plaintext-requires-tls no\n"
	"        lockout 4 15m 30m\n"
	"    }\n"
	"}\n";

static struct runtime *rt;
static bool tls_bytes;  /* what comes now is TLS records, not lines */

static void check_reply(const char *line, size_t len)
{
	if (tls_bytes)
		return;
	if (strncmp(line, "+OK Begin TLS negotiation\r\n", len) == 0)
		tls_bytes = true;
	CHECK(len >= 2 && len <= 1002);
	CHECK(line[len - 2] == '\r' && line[len - 1] == '\n');
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 2 || size > 200000)
		return 0;
	if (!rt)
		rt = fuzz_runtime(conf_text);
	fuzz_clean_store(rt);
	unsigned flags = ((data[0] & 1) ? FUZZ_REFUSED : 0) | ((data[0] & 2) ? FUZZ_IMPLICIT_TLS : 0);
	tls_bytes = flags & FUZZ_IMPLICIT_TLS;
	fuzz_session(rt, 0, pop3_session_start, data + 2, size - 2, data[1] * 2654435761u, flags,
		     check_reply);
	return 0;
}

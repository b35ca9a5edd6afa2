/* libFuzzer entry point for a whole inbound SMTP session: arbitrary bytes
 * from a client, through the real transport (conn.c over a socket pair),
 * the line reader, the command table and its state machine, MAIL/RCPT
 * parsing, relay and sender rules, alias expansion, AUTH (PLAIN, LOGIN,
 * SCRAM-SHA-256 with a known user), DATA with dot-unstuffing into the
 * spool, the error limit and the lockout after unknown recipients (the
 * error delay is off here, as the login delay is: no reply waits on a
 * timer).  Every message it accepted must read back
 * from the spool (envelope and CRLF-only text).  What a client sees is
 * checked: every reply line is "DDD-text" or "DDD text" with a code
 * 2xx-5xx, printable and at most 512 octets.  The session must end (no hang: libFuzzer's timeout),
 * free everything (LeakSanitizer) and never touch memory it does not own.
 *
 * Input: byte 0 = mode (bits 0-1: server mx / submission (with a
 * certificate: STARTTLS, whose handshake then gets the following bytes) /
 * strict, bit 2: refused by the connection rules, bit 3: no client name,
 * bit 4: implicit TLS where there is a certificate),
 * byte 1 = seed of the chunk sizes, then what the client sends. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "runtime/runtime.h"
#include "proto/smtp/smtp_session.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char conf_text[] =
	"hostname mail.example.test\n"
	"domains example.test\n"
	"aliases aliases\n"
	"server mx {\n"
	"    listen 127.0.0.1:25\n"
	"    auth { anonymous yes }\n"
	"    relay { allow domain client.example.test }\n"
	"    limits {\n"
	"        message-size 20K\n"
	"        recipients 5\n"
	"        error-delay 0 after 3\n"
	"        unknown-recipients 3 1h 1h\n"
	"    }\n"
	"}\n"
	"server submission {\n"
	"    listen 127.0.0.1:587\n"
	"    tls {\n"
	"        certificate @DIR@/mail.example.test.crt\n"
	"        key @DIR@/mail.example.test.key\n"
	"    }\n"
	"    auth {\n"
	"        plaintext-requires-tls no\n"
	"        lockout 3 15m 30m\n"
	"    }\n"
	"    limits { error-delay 0 after 3 }\n"
	"}\n"
	"server strict {\n"
	"    listen 127.0.0.1:588\n"
	"    auth {\n"
	"        mechanisms scram-sha-256\n"
	"        plaintext-requires-tls no\n"
	"        sender-must-match yes\n"
	"        received-auth no\n"
	"    }\n"
	"    relay { authenticated no }\n"
	"    limits {\n"
	"        message-size 1K\n"
	"        error-delay 0 after 3\n"
	"    }\n"
	"}\n";

static struct runtime *rt;
static bool tls_bytes;  /* what comes now is TLS records, not replies */

static void check_reply(const char *line, size_t len)
{
	if (tls_bytes)
		return;
	if (strncmp(line, "220 2.0.0 Ready to start TLS\r\n", len) == 0)
		tls_bytes = true;
	CHECK(len >= 5 && len <= 512);
	CHECK(line[len - 2] == '\r' && line[len - 1] == '\n');
	CHECK(line[0] >= '2' && line[0] <= '5');
	CHECK(line[1] >= '0' && line[1] <= '9' && line[2] >= '0' && line[2] <= '9');
	CHECK(line[3] == ' ' || line[3] == '-' || len == 5);
	for (size_t i = 4; i + 2 < len; i++)
		CHECK((unsigned char)line[i] >= 0x20 && (unsigned char)line[i] < 0x7f);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 2 || size > 200000)
		return 0;
	if (!rt) {
		fuzz_put("aliases", "team@example.test: alice@example.test, bob@example.org\n"
				    "loop@example.test: loop2@example.test\n"
				    "loop2@example.test: loop@example.test, alice@example.test\n");
		rt = fuzz_runtime(conf_text);
	}
	unsigned mode = data[0];
	size_t srv = (mode & 3) % 3;
	unsigned flags = ((mode & 4) ? FUZZ_REFUSED : 0) | ((mode & 8) ? FUZZ_NO_NAME : 0) |
			 ((mode & 16) ? FUZZ_IMPLICIT_TLS : 0);
	fuzz_clean_store(rt);
	tls_bytes = (flags & FUZZ_IMPLICIT_TLS) && srv == 1;
	fuzz_session(rt, srv, smtp_session_start, data + 2, size - 2, data[1] * 2654435761u, flags,
		     check_reply);
	unsigned queued = fuzz_check_spool(rt);
	if (getenv("FUZZ_TRACE"))
		fprintf(stderr, "queued: %u\n", queued);
	return 0;
}

/* libFuzzer entry point for a whole IMAP session (literals and nested
 * lists, and FETCH's message parsing as a session uses it): arbitrary bytes from a client through the real transport
 * (conn.c over a socket pair), the command parser with synchronizing and
 * LITERAL- literals, the command table and its states, LOGIN and
 * AUTHENTICATE (PLAIN, LOGIN, SCRAM-SHA-256, SASL-IR) with a known user,
 * and, once logged in, the folder store and MIME layer on a Maildir++
 * that is put back before every input: INBOX with two messages (one with
 * a body, one empty), folder Archive with a multipart message (nested
 * alternative, base64 attachment, message/rfc822, RFC 2047 subject) in
 * cur/ with flags, a short one in new/ and one with LF line ends and no
 * final line end as another tool may write it, and the special-use folders a first login makes.  So
 * SELECT, FETCH (BODY[], BODYSTRUCTURE, BINARY, partials), SEARCH, STORE,
 * COPY/MOVE, EXPUNGE, APPEND (streamed into tmp/), IDLE, folder commands
 * and the untagged updates run real code.
 *
 * What a client sees is checked octet by octet: the response stream is
 * lines ending in CRLF (no bare CR or LF, no control or 8-bit octet
 * outside a literal), each line is "* " with a known response,
 * "+ " (continuation) or "TAG OK|NO|BAD text" with a valid tag; a line
 * ending in "{n}" is followed by exactly n octets of literal, and the
 * session never ends in the middle of a line or literal.  After
 * "OK Begin TLS negotiation now" (STARTTLS) or on the implicit-TLS
 * connection the octets are TLS records and are not looked at.  The
 * session must end (libFuzzer's timeout), free everything (LeakSanitizer)
 * and never touch memory it does not own (ASan).
 *
 * Input: byte 0 = mode (bit 0: refused by the connection rules, bit 1:
 * implicit TLS, bit 2: the "strict" server: no certificate, passwords
 * only inside TLS, SCRAM only), byte 1 = seed of the chunk sizes, then
 * what the client sends. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "proto/imap/imap_session.h"
#include "store/message.h"
#include "runtime/runtime.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char conf_text[] =
	"hostname mail.example.test\n"
	"domains example.test\n"
	"server imap {\n"
	"    protocol imap\n"
	"    listen 127.0.0.1:143\n"
	"    tls {\n"
	"        certificate @DIR@/mail.example.test.crt\n"
	"        key @DIR@/mail.example.test.key\n"
	"    }\n"
	"    auth {\n"
	"        plaintext-requires-tls no\n"
	"        lockout 4 15m 30m\n"
	"    }\n"
	"    limits { message-size 64K }\n"
	"}\n"
	"server strict {\n"
	"    protocol imap\n"
	"    listen 127.0.0.1:1143\n"
	"    auth { mechanisms scram-sha-256 plain login }\n"
	"    limits { message-size 4K }\n"
	"}\n";

/* Archive's message: the MIME shapes BODYSTRUCTURE and BINARY have to
 * describe (CRLF line ends, as a delivered message has). */
static const char archive_msg[] =
	"Date: Sat, 28 Nov 2026 10:00:00 +0100\r\n"
	"From: =?UTF-8?Q?Bj=C3=B6rn?= <bjorn@example.org>\r\n"
	"To: alice@example.test, \"Team\" <team@example.test>\r\n"
	"Cc: undisclosed-recipients:;\r\n"
	"Subject: =?ISO-8859-1?Q?R=E9sum=E9?= and (more) \"quotes\"\r\n"
	"Message-ID: <m1@example.org>\r\n"
	"In-Reply-To: <m0@example.test>\r\n"
	"MIME-Version: 1.0\r\n"
	"Content-Type: multipart/mixed; boundary=\"outer\"\r\n"
	"\r\n"
	"preamble\r\n"
	"--outer\r\n"
	"Content-Type: multipart/alternative; boundary=\"inner\"\r\n"
	"\r\n"
	"--inner\r\n"
	"Content-Type: text/plain; charset=iso-8859-1\r\n"
	"Content-Transfer-Encoding: quoted-printable\r\n"
	"\r\n"
	"Caf=E9 au lait, line one=\r\n"
	" continued\r\n"
	"--inner\r\n"
	"Content-Type: text/html; charset=utf-8\r\n"
	"Content-Language: en\r\n"
	"\r\n"
	"<p>Caf\xc3\xa9</p>\r\n"
	"--inner--\r\n"
	"--outer\r\n"
	"Content-Type: application/octet-stream; name=\"data.bin\"\r\n"
	"Content-Disposition: attachment; filename=\"data.bin\"\r\n"
	"Content-Transfer-Encoding: base64\r\n"
	"Content-ID: <part2@example.org>\r\n"
	"Content-Description: some octets\r\n"
	"\r\n"
	"AAECAwQFBgcICQ==\r\n"
	"--outer\r\n"
	"Content-Type: message/rfc822\r\n"
	"\r\n"
	"From: carol@example.net\r\n"
	"Subject: inner\r\n"
	"\r\n"
	"inner body\r\n"
	"--outer--\r\n"
	"epilogue\r\n";

static const char archive_msg2[] =
	"From: alice@example.test\r\n"
	"To: bob@example.org\r\n"
	"Subject: plain and short\r\n"
	"Date: Fri, 27 Nov 2026 08:00:00 +0000\r\n"
	"\r\n"
	"a short body\r\n";

/* As another tool may leave a file: LF line ends, none after the last
 * line, no S= size in the name. */
static const char archive_msg3[] =
	"Subject: written by another tool\n"
	"Content-Type: text/plain; charset=utf-8\n"
	"\n"
	"first\n"
	"\n"
	"last line without end";

static struct runtime *rt;

/* ---- the response stream ------------------------------------------------- */

enum { PREFIX_MAX = 96, TAIL_MAX = 24, PART_MAX = 256 * 1024 };

static struct {
	bool tls;               /* TLS records from here on */
	bool at_start;          /* the next octet begins a line */
	uint64_t literal;       /* octets of literal still to come */
	char prefix[PREFIX_MAX];/* the first octets of the line */
	size_t prefix_len;
	bool prefix_checked;
	char tail[TAIL_MAX];    /* the last octets of the line part */
	size_t tail_len;
	size_t part_len;        /* octets in the line part so far */
	bool line_starts_tagged;
	bool had_literal;       /* the line so far carried a literal */
} rs;

static void rs_reset(bool tls)
{
	memset(&rs, 0, sizeof rs);
	rs.tls = tls;
	rs.at_start = true;
}

static bool tag_char(unsigned char ch)
{
	/* ASTRING-CHAR but not '+' (RFC 3501 §9 "tag") */
	return ch > 0x20 && ch < 0x7f && !strchr("(){%*\"\\+", ch);
}

static bool starts(const char *p, size_t len, const char *word)
{
	size_t n = strlen(word);
	return len >= n && memcmp(p, word, n) == 0;
}

/* The untagged responses posthorn may send (after "* "). */
static bool untagged_ok(const char *p, size_t len)
{
	static const char *const words[] = {
		"OK ", "NO ", "BAD ", "BYE ", "PREAUTH ", "CAPABILITY ", "LIST ", "LSUB ",
		"STATUS ", "SEARCH", "FLAGS ", "ID ", "NAMESPACE ", "ENABLED",
		"VANISHED ", /* RFC 7162 §3.2.10 */
		"ESEARCH ", /* RFC 4731 §3.1, RFC 5267 §4.4 */
	};
	for (size_t i = 0; i < sizeof words / sizeof words[0]; i++)
		if (starts(p, len, words[i]))
			return true;
	/* "n EXISTS", "n RECENT", "n EXPUNGE", "n FETCH (" */
	size_t d = 0;
	while (d < len && p[d] >= '0' && p[d] <= '9')
		d++;
	if (d == 0 || d > 10 || d >= len || p[d] != ' ' || (p[0] == '0' && d > 1))
		return false;
	p += d + 1;
	len -= d + 1;
	return starts(p, len, "EXISTS") || starts(p, len, "RECENT") ||
	       starts(p, len, "EXPUNGE") || starts(p, len, "FETCH (");
}

/* The start of a line, once enough of it is known (or the line ended:
 * complete). */
static void check_prefix(bool complete)
{
	const char *p = rs.prefix;
	size_t len = rs.prefix_len;
	if (!complete && len < PREFIX_MAX)
		return;
	rs.prefix_checked = true;
	if (starts(p, len, "* ")) {
		CHECK(untagged_ok(p + 2, len - 2));
		return;
	}
	if (starts(p, len, "+ "))
		return;
	size_t t = 0;
	while (t < len && tag_char((unsigned char)p[t]))
		t++;
	CHECK(t > 0 && t <= 64 && t < len && p[t] == ' ');
	p += t + 1;
	len -= t + 1;
	CHECK(starts(p, len, "OK ") || starts(p, len, "NO ") || starts(p, len, "BAD "));
	rs.line_starts_tagged = true;
}

/* A literal announced at the end of the line part: "{n}" (octets). */
static bool literal_at_end(uint64_t *n)
{
	if (rs.tail_len < 3 || rs.tail[rs.tail_len - 1] != '}')
		return false;
	size_t i = rs.tail_len - 1;
	uint64_t v = 0, mul = 1;
	while (i > 0 && rs.tail[i - 1] >= '0' && rs.tail[i - 1] <= '9') {
		i--;
		CHECK(mul <= 1000000000000ull);
		v += (uint64_t)(rs.tail[i] - '0') * mul;
		mul *= 10;
	}
	if (i == 0 || rs.tail[i - 1] != '{' || i == rs.tail_len - 1)
		return false;
	*n = v;
	return true;
}

static void line_end(void)
{
	uint64_t n;
	if (!rs.prefix_checked)
		check_prefix(true);
	/* STARTTLS: what follows is the handshake */
	static const char begin_tls[] = " OK Begin TLS negotiation now";
	size_t bl = sizeof begin_tls - 1;
	if (rs.line_starts_tagged && !rs.had_literal && rs.part_len == rs.prefix_len &&
	    rs.prefix_len > bl && memcmp(rs.prefix + rs.prefix_len - bl, begin_tls, bl) == 0) {
		rs.tls = true;
		return;
	}
	if (literal_at_end(&n)) {
		/* a literal only inside a response line, never as a line */
		CHECK(rs.prefix_checked);
		rs.literal = n;
		rs.had_literal = true;
		rs.at_start = false;
	} else {
		rs.at_start = true;
		rs.prefix_len = 0;
		rs.prefix_checked = false;
		rs.line_starts_tagged = false;
		rs.had_literal = false;
	}
	rs.tail_len = 0;
	rs.part_len = 0;
}

static void check_bytes(const char *buf, size_t len)
{
	for (size_t i = 0; i < len && !rs.tls; i++) {
		unsigned char ch = (unsigned char)buf[i];
		if (rs.literal > 0) {
			rs.literal--;
			continue;
		}
		if (rs.at_start) {
			rs.at_start = false;
			rs.prefix_len = 0;
			rs.prefix_checked = false;
			rs.line_starts_tagged = false;
			rs.had_literal = false;
		}
		if (ch == '\n') {
			/* CRLF: the CR was the last octet of the line part */
			CHECK(rs.tail_len > 0 && rs.tail[rs.tail_len - 1] == '\r');
			rs.tail_len--;
			rs.part_len--;
			if (rs.prefix_len > 0 && !rs.prefix_checked &&
			    rs.prefix[rs.prefix_len - 1] == '\r')
				rs.prefix_len--;
			line_end();
			continue;
		}
		/* a CR only right before LF: checked when the next octet comes */
		CHECK(rs.tail_len == 0 || rs.tail[rs.tail_len - 1] != '\r');
		CHECK(ch == '\r' || (ch >= 0x20 && ch < 0x7f));
		if (rs.tail_len == TAIL_MAX) {
			memmove(rs.tail, rs.tail + 1, TAIL_MAX - 1);
			rs.tail_len--;
		}
		rs.tail[rs.tail_len++] = (char)ch;
		CHECK(++rs.part_len <= PART_MAX);
		if (!rs.prefix_checked && rs.prefix_len < PREFIX_MAX) {
			rs.prefix[rs.prefix_len++] = (char)ch;
			if (rs.prefix_len == PREFIX_MAX)
				check_prefix(false);
		}
	}
}

/* ---- the entry point -------------------------------------------------------- */

static void reset_store(void)
{
	fuzz_clean_store(rt);
	char file[128];
	snprintf(file, sizeof file, "cur/1000000010.M1P1Q10.fuzz,S=%zu:2,FS", strlen(archive_msg));
	fuzz_add_message(rt, "/.Archive", file, archive_msg);
	snprintf(file, sizeof file, "new/1000000011.M1P1Q11.fuzz,S=%zu", strlen(archive_msg2));
	fuzz_add_message(rt, "/.Archive", file, archive_msg2);
	fuzz_add_message(rt, "/.Archive", "cur/1000000012.M1P1Q12.fuzz:2,S", archive_msg3);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 2 || size > 200000)
		return 0;
	if (!rt) {
		message_init(); /* GMime, as the daemon's server_run() does */
		rt = fuzz_runtime(conf_text);
	}
	reset_store();
	unsigned mode = data[0];
	size_t srv = (mode & 4) ? 1 : 0;
	unsigned flags = ((mode & 1) ? FUZZ_REFUSED : 0) | ((mode & 2) ? FUZZ_IMPLICIT_TLS : 0);
	/* implicit TLS only where there is a certificate (server 0) */
	rs_reset((flags & FUZZ_IMPLICIT_TLS) && srv == 0);
	fuzz_session_raw(check_bytes);
	fuzz_session(rt, srv, imap_session_start, data + 2, size - 2, data[1] * 2654435761u, flags,
		     NULL);
	fuzz_session_raw(NULL);
	/* each input starts without the parsed messages of the one before */
	imap_session_cleanup();
	/* the server closed between lines, never inside a line or literal */
	if (!rs.tls) {
		CHECK(rs.literal == 0);
		CHECK(rs.at_start);
	}
	if (getenv("FUZZ_TRACE"))
		fprintf(stderr, "session ended%s\n", rs.tls ? " (in TLS)" : "");
	return 0;
}

/* Unit tests for imap_binary.c: the Content-Transfer-Encoding of a MIME
 * header (RFC 2045 §6.1) and the base64 and quoted-printable decoders
 * (RFC 2045 §6.7, §6.8) behind FETCH BINARY (RFC 3516). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "proto/imap/imap_binary.h"

static void test_cte_from_header(void **state)
{
	static const struct {
		const char *hdr;
		enum imap_cte cte;
	} cases[] = {
		{"Content-Type: text/plain\r\n\r\n", IMAP_CTE_IDENTITY},
		{"Content-Transfer-Encoding: base64\r\n\r\n", IMAP_CTE_BASE64},
		{"content-transfer-encoding:   BASE64  \r\n", IMAP_CTE_BASE64},
		{"Content-Transfer-Encoding: quoted-printable\n\n", IMAP_CTE_QP},
		{"Content-Transfer-Encoding:\r\n quoted-printable (folded)\r\n\r\n", IMAP_CTE_QP},
		{"Content-Transfer-Encoding : 7bit\r\n", IMAP_CTE_IDENTITY},
		{"Content-Transfer-Encoding: 8BIT\r\n", IMAP_CTE_IDENTITY},
		{"Content-Transfer-Encoding: binary\r\n", IMAP_CTE_IDENTITY},
		{"Content-Transfer-Encoding: x-uuencode\r\n", IMAP_CTE_UNKNOWN},
		{"Content-Transfer-Encoding: base64x\r\n", IMAP_CTE_UNKNOWN},
		{"Content-Transfer-Encoding:\r\n", IMAP_CTE_IDENTITY},
		/* after the blank line: the body, not the header */
		{"Subject: x\r\n\r\nContent-Transfer-Encoding: base64\r\n", IMAP_CTE_IDENTITY},
		/* a field whose name only starts alike */
		{"Content-Transfer-Encodings: base64\r\n", IMAP_CTE_IDENTITY},
		{"", IMAP_CTE_IDENTITY},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		const char *h = cases[i].hdr;
		if (imap_binary_cte(h, strlen(h)) != cases[i].cte)
			fail_msg("case %zu: %s", i, h);
	}
}

static void expect_decoded(enum imap_cte cte, const char *in, const char *want, size_t wantlen)
{
	size_t n = 0;
	char *out = imap_binary_decode(cte, in, strlen(in), &n);
	if (n != wantlen || memcmp(out, want, n) != 0)
		fail_msg("decoding \"%s\": %zu octets \"%.*s\", wanted %zu", in, n, (int)n, out,
			 wantlen);
	free(out);
}

#define EXPECT(cte, in, want) expect_decoded((cte), (in), (want), sizeof(want) - 1)

static void test_base64(void **state)
{
	EXPECT(IMAP_CTE_BASE64, "aGVsbG8gd29ybGQ=", "hello world");
	/* white space and line breaks anywhere are not data */
	EXPECT(IMAP_CTE_BASE64, "\r\n  aGVs    \r\n bG8g  \r\n   d29y  \t \r\n    bGQ= \r\n",
	       "hello world");
	EXPECT(IMAP_CTE_BASE64, "YWJjZGVmZw1oaWprbA0KbW5vCnBxcnN0dXZxeHl6",
	       "abcdefg\rhijkl\r\nmno\npqrstuvqxyz");
	/* NUL octets come through (literal8) */
	EXPECT(IMAP_CTE_BASE64, "AGEA", "\0a\0");
	/* octets outside the alphabet are skipped; a lone sextet is no octet */
	EXPECT(IMAP_CTE_BASE64, "a!G@V#s$", "hel");
	EXPECT(IMAP_CTE_BASE64, "Q", "");
	EXPECT(IMAP_CTE_BASE64, "", "");
}

static void test_quoted_printable(void **state)
{
	/* imaptest's fetch-binary-mime-qp: 65 octets */
	EXPECT(IMAP_CTE_QP,
	       "hello  \r\nbar=\r\n\r\nfoo\t=\r\nbar\r\nfoo\t \t= \r\n=62\r\nfoo = \t\r\nbar\r\n"
	       "foo =\r\n=62\r\nfoo  \r\nbar=\r\n\r\nfoo_bar\r\n",
	       "hello\r\nbar\r\nfoo\tbar\r\nfoo\t \tb\r\nfoo bar\r\nfoo b\r\nfoo\r\nbar\r\n"
	       "foo_bar\r\n");
	EXPECT(IMAP_CTE_QP, "a=3Db=3db=00c", "a=b=b\0c");
	/* a "=" not followed by two hex digits stays as it is */
	EXPECT(IMAP_CTE_QP, "a=zz b=4", "a=zz b=4");
	/* LF line ends become CRLF; a last line without one stays without */
	EXPECT(IMAP_CTE_QP, "x\ny", "x\r\ny");
	EXPECT(IMAP_CTE_QP, "=", "");
	EXPECT(IMAP_CTE_IDENTITY, "a=3D", "a=3D");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_cte_from_header),
		cmocka_unit_test(test_base64),
		cmocka_unit_test(test_quoted_printable),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

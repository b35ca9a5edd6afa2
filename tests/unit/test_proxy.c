/* test_proxy: the PROXY protocol header parser (HAProxy's specification,
 * versions 1 and 2) — every valid form, every malformed one, and every
 * header fed one octet at a time: a valid one needs more until its last
 * octet, a malformed one is refused as soon as it cannot be valid and
 * stays refused, and octets after a header are never taken. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "net/addr.h"
#include "net/proxy.h"

/* ---- helpers ------------------------------------------------------------- */

static enum proxy_status parse(const void *buf, size_t len, struct proxy_header *h,
			       const char **why)
{
	return proxy_parse(buf, len, h, why);
}

/* Every proper prefix of a valid header needs more; the whole is DONE
 * and takes exactly len octets, with or without client bytes after it. */
static void valid_fed_bytewise(const uint8_t *buf, size_t len, struct proxy_header *h)
{
	const char *why;
	for (size_t i = 0; i < len; i++) {
		assert_int_equal(parse(buf, i, h, &why), PROXY_NEED_MORE);
		assert_null(why);
	}
	uint8_t more[PROXY_HEADER_MAX + 64];
	assert_true(len + 20 <= sizeof more);
	memcpy(more, buf, len);
	memcpy(more + len, "EHLO client.example\r\n", 20);
	struct proxy_header h2;
	assert_int_equal(parse(more, len + 20, &h2, &why), PROXY_DONE);
	assert_int_equal(h2.length, len);
	assert_int_equal(parse(buf, len, h, &why), PROXY_DONE);
	assert_null(why);
	assert_int_equal(h->length, len);
	assert_memory_equal(&h2, h, sizeof h2);
}

/* Fed one octet at a time, a malformed header needs more, then is refused
 * with reason `want` and stays refused, for that reason, for every longer prefix. */
static void bad_fed_bytewise(const uint8_t *buf, size_t len, const char *want)
{
	struct proxy_header h;
	const char *why = NULL;
	bool refused = false;
	for (size_t i = 0; i <= len; i++) {
		enum proxy_status st = parse(buf, i, &h, &why);
		assert_int_not_equal(st, PROXY_DONE);
		if (refused)
			assert_int_equal(st, PROXY_BAD);
		refused = st == PROXY_BAD;
		if (refused)
			assert_string_equal(why, want);
	}
	assert_true(refused);
	assert_string_equal(why, want);
}

static void bad_text(const char *text, const char *want)
{
	bad_fed_bytewise((const uint8_t *)text, strlen(text), want);
}

static void client_is(const struct proxy_header *h, const char *addr, unsigned port)
{
	char text[ADDR_TEXT_SIZE];
	assert_false(h->local);
	addr_text((const struct sockaddr *)&h->src, text, sizeof text);
	assert_string_equal(text, addr);
	if (h->src.ss_family == AF_INET) {
		assert_int_equal(h->srclen, sizeof(struct sockaddr_in));
		assert_int_equal(ntohs(((const struct sockaddr_in *)&h->src)->sin_port), port);
	} else {
		assert_int_equal(h->src.ss_family, AF_INET6);
		assert_int_equal(h->srclen, sizeof(struct sockaddr_in6));
		assert_int_equal(ntohs(((const struct sockaddr_in6 *)&h->src)->sin6_port), port);
	}
}

/* ---- version 1 ------------------------------------------------------------- */

static void v1_valid(const char *text, struct proxy_header *h)
{
	valid_fed_bytewise((const uint8_t *)text, strlen(text), h);
	assert_int_equal(h->version, 1);
}

static void test_v1_tcp4(void **state)
{
	struct proxy_header h;
	v1_valid("PROXY TCP4 192.0.2.7 198.51.100.1 56324 25\r\n", &h);
	client_is(&h, "192.0.2.7", 56324);
	v1_valid("PROXY TCP4 0.0.0.0 255.255.255.255 0 65535\r\n", &h);
	client_is(&h, "0.0.0.0", 0);
}

static void test_v1_tcp6(void **state)
{
	struct proxy_header h;
	v1_valid("PROXY TCP6 2001:db8::7 2001:db8::1 40000 993\r\n", &h);
	client_is(&h, "2001:db8::7", 40000);
	/* the longest addresses there are */
	v1_valid("PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
		 "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n", &h);
	client_is(&h, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535);
}

static void test_v1_unknown(void **state)
{
	struct proxy_header h;
	v1_valid("PROXY UNKNOWN\r\n", &h);
	assert_true(h.local);
	/* anything up to the CRLF is ignored after UNKNOWN */
	v1_valid("PROXY UNKNOWN ffff:: ffff:: 1 2\r\n", &h);
	assert_true(h.local);
}

/* 107 octets is the longest line; 108 is refused before its LF arrives. */
static void test_v1_length_bound(void **state)
{
	char line[PROXY_V1_MAX + 2];
	memset(line, 'x', sizeof line);
	memcpy(line, "PROXY UNKNOWN ", 14);
	memcpy(line + PROXY_V1_MAX - 2, "\r\n", 2);
	struct proxy_header h;
	valid_fed_bytewise((const uint8_t *)line, PROXY_V1_MAX, &h);
	assert_true(h.local);
	memcpy(line + PROXY_V1_MAX - 2, "xx\r\n", 4);
	bad_fed_bytewise((const uint8_t *)line, PROXY_V1_MAX + 1, "v1-too-long");
	/* a CR as the 107th octet, its LF the 108th */
	memcpy(line + PROXY_V1_MAX - 2, "x\r\n", 3);
	bad_fed_bytewise((const uint8_t *)line, PROXY_V1_MAX + 1, "v1-too-long");
	/* a CR as the 107th octet and no LF after it: too long, however
	 * many octets follow (the reason never changes as more arrive) */
	memcpy(line + PROXY_V1_MAX - 2, "x\rx", 3);
	bad_fed_bytewise((const uint8_t *)line, PROXY_V1_MAX + 1, "v1-too-long");
	/* no line end at all */
	memset(line + 14, 'x', sizeof line - 14);
	bad_fed_bytewise((const uint8_t *)line, sizeof line, "v1-too-long");
}

static void test_v1_malformed(void **state)
{
	bad_text("proxy TCP4 192.0.2.7 198.51.100.1 1 25\r\n", "bad-signature");
	bad_text("PROXY\r\n", "bad-signature");
	bad_text("EHLO client.example\r\n", "bad-signature");
	bad_text("PROXYTCP4\r\n", "bad-signature");
	bad_text("PROXY TCP5 192.0.2.7 198.51.100.1 1 25\r\n", "v1-bad-protocol");
	bad_text("PROXY UDP4 192.0.2.7 198.51.100.1 1 25\r\n", "v1-bad-protocol");
	bad_text("PROXY UNKNOWNX\r\n", "v1-bad-fields");
	bad_text("PROXY TCP4 192.0.2.7 198.51.100.1 1\r\n", "v1-bad-fields");
	bad_text("PROXY TCP4 192.0.2.7 198.51.100.1 1 25 6\r\n", "v1-bad-fields");
	bad_text("PROXY TCP4 192.0.2.7  198.51.100.1 1 25\r\n", "v1-bad-fields");
	bad_text("PROXY TCP4 192.0.2.7 198.51.100.1 1 25 \r\n", "v1-bad-fields");
	bad_text("PROXY  TCP4 192.0.2.7 198.51.100.1 1 25\r\n", "v1-bad-fields");
	bad_text("PROXY \r\n", "v1-bad-fields");
	bad_text("PROXY TCP4 192.0.2 198.51.100.1 1 25\r\n", "v1-bad-address");
	bad_text("PROXY TCP4 192.0.2.256 198.51.100.1 1 25\r\n", "v1-bad-address");
	bad_text("PROXY TCP4 2001:db8::7 198.51.100.1 1 25\r\n", "v1-bad-address");
	bad_text("PROXY TCP6 192.0.2.7 2001:db8::1 1 25\r\n", "v1-bad-address");
	bad_text("PROXY TCP6 2001:db8::7 nowhere 1 25\r\n", "v1-bad-address");
	bad_text("PROXY TCP4 192.0.2.7 198.51.100.1 65536 25\r\n", "v1-bad-port");
	bad_text("PROXY TCP4 192.0.2.7 198.51.100.1 1 025\r\n", "v1-bad-port");
	bad_text("PROXY TCP4 192.0.2.7 198.51.100.1 -1 25\r\n", "v1-bad-port");
	bad_text("PROXY TCP4 192.0.2.7 198.51.100.1 +1 25\r\n", "v1-bad-port");
	bad_text("PROXY TCP4 192.0.2.7 198.51.100.1 1 2x\r\n", "v1-bad-port");
	bad_text("PROXY TCP4 192.0.2.7 198.51.100.1 1 999999\r\n", "v1-bad-port");
	bad_text("PROXY TCP4 192.0.2.7 198.51.100.1 1 25\n", "v1-bad-line-end");
	bad_text("PROXY TCP4 192.0.2.7 198.51.100.1 1 25\rX\n", "v1-bad-line-end");
	bad_text("PROXY TCP4 192.0.2.7\r198.51.100.1 1 25\r\n", "v1-bad-line-end");
	bad_text("PROXY TCP4 192.0.2.7\t198.51.100.1 1 25\r\n", "v1-bad-character");
	bad_text("PROXY UNKNOWN \x80\r\n", "v1-bad-character");
	const char nul[] = "PROXY TCP4 192.0.2.7\0 198.51.100.1 1 25\r\n";
	bad_fed_bytewise((const uint8_t *)nul, sizeof nul - 1, "v1-bad-character");
}

/* ---- version 2 ------------------------------------------------------------- */

static const uint8_t sig[12] = {0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d,
				0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a};

/* A v2 header: version/command, family/transport, then body; returns
 * its length in out. */
static size_t v2(uint8_t *out, uint8_t ver_cmd, uint8_t fam, const void *body, size_t blen)
{
	memcpy(out, sig, 12);
	out[12] = ver_cmd;
	out[13] = fam;
	out[14] = (uint8_t)(blen >> 8);
	out[15] = (uint8_t)blen;
	if (blen)
		memcpy(out + 16, body, blen);
	return 16 + blen;
}

static const uint8_t inet_body[12] = {192, 0, 2, 7, 198, 51, 100, 1, 0xdc, 0x04, 0, 25};

static void test_v2_inet(void **state)
{
	uint8_t buf[PROXY_HEADER_MAX];
	struct proxy_header h;
	size_t n = v2(buf, 0x21, 0x11, inet_body, sizeof inet_body);
	valid_fed_bytewise(buf, n, &h);
	assert_int_equal(h.version, 2);
	client_is(&h, "192.0.2.7", 0xdc04);
}

static void test_v2_inet6(void **state)
{
	uint8_t body[36] = {0x20, 0x01, 0x0d, 0xb8, [15] = 7, [16] = 0x20, [17] = 0x01,
			    [18] = 0x0d, [19] = 0xb8, [31] = 1, [32] = 0x9c, [33] = 0x40,
			    [34] = 0x03, [35] = 0xe1};
	uint8_t buf[PROXY_HEADER_MAX];
	struct proxy_header h;
	size_t n = v2(buf, 0x21, 0x21, body, sizeof body);
	valid_fed_bytewise(buf, n, &h);
	client_is(&h, "2001:db8::7", 40000);
}

/* LOCAL: the balancer's own connection; any family and body is ignored. */
static void test_v2_local(void **state)
{
	uint8_t buf[PROXY_HEADER_MAX];
	struct proxy_header h;
	size_t n = v2(buf, 0x20, 0x00, NULL, 0);
	valid_fed_bytewise(buf, n, &h);
	assert_true(h.local);
	n = v2(buf, 0x20, 0x11, "\x01\x02\x03", 3);
	valid_fed_bytewise(buf, n, &h);
	assert_true(h.local);
}

/* TLVs after the addresses are skipped when each lies whole in the body. */
static void test_v2_tlvs(void **state)
{
	uint8_t body[12 + 3 + 5 + 3 + 0 + 3 + 2];
	memcpy(body, inet_body, 12);
	memcpy(body + 12, "\x01\x00\x05h2abc", 8);   /* ALPN, 5 octets */
	memcpy(body + 20, "\x04\x00\x00", 3);        /* NOOP, empty */
	memcpy(body + 23, "\x05\x00\x02id", 5);      /* UNIQUE_ID */
	uint8_t buf[PROXY_HEADER_MAX];
	struct proxy_header h;
	size_t n = v2(buf, 0x21, 0x11, body, sizeof body);
	valid_fed_bytewise(buf, n, &h);
	client_is(&h, "192.0.2.7", 0xdc04);

	/* the longest body accepted */
	uint8_t big[PROXY_V2_BODY_MAX];
	memcpy(big, inet_body, 12);
	size_t vlen = PROXY_V2_BODY_MAX - 12 - 3;
	big[12] = 0x04;
	big[13] = (uint8_t)(vlen >> 8);
	big[14] = (uint8_t)vlen;
	memset(big + 15, 0, vlen);
	n = v2(buf, 0x21, 0x11, big, sizeof big);
	assert_int_equal(n, PROXY_HEADER_MAX);
	valid_fed_bytewise(buf, n, &h);
}

static void bad_v2(uint8_t ver_cmd, uint8_t fam, const void *body, size_t blen, const char *want)
{
	uint8_t buf[PROXY_HEADER_MAX];
	size_t n = v2(buf, ver_cmd, fam, body, blen);
	bad_fed_bytewise(buf, n, want);
}

static void test_v2_malformed(void **state)
{
	/* each octet of the signature wrong in turn */
	for (size_t i = 0; i < 12; i++) {
		uint8_t buf[PROXY_HEADER_MAX];
		size_t n = v2(buf, 0x21, 0x11, inet_body, sizeof inet_body);
		buf[i] ^= 0x40;
		bad_fed_bytewise(buf, n, "bad-signature");
	}
	bad_v2(0x11, 0x11, inet_body, sizeof inet_body, "v2-bad-version");
	bad_v2(0x31, 0x11, inet_body, sizeof inet_body, "v2-bad-version");
	bad_v2(0x22, 0x11, inet_body, sizeof inet_body, "v2-bad-command");
	bad_v2(0x2f, 0x11, inet_body, sizeof inet_body, "v2-bad-command");
	/* addresses shorter than the family needs */
	bad_v2(0x21, 0x11, inet_body, 11, "v2-short-address");
	bad_v2(0x21, 0x21, inet_body, 12, "v2-short-address");
	bad_v2(0x21, 0x11, NULL, 0, "v2-short-address");
	/* no client address a rule could judge */
	bad_v2(0x21, 0x00, NULL, 0, "v2-unsupported-family");
	uint8_t unix_body[216] = {0};
	bad_v2(0x21, 0x31, unix_body, sizeof unix_body, "v2-unsupported-family");
	bad_v2(0x21, 0x12, inet_body, sizeof inet_body, "v2-not-stream");
	bad_v2(0x21, 0x10, inet_body, sizeof inet_body, "v2-not-stream");
	/* TLVs that do not fit the length */
	uint8_t body[12 + 4];
	memcpy(body, inet_body, 12);
	memcpy(body + 12, "\x04\x00\x02x", 4);     /* says 2, has 1 */
	bad_v2(0x21, 0x11, body, sizeof body, "v2-bad-tlv");
	bad_v2(0x21, 0x11, body, 12 + 1, "v2-bad-tlv"); /* a type alone */
	bad_v2(0x21, 0x11, body, 12 + 2, "v2-bad-tlv");
	memcpy(body + 12, "\x04\xff\xff", 3);      /* 65535 */
	bad_v2(0x21, 0x11, body, 12 + 3, "v2-bad-tlv");
}

/* A length beyond the bound is refused on the 16th octet, before any of
 * the body is awaited. */
static void test_v2_too_long(void **state)
{
	uint8_t buf[PROXY_V2_FIXED];
	memcpy(buf, sig, 12);
	buf[12] = 0x21;
	buf[13] = 0x11;
	buf[14] = (uint8_t)((PROXY_V2_BODY_MAX + 1) >> 8);
	buf[15] = (uint8_t)(PROXY_V2_BODY_MAX + 1);
	bad_fed_bytewise(buf, sizeof buf, "v2-too-long");
	buf[14] = buf[15] = 0xff;
	bad_fed_bytewise(buf, sizeof buf, "v2-too-long");
}

/* A length that promises more than is sent needs more, forever: the
 * reader's timeout ends it. */
static void test_v2_length_lies(void **state)
{
	uint8_t buf[PROXY_HEADER_MAX];
	size_t n = v2(buf, 0x21, 0x11, inet_body, sizeof inet_body);
	buf[15] = 13;
	struct proxy_header h;
	const char *why;
	assert_int_equal(parse(buf, n, &h, &why), PROXY_NEED_MORE);
	/* and one that promises less takes the client's bytes for TLVs */
	n = v2(buf, 0x21, 0x11, inet_body, sizeof inet_body);
	buf[15] = 14;
	memcpy(buf + n, "EHLO x\r\n", 8);
	assert_int_equal(parse(buf, n + 8, &h, &why), PROXY_BAD);
	assert_string_equal(why, "v2-bad-tlv");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_v1_tcp4),
		cmocka_unit_test(test_v1_tcp6),
		cmocka_unit_test(test_v1_unknown),
		cmocka_unit_test(test_v1_length_bound),
		cmocka_unit_test(test_v1_malformed),
		cmocka_unit_test(test_v2_inet),
		cmocka_unit_test(test_v2_inet6),
		cmocka_unit_test(test_v2_local),
		cmocka_unit_test(test_v2_tlvs),
		cmocka_unit_test(test_v2_malformed),
		cmocka_unit_test(test_v2_too_long),
		cmocka_unit_test(test_v2_length_lies),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

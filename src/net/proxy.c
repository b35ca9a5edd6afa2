/* proxy: the PROXY protocol header, versions 1 (text) and 2 (binary), as
 * HAProxy's specification defines them; strict, bounded, and decided on
 * the fewest octets that show a header cannot be valid. */
#include "net/proxy.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

/* ---- version 1: "PROXY TCP4 1.2.3.4 5.6.7.8 1234 25\r\n" ------------------ */

static const char proxy_v1_prefix[] = "PROXY ";
enum { PROXY_V1_PREFIX_LEN = sizeof proxy_v1_prefix - 1 };

/* The fields of a v1 line: "PROXY" PROTO SRC DST SPORT DPORT. */
enum { V1_PROTO, V1_SRC, V1_DST, V1_SPORT, V1_DPORT, V1_FIELDS };

/* A port in decimal, 0 to 65535, no sign and no leading zero. */
static bool proxy_v1_port(const char *s, size_t n, uint16_t *port)
{
	if (n == 0 || n > 5 || (n > 1 && s[0] == '0'))
		return false;
	unsigned v = 0;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (unsigned)(s[i] - '0');
	}
	if (v > 65535)
		return false;
	*port = (uint16_t)v;
	return true;
}

/* An address of the family, exactly the n octets at s. */
static bool proxy_v1_addr(int family, const char *s, size_t n, void *out)
{
	char text[64]; /* the longest IPv6 text is 45 octets */
	if (n == 0 || n >= sizeof text)
		return false;
	memcpy(text, s, n);
	text[n] = '\0';
	return inet_pton(family, text, out) == 1;
}

/* Split line (no CRLF) after "PROXY " at single spaces into at most
 * V1_FIELDS fields; the number found, or -1 for an empty field (two
 * spaces, a space at the end) or too many. */
static int proxy_v1_split(const char *line, size_t n, const char *f[], size_t fn[])
{
	int k = 0;
	size_t start = 0;
	for (size_t i = 0; i <= n; i++) {
		if (i < n && line[i] != ' ')
			continue;
		if (i == start || k == V1_FIELDS)
			return -1;
		f[k] = line + start;
		fn[k] = i - start;
		k++;
		start = i + 1;
	}
	return k;
}

static bool proxy_field_is(const char *f, size_t n, const char *word)
{
	return n == strlen(word) && memcmp(f, word, n) == 0;
}

static enum proxy_status proxy_bad(const char **why, const char *reason)
{
	*why = reason;
	return PROXY_BAD;
}

/* The line between "PROXY " and its CRLF (n octets, no CR or LF in it). */
static enum proxy_status proxy_v1_fields(const char *line, size_t n, struct proxy_header *h,
					 const char **why)
{
	/* "UNKNOWN" may be followed by anything up to the CRLF (spec §2.1) */
	if (n >= 7 && memcmp(line, "UNKNOWN", 7) == 0 && (n == 7 || line[7] == ' ')) {
		h->local = true;
		return PROXY_DONE;
	}
	const char *f[V1_FIELDS];
	size_t fn[V1_FIELDS];
	if (proxy_v1_split(line, n, f, fn) != V1_FIELDS)
		return proxy_bad(why, "v1-bad-fields");
	uint16_t sport, dport;
	if (!proxy_v1_port(f[V1_SPORT], fn[V1_SPORT], &sport) ||
	    !proxy_v1_port(f[V1_DPORT], fn[V1_DPORT], &dport))
		return proxy_bad(why, "v1-bad-port");
	if (proxy_field_is(f[V1_PROTO], fn[V1_PROTO], "TCP4")) {
		struct sockaddr_in *in = (struct sockaddr_in *)&h->src;
		struct in_addr dst;
		in->sin_family = AF_INET;
		in->sin_port = htons(sport);
		h->srclen = sizeof *in;
		if (!proxy_v1_addr(AF_INET, f[V1_SRC], fn[V1_SRC], &in->sin_addr) ||
		    !proxy_v1_addr(AF_INET, f[V1_DST], fn[V1_DST], &dst))
			return proxy_bad(why, "v1-bad-address");
		return PROXY_DONE;
	}
	if (proxy_field_is(f[V1_PROTO], fn[V1_PROTO], "TCP6")) {
		struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&h->src;
		struct in6_addr dst;
		in6->sin6_family = AF_INET6;
		in6->sin6_port = htons(sport);
		h->srclen = sizeof *in6;
		if (!proxy_v1_addr(AF_INET6, f[V1_SRC], fn[V1_SRC], &in6->sin6_addr) ||
		    !proxy_v1_addr(AF_INET6, f[V1_DST], fn[V1_DST], &dst))
			return proxy_bad(why, "v1-bad-address");
		return PROXY_DONE;
	}
	return proxy_bad(why, "v1-bad-protocol");
}

static enum proxy_status proxy_v1(const uint8_t *buf, size_t len, struct proxy_header *h,
				  const char **why)
{
	size_t n = len < PROXY_V1_MAX ? len : PROXY_V1_MAX;
	const uint8_t *lf = memchr(buf, '\n', n);
	/* the line so far: up to its LF, or all of the first 107 octets */
	size_t end = lf ? (size_t)(lf - buf) : n;
	const uint8_t *cr = memchr(buf, '\r', end);
	if (cr && cr + 1 < buf + end)
		return proxy_bad(why, "v1-bad-line-end"); /* a CR not right before the LF */
	if (!lf)
		return len >= PROXY_V1_MAX ? proxy_bad(why, "v1-too-long") : PROXY_NEED_MORE;
	if (!cr || cr + 1 != lf)
		return proxy_bad(why, "v1-bad-line-end");
	size_t linelen = (size_t)(cr - buf);
	for (size_t i = 0; i < linelen; i++)
		if (buf[i] < 0x20 || buf[i] > 0x7e)
			return proxy_bad(why, "v1-bad-character");
	h->version = 1;
	h->length = linelen + 2;
	return proxy_v1_fields((const char *)buf + PROXY_V1_PREFIX_LEN,
			       linelen - PROXY_V1_PREFIX_LEN, h, why);
}

/* ---- version 2: a binary header after a 12-octet signature ----------------- */

static const uint8_t proxy_v2_sig[12] = {0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d,
					 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a};

enum {
	V2_VERSION = 0x20,       /* high nibble of octet 13 */
	V2_CMD_LOCAL = 0x0,
	V2_CMD_PROXY = 0x1,
	V2_FAM_UNSPEC = 0x0,
	V2_FAM_INET = 0x1,
	V2_FAM_INET6 = 0x2,
	V2_FAM_UNIX = 0x3,
	V2_TRANS_STREAM = 0x1,
	V2_INET_LEN = 12,        /* 2 x 4 address octets, 2 x 2 port octets */
	V2_INET6_LEN = 36,
	V2_TLV_HEAD = 3,         /* type, 16-bit length */
};

/* Every TLV after the addresses lies whole inside the body (spec §2.2.7). */
static bool proxy_v2_tlvs_fit(const uint8_t *p, size_t n)
{
	while (n > 0) {
		if (n < V2_TLV_HEAD)
			return false;
		size_t vlen = (size_t)p[1] << 8 | p[2];
		if (vlen > n - V2_TLV_HEAD)
			return false;
		p += V2_TLV_HEAD + vlen;
		n -= V2_TLV_HEAD + vlen;
	}
	return true;
}

/* A PROXY command's addresses (body: body_len octets after the 16). */
static enum proxy_status proxy_v2_addresses(unsigned family, const uint8_t *body,
					    size_t body_len, struct proxy_header *h,
					    const char **why)
{
	size_t need;
	if (family == V2_FAM_INET) {
		need = V2_INET_LEN;
		if (body_len < need)
			return proxy_bad(why, "v2-short-address");
		struct sockaddr_in *in = (struct sockaddr_in *)&h->src;
		in->sin_family = AF_INET;
		memcpy(&in->sin_addr, body, 4);
		memcpy(&in->sin_port, body + 8, 2); /* both in network order */
		h->srclen = sizeof *in;
	} else if (family == V2_FAM_INET6) {
		need = V2_INET6_LEN;
		if (body_len < need)
			return proxy_bad(why, "v2-short-address");
		struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&h->src;
		in6->sin6_family = AF_INET6;
		memcpy(&in6->sin6_addr, body, 16);
		memcpy(&in6->sin6_port, body + 32, 2);
		h->srclen = sizeof *in6;
	} else {
		/* UNSPEC with PROXY may be refused (spec §2.2); a UNIX socket's
		 * path is no client address the rules could judge */
		return proxy_bad(why, "v2-unsupported-family");
	}
	if (!proxy_v2_tlvs_fit(body + need, body_len - need))
		return proxy_bad(why, "v2-bad-tlv");
	return PROXY_DONE;
}

static enum proxy_status proxy_v2(const uint8_t *buf, size_t len, struct proxy_header *h,
				  const char **why)
{
	size_t sig = len < sizeof proxy_v2_sig ? len : sizeof proxy_v2_sig;
	if (memcmp(buf, proxy_v2_sig, sig) != 0)
		return proxy_bad(why, "bad-signature");
	if (len > 12 && (buf[12] & 0xf0) != V2_VERSION)
		return proxy_bad(why, "v2-bad-version");
	unsigned cmd = len > 12 ? buf[12] & 0x0f : V2_CMD_LOCAL;
	if (cmd != V2_CMD_LOCAL && cmd != V2_CMD_PROXY)
		return proxy_bad(why, "v2-bad-command");
	if (len < PROXY_V2_FIXED)
		return PROXY_NEED_MORE;
	size_t body_len = (size_t)buf[14] << 8 | buf[15];
	if (body_len > PROXY_V2_BODY_MAX)
		return proxy_bad(why, "v2-too-long");
	if (len < PROXY_V2_FIXED + body_len)
		return PROXY_NEED_MORE;
	h->version = 2;
	h->length = PROXY_V2_FIXED + body_len;
	if (cmd == V2_CMD_LOCAL) {
		/* a balancer's own connection: whatever follows is ignored */
		h->local = true;
		return PROXY_DONE;
	}
	unsigned family = buf[13] >> 4, transport = buf[13] & 0x0f;
	if (family != V2_FAM_UNSPEC && family != V2_FAM_UNIX && transport != V2_TRANS_STREAM)
		return proxy_bad(why, "v2-not-stream");
	return proxy_v2_addresses(family, buf + PROXY_V2_FIXED, body_len, h, why);
}

/* ---- either ----------------------------------------------------------------- */

enum proxy_status proxy_parse(const uint8_t *buf, size_t len, struct proxy_header *h,
			      const char **why)
{
	memset(h, 0, sizeof *h);
	*why = NULL;
	if (len == 0)
		return PROXY_NEED_MORE;
	if (buf[0] == proxy_v2_sig[0])
		return proxy_v2(buf, len, h, why);
	size_t pre = len < PROXY_V1_PREFIX_LEN ? len : PROXY_V1_PREFIX_LEN;
	if (memcmp(buf, proxy_v1_prefix, pre) != 0)
		return proxy_bad(why, "bad-signature");
	if (len < PROXY_V1_PREFIX_LEN)
		return PROXY_NEED_MORE;
	return proxy_v1(buf, len, h, why);
}

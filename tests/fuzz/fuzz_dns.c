/* libFuzzer entry point for DNS answers as posthorn consumes them: the
 * resolver (dns.c over c-ares, in the libevent loop) asks a fake DNS
 * server on a loopback UDP port, which answers every query with the next
 * reply of the input: the query's ID and question are copied in (c-ares
 * drops anything else), header flags, section counts and the records are
 * the fuzzer's.  So c-ares' reply checks, dns.c's own reader (names,
 * compression, CNAME chains, TTLs, SOA negative TTLs), the cache, the
 * forward-confirmed reverse lookup, the null MX rules and the MX ordering
 * all see hostile answers.  For MX the targets then go on as smtp_client
 * does: the first SMTP_CLIENT_MAX_HOSTS hosts in order, an A/AAAA lookup
 * each.  TXT answers come whole or not at all.  Checks: MX by preference, only a lone null MX has the empty host,
 * every name a lower-case host name, addresses of the family asked.
 *
 * Input: byte 0 = what to look up (0 MX, 1 A/AAAA, 2 PTR, 3 FCrDNS of an
 * IPv4 client, 4 FCrDNS of an IPv6 client, 5 TXT), then replies, each a 16-bit
 * big-endian length and that many octets: flags (2), ANCOUNT, NSCOUNT,
 * ARCOUNT (2 each), then the sections after the question (offset 12 is
 * the question's name, for compression pointers 0xc00c). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>

#include "conf/conf.h"
#include "net/dns.h"
#include "harness.h"
#include "queue/smtp_client.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct fake {
	int fd;
	const uint8_t *data;
	size_t size, pos;
	unsigned answered;
};

static struct event_base *base;
static struct fake fake;
static struct event *fake_ev;
static struct conf_dns servers;
static struct conf_sockaddr server_addr;

/* The next reply of the input, made to answer query q. */
static size_t fake_reply(const uint8_t *q, size_t qlen, uint8_t *out, size_t outsz)
{
	/* the question: name labels, then type and class */
	size_t qend = 12;
	while (qend < qlen && q[qend] != 0)
		qend += 1u + q[qend];
	qend += 5;
	if (qlen < 12 || qend > qlen)
		return 0;
	const uint8_t *r = NULL;
	size_t rlen = 0;
	if (fake.size - fake.pos >= 2) {
		rlen = (size_t)fake.data[fake.pos] << 8 | fake.data[fake.pos + 1];
		fake.pos += 2;
		if (rlen > fake.size - fake.pos)
			rlen = fake.size - fake.pos;
		r = fake.data + fake.pos;
		fake.pos += rlen;
	}
	uint8_t head[8] = {0x81, 0x83, 0, 0, 0, 0, 0, 0}; /* no more replies: NXDOMAIN */
	if (r)
		memcpy(head, r, rlen < 8 ? rlen : 8);
	size_t body = r && rlen > 8 ? rlen - 8 : 0;
	size_t qsize = qend - 12;
	if (12 + qsize + body > outsz)
		body = outsz - 12 - qsize;
	out[0] = q[0];
	out[1] = q[1];
	out[2] = (uint8_t)((head[0] | 0x80) & ~0x7a); /* a response, QUERY, not truncated */
	out[3] = head[1];
	out[4] = 0;
	out[5] = 1;
	memcpy(out + 6, head + 2, 6);
	memcpy(out + 12, q + 12, qsize);
	if (body)
		memcpy(out + 12 + qsize, r + 8, body);
	return 12 + qsize + body;
}

static void fake_read(evutil_socket_t fd, short what, void *arg)
{
	uint8_t q[1500], out[65536];
	struct sockaddr_storage from;
	socklen_t fromlen = sizeof from;
	ssize_t n = recvfrom(fd, q, sizeof q, 0, (struct sockaddr *)&from, &fromlen);
	if (n <= 0)
		return;
	size_t len = fake_reply(q, (size_t)n, out, sizeof out);
	if (len) {
		fake.answered++;
		(void)sendto(fd, out, len, 0, (struct sockaddr *)&from, fromlen);
	}
}

static void setup(void)
{
	base = event_base_new();
	CHECK(base != NULL);
	fake.fd = socket(AF_INET, SOCK_DGRAM, 0);
	CHECK(fake.fd >= 0);
	struct sockaddr_in sin = {.sin_family = AF_INET};
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	CHECK(bind(fake.fd, (struct sockaddr *)&sin, sizeof sin) == 0);
	socklen_t len = sizeof sin;
	CHECK(getsockname(fake.fd, (struct sockaddr *)&sin, &len) == 0);
	CHECK(evutil_make_socket_nonblocking(fake.fd) == 0);
	fake_ev = event_new(base, fake.fd, EV_READ | EV_PERSIST, fake_read, NULL);
	CHECK(fake_ev && event_add(fake_ev, NULL) == 0);
	memcpy(&server_addr.ss, &sin, sizeof sin);
	server_addr.len = sizeof sin;
	server_addr.text = (char *)"127.0.0.1";
	servers.servers = &server_addr;
	servers.nservers = 1;
	fuzz_dir(); /* quiet logging */
}

static bool host_ok(const char *s)
{
	if (!s[0])
		return false;
	for (const char *p = s; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-' || *p == '_' ||
		      *p == '.'))
			return false;
	return true;
}

struct job {
	struct dns_resolver *r;
	unsigned pending;       /* callbacks still to come */
	int want_family;        /* for PTR/FCrDNS: 0 */
};

static void addrs_cb(void *arg, enum dns_status st, const struct dns_addr *addrs, size_t n)
{
	struct job *j = arg;
	j->pending--;
	if (getenv("FUZZ_TRACE"))
		fprintf(stderr, "addrs: %s %zu\n", dns_status_name(st), n);
	CHECK(st == DNS_OK ? n > 0 && addrs != NULL : n == 0);
	for (size_t i = 0; i < n; i++)
		CHECK(addrs[i].family == AF_INET || addrs[i].family == AF_INET6);
}

/* The host rules' lookup: whole answers only, and a TTL to keep them. */
static void host_cb(void *arg, enum dns_status st, const struct dns_addr *addrs, size_t n,
		    uint32_t ttl)
{
	struct job *j = arg;
	j->pending--;
	if (getenv("FUZZ_TRACE"))
		fprintf(stderr, "host: %s %zu ttl %u\n", dns_status_name(st), n, (unsigned)ttl);
	CHECK(st == DNS_OK ? n > 0 && addrs != NULL : n == 0);
	CHECK(st == DNS_OK || st == DNS_NOTFOUND || ttl == 0);
	CHECK(ttl <= 86400);
	for (size_t i = 0; i < n; i++)
		CHECK(addrs[i].family == AF_INET || addrs[i].family == AF_INET6);
}

static void mx_cb(void *arg, enum dns_status st, const struct dns_mx *mx, size_t n)
{
	struct job *j = arg;
	j->pending--;
	if (getenv("FUZZ_TRACE"))
		for (size_t i = 0; i < n || (n == 0 && i == 0); i++)
			fprintf(stderr, "mx: %s %u %s\n", dns_status_name(st), n ? mx[i].preference : 0,
				n ? mx[i].host : "-");
	if (st != DNS_OK) {
		CHECK(n == 0);
		return;
	}
	CHECK(n > 0);
	if (n == 1 && mx[0].host[0] == '\0')
		return; /* RFC 7505 null MX: no mail */
	for (size_t i = 0; i < n; i++) {
		CHECK(host_ok(mx[i].host));
		CHECK(i == 0 || mx[i - 1].preference <= mx[i].preference);
	}
	/* as smtp_client goes on: the first hosts in order, addresses each */
	for (size_t i = 0; i < n && i < SMTP_CLIENT_MAX_HOSTS; i++) {
		j->pending++;
		dns_lookup_addrs(j->r, mx[i].host, addrs_cb, j);
	}
}

/* TXT: whole answers only, each text NUL-terminated at its length. */
static void txt_cb(void *arg, enum dns_status st, const struct dns_txt *txt, size_t n,
		   uint32_t ttl)
{
	struct job *j = arg;
	j->pending--;
	if (getenv("FUZZ_TRACE"))
		fprintf(stderr, "txt: %s %zu ttl %u\n", dns_status_name(st), n, (unsigned)ttl);
	CHECK(st == DNS_OK ? n > 0 && txt != NULL : n == 0);
	CHECK(st == DNS_OK || st == DNS_NOTFOUND || ttl == 0);
	size_t total = 0;
	for (size_t i = 0; i < n; i++) {
		CHECK(txt[i].text[txt[i].len] == '\0');
		total += txt[i].len;
	}
	CHECK(n <= 32 && total <= 32768);
}

static void name_cb(void *arg, enum dns_status st, const char *name)
{
	struct job *j = arg;
	j->pending--;
	if (getenv("FUZZ_TRACE"))
		fprintf(stderr, "name: %s %s\n", dns_status_name(st), name ? name : "-");
	CHECK((st == DNS_OK) == (name != NULL));
	if (name)
		CHECK(host_ok(name));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1 || size > 65536)
		return 0;
	if (!base)
		setup();
	fake.data = data + 1;
	fake.size = size - 1;
	fake.pos = 0;
	fake.answered = 0;
	struct dns_options opt = {.timeout_ms = 300, .tries = 1};
	char err[256];
	struct job j = {0};
	j.r = dns_resolver_new(base, &servers, &opt, err, sizeof err);
	CHECK(j.r != NULL);
	struct sockaddr_in c4 = {.sin_family = AF_INET};
	c4.sin_addr.s_addr = htonl(0xc0000201); /* 192.0.2.1 */
	struct sockaddr_in6 c6 = {.sin6_family = AF_INET6};
	inet_pton(AF_INET6, "2001:db8::1", &c6.sin6_addr);
	j.pending = 1;
	switch (data[0] % 6) {
	case 0:
		dns_lookup_mx(j.r, "example.test", mx_cb, &j);
		break;
	case 1:
		/* the same queries on the wire: the host lookup joins them */
		j.pending = 2;
		dns_lookup_addrs(j.r, "mx.example.test", addrs_cb, &j);
		dns_lookup_host(j.r, "mx.example.test", host_cb, &j);
		break;
	case 2:
		dns_lookup_ptr(j.r, (struct sockaddr *)&c4, name_cb, &j);
		break;
	case 3:
		dns_lookup_fcrdns(j.r, (struct sockaddr *)&c4, name_cb, &j);
		break;
	case 5:
		dns_lookup_txt(j.r, "_dmarc.example.test", txt_cb, &j);
		break;
	default:
		dns_lookup_fcrdns(j.r, (struct sockaddr *)&c6, name_cb, &j);
		break;
	}
	/* every callback comes, by an answer or by the deadline */
	for (unsigned round = 0; j.pending > 0 && round < 100000; round++)
		event_base_loop(base, EVLOOP_ONCE);
	CHECK(j.pending == 0);
	dns_resolver_free(j.r);
	/* what c-ares still had going is gone with the resolver */
	event_base_loop(base, EVLOOP_NONBLOCK);
	return 0;
}

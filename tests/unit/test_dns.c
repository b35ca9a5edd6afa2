/* Unit tests for dns.c against a real dnsmasq started here on 127.0.0.1 (a
 * free port; never the machine's own resolver), an in-process fake server
 * for replies dnsmasq cannot make (RFC 2308 SOA, RFC 2317 CNAMEs, hostile
 * names, SERVFAIL, malformed records), and a socket that never answers. */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <ares.h>
#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "conf/conf.h"
#include "net/dns.h"

#define DNSMASQ "/usr/sbin/dnsmasq"

/* ---- time and the event loop ------------------------------------------------------- */

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void tick(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
}

/* Runs the loop until *counter reaches target (or, counter NULL, for
 * max_ms); never longer than max_ms. */
static void run_until(struct event_base *base, const int *counter, int target, unsigned max_ms)
{
	struct event *t = event_new(base, -1, EV_PERSIST, tick, NULL);
	struct timeval tv = {0, 20000};
	assert_non_null(t);
	event_add(t, &tv);
	uint64_t deadline = now_ms() + max_ms;
	while ((!counter || *counter < target) && now_ms() < deadline)
		event_base_loop(base, EVLOOP_ONCE);
	event_free(t);
}

/* ---- sockets ----------------------------------------------------------------------- */

static int udp_socket_bound(int port)
{
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	assert_true(fd >= 0);
	struct sockaddr_in in = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bind(fd, (struct sockaddr *)&in, sizeof in) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

static int socket_port(int fd)
{
	struct sockaddr_in in;
	socklen_t len = sizeof in;
	assert_int_equal(getsockname(fd, (struct sockaddr *)&in, &len), 0);
	return ntohs(in.sin_port);
}

/* A port free for UDP and TCP on 127.0.0.1 (dnsmasq takes both). */
static int free_port(void)
{
	for (int attempt = 0; attempt < 50; attempt++) {
		int u = udp_socket_bound(0);
		assert_true(u >= 0);
		int port = socket_port(u);
		int t = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		struct sockaddr_in in = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
		in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		int ok = bind(t, (struct sockaddr *)&in, sizeof in) == 0;
		close(t);
		close(u);
		if (ok)
			return port;
	}
	fail_msg("no free port");
	return -1;
}

static struct sockaddr_storage sockaddr_of(const char *text)
{
	struct sockaddr_storage ss;
	memset(&ss, 0, sizeof ss);
	struct sockaddr_in *in = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
	if (inet_pton(AF_INET, text, &in->sin_addr) == 1) {
		in->sin_family = AF_INET;
	} else {
		assert_int_equal(inet_pton(AF_INET6, text, &in6->sin6_addr), 1);
		in6->sin6_family = AF_INET6;
	}
	return ss;
}

/* ---- DNS messages, for probing dnsmasq and for the fake server (RFC 1035 §4) ----- */

struct pkt {
	unsigned char b[2048];
	size_t len;
	unsigned an, ns;
	bool authority;         /* records go to the authority section */
};

static void pkt_bytes(struct pkt *p, const void *data, size_t n)
{
	assert_true(p->len + n <= sizeof p->b);
	memcpy(p->b + p->len, data, n);
	p->len += n;
}

static void pkt_u16(struct pkt *p, unsigned v)
{
	unsigned char b[2] = {(unsigned char)(v >> 8), (unsigned char)v};
	pkt_bytes(p, b, 2);
}

static void pkt_u32(struct pkt *p, uint32_t v)
{
	pkt_u16(p, v >> 16);
	pkt_u16(p, v & 0xffff);
}

/* A raw label: any bytes, even a dot. */
static void pkt_label(struct pkt *p, const char *label)
{
	size_t n = strlen(label);
	assert_true(n > 0 && n < 64);
	unsigned char len = (unsigned char)n;
	pkt_bytes(p, &len, 1);
	pkt_bytes(p, label, n);
}

/* "a.b.c" as labels and the root; "" is the root alone. */
static void pkt_name(struct pkt *p, const char *name)
{
	char *copy = strdup(name), *save = NULL;
	assert_non_null(copy);
	for (char *l = strtok_r(copy, ".", &save); l; l = strtok_r(NULL, ".", &save))
		pkt_label(p, l);
	free(copy);
	unsigned char root = 0;
	pkt_bytes(p, &root, 1);
}

static void pkt_query(struct pkt *p, unsigned id, const char *name, unsigned type)
{
	memset(p, 0, sizeof *p);
	pkt_u16(p, id);
	pkt_u16(p, 0x0100); /* RD */
	pkt_u16(p, 1);
	pkt_u16(p, 0);
	pkt_u16(p, 0);
	pkt_u16(p, 0);
	pkt_name(p, name);
	pkt_u16(p, type);
	pkt_u16(p, 1);
}

/* The question of a query: its name in text, its type. */
struct question {
	unsigned id, type;
	char name[256];
	size_t end;             /* offset just past the question */
};

static bool parse_question(const unsigned char *b, size_t len, struct question *q)
{
	size_t pos = 12, out = 0;
	if (len < 12)
		return false;
	q->id = (unsigned)b[0] << 8 | b[1];
	while (pos < len && b[pos]) {
		size_t l = b[pos++];
		if (l > 63 || pos + l > len || out + l + 2 > sizeof q->name)
			return false;
		if (out)
			q->name[out++] = '.';
		memcpy(q->name + out, b + pos, l);
		out += l;
		pos += l;
	}
	q->name[out] = '\0';
	if (pos + 5 > len)
		return false;
	pos++;
	q->type = (unsigned)b[pos] << 8 | b[pos + 1];
	q->end = pos + 4;
	return true;
}

/* A reply to the query in req with rcode; the question is copied. */
static void pkt_reply(struct pkt *p, const unsigned char *req, const struct question *q,
		      unsigned rcode)
{
	memset(p, 0, sizeof *p);
	pkt_u16(p, q->id);
	pkt_u16(p, 0x8180 | rcode); /* QR, RD, RA */
	pkt_u16(p, 1);
	pkt_u16(p, 0);
	pkt_u16(p, 0);
	pkt_u16(p, 0);
	pkt_bytes(p, req + 12, q->end - 12);
}

/* An RR header; owner NULL is the question's name (a pointer to it).
 * Returns where RDLENGTH goes, for pkt_rr_end(). */
static size_t pkt_rr(struct pkt *p, const char *owner, unsigned type, uint32_t ttl)
{
	if (owner)
		pkt_name(p, owner);
	else
		pkt_u16(p, 0xc00c);
	pkt_u16(p, type);
	pkt_u16(p, 1);
	pkt_u32(p, ttl);
	size_t at = p->len;
	pkt_u16(p, 0);
	if (p->authority)
		p->ns++;
	else
		p->an++;
	return at;
}

static void pkt_rr_end(struct pkt *p, size_t at)
{
	size_t rdlen = p->len - at - 2;
	p->b[at] = (unsigned char)(rdlen >> 8);
	p->b[at + 1] = (unsigned char)rdlen;
}

static void pkt_rr_name(struct pkt *p, const char *owner, unsigned type, uint32_t ttl,
			const char *target)
{
	size_t at = pkt_rr(p, owner, type, ttl);
	pkt_name(p, target);
	pkt_rr_end(p, at);
}

static void pkt_finish(struct pkt *p)
{
	p->b[6] = (unsigned char)(p->an >> 8);
	p->b[7] = (unsigned char)p->an;
	p->b[8] = (unsigned char)(p->ns >> 8);
	p->b[9] = (unsigned char)p->ns;
}

/* ---- dnsmasq ------------------------------------------------------------------------ */

static struct {
	pid_t pid;
	int port;
	char dir[64];
	char log[128];
} dm;

static const char *const dnsmasq_records[] = {
	"--local=/test/",
	"--local=/in-addr.arpa/",
	"--local=/ip6.arpa/",
	"--host-record=good.test,127.0.0.5,2001:db8::5",
	"--ptr-record=6.0.0.127.in-addr.arpa,liar.test",
	"--host-record=liar.test,127.0.0.66",
	"--ptr-record=7.0.0.127.in-addr.arpa,ghost.test",
	"--ptr-record=8.0.0.127.in-addr.arpa,first.test",
	"--ptr-record=8.0.0.127.in-addr.arpa,second.test",
	"--host-record=second.test,127.0.0.8",
	"--host-record=short.test,127.0.0.10,1",
	"--host-record=dual.test,127.0.0.11,2001:db8::11",
	"--host-record=coalesce.test,127.0.0.20",
	"--host-record=cancel.test,127.0.0.21",
	"--mx-host=mx.test,a.test,5",
	"--mx-host=mx.test,b.test,10",
	"--mx-host=mx.test,c.test,10",
	"--mx-host=nullmx.test,.,0",
	/* Two character-strings in one record; two records at one name. */
	"--txt-record=_spf.txt.test,v=spf1 ip4:192.0.2.0/24 ,-all",
	"--txt-record=two.txt.test,first",
	"--txt-record=two.txt.test,second",
};

static void dnsmasq_exec(int port, const char *log, pid_t parent)
{
	char *argv[64];
	size_t n = 0;
	char portarg[32], logarg[160];
	snprintf(portarg, sizeof portarg, "--port=%d", port);
	snprintf(logarg, sizeof logarg, "--log-facility=%s", log);
	argv[n++] = (char *)DNSMASQ;
	argv[n++] = (char *)"--no-daemon";
	argv[n++] = (char *)"--no-resolv";
	argv[n++] = (char *)"--no-hosts";
	argv[n++] = portarg;
	argv[n++] = (char *)"--listen-address=127.0.0.1";
	argv[n++] = (char *)"--bind-interfaces";
	argv[n++] = (char *)"--conf-file=/dev/null";
	argv[n++] = (char *)"--pid-file=";
	argv[n++] = (char *)"--log-queries";
	argv[n++] = logarg;
	argv[n++] = (char *)"--local-ttl=300";
	if (geteuid() == 0)
		argv[n++] = (char *)"--user=root"; /* keep access to our private folder */
	for (size_t i = 0; i < sizeof dnsmasq_records / sizeof *dnsmasq_records; i++)
		argv[n++] = (char *)dnsmasq_records[i];
	argv[n] = NULL;
	/* Gone with us, even when a test crashes.  (dnsmasq keeps running as
	 * root here, so the setting survives its credential changes.) */
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != parent)
		_exit(127);
	int null = open("/dev/null", O_RDWR);
	if (null >= 0) {
		dup2(null, 0);
		dup2(null, 1);
		dup2(null, 2);
	}
	execv(DNSMASQ, argv);
	_exit(127);
}

/* Does a server on port answer "good.test A" within 100 ms? */
static bool dnsmasq_answers(int port)
{
	int fd = udp_socket_bound(0);
	struct pkt q;
	pkt_query(&q, 0x4242, "good.test", 1);
	struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	sendto(fd, q.b, q.len, 0, (struct sockaddr *)&to, sizeof to);
	bool ok = false;
	for (int i = 0; i < 10 && !ok; i++) {
		unsigned char buf[512];
		if (recv(fd, buf, sizeof buf, 0) >= 12)
			ok = true;
		else
			usleep(10000);
	}
	close(fd);
	return ok;
}

static bool dnsmasq_start_once(void)
{
	pid_t parent = getpid();
	dm.port = free_port();
	dm.pid = fork();
	assert_true(dm.pid >= 0);
	if (dm.pid == 0)
		dnsmasq_exec(dm.port, dm.log, parent);
	for (int i = 0; i < 100; i++) {
		int status;
		if (waitpid(dm.pid, &status, WNOHANG) == dm.pid) {
			dm.pid = 0;
			return false; /* the port was taken after all, or dnsmasq failed */
		}
		if (dnsmasq_answers(dm.port))
			return true;
	}
	kill(dm.pid, SIGTERM);
	waitpid(dm.pid, NULL, 0);
	dm.pid = 0;
	return false;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static int group_setup(void **state)
{
	(void)state;
	assert_int_equal(ares_library_init(ARES_LIB_INIT_ALL), ARES_SUCCESS);
	if (access(DNSMASQ, X_OK) != 0) {
		fprintf(stderr, "test_dns: %s is missing (install dnsmasq-base)\n", DNSMASQ);
		return -1;
	}
	snprintf(dm.dir, sizeof dm.dir, "/tmp/posthorn-test-dns.XXXXXX");
	if (!mkdtemp(dm.dir))
		return -1;
	snprintf(dm.log, sizeof dm.log, "%s/dnsmasq.log", dm.dir);
	for (int attempt = 0; attempt < 5; attempt++)
		if (dnsmasq_start_once())
			return 0;
	fprintf(stderr, "test_dns: dnsmasq does not start\n");
	return -1;
}

static int group_teardown(void **state)
{
	(void)state;
	if (dm.pid > 0) {
		kill(dm.pid, SIGTERM);
		waitpid(dm.pid, NULL, 0);
	}
	if (dm.dir[0])
		nftw(dm.dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
	ares_library_cleanup();
	return 0;
}

/* How many queries of this kind dnsmasq has seen, e.g. "query[PTR] 20.0.0.127". */
static int dnsmasq_count(const char *needle)
{
	FILE *f = fopen(dm.log, "r");
	if (!f)
		return 0;
	char line[1024];
	int n = 0;
	while (fgets(line, sizeof line, f))
		if (strstr(line, needle))
			n++;
	fclose(f);
	return n;
}

/* dnsmasq writes its log asynchronously: wait until it has at least n lines
 * of needle, then a little longer for any extra one. */
static int dnsmasq_count_settled(const char *needle, int n)
{
	for (int i = 0; i < 100 && dnsmasq_count(needle) < n; i++)
		usleep(10000);
	usleep(100000);
	return dnsmasq_count(needle);
}

/* ---- the fake server --------------------------------------------------------------- */

struct fake {
	int fd;
	int port;
	struct event *ev;
	int received;
};

enum { T_A = 1, T_CNAME = 5, T_SOA = 6, T_PTR = 12, T_MX = 15, T_TXT = 16, T_AAAA = 28 };

static void fake_soa(struct pkt *p, uint32_t ttl, uint32_t minimum)
{
	p->authority = true;
	size_t at = pkt_rr(p, "test", T_SOA, ttl);
	pkt_name(p, "ns.test");
	pkt_name(p, "hostmaster.test");
	pkt_u32(p, 1);
	pkt_u32(p, 3600);
	pkt_u32(p, 600);
	pkt_u32(p, 86400);
	pkt_u32(p, minimum);
	pkt_rr_end(p, at);
}

static void fake_a(struct pkt *p, const char *owner, uint32_t ttl, const char *addr)
{
	size_t at = pkt_rr(p, owner, T_A, ttl);
	unsigned char b[4];
	assert_int_equal(inet_pton(AF_INET, addr, b), 1);
	pkt_bytes(p, b, 4);
	pkt_rr_end(p, at);
}

static void fake_mx(struct pkt *p, unsigned pref, const char *host)
{
	size_t at = pkt_rr(p, NULL, T_MX, 300);
	pkt_u16(p, pref);
	pkt_name(p, host);
	pkt_rr_end(p, at);
}

/* The fake zone: each name shows one thing dnsmasq cannot. */
static void fake_answer(const unsigned char *req, const struct question *q, struct pkt *p)
{
	const char *n = q->name;
	if (strcmp(n, "servfail.test") == 0) {
		pkt_reply(p, req, q, 2);
	} else if (strcmp(n, "halfdown.test") == 0) {
		/* A answers, AAAA fails */
		pkt_reply(p, req, q, q->type == T_A ? 0 : 2);
		if (q->type == T_A)
			fake_a(p, NULL, 60, "192.0.2.70");
	} else if (strcmp(n, "nxsoa0.test") == 0) {
		pkt_reply(p, req, q, 3);
		fake_soa(p, 3600, 0);
	} else if (strcmp(n, "nxsoa.test") == 0) {
		pkt_reply(p, req, q, 3);
		fake_soa(p, 3600, 3600);
	} else if (strcmp(n, "ttl0.test") == 0 && q->type == T_A) {
		pkt_reply(p, req, q, 0);
		fake_a(p, NULL, 0, "192.0.2.1");
	} else if (strcmp(n, "other.test") == 0 && q->type == T_A) {
		/* An answer about another name: never believed. */
		pkt_reply(p, req, q, 0);
		fake_a(p, "victim.test", 300, "192.0.2.66");
	} else if (strcmp(n, "badlen.test") == 0 && q->type == T_A) {
		pkt_reply(p, req, q, 0);
		size_t at = pkt_rr(p, NULL, T_A, 300);
		pkt_bytes(p, "\1\2\3\4\5", 5);
		pkt_rr_end(p, at);
	} else if (strcmp(n, "truncated.test") == 0 && q->type == T_A) {
		/* RDLENGTH says 4, the message ends after 2. */
		pkt_reply(p, req, q, 0);
		pkt_rr(p, NULL, T_A, 300);
		p->b[p->len - 1] = 4;
		pkt_bytes(p, "\1\2", 2);
	} else if (strcmp(n, "mxbad.test") == 0 && q->type == T_MX) {
		pkt_reply(p, req, q, 0);
		size_t at = pkt_rr(p, NULL, T_MX, 300);
		pkt_u16(p, 10);
		pkt_label(p, "bad host");
		pkt_name(p, "test");
		pkt_rr_end(p, at);
	} else if (strcmp(n, "txtbad.test") == 0 && q->type == T_TXT) {
		/* A good record, then one whose string runs past its RDATA. */
		pkt_reply(p, req, q, 0);
		size_t at = pkt_rr(p, NULL, T_TXT, 300);
		pkt_bytes(p, "\2ok", 3);
		pkt_rr_end(p, at);
		at = pkt_rr(p, NULL, T_TXT, 300);
		pkt_bytes(p, "\11short", 6);
		pkt_rr_end(p, at);
	} else if (strcmp(n, "txtnul.test") == 0 && q->type == T_TXT) {
		pkt_reply(p, req, q, 0);
		size_t at = pkt_rr(p, NULL, T_TXT, 300);
		pkt_bytes(p, "\3a\0b\0", 5);
		pkt_rr_end(p, at);
	} else if (strcmp(n, "txtmany.test") == 0 && q->type == T_TXT) {
		/* 33 records: more than an answer may hold. */
		pkt_reply(p, req, q, 0);
		for (int i = 0; i < 33; i++) {
			size_t at = pkt_rr(p, NULL, T_TXT, 300);
			pkt_bytes(p, "\1x", 2);
			pkt_rr_end(p, at);
		}
	} else if (strcmp(n, "mxmixed.test") == 0 && q->type == T_MX) {
		pkt_reply(p, req, q, 0);
		fake_mx(p, 0, "");
		fake_mx(p, 10, "mx.real.test");
	} else if (strcmp(n, "mxcname.test") == 0 && q->type == T_MX) {
		pkt_reply(p, req, q, 0);
		pkt_rr_name(p, NULL, T_CNAME, 300, "mxtarget.test");
		size_t at = pkt_rr(p, "mxtarget.test", T_MX, 300);
		pkt_u16(p, 7);
		pkt_name(p, "MX1.Target.Test");
		pkt_rr_end(p, at);
	} else if (strcmp(n, "5.2.0.192.in-addr.arpa") == 0) {
		/* RFC 2317 classless delegation: a CNAME to the real PTR. */
		pkt_reply(p, req, q, 0);
		pkt_rr_name(p, NULL, T_CNAME, 300, "5.0-25.2.0.192.in-addr.arpa");
		pkt_rr_name(p, "5.0-25.2.0.192.in-addr.arpa", T_PTR, 300, "classless.test");
	} else if (strcmp(n, "6.2.0.192.in-addr.arpa") == 0) {
		pkt_reply(p, req, q, 0);
		size_t at = pkt_rr(p, NULL, T_PTR, 300);
		pkt_label(p, "bad name");
		pkt_name(p, "test");
		pkt_rr_end(p, at);
		pkt_rr_name(p, NULL, T_PTR, 300, "Good.TEST");
	} else if (strcmp(n, "7.2.0.192.in-addr.arpa") == 0) {
		/* "evil.isp" is one label: the name is not below isp.example. */
		pkt_reply(p, req, q, 0);
		size_t at = pkt_rr(p, NULL, T_PTR, 300);
		pkt_label(p, "evil.isp");
		pkt_name(p, "example");
		pkt_rr_end(p, at);
	} else if (strcmp(n, "9.2.0.192.in-addr.arpa") == 0) {
		pkt_reply(p, req, q, 0);
		pkt_rr_name(p, NULL, T_PTR, 300, "silent.test");
	} else if (strcmp(n, "8.2.0.192.in-addr.arpa") == 0) {
		pkt_reply(p, req, q, 0);
		pkt_rr_name(p, "9.2.0.192.in-addr.arpa", T_PTR, 300, "injected.test");
	} else {
		pkt_reply(p, req, q, 3);
	}
	pkt_finish(p);
}

static void fake_read(evutil_socket_t fd, short what, void *arg)
{
	(void)what;
	struct fake *f = arg;
	unsigned char buf[1500];
	struct sockaddr_storage from;
	socklen_t fromlen = sizeof from;
	ssize_t n;
	while ((n = recvfrom(fd, buf, sizeof buf, 0, (struct sockaddr *)&from, &fromlen)) > 0) {
		struct question q;
		f->received++;
		if (parse_question(buf, (size_t)n, &q) && strcmp(q.name, "silent.test") != 0) {
			struct pkt p;
			fake_answer(buf, &q, &p);
			sendto(fd, p.b, p.len, 0, (struct sockaddr *)&from, fromlen);
		}
		fromlen = sizeof from;
	}
}

static void fake_start(struct fake *f, struct event_base *base)
{
	memset(f, 0, sizeof *f);
	f->fd = udp_socket_bound(0);
	assert_true(f->fd >= 0);
	f->port = socket_port(f->fd);
	f->ev = event_new(base, f->fd, EV_READ | EV_PERSIST, fake_read, f);
	assert_non_null(f->ev);
	event_add(f->ev, NULL);
}

static void fake_stop(struct fake *f)
{
	event_free(f->ev);
	close(f->fd);
}

/* ---- results ------------------------------------------------------------------------ */

struct name_res {
	int calls;
	enum dns_status st;
	bool has_name;
	char name[256];
	struct dns_resolver **free_me; /* free the resolver from the callback */
};

static void name_cb(void *arg, enum dns_status st, const char *name)
{
	struct name_res *r = arg;
	r->calls++;
	r->st = st;
	r->has_name = name != NULL;
	snprintf(r->name, sizeof r->name, "%s", name ? name : "");
	if (r->free_me) {
		dns_resolver_free(*r->free_me);
		*r->free_me = NULL;
	}
}

struct addrs_res {
	int calls;
	enum dns_status st;
	size_t n;
	char text[8][INET6_ADDRSTRLEN];
};

static void addrs_cb(void *arg, enum dns_status st, const struct dns_addr *a, size_t n)
{
	struct addrs_res *r = arg;
	r->calls++;
	r->st = st;
	r->n = n;
	for (size_t i = 0; i < n && i < 8; i++)
		inet_ntop(a[i].family, a[i].addr, r->text[i], sizeof r->text[i]);
	if (n)
		assert_non_null(a);
}

struct host_res {
	int calls;
	enum dns_status st;
	size_t n;
	uint32_t ttl;
	char text[8][INET6_ADDRSTRLEN];
};

static void host_cb(void *arg, enum dns_status st, const struct dns_addr *a, size_t n,
		    uint32_t ttl)
{
	struct host_res *r = arg;
	r->calls++;
	r->st = st;
	r->n = n;
	r->ttl = ttl;
	for (size_t i = 0; i < n && i < 8; i++)
		inet_ntop(a[i].family, a[i].addr, r->text[i], sizeof r->text[i]);
}

struct mx_res {
	int calls;
	enum dns_status st;
	size_t n;
	unsigned pref[8];
	char host[8][64];
};

static void mx_cb(void *arg, enum dns_status st, const struct dns_mx *mx, size_t n)
{
	struct mx_res *r = arg;
	r->calls++;
	r->st = st;
	r->n = n;
	for (size_t i = 0; i < n && i < 8; i++) {
		r->pref[i] = mx[i].preference;
		snprintf(r->host[i], sizeof r->host[i], "%s", mx[i].host);
	}
}

struct txt_res {
	int calls;
	enum dns_status st;
	size_t n;
	uint32_t ttl;
	char text[4][128];
	size_t len[4];
};

static void txt_cb(void *arg, enum dns_status st, const struct dns_txt *txt, size_t n,
		   uint32_t ttl)
{
	struct txt_res *r = arg;
	r->calls++;
	r->st = st;
	r->n = n;
	r->ttl = ttl;
	for (size_t i = 0; i < n && i < 4; i++) {
		assert_true(txt[i].len < sizeof r->text[i]);
		memcpy(r->text[i], txt[i].text, txt[i].len + 1);
		r->len[i] = txt[i].len;
	}
}

/* ---- fixture ------------------------------------------------------------------------ */

struct t {
	struct event_base *base;
	struct dns_resolver *r;
};

static struct dns_resolver *resolver_on(struct event_base *base, const int *ports, size_t n,
					const struct dns_options *opt)
{
	struct conf_sockaddr sa[4];
	memset(sa, 0, sizeof sa);
	assert_true(n <= 4);
	for (size_t i = 0; i < n; i++) {
		struct sockaddr_in *in = (struct sockaddr_in *)&sa[i].ss;
		in->sin_family = AF_INET;
		in->sin_port = htons((uint16_t)ports[i]);
		in->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		sa[i].len = sizeof *in;
	}
	struct conf_dns servers = {sa, n};
	char err[256] = "";
	struct dns_resolver *r = dns_resolver_new(base, &servers, opt, err, sizeof err);
	if (!r)
		fail_msg("dns_resolver_new: %s", err);
	return r;
}

static struct dns_resolver *resolver_at(struct event_base *base, int port,
					const struct dns_options *opt)
{
	return resolver_on(base, &port, 1, opt);
}

static int setup(void **state)
{
	struct t *t = calloc(1, sizeof *t);
	assert_non_null(t);
	t->base = event_base_new();
	assert_non_null(t->base);
	t->r = resolver_at(t->base, dm.port, NULL);
	*state = t;
	return 0;
}

static int teardown(void **state)
{
	struct t *t = *state;
	dns_resolver_free(t->r);
	event_base_free(t->base);
	free(t);
	return 0;
}

static struct dns_stats stats(const struct dns_resolver *r)
{
	struct dns_stats s;
	dns_get_stats(r, &s);
	return s;
}

static void ptr_of(struct t *t, const char *addr, struct name_res *res)
{
	struct sockaddr_storage ss = sockaddr_of(addr);
	memset(res, 0, sizeof *res);
	dns_lookup_ptr(t->r, (struct sockaddr *)&ss, name_cb, res);
	run_until(t->base, &res->calls, 1, 5000);
	assert_int_equal(res->calls, 1);
}

static void fcrdns_of(struct t *t, const char *addr, struct name_res *res)
{
	struct sockaddr_storage ss = sockaddr_of(addr);
	memset(res, 0, sizeof *res);
	dns_lookup_fcrdns(t->r, (struct sockaddr *)&ss, name_cb, res);
	run_until(t->base, &res->calls, 1, 5000);
	assert_int_equal(res->calls, 1);
}

static void addrs_of(struct t *t, const char *name, struct addrs_res *res)
{
	memset(res, 0, sizeof *res);
	dns_lookup_addrs(t->r, name, addrs_cb, res);
	run_until(t->base, &res->calls, 1, 5000);
	assert_int_equal(res->calls, 1);
}

static void host_of(struct t *t, const char *name, struct host_res *res)
{
	memset(res, 0, sizeof *res);
	dns_lookup_host(t->r, name, host_cb, res);
	run_until(t->base, &res->calls, 1, 5000);
	assert_int_equal(res->calls, 1);
}

static void mx_of(struct t *t, const char *name, struct mx_res *res)
{
	memset(res, 0, sizeof *res);
	dns_lookup_mx(t->r, name, mx_cb, res);
	run_until(t->base, &res->calls, 1, 5000);
	assert_int_equal(res->calls, 1);
}

static void txt_of(struct t *t, const char *name, struct txt_res *res)
{
	memset(res, 0, sizeof *res);
	dns_lookup_txt(t->r, name, txt_cb, res);
	run_until(t->base, &res->calls, 1, 5000);
	assert_int_equal(res->calls, 1);
}

/* ---- PTR and forward confirmation ----------------------------------------------------- */

static void test_ptr(void **state)
{
	struct t *t = *state;
	struct name_res res;
	ptr_of(t, "127.0.0.5", &res);
	assert_int_equal(res.st, DNS_OK);
	assert_string_equal(res.name, "good.test");
	ptr_of(t, "2001:db8::5", &res);
	assert_int_equal(res.st, DNS_OK);
	assert_string_equal(res.name, "good.test");
	/* A mapped client is asked under in-addr.arpa. */
	ptr_of(t, "::ffff:127.0.0.5", &res);
	assert_int_equal(res.st, DNS_OK);
	assert_string_equal(res.name, "good.test");
	assert_int_equal(stats(t->r).queries_sent, 2);
	assert_int_equal(stats(t->r).cache_hits, 1);
	assert_true(dnsmasq_count_settled("query[PTR] 5.0.0.127.in-addr.arpa", 1) >= 1);
	assert_true(dnsmasq_count("query[PTR] 5.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0."
				  "8.b.d.0.1.0.0.2.ip6.arpa") >= 1);
}

static void test_ptr_nxdomain(void **state)
{
	struct t *t = *state;
	struct name_res res;
	ptr_of(t, "127.0.0.99", &res);
	assert_int_equal(res.st, DNS_NOTFOUND);
	assert_false(res.has_name);
}

static void test_fcrdns(void **state)
{
	struct t *t = *state;
	struct name_res res;
	fcrdns_of(t, "127.0.0.5", &res);
	assert_int_equal(res.st, DNS_OK);
	assert_string_equal(res.name, "good.test");
	fcrdns_of(t, "::ffff:127.0.0.5", &res);
	assert_int_equal(res.st, DNS_OK);
	assert_string_equal(res.name, "good.test");
	fcrdns_of(t, "2001:db8::5", &res);
	assert_int_equal(res.st, DNS_OK);
	assert_string_equal(res.name, "good.test");
	/* An IPv4 client needs only A, an IPv6 client only AAAA. */
	assert_int_equal(stats(t->r).queries_sent, 4);
}

static void test_fcrdns_not_confirmed(void **state)
{
	struct t *t = *state;
	struct name_res res;
	/* The PTR name resolves, but to another address. */
	fcrdns_of(t, "127.0.0.6", &res);
	assert_int_equal(res.st, DNS_NOTFOUND);
	assert_false(res.has_name);
	/* The PTR name does not resolve at all. */
	fcrdns_of(t, "127.0.0.7", &res);
	assert_int_equal(res.st, DNS_NOTFOUND);
	assert_false(res.has_name);
	/* No PTR: the PTR step's status. */
	fcrdns_of(t, "127.0.0.99", &res);
	assert_int_equal(res.st, DNS_NOTFOUND);
	/* The IPv6 address of good.test is not 2001:db8::6. */
	fcrdns_of(t, "2001:db8::6", &res);
	assert_int_equal(res.st, DNS_NOTFOUND);
}

static void test_fcrdns_second_ptr_name(void **state)
{
	struct t *t = *state;
	struct name_res res;
	/* first.test does not resolve; second.test points back. */
	fcrdns_of(t, "127.0.0.8", &res);
	assert_int_equal(res.st, DNS_OK);
	assert_string_equal(res.name, "second.test");
}

/* ---- A, AAAA, MX ------------------------------------------------------------------- */

static void test_addrs(void **state)
{
	struct t *t = *state;
	struct addrs_res res;
	addrs_of(t, "dual.test", &res);
	assert_int_equal(res.st, DNS_OK);
	assert_int_equal(res.n, 2);
	assert_string_equal(res.text[0], "127.0.0.11");
	assert_string_equal(res.text[1], "2001:db8::11");
	/* Any case, a trailing dot: the same name, from the cache. */
	addrs_of(t, "Dual.TEST.", &res);
	assert_int_equal(res.st, DNS_OK);
	assert_int_equal(res.n, 2);
	assert_int_equal(stats(t->r).queries_sent, 2);
	assert_int_equal(stats(t->r).cache_hits, 2);
	/* Only an A record: AAAA is NODATA, the answer still OK. */
	addrs_of(t, "liar.test", &res);
	assert_int_equal(res.st, DNS_OK);
	assert_int_equal(res.n, 1);
	assert_string_equal(res.text[0], "127.0.0.66");
}

static void test_addrs_nxdomain_and_negative_cache(void **state)
{
	struct t *t = *state;
	struct addrs_res res;
	addrs_of(t, "nope.test", &res);
	assert_int_equal(res.st, DNS_NOTFOUND);
	assert_int_equal(res.n, 0);
	struct dns_stats before = stats(t->r);
	addrs_of(t, "nope.test", &res);
	assert_int_equal(res.st, DNS_NOTFOUND);
	assert_int_equal(stats(t->r).queries_sent, before.queries_sent);
	assert_int_equal(stats(t->r).cache_hits, before.cache_hits + 2);
}

static void test_negative_cache_ptr(void **state)
{
	struct t *t = *state;
	struct name_res res;
	ptr_of(t, "127.0.0.98", &res);
	assert_int_equal(res.st, DNS_NOTFOUND);
	struct dns_stats before = stats(t->r);
	/* The second lookup does not reach the network. */
	struct sockaddr_storage ss = sockaddr_of("127.0.0.98");
	memset(&res, 0, sizeof res);
	dns_query_id id = dns_lookup_ptr(t->r, (struct sockaddr *)&ss, name_cb, &res);
	assert_int_equal(id, 0);        /* answered from the cache, before returning */
	assert_int_equal(res.calls, 1);
	assert_int_equal(res.st, DNS_NOTFOUND);
	assert_int_equal(stats(t->r).queries_sent, before.queries_sent);
	assert_int_equal(stats(t->r).cache_hits, before.cache_hits + 1);
	assert_int_equal(dnsmasq_count_settled("query[PTR] 98.0.0.127.in-addr.arpa", 1), 1);
}

/* The lookup of the host rules: both families, and the TTL to keep them. */
static void test_host(void **state)
{
	struct t *t = *state;
	struct host_res res;
	host_of(t, "dual.test", &res); /* --local-ttl=300 */
	assert_int_equal(res.st, DNS_OK);
	assert_int_equal(res.n, 2);
	assert_string_equal(res.text[0], "127.0.0.11");
	assert_string_equal(res.text[1], "2001:db8::11");
	assert_int_equal(res.ttl, 300);
	/* from the cache a second later: what is left of the TTL */
	run_until(t->base, NULL, 0, 1100);
	host_of(t, "dual.test", &res);
	assert_int_equal(res.st, DNS_OK);
	assert_int_equal(res.n, 2);
	assert_in_range(res.ttl, 290, 298);
	assert_int_equal(stats(t->r).cache_hits, 2);
	/* the smaller TTL of the two answers (A 1 s, AAAA NODATA) */
	host_of(t, "short.test", &res);
	assert_int_equal(res.st, DNS_OK);
	assert_int_equal(res.n, 1);
	assert_in_range(res.ttl, 0, 1);
	/* no such name: NOTFOUND for as long as the negative answer lasts */
	host_of(t, "nope.test", &res);
	assert_int_equal(res.st, DNS_NOTFOUND);
	assert_int_equal(res.n, 0);
	assert_in_range(res.ttl, 1, 300);
}

static void test_mx_order(void **state)
{
	struct t *t = *state;
	struct mx_res res;
	bool seen_bc = false, seen_cb = false;
	for (int i = 0; i < 200 && !(seen_bc && seen_cb); i++) {
		mx_of(t, "mx.test", &res);
		assert_int_equal(res.st, DNS_OK);
		assert_int_equal(res.n, 3);
		assert_int_equal(res.pref[0], 5);
		assert_string_equal(res.host[0], "a.test");
		assert_int_equal(res.pref[1], 10);
		assert_int_equal(res.pref[2], 10);
		if (strcmp(res.host[1], "b.test") == 0) {
			assert_string_equal(res.host[2], "c.test");
			seen_bc = true;
		} else {
			assert_string_equal(res.host[1], "c.test");
			assert_string_equal(res.host[2], "b.test");
			seen_cb = true;
		}
	}
	/* Equal preferences come in random order. */
	assert_true(seen_bc && seen_cb);
	assert_int_equal(stats(t->r).queries_sent, 1);
}

static void test_mx_null_and_missing(void **state)
{
	struct t *t = *state;
	struct mx_res res;
	mx_of(t, "nullmx.test", &res);
	assert_int_equal(res.st, DNS_OK);
	assert_int_equal(res.n, 1);
	assert_int_equal(res.pref[0], 0);
	assert_string_equal(res.host[0], "");
	/* The name exists without MX: NOTFOUND (the caller then uses A/AAAA). */
	mx_of(t, "good.test", &res);
	assert_int_equal(res.st, DNS_NOTFOUND);
	assert_int_equal(res.n, 0);
	mx_of(t, "nope.test", &res);
	assert_int_equal(res.st, DNS_NOTFOUND);
}

/* ---- the cache: TTL, eviction, coalescing --------------------------------------------- */

static void test_ttl_expiry(void **state)
{
	struct t *t = *state;
	struct addrs_res res;
	addrs_of(t, "short.test", &res); /* A with TTL 1; AAAA NODATA */
	assert_int_equal(res.st, DNS_OK);
	assert_int_equal(stats(t->r).queries_sent, 2);
	addrs_of(t, "short.test", &res);
	assert_int_equal(stats(t->r).queries_sent, 2);
	assert_int_equal(stats(t->r).cache_hits, 2);
	run_until(t->base, NULL, 0, 2100);
	addrs_of(t, "short.test", &res);
	assert_int_equal(res.st, DNS_OK);
	assert_string_equal(res.text[0], "127.0.0.10");
	/* The A record expired; the NODATA answer (no SOA: the negative cap)
	 * did not. */
	assert_int_equal(stats(t->r).queries_sent, 3);
	assert_int_equal(stats(t->r).cache_hits, 3);
}

static void test_negative_ttl_cap(void **state)
{
	struct t *t = *state;
	struct dns_options opt = {.negative_ttl_max = 1};
	dns_resolver_free(t->r);
	t->r = resolver_at(t->base, dm.port, &opt);
	struct name_res res;
	ptr_of(t, "127.0.0.97", &res);
	ptr_of(t, "127.0.0.97", &res);
	assert_int_equal(stats(t->r).queries_sent, 1);
	run_until(t->base, NULL, 0, 1100);
	ptr_of(t, "127.0.0.97", &res);
	assert_int_equal(res.st, DNS_NOTFOUND);
	assert_int_equal(stats(t->r).queries_sent, 2);
}

static void test_cache_eviction(void **state)
{
	struct t *t = *state;
	struct dns_options opt = {.cache_entries = 2};
	dns_resolver_free(t->r);
	t->r = resolver_at(t->base, dm.port, &opt);
	struct name_res n;
	struct mx_res m;
	ptr_of(t, "127.0.0.5", &n);     /* cache: ptr5 */
	mx_of(t, "mx.test", &m);        /* cache: ptr5 mx */
	ptr_of(t, "127.0.0.5", &n);     /* hit; ptr5 is now the newest */
	mx_of(t, "nullmx.test", &m);    /* evicts mx.test, the least recently used */
	assert_int_equal(stats(t->r).queries_sent, 3);
	assert_int_equal(stats(t->r).cache_hits, 1);
	ptr_of(t, "127.0.0.5", &n);
	assert_int_equal(stats(t->r).cache_hits, 2);
	mx_of(t, "mx.test", &m);
	assert_int_equal(m.st, DNS_OK);
	assert_int_equal(stats(t->r).queries_sent, 4);
}

static void test_coalescing(void **state)
{
	struct t *t = *state;
	enum { N = 100 };
	struct name_res res[N];
	struct sockaddr_storage ss = sockaddr_of("127.0.0.20");
	int done = 0;
	memset(res, 0, sizeof res);
	for (int i = 0; i < N; i++)
		assert_int_not_equal(dns_lookup_ptr(t->r, (struct sockaddr *)&ss, name_cb, &res[i]),
				     0);
	assert_int_equal(stats(t->r).queries_sent, 1);
	for (uint64_t deadline = now_ms() + 5000; done < N && now_ms() < deadline;) {
		run_until(t->base, NULL, 0, 20);
		done = 0;
		for (int i = 0; i < N; i++)
			done += res[i].calls;
	}
	for (int i = 0; i < N; i++) {
		assert_int_equal(res[i].calls, 1);
		assert_int_equal(res[i].st, DNS_OK);
		assert_string_equal(res[i].name, "coalesce.test");
	}
	assert_int_equal(stats(t->r).queries_sent, 1);
	assert_int_equal(dnsmasq_count_settled("query[PTR] 20.0.0.127.in-addr.arpa", 1), 1);

	/* Forward-confirmed, N at once: the PTR from the cache, one A query. */
	memset(res, 0, sizeof res);
	for (int i = 0; i < N; i++)
		dns_lookup_fcrdns(t->r, (struct sockaddr *)&ss, name_cb, &res[i]);
	for (uint64_t deadline = now_ms() + 5000; done < 2 * N && now_ms() < deadline;) {
		run_until(t->base, NULL, 0, 20);
		done = N;
		for (int i = 0; i < N; i++)
			done += res[i].calls;
	}
	for (int i = 0; i < N; i++) {
		assert_int_equal(res[i].calls, 1);
		assert_int_equal(res[i].st, DNS_OK);
		assert_string_equal(res[i].name, "coalesce.test");
	}
	assert_int_equal(stats(t->r).queries_sent, 2);
	assert_int_equal(stats(t->r).cache_hits, N);
	assert_int_equal(dnsmasq_count_settled("query[A] coalesce.test", 1), 1);
}

/* ---- timeouts, cancellation, freeing ------------------------------------------------ */

static void test_timeout(void **state)
{
	struct t *t = *state;
	int silent = udp_socket_bound(0);
	/* c-ares doubles its timeout each round (300 + 600 + 1200 ms); the
	 * answer must come after timeout x tries all the same. */
	struct dns_options opt = {.timeout_ms = 300, .tries = 3};
	dns_resolver_free(t->r);
	t->r = resolver_at(t->base, socket_port(silent), &opt);
	struct name_res res = {0};
	struct sockaddr_storage ss = sockaddr_of("192.0.2.1");
	uint64_t start = now_ms();
	assert_int_not_equal(dns_lookup_fcrdns(t->r, (struct sockaddr *)&ss, name_cb, &res), 0);
	run_until(t->base, &res.calls, 1, 5000);
	uint64_t took = now_ms() - start;
	assert_int_equal(res.calls, 1);
	assert_int_equal(res.st, DNS_TIMEOUT);
	assert_false(res.has_name);
	assert_true(took >= 850);
	assert_true(took <= 300 * 3 + 1000);
	/* Timeouts are not cached: the next lookup asks again. */
	memset(&res, 0, sizeof res);
	dns_lookup_fcrdns(t->r, (struct sockaddr *)&ss, name_cb, &res);
	assert_int_equal(res.calls, 0);
	assert_int_equal(stats(t->r).queries_sent, 2);
	/* Freed with that query and the abandoned one still in c-ares. */
	dns_resolver_free(t->r);
	t->r = NULL;
	run_until(t->base, NULL, 0, 100);
	assert_int_equal(res.calls, 0);
	close(silent);
}

static void test_second_server(void **state)
{
	struct t *t = *state;
	int silent = udp_socket_bound(0);
	int ports[2] = {socket_port(silent), dm.port};
	struct dns_options opt = {.timeout_ms = 300, .tries = 2};
	dns_resolver_free(t->r);
	t->r = resolver_on(t->base, ports, 2, &opt);
	struct name_res res;
	ptr_of(t, "127.0.0.5", &res);
	assert_int_equal(res.st, DNS_OK);
	assert_string_equal(res.name, "good.test");
	close(silent);
}

static void test_cancel(void **state)
{
	struct t *t = *state;
	struct name_res cancelled = {0}, kept = {0};
	struct sockaddr_storage ss = sockaddr_of("127.0.0.21");
	dns_query_id id = dns_lookup_fcrdns(t->r, (struct sockaddr *)&ss, name_cb, &cancelled);
	assert_int_not_equal(id, 0);
	dns_query_id id2 = dns_lookup_fcrdns(t->r, (struct sockaddr *)&ss, name_cb, &kept);
	assert_int_not_equal(id2, 0);
	assert_true(id2 > id);
	dns_cancel(t->r, id);
	run_until(t->base, &kept.calls, 1, 5000);
	assert_int_equal(kept.calls, 1);
	assert_int_equal(kept.st, DNS_OK);
	assert_string_equal(kept.name, "cancel.test");
	run_until(t->base, NULL, 0, 100);
	assert_int_equal(cancelled.calls, 0);
	/* Cancelling again, after the end, or an id never given: nothing. */
	dns_cancel(t->r, id);
	dns_cancel(t->r, id2);
	dns_cancel(t->r, 0);
	dns_cancel(t->r, 123456789);
	assert_int_equal(kept.calls, 1);
}

static void test_cancel_on_silent_server(void **state)
{
	struct t *t = *state;
	int silent = udp_socket_bound(0);
	struct dns_options opt = {.timeout_ms = 200, .tries = 1};
	dns_resolver_free(t->r);
	t->r = resolver_at(t->base, socket_port(silent), &opt);
	struct name_res res = {0};
	struct addrs_res ares_ = {0};
	struct sockaddr_storage ss = sockaddr_of("192.0.2.1");
	dns_cancel(t->r, dns_lookup_ptr(t->r, (struct sockaddr *)&ss, name_cb, &res));
	dns_cancel(t->r, dns_lookup_addrs(t->r, "x.test", addrs_cb, &ares_));
	run_until(t->base, NULL, 0, 700); /* past the deadline and c-ares' own timeout */
	assert_int_equal(res.calls, 0);
	assert_int_equal(ares_.calls, 0);
	close(silent);
}

static void test_free_with_outstanding(void **state)
{
	struct t *t = *state;
	int silent = udp_socket_bound(0);
	int ports[2] = {socket_port(silent), dm.port};
	struct name_res n[4];
	struct addrs_res a = {0};
	struct mx_res m = {0};
	memset(n, 0, sizeof n);
	dns_resolver_free(t->r);
	t->r = resolver_on(t->base, ports, 2, NULL);
	struct sockaddr_storage ss = sockaddr_of("127.0.0.5");
	dns_lookup_ptr(t->r, (struct sockaddr *)&ss, name_cb, &n[0]);
	dns_lookup_ptr(t->r, (struct sockaddr *)&ss, name_cb, &n[1]);
	dns_lookup_fcrdns(t->r, (struct sockaddr *)&ss, name_cb, &n[2]);
	dns_lookup_addrs(t->r, "good.test", addrs_cb, &a);
	dns_lookup_mx(t->r, "mx.test", mx_cb, &m);
	run_until(t->base, NULL, 0, 50);
	dns_resolver_free(t->r);
	t->r = NULL;
	run_until(t->base, NULL, 0, 100);
	for (int i = 0; i < 4; i++)
		assert_int_equal(n[i].calls, 0);
	assert_int_equal(a.calls, 0);
	assert_int_equal(m.calls, 0);
	close(silent);
}

static void test_free_from_callback(void **state)
{
	struct t *t = *state;
	struct name_res first = {0}, second = {0};
	struct sockaddr_storage ss = sockaddr_of("127.0.0.5");
	first.free_me = &t->r;
	/* Both wait for the same answer; the first frees the resolver. */
	dns_lookup_ptr(t->r, (struct sockaddr *)&ss, name_cb, &first);
	dns_lookup_ptr(t->r, (struct sockaddr *)&ss, name_cb, &second);
	run_until(t->base, &first.calls, 1, 5000);
	assert_int_equal(first.calls, 1);
	assert_null(t->r);
	run_until(t->base, NULL, 0, 100);
	assert_int_equal(second.calls, 0);

	/* From a callback that runs before the lookup returns (cache hit). */
	t->r = resolver_at(t->base, dm.port, NULL);
	struct name_res warm = {0}, hit = {0};
	dns_lookup_ptr(t->r, (struct sockaddr *)&ss, name_cb, &warm);
	run_until(t->base, &warm.calls, 1, 5000);
	hit.free_me = &t->r;
	assert_int_equal(dns_lookup_ptr(t->r, (struct sockaddr *)&ss, name_cb, &hit), 0);
	assert_int_equal(hit.calls, 1);
	assert_int_equal(hit.st, DNS_OK);
	assert_null(t->r);
}

/* ---- bad input ---------------------------------------------------------------------- */

static void test_bad_input(void **state)
{
	struct t *t = *state;
	struct addrs_res a = {0};
	struct mx_res m = {0};
	struct name_res n = {0};
	char longname[300];
	memset(longname, 'a', sizeof longname - 1);
	longname[sizeof longname - 1] = '\0';
	/* Names never put on the wire: the answer comes at once. */
	assert_int_equal(dns_lookup_addrs(t->r, "bad name.test", addrs_cb, &a), 0);
	assert_int_equal(a.calls, 1);
	assert_int_equal(a.st, DNS_ERROR);
	assert_int_equal(dns_lookup_addrs(t->r, longname, addrs_cb, &a), 0);
	assert_int_equal(a.calls, 2);
	assert_int_equal(dns_lookup_addrs(t->r, "a..test", addrs_cb, &a), 0);
	assert_int_equal(dns_lookup_addrs(t->r, "", addrs_cb, &a), 0);
	assert_int_equal(dns_lookup_addrs(t->r, "evil\\.isp.test", addrs_cb, &a), 0);
	assert_int_equal(a.calls, 5);
	assert_int_equal(dns_lookup_mx(t->r, NULL, mx_cb, &m), 0);
	assert_int_equal(m.calls, 1);
	assert_int_equal(m.st, DNS_ERROR);
	struct sockaddr_un un = {.sun_family = AF_UNIX};
	assert_int_equal(dns_lookup_fcrdns(t->r, (struct sockaddr *)&un, name_cb, &n), 0);
	assert_int_equal(n.calls, 1);
	assert_int_equal(n.st, DNS_ERROR);
	assert_int_equal(dns_lookup_ptr(t->r, NULL, name_cb, &n), 0);
	assert_int_equal(n.calls, 2);
	assert_int_equal(stats(t->r).queries_sent, 0);
	assert_int_equal(dns_lookup_ptr(NULL, NULL, name_cb, &n), 0);
	assert_int_equal(n.calls, 2);
}

static void test_resolver_new(void **state)
{
	struct t *t = *state;
	char err[256] = "";
	/* No servers: /etc/resolv.conf (nothing is asked here). */
	struct dns_resolver *r = dns_resolver_new(t->base, NULL, NULL, err, sizeof err);
	assert_non_null(r);
	dns_resolver_free(r);
	struct conf_dns none = {NULL, 0};
	r = dns_resolver_new(t->base, &none, NULL, err, sizeof err);
	assert_non_null(r);
	dns_resolver_free(r);
	dns_resolver_free(NULL);
	/* An address family c-ares cannot use. */
	struct conf_sockaddr sa;
	memset(&sa, 0, sizeof sa);
	sa.ss.ss_family = AF_UNIX;
	struct conf_dns bad = {&sa, 1};
	assert_null(dns_resolver_new(t->base, &bad, NULL, err, sizeof err));
	assert_true(strlen(err) > 0);
	assert_string_equal(dns_status_name(DNS_OK), "ok");
	assert_string_equal(dns_status_name(DNS_NOTFOUND), "notfound");
	assert_string_equal(dns_status_name(DNS_TIMEOUT), "timeout");
	assert_string_equal(dns_status_name(DNS_ERROR), "error");
}

/* ---- replies only the fake server makes ------------------------------------------------ */

static void use_fake(struct t *t, struct fake *f, const struct dns_options *opt)
{
	fake_start(f, t->base);
	dns_resolver_free(t->r);
	t->r = resolver_at(t->base, f->port, opt);
}

static void test_fake_ptr_names(void **state)
{
	struct t *t = *state;
	struct fake f;
	struct name_res res;
	use_fake(t, &f, NULL);
	/* RFC 2317: the PTR behind a CNAME. */
	ptr_of(t, "192.0.2.5", &res);
	assert_int_equal(res.st, DNS_OK);
	assert_string_equal(res.name, "classless.test");
	/* A name that is no host name is skipped; names are lower-cased. */
	ptr_of(t, "192.0.2.6", &res);
	assert_int_equal(res.st, DNS_OK);
	assert_string_equal(res.name, "good.test");
	/* A label with a dot in it is not a host name either. */
	ptr_of(t, "192.0.2.7", &res);
	assert_int_equal(res.st, DNS_NOTFOUND);
	assert_false(res.has_name);
	/* A record owned by another name is not the answer. */
	ptr_of(t, "192.0.2.8", &res);
	assert_int_equal(res.st, DNS_NOTFOUND);
	fake_stop(&f);
}

static void test_fake_fcrdns_forward_timeout(void **state)
{
	struct t *t = *state;
	struct fake f;
	struct name_res res;
	struct dns_options opt = {.timeout_ms = 200, .tries = 1};
	use_fake(t, &f, &opt);
	/* The PTR answers; the A of its name never does: no name, and the
	 * status says why. */
	fcrdns_of(t, "192.0.2.9", &res);
	assert_int_equal(res.st, DNS_TIMEOUT);
	assert_false(res.has_name);
	fcrdns_of(t, "192.0.2.5", &res); /* classless.test: NXDOMAIN */
	assert_int_equal(res.st, DNS_NOTFOUND);
	fake_stop(&f);
}

static void test_fake_failures_not_cached(void **state)
{
	struct t *t = *state;
	struct fake f;
	struct addrs_res res;
	struct dns_options opt = {.tries = 1};
	use_fake(t, &f, &opt);
	addrs_of(t, "servfail.test", &res);
	assert_int_equal(res.st, DNS_ERROR);
	int received = f.received;
	addrs_of(t, "servfail.test", &res);
	assert_int_equal(res.st, DNS_ERROR);
	assert_int_equal(f.received, 2 * received);
	assert_int_equal(stats(t->r).cache_hits, 0);
	/* Malformed records. */
	addrs_of(t, "truncated.test", &res);
	assert_int_equal(res.st, DNS_ERROR);
	addrs_of(t, "badlen.test", &res);
	assert_int_equal(res.st, DNS_NOTFOUND);
	addrs_of(t, "other.test", &res);
	assert_int_equal(res.st, DNS_NOTFOUND);
	fake_stop(&f);
}

/* A host rule's lookup never takes half an answer for the whole. */
static void test_fake_host_half_answer(void **state)
{
	struct t *t = *state;
	struct fake f;
	struct host_res res;
	struct addrs_res ares;
	struct dns_options opt = {.tries = 1};
	use_fake(t, &f, &opt);
	host_of(t, "halfdown.test", &res);
	assert_int_equal(res.st, DNS_ERROR);
	assert_int_equal(res.n, 0);
	assert_int_equal(res.ttl, 0);
	/* the plain lookup takes what came */
	addrs_of(t, "halfdown.test", &ares);
	assert_int_equal(ares.st, DNS_OK);
	assert_int_equal(ares.n, 1);
	assert_string_equal(ares.text[0], "192.0.2.70");
	fake_stop(&f);
}

static void test_fake_negative_ttl_from_soa(void **state)
{
	struct t *t = *state;
	struct fake f;
	struct addrs_res res;
	use_fake(t, &f, NULL);
	/* SOA MINIMUM 0: a negative answer that must not be cached. */
	addrs_of(t, "nxsoa0.test", &res);
	assert_int_equal(res.st, DNS_NOTFOUND);
	addrs_of(t, "nxsoa0.test", &res);
	assert_int_equal(stats(t->r).queries_sent, 4);
	assert_int_equal(stats(t->r).cache_hits, 0);
	/* SOA MINIMUM 3600: cached (for the cap). */
	addrs_of(t, "nxsoa.test", &res);
	addrs_of(t, "nxsoa.test", &res);
	assert_int_equal(res.st, DNS_NOTFOUND);
	assert_int_equal(stats(t->r).queries_sent, 6);
	assert_int_equal(stats(t->r).cache_hits, 2);
	/* TTL 0 on a positive answer: used once, not cached. */
	addrs_of(t, "ttl0.test", &res);
	assert_int_equal(res.st, DNS_OK);
	assert_string_equal(res.text[0], "192.0.2.1");
	int sent = (int)stats(t->r).queries_sent;
	addrs_of(t, "ttl0.test", &res);
	assert_int_equal(res.st, DNS_OK);
	assert_int_equal(stats(t->r).queries_sent, sent + 1); /* the A again; AAAA cached */
	fake_stop(&f);
}

static void test_txt(void **state)
{
	struct t *t = *state;
	struct txt_res res;
	/* The character-strings of one record are joined without a space. */
	txt_of(t, "_spf.txt.test", &res);
	assert_int_equal(res.st, DNS_OK);
	assert_int_equal(res.n, 1);
	assert_string_equal(res.text[0], "v=spf1 ip4:192.0.2.0/24 -all");
	assert_true(res.ttl > 0 && res.ttl <= 300);
	txt_of(t, "TWO.txt.test.", &res);
	assert_int_equal(res.st, DNS_OK);
	assert_int_equal(res.n, 2);
	assert_true((strcmp(res.text[0], "first") == 0 && strcmp(res.text[1], "second") == 0) ||
		    (strcmp(res.text[0], "second") == 0 && strcmp(res.text[1], "first") == 0));
	/* No record: not found, cached (the second lookup sends nothing). */
	txt_of(t, "none.txt.test", &res);
	assert_int_equal(res.st, DNS_NOTFOUND);
	assert_int_equal(res.n, 0);
	int sent = (int)stats(t->r).queries_sent;
	txt_of(t, "none.txt.test", &res);
	assert_int_equal(res.st, DNS_NOTFOUND);
	assert_int_equal(stats(t->r).queries_sent, sent);
	/* Not a DNS name: an error, nothing sent. */
	txt_of(t, "bad name.test", &res);
	assert_int_equal(res.st, DNS_ERROR);
}

static void test_fake_txt(void **state)
{
	struct t *t = *state;
	struct fake f;
	struct txt_res res;
	use_fake(t, &f, NULL);
	/* One malformed record spoils the answer: never a part of it. */
	txt_of(t, "txtbad.test", &res);
	assert_int_equal(res.st, DNS_ERROR);
	assert_int_equal(res.n, 0);
	/* NULs inside the text are kept and counted. */
	txt_of(t, "txtnul.test", &res);
	assert_int_equal(res.st, DNS_OK);
	assert_int_equal(res.n, 1);
	assert_int_equal(res.len[0], 3);
	assert_memory_equal(res.text[0], "a\0b", 4);
	/* More records than an answer may hold: an error, not the first 32. */
	txt_of(t, "txtmany.test", &res);
	assert_int_equal(res.st, DNS_ERROR);
	fake_stop(&f);
}

static void test_fake_mx(void **state)
{
	struct t *t = *state;
	struct fake f;
	struct mx_res res;
	use_fake(t, &f, NULL);
	/* Only unusable hosts: an error, not "no MX" (no fallback to A). */
	mx_of(t, "mxbad.test", &res);
	assert_int_equal(res.st, DNS_ERROR);
	/* A root host next to a real one: not a null MX; the root is dropped. */
	mx_of(t, "mxmixed.test", &res);
	assert_int_equal(res.st, DNS_OK);
	assert_int_equal(res.n, 1);
	assert_int_equal(res.pref[0], 10);
	assert_string_equal(res.host[0], "mx.real.test");
	/* MX behind a CNAME. */
	mx_of(t, "mxcname.test", &res);
	assert_int_equal(res.st, DNS_OK);
	assert_int_equal(res.n, 1);
	assert_int_equal(res.pref[0], 7);
	assert_string_equal(res.host[0], "mx1.target.test");
	fake_stop(&f);
}

int main(void)
{
	signal(SIGPIPE, SIG_IGN);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_ptr, setup, teardown),
		cmocka_unit_test_setup_teardown(test_ptr_nxdomain, setup, teardown),
		cmocka_unit_test_setup_teardown(test_fcrdns, setup, teardown),
		cmocka_unit_test_setup_teardown(test_fcrdns_not_confirmed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_fcrdns_second_ptr_name, setup, teardown),
		cmocka_unit_test_setup_teardown(test_addrs, setup, teardown),
		cmocka_unit_test_setup_teardown(test_addrs_nxdomain_and_negative_cache, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_negative_cache_ptr, setup, teardown),
		cmocka_unit_test_setup_teardown(test_host, setup, teardown),
		cmocka_unit_test_setup_teardown(test_mx_order, setup, teardown),
		cmocka_unit_test_setup_teardown(test_txt, setup, teardown),
		cmocka_unit_test_setup_teardown(test_mx_null_and_missing, setup, teardown),
		cmocka_unit_test_setup_teardown(test_ttl_expiry, setup, teardown),
		cmocka_unit_test_setup_teardown(test_negative_ttl_cap, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cache_eviction, setup, teardown),
		cmocka_unit_test_setup_teardown(test_coalescing, setup, teardown),
		cmocka_unit_test_setup_teardown(test_timeout, setup, teardown),
		cmocka_unit_test_setup_teardown(test_second_server, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cancel, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cancel_on_silent_server, setup, teardown),
		cmocka_unit_test_setup_teardown(test_free_with_outstanding, setup, teardown),
		cmocka_unit_test_setup_teardown(test_free_from_callback, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_input, setup, teardown),
		cmocka_unit_test_setup_teardown(test_resolver_new, setup, teardown),
		cmocka_unit_test_setup_teardown(test_fake_ptr_names, setup, teardown),
		cmocka_unit_test_setup_teardown(test_fake_fcrdns_forward_timeout, setup, teardown),
		cmocka_unit_test_setup_teardown(test_fake_failures_not_cached, setup, teardown),
		cmocka_unit_test_setup_teardown(test_fake_host_half_answer, setup, teardown),
		cmocka_unit_test_setup_teardown(test_fake_negative_ttl_from_soa, setup, teardown),
		cmocka_unit_test_setup_teardown(test_fake_txt, setup, teardown),
		cmocka_unit_test_setup_teardown(test_fake_mx, setup, teardown),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}

/* Unit tests for access.c, the rule matcher of `connection` and `relay`
 * (posthorn.conf(5)): single addresses, CIDR, address + mask, /0, /32, /128,
 * IPv4-mapped clients, first match decides, the default, domain suffixes
 * on label boundaries, and host names on the addresses they stand for
 * (set here by hand, as an answer of the DNS would). */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

#include "net/access.h"
#include "net/dns.h"
#include "net/hostaddrs.h"
#include "conf/conf.h"

/* ---- helpers ------------------------------------------------------------- */

/* A client address, IPv4 or IPv6 by its text. */
struct client {
	struct sockaddr_storage ss;
};

static const struct sockaddr *client(struct client *c, const char *text)
{
	memset(c, 0, sizeof *c);
	struct sockaddr_in *in = (struct sockaddr_in *)&c->ss;
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&c->ss;
	if (inet_pton(AF_INET, text, &in->sin_addr) == 1) {
		in->sin_family = AF_INET;
		in->sin_port = htons(40000);
	} else {
		assert_int_equal(inet_pton(AF_INET6, text, &in6->sin6_addr), 1);
		in6->sin6_family = AF_INET6;
		in6->sin6_port = htons(40000);
	}
	return (const struct sockaddr *)&c->ss;
}

/* The connection block of a one-server configuration. */
static struct conf *parse_connection(const char *body)
{
	char *text;
	assert_true(asprintf(&text,
			     "domains example.test\n"
			     "server s {\n"
			     "    listen 127.0.0.1:25\n"
			     "    connection {\n%s    }\n"
			     "}\n",
			     body) > 0);
	char *errors = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&errors, &len);
	assert_non_null(f);
	struct conf *conf = NULL;
	int n = conf_parse_string("test.conf", text, "/etc/posthorn", &conf, f);
	fclose(f);
	if (n)
		print_message("unexpected errors:\n%s", errors);
	assert_int_equal(n, 0);
	assert_non_null(conf);
	assert_int_equal(conf->nservers, 1);
	free(errors);
	free(text);
	return conf;
}

static const struct conf_connection *conn(const struct conf *c)
{
	return &c->servers[0].connection;
}

/* Does rule i of the connection block cover the client? */
static bool rule_covers(const struct conf *c, size_t i, const char *addr)
{
	struct client cl;
	assert_true(i < conn(c)->nrules);
	return access_addr_matches(&conn(c)->rules[i], client(&cl, addr));
}

static bool allowed(const struct conf *c, const char *addr, const char *name,
		    const struct conf_rule **matched)
{
	struct client cl;
	return access_connection_allowed(conn(c), client(&cl, addr), name, NULL, matched);
}

/* ---- networks ------------------------------------------------------------ */

static void test_single_ipv4(void **state)
{
	(void)state;
	struct conf *c = parse_connection("        allow 192.0.2.10\n");
	assert_true(rule_covers(c, 0, "192.0.2.10"));
	assert_false(rule_covers(c, 0, "192.0.2.11"));
	assert_false(rule_covers(c, 0, "192.0.2.9"));
	assert_false(rule_covers(c, 0, "10.0.2.10"));
	/* /32 written out is the same rule. */
	conf_free(c);
	c = parse_connection("        allow 192.0.2.10/32\n");
	assert_true(rule_covers(c, 0, "192.0.2.10"));
	assert_false(rule_covers(c, 0, "192.0.2.11"));
	conf_free(c);
}

static void test_single_ipv6(void **state)
{
	(void)state;
	struct conf *c = parse_connection("        allow 2001:db8::1\n"
					  "        allow 2001:db8::2/128\n"
					  "        allow ::1\n");
	assert_true(rule_covers(c, 0, "2001:db8::1"));
	assert_true(rule_covers(c, 0, "2001:DB8:0:0:0:0:0:1"));
	assert_false(rule_covers(c, 0, "2001:db8::2"));
	assert_false(rule_covers(c, 0, "2001:db9::1"));
	assert_true(rule_covers(c, 1, "2001:db8::2"));
	assert_false(rule_covers(c, 1, "2001:db8::3"));
	assert_true(rule_covers(c, 2, "::1"));
	/* ::1 is not 127.0.0.1, nor is ::ffff:0.0.0.1. */
	assert_false(rule_covers(c, 2, "127.0.0.1"));
	assert_false(rule_covers(c, 2, "0.0.0.1"));
	conf_free(c);
}

static void test_cidr_ipv4(void **state)
{
	(void)state;
	struct conf *c = parse_connection("        allow 198.51.100.0/24\n"
					  "        allow 10.0.0.0/13\n"
					  "        allow 172.16.5.77/12\n");
	assert_true(rule_covers(c, 0, "198.51.100.0"));
	assert_true(rule_covers(c, 0, "198.51.100.255"));
	assert_false(rule_covers(c, 0, "198.51.101.0"));
	assert_false(rule_covers(c, 0, "198.51.99.255"));
	/* Not on a byte boundary. */
	assert_true(rule_covers(c, 1, "10.0.0.1"));
	assert_true(rule_covers(c, 1, "10.7.255.255"));
	assert_false(rule_covers(c, 1, "10.8.0.0"));
	assert_false(rule_covers(c, 1, "11.0.0.0"));
	/* Host bits in the rule are ignored. */
	assert_true(rule_covers(c, 2, "172.16.0.0"));
	assert_true(rule_covers(c, 2, "172.31.255.255"));
	assert_false(rule_covers(c, 2, "172.32.0.0"));
	/* IPv4 rules never cover native IPv6 clients. */
	assert_false(rule_covers(c, 0, "2001:db8::1"));
	assert_false(rule_covers(c, 0, "::c633:6401")); /* IPv4-compatible, not mapped */
	conf_free(c);
}

static void test_cidr_ipv6(void **state)
{
	(void)state;
	struct conf *c = parse_connection("        allow 2001:db8::/32\n"
					  "        allow 2001:db8:8000::/33\n"
					  "        allow fe80::/10\n");
	assert_true(rule_covers(c, 0, "2001:db8::"));
	assert_true(rule_covers(c, 0, "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff"));
	assert_false(rule_covers(c, 0, "2001:db9::"));
	assert_true(rule_covers(c, 1, "2001:db8:8000::1"));
	assert_true(rule_covers(c, 1, "2001:db8:ffff::1"));
	assert_false(rule_covers(c, 1, "2001:db8:7fff::1"));
	assert_true(rule_covers(c, 2, "fe80::1"));
	assert_true(rule_covers(c, 2, "febf::1"));
	assert_false(rule_covers(c, 2, "fec0::1"));
	/* IPv6 rules never cover IPv4 clients. */
	assert_false(rule_covers(c, 0, "32.1.13.184"));
	conf_free(c);
}

static void test_prefix_zero(void **state)
{
	(void)state;
	struct conf *c = parse_connection("        deny 0.0.0.0/0\n"
					  "        deny ::/0\n");
	assert_true(rule_covers(c, 0, "0.0.0.0"));
	assert_true(rule_covers(c, 0, "255.255.255.255"));
	assert_true(rule_covers(c, 0, "127.0.0.1"));
	assert_true(rule_covers(c, 0, "::ffff:192.0.2.1"));
	assert_false(rule_covers(c, 0, "::1"));
	assert_false(rule_covers(c, 0, "2001:db8::1"));
	assert_true(rule_covers(c, 1, "::"));
	assert_true(rule_covers(c, 1, "::1"));
	assert_true(rule_covers(c, 1, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"));
	/* A mapped client is an IPv4 client: ::/0 is not "everyone". */
	assert_false(rule_covers(c, 1, "::ffff:192.0.2.1"));
	assert_false(rule_covers(c, 1, "192.0.2.1"));
	conf_free(c);
}

static void test_address_and_mask(void **state)
{
	(void)state;
	struct conf *c = parse_connection("        allow 203.0.113.0 255.255.255.0\n"
					  "        allow 10.0.0.0 255.240.0.0\n"
					  "        allow 192.0.2.10 255.255.255.255\n"
					  "        allow 0.0.0.0 0.0.0.0\n");
	const struct conf_rule *r = conn(c)->rules;
	assert_int_equal(r[0].prefix, 24);
	assert_int_equal(r[1].prefix, 12);
	assert_int_equal(r[2].prefix, 32);
	assert_int_equal(r[3].prefix, 0);
	assert_true(rule_covers(c, 0, "203.0.113.1"));
	assert_false(rule_covers(c, 0, "203.0.114.1"));
	assert_true(rule_covers(c, 1, "10.15.255.255"));
	assert_false(rule_covers(c, 1, "10.16.0.0"));
	assert_true(rule_covers(c, 2, "192.0.2.10"));
	assert_false(rule_covers(c, 2, "192.0.2.11"));
	assert_true(rule_covers(c, 3, "8.8.8.8"));
	conf_free(c);
}

static void test_mask_not_contiguous_rejected(void **state)
{
	(void)state;
	const char *text = "domains example.test\n"
			   "server s {\n"
			   "    listen 127.0.0.1:25\n"
			   "    connection {\n"
			   "        allow 10.0.0.0 255.0.255.0\n"
			   "    }\n"
			   "}\n";
	char *errors = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&errors, &len);
	assert_non_null(f);
	struct conf *conf = NULL;
	int n = conf_parse_string("test.conf", text, "/etc/posthorn", &conf, f);
	fclose(f);
	assert_int_equal(n, 1);
	assert_null(conf);
	assert_non_null(strstr(errors, "test.conf:5:"));
	assert_non_null(strstr(errors, "contiguous"));
	free(errors);
}

static void test_mapped_clients_match_ipv4_rules(void **state)
{
	(void)state;
	struct conf *c = parse_connection("        allow 192.0.2.10\n"
					  "        allow 198.51.100.0/24\n"
					  "        allow 203.0.113.0 255.255.255.0\n");
	assert_true(rule_covers(c, 0, "::ffff:192.0.2.10"));
	assert_false(rule_covers(c, 0, "::ffff:192.0.2.11"));
	assert_true(rule_covers(c, 1, "::ffff:198.51.100.77"));
	assert_false(rule_covers(c, 1, "::ffff:198.51.101.77"));
	assert_true(rule_covers(c, 2, "::ffff:203.0.113.200"));
	/* The mapped form is ::ffff:0:0/96 only; the NAT64 prefix is not it. */
	assert_false(rule_covers(c, 0, "64:ff9b::c000:20a"));
	assert_false(rule_covers(c, 0, "::ffff:0:c000:20a"));
	conf_free(c);
}

static void test_mapped_ipv6_rules_cover_ipv4(void **state)
{
	(void)state;
	struct conf *c = parse_connection("        allow ::ffff:192.0.2.0/120\n"
					  "        allow ::ffff:0:0/96\n"
					  "        allow ::ffff:0:0/95\n");
	/* A rule written in the mapped form is an IPv4 rule. */
	assert_true(rule_covers(c, 0, "192.0.2.1"));
	assert_true(rule_covers(c, 0, "::ffff:192.0.2.200"));
	assert_false(rule_covers(c, 0, "192.0.3.1"));
	assert_true(rule_covers(c, 1, "8.8.8.8"));
	assert_true(rule_covers(c, 1, "::ffff:8.8.8.8"));
	assert_false(rule_covers(c, 1, "::1"));
	/* Wider than ::ffff:0:0/96: an IPv6 rule, no IPv4 client in it. */
	assert_false(rule_covers(c, 2, "8.8.8.8"));
	assert_true(rule_covers(c, 2, "::fffe:0:1"));
	conf_free(c);
}

static void test_hand_built_rules(void **state)
{
	(void)state;
	struct conf_rule r;
	memset(&r, 0, sizeof r);
	r.kind = RULE_NETWORK;
	r.family = AF_INET;
	r.prefix = 8;
	r.mask[0] = 0xff;
	r.addr[0] = 127;
	struct client cl;
	assert_true(access_addr_matches(&r, client(&cl, "127.1.2.3")));
	assert_true(access_addr_matches(&r, client(&cl, "::ffff:127.1.2.3")));
	assert_false(access_addr_matches(&r, client(&cl, "128.1.2.3")));
	/* Not a network rule, no address, an address family we do not know. */
	assert_false(access_addr_matches(&r, NULL));
	struct sockaddr_un un = {.sun_family = AF_UNIX};
	assert_false(access_addr_matches(&r, (const struct sockaddr *)&un));
	r.kind = RULE_DOMAIN;
	assert_false(access_addr_matches(&r, client(&cl, "127.1.2.3")));
	assert_false(access_addr_matches(NULL, client(&cl, "127.1.2.3")));
}

/* ---- first match, default ------------------------------------------------ */

static void test_first_match_decides(void **state)
{
	(void)state;
	const struct conf_rule *m;
	struct conf *c = parse_connection("        default allow\n"
					  "        deny  192.0.2.0/24\n"
					  "        allow 192.0.2.10\n");
	/* The deny comes first and covers .10 too. */
	assert_false(allowed(c, "192.0.2.10", NULL, &m));
	assert_ptr_equal(m, &conn(c)->rules[0]);
	assert_true(allowed(c, "192.0.3.10", NULL, &m));
	assert_null(m);
	conf_free(c);

	c = parse_connection("        default allow\n"
			     "        allow 192.0.2.10\n"
			     "        deny  192.0.2.0/24\n");
	assert_true(allowed(c, "192.0.2.10", NULL, &m));
	assert_ptr_equal(m, &conn(c)->rules[0]);
	assert_false(allowed(c, "192.0.2.11", NULL, &m));
	assert_ptr_equal(m, &conn(c)->rules[1]);
	assert_false(allowed(c, "::ffff:192.0.2.11", NULL, &m));
	assert_ptr_equal(m, &conn(c)->rules[1]);
	conf_free(c);
}

static void test_default_deny(void **state)
{
	(void)state;
	const struct conf_rule *m = (const struct conf_rule *)1;
	struct conf *c = parse_connection("        default deny\n"
					  "        allow 192.0.2.10\n"
					  "        allow 2001:db8::/32\n");
	assert_true(allowed(c, "192.0.2.10", NULL, &m));
	assert_ptr_equal(m, &conn(c)->rules[0]);
	assert_true(allowed(c, "2001:db8::5", NULL, &m));
	assert_ptr_equal(m, &conn(c)->rules[1]);
	assert_false(allowed(c, "192.0.2.11", NULL, &m));
	assert_null(m);
	assert_false(allowed(c, "2001:db9::5", NULL, NULL));
	conf_free(c);
}

static void test_default_allow_no_rules(void **state)
{
	(void)state;
	const struct conf_rule *m = (const struct conf_rule *)1;
	struct conf *c = parse_connection("");
	assert_int_equal(conn(c)->nrules, 0);
	assert_true(allowed(c, "192.0.2.10", NULL, &m));
	assert_null(m);
	assert_true(allowed(c, "::1", "host.example", NULL));
	assert_false(access_needs_name(conn(c)->rules, conn(c)->nrules));
	conf_free(c);
}

/* ---- domains ------------------------------------------------------------- */

static void test_name_in_domain(void **state)
{
	(void)state;
	assert_true(access_name_in_domain("isp.example", "isp.example"));
	assert_true(access_name_in_domain("mail.isp.example", "isp.example"));
	assert_true(access_name_in_domain("a.b.c.isp.example", "isp.example"));
	assert_true(access_name_in_domain("ISP.Example.", "isp.example"));
	assert_true(access_name_in_domain("Mail.ISP.example", "Isp.Example."));
	assert_true(access_name_in_domain("mail.isp.example.", "isp.example."));
	/* Not on a label boundary. */
	assert_false(access_name_in_domain("badisp.example", "isp.example"));
	assert_false(access_name_in_domain("mail.badisp.example", "isp.example"));
	/* Not below it at all. */
	assert_false(access_name_in_domain("isp.example.evil", "isp.example"));
	assert_false(access_name_in_domain("example", "isp.example"));
	assert_false(access_name_in_domain("sp.example", "isp.example"));
	assert_false(access_name_in_domain("isp.example..", "isp.example"));
	/* Degenerate input. */
	assert_false(access_name_in_domain("", "isp.example"));
	assert_false(access_name_in_domain(".", "isp.example"));
	assert_false(access_name_in_domain("isp.example", ""));
	assert_false(access_name_in_domain("isp.example", "."));
	assert_false(access_name_in_domain(NULL, "isp.example"));
	assert_false(access_name_in_domain("isp.example", NULL));
}

static void test_domain_rules(void **state)
{
	(void)state;
	const struct conf_rule *m;
	struct conf *c = parse_connection("        default deny\n"
					  "        deny  domain bad.isp.example\n"
					  "        allow domain ISP.Example.\n"
					  "        allow 192.0.2.10\n");
	assert_true(access_needs_name(conn(c)->rules, conn(c)->nrules));
	assert_true(allowed(c, "198.51.100.1", "mail.isp.example", &m));
	assert_ptr_equal(m, &conn(c)->rules[1]);
	assert_true(allowed(c, "198.51.100.1", "ISP.Example.", &m));
	assert_ptr_equal(m, &conn(c)->rules[1]);
	assert_false(allowed(c, "198.51.100.1", "badisp.example", &m));
	assert_null(m);
	assert_false(allowed(c, "198.51.100.1", "host.bad.isp.example", &m));
	assert_ptr_equal(m, &conn(c)->rules[0]);
	/* No name (no PTR, a failed or timed-out lookup): domain rules are
	 * skipped and the address rules and the default still decide. */
	assert_false(allowed(c, "198.51.100.1", NULL, &m));
	assert_null(m);
	assert_true(allowed(c, "192.0.2.10", NULL, &m));
	assert_ptr_equal(m, &conn(c)->rules[2]);
	/* A name never matches an address rule by itself. */
	assert_false(allowed(c, "192.0.2.11", "192.0.2.10", NULL));
	conf_free(c);

	/* default allow stays open when the name is unknown. */
	c = parse_connection("        deny domain spam.example\n");
	assert_true(allowed(c, "198.51.100.1", NULL, &m));
	assert_null(m);
	assert_false(allowed(c, "198.51.100.1", "x.spam.example", &m));
	assert_ptr_equal(m, &conn(c)->rules[0]);
	conf_free(c);
}

static void test_first_match_helper(void **state)
{
	(void)state;
	struct client cl;
	struct conf *c = parse_connection("        allow domain isp.example\n"
					  "        deny 0.0.0.0/0\n");
	const struct conf_rule *rules = conn(c)->rules;
	size_t n = conn(c)->nrules;
	assert_ptr_equal(access_first_match(rules, n, client(&cl, "1.2.3.4"), "x.isp.example", NULL),
			 &rules[0]);
	assert_ptr_equal(access_first_match(rules, n, client(&cl, "1.2.3.4"), NULL, NULL), &rules[1]);
	assert_null(access_first_match(rules, n, client(&cl, "::1"), NULL, NULL));
	assert_null(access_first_match(rules, 0, client(&cl, "1.2.3.4"), "x.isp.example", NULL));
	conf_free(c);
}

/* ---- host names ------------------------------------------------------------ */

static struct dns_addr dns_addr_of(const char *text)
{
	struct dns_addr a = {0};
	if (inet_pton(AF_INET, text, a.addr) == 1) {
		a.family = AF_INET;
	} else {
		assert_int_equal(inet_pton(AF_INET6, text, a.addr), 1);
		a.family = AF_INET6;
	}
	return a;
}

/* The server's host names with the addresses a DNS answer gave them. */
static struct hostaddrs *hosts_of(const struct conf *c)
{
	const struct conf_server *s = &c->servers[0];
	return hostaddrs_new(s->hosts, s->nhosts, 30, 86400);
}

static void set_addrs(struct hostaddrs *h, size_t i, const char *a, const char *b)
{
	struct dns_addr addrs[2] = {dns_addr_of(a), dns_addr_of(b ? b : a)};
	hostaddrs_set(h, i, addrs, b ? 2 : 1);
}

static bool allowed_with(const struct conf *c, const struct hostaddrs *h, const char *addr,
			 const struct conf_rule **matched)
{
	struct client cl;
	return access_connection_allowed(conn(c), client(&cl, addr), NULL, h, matched);
}

static void test_host_rules_match_their_addresses(void **state)
{
	(void)state;
	const struct conf_rule *m;
	struct conf *c = parse_connection("        default deny\n"
					  "        allow host Mail.ISP.example.\n"
					  "        allow host relay.isp.example\n");
	assert_int_equal(c->servers[0].nhosts, 2);
	assert_string_equal(c->servers[0].hosts[0], "mail.isp.example");
	struct hostaddrs *h = hosts_of(c);
	set_addrs(h, 0, "192.0.2.25", "2001:db8::25");
	assert_true(allowed_with(c, h, "192.0.2.25", &m));
	assert_ptr_equal(m, &conn(c)->rules[0]);
	assert_true(allowed_with(c, h, "::ffff:192.0.2.25", &m));
	assert_ptr_equal(m, &conn(c)->rules[0]);
	assert_true(allowed_with(c, h, "2001:db8::25", &m));
	assert_ptr_equal(m, &conn(c)->rules[0]);
	/* neighbours of the addresses are not the host */
	assert_false(allowed_with(c, h, "192.0.2.26", &m));
	assert_null(m);
	assert_false(allowed_with(c, h, "2001:db8::26", NULL));
	/* the second name has no answer yet: it matches nothing */
	assert_false(allowed_with(c, h, "198.51.100.1", &m));
	assert_null(m);
	/* a new answer replaces the old addresses */
	set_addrs(h, 0, "192.0.2.99", NULL);
	assert_false(allowed_with(c, h, "192.0.2.25", NULL));
	assert_true(allowed_with(c, h, "192.0.2.99", NULL));
	/* an answer with no addresses: the name matches nothing again */
	hostaddrs_set(h, 0, NULL, 0);
	assert_false(allowed_with(c, h, "192.0.2.99", NULL));
	/* without the set (no lookups), host rules match nothing */
	set_addrs(h, 0, "192.0.2.25", NULL);
	assert_false(allowed_with(c, NULL, "192.0.2.25", NULL));
	hostaddrs_free(h);
	conf_free(c);
}

static void test_unresolved_deny_host_denies_nothing(void **state)
{
	(void)state;
	const struct conf_rule *m;
	/* default allow with a deny host list: open until the name resolves */
	struct conf *c = parse_connection("        deny host spam.example\n");
	struct hostaddrs *h = hosts_of(c);
	assert_true(allowed_with(c, h, "203.0.113.5", &m));
	assert_null(m);
	set_addrs(h, 0, "203.0.113.5", NULL);
	assert_false(allowed_with(c, h, "203.0.113.5", &m));
	assert_ptr_equal(m, &conn(c)->rules[0]);
	assert_true(allowed_with(c, h, "203.0.113.6", NULL));
	hostaddrs_free(h);
	conf_free(c);
}

static void test_host_rules_in_order(void **state)
{
	(void)state;
	const struct conf_rule *m;
	/* one name in two rules is one entry; the first rule that matches decides */
	struct conf *c = parse_connection("        deny 192.0.2.7\n"
					  "        allow host a.example\n"
					  "        deny host b.example\n"
					  "        deny host a.example\n"
					  "        default deny\n");
	const struct conf_server *s = &c->servers[0];
	assert_int_equal(s->nhosts, 2);
	assert_int_equal(conn(c)->rules[1].host, 0);
	assert_int_equal(conn(c)->rules[2].host, 1);
	assert_int_equal(conn(c)->rules[3].host, 0);
	struct hostaddrs *h = hosts_of(c);
	set_addrs(h, 0, "192.0.2.7", "192.0.2.8");
	set_addrs(h, 1, "192.0.2.8", "192.0.2.9");
	assert_false(allowed_with(c, h, "192.0.2.7", &m));
	assert_ptr_equal(m, &conn(c)->rules[0]);
	assert_true(allowed_with(c, h, "192.0.2.8", &m));
	assert_ptr_equal(m, &conn(c)->rules[1]);
	assert_false(allowed_with(c, h, "192.0.2.9", &m));
	assert_ptr_equal(m, &conn(c)->rules[2]);
	/* a host rule is no network rule, and the reverse */
	assert_false(access_addr_matches(&conn(c)->rules[1], client(&(struct client){0}, "192.0.2.8")));
	assert_false(access_host_matches(&conn(c)->rules[0], client(&(struct client){0}, "192.0.2.7"), h));
	assert_false(access_needs_name(conn(c)->rules, conn(c)->nrules));
	hostaddrs_free(h);
	conf_free(c);
}

static void test_relay_host_rule(void **state)
{
	(void)state;
	char *errors = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&errors, &len);
	assert_non_null(f);
	struct conf *c = NULL;
	assert_int_equal(conf_parse_string("test.conf",
					   "domains example.test\n"
					   "server s {\n"
					   "    listen 127.0.0.1:25\n"
					   "    connection { deny host spam.example }\n"
					   "    relay { allow host office.example }\n"
					   "}\n",
					   "/etc/posthorn", &c, f), 0);
	fclose(f);
	free(errors);
	const struct conf_server *s = &c->servers[0];
	/* connection and relay share the server's names */
	assert_int_equal(s->nhosts, 2);
	assert_int_equal(s->relay.rules[0].host, 1);
	struct hostaddrs *h = hosts_of(c);
	set_addrs(h, 1, "192.0.2.44", NULL);
	struct client cl;
	assert_ptr_equal(access_first_match(s->relay.rules, s->relay.nrules,
					    client(&cl, "192.0.2.44"), NULL, h),
			 &s->relay.rules[0]);
	assert_null(access_first_match(s->relay.rules, s->relay.nrules,
				       client(&cl, "192.0.2.45"), NULL, h));
	hostaddrs_free(h);
	conf_free(c);
}

static void test_hostaddrs_retry_delay(void **state)
{
	(void)state;
	/* doubles from the refresh minimum, up to 5 minutes */
	assert_int_equal(hostaddrs_retry_delay(30, 1), 30);
	assert_int_equal(hostaddrs_retry_delay(30, 2), 60);
	assert_int_equal(hostaddrs_retry_delay(30, 4), 240);
	assert_int_equal(hostaddrs_retry_delay(30, 5), 300);
	assert_int_equal(hostaddrs_retry_delay(30, 1000), 300);
	assert_int_equal(hostaddrs_retry_delay(1, 3), 4);
	/* a minimum above the cap is the wait itself */
	assert_int_equal(hostaddrs_retry_delay(3600, 1), 3600);
	assert_int_equal(hostaddrs_retry_delay(3600, 9), 3600);
}

static void test_hostaddrs_seed(void **state)
{
	(void)state;
	char *old_names[] = {"a.example", "b.example"};
	char *new_names[] = {"b.example", "c.example"};
	struct hostaddrs *old = hostaddrs_new(old_names, 2, 30, 86400);
	struct hostaddrs *h = hostaddrs_new(new_names, 2, 30, 86400);
	set_addrs(old, 1, "192.0.2.2", "2001:db8::2");
	hostaddrs_seed(h, old);
	size_t n;
	const struct dns_addr *a = hostaddrs_get(h, 0, &n);
	assert_int_equal(n, 2);
	assert_int_equal(a[1].family, AF_INET6);
	assert_null(hostaddrs_get(h, 1, &n));
	assert_int_equal(n, 0);
	/* out of range, or no set at all: nothing */
	assert_null(hostaddrs_get(h, 2, &n));
	assert_int_equal(n, 0);
	assert_null(hostaddrs_get(NULL, 0, &n));
	hostaddrs_free(old);
	hostaddrs_free(h);
}

/* ---- block lists: in order with the other rules ---------------------- */

static void test_dnsbl_rules_in_order(void **state)
{
	(void)state;
	struct conf *c = parse_connection("        allow 192.0.2.7\n"
					  "        deny dnsbl bl.example\n"
					  "        allow dnsbl wl.example\n"
					  "        deny 192.0.2.0/24\n");
	struct client cl;
	const struct sockaddr *seven = client(&cl, "192.0.2.7");
	/* an earlier rule decides: no list is asked */
	assert_int_equal(access_dnsbl_reach(conn(c), seven, NULL, NULL), 0);
	const struct sockaddr *eight = client(&cl, "192.0.2.8");
	/* both lists come before the /24 that covers .8 */
	assert_int_equal(access_dnsbl_reach(conn(c), eight, NULL, NULL), 3);
	const struct conf_rule *m = NULL;
	bool none[4] = {false, false, false, false}, black[4] = {false, true, false, false},
	     white[4] = {false, false, true, false}, both[4] = {false, true, true, false};
	assert_false(access_connection_decide(conn(c), eight, NULL, NULL, none, &m));
	assert_ptr_equal(m, &conn(c)->rules[3]);
	assert_false(access_connection_decide(conn(c), eight, NULL, NULL, black, &m));
	assert_ptr_equal(m, &conn(c)->rules[1]);
	assert_true(access_connection_decide(conn(c), eight, NULL, NULL, white, &m));
	assert_ptr_equal(m, &conn(c)->rules[2]);
	/* first match: the block list before the allow list */
	assert_false(access_connection_decide(conn(c), eight, NULL, NULL, both, &m));
	assert_ptr_equal(m, &conn(c)->rules[1]);
	/* without findings a dnsbl rule matches nobody */
	assert_false(access_connection_allowed(conn(c), eight, NULL, NULL, &m));
	assert_ptr_equal(m, &conn(c)->rules[3]);
	/* outside every static rule: reach is all the rules */
	assert_int_equal(access_dnsbl_reach(conn(c), client(&cl, "198.51.100.1"), NULL, NULL), 4);
	conf_free(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_single_ipv4),
		cmocka_unit_test(test_single_ipv6),
		cmocka_unit_test(test_cidr_ipv4),
		cmocka_unit_test(test_cidr_ipv6),
		cmocka_unit_test(test_prefix_zero),
		cmocka_unit_test(test_address_and_mask),
		cmocka_unit_test(test_mask_not_contiguous_rejected),
		cmocka_unit_test(test_mapped_clients_match_ipv4_rules),
		cmocka_unit_test(test_mapped_ipv6_rules_cover_ipv4),
		cmocka_unit_test(test_hand_built_rules),
		cmocka_unit_test(test_first_match_decides),
		cmocka_unit_test(test_default_deny),
		cmocka_unit_test(test_default_allow_no_rules),
		cmocka_unit_test(test_name_in_domain),
		cmocka_unit_test(test_domain_rules),
		cmocka_unit_test(test_first_match_helper),
		cmocka_unit_test(test_host_rules_match_their_addresses),
		cmocka_unit_test(test_unresolved_deny_host_denies_nothing),
		cmocka_unit_test(test_host_rules_in_order),
		cmocka_unit_test(test_relay_host_rule),
		cmocka_unit_test(test_hostaddrs_retry_delay),
		cmocka_unit_test(test_hostaddrs_seed),
		cmocka_unit_test(test_dnsbl_rules_in_order),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

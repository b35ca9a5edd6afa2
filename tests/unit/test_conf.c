/* Unit tests for conf.c: the configuration language of posthorn.conf(5) — every
 * directive, every default, every error message with its exact
 * FILE:LINE:COL, includes, validation, and the policy `check` prints. */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "conf/conf.h"
#include "lib/util.h"

#define NAME "posthorn.conf"
#define BASEDIR "/etc/posthorn"

/* ---- helpers ------------------------------------------------------------- */

struct parsed {
	struct conf *conf;
	int n;
	char *errors;
};

static struct parsed parse_in(const char *text, const char *basedir)
{
	struct parsed r = {0};
	size_t len = 0;
	FILE *f = open_memstream(&r.errors, &len);
	assert_non_null(f);
	r.n = conf_parse_string(NAME, text, basedir, &r.conf, f);
	fclose(f);
	return r;
}

static struct conf *parse_ok(const char *text)
{
	struct parsed r = parse_in(text, BASEDIR);
	if (r.n)
		print_message("unexpected errors:\n%s", r.errors);
	assert_int_equal(r.n, 0);
	assert_string_equal(r.errors, "");
	assert_non_null(r.conf);
	free(r.errors);
	return r.conf;
}

static int count_lines(const char *s)
{
	int n = 0;
	for (; *s; s++)
		n += *s == '\n';
	return n;
}

/* The text must be refused with exactly these messages, in this order. */
static void expect_errors(const char *text, const char *expected)
{
	struct parsed r = parse_in(text, BASEDIR);
	assert_null(r.conf);
	assert_string_equal(r.errors, expected);
	assert_int_equal(r.n, count_lines(expected));
	free(r.errors);
}

/* A server block that is valid on its own, for tests about something else. */
#define OK_SERVER "server ok {\n    listen 127.0.0.1:2999\n}\n"

static const uint8_t *sa_bytes(const struct conf_sockaddr *sa)
{
	if (sa->ss.ss_family == AF_INET)
		return (const uint8_t *)&((const struct sockaddr_in *)&sa->ss)->sin_addr;
	return (const uint8_t *)&((const struct sockaddr_in6 *)&sa->ss)->sin6_addr;
}

static unsigned sa_port(const struct conf_sockaddr *sa)
{
	if (sa->ss.ss_family == AF_INET)
		return ntohs(((const struct sockaddr_in *)&sa->ss)->sin_port);
	return ntohs(((const struct sockaddr_in6 *)&sa->ss)->sin6_port);
}

static void assert_sockaddr(const struct conf_sockaddr *sa, const char *ip, unsigned port)
{
	uint8_t want[16] = {0};
	int family = strchr(ip, ':') ? AF_INET6 : AF_INET;
	assert_int_equal(inet_pton(family, ip, want), 1);
	assert_int_equal(sa->ss.ss_family, family);
	assert_int_equal(sa->len, family == AF_INET ? sizeof(struct sockaddr_in)
						    : sizeof(struct sockaddr_in6));
	assert_memory_equal(sa_bytes(sa), want, family == AF_INET ? 4 : 16);
	assert_int_equal(sa_port(sa), port);
}

static void assert_pos(const struct conf_pos *pos, const char *file, unsigned line, unsigned col)
{
	assert_string_equal(pos->file, file);
	assert_int_equal(pos->line, line);
	assert_int_equal(pos->col, col);
}

static void assert_network_rule(const struct conf_rule *r, const char *ip, unsigned prefix,
				const char *text)
{
	uint8_t want[16] = {0}, mask[16] = {0};
	int family = strchr(ip, ':') ? AF_INET6 : AF_INET;
	assert_int_equal(inet_pton(family, ip, want), 1);
	for (unsigned i = 0; i < prefix; i++)
		mask[i / 8] |= (uint8_t)(0x80 >> (i % 8));
	assert_int_equal(r->kind, RULE_NETWORK);
	assert_int_equal(r->family, family);
	assert_int_equal(r->prefix, prefix);
	assert_memory_equal(r->addr, want, 16);
	assert_memory_equal(r->mask, mask, 16);
	assert_string_equal(r->text, text);
	assert_null(r->domain);
}

/* The policy text and its warning count. */
static char *policy_of(const struct conf *c, int *warnings)
{
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);
	assert_non_null(f);
	*warnings = conf_print_policy(c, f);
	fclose(f);
	return text;
}

static int count_substrings(const char *s, const char *needle)
{
	int n = 0;
	for (const char *p = s; (p = strstr(p, needle)) != NULL; p += strlen(needle))
		n++;
	return n;
}

static void assert_contains(const char *haystack, const char *needle)
{
	if (!strstr(haystack, needle))
		print_message("missing \"%s\" in:\n%s\n", needle, haystack);
	assert_non_null(strstr(haystack, needle));
}

static void assert_not_contains(const char *haystack, const char *needle)
{
	if (strstr(haystack, needle))
		print_message("unexpected \"%s\" in:\n%s\n", needle, haystack);
	assert_null(strstr(haystack, needle));
}

/* ---- temporary folders ---------------------------------------------------- */

static char *make_tmpdir(void)
{
	char tmpl[] = "/tmp/test_conf.XXXXXX";
	assert_non_null(mkdtemp(tmpl));
	char *real = realpath(tmpl, NULL);
	assert_non_null(real);
	return real;
}

static char *write_file(const char *dir, const char *name, const char *text)
{
	char *path = xasprintf("%s/%s", dir, name);
	char *slash = strrchr(path, '/');
	*slash = '\0';
	assert_int_equal(mkdir_p(path, 0700), 0);
	*slash = '/';
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
	return path;
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static void remove_tree(char *dir)
{
	assert_int_equal(nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS), 0);
	free(dir);
}

/* conf_load with the errors captured. */
static struct parsed load(const char *path)
{
	struct parsed r = {0};
	size_t len = 0;
	FILE *f = open_memstream(&r.errors, &len);
	assert_non_null(f);
	r.n = conf_load(path, &r.conf, f);
	fclose(f);
	return r;
}

/* ---- a full configuration --------------------------------------------------- */

static const char spec_example[] =
	"hostname   mail.example.test        # default FQDN of every server\n"
	"domains    example.test example.org # local domains\n"
	"spool      /var/spool/posthorn\n"
	"mailboxes  /var/mail/posthorn\n"
	"users      /etc/posthorn/users\n"
	"aliases    /etc/posthorn/aliases\n"
	"dns        127.0.0.1:53\n"
	"run-as     posthorn\n"
	"\n"
	"outbound {\n"
	"    smarthost  relay.isp.example:587\n"
	"    smarthost-auth isp-user /etc/posthorn/isp.secret\n"
	"    port       25\n"
	"    tls        opportunistic\n"
	"    lifetime   5d\n"
	"    retry      5m 15m 1h 4h\n"
	"}\n"
	"\n"
	"server submission {\n"                              /* 19 */
	"    protocol  smtp\n"
	"    listen    0.0.0.0:587               # plain\n"  /* 21 */
	"    listen    [::]:587\n"
	"    listen    0.0.0.0:465 tls\n"
	"    hostname  smtp.example.test\n"
	"    dns       192.0.2.53\n"
	"\n"
	"    tls {\n"
	"        certificate /etc/posthorn/smtp.crt\n"     /* 28 */
	"        key         /etc/posthorn/smtp.key\n"
	"        require     yes\n"
	"        min-bits    128\n"
	"        min-version 1.2\n"
	"        strict-sni  no\n"
	"    }\n"
	"\n"
	"    connection {\n"
	"        default deny\n"
	"        allow 192.0.2.10\n"                        /* 38 */
	"        allow 198.51.100.0/24\n"
	"        allow 203.0.113.0 255.255.255.0\n"
	"        allow domain isp.example\n"
	"        deny  192.0.2.0/24\n"
	"    }\n"
	"\n"
	"    auth {\n"
	"        mechanisms plain login scram-sha-256\n"
	"        anonymous  no\n"
	"        plaintext-requires-tls yes\n"
	"        sender-must-match yes\n"
	"        lockout 5 15m 30m\n"
	"    }\n"
	"\n"
	"    relay {\n"
	"        authenticated yes\n"
	"        allow 10.0.0.0/8\n"
	"        allow domain corp.example\n"
	"    }\n"
	"\n"
	"    limits {\n"
	"        message-size       25M\n"
	"        recipients         100\n"
	"        connections        1000\n"
	"        connections-per-ip 20\n"
	"        timeout            5m\n"
	"    }\n"
	"}\n";

static void test_spec_example_globals(void **state)
{
	(void)state;
	struct conf *c = parse_ok(spec_example);
	assert_string_equal(c->path, NAME);
	assert_int_equal(c->nfiles, 1);
	assert_string_equal(c->files[0], NAME);
	assert_string_equal(c->hostname, "mail.example.test");
	assert_int_equal(c->ndomains, 2);
	assert_string_equal(c->domains[0], "example.test");
	assert_string_equal(c->domains[1], "example.org");
	assert_string_equal(c->spool, "/var/spool/posthorn");
	assert_string_equal(c->mailboxes, "/var/mail/posthorn");
	assert_string_equal(c->users, "/etc/posthorn/users");
	assert_string_equal(c->aliases, "/etc/posthorn/aliases");
	assert_int_equal(c->dns.nservers, 1);
	assert_sockaddr(&c->dns.servers[0], "127.0.0.1", 53);
	assert_string_equal(c->dns.servers[0].text, "127.0.0.1:53");
	assert_pos(&c->dns.servers[0].pos, NAME, 7, 12);
	assert_string_equal(c->run_as, "posthorn");

	const struct conf_outbound *o = &c->outbound;
	assert_string_equal(o->smarthost, "relay.isp.example:587");
	assert_string_equal(o->smarthost_host, "relay.isp.example");
	assert_int_equal(o->smarthost_port, 587);
	assert_string_equal(o->smarthost_user, "isp-user");
	assert_string_equal(o->smarthost_secret, "/etc/posthorn/isp.secret");
	assert_int_equal(o->port, 25);
	assert_int_equal(o->tls, OUTBOUND_TLS_OPPORTUNISTIC);
	assert_int_equal(o->lifetime, 5 * 86400);
	assert_int_equal(o->nretry, 4);
	assert_int_equal(o->retry[0], 300);
	assert_int_equal(o->retry[1], 900);
	assert_int_equal(o->retry[2], 3600);
	assert_int_equal(o->retry[3], 14400);
	conf_free(c);
}

static void test_spec_example_server(void **state)
{
	(void)state;
	struct conf *c = parse_ok(spec_example);
	assert_int_equal(c->nservers, 1);
	const struct conf_server *s = &c->servers[0];
	assert_string_equal(s->name, "submission");
	assert_pos(&s->pos, NAME, 19, 1);
	assert_int_equal(s->protocol, PROTO_SMTP);
	assert_string_equal(s->hostname, "smtp.example.test");
	assert_int_equal(s->nlistens, 3);
	assert_sockaddr(&s->listens[0].addr, "0.0.0.0", 587);
	assert_string_equal(s->listens[0].addr.text, "0.0.0.0:587");
	assert_pos(&s->listens[0].addr.pos, NAME, 21, 15);
	assert_false(s->listens[0].tls);
	assert_sockaddr(&s->listens[1].addr, "::", 587);
	assert_string_equal(s->listens[1].addr.text, "[::]:587");
	assert_false(s->listens[1].tls);
	assert_sockaddr(&s->listens[2].addr, "0.0.0.0", 465);
	assert_true(s->listens[2].tls);
	assert_int_equal(s->dns.nservers, 1);
	assert_sockaddr(&s->dns.servers[0], "192.0.2.53", 53);

	assert_int_equal(s->tls.ncerts, 1);
	assert_string_equal(s->tls.certs[0].certificate, "/etc/posthorn/smtp.crt");
	assert_string_equal(s->tls.certs[0].key, "/etc/posthorn/smtp.key");
	assert_pos(&s->tls.certs[0].pos, NAME, 28, 9);
	assert_true(s->tls.require);
	assert_int_equal(s->tls.min_bits, 128);
	assert_int_equal(s->tls.min_version, TLS_VERSION_1_2);
	assert_false(s->tls.strict_sni);
	conf_free(c);
}

static void test_spec_example_rules(void **state)
{
	(void)state;
	struct conf *c = parse_ok(spec_example);
	const struct conf_server *s = &c->servers[0];
	const struct conf_connection *cn = &s->connection;
	assert_int_equal(cn->default_action, ACTION_DENY);
	assert_int_equal(cn->nrules, 5);
	assert_network_rule(&cn->rules[0], "192.0.2.10", 32, "192.0.2.10");
	assert_int_equal(cn->rules[0].action, ACTION_ALLOW);
	assert_pos(&cn->rules[0].pos, NAME, 38, 9);
	assert_network_rule(&cn->rules[1], "198.51.100.0", 24, "198.51.100.0/24");
	assert_network_rule(&cn->rules[2], "203.0.113.0", 24, "203.0.113.0 255.255.255.0");
	assert_int_equal(cn->rules[3].kind, RULE_DOMAIN);
	assert_string_equal(cn->rules[3].domain, "isp.example");
	assert_string_equal(cn->rules[3].text, "domain isp.example");
	assert_int_equal(cn->rules[3].action, ACTION_ALLOW);
	assert_network_rule(&cn->rules[4], "192.0.2.0", 24, "192.0.2.0/24");
	assert_int_equal(cn->rules[4].action, ACTION_DENY);

	const struct conf_auth *a = &s->auth;
	assert_int_equal(a->mechanisms, MECH_PLAIN | MECH_LOGIN | MECH_SCRAM_SHA_256);
	assert_false(a->anonymous);
	assert_true(a->plaintext_requires_tls);
	assert_true(a->sender_must_match);
	assert_int_equal(a->lockout_failures, 5);
	assert_int_equal(a->lockout_window, 900);
	assert_int_equal(a->lockout_duration, 1800);

	const struct conf_relay *r = &s->relay;
	assert_true(r->authenticated);
	assert_int_equal(r->nrules, 2);
	assert_network_rule(&r->rules[0], "10.0.0.0", 8, "10.0.0.0/8");
	assert_int_equal(r->rules[0].action, ACTION_ALLOW);
	assert_int_equal(r->rules[1].kind, RULE_DOMAIN);
	assert_string_equal(r->rules[1].domain, "corp.example");

	const struct conf_limits *l = &s->limits;
	assert_int_equal(l->message_size, 25 * 1024 * 1024);
	assert_int_equal(l->recipients, 100);
	assert_int_equal(l->connections, 1000);
	assert_int_equal(l->connections_per_ip, 20);
	assert_int_equal(l->timeout, 300);
	conf_free(c);
}

/* ---- defaults ------------------------------------------------------------- */

static void test_global_defaults(void **state)
{
	(void)state;
	struct conf *c = parse_ok("domains example.test\n" OK_SERVER);
	assert_string_equal(c->spool, "/var/spool/posthorn");
	assert_string_equal(c->mailboxes, "/var/mail/posthorn");
	assert_string_equal(c->users, "/etc/posthorn/users");
	assert_null(c->aliases);
	assert_int_equal(c->dns.nservers, 0);
	assert_null(c->run_as);
	assert_null(c->outbound.smarthost);
	assert_null(c->outbound.smarthost_host);
	assert_int_equal(c->outbound.smarthost_port, 25);
	assert_null(c->outbound.smarthost_user);
	assert_null(c->outbound.smarthost_secret);
	assert_int_equal(c->outbound.port, 25);
	assert_int_equal(c->outbound.tls, OUTBOUND_TLS_OPPORTUNISTIC);
	assert_int_equal(c->outbound.lifetime, 5 * 86400);
	assert_int_equal(c->outbound.nretry, 4);
	assert_int_equal(c->outbound.retry[0], 5 * 60);
	assert_int_equal(c->outbound.retry[3], 4 * 3600);
	conf_free(c);
}

static void test_server_defaults(void **state)
{
	(void)state;
	struct conf *c = parse_ok("domains example.test\n" OK_SERVER);
	const struct conf_server *s = &c->servers[0];
	assert_int_equal(s->protocol, PROTO_SMTP);
	assert_string_equal(s->hostname, c->hostname);
	assert_int_equal(s->dns.nservers, 0);
	assert_int_equal(s->tls.ncerts, 0);
	assert_false(s->tls.require);
	assert_int_equal(s->tls.min_bits, 128);
	assert_int_equal(s->tls.min_version, TLS_VERSION_1_2);
	assert_false(s->tls.strict_sni);
	assert_int_equal(s->connection.default_action, ACTION_ALLOW);
	assert_int_equal(s->connection.nrules, 0);
	assert_int_equal(s->auth.mechanisms, MECH_PLAIN | MECH_LOGIN | MECH_SCRAM_SHA_256);
	assert_false(s->auth.anonymous);
	assert_true(s->auth.plaintext_requires_tls);
	assert_true(s->auth.sender_must_match);
	assert_int_equal(s->auth.lockout_failures, 5);
	assert_int_equal(s->auth.lockout_window, 15 * 60);
	assert_int_equal(s->auth.lockout_duration, 30 * 60);
	assert_int_equal(s->auth.lockout_ipv6_prefix, 64);
	assert_true(s->auth.received_auth);
	assert_true(s->relay.authenticated);
	assert_int_equal(s->relay.nrules, 0);
	assert_int_equal(s->limits.message_size, 25 * 1024 * 1024);
	assert_int_equal(s->limits.recipients, 100);
	assert_int_equal(s->limits.connections, 1000);
	assert_int_equal(s->limits.connections_per_ip, 20);
	assert_int_equal(s->limits.timeout, 5 * 60);
	assert_int_equal(s->limits.error_delay, 1);
	assert_int_equal(s->limits.error_delay_after, 3);
	assert_int_equal(s->limits.unknown_recipients, 50);
	assert_int_equal(s->limits.unknown_recipients_window, 3600);
	assert_int_equal(s->limits.unknown_recipients_duration, 3600);
	conf_free(c);
}

static void test_timeout_default_follows_protocol(void **state)
{
	(void)state;
	struct conf *c = parse_ok("domains example.test\n"
				  "server p {\n    protocol pop3\n    listen 127.0.0.1:110\n}\n"
				  "server i {\n    listen 127.0.0.1:143\n    protocol imap\n}\n"
				  "server s {\n    listen 127.0.0.1:25\n}\n"
				  "server given {\n    protocol imap\n    listen 127.0.0.1:144\n"
				  "    limits {\n        timeout 90s\n    }\n}\n");
	assert_int_equal(c->nservers, 4);
	assert_int_equal(c->servers[0].protocol, PROTO_POP3);
	assert_int_equal(c->servers[0].limits.timeout, 10 * 60);
	assert_int_equal(c->servers[1].protocol, PROTO_IMAP);
	assert_int_equal(c->servers[1].limits.timeout, 30 * 60);
	assert_int_equal(c->servers[2].limits.timeout, 5 * 60);
	assert_int_equal(c->servers[3].limits.timeout, 90);
	conf_free(c);
}

static void test_hostname_defaults_to_system_name(void **state)
{
	(void)state;
	char name[256] = {0};
	assert_int_equal(gethostname(name, sizeof name - 1), 0);
	str_lower(name);
	struct conf *c = parse_ok("domains example.test\n" OK_SERVER);
	assert_string_equal(c->hostname, name[0] ? name : "localhost");
	assert_string_equal(c->servers[0].hostname, c->hostname);
	conf_free(c);
}

static void test_server_hostname_from_global_given_later(void **state)
{
	(void)state;
	struct conf *c = parse_ok("domains example.test\n" OK_SERVER
				  "server own {\n    listen 127.0.0.1:26\n    hostname MX.Example.Test.\n}\n"
				  "hostname mail.example.test\n");
	assert_string_equal(c->servers[0].hostname, "mail.example.test");
	assert_string_equal(c->servers[1].hostname, "mx.example.test");
	conf_free(c);
}

static void test_protocol_name(void **state)
{
	(void)state;
	assert_string_equal(conf_protocol_name(PROTO_SMTP), "smtp");
	assert_string_equal(conf_protocol_name(PROTO_POP3), "pop3");
	assert_string_equal(conf_protocol_name(PROTO_IMAP), "imap");
}

/* quota SIZE [MESSAGES] | none: the users' default limit (RFC 9208). */
static void test_quota(void **state)
{
	(void)state;
	struct conf *c = parse_ok("domains example.test\n" OK_SERVER);
	assert_int_equal(c->quota_bytes, 0);
	assert_int_equal(c->quota_messages, 0);
	conf_free(c);
	c = parse_ok("domains example.test\nquota 1G 100000\n" OK_SERVER);
	assert_int_equal(c->quota_bytes, UINT64_C(1) << 30);
	assert_int_equal(c->quota_messages, 100000);
	conf_free(c);
	c = parse_ok("domains example.test\nquota none\n" OK_SERVER);
	assert_int_equal(c->quota_bytes, 0);
	conf_free(c);
	c = parse_ok("domains example.test\nquota 20K\n" OK_SERVER);
	assert_int_equal(c->quota_bytes, 20480);
	assert_int_equal(c->quota_messages, 0);
	conf_free(c);
	expect_errors("domains example.test\nquota 0\n" OK_SERVER,
		      NAME ":2:7: bad size \"0\" for \"quota\" (must be more than 0)\n");
	expect_errors("domains example.test\nquota 1G x\n" OK_SERVER,
		      NAME ":2:10: bad number \"x\" for \"quota\" (use a whole number from 1 to "
		      "1000000000)\n");
	expect_errors("domains example.test\nquota none 5\n" OK_SERVER,
		      NAME ":2:12: \"quota none\" takes no message count\n");
	expect_errors("domains example.test\nquota 1G\nquota 2G\n" OK_SERVER,
		      NAME ":3:1: duplicate directive \"quota\" (first given at " NAME ":2:1)\n");
}

static void test_free_null(void **state)
{
	(void)state;
	conf_free(NULL);
}

/* ---- lexer ---------------------------------------------------------------- */

static void test_comments_and_blank_lines(void **state)
{
	(void)state;
	struct conf *c = parse_ok("# a comment line\n"
				  "\n"
				  "   # indented comment\n"
				  "\t \n"
				  "domains example.test# comment right after a word\n"
				  "server s { # comment after a brace\n"
				  "    listen 127.0.0.1:25 # trailing\n"
				  "} # done\n"
				  "# last line without a newline");
	assert_int_equal(c->ndomains, 1);
	assert_string_equal(c->domains[0], "example.test");
	assert_pos(&c->servers[0].pos, NAME, 6, 1);
	assert_pos(&c->servers[0].listens[0].addr.pos, NAME, 7, 12);
	conf_free(c);
}

static void test_quoted_values(void **state)
{
	(void)state;
	struct conf *c = parse_ok("domains \"example.test\"   # trailing comment\n"
				  "spool \"/var/spool/a b#c\"\n"
				  "aliases \"/etc/q\\\"uote\\\\d\"\n"
				  "server \"ok\" {\n    listen \"127.0.0.1:2999\" \"tls\"\n"
				  "    tls {\n        certificate \"c.crt\"\n        key \"c.key\"\n    }\n}\n");
	assert_string_equal(c->domains[0], "example.test");
	assert_string_equal(c->spool, "/var/spool/a b#c");
	assert_string_equal(c->aliases, "/etc/q\"uote\\d");
	assert_string_equal(c->servers[0].name, "ok");
	assert_true(c->servers[0].listens[0].tls);
	conf_free(c);
}

static void test_blocks_on_one_line(void **state)
{
	(void)state;
	struct conf *c = parse_ok("domains example.test\n"
				  "server a { listen 127.0.0.1:25\n"
				  "    tls { certificate a.crt\n key a.key }\n"
				  "    auth { anonymous yes }\n"
				  "}\n"
				  "server b {\n    listen 127.0.0.1:26 }\n");
	assert_int_equal(c->nservers, 2);
	assert_int_equal(c->servers[0].tls.ncerts, 1);
	assert_true(c->servers[0].auth.anonymous);
	assert_int_equal(c->servers[1].nlistens, 1);
	conf_free(c);
}

static void test_crlf_line_endings(void **state)
{
	(void)state;
	struct conf *c = parse_ok("domains example.test\r\n"
				  "server s {\r\n    listen 127.0.0.1:25\r\n}\r\n");
	assert_string_equal(c->domains[0], "example.test");
	assert_pos(&c->servers[0].listens[0].addr.pos, NAME, 3, 12);
	conf_free(c);
}

static void test_tab_counts_one_column(void **state)
{
	(void)state;
	expect_errors("domains example.test\n"
		      "server s {\n\tlisten 127.0.0.1:25\n\tlissen x\n}\n",
		      NAME ":4:2: unknown directive \"lissen\" in server block\n");
}

/* ---- the verify block ------------------------------------------------------ */

static void test_verify_block(void **state)
{
	(void)state;
	struct conf *c = parse_ok("domains example.test\n"
				  "server mx {\n    listen 127.0.0.1:25\n    auth { anonymous yes }\n"
				  "    verify {\n        spf yes\n        dkim yes\n"
				  "        dmarc enforce\n        arc no\n    }\n}\n"
				  "server plain {\n    listen 127.0.0.1:26\n}\n");
	const struct conf_verify *v = &c->servers[0].verify;
	assert_true(v->set && v->spf && v->dkim && !v->arc);
	assert_int_equal(v->dmarc, CONF_DMARC_ENFORCE);
	assert_int_equal(v->pos.line, 5);
	/* no block: nothing is checked */
	assert_false(c->servers[1].verify.set || c->servers[1].verify.spf);
	assert_int_equal(c->servers[1].verify.dmarc, CONF_DMARC_NO);
	conf_free(c);
	c = parse_ok("domains example.test\nserver mx {\n    listen 127.0.0.1:25\n"
		     "    auth { anonymous yes }\n    verify { dmarc report\n        spf yes }\n}\n");
	assert_int_equal(c->servers[0].verify.dmarc, CONF_DMARC_REPORT);
	conf_free(c);
}

static void test_verify_errors(void **state)
{
	(void)state;
	expect_errors("domains example.test\nserver mx {\n    listen 127.0.0.1:25\n"
		      "    auth { anonymous yes }\n    verify {\n        dmarc always\n"
		      "        spf maybe\n    }\n}\n",
		      NAME ":6:15: bad value \"always\" for \"dmarc\" (use no, report or enforce)\n"
		      NAME ":7:13: bad value \"maybe\" for \"spf\" (use yes or no)\n");
	/* mail from the Internet only: an smtp server with anonymous clients */
	expect_errors("domains example.test\nserver sub {\n    listen 127.0.0.1:587\n"
		      "    verify { spf yes }\n}\n",
		      NAME ":4:5: \"verify\" is for an smtp server with \"anonymous yes\" (mail "
		      "from the Internet); server \"sub\" has none\n");
	expect_errors("domains example.test\nserver mx {\n    listen 127.0.0.1:25\n"
		      "    auth { anonymous yes }\n    verify { dmarc enforce }\n}\n",
		      NAME ":5:5: \"dmarc enforce\" needs \"spf yes\" or \"dkim yes\" in the verify "
		      "block of server \"mx\"\n");
}

/* ---- the acme block ------------------------------------------------------ */

#define ACME_OK "acme {\n    directory https://ca.example/dir\n" \
		"    contact mailto:postmaster@example.test\n" \
		"    challenge http-01 127.0.0.1:8080\n    names mail.example.test Smtp.Example.Test.\n" \
		"    ca acme-ca.pem\n}\n"
#define ACME_SERVER "server sub {\n    listen 127.0.0.1:2465 tls\n" \
		    "    tls {\n        certificate acme\n    }\n}\n"

static void test_acme_block(void **state)
{
	struct conf *c = parse_ok("domains example.test\nspool /var/spool/ph\n" ACME_OK ACME_SERVER);
	const struct conf_acme *a = &c->acme;
	assert_true(a->set);
	assert_string_equal(a->directory, "https://ca.example/dir");
	assert_string_equal(a->contact, "mailto:postmaster@example.test");
	assert_int_equal(a->challenge, ACME_CHALLENGE_HTTP01);
	assert_sockaddr(&a->http, "127.0.0.1", 8080);
	assert_int_equal(a->nnames, 2);
	assert_string_equal(a->names[0], "mail.example.test");
	assert_string_equal(a->names[1], "smtp.example.test"); /* lower case, no dot */
	assert_string_equal(a->ca, BASEDIR "/acme-ca.pem");
	const struct conf_cert *cc = &c->servers[0].tls.certs[0];
	assert_true(cc->acme);
	/* the spool given before or after: the files are in its acme folder */
	assert_string_equal(cc->certificate, "/var/spool/ph/acme/certificate.pem");
	assert_string_equal(cc->key, "/var/spool/ph/acme/certificate.pem");
	int warnings;
	char *policy = policy_of(c, &warnings);
	assert_contains(policy, "acme: a certificate for mail.example.test, smtp.example.test from "
			"https://ca.example/dir, proved by http-01 on 127.0.0.1:8080; renewed at two "
			"thirds of its lifetime\n");
	assert_contains(policy, "encryption: certificate from ACME "
			"(/var/spool/ph/acme/certificate.pem);");
	free(policy);
	conf_free(c);
}

static void test_acme_certificate_needs_block(void **state)
{
	expect_errors("domains example.test\n" ACME_SERVER,
		      NAME ":5:9: \"certificate acme\" without an acme block at top level\n");
}

static void test_acme_key_after_certificate_acme(void **state)
{
	expect_errors("domains example.test\n" ACME_OK
		      "server sub {\n    listen 127.0.0.1:2465\n    tls {\n"
		      "        certificate acme\n        key /k.pem\n    }\n}\n",
		      NAME ":13:9: \"key\" after \"certificate acme\" (ACME keeps its own key)\n");
}

static void test_acme_bad_values(void **state)
{
	expect_errors("domains example.test\n"
		      "acme {\n    directory http://ca.example/dir\n    contact postmaster\n"
		      "    challenge dns-01 127.0.0.1:53\n    names bad_name!\n}\n" OK_SERVER,
		      NAME ":3:15: bad ACME directory \"http://ca.example/dir\" (use the CA's "
		      "https:// URL, e.g. https://acme.example/directory)\n"
		      NAME ":4:13: bad ACME contact \"postmaster\" (use mailto:ADDRESS, e.g. "
		      "mailto:postmaster@example.org)\n"
		      NAME ":5:15: unknown ACME challenge \"dns-01\" (use http-01 ADDRESS:PORT "
		      "or tls-alpn-01)\n"
		      NAME ":6:11: bad host name \"bad_name!\"\n"
		      NAME ":2:1: acme block without \"directory\" (the CA's URL)\n"
		      NAME ":2:1: acme block without \"names\" (the certificate's host names)\n"
		      NAME ":2:1: acme block without \"challenge\" (e.g. challenge http-01 "
		      "0.0.0.0:80)\n");
}

static void test_acme_tls_alpn_01(void **state)
{
	struct conf *c = parse_ok("domains example.test\n"
				  "acme {\n    directory https://ca.example/dir\n"
				  "    challenge tls-alpn-01\n    names mail.example.test\n}\n"
				  ACME_SERVER);
	assert_int_equal(c->acme.challenge, ACME_CHALLENGE_TLSALPN01);
	assert_null(c->acme.http.text);
	conf_free(c);
	/* no implicit-TLS listener: nothing the CA could connect to */
	expect_errors("domains example.test\n"
		      "acme {\n    directory https://ca.example/dir\n"
		      "    challenge tls-alpn-01 0.0.0.0:443\n    names mail.example.test\n}\n"
		      OK_SERVER,
		      NAME ":4:27: \"challenge tls-alpn-01\" takes no address: it is answered on "
		      "every \"listen ADDRESS:PORT tls\"\n"
		      NAME ":2:1: acme block without \"challenge\" (e.g. challenge http-01 "
		      "0.0.0.0:80)\n");
	expect_errors("domains example.test\n"
		      "acme {\n    directory https://ca.example/dir\n"
		      "    challenge tls-alpn-01\n    names mail.example.test\n}\n" OK_SERVER,
		      NAME ":2:1: \"challenge tls-alpn-01\" needs a \"listen ADDRESS:PORT tls\" "
		      "(the CA connects to port 443 of the names)\n");
}

static void test_acme_challenge_needs_address(void **state)
{
	expect_errors("domains example.test\n"
		      "acme {\n    directory https://ca.example/dir\n    challenge http-01\n"
		      "    names a.example.test a.example.test\n}\n" OK_SERVER,
		      NAME ":4:5: \"challenge http-01\" needs the address to answer on, e.g. "
		      "0.0.0.0:80\n"
		      NAME ":5:26: name \"a.example.test\" given twice\n"
		      NAME ":2:1: acme block without \"challenge\" (e.g. challenge http-01 "
		      "0.0.0.0:80)\n");
}

static void test_unterminated_string(void **state)
{
	(void)state;
	expect_errors("domains example.test\n"
		      "hostname \"mail.example.test\n" OK_SERVER,
		      NAME ":2:10: unterminated string (end it with \" on the same line)\n");
}

static void test_unterminated_string_at_end_of_file(void **state)
{
	(void)state;
	expect_errors("domains example.test\n" OK_SERVER "run-as \"posthorn",
		      NAME ":5:8: unterminated string (end it with \" on the same line)\n");
}

static void test_bad_escape(void **state)
{
	(void)state;
	expect_errors("domains example.test\n"
		      "hostname \"mail\\.example.test\"\n" OK_SERVER,
		      NAME ":2:15: bad escape \"\\.\" in string (only \\\" and \\\\ are allowed)\n");
}

static void test_bad_escape_newline_is_unterminated(void **state)
{
	(void)state;
	expect_errors("domains example.test\n"
		      "spool \"/var/x\\\n" OK_SERVER,
		      NAME ":2:7: unterminated string (end it with \" on the same line)\n");
}

static void test_quotes_inside_word(void **state)
{
	(void)state;
	expect_errors("domains example.test\n"
		      "spool /var/\"x\"\n"
		      "mailboxes \"/var/mail\"x\n" OK_SERVER,
		      NAME ":2:7: quotes must enclose a whole argument\n"
		      NAME ":3:11: quotes must enclose a whole argument\n");
}

static void test_brace_without_directive(void **state)
{
	(void)state;
	expect_errors("domains example.test\n"
		      "{\n    bogus\n}\n" OK_SERVER,
		      NAME ":2:1: \"{\" without a directive name before it\n");
}

/* ---- the tables ------------------------------------------------------------- */

static void test_unknown_directive(void **state)
{
	(void)state;
	expect_errors("domains example.test\n"
		      "server s {\n"
		      "    lissen 127.0.0.1:25\n"
		      "    listen 127.0.0.1:25\n"
		      "}\n",
		      NAME ":3:5: unknown directive \"lissen\" in server block\n");
}

static void test_unknown_directive_at_top_level(void **state)
{
	(void)state;
	expect_errors("domains example.test\nhostnme x.example\n" OK_SERVER,
		      NAME ":2:1: unknown directive \"hostnme\" at top level\n");
}

static void test_directive_in_wrong_block_hints(void **state)
{
	(void)state;
	expect_errors("domains example.test\n"
		      "listen 127.0.0.1:25\n"
		      "server s {\n"
		      "    listen 127.0.0.1:25\n"
		      "    certificate a.crt\n"
		      "    auth {\n        message-size 10M\n    }\n"
		      "}\n",
		      NAME ":2:1: unknown directive \"listen\" at top level (it belongs in a server block)\n"
		      NAME ":5:5: unknown directive \"certificate\" in server block (it belongs in a tls block)\n"
		      NAME ":7:9: unknown directive \"message-size\" in auth block (it belongs in a limits block)\n");
}

static void test_unknown_block_is_skipped(void **state)
{
	(void)state;
	expect_errors("domains example.test\n"
		      "server s {\n"
		      "    listen 127.0.0.1:25\n"
		      "    conection {\n"
		      "        default deny\n"
		      "        nonsense { nested }\n"
		      "    }\n"
		      "}\n",
		      NAME ":4:5: unknown directive \"conection\" in server block\n");
}

static void test_wrong_argument_count(void **state)
{
	(void)state;
	expect_errors("domains example.test\n"
		      "hostname\n"
		      "spool /a /b\n"
		      "server s {\n"
		      "    listen 127.0.0.1:25 tls proxy extra\n"
		      "    listen 127.0.0.1:26\n"
		      "    tls on {\n"
		      "    }\n"
		      "    auth {\n"
		      "        mechanisms\n"
		      "        lockout 5 15m\n"
		      "    }\n"
		      "    connection {\n"
		      "        allow 10.0.0.0 255.0.0.0 extra\n"
		      "    }\n"
		      "}\n"
		      "server\n",
		      NAME ":2:1: \"hostname\" needs 1 argument\n"
		      NAME ":3:1: \"spool\" needs 1 argument\n"
		      NAME ":5:5: \"listen\" needs 1 to 3 arguments\n"
		      NAME ":7:5: \"tls\" takes no arguments\n"
		      NAME ":10:9: \"mechanisms\" needs at least 1 argument\n"
		      NAME ":11:9: \"lockout\" needs 3 arguments\n"
		      NAME ":14:9: \"allow\" needs 1 or 2 arguments\n"
		      NAME ":17:1: \"server\" needs 1 argument\n"
		      NAME ":17:1: \"server\" needs a block: server { ... }\n");
}

static void test_block_where_none_is_expected(void **state)
{
	(void)state;
	expect_errors("domains example.test\n"
		      "server s {\n"
		      "    listen 127.0.0.1:25\n"
		      "    hostname a.example {\n"
		      "        whatever\n"
		      "    }\n"
		      "}\n",
		      NAME ":4:5: \"hostname\" does not take a block\n");
}

static void test_missing_block(void **state)
{
	(void)state;
	expect_errors("domains example.test\n"
		      "outbound\n"
		      "server s {\n"
		      "    listen 127.0.0.1:25\n"
		      "    tls\n"
		      "}\n",
		      NAME ":2:1: \"outbound\" needs a block: outbound { ... }\n"
		      NAME ":5:5: \"tls\" needs a block: tls { ... }\n");
}

static void test_unterminated_block(void **state)
{
	(void)state;
	expect_errors("domains example.test\n"
		      "server s {\n"
		      "    listen 127.0.0.1:25\n"
		      "    tls {\n"
		      "        require no\n",
		      NAME ":4:5: \"tls\" block is never closed (missing \"}\")\n"
		      NAME ":2:1: \"server\" block is never closed (missing \"}\")\n");
}

static void test_unterminated_skipped_block(void **state)
{
	(void)state;
	expect_errors("domains example.test\n" OK_SERVER "bogus {\n    x\n",
		      NAME ":5:1: unknown directive \"bogus\" at top level\n"
		      NAME ":5:1: \"bogus\" block is never closed (missing \"}\")\n");
}

static void test_stray_close(void **state)
{
	(void)state;
	expect_errors("domains example.test\n"
		      "}\n"
		      "server s {\n"
		      "    listen 127.0.0.1:25\n"
		      "}\n"
		      "  }\n",
		      NAME ":2:1: stray \"}\" with no block to close\n"
		      NAME ":6:3: stray \"}\" with no block to close\n");
}

static void test_duplicate_directive(void **state)
{
	(void)state;
	expect_errors("hostname a.example\n"
		      "domains example.test\n"
		      "hostname b.example\n"
		      "spool /a\n"
		      "spool /b\n"
		      "server s {\n"
		      "    protocol smtp\n"
		      "    protocol pop3\n"
		      "    listen 127.0.0.1:25\n"
		      "    tls {\n"
		      "    }\n"
		      "    tls {\n"
		      "        min-bits 128\n"
		      "        min-bits 256\n"
		      "    }\n"
		      "}\n"
		      "outbound {\n    port 25\n}\n"
		      "outbound {\n}\n",
		      NAME ":3:1: duplicate directive \"hostname\" (first given at " NAME ":1:1)\n"
		      NAME ":5:1: duplicate directive \"spool\" (first given at " NAME ":4:1)\n"
		      NAME ":8:5: duplicate directive \"protocol\" (first given at " NAME ":7:5)\n"
		      NAME ":12:5: duplicate directive \"tls\" (first given at " NAME ":10:5)\n"
		      NAME ":14:9: duplicate directive \"min-bits\" (first given at " NAME ":13:9)\n"
		      NAME ":20:1: duplicate directive \"outbound\" (first given at " NAME ":17:1)\n");
}

static void test_repeatable_directives(void **state)
{
	(void)state;
	struct conf *c = parse_ok("domains example.test\ndomains example.org EXAMPLE.test.\n"
				  "server s {\n    listen 127.0.0.1:25\n    listen 127.0.0.1:26\n}\n"
				  "server t {\n    listen 127.0.0.1:27\n}\n");
	assert_int_equal(c->ndomains, 2);
	assert_string_equal(c->domains[1], "example.org");
	assert_int_equal(c->servers[0].nlistens, 2);
	conf_free(c);
}

static void test_multiple_errors_all_reported(void **state)
{
	(void)state;
	expect_errors("domains example.test\n"
		      "server s {\n"
		      "    lissen 127.0.0.1:25\n"
		      "    listen 127.0.0.1:25\n"
		      "    limits {\n"
		      "        message-size 12Q\n"
		      "        timeout 5x\n"
		      "    }\n"
		      "    auth {\n"
		      "        anonymous maybe\n"
		      "    }\n"
		      "}\n"
		      "bogus\n",
		      NAME ":3:5: unknown directive \"lissen\" in server block\n"
		      NAME ":6:22: bad size \"12Q\" (use a number with K, M or G)\n"
		      NAME ":7:17: bad duration \"5x\" (use a number with s, m, h or d)\n"
		      NAME ":10:19: bad value \"maybe\" for \"anonymous\" (use yes or no)\n"
		      NAME ":13:1: unknown directive \"bogus\" at top level\n");
}

static void test_bad_server_line_still_checks_its_block(void **state)
{
	(void)state;
	expect_errors("domains example.test\n"
		      "server \"a b\" {\n"
		      "    lissen 127.0.0.1:25\n"
		      "}\n"
		      "server {\n"
		      "    protocol lmtp\n"
		      "}\n" OK_SERVER,
		      NAME ":2:8: bad server name \"a b\" (use letters, digits, \".\", \"_\" and \"-\")\n"
		      NAME ":3:5: unknown directive \"lissen\" in server block\n"
		      NAME ":5:1: \"server\" needs 1 argument\n"
		      NAME ":6:14: unknown protocol \"lmtp\" (use smtp, pop3 or imap)\n");
}

static void test_unprintable_bytes_are_escaped(void **state)
{
	(void)state;
	expect_errors("domains example.test\n" OK_SERVER "bo\x01gus\n",
		      NAME ":5:1: unknown directive \"bo\\x01gus\" at top level\n");
}

/* ---- values ------------------------------------------------------------------- */

static void test_parse_size(void **state)
{
	(void)state;
	uint64_t n = 0;
	assert_int_equal(conf_parse_size("0", &n), 0);
	assert_int_equal(n, 0);
	assert_int_equal(conf_parse_size("123", &n), 0);
	assert_int_equal(n, 123);
	assert_int_equal(conf_parse_size("4K", &n), 0);
	assert_int_equal(n, 4096);
	assert_int_equal(conf_parse_size("25M", &n), 0);
	assert_int_equal(n, 25u << 20);
	assert_int_equal(conf_parse_size("2G", &n), 0);
	assert_int_equal(n, UINT64_C(2) << 30);
	assert_int_equal(conf_parse_size("1k", &n), 0);
	assert_int_equal(n, 1024);
	assert_int_equal(conf_parse_size("18446744073709551615", &n), 0);
	assert_true(n == UINT64_MAX);
	n = 7;
	assert_int_equal(conf_parse_size("", &n), -1);
	assert_int_equal(conf_parse_size("M", &n), -1);
	assert_int_equal(conf_parse_size("-1", &n), -1);
	assert_int_equal(conf_parse_size("+1", &n), -1);
	assert_int_equal(conf_parse_size(" 1", &n), -1);
	assert_int_equal(conf_parse_size("1 ", &n), -1);
	assert_int_equal(conf_parse_size("12Q", &n), -1);
	assert_int_equal(conf_parse_size("1KB", &n), -1);
	assert_int_equal(conf_parse_size("1.5M", &n), -1);
	assert_int_equal(conf_parse_size("18446744073709551616", &n), -1);
	assert_int_equal(conf_parse_size("17179869184G", &n), -1);
	assert_int_equal(n, 7);
}

static void test_parse_duration(void **state)
{
	(void)state;
	unsigned n = 0;
	assert_int_equal(conf_parse_duration("0", &n), 0);
	assert_int_equal(n, 0);
	assert_int_equal(conf_parse_duration("30", &n), 0);
	assert_int_equal(n, 30);
	assert_int_equal(conf_parse_duration("30s", &n), 0);
	assert_int_equal(n, 30);
	assert_int_equal(conf_parse_duration("5m", &n), 0);
	assert_int_equal(n, 300);
	assert_int_equal(conf_parse_duration("4h", &n), 0);
	assert_int_equal(n, 14400);
	assert_int_equal(conf_parse_duration("5d", &n), 0);
	assert_int_equal(n, 432000);
	assert_int_equal(conf_parse_duration("4294967295", &n), 0);
	assert_int_equal(n, UINT_MAX);
	n = 7;
	assert_int_equal(conf_parse_duration("", &n), -1);
	assert_int_equal(conf_parse_duration("m", &n), -1);
	assert_int_equal(conf_parse_duration("-5m", &n), -1);
	assert_int_equal(conf_parse_duration("5M", &n), -1);
	assert_int_equal(conf_parse_duration("5w", &n), -1);
	assert_int_equal(conf_parse_duration("1h30m", &n), -1);
	assert_int_equal(conf_parse_duration("4294967296", &n), -1);
	assert_int_equal(conf_parse_duration("49711d", &n), -1);
	assert_int_equal(conf_parse_duration("99999999999999999999999", &n), -1);
	assert_int_equal(n, 7);
}

#define LIMITS(body) "domains example.test\nserver s {\n    listen 127.0.0.1:25\n    limits {\n" body "    }\n}\n"

static void test_probing_limits(void **state)
{
	(void)state;
	struct conf *c = parse_ok(LIMITS("        error-delay 2s after 5\n"
					 "        unknown-recipients 7 10m 1h\n"));
	const struct conf_limits *l = &c->servers[0].limits;
	assert_int_equal(l->error_delay, 2);
	assert_int_equal(l->error_delay_after, 5);
	assert_int_equal(l->unknown_recipients, 7);
	assert_int_equal(l->unknown_recipients_window, 600);
	assert_int_equal(l->unknown_recipients_duration, 3600);
	conf_free(c);
	/* both off */
	c = parse_ok(LIMITS("        error-delay 0 after 0\n"
			    "        unknown-recipients 0 1s 1s\n"));
	l = &c->servers[0].limits;
	assert_int_equal(l->error_delay, 0);
	assert_int_equal(l->error_delay_after, 0);
	assert_int_equal(l->unknown_recipients, 0);
	conf_free(c);
}

static void test_bad_probing_limits(void **state)
{
	(void)state;
	expect_errors(LIMITS("        error-delay 1s after\n"),
		      NAME ":5:9: \"error-delay\" needs 3 arguments\n");
	expect_errors(LIMITS("        error-delay soon before many\n"),
		      NAME ":5:21: bad duration \"soon\" for \"error-delay\" (use 0 to turn it off, or a number with s or m up to 60s)\n"
		      NAME ":5:26: expected \"after\" in \"error-delay DURATION after ERRORS\", not \"before\"\n"
		      NAME ":5:33: bad number \"many\" for \"error-delay\" (use a whole number from 0 to 4294967295)\n");
	expect_errors(LIMITS("        error-delay 2m after 3\n"),
		      NAME ":5:21: bad duration \"2m\" for \"error-delay\" (use 0 to turn it off, or a number with s or m up to 60s)\n");
	expect_errors(LIMITS("        unknown-recipients ten 0 1h\n"),
		      NAME ":5:28: bad number \"ten\" for \"unknown-recipients\" (use a whole number from 0 to 4294967295)\n"
		      NAME ":5:32: bad duration \"0\" for \"unknown-recipients\" (must be more than 0)\n");
}

static void test_bad_size(void **state)
{
	(void)state;
	expect_errors(LIMITS("        message-size 12Q\n"),
		      NAME ":5:22: bad size \"12Q\" (use a number with K, M or G)\n");
	expect_errors(LIMITS("        message-size 0\n"),
		      NAME ":5:22: bad size \"0\" for \"message-size\" (must be more than 0)\n");
	expect_errors(LIMITS("        message-size 99999999999999G\n"),
		      NAME ":5:22: bad size \"99999999999999G\" (use a number with K, M or G)\n");
}

static void test_bad_duration(void **state)
{
	(void)state;
	expect_errors(LIMITS("        timeout 5x\n"),
		      NAME ":5:17: bad duration \"5x\" (use a number with s, m, h or d)\n");
	expect_errors(LIMITS("        timeout 0s\n"),
		      NAME ":5:17: bad duration \"0s\" for \"timeout\" (must be more than 0)\n");
	expect_errors(LIMITS("        timeout -5m\n"),
		      NAME ":5:17: bad duration \"-5m\" (use a number with s, m, h or d)\n");
	expect_errors("domains example.test\noutbound {\n    retry 5m x 0\n    lifetime 99999d\n}\n" OK_SERVER,
		      NAME ":3:14: bad duration \"x\" (use a number with s, m, h or d)\n"
		      NAME ":3:16: bad duration \"0\" for \"retry\" (must be more than 0)\n"
		      NAME ":4:14: bad duration \"99999d\" (use a number with s, m, h or d)\n");
}

static void test_bad_number(void **state)
{
	(void)state;
	expect_errors(LIMITS("        recipients 0\n"
			     "        connections 4294967296\n"
			     "        connections-per-ip -1\n"),
		      NAME ":5:20: bad number \"0\" for \"recipients\" (use a whole number from 1 to 4294967295)\n"
		      NAME ":6:21: bad number \"4294967296\" for \"connections\" (use a whole number from 1 to 4294967295)\n"
		      NAME ":7:28: bad number \"-1\" for \"connections-per-ip\" (use a whole number from 1 to 4294967295)\n");
}

static void test_limits_values(void **state)
{
	(void)state;
	struct conf *c = parse_ok(LIMITS("        message-size 10K\n"
					 "        recipients 4294967295\n"
					 "        connections 5\n"
					 "        connections-per-ip 2\n"
					 "        timeout 1h\n"));
	const struct conf_limits *l = &c->servers[0].limits;
	assert_int_equal(l->message_size, 10240);
	assert_int_equal(l->recipients, UINT_MAX);
	assert_int_equal(l->connections, 5);
	assert_int_equal(l->connections_per_ip, 2);
	assert_int_equal(l->timeout, 3600);
	conf_free(c);
}

#define AUTH(body) "domains example.test\nserver s {\n    listen 127.0.0.1:25\n    auth {\n" body "    }\n}\n"

static void test_bad_bool(void **state)
{
	(void)state;
	expect_errors(AUTH("        anonymous maybe\n"
			   "        plaintext-requires-tls Yes\n"
			   "        sender-must-match true\n"),
		      NAME ":5:19: bad value \"maybe\" for \"anonymous\" (use yes or no)\n"
		      NAME ":6:32: bad value \"Yes\" for \"plaintext-requires-tls\" (use yes or no)\n"
		      NAME ":7:27: bad value \"true\" for \"sender-must-match\" (use yes or no)\n");
}

static void test_auth_values(void **state)
{
	(void)state;
	struct conf *c = parse_ok(AUTH("        mechanisms PLAIN Scram-Sha-256\n"
				       "        anonymous yes\n"
				       "        plaintext-requires-tls no\n"
				       "        sender-must-match no\n"
				       "        lockout 0 1s 1d\n"
				       "        lockout-ipv6-prefix 48\n"
				       "        received-auth no\n"));
	const struct conf_auth *a = &c->servers[0].auth;
	assert_false(a->received_auth);
	assert_int_equal(a->mechanisms, MECH_PLAIN | MECH_SCRAM_SHA_256);
	assert_true(a->anonymous);
	assert_false(a->plaintext_requires_tls);
	assert_false(a->sender_must_match);
	assert_int_equal(a->lockout_failures, 0);
	assert_int_equal(a->lockout_window, 1);
	assert_int_equal(a->lockout_duration, 86400);
	assert_int_equal(a->lockout_ipv6_prefix, 48);
	conf_free(c);

	c = parse_ok(AUTH("        lockout-ipv6-prefix 128\n"));
	assert_int_equal(c->servers[0].auth.lockout_ipv6_prefix, 128);
	conf_free(c);
}

/* The prefix names an IPv6 network: at most 128 bits, and not so short
 * that one client's lockout takes in a whole provider. */
static void test_bad_lockout_ipv6_prefix(void **state)
{
	(void)state;
	expect_errors(AUTH("        lockout-ipv6-prefix 129\n"),
		      NAME ":5:29: bad number \"129\" for \"lockout-ipv6-prefix\" (use a whole number from 32 to 128)\n");
	expect_errors(AUTH("        lockout-ipv6-prefix 31\n"),
		      NAME ":5:29: bad number \"31\" for \"lockout-ipv6-prefix\" (use a whole number from 32 to 128)\n");
	expect_errors(AUTH("        lockout-ipv6-prefix /64\n"),
		      NAME ":5:29: bad number \"/64\" for \"lockout-ipv6-prefix\" (use a whole number from 32 to 128)\n");
	expect_errors(AUTH("        lockout-ipv6-prefix 64\n        lockout-ipv6-prefix 56\n"),
		      NAME ":6:9: duplicate directive \"lockout-ipv6-prefix\" (first given at " NAME ":5:9)\n");
}

static void test_unknown_mechanism(void **state)
{
	(void)state;
	expect_errors(AUTH("        mechanisms plain cram-md5 login xoauth2\n"),
		      NAME ":5:26: unknown mechanism \"cram-md5\" (use gssapi, plain, login or scram-sha-256)\n"
		      NAME ":5:41: unknown mechanism \"xoauth2\" (use gssapi, plain, login or scram-sha-256)\n");
}

/* GSSAPI: the keytab (made absolute), the realm table in order, the
 * replay cache in the spool; the policy names the realms and the key. */
static void test_gssapi_values(void **state)
{
	(void)state;
	struct conf *c = parse_ok("spool /var/spool/ph\n"
				  AUTH("        mechanisms GSSAPI plain\n"
				       "        keytab etc/ph.keytab\n"
				       "        realm EXAMPLE.TEST Example.Test.\n"
				       "        realm corp.example example.org\n"));
	const struct conf_auth *a = &c->servers[0].auth;
	assert_int_equal(a->mechanisms, MECH_GSSAPI | MECH_PLAIN);
	assert_string_equal(a->keytab, BASEDIR "/etc/ph.keytab");
	assert_int_equal(a->nrealms, 2);
	assert_string_equal(a->realms[0].realm, "EXAMPLE.TEST");
	assert_string_equal(a->realms[0].domain, "example.test");
	assert_string_equal(a->realms[1].realm, "corp.example");
	assert_string_equal(a->realms[1].domain, "example.org");
	assert_string_equal(a->replay_cache, "/var/spool/ph/gssapi-replay");
	int warnings;
	char *text = policy_of(c, &warnings);
	assert_non_null(strstr(text, "authentication: PLAIN, GSSAPI; PLAIN, only after TLS"));
	assert_non_null(strstr(text, "integrated Kerberos logins for principals of EXAMPLE.TEST "
				     "(users of example.test), corp.example (users of example.org), "
				     "also without TLS"));
	free(text);
	conf_free(c);
	c = parse_ok(AUTH("        mechanisms plain\n"));
	assert_null(c->servers[0].auth.keytab);
	assert_null(c->servers[0].auth.replay_cache);
	conf_free(c);
}

static void test_gssapi_errors(void **state)
{
	(void)state;
	expect_errors(AUTH("        mechanisms gssapi\n"),
		      NAME ":2:1: server \"s\": mechanism gssapi needs \"keytab PATH\" in its auth block\n"
		      NAME ":2:1: server \"s\": mechanism gssapi needs \"realm REALM DOMAIN\" in its "
		      "auth block (whose principals are users)\n");
	expect_errors(AUTH("        keytab /k\n        realm A.TEST a.test\n"),
		      NAME ":5:9: \"keytab\" without mechanism gssapi in \"mechanisms\"\n"
		      NAME ":6:15: \"realm\" without mechanism gssapi in \"mechanisms\"\n");
	expect_errors(AUTH("        mechanisms gssapi\n        keytab /k\n"
			   "        realm A.TEST a.test\n        realm A.TEST b.test\n"
			   "        realm A@B a.test\n        realm B.TEST -bad-\n"),
		      NAME ":8:15: realm \"A.TEST\" given twice (first at " NAME ":7:15)\n"
		      NAME ":9:15: bad Kerberos realm \"A@B\"\n"
		      NAME ":10:22: bad domain name \"-bad-\"\n");
}

static void test_bad_lockout(void **state)
{
	(void)state;
	expect_errors(AUTH("        lockout five 15m 0\n"),
		      NAME ":5:17: bad number \"five\" for \"lockout\" (use a whole number from 0 to 4294967295)\n"
		      NAME ":5:26: bad duration \"0\" for \"lockout\" (must be more than 0)\n");
}

/* ---- addresses ------------------------------------------------------------------- */

#define SERVER(body) "domains example.test\nserver s {\n" body "}\n"

static void test_listen_forms(void **state)
{
	(void)state;
	struct conf *c = parse_ok(SERVER("    listen 127.0.0.1:2525\n"
					 "    listen [::1]:587\n"
					 "    listen 0.0.0.0:25\n"
					 "    listen [::]:25\n"
					 "    listen 192.0.2.1:65535 tls\n"
					 "    listen [2001:db8::1]:1 tls\n"
					 "    tls {\n        certificate a.crt\n        key a.key\n    }\n"));
	const struct conf_server *s = &c->servers[0];
	assert_int_equal(s->nlistens, 6);
	assert_sockaddr(&s->listens[0].addr, "127.0.0.1", 2525);
	assert_sockaddr(&s->listens[1].addr, "::1", 587);
	assert_sockaddr(&s->listens[2].addr, "0.0.0.0", 25);
	assert_sockaddr(&s->listens[3].addr, "::", 25);
	assert_sockaddr(&s->listens[4].addr, "192.0.2.1", 65535);
	assert_true(s->listens[4].tls);
	assert_sockaddr(&s->listens[5].addr, "2001:db8::1", 1);
	assert_string_equal(s->listens[5].addr.text, "[2001:db8::1]:1");
	assert_pos(&s->listens[5].addr.pos, NAME, 8, 12);
	conf_free(c);
}

static void test_bad_listen_address(void **state)
{
	(void)state;
	expect_errors(SERVER("    listen localhost:25\n"
			     "    listen 127.0.0.1\n"
			     "    listen [1.2.3.4]:25\n"
			     "    listen [::1\n"
			     "    listen [::1]x\n"
			     "    listen 1.2.3.4.5:25\n"),
		      NAME ":3:12: bad listen address \"localhost:25\" (use IP:PORT, e.g. 0.0.0.0:25 or [::]:587)\n"
		      NAME ":4:12: missing port in listen address \"127.0.0.1\" (use IP:PORT, e.g. 0.0.0.0:25 or [::]:587)\n"
		      NAME ":5:12: bad listen address \"[1.2.3.4]:25\" (use IP:PORT, e.g. 0.0.0.0:25 or [::]:587)\n"
		      NAME ":6:12: bad listen address \"[::1\" (use IP:PORT, e.g. 0.0.0.0:25 or [::]:587)\n"
		      NAME ":7:12: bad listen address \"[::1]x\" (use IP:PORT, e.g. 0.0.0.0:25 or [::]:587)\n"
		      NAME ":8:12: bad listen address \"1.2.3.4.5:25\" (use IP:PORT, e.g. 0.0.0.0:25 or [::]:587)\n");
}

static void test_listen_ipv6_needs_brackets(void **state)
{
	(void)state;
	expect_errors(SERVER("    listen ::1:25\n"),
		      NAME ":3:12: bad listen address \"::1:25\": write an IPv6 address in brackets, e.g. [::1]:25\n");
}

static void test_bad_port(void **state)
{
	(void)state;
	expect_errors(SERVER("    listen 127.0.0.1:0\n"
			     "    listen 127.0.0.1:65536\n"
			     "    listen [::1]:smtp\n"
			     "    listen 127.0.0.1:\n"
			     "    listen 127.0.0.1:-25\n"),
		      NAME ":3:12: bad port \"0\" in \"127.0.0.1:0\" (use 1 to 65535)\n"
		      NAME ":4:12: bad port \"65536\" in \"127.0.0.1:65536\" (use 1 to 65535)\n"
		      NAME ":5:12: bad port \"smtp\" in \"[::1]:smtp\" (use 1 to 65535)\n"
		      NAME ":6:12: bad port \"\" in \"127.0.0.1:\" (use 1 to 65535)\n"
		      NAME ":7:12: bad port \"-25\" in \"127.0.0.1:-25\" (use 1 to 65535)\n");
}

static void test_listen_bad_option(void **state)
{
	(void)state;
	expect_errors(SERVER("    listen 127.0.0.1:25 ssl\n"),
		      NAME ":3:25: bad option \"ssl\" for \"listen\" (use tls, proxy or both)\n");
}

/* listen ... proxy with proxy-from: the flags per address, the trusted
 * peers as networks, proxy-timeout in limits (default 5 s). */
static void test_proxy_listen(void **state)
{
	(void)state;
	struct conf *c = parse_ok(SERVER("    listen 127.0.0.1:25 proxy\n"
					 "    listen 127.0.0.1:465 proxy tls\n"
					 "    listen 127.0.0.1:26\n"
					 "    proxy-from 10.0.0.0/24 192.0.2.7\n"
					 "    proxy-from 2001:db8::/32\n"
					 "    tls {\n        certificate /c\n        key /k\n    }\n"
					 "    limits {\n        proxy-timeout 2s\n    }\n"));
	const struct conf_server *s = &c->servers[0];
	assert_int_equal(s->nlistens, 3);
	assert_true(s->listens[0].proxy && !s->listens[0].tls);
	assert_true(s->listens[1].proxy && s->listens[1].tls);
	assert_false(s->listens[2].proxy || s->listens[2].tls);
	assert_int_equal(s->nproxy_from, 3);
	assert_string_equal(s->proxy_from[0].text, "10.0.0.0/24");
	assert_int_equal(s->proxy_from[0].prefix, 24);
	assert_int_equal(s->proxy_from[1].prefix, 32);
	assert_int_equal(s->proxy_from[2].family, AF_INET6);
	assert_int_equal(s->limits.proxy_timeout, 2);
	conf_free(c);
	c = parse_ok(SERVER("    listen 127.0.0.1:25\n"));
	assert_int_equal(c->servers[0].limits.proxy_timeout, 5);
	assert_int_equal(c->servers[0].nproxy_from, 0);
	conf_free(c);
}

/* No proxy-from is no default: a `proxy` listener would believe anyone. */
static void test_proxy_errors(void **state)
{
	(void)state;
	expect_errors(SERVER("    listen 127.0.0.1:25 proxy\n"),
		      NAME ":3:12: \"listen 127.0.0.1:25 proxy\" needs \"proxy-from\" in server \"s\": "
		      "the addresses of the load balancers allowed to send a PROXY header\n");
	expect_errors(SERVER("    listen 127.0.0.1:25\n    proxy-from 10.0.0.1\n"),
		      NAME ":4:16: \"proxy-from\" but no \"listen ... proxy\" in server \"s\"\n");
	expect_errors(SERVER("    listen 127.0.0.1:25 proxy proxy\n    proxy-from 10.0.0.1\n"),
		      NAME ":3:31: option \"proxy\" given twice for \"listen\"\n");
	expect_errors(SERVER("    listen 127.0.0.1:25 proxy\n"
			     "    proxy-from lb.example 10.0.0.0/33 10.0.0.1\n"),
		      NAME ":4:16: bad address \"lb.example\" for \"proxy-from\" (use an IP address "
		      "or ADDRESS/PREFIX, e.g. 10.0.0.0/24)\n"
		      NAME ":4:27: bad prefix length \"33\" in \"10.0.0.0/33\" (use 0 to 32)\n");
	expect_errors(SERVER("    listen 127.0.0.1:25 proxy\n    proxy-from 10.0.0.1\n"
			     "    limits {\n        proxy-timeout 61s\n    }\n"),
		      NAME ":6:23: bad duration \"61s\" for \"proxy-timeout\" (at most 60s)\n");
}

static void test_dns_forms(void **state)
{
	(void)state;
	struct conf *c = parse_ok("dns 1.2.3.4 1.2.3.4:5353 ::1 [::1] [::1]:5353 2001:db8::53\n"
				  SERVER("    listen 127.0.0.1:25\n    dns 192.0.2.53:54\n"));
	assert_int_equal(c->dns.nservers, 6);
	assert_sockaddr(&c->dns.servers[0], "1.2.3.4", 53);
	assert_sockaddr(&c->dns.servers[1], "1.2.3.4", 5353);
	assert_sockaddr(&c->dns.servers[2], "::1", 53);
	assert_sockaddr(&c->dns.servers[3], "::1", 53);
	assert_sockaddr(&c->dns.servers[4], "::1", 5353);
	assert_sockaddr(&c->dns.servers[5], "2001:db8::53", 53);
	assert_string_equal(c->dns.servers[4].text, "[::1]:5353");
	assert_pos(&c->dns.servers[1].pos, NAME, 1, 13);
	assert_int_equal(c->servers[0].dns.nservers, 1);
	assert_sockaddr(&c->servers[0].dns.servers[0], "192.0.2.53", 54);
	conf_free(c);
}

static void test_bad_dns(void **state)
{
	(void)state;
	expect_errors("domains example.test\ndns 1.2.3.4:0 ns.example [1.2.3.4]\n" OK_SERVER,
		      NAME ":2:5: bad port \"0\" in \"1.2.3.4:0\" (use 1 to 65535)\n"
		      NAME ":2:15: bad DNS server \"ns.example\" (use IP or IP:PORT, e.g. 127.0.0.1, 127.0.0.1:53 or [::1]:53)\n"
		      NAME ":2:26: bad DNS server \"[1.2.3.4]\" (use IP or IP:PORT, e.g. 127.0.0.1, 127.0.0.1:53 or [::1]:53)\n");
}

/* ---- rules ----------------------------------------------------------------------- */

#define CONNECTION(body) \
	"domains example.test\nserver s {\n    listen 127.0.0.1:25\n    connection {\n" body "    }\n}\n"

static void test_rule_forms(void **state)
{
	(void)state;
	struct conf *c = parse_ok(CONNECTION("        allow 192.0.2.10\n"
					     "        allow 2001:db8::1\n"
					     "        allow 198.51.100.0/24\n"
					     "        allow 2001:db8::/32\n"
					     "        allow 203.0.113.0 255.255.255.0\n"
					     "        deny 0.0.0.0/0\n"
					     "        deny 0.0.0.0 0.0.0.0\n"
					     "        deny 10.0.0.0 255.255.255.255\n"
					     "        allow domain ISP.Example.\n"
					     "        default deny\n"));
	const struct conf_connection *cn = &c->servers[0].connection;
	assert_int_equal(cn->default_action, ACTION_DENY);
	assert_int_equal(cn->nrules, 9);
	assert_network_rule(&cn->rules[0], "192.0.2.10", 32, "192.0.2.10");
	assert_network_rule(&cn->rules[1], "2001:db8::1", 128, "2001:db8::1");
	assert_network_rule(&cn->rules[2], "198.51.100.0", 24, "198.51.100.0/24");
	assert_network_rule(&cn->rules[3], "2001:db8::", 32, "2001:db8::/32");
	assert_network_rule(&cn->rules[4], "203.0.113.0", 24, "203.0.113.0 255.255.255.0");
	assert_network_rule(&cn->rules[5], "0.0.0.0", 0, "0.0.0.0/0");
	assert_int_equal(cn->rules[5].action, ACTION_DENY);
	assert_network_rule(&cn->rules[6], "0.0.0.0", 0, "0.0.0.0 0.0.0.0");
	assert_network_rule(&cn->rules[7], "10.0.0.0", 32, "10.0.0.0 255.255.255.255");
	assert_int_equal(cn->rules[8].kind, RULE_DOMAIN);
	assert_string_equal(cn->rules[8].domain, "isp.example");
	assert_string_equal(cn->rules[8].text, "domain ISP.Example.");
	assert_int_equal(cn->rules[8].action, ACTION_ALLOW);
	assert_pos(&cn->rules[8].pos, NAME, 13, 9);
	conf_free(c);
}

static void test_rule_host_bits_are_masked(void **state)
{
	(void)state;
	struct conf *c = parse_ok(CONNECTION("        allow 10.1.2.3/8\n"
					     "        allow 2001:db8:1:2::5/33\n"
					     "        allow 192.0.2.77 255.255.255.192\n"));
	const struct conf_connection *cn = &c->servers[0].connection;
	assert_network_rule(&cn->rules[0], "10.0.0.0", 8, "10.1.2.3/8");
	assert_network_rule(&cn->rules[1], "2001:db8::", 33, "2001:db8:1:2::5/33");
	assert_network_rule(&cn->rules[2], "192.0.2.64", 26, "192.0.2.77 255.255.255.192");
	conf_free(c);
}

static void test_bad_cidr_prefix(void **state)
{
	(void)state;
	expect_errors(CONNECTION("        allow 10.0.0.0/33\n"
				 "        deny 2001:db8::/129\n"
				 "        allow 10.0.0.0/\n"
				 "        allow 10.0.0.0/-1\n"
				 "        allow 10.0.0.0/8x\n"),
		      NAME ":5:15: bad prefix length \"33\" in \"10.0.0.0/33\" (use 0 to 32)\n"
		      NAME ":6:14: bad prefix length \"129\" in \"2001:db8::/129\" (use 0 to 128)\n"
		      NAME ":7:15: bad prefix length \"\" in \"10.0.0.0/\" (use 0 to 32)\n"
		      NAME ":8:15: bad prefix length \"-1\" in \"10.0.0.0/-1\" (use 0 to 32)\n"
		      NAME ":9:15: bad prefix length \"8x\" in \"10.0.0.0/8x\" (use 0 to 32)\n");
}

static void test_noncontiguous_mask(void **state)
{
	(void)state;
	expect_errors(CONNECTION("        allow 203.0.113.0 255.0.255.0\n"
				 "        allow 203.0.113.0 0.255.255.255\n"),
		      NAME ":5:27: bad subnet mask \"255.0.255.0\": its one bits must be contiguous, like 255.255.255.0\n"
		      NAME ":6:27: bad subnet mask \"0.255.255.255\": its one bits must be contiguous, like 255.255.255.0\n");
}

static void test_bad_mask(void **state)
{
	(void)state;
	expect_errors(CONNECTION("        allow 10.0.0.0 24\n"
				 "        allow 10.0.0.0 ffff::\n"
				 "        allow 2001:db8:: ffff:ffff::\n"),
		      NAME ":5:24: bad subnet mask \"24\" (use a dotted mask like 255.255.255.0)\n"
		      NAME ":6:24: bad subnet mask \"ffff::\" (use a dotted mask like 255.255.255.0)\n"
		      NAME ":7:15: a subnet mask is for IPv4 only: write 2001:db8::/PREFIX\n");
}

static void test_bad_rule_address(void **state)
{
	(void)state;
	expect_errors(CONNECTION("        allow 10.0.0.256\n"
				 "        deny host.example\n"
				 "        allow x/24\n"
				 "        allow bogus 255.255.255.0\n"),
		      NAME ":5:15: bad address \"10.0.0.256\" (use an IP address, ADDRESS/PREFIX, ADDRESS MASK, domain NAME or host NAME)\n"
		      NAME ":6:14: bad address \"host.example\" (use an IP address, ADDRESS/PREFIX, ADDRESS MASK, domain NAME or host NAME)\n"
		      NAME ":7:15: bad address \"x/24\" (use an IP address, ADDRESS/PREFIX, ADDRESS MASK, domain NAME or host NAME)\n"
		      NAME ":8:15: bad address \"bogus\" (use an IP address, ADDRESS/PREFIX, ADDRESS MASK, domain NAME or host NAME)\n");
}

static void test_bad_domain_rule(void **state)
{
	(void)state;
	expect_errors(CONNECTION("        allow domain\n"
				 "        allow domain bad_name.example\n"
				 "        deny domain .example\n"),
		      NAME ":5:15: \"domain\" needs a name: allow domain NAME\n"
		      NAME ":6:22: bad domain name \"bad_name.example\"\n"
		      NAME ":7:21: bad domain name \".example\"\n");
}

static void test_host_rule(void **state)
{
	(void)state;
	struct conf *c = parse_ok(CONNECTION("        allow host Mail.ISP.Example.\n"
					     "        deny 192.0.2.0/24\n"
					     "        deny host spam.example\n"
					     "        allow host mail.isp.example\n"));
	const struct conf_server *s = &c->servers[0];
	const struct conf_rule *r = s->connection.rules;
	assert_int_equal(s->connection.nrules, 4);
	assert_int_equal(r[0].kind, RULE_HOST);
	assert_int_equal(r[0].action, ACTION_ALLOW);
	assert_string_equal(r[0].domain, "mail.isp.example");
	assert_string_equal(r[0].text, "host Mail.ISP.Example.");
	assert_int_equal(r[2].kind, RULE_HOST);
	assert_int_equal(r[2].action, ACTION_DENY);
	/* each name once in the server's list; rules point into it */
	assert_int_equal(s->nhosts, 2);
	assert_string_equal(s->hosts[0], "mail.isp.example");
	assert_string_equal(s->hosts[1], "spam.example");
	assert_int_equal(r[0].host, 0);
	assert_int_equal(r[2].host, 1);
	assert_int_equal(r[3].host, 0);
	/* the refresh bounds' defaults */
	assert_int_equal(c->host_refresh_min, 30);
	assert_int_equal(c->host_refresh_max, 86400);
	conf_free(c);
}

static void test_bad_host_rule(void **state)
{
	(void)state;
	expect_errors(CONNECTION("        allow host\n"
				 "        allow host bad_name.example\n"
				 "        deny host -x.example\n"
				 "        allow host 192.0.2.7\n"
				 "        deny host 2001:db8::1\n"
				 "        allow host a.example b.example\n"
				 "        deny host \"\"\n"),
		      NAME ":5:15: \"host\" needs a name: allow host NAME\n"
		      NAME ":6:20: bad host name \"bad_name.example\"\n"
		      NAME ":7:19: bad host name \"-x.example\"\n"
		      NAME ":8:20: \"192.0.2.7\" is an address, not a host name: write allow 192.0.2.7\n"
		      NAME ":9:19: \"2001:db8::1\" is an address, not a host name: write deny 2001:db8::1\n"
		      NAME ":10:9: \"allow\" needs 1 or 2 arguments\n"
		      NAME ":11:19: bad host name \"\"\n");
}

static void test_host_refresh(void **state)
{
	(void)state;
	struct conf *c = parse_ok("host-refresh 1s 2h\n" CONNECTION("        allow host a.example\n"));
	assert_int_equal(c->host_refresh_min, 1);
	assert_int_equal(c->host_refresh_max, 7200);
	conf_free(c);
	c = parse_ok("host-refresh 5m 5m\n" OK_SERVER "domains example.test\n");
	assert_int_equal(c->host_refresh_min, 300);
	assert_int_equal(c->host_refresh_max, 300);
	conf_free(c);
	expect_errors("host-refresh 1h 1m\n" OK_SERVER,
		      NAME ":1:17: bad duration \"1m\" for \"host-refresh\" (the maximum is less than the minimum 1h)\n");
	expect_errors("host-refresh 0s 1d\n" OK_SERVER,
		      NAME ":1:14: bad duration \"0s\" for \"host-refresh\" (must be more than 0)\n");
	expect_errors("host-refresh 1s\n" OK_SERVER,
		      NAME ":1:1: \"host-refresh\" needs 2 arguments\n");
	expect_errors("host-refresh soon 1d\n" OK_SERVER,
		      NAME ":1:14: bad duration \"soon\" (use a number with s, m, h or d)\n");
}

static void test_bad_connection_default(void **state)
{
	(void)state;
	expect_errors(CONNECTION("        default refuse\n"),
		      NAME ":5:17: bad value \"refuse\" for \"default\" (use allow or deny)\n");
}

#define RELAY(body) \
	"domains example.test\nserver s {\n    listen 127.0.0.1:25\n    relay {\n" body "    }\n}\n"

static void test_relay_values(void **state)
{
	(void)state;
	struct conf *c = parse_ok(RELAY("        authenticated no\n"
					"        allow 10.0.0.0/8\n"
					"        allow 192.0.2.0 255.255.255.0\n"
					"        allow domain corp.example\n"));
	const struct conf_relay *r = &c->servers[0].relay;
	assert_false(r->authenticated);
	assert_int_equal(r->nrules, 3);
	assert_network_rule(&r->rules[1], "192.0.2.0", 24, "192.0.2.0 255.255.255.0");
	for (size_t i = 0; i < r->nrules; i++)
		assert_int_equal(r->rules[i].action, ACTION_ALLOW);
	assert_string_equal(r->rules[2].domain, "corp.example");
	conf_free(c);
	c = parse_ok(RELAY("        allow host office.example\n"));
	assert_int_equal(c->servers[0].relay.rules[0].kind, RULE_HOST);
	assert_int_equal(c->servers[0].nhosts, 1);
	conf_free(c);
	expect_errors(RELAY("        allow host\n        allow host office_1.example\n"),
		      NAME ":5:15: \"host\" needs a name: allow host NAME\n"
		      NAME ":6:20: bad host name \"office_1.example\"\n");
}

static void test_deny_in_relay(void **state)
{
	(void)state;
	expect_errors(RELAY("        deny 10.0.0.0/8\n"
			    "        deny\n"),
		      NAME ":5:9: \"deny\" is not allowed in a relay block: relay rules only grant relaying (refuse clients in the connection block)\n"
		      NAME ":6:9: \"deny\" is not allowed in a relay block: relay rules only grant relaying (refuse clients in the connection block)\n");
}

/* ---- domains, names and paths ----------------------------------------------------- */

static void test_domains_normalised(void **state)
{
	(void)state;
	struct conf *c = parse_ok("domains Example.TEST. example.org example.test xn--bcher-kva.example 1.example\n" OK_SERVER);
	assert_int_equal(c->ndomains, 4);
	assert_string_equal(c->domains[0], "example.test");
	assert_string_equal(c->domains[1], "example.org");
	assert_string_equal(c->domains[2], "xn--bcher-kva.example");
	assert_string_equal(c->domains[3], "1.example");
	conf_free(c);
}

static void test_bad_domains(void **state)
{
	(void)state;
	expect_errors("domains -bad.example good.example a..b \"\" . b\xc3\xbc" "cher.example bad-.example\n" OK_SERVER,
		      NAME ":1:9: bad domain name \"-bad.example\"\n"
		      NAME ":1:35: bad domain name \"a..b\"\n"
		      NAME ":1:40: bad domain name \"\"\n"
		      NAME ":1:43: bad domain name \".\"\n"
		      NAME ":1:45: bad domain name \"b\\xc3\\xbccher.example\"\n"
		      NAME ":1:61: bad domain name \"bad-.example\"\n");
}

static void test_domain_label_and_name_length(void **state)
{
	(void)state;
	char label63[64], label64[65], text[512];
	memset(label63, 'a', 63);
	label63[63] = '\0';
	memset(label64, 'a', 64);
	label64[64] = '\0';
	assert_true(bsnprintf(text, sizeof text, "domains %s.example\n" OK_SERVER, label63));
	conf_free(parse_ok(text));
	assert_true(bsnprintf(text, sizeof text, "domains %s.example\n" OK_SERVER, label64));
	struct parsed r = parse_in(text, BASEDIR);
	assert_int_equal(r.n, 1);
	assert_non_null(strstr(r.errors, NAME ":1:9: bad domain name"));
	free(r.errors);
	/* 4 labels of 63 and the dots: 255 characters, over the 253 limit */
	assert_true(bsnprintf(text, sizeof text, "domains %s.%s.%s.%s\n" OK_SERVER, label63, label63,
			      label63, label63));
	r = parse_in(text, BASEDIR);
	assert_int_equal(r.n, 1);
	free(r.errors);
}

static void test_is_local_domain(void **state)
{
	(void)state;
	struct conf *c = parse_ok("domains example.test Example.ORG\n" OK_SERVER);
	assert_true(conf_is_local_domain(c, "example.test"));
	assert_true(conf_is_local_domain(c, "EXAMPLE.Test"));
	assert_true(conf_is_local_domain(c, "example.test."));
	assert_true(conf_is_local_domain(c, "example.org"));
	assert_false(conf_is_local_domain(c, "example.test.."));
	assert_false(conf_is_local_domain(c, "sub.example.test"));
	assert_false(conf_is_local_domain(c, "example"));
	assert_false(conf_is_local_domain(c, "xexample.test"));
	assert_false(conf_is_local_domain(c, ""));
	assert_false(conf_is_local_domain(c, "."));
	conf_free(c);
}

static void test_bad_hostname(void **state)
{
	(void)state;
	expect_errors("hostname mail_1.example\n"
		      SERVER("    listen 127.0.0.1:25\n    hostname \"a b\"\n"),
		      NAME ":1:10: bad domain name \"mail_1.example\"\n"
		      NAME ":5:14: bad domain name \"a b\"\n");
}

static void test_server_names(void **state)
{
	(void)state;
	struct conf *c = parse_ok("domains example.test\n"
				  "server Sub-mission_2.x {\n    listen 127.0.0.1:25\n}\n");
	assert_string_equal(c->servers[0].name, "Sub-mission_2.x");
	conf_free(c);
	expect_errors("domains example.test\nserver a/b {\n    listen 127.0.0.1:25\n}\n" OK_SERVER,
		      NAME ":2:8: bad server name \"a/b\" (use letters, digits, \".\", \"_\" and \"-\")\n");
}

static void test_bad_protocol(void **state)
{
	(void)state;
	expect_errors(SERVER("    listen 127.0.0.1:25\n    protocol SMTP\n"),
		      NAME ":4:14: unknown protocol \"SMTP\" (use smtp, pop3 or imap)\n");
}

static void test_run_as(void **state)
{
	(void)state;
	struct conf *c = parse_ok("domains example.test\nrun-as _posthorn-1\n" OK_SERVER);
	assert_string_equal(c->run_as, "_posthorn-1");
	conf_free(c);
	expect_errors("domains example.test\nrun-as -x\n" OK_SERVER,
		      NAME ":2:8: bad user name \"-x\" for \"run-as\"\n");
	expect_errors("domains example.test\nrun-as \"a b\"\n" OK_SERVER,
		      NAME ":2:8: bad user name \"a b\" for \"run-as\"\n");
}

static void test_relative_paths_resolved(void **state)
{
	(void)state;
	struct conf *c = parse_ok("spool queue\n"
				  "mailboxes ./mail\n"
				  "users ../shared/users\n"
				  "aliases /abs/aliases\n"
				  "outbound {\n    smarthost relay.example\n    smarthost-auth u secrets/isp\n}\n"
				  SERVER("    listen 127.0.0.1:25\n"
					 "    tls {\n        certificate certs/a.crt\n        key /k/a.key\n    }\n"));
	assert_string_equal(c->spool, BASEDIR "/queue");
	assert_string_equal(c->mailboxes, BASEDIR "/mail");
	assert_string_equal(c->users, BASEDIR "/../shared/users");
	assert_string_equal(c->aliases, "/abs/aliases");
	assert_string_equal(c->outbound.smarthost_secret, BASEDIR "/secrets/isp");
	assert_string_equal(c->servers[0].tls.certs[0].certificate, BASEDIR "/certs/a.crt");
	assert_string_equal(c->servers[0].tls.certs[0].key, "/k/a.key");
	conf_free(c);
}

static void test_basedir_defaults_to_current_folder(void **state)
{
	(void)state;
	char *cwd = getcwd(NULL, 0);
	assert_non_null(cwd);
	struct parsed r = parse_in("domains example.test\nspool q\n" OK_SERVER, NULL);
	assert_int_equal(r.n, 0);
	char *want = xasprintf("%s/q", cwd);
	assert_string_equal(r.conf->spool, want);
	free(want);
	free(cwd);
	free(r.errors);
	conf_free(r.conf);
	r = parse_in("domains example.test\nspool q\n" OK_SERVER, "/");
	assert_int_equal(r.n, 0);
	assert_string_equal(r.conf->spool, "/q");
	free(r.errors);
	conf_free(r.conf);
}

static void test_empty_path(void **state)
{
	(void)state;
	expect_errors("domains example.test\nspool \"\"\n" OK_SERVER,
		      NAME ":2:7: empty path for \"spool\"\n");
}

/* ---- tls --------------------------------------------------------------------------- */

#define TLS(body) \
	"domains example.test\nserver s {\n    listen 127.0.0.1:25\n    tls {\n" body "    }\n}\n"

static void test_tls_values(void **state)
{
	(void)state;
	struct conf *c = parse_ok(TLS("        certificate a.crt\n"
				      "        key a.key\n"
				      "        certificate /b.crt\n"
				      "        key b.key\n"
				      "        require yes\n"
				      "        min-bits 256\n"
				      "        min-version 1.3\n"
				      "        strict-sni yes\n"));
	const struct conf_tls *t = &c->servers[0].tls;
	assert_int_equal(t->ncerts, 2);
	assert_string_equal(t->certs[0].certificate, BASEDIR "/a.crt");
	assert_string_equal(t->certs[0].key, BASEDIR "/a.key");
	assert_string_equal(t->certs[1].certificate, "/b.crt");
	assert_string_equal(t->certs[1].key, BASEDIR "/b.key");
	assert_pos(&t->certs[1].pos, NAME, 7, 9);
	assert_true(t->require);
	assert_int_equal(t->min_bits, 256);
	assert_int_equal(t->min_version, TLS_VERSION_1_3);
	assert_true(t->strict_sni);
	conf_free(c);
}

static void test_bad_tls_values(void **state)
{
	(void)state;
	expect_errors(TLS("        min-version 1.1\n"
			  "        min-bits 512\n"
			  "        strict-sni 1\n"),
		      NAME ":5:21: bad value \"1.1\" for \"min-version\" (use 1.2 or 1.3)\n"
		      NAME ":6:18: bad number \"512\" for \"min-bits\" (use a whole number from 0 to 256)\n"
		      NAME ":7:20: bad value \"1\" for \"strict-sni\" (use yes or no)\n");
}

static void test_certificate_without_key(void **state)
{
	(void)state;
	expect_errors(TLS("        certificate a.crt\n"),
		      NAME ":5:9: certificate \"/etc/posthorn/a.crt\" has no \"key\" after it\n");
	expect_errors(TLS("        certificate a.crt\n"
			  "        certificate b.crt\n"
			  "        key b.key\n"),
		      NAME ":5:9: certificate \"/etc/posthorn/a.crt\" has no \"key\" after it\n");
}

static void test_key_without_certificate(void **state)
{
	(void)state;
	expect_errors(TLS("        key a.key\n"),
		      NAME ":5:9: \"key\" without a \"certificate\" before it (write certificate FILE, then key FILE)\n");
	expect_errors(TLS("        certificate a.crt\n"
			  "        key a.key\n"
			  "        key b.key\n"),
		      NAME ":7:9: \"key\" without a \"certificate\" before it (write certificate FILE, then key FILE)\n");
}

static void test_require_without_certificate(void **state)
{
	(void)state;
	expect_errors(TLS("        require yes\n"),
		      NAME ":5:9: no certificate: \"require yes\" needs a certificate and key in the tls block of server \"s\"\n");
}

static void test_listen_tls_without_certificate(void **state)
{
	(void)state;
	expect_errors(SERVER("    listen 127.0.0.1:25\n    listen 127.0.0.1:465 tls\n"),
		      NAME ":4:12: no certificate: \"listen 127.0.0.1:465 tls\" needs a certificate and key in the tls block of server \"s\"\n");
}

/* ---- validation --------------------------------------------------------------------- */

static void test_no_server(void **state)
{
	(void)state;
	expect_errors("# nothing here\ndomains example.test\n",
		      NAME ":3:1: no server block: posthorn would listen nowhere\n");
	expect_errors("", NAME ":1:1: no server block: posthorn would listen nowhere\n");
}

static void test_missing_listen(void **state)
{
	(void)state;
	expect_errors("domains example.test\nserver s {\n    protocol smtp\n}\n" OK_SERVER,
		      NAME ":2:1: server \"s\" has no \"listen\" address\n");
}

static void test_missing_listen_not_reported_after_bad_listen(void **state)
{
	(void)state;
	expect_errors(SERVER("    listen 127.0.0.1:99999\n"),
		      NAME ":3:12: bad port \"99999\" in \"127.0.0.1:99999\" (use 1 to 65535)\n");
}

static void test_domains_required_for_smtp(void **state)
{
	(void)state;
	expect_errors("server p {\n    protocol pop3\n    listen 127.0.0.1:110\n}\n"
		      "server s {\n    listen 127.0.0.1:25\n}\n",
		      NAME ":5:1: no \"domains\": smtp server \"s\" needs the local domains (e.g. domains example.org)\n");
	struct parsed r = parse_in("server p {\n    protocol imap\n    listen 127.0.0.1:143\n}\n", BASEDIR);
	assert_int_equal(r.n, 0);
	assert_int_equal(r.conf->ndomains, 0);
	free(r.errors);
	conf_free(r.conf);
}

static void test_duplicate_server_name(void **state)
{
	(void)state;
	expect_errors("domains example.test\n"
		      "server s {\n    listen 127.0.0.1:25\n}\n"
		      "server s {\n    listen 127.0.0.1:26\n}\n",
		      NAME ":5:1: duplicate server name \"s\" (first at " NAME ":2:1)\n");
}

static void test_two_servers_on_one_address(void **state)
{
	(void)state;
	expect_errors("domains example.test\n"
		      "server a {\n    listen 127.0.0.1:25\n}\n"
		      "server b {\n    listen 127.0.0.1:25\n}\n",
		      NAME ":6:12: listen address \"127.0.0.1:25\" is already used by server \"a\" (" NAME ":3:12)\n");
	expect_errors("domains example.test\n"
		      "server a {\n    listen [::1]:25\n}\n"
		      "server b {\n    listen [0:0::1]:25\n}\n",
		      NAME ":6:12: listen address \"[0:0::1]:25\" is already used by server \"a\" (" NAME ":3:12)\n");
}

static void test_same_address_twice_in_one_server(void **state)
{
	(void)state;
	expect_errors(SERVER("    listen 127.0.0.1:25\n    listen 127.0.0.1:25 tls\n"
			     "    tls {\n        certificate a\n        key b\n    }\n"),
		      NAME ":4:12: listen address \"127.0.0.1:25\" is already used by server \"s\" (" NAME ":3:12)\n");
}

static void test_wildcard_overlap(void **state)
{
	(void)state;
	expect_errors("domains example.test\n"
		      "server a {\n    listen 127.0.0.1:25\n    listen [::1]:25\n}\n"
		      "server b {\n    listen 0.0.0.0:25\n    listen [::]:25\n}\n",
		      NAME ":7:12: listen address \"0.0.0.0:25\" overlaps \"127.0.0.1:25\" of server \"a\" (" NAME ":3:12)\n"
		      NAME ":8:12: listen address \"[::]:25\" overlaps \"[::1]:25\" of server \"a\" (" NAME ":4:12)\n");
	expect_errors("domains example.test\n"
		      "server a {\n    listen 0.0.0.0:25\n}\n"
		      "server b {\n    listen 192.0.2.1:25\n}\n",
		      NAME ":6:12: listen address \"192.0.2.1:25\" overlaps \"0.0.0.0:25\" of server \"a\" (" NAME ":3:12)\n");
}

static void test_no_overlap_across_families_or_ports(void **state)
{
	(void)state;
	struct conf *c = parse_ok("domains example.test\n"
				  "server a {\n    listen 0.0.0.0:25\n    listen 127.0.0.1:26\n}\n"
				  "server b {\n    listen [::]:25\n    listen 127.0.0.2:26\n}\n");
	assert_int_equal(c->nservers, 2);
	conf_free(c);
}

static void test_smarthost_auth_without_smarthost(void **state)
{
	(void)state;
	expect_errors("domains example.test\noutbound {\n    smarthost-auth user pw\n}\n" OK_SERVER,
		      NAME ":3:5: \"smarthost-auth\" without \"smarthost\"\n");
}

/* ---- outbound ---------------------------------------------------------------------- */

static void test_outbound_values(void **state)
{
	(void)state;
	struct conf *c = parse_ok("domains example.test\noutbound {\n"
				  "    smarthost [2001:db8::1]:2525\n"
				  "    tls required\n"
				  "    port 2525\n"
				  "    lifetime 2d\n"
				  "    retry 1m 2h\n"
				  "}\n" OK_SERVER);
	const struct conf_outbound *o = &c->outbound;
	assert_string_equal(o->smarthost, "[2001:db8::1]:2525");
	assert_string_equal(o->smarthost_host, "2001:db8::1");
	assert_int_equal(o->smarthost_port, 2525);
	assert_int_equal(o->tls, OUTBOUND_TLS_REQUIRED);
	assert_int_equal(o->port, 2525);
	assert_int_equal(o->lifetime, 2 * 86400);
	assert_int_equal(o->nretry, 2);
	assert_int_equal(o->retry[0], 60);
	assert_int_equal(o->retry[1], 7200);
	conf_free(c);

	c = parse_ok("domains example.test\noutbound {\n    smarthost Relay.Example\n    tls no\n}\n" OK_SERVER);
	assert_string_equal(c->outbound.smarthost_host, "relay.example");
	assert_int_equal(c->outbound.smarthost_port, 25);
	assert_int_equal(c->outbound.tls, OUTBOUND_TLS_NO);
	conf_free(c);

	c = parse_ok("domains example.test\noutbound {\n    smarthost 192.0.2.25:587\n}\n" OK_SERVER);
	assert_string_equal(c->outbound.smarthost_host, "192.0.2.25");
	assert_int_equal(c->outbound.smarthost_port, 587);
	conf_free(c);

	c = parse_ok("domains example.test\noutbound {\n    smarthost 2001:db8::25\n}\n" OK_SERVER);
	assert_string_equal(c->outbound.smarthost_host, "2001:db8::25");
	assert_int_equal(c->outbound.smarthost_port, 25);
	conf_free(c);
}

static void test_bad_outbound_values(void **state)
{
	(void)state;
	expect_errors("domains example.test\noutbound {\n"
		      "    tls maybe\n"
		      "    smarthost bad_host:25\n"
		      "    port 0\n"
		      "}\n"
		      "outbound {\n}\n" OK_SERVER,
		      NAME ":3:9: bad value \"maybe\" for \"tls\" (use opportunistic, required or no)\n"
		      NAME ":4:15: bad smarthost \"bad_host:25\" (use HOST or HOST:PORT, e.g. relay.example:587)\n"
		      NAME ":5:10: bad number \"0\" for \"port\" (use a whole number from 1 to 65535)\n"
		      NAME ":7:1: duplicate directive \"outbound\" (first given at " NAME ":2:1)\n");
	expect_errors("domains example.test\noutbound {\n    tls-policy sometimes\n}\n" OK_SERVER,
		      NAME ":3:16: bad value \"sometimes\" for \"tls-policy\" (use dane, mta-sts, both, or none)\n");
	expect_errors("domains example.test\noutbound {\n    tls-policy dane none\n}\n" OK_SERVER,
		      NAME ":3:21: \"none\" does not go with the other words of \"tls-policy\" (use dane, mta-sts, both, or none)\n");
	expect_errors("domains example.test\noutbound {\n    tls-reports maybe\n}\n" OK_SERVER,
		      NAME ":3:17: bad value \"maybe\" for \"tls-reports\" (use yes or no)\n");
	/* tls-reports: on by default only when mail is DKIM-signed (RFC 8460 §5.3) */
	static const struct {
		const char *text;
		bool on;
	} reports[] = {
		{"domains example.test\n" OK_SERVER, false},
		{"domains example.test\ndkim {\n    key example.test s1 /k\n}\n" OK_SERVER, true},
		{"domains example.test\ndkim {\n    key example.test s1 /k\n}\n"
		 "outbound {\n    tls-reports no\n}\n" OK_SERVER, false},
		{"domains example.test\noutbound {\n    tls-reports yes\n}\n" OK_SERVER, true},
	};
	for (size_t i = 0; i < sizeof reports / sizeof *reports; i++) {
		struct conf *rc = parse_ok(reports[i].text);
		assert_int_equal(rc->outbound.tls_reports, reports[i].on);
		conf_free(rc);
	}
	expect_errors("domains example.test\noutbound {\n    smarthost relay.example:70000\n}\n" OK_SERVER,
		      NAME ":3:15: bad port \"70000\" in \"relay.example:70000\" (use 1 to 65535)\n");
	expect_errors("domains example.test\noutbound {\n    smarthost-auth \"\" pw\n}\n" OK_SERVER,
		      NAME ":3:20: empty user name for \"smarthost-auth\"\n");
	expect_errors("domains example.test\noutbound {\n    smarthost [relay.example]:25\n}\n" OK_SERVER,
		      NAME ":3:15: bad smarthost \"[relay.example]:25\" (use HOST or HOST:PORT, e.g. relay.example:587)\n");
	expect_errors("domains example.test\noutbound {\n    smarthost [::1\n}\n" OK_SERVER,
		      NAME ":3:15: bad smarthost \"[::1\" (use HOST or HOST:PORT, e.g. relay.example:587)\n");
}

/* ---- files and includes ---------------------------------------------------------------- */

static void test_load_missing_file(void **state)
{
	(void)state;
	struct parsed r = load("/nonexistent/posthorn.conf");
	assert_int_equal(r.n, 1);
	assert_null(r.conf);
	assert_string_equal(r.errors, "/nonexistent/posthorn.conf:1:1: cannot read configuration: No such file or directory\n");
	free(r.errors);
}

static void test_load_file_with_nul_byte(void **state)
{
	(void)state;
	char *dir = make_tmpdir();
	char *path = xasprintf("%s/nul.conf", dir);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fwrite("domains a\0b\n", 1, 12, f);
	fclose(f);
	struct parsed r = load(path);
	assert_int_equal(r.n, 1);
	char *want = xasprintf("%s:1:1: cannot read configuration: contains a NUL byte (not a text file?)\n", path);
	assert_string_equal(r.errors, want);
	free(want);
	free(r.errors);
	free(path);
	remove_tree(dir);
}

static void test_load_file_too_large(void **state)
{
	(void)state;
	char *dir = make_tmpdir();
	char *path = xasprintf("%s/big.conf", dir);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	for (int i = 0; i < 4 * 1024 + 1; i++)
		fprintf(f, "%1023s\n", "#");
	fclose(f);
	struct parsed r = load(path);
	assert_int_equal(r.n, 1);
	char *want = xasprintf("%s:1:1: cannot read configuration: file too large\n", path);
	assert_string_equal(r.errors, want);
	free(want);
	free(r.errors);
	free(path);
	remove_tree(dir);
}

static void test_load_relative_path(void **state)
{
	(void)state;
	char *dir = make_tmpdir();
	free(write_file(dir, "etc/posthorn.conf", "domains example.test\nspool queue\n" OK_SERVER "bogus\n"));
	free(write_file(dir, "etc/good.conf", "domains example.test\nspool ./queue\n" OK_SERVER));
	char *old = getcwd(NULL, 0);
	assert_non_null(old);
	assert_int_equal(chdir(dir), 0);

	struct parsed r = load("etc/posthorn.conf");
	assert_int_equal(r.n, 1);
	assert_string_equal(r.errors, "etc/posthorn.conf:6:1: unknown directive \"bogus\" at top level\n");
	free(r.errors);

	r = load("etc/good.conf");
	assert_int_equal(r.n, 0);
	char *want = xasprintf("%s/etc/queue", dir);
	assert_string_equal(r.conf->spool, want);
	assert_string_equal(r.conf->path, "etc/good.conf");
	assert_string_equal(r.conf->servers[0].pos.file, "etc/good.conf");
	free(want);
	free(r.errors);
	conf_free(r.conf);

	assert_int_equal(chdir(old), 0);
	free(old);
	remove_tree(dir);
}

static void test_include_glob(void **state)
{
	(void)state;
	char *dir = make_tmpdir();
	char *main_conf = write_file(dir, "posthorn.conf", "domains example.test\ninclude conf.d/*.conf\nspool q\n");
	free(write_file(dir, "conf.d/20-b.conf", "server b {\n    listen 127.0.0.1:2526\n}\n"));
	free(write_file(dir, "conf.d/10-a.conf", "server a {\n    listen 127.0.0.1:2525\n}\n"));
	free(write_file(dir, "conf.d/ignored.txt", "bogus\n"));
	struct parsed r = load(main_conf);
	assert_string_equal(r.errors, "");
	assert_int_equal(r.n, 0);
	const struct conf *c = r.conf;
	assert_int_equal(c->nservers, 2);
	assert_string_equal(c->servers[0].name, "a");
	assert_string_equal(c->servers[1].name, "b");
	assert_int_equal(c->nfiles, 3);
	char *b_path = xasprintf("%s/conf.d/20-b.conf", dir);
	assert_pos(&c->servers[1].pos, b_path, 1, 1);
	assert_ptr_equal(c->servers[1].pos.file, c->files[2]);
	char *spool = xasprintf("%s/q", dir);
	assert_string_equal(c->spool, spool);
	free(spool);
	free(b_path);
	free(r.errors);
	conf_free(r.conf);
	free(main_conf);
	remove_tree(dir);
}

static void test_include_error_names_included_file(void **state)
{
	(void)state;
	char *dir = make_tmpdir();
	char *main_conf = write_file(dir, "posthorn.conf", "domains example.test\ninclude \"servers.conf\"\nbogus\n");
	char *inc = write_file(dir, "servers.conf", OK_SERVER "server b {\n    lissen x\n}\n");
	struct parsed r = load(main_conf);
	char *want = xasprintf("%s:5:5: unknown directive \"lissen\" in server block\n"
			       "%s:3:1: unknown directive \"bogus\" at top level\n", inc, main_conf);
	assert_string_equal(r.errors, want);
	assert_int_equal(r.n, 2);
	free(want);
	free(r.errors);
	free(inc);
	free(main_conf);
	remove_tree(dir);
}

static void test_include_glob_matching_nothing(void **state)
{
	(void)state;
	char *dir = make_tmpdir();
	struct parsed r = parse_in("domains example.test\ninclude none.d/*.conf\ninclude x?.conf\n" OK_SERVER, dir);
	assert_string_equal(r.errors, "");
	assert_int_equal(r.n, 0);
	free(r.errors);
	conf_free(r.conf);
	remove_tree(dir);
}

static void test_include_missing_file(void **state)
{
	(void)state;
	char *dir = make_tmpdir();
	struct parsed r = parse_in("domains example.test\ninclude missing.conf\n" OK_SERVER, dir);
	char *want = xasprintf(NAME ":2:9: cannot include \"%s/missing.conf\": No such file or directory\n", dir);
	assert_string_equal(r.errors, want);
	assert_int_equal(r.n, 1);
	assert_null(r.conf);
	free(want);
	free(r.errors);
	remove_tree(dir);
}

static void test_include_empty_path(void **state)
{
	(void)state;
	expect_errors("domains example.test\ninclude \"\"\n" OK_SERVER,
		      NAME ":2:9: empty path for \"include\"\n");
}

static void test_include_loop(void **state)
{
	(void)state;
	char *dir = make_tmpdir();
	char *a = write_file(dir, "a.conf", "domains example.test\ninclude b.conf\n" OK_SERVER);
	char *b = write_file(dir, "b.conf", "include a.conf\n");
	char *self = write_file(dir, "self.conf", "domains example.test\n" OK_SERVER "include self.conf\n");
	struct parsed r = load(a);
	char *want = xasprintf("%s:1:9: include loop: \"%s\" is already being read\n", b, a);
	assert_string_equal(r.errors, want);
	assert_int_equal(r.n, 1);
	free(want);
	free(r.errors);
	r = load(self);
	want = xasprintf("%s:5:9: include loop: \"%s\" is already being read\n", self, self);
	assert_string_equal(r.errors, want);
	free(want);
	free(r.errors);
	free(a);
	free(b);
	free(self);
	remove_tree(dir);
}

static void test_include_depth_limit(void **state)
{
	(void)state;
	char *dir = make_tmpdir();
	char name[32], text[64];
	/* f0 includes f1 ... f8 includes f9: nine levels, one too many */
	for (int i = 0; i <= 9; i++) {
		assert_true(bsnprintf(name, sizeof name, "f%d.conf", i));
		if (i < 9)
			assert_true(bsnprintf(text, sizeof text, "include f%d.conf\n", i + 1));
		else
			assert_true(bsnprintf(text, sizeof text, "run-as deep\n"));
		free(write_file(dir, name, text));
	}
	char *main_conf = write_file(dir, "main.conf", "domains example.test\n" OK_SERVER "include f1.conf\n");
	struct parsed r = load(main_conf);
	char *want = xasprintf("%s/f8.conf:1:9: cannot include \"%s/f9.conf\": includes nested more than 8 deep\n",
			       dir, dir);
	assert_string_equal(r.errors, want);
	assert_int_equal(r.n, 1);
	free(want);
	free(r.errors);
	free(main_conf);

	/* eight levels are fine */
	main_conf = write_file(dir, "main2.conf", "domains example.test\n" OK_SERVER "include f2.conf\n");
	r = load(main_conf);
	assert_string_equal(r.errors, "");
	assert_string_equal(r.conf->run_as, "deep");
	free(r.errors);
	conf_free(r.conf);
	free(main_conf);
	remove_tree(dir);
}

static void test_include_relative_to_including_file(void **state)
{
	(void)state;
	char *dir = make_tmpdir();
	char *main_conf = write_file(dir, "posthorn.conf", "domains example.test\ninclude sub/inc.conf\n");
	free(write_file(dir, "sub/inc.conf", "spool queue\ninclude more/*.conf\n"));
	free(write_file(dir, "sub/more/m.conf", OK_SERVER "users db\n"));
	struct parsed r = load(main_conf);
	assert_string_equal(r.errors, "");
	char *spool = xasprintf("%s/sub/queue", dir);
	char *users = xasprintf("%s/sub/more/db", dir);
	assert_string_equal(r.conf->spool, spool);
	assert_string_equal(r.conf->users, users);
	assert_int_equal(r.conf->nservers, 1);
	free(spool);
	free(users);
	free(r.errors);
	conf_free(r.conf);
	free(main_conf);
	remove_tree(dir);
}

static void test_duplicate_directive_across_include(void **state)
{
	(void)state;
	char *dir = make_tmpdir();
	char *main_conf = write_file(dir, "posthorn.conf", "domains example.test\nspool /a\ninclude x.conf\n" OK_SERVER);
	char *inc = write_file(dir, "x.conf", "spool /b\n");
	struct parsed r = load(main_conf);
	char *want = xasprintf("%s:1:1: duplicate directive \"spool\" (first given at %s:2:1)\n", inc, main_conf);
	assert_string_equal(r.errors, want);
	free(want);
	free(r.errors);
	free(inc);
	free(main_conf);
	remove_tree(dir);
}

static void test_include_inside_block_is_unknown(void **state)
{
	(void)state;
	expect_errors(SERVER("    listen 127.0.0.1:25\n    include x.conf\n"),
		      NAME ":4:5: unknown directive \"include\" in server block (it belongs at top level)\n");
}

/* ---- policy ------------------------------------------------------------------------------ */

static const char policy_conf[] =
	"hostname mail.example.test\n"
	"domains example.test example.org\n"
	"run-as posthorn\n"
	"server submission {\n"
	"    listen 127.0.0.1:2587\n"
	"    listen 127.0.0.1:2465 tls\n"
	"    hostname smtp.example.test\n"
	"    tls {\n        certificate /etc/posthorn/smtp.crt\n        key /etc/posthorn/smtp.key\n    }\n"
	"    connection {\n"
	"        default deny\n"
	"        allow 192.0.2.10\n"
	"        allow 198.51.100.0/24\n"
	"        allow domain isp.example\n"
	"        deny 0.0.0.0/0\n"
	"    }\n"
	"    relay {\n        allow 10.0.0.0/8\n    }\n"
	"}\n"
	"server mx {\n"
	"    listen 127.0.0.1:2525\n"
	"    connection {\n        deny 192.0.2.0 255.255.255.0\n    }\n"
	"    auth {\n        anonymous yes\n        mechanisms scram-sha-256\n        lockout 0 1m 1m\n"
	"        received-auth no\n        lockout-ipv6-prefix 128\n    }\n"
	"    relay {\n        authenticated no\n    }\n"
	"    limits {\n        message-size 1G\n        timeout 90s\n        error-delay 0 after 3\n"
	"        unknown-recipients 0 1m 1m\n    }\n"
	"}\n"
	"server pop {\n"
	"    protocol pop3\n"
	"    listen 127.0.0.1:2110\n"
	"}\n";

static void test_policy_global_lines(void **state)
{
	(void)state;
	struct conf *c = parse_ok(policy_conf);
	int warnings;
	char *text = policy_of(c, &warnings);
	assert_contains(text, "local domains: example.test, example.org\n");
	assert_contains(text, "hostname: mail.example.test\n");
	assert_contains(text, "spool: /var/spool/posthorn\n");
	assert_contains(text, "mailboxes: /var/mail/posthorn\n");
	assert_contains(text, "users: /etc/posthorn/users\n");
	assert_contains(text, "run-as: posthorn");
	assert_contains(text, "dns: the servers in /etc/resolv.conf\n");
	assert_contains(text, "outbound: straight to each domain's mail exchangers on port 25");
	assert_contains(text, "retries after 5 minutes, 15 minutes, 1 hour, 4 hours");
	assert_contains(text, "undelivered mail is returned after 5 days");
	free(text);
	conf_free(c);
}

static void test_policy_server_lines(void **state)
{
	(void)state;
	struct conf *c = parse_ok(policy_conf);
	int warnings;
	char *text = policy_of(c, &warnings);
	assert_contains(text, "server submission (smtp), hostname smtp.example.test\n");
	assert_contains(text, "  listens on 127.0.0.1:2587 (plain, STARTTLS offered), 127.0.0.1:2465 (implicit TLS)\n");
	assert_contains(text, "  who may connect: only 192.0.2.10, 198.51.100.0/24, clients whose verified reverse name is in isp.example\n");
	assert_contains(text, "  encryption: certificate /etc/posthorn/smtp.crt; secure channel not required; minimum 128-bit ciphers, TLS 1.2 or newer\n");
	assert_contains(text, "  authentication: PLAIN, LOGIN, SCRAM-SHA-256, only after TLS (each sends the password or what it can be guessed from); anonymous clients may not send mail; senders must match their login; 5 failed logins from one address (IPv6: one /64) within 15 minutes lock it out for 30 minutes\n");
	assert_contains(text, "  relaying: authenticated clients; also 10.0.0.0/8\n");
	assert_contains(text, "  limits: messages up to 25 MiB, 100 recipients, 1000 connections (20 per address), 5 minutes idle\n");
	assert_contains(text, "  recipient probing: refused recipients are answered after 1 second once a session has made 3 errors; 50 unknown recipients from one address (IPv6: one /64) within 1 hour refuse it for 1 hour\n");

	assert_contains(text, "server mx (smtp), hostname mail.example.test\n");
	assert_contains(text, "  listens on 127.0.0.1:2525 (plain, no STARTTLS: no certificate)\n");
	assert_contains(text, "  who may connect: everybody except 192.0.2.0/24\n");
	assert_contains(text, "  encryption: none (no certificate)\n");
	assert_contains(text, "  authentication: SCRAM-SHA-256, only after TLS (each sends the password or what it can be guessed from); anonymous clients may send mail to local domains; senders must match their login; Received: headers do not name the authenticated user; no lockout after failed logins\n");
	assert_contains(text, "  relaying: nobody (mail is accepted for the local domains only)\n");
	assert_contains(text, "  limits: messages up to 1 GiB, 100 recipients, 1000 connections (20 per address), 90 seconds idle\n");
	assert_contains(text, "  recipient probing: refused recipients are answered at once; no lockout after unknown recipients\n");

	assert_contains(text, "server pop (pop3), hostname mail.example.test\n");
	assert_contains(text, "  listens on 127.0.0.1:2110 (plain, no STLS: no certificate)\n");
	assert_contains(text, "  who may connect: everybody\n");
	assert_contains(text, "  authentication: PLAIN, LOGIN, SCRAM-SHA-256 and USER/PASS, only after TLS (each sends the password or what it can be guessed from); 5 failed logins from one address (IPv6: one /64) within 15 minutes lock it out for 30 minutes\n");
	assert_contains(text, "  limits: 1000 connections (20 per address), 10 minutes idle\n");
	assert_int_equal(count_substrings(text, "relaying:"), 2);
	assert_int_equal(count_substrings(text, "recipient probing:"), 2); /* SMTP only */
	free(text);
	conf_free(c);
}

/* DANE is believed only through a resolver on loopback (RFC 7672 §2.1). */
static void test_policy_dane_needs_a_loopback_resolver(void **state)
{
	(void)state;
	int warnings;
	struct conf *c = parse_ok("dns 127.0.0.1:5353 [::1]\n" TLS(""));
	char *text = policy_of(c, &warnings);
	assert_contains(text, "DANE: TLS authenticated by TLSA records where the validating "
			      "resolver on loopback says they are secure");
	free(text);
	conf_free(c);
	c = parse_ok("dns 127.0.0.1 192.0.2.53\n" TLS(""));
	text = policy_of(c, &warnings);
	assert_contains(text, "DANE is on but NOT in effect: the DNS servers are not all on loopback");
	free(text);
	conf_free(c);
	c = parse_ok("outbound {\n    tls-policy none\n}\n" TLS(""));
	text = policy_of(c, &warnings);
	assert_contains(text, "; no DANE; ");
	assert_true(strstr(text, "MTA-STS:") == NULL);
	free(text);
	conf_free(c);
	c = parse_ok("outbound {\n    tls-policy mta-sts\n    ca-file /etc/posthorn/ca.pem\n}\n" TLS(""));
	text = policy_of(c, &warnings);
	assert_contains(text, "; MTA-STS: domains' published policies are fetched over HTTPS "
			      "(certificates checked against /etc/posthorn/ca.pem) and enforced; no DANE; ");
	free(text);
	conf_free(c);
}

static void test_policy_tls_and_outbound_details(void **state)
{
	(void)state;
	struct conf *c = parse_ok("dns 192.0.2.53 [2001:db8::53]:5353\n"
				  "aliases aliases\n"
				  "outbound {\n    smarthost relay.example:587\n    smarthost-auth isp /nonexistent/isp\n"
				  "    tls required\n    lifetime 36h\n    retry 90s 1d\n}\n"
				  TLS("        certificate a.crt\n        key a.key\n"
				      "        certificate /b.crt\n        key /b.key\n"
				      "        require yes\n        min-bits 256\n"
				      "        min-version 1.3\n        strict-sni yes\n"));
	int warnings;
	char *text = policy_of(c, &warnings);
	assert_contains(text, "  encryption: certificates /etc/posthorn/a.crt, /b.crt; secure channel required; "
			      "minimum 256-bit ciphers, TLS 1.3 or newer; clients asking for a name no "
			      "certificate covers are refused\n");
	assert_contains(text, "dns: 192.0.2.53, [2001:db8::53]:5353\n");
	assert_contains(text, "aliases: /etc/posthorn/aliases\n");
	assert_contains(text, "outbound: all through relay.example port 587, logging in as isp "
			      "(password in /nonexistent/isp); TLS required; DANE and MTA-STS not used with a smarthost; "
			      "undelivered mail is returned "
			      "after 36 hours; retries after 90 seconds, 1 day (the last step repeats)\n");
	free(text);
	conf_free(c);
}

static void test_policy_rules_in_order(void **state)
{
	(void)state;
	struct conf *c = parse_ok(CONNECTION("        deny 192.0.2.66\n"
					     "        allow 192.0.2.0/24\n"
					     "        default deny\n"
					     "        deny 2001:db8::/32\n"));
	int warnings;
	char *text = policy_of(c, &warnings);
	assert_contains(text, "  who may connect: the first matching rule decides: deny 192.0.2.66, allow 192.0.2.0/24; nobody else may connect\n");
	free(text);
	conf_free(c);
}

static void test_policy_host_rules(void **state)
{
	(void)state;
	struct conf *c = parse_ok("host-refresh 10s 1h\n"
				  "domains example.test\nserver s {\n    listen 127.0.0.1:25\n"
				  "    connection {\n        default deny\n        allow host mail.isp.example\n    }\n"
				  "    relay {\n        allow host office.example\n    }\n}\n");
	int warnings;
	char *text = policy_of(c, &warnings);
	assert_contains(text, "  who may connect: only the addresses of mail.isp.example\n");
	assert_contains(text, "also the addresses of office.example\n");
	assert_contains(text, "host rules: names looked up at start and at each reload, again when their "
			      "answer's TTL runs out (at least 10 seconds, at most 1 hour); a name matches "
			      "nothing until it resolves\n");
	free(text);
	conf_free(c);
	/* no host rules: no such line */
	c = parse_ok(CONNECTION("        allow 192.0.2.1\n"));
	text = policy_of(c, &warnings);
	assert_not_contains(text, "host rules:");
	free(text);
	conf_free(c);
}

static void test_policy_clean_server_has_no_warnings(void **state)
{
	(void)state;
	/* An MX: anonymous clients may send to local domains, everybody connects. */
	struct conf *c = parse_ok("run-as posthorn\n"
				  SERVER("    listen 0.0.0.0:25\n    auth {\n        anonymous yes\n    }\n"));
	int warnings;
	char *text = policy_of(c, &warnings);
	assert_int_equal(warnings, 0);
	assert_not_contains(text, "warning: ");
	free(text);
	conf_free(c);
}

static void test_policy_warns_plain_without_certificate(void **state)
{
	(void)state;
	struct conf *c = parse_ok("run-as posthorn\n"
				  SERVER("    listen 127.0.0.1:25\n    auth {\n        mechanisms plain login\n    }\n"));
	int warnings;
	char *text = policy_of(c, &warnings);
	assert_contains(text, "warning: server s: AUTH PLAIN offered but no TLS certificate: clients can never authenticate\n");
	assert_contains(text, "warning: server s: anonymous clients may not send mail and no client can authenticate: nobody can send mail\n");
	assert_int_equal(warnings, 2);
	assert_int_equal(count_substrings(text, "warning: "), warnings);
	free(text);
	conf_free(c);

	c = parse_ok("run-as posthorn\n"
		     SERVER("    listen 127.0.0.1:25\n    auth {\n        mechanisms login\n        anonymous yes\n    }\n"));
	text = policy_of(c, &warnings);
	assert_contains(text, "warning: server s: AUTH LOGIN offered but no TLS certificate: clients can never authenticate\n");
	assert_not_contains(text, "nobody can send");
	assert_int_equal(warnings, 1);
	free(text);
	conf_free(c);
}

static void test_policy_no_plain_warning_with_certificate(void **state)
{
	(void)state;
	struct conf *c = parse_ok("run-as posthorn\n"
				  SERVER("    listen 127.0.0.1:25\n    auth {\n        mechanisms plain\n    }\n"
					 "    tls {\n        certificate /nonexistent/a.crt\n        key /nonexistent/a.key\n    }\n"));
	int warnings;
	char *text = policy_of(c, &warnings);
	assert_int_equal(warnings, 0);
	free(text);
	conf_free(c);
}

static void test_policy_warns_nobody_can_log_in(void **state)
{
	(void)state;
	struct conf *c = parse_ok("run-as posthorn\n"
				  "server i {\n    protocol imap\n    listen 127.0.0.1:143\n"
				  "    auth {\n        mechanisms plain\n    }\n}\n");
	int warnings;
	char *text = policy_of(c, &warnings);
	assert_contains(text, "warning: server i: no client can authenticate: nobody can log in\n");
	assert_int_equal(warnings, 2);
	free(text);
	conf_free(c);
}

static void test_policy_warns_cleartext_passwords(void **state)
{
	(void)state;
	struct conf *c = parse_ok("run-as posthorn\n"
				  SERVER("    listen 127.0.0.1:587\n    listen [::]:587\n"
					 "    auth {\n        plaintext-requires-tls no\n    }\n"));
	int warnings;
	char *text = policy_of(c, &warnings);
	assert_contains(text, "warning: server s: plaintext-requires-tls is no and it listens on [::]:587: passwords (or, with SCRAM, what they can be guessed from) may cross the network in clear text\n");
	assert_contains(text, "PLAIN, LOGIN, SCRAM-SHA-256, also without TLS");
	assert_int_equal(warnings, 1);
	free(text);
	conf_free(c);

	/* loopback only: nothing crosses the network */
	c = parse_ok("run-as posthorn\n"
		     SERVER("    listen 127.0.0.1:587\n    listen [::1]:587\n"
			    "    auth {\n        plaintext-requires-tls no\n    }\n"));
	text = policy_of(c, &warnings);
	assert_int_equal(warnings, 0);
	free(text);
	conf_free(c);
}

static void test_policy_warns_nobody_may_connect(void **state)
{
	(void)state;
	struct conf *c = parse_ok("run-as posthorn\n"
				  CONNECTION("        default deny\n        deny 192.0.2.0/24\n"));
	int warnings;
	char *text = policy_of(c, &warnings);
	assert_contains(text, "  who may connect: nobody\n");
	assert_contains(text, "warning: server s: connection default is deny and there is no allow rule: nobody may connect\n");
	/* and, without a certificate, no mechanism may be used at all (every
	 * one needs TLS): nobody could send mail anyway */
	assert_contains(text, "warning: server s: AUTH PLAIN offered but no TLS certificate: clients can never authenticate\n");
	assert_contains(text, "warning: server s: anonymous clients may not send mail and no client can authenticate: nobody can send mail\n");
	assert_int_equal(warnings, 3);
	free(text);
	conf_free(c);
}

static void test_policy_warns_root_without_run_as(void **state)
{
	(void)state;
	struct conf *c = parse_ok("domains example.test\nserver mx {\n    listen 127.0.0.1:25\n"
				  "    auth { anonymous yes }\n}\n");
	int warnings;
	char *text = policy_of(c, &warnings);
	if (geteuid() == 0) {
		assert_contains(text, "warning: runs with full privileges: set run-as\n");
		assert_int_equal(warnings, 1);
	} else {
		assert_not_contains(text, "full privileges");
		assert_int_equal(warnings, 0);
	}
	free(text);
	conf_free(c);
}

static void test_policy_warns_readable_key(void **state)
{
	(void)state;
	char *dir = make_tmpdir();
	char *key = write_file(dir, "a.key", "secret\n");
	char *conf_text = xasprintf("run-as posthorn\n"
				    SERVER("    listen 127.0.0.1:25\n"
					   "    tls {\n        certificate a.crt\n        key %s\n    }\n"), key);
	struct conf *c = parse_ok(conf_text);
	int warnings;
	assert_int_equal(chmod(key, 0644), 0);
	char *text = policy_of(c, &warnings);
	char *want = xasprintf("warning: server s: secret file %s may be read by group or others: chmod 600 it\n", key);
	assert_contains(text, want);
	assert_int_equal(warnings, 1);
	free(text);
	assert_int_equal(chmod(key, 0600), 0);
	text = policy_of(c, &warnings);
	assert_int_equal(warnings, 0);
	free(text);
	free(want);
	conf_free(c);
	free(conf_text);
	free(key);
	remove_tree(dir);
}

/* ---- users ldap { ... } ----------------------------------------------------------- */

#define LDAP_BLOCK(body) "domains example.test\nusers ldap {\n" body "}\n" OK_SERVER

static void test_users_ldap_block(void **state)
{
	(void)state;
	struct conf *c = parse_ok(LDAP_BLOCK(
		"    uri ldaps://dc1.example.test ldap://dc2.example.test:3389 ldapi://\n"
		"    ca ldap-ca.pem\n"
		"    bind-dn \"CN=posthorn,OU=Services,DC=example,DC=test\"\n"
		"    bind-password-file /nonexistent/ldap.secret\n"
		"    base \"OU=People,DC=example,DC=test\"\n"
		"    filter \"(&(objectClass=user)(|(mail=%a)(proxyAddresses=smtp:%a)))\"\n"
		"    addresses mail proxyAddresses\n"
		"    principal userPrincipalName\n"
		"    cache 10m\n"));
	const struct conf_ldap *l = c->ldap;
	assert_non_null(l);
	assert_int_equal(l->nuris, 3);
	assert_string_equal(l->uris[1], "ldap://dc2.example.test:3389");
	assert_true(l->starttls);
	assert_string_equal(l->ca, BASEDIR "/ldap-ca.pem");
	assert_string_equal(l->bind_dn, "CN=posthorn,OU=Services,DC=example,DC=test");
	assert_int_equal(l->naddresses, 2);
	assert_string_equal(l->addresses[1], "proxyAddresses");
	assert_string_equal(l->principal, "userPrincipalName");
	assert_int_equal(l->cache, 600);
	/* a directory holds no SCRAM verifiers: not offered */
	assert_int_equal(c->servers[0].auth.mechanisms, MECH_PLAIN | MECH_LOGIN);
	int warnings;
	char *policy = policy_of(c, &warnings);
	assert_contains(policy, "users: from the directory at ldaps://dc1.example.test, "
				"ldap://dc2.example.test:3389, ldapi://");
	assert_contains(policy, "SCRAM-SHA-256 is not offered to directory users");
	free(policy);
	conf_free(c);
}

static void test_users_ldap_defaults(void **state)
{
	(void)state;
	struct conf *c = parse_ok(LDAP_BLOCK("    uri ldap://127.0.0.1\n    base dc=x\n"
					     "    filter (uid=%u)\n"));
	assert_int_equal(c->ldap->naddresses, 1);
	assert_string_equal(c->ldap->addresses[0], "mail");
	assert_int_equal(c->ldap->cache, 300);
	assert_null(c->ldap->bind_dn);
	assert_null(c->ldap->principal);
	conf_free(c);
	c = parse_ok("domains example.test\nusers /var/lib/posthorn/users\n" OK_SERVER);
	assert_null(c->ldap);
	assert_string_equal(c->users, "/var/lib/posthorn/users");
	conf_free(c);
}

static void test_users_ldap_errors(void **state)
{
	(void)state;
	expect_errors(LDAP_BLOCK(""),
		      NAME ":2:1: users ldap block without \"uri\" (e.g. uri ldaps://dc1.example.org)\n"
		      NAME ":2:1: users ldap block without \"base\" (where the users are)\n"
		      NAME ":2:1: users ldap block without \"filter\" (e.g. filter (mail=%a))\n");
	expect_errors(LDAP_BLOCK("    uri ldap://dc1 https://dc2\n    starttls no\n    base dc=x\n"
				 "    filter (mail=%x)\n    bind-dn cn=p\n"),
		      NAME ":3:20: bad LDAP URI \"https://dc2\" (use ldaps://HOST, ldap://HOST or ldapi://)\n"
		      NAME ":6:12: bad filter \"(mail=%x)\": unknown %-sequence (use %a, %u, %d or %%)\n"
		      NAME ":2:1: \"bind-dn\" and \"bind-password-file\" go together\n"
		      NAME ":2:1: ldap://dc1 with \"starttls no\" would send passwords in clear: use "
		      "ldaps://, starttls yes or ldapi://\n");
	expect_errors(LDAP_BLOCK("    uri ldaps://dc1\n    base dc=x\n    filter (mail=*)\n"
				 "    addresses mail 1bad\n"),
		      NAME ":5:12: bad filter \"(mail=*)\": the filter uses neither %a nor %u: "
		      "every address would find one entry\n"
		      NAME ":6:20: bad attribute name \"1bad\" (letters, digits and '-', starting with "
		      "a letter)\n");
	expect_errors(LDAP_BLOCK("    uri ldaps://dc1\n    base dc=x\n    filter (a=%a)(b=%a)\n"),
		      NAME ":5:12: bad filter \"(a=%a)(b=%a)\": more than one filter (join them "
		      "with (&...) or (|...))\n");
	expect_errors("domains example.test\nusers files {\n}\n" OK_SERVER,
		      NAME ":2:7: \"users files { ... }\": only \"users ldap\" takes a block (or write "
		      "users FILE)\n");
	expect_errors("domains example.test\nusers ldap {\n    uri ldaps://dc1\n    base dc=x\n    filter (mail=%a)\n}\n"
		      "server ok {\n    listen 127.0.0.1:2999\n    auth {\n"
		      "        mechanisms scram-sha-256\n    }\n}\n",
		      NAME ":7:1: server ok offers only SCRAM-SHA-256, which users from a directory "
		      "cannot use: add plain or login\n");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_spec_example_globals),
		cmocka_unit_test(test_spec_example_server),
		cmocka_unit_test(test_spec_example_rules),
		cmocka_unit_test(test_global_defaults),
		cmocka_unit_test(test_server_defaults),
		cmocka_unit_test(test_timeout_default_follows_protocol),
		cmocka_unit_test(test_hostname_defaults_to_system_name),
		cmocka_unit_test(test_server_hostname_from_global_given_later),
		cmocka_unit_test(test_protocol_name),
		cmocka_unit_test(test_free_null),
		cmocka_unit_test(test_quota),
		cmocka_unit_test(test_comments_and_blank_lines),
		cmocka_unit_test(test_quoted_values),
		cmocka_unit_test(test_blocks_on_one_line),
		cmocka_unit_test(test_crlf_line_endings),
		cmocka_unit_test(test_tab_counts_one_column),
		cmocka_unit_test(test_unterminated_string),
		cmocka_unit_test(test_unterminated_string_at_end_of_file),
		cmocka_unit_test(test_bad_escape),
		cmocka_unit_test(test_bad_escape_newline_is_unterminated),
		cmocka_unit_test(test_quotes_inside_word),
		cmocka_unit_test(test_brace_without_directive),
		cmocka_unit_test(test_unknown_directive),
		cmocka_unit_test(test_unknown_directive_at_top_level),
		cmocka_unit_test(test_directive_in_wrong_block_hints),
		cmocka_unit_test(test_unknown_block_is_skipped),
		cmocka_unit_test(test_wrong_argument_count),
		cmocka_unit_test(test_proxy_listen),
		cmocka_unit_test(test_proxy_errors),
		cmocka_unit_test(test_block_where_none_is_expected),
		cmocka_unit_test(test_missing_block),
		cmocka_unit_test(test_unterminated_block),
		cmocka_unit_test(test_unterminated_skipped_block),
		cmocka_unit_test(test_stray_close),
		cmocka_unit_test(test_duplicate_directive),
		cmocka_unit_test(test_repeatable_directives),
		cmocka_unit_test(test_multiple_errors_all_reported),
		cmocka_unit_test(test_bad_server_line_still_checks_its_block),
		cmocka_unit_test(test_unprintable_bytes_are_escaped),
		cmocka_unit_test(test_parse_size),
		cmocka_unit_test(test_parse_duration),
		cmocka_unit_test(test_bad_size),
		cmocka_unit_test(test_bad_duration),
		cmocka_unit_test(test_bad_number),
		cmocka_unit_test(test_limits_values),
		cmocka_unit_test(test_bad_bool),
		cmocka_unit_test(test_auth_values),
		cmocka_unit_test(test_unknown_mechanism),
		cmocka_unit_test(test_gssapi_values),
		cmocka_unit_test(test_gssapi_errors),
		cmocka_unit_test(test_bad_lockout),
		cmocka_unit_test(test_bad_lockout_ipv6_prefix),
		cmocka_unit_test(test_probing_limits),
		cmocka_unit_test(test_bad_probing_limits),
		cmocka_unit_test(test_listen_forms),
		cmocka_unit_test(test_bad_listen_address),
		cmocka_unit_test(test_listen_ipv6_needs_brackets),
		cmocka_unit_test(test_bad_port),
		cmocka_unit_test(test_listen_bad_option),
		cmocka_unit_test(test_dns_forms),
		cmocka_unit_test(test_bad_dns),
		cmocka_unit_test(test_rule_forms),
		cmocka_unit_test(test_rule_host_bits_are_masked),
		cmocka_unit_test(test_bad_cidr_prefix),
		cmocka_unit_test(test_noncontiguous_mask),
		cmocka_unit_test(test_bad_mask),
		cmocka_unit_test(test_bad_rule_address),
		cmocka_unit_test(test_bad_domain_rule),
		cmocka_unit_test(test_host_rule),
		cmocka_unit_test(test_bad_host_rule),
		cmocka_unit_test(test_host_refresh),
		cmocka_unit_test(test_bad_connection_default),
		cmocka_unit_test(test_relay_values),
		cmocka_unit_test(test_deny_in_relay),
		cmocka_unit_test(test_domains_normalised),
		cmocka_unit_test(test_bad_domains),
		cmocka_unit_test(test_domain_label_and_name_length),
		cmocka_unit_test(test_is_local_domain),
		cmocka_unit_test(test_bad_hostname),
		cmocka_unit_test(test_server_names),
		cmocka_unit_test(test_bad_protocol),
		cmocka_unit_test(test_run_as),
		cmocka_unit_test(test_relative_paths_resolved),
		cmocka_unit_test(test_basedir_defaults_to_current_folder),
		cmocka_unit_test(test_empty_path),
		cmocka_unit_test(test_tls_values),
		cmocka_unit_test(test_bad_tls_values),
		cmocka_unit_test(test_certificate_without_key),
		cmocka_unit_test(test_key_without_certificate),
		cmocka_unit_test(test_require_without_certificate),
		cmocka_unit_test(test_listen_tls_without_certificate),
		cmocka_unit_test(test_no_server),
		cmocka_unit_test(test_missing_listen),
		cmocka_unit_test(test_missing_listen_not_reported_after_bad_listen),
		cmocka_unit_test(test_domains_required_for_smtp),
		cmocka_unit_test(test_duplicate_server_name),
		cmocka_unit_test(test_two_servers_on_one_address),
		cmocka_unit_test(test_same_address_twice_in_one_server),
		cmocka_unit_test(test_wildcard_overlap),
		cmocka_unit_test(test_no_overlap_across_families_or_ports),
		cmocka_unit_test(test_smarthost_auth_without_smarthost),
		cmocka_unit_test(test_outbound_values),
		cmocka_unit_test(test_bad_outbound_values),
		cmocka_unit_test(test_load_missing_file),
		cmocka_unit_test(test_load_file_with_nul_byte),
		cmocka_unit_test(test_load_file_too_large),
		cmocka_unit_test(test_load_relative_path),
		cmocka_unit_test(test_include_glob),
		cmocka_unit_test(test_include_error_names_included_file),
		cmocka_unit_test(test_include_glob_matching_nothing),
		cmocka_unit_test(test_include_missing_file),
		cmocka_unit_test(test_include_empty_path),
		cmocka_unit_test(test_include_loop),
		cmocka_unit_test(test_include_depth_limit),
		cmocka_unit_test(test_include_relative_to_including_file),
		cmocka_unit_test(test_duplicate_directive_across_include),
		cmocka_unit_test(test_include_inside_block_is_unknown),
		cmocka_unit_test(test_verify_block),
		cmocka_unit_test(test_verify_errors),
		cmocka_unit_test(test_acme_block),
		cmocka_unit_test(test_acme_certificate_needs_block),
		cmocka_unit_test(test_acme_key_after_certificate_acme),
		cmocka_unit_test(test_acme_bad_values),
		cmocka_unit_test(test_acme_challenge_needs_address),
		cmocka_unit_test(test_acme_tls_alpn_01),
		cmocka_unit_test(test_policy_global_lines),
		cmocka_unit_test(test_policy_server_lines),
		cmocka_unit_test(test_policy_tls_and_outbound_details),
		cmocka_unit_test(test_policy_dane_needs_a_loopback_resolver),
		cmocka_unit_test(test_policy_rules_in_order),
		cmocka_unit_test(test_policy_host_rules),
		cmocka_unit_test(test_policy_clean_server_has_no_warnings),
		cmocka_unit_test(test_policy_warns_plain_without_certificate),
		cmocka_unit_test(test_policy_no_plain_warning_with_certificate),
		cmocka_unit_test(test_policy_warns_nobody_can_log_in),
		cmocka_unit_test(test_policy_warns_cleartext_passwords),
		cmocka_unit_test(test_policy_warns_nobody_may_connect),
		cmocka_unit_test(test_policy_warns_root_without_run_as),
		cmocka_unit_test(test_policy_warns_readable_key),
		cmocka_unit_test(test_users_ldap_block),
		cmocka_unit_test(test_users_ldap_defaults),
		cmocka_unit_test(test_users_ldap_errors),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

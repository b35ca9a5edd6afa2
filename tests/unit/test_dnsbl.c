/* Unit tests for dnsbl.c (RFC 5782): the query names of IPv4, IPv6 and
 * IPv4-mapped clients, which A answers list a client, the cleaning of a
 * list's TXT text, the refusal text, and the `dnsbl` rule's parsing. */
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

#include "conf/conf.h"
#include "net/dnsbl.h"

static const struct sockaddr *client(struct sockaddr_storage *ss, const char *text)
{
	memset(ss, 0, sizeof *ss);
	struct sockaddr_in *in = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
	if (inet_pton(AF_INET, text, &in->sin_addr) == 1) {
		in->sin_family = AF_INET;
	} else {
		assert_int_equal(inet_pton(AF_INET6, text, &in6->sin6_addr), 1);
		in6->sin6_family = AF_INET6;
	}
	return (const struct sockaddr *)ss;
}

static void test_query_name_ipv4(void **state)
{
	(void)state;
	struct sockaddr_storage ss;
	char name[DNSBL_QUERY_MAX];
	/* RFC 5782 §2.1: 192.0.2.99 is looked up as 99.2.0.192.ZONE */
	assert_true(dnsbl_query_name(client(&ss, "192.0.2.99"), "bl.example", name, sizeof name));
	assert_string_equal(name, "99.2.0.192.bl.example");
	/* an IPv4-mapped client is an IPv4 client */
	assert_true(dnsbl_query_name(client(&ss, "::ffff:192.0.2.99"), "bl.example", name,
				     sizeof name));
	assert_string_equal(name, "99.2.0.192.bl.example");
}

static void test_query_name_ipv6(void **state)
{
	(void)state;
	struct sockaddr_storage ss;
	char name[DNSBL_QUERY_MAX];
	/* RFC 5782 §2.4's example: 2001:db8:1:2:3:4:567:89ab */
	assert_true(dnsbl_query_name(client(&ss, "2001:db8:1:2:3:4:567:89ab"), "ugly.example.com",
				     name, sizeof name));
	assert_string_equal(name, "b.a.9.8.7.6.5.0.4.0.0.0.3.0.0.0.2.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2"
				  ".ugly.example.com");
}

static void test_query_name_does_not_fit(void **state)
{
	(void)state;
	struct sockaddr_storage ss;
	char name[20];
	assert_false(dnsbl_query_name(client(&ss, "192.0.2.99"), "a-long-zone.example", name,
				      sizeof name));
	assert_false(dnsbl_query_name(client(&ss, "192.0.2.99"), "", name, sizeof name));
	struct sockaddr_storage unix_ss = {.ss_family = AF_UNIX};
	assert_false(dnsbl_query_name((struct sockaddr *)&unix_ss, "bl.example", name, sizeof name));
}

static struct dns_addr a4(uint8_t a, uint8_t b, uint8_t c, uint8_t d)
{
	struct dns_addr x = {.family = AF_INET, .addr = {a, b, c, d}};
	return x;
}

static void test_answers_that_count(void **state)
{
	(void)state;
	struct conf_rule any = {.kind = RULE_DNSBL};
	struct dns_addr two = a4(127, 0, 0, 2), four = a4(127, 0, 0, 4), ten = a4(10, 0, 0, 2);
	struct dns_addr six = {.family = AF_INET6, .addr = {127}};
	assert_true(dnsbl_answer_counts(&any, &two));
	assert_true(dnsbl_answer_counts(&any, &four));
	/* outside 127.0.0.0/8, or not an A answer: lists nobody */
	assert_false(dnsbl_answer_counts(&any, &ten));
	assert_false(dnsbl_answer_counts(&any, &six));
	uint8_t only[1][4] = {{127, 0, 0, 4}};
	struct conf_rule some = {.kind = RULE_DNSBL, .answers = only, .nanswers = 1};
	assert_false(dnsbl_answer_counts(&some, &two));
	assert_true(dnsbl_answer_counts(&some, &four));
}

static void test_reason_is_cleaned_and_cut_visibly(void **state)
{
	(void)state;
	char out[DNSBL_REASON_MAX];
	static const char odd[] = "bad\r\nline\0x\x80";
	dnsbl_reason_clean(odd, sizeof odd - 1, out, sizeof out);
	assert_string_equal(out, "bad??line?x?");
	char big[400];
	memset(big, 'a', sizeof big);
	dnsbl_reason_clean(big, sizeof big, out, sizeof out);
	assert_int_equal(strlen(out), sizeof out - 1);
	assert_string_equal(out + strlen(out) - 3, "...");
	char tiny[4];
	dnsbl_reason_clean("abcdef", 6, tiny, sizeof tiny);
	assert_string_equal(tiny, "...");
}

static void test_refusal_text(void **state)
{
	(void)state;
	char out[DNSBL_REFUSAL_MAX];
	dnsbl_refusal_text("192.0.2.99", "bl.example", "", out, sizeof out);
	assert_string_equal(out, "Service unavailable; client [192.0.2.99] blocked using bl.example");
	dnsbl_refusal_text("2001:db8::1", "bl.example", "see https://bl.example/2001:db8::1", out,
			   sizeof out);
	assert_string_equal(out, "Service unavailable; client [2001:db8::1] blocked using "
				 "bl.example; see https://bl.example/2001:db8::1");
}

static int parse(const char *body, struct conf **out, char **errors)
{
	char *text;
	assert_true(asprintf(&text,
			     "domains example.test\n"
			     "server s {\n"
			     "    listen 127.0.0.1:25\n"
			     "    connection {\n%s    }\n"
			     "}\n",
			     body) > 0);
	size_t len = 0;
	FILE *f = open_memstream(errors, &len);
	assert_non_null(f);
	int n = conf_parse_string("t.conf", text, "/etc/posthorn", out, f);
	fclose(f);
	free(text);
	return n;
}

static void test_rule_parsing(void **state)
{
	(void)state;
	struct conf *c = NULL;
	char *errors = NULL;
	assert_int_equal(parse("        deny dnsbl ZEN.Example.\n"
			       "        allow dnsbl wl.example 127.0.0.2 127.0.0.10\n",
			       &c, &errors), 0);
	const struct conf_connection *cn = &c->servers[0].connection;
	assert_int_equal(cn->nrules, 2);
	assert_int_equal(cn->rules[0].kind, RULE_DNSBL);
	assert_int_equal(cn->rules[0].action, ACTION_DENY);
	assert_string_equal(cn->rules[0].domain, "zen.example");
	assert_int_equal(cn->rules[0].nanswers, 0);
	assert_int_equal(cn->rules[1].action, ACTION_ALLOW);
	assert_int_equal(cn->rules[1].nanswers, 2);
	assert_memory_equal(cn->rules[1].answers[1], ((uint8_t[]){127, 0, 0, 10}), 4);
	conf_free(c);
	free(errors);
}

static void test_rule_errors(void **state)
{
	(void)state;
	struct conf *c = NULL;
	char *errors = NULL;
	assert_int_equal(parse("        deny dnsbl\n"
			       "        deny dnsbl bad_zone!\n"
			       "        deny dnsbl bl.example 10.0.0.2 127.0.0.2 nonsense\n",
			       &c, &errors), 4);
	assert_null(c);
	assert_string_equal(errors,
			    "t.conf:5:14: \"dnsbl\" needs a zone: deny dnsbl ZONE [ANSWER...]\n"
			    "t.conf:6:20: bad block list zone name \"bad_zone!\"\n"
			    "t.conf:7:31: bad block list answer \"10.0.0.2\" (use an address in "
			    "127.0.0.0/8, e.g. 127.0.0.2)\n"
			    "t.conf:7:50: bad block list answer \"nonsense\" (use an address in "
			    "127.0.0.0/8, e.g. 127.0.0.2)\n");
	free(errors);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_query_name_ipv4),
		cmocka_unit_test(test_query_name_ipv6),
		cmocka_unit_test(test_query_name_does_not_fit),
		cmocka_unit_test(test_answers_that_count),
		cmocka_unit_test(test_reason_is_cleaned_and_cut_visibly),
		cmocka_unit_test(test_refusal_text),
		cmocka_unit_test(test_rule_parsing),
		cmocka_unit_test(test_rule_errors),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Unit tests for message_keys: the sort and thread keys of a header
 * (RFC 5256 §3, RFC 5957): decoded subject, first address of each field
 * (a group by its name), Date, Message-ID, References with In-Reply-To
 * as its fallback, and reading only the header of a file. */
#define _GNU_SOURCE /* nftw (unitfs.h) */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "store/message.h"
#include "store/message_keys.h"
#include "unitfs.h"

static int setup(void **state)
{
	message_init();
	return 0;
}

static void parse(const char *h, struct message_keys *k)
{
	message_keys_parse(h, strlen(h), k);
}

static void test_fields(void **state)
{
	struct message_keys k;
	parse("Subject: =?iso-8859-1?q?R=E9sum=E9?=\n"
	      "  of the week\n"
	      "From: =?utf-8?q?J=C3=B6rg?= <Jorg.X@Example.org>\n"
	      "To: team: a@b.c, d@e.f;\n"
	      "Cc: plain@example.net\n"
	      "Date: Fri, 22 Feb 2008 02:00:00 +0200\n"
	      "Message-ID: <1@example.org>\n"
	      "Subject: second subject is ignored\n"
	      "\n"
	      "From: a body line is no field\n", &k);
	assert_string_equal(k.subject, "R\xc3\xa9sum\xc3\xa9  of the week");
	assert_string_equal(k.from.mailbox, "Jorg.X");
	assert_string_equal(k.from.display, "J\xc3\xb6rg");
	assert_string_equal(k.to.mailbox, "team");           /* a group: its name */
	assert_string_equal(k.to.display, "team");
	assert_string_equal(k.cc.mailbox, "plain");
	assert_string_equal(k.cc.display, "plain@example.net"); /* no name: the address */
	assert_true(k.has_date);
	assert_int_equal(k.date, 1203638400);                 /* 2008-02-22 00:00:00 UTC */
	assert_string_equal(k.message_id, "1@example.org");
	assert_int_equal(k.nrefs, 0);
	assert_true(message_keys_size(&k) > sizeof k);
	message_keys_free(&k);
}

static void test_absent(void **state)
{
	struct message_keys k;
	parse("X-Other: 1\r\nDate: not a date\r\n\r\n", &k);
	assert_null(k.subject);
	assert_null(k.from.mailbox);
	assert_null(k.to.display);
	assert_false(k.has_date);
	assert_null(k.message_id);
	assert_null(k.refs);
	message_keys_free(&k);
}

static void test_references(void **state)
{
	struct message_keys k;
	parse("In-Reply-To: <x@y>\nReferences: <a@b>\n <c@d> <e@f>\n\n", &k);
	assert_int_equal(k.nrefs, 3);
	assert_string_equal(k.refs[0], "a@b");
	assert_string_equal(k.refs[2], "e@f");
	message_keys_free(&k);
	/* RFC 5256 §3 step 1: no References, In-Reply-To's first ID */
	parse("In-Reply-To: <x@y> <z@y>\n\n", &k);
	assert_int_equal(k.nrefs, 1);
	assert_string_equal(k.refs[0], "x@y");
	message_keys_free(&k);
	/* more than MESSAGE_KEYS_REFS_MAX: the last ones are kept */
	char h[8192] = "References:";
	for (int i = 0; i < MESSAGE_KEYS_REFS_MAX + 10; i++) {
		char id[32];
		snprintf(id, sizeof id, " <%d@x>", i);
		strcat(h, id);
	}
	strcat(h, "\n\n");
	parse(h, &k);
	assert_int_equal(k.nrefs, MESSAGE_KEYS_REFS_MAX);
	assert_string_equal(k.refs[0], "10@x");
	message_keys_free(&k);
}

static void test_read(void **state)
{
	char dir[] = "/tmp/test_message_keys.XXXXXX";
	assert_non_null(mkdtemp(dir));
	char path[256];
	snprintf(path, sizeof path, "%s/msg", dir);
	const char *msg = "Subject: from the file\nMessage-ID: <f@g>\n\nSubject: body\n";
	write_file(path, msg, strlen(msg));
	struct message_keys k;
	char err[256];
	assert_int_equal(message_keys_read(path, &k, err, sizeof err), 0);
	assert_string_equal(k.subject, "from the file");
	assert_string_equal(k.message_id, "f@g");
	message_keys_free(&k);
	snprintf(path, sizeof path, "%s/gone", dir);
	assert_int_equal(message_keys_read(path, &k, err, sizeof err), -1);
	assert_int_equal(errno, ENOENT);
	assert_int_equal(rm_tree(dir), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_fields),
		cmocka_unit_test(test_absent),
		cmocka_unit_test(test_references),
		cmocka_unit_test(test_read),
	};
	return cmocka_run_group_tests(tests, setup, NULL);
}

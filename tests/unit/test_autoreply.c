/* Unit tests for autoreply.c: the original's header as the rules see it
 * (unfolding, first Message-ID, recipients from To/Cc/Bcc/Resent-*), each
 * never-reply rule of RFC 3834 §2 and RFC 5230 §4.5, and the reply's
 * fields (RFC 3834 §3: Auto-Submitted, In-Reply-To, References, Subject). */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "queue/autoreply.h"

static const char *const bob[2] = {"bob@example.test", "sales@example.test"};

static void parse(const char *text, struct autoreply_header *h)
{
	autoreply_header_parse(text, strlen(text), h);
}

static void test_header_fields(void **state)
{
	(void)state;
	struct autoreply_header h;
	parse("Received: from x\r\n"
	      "Subject: Lunch\r\n\ton Friday?\r\n"
	      "Message-ID: <m1@example.net>\r\n"
	      "Message-ID: <second@example.net>\r\n"
	      "References: <m0@example.net>\r\n <a@example.net>\r\n"
	      "To: Team <team@example.test>\r\n"
	      "Cc: \"Bob\" <bob@example.test>\r\n"
	      "\r\n"
	      "List-Id: in the body, not a field\r\n",
	      &h);
	assert_string_equal(h.subject, "Lunch on Friday?");
	assert_string_equal(h.message_id, "<m1@example.net>");
	assert_string_equal(h.references, "<m0@example.net> <a@example.net>");
	assert_string_equal(h.recipients, "Team <team@example.test>,\"Bob\" <bob@example.test>");
	assert_false(h.list);
	assert_null(autoreply_refusal("carol@example.net", bob, 2, &h));
	autoreply_header_clear(&h);
	/* LF line ends work the same */
	parse("To: bob@example.test\nSubject: x\n\n", &h);
	assert_string_equal(h.recipients, "bob@example.test");
	assert_null(autoreply_refusal("carol@example.net", bob, 2, &h));
	autoreply_header_clear(&h);
}

static void test_never_reply(void **state)
{
	(void)state;
	static const struct {
		const char *sender, *header, *why;
	} cases[] = {
		{"", "To: bob@example.test\r\n", "null sender"},
		{"MAILER-DAEMON@example.net", "To: bob@example.test\r\n", "MAILER-DAEMON"},
		{"owner-team@example.net", "To: bob@example.test\r\n", "owner-"},
		{"team-request@example.net", "To: bob@example.test\r\n", "-request"},
		{"c@example.net", "To: bob@example.test\r\nAuto-Submitted: auto-replied\r\n",
		 "Auto-Submitted"},
		{"c@example.net", "To: bob@example.test\r\nauto-submitted: AUTO-GENERATED (x)\r\n",
		 "Auto-Submitted"},
		{"c@example.net", "To: bob@example.test\r\nList-Id: <t.example>\r\n", "List-"},
		{"c@example.net", "To: bob@example.test\r\nList-Post: <mailto:t@x>\r\n", "List-"},
		{"c@example.net", "To: bob@example.test\r\nPrecedence: list\r\n", "Precedence"},
		{"c@example.net", "To: bob@example.test\r\nPrecedence:  Bulk\r\n", "Precedence"},
		{"c@example.net", "To: bob@example.test\r\nPrecedence: junk\r\n", "Precedence"},
		/* the address must stand alone, not inside another */
		{"c@example.net", "To: xbob@example.test, bob@example.testing\r\n", "not in To"},
		{"c@example.net", "Subject: none\r\n", "not in To"},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		struct autoreply_header h;
		parse(cases[i].header, &h);
		const char *why = autoreply_refusal(cases[i].sender, bob, 2, &h);
		if (!why || !strstr(why, cases[i].why))
			fail_msg("case %zu: %s", i, why ? why : "(reply)");
		autoreply_header_clear(&h);
	}
}

static void test_reply_allowed(void **state)
{
	(void)state;
	static const char *const headers[] = {
		"To: BOB@Example.Test\r\nAuto-Submitted: no\r\n",
		"To: team@example.test\r\nBcc: bob@example.test\r\n",
		"Resent-To: <sales@example.test>\r\nPrecedence: first-class\r\n",
		"Cc: a@example.net,bob@example.test\r\n",
	};
	for (size_t i = 0; i < sizeof headers / sizeof headers[0]; i++) {
		struct autoreply_header h;
		parse(headers[i], &h);
		const char *why = autoreply_refusal("carol@example.net", bob, 2, &h);
		if (why)
			fail_msg("case %zu: %s", i, why);
		autoreply_header_clear(&h);
	}
}

static char *compose(const char *header, const char *subject, size_t *len)
{
	struct autoreply_header h;
	parse(header, &h);
	struct autoreply_msg m = {.from = "bob@example.test", .to = "carol@example.net",
				  .subject = subject, .text = "Away.\nBack Monday.\n",
				  .message_id = "<r1@example.test>", .now = 1767225600, .orig = &h};
	char *r = autoreply_compose(&m, len);
	autoreply_header_clear(&h);
	return r;
}

static void test_reply_fields(void **state)
{
	(void)state;
	size_t len;
	char *r = compose("Subject: Lunch\r\nMessage-ID: <m1@x>\r\nReferences: <m0@x>\r\n", NULL,
			  &len);
	assert_string_equal(r, "From: <bob@example.test>\r\n"
			       "To: <carol@example.net>\r\n"
			       "Subject: Auto: Lunch\r\n"
			       "Date: Thu, 01 Jan 2026 00:00:00 +0000\r\n"
			       "Message-ID: <r1@example.test>\r\n"
			       "In-Reply-To: <m1@x>\r\n"
			       "References: <m0@x>\r\n <m1@x>\r\n"
			       "Auto-Submitted: auto-replied\r\n"
			       "MIME-Version: 1.0\r\n"
			       "Content-Type: text/plain; charset=us-ascii\r\n"
			       "Content-Transfer-Encoding: 7bit\r\n"
			       "\r\n"
			       "Away.\r\nBack Monday.\r\n");
	assert_int_equal(len, strlen(r));
	free(r);
	/* no Message-ID: nothing to refer to; the setting's subject, encoded */
	r = compose("To: bob@example.test\r\n", "Abwesend bis M\xc3\xa4rz", &len);
	assert_non_null(strstr(r, "\r\nSubject: =?utf-8?B?QWJ3ZXNlbmQgYmlzIE3DpHJ6?=\r\n"));
	assert_null(strstr(r, "In-Reply-To"));
	assert_null(strstr(r, "References"));
	free(r);
	/* no subject at all */
	r = compose("To: bob@example.test\r\n", NULL, &len);
	assert_non_null(strstr(r, "\r\nSubject: Auto: Automatic reply\r\n"));
	free(r);
}

static void test_long_fields_stay_in_bounds(void **state)
{
	(void)state;
	char *big = malloc(3 * 1024);
	memset(big, 'a', 3 * 1024 - 1);
	big[3 * 1024 - 1] = '\0';
	char *header = NULL;
	assert_true(asprintf(&header, "Subject: %s\r\nMessage-ID: <%s>\r\nReferences: <%s> <ok@x>\r\n",
			     big, big, big) > 0);
	size_t len;
	char *r = compose(header, NULL, &len);
	/* the subject cut, the long ids not referred to */
	for (const char *line = r; line < r + len;) {
		const char *end = strstr(line, "\r\n");
		assert_non_null(end);
		assert_true(end - line <= 998);
		line = end + 2;
	}
	assert_null(strstr(r, "In-Reply-To"));
	free(r);
	free(header);
	free(big);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_header_fields),
		cmocka_unit_test(test_never_reply),
		cmocka_unit_test(test_reply_allowed),
		cmocka_unit_test(test_reply_fields),
		cmocka_unit_test(test_long_fields_stay_in_bounds),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Unit tests for imap_notify's parser: NOTIFY NONE and NOTIFY SET [STATUS]
 * with its filters and events (RFC 5465 §3, §6), good and refused forms
 * from a table. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <event2/buffer.h>

#include "proto/imap/imap_notify.h"
#include "proto/imap/imap_parse.h"

/* The command "t NOTIFY <line>" as the parser makes it. */
static struct imap_command *parse(const char *line)
{
	struct imap_parser *p = imap_parser_new();
	struct evbuffer *in = evbuffer_new();
	assert_non_null(in);
	char buf[1024];
	int n = snprintf(buf, sizeof buf, "t NOTIFY%s%s\r\n", *line ? " " : "", line);
	assert_true(n > 0 && (size_t)n < sizeof buf);
	assert_int_equal(evbuffer_add(in, buf, (size_t)n), 0);
	struct imap_command *c = NULL;
	assert_int_equal(imap_parse_feed(p, in, &c), IMAP_PARSE_COMMAND);
	imap_parser_free(p);
	evbuffer_free(in);
	return c;
}

#define NEW IMAP_NOTIFY_MESSAGE_NEW
#define EXP IMAP_NOTIFY_MESSAGE_EXPUNGE
#define FLG IMAP_NOTIFY_FLAG_CHANGE
#define MBN IMAP_NOTIFY_MAILBOX_NAME
#define SUB IMAP_NOTIFY_SUBSCRIPTION_CHANGE

static const struct {
	const char *line;
	enum imap_notify_parse_result result;
	bool none, status;
	size_t ngroups;
	/* the first group */
	enum imap_notify_filter filter;
	unsigned events;
	size_t nnames;
	const char *name0;
	unsigned fetch;
} cases[] = {
	{"NONE", IMAP_NOTIFY_PARSE_OK, true, false, 0, 0, 0, 0, NULL, 0},
	{"none", IMAP_NOTIFY_PARSE_OK, true, false, 0, 0, 0, 0, NULL, 0},
	{"SET (SELECTED (MessageNew MessageExpunge))", IMAP_NOTIFY_PARSE_OK, false, false, 1,
	 IMAP_NOTIFY_SELECTED, NEW | EXP, 0, NULL, 0},
	{"set status (selected-delayed (MessageNew MessageExpunge FlagChange))",
	 IMAP_NOTIFY_PARSE_OK, false, true, 1, IMAP_NOTIFY_SELECTED_DELAYED, NEW | EXP | FLG, 0,
	 NULL, 0},
	{"SET (SELECTED (MessageNew (UID FLAGS RFC822.SIZE INTERNALDATE) MessageExpunge)) "
	 "(PERSONAL (MailboxName SubscriptionChange))",
	 IMAP_NOTIFY_PARSE_OK, false, false, 2, IMAP_NOTIFY_SELECTED, NEW | EXP, 0, NULL,
	 IMAP_NOTIFY_FETCH_UID | IMAP_NOTIFY_FETCH_FLAGS | IMAP_NOTIFY_FETCH_SIZE |
	     IMAP_NOTIFY_FETCH_INTERNALDATE},
	{"SET STATUS (MAILBOXES Lists (MessageExpunge))", IMAP_NOTIFY_PARSE_OK, false, true, 1,
	 IMAP_NOTIFY_MAILBOXES, EXP, 1, "Lists", 0},
	{"SET (MAILBOXES (a \"b c\" INBOX) (MessageNew))", IMAP_NOTIFY_PARSE_OK, false, false, 1,
	 IMAP_NOTIFY_MAILBOXES, NEW, 3, "a", 0},
	{"SET (SUBTREE Work (FlagChange))", IMAP_NOTIFY_PARSE_OK, false, false, 1,
	 IMAP_NOTIFY_SUBTREE, FLG, 1, "Work", 0},
	{"SET (INBOXES (MessageNew MessageExpunge)) (SUBSCRIBED NONE)", IMAP_NOTIFY_PARSE_OK, false,
	 false, 2, IMAP_NOTIFY_INBOXES, NEW | EXP, 0, NULL, 0},
	{"SET (SELECTED NONE)", IMAP_NOTIFY_PARSE_OK, false, false, 1, IMAP_NOTIFY_SELECTED, 0, 0,
	 NULL, 0},
	/* refused: syntax */
	{"", IMAP_NOTIFY_PARSE_BAD, false, false, 0, 0, 0, 0, NULL, 0},
	{"SET", IMAP_NOTIFY_PARSE_BAD, false, false, 0, 0, 0, 0, NULL, 0},
	{"SET STATUS", IMAP_NOTIFY_PARSE_BAD, false, false, 0, 0, 0, 0, NULL, 0},
	{"NONE extra", IMAP_NOTIFY_PARSE_BAD, false, false, 0, 0, 0, 0, NULL, 0},
	{"RESET (SELECTED (MessageNew))", IMAP_NOTIFY_PARSE_BAD, false, false, 0, 0, 0, 0, NULL, 0},
	{"SET SELECTED (MessageNew)", IMAP_NOTIFY_PARSE_BAD, false, false, 0, 0, 0, 0, NULL, 0},
	{"SET (EVERYWHERE (MessageNew))", IMAP_NOTIFY_PARSE_BAD, false, false, 0, 0, 0, 0, NULL, 0},
	{"SET (SELECTED)", IMAP_NOTIFY_PARSE_BAD, false, false, 0, 0, 0, 0, NULL, 0},
	{"SET (SELECTED ())", IMAP_NOTIFY_PARSE_BAD, false, false, 0, 0, 0, 0, NULL, 0},
	{"SET (SELECTED (MessageNew) extra)", IMAP_NOTIFY_PARSE_BAD, false, false, 0, 0, 0, 0, NULL,
	 0},
	{"SET (MAILBOXES (MessageNew))", IMAP_NOTIFY_PARSE_BAD, false, false, 0, 0, 0, 0, NULL, 0},
	{"SET (MAILBOXES () (MessageNew))", IMAP_NOTIFY_PARSE_BAD, false, false, 0, 0, 0, 0, NULL,
	 0},
	{"SET (SUBTREE \"\" (MessageNew))", IMAP_NOTIFY_PARSE_BAD, false, false, 0, 0, 0, 0, NULL,
	 0},
	{"SET (SELECTED (\"MessageNew\"))", IMAP_NOTIFY_PARSE_BAD, false, false, 0, 0, 0, 0, NULL,
	 0},
	/* fetch-att: only for the selected folder, only what is offered */
	{"SET (PERSONAL (MessageNew (UID) MessageExpunge))", IMAP_NOTIFY_PARSE_BAD, false, false, 0,
	 0, 0, 0, NULL, 0},
	{"SET (SELECTED (MessageNew (BODY[]) MessageExpunge))", IMAP_NOTIFY_PARSE_BAD, false, false,
	 0, 0, 0, 0, NULL, 0},
	{"SET (SELECTED (MessageNew () MessageExpunge))", IMAP_NOTIFY_PARSE_BAD, false, false, 0, 0,
	 0, 0, NULL, 0},
	/* RFC 5465 §6: one of SELECTED and SELECTED-DELAYED */
	{"SET (SELECTED (MessageNew)) (SELECTED-DELAYED (MessageNew))", IMAP_NOTIFY_PARSE_BAD, false,
	 false, 0, 0, 0, 0, NULL, 0},
	/* refused: events not offered (RFC 5465 §5: NO [BADEVENT]) */
	{"SET (SELECTED (MessageNew AnnotationChange))", IMAP_NOTIFY_PARSE_BADEVENT, false, false, 0,
	 0, 0, 0, NULL, 0},
	{"SET (PERSONAL (MailboxMetadata))", IMAP_NOTIFY_PARSE_BADEVENT, false, false, 0, 0, 0, 0,
	 NULL, 0},
	{"SET (PERSONAL (ServerMetadata))", IMAP_NOTIFY_PARSE_BADEVENT, false, false, 0, 0, 0, 0,
	 NULL, 0},
	{"SET (PERSONAL (MessageGone))", IMAP_NOTIFY_PARSE_BADEVENT, false, false, 0, 0, 0, 0, NULL,
	 0},
};

static void test_notify_parse_table(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		struct imap_command *c = parse(cases[i].line);
		struct imap_notify_spec spec;
		const char *why = NULL;
		enum imap_notify_parse_result r = imap_notify_parse(&c->args, &spec, &why);
		if (r != cases[i].result)
			fail_msg("case %zu \"%s\": result %d, want %d (%s)", i, cases[i].line, (int)r,
				 (int)cases[i].result, why ? why : "");
		if (r == IMAP_NOTIFY_PARSE_OK) {
			assert_int_equal(spec.none, cases[i].none);
			assert_int_equal(spec.status, cases[i].status);
			assert_int_equal(spec.ngroups, cases[i].ngroups);
			assert_int_equal(spec.fetch, cases[i].fetch);
			if (spec.ngroups) {
				assert_int_equal(spec.groups[0].filter, cases[i].filter);
				assert_int_equal(spec.groups[0].events, cases[i].events);
				assert_int_equal(spec.groups[0].nnames, cases[i].nnames);
				if (cases[i].name0)
					assert_string_equal(spec.groups[0].names[0], cases[i].name0);
			}
		} else {
			assert_non_null(why);
		}
		imap_notify_spec_free(&spec);
		imap_command_free(c);
	}
}

/* Bounded: more event groups or mailbox names than the limits are BAD. */
static void test_notify_parse_limits(void **state)
{
	(void)state;
	char line[4096] = "SET";
	for (int i = 0; i <= IMAP_NOTIFY_GROUPS_MAX; i++)
		strcat(line, " (INBOXES (MessageNew))");
	struct imap_command *c = parse(line);
	struct imap_notify_spec spec;
	const char *why;
	assert_int_equal(imap_notify_parse(&c->args, &spec, &why), IMAP_NOTIFY_PARSE_BAD);
	imap_notify_spec_free(&spec);
	imap_command_free(c);

	char names[2048] = "SET (MAILBOXES (";
	for (int i = 0; i <= IMAP_NOTIFY_NAMES_MAX; i++) {
		char one[16];
		snprintf(one, sizeof one, "%sf%d", i ? " " : "", i);
		strcat(names, one);
	}
	strcat(names, ") (MessageNew))");
	c = parse(names);
	assert_int_equal(imap_notify_parse(&c->args, &spec, &why), IMAP_NOTIFY_PARSE_BAD);
	imap_notify_spec_free(&spec);
	imap_command_free(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_notify_parse_table),
		cmocka_unit_test(test_notify_parse_limits),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

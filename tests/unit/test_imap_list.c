/* Unit tests for imap_list.c's LIST-EXTENDED options (RFC 5258 §3) and
 * LIST-STATUS (RFC 5819), on arguments as the parser (imap_parse.c) makes
 * them from a command line: a table of lines and what each asks for. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>
#include <event2/buffer.h>

#include "proto/imap/imap_list.h"
#include "proto/imap/imap_parse.h"

/* The command of line, parsed (after login). */
static struct imap_command *parse(const char *line)
{
	struct imap_parser *p = imap_parser_new();
	imap_parser_set_authenticated(p, true);
	struct evbuffer *in = evbuffer_new();
	assert_non_null(in);
	assert_int_equal(evbuffer_add(in, line, strlen(line)), 0);
	struct imap_command *c = NULL;
	assert_int_equal(imap_parse_feed(p, in, &c), IMAP_PARSE_COMMAND);
	evbuffer_free(in);
	imap_parser_free(p);
	return c;
}

/* The options of "A LIST <sel> "" * RETURN <ret>" (sel, ret: "" for none). */
static const char *options(const char *sel, const char *ret, struct imap_list_opts *o,
			   struct imap_command **c)
{
	char line[512];
	int n = snprintf(line, sizeof line, "A LIST %s%s\"\" *%s%s\r\n", sel, *sel ? " " : "",
			 *ret ? " RETURN " : "", ret);
	assert_true(n > 0 && (size_t)n < sizeof line);
	*c = parse(line);
	const struct imap_args *s = *sel ? imap_arg_list(imap_args_at(&(*c)->args, 0)) : NULL;
	const struct imap_args *r =
	    *ret ? imap_arg_list(imap_args_at(&(*c)->args, (*c)->args.n - 1)) : NULL;
	return imap_list_options(s, r, o);
}

static void test_list_options(void **state)
{
	static const struct {
		const char *sel, *ret;
		bool ok, subscribed, recursive, special, ret_subscribed, ret_children, status;
	} cases[] = {
		{"", "", true, false, false, false, false, false, false},
		{"()", "()", true, false, false, false, false, false, false},
		{"(SUBSCRIBED)", "", true, true, false, false, false, false, false},
		{"(subscribed recursivematch)", "(children)", true, true, true, false, false, true, false},
		{"(SPECIAL-USE RECURSIVEMATCH)", "", true, false, true, true, false, false, false},
		{"(REMOTE)", "(SUBSCRIBED SPECIAL-USE)", true, false, false, false, true, false, false},
		{"", "(STATUS (MESSAGES UNSEEN) CHILDREN)", true, false, false, false, false, true, true},
		{"(RECURSIVEMATCH)", "", false, false, false, false, false, false, false},
		{"(RECURSIVEMATCH REMOTE)", "", false, false, false, false, false, false, false},
		{"(IMAPTEST)", "", false, false, false, false, false, false, false},
		{"", "(IMAPTEST)", false, false, false, false, false, false, false},
		{"", "(STATUS)", false, false, false, false, false, false, false},
		{"", "(STATUS ())", false, false, false, false, false, false, false},
		{"", "(STATUS (BOGUS))", false, false, false, false, false, false, false},
		{"", "(STATUS MESSAGES)", false, false, false, false, false, false, false},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		struct imap_list_opts o;
		struct imap_command *c;
		const char *err = options(cases[i].sel, cases[i].ret, &o, &c);
		if ((err == NULL) != cases[i].ok)
			fail_msg("case %zu (%s RETURN %s): %s", i, cases[i].sel, cases[i].ret,
				 err ? err : "accepted");
		if (!err && (o.subscribed_only != cases[i].subscribed ||
			     o.recursive != cases[i].recursive || o.special_only != cases[i].special ||
			     o.ret_subscribed != cases[i].ret_subscribed ||
			     o.ret_children != cases[i].ret_children || (o.status != NULL) != cases[i].status))
			fail_msg("case %zu (%s RETURN %s): wrong options", i, cases[i].sel, cases[i].ret);
		if (!err && o.status)
			assert_int_equal(o.status->n, 2);
		imap_command_free(c);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_list_options),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Unit tests for store/vacation.c: the setting's file (format, parse,
 * every bad line), dates and when the setting is in force, and the record
 * of senders answered (once per days, case-insensitive, bounded, a new
 * setting forgets it). */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "store/vacation.h"
#include "unitfs.h"

static char dir[64];

static int setup(void **state)
{
	(void)state;
	strcpy(dir, "/tmp/test_vacation.XXXXXX");
	return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
	(void)state;
	return rm_tree(dir);
}

static void test_format_and_parse(void **state)
{
	(void)state;
	struct vacation v = {.on = true, .days = 3, .until = "2026-12-31"};
	v.subject = strdup("Away");
	v.message = strdup("Back soon.\n");
	size_t len;
	char *text = vacation_format(&v, &len);
	assert_string_equal(text, "posthorn-vacation 1\nstate on\ndays 3\nuntil 2026-12-31\n"
				  "subject Away\n\nBack soon.\n");
	struct vacation w;
	char err[200];
	assert_int_equal(vacation_parse(text, len, &w, err, sizeof err), 0);
	assert_true(w.on);
	assert_int_equal(w.days, 3);
	assert_string_equal(w.until, "2026-12-31");
	assert_string_equal(w.subject, "Away");
	assert_string_equal(w.message, "Back soon.\n");
	vacation_clear(&w);
	free(text);
	vacation_clear(&v);
	/* the optional lines left out: defaults */
	static const char plain[] = "posthorn-vacation 1\nstate off\n\nx\n";
	assert_int_equal(vacation_parse(plain, strlen(plain), &w, err, sizeof err), 0);
	assert_false(w.on);
	assert_int_equal(w.days, VACATION_DAYS_DEFAULT);
	assert_null(w.subject);
	assert_string_equal(w.until, "");
	vacation_clear(&w);
}

static void test_bad_settings(void **state)
{
	(void)state;
	static const char *const bad[] = {
		"",
		"posthorn-vacation 2\nstate on\n\nx",
		"posthorn-vacation 1\nstate maybe\n\nx",
		"posthorn-vacation 1\ndays 0\n\nx",
		"posthorn-vacation 1\ndays 366\n\nx",
		"posthorn-vacation 1\nuntil 2026-02-30\n\nx",
		"posthorn-vacation 1\nsubject a\tb\n\nx",
		"posthorn-vacation 1\ncolour red\n\nx",
		"posthorn-vacation 1\nstate on\n",
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		struct vacation v;
		char err[200] = "";
		if (vacation_parse(bad[i], strlen(bad[i]), &v, err, sizeof err) != -1)
			fail_msg("case %zu parsed", i);
		assert_true(err[0] != '\0');
		assert_null(v.message);
	}
}

static void test_dates_and_force(void **state)
{
	(void)state;
	time_t end;
	assert_true(vacation_parse_date("2026-01-01", &end));
	assert_int_equal(end, 1767225600 + 86400);
	assert_true(vacation_parse_date("2028-02-29", &end));
	assert_false(vacation_parse_date("2027-02-29", &end));
	assert_false(vacation_parse_date("2026-1-01", &end));
	assert_false(vacation_parse_date("2026-01-01x", &end));
	assert_false(vacation_parse_date("1969-12-31", &end));
	struct vacation v = {.on = true, .until = "2026-01-01"};
	assert_true(vacation_active(&v, 1767225600 + 86399)); /* the last second of the day */
	assert_false(vacation_active(&v, 1767225600 + 86400));
	v.until[0] = '\0';
	assert_true(vacation_active(&v, 4000000000));
	v.on = false;
	assert_false(vacation_active(&v, 0));
}

static void test_read_write(void **state)
{
	(void)state;
	struct vacation v;
	char err[300];
	assert_int_equal(vacation_read(dir, &v, err, sizeof err), 0); /* none yet */
	struct vacation w = {.on = true, .days = 7};
	w.message = strdup("Away.\n");
	assert_int_equal(vacation_write(dir, &w, err, sizeof err), 0);
	assert_int_equal(vacation_read(dir, &v, err, sizeof err), 1);
	assert_true(v.on);
	assert_string_equal(v.message, "Away.\n");
	vacation_clear(&v);
	char path[128];
	snprintf(path, sizeof path, "%s/posthorn-vacation", dir);
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	/* a damaged file is an error with its name, not a setting */
	write_file(path, "junk\n", 5);
	assert_int_equal(vacation_read(dir, &v, err, sizeof err), -1);
	assert_non_null(strstr(err, "posthorn-vacation"));
	vacation_clear(&w);
}

static void test_senders_once_per_days(void **state)
{
	(void)state;
	char err[300];
	bool due;
	time_t t = 1767225600;
	assert_int_equal(vacation_note_sender(dir, "carol@example.net", 7, t, &due, err, sizeof err), 0);
	assert_true(due);
	assert_int_equal(vacation_note_sender(dir, "Carol@Example.NET", 7, t + 6 * 86400, &due, err,
					      sizeof err), 0);
	assert_false(due);
	assert_int_equal(vacation_note_sender(dir, "dave@example.net", 7, t + 60, &due, err,
					      sizeof err), 0);
	assert_true(due);
	/* after the days, again */
	assert_int_equal(vacation_note_sender(dir, "carol@example.net", 7, t + 7 * 86400 + 1, &due,
					      err, sizeof err), 0);
	assert_true(due);
	/* a new setting forgets who was answered */
	struct vacation w = {.on = true, .days = 7};
	w.message = strdup("x\n");
	assert_int_equal(vacation_write(dir, &w, err, sizeof err), 0);
	vacation_clear(&w);
	assert_int_equal(vacation_note_sender(dir, "dave@example.net", 7, t + 61, &due, err,
					      sizeof err), 0);
	assert_true(due);
	/* an address with a line break is never written */
	assert_int_equal(vacation_note_sender(dir, "a\nb@example.net", 7, t, &due, err, sizeof err),
			 -1);
	assert_false(due);
}

static void test_senders_bounded(void **state)
{
	(void)state;
	char err[300], who[64];
	bool due;
	time_t t = 1767225600;
	/* a full record, written as the worker would have, oldest first */
	char path[128];
	snprintf(path, sizeof path, "%s/posthorn-vacation.senders", dir);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	for (int i = 0; i < VACATION_SENDERS_MAX + 5; i++)
		fprintf(f, "%lld s%d@example.net\n", (long long)t + i, i);
	assert_int_equal(fclose(f), 0);
	assert_int_equal(vacation_note_sender(dir, "new@example.net", 7, t + 2000, &due, err,
					      sizeof err), 0);
	assert_true(due);
	size_t len;
	char *text = read_file(path, &len);
	size_t lines = 0;
	for (size_t i = 0; i < len; i++)
		lines += text[i] == '\n';
	assert_int_equal(lines, VACATION_SENDERS_MAX);
	free(text);
	/* the oldest went first: s5 is due again, the newest kept is not */
	assert_int_equal(vacation_note_sender(dir, "s5@example.net", 7, t + 2001, &due, err,
					      sizeof err), 0);
	assert_true(due);
	snprintf(who, sizeof who, "s%d@example.net", VACATION_SENDERS_MAX + 4);
	assert_int_equal(vacation_note_sender(dir, who, 7, t + 2002, &due, err, sizeof err), 0);
	assert_false(due);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_format_and_parse),
		cmocka_unit_test(test_bad_settings),
		cmocka_unit_test(test_dates_and_force),
		cmocka_unit_test_setup_teardown(test_read_write, setup, teardown),
		cmocka_unit_test_setup_teardown(test_senders_once_per_days, setup, teardown),
		cmocka_unit_test_setup_teardown(test_senders_bounded, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

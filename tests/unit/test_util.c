/* test_util: the formatting helpers that never cut silently — bsnprintf
 * (reports a cut), xsnprintf (a cut is fatal) and errfmt (a cut message
 * ends in "..."). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "lib/util.h"

static void test_bsnprintf(void **state)
{
	char buf[8];
	assert_true(bsnprintf(buf, sizeof buf, "%s/%d", "abc", 123)); /* 7 bytes and NUL */
	assert_string_equal(buf, "abc/123");
	assert_false(bsnprintf(buf, sizeof buf, "%s/%d", "abc", 1234));
	assert_false(bsnprintf(buf, 0, "x"));
	assert_true(bsnprintf(buf, 1, "%s", ""));
	assert_string_equal(buf, "");
}

static void test_xsnprintf_fits(void **state)
{
	char buf[8];
	xsnprintf(buf, sizeof buf, "%s/%d", "abc", 123);
	assert_string_equal(buf, "abc/123");
}

/* Text that does not fit is a broken invariant: exit(1), never a cut. */
static void test_xsnprintf_cut_is_fatal(void **state)
{
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		char buf[8];
		close(STDERR_FILENO);
		xsnprintf(buf, sizeof buf, "%s/%d", "abc", 1234);
		_exit(0);
	}
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 1);
}

static void test_errfmt_marks_a_cut(void **state)
{
	char err[8];
	errfmt(err, sizeof err, "%s", "abcdefghij");
	assert_string_equal(err, "abcd...");
	errfmt(err, sizeof err, "%s", "abc");
	assert_string_equal(err, "abc");
}

static void check_dirname(const char *path, const char *want)
{
	char *d = path_dirname(path);
	assert_string_equal(d, want);
	free(d);
}

static void test_path_dirname(void **state)
{
	(void)state;
	check_dirname("/etc/posthorn/users", "/etc/posthorn");
	check_dirname("users", ".");
	check_dirname("/users", "/");
	check_dirname("a/b", "a");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_bsnprintf),
		cmocka_unit_test(test_xsnprintf_fits),
		cmocka_unit_test(test_xsnprintf_cut_is_fatal),
		cmocka_unit_test(test_errfmt_marks_a_cut),
		cmocka_unit_test(test_path_dirname),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

/* test_runtime: building a configuration generation — every problem of the
 * parts loaded with the configuration is told at once, one line each, and
 * the generation is handed back whenever the configuration parsed, so
 * that the caller can check more of it. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/event.h>

#include "conf/conf.h"
#include "lib/util.h"
#include "runtime/runtime.h"
#include "unitfs.h"

struct built {
	int problems;
	struct runtime *rt;
	char *told;
};

static struct built build(const char *path, struct event_base *base)
{
	struct built b = {0};
	size_t len = 0;
	FILE *f = open_memstream(&b.told, &len);
	assert_non_null(f);
	b.problems = runtime_build(path, NULL, base, f, &b.rt);
	assert_int_equal(fclose(f), 0);
	return b;
}

/* A folder with a configuration whose users file is users_text (NULL: no
 * file) of mode users_mode; extra is added to the global part. */
static char *make_conf(char *dir, const char *extra, const char *users_text, mode_t users_mode)
{
	assert_non_null(mkdtemp(dir));
	char *users = xasprintf("%s/users", dir);
	if (users_text) {
		write_file(users, users_text, strlen(users_text));
		assert_int_equal(chmod(users, users_mode), 0);
	}
	char *text = xasprintf("hostname mx.example.test\ndomains example.test\n"
			       "spool %s/spool\nmailboxes %s/mail\nusers %s\n%s"
			       "server mx {\n    listen 127.0.0.1:2525\n}\n",
			       dir, dir, users, extra);
	char *path = xasprintf("%s/posthorn.conf", dir);
	write_file(path, text, strlen(text));
	free(text);
	free(users);
	return path;
}

static void test_build_ok(void **state)
{
	char dir[] = "/tmp/posthorn-runtime-XXXXXX";
	char *path = make_conf(dir, "", "", 0600);
	struct event_base *base = event_base_new();
	assert_non_null(base);
	struct built b = build(path, base);
	assert_int_equal(b.problems, 0);
	assert_string_equal(b.told, "");
	assert_non_null(b.rt);
	assert_non_null(b.rt->conf);
	assert_non_null(b.rt->users);
	runtime_unref(b.rt);
	free(b.told);
	event_base_free(base);
	assert_int_equal(rm_tree(dir), 0);
	free(path);
}

static void test_build_tells_every_problem(void **state)
{
	char dir[] = "/tmp/posthorn-runtime-XXXXXX";
	char *path = make_conf(dir, "aliases /nonexistent/posthorn-aliases\n", "", 0644);
	struct event_base *base = event_base_new();
	assert_non_null(base);
	struct built b = build(path, base);
	/* the users file and the aliases file, both */
	assert_int_equal(b.problems, 2);
	assert_non_null(strstr(b.told, "/users: readable or writable by group or others (mode 0644)"));
	assert_non_null(strstr(b.told, "/nonexistent/posthorn-aliases: cannot open"));
	/* the configuration parsed: the generation is there to check more */
	assert_non_null(b.rt);
	assert_non_null(b.rt->conf);
	runtime_unref(b.rt);
	free(b.told);
	event_base_free(base);
	assert_int_equal(rm_tree(dir), 0);
	free(path);
}

static void test_build_configuration_errors(void **state)
{
	char path[] = "/tmp/posthorn-runtime-conf-XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	static const char text[] = "frobnicate yes\n";
	assert_int_equal(write(fd, text, sizeof text - 1), (ssize_t)(sizeof text - 1));
	close(fd);
	struct built b = build(path, NULL);
	unlink(path);
	assert_true(b.problems >= 1);
	assert_null(b.rt);
	char *want = xasprintf("%s:1:1: unknown directive \"frobnicate\"", path);
	assert_non_null(strstr(b.told, want));
	free(want);
	free(b.told);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_build_ok),
		cmocka_unit_test(test_build_tells_every_problem),
		cmocka_unit_test(test_build_configuration_errors),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

/* test_preflight: what the daemon checks before it serves with a
 * configuration (and `posthorn check` with it): the folders it must make
 * or write, the run-as user and what that user must read, and the daemon's
 * log lines for every problem, escaped so that the '"' configuration
 * messages put around values cannot end the message="..." value early. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pwd.h>
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

#include "daemon/preflight.h"
#include "lib/log.h"
#include "lib/util.h"
#include "queue/spool.h"
#include "runtime/runtime.h"
#include "unitfs.h"

struct checked {
	struct runtime *rt;
	char *told;
};

static struct checked check(const char *path, struct spool *sp, struct event_base *base)
{
	struct checked c = {0};
	size_t len = 0;
	FILE *f = open_memstream(&c.told, &len);
	assert_non_null(f);
	c.rt = preflight(path, sp, base, f);
	assert_int_equal(fclose(f), 0);
	return c;
}

/* A configuration in dir (made) with the given spool and mailboxes
 * folders and global extra lines; an empty users file of mode 0600. */
static char *make_conf(const char *dir, const char *spool, const char *mailboxes,
		       const char *extra)
{
	char *users = xasprintf("%s/users", dir);
	write_file(users, "", 0);
	char *text = xasprintf("hostname mx.example.test\ndomains example.test\n"
			       "spool %s\nmailboxes %s\nusers %s\n%s"
			       "server mx {\n    listen 127.0.0.1:2525\n}\n",
			       spool, mailboxes, users, extra);
	char *path = xasprintf("%s/posthorn.conf", dir);
	write_file(path, text, strlen(text));
	assert_int_equal(chmod(path, 0644), 0);
	free(text);
	free(users);
	return path;
}

static void test_folders_to_be_made_or_written(void **state)
{
	char dir[] = "/tmp/posthorn-preflight-XXXXXX";
	assert_non_null(mkdtemp(dir));
	struct event_base *base = event_base_new();
	assert_non_null(base);
	char *file = xasprintf("%s/a-file", dir);
	write_file(file, "x", 1);
	char *under_file = xasprintf("%s/a-file/spool", dir);
	char *deep = xasprintf("%s/not/yet/mail", dir);

	/* folders that are not there yet, but can be made */
	char *path = make_conf(dir, deep, deep, "");
	struct checked c = check(path, NULL, base);
	assert_string_equal(c.told, "");
	assert_non_null(c.rt);
	runtime_unref(c.rt);
	free(c.told);
	free(path);
	struct stat st;
	assert_int_equal(stat(deep, &st), -1); /* checked, not made */

	/* a spool below a file, mailboxes that are a file */
	path = make_conf(dir, under_file, file, "");
	c = check(path, NULL, base);
	assert_null(c.rt);
	char *w1 = xasprintf("spool %s cannot be made: %s is not a folder\n", under_file, file);
	char *w2 = xasprintf("mailboxes %s cannot be used: %s is not a folder\n", file, file);
	assert_non_null(strstr(c.told, w1));
	assert_non_null(strstr(c.told, w2));
	free(c.told);

	/* at a reload the spool stays the open one: only mailboxes count */
	char *spooldir = xasprintf("%s/open-spool", dir);
	struct spool *sp = spool_open(spooldir);
	assert_non_null(sp);
	c = check(path, sp, base);
	assert_null(c.rt);
	assert_null(strstr(c.told, "spool"));
	assert_non_null(strstr(c.told, w2));
	free(c.told);
	spool_close(sp);
	free(spooldir);
	free(w1);
	free(w2);
	free(path);

	event_base_free(base);
	assert_int_equal(rm_tree(dir), 0);
	free(file);
	free(under_file);
	free(deep);
}

/* As root with run-as, the user must exist and may read what the daemon
 * reads again after the privilege drop; as anybody else run-as is not
 * used (the daemon cannot change users) and not checked. */
static void test_run_as(void **state)
{
	char dir[] = "/tmp/posthorn-preflight-XXXXXX";
	assert_non_null(mkdtemp(dir));
	struct event_base *base = event_base_new();
	assert_non_null(base);
	char *spool = xasprintf("%s/spool", dir);
	char *mail = xasprintf("%s/mail", dir);
	char *users = xasprintf("%s/users", dir);

	char *path = make_conf(dir, spool, mail, "run-as no-such-user-posthorn\n");
	struct checked c = check(path, NULL, base);
	if (geteuid() != 0) {
		assert_non_null(c.rt);
		runtime_unref(c.rt);
		free(c.told);
		free(path);
		event_base_free(base);
		assert_int_equal(rm_tree(dir), 0);
		free(spool);
		free(mail);
		free(users);
		return;
	}
	assert_null(c.rt);
	assert_non_null(strstr(c.told, "run-as: no such user \"no-such-user-posthorn\""));
	free(c.told);
	free(path);

	path = make_conf(dir, spool, mail, "run-as root\n");
	c = check(path, NULL, base);
	assert_null(c.rt);
	assert_non_null(strstr(c.told, "refusing to run as \"root\" (uid 0)"));
	free(c.told);
	free(path);

	/* a users file (mode 0600) of root's cannot be read by nobody */
	struct passwd *nobody = getpwnam("nobody");
	assert_non_null(nobody);
	path = make_conf(dir, spool, mail, "run-as nobody\n");
	assert_int_equal(chown(users, 0, 0), 0);
	assert_int_equal(chmod(dir, 0755), 0);
	c = check(path, NULL, base);
	assert_null(c.rt);
	char *want = xasprintf("users file %s cannot be read by the run-as user nobody (owner uid 0, "
			       "mode 0600)",
			       users);
	assert_non_null(strstr(c.told, want));
	assert_null(strstr(c.told, "configuration file")); /* 0644: others may read it */
	free(want);
	free(c.told);
	/* given to nobody, as `posthorn user add` does */
	assert_int_equal(chown(users, nobody->pw_uid, nobody->pw_gid), 0);
	c = check(path, NULL, base);
	assert_string_equal(c.told, "");
	assert_non_null(c.rt);
	runtime_unref(c.rt);
	free(c.told);
	free(path);

	event_base_free(base);
	assert_int_equal(rm_tree(dir), 0);
	free(spool);
	free(mail);
	free(users);
}

struct load {
	const char *path;
	struct runtime *rt;
};

static void run_load(void *arg)
{
	struct load *l = arg;
	l->rt = preflight_load(l->path, NULL, NULL);
}

/* Everything written to stderr while the daemon loads path. */
static char *load_logged(const char *path, struct runtime **rt)
{
	struct load l = {.path = path};
	char *text = stderr_of(run_load, &l);
	*rt = l.rt;
	return text;
}

static void test_config_errors_logged_escaped(void **state)
{
	char path[] = "/tmp/posthorn-preflight-conf-XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	static const char text[] = "frobnicate yes\n";
	assert_int_equal(write(fd, text, sizeof text - 1), (ssize_t)(sizeof text - 1));
	close(fd);
	struct runtime *rt;
	char *logged = load_logged(path, &rt);
	unlink(path);
	assert_null(rt);
	const char *line = strstr(logged, "event=config-error message=\"");
	assert_non_null(line);
	const char *end = strchr(line, '\n');
	assert_non_null(end);
	/* the value's own quotes only; the message's came out as \x22 */
	size_t quotes = 0;
	for (const char *p = line; p < end; p++)
		quotes += *p == '"';
	assert_int_equal(quotes, 2);
	assert_int_equal(end[-1], '"');
	assert_non_null(strstr(line, "unknown directive \\x22frobnicate\\x22"));
	free(logged);
}

int main(void)
{
	log_init(false, LOG_INFO);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_folders_to_be_made_or_written),
		cmocka_unit_test(test_run_as),
		cmocka_unit_test(test_config_errors_logged_escaped),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Unit tests for directory without a directory server: the cache (answers
 * found synchronously, negative answers, the bound in entries, the memory
 * 10,000 users take), what is answered without asking (no principal
 * attribute, an empty password, a NUL in a name), an unreachable
 * directory (a temporary failure, never cached) and the service
 * password file's mode. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "auth/directory.h"
#include "conf/conf.h"
#include "lib/util.h"

/* A port nothing listens on: asking the directory is a temporary failure. */
static char *dead_uri[] = {"ldap://127.0.0.1:1"};
static char *mail_attr[] = {"mail"};

static struct conf_ldap test_conf(void)
{
	struct conf_ldap c = {
		.uris = dead_uri, .nuris = 1, .starttls = true, .base = "ou=people,dc=example,dc=test",
		.filter = "(mail=%a)", .addresses = mail_attr, .naddresses = 1, .cache = 300,
	};
	return c;
}

struct answer {
	int calls;
	enum directory_status status;
	char mailbox[128];
};

static void answered(void *owner, const struct directory_answer *a)
{
	struct answer *out = owner;
	out->calls++;
	out->status = a->status;
	xsnprintf(out->mailbox, sizeof out->mailbox, "%s", a->mailbox ? a->mailbox : "");
}

static struct directory *open_directory(const struct conf_ldap *c)
{
	struct directory *d = directory_new(c, NULL, stderr);
	assert_non_null(d);
	return d;
}

static void test_cached_answers_come_at_once(void **state)
{
	(void)state;
	struct conf_ldap c = test_conf();
	struct directory *d = open_directory(&c);
	directory_cache_put(d, "a:al@example.test", "alice@example.test", "uid=alice");
	directory_cache_put(d, "a:nobody@example.test", NULL, NULL);
	struct answer a = {0};
	assert_null(directory_lookup(d, "AL@Example.Test", answered, &a));
	assert_int_equal(a.calls, 1);
	assert_int_equal(a.status, DIRECTORY_FOUND);
	assert_string_equal(a.mailbox, "alice@example.test");
	memset(&a, 0, sizeof a);
	assert_null(directory_lookup(d, "nobody@example.test", answered, &a));
	assert_int_equal(a.status, DIRECTORY_NOT_FOUND);
	/* a login of a name known to be nobody's never reaches the directory */
	memset(&a, 0, sizeof a);
	assert_null(directory_login(d, "nobody@example.test", 19, "pw", 2, answered, &a));
	assert_int_equal(a.status, DIRECTORY_NOT_FOUND);
	directory_free(d);
}

/* The figure for 10,000 users, and the bound. */
static void test_cache_memory_and_bound(void **state)
{
	(void)state;
	struct conf_ldap c = test_conf();
	struct directory *d = open_directory(&c);
	char key[64], mailbox[64], dn[96];
	for (unsigned i = 0; i < 10000; i++) {
		xsnprintf(key, sizeof key, "a:user%05u@example.test", i);
		xsnprintf(mailbox, sizeof mailbox, "user%05u@example.test", i);
		xsnprintf(dn, sizeof dn, "uid=user%05u,ou=people,dc=example,dc=test", i);
		directory_cache_put(d, key, mailbox, dn);
	}
	assert_int_equal(directory_cache_entries(d), 10000);
	size_t bytes = directory_cache_bytes(d);
	print_message("cache: 10000 users take %zu bytes (%zu per user, table included)\n", bytes,
		      bytes / 10000);
	assert_true(bytes > 10000 * 100 && bytes < 10000 * 400);
	for (unsigned i = 10000; i < DIRECTORY_CACHE_MAX + 10; i++) {
		xsnprintf(key, sizeof key, "a:user%05u@example.test", i);
		directory_cache_put(d, key, NULL, NULL);
	}
	assert_int_equal(directory_cache_entries(d), DIRECTORY_CACHE_MAX);
	struct answer a = {0};
	/* the oldest went first: asking for it again goes to the (dead) directory */
	assert_null(directory_lookup(d, "user00000@example.test", answered, &a));
	assert_int_equal(a.status, DIRECTORY_UNAVAILABLE);
	memset(&a, 0, sizeof a);
	assert_null(directory_lookup(d, "user09999@example.test", answered, &a));
	assert_int_equal(a.status, DIRECTORY_FOUND);
	directory_free(d);
}

static void test_answered_without_asking(void **state)
{
	(void)state;
	struct conf_ldap c = test_conf();
	struct directory *d = open_directory(&c);
	struct answer a = {0};
	/* no principal attribute configured */
	assert_null(directory_find_by_principal(d, "alice@EXAMPLE.TEST", answered, &a));
	assert_int_equal(a.status, DIRECTORY_NOT_FOUND);
	/* an empty password would be an anonymous bind (RFC 4513 §5.1.2) */
	memset(&a, 0, sizeof a);
	assert_null(directory_login(d, "alice@example.test", 18, "", 0, answered, &a));
	assert_int_equal(a.status, DIRECTORY_NOT_FOUND);
	/* a NUL in the name or in the password */
	memset(&a, 0, sizeof a);
	assert_null(directory_login(d, "alice\0@example.test", 19, "pw", 2, answered, &a));
	assert_int_equal(a.status, DIRECTORY_NOT_FOUND);
	memset(&a, 0, sizeof a);
	assert_null(directory_login(d, "alice@example.test", 18, "p\0w", 3, answered, &a));
	assert_int_equal(a.status, DIRECTORY_NOT_FOUND);
	directory_free(d);
}

static void test_unreachable_is_temporary_and_not_cached(void **state)
{
	(void)state;
	struct conf_ldap c = test_conf();
	c.principal = "userPrincipalName";
	struct directory *d = open_directory(&c);
	struct answer a = {0};
	assert_null(directory_lookup(d, "alice@example.test", answered, &a));
	assert_int_equal(a.calls, 1);
	assert_int_equal(a.status, DIRECTORY_UNAVAILABLE);
	assert_int_equal(directory_cache_entries(d), 0);
	memset(&a, 0, sizeof a);
	assert_null(directory_login(d, "alice@example.test", 18, "pw", 2, answered, &a));
	assert_int_equal(a.status, DIRECTORY_UNAVAILABLE);
	memset(&a, 0, sizeof a);
	assert_null(directory_find_by_principal(d, "alice@EXAMPLE.TEST", answered, &a));
	assert_int_equal(a.status, DIRECTORY_UNAVAILABLE);
	assert_string_equal(directory_uri(d), "ldap://127.0.0.1:1");
	directory_free(d);
}

static void test_password_file_readable_by_others_is_refused(void **state)
{
	(void)state;
	char dir[] = "/tmp/test_directory.XXXXXX";
	assert_non_null(mkdtemp(dir));
	char *path = xasprintf("%s/secret", dir);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	assert_true(fd >= 0);
	assert_int_equal(write_all(fd, "pw\n", 3), 0);
	assert_int_equal(fchmod(fd, 0644), 0);
	assert_int_equal(close(fd), 0);
	struct conf_ldap c = test_conf();
	c.bind_dn = "cn=posthorn";
	c.bind_password_file = path;
	char *msg = NULL;
	size_t len = 0;
	FILE *err = open_memstream(&msg, &len);
	assert_null(directory_new(&c, NULL, err));
	assert_int_equal(fclose(err), 0);
	assert_non_null(strstr(msg, "readable by group or others"));
	free(msg);
	assert_int_equal(chmod(path, 0600), 0);
	struct directory *d = directory_new(&c, NULL, stderr);
	assert_non_null(d);
	directory_free(d);
	unlink(path);
	rmdir(dir);
	free(path);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_cached_answers_come_at_once),
		cmocka_unit_test(test_cache_memory_and_bound),
		cmocka_unit_test(test_answered_without_asking),
		cmocka_unit_test(test_unreachable_is_temporary_and_not_cached),
		cmocka_unit_test(test_password_file_readable_by_others_is_refused),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

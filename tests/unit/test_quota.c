/* test_quota: the usage accounting of quota.c — maildirsize text (limit
 * line, sums, negative lines, a torn tail, damage), the limit comparison,
 * a scan over INBOX and folders written back as a maildirsize, appended
 * deltas read back without a scan, a dropped file counted again, and a
 * stale over-quota answer checked by a scan. */
#define _GNU_SOURCE /* nftw */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "lib/util.h"
#include "store/maildir.h"
#include "store/quota.h"
#include "unitfs.h"

struct parse_case {
	const char *text;
	int result;
	uint64_t limit_bytes, limit_messages, bytes, messages;
};

static void test_parse_table(void **state)
{
	(void)state;
	static const struct parse_case cases[] = {
	    {"1000S,10C\n", 0, 1000, 10, 0, 0},
	    {"10C,1000S\n300 2\n", 0, 1000, 10, 300, 2},
	    {"\n300 2\n", 0, 0, 0, 300, 2},                 /* no limit */
	    {"1000S\n300 2\n-100 -1\n50 1\n", 0, 1000, 0, 250, 2},
	    {"1000S\n300 2\n77 1", 0, 1000, 0, 300, 2},   /* torn tail */
	    {"1000S\n100 1\n-500 -3\n", 0, 1000, 0, 0, 0},  /* below 0: 0 */
	    {"1000S\n300  2\n", 0, 1000, 0, 300, 2},        /* Dovecot pads */
	    {"", -1, 0, 0, 0, 0},                           /* no limit line */
	    {"1000X\n", -1, 0, 0, 0, 0},
	    {"1000S,\n", 0, 1000, 0, 0, 0},
	    {"1000S\nabc 1\n", -1, 0, 0, 0, 0},
	    {"1000S\n1 2 3\n", -1, 0, 0, 0, 0},
	    {"1000S\n1234567890123456789 1\n", -1, 0, 0, 0, 0}, /* > 18 digits */
	    {"-5S\n", -1, 0, 0, 0, 0},
	};
	for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
		const struct parse_case *c = &cases[i];
		struct quota_limit l;
		struct quota_usage u;
		int r = quota_parse(c->text, strlen(c->text), &l, &u);
		if (r != c->result)
			fail_msg("case %zu \"%s\": %d", i, c->text, r);
		if (r < 0)
			continue;
		assert_int_equal(l.bytes, c->limit_bytes);
		assert_int_equal(l.messages, c->limit_messages);
		assert_int_equal(u.bytes, c->bytes);
		assert_int_equal(u.messages, c->messages);
	}
}

static void test_exceeded(void **state)
{
	(void)state;
	const struct quota_limit none = {0, 0}, l = {1000, 3};
	const struct quota_usage u = {900, 2};
	assert_false(quota_exceeded(&none, &u, UINT64_MAX, UINT64_MAX));
	assert_false(quota_exceeded(&l, &u, 100, 1));  /* exactly full is allowed */
	assert_true(quota_exceeded(&l, &u, 101, 1));
	assert_true(quota_exceeded(&l, &u, 1, 2));
	assert_true(quota_exceeded(&l, &u, UINT64_MAX, 0)); /* no wrap-around */
	const struct quota_usage over = {2000, 0};
	assert_true(quota_exceeded(&l, &over, 0, 0));
}

struct fixture {
	char dir[64];
	char *root;
};

static int setup(void **state)
{
	struct fixture *f = xcalloc(1, sizeof *f);
	memcpy(f->dir, "/tmp/posthorn-quota-XXXXXX", sizeof "/tmp/posthorn-quota-XXXXXX");
	if (!mkdtemp(f->dir))
		return -1;
	f->root = xasprintf("%s/bob", f->dir);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	int r = rm_tree(f->dir);
	free(f->root);
	free(f);
	return r;
}

static void put(const char *dir, const char *sub, const char *name, size_t size)
{
	char err[256];
	assert_int_equal(maildir_create(dir, err, sizeof err), 0);
	char *path = xasprintf("%s/%s/%s", dir, sub, name);
	char *data = xmalloc(size + 1);
	memset(data, 'x', size);
	write_file(path, data, size);
	free(data);
	free(path);
}

static char *quota_text(const struct fixture *f)
{
	char *path = xasprintf("%s/" QUOTA_FILE, f->root);
	size_t len;
	char *text = read_file(path, &len);
	free(path);
	return text;
}

static void test_scan_and_deltas(void **state)
{
	struct fixture *f = *state;
	char err[256];
	const struct quota_limit l = {10000, 100};
	struct quota_usage u;
	/* no Maildir at all: empty, and nothing written */
	assert_int_equal(quota_usage_get(f->root, &l, &u, err, sizeof err), 0);
	assert_int_equal(u.bytes, 0);
	assert_int_equal(u.messages, 0);
	/* S= counts when present, else the file's size; folders count too */
	put(f->root, "new", "1.a.host,S=300,W=310", 5);
	put(f->root, "cur", "2.b.host:2,S", 40);
	char *sent = xasprintf("%s/.Sent", f->root);
	put(sent, "cur", "3.c.host,S=1000:2,S", 7);
	free(sent);
	assert_int_equal(quota_usage_get(f->root, &l, &u, err, sizeof err), 0);
	assert_int_equal(u.bytes, 1340);
	assert_int_equal(u.messages, 3);
	char *text = quota_text(f);
	assert_string_equal(text, "10000S,100C\n1340 3\n");
	free(text);
	/* a delivery elsewhere counts by a line, read without a scan: a file
	 * put in place behind its back is not seen until the file is dropped */
	assert_int_equal(quota_add(f->root, 500, 1, err, sizeof err), 0);
	put(f->root, "new", "4.d.host,S=500", 1);
	assert_int_equal(quota_usage_get(f->root, &l, &u, err, sizeof err), 0);
	assert_int_equal(u.bytes, 1840);
	assert_int_equal(u.messages, 4);
	put(f->root, "new", "5.e.host,S=60", 1);
	assert_int_equal(quota_usage_get(f->root, &l, &u, err, sizeof err), 0);
	assert_int_equal(u.messages, 4);
	assert_int_equal(quota_invalidate(f->root, err, sizeof err), 0);
	assert_int_equal(quota_usage_get(f->root, &l, &u, err, sizeof err), 0);
	assert_int_equal(u.bytes, 1900);
	assert_int_equal(u.messages, 5);
	/* with no file, a delta is not recorded (the next reading counts) */
	assert_int_equal(quota_invalidate(f->root, err, sizeof err), 0);
	assert_int_equal(quota_add(f->root, 1, 1, err, sizeof err), 0);
	text = quota_text(f);
	assert_null(text);
}

static void test_check_and_stale(void **state)
{
	struct fixture *f = *state;
	char err[256];
	const struct quota_limit l = {1000, 0};
	put(f->root, "new", "1.a.host,S=900", 1);
	assert_int_equal(quota_check(f->root, &l, 100, 1, err, sizeof err), 1);
	assert_int_equal(quota_check(f->root, &l, 101, 1, err, sizeof err), 0);
	/* a removal behind the file's back, then the file grows old: the
	 * over-quota answer is checked by a scan */
	char *gone = xasprintf("%s/new/1.a.host,S=900", f->root);
	assert_int_equal(unlink(gone), 0);
	free(gone);
	assert_int_equal(quota_check(f->root, &l, 101, 1, err, sizeof err), 0);
	char *path = xasprintf("%s/" QUOTA_FILE, f->root);
	struct timeval old[2] = {{time(NULL) - QUOTA_STALE_SECONDS - 10, 0},
				 {time(NULL) - QUOTA_STALE_SECONDS - 10, 0}};
	assert_int_equal(utimes(path, old), 0);
	free(path);
	assert_int_equal(quota_check(f->root, &l, 101, 1, err, sizeof err), 1);
	/* no limit: always room */
	const struct quota_limit none = {0, 0};
	assert_int_equal(quota_check(f->root, &none, UINT64_MAX, 1, err, sizeof err), 1);
}

static void test_damaged_or_long_file(void **state)
{
	struct fixture *f = *state;
	char err[256];
	const struct quota_limit l = {0, 10};
	put(f->root, "cur", "1.a.host,S=20:2,", 1);
	char *path = xasprintf("%s/" QUOTA_FILE, f->root);
	write_file(path, "garbage\nnot numbers\n", 20);
	struct quota_usage u;
	assert_int_equal(quota_usage_get(f->root, &l, &u, err, sizeof err), 0);
	assert_int_equal(u.bytes, 20);
	assert_int_equal(u.messages, 1);
	/* longer than QUOTA_FILE_MAX: counted again and rewritten short */
	for (int i = 0; i < QUOTA_FILE_MAX / 4 + 1; i++) /* "1 0\n" each */
		assert_int_equal(quota_add(f->root, 1, 0, err, sizeof err), 0);
	assert_int_equal(quota_usage_get(f->root, &l, &u, err, sizeof err), 0);
	assert_int_equal(u.bytes, 20);
	size_t len;
	char *text = read_file(path, &len);
	assert_string_equal(text, "0S,10C\n20 1\n");
	free(text);
	free(path);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_parse_table),
	    cmocka_unit_test(test_exceeded),
	    cmocka_unit_test_setup_teardown(test_scan_and_deltas, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_check_and_stale, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_damaged_or_long_file, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

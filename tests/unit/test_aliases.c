/* Unit tests for aliases: the file syntax, errors with FILE:LINE:COL,
 * case-insensitive lookup, and expansion (chains, fan-out, duplicates,
 * loops, the depth limit). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "auth/aliases.h"
#include "lib/util.h"

/* ---- helpers ---------------------------------------------------------- */

struct scratch {
	char dir[64];
	char path[128];
};

static int scratch_setup(void **state)
{
	struct scratch *s = xcalloc(1, sizeof *s);
	assert_true(bsnprintf(s->dir, sizeof s->dir, "/tmp/test_aliases.XXXXXX"));
	assert_non_null(mkdtemp(s->dir));
	assert_true(bsnprintf(s->path, sizeof s->path, "%s/aliases", s->dir));
	*state = s;
	return 0;
}

static int scratch_teardown(void **state)
{
	struct scratch *s = *state;
	unlink(s->path);
	rmdir(s->dir);
	free(s);
	return 0;
}

/* Load text; returns the error count, *msg what was printed. */
static int load(const struct scratch *s, const char *text, struct aliases **al, char **msg)
{
	int fd = open(s->path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	assert_true(fd >= 0);
	assert_int_equal(write_all(fd, text, strlen(text)), 0);
	assert_int_equal(close(fd), 0);
	size_t len = 0;
	*msg = NULL;
	FILE *err = open_memstream(msg, &len);
	int r = aliases_load(s->path, al, err);
	fclose(err);
	return r;
}

static struct aliases *load_ok(const struct scratch *s, const char *text)
{
	struct aliases *al = NULL;
	char *msg;
	int r = load(s, text, &al, &msg);
	if (r != 0)
		fprintf(stderr, "%s", msg);
	assert_int_equal(r, 0);
	assert_string_equal(msg, "");
	assert_non_null(al);
	free(msg);
	return al;
}

/* Expand address and compare with the expected list, in order. */
static void expect_expansion(const struct aliases *al, const char *address,
			     const char *const *want, size_t nwant)
{
	char **got = NULL;
	size_t n = aliases_expand(al, address, &got);
	if (n != nwant) {
		fprintf(stderr, "%s expands to %zu:", address, n);
		for (size_t i = 0; i < n; i++)
			fprintf(stderr, " %s", got[i]);
		fputc('\n', stderr);
	}
	assert_int_equal(n, nwant);
	for (size_t i = 0; i < n; i++)
		assert_string_equal(got[i], want[i]);
	aliases_free_list(got, n);
}

#define EXPECT(al, address, ...)                                                             \
	do {                                                                                 \
		static const char *const want_[] = {__VA_ARGS__};                            \
		expect_expansion(al, address, want_, ARRAY_LEN(want_));                     \
	} while (0)
#define EXPECT_NOTHING(al, address) expect_expansion(al, address, NULL, 0)

/* ---- parsing ---------------------------------------------------------- */

static void test_parse_and_lookup(void **state)
{
	struct scratch *s = *state;
	struct aliases *al = load_ok(s,
				     "# the postmaster\n"
				     "\n"
				     "   \t\n"
				     "postmaster@example.test: Admin@Example.test\n"
				     "  Team@Example.TEST :alice@example.test,bob@example.test ,\tcarol@example.org  \r\n"
				     "\t# indented comment\n"
				     "x@example.test:\ty@example.test");
	size_t n = 99;
	const char *const *t = aliases_lookup(al, "POSTMASTER@example.TEST", &n);
	assert_non_null(t);
	assert_int_equal(n, 1);
	assert_string_equal(t[0], "admin@example.test");
	assert_null(t[1]);

	t = aliases_lookup(al, "team@example.test", &n);
	assert_int_equal(n, 3);
	assert_string_equal(t[0], "alice@example.test");
	assert_string_equal(t[1], "bob@example.test");
	assert_string_equal(t[2], "carol@example.org");
	assert_null(t[3]);

	t = aliases_lookup(al, "x@example.test", NULL);
	assert_non_null(t);
	assert_string_equal(t[0], "y@example.test");

	assert_null(aliases_lookup(al, "alice@example.test", &n));
	assert_int_equal(n, 0);
	assert_null(aliases_lookup(NULL, "alice@example.test", &n));
	aliases_free(al);
}

static void test_parse_empty_file(void **state)
{
	struct scratch *s = *state;
	struct aliases *al = load_ok(s, "# nothing yet\n");
	assert_null(aliases_lookup(al, "a@b", NULL));
	aliases_free(al);
}

static void test_missing_file(void **state)
{
	struct aliases *al = (struct aliases *)1;
	char *msg = NULL;
	size_t len = 0;
	FILE *err = open_memstream(&msg, &len);
	assert_int_equal(aliases_load("/nonexistent/aliases", &al, err), 1);
	fclose(err);
	assert_null(al);
	assert_non_null(strstr(msg, "/nonexistent/aliases: cannot open: "));
	free(msg);
}

static void test_parse_errors(void **state)
{
	struct scratch *s = *state;
	static const char text[] =
	    "ok@example.test: a@example.test\n"          /* 1 */
	    "foo@x a@b\n"                                /* 2 */
	    "foo@x:\n"                                   /* 3 */
	    "foo@x: a@b,, c@d\n"                         /* 4 */
	    "foo@x: a@b,\n"                              /* 5 */
	    "bad: a@b\n"                                 /* 6 */
	    "  foo@x: not valid@x\n"                     /* 7 */
	    ": a@b\n"                                    /* 8 */
	    "foo@x\n"                                    /* 9 */
	    "OK@Example.test: b@example.test\n"          /* 10 */
	    "foo@x:   \t\n"                              /* 11 */
	    "foo@x: a@b, c@-d\n";                        /* 12 */
	static const char *const want[] = {
	    ":2:7: expected ':' after the alias address\n",
	    ":3:7: alias foo@x has no targets\n",
	    ":4:12: empty target\n",
	    ":5:12: empty target\n",
	    ":6:1: invalid alias address \"bad\": missing '@'\n",
	    ":7:10: invalid target address \"not valid@x\": invalid character in local part\n",
	    ":8:1: missing alias address before ':'\n",
	    ":9:6: missing ':' after the alias address\n",
	    ":11:11: alias foo@x has no targets\n",
	    ":12:13: invalid target address \"c@-d\": domain label starts with '-'\n",
	    ":10:1: duplicate alias ok@example.test (first defined on line 1)\n",
	};
	struct aliases *al = (struct aliases *)1;
	char *msg;
	int r = load(s, text, &al, &msg);
	assert_null(al);
	/* Every error is reported, in order, each on its own line. */
	char *expected = xstrdup("");
	for (size_t i = 0; i < ARRAY_LEN(want); i++) {
		char *e = xasprintf("%s%s%s", expected, s->path, want[i]);
		free(expected);
		expected = e;
	}
	assert_string_equal(msg, expected);
	assert_int_equal(r, (int)ARRAY_LEN(want));
	free(expected);
	free(msg);
}

/* ---- expansion -------------------------------------------------------- */

static void test_expand_plain_address(void **state)
{
	struct scratch *s = *state;
	struct aliases *al = load_ok(s, "a@x: b@x\n");
	EXPECT(al, "Someone@Example.TEST", "someone@example.test");
	EXPECT(NULL, "Someone@Example.TEST", "someone@example.test");
	aliases_free(al);
}

static void test_expand_chain_and_fanout(void **state)
{
	struct scratch *s = *state;
	struct aliases *al = load_ok(s,
				     "all@x: staff@x, board@x, ext@remote.example\n"
				     "staff@x: Alice@x, bob@x\n"
				     "board@x: carol@x, chair@x\n"
				     "chair@x: dave@x\n"
				     "root@x: postmaster@x\n"
				     "postmaster@x: admin@x\n");
	/* Breadth first: direct finals, then what the nested aliases give. */
	EXPECT(al, "ALL@x", "ext@remote.example", "alice@x", "bob@x", "carol@x", "dave@x");
	EXPECT(al, "root@x", "admin@x");
	EXPECT(al, "staff@x", "alice@x", "bob@x");
	aliases_free(al);
}

static void test_expand_duplicates(void **state)
{
	struct scratch *s = *state;
	struct aliases *al = load_ok(s,
				     "list@x: a@x, A@X, team1@x, team2@x, b@x\n"
				     "team1@x: b@x, c@x\n"
				     "team2@x: c@x, team1@x, d@x\n");
	EXPECT(al, "list@x", "a@x", "b@x", "c@x", "d@x");
	aliases_free(al);
}

static void test_expand_loops(void **state)
{
	struct scratch *s = *state;
	struct aliases *al = load_ok(s,
				     "a@x: b@x\n"
				     "b@x: a@x\n"
				     "c@x: d@x, keep@x\n"
				     "d@x: c@x\n"
				     "self@x: self@x, other@x\n"
				     "ring1@x: ring2@x, one@x\n"
				     "ring2@x: ring3@x, two@x\n"
				     "ring3@x: ring1@x, three@x\n");
	/* A pure loop has no final address in it: nothing. */
	EXPECT_NOTHING(al, "a@x");
	EXPECT_NOTHING(al, "B@x");
	EXPECT(al, "c@x", "keep@x");
	EXPECT(al, "d@x", "keep@x");
	/* "self: self, other" does not keep a copy for self: self is an alias. */
	EXPECT(al, "self@x", "other@x");
	EXPECT(al, "ring2@x", "two@x", "three@x", "one@x");
	aliases_free(al);
}

/* Build a chain l0 -> l1 -> ... -> l(n-1) -> end@x. */
static char *chain(unsigned n)
{
	char *text = NULL;
	size_t len = 0;
	FILE *fp = open_memstream(&text, &len);
	for (unsigned i = 0; i < n; i++) {
		if (i + 1 < n)
			fprintf(fp, "l%u@x: l%u@x\n", i, i + 1);
		else
			fprintf(fp, "l%u@x: end@x\n", i);
	}
	fclose(fp);
	return text;
}

static void test_expand_depth_limit(void **state)
{
	struct scratch *s = *state;
	/* Ten nested aliases are expanded ... */
	char *text = chain(10);
	struct aliases *al = load_ok(s, text);
	EXPECT(al, "l0@x", "end@x");
	aliases_free(al);
	free(text);
	/* ... an eleventh is not (and is not mistaken for a mailbox). */
	text = chain(11);
	al = load_ok(s, text);
	EXPECT_NOTHING(al, "l0@x");
	EXPECT(al, "l1@x", "end@x");
	aliases_free(al);
	free(text);
	/* A short path wins over a long one to the same alias. */
	text = chain(11);
	char *more = xasprintf("%sshort@x: l0@x, l9@x\n", text);
	al = load_ok(s, more);
	EXPECT(al, "short@x", "end@x");
	aliases_free(al);
	free(more);
	free(text);
}

/* Nine layers of 20 aliases under "top", each naming all of the next
 * layer: 20^9 paths to the bottom, yet each alias is expanded once.  The
 * bottom layer sits at depth 9, the deepest that is still expanded. */
static void test_expand_no_blowup(void **state)
{
	struct scratch *s = *state;
	enum { LAYERS = 9, WIDTH = 20 };
	char *text = NULL;
	size_t len = 0;
	FILE *fp = open_memstream(&text, &len);
	fprintf(fp, "top@x:");
	for (unsigned j = 0; j < WIDTH; j++)
		fprintf(fp, "%s l0-%u@x", j ? "," : "", j);
	fputc('\n', fp);
	for (unsigned i = 0; i < LAYERS; i++) {
		for (unsigned j = 0; j < WIDTH; j++) {
			fprintf(fp, "l%u-%u@x:", i, j);
			if (i + 1 == LAYERS)
				fprintf(fp, " end%u@x", j % 3);
			for (unsigned k = 0; i + 1 < LAYERS && k < WIDTH; k++)
				fprintf(fp, "%s l%u-%u@x", k ? "," : "", i + 1, k);
			fputc('\n', fp);
		}
	}
	fclose(fp);
	struct aliases *al = load_ok(s, text);
	EXPECT(al, "top@x", "end0@x", "end1@x", "end2@x");
	aliases_free(al);
	free(text);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_parse_and_lookup, scratch_setup,
					    scratch_teardown),
	    cmocka_unit_test_setup_teardown(test_parse_empty_file, scratch_setup,
					    scratch_teardown),
	    cmocka_unit_test_setup_teardown(test_missing_file, scratch_setup, scratch_teardown),
	    cmocka_unit_test_setup_teardown(test_parse_errors, scratch_setup, scratch_teardown),
	    cmocka_unit_test_setup_teardown(test_expand_plain_address, scratch_setup,
					    scratch_teardown),
	    cmocka_unit_test_setup_teardown(test_expand_chain_and_fanout, scratch_setup,
					    scratch_teardown),
	    cmocka_unit_test_setup_teardown(test_expand_duplicates, scratch_setup,
					    scratch_teardown),
	    cmocka_unit_test_setup_teardown(test_expand_loops, scratch_setup, scratch_teardown),
	    cmocka_unit_test_setup_teardown(test_expand_depth_limit, scratch_setup,
					    scratch_teardown),
	    cmocka_unit_test_setup_teardown(test_expand_no_blowup, scratch_setup,
					    scratch_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

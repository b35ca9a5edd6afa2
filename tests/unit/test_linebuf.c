/* Unit tests for linebuf, the bounded line reader: line ends and their
 * flags (RFC 5321 §2.3.8), the limits of §4.5.3.1, and that nothing is
 * ever buffered past the limit. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/buffer.h>

#include "lib/linebuf.h"

struct fixture {
	struct evbuffer *in;
	struct linebuf lb;
	struct linebuf_line line;
	char *storage;          /* exactly storage_size bytes, so ASan sees overruns */
	size_t storage_size;
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	assert_non_null(f);
	f->in = evbuffer_new();
	assert_non_null(f->in);
	f->storage_size = LINE_MAX_ANY + 1;
	f->storage = malloc(f->storage_size);
	assert_non_null(f->storage);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	evbuffer_free(f->in);
	free(f->storage);
	free(f);
	return 0;
}

/* Storage of exactly limit + 1 bytes. */
static void set_storage(struct fixture *f, size_t limit)
{
	free(f->storage);
	f->storage_size = limit + 1;
	f->storage = malloc(f->storage_size);
	assert_non_null(f->storage);
}

static void add(struct fixture *f, const void *data, size_t n)
{
	assert_int_equal(evbuffer_add(f->in, data, n), 0);
}

static void add_str(struct fixture *f, const char *s)
{
	add(f, s, strlen(s));
}

/* n bytes of c. */
static void add_fill(struct fixture *f, char c, size_t n)
{
	char *b = malloc(n);
	assert_non_null(b);
	memset(b, c, n);
	add(f, b, n);
	free(b);
}

static enum linebuf_status get(struct fixture *f, size_t limit)
{
	memset(&f->line, 0, sizeof(f->line));
	return linebuf_get(&f->lb, f->in, limit, f->storage, f->storage_size, &f->line);
}

/* The next line must be `want` (a C string) with the given ending. */
static void expect_line(struct fixture *f, size_t limit, const char *want, bool crlf)
{
	assert_int_equal(get(f, limit), LINEBUF_LINE);
	assert_int_equal(f->line.len, strlen(want));
	assert_memory_equal(f->line.data, want, f->line.len);
	assert_int_equal(f->line.data[f->line.len], '\0');
	assert_true(f->line.data == f->storage);
	assert_int_equal(f->line.crlf, crlf);
	assert_int_equal(f->line.bare_lf, !crlf);
}

static void test_empty(void **state)
{
	struct fixture *f = *state;
	assert_int_equal(get(f, LINE_MAX_COMMAND), LINEBUF_NEED_MORE);
	assert_int_equal(evbuffer_get_length(f->in), 0);
}

static void test_split_on_lf(void **state)
{
	struct fixture *f = *state;
	add_str(f, "abc\ndef\n\nlast");
	expect_line(f, LINE_MAX_COMMAND, "abc", false);
	expect_line(f, LINE_MAX_COMMAND, "def", false);
	expect_line(f, LINE_MAX_COMMAND, "", false);
	assert_int_equal(get(f, LINE_MAX_COMMAND), LINEBUF_NEED_MORE);
	assert_int_equal(evbuffer_get_length(f->in), 4);
}

static void test_line_end_flags(void **state)
{
	struct fixture *f = *state;
	add_str(f, "crlf\r\nlf\nin\rside\r\nend\r\r\n\r\n\n\rx\n");

	expect_line(f, LINE_MAX_COMMAND, "crlf", true);
	assert_false(f->line.bare_cr);
	expect_line(f, LINE_MAX_COMMAND, "lf", false);
	assert_false(f->line.bare_cr);
	expect_line(f, LINE_MAX_COMMAND, "in\rside", true);
	assert_true(f->line.bare_cr);
	/* CR CR LF: the line ends in CRLF, the first CR is bare */
	expect_line(f, LINE_MAX_COMMAND, "end\r", true);
	assert_true(f->line.bare_cr);
	expect_line(f, LINE_MAX_COMMAND, "", true);
	assert_false(f->line.bare_cr);
	expect_line(f, LINE_MAX_COMMAND, "", false);
	expect_line(f, LINE_MAX_COMMAND, "\rx", false);
	assert_true(f->line.bare_cr);
	assert_false(f->line.has_nul);
	assert_int_equal(get(f, LINE_MAX_COMMAND), LINEBUF_NEED_MORE);
}

static void test_bare_cr_is_no_line_end(void **state)
{
	struct fixture *f = *state;
	add_str(f, "a\rb\r");
	assert_int_equal(get(f, LINE_MAX_COMMAND), LINEBUF_NEED_MORE);
	add_str(f, "c");
	assert_int_equal(get(f, LINE_MAX_COMMAND), LINEBUF_NEED_MORE);
	add_str(f, "\r\n");
	expect_line(f, LINE_MAX_COMMAND, "a\rb\rc", true);
	assert_true(f->line.bare_cr);
}

static void test_nul(void **state)
{
	struct fixture *f = *state;
	add(f, "a\0b\r\n\0\n", 7);
	assert_int_equal(get(f, LINE_MAX_COMMAND), LINEBUF_LINE);
	assert_int_equal(f->line.len, 3);
	assert_true(f->line.crlf);
	assert_false(f->line.bare_cr);
	assert_true(f->line.has_nul);
	assert_memory_equal(f->line.data, "a\0b", 4);
	assert_int_equal(get(f, LINE_MAX_COMMAND), LINEBUF_LINE);
	assert_int_equal(f->line.len, 1);
	assert_true(f->line.has_nul);
	assert_true(f->line.bare_lf);
	add_str(f, "clean\r\n");
	expect_line(f, LINE_MAX_COMMAND, "clean", true);
	assert_false(f->line.has_nul);
}

static void test_partial_line(void **state)
{
	struct fixture *f = *state;
	add_str(f, "MAIL FROM:<a@");
	assert_int_equal(get(f, LINE_MAX_COMMAND), LINEBUF_NEED_MORE);
	assert_int_equal(evbuffer_get_length(f->in), 13);
	add_str(f, "b.test>\r");
	assert_int_equal(get(f, LINE_MAX_COMMAND), LINEBUF_NEED_MORE);
	add_str(f, "\nRCPT");
	expect_line(f, LINE_MAX_COMMAND, "MAIL FROM:<a@b.test>", true);
	assert_int_equal(get(f, LINE_MAX_COMMAND), LINEBUF_NEED_MORE);
	add_str(f, " TO:<c@d.test>\r\n");
	expect_line(f, LINE_MAX_COMMAND, "RCPT TO:<c@d.test>", true);
	assert_int_equal(evbuffer_get_length(f->in), 0);
}

/* A line of exactly `limit` octets including CRLF, all at once and one
 * byte at a time. */
static void check_exact_limit(struct fixture *f, size_t limit)
{
	set_storage(f, limit);
	add_fill(f, 'x', limit - 2);
	add_str(f, "\r\n");
	assert_int_equal(get(f, limit), LINEBUF_LINE);
	assert_int_equal(f->line.len, limit - 2);
	assert_true(f->line.crlf);

	for (size_t i = 0; i < limit - 2; i++) {
		add_str(f, "y");
		assert_int_equal(get(f, limit), LINEBUF_NEED_MORE);
	}
	add_str(f, "\r");
	assert_int_equal(get(f, limit), LINEBUF_NEED_MORE);
	add_str(f, "\n");
	assert_int_equal(get(f, limit), LINEBUF_LINE);
	assert_int_equal(f->line.len, limit - 2);
	assert_int_equal(f->line.data[0], 'y');

	/* bare LF: limit counts the one-octet line end */
	add_fill(f, 'z', limit - 1);
	add_str(f, "\n");
	assert_int_equal(get(f, limit), LINEBUF_LINE);
	assert_int_equal(f->line.len, limit - 1);
	assert_true(f->line.bare_lf);
	assert_int_equal(evbuffer_get_length(f->in), 0);
}

/* One octet more than `limit` (>= 3): too long, reported once, then the
 * next line is intact. */
static void check_one_over(struct fixture *f, size_t limit)
{
	set_storage(f, limit);
	add_fill(f, 'x', limit - 1);
	add_str(f, "\r\nN\r\n");
	assert_int_equal(get(f, limit), LINEBUF_TOO_LONG);
	expect_line(f, limit, "N", true);
	assert_int_equal(get(f, limit), LINEBUF_NEED_MORE);

	/* byte by byte: TOO_LONG as soon as limit octets hold no LF */
	for (size_t i = 0; i < limit - 1; i++) {
		add_str(f, "y");
		assert_int_equal(get(f, limit), LINEBUF_NEED_MORE);
	}
	add_str(f, "\r");
	assert_int_equal(get(f, limit), LINEBUF_TOO_LONG);
	assert_int_equal(evbuffer_get_length(f->in), 0);
	add_str(f, "\n");
	assert_int_equal(get(f, limit), LINEBUF_NEED_MORE);
	add_str(f, "K\r\n");
	expect_line(f, limit, "K", true);

	/* bare LF one over */
	add_fill(f, 'z', limit);
	add_str(f, "\nA\n");
	assert_int_equal(get(f, limit), LINEBUF_TOO_LONG);
	expect_line(f, limit, "A", false);
}

static void test_limits_exact(void **state)
{
	struct fixture *f = *state;
	check_exact_limit(f, LINE_MAX_COMMAND);
	check_exact_limit(f, LINE_MAX_TEXT);
	check_exact_limit(f, LINE_MAX_AUTH);
	check_exact_limit(f, 3);
}

static void test_limits_one_over(void **state)
{
	struct fixture *f = *state;
	check_one_over(f, LINE_MAX_COMMAND);
	check_one_over(f, LINE_MAX_COMMAND_EXT);
	check_one_over(f, LINE_MAX_TEXT);
	check_one_over(f, LINE_MAX_AUTH);
	check_one_over(f, 3);
}

/* A huge line in many small chunks: TOO_LONG once, everything up to its
 * LF dropped, and the line after it returned intact. */
static void test_too_long_once(void **state)
{
	struct fixture *f = *state;
	size_t limit = LINE_MAX_COMMAND, too_long = 0;
	add_str(f, "NOOP\r\n");
	expect_line(f, limit, "NOOP", true);
	for (int i = 0; i < 1000; i++) {
		add_fill(f, (char)('a' + i % 26), 100);
		if (i % 7 == 3)
			add_str(f, "\r"); /* bare CRs inside do not end it */
		enum linebuf_status st = get(f, limit);
		assert_true(st == LINEBUF_NEED_MORE || st == LINEBUF_TOO_LONG);
		if (st == LINEBUF_TOO_LONG)
			too_long++;
		assert_true(evbuffer_get_length(f->in) <= limit);
	}
	assert_int_equal(too_long, 1);
	add_str(f, "tail of the long line\r\nQUIT\r\nRSET\r\n");
	expect_line(f, limit, "QUIT", true);
	expect_line(f, limit, "RSET", true);
	assert_int_equal(get(f, limit), LINEBUF_NEED_MORE);
	assert_false(f->lb.discarding);
}

/* An over-long line whose end is already in the buffer, pipelined between
 * two good ones. */
static void test_too_long_complete(void **state)
{
	struct fixture *f = *state;
	size_t limit = LINE_MAX_TEXT;
	add_str(f, "first\r\n");
	add_fill(f, 'q', 5000);
	add_str(f, "\r\nsecond\r\n");
	expect_line(f, limit, "first", true);
	assert_int_equal(get(f, limit), LINEBUF_TOO_LONG);
	assert_false(f->lb.discarding);
	expect_line(f, limit, "second", true);
	assert_int_equal(get(f, limit), LINEBUF_NEED_MORE);
}

/* RFC 5321 §4.5.3.1: nothing is buffered without bound.  A 5 MB line fed
 * in 64 KiB chunks never leaves more than limit octets in the buffer. */
static void test_five_megabytes(void **state)
{
	struct fixture *f = *state;
	const size_t chunk = 64 * 1024, total = 5 * 1024 * 1024;
	const size_t limit = LINE_MAX_COMMAND;
	char *b = malloc(chunk);
	assert_non_null(b);
	memset(b, 'm', chunk);
	size_t too_long = 0;
	for (size_t sent = 0; sent < total; sent += chunk) {
		add(f, b, chunk);
		enum linebuf_status st;
		while ((st = get(f, limit)) == LINEBUF_TOO_LONG)
			too_long++;
		assert_int_equal(st, LINEBUF_NEED_MORE);
		assert_true(evbuffer_get_length(f->in) <= limit);
	}
	free(b);
	assert_int_equal(too_long, 1);
	add_str(f, "\r\nDATA\r\n");
	expect_line(f, limit, "DATA", true);
	assert_int_equal(evbuffer_get_length(f->in), 0);
}

/* A buffer holding less than the limit without a line end is kept whole;
 * a partial line grows to limit - 1 octets and no further. */
static void test_partial_bounded(void **state)
{
	struct fixture *f = *state;
	size_t limit = LINE_MAX_COMMAND;
	add_fill(f, 'p', limit - 1);
	assert_int_equal(get(f, limit), LINEBUF_NEED_MORE);
	assert_int_equal(evbuffer_get_length(f->in), limit - 1);
	add_str(f, "p");
	assert_int_equal(get(f, limit), LINEBUF_TOO_LONG);
	assert_int_equal(evbuffer_get_length(f->in), 0);
	assert_true(f->lb.discarding);
	add_str(f, "\n");
	assert_int_equal(get(f, limit), LINEBUF_NEED_MORE);
	assert_false(f->lb.discarding);
}

static void test_pipelined(void **state)
{
	struct fixture *f = *state;
	static const char *const cmds[] = {
		"EHLO client.test", "MAIL FROM:<a@b.test>", "RCPT TO:<c@d.test>",
		"RCPT TO:<e@f.test>", "DATA",
	};
	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
		add_str(f, cmds[i]);
		add_str(f, "\r\n");
	}
	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
		expect_line(f, LINE_MAX_COMMAND, cmds[i], true);
	assert_int_equal(get(f, LINE_MAX_COMMAND), LINEBUF_NEED_MORE);
	assert_int_equal(evbuffer_get_length(f->in), 0);
}

/* The limit can change from call to call (command vs AUTH vs text). */
static void test_limit_per_call(void **state)
{
	struct fixture *f = *state;
	add_str(f, "AUTH PLAIN\r\n");
	add_fill(f, 'A', 4000);
	add_str(f, "\r\n");
	add_fill(f, 'B', 4000);
	add_str(f, "\r\n");
	expect_line(f, LINE_MAX_COMMAND, "AUTH PLAIN", true);
	assert_int_equal(get(f, LINE_MAX_AUTH), LINEBUF_LINE);
	assert_int_equal(f->line.len, 4000);
	assert_int_equal(get(f, LINE_MAX_COMMAND), LINEBUF_TOO_LONG);
	assert_int_equal(get(f, LINE_MAX_COMMAND), LINEBUF_NEED_MORE);
}

/* RFC 5321 §4.1.1.4: whether the line before ended in CRLF is known to the
 * next line, also when that line was too long and dropped, and when its
 * CR and LF came in different reads. */
static void test_after_crlf(void **state)
{
	struct fixture *f = *state;
	size_t limit = LINE_MAX_TEXT;
	add_str(f, "first\r\nbare\n.\r\n");
	expect_line(f, limit, "first", true);
	assert_true(f->line.after_crlf); /* the first line of a reader */
	expect_line(f, limit, "bare", false);
	assert_true(f->line.after_crlf);
	expect_line(f, limit, ".", true);
	assert_false(f->line.after_crlf);

	/* over-long, whole in the buffer, ended in CRLF */
	add_fill(f, 'q', 5000);
	add_str(f, "\r\n.\r\n");
	assert_int_equal(get(f, limit), LINEBUF_TOO_LONG);
	expect_line(f, limit, ".", true);
	assert_true(f->line.after_crlf);

	/* over-long, ended in a bare LF */
	add_fill(f, 'q', 5000);
	add_str(f, "\n.\r\n");
	assert_int_equal(get(f, limit), LINEBUF_TOO_LONG);
	expect_line(f, limit, ".", true);
	assert_false(f->line.after_crlf);

	/* over-long, its CR at the end of one read and its LF in the next */
	add_fill(f, 'q', 2000);
	assert_int_equal(get(f, limit), LINEBUF_TOO_LONG);
	add_fill(f, 'q', 3000);
	add_str(f, "\r");
	assert_int_equal(get(f, limit), LINEBUF_NEED_MORE);
	assert_int_equal(evbuffer_get_length(f->in), 0);
	add_str(f, "\n.\r\n");
	expect_line(f, limit, ".", true);
	assert_true(f->line.after_crlf);

	/* the CR that ended one read was not the last octet before the LF */
	add_fill(f, 'q', 2000);
	add_str(f, "\r");
	assert_int_equal(get(f, limit), LINEBUF_TOO_LONG);
	add_str(f, "x");
	assert_int_equal(get(f, limit), LINEBUF_NEED_MORE);
	add_str(f, "\n.\r\n");
	expect_line(f, limit, ".", true);
	assert_false(f->line.after_crlf);

	/* reset: a fresh start counts as after CRLF */
	add_str(f, "x\n");
	expect_line(f, limit, "x", false);
	linebuf_reset(&f->lb);
	add_str(f, ".\r\n");
	expect_line(f, limit, ".", true);
	assert_true(f->line.after_crlf);
}

/* Peek, then take into storage sized to the line: the same lines and the
 * same over-long handling as linebuf_get, storage never larger than the
 * line. */
static void test_peek_and_take(void **state)
{
	struct fixture *f = *state;
	const char *data = "a1 NOOP\r\nlonger line here\n";
	add(f, data, strlen(data));
	size_t n = 0;
	assert_int_equal(linebuf_peek(&f->lb, f->in, 64, &n), LINEBUF_LINE);
	assert_int_equal(n, 9);
	assert_int_equal(evbuffer_get_length(f->in), strlen(data)); /* still there */
	char *exact = malloc(n + 1);
	assert_non_null(exact);
	linebuf_take(&f->lb, f->in, n, exact, n + 1, &f->line);
	assert_string_equal(f->line.data, "a1 NOOP");
	assert_true(f->line.crlf);
	free(exact);
	assert_int_equal(linebuf_peek(&f->lb, f->in, 64, &n), LINEBUF_LINE);
	assert_int_equal(n, 17);
	exact = malloc(n + 1);
	assert_non_null(exact);
	linebuf_take(&f->lb, f->in, n, exact, n + 1, &f->line);
	assert_string_equal(f->line.data, "longer line here");
	assert_true(f->line.bare_lf);
	free(exact);
	/* over the limit: reported once, dropped to the line end */
	add(f, "0123456789abcdef", 16);
	assert_int_equal(linebuf_peek(&f->lb, f->in, 8, &n), LINEBUF_TOO_LONG);
	add(f, "xyz\nok\n", 7);
	assert_int_equal(linebuf_peek(&f->lb, f->in, 8, &n), LINEBUF_LINE);
	assert_int_equal(n, 3);
	char three[4];
	linebuf_take(&f->lb, f->in, n, three, sizeof three, &f->line);
	assert_string_equal(f->line.data, "ok");
	assert_int_equal(linebuf_peek(&f->lb, f->in, 8, &n), LINEBUF_NEED_MORE);
}

/* A limit that does not fit the storage is a programming error. */
static void test_bad_limit_is_fatal(void **state)
{
	struct fixture *f = *state;
	static const size_t limits[] = { 0, 16 };
	for (size_t i = 0; i < 2; i++) {
		pid_t pid = fork();
		assert_true(pid >= 0);
		if (pid == 0) {
			char small[16];
			struct linebuf_line l;
			close(STDERR_FILENO);
			linebuf_get(&f->lb, f->in, limits[i], small, sizeof(small), &l);
			_exit(0);
		}
		int status;
		assert_int_equal(waitpid(pid, &status, 0), pid);
		assert_true(WIFEXITED(status));
		assert_int_equal(WEXITSTATUS(status), 1);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_empty, setup, teardown),
		cmocka_unit_test_setup_teardown(test_split_on_lf, setup, teardown),
		cmocka_unit_test_setup_teardown(test_line_end_flags, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bare_cr_is_no_line_end, setup, teardown),
		cmocka_unit_test_setup_teardown(test_nul, setup, teardown),
		cmocka_unit_test_setup_teardown(test_partial_line, setup, teardown),
		cmocka_unit_test_setup_teardown(test_limits_exact, setup, teardown),
		cmocka_unit_test_setup_teardown(test_limits_one_over, setup, teardown),
		cmocka_unit_test_setup_teardown(test_too_long_once, setup, teardown),
		cmocka_unit_test_setup_teardown(test_too_long_complete, setup, teardown),
		cmocka_unit_test_setup_teardown(test_five_megabytes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_partial_bounded, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pipelined, setup, teardown),
		cmocka_unit_test_setup_teardown(test_limit_per_call, setup, teardown),
		cmocka_unit_test_setup_teardown(test_after_crlf, setup, teardown),
		cmocka_unit_test_setup_teardown(test_peek_and_take, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_limit_is_fatal, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

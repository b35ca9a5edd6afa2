/* Unit tests of smtp_data: end of data, dot-unstuffing, bare CR/LF
 * (SMTP smuggling), size and long lines. */
#include <setjmp.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <event2/buffer.h>

#include "lib/linebuf.h"
#include "proto/smtp/smtp_data.h"

/* Feed raw bytes through the real line reader into smtp_data; collect the
 * stored text (with CRLF after each line) and whether the end was seen. */
struct feed {
	char stored[8192];
	size_t stored_len;
	int ended;
	size_t consumed_after_end; /* bytes left in the buffer after the end */
	size_t plain_taken;     /* bytes taken as runs of plain lines */
};

/* Whole plain lines at the head of in taken at once, as the session does
 * before it asks the line reader (smtp_data_plain_lines): true if any. */
static bool feed_plain_lines(struct smtp_data *d, struct linebuf *lb, struct evbuffer *in,
			     struct feed *f)
{
	struct evbuffer_iovec v;
	if (!linebuf_between_lines(lb) || evbuffer_peek(in, -1, NULL, &v, 1) < 1)
		return false;
	size_t k = smtp_data_plain_lines(d, v.iov_base, v.iov_len);
	if (k == 0)
		return false;
	assert_true(f->stored_len + k <= sizeof f->stored);
	memcpy(f->stored + f->stored_len, v.iov_base, k);
	f->stored_len += k;
	f->plain_taken += k;
	linebuf_skip_lines(lb, in, k);
	return true;
}

/* The bytes arrive in reads of at most chunk octets, each its own piece
 * of the buffer (a line may be split between two); with plain, runs of
 * plain lines are taken whole as the session takes them, else every line
 * goes through the line reader. */
static void feed_with(struct smtp_data *d, const char *bytes, size_t n, size_t chunk, bool plain,
		      struct feed *f)
{
	struct evbuffer *in = evbuffer_new();
	struct linebuf lb = {0};
	char line[SMTP_DATA_READ_MAX + 1];
	assert_non_null(in);
	memset(f, 0, sizeof *f);
	for (size_t off = 0; off < n && !f->ended;) {
		size_t c = n - off < chunk ? n - off : chunk;
		assert_int_equal(evbuffer_add_reference(in, bytes + off, c, NULL, NULL), 0);
		off += c;
		for (;;) {
			if (plain && feed_plain_lines(d, &lb, in, f))
				continue;
			struct linebuf_line l;
			enum linebuf_status st =
			    linebuf_get(&lb, in, SMTP_DATA_READ_MAX, line, sizeof line, &l);
			if (st == LINEBUF_NEED_MORE)
				break;
			if (st == LINEBUF_TOO_LONG) {
				smtp_data_long_line(d);
				continue;
			}
			const char *text;
			size_t len;
			if (smtp_data_line(d, &l, &text, &len) == SMTP_DATA_END) {
				f->ended = 1;
				f->consumed_after_end = evbuffer_get_length(in) + (n - off);
				break;
			}
			if (text) {
				assert_true(f->stored_len + len + 2 <= sizeof f->stored);
				memcpy(f->stored + f->stored_len, text, len);
				f->stored_len += len;
				memcpy(f->stored + f->stored_len, "\r\n", 2);
				f->stored_len += 2;
			}
		}
	}
	if (!f->ended)
		f->consumed_after_end = evbuffer_get_length(in);
	evbuffer_free(in);
}

static void feed_in_chunks(struct smtp_data *d, const char *bytes, size_t n, size_t chunk,
			   struct feed *f)
{
	feed_with(d, bytes, n, chunk, true, f);
}

static void feed(struct smtp_data *d, const char *bytes, size_t n, struct feed *f)
{
	feed_in_chunks(d, bytes, n, n, f);
}

static void test_plain_message_ends_at_crlf_dot_crlf(void **state)
{
	struct smtp_data d;
	struct feed f;
	const char msg[] = "Subject: x\r\n\r\nhello\r\n.\r\nQUIT\r\n";
	smtp_data_begin(&d, 1000000);
	feed(&d, msg, sizeof msg - 1, &f);
	assert_true(f.ended);
	assert_int_equal(d.flags, 0);
	assert_int_equal(f.stored_len, strlen("Subject: x\r\n\r\nhello\r\n"));
	assert_memory_equal(f.stored, "Subject: x\r\n\r\nhello\r\n", f.stored_len);
	assert_int_equal(f.consumed_after_end, strlen("QUIT\r\n"));
}

static void test_dot_unstuffing(void **state)
{
	struct smtp_data d;
	struct feed f;
	const char msg[] = "..x\r\n.\t\r\n...\r\n..\r\n.\r\n";
	smtp_data_begin(&d, 1000000);
	feed(&d, msg, sizeof msg - 1, &f);
	assert_true(f.ended);
	assert_int_equal(d.flags, 0);
	const char want[] = ".x\r\n\t\r\n..\r\n.\r\n";
	assert_int_equal(f.stored_len, sizeof want - 1);
	assert_memory_equal(f.stored, want, sizeof want - 1);
}

static void test_empty_message(void **state)
{
	struct smtp_data d;
	struct feed f;
	smtp_data_begin(&d, 10);
	feed(&d, ".\r\n", 3, &f);
	assert_true(f.ended);
	assert_int_equal(f.stored_len, 0);
	assert_int_equal(d.size, 0);
}

static void test_lf_dot_lf_is_not_the_end(void **state)
{
	/* the smuggling pattern: "\n.\n" then a second transaction */
	struct smtp_data d;
	struct feed f;
	const char msg[] = "a\r\nb\n.\nMAIL FROM:<evil@x>\r\nRCPT TO:<v@y>\r\nDATA\r\nsmuggled\r\n";
	smtp_data_begin(&d, 1000000);
	feed(&d, msg, sizeof msg - 1, &f);
	assert_false(f.ended);
	assert_true(d.flags & SMTP_DATA_BARE_EOL);
}

static void test_crlf_dot_lf_is_not_the_end(void **state)
{
	struct smtp_data d;
	struct feed f;
	const char msg[] = "a\r\n.\nMAIL FROM:<evil@x>\r\n";
	smtp_data_begin(&d, 1000000);
	feed(&d, msg, sizeof msg - 1, &f);
	assert_false(f.ended);
	assert_true(d.flags & SMTP_DATA_BARE_EOL);
}

static void test_lf_dot_crlf_is_not_the_end(void **state)
{
	/* a dot line after a bare LF: the preceding <CRLF> is missing */
	struct smtp_data d;
	struct feed f;
	const char msg[] = "a\n.\r\nMAIL FROM:<evil@x>\r\n";
	smtp_data_begin(&d, 1000000);
	feed(&d, msg, sizeof msg - 1, &f);
	assert_false(f.ended);
	assert_true(d.flags & SMTP_DATA_BARE_EOL);
	/* and the real end still works afterwards */
	const char rest[] = "x\r\n.\r\n";
	feed(&d, rest, sizeof rest - 1, &f);
	assert_true(f.ended);
}

static void test_bare_cr_flagged(void **state)
{
	struct smtp_data d;
	struct feed f;
	const char msg[] = "a\rb\r\n.\r\n";
	smtp_data_begin(&d, 1000000);
	feed(&d, msg, sizeof msg - 1, &f);
	assert_true(f.ended);
	assert_true(d.flags & SMTP_DATA_BARE_EOL);
	assert_int_equal(f.stored_len, 0); /* refused text is not stored */
}

static void test_nul_flagged(void **state)
{
	struct smtp_data d;
	struct feed f;
	const char msg[] = "a\0b\r\n.\r\n";
	smtp_data_begin(&d, 1000000);
	feed(&d, msg, sizeof msg - 1, &f);
	assert_true(f.ended);
	assert_true(d.flags & SMTP_DATA_NUL);
}

static void test_size_limit(void **state)
{
	struct smtp_data d;
	struct feed f;
	const char msg[] = "12345678\r\n12345678\r\n.\r\n"; /* 20 octets */
	smtp_data_begin(&d, 20);
	feed(&d, msg, sizeof msg - 1, &f);
	assert_true(f.ended);
	assert_int_equal(d.flags, 0);
	assert_int_equal(d.size, 20);
	smtp_data_begin(&d, 19);
	feed(&d, msg, sizeof msg - 1, &f);
	assert_true(f.ended);
	assert_true(d.flags & SMTP_DATA_TOO_BIG);
}

static void test_long_line_flagged_and_end_still_found(void **state)
{
	struct smtp_data d;
	struct feed f;
	static char msg[3000];
	memset(msg, 'x', 1500);
	memcpy(msg + 1500, "\r\nok\r\n.\r\n", 9);
	smtp_data_begin(&d, 1000000);
	feed(&d, msg, 1509, &f);
	assert_true(f.ended);
	assert_true(d.flags & SMTP_DATA_LONG_LINE);
}

static void test_line_of_exactly_1000_octets_accepted(void **state)
{
	struct smtp_data d;
	struct feed f;
	static char msg[1100];
	memset(msg, 'y', 998);
	memcpy(msg + 998, "\r\n.\r\n", 5);
	smtp_data_begin(&d, 1000000);
	feed(&d, msg, 1003, &f);
	assert_true(f.ended);
	assert_int_equal(d.flags, 0);
	assert_int_equal(f.stored_len, 1000);
}

static void test_stuffed_line_of_1001_octets_accepted(void **state)
{
	/* RFC 5321 §4.5.3.1.6: the limit does not count the stuffing dot */
	struct smtp_data d;
	struct feed f;
	static char msg[1100];
	msg[0] = '.';
	memset(msg + 1, '.', 998);
	memcpy(msg + 999, "\r\n.\r\n", 5);
	smtp_data_begin(&d, 1000000);
	feed(&d, msg, 1004, &f);
	assert_true(f.ended);
	assert_int_equal(d.flags, 0);
	assert_int_equal(f.stored_len, 1000);
}

static void test_unstuffed_line_of_1001_octets_refused(void **state)
{
	struct smtp_data d;
	struct feed f;
	static char msg[1100];
	memset(msg, 'z', 999);
	memcpy(msg + 999, "\r\n.\r\n", 5);
	smtp_data_begin(&d, 1000000);
	feed(&d, msg, 1004, &f);
	assert_true(f.ended);
	assert_true(d.flags & SMTP_DATA_LONG_LINE);
}

/* A message with one over-long line at `at` (0 first, 1 middle, 2 last,
 * 3 alone) of `len` octets, then the end of data and a command. */
static size_t long_line_message(char *out, size_t outsz, int at, size_t len)
{
	static const char *const before[] = { "", "Subject: t\r\n\r\na\r\n",
					      "Subject: t\r\n\r\n", "" };
	static const char *const after[] = { "\r\nb\r\n", "\r\nb\r\n", "\r\n", "\r\n" };
	size_t n = strlen(before[at]);
	assert_true(n + len + strlen(after[at]) + 12 <= outsz);
	memcpy(out, before[at], n);
	memset(out + n, 'L', len);
	n += len;
	memcpy(out + n, after[at], strlen(after[at]));
	n += strlen(after[at]);
	memcpy(out + n, ".\r\nRSET\r\n", 9);
	return n + 9;
}

/* The over-long line refuses the message, and the end of data right
 * after it is still the end (the refusal is given at once): wherever the
 * line stands, whatever its length, in one read or in many. */
static void test_long_line_then_end_of_data(void **state)
{
	static const size_t lengths[] = { 999, 1001, 65536, 1024 * 1024 };
	static const size_t chunks[] = { 1, 7, 1000, 4096, 1 << 30 };
	char *msg = malloc(1024 * 1024 + 100);
	assert_non_null(msg);
	for (int at = 0; at < 4; at++) {
		for (size_t li = 0; li < sizeof lengths / sizeof lengths[0]; li++) {
			size_t n = long_line_message(msg, 1024 * 1024 + 100, at, lengths[li]);
			for (size_t ci = 0; ci < sizeof chunks / sizeof chunks[0]; ci++) {
				if (chunks[ci] < 1000 && lengths[li] > 65536)
					continue; /* a megabyte a byte at a time: slow, nothing new */
				struct smtp_data d;
				struct feed f;
				smtp_data_begin(&d, 10 * 1024 * 1024);
				feed_in_chunks(&d, msg, n, chunks[ci], &f);
				assert_true(f.ended);
				assert_int_equal(f.consumed_after_end, strlen("RSET\r\n"));
				assert_true(d.flags & SMTP_DATA_LONG_LINE);
			}
		}
	}
	free(msg);
}

/* A dropped line that ends in a bare LF does not start <CRLF>.<CRLF>:
 * the dot line after it is text (§2.3.8, no smuggling). */
static void test_long_line_with_bare_lf_is_not_before_the_end(void **state)
{
	struct smtp_data d;
	struct feed f;
	static const char tail[] = "\n.\r\nMAIL FROM:<evil@x>\r\n";
	static char msg[1500 + sizeof tail];
	memset(msg, 'x', 1500);
	memcpy(msg + 1500, tail, sizeof tail - 1);
	smtp_data_begin(&d, 1000000);
	feed(&d, msg, 1500 + sizeof tail - 1, &f);
	assert_false(f.ended);
	assert_true(d.flags & SMTP_DATA_LONG_LINE);
	feed(&d, "x\r\n.\r\n", 6, &f);
	assert_true(f.ended);
}

/* ---- runs of plain lines ------------------------------------------------ */

/* What smtp_data_plain_lines takes from the start of a buffer. */
static void test_plain_lines_table(void **state)
{
	static char longest[1000], too_long[1001];
	memset(longest, 'x', 998);
	memcpy(longest + 998, "\r\n", 2);
	memset(too_long, 'x', 999);
	memcpy(too_long + 999, "\r\n", 2);
	static const struct {
		const char *in;
		size_t len;     /* 0: strlen */
		uint64_t limit;
		size_t taken;
	} cases[] = {
		{"a\r\nb\r\n", 0, 1000, 6},
		{"\r\n\r\nx\r\n", 0, 1000, 7},          /* empty lines are plain */
		{"a\r\n.\r\nMAIL FROM:<x>\r\n", 0, 1000, 3}, /* stops at the end of data */
		{".\r\n", 0, 1000, 0},
		{"a\r\n..b\r\n", 0, 1000, 3},          /* stuffed: line by line */
		{"a\r\nb", 0, 1000, 3},                /* a partial line waits */
		{"a\r\nb\r", 0, 1000, 3},              /* CR at the buffer's end */
		{"a\nb\r\n", 0, 1000, 0},              /* bare LF */
		{"a\r\nb\n.\r\n", 0, 1000, 3},         /* bare LF before a dot */
		{"a\rb\r\n", 0, 1000, 0},              /* bare CR */
		{"a\r\r\n", 0, 1000, 0},
		{"a\r\nb\0c\r\nd\r\n", 11, 1000, 3},   /* NUL */
		{"\n", 0, 1000, 0},
		{"ab\r\ncd\r\n", 0, 8, 8},             /* exactly the limit */
		{"ab\r\ncd\r\n", 0, 7, 4},             /* the line past it waits */
		{"ab\r\n", 0, 0, 0},
		{longest, 1000, 1000000, 1000},        /* 1000 octets with CRLF */
		{too_long, 1001, 1000000, 0},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		struct smtp_data d;
		smtp_data_begin(&d, cases[i].limit);
		size_t len = cases[i].len ? cases[i].len : strlen(cases[i].in);
		size_t taken = smtp_data_plain_lines(&d, cases[i].in, len);
		if (taken != cases[i].taken)
			fail_msg("case %zu: took %zu, want %zu", i, taken, cases[i].taken);
		assert_int_equal(d.size, taken);
		assert_int_equal(d.flags, 0);
		assert_int_equal(d.at_start, taken == 0);
	}
	struct smtp_data d;
	smtp_data_begin(&d, 1000);
	d.flags = SMTP_DATA_BARE_EOL; /* refused already: nothing is plain */
	assert_int_equal(smtp_data_plain_lines(&d, "a\r\n", 3), 0);
}

/* Runs of plain lines change nothing: for each message, limit and size of
 * the reads, the text stored, the flags, the size and where the data ended
 * are those of the line-by-line path. */
static void test_plain_lines_same_as_line_by_line(void **state)
{
	static char long_line[1100];
	memset(long_line, 'y', 1050);
	memcpy(long_line + 1050, "\r\nz\r\n.\r\n", 8);
	static const char *const msgs[] = {
		"Subject: x\r\n\r\nhello\r\nworld\r\n.\r\nQUIT\r\n",
		".\r\n",
		"a\r\n..b\r\n...\r\n. \r\n.\r\n",
		"a\r\nb\n.\r\nc\r\n.\r\n",              /* bare LF before a dot */
		"a\r\n.\nb\r\n.\r\n",
		"a\r\nb\r.\r\n.\r\n",                   /* bare CR */
		"a\r\n\r\n\r\n.\r\n",
		"ab\r\ncd\r\nef\r\ngh\r\n.\r\nRSET\r\n",
		"x\r\n.\r",                             /* the end not all here */
		long_line,
	};
	static const size_t nul_msg_len = 14;
	static const char nul_msg[] = "a\r\nb\0c\r\nd\r\n.\r\n";
	static const uint64_t limits[] = {0, 3, 7, 8, 12, 1000000};
	static const size_t chunks[] = {1, 2, 3, 4, 5, 7, 16, 4096};
	for (size_t m = 0; m <= sizeof msgs / sizeof msgs[0]; m++) {
		const char *msg = m < sizeof msgs / sizeof msgs[0] ? msgs[m] : nul_msg;
		size_t n = msg == nul_msg ? nul_msg_len : strlen(msg);
		for (size_t li = 0; li < sizeof limits / sizeof limits[0]; li++) {
			for (size_t ci = 0; ci < sizeof chunks / sizeof chunks[0]; ci++) {
				struct smtp_data a, b;
				static struct feed fa, fb;
				smtp_data_begin(&a, limits[li]);
				smtp_data_begin(&b, limits[li]);
				feed_with(&a, msg, n, chunks[ci], false, &fa);
				feed_with(&b, msg, n, chunks[ci], true, &fb);
				if (fa.stored_len != fb.stored_len || fa.ended != fb.ended ||
				    fa.consumed_after_end != fb.consumed_after_end ||
				    a.flags != b.flags || a.size != b.size ||
				    memcmp(fa.stored, fb.stored, fa.stored_len) != 0)
					fail_msg("message %zu, limit %llu, reads of %zu differ", m,
						 (unsigned long long)limits[li], chunks[ci]);
				assert_int_equal(fa.plain_taken, 0);
			}
		}
	}
	/* and the runs are taken: the first message in one read */
	struct smtp_data d;
	static struct feed f;
	smtp_data_begin(&d, 1000000);
	feed_in_chunks(&d, msgs[0], strlen(msgs[0]), 4096, &f);
	assert_true(f.ended);
	assert_int_equal(f.plain_taken, strlen("Subject: x\r\n\r\nhello\r\nworld\r\n"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_plain_message_ends_at_crlf_dot_crlf),
		cmocka_unit_test(test_dot_unstuffing),
		cmocka_unit_test(test_empty_message),
		cmocka_unit_test(test_lf_dot_lf_is_not_the_end),
		cmocka_unit_test(test_crlf_dot_lf_is_not_the_end),
		cmocka_unit_test(test_lf_dot_crlf_is_not_the_end),
		cmocka_unit_test(test_bare_cr_flagged),
		cmocka_unit_test(test_nul_flagged),
		cmocka_unit_test(test_size_limit),
		cmocka_unit_test(test_long_line_flagged_and_end_still_found),
		cmocka_unit_test(test_line_of_exactly_1000_octets_accepted),
		cmocka_unit_test(test_stuffed_line_of_1001_octets_accepted),
		cmocka_unit_test(test_unstuffed_line_of_1001_octets_refused),
		cmocka_unit_test(test_long_line_then_end_of_data),
		cmocka_unit_test(test_long_line_with_bare_lf_is_not_before_the_end),
		cmocka_unit_test(test_plain_lines_table),
		cmocka_unit_test(test_plain_lines_same_as_line_by_line),
	};
	return cmocka_run_group_tests_name("smtp_data", tests, NULL, NULL);
}

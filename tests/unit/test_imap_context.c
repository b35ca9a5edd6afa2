/* Unit tests for imap_context: status responses (RFC 3501 §7.1) leave
 * whole, however long, up to IMAP_REPLY_TEXT_MAX; a longer one is never
 * cut but replaced by a generic text with the same status, and counted.
 * A response that cannot be built (no memory, forced here by freezing the
 * end of its evbuffer) is never sent in part: the first failure sticks,
 * and the session logs it once and closes.  The session's replies go
 * through a real connection (conn.c over a socket pair). */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <fcntl.h>

#include <cmocka.h>
#include <event2/buffer.h>
#include <event2/event.h>

#include "conf/conf.h"
#include "lib/log.h"
#include "net/conn.h"
#include "proto/imap/imap_context.h"

/* ---- imap_reply_format ------------------------------------------------------ */

static bool format(struct imap_out *out, const char *tag, const char *status, const char *fmt,
		   ...) __attribute__((format(printf, 4, 5)));

static bool format(struct imap_out *out, const char *tag, const char *status, const char *fmt,
		   ...)
{
	va_list ap;
	va_start(ap, fmt);
	bool ok = imap_reply_format(out, tag, status, fmt, ap);
	va_end(ap);
	return ok;
}

static char *take(struct imap_out *out)
{
	size_t n = imap_out_len(out);
	char *s = malloc(n + 1);
	assert_non_null(s);
	assert_int_equal(evbuffer_remove(out->buf, s, n), (int)n);
	s[n] = '\0';
	return s;
}

static void test_format_short(void **state)
{
	struct imap_out b;
	imap_out_init(&b);
	assert_true(format(&b, "a1", "OK", "%s completed", "NOOP"));
	assert_false(b.failed);
	char *s = take(&b);
	assert_string_equal(s, "a1 OK NOOP completed\r\n");
	free(s);
	imap_out_free(&b);
}

/* A reply far past the old 512-octet buffer, and one exactly at the
 * limit, arrive whole; one octet more is refused and out is left as it
 * was. */
static void test_format_long(void **state)
{
	char tag[IMAP_TAG_MAX + 1];
	memset(tag, 'T', IMAP_TAG_MAX);
	tag[IMAP_TAG_MAX] = '\0';
	char *name = malloc(IMAP_REPLY_TEXT_MAX + 2);
	assert_non_null(name);
	memset(name, 'm', 600);
	name[600] = '\0';
	struct imap_out b;
	imap_out_init(&b);
	assert_true(format(&b, tag, "NO", "[NONEXISTENT] %s", name));
	char *s = take(&b);
	assert_int_equal(strlen(s), IMAP_TAG_MAX + strlen(" NO [NONEXISTENT] ") + 600 + 2);
	assert_memory_equal(s + strlen(s) - 7, "mmmmm\r\n", 7);
	free(s);

	memset(name, 'x', IMAP_REPLY_TEXT_MAX);
	name[IMAP_REPLY_TEXT_MAX] = '\0';
	assert_true(format(&b, "a", "OK", "%s", name));
	assert_int_equal(imap_out_len(&b), strlen("a OK ") + IMAP_REPLY_TEXT_MAX + 2);
	imap_out_discard(&b);

	imap_out_add(&b, "kept", 4);
	name[IMAP_REPLY_TEXT_MAX] = 'x';
	name[IMAP_REPLY_TEXT_MAX + 1] = '\0';
	assert_false(format(&b, "a", "OK", "%s", name));
	assert_false(b.failed);
	s = take(&b);
	assert_string_equal(s, "kept");
	free(s);
	free(name);
	imap_out_free(&b);
}

/* ---- imap_out: the first failure sticks --------------------------------------- */

/* evbuffer_freeze() on the end makes every add fail, as no memory would. */
static void test_out_failure_sticks(void **state)
{
	struct imap_out b;
	imap_out_init(&b);
	imap_out_add(&b, "* 1 EXISTS\r\n", 12);
	imap_out_printf(&b, "* %d RECENT", 0);
	assert_false(b.failed);
	assert_false(imap_out_full(&b));
	assert_int_equal(evbuffer_freeze(b.buf, 0), 0);
	imap_out_add(&b, "\r\n", 2);
	assert_true(b.failed);
	assert_true(imap_out_full(&b)); /* time to send: the session ends */
	assert_int_equal(evbuffer_unfreeze(b.buf, 0), 0);
	/* nothing more is added once a piece is missing */
	imap_out_add(&b, "* 2 EXISTS\r\n", 12);
	imap_out_printf(&b, "* %d EXISTS\r\n", 3);
	assert_int_equal(imap_out_len(&b), strlen("* 1 EXISTS\r\n* 0 RECENT"));
	assert_true(b.failed);
	/* emptied, it stays failed */
	imap_out_discard(&b);
	assert_int_equal(imap_out_len(&b), 0);
	assert_true(b.failed);
	imap_out_free(&b);
	assert_null(b.buf);

	/* a printf that fails, then a reply line */
	imap_out_init(&b);
	assert_int_equal(evbuffer_freeze(b.buf, 0), 0);
	imap_out_printf(&b, "%s", "x");
	assert_true(b.failed);
	assert_int_equal(evbuffer_unfreeze(b.buf, 0), 0);
	assert_true(format(&b, "a1", "OK", "NOOP completed")); /* it fits ... */
	assert_true(b.failed);                                  /* ... but nothing was added */
	assert_int_equal(imap_out_len(&b), 0);
	imap_out_free(&b);

	/* the imap_out_full() threshold */
	imap_out_init(&b);
	char *big = calloc(1, IMAP_CHUNK);
	assert_non_null(big);
	imap_out_add(&b, big, IMAP_CHUNK - 1);
	assert_false(imap_out_full(&b));
	imap_out_add(&b, big, 1);
	assert_true(imap_out_full(&b));
	free(big);
	imap_out_free(&b);
}

/* ---- imap_reply through a connection ---------------------------------------- */

struct fixture {
	struct event_base *base;
	struct conf_server srv;
	struct imap_session s;
	int peer;                        /* the client's end */
};

static void on_nothing(void *owner)
{
}

static bool conn_was_closed; /* the closed callback ran */

static void on_closed(void *owner)
{
	conn_was_closed = true;
}

static const struct conn_handler handler = {
	.input = on_nothing,
	.drained = on_nothing,
	.tls_ready = on_nothing,
	.timeout = on_nothing,
	.closed = on_closed,
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof *f);
	assert_non_null(f);
	int sv[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	f->base = event_base_new();
	assert_non_null(f->base);
	f->srv.name = "test";
	f->s.b.srv = &f->srv;
	snprintf(f->s.b.sid, sizeof f->s.b.sid, "itest");
	snprintf(f->s.b.client, sizeof f->s.b.client, "192.0.2.1");
	struct conn_params p = {.base = f->base, .fd = sv[0], .timeout = 60, .log_id = "test"};
	f->s.io = conn_new(&p, &handler, &f->s);
	assert_non_null(f->s.io);
	f->s.state = IMAP_SELECTED;
	f->peer = sv[1];
	conn_was_closed = false;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	conn_free(f->s.io);
	close(f->peer);
	event_base_free(f->base);
	free(f);
	return 0;
}

/* What the client has received so far: n octets exactly. */
static char *received(struct fixture *f, size_t n)
{
	event_base_loop(f->base, EVLOOP_NONBLOCK);
	char *buf = malloc(n + 1);
	assert_non_null(buf);
	size_t got = 0;
	while (got < n) {
		ssize_t k = read(f->peer, buf + got, n - got);
		assert_true(k > 0);
		got += (size_t)k;
	}
	buf[n] = '\0';
	return buf;
}

/* A tagged NO whose text names a mailbox of 600 octets. */
static void test_reply_long_arrives_whole(void **state)
{
	struct fixture *f = *state;
	snprintf(f->s.tag, sizeof f->s.tag, "A0042");
	char name[601];
	memset(name, 'n', 600);
	name[600] = '\0';
	imap_no(&f->s, "[NONEXISTENT] Mailbox %s does not exist", name);
	char *want = NULL;
	assert_true(asprintf(&want, "A0042 NO [NONEXISTENT] Mailbox %s does not exist\r\n", name) > 0);
	assert_true(strlen(want) > 512);
	char *got = received(f, strlen(want));
	assert_string_equal(got, want);
	free(got);
	free(want);
}

/* Over the limit: the status stays, the text is generic, the event is
 * counted; the session goes on (the next reply follows). */
static void test_reply_too_long_is_never_cut(void **state)
{
	struct fixture *f = *state;
	snprintf(f->s.tag, sizeof f->s.tag, "b1");
	unsigned long before = imap_replies_too_long();
	char *text = malloc(IMAP_REPLY_TEXT_MAX + 2);
	assert_non_null(text);
	memset(text, 'z', IMAP_REPLY_TEXT_MAX + 1);
	text[IMAP_REPLY_TEXT_MAX + 1] = '\0';
	imap_ok(&f->s, "%s", text);
	free(text);
	assert_int_equal(imap_replies_too_long(), before + 1);
	imap_ok(&f->s, "NOOP completed");
	const char *want = "b1 OK The response is too long; see the server log\r\n"
			   "b1 OK NOOP completed\r\n";
	char *got = received(f, strlen(want));
	assert_string_equal(got, want);
	free(got);
}

/* ---- a response that cannot be built ---------------------------------------- */

struct capture {
	char path[64];
	int saved;
};

static void capture_start(struct capture *c)
{
	memcpy(c->path, "/tmp/posthorn-imapctx-XXXXXX", sizeof "/tmp/posthorn-imapctx-XXXXXX");
	int fd = mkstemp(c->path);
	assert_true(fd >= 0);
	c->saved = dup(STDERR_FILENO);
	assert_true(c->saved >= 0);
	assert_true(dup2(fd, STDERR_FILENO) >= 0);
	close(fd);
	log_init(false, LOG_ERR);
}

/* What was logged meanwhile (the caller frees it). */
static char *capture_end(struct capture *c)
{
	assert_true(dup2(c->saved, STDERR_FILENO) >= 0);
	close(c->saved);
	int fd = open(c->path, O_RDONLY);
	assert_true(fd >= 0);
	char *text = calloc(1, 8192);
	assert_non_null(text);
	assert_true(read(fd, text, 8191) >= 0);
	close(fd);
	unlink(c->path);
	return text;
}

static size_t count(const char *hay, const char *needle)
{
	size_t n = 0;
	for (const char *p = hay; (p = strstr(p, needle)); p += strlen(needle))
		n++;
	return n;
}

/* The client gets what was sent before, none of the failed response and
 * nothing after it (not even the tagged completion), then the end of the
 * connection; event=write-error is logged once. */
static void test_send_failed_closes_session(void **state)
{
	struct fixture *f = *state;
	snprintf(f->s.tag, sizeof f->s.tag, "c1");
	imap_ok(&f->s, "NOOP completed");
	snprintf(f->s.tag, sizeof f->s.tag, "c2");
	struct capture cap;
	capture_start(&cap);
	struct imap_out out;
	imap_out_init(&out);
	const char *part = "* 1 FETCH (FLAGS (\\Seen)";
	imap_out_add(&out, part, strlen(part));
	assert_int_equal(evbuffer_freeze(out.buf, 0), 0);
	imap_out_add(&out, ")\r\n", 3);
	assert_int_equal(evbuffer_unfreeze(out.buf, 0), 0);
	imap_send(&f->s, &out);
	assert_int_equal(imap_out_len(&out), 0);
	assert_true(f->s.out_failed);
	assert_int_equal(f->s.state, IMAP_CLOSING);
	assert_true(conn_closing(f->s.io));
	imap_ok(&f->s, "FETCH completed"); /* dropped */
	imap_out_free(&out);
	imap_out_init(&out);
	imap_out_add(&out, "* 2 EXISTS\r\n", 12);
	imap_send(&f->s, &out);             /* dropped too */
	imap_out_free(&out);
	for (int i = 0; i < 10 && !conn_was_closed; i++)
		event_base_loop(f->base, EVLOOP_NONBLOCK);
	assert_true(conn_was_closed); /* after what was queued before had left */
	char *log = capture_end(&cap);
	assert_int_equal(count(log, "event=write-error"), 1);
	assert_non_null(strstr(log, "event=write-error session=itest server=test "
				    "client=192.0.2.1 reason=out-of-memory"));
	free(log);
	const char *want = "c1 OK NOOP completed\r\n";
	char *got = received(f, strlen(want));
	assert_string_equal(got, want);
	free(got);
	char more;
	assert_int_equal(recv(f->peer, &more, 1, MSG_DONTWAIT), -1); /* nothing more */
}

/* The store's failures: the text, with the names of files that clients
 * chose, is logged quoted and escaped (spaces kept, a '"' as \x22); a
 * limit is a NO [LIMIT] with the store's own sentence. */
static void test_store_errors(void **state)
{
	struct fixture *f = *state;
	snprintf(f->s.tag, sizeof f->s.tag, "d1");
	struct capture cap;
	capture_start(&cap);
	assert_false(imap_store_error(&f->s, MAILBOX_ERR_IO, "cannot open /m/.a \"b\"=c: Gone"));
	char *log = capture_end(&cap);
	assert_non_null(strstr(log, "event=mailbox-error session=itest server=test "
				    "client=192.0.2.1 op=command "
				    "error=\"cannot open /m/.a \\x22b\\x22\\x3dc: Gone\"\n"));
	free(log);
	snprintf(f->s.tag, sizeof f->s.tag, "d2");
	assert_false(imap_store_error(&f->s, MAILBOX_ERR_LIMIT,
				      "Too many subscriptions (more than 10000)"));
	const char *want = "d1 NO [SERVERBUG] The mail store failed; see the server log\r\n"
			   "d2 NO [LIMIT] Too many subscriptions (more than 10000)\r\n";
	char *got = received(f, strlen(want));
	assert_string_equal(got, want);
	free(got);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_format_short),
		cmocka_unit_test(test_format_long),
		cmocka_unit_test(test_out_failure_sticks),
		cmocka_unit_test_setup_teardown(test_reply_long_arrives_whole, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reply_too_long_is_never_cut, setup, teardown),
		cmocka_unit_test_setup_teardown(test_send_failed_closes_session, setup, teardown),
		cmocka_unit_test_setup_teardown(test_store_errors, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

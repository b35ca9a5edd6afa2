/* Unit tests for imap_context: status responses (RFC 3501 §7.1) leave
 * whole, however long, up to IMAP_REPLY_TEXT_MAX; a longer one is never
 * cut but replaced by a generic text with the same status, and counted.
 * The session's replies go through a real connection (conn.c over a
 * socket pair). */
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

#include <cmocka.h>
#include <event2/buffer.h>
#include <event2/event.h>

#include "conf/conf.h"
#include "net/conn.h"
#include "proto/imap/imap_context.h"

/* ---- imap_reply_format ------------------------------------------------------ */

static bool format(struct evbuffer *out, const char *tag, const char *status, const char *fmt,
		   ...) __attribute__((format(printf, 4, 5)));

static bool format(struct evbuffer *out, const char *tag, const char *status, const char *fmt,
		   ...)
{
	va_list ap;
	va_start(ap, fmt);
	bool ok = imap_reply_format(out, tag, status, fmt, ap);
	va_end(ap);
	return ok;
}

static char *take(struct evbuffer *b)
{
	size_t n = evbuffer_get_length(b);
	char *s = malloc(n + 1);
	assert_non_null(s);
	evbuffer_remove(b, s, n);
	s[n] = '\0';
	return s;
}

static void test_format_short(void **state)
{
	struct evbuffer *b = evbuffer_new();
	assert_true(format(b, "a1", "OK", "%s completed", "NOOP"));
	char *s = take(b);
	assert_string_equal(s, "a1 OK NOOP completed\r\n");
	free(s);
	evbuffer_free(b);
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
	struct evbuffer *b = evbuffer_new();
	assert_true(format(b, tag, "NO", "[NONEXISTENT] %s", name));
	char *s = take(b);
	assert_int_equal(strlen(s), IMAP_TAG_MAX + strlen(" NO [NONEXISTENT] ") + 600 + 2);
	assert_memory_equal(s + strlen(s) - 7, "mmmmm\r\n", 7);
	free(s);

	memset(name, 'x', IMAP_REPLY_TEXT_MAX);
	name[IMAP_REPLY_TEXT_MAX] = '\0';
	assert_true(format(b, "a", "OK", "%s", name));
	assert_int_equal(evbuffer_get_length(b), strlen("a OK ") + IMAP_REPLY_TEXT_MAX + 2);
	evbuffer_drain(b, evbuffer_get_length(b));

	evbuffer_add(b, "kept", 4);
	name[IMAP_REPLY_TEXT_MAX] = 'x';
	name[IMAP_REPLY_TEXT_MAX + 1] = '\0';
	assert_false(format(b, "a", "OK", "%s", name));
	s = take(b);
	assert_string_equal(s, "kept");
	free(s);
	free(name);
	evbuffer_free(b);
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

static const struct conn_handler handler = {
	.input = on_nothing,
	.drained = on_nothing,
	.tls_ready = on_nothing,
	.timeout = on_nothing,
	.closed = on_nothing,
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

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_format_short),
		cmocka_unit_test(test_format_long),
		cmocka_unit_test_setup_teardown(test_reply_long_arrives_whole, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reply_too_long_is_never_cut, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

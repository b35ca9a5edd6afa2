/* Unit tests for conn: a reply leaves whole with its CRLF, and one longer
 * than CONN_REPLY_MAX is never cut: it is refused, counted, and the
 * connection closes after the replies before it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/event.h>

#include "lib/log.h"
#include "net/conn.h"

struct fixture {
	struct event_base *base;
	struct conn *c;
	int peer;
	bool closed;
};

static void on_input(void *owner) {}
static void on_drained(void *owner) {}
static void on_tls_ready(void *owner) {}
static void on_timeout(void *owner) {}
static void on_closed(void *owner)
{
	struct fixture *f = owner;
	f->closed = true;
	event_base_loopbreak(f->base);
}

static const struct conn_handler handler = {on_input, on_drained, on_tls_ready, on_timeout,
					     on_closed};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof *f);
	assert_non_null(f);
	f->base = event_base_new();
	assert_non_null(f->base);
	int sv[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	f->peer = sv[1];
	struct conn_params p = {.base = f->base, .fd = sv[0], .timeout = 30,
				.log_id = "session=test server=unit client=local"};
	f->c = conn_new(&p, &handler, f);
	assert_non_null(f->c);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	conn_free(f->c);
	close(f->peer);
	event_base_free(f->base);
	free(f);
	return 0;
}

/* What the peer has received so far (the loop run until nothing moves). */
static size_t drain_peer(struct fixture *f, char *buf, size_t size)
{
	struct timeval tv = {0, 50000};
	event_base_loopexit(f->base, &tv);
	event_base_dispatch(f->base);
	ssize_t n = recv(f->peer, buf, size - 1, MSG_DONTWAIT);
	size_t got = n > 0 ? (size_t)n : 0;
	buf[got] = '\0';
	return got;
}

static void test_reply_whole(void **state)
{
	struct fixture *f = *state;
	char buf[4096];
	conn_printf(f->c, "+OK %d messages", 3);
	assert_int_equal(drain_peer(f, buf, sizeof buf), strlen("+OK 3 messages\r\n"));
	assert_string_equal(buf, "+OK 3 messages\r\n");
	assert_false(conn_closing(f->c));
}

static void test_reply_at_limit(void **state)
{
	struct fixture *f = *state;
	char text[CONN_REPLY_MAX - 1]; /* CONN_REPLY_MAX - 2 octets and the CRLF */
	memset(text, 'a', sizeof text - 1);
	text[sizeof text - 1] = '\0';
	conn_printf(f->c, "%s", text);
	char buf[4096];
	assert_int_equal(drain_peer(f, buf, sizeof buf), CONN_REPLY_MAX);
	assert_false(conn_closing(f->c));
}

static void test_reply_too_long(void **state)
{
	struct fixture *f = *state;
	unsigned long before = conn_reply_too_long_count();
	char text[CONN_REPLY_MAX]; /* one octet over with its CRLF */
	memset(text, 'b', sizeof text - 1);
	text[sizeof text - 1] = '\0';
	conn_printf(f->c, "+OK first");
	conn_printf(f->c, "%s", text);
	conn_printf(f->c, "+OK after");  /* never sent: it would answer the wrong command */
	assert_int_equal(conn_reply_too_long_count(), before + 1);
	assert_true(conn_closing(f->c));
	char buf[4096];
	drain_peer(f, buf, sizeof buf);
	assert_string_equal(buf, "+OK first\r\n");
	assert_true(f->closed);
}

int main(void)
{
	log_init(false, LOG_ERR);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_reply_whole, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reply_at_limit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reply_too_long, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

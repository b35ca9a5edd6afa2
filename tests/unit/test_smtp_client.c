/* test_smtp_client: the outbound SMTP client — reply parsing (RFC 5321
 * §4.2), enhanced status codes (RFC 3463), EHLO keywords, dot-stuffing
 * (§4.5.2) — and whole transactions against a scripted server on
 * 127.0.0.1: PIPELINING (RFC 2920) reply order, per-recipient results,
 * refused senders, HELO fallback, greeting refusals, malformed replies,
 * required TLS, SIZE limits, lost connections, output that cannot be
 * queued (no memory). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <netinet/in.h>
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
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>

#include "lib/log.h"
#include "queue/smtp_client.h"
#include "lib/util.h"

/* ---- output that cannot be queued ------------------------------------------ */

/* smtp_client.c queues everything it sends with bufferevent_write(); this
 * definition in the test program comes before libevent's.  While
 * fail_write is set, a write whose data begins with it fails as libevent
 * does without memory (the scripted server's replies never match). */
static const char *fail_write;

int bufferevent_write(struct bufferevent *bev, const void *data, size_t size)
{
	static int (*real)(struct bufferevent *, const void *, size_t);
	if (!real) {
		*(void **)&real = dlsym(RTLD_NEXT, "bufferevent_write");
		assert_non_null(real);
	}
	if (fail_write && size >= strlen(fail_write) &&
	    memcmp(data, fail_write, strlen(fail_write)) == 0)
		return -1;
	return real(bev, data, size);
}

/* ---- parsers -------------------------------------------------------------- */

static enum smtp_client_reply_status feed(struct smtp_client_reply *r, const char *line)
{
	return smtp_client_reply_feed(r, line, strlen(line), NULL);
}

static void test_reply_single_and_multi(void **state)
{
	struct smtp_client_reply r;
	smtp_client_reply_reset(&r);
	assert_int_equal(feed(&r, "250 2.1.0 Ok"), SMTP_CLIENT_REPLY_DONE);
	assert_int_equal(r.code, 250);
	assert_string_equal(r.text, "250 2.1.0 Ok");

	smtp_client_reply_reset(&r);
	const char *rest = NULL;
	assert_int_equal(smtp_client_reply_feed(&r, "250-mx.example Hello", 20, &rest),
			 SMTP_CLIENT_REPLY_MORE);
	assert_string_equal(rest, "mx.example Hello");
	assert_int_equal(smtp_client_reply_feed(&r, "250-PIPELINING", 14, &rest), SMTP_CLIENT_REPLY_MORE);
	assert_string_equal(rest, "PIPELINING");
	assert_int_equal(feed(&r, "250 SIZE 1000"), SMTP_CLIENT_REPLY_DONE);
	assert_int_equal(r.lines, 3);
	assert_string_equal(r.text, "250 mx.example Hello PIPELINING SIZE 1000");

	smtp_client_reply_reset(&r);
	assert_int_equal(feed(&r, "354"), SMTP_CLIENT_REPLY_DONE); /* code alone is a reply */
	assert_string_equal(r.text, "354");
}

static void test_reply_malformed(void **state)
{
	static const char *const bad[] = {
	    "", "25", "2500 x", "abc def", "250x", "150 one", "650 six", "25a ok", "250_x",
	};
	for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
		struct smtp_client_reply r;
		smtp_client_reply_reset(&r);
		assert_int_equal(feed(&r, bad[i]), SMTP_CLIENT_REPLY_BAD);
		assert_true(r.bad);
	}
	/* the code may not change inside a reply */
	struct smtp_client_reply r;
	smtp_client_reply_reset(&r);
	assert_int_equal(feed(&r, "250-first"), SMTP_CLIENT_REPLY_MORE);
	assert_int_equal(feed(&r, "550 second"), SMTP_CLIENT_REPLY_BAD);
	/* nor go on forever */
	smtp_client_reply_reset(&r);
	for (int i = 0; i < SMTP_REPLY_LINES_MAX; i++)
		assert_int_equal(feed(&r, "250-more"), SMTP_CLIENT_REPLY_MORE);
	assert_int_equal(feed(&r, "250 last"), SMTP_CLIENT_REPLY_BAD);
}

static void test_reply_text_is_clean_and_bounded(void **state)
{
	struct smtp_client_reply r;
	smtp_client_reply_reset(&r);
	const char line[] = "550 5.1.1 bad\x1b[31m\x7f\xc3\xa9\tuser";
	assert_int_equal(smtp_client_reply_feed(&r, line, sizeof line - 1, NULL), SMTP_CLIENT_REPLY_DONE);
	assert_string_equal(r.text, "550 5.1.1 bad?[31m??? user");
	smtp_client_reply_reset(&r);
	char longline[SMTP_REPLY_LINE_MAX];
	memset(longline, 'x', sizeof longline - 1);
	memcpy(longline, "451-", 4);
	longline[sizeof longline - 1] = '\0';
	for (int i = 0; i < 3; i++)
		feed(&r, longline);
	assert_int_equal(strlen(r.text), sizeof r.text - 1);
	assert_memory_equal(r.text + sizeof r.text - 4, "...", 3);
}

static void status_of(const char *line, const char *want)
{
	struct smtp_client_reply r;
	char st[SMTP_STATUS_MAX];
	smtp_client_reply_reset(&r);
	assert_int_not_equal(feed(&r, line), SMTP_CLIENT_REPLY_BAD);
	smtp_client_reply_status(&r, st, sizeof st);
	assert_string_equal(st, want);
}

static void test_reply_status(void **state)
{
	status_of("550 5.1.1 <a@b>: unknown", "5.1.1");
	status_of("550 user unknown", "5.0.0");
	status_of("451 5.1.1 class does not match", "4.0.0");
	status_of("250 2.0.0 Ok", "2.0.0");
	status_of("556 5.1.10 null MX", "5.1.10");
	status_of("552 5.3.4", "5.3.4");
	status_of("550 5.1234.1 too many digits", "5.0.0");
	status_of("550 5.1.1x glued", "5.0.0");
	status_of("421", "4.0.0");
	status_of("354 go ahead", "4.0.0"); /* no class 3 in RFC 3463: never "3.x.x" */
}

static void test_ehlo_keywords(void **state)
{
	assert_int_equal(smtp_client_ehlo_line("PIPELINING"), SMTP_EXT_PIPELINING);
	assert_int_equal(smtp_client_ehlo_line("pipelining"), SMTP_EXT_PIPELINING);
	assert_int_equal(smtp_client_ehlo_line("PIPELININGX"), 0);
	assert_int_equal(smtp_client_ehlo_line("STARTTLS"), SMTP_EXT_STARTTLS);
	assert_int_equal(smtp_client_ehlo_line("SIZE 10485760"), SMTP_EXT_SIZE);
	assert_int_equal(smtp_client_ehlo_line("8BITMIME"), SMTP_EXT_8BITMIME);
	assert_int_equal(smtp_client_ehlo_line("SMTPUTF8"), SMTP_EXT_SMTPUTF8);
	assert_int_equal(smtp_client_ehlo_line("AUTH LOGIN PLAIN"), SMTP_EXT_AUTH_PLAIN);
	assert_int_equal(smtp_client_ehlo_line("auth plain"), SMTP_EXT_AUTH_PLAIN);
	assert_int_equal(smtp_client_ehlo_line("AUTH LOGIN CRAM-MD5"), 0);
	assert_int_equal(smtp_client_ehlo_line("AUTH PLAINX"), 0);
	assert_int_equal(smtp_client_ehlo_line(""), 0);
	assert_int_equal(smtp_client_ehlo_line("X-STARTTLS"), 0);
}

static void test_dot_stuff(void **state)
{
	const char in[] = ".a\r\n..b\r\nc.\r\n.\r\nplain\r\n.";
	const char want[] = "..a\r\n...b\r\nc.\r\n..\r\nplain\r\n..";
	char out[2 * sizeof in];
	bool bol = true;
	size_t n = smtp_client_dot_stuff(in, sizeof in - 1, out, &bol);
	assert_int_equal(n, sizeof want - 1);
	assert_memory_equal(out, want, n);
	assert_false(bol);
	/* cut anywhere: the same bytes */
	for (size_t cut = 0; cut <= sizeof in - 1; cut++) {
		char got[2 * sizeof in];
		bol = true;
		size_t k = smtp_client_dot_stuff(in, cut, got, &bol);
		k += smtp_client_dot_stuff(in + cut, sizeof in - 1 - cut, got + k, &bol);
		assert_int_equal(k, sizeof want - 1);
		assert_memory_equal(got, want, k);
	}
	/* the worst case doubles */
	const char dots[] = ".\n.\n.\n";
	bol = true;
	assert_int_equal(smtp_client_dot_stuff(dots, 6, out, &bol), 9);
}

/* ---- whole transactions against a scripted server ------------------------- */

/* What the scripted server answers; NULL entries take the defaults. */
struct script {
	const char *greeting;
	const char *ehlo;               /* whole reply, CRLFs included */
	const char *helo;
	const char *mail;
	const char *rcpt[4];            /* per RCPT, in order */
	const char *data;
	const char *dot;
	bool close_at_data;             /* drop the connection instead of answering DATA */
	bool data_always;               /* 354 even with no recipient accepted */
};

struct fake {
	struct event_base *base;
	struct evconnlistener *lev;
	unsigned short port;
	struct bufferevent *bev;
	const struct script *sc;
	bool in_data;
	size_t nrcpt;
	size_t accepted;
	struct evbuffer *data;          /* message text as received (still stuffed) */
	char log[16384];                /* the command lines, one per line */
	bool quit;
	bool done;                      /* the client's done callback ran */
};

static const char default_ehlo[] = "250-fake.example\r\n250-PIPELINING\r\n250-8BITMIME\r\n"
				   "250 SIZE 100000\r\n";

static void fake_reply(struct fake *f, const char *text)
{
	bufferevent_write(f->bev, text, strlen(text));
	if (text[strlen(text) - 1] != '\n')
		bufferevent_write(f->bev, "\r\n", 2);
}

static void fake_command(struct fake *f, const char *line)
{
	const struct script *sc = f->sc;
	strncat(f->log, line, sizeof f->log - strlen(f->log) - 2);
	strcat(f->log, "\n");
	if (strncmp(line, "EHLO ", 5) == 0) {
		fake_reply(f, sc->ehlo ? sc->ehlo : default_ehlo);
	} else if (strncmp(line, "HELO ", 5) == 0) {
		fake_reply(f, sc->helo ? sc->helo : "250 fake.example");
	} else if (strncmp(line, "MAIL FROM:", 10) == 0) {
		f->nrcpt = f->accepted = 0;
		fake_reply(f, sc->mail ? sc->mail : "250 2.1.0 Ok");
	} else if (strncmp(line, "RCPT TO:", 8) == 0) {
		const char *r = f->nrcpt < 4 && sc->rcpt[f->nrcpt] ? sc->rcpt[f->nrcpt] : "250 2.1.5 Ok";
		if (sc->mail && sc->mail[0] != '2')
			r = "503 5.5.1 MAIL first";
		f->nrcpt++;
		if (r[0] == '2')
			f->accepted++;
		fake_reply(f, r);
	} else if (strcmp(line, "DATA") == 0) {
		if (sc->close_at_data) {
			bufferevent_free(f->bev);
			f->bev = NULL;
			return;
		}
		if (f->accepted == 0 && !sc->data_always) {
			fake_reply(f, "554 5.5.1 no valid recipients");
			return;
		}
		const char *r = sc->data ? sc->data : "354 go ahead";
		f->in_data = r[0] == '3';
		fake_reply(f, r);
	} else if (strcmp(line, "QUIT") == 0) {
		f->quit = true;
		fake_reply(f, "221 2.0.0 Bye");
	} else {
		fake_reply(f, "502 5.5.2 unknown command");
	}
}

static void fake_read(struct bufferevent *bev, void *arg)
{
	struct fake *f = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	for (;;) {
		size_t n;
		char *line = evbuffer_readln(in, &n, EVBUFFER_EOL_CRLF_STRICT);
		if (!line)
			return;
		if (f->in_data) {
			if (strcmp(line, ".") == 0) {
				f->in_data = false;
				fake_reply(f, f->sc->dot ? f->sc->dot : "250 2.0.0 Ok: queued");
			} else {
				evbuffer_add(f->data, line, n);
				evbuffer_add(f->data, "\r\n", 2);
			}
		} else {
			fake_command(f, line);
		}
		free(line);
		if (!f->bev)
			return;
	}
}

static void fake_event(struct bufferevent *bev, short what, void *arg)
{
	struct fake *f = arg;
	bufferevent_free(f->bev);
	f->bev = NULL;
}

static void fake_accept(struct evconnlistener *lev, evutil_socket_t fd, struct sockaddr *sa,
			int salen, void *arg)
{
	struct fake *f = arg;
	if (f->bev) {
		close(fd);
		return;
	}
	f->bev = bufferevent_socket_new(f->base, fd, BEV_OPT_CLOSE_ON_FREE);
	bufferevent_setcb(f->bev, fake_read, NULL, fake_event, f);
	bufferevent_enable(f->bev, EV_READ | EV_WRITE);
	fake_reply(f, f->sc->greeting ? f->sc->greeting : "220 fake.example ESMTP");
}

static void fake_start(struct fake *f, const struct script *sc)
{
	memset(f, 0, sizeof *f);
	f->sc = sc;
	f->base = event_base_new();
	assert_non_null(f->base);
	f->data = evbuffer_new();
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	f->lev = evconnlistener_new_bind(f->base, fake_accept, f, LEV_OPT_CLOSE_ON_FREE |
					 LEV_OPT_REUSEABLE, 16, (struct sockaddr *)&sin, sizeof sin);
	assert_non_null(f->lev);
	struct sockaddr_in bound;
	socklen_t len = sizeof bound;
	assert_int_equal(getsockname(evconnlistener_get_fd(f->lev), (struct sockaddr *)&bound, &len), 0);
	f->port = ntohs(bound.sin_port);
}

static void fake_stop(struct fake *f)
{
	smtp_client_abort_all();
	if (f->bev)
		bufferevent_free(f->bev);
	evconnlistener_free(f->lev);
	evbuffer_free(f->data);
	event_base_free(f->base);
}

static void on_done(void *arg)
{
	((struct fake *)arg)->done = true;
}

static void tick(evutil_socket_t fd, short what, void *arg)
{
}

/* Run the loop until cond (bounded: 10 s). */
static void run_until(struct fake *f, bool *cond)
{
	struct event *t = event_new(f->base, -1, EV_PERSIST, tick, NULL);
	struct timeval tv = {.tv_usec = 10000};
	event_add(t, &tv);
	for (int i = 0; i < 1000 && !*cond; i++)
		event_base_loop(f->base, EVLOOP_ONCE);
	event_free(t);
	assert_true(*cond);
}

struct run {
	struct fake f;
	struct smtp_client_rcpt rcpts[4];
	size_t nrcpts;
	int fd;
	char path[64];
};

static const char message_text[] = "Subject: test\r\n\r\n.dotted\r\nline\r\n";

/* One transaction of message_text to addresses, through the fake server
 * (a smarthost given as an address: no DNS). */
static void transact(struct run *r, const struct script *sc, const char *const *addrs, size_t n,
		     enum conf_outbound_tls tls, unsigned short port_override)
{
	fake_start(&r->f, sc);
	memcpy(r->path, "/tmp/posthorn-client-XXXXXX", sizeof "/tmp/posthorn-client-XXXXXX");
	r->fd = mkstemp(r->path);
	assert_true(r->fd >= 0);
	assert_int_equal(write(r->fd, message_text, sizeof message_text - 1),
			 (ssize_t)(sizeof message_text - 1));
	memset(r->rcpts, 0, sizeof r->rcpts);
	for (size_t i = 0; i < n; i++)
		r->rcpts[i].address = addrs[i];
	r->nrcpts = n;
	char err[128];
	SSL_CTX *ctx = smtp_client_tls_new(err, sizeof err);
	assert_non_null(ctx);
	struct smtp_client_params p = {
		.base = r->f.base,
		.ssl_ctx = ctx,
		.id = "TESTID",
		.arrival = time(NULL),
		.helo = "client.example",
		.sender = "s@example.test",
		.smarthost = "127.0.0.1",
		.port = port_override ? port_override : r->f.port,
		.tls = tls,
		.fd = r->fd,
		.offset = 0,
		.size = sizeof message_text - 1,
		.rcpts = r->rcpts,
		.nrcpts = n,
	};
	assert_non_null(smtp_client_start(&p, on_done, &r->f));
	assert_false(r->f.done); /* never inside start */
	run_until(&r->f, &r->f.done);
	/* let the QUIT through, if there is one */
	for (int i = 0; i < 20 && r->f.bev && !r->f.quit; i++)
		event_base_loop(r->f.base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
	SSL_CTX_free(ctx);
}

static void run_free(struct run *r)
{
	fake_stop(&r->f);
	for (size_t i = 0; i < r->nrcpts; i++)
		smtp_client_rcpt_clear(&r->rcpts[i]);
	close(r->fd);
	unlink(r->path);
}

static const char *const two[] = {"a@remote.example", "b@remote.example"};
static const char *const three[] = {"a@remote.example", "b@remote.example", "c@remote.example"};

static void test_pipelined_delivery(void **state)
{
	struct run r;
	struct script sc = {0};
	transact(&r, &sc, two, 2, OUTBOUND_TLS_NO, 0);
	assert_int_equal(r.rcpts[0].result, SMTP_CLIENT_SENT);
	assert_int_equal(r.rcpts[1].result, SMTP_CLIENT_SENT);
	assert_string_equal(r.rcpts[0].reply, "250 2.0.0 Ok: queued");
	assert_string_equal(r.rcpts[0].remote_mta, "127.0.0.1");
	char want[256];
	snprintf(want, sizeof want, "EHLO client.example\nMAIL FROM:<s@example.test> SIZE=%zu "
		 "BODY=8BITMIME\nRCPT TO:<a@remote.example>\nRCPT TO:<b@remote.example>\nDATA\n",
		 sizeof message_text - 1);
	assert_true(strncmp(r.f.log, want, strlen(want)) == 0);
	/* on the wire still stuffed: the server unstuffs */
	size_t n = evbuffer_get_length(r.f.data);
	char *got = xmalloc(n + 1);
	evbuffer_remove(r.f.data, got, n);
	got[n] = '\0';
	assert_string_equal(got, "Subject: test\r\n\r\n..dotted\r\nline\r\n");
	free(got);
	run_free(&r);
}

static void test_per_recipient_results(void **state)
{
	struct run r;
	struct script sc = {.rcpt = {"250 2.1.5 Ok", "550 5.1.1 no such user", "452 4.2.2 full"}};
	transact(&r, &sc, three, 3, OUTBOUND_TLS_NO, 0);
	assert_int_equal(r.rcpts[0].result, SMTP_CLIENT_SENT);
	assert_int_equal(r.rcpts[1].result, SMTP_CLIENT_FAILED);
	assert_string_equal(r.rcpts[1].status, "5.1.1");
	assert_string_equal(r.rcpts[1].reply, "550 5.1.1 no such user");
	assert_int_equal(r.rcpts[2].result, SMTP_CLIENT_DEFERRED);
	assert_string_equal(r.rcpts[2].status, "4.2.2");
	run_free(&r);
}

static void test_sender_refused_pipelined(void **state)
{
	struct run r;
	struct script sc = {.mail = "550 5.7.1 sender refused"};
	transact(&r, &sc, two, 2, OUTBOUND_TLS_NO, 0);
	for (size_t i = 0; i < 2; i++) {
		assert_int_equal(r.rcpts[i].result, SMTP_CLIENT_FAILED);
		assert_string_equal(r.rcpts[i].reply, "550 5.7.1 sender refused");
	}
	assert_non_null(strstr(r.f.log, "DATA\n")); /* pipelined: it was sent, and refused */
	assert_int_equal(evbuffer_get_length(r.f.data), 0);
	run_free(&r);
}

static void test_no_pipelining_one_by_one(void **state)
{
	struct run r;
	struct script sc = {.ehlo = "250-fake.example\r\n250 8BITMIME\r\n",
			    .rcpt = {"550 5.1.1 nobody", "550 5.1.1 nobody"}};
	transact(&r, &sc, two, 2, OUTBOUND_TLS_NO, 0);
	assert_int_equal(r.rcpts[0].result, SMTP_CLIENT_FAILED);
	assert_int_equal(r.rcpts[1].result, SMTP_CLIENT_FAILED);
	assert_null(strstr(r.f.log, "DATA")); /* nobody accepted: no DATA at all */
	run_free(&r);
}

static void test_354_without_recipients_gets_a_lone_dot(void **state)
{
	struct run r;
	struct script sc = {.rcpt = {"550 5.1.1 nobody", "550 5.1.1 nobody"}, .data_always = true,
			    .dot = "554 5.5.1 no valid recipients"};
	transact(&r, &sc, two, 2, OUTBOUND_TLS_NO, 0);
	assert_int_equal(r.rcpts[0].result, SMTP_CLIENT_FAILED);
	assert_string_equal(r.rcpts[0].reply, "550 5.1.1 nobody");
	assert_int_equal(evbuffer_get_length(r.f.data), 0);
	run_free(&r);
}

static void test_end_of_data_replies(void **state)
{
	struct run r;
	struct script sc = {.dot = "451 4.3.0 try later"};
	transact(&r, &sc, two, 2, OUTBOUND_TLS_NO, 0);
	assert_int_equal(r.rcpts[0].result, SMTP_CLIENT_DEFERRED);
	assert_int_equal(r.rcpts[1].result, SMTP_CLIENT_DEFERRED);
	run_free(&r);
	struct script sc2 = {.dot = "552 5.3.4 too big", .rcpt = {"550 5.1.1 nobody"}};
	transact(&r, &sc2, two, 2, OUTBOUND_TLS_NO, 0);
	assert_int_equal(r.rcpts[0].result, SMTP_CLIENT_FAILED);
	assert_string_equal(r.rcpts[0].reply, "550 5.1.1 nobody");
	assert_int_equal(r.rcpts[1].result, SMTP_CLIENT_FAILED);
	assert_string_equal(r.rcpts[1].status, "5.3.4");
	run_free(&r);
}

static void test_helo_fallback(void **state)
{
	struct run r;
	struct script sc = {.ehlo = "500 5.5.1 what is EHLO"};
	transact(&r, &sc, two, 1, OUTBOUND_TLS_OPPORTUNISTIC, 0);
	assert_int_equal(r.rcpts[0].result, SMTP_CLIENT_SENT);
	assert_non_null(strstr(r.f.log, "HELO client.example\nMAIL FROM:<s@example.test>\n"));
	run_free(&r);
}

static void test_greeting_refused(void **state)
{
	struct run r;
	struct script sc = {.greeting = "554 5.7.1 go away"};
	transact(&r, &sc, two, 1, OUTBOUND_TLS_NO, 0);
	assert_int_equal(r.rcpts[0].result, SMTP_CLIENT_DEFERRED); /* another host may do */
	assert_non_null(strstr(r.rcpts[0].reply, "554 5.7.1 go away"));
	assert_string_equal(r.rcpts[0].status, "4.7.1");
	assert_null(r.rcpts[0].remote_mta);
	run_free(&r);
}

static void test_malformed_and_long_replies(void **state)
{
	struct run r;
	struct script sc = {.greeting = "hello there"};
	transact(&r, &sc, two, 1, OUTBOUND_TLS_NO, 0);
	assert_int_equal(r.rcpts[0].result, SMTP_CLIENT_DEFERRED);
	assert_non_null(strstr(r.rcpts[0].reply, "malformed reply"));
	run_free(&r);
	char *lng = xmalloc(SMTP_REPLY_LINE_MAX * 2);
	memset(lng, 'x', SMTP_REPLY_LINE_MAX * 2 - 1);
	memcpy(lng, "220 ", 4);
	lng[SMTP_REPLY_LINE_MAX * 2 - 1] = '\0';
	struct script sc2 = {.greeting = lng};
	transact(&r, &sc2, two, 1, OUTBOUND_TLS_NO, 0);
	assert_int_equal(r.rcpts[0].result, SMTP_CLIENT_DEFERRED);
	assert_non_null(strstr(r.rcpts[0].reply, "malformed reply"));
	assert_null(strstr(r.f.log, "MAIL"));
	run_free(&r);
	free(lng);
}

static void test_tls_required_but_not_offered(void **state)
{
	struct run r;
	struct script sc = {0};
	transact(&r, &sc, two, 2, OUTBOUND_TLS_REQUIRED, 0);
	assert_int_equal(r.rcpts[0].result, SMTP_CLIENT_DEFERRED);
	assert_string_equal(r.rcpts[0].status, "4.7.4");
	assert_non_null(strstr(r.rcpts[0].reply, "does not offer STARTTLS"));
	assert_null(strstr(r.f.log, "MAIL"));
	run_free(&r);
}

static void test_size_limit_bounces(void **state)
{
	struct run r;
	struct script sc = {.ehlo = "250-fake.example\r\n250 SIZE 10\r\n"};
	transact(&r, &sc, two, 1, OUTBOUND_TLS_NO, 0);
	assert_int_equal(r.rcpts[0].result, SMTP_CLIENT_FAILED);
	assert_string_equal(r.rcpts[0].status, "5.3.4");
	assert_null(strstr(r.f.log, "MAIL"));
	run_free(&r);
}

static void test_connection_lost_in_transaction(void **state)
{
	struct run r;
	struct script sc = {.close_at_data = true};
	transact(&r, &sc, two, 2, OUTBOUND_TLS_NO, 0);
	assert_int_equal(r.rcpts[0].result, SMTP_CLIENT_DEFERRED);
	assert_int_equal(r.rcpts[1].result, SMTP_CLIENT_DEFERRED);
	assert_non_null(strstr(r.rcpts[0].reply, "connection closed"));
	run_free(&r);
}

static void test_connection_refused(void **state)
{
	/* a port nothing listens on: bind one, close it */
	int s = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	assert_int_equal(bind(s, (struct sockaddr *)&sin, sizeof sin), 0);
	socklen_t len = sizeof sin;
	assert_int_equal(getsockname(s, (struct sockaddr *)&sin, &len), 0);
	close(s);
	struct run r;
	struct script sc = {0};
	transact(&r, &sc, two, 1, OUTBOUND_TLS_NO, ntohs(sin.sin_port));
	assert_int_equal(r.rcpts[0].result, SMTP_CLIENT_DEFERRED);
	assert_string_equal(r.rcpts[0].status, "4.4.1");
	assert_non_null(strstr(r.rcpts[0].reply, "cannot connect to 127.0.0.1[127.0.0.1]"));
	run_free(&r);
}

static void test_cancel(void **state)
{
	struct fake f;
	struct script sc = {0};
	fake_start(&f, &sc);
	struct smtp_client_rcpt rc = {.address = "a@remote.example"};
	struct smtp_client_params p = {
		.base = f.base, .id = "X", .helo = "c", .sender = "", .smarthost = "127.0.0.1",
		.port = f.port, .tls = OUTBOUND_TLS_NO, .fd = -1, .rcpts = &rc, .nrcpts = 1,
	};
	struct smtp_client *c = smtp_client_start(&p, on_done, &f);
	for (int i = 0; i < 5; i++)
		event_base_loop(f.base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
	smtp_client_cancel(c);
	for (int i = 0; i < 5; i++)
		event_base_loop(f.base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
	assert_false(f.done);
	fake_stop(&f);
	smtp_client_rcpt_clear(&rc);
}

/* A host name longer than any DNS name is never looked up, connected to
 * or verified cut: the host fails, the recipients are deferred. */
static void test_host_name_too_long(void **state)
{
	struct fake f;
	struct script sc = {0};
	fake_start(&f, &sc);
	char host[301];
	memset(host, 'h', sizeof host - 1);
	host[sizeof host - 1] = '\0';
	struct smtp_client_rcpt rc = {.address = "a@remote.example"};
	struct smtp_client_params p = {
		.base = f.base, .id = "X", .helo = "c", .sender = "", .smarthost = host,
		.port = f.port, .tls = OUTBOUND_TLS_NO, .fd = -1, .rcpts = &rc, .nrcpts = 1,
	};
	assert_non_null(smtp_client_start(&p, on_done, &f));
	run_until(&f, &f.done);
	assert_int_equal(rc.result, SMTP_CLIENT_DEFERRED);
	assert_string_equal(rc.status, "4.4.3");
	assert_non_null(strstr(rc.reply, "host name of 300 bytes is too long"));
	assert_null(rc.remote_mta);
	assert_null(f.bev); /* the fake server never saw a connection */
	fake_stop(&f);
	smtp_client_rcpt_clear(&rc);
}

/* A write that fails ends the attempt: whoever is pending is deferred
 * with a local status (never bounced, never blamed on the server), and
 * the data is never ended. */
static void write_fails_at(const char *prefix, bool data_started)
{
	struct run r;
	struct script sc = {0};
	fail_write = prefix;
	transact(&r, &sc, two, 2, OUTBOUND_TLS_NO, 0);
	fail_write = NULL;
	for (size_t i = 0; i < 2; i++) {
		assert_int_equal(r.rcpts[i].result, SMTP_CLIENT_DEFERRED);
		assert_string_equal(r.rcpts[i].status, "4.3.0");
		assert_non_null(strstr(r.rcpts[i].reply, "out of memory"));
		assert_null(r.rcpts[i].remote_mta);
	}
	assert_false(r.f.quit);
	if (data_started)
		assert_true(r.f.in_data); /* the server never saw the end */
	else
		assert_null(strstr(r.f.log, "DATA"));
	run_free(&r);
}

static void test_write_failure_defers(void **state)
{
	write_fails_at("EHLO ", false);
	write_fails_at("RCPT TO:<b@", false); /* in the middle of the pipelined group */
	write_fails_at("Subject: test", true);
	write_fails_at(".\r\n", true);
}

/* After the results are given, a QUIT that cannot be queued changes
 * nothing: the connection is just dropped. */
static void test_write_failure_at_quit(void **state)
{
	struct run r;
	struct script sc = {0};
	fail_write = "QUIT";
	transact(&r, &sc, two, 2, OUTBOUND_TLS_NO, 0);
	fail_write = NULL;
	for (size_t i = 0; i < 2; i++) {
		assert_int_equal(r.rcpts[i].result, SMTP_CLIENT_SENT);
		assert_string_equal(r.rcpts[i].reply, "250 2.0.0 Ok: queued");
	}
	assert_false(r.f.quit);
	run_free(&r);
}

int main(void)
{
	log_init(false, LOG_ERR);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_reply_single_and_multi),
		cmocka_unit_test(test_reply_malformed),
		cmocka_unit_test(test_reply_text_is_clean_and_bounded),
		cmocka_unit_test(test_reply_status),
		cmocka_unit_test(test_ehlo_keywords),
		cmocka_unit_test(test_dot_stuff),
		cmocka_unit_test(test_pipelined_delivery),
		cmocka_unit_test(test_per_recipient_results),
		cmocka_unit_test(test_sender_refused_pipelined),
		cmocka_unit_test(test_no_pipelining_one_by_one),
		cmocka_unit_test(test_354_without_recipients_gets_a_lone_dot),
		cmocka_unit_test(test_end_of_data_replies),
		cmocka_unit_test(test_helo_fallback),
		cmocka_unit_test(test_greeting_refused),
		cmocka_unit_test(test_malformed_and_long_replies),
		cmocka_unit_test(test_tls_required_but_not_offered),
		cmocka_unit_test(test_size_limit_bounces),
		cmocka_unit_test(test_connection_lost_in_transaction),
		cmocka_unit_test(test_connection_refused),
		cmocka_unit_test(test_cancel),
		cmocka_unit_test(test_host_name_too_long),
		cmocka_unit_test(test_write_failure_defers),
		cmocka_unit_test(test_write_failure_at_quit),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

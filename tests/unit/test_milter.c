/* test_milter: the milter protocol's packets (filter/milter_proto), the
 * header fields and their changes (filter/milter_msg), a session's
 * connection to a filter asked step by step (filter/milter, against a
 * scripted filter on a thread), the milter and junk-header directives,
 * and the spool's Junk mark and replacement versions that the filters'
 * changes are written as. */
#define _GNU_SOURCE /* nftw in unitfs.h */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/event.h>

#include "conf/conf.h"
#include "filter/milter.h"
#include "filter/milter_msg.h"
#include "filter/milter_proto.h"
#include "queue/spool.h"
#include "lib/util.h"
#include "unitfs.h"

/* ---- packets ---------------------------------------------------------------- */

static size_t pkt(uint8_t *out, char cmd, const void *data, size_t len)
{
	uint32_t n = (uint32_t)len + 1;
	out[0] = (uint8_t)(n >> 24);
	out[1] = (uint8_t)(n >> 16);
	out[2] = (uint8_t)(n >> 8);
	out[3] = (uint8_t)n;
	out[4] = (uint8_t)cmd;
	memcpy(out + 5, data, len);
	return len + 5;
}

static enum milter_parse parse(const uint8_t *buf, size_t len, struct milter_reply *r)
{
	size_t used;
	const char *why;
	return milter_reply_parse(buf, len, &used, r, &why);
}

static void test_optneg_and_simple_replies(void **state)
{
	uint8_t buf[64];
	const uint8_t neg[12] = {0, 0, 0, 6, 0, 0, 1, 0xff, 0, 0, 0, 0x10};
	size_t n = pkt(buf, 'O', neg, sizeof neg);
	struct milter_reply r;
	assert_int_equal(parse(buf, n, &r), MILTER_PARSE_OK);
	assert_int_equal(r.version, 6);
	assert_int_equal(r.actions, 0x1ff);
	assert_int_equal(r.protocol, 0x10);
	for (size_t k = 0; k < n; k++) /* every prefix needs more */
		assert_int_equal(parse(buf, k, &r), MILTER_PARSE_NEED_MORE);
	n = pkt(buf, 'O', neg, 8);
	assert_int_equal(parse(buf, n, &r), MILTER_PARSE_BAD);
	n = pkt(buf, 'c', "", 0);
	assert_int_equal(parse(buf, n, &r), MILTER_PARSE_OK);
	assert_int_equal(r.cmd, 'c');
	n = pkt(buf, 'Z', "", 0);
	assert_int_equal(parse(buf, n, &r), MILTER_PARSE_BAD);
}

static void test_lengths_are_bounded(void **state)
{
	const uint8_t huge[5] = {0x7f, 0xff, 0xff, 0xff, 'c'};
	const uint8_t zero[5] = {0, 0, 0, 0, 'c'};
	struct milter_reply r;
	assert_int_equal(parse(huge, sizeof huge, &r), MILTER_PARSE_BAD);
	assert_int_equal(parse(zero, sizeof zero, &r), MILTER_PARSE_BAD);
}

static void test_header_changes_checked(void **state)
{
	uint8_t buf[128];
	struct milter_reply r;
	size_t n = pkt(buf, 'h', "X-Spam\0Yes", 11);
	assert_int_equal(parse(buf, n, &r), MILTER_PARSE_OK);
	assert_string_equal(r.s1, "X-Spam");
	assert_string_equal(r.s2, "Yes");
	n = pkt(buf, 'h', "X-Spam\0a\n\tb", 12); /* a fold is fine */
	assert_int_equal(parse(buf, n, &r), MILTER_PARSE_OK);
	n = pkt(buf, 'h', "X-Spam\0a\r\nBcc: x", 17); /* a new field is not */
	assert_int_equal(parse(buf, n, &r), MILTER_PARSE_BAD);
	n = pkt(buf, 'h', "X Spam\0a", 9);
	assert_int_equal(parse(buf, n, &r), MILTER_PARSE_BAD);
	n = pkt(buf, 'h', "X-Spam\0Yes", 10); /* no final NUL */
	assert_int_equal(parse(buf, n, &r), MILTER_PARSE_BAD);
	n = pkt(buf, 'm', "\0\0\0\1Subject\0", 13);
	assert_int_equal(parse(buf, n, &r), MILTER_PARSE_OK);
	assert_int_equal(r.index, 1);
	assert_string_equal(r.s2, "");
	n = pkt(buf, 'm', "\0\0", 2);
	assert_int_equal(parse(buf, n, &r), MILTER_PARSE_BAD);
}

static void test_addresses_and_reply_codes(void **state)
{
	uint8_t buf[128];
	struct milter_reply r;
	size_t n = pkt(buf, '+', "<c@d.test>", 11);
	assert_int_equal(parse(buf, n, &r), MILTER_PARSE_OK);
	n = pkt(buf, '+', "<c d>", 6);
	assert_int_equal(parse(buf, n, &r), MILTER_PARSE_BAD);
	n = pkt(buf, 'y', "550 5.7.1 no", 13);
	assert_int_equal(parse(buf, n, &r), MILTER_PARSE_OK);
	n = pkt(buf, 'y', "250 ok", 7); /* only 4xx and 5xx */
	assert_int_equal(parse(buf, n, &r), MILTER_PARSE_BAD);
	assert_true(milter_reply_text_ok("450-4.7.0 a\r\n450 4.7.0 b"));
	assert_false(milter_reply_text_ok("450-4.7.0 a\r\n550 5.7.0 b"));
	assert_false(milter_reply_text_ok("450 4.7.0 a\r\n450 4.7.0 b"));
	assert_false(milter_reply_text_ok("550 a\nb"));
}

static void test_packet_builder(void **state)
{
	struct milter_packet p;
	milter_packet_begin(&p, 'L');
	milter_packet_add_str(&p, "Subject");
	milter_packet_add_str(&p, "hi");
	assert_true(milter_packet_end(&p));
	assert_int_equal(p.len, 5 + 8 + 3);
	assert_memory_equal(p.buf, "\0\0\0\x0cLSubject\0hi\0", p.len);
	milter_packet_free(&p);
	milter_packet_begin(&p, 'B');
	char *big = xcalloc(1, MILTER_PACKET_MAX);
	milter_packet_add(&p, big, MILTER_PACKET_MAX);
	free(big);
	assert_false(milter_packet_end(&p)); /* over the bound: refused, freed */
}

/* ---- header fields ------------------------------------------------------- */

static int sink(void *arg, const void *d, size_t n)
{
	struct { char buf[512]; size_t len; } *o = arg;
	if (o->len + n >= sizeof o->buf)
		return -1;
	memcpy(o->buf + o->len, d, n);
	o->len += n;
	o->buf[o->len] = '\0';
	return 0;
}

static void test_headers_read_and_changed(void **state)
{
	const char msg[] = "Received: from a\r\n\tby b\r\nSubject: hi\r\nX-Spam:  YES \r\n\r\nbody\r\n";
	struct milter_headers h;
	assert_int_equal(milter_headers_parse(msg, strlen(msg), true, &h), 0);
	assert_int_equal(h.n, 3);
	assert_string_equal(h.v[0].value, "from a\n\tby b");
	assert_int_equal(h.body_offset, strlen(msg) - strlen("body\r\n"));
	assert_true(milter_headers_has(&h, "x-spam", "yes"));
	assert_false(milter_headers_has(&h, "x-spam", "no"));
	milter_headers_insert(&h, 0, "X-Top", "1");
	milter_headers_change(&h, "subject", 1, "");
	milter_headers_change(&h, "X-Missing", 2, "added");
	milter_headers_add(&h, "X-End", "e");
	struct { char buf[512]; size_t len; } out = {{0}, 0};
	assert_int_equal(milter_headers_write(&h, sink, &out), 0);
	assert_string_equal(out.buf, "X-Top: 1\r\nReceived: from a\r\n\tby b\r\nX-Spam:  YES \r\n"
				     "X-Missing: added\r\nX-End: e\r\n\r\n");
	milter_headers_free(&h);
}

static void test_headers_without_end_in_bound(void **state)
{
	struct milter_headers h;
	const char part[] = "Subject: a\r\nX: b\r\n";
	/* a header block that does not end where reading stopped: the last
	 * field may go on, so only the fields before it count, and the block
	 * is written back without an empty line (the rest follows as it was) */
	assert_int_equal(milter_headers_parse(part, strlen(part), false, &h), 0);
	assert_true(h.cut);
	assert_int_equal(h.n, 1);
	assert_int_equal(h.body_offset, 12);
	struct { char buf[512]; size_t len; } out = {{0}, 0};
	assert_int_equal(milter_headers_write(&h, sink, &out), 0);
	assert_string_equal(out.buf, "Subject: a\r\n");
	milter_headers_free(&h);
	/* a line that is no field starts the body */
	const char odd[] = "Subject: a\r\nnot a field\r\nmore\r\n";
	assert_int_equal(milter_headers_parse(odd, strlen(odd), true, &h), 0);
	assert_int_equal(h.n, 1);
	assert_int_equal(h.body_offset, 12);
	milter_headers_free(&h);
}

/* ---- configuration ------------------------------------------------------ */

static char *conf_errors(const char *text, struct conf **out)
{
	char *errs = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&errs, &len);
	assert_non_null(f);
	(void)conf_parse_string("posthorn.conf", text, "/etc/posthorn", out, f);
	fclose(f);
	return errs;
}

/* ---- a session's connection, step by step ----------------------------------
 * A scripted filter on a thread: it answers the option negotiation with
 * every action and step, each step that wants a reply with the next
 * letter of its script ('c' past the end; 'x' closes instead), and notes
 * every command but the macros. */

struct fake_filter {
	int lfd;
	const char *replies;
	size_t at;
	char seen[32];
	size_t nseen;
};

static int read_full(int fd, void *buf, size_t len)
{
	for (size_t got = 0; got < len;) {
		ssize_t n = read(fd, (char *)buf + got, len - got);
		if (n <= 0)
			return -1;
		got += (size_t)n;
	}
	return 0;
}

static int fake_reply(int fd, char cmd, const void *data, size_t len)
{
	uint8_t out[64];
	size_t n = pkt(out, cmd, data, len);
	return write(fd, out, n) == (ssize_t)n ? 0 : -1;
}

/* One command; false at the end of the conversation. */
static bool fake_step(struct fake_filter *ff, int fd)
{
	static const uint8_t optneg[12] = {0, 0, 0, 6, 0, 0, 1, 0xff, 0, 0, 0, 0};
	uint8_t head[5], data[4096];
	if (read_full(fd, head, 5) < 0)
		return false;
	uint32_t n = (uint32_t)head[0] << 24 | (uint32_t)head[1] << 16 | (uint32_t)head[2] << 8 |
		     head[3];
	if (n == 0 || n - 1 > sizeof data || read_full(fd, data, n - 1) < 0)
		return false;
	char cmd = (char)head[4];
	if (cmd != MILTER_CMD_MACRO && ff->nseen < sizeof ff->seen - 1)
		ff->seen[ff->nseen++] = cmd;
	if (cmd == MILTER_CMD_QUIT)
		return false;
	if (cmd == MILTER_CMD_OPTNEG)
		return fake_reply(fd, MILTER_R_OPTNEG, optneg, sizeof optneg) == 0;
	if (cmd == MILTER_CMD_MACRO || cmd == MILTER_CMD_ABORT)
		return true;
	char r = ff->replies[ff->at] ? ff->replies[ff->at++] : MILTER_R_CONTINUE;
	return r != 'x' && fake_reply(fd, r, "", 0) == 0;
}

static void *fake_filter_run(void *arg)
{
	struct fake_filter *ff = arg;
	int fd = accept(ff->lfd, NULL, NULL);
	if (fd < 0)
		return NULL;
	while (fake_step(ff, fd))
		;
	close(fd);
	return NULL;
}

struct answer {
	bool got;
	enum milter_verdict verdict;
	bool failed;
};

static void on_answer(void *arg, struct milter_result *res)
{
	struct answer *a = arg;
	a->got = true;
	a->verdict = res->verdict;
	a->failed = res->failed;
	milter_result_free(res);
	free(res);
}

/* The answer as a letter: a(ccept) d(iscard) t(empfail) r(eject), in
 * capitals when the filter failed. */
static char wait_answer(struct event_base *base, struct answer *a)
{
	while (!a->got)
		assert_int_not_equal(event_base_loop(base, EVLOOP_ONCE), -1);
	static const char letters[] = {[MILTER_VERDICT_ACCEPT] = 'a', [MILTER_VERDICT_DISCARD] = 'd',
				       [MILTER_VERDICT_TEMPFAIL] = 't', [MILTER_VERDICT_REJECT] = 'r'};
	char c = letters[a->verdict];
	return a->failed ? (char)(c - 'a' + 'A') : c;
}

static enum milter_phase phase_of(char step)
{
	return step == 'H' ? MILTER_PHASE_HELO : step == 'M' ? MILTER_PHASE_MAIL : MILTER_PHASE_RCPT;
}

/* Open, then each step of asks (H, M, R; A: the transaction aborted),
 * then close: the answers (the connection's first) and what the filter
 * saw. */
static void run_conn(const char *replies, const char *asks, enum conf_milter_failure on_failure,
		     char *answers, char *seen)
{
	char dir[] = "/tmp/test_milter.XXXXXX";
	assert_non_null(mkdtemp(dir));
	char *path = xasprintf("%s/filter.sock", dir);
	struct fake_filter ff = {.replies = replies};
	ff.lfd = socket(AF_UNIX, SOCK_STREAM, 0);
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	memcpy(sun.sun_path, path, strlen(path) + 1);
	assert_int_equal(bind(ff.lfd, (struct sockaddr *)&sun, sizeof sun), 0);
	assert_int_equal(listen(ff.lfd, 1), 0);
	pthread_t th;
	assert_int_equal(pthread_create(&th, NULL, fake_filter_run, &ff), 0);

	struct conf_milter m = {.name = "fake", .unix_path = path, .timeout = 5,
				.connect_timeout = 5, .on_failure = on_failure,
				.stages = MILTER_STAGE_ALL};
	struct milter_info info = {.session = "s1", .client_addr = "192.0.2.1",
				   .client_name = "unknown", .client_family = AF_INET,
				   .hostname = "mx.example.test", .helo = "client.example.test",
				   .sender = "a@example.net", .rcpt = "b@example.test", .fd = -1};
	struct event_base *base = event_base_new();
	assert_non_null(base);
	struct answer a = {0};
	struct milter_conn *c = milter_conn_open(base, &m, &info, on_answer, &a);
	size_t n = 0;
	answers[n++] = wait_answer(base, &a);
	for (const char *step = asks; *step; step++) {
		if (*step == 'A') {
			milter_conn_abort(c);
			continue;
		}
		memset(&a, 0, sizeof a);
		milter_conn_ask(c, phase_of(*step), &info, on_answer, &a);
		answers[n++] = wait_answer(base, &a);
	}
	answers[n] = '\0';
	milter_conn_free(c);
	/* the socket is closed on the loop's next turn (bufferevent_free) */
	assert_int_not_equal(event_base_loop(base, EVLOOP_NONBLOCK), -1);
	assert_int_equal(pthread_join(th, NULL), 0);
	memcpy(seen, ff.seen, ff.nseen + 1);
	event_base_free(base);
	close(ff.lfd);
	unlink(path);
	rmdir(dir);
	free(path);
}

static void test_conn_steps(void **state)
{
	static const struct {
		const char *replies, *asks;
		enum conf_milter_failure on_failure;
		const char *answers, *seen;
	} cases[] = {
		/* each step once, a recipient refused alone, RSET aborts, the
		 * next MAIL goes over the same connection, QUIT at the end */
		{"ccccrc", "HMRRAM", MILTER_ON_FAILURE_TEMPFAIL, "aaaara", "OCHMRRAMQ"},
		/* RSET, then QUIT: the abort goes at the RSET */
		{"", "HMRA", MILTER_ON_FAILURE_TEMPFAIL, "aaaa", "OCHMRAQ"},
		/* RSET with no transaction: nothing to abort */
		{"", "HA", MILTER_ON_FAILURE_TEMPFAIL, "aa", "OCHQ"},
		/* a tempfail at MAIL: the next MAIL aborts that one first */
		{"cct", "HMM", MILTER_ON_FAILURE_TEMPFAIL, "aata", "OCHMAMQ"},
		/* a filter gone at HELO is failed for the session: on-failure
		 * answers every later step without it */
		{"cx", "HMR", MILTER_ON_FAILURE_REJECT, "aRRR", "OCH"},
		{"cx", "HM", MILTER_ON_FAILURE_ACCEPT, "aAA", "OCH"},
		/* accept at MAIL: nothing more of this message is sent */
		{"cca", "HMRRM", MILTER_ON_FAILURE_TEMPFAIL, "aaaaaa", "OCHMAMQ"},
		/* accept at the connection: nothing more of the session */
		{"a", "HMR", MILTER_ON_FAILURE_TEMPFAIL, "aaaa", "OCQ"},
		/* a reject at the connection is the connection's answer */
		{"r", "", MILTER_ON_FAILURE_TEMPFAIL, "r", "OCQ"},
		/* gone at the connection: on-failure there and after */
		{"x", "H", MILTER_ON_FAILURE_TEMPFAIL, "TT", "OC"},
		/* discard at MAIL: the recipients are not asked (the end of
		 * the message is answered with the discard) */
		{"ccd", "HMRR", MILTER_ON_FAILURE_TEMPFAIL, "aadaa", "OCHMQ"},
	};
	for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
		char answers[16], seen[32];
		run_conn(cases[i].replies, cases[i].asks, cases[i].on_failure, answers, seen);
		if (strcmp(answers, cases[i].answers) != 0 || strcmp(seen, cases[i].seen) != 0)
			fail_msg("case %zu: answers %s (want %s), filter saw %s (want %s)", i, answers,
				 cases[i].answers, seen, cases[i].seen);
	}
}

static void test_conf_milter_block(void **state)
{
	struct conf *c;
	char *e = conf_errors("domains example.test\nserver mx {\n    listen 127.0.0.1:25\n"
			      "    milter rspamd {\n        socket inet:127.0.0.1:11332\n"
			      "        timeout 10s\n        on-failure accept\n"
			      "        stages connect mail data\n    }\n"
			      "    milter other {\n        socket unix:milter.sock\n    }\n"
			      "    junk-header X-Spam yes\n}\n", &c);
	assert_string_equal(e, "");
	free(e);
	assert_non_null(c);
	const struct conf_server *s = &c->servers[0];
	assert_int_equal(s->nmilters, 2);
	assert_string_equal(s->milters[0].name, "rspamd");
	assert_int_equal(s->milters[0].timeout, 10);
	assert_int_equal(s->milters[0].connect_timeout, 5);
	assert_int_equal(s->milters[0].on_failure, MILTER_ON_FAILURE_ACCEPT);
	assert_int_equal(s->milters[0].stages,
			 MILTER_STAGE_CONNECT | MILTER_STAGE_MAIL | MILTER_STAGE_DATA);
	assert_int_equal(s->milters[1].on_failure, MILTER_ON_FAILURE_TEMPFAIL);
	assert_int_equal(s->milters[1].stages, MILTER_STAGE_ALL);
	assert_string_equal(s->milters[1].unix_path, "/etc/posthorn/milter.sock");
	assert_string_equal(s->junk_header, "X-Spam");
	assert_string_equal(s->junk_value, "yes");
	char *policy = NULL;
	size_t plen = 0;
	FILE *f = open_memstream(&policy, &plen);
	assert_non_null(f);
	assert_true(conf_print_policy(c, f) >= 0);
	fclose(f);
	assert_non_null(strstr(policy, "  filters: milter rspamd at inet:127.0.0.1:11332 (10 seconds "
				       "per step; when it fails: accept), then milter other at "
				       "unix:milter.sock (30 seconds per step; when it fails: "
				       "tempfail); messages with \"X-Spam: yes\" go to Junk\n"));
	free(policy);
	conf_free(c);
}

static void test_conf_milter_errors(void **state)
{
	struct conf *c;
	char *e = conf_errors("domains example.test\nserver mx {\n    listen 127.0.0.1:25\n"
			      "    milter a {\n        socket tcp:1.2.3.4:5\n"
			      "        on-failure maybe\n        stages connect body\n    }\n"
			      "    milter b {\n    }\n"
			      "    junk-header \"X Spam\" yes\n}\n"
			      "server p {\n    protocol pop3\n    listen 127.0.0.1:110\n"
			      "    milter c {\n        socket inet:127.0.0.1:1\n    }\n}\n", &c);
	assert_null(c);
	assert_string_equal(e,
		"posthorn.conf:5:16: bad milter socket \"tcp:1.2.3.4:5\" (use inet:IP:PORT or "
		"unix:/PATH, e.g. inet:127.0.0.1:11332)\n"
		"posthorn.conf:6:20: bad value \"maybe\" for \"on-failure\" (use tempfail, accept or "
		"reject)\n"
		"posthorn.conf:7:24: bad value \"body\" for \"stages\" (use connect, helo, mail, rcpt "
		"or data)\n"
		"posthorn.conf:4:5: milter \"a\" without \"socket\" (e.g. socket inet:127.0.0.1:11332)\n"
		"posthorn.conf:9:5: milter \"b\" without \"socket\" (e.g. socket inet:127.0.0.1:11332)\n"
		"posthorn.conf:11:17: bad header field name \"X Spam\" for \"junk-header\"\n"
		"posthorn.conf:16:5: \"milter\" in server \"p\", which is not an SMTP server\n");
	free(e);
}

/* ---- the spool's Junk mark and replacements ------------------------------ */

static void on_commit(void *arg, int err)
{
	*(int *)arg = err;
}

static void test_spool_junk_mark_and_replacement(void **state)
{
	char dir[] = "/tmp/test_milter.XXXXXX";
	assert_non_null(mkdtemp(dir));
	struct spool *sp = spool_open(dir);
	assert_non_null(sp);
	struct spool_rcpt rc = {.address = "bob@example.test", .orig = "bob@example.test", .local = true};
	struct spool_envelope env = {.sender = "a@b.test", .rcpts = &rc, .nrcpts = 1, .client = "127.0.0.1"};
	struct spool_msg *m = spool_msg_begin(sp, &env);
	assert_non_null(m);
	assert_int_equal(spool_msg_write(m, "Subject: x\r\n\r\nold\r\n", 19), 0);
	off_t off;
	int fd = spool_msg_read_fd(m, &off);
	char back[20] = {0};
	assert_true(fd >= 0);
	assert_int_equal(pread(fd, back, 19, off), 19);
	assert_string_equal(back, "Subject: x\r\n\r\nold\r\n");
	char id[SPOOL_ID_SIZE];
	memcpy(id, env.id, sizeof id);
	spool_envelope_mark_junk(&env);
	struct spool_msg *m2 = spool_msg_begin_replacement(sp, &env, m);
	assert_non_null(m2);
	assert_string_equal(env.id, id); /* the same queue ID */
	assert_int_equal(spool_msg_write(m2, "Subject: x\r\n\r\nnew\r\n", 19), 0);
	spool_msg_abort(m);
	int err = -1;
	spool_msg_commit(m2, on_commit, &err); /* synchronous: no committer */
	assert_int_equal(err, 0);
	struct spool_envelope got = {0};
	assert_int_equal(spool_read_envelope(sp, id, &got), 0);
	assert_true(got.junk);
	int mfd = spool_open_message(sp, &got);
	assert_true(mfd >= 0);
	char body[20] = {0};
	assert_int_equal(read(mfd, body, 19), 19);
	assert_string_equal(body, "Subject: x\r\n\r\nnew\r\n");
	close(mfd);
	spool_envelope_clear(&got);
	spool_close(sp);
	rm_tree(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_optneg_and_simple_replies),
		cmocka_unit_test(test_lengths_are_bounded),
		cmocka_unit_test(test_header_changes_checked),
		cmocka_unit_test(test_addresses_and_reply_codes),
		cmocka_unit_test(test_packet_builder),
		cmocka_unit_test(test_headers_read_and_changed),
		cmocka_unit_test(test_headers_without_end_in_bound),
		cmocka_unit_test(test_conn_steps),
		cmocka_unit_test(test_conf_milter_block),
		cmocka_unit_test(test_conf_milter_errors),
		cmocka_unit_test(test_spool_junk_mark_and_replacement),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

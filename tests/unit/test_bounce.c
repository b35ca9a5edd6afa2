/* test_bounce: delivery status notifications — the RFC 3464 / RFC 6522
 * structure, the per-recipient fields, the returned header (up to its empty
 * line, bounded, cut at a line end), values cleaned of control characters;
 * and where bounce_spool() sends them (the null sender never, a remote
 * sender remotely, a local one through the aliases, an unknown local one to
 * postmaster). */
#define _GNU_SOURCE /* nftw */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "auth/aliases.h"
#include "queue/bounce.h"
#include "conf/conf.h"
#include "lib/log.h"
#include "queue/spool.h"
#include "auth/userdb.h"
#include "lib/util.h"

struct fixture {
	char dir[64];
	struct spool *sp;
	struct conf *conf;
	struct userdb *users;
	struct aliases *al;
	int msg_fd;
	char *out;
	size_t outlen;
	FILE *mem;
};

static const char original[] =
	"Received: from client (unknown [127.0.0.1])\r\n"
	"\tby mx.example.test (posthorn) with ESMTP id X;\r\n"
	"\tMon, 1 Jan 2024 00:00:00 +0000\r\n"
	"From: <bob@example.test>\r\nSubject: hello\r\n\r\nsecret body text\r\n";

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	return remove(path);
}

static void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	assert_int_equal(fclose(f), 0);
}

static int setup(void **state)
{
	struct fixture *f = xcalloc(1, sizeof *f);
	memcpy(f->dir, "/tmp/posthorn-bounce-XXXXXX", sizeof "/tmp/posthorn-bounce-XXXXXX");
	if (!mkdtemp(f->dir))
		return -1;
	char *spool = xasprintf("%s/spool", f->dir);
	f->sp = spool_open(spool);
	free(spool);
	char *text = xasprintf("hostname mx.example.test\ndomains example.test example.org\n"
			       "server mx {\n    listen 127.0.0.1:2999\n}\n");
	FILE *err = fopen("/dev/null", "w");
	int n = conf_parse_string("test.conf", text, f->dir, &f->conf, err);
	fclose(err);
	free(text);
	if (n != 0 || !f->sp)
		return -1;
	char *users = xasprintf("%s/users", f->dir);
	if (userdb_edit(users, USERDB_ADD, "bob@example.test", "pw-bob-1", 8, -1, -1, stderr) < 0 ||
	    userdb_load(users, &f->users, stderr) < 0)
		return -1;
	free(users);
	char *aliases = xasprintf("%s/aliases", f->dir);
	write_file(aliases, "team@example.test: bob@example.test, friend@remote.example\n");
	if (aliases_load(aliases, &f->al, stderr) != 0)
		return -1;
	free(aliases);
	char *msg = xasprintf("%s/original", f->dir);
	write_file(msg, original);
	f->msg_fd = open(msg, O_RDONLY);
	free(msg);
	f->mem = open_memstream(&f->out, &f->outlen);
	*state = f;
	return f->msg_fd >= 0 && f->mem ? 0 : -1;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	if (f->mem)
		fclose(f->mem);
	free(f->out);
	close(f->msg_fd);
	aliases_free(f->al);
	userdb_free(f->users);
	conf_free(f->conf);
	spool_close(f->sp);
	nftw(f->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	free(f);
	return 0;
}

static int put_mem(void *arg, const void *data, size_t len)
{
	return fwrite(data, 1, len, arg) == len ? 0 : -1;
}

static const char *compose(struct fixture *f, const struct bounce *b)
{
	assert_int_equal(bounce_compose(b, put_mem, f->mem), 0);
	assert_int_equal(fflush(f->mem), 0);
	return f->out;
}

static const struct bounce_rcpt two_failures[] = {
	{.address = "nobody@remote.example", .orig = "nobody@remote.example", .status = "5.1.1",
	 .diagnostic = "550 5.1.1 <nobody@remote.example>: no such user", .smtp_reply = true,
	 .remote_mta = "mx1.remote.example", .last_attempt = 1700000000},
	{.address = "late@other.example", .orig = "alias@example.test", .status = "5.4.7",
	 .diagnostic = "TLS is required but mx.other.example does not offer STARTTLS"},
};

static struct bounce basic(struct fixture *f)
{
	return (struct bounce){
		.hostname = "mx.example.test",
		.id = "ORIGID",
		.bounce_id = "BOUNCEID",
		.sender = "bob@example.test",
		.arrival = 1700000000,
		.now = 1700000100,
		.reason = "the receiving mail system refused it",
		.rcpts = two_failures,
		.nrcpts = 2,
		.fd = f->msg_fd,
		.offset = 0,
		.size = sizeof original - 1,
	};
}

/* Every line ends in CRLF, none is longer than RFC 5322 allows. */
static void assert_crlf_lines(const char *t)
{
	for (const char *p = t; *p;) {
		const char *lf = strchr(p, '\n');
		assert_non_null(lf);
		assert_true(lf > p - 0 && lf[-1] == '\r');
		assert_true(lf - p <= 998 + 1);
		p = lf + 1;
	}
}

static void test_structure(void **state)
{
	struct fixture *f = *state;
	struct bounce b = basic(f);
	const char *t = compose(f, &b);
	assert_crlf_lines(t);
	assert_non_null(strstr(t, "From: Mail Delivery System <MAILER-DAEMON@mx.example.test>\r\n"));
	assert_non_null(strstr(t, "To: <bob@example.test>\r\n"));
	assert_non_null(strstr(t, "Subject: Undelivered Mail Returned to Sender\r\n"));
	assert_non_null(strstr(t, "Message-ID: <BOUNCEID.bounce@mx.example.test>\r\n"));
	assert_non_null(strstr(t, "Auto-Submitted: auto-replied\r\n"));
	assert_non_null(strstr(t, "MIME-Version: 1.0\r\n"));
	assert_non_null(strstr(t, "Content-Type: multipart/report; report-type=delivery-status;\r\n"
				  "\tboundary=\"BOUNCEID.1700000000/mx.example.test\"\r\n"));
	/* three parts and the closing delimiter, in this order */
	const char *p1 = strstr(t, "--BOUNCEID.1700000000/mx.example.test\r\nContent-Description: "
				   "Notification\r\nContent-Type: text/plain; charset=us-ascii\r\n");
	const char *p2 = strstr(t, "--BOUNCEID.1700000000/mx.example.test\r\nContent-Description: "
				   "Delivery report\r\nContent-Type: message/delivery-status\r\n");
	const char *p3 = strstr(t, "--BOUNCEID.1700000000/mx.example.test\r\nContent-Description: "
				   "Undelivered Message Headers\r\nContent-Type: text/rfc822-headers\r\n");
	const char *end = strstr(t, "--BOUNCEID.1700000000/mx.example.test--\r\n");
	assert_true(p1 && p2 && p3 && end && p1 < p2 && p2 < p3 && p3 < end);
	assert_string_equal(end, "--BOUNCEID.1700000000/mx.example.test--\r\n");
}

static void test_human_part(void **state)
{
	struct fixture *f = *state;
	struct bounce b = basic(f);
	const char *t = compose(f, &b);
	assert_non_null(strstr(t, "This is the mail system at host mx.example.test.\r\n"));
	assert_non_null(strstr(t, "Reason: the receiving mail system refused it.\r\n"));
	assert_non_null(strstr(t, "<nobody@remote.example>: host mx1.remote.example said: 550 5.1.1 "
				  "<nobody@remote.example>: no such user\r\n"));
	assert_non_null(strstr(t, "<late@other.example>: TLS is required but mx.other.example does "
				  "not offer STARTTLS\r\n"));
	assert_non_null(strstr(t, "Queue ID of your message: ORIGID\r\n"));
}

static void test_report_fields(void **state)
{
	struct fixture *f = *state;
	struct bounce b = basic(f);
	const char *t = compose(f, &b);
	const char *r = strstr(t, "Content-Type: message/delivery-status\r\n\r\n");
	assert_non_null(r);
	assert_non_null(strstr(r, "\r\n\r\nReporting-MTA: dns; mx.example.test\r\n"
				  "X-Posthorn-Queue-ID: ORIGID\r\n"
				  "X-Posthorn-Sender: rfc822; bob@example.test\r\nArrival-Date: "));
	assert_non_null(strstr(r, "\r\n\r\nFinal-Recipient: rfc822; nobody@remote.example\r\n"
				  "Action: failed\r\nStatus: 5.1.1\r\n"
				  "Remote-MTA: dns; mx1.remote.example\r\n"
				  "Diagnostic-Code: smtp; 550 5.1.1 <nobody@remote.example>: no such user\r\n"
				  "Last-Attempt-Date: "));
	/* alias expansion shows the original recipient; a local problem is
	 * no SMTP reply */
	assert_non_null(strstr(r, "\r\n\r\nFinal-Recipient: rfc822; late@other.example\r\n"
				  "Original-Recipient: rfc822; alias@example.test\r\n"
				  "Action: failed\r\nStatus: 5.4.7\r\n"
				  "Diagnostic-Code: X-Posthorn; TLS is required"));
}

static void test_returned_header_only(void **state)
{
	struct fixture *f = *state;
	struct bounce b = basic(f);
	const char *t = compose(f, &b);
	const char *h = strstr(t, "Content-Type: text/rfc822-headers\r\n\r\n");
	assert_non_null(h);
	assert_non_null(strstr(h, "Received: from client (unknown [127.0.0.1])\r\n\tby mx.example.test"));
	assert_non_null(strstr(h, "Subject: hello\r\n\r\n--BOUNCEID"));
	assert_null(strstr(t, "secret body text"));
}

static void test_status_and_values_cleaned(void **state)
{
	struct fixture *f = *state;
	struct bounce_rcpt r = {.address = "x@remote.example", .status = "4.4.1",
				.diagnostic = "bad\r\nInjected: header\x01", .smtp_reply = false};
	struct bounce b = basic(f);
	b.rcpts = &r;
	b.nrcpts = 1;
	b.reason = "line\r\nbreak";
	const char *t = compose(f, &b);
	assert_crlf_lines(t);
	assert_non_null(strstr(t, "Status: 5.0.0\r\n")); /* a failure is never class 4 */
	assert_non_null(strstr(t, "Diagnostic-Code: X-Posthorn; bad  Injected: header \r\n"));
	assert_null(strstr(t, "\nInjected:"));
	assert_non_null(strstr(t, "Reason: line  break.\r\n"));
}

static void test_long_header_cut_at_a_line(void **state)
{
	struct fixture *f = *state;
	char *path = xasprintf("%s/long", f->dir);
	FILE *w = fopen(path, "w");
	assert_non_null(w);
	size_t written = 0;
	for (int i = 0; written < BOUNCE_HEADERS_MAX + 5000; i++) {
		int n = fprintf(w, "X-Filler-%05d: %s\r\n", i, "abcdefghijklmnopqrstuvwxyz0123456789");
		written += (size_t)n;
	}
	fputs("\r\nbody\r\n", w);
	fclose(w);
	int fd = open(path, O_RDONLY);
	struct stat st;
	assert_int_equal(fstat(fd, &st), 0);
	struct bounce b = basic(f);
	b.fd = fd;
	b.size = st.st_size;
	const char *t = compose(f, &b);
	const char *h = strstr(t, "Content-Type: text/rfc822-headers\r\n\r\n");
	const char *end = strstr(h, "\r\n\r\n--BOUNCEID"); /* the last line, then the delimiter */
	assert_non_null(end);
	size_t hlen = (size_t)(end - h);
	assert_true(hlen <= BOUNCE_HEADERS_MAX + 64);
	/* the part ends after a whole line */
	assert_memory_equal(end - 36, "abcdefghijklmnopqrstuvwxyz0123456789", 36);
	close(fd);
	unlink(path);
	free(path);
}

static void test_unreadable_original(void **state)
{
	struct fixture *f = *state;
	struct bounce b = basic(f);
	b.size = 1 << 20; /* more than the file has */
	errno = 0;
	assert_int_equal(bounce_compose(&b, put_mem, f->mem), -1);
}

/* ---- spooling ------------------------------------------------------------ */

struct committed {
	int calls;
	int err;
};

static void on_commit(void *arg, int err)
{
	struct committed *c = arg;
	c->calls++;
	c->err = err;
}

static void spool_for(struct fixture *f, const char *sender, struct spool_envelope *env)
{
	struct bounce b = basic(f);
	b.sender = sender;
	char id[SPOOL_ID_SIZE];
	struct committed c = {0};
	assert_int_equal(bounce_spool(f->sp, f->conf, f->al, f->users, &b, on_commit, &c, id), 0);
	assert_int_equal(c.calls, 1);
	assert_int_equal(c.err, 0);
	assert_string_equal(b.bounce_id, id);
	assert_int_equal(spool_read_envelope(f->sp, id, env), 0);
	assert_string_equal(env->sender, "");
}

static void test_spool_null_sender_refused(void **state)
{
	struct fixture *f = *state;
	struct bounce b = basic(f);
	b.sender = "";
	char id[SPOOL_ID_SIZE];
	struct committed c = {0};
	assert_int_equal(bounce_spool(f->sp, f->conf, f->al, f->users, &b, on_commit, &c, id), -1);
	assert_int_equal(errno, EINVAL);
	assert_int_equal(c.calls, 0);
	char **ids;
	size_t n = spool_list(f->sp, &ids);
	assert_int_equal(n, 0);
	spool_free_ids(ids, n);
}

static void test_spool_remote_sender(void **state)
{
	struct fixture *f = *state;
	struct spool_envelope env;
	spool_for(f, "Someone@Remote.Example", &env);
	assert_int_equal(env.nrcpts, 1);
	assert_string_equal(env.rcpts[0].address, "Someone@Remote.Example");
	assert_false(env.rcpts[0].local);
	int fd = spool_open_message(f->sp, &env);
	char buf[256] = "";
	assert_true(read(fd, buf, sizeof buf - 1) > 0);
	close(fd);
	assert_non_null(strstr(buf, "From: Mail Delivery System <MAILER-DAEMON@mx.example.test>"));
	spool_envelope_clear(&env);
}

static void test_spool_local_user(void **state)
{
	struct fixture *f = *state;
	struct spool_envelope env;
	spool_for(f, "Bob@Example.Test", &env);
	assert_int_equal(env.nrcpts, 1);
	assert_string_equal(env.rcpts[0].address, "bob@example.test");
	assert_true(env.rcpts[0].local);
	spool_envelope_clear(&env);
}

static void test_spool_local_alias_expanded(void **state)
{
	struct fixture *f = *state;
	struct spool_envelope env;
	spool_for(f, "team@example.test", &env);
	assert_int_equal(env.nrcpts, 2);
	assert_string_equal(env.rcpts[0].address, "bob@example.test");
	assert_true(env.rcpts[0].local);
	assert_string_equal(env.rcpts[1].address, "friend@remote.example");
	assert_false(env.rcpts[1].local);
	assert_string_equal(env.rcpts[1].orig, "team@example.test");
	spool_envelope_clear(&env);
}

static void test_spool_unknown_local_goes_to_postmaster(void **state)
{
	struct fixture *f = *state;
	struct spool_envelope env;
	spool_for(f, "ghost@example.org", &env);
	assert_int_equal(env.nrcpts, 1);
	assert_string_equal(env.rcpts[0].address, "postmaster@example.org");
	assert_true(env.rcpts[0].local);
	spool_envelope_clear(&env);
}

/* Users from a directory (users NULL): a local sender is its user. */
static void test_spool_local_sender_with_directory_users(void **state)
{
	struct fixture *f = *state;
	struct spool_envelope env;
	struct userdb *users = f->users;
	f->users = NULL;
	spool_for(f, "ghost@example.org", &env);
	f->users = users;
	assert_int_equal(env.nrcpts, 1);
	assert_string_equal(env.rcpts[0].address, "ghost@example.org");
	assert_true(env.rcpts[0].local);
	spool_envelope_clear(&env);
}

/* An envelope whose times have no RFC 5322 date (a year beyond 9999)
 * still gets its notification: the optional date fields are left out. */
static void test_dates_beyond_9999_left_out(void **state)
{
	struct fixture *f = *state;
	struct bounce b = basic(f);
	struct bounce_rcpt r[2];
	memcpy(r, two_failures, sizeof r);
	r[0].last_attempt = (time_t)400000000000LL;
	b.rcpts = r;
	b.arrival = (time_t)400000000000LL;
	const char *t = compose(f, &b);
	assert_crlf_lines(t);
	assert_null(strstr(t, "Arrival-Date:"));
	assert_null(strstr(t, "Last-Attempt-Date:"));
	assert_non_null(strstr(t, "Final-Recipient: rfc822; nobody@remote.example\r\n"));
	assert_non_null(strstr(t, "\r\nDate: "));
}

/* A line longer than the notification allows fails the whole notification
 * (never a cut line). */
static void test_overlong_line_fails(void **state)
{
	struct fixture *f = *state;
	struct bounce b = basic(f);
	char *host = xmalloc(3000);
	memset(host, 'h', 2999);
	host[2999] = '\0';
	struct bounce_rcpt r[2];
	memcpy(r, two_failures, sizeof r);
	r[0].remote_mta = host;
	b.rcpts = r;
	assert_int_equal(bounce_compose(&b, put_mem, f->mem), -1);
	free(host);
}

int main(void)
{
	log_init(false, LOG_ERR);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_structure, setup, teardown),
		cmocka_unit_test_setup_teardown(test_human_part, setup, teardown),
		cmocka_unit_test_setup_teardown(test_report_fields, setup, teardown),
		cmocka_unit_test_setup_teardown(test_returned_header_only, setup, teardown),
		cmocka_unit_test_setup_teardown(test_status_and_values_cleaned, setup, teardown),
		cmocka_unit_test_setup_teardown(test_long_header_cut_at_a_line, setup, teardown),
		cmocka_unit_test_setup_teardown(test_unreadable_original, setup, teardown),
		cmocka_unit_test_setup_teardown(test_spool_null_sender_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_spool_remote_sender, setup, teardown),
		cmocka_unit_test_setup_teardown(test_spool_local_user, setup, teardown),
		cmocka_unit_test_setup_teardown(test_spool_local_alias_expanded, setup, teardown),
		cmocka_unit_test_setup_teardown(test_spool_unknown_local_goes_to_postmaster, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_spool_local_sender_with_directory_users, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_dates_beyond_9999_left_out, setup, teardown),
		cmocka_unit_test_setup_teardown(test_overlong_line_fails, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

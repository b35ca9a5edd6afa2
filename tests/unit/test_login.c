/* Unit tests for auth/login.c: the login exchange shared by SMTP, POP3 and
 * IMAP — which mechanisms may be used on the channel, SASL PLAIN and LOGIN
 * through a real password worker, the protocols' own password command,
 * cancel, malformed responses, the failure delay and the lockout. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/event.h>

#include "auth/login.h"
#include "auth/throttle.h"
#include "auth/userdb.h"
#include "conf/conf.h"
#include "lib/offload.h"
#include "lib/util.h"

static char tmpdir[] = "/tmp/posthorn-test-login-XXXXXX";
static char users_path[256];
static struct userdb *db;
static struct event_base *base;
static struct throttle *throttle;
static struct conf_server srv;

/* What the done callback saw. */
static struct {
	unsigned count;
	enum login_verdict_kind kind;
	char challenge[256];
	char user[256];
	unsigned retry_after;
} seen;

static void record(void *owner, const struct login_verdict *v)
{
	(void)owner;
	seen.count++;
	seen.kind = v->kind;
	seen.challenge[0] = seen.user[0] = '\0';
	if (v->challenge)
		assert_true(bsnprintf(seen.challenge, sizeof seen.challenge, "%s", v->challenge));
	if (v->user)
		assert_true(bsnprintf(seen.user, sizeof seen.user, "%s", v->user));
	seen.retry_after = v->retry_after;
}

/* Run the loop until a verdict arrives (a worker's check, the delay). */
static void wait_verdict(unsigned before)
{
	for (int i = 0; i < 2000 && seen.count == before; i++)
		event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK), usleep(1000);
	assert_int_not_equal(seen.count, before);
}

static int setup(void **state)
{
	(void)state;
	assert_non_null(mkdtemp(tmpdir));
	assert_true(bsnprintf(users_path, sizeof users_path, "%s/users", tmpdir));
	assert_int_equal(userdb_edit(users_path, USERDB_ADD, "alice@example.test", "wonderland",
				     10, -1, -1, stderr),
			 0);
	assert_int_equal(userdb_load(users_path, &db, stderr), 0);
	base = event_base_new();
	assert_non_null(base);
	assert_int_equal(offload_start(base, 1), 0);
	throttle_test_set_delay_step(0);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	offload_stop();
	event_base_free(base);
	userdb_free(db);
	char *lock = xasprintf("%s.lock", users_path);
	unlink(lock);
	free(lock);
	unlink(users_path);
	rmdir(tmpdir);
	throttle_test_set_delay_step(250);
	return 0;
}

/* Every test: a fresh server block and throttle, nothing seen. */
static int fresh(void **state)
{
	(void)state;
	memset(&srv, 0, sizeof srv);
	srv.name = "submission";
	srv.auth.mechanisms = MECH_PLAIN | MECH_LOGIN | MECH_SCRAM_SHA_256;
	srv.auth.plaintext_requires_tls = true;
	srv.auth.lockout_failures = 5;
	srv.auth.lockout_window = 900;
	srv.auth.lockout_duration = 1800;
	throttle = throttle_new(64);
	memset(&seen, 0, sizeof seen);
	return 0;
}

static int done(void **state)
{
	(void)state;
	throttle_free(throttle);
	return 0;
}

static struct login *new_login(void)
{
	struct login_env env = {
		.sid = "t1", .srv = &srv, .client = "192.0.2.7", .users = db,
		.throttle = throttle, .base = base,
	};
	return login_new(&env, record, NULL);
}

/* "\0alice@example.test\0wonderland" and a wrong password, in base64. */
static const char plain_ok[] = "AGFsaWNlQGV4YW1wbGUudGVzdAB3b25kZXJsYW5k";
static const char plain_bad[] = "AGFsaWNlQGV4YW1wbGUudGVzdAB3cm9uZw==";

static void test_mechanisms_by_channel(void **state)
{
	(void)state;
	/* plaintext-requires-tls: every password-based mechanism only inside
	 * TLS, SCRAM-SHA-256 too (its exchange is enough for an offline
	 * dictionary attack) */
	assert_int_equal(login_mechanisms(&srv, false), 0);
	assert_int_equal(login_mechanisms(&srv, true), MECH_PLAIN | MECH_LOGIN | MECH_SCRAM_SHA_256);
	assert_false(login_password_allowed(&srv, false));
	assert_true(login_password_needs_tls(&srv, false));
	assert_true(login_password_allowed(&srv, true));
	srv.auth.mechanisms = MECH_SCRAM_SHA_256;
	assert_int_equal(login_mechanisms(&srv, false), 0);
	assert_int_equal(login_mechanisms(&srv, true), MECH_SCRAM_SHA_256);
	srv.auth.mechanisms = MECH_PLAIN | MECH_LOGIN | MECH_SCRAM_SHA_256;
	/* require secure channel: nothing before TLS */
	srv.tls.require = true;
	assert_int_equal(login_mechanisms(&srv, false), 0);
	/* no plaintext mechanism configured: the password command is disabled,
	 * not "use TLS" */
	srv.tls.require = false;
	srv.auth.mechanisms = MECH_SCRAM_SHA_256;
	assert_false(login_password_allowed(&srv, true));
	assert_false(login_password_needs_tls(&srv, false));
	/* password-based mechanisms allowed before TLS when so configured */
	srv.auth.plaintext_requires_tls = false;
	assert_int_equal(login_mechanisms(&srv, false), MECH_SCRAM_SHA_256);
	srv.auth.mechanisms = MECH_PLAIN;
	assert_int_equal(login_mechanisms(&srv, false), MECH_PLAIN);
}

static void test_plain_ok_on_worker(void **state)
{
	(void)state;
	struct login *l = new_login();
	login_start(l, "plain", plain_ok, true);
	assert_true(login_busy(l)); /* the check runs on the worker */
	wait_verdict(0);
	assert_int_equal(seen.kind, LOGIN_OK);
	assert_string_equal(seen.user, "alice@example.test");
	assert_string_equal(login_mechanism(l), "PLAIN");
	assert_false(login_busy(l));
	login_free(l);
}

static void test_login_mechanism_challenges_then_fails(void **state)
{
	(void)state;
	struct login *l = new_login();
	login_start(l, "LOGIN", NULL, true);
	assert_int_equal(seen.count, 1);
	assert_int_equal(seen.kind, LOGIN_CHALLENGE);
	assert_string_equal(seen.challenge, "VXNlcm5hbWU6"); /* "Username:" */
	assert_true(login_in_exchange(l));
	login_response(l, "YWxpY2VAZXhhbXBsZS50ZXN0", false);
	assert_int_equal(seen.kind, LOGIN_CHALLENGE);
	assert_string_equal(seen.challenge, "UGFzc3dvcmQ6"); /* "Password:" */
	login_response(l, "d3Jvbmc=", false); /* "wrong" */
	wait_verdict(2);
	assert_int_equal(seen.kind, LOGIN_FAILED);
	assert_false(login_in_exchange(l));
	login_free(l);
}

static void test_plaintext_before_tls_refused(void **state)
{
	(void)state;
	struct login *l = new_login();
	login_start(l, "PLAIN", plain_ok, false);
	assert_int_equal(seen.count, 1);
	assert_int_equal(seen.kind, LOGIN_NEEDS_TLS);
	assert_false(login_busy(l));
	login_free(l);
}

/* SCRAM-SHA-256 before TLS gets what PLAIN gets: its server-first
 * message (salt, iterations) and the client's proof would be an offline
 * dictionary attack's material.  No challenge goes out. */
static void test_scram_before_tls_refused(void **state)
{
	(void)state;
	struct login *l = new_login();
	/* "n,,n=alice@example.test,r=abcdefgh" */
	login_start(l, "SCRAM-SHA-256", "biwsbj1hbGljZUBleGFtcGxlLnRlc3Qscj1hYmNkZWZnaA==", false);
	assert_int_equal(seen.count, 1);
	assert_int_equal(seen.kind, LOGIN_NEEDS_TLS);
	assert_false(login_in_exchange(l));
	login_start(l, "scram-sha-256", NULL, false);
	assert_int_equal(seen.count, 2);
	assert_int_equal(seen.kind, LOGIN_NEEDS_TLS);
	/* inside TLS the exchange starts: the server-first challenge */
	login_start(l, "SCRAM-SHA-256", "biwsbj1hbGljZUBleGFtcGxlLnRlc3Qscj1hYmNkZWZnaA==", true);
	assert_int_equal(seen.count, 3);
	assert_int_equal(seen.kind, LOGIN_CHALLENGE);
	assert_true(login_in_exchange(l));
	login_free(l);
}

static void test_unknown_mechanism(void **state)
{
	(void)state;
	struct login *l = new_login();
	login_start(l, "CRAM-MD5", NULL, true);
	assert_int_equal(seen.kind, LOGIN_UNKNOWN_MECHANISM);
	srv.auth.mechanisms = MECH_SCRAM_SHA_256; /* known to SASL, not offered here */
	login_start(l, "PLAIN", plain_ok, true);
	assert_int_equal(seen.count, 2);
	assert_int_equal(seen.kind, LOGIN_UNKNOWN_MECHANISM);
	login_free(l);
}

static void test_cancel_and_malformed(void **state)
{
	(void)state;
	struct login *l = new_login();
	login_start(l, "LOGIN", NULL, true);
	login_response(l, "*", false);
	assert_int_equal(seen.kind, LOGIN_CANCELLED);
	assert_false(login_in_exchange(l));
	login_start(l, "LOGIN", NULL, true);
	login_response(l, "YWxp", true); /* a NUL or bare CR in the line */
	assert_int_equal(seen.kind, LOGIN_BAD_RESPONSE);
	login_start(l, "PLAIN", "!!not base64!!", true);
	assert_int_equal(seen.kind, LOGIN_BAD_RESPONSE);
	assert_false(login_busy(l));
	login_free(l);
}

static void test_password_command(void **state)
{
	(void)state;
	struct login *l = new_login();
	char pass[] = "wonderland";
	login_password(l, "USER", "alice@example.test", 18, pass, strlen(pass), true);
	assert_string_equal(pass, ""); /* wiped at once */
	wait_verdict(0);
	assert_int_equal(seen.kind, LOGIN_OK);
	assert_string_equal(seen.user, "alice@example.test");
	assert_string_equal(login_mechanism(l), "USER");
	char wrong[] = "nope";
	login_password(l, "LOGIN", "nobody@example.test", 19, wrong, strlen(wrong), true);
	wait_verdict(1);
	assert_int_equal(seen.kind, LOGIN_FAILED);
	assert_string_equal(login_mechanism(l), "LOGIN");
	login_free(l);
}

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000.0 + ts.tv_nsec / 1e6;
}

/* The first failure from an address is answered at once, the second only
 * after the throttle's delay (2 x the step); busy all the while. */
static void test_failure_is_delayed(void **state)
{
	(void)state;
	throttle_test_set_delay_step(100);
	struct login *l = new_login();
	login_start(l, "PLAIN", plain_bad, true);
	wait_verdict(0);
	assert_int_equal(seen.kind, LOGIN_FAILED);
	double t0 = now_ms();
	login_start(l, "PLAIN", plain_bad, true);
	assert_true(login_busy(l));
	wait_verdict(1);
	assert_int_equal(seen.kind, LOGIN_FAILED);
	assert_true(now_ms() - t0 >= 190.0);
	assert_false(login_busy(l));
	throttle_test_set_delay_step(0);
	login_free(l);
}

static void test_lockout_after_failures(void **state)
{
	(void)state;
	srv.auth.lockout_failures = 2;
	struct login *l = new_login();
	for (unsigned i = 0; i < 2; i++) {
		unsigned before = seen.count;
		login_start(l, "PLAIN", plain_bad, true);
		wait_verdict(before);
		assert_int_equal(seen.kind, LOGIN_FAILED);
	}
	/* the address is locked out now, even with the right password */
	login_start(l, "PLAIN", plain_ok, true);
	assert_int_equal(seen.count, 3);
	assert_int_equal(seen.kind, LOGIN_LOCKED_OUT);
	assert_true(seen.retry_after > 0 && seen.retry_after <= 1800);
	char pass[] = "wonderland";
	login_password(l, "USER", "alice@example.test", 18, pass, strlen(pass), true);
	assert_int_equal(seen.count, 4);
	assert_int_equal(seen.kind, LOGIN_LOCKED_OUT);
	assert_string_equal(pass, "");
	login_free(l);
}

static void test_free_while_checking(void **state)
{
	(void)state;
	struct login *l = new_login();
	login_start(l, "PLAIN", plain_ok, true);
	assert_true(login_busy(l));
	login_free(l); /* the session went away: no verdict ever */
	for (int i = 0; i < 50; i++)
		event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK), usleep(1000);
	assert_int_equal(seen.count, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_mechanisms_by_channel, fresh, done),
		cmocka_unit_test_setup_teardown(test_plain_ok_on_worker, fresh, done),
		cmocka_unit_test_setup_teardown(test_login_mechanism_challenges_then_fails, fresh, done),
		cmocka_unit_test_setup_teardown(test_plaintext_before_tls_refused, fresh, done),
		cmocka_unit_test_setup_teardown(test_scram_before_tls_refused, fresh, done),
		cmocka_unit_test_setup_teardown(test_unknown_mechanism, fresh, done),
		cmocka_unit_test_setup_teardown(test_cancel_and_malformed, fresh, done),
		cmocka_unit_test_setup_teardown(test_password_command, fresh, done),
		cmocka_unit_test_setup_teardown(test_failure_is_delayed, fresh, done),
		cmocka_unit_test_setup_teardown(test_lockout_after_failures, fresh, done),
		cmocka_unit_test_setup_teardown(test_free_while_checking, fresh, done),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}

/* Unit tests for auth/throttle.c: the lockout after failed logins and
 * after unknown recipients (each kind with its own count), the failure
 * delay, the window, how clients are told apart (IPv4 per address, IPv6
 * per network), and the bound of the table. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "auth/throttle.h"
#include "conf/conf.h"
#include "lib/util.h"

/* lockout 5 15m 30m, IPv6 per /64 (the defaults) */
static const struct throttle_rule lockout_5_15m_30m = {
    .limit = 5, .window = 900, .duration = 1800, .ipv6_prefix = 64};
/* each IPv6 address on its own */
static const struct throttle_rule per_address = {
    .limit = 5, .window = 900, .duration = 1800, .ipv6_prefix = 128};
static const struct throttle_rule off = {
    .limit = 0, .window = 900, .duration = 1800, .ipv6_prefix = 64};

static bool count_failure(struct throttle *t, const char *who, const struct throttle_rule *r,
			  time_t now)
{
	return throttle_count(t, who, THROTTLE_LOGIN, r, now);
}

static bool locked(struct throttle *t, const char *who, const struct throttle_rule *r, time_t now,
		   unsigned *retry)
{
	return throttle_locked(t, who, THROTTLE_LOGIN, r, now, retry);
}

static void test_throttle_lockout(void **state)
{
	const struct throttle_rule *a = &lockout_5_15m_30m;
	struct throttle *t = throttle_new(100);
	unsigned retry = 99;
	time_t now = 1000000;
	assert_false(locked(t, "127.0.0.7", a, now, &retry));
	assert_int_equal(retry, 0);
	for (int i = 0; i < 4; i++)
		assert_false(count_failure(t, "127.0.0.7", a, now + i));
	assert_false(locked(t, "127.0.0.7", a, now + 4, &retry));
	assert_true(count_failure(t, "127.0.0.7", a, now + 5));
	assert_true(locked(t, "127.0.0.7", a, now + 5, &retry));
	assert_int_equal(retry, 1800);
	/* Another address is not slowed or locked. */
	assert_false(locked(t, "127.0.0.8", a, now + 5, &retry));
	assert_int_equal(throttle_delay_ms(t, "127.0.0.8", a), 0);
	/* Failures while locked do not extend the lock or start another. */
	assert_false(count_failure(t, "127.0.0.7", a, now + 100));
	assert_true(locked(t, "127.0.0.7", a, now + 5 + 1799, &retry));
	assert_int_equal(retry, 1);
	/* The lock expires after its duration and the count starts afresh. */
	assert_false(locked(t, "127.0.0.7", a, now + 5 + 1800, &retry));
	assert_int_equal(retry, 0);
	assert_false(count_failure(t, "127.0.0.7", a, now + 2000));
	assert_int_equal(throttle_delay_ms(t, "127.0.0.7", a), 0);
	assert_false(locked(t, "127.0.0.7", a, now + 2000, &retry));
	throttle_free(t);
}

static void test_throttle_window(void **state)
{
	const struct throttle_rule *a = &lockout_5_15m_30m;
	struct throttle *t = throttle_new(100);
	time_t now = 5000;
	for (int i = 0; i < 4; i++)
		assert_false(count_failure(t, "192.0.2.1", a, now + i));
	/* The window (900 s from the first failure) has passed: count resets. */
	now += 900;
	for (int i = 0; i < 4; i++)
		assert_false(count_failure(t, "192.0.2.1", a, now + i));
	assert_false(locked(t, "192.0.2.1", a, now + 4, NULL));
	assert_true(count_failure(t, "192.0.2.1", a, now + 4));
	assert_true(locked(t, "192.0.2.1", a, now + 4, NULL));
	throttle_free(t);
}

static void test_throttle_success_clears(void **state)
{
	const struct throttle_rule *a = &lockout_5_15m_30m;
	struct throttle *t = throttle_new(100);
	for (int i = 0; i < 4; i++)
		assert_false(count_failure(t, "2001:db8::1", a, 10 + i));
	assert_int_equal(throttle_delay_ms(t, "2001:db8::1", a), 1000);
	throttle_clear(t, "2001:db8::1", THROTTLE_LOGIN, a);
	assert_int_equal(throttle_delay_ms(t, "2001:db8::1", a), 0);
	for (int i = 0; i < 4; i++)
		assert_false(count_failure(t, "2001:db8::1", a, 20 + i));
	assert_false(locked(t, "2001:db8::1", a, 30, NULL));
	throttle_clear(t, "2001:db9::2", THROTTLE_LOGIN, a); /* unknown: nothing to do */
	throttle_free(t);
}

static void test_throttle_delay(void **state)
{
	struct throttle *t = throttle_new(10);
	assert_int_equal(throttle_delay_ms(t, "198.51.100.1", &off), 0);
	const unsigned want[] = {0, 500, 750, 1000, 1250, 1500, 1750, 2000,
				 2250, 2500, 2750, 3000, 3000, 3000};
	for (size_t i = 0; i < ARRAY_LEN(want); i++) {
		/* limit 0: never locked, but still slowed. */
		assert_false(count_failure(t, "198.51.100.1", &off, 100));
		assert_int_equal(throttle_delay_ms(t, "198.51.100.1", &off), want[i]);
		assert_false(locked(t, "198.51.100.1", &off, 100, NULL));
	}
	throttle_free(t);
}

/* A failed login counts against the address and the name tried; the
 * name is only slowed, never locked out; a success clears both. */
static void test_throttle_login(void **state)
{
	const struct throttle_rule *a = &lockout_5_15m_30m;
	struct throttle *t = throttle_new(100);
	bool lock = true;
	/* from many addresses against one name: the name slows them all */
	unsigned d = 0;
	char addr[32];
	for (int i = 0; i < 4; i++) {
		snprintf(addr, sizeof addr, "192.0.2.%d", i + 1);
		d = throttle_login_failed(t, addr, "bob@example.test", a, 100 + i, &lock);
		assert_false(lock);
	}
	assert_int_equal(d, 1000); /* the name's fourth failure */
	/* one address, no name (a malformed exchange): its own count only */
	for (int i = 0; i < 4; i++)
		assert_int_equal(throttle_login_failed(t, "198.51.100.9", NULL, a, 200, &lock),
				 i == 0 ? 0 : 250u * (unsigned)(i + 1));
	assert_false(lock);
	(void)throttle_login_failed(t, "198.51.100.9", NULL, a, 201, &lock);
	assert_true(lock);
	throttle_login_ok(t, "192.0.2.4", "bob@example.test", a);
	assert_int_equal(throttle_delay_ms(t, "user:bob@example.test", a), 0);
	assert_int_equal(throttle_delay_ms(t, "192.0.2.4", a), 0);
	throttle_free(t);
}

/* The fuzzing seam: another step scales the delays, with the same cap on
 * the failures counted; 0 means no delay; the default comes back. */
static void test_throttle_delay_step(void **state)
{
	struct throttle *t = throttle_new(10);
	const unsigned want[] = {0, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 12, 12};
	throttle_test_set_delay_step(1);
	for (size_t i = 0; i < ARRAY_LEN(want); i++) {
		(void)count_failure(t, "198.51.100.2", &off, 100);
		assert_int_equal(throttle_delay_ms(t, "198.51.100.2", &off), want[i]);
	}
	throttle_test_set_delay_step(0);
	assert_int_equal(throttle_delay_ms(t, "198.51.100.2", &off), 0);
	throttle_test_set_delay_step(250);
	assert_int_equal(throttle_delay_ms(t, "198.51.100.2", &off), 3000);
	throttle_free(t);
}

/* Unknown recipients and failed logins are counted apart in one entry:
 * neither locks the other out, a login clears only its own count, and the
 * recipients' count adds no login delay. */
static void test_throttle_kinds_apart(void **state)
{
	const struct throttle_rule rcpt = {.limit = 3, .window = 600, .duration = 60,
					   .ipv6_prefix = 64};
	const struct throttle_rule *a = &lockout_5_15m_30m;
	struct throttle *t = throttle_new(10);
	for (int i = 0; i < 2; i++)
		assert_false(throttle_count(t, "192.0.2.9", THROTTLE_RECIPIENT, &rcpt, 100));
	assert_int_equal(throttle_delay_ms(t, "192.0.2.9", a), 0);
	assert_true(throttle_count(t, "192.0.2.9", THROTTLE_RECIPIENT, &rcpt, 101));
	unsigned retry;
	assert_true(throttle_locked(t, "192.0.2.9", THROTTLE_RECIPIENT, &rcpt, 101, &retry));
	assert_int_equal(retry, 60);
	assert_false(locked(t, "192.0.2.9", a, 101, NULL));
	/* a successful login leaves the recipients' lock in force */
	(void)count_failure(t, "192.0.2.9", a, 102);
	throttle_login_ok(t, "192.0.2.9", "bob@example.test", a);
	assert_true(throttle_locked(t, "192.0.2.9", THROTTLE_RECIPIENT, &rcpt, 102, NULL));
	/* and runs out after its own duration */
	assert_false(throttle_locked(t, "192.0.2.9", THROTTLE_RECIPIENT, &rcpt, 161, NULL));
	/* failed logins lock logins only */
	for (int i = 0; i < 5; i++)
		(void)count_failure(t, "192.0.2.10", a, 200);
	assert_true(locked(t, "192.0.2.10", a, 200, NULL));
	assert_false(throttle_locked(t, "192.0.2.10", THROTTLE_RECIPIENT, &rcpt, 200, NULL));
	throttle_free(t);
}

/* IPv6 clients are counted per network of ipv6_prefix bits: addresses of
 * one /64 share a count, another /64 has its own; with 128 every address
 * is on its own.  IPv4 clients are counted per address. */
static void test_throttle_ipv6_prefix(void **state)
{
	const struct throttle_rule *a = &lockout_5_15m_30m;
	struct throttle *t = throttle_new(100);
	const char *same64[] = {"2001:db8:1:2::1", "2001:db8:1:2:ffff:ffff:ffff:ffff",
				"2001:db8:1:2:a:b:c:d", "2001:DB8:1:2::9", "2001:db8:1:2:0:0:0:5"};
	for (size_t i = 0; i + 1 < ARRAY_LEN(same64); i++)
		assert_false(count_failure(t, same64[i], a, 100));
	assert_true(count_failure(t, same64[ARRAY_LEN(same64) - 1], a, 100));
	for (size_t i = 0; i < ARRAY_LEN(same64); i++)
		assert_true(locked(t, same64[i], a, 101, NULL));
	assert_true(locked(t, "2001:db8:1:2:1234::1", a, 101, NULL));
	/* the neighbouring /64s are not touched */
	assert_false(locked(t, "2001:db8:1:3::1", a, 101, NULL));
	assert_false(locked(t, "2001:db8:1:1:ffff:ffff:ffff:ffff", a, 101, NULL));
	assert_int_equal(throttle_delay_ms(t, "2001:db8:1:3::1", a), 0);

	/* per address (128): five addresses of one /64 are five clients */
	for (size_t i = 0; i < ARRAY_LEN(same64); i++)
		assert_false(count_failure(t, same64[i], &per_address, 200));
	assert_false(locked(t, "2001:db8:1:2::1", &per_address, 201, NULL));

	/* a /48 rule takes in what the /64 rule keeps apart */
	const struct throttle_rule p48 = {.limit = 2, .window = 900, .duration = 60,
					  .ipv6_prefix = 48};
	assert_false(count_failure(t, "2001:db8:7:1::1", &p48, 300));
	assert_true(count_failure(t, "2001:db8:7:ffff::1", &p48, 300));
	assert_true(locked(t, "2001:db8:7:abcd::", &p48, 300, NULL));
	assert_false(locked(t, "2001:db8:8::1", &p48, 300, NULL));

	/* IPv4: per address, whatever the IPv6 prefix */
	for (int i = 0; i < 4; i++)
		assert_false(count_failure(t, "198.51.100.1", a, 400));
	assert_false(count_failure(t, "198.51.100.2", a, 400));
	assert_false(locked(t, "198.51.100.2", a, 400, NULL));
	assert_true(count_failure(t, "198.51.100.1", a, 400));
	assert_true(locked(t, "198.51.100.1", a, 400, NULL));
	assert_false(locked(t, "198.51.100.2", a, 400, NULL));
	/* an IPv4-mapped address is not taken for an IPv6 network (addr_text
	 * never shows one, but a key must never lump all of IPv4 together) */
	for (int i = 0; i < 5; i++)
		(void)count_failure(t, "::ffff:198.51.100.3", a, 400);
	assert_true(locked(t, "::ffff:198.51.100.3", a, 400, NULL));
	assert_false(locked(t, "::ffff:198.51.100.4", a, 400, NULL));
	throttle_free(t);
}

/* The entry with the oldest activity goes first. */
static void test_throttle_lru(void **state)
{
	const struct throttle_rule *a = &lockout_5_15m_30m;
	struct throttle *t = throttle_new(3);
	const char *addr[] = {"10.0.0.1", "10.0.0.2", "10.0.0.3"};
	for (int round = 0; round < 2; round++)
		for (size_t i = 0; i < 3; i++)
			(void)count_failure(t, addr[i], a, 100);
	(void)count_failure(t, addr[0], a, 101); /* 10.0.0.1 is now the newest */
	(void)count_failure(t, "10.0.0.4", a, 102);
	assert_int_equal(throttle_delay_ms(t, addr[0], a), 750);
	assert_int_equal(throttle_delay_ms(t, addr[1], a), 0); /* evicted */
	assert_int_equal(throttle_delay_ms(t, addr[2], a), 500);
	/* A removed entry's slot is reused without growing past the bound. */
	throttle_clear(t, addr[2], THROTTLE_LOGIN, a);
	(void)count_failure(t, "10.0.0.5", a, 103);
	(void)count_failure(t, "10.0.0.5", a, 103);
	assert_int_equal(throttle_delay_ms(t, addr[0], a), 750);
	assert_int_equal(throttle_delay_ms(t, "10.0.0.4", a), 0);
	assert_int_equal(throttle_delay_ms(t, "10.0.0.5", a), 500);
	throttle_free(t);
}

/* 20,000 addresses through a table of 10,000: exactly the 10,000 most
 * recent remain (each failed twice, so a present entry delays 500 ms). */
static void test_throttle_eviction_bound(void **state)
{
	const struct throttle_rule *a = &per_address;
	struct throttle *t = throttle_new(10000);
	char addr[64];
	for (int i = 0; i < 20000; i++) {
		assert_true(bsnprintf(addr, sizeof addr, "2001:db8::%x:%x", i / 256, i % 256));
		(void)count_failure(t, addr, a, 100 + i / 1000);
		(void)count_failure(t, addr, a, 100 + i / 1000);
	}
	size_t present = 0;
	for (int i = 0; i < 20000; i++) {
		assert_true(bsnprintf(addr, sizeof addr, "2001:db8::%x:%x", i / 256, i % 256));
		unsigned d = throttle_delay_ms(t, addr, a);
		assert_int_equal(d, i < 10000 ? 0 : 500);
		present += d != 0;
	}
	assert_int_equal(present, 10000);
	/* A locked address is found among many. */
	for (int i = 0; i < 5; i++)
		(void)count_failure(t, "203.0.113.9", a, 200);
	assert_true(locked(t, "203.0.113.9", a, 200, NULL));
	throttle_free(t);
}

/* A key that is no address is taken as it is, cut at 255 bytes,
 * consistently. */
static void test_throttle_long_key(void **state)
{
	const struct throttle_rule *a = &lockout_5_15m_30m;
	struct throttle *t = throttle_new(0); /* at least one entry */
	char big[400];
	memset(big, 'z', sizeof big - 1);
	big[sizeof big - 1] = '\0';
	(void)count_failure(t, big, a, 1);
	(void)count_failure(t, big, a, 1);
	assert_int_equal(throttle_delay_ms(t, big, a), 500);
	big[300] = '\0'; /* the same first 255 bytes: the same key */
	assert_int_equal(throttle_delay_ms(t, big, a), 500);
	(void)count_failure(t, "127.0.0.1", a, 2); /* evicts the only entry */
	assert_int_equal(throttle_delay_ms(t, big, a), 0);
	throttle_free(t);
	throttle_free(NULL);
}

/* The rules come from the configuration as `check` prints it. */
static void test_throttle_rules_from_conf(void **state)
{
	struct conf_server srv;
	memset(&srv, 0, sizeof srv);
	srv.auth.lockout_failures = 5;
	srv.auth.lockout_window = 900;
	srv.auth.lockout_duration = 1800;
	srv.auth.lockout_ipv6_prefix = 56;
	srv.limits.unknown_recipients = 50;
	srv.limits.unknown_recipients_window = 3600;
	srv.limits.unknown_recipients_duration = 7200;
	struct throttle_rule l = throttle_login_rule(&srv);
	assert_int_equal(l.limit, 5);
	assert_int_equal(l.window, 900);
	assert_int_equal(l.duration, 1800);
	assert_int_equal(l.ipv6_prefix, 56);
	struct throttle_rule r = throttle_recipient_rule(&srv);
	assert_int_equal(r.limit, 50);
	assert_int_equal(r.window, 3600);
	assert_int_equal(r.duration, 7200);
	assert_int_equal(r.ipv6_prefix, 56);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_throttle_lockout),
	    cmocka_unit_test(test_throttle_window),
	    cmocka_unit_test(test_throttle_success_clears),
	    cmocka_unit_test(test_throttle_login),
	    cmocka_unit_test(test_throttle_delay),
	    cmocka_unit_test(test_throttle_delay_step),
	    cmocka_unit_test(test_throttle_kinds_apart),
	    cmocka_unit_test(test_throttle_ipv6_prefix),
	    cmocka_unit_test(test_throttle_lru),
	    cmocka_unit_test(test_throttle_eviction_bound),
	    cmocka_unit_test(test_throttle_long_key),
	    cmocka_unit_test(test_throttle_rules_from_conf),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

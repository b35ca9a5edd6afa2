/* test_outbound: the queue runner's pure parts — the retry schedule
 * (its last step repeats, never past the lifetime, never below the floor)
 * and the Received: count behind loop detection (RFC 5321 §6.3). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "conf/conf.h"
#include "queue/outbound.h"

static void test_retry_schedule(void **state)
{
	unsigned steps[] = {60, 300, 3600};
	struct conf_outbound o = {.retry = steps, .nretry = 3, .lifetime = 5 * 86400};
	time_t arrival = 1000000;
	assert_int_equal(outbound_retry_delay(&o, 1, arrival, arrival), 60);
	assert_int_equal(outbound_retry_delay(&o, 2, arrival, arrival), 300);
	assert_int_equal(outbound_retry_delay(&o, 3, arrival, arrival), 3600);
	assert_int_equal(outbound_retry_delay(&o, 4, arrival, arrival), 3600); /* repeats */
	assert_int_equal(outbound_retry_delay(&o, 1000, arrival, arrival), 3600);
	assert_int_equal(outbound_retry_delay(&o, 0, arrival, arrival), 60);
}

static void test_retry_never_past_lifetime(void **state)
{
	unsigned steps[] = {3600};
	struct conf_outbound o = {.retry = steps, .nretry = 1, .lifetime = 7200};
	time_t arrival = 1000000;
	/* 100 s left: the last attempt comes when the lifetime ends */
	assert_int_equal(outbound_retry_delay(&o, 2, arrival, arrival + 7100), 100);
	/* already over (the daemon was down): soon, then the bounce */
	assert_int_equal(outbound_retry_delay(&o, 2, arrival, arrival + 9000), OUTBOUND_RETRY_MIN);
}

static void test_retry_floor(void **state)
{
	unsigned steps[] = {0};
	struct conf_outbound o = {.retry = steps, .nretry = 1, .lifetime = 100};
	assert_int_equal(outbound_retry_delay(&o, 1, 0, 0), OUTBOUND_RETRY_MIN);
	struct conf_outbound none = {.lifetime = 100};
	assert_int_equal(outbound_retry_delay(&none, 3, 0, 0), OUTBOUND_RETRY_MIN);
}

static size_t count(const char *s)
{
	return outbound_count_received(s, strlen(s));
}

static void test_received_count(void **state)
{
	assert_int_equal(count(""), 0);
	assert_int_equal(count("Received: a\r\nreceived: b\r\nRECEIVED:c\r\n\r\nReceived: body\r\n"), 3);
	assert_int_equal(count("Received: a\n\tfolded Received: no\nReceived: b\n\nReceived: x\n"), 2);
	assert_int_equal(count("Received-SPF: pass\r\nX-Received: x\r\nReceived : spaced\r\n"), 0);
	assert_int_equal(count("Subject: x\r\n\r\n"), 0);
	assert_int_equal(count("Received: cut without a line end"), 1);
}

static void test_received_loop_threshold(void **state)
{
	char buf[8192] = "";
	for (int i = 0; i < OUTBOUND_MAX_RECEIVED + 1; i++)
		strcat(buf, "Received: from a by b; Mon, 1 Jan 2024 00:00:00 +0000\r\n");
	strcat(buf, "\r\nbody\r\n");
	assert_true(count(buf) > OUTBOUND_MAX_RECEIVED);
}

/* RFC 8460 §5.3: a report is known by its TLS-Report-Domain field, in the
 * header only. */
static void test_tls_report_is_recognised(void **state)
{
	static const struct {
		const char *header;
		bool report;
	} cases[] = {
		{"Subject: x\r\nTLS-Report-Domain: example.net\r\n\r\nbody\r\n", true},
		{"tls-report-domain:example.net\n\n", true},
		{"Subject: x\r\n\r\nTLS-Report-Domain: example.net\r\n", false},
		{"X-TLS-Report-Domain: example.net\r\n\r\n", false},
		{"TLS-Report-Submitter: mx.example.test\r\n\r\n", false},
	};
	for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
		assert_int_equal(outbound_is_tls_report(cases[i].header, strlen(cases[i].header)),
				 cases[i].report);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_retry_schedule),
		cmocka_unit_test(test_retry_never_past_lifetime),
		cmocka_unit_test(test_retry_floor),
		cmocka_unit_test(test_received_count),
		cmocka_unit_test(test_received_loop_threshold),
		cmocka_unit_test(test_tls_report_is_recognised),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Unit tests for metrics, the registry behind GET /metrics: the text
 * format (HELP, TYPE, escaped label values, histogram buckets), and that
 * the table of series stays bounded, counting what it had to drop.  And
 * recent, the ring of the status page's events. */
#define _GNU_SOURCE /* open_memstream */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "lib/metrics.h"
#include "lib/recent.h"

static char *exposition(void)
{
	char *text = NULL;
	size_t len = 0;
	FILE *m = open_memstream(&text, &len);
	assert_non_null(m);
	assert_int_equal(metrics_write(m), 0);
	assert_int_equal(fclose(m), 0);
	return text;
}

static int reset(void **state)
{
	metrics_reset();
	recent_clear();
	return 0;
}

static void test_counter_with_labels(void **state)
{
	metrics_count(METRIC_CONNECTIONS, METRIC_LABELS("mx", "accepted"));
	metrics_count(METRIC_CONNECTIONS, METRIC_LABELS("mx", "accepted"));
	metrics_add(METRIC_RECEIVED_BYTES, 1234, METRIC_LABELS("mx"));
	assert_int_equal(metrics_value(METRIC_CONNECTIONS, METRIC_LABELS("mx", "accepted")), 2);
	char *t = exposition();
	assert_non_null(strstr(t, "# HELP posthorn_connections_total "));
	assert_non_null(strstr(t, "# TYPE posthorn_connections_total counter\n"));
	assert_non_null(strstr(t, "\nposthorn_connections_total{server=\"mx\",result=\"accepted\"} 2\n"));
	assert_non_null(strstr(t, "\nposthorn_received_bytes_total{server=\"mx\"} 1234\n"));
	/* a counter without labels is there from the start */
	assert_non_null(strstr(t, "\nposthorn_dns_cache_hits_total 0\n"));
	free(t);
}

static void test_label_values_are_escaped(void **state)
{
	metrics_count(METRIC_SESSIONS, METRIC_LABELS("a\"b\\c\nd", "smtp"));
	char *t = exposition();
	assert_non_null(strstr(t, "posthorn_sessions_total{server=\"a\\\"b\\\\c\\nd\",protocol=\"smtp\"} 1\n"));
	free(t);
}

static void test_histogram_buckets_are_cumulative(void **state)
{
	metrics_observe(METRIC_DELIVERY_SECONDS, METRIC_LABELS("local"), 0.01);
	metrics_observe(METRIC_DELIVERY_SECONDS, METRIC_LABELS("local"), 2);
	char *t = exposition();
	assert_non_null(strstr(t, "# TYPE posthorn_delivery_latency_seconds histogram\n"));
	assert_non_null(strstr(t, "posthorn_delivery_latency_seconds_bucket{kind=\"local\",le=\"0.005\"} 0\n"));
	assert_non_null(strstr(t, "posthorn_delivery_latency_seconds_bucket{kind=\"local\",le=\"0.025\"} 1\n"));
	assert_non_null(strstr(t, "posthorn_delivery_latency_seconds_bucket{kind=\"local\",le=\"5\"} 2\n"));
	assert_non_null(strstr(t, "posthorn_delivery_latency_seconds_bucket{kind=\"local\",le=\"+Inf\"} 2\n"));
	assert_non_null(strstr(t, "posthorn_delivery_latency_seconds_sum{kind=\"local\"} 2.010000\n"));
	assert_non_null(strstr(t, "posthorn_delivery_latency_seconds_count{kind=\"local\"} 2\n"));
	free(t);
}

static void test_gauge_set_and_zero(void **state)
{
	metrics_set(METRIC_CONNECTIONS_OPEN, METRIC_LABELS("mx"), 7);
	assert_int_equal(metrics_value(METRIC_CONNECTIONS_OPEN, METRIC_LABELS("mx")), 7);
	metrics_zero(METRIC_CONNECTIONS_OPEN);
	char *t = exposition();
	assert_non_null(strstr(t, "# TYPE posthorn_connections_open gauge\n"));
	assert_non_null(strstr(t, "\nposthorn_connections_open{server=\"mx\"} 0\n"));
	free(t);
}

/* More label combinations than the table holds: the table does not grow,
 * and the lost increments are counted. */
static void test_table_is_bounded(void **state)
{
	char name[32];
	for (int i = 0; i < METRICS_SERIES_MAX + 10; i++) {
		snprintf(name, sizeof name, "s%d", i);
		metrics_count(METRIC_MESSAGES_ACCEPTED, METRIC_LABELS(name));
	}
	char *t = exposition();
	/* (the label-less counters find no place either: not written) */
	assert_non_null(strstr(t, "\nposthorn_metrics_series_dropped_total 10\n"));
	free(t);
	/* overlong label values are dropped too, not cut */
	char big[METRICS_KEY_MAX + 8];
	memset(big, 'x', sizeof big - 1);
	big[sizeof big - 1] = '\0';
	metrics_reset();
	metrics_count(METRIC_MESSAGES_ACCEPTED, METRIC_LABELS(big));
	t = exposition();
	assert_null(strstr(t, "xxxxxxxx"));
	assert_non_null(strstr(t, "\nposthorn_metrics_series_dropped_total 1\n"));
	free(t);
}

static void test_recent_ring_keeps_the_newest(void **state)
{
	for (int i = 0; i < RECENT_MAX + 5; i++)
		recent_note("refused", "mx", "event %d", i);
	struct recent_event ev[RECENT_MAX];
	size_t n = recent_list(ev);
	assert_int_equal(n, RECENT_MAX);
	char want[32];
	snprintf(want, sizeof want, "event %d", RECENT_MAX + 4);
	assert_string_equal(ev[0].detail, want);
	assert_string_equal(ev[RECENT_MAX - 1].detail, "event 5");
}

static void test_recent_marks_a_cut(void **state)
{
	char big[RECENT_DETAIL_MAX * 2];
	memset(big, 'y', sizeof big - 1);
	big[sizeof big - 1] = '\0';
	recent_note("lockout", "mx", "%s", big);
	struct recent_event ev[RECENT_MAX];
	assert_int_equal(recent_list(ev), 1);
	size_t len = strlen(ev[0].detail);
	assert_int_equal(len, RECENT_DETAIL_MAX - 1);
	assert_string_equal(ev[0].detail + len - 3, "...");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup(test_counter_with_labels, reset),
		cmocka_unit_test_setup(test_label_values_are_escaped, reset),
		cmocka_unit_test_setup(test_histogram_buckets_are_cumulative, reset),
		cmocka_unit_test_setup(test_gauge_set_and_zero, reset),
		cmocka_unit_test_setup(test_table_is_bounded, reset),
		cmocka_unit_test_setup(test_recent_ring_keeps_the_newest, reset),
		cmocka_unit_test_setup(test_recent_marks_a_cut, reset),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

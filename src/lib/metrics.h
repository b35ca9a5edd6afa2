/* metrics: the counters, gauges and histograms that GET /metrics exposes in
 * the Prometheus text format (version 0.0.4).  Every metric has a fixed set
 * of label names; label values come from fixed sets or from the
 * configuration (server names), never from clients.  The table of series is
 * bounded (METRICS_SERIES_MAX); one lock guards it, so any thread may count. */
#ifndef POSTHORN_METRICS_H
#define POSTHORN_METRICS_H

#include <stdint.h>
#include <stdio.h>
#include <time.h>

enum metric_id {
	METRIC_CONNECTIONS,          /* server, result */
	METRIC_CONNECTIONS_OPEN,     /* gauge: server */
	METRIC_TLS_HANDSHAKES,       /* result, version */
	METRIC_LOGINS,               /* server, mechanism, result */
	METRIC_LOCKOUTS,             /* server, reason */
	METRIC_MESSAGES_ACCEPTED,    /* server */
	METRIC_MESSAGES_REJECTED,    /* server, reason */
	METRIC_RECEIVED_BYTES,       /* server */
	METRIC_QUEUE_MESSAGES,       /* gauge */
	METRIC_QUEUE_OLDEST_SECONDS, /* gauge */
	METRIC_DELIVERIES,           /* result */
	METRIC_DELIVERY_SECONDS,     /* histogram: kind */
	METRIC_DNS_QUERIES,          /* type */
	METRIC_DNS_CACHE_HITS,       /* (none) */
	METRIC_SESSIONS,             /* server, protocol */
	METRIC_COMMANDS,             /* protocol, command */
	METRIC_VERIFY_RESULTS,       /* server, method (spf, dkim, arc, dmarc), result */
	METRIC_SERIES_DROPPED,       /* (none): increments lost to a full table */
	METRIC_COUNT
};

enum {
	METRICS_SERIES_MAX = 2048,   /* label combinations over all metrics */
	METRICS_LABELS_MAX = 3,
	METRICS_KEY_MAX = 256,       /* the label values of one series, joined */
};

/* The label values of a call: exactly as many as the metric has names. */
#define METRIC_LABELS(...) ((const char *const[]){__VA_ARGS__})

/* Add n to a counter.  labels: NULL for a metric without labels. */
void metrics_add(enum metric_id id, uint64_t n, const char *const *labels);
static inline void metrics_count(enum metric_id id, const char *const *labels)
{
	metrics_add(id, 1, labels);
}

/* Set a gauge. */
void metrics_set(enum metric_id id, const char *const *labels, int64_t value);
/* Every series of a gauge to 0 (before setting the ones that exist now). */
void metrics_zero(enum metric_id id);

/* One observation of a histogram, in the metric's unit (seconds). */
void metrics_observe(enum metric_id id, const char *const *labels, double value);

/* Seconds from t (a time_t, such as a message's arrival) to now, with the
 * fraction of the current second; 0 when t lies ahead. */
double metrics_seconds_since(time_t t);

/* Every metric in the Prometheus text format on f.  0, or -1 when f could
 * not be written. */
int metrics_write(FILE *f);

/* The value of a counter or gauge series (tests); 0 when it does not exist. */
uint64_t metrics_value(enum metric_id id, const char *const *labels);

/* Forget every series (tests). */
void metrics_reset(void);

#endif

/* metrics: the registry of counters, gauges and histograms (see metrics.h).
 * The exposition follows the Prometheus text format 0.0.4: a HELP and a
 * TYPE line per metric, then its samples; label values escaped (\\, \",
 * \n). */
#include "lib/metrics.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <string.h>

#include "lib/util.h"

enum metric_type { METRIC_COUNTER, METRIC_GAUGE, METRIC_HISTOGRAM };

struct metric_def {
	const char *name;
	const char *help;
	enum metric_type type;
	unsigned nlabels;
	const char *labels[METRICS_LABELS_MAX];
};

static const struct metric_def metric_defs[METRIC_COUNT] = {
	[METRIC_CONNECTIONS] = {"posthorn_connections_total",
		"Connections by virtual server and what became of them (accepted, refused by a "
		"connection rule, refused by a connection limit).", METRIC_COUNTER, 2,
		{"server", "result"}},
	[METRIC_CONNECTIONS_OPEN] = {"posthorn_connections_open",
		"Connections open now, by virtual server.", METRIC_GAUGE, 1, {"server"}},
	[METRIC_TLS_HANDSHAKES] = {"posthorn_tls_handshakes_total",
		"Inbound TLS handshakes by result and protocol version.", METRIC_COUNTER, 2,
		{"result", "version"}},
	[METRIC_LOGINS] = {"posthorn_logins_total",
		"Login attempts by virtual server, mechanism and result.", METRIC_COUNTER, 3,
		{"server", "mechanism", "result"}},
	[METRIC_LOCKOUTS] = {"posthorn_lockouts_total",
		"Client addresses locked out, by virtual server and reason.", METRIC_COUNTER, 2,
		{"server", "reason"}},
	[METRIC_MESSAGES_ACCEPTED] = {"posthorn_messages_accepted_total",
		"Messages accepted into the queue, by virtual server.", METRIC_COUNTER, 1,
		{"server"}},
	[METRIC_MESSAGES_REJECTED] = {"posthorn_messages_rejected_total",
		"Senders, recipients and messages refused, by virtual server and reason.",
		METRIC_COUNTER, 2, {"server", "reason"}},
	[METRIC_RECEIVED_BYTES] = {"posthorn_received_bytes_total",
		"Bytes of accepted messages, by virtual server.", METRIC_COUNTER, 1, {"server"}},
	[METRIC_QUEUE_MESSAGES] = {"posthorn_queue_messages",
		"Messages in the queue waiting for delivery.", METRIC_GAUGE, 0, {NULL}},
	[METRIC_QUEUE_OLDEST_SECONDS] = {"posthorn_queue_oldest_message_age_seconds",
		"Age of the oldest message in the queue (0 when it is empty).", METRIC_GAUGE, 0,
		{NULL}},
	[METRIC_DELIVERIES] = {"posthorn_deliveries_total",
		"Delivery attempts per recipient by result (local, remote, deferred, bounced).",
		METRIC_COUNTER, 1, {"result"}},
	[METRIC_DELIVERY_SECONDS] = {"posthorn_delivery_latency_seconds",
		"Time from a message's arrival to its delivery, by kind (local, remote).",
		METRIC_HISTOGRAM, 1, {"kind"}},
	[METRIC_DNS_QUERIES] = {"posthorn_dns_queries_total",
		"DNS questions asked by record type (answers from the cache included).",
		METRIC_COUNTER, 1, {"type"}},
	[METRIC_DNS_CACHE_HITS] = {"posthorn_dns_cache_hits_total",
		"DNS questions answered from posthorn's cache.", METRIC_COUNTER, 0, {NULL}},
	[METRIC_SESSIONS] = {"posthorn_sessions_total",
		"Protocol sessions started, by virtual server and protocol.", METRIC_COUNTER, 2,
		{"server", "protocol"}},
	[METRIC_COMMANDS] = {"posthorn_commands_total",
		"Commands received, by protocol and command name (unknown ones as \"other\").",
		METRIC_COUNTER, 2, {"protocol", "command"}},
	[METRIC_VERIFY_RESULTS] = {"posthorn_verify_results_total",
		"Sender verification results (verify block), by virtual server, method and result.",
		METRIC_COUNTER, 3, {"server", "method", "result"}},
	[METRIC_SERIES_DROPPED] = {"posthorn_metrics_series_dropped_total",
		"Increments lost because the table of label combinations was full.",
		METRIC_COUNTER, 0, {NULL}},
};

/* Upper bounds of the histogram buckets, in seconds; +Inf is implied. */
static const double metric_buckets[] = {0.005, 0.025, 0.1, 0.5, 1, 5, 30, 300, 1800, 7200, 86400};
enum { METRIC_NBUCKETS = sizeof metric_buckets / sizeof metric_buckets[0] };

struct series {
	enum metric_id id;
	char key[METRICS_KEY_MAX];    /* the label values, each ended by '\0' */
	size_t keylen;
	uint64_t count;               /* counter; histogram: observations */
	int64_t gauge;
	uint64_t buckets[METRIC_NBUCKETS]; /* histogram: observations <= bound */
	double sum;                   /* histogram */
};

enum { METRICS_SLOTS = 2 * METRICS_SERIES_MAX }; /* open addressing, half full at most */

static struct {
	pthread_mutex_t lock;
	struct series series[METRICS_SERIES_MAX]; /* in order of creation */
	size_t nseries;
	uint16_t slots[METRICS_SLOTS];            /* index + 1; 0: empty */
	uint64_t dropped;
} reg = {.lock = PTHREAD_MUTEX_INITIALIZER};

_Static_assert(METRICS_SERIES_MAX < UINT16_MAX, "slots hold series indexes in 16 bits");

/* The label values joined (each ended by '\0') into key; false when they do
 * not fit (then nothing is counted, but the loss is). */
static bool metrics_key(enum metric_id id, const char *const *labels, char *key, size_t *len)
{
	const struct metric_def *d = &metric_defs[id];
	size_t n = 0;
	for (unsigned i = 0; i < d->nlabels; i++) {
		size_t l = strlen(labels[i]) + 1;
		if (l > METRICS_KEY_MAX - n)
			return false;
		memcpy(key + n, labels[i], l);
		n += l;
	}
	*len = n;
	return true;
}

static unsigned metrics_hash(enum metric_id id, const char *key, size_t len)
{
	unsigned h = 2166136261u ^ (unsigned)id; /* FNV-1a */
	for (size_t i = 0; i < len; i++)
		h = (h ^ (unsigned char)key[i]) * 16777619u;
	return h % METRICS_SLOTS;
}

/* The series of id with these labels, created when new; NULL when the
 * table is full or the labels too long.  Under reg.lock. */
static struct series *metrics_series(enum metric_id id, const char *const *labels)
{
	char key[METRICS_KEY_MAX];
	size_t len;
	if (!metrics_key(id, labels, key, &len))
		return NULL;
	unsigned h = metrics_hash(id, key, len);
	while (reg.slots[h]) {
		struct series *s = &reg.series[reg.slots[h] - 1];
		if (s->id == id && s->keylen == len && memcmp(s->key, key, len) == 0)
			return s;
		h = (h + 1) % METRICS_SLOTS;
	}
	if (reg.nseries == METRICS_SERIES_MAX)
		return NULL;
	struct series *s = &reg.series[reg.nseries++];
	memset(s, 0, sizeof *s);
	s->id = id;
	memcpy(s->key, key, len);
	s->keylen = len;
	reg.slots[h] = (uint16_t)reg.nseries;
	return s;
}

static void metrics_lock(void)
{
	if (pthread_mutex_lock(&reg.lock) != 0)
		fatal("metrics: cannot take the lock");
}

static void metrics_unlock(void)
{
	if (pthread_mutex_unlock(&reg.lock) != 0)
		fatal("metrics: cannot release the lock");
}

/* A call that does not match the metric's definition is a bug. */
static void metrics_expect(enum metric_id id, enum metric_type type, const char *const *labels)
{
	if ((unsigned)id >= METRIC_COUNT || metric_defs[id].type != type ||
	    (metric_defs[id].nlabels > 0 && !labels))
		fatal("metrics: metric %d used with the wrong type or labels", (int)id);
}

void metrics_add(enum metric_id id, uint64_t n, const char *const *labels)
{
	metrics_expect(id, METRIC_COUNTER, labels);
	metrics_lock();
	struct series *s = metrics_series(id, labels);
	if (s)
		s->count += n;
	else
		reg.dropped++;
	metrics_unlock();
}

void metrics_set(enum metric_id id, const char *const *labels, int64_t value)
{
	metrics_expect(id, METRIC_GAUGE, labels);
	metrics_lock();
	struct series *s = metrics_series(id, labels);
	if (s)
		s->gauge = value;
	else
		reg.dropped++;
	metrics_unlock();
}

void metrics_zero(enum metric_id id)
{
	metrics_lock();
	for (size_t i = 0; i < reg.nseries; i++)
		if (reg.series[i].id == id)
			reg.series[i].gauge = 0;
	metrics_unlock();
}

void metrics_observe(enum metric_id id, const char *const *labels, double value)
{
	metrics_expect(id, METRIC_HISTOGRAM, labels);
	metrics_lock();
	struct series *s = metrics_series(id, labels);
	if (s) {
		s->count++;
		s->sum += value;
		for (size_t b = 0; b < METRIC_NBUCKETS; b++)
			if (value <= metric_buckets[b])
				s->buckets[b]++;
	} else {
		reg.dropped++;
	}
	metrics_unlock();
}

double metrics_seconds_since(time_t t)
{
	struct timespec now;
	if (clock_gettime(CLOCK_REALTIME, &now) < 0)
		return 0;
	double d = (double)(now.tv_sec - t) + (double)now.tv_nsec / 1e9;
	return d > 0 ? d : 0;
}

uint64_t metrics_value(enum metric_id id, const char *const *labels)
{
	uint64_t v = 0;
	metrics_lock();
	struct series *s = metrics_series(id, labels);
	if (s)
		v = metric_defs[id].type == METRIC_GAUGE ? (uint64_t)s->gauge : s->count;
	metrics_unlock();
	return v;
}

void metrics_reset(void)
{
	metrics_lock();
	reg.nseries = 0;
	reg.dropped = 0;
	memset(reg.slots, 0, sizeof reg.slots);
	metrics_unlock();
}

/* ---- the exposition ------------------------------------------------------ */

/* The text being written: the first failure is kept. */
struct metrics_out {
	FILE *f;
	bool failed;
};

static void mo_printf(struct metrics_out *o, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static void mo_printf(struct metrics_out *o, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	if (vfprintf(o->f, fmt, ap) < 0)
		o->failed = true;
	va_end(ap);
}

/* A label value: \, " and a line end escaped. */
static void metrics_put_value(struct metrics_out *o, const char *v)
{
	for (; *v; v++) {
		if (*v == '\\')
			mo_printf(o, "\\\\");
		else if (*v == '"')
			mo_printf(o, "\\\"");
		else if (*v == '\n')
			mo_printf(o, "\\n");
		else
			mo_printf(o, "%c", *v);
	}
}

/* {a="x",b="y"} of a series, with one more label (le) when extra_name is
 * set; nothing for a series without labels. */
static void metrics_put_labels(struct metrics_out *o, const struct metric_def *d,
			       const struct series *s, const char *extra_name,
			       const char *extra_value)
{
	if (d->nlabels == 0 && !extra_name)
		return;
	mo_printf(o, "{");
	const char *v = s->key;
	for (unsigned i = 0; i < d->nlabels; i++) {
		mo_printf(o, "%s%s=\"", i ? "," : "", d->labels[i]);
		metrics_put_value(o, v);
		mo_printf(o, "\"");
		v += strlen(v) + 1;
	}
	if (extra_name)
		mo_printf(o, "%s%s=\"%s\"", d->nlabels ? "," : "", extra_name, extra_value);
	mo_printf(o, "}");
}

static void metrics_put_histogram(struct metrics_out *o, const struct metric_def *d,
				  const struct series *s)
{
	for (size_t b = 0; b < METRIC_NBUCKETS; b++) {
		char le[32];
		xsnprintf(le, sizeof le, "%g", metric_buckets[b]);
		mo_printf(o, "%s_bucket", d->name);
		metrics_put_labels(o, d, s, "le", le);
		mo_printf(o, " %llu\n", (unsigned long long)s->buckets[b]);
	}
	mo_printf(o, "%s_bucket", d->name);
	metrics_put_labels(o, d, s, "le", "+Inf");
	mo_printf(o, " %llu\n%s_sum", (unsigned long long)s->count, d->name);
	metrics_put_labels(o, d, s, NULL, NULL);
	mo_printf(o, " %.6f\n%s_count", s->sum, d->name);
	metrics_put_labels(o, d, s, NULL, NULL);
	mo_printf(o, " %llu\n", (unsigned long long)s->count);
}

static void metrics_put_series(struct metrics_out *o, const struct metric_def *d,
			       const struct series *s)
{
	if (d->type == METRIC_HISTOGRAM) {
		metrics_put_histogram(o, d, s);
		return;
	}
	mo_printf(o, "%s", d->name);
	metrics_put_labels(o, d, s, NULL, NULL);
	if (d->type == METRIC_GAUGE)
		mo_printf(o, " %lld\n", (long long)s->gauge);
	else
		mo_printf(o, " %llu\n", (unsigned long long)s->count);
}

static const char *metrics_type_name(enum metric_type t)
{
	return t == METRIC_COUNTER ? "counter" : t == METRIC_GAUGE ? "gauge" : "histogram";
}

int metrics_write(FILE *f)
{
	struct metrics_out o = {.f = f};
	metrics_lock();
	for (size_t id = 0; id < METRIC_COUNT; id++) {
		const struct metric_def *d = &metric_defs[id];
		mo_printf(&o, "# HELP %s %s\n# TYPE %s %s\n", d->name, d->help, d->name,
			  metrics_type_name(d->type));
		if (id == METRIC_SERIES_DROPPED) {
			mo_printf(&o, "%s %llu\n", d->name, (unsigned long long)reg.dropped);
			continue;
		}
		if (d->nlabels == 0 && d->type != METRIC_HISTOGRAM) /* 0 before the first event */
			(void)metrics_series((enum metric_id)id, NULL); /* NULL: a full table */
		for (size_t i = 0; i < reg.nseries; i++)
			if (reg.series[i].id == (enum metric_id)id)
				metrics_put_series(&o, d, &reg.series[i]);
	}
	metrics_unlock();
	return o.failed ? -1 : 0;
}

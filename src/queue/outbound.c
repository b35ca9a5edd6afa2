/* outbound: the remote delivery agent, the outbound queue runner on
 * the event loop.  Per message and attempt: the remote recipients not
 * yet done, grouped per destination domain (or all to the smarthost), one
 * SMTP transaction per group (smtp_client.c); a 250 is recorded in the
 * spool at once, a 5xx or the end of `outbound.lifetime` bounces (bounce.c,
 * RFC 3464), the rest waits for the next step of `outbound.retry`.  Mail
 * with more than OUTBOUND_MAX_RECEIVED Received: headers is a loop and is
 * bounced (RFC 5321 §6.3); mail from <> is never bounced (§4.5.5). */
#include "queue/outbound.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <curl/curl.h>
#include <event2/event.h>
#include <openssl/ssl.h>

#include "queue/bounce.h"
#include "conf/conf.h"
#include "lib/log.h"
#include "lib/metrics.h"
#include "lib/strbuf.h"
#include "runtime/runtime.h"
#include "queue/signer.h"
#include "queue/smtp_client.h"
#include "queue/spool.h"
#include "lib/util.h"
#include "lib/waker.h"

enum {
	OUTBOUND_MAX_ACTIVE = 20,               /* messages being delivered at once */
	OUTBOUND_RCPTS_PER_TXN = 100,           /* RFC 5321 §4.5.3.1.8: what servers must take */
	OUTBOUND_HEADER_SCAN_MAX = 256 * 1024,  /* bytes of header searched for Received: */
	OUTBOUND_ERROR_MAX = 1024,
	OUTBOUND_HASH_BUCKETS = 4096,           /* messages found by ID */
	OUTBOUND_LIST_MAX = LOG_VALUE_MAX * 4,  /* failed recipients in a log line, marker included */
};

/* What the runner remembers of one recipient between attempts. */
struct outbound_rcpt {
	char *error;            /* the last problem, NULL before any */
	char status[SMTP_STATUS_MAX];
	char *remote_mta;
	bool smtp_reply;        /* error is a remote SMTP reply */
	char tls[SMTP_CLIENT_TLS_NOTE_MAX]; /* the TLS policy and its result then, or "" */
	bool unrecorded;        /* sent, but spool_mark_done() failed: never send again */
	time_t last_attempt;
};

struct outbound_attempt;

/* A message in the outbound queue. */
struct outbound_msg {
	struct outbound_msg *prev, *next;       /* the queue, in the order messages came */
	struct outbound_msg *hash_next;         /* same bucket */
	struct outbound_msg *ready_next;        /* waiting for a free slot */
	char id[SPOOL_ID_SIZE];
	time_t arrival;
	long long size;
	char *sender;
	char **pending;                         /* remote recipients not done, for `queue list` */
	size_t npending;
	struct outbound_rcpt *rs;               /* per envelope recipient */
	size_t nrcpts;
	long hops;                              /* Received: headers, -1 before counted */
	bool tls_optional;                      /* "TLS-Required: No" (RFC 8689 §4.2) */
	bool tls_report;                        /* a TLS report (RFC 8460 §5.3) */
	unsigned attempts;
	time_t next_attempt;                    /* wall clock; 0 while active or ready */
	char *last_error;
	bool ready;
	struct event *timer;
	struct outbound_attempt *att;           /* while active */
};

/* One group of recipients: one transaction. */
struct outbound_group {
	char *domain;
	size_t *idx;                    /* envelope indices */
	size_t n;
};

struct outbound_attempt {
	struct outbound_msg *m;         /* NULL once orphaned (runner stopped, message deleted) */
	struct runtime *rt;             /* held for the attempt: its conf and resolver */
	struct spool_envelope env;
	int fd;
	struct outbound_group *groups;
	size_t ngroups, gi;
	struct smtp_client *client;
	struct smtp_client_rcpt *crcpts;
	size_t *failed;                 /* envelope indices to bounce */
	size_t nfailed;
	bool bouncing;                  /* waiting for the bounce's commit */
	char bounce_id[SPOOL_ID_SIZE];
	struct signer_job *signing;     /* the DKIM signatures being made */
	char *dkim;                     /* DKIM-Signature fields sent before the message */
};

static struct {
	bool running;
	struct event_base *base;
	struct spool *sp;
	SSL_CTX *ssl_ctx;
	struct outbound_msg *head, *tail;
	struct outbound_msg *buckets[OUTBOUND_HASH_BUCKETS];
	struct outbound_msg *ready_head, *ready_tail;
	size_t nmsgs;
	unsigned nactive;
	outbound_spooled_fn spooled;    /* told of each bounce committed (kept after a stop) */
} outbound;

/* The hand-over from another thread (the delivery worker's): IDs in a
 * list, the loop woken when the list was empty. */
static struct {
	pthread_mutex_t lock;
	struct waker *waker;            /* NULL when the runner is stopped */
	char (*ids)[SPOOL_ID_SIZE];
	size_t nids, cap;
} handover = {.lock = PTHREAD_MUTEX_INITIALIZER};

/* ---- small pure helpers --------------------------------------------------- */

unsigned outbound_retry_delay(const struct conf_outbound *o, unsigned attempts, time_t arrival,
			      time_t now)
{
	unsigned step = OUTBOUND_RETRY_MIN;
	if (o->nretry > 0) {
		size_t i = attempts == 0 ? 0 : attempts - 1;
		step = o->retry[i < o->nretry ? i : o->nretry - 1];
	}
	if (step < OUTBOUND_RETRY_MIN)
		step = OUTBOUND_RETRY_MIN;
	long long left = (long long)arrival + (long long)o->lifetime - (long long)now;
	if (left < (long long)step)
		step = left < OUTBOUND_RETRY_MIN ? OUTBOUND_RETRY_MIN : (unsigned)left;
	return step;
}

/* The header's next line from *pos (its line end and CR left out):
 * false at the empty line that ends the header, or at the end of text. */
static bool outbound_header_line(const char *header, size_t len, size_t *pos, const char **line,
				 size_t *n)
{
	size_t i = *pos, end = i;
	if (i >= len)
		return false;
	while (end < len && header[end] != '\n')
		end++;
	*line = header + i;
	*n = end - i;
	if (*n > 0 && header[i + *n - 1] == '\r')
		(*n)--;
	*pos = end + 1;
	return *n > 0;
}

size_t outbound_count_received(const char *header, size_t len)
{
	size_t count = 0, pos = 0, n;
	const char *line;
	while (outbound_header_line(header, len, &pos, &line, &n))
		if (n >= 9 && strncasecmp(line, "Received:", 9) == 0)
			count++;
	return count;
}

/* RFC 8689 §4.2: "TLS-Required: No" asks that the recipient domain's TLS
 * policies (DANE) be ignored when they fail.  Unfolded value, any case. */
bool outbound_tls_optional(const char *header, size_t len)
{
	static const char name[] = "TLS-Required:";
	size_t pos = 0, n;
	const char *line;
	while (outbound_header_line(header, len, &pos, &line, &n)) {
		if (n >= sizeof name - 1 && strncasecmp(line, name, sizeof name - 1) == 0) {
			const char *v = line + sizeof name - 1;
			size_t vn = n - (sizeof name - 1);
			while (vn > 0 && (*v == ' ' || *v == '\t')) {
				v++;
				vn--;
			}
			while (vn > 0 && (v[vn - 1] == ' ' || v[vn - 1] == '\t'))
				vn--;
			return vn == 2 && strncasecmp(v, "no", 2) == 0;
		}
	}
	return false;
}

/* RFC 8460 §5.3: a report carries TLS-Report-Domain.  Its own delivery
 * is not counted, so that a failing report does not report itself. */
bool outbound_is_tls_report(const char *header, size_t len)
{
	static const char name[] = "TLS-Report-Domain:";
	size_t pos = 0, n;
	const char *line;
	while (outbound_header_line(header, len, &pos, &line, &n))
		if (n >= sizeof name - 1 && strncasecmp(line, name, sizeof name - 1) == 0)
			return true;
	return false;
}

static bool outbound_id_ok(const char *id)
{
	size_t n = strlen(id);
	return n > 0 && n < SPOOL_ID_SIZE && strspn(id, "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ") == n;
}

/* An SMTP reply as text: "NNN ..." */
static bool outbound_is_reply(const char *s)
{
	return s && s[0] >= '2' && s[0] <= '5' && s[1] >= '0' && s[1] <= '9' && s[2] >= '0' &&
	       s[2] <= '9' && (s[3] == ' ' || s[3] == '\0');
}

/* ---- the queue ------------------------------------------------------------ */

static struct outbound_msg **outbound_bucket(const char *id)
{
	unsigned h = 2166136261u; /* FNV-1a */
	for (const unsigned char *p = (const unsigned char *)id; *p; p++)
		h = (h ^ *p) * 16777619u;
	return &outbound.buckets[h % OUTBOUND_HASH_BUCKETS];
}

static struct outbound_msg *outbound_find(const char *id)
{
	for (struct outbound_msg *m = *outbound_bucket(id); m; m = m->hash_next)
		if (strcmp(m->id, id) == 0)
			return m;
	return NULL;
}

static void outbound_rcpt_clear(struct outbound_rcpt *r)
{
	free(r->error);
	free(r->remote_mta);
	memset(r, 0, sizeof *r);
}

static void outbound_free_pending(struct outbound_msg *m)
{
	for (size_t i = 0; i < m->npending; i++)
		free(m->pending[i]);
	free(m->pending);
	m->pending = NULL;
	m->npending = 0;
}

/* The recipients `queue list` shows: remote, not done. */
static void outbound_refresh_pending(struct outbound_msg *m, const struct spool_envelope *env)
{
	outbound_free_pending(m);
	for (size_t i = 0; i < env->nrcpts; i++) {
		if (env->rcpts[i].done || env->rcpts[i].local)
			continue;
		char **slot = xappend(&m->pending, &m->npending, sizeof *slot);
		*slot = xstrdup(env->rcpts[i].address);
	}
}

/* The per-recipient memory follows the envelope (it never changes size
 * for one ID, but a message replaced under the same ID must not crash). */
static void outbound_fit_rcpts(struct outbound_msg *m, size_t n)
{
	if (m->nrcpts == n)
		return;
	for (size_t i = 0; i < m->nrcpts; i++)
		outbound_rcpt_clear(&m->rs[i]);
	free(m->rs);
	m->rs = xcalloc(n, sizeof *m->rs);
	m->nrcpts = n;
}

static void outbound_ready_remove(struct outbound_msg *m)
{
	if (!m->ready)
		return;
	struct outbound_msg **pp = &outbound.ready_head;
	struct outbound_msg *prev = NULL;
	while (*pp && *pp != m) {
		prev = *pp;
		pp = &(*pp)->ready_next;
	}
	if (*pp) {
		*pp = m->ready_next;
		if (outbound.ready_tail == m)
			outbound.ready_tail = prev;
	}
	m->ready_next = NULL;
	m->ready = false;
}

static void outbound_unlink(struct outbound_msg *m)
{
	outbound_ready_remove(m);
	for (struct outbound_msg **pp = outbound_bucket(m->id); *pp; pp = &(*pp)->hash_next)
		if (*pp == m) {
			*pp = m->hash_next;
			break;
		}
	if (m->prev)
		m->prev->next = m->next;
	else
		outbound.head = m->next;
	if (m->next)
		m->next->prev = m->prev;
	else
		outbound.tail = m->prev;
	outbound.nmsgs--;
}

static void outbound_attempt_abandon(struct outbound_attempt *att);

static void outbound_msg_free(struct outbound_msg *m)
{
	if (m->att)
		outbound_attempt_abandon(m->att);
	outbound_unlink(m);
	event_free(m->timer);
	for (size_t i = 0; i < m->nrcpts; i++)
		outbound_rcpt_clear(&m->rs[i]);
	free(m->rs);
	outbound_free_pending(m);
	free(m->sender);
	free(m->last_error);
	free(m);
}

static void outbound_timer_cb(evutil_socket_t fd, short what, void *arg);

static struct outbound_msg *outbound_msg_new(const struct spool_envelope *env)
{
	struct outbound_msg *m = xcalloc(1, sizeof *m);
	memcpy(m->id, env->id, sizeof m->id);
	m->arrival = env->arrival;
	m->size = (long long)env->size;
	m->sender = xstrdup(env->sender ? env->sender : "");
	m->hops = -1;
	m->timer = evtimer_new(outbound.base, outbound_timer_cb, m);
	if (!m->timer)
		fatal("evtimer_new failed");
	outbound_fit_rcpts(m, env->nrcpts);
	outbound_refresh_pending(m, env);
	m->prev = outbound.tail;
	if (outbound.tail)
		outbound.tail->next = m;
	else
		outbound.head = m;
	outbound.tail = m;
	struct outbound_msg **b = outbound_bucket(m->id);
	m->hash_next = *b;
	*b = m;
	outbound.nmsgs++;
	return m;
}

static void outbound_schedule(struct outbound_msg *m, unsigned seconds)
{
	m->next_attempt = time(NULL) + seconds;
	struct timeval tv = {.tv_sec = seconds};
	evtimer_add(m->timer, &tv);
}

/* ---- attempts --------------------------------------------------------------- */

static void outbound_attempt_start(struct outbound_msg *m);

/* Attempts start only from a message's timer, never from inside another
 * message's code: nothing is freed under a caller's feet. */
static void outbound_attempt_soon(struct outbound_msg *m)
{
	outbound_schedule(m, 0);
	m->next_attempt = 0;
}

/* A slot came free: the longest-waiting ready message takes it. */
static void outbound_run_ready(void)
{
	if (!outbound.running || outbound.nactive >= OUTBOUND_MAX_ACTIVE || !outbound.ready_head)
		return;
	struct outbound_msg *m = outbound.ready_head;
	outbound_ready_remove(m);
	outbound_attempt_soon(m);
}

static void outbound_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct outbound_msg *m = arg;
	if (m->att || m->ready)
		return;
	if (outbound.nactive >= OUTBOUND_MAX_ACTIVE) {
		m->ready = true;
		m->next_attempt = 0;
		if (outbound.ready_tail)
			outbound.ready_tail->ready_next = m;
		else
			outbound.ready_head = m;
		outbound.ready_tail = m;
		return;
	}
	outbound_attempt_start(m);
}

static void outbound_groups_free(struct outbound_attempt *att)
{
	for (size_t i = 0; i < att->ngroups; i++) {
		free(att->groups[i].domain);
		free(att->groups[i].idx);
	}
	free(att->groups);
	att->groups = NULL;
	att->ngroups = 0;
}

static void outbound_crcpts_free(struct outbound_attempt *att, size_t n)
{
	for (size_t k = 0; att->crcpts && k < n; k++)
		smtp_client_rcpt_clear(&att->crcpts[k]);
	free(att->crcpts);
	att->crcpts = NULL;
}

static void outbound_attempt_free(struct outbound_attempt *att)
{
	if (att->client)
		smtp_client_cancel(att->client);
	signer_cancel(att->signing);
	free(att->dkim);
	if (att->ngroups > 0 && att->gi < att->ngroups)
		outbound_crcpts_free(att, att->groups[att->gi].n);
	if (att->fd >= 0)
		close(att->fd); /* read-only */
	spool_envelope_clear(&att->env);
	outbound_groups_free(att);
	free(att->failed);
	if (att->rt)
		runtime_unref(att->rt);
	free(att);
}

/* The message goes away mid-attempt (delete, stop): nothing more happens.
 * A bounce being committed keeps its attempt until the commit reports. */
static void outbound_attempt_abandon(struct outbound_attempt *att)
{
	struct outbound_msg *m = att->m;
	if (m) {
		m->att = NULL;
		outbound.nactive--;
	}
	att->m = NULL;
	if (!att->bouncing)
		outbound_attempt_free(att);
}

/* Group the pending remote recipients: per domain (lower-cased), or all
 * to the smarthost; at most OUTBOUND_RCPTS_PER_TXN per transaction. */
static void outbound_make_groups(struct outbound_attempt *att, const struct conf_outbound *o)
{
	const struct spool_envelope *env = &att->env;
	for (size_t i = 0; i < env->nrcpts; i++) {
		const struct spool_rcpt *r = &env->rcpts[i];
		if (r->done || r->local || att->m->rs[i].unrecorded)
			continue;
		const char *at = strrchr(r->address, '@');
		char *domain = str_lower(xstrdup(o->smarthost ? "" : (at ? at + 1 : "")));
		struct outbound_group *g = NULL;
		for (size_t k = 0; k < att->ngroups && !g; k++)
			if (strcmp(att->groups[k].domain, domain) == 0 &&
			    att->groups[k].n < OUTBOUND_RCPTS_PER_TXN)
				g = &att->groups[k];
		if (g) {
			free(domain);
		} else {
			g = xappend(&att->groups, &att->ngroups, sizeof *g);
			g->domain = domain;
			g->idx = xcalloc(OUTBOUND_RCPTS_PER_TXN, sizeof *g->idx);
		}
		g->idx[g->n++] = i;
	}
}

static void outbound_add_failed(struct outbound_attempt *att, size_t idx)
{
	for (size_t k = 0; k < att->nfailed; k++)
		if (att->failed[k] == idx)
			return;
	*(size_t *)xappend(&att->failed, &att->nfailed, sizeof *att->failed) = idx;
	metrics_count(METRIC_DELIVERIES, METRIC_LABELS("bounced"));
}

static void outbound_note(struct outbound_rcpt *rs, const char *status, const char *error,
			  const char *mta)
{
	free(rs->error);
	free(rs->remote_mta);
	rs->error = xstrdup(error);
	rs->remote_mta = mta ? xstrdup(mta) : NULL;
	rs->smtp_reply = mta && outbound_is_reply(error);
	/* fits: a constant here or the client's status, both SMTP_STATUS_MAX */
	xsnprintf(rs->status, sizeof rs->status, "%s", status);
	rs->last_attempt = time(NULL);
}

static void outbound_set_last_error(struct outbound_msg *m, const struct outbound_rcpt *rs)
{
	free(m->last_error);
	const char *sep = rs->tls[0] ? " (" : "", *end = rs->tls[0] ? ")" : "";
	m->last_error = rs->remote_mta && rs->smtp_reply
				? xasprintf("host %s said: %s%s%s%s", rs->remote_mta, rs->error, sep,
					    rs->tls, end)
				: xasprintf("%s%s%s%s", rs->error, sep, rs->tls, end);
}

/* Once per message: the Received: headers (loop detection) and
 * TLS-Required.  hops is -1 when the header could not be read. */
static void outbound_read_header(struct outbound_msg *m, int fd, off_t offset, off_t size)
{
	size_t want = size < OUTBOUND_HEADER_SCAN_MAX ? (size_t)size : OUTBOUND_HEADER_SCAN_MAX;
	char *buf = xmalloc(want ? want : 1);
	size_t have = 0;
	while (have < want) {
		ssize_t n = pread(fd, buf + have, want - have, offset + (off_t)have);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		have += (size_t)n;
	}
	m->hops = have == want ? (long)outbound_count_received(buf, have) : -1;
	m->tls_optional = have == want && outbound_tls_optional(buf, have);
	m->tls_report = have == want && outbound_is_tls_report(buf, have);
	free(buf);
}

static void outbound_group_start(struct outbound_attempt *att);
static void outbound_attempt_finish(struct outbound_attempt *att);
static void outbound_attempt_conclude(struct outbound_attempt *att);

/* Recipients sent earlier whose done record could not be written: try to
 * write it again, never send again. */
static void outbound_record_unrecorded(struct outbound_attempt *att)
{
	struct outbound_msg *m = att->m;
	for (size_t i = 0; i < att->env.nrcpts; i++) {
		if (!m->rs[i].unrecorded)
			continue;
		if (att->env.rcpts[i].done || spool_mark_done(outbound.sp, m->id, i) == 0) {
			att->env.rcpts[i].done = true;
			m->rs[i].unrecorded = false;
		}
	}
}

/* Read the envelope and the message; false after dealing with a failure. */
static bool outbound_attempt_load(struct outbound_attempt *att)
{
	struct outbound_msg *m = att->m;
	const char *what = "read";
	if (spool_read_envelope(outbound.sp, m->id, &att->env) == 0) {
		att->fd = spool_open_message(outbound.sp, &att->env);
		if (att->fd >= 0)
			return true;
		what = "open";
	}
	int e = errno;
	if (e == ENOENT || e == EINVAL) {
		/* removed behind our back, or malformed (logged by the spool) */
		log_warn("event=outbound-drop id=%s reason=\"spool file %s\"", m->id,
			 e == ENOENT ? "is gone" : "is malformed");
		outbound_msg_free(m);
		return false;
	}
	char why[OUTBOUND_ERROR_MAX];
	errfmt(why, sizeof why, "cannot %s the spool file: %s", what, strerror(e));
	log_warn("event=outbound-error id=%s reason=\"%s\"", m->id, why);
	free(m->last_error);
	m->last_error = xstrdup(why);
	outbound_attempt_conclude(att);
	return false;
}

/* The signatures are made (or not: fields NULL); the transactions start. */
static void outbound_signed(void *arg, char *fields)
{
	struct outbound_attempt *att = arg;
	att->signing = NULL;
	att->dkim = fields;
	outbound_group_start(att);
}

static void outbound_attempt_start(struct outbound_msg *m)
{
	struct outbound_attempt *att = xcalloc(1, sizeof *att);
	att->m = m;
	att->fd = -1;
	att->rt = runtime_ref(runtime_current());
	m->att = att;
	m->attempts++;
	m->next_attempt = 0;
	outbound.nactive++;
	if (!outbound_attempt_load(att))
		return;
	outbound_fit_rcpts(m, att->env.nrcpts);
	outbound_record_unrecorded(att);
	if (m->hops < 0)
		outbound_read_header(m, att->fd, att->env.body_offset, att->env.size);
	if (m->hops > OUTBOUND_MAX_RECEIVED) {
		char why[OUTBOUND_ERROR_MAX];
		errfmt(why, sizeof why, "routing loop detected: %ld Received: headers (more than %d)",
		       m->hops, OUTBOUND_MAX_RECEIVED);
		for (size_t i = 0; i < att->env.nrcpts; i++) {
			const struct spool_rcpt *r = &att->env.rcpts[i];
			if (r->done || r->local || m->rs[i].unrecorded)
				continue;
			outbound_note(&m->rs[i], "5.4.6", why, NULL);
			outbound_add_failed(att, i);
		}
		log_warn("event=outbound-loop id=%s hops=%ld", m->id, m->hops);
		outbound_attempt_finish(att);
		return;
	}
	outbound_make_groups(att, &att->rt->conf->outbound);
	if (att->ngroups == 0) {
		outbound_attempt_finish(att);
		return;
	}
	if (signer_wanted(att->rt, &att->env)) {
		/* once per attempt, with the keys of the attempt's generation */
		att->signing = signer_start(att->rt, &att->env, m->id, att->fd,
					    att->env.body_offset, att->env.size, outbound_signed, att);
		return;
	}
	outbound_group_start(att);
}

/* ---- one group's transaction ---------------------------------------------- */

static void outbound_group_done(void *arg);

/* The DNS servers for this message: those of the virtual server that
 * accepted it when it has its own `dns` (and still exists), else the
 * global ones. */
static struct dns_resolver *outbound_resolver(const struct outbound_attempt *att)
{
	const struct conf_server *srv =
	    att->env.server ? runtime_server(att->rt, att->env.server) : NULL;
	return srv ? runtime_resolver(att->rt, srv) : att->rt->dns;
}

static void outbound_group_start(struct outbound_attempt *att)
{
	const struct outbound_group *g = &att->groups[att->gi];
	const struct conf *conf = att->rt->conf;
	const struct conf_outbound *o = &conf->outbound;
	att->crcpts = xcalloc(g->n, sizeof *att->crcpts);
	for (size_t k = 0; k < g->n; k++)
		att->crcpts[k].address = att->env.rcpts[g->idx[k]].address;
	struct smtp_client_params p = {
		.base = outbound.base,
		.dns = outbound_resolver(att),
		.ssl_ctx = outbound.ssl_ctx,
		.id = att->m->id,
		.arrival = att->env.arrival,
		.helo = conf->hostname,
		.sender = att->env.sender,
		.domain = g->domain,
		.smarthost = o->smarthost ? o->smarthost_host : NULL,
		.port = o->smarthost ? o->smarthost_port : o->port,
		.auth_user = o->smarthost ? o->smarthost_user : NULL,
		.auth_secret = o->smarthost ? o->smarthost_secret : NULL,
		.tls = o->tls,
		.dane = o->tls_policy_dane,
		.mta_sts = o->tls_policy_sts,
		.spool_dir = conf->spool,
		.cafile = o->ca_file,
		.requiretls = att->env.requiretls,
		.tls_optional = att->m->tls_optional,
		.tls_report = att->m->tls_report,
		.prefix = att->dkim,
		.fd = att->fd,
		.offset = att->env.body_offset,
		.size = att->env.size,
		.rcpts = att->crcpts,
		.nrcpts = g->n,
	};
	att->client = smtp_client_start(&p, outbound_group_done, att);
}

/* A 250: recorded in the spool before anything else happens, so that no
 * recipient who has the message is ever sent it again. */
static void outbound_sent(struct outbound_attempt *att, size_t idx)
{
	struct outbound_msg *m = att->m;
	att->env.rcpts[idx].done = true;
	if (spool_mark_done(outbound.sp, m->id, idx) == 0) {
		outbound_rcpt_clear(&m->rs[idx]);
		return;
	}
	m->rs[idx].unrecorded = true;
	char a[LOG_VALUE_MAX];
	const char *addr = att->env.rcpts[idx].address;
	log_err("event=spool-error id=%s to=%s reason=\"delivered, but cannot record it: %s\"",
		m->id, log_escape(a, sizeof a, addr, strlen(addr)), strerror(errno));
}

static void outbound_group_done(void *arg)
{
	struct outbound_attempt *att = arg;
	struct outbound_msg *m = att->m;
	const struct outbound_group *g = &att->groups[att->gi];
	att->client = NULL;
	for (size_t k = 0; k < g->n; k++) {
		const struct smtp_client_rcpt *r = &att->crcpts[k];
		size_t idx = g->idx[k];
		if (r->result == SMTP_CLIENT_SENT) {
			outbound_sent(att, idx);
			metrics_count(METRIC_DELIVERIES, METRIC_LABELS("remote"));
			metrics_observe(METRIC_DELIVERY_SECONDS, METRIC_LABELS("remote"),
					metrics_seconds_since(att->env.arrival));
			continue;
		}
		if (r->result != SMTP_CLIENT_FAILED)
			metrics_count(METRIC_DELIVERIES, METRIC_LABELS("deferred"));
		outbound_note(&m->rs[idx], r->status, r->reply ? r->reply : "no answer",
			      r->remote_mta);
		/* fits: both are SMTP_CLIENT_TLS_NOTE_MAX */
		xsnprintf(m->rs[idx].tls, sizeof m->rs[idx].tls, "%s", r->tls);
		outbound_set_last_error(m, &m->rs[idx]);
		if (r->result == SMTP_CLIENT_FAILED)
			outbound_add_failed(att, idx);
	}
	outbound_crcpts_free(att, g->n);
	if (++att->gi < att->ngroups)
		outbound_group_start(att);
	else
		outbound_attempt_finish(att);
}

/* ---- the end of an attempt: bounce, record, reschedule ------------------------ */

/* "<a>,<b>" of the failed recipients, each escaped; those that do not
 * fit are counted in a "+N-more" marker (log_list). */
static void outbound_list_failed(const struct outbound_attempt *att,
				 char out[OUTBOUND_LIST_MAX])
{
	struct strbuf sb;
	strbuf_init(&sb, out, OUTBOUND_LIST_MAX);
	struct log_list l;
	log_list_begin(&l, &sb, "<", ">");
	for (size_t k = 0; k < att->nfailed; k++)
		log_list_add(&l, att->env.rcpts[att->failed[k]].address);
	(void)log_list_end(&l); /* OUTBOUND_LIST_MAX holds the marker */
}

/* The bounce is on stable storage (or not): the failed recipients are
 * done only once their notification is safe. */
static void outbound_mark_failed_done(struct outbound_attempt *att)
{
	for (size_t k = 0; k < att->nfailed; k++) {
		size_t idx = att->failed[k];
		att->env.rcpts[idx].done = true;
		if (spool_mark_done(outbound.sp, att->m->id, idx) < 0) {
			att->m->rs[idx].unrecorded = true;
			log_err("event=spool-error id=%s reason=\"bounced, but cannot record it: %s\"",
				att->m->id, strerror(errno));
		}
	}
}

static void outbound_bounced(void *arg, int err)
{
	struct outbound_attempt *att = arg;
	att->bouncing = false;
	if (!att->m) { /* the message was deleted or the runner stopped meanwhile */
		if (!err && outbound.spooled)
			outbound.spooled(att->bounce_id);
		outbound_attempt_free(att);
		return;
	}
	char list[OUTBOUND_LIST_MAX];
	outbound_list_failed(att, list);
	if (err) {
		log_err("event=bounce-error id=%s failed=%s reason=\"cannot spool the bounce: %s\"",
			att->m->id, list, strerror(err));
	} else {
		char s[LOG_VALUE_MAX];
		log_info("event=bounce id=%s bounce_id=%s to=<%s> failed=%s", att->m->id,
			 att->bounce_id, log_escape(s, sizeof s, att->env.sender, strlen(att->env.sender)),
			 list);
		outbound_mark_failed_done(att);
		if (outbound.spooled)
			outbound.spooled(att->bounce_id);
	}
	outbound_attempt_conclude(att);
}

static void outbound_bounce(struct outbound_attempt *att, const char *reason)
{
	struct outbound_msg *m = att->m;
	struct bounce_rcpt *br = xcalloc(att->nfailed, sizeof *br);
	for (size_t k = 0; k < att->nfailed; k++) {
		size_t idx = att->failed[k];
		const struct outbound_rcpt *rs = &m->rs[idx];
		br[k] = (struct bounce_rcpt){
		    .address = att->env.rcpts[idx].address,
		    .orig = att->env.rcpts[idx].orig,
		    .status = rs->status,
		    .diagnostic = rs->error ? rs->error : "undeliverable",
		    .smtp_reply = rs->smtp_reply,
		    .remote_mta = rs->remote_mta,
		    .last_attempt = rs->last_attempt,
		};
	}
	struct bounce b = {
		.hostname = att->rt->conf->hostname,
		.id = m->id,
		.sender = att->env.sender,
		.arrival = att->env.arrival,
		.reason = reason,
		.rcpts = br,
		.nrcpts = att->nfailed,
		.fd = att->fd,
		.offset = att->env.body_offset,
		.size = att->env.size,
	};
	att->bouncing = true;
	int r = bounce_spool(outbound.sp, att->rt->conf, att->rt->aliases, att->rt->users, &b,
			     outbound_bounced, att, att->bounce_id);
	int e = errno;
	free(br);
	if (r < 0) /* nothing started: the callback will not run */
		outbound_bounced(att, e ? e : EIO);
	/* else att may be gone already: outbound_bounced() concluded it */
}

static void outbound_attempt_finish(struct outbound_attempt *att)
{
	struct outbound_msg *m = att->m;
	const struct conf_outbound *o = &att->rt->conf->outbound;
	time_t now = time(NULL);
	bool expired = (long long)now - (long long)att->env.arrival >= (long long)o->lifetime;
	bool any_expired = false;
	for (size_t i = 0; expired && i < att->env.nrcpts; i++) {
		const struct spool_rcpt *r = &att->env.rcpts[i];
		if (r->done || r->local || m->rs[i].unrecorded)
			continue;
		struct outbound_rcpt *rs = &m->rs[i];
		char why[OUTBOUND_ERROR_MAX];
		if (rs->error)
			errfmt(why, sizeof why, "%s", rs->error);
		else
			errfmt(why, sizeof why, "delivery time expired");
		/* keep the last remote reply as the diagnostic; the status says expired */
		char *keep = xstrdup(why);
		bool smtp = rs->smtp_reply;
		char *mta = rs->remote_mta ? xstrdup(rs->remote_mta) : NULL;
		outbound_note(rs, "5.4.7", keep, mta);
		rs->smtp_reply = smtp;
		free(keep);
		free(mta);
		outbound_add_failed(att, i);
		any_expired = true;
	}
	if (att->nfailed == 0) {
		outbound_attempt_conclude(att);
		return;
	}
	const char *reason = any_expired ? "delivery time expired"
			     : m->hops > OUTBOUND_MAX_RECEIVED ? "mail loop: too many Received: headers"
			     : "the receiving mail system refused it";
	if (!att->env.sender[0]) {
		/* RFC 5321 §4.5.5: nothing is ever sent back to <> */
		char list[OUTBOUND_LIST_MAX];
		outbound_list_failed(att, list);
		log_warn("event=bounce-suppressed id=%s failed=%s reason=\"null sender: %s\"", m->id,
			 list, reason);
		outbound_mark_failed_done(att);
		outbound_attempt_conclude(att);
		return;
	}
	outbound_bounce(att, reason);
}

static size_t outbound_count_pending(const struct outbound_attempt *att, bool local)
{
	size_t n = 0;
	for (size_t i = 0; i < att->env.nrcpts; i++)
		if (!att->env.rcpts[i].done && att->env.rcpts[i].local == local)
			n++;
	return n;
}

static void outbound_attempt_conclude(struct outbound_attempt *att)
{
	struct outbound_msg *m = att->m;
	size_t remote = outbound_count_pending(att, false);
	size_t local = outbound_count_pending(att, true);
	bool unrecorded = false;
	for (size_t i = 0; i < m->nrcpts; i++)
		unrecorded = unrecorded || m->rs[i].unrecorded;
	const struct conf_outbound *o = &att->rt->conf->outbound;
	unsigned delay = outbound_retry_delay(o, m->attempts, att->env.arrival, time(NULL));
	bool loaded = att->env.nrcpts > 0;
	if (loaded)
		outbound_refresh_pending(m, &att->env);
	m->att = NULL;
	outbound.nactive--;
	outbound_attempt_free(att);
	if (loaded && remote == 0 && !unrecorded) {
		/* local delivery came first (the worker hands over afterwards);
		 * a local recipient still pending keeps the message for it */
		if (local == 0 && spool_remove(outbound.sp, m->id) < 0 && errno != ENOENT)
			log_warn("event=spool-error id=%s reason=\"cannot remove: %s\"", m->id,
				 strerror(errno));
		outbound_msg_free(m);
	} else {
		outbound_schedule(m, delay);
	}
	outbound_run_ready();
}

/* ---- hand-over from another thread --------------------------------------------- */

static void outbound_handed_over(void *unused)
{
	(void)unused;
	pthread_mutex_lock(&handover.lock);
	char (*ids)[SPOOL_ID_SIZE] = handover.ids;
	size_t n = handover.nids;
	handover.ids = NULL;
	handover.nids = handover.cap = 0;
	pthread_mutex_unlock(&handover.lock);
	for (size_t i = 0; i < n; i++)
		outbound_enqueue(ids[i]);
	free(ids);
}

void outbound_handoff(const char *id)
{
	if (!outbound_id_ok(id))
		return;
	pthread_mutex_lock(&handover.lock);
	if (handover.waker) { /* else it waits in the spool for the next start */
		bool wake = handover.nids == 0;
		char(*slot)[SPOOL_ID_SIZE] =
		    xgrow(&handover.ids, &handover.nids, &handover.cap, sizeof *handover.ids);
		memcpy(*slot, id, strlen(id) + 1);
		if (wake && waker_wake(handover.waker) < 0)
			log_err("event=outbound-error reason=\"cannot wake the runner: %s\"",
				strerror(errno));
	}
	pthread_mutex_unlock(&handover.lock);
}

void outbound_enqueue(const char *id)
{
	if (!outbound.running || !outbound_id_ok(id) || outbound_find(id))
		return;
	struct spool_envelope env;
	if (spool_read_envelope(outbound.sp, id, &env) < 0) {
		if (errno != ENOENT)
			log_warn("event=outbound-error id=%s reason=\"cannot read the spool file: %s\"",
				 id, strerror(errno));
		return;
	}
	size_t remote = 0, local = 0;
	for (size_t i = 0; i < env.nrcpts; i++) {
		if (env.rcpts[i].done)
			continue;
		if (env.rcpts[i].local)
			local++;
		else
			remote++;
	}
	if (remote == 0) {
		if (local == 0 && spool_remove(outbound.sp, id) < 0 && errno != ENOENT)
			log_warn("event=spool-error id=%s reason=\"cannot remove: %s\"", id,
				 strerror(errno));
		spool_envelope_clear(&env);
		return;
	}
	struct outbound_msg *m = outbound_msg_new(&env);
	spool_envelope_clear(&env);
	log_debug("event=outbound-queued id=%s rcpts=%zu", m->id, remote);
	outbound_attempt_soon(m);
}

/* ---- start, stop --------------------------------------------------------------- */

int outbound_start(struct event_base *base, struct spool *sp, outbound_spooled_fn spooled)
{
	if (outbound.running) {
		errno = EBUSY;
		return -1;
	}
	/* MTA-STS fetches policies with libcurl on worker threads: its global
	 * state is set up here, on the main thread, before any of them */
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
		log_err("event=startup-error error=\"outbound: libcurl cannot start\"");
		errno = EINVAL;
		return -1;
	}
	char err[256];
	SSL_CTX *ctx = smtp_client_tls_new(err, sizeof err);
	if (!ctx) {
		log_err("event=startup-error error=\"outbound TLS: %s\"", err);
		errno = EINVAL;
		return -1;
	}
	struct waker *waker = waker_new(base, outbound_handed_over, NULL);
	if (!waker) {
		int e = errno;
		SSL_CTX_free(ctx);
		errno = e;
		return -1;
	}
	outbound.base = base;
	outbound.sp = sp;
	outbound.spooled = spooled;
	outbound.ssl_ctx = ctx;
	pthread_mutex_lock(&handover.lock);
	handover.waker = waker;
	pthread_mutex_unlock(&handover.lock);
	outbound.running = true;
	return 0;
}

void outbound_stop(void)
{
	if (!outbound.running)
		return;
	outbound.running = false;
	pthread_mutex_lock(&handover.lock);
	waker_free(handover.waker);
	handover.waker = NULL;
	free(handover.ids);
	handover.ids = NULL;
	handover.nids = handover.cap = 0;
	pthread_mutex_unlock(&handover.lock);
	while (outbound.head)
		/* attempts abandoned: their recipients stay pending */
		outbound_msg_free(outbound.head);
	smtp_client_abort_all();
	SSL_CTX_free(outbound.ssl_ctx);
	outbound.ssl_ctx = NULL;
	outbound.nactive = 0;
}

/* ---- the control socket's view --------------------------------------------------- */

void outbound_each(void (*fn)(void *arg, const struct outbound_entry *e), void *arg)
{
	for (struct outbound_msg *m = outbound.head; m; m = m->next) {
		struct outbound_entry e = {
			.arrival = m->arrival,
			.size = m->size,
			.sender = m->sender,
			.pending = (const char *const *)m->pending,
			.npending = m->npending,
			.next_attempt = m->att || m->ready ? 0 : m->next_attempt,
			.attempts = m->attempts - (m->att ? 1 : 0),
			.last_error = m->last_error,
		};
		memcpy(e.id, m->id, sizeof m->id);
		fn(arg, &e);
	}
}

size_t outbound_flush(void)
{
	size_t n = 0;
	for (struct outbound_msg *m = outbound.head; m; m = m->next) {
		if (!m->att && !m->ready) {
			n++;
			outbound_attempt_soon(m);
		}
	}
	return n;
}

int outbound_delete(const char *id)
{
	struct outbound_msg *m = outbound_id_ok(id) ? outbound_find(id) : NULL;
	if (!m) {
		errno = ENOENT;
		return -1;
	}
	bool active = m->att != NULL;
	outbound_msg_free(m); /* an attempt in flight is abandoned first */
	if (active)
		outbound_run_ready();
	if (spool_remove(outbound.sp, id) < 0 && errno != ENOENT) {
		int e = errno;
		log_warn("event=spool-error id=%s reason=\"cannot remove: %s\"", id, strerror(e));
		errno = e;
		return -1;
	}
	log_info("event=queue-delete id=%s bounced=no", id);
	return 0;
}

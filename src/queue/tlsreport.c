/* tlsreport: TLS reporting (RFC 8460) — counting, keeping the counts, and
 * sending the daily reports by mail (§5.3) or HTTPS POST (§5.4). */
#define _GNU_SOURCE
#include "queue/tlsreport.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <openssl/rand.h>

#include "conf/conf.h"
#include "lib/log.h"
#include "lib/offload.h"
#include "lib/util.h"
#include "net/dns.h"
#include "net/tlsrpt.h"
#include "queue/spool.h"
#include "runtime/runtime.h"

enum {
	TLSREPORT_DAY_S = 86400,
	TLSREPORT_SPREAD_S = 3600,      /* the daily run: a random second of the first hour (§4.1) */
	TLSREPORT_FIRST_S = 300,        /* after a start with past days waiting: within minutes */
	TLSREPORT_FILE_MAX = 32 * 1024 * 1024, /* the state file read at start */
	TLSREPORT_CONNECT_TIMEOUT_S = 10,
	TLSREPORT_ID_MAX = 384,
	TLSREPORT_HOST_MAX = 256,
};

struct tlsreport_run;

/* One destination of a report: a spooled message or a POST. */
struct tlsreport_send {
	struct tlsreport_run *run;      /* NULL once abandoned (tlsreport_stop) */
	char id[SPOOL_ID_SIZE];         /* the spooled message */
	dns_query_id query;             /* the https host's addresses */
	struct offload_job *job;        /* the POST */
	char *url;                      /* the mailto address or the https URL (from DNS) */
	char url_log[LOG_VALUE_MAX];    /* the same, escaped for the log */
	char host[TLSREPORT_HOST_MAX];
	unsigned short port;
	bool done;                      /* its outcome is known */
};

/* A report of one day and policy domain on its way. */
struct tlsreport_run {
	struct tlsreport_run *prev, *next;
	struct tlsstats_entry e;        /* taken out of the table while it is sent */
	struct runtime *rt;
	dns_query_id query;             /* the "_smtp._tls" record */
	char report_id[TLSREPORT_ID_MAX];
	unsigned char *gz;
	size_t gzlen;
	struct tlsreport_send **sends;
	size_t nsends;
	unsigned pending;               /* sends not yet done */
	bool launching;                 /* sends still being started */
	bool failed;
};

/* The state file's text, written on a worker. */
struct tlsreport_write {
	char *text;
	size_t len;
	char *tmp, *path;
	int err;
};

/* An https rua's POST, on a worker. */
struct tlsreport_post {
	char *url, *resolve, *cafile;
	unsigned char *body;
	size_t len;
	bool ok;
	char why[256];
};

static struct {
	bool running;
	struct event_base *base;
	struct spool *sp;
	tlsreport_spooled_fn spooled;
	char *path;                     /* SPOOL/tlsrpt/counts */
	struct tlsstats stats;
	struct offload_job *write;      /* the state file being written */
	bool dirty;                     /* changed since that write began */
	struct event *timer;
	time_t due;                     /* when the timer fires (wall clock) */
	struct tlsreport_run *runs;
	char full_day[TLSSTATS_DAY_MAX]; /* the day whose table was full, logged once */
} tr;

/* ---- the state file ----------------------------------------------------------------- */

static void tlsreport_write_free(void *arg)
{
	struct tlsreport_write *w = arg;
	free(w->text);
	free(w->tmp);
	free(w->path);
	free(w);
}

static int tlsreport_write_file(const char *text, size_t len, const char *tmp, const char *path)
{
	FILE *fp = replace_open(tmp);
	if (!fp)
		return errno;
	if (len > 0 && fwrite(text, 1, len, fp) != len) {
		int e = errno ? errno : EIO;
		(void)replace_commit(fp, tmp, path, false); /* closes and removes tmp */
		(void)unlink(tmp);
		return e;
	}
	return replace_commit(fp, tmp, path, true) == 0 ? 0 : errno;
}

static void tlsreport_write_run(void *arg)
{
	struct tlsreport_write *w = arg;
	w->err = tlsreport_write_file(w->text, w->len, w->tmp, w->path);
}

static void tlsreport_save(void);

static void tlsreport_write_done(void *owner, void *arg)
{
	struct tlsreport_write *w = arg;
	tr.write = NULL;
	if (w->err)
		log_warn("event=tlsrpt-error reason=\"cannot write %s: %s\"", w->path,
			 strerror(w->err));
	tlsreport_write_free(w);
	if (tr.dirty && tr.running)
		tlsreport_save();
}

/* The table to disk, off the loop; one write at a time, the changes made
 * meanwhile in the next. */
static void tlsreport_save(void)
{
	if (tr.write) {
		tr.dirty = true;
		return;
	}
	tr.dirty = false;
	struct tlsreport_write *w = xcalloc(1, sizeof *w);
	w->text = tlsstats_format(&tr.stats, &w->len);
	w->path = xstrdup(tr.path);
	w->tmp = xasprintf("%s.tmp", tr.path);
	tr.write = offload_submit(tlsreport_write_run, tlsreport_write_done, tlsreport_write_free, w,
				  &tr);
}

static void tlsreport_load(void)
{
	int fd = open(tr.path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0) {
		if (errno != ENOENT)
			log_warn("event=tlsrpt-error reason=\"cannot read %s: %s\"", tr.path,
				 strerror(errno));
		return;
	}
	struct stat st;
	if (fstat(fd, &st) < 0) {
		log_warn("event=tlsrpt-error reason=\"cannot read %s: %s\"", tr.path, strerror(errno));
		close(fd); /* read-only */
		return;
	}
	if (st.st_size == 0) {
		close(fd); /* read-only: nothing counted */
		return;
	}
	/* a longer file is read up to the bound (its cut last line is logged) */
	size_t want = st.st_size < TLSREPORT_FILE_MAX ? (size_t)st.st_size : TLSREPORT_FILE_MAX;
	char *buf = xmalloc(want);
	size_t have = 0;
	ssize_t n;
	while (have < want && (n = read(fd, buf + have, want - have)) != 0) {
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			break;
		have += (size_t)n;
	}
	close(fd); /* read-only */
	char err[128];
	if (!tlsstats_parse(&tr.stats, buf, have, err, sizeof err))
		log_warn("event=tlsrpt-error reason=\"%s: %s; the counts before it are kept\"",
			 tr.path, err);
	free(buf);
}

/* ---- counting ----------------------------------------------------------------------- */

void tlsreport_count(const struct tlsstats_session *s)
{
	if (!tlsreport_enabled())
		return;
	char day[TLSSTATS_DAY_MAX];
	if (!tlsstats_day(time(NULL), day))
		return;
	if (!tlsstats_add(&tr.stats, day, s)) {
		if (strcmp(tr.full_day, day) != 0 && tr.stats.n >= TLSSTATS_ENTRIES_MAX) {
			log_warn("event=tlsrpt-full day=%s entries=%d reason=\"more policy domains "
				 "than the table holds: the others are not counted today\"",
				 day, TLSSTATS_ENTRIES_MAX);
			memcpy(tr.full_day, day, sizeof day);
		}
		return;
	}
	tlsreport_save();
}

/* ---- a report's life ---------------------------------------------------------------- */

static void tlsreport_arm(unsigned seconds);

static void tlsreport_run_free(struct tlsreport_run *r)
{
	if (r->prev)
		r->prev->next = r->next;
	else if (tr.runs == r)
		tr.runs = r->next;
	if (r->next)
		r->next->prev = r->prev;
	for (size_t i = 0; i < r->nsends; i++) {
		free(r->sends[i]->url);
		free(r->sends[i]);
	}
	free(r->sends);
	free(r->gz);
	free(r->e.failures);
	free(r->e.policy);
	if (r->rt)
		runtime_unref(r->rt);
	free(r);
}

/* Every destination had its turn: done, or back into the table to be
 * tried again (at most TLSREPORT_TRIES_MAX times). */
static void tlsreport_run_finish(struct tlsreport_run *r)
{
	if (!r->failed && r->nsends == 0) {
		/* no record: nobody wants it, forgotten (logged) */
	} else if (!r->failed) {
		log_info("event=tlsrpt-sent day=%s domain=%s report-id=%s destinations=%zu", r->e.day,
			 r->e.domain, r->report_id, r->nsends);
	} else if (++r->e.tries >= TLSREPORT_TRIES_MAX) {
		log_warn("event=tlsrpt-dropped day=%s domain=%s tries=%u reason=\"the report could "
			 "not be sent\"", r->e.day, r->e.domain, r->e.tries);
	} else {
		(void)tlsstats_merge(&tr.stats, &r->e); /* full: lost, as new counts would be */
		tlsreport_arm(TLSREPORT_RETRY_S);
	}
	tlsreport_run_free(r);
	tlsreport_save();
}

static void tlsreport_send_done(struct tlsreport_send *s, bool ok)
{
	struct tlsreport_run *r = s->run;
	s->done = true;
	if (!r)
		return;
	r->failed = r->failed || !ok;
	if (--r->pending == 0 && !r->launching)
		tlsreport_run_finish(r);
}

/* ---- by mail (§5.3) ------------------------------------------------------------------ */

static void tlsreport_committed(void *arg, int err)
{
	struct tlsreport_send *s = arg;
	if (err) {
		log_warn("event=tlsrpt-error id=%s reason=\"cannot spool the report: %s\"", s->id,
			 strerror(err));
	} else {
		log_info("event=tlsrpt-queued id=%s to=%s", s->id, s->url_log);
		if (tr.spooled)
			tr.spooled(s->id);
	}
	if (!s->run) { /* abandoned: the send is this callback's to free */
		free(s->url);
		free(s);
		return;
	}
	tlsreport_send_done(s, err == 0);
}

static const char *tlsreport_first_domain(const struct conf *c)
{
	return c->ndomains > 0 ? c->domains[0] : c->hostname;
}

static void tlsreport_start_time(const char *day, time_t *start)
{
	struct tm tm;
	memset(&tm, 0, sizeof tm);
	*start = strptime(day, "%Y-%m-%d", &tm) ? timegm(&tm) : 0;
}

static void tlsreport_mail(struct tlsreport_run *r, struct tlsreport_send *s, time_t start,
			   time_t end)
{
	const struct conf *c = r->rt->conf;
	char *from = xasprintf("postmaster@%s", tlsreport_first_domain(c));
	char mid[SPOOL_ID_SIZE];
	spool_new_id(mid);
	char *message_id = xasprintf("<tlsrpt.%s@%s>", mid, c->hostname);
	struct tlsrpt_mail m = {.from = from, .to = s->url, .domain = r->e.domain,
				.submitter = c->hostname, .report_id = r->report_id,
				.message_id = message_id, .now = time(NULL), .start = start,
				.end = end, .gz = r->gz, .gzlen = r->gzlen};
	size_t len;
	char *text = tlsrpt_mail_compose(&m, &len);
	free(message_id);
	struct spool_rcpt rcpt = {.address = s->url, .orig = s->url,
				  .local = conf_is_local_domain(c, strrchr(s->url, '@') + 1)};
	struct spool_envelope env = {.sender = from, .client = "", .rcpts = &rcpt, .nrcpts = 1,
				     .arrival = time(NULL)};
	struct spool_msg *msg = text ? spool_msg_begin(tr.sp, &env) : NULL;
	free(from);
	if (!msg || spool_msg_write(msg, text, len) < 0) {
		log_warn("event=tlsrpt-error domain=%s to=%s reason=\"cannot spool the report: %s\"",
			 r->e.domain, s->url_log, text ? strerror(errno) : "a field cannot be sent");
		if (msg)
			spool_msg_abort(msg);
		free(text);
		tlsreport_send_done(s, false);
		return;
	}
	free(text);
	memcpy(s->id, env.id, sizeof s->id);
	spool_msg_commit(msg, tlsreport_committed, s);
}

/* ---- by HTTPS POST (§5.4) ------------------------------------------------------------ */

static void tlsreport_post_free(void *arg)
{
	struct tlsreport_post *w = arg;
	free(w->url);
	free(w->resolve);
	free(w->cafile);
	free(w->body);
	free(w);
}

static size_t tlsreport_discard(char *data, size_t size, size_t nmemb, void *arg)
{
	(void)data;
	(void)arg;
	return size * nmemb;
}

static void tlsreport_post_run(void *arg)
{
	struct tlsreport_post *w = arg;
	struct curl_slist *resolve = curl_slist_append(NULL, w->resolve);
	struct curl_slist *hdrs = curl_slist_append(NULL, "Content-Type: application/tlsrpt+gzip");
	CURL *c = curl_easy_init();
	CURLcode e = c && resolve && hdrs ? CURLE_OK : CURLE_OUT_OF_MEMORY;
	if (e == CURLE_OK) e = curl_easy_setopt(c, CURLOPT_URL, w->url);
	if (e == CURLE_OK) e = curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "https");
	if (e == CURLE_OK) e = curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	if (e == CURLE_OK) e = curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
	if (e == CURLE_OK) e = curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, (long)TLSREPORT_CONNECT_TIMEOUT_S);
	if (e == CURLE_OK) e = curl_easy_setopt(c, CURLOPT_TIMEOUT, (long)TLSREPORT_POST_TIMEOUT_S);
	if (e == CURLE_OK) e = curl_easy_setopt(c, CURLOPT_USERAGENT, "posthorn/" POSTHORN_VERSION);
	if (e == CURLE_OK) e = curl_easy_setopt(c, CURLOPT_POSTFIELDS, w->body);
	if (e == CURLE_OK) e = curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)w->len);
	if (e == CURLE_OK) e = curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
	if (e == CURLE_OK) e = curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, tlsreport_discard);
	if (e == CURLE_OK) e = curl_easy_setopt(c, CURLOPT_RESOLVE, resolve);
	if (e == CURLE_OK && w->cafile) e = curl_easy_setopt(c, CURLOPT_CAINFO, w->cafile);
	if (e == CURLE_OK) e = curl_easy_perform(c);
	long code = 0;
	if (e == CURLE_OK) e = curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
	if (e != CURLE_OK)
		errfmt(w->why, sizeof w->why, "%s", curl_easy_strerror(e));
	else if (code / 100 != 2)
		errfmt(w->why, sizeof w->why, "HTTP status %ld", code);
	else
		w->ok = true;
	if (c)
		curl_easy_cleanup(c);
	curl_slist_free_all(resolve);
	curl_slist_free_all(hdrs);
}

static void tlsreport_post_done(void *owner, void *arg)
{
	struct tlsreport_send *s = owner;
	struct tlsreport_post *w = arg;
	s->job = NULL;
	char why[LOG_VALUE_MAX * 2];
	if (w->ok)
		log_info("event=tlsrpt-posted url=%s", s->url_log);
	else
		log_warn("event=tlsrpt-error url=%s reason=\"%s\"", s->url_log,
			 log_quote(why, sizeof why, w->why, strlen(w->why)));
	bool ok = w->ok;
	tlsreport_post_free(w);
	tlsreport_send_done(s, ok);
}

static void tlsreport_addrs(void *arg, enum dns_status st, const struct dns_addr *addrs, size_t n)
{
	struct tlsreport_send *s = arg;
	struct tlsreport_run *r = s->run;
	s->query = 0;
	char a[INET6_ADDRSTRLEN];
	if (st != DNS_OK || n == 0 || !inet_ntop(addrs[0].family, addrs[0].addr, a, sizeof a)) {
		log_warn("event=tlsrpt-error url=%s reason=\"no address for %s (%s)\"", s->url_log,
			 s->host, dns_status_name(st));
		tlsreport_send_done(s, false);
		return;
	}
	struct tlsreport_post *w = xcalloc(1, sizeof *w);
	w->url = xstrdup(s->url);
	/* CURLOPT_RESOLVE: "host:port:address", an IPv6 address in brackets */
	w->resolve = xasprintf(addrs[0].family == AF_INET6 ? "%s:%u:[%s]" : "%s:%u:%s", s->host,
			       (unsigned)s->port, a);
	w->cafile = r->rt->conf->outbound.ca_file ? xstrdup(r->rt->conf->outbound.ca_file) : NULL;
	w->body = xmalloc(r->gzlen);
	memcpy(w->body, r->gz, r->gzlen);
	w->len = r->gzlen;
	s->job = offload_submit(tlsreport_post_run, tlsreport_post_done, tlsreport_post_free, w, s);
}

static void tlsreport_post(struct tlsreport_run *r, struct tlsreport_send *s)
{
	if (!tlsrpt_https_target(s->url, s->host, sizeof s->host, &s->port)) {
		log_warn("event=tlsrpt-error domain=%s reason=\"an https rua posthorn cannot use\"",
			 r->e.domain);
		tlsreport_send_done(s, false);
		return;
	}
	dns_query_id q = dns_lookup_addrs(r->rt->dns, s->host, tlsreport_addrs, s);
	if (q)
		s->query = q;
}

/* ---- the record and the report -------------------------------------------------------- */

static bool tlsreport_build(struct tlsreport_run *r, time_t start, time_t end)
{
	const struct conf *c = r->rt->conf;
	char *contact = xasprintf("postmaster@%s", tlsreport_first_domain(c));
	struct tlsrpt_failure f[TLSRPT_FAILURES_MAX];
	for (size_t i = 0; i < r->e.nfailures; i++) {
		const struct tlsstats_failure *s = &r->e.failures[i];
		f[i] = (struct tlsrpt_failure){.result_type = s->result, .receiving_mx = s->mx,
					       .receiving_ip = s->receiving_ip[0] ? s->receiving_ip : NULL,
					       .sending_ip = s->sending_ip[0] ? s->sending_ip : NULL,
					       .sessions = s->sessions};
	}
	const char *lines[TLSRPT_POLICY_STRINGS_MAX];
	for (size_t i = 0; i < r->e.npolicy && i < TLSRPT_POLICY_STRINGS_MAX; i++)
		lines[i] = r->e.policy[i];
	struct tlsrpt_policy p = {.domain = r->e.domain, .type = r->e.type,
				  .strings = lines, .nstrings = r->e.npolicy,
				  .successes = r->e.successes, .failures = f,
				  .nfailures = r->e.nfailures, .other_failures = r->e.other_failures};
	struct tlsrpt_report rep = {.organization = c->hostname, .contact = contact,
				    .report_id = r->report_id, .start = start, .end = end,
				    .policies = &p, .npolicies = 1};
	char *json = tlsrpt_report_json(&rep);
	free(contact);
	if (!json)
		return false;
	r->gz = tlsrpt_gzip(json, strlen(json), &r->gzlen);
	free(json);
	return r->gz != NULL;
}

/* §3: exactly one TLSRPTv1 record among the TXT records, else none. */
static bool tlsreport_pick(const struct dns_txt *txt, size_t n, struct tlsrpt_rua *rua,
			   size_t *nrua)
{
	const struct dns_txt *one = NULL;
	for (size_t i = 0; i < n; i++) {
		if (txt[i].len >= 10 && memcmp(txt[i].text, "v=TLSRPTv1", 10) == 0) {
			if (one)
				return false;
			one = &txt[i];
		}
	}
	return one && tlsrpt_record_parse(one->text, one->len, rua, nrua);
}

static void tlsreport_launch(struct tlsreport_run *r, const struct tlsrpt_rua *rua, size_t n,
			     time_t start, time_t end)
{
	r->launching = true;
	r->sends = xcalloc(n, sizeof *r->sends);
	for (size_t i = 0; i < n; i++) {
		struct tlsreport_send *s = xcalloc(1, sizeof *s);
		s->run = r;
		s->url = xstrdup(rua[i].uri);
		(void)log_escape(s->url_log, sizeof s->url_log, s->url, strlen(s->url));
		r->sends[r->nsends++] = s;
		r->pending++;
		if (rua[i].https)
			tlsreport_post(r, s);
		else
			tlsreport_mail(r, s, start, end);
	}
	r->launching = false;
	if (r->pending == 0)
		tlsreport_run_finish(r);
}

static void tlsreport_txt(void *arg, enum dns_status st, const struct dns_txt *txt, size_t n,
			  uint32_t ttl)
{
	struct tlsreport_run *r = arg;
	r->query = 0;
	struct tlsrpt_rua rua[TLSRPT_RUA_MAX];
	size_t nrua = 0;
	if (st != DNS_OK && st != DNS_NOTFOUND) {
		log_warn("event=tlsrpt-error domain=%s reason=\"the _smtp._tls lookup failed (%s)\"",
			 r->e.domain, dns_status_name(st));
		r->failed = true;
		tlsreport_run_finish(r);
		return;
	}
	if (st == DNS_NOTFOUND || !tlsreport_pick(txt, n, rua, &nrua)) {
		log_info("event=tlsrpt-none day=%s domain=%s reason=\"no usable _smtp._tls record\"",
			 r->e.day, r->e.domain);
		tlsreport_run_finish(r); /* nobody wants it: forgotten */
		return;
	}
	time_t start, now = time(NULL);
	tlsreport_start_time(r->e.day, &start);
	time_t end = start + TLSREPORT_DAY_S < now ? start + TLSREPORT_DAY_S : now;
	if (!tlsreport_build(r, start, end)) {
		log_warn("event=tlsrpt-error domain=%s reason=\"cannot build the report\"",
			 r->e.domain);
		r->failed = true;
		tlsreport_run_finish(r);
		return;
	}
	tlsreport_launch(r, rua, nrua, start, end);
}

/* e: taken out of the table, now the run's. */
static void tlsreport_run_start(const struct tlsstats_entry *e)
{
	struct runtime *rt = runtime_current();
	struct tlsreport_run *r = xcalloc(1, sizeof *r);
	r->e = *e;
	r->rt = runtime_ref(rt);
	unsigned char rnd[6];
	if (RAND_bytes(rnd, sizeof rnd) != 1)
		fatal("tlsreport: no random bytes for a report ID");
	/* fits: a day, a host name of 253 bytes at most, 12 digits and a host name */
	xsnprintf(r->report_id, sizeof r->report_id, "%sT00:00:00Z_%s_%02x%02x%02x%02x%02x%02x@%s",
		  r->e.day, r->e.domain, rnd[0], rnd[1], rnd[2], rnd[3], rnd[4], rnd[5],
		  rt->conf->hostname);
	r->next = tr.runs;
	if (tr.runs)
		tr.runs->prev = r;
	tr.runs = r;
	char *name = xasprintf("_smtp._tls.%s", r->e.domain);
	dns_query_id q = dns_lookup_txt(rt->dns, name, tlsreport_txt, r);
	free(name);
	if (q)
		r->query = q;
}

bool tlsreport_enabled(void)
{
	const struct runtime *rt = runtime_current();
	return tr.running && rt && rt->conf->outbound.tls_reports;
}

/* Start the reports of days before today (or of every day with all).  The
 * entries are taken out of the table first: a report that fails at once
 * goes back into it, and is not started again here. */
static size_t tlsreport_send(bool all)
{
	char today[TLSSTATS_DAY_MAX];
	if (!tlsreport_enabled() || !tlsstats_day(time(NULL), today))
		return 0;
	struct tlsstats_entry *due = NULL;
	size_t ndue = 0;
	for (size_t i = 0; i < tr.stats.n;) {
		if (!all && strcmp(tr.stats.entries[i].day, today) >= 0) {
			i++;
			continue;
		}
		tlsstats_take(&tr.stats, i, xappend(&due, &ndue, sizeof *due));
	}
	for (size_t i = 0; i < ndue; i++)
		tlsreport_run_start(&due[i]);
	free(due);
	if (ndue)
		tlsreport_save();
	return ndue;
}

size_t tlsreport_send_now(void)
{
	return tlsreport_send(true);
}

/* ---- the daily timer ------------------------------------------------------------------ */

static unsigned tlsreport_random(unsigned range)
{
	unsigned v;
	if (RAND_bytes((unsigned char *)&v, sizeof v) != 1)
		fatal("tlsreport: no random bytes");
	return v % range;
}

/* The next run: a random second of the first hour after midnight UTC. */
static unsigned tlsreport_until_next_day(void)
{
	time_t now = time(NULL);
	time_t midnight = (now / TLSREPORT_DAY_S + 1) * TLSREPORT_DAY_S;
	return (unsigned)(midnight - now) + 1 + tlsreport_random(TLSREPORT_SPREAD_S);
}

static void tlsreport_arm(unsigned seconds)
{
	time_t now = time(NULL);
	if (evtimer_pending(tr.timer, NULL) && tr.due <= now + (time_t)seconds)
		return; /* due sooner already */
	struct timeval tv = {.tv_sec = seconds};
	tr.due = now + (time_t)seconds;
	evtimer_add(tr.timer, &tv);
}

static void tlsreport_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	(void)tlsreport_send(false);
	tlsreport_arm(tlsreport_until_next_day());
}

static bool tlsreport_past_days(void)
{
	char today[TLSSTATS_DAY_MAX];
	if (!tlsstats_day(time(NULL), today))
		return false;
	for (size_t i = 0; i < tr.stats.n; i++)
		if (strcmp(tr.stats.entries[i].day, today) < 0)
			return true;
	return false;
}

/* ---- start and stop -------------------------------------------------------------------- */

int tlsreport_start(struct event_base *base, struct spool *sp, tlsreport_spooled_fn spooled)
{
	char *dir = xasprintf("%s/tlsrpt", spool_dir(sp));
	if (mkdir_p(dir, 0700) < 0) {
		int e = errno;
		free(dir);
		errno = e;
		return -1;
	}
	memset(&tr, 0, sizeof tr);
	tr.base = base;
	tr.sp = sp;
	tr.spooled = spooled;
	tr.path = xasprintf("%s/counts", dir);
	free(dir);
	tlsstats_init(&tr.stats);
	tlsreport_load();
	tr.timer = evtimer_new(base, tlsreport_timer_cb, NULL);
	if (!tr.timer)
		fatal("evtimer_new failed");
	tr.running = true;
	tlsreport_arm(tlsreport_past_days() ? TLSREPORT_FIRST_S + tlsreport_random(TLSREPORT_FIRST_S)
					    : tlsreport_until_next_day());
	return 0;
}

/* A report being sent goes back into the table, its destinations
 * abandoned (a message being committed is still delivered). */
static void tlsreport_abandon(struct tlsreport_run *r)
{
	if (r->query)
		dns_cancel(r->rt->dns, r->query);
	for (size_t i = 0; i < r->nsends; i++) {
		struct tlsreport_send *s = r->sends[i];
		if (s->query)
			dns_cancel(r->rt->dns, s->query);
		if (s->job)
			offload_cancel(s->job);
		if (s->id[0] && !s->done) {
			/* a commit in flight: its callback frees it */
			s->run = NULL;
			r->sends[i] = NULL;
		}
	}
	(void)tlsstats_merge(&tr.stats, &r->e);
	size_t kept = 0;
	for (size_t i = 0; i < r->nsends; i++)
		if (r->sends[i])
			r->sends[kept++] = r->sends[i];
	r->nsends = kept;
	tlsreport_run_free(r);
}

void tlsreport_stop(void)
{
	if (!tr.running)
		return;
	tr.running = false;
	while (tr.runs)
		tlsreport_abandon(tr.runs);
	if (tr.write)
		offload_cancel(tr.write);
	tr.write = NULL;
	size_t len;
	char *text = tlsstats_format(&tr.stats, &len);
	char *tmp = xasprintf("%s.stop", tr.path);
	int err = tlsreport_write_file(text, len, tmp, tr.path);
	if (err)
		log_warn("event=tlsrpt-error reason=\"cannot write %s: %s\"", tr.path, strerror(err));
	free(tmp);
	free(text);
	event_free(tr.timer);
	tr.timer = NULL;
	tlsstats_free(&tr.stats);
	free(tr.path);
	tr.path = NULL;
}

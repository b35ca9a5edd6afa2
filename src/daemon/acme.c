/* acme: the daemon's side of its ACME certificate (RFC 8555) — when to
 * try (two thirds of the lifetime, back-off after failures, a warning a
 * day when expiry is near), the worker thread one attempt runs on
 * (daemon/acme_client), the http-01 listener (RFC 8555 §8.3) on the loop,
 * and the reload that takes a new certificate into use.
 *
 * Why a worker thread and not libcurl's multi interface on the loop: one
 * attempt is a strict sequence of a dozen requests (directory, nonce,
 * account, order, authorizations, challenge, polling, finalize, download),
 * each depending on the one before.  Written as blocking calls on one
 * thread it reads as RFC 8555 §7 does; the loop never waits for it (it
 * only learns the result through a waker), at most one attempt runs at a
 * time, and every request has a connect and a total timeout. */
#define _GNU_SOURCE
#include "daemon/acme.h"

#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/listener.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "conf/conf.h"
#include "daemon/acme_client.h"
#include "lib/log.h"
#include "lib/util.h"
#include "lib/waker.h"
#include "net/dns.h"
#include "runtime/runtime.h"

enum {
	ACME_HTTP_TIMEOUT_S = 10,     /* the challenge listener's clients */
	ACME_HTTP_HEADERS_MAX = 8192,
	ACME_DAY_S = 86400,
};

static const char acme_challenge_prefix[] = "/.well-known/acme-challenge/";

static struct {
	struct event_base *base;
	void (*reload)(void);
	struct acme_params params;    /* of the running configuration */
	enum conf_acme_challenge challenge; /* as started: its listener stays */
	char *http_text;              /* the http-01 address as started, or NULL */
	struct evconnlistener *listener;
	struct evhttp *http;
	struct event *timer;          /* the next attempt */
	struct event *daily;          /* the expiry warning */
	struct waker *waker;
	pthread_t thread;
	bool running;                 /* an attempt's worker exists */
	struct acme_attempt *attempt;
	unsigned failures;            /* in a row */
	struct runtime *lookup_rt;    /* held while the CA's name is looked up */
	dns_query_id lookup;
	pthread_mutex_t lock;         /* done */
	bool done;
} acme = {.lock = PTHREAD_MUTEX_INITIALIZER};

/* ---- the http-01 listener (RFC 8555 §8.3) ---------------------------------- */

static void acme_http_answer(struct evhttp_request *req, void *arg)
{
	(void)arg;
	const char *uri = evhttp_request_get_uri(req);
	size_t plen = sizeof acme_challenge_prefix - 1;
	char *ka = NULL;
	if (uri && strncmp(uri, acme_challenge_prefix, plen) == 0)
		ka = acme_client_key_authorization(uri + plen); /* tokens are base64url: no query can match */
	if (!ka) {
		evhttp_send_error(req, HTTP_NOTFOUND, NULL);
		return;
	}
	struct evbuffer *out = evbuffer_new();
	if (!out || evbuffer_add(out, ka, strlen(ka)) < 0 ||
	    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
			      "application/octet-stream") < 0) {
		evhttp_send_error(req, HTTP_INTERNAL, NULL);
	} else {
		evhttp_send_reply(req, HTTP_OK, "OK", out);
		log_info("event=acme-challenge-served");
	}
	if (out)
		evbuffer_free(out);
	free(ka);
}

static int acme_http_start(const struct conf_acme *a)
{
	acme.http = evhttp_new(acme.base);
	if (!acme.http) {
		log_err("event=startup-error error=\"acme: cannot make the http-01 server\"");
		return -1;
	}
	evhttp_set_timeout(acme.http, ACME_HTTP_TIMEOUT_S);
	evhttp_set_max_headers_size(acme.http, ACME_HTTP_HEADERS_MAX);
	evhttp_set_max_body_size(acme.http, 0);
	evhttp_set_allowed_methods(acme.http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD);
	evhttp_set_gencb(acme.http, acme_http_answer, NULL);
	acme.listener = evconnlistener_new_bind(
	    acme.base, NULL, NULL, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC,
	    -1, (const struct sockaddr *)&a->http.ss, (int)a->http.len);
	if (!acme.listener || !evhttp_bind_listener(acme.http, acme.listener)) {
		log_err("event=startup-error error=\"acme: cannot listen on %s for http-01: %s\"",
			a->http.text, strerror(errno));
		if (acme.listener)
			evconnlistener_free(acme.listener);
		acme.listener = NULL;
		evhttp_free(acme.http);
		acme.http = NULL;
		return -1;
	}
	log_info("event=acme-listen addr=%s challenge=http-01", a->http.text);
	return 0;
}

/* ---- the worker ------------------------------------------------------------------ */

static void *acme_worker(void *arg)
{
	acme_attempt_run(arg);
	pthread_mutex_lock(&acme.lock);
	acme.done = true;
	pthread_mutex_unlock(&acme.lock);
	(void)waker_wake(acme.waker); /* a full pipe already holds a wake-up */
	return NULL;
}

/* ---- planning (on the loop) ------------------------------------------------------ */

static X509 *acme_read_leaf(const char *path)
{
	FILE *f = fopen(path, "re");
	if (!f)
		return NULL;
	X509 *x = PEM_read_X509(f, NULL, NULL, NULL);
	(void)fclose(f); /* read only */
	return x;
}

static long acme_asn1_epoch(const ASN1_TIME *t)
{
	struct tm tm;
	if (!t || ASN1_TIME_to_tm(t, &tm) != 1)
		return 0;
	return (long)timegm(&tm);
}

long acme_renew_delay(const char *cert_path, const char *const *names, size_t nnames, long now,
		      long *not_after)
{
	*not_after = 0;
	X509 *x = acme_read_leaf(cert_path);
	if (!x)
		return 0;
	long nb = acme_asn1_epoch(X509_get0_notBefore(x));
	long na = acme_asn1_epoch(X509_get0_notAfter(x));
	bool covers = nb && na > nb;
	for (size_t i = 0; covers && i < nnames; i++)
		covers = X509_check_host(x, names[i], 0, X509_CHECK_FLAG_NO_WILDCARDS, NULL) == 1;
	X509_free(x);
	if (!covers)
		return 0;
	*not_after = na;
	long renew_at = nb + (na - nb) / 3 * 2;
	return renew_at > now ? renew_at - now : 0;
}

long acme_retry_delay(unsigned failures)
{
	long d = ACME_RETRY_MIN_S;
	for (unsigned i = 1; i < failures && d < ACME_RETRY_MAX_S; i++)
		d *= 2;
	return d < ACME_RETRY_MAX_S ? d : ACME_RETRY_MAX_S;
}

static void acme_arm(long seconds)
{
	struct timeval tv = {.tv_sec = seconds};
	event_del(acme.timer);
	event_add(acme.timer, &tv);
}

static void acme_plan(void)
{
	if (acme.running)
		return; /* planned when it ends */
	long not_after;
	char *cert = acme_params_file(&acme.params, ACME_CERT_FILE);
	long delay = acme_renew_delay(cert, (const char *const *)acme.params.names,
				      acme.params.nnames, (long)time(NULL), &not_after);
	free(cert);
	if (acme.failures) {
		long retry = acme_retry_delay(acme.failures);
		delay = delay > retry ? delay : retry;
	}
	acme_arm(delay);
	log_info("event=acme-planned in=%lds", delay);
}

static void acme_warn_expiry(evutil_socket_t fd, short what, void *arg)
{
	char *cert = acme_params_file(&acme.params, ACME_CERT_FILE);
	long not_after;
	(void)acme_renew_delay(cert, (const char *const *)acme.params.names, acme.params.nnames,
			       (long)time(NULL), &not_after);
	free(cert);
	long left = not_after - (long)time(NULL);
	if (not_after && left < ACME_WARN_DAYS * ACME_DAY_S)
		log_warn("event=acme-expiry-soon seconds_left=%ld warning=\"the ACME certificate "
			 "expires within %d days\"",
			 left, ACME_WARN_DAYS);
}

/* An attempt that could not start: counted as a failure, planned again. */
static void acme_cannot_start(const char *why)
{
	char q[LOG_VALUE_MAX];
	acme.failures++;
	log_warn("event=acme-failed failures=%u retry_in=%lds error=\"%s\" warning=\"keeping the "
		 "certificate in use\"",
		 acme.failures, acme_retry_delay(acme.failures), log_quote(q, sizeof q, why, strlen(why)));
	acme_plan();
}

/* The worker with the CA's addresses (curl's CURLOPT_RESOLVE entry, or
 * NULL for an address literal). */
static void acme_start_worker(const char *resolve)
{
	struct acme_attempt *a = acme_attempt_new(&acme.params, resolve);
	pthread_mutex_lock(&acme.lock);
	acme.done = false;
	pthread_mutex_unlock(&acme.lock);
	if (thread_start(&acme.thread, acme_worker, a) != 0) {
		char why[128];
		xsnprintf(why, sizeof why, "cannot start a thread: %s", strerror(errno));
		acme_attempt_free(a);
		acme_cannot_start(why);
		return;
	}
	acme.attempt = a;
	acme.running = true;
	log_info("event=acme-attempt names=%zu directory=%s", acme.params.nnames,
		 acme.params.directory);
}

static void acme_lookup_done(void)
{
	acme.lookup = 0;
	runtime_unref(acme.lookup_rt);
	acme.lookup_rt = NULL;
}

/* "HOST:PORT:ADDR,ADDR" for CURLOPT_RESOLVE, IPv6 in brackets. */
static char *acme_resolve_entry(const struct acme_target *t, const struct dns_addr *addrs,
				size_t n)
{
	char *entry = xasprintf("%s:%u:", t->host, t->port);
	for (size_t i = 0; i < n; i++) {
		char text[INET6_ADDRSTRLEN];
		if (!inet_ntop(addrs[i].family, addrs[i].addr, text, sizeof text))
			continue;
		char *next = xasprintf(addrs[i].family == AF_INET6 ? "%s%s[%s]" : "%s%s%s", entry,
				       entry[strlen(entry) - 1] == ':' ? "" : ",", text);
		free(entry);
		entry = next;
	}
	return entry;
}

/* The CA's name, as every name posthorn looks up: through its own
 * resolver (the dns directive), never the system's. */
static void acme_resolved(void *arg, enum dns_status st, const struct dns_addr *addrs, size_t n)
{
	struct acme_target t;
	acme_lookup_done();
	if (acme_directory_target(acme.params.directory, &t) < 0 || st != DNS_OK || n == 0) {
		char why[ACME_TARGET_HOST_MAX + 64];
		xsnprintf(why, sizeof why, "the CA's name %s: %s", t.host, dns_status_name(st));
		acme_cannot_start(why);
		return;
	}
	char *entry = acme_resolve_entry(&t, addrs, n);
	acme_start_worker(entry);
	free(entry);
}

static void acme_begin(evutil_socket_t fd, short what, void *arg)
{
	if (acme.running || acme.lookup_rt)
		return;
	struct acme_target t;
	if (acme_directory_target(acme.params.directory, &t) < 0) {
		acme_cannot_start("the directory URL has no usable host");
		return;
	}
	if (t.literal) {
		acme_start_worker(NULL);
		return;
	}
	struct runtime *rt = runtime_current();
	acme.lookup_rt = runtime_ref(rt);
	acme.lookup = dns_lookup_addrs(rt->dns, t.host, acme_resolved, NULL);
}

static void acme_log_result(const struct acme_attempt *a)
{
	char q[LOG_VALUE_MAX];
	if (acme_attempt_ok(a)) {
		log_info("event=acme-issued names=%zu", acme.params.nnames);
		return;
	}
	const char *error = acme_attempt_error(a);
	log_warn("event=acme-failed failures=%u retry_in=%lds error=\"%s\" warning=\"keeping the "
		 "certificate in use\"",
		 acme.failures, acme_retry_delay(acme.failures),
		 log_quote(q, sizeof q, error, strlen(error)));
}

/* On the loop: the worker is through. */
static void acme_woken(void *arg)
{
	pthread_mutex_lock(&acme.lock);
	bool done = acme.done;
	pthread_mutex_unlock(&acme.lock);
	if (!done || !acme.running)
		return;
	(void)pthread_join(acme.thread, NULL); /* it has returned or is returning */
	acme.running = false;
	struct acme_attempt *a = acme.attempt;
	acme.attempt = NULL;
	bool ok = acme_attempt_ok(a);
	acme.failures = ok ? 0 : acme.failures + 1;
	acme_log_result(a);
	acme_attempt_free(a);
	if (ok && acme.reload)
		acme.reload(); /* the new certificate into use, as SIGHUP does */
	acme_plan();
}

/* ---- start, reload, stop ----------------------------------------------------------- */

static int acme_prepare_dir(const struct acme_params *p)
{
	if (mkdir_p(p->dir, 0700) < 0) {
		log_err("event=startup-error error=\"acme: cannot create %s: %s\"", p->dir,
			strerror(errno));
		return -1;
	}
	return 0;
}

int acme_start(struct event_base *base, const struct conf *conf, void (*reload)(void))
{
	if (!conf->acme.set)
		return 0;
	acme.base = base;
	acme.reload = reload;
	acme_params_from_conf(&acme.params, conf);
	acme.challenge = conf->acme.challenge;
	acme.http_text = conf->acme.http.text ? xstrdup(conf->acme.http.text) : NULL;
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
		log_err("event=startup-error error=\"acme: libcurl cannot start\"");
		return -1;
	}
	if (acme_prepare_dir(&acme.params) < 0)
		return -1;
	if (conf->acme.challenge == ACME_CHALLENGE_HTTP01 && acme_http_start(&conf->acme) < 0)
		return -1;
	acme.waker = waker_new(base, acme_woken, NULL);
	acme.timer = event_new(base, -1, 0, acme_begin, NULL);
	acme.daily = event_new(base, -1, EV_PERSIST, acme_warn_expiry, NULL);
	struct timeval day = {.tv_sec = ACME_DAY_S};
	if (!acme.waker || !acme.timer || !acme.daily || event_add(acme.daily, &day) < 0) {
		log_err("event=startup-error error=\"acme: cannot make the timers\"");
		return -1;
	}
	acme_warn_expiry(-1, 0, NULL);
	acme_plan();
	return 0;
}

void acme_reconfigure(const struct conf *conf)
{
	if (!acme.base) {
		if (conf->acme.set)
			log_warn("event=reload warning=\"a new acme block takes effect at restart\"");
		return;
	}
	if (!conf->acme.set) {
		log_warn("event=reload warning=\"the acme block's removal takes effect at restart\"");
		return;
	}
	acme_params_free(&acme.params);
	acme_params_from_conf(&acme.params, conf);
	if (acme.params.challenge != acme.challenge ||
	    (acme.challenge == ACME_CHALLENGE_HTTP01 &&
	     (!conf->acme.http.text || strcmp(conf->acme.http.text, acme.http_text) != 0)))
		log_warn("event=reload warning=\"a new acme challenge takes effect at restart\"");
	acme.params.challenge = acme.challenge;
	acme_plan();
}

void acme_stop(void)
{
	if (!acme.base)
		return;
	if (acme.lookup_rt) {
		if (acme.lookup)
			dns_cancel(acme.lookup_rt->dns, acme.lookup);
		acme_lookup_done();
	}
	if (acme.running) {
		acme_client_stop();
		(void)pthread_join(acme.thread, NULL); /* at most a poll interval or a second */
		acme.running = false;
		acme_attempt_free(acme.attempt);
		acme.attempt = NULL;
	}
	acme_client_clear();
	if (acme.http)
		evhttp_free(acme.http); /* frees the bound listener too */
	acme.http = NULL;
	acme.listener = NULL;
	if (acme.timer)
		event_free(acme.timer);
	if (acme.daily)
		event_free(acme.daily);
	acme.timer = acme.daily = NULL;
	if (acme.waker)
		waker_free(acme.waker);
	acme.waker = NULL;
	acme_params_free(&acme.params);
	free(acme.http_text);
	acme.http_text = NULL;
	curl_global_cleanup();
	acme.base = NULL;
}

/* acme_client: one attempt at getting a certificate from an ACME CA
 * (RFC 8555), run from start to end on the ACME worker thread with
 * libcurl's blocking interface, every request bounded by a connect and a
 * total timeout.
 *
 * Order of one attempt (RFC 8555 §7.1): GET directory; HEAD newNonce;
 * POST newAccount (a second newAccount with the same key returns the
 * account, §7.3.1); POST newOrder; for each authorization POST-as-GET,
 * publish the answer to its challenge (the key authorization for the
 * http-01 listener, or a tls-alpn-01 certificate), POST the challenge,
 * poll; POST finalize with a CSR for a fresh key; poll the order;
 * POST-as-GET the certificate chain; write the key and the chain to
 * certificate.pem (write, fsync, rename); record the attempt in status. */
#define _GNU_SOURCE
#include "daemon/acme_client.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "conf/conf.h"
#include "lib/util.h"
#include "net/acme_alpn.h"
#include "net/acme_jws.h"
#include "net/acme_msg.h"

enum {
	ACME_CONNECT_TIMEOUT_S = 10,
	ACME_REQUEST_TIMEOUT_S = 30,
	ACME_POLL_INTERVAL_MS = 500,
	ACME_POLL_MAX = 120,          /* polls of a validation or an issuance ... */
	ACME_POLL_WINDOW_S = 60,      /* ... within this many seconds */
	ACME_RETRY_AFTER_MAX_S = 10,  /* a longer Retry-After is shortened */
	ACME_NONCE_MAX = 256,
	ACME_TOKENS_MAX = ACME_AUTHZ_MAX,
	ACME_ERROR_MAX = 640,
};

/* One attempt: owned by the worker while it runs, then by the loop. */
struct acme_attempt {
	struct acme_params p;
	CURL *curl;
	EVP_PKEY *account;
	char *kid;                    /* the account URL */
	char nonce[ACME_NONCE_MAX];
	unsigned retry_after;         /* seconds, from the last response */
	struct acme_directory dir;
	bool ok;
	char error[ACME_ERROR_MAX];
	char *cert_pem;               /* the chain, when ok */
	char *resolve;                /* CURLOPT_RESOLVE entry, or NULL */
};

/* A response: body bounded by ACME_BODY_MAX. */
struct acme_resp {
	long code;
	char *body;
	size_t len;
	bool too_big;
	char location[ACME_URL_MAX];
	char nonce[ACME_NONCE_MAX];
	char retry_after[16];
};

struct acme_token {
	char token[ACME_TOKEN_MAX + 1];
	char *keyauth;
};

/* Shared by the worker (publishes) and the loop (answers, stops). */
static struct {
	int stop;                     /* atomic: abandon the attempt */
	pthread_mutex_t lock;         /* tokens[] */
	struct acme_token tokens[ACME_TOKENS_MAX];
	size_t ntokens;
} client = {.lock = PTHREAD_MUTEX_INITIALIZER};

/* ---- parameters ---------------------------------------------------------- */

void acme_params_free(struct acme_params *p)
{
	free(p->directory);
	free(p->contact);
	free(p->ca);
	for (size_t i = 0; i < p->nnames; i++)
		free(p->names[i]);
	free(p->names);
	free(p->dir);
	memset(p, 0, sizeof *p);
}

void acme_params_copy(struct acme_params *to, const struct acme_params *from)
{
	to->directory = xstrdup(from->directory);
	to->contact = from->contact ? xstrdup(from->contact) : NULL;
	to->ca = from->ca ? xstrdup(from->ca) : NULL;
	to->names = xcalloc(from->nnames, sizeof *to->names);
	for (size_t i = 0; i < from->nnames; i++)
		to->names[i] = xstrdup(from->names[i]);
	to->nnames = from->nnames;
	to->dir = xstrdup(from->dir);
	to->challenge = from->challenge;
}

void acme_params_from_conf(struct acme_params *p, const struct conf *conf)
{
	const struct conf_acme *a = &conf->acme;
	struct acme_params tmp = {
		.directory = a->directory, .contact = a->contact, .ca = a->ca,
		.names = a->names, .nnames = a->nnames, .challenge = a->challenge,
	};
	char *dir = conf_acme_path(conf, NULL);
	tmp.dir = dir;
	acme_params_copy(p, &tmp);
	free(dir);
}

char *acme_params_file(const struct acme_params *p, const char *name)
{
	return xasprintf("%s/%s", p->dir, name);
}

/* ---- the tokens the challenge listener answers with ----------------------- */

static void acme_token_publish(const char *token, char *keyauth)
{
	pthread_mutex_lock(&client.lock);
	if (client.ntokens < ACME_TOKENS_MAX) {
		struct acme_token *t = &client.tokens[client.ntokens++];
		memcpy(t->token, token, strlen(token) + 1);
		t->keyauth = keyauth;
		keyauth = NULL;
	}
	pthread_mutex_unlock(&client.lock);
	free(keyauth);
}

static void acme_tokens_clear(void)
{
	pthread_mutex_lock(&client.lock);
	for (size_t i = 0; i < client.ntokens; i++)
		free(client.tokens[i].keyauth);
	client.ntokens = 0;
	pthread_mutex_unlock(&client.lock);
}

char *acme_client_key_authorization(const char *token)
{
	char *ka = NULL;
	pthread_mutex_lock(&client.lock);
	for (size_t i = 0; i < client.ntokens && !ka; i++)
		if (strcmp(client.tokens[i].token, token) == 0)
			ka = xstrdup(client.tokens[i].keyauth);
	pthread_mutex_unlock(&client.lock);
	return ka;
}


/* ---- HTTPS to the CA (on the worker) --------------------------------------- */

static size_t acme_body_cb(char *ptr, size_t size, size_t nmemb, void *ud)
{
	struct acme_resp *r = ud;
	size_t n = size * nmemb;
	if (r->len + n > ACME_BODY_MAX) {
		r->too_big = true;
		return 0; /* curl stops the transfer */
	}
	r->body = xrealloc(r->body, r->len + n + 1);
	memcpy(r->body + r->len, ptr, n);
	r->len += n;
	r->body[r->len] = '\0';
	return n;
}

/* "Name: value" into out when the header is name; trimmed, bounded. */
static void acme_header_value(const char *line, size_t n, const char *name, char *out,
			      size_t outsz)
{
	size_t k = strlen(name);
	if (n <= k + 1 || strncasecmp(line, name, k) != 0 || line[k] != ':')
		return;
	const char *v = line + k + 1, *end = line + n;
	while (v < end && (*v == ' ' || *v == '\t'))
		v++;
	while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' '))
		end--;
	size_t len = (size_t)(end - v);
	if (len == 0 || len >= outsz)
		return; /* too long: as if absent */
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)v[i] <= 0x20 || (unsigned char)v[i] >= 0x7f)
			return;
	memcpy(out, v, len);
	out[len] = '\0';
}

static size_t acme_header_cb(char *buf, size_t size, size_t nitems, void *ud)
{
	struct acme_resp *r = ud;
	size_t n = size * nitems;
	acme_header_value(buf, n, "Replay-Nonce", r->nonce, sizeof r->nonce);
	acme_header_value(buf, n, "Location", r->location, sizeof r->location);
	acme_header_value(buf, n, "Retry-After", r->retry_after, sizeof r->retry_after);
	return n;
}

static int acme_progress_cb(void *ud, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un)
{
	return __atomic_load_n(&client.stop, __ATOMIC_RELAXED) ? 1 : 0;
}

static void acme_resp_free(struct acme_resp *r)
{
	free(r->body);
	memset(r, 0, sizeof *r);
}

static void acme_fail(struct acme_attempt *a, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void acme_fail(struct acme_attempt *a, const char *fmt, ...)
{
	if (a->error[0])
		return; /* the first cause is the one to tell */
	va_list ap;
	va_start(ap, fmt);
	verrfmt(a->error, sizeof a->error, fmt, ap);
	va_end(ap);
}

/* Retry-After in seconds (RFC 8555 §7.4, §8.2; an HTTP date counts as
 * none), at most ACME_RETRY_AFTER_MAX_S. */
static unsigned acme_retry_after(const char *v)
{
	if (!v[0] || strspn(v, "0123456789") != strlen(v) || strlen(v) > 6)
		return 0;
	unsigned long s = strtoul(v, NULL, 10);
	return s > ACME_RETRY_AFTER_MAX_S ? ACME_RETRY_AFTER_MAX_S : (unsigned)s;
}

/* One request: GET (post NULL, head false), HEAD, or POST of a JWS. */
static int acme_http(struct acme_attempt *a, const char *url, const char *post, bool head,
		     const char *accept, struct acme_resp *r)
{
	memset(r, 0, sizeof *r);
	CURL *c = a->curl;
	curl_easy_reset(c);
	struct curl_slist *hdrs = NULL, *h, *resolve = NULL;
	if (a->resolve)
		resolve = curl_slist_append(NULL, a->resolve);
	if (post && (h = curl_slist_append(hdrs, "Content-Type: application/jose+json")))
		hdrs = h;
	char acc[128];
	if (accept && bsnprintf(acc, sizeof acc, "Accept: %s", accept) &&
	    (h = curl_slist_append(hdrs, acc)))
		hdrs = h;
	CURLcode e = CURLE_OK;
	/* every option that can fail is checked; the first failure stops */
	if (e == CURLE_OK) e = curl_easy_setopt(c, CURLOPT_URL, url);
	if (e == CURLE_OK) e = curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "https");
	if (e == CURLE_OK) e = curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	if (e == CURLE_OK) e = curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, (long)ACME_CONNECT_TIMEOUT_S);
	if (e == CURLE_OK) e = curl_easy_setopt(c, CURLOPT_TIMEOUT, (long)ACME_REQUEST_TIMEOUT_S);
	if (e == CURLE_OK) e = curl_easy_setopt(c, CURLOPT_USERAGENT, "posthorn/" POSTHORN_VERSION);
	if (e == CURLE_OK) e = curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, acme_body_cb);
	if (e == CURLE_OK) e = curl_easy_setopt(c, CURLOPT_WRITEDATA, r);
	if (e == CURLE_OK) e = curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, acme_header_cb);
	if (e == CURLE_OK) e = curl_easy_setopt(c, CURLOPT_HEADERDATA, r);
	if (e == CURLE_OK) e = curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, acme_progress_cb);
	if (e == CURLE_OK) e = curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
	if (e == CURLE_OK && a->p.ca) e = curl_easy_setopt(c, CURLOPT_CAINFO, a->p.ca);
	if (e == CURLE_OK && hdrs) e = curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
	if (e == CURLE_OK && resolve) e = curl_easy_setopt(c, CURLOPT_RESOLVE, resolve);
	if (e == CURLE_OK && head) e = curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
	if (e == CURLE_OK && post) e = curl_easy_setopt(c, CURLOPT_POSTFIELDS, post);
	if (e == CURLE_OK)
		e = curl_easy_perform(c);
	if (e == CURLE_OK)
		e = curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->code);
	curl_slist_free_all(hdrs);
	curl_slist_free_all(resolve);
	if (r->nonce[0])
		memcpy(a->nonce, r->nonce, sizeof a->nonce);
	a->retry_after = acme_retry_after(r->retry_after);
	if (e != CURLE_OK) {
		acme_fail(a, "%s: %s", url, r->too_big ? "response too large" : curl_easy_strerror(e));
		acme_resp_free(r);
		return -1;
	}
	return 0;
}

static int acme_new_nonce(struct acme_attempt *a)
{
	struct acme_resp r;
	if (acme_http(a, a->dir.new_nonce, NULL, true, NULL, &r) < 0)
		return -1;
	acme_resp_free(&r);
	if (!a->nonce[0]) {
		acme_fail(a, "%s: no Replay-Nonce", a->dir.new_nonce);
		return -1;
	}
	return 0;
}

static void acme_fail_status(struct acme_attempt *a, const char *url, const struct acme_resp *r)
{
	char problem[ACME_PROBLEM_MAX];
	if (!acme_parse_problem(r->body ? r->body : "", r->len, problem, sizeof problem))
		xsnprintf(problem, sizeof problem, "no problem document");
	acme_fail(a, "%s: HTTP %ld: %s", url, r->code, problem);
}

/* A signed POST (payload NULL: POST-as-GET), sent again once with a fresh
 * nonce after badNonce (RFC 8555 §6.5).  A 2xx answer, or -1. */
static int acme_post(struct acme_attempt *a, const char *url, const char *payload,
		     const char *accept, struct acme_resp *r)
{
	for (int tries = 0; tries < 2; tries++) {
		if (!a->nonce[0] && acme_new_nonce(a) < 0)
			return -1;
		char *body = acme_jws(a->account, a->kid, a->nonce, url, payload);
		a->nonce[0] = '\0'; /* used */
		if (!body) {
			acme_fail(a, "cannot sign the request to %s", url);
			return -1;
		}
		int rc = acme_http(a, url, body, false, accept, r);
		free(body);
		if (rc < 0)
			return -1;
		if (r->code >= 200 && r->code < 300)
			return 0;
		if (tries == 0 && r->code == 400 && r->body &&
		    acme_problem_is_bad_nonce(r->body, r->len)) {
			acme_resp_free(r);
			continue;
		}
		acme_fail_status(a, url, r);
		acme_resp_free(r);
		return -1;
	}
	return -1;
}

/* ---- the steps of an attempt -------------------------------------------------- */

static int acme_get_directory(struct acme_attempt *a)
{
	struct acme_resp r;
	if (acme_http(a, a->p.directory, NULL, false, NULL, &r) < 0)
		return -1;
	char err[256];
	int rc = 0;
	if (r.code != 200) {
		acme_fail(a, "%s: HTTP %ld", a->p.directory, r.code);
		rc = -1;
	} else if (acme_parse_directory(r.body ? r.body : "", r.len, &a->dir, err, sizeof err) < 0) {
		acme_fail(a, "directory %s: %s", a->p.directory, err);
		rc = -1;
	}
	acme_resp_free(&r);
	return rc;
}

static int acme_account(struct acme_attempt *a)
{
	char err[512];
	char *path = acme_params_file(&a->p, "account.key");
	a->account = acme_account_key(path, err, sizeof err);
	free(path);
	if (!a->account) {
		acme_fail(a, "%s", err);
		return -1;
	}
	json_t *req = json_pack("{s:b}", "termsOfServiceAgreed", 1);
	if (req && a->p.contact)
		(void)json_object_set_new(req, "contact", json_pack("[s]", a->p.contact));
	char *payload = req ? json_dumps(req, JSON_COMPACT) : NULL;
	json_decref(req);
	if (!payload) {
		acme_fail(a, "cannot encode the account request");
		return -1;
	}
	struct acme_resp r;
	int rc = acme_post(a, a->dir.new_account, payload, NULL, &r);
	free(payload);
	if (rc < 0)
		return -1;
	if (!r.location[0]) {
		acme_fail(a, "%s: no account URL (Location)", a->dir.new_account);
		rc = -1;
	} else {
		a->kid = xstrdup(r.location);
	}
	acme_resp_free(&r);
	return rc;
}

static char *acme_order_request(const struct acme_params *p)
{
	json_t *ids = json_array();
	for (size_t i = 0; ids && i < p->nnames; i++)
		if (json_array_append_new(ids, json_pack("{s:s, s:s}", "type", "dns", "value",
							 p->names[i])) < 0) {
			json_decref(ids);
			ids = NULL;
		}
	json_t *req = ids ? json_pack("{s:o}", "identifiers", ids) : NULL;
	char *text = req ? json_dumps(req, JSON_COMPACT) : NULL;
	json_decref(req);
	return text;
}

static int acme_parse_order_resp(struct acme_attempt *a, const char *url,
				 const struct acme_resp *r, struct acme_order *o)
{
	char err[256];
	if (acme_parse_order(r->body ? r->body : "", r->len, o, err, sizeof err) < 0) {
		acme_fail(a, "order %s: %s", url, err);
		return -1;
	}
	return 0;
}

static int acme_new_order(struct acme_attempt *a, char *order_url, struct acme_order *o)
{
	char *payload = acme_order_request(&a->p);
	if (!payload) {
		acme_fail(a, "cannot encode the order");
		return -1;
	}
	struct acme_resp r;
	int rc = acme_post(a, a->dir.new_order, payload, NULL, &r);
	free(payload);
	if (rc < 0)
		return -1;
	if (!r.location[0] || strncmp(r.location, "https://", 8) != 0) {
		acme_fail(a, "%s: no order URL (Location)", a->dir.new_order);
		rc = -1;
	} else {
		memcpy(order_url, r.location, sizeof r.location);
		rc = acme_parse_order_resp(a, a->dir.new_order, &r, o);
	}
	acme_resp_free(&r);
	return rc;
}

static bool acme_stopping(void)
{
	return __atomic_load_n(&client.stop, __ATOMIC_RELAXED) != 0;
}

/* Before the next poll: the poll interval, or what the CA asked for with
 * Retry-After, in steps that notice a shutdown. */
static void acme_pause(const struct acme_attempt *a)
{
	unsigned steps = a->retry_after * 1000 / ACME_POLL_INTERVAL_MS;
	for (unsigned i = 0; i < (steps ? steps : 1) && !acme_stopping(); i++) {
		struct timespec ts = {.tv_sec = 0, .tv_nsec = ACME_POLL_INTERVAL_MS * 1000000L};
		while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
			;
	}
}

static bool acme_poll_on(int polls, time_t since)
{
	return polls < ACME_POLL_MAX && time(NULL) - since < ACME_POLL_WINDOW_S && !acme_stopping();
}

static const char *acme_challenge_type(const struct acme_params *p)
{
	return p->challenge == ACME_CHALLENGE_TLSALPN01 ? "tls-alpn-01" : "http-01";
}

static int acme_get_authz(struct acme_attempt *a, const char *url, struct acme_authz *z)
{
	struct acme_resp r;
	if (acme_post(a, url, NULL, NULL, &r) < 0)
		return -1;
	char err[256];
	int rc = acme_parse_authz(r.body ? r.body : "", r.len, acme_challenge_type(&a->p), z, err,
				  sizeof err);
	if (rc < 0)
		acme_fail(a, "authorization %s: %s", url, err);
	acme_resp_free(&r);
	return rc;
}

/* The answer to the challenge: the token's key authorization for the
 * http-01 listener, or a certificate for the TLS listeners (tls-alpn-01). */
static int acme_publish(struct acme_attempt *a, const struct acme_authz *z, char *ka)
{
	if (a->p.challenge == ACME_CHALLENGE_HTTP01) {
		acme_token_publish(z->token, ka);
		return 0;
	}
	char err[256];
	int rc = acme_alpn_publish(z->name, ka, err, sizeof err);
	free(ka);
	if (rc < 0)
		acme_fail(a, "%s", err);
	return rc;
}

/* One authorization through its challenge to valid. */
static int acme_authorize(struct acme_attempt *a, const char *url)
{
	struct acme_authz z;
	if (acme_get_authz(a, url, &z) < 0)
		return -1;
	if (z.status == ACME_ST_VALID)
		return 0;
	if (z.status != ACME_ST_PENDING || !z.has_challenge) {
		acme_fail(a, "authorization for %s is %s%s%s%s", z.name, acme_status_name(z.status),
			  z.has_challenge ? "" : " and offers no ",
			  z.has_challenge ? "" : acme_challenge_type(&a->p),
			  z.has_challenge ? "" : " challenge");
		return -1;
	}
	char *ka = acme_key_authorization(z.token, a->account);
	if (!ka) {
		acme_fail(a, "cannot make the key authorization");
		return -1;
	}
	if (acme_publish(a, &z, ka) < 0)
		return -1;
	struct acme_resp r;
	if (acme_post(a, z.challenge_url, "{}", NULL, &r) < 0)
		return -1;
	acme_resp_free(&r);
	time_t since = time(NULL);
	for (int i = 0; acme_poll_on(i, since); i++) {
		acme_pause(a);
		if (acme_get_authz(a, url, &z) < 0)
			return -1;
		if (z.status == ACME_ST_VALID)
			return 0;
		if (z.status != ACME_ST_PENDING) {
			acme_fail(a, "authorization for %s is %s: %s", z.name,
				  acme_status_name(z.status), z.error[0] ? z.error : "no reason given");
			return -1;
		}
	}
	acme_fail(a, "authorization for %s still pending", z.name);
	return -1;
}

/* Poll the order while it is in state `while_in`. */
static int acme_poll_order(struct acme_attempt *a, const char *url, enum acme_status while_in,
			   struct acme_order *o)
{
	time_t since = time(NULL);
	for (int i = 0; o->status == while_in && acme_poll_on(i, since); i++) {
		acme_pause(a);
		acme_order_free(o);
		struct acme_resp r;
		if (acme_post(a, url, NULL, NULL, &r) < 0)
			return -1;
		int rc = acme_parse_order_resp(a, url, &r, o);
		acme_resp_free(&r);
		if (rc < 0)
			return -1;
	}
	return 0;
}

static int acme_finalize(struct acme_attempt *a, const char *order_url, struct acme_order *o,
			 EVP_PKEY **key)
{
	char err[256];
	char *csr = acme_csr((const char *const *)a->p.names, a->p.nnames, key, err, sizeof err);
	if (!csr) {
		acme_fail(a, "%s", err);
		return -1;
	}
	json_t *req = json_pack("{s:s}", "csr", csr);
	free(csr);
	char *payload = req ? json_dumps(req, JSON_COMPACT) : NULL;
	json_decref(req);
	struct acme_resp r;
	int rc = payload ? acme_post(a, o->finalize, payload, NULL, &r) : -1;
	free(payload);
	if (rc < 0)
		return -1;
	acme_order_free(o);
	rc = acme_parse_order_resp(a, o->finalize, &r, o);
	acme_resp_free(&r);
	if (rc == 0)
		rc = acme_poll_order(a, order_url, ACME_ST_PROCESSING, o);
	if (rc == 0 && (o->status != ACME_ST_VALID || !o->certificate[0])) {
		acme_fail(a, "order is %s after finalize", acme_status_name(o->status));
		rc = -1;
	}
	return rc;
}

/* The chain must start with a certificate for key. */
static int acme_download(struct acme_attempt *a, const char *url, EVP_PKEY *key)
{
	struct acme_resp r;
	if (acme_post(a, url, NULL, "application/pem-certificate-chain", &r) < 0)
		return -1;
	BIO *b = r.body ? BIO_new_mem_buf(r.body, (int)r.len) : NULL;
	X509 *leaf = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
	int rc = 0;
	if (!leaf || X509_check_private_key(leaf, key) != 1) {
		acme_fail(a, "%s: not a certificate chain for the new key", url);
		rc = -1;
	} else {
		a->cert_pem = r.body;
		r.body = NULL;
	}
	X509_free(leaf);
	BIO_free(b);
	acme_resp_free(&r);
	return rc;
}

/* data to dir/name through dir/name.new: written, synced, renamed. */
static int acme_write_file(struct acme_attempt *a, const char *name, const char *data,
			   mode_t mode)
{
	char *path = acme_params_file(&a->p, name);
	char *tmp = xasprintf("%s.new", path);
	(void)unlink(tmp); /* a leftover of an attempt cut short */
	int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
	bool ok = fd >= 0 && write_all(fd, data, strlen(data)) == 0 && fsync(fd) == 0;
	int saved = errno;
	if (fd >= 0 && close(fd) < 0 && ok) {
		ok = false;
		saved = errno;
	}
	if (ok && rename(tmp, path) < 0) {
		ok = false;
		saved = errno;
	}
	if (!ok) {
		acme_fail(a, "cannot write %s: %s", path, strerror(saved));
		(void)unlink(tmp);
	}
	free(tmp);
	free(path);
	return ok ? 0 : -1;
}

/* The key and the chain in one file (PEM readers skip the blocks of other
 * types): one rename replaces both, so that no reload and no restart
 * after a crash can ever find a new key beside an old certificate. */
static int acme_install(struct acme_attempt *a, EVP_PKEY *key)
{
	char *pem = acme_key_pem(key);
	if (!pem) {
		acme_fail(a, "cannot encode the new key");
		return -1;
	}
	char *both = xasprintf("%s%s", pem, a->cert_pem);
	OPENSSL_cleanse(pem, strlen(pem));
	free(pem);
	int rc = acme_write_file(a, ACME_CERT_FILE, both, 0600);
	OPENSSL_cleanse(both, strlen(both));
	free(both);
	if (rc == 0 && fsync_dir(a->p.dir) < 0) {
		acme_fail(a, "cannot sync %s: %s", a->p.dir, strerror(errno));
		rc = -1;
	}
	return rc;
}

static int acme_issue(struct acme_attempt *a)
{
	if (acme_get_directory(a) < 0 || acme_account(a) < 0)
		return -1;
	char order_url[ACME_URL_MAX];
	struct acme_order o;
	if (acme_new_order(a, order_url, &o) < 0)
		return -1;
	int rc = 0;
	for (size_t i = 0; rc == 0 && i < o.nauthz; i++)
		rc = acme_authorize(a, o.authz[i]);
	acme_client_clear();
	if (rc == 0)
		rc = acme_poll_order(a, order_url, ACME_ST_PENDING, &o);
	if (rc == 0 && o.status != ACME_ST_READY && o.status != ACME_ST_VALID) {
		acme_fail(a, "order is %s after its authorizations", acme_status_name(o.status));
		rc = -1;
	}
	EVP_PKEY *key = NULL;
	if (rc == 0)
		rc = acme_finalize(a, order_url, &o, &key);
	if (rc == 0)
		rc = acme_download(a, o.certificate, key);
	if (rc == 0)
		rc = acme_install(a, key);
	EVP_PKEY_free(key);
	acme_order_free(&o);
	return rc;
}

/* SPOOL/acme/status for `posthorn cert status`: when, and how it went. */
static void acme_write_status(struct acme_attempt *a, time_t when)
{
	char text[ACME_ERROR_MAX + 128];
	char clean[ACME_ERROR_MAX];
	size_t o = 0;
	for (size_t i = 0; a->error[i] && o + 1 < sizeof clean; i++)
		clean[o++] = a->error[i] == '\n' ? ' ' : a->error[i];
	clean[o] = '\0';
	if (!bsnprintf(text, sizeof text, "attempt=%lld\nresult=%s\nerror=%s\n", (long long)when,
		       a->ok ? "ok" : "failed", a->ok ? "" : clean))
		return; /* cannot happen: text has room for the bounded error */
	char saved[ACME_ERROR_MAX];
	memcpy(saved, a->error, sizeof saved);
	if (acme_write_file(a, "status", text, 0644) < 0)
		memcpy(a->error, saved, sizeof saved); /* the attempt's own result stands */
}

struct acme_attempt *acme_attempt_new(const struct acme_params *p, const char *resolve)
{
	struct acme_attempt *a = xcalloc(1, sizeof *a);
	acme_params_copy(&a->p, p);
	a->resolve = resolve ? xstrdup(resolve) : NULL;
	return a;
}

int acme_directory_target(const char *url, struct acme_target *t)
{
	memset(t, 0, sizeof *t);
	CURLU *u = curl_url();
	char *host = NULL, *port = NULL;
	int r = -1;
	if (u && curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
	    curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK &&
	    curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) == CURLUE_OK) {
		const char *h = host;
		size_t n = strlen(h);
		if (n > 2 && h[0] == '[' && h[n - 1] == ']') {
			h++;
			n -= 2;
		}
		unsigned char buf[16];
		char bare[ACME_TARGET_HOST_MAX];
		if (n > 0 && n < sizeof t->host) {
			memcpy(bare, h, n);
			bare[n] = '\0';
			memcpy(t->host, bare, n + 1);
			t->port = (unsigned)strtoul(port, NULL, 10);
			t->literal = inet_pton(AF_INET, bare, buf) == 1 ||
				     inet_pton(AF_INET6, bare, buf) == 1;
			r = t->port > 0 && t->port < 65536 ? 0 : -1;
		}
	}
	curl_free(host);
	curl_free(port);
	curl_url_cleanup(u);
	return r;
}

void acme_attempt_run(struct acme_attempt *a)
{
	time_t started = time(NULL);
	a->curl = curl_easy_init();
	if (!a->curl)
		acme_fail(a, "cannot start libcurl");
	else
		a->ok = acme_issue(a) == 0;
	acme_client_clear();
	if (acme_stopping() && !a->ok)
		acme_fail(a, "stopped");
	acme_write_status(a, started);
	curl_easy_cleanup(a->curl);
	a->curl = NULL;
}

bool acme_attempt_ok(const struct acme_attempt *a)
{
	return a->ok;
}

const char *acme_attempt_error(const struct acme_attempt *a)
{
	return a->error;
}

void acme_attempt_free(struct acme_attempt *a)
{
	if (!a)
		return;
	acme_params_free(&a->p);
	EVP_PKEY_free(a->account);
	free(a->kid);
	free(a->cert_pem);
	free(a->resolve);
	free(a);
}

void acme_client_clear(void)
{
	acme_tokens_clear();
	acme_alpn_clear();
}

void acme_client_stop(void)
{
	__atomic_store_n(&client.stop, 1, __ATOMIC_RELAXED);
}

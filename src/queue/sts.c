/* sts: a destination's MTA-STS policy (RFC 8461 §3.3, §5.1). */
#define _GNU_SOURCE
#include "queue/sts.h"

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

#include "lib/log.h"
#include "lib/offload.h"
#include "lib/util.h"
#include "net/dns.h"

enum {
	STS_CONNECT_TIMEOUT_S = 10,
	STS_FETCH_TIMEOUT_S = 30,
	STS_HOST_MAX = 270,             /* "mta-sts." and a domain */
};

#define STS_MAGIC "posthorn-mta-sts 1"

/* What the worker is given and gives back. */
struct sts_work {
	char *dir;              /* SPOOL/mta-sts */
	char *cafile;
	char *domain;
	bool have_id;           /* the TXT record names a policy */
	char id[MTASTS_ID_MAX + 1];
	char *resolve;          /* CURLOPT_RESOLVE entry, or NULL: no address */
	/* the answer */
	bool have_policy;
	struct mtasts_policy policy;
	const char *source;     /* "cache" or "fetched" */
	const char *problem;    /* "sts-policy-fetch-error", "sts-policy-invalid" or NULL */
	char why[256];
};

struct sts_lookup {
	struct dns_resolver *dns;
	char *spool_dir, *cafile, *domain;
	sts_done_fn done;
	void *arg;
	dns_query_id query;
	struct offload_job *job;
	struct sts_work *work;  /* until it is submitted */
	bool started;           /* sts_lookup_start has returned */
	bool finished;          /* done has run (or would have, before started) */
};

static void sts_work_free(void *p)
{
	struct sts_work *w = p;
	if (!w)
		return;
	free(w->dir);
	free(w->cafile);
	free(w->domain);
	free(w->resolve);
	mtasts_policy_clear(&w->policy);
	free(w);
}

static void sts_lookup_free(struct sts_lookup *l)
{
	sts_work_free(l->work);
	free(l->spool_dir);
	free(l->cafile);
	free(l->domain);
	free(l);
}

/* ---- on the worker: the cache file and the fetch --------------------------- */

static char *sts_cache_path(const struct sts_work *w)
{
	return xasprintf("%s/%s", w->dir, w->domain);
}

/* "posthorn-mta-sts 1 ID FETCHED" (the first line, NUL-terminated). */
static bool sts_cache_header(const char *line, char *id, time_t *fetched)
{
	size_t m = strlen(STS_MAGIC " ");
	if (strncmp(line, STS_MAGIC " ", m) != 0)
		return false;
	const char *p = line + m;
	size_t n = strspn(p, "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz");
	if (n == 0 || n > MTASTS_ID_MAX || p[n] != ' ')
		return false;
	memcpy(id, p, n);
	id[n] = '\0';
	char *end;
	errno = 0;
	long long when = strtoll(p + n + 1, &end, 10);
	if (errno || end == p + n + 1 || *end != '\0' || when < 0)
		return false;
	*fetched = (time_t)when;
	return true;
}

/* The cached policy, its id and when it was fetched; false when there is
 * none that parses. */
static bool sts_cache_read(const struct sts_work *w, struct mtasts_policy *p, char *id,
			   time_t *fetched)
{
	char *path = sts_cache_path(w);
	FILE *f = fopen(path, "re");
	free(path);
	if (!f)
		return false;
	char *buf = xmalloc(MTASTS_POLICY_MAX + 128);
	size_t n = fread(buf, 1, MTASTS_POLICY_MAX + 127, f);
	(void)fclose(f); /* read-only */
	buf[n] = '\0';
	char *nl = memchr(buf, '\n', n);
	bool ok = false;
	if (nl) {
		*nl = '\0';
		char err[128];
		ok = sts_cache_header(buf, id, fetched) &&
		     mtasts_policy_parse(nl + 1, n - (size_t)(nl + 1 - buf), p, err, sizeof err);
	}
	free(buf);
	return ok;
}

/* Written whole under a temporary name, then renamed over the old one. */
static void sts_cache_write(const struct sts_work *w, const char *text, size_t len)
{
	if (mkdir(w->dir, 0700) < 0 && errno != EEXIST)
		return;
	char *path = sts_cache_path(w);
	char *tmp = xasprintf("%s.tmp", path);
	FILE *f = fopen(tmp, "we");
	bool ok = f && fprintf(f, STS_MAGIC " %s %lld\n", w->id, (long long)time(NULL)) > 0 &&
		  fwrite(text, 1, len, f) == len;
	if (f && fclose(f) != 0)
		ok = false;
	if (!ok || rename(tmp, path) < 0)
		(void)unlink(tmp);
	free(tmp);
	free(path);
}

struct sts_body {
	char *buf;
	size_t len;
	bool too_big;
};

static size_t sts_body_cb(char *data, size_t size, size_t nmemb, void *arg)
{
	struct sts_body *b = arg;
	size_t n = size * nmemb;
	if (n > MTASTS_POLICY_MAX - b->len) {
		b->too_big = true;
		return 0; /* curl stops: CURLE_WRITE_ERROR */
	}
	memcpy(b->buf + b->len, data, n);
	b->len += n;
	return n;
}

/* GET the policy (RFC 8461 §3.3): HTTPS only, the certificate verified for
 * mta-sts.DOMAIN, no redirects, 200 with text/plain. */
static bool sts_fetch(struct sts_work *w, struct sts_body *body)
{
	char *url = xasprintf("https://mta-sts.%s/.well-known/mta-sts.txt", w->domain);
	struct curl_slist *resolve = curl_slist_append(NULL, w->resolve);
	CURL *c = curl_easy_init();
	CURLcode e = c && resolve ? CURLE_OK : CURLE_OUT_OF_MEMORY;
	if (e == CURLE_OK) e = curl_easy_setopt(c, CURLOPT_URL, url);
	if (e == CURLE_OK) e = curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "https");
	if (e == CURLE_OK) e = curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	if (e == CURLE_OK) e = curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
	if (e == CURLE_OK) e = curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, (long)STS_CONNECT_TIMEOUT_S);
	if (e == CURLE_OK) e = curl_easy_setopt(c, CURLOPT_TIMEOUT, (long)STS_FETCH_TIMEOUT_S);
	if (e == CURLE_OK) e = curl_easy_setopt(c, CURLOPT_USERAGENT, "posthorn/" POSTHORN_VERSION);
	if (e == CURLE_OK) e = curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, sts_body_cb);
	if (e == CURLE_OK) e = curl_easy_setopt(c, CURLOPT_WRITEDATA, body);
	if (e == CURLE_OK) e = curl_easy_setopt(c, CURLOPT_RESOLVE, resolve);
	if (e == CURLE_OK && w->cafile) e = curl_easy_setopt(c, CURLOPT_CAINFO, w->cafile);
	if (e == CURLE_OK) e = curl_easy_perform(c);
	long code = 0;
	char *ctype = NULL;
	if (e == CURLE_OK) e = curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
	if (e == CURLE_OK) e = curl_easy_getinfo(c, CURLINFO_CONTENT_TYPE, &ctype);
	bool ok = false;
	if (e != CURLE_OK)
		errfmt(w->why, sizeof w->why, "%s", body->too_big ? "policy larger than 64 KiB"
								  : curl_easy_strerror(e));
	else if (code != 200)
		errfmt(w->why, sizeof w->why, "HTTP status %ld", code);
	else if (!ctype || strncasecmp(ctype, "text/plain", 10) != 0)
		errfmt(w->why, sizeof w->why, "content type is not text/plain");
	else
		ok = true;
	if (c)
		curl_easy_cleanup(c);
	curl_slist_free_all(resolve);
	free(url);
	return ok;
}

static void sts_use(struct sts_work *w, struct mtasts_policy *p, const char *source)
{
	w->policy = *p;
	memset(p, 0, sizeof *p);
	w->have_policy = true;
	w->source = source;
}

/* The answer from the record's id, the cache and, when needed, a fetch. */
static void sts_run(void *arg)
{
	struct sts_work *w = arg;
	struct mtasts_policy cached;
	char cached_id[MTASTS_ID_MAX + 1] = "";
	time_t fetched = 0;
	bool have_cache = sts_cache_read(w, &cached, cached_id, &fetched);
	/* whole seconds: a copy max_age seconds old has expired */
	bool fresh = have_cache && time(NULL) - fetched < (time_t)cached.max_age;
	if (fresh && (!w->have_id || strcmp(cached_id, w->id) == 0)) {
		sts_use(w, &cached, "cache");
		return;
	}
	if (w->have_id) {
		struct sts_body body = {xmalloc(MTASTS_POLICY_MAX), 0, false};
		struct mtasts_policy p;
		char err[128];
		if (!w->resolve) {
			errfmt(w->why, sizeof w->why, "mta-sts.%s has no address", w->domain);
			w->problem = "sts-policy-fetch-error";
		} else if (!sts_fetch(w, &body)) {
			w->problem = "sts-policy-fetch-error";
		} else if (!mtasts_policy_parse(body.buf, body.len, &p, err, sizeof err)) {
			errfmt(w->why, sizeof w->why, "%s", err);
			w->problem = "sts-policy-invalid";
		} else {
			sts_cache_write(w, body.buf, body.len);
			sts_use(w, &p, "fetched");
		}
		free(body.buf);
		if (w->have_policy) {
			if (have_cache)
				mtasts_policy_clear(&cached);
			return;
		}
	}
	/* no record, or no new policy: a cached one that has not expired */
	if (fresh)
		sts_use(w, &cached, "cache");
	else if (have_cache)
		mtasts_policy_clear(&cached);
}

/* ---- on the loop ----------------------------------------------------------- */

static void sts_finish(struct sts_lookup *l, const struct mtasts_policy *p, const char *problem)
{
	l->finished = true;
	l->done(l->arg, p, problem);
}

static void sts_job_done(void *owner, void *arg)
{
	struct sts_lookup *l = owner;
	struct sts_work *w = arg;
	l->job = NULL;
	char why[LOG_VALUE_MAX * 2];
	if (w->problem)
		log_warn("event=mta-sts domain=%s result=%s reason=\"%s\"%s", w->domain, w->problem,
			 log_quote(why, sizeof why, w->why, strlen(w->why)),
			 w->have_policy ? " fallback=cache" : "");
	if (w->have_policy)
		log_info("event=mta-sts domain=%s mode=%s max_age=%lu source=%s", w->domain,
			 mtasts_mode_name(w->policy.mode), w->policy.max_age, w->source);
	bool sync = !l->started;
	sts_finish(l, w->have_policy ? &w->policy : NULL, w->have_policy ? NULL : w->problem);
	sts_work_free(w);
	if (!sync)
		sts_lookup_free(l);
}

static void sts_submit(struct sts_lookup *l)
{
	struct sts_work *w = l->work;
	l->work = NULL;
	l->job = offload_submit(sts_run, sts_job_done, sts_work_free, w, l);
}

static void sts_addrs(void *arg, enum dns_status st, const struct dns_addr *addrs, size_t n)
{
	struct sts_lookup *l = arg;
	l->query = 0;
	if (st == DNS_OK && n > 0) {
		char ip[INET6_ADDRSTRLEN];
		if (inet_ntop(addrs[0].family, addrs[0].addr, ip, sizeof ip))
			l->work->resolve = xasprintf(addrs[0].family == AF_INET6 ? "mta-sts.%s:443:[%s]"
										 : "mta-sts.%s:443:%s",
						     l->domain, ip);
	}
	sts_submit(l);
}

/* §3.1: of the records at _mta-sts, those that start "v=STSv1" count; one
 * that parses names the policy, anything else is no record. */
static void sts_txt(void *arg, enum dns_status st, const struct dns_txt *txt, size_t n,
		    uint32_t ttl)
{
	struct sts_lookup *l = arg;
	l->query = 0;
	size_t sts = 0, which = 0;
	for (size_t i = 0; st == DNS_OK && i < n; i++)
		if (mtasts_record_is_sts(txt[i].text, txt[i].len)) {
			sts++;
			which = i;
		}
	struct sts_work *w = l->work;
	w->have_id = sts == 1 && mtasts_record_id(txt[which].text, txt[which].len, w->id);
	if (!w->have_id) {
		sts_submit(l);
		return;
	}
	char host[STS_HOST_MAX];
	if (!bsnprintf(host, sizeof host, "mta-sts.%s", l->domain)) {
		sts_submit(l);
		return;
	}
	dns_query_id q = dns_lookup_addrs(l->dns, host, sts_addrs, l);
	if (q)
		l->query = q;
}

struct sts_lookup *sts_lookup_start(struct dns_resolver *dns, const char *spool_dir,
				    const char *cafile, const char *domain, sts_done_fn done,
				    void *arg)
{
	struct sts_lookup *l = xcalloc(1, sizeof *l);
	l->dns = dns;
	l->spool_dir = xstrdup(spool_dir);
	l->cafile = cafile ? xstrdup(cafile) : NULL;
	l->domain = xstrdup(domain);
	l->done = done;
	l->arg = arg;
	struct sts_work *w = xcalloc(1, sizeof *w);
	w->dir = xasprintf("%s/mta-sts", spool_dir);
	w->cafile = cafile ? xstrdup(cafile) : NULL;
	w->domain = xstrdup(domain);
	l->work = w;
	char name[STS_HOST_MAX];
	if (!bsnprintf(name, sizeof name, "_mta-sts.%s", domain)) {
		sts_submit(l);
	} else {
		dns_query_id q = dns_lookup_txt(dns, name, sts_txt, l);
		if (q)
			l->query = q;
	}
	l->started = true;
	if (l->finished) {
		/* everything ran already (the cache of DNS answers, no workers) */
		sts_lookup_free(l);
		return NULL;
	}
	return l;
}

void sts_lookup_cancel(struct sts_lookup *l)
{
	if (!l)
		return;
	if (l->query)
		dns_cancel(l->dns, l->query);
	if (l->job)
		offload_cancel(l->job);
	sts_lookup_free(l);
}

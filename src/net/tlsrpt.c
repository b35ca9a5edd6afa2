/* tlsrpt: SMTP TLS reporting records and reports (RFC 8460). */
#include "net/tlsrpt.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <zlib.h>

#include "lib/util.h"

static bool tlsrpt_wsp(char c)
{
	return c == ' ' || c == '\t';
}

/* One URI of rua (already cut at ',' and trimmed): kept when usable. */
static void tlsrpt_take_uri(const char *u, size_t n, struct tlsrpt_rua *rua, size_t *nrua)
{
	bool mailto = n > 7 && strncasecmp(u, "mailto:", 7) == 0;
	bool https = n > 8 && strncasecmp(u, "https://", 8) == 0;
	if ((!mailto && !https) || *nrua >= TLSRPT_RUA_MAX)
		return;
	const char *v = mailto ? u + 7 : u;
	size_t vn = mailto ? n - 7 : n;
	if (vn >= TLSRPT_URI_MAX)
		return;
	for (size_t i = 0; i < vn; i++)
		if ((unsigned char)v[i] <= 0x20 || (unsigned char)v[i] >= 0x7f)
			return;
	if (mailto && (!memchr(v, '@', vn) || memchr(v, '?', vn)))
		return; /* a mailbox, without headers to add */
	struct tlsrpt_rua *r = &rua[(*nrua)++];
	r->https = https;
	memcpy(r->uri, v, vn);
	r->uri[vn] = '\0';
}

static void tlsrpt_rua_list(const char *v, size_t n, struct tlsrpt_rua *rua, size_t *nrua)
{
	size_t i = 0;
	while (i < n) {
		while (i < n && tlsrpt_wsp(v[i]))
			i++;
		size_t start = i;
		while (i < n && v[i] != ',')
			i++;
		size_t end = i;
		while (end > start && tlsrpt_wsp(v[end - 1]))
			end--;
		tlsrpt_take_uri(v + start, end - start, rua, nrua);
		i++; /* the comma */
	}
}

bool tlsrpt_record_parse(const char *txt, size_t len, struct tlsrpt_rua *rua, size_t *nrua)
{
	static const char version[] = "v=TLSRPTv1";
	size_t vl = sizeof version - 1;
	*nrua = 0;
	if (len < vl || memcmp(txt, version, vl) != 0)
		return false;
	bool have_rua = false;
	size_t i = vl;
	while (i < len) {
		while (i < len && tlsrpt_wsp(txt[i]))
			i++;
		if (i == len)
			break;
		if (txt[i] != ';')
			return false;
		i++;
		while (i < len && tlsrpt_wsp(txt[i]))
			i++;
		size_t start = i;
		while (i < len && txt[i] != ';')
			i++;
		const char *f = txt + start;
		size_t fn = i - start;
		while (fn > 0 && tlsrpt_wsp(f[fn - 1]))
			fn--;
		if (fn == 0)
			continue; /* a trailing delimiter */
		if (!memchr(f, '=', fn))
			return false;
		if (fn > 4 && memcmp(f, "rua=", 4) == 0) {
			if (have_rua)
				return false;
			have_rua = true;
			tlsrpt_rua_list(f + 4, fn - 4, rua, nrua);
		}
		/* other fields: extensions, ignored (§3) */
	}
	return have_rua && *nrua > 0;
}

/* ---- the report (§4.4) ----------------------------------------------------- */

static const char *tlsrpt_type_name(enum tlsrpt_policy_type t)
{
	switch (t) {
	case TLSRPT_POLICY_STS:
		return "sts";
	case TLSRPT_POLICY_TLSA:
		return "tlsa";
	case TLSRPT_POLICY_NONE:
		break;
	}
	return "no-policy-found";
}

/* "2016-04-01T00:00:00Z" (RFC 3339). */
static json_t *tlsrpt_time(time_t t)
{
	struct tm tm;
	char buf[32];
	if (!gmtime_r(&t, &tm) || strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		return NULL;
	return json_string(buf);
}

/* json_object_set_new() that notes a NULL value (a string not UTF-8). */
static void tlsrpt_set(json_t *obj, const char *key, json_t *value, bool *ok)
{
	if (!value || json_object_set_new(obj, key, value) != 0)
		*ok = false;
}

static json_t *tlsrpt_failure_json(const struct tlsrpt_failure *f, bool *ok)
{
	json_t *o = json_object();
	tlsrpt_set(o, "result-type", json_string(f->result_type), ok);
	if (f->receiving_ip)
		tlsrpt_set(o, "receiving-ip", json_string(f->receiving_ip), ok);
	tlsrpt_set(o, "receiving-mx-hostname", json_string(f->receiving_mx), ok);
	tlsrpt_set(o, "failed-session-count", json_integer((json_int_t)f->sessions), ok);
	return o;
}

static json_t *tlsrpt_policy_json(const struct tlsrpt_policy *p, bool *ok)
{
	json_t *policy = json_object(), *strings = json_array();
	tlsrpt_set(policy, "policy-type", json_string(tlsrpt_type_name(p->type)), ok);
	for (size_t i = 0; i < p->nstrings && i < TLSRPT_POLICY_STRINGS_MAX; i++)
		if (json_array_append_new(strings, json_string(p->strings[i])) != 0)
			*ok = false;
	tlsrpt_set(policy, "policy-string", strings, ok);
	tlsrpt_set(policy, "policy-domain", json_string(p->domain), ok);
	if (p->mx_host)
		tlsrpt_set(policy, "mx-host", json_string(p->mx_host), ok);
	uint64_t failed = 0;
	json_t *details = json_array();
	for (size_t i = 0; i < p->nfailures && i < TLSRPT_FAILURES_MAX; i++) {
		failed += p->failures[i].sessions;
		if (json_array_append_new(details, tlsrpt_failure_json(&p->failures[i], ok)) != 0)
			*ok = false;
	}
	json_t *summary = json_object();
	tlsrpt_set(summary, "total-successful-session-count", json_integer((json_int_t)p->successes),
		   ok);
	tlsrpt_set(summary, "total-failure-session-count", json_integer((json_int_t)failed), ok);
	json_t *o = json_object();
	tlsrpt_set(o, "policy", policy, ok);
	tlsrpt_set(o, "summary", summary, ok);
	tlsrpt_set(o, "failure-details", details, ok);
	return o;
}

char *tlsrpt_report_json(const struct tlsrpt_report *r)
{
	bool ok = true;
	json_t *root = json_object(), *range = json_object(), *policies = json_array();
	tlsrpt_set(root, "organization-name", json_string(r->organization), &ok);
	tlsrpt_set(range, "start-datetime", tlsrpt_time(r->start), &ok);
	tlsrpt_set(range, "end-datetime", tlsrpt_time(r->end), &ok);
	tlsrpt_set(root, "date-range", range, &ok);
	tlsrpt_set(root, "contact-info", json_string(r->contact), &ok);
	tlsrpt_set(root, "report-id", json_string(r->report_id), &ok);
	for (size_t i = 0; i < r->npolicies; i++)
		if (json_array_append_new(policies, tlsrpt_policy_json(&r->policies[i], &ok)) != 0)
			ok = false;
	tlsrpt_set(root, "policies", policies, &ok);
	char *text = ok ? json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
	json_decref(root);
	if (!text)
		return NULL;
	char *out = xstrdup(text);
	free(text); /* jansson's default allocator is malloc */
	return out;
}

unsigned char *tlsrpt_gzip(const void *data, size_t len, size_t *outlen)
{
	z_stream z;
	memset(&z, 0, sizeof z);
	/* 15 + 16: a gzip header and trailer instead of zlib's */
	if (deflateInit2(&z, Z_BEST_COMPRESSION, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
		return NULL;
	if (len > UINT32_MAX) {
		(void)deflateEnd(&z);
		return NULL;
	}
	size_t cap = deflateBound(&z, (uLong)len) + 32;
	unsigned char *out = xmalloc(cap);
	z.next_in = (Bytef *)(uintptr_t)data;
	z.avail_in = (uInt)len;
	z.next_out = out;
	z.avail_out = (uInt)cap;
	int st = deflate(&z, Z_FINISH);
	*outlen = z.total_out;
	(void)deflateEnd(&z);
	if (st != Z_STREAM_END) {
		free(out);
		return NULL;
	}
	return out;
}

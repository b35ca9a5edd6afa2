/* tlsrpt: SMTP TLS reporting records and reports (RFC 8460). */
#include "net/tlsrpt.h"

#include <jansson.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <zlib.h>

#include "lib/date.h"
#include "lib/strbuf.h"
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
	if (f->sending_ip)
		tlsrpt_set(o, "sending-mta-ip", json_string(f->sending_ip), ok);
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
	uint64_t failed = p->other_failures;
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

/* ---- an https rua ----------------------------------------------------------------- */

bool tlsrpt_https_target(const char *url, char *host, size_t hostsz, unsigned short *port)
{
	if (strncasecmp(url, "https://", 8) != 0)
		return false;
	const char *h = url + 8;
	size_t n = strcspn(h, ":/?#");
	if (n == 0 || n >= hostsz || memchr(h, '@', strcspn(h, "/?#")) || h[0] == '[')
		return false;
	for (size_t i = 0; i < n; i++)
		if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.", h[i]))
			return false;
	memcpy(host, h, n);
	host[n] = '\0';
	*port = 443;
	if (h[n] != ':')
		return true;
	const char *p = h + n + 1;
	size_t digits = strspn(p, "0123456789");
	if (digits == 0 || digits > 5 || (p[digits] != '\0' && p[digits] != '/'))
		return false;
	unsigned long v = strtoul(p, NULL, 10);
	if (v == 0 || v > 65535)
		return false;
	*port = (unsigned short)v;
	return true;
}

/* ---- the report by mail (§5.3) ----------------------------------------------------- */

enum { TLSRPT_B64_LINE = 57 }; /* bytes per base64 line of 76 characters */

static bool tlsrpt_header_safe(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || (unsigned char)*s >= 0x7f)
			return false;
	return true;
}

static void tlsrpt_add_base64(struct strbuf *sb, const unsigned char *data, size_t len)
{
	unsigned char line[4 * TLSRPT_B64_LINE / 3 + 1];
	for (size_t i = 0; i < len; i += TLSRPT_B64_LINE) {
		size_t n = len - i < TLSRPT_B64_LINE ? len - i : TLSRPT_B64_LINE;
		int out = EVP_EncodeBlock(line, data + i, (int)n);
		(void)strbuf_add(sb, line, (size_t)out);
		(void)strbuf_adds(sb, "\r\n");
	}
}

char *tlsrpt_mail_compose(const struct tlsrpt_mail *m, size_t *len)
{
	const char *const fields[] = {m->from, m->to, m->domain, m->submitter, m->report_id,
				      m->message_id};
	for (size_t i = 0; i < ARRAY_LEN(fields); i++)
		if (!tlsrpt_header_safe(fields[i]))
			return NULL;
	char date[DATE_RFC5322_MAX];
	if (!date_rfc5322(m->now, date, sizeof date))
		return NULL;
	size_t cap = 4096 + 6 * 1024 + (m->gzlen / TLSRPT_B64_LINE + 1) * 80;
	char *out = xmalloc(cap);
	struct strbuf sb;
	strbuf_init(&sb, out, cap);
	static const char boundary[] = "tlsrpt-posthorn-part";
	(void)strbuf_addf(&sb,
			  "From: <%s>\r\nDate: %s\r\nTo: <%s>\r\nMessage-ID: %s\r\n"
			  "Subject: Report Domain: %s Submitter: %s Report-ID: <%s>\r\n"
			  "TLS-Report-Domain: %s\r\nTLS-Report-Submitter: %s\r\n"
			  "Auto-Submitted: auto-generated\r\nMIME-Version: 1.0\r\n"
			  "Content-Type: multipart/report; report-type=\"tlsrpt\";\r\n"
			  "\tboundary=\"%s\"\r\n\r\n",
			  m->from, date, m->to, m->message_id, m->domain, m->submitter,
			  m->report_id, m->domain, m->submitter, boundary);
	(void)strbuf_addf(&sb,
			  "--%s\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
			  "This is an aggregate TLS report (RFC 8460) from %s about the\r\n"
			  "delivery of mail to %s.\r\n\r\n",
			  boundary, m->submitter, m->domain);
	/* §5.3: sender!policy-domain!begin!end!unique-id.json.gz */
	(void)strbuf_addf(&sb,
			  "--%s\r\nContent-Type: application/tlsrpt+gzip\r\n"
			  "Content-Transfer-Encoding: base64\r\n"
			  "Content-Disposition: attachment;\r\n"
			  "\tfilename=\"%s!%s!%lld!%lld.json.gz\"\r\n\r\n",
			  boundary, m->submitter, m->domain, (long long)m->start, (long long)m->end);
	tlsrpt_add_base64(&sb, m->gz, m->gzlen);
	(void)strbuf_addf(&sb, "\r\n--%s--\r\n", boundary);
	if (!strbuf_ok(&sb)) {
		free(out);
		return NULL;
	}
	*len = strbuf_len(&sb);
	return out;
}

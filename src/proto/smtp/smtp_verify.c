/* smtp_verify: a server's `verify` checks on one transaction.  SPF
 * (RFC 7208) runs when MAIL FROM is accepted; the header section is held
 * in memory (bounded) until its end — with DKIM (RFC 6376) or ARC
 * (RFC 8617) the whole message, up to SMTP_VERIFY_HOLD_MAX — where
 * Authentication-Results fields that claim our authserv-id are dropped
 * (RFC 8601 §5), the From domain is taken (RFC 7489 §6.6.1), and the
 * stages run in order: DKIM over the message as received, the ARC chain
 * (RFC 8617 §5.2), then DMARC policy discovery and the
 * decision with both SPF and DKIM alignment; then our
 * Authentication-Results field goes on top of what is held.  Every
 * lookup is asynchronous; a DNS failure is a temperror, never a
 * refusal. */
#define _GNU_SOURCE /* memmem */
#include "proto/smtp/smtp_verify.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/rand.h>

#include "conf/conf.h"
#include "lib/log.h"
#include "lib/metrics.h"
#include "lib/util.h"
#include "mailauth/arc.h"
#include "mailauth/authres.h"
#include "mailauth/dkim_tags.h"
#include "mailauth/dkim_verify.h"
#include "mailauth/spf.h"

enum { SMTP_VERIFY_SENDER_MAX = 512, SMTP_VERIFY_DKIM_MAX = 16, SMTP_VERIFY_IDS_MAX = 32 };

/* One DKIM result, owned (the strings of struct authres_dkim point here). */
struct smtp_verify_dkim {
	char domain[SPF_NAME_MAX + 1], selector[64], algorithm[32], reason[64], header_b[16];
};

struct smtp_verify {
	const struct conf_server *srv;
	bool full;                      /* the checks run; else the header is only cleaned */
	bool dkim_on;                   /* ... DKIM among them: the whole message is held */
	bool arc_on;                    /* ... ARC among them (RFC 8617): held too */
	const char *ids[SMTP_VERIFY_IDS_MAX]; /* the authserv-ids that are ours */
	size_t nids;
	struct dns_resolver *dns;
	char sid[24];
	char client[64];                /* the client's address, for the log */
	smtp_verify_cb cb;
	void *arg;

	struct spf_check *spf_check;
	bool spf_checked;
	enum spf_result spf;
	const char *spf_identity;       /* "mailfrom" or "helo" */
	char spf_sender[SMTP_VERIFY_SENDER_MAX];
	char spf_domain[SPF_NAME_MAX + 1];

	char *hdr;                      /* the held header section, CRLF after each line, */
	size_t hdr_len, hdr_cap;
	size_t rest_len;                /* ... then what followed it: the empty line (or the
					 * first body line), with DKIM the body */
	bool hdr_ended;                 /* a line ended it (blank or body) */
	bool hdr_handled;               /* smtp_verify_header_end() ran */
	bool too_big;
	bool too_big_for_dkim;          /* the message is over SMTP_VERIFY_HOLD_MAX, */
	bool held_too_much;             /* ... or all together over SMTP_VERIFY_HOLD_TOTAL */
	size_t body_counted;            /* what this one adds to smtp_verify_body_held */
	unsigned ndkim_fields;          /* DKIM-Signature fields in the header */
	unsigned narc_fields;           /* ARC-... fields (RFC 8617 §4.1) */

	size_t stage;                   /* the next of smtp_verify_stages */
	bool starting;                  /* a stage is being started: its answer at once
					 * goes on in smtp_verify_run, not called back */
	struct dkim_verify *dkim_verify;
	struct arc_verify *arc_verify;
	bool arc_checked;
	struct arc_result arc;          /* the chain's validation */
	struct dkim_key_source keys;    /* when own_keys: not DNS */
	bool own_keys;

	char from_domain[SPF_NAME_MAX + 1];
	struct dmarc_lookup *dmarc_lookup;
	bool dmarc_checked;
	struct dmarc_verdict verdict;

	struct authres_dkim dkim[SMTP_VERIFY_DKIM_MAX]; /* the verifier's results */
	struct smtp_verify_dkim dkim_text[SMTP_VERIFY_DKIM_MAX];
	const char *dkim_pass[SMTP_VERIFY_DKIM_MAX];    /* d= of those that passed */
	const char *dkim_temp[SMTP_VERIFY_DKIM_MAX];    /* ... not checked (DNS, size) */
	size_t ndkim, ndkim_pass, ndkim_temp;
	bool dkim_checked;

	char *kept;                     /* the held fields but those claiming our id */
	size_t kept_len;
	char *out;                      /* our field and the kept header */
	size_t out_len;
};

/* The body bytes every transaction holds for DKIM (one event loop). */
static size_t smtp_verify_body_held;

/* The host names of the servers that write Authentication-Results. */
static void smtp_verify_ids(struct smtp_verify *v, const struct conf *conf)
{
	for (size_t i = 0; i < conf->nservers && v->nids < SMTP_VERIFY_IDS_MAX; i++) {
		const struct conf_server *s = &conf->servers[i];
		bool dup = false;
		for (size_t k = 0; k < v->nids && !dup; k++)
			dup = str_ieq(v->ids[k], s->hostname);
		if (s->verify.set && !dup)
			v->ids[v->nids++] = s->hostname;
	}
}

struct smtp_verify *smtp_verify_new(const struct conf_server *srv, const struct conf *conf,
				    struct dns_resolver *dns, const char *sid, const char *client,
				    bool checks)
{
	const struct conf_verify *c = &srv->verify;
	bool full = checks && c->set && (c->spf || c->dkim || c->arc || c->dmarc != CONF_DMARC_NO);
	struct smtp_verify *v = xcalloc(1, sizeof *v);
	v->full = full; /* arc: see smtp_verify_stages */
	smtp_verify_ids(v, conf);
	if (v->nids == 0) { /* nobody here writes the field: nothing to clean */
		free(v);
		return NULL;
	}
	v->dkim_on = full && c->dkim;
	v->arc_on = full && c->arc;
	v->srv = srv;
	v->dns = dns;
	xsnprintf(v->sid, sizeof v->sid, "%s", sid); /* session ids are shorter */
	xsnprintf(v->client, sizeof v->client, "%s", client); /* ADDR_TEXT_SIZE at most */
	return v;
}

void smtp_verify_free(struct smtp_verify *v)
{
	if (!v)
		return;
	spf_check_cancel(v->spf_check);
	dmarc_lookup_cancel(v->dmarc_lookup);
	dkim_verify_cancel(v->dkim_verify);
	arc_verify_cancel(v->arc_verify);
	smtp_verify_body_held -= v->body_counted;
	free(v->hdr);
	free(v->kept);
	free(v->out);
	free(v);
}

/* ---- SPF at MAIL FROM ------------------------------------------------------ */

static void smtp_verify_spf_done(void *arg, const struct spf_outcome *o)
{
	struct smtp_verify *v = arg;
	char detail[LOG_VALUE_MAX], sender[LOG_VALUE_MAX];
	v->spf_check = NULL;
	v->spf_checked = true;
	v->spf = o->result;
	v->spf_identity = strcmp(o->identity, "helo") == 0 ? "helo" : "mailfrom";
	/* the identity as checked; one too long to keep is no authenticated
	 * domain for DMARC */
	if (!bsnprintf(v->spf_sender, sizeof v->spf_sender, "%s", o->sender) ||
	    !bsnprintf(v->spf_domain, sizeof v->spf_domain, "%s", o->domain)) {
		v->spf_sender[0] = v->spf_domain[0] = '\0';
		if (v->spf == SPF_PASS)
			v->spf = SPF_NONE;
	}
	log_info("event=spf session=%s server=%s client=%s result=%s identity=%s sender=\"%s\" "
		 "detail=\"%s\"", v->sid, v->srv->name, v->client, spf_result_name(v->spf),
		 v->spf_identity,
		 log_escape(sender, sizeof sender, o->sender, strlen(o->sender)),
		 log_escape(detail, sizeof detail, o->detail, strlen(o->detail)));
	metrics_count(METRIC_VERIFY_RESULTS,
		      METRIC_LABELS(v->srv->name, "spf", spf_result_name(v->spf)));
	if (v->cb)
		v->cb(v->arg);
}

static bool smtp_verify_client(const struct sockaddr_storage *ss, struct spf_request *req)
{
	if (ss->ss_family == AF_INET) {
		req->family = AF_INET;
		memcpy(req->ip, &((const struct sockaddr_in *)ss)->sin_addr, 4);
		return true;
	}
	if (ss->ss_family == AF_INET6) {
		req->family = AF_INET6;
		memcpy(req->ip, &((const struct sockaddr_in6 *)ss)->sin6_addr, 16);
		return true;
	}
	return false;
}

bool smtp_verify_mail(struct smtp_verify *v, const struct sockaddr_storage *client,
		      const char *sender, const char *helo, smtp_verify_cb cb, void *arg)
{
	if (!v || !v->full || !v->srv->verify.spf)
		return false;
	struct spf_request req = {.sender = sender, .helo = helo, .receiver = v->srv->hostname};
	if (!smtp_verify_client(client, &req))
		return false; /* no IP client (a test's socket pair): nothing to check */
	spf_check_cancel(v->spf_check);
	v->spf_check = NULL;
	v->spf_checked = false;
	v->cb = NULL; /* a result at once (cached) is not called back */
	struct spf_check *c = spf_check_start(v->dns, &req, smtp_verify_spf_done, v);
	if (!c)
		return false; /* done already */
	v->spf_check = c;
	v->cb = cb;
	v->arg = arg;
	return true;
}

/* ---- the header section ----------------------------------------------------- */

/* text and CRLF after what is held; the callers keep the bounds. */
static void smtp_verify_append(struct smtp_verify *v, const char *text, size_t len)
{
	size_t held = v->hdr_len + v->rest_len, need = held + len + 2;
	if (need > v->hdr_cap) {
		size_t cap = v->hdr_cap ? v->hdr_cap * 2 : 4096;
		while (cap < need)
			cap *= 2;
		if (cap > SMTP_VERIFY_HOLD_MAX) /* no doubling past the bound: one line over it */
			cap = need > SMTP_VERIFY_HOLD_MAX ? need : SMTP_VERIFY_HOLD_MAX;
		v->hdr = xrealloc(v->hdr, cap);
		v->hdr_cap = cap;
	}
	memcpy(v->hdr + held, text, len);
	memcpy(v->hdr + held + len, "\r\n", 2);
	if (v->hdr_ended)
		v->rest_len += len + 2;
	else
		v->hdr_len += len + 2;
}

static bool smtp_verify_hold(struct smtp_verify *v, const char *text, size_t len)
{
	if (v->too_big || v->hdr_len + len + 2 > SMTP_VERIFY_HEADER_MAX) {
		v->too_big = true; /* the rest of the section is read and dropped */
		return true;
	}
	smtp_verify_append(v, text, len);
	return true;
}

/* A body line while DKIM waits for the whole message.  The line that
 * crosses SMTP_VERIFY_HOLD_MAX is still held (one text line more, bounded
 * by the line reader); then the checks run without DKIM's answer
 * (smtp_verify_header_done) and the rest goes to the spool as it comes. */
static bool smtp_verify_hold_body(struct smtp_verify *v, const char *text, size_t len)
{
	if (!(v->dkim_on || v->arc_on) || v->too_big || v->too_big_for_dkim)
		return false; /* cannot happen: the session waits for the checks */
	smtp_verify_append(v, text, len);
	smtp_verify_body_held += len + 2;
	v->body_counted += len + 2;
	if (v->hdr_len + v->rest_len >= SMTP_VERIFY_HOLD_MAX)
		v->too_big_for_dkim = true;
	else if (smtp_verify_body_held >= SMTP_VERIFY_HOLD_TOTAL)
		v->too_big_for_dkim = v->held_too_much = true;
	return true;
}

/* A field's first line: a name of printable characters, then ':'
 * (RFC 5322 §2.2). */
static bool smtp_verify_field_start(const char *text, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)text[i];
		if (c == ':')
			return i > 0;
		if (c <= ' ' || c > '~')
			return false;
	}
	return false;
}

bool smtp_verify_header_line(struct smtp_verify *v, const char *text, size_t len)
{
	if (!v || v->hdr_handled)
		return false;
	if (v->hdr_ended)
		return smtp_verify_hold_body(v, text, len);
	bool folded = len > 0 && (text[0] == ' ' || text[0] == '\t');
	if (len > 0 && ((folded && v->hdr_len > 0) || smtp_verify_field_start(text, len)))
		return smtp_verify_hold(v, text, len);
	/* the empty line, or no field: the body starts without one; either
	 * way this line goes after the header */
	v->hdr_ended = true;
	smtp_verify_append(v, text, len);
	return true;
}

bool smtp_verify_header_handled(const struct smtp_verify *v)
{
	return v && v->hdr_handled;
}

bool smtp_verify_header_done(const struct smtp_verify *v)
{
	return v && v->hdr_ended && !v->hdr_handled &&
	       (!(v->dkim_on || v->arc_on) || v->too_big || v->too_big_for_dkim);
}

bool smtp_verify_header_too_big(const struct smtp_verify *v)
{
	return v && v->too_big;
}

/* The end of the field starting at i (after its last CRLF). */
static size_t smtp_verify_field_end(const char *h, size_t len, size_t i)
{
	for (;;) {
		const char *crlf = memmem(h + i, len - i, "\r\n", 2);
		if (!crlf)
			return len;
		i = (size_t)(crlf - h) + 2;
		if (i >= len || (h[i] != ' ' && h[i] != '\t'))
			return i;
	}
}

static bool smtp_verify_is_from(const char *f, size_t n, size_t *value)
{
	if (n < 5 || strncasecmp(f, "From", 4) != 0)
		return false;
	size_t i = 4;
	while (i < n && (f[i] == ' ' || f[i] == '\t'))
		i++;
	if (i >= n || f[i] != ':')
		return false;
	*value = i + 1;
	return true;
}

static bool smtp_verify_is_dkim_signature(const char *f, size_t n)
{
	static const char name[] = "DKIM-Signature";
	size_t i = sizeof name - 1;
	if (n <= i || strncasecmp(f, name, i) != 0)
		return false;
	while (i < n && (f[i] == ' ' || f[i] == '\t'))
		i++;
	return i < n && f[i] == ':';
}

static bool smtp_verify_claimed(const struct smtp_verify *v, const char *f, size_t n)
{
	for (size_t i = 0; i < v->nids; i++)
		if (authres_claims(f, n, v->ids[i]))
			return true;
	return false;
}

/* Keep the fields that do not claim our authserv-id; take the From
 * domain when there is exactly one From field with one mailbox. */
static void smtp_verify_scan(struct smtp_verify *v)
{
	char *kept = v->kept = xmalloc(v->hdr_len + 1);
	unsigned froms = 0, removed = 0;
	size_t i = 0, k = 0;
	bool from_ok = false;
	while (i < v->hdr_len) {
		size_t end = smtp_verify_field_end(v->hdr, v->hdr_len, i), value;
		const char *f = v->hdr + i;
		size_t n = end - i;
		if (smtp_verify_claimed(v, f, n - 2)) {
			removed++;
		} else {
			memcpy(kept + k, f, n);
			k += n;
		}
		if (smtp_verify_is_dkim_signature(f, n))
			v->ndkim_fields++;
		if (n > 4 && strncasecmp(f, "ARC-", 4) == 0)
			v->narc_fields++;
		if (smtp_verify_is_from(f, n - 2, &value) && ++froms == 1)
			from_ok = dmarc_from_domain(f + value, n - 2 - value, v->from_domain,
						    sizeof v->from_domain);
		i = end;
	}
	if (froms != 1 || !from_ok) /* none, several, or no domain: no DMARC */
		v->from_domain[0] = '\0';
	v->kept_len = k;
	if (removed)
		log_info("event=authres-removed session=%s server=%s client=%s count=%u", v->sid,
			 v->srv->name, v->client, removed);
}

static unsigned smtp_verify_sample(void)
{
	unsigned char b[4];
	if (RAND_bytes(b, sizeof b) != 1)
		return 0; /* no randomness: the whole policy applies */
	return (((unsigned)b[0] << 24) | ((unsigned)b[1] << 16) | ((unsigned)b[2] << 8) | b[3]) %
	       100;
}

/* Our field on top of the kept header. */
static void smtp_verify_compose(struct smtp_verify *v)
{
	const char *kept = v->kept;
	size_t kept_len = v->kept_len;
	const struct conf_verify *c = &v->srv->verify;
	struct authres_input in = {
		.authserv_id = v->srv->hostname,
		.spf_checked = v->spf_checked,
		.spf = v->spf,
		.spf_identity = v->spf_identity ? v->spf_identity : "mailfrom",
		.spf_sender = v->spf_identity && strcmp(v->spf_identity, "helo") == 0 ? v->spf_domain
										: v->spf_sender,
		.dkim = v->dkim,
		.ndkim = v->ndkim,
		.dkim_checked = v->dkim_checked,
		.dmarc_checked = v->dmarc_checked && c->dmarc != CONF_DMARC_NO,
		.dmarc = &v->verdict,
		.from_domain = v->from_domain[0] ? v->from_domain : NULL,
		.arc = v->arc_checked ? &v->arc : NULL,
	};
	char field[AUTHRES_MAX];
	if (!v->full) {
		field[0] = '\0'; /* only cleaned: the checks are not this client's */
	} else if (!authres_build(&in, field, sizeof field)) {
		/* cannot happen with our own bounded values; no field rather
		 * than a cut one */
		log_err("event=authres-error session=%s reason=too-long", v->sid);
		field[0] = '\0';
	}
	size_t flen = strlen(field);
	v->out = xmalloc(flen + kept_len + 1);
	memcpy(v->out, field, flen);
	memcpy(v->out + flen, kept, kept_len);
	v->out_len = flen + kept_len;
}

/* ---- the stages at the end: DKIM, DMARC ------------------------------------ */

static bool smtp_verify_dkim_start(struct smtp_verify *v);
static bool smtp_verify_arc_start(struct smtp_verify *v);
static bool smtp_verify_dmarc_start(struct smtp_verify *v);

/* The checks that need the header section (or the whole message), in
 * order; each returns true when it waits for an answer, which then calls
 * smtp_verify_stage_done().  DMARC comes last: it decides on what the
 * others found.  ARC's result goes into our field, where the sealer of
 * forwarded mail reads it back (cv=). */
static bool (*const smtp_verify_stages[])(struct smtp_verify *v) = {
	smtp_verify_dkim_start,
	smtp_verify_arc_start,
	smtp_verify_dmarc_start,
};

/* The stages from the next one on, then our field.  true: one waits. */
static bool smtp_verify_run(struct smtp_verify *v)
{
	while (v->stage < ARRAY_LEN(smtp_verify_stages)) {
		v->starting = true;
		bool waits = smtp_verify_stages[v->stage++](v);
		v->starting = false;
		if (waits)
			return true;
	}
	smtp_verify_compose(v);
	return false;
}

/* A stage has its answer: at once (smtp_verify_run goes on) or later
 * (the next stages here, then the session's callback). */
static void smtp_verify_stage_done(struct smtp_verify *v)
{
	if (v->starting)
		return;
	if (!smtp_verify_run(v) && v->cb)
		v->cb(v->arg);
}

static enum authres_dkim_result smtp_verify_dkim_result(enum dkim_status st)
{
	switch (st) {
	case DKIM_PASS: return AUTHRES_DKIM_PASS;
	case DKIM_FAIL: return AUTHRES_DKIM_FAIL;
	case DKIM_NEUTRAL: return AUTHRES_DKIM_NEUTRAL;
	case DKIM_POLICY: return AUTHRES_DKIM_POLICY;
	case DKIM_TEMPERROR: return AUTHRES_DKIM_TEMPERROR;
	case DKIM_PERMERROR: return AUTHRES_DKIM_PERMERROR;
	}
	return AUTHRES_DKIM_PERMERROR;
}

static void smtp_verify_dkim_log_one(const struct smtp_verify *v, const struct authres_dkim *d)
{
	char reason[LOG_VALUE_MAX];
	const char *r = d->reason ? d->reason : "";
	log_info("event=dkim session=%s server=%s client=%s result=%s domain=%s selector=%s "
		 "algorithm=%s reason=\"%s\"", v->sid, v->srv->name, v->client,
		 authres_dkim_result_name(d->result), d->domain ? d->domain : "-",
		 d->selector ? d->selector : "-", d->algorithm ? d->algorithm : "-",
		 log_escape(reason, sizeof reason, r, strlen(r)));
	metrics_count(METRIC_VERIFY_RESULTS,
		      METRIC_LABELS(v->srv->name, "dkim", authres_dkim_result_name(d->result)));
}

static void smtp_verify_dkim_log(const struct smtp_verify *v)
{
	for (size_t i = 0; i < v->ndkim; i++)
		smtp_verify_dkim_log_one(v, &v->dkim[i]);
}

static void smtp_verify_dkim_done(void *arg, const struct dkim_result *res, size_t n)
{
	struct smtp_verify *v = arg;
	struct authres_dkim r[SMTP_VERIFY_DKIM_MAX];
	size_t k = 0;
	v->dkim_verify = NULL;
	for (size_t i = 0; i < n && k < SMTP_VERIFY_DKIM_MAX; i++, k++)
		r[k] = (struct authres_dkim){
			.domain = res[i].domain[0] ? res[i].domain : NULL,
			.selector = res[i].selector[0] ? res[i].selector : NULL,
			.algorithm = res[i].algorithm[0] ? res[i].algorithm : NULL,
			.result = smtp_verify_dkim_result(res[i].status),
			.reason = res[i].reason[0] ? res[i].reason : NULL,
			.header_b = res[i].header_b[0] ? res[i].header_b : NULL,
		};
	smtp_verify_set_dkim(v, r, k);
	smtp_verify_dkim_log(v);
	smtp_verify_stage_done(v);
}

/* Printable ASCII without white space, as d= and s= are (RFC 6376 §3.5):
 * anything else stays out of the field and the log. */
static bool smtp_verify_token(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (s[i] <= ' ' || s[i] > '~' || s[i] == ';')
			return false;
	return n > 0;
}

/* d= and s= of a DKIM-Signature field (name and value, CRLF included),
 * as far as they can be read: for a result that verified nothing. */
static void smtp_verify_dkim_ids(const char *f, size_t n, struct smtp_verify_dkim *t)
{
	const char *colon = memchr(f, ':', n);
	struct dkim_tags tags;
	char err[64];
	t->domain[0] = t->selector[0] = '\0';
	if (!colon ||
	    dkim_tags_parse(colon + 1, n - (size_t)(colon + 1 - f), &tags, err, sizeof err) < 0)
		return;
	const struct dkim_tag *d = dkim_tags_get(&tags, "d"), *s = dkim_tags_get(&tags, "s");
	if (d && d->value_len < sizeof t->domain && smtp_verify_token(d->value, d->value_len)) {
		/* fits: its length is checked above */
		xsnprintf(t->domain, sizeof t->domain, "%.*s", (int)d->value_len, d->value);
		(void)str_lower(t->domain); /* as the verifier reports d= */
	}
	if (s && s->value_len < sizeof t->selector && smtp_verify_token(s->value, s->value_len))
		xsnprintf(t->selector, sizeof t->selector, "%.*s", (int)s->value_len,
			  s->value); /* fits, as d= */
}

/* The message is over SMTP_VERIFY_HOLD_MAX (or all held together over
 * SMTP_VERIFY_HOLD_TOTAL): each signature is neutral,
 * not verified (RFC 6376 §6.3: a verifier may ignore signatures, and
 * then treats the message as it would an unsigned one for the signer). */
static void smtp_verify_dkim_too_large(struct smtp_verify *v)
{
	struct authres_dkim r[SMTP_VERIFY_DKIM_MAX];
	struct smtp_verify_dkim ids[SMTP_VERIFY_DKIM_MAX];
	size_t k = 0, i = 0;
	while (i < v->hdr_len && k < SMTP_VERIFY_DKIM_MAX) {
		size_t end = smtp_verify_field_end(v->hdr, v->hdr_len, i);
		if (smtp_verify_is_dkim_signature(v->hdr + i, end - i)) {
			smtp_verify_dkim_ids(v->hdr + i, end - i, &ids[k]);
			r[k] = (struct authres_dkim){
				.domain = ids[k].domain[0] ? ids[k].domain : NULL,
				.selector = ids[k].selector[0] ? ids[k].selector : NULL,
				.result = AUTHRES_DKIM_NEUTRAL,
				.reason = v->held_too_much ? "too much held for verification"
							   : "message too large to verify",
			};
			k++;
		}
		i = end;
	}
	smtp_verify_set_dkim(v, r, k);
	/* not checked is not failed: DMARC must not reject for what was never
	 * verified (it counts these as it counts a DNS failure) */
	for (size_t j = 0; j < v->ndkim; j++)
		if (v->dkim[j].domain && v->ndkim_temp < SMTP_VERIFY_DKIM_MAX)
			v->dkim_temp[v->ndkim_temp++] = v->dkim[j].domain;
	smtp_verify_dkim_log(v);
}

/* DKIM over the message as it came (the fields claiming our id too:
 * a signature may cover them), the hashes on a worker, the keys from
 * DNS.  Held in memory rather than read back from the spool: the spool
 * file is written front to back and our field must come first, so the
 * held message goes there once, after it; SMTP_VERIFY_HOLD_MAX bounds
 * what one session holds. */
static bool smtp_verify_dkim_start(struct smtp_verify *v)
{
	if (!v->dkim_on)
		return false;
	if (v->too_big || v->too_big_for_dkim) { /* (a header over its bound is refused) */
		smtp_verify_dkim_too_large(v);
	} else if (v->ndkim_fields == 0) {
		smtp_verify_set_dkim(v, NULL, 0); /* dkim=none, nothing to hash */
	} else {
		size_t len = v->hdr_len + v->rest_len;
		v->dkim_verify = v->own_keys ? dkim_verify_start_with(&v->keys, v->hdr, len, time(NULL),
								      smtp_verify_dkim_done, v)
					     : dkim_verify_start(v->dns, v->hdr, len, time(NULL),
								 smtp_verify_dkim_done, v);
		return v->dkim_verify != NULL;
	}
	return false;
}

static void smtp_verify_arc_done(void *arg, const struct arc_result *r)
{
	struct smtp_verify *v = arg;
	char reason[LOG_VALUE_MAX];
	v->arc_verify = NULL;
	v->arc = *r;
	v->arc_checked = true;
	log_info("event=arc session=%s server=%s client=%s result=%s instances=%u domain=%s "
		 "reason=\"%s\"", v->sid, v->srv->name, v->client, arc_status_name(r->status),
		 r->instances, r->domain[0] ? r->domain : "-",
		 log_escape(reason, sizeof reason, r->reason, strlen(r->reason)));
	metrics_count(METRIC_VERIFY_RESULTS,
		      METRIC_LABELS(v->srv->name, "arc", arc_status_name(r->status)));
	smtp_verify_stage_done(v);
}

/* ARC (RFC 8617 §5.2) over the message as it came, like DKIM, with the
 * same keys.  One not held whole (over SMTP_VERIFY_HOLD_MAX, or too much
 * held at once) is not validated: no arc= result, and the sealer does
 * not seal a chain it did not validate. */
static bool smtp_verify_arc_start(struct smtp_verify *v)
{
	if (!v->arc_on)
		return false;
	if (v->too_big || v->too_big_for_dkim) {
		log_info("event=arc session=%s server=%s client=%s result=- reason=\"%s\"", v->sid,
			 v->srv->name, v->client,
			 v->held_too_much ? "too much held for verification"
					  : "message too large to validate");
		return false;
	}
	if (v->narc_fields == 0) { /* arc=none: nothing to hash or look up */
		struct arc_result none = {.status = ARC_NONE};
		smtp_verify_arc_done(v, &none);
		return false;
	}
	size_t len = v->hdr_len + v->rest_len;
	v->arc_verify = v->own_keys ? arc_verify_start_with(&v->keys, v->hdr, len,
							    smtp_verify_arc_done, v)
				    : arc_verify_start(v->dns, v->hdr, len, smtp_verify_arc_done, v);
	return v->arc_verify != NULL;
}

static void smtp_verify_dmarc_decide(struct smtp_verify *v, const struct dmarc_discovery *d)
{
	struct dmarc_input in = {
		.from_domain = v->from_domain[0] ? v->from_domain : NULL,
		.spf = v->spf_checked ? v->spf : SPF_NONE,
		.spf_domain = v->spf_domain,
		.dkim_pass = v->dkim_pass,
		.ndkim_pass = v->ndkim_pass,
		.dkim_temperror = v->dkim_temp,
		.ndkim_temperror = v->ndkim_temp,
		.sample = smtp_verify_sample(),
	};
	dmarc_evaluate(&in, d, &v->verdict);
	v->dmarc_checked = true;
	metrics_count(METRIC_VERIFY_RESULTS,
		      METRIC_LABELS(v->srv->name, "dmarc", dmarc_result_name(v->verdict.result)));
	log_info("event=dmarc session=%s server=%s client=%s from_domain=%s result=%s policy=%s "
		 "disposition=%s spf_aligned=%s dkim_aligned=%s", v->sid, v->srv->name, v->client,
		 in.from_domain ? in.from_domain : "-",
		 dmarc_result_name(v->verdict.result), dmarc_policy_name(v->verdict.policy),
		 dmarc_disposition_name(v->verdict.disposition), v->verdict.spf_aligned ? "yes" : "no",
		 v->verdict.dkim_aligned ? "yes" : "no");
}

static void smtp_verify_dmarc_found(void *arg, const struct dmarc_discovery *d)
{
	struct smtp_verify *v = arg;
	v->dmarc_lookup = NULL;
	smtp_verify_dmarc_decide(v, d);
	smtp_verify_stage_done(v);
}

static bool smtp_verify_dmarc_start(struct smtp_verify *v)
{
	if (v->srv->verify.dmarc == CONF_DMARC_NO)
		return false;
	if (!v->from_domain[0]) {
		struct dmarc_discovery d = {0};
		smtp_verify_dmarc_decide(v, &d); /* permerror: no single From domain */
		return false;
	}
	v->dmarc_lookup = dmarc_lookup_start(v->dns, v->from_domain, smtp_verify_dmarc_found, v);
	return v->dmarc_lookup != NULL;
}

bool smtp_verify_header_end(struct smtp_verify *v, smtp_verify_cb cb, void *arg)
{
	v->hdr_ended = v->hdr_handled = true;
	smtp_verify_scan(v);
	v->cb = cb;
	v->arg = arg;
	if (!v->full) {
		smtp_verify_compose(v);
		return false;
	}
	return smtp_verify_run(v);
}

const char *smtp_verify_header_out(struct smtp_verify *v, size_t *len)
{
	*len = v->out_len;
	return v->out ? v->out : "";
}

const char *smtp_verify_rest_out(struct smtp_verify *v, size_t *len)
{
	*len = v->rest_len;
	return v->rest_len ? v->hdr + v->hdr_len : "";
}

void smtp_verify_set_key_source(struct smtp_verify *v, const struct dkim_key_source *src)
{
	if (!v)
		return;
	v->keys = *src;
	v->own_keys = true;
}

/* A copy of s into out; a value that does not fit is left out (NULL)
 * rather than cut. */
static const char *smtp_verify_keep(char *out, size_t outsz, const char *s)
{
	return s && bsnprintf(out, outsz, "%s", s) ? out : NULL;
}

void smtp_verify_set_dkim(struct smtp_verify *v, const struct authres_dkim *r, size_t n)
{
	if (!v)
		return;
	v->dkim_checked = true;
	v->ndkim = v->ndkim_pass = v->ndkim_temp = 0;
	for (size_t i = 0; i < n && v->ndkim < SMTP_VERIFY_DKIM_MAX; i++) {
		struct smtp_verify_dkim *t = &v->dkim_text[v->ndkim];
		struct authres_dkim *d = &v->dkim[v->ndkim++];
		*d = r[i];
		d->domain = smtp_verify_keep(t->domain, sizeof t->domain, r[i].domain);
		d->selector = smtp_verify_keep(t->selector, sizeof t->selector, r[i].selector);
		d->algorithm = smtp_verify_keep(t->algorithm, sizeof t->algorithm, r[i].algorithm);
		d->reason = smtp_verify_keep(t->reason, sizeof t->reason, r[i].reason);
		d->header_b = NULL;
		if (r[i].header_b) { /* its first characters only (RFC 8601 §2.7.1: 8 suffice) */
			xsnprintf(t->header_b, sizeof t->header_b, "%.12s", r[i].header_b);
			d->header_b = t->header_b;
		}
		if (d->result == AUTHRES_DKIM_PASS && d->domain)
			v->dkim_pass[v->ndkim_pass++] = d->domain;
		if (d->result == AUTHRES_DKIM_TEMPERROR && d->domain)
			v->dkim_temp[v->ndkim_temp++] = d->domain;
	}
}

void smtp_verify_result(const struct smtp_verify *v, struct smtp_verify_result *out)
{
	memset(out, 0, sizeof *out);
	if (!v)
		return;
	out->spf_checked = v->spf_checked;
	out->spf = v->spf;
	out->dmarc_checked = v->dmarc_checked;
	out->dmarc_enforce = v->srv->verify.dmarc == CONF_DMARC_ENFORCE;
	out->dmarc = v->verdict;
	out->from_domain = v->from_domain;
}

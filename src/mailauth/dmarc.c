/* dmarc: DMARC (RFC 7489) records, organizational domains (libpsl),
 * alignment, policy discovery on c-ares and the decision.  Records are
 * untrusted bytes from DNS: bounded, parsed whole, unknown tags ignored
 * (§6.3). */
#include "mailauth/dmarc.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <libpsl.h>

#include "lib/util.h"
#include "net/dns.h"

const char *dmarc_policy_name(enum dmarc_policy p)
{
	switch (p) {
	case DMARC_POLICY_NONE: return "none";
	case DMARC_POLICY_QUARANTINE: return "quarantine";
	case DMARC_POLICY_REJECT: return "reject";
	}
	return "none";
}

const char *dmarc_result_name(enum dmarc_result r)
{
	switch (r) {
	case DMARC_RESULT_NONE: return "none";
	case DMARC_RESULT_PASS: return "pass";
	case DMARC_RESULT_FAIL: return "fail";
	case DMARC_RESULT_TEMPERROR: return "temperror";
	case DMARC_RESULT_PERMERROR: return "permerror";
	}
	return "permerror";
}

const char *dmarc_disposition_name(enum dmarc_disposition d)
{
	switch (d) {
	case DMARC_DISP_NONE: return "none";
	case DMARC_DISP_QUARANTINE: return "quarantine";
	case DMARC_DISP_REJECT: return "reject";
	}
	return "none";
}

/* ---- the record (§6.3, §6.4) -------------------------------------------- */

struct dmarc_tag {
	const char *name, *value;
	size_t nlen, vlen;
};

static void dmarc_trim(const char **s, size_t *n)
{
	while (*n > 0 && (**s == ' ' || **s == '\t')) {
		(*s)++;
		(*n)--;
	}
	while (*n > 0 && ((*s)[*n - 1] == ' ' || (*s)[*n - 1] == '\t'))
		(*n)--;
}

/* The next "name=value" of text at *pos (';'-separated); false at the end
 * or on a part without '='. */
static bool dmarc_next_tag(const char *text, size_t len, size_t *pos, struct dmarc_tag *t,
			   bool *bad)
{
	while (*pos < len) {
		const char *part = text + *pos;
		const char *semi = memchr(part, ';', len - *pos);
		size_t n = semi ? (size_t)(semi - part) : len - *pos;
		*pos += n + (semi ? 1 : 0);
		dmarc_trim(&part, &n);
		if (n == 0)
			continue; /* "a=b; ;" or a trailing ';' */
		const char *eq = memchr(part, '=', n);
		if (!eq) {
			*bad = true;
			return false;
		}
		t->name = part;
		t->nlen = (size_t)(eq - part);
		t->value = eq + 1;
		t->vlen = n - t->nlen - 1;
		dmarc_trim(&t->name, &t->nlen);
		dmarc_trim(&t->value, &t->vlen);
		return true;
	}
	return false;
}

static bool dmarc_tag_is(const struct dmarc_tag *t, const char *name)
{
	return t->nlen == strlen(name) && strncasecmp(t->name, name, t->nlen) == 0;
}

static bool dmarc_value_is(const struct dmarc_tag *t, const char *v)
{
	return t->vlen == strlen(v) && strncasecmp(t->value, v, t->vlen) == 0;
}

static bool dmarc_policy_value(const struct dmarc_tag *t, enum dmarc_policy *out)
{
	if (dmarc_value_is(t, "none"))
		*out = DMARC_POLICY_NONE;
	else if (dmarc_value_is(t, "quarantine"))
		*out = DMARC_POLICY_QUARANTINE;
	else if (dmarc_value_is(t, "reject"))
		*out = DMARC_POLICY_REJECT;
	else
		return false;
	return true;
}

static void dmarc_align_value(const struct dmarc_tag *t, enum dmarc_align *out)
{
	if (dmarc_value_is(t, "s"))
		*out = DMARC_ALIGN_STRICT;
	else if (dmarc_value_is(t, "r"))
		*out = DMARC_ALIGN_RELAXED;
	/* anything else: the default stays (unknown values are ignored) */
}

static void dmarc_pct_value(const struct dmarc_tag *t, unsigned *out)
{
	unsigned v = 0;
	if (t->vlen == 0 || t->vlen > 3)
		return;
	for (size_t i = 0; i < t->vlen; i++) {
		if (!isdigit((unsigned char)t->value[i]))
			return;
		v = v * 10 + (unsigned)(t->value[i] - '0');
	}
	if (v <= 100)
		*out = v;
}

struct dmarc_parse {
	bool p_ok, sp_seen, sp_ok, rua;
};

static void dmarc_tag(const struct dmarc_tag *t, struct dmarc_record *r, struct dmarc_parse *st)
{
	if (dmarc_tag_is(t, "p")) {
		st->p_ok = dmarc_policy_value(t, &r->p);
	} else if (dmarc_tag_is(t, "sp")) {
		st->sp_seen = true;
		st->sp_ok = dmarc_policy_value(t, &r->sp);
	} else if (dmarc_tag_is(t, "adkim")) {
		dmarc_align_value(t, &r->adkim);
	} else if (dmarc_tag_is(t, "aspf")) {
		dmarc_align_value(t, &r->aspf);
	} else if (dmarc_tag_is(t, "pct")) {
		dmarc_pct_value(t, &r->pct);
	} else if (dmarc_tag_is(t, "rua")) {
		st->rua = t->vlen > 0 && memchr(t->value, ':', t->vlen) != NULL;
	}
}

bool dmarc_record_parse(const char *text, size_t len, struct dmarc_record *rec, char *why,
			size_t whysz)
{
	struct dmarc_record r = {.pct = 100};
	struct dmarc_parse st = {0};
	struct dmarc_tag t;
	size_t pos = 0;
	bool bad = false;
	if (len > DMARC_RECORD_MAX || memchr(text, '\0', len)) {
		errfmt(why, whysz, "malformed record");
		return false;
	}
	/* §6.4: v=DMARC1 first, its value exactly so */
	if (!dmarc_next_tag(text, len, &pos, &t, &bad) || !dmarc_tag_is(&t, "v") ||
	    t.vlen != 6 || memcmp(t.value, "DMARC1", 6) != 0) {
		errfmt(why, whysz, "not a DMARC record");
		return false;
	}
	while (dmarc_next_tag(text, len, &pos, &t, &bad))
		dmarc_tag(&t, &r, &st);
	if (bad) {
		errfmt(why, whysz, "a part without '='");
		return false;
	}
	if (!st.sp_seen)
		r.sp = r.p;
	if (!st.p_ok || (st.sp_seen && !st.sp_ok)) {
		/* §6.6.3 step 6: with a report address, p=none; else unusable */
		if (!st.rua) {
			errfmt(why, whysz, "no valid p=");
			return false;
		}
		r.p = r.sp = DMARC_POLICY_NONE;
	}
	*rec = r;
	return true;
}

/* ---- the From domain (RFC 7489 §6.6.1) ------------------------------------ */

/* The address part of a From value: between the last '<' and its '>',
 * or the whole value; comments and quoted strings skipped.  false when a
 * ',' outside quotes says there are several mailboxes. */
static bool dmarc_from_addr(const char *v, size_t len, const char **addr, size_t *alen)
{
	bool quoted = false;
	unsigned depth = 0;
	const char *lt = NULL, *gt = NULL;
	for (size_t i = 0; i < len; i++) {
		char c = v[i];
		if (c == '\\' && (quoted || depth)) {
			i++;
		} else if (quoted) {
			quoted = c != '"';
		} else if (c == '(') {
			depth++;
		} else if (c == ')' && depth) {
			depth--;
		} else if (depth) {
			continue;
		} else if (c == '"') {
			quoted = true;
		} else if (c == ',') {
			return false;
		} else if (c == '<') {
			lt = v + i + 1;
			gt = NULL;
		} else if (c == '>' && lt && !gt) {
			gt = v + i;
		}
	}
	if (lt && !gt)
		return false;
	*addr = lt ? lt : v;
	*alen = lt ? (size_t)(gt - lt) : len;
	return true;
}

bool dmarc_from_domain(const char *value, size_t len, char *out, size_t outsz)
{
	const char *addr;
	size_t alen;
	if (!dmarc_from_addr(value, len, &addr, &alen))
		return false;
	const char *at = NULL;
	for (size_t i = 0; i < alen; i++)
		if (addr[i] == '@')
			at = addr + i;
	if (!at)
		return false;
	const char *d = at + 1, *end = addr + alen;
	while (d < end && (*d == ' ' || *d == '\t' || *d == '\r' || *d == '\n'))
		d++;
	size_t n = 0;
	while (d + n < end && (isalnum((unsigned char)d[n]) || d[n] == '-' || d[n] == '.' ||
			       d[n] == '_'))
		n++;
	for (const char *rest = d + n; rest < end; rest++) /* only space or a comment after */
		if (*rest != ' ' && *rest != '\t' && *rest != '\r' && *rest != '\n' && *rest != '(')
			return false;
		else if (*rest == '(')
			break;
	if (n == 0 || n > SPF_NAME_MAX || n >= outsz || d[n - 1] == '.' || d[0] == '.')
		return false;
	memcpy(out, d, n);
	out[n] = '\0';
	str_lower(out);
	return strchr(out, '.') != NULL;
}

/* ---- organizational domains and alignment ---------------------------------- */

static const psl_ctx_t *dmarc_psl(void)
{
	/* loaded once on first use (the loop thread): the system's list,
	 * else the one compiled into libpsl */
	static const psl_ctx_t *psl;
	if (!psl)
		psl = psl_latest(NULL);
	if (!psl)
		psl = psl_builtin();
	return psl;
}

bool dmarc_org_domain(const char *domain, char *out, size_t outsz)
{
	char lower[SPF_NAME_MAX + 2];
	if (!bsnprintf(lower, sizeof lower, "%s", domain))
		return false;
	str_lower(lower);
	size_t n = strlen(lower);
	if (n > 0 && lower[n - 1] == '.')
		lower[n - 1] = '\0';
	const psl_ctx_t *psl = dmarc_psl();
	const char *org = psl ? psl_registrable_domain(psl, lower) : NULL;
	return org && bsnprintf(out, outsz, "%s", org);
}

bool dmarc_aligned(const char *a, const char *b, enum dmarc_align mode)
{
	if (!a || !b || !*a || !*b)
		return false;
	if (strcasecmp(a, b) == 0)
		return true;
	if (mode == DMARC_ALIGN_STRICT)
		return false;
	char oa[SPF_NAME_MAX + 1], ob[SPF_NAME_MAX + 1];
	return dmarc_org_domain(a, oa, sizeof oa) && dmarc_org_domain(b, ob, sizeof ob) &&
	       strcmp(oa, ob) == 0;
}

/* ---- the decision (§6.6.2, §6.6.4) ------------------------------------------- */

static enum dmarc_disposition dmarc_lowered(enum dmarc_policy p)
{
	return p == DMARC_POLICY_REJECT ? DMARC_DISP_QUARANTINE : DMARC_DISP_NONE;
}

static enum dmarc_disposition dmarc_applied(enum dmarc_policy p)
{
	return p == DMARC_POLICY_REJECT ? DMARC_DISP_REJECT
	       : p == DMARC_POLICY_QUARANTINE ? DMARC_DISP_QUARANTINE
	       : DMARC_DISP_NONE;
}

/* Did an identifier aligned with the From domain go unchecked for a DNS
 * failure?  Then the message might pass once DNS answers: no failure is
 * decided (RFC 7208 §2.6.6 and RFC 6376 §6.1.2 make those temporary). */
static bool dmarc_unsure(const struct dmarc_input *in, const struct dmarc_record *r)
{
	if (in->spf == SPF_TEMPERROR && in->spf_domain &&
	    dmarc_aligned(in->spf_domain, in->from_domain, r->aspf))
		return true;
	for (size_t i = 0; i < in->ndkim_temperror; i++)
		if (dmarc_aligned(in->dkim_temperror[i], in->from_domain, r->adkim))
			return true;
	return false;
}

void dmarc_evaluate(const struct dmarc_input *in, const struct dmarc_discovery *d,
		    struct dmarc_verdict *out)
{
	memset(out, 0, sizeof *out);
	if (!in->from_domain || !*in->from_domain) {
		out->result = DMARC_RESULT_PERMERROR;
		return;
	}
	if (d->temperror) {
		out->result = DMARC_RESULT_TEMPERROR;
		return;
	}
	if (!d->found) {
		out->result = DMARC_RESULT_NONE;
		return;
	}
	const struct dmarc_record *r = &d->rec;
	/* §4.2: SPF counts when it passed for an aligned domain */
	out->spf_aligned = in->spf == SPF_PASS && dmarc_aligned(in->spf_domain, in->from_domain,
							       r->aspf);
	for (size_t i = 0; i < in->ndkim_pass && !out->dkim_aligned; i++)
		out->dkim_aligned = dmarc_aligned(in->dkim_pass[i], in->from_domain, r->adkim);
	out->policy = d->at_org ? r->sp : r->p;
	if (out->spf_aligned || out->dkim_aligned) {
		out->result = DMARC_RESULT_PASS;
		return;
	}
	if (dmarc_unsure(in, r)) {
		out->result = DMARC_RESULT_TEMPERROR;
		return;
	}
	out->result = DMARC_RESULT_FAIL;
	out->disposition = in->sample < r->pct ? dmarc_applied(out->policy)
					       : dmarc_lowered(out->policy);
}

/* ---- policy discovery (§6.6.3) ------------------------------------------------ */

struct dmarc_lookup {
	struct dns_resolver *dns;
	dmarc_lookup_cb cb;
	void *arg;
	char from[SPF_NAME_MAX + 1];
	char org[SPF_NAME_MAX + 1]; /* "" when FROM is its own organizational domain */
	bool asked_org;
	bool want_ask;          /* a name is to be asked next */
	bool waiting;           /* a query is in flight */
	bool done;
	bool running;           /* inside dmarc_drive: answers only record */
	dns_query_id query;
	struct dmarc_discovery result;
};

/* The one usable DMARC record among the TXT records, if exactly one. */
static bool dmarc_pick(const struct dns_txt *txt, size_t n, struct dmarc_record *rec)
{
	size_t found = 0;
	struct dmarc_record r = {0};
	char why[64];
	for (size_t i = 0; i < n; i++) {
		if (txt[i].len < 8 || strncmp(txt[i].text, "v=DMARC1", 8) != 0)
			continue; /* §6.6.3 step 3: other records are discarded */
		found++;
		if (found == 1 && !dmarc_record_parse(txt[i].text, txt[i].len, &r, why, sizeof why))
			return false;
	}
	if (found != 1) /* none, or several: no DMARC processing (step 4) */
		return false;
	*rec = r;
	return true;
}

static bool dmarc_drive(struct dmarc_lookup *l);

static void dmarc_answer(void *arg, enum dns_status st, const struct dns_txt *txt, size_t n,
			 uint32_t ttl)
{
	struct dmarc_lookup *l = arg;
	l->waiting = false;
	l->query = 0;
	if (st == DNS_TIMEOUT || st == DNS_ERROR) {
		l->result.temperror = true;
		l->done = true;
	} else if (st == DNS_OK && dmarc_pick(txt, n, &l->result.rec)) {
		l->result.found = true;
		l->result.at_org = l->asked_org;
		l->done = true;
	} else if (!l->asked_org && l->org[0]) {
		l->asked_org = true;
		l->want_ask = true; /* step 5: the organizational domain's record */
	} else {
		l->done = true;
	}
	if (!l->running)
		(void)dmarc_drive(l); /* l may be gone now */
}

/* Ask what is to be asked; deliver and free l when done (true). */
static bool dmarc_drive(struct dmarc_lookup *l)
{
	l->running = true;
	while (!l->done && l->want_ask) {
		char name[SPF_NAME_MAX + 8];
		l->want_ask = false;
		if (!bsnprintf(name, sizeof name, "_dmarc.%s", l->asked_org ? l->org : l->from)) {
			l->done = true; /* a name too long to ask has no record */
			break;
		}
		l->waiting = true;
		dns_query_id id = dns_lookup_txt(l->dns, name, dmarc_answer, l);
		if (l->waiting) {
			l->query = id;
			break;
		}
	}
	l->running = false;
	if (!l->done)
		return false;
	l->cb(l->arg, &l->result);
	free(l);
	return true;
}

struct dmarc_lookup *dmarc_lookup_start(struct dns_resolver *dns, const char *from_domain,
					dmarc_lookup_cb cb, void *arg)
{
	struct dmarc_lookup *l = xcalloc(1, sizeof *l);
	l->dns = dns;
	l->cb = cb;
	l->arg = arg;
	if (!dns || !bsnprintf(l->from, sizeof l->from, "%s", from_domain)) {
		l->result.temperror = !dns;
		l->done = true;
	}
	if (dmarc_org_domain(from_domain, l->org, sizeof l->org) && str_ieq(l->org, from_domain))
		l->org[0] = '\0';
	l->want_ask = true;
	return dmarc_drive(l) ? NULL : l;
}

void dmarc_lookup_cancel(struct dmarc_lookup *l)
{
	if (!l)
		return;
	if (l->query)
		dns_cancel(l->dns, l->query);
	free(l);
}

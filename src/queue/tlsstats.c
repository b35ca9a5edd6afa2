/* tlsstats: per day and policy domain, the TLS outcomes of outbound
 * sessions (RFC 8460 §4.3, §4.4), bounded, and their text form. */
#include "queue/tlsstats.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "lib/strbuf.h"
#include "lib/util.h"

/* RFC 8460 §4.3: the result types posthorn can tell apart. */
static const char *const tlsstats_results[] = {
	"starttls-not-supported", "certificate-host-mismatch", "certificate-expired",
	"certificate-not-trusted", "validation-failure",      "tlsa-invalid",
	"dnssec-invalid",         "dane-required",            "sts-policy-fetch-error",
	"sts-policy-invalid",     "sts-webpki-invalid",
};

static const char *const tlsstats_types[] = {
	[TLSRPT_POLICY_STS] = "sts", [TLSRPT_POLICY_TLSA] = "tlsa",
	[TLSRPT_POLICY_NONE] = "no-policy-found",
};

bool tlsstats_result_known(const char *result)
{
	for (size_t i = 0; i < ARRAY_LEN(tlsstats_results); i++)
		if (strcmp(result, tlsstats_results[i]) == 0)
			return true;
	return false;
}

void tlsstats_init(struct tlsstats *s)
{
	memset(s, 0, sizeof *s);
}

void tlsstats_free(struct tlsstats *s)
{
	for (size_t i = 0; i < s->n; i++) {
		free(s->entries[i].failures);
		free(s->entries[i].policy);
	}
	free(s->entries);
	tlsstats_init(s);
}

bool tlsstats_day(time_t t, char day[TLSSTATS_DAY_MAX])
{
	struct tm tm;
	return gmtime_r(&t, &tm) && tm.tm_year >= -1900 && tm.tm_year <= 9999 - 1900 &&
	       strftime(day, TLSSTATS_DAY_MAX, "%Y-%m-%d", &tm) == TLSSTATS_DAY_MAX - 1;
}

/* A token of the state file: a host name, an address or a result type. */
static bool tlsstats_token_ok(const char *s, size_t max)
{
	size_t n = strlen(s);
	return n > 0 && n < max &&
	       strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:") == n;
}

static bool tlsstats_optional_ok(const char *s)
{
	return !s || tlsstats_token_ok(s, TLSSTATS_IP_MAX);
}

static struct tlsstats_entry *tlsstats_find(struct tlsstats *s, const char *day,
					    const char *domain, enum tlsrpt_policy_type type)
{
	for (size_t i = 0; i < s->n; i++) {
		struct tlsstats_entry *e = &s->entries[i];
		if (e->type == type && strcmp(e->day, day) == 0 && strcasecmp(e->domain, domain) == 0)
			return e;
	}
	return NULL;
}

static struct tlsstats_entry *tlsstats_entry(struct tlsstats *s, const char *day,
					     const char *domain, enum tlsrpt_policy_type type)
{
	struct tlsstats_entry *e = tlsstats_find(s, day, domain, type);
	if (e || s->n >= TLSSTATS_ENTRIES_MAX)
		return e;
	e = xappend(&s->entries, &s->n, sizeof *e);
	memset(e, 0, sizeof *e);
	/* fits: both checked by the callers against these sizes */
	xsnprintf(e->day, sizeof e->day, "%s", day);
	xsnprintf(e->domain, sizeof e->domain, "%s", domain);
	str_lower(e->domain);
	e->type = type;
	return e;
}

static void tlsstats_copy(char *dst, size_t size, const char *src)
{
	/* fits: the callers checked the length (tlsstats_token_ok) */
	xsnprintf(dst, size, "%s", src ? src : "");
}

static void tlsstats_add_failure(struct tlsstats_entry *e, const struct tlsstats_session *ss,
				 uint64_t sessions)
{
	const char *rip = ss->receiving_ip ? ss->receiving_ip : "";
	const char *sip = ss->sending_ip ? ss->sending_ip : "";
	for (size_t i = 0; i < e->nfailures; i++) {
		struct tlsstats_failure *f = &e->failures[i];
		if (strcmp(f->result, ss->result) == 0 && strcasecmp(f->mx, ss->mx) == 0 &&
		    strcmp(f->receiving_ip, rip) == 0 && strcmp(f->sending_ip, sip) == 0) {
			f->sessions += sessions;
			return;
		}
	}
	if (e->nfailures >= TLSRPT_FAILURES_MAX) {
		e->other_failures += sessions;
		return;
	}
	struct tlsstats_failure *f = xappend(&e->failures, &e->nfailures, sizeof *f);
	tlsstats_copy(f->result, sizeof f->result, ss->result);
	tlsstats_copy(f->mx, sizeof f->mx, ss->mx);
	str_lower(f->mx);
	tlsstats_copy(f->receiving_ip, sizeof f->receiving_ip, ss->receiving_ip);
	tlsstats_copy(f->sending_ip, sizeof f->sending_ip, ss->sending_ip);
	f->sessions = sessions;
}

/* A policy line: printable ASCII that fits (a longer one is left out,
 * never cut). */
static bool tlsstats_policy_line_ok(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n >= TLSSTATS_POLICY_LINE_MAX)
		return false;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] >= 0x7f)
			return false;
	return true;
}

/* The policy's lines, once per entry: the first session's. */
static void tlsstats_add_policy(struct tlsstats_entry *e, const char *const *lines, size_t n)
{
	for (size_t i = 0; i < n && e->npolicy < TLSRPT_POLICY_STRINGS_MAX; i++) {
		if (!tlsstats_policy_line_ok(lines[i]))
			continue;
		char(*line)[TLSSTATS_POLICY_LINE_MAX] = xappend(&e->policy, &e->npolicy, sizeof *line);
		/* fits: checked just above */
		xsnprintf(*line, sizeof *line, "%s", lines[i]);
	}
}

static bool tlsstats_session_ok(const char *day, const struct tlsstats_session *ss)
{
	if (strlen(day) != TLSSTATS_DAY_MAX - 1 || !tlsstats_token_ok(ss->domain, TLSSTATS_NAME_MAX))
		return false;
	if (ss->type != TLSRPT_POLICY_STS && ss->type != TLSRPT_POLICY_TLSA &&
	    ss->type != TLSRPT_POLICY_NONE)
		return false;
	if (!ss->result)
		return true;
	return tlsstats_result_known(ss->result) && ss->mx &&
	       tlsstats_token_ok(ss->mx, TLSSTATS_NAME_MAX) && tlsstats_optional_ok(ss->receiving_ip) &&
	       tlsstats_optional_ok(ss->sending_ip);
}

bool tlsstats_add(struct tlsstats *s, const char *day, const struct tlsstats_session *ss)
{
	if (!tlsstats_session_ok(day, ss))
		return false;
	struct tlsstats_entry *e = tlsstats_entry(s, day, ss->domain, ss->type);
	if (!e)
		return false;
	if (e->npolicy == 0 && ss->policy)
		tlsstats_add_policy(e, ss->policy, ss->npolicy);
	if (ss->result)
		tlsstats_add_failure(e, ss, 1);
	else
		e->successes++;
	return true;
}

void tlsstats_remove(struct tlsstats *s, size_t i)
{
	if (i >= s->n)
		return;
	free(s->entries[i].failures);
	free(s->entries[i].policy);
	memmove(&s->entries[i], &s->entries[i + 1], (s->n - i - 1) * sizeof *s->entries);
	s->n--;
}

void tlsstats_take(struct tlsstats *s, size_t i, struct tlsstats_entry *out)
{
	*out = s->entries[i];
	memmove(&s->entries[i], &s->entries[i + 1], (s->n - i - 1) * sizeof *s->entries);
	s->n--;
}

bool tlsstats_merge(struct tlsstats *s, const struct tlsstats_entry *e)
{
	struct tlsstats_entry *to = tlsstats_entry(s, e->day, e->domain, e->type);
	if (!to)
		return false;
	to->successes += e->successes;
	to->other_failures += e->other_failures;
	to->tries = e->tries > to->tries ? e->tries : to->tries;
	if (to->npolicy == 0)
		for (size_t i = 0; i < e->npolicy && to->npolicy < TLSRPT_POLICY_STRINGS_MAX; i++)
			memcpy(xappend(&to->policy, &to->npolicy, sizeof *to->policy), e->policy[i],
			       sizeof *to->policy);
	for (size_t i = 0; i < e->nfailures; i++) {
		const struct tlsstats_failure *f = &e->failures[i];
		struct tlsstats_session ss = {.domain = e->domain, .type = e->type,
					      .result = f->result, .mx = f->mx,
					      .receiving_ip = f->receiving_ip[0] ? f->receiving_ip : NULL,
					      .sending_ip = f->sending_ip[0] ? f->sending_ip : NULL};
		tlsstats_add_failure(to, &ss, f->sessions);
	}
	return true;
}

/* ---- the text form ------------------------------------------------------------------ */

static const char *tlsstats_or_dash(const char *s)
{
	return s[0] ? s : "-";
}

char *tlsstats_format(const struct tlsstats *s, size_t *len)
{
	/* each line is below TLSSTATS_LINE_MAX: the names are bounded */
	size_t cap = 1;
	for (size_t i = 0; i < s->n; i++)
		cap += (1 + s->entries[i].nfailures + s->entries[i].npolicy) * TLSSTATS_LINE_MAX;
	char *out = xmalloc(cap);
	struct strbuf sb;
	strbuf_init(&sb, out, cap);
	for (size_t i = 0; i < s->n; i++) {
		const struct tlsstats_entry *e = &s->entries[i];
		(void)strbuf_addf(&sb, "E %s %s %s %" PRIu64 " %" PRIu64 " %u\n", e->day, e->domain,
				  tlsstats_types[e->type], e->successes, e->other_failures, e->tries);
		for (size_t k = 0; k < e->npolicy; k++)
			(void)strbuf_addf(&sb, "P %s\n", e->policy[k]);
		for (size_t k = 0; k < e->nfailures; k++) {
			const struct tlsstats_failure *f = &e->failures[k];
			(void)strbuf_addf(&sb, "F %s %s %s %s %" PRIu64 "\n", f->result, f->mx,
					  tlsstats_or_dash(f->receiving_ip),
					  tlsstats_or_dash(f->sending_ip), f->sessions);
		}
	}
	if (!strbuf_ok(&sb))
		fatal("tlsstats: the table does not fit its own bound");
	*len = strlen(out);
	return out;
}

static bool tlsstats_type_parse(const char *s, enum tlsrpt_policy_type *t)
{
	for (size_t i = 0; i < ARRAY_LEN(tlsstats_types); i++) {
		if (strcmp(s, tlsstats_types[i]) == 0) {
			*t = (enum tlsrpt_policy_type)i;
			return true;
		}
	}
	return false;
}

static bool tlsstats_u64(const char *s, uint64_t *out)
{
	size_t n = strlen(s);
	if (n == 0 || n > 19 || strspn(s, "0123456789") != n)
		return false;
	*out = strtoull(s, NULL, 10);
	return true;
}

/* Split line (modified) at spaces into at most max words; their count. */
static size_t tlsstats_words(char *line, char **w, size_t max)
{
	size_t n = 0;
	for (char *save = NULL, *t = strtok_r(line, " ", &save); t; t = strtok_r(NULL, " ", &save)) {
		if (n == max)
			return max + 1;
		w[n++] = t;
	}
	return n;
}

static const char *tlsstats_undash(const char *s)
{
	return strcmp(s, "-") == 0 ? NULL : s;
}

/* One line; NULL when fine, else what is wrong. */
static const char *tlsstats_parse_line(struct tlsstats *s, char *line,
				       struct tlsstats_entry **cur)
{
	if (strncmp(line, "P ", 2) == 0) {
		if (!*cur || !tlsstats_policy_line_ok(line + 2))
			return "a bad policy line";
		const char *one = line + 2;
		tlsstats_add_policy(*cur, &one, 1);
		return NULL;
	}
	char *w[8];
	size_t n = tlsstats_words(line, w, 7);
	if (n == 7 && strcmp(w[0], "E") == 0) {
		enum tlsrpt_policy_type t;
		uint64_t succ, other, tries;
		struct tlsstats_session ss = {.domain = w[2]};
		if (!tlsstats_type_parse(w[3], &t) || !tlsstats_u64(w[4], &succ) ||
		    !tlsstats_u64(w[5], &other) || !tlsstats_u64(w[6], &tries) || tries > 1000)
			return "a bad entry line";
		ss.type = t;
		if (!tlsstats_session_ok(w[1], &ss))
			return "a bad day or domain";
		*cur = tlsstats_entry(s, w[1], w[2], t);
		if (!*cur)
			return "more entries than the table holds";
		(*cur)->successes += succ;
		(*cur)->other_failures += other;
		(*cur)->tries = (unsigned)tries;
		return NULL;
	}
	if (n == 6 && strcmp(w[0], "F") == 0) {
		uint64_t sessions;
		if (!*cur || !tlsstats_u64(w[5], &sessions))
			return "a bad failure line";
		struct tlsstats_session ss = {.domain = (*cur)->domain, .type = (*cur)->type,
					      .result = w[1], .mx = w[2],
					      .receiving_ip = tlsstats_undash(w[3]),
					      .sending_ip = tlsstats_undash(w[4])};
		if (!tlsstats_session_ok((*cur)->day, &ss))
			return "a bad failure line";
		tlsstats_add_failure(*cur, &ss, sessions);
		return NULL;
	}
	return "an unknown line";
}

bool tlsstats_parse(struct tlsstats *s, const char *text, size_t len, char *err, size_t errsz)
{
	struct tlsstats_entry *cur = NULL;
	size_t lineno = 0;
	for (size_t i = 0; i < len;) {
		const char *nl = memchr(text + i, '\n', len - i);
		size_t n = nl ? (size_t)(nl - (text + i)) : len - i;
		lineno++;
		if (n >= TLSSTATS_LINE_MAX || memchr(text + i, '\0', n)) {
			errfmt(err, errsz, "line %zu: too long or not text", lineno);
			return false;
		}
		char line[TLSSTATS_LINE_MAX];
		memcpy(line, text + i, n);
		line[n] = '\0';
		const char *why = n ? tlsstats_parse_line(s, line, &cur) : NULL;
		if (why) {
			errfmt(err, errsz, "line %zu: %s", lineno, why);
			return false;
		}
		i += n + 1;
	}
	return true;
}

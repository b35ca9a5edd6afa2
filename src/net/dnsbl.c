/* dnsbl: DNS block lists (RFC 5782) for the `connection` rules: the query
 * name of a client under a zone (§2.1 IPv4, §2.4 IPv6), the A answers that
 * list it (§2.3), the TXT record that says why (§2.1), and one client's
 * lookups of every zone its rules reach, all at once on the event loop. */
#include "net/dnsbl.h"

#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#include "lib/util.h"

static const uint8_t dnsbl_mapped_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

static bool dnsbl_v4_name(const uint8_t b[4], const char *zone, char *out, size_t outsz)
{
	return bsnprintf(out, outsz, "%u.%u.%u.%u.%s", b[3], b[2], b[1], b[0], zone);
}

/* 32 nibbles, lowest first, each followed by a dot, then the zone. */
static bool dnsbl_v6_name(const uint8_t b[16], const char *zone, char *out, size_t outsz)
{
	static const char hex[] = "0123456789abcdef";
	char nibbles[65];
	size_t k = 0;
	for (size_t i = 16; i-- > 0;) {
		nibbles[k++] = hex[b[i] & 0x0f];
		nibbles[k++] = '.';
		nibbles[k++] = hex[b[i] >> 4];
		nibbles[k++] = '.';
	}
	nibbles[k - 1] = '\0'; /* the last dot comes from the format */
	return bsnprintf(out, outsz, "%s.%s", nibbles, zone);
}

bool dnsbl_query_name(const struct sockaddr *sa, const char *zone, char *out, size_t outsz)
{
	if (!sa || !zone || !*zone)
		return false;
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
		return dnsbl_v4_name((const uint8_t *)&in->sin_addr, zone, out, outsz);
	}
	if (sa->sa_family != AF_INET6)
		return false;
	const uint8_t *b = ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr;
	if (memcmp(b, dnsbl_mapped_prefix, sizeof dnsbl_mapped_prefix) == 0)
		return dnsbl_v4_name(b + 12, zone, out, outsz);
	return dnsbl_v6_name(b, zone, out, outsz);
}

bool dnsbl_answer_counts(const struct conf_rule *r, const struct dns_addr *a)
{
	if (a->family != AF_INET || a->addr[0] != 127)
		return false;
	if (r->nanswers == 0)
		return true;
	for (size_t i = 0; i < r->nanswers; i++)
		if (memcmp(r->answers[i], a->addr, 4) == 0)
			return true;
	return false;
}

void dnsbl_reason_clean(const char *in, size_t len, char *out, size_t outsz)
{
	static const char cut[] = "...";
	if (outsz == 0)
		return;
	size_t room = outsz - 1;
	bool cutting = len > room;
	size_t keep = cutting ? (room > strlen(cut) ? room - strlen(cut) : 0) : len;
	size_t k = 0;
	for (size_t i = 0; i < keep; i++) {
		unsigned char ch = (unsigned char)in[i];
		out[k++] = ch >= 0x20 && ch < 0x7f ? (char)ch : '?';
	}
	for (size_t i = 0; cutting && cut[i] && k < room; i++)
		out[k++] = cut[i];
	out[k] = '\0';
}

void dnsbl_refusal_text(const char *client, const char *zone, const char *reason, char *out,
			size_t outsz)
{
	/* fits: an address, a zone of at most 253 bytes and a reason of at
	 * most DNSBL_REASON_MAX in DNSBL_REFUSAL_MAX */
	xsnprintf(out, outsz, "Service unavailable; client [%s] blocked using %s%s%s", client, zone,
		  reason && *reason ? "; " : "", reason ? reason : "");
}

/* ---- one client's check -------------------------------------------------- */

struct dnsbl_lookup {
	struct dnsbl_check *check;
	size_t rule;
	dns_query_id query;     /* the A or TXT query in flight, 0: none */
	char qname[DNSBL_QUERY_MAX];
};

struct dnsbl_check {
	struct dns_resolver *resolver;
	const struct conf_rule *rules;
	size_t n;
	struct dnsbl_result *results;
	struct dnsbl_lookup *lookups; /* one per rule; used for the dnsbl rules checked */
	unsigned outstanding;   /* lookups not finished, plus one while starting */
	dnsbl_done_cb cb;
	void *arg;
};

static void dnsbl_check_free(struct dnsbl_check *c)
{
	free(c->results);
	free(c->lookups);
	free(c);
}

/* One lookup less; the last one reports and frees the check.  true when
 * the check is gone. */
static bool dnsbl_check_release(struct dnsbl_check *c)
{
	if (--c->outstanding > 0)
		return false;
	c->cb(c->arg, c->results, c->n);
	dnsbl_check_free(c);
	return true;
}

static void dnsbl_lookup_finish(struct dnsbl_lookup *l)
{
	l->query = 0;
	(void)dnsbl_check_release(l->check); /* gone or not, l is no longer used */
}

static void dnsbl_txt_found(void *arg, enum dns_status st, const struct dns_txt *txt, size_t n,
			    uint32_t ttl)
{
	(void)ttl; /* dns.c's cache keeps the answer for its TTL */
	struct dnsbl_lookup *l = arg;
	struct dnsbl_result *res = &l->check->results[l->rule];
	if (st == DNS_OK && n > 0) /* the first record; a failure only loses the words */
		dnsbl_reason_clean(txt[0].text, txt[0].len, res->reason, sizeof res->reason);
	dnsbl_lookup_finish(l);
}

/* RFC 5782 §2.1: a list may say why in a TXT record of the same name. */
static void dnsbl_lookup_reason(struct dnsbl_lookup *l)
{
	l->query = 0;
	dns_query_id q = dns_lookup_txt(l->check->resolver, l->qname, dnsbl_txt_found, l);
	if (q)
		l->query = q;
}

static void dnsbl_addrs_found(void *arg, enum dns_status st, const struct dns_addr *addrs,
			      size_t n)
{
	struct dnsbl_lookup *l = arg;
	const struct conf_rule *r = &l->check->rules[l->rule];
	struct dnsbl_result *res = &l->check->results[l->rule];
	res->dns = st;
	res->state = st == DNS_OK || st == DNS_NOTFOUND ? DNSBL_CLEAN : DNSBL_FAILED;
	for (size_t i = 0; st == DNS_OK && i < n; i++) {
		if (dnsbl_answer_counts(r, &addrs[i])) {
			res->state = DNSBL_LISTED;
			xsnprintf(res->answer, sizeof res->answer, "%u.%u.%u.%u", addrs[i].addr[0],
				  addrs[i].addr[1], addrs[i].addr[2], addrs[i].addr[3]); /* fits: 15 */
			dnsbl_lookup_reason(l);
			return;
		}
	}
	dnsbl_lookup_finish(l);
}

static void dnsbl_lookup_start(struct dnsbl_check *c, size_t i, const struct sockaddr *sa)
{
	struct dnsbl_lookup *l = &c->lookups[i];
	l->check = c;
	l->rule = i;
	if (!c->resolver || !dnsbl_query_name(sa, c->rules[i].domain, l->qname, sizeof l->qname)) {
		c->results[i].state = DNSBL_FAILED; /* not asked: lists nobody */
		c->results[i].dns = DNS_ERROR;
		return;
	}
	c->outstanding++;
	dns_query_id q = dns_lookup_a(c->resolver, l->qname, dnsbl_addrs_found, l);
	if (q)
		l->query = q;
}

struct dnsbl_check *dnsbl_check_start(struct dns_resolver *r, const struct conf_rule *rules,
				      size_t n, size_t upto, const struct sockaddr *sa,
				      dnsbl_done_cb cb, void *arg)
{
	struct dnsbl_check *c = xcalloc(1, sizeof *c);
	c->resolver = r;
	c->rules = rules;
	c->n = n;
	c->results = xcalloc(n ? n : 1, sizeof *c->results);
	c->lookups = xcalloc(n ? n : 1, sizeof *c->lookups);
	c->cb = cb;
	c->arg = arg;
	c->outstanding = 1; /* held while starting */
	for (size_t i = 0; i < upto && i < n; i++)
		if (rules[i].kind == RULE_DNSBL)
			dnsbl_lookup_start(c, i, sa);
	return dnsbl_check_release(c) ? NULL : c;
}

void dnsbl_check_cancel(struct dnsbl_check *c)
{
	if (!c)
		return;
	for (size_t i = 0; i < c->n; i++)
		if (c->lookups[i].query)
			dns_cancel(c->resolver, c->lookups[i].query);
	dnsbl_check_free(c);
}

/* check_mail_dns: each local domain's MX, SPF and DMARC records as the
 * Internet sees them (through the configured DNS servers and dns.c), in
 * words: what is there, what is wrong, and the record to publish when one
 * is missing. */
#include "cli/check_mail_dns.h"

#include <stdbool.h>
#include <string.h>
#include <strings.h>

#include <event2/event.h>

#include "conf/conf.h"
#include "lib/util.h"
#include "mailauth/dmarc.h"
#include "mailauth/spf_record.h"
#include "net/dns.h"

enum { CHECK_MAIL_TXT_MAX = 8, CHECK_MAIL_MX_MAX = 16, CHECK_MAIL_TEXT_MAX = 512 };

/* One lookup, waited for in the command's own loop. */
struct check_mail_wait {
	bool done;
	enum dns_status st;
	size_t n;
	char text[CHECK_MAIL_TXT_MAX][CHECK_MAIL_TEXT_MAX]; /* TXT records, or MX hosts */
	bool cut[CHECK_MAIL_TXT_MAX];
	size_t total;           /* records in the answer, kept or not */
};

static void check_mail_txt_cb(void *arg, enum dns_status st, const struct dns_txt *txt, size_t n,
			      uint32_t ttl)
{
	struct check_mail_wait *w = arg;
	w->st = st;
	w->total = st == DNS_OK ? n : 0;
	for (size_t i = 0; st == DNS_OK && i < n && w->n < CHECK_MAIL_TXT_MAX; i++, w->n++)
		w->cut[w->n] = memchr(txt[i].text, '\0', txt[i].len) != NULL ||
			       !bsnprintf(w->text[w->n], sizeof w->text[0], "%s", txt[i].text);
	w->done = true;
}

static void check_mail_mx_cb(void *arg, enum dns_status st, const struct dns_mx *mx, size_t n)
{
	struct check_mail_wait *w = arg;
	w->st = st;
	w->total = st == DNS_OK ? n : 0;
	for (size_t i = 0; st == DNS_OK && i < n && w->n < CHECK_MAIL_TXT_MAX; i++, w->n++)
		w->cut[w->n] = !bsnprintf(w->text[w->n], sizeof w->text[0], "%s", mx[i].host);
	w->done = true;
}

static void check_mail_wait(struct event_base *base, struct check_mail_wait *w)
{
	while (!w->done)
		if (event_base_loop(base, EVLOOP_ONCE) < 0)
			fatal("event loop failed");
}

/* The host name that receives the domain's mail: the first SMTP server
 * with anonymous clients, else the global hostname. */
static const char *check_mail_mx_host(const struct conf *conf)
{
	for (size_t i = 0; i < conf->nservers; i++)
		if (conf->servers[i].protocol == PROTO_SMTP && conf->servers[i].auth.anonymous)
			return conf->servers[i].hostname;
	return conf->hostname;
}

static bool check_mail_is_ours(const struct conf *conf, const char *host)
{
	for (size_t i = 0; i < conf->nservers; i++)
		if (str_ieq(conf->servers[i].hostname, host))
			return true;
	return str_ieq(conf->hostname, host);
}

static int check_mail_mx(struct event_base *base, struct dns_resolver *r, const struct conf *conf,
			 const char *domain, FILE *out)
{
	struct check_mail_wait w = {0};
	dns_lookup_mx(r, domain, check_mail_mx_cb, &w);
	check_mail_wait(base, &w);
	if (w.st == DNS_NOTFOUND) {
		report(out, "  MX: none; publish: %s. MX 10 %s.\n", domain, check_mail_mx_host(conf));
		return 1;
	}
	if (w.st != DNS_OK) {
		report(out, "  MX: cannot be looked up (%s)\n", dns_status_name(w.st));
		return 1;
	}
	if (w.n == 1 && w.text[0][0] == '\0') {
		report(out, "  MX: a null MX (RFC 7505): the domain says it receives no mail\n");
		return 1;
	}
	bool ours = false;
	for (size_t i = 0; i < w.n; i++)
		ours |= !w.cut[i] && check_mail_is_ours(conf, w.text[i]);
	report(out, "  MX: %s%s\n", w.text[0], ours ? " (this server)" : "");
	if (ours)
		return 0;
	report(out, "  MX: no MX host is one of this configuration's host names; publish: %s. MX "
		    "10 %s.\n", domain, check_mail_mx_host(conf));
	return 1;
}

static int check_mail_spf(struct event_base *base, struct dns_resolver *r, const char *domain,
			  FILE *out)
{
	struct check_mail_wait w = {0};
	dns_lookup_txt(r, domain, check_mail_txt_cb, &w);
	check_mail_wait(base, &w);
	if (w.st != DNS_OK && w.st != DNS_NOTFOUND) {
		report(out, "  SPF: cannot be looked up (%s)\n", dns_status_name(w.st));
		return 1;
	}
	size_t found = 0, at = 0;
	for (size_t i = 0; i < w.n; i++)
		if (spf_record_is_spf(w.text[i], strlen(w.text[i]))) {
			found++;
			at = i;
		}
	if (found == 0) {
		report(out, "  SPF: none; publish: %s. TXT \"v=spf1 mx -all\" (the MX hosts send "
			    "its mail, nobody else)\n", domain);
		return 1;
	}
	if (found > 1) {
		report(out, "  SPF: %zu records (RFC 7208 §4.5: a permerror); keep one\n", found);
		return 1;
	}
	struct spf_record rec;
	char why[128];
	if (w.cut[at] || !spf_record_parse(w.text[at], strlen(w.text[at]), &rec, why, sizeof why)) {
		report(out, "  SPF: \"%s\" is broken: %s\n", w.text[at], w.cut[at] ? "too long" : why);
		return 1;
	}
	bool closed = rec.nterms > 0 && rec.terms[rec.nterms - 1].mech == SPF_MECH_ALL &&
		      (rec.terms[rec.nterms - 1].qualifier == SPF_FAIL ||
		       rec.terms[rec.nterms - 1].qualifier == SPF_SOFTFAIL);
	spf_record_free(&rec);
	report(out, "  SPF: %s%s\n", w.text[at],
	       closed ? "" : " (ends without -all or ~all: others may send as the domain)");
	return 0;
}

static int check_mail_dmarc(struct event_base *base, struct dns_resolver *r, const char *domain,
			    FILE *out)
{
	char name[SPF_NAME_MAX + 8];
	if (!bsnprintf(name, sizeof name, "_dmarc.%s", domain)) {
		report(out, "  DMARC: the domain is too long to have a record\n");
		return 1;
	}
	struct check_mail_wait w = {0};
	dns_lookup_txt(r, name, check_mail_txt_cb, &w);
	check_mail_wait(base, &w);
	if (w.st != DNS_OK && w.st != DNS_NOTFOUND) {
		report(out, "  DMARC: cannot be looked up (%s)\n", dns_status_name(w.st));
		return 1;
	}
	size_t found = 0, at = 0;
	for (size_t i = 0; i < w.n; i++)
		if (strncmp(w.text[i], "v=DMARC1", 8) == 0) {
			found++;
			at = i;
		}
	if (found == 0) {
		report(out, "  DMARC: none; publish: %s. TXT \"v=DMARC1; p=quarantine; "
			    "rua=mailto:postmaster@%s\"\n", name, domain);
		return 1;
	}
	struct dmarc_record rec;
	char why[64];
	if (found > 1 || w.cut[at] ||
	    !dmarc_record_parse(w.text[at], strlen(w.text[at]), &rec, why, sizeof why)) {
		report(out, "  DMARC: %s; receivers ignore it\n",
		       found > 1 ? "several records" : w.cut[at] ? "a record too long" : why);
		return 1;
	}
	report(out, "  DMARC: %s (policy %s%s)\n", w.text[at], dmarc_policy_name(rec.p),
	       rec.p == DMARC_POLICY_NONE ? ": monitoring only, forged mail is still delivered" : "");
	return 0;
}

int check_mail_dns(struct event_base *base, struct dns_resolver *r, const struct conf *conf,
		   FILE *out)
{
	int problems = 0;
	for (size_t i = 0; i < conf->ndomains; i++) {
		const char *domain = conf->domains[i];
		report(out, "\ndomain %s:\n", domain);
		problems += check_mail_mx(base, r, conf, domain, out);
		problems += check_mail_spf(base, r, domain, out);
		problems += check_mail_dmarc(base, r, domain, out);
	}
	return problems;
}

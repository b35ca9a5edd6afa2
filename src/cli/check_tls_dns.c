/* check_tls_dns: the part of `posthorn check-dns` about how other servers
 * should send to this one securely — each local domain's MTA-STS record
 * (RFC 8461 §3.1) and TLS reporting record (RFC 8460 §3), and, for each
 * SMTP server listening on port 25, the TLSA records at _25._tcp.HOSTNAME
 * (RFC 7672 §3.1) against the certificates it serves, with the DANE-EE
 * record to publish. */
#include "cli/check_tls_dns.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "conf/conf.h"
#include "lib/util.h"
#include "net/dns.h"
#include "net/mtasts.h"

enum { CHECK_TLSA_MAX = 16, CHECK_TXT_MAX = 512 };

/* One TXT or TLSA lookup, waited for in the command's own loop. */
struct tls_wait {
	bool done;
	enum dns_status st;
	bool secure;
	size_t n;
	char txt[4][CHECK_TXT_MAX];
	struct {
		unsigned usage, selector, mtype;
		unsigned char data[64];
		size_t len;
	} tlsa[CHECK_TLSA_MAX];
};

static void tls_wait_loop(struct event_base *base, const struct tls_wait *w)
{
	while (!w->done)
		event_base_loop(base, EVLOOP_ONCE);
}

static void tls_txt_cb(void *arg, enum dns_status st, const struct dns_txt *txt, size_t n,
		       uint32_t ttl)
{
	struct tls_wait *w = arg;
	w->st = st;
	for (size_t i = 0; i < n && w->n < 4; i++)
		if (txt[i].len < CHECK_TXT_MAX)
			memcpy(w->txt[w->n++], txt[i].text, txt[i].len + 1);
	w->done = true;
}

static void tls_tlsa_cb(void *arg, enum dns_status st, const struct dns_tlsa *t, size_t n,
			bool secure)
{
	struct tls_wait *w = arg;
	w->st = st;
	w->secure = secure;
	for (size_t i = 0; i < n && w->n < CHECK_TLSA_MAX; i++) {
		if (t[i].len > sizeof w->tlsa[0].data)
			continue;
		w->tlsa[w->n].usage = t[i].usage;
		w->tlsa[w->n].selector = t[i].selector;
		w->tlsa[w->n].mtype = t[i].mtype;
		memcpy(w->tlsa[w->n].data, t[i].data, t[i].len);
		w->tlsa[w->n].len = t[i].len;
		w->n++;
	}
	w->done = true;
}

static void tls_txt(struct event_base *base, struct dns_resolver *r, const char *name,
		    struct tls_wait *w)
{
	memset(w, 0, sizeof *w);
	dns_lookup_txt(r, name, tls_txt_cb, w);
	tls_wait_loop(base, w);
}

/* Records at name that start with prefix (the version tag). */
static size_t tls_count_prefixed(const struct tls_wait *w, const char *prefix, size_t *which)
{
	size_t k = 0;
	for (size_t i = 0; w->st == DNS_OK && i < w->n; i++)
		if (strncmp(w->txt[i], prefix, strlen(prefix)) == 0) {
			k++;
			*which = i;
		}
	return k;
}

static int check_mta_sts_record(struct event_base *base, struct dns_resolver *r,
				const char *domain, FILE *out)
{
	char name[300];
	struct tls_wait w;
	xsnprintf(name, sizeof name, "_mta-sts.%s", domain); /* fits: domains are 253 at most */
	tls_txt(base, r, name, &w);
	size_t which = 0, k = tls_count_prefixed(&w, "v=STSv1", &which);
	char id[MTASTS_ID_MAX + 1];
	if (w.st != DNS_OK && w.st != DNS_NOTFOUND) {
		report(out, "  MTA-STS: the lookup of %s failed (%s)\n", name, dns_status_name(w.st));
		return 1;
	}
	if (k == 0) {
		report(out, "  MTA-STS: none published; to have senders require TLS to your mail "
			    "exchangers, publish %s. IN TXT \"v=STSv1; id=1;\" and serve a policy at "
			    "https://mta-sts.%s/.well-known/mta-sts.txt\n", name, domain);
		return 0;
	}
	if (k > 1 || !mtasts_record_id(w.txt[which], strlen(w.txt[which]), id)) {
		report(out, "  MTA-STS: %s is not one valid \"v=STSv1; id=...;\" record: senders "
			    "ignore it\n", name);
		return 1;
	}
	report(out, "  MTA-STS: record published (id %s); senders fetch "
		    "https://mta-sts.%s/.well-known/mta-sts.txt\n", id, domain);
	return 0;
}

static int check_tlsrpt_record(struct event_base *base, struct dns_resolver *r,
			       const char *domain, FILE *out)
{
	char name[300];
	struct tls_wait w;
	xsnprintf(name, sizeof name, "_smtp._tls.%s", domain); /* fits, as above */
	tls_txt(base, r, name, &w);
	size_t which = 0, k = tls_count_prefixed(&w, "v=TLSRPTv1", &which);
	if (w.st != DNS_OK && w.st != DNS_NOTFOUND) {
		report(out, "  TLS-RPT: the lookup of %s failed (%s)\n", name, dns_status_name(w.st));
		return 1;
	}
	if (k == 0) {
		report(out, "  TLS-RPT: none published; to get reports of failed TLS to you, "
			    "publish %s. IN TXT \"v=TLSRPTv1; rua=mailto:tlsrpt@%s\"\n", name, domain);
		return 0;
	}
	if (k > 1 || !strstr(w.txt[which], "rua=")) {
		report(out, "  TLS-RPT: %s is not one record with rua=: senders ignore it\n", name);
		return 1;
	}
	report(out, "  TLS-RPT: %s\n", w.txt[which]);
	return 0;
}

/* SHA-256 of the certificate's SubjectPublicKeyInfo: DANE-EE(3) SPKI(1)
 * SHA-256(1), the record RFC 7672 §3.1.1 recommends. */
static bool tls_spki_sha256(const char *path, unsigned char out[32])
{
	FILE *f = fopen(path, "re");
	if (!f)
		return false;
	X509 *x = PEM_read_X509(f, NULL, NULL, NULL);
	(void)fclose(f); /* read-only */
	if (!x)
		return false;
	unsigned char *der = NULL;
	int len = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(x), &der);
	unsigned int mdlen = 0;
	bool ok = len > 0 && EVP_Digest(der, (size_t)len, out, &mdlen, EVP_sha256(), NULL) == 1 &&
		  mdlen == 32;
	OPENSSL_free(der);
	X509_free(x);
	return ok;
}

static bool tls_listens_on_25(const struct conf_server *srv)
{
	if (srv->protocol != PROTO_SMTP)
		return false;
	for (size_t i = 0; i < srv->nlistens; i++) {
		const struct sockaddr_storage *ss = &srv->listens[i].addr.ss;
		unsigned port = ss->ss_family == AF_INET
					? ntohs(((const struct sockaddr_in *)ss)->sin_port)
					: ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
		if (port == 25)
			return true;
	}
	return false;
}

static int check_tlsa_of(struct event_base *base, struct dns_resolver *r,
			 const struct conf_server *srv, FILE *out)
{
	struct tls_wait w;
	memset(&w, 0, sizeof w);
	dns_lookup_tlsa(r, srv->hostname, 25, tls_tlsa_cb, &w);
	tls_wait_loop(base, &w);
	int problems = 0;
	bool any_match = false;
	for (size_t c = 0; c < srv->tls.ncerts; c++) {
		const struct conf_cert *cert = &srv->tls.certs[c];
		unsigned char h[32];
		if (cert->acme || !tls_spki_sha256(cert->certificate, h))
			continue;
		char hex[65];
		for (size_t i = 0; i < 32; i++)
			xsnprintf(hex + 2 * i, 3, "%02x", h[i]); /* fits */
		bool match = false;
		for (size_t i = 0; w.st == DNS_OK && i < w.n; i++)
			match = match || (w.tlsa[i].usage == 3 && w.tlsa[i].selector == 1 &&
					  w.tlsa[i].mtype == 1 && w.tlsa[i].len == 32 &&
					  memcmp(w.tlsa[i].data, h, 32) == 0);
		any_match = any_match || match;
		report(out, "  TLSA for %s: %s; the record: _25._tcp.%s. IN TLSA 3 1 1 %s\n",
		       cert->certificate, match ? "published" : "not published", srv->hostname, hex);
	}
	if (w.st == DNS_OK && !any_match) {
		report(out, "  DANE: _25._tcp.%s has TLSA records but none matches a certificate "
			    "this server uses: DANE senders will not deliver here\n", srv->hostname);
		problems++;
	} else if (w.st == DNS_OK && !w.secure) {
		report(out, "  DANE: _25._tcp.%s is not DNSSEC-signed (or the DNS servers do not "
			    "validate): senders ignore it\n", srv->hostname);
	} else if (w.st == DNS_NOTFOUND) {
		report(out, "  DANE: no TLSA record at _25._tcp.%s; publish the record above in a "
			    "DNSSEC-signed zone (and the next key's before changing keys)\n",
		       srv->hostname);
	} else if (w.st != DNS_OK) {
		report(out, "  DANE: the lookup of _25._tcp.%s failed (%s)\n", srv->hostname,
		       dns_status_name(w.st));
		problems++;
	}
	return problems;
}

int check_dns_tls_policies(struct event_base *base, struct dns_resolver *r,
			   const struct conf *conf, FILE *out)
{
	int problems = 0;
	for (size_t i = 0; i < conf->ndomains; i++) {
		report(out, "domain %s, TLS of mail sent to it:\n", conf->domains[i]);
		problems += check_mta_sts_record(base, r, conf->domains[i], out);
		problems += check_tlsrpt_record(base, r, conf->domains[i], out);
	}
	for (size_t i = 0; i < conf->nservers; i++) {
		const struct conf_server *srv = &conf->servers[i];
		if (!tls_listens_on_25(srv) || srv->tls.ncerts == 0)
			continue;
		report(out, "server %s (port 25): %s\n", srv->name, srv->hostname);
		problems += check_tlsa_of(base, r, srv, out);
	}
	return problems;
}

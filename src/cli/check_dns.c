/* check_dns: `posthorn check-dns` — for each virtual server, resolve its
 * FQDN with the configured DNS servers (the server's own, else the global
 * ones), and report whether it resolves, whether it resolves to the
 * addresses the server listens on, and whether their reverse (PTR) records
 * point back to it.  Queries go through dns.c like everything else. */
#include "cli/check_dns.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/event.h>

#include "cli/check_tls_dns.h"
#include "cli/cmd_dkim.h"
#include "cli/check_mail_dns.h"
#include "conf/conf.h"
#include "net/dns.h"
#include "lib/util.h"

enum { CHECK_DNS_MAX_ADDRS = 32 };

/* One lookup, waited for: the command runs its own short-lived loop. */
struct check_wait {
	bool done;
	enum dns_status st;
	char name[256];
	struct dns_addr addrs[CHECK_DNS_MAX_ADDRS];
	size_t naddrs;
};

static void check_dns_addrs_cb(void *arg, enum dns_status st, const struct dns_addr *a, size_t n)
{
	struct check_wait *w = arg;
	w->st = st;
	w->naddrs = n < CHECK_DNS_MAX_ADDRS ? n : CHECK_DNS_MAX_ADDRS;
	if (w->naddrs)
		memcpy(w->addrs, a, w->naddrs * sizeof *a);
	w->done = true;
}

static void check_dns_name_cb(void *arg, enum dns_status st, const char *name)
{
	struct check_wait *w = arg;
	w->st = st;
	/* dns reports host names of 253 bytes at most; one that did not fit
	 * would be compared cut: no answer rather than a wrong one */
	if (name && !bsnprintf(w->name, sizeof w->name, "%s", name))
		w->st = DNS_ERROR;
	w->done = true;
}

static void check_dns_wait(struct event_base *base, struct check_wait *w)
{
	while (!w->done)
		event_base_loop(base, EVLOOP_ONCE);
}

static void check_dns_addr_text(const struct dns_addr *a, char *out, size_t outsz)
{
	if (!inet_ntop(a->family, a->addr, out, (socklen_t)outsz))
		xsnprintf(out, outsz, "?"); /* out holds an IPv6 address: "?" fits */
}

static void check_dns_sockaddr(const struct dns_addr *a, struct sockaddr_storage *ss)
{
	memset(ss, 0, sizeof *ss);
	if (a->family == AF_INET) {
		struct sockaddr_in *in = (struct sockaddr_in *)ss;
		in->sin_family = AF_INET;
		memcpy(&in->sin_addr, a->addr, 4);
	} else {
		struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
		in6->sin6_family = AF_INET6;
		memcpy(&in6->sin6_addr, a->addr, 16);
	}
}

/* The listen address as a dns_addr; false for a wildcard (0.0.0.0, ::). */
static bool check_dns_listen_addr(const struct conf_listen *l, struct dns_addr *out)
{
	static const uint8_t zero[16];
	memset(out, 0, sizeof *out);
	out->family = l->addr.ss.ss_family;
	if (out->family == AF_INET)
		memcpy(out->addr, &((const struct sockaddr_in *)&l->addr.ss)->sin_addr, 4);
	else
		memcpy(out->addr, &((const struct sockaddr_in6 *)&l->addr.ss)->sin6_addr, 16);
	return memcmp(out->addr, zero, out->family == AF_INET ? 4 : 16) != 0;
}

static bool check_dns_same_addr(const struct dns_addr *a, const struct dns_addr *b)
{
	return a->family == b->family &&
	       memcmp(a->addr, b->addr, a->family == AF_INET ? 4 : 16) == 0;
}

static bool check_dns_same_name(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);
	if (la && a[la - 1] == '.')
		la--;
	if (lb && b[lb - 1] == '.')
		lb--;
	return la == lb && strncasecmp(a, b, la) == 0;
}

/* Are the server's specific listen addresses among what its name resolves
 * to?  Returns the number of problems. */
static int check_dns_listens(const struct conf_server *srv, const struct check_wait *fw, FILE *out)
{
	int problems = 0;
	for (size_t i = 0; i < srv->nlistens; i++) {
		struct dns_addr la;
		if (!check_dns_listen_addr(&srv->listens[i], &la)) {
			report(out, "  listen %s: all addresses (cannot compare)\n",
				srv->listens[i].addr.text);
			continue;
		}
		bool found = false;
		for (size_t j = 0; j < fw->naddrs && !found; j++)
			found = check_dns_same_addr(&la, &fw->addrs[j]);
		report(out, "  listen %s: %s\n", srv->listens[i].addr.text,
			found ? "among the addresses of the name"
			      : "NOT among the addresses of the name");
		problems += !found;
	}
	return problems;
}

/* Does each address's PTR point back to the server's name? */
static int check_dns_reverse(struct event_base *base, struct dns_resolver *r,
			     const struct conf_server *srv, const struct check_wait *fw, FILE *out)
{
	int problems = 0;
	for (size_t i = 0; i < fw->naddrs; i++) {
		char text[64];
		struct sockaddr_storage ss;
		check_dns_addr_text(&fw->addrs[i], text, sizeof text);
		check_dns_sockaddr(&fw->addrs[i], &ss);
		struct check_wait w = {0};
		dns_lookup_ptr(r, (struct sockaddr *)&ss, check_dns_name_cb, &w);
		check_dns_wait(base, &w);
		if (w.st != DNS_OK) {
			report(out, "  reverse %s: no PTR record (%s)\n", text, dns_status_name(w.st));
			problems++;
		} else if (!check_dns_same_name(w.name, srv->hostname)) {
			report(out, "  reverse %s: points to %s, not to %s\n", text, w.name,
				srv->hostname);
			problems++;
		} else {
			report(out, "  reverse %s: points back to %s\n", text, w.name);
		}
	}
	return problems;
}

static int check_dns_server(struct event_base *base, struct dns_resolver *r,
			    const struct conf_server *srv, FILE *out)
{
	report(out, "server %s: %s\n", srv->name, srv->hostname);
	struct check_wait fw = {0};
	dns_lookup_addrs(r, srv->hostname, check_dns_addrs_cb, &fw);
	check_dns_wait(base, &fw);
	if (fw.st != DNS_OK || fw.naddrs == 0) {
		report(out, "  resolves: NO (%s)\n", dns_status_name(fw.st));
		return 1;
	}
	report(out, "  resolves: yes, to");
	for (size_t i = 0; i < fw.naddrs; i++) {
		char text[64];
		check_dns_addr_text(&fw.addrs[i], text, sizeof text);
		report(out, " %s", text);
	}
	report(out, "\n");
	return check_dns_listens(srv, &fw, out) + check_dns_reverse(base, r, srv, &fw, out);
}

int cmd_check_dns(const char *conf_path)
{
	struct conf *conf;
	if (conf_load(conf_path, &conf, stderr) != 0)
		return 1;
	struct event_base *base = event_base_new();
	if (!base)
		fatal("event_base_new failed");
	char err[256];
	int problems = 0, status = 0;
	struct dns_resolver *global = dns_resolver_new(base, &conf->dns, NULL, err, sizeof err);
	if (!global) {
		complain("dns: %s", err);
		status = 1;
	}
	for (size_t i = 0; global && i < conf->nservers; i++) {
		const struct conf_server *srv = &conf->servers[i];
		struct dns_resolver *own = NULL;
		if (srv->dns.nservers > 0 &&
		    !(own = dns_resolver_new(base, &srv->dns, NULL, err, sizeof err))) {
			complain("server %s: dns: %s", srv->name, err);
			status = 1;
			continue;
		}
		problems += check_dns_server(base, own ? own : global, srv, stdout);
		if (own)
			dns_resolver_free(own);
	}
	if (global) {
		problems += check_dns_dkim(conf, base, global);
		problems += check_dns_tls_policies(base, global, conf, stdout);
		problems += check_mail_dns(base, global, conf, stdout);
		dns_resolver_free(global);
	}
	event_base_free(base);
	conf_free(conf);
	if (status == 0 && problems > 0) {
		printf("\n%d problem%s found\n", problems, problems == 1 ? "" : "s");
		status = 1;
	} else if (status == 0) {
		printf("\nall names resolve and point back; every domain has MX, SPF and DMARC "
		       "records\n");
	}
	return status;
}

/* check_hosts: `posthorn check` looks up the names of the `allow host` /
 * `deny host` rules (A and AAAA, RFC 1035, RFC 3596) through the DNS
 * servers the daemon would ask (the server's own `dns`, else the global
 * one), on a short-lived event loop of its own through dns.c, and prints
 * what each name stands for now; a name with no address is a warning, as
 * its rules match nothing. */
#include "cli/check_hosts.h"

#include <arpa/inet.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "conf/conf.h"
#include "lib/util.h"
#include "net/dns.h"

/* One name's lookup, waited for. */
struct check_host {
	const char *name;
	bool done;
	enum dns_status st;
	struct dns_addr *addrs;
	size_t naddrs;
};

static void check_hosts_answered(void *arg, enum dns_status st, const struct dns_addr *addrs,
				 size_t n, uint32_t ttl)
{
	struct check_host *h = arg;
	h->st = st;
	if (n) {
		h->addrs = xcalloc(n, sizeof *addrs);
		memcpy(h->addrs, addrs, n * sizeof *addrs);
		h->naddrs = n;
	}
	h->done = true;
}

static bool check_hosts_all_done(const struct check_host *hosts, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!hosts[i].done)
			return false;
	return true;
}

static void check_hosts_print(const struct conf_server *srv, const struct check_host *h,
			      FILE *out)
{
	report(out, "  server %s: %s ", srv->name, h->name);
	if (h->naddrs == 0) {
		report(out, "stands for no address (%s)\n", dns_status_name(h->st));
		return;
	}
	report(out, "stands for");
	for (size_t i = 0; i < h->naddrs; i++) {
		char text[INET6_ADDRSTRLEN];
		if (!inet_ntop(h->addrs[i].family, h->addrs[i].addr, text, sizeof text))
			xsnprintf(text, sizeof text, "?"); /* text holds an IPv6 address: "?" fits */
		report(out, " %s", text);
	}
	report(out, "\n");
}

/* Every name of srv at once through r; the lines printed, the warnings
 * counted into *warnings and written after them. */
static void check_hosts_server(struct event_base *base, struct dns_resolver *r,
			       const struct conf_server *srv, FILE *out, int *warnings)
{
	struct check_host *hosts = xcalloc(srv->nhosts, sizeof *hosts);
	for (size_t i = 0; i < srv->nhosts; i++) {
		hosts[i].name = srv->hosts[i];
		dns_lookup_host(r, srv->hosts[i], check_hosts_answered, &hosts[i]);
	}
	/* every lookup ends: an answer, or the resolver's deadline */
	while (!check_hosts_all_done(hosts, srv->nhosts))
		if (event_base_loop(base, EVLOOP_ONCE) < 0)
			fatal("check: the event loop failed");
	for (size_t i = 0; i < srv->nhosts; i++)
		check_hosts_print(srv, &hosts[i], out);
	for (size_t i = 0; i < srv->nhosts; i++) {
		if (hosts[i].naddrs == 0) {
			report(out, "warning: server %s: host %s does not resolve (%s): its rules match "
				    "nothing until it does\n", srv->name, hosts[i].name,
			       dns_status_name(hosts[i].st));
			++*warnings;
		}
		free(hosts[i].addrs);
	}
	free(hosts);
}

static bool check_hosts_any(const struct conf *conf)
{
	for (size_t i = 0; i < conf->nservers; i++)
		if (conf->servers[i].nhosts > 0)
			return true;
	return false;
}

int check_hosts(const struct conf *conf, FILE *out)
{
	if (!check_hosts_any(conf))
		return 0;
	struct event_base *base = event_base_new();
	if (!base)
		fatal("event_base_new failed");
	char err[256];
	int warnings = 0, status = 0;
	struct dns_resolver *global = dns_resolver_new(base, &conf->dns, NULL, err, sizeof err);
	if (!global) {
		complain("dns: %s", err);
		status = -1;
	} else {
		report(out, "\nhost names in rules, looked up now:\n");
	}
	for (size_t i = 0; global && i < conf->nservers; i++) {
		const struct conf_server *srv = &conf->servers[i];
		struct dns_resolver *own = NULL;
		if (srv->nhosts == 0)
			continue;
		if (srv->dns.nservers > 0 &&
		    !(own = dns_resolver_new(base, &srv->dns, NULL, err, sizeof err))) {
			complain("server %s: dns: %s", srv->name, err);
			status = -1;
			continue;
		}
		check_hosts_server(base, own ? own : global, srv, out, &warnings);
		if (own)
			dns_resolver_free(own);
	}
	if (global)
		dns_resolver_free(global);
	event_base_free(base);
	return status < 0 ? status : warnings;
}

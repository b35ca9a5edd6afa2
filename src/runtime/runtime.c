/* runtime: one configuration generation — the configuration with the
 * users, aliases, certificates, resolvers and the host rules' addresses
 * loaded alongside it —
 * reference-counted, so that a reload (SIGHUP) never changes the rules
 * under a session or a delivery attempt that started before it. */
#include "runtime/runtime.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "auth/aliases.h"
#include "auth/directory.h"
#include "auth/userdb.h"
#include "conf/conf.h"
#include "lib/util.h"
#include "mailauth/dkim_key.h"
#include "net/dns.h"
#include "net/hostaddrs.h"
#include "net/tls.h"
#include "store/quota.h"

/* ---- runtime generations ---------------------------------------------- */

static struct runtime *current;

struct runtime *runtime_current(void)
{
	return current;
}

void runtime_set_current(struct runtime *rt)
{
	current = rt;
}

struct runtime *runtime_ref(struct runtime *rt)
{
	rt->refs++;
	return rt;
}

void runtime_unref(struct runtime *rt)
{
	if (!rt || --rt->refs > 0)
		return;
	/* before the resolvers: their lookups in flight are cancelled */
	for (size_t i = 0; rt->hosts && i < rt->conf->nservers; i++)
		hostaddrs_free(rt->hosts[i]);
	free(rt->hosts);
	for (size_t i = 0; rt->tls && i < rt->conf->nservers; i++)
		if (rt->tls[i])
			tls_server_free(rt->tls[i]);
	free(rt->tls);
	tls_server_free(rt->metrics_tls);
	for (size_t i = 0; rt->server_dns && i < rt->conf->nservers; i++)
		if (rt->server_dns[i])
			dns_resolver_free(rt->server_dns[i]);
	free(rt->server_dns);
	if (rt->dns)
		dns_resolver_free(rt->dns);
	conf_free(rt->conf);
	userdb_free(rt->users);
	directory_free(rt->directory);
	if (rt->aliases)
		aliases_free(rt->aliases);
	for (size_t i = 0; i < rt->ndkim_keys; i++)
		dkim_privkey_clear(&rt->dkim_keys[i]);
	free(rt->dkim_keys);
	free(rt);
}

static const char *const alpn_names[] = {"smtp", "pop3", "imap"};

/* Certificates and keys of every server with a tls block, and of the
 * metrics-tls block: a reload reads them anew, so SIGHUP picks up renewed
 * certificates. */
static int runtime_load_tls(struct runtime *rt, FILE *err)
{
	int errors = 0;
	rt->tls = xcalloc(rt->conf->nservers, sizeof *rt->tls);
	for (size_t i = 0; i < rt->conf->nservers; i++) {
		const struct conf_server *srv = &rt->conf->servers[i];
		if (srv->tls.ncerts == 0)
			continue;
		rt->tls[i] = tls_server_new(&srv->tls, alpn_names[srv->protocol], err);
		if (!rt->tls[i])
			errors++;
	}
	if (rt->conf->metrics_tls.ncerts > 0) {
		/* RFC 7301: HTTPS offers http/1.1 (evhttp speaks no HTTP/2) */
		rt->metrics_tls = tls_server_new(&rt->conf->metrics_tls, "http/1.1", err);
		errors += rt->metrics_tls == NULL;
	}
	return errors;
}

/* One dkim key: a PEM private key that only its owner may read. */
static int runtime_load_dkim_key(const struct conf_dkim_key *ck, struct dkim_privkey *out,
				 FILE *err)
{
	char why[512];
	struct stat st;
	if (stat(ck->file, &st) == 0 && (st.st_mode & 077)) {
		report(err, "%s:%u:%u: dkim key %s is readable by group or others (chmod 600)\n",
		       ck->pos.file, ck->pos.line, ck->pos.col, ck->file);
		return -1;
	}
	if (dkim_privkey_load(ck->file, ck->domain, ck->selector, out, why, sizeof why) < 0) {
		report(err, "%s:%u:%u: dkim key: %s\n", ck->pos.file, ck->pos.line, ck->pos.col, why);
		return -1;
	}
	return 0;
}

/* The dkim block's keys (RFC 6376): read with each generation, so that
 * SIGHUP picks up new keys. */
static int runtime_load_dkim(struct runtime *rt, FILE *err)
{
	const struct conf *c = rt->conf;
	int errors = 0;
	rt->dkim_keys = c->ndkim_keys ? xcalloc(c->ndkim_keys, sizeof *rt->dkim_keys) : NULL;
	for (size_t i = 0; i < c->ndkim_keys; i++) {
		if (runtime_load_dkim_key(&c->dkim_keys[i], &rt->dkim_keys[rt->ndkim_keys], err) < 0)
			errors++;
		else
			rt->ndkim_keys++;
	}
	return errors;
}

/* The global resolver and one for each server with its own `dns` (as an
 * Exchange virtual server's "external DNS servers"). */
static int runtime_load_dns(struct runtime *rt, FILE *err)
{
	char why[256];
	rt->dns = dns_resolver_new(rt->base, &rt->conf->dns, NULL, why, sizeof why);
	if (!rt->dns) {
		report(err, "dns: %s\n", why);
		return 1;
	}
	rt->server_dns = xcalloc(rt->conf->nservers, sizeof *rt->server_dns);
	int errors = 0;
	for (size_t i = 0; i < rt->conf->nservers; i++) {
		const struct conf_server *srv = &rt->conf->servers[i];
		if (srv->dns.nservers == 0)
			continue;
		rt->server_dns[i] = dns_resolver_new(rt->base, &srv->dns, NULL, why, sizeof why);
		if (!rt->server_dns[i]) {
			report(err, "server %s: dns: %s\n", srv->name, why);
			errors++;
		}
	}
	return errors;
}

/* each server's host names, looked up through the server's resolver */
void runtime_start_hosts(struct runtime *rt, const struct runtime *prev)
{
	const struct conf *c = rt->conf;
	rt->hosts = xcalloc(c->nservers, sizeof *rt->hosts);
	for (size_t i = 0; i < c->nservers; i++) {
		const struct conf_server *srv = &c->servers[i];
		if (srv->nhosts == 0)
			continue;
		rt->hosts[i] = hostaddrs_new(srv->hosts, srv->nhosts, c->host_refresh_min,
					     c->host_refresh_max);
		const struct conf_server *old = prev ? runtime_server(prev, srv->name) : NULL;
		if (old)
			hostaddrs_seed(rt->hosts[i], runtime_hosts(prev, old));
		hostaddrs_start(rt->hosts[i], rt->base, runtime_resolver(rt, srv), srv->name);
	}
}

const struct hostaddrs *runtime_hosts(const struct runtime *rt, const struct conf_server *srv)
{
	return rt->hosts ? rt->hosts[srv - rt->conf->servers] : NULL;
}

struct dns_resolver *runtime_resolver(const struct runtime *rt, const struct conf_server *srv)
{
	struct dns_resolver *own = rt->server_dns[srv - rt->conf->servers];
	return own ? own : rt->dns;
}

int runtime_build(const char *path, struct spool *sp, struct event_base *base, FILE *err,
		  struct runtime **out)
{
	struct runtime *rt = xcalloc(1, sizeof *rt);
	rt->refs = 1;
	rt->spool = sp;
	rt->base = base;
	int errors = conf_load(path, &rt->conf, err);
	if (errors) {
		runtime_unref(rt);
		*out = NULL;
		return errors;
	}
	/* every part, so that every problem is told at once */
	if (rt->conf->ldap)
		errors += !(rt->directory = directory_new(rt->conf->ldap, base, err));
	else
		errors += userdb_load(rt->conf->users, &rt->users, err) != 0;
	if (rt->conf->aliases)
		errors += aliases_load(rt->conf->aliases, &rt->aliases, err);
	errors += runtime_load_tls(rt, err);
	errors += runtime_load_dns(rt, err);
	errors += runtime_load_dkim(rt, err);
	*out = rt;
	return errors;
}

const struct conf_server *runtime_server(const struct runtime *rt, const char *name)
{
	for (size_t i = 0; i < rt->conf->nservers; i++)
		if (strcmp(rt->conf->servers[i].name, name) == 0)
			return &rt->conf->servers[i];
	return NULL;
}


void runtime_quota(const struct runtime *rt, const char *address, struct quota_limit *out)
{
	const struct user_record *rec = rt->users ? userdb_find(rt->users, address) : NULL;
	if (rec && rec->quota_set) {
		out->bytes = rec->quota_bytes;
		out->messages = rec->quota_messages;
		return;
	}
	out->bytes = rt->conf->quota_bytes;
	out->messages = rt->conf->quota_messages;
}

struct quota_table *runtime_quota_table(const struct runtime *rt)
{
	const struct quota_limit dflt = {rt->conf->quota_bytes, rt->conf->quota_messages};
	struct quota_table *t = quota_table_new(&dflt);
	size_t n = rt->users ? userdb_count(rt->users) : 0;
	for (size_t i = 0; i < n; i++) {
		const struct user_record *rec = userdb_at(rt->users, i);
		if (rec->quota_set) {
			const struct quota_limit l = {rec->quota_bytes, rec->quota_messages};
			quota_table_add(t, rec->address, &l);
		}
	}
	quota_table_seal(t);
	return t;
}

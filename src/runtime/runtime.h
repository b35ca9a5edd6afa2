/* runtime: one configuration generation with what was loaded alongside it
 * (users, aliases, certificates, resolvers, the addresses of the host
 * rules' names), reference-counted.  The
 * daemon makes one at start and one at each reload; a session or a
 * delivery attempt holds a reference for its whole life. */
#ifndef POSTHORN_RUNTIME_H
#define POSTHORN_RUNTIME_H

#include <stdio.h>

struct conf;
struct conf_server;
struct userdb;
struct directory;
struct aliases;
struct spool;
struct event_base;
struct tls_server;
struct throttle;
struct dns_resolver;
struct hostaddrs;
struct dkim_privkey;
struct quota_limit;
struct quota_table;

struct runtime {
	int refs;
	struct conf *conf;
	struct userdb *users;        /* NULL with a directory */
	struct directory *directory; /* users ldap { }: NULL: the users file */
	struct aliases *aliases;     /* NULL when no aliases file */
	struct tls_server **tls;     /* per conf->servers[i]; NULL: no certificate */
	struct tls_server *metrics_tls; /* the metrics-tls block's; NULL: none */
	struct dns_resolver *dns;    /* the global `dns` servers (or resolv.conf) */
	struct dns_resolver **server_dns; /* per server with its own `dns`; else NULL */
	struct hostaddrs **hosts;    /* per server with host rules; else NULL */
	struct spool *spool;         /* shared by every generation */
	struct event_base *base;
	struct throttle *throttle; /* shared by every generation */
	struct dkim_privkey *dkim_keys; /* the dkim block's keys, read with this generation */
	size_t ndkim_keys;
};

/* Load the configuration at path with its users, aliases, certificates
 * and resolvers, telling every problem on err, one line each.  Returns the
 * number of problems.  *out is the generation (one reference) whenever the
 * configuration itself parsed, even with problems elsewhere, so that a
 * caller can check more of it (daemon/preflight.h); with problems it is
 * only for that, then runtime_unref(). */
int runtime_build(const char *path, struct spool *sp, struct event_base *base, FILE *err,
		  struct runtime **out);
/* Start the generation's own lookups of its host rules' names, beginning
 * with what prev (the running generation, or NULL) knows of them, so that
 * its rules keep matching until the new answers come.  Only a generation
 * that is to serve starts them; `posthorn check` looks names up itself. */
void runtime_start_hosts(struct runtime *rt, const struct runtime *prev);
struct runtime *runtime_ref(struct runtime *rt);
void runtime_unref(struct runtime *rt);

/* The generation new work starts with (no reference taken), and its
 * replacement at a reload (the caller keeps its own reference). */
struct runtime *runtime_current(void);
void runtime_set_current(struct runtime *rt);

/* The resolver for server srv of rt: its own, or the global one. */
struct dns_resolver *runtime_resolver(const struct runtime *rt, const struct conf_server *srv);
/* The addresses of server srv's host rules (NULL when it has none). */
const struct hostaddrs *runtime_hosts(const struct runtime *rt, const struct conf_server *srv);
/* The server block called name in this generation, or NULL. */
const struct conf_server *runtime_server(const struct runtime *rt, const char *name);
/* The quota of user address (RFC 9208): the users file's own limit for
 * that user, else the configuration's `quota` (0: no limit). */
void runtime_quota(const struct runtime *rt, const char *address, struct quota_limit *out);
/* Every user's quota in a table that the delivery worker may read (the
 * caller frees it with quota_table_free). */
struct quota_table *runtime_quota_table(const struct runtime *rt);

#endif

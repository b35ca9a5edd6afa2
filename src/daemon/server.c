/* server: the daemon.  One libevent loop; the listeners of every virtual
 * server; accept with the connection limits; configuration generations,
 * so that SIGHUP reloads without touching established sessions; privilege
 * drop after binding; clean shutdown on SIGTERM/SIGINT. */
#include "daemon/server.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/listener.h>

#include "net/access.h"
#include "net/addr.h"
#include "net/proxy_wait.h"
#include "proto/session.h"
#include "runtime/runtime.h"
#include "auth/aliases.h"
#include "conf/conf.h"
#include "daemon/acme.h"
#include "daemon/confine.h"
#include "lib/offload.h"
#include "daemon/control.h"
#include "daemon/notify.h"
#include "daemon/httpd.h"
#include "lib/metrics.h"
#include "lib/recent.h"
#include "queue/scheduler.h"
#include "net/dns.h"
#include "net/dnsbl.h"
#include "proto/imap/imap_session.h"
#include "lib/log.h"
#include "store/message.h"
#include "proto/pop3/pop3_session.h"
#include "daemon/preflight.h"
#include "daemon/privdrop.h"
#include "auth/throttle.h"
#include "proto/smtp/smtp_session.h"
#include "queue/spool.h"
#include "net/tls.h"
#include "auth/userdb.h"
#include "lib/util.h"

enum {
	SERVER_LISTEN_BACKLOG = 1024,
	SERVER_ACCEPT_PAUSE_SECONDS = 1, /* after EMFILE/ENFILE */
	SERVER_COUNT_BUCKETS = 4096,
	SERVER_THROTTLE_ENTRIES = 10000, /* client addresses remembered for lockout */
	SERVER_SHUTDOWN_GRACE_MS = 3000, /* for the last replies to leave */
	SERVER_USERS_POLL_MS = 1000,     /* how often the users file is looked at */
	SERVER_FD_RESERVE = 256,         /* listeners, files, DNS, outbound, control */
	SERVER_REPLY_MAX = 512,          /* a refusal before any session exists */
	SERVER_COUNT_KEY_MAX = 512,      /* "server|address" of the per-address count */
};

struct listener {
	struct listener *next;
	struct conf_sockaddr addr;      /* addr.text owned here */
	char *server_name;
	bool tls;
	bool proxy;                     /* a PROXY header first (net/proxy.h) */
	struct evconnlistener *lev;
	struct event *resume;           /* re-enable after running out of fds */
};

/* The daemon's state: one per process, used only by the loop thread. */
static struct {
	const char *conf_path;
	struct event_base *base;
	struct listener *listeners;
	struct session_link *conns;
	struct proxied *proxying;       /* connections waiting for their PROXY header */
	bool dropped;                   /* privileges already given up */
	struct stat users_seen;         /* the users file when last loaded */
} daemon_state;

/* ---- connection counting ---------------------------------------------- */

/* Open connections per server ("name") and per server and client address
 * ("name|address"), in a small chained hash table. */
struct count {
	struct count *next;
	unsigned n;
	char key[];
};

static struct count *count_table[SERVER_COUNT_BUCKETS];

static unsigned count_hash(const char *key)
{
	unsigned h = 2166136261u; /* FNV-1a */
	for (const unsigned char *p = (const unsigned char *)key; *p; p++)
		h = (h ^ *p) * 16777619u;
	return h % SERVER_COUNT_BUCKETS;
}

static struct count **count_find(const char *key)
{
	struct count **pp = &count_table[count_hash(key)];
	while (*pp && strcmp((*pp)->key, key) != 0)
		pp = &(*pp)->next;
	return pp;
}

static unsigned count_get(const char *key)
{
	struct count *c = *count_find(key);
	return c ? c->n : 0;
}

static void count_add(const char *key, int delta)
{
	struct count **pp = count_find(key);
	if (!*pp) {
		size_t len = strlen(key) + 1;
		*pp = xcalloc(1, sizeof **pp + len);
		memcpy((*pp)->key, key, len);
	}
	(*pp)->n += (unsigned)delta;
	if ((*pp)->n == 0) {
		struct count *dead = *pp;
		*pp = dead->next;
		free(dead);
	}
}

static void conn_count(const struct session_link *c, int delta)
{
	char key[SERVER_COUNT_KEY_MAX];
	count_add(c->server_name, delta);
	metrics_set(METRIC_CONNECTIONS_OPEN, METRIC_LABELS(c->server_name),
		    count_get(c->server_name));
	/* fits: a server name (64 bytes at most, conf) and an address text */
	xsnprintf(key, sizeof key, "%s|%s", c->server_name, c->client);
	count_add(key, delta);
}

static void server_link_closed(struct session_link *c)
{
	conn_count(c, -1);
	if (c->prev)
		c->prev->next = c->next;
	else
		daemon_state.conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	free(c->server_name);
	free(c);
}

/* ---- accepting ---------------------------------------------------------- */

/* Refuse before any session exists: one reply, then close. */
static void server_refuse(int fd, const char *reply)
{
	ssize_t w = send(fd, reply, strlen(reply), MSG_DONTWAIT | MSG_NOSIGNAL);
	(void)w; /* best effort: the client is being turned away anyway */
	close(fd);
}

/* The "too many connections" reply in the server's protocol, sent in the
 * clear before any session exists.  Nothing is sent on an implicit-TLS
 * listener: plaintext there would only confuse the client's TLS stack,
 * and a handshake per refused connection is what a flood wants.  out
 * holds SERVER_REPLY_MAX bytes, which the longest host name (255, conf)
 * and the longest text fit in. */
static void server_limit_reply(const struct conf_server *srv, bool per_ip, char *out,
			       size_t outsz)
{
	out[0] = '\0';
	const char *what = per_ip ? "too many connections from your address"
				  : "too many connections";
	switch (srv->protocol) {
	case PROTO_SMTP:
		xsnprintf(out, outsz, "421 4.7.0 %s Error: %s\r\n", srv->hostname, what);
		break;
	case PROTO_POP3:
		xsnprintf(out, outsz, "-ERR [SYS/TEMP] %s: %s\r\n", srv->hostname, what);
		break;
	case PROTO_IMAP:
		xsnprintf(out, outsz, "* BYE [UNAVAILABLE] %s: %s\r\n", srv->hostname, what);
		break;
	}
}

static bool server_over_limits(const struct conf_server *srv, bool implicit_tls,
			       const char *client, int fd)
{
	char key[SERVER_COUNT_KEY_MAX];
	bool per_ip;
	/* fits: as in conn_count() */
	xsnprintf(key, sizeof key, "%s|%s", srv->name, client);
	if (count_get(srv->name) >= srv->limits.connections)
		per_ip = false;
	else if (count_get(key) >= srv->limits.connections_per_ip)
		per_ip = true;
	else
		return false;
	log_info("event=refuse server=%s client=%s reason=connection-limit limit=%s", srv->name,
		 client, per_ip ? "per-address" : "server");
	metrics_count(METRIC_CONNECTIONS, METRIC_LABELS(srv->name, "refused-limit"));
	recent_note("refused", srv->name, "%s: connection limit (%s)", client,
		    per_ip ? "per address" : "server");
	if (implicit_tls) {
		close(fd);
		return true;
	}
	char reply[SERVER_REPLY_MAX];
	server_limit_reply(srv, per_ip, reply, sizeof reply);
	server_refuse(fd, reply);
	return true;
}

/* ---- admission: the connection rules, after the client's name ---------- */

/* A connection waiting for the client's reverse name. */
/* A connection accepted and not yet admitted: what a wait for the
 * client's name or for the block lists keeps of it. */
struct arrival {
	struct session_link *conn;
	struct runtime *rt;             /* a reference, given back by arrival_done() */
	const struct conf_server *srv;
	struct tls_server *ts;
	bool implicit_tls;
	int fd;
	struct sockaddr_storage peer;
	socklen_t peerlen;
};

static void arrival_init(struct arrival *a, struct runtime *rt, const struct conf_server *srv,
			 struct tls_server *ts, bool implicit_tls, int fd,
			 const struct sockaddr *peer, socklen_t peerlen, struct session_link *c)
{
	a->conn = c;
	a->rt = runtime_ref(rt);
	a->srv = srv;
	a->ts = ts;
	a->implicit_tls = implicit_tls;
	a->fd = fd;
	memcpy(&a->peer, peer, peerlen);
	a->peerlen = peerlen;
}

static void arrival_done(struct arrival *a)
{
	runtime_unref(a->rt);
}

struct pending {
	struct arrival a;
	struct dns_resolver *resolver;
	dns_query_id query;
};

/* Which rules list the client, from the block lists' findings (NULL:
 * none); the caller frees it. */
static bool *server_listed(const struct conf_server *srv, const struct dnsbl_result *dnsbl)
{
	size_t n = srv->connection.nrules;
	bool *listed = xcalloc(n ? n : 1, sizeof *listed);
	for (size_t i = 0; dnsbl && i < n; i++)
		listed[i] = dnsbl[i].state == DNSBL_LISTED;
	return listed;
}

static void server_log_rule_refusal(const struct conf_server *srv, const struct session_link *c,
				    const char *name, const char *dns_status,
				    const struct conf_rule *rule)
{
	char esc[LOG_VALUE_MAX], q[LOG_VALUE_MAX];
	const char *text = rule ? rule->text : "default deny"; /* configuration text */
	log_info("event=refuse server=%s client=%s name=%s reason=connection-rule rule=\"%s\"%s%s",
		 srv->name, c->client, name ? log_escape(esc, sizeof esc, name, strlen(name)) : "-",
		 log_quote(q, sizeof q, text, strlen(text)), dns_status ? " dns=" : "",
		 dns_status ? dns_status : "");
	metrics_count(METRIC_CONNECTIONS, METRIC_LABELS(srv->name, "refused-rule"));
	if (rule)
		recent_note("refused", srv->name, "%s: connection rule deny %s (%s:%u)", c->client,
			    rule->text, rule->pos.file, rule->pos.line);
	else
		recent_note("refused", srv->name, "%s: connection default deny", c->client);
}

/* A dnsbl rule denied the client: refused now, or (where clients log in)
 * at MAIL unless it logs in first. */
static void server_log_list_refusal(const struct conf_server *srv, const struct session_link *c,
				    const struct conf_rule *rule, const struct dnsbl_result *res,
				    bool at_mail)
{
	char q[LOG_VALUE_MAX];
	log_info("event=refuse server=%s client=%s reason=dnsbl zone=%s answer=%s stage=%s%s%s",
		 srv->name, c->client, rule->domain, res->answer, at_mail ? "mail-unless-login" :
		 "greeting", *res->reason ? " text=" : "",
		 *res->reason ? log_quote(q, sizeof q, res->reason, strlen(res->reason)) : "");
	metrics_count(METRIC_CONNECTIONS,
		      METRIC_LABELS(srv->name, at_mail ? "accepted" : "refused-dnsbl"));
	recent_note("refused", srv->name, "%s: listed in %s (%s)%s", c->client, rule->domain,
		    res->answer, at_mail ? ", may send after a login" : "");
}

/* Decide by the `connection` rules, with the block lists' findings
 * (dnsbl: one per rule, or NULL), and hand the client to its protocol. */
static void server_decide(struct runtime *rt, const struct conf_server *srv,
			  struct tls_server *ts, bool implicit_tls, int fd,
			  const struct sockaddr *peer, socklen_t peerlen, struct session_link *c,
			  const char *name, const char *dns_status, const struct dnsbl_result *dnsbl)
{
	const struct conf_rule *rule = NULL;
	bool *listed = server_listed(srv, dnsbl);
	bool allowed = access_connection_decide(&srv->connection, peer, name,
						runtime_hosts(rt, srv), listed, &rule);
	free(listed);
	bool by_list = dnsbl && !allowed && rule && rule->kind == RULE_DNSBL;
	bool at_mail = by_list && conf_smtp_offers_login(srv);
	char refusal[DNSBL_REFUSAL_MAX] = "";
	if (by_list) {
		const struct dnsbl_result *res = &dnsbl[rule - srv->connection.rules];
		dnsbl_refusal_text(c->client, rule->domain, res->reason, refusal, sizeof refusal);
		server_log_list_refusal(srv, c, rule, res, at_mail);
	} else if (!allowed) {
		server_log_rule_refusal(srv, c, name, dns_status, rule);
	} else {
		metrics_count(METRIC_CONNECTIONS, METRIC_LABELS(srv->name, "accepted"));
	}
	struct session_start st = {
		.rt = rt,
		.srv = srv,
		.ts = ts,
		.implicit_tls = implicit_tls,
		.fd = fd,
		.peer = peer,
		.peerlen = peerlen,
		.link = c,
		.client_name = name,
		.refused = !allowed && !at_mail,
		.listed = at_mail,
		.refusal = by_list ? refusal : NULL,
	};
	switch (srv->protocol) {
	case PROTO_SMTP:
		smtp_session_start(&st);
		break;
	case PROTO_POP3:
		pop3_session_start(&st);
		break;
	case PROTO_IMAP:
		imap_session_start(&st);
		break;
	}
}

/* A connection waiting for its block lists' answers. */
struct listing {
	struct arrival a;
	char *name;
	const char *dns_status; /* static text from dns_status_name() */
	struct dnsbl_check *check;
};

static void listing_free(struct listing *w)
{
	arrival_done(&w->a);
	free(w->name);
	free(w);
}

/* A list that could not be asked lists nobody; the log says so. */
static void server_log_list_failures(const struct listing *w, const struct dnsbl_result *res,
				     size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (res[i].state == DNSBL_FAILED)
			log_info("event=dnsbl server=%s client=%s zone=%s status=%s", w->a.srv->name,
				 w->a.conn->client, w->a.srv->connection.rules[i].domain,
				 dns_status_name(res[i].dns));
}

static void server_lists_answered(void *arg, const struct dnsbl_result *res, size_t n)
{
	struct listing *w = arg;
	server_log_list_failures(w, res, n);
	const struct arrival *a = &w->a;
	server_decide(a->rt, a->srv, a->ts, a->implicit_tls, a->fd, (struct sockaddr *)&a->peer,
		      a->peerlen, a->conn, w->name, w->dns_status, res);
	listing_free(w);
}

/* Shutdown while the lists are being asked. */
static void server_listing_drop(struct session_link *c)
{
	struct listing *w = c->session;
	dnsbl_check_cancel(w->check);
	close(w->a.fd);
	listing_free(w);
	server_link_closed(c);
}

static bool server_dnsbl_before(const struct conf_server *srv, size_t reach)
{
	for (size_t i = 0; i < reach; i++)
		if (srv->connection.rules[i].kind == RULE_DNSBL)
			return true;
	return false;
}

/* Ask the block lists the rules reach before another rule decides (RFC
 * 5782 §2.1), then decide. */
static void server_admit(struct runtime *rt, const struct conf_server *srv, struct tls_server *ts,
			 bool implicit_tls, int fd, const struct sockaddr *peer, socklen_t peerlen,
			 struct session_link *c, const char *name, const char *dns_status)
{
	const struct conf_connection *cn = &srv->connection;
	size_t reach = access_dnsbl_reach(cn, peer, name, runtime_hosts(rt, srv));
	if (!server_dnsbl_before(srv, reach)) {
		server_decide(rt, srv, ts, implicit_tls, fd, peer, peerlen, c, name, dns_status, NULL);
		return;
	}
	struct listing *w = xcalloc(1, sizeof *w);
	arrival_init(&w->a, rt, srv, ts, implicit_tls, fd, peer, peerlen, c);
	w->name = name ? xstrdup(name) : NULL;
	w->dns_status = dns_status;
	c->session = w;
	c->shutdown = server_listing_drop;
	c->abort = server_listing_drop;
	/* the answers may all come from the cache at once, and free w */
	struct dnsbl_check *chk = dnsbl_check_start(runtime_resolver(rt, srv), cn->rules,
						    cn->nrules, reach, peer, server_lists_answered, w);
	if (chk)
		w->check = chk;
}

static void pending_free(struct pending *p)
{
	arrival_done(&p->a);
	free(p);
}

static void server_name_found(void *arg, enum dns_status st, const char *name)
{
	struct pending *p = arg;
	const char *status = NULL;
	if (st != DNS_OK && st != DNS_NOTFOUND) {
		/* no name: domain rules cannot match; the log says why */
		status = dns_status_name(st);
		log_info("event=dns-lookup server=%s client=%s status=%s", p->a.srv->name,
			 p->a.conn->client, status);
	}
	const struct arrival *a = &p->a;
	server_admit(a->rt, a->srv, a->ts, a->implicit_tls, a->fd, (struct sockaddr *)&a->peer,
		     a->peerlen, a->conn, st == DNS_OK ? name : NULL, status);
	pending_free(p);
}

/* Shutdown while the name is being looked up. */
static void server_pending_drop(struct session_link *c)
{
	struct pending *p = c->session;
	dns_cancel(p->resolver, p->query);
	close(p->a.fd);
	pending_free(p);
	server_link_closed(c);
}

static bool server_wants_name(const struct conf_server *srv)
{
	return srv->connection.reverse_lookup ||
	       access_needs_name(srv->connection.rules, srv->connection.nrules);
}

static void server_lookup_then_admit(struct runtime *rt, const struct conf_server *srv,
				     struct tls_server *ts, bool implicit_tls, int fd,
				     const struct sockaddr *sa, socklen_t salen, struct session_link *c)
{
	struct pending *p = xcalloc(1, sizeof *p);
	arrival_init(&p->a, rt, srv, ts, implicit_tls, fd, sa, salen, c);
	p->resolver = runtime_resolver(rt, srv);
	c->session = p;
	c->shutdown = server_pending_drop;
	c->abort = server_pending_drop;
	/* the answer may come at once, from the cache, and free p */
	dns_query_id q = dns_lookup_fcrdns(p->resolver, sa, server_name_found, p);
	if (q)
		p->query = q;
}

/* Count the client against the limits and admit it (after its name). */
static void server_accept_client(struct runtime *rt, const struct conf_server *srv, bool tls,
				 int fd, const struct sockaddr *sa, socklen_t salen)
{
	struct tls_server *ts = rt->tls[srv - rt->conf->servers];
	char client[ADDR_TEXT_SIZE];
	addr_text(sa, client, sizeof client);
	if (server_over_limits(srv, tls, client, fd))
		return;

	struct session_link *c = xcalloc(1, sizeof *c);
	c->server_name = xstrdup(srv->name);
	c->closed = server_link_closed;
	memcpy(c->client, client, sizeof c->client);
	c->next = daemon_state.conns;
	if (c->next)
		c->next->prev = c;
	daemon_state.conns = c;
	conn_count(c, +1);
	if (server_wants_name(srv))
		server_lookup_then_admit(rt, srv, ts, tls, fd, sa, salen, c);
	else
		server_admit(rt, srv, ts, tls, fd, sa, salen, c, NULL, NULL);
}

/* ---- the PROXY header: the client's address from a trusted balancer ---- */

/* A connection to a `proxy` listener waiting for its header.  It counts
 * against the server's limit of connections (not per address: its peer
 * is the balancer); the client's own address is counted once known. */
struct proxied {
	struct proxied *prev, *next;
	struct proxy_wait *wait;
	char *server_name;
	bool tls;
	struct sockaddr_storage peer;   /* the balancer */
	socklen_t peerlen;
	char peer_text[ADDR_TEXT_SIZE];
};

static void proxied_forget(struct proxied *p)
{
	if (p->prev)
		p->prev->next = p->next;
	else
		daemon_state.proxying = p->next;
	if (p->next)
		p->next->prev = p->prev;
	count_add(p->server_name, -1);
	free(p->server_name);
	free(p);
}

static void server_proxy_refused(const char *server, const char *peer, const char *why)
{
	log_info("event=proxy-refused server=%s peer=%s reason=%s", server, peer, why);
	metrics_count(METRIC_CONNECTIONS, METRIC_LABELS(server, "refused-proxy"));
	recent_note("refused", server, "%s: PROXY header refused (%s)", peer, why);
}

static void server_proxy_done(void *arg, int fd, const struct proxy_header *h, const char *why)
{
	struct proxied *p = arg;
	if (!h) {
		server_proxy_refused(p->server_name, p->peer_text, why);
		proxied_forget(p);
		return;
	}
	/* v1 UNKNOWN, v2 LOCAL: the balancer speaks for itself */
	struct sockaddr_storage client = h->local ? p->peer : h->src;
	socklen_t clientlen = h->local ? p->peerlen : h->srclen;
	char text[ADDR_TEXT_SIZE];
	addr_text((const struct sockaddr *)&client, text, sizeof text);
	log_info("event=proxy server=%s peer=%s client=%s version=%d%s", p->server_name,
		 p->peer_text, text, h->version, h->local ? " local=yes" : "");
	struct runtime *rt = runtime_current();
	const struct conf_server *srv = runtime_server(rt, p->server_name);
	bool tls = p->tls;
	proxied_forget(p);
	if (!srv) { /* a reload took the server away meanwhile */
		close(fd);
		return;
	}
	server_accept_client(rt, srv, tls, fd, (const struct sockaddr *)&client, clientlen);
}

/* Only a peer of proxy-from may say who the client is; then the header,
 * within limits.proxy-timeout, before anything else is read or sent. */
static void server_proxy_begin(const struct listener *l, const struct conf_server *srv, int fd,
			       const struct sockaddr *sa, int salen)
{
	char peer[ADDR_TEXT_SIZE];
	addr_text(sa, peer, sizeof peer);
	if (access_first_match(srv->proxy_from, srv->nproxy_from, sa, NULL, NULL) == NULL) {
		server_proxy_refused(srv->name, peer, "untrusted-peer");
		close(fd);
		return;
	}
	if (count_get(srv->name) >= srv->limits.connections) {
		log_info("event=refuse server=%s client=%s reason=connection-limit limit=server",
			 srv->name, peer);
		close(fd);
		return;
	}
	struct proxied *p = xcalloc(1, sizeof *p);
	p->server_name = xstrdup(srv->name);
	p->tls = l->tls;
	memcpy(&p->peer, sa, (size_t)salen);
	p->peerlen = (socklen_t)salen;
	memcpy(p->peer_text, peer, sizeof peer);
	p->next = daemon_state.proxying;
	if (p->next)
		p->next->prev = p;
	daemon_state.proxying = p;
	count_add(srv->name, +1);
	p->wait = proxy_wait_start(daemon_state.base, fd, srv->limits.proxy_timeout,
				   server_proxy_done, p);
}

/* Shutdown: connections still without a header are closed. */
static void server_proxy_drop_all(void)
{
	while (daemon_state.proxying) {
		struct proxied *p = daemon_state.proxying;
		proxy_wait_cancel(p->wait);
		proxied_forget(p);
	}
}

static void server_accept(struct evconnlistener *lev, evutil_socket_t fd, struct sockaddr *sa,
			  int salen, void *arg)
{
	struct listener *l = arg;
	struct runtime *rt = runtime_current();
	const struct conf_server *srv = runtime_server(rt, l->server_name);
	if (!srv) {
		close(fd);
		return;
	}
	if (l->proxy)
		server_proxy_begin(l, srv, fd, sa, salen);
	else
		server_accept_client(rt, srv, l->tls, fd, sa, (socklen_t)salen);
}

static void server_resume_accept(evutil_socket_t fd, short what, void *arg)
{
	struct listener *l = arg;
	evconnlistener_enable(l->lev);
}

/* Out of file descriptors: pause this listener instead of spinning. */
static void server_accept_error(struct evconnlistener *lev, void *arg)
{
	struct listener *l = arg;
	int err = EVUTIL_SOCKET_ERROR();
	log_warn("event=accept-error address=%s error=\"%s\" pause=%ds", l->addr.text,
		 evutil_socket_error_to_string(err), SERVER_ACCEPT_PAUSE_SECONDS);
	evconnlistener_disable(lev);
	struct timeval tv = {.tv_sec = SERVER_ACCEPT_PAUSE_SECONDS};
	event_add(l->resume, &tv);
}

/* ---- listeners ----------------------------------------------------------- */

static int listener_socket(const struct conf_sockaddr *a, char *err, size_t errsz)
{
	int fd = socket(a->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	int one = 1;
	if (fd < 0) {
		errfmt(err, errsz, "%s: socket: %s", a->text, strerror(errno));
		return -1;
	}
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
	    (a->ss.ss_family == AF_INET6 &&
	     setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one) < 0) ||
	    bind(fd, (const struct sockaddr *)&a->ss, a->len) < 0 ||
	    listen(fd, SERVER_LISTEN_BACKLOG) < 0) {
		errfmt(err, errsz, "%s: %s", a->text, strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

static struct listener *listener_new(const struct conf_listen *cl, const char *server,
				     char *err, size_t errsz)
{
	int fd = listener_socket(&cl->addr, err, errsz);
	if (fd < 0)
		return NULL;
	struct listener *l = xcalloc(1, sizeof *l);
	l->addr = cl->addr;
	l->addr.text = xstrdup(cl->addr.text);
	l->server_name = xstrdup(server);
	l->tls = cl->tls;
	l->proxy = cl->proxy;
	l->lev = evconnlistener_new(daemon_state.base, server_accept, l,
				    LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, 0, fd);
	if (!l->lev)
		fatal("evconnlistener_new failed");
	evconnlistener_set_error_cb(l->lev, server_accept_error);
	l->resume = evtimer_new(daemon_state.base, server_resume_accept, l);
	return l;
}

static void listener_free(struct listener *l)
{
	evconnlistener_free(l->lev);
	event_free(l->resume);
	free(l->addr.text);
	free(l->server_name);
	free(l);
}

static bool sockaddr_same(const struct conf_sockaddr *a, const struct conf_sockaddr *b)
{
	return a->len == b->len && memcmp(&a->ss, &b->ss, a->len) == 0;
}

/* Take the listener for this address out of *list, if there is one. */
static struct listener *listener_take(struct listener **list, const struct conf_sockaddr *a)
{
	for (struct listener **pp = list; *pp; pp = &(*pp)->next) {
		if (sockaddr_same(&(*pp)->addr, a)) {
			struct listener *l = *pp;
			*pp = l->next;
			l->next = NULL;
			return l;
		}
	}
	return NULL;
}

static void listeners_free(struct listener *list)
{
	while (list) {
		struct listener *next = list->next;
		listener_free(list);
		list = next;
	}
}

static bool listener_in(const struct listener *list, const struct conf_sockaddr *a)
{
	for (; list; list = list->next)
		if (sockaddr_same(&list->addr, a))
			return true;
	return false;
}

/* Make the listeners match rt: keep the sockets of addresses that stay
 * (they may be privileged ports we can no longer bind), open new ones,
 * close the rest.  On failure nothing changes. */
static int listeners_apply(const struct runtime *rt)
{
	struct listener *created = NULL, *fresh = NULL;
	char err[512];
	/* first open every new socket, so that a failure changes nothing */
	for (size_t i = 0; i < rt->conf->nservers; i++) {
		const struct conf_server *srv = &rt->conf->servers[i];
		for (size_t j = 0; j < srv->nlistens; j++) {
			const struct conf_listen *cl = &srv->listens[j];
			if (listener_in(daemon_state.listeners, &cl->addr))
				continue;
			struct listener *l = listener_new(cl, srv->name, err, sizeof err);
			if (!l) {
				char q[LOG_VALUE_MAX]; /* err holds the address as configured */
				log_err("event=listen-error server=%s error=\"%s\"", srv->name,
					log_quote(q, sizeof q, err, strlen(err)));
				listeners_free(created);
				return -1;
			}
			l->next = created;
			created = l;
		}
	}
	for (size_t i = 0; i < rt->conf->nservers; i++) {
		const struct conf_server *srv = &rt->conf->servers[i];
		for (size_t j = 0; j < srv->nlistens; j++) {
			const struct conf_listen *cl = &srv->listens[j];
			struct listener *l = listener_take(&daemon_state.listeners, &cl->addr);
			if (!l)
				l = listener_take(&created, &cl->addr);
			free(l->server_name);
			l->server_name = xstrdup(srv->name);
			l->tls = cl->tls;
			l->proxy = cl->proxy;
			l->next = fresh;
			fresh = l;
			log_info("event=listening server=%s address=%s%s%s", srv->name, cl->addr.text,
				 cl->tls ? " tls=implicit" : "", cl->proxy ? " proxy=yes" : "");
		}
	}
	listeners_free(daemon_state.listeners);
	daemon_state.listeners = fresh;
	return 0;
}

/* ---- privileges and folders -------------------------------------------- */

/* The recycled files in free/ (written over as run-as) from a run as root. */
static void server_chown_free(const char *dir, uid_t uid, gid_t gid)
{
	char path[4096];
	if (!bsnprintf(path, sizeof path, "%s/free", dir))
		return;
	DIR *d = opendir(path);
	if (!d)
		return;
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		if (fchownat(dirfd(d), de->d_name, uid, gid, AT_SYMLINK_NOFOLLOW) < 0)
			log_warn("event=chown-failed path=%s/%s error=\"%s\"", path, de->d_name,
				 strerror(errno));
	}
	closedir(d);
}

/* chown dir/queue/NAME, or -1 with errno (ENAMETOOLONG: a path that does
 * not fit is never used cut). */
static int server_chown_queued(const char *dir, const char *name, uid_t uid, gid_t gid)
{
	char path[4096];
	if (!bsnprintf(path, sizeof path, "%s/queue/%s", dir, name)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	return chown(path, uid, gid);
}

/* The acme block's folder (made by acme_start) and the files an earlier
 * run as root may have left in it: the ACME worker writes them after the
 * drop. */
static int server_chown_acme(const struct conf *conf, uid_t uid, gid_t gid)
{
	static const char *const files[] = {NULL, "account.key", ACME_CERT_FILE, "status"};
	int r = 0;
	for (size_t i = 0; i < ARRAY_LEN(files) && r == 0; i++) {
		char *path = conf_acme_path(conf, files[i]);
		if (chown(path, uid, gid) < 0 && (i == 0 || errno != ENOENT)) {
			log_err("event=startup-error path=%s error=\"%s\"", path, strerror(errno));
			r = -1;
		}
		free(path);
	}
	return r;
}

/* Folders the daemon writes after dropping privileges belong to run-as. */
static int server_prepare_dirs(const struct conf *conf, const struct spool *sp, uid_t uid,
			       gid_t gid)
{
	if (mkdir_p(conf->mailboxes, 0700) < 0) {
		log_err("event=startup-error path=%s error=\"%s\"", conf->mailboxes, strerror(errno));
		return -1;
	}
	if (!conf->run_as || geteuid() != 0)
		return 0;
	const char *dir = spool_dir(sp);
	char path[4096];
	const char *const subdirs[] = {"", "/tmp", "/queue", "/free", "/journal"};
	for (size_t i = 0; i < ARRAY_LEN(subdirs); i++) {
		if (!bsnprintf(path, sizeof path, "%s%s", dir, subdirs[i])) {
			log_err("event=startup-error path=%s%s error=\"%s\"", dir, subdirs[i],
				strerror(ENAMETOOLONG));
			return -1;
		}
		if (chown(path, uid, gid) < 0) {
			log_err("event=startup-error path=%s error=\"%s\"", path, strerror(errno));
			return -1;
		}
	}
	/* messages spooled by an earlier run as root */
	char **ids;
	size_t n = spool_list((struct spool *)sp, &ids);
	for (size_t i = 0; i < n; i++) {
		char done[SPOOL_ID_SIZE + sizeof ".done"];
		/* fits: spool_list() gives valid IDs */
		xsnprintf(done, sizeof done, "%s.done", ids[i]);
		if (server_chown_queued(dir, ids[i], uid, gid) < 0)
			log_warn("event=chown-failed path=%s/queue/%s error=\"%s\"", dir, ids[i],
				 strerror(errno));
		if (server_chown_queued(dir, done, uid, gid) < 0 && errno != ENOENT)
			log_warn("event=chown-failed path=%s/queue/%s error=\"%s\"", dir, done,
				 strerror(errno));
	}
	spool_free_ids(ids, n);
	server_chown_free(dir, uid, gid);
	if (conf->acme.set && server_chown_acme(conf, uid, gid) < 0)
		return -1;
	if (chown(conf->mailboxes, uid, gid) < 0) {
		log_err("event=startup-error path=%s error=\"%s\"", conf->mailboxes, strerror(errno));
		return -1;
	}
	return 0;
}

static int server_drop_privileges(const struct conf *conf, const struct spool *sp)
{
	uid_t uid = 0;
	gid_t gid = 0;
	char err[256], q[LOG_VALUE_MAX]; /* err quotes the run-as user: q, escaped, is logged */
	if (conf->run_as && geteuid() == 0 &&
	    privdrop_lookup(conf->run_as, &uid, &gid, err, sizeof err) < 0) {
		log_err("event=startup-error error=\"%s\"", log_quote(q, sizeof q, err, strlen(err)));
		return -1;
	}
	if (server_prepare_dirs(conf, sp, uid, gid) < 0)
		return -1;
	if (geteuid() != 0)
		return 0;
	if (!conf->run_as) {
		log_warn("event=privileges user=root warning=\"runs with full privileges: set run-as\"");
		return 0;
	}
	if (privdrop_to(conf->run_as, uid, gid, err, sizeof err) < 0) {
		log_err("event=startup-error error=\"%s\"", log_quote(q, sizeof q, err, strlen(err)));
		return -1;
	}
	daemon_state.dropped = true;
	log_info("event=privileges user=%s uid=%u gid=%u", conf->run_as, (unsigned)uid,
		 (unsigned)gid);
	return 0;
}

/* ---- open files ----------------------------------------------------------- */

/* Every connection the servers may hold needs a descriptor: raise
 * RLIMIT_NOFILE to the sum of their limits.connections and a reserve
 * (as root also the hard limit, before privileges are dropped). */
static void server_raise_nofile(const struct conf *conf)
{
	rlim_t need = SERVER_FD_RESERVE;
	for (size_t i = 0; i < conf->nservers; i++)
		need += conf->servers[i].limits.connections;
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur >= need)
		return;
	struct rlimit want = {.rlim_cur = need, .rlim_max = rl.rlim_max};
	if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < need) {
		want.rlim_max = need;
		if (setrlimit(RLIMIT_NOFILE, &want) < 0) /* not root: up to the hard limit */
			want = (struct rlimit){.rlim_cur = rl.rlim_max, .rlim_max = rl.rlim_max};
	}
	if (setrlimit(RLIMIT_NOFILE, &want) < 0)
		want.rlim_cur = rl.rlim_cur;
	if (want.rlim_cur < need)
		log_warn("event=open-files-limit limit=%llu needed=%llu warning=\"fewer connections "
			 "than limits.connections allow: raise the hard limit (ulimit -Hn)\"",
			 (unsigned long long)want.rlim_cur, (unsigned long long)need);
	else
		log_info("event=open-files-limit limit=%llu", (unsigned long long)want.rlim_cur);
}

/* ---- signals ------------------------------------------------------------ */

static void server_remember_users(void);

/* True when the new configuration is in use, false when the old one stays. */
static bool server_reload(void)
{
	struct runtime *old = runtime_current();
	struct runtime *rt = preflight_load(daemon_state.conf_path, old->spool, daemon_state.base);
	if (rt)
		rt->throttle = old->throttle;
	if (!rt) {
		log_err("event=reload-failed reason=\"configuration has errors; keeping the old one\"");
		return false;
	}
	if (strcmp(rt->conf->spool, old->conf->spool) != 0)
		log_warn("event=reload warning=\"a new spool folder takes effect at restart\"");
	if (listeners_apply(rt) < 0) {
		log_err("event=reload-failed reason=\"cannot listen; keeping the old configuration\"");
		runtime_unref(rt);
		return false;
	}
	scheduler_set_mailboxes(rt->conf->mailboxes);
	scheduler_set_quotas(runtime_quota_table(rt));
	httpd_reloaded(rt);
	server_raise_nofile(rt->conf);
	runtime_set_current(rt);
	runtime_unref(old); /* freed when its last session ends */
	acme_reconfigure(rt->conf);
	server_remember_users();
	log_info("event=reload servers=%zu users=%zu", rt->conf->nservers, userdb_count(rt->users));
	return true;
}

static void server_remember_users(void)
{
	if (stat(runtime_current()->conf->users, &daemon_state.users_seen) < 0)
		memset(&daemon_state.users_seen, 0, sizeof daemon_state.users_seen);
}

static bool server_users_changed(void)
{
	struct stat now, *then = &daemon_state.users_seen;
	if (stat(runtime_current()->conf->users, &now) < 0)
		memset(&now, 0, sizeof now);
	return now.st_ino != then->st_ino || now.st_dev != then->st_dev ||
	       now.st_size != then->st_size || now.st_mtim.tv_sec != then->st_mtim.tv_sec ||
	       now.st_mtim.tv_nsec != then->st_mtim.tv_nsec;
}

/* `posthorn user` replaces the users file (a rename): pick the change up
 * without waiting for SIGHUP.  A stat a second is all it costs. */
static void server_watch_users(evutil_socket_t fd, short what, void *arg)
{
	if (!server_users_changed())
		return;
	log_info("event=users-changed path=%s", runtime_current()->conf->users);
	(void)server_reload(); /* the log says how it went */
	server_remember_users(); /* also after a failed reload: no retry storm */
}

/* A reload that systemd is told of: SIGHUP, and a new ACME certificate
 * (taken into use the same way). */
static void server_reload_notified(void)
{
	notify_reloading();
	bool ok = server_reload();
	notify_reloaded(ok, runtime_current()->conf->nservers);
}

static void server_signal(evutil_socket_t sig, short what, void *arg)
{
	if (sig == SIGHUP) {
		server_reload_notified();
		return;
	}
	log_info("event=shutdown signal=%s", sig == SIGTERM ? "TERM" : "INT");
	notify_stopping();
	event_base_loopbreak(daemon_state.base);
}

static void server_tick(evutil_socket_t fd, short what, void *arg)
{
	/* only wakes the loop up */
}

/* Every session gets its goodbye and a moment to send it; whatever is
 * still open after the grace time is dropped.  Then the loop runs once
 * more, for libevent's deferred frees. */
static void server_shutdown_sessions(void)
{
	struct session_link *c, *next;
	server_proxy_drop_all();
	for (c = daemon_state.conns; c; c = next) {
		next = c->next;
		c->shutdown(c); /* may free c */
	}
	struct event *tick = event_new(daemon_state.base, -1, EV_PERSIST, server_tick, NULL);
	struct timeval tv = {.tv_usec = 100 * 1000};
	event_add(tick, &tv);
	for (int i = 0; daemon_state.conns && i < SERVER_SHUTDOWN_GRACE_MS / 100; i++)
		event_base_loop(daemon_state.base, EVLOOP_ONCE);
	event_free(tick);
	while (daemon_state.conns)
		daemon_state.conns->abort(daemon_state.conns);
	event_base_loop(daemon_state.base, EVLOOP_NONBLOCK);
}

/* ---- the daemon ---------------------------------------------------------- */

static void server_enqueue_spooled(struct spool *sp)
{
	char **ids;
	size_t n = spool_list(sp, &ids);
	for (size_t i = 0; i < n; i++)
		scheduler_resume(ids[i]);
	if (n)
		log_info("event=spool-resume messages=%zu", n);
	spool_free_ids(ids, n);
}

/* Workers for the PBKDF2 of password logins: one per core, at least two
 * (one slow check does not hold every other login), at most four. */
static unsigned server_offload_threads(void)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);
	return n < 2 ? 2 : n > 4 ? 4 : (unsigned)n;
}

static int server_start(struct runtime *rt)
{
	char why[512];
	if (listeners_apply(rt) < 0)
		return -1;
	if (httpd_start(daemon_state.base, rt, why, sizeof why) < 0) {
		char q[LOG_VALUE_MAX]; /* why holds the address as configured */
		log_err("event=listen-error server=metrics error=\"%s\"",
			log_quote(q, sizeof q, why, strlen(why)));
		return -1;
	}
	/* its challenge listener may need a privileged port: before the drop */
	if (acme_start(daemon_state.base, rt->conf, server_reload_notified) < 0) {
		httpd_stop();
		return -1;
	}
	server_raise_nofile(rt->conf);
	if (server_drop_privileges(rt->conf, rt->spool) < 0)
		goto no_scheduler;
	if (scheduler_start(daemon_state.base, rt->spool, rt->conf->mailboxes) < 0) {
		log_err("event=startup-error error=\"cannot start delivery: %s\"", strerror(errno));
		goto no_scheduler;
	}
	scheduler_set_quotas(runtime_quota_table(rt));
	if (control_start(daemon_state.base, rt->spool, why, sizeof why) < 0) {
		log_err("event=startup-error error=\"control socket: %s\"", why);
		goto no_control;
	}
	if (spool_committer_start(rt->spool, daemon_state.base) < 0) {
		log_err("event=startup-error error=\"cannot start the spool's committer: %s\"",
			strerror(errno));
		goto no_committer;
	}
	if (offload_start(daemon_state.base, server_offload_threads()) < 0) {
		log_err("event=startup-error error=\"cannot start the password workers: %s\"",
			strerror(errno));
		goto no_offload;
	}
	server_enqueue_spooled(rt->spool); /* local part first, then handed to the runner */
	/* last: bound, dropped, files open, threads started; from here on the
	 * process cannot execute programs or gain privileges */
#ifdef POSTHORN_CALLGRIND_BUILD
	/* the benchmark's instruction count only: valgrind cannot run a
	 * process that loads a seccomp filter (it has no seccomp(2)); never
	 * the daemon that `make` builds */
	log_warn("event=confined no_new_privs=no seccomp=none warning=\"callgrind build\"");
	return 0;
#endif
	if (confine_apply(why, sizeof why) < 0) {
		log_err("event=startup-error error=\"cannot confine the process: %s\"", why);
		goto unconfined;
	}
	log_info("event=confined no_new_privs=yes seccomp=filter");
	return 0;

	/* what started is stopped, in the reverse order */
unconfined:
	offload_stop();
no_offload:
	spool_committer_stop(rt->spool);
no_committer:
	control_stop();
no_control:
	scheduler_stop();
no_scheduler:
	acme_stop();
	httpd_stop();
	return -1;
}

int server_run(const char *conf_path)
{
	if (signal(SIGPIPE, SIG_IGN) == SIG_ERR)
		fatal("signal(SIGPIPE): %s", strerror(errno));
	daemon_state.conf_path = conf_path;
	daemon_state.base = event_base_new();
	if (!daemon_state.base)
		fatal("event_base_new failed");

	/* everything `posthorn check` checks, by the same function */
	struct runtime *rt = preflight_load(conf_path, NULL, daemon_state.base);
	if (!rt)
		return 1;
	umask(077);
	struct spool *sp = spool_open(rt->conf->spool);
	if (!sp) {
		log_err("event=startup-error path=%s error=\"%s\"", rt->conf->spool, strerror(errno));
		runtime_unref(rt);
		return 1;
	}
	rt->spool = sp;
	message_init(); /* GMime, for IMAP's ENVELOPE, BODYSTRUCTURE and SEARCH */
	struct throttle *throttle = throttle_new(SERVER_THROTTLE_ENTRIES);
	rt->throttle = throttle;
	runtime_set_current(rt);
	int status = 1;
	if (server_start(rt) == 0) {
		struct event *sigs[3];
		const int signals[3] = {SIGTERM, SIGINT, SIGHUP};
		for (int i = 0; i < 3; i++) {
			sigs[i] = evsignal_new(daemon_state.base, signals[i], server_signal, NULL);
			event_add(sigs[i], NULL);
		}
		server_remember_users();
		struct event *watch = event_new(daemon_state.base, -1, EV_PERSIST, server_watch_users, NULL);
		struct timeval poll = {.tv_sec = SERVER_USERS_POLL_MS / 1000,
				       .tv_usec = (SERVER_USERS_POLL_MS % 1000) * 1000};
		event_add(watch, &poll);
		log_info("event=ready version=%s servers=%zu", POSTHORN_VERSION, rt->conf->nservers);
		notify_ready(rt->conf->nservers);
		event_base_dispatch(daemon_state.base);
		/* commits under way finish and get their replies first */
		spool_committer_stop(sp);
		event_free(watch);
		listeners_free(daemon_state.listeners);
		daemon_state.listeners = NULL;
		acme_stop();
		control_stop();
		httpd_stop();
		scheduler_stop_remote(); /* attempts in flight are abandoned: retried at the next start */
		server_shutdown_sessions();
		offload_stop(); /* after the sessions: none waits for a check */
		for (int i = 0; i < 3; i++)
			event_free(sigs[i]);
		scheduler_stop();
		log_info("event=stopped");
		status = 0;
	}
	listeners_free(daemon_state.listeners);
	daemon_state.listeners = NULL;
	runtime_unref(runtime_current());
	throttle_free(throttle);
	spool_close(sp);
	event_base_free(daemon_state.base);
	imap_session_cleanup();
	message_shutdown();
	return status;
}

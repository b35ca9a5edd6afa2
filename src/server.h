/* server: the daemon — one libevent loop, the virtual servers' listeners,
 * accept with connection limits, configuration generations (SIGHUP reload
 * without dropping sessions), clean shutdown. */
#ifndef POSTHORN_SERVER_H
#define POSTHORN_SERVER_H

#include <stdbool.h>
#include <sys/socket.h>

struct conf;
struct conf_server;
struct userdb;
struct aliases;
struct spool;
struct event_base;
struct tls_server;
struct sasl_throttle;
struct dns_resolver;
struct server_conn;

/* One configuration generation with what was loaded alongside it.  A
 * session holds a reference for its whole life, so a reload never changes
 * the rules under an established session. */
struct runtime {
	int refs;
	struct conf *conf;
	struct userdb *users;
	struct aliases *aliases;     /* NULL when no aliases file */
	struct tls_server **tls;     /* per conf->servers[i]; NULL: no certificate */
	struct dns_resolver *dns;    /* the global `dns` servers (or resolv.conf) */
	struct dns_resolver **server_dns; /* per server with its own `dns`; else NULL */
	struct spool *spool;         /* shared by every generation */
	struct event_base *base;
	struct sasl_throttle *throttle; /* shared by every generation */
};

/* What a protocol session is started with, once the connection rules
 * have decided. */
struct session_start {
	struct runtime *rt;
	const struct conf_server *srv;
	struct tls_server *ts;       /* NULL: no certificate */
	bool implicit_tls;
	int fd;                      /* taken over by the session */
	const struct sockaddr *peer;
	socklen_t peerlen;
	struct server_conn *conn;
	const char *client_name;     /* forward-confirmed reverse name, or NULL */
	bool refused;                /* by the `connection` rules */
};

struct runtime *runtime_ref(struct runtime *rt);
/* The resolver for server srv of rt: its own, or the global one. */
struct dns_resolver *runtime_resolver(const struct runtime *rt, const struct conf_server *srv);
/* The server block called name in this generation, or NULL. */
const struct conf_server *runtime_server(const struct runtime *rt, const char *name);
void runtime_unref(struct runtime *rt);

/* A live connection, of any protocol, as the daemon sees it: counted
 * against the server's limits and closed at shutdown. */
struct server_conn {
	struct server_conn *prev, *next;
	char *server_name;
	char client[64];             /* numeric address text */
	void (*shutdown)(struct server_conn *c); /* say goodbye, close when sent */
	void (*abort)(struct server_conn *c);    /* free now */
	void *session;
};

/* The current configuration generation (no reference taken). */
struct runtime *server_runtime(void);

/* The protocol side calls this when its connection is gone. */
void server_conn_closed(struct server_conn *c);

/* Run the daemon in the foreground until SIGTERM/SIGINT.  Exit status. */
int server_run(const char *conf_path);

/* Text form of a socket address without port ("127.0.0.1", "::1"); IPv4-
 * mapped IPv6 addresses are shown as IPv4. */
void server_addr_text(const struct sockaddr *sa, char *out, size_t outsz);

#endif

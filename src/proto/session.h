/* session: what the SMTP, POP3 and IMAP sessions share — how the daemon
 * starts one and keeps a handle on it (struct session_link), and the base
 * every session embeds (its id, configuration generation, virtual server,
 * client and TLS context), set up and released in one place. */
#ifndef POSTHORN_SESSION_H
#define POSTHORN_SESSION_H

#include <stdbool.h>
#include <sys/socket.h>

struct runtime;
struct conf_server;
struct tls_server;

/* The daemon's handle on a live connection of any protocol: counted
 * against the server's limits and closed at shutdown.  The daemon fills
 * in `closed`; the session fills in `shutdown`, `abort` and `session`. */
struct session_link {
	struct session_link *prev, *next;
	char *server_name;
	char client[64];             /* numeric address text */
	void (*shutdown)(struct session_link *l); /* say goodbye, close when sent */
	void (*abort)(struct session_link *l);    /* free now */
	void (*closed)(struct session_link *l);   /* the daemon forgets it (frees l) */
	void *session;
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
	struct session_link *link;
	const char *client_name;     /* forward-confirmed reverse name, or NULL */
	bool refused;                /* by the `connection` rules */
};

/* The part of a session that is the same for every protocol. */
struct session_base {
	char sid[20];                /* "<prefix><hex>", unique in the process */
	struct runtime *rt;          /* a reference, held for the session's life */
	const struct conf_server *srv;
	struct session_link *link;
	char client[64];             /* the client's numeric address */
	struct sockaddr_storage peer;  /* the client's address, for the rules */
	struct sockaddr_storage local; /* the address it connected to */
	char *client_name;           /* forward-confirmed reverse name, or NULL */
	bool refused;                /* by the connection rules */
	struct tls_server *ts;       /* NULL: no certificate, no STARTTLS */
	bool implicit_tls;           /* handshake before the greeting */
	char log_id[160];            /* "session=... server=... client=..." */
};

/* Fill b from st, take a runtime reference, attach session to the link
 * with its shutdown and abort, and log the connect event.  prefix goes
 * before the id's hex digits ("" for SMTP, "p" for POP3, "i" for IMAP). */
void session_base_init(struct session_base *b, const struct session_start *st,
		       const char *prefix, void *session,
		       void (*shutdown)(struct session_link *l),
		       void (*abort)(struct session_link *l));
/* Log the disconnect, tell the daemon, drop the runtime reference. */
void session_base_release(struct session_base *b);

#endif

/* session: what the SMTP, POP3 and IMAP sessions share — how the daemon
 * starts one and keeps a handle on it (struct session_link), and the base
 * every session embeds (its id, configuration generation, virtual server,
 * client and TLS context), set up and released in one place. */
#ifndef POSTHORN_SESSION_H
#define POSTHORN_SESSION_H

#include <stdbool.h>
#include <sys/socket.h>

#include "net/addr.h"

struct runtime;
struct conf_server;
struct tls_server;
struct login;
struct conn;
struct conn_handler;
struct login_verdict;

/* The daemon's handle on a live connection of any protocol: counted
 * against the server's limits and closed at shutdown.  The daemon fills
 * in `closed`; the session fills in `shutdown`, `abort` and `session`. */
struct session_link {
	struct session_link *prev, *next;
	char *server_name;
	char client[ADDR_TEXT_SIZE];  /* numeric address text */
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
	bool listed;                 /* a dnsbl rule denied it on a server that
				      * offers AUTH: MAIL only after a login */
	const char *refusal;         /* a dnsbl rule's words for refused or
				      * listed (dnsbl_refusal_text), or NULL */
};

/* The part of a session that is the same for every protocol. */
struct session_base {
	char sid[20];                /* "<prefix><hex>", unique in the process */
	struct runtime *rt;          /* a reference, held for the session's life */
	const struct conf_server *srv;
	struct session_link *link;
	char client[ADDR_TEXT_SIZE]; /* the client's numeric address */
	struct sockaddr_storage peer;  /* the client's address, for the rules */
	struct sockaddr_storage local; /* the address it connected to */
	char *client_name;           /* forward-confirmed reverse name, or NULL */
	bool refused;                /* by the connection rules */
	bool listed;                 /* on a block list: NEEDS_AUTH commands
				      * refused until a login, anonymous or not */
	char *refusal;               /* the block list's refusal text, or NULL */
	struct tls_server *ts;       /* NULL: no certificate, no STARTTLS */
	bool implicit_tls;           /* handshake before the greeting */
};

/* Fill b from st, take a runtime reference, attach session to the link
 * with its shutdown and abort, and log the connect event.  prefix goes
 * before the id's hex digits ("" for SMTP, "p" for POP3, "i" for IMAP). */
void session_base_init(struct session_base *b, const struct session_start *st,
		       const char *prefix, void *session,
		       void (*shutdown)(struct session_link *l),
		       void (*abort)(struct session_link *l));
/* The session's transport over st's socket (net/conn.h), with the
 * server's TLS policy and the given idle timeout; NULL when TLS cannot be
 * set up (the socket is closed then). */
struct conn *session_conn_new(struct session_base *b, const struct session_start *st,
			      const struct conn_handler *h, void *owner, unsigned timeout);
/* The session's login exchange (auth/login.h), for its id, server,
 * client and generation; done renders each verdict. */
struct login *session_login_new(struct session_base *b,
				void (*done)(void *owner, const struct login_verdict *v),
				void *owner);
/* ---- the gate ------------------------------------------------------------
 * Every protocol's command table states, per command, the policy flags
 * below and the states it is valid in; one gate decides before any
 * handler runs, in one order for SMTP, POP3 and IMAP: the connection
 * rules' refusal, then the secure channel (a client without TLS learns
 * nothing else from a server that requires it), then the state, then
 * whether a password may cross this channel, then authentication (and,
 * for a client on a block list where clients may log in, a login even
 * where anonymous clients may send). */
enum session_cmd_flag {
	SESSION_F_REFUSED_OK = 1u << 0, /* allowed for a refused client (QUIT) */
	SESSION_F_NEEDS_TLS = 1u << 1,  /* refused before TLS where it is required */
	SESSION_F_PASSWORD = 1u << 2,   /* carries a password itself (USER, PASS,
					 * LOGIN): only where login_password_allowed */
	SESSION_F_NEEDS_AUTH = 1u << 3, /* refused unauthenticated unless anonymous */
	SESSION_F_PROTOCOL = 1u << 8,   /* the first bit a protocol may use itself */
};

enum session_verdict {
	SESSION_OPEN,                   /* run the handler */
	SESSION_REFUSED,                /* the connection rules refused the client */
	SESSION_NEEDS_TLS,              /* a secure channel first */
	SESSION_BAD_STATE,              /* not valid in this state */
	SESSION_PASSWORD_NEEDS_TLS,     /* the password command only inside TLS */
	SESSION_PASSWORD_DISABLED,      /* no password command on this server */
	SESSION_NEEDS_AUTH,             /* log in first */
	SESSION_LISTED,                 /* on a block list: log in first (b->refusal) */
};

/* The gate's verdict for a command with these flags; state_ok: the
 * command is valid in the session's state. */
enum session_verdict session_gate(const struct session_base *b, unsigned flags, bool state_ok,
				  bool tls_active, bool authenticated);

/* Log the disconnect, tell the daemon, drop the runtime reference. */
void session_base_release(struct session_base *b);

#endif

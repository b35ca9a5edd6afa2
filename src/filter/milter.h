/* milter: the client side of the Sendmail mail filter protocol, version 6,
 * as Postfix speaks it, on the event loop.  One connection per SMTP
 * session and filter: opened and negotiated once when the client
 * connects, then each step is sent when the client takes it and answered
 * there (connection, HELO, MAIL, each RCPT; at the end of data DATA, the
 * header fields, the body in chunks and the end of the message), each
 * with the macros filters commonly read; SMFIC_ABORT ends a transaction
 * the filter saw begin, SMFIC_QUIT the session.  The verdict and the
 * modifications come back to the caller, who applies them.  Sockets are
 * non-blocking, every reply is length-checked (milter_proto), each wait is
 * bounded (connect-timeout, then timeout per exchange); a filter that is
 * down, too slow or answers garbage has failed for the rest of the
 * session, and its on-failure answers each later step. */
#ifndef POSTHORN_MILTER_H
#define POSTHORN_MILTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "conf/conf.h"

struct event_base;

/* What the filter is told; borrowed until the step's done() runs. */
struct milter_info {
	const char *session;            /* for the log */
	const char *client_addr;        /* {client_addr} */
	const char *client_name;        /* {client_name}: "unknown" when not known */
	unsigned client_port;
	int client_family;              /* AF_INET, AF_INET6 */
	const char *helo;               /* may be NULL */
	const char *hostname;           /* j */
	const char *daemon_name;        /* {daemon_name}: the virtual server */
	const char *queue_id;           /* i */
	const char *auth_user;          /* {auth_authen}: NULL when not logged in */
	const char *tls_version;        /* {tls_version}, {cipher}: NULL without TLS */
	const char *cipher;
	const char *sender;             /* "" for <> */
	const char *rcpt;               /* RCPT: the recipient */
	int fd;                         /* DATA: the message, size bytes at offset of fd */
	off_t offset;
	off_t size;
	uint64_t body_max;              /* the longest body a filter may put in */
};

enum milter_verdict {
	MILTER_VERDICT_ACCEPT,          /* deliver (with the modifications) */
	MILTER_VERDICT_DISCARD,         /* say 250, deliver nothing */
	MILTER_VERDICT_TEMPFAIL,        /* 4xx */
	MILTER_VERDICT_REJECT,          /* 5xx */
};

enum milter_mod_kind {
	MILTER_MOD_ADD_HEADER, MILTER_MOD_INSERT_HEADER, MILTER_MOD_CHANGE_HEADER,
	MILTER_MOD_CHANGE_FROM, MILTER_MOD_ADD_RCPT, MILTER_MOD_DELETE_RCPT,
};

struct milter_mod {
	enum milter_mod_kind kind;
	uint32_t index;                 /* INSERT_HEADER, CHANGE_HEADER */
	char *name;                     /* header name, or the address (without <>) */
	char *value;                    /* header value; may be NULL */
};

struct milter_result {
	enum milter_verdict verdict;
	char *reply;                    /* the filter's own SMTP reply, or NULL */
	bool failed;                    /* the filter failed; verdict is its on-failure */
	const char *why;                /* failed: what went wrong (static text) */
	bool quarantine;                /* SMFIR_QUARANTINE: into Junk */
	struct milter_mod *mods;
	size_t nmods;
	bool replace_body;              /* SMFIR_REPLBODY: body below replaces the message's */
	char *body;
	size_t body_len;
};

typedef void (*milter_done_fn)(void *arg, struct milter_result *res);

/* The steps of a session, each asked when the client takes it. */
enum milter_phase {
	MILTER_PHASE_CONNECT,   /* the option negotiation, then the connection */
	MILTER_PHASE_HELO,
	MILTER_PHASE_MAIL,      /* a new transaction (after SMFIC_ABORT of an open one) */
	MILTER_PHASE_RCPT,      /* one recipient */
	MILTER_PHASE_DATA,      /* DATA, header, body, end of message: the verdict and changes */
};

struct milter_conn;

/* Connect to the filter m and ask the connection step; done(arg, res)
 * runs later on the loop, once, unless milter_conn_free() comes first. */
struct milter_conn *milter_conn_open(struct event_base *base, const struct conf_milter *m,
				     const struct milter_info *info, milter_done_fn done,
				     void *arg);
/* Ask the next step (one at a time): done(arg, res) as above.  A filter
 * that failed before answers with its on-failure at once; one that
 * accepted the session (or the transaction) answers accept.  res is the
 * caller's to free (milter_result_free). */
void milter_conn_ask(struct milter_conn *c, enum milter_phase phase,
		     const struct milter_info *info, milter_done_fn done, void *arg);
/* The transaction is over without its end of message (RSET, a refusal):
 * SMFIC_ABORT when the filter saw it begin. */
void milter_conn_abort(struct milter_conn *c);
/* The session is over: SMFIC_QUIT, close, never call done. */
void milter_conn_free(struct milter_conn *c);
void milter_result_free(struct milter_result *res);

#endif

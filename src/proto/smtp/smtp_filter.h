/* smtp_filter: a session's milters (filter/milter), one connection each,
 * asked in order at each step the client takes (connection, HELO, MAIL,
 * RCPT: the first refusal is the step's answer), and between the end of
 * DATA and the spool commit the milters again and the junk-header.  Their
 * modifications are applied to the spooled message before the 250: a
 * changed message is written as a new version under the same queue ID,
 * which is then the one committed, so the durable copy is the modified
 * one.  A quarantine or the junk-header sets the envelope's Junk mark. */
#ifndef POSTHORN_SMTP_FILTER_H
#define POSTHORN_SMTP_FILTER_H

#include <stdbool.h>

#include "conf/conf.h"
#include "filter/milter.h"
#include "queue/spool.h"

struct event_base;

/* Does this server filter messages at all? */
bool smtp_filter_wanted(const struct conf_server *srv);

enum smtp_filter_verdict {
	SMTP_FILTER_PASS,       /* commit msg */
	SMTP_FILTER_DISCARD,    /* 250, nothing kept */
	SMTP_FILTER_TEMPFAIL,   /* reply, or 451 */
	SMTP_FILTER_REJECT,     /* reply, or 550 */
};

struct smtp_filter_outcome {
	enum smtp_filter_verdict verdict;
	const char *reply;      /* a filter's own reply, or NULL */
	const char *milter;     /* the filter that decided, or NULL */
	struct spool_msg *msg;  /* PASS: the message to commit (the caller's now);
				 * otherwise NULL (thrown away) */
	bool junk;              /* PASS: it goes to Junk */
};

typedef void (*smtp_filter_done_fn)(void *arg, const struct smtp_filter_outcome *o);

/* What the filters are told, beside the envelope; borrowed until done. */
struct smtp_filter_client {
	struct smtp_milters *milters; /* the session's connections; NULL: none */
	const char *session;    /* the session id, for the log */
	struct event_base *base;
	const struct conf *conf;
	const struct conf_server *srv;
	struct spool *spool;
	const char *client_addr;
	const char *client_name;
	unsigned client_port;
	int client_family;
	const char *tls_desc;   /* conn_tls_desc(), or NULL */
};

struct smtp_filter;

/* Take msg (begun with env, env->id set) through the filters over the
 * session's connections (c->milters: DATA, the header, the body and the
 * end of the message to each in order); done runs later on the loop,
 * once, unless smtp_filter_cancel() comes first.  env is copied. */
struct smtp_filter *smtp_filter_start(const struct smtp_filter_client *c,
				      const struct spool_envelope *env, struct spool_msg *msg,
				      smtp_filter_done_fn done, void *arg);
/* The session is gone: stop the filters, throw the message away (the
 * connection of the filter at work is closed; smtp_milters_free() next). */
void smtp_filter_cancel(struct smtp_filter *f);

/* ---- the steps before DATA ----------------------------------------------
 * Each call asks every milter in order; done(arg, o) runs later on the
 * loop, once (unless smtp_milters_free() comes first), with PASS (a
 * DISCARD here is a PASS: the message is discarded at its end), or the
 * first milter's TEMPFAIL or REJECT with its own reply when it gave one.
 * o->msg is NULL.  One step at a time. */
struct smtp_milters;

/* The connection step: NULL when the server has no milters.  c's
 * strings, but for tls_desc and milters, live as long as the session. */
struct smtp_milters *smtp_milters_open(const struct smtp_filter_client *c,
				       smtp_filter_done_fn done, void *arg);
void smtp_milters_helo(struct smtp_milters *ms, const char *helo, const char *tls_desc,
		       smtp_filter_done_fn done, void *arg);
void smtp_milters_mail(struct smtp_milters *ms, const char *sender, const char *auth_user,
		       smtp_filter_done_fn done, void *arg);
void smtp_milters_rcpt(struct smtp_milters *ms, const char *rcpt, smtp_filter_done_fn done,
		       void *arg);
/* The transaction ended before its end of message (SMFIC_ABORT). */
void smtp_milters_abort(struct smtp_milters *ms);
/* The session is over (SMFIC_QUIT); NULL is fine. */
void smtp_milters_free(struct smtp_milters *ms);

#endif

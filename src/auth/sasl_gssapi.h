/* sasl_gssapi: the server side of the SASL mechanism GSSAPI (RFC 4752)
 * over MIT Kerberos' GSS-API (RFC 2743, RFC 4121): the context
 * establishment, then the security-layer negotiation, where only "no
 * security layer" is offered (TLS protects the channel).  Every GSS-API
 * call may read the keytab or the replay cache, so each step runs on a
 * worker (lib/offload), never on the event loop. */
#ifndef POSTHORN_SASL_GSSAPI_H
#define POSTHORN_SASL_GSSAPI_H

#include <stddef.h>
#include <stdio.h>

#include "conf/conf.h"
#include "lib/offload.h"

struct userdb;

/* Where the acceptor's keys are and whom the client must have a ticket
 * for: service/hostname (RFC 4752 §3.1).  Copied by sasl_gssapi_new(). */
struct sasl_gssapi_setup {
	const char *keytab;
	const char *replay_cache;    /* a file, MIT's "file2" replay cache */
	const char *service;         /* conf_gssapi_service(): smtp, imap, pop */
	const char *hostname;
};

enum sasl_gssapi_status {
	SASL_GSSAPI_CONTINUE,        /* send sasl_gssapi_challenge() and wait */
	SASL_GSSAPI_DONE,            /* authenticated: sasl_gssapi_principal() */
	SASL_GSSAPI_REFUSED,         /* the client's token or ticket is refused:
				      * sasl_gssapi_reason() says why */
	SASL_GSSAPI_BAD_BASE64,      /* the response is not base64 */
	SASL_GSSAPI_SERVER_ERROR,    /* our side failed (keytab unreadable, no
				      * key at all): not the client's fault */
	SASL_GSSAPI_CANCELLED,       /* the client sent "*" */
};

/* One exchange. */
struct sasl_gssapi;

struct sasl_gssapi *sasl_gssapi_new(const struct sasl_gssapi_setup *setup);
/* Wipes and frees (an offload_free_fn); NULL is nothing. */
void sasl_gssapi_free(void *g);

/* The client's next response (base64 text, NUL-terminated; "=" as an
 * initial response is an empty one).  Set it on the loop, then run
 * sasl_gssapi_step() on a worker (sasl_gssapi_submit). */
void sasl_gssapi_set_response(struct sasl_gssapi *g, const char *response);
/* One step on any thread (an offload_run_fn). */
void sasl_gssapi_step(void *g);
/* The step on a worker: done(owner, g) comes back on the loop's thread,
 * which owns g again; offload_cancel() frees it. */
struct offload_job *sasl_gssapi_submit(struct sasl_gssapi *g, offload_done_fn done,
				       void *owner);

/* After a step: */
enum sasl_gssapi_status sasl_gssapi_status(const struct sasl_gssapi *g);
/* SASL_GSSAPI_CONTINUE: base64 text, "" for an empty challenge. */
const char *sasl_gssapi_challenge(const struct sasl_gssapi *g);
/* The client's principal once its ticket was accepted (as
 * gss_display_name() writes it, "alice@EXAMPLE.TEST"), else NULL. */
const char *sasl_gssapi_principal(const struct sasl_gssapi *g);
/* SASL_GSSAPI_DONE: the authorization identity the client asked for
 * (RFC 4752 §3.1), "" for none. */
const char *sasl_gssapi_authzid(const struct sasl_gssapi *g);
/* SASL_GSSAPI_REFUSED or SERVER_ERROR: the GSS-API's words, for the log. */
const char *sasl_gssapi_reason(const struct sasl_gssapi *g);

/* NAME@DOMAIN for a principal NAME@REALM of one of the realms (malloc'ed),
 * NULL for a principal with an instance or of another realm. */
char *sasl_gssapi_principal_address(const struct conf_auth *auth, const char *principal);

/* The user a principal logs in as: NAME@REALM with REALM one of the
 * realms is the user NAME@DOMAIN, who must be in db.  A principal with an
 * instance ("host/x@REALM") or of another realm is nobody.  Returns the
 * user record's address (db's), or NULL. */
const char *sasl_gssapi_principal_user(const struct conf_auth *auth, const struct userdb *db,
				       const char *principal);

/* For `posthorn check`: warn on out about srv's keytab when it cannot be
 * read or holds no key of service/hostname (any realm).  The number of
 * warnings (0 for a server without GSSAPI), or -1 when out fails. */
int sasl_gssapi_check_keytab(const struct conf_server *srv, FILE *out);

#endif

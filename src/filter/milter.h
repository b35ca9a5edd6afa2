/* milter: the client side of the Sendmail mail filter protocol, version 6,
 * as Postfix speaks it, on the event loop.  One run asks one filter about
 * one message, after the message is spooled: connection, HELO, MAIL, each
 * RCPT, DATA, the header fields, the body in chunks and the end of the
 * message, each with the macros filters commonly read; the verdict and the
 * modifications come back to the caller, who applies them.  Sockets are
 * non-blocking, every reply is length-checked (milter_proto), each wait is
 * bounded (connect-timeout, then timeout per exchange); a filter that is
 * down, too slow or answers garbage has failed, and its on-failure applies. */
#ifndef POSTHORN_MILTER_H
#define POSTHORN_MILTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "conf/conf.h"

struct event_base;

/* What the filter is told; borrowed until the run ends. */
struct milter_info {
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
	const char *const *rcpts;
	size_t nrcpts;
	int fd;                         /* the message: size bytes at offset of fd */
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

struct milter_run;

/* Start asking the filter m; done(arg, res) runs later on the loop, once,
 * unless milter_run_cancel() comes first.  res is the caller's to free
 * (milter_result_free). */
struct milter_run *milter_run_start(struct event_base *base, const struct conf_milter *m,
				    const struct milter_info *info, milter_done_fn done,
				    void *arg);
/* The caller is gone: stop, close, never call done. */
void milter_run_cancel(struct milter_run *r);
void milter_result_free(struct milter_result *res);

#endif

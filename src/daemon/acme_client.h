/* acme_client: one attempt at an ACME order (RFC 8555), from the directory
 * to the certificate on disk, run on the ACME worker thread (daemon/acme
 * starts it and takes the result on the loop).  The answers to the CA's
 * challenges are published while it runs: the http-01 key authorizations
 * for the loop's listener (acme_client_key_authorization) and the
 * tls-alpn-01 certificates (net/acme_alpn). */
#ifndef POSTHORN_ACME_CLIENT_H
#define POSTHORN_ACME_CLIENT_H

#include <stdbool.h>
#include <stddef.h>

#include "conf/conf.h"

/* What an attempt needs, copied from the configuration it started with. */
struct acme_params {
	char *directory;
	char *contact;                /* or NULL */
	char *ca;                     /* or NULL */
	char **names;
	size_t nnames;
	char *dir;                    /* SPOOL/acme */
	enum conf_acme_challenge challenge;
};

void acme_params_from_conf(struct acme_params *p, const struct conf *conf);
void acme_params_copy(struct acme_params *to, const struct acme_params *from);
void acme_params_free(struct acme_params *p);
/* dir/name: a new string. */
char *acme_params_file(const struct acme_params *p, const char *name);

enum { ACME_TARGET_HOST_MAX = 256 };

/* Where the directory URL points. */
struct acme_target {
	char host[ACME_TARGET_HOST_MAX]; /* a name, or an address (IPv6 without brackets) */
	unsigned port;
	bool literal;                    /* host is an address: nothing to look up */
};

/* 0, or -1 when url has no host that fits. */
int acme_directory_target(const char *url, struct acme_target *t);

struct acme_attempt;

/* A new attempt with its own copy of p.  resolve: the CA's addresses as a
 * libcurl CURLOPT_RESOLVE entry "HOST:PORT:ADDR[,ADDR]" (looked up by the
 * loop with posthorn's own resolver), or NULL. */
struct acme_attempt *acme_attempt_new(const struct acme_params *p, const char *resolve);
/* On the worker: the whole order; the certificate written on success; the
 * status file either way.  Never on the loop: it blocks for up to minutes. */
void acme_attempt_run(struct acme_attempt *a);
bool acme_attempt_ok(const struct acme_attempt *a);
/* Why it failed (the first cause), printable ASCII. */
const char *acme_attempt_error(const struct acme_attempt *a);
void acme_attempt_free(struct acme_attempt *a); /* NULL is ignored */

/* The key authorization the http-01 listener answers for token (a new
 * string), or NULL when no order is waiting for it.  Any thread. */
char *acme_client_key_authorization(const char *token);
/* Withdraw every published answer.  Any thread. */
void acme_client_clear(void);
/* Shutdown: the attempt under way gives up within a second. */
void acme_client_stop(void);

#endif

/* acme_msg: what an ACME server (RFC 8555) answers, read from untrusted
 * JSON (jansson) into bounded structures: the directory (§7.1.1), an
 * order (§7.1.3), an authorization and its challenge of the type wanted
 * (http-01 §8.3, tls-alpn-01 RFC 8737), and a problem document (RFC 7807, §6.7).  Every string is
 * checked: URLs are https and printable, tokens base64url, lengths
 * bounded; anything else is an error with the reason. */
#ifndef POSTHORN_ACME_MSG_H
#define POSTHORN_ACME_MSG_H

#include <stdbool.h>
#include <stddef.h>

enum {
	ACME_URL_MAX = 1024,         /* longer URLs are refused */
	ACME_TOKEN_MAX = 256,
	ACME_AUTHZ_MAX = 100,        /* authorizations of one order */
	ACME_PROBLEM_MAX = 512,
	ACME_BODY_MAX = 256 * 1024,  /* a response body; certificates included */
};

enum acme_status {
	ACME_ST_UNKNOWN, ACME_ST_PENDING, ACME_ST_READY, ACME_ST_PROCESSING,
	ACME_ST_VALID, ACME_ST_INVALID, ACME_ST_EXPIRED, ACME_ST_DEACTIVATED,
	ACME_ST_REVOKED,
};

struct acme_directory {
	char new_nonce[ACME_URL_MAX];
	char new_account[ACME_URL_MAX];
	char new_order[ACME_URL_MAX];
};

struct acme_order {
	enum acme_status status;
	char finalize[ACME_URL_MAX];
	char certificate[ACME_URL_MAX]; /* empty until valid */
	char (*authz)[ACME_URL_MAX];    /* nauthz URLs (owned; acme_order_free) */
	size_t nauthz;
};

struct acme_authz {
	enum acme_status status;
	char name[256];                 /* the identifier's value */
	bool has_challenge;             /* one of the type asked for */
	enum acme_status challenge_status;
	char challenge_url[ACME_URL_MAX];
	char token[ACME_TOKEN_MAX + 1];
	char error[ACME_PROBLEM_MAX];   /* the challenge's error, if any */
};

/* Each: 0, or -1 with the reason in err.  The body need not be
 * terminated. */
int acme_parse_directory(const char *body, size_t len, struct acme_directory *out, char *err,
			 size_t errsz);
int acme_parse_order(const char *body, size_t len, struct acme_order *out, char *err,
		     size_t errsz);
void acme_order_free(struct acme_order *o);
/* The first usable challenge of type ("http-01", "tls-alpn-01") is kept. */
int acme_parse_authz(const char *body, size_t len, const char *type, struct acme_authz *out,
		     char *err, size_t errsz);

/* "TYPE: DETAIL" of a problem document (the urn:ietf:params:acme:error:
 * prefix dropped), printable ASCII only, in out; false when body is not
 * one (out then says so). */
bool acme_parse_problem(const char *body, size_t len, char *out, size_t outsz);

/* Is the problem type a bad nonce (the request may be sent again with a
 * fresh one, RFC 8555 §6.5)? */
bool acme_problem_is_bad_nonce(const char *body, size_t len);

const char *acme_status_name(enum acme_status st);

#endif

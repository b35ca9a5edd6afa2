/* authres: the Authentication-Results header field (RFC 8601): the one
 * posthorn adds, and recognising the ones that claim posthorn's
 * authserv-id (§5: they are removed before the message is accepted). */
#ifndef POSTHORN_AUTHRES_H
#define POSTHORN_AUTHRES_H

#include <stdbool.h>
#include <stddef.h>

#include "mailauth/dmarc.h"
#include "mailauth/spf_record.h"

enum { AUTHRES_MAX = 4096 }; /* the header field we write, CRLFs included */

/* RFC 8601 §2.7.1 */
enum authres_dkim_result {
	AUTHRES_DKIM_NONE,
	AUTHRES_DKIM_PASS,
	AUTHRES_DKIM_FAIL,
	AUTHRES_DKIM_NEUTRAL,
	AUTHRES_DKIM_POLICY,
	AUTHRES_DKIM_TEMPERROR,
	AUTHRES_DKIM_PERMERROR,
};

/* One DKIM signature's verification, as a DKIM verifier reports it. */
struct authres_dkim {
	const char *domain;     /* d= */
	const char *selector;   /* s= */
	const char *algorithm;  /* a=, e.g. "rsa-sha256" */
	enum authres_dkim_result result;
	const char *reason;     /* NULL, or a short text for a comment */
	const char *header_b;   /* the first characters of b= (§2.7.1: 8 suffice) */
};

const char *authres_dkim_result_name(enum authres_dkim_result r);

struct arc_result;

/* What was checked; a part not checked is left out of the field. */
struct authres_input {
	const char *authserv_id; /* posthorn's host name */
	bool spf_checked;
	enum spf_result spf;
	const char *spf_identity; /* "mailfrom" or "helo" */
	const char *spf_sender;   /* the identity: local@domain, or the HELO name */
	const struct authres_dkim *dkim;
	size_t ndkim;
	bool dkim_checked;
	bool dmarc_checked;
	const struct dmarc_verdict *dmarc;
	const char *from_domain;
	const struct arc_result *arc; /* the ARC chain's validation; NULL: not checked */
};

/* The whole field, folded, ending in CRLF, into out.  false when it does
 * not fit (nothing is cut). */
bool authres_build(const struct authres_input *in, char *out, size_t outsz);

/* Does this header field (name and value, unfolded or not, without the
 * final CRLF) name authserv_id as its authserv-id (RFC 8601 §2.2,
 * case-insensitive)?  Fields of other names are never ours. */
bool authres_claims(const char *field, size_t len, const char *authserv_id);

/* The authserv-id of an Authentication-Results value into out: the
 * first token or quoted-string after CFWS.  false when there is none or
 * it does not fit. */
bool authres_authserv_id(const char *value, size_t len, char *out, size_t outsz);

/* The result of the first resinfo of method (lower case, e.g. "arc") in
 * an Authentication-Results value, lower case, into out.  false when
 * there is none or it does not fit. */
bool authres_method_result(const char *value, size_t len, const char *method, char *out,
			   size_t outsz);

#endif

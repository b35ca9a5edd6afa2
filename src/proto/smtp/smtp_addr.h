/* smtp_addr: RFC 5321 §4.1.2 paths and the MAIL/RCPT argument lines:
 * "FROM:<path> [params]", "TO:<path> [params]", quoted local parts,
 * IPv4/IPv6 address literals, the null path <>, source routes (stripped,
 * Appendix C), ESMTP parameters (keyword[=value]), and the xtext mailbox
 * of MAIL's AUTH= parameter (RFC 4954 §5). */
#ifndef POSTHORN_SMTP_ADDR_H
#define POSTHORN_SMTP_ADDR_H

#include <stdbool.h>
#include <stddef.h>

enum {
	SMTP_LOCAL_MAX = 64,    /* RFC 5321 §4.5.3.1.1 */
	SMTP_DOMAIN_MAX = 255,  /* §4.5.3.1.2 */
	SMTP_PATH_MAX = 256,    /* §4.5.3.1.3, including < > */
	SMTP_PARAMS_MAX = 16,
};

struct smtp_addr {
	bool null;              /* <> */
	char *local;            /* as written (quotes kept), NULL for <> */
	char *local_unquoted;   /* quoted-pair/quotes removed */
	char *domain;           /* "example.test" or "[192.0.2.1]" / "[IPv6:...]",
				 * NULL for <> and for the bare <postmaster> */
	bool literal;           /* domain is an address literal */
	bool route_stripped;    /* there was a source route @a,@b: */
	bool utf8;              /* non-ASCII bytes (needs SMTPUTF8) */
	char *text;             /* local@domain as written, "" for <> */
};

struct smtp_param {
	char *keyword;          /* upper case */
	char *value;            /* NULL when absent */
};

enum smtp_addr_result {
	SMTP_ADDR_OK,
	SMTP_ADDR_BAD_PREFIX,   /* no "FROM:" / "TO:" → 501 5.5.4 */
	SMTP_ADDR_BAD_SYNTAX,   /* the path → 501 5.1.7 (MAIL) / 501 5.1.3 (RCPT) */
	SMTP_ADDR_TOO_LONG,     /* a part over its limit → 501 5.1.7/5.1.3 too */
	SMTP_ADDR_BAD_PARAM,    /* malformed or too many parameters → 501 5.5.4 */
	SMTP_ADDR_NULL_NOT_ALLOWED, /* <> at RCPT → 501 5.1.3 */
};

/* Parse the argument of MAIL ("FROM:...") or RCPT ("TO:...").  is_rcpt
 * selects the prefix, forbids <> and allows the bare <postmaster>.  A
 * single space after the colon is tolerated (common client bug).  On OK
 * fills addr, params (at most SMTP_PARAMS_MAX) and *nparams. */
enum smtp_addr_result smtp_addr_parse_arg(const char *arg, bool is_rcpt, struct smtp_addr *addr,
					  struct smtp_param *params, size_t *nparams);

/* Parse a bare "local@domain" or "<local@domain>" (aliases, user names). */
enum smtp_addr_result smtp_addr_parse(const char *s, struct smtp_addr *addr);

/* The value of MAIL's AUTH= parameter (RFC 4954 §5): xtext (RFC 3461 §4)
 * that decodes to "<>" (submitter unknown: addr->null) or to a Mailbox,
 * with or without angle brackets.  SMTP_ADDR_BAD_PARAM when the xtext is
 * malformed or decodes to anything else. */
enum smtp_addr_result smtp_addr_parse_auth_param(const char *xtext, struct smtp_addr *addr);

void smtp_addr_clear(struct smtp_addr *addr);
void smtp_params_clear(struct smtp_param *params, size_t n);

/* Lower-case, trailing-dot-free copy of a domain (caller frees). */
char *smtp_domain_normalize(const char *domain);

#endif

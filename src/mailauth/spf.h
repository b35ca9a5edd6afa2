/* spf: check_host() of the Sender Policy Framework (RFC 7208 §4), on the
 * event loop: every lookup goes through net/dns (c-ares), the caller is
 * called back with the result, nothing ever waits. */
#ifndef POSTHORN_SPF_H
#define POSTHORN_SPF_H

#include <stdbool.h>
#include <stdint.h>

#include "mailauth/spf_record.h"

struct dns_resolver;
struct spf_check;

/* RFC 7208 §4.6.4 */
enum {
	SPF_DNS_TERMS_MAX = 10, /* include, a, mx, ptr, exists, redirect */
	SPF_VOID_MAX = 2,       /* lookups answering NXDOMAIN or no records */
	SPF_MX_HOSTS_MAX = 10,  /* address lookups of one mx mechanism */
	SPF_PTR_NAMES_MAX = 10, /* names of one ptr lookup */
	SPF_TIME_MAX = 20,      /* seconds for one check_host(), then temperror */
};

struct spf_request {
	int family;             /* AF_INET / AF_INET6 of the client */
	uint8_t ip[16];
	const char *sender;     /* MAIL FROM without <>; "" for the null sender */
	const char *helo;       /* HELO/EHLO argument */
	const char *receiver;   /* our host name (%{r}) */
};

struct spf_outcome {
	enum spf_result result;
	const char *identity;   /* "mailfrom" or "helo" (RFC 7208 §2.3, §2.4) */
	const char *sender;     /* the identity checked: local@domain */
	const char *domain;     /* its domain */
	const char *detail;     /* for the log: what decided */
};

typedef void (*spf_done_cb)(void *arg, const struct spf_outcome *o);

/* Start check_host() for the MAIL FROM identity, or for HELO when the
 * sender is null (§2.4).  cb runs exactly once, unless cancelled; it may
 * run before this returns, which then returns NULL.  The outcome's
 * strings live only during the callback. */
struct spf_check *spf_check_start(struct dns_resolver *dns, const struct spf_request *req,
				  spf_done_cb cb, void *arg);
/* The callback will not run; outstanding lookups are cancelled. */
void spf_check_cancel(struct spf_check *c);

#endif

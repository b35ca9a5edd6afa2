/* dmarc: Domain-based Message Authentication, Reporting and Conformance
 * (RFC 7489): the policy record (§6.3, §6.4), the organizational domain
 * from the Public Suffix List (§3.2, libpsl), identifier alignment (§3.1),
 * policy discovery on c-ares (§6.6.3) and the decision (§6.6.2, §6.6.4)
 * as a pure function. */
#ifndef POSTHORN_DMARC_H
#define POSTHORN_DMARC_H

#include <stdbool.h>
#include <stddef.h>

#include "mailauth/spf_record.h"

struct dns_resolver;

enum { DMARC_RECORD_MAX = 2048 }; /* longer records are ignored as malformed */

enum dmarc_policy { DMARC_POLICY_NONE, DMARC_POLICY_QUARANTINE, DMARC_POLICY_REJECT };
enum dmarc_align { DMARC_ALIGN_RELAXED, DMARC_ALIGN_STRICT };

struct dmarc_record {
	enum dmarc_policy p;
	enum dmarc_policy sp;   /* p when not given */
	enum dmarc_align adkim, aspf; /* relaxed when not given */
	unsigned pct;           /* 0..100, 100 when not given */
};

const char *dmarc_policy_name(enum dmarc_policy p);

/* A DMARC record: "v=DMARC1" first (§6.4), tag=value pairs separated by
 * ';', unknown tags ignored.  A missing or bad p= makes the record
 * p=none when it names a report address (rua=), else unusable (§6.6.3
 * step 6).  false with the reason in why when it cannot be used. */
bool dmarc_record_parse(const char *text, size_t len, struct dmarc_record *rec, char *why,
			size_t whysz);

/* The domain of the one mailbox of a From header field's value
 * (RFC 5322 §3.6.2; RFC 7489 §6.6.1), lower case, into out.  false when
 * there is none, more than one, or it is no domain name. */
bool dmarc_from_domain(const char *value, size_t len, char *out, size_t outsz);

/* The organizational domain (§3.2): the public suffix of domain plus one
 * label, lower case, into out.  false when domain is itself a public
 * suffix or does not fit. */
bool dmarc_org_domain(const char *domain, char *out, size_t outsz);

/* §3.1.1, §3.1.2: strict is equality, relaxed equal organizational
 * domains (case-insensitive). */
bool dmarc_aligned(const char *a, const char *b, enum dmarc_align mode);

enum dmarc_result {
	DMARC_RESULT_NONE,      /* no policy published */
	DMARC_RESULT_PASS,
	DMARC_RESULT_FAIL,
	DMARC_RESULT_TEMPERROR, /* the record could not be looked up */
	DMARC_RESULT_PERMERROR, /* no usable From domain */
};

const char *dmarc_result_name(enum dmarc_result r);

/* What to do with the message: the policy that applies after pct. */
enum dmarc_disposition { DMARC_DISP_NONE, DMARC_DISP_QUARANTINE, DMARC_DISP_REJECT };

const char *dmarc_disposition_name(enum dmarc_disposition d);

/* The policy as discovered: a record (or none), found at the From domain
 * itself or at its organizational domain. */
struct dmarc_discovery {
	bool temperror;         /* a lookup failed: result temperror */
	bool found;
	bool at_org;            /* the record is the organizational domain's: sp= applies */
	struct dmarc_record rec;
};

struct dmarc_input {
	const char *from_domain; /* RFC5322.From's domain; NULL: none or several */
	enum spf_result spf;
	const char *spf_domain; /* the domain SPF checked (MAIL FROM, else HELO) */
	const char *const *dkim_pass; /* d= of every DKIM signature that passed */
	size_t ndkim_pass;
	const char *const *dkim_temperror; /* d= of every one that met a DNS failure */
	size_t ndkim_temperror;
	unsigned sample;        /* 0..99, random: the message is in pct when < pct */
};

struct dmarc_verdict {
	enum dmarc_result result;
	enum dmarc_policy policy;  /* published p= or sp= that applies */
	enum dmarc_disposition disposition; /* after pct (§6.6.4) */
	bool spf_aligned, dkim_aligned;
};

/* The decision of §6.6.2: pass when an authenticated identifier aligns
 * with the From domain; on failure, the published policy, lowered one
 * step for a message outside pct (§6.6.4: reject -> quarantine,
 * quarantine -> none).  A temperror or no policy disposes nothing; nor
 * does a failure where SPF or a DKIM signature for an aligned domain met
 * a DNS failure (temperror: it might have passed). */
void dmarc_evaluate(const struct dmarc_input *in, const struct dmarc_discovery *d,
		    struct dmarc_verdict *out);

/* Policy discovery (§6.6.3): _dmarc.FROM, then _dmarc.ORG when FROM is
 * not its own organizational domain.  cb runs exactly once unless
 * cancelled, possibly before this returns (which then returns NULL). */
struct dmarc_lookup;
typedef void (*dmarc_lookup_cb)(void *arg, const struct dmarc_discovery *d);
struct dmarc_lookup *dmarc_lookup_start(struct dns_resolver *dns, const char *from_domain,
					dmarc_lookup_cb cb, void *arg);
void dmarc_lookup_cancel(struct dmarc_lookup *l);

#endif

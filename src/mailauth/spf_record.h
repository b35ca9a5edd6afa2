/* spf_record: the text of an SPF record (RFC 7208 §4.5, §4.6, §5, §6),
 * parsed into terms, and macro expansion (§7).  Pure functions over
 * untrusted bytes from DNS: no lookups here (spf.c does those). */
#ifndef POSTHORN_SPF_RECORD_H
#define POSTHORN_SPF_RECORD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

/* Named limits, every one here. */
enum {
	SPF_RECORD_MAX = 4096,  /* longer records are a permerror (no real one comes close) */
	SPF_TERMS_MAX = 64,     /* terms in one record */
	SPF_NAME_MAX = 253,     /* a domain name in text (RFC 1035 §2.3.4) */
	SPF_EXPAND_MAX = 1024,  /* a macro-expanded string before truncation */
};

enum spf_result {
	SPF_NONE,
	SPF_NEUTRAL,
	SPF_PASS,
	SPF_FAIL,
	SPF_SOFTFAIL,
	SPF_TEMPERROR,
	SPF_PERMERROR,
};

/* "none", "neutral", ... as RFC 7208 §2.6 and RFC 8601 §2.7.2 spell them. */
const char *spf_result_name(enum spf_result r);

enum spf_mech {
	SPF_MECH_ALL,
	SPF_MECH_INCLUDE,
	SPF_MECH_A,
	SPF_MECH_MX,
	SPF_MECH_PTR,
	SPF_MECH_IP4,
	SPF_MECH_IP6,
	SPF_MECH_EXISTS,
};

struct spf_term {
	enum spf_result qualifier; /* PASS, FAIL, SOFTFAIL or NEUTRAL (§4.6.2) */
	enum spf_mech mech;
	char *domain_spec;      /* as written (macros unexpanded); NULL: <domain> */
	unsigned cidr4, cidr6;  /* prefix lengths; 32 and 128 when not given */
	uint8_t ip[16];         /* ip4 (first 4 bytes) / ip6 */
};

struct spf_record {
	struct spf_term *terms;
	size_t nterms;
	char *redirect;         /* domain-spec of redirect=, or NULL */
	char *exp;              /* domain-spec of exp=, or NULL */
};

/* Is this TXT record an SPF record: "v=spf1" alone or followed by a space
 * (§4.5, case-insensitive)? */
bool spf_record_is_spf(const char *text, size_t len);

/* Parse the whole record (§4.6: a syntax error anywhere is a permerror,
 * before any mechanism is evaluated).  true, or false with the reason in
 * why.  rec is filled on success only; free it with spf_record_free(). */
bool spf_record_parse(const char *text, size_t len, struct spf_record *rec, char *why,
		      size_t whysz);
void spf_record_free(struct spf_record *rec);

/* The values of the macro letters (§7.2).  ptr NULL: not yet known (the
 * expansion then reports SPF_MACRO_NEEDS_PTR). */
struct spf_macro_vars {
	const char *sender;     /* s: local-part@domain */
	const char *local;      /* l */
	const char *sender_domain; /* o */
	const char *domain;     /* d: the current domain */
	const uint8_t *ip;      /* i, c, v: 4 or 16 bytes */
	int family;             /* AF_INET / AF_INET6 */
	const char *helo;       /* h */
	const char *ptr;        /* p: a validated name of the client, or "unknown" */
	const char *receiver;   /* r */
	time_t now;             /* t */
};

enum spf_macro_status {
	SPF_MACRO_OK,
	SPF_MACRO_SYNTAX,       /* permerror */
	SPF_MACRO_TOO_LONG,     /* over SPF_EXPAND_MAX or outsz */
	SPF_MACRO_NEEDS_PTR,    /* %{p} and vars->ptr is NULL */
};

/* Expand a macro-string (§7.1) into out.  explanation: the letters c, r, t
 * are allowed (exp= text only, §7.2). */
enum spf_macro_status spf_macro_expand(const char *spec, size_t len,
				       const struct spf_macro_vars *v, bool explanation,
				       char *out, size_t outsz);

/* Expand a domain-spec and make it a name to look up: at most
 * SPF_NAME_MAX characters, labels removed from the left until it fits
 * (§4.8, §7.3), no trailing dot. */
enum spf_macro_status spf_expand_domain(const char *spec, const struct spf_macro_vars *v,
					char out[SPF_NAME_MAX + 1]);

/* A name SPF may look up or take as <domain> (§4.3): several labels, none
 * empty or over 63 octets. */
bool spf_domain_valid(const char *name);
/* No empty label and none over 63 octets (RFC 1035 §2.3.4): a name that
 * can be asked, one label or more. */
bool spf_domain_labels_ok(const char *name);

#endif

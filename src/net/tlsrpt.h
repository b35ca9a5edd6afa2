/* tlsrpt: SMTP TLS reporting (RFC 8460) as text — the "_smtp._tls" TXT
 * record that says where a domain wants its reports (§3), and the JSON
 * report itself (§4), gzip-compressed for sending (§5.1).  The record comes
 * from strangers: its parser is bounded and strict where the RFC is. */
#ifndef POSTHORN_TLSRPT_H
#define POSTHORN_TLSRPT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

enum {
	TLSRPT_RUA_MAX = 4,             /* report addresses kept from one record */
	TLSRPT_URI_MAX = 512,           /* bytes of one of them */
	TLSRPT_FAILURES_MAX = 16,       /* failure kinds kept per policy */
	TLSRPT_POLICY_STRINGS_MAX = 32, /* lines of a policy kept for the report */
};

/* Where reports go: "mailto:ADDRESS" or "https://..." (§3). */
struct tlsrpt_rua {
	bool https;
	char uri[TLSRPT_URI_MAX];       /* the address (mailto: stripped) or the URL */
};

/* The record "v=TLSRPTv1; rua=mailto:a@b.example,https://c.example/r":
 * true with the (at most TLSRPT_RUA_MAX) usable destinations; false when
 * it is no TLSRPTv1 record, is malformed, or names none that posthorn can
 * use.  Commas inside a URI are %-encoded (§3). */
bool tlsrpt_record_parse(const char *txt, size_t len, struct tlsrpt_rua *rua, size_t *nrua);

/* Policy types of §4.4. */
enum tlsrpt_policy_type { TLSRPT_POLICY_STS, TLSRPT_POLICY_TLSA, TLSRPT_POLICY_NONE };

/* One kind of failure and how many sessions had it (§4.3, §4.4). */
struct tlsrpt_failure {
	const char *result_type;        /* "starttls-not-supported", "validation-failure", ... */
	const char *receiving_mx;       /* the MX host name */
	const char *receiving_ip;       /* or NULL */
	uint64_t sessions;
	const char *sending_ip;         /* sending-mta-ip, or NULL */
};

/* The results of one policy domain over the report's period. */
struct tlsrpt_policy {
	const char *domain;
	enum tlsrpt_policy_type type;
	const char *const *strings;     /* the policy as lines (MTA-STS policy, TLSA records) */
	size_t nstrings;
	const char *mx_host;            /* for an sts policy: its first mx pattern, or NULL */
	uint64_t successes;
	const struct tlsrpt_failure *failures;
	size_t nfailures;
	uint64_t other_failures;        /* failed sessions counted in no detail row */
};

struct tlsrpt_report {
	const char *organization;       /* organization-name: the reporting host */
	const char *contact;            /* contact-info, e.g. postmaster@host */
	const char *report_id;
	time_t start, end;              /* date-range */
	const struct tlsrpt_policy *policies;
	size_t npolicies;
};

/* The report as JSON (§4.4), NUL-terminated, malloc'ed; NULL when it
 * cannot be built (a string that is not UTF-8). */
char *tlsrpt_report_json(const struct tlsrpt_report *r);

/* data gzip-compressed (RFC 1952, as §5.1 asks): malloc'ed, *outlen its
 * length; NULL on failure. */
unsigned char *tlsrpt_gzip(const void *data, size_t len, size_t *outlen);

/* The host and port of an https rua ("https://host[:port]/path"): true
 * with host (hostsz bytes) and *port (443 when none) filled; false for
 * user information, an address literal, a bad port or a host name that
 * does not fit. */
bool tlsrpt_https_target(const char *url, char *host, size_t hostsz, unsigned short *port);

/* The report by mail (§5.3): multipart/report; report-type="tlsrpt" with
 * a short text part and the application/tlsrpt+gzip part (base64), the
 * TLS-Report-Domain and TLS-Report-Submitter fields and the Subject §5.3
 * asks for. */
struct tlsrpt_mail {
	const char *from;               /* postmaster@ a local domain */
	const char *to;                 /* the rua address */
	const char *domain;             /* the policy domain */
	const char *submitter;          /* our host name */
	const char *report_id;
	const char *message_id;         /* "<...>" */
	time_t now, start, end;
	const unsigned char *gz;        /* the report, gzip'ed */
	size_t gzlen;
};
/* The message with CRLF line ends (malloc'ed, *len its length); NULL when
 * a field holds a byte that cannot go into a header (CR, LF, non-ASCII). */
char *tlsrpt_mail_compose(const struct tlsrpt_mail *m, size_t *len);

#endif

/* tlsstats: the counts behind TLS reports (RFC 8460 §4): per UTC day and
 * policy domain, the sessions whose TLS succeeded and, per kind of
 * failure (result-type, receiving MX and address, sending address), those
 * that failed.  A bounded table, and its text form for the state file
 * SPOOL/tlsrpt/counts (tlsreport.c keeps it on disk). */
#ifndef POSTHORN_TLSSTATS_H
#define POSTHORN_TLSSTATS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "net/tlsrpt.h"

enum {
	TLSSTATS_ENTRIES_MAX = 1024,    /* (day, policy domain) pairs kept until reported; more are not counted */
	TLSSTATS_NAME_MAX = 256,        /* a domain or host name, NUL included */
	TLSSTATS_RESULT_MAX = 32,       /* a result-type, NUL included */
	TLSSTATS_IP_MAX = 46,           /* INET6_ADDRSTRLEN */
	TLSSTATS_DAY_MAX = 11,          /* "2026-12-08" and its NUL */
	TLSSTATS_LINE_MAX = 1024,       /* a line of the state file */
	TLSSTATS_POLICY_LINE_MAX = 160, /* a line of the policy ("mx: ...", a TLSA record) */
};

/* One session's outcome, as the SMTP client saw it. */
struct tlsstats_session {
	const char *domain;             /* the policy domain (the recipient domain) */
	enum tlsrpt_policy_type type;
	const char *result;             /* NULL: success; else a result-type of §4.3 */
	const char *mx;                 /* receiving-mx-hostname */
	const char *receiving_ip;       /* or NULL */
	const char *sending_ip;         /* or NULL */
	const char *const *policy;      /* the policy as lines (§4.4 policy-string), or NULL */
	size_t npolicy;
};

struct tlsstats_failure {
	char result[TLSSTATS_RESULT_MAX];
	char mx[TLSSTATS_NAME_MAX];
	char receiving_ip[TLSSTATS_IP_MAX];   /* "" when unknown */
	char sending_ip[TLSSTATS_IP_MAX];     /* "" when unknown */
	uint64_t sessions;
};

struct tlsstats_entry {
	char day[TLSSTATS_DAY_MAX];
	char domain[TLSSTATS_NAME_MAX];
	enum tlsrpt_policy_type type;
	uint64_t successes;
	char (*policy)[TLSSTATS_POLICY_LINE_MAX]; /* the first session's policy, as lines */
	size_t npolicy;                       /* at most TLSRPT_POLICY_STRINGS_MAX */
	struct tlsstats_failure *failures;    /* at most TLSRPT_FAILURES_MAX rows */
	size_t nfailures;
	uint64_t other_failures;              /* failed sessions beyond the rows */
	unsigned tries;                       /* reports that could not be sent */
};

struct tlsstats {
	struct tlsstats_entry *entries;
	size_t n;
};

void tlsstats_init(struct tlsstats *s);
void tlsstats_free(struct tlsstats *s);

/* "YYYY-MM-DD" of t in UTC; false when t has no such date. */
bool tlsstats_day(time_t t, char day[TLSSTATS_DAY_MAX]);

/* Count one session on day.  false when it is not counted: a name too long
 * or not a host name, an unknown result, or a new (day, domain) pair when
 * TLSSTATS_ENTRIES_MAX are kept already.  A failure beyond the
 * TLSRPT_FAILURES_MAX rows of its entry is counted in other_failures. */
bool tlsstats_add(struct tlsstats *s, const char *day, const struct tlsstats_session *ss);

/* Forget entry i (its report went out, or gave up). */
void tlsstats_remove(struct tlsstats *s, size_t i);
/* Move entry i out of the table into *out (the caller frees its failures),
 * as a report being sent takes it. */
void tlsstats_take(struct tlsstats *s, size_t i, struct tlsstats_entry *out);
/* Add e's counts (and tries) back into s: a report that could not be sent.
 * false when the table is full (the counts are lost). */
bool tlsstats_merge(struct tlsstats *s, const struct tlsstats_entry *e);

/* The table as text (malloc'ed, *len its length): per entry a line
 * "E day domain type successes other tries", then per policy line
 * "P text", then per row "F result mx receiving-ip sending-ip sessions"
 * ("-" for unknown). */
char *tlsstats_format(const struct tlsstats *s, size_t *len);
/* Add the entries of text (as tlsstats_format() wrote it) to s; false with
 * the line's number and a reason in err at the first malformed line (the
 * entries before it are kept). */
bool tlsstats_parse(struct tlsstats *s, const char *text, size_t len, char *err, size_t errsz);

/* Is result a result-type of RFC 8460 §4.3 that posthorn reports? */
bool tlsstats_result_known(const char *result);

#endif

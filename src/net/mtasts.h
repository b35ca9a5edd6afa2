/* mtasts: the texts of MTA-STS (RFC 8461) — the "_mta-sts" TXT record
 * (§3.1), the policy file (§3.2) — and the matching of a mail exchanger's
 * name against the policy's mx patterns (§4.1).  Both texts come from
 * strangers: every parser is bounded and strict where the RFC is. */
#ifndef POSTHORN_MTASTS_H
#define POSTHORN_MTASTS_H

#include <stdbool.h>
#include <stddef.h>

enum {
	MTASTS_ID_MAX = 32,             /* 1*32(ALPHA / DIGIT), RFC 8461 §3.1 */
	MTASTS_POLICY_MAX = 65536,      /* bytes of a policy file we read (§3.3: 64 KiB) */
	MTASTS_MX_MAX = 32,             /* mx lines kept; more is an invalid policy */
	MTASTS_MAX_AGE_MAX = 31557600,  /* one year, §3.2 */
};

enum mtasts_mode { MTASTS_NONE, MTASTS_TESTING, MTASTS_ENFORCE };

struct mtasts_policy {
	enum mtasts_mode mode;
	unsigned long max_age;          /* seconds */
	char *mx[MTASTS_MX_MAX];        /* lower case, "mail.example.net" or "*.example.net" */
	size_t nmx;
};

const char *mtasts_mode_name(enum mtasts_mode m);

/* The id of one TXT record, when it is an STS record ("v=STSv1; id=...;"):
 * true with id (MTASTS_ID_MAX + 1 bytes) filled.  A record that starts with
 * "v=STSv1" but is malformed is false too. */
bool mtasts_record_id(const char *txt, size_t len, char id[MTASTS_ID_MAX + 1]);
/* Does the record start like an STS record (whatever follows)?  §3.1:
 * other records at the name are discarded before counting. */
bool mtasts_record_is_sts(const char *txt, size_t len);

/* The policy file (§3.2: "key: value" lines, CRLF or LF); false with a
 * reason in err on a missing or bad version, mode, max_age or mx. */
bool mtasts_policy_parse(const char *text, size_t len, struct mtasts_policy *out, char *err,
			 size_t errsz);
void mtasts_policy_clear(struct mtasts_policy *p);
void mtasts_policy_copy(struct mtasts_policy *dst, const struct mtasts_policy *src);

/* §4.1: "mx1.example.net" matches itself; "*.example.net" matches one more
 * label to its left.  Case-insensitive; a trailing dot is ignored. */
bool mtasts_mx_matches(const struct mtasts_policy *p, const char *host);

#endif

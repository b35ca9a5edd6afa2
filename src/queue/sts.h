/* sts: the MTA-STS policy of a destination domain (RFC 8461 §3.3, §5) for
 * the outbound client.  The "_mta-sts" TXT record through c-ares; when its
 * id is not the cached policy's (or that has expired), the policy fetched
 * from https://mta-sts.DOMAIN/.well-known/mta-sts.txt by libcurl on an
 * offload worker, with the host's address from c-ares (never the system's
 * resolver), the certificate verified against the system's CAs or
 * outbound's ca-file, no redirects, 64 KiB and 30 seconds at most; kept in
 * SPOOL/mta-sts/DOMAIN for its max_age.  Without a record, a cached policy
 * that has not expired still applies (§5.1); a failed fetch falls back to
 * the cached policy too, else to none. */
#ifndef POSTHORN_STS_H
#define POSTHORN_STS_H

#include "net/mtasts.h"

struct dns_resolver;
struct sts_lookup;

/* policy is NULL when the domain has none (or none could be had); problem
 * then says why when it was a failure ("sts-policy-fetch-error",
 * "sts-policy-invalid"), for the log and TLS reports, else NULL. */
typedef void (*sts_done_fn)(void *arg, const struct mtasts_policy *policy, const char *problem);

/* done runs from the loop, usually later; when it ran before this returns
 * (no workers, as in tools and unit tests) the result is NULL.  cafile may
 * be NULL (the system's CAs). */
struct sts_lookup *sts_lookup_start(struct dns_resolver *dns, const char *spool_dir,
				    const char *cafile, const char *domain, sts_done_fn done,
				    void *arg);
/* done will not run. */
void sts_lookup_cancel(struct sts_lookup *l);

#endif

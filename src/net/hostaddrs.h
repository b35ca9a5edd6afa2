/* hostaddrs: the addresses that the names of `allow host` and `deny host`
 * rules stand for (posthorn.conf(5)): each name's A and AAAA records,
 * looked up through dns.c on the event loop and again when their TTL runs
 * out.  A name matches nothing until its first answer; a failed lookup
 * keeps the addresses it had and is retried after a back-off. */
#ifndef POSTHORN_HOSTADDRS_H
#define POSTHORN_HOSTADDRS_H

#include <stddef.h>

struct event_base;
struct dns_resolver;
struct dns_addr;
struct hostaddrs;

/* The first retry after a failed lookup comes after the refresh minimum;
 * each failure in a row doubles the wait, up to this many seconds (or up
 * to the minimum, when that is longer). */
enum { HOSTADDRS_RETRY_MAX = 5 * 60 };

/* A set for names[0..n) (lower-case host names, each once), refreshed
 * after each answer's TTL bounded to [refresh_min, refresh_max] seconds
 * (refresh_min >= 1).  It knows no address until an answer or a seed. */
struct hostaddrs *hostaddrs_new(char *const *names, size_t n, unsigned refresh_min,
				unsigned refresh_max);
/* Cancels the lookups in flight and the timers; before the resolver and
 * the event_base it was started with are freed. */
void hostaddrs_free(struct hostaddrs *h);

/* The addresses name i stands for now; *n is 0 while it stands for none
 * (not looked up yet, or no such records). */
const struct dns_addr *hostaddrs_get(const struct hostaddrs *h, size_t i, size_t *n);
/* Name i stands for these addresses from now on (a lookup's answer). */
void hostaddrs_set(struct hostaddrs *h, size_t i, const struct dns_addr *addrs, size_t n);
/* Start from what prev (the generation before a reload) knows of the same
 * names, so that the rules keep matching while the new lookups run. */
void hostaddrs_seed(struct hostaddrs *h, const struct hostaddrs *prev);

/* Look every name up through dns now, and again as the answers expire;
 * server names the virtual server in the log lines.  base and dns must
 * outlive h. */
void hostaddrs_start(struct hostaddrs *h, struct event_base *base, struct dns_resolver *dns,
		     const char *server);

/* The wait before retry number `failures` (1 for the first) of a lookup
 * that failed; exposed for the unit tests. */
unsigned hostaddrs_retry_delay(unsigned refresh_min, unsigned failures);

#endif

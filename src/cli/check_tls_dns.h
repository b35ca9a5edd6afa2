/* check_tls_dns: `posthorn check-dns` on MTA-STS, TLS reporting and
 * DANE records, as other servers will read them. */
#ifndef POSTHORN_CHECK_TLS_DNS_H
#define POSTHORN_CHECK_TLS_DNS_H

#include <stdio.h>

struct conf;
struct dns_resolver;
struct event_base;

/* Reports on out; returns the number of problems (advice is not one). */
int check_dns_tls_policies(struct event_base *base, struct dns_resolver *r,
			   const struct conf *conf, FILE *out);

#endif

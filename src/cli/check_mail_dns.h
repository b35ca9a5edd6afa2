/* check_mail_dns: the part of `posthorn check-dns` that looks at each
 * local domain's mail records: MX (RFC 5321 §5.1), SPF (RFC 7208) and
 * DMARC (RFC 7489), and says what to publish. */
#ifndef POSTHORN_CHECK_MAIL_DNS_H
#define POSTHORN_CHECK_MAIL_DNS_H

#include <stdio.h>

struct conf;
struct dns_resolver;
struct event_base;

/* Report on out; returns the number of problems (missing or broken
 * records). */
int check_mail_dns(struct event_base *base, struct dns_resolver *r, const struct conf *conf,
		   FILE *out);

#endif

/* access: the one rule matcher for `connection` and `relay` (posthorn.conf(5)):
 * single addresses, networks (CIDR or address + mask), domains matched on
 * the client's forward-confirmed reverse DNS name, host names matched
 * on the addresses they stand for (hostaddrs), and block lists on what
 * their lookups found (dnsbl).  First match decides. */
#ifndef POSTHORN_ACCESS_H
#define POSTHORN_ACCESS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#include "conf/conf.h"

struct hostaddrs;

/* Does the network rule r cover the address?  IPv4-mapped IPv6 addresses
 * (::ffff:a.b.c.d) match IPv4 rules. */
bool access_addr_matches(const struct conf_rule *r, const struct sockaddr *sa);

/* Does the host rule r cover the address: is it one of those r's name
 * stands for now in hosts (the server's set; NULL: none yet)? */
bool access_host_matches(const struct conf_rule *r, const struct sockaddr *sa,
			 const struct hostaddrs *hosts);

/* Is name equal to domain or below it on a label boundary ("mail.isp.example"
 * is in "isp.example", "badisp.example" is not), case-insensitively, one
 * trailing dot ignored on either? */
bool access_name_in_domain(const char *name, const char *domain);

/* Do any of the rules need the client's reverse name? */
bool access_needs_name(const struct conf_rule *rules, size_t n);

/* The first rule that matches the client (address rules always; domain
 * rules only when name, the forward-confirmed reverse name, is known; host
 * rules on the addresses hosts knows for their names, none while a name
 * is not resolved); NULL when none does.  */
const struct conf_rule *access_first_match(const struct conf_rule *rules, size_t n,
					   const struct sockaddr *sa, const char *name,
					   const struct hostaddrs *hosts);

/* The index of the first rule other than a dnsbl rule that matches the
 * client (c->nrules when none does): the dnsbl rules before it are the
 * ones whose lists must be asked; those after it can never decide. */
size_t access_dnsbl_reach(const struct conf_connection *c, const struct sockaddr *sa,
			  const char *name, const struct hostaddrs *hosts);

/* `connection` verdict as access_connection_allowed(), with the block
 * lists' findings: listed[i] says whether rules[i] (a dnsbl rule) lists
 * the client; NULL: no list does. */
bool access_connection_decide(const struct conf_connection *c, const struct sockaddr *sa,
			      const char *name, const struct hostaddrs *hosts, const bool *listed,
			      const struct conf_rule **matched);

/* `connection` verdict: the first match's action, else default (dnsbl
 * rules match nobody here). */
bool access_connection_allowed(const struct conf_connection *c, const struct sockaddr *sa,
			       const char *name, const struct hostaddrs *hosts,
			       const struct conf_rule **matched);

#endif

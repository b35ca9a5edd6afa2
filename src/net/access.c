/* access: the rule matcher of the `connection` and `relay` blocks (posthorn.conf(5)):
 * single addresses, networks (CIDR or address + mask), domains matched on
 * the client's forward-confirmed reverse name, host names matched on
 * the addresses they stand for, and block lists that list the client.
 * The first match decides.  Pure functions: no DNS here (the caller brings
 * the name from dns.c, the host names' addresses from hostaddrs.c, the
 * block lists' findings from dnsbl.c). */
#include "net/access.h"

#include <netinet/in.h>
#include <string.h>
#include <strings.h>

#include "net/dns.h"
#include "net/hostaddrs.h"

/* The client's address as the rules see it: IPv4-mapped IPv6 addresses
 * (::ffff:a.b.c.d, RFC 4291 §2.5.5.2) become plain IPv4. */
struct access_addr {
	int family;
	uint8_t bytes[16];
};

static const uint8_t access_mapped_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

static bool access_addr_from(const struct sockaddr *sa, struct access_addr *out)
{
	memset(out, 0, sizeof *out);
	if (!sa)
		return false;
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
		out->family = AF_INET;
		memcpy(out->bytes, &in->sin_addr, 4);
		return true;
	}
	if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
		const uint8_t *b = in6->sin6_addr.s6_addr;
		if (memcmp(b, access_mapped_prefix, sizeof access_mapped_prefix) == 0) {
			out->family = AF_INET;
			memcpy(out->bytes, b + 12, 4);
		} else {
			out->family = AF_INET6;
			memcpy(out->bytes, b, 16);
		}
		return true;
	}
	return false;
}

static bool access_masked_equal(const uint8_t *addr, const uint8_t *net, const uint8_t *mask,
				size_t len)
{
	for (size_t i = 0; i < len; i++)
		if ((addr[i] & mask[i]) != (net[i] & mask[i]))
			return false;
	return true;
}

/* An IPv6 rule inside ::ffff:0:0/96 (e.g. "::ffff:192.0.2.0/120") is an IPv4
 * rule in disguise; any other IPv6 rule (even ::/0) never covers an IPv4
 * client. */
static bool access_v6_rule_covers_v4(const struct conf_rule *r, const struct access_addr *a)
{
	if (r->prefix < 96)
		return false;
	if (memcmp(r->addr, access_mapped_prefix, sizeof access_mapped_prefix) != 0)
		return false;
	return access_masked_equal(a->bytes, r->addr + 12, r->mask + 12, 4);
}

bool access_addr_matches(const struct conf_rule *r, const struct sockaddr *sa)
{
	struct access_addr a;
	if (!r || r->kind != RULE_NETWORK || !access_addr_from(sa, &a))
		return false;
	if (r->family == a.family)
		return access_masked_equal(a.bytes, r->addr, r->mask, a.family == AF_INET ? 4 : 16);
	if (r->family == AF_INET6 && a.family == AF_INET)
		return access_v6_rule_covers_v4(r, &a);
	return false;
}

bool access_host_matches(const struct conf_rule *r, const struct sockaddr *sa,
			 const struct hostaddrs *hosts)
{
	struct access_addr a;
	if (!r || r->kind != RULE_HOST || !access_addr_from(sa, &a))
		return false;
	size_t n;
	const struct dns_addr *addrs = hostaddrs_get(hosts, r->host, &n);
	for (size_t i = 0; i < n; i++)
		if (addrs[i].family == a.family &&
		    memcmp(addrs[i].addr, a.bytes, a.family == AF_INET ? 4 : 16) == 0)
			return true;
	return false;
}

/* Length of s without one trailing dot. */
static size_t access_name_len(const char *s)
{
	size_t n = strlen(s);
	if (n > 0 && s[n - 1] == '.')
		n--;
	return n;
}

bool access_name_in_domain(const char *name, const char *domain)
{
	if (!name || !domain)
		return false;
	size_t nlen = access_name_len(name), dlen = access_name_len(domain);
	if (nlen == 0 || dlen == 0 || dlen > nlen)
		return false;
	const char *tail = name + (nlen - dlen);
	if (strncasecmp(tail, domain, dlen) != 0)
		return false;
	/* Equal, or below the domain on a label boundary. */
	return nlen == dlen || tail[-1] == '.';
}

bool access_needs_name(const struct conf_rule *rules, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (rules[i].kind == RULE_DOMAIN)
			return true;
	return false;
}

static bool access_rule_matches(const struct conf_rule *r, const struct sockaddr *sa,
				const char *name, const struct hostaddrs *hosts, bool listed)
{
	switch (r->kind) {
	case RULE_DNSBL:
		return listed;
	case RULE_DOMAIN:
		return name != NULL && access_name_in_domain(name, r->domain);
	case RULE_HOST:
		return access_host_matches(r, sa, hosts);
	case RULE_NETWORK:
		break;
	}
	return access_addr_matches(r, sa);
}

static size_t access_first_match_index(const struct conf_rule *rules, size_t n,
				       const struct sockaddr *sa, const char *name,
				       const struct hostaddrs *hosts, const bool *listed)
{
	for (size_t i = 0; i < n; i++)
		if (access_rule_matches(&rules[i], sa, name, hosts, listed && listed[i]))
			return i;
	return n;
}

const struct conf_rule *access_first_match(const struct conf_rule *rules, size_t n,
					   const struct sockaddr *sa, const char *name,
					   const struct hostaddrs *hosts)
{
	size_t i = access_first_match_index(rules, n, sa, name, hosts, NULL);
	return i < n ? &rules[i] : NULL;
}

size_t access_dnsbl_reach(const struct conf_connection *c, const struct sockaddr *sa,
			  const char *name, const struct hostaddrs *hosts)
{
	return access_first_match_index(c->rules, c->nrules, sa, name, hosts, NULL);
}

bool access_connection_decide(const struct conf_connection *c, const struct sockaddr *sa,
			      const char *name, const struct hostaddrs *hosts, const bool *listed,
			      const struct conf_rule **matched)
{
	size_t i = access_first_match_index(c->rules, c->nrules, sa, name, hosts, listed);
	const struct conf_rule *r = i < c->nrules ? &c->rules[i] : NULL;
	if (matched)
		*matched = r;
	if (r)
		return r->action == ACTION_ALLOW;
	return c->default_action == ACTION_ALLOW;
}

bool access_connection_allowed(const struct conf_connection *c, const struct sockaddr *sa,
			       const char *name, const struct hostaddrs *hosts,
			       const struct conf_rule **matched)
{
	return access_connection_decide(c, sa, name, hosts, NULL, matched);
}

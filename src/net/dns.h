/* dns: every DNS query posthorn makes, through c-ares driven by the
 * libevent loop (never blocking it): PTR, A, AAAA, MX, TXT; a cache bounded in
 * size that honours TTLs, with negative caching (RFC 2308); and the
 * forward-confirmed reverse name of a client (PTR, then A/AAAA of that name
 * must contain the client's address). */
#ifndef POSTHORN_DNS_H
#define POSTHORN_DNS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

struct event_base;
struct conf_dns;
struct dns_resolver;

enum dns_status {
	DNS_OK,
	DNS_NOTFOUND,           /* NXDOMAIN or no records of that type */
	DNS_TIMEOUT,            /* no answer within timeout x tries */
	DNS_ERROR,              /* SERVFAIL, refused, malformed, ... */
};

const char *dns_status_name(enum dns_status st);

/* A zero field means its default.  No answer within timeout_ms x tries is
 * DNS_TIMEOUT, whatever c-ares' own back-off would do. */
struct dns_options {
	unsigned timeout_ms;    /* per try; default 2000 */
	unsigned tries;         /* default 2 */
	size_t cache_entries;   /* default 10000 */
	unsigned negative_ttl_max; /* cap for negative answers, seconds; default 300 */
};

/* servers: the configured DNS servers (IP[:port]); NULL or empty means the
 * system's /etc/resolv.conf.  NULL with a message in err on failure. */
struct dns_resolver *dns_resolver_new(struct event_base *base, const struct conf_dns *servers,
				      const struct dns_options *opt, char *err, size_t errsz);
/* Frees the resolver; outstanding queries are cancelled and never call
 * back.  May be called from a callback: it is then freed when the
 * callback returns (the event_base must outlive that). */
void dns_resolver_free(struct dns_resolver *r);

/* A query in flight.  dns_cancel() guarantees the callback will not run;
 * a session that goes away cancels its queries. */
typedef uint64_t dns_query_id;
void dns_cancel(struct dns_resolver *r, dns_query_id id);

struct dns_addr {
	int family;             /* AF_INET / AF_INET6 */
	uint8_t addr[16];
};

struct dns_mx {
	unsigned preference;
	char *host;
};

typedef void (*dns_name_cb)(void *arg, enum dns_status st, const char *name);
typedef void (*dns_addrs_cb)(void *arg, enum dns_status st, const struct dns_addr *addrs,
			     size_t n);
typedef void (*dns_mx_cb)(void *arg, enum dns_status st, const struct dns_mx *mx, size_t n);
/* ttl: seconds the answer may be kept (what is left of it when it came
 * from the cache; 0 with a failure). */
typedef void (*dns_host_cb)(void *arg, enum dns_status st, const struct dns_addr *addrs,
			    size_t n, uint32_t ttl);

/* The callback may run before the function returns (cache hit, or a name
 * that is no host name: DNS_ERROR, nothing sent); it never runs after
 * dns_cancel().  Returns the query id (0 when it already ran, or when r is
 * NULL).  Names given to callbacks are lower-case host names (letters,
 * digits, '-', '_'); answers with other names are ignored. */
dns_query_id dns_lookup_ptr(struct dns_resolver *r, const struct sockaddr *sa, dns_name_cb cb,
			    void *arg);
/* A and AAAA together (A first); DNS_OK when either has addresses. */
dns_query_id dns_lookup_addrs(struct dns_resolver *r, const char *name, dns_addrs_cb cb,
			      void *arg);
/* A only, as a DNS block list answers (RFC 5782 §2.1); otherwise as
 * dns_lookup_addrs(). */
dns_query_id dns_lookup_a(struct dns_resolver *r, const char *name, dns_addrs_cb cb, void *arg);
/* A and AAAA together for a caller that keeps the addresses for their TTL
 * (the host rules): DNS_OK when both answered and either has addresses,
 * DNS_NOTFOUND when both say there are none, else the failure of either
 * (DNS_TIMEOUT or DNS_ERROR: never half an answer).  ttl is the smaller
 * of the two answers' TTLs (a negative answer's per RFC 2308). */
dns_query_id dns_lookup_host(struct dns_resolver *r, const char *name, dns_host_cb cb, void *arg);
/* MX sorted by preference (equal preferences in random order).  A null MX
 * (RFC 7505: one record, preference 0, host ".") comes back as DNS_OK with
 * n == 1 and host "". */
dns_query_id dns_lookup_mx(struct dns_resolver *r, const char *domain, dns_mx_cb cb, void *arg);

/* One TXT record: its character-strings concatenated (RFC 7208 §3.3,
 * RFC 6376 §3.6.2.2).  text is NUL-terminated but may hold other NULs: len
 * counts its bytes. */
struct dns_txt {
	char *text;
	size_t len;
};
/* ttl as for dns_host_cb. */
typedef void (*dns_txt_cb)(void *arg, enum dns_status st, const struct dns_txt *txt, size_t n,
			   uint32_t ttl);
/* The TXT records of name (which may hold '_': "_dmarc.example.test").
 * DNS_NOTFOUND for NXDOMAIN or no TXT record (SPF's "void lookup", RFC 7208
 * §4.6.4); an answer with a malformed record, more than 32 records or more
 * than 32 KiB of text is DNS_ERROR, never a part of it. */
dns_query_id dns_lookup_txt(struct dns_resolver *r, const char *name, dns_txt_cb cb, void *arg);

/* ---- DNSSEC status, for DANE (RFC 7672) ----
 * posthorn does not validate DNSSEC: it asks with the AD bit set and
 * believes the AD bit of the answer only when every configured server is
 * on loopback (a local validating resolver).  "secure" below is that: the
 * answer (or the denial that there is one) was validated.  A bogus answer
 * comes from a validating resolver as SERVFAIL: DNS_ERROR. */
/* Does r believe AD bits (every server on loopback)? */
bool dns_resolver_validates(const struct dns_resolver *r);
typedef void (*dns_addrs_sec_cb)(void *arg, enum dns_status st, const struct dns_addr *addrs,
				 size_t n, bool secure);
typedef void (*dns_mx_sec_cb)(void *arg, enum dns_status st, const struct dns_mx *mx, size_t n,
			      bool secure);
/* As dns_lookup_addrs and dns_lookup_mx; secure when every answer was. */
dns_query_id dns_lookup_addrs_sec(struct dns_resolver *r, const char *name, dns_addrs_sec_cb cb,
				  void *arg);
dns_query_id dns_lookup_mx_sec(struct dns_resolver *r, const char *domain, dns_mx_sec_cb cb,
			       void *arg);
/* One TLSA record (RFC 6698 §2.1); data is valid during the callback. */
struct dns_tlsa {
	uint8_t usage, selector, mtype;
	const uint8_t *data;
	size_t len;
};
typedef void (*dns_tlsa_cb)(void *arg, enum dns_status st, const struct dns_tlsa *tlsa, size_t n,
			    bool secure);
/* The TLSA records of _port._tcp.host (RFC 7672 §2.2.3). */
dns_query_id dns_lookup_tlsa(struct dns_resolver *r, const char *host, unsigned port,
			     dns_tlsa_cb cb, void *arg);
/* PTR of the client, then A/AAAA of that name; the name is reported only
 * when the forward lookup contains the client's address (else
 * DNS_NOTFOUND).  IPv4-mapped clients are looked up as IPv4 (and an IPv4
 * client's names by A only, an IPv6 client's by AAAA only).  Up to 5 PTR
 * names are tried; the first confirmed one wins.  A failed PTR step reports
 * its status; when no name is confirmed and a forward lookup failed, its
 * DNS_TIMEOUT / DNS_ERROR is reported (for the log: still no name). */
dns_query_id dns_lookup_fcrdns(struct dns_resolver *r, const struct sockaddr *sa, dns_name_cb cb,
			       void *arg);

/* Counters for tests and logs. */
struct dns_stats {
	uint64_t queries_sent;  /* to the network */
	uint64_t cache_hits;
};
void dns_get_stats(const struct dns_resolver *r, struct dns_stats *out);

#endif

/* dnsbl: DNS block lists for the `connection` rules (RFC 5782): the name a
 * client is looked up by under a list's zone, the answers that list it,
 * and one client's lookups (A, and TXT when listed) of the zones its rules
 * reach, through dns.c
 * (whose cache keeps each answer for its TTL: a client is looked up once
 * per zone while the answer lasts). */
#ifndef POSTHORN_DNSBL_H
#define POSTHORN_DNSBL_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#include "conf/conf.h"
#include "net/dns.h"

/* Longest query name: 32 nibbles of an IPv6 address, dots, the zone. */
#define DNSBL_QUERY_MAX 320
/* Longest reason text kept from a list's TXT record, bytes (so that the
 * whole SMTP refusal stays within RFC 5321's 512-octet reply line). */
#define DNSBL_REASON_MAX 150
/* Longest refusal text (without the reply code). */
#define DNSBL_REFUSAL_MAX 480

/* The name to look the client up by under zone (RFC 5782 §2.1 IPv4:
 * reversed octets; §2.4 IPv6: reversed nibbles); IPv4-mapped IPv6
 * addresses are looked up as IPv4.  false when it does not fit or sa is
 * not an IP address. */
bool dnsbl_query_name(const struct sockaddr *sa, const char *zone, char *out, size_t outsz);

/* Does this A answer list the client under rule r: an address in
 * 127.0.0.0/8 (RFC 5782 §2.3), one of r's answers when it names some? */
bool dnsbl_answer_counts(const struct conf_rule *r, const struct dns_addr *a);

/* The text of a TXT record made fit for a reply line: printable ASCII
 * only (anything else becomes '?'), at most DNSBL_REASON_MAX - 1 bytes,
 * a cut marked with "...". */
void dnsbl_reason_clean(const char *in, size_t len, char *out, size_t outsz);

/* "Service unavailable; client [ADDR] blocked using ZONE" and, when the
 * list gave one, "; REASON". */
void dnsbl_refusal_text(const char *client, const char *zone, const char *reason, char *out,
			size_t outsz);

enum dnsbl_state {
	DNSBL_UNCHECKED,        /* not a dnsbl rule, or not reached */
	DNSBL_LISTED,
	DNSBL_CLEAN,            /* NXDOMAIN, or no answer that counts */
	DNSBL_FAILED,           /* timeout or error: lists nobody */
};

/* One rule's outcome. */
struct dnsbl_result {
	enum dnsbl_state state;
	enum dns_status dns;    /* the A lookup's status */
	char answer[16];        /* LISTED: the A answer that counted, dotted */
	char reason[DNSBL_REASON_MAX]; /* LISTED: the TXT text, cleaned; "" when none */
};

/* results: one per rule of the check (rules[i] -> results[i]). */
typedef void (*dnsbl_done_cb)(void *arg, const struct dnsbl_result *results, size_t n);

struct dnsbl_check;

/* Look the client up in the zone of every dnsbl rule among rules[0..upto),
 * all at once; cb runs once when every answer is in (a listed client's TXT
 * reason included).  cb may run before this returns (every answer from the
 * cache): then NULL is returned and the check is already gone. */
struct dnsbl_check *dnsbl_check_start(struct dns_resolver *r, const struct conf_rule *rules,
				      size_t n, size_t upto, const struct sockaddr *sa,
				      dnsbl_done_cb cb, void *arg);
/* Cancel a check still running: cb never runs. */
void dnsbl_check_cancel(struct dnsbl_check *c);

#endif

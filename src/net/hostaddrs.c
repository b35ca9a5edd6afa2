/* hostaddrs: the addresses behind the names of `allow host` / `deny host`
 * rules (posthorn.conf(5)).  Each name is looked up (A and AAAA, RFC 1035,
 * RFC 3596) through dns.c on the event loop, never blocking it, and looked
 * up again when the answer's TTL runs out (RFC 1035 §3.2.1), bounded to the
 * configured refresh minimum and maximum; a negative answer (RFC 2308)
 * empties the name.  Until an answer comes the old addresses stay in force;
 * a lookup that fails (timeout, server failure) keeps them and is retried
 * after a back-off that doubles. */
#include "net/hostaddrs.h"

#include <arpa/inet.h>
#include <event2/event.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lib/log.h"
#include "lib/strbuf.h"
#include "lib/util.h"
#include "net/dns.h"

/* Room for the address list of one log line: what does not fit is
 * counted ("+N-more"), never cut. */
enum { HOSTADDRS_LOG_LIST = 512 };

struct hostaddrs_name {
	struct hostaddrs *set;
	char *name;
	struct dns_addr *addrs; /* what the name stands for now */
	size_t naddrs;
	bool answered;          /* an answer (or a seed) gave its addresses */
	unsigned failures;      /* lookups failed in a row */
	dns_query_id query;     /* in flight, or 0 */
	struct event *timer;    /* the next lookup; NULL until started */
};

struct hostaddrs {
	struct hostaddrs_name *names;
	size_t n;
	unsigned refresh_min, refresh_max; /* seconds */
	struct event_base *base;
	struct dns_resolver *dns;
	char *server;           /* for the log */
};

struct hostaddrs *hostaddrs_new(char *const *names, size_t n, unsigned refresh_min,
				unsigned refresh_max)
{
	struct hostaddrs *h = xcalloc(1, sizeof *h);
	h->refresh_min = refresh_min > 0 ? refresh_min : 1;
	h->refresh_max = refresh_max > h->refresh_min ? refresh_max : h->refresh_min;
	h->n = n;
	h->names = xcalloc(n ? n : 1, sizeof *h->names);
	for (size_t i = 0; i < n; i++) {
		h->names[i].set = h;
		h->names[i].name = xstrdup(names[i]);
	}
	return h;
}

void hostaddrs_free(struct hostaddrs *h)
{
	if (!h)
		return;
	for (size_t i = 0; i < h->n; i++) {
		struct hostaddrs_name *e = &h->names[i];
		dns_cancel(h->dns, e->query); /* its callback never runs */
		if (e->timer)
			event_free(e->timer);
		free(e->addrs);
		free(e->name);
	}
	free(h->names);
	free(h->server);
	free(h);
}

const struct dns_addr *hostaddrs_get(const struct hostaddrs *h, size_t i, size_t *n)
{
	if (!h || i >= h->n) {
		*n = 0;
		return NULL;
	}
	*n = h->names[i].naddrs;
	return h->names[i].addrs;
}

static void hostaddrs_name_set(struct hostaddrs_name *e, const struct dns_addr *addrs, size_t n)
{
	free(e->addrs);
	e->addrs = NULL;
	e->naddrs = 0;
	if (n) {
		e->addrs = xcalloc(n, sizeof *e->addrs);
		memcpy(e->addrs, addrs, n * sizeof *addrs);
		e->naddrs = n;
	}
	e->answered = true;
}

void hostaddrs_set(struct hostaddrs *h, size_t i, const struct dns_addr *addrs, size_t n)
{
	if (i >= h->n)
		fatal("hostaddrs_set: name %zu of %zu", i, h->n);
	hostaddrs_name_set(&h->names[i], addrs, n);
}

void hostaddrs_seed(struct hostaddrs *h, const struct hostaddrs *prev)
{
	for (size_t i = 0; prev && i < h->n; i++) {
		for (size_t k = 0; k < prev->n; k++) {
			const struct hostaddrs_name *old = &prev->names[k];
			if (old->answered && strcmp(old->name, h->names[i].name) == 0) {
				hostaddrs_name_set(&h->names[i], old->addrs, old->naddrs);
				break;
			}
		}
	}
}

/* ---- the lookups ----------------------------------------------------------------- */

static bool hostaddrs_addr_equal(const struct dns_addr *a, const struct dns_addr *b)
{
	return a->family == b->family &&
	       memcmp(a->addr, b->addr, a->family == AF_INET ? 4 : 16) == 0;
}

static bool hostaddrs_contains(const struct dns_addr *set, size_t n, const struct dns_addr *a)
{
	for (size_t i = 0; i < n; i++)
		if (hostaddrs_addr_equal(&set[i], a))
			return true;
	return false;
}

/* The same set of addresses, in any order (servers rotate them)? */
static bool hostaddrs_same(const struct hostaddrs_name *e, const struct dns_addr *addrs, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!hostaddrs_contains(e->addrs, e->naddrs, &addrs[i]))
			return false;
	for (size_t i = 0; i < e->naddrs; i++)
		if (!hostaddrs_contains(addrs, n, &e->addrs[i]))
			return false;
	return true;
}

/* "192.0.2.1,2001:db8::1" (or "none") into sb, for a log value. */
static void hostaddrs_list(const struct hostaddrs_name *e, struct strbuf *sb)
{
	struct log_list l;
	if (e->naddrs == 0) {
		(void)strbuf_adds(sb, "none");
		return;
	}
	log_list_begin(&l, sb, "", "");
	for (size_t i = 0; i < e->naddrs; i++) {
		char text[INET6_ADDRSTRLEN];
		if (!inet_ntop(e->addrs[i].family, e->addrs[i].addr, text, sizeof text))
			xsnprintf(text, sizeof text, "?"); /* text holds an IPv6 address: "?" fits */
		log_list_add(&l, text);
	}
	if (!log_list_end(&l))
		fatal("hostaddrs: the log buffer cannot hold its own marker");
}

unsigned hostaddrs_retry_delay(unsigned refresh_min, unsigned failures)
{
	unsigned cap = refresh_min > HOSTADDRS_RETRY_MAX ? refresh_min : HOSTADDRS_RETRY_MAX;
	unsigned delay = refresh_min;
	for (unsigned i = 1; i < failures && delay < cap; i++)
		delay = delay > cap / 2 ? cap : delay * 2;
	return delay;
}

static unsigned hostaddrs_refresh_after(const struct hostaddrs *h, uint32_t ttl)
{
	if (ttl < h->refresh_min)
		return h->refresh_min;
	if (ttl > h->refresh_max)
		return h->refresh_max;
	return (unsigned)ttl;
}

static void hostaddrs_schedule(struct hostaddrs_name *e, unsigned seconds)
{
	struct timeval tv = {.tv_sec = (time_t)seconds};
	if (evtimer_add(e->timer, &tv) < 0)
		fatal("hostaddrs: cannot add a timer to the event loop");
}

/* A lookup failed: the addresses stay as they were; try again later. */
static void hostaddrs_failed(struct hostaddrs_name *e, enum dns_status st)
{
	const struct hostaddrs *h = e->set;
	if (e->failures < UINT_MAX)
		e->failures++;
	unsigned retry = hostaddrs_retry_delay(h->refresh_min, e->failures);
	char buf[HOSTADDRS_LOG_LIST];
	struct strbuf sb;
	strbuf_init(&sb, buf, sizeof buf);
	hostaddrs_list(e, &sb);
	log_warn("event=host-lookup-failed server=%s host=%s status=%s kept=%s retry=%us",
		 h->server, e->name, dns_status_name(st), strbuf_str(&sb), retry);
	hostaddrs_schedule(e, retry);
}

static void hostaddrs_answered(void *arg, enum dns_status st, const struct dns_addr *addrs,
			       size_t n, uint32_t ttl)
{
	struct hostaddrs_name *e = arg;
	const struct hostaddrs *h = e->set;
	e->query = 0;
	if (st != DNS_OK && st != DNS_NOTFOUND) {
		hostaddrs_failed(e, st);
		return;
	}
	bool changed = !e->answered || !hostaddrs_same(e, addrs, n);
	hostaddrs_name_set(e, addrs, n);
	e->failures = 0;
	unsigned next = hostaddrs_refresh_after(h, ttl);
	char buf[HOSTADDRS_LOG_LIST];
	struct strbuf sb;
	strbuf_init(&sb, buf, sizeof buf);
	hostaddrs_list(e, &sb);
	/* a change is news; the same answer again is not */
	log_msg(changed ? LOG_INFO : LOG_DEBUG,
		"event=host-addresses server=%s host=%s status=%s addresses=%s ttl=%u refresh=%us",
		h->server, e->name, dns_status_name(st), strbuf_str(&sb), (unsigned)ttl, next);
	hostaddrs_schedule(e, next);
}

static void hostaddrs_lookup(struct hostaddrs_name *e)
{
	/* the answer may come before this returns (from the cache) */
	dns_query_id q = dns_lookup_host(e->set->dns, e->name, hostaddrs_answered, e);
	if (q)
		e->query = q;
}

static void hostaddrs_timer_fired(evutil_socket_t fd, short what, void *arg)
{
	hostaddrs_lookup(arg);
}

void hostaddrs_start(struct hostaddrs *h, struct event_base *base, struct dns_resolver *dns,
		     const char *server)
{
	h->base = base;
	h->dns = dns;
	free(h->server);
	h->server = xstrdup(server);
	for (size_t i = 0; i < h->n; i++) {
		struct hostaddrs_name *e = &h->names[i];
		e->timer = evtimer_new(base, hostaddrs_timer_fired, e);
		if (!e->timer)
			fatal("hostaddrs: cannot add a timer to the event loop");
	}
	for (size_t i = 0; i < h->n; i++)
		hostaddrs_lookup(&h->names[i]);
}

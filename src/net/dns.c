/* dns: every DNS query of posthorn (RFC 1035) through c-ares on the libevent
 * loop: PTR, A, AAAA, MX (null MX, RFC 7505), TXT and TLSA (RFC 6698), each
 * marked secure when a validating resolver on loopback said so (the AD bit,
 * RFC 4035 §3.2.3, RFC 6840 §5.7); one cache bounded in size
 * that honours TTLs, with negative caching (RFC 2308); identical queries in
 * flight share one query on the wire; forward-confirmed reverse names. */
#define _GNU_SOURCE
#include "net/dns.h"

#include <ares.h>
#include <ctype.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "conf/conf.h"
#include "lib/strbuf.h"
#include "lib/metrics.h"
#include "lib/util.h"

/* RR types and class (RFC 1035 §3.2.2, §3.2.4; RFC 3596 §2.1). */
enum { DNS_T_A = 1, DNS_T_CNAME = 5, DNS_T_SOA = 6, DNS_T_PTR = 12, DNS_T_MX = 15,
       DNS_T_TXT = 16, DNS_T_AAAA = 28, DNS_T_TLSA = 52 };
enum { DNS_C_IN = 1 };

enum {
	DNS_DEFAULT_TIMEOUT_MS = 2000,
	DNS_DEFAULT_TRIES = 2,
	DNS_DEFAULT_CACHE_ENTRIES = 10000,
	DNS_DEFAULT_NEGATIVE_TTL_MAX = 300,
	DNS_TTL_MAX = 86400,            /* positive answers are cached one day at most */
	DNS_RECORDS_MAX = 32,           /* records kept from one answer */
	DNS_TXT_BYTES_MAX = 32768,      /* text of one TXT answer, all records */
	DNS_FCRDNS_NAMES = 5,           /* PTR names tried for forward confirmation */
	DNS_NAME_MAX = 253,             /* RFC 1035 §2.3.4, text form without the root dot */
	DNS_LABEL_MAX = 63,
	DNS_NAME_BUF = DNS_NAME_MAX + 2,
	DNS_HEADER_SIZE = 12,           /* RFC 1035 §4.1.1 */
	DNS_HT_INITIAL = 64,
};

/* ---- a small intrusive hash table ----------------------------------------------- */

struct dns_hnode {
	struct dns_hnode *next;
	uint64_t hash;
};

struct dns_htable {
	struct dns_hnode **buckets;
	size_t nbuckets;        /* a power of two */
	size_t count;
};

#define DNS_CONTAINER(ptr, type, member) ((type *)(void *)((char *)(ptr) - offsetof(type, member)))

static void dns_ht_init(struct dns_htable *t)
{
	t->nbuckets = DNS_HT_INITIAL;
	t->buckets = xcalloc(t->nbuckets, sizeof *t->buckets);
	t->count = 0;
}

static void dns_ht_grow(struct dns_htable *t)
{
	size_t nb = t->nbuckets * 2;
	struct dns_hnode **b = xcalloc(nb, sizeof *b);
	for (size_t i = 0; i < t->nbuckets; i++) {
		struct dns_hnode *n = t->buckets[i], *next;
		for (; n; n = next) {
			next = n->next;
			n->next = b[n->hash & (nb - 1)];
			b[n->hash & (nb - 1)] = n;
		}
	}
	free(t->buckets);
	t->buckets = b;
	t->nbuckets = nb;
}

static void dns_ht_insert(struct dns_htable *t, struct dns_hnode *n)
{
	if (t->count >= t->nbuckets)
		dns_ht_grow(t);
	struct dns_hnode **b = &t->buckets[n->hash & (t->nbuckets - 1)];
	n->next = *b;
	*b = n;
	t->count++;
}

static void dns_ht_remove(struct dns_htable *t, struct dns_hnode *n)
{
	struct dns_hnode **pp = &t->buckets[n->hash & (t->nbuckets - 1)];
	for (; *pp; pp = &(*pp)->next) {
		if (*pp == n) {
			*pp = n->next;
			n->next = NULL;
			t->count--;
			return;
		}
	}
}

static struct dns_hnode *dns_ht_bucket(const struct dns_htable *t, uint64_t hash)
{
	return t->buckets[hash & (t->nbuckets - 1)];
}

/* ---- the resolver's state -------------------------------------------------------- */

/* What is asked: type and name (lower case, no trailing dot). */
struct dns_key {
	int type;
	char *name;
	uint64_t hash;
};

/* One answer, as cached and as handed to the lookups waiting for it. */
struct dns_answer {
	enum dns_status status;
	uint32_t ttl;           /* seconds it may be cached; 0: not at all */
	char **names;           /* PTR targets or MX hosts ("" for the root) */
	unsigned *prefs;        /* MX preferences, parallel to names */
	size_t nnames;
	struct dns_addr *addrs; /* A or AAAA */
	size_t naddrs;
	struct dns_txt *txts;   /* TXT: the joined strings; TLSA: the RDATA */
	size_t ntxts;
	size_t txtbytes;        /* the sum of txts[].len */
	bool secure;            /* the AD bit, from a resolver that is trusted */
};

struct dns_entry {
	struct dns_hnode node;
	struct dns_key key;
	struct dns_entry *newer, *older; /* LRU list */
	uint64_t expires;       /* monotonic milliseconds */
	struct dns_answer ans;
};

enum dns_op_kind { DNS_OP_PTR, DNS_OP_ADDRS, DNS_OP_HOST, DNS_OP_MX, DNS_OP_FCRDNS, DNS_OP_TXT,
		   DNS_OP_TLSA };

/* Answers an op waits for.  ADDRS, HOST: 0 = A, 1 = AAAA.  FCRDNS: 0 = PTR,
 * 1 + i = forward lookup of names[i].  PTR, MX, TXT, TLSA: 0. */
#define DNS_OP_SLOTS (1 + DNS_FCRDNS_NAMES)

/* One public lookup: what the caller's id names. */
struct dns_op {
	struct dns_hnode node;  /* by id, while its callback may still run */
	struct dns_op *prev, *next; /* every op not yet freed */
	dns_query_id id;
	enum dns_op_kind kind;
	dns_name_cb name_cb;
	dns_addrs_cb addrs_cb;
	dns_host_cb host_cb;
	dns_mx_cb mx_cb;
	dns_txt_cb txt_cb;
	dns_addrs_sec_cb addrs_sec_cb;  /* ADDRS and MX asked with their DNSSEC status */
	dns_mx_sec_cb mx_sec_cb;
	dns_tlsa_cb tlsa_cb;
	void *arg;
	bool dead;              /* cancelled or completed: the callback never runs (again) */
	unsigned outstanding;   /* answers still to come, plus one while starting */
	struct dns_addr client; /* PTR, FCRDNS */
	enum dns_status slot[DNS_OP_SLOTS];
	bool confirmed[DNS_FCRDNS_NAMES];
	char *names[DNS_FCRDNS_NAMES]; /* PTR: the answer; FCRDNS: the candidates */
	size_t nnames;
	struct dns_addr *addrs; /* ADDRS, HOST */
	size_t naddrs;
	uint32_t ttl;           /* HOST, TXT: the smallest TTL of its answers */
	struct dns_mx *mx;      /* MX */
	size_t nmx;
	struct dns_txt *txts;   /* TXT, TLSA (the RDATA) */
	size_t ntxts;
	bool secure;            /* every answer it took was secure */
};

struct dns_waiter {
	struct dns_waiter *next;
	struct dns_op *op;
	int slot;
};

/* A query on the wire, shared by every op that asked the same thing. */
struct dns_pending {
	struct dns_hnode node;
	struct dns_key key;
	struct dns_resolver *r;
	struct dns_pending *prev, *next; /* every pending not yet freed */
	struct dns_waiter *waiters, **waiters_tail;
	struct event *deadline; /* timeout x tries: the answer is then DNS_TIMEOUT */
	bool in_table;
	bool orphaned;          /* answered by the deadline; c-ares still holds it */
};

/* A socket c-ares asked us to watch. */
struct dns_sock {
	struct dns_sock *next;
	ares_socket_t fd;
	struct event *ev;
};

struct dns_resolver {
	struct event_base *base;
	ares_channel channel;
	struct event *timer;    /* drives c-ares' own retransmissions and timeouts */
	struct dns_sock *socks;
	struct dns_options opt;
	uint64_t seed;          /* hash seed: names come from strangers */
	struct dns_htable cache;
	struct dns_entry *newest, *oldest;
	struct dns_htable inflight;
	struct dns_pending *pendings;
	struct dns_htable opsbyid;
	struct dns_op *ops;
	dns_query_id last_id;
	struct dns_stats stats;
	bool trust_ad;          /* every server is on loopback: its AD bit is believed */
	unsigned depth;         /* entry points on the stack (callbacks may run) */
	bool doomed;            /* dns_resolver_free() was called from a callback */
};

const char *dns_status_name(enum dns_status st)
{
	switch (st) {
	case DNS_OK:
		return "ok";
	case DNS_NOTFOUND:
		return "notfound";
	case DNS_TIMEOUT:
		return "timeout";
	case DNS_ERROR:
		return "error";
	}
	return "unknown";
}

static uint64_t dns_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Seeded FNV-1a over type and name. */
static uint64_t dns_hash(const struct dns_resolver *r, int type, const char *name)
{
	const uint64_t prime = 0x100000001b3ULL;
	uint64_t h = 0xcbf29ce484222325ULL ^ r->seed;
	h = (h ^ (uint8_t)type) * prime;
	h = (h ^ (uint8_t)(type >> 8)) * prime;
	for (const unsigned char *p = (const unsigned char *)name; *p; p++)
		h = (h ^ *p) * prime;
	return h;
}

static bool dns_key_equal(const struct dns_key *a, int type, const char *name, uint64_t hash)
{
	return a->hash == hash && a->type == type && strcmp(a->name, name) == 0;
}

/* ---- names and addresses --------------------------------------------------------- */

/* A host name as we accept it in answers and ask about: letters, digits,
 * '-' and '_' in labels of 1 to 63 octets (RFC 1035 §2.3.1, with the
 * underscore that real zones use), at most 253 octets.  Anything else (an
 * escaped dot or binary bytes in a PTR answer) is refused, so a name we
 * report can be matched on label boundaries and written in a header. */
static bool dns_hostname_valid(const char *s)
{
	size_t len = strlen(s), label = 0;
	if (len == 0 || len > DNS_NAME_MAX)
		return false;
	for (const char *p = s;; p++) {
		if (*p == '.' || *p == '\0') {
			if (label == 0 || label > DNS_LABEL_MAX)
				return false;
			if (*p == '\0')
				return true;
			label = 0;
		} else if (isalnum((unsigned char)*p) || *p == '-' || *p == '_') {
			label++;
		} else {
			return false;
		}
	}
}

/* Lower case, one trailing dot removed, validated; into out[DNS_NAME_BUF]. */
static bool dns_name_normalize(const char *in, char *out, size_t outsz)
{
	if (!in)
		return false;
	size_t len = strlen(in);
	if (len > 0 && in[len - 1] == '.')
		len--;
	if (len == 0 || len >= outsz)
		return false;
	memcpy(out, in, len);
	out[len] = '\0';
	str_lower(out);
	return dns_hostname_valid(out);
}

static size_t dns_addr_len(int family)
{
	return family == AF_INET ? 4 : 16;
}

/* The client's address; IPv4-mapped IPv6 becomes IPv4 (RFC 4291 §2.5.5.2). */
static bool dns_client_addr(const struct sockaddr *sa, struct dns_addr *out)
{
	static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
	memset(out, 0, sizeof *out);
	if (!sa)
		return false;
	if (sa->sa_family == AF_INET) {
		out->family = AF_INET;
		memcpy(out->addr, &((const struct sockaddr_in *)sa)->sin_addr, 4);
		return true;
	}
	if (sa->sa_family != AF_INET6)
		return false;
	const uint8_t *b = ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr;
	if (memcmp(b, mapped, sizeof mapped) == 0) {
		out->family = AF_INET;
		memcpy(out->addr, b + 12, 4);
	} else {
		out->family = AF_INET6;
		memcpy(out->addr, b, 16);
	}
	return true;
}

static bool dns_addr_equal(const struct dns_addr *a, const struct dns_addr *b)
{
	return a->family == b->family && memcmp(a->addr, b->addr, dns_addr_len(a->family)) == 0;
}

/* d.c.b.a.in-addr.arpa (RFC 1035 §3.5) or the 32 nibbles of ip6.arpa
 * (RFC 3596 §2.5). */
static bool dns_ptr_name(const struct dns_addr *a, char *out, size_t outsz)
{
	static const char hex[] = "0123456789abcdef";
	if (a->family == AF_INET)
		return bsnprintf(out, outsz, "%u.%u.%u.%u.in-addr.arpa", a->addr[3], a->addr[2],
				 a->addr[1], a->addr[0]);
	struct strbuf sb;
	strbuf_init(&sb, out, outsz);
	for (int i = 15; i >= 0; i--) {
		const char nibbles[4] = {hex[a->addr[i] & 0xf], '.', hex[a->addr[i] >> 4], '.'};
		(void)strbuf_add(&sb, nibbles, sizeof nibbles);
	}
	(void)strbuf_adds(&sb, "ip6.arpa");
	return strbuf_ok(&sb);
}

/* ---- answers --------------------------------------------------------------------- */

static void dns_txts_free(struct dns_txt *txts, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(txts[i].text);
	free(txts);
}

/* A copy of n records; each text keeps its terminating NUL. */
static struct dns_txt *dns_txts_copy(const struct dns_txt *src, size_t n)
{
	if (n == 0)
		return NULL;
	struct dns_txt *dst = xcalloc(n, sizeof *dst);
	for (size_t i = 0; i < n; i++) {
		dst[i].len = src[i].len;
		dst[i].text = xmalloc(src[i].len + 1);
		memcpy(dst[i].text, src[i].text, src[i].len + 1);
	}
	return dst;
}

static void dns_answer_clear(struct dns_answer *a)
{
	for (size_t i = 0; i < a->nnames; i++)
		free(a->names[i]);
	free(a->names);
	free(a->prefs);
	free(a->addrs);
	dns_txts_free(a->txts, a->ntxts);
	memset(a, 0, sizeof *a);
}

static void dns_answer_copy(struct dns_answer *dst, const struct dns_answer *src)
{
	*dst = *src;
	dst->names = NULL;
	dst->prefs = NULL;
	dst->addrs = NULL;
	if (src->nnames) {
		dst->names = xcalloc(src->nnames, sizeof *dst->names);
		dst->prefs = xcalloc(src->nnames, sizeof *dst->prefs);
		for (size_t i = 0; i < src->nnames; i++) {
			dst->names[i] = xstrdup(src->names[i]);
			dst->prefs[i] = src->prefs[i];
		}
	}
	if (src->naddrs) {
		dst->addrs = xcalloc(src->naddrs, sizeof *dst->addrs);
		memcpy(dst->addrs, src->addrs, src->naddrs * sizeof *dst->addrs);
	}
	dst->txts = dns_txts_copy(src->txts, src->ntxts);
}

static void dns_answer_add_name(struct dns_answer *a, char *name, unsigned pref)
{
	a->names = xrealloc(a->names, (a->nnames + 1) * sizeof *a->names);
	a->prefs = xrealloc(a->prefs, (a->nnames + 1) * sizeof *a->prefs);
	a->names[a->nnames] = name;
	a->prefs[a->nnames] = pref;
	a->nnames++;
}

static void dns_answer_add_addr(struct dns_answer *a, int family, const unsigned char *bytes)
{
	struct dns_addr *d = xappend(&a->addrs, &a->naddrs, sizeof *d);
	d->family = family;
	memcpy(d->addr, bytes, dns_addr_len(family));
}

/* ---- reading a reply (RFC 1035 §4.1) --------------------------------------------- */

struct dns_reader {
	const unsigned char *buf;
	size_t len;
	size_t pos;
};

struct dns_rr {
	char *owner;
	unsigned type, cls;
	uint32_t ttl;
	size_t rdata;           /* offset in the reply */
	size_t rdlen;
};

/* A (possibly compressed) name; *out, when wanted, is xmalloc'ed. */
static bool dns_read_name(struct dns_reader *rd, char **out)
{
	char *s;
	long enclen;
	if (rd->pos >= rd->len || rd->len > INT32_MAX)
		return false;
	if (ares_expand_name(rd->buf + rd->pos, rd->buf, (int)rd->len, &s, &enclen) != ARES_SUCCESS)
		return false;
	if (enclen <= 0 || (size_t)enclen > rd->len - rd->pos) {
		ares_free_string(s);
		return false;
	}
	rd->pos += (size_t)enclen;
	if (out)
		*out = xstrdup(s);
	ares_free_string(s);
	return true;
}

static bool dns_read_u16(struct dns_reader *rd, unsigned *v)
{
	if (rd->len - rd->pos < 2)
		return false;
	*v = (unsigned)rd->buf[rd->pos] << 8 | rd->buf[rd->pos + 1];
	rd->pos += 2;
	return true;
}

static bool dns_read_u32(struct dns_reader *rd, uint32_t *v)
{
	if (rd->len - rd->pos < 4)
		return false;
	const unsigned char *p = rd->buf + rd->pos;
	*v = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
	rd->pos += 4;
	return true;
}

static bool dns_read_rr(struct dns_reader *rd, struct dns_rr *rr)
{
	unsigned rdlen;
	memset(rr, 0, sizeof *rr);
	if (!dns_read_name(rd, &rr->owner))
		return false;
	if (!dns_read_u16(rd, &rr->type) || !dns_read_u16(rd, &rr->cls) ||
	    !dns_read_u32(rd, &rr->ttl) || !dns_read_u16(rd, &rdlen) || rd->len - rd->pos < rdlen) {
		free(rr->owner);
		rr->owner = NULL;
		return false;
	}
	/* RFC 2181 §8: a TTL with the top bit set is zero. */
	if (rr->ttl > INT32_MAX)
		rr->ttl = 0;
	rr->rdata = rd->pos;
	rr->rdlen = rdlen;
	rd->pos += rdlen;
	return true;
}

/* QNAME, QTYPE, QCLASS (RFC 1035 §4.1.2). */
static bool dns_skip_question(struct dns_reader *rd)
{
	if (!dns_read_name(rd, NULL) || rd->len - rd->pos < 4)
		return false;
	rd->pos += 4;
	return true;
}

/* A reader over the rdata of rr (names may still point anywhere before). */
static struct dns_reader dns_rdata_reader(const struct dns_reader *rd, const struct dns_rr *rr)
{
	struct dns_reader sub = {rd->buf, rr->rdata + rr->rdlen, rr->rdata};
	return sub;
}

static uint32_t dns_min32(uint32_t a, uint32_t b)
{
	return a < b ? a : b;
}

/* A TXT record's character-strings (RFC 1035 §3.3.14), concatenated as
 * RFC 7208 §3.3 and RFC 6376 §3.6.2.2 read them.  False when a string runs
 * past the record or the answer's records or bytes exceed their bound: a
 * TXT answer is never cut short (a policy read in part is a wrong policy). */
static bool dns_txt_take(const unsigned char *rdata, size_t rdlen, struct dns_answer *ans)
{
	if (ans->ntxts >= DNS_RECORDS_MAX || rdlen > DNS_TXT_BYTES_MAX - ans->txtbytes)
		return false;
	char *text = xmalloc(rdlen + 1);
	size_t len = 0;
	for (size_t pos = 0; pos < rdlen;) {
		size_t n = rdata[pos++];
		if (n > rdlen - pos) {
			free(text);
			return false;
		}
		memcpy(text + len, rdata + pos, n);
		len += n;
		pos += n;
	}
	text[len] = '\0';
	struct dns_txt *t = xappend(&ans->txts, &ans->ntxts, sizeof *t);
	t->text = text;
	t->len = len;
	ans->txtbytes += len;
	return true;
}

/* A TLSA record (RFC 6698 §2.1): usage, selector, matching type and at
 * least one byte of association data, kept as they came. */
static bool dns_tlsa_take(const unsigned char *rdata, size_t rdlen, struct dns_answer *ans)
{
	if (rdlen < 4 || ans->ntxts >= DNS_RECORDS_MAX ||
	    rdlen > DNS_TXT_BYTES_MAX - ans->txtbytes)
		return false;
	struct dns_txt *t = xappend(&ans->txts, &ans->ntxts, sizeof *t);
	t->text = xmalloc(rdlen + 1);
	memcpy(t->text, rdata, rdlen);
	t->text[rdlen] = '\0';
	t->len = rdlen;
	ans->txtbytes += rdlen;
	return true;
}

/* Adds the record of the asked type to ans.  Returns false when the record
 * is not usable (a bad name, a wrong length). */
static bool dns_rr_take(const struct dns_reader *rd, const struct dns_rr *rr,
			struct dns_answer *ans)
{
	struct dns_reader sub = dns_rdata_reader(rd, rr);
	char *name = NULL;
	unsigned pref = 0;
	switch (rr->type) {
	case DNS_T_A:
	case DNS_T_AAAA: {
		int family = rr->type == DNS_T_A ? AF_INET : AF_INET6;
		if (rr->rdlen != dns_addr_len(family))
			return false;
		if (ans->naddrs < DNS_RECORDS_MAX)
			dns_answer_add_addr(ans, family, rd->buf + rr->rdata);
		return true;
	}
	case DNS_T_TXT:
		return dns_txt_take(rd->buf + rr->rdata, rr->rdlen, ans);
	case DNS_T_TLSA:
		return dns_tlsa_take(rd->buf + rr->rdata, rr->rdlen, ans);
	case DNS_T_MX:
		if (!dns_read_u16(&sub, &pref))
			return false;
		/* fall through */
	case DNS_T_PTR:
		if (!dns_read_name(&sub, &name))
			return false;
		/* The root ("") is the null MX of RFC 7505. */
		if (!(rr->type == DNS_T_MX && name[0] == '\0') && !dns_hostname_valid(name)) {
			free(name);
			return false;
		}
		if (ans->nnames < DNS_RECORDS_MAX)
			dns_answer_add_name(ans, str_lower(name), pref);
		else
			free(name);
		return true;
	}
	return false;
}

/* Negative TTL (RFC 2308 §5): the smaller of the SOA's TTL and its MINIMUM
 * field, from the authority section; capped at negative_ttl_max.  Without
 * an SOA (dnsmasq's local answers, some middleboxes) the cap itself is used:
 * caching a missing name briefly is what bounds a flood of lookups for it. */
static uint32_t dns_negative_ttl(struct dns_reader *rd, unsigned nscount, uint32_t cap)
{
	uint32_t ttl = cap;
	for (unsigned i = 0; i < nscount; i++) {
		struct dns_rr rr;
		if (!dns_read_rr(rd, &rr))
			break;
		free(rr.owner);
		if (rr.type != DNS_T_SOA || rr.cls != DNS_C_IN)
			continue;
		struct dns_reader sub = dns_rdata_reader(rd, &rr);
		uint32_t f[5];
		/* MNAME, then RNAME */
		bool ok = dns_read_name(&sub, NULL);
		ok = ok && dns_read_name(&sub, NULL);
		for (int k = 0; ok && k < 5; k++)
			ok = dns_read_u32(&sub, &f[k]);
		if (ok)
			ttl = dns_min32(ttl, dns_min32(rr.ttl, f[4]));
		break;
	}
	return ttl;
}

/* The answer section: records of the asked type owned by qname or by the
 * end of the CNAME chain that starts there; the TTL is the smallest of them
 * all.  Returns false when the reply is malformed. */
static bool dns_read_answers(struct dns_reader *rd, unsigned ancount, int type,
			     const char *qname, struct dns_answer *ans, unsigned *rejected)
{
	char *cur = xstrdup(qname);
	uint32_t ttl = DNS_TTL_MAX;
	bool ok = true;
	for (unsigned i = 0; ok && i < ancount; i++) {
		struct dns_rr rr;
		if (!dns_read_rr(rd, &rr)) {
			ok = false;
			break;
		}
		if (rr.cls == DNS_C_IN && strcasecmp(rr.owner, cur) == 0) {
			if (rr.type == DNS_T_CNAME) {
				struct dns_reader sub = dns_rdata_reader(rd, &rr);
				char *target;
				if (dns_read_name(&sub, &target)) {
					free(cur);
					cur = target;
					ttl = dns_min32(ttl, rr.ttl);
				}
			} else if (rr.type == (unsigned)type) {
				if (dns_rr_take(rd, &rr, ans))
					ttl = dns_min32(ttl, rr.ttl);
				else
					++*rejected;
			}
		}
		free(rr.owner);
	}
	free(cur);
	ans->ttl = ttl;
	return ok;
}

/* Parses a reply c-ares accepted (status SUCCESS, ENODATA or ENOTFOUND). */
static void dns_parse_reply(const struct dns_resolver *r, int type, const char *qname,
			    bool success, const unsigned char *abuf, size_t alen,
			    struct dns_answer *ans)
{
	struct dns_reader rd = {abuf, alen, DNS_HEADER_SIZE};
	unsigned rejected = 0;
	if (alen < DNS_HEADER_SIZE) {
		ans->status = DNS_ERROR;
		return;
	}
	/* RFC 4035 §3.2.3: AD, believed only from a resolver on loopback */
	ans->secure = r->trust_ad && (abuf[3] & 0x20) != 0;
	unsigned qdcount = (unsigned)abuf[4] << 8 | abuf[5];
	unsigned ancount = (unsigned)abuf[6] << 8 | abuf[7];
	unsigned nscount = (unsigned)abuf[8] << 8 | abuf[9];
	bool ok = true;
	for (unsigned i = 0; ok && i < qdcount; i++)
		ok = dns_skip_question(&rd);
	if (ok)
		ok = dns_read_answers(&rd, ancount, type, qname, ans, &rejected);
	if (!ok) {
		dns_answer_clear(ans);
		ans->status = DNS_ERROR;
		return;
	}
	/* TXT records that are unusable: the answer is not known (RFC 7208
	 * §4.4 treats it as a temporary error, not as "no record"). */
	if (success && rejected && (type == DNS_T_TXT || type == DNS_T_TLSA)) {
		dns_answer_clear(ans);
		ans->status = DNS_ERROR;
		return;
	}
	if (success && (ans->nnames || ans->naddrs || ans->ntxts)) {
		ans->status = DNS_OK;
		return;
	}
	uint32_t ttl = ans->ttl;
	bool secure = ans->secure;
	dns_answer_clear(ans);
	ans->secure = secure; /* a secure denial of existence */
	/* MX records that are all unusable: not "no MX" (that would send the
	 * mail to the domain's A record, RFC 5321 §5.1), but an error. */
	ans->status = success && rejected && type == DNS_T_MX ? DNS_ERROR : DNS_NOTFOUND;
	ans->ttl = dns_min32(ttl, dns_negative_ttl(&rd, nscount, r->opt.negative_ttl_max));
}

static void dns_answer_from_ares(const struct dns_resolver *r, const struct dns_key *key,
				 int status, const unsigned char *abuf, int alen,
				 struct dns_answer *ans)
{
	memset(ans, 0, sizeof *ans);
	switch (status) {
	case ARES_SUCCESS:
	case ARES_ENODATA:
	case ARES_ENOTFOUND:
		if (abuf && alen > 0) {
			dns_parse_reply(r, key->type, key->name, status == ARES_SUCCESS, abuf,
					(size_t)alen, ans);
		} else {
			ans->status = status == ARES_SUCCESS ? DNS_ERROR : DNS_NOTFOUND;
			ans->ttl = r->opt.negative_ttl_max;
		}
		break;
	case ARES_ETIMEOUT:
		ans->status = DNS_TIMEOUT;
		break;
	default: /* SERVFAIL, REFUSED, connection refused, malformed, ... */
		ans->status = DNS_ERROR;
		break;
	}
	/* Timeouts and errors are never cached. */
	if (ans->status != DNS_OK && ans->status != DNS_NOTFOUND)
		ans->ttl = 0;
}

/* ---- the cache ------------------------------------------------------------------- */

static void dns_lru_unlink(struct dns_resolver *r, struct dns_entry *e)
{
	if (e->newer)
		e->newer->older = e->older;
	else
		r->newest = e->older;
	if (e->older)
		e->older->newer = e->newer;
	else
		r->oldest = e->newer;
	e->newer = e->older = NULL;
}

static void dns_lru_push(struct dns_resolver *r, struct dns_entry *e)
{
	e->older = r->newest;
	e->newer = NULL;
	if (r->newest)
		r->newest->newer = e;
	r->newest = e;
	if (!r->oldest)
		r->oldest = e;
}

static void dns_entry_free(struct dns_resolver *r, struct dns_entry *e)
{
	dns_ht_remove(&r->cache, &e->node);
	dns_lru_unlink(r, e);
	free(e->key.name);
	dns_answer_clear(&e->ans);
	free(e);
}

static struct dns_entry *dns_cache_find(const struct dns_resolver *r, int type, const char *name,
					uint64_t hash)
{
	for (struct dns_hnode *n = dns_ht_bucket(&r->cache, hash); n; n = n->next) {
		struct dns_entry *e = DNS_CONTAINER(n, struct dns_entry, node);
		if (dns_key_equal(&e->key, type, name, hash))
			return e;
	}
	return NULL;
}

/* Whole seconds an entry may still be used (0 in its last second). */
static uint32_t dns_entry_ttl_left(const struct dns_entry *e)
{
	uint64_t now = dns_now_ms();
	return e->expires > now ? (uint32_t)((e->expires - now) / 1000) : 0;
}

/* A fresh entry, now the most recently used; NULL on a miss. */
static struct dns_entry *dns_cache_get(struct dns_resolver *r, int type, const char *name,
				       uint64_t hash)
{
	struct dns_entry *e = dns_cache_find(r, type, name, hash);
	if (!e)
		return NULL;
	if (dns_now_ms() >= e->expires) {
		dns_entry_free(r, e);
		return NULL;
	}
	dns_lru_unlink(r, e);
	dns_lru_push(r, e);
	return e;
}

static void dns_cache_put(struct dns_resolver *r, const struct dns_key *key,
			  const struct dns_answer *ans)
{
	if (ans->ttl == 0 || (ans->status != DNS_OK && ans->status != DNS_NOTFOUND))
		return;
	struct dns_entry *old = dns_cache_find(r, key->type, key->name, key->hash);
	if (old)
		dns_entry_free(r, old);
	while (r->cache.count >= r->opt.cache_entries && r->oldest)
		dns_entry_free(r, r->oldest);
	struct dns_entry *e = xcalloc(1, sizeof *e);
	e->key.type = key->type;
	e->key.name = xstrdup(key->name);
	e->key.hash = key->hash;
	e->node.hash = key->hash;
	e->expires = dns_now_ms() + (uint64_t)ans->ttl * 1000;
	dns_answer_copy(&e->ans, ans);
	dns_ht_insert(&r->cache, &e->node);
	dns_lru_push(r, e);
}

/* ---- entry points and the event loop ---------------------------------------------- */

static void dns_resolver_destroy(struct dns_resolver *r);

/* Every path on which a callback may run holds the resolver, so that a
 * callback that frees it only marks it; the outermost leave frees it. */
static void dns_enter(struct dns_resolver *r)
{
	r->depth++;
}

/* true when the resolver is gone. */
static bool dns_leave(struct dns_resolver *r)
{
	if (--r->depth == 0 && r->doomed) {
		dns_resolver_destroy(r);
		return true;
	}
	return false;
}

static void dns_timer_update(struct dns_resolver *r)
{
	struct timeval tv, *tvp = ares_timeout(r->channel, NULL, &tv);
	if (tvp)
		evtimer_add(r->timer, tvp);
	else
		evtimer_del(r->timer);
}

static void dns_timer_fired(evutil_socket_t fd, short what, void *arg)
{
	struct dns_resolver *r = arg;
	dns_enter(r);
	ares_process_fd(r->channel, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
	dns_timer_update(r);
	dns_leave(r);
}

static void dns_sock_ready(evutil_socket_t fd, short what, void *arg)
{
	struct dns_resolver *r = arg;
	dns_enter(r);
	ares_process_fd(r->channel, (what & EV_READ) ? fd : ARES_SOCKET_BAD,
			(what & EV_WRITE) ? fd : ARES_SOCKET_BAD);
	dns_timer_update(r);
	dns_leave(r);
}

/* c-ares tells which sockets to watch for what (ARES_OPT_SOCK_STATE_CB). */
static void dns_sock_state(void *data, ares_socket_t fd, int readable, int writable)
{
	struct dns_resolver *r = data;
	struct dns_sock **pp = &r->socks;
	while (*pp && (*pp)->fd != fd)
		pp = &(*pp)->next;
	struct dns_sock *s = *pp;
	if (s) {
		/* Safe inside this event's own callback: libevent no longer
		 * touches an event once its callback has been called. */
		event_free(s->ev);
		s->ev = NULL;
	}
	if (!readable && !writable) {
		if (s) {
			*pp = s->next;
			free(s);
		}
		return;
	}
	if (!s) {
		s = xcalloc(1, sizeof *s);
		s->fd = fd;
		s->next = r->socks;
		r->socks = s;
	}
	short events = EV_PERSIST | (readable ? EV_READ : 0) | (writable ? EV_WRITE : 0);
	s->ev = event_new(r->base, fd, events, dns_sock_ready, r);
	if (!s->ev || event_add(s->ev, NULL) < 0)
		fatal("dns: cannot watch a socket on the event loop");
}

/* ---- ops: what a caller asked ------------------------------------------------------ */

static struct dns_op *dns_op_new(struct dns_resolver *r, enum dns_op_kind kind, void *arg)
{
	struct dns_op *op = xcalloc(1, sizeof *op);
	op->id = ++r->last_id;
	op->kind = kind;
	op->arg = arg;
	op->outstanding = 1; /* released when the starting function is done */
	op->ttl = DNS_TTL_MAX;
	op->secure = true; /* until an answer that is not */
	for (size_t i = 0; i < DNS_OP_SLOTS; i++)
		op->slot[i] = DNS_ERROR;
	op->node.hash = op->id;
	dns_ht_insert(&r->opsbyid, &op->node);
	op->next = r->ops;
	if (r->ops)
		r->ops->prev = op;
	r->ops = op;
	return op;
}

static struct dns_op *dns_op_find(const struct dns_resolver *r, dns_query_id id)
{
	for (struct dns_hnode *n = dns_ht_bucket(&r->opsbyid, id); n; n = n->next) {
		struct dns_op *op = DNS_CONTAINER(n, struct dns_op, node);
		if (op->id == id)
			return op;
	}
	return NULL;
}

static void dns_op_kill(struct dns_resolver *r, struct dns_op *op)
{
	if (op->dead)
		return;
	op->dead = true;
	dns_ht_remove(&r->opsbyid, &op->node);
}

static void dns_op_free(struct dns_resolver *r, struct dns_op *op)
{
	dns_op_kill(r, op);
	if (op->prev)
		op->prev->next = op->next;
	else
		r->ops = op->next;
	if (op->next)
		op->next->prev = op->prev;
	for (size_t i = 0; i < op->nnames; i++)
		free(op->names[i]);
	free(op->addrs);
	for (size_t i = 0; i < op->nmx; i++)
		free(op->mx[i].host);
	free(op->mx);
	dns_txts_free(op->txts, op->ntxts);
	free(op);
}

static void dns_rq_start(struct dns_resolver *r, int type, const char *name, struct dns_op *op,
			 int slot);

/* PTR answered: ask the forward records of each name (A for an IPv4
 * client, AAAA for IPv6). */
static void dns_fcrdns_ptr(struct dns_resolver *r, struct dns_op *op,
			   const struct dns_answer *ans)
{
	op->slot[0] = ans->status;
	if (ans->status != DNS_OK)
		return;
	/* Copy first: starting queries may touch the cache ans lives in. */
	op->nnames = ans->nnames < DNS_FCRDNS_NAMES ? ans->nnames : DNS_FCRDNS_NAMES;
	for (size_t i = 0; i < op->nnames; i++)
		op->names[i] = xstrdup(ans->names[i]);
	int type = op->client.family == AF_INET ? DNS_T_A : DNS_T_AAAA;
	for (size_t i = 0; i < op->nnames; i++)
		dns_rq_start(r, type, op->names[i], op, (int)(1 + i));
}

static void dns_fcrdns_forward(struct dns_op *op, size_t i, const struct dns_answer *ans)
{
	op->slot[1 + i] = ans->status;
	for (size_t k = 0; ans->status == DNS_OK && k < ans->naddrs; k++)
		if (dns_addr_equal(&ans->addrs[k], &op->client))
			op->confirmed[i] = true;
}

static void dns_mx_take(struct dns_op *op, const struct dns_answer *ans)
{
	op->slot[0] = ans->status;
	if (ans->status != DNS_OK)
		return;
	op->mx = xcalloc(ans->nnames, sizeof *op->mx);
	for (size_t i = 0; i < ans->nnames; i++) {
		op->mx[i].preference = ans->prefs[i];
		op->mx[i].host = xstrdup(ans->names[i]);
	}
	op->nmx = ans->nnames;
}

static void dns_op_answer(struct dns_resolver *r, struct dns_op *op, int slot,
			  const struct dns_answer *ans)
{
	op->secure = op->secure && ans->secure;
	switch (op->kind) {
	case DNS_OP_PTR:
		op->slot[0] = ans->status;
		if (ans->status == DNS_OK && ans->nnames && !op->nnames)
			op->names[op->nnames++] = xstrdup(ans->names[0]);
		break;
	case DNS_OP_ADDRS:
	case DNS_OP_HOST:
		op->slot[slot] = ans->status;
		for (size_t i = 0; ans->status == DNS_OK && i < ans->naddrs; i++)
			*(struct dns_addr *)xappend(&op->addrs, &op->naddrs, sizeof *op->addrs) =
				ans->addrs[i];
		if (ans->status == DNS_OK || ans->status == DNS_NOTFOUND)
			op->ttl = dns_min32(op->ttl, ans->ttl);
		break;
	case DNS_OP_MX:
		dns_mx_take(op, ans);
		break;
	case DNS_OP_TXT:
	case DNS_OP_TLSA:
		op->slot[0] = ans->status;
		op->ttl = ans->ttl;
		if (ans->status == DNS_OK) {
			op->txts = dns_txts_copy(ans->txts, ans->ntxts);
			op->ntxts = ans->ntxts;
		}
		break;
	case DNS_OP_FCRDNS:
		if (slot == 0)
			dns_fcrdns_ptr(r, op, ans);
		else
			dns_fcrdns_forward(op, (size_t)slot - 1, ans);
		break;
	}
}

/* The worse of two failures, for a result made of several lookups. */
static enum dns_status dns_worse(enum dns_status a, enum dns_status b)
{
	if (a == DNS_TIMEOUT || b == DNS_TIMEOUT)
		return DNS_TIMEOUT;
	if (a == DNS_ERROR || b == DNS_ERROR)
		return DNS_ERROR;
	return DNS_NOTFOUND;
}

static void dns_addrs_complete(struct dns_op *op)
{
	enum dns_status st = DNS_OK;
	if (op->naddrs == 0)
		st = dns_worse(op->slot[0], op->slot[1]);
	if (op->addrs_sec_cb) {
		op->addrs_sec_cb(op->arg, st, st == DNS_OK ? op->addrs : NULL,
				 st == DNS_OK ? op->naddrs : 0, op->secure);
		return;
	}
	op->addrs_cb(op->arg, st, st == DNS_OK ? op->addrs : NULL, st == DNS_OK ? op->naddrs : 0);
}

/* Both answers or nothing: a failed A or AAAA query fails the whole
 * lookup, so that a caller keeping the addresses never takes half of them
 * for all. */
static void dns_host_complete(struct dns_op *op)
{
	enum dns_status st = DNS_OK;
	bool failed = (op->slot[0] != DNS_OK && op->slot[0] != DNS_NOTFOUND) ||
		      (op->slot[1] != DNS_OK && op->slot[1] != DNS_NOTFOUND);
	if (failed)
		st = dns_worse(op->slot[0], op->slot[1]);
	else if (op->naddrs == 0)
		st = DNS_NOTFOUND;
	op->host_cb(op->arg, st, st == DNS_OK ? op->addrs : NULL, st == DNS_OK ? op->naddrs : 0,
		    failed ? 0 : op->ttl);
}

/* RFC 7505 §3: a null MX is the only MX of its domain.  Root hosts next to
 * real ones are ignored; only root hosts make a null MX. */
static void dns_mx_drop_null(struct dns_op *op)
{
	size_t real = 0;
	for (size_t i = 0; i < op->nmx; i++)
		if (op->mx[i].host[0])
			real++;
	if (real == 0) {
		for (size_t i = 1; i < op->nmx; i++)
			free(op->mx[i].host);
		op->nmx = op->nmx ? 1 : 0;
		return;
	}
	size_t k = 0;
	for (size_t i = 0; i < op->nmx; i++) {
		if (op->mx[i].host[0])
			op->mx[k++] = op->mx[i];
		else
			free(op->mx[i].host);
	}
	op->nmx = k;
}

/* By preference (RFC 5321 §5.1), equal preferences in random order. */
static void dns_mx_sort(struct dns_mx *mx, size_t n)
{
	for (size_t i = 1; i < n; i++) {
		struct dns_mx m = mx[i];
		size_t j = i;
		for (; j > 0 && mx[j - 1].preference > m.preference; j--)
			mx[j] = mx[j - 1];
		mx[j] = m;
	}
	for (size_t start = 0, end; start < n; start = end) {
		for (end = start + 1; end < n && mx[end].preference == mx[start].preference; end++)
			;
		for (size_t i = end - 1; i > start; i--) {
			size_t j = start + arc4random_uniform((uint32_t)(i - start + 1));
			struct dns_mx t = mx[i];
			mx[i] = mx[j];
			mx[j] = t;
		}
	}
}

static void dns_mx_complete(struct dns_op *op)
{
	enum dns_status st = op->slot[0];
	if (st == DNS_OK) {
		dns_mx_drop_null(op);
		dns_mx_sort(op->mx, op->nmx);
		if (op->nmx == 0)
			st = DNS_NOTFOUND;
	}
	if (op->mx_sec_cb) {
		op->mx_sec_cb(op->arg, st, st == DNS_OK ? op->mx : NULL, st == DNS_OK ? op->nmx : 0,
			      op->secure);
		return;
	}
	op->mx_cb(op->arg, st, st == DNS_OK ? op->mx : NULL, st == DNS_OK ? op->nmx : 0);
}

/* The records in RFC 6698's fields; the data points into op's copy. */
static void dns_tlsa_complete(struct dns_op *op)
{
	enum dns_status st = op->slot[0];
	size_t n = st == DNS_OK ? op->ntxts : 0;
	struct dns_tlsa *t = n ? xcalloc(n, sizeof *t) : NULL;
	for (size_t i = 0; i < n; i++) {
		const unsigned char *rd = (const unsigned char *)op->txts[i].text;
		t[i].usage = rd[0];
		t[i].selector = rd[1];
		t[i].mtype = rd[2];
		t[i].data = rd + 3;
		t[i].len = op->txts[i].len - 3;
	}
	op->tlsa_cb(op->arg, st, t, n, op->secure);
	free(t);
}

static void dns_fcrdns_complete(struct dns_op *op)
{
	if (op->slot[0] != DNS_OK) {
		op->name_cb(op->arg, op->slot[0], NULL);
		return;
	}
	enum dns_status st = DNS_NOTFOUND;
	for (size_t i = 0; i < op->nnames; i++) {
		if (op->confirmed[i]) {
			op->name_cb(op->arg, DNS_OK, op->names[i]);
			return;
		}
		if (op->slot[1 + i] != DNS_OK && op->slot[1 + i] != DNS_NOTFOUND)
			st = dns_worse(st, op->slot[1 + i]);
	}
	op->name_cb(op->arg, st, NULL);
}

static void dns_op_complete(struct dns_op *op)
{
	switch (op->kind) {
	case DNS_OP_PTR:
		op->name_cb(op->arg, op->slot[0], op->slot[0] == DNS_OK ? op->names[0] : NULL);
		break;
	case DNS_OP_ADDRS:
		dns_addrs_complete(op);
		break;
	case DNS_OP_HOST:
		dns_host_complete(op);
		break;
	case DNS_OP_MX:
		dns_mx_complete(op);
		break;
	case DNS_OP_FCRDNS:
		dns_fcrdns_complete(op);
		break;
	case DNS_OP_TLSA:
		dns_tlsa_complete(op);
		break;
	case DNS_OP_TXT:
		op->txt_cb(op->arg, op->slot[0], op->slot[0] == DNS_OK ? op->txts : NULL,
			   op->slot[0] == DNS_OK ? op->ntxts : 0,
			   op->slot[0] == DNS_OK || op->slot[0] == DNS_NOTFOUND ? op->ttl : 0);
		break;
	}
}

/* One answer fewer to wait for; the last one runs the callback (unless the
 * op was cancelled) and frees the op. */
static void dns_op_release(struct dns_resolver *r, struct dns_op *op)
{
	if (--op->outstanding > 0)
		return;
	if (!op->dead) {
		dns_op_kill(r, op);
		dns_op_complete(op);
	}
	dns_op_free(r, op);
}

static void dns_op_deliver(struct dns_resolver *r, struct dns_op *op, int slot,
			   const struct dns_answer *ans)
{
	if (!op->dead)
		dns_op_answer(r, op, slot, ans);
	dns_op_release(r, op);
}

/* ---- pending queries: one on the wire per key ------------------------------------- */

static struct dns_pending *dns_pending_find(const struct dns_resolver *r, int type,
					    const char *name, uint64_t hash)
{
	for (struct dns_hnode *n = dns_ht_bucket(&r->inflight, hash); n; n = n->next) {
		struct dns_pending *p = DNS_CONTAINER(n, struct dns_pending, node);
		if (dns_key_equal(&p->key, type, name, hash))
			return p;
	}
	return NULL;
}

static void dns_pending_unlist(struct dns_resolver *r, struct dns_pending *p)
{
	if (p->in_table) {
		dns_ht_remove(&r->inflight, &p->node);
		p->in_table = false;
	}
}

static void dns_waiters_free(struct dns_waiter *w)
{
	while (w) {
		struct dns_waiter *next = w->next;
		free(w);
		w = next;
	}
}

static void dns_pending_free(struct dns_resolver *r, struct dns_pending *p)
{
	dns_pending_unlist(r, p);
	if (p->prev)
		p->prev->next = p->next;
	else
		r->pendings = p->next;
	if (p->next)
		p->next->prev = p->prev;
	if (p->deadline)
		event_free(p->deadline);
	dns_waiters_free(p->waiters);
	free(p->key.name);
	free(p);
}

/* Hands ans to every waiter, in the order they came. */
static void dns_waiters_deliver(struct dns_resolver *r, struct dns_waiter *w,
				const struct dns_answer *ans)
{
	while (w) {
		struct dns_waiter *next = w->next;
		dns_op_deliver(r, w->op, w->slot, ans);
		free(w);
		w = next;
	}
}

static struct dns_waiter *dns_pending_take_waiters(struct dns_pending *p)
{
	struct dns_waiter *w = p->waiters;
	p->waiters = NULL;
	p->waiters_tail = &p->waiters;
	return w;
}

/* The c-ares callback.  It also runs from ares_destroy() with
 * ARES_EDESTRUCTION: then dns_resolver_destroy() frees p itself. */
static void dns_ares_done(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
	struct dns_pending *p = arg;
	if (status == ARES_EDESTRUCTION)
		return;
	struct dns_resolver *r = p->r;
	struct dns_answer ans;
	dns_answer_from_ares(r, &p->key, status, abuf, alen, &ans);
	/* A late answer to a query the deadline gave up on is still cached. */
	dns_cache_put(r, &p->key, &ans);
	struct dns_waiter *w = dns_pending_take_waiters(p);
	dns_pending_free(r, p);
	dns_waiters_deliver(r, w, &ans);
	dns_answer_clear(&ans);
}

/* No answer within timeout x tries (c-ares doubles its timeout on each
 * round, so its own timeout comes later): the waiters get DNS_TIMEOUT now;
 * the query stays with c-ares until it ends. */
static void dns_deadline_fired(evutil_socket_t fd, short what, void *arg)
{
	struct dns_pending *p = arg;
	struct dns_resolver *r = p->r;
	struct dns_answer ans = {.status = DNS_TIMEOUT};
	dns_enter(r);
	p->orphaned = true;
	dns_pending_unlist(r, p);
	dns_waiters_deliver(r, dns_pending_take_waiters(p), &ans);
	dns_leave(r);
}

static struct dns_pending *dns_pending_new(struct dns_resolver *r, int type, const char *name,
					   uint64_t hash)
{
	struct dns_pending *p = xcalloc(1, sizeof *p);
	p->r = r;
	p->key.type = type;
	p->key.name = xstrdup(name);
	p->key.hash = hash;
	p->node.hash = hash;
	p->waiters_tail = &p->waiters;
	dns_ht_insert(&r->inflight, &p->node);
	p->in_table = true;
	p->next = r->pendings;
	if (r->pendings)
		r->pendings->prev = p;
	r->pendings = p;
	uint64_t ms = (uint64_t)r->opt.timeout_ms * r->opt.tries;
	struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
	p->deadline = evtimer_new(r->base, dns_deadline_fired, p);
	if (!p->deadline || evtimer_add(p->deadline, &tv) < 0)
		fatal("dns: cannot add a timer to the event loop");
	return p;
}

static void dns_pending_wait(struct dns_pending *p, struct dns_op *op, int slot)
{
	struct dns_waiter *w = xcalloc(1, sizeof *w);
	w->op = op;
	w->slot = slot;
	*p->waiters_tail = w;
	p->waiters_tail = &w->next;
}

/* The record type as a metric label: a fixed set. */
static const char *dns_type_label(int type)
{
	switch (type) {
	case DNS_T_A: return "A";
	case DNS_T_AAAA: return "AAAA";
	case DNS_T_PTR: return "PTR";
	case DNS_T_MX: return "MX";
	case DNS_T_TXT: return "TXT";
	case DNS_T_TLSA: return "TLSA";
	default: return "other";
	}
}

/* The query on the wire, with AD set when the resolver is trusted to
 * validate (RFC 6840 §5.7: that asks it to say whether the answer is
 * secure).  May call dns_ares_done() at once (a local failure): p is then
 * gone. */
static void dns_send(struct dns_resolver *r, int type, const char *name, struct dns_pending *p)
{
	if (!r->trust_ad) {
		ares_query(r->channel, name, DNS_C_IN, type, dns_ares_done, p);
		return;
	}
	unsigned char *q = NULL;
	int qlen = 0;
	int st = ares_create_query(name, DNS_C_IN, type, 0, 1, &q, &qlen, 0);
	if (st != ARES_SUCCESS || qlen < DNS_HEADER_SIZE) {
		if (q)
			ares_free_string(q);
		dns_ares_done(p, st == ARES_SUCCESS ? ARES_EBADQUERY : st, 0, NULL, 0);
		return;
	}
	q[3] |= 0x20; /* AD */
	ares_send(r->channel, q, qlen, dns_ares_done, p);
	ares_free_string(q);
}

/* Ask type/name for op's slot: from the cache, by joining the identical
 * query in flight, or on the wire.  name is normalized.  The answer may
 * arrive before this returns. */
static void dns_rq_start(struct dns_resolver *r, int type, const char *name, struct dns_op *op,
			 int slot)
{
	uint64_t hash = dns_hash(r, type, name);
	op->outstanding++;
	struct dns_entry *e = dns_cache_get(r, type, name, hash);
	metrics_count(METRIC_DNS_QUERIES, METRIC_LABELS(dns_type_label(type)));
	if (e) {
		r->stats.cache_hits++;
		metrics_count(METRIC_DNS_CACHE_HITS, NULL);
		/* the records as cached, with the part of their TTL that is left */
		struct dns_answer left = e->ans;
		left.ttl = dns_entry_ttl_left(e);
		dns_op_deliver(r, op, slot, &left);
		return;
	}
	struct dns_pending *p = dns_pending_find(r, type, name, hash);
	if (p) {
		dns_pending_wait(p, op, slot);
		return;
	}
	p = dns_pending_new(r, type, name, hash);
	dns_pending_wait(p, op, slot);
	r->stats.queries_sent++;
	dns_send(r, type, name, p);
	dns_timer_update(r);
}

/* ---- the resolver ---------------------------------------------------------------- */

static void dns_options_apply(struct dns_options *o, const struct dns_options *in)
{
	memset(o, 0, sizeof *o);
	if (in)
		*o = *in;
	if (o->timeout_ms == 0)
		o->timeout_ms = DNS_DEFAULT_TIMEOUT_MS;
	if (o->timeout_ms > 60000)
		o->timeout_ms = 60000;
	if (o->tries == 0)
		o->tries = DNS_DEFAULT_TRIES;
	if (o->tries > 10)
		o->tries = 10;
	if (o->cache_entries == 0)
		o->cache_entries = DNS_DEFAULT_CACHE_ENTRIES;
	if (o->negative_ttl_max == 0)
		o->negative_ttl_max = DNS_DEFAULT_NEGATIVE_TTL_MAX;
}

static int dns_set_servers(struct dns_resolver *r, const struct conf_dns *servers)
{
	struct ares_addr_port_node *nodes = xcalloc(servers->nservers, sizeof *nodes);
	for (size_t i = 0; i < servers->nservers; i++) {
		const struct sockaddr_storage *ss = &servers->servers[i].ss;
		struct ares_addr_port_node *n = &nodes[i];
		n->next = i + 1 < servers->nservers ? &nodes[i + 1] : NULL;
		n->family = ss->ss_family;
		if (ss->ss_family == AF_INET) {
			const struct sockaddr_in *in = (const struct sockaddr_in *)ss;
			n->addr.addr4 = in->sin_addr;
			n->udp_port = n->tcp_port = ntohs(in->sin_port);
		} else if (ss->ss_family == AF_INET6) {
			const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)ss;
			memcpy(n->addr.addr6._S6_un._S6_u8, in6->sin6_addr.s6_addr, 16);
			n->udp_port = n->tcp_port = ntohs(in6->sin6_port);
		} else {
			free(nodes);
			return ARES_EBADFAMILY;
		}
		if (n->udp_port == 0)
			n->udp_port = n->tcp_port = 53;
	}
	int st = ares_set_servers_ports(r->channel, nodes);
	free(nodes);
	return st;
}

static void dns_err(char *err, size_t errsz, const char *what, int status)
{
	if (err && errsz)
		errfmt(err, errsz, "%s: %s", what, ares_strerror(status)); /* a cut one ends in "..." */
}

bool dns_resolver_validates(const struct dns_resolver *r)
{
	return r && r->trust_ad;
}

struct dns_resolver *dns_resolver_new(struct event_base *base, const struct conf_dns *servers,
				      const struct dns_options *opt, char *err, size_t errsz)
{
	int st = ares_library_init(ARES_LIB_INIT_ALL); /* counted; undone in destroy */
	if (st != ARES_SUCCESS) {
		dns_err(err, errsz, "cannot initialise c-ares", st);
		return NULL;
	}
	struct dns_resolver *r = xcalloc(1, sizeof *r);
	r->base = base;
	dns_options_apply(&r->opt, opt);
	r->seed = (uint64_t)arc4random() << 32 | arc4random();
	dns_ht_init(&r->cache);
	dns_ht_init(&r->inflight);
	dns_ht_init(&r->opsbyid);
	r->timer = evtimer_new(base, dns_timer_fired, r);
	if (!r->timer)
		fatal("dns: cannot add a timer to the event loop");

	/* Never complete names with search domains: we always ask full names. */
	struct ares_options o = {0};
	o.flags = ARES_FLAG_NOSEARCH | ARES_FLAG_NOALIASES;
	o.timeout = (int)r->opt.timeout_ms;
	o.tries = (int)r->opt.tries;
	o.sock_state_cb = dns_sock_state;
	o.sock_state_cb_data = r;
	int mask = ARES_OPT_FLAGS | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES | ARES_OPT_SOCK_STATE_CB;
	st = ares_init_options(&r->channel, &o, mask);
	if (st != ARES_SUCCESS) {
		dns_err(err, errsz, "cannot initialise the resolver", st);
		r->channel = NULL;
		dns_resolver_destroy(r);
		return NULL;
	}
	if (servers && servers->nservers > 0) {
		st = dns_set_servers(r, servers);
		r->trust_ad = conf_dns_on_loopback(servers);
	}
	if (st != ARES_SUCCESS) {
		dns_err(err, errsz, "cannot use the configured DNS servers", st);
		dns_resolver_destroy(r);
		return NULL;
	}
	return r;
}

static void dns_cancel_all(struct dns_resolver *r)
{
	for (struct dns_op *op = r->ops; op; op = op->next)
		dns_op_kill(r, op);
}

static void dns_resolver_destroy(struct dns_resolver *r)
{
	dns_cancel_all(r);
	if (r->channel)
		ares_destroy(r->channel); /* ARES_EDESTRUCTION callbacks: ignored */
	while (r->socks) {
		struct dns_sock *s = r->socks;
		r->socks = s->next;
		if (s->ev)
			event_free(s->ev);
		free(s);
	}
	event_free(r->timer);
	while (r->pendings)
		dns_pending_free(r, r->pendings);
	while (r->ops)
		dns_op_free(r, r->ops);
	while (r->oldest)
		/* NOLINTNEXTLINE(clang-analyzer-unix.Malloc): dns_entry_free unlinks the entry, so r->oldest moves on */
		dns_entry_free(r, r->oldest);
	free(r->cache.buckets);
	free(r->inflight.buckets);
	free(r->opsbyid.buckets);
	free(r);
	ares_library_cleanup();
}

void dns_resolver_free(struct dns_resolver *r)
{
	if (!r)
		return;
	if (r->depth > 0) {
		/* From a callback: no more callbacks; freed on the way out. */
		dns_cancel_all(r);
		r->doomed = true;
		return;
	}
	dns_resolver_destroy(r);
}

void dns_cancel(struct dns_resolver *r, dns_query_id id)
{
	if (!r || id == 0)
		return;
	struct dns_op *op = dns_op_find(r, id);
	if (op)
		dns_op_kill(r, op);
}

void dns_get_stats(const struct dns_resolver *r, struct dns_stats *out)
{
	*out = r->stats;
}

/* ---- lookups --------------------------------------------------------------------- */

/* Starts an op (the caller then asks its queries and calls dns_op_done). */
static struct dns_op *dns_op_begin(struct dns_resolver *r, enum dns_op_kind kind, void *arg)
{
	dns_enter(r);
	return dns_op_new(r, kind, arg);
}

/* Drops the starting hold; the id, or 0 when the callback already ran. */
static dns_query_id dns_op_done(struct dns_resolver *r, struct dns_op *op)
{
	dns_query_id id = op->id;
	dns_op_release(r, op);
	bool waiting = dns_op_find(r, id) != NULL;
	if (dns_leave(r))
		return 0;
	return waiting ? id : 0;
}

dns_query_id dns_lookup_ptr(struct dns_resolver *r, const struct sockaddr *sa, dns_name_cb cb,
			    void *arg)
{
	if (!r || r->doomed || !cb)
		return 0;
	struct dns_op *op = dns_op_begin(r, DNS_OP_PTR, arg);
	op->name_cb = cb;
	char qname[DNS_NAME_BUF];
	if (dns_client_addr(sa, &op->client) && dns_ptr_name(&op->client, qname, sizeof qname))
		dns_rq_start(r, DNS_T_PTR, qname, op, 0);
	return dns_op_done(r, op);
}

/* The A and AAAA queries of one operation (slots 0 and 1). */
static dns_query_id dns_start_a_aaaa(struct dns_resolver *r, struct dns_op *op, const char *name)
{
	char qname[DNS_NAME_BUF];
	if (dns_name_normalize(name, qname, sizeof qname)) {
		dns_rq_start(r, DNS_T_A, qname, op, 0);
		dns_rq_start(r, DNS_T_AAAA, qname, op, 1);
	}
	return dns_op_done(r, op);
}

dns_query_id dns_lookup_addrs(struct dns_resolver *r, const char *name, dns_addrs_cb cb,
			      void *arg)
{
	if (!r || r->doomed || !cb)
		return 0;
	struct dns_op *op = dns_op_begin(r, DNS_OP_ADDRS, arg);
	op->addrs_cb = cb;
	return dns_start_a_aaaa(r, op, name);
}

dns_query_id dns_lookup_a(struct dns_resolver *r, const char *name, dns_addrs_cb cb, void *arg)
{
	if (!r || r->doomed || !cb)
		return 0;
	struct dns_op *op = dns_op_begin(r, DNS_OP_ADDRS, arg);
	op->addrs_cb = cb;
	op->slot[1] = DNS_NOTFOUND; /* no AAAA query: it adds nothing */
	char qname[DNS_NAME_BUF];
	if (dns_name_normalize(name, qname, sizeof qname))
		dns_rq_start(r, DNS_T_A, qname, op, 0);
	return dns_op_done(r, op);
}

dns_query_id dns_lookup_host(struct dns_resolver *r, const char *name, dns_host_cb cb, void *arg)
{
	if (!r || r->doomed || !cb)
		return 0;
	struct dns_op *op = dns_op_begin(r, DNS_OP_HOST, arg);
	op->host_cb = cb;
	return dns_start_a_aaaa(r, op, name);
}

dns_query_id dns_lookup_mx(struct dns_resolver *r, const char *domain, dns_mx_cb cb, void *arg)
{
	if (!r || r->doomed || !cb)
		return 0;
	struct dns_op *op = dns_op_begin(r, DNS_OP_MX, arg);
	op->mx_cb = cb;
	char qname[DNS_NAME_BUF];
	if (dns_name_normalize(domain, qname, sizeof qname))
		dns_rq_start(r, DNS_T_MX, qname, op, 0);
	return dns_op_done(r, op);
}

dns_query_id dns_lookup_txt(struct dns_resolver *r, const char *name, dns_txt_cb cb, void *arg)
{
	if (!r || r->doomed || !cb)
		return 0;
	struct dns_op *op = dns_op_begin(r, DNS_OP_TXT, arg);
	op->txt_cb = cb;
	char qname[DNS_NAME_BUF];
	if (dns_name_normalize(name, qname, sizeof qname))
		dns_rq_start(r, DNS_T_TXT, qname, op, 0);
	return dns_op_done(r, op);
}

dns_query_id dns_lookup_addrs_sec(struct dns_resolver *r, const char *name, dns_addrs_sec_cb cb,
				  void *arg)
{
	if (!r || r->doomed || !cb)
		return 0;
	struct dns_op *op = dns_op_begin(r, DNS_OP_ADDRS, arg);
	op->addrs_sec_cb = cb;
	return dns_start_a_aaaa(r, op, name);
}

dns_query_id dns_lookup_mx_sec(struct dns_resolver *r, const char *domain, dns_mx_sec_cb cb,
			       void *arg)
{
	if (!r || r->doomed || !cb)
		return 0;
	struct dns_op *op = dns_op_begin(r, DNS_OP_MX, arg);
	op->mx_sec_cb = cb;
	char qname[DNS_NAME_BUF];
	if (dns_name_normalize(domain, qname, sizeof qname))
		dns_rq_start(r, DNS_T_MX, qname, op, 0);
	return dns_op_done(r, op);
}

dns_query_id dns_lookup_tlsa(struct dns_resolver *r, const char *host, unsigned port,
			     dns_tlsa_cb cb, void *arg)
{
	if (!r || r->doomed || !cb)
		return 0;
	struct dns_op *op = dns_op_begin(r, DNS_OP_TLSA, arg);
	op->tlsa_cb = cb;
	char name[DNS_NAME_BUF + 16], qname[DNS_NAME_BUF];
	/* RFC 7672 §2.2.3: _port._tcp.host */
	if (bsnprintf(name, sizeof name, "_%u._tcp.%s", port, host) &&
	    dns_name_normalize(name, qname, sizeof qname))
		dns_rq_start(r, DNS_T_TLSA, qname, op, 0);
	return dns_op_done(r, op);
}

dns_query_id dns_lookup_fcrdns(struct dns_resolver *r, const struct sockaddr *sa, dns_name_cb cb,
			       void *arg)
{
	if (!r || r->doomed || !cb)
		return 0;
	struct dns_op *op = dns_op_begin(r, DNS_OP_FCRDNS, arg);
	op->name_cb = cb;
	char qname[DNS_NAME_BUF];
	if (dns_client_addr(sa, &op->client) && dns_ptr_name(&op->client, qname, sizeof qname))
		dns_rq_start(r, DNS_T_PTR, qname, op, 0);
	/* NOLINTNEXTLINE(clang-analyzer-unix.Malloc): op keeps its starting reference (outstanding = 1) until dns_op_done releases it, so dns_rq_start cannot free it */
	return dns_op_done(r, op);
}

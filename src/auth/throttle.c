/* throttle: failed logins and unknown recipients per client, in one
 * bounded table (see throttle.h). */
#include "auth/throttle.h"

#include <arpa/inet.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/rand.h>

#include "conf/conf.h"
#include "lib/util.h"

/* Named limits. */
enum {
	THROTTLE_KEY_MAX = 255,         /* longest key kept (address text, user:NAME) */
	THROTTLE_USER_KEY_MAX = 320,    /* "user:" and a name tried */
	THROTTLE_DELAY_STEP_MS = 250,
	THROTTLE_DELAY_MAX_MS = 3000,
};

struct throttle_rule throttle_login_rule(const struct conf_server *srv)
{
	const struct conf_auth *a = &srv->auth;
	return (struct throttle_rule){
		.limit = a->lockout_failures,
		.window = a->lockout_window,
		.duration = a->lockout_duration,
		.ipv6_prefix = a->lockout_ipv6_prefix,
	};
}

struct throttle_rule throttle_recipient_rule(const struct conf_server *srv)
{
	const struct conf_limits *l = &srv->limits;
	return (struct throttle_rule){
		.limit = l->unknown_recipients,
		.window = l->unknown_recipients_window,
		.duration = l->unknown_recipients_duration,
		.ipv6_prefix = srv->auth.lockout_ipv6_prefix,
	};
}

/* ---- keys ------------------------------------------------------------- */

/* The table's key for who, into key (THROTTLE_KEY_MAX + 1 bytes): an IPv6
 * address names its network ("2001:db8:1:2::/64"); anything else (an IPv4
 * address, an IPv4-mapped one as addr_text never shows it, "user:NAME")
 * is its own key, its first THROTTLE_KEY_MAX bytes. */
static void throttle_key(const char *who, unsigned ipv6_prefix, char *key)
{
	struct in6_addr a6;
	if (ipv6_prefix > 0 && ipv6_prefix < 128 && inet_pton(AF_INET6, who, &a6) == 1 &&
	    !IN6_IS_ADDR_V4MAPPED(&a6)) {
		for (unsigned bit = ipv6_prefix; bit < 128; bit++)
			a6.s6_addr[bit / 8] &= (uint8_t)~(0x80u >> (bit % 8));
		char net[INET6_ADDRSTRLEN];
		/* inet_ntop fails only for a buffer too small or a bad family */
		if (inet_ntop(AF_INET6, &a6, net, sizeof net)) {
			/* fits: INET6_ADDRSTRLEN and "/127" are far below the bound */
			xsnprintf(key, THROTTLE_KEY_MAX + 1, "%s/%u", net, ipv6_prefix);
			return;
		}
	}
	size_t n = strnlen(who, THROTTLE_KEY_MAX);
	memcpy(key, who, n);
	key[n] = '\0';
}

/* ---- the table -------------------------------------------------------- */

/* A hash table of keys with a least-recently-used list through it:
 * lookups are O(1), and when the table is full the entry with the oldest
 * activity goes.  The hash is a polynomial modulo the Mersenne prime
 * 2^61 - 1 at a random point (a universal hash), so that a client cannot
 * choose addresses that all land in one bucket. */
#define THROTTLE_NONE SIZE_MAX
#define THROTTLE_HASH_P ((UINT64_C(1) << 61) - 1)

struct throttle_count {
	unsigned n;             /* events since first */
	time_t first;
	bool locked;
	time_t locked_until;
};

struct throttle_entry {
	char *key;              /* NULL when the slot is free */
	size_t bucket;          /* its bucket */
	size_t next;            /* next in the bucket, or in the free list */
	size_t newer, older;    /* neighbours in the LRU list */
	struct throttle_count count[THROTTLE_KINDS];
};

struct throttle {
	struct throttle_entry *e;
	size_t used, cap;       /* slots handed out, slots allocated */
	size_t max, nentries;   /* bound, live entries */
	size_t *buckets;
	size_t nbuckets;        /* a power of two */
	size_t newest, oldest;  /* ends of the LRU list */
	size_t free_list;
	uint64_t point;         /* secret, in [1, P - 1] */
};

static uint64_t throttle_mulmod61(uint64_t a, uint64_t b)
{
	unsigned __int128 m = (unsigned __int128)a * b;
	uint64_t r = ((uint64_t)m & THROTTLE_HASH_P) + (uint64_t)(m >> 61);
	r = (r & THROTTLE_HASH_P) + (r >> 61);
	return r >= THROTTLE_HASH_P ? r - THROTTLE_HASH_P : r;
}

static size_t throttle_bucket(const struct throttle *t, const char *key)
{
	uint64_t h = 0;
	for (size_t i = 0; key[i]; i++)
		h = throttle_mulmod61(h + (unsigned char)key[i] + 1, t->point);
	return (size_t)(h ^ (h >> 29)) & (t->nbuckets - 1);
}

struct throttle *throttle_new(size_t max_entries)
{
	struct throttle *t = xcalloc(1, sizeof *t);
	t->max = max_entries ? max_entries : 1;
	t->nbuckets = 16;
	while (t->nbuckets < t->max) {
		if (t->nbuckets > SIZE_MAX / 4 / sizeof *t->buckets)
			fatal("throttle: table of %zu entries", max_entries);
		t->nbuckets *= 2;
	}
	t->buckets = xmalloc(t->nbuckets * sizeof *t->buckets);
	for (size_t i = 0; i < t->nbuckets; i++)
		t->buckets[i] = THROTTLE_NONE;
	t->newest = t->oldest = t->free_list = THROTTLE_NONE;
	do {
		if (RAND_bytes((unsigned char *)&t->point, sizeof t->point) != 1)
			fatal("throttle: RAND_bytes failed");
		t->point &= THROTTLE_HASH_P;
	} while (t->point == 0 || t->point == THROTTLE_HASH_P);
	return t;
}

void throttle_free(struct throttle *t)
{
	if (!t)
		return;
	for (size_t i = 0; i < t->used; i++)
		free(t->e[i].key);
	free(t->e);
	free(t->buckets);
	free(t);
}

static size_t throttle_find(const struct throttle *t, const char *key)
{
	for (size_t i = t->buckets[throttle_bucket(t, key)]; i != THROTTLE_NONE; i = t->e[i].next)
		if (strcmp(t->e[i].key, key) == 0)
			return i;
	return THROTTLE_NONE;
}

static void throttle_lru_unlink(struct throttle *t, size_t i)
{
	struct throttle_entry *e = &t->e[i];
	if (e->newer != THROTTLE_NONE)
		t->e[e->newer].older = e->older;
	else
		t->newest = e->older;
	if (e->older != THROTTLE_NONE)
		t->e[e->older].newer = e->newer;
	else
		t->oldest = e->newer;
}

static void throttle_lru_push(struct throttle *t, size_t i)
{
	struct throttle_entry *e = &t->e[i];
	e->newer = THROTTLE_NONE;
	e->older = t->newest;
	if (t->newest != THROTTLE_NONE)
		t->e[t->newest].newer = i;
	t->newest = i;
	if (t->oldest == THROTTLE_NONE)
		t->oldest = i;
}

/* Activity: the entry becomes the newest. */
static void throttle_lru_touch(struct throttle *t, size_t i)
{
	if (t->newest == i)
		return;
	throttle_lru_unlink(t, i);
	throttle_lru_push(t, i);
}

static void throttle_remove(struct throttle *t, size_t i)
{
	struct throttle_entry *e = &t->e[i];
	size_t *link = &t->buckets[e->bucket];
	while (*link != i)
		link = &t->e[*link].next;
	*link = e->next;
	throttle_lru_unlink(t, i);
	free(e->key);
	memset(e, 0, sizeof *e);
	e->next = t->free_list;
	t->free_list = i;
	t->nentries--;
}

/* A free slot: from the free list, else a new one (the array grows by
 * doubling up to max). */
static size_t throttle_slot(struct throttle *t)
{
	if (t->free_list != THROTTLE_NONE) {
		size_t i = t->free_list;
		t->free_list = t->e[i].next;
		return i;
	}
	if (t->used == t->cap) {
		size_t cap = t->cap ? t->cap * 2 : 64;
		if (cap > t->max)
			cap = t->max;
		t->e = xrealloc(t->e, cap * sizeof *t->e);
		t->cap = cap;
	}
	return t->used++;
}

/* A new, newest entry for key; the oldest goes when the table is full. */
static size_t throttle_insert(struct throttle *t, const char *key)
{
	if (t->nentries >= t->max)
		throttle_remove(t, t->oldest);
	size_t i = throttle_slot(t);
	struct throttle_entry *e = &t->e[i];
	memset(e, 0, sizeof *e);
	e->key = xstrdup(key);
	e->bucket = throttle_bucket(t, e->key);
	e->next = t->buckets[e->bucket];
	t->buckets[e->bucket] = i;
	throttle_lru_push(t, i);
	t->nentries++;
	return i;
}

/* ---- counting --------------------------------------------------------- */

/* A lockout that has run its course, or a window that has passed, starts
 * the count afresh (a clock that went back does too). */
static void throttle_expire(struct throttle_count *c, const struct throttle_rule *rule,
			    time_t now)
{
	if (c->locked && now >= c->locked_until) {
		c->locked = false;
		c->n = 0;
	}
	if (!c->locked && c->n > 0 && (now < c->first || now - c->first >= (time_t)rule->window))
		c->n = 0;
}

bool throttle_locked(struct throttle *t, const char *who, enum throttle_kind kind,
		     const struct throttle_rule *rule, time_t now, unsigned *retry_after)
{
	if (retry_after)
		*retry_after = 0;
	if (rule->limit == 0)
		return false;
	char key[THROTTLE_KEY_MAX + 1];
	throttle_key(who, rule->ipv6_prefix, key);
	size_t i = throttle_find(t, key);
	if (i == THROTTLE_NONE)
		return false;
	struct throttle_count *c = &t->e[i].count[kind];
	throttle_expire(c, rule, now);
	if (!c->locked)
		return false;
	throttle_lru_touch(t, i);
	if (retry_after)
		*retry_after = (unsigned)(c->locked_until - now);
	return true;
}

bool throttle_count(struct throttle *t, const char *who, enum throttle_kind kind,
		    const struct throttle_rule *rule, time_t now)
{
	char key[THROTTLE_KEY_MAX + 1];
	throttle_key(who, rule->ipv6_prefix, key);
	size_t i = throttle_find(t, key);
	if (i == THROTTLE_NONE)
		i = throttle_insert(t, key);
	else
		throttle_lru_touch(t, i);
	struct throttle_count *c = &t->e[i].count[kind];
	throttle_expire(c, rule, now);
	if (c->n == 0)
		c->first = now;
	if (c->n < UINT_MAX)
		c->n++;
	if (rule->limit == 0 || c->locked || c->n < rule->limit)
		return false;
	c->locked = true;
	c->locked_until = now + (time_t)rule->duration;
	return true;
}

static bool throttle_entry_idle(const struct throttle_entry *e)
{
	for (size_t k = 0; k < THROTTLE_KINDS; k++)
		if (e->count[k].n > 0 || e->count[k].locked)
			return false;
	return true;
}

void throttle_clear(struct throttle *t, const char *who, enum throttle_kind kind,
		    const struct throttle_rule *rule)
{
	char key[THROTTLE_KEY_MAX + 1];
	throttle_key(who, rule->ipv6_prefix, key);
	size_t i = throttle_find(t, key);
	if (i == THROTTLE_NONE)
		return;
	memset(&t->e[i].count[kind], 0, sizeof t->e[i].count[kind]);
	if (throttle_entry_idle(&t->e[i]))
		throttle_remove(t, i);
}

static unsigned throttle_delay_step_ms = THROTTLE_DELAY_STEP_MS;

void throttle_test_set_delay_step(unsigned ms)
{
	throttle_delay_step_ms = ms;
}

unsigned throttle_delay_ms(struct throttle *t, const char *who, const struct throttle_rule *rule)
{
	char key[THROTTLE_KEY_MAX + 1];
	throttle_key(who, rule->ipv6_prefix, key);
	size_t i = throttle_find(t, key);
	if (i == THROTTLE_NONE || t->e[i].count[THROTTLE_LOGIN].n <= 1)
		return 0;
	unsigned f = t->e[i].count[THROTTLE_LOGIN].n;
	if (f > THROTTLE_DELAY_MAX_MS / THROTTLE_DELAY_STEP_MS)
		f = THROTTLE_DELAY_MAX_MS / THROTTLE_DELAY_STEP_MS;
	return f * throttle_delay_step_ms;
}

/* ---- logins ------------------------------------------------------------ */

static bool throttle_user_key(char *key, size_t keysz, const char *user)
{
	return bsnprintf(key, keysz, "user:%s", user);
}

unsigned throttle_login_failed(struct throttle *t, const char *client, const char *user,
			       const struct throttle_rule *rule, time_t now, bool *locked_out)
{
	*locked_out = throttle_count(t, client, THROTTLE_LOGIN, rule, now);
	unsigned delay = throttle_delay_ms(t, client, rule);
	char key[THROTTLE_USER_KEY_MAX];
	if (user && throttle_user_key(key, sizeof key, user)) {
		(void)throttle_count(t, key, THROTTLE_LOGIN, rule, now); /* a name is never locked */
		unsigned d = throttle_delay_ms(t, key, rule);
		if (d > delay)
			delay = d;
	}
	return delay;
}

void throttle_login_ok(struct throttle *t, const char *client, const char *user,
		       const struct throttle_rule *rule)
{
	throttle_clear(t, client, THROTTLE_LOGIN, rule);
	char key[THROTTLE_USER_KEY_MAX];
	if (user && throttle_user_key(key, sizeof key, user))
		throttle_clear(t, key, THROTTLE_LOGIN, rule);
}

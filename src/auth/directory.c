/* directory: users from an LDAP directory (RFC 4511, RFC 4513, RFC 4515)
 * through OpenLDAP's libldap.  The loop side (jobs, the cache) runs on
 * the event loop's thread; the LDAP calls, which wait on the network, run
 * on DIRECTORY_THREADS workers that each keep two connections: one bound
 * as the service account for searches, one for the users' binds. */
#include "auth/directory.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <lber.h>
#include <ldap.h>
#include <openssl/crypto.h>

#include "auth/dirfilter.h"
#include "conf/conf.h"
#include "lib/log.h"
#include "lib/util.h"
#include "lib/waker.h"

enum {
	DIRECTORY_SECRET_MAX = 1024,    /* bytes of the service account's password */
	DIRECTORY_CACHE_BUCKETS = 16384, /* hash chains of the cache */
	DIRECTORY_WHY_MAX = 256,        /* one error, for the log */
	DIRECTORY_FIELD_MAX = 1024,     /* a user name or a principal as asked */
	DIRECTORY_PASSWORD_MAX = 1024,  /* a password as sent to the directory */
};

/* ---- settings and the state the workers share ---------------------------- */

/* What the workers read (a copy: the configuration may be reloaded), and
 * the queues they share with the loop, under lock. */
struct directory_core {
	pthread_mutex_t lock;
	pthread_cond_t work;
	struct directory_job *queue, *queue_tail;
	size_t queued;
	struct directory_job *done, *done_tail;
	unsigned threads;               /* started */
	unsigned busy;                  /* inside a job */
	unsigned refs;                  /* the loop's and each thread's */
	bool stopping;
	bool down;                      /* said in the log: the directory cannot be reached */
	struct waker *waker;            /* only while !stopping */

	char **uris;
	size_t nuris;
	bool starttls;
	char *ca;
	char *bind_dn;
	char *bind_pw;
	size_t bind_pw_len;
	char *base;
	char *filter;
	char **attrs;                   /* the address attributes, NULL-terminated */
	char *principal;
	unsigned cache_ttl;
};

/* A worker's two connections (NULL: none open). */
struct directory_conns {
	LDAP *search;
	LDAP *user;
};

enum directory_kind { DIRECTORY_JOB_LOOKUP, DIRECTORY_JOB_PRINCIPAL, DIRECTORY_JOB_LOGIN };

struct directory_job {
	struct directory *d;
	enum directory_kind kind;
	char *key;                      /* the cache's key */
	char *filter;                   /* the search; NULL when dn is known */
	char *dn;                       /* the entry (from the cache or the search) */
	char *pass;                     /* a login's password, wiped after the bind */
	size_t plen;
	/* set by the worker */
	bool searched;                  /* a search gave an answer (for the cache) */
	enum directory_status search_status;
	enum directory_status status;
	char *mailbox;
	/* the owner */
	directory_done_fn done;
	void *owner;
	bool cancelled;
	struct directory_job *next;
};

/* ---- the cache (the loop's thread only) ----------------------------------- */

struct directory_entry {
	char *key;                      /* "a:ADDRESS" or "p:PRINCIPAL" */
	char *mailbox;                  /* NULL: a negative answer */
	char *dn;
	time_t expires;
	size_t bytes;
	struct directory_entry *chain;  /* the bucket's next */
	struct directory_entry *older, *newer; /* insertion order, for eviction */
};

struct directory {
	struct directory_core *core;
	struct event_base *base;        /* NULL: answer on the calling thread */
	struct directory_conns sync;    /* the calling thread's, without workers */
	struct directory_entry **buckets;
	struct directory_entry *oldest, *newest;
	size_t entries, bytes;
};

static uint32_t directory_hash(const char *key)
{
	uint32_t h = 2166136261u; /* FNV-1a */
	for (const unsigned char *p = (const unsigned char *)key; *p; p++)
		h = (h ^ *p) * 16777619u;
	return h % DIRECTORY_CACHE_BUCKETS;
}

static struct directory_entry **directory_slot(struct directory *d, const char *key)
{
	struct directory_entry **e = &d->buckets[directory_hash(key)];
	while (*e && strcmp((*e)->key, key) != 0)
		e = &(*e)->chain;
	return e;
}

static void directory_entry_drop(struct directory *d, struct directory_entry **slot)
{
	struct directory_entry *e = *slot;
	*slot = e->chain;
	if (e->older)
		e->older->newer = e->newer;
	else
		d->oldest = e->newer;
	if (e->newer)
		e->newer->older = e->older;
	else
		d->newest = e->older;
	d->entries--;
	d->bytes -= e->bytes;
	free(e->key);
	free(e->mailbox);
	free(e->dn);
	free(e);
}

/* The oldest answer goes (the bound, and the end). */
static void directory_drop_oldest(struct directory *d)
{
	struct directory_entry **slot = directory_slot(d, d->oldest->key);
	if (!*slot)
		fatal("directory: an answer of the cache is not in its table");
	directory_entry_drop(d, slot);
}

/* A live answer for key, or NULL (an expired one is dropped). */
static const struct directory_entry *directory_cached(struct directory *d, const char *key)
{
	struct directory_entry **slot = directory_slot(d, key);
	if (!*slot)
		return NULL;
	if ((*slot)->expires > time(NULL))
		return *slot;
	directory_entry_drop(d, slot);
	return NULL;
}

static size_t directory_str_bytes(const char *s)
{
	return s ? strlen(s) + 1 : 0;
}

void directory_cache_put(struct directory *d, const char *key, const char *mailbox,
			 const char *dn)
{
	if (d->core->cache_ttl == 0)
		return;
	struct directory_entry **slot = directory_slot(d, key);
	if (*slot)
		directory_entry_drop(d, slot);
	if (d->entries >= DIRECTORY_CACHE_MAX) /* bounded: the oldest answer goes */
		directory_drop_oldest(d);
	slot = directory_slot(d, key);
	struct directory_entry *e = xcalloc(1, sizeof *e);
	e->key = xstrdup(key);
	e->mailbox = mailbox ? xstrdup(mailbox) : NULL;
	e->dn = dn ? xstrdup(dn) : NULL;
	e->expires = time(NULL) + (time_t)d->core->cache_ttl;
	e->bytes = sizeof *e + directory_str_bytes(key) + directory_str_bytes(mailbox) +
		   directory_str_bytes(dn);
	e->older = d->newest;
	if (d->newest)
		d->newest->newer = e;
	else
		d->oldest = e;
	d->newest = e;
	*slot = e;
	d->entries++;
	d->bytes += e->bytes;
}

size_t directory_cache_entries(const struct directory *d)
{
	return d->entries;
}

size_t directory_cache_bytes(const struct directory *d)
{
	return d->bytes + DIRECTORY_CACHE_BUCKETS * sizeof *d->buckets;
}

/* ---- talking to the directory (the workers) -------------------------------- */

/* Once when it goes, once when it comes back: not per attempt. */
static void directory_note(struct directory_core *c, bool reachable, const char *why)
{
	pthread_mutex_lock(&c->lock);
	if (!reachable && !c->down) {
		char q[LOG_VALUE_MAX];
		log_warn("event=directory-down uri=%s error=\"%s\"", c->uris[0],
			 log_quote(q, sizeof q, why, strlen(why)));
		c->down = true;
	} else if (reachable && c->down) {
		log_info("event=directory-up uri=%s", c->uris[0]);
		c->down = false;
	}
	pthread_mutex_unlock(&c->lock);
}

/* Errors that say the connection, not the question, is at fault. */
static bool directory_link_error(int rc)
{
	return rc == LDAP_SERVER_DOWN || rc == LDAP_CONNECT_ERROR || rc == LDAP_TIMEOUT ||
	       rc == LDAP_UNAVAILABLE || rc == LDAP_BUSY || rc == LDAP_UNWILLING_TO_PERFORM ||
	       rc == LDAP_OTHER || rc == LDAP_LOCAL_ERROR || rc == LDAP_TIMELIMIT_EXCEEDED ||
	       rc == LDAP_ADMINLIMIT_EXCEEDED || rc == LDAP_STRONG_AUTH_REQUIRED ||
	       rc == LDAP_CONFIDENTIALITY_REQUIRED;
}

static void directory_close(LDAP **ld)
{
	if (*ld)
		(void)ldap_unbind_ext_s(*ld, NULL, NULL); /* nothing to do if it fails */
	*ld = NULL;
}

static int directory_options(const struct directory_core *c, LDAP *ld)
{
	int version = LDAP_VERSION3, demand = LDAP_OPT_X_TLS_DEMAND, zero = 0;
	struct timeval tv = {.tv_sec = DIRECTORY_TIMEOUT};
	if (ldap_set_option(ld, LDAP_OPT_PROTOCOL_VERSION, &version) != LDAP_OPT_SUCCESS ||
	    ldap_set_option(ld, LDAP_OPT_REFERRALS, LDAP_OPT_OFF) != LDAP_OPT_SUCCESS ||
	    ldap_set_option(ld, LDAP_OPT_NETWORK_TIMEOUT, &tv) != LDAP_OPT_SUCCESS ||
	    ldap_set_option(ld, LDAP_OPT_TIMEOUT, &tv) != LDAP_OPT_SUCCESS ||
	    ldap_set_option(ld, LDAP_OPT_X_TLS_REQUIRE_CERT, &demand) != LDAP_OPT_SUCCESS)
		return -1;
	if (c->ca && ldap_set_option(ld, LDAP_OPT_X_TLS_CACERTFILE, c->ca) != LDAP_OPT_SUCCESS)
		return -1;
	/* a context of this connection's own, with the options above */
	return ldap_set_option(ld, LDAP_OPT_X_TLS_NEWCTX, &zero) == LDAP_OPT_SUCCESS ? 0 : -1;
}

static int directory_simple_bind(LDAP *ld, const char *dn, const char *pw, size_t len)
{
	struct berval cred = {.bv_len = len, .bv_val = (char *)pw};
	return ldap_sasl_bind_s(ld, dn, LDAP_SASL_SIMPLE, &cred, NULL, NULL, NULL);
}

/* One URI: connected, inside TLS (ldaps://, or StartTLS on ldap://), and
 * for searches bound as the service account.  NULL with why. */
static LDAP *directory_open_uri(const struct directory_core *c, const char *uri, bool service,
				char *why, size_t whysz)
{
	LDAP *ld = NULL;
	int rc = ldap_initialize(&ld, uri);
	if (rc != LDAP_SUCCESS || !ld) {
		errfmt(why, whysz, "%s: %s", uri, ldap_err2string(rc));
		return NULL;
	}
	if (directory_options(c, ld) < 0) {
		errfmt(why, whysz, "%s: cannot set the connection's options", uri);
		directory_close(&ld);
		return NULL;
	}
	/* connect now (ldaps://: with the TLS handshake), so that a server
	 * that is down sends us on to the next URI */
	if ((rc = ldap_connect(ld)) != LDAP_SUCCESS) {
		errfmt(why, whysz, "%s: %s", uri, ldap_err2string(rc));
		directory_close(&ld);
		return NULL;
	}
	if (strncasecmp(uri, "ldap://", 7) == 0 && c->starttls &&
	    (rc = ldap_start_tls_s(ld, NULL, NULL)) != LDAP_SUCCESS) {
		errfmt(why, whysz, "%s: StartTLS: %s", uri, ldap_err2string(rc));
		directory_close(&ld);
		return NULL;
	}
	if (service && c->bind_dn &&
	    (rc = directory_simple_bind(ld, c->bind_dn, c->bind_pw, c->bind_pw_len)) != LDAP_SUCCESS) {
		errfmt(why, whysz, "%s: bind as the service account: %s", uri, ldap_err2string(rc));
		directory_close(&ld);
		return NULL;
	}
	return ld;
}

/* The first URI that answers, in the configured order. */
static LDAP *directory_open(const struct directory_core *c, bool service, char *why,
			    size_t whysz)
{
	for (size_t i = 0; i < c->nuris; i++) {
		LDAP *ld = directory_open_uri(c, c->uris[i], service, why, whysz);
		if (ld)
			return ld;
	}
	return NULL;
}

/* The first valid address among the entry's values of attr into out. */
static bool directory_first_address(LDAP *ld, LDAPMessage *e, const char *attr, char *out,
				    size_t outsz)
{
	struct berval **vals = ldap_get_values_len(ld, e, attr);
	bool found = false;
	for (size_t i = 0; vals && vals[i] && !found; i++)
		found = dirfilter_address_value(vals[i]->bv_val, vals[i]->bv_len, out, outsz);
	ldap_value_free_len(vals);
	return found;
}

/* The mailbox of an entry: its first mail, else its first address. */
static bool directory_mailbox(const struct directory_core *c, LDAP *ld, LDAPMessage *e,
			      char *out, size_t outsz)
{
	if (directory_first_address(ld, e, "mail", out, outsz))
		return true;
	for (size_t i = 0; c->attrs[i]; i++)
		if (directory_first_address(ld, e, c->attrs[i], out, outsz))
			return true;
	return false;
}

/* Read a search's answer: exactly one entry with an address is FOUND. */
static enum directory_status directory_read_entry(const struct directory_core *c, LDAP *ld,
						  LDAPMessage *res, struct directory_job *j)
{
	if (ldap_count_entries(ld, res) != 1)
		return DIRECTORY_NOT_FOUND;
	LDAPMessage *e = ldap_first_entry(ld, res);
	char mailbox[DIRFILTER_VALUE_MAX + 1];
	char *dn = e ? ldap_get_dn(ld, e) : NULL;
	enum directory_status st = DIRECTORY_NOT_FOUND;
	if (dn && directory_mailbox(c, ld, e, mailbox, sizeof mailbox)) {
		free(j->dn);
		j->dn = xstrdup(dn);
		j->mailbox = xstrdup(mailbox);
		st = DIRECTORY_FOUND;
	}
	ldap_memfree(dn);
	return st;
}

/* One search on the service connection (opened when needed), once more on
 * a fresh connection when the first fails for the link's sake. */
static enum directory_status directory_search(struct directory_core *c,
					      struct directory_conns *conns,
					      struct directory_job *j)
{
	char why[DIRECTORY_WHY_MAX] = "no URI";
	struct timeval tv = {.tv_sec = DIRECTORY_TIMEOUT};
	for (int attempt = 0; attempt < 2; attempt++) {
		if (!conns->search && !(conns->search = directory_open(c, true, why, sizeof why)))
			break;
		LDAPMessage *res = NULL;
		/* two at most: more than one entry is no answer */
		int rc = ldap_search_ext_s(conns->search, c->base, LDAP_SCOPE_SUBTREE, j->filter,
					   c->attrs, 0, NULL, NULL, &tv, 2, &res);
		if (rc == LDAP_SUCCESS || rc == LDAP_SIZELIMIT_EXCEEDED || rc == LDAP_NO_SUCH_OBJECT) {
			enum directory_status st = rc == LDAP_SUCCESS
							   ? directory_read_entry(c, conns->search, res, j)
							   : DIRECTORY_NOT_FOUND;
			ldap_msgfree(res);
			directory_note(c, true, NULL);
			return st;
		}
		ldap_msgfree(res);
		errfmt(why, sizeof why, "search: %s", ldap_err2string(rc));
		directory_close(&conns->search);
		if (!directory_link_error(rc)) /* a bad filter, say: logged, not retried */
			break;
	}
	directory_note(c, false, why);
	return DIRECTORY_UNAVAILABLE;
}

/* The user's password by a simple bind as the entry's DN (RFC 4513
 * §5.1.3) on the worker's own user connection, inside TLS. */
static enum directory_status directory_bind_user(struct directory_core *c,
						 struct directory_conns *conns,
						 const struct directory_job *j)
{
	char why[DIRECTORY_WHY_MAX] = "no URI";
	for (int attempt = 0; attempt < 2; attempt++) {
		if (!conns->user && !(conns->user = directory_open(c, false, why, sizeof why)))
			break;
		int rc = directory_simple_bind(conns->user, j->dn, j->pass, j->plen);
		if (rc == LDAP_SUCCESS || rc == LDAP_INVALID_CREDENTIALS ||
		    rc == LDAP_INVALID_DN_SYNTAX || rc == LDAP_NO_SUCH_OBJECT ||
		    rc == LDAP_INAPPROPRIATE_AUTH) {
			directory_note(c, true, NULL);
			return rc == LDAP_SUCCESS ? DIRECTORY_FOUND : DIRECTORY_NOT_FOUND;
		}
		errfmt(why, sizeof why, "bind: %s", ldap_err2string(rc));
		directory_close(&conns->user);
		if (!directory_link_error(rc))
			break;
	}
	directory_note(c, false, why);
	return DIRECTORY_UNAVAILABLE;
}

static void directory_run(struct directory_core *c, struct directory_conns *conns,
			  struct directory_job *j)
{
	if (j->filter) {
		j->search_status = directory_search(c, conns, j);
		j->searched = j->search_status != DIRECTORY_UNAVAILABLE;
		j->status = j->search_status;
	} else {
		j->status = DIRECTORY_FOUND; /* the cache knew the entry */
	}
	if (j->kind == DIRECTORY_JOB_LOGIN && j->status == DIRECTORY_FOUND) {
		j->status = directory_bind_user(c, conns, j);
		if (j->status != DIRECTORY_FOUND) {
			free(j->mailbox);
			j->mailbox = NULL;
		}
	}
	if (j->pass)
		OPENSSL_cleanse(j->pass, j->plen);
}

/* ---- the worker threads --------------------------------------------------- */

static void directory_job_free(struct directory_job *j)
{
	if (!j)
		return;
	if (j->pass) {
		OPENSSL_cleanse(j->pass, j->plen);
		free(j->pass);
	}
	free(j->key);
	free(j->filter);
	free(j->dn);
	free(j->mailbox);
	free(j);
}

static void directory_core_free(struct directory_core *c)
{
	for (size_t i = 0; i < c->nuris; i++)
		free(c->uris[i]);
	free(c->uris);
	for (size_t i = 0; c->attrs && c->attrs[i]; i++)
		free(c->attrs[i]);
	free(c->attrs);
	free(c->ca);
	free(c->bind_dn);
	if (c->bind_pw) {
		OPENSSL_cleanse(c->bind_pw, c->bind_pw_len);
		free(c->bind_pw);
	}
	free(c->base);
	free(c->filter);
	free(c->principal);
	pthread_mutex_destroy(&c->lock);
	pthread_cond_destroy(&c->work);
	free(c);
}

/* Drop one reference; the last frees the core.  Called with the lock. */
static void directory_core_release(struct directory_core *c)
{
	bool last = --c->refs == 0;
	pthread_mutex_unlock(&c->lock);
	if (last)
		directory_core_free(c);
}

static struct directory_job *directory_pop(struct directory_core *c)
{
	struct directory_job *j = c->queue;
	c->queue = j->next;
	if (!c->queue)
		c->queue_tail = NULL;
	c->queued--;
	j->next = NULL;
	return j;
}

static void *directory_worker(void *arg)
{
	struct directory_core *c = arg;
	struct directory_conns conns = {0};
	pthread_mutex_lock(&c->lock);
	for (;;) {
		while (!c->queue && !c->stopping)
			pthread_cond_wait(&c->work, &c->lock);
		if (c->stopping)
			break;
		struct directory_job *j = directory_pop(c);
		c->busy++;
		pthread_mutex_unlock(&c->lock);
		directory_run(c, &conns, j);
		pthread_mutex_lock(&c->lock);
		c->busy--;
		if (c->stopping) { /* every owner has gone */
			directory_job_free(j);
			continue;
		}
		if (c->done_tail)
			c->done_tail->next = j;
		else
			c->done = j;
		c->done_tail = j;
		if (waker_wake(c->waker) < 0)
			log_err("event=directory-error error=\"cannot wake the loop: %s\"",
				strerror(errno));
	}
	pthread_mutex_unlock(&c->lock);
	directory_close(&conns.search);
	directory_close(&conns.user);
	pthread_mutex_lock(&c->lock);
	directory_core_release(c);
	return NULL;
}

/* ---- jobs (the loop's thread) ----------------------------------------------- */

static void directory_learn(struct directory *d, const struct directory_job *j)
{
	if (!j->searched)
		return;
	bool found = j->search_status == DIRECTORY_FOUND;
	const char *mailbox = found ? j->mailbox : NULL;
	/* a login's bind may have cleared the mailbox: the entry stays known */
	if (found && !mailbox)
		return;
	directory_cache_put(d, j->key, mailbox, found ? j->dn : NULL);
}

static void directory_finish(struct directory *d, struct directory_job *j)
{
	directory_learn(d, j);
	if (!j->cancelled) {
		struct directory_answer a = {.status = j->status,
					     .mailbox = j->status == DIRECTORY_FOUND ? j->mailbox
										     : NULL};
		j->done(j->owner, &a);
	}
	directory_job_free(j);
}

static void directory_woken(void *arg)
{
	struct directory *d = arg;
	struct directory_core *c = d->core;
	pthread_mutex_lock(&c->lock);
	struct directory_job *j = c->done;
	c->done = c->done_tail = NULL;
	pthread_mutex_unlock(&c->lock);
	while (j) {
		struct directory_job *next = j->next;
		directory_finish(d, j);
		j = next;
	}
}

static int directory_start_thread(struct directory_core *c)
{
	pthread_t t;
	if (thread_start(&t, directory_worker, c) != 0)
		return -1;
	if (pthread_detach(t) != 0)
		fatal("directory: pthread_detach failed");
	c->threads++;
	c->refs++;
	return 0;
}

/* Queue j for a worker (one more thread while below DIRECTORY_THREADS and
 * all are busy); false when the queue is full or no thread can start. */
static bool directory_enqueue(struct directory *d, struct directory_job *j)
{
	struct directory_core *c = d->core;
	pthread_mutex_lock(&c->lock);
	bool ok = c->queued < DIRECTORY_QUEUE_MAX;
	if (ok && c->threads < DIRECTORY_THREADS && c->busy + c->queued >= c->threads)
		ok = directory_start_thread(c) == 0 || c->threads > 0;
	if (ok) {
		if (c->queue_tail)
			c->queue_tail->next = j;
		else
			c->queue = j;
		c->queue_tail = j;
		c->queued++;
		pthread_cond_signal(&c->work);
	}
	pthread_mutex_unlock(&c->lock);
	return ok;
}

/* Run j: on a worker (returns it), or here without workers (answers and
 * returns NULL).  A full queue is a temporary failure, answered at once. */
static struct directory_job *directory_submit(struct directory *d, struct directory_job *j)
{
	if (!d->base) {
		directory_run(d->core, &d->sync, j);
		directory_finish(d, j);
		return NULL;
	}
	if (!directory_enqueue(d, j)) {
		log_warn("event=directory-busy queued=%d", DIRECTORY_QUEUE_MAX);
		j->status = DIRECTORY_UNAVAILABLE;
		directory_finish(d, j);
		return NULL;
	}
	return j;
}

static struct directory_job *directory_job_new(struct directory *d, enum directory_kind kind,
					       const char *key, directory_done_fn done,
					       void *owner)
{
	struct directory_job *j = xcalloc(1, sizeof *j);
	j->d = d;
	j->kind = kind;
	j->key = xstrdup(key);
	j->done = done;
	j->owner = owner;
	return j;
}

/* Answered without the directory: status, and the mailbox of a cached entry. */
static struct directory_job *directory_answer_now(enum directory_status status,
						  const char *mailbox, directory_done_fn done,
						  void *owner)
{
	struct directory_answer a = {.status = status, .mailbox = mailbox};
	done(owner, &a);
	return NULL;
}

/* "a:" and the address in lower case; NULL when it is nobody's (a NUL, too long). */
static char *directory_address_key(const char *address, size_t len)
{
	if (len == 0 || len > DIRECTORY_FIELD_MAX || memchr(address, '\0', len))
		return NULL;
	char *key = xmalloc(len + 3);
	memcpy(key, "a:", 2);
	memcpy(key + 2, address, len);
	key[len + 2] = '\0';
	(void)str_lower(key + 2);
	return key;
}

/* The job's search: the configured filter around the address. */
static bool directory_address_filter(const struct directory *d, struct directory_job *j)
{
	char filter[DIRFILTER_MAX];
	const char *address = j->key + 2;
	if (!dirfilter_expand(d->core->filter, address, strlen(address), filter, sizeof filter))
		return false;
	j->filter = xstrdup(filter);
	return true;
}

struct directory_job *directory_lookup(struct directory *d, const char *address,
				       directory_done_fn done, void *owner)
{
	char *key = directory_address_key(address, strlen(address));
	if (!key)
		return directory_answer_now(DIRECTORY_NOT_FOUND, NULL, done, owner);
	const struct directory_entry *e = directory_cached(d, key);
	if (e) {
		free(key);
		return directory_answer_now(e->mailbox ? DIRECTORY_FOUND : DIRECTORY_NOT_FOUND,
					    e->mailbox, done, owner);
	}
	struct directory_job *j = directory_job_new(d, DIRECTORY_JOB_LOOKUP, key, done, owner);
	free(key);
	if (!directory_address_filter(d, j)) {
		directory_job_free(j);
		return directory_answer_now(DIRECTORY_NOT_FOUND, NULL, done, owner);
	}
	return directory_submit(d, j);
}

struct directory_job *directory_find_by_principal(struct directory *d, const char *principal,
						  directory_done_fn done, void *owner)
{
	size_t len = strlen(principal);
	if (!d->core->principal || len == 0 || len > DIRECTORY_FIELD_MAX)
		return directory_answer_now(DIRECTORY_NOT_FOUND, NULL, done, owner);
	char *key = xasprintf("p:%s", principal);
	const struct directory_entry *e = directory_cached(d, key);
	if (e) {
		free(key);
		return directory_answer_now(e->mailbox ? DIRECTORY_FOUND : DIRECTORY_NOT_FOUND,
					    e->mailbox, done, owner);
	}
	struct directory_job *j = directory_job_new(d, DIRECTORY_JOB_PRINCIPAL, key, done, owner);
	free(key);
	char filter[DIRFILTER_MAX];
	struct strbuf sb;
	strbuf_init(&sb, filter, sizeof filter);
	(void)strbuf_addf(&sb, "(%s=", d->core->principal);
	(void)dirfilter_escape(&sb, principal, len);
	(void)strbuf_addc(&sb, ')');
	if (!strbuf_ok(&sb)) {
		directory_job_free(j);
		return directory_answer_now(DIRECTORY_NOT_FOUND, NULL, done, owner);
	}
	j->filter = xstrdup(filter);
	return directory_submit(d, j);
}

struct directory_job *directory_login(struct directory *d, const char *user, size_t ulen,
				      const char *pass, size_t plen, directory_done_fn done,
				      void *owner)
{
	/* an empty password would be an unauthenticated bind, which succeeds
	 * (RFC 4513 §5.1.2): never a login */
	char *key = user ? directory_address_key(user, ulen) : NULL;
	if (!key || plen == 0 || plen > DIRECTORY_PASSWORD_MAX || memchr(pass, '\0', plen)) {
		free(key);
		return directory_answer_now(DIRECTORY_NOT_FOUND, NULL, done, owner);
	}
	const struct directory_entry *e = directory_cached(d, key);
	if (e && !e->mailbox) {
		free(key);
		return directory_answer_now(DIRECTORY_NOT_FOUND, NULL, done, owner);
	}
	struct directory_job *j = directory_job_new(d, DIRECTORY_JOB_LOGIN, key, done, owner);
	free(key);
	if (e) {
		j->dn = xstrdup(e->dn);
		j->mailbox = xstrdup(e->mailbox);
	} else if (!directory_address_filter(d, j)) {
		directory_job_free(j);
		return directory_answer_now(DIRECTORY_NOT_FOUND, NULL, done, owner);
	}
	j->pass = xmalloc(plen + 1);
	memcpy(j->pass, pass, plen);
	j->pass[plen] = '\0';
	j->plen = plen;
	return directory_submit(d, j);
}

void directory_cancel(struct directory_job *job)
{
	if (job)
		job->cancelled = true; /* freed when the worker hands it back */
}

const char *directory_uri(const struct directory *d)
{
	return d->core->uris[0];
}

/* ---- life ------------------------------------------------------------------ */

/* The service account's password: the file's first line, mode 0600. */
static char *directory_read_secret(const char *path, size_t *len, FILE *err)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) < 0) {
		report(err, "%s: cannot open: %s\n", path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return NULL;
	}
	if (st.st_mode & (S_IRWXG | S_IRWXO)) {
		report(err, "%s: readable by group or others (mode %04o); run chmod 600 %s\n", path,
		       (unsigned)(st.st_mode & 07777), path);
		close(fd);
		return NULL;
	}
	char buf[DIRECTORY_SECRET_MAX + 1];
	ssize_t n = read(fd, buf, sizeof buf);
	close(fd);
	if (n < 0 || (size_t)n > DIRECTORY_SECRET_MAX) {
		report(err, "%s: %s\n", path, n < 0 ? strerror(errno) : "longer than 1024 bytes");
		OPENSSL_cleanse(buf, sizeof buf);
		return NULL;
	}
	size_t l = strcspn(buf, "\r\n"); /* n <= sizeof buf - 1: room for the NUL */
	if (l > (size_t)n)
		l = (size_t)n;
	buf[l] = '\0';
	if (l == 0 || memchr(buf, '\0', l)) {
		report(err, "%s: empty password\n", path);
		OPENSSL_cleanse(buf, sizeof buf);
		return NULL;
	}
	char *pw = xstrndup(buf, l);
	OPENSSL_cleanse(buf, sizeof buf);
	*len = l;
	return pw;
}

static char **directory_copy_list(char *const *list, size_t n)
{
	char **out = xcalloc(n + 1, sizeof *out);
	for (size_t i = 0; i < n; i++)
		out[i] = xstrdup(list[i]);
	return out;
}

static struct directory_core *directory_core_new(const struct conf_ldap *conf)
{
	struct directory_core *c = xcalloc(1, sizeof *c);
	if (pthread_mutex_init(&c->lock, NULL) != 0 || pthread_cond_init(&c->work, NULL) != 0)
		fatal("directory: cannot make a lock");
	c->refs = 1;
	c->uris = directory_copy_list(conf->uris, conf->nuris);
	c->nuris = conf->nuris;
	c->starttls = conf->starttls;
	c->ca = conf->ca ? xstrdup(conf->ca) : NULL;
	c->bind_dn = conf->bind_dn ? xstrdup(conf->bind_dn) : NULL;
	c->base = xstrdup(conf->base);
	c->filter = xstrdup(conf->filter);
	c->attrs = directory_copy_list(conf->addresses, conf->naddresses);
	c->principal = conf->principal ? xstrdup(conf->principal) : NULL;
	c->cache_ttl = conf->cache;
	return c;
}

struct directory *directory_new(const struct conf_ldap *conf, struct event_base *base, FILE *err)
{
	struct directory_core *c = directory_core_new(conf);
	if (conf->bind_password_file &&
	    !(c->bind_pw = directory_read_secret(conf->bind_password_file, &c->bind_pw_len, err))) {
		directory_core_free(c);
		return NULL;
	}
	struct directory *d = xcalloc(1, sizeof *d);
	d->core = c;
	d->base = base;
	d->buckets = xcalloc(DIRECTORY_CACHE_BUCKETS, sizeof *d->buckets);
	if (base && !(c->waker = waker_new(base, directory_woken, d))) {
		report(err, "directory: cannot make a pipe: %s\n", strerror(errno));
		directory_core_free(c);
		free(d->buckets);
		free(d);
		return NULL;
	}
	return d;
}

void directory_free(struct directory *d)
{
	if (!d)
		return;
	struct directory_core *c = d->core;
	pthread_mutex_lock(&c->lock);
	c->stopping = true;
	struct directory_job *queued = c->queue, *done = c->done;
	c->queue = c->queue_tail = c->done = c->done_tail = NULL;
	c->queued = 0;
	struct waker *w = c->waker;
	c->waker = NULL;
	pthread_cond_broadcast(&c->work);
	pthread_mutex_unlock(&c->lock);
	for (struct directory_job *j = queued, *next; j; j = next) {
		next = j->next;
		directory_job_free(j);
	}
	for (struct directory_job *j = done, *next; j; j = next) {
		next = j->next;
		directory_job_free(j);
	}
	if (w)
		waker_free(w);
	while (d->oldest)
		directory_drop_oldest(d);
	free(d->buckets);
	directory_close(&d->sync.search);
	directory_close(&d->sync.user);
	free(d);
	pthread_mutex_lock(&c->lock);
	directory_core_release(c); /* the workers hold theirs until they go */
}

/* signer: the outbound DKIM signatures (RFC 6376 §5) and the ARC set of
 * forwarded mail (RFC 8617 §5.1), hashed and signed on a worker: the loop
 * never reads or hashes the message. */
#include "queue/signer.h"

#include <errno.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "lib/log.h"
#include "lib/offload.h"
#include "lib/util.h"
#include "conf/conf.h"
#include "mailauth/arc_seal.h"
#include "mailauth/dkim_header.h"
#include "mailauth/dkim_key.h"
#include "mailauth/dkim_sign.h"
#include "queue/spool.h"
#include "runtime/runtime.h"

struct signer_job {
	struct offload_job *job;
	signer_done_fn done;
	void *owner;
};

struct signer_work {
	struct signer_job *sj;  /* NULL once cancelled */
	struct runtime *rt;     /* a reference: the keys stay while the worker signs */
	char id[SPOOL_ID_SIZE];
	int fd;
	off_t offset, size;
	bool dkim;              /* DKIM signatures wanted */
	char *fields;           /* the result */
	char from[DKIM_DOMAIN_MAX + 1];
	char why[256];          /* why not, when fields is NULL */
	bool no_key;            /* not ours to sign: nothing to log */
	const struct dkim_privkey *seal_key; /* NULL: no ARC set wanted */
	char *authserv_id;      /* the receiving server's host name */
	char *seal;             /* the ARC set made */
	char seal_why[256];     /* why not, when seal is NULL */
};

static bool signer_dkim_wanted(const struct runtime *rt, const struct spool_envelope *env)
{
	if (rt->ndkim_keys == 0)
		return false;
	if (env->auth_user)
		return true;
	for (size_t i = 0; i < env->nrcpts; i++) {
		const struct spool_rcpt *r = &env->rcpts[i];
		if (!r->local && r->orig && strcasecmp(r->orig, r->address) == 0)
			return true;
	}
	return false;
}

/* The server that received the message from outside, when it has
 * `verify { arc yes }`; logged-in senders' mail is not forwarded mail. */
static const struct conf_server *signer_arc_server(const struct runtime *rt,
						   const struct spool_envelope *env)
{
	if (!env->server || env->auth_user)
		return NULL;
	const struct conf_server *srv = runtime_server(rt, env->server);
	return srv && srv->verify.set && srv->verify.arc ? srv : NULL;
}

/* The domain of the first alias that sent the message on to a remote
 * address, or NULL. */
static const char *signer_forwarding_domain(const struct spool_envelope *env)
{
	for (size_t i = 0; i < env->nrcpts; i++) {
		const struct spool_rcpt *r = &env->rcpts[i];
		const char *at = r->orig ? strrchr(r->orig, '@') : NULL;
		if (!r->local && at && strcasecmp(r->orig, r->address) != 0)
			return at + 1;
	}
	return NULL;
}

/* The key ARC seals with: the forwarding domain's RSA key, else the first
 * RSA key configured (ARC verifiers know rsa-sha256, RFC 8617 §4.1.2). */
static const struct dkim_privkey *signer_seal_key(const struct runtime *rt,
						  const struct spool_envelope *env)
{
	const char *domain = signer_forwarding_domain(env);
	if (!domain || !signer_arc_server(rt, env))
		return NULL;
	const struct dkim_privkey *first = NULL;
	for (size_t i = 0; i < rt->ndkim_keys; i++) {
		const struct dkim_privkey *k = &rt->dkim_keys[i];
		if (k->type != DKIM_KEY_RSA)
			continue;
		if (strcasecmp(k->domain, domain) == 0)
			return k;
		if (!first)
			first = k;
	}
	return first;
}

bool signer_wanted(const struct runtime *rt, const struct spool_envelope *env)
{
	return signer_dkim_wanted(rt, env) || signer_seal_key(rt, env);
}

static bool signer_has_key(const struct runtime *rt, const char *domain)
{
	for (size_t i = 0; i < rt->ndkim_keys; i++)
		if (strcmp(rt->dkim_keys[i].domain, domain) == 0)
			return true;
	return false;
}

/* The whole message into s; -1 with why set when it cannot be read, or
 * when there is nothing to do (no key for its From, no seal wanted). */
static int signer_feed(struct signer_work *w, struct dkim_sign *s)
{
	char *buf = xmalloc(SIGNER_READ_CHUNK);
	off_t done = 0;
	bool checked = false;
	int r = 0;
	while (done < w->size && r == 0) {
		size_t want = w->size - done < SIGNER_READ_CHUNK ? (size_t)(w->size - done)
								 : SIGNER_READ_CHUNK;
		ssize_t n = pread(w->fd, buf, want, w->offset + done);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			errfmt(w->why, sizeof w->why, "cannot read the spooled message: %s",
			       n == 0 ? "file too short" : strerror(errno));
			errfmt(w->seal_why, sizeof w->seal_why, "%s", w->why);
			r = -1;
			break;
		}
		dkim_sign_feed(s, buf, (size_t)n);
		done += n;
		if (!checked && w->dkim && dkim_sign_header_done(s)) {
			checked = true;
			if (dkim_sign_from_domain(s, w->from, sizeof w->from) < 0 ||
			    !signer_has_key(w->rt, w->from)) {
				w->no_key = true;
				w->dkim = false;
				/* no key for this From: no need to hash the body, but for ARC */
				r = w->seal_key ? 0 : -1;
			}
		}
	}
	free(buf);
	return r;
}

/* On a worker: read, hash, sign, seal. */
static void signer_run(void *arg)
{
	struct signer_work *w = arg;
	struct dkim_sign *s = dkim_sign_new();
	if (signer_feed(w, s) == 0) {
		if (w->dkim) {
			w->fields = dkim_sign_finish(s, w->rt->dkim_keys, w->rt->ndkim_keys,
						     time(NULL), w->why, sizeof w->why);
			w->no_key = !w->fields &&
				    dkim_sign_from_domain(s, w->from, sizeof w->from) == 0 &&
				    !signer_has_key(w->rt, w->from);
		}
		if (w->seal_key)
			w->seal = arc_seal(s, w->seal_key, w->authserv_id, time(NULL), w->seal_why,
					   sizeof w->seal_why);
	}
	dkim_sign_free(s);
}

static void signer_work_free(void *arg)
{
	struct signer_work *w = arg;
	if (w->fd >= 0)
		close(w->fd); /* read only */
	runtime_unref(w->rt);
	free(w->fields);
	free(w->seal);
	free(w->authserv_id);
	free(w);
}

/* The ARC set on top, then the DKIM signatures; NULL when neither. */
static char *signer_fields(struct signer_work *w)
{
	char *out = NULL;
	if (w->seal && w->fields) {
		size_t a = strlen(w->seal), b = strlen(w->fields);
		out = xmalloc(a + b + 1);
		memcpy(out, w->seal, a);
		memcpy(out + a, w->fields, b + 1);
	} else {
		out = w->seal ? w->seal : w->fields;
		if (w->seal)
			w->seal = NULL;
		else
			w->fields = NULL;
	}
	return out;
}

static void signer_done(void *owner, void *arg)
{
	struct signer_work *w = arg;
	struct signer_job *sj = owner;
	if (w->fields)
		log_info("event=dkim-sign id=%s domain=%s", w->id, w->from);
	else if (w->dkim && !w->no_key)
		log_warn("event=dkim-sign-error id=%s reason=\"%s\" sent=unsigned", w->id, w->why);
	if (w->seal)
		log_info("event=arc-seal id=%s domain=%s", w->id, w->seal_key->domain);
	else if (w->seal_key)
		log_warn("event=arc-seal-error id=%s reason=\"%s\" sent=unsealed", w->id,
			 w->seal_why);
	char *fields = signer_fields(w);
	signer_work_free(w);
	signer_done_fn done = sj->done;
	void *o = sj->owner;
	free(sj);
	done(o, fields);
}

struct signer_job *signer_start(struct runtime *rt, const struct spool_envelope *env,
				const char *id, int fd, off_t offset, off_t size, signer_done_fn done,
				void *owner)
{
	struct signer_work *w = xcalloc(1, sizeof *w);
	w->rt = runtime_ref(rt);
	w->dkim = signer_dkim_wanted(rt, env);
	w->seal_key = signer_seal_key(rt, env);
	if (w->seal_key)
		w->authserv_id = xstrdup(signer_arc_server(rt, env)->hostname);
	xsnprintf(w->id, sizeof w->id, "%s", id); /* spool IDs fit SPOOL_ID_SIZE */
	w->fd = dup(fd);
	w->offset = offset;
	w->size = size;
	struct signer_job *sj = xcalloc(1, sizeof *sj);
	sj->done = done;
	sj->owner = owner;
	if (w->fd < 0) {
		errfmt(w->why, sizeof w->why, "dup: %s", strerror(errno));
		signer_done(sj, w);
		return NULL;
	}
	bool threads = offload_running();
	struct offload_job *j = offload_submit(signer_run, signer_done, signer_work_free, w, sj);
	if (!threads)
		return NULL; /* done already ran, sj is gone */
	sj->job = j;
	return sj;
}

void signer_cancel(struct signer_job *sj)
{
	if (!sj)
		return;
	offload_cancel(sj->job);
	free(sj);
}

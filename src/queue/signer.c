/* signer: the outbound DKIM signatures (RFC 6376 §5), hashed and signed on
 * a worker: the loop never reads or hashes the message. */
#include "queue/signer.h"

#include <errno.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "lib/log.h"
#include "lib/offload.h"
#include "lib/util.h"
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
	char *fields;           /* the result */
	char from[DKIM_DOMAIN_MAX + 1];
	char why[256];          /* why not, when fields is NULL */
	bool no_key;            /* not ours to sign: nothing to log */
};

bool signer_wanted(const struct runtime *rt, const struct spool_envelope *env)
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

static bool signer_has_key(const struct runtime *rt, const char *domain)
{
	for (size_t i = 0; i < rt->ndkim_keys; i++)
		if (strcmp(rt->dkim_keys[i].domain, domain) == 0)
			return true;
	return false;
}

/* On a worker: read, hash, sign. */
static void signer_run(void *arg)
{
	struct signer_work *w = arg;
	struct dkim_sign *s = dkim_sign_new();
	char *buf = xmalloc(SIGNER_READ_CHUNK);
	off_t done = 0;
	bool checked = false;
	while (done < w->size) {
		size_t want = w->size - done < SIGNER_READ_CHUNK ? (size_t)(w->size - done)
								 : SIGNER_READ_CHUNK;
		ssize_t n = pread(w->fd, buf, want, w->offset + done);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			errfmt(w->why, sizeof w->why, "cannot read the spooled message: %s",
			       n == 0 ? "file too short" : strerror(errno));
			goto out;
		}
		dkim_sign_feed(s, buf, (size_t)n);
		done += n;
		if (!checked && dkim_sign_header_done(s)) {
			/* no key for this From: no need to hash the body */
			checked = true;
			if (dkim_sign_from_domain(s, w->from, sizeof w->from) < 0 ||
			    !signer_has_key(w->rt, w->from)) {
				w->no_key = true;
				goto out;
			}
		}
	}
	w->fields = dkim_sign_finish(s, w->rt->dkim_keys, w->rt->ndkim_keys, time(NULL), w->why,
				     sizeof w->why);
	w->no_key = !w->fields && dkim_sign_from_domain(s, w->from, sizeof w->from) == 0 &&
		    !signer_has_key(w->rt, w->from);
out:
	free(buf);
	dkim_sign_free(s);
}

static void signer_work_free(void *arg)
{
	struct signer_work *w = arg;
	if (w->fd >= 0)
		close(w->fd); /* read only */
	runtime_unref(w->rt);
	free(w->fields);
	free(w);
}

static void signer_done(void *owner, void *arg)
{
	struct signer_work *w = arg;
	struct signer_job *sj = owner;
	if (w->fields)
		log_info("event=dkim-sign id=%s domain=%s", w->id, w->from);
	else if (!w->no_key)
		log_warn("event=dkim-sign-error id=%s reason=\"%s\" sent=unsigned", w->id, w->why);
	char *fields = w->fields;
	w->fields = NULL;
	signer_work_free(w);
	signer_done_fn done = sj->done;
	void *o = sj->owner;
	free(sj);
	done(o, fields);
}

struct signer_job *signer_start(struct runtime *rt, const char *id, int fd, off_t offset,
				off_t size, signer_done_fn done, void *owner)
{
	struct signer_work *w = xcalloc(1, sizeof *w);
	w->rt = runtime_ref(rt);
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

/* delivery: the delivery worker, a thread that delivers committed
 * spool messages to their local recipients off the event loop, in batches
 * that share their syncs, with retries; the Maildir writing itself is the
 * store's (store/maildir_deliver.c). */
#include "queue/delivery.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "lib/log.h"
#include "lib/metrics.h"
#include "lib/util.h"
#include "queue/autoreply.h"
#include "queue/spool.h"
#include "store/maildir.h"
#include "store/maildir_deliver.h"
#include "store/quota.h"

enum {
	DELIVERY_RETRY_FIRST = 30,      /* seconds; doubles per failure ... */
	DELIVERY_RETRY_MAX = 600,       /* ... up to this */
	DELIVERY_REASON_MAX = 512,
	DELIVERY_BATCH_MAX = 128,       /* messages taken from the queue at once */
	DELIVERY_GATHER_MS = 30,        /* under steady load: a batch gathers this long */
	DELIVERY_PARALLEL_MIN = 3,      /* copies in a batch: their fdatasyncs run at once */
	/* The worker's nice value: when the CPU is short, the event loop
	 * (greetings, replies, 250s) runs first and delivery catches up in
	 * larger batches; not so low that it starves under a busy loop. */
	DELIVERY_NICE = 10,
};

/* ---- the delivery worker ------------------------------------------------ */

struct delivery_item {
	struct delivery_item *next;
	char id[SPOOL_ID_SIZE];
};

/* A message whose delivery failed, waiting for its next attempt. */
struct delivery_retry {
	struct delivery_retry *next;
	char id[SPOOL_ID_SIZE];
	struct timespec due;    /* CLOCK_MONOTONIC */
	unsigned failures;
	bool *unrecorded;       /* delivered, but spool_mark_done() failed */
	size_t nrcpts;
	/* what `posthorn queue list` shows of it (delivery_each_waiting): */
	char *reason;           /* the last failure; NULL before one */
	bool described;         /* the envelope was read: the fields below */
	time_t arrival;
	long long size;
	char *sender;
	char **waiting;         /* local recipients not yet delivered */
	size_t nwaiting;
};

static struct {
	pthread_mutex_t lock;
	pthread_cond_t wake;
	pthread_t thread;
	pthread_cond_t ready;                   /* the worker has started */
	bool worker_ready;
	bool running;
	bool stopping;
	struct spool *sp;
	char *mailboxes;
	struct quota_table *quotas;             /* each user's limit; NULL: none */
	delivery_remote_fn remote_left;         /* set while running */
	delivery_reply_fn reply;                /* takes out-of-office replies */
	struct delivery_item *head, *tail;      /* FIFO of IDs to try now */
	char max_id[SPOOL_ID_SIZE];             /* the largest ID ever pushed */
	struct delivery_retry *retries;         /* deferred, unordered */
	/* the worker's own, read after it ends: */
	unsigned long long messages, batches, gathered;
	char earlier_max[SPOOL_ID_SIZE];        /* the largest ID an earlier process
						 * spooled ("": none): its copies may be
						 * in a Maildir already */
} dl = {.lock = PTHREAD_MUTEX_INITIALIZER, .ready = PTHREAD_COND_INITIALIZER};

static bool delivery_id_ok(const char *id)
{
	size_t n = strlen(id);
	return n > 0 && n < SPOOL_ID_SIZE && strspn(id, "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ") == n;
}

/* 30s, 1m, 2m, 4m, 8m, 10m, 10m ... */
static unsigned delivery_backoff(unsigned failures)
{
	unsigned s = DELIVERY_RETRY_FIRST;
	for (unsigned i = 1; i < failures && s < DELIVERY_RETRY_MAX; i++)
		s *= 2;
	return s < DELIVERY_RETRY_MAX ? s : DELIVERY_RETRY_MAX;
}

static void delivery_format_duration(char *out, size_t outsz, unsigned s)
{
	bool ok = s % 60 == 0 ? bsnprintf(out, outsz, "%um", s / 60)
			      : bsnprintf(out, outsz, "%us", s);
	if (!ok)
		fatal("delivery_format_duration: buffer too small");
}

static struct timespec delivery_now(void)
{
	struct timespec ts;
	if (clock_gettime(CLOCK_MONOTONIC, &ts) < 0)
		fatal("clock_gettime: %s", strerror(errno));
	return ts;
}

static bool delivery_before(const struct timespec *a, const struct timespec *b)
{
	return a->tv_sec < b->tv_sec || (a->tv_sec == b->tv_sec && a->tv_nsec < b->tv_nsec);
}

/* Forget what delivery_describe() noted. */
static void delivery_retry_undescribe(struct delivery_retry *r)
{
	free(r->sender);
	for (size_t i = 0; i < r->nwaiting; i++)
		free(r->waiting[i]);
	free(r->waiting);
	r->sender = NULL;
	r->waiting = NULL;
	r->nwaiting = 0;
	r->described = false;
}

static void delivery_retry_free(struct delivery_retry *r)
{
	delivery_retry_undescribe(r);
	free(r->reason);
	free(r->unrecorded);
	free(r);
}

/* Unlink and return the retry record of id, or a fresh one.  Lock held. */
static struct delivery_retry *delivery_take_retry(const char *id)
{
	for (struct delivery_retry **pp = &dl.retries; *pp; pp = &(*pp)->next) {
		struct delivery_retry *r = *pp;
		if (strcmp(r->id, id) == 0) {
			*pp = r->next;
			r->next = NULL;
			return r;
		}
	}
	struct delivery_retry *r = xcalloc(1, sizeof *r);
	memcpy(r->id, id, strlen(id) + 1);
	return r;
}

/* The earliest retry that is due, unlinked, or NULL.  Lock held. */
static struct delivery_retry *delivery_take_due(void)
{
	struct timespec now = delivery_now();
	struct delivery_retry **best = NULL;
	for (struct delivery_retry **pp = &dl.retries; *pp; pp = &(*pp)->next)
		if (!delivery_before(&now, &(*pp)->due) &&
		    (!best || delivery_before(&(*pp)->due, &(*best)->due)))
			best = pp;
	if (!best)
		return NULL;
	struct delivery_retry *r = *best;
	*best = r->next;
	r->next = NULL;
	return r;
}

/* The next message to work on, with its retry record.  Lock held. */
static struct delivery_retry *delivery_next(void)
{
	struct delivery_item *it = dl.head;
	if (it) {
		dl.head = it->next;
		if (!dl.head)
			dl.tail = NULL;
		struct delivery_retry *r = delivery_take_retry(it->id);
		free(it);
		return r;
	}
	return delivery_take_due();
}

/* Sleep until woken or until the earliest retry is due.  Lock held. */
static void delivery_wait(void)
{
	if (!dl.retries) {
		pthread_cond_wait(&dl.wake, &dl.lock);
		return;
	}
	struct timespec due = dl.retries->due;
	for (struct delivery_retry *r = dl.retries->next; r; r = r->next)
		if (delivery_before(&r->due, &due))
			due = r->due;
	pthread_cond_timedwait(&dl.wake, &dl.lock, &due);
}

static void delivery_defer(struct delivery_retry *r, unsigned delay)
{
	r->failures++;
	r->due = delivery_now();
	r->due.tv_sec += delay;
	pthread_mutex_lock(&dl.lock);
	r->next = dl.retries;
	dl.retries = r;
	pthread_mutex_unlock(&dl.lock);
}

static char *delivery_mailboxes(void)
{
	pthread_mutex_lock(&dl.lock);
	char *m = xstrdup(dl.mailboxes);
	pthread_mutex_unlock(&dl.lock);
	return m;
}

/* Has address's Maildir no room for a message of size octets?  The
 * copy then waits in the queue, to be tried again (RFC 3463 §3.3: 4.2.2
 * is a temporary failure).  A usage that cannot be read is logged and
 * counts as room. */
static bool delivery_mailbox_full(const char *mailboxes, const char *address, uint64_t size)
{
	struct quota_limit l = {0, 0};
	pthread_mutex_lock(&dl.lock);
	if (dl.quotas)
		quota_table_lookup(dl.quotas, address, &l);
	pthread_mutex_unlock(&dl.lock);
	if (l.bytes == 0 && l.messages == 0)
		return false;
	char *root = maildir_path(mailboxes, address);
	if (!root)
		return false;
	char err[DELIVERY_REASON_MAX];
	int r = quota_check(root, &l, size, 1, err, sizeof err);
	free(root);
	if (r < 0) {
		char t[LOG_VALUE_MAX];
		log_warn("event=quota-error to=%s error=\"%s\"",
			 log_escape(t, sizeof t, address, strlen(address)), err);
	}
	return r == 0;
}

/* A copy of size octets is in address's Maildir: count it in the usage
 * (store/quota.h: Maildir++ counts the octets on disk). */
static void delivery_count_quota(const char *mailboxes, const char *address, off_t size)
{
	char *root = maildir_path(mailboxes, address);
	char err[DELIVERY_REASON_MAX];
	if (root && quota_add(root, (int64_t)size, 1, err, sizeof err) < 0)
		log_warn("event=quota-error error=\"%s\"", err);
	free(root);
}

struct delivery_job {
	const char *id;
	const struct spool_envelope *env;
	const char *mailboxes;
	int fd;
	char retry_in[16];      /* what a failure in this attempt logs */
	struct delivery_retry *retry;
};

/* One line per failed attempt; to is NULL when the whole message failed.
 * The retry keeps why as its last reason.  On the worker, which alone
 * holds job->retry until it is deferred. */
static void delivery_log_failure(const struct delivery_job *job, const char *to, const char *why)
{
	char t[LOG_VALUE_MAX], reason[DELIVERY_REASON_MAX];
	free(job->retry->reason);
	job->retry->reason = xstrdup(why);
	log_quote(reason, sizeof reason, why, strlen(why));
	metrics_count(METRIC_DELIVERIES, METRIC_LABELS("deferred"));
	if (!to) {
		log_warn("event=delivery-failed id=%s reason=\"%s\" retry_in=%s", job->id, reason,
			 job->retry_in);
		return;
	}
	log_warn("event=delivery-failed id=%s to=%s reason=\"%s\" retry_in=%s", job->id,
		 log_escape(t, sizeof t, to, strlen(to)), reason, job->retry_in);
}

/* The retry record keeps one flag per recipient. */
static void delivery_fit_retry(struct delivery_retry *r, size_t nrcpts)
{
	if (r->nrcpts == nrcpts)
		return;
	free(r->unrecorded);
	r->unrecorded = xcalloc(nrcpts, sizeof *r->unrecorded);
	r->nrcpts = nrcpts;
}

enum delivery_load_result {
	DELIVERY_LOADED,        /* job->env filled, job->fd open */
	DELIVERY_GONE,          /* removed, or malformed (logged): drop the ID */
	DELIVERY_UNREADABLE,    /* logged; try again later */
};

static enum delivery_load_result delivery_load(struct delivery_job *job, struct spool_envelope *env)
{
	const char *what = "read";
	if (spool_read_envelope(dl.sp, job->id, env) == 0) {
		job->fd = spool_open_message(dl.sp, env);
		if (job->fd >= 0) {
			delivery_fit_retry(job->retry, env->nrcpts);
			return DELIVERY_LOADED;
		}
		int e = errno;
		spool_envelope_clear(env);
		errno = e;
		what = "open";
	}
	if (errno == ENOENT || errno == EINVAL)
		return DELIVERY_GONE;
	char why[DELIVERY_REASON_MAX];
	if (!bsnprintf(why, sizeof why, "cannot %s spool file: %s", what, strerror(errno)))
		why[0] = '\0';
	delivery_log_failure(job, NULL, why);
	return DELIVERY_UNREADABLE;
}

/* The local part is done.  With remote recipients left the message goes
 * to whoever started the worker (delivery_start's remote_left), which
 * removes it when they are done too; until then only this thread touches
 * the message, after it only the receiver. */
static void delivery_finish(const char *id, bool remote)
{
	if (remote) {
		if (dl.remote_left)
			dl.remote_left(id);
		return;
	}
	if (spool_remove(dl.sp, id) < 0)
		log_warn("event=spool-error id=%s reason=\"cannot remove: %s\"", id,
			 strerror(errno));
}

/* ---- a batch ------------------------------------------------------------
 *
 * The worker takes every message waiting (up to DELIVERY_BATCH_MAX) and
 * delivers them together, like the spool's group commit: all copies are
 * written into tmp/ first, then each is synced and renamed into new/, and
 * each new/ folder is fsynced once for the batch.  A message whose local
 * recipients are then all delivered (and which has no remote ones) is
 * removed from the spool without .done records, and queue/ is fsynced once
 * for all removals; otherwise each delivered recipient is recorded in
 * ID.done as before.  A crash between the Maildir renames and the removal
 * being durable delivers those copies again at the next start: delivery
 * is at least once, never at most once. */

struct delivery_msg {
	struct delivery_retry *r;
	struct spool_envelope env;
	struct delivery_job job;
	unsigned delay;
	bool loaded, failed, remote;
};

struct delivery_copy {
	struct maildir_deliver_file mf;
	struct delivery_msg *m;
	size_t rcpt;
	bool staged;            /* a file was written (not an earlier, unrecorded one) */
	bool ok;
};

struct delivery_batch {
	struct delivery_msg msgs[DELIVERY_BATCH_MAX];
	size_t nmsgs;
	struct delivery_copy *copies;
	size_t ncopies, capcopies;
	char *mailboxes;
};

static void delivery_batch_load(struct delivery_batch *b)
{
	for (size_t i = 0; i < b->nmsgs; i++) {
		struct delivery_msg *m = &b->msgs[i];
		m->delay = delivery_backoff(m->r->failures + 1);
		m->job = (struct delivery_job){.id = m->r->id, .env = &m->env, .fd = -1, .retry = m->r,
					       .mailboxes = b->mailboxes};
		delivery_format_duration(m->job.retry_in, sizeof m->job.retry_in, m->delay);
		enum delivery_load_result lr = delivery_load(&m->job, &m->env);
		if (lr == DELIVERY_GONE) {
			delivery_retry_free(m->r);
			m->r = NULL;
		}
		m->loaded = lr == DELIVERY_LOADED;
		m->failed = lr == DELIVERY_UNREADABLE;
	}
}

/* Did an earlier process spool id?  IDs grow with time, so every ID at or
 * below the largest one resumed is taken for one (a clock set back makes
 * a new ID look old: it is then looked for, never delivered twice). */
static bool delivery_from_earlier(const char *id)
{
	pthread_mutex_lock(&dl.lock);
	bool earlier = dl.earlier_max[0] && strcmp(id, dl.earlier_max) <= 0;
	pthread_mutex_unlock(&dl.lock);
	return earlier;
}

/* Every local recipient not yet done gets a copy in tmp/. */
static void delivery_batch_stage(struct delivery_batch *b)
{
	for (size_t i = 0; i < b->nmsgs; i++) {
		struct delivery_msg *m = &b->msgs[i];
		for (size_t k = 0; m->loaded && k < m->env.nrcpts; k++) {
			const struct spool_rcpt *rc = &m->env.rcpts[k];
			if (rc->done)
				continue;
			if (!rc->local) {
				m->remote = true;
				continue;
			}
			struct delivery_copy *c = xgrow(&b->copies, &b->ncopies, &b->capcopies, sizeof *c);
			c->m = m;
			c->rcpt = k;
			c->mf.fd = -1;
			if (m->r->unrecorded[k]) { /* delivered earlier, only the record failed */
				c->ok = true;
				continue;
			}
			/* the copy's name is the same on every attempt: one that a
			 * process before this one made, then crashed before it
			 * recorded it, is found, not delivered twice */
			char *unique = maildir_spooled_name(m->env.arrival, m->r->id, k);
			if (delivery_from_earlier(m->r->id) &&
			    (m->env.junk ? maildir_deliver_present_junk(b->mailboxes, rc->address, unique)
					 : maildir_deliver_present(b->mailboxes, rc->address, unique))) {
				char t[LOG_VALUE_MAX];
				log_info("event=delivered id=%s to=%s found=earlier-attempt", m->r->id,
					 log_escape(t, sizeof t, rc->address, strlen(rc->address)));
				free(unique);
				c->ok = true;
				continue;
			}
			if (delivery_mailbox_full(b->mailboxes, rc->address, (uint64_t)m->env.size)) {
				free(unique);
				delivery_log_failure(&m->job, rc->address, "4.2.2 mailbox full");
				m->failed = true;
				continue;
			}
			char err[DELIVERY_REASON_MAX];
			/* a message marked as spam goes to Junk, not INBOX */
			int r = (m->env.junk ? maildir_deliver_stage_junk : maildir_deliver_stage_as)(
				b->mailboxes, rc->address, m->env.sender, unique, m->job.fd,
				m->env.body_offset, m->env.size, &c->mf, err, sizeof err);
			free(unique);
			if (r < 0) {
				delivery_log_failure(&m->job, rc->address, err);
				m->failed = true;
				continue;
			}
			c->staged = true;
			c->ok = true;
		}
	}
}

static void delivery_copy_failed(struct delivery_copy *c, const char *err)
{
	delivery_log_failure(&c->m->job, c->m->env.rcpts[c->rcpt].address, err);
	maildir_deliver_discard(&c->mf);
	c->ok = false;
	c->m->failed = true;
}

/* The data of many copies made durable at once: their fdatasyncs run
 * together (fdatasync_all).  false when the batch is too small for that to
 * pay; then each copy is synced as it is renamed. */
static bool delivery_batch_sync(struct delivery_batch *b)
{
	size_t n = 0;
	for (size_t i = 0; i < b->ncopies; i++)
		n += b->copies[i].staged && b->copies[i].ok;
	if (n < DELIVERY_PARALLEL_MIN)
		return false;
	int *fds = xcalloc(n, sizeof *fds);
	int *errs = xcalloc(n, sizeof *errs);
	size_t k = 0;
	for (size_t i = 0; i < b->ncopies; i++)
		if (b->copies[i].staged && b->copies[i].ok)
			fds[k++] = b->copies[i].mf.fd;
	fdatasync_all(fds, errs, n);
	k = 0;
	for (size_t i = 0; i < b->ncopies; i++) {
		struct delivery_copy *c = &b->copies[i];
		if (!c->staged || !c->ok)
			continue;
		int e = errs[k++];
		if (e) {
			char err[DELIVERY_REASON_MAX];
			errfmt(err, sizeof err, "cannot fsync %s: %s", c->mf.tmp, strerror(e));
			delivery_copy_failed(c, err);
		}
	}
	free(fds);
	free(errs);
	return true;
}

/* Sync and rename each copy; then fsync each new/ folder once. */
static void delivery_batch_publish(struct delivery_batch *b)
{
	char err[DELIVERY_REASON_MAX];
	bool synced = delivery_batch_sync(b);
	for (size_t i = 0; i < b->ncopies; i++) {
		struct delivery_copy *c = &b->copies[i];
		if (!c->staged || !c->ok ||
		    maildir_deliver_publish(&c->mf, synced, err, sizeof err) == 0)
			continue;
		delivery_copy_failed(c, err);
	}
	for (size_t i = 0; i < b->ncopies; i++) {
		struct delivery_copy *c = &b->copies[i];
		bool first = c->staged && c->ok;
		for (size_t j = 0; first && j < i; j++)
			first = !(b->copies[j].staged && b->copies[j].ok &&
				  strcmp(b->copies[j].mf.dir, c->mf.dir) == 0);
		if (!first || maildir_deliver_sync_new(c->mf.dir, err, sizeof err) == 0)
			continue;
		/* not known to be durable: take back every copy in that folder */
		for (size_t j = i; j < b->ncopies; j++) {
			struct delivery_copy *d = &b->copies[j];
			if (d->staged && d->ok && strcmp(d->mf.dir, c->mf.dir) == 0)
				delivery_copy_failed(d, err);
		}
	}
}

static void delivery_log_delivered(const struct delivery_msg *m, const struct delivery_copy *c)
{
	const char *to = m->env.rcpts[c->rcpt].address;
	char t[LOG_VALUE_MAX], p[LOG_VALUE_MAX];
	log_info("event=delivered id=%s to=%s maildir=%s", m->r->id,
		 log_escape(t, sizeof t, to, strlen(to)),
		 log_escape(p, sizeof p, c->mf.dir, strlen(c->mf.dir)));
	metrics_count(METRIC_DELIVERIES, METRIC_LABELS("local"));
	metrics_observe(METRIC_DELIVERY_SECONDS, METRIC_LABELS("local"),
			metrics_seconds_since(m->env.arrival));
}

/* Record the delivered recipients of m in ID.done.  false when one could
 * not be recorded (it stays "unrecorded" for the retry). */
static bool delivery_record(struct delivery_batch *b, struct delivery_msg *m)
{
	bool ok = true;
	for (size_t i = 0; i < b->ncopies; i++) {
		struct delivery_copy *c = &b->copies[i];
		if (c->m != m || !c->ok)
			continue;
		if (spool_mark_done(dl.sp, m->r->id, c->rcpt) == 0) {
			m->r->unrecorded[c->rcpt] = false;
			continue;
		}
		char why[DELIVERY_REASON_MAX];
		if (!bsnprintf(why, sizeof why, "delivered, but cannot record it in the spool: %s",
			       strerror(errno)))
			why[0] = '\0';
		delivery_log_failure(&m->job, m->env.rcpts[c->rcpt].address, why);
		ok = false;
	}
	return ok;
}

/* Note, for `posthorn queue list`, what m's retry waits with: its
 * envelope when it was read, and the local recipients still to deliver. */
static void delivery_describe(struct delivery_msg *m)
{
	struct delivery_retry *r = m->r;
	delivery_retry_undescribe(r);
	if (!m->loaded)
		return;
	r->described = true;
	r->arrival = m->env.arrival;
	r->size = (long long)m->env.size;
	r->sender = xstrdup(m->env.sender ? m->env.sender : "");
	for (size_t k = 0; k < m->env.nrcpts; k++) {
		const struct spool_rcpt *rc = &m->env.rcpts[k];
		if (!rc->local || rc->done || (k < r->nrcpts && r->unrecorded[k]))
			continue;
		char **slot = xappend(&r->waiting, &r->nwaiting, sizeof *slot);
		*slot = xstrdup(rc->address);
	}
}

/* Log the deliveries, then remove, record, hand over or defer each
 * message; true when some message was removed (queue/ needs its fsync). */
static bool delivery_batch_conclude(struct delivery_batch *b)
{
	bool removed = false;
	for (size_t i = 0; i < b->ncopies; i++) {
		struct delivery_copy *c = &b->copies[i];
		if (c->ok && c->staged) {
			delivery_log_delivered(c->m, c);
			delivery_count_quota(b->mailboxes, c->m->env.rcpts[c->rcpt].address,
					     c->mf.bytes);
		}
		if (c->ok)
			c->m->r->unrecorded[c->rcpt] = true;
	}
	for (size_t i = 0; i < b->nmsgs; i++) {
		struct delivery_msg *m = &b->msgs[i];
		if (!m->r)
			continue; /* gone */
		if (m->loaded && !m->failed && !m->remote &&
		    spool_unlink_message(dl.sp, m->r->id) == 0) {
			removed = true;
			delivery_retry_free(m->r);
			continue;
		}
		if (m->loaded && !delivery_record(b, m))
			m->failed = true;
		if (m->failed) {
			delivery_describe(m);
			delivery_defer(m->r, m->delay);
			continue;
		}
		delivery_finish(m->r->id, m->remote);
		delivery_retry_free(m->r);
	}
	return removed;
}

void delivery_set_reply(delivery_reply_fn fn)
{
	pthread_mutex_lock(&dl.lock);
	dl.reply = fn;
	pthread_mutex_unlock(&dl.lock);
}

static delivery_reply_fn delivery_reply_taker(void)
{
	pthread_mutex_lock(&dl.lock);
	delivery_reply_fn fn = dl.reply;
	pthread_mutex_unlock(&dl.lock);
	return fn;
}

/* The out-of-office replies (RFC 3834) that the copies just made durable
 * call for, decided here on the worker's thread. */
static void delivery_batch_replies(const struct delivery_batch *b)
{
	delivery_reply_fn fn = delivery_reply_taker();
	time_t now = time(NULL);
	for (size_t i = 0; fn && i < b->ncopies; i++) {
		const struct delivery_copy *c = &b->copies[i];
		if (!c->staged || !c->ok)
			continue;
		const struct delivery_msg *m = c->m;
		const struct spool_rcpt *rc = &m->env.rcpts[c->rcpt];
		size_t len = 0;
		char *text = autoreply_consider(b->mailboxes, m->r->id, rc->address, rc->orig,
						m->env.sender, m->job.fd, m->env.body_offset,
						m->env.size, now, &len);
		if (text)
			fn(m->r->id, m->env.sender, text, len);
	}
}

/* Work on a batch of messages; each r is owned here: freed, or queued for
 * a retry. */
static void delivery_process_batch(struct delivery_retry **rs, size_t n)
{
	struct delivery_batch *b = xcalloc(1, sizeof *b);
	b->mailboxes = delivery_mailboxes();
	b->nmsgs = n;
	for (size_t i = 0; i < n; i++)
		b->msgs[i].r = rs[i];
	delivery_batch_load(b);
	for (size_t i = 0; i < n; i++)
		if (b->msgs[i].loaded)
			delivery_fit_retry(b->msgs[i].r, b->msgs[i].env.nrcpts);
	delivery_batch_stage(b);
	delivery_batch_publish(b);
	delivery_batch_replies(b);
	if (delivery_batch_conclude(b) && spool_sync_queue(dl.sp) < 0)
		log_warn("event=spool-error reason=\"cannot fsync the queue after removals: %s\"",
			 strerror(errno));
	for (size_t i = 0; i < b->ncopies; i++)
		maildir_deliver_clear(&b->copies[i].mf);
	for (size_t i = 0; i < n; i++) {
		if (b->msgs[i].job.fd >= 0)
			close(b->msgs[i].job.fd); /* read-only: nothing to lose */
		if (b->msgs[i].loaded)
			spool_envelope_clear(&b->msgs[i].env);
	}
	free(b->copies);
	free(b->mailboxes);
	free(b);
}

/* Append id to the FIFO unless it is already waiting there.  Lock held. */
static void delivery_push(const char *id)
{
	/* IDs grow with time: a new message's ID is above every ID pushed
	 * before, so only a repeated one needs the search */
	bool fresh = strcmp(id, dl.max_id) > 0;
	for (struct delivery_item *w = dl.head; !fresh && w; w = w->next)
		if (strcmp(w->id, id) == 0)
			return;
	if (fresh)
		memcpy(dl.max_id, id, strlen(id) + 1);
	struct delivery_item *it = xcalloc(1, sizeof *it);
	memcpy(it->id, id, strlen(id) + 1);
	if (dl.tail)
		dl.tail->next = it;
	else
		dl.head = it;
	dl.tail = it;
}

/* Messages waiting, appended to rs[0..n), up to a full batch.  Lock held. */
static size_t delivery_take(struct delivery_retry **rs, size_t n)
{
	while (n < DELIVERY_BATCH_MAX && (rs[n] = delivery_next()) != NULL)
		n++;
	return n;
}

static struct timespec delivery_after_ms(struct timespec t, long ms)
{
	t.tv_sec += ms / 1000;
	t.tv_nsec += ms % 1000 * 1000000L;
	if (t.tv_nsec >= 1000000000L) {
		t.tv_sec++;
		t.tv_nsec -= 1000000000L;
	}
	return t;
}

/* Group commit for deliveries.  A batch's syncs cost about the same for
 * one message as for fifty (file system commits, cache flushes), and each
 * competes with the spool's own for the disk; under steady load (the last
 * batch ended less than two gathering times ago) a batch that is not full
 * waits up to DELIVERY_GATHER_MS for more.  After a quiet spell a message
 * goes at once.  Lock held; returns the new count. */
static size_t delivery_gather(struct delivery_retry **rs, size_t n, struct timespec last_end)
{
	struct timespec now = delivery_now();
	struct timespec steady_until = delivery_after_ms(last_end, 2 * DELIVERY_GATHER_MS);
	if (n == DELIVERY_BATCH_MAX || !delivery_before(&now, &steady_until))
		return n;
	dl.gathered++;
	struct timespec due = delivery_after_ms(now, DELIVERY_GATHER_MS);
	while (n < DELIVERY_BATCH_MAX && !dl.stopping) {
		int e = pthread_cond_timedwait(&dl.wake, &dl.lock, &due);
		n = delivery_take(rs, n);
		if (e == ETIMEDOUT)
			break;
	}
	return n;
}

/* Before the process is confined (delivery_start() waits for it). */
static void delivery_lower_priority(void)
{
	/* on Linux the nice value is the calling thread's own */
	if (setpriority(PRIO_PROCESS, 0, DELIVERY_NICE) < 0)
		log_warn("event=delivery-priority nice=%d reason=\"%s\"", DELIVERY_NICE,
			 strerror(errno));
}

static void *delivery_main(void *unused)
{
	(void)unused;
	struct timespec last_end = {0, 0};
	delivery_lower_priority();
	pthread_mutex_lock(&dl.lock);
	dl.worker_ready = true;
	pthread_cond_signal(&dl.ready);
	while (!dl.stopping) {
		struct delivery_retry *rs[DELIVERY_BATCH_MAX];
		size_t n = delivery_take(rs, 0);
		if (n == 0) {
			delivery_wait();
			continue;
		}
		n = delivery_gather(rs, n, last_end);
		dl.messages += n;
		dl.batches++;
		pthread_mutex_unlock(&dl.lock);
		delivery_process_batch(rs, n);
		last_end = delivery_now();
		pthread_mutex_lock(&dl.lock);
	}
	pthread_mutex_unlock(&dl.lock);
	return NULL;
}

/* Lock held. */
static void delivery_reset(void)
{
	while (dl.head) {
		struct delivery_item *it = dl.head;
		dl.head = it->next;
		free(it);
	}
	dl.tail = NULL;
	while (dl.retries) {
		struct delivery_retry *r = dl.retries;
		dl.retries = r->next;
		delivery_retry_free(r);
	}
	free(dl.mailboxes);
	dl.mailboxes = NULL;
	quota_table_free(dl.quotas);
	dl.quotas = NULL;
	dl.sp = NULL;
	dl.remote_left = NULL;
	dl.running = false;
	dl.stopping = false;
	dl.messages = dl.batches = dl.gathered = 0;
}

static int delivery_init_cond(void)
{
	pthread_condattr_t attr;
	int e = pthread_condattr_init(&attr);
	if (e == 0) {
		e = pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
		if (e == 0)
			e = pthread_cond_init(&dl.wake, &attr);
		pthread_condattr_destroy(&attr);
	}
	return e;
}

int delivery_start(struct spool *sp, const char *mailboxes, delivery_remote_fn remote_left)
{
	if (!sp || !mailboxes) {
		errno = EINVAL;
		return -1;
	}
	pthread_mutex_lock(&dl.lock);
	if (dl.running) {
		pthread_mutex_unlock(&dl.lock);
		errno = EBUSY;
		return -1;
	}
	int e = delivery_init_cond();
	if (e == 0) {
		dl.sp = sp;
		dl.remote_left = remote_left;
		free(dl.mailboxes);
		dl.mailboxes = xstrdup(mailboxes);
		dl.stopping = false;
		dl.worker_ready = false;
		dl.earlier_max[0] = '\0';
		e = thread_start(&dl.thread, delivery_main, NULL);
		if (e == 0) {
			dl.running = true;
			while (!dl.worker_ready)
				pthread_cond_wait(&dl.ready, &dl.lock);
		} else {
			pthread_cond_destroy(&dl.wake);
			delivery_reset();
		}
	}
	pthread_mutex_unlock(&dl.lock);
	if (e != 0) {
		errno = e;
		return -1;
	}
	return 0;
}


static void delivery_enqueue_as(const char *id, bool earlier)
{
	if (!delivery_id_ok(id)) {
		char v[LOG_VALUE_MAX];
		log_warn("event=delivery-error id=%s reason=\"not a queue ID\"",
			 log_escape(v, sizeof v, id, strlen(id)));
		return;
	}
	pthread_mutex_lock(&dl.lock);
	if (dl.running && !dl.stopping) { /* else it waits in the spool for the next start */
		if (earlier && strcmp(id, dl.earlier_max) > 0)
			memcpy(dl.earlier_max, id, strlen(id) + 1);
		delivery_push(id);
		pthread_cond_signal(&dl.wake);
	}
	pthread_mutex_unlock(&dl.lock);
}

void delivery_enqueue(const char *id)
{
	delivery_enqueue_as(id, false);
}

void delivery_resume(const char *id)
{
	delivery_enqueue_as(id, true);
}

void delivery_each_waiting(void (*fn)(void *arg, const struct delivery_waiting *w), void *arg)
{
	pthread_mutex_lock(&dl.lock);
	struct timespec now = delivery_now();
	for (const struct delivery_retry *r = dl.retries; r; r = r->next) {
		long long left = (long long)(r->due.tv_sec - now.tv_sec);
		if (r->due.tv_nsec > now.tv_nsec)
			left++; /* a part of a second: the next whole one */
		struct delivery_waiting w = {
		    .id = r->id,
		    .described = r->described,
		    .arrival = r->arrival,
		    .size = r->size,
		    .sender = r->sender ? r->sender : "",
		    .rcpts = (const char *const *)r->waiting,
		    .nrcpts = r->nwaiting,
		    .failures = r->failures,
		    .next_in = left > 0 ? left : 0,
		    .reason = r->reason,
		};
		fn(arg, &w);
	}
	pthread_mutex_unlock(&dl.lock);
}

size_t delivery_flush(void)
{
	size_t n = 0;
	pthread_mutex_lock(&dl.lock);
	struct timespec now = delivery_now();
	for (struct delivery_retry *r = dl.retries; r; r = r->next, n++)
		r->due = now;
	if (n > 0)
		pthread_cond_signal(&dl.wake);
	pthread_mutex_unlock(&dl.lock);
	return n;
}

void delivery_set_quotas(struct quota_table *t)
{
	pthread_mutex_lock(&dl.lock);
	struct quota_table *old = dl.quotas;
	dl.quotas = t;
	pthread_mutex_unlock(&dl.lock);
	quota_table_free(old);
}

void delivery_set_mailboxes(const char *mailboxes)
{
	char *copy = xstrdup(mailboxes);
	pthread_mutex_lock(&dl.lock);
	if (dl.running) { /* else delivery_start() names the root */
		free(dl.mailboxes);
		dl.mailboxes = copy;
		copy = NULL;
	}
	pthread_mutex_unlock(&dl.lock);
	free(copy);
}

void delivery_stop(void)
{
	pthread_mutex_lock(&dl.lock);
	if (!dl.running || dl.stopping) {
		pthread_mutex_unlock(&dl.lock);
		return;
	}
	dl.stopping = true;
	pthread_cond_signal(&dl.wake);
	pthread_mutex_unlock(&dl.lock);
	int e = pthread_join(dl.thread, NULL);
	if (e != 0)
		fatal("pthread_join: %s", strerror(e));
	pthread_mutex_lock(&dl.lock);
	log_info("event=delivery-stats messages=%llu batches=%llu gathered=%llu", dl.messages,
		 dl.batches, dl.gathered);
	pthread_cond_destroy(&dl.wake);
	delivery_reset();
	pthread_mutex_unlock(&dl.lock);
}

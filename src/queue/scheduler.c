/* scheduler: decides what happens next to a message (see scheduler.h).
 * A submitted message goes to the local agent; the local agent reports
 * one with remote recipients left, which then goes to the remote agent;
 * the remote agent reports each bounce it spools, which is submitted like
 * any new message; so is each out-of-office reply the local agent asks
 * for, spooled here on the loop. */
#include "queue/scheduler.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "conf/conf.h"
#include "lib/log.h"
#include "lib/util.h"
#include "lib/waker.h"
#include "queue/autoreply.h"
#include "queue/delivery.h"
#include "queue/outbound.h"
#include "queue/tlsreport.h"
#include "runtime/runtime.h"

/* An out-of-office reply on its way from the worker to the spool. */
struct scheduler_reply {
	struct scheduler_reply *next;
	char orig[SPOOL_ID_SIZE];       /* the message it answers */
	char id[SPOOL_ID_SIZE];         /* its own, once spooled */
	char *to;
	char *text;
	size_t len;
};

static struct {
	pthread_mutex_t lock;
	struct waker *waker;            /* NULL: stopped, replies are dropped */
	struct spool *sp;
	struct scheduler_reply *head, **tail;
} replies = {.lock = PTHREAD_MUTEX_INITIALIZER};

static void scheduler_reply_free(struct scheduler_reply *r)
{
	free(r->to);
	free(r->text);
	free(r);
}

/* The local agent wants a reply sent.  On the worker thread. */
static void scheduler_reply_due(const char *id, const char *to, char *text, size_t len)
{
	struct scheduler_reply *r = xcalloc(1, sizeof *r);
	/* fits: a spool ID */
	xsnprintf(r->orig, sizeof r->orig, "%s", id);
	r->to = xstrdup(to);
	r->text = text;
	r->len = len;
	pthread_mutex_lock(&replies.lock);
	if (!replies.waker) {
		pthread_mutex_unlock(&replies.lock);
		scheduler_reply_free(r);
		return;
	}
	bool wake = replies.head == NULL;
	*replies.tail = r;
	replies.tail = &r->next;
	if (wake && waker_wake(replies.waker) < 0)
		log_err("event=autoreply-error reason=\"cannot wake the loop: %s\"", strerror(errno));
	pthread_mutex_unlock(&replies.lock);
}

static void scheduler_reply_committed(void *arg, int err)
{
	struct scheduler_reply *r = arg;
	if (err) {
		log_warn("event=autoreply-error orig=%s reason=\"cannot spool the reply: %s\"",
			 r->orig, strerror(err));
	} else {
		log_info("event=autoreply-queued id=%s orig=%s", r->id, r->orig);
		scheduler_submit(r->id);
	}
	scheduler_reply_free(r);
}

/* Spool the replies the worker left, with the current generation's
 * domains, aliases and users.  On the loop. */
static void scheduler_replies_wake(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&replies.lock);
	struct scheduler_reply *r = replies.head;
	replies.head = NULL;
	replies.tail = &replies.head;
	struct spool *sp = replies.sp;
	pthread_mutex_unlock(&replies.lock);
	const struct runtime *rt = runtime_current();
	while (r) {
		struct scheduler_reply *next = r->next;
		if (!rt || autoreply_spool(sp, rt->conf, rt->aliases, rt->users, r->to, r->text,
					   r->len, scheduler_reply_committed, r, r->id) < 0) {
			log_info("event=autoreply-dropped orig=%s reason=\"%s\"", r->orig,
				 errno == EINVAL ? "no such local recipient" : strerror(errno));
			scheduler_reply_free(r);
		}
		r = next;
	}
}

static int scheduler_replies_start(struct event_base *base, struct spool *sp)
{
	struct waker *w = waker_new(base, scheduler_replies_wake, NULL);
	if (!w)
		return -1;
	pthread_mutex_lock(&replies.lock);
	replies.waker = w;
	replies.sp = sp;
	replies.head = NULL;
	replies.tail = &replies.head;
	pthread_mutex_unlock(&replies.lock);
	delivery_set_reply(scheduler_reply_due);
	return 0;
}

/* After the worker stopped: replies not yet spooled are dropped. */
static void scheduler_replies_stop(void)
{
	delivery_set_reply(NULL);
	pthread_mutex_lock(&replies.lock);
	struct waker *w = replies.waker;
	struct scheduler_reply *r = replies.head;
	replies.waker = NULL;
	replies.head = NULL;
	replies.tail = &replies.head;
	pthread_mutex_unlock(&replies.lock);
	while (r) {
		struct scheduler_reply *next = r->next;
		log_info("event=autoreply-dropped orig=%s reason=\"shutting down\"", r->orig);
		scheduler_reply_free(r);
		r = next;
	}
	if (w)
		waker_free(w);
}

/* The local agent is done with id and remote recipients remain.  On the
 * worker thread: the hand-over queues the ID and wakes the loop. */
static void scheduler_remote_left(const char *id)
{
	log_info("event=handoff id=%s to=outbound", id);
	outbound_handoff(id);
}

/* The remote agent committed a bounce, or TLS reporting a report: a new
 * message.  On the loop. */
static void scheduler_bounce_spooled(const char *id)
{
	scheduler_submit(id);
}

int scheduler_start(struct event_base *base, struct spool *sp, const char *mailboxes)
{
	if (outbound_start(base, sp, scheduler_bounce_spooled) < 0)
		return -1;
	if (tlsreport_start(base, sp, scheduler_bounce_spooled) < 0) {
		int e = errno;
		outbound_stop();
		errno = e;
		return -1;
	}
	if (scheduler_replies_start(base, sp) < 0 ||
	    delivery_start(sp, mailboxes, scheduler_remote_left) < 0) {
		int e = errno;
		scheduler_replies_stop();
		tlsreport_stop();
		outbound_stop();
		errno = e;
		return -1;
	}
	return 0;
}

void scheduler_submit(const char *id)
{
	delivery_enqueue(id);
}

void scheduler_resume(const char *id)
{
	delivery_resume(id);
}

void scheduler_set_mailboxes(const char *mailboxes)
{
	delivery_set_mailboxes(mailboxes);
}

void scheduler_set_quotas(struct quota_table *t)
{
	delivery_set_quotas(t);
}

void scheduler_stop_remote(void)
{
	outbound_stop();
}

/* In the reverse order of the start. */
void scheduler_stop(void)
{
	delivery_stop();
	scheduler_replies_stop();
	tlsreport_stop();
	outbound_stop();
}

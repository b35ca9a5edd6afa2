/* scheduler: decides what happens next to a message (see scheduler.h).
 * A submitted message goes to the local agent; the local agent reports
 * one with remote recipients left, which then goes to the remote agent;
 * the remote agent reports each bounce it spools, which is submitted like
 * any new message. */
#include "queue/scheduler.h"

#include <errno.h>

#include "lib/log.h"
#include "queue/delivery.h"
#include "queue/outbound.h"

/* The local agent is done with id and remote recipients remain.  On the
 * worker thread: the hand-over queues the ID and wakes the loop. */
static void scheduler_remote_left(const char *id)
{
	log_info("event=handoff id=%s to=outbound", id);
	outbound_handoff(id);
}

/* The remote agent committed a bounce: a new message.  On the loop. */
static void scheduler_bounce_spooled(const char *id)
{
	scheduler_submit(id);
}

int scheduler_start(struct event_base *base, struct spool *sp, const char *mailboxes)
{
	if (outbound_start(base, sp, scheduler_bounce_spooled) < 0)
		return -1;
	if (delivery_start(sp, mailboxes, scheduler_remote_left) < 0) {
		int e = errno;
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

void scheduler_set_mailboxes(const char *mailboxes)
{
	delivery_set_mailboxes(mailboxes);
}

void scheduler_stop_remote(void)
{
	outbound_stop();
}

/* In the reverse order of the start. */
void scheduler_stop(void)
{
	delivery_stop();
	outbound_stop();
}

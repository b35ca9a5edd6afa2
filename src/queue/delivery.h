/* delivery: the local delivery agent, a worker thread that takes
 * committed spool IDs off the event loop and delivers their local
 * recipients to Maildir (store/maildir_deliver.h), in batches, with
 * retries.  It knows no other agent: what happens to a message's remote
 * recipients is decided by whoever started it (queue/scheduler.c). */
#ifndef POSTHORN_DELIVERY_H
#define POSTHORN_DELIVERY_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

struct spool;

/* The local recipients of id are done and remote ones remain: the message
 * is the callee's from now on (the worker neither touches nor removes it
 * again).  Called on the worker thread. */
typedef void (*delivery_remote_fn)(const char *id);

/* A reply posthorn sends for a user (the out-of-office reply,
 * queue/autoreply.h) for message id, to the original's sender; text
 * (len bytes) is the callee's to free.  Called on the worker thread. */
typedef void (*delivery_reply_fn)(const char *id, const char *to, char *text, size_t len);
/* Who takes the replies (NULL: none are made).  Thread-safe. */
void delivery_set_reply(delivery_reply_fn fn);

/* Start the delivery worker thread.  It delivers each ID given to
 * delivery_enqueue(): local recipients to Maildir, marks them done, removes
 * the message when nothing is left, and reports one with remote recipients
 * left to remote_left (NULL: such a message stays in the spool); a failed
 * delivery is retried with back-off.  Logs one line per attempt.  -1 with
 * errno (EBUSY: running). */
int delivery_start(struct spool *sp, const char *mailboxes, delivery_remote_fn remote_left);
/* Thread-safe; the ID is copied. */
void delivery_enqueue(const char *id);
/* The same for a message an earlier process spooled (spool_list() at the
 * start): a copy it made and had not yet recorded is looked for in the
 * Maildir before one is made, so that none is delivered twice.  Mail
 * this process accepts is never looked for (a Maildir of 100,000
 * messages would be listed for each). */
void delivery_resume(const char *id);
/* Each user's quota (store/quota.h), at the start and after a reload;
 * the table is the worker's from now on.  A copy for a full mailbox waits
 * in the queue and is tried again with the usual back-off.  Thread-safe. */
struct quota_table;
void delivery_set_quotas(struct quota_table *t);
/* New mailboxes root after a reload (copied). */
void delivery_set_mailboxes(const char *mailboxes);

/* A message whose local delivery failed and waits for its next attempt,
 * as `posthorn queue list` shows it. */
struct delivery_waiting {
	const char *id;
	bool described;               /* its envelope was read: the next five */
	time_t arrival;
	long long size;
	const char *sender;           /* "" for <> */
	const char *const *rcpts;     /* local recipients not yet delivered */
	size_t nrcpts;
	unsigned failures;            /* attempts that failed */
	long long next_in;            /* seconds until the next attempt; 0: due */
	const char *reason;           /* the last failure; NULL when unknown */
};
/* Calls fn for each waiting message, under the worker's lock: fn must be
 * quick and must not call into delivery.  Thread-safe. */
void delivery_each_waiting(void (*fn)(void *arg, const struct delivery_waiting *w), void *arg);
/* Make every waiting message due now; returns how many there were. */
size_t delivery_flush(void);
/* Finish the message in hand, then stop the thread.  Queued IDs stay in
 * the spool for the next start. */
void delivery_stop(void);

#endif

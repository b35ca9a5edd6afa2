/* delivery: the local delivery agent, a worker thread that takes
 * committed spool IDs off the event loop and delivers their local
 * recipients to Maildir (store/maildir_deliver.h), in batches, with
 * retries.  It knows no other agent: what happens to a message's remote
 * recipients is decided by whoever started it (queue/scheduler.c). */
#ifndef POSTHORN_DELIVERY_H
#define POSTHORN_DELIVERY_H

struct spool;

/* The local recipients of id are done and remote ones remain: the message
 * is the callee's from now on (the worker neither touches nor removes it
 * again).  Called on the worker thread. */
typedef void (*delivery_remote_fn)(const char *id);

/* Start the delivery worker thread.  It delivers each ID given to
 * delivery_enqueue(): local recipients to Maildir, marks them done, removes
 * the message when nothing is left, and reports one with remote recipients
 * left to remote_left (NULL: such a message stays in the spool); a failed
 * delivery is retried with back-off.  Logs one line per attempt.  -1 with
 * errno (EBUSY: running). */
int delivery_start(struct spool *sp, const char *mailboxes, delivery_remote_fn remote_left);
/* Thread-safe; the ID is copied. */
void delivery_enqueue(const char *id);
/* New mailboxes root after a reload (copied). */
void delivery_set_mailboxes(const char *mailboxes);
/* Finish the message in hand, then stop the thread.  Queued IDs stay in
 * the spool for the next start. */
void delivery_stop(void);

#endif

/* scheduler: decides what happens next to a message.  Every message on
 * stable storage is submitted here: one that SMTP accepted, one found in
 * the spool at start-up, a bounce that the remote agent spooled.  It goes
 * to the local agent (delivery.h) first; when its local recipients
 * are done and remote ones remain, to the remote agent (outbound.h).
 * The agents know nothing of each other nor of this file: they report
 * here through the callbacks given to them when they start. */
#ifndef POSTHORN_SCHEDULER_H
#define POSTHORN_SCHEDULER_H

struct event_base;
struct spool;

/* Start the remote agent on base, then the local agent's worker thread
 * (which may hand messages on as soon as it runs), mail going to the
 * Maildirs under mailboxes.  0, or -1 with errno and nothing left
 * running. */
int scheduler_start(struct event_base *base, struct spool *sp, const char *mailboxes);
/* A message is on stable storage: deliver it.  Thread-safe; the ID is
 * copied.  While stopped the message waits in the spool for the next
 * start. */
void scheduler_submit(const char *id);
/* A message an earlier process spooled, found at the start (see
 * delivery_resume()). */
void scheduler_resume(const char *id);
/* A new mailboxes root after a reload (copied). */
void scheduler_set_mailboxes(const char *mailboxes);
/* Each user's quota, at the start and after a reload (the table is the
 * local delivery agent's from now on). */
struct quota_table;
void scheduler_set_quotas(struct quota_table *t);
/* Shutdown, first step (loop thread): the remote agent stops, so that no
 * new connection goes out while the daemon winds down; attempts in flight
 * are abandoned, their recipients stay pending in the spool for the next
 * start.  The local agent goes on until scheduler_stop(). */
void scheduler_stop_remote(void);
/* Stop what still runs: the local agent, which finishes the batch in hand,
 * then the remote agent.  What is not delivered stays in the spool.
 * Harmless when stopped. */
void scheduler_stop(void);

#endif

/* deliver_local: Maildir delivery (tmp/ then new/, fsync before rename) and
 * the delivery worker that takes committed spool IDs off the event loop.
 * Maildir layout: <mailboxes>/<domain>/<localpart>/{tmp,new,cur}. */
#ifndef POSTHORN_DELIVER_LOCAL_H
#define POSTHORN_DELIVER_LOCAL_H

#include <stddef.h>
#include <sys/types.h>

struct spool;

/* Deliver one copy: prepend "Return-Path: <sender>" and
 * "Delivered-To: <address>", copy len bytes from fd at offset into a new
 * file in <mailboxes>/<domain>/<local>/tmp, fsync, rename into new/ under
 * a unique name (time.M<usec>P<pid>Q<seq>R<random>.host,S=size), fsync new/.
 * Folders are created on demand (mode 0700).  0, or -1 with a reason in
 * err. */
int maildir_deliver(const char *mailboxes, const char *address, const char *sender,
		    int fd, off_t offset, off_t len, char *err, size_t errsz);

/* The Maildir folder of address (caller frees): <mailboxes>/<domain>/<local>,
 * with the domain lower-cased and '/' or a leading '.' in the local part
 * made harmless.  NULL when the address cannot name a folder safely. */
char *maildir_path(const char *mailboxes, const char *address);

/* Start the delivery worker thread.  It delivers each ID given to
 * delivery_enqueue(): local recipients to Maildir, marks them done, removes
 * the message when nothing is left; a failed delivery is retried with
 * back-off.  Logs one line per attempt.  -1 with errno (EBUSY: running). */
int delivery_start(struct spool *sp, const char *mailboxes);
/* Thread-safe; the ID is copied. */
void delivery_enqueue(const char *id);
/* New mailboxes root after a reload (copied). */
void delivery_set_mailboxes(const char *mailboxes);
/* Finish the message in hand, then stop the thread.  Queued IDs stay in
 * the spool for the next start. */
void delivery_stop(void);

#endif

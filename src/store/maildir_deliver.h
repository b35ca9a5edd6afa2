/* maildir_deliver: writing new messages into Maildirs
 * (maildir(5)): a copy is written in
 * tmp/ under a unique name, synced, renamed into new/ with ",S=<size>,W=<size
 * with CRLF line ends>" appended, and new/ is synced.  Folders are made on
 * demand (mode 0700), each new one synced into its parent.  One copy at a
 * time (maildir_deliver), or in steps so that a batch of copies shares its
 * syncs.  Thread-safe: the delivery worker calls it off the event loop. */
#ifndef POSTHORN_MAILDIR_DELIVER_H
#define POSTHORN_MAILDIR_DELIVER_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* Deliver one copy: prepend "Return-Path: <sender>" and
 * "Delivered-To: <address>", copy len bytes from fd at offset (CRLF turned
 * into LF) into a new file in maildir_path(mailboxes, address)/tmp, fsync,
 * rename into new/ under maildir_unique_name(0) with ",S=...,W=...",
 * fsync new/.  0, or -1 with a reason in err. */
int maildir_deliver(const char *mailboxes, const char *address, const char *sender, int fd,
		    off_t offset, off_t len, char *err, size_t errsz);

/* ---- the same in steps ----------------------------------------------------
 * stage (into tmp/, writeback started), then publish (synced unless the
 * caller synced fd itself, renamed into new/), then sync_new once per
 * folder; discard after any failure; clear always. */

/* One copy on its way into a Maildir. */
struct maildir_deliver_file {
	char *dir;              /* the recipient's Maildir */
	char *name;             /* the unique name */
	char *tmp;              /* dir/tmp/name */
	char *new;              /* dir/new/name,S=...,W=... once published */
	int fd;                 /* open on tmp until published; -1 */
	off_t bytes;            /* written: for S= */
	off_t lines;            /* LFs written: W= is bytes + lines */
};

/* The copy in a file in tmp/ (the folders made first when missing), its
 * writeback started.  On failure nothing is left behind and mf is clear. */
int maildir_deliver_stage(const char *mailboxes, const char *address, const char *sender,
			  int fd, off_t offset, off_t len, struct maildir_deliver_file *mf,
			  char *err, size_t errsz);
/* The same under the unique name given (maildir_spooled_name): a file of
 * that name left in tmp/ by an attempt that crashed is written over. */
int maildir_deliver_stage_as(const char *mailboxes, const char *address, const char *sender,
			     const char *unique, int fd, off_t offset, off_t len,
			     struct maildir_deliver_file *mf, char *err, size_t errsz);
/* The same into the recipient's Junk folder (Maildir++ ".Junk"), made
 * with the \Junk special use (RFC 6154) when missing: for a message
 * marked as spam. */
int maildir_deliver_stage_junk(const char *mailboxes, const char *address, const char *sender,
			       const char *unique, int fd, off_t offset, off_t len,
			       struct maildir_deliver_file *mf, char *err, size_t errsz);
bool maildir_deliver_present_junk(const char *mailboxes, const char *address,
				  const char *unique);
/* Is the copy named unique already in address's Maildir (new/ or cur/)? */
bool maildir_deliver_present(const char *mailboxes, const char *address, const char *unique);
/* fdatasync (unless synced: the caller made mf->fd durable), close, rename
 * into new/ (a new/ taken away is made again).  new/ itself is the caller's
 * to sync. */
int maildir_deliver_publish(struct maildir_deliver_file *mf, bool synced, char *err,
			    size_t errsz);
/* fsync dir/new, which makes the renames into it durable. */
int maildir_deliver_sync_new(const char *dir, char *err, size_t errsz);
/* After a failure: remove what was written (from tmp/ or new/), so that
 * nothing half-made, or not known to be durable, stays behind. */
void maildir_deliver_discard(struct maildir_deliver_file *mf);
/* Free the names and forget the copy (mf->fd -1). */
void maildir_deliver_clear(struct maildir_deliver_file *mf);

#endif

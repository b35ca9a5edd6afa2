/* spool: the durable queue.  A message and its envelope are
 * one file, <spool>/queue/ID.  It is acknowledged only once on stable
 * storage: with the commit thread, as a record in <spool>/journal
 * (journal.h; one fdatasync for a batch, the queue file itself made durable
 * by a later checkpoint and rewritten from the journal after a crash);
 * otherwise (synchronous commits, messages over 256 KiB) written under
 * tmp/, fsynced, renamed into queue/ and the folder fsynced.  A crash at any
 * instant leaves either nothing in queue/ or a whole message.  Delivered
 * recipients are appended to <spool>/queue/ID.done (one index per line,
 * fsynced) so that a restart does not deliver them again.
 *
 * File layout: "posthorn-spool 1\n", envelope lines "KEY VALUE\n" with
 * addresses in xtext (RFC 3461 §4), a blank line, then the message exactly
 * as it will be delivered (CRLF line ends, Received: header first). */
#ifndef POSTHORN_SPOOL_H
#define POSTHORN_SPOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include <time.h>

enum { SPOOL_ID_SIZE = 24 }; /* ID string incl. NUL; IDs are [0-9A-Z] */

struct spool_rcpt {
	char *address;          /* final address, e.g. "bob@example.test" */
	char *orig;             /* as given at RCPT (before alias expansion) */
	bool local;             /* domain is local: Maildir delivery */
	bool done;              /* filled by spool_read_envelope() */
};

struct spool_envelope {
	char id[SPOOL_ID_SIZE];
	char *sender;           /* "" for the null sender <> */
	struct spool_rcpt *rcpts;
	size_t nrcpts;
	time_t arrival;
	char *client;           /* client address text */
	char *helo;             /* may be NULL */
	char *auth_user;        /* may be NULL */
	char *server;           /* the virtual server that accepted it; may be NULL */
	bool requiretls;        /* MAIL FROM ... REQUIRETLS (RFC 8689) */
	bool junk;              /* deliver into the recipients' Junk folders (spool_envelope_mark_junk) */
	off_t body_offset;      /* filled by spool_read_envelope() */
	off_t size;             /* of the message part; filled by spool_read_envelope() */
};

struct spool;
struct spool_msg;

/* Create <dir>, <dir>/tmp, <dir>/queue and <dir>/free as needed, empty
 * tmp/ (those messages were never acknowledged), replay the journal (the
 * messages acknowledged since its last checkpoint go back into queue/,
 * whole; one with no room even after emptying free/ stays in the journal
 * for the next start, and this run does not use the journal) and take
 * what free/ holds (delivered messages' files, to be written over; not
 * one named like a queued message).  The journal's bound is an eighth of
 * the file system.  A full disk is no failure.  NULL with errno on
 * failure. */
struct spool *spool_open(const char *dir);
void spool_close(struct spool *sp);
const char *spool_dir(const struct spool *sp);

/* A new unique ID, e.g. "4Q2T9XK3ZJ0017". */
void spool_new_id(char id[SPOOL_ID_SIZE]);

/* Start writing a message with this envelope (env->id is set here).
 * NULL with errno on failure. */
struct spool_msg *spool_msg_begin(struct spool *sp, struct spool_envelope *env);
/* Append message bytes (buffered).  0, or -1 with errno (ENOSPC...). */
int spool_msg_write(struct spool_msg *m, const void *data, size_t len);
off_t spool_msg_size(const struct spool_msg *m);
/* The message written so far, for reading it back before the commit (a
 * filter sees it): the buffer is written out, *offset set to where the
 * message starts in the returned descriptor (owned by m; read with
 * pread).  -1 with errno on failure. */
int spool_msg_read_fd(struct spool_msg *m, off_t *offset);
/* Start a second version of message old under old's ID (env->id is set
 * here), to be committed in its place: the caller aborts old.  NULL with
 * errno on failure. */
struct spool_msg *spool_msg_begin_replacement(struct spool *sp, struct spool_envelope *env,
					      const struct spool_msg *old);
/* A replacement of old with the envelope env (env->id is set here) and
 * old's message text copied into it: commit it and abort old.  NULL with
 * errno on failure (old is untouched). */
struct spool_msg *spool_msg_copy(struct spool *sp, struct spool_envelope *env,
				 struct spool_msg *old);
/* Throw the message away (tmp file unlinked) and free m. */
void spool_msg_abort(struct spool_msg *m);

/* Make the message durable (a journal record, or fdatasync + rename +
 * folder fsync); then cb(arg, 0) — or cb(arg, errno) after removing the
 * partial file.  m is freed either way.  Without a committer cb runs before
 * this returns; with one (spool_committer_start) it runs later on the event
 * loop, and callers must not depend on either. */
typedef void (*spool_commit_cb)(void *arg, int err);
void spool_msg_commit(struct spool_msg *m, spool_commit_cb cb, void *arg);

/* Group commit.  A thread makes messages durable off the event loop; the
 * messages whose commit was asked for while it was busy with a batch form
 * the next batch: their journal records (and those of the removals noted
 * since) are written with one pwrite and one fdatasync, then the files are
 * renamed into queue/; only then do their callbacks run, on base's loop.
 * (Messages the journal does not take: their fdatasyncs at once, the
 * renames, one folder fsync.)  A message alone is not delayed: the thread
 * starts as soon as it has one.  After a second without work, and when it
 * stops, it checkpoints the journal and cuts it back to its first size.
 * 0, or -1 with errno. */
struct event_base;
int spool_committer_start(struct spool *sp, struct event_base *base);
/* Finish every commit asked for, run the callbacks, end the thread; later
 * commits are synchronous again. */
void spool_committer_stop(struct spool *sp);

/* What the commits have cost since spool_open(). */
struct spool_stats {
	unsigned long long messages;    /* committed, successfully or not */
	unsigned long long batches;     /* durable writes they shared */
	unsigned long long accept_fsyncs; /* sync calls of those batches, before the 250s */
	unsigned long long fsyncs;      /* all sync calls: also removals, checkpoints */
};
void spool_get_stats(struct spool *sp, struct spool_stats *out);

/* Read a queued message's envelope (and its .done records).  0, or -1. */
int spool_read_envelope(struct spool *sp, const char *id, struct spool_envelope *env);
/* Open the queued message for reading, positioned at the message. */
int spool_open_message(struct spool *sp, const struct spool_envelope *env);
/* Record that recipient index i was delivered (append + fsync). */
int spool_mark_done(struct spool *sp, const char *id, size_t i);
/* Remove a fully handled message (its file and .done), durably. */
int spool_remove(struct spool *sp, const char *id);
/* The same without waiting, for several removals that share one
 * spool_sync_queue(): which waits until the commit thread has recorded
 * them in the journal (with its next batch; at once when idle), or
 * fsyncs queue/ when there is no journal. */
int spool_unlink_message(struct spool *sp, const char *id);
int spool_sync_queue(struct spool *sp);
/* IDs in queue/, oldest first.  Caller frees with spool_free_ids(). */
size_t spool_list(struct spool *sp, char ***ids);
void spool_free_ids(char **ids, size_t n);

void spool_envelope_clear(struct spool_envelope *env);
/* The one setter of the Junk mark: a milter's quarantine, the configured
 * spam header (and any later verdict) all come through here. */
void spool_envelope_mark_junk(struct spool_envelope *env);

/* xtext (RFC 3461 §4) for envelope lines; exposed for tests. */
char *spool_xtext_encode(const char *s);
char *spool_xtext_decode(const char *s); /* NULL when malformed */

/* For tests: name the recycled file name in the pool once more, as a
 * damaged pool would.  Never in the daemon. */
void spool_test_pool_give(struct spool *sp, const char *name);

#endif

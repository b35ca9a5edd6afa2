/* maildir: the Maildir format (maildir(5)):
 * the folder of an address, new unique names, and reading for
 * POP3 and IMAP: listing new/ and cur/, moving new/ to cur/ with the ":2,"
 * info, the UIDs made of unique names (RFC 1939 §7), sizes with CRLF line
 * ends, deleting, streaming a message with CRLF line ends (and POP3
 * dot-stuffing) in bounded chunks, and one exclusive lock per mailbox that
 * other posthorn processes respect too.  Writing new messages is
 * maildir_deliver's job.  maildir_path(), maildir_unique_name() and the
 * tmp/ sweep may be called from any thread; the rest runs on the event
 * loop thread. */
#ifndef POSTHORN_MAILDIR_H
#define POSTHORN_MAILDIR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>

enum {
	MAILDIR_UID_MAX = 70,      /* RFC 1939 §7: 1 to 70 octets 0x21..0x7E */
	MAILDIR_STREAM_MIN = 4,    /* smallest output buffer maildir_stream_read takes */
};

/* One message of a listing. */
struct maildir_msg {
	char *name;                /* file name inside new/ or cur/ */
	bool in_new;               /* still in new/ */
	uint64_t size;             /* octets with CRLF line ends: W=, else counted */
	long long time;            /* delivery time: the name's leading number */
	char uid[MAILDIR_UID_MAX + 1];
};

struct maildir_list {
	struct maildir_msg *msgs;  /* oldest first */
	size_t n;
	uint64_t total;            /* sum of the sizes */
};

/* A control byte (C0 or DEL): never in a Maildir name or a header value. */
bool maildir_is_ctl(unsigned char c);

/* The Maildir folder of address (caller frees): <mailboxes>/<domain>/<local>,
 * with the domain lower-cased and '%', '/', a leading '.' and control bytes
 * of the local part written as %XX.  NULL when the address cannot name a
 * folder safely (no '@', an empty local part, a domain that is empty,
 * starts with '.', or holds '/' or control bytes). */
char *maildir_path(const char *mailboxes, const char *address);

/* Create dir and its tmp/, new/, cur/ when missing (mode 0700).  0, or -1
 * with a reason in err. */
int maildir_create(const char *dir, char *err, size_t errsz);

enum maildir_scan_flag {
	MAILDIR_SCAN_MOVE_NEW = 1u << 0, /* move what is in new/ into cur/ (":2,") */
};

/* List the messages in dir's new/ and cur/ (files whose names do not start
 * with '.'), oldest first.  With MAILDIR_SCAN_MOVE_NEW the messages of new/
 * are renamed into cur/ as "NAME:2,"; one that vanished meanwhile is left
 * out.  0, or -1 with a reason in err (out is then empty). */
int maildir_scan(const char *dir, unsigned flags, struct maildir_list *out, char *err,
		 size_t errsz);
void maildir_list_free(struct maildir_list *l);

/* Call fn for every regular file of dir's new/ (in_new) or cur/ whose
 * name does not start with '.'; fn's -1 (with a reason in err) stops the
 * walk.  A missing folder has no files.  0, or -1 with a reason in err. */
typedef int (*maildir_file_fn)(void *arg, const char *name, bool in_new, char *err,
			       size_t errsz);
int maildir_each_file(const char *dir, bool in_new, maildir_file_fn fn, void *arg, char *err,
		      size_t errsz);

/* The path of a listed message (caller frees). */
char *maildir_msg_path(const char *dir, const struct maildir_msg *m);

/* Move one message from new/ to cur/ with the info ":2,"; m->name and
 * m->in_new follow.  0, or -1 with errno. */
int maildir_move_to_cur(const char *dir, struct maildir_msg *m);

/* Remove a message (a file already gone counts as removed).  0 or -1. */
int maildir_delete(const char *dir, const struct maildir_msg *m);
/* Make removals and renames durable: fsync new/ and cur/.  0 or -1. */
int maildir_sync(const char *dir);

/* ---- names --------------------------------------------------------------
 * A name is UNIQUE[,KEY=VALUE...][:INFO]: the unique part ends at ':' and
 * at the first ",X=" field (Dovecot's ",S=", ",W="), which maildir_deliver
 * appends and which may change without the message changing. */

/* A new unique part (caller frees), the one generator of the store:
 * WHEN.M<usec>P<pid>Q<count>R<random>.<host>, WHEN being when (IMAP's
 * internal date) or the time now when when <= 0; the host escaped by
 * maildir_escape_host().  Thread-safe. */
char *maildir_unique_name(long long when);
/* The unique part of the copy of spooled message id for its recipient
 * rcpt (caller frees): WHEN.D<id>R<rcpt>.<host>, the same on every
 * attempt, so that an attempt repeated after a crash can find the copy
 * an earlier one made (maildir_has_unique). */
char *maildir_spooled_name(long long arrival, const char *id, size_t rcpt);
/* Is a message with this unique part in dir's new/ or cur/?  A folder
 * that cannot be read counts as no. */
bool maildir_has_unique(const char *dir, const char *unique);
/* The host name as a unique name carries it: '/' written as \057 and ':'
 * as \072 (the Maildir convention); cut, at a whole character, to fit out
 * (outsz >= 1). */
void maildir_escape_host(const char *host, char *out, size_t outsz);

size_t maildir_unique_len(const char *name);

/* ---- tmp/ ------------------------------------------------------------------
 * maildir(5): a file that stays in tmp/ was never finished. */

/* Whether the tmp/ file name (stat st) is a leftover to remove: whatever
 * its name, one neither read nor written for 36 hours; or one that
 * maildir_unique_name() named on this host for a process that no longer
 * runs (killed while writing it), or for this PID before this process
 * started. */
bool maildir_tmp_leftover(const char *name, const struct stat *st, time_t now);
/* Remove the leftovers in dir/tmp, looking at 1,000 entries at most (a
 * missing folder has none).  The number removed. */
size_t maildir_sweep_tmp(const char *dir);
/* The UID of a name: its unique part when that is 1..70 octets of
 * 0x21..0x7E, else the SHA-256 (hex) of the unique part.  Stable for as
 * long as the file exists, whatever folder and flags it has. */
void maildir_uid(const char *name, char out[MAILDIR_UID_MAX + 1]);
/* The value of field ",KEY=<digits>" of the name (before ':'); false when
 * there is none. */
bool maildir_name_field(const char *name, char key, uint64_t *out);

/* ---- streaming ------------------------------------------------------------
 * A message read from disk in bounded chunks, with LF line ends turned into
 * CRLF (CRLF stays), a CRLF added after an unterminated last line, and, for
 * POP3, a '.' doubled at the start of a line (RFC 1939 §3). */
enum maildir_stream_flag {
	MAILDIR_STREAM_DOTSTUFF = 1u << 0,
};

struct maildir_stream;

/* Open the message at path.  body_lines < 0: the whole message; else the
 * header, the blank line and at most body_lines lines of the body (POP3
 * TOP).  NULL with errno. */
struct maildir_stream *maildir_stream_open(const char *path, unsigned flags, long body_lines);
/* The same over an open descriptor, which the stream then owns. */
struct maildir_stream *maildir_stream_fdopen(int fd, unsigned flags, long body_lines);
/* Fill out (outsz >= MAILDIR_STREAM_MIN) with the next bytes: their number,
 * 0 at the end, -1 with errno on a read error. */
ssize_t maildir_stream_read(struct maildir_stream *s, char *out, size_t outsz);
/* After the end: was the whole message sent (not cut short by body_lines)? */
bool maildir_stream_whole(const struct maildir_stream *s);
void maildir_stream_close(struct maildir_stream *s);

/* The size of the message at path as the stream (without dot-stuffing)
 * sends it.  0, or -1 with errno. */
int maildir_count_size(const char *path, uint64_t *out);

/* ---- the mailbox lock -------------------------------------------------------
 * Exclusive: one holder per mailbox, known in this process by a registry
 * (keyed by device and inode of the lock file) and across processes by
 * flock() on <dir>/posthorn.lock, which stays in place. */
enum maildir_lock_result { MAILDIR_LOCK_OK, MAILDIR_LOCK_BUSY, MAILDIR_LOCK_ERROR };

struct maildir_lock;

/* Take the lock of the Maildir dir (which must exist), without waiting.
 * On MAILDIR_LOCK_ERROR a reason is in err. */
enum maildir_lock_result maildir_lock(const char *dir, struct maildir_lock **out, char *err,
				      size_t errsz);
void maildir_unlock(struct maildir_lock *l);

#define MAILDIR_LOCK_FILE "posthorn.lock"

#endif

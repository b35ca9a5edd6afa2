/* modseq: a folder's modification sequences (RFC 7162 §3): the MODSEQ of
 * each message, the folder's HIGHESTMODSEQ and the UIDs expunged lately
 * (for VANISHED (EARLIER), RFC 7162 §3.2.10), kept in
 * <folder>/posthorn-modseq beside the UID index.  mailbox.c reads and
 * writes it only while it holds the folder's index lock, and reads it
 * afresh each time it takes the lock: several processes (and nodes on a
 * shared file system) then never give one number twice.
 *
 * The file, line by line:
 *
 *   V<uidvalidity> H<highest> F<forgotten>   the header (a rewrite writes it)
 *   <uid> <modseq> <flags>                   uid changed at modseq to flags (hex)
 *   X<uid> <modseq>                          uid expunged at modseq
 *   H<highest>                               HIGHESTMODSEQ is at least this
 *
 * Changes are appended; the last line of a UID wins.  Reading stops at the
 * first line that is not whole and valid (a torn append after a crash):
 * HIGHESTMODSEQ then skips every number that tail may have named plus its
 * length, and the next append cuts the tail off and writes an "H" line
 * first, so no number is given again.  The file is rewritten (a new file
 * renamed over it) when appends make it more than twice its content, when
 * the UID index got a new UIDVALIDITY, or to forget expunges: at most
 * MODSEQ_EXPUNGED_MAX are remembered; F is the highest MODSEQ of one
 * forgotten, and a client resynchronising from below it is told every UID
 * it may know that is not there (RFC 7162 §3.2.5.2 allows that).  A new
 * file (a folder's first, or one lost or damaged) starts at the time in
 * milliseconds, so it never gives again a number a lost one gave. */
#ifndef POSTHORN_MODSEQ_H
#define POSTHORN_MODSEQ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* The folder's MODSEQ table, beside its UID index. */
#define MODSEQ_FILE_NAME "posthorn-modseq"

enum {
	MODSEQ_EXPUNGED_MAX = 10000,     /* expunged UIDs remembered per folder */
	MODSEQ_COMPACT_MIN = 256,        /* appended lines worth a rewrite */
};

/* A message: its UID, its permanent flags (mailbox.h bits) when its
 * MODSEQ was given, and that MODSEQ. */
struct modseq_msg {
	uint32_t uid;
	uint32_t flags;
	uint64_t modseq;
};

struct modseq_gone {
	uint32_t uid;
	uint64_t modseq;
};

struct modseq_table {
	uint32_t validity;               /* of the UID index it belongs to; 0: none yet */
	uint64_t highest;                /* HIGHESTMODSEQ */
	uint64_t forgotten;              /* expunges at or below this are forgotten */
	struct modseq_msg *v;            /* ascending UIDs */
	size_t n, cap;
	struct modseq_gone *x;           /* ascending MODSEQ */
	size_t nx, xcap;
	size_t lines;                    /* lines read or appended since the header */
	off_t valid_len, size;           /* octets of the whole, valid lines; of the file */
	bool torn;                       /* a torn tail follows valid_len */
	bool rewrite;                    /* write the file whole at the next store */
	char *out;                       /* lines to append at the next store */
	size_t out_n, out_cap;
};

void modseq_free(struct modseq_table *t);

/* Parse a file's text into t (zeroed first).  true when it had a valid
 * header (lines after a torn one are ignored as above); false for text
 * without one: t is then empty. */
bool modseq_parse(const char *text, size_t len, struct modseq_table *t);

/* Read dir's file into t.  A missing or damaged file gives an empty table
 * with rewrite set (HIGHESTMODSEQ from what could be read of it, so a
 * damaged file's numbers are not given again, and at least the time in
 * milliseconds).  0, or -1 with a reason in err.  Call with the folder's
 * index lock held. */
int modseq_load(const char *dir, struct modseq_table *t, char *err, size_t errsz);

/* The folder as listed now under the index lock: cur[0..n) in ascending
 * UIDs with their flags.  A message new to t, or whose flags differ from
 * those of its MODSEQ, gets a new MODSEQ; a message of t not in cur is
 * expunged with a new MODSEQ.  cur[i].modseq is set for each.  A table of
 * another UIDVALIDITY forgets its messages and expunges (HIGHESTMODSEQ
 * goes on rising). */
void modseq_reconcile(struct modseq_table *t, uint32_t validity, struct modseq_msg *cur,
		      size_t n);

/* uid's flags changed (a STORE under the lock): its new MODSEQ; 0 when t
 * has no such message. */
uint64_t modseq_set(struct modseq_table *t, uint32_t uid, uint32_t flags);

/* The MODSEQ of uid, 0 when unknown. */
uint64_t modseq_of(const struct modseq_table *t, uint32_t uid);

/* Write what changed (appended lines, or the whole file).  0, or -1 with
 * a reason in err.  Not synced: the caller has the index's upkeep make it
 * durable. */
int modseq_store(const char *dir, struct modseq_table *t, char *err, size_t errsz);

/* Make dir's file durable (an upkeep on a worker).  0, or -1 with err. */
int modseq_flush(const char *dir, char *err, size_t errsz);

#endif

/* quota: a user's storage and message usage, kept in the Maildir++
 * `maildirsize` file at the root of the user's Maildir, so that knowing it
 * costs one small read, not a scan (RFC 9208's STORAGE and MESSAGE
 * resources).  The file is Maildir++'s: a first line with the limit
 * ("<bytes>S,<messages>C"), then lines "<bytes> <messages>" whose sums are
 * the usage; deliveries and APPENDs append a line (one write(2) with
 * O_APPEND, which lands whole), everything that removes or moves
 * messages drops the file, and a missing, damaged, long (over
 * QUOTA_FILE_MAX octets) or stale file is made again from a scan of every
 * folder.  Dovecot reads and writes the same file.  Sizes are the files'
 * octets on disk (the ",S=" of a name). */
#ifndef POSTHORN_QUOTA_H
#define POSTHORN_QUOTA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

enum {
	QUOTA_FILE_MAX = 5120,       /* Maildir++: a longer maildirsize is made again */
	QUOTA_STALE_SECONDS = 900,   /* Maildir++: an over-quota answer from a file
				      * older than this is checked by a scan */
};

#define QUOTA_FILE "maildirsize"

/* A limit: 0 in a field means no limit on that resource. */
struct quota_limit {
	uint64_t bytes;
	uint64_t messages;
};

struct quota_usage {
	uint64_t bytes;
	uint64_t messages;
};

/* Parse maildirsize text (len octets): the limit line, then the sums of
 * the "<bytes> <messages>" lines (negative values allowed; a sum below 0
 * counts as 0).  An unterminated last line (a torn write) is left out.
 * 0, or -1 when the text is not a maildirsize (no limit line, a line that
 * is not two numbers). */
int quota_parse(const char *text, size_t len, struct quota_limit *limit,
		struct quota_usage *usage);

/* Would adding bytes and messages to u go over limit? */
bool quota_exceeded(const struct quota_limit *limit, const struct quota_usage *u,
		    uint64_t bytes, uint64_t messages);

/* The usage of the Maildir at root: from its maildirsize, or from a scan
 * of root and every folder in it (new/ and cur/), written back as a new
 * maildirsize with limit in its first line.  A missing root is empty.
 * 0, or -1 with a reason in err. */
int quota_usage_get(const char *root, const struct quota_limit *limit, struct quota_usage *out,
		    char *err, size_t errsz);
/* The same without writing anything (for `posthorn user quota`, which may
 * run as another user than the daemon's). */
int quota_usage_peek(const char *root, struct quota_usage *out, char *err, size_t errsz);
/* The same, always from a scan. */
int quota_recalc(const char *root, const struct quota_limit *limit, struct quota_usage *out,
		 char *err, size_t errsz);

/* May bytes and messages be added to root's Maildir?  1 yes, 0 no (over
 * limit), -1 with a reason in err.  An over-quota answer from a stale
 * maildirsize is checked again by a scan. */
int quota_check(const char *root, const struct quota_limit *limit, uint64_t bytes,
		uint64_t messages, char *err, size_t errsz);

/* Count a change (positive: added) in root's maildirsize, if there is one
 * (a missing one will be made by the next reading).  0, or -1 with a
 * reason in err. */
int quota_add(const char *root, int64_t bytes, int64_t messages, char *err, size_t errsz);
/* Drop root's maildirsize after removals, so that the next reading
 * counts again.  0, or -1 with a reason in err. */
int quota_invalidate(const char *root, char *err, size_t errsz);

/* ---- the limits of every user ---------------------------------------------
 * An immutable table that a thread other than the loop's may read (the
 * delivery worker): the default and each user's own limit. */
struct quota_table;

/* A table with limit dflt for everyone. */
struct quota_table *quota_table_new(const struct quota_limit *dflt);
/* User address (any case) has a limit of their own. */
void quota_table_add(struct quota_table *t, const char *address, const struct quota_limit *l);
/* Done adding: the table is sorted for lookups. */
void quota_table_seal(struct quota_table *t);
/* The limit of address. */
void quota_table_lookup(const struct quota_table *t, const char *address,
			struct quota_limit *out);
void quota_table_free(struct quota_table *t);

#endif

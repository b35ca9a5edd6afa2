/* journal: the spool's write-ahead journal, <spool>/journal.
 *
 * A new queue file is durable only after two commits of the file system's
 * own journal: one for its data (fdatasync), one for its name (the rename
 * into queue/ and the folder's fsync); each is a cache flush and more, and
 * they happen one after the other.  A record written over blocks of this
 * file that are already allocated and written changes no metadata, so its
 * fdatasync is the data write and one cache flush.  The spool therefore
 * acknowledges a batch once its records are durable here, renames the
 * queue files into queue/ without waiting for them, and lets a checkpoint
 * (syncfs) make those durable later, in bulk.  At start-up the records
 * after the last checkpoint are written back into queue/, since a crash may
 * have lost or torn their queue files.
 *
 * Layout: two header slots (a checkpoint writes the older one: a torn
 * write leaves the other whole), then records.  Every header and record
 * carries a SHA-256 of its bytes.  A record is live when it starts where
 * the checkpoint says, belongs to the epoch the header names (a random
 * number drawn at every open, so that nothing written before an open can
 * pass as live after it) and is numbered one after the record before it.
 * The file is JOURNAL_MIN of written zeros at first and grows by more
 * zeros up to a bound (between JOURNAL_MIN and JOURNAL_MAX, given at open),
 * and only while the file system keeps at least as much free space as the
 * journal then takes; a batch that does not fit gets a checkpoint first,
 * and writing starts over at the beginning.  With no record live (at open,
 * and when the caller asks after a checkpoint) the file is cut back to
 * JOURNAL_MIN, so the space a burst took is given back.  One thread at a
 * time; integers are little-endian. */
#ifndef POSTHORN_JOURNAL_H
#define POSTHORN_JOURNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

enum {
	JOURNAL_RECORD_MAX = 256 * 1024, /* larger messages are not journaled */
	JOURNAL_BATCH_MAX = 4 * 1024 * 1024,
	JOURNAL_MIN = 1024 * 1024,      /* the size it starts at and is cut back to */
	JOURNAL_MAX = 32 * 1024 * 1024, /* the largest bound */
};

enum journal_type { JOURNAL_MESSAGE = 1, JOURNAL_DONE = 2 };

/* At open, for each live record in order: a message to put back into the
 * queue (data: the queue file's bytes), or a message that was removed after
 * it was journaled (data NULL).  0; JOURNAL_RESTORE_LATER when there is no
 * room to put the message back now (the journal then keeps every record
 * for the next open); or -1 with errno to fail the open. */
enum { JOURNAL_RESTORE_LATER = 1 };
typedef int (*journal_restore_fn)(void *arg, enum journal_type type, const char *id,
				  const unsigned char *data, size_t len);

/* Open or create the journal, replay it through restore, then start a new
 * epoch with an empty journal, cut back to JOURNAL_MIN.  max bounds the
 * file's size (taken between JOURNAL_MIN and JOURNAL_MAX).  A journal whose
 * headers are both damaged is reported and started afresh.  NULL with errno
 * when it cannot be read or replayed.  When a restore said
 * JOURNAL_RESTORE_LATER, nothing is written and the journal is returned
 * unusable (journal_usable: ENOSPC), its records live for the next open.
 * When the new epoch's header cannot be written yet (a full disk), the
 * first commit writes it before its records. */
struct journal *journal_open(const char *path, off_t max, journal_restore_fn restore, void *arg);
void journal_close(struct journal *j);

/* Queue a message record: len bytes of data, or when data is NULL the
 * first len bytes of fd.  0; 1 when it is too large for the journal (over
 * JOURNAL_RECORD_MAX, or the batch would pass JOURNAL_BATCH_MAX or what
 * the bound holds: the caller makes it durable another way); -1 with errno
 * (EINVAL: an empty ID, or one of JOURNAL_ID_SIZE or more). */
int journal_add_message(struct journal *j, const char *id, const void *data, int fd,
			size_t len);
/* Queue a record saying that id is gone from the queue (a batch should
 * hold at most JOURNAL_BATCH_MAX bytes of records: one is about 90). */
void journal_add_done(struct journal *j, const char *id);
/* Write the queued records and make them durable (a checkpoint first when
 * they do not fit).  0, or -1 with errno: the records are dropped, and when
 * they could not be written (rather than no room made for them: ENOSPC
 * when the disk has none, EFBIG when they are more than the bound holds)
 * the journal is unusable.  *syncs counts the fdatasync and syncfs calls. */
int journal_commit(struct journal *j, unsigned *syncs);
/* Make every file on the journal's file system durable (syncfs), then
 * record that no record is live any more.  0, or -1 with errno. */
int journal_checkpoint(struct journal *j, unsigned *syncs);
/* With no record live, cut the file back to JOURNAL_MIN: the space that a
 * burst of records took goes back to the file system.  0, or -1 with
 * errno. */
int journal_shrink(struct journal *j);
/* The file's size now (bytes of written zeros and records). */
off_t journal_size(const struct journal *j);
/* Live records: a checkpoint would have work to do. */
bool journal_dirty(const struct journal *j);
/* 0, or the errno that made the journal unusable. */
int journal_usable(const struct journal *j);

#endif

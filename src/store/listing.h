/* listing: the snapshot of a folder's listing, <folder>/posthorn-listing,
 * so that the first SELECT after a start reads one file instead of every
 * name in new/ and cur/ (and every message's size).  The snapshot is a
 * cache and never an authority: it stands for the folder only while the
 * stamp it was written with (the times of new/ and cur/, the identity of
 * the UID index and of posthorn-modseq) is the folder's stamp now; a
 * damaged, foreign-version, oversized or stale file is ignored and the
 * folder is listed instead.
 *
 * The file (integers little-endian):
 *
 *   header    "PHLSTSNP", version (u32), count (u32), UIDVALIDITY (u32),
 *             UIDNEXT (u32), HIGHESTMODSEQ (u64), then the stamp: new/ and
 *             cur/ mtimes, the index's inode and ctime, posthorn-modseq's
 *             inode, length and ctime (times as seconds and nanoseconds,
 *             u64 each): LISTING_HEADER octets in all
 *   count x   UID (u32), RFC822.SIZE (u64), internal date (i64), MODSEQ
 *             (u64), name length (u8, 1 .. 255), the file name (in cur/)
 *   trailer   a 64-bit checksum of everything before it
 *
 * Messages are in ascending UID order; flags are not stored (they are in
 * the names).  A file is written under a temporary name in the folder's
 * tmp/, synced and renamed over the old one, on a worker thread. */
#ifndef POSTHORN_LISTING_H
#define POSTHORN_LISTING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define LISTING_FILE_NAME "posthorn-listing"

enum {
	LISTING_VERSION = 1,
	LISTING_HEADER = 128,                   /* octets of the header */
	LISTING_TRAILER = 8,                    /* the checksum */
	LISTING_NAME_MAX = 255,                 /* octets of a file name (NAME_MAX) */
	LISTING_RECORD_MIN = 4 + 8 + 8 + 8 + 1 + 1,
	LISTING_MESSAGES_MAX = 2000000,         /* = MAILBOX_MESSAGES_MAX */
	LISTING_FILE_MAX = 64 * 1024 * 1024,    /* octets of a snapshot, written or read */
};

struct listing_time {
	int64_t sec;
	uint64_t nsec;
};

/* What the snapshot stands for: equal to the folder's now, or useless. */
struct listing_stamp {
	struct listing_time new_m, cur_m, index_c, modseq_c;
	uint64_t index_ino, modseq_ino, modseq_size;
};

struct listing_msg {
	const char *name;                       /* in the listing's names */
	uint64_t size, modseq;
	int64_t date;
	uint32_t uid;
};

struct listing_head {
	struct listing_stamp stamp;
	uint32_t validity, uidnext;
	uint64_t highest;
	uint32_t count;
};

/* A snapshot read: v[0 .. n-1] by ascending UID, each name a
 * NUL-terminated string in names (one block, names_len octets). */
struct listing {
	struct listing_head h;
	struct listing_msg *v;
	size_t n;
	char *names;
	size_t names_len;
};

void listing_free(struct listing *l);
bool listing_stamp_eq(const struct listing_stamp *a, const struct listing_stamp *b);

/* A snapshot being written in memory: listing_out_begin with the header
 * (count: the messages to come), one listing_out_add per message in
 * ascending UID order, then listing_write (any thread) or
 * listing_out_seal.  add is false (and the snapshot void) for a name
 * that cannot be stored or a snapshot over LISTING_FILE_MAX. */
struct listing_out {
	unsigned char *p;
	size_t n, cap;
	uint32_t added, count;
	bool failed;
};
void listing_out_begin(struct listing_out *o, const struct listing_head *h);
bool listing_out_add(struct listing_out *o, const struct listing_msg *m);
/* Complete it with its checksum: false when it is void or not every
 * message announced was added. */
bool listing_out_seal(struct listing_out *o);
void listing_out_free(struct listing_out *o);

/* Seal o and put it in place as dir's snapshot: written into dir/tmp/,
 * synced, renamed over dir/posthorn-listing.  0, or -1 with a reason in
 * err (nothing left behind). */
int listing_write(const char *dir, struct listing_out *o, char *err, size_t errsz);

enum listing_result {
	LISTING_OK,
	LISTING_MISSING,                        /* no snapshot */
	LISTING_STALE,                          /* of another stamp */
	LISTING_DAMAGED,                        /* wrong magic, version, size, checksum or content */
	LISTING_IO,                             /* cannot be read: err says why */
};

/* Parse a whole snapshot file's bytes: OK with *out filled (caller frees),
 * else DAMAGED and *out empty.  Checks the magic, version, size bounds and
 * checksum, and that every record lies inside the file, UIDs ascend below
 * UIDNEXT, MODSEQs are at most HIGHESTMODSEQ and names hold no NUL, '/'
 * or control octet. */
enum listing_result listing_decode(const void *buf, size_t len, struct listing *out);

/* dir's snapshot when it was written with the stamp want: its header is
 * read first, so a stale file costs one short read. */
enum listing_result listing_read(const char *dir, const struct listing_stamp *want,
				 struct listing *out, char *err, size_t errsz);

#endif

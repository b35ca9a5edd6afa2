/* journal: the spool's write-ahead journal (see journal.h). */
#define _GNU_SOURCE /* syncfs */
#include "queue/journal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/rand.h>

#include "lib/log.h"
#include "lib/util.h"

enum {
	JOURNAL_SLOT = 4096,            /* one header slot; two of them */
	JOURNAL_DATA_START = 2 * JOURNAL_SLOT,
	JOURNAL_GROW = 1024 * 1024,     /* zeros written at a time */
	JOURNAL_ID_SIZE = 24,           /* an ID and its NUL: SPOOL_ID_SIZE */
	JOURNAL_DIGEST = 32,            /* SHA-256 */
	/* a record: magic, type, epoch, seq, length, ID, digest, then data */
	JR_MAGIC = 0, JR_TYPE = 4, JR_EPOCH = 8, JR_SEQ = 16, JR_LEN = 24, JR_ID = 28,
	JR_DIGEST = JR_ID + JOURNAL_ID_SIZE + 4,
	JOURNAL_REC_HEAD = JR_DIGEST + JOURNAL_DIGEST,
	/* a header: magic, version, counter, epoch, seq, start, digest */
	JH_MAGIC = 0, JH_VERSION = 4, JH_COUNTER = 8, JH_EPOCH = 16, JH_SEQ = 24, JH_START = 32,
	JH_DIGEST = 40,
	JOURNAL_HEAD = JH_DIGEST + JOURNAL_DIGEST,
};

static const char journal_rec_magic[4] = {'P', 'H', 'J', 'R'};
static const char journal_head_magic[4] = {'P', 'H', 'J', 'H'};

struct journal {
	int fd;
	off_t size;             /* bytes allocated and written (zeros at first) */
	off_t max;              /* the bound on size */
	off_t pos;              /* where the next record goes */
	uint64_t epoch;
	uint64_t seq;           /* number of the last record queued */
	uint64_t written;       /* number of the last record written */
	uint64_t counter;       /* of the last header written */
	bool live;              /* records written since the last checkpoint */
	bool head_pending;      /* the epoch's header not written yet */
	bool failed;            /* a write or sync failed: unusable */
	int error;              /* errno of that failure */
	unsigned char *buf;     /* records queued for the next commit */
	size_t len, cap;
};

/* ---- encoding ----------------------------------------------------------- */

static void put_u32(unsigned char *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

static void put_u64(unsigned char *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

static uint32_t get_u32(const unsigned char *p)
{
	uint32_t v = 0;
	for (int i = 3; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

static uint64_t get_u64(const unsigned char *p)
{
	uint64_t v = 0;
	for (int i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

/* SHA-256 of a and then b (b may be empty). */
static void journal_digest(unsigned char out[JOURNAL_DIGEST], const void *a, size_t alen,
			   const void *b, size_t blen)
{
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	unsigned int n = 0;
	if (!ctx || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1 ||
	    EVP_DigestUpdate(ctx, a, alen) != 1 || (blen && EVP_DigestUpdate(ctx, b, blen) != 1) ||
	    EVP_DigestFinal_ex(ctx, out, &n) != 1 || n != JOURNAL_DIGEST)
		fatal("journal: SHA-256 failed");
	EVP_MD_CTX_free(ctx);
}

static int pwrite_all(int fd, const void *buf, size_t len, off_t off)
{
	const unsigned char *p = buf;
	while (len > 0) {
		ssize_t w = pwrite(fd, p, len, off);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			if (w == 0)
				errno = EIO;
			return -1;
		}
		p += w;
		len -= (size_t)w;
		off += w;
	}
	return 0;
}

/* 1 when all len bytes were read, 0 at a short read (end of file), -1. */
static int pread_all(int fd, void *buf, size_t len, off_t off)
{
	unsigned char *p = buf;
	while (len > 0) {
		ssize_t r = pread(fd, p, len, off);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -1;
		if (r == 0)
			return 0;
		p += r;
		len -= (size_t)r;
		off += r;
	}
	return 1;
}

/* ---- headers ------------------------------------------------------------ */

struct journal_head {
	uint64_t counter, epoch, seq, start;
};

/* Slot i, when whole and valid. */
static bool journal_read_head(int fd, int slot, off_t size, struct journal_head *h)
{
	unsigned char b[JOURNAL_HEAD], d[JOURNAL_DIGEST];
	if (pread_all(fd, b, sizeof b, (off_t)slot * JOURNAL_SLOT) != 1 ||
	    memcmp(b + JH_MAGIC, journal_head_magic, 4) != 0 || get_u32(b + JH_VERSION) != 1)
		return false;
	journal_digest(d, b, JH_DIGEST, NULL, 0);
	if (memcmp(d, b + JH_DIGEST, sizeof d) != 0)
		return false;
	h->counter = get_u64(b + JH_COUNTER);
	h->epoch = get_u64(b + JH_EPOCH);
	h->seq = get_u64(b + JH_SEQ);
	h->start = get_u64(b + JH_START);
	return h->start >= JOURNAL_DATA_START && h->start <= (uint64_t)size;
}

/* The newer slot written, durable: records from pos on, numbered after
 * seq, are the live ones. */
static int journal_write_head(struct journal *j, unsigned *syncs)
{
	unsigned char b[JOURNAL_HEAD];
	memcpy(b + JH_MAGIC, journal_head_magic, 4);
	put_u32(b + JH_VERSION, 1);
	put_u64(b + JH_COUNTER, j->counter + 1);
	put_u64(b + JH_EPOCH, j->epoch);
	put_u64(b + JH_SEQ, j->written);
	put_u64(b + JH_START, (uint64_t)j->pos);
	journal_digest(b + JH_DIGEST, b, JH_DIGEST, NULL, 0);
	off_t off = (off_t)((j->counter + 1) % 2) * JOURNAL_SLOT;
	(*syncs)++;
	if (pwrite_all(j->fd, b, sizeof b, off) < 0 || fdatasync(j->fd) < 0)
		return -1;
	j->counter++;
	return 0;
}

/* ---- growing and shrinking ---------------------------------------------- */

/* Growing to `to` leaves the file system at least as much free space as
 * the journal then takes: the journal never crowds out the messages it
 * is there to make durable. */
static bool journal_room_to_grow(const struct journal *j, off_t to)
{
	struct statvfs vfs;
	if (fstatvfs(j->fd, &vfs) < 0)
		return true; /* the writes will tell */
	unsigned long long avail = (unsigned long long)vfs.f_bavail * vfs.f_frsize;
	unsigned long long need = (unsigned long long)(to - j->size);
	return avail >= need + (unsigned long long)to;
}

/* A growth that failed: its zeros go, so that a full disk gets back what
 * they took. */
static void journal_undo_grow(struct journal *j)
{
	int saved = errno;
	if (ftruncate(j->fd, j->size) < 0)
		log_warn("event=journal-error reason=\"cannot cut back a failed growth: %s\"",
			 strerror(errno));
	errno = saved;
}

/* Zeros written (not a hole, not fallocate: blocks that are allocated and
 * written are what lets a record's fdatasync skip the metadata) up to at
 * least want (never past the bound), and made durable.  ENOSPC when the
 * file system has no room for them, or would keep too little
 * (journal_room_to_grow). */
static int journal_grow(struct journal *j, off_t want, unsigned *syncs)
{
	static const unsigned char zeros[64 * 1024];
	off_t to = (want + JOURNAL_GROW - 1) / JOURNAL_GROW * JOURNAL_GROW;
	if (to > j->max)
		to = j->max;
	if (to <= j->size)
		return 0;
	if (!journal_room_to_grow(j, to)) {
		errno = ENOSPC;
		return -1;
	}
	for (off_t at = j->size; at < to;) {
		size_t n = (size_t)(to - at) < sizeof zeros ? (size_t)(to - at) : sizeof zeros;
		if (pwrite_all(j->fd, zeros, n, at) < 0) {
			journal_undo_grow(j);
			return -1;
		}
		at += (off_t)n;
	}
	(*syncs)++;
	if (fdatasync(j->fd) < 0) {
		journal_undo_grow(j);
		return -1;
	}
	j->size = to;
	return 0;
}

int journal_shrink(struct journal *j)
{
	if (j->failed || j->live || j->head_pending || j->len > 0 || j->size <= JOURNAL_MIN)
		return 0;
	/* nothing live: the next record goes at the start (a checkpoint or
	 * the open put pos there), far below the cut */
	if (ftruncate(j->fd, JOURNAL_MIN) < 0)
		return -1;
	j->size = JOURNAL_MIN;
	j->pos = JOURNAL_DATA_START;
	return 0;
}

off_t journal_size(const struct journal *j)
{
	return j->size;
}

/* ---- replay ------------------------------------------------------------- */

struct journal_rec {
	enum journal_type type;
	char id[JOURNAL_ID_SIZE];
	unsigned char *data;
	size_t len;
};

/* The record at pos when it is the live record numbered seq: 1; 0 when
 * it is not (the end of the live records); -1 on a read error. */
static int journal_read_rec(int fd, off_t pos, off_t size, uint64_t epoch, uint64_t seq,
			    struct journal_rec *r, unsigned char *data)
{
	unsigned char h[JOURNAL_REC_HEAD], d[JOURNAL_DIGEST];
	if (pos + JOURNAL_REC_HEAD > size)
		return 0;
	int got = pread_all(fd, h, sizeof h, pos);
	if (got <= 0)
		return got;
	uint32_t type = get_u32(h + JR_TYPE);
	uint32_t len = get_u32(h + JR_LEN);
	if (memcmp(h + JR_MAGIC, journal_rec_magic, 4) != 0 || get_u64(h + JR_EPOCH) != epoch ||
	    get_u64(h + JR_SEQ) != seq || (type != JOURNAL_MESSAGE && type != JOURNAL_DONE) ||
	    len > JOURNAL_RECORD_MAX || (type == JOURNAL_DONE && len != 0) ||
	    pos + JOURNAL_REC_HEAD + (off_t)len > size || h[JR_ID + JOURNAL_ID_SIZE - 1] != '\0' ||
	    h[JR_ID] == '\0')
		return 0;
	got = len ? pread_all(fd, data, len, pos + JOURNAL_REC_HEAD) : 1;
	if (got <= 0)
		return got;
	journal_digest(d, h, JR_DIGEST, data, len);
	if (memcmp(d, h + JR_DIGEST, sizeof d) != 0)
		return 0;
	r->type = (enum journal_type)type;
	memcpy(r->id, h + JR_ID, JOURNAL_ID_SIZE);
	r->data = data;
	r->len = len;
	return 1;
}

/* Every live record through restore; the number of records (*later of
 * them put off by their restore), or -1. */
static long journal_replay(int fd, off_t size, const struct journal_head *h,
			   journal_restore_fn restore, void *arg, size_t *later)
{
	unsigned char *data = xmalloc(JOURNAL_RECORD_MAX);
	off_t pos = (off_t)h->start;
	uint64_t seq = h->seq + 1;
	long n = 0;
	*later = 0;
	for (;;) {
		struct journal_rec r;
		int got = journal_read_rec(fd, pos, size, h->epoch, seq, &r, data);
		int restored = got > 0 ? restore(arg, r.type, r.id,
						 r.type == JOURNAL_MESSAGE ? r.data : NULL, r.len)
				       : 0;
		if (got < 0 || restored < 0) {
			n = -1;
			break;
		}
		if (got == 0)
			break;
		if (restored == JOURNAL_RESTORE_LATER)
			(*later)++;
		pos += JOURNAL_REC_HEAD + (off_t)r.len;
		seq++;
		n++;
	}
	int saved = errno;
	free(data);
	errno = saved;
	return n;
}

/* The newer valid header, or false when neither is valid. */
static bool journal_pick_head(int fd, off_t size, struct journal_head *out)
{
	struct journal_head a, b;
	bool va = journal_read_head(fd, 0, size, &a);
	bool vb = journal_read_head(fd, 1, size, &b);
	if (va && (!vb || a.counter > b.counter))
		*out = a;
	else if (vb)
		*out = b;
	return va || vb;
}

static uint64_t journal_new_epoch(void)
{
	unsigned char r[8];
	if (RAND_bytes(r, sizeof r) != 1)
		fatal("journal: no random bytes for an epoch");
	return get_u64(r);
}

/* ---- opening and closing ------------------------------------------------ */

static off_t journal_bound(off_t max)
{
	if (max < JOURNAL_MIN)
		return JOURNAL_MIN;
	if (max > JOURNAL_MAX)
		return JOURNAL_MAX;
	return max / JOURNAL_GROW * JOURNAL_GROW;
}

/* The epoch's header, when it is still to be written: the file first
 * grown to JOURNAL_MIN (the header slots are inside), then the header.
 * Until this works the journal takes no record, and the records of the
 * epoch before stay live. */
static int journal_write_pending_head(struct journal *j, unsigned *syncs)
{
	if (!j->head_pending)
		return 0;
	if (j->size < JOURNAL_MIN && journal_grow(j, JOURNAL_MIN, syncs) < 0)
		return -1;
	if (journal_write_head(j, syncs) < 0)
		return -1;
	j->head_pending = false;
	return 0;
}

/* The live records replayed: a new epoch, empty, cut back to JOURNAL_MIN
 * (what an earlier run's burst took goes back to the disk).  Without room
 * for the header (a full disk) the first commit writes it. */
static void journal_start_epoch(struct journal *j, const char *path)
{
	unsigned syncs = 0;
	j->epoch = journal_new_epoch();
	j->pos = JOURNAL_DATA_START;
	j->head_pending = true;
	if (journal_write_pending_head(j, &syncs) < 0) {
		log_warn("event=journal-error file=%s reason=\"cannot start a new epoch: %s; the "
			 "first commit tries again\"", path, strerror(errno));
		return;
	}
	if (journal_shrink(j) < 0)
		log_warn("event=journal-error file=%s reason=\"cannot cut the journal back: %s\"",
			 path, strerror(errno));
}

struct journal *journal_open(const char *path, off_t max, journal_restore_fn restore, void *arg)
{
	int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	struct stat st;
	if (fd < 0)
		return NULL;
	struct journal *j = xcalloc(1, sizeof *j);
	j->fd = fd;
	j->max = journal_bound(max);
	if (fstat(fd, &st) < 0)
		goto fail;
	if (!S_ISREG(st.st_mode)) {
		errno = EINVAL;
		goto fail;
	}
	/* an earlier run may have had a larger bound: read all it wrote */
	j->size = st.st_size > JOURNAL_MAX ? JOURNAL_MAX : st.st_size;
	struct journal_head h;
	if (journal_pick_head(fd, j->size, &h)) {
		size_t later;
		long n = journal_replay(fd, j->size, &h, restore, arg, &later);
		if (n < 0)
			goto fail;
		if (n > 0)
			log_info("event=journal-replay file=%s records=%ld", path, n);
		j->counter = h.counter;
		j->seq = j->written = h.seq + (uint64_t)n;
		if (later > 0) { /* those records must stay live: nothing is written */
			j->failed = true;
			j->error = ENOSPC;
			return j;
		}
	} else if (j->size > 0) {
		log_warn("event=journal-error file=%s reason=\"no valid header: started afresh\"",
			 path);
	}
	journal_start_epoch(j, path);
	return j;
fail:;
	int saved = errno;
	close(fd);
	free(j);
	errno = saved;
	return NULL;
}

void journal_close(struct journal *j)
{
	if (!j)
		return;
	close(j->fd);
	free(j->buf);
	free(j);
}

/* ---- writing ------------------------------------------------------------ */

static unsigned char *journal_reserve(struct journal *j, size_t n)
{
	if (j->cap - j->len < n) {
		size_t cap = j->cap ? j->cap : 64 * 1024;
		while (cap - j->len < n)
			cap *= 2;
		j->buf = xrealloc(j->buf, cap);
		j->cap = cap;
	}
	unsigned char *p = j->buf + j->len;
	j->len += n;
	return p;
}

/* A record's head at p, data already after it: numbered, digested. */
static void journal_seal(struct journal *j, unsigned char *p, enum journal_type type,
			 const char *id, size_t len)
{
	memset(p, 0, JOURNAL_REC_HEAD);
	memcpy(p + JR_MAGIC, journal_rec_magic, 4);
	put_u32(p + JR_TYPE, (uint32_t)type);
	put_u64(p + JR_EPOCH, j->epoch);
	put_u64(p + JR_SEQ, ++j->seq);
	put_u32(p + JR_LEN, (uint32_t)len);
	size_t idlen = strnlen(id, JOURNAL_ID_SIZE - 1);
	memcpy(p + JR_ID, id, idlen);
	journal_digest(p + JR_DIGEST, p, JR_DIGEST, p + JOURNAL_REC_HEAD, len);
}

int journal_add_message(struct journal *j, const char *id, const void *data, int fd, size_t len)
{
	if (j->failed) {
		errno = j->error;
		return -1;
	}
	if (!*id || strlen(id) >= JOURNAL_ID_SIZE) {
		errno = EINVAL;
		return -1;
	}
	size_t batch_max = (size_t)(j->max - JOURNAL_DATA_START);
	if (batch_max > JOURNAL_BATCH_MAX)
		batch_max = JOURNAL_BATCH_MAX;
	if (len > JOURNAL_RECORD_MAX || j->len + JOURNAL_REC_HEAD + len > batch_max)
		return 1;
	size_t at = j->len;
	unsigned char *p = journal_reserve(j, JOURNAL_REC_HEAD + len);
	int got = 1;
	if (data)
		memcpy(p + JOURNAL_REC_HEAD, data, len);
	else
		got = pread_all(fd, p + JOURNAL_REC_HEAD, len, 0);
	if (got <= 0) {
		if (got == 0)
			errno = EIO; /* the file is shorter than it was written */
		j->len = at;
		return -1;
	}
	journal_seal(j, p, JOURNAL_MESSAGE, id, len);
	return 0;
}

void journal_add_done(struct journal *j, const char *id)
{
	if (j->failed || !*id || strlen(id) >= JOURNAL_ID_SIZE)
		return; /* an ID no record of a message can have */
	journal_seal(j, journal_reserve(j, JOURNAL_REC_HEAD), JOURNAL_DONE, id, 0);
}

/* Room for the queued records at pos: grown (within the bound, while the
 * disk has room), or a checkpoint and back to the start.  0 or -1. */
static int journal_make_room(struct journal *j, unsigned *syncs)
{
	off_t end = j->pos + (off_t)j->len;
	if (end <= j->size)
		return 0;
	bool refused = false;
	if (end <= j->max) {
		if (journal_grow(j, end, syncs) == 0)
			return 0;
		refused = true;
	}
	off_t first = JOURNAL_DATA_START + (off_t)j->len;
	if (first > j->max) { /* more than the whole journal holds */
		errno = EFBIG;
		return -1;
	}
	if (refused && first > j->size)
		return -1; /* starting over would need the growth just refused (errno set) */
	/* the queued records keep their numbers: the checkpoint names the
	 * last one written, so they are the live ones after it */
	if (j->live && journal_checkpoint(j, syncs) < 0)
		return -1;
	j->pos = JOURNAL_DATA_START;
	return first <= j->size ? 0 : journal_grow(j, first, syncs);
}

int journal_commit(struct journal *j, unsigned *syncs)
{
	if (j->failed) {
		errno = j->error;
		return -1;
	}
	if (j->len == 0)
		return 0;
	if (journal_write_pending_head(j, syncs) < 0 || journal_make_room(j, syncs) < 0) {
		/* nothing written: still usable */
		int saved = errno;
		j->len = 0;
		j->seq = j->written;
		errno = saved;
		return -1;
	}
	(*syncs)++;
	if (pwrite_all(j->fd, j->buf, j->len, j->pos) < 0 || fdatasync(j->fd) < 0) {
		j->failed = true;
		j->error = errno;
		return -1;
	}
	j->pos += (off_t)j->len;
	j->len = 0;
	j->written = j->seq;
	j->live = true;
	return 0;
}

int journal_checkpoint(struct journal *j, unsigned *syncs)
{
	if (j->failed) {
		errno = j->error;
		return -1;
	}
	if (!j->live)
		return 0;
	(*syncs)++;
	if (syncfs(j->fd) < 0)
		return -1;
	off_t pos = j->pos;
	j->pos = JOURNAL_DATA_START;
	if (journal_write_head(j, syncs) < 0) {
		j->pos = pos;
		j->failed = true;
		j->error = errno;
		return -1;
	}
	j->live = false;
	return 0;
}

bool journal_dirty(const struct journal *j)
{
	return j->live;
}

int journal_usable(const struct journal *j)
{
	return j->failed ? j->error : 0;
}

/* test_journal: the spool's write-ahead journal (src/journal.c) on its own —
 * creation, replay of committed message and done records after a crash (a
 * close without a checkpoint), the new epoch that every open starts,
 * checkpoints, records queued but never committed, torn or corrupted
 * records, damaged header slots (the older slot is used; both damaged: a
 * fresh start), the size limits of a record and of a batch, the wrap at
 * JOURNAL_MAX with its automatic checkpoint, a restore callback that fails
 * the open, and the file never growing past JOURNAL_MAX — also with a batch
 * of done records larger than the room left after a wrap (grown into), or
 * than the whole journal (refused: the commit fails, nothing is lost); the
 * bound given at open (the file stays within it, a batch takes what it
 * holds), the cut back to JOURNAL_MIN at open and after a checkpoint, a
 * growth the disk refuses (undone, the journal still usable), a header it
 * refuses (written by the first commit that can), and a restore that has
 * no room (every record kept for the next open).
 *
 * White-box facts used here, read from journal.c: two header slots of 4096
 * bytes at offsets 0 and 4096, each starting with the magic "PHJH", a
 * 32-bit version and a 64-bit little-endian counter at byte 8; a header is
 * written to slot (counter + 1) % 2 with the counter increased, so the first
 * header of a fresh file (counter 1) goes to slot 1 and the next (counter 2)
 * to slot 0.  Records start at offset 8192; a record's head holds its ID and
 * is followed directly by its payload. */
#define _GNU_SOURCE /* nftw, memmem */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "queue/journal.h"
#include "lib/log.h"
#include "lib/util.h"

enum {
	SLOT_SIZE = 4096,       /* one header slot (journal.c: JOURNAL_SLOT) */
	DATA_START = 2 * SLOT_SIZE,
};

struct fixture {
	char dir[64];
	char *path;     /* <dir>/journal */
	char *payload;  /* <dir>/payload: the file journal_add_message reads */
};

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static int setup(void **state)
{
	struct fixture *f = xcalloc(1, sizeof *f);
	memcpy(f->dir, "/tmp/posthorn-journal-XXXXXX", sizeof "/tmp/posthorn-journal-XXXXXX");
	if (!mkdtemp(f->dir)) {
		free(f);
		return -1;
	}
	f->path = xasprintf("%s/journal", f->dir);
	f->payload = xasprintf("%s/payload", f->dir);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	int r = nftw(f->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	free(f->path);
	free(f->payload);
	free(f);
	return r;
}

/* ---- a restore callback that records what it is given -------------------- */

struct replayed {
	enum journal_type type;
	char id[64];
	unsigned char *data; /* a copy; NULL when the callback got NULL */
	size_t len;
};

struct recorder {
	struct replayed *recs;
	size_t n, cap;
	size_t fail_at;      /* the call (1-based) that fails; 0: none */
	int fail_errno;
	size_t later_at;     /* the call (1-based) that has no room: RESTORE_LATER */
};

static int record_fn(void *arg, enum journal_type type, const char *id,
		     const unsigned char *data, size_t len)
{
	struct recorder *rec = arg;
	struct replayed *r = xgrow(&rec->recs, &rec->n, &rec->cap, sizeof *r);
	r->type = type;
	assert_non_null(id);
	assert_true(strlen(id) < sizeof r->id);
	strcpy(r->id, id);
	r->len = len;
	if (data) {
		r->data = xmalloc(len ? len : 1);
		memcpy(r->data, data, len);
	}
	if (rec->fail_at && rec->n == rec->fail_at) {
		errno = rec->fail_errno;
		return -1;
	}
	return rec->later_at && rec->n == rec->later_at ? JOURNAL_RESTORE_LATER : 0;
}

static void recorder_clear(struct recorder *rec)
{
	for (size_t i = 0; i < rec->n; i++)
		free(rec->recs[i].data);
	free(rec->recs);
	memset(rec, 0, sizeof *rec);
}

static void expect_message(const struct recorder *rec, size_t i, const char *id,
			   const unsigned char *data, size_t len)
{
	assert_true(i < rec->n);
	const struct replayed *r = &rec->recs[i];
	assert_int_equal(r->type, JOURNAL_MESSAGE);
	assert_string_equal(r->id, id);
	assert_int_equal(r->len, len);
	assert_non_null(r->data);
	assert_memory_equal(r->data, data, len);
}

static void expect_done(const struct recorder *rec, size_t i, const char *id)
{
	assert_true(i < rec->n);
	const struct replayed *r = &rec->recs[i];
	assert_int_equal(r->type, JOURNAL_DONE);
	assert_string_equal(r->id, id);
	assert_null(r->data);
	assert_int_equal(r->len, 0);
}

/* ---- helpers ------------------------------------------------------------- */

/* Open the journal, recording what is replayed into rec (cleared first). */
static struct journal *jopen(const struct fixture *f, struct recorder *rec)
{
	recorder_clear(rec);
	struct journal *j = journal_open(f->path, JOURNAL_MAX, record_fn, rec);
	assert_non_null(j);
	assert_int_equal(journal_usable(j), 0);
	assert_false(journal_dirty(j));
	return j;
}

/* Open the journal again: exactly one message replays, this one; closed. */
static void replay_expect_one(const struct fixture *f, struct recorder *rec, const char *id,
			      const unsigned char *data, size_t len)
{
	struct journal *j = jopen(f, rec);
	assert_int_equal(rec->n, 1);
	expect_message(rec, 0, id, data, len);
	journal_close(j);
}

/* Open, expect nothing replayed, close. */
static void expect_nothing_replayed(const struct fixture *f)
{
	struct recorder rec = {0};
	struct journal *j = jopen(f, &rec);
	assert_int_equal(rec.n, 0);
	journal_close(j);
	recorder_clear(&rec);
}

/* Bytes that differ from one seed to the next (xorshift). */
static unsigned char *make_payload(size_t len, uint64_t seed)
{
	unsigned char *p = xmalloc(len ? len : 1);
	uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
	for (size_t i = 0; i < len; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		p[i] = (unsigned char)x;
	}
	return p;
}

/* journal_add_message with data as the first len bytes of a file (which
 * holds extra bytes after them, that must not be journaled). */
static int add_message(const struct fixture *f, struct journal *j, const char *id,
		       const unsigned char *data, size_t len)
{
	int fd = open(f->payload, O_RDWR | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write_all(fd, data, len), 0);
	assert_int_equal(write_all(fd, "TRAILER", 7), 0);
	int r = journal_add_message(j, id, NULL, fd, len);
	int saved = errno;
	assert_int_equal(close(fd), 0);
	errno = saved;
	return r;
}

static void commit(struct journal *j)
{
	unsigned syncs = 0;
	assert_int_equal(journal_commit(j, &syncs), 0);
	assert_true(syncs >= 1);
	assert_true(journal_dirty(j));
	assert_int_equal(journal_usable(j), 0);
}

static void checkpoint(struct journal *j)
{
	unsigned syncs = 0;
	assert_int_equal(journal_checkpoint(j, &syncs), 0);
	assert_true(syncs >= 2); /* syncfs, then the header's fdatasync */
	assert_false(journal_dirty(j));
}

static off_t file_size(const char *path)
{
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	return st.st_size;
}

static unsigned char *read_whole(const char *path, size_t *len)
{
	int fd = open(path, O_RDONLY);
	assert_true(fd >= 0);
	struct stat st;
	assert_int_equal(fstat(fd, &st), 0);
	unsigned char *buf = xmalloc((size_t)st.st_size + 1);
	size_t got = 0;
	while (got < (size_t)st.st_size) {
		ssize_t r = pread(fd, buf + got, (size_t)st.st_size - got, (off_t)got);
		assert_true(r > 0);
		got += (size_t)r;
	}
	close(fd);
	*len = got;
	return buf;
}

/* Offset of the only occurrence of needle in the file. */
static off_t find_unique(const char *path, const void *needle, size_t nlen)
{
	size_t len;
	unsigned char *buf = read_whole(path, &len);
	unsigned char *hit = memmem(buf, len, needle, nlen);
	assert_non_null(hit);
	off_t off = (off_t)(hit - buf);
	assert_null(memmem(hit + 1, len - (size_t)off - 1, needle, nlen));
	free(buf);
	return off;
}

static void flip_byte(const char *path, off_t off)
{
	int fd = open(path, O_RDWR);
	assert_true(fd >= 0);
	unsigned char c;
	assert_int_equal(pread(fd, &c, 1, off), 1);
	c ^= 0x5a;
	assert_int_equal(pwrite(fd, &c, 1, off), 1);
	assert_int_equal(close(fd), 0);
}

static void write_at(const char *path, const void *data, size_t len, off_t off)
{
	int fd = open(path, O_RDWR);
	assert_true(fd >= 0);
	assert_int_equal(pwrite(fd, data, len, off), (ssize_t)len);
	assert_int_equal(close(fd), 0);
}

/* The counter of header slot i, or 0 when it does not start with the
 * header magic. */
static uint64_t slot_counter(const char *path, int slot)
{
	unsigned char b[16];
	int fd = open(path, O_RDONLY);
	assert_true(fd >= 0);
	assert_int_equal(pread(fd, b, sizeof b, (off_t)slot * SLOT_SIZE), (ssize_t)sizeof b);
	close(fd);
	if (memcmp(b, "PHJH", 4) != 0)
		return 0;
	uint64_t v = 0;
	for (int i = 7; i >= 0; i--)
		v = v << 8 | b[8 + i];
	return v;
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Run fn(f) with stderr going to a file and warnings logged; returns what
 * was written. */
static char *capture_warnings(struct fixture *f, void (*fn)(struct fixture *))
{
	char *path = xasprintf("%s/stderr.txt", f->dir);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	int saved = dup(STDERR_FILENO);
	assert_true(saved >= 0);
	assert_true(dup2(fd, STDERR_FILENO) >= 0);
	close(fd);
	log_init(false, LOG_WARN);
	fn(f);
	log_init(false, LOG_ERR);
	assert_true(dup2(saved, STDERR_FILENO) >= 0);
	close(saved);
	size_t len;
	char *text = (char *)read_whole(path, &len);
	text[len] = '\0';
	unlink(path);
	free(path);
	return text;
}

/* ---- 1. creation --------------------------------------------------------- */

/* A fresh journal: a private regular file of written zeros (not a hole)
 * with its first header (counter 1) in slot 1; nothing to replay, now or
 * at the next open. */
static void test_open_creates_file(void **state)
{
	struct fixture *f = *state;
	struct recorder rec = {0};
	struct journal *j = jopen(f, &rec);
	assert_int_equal(rec.n, 0);
	journal_close(j);

	struct stat st;
	assert_int_equal(lstat(f->path, &st), 0);
	assert_true(S_ISREG(st.st_mode));
	assert_int_equal(st.st_mode & 07777, 0600);
	assert_true(st.st_size >= DATA_START);
	assert_true(st.st_size <= JOURNAL_MAX);
	assert_true((off_t)st.st_blocks * 512 >= st.st_size);
	assert_int_equal(slot_counter(f->path, 0), 0);
	assert_int_equal(slot_counter(f->path, 1), 1);

	expect_nothing_replayed(f);
	/* that open wrote the next header into the other slot */
	assert_int_equal(slot_counter(f->path, 0), 2);
	assert_int_equal(slot_counter(f->path, 1), 1);
	expect_nothing_replayed(f);
	recorder_clear(&rec);
}

/* A symbolic link is not followed. */
static void test_open_refuses_symlink(void **state)
{
	struct fixture *f = *state;
	char *target = xasprintf("%s/target", f->dir);
	assert_int_equal(symlink(target, f->path), 0);
	struct recorder rec = {0};
	errno = 0;
	assert_null(journal_open(f->path, JOURNAL_MAX, record_fn, &rec));
	assert_int_equal(errno, ELOOP);
	assert_int_equal(access(target, F_OK), -1);
	free(target);
}

/* ---- 2. replay after a crash --------------------------------------------- */

static void test_crash_replays_messages(void **state)
{
	struct fixture *f = *state;
	static const size_t sizes[3] = {1, 1000, 200 * 1024};
	static const char *const ids[3] = {"0000000000000000000A1", "0000000000000000000B2",
					   "0000000000000000000C3"};
	unsigned char *data[3];
	struct recorder rec = {0};
	struct journal *j = jopen(f, &rec);
	for (int i = 0; i < 3; i++) {
		data[i] = make_payload(sizes[i], (uint64_t)i + 1);
		if (i == 1) /* from memory (no file: fd -1), as the spool gives a small one */
			assert_int_equal(journal_add_message(j, ids[i], data[i], -1, sizes[i]), 0);
		else
			assert_int_equal(add_message(f, j, ids[i], data[i], sizes[i]), 0);
		commit(j);
	}
	journal_close(j); /* no checkpoint: a crash */

	j = jopen(f, &rec);
	assert_int_equal(rec.n, 3);
	for (int i = 0; i < 3; i++)
		expect_message(&rec, (size_t)i, ids[i], data[i], sizes[i]);
	journal_close(j);

	/* that replay started a new epoch: the records are not live again */
	expect_nothing_replayed(f);
	for (int i = 0; i < 3; i++)
		free(data[i]);
	recorder_clear(&rec);
}

/* Several records in one commit; and records of a later epoch replay alone,
 * not with those of the epoch before. */
static void test_crash_replays_only_the_last_epoch(void **state)
{
	struct fixture *f = *state;
	struct recorder rec = {0};
	unsigned char *a = make_payload(5000, 11), *b = make_payload(70, 12), *c = make_payload(3, 13);
	struct journal *j = jopen(f, &rec);
	assert_int_equal(add_message(f, j, "AAAAAAAAAAAAAAAAAAAAA", a, 5000), 0);
	assert_int_equal(add_message(f, j, "BBBBBBBBBBBBBBBBBBBBB", b, 70), 0);
	commit(j);
	journal_close(j);

	j = jopen(f, &rec);
	assert_int_equal(rec.n, 2);
	expect_message(&rec, 0, "AAAAAAAAAAAAAAAAAAAAA", a, 5000);
	expect_message(&rec, 1, "BBBBBBBBBBBBBBBBBBBBB", b, 70);
	assert_int_equal(add_message(f, j, "CCCCCCCCCCCCCCCCCCCCC", c, 3), 0);
	commit(j);
	journal_close(j);

	replay_expect_one(f, &rec, "CCCCCCCCCCCCCCCCCCCCC", c, 3);
	expect_nothing_replayed(f);
	free(a);
	free(b);
	free(c);
	recorder_clear(&rec);
}

/* An empty message and the longest ID (23 characters) round-trip. */
static void test_empty_message_and_long_id(void **state)
{
	struct fixture *f = *state;
	struct recorder rec = {0};
	static const char id23[] = "ABCDEFGHIJKLMNOPQRSTUVW";
	assert_int_equal(strlen(id23), 23);
	struct journal *j = jopen(f, &rec);
	assert_int_equal(add_message(f, j, id23, (const unsigned char *)"", 0), 0);
	assert_int_equal(add_message(f, j, "x", (const unsigned char *)"abc", 3), 0);
	commit(j);
	journal_close(j);

	j = jopen(f, &rec);
	assert_int_equal(rec.n, 2);
	expect_message(&rec, 0, id23, (const unsigned char *)"", 0);
	expect_message(&rec, 1, "x", (const unsigned char *)"abc", 3);
	journal_close(j);
	recorder_clear(&rec);
}

/* ---- 3. done records ----------------------------------------------------- */

static void test_done_records_replayed(void **state)
{
	struct fixture *f = *state;
	struct recorder rec = {0};
	unsigned char *a = make_payload(300, 21), *b = make_payload(4000, 22);
	struct journal *j = jopen(f, &rec);
	assert_int_equal(add_message(f, j, "000000000000000000AAA", a, 300), 0);
	commit(j);
	assert_int_equal(add_message(f, j, "000000000000000000BBB", b, 4000), 0);
	journal_add_done(j, "000000000000000000AAA");
	commit(j);
	journal_add_done(j, "000000000000000000ZZZ"); /* alone in its commit */
	commit(j);
	journal_close(j);

	j = jopen(f, &rec);
	assert_int_equal(rec.n, 4);
	expect_message(&rec, 0, "000000000000000000AAA", a, 300);
	expect_message(&rec, 1, "000000000000000000BBB", b, 4000);
	expect_done(&rec, 2, "000000000000000000AAA");
	expect_done(&rec, 3, "000000000000000000ZZZ");
	journal_close(j);
	expect_nothing_replayed(f);
	free(a);
	free(b);
	recorder_clear(&rec);
}

/* ---- 4. checkpoints ------------------------------------------------------ */

static void test_checkpoint_makes_records_dead(void **state)
{
	struct fixture *f = *state;
	struct recorder rec = {0};
	unsigned char *a = make_payload(1234, 31);
	struct journal *j = jopen(f, &rec);
	assert_false(journal_dirty(j));
	/* a checkpoint with nothing live has nothing to do */
	unsigned syncs = 0;
	assert_int_equal(journal_checkpoint(j, &syncs), 0);
	assert_int_equal(syncs, 0);
	/* a commit with nothing queued neither */
	assert_int_equal(journal_commit(j, &syncs), 0);
	assert_int_equal(syncs, 0);
	assert_false(journal_dirty(j));

	assert_int_equal(add_message(f, j, "0000000000000000000A1", a, 1234), 0);
	assert_false(journal_dirty(j)); /* queued is not written */
	commit(j);
	assert_true(journal_dirty(j));
	journal_add_done(j, "0000000000000000000A1");
	commit(j);
	assert_true(journal_dirty(j));
	checkpoint(j);
	assert_false(journal_dirty(j));
	journal_close(j);
	expect_nothing_replayed(f);

	/* after a checkpoint, newer records are live again, and only they */
	j = jopen(f, &rec);
	assert_int_equal(add_message(f, j, "0000000000000000000B1", a, 10), 0);
	commit(j);
	checkpoint(j);
	assert_int_equal(add_message(f, j, "0000000000000000000B2", a, 20), 0);
	commit(j);
	assert_true(journal_dirty(j));
	journal_close(j);
	replay_expect_one(f, &rec, "0000000000000000000B2", a, 20);
	free(a);
	recorder_clear(&rec);
}

/* ---- 5. queued, never committed ------------------------------------------ */

static void test_uncommitted_records_not_replayed(void **state)
{
	struct fixture *f = *state;
	struct recorder rec = {0};
	unsigned char *a = make_payload(500, 41), *b = make_payload(600, 42);
	struct journal *j = jopen(f, &rec);
	assert_int_equal(add_message(f, j, "0000000000000000000A1", a, 500), 0);
	journal_add_done(j, "0000000000000000000Q1");
	journal_close(j);
	expect_nothing_replayed(f);

	/* committed ones replay, the queue after them does not */
	j = jopen(f, &rec);
	assert_int_equal(add_message(f, j, "0000000000000000000A2", a, 500), 0);
	commit(j);
	assert_int_equal(add_message(f, j, "0000000000000000000B2", b, 600), 0);
	journal_add_done(j, "0000000000000000000A2");
	journal_close(j);
	replay_expect_one(f, &rec, "0000000000000000000A2", a, 500);
	free(a);
	free(b);
	recorder_clear(&rec);
}

/* A source file shorter than the length asked for: -1 with EIO, nothing
 * queued, and the journal keeps working. */
static void test_short_source_file(void **state)
{
	struct fixture *f = *state;
	struct recorder rec = {0};
	struct journal *j = jopen(f, &rec);
	int fd = open(f->payload, O_RDWR | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write_all(fd, "short", 5), 0);
	errno = 0;
	assert_int_equal(journal_add_message(j, "0000000000000000000S1", NULL, fd, 100), -1);
	assert_int_equal(errno, EIO);
	close(fd);
	assert_int_equal(journal_usable(j), 0);
	assert_int_equal(add_message(f, j, "0000000000000000000S2", (const unsigned char *)"ok", 2),
			 0);
	commit(j);
	journal_close(j);
	replay_expect_one(f, &rec, "0000000000000000000S2", (const unsigned char *)"ok", 2);
	recorder_clear(&rec);
}

/* ---- 6. torn or corrupted records ---------------------------------------- */

static const char payload_a[] = "payload of message A: alpha alpha alpha alpha";
static const char payload_b[] = "payload of message B: bravo bravo bravo bravo";
static const char payload_c[] = "payload of message C: charlie charlie charlie";

/* A, B and C, each in its own commit, then a crash. */
static void commit_abc(struct fixture *f)
{
	struct recorder rec = {0};
	struct journal *j = jopen(f, &rec);
	assert_int_equal(add_message(f, j, "0000000000000000000IDA",
				     (const unsigned char *)payload_a, sizeof payload_a - 1),
			 0);
	commit(j);
	assert_int_equal(add_message(f, j, "0000000000000000000IDB",
				     (const unsigned char *)payload_b, sizeof payload_b - 1),
			 0);
	commit(j);
	assert_int_equal(add_message(f, j, "0000000000000000000IDC",
				     (const unsigned char *)payload_c, sizeof payload_c - 1),
			 0);
	commit(j);
	journal_close(j);
	recorder_clear(&rec);
}

static void test_corrupt_payload_stops_replay(void **state)
{
	struct fixture *f = *state;
	commit_abc(f);
	off_t b = find_unique(f->path, payload_b, sizeof payload_b - 1);
	assert_true(b > DATA_START);
	flip_byte(f->path, b + 10);

	struct recorder rec = {0};
	struct journal *j = jopen(f, &rec);
	assert_int_equal(rec.n, 1); /* A; B is torn, C comes after it */
	expect_message(&rec, 0, "0000000000000000000IDA", (const unsigned char *)payload_a,
		       sizeof payload_a - 1);
	journal_close(j);
	expect_nothing_replayed(f);
	recorder_clear(&rec);
}

static void test_corrupt_first_record_head(void **state)
{
	struct fixture *f = *state;
	commit_abc(f);
	/* the ID is in the record's head, nowhere else */
	off_t id = find_unique(f->path, "0000000000000000000IDA", 22);
	off_t a = find_unique(f->path, payload_a, sizeof payload_a - 1);
	assert_true(id >= DATA_START && id < a);
	flip_byte(f->path, id + 21);
	expect_nothing_replayed(f);
}

/* The last byte of the last record torn: the records before it replay. */
static void test_torn_last_record(void **state)
{
	struct fixture *f = *state;
	commit_abc(f);
	off_t c = find_unique(f->path, payload_c, sizeof payload_c - 1);
	flip_byte(f->path, c + (off_t)sizeof payload_c - 2);

	struct recorder rec = {0};
	struct journal *j = jopen(f, &rec);
	assert_int_equal(rec.n, 2);
	expect_message(&rec, 0, "0000000000000000000IDA", (const unsigned char *)payload_a,
		       sizeof payload_a - 1);
	expect_message(&rec, 1, "0000000000000000000IDB", (const unsigned char *)payload_b,
		       sizeof payload_b - 1);
	journal_close(j);
	recorder_clear(&rec);
}

/* ---- 7. header slots ----------------------------------------------------- */

/* A checkpoint writes the older slot.  When that write is torn, the other
 * slot (the header written at open, counter 1 in slot 1) is whole and
 * still names A and B as live: they replay. */
static void test_torn_checkpoint_header_uses_older_slot(void **state)
{
	struct fixture *f = *state;
	struct recorder rec = {0};
	struct journal *j = jopen(f, &rec);
	assert_int_equal(add_message(f, j, "0000000000000000000IDA",
				     (const unsigned char *)payload_a, sizeof payload_a - 1),
			 0);
	commit(j);
	assert_int_equal(add_message(f, j, "0000000000000000000IDB",
				     (const unsigned char *)payload_b, sizeof payload_b - 1),
			 0);
	commit(j);
	checkpoint(j);
	journal_close(j);
	/* the header at open: counter 1, slot 1; the checkpoint's: counter 2, slot 0 */
	assert_int_equal(slot_counter(f->path, 1), 1);
	assert_int_equal(slot_counter(f->path, 0), 2);

	flip_byte(f->path, 0 * SLOT_SIZE + 30); /* inside the newest header */
	j = jopen(f, &rec);
	assert_int_equal(rec.n, 2);
	expect_message(&rec, 0, "0000000000000000000IDA", (const unsigned char *)payload_a,
		       sizeof payload_a - 1);
	expect_message(&rec, 1, "0000000000000000000IDB", (const unsigned char *)payload_b,
		       sizeof payload_b - 1);
	journal_close(j);
	/* that open wrote counter 2 over the damaged slot 0 */
	assert_int_equal(slot_counter(f->path, 0), 2);
	expect_nothing_replayed(f);
	recorder_clear(&rec);
}

/* The newest header is the one an open wrote (counter 2 in slot 0, epoch
 * E2), and A was committed in E2.  With slot 0 damaged, slot 1 is used: it
 * names epoch E1 (the first open), whose records were replayed by the
 * second open.  A belongs to E2, so by design nothing is live: a header
 * written at open is durable before any record of its epoch is written,
 * so a torn header of that kind never comes with records of its epoch. */
static void test_damaged_open_header_uses_older_slot(void **state)
{
	struct fixture *f = *state;
	struct recorder rec = {0};
	unsigned char *x = make_payload(100, 71);
	struct journal *j = jopen(f, &rec); /* E1: counter 1, slot 1 */
	assert_int_equal(add_message(f, j, "0000000000000000000E1X", x, 100), 0);
	commit(j);
	journal_close(j);
	j = jopen(f, &rec); /* replays X; E2: counter 2, slot 0 */
	assert_int_equal(rec.n, 1);
	assert_int_equal(add_message(f, j, "0000000000000000000IDA",
				     (const unsigned char *)payload_a, sizeof payload_a - 1),
			 0);
	commit(j);
	journal_close(j);
	assert_int_equal(slot_counter(f->path, 0), 2);
	assert_int_equal(slot_counter(f->path, 1), 1);

	flip_byte(f->path, 0 * SLOT_SIZE + 20);
	j = jopen(f, &rec);
	/* neither X (overwritten by A) nor A (epoch E2, not the E1 that
	 * slot 1 names) */
	assert_int_equal(rec.n, 0);
	/* slot 1 was used: the new header (counter 2) went to slot 0 */
	assert_int_equal(slot_counter(f->path, 0), 2);
	assert_int_equal(slot_counter(f->path, 1), 1);
	/* and the journal works on */
	assert_int_equal(add_message(f, j, "0000000000000000000IDB",
				     (const unsigned char *)payload_b, sizeof payload_b - 1),
			 0);
	commit(j);
	journal_close(j);
	replay_expect_one(f, &rec, "0000000000000000000IDB", (const unsigned char *)payload_b,
			  sizeof payload_b - 1);
	free(x);
	recorder_clear(&rec);
}

/* Damaging the older slot changes nothing: the newest one is used. */
static void test_damaged_older_slot_is_ignored(void **state)
{
	struct fixture *f = *state;
	expect_nothing_replayed(f); /* counter 1 in slot 1 */
	struct recorder rec = {0};
	struct journal *j = jopen(f, &rec); /* counter 2 in slot 0 */
	assert_int_equal(add_message(f, j, "0000000000000000000IDA",
				     (const unsigned char *)payload_a, sizeof payload_a - 1),
			 0);
	commit(j);
	journal_close(j);
	flip_byte(f->path, 1 * SLOT_SIZE + 9); /* the counter of slot 1 */
	replay_expect_one(f, &rec, "0000000000000000000IDA", (const unsigned char *)payload_a,
			  sizeof payload_a - 1);
	recorder_clear(&rec);
}

static void open_with_garbage_headers(struct fixture *f)
{
	struct recorder rec = {0};
	struct journal *j = jopen(f, &rec);
	assert_int_equal(rec.n, 0);
	journal_close(j);
	recorder_clear(&rec);
}

/* Both slots garbage: the open succeeds, warns, replays nothing and starts
 * afresh with a journal that works. */
static void test_both_headers_damaged(void **state)
{
	struct fixture *f = *state;
	commit_abc(f);
	unsigned char junk[SLOT_SIZE];
	memset(junk, 0xa5, sizeof junk);
	write_at(f->path, junk, sizeof junk, 0);
	write_at(f->path, junk, sizeof junk, SLOT_SIZE);

	char *text = capture_warnings(f, open_with_garbage_headers);
	assert_non_null(strstr(text, "event=journal-error"));
	assert_non_null(strstr(text, "no valid header"));
	assert_non_null(strstr(text, f->path));
	free(text);
	assert_true(slot_counter(f->path, 0) != 0 || slot_counter(f->path, 1) != 0);

	struct recorder rec = {0};
	struct journal *j = jopen(f, &rec);
	assert_int_equal(add_message(f, j, "0000000000000000000IDB",
				     (const unsigned char *)payload_b, sizeof payload_b - 1),
			 0);
	commit(j);
	journal_close(j);
	replay_expect_one(f, &rec, "0000000000000000000IDB", (const unsigned char *)payload_b,
			  sizeof payload_b - 1);
	recorder_clear(&rec);
}

/* A truncated file (shorter than the header slots): an empty journal. */
static void test_truncated_file(void **state)
{
	struct fixture *f = *state;
	commit_abc(f);
	assert_int_equal(truncate(f->path, 100), 0);
	expect_nothing_replayed(f);
	assert_true(file_size(f->path) > DATA_START);
}

/* ---- 8. size limits ------------------------------------------------------ */

static void test_too_large_message(void **state)
{
	struct fixture *f = *state;
	struct recorder rec = {0};
	unsigned char *big = make_payload(JOURNAL_RECORD_MAX + 1, 81);
	struct journal *j = jopen(f, &rec);
	assert_int_equal(add_message(f, j, "0000000000000000000BIG", big, JOURNAL_RECORD_MAX + 1), 1);
	unsigned syncs = 0;
	assert_int_equal(journal_commit(j, &syncs), 0); /* nothing queued */
	assert_int_equal(syncs, 0);
	assert_false(journal_dirty(j));
	/* the largest that fits is taken */
	assert_int_equal(add_message(f, j, "0000000000000000000MAX", big, JOURNAL_RECORD_MAX), 0);
	commit(j);
	journal_close(j);
	replay_expect_one(f, &rec, "0000000000000000000MAX", big, JOURNAL_RECORD_MAX);
	free(big);
	recorder_clear(&rec);
}

/* A batch takes at most JOURNAL_BATCH_MAX bytes: the record that would
 * pass it gets 1, and those before it are committed and replayed. */
static void test_batch_limit(void **state)
{
	struct fixture *f = *state;
	struct recorder rec = {0};
	unsigned char *p = make_payload(JOURNAL_RECORD_MAX, 82);
	struct journal *j = jopen(f, &rec);
	int taken = 0;
	char id[32];
	for (;;) {
		snprintf(id, sizeof id, "00000000000000000B%03d", taken);
		p[0] = (unsigned char)taken;
		int r = add_message(f, j, id, p, JOURNAL_RECORD_MAX);
		if (r == 1)
			break;
		assert_int_equal(r, 0);
		taken++;
		assert_true(taken <= JOURNAL_BATCH_MAX / JOURNAL_RECORD_MAX);
	}
	/* a few bytes of head per record: one record fewer than 4 MiB / 256 KiB */
	assert_int_equal(taken, JOURNAL_BATCH_MAX / JOURNAL_RECORD_MAX - 1);
	commit(j);
	journal_close(j);
	j = jopen(f, &rec);
	assert_int_equal(rec.n, (size_t)taken);
	for (int i = 0; i < taken; i++) {
		snprintf(id, sizeof id, "00000000000000000B%03d", i);
		p[0] = (unsigned char)i;
		expect_message(&rec, (size_t)i, id, p, JOURNAL_RECORD_MAX);
	}
	journal_close(j);
	free(p);
	recorder_clear(&rec);
}

/* ---- 9 and 11. the wrap -------------------------------------------------- */

enum { WRAP_PAYLOAD = 200 * 1024, WRAP_EXTRA = 5 };

/* One 200 KiB record per commit, one more than fits in JOURNAL_MAX (the
 * journal must checkpoint by itself and start over), then WRAP_EXTRA more;
 * a crash; only the records after that automatic checkpoint replay, in
 * order, and they are the last ones committed.  The file never grows past
 * JOURNAL_MAX. */
static void test_wrap_checkpoints_by_itself(void **state)
{
	struct fixture *f = *state;
	double t0 = now();
	struct recorder rec = {0};
	struct journal *j = jopen(f, &rec);
	unsigned char *p = xmalloc(WRAP_PAYLOAD);
	/* the number of 200 KiB records that fit after the headers; the next
	 * one must make the journal checkpoint and start over */
	size_t fit = 0;
	{
		/* a record's head is below 1 KiB: count with the real size by
		 * seeing where the first record's payload lands */
		unsigned char *q = make_payload(64, 90);
		assert_int_equal(add_message(f, j, "0000000000000000PROBE", q, 64), 0);
		commit(j);
		off_t at = find_unique(f->path, q, 64);
		size_t head = (size_t)(at - DATA_START);
		assert_true(head > 0 && head < 1024);
		checkpoint(j); /* the probe is dead; writing starts over */
		fit = (size_t)(JOURNAL_MAX - DATA_START) / (head + WRAP_PAYLOAD);
		free(q);
	}
	size_t total = fit + 1 + WRAP_EXTRA;
	char id[32];
	for (size_t i = 0; i < total; i++) {
		snprintf(id, sizeof id, "0000000000000000W%04zu", i);
		memset(p, (int)(i & 0xff), WRAP_PAYLOAD);
		memcpy(p, id, strlen(id)); /* unique bytes per record */
		assert_int_equal(add_message(f, j, id, p, WRAP_PAYLOAD), 0);
		commit(j);
		assert_true(file_size(f->path) <= JOURNAL_MAX);
	}
	journal_close(j);
	assert_true(file_size(f->path) <= JOURNAL_MAX);

	j = jopen(f, &rec);
	/* the checkpoint came before record number fit (0-based): it and the
	 * WRAP_EXTRA after it are live */
	assert_int_equal(rec.n, 1 + WRAP_EXTRA);
	for (size_t k = 0; k < rec.n; k++) {
		size_t i = fit + k;
		snprintf(id, sizeof id, "0000000000000000W%04zu", i);
		memset(p, (int)(i & 0xff), WRAP_PAYLOAD);
		memcpy(p, id, strlen(id));
		expect_message(&rec, k, id, p, WRAP_PAYLOAD);
	}
	snprintf(id, sizeof id, "0000000000000000W%04zu", total - 1);
	assert_string_equal(rec.recs[rec.n - 1].id, id);
	journal_close(j);
	expect_nothing_replayed(f);
	assert_true(file_size(f->path) <= JOURNAL_MAX);
	free(p);
	recorder_clear(&rec);
	double secs = now() - t0;
	print_message("wrap: %zu commits in %.2f s\n", total, secs);
	assert_true(secs < 20.0);
}

/* Wrapping with batches: a whole batch that does not fit moves to the
 * start after the checkpoint, keeping its order. */
static void test_wrap_with_batches(void **state)
{
	struct fixture *f = *state;
	struct recorder rec = {0};
	struct journal *j = jopen(f, &rec);
	enum { PER = 15, LEN = JOURNAL_RECORD_MAX, BATCHES = 10 };
	unsigned char *p = xmalloc(LEN);
	char id[48];
	for (int b = 0; b < BATCHES; b++) {
		for (int r = 0; r < PER; r++) {
			snprintf(id, sizeof id, "00000000000000000%02d%02d", b, r);
			memset(p, b * PER + r, LEN);
			assert_int_equal(add_message(f, j, id, p, LEN), 0);
		}
		if (b % 2 == 1)
			journal_add_done(j, "00000000000000000DONE");
		commit(j);
		assert_true(file_size(f->path) <= JOURNAL_MAX);
	}
	journal_close(j);
	/* 15 records of 256 KiB are a little under 4 MiB: 8 batches fit in
	 * 32 MiB, the 9th checkpoints; batches 8 and 9 are live */
	j = jopen(f, &rec);
	assert_int_equal(rec.n, 2 * PER + 1);
	size_t k = 0;
	for (int b = 8; b < BATCHES; b++) {
		for (int r = 0; r < PER; r++) {
			snprintf(id, sizeof id, "00000000000000000%02d%02d", b, r);
			memset(p, b * PER + r, LEN);
			expect_message(&rec, k++, id, p, LEN);
		}
		if (b % 2 == 1)
			expect_done(&rec, k++, "00000000000000000DONE");
	}
	assert_int_equal(k, rec.n);
	journal_close(j);
	free(p);
	recorder_clear(&rec);
}

/* A batch of done records larger than the whole journal (journal_add_done
 * has no batch limit): the file must stay within JOURNAL_MAX, and a commit
 * that reports success must have made every record replayable. */
static void test_huge_done_batch(void **state)
{
	struct fixture *f = *state;
	struct recorder rec = {0};
	struct journal *j = jopen(f, &rec);
	/* a done record is its head alone, 88 bytes (journal.c:
	 * JOURNAL_REC_HEAD): N of them are about 36 MB, more than 32 MiB */
	enum { N = JOURNAL_MAX / 80 };
	char id[48];
	for (int i = 0; i < N; i++) {
		snprintf(id, sizeof id, "000000000000000%06d", i);
		journal_add_done(j, id);
	}
	unsigned syncs = 0;
	int r = journal_commit(j, &syncs);
	journal_close(j);
	off_t size = file_size(f->path);
	j = jopen(f, &rec);
	journal_close(j);
	size_t n = rec.n;
	bool in_order = true;
	for (size_t i = 0; i < n && in_order; i++) {
		snprintf(id, sizeof id, "000000000000000%06zu", i);
		in_order = rec.recs[i].type == JOURNAL_DONE && strcmp(rec.recs[i].id, id) == 0;
	}
	recorder_clear(&rec);
	print_message("huge done batch: %d records, commit %d, file %lld bytes (max %d), "
		      "%zu replayed\n", (int)N, r, (long long)size, JOURNAL_MAX, n);
	assert_true(in_order);
	assert_true(size <= JOURNAL_MAX);
	/* committed: all replay; refused: none */
	assert_int_equal(n, r == 0 ? (size_t)N : 0);
}

/* The same flaw within JOURNAL_MAX: the journal is past 19 MiB (the file
 * grown to 20 MiB) when a batch of 250000 done records (22 MB) comes; it
 * does not fit after 19 MiB, so the journal checkpoints and writes it from
 * the start, past the 20 MiB written so far.  One more small record then
 * fits before JOURNAL_MAX and grows the file from the 20 MiB it believes
 * it has.  Every committed record must replay. */
static void test_huge_done_batch_after_wrap(void **state)
{
	struct fixture *f = *state;
	struct recorder rec = {0};
	struct journal *j = jopen(f, &rec);
	enum { PER = 15, LEN = JOURNAL_RECORD_MAX, BATCHES = 5, N = 250000 };
	unsigned char *p = make_payload(LEN, 91);
	char id[48];
	for (int b = 0; b < BATCHES; b++) {
		for (int i = 0; i < PER; i++) {
			snprintf(id, sizeof id, "0000000000000000M%02d%02d", b, i);
			assert_int_equal(add_message(f, j, id, p, LEN), 0);
		}
		commit(j);
	}
	for (int i = 0; i < N; i++) {
		snprintf(id, sizeof id, "000000000000000%06d", i);
		journal_add_done(j, id);
	}
	commit(j);
	assert_int_equal(add_message(f, j, "0000000000000000LAST1", p, 10), 0);
	commit(j);
	journal_close(j);
	off_t size = file_size(f->path);
	j = jopen(f, &rec);
	journal_close(j);
	size_t n = rec.n;
	bool last_ok = n == N + 1 && rec.recs[N].type == JOURNAL_MESSAGE &&
		       strcmp(rec.recs[N].id, "0000000000000000LAST1") == 0 &&
		       rec.recs[N].len == 10 && memcmp(rec.recs[N].data, p, 10) == 0;
	recorder_clear(&rec);
	free(p);
	print_message("huge done batch after wrap: %d + 1 records committed, file %lld bytes, "
		      "%zu replayed\n", (int)N, (long long)size, n);
	assert_true(size <= JOURNAL_MAX);
	assert_int_equal(n, N + 1);
	assert_true(last_ok);
}

/* ---- 10. a failing restore ----------------------------------------------- */

static void test_restore_failure_fails_open(void **state)
{
	struct fixture *f = *state;
	commit_abc(f);
	struct recorder rec = {.fail_at = 2, .fail_errno = ENOSPC};
	errno = 0;
	assert_null(journal_open(f->path, JOURNAL_MAX, record_fn, &rec));
	assert_int_equal(errno, ENOSPC);
	assert_int_equal(rec.n, 2); /* A, then B failed; C never offered */
	assert_string_equal(rec.recs[1].id, "0000000000000000000IDB");
	recorder_clear(&rec);

	/* the failed open changed nothing: everything is still live */
	rec.fail_at = 1;
	rec.fail_errno = EACCES;
	errno = 0;
	assert_null(journal_open(f->path, JOURNAL_MAX, record_fn, &rec));
	assert_int_equal(errno, EACCES);
	recorder_clear(&rec);

	struct journal *j = jopen(f, &rec);
	assert_int_equal(rec.n, 3);
	expect_message(&rec, 0, "0000000000000000000IDA", (const unsigned char *)payload_a,
		       sizeof payload_a - 1);
	expect_message(&rec, 1, "0000000000000000000IDB", (const unsigned char *)payload_b,
		       sizeof payload_b - 1);
	expect_message(&rec, 2, "0000000000000000000IDC", (const unsigned char *)payload_c,
		       sizeof payload_c - 1);
	journal_close(j);
	recorder_clear(&rec);
}

/* ---- 12. the bound, and giving the space back ---------------------------- */

enum { BOUND = 2 * 1024 * 1024, BIG = 200 * 1024 };

static struct journal *jopen_bound(const struct fixture *f, off_t max, struct recorder *rec)
{
	recorder_clear(rec);
	struct journal *j = journal_open(f->path, max, record_fn, rec);
	assert_non_null(j);
	assert_int_equal(journal_usable(j), 0);
	return j;
}

/* n records of BIG bytes, one commit each, IDs "...Rnnnn" from first on;
 * the file never passes max. */
static void commit_bigs(const struct fixture *f, struct journal *j, int first, int n, off_t max)
{
	unsigned char *p = xmalloc(BIG);
	char id[32];
	for (int i = first; i < first + n; i++) {
		snprintf(id, sizeof id, "0000000000000000R%04d", i);
		memset(p, i & 0xff, BIG);
		assert_int_equal(add_message(f, j, id, p, BIG), 0);
		commit(j);
		assert_true(file_size(f->path) <= max);
		assert_true(journal_size(j) <= max);
	}
	free(p);
}

/* 30 records of 200 KiB through a journal bounded at 2 MiB: it wraps
 * (checkpointing by itself) instead of growing past the bound, and what
 * was committed after the last wrap replays after a crash, the last
 * record last. */
static void test_bound_holds_the_file(void **state)
{
	struct fixture *f = *state;
	struct recorder rec = {0};
	struct journal *j = jopen_bound(f, BOUND, &rec);
	assert_int_equal(file_size(f->path), JOURNAL_MIN);
	commit_bigs(f, j, 0, 30, BOUND);
	assert_int_equal(file_size(f->path), BOUND); /* it did grow, up to the bound */
	journal_close(j);                             /* a crash */
	j = jopen_bound(f, BOUND, &rec);
	/* 10 records of 200 KiB and their 88-byte heads fit after the
	 * headers: the wraps came before records 10 and 20 */
	assert_int_equal(rec.n, 10);
	char id[32];
	for (size_t k = 0; k < rec.n; k++) {
		snprintf(id, sizeof id, "0000000000000000R%04zu", 20 + k);
		assert_string_equal(rec.recs[k].id, id);
		assert_int_equal(rec.recs[k].len, BIG);
	}
	journal_close(j);
	recorder_clear(&rec);
}

/* A bound below JOURNAL_MIN is JOURNAL_MIN; one above JOURNAL_MAX is
 * JOURNAL_MAX; and a batch takes no more than the bound holds (the record
 * that would pass it gets 1, for the caller's other way). */
static void test_bound_limits_a_batch(void **state)
{
	struct fixture *f = *state;
	struct recorder rec = {0};
	unsigned char *p = make_payload(JOURNAL_RECORD_MAX, 120);
	struct journal *j = jopen_bound(f, 4096, &rec);
	int taken = 0;
	char id[32];
	for (;;) {
		snprintf(id, sizeof id, "00000000000000000L%03d", taken);
		int r = add_message(f, j, id, p, JOURNAL_RECORD_MAX);
		if (r == 1)
			break;
		assert_int_equal(r, 0);
		taken++;
		assert_true(taken < 8);
	}
	/* 1 MiB less the headers holds three 256 KiB records and their heads */
	assert_int_equal(taken, 3);
	commit(j);
	assert_int_equal(file_size(f->path), JOURNAL_MIN);
	journal_close(j);
	j = jopen_bound(f, (off_t)JOURNAL_MAX * 4, &rec);
	assert_int_equal(rec.n, 3);
	journal_close(j);
	free(p);
	recorder_clear(&rec);
}

/* After a checkpoint (nothing live) journal_shrink cuts the file back to
 * JOURNAL_MIN; with live records it leaves it alone.  Records committed
 * after the cut replay as usual. */
static void test_shrink_after_checkpoint(void **state)
{
	struct fixture *f = *state;
	struct recorder rec = {0};
	struct journal *j = jopen_bound(f, 8 * 1024 * 1024, &rec);
	commit_bigs(f, j, 0, 15, 8 * 1024 * 1024);
	off_t grown = file_size(f->path);
	assert_true(grown >= 3 * 1024 * 1024);
	assert_int_equal(journal_shrink(j), 0); /* live records: not now */
	assert_int_equal(file_size(f->path), grown);
	checkpoint(j);
	assert_int_equal(journal_shrink(j), 0);
	assert_int_equal(file_size(f->path), JOURNAL_MIN);
	assert_int_equal(journal_size(j), JOURNAL_MIN);
	commit_bigs(f, j, 100, 2, 8 * 1024 * 1024);
	journal_close(j);
	j = jopen_bound(f, 8 * 1024 * 1024, &rec);
	assert_int_equal(rec.n, 2);
	assert_string_equal(rec.recs[0].id, "0000000000000000R0100");
	assert_string_equal(rec.recs[1].id, "0000000000000000R0101");
	journal_close(j);
	recorder_clear(&rec);
}

/* An open replays what a crash left live, then cuts the file back to
 * JOURNAL_MIN: what an earlier run's burst took is the disk's again. */
static void test_open_cuts_back(void **state)
{
	struct fixture *f = *state;
	struct recorder rec = {0};
	struct journal *j = jopen_bound(f, JOURNAL_MAX, &rec);
	commit_bigs(f, j, 0, 20, JOURNAL_MAX);
	assert_true(file_size(f->path) >= 4 * 1024 * 1024);
	journal_close(j); /* a crash */
	j = jopen_bound(f, JOURNAL_MAX, &rec);
	assert_int_equal(rec.n, 20);
	assert_int_equal(file_size(f->path), JOURNAL_MIN);
	journal_close(j);
	expect_nothing_replayed(f);
	recorder_clear(&rec);
}

/* File writes past limit fail (EFBIG), as a full disk refuses them. */
static void limit_file_size(struct rlimit *old, rlim_t limit)
{
	assert_int_equal(getrlimit(RLIMIT_FSIZE, old), 0);
	struct rlimit small = {.rlim_cur = limit, .rlim_max = old->rlim_max};
	assert_true(signal(SIGXFSZ, SIG_IGN) != SIG_ERR);
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &small), 0);
}

static void unlimit_file_size(const struct rlimit *old)
{
	assert_int_equal(setrlimit(RLIMIT_FSIZE, old), 0);
	assert_true(signal(SIGXFSZ, SIG_DFL) != SIG_ERR);
}

/* 6 records of BIG bytes queued as one batch (more than 1 MiB holds). */
static void queue_six(const struct fixture *f, struct journal *j, const char *tag)
{
	unsigned char *p = make_payload(BIG, 121);
	char id[32];
	for (int i = 0; i < 6; i++) {
		snprintf(id, sizeof id, "00000000000000%s%02d", tag, i);
		assert_int_equal(add_message(f, j, id, p, BIG), 0);
	}
	free(p);
}

/* The disk refuses a growth: with live records the journal checkpoints
 * and starts over within its size; a batch larger than that fails the
 * commit (nothing written, the file back at its size) and leaves the
 * journal usable, and once there is room the same batch grows it and
 * replays. */
static void test_refused_growth_is_undone(void **state)
{
	struct fixture *f = *state;
	struct recorder rec = {0};
	struct journal *j = jopen_bound(f, BOUND, &rec);
	commit_bigs(f, j, 0, 5, BOUND); /* the first 1 MiB holds 5 */
	struct rlimit old;
	limit_file_size(&old, JOURNAL_MIN + 64 * 1024);
	commit_bigs(f, j, 5, 1, JOURNAL_MIN); /* no growth: a wrap */
	queue_six(f, j, "BATCH");
	unsigned syncs = 0;
	errno = 0;
	int r = journal_commit(j, &syncs);
	int e = errno;
	unlimit_file_size(&old);
	assert_int_equal(r, -1);
	assert_int_equal(e, EFBIG);
	assert_int_equal(journal_usable(j), 0);
	assert_int_equal(file_size(f->path), JOURNAL_MIN);
	queue_six(f, j, "AGAIN");
	commit(j);
	assert_int_equal(file_size(f->path), BOUND);
	journal_close(j);
	j = jopen_bound(f, BOUND, &rec);
	/* the record after the wrap, then the batch that had room */
	assert_int_equal(rec.n, 7);
	assert_string_equal(rec.recs[0].id, "0000000000000000R0005");
	assert_string_equal(rec.recs[1].id, "00000000000000AGAIN00");
	assert_string_equal(rec.recs[6].id, "00000000000000AGAIN05");
	journal_close(j);
	recorder_clear(&rec);
}

/* No room for a new journal at all: the open still succeeds (usable, no
 * header yet); a commit fails and leaves it usable; with room again the
 * commit writes the header first, then its record, which replays. */
static void test_header_written_by_first_commit(void **state)
{
	struct fixture *f = *state;
	struct rlimit old;
	limit_file_size(&old, 4096);
	struct recorder rec = {0};
	struct journal *j = journal_open(f->path, BOUND, record_fn, &rec);
	assert_non_null(j);
	assert_int_equal(journal_usable(j), 0);
	assert_int_equal(add_message(f, j, "0000000000000000FULL1", (const unsigned char *)"x", 1),
			 0);
	unsigned syncs = 0;
	int r = journal_commit(j, &syncs);
	unlimit_file_size(&old);
	assert_int_equal(r, -1);
	assert_int_equal(journal_usable(j), 0);
	assert_true(file_size(f->path) < DATA_START);
	assert_int_equal(add_message(f, j, "0000000000000000ROOM2", (const unsigned char *)"yz", 2),
			 0);
	commit(j);
	journal_close(j);
	j = jopen_bound(f, BOUND, &rec);
	assert_int_equal(rec.n, 1);
	expect_message(&rec, 0, "0000000000000000ROOM2", (const unsigned char *)"yz", 2);
	journal_close(j);
	recorder_clear(&rec);
}

/* A restore with no room (JOURNAL_RESTORE_LATER): the others are still
 * offered, the journal is returned unusable (ENOSPC) and writes nothing,
 * and the next open offers every record again. */
static void test_restore_later_keeps_every_record(void **state)
{
	struct fixture *f = *state;
	commit_abc(f);
	struct recorder rec = {.later_at = 2};
	struct journal *j = journal_open(f->path, JOURNAL_MAX, record_fn, &rec);
	assert_non_null(j);
	assert_int_equal(journal_usable(j), ENOSPC);
	assert_int_equal(rec.n, 3);
	assert_int_equal(add_message(f, j, "0000000000000000000IDD", (const unsigned char *)"d", 1),
			 -1);
	unsigned syncs = 0;
	assert_int_equal(journal_commit(j, &syncs), -1);
	assert_int_equal(syncs, 0);
	journal_close(j);
	recorder_clear(&rec);
	j = jopen(f, &rec);
	assert_int_equal(rec.n, 3);
	expect_message(&rec, 1, "0000000000000000000IDB", (const unsigned char *)payload_b,
		       sizeof payload_b - 1);
	journal_close(j);
	expect_nothing_replayed(f);
	recorder_clear(&rec);
}

int main(void)
{
	log_init(false, LOG_ERR); /* the damaged cases warn; keep the output short */
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_open_creates_file, setup, teardown),
		cmocka_unit_test_setup_teardown(test_open_refuses_symlink, setup, teardown),
		cmocka_unit_test_setup_teardown(test_crash_replays_messages, setup, teardown),
		cmocka_unit_test_setup_teardown(test_crash_replays_only_the_last_epoch, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_empty_message_and_long_id, setup, teardown),
		cmocka_unit_test_setup_teardown(test_done_records_replayed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_checkpoint_makes_records_dead, setup, teardown),
		cmocka_unit_test_setup_teardown(test_uncommitted_records_not_replayed, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_short_source_file, setup, teardown),
		cmocka_unit_test_setup_teardown(test_corrupt_payload_stops_replay, setup, teardown),
		cmocka_unit_test_setup_teardown(test_corrupt_first_record_head, setup, teardown),
		cmocka_unit_test_setup_teardown(test_torn_last_record, setup, teardown),
		cmocka_unit_test_setup_teardown(test_torn_checkpoint_header_uses_older_slot, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_damaged_open_header_uses_older_slot, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_damaged_older_slot_is_ignored, setup, teardown),
		cmocka_unit_test_setup_teardown(test_both_headers_damaged, setup, teardown),
		cmocka_unit_test_setup_teardown(test_truncated_file, setup, teardown),
		cmocka_unit_test_setup_teardown(test_too_large_message, setup, teardown),
		cmocka_unit_test_setup_teardown(test_batch_limit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_wrap_checkpoints_by_itself, setup, teardown),
		cmocka_unit_test_setup_teardown(test_wrap_with_batches, setup, teardown),
		cmocka_unit_test_setup_teardown(test_huge_done_batch, setup, teardown),
		cmocka_unit_test_setup_teardown(test_huge_done_batch_after_wrap, setup, teardown),
		cmocka_unit_test_setup_teardown(test_restore_failure_fails_open, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bound_holds_the_file, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bound_limits_a_batch, setup, teardown),
		cmocka_unit_test_setup_teardown(test_shrink_after_checkpoint, setup, teardown),
		cmocka_unit_test_setup_teardown(test_open_cuts_back, setup, teardown),
		cmocka_unit_test_setup_teardown(test_refused_growth_is_undone, setup, teardown),
		cmocka_unit_test_setup_teardown(test_header_written_by_first_commit, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_restore_later_keeps_every_record, setup,
						teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

/* test_listing: the folder listing's snapshot (posthorn-listing): a round
 * trip through memory and through a file, and every kind of bad file
 * refused — truncated, a flipped bit anywhere, a wrong version, a stale
 * stamp, records that run past the end, UIDs out of order, names with a
 * NUL or a '/', a count larger than the file could hold, an oversized
 * file. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "store/listing.h"
#include "lib/util.h"

static const struct listing_stamp stamp = {
    .new_m = {1700000000, 123456789},
    .cur_m = {1700000001, 5},
    .index_c = {1700000002, 0},
    .modseq_c = {1700000003, 999999999},
    .index_ino = 4242,
    .modseq_ino = 4343,
    .modseq_size = 77,
};

static const struct listing_msg msgs[] = {
    {.name = "1700000000.M1P1.host,S=10,W=12:2,S", .size = 12, .modseq = 3, .date = 1700000000, .uid = 1},
    {.name = "1700000001.M2P1.host:2,", .size = 0, .modseq = 4, .date = -5, .uid = 7},
    {.name = "x", .size = UINT64_MAX, .modseq = 9, .date = 1, .uid = 8},
};
enum { NMSGS = sizeof msgs / sizeof msgs[0] };

/* A sealed snapshot of msgs[0 .. n-1] (caller frees o). */
static void encode(struct listing_out *o, size_t n)
{
	struct listing_head h = {.stamp = stamp, .validity = 1234, .uidnext = 9, .highest = 9,
				 .count = (uint32_t)n};
	listing_out_begin(o, &h);
	for (size_t i = 0; i < n; i++)
		assert_true(listing_out_add(o, &msgs[i]));
	assert_true(listing_out_seal(o));
}

static void assert_same(const struct listing *l, size_t n)
{
	assert_true(listing_stamp_eq(&l->h.stamp, &stamp));
	assert_int_equal(l->h.validity, 1234);
	assert_int_equal(l->h.uidnext, 9);
	assert_int_equal(l->h.highest, 9);
	assert_int_equal(l->n, n);
	for (size_t i = 0; i < n; i++) {
		assert_string_equal(l->v[i].name, msgs[i].name);
		assert_true(l->v[i].size == msgs[i].size);
		assert_true(l->v[i].modseq == msgs[i].modseq);
		assert_true(l->v[i].date == msgs[i].date);
		assert_int_equal(l->v[i].uid, msgs[i].uid);
	}
}

static enum listing_result decode(const unsigned char *p, size_t len)
{
	struct listing l;
	enum listing_result r = listing_decode(p, len, &l);
	if (r == LISTING_OK)
		assert_int_equal(l.n, l.h.count);
	else
		assert_null(l.v);
	listing_free(&l);
	return r;
}

static void test_round_trip(void **state)
{
	(void)state;
	for (size_t n = 0; n <= NMSGS; n++) {
		struct listing_out o;
		encode(&o, n);
		struct listing l;
		assert_int_equal(listing_decode(o.p, o.n, &l), LISTING_OK);
		assert_same(&l, n);
		listing_free(&l);
		listing_out_free(&o);
	}
}

/* Every prefix, and every single flipped bit, is refused. */
static void test_truncated_and_flipped(void **state)
{
	(void)state;
	struct listing_out o;
	encode(&o, NMSGS);
	for (size_t len = 0; len < o.n; len++)
		assert_int_equal(decode(o.p, len), LISTING_DAMAGED);
	unsigned char *p = xmalloc(o.n);
	for (size_t i = 0; i < o.n; i++) {
		for (unsigned bit = 0; bit < 8; bit++) {
			memcpy(p, o.p, o.n);
			p[i] ^= (unsigned char)(1u << bit);
			assert_int_equal(decode(p, o.n), LISTING_DAMAGED);
		}
	}
	free(p);
	listing_out_free(&o);
}

/* The writer refuses what the reader would: names it cannot store, UIDs
 * it is not told of, and a count that does not match. */
static void test_writer_refuses(void **state)
{
	(void)state;
	struct listing_head h = {.stamp = stamp, .validity = 1, .uidnext = 9, .highest = 9, .count = 1};
	const char *bad[] = {"", "a/b", "a\nb", "a\x7f"};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		struct listing_out o;
		listing_out_begin(&o, &h);
		struct listing_msg m = {.name = bad[i], .uid = 1};
		assert_false(listing_out_add(&o, &m));
		assert_false(listing_out_seal(&o));
		listing_out_free(&o);
	}
	char longname[LISTING_NAME_MAX + 2];
	memset(longname, 'a', sizeof longname - 1);
	longname[sizeof longname - 1] = '\0';
	struct listing_out o;
	listing_out_begin(&o, &h);
	struct listing_msg m = {.name = longname, .uid = 1};
	assert_false(listing_out_add(&o, &m));
	listing_out_free(&o);
	/* fewer messages than announced, then more */
	h.count = 2;
	listing_out_begin(&o, &h);
	assert_true(listing_out_add(&o, &msgs[0]));
	assert_false(listing_out_seal(&o));
	listing_out_free(&o);
	h.count = 1;
	listing_out_begin(&o, &h);
	assert_true(listing_out_add(&o, &msgs[0]));
	assert_false(listing_out_add(&o, &msgs[1]));
	listing_out_free(&o);
}

/* Records the writer would never make, sealed with a valid checksum (the
 * writer does not check UID order): the reader refuses them all. */
static void test_bad_content(void **state)
{
	(void)state;
	struct listing_head h = {.stamp = stamp, .validity = 1, .uidnext = 9, .highest = 9, .count = 2};
	struct listing_msg twice[2] = {msgs[1], msgs[0]}; /* UIDs 7 then 1 */
	struct listing_out o;
	listing_out_begin(&o, &h);
	assert_true(listing_out_add(&o, &twice[0]));
	assert_true(listing_out_add(&o, &twice[1]));
	assert_true(listing_out_seal(&o));
	assert_int_equal(decode(o.p, o.n), LISTING_DAMAGED);
	listing_out_free(&o);
	/* a UID at UIDNEXT, a MODSEQ above HIGHESTMODSEQ */
	struct listing_msg high[] = {{.name = "a", .uid = 9}, {.name = "a", .uid = 1, .modseq = 10}};
	for (size_t i = 0; i < 2; i++) {
		h.count = 1;
		listing_out_begin(&o, &h);
		assert_true(listing_out_add(&o, &high[i]));
		assert_true(listing_out_seal(&o));
		assert_int_equal(decode(o.p, o.n), LISTING_DAMAGED);
		listing_out_free(&o);
	}
	/* a version this build does not know */
	encode(&o, 1);
	o.p[8] = LISTING_VERSION + 1;
	assert_int_equal(decode(o.p, o.n), LISTING_DAMAGED);
	listing_out_free(&o);
	/* a count that the file cannot hold (the header and checksum alone) */
	h.count = 1000000;
	listing_out_begin(&o, &h);
	o.count = 0; /* seal it without the records */
	assert_true(listing_out_seal(&o));
	assert_int_equal(decode(o.p, o.n), LISTING_DAMAGED);
	listing_out_free(&o);
}

static char *tmpdir(void)
{
	char *d = xstrdup("/tmp/posthorn-listing-XXXXXX");
	assert_non_null(mkdtemp(d));
	char *tmp = xasprintf("%s/tmp", d);
	assert_int_equal(mkdir(tmp, 0700), 0);
	free(tmp);
	return d;
}

static void rmdir_all(char *d)
{
	char *f = xasprintf("%s/%s", d, LISTING_FILE_NAME);
	(void)unlink(f);
	free(f);
	f = xasprintf("%s/tmp", d);
	assert_int_equal(rmdir(f), 0); /* nothing left in tmp/ */
	free(f);
	assert_int_equal(rmdir(d), 0);
	free(d);
}

/* Written and read back; another stamp is STALE; a damaged file, an
 * oversized one and none at all are told apart. */
static void test_file(void **state)
{
	(void)state;
	char *d = tmpdir();
	struct listing l;
	char err[256];
	assert_int_equal(listing_read(d, &stamp, &l, err, sizeof err), LISTING_MISSING);
	struct listing_out o;
	struct listing_head h = {.stamp = stamp, .validity = 1234, .uidnext = 9, .highest = 9,
				 .count = NMSGS};
	listing_out_begin(&o, &h);
	for (size_t i = 0; i < NMSGS; i++)
		assert_true(listing_out_add(&o, &msgs[i]));
	assert_int_equal(listing_write(d, &o, err, sizeof err), 0);
	listing_out_free(&o);
	assert_int_equal(listing_read(d, &stamp, &l, err, sizeof err), LISTING_OK);
	assert_same(&l, NMSGS);
	listing_free(&l);
	struct listing_stamp other = stamp;
	other.cur_m.nsec++;
	assert_int_equal(listing_read(d, &other, &l, err, sizeof err), LISTING_STALE);
	other = stamp;
	other.index_ino++;
	assert_int_equal(listing_read(d, &other, &l, err, sizeof err), LISTING_STALE);
	/* cut short: the header still matches, the checksum does not */
	char *path = xasprintf("%s/%s", d, LISTING_FILE_NAME);
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(truncate(path, st.st_size - 1), 0);
	assert_int_equal(listing_read(d, &stamp, &l, err, sizeof err), LISTING_DAMAGED);
	assert_null(l.v);
	/* larger than any snapshot may be: not even read */
	assert_int_equal(truncate(path, (off_t)LISTING_FILE_MAX + 1), 0);
	assert_int_equal(listing_read(d, &stamp, &l, err, sizeof err), LISTING_DAMAGED);
	free(path);
	rmdir_all(d);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_round_trip),
		cmocka_unit_test(test_truncated_and_flipped),
		cmocka_unit_test(test_writer_refuses),
		cmocka_unit_test(test_bad_content),
		cmocka_unit_test(test_file),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

/* test_maildir: the folder of an address, new unique names (form, host
 * escaping), reading Maildirs — unique names and UIDs (RFC 1939 §7),
 * sizes with CRLF line ends (W= or counted), listing new/ and cur/ and the
 * move into cur/, streaming with CRLF conversion, dot-stuffing and TOP in
 * chunks of any size, deleting, the mailbox lock within this process
 * and against another one, and the leftovers of tmp/ (a dead process's
 * names, files 36 hours old; maildir(5)). */
#define _GNU_SOURCE /* nftw */
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
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "store/maildir.h"
#include "lib/util.h"

struct fixture {
	char dir[64];
	char *box;               /* dir/box: a Maildir */
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
	memcpy(f->dir, "/tmp/posthorn-maildir-XXXXXX", sizeof "/tmp/posthorn-maildir-XXXXXX");
	if (!mkdtemp(f->dir))
		return -1;
	f->box = xasprintf("%s/example.test/bob", f->dir);
	char err[256];
	if (maildir_create(f->box, err, sizeof err) < 0)
		return -1;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	int r = nftw(f->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	free(f->box);
	free(f);
	return r;
}

/* ---- helpers ----------------------------------------------------------- */

static void put_file(const char *box, const char *sub, const char *name, const char *data,
		     size_t len)
{
	char *path = xasprintf("%s/%s/%s", box, sub, name);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write_all(fd, data, len), 0);
	close(fd);
	free(path);
}

static bool exists(const char *box, const char *sub, const char *name)
{
	char *path = xasprintf("%s/%s/%s", box, sub, name);
	struct stat st;
	bool r = stat(path, &st) == 0;
	free(path);
	return r;
}

/* The whole stream of a file holding data, read with output buffers of
 * chunk bytes.  *outlen gets the length; the caller frees. */
static char *stream_all(const char *data, size_t len, unsigned flags, long body_lines,
			size_t chunk, size_t *outlen)
{
	char path[] = "/tmp/posthorn-maildir-stream-XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	unlink(path);
	assert_int_equal(write_all(fd, data, len), 0);
	assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
	struct maildir_stream *s = maildir_stream_fdopen(fd, flags, body_lines);
	size_t cap = len * 3 + 16, o = 0;
	char *out = xmalloc(cap);
	char *buf = xmalloc(chunk);
	ssize_t n;
	while ((n = maildir_stream_read(s, buf, chunk)) > 0) {
		assert_true((size_t)n <= chunk);
		assert_true(o + (size_t)n <= cap);
		memcpy(out + o, buf, (size_t)n);
		o += (size_t)n;
	}
	assert_int_equal(n, 0);
	assert_int_equal(maildir_stream_read(s, buf, chunk), 0); /* stays at the end */
	free(buf);
	maildir_stream_close(s);
	*outlen = o;
	return out;
}

static void assert_stream(const char *data, unsigned flags, long body_lines, const char *expect)
{
	static const size_t chunks[] = {MAILDIR_STREAM_MIN, 5, 7, 64, 16384};
	for (size_t i = 0; i < sizeof chunks / sizeof chunks[0]; i++) {
		size_t n;
		char *out = stream_all(data, strlen(data), flags, body_lines, chunks[i], &n);
		if (n != strlen(expect) || memcmp(out, expect, n) != 0)
			fail_msg("chunk %zu: got \"%.*s\", want \"%s\"", chunks[i], (int)n, out,
				 expect);
		free(out);
	}
}

/* ---- names and UIDs ---------------------------------------------------- */

static void test_unique_part(void **state)
{
	(void)state;
	const char *ours = "1764300000.M123456P789Q1R0a1b2c3d.mail,S=435,W=453";
	size_t u = strlen("1764300000.M123456P789Q1R0a1b2c3d.mail");
	assert_int_equal(maildir_unique_len(ours), u);
	const char *flagged = "1764300000.M123456P789Q1R0a1b2c3d.mail,S=435,W=453:2,S";
	assert_int_equal(maildir_unique_len(flagged), u);
	assert_int_equal(maildir_unique_len("1764300000.M123456P789Q1R0a1b2c3d.mail:2,"), u);
	/* a ',' that starts no KEY= field belongs to the unique part */
	assert_int_equal(maildir_unique_len("1.2,3.host:2,"), strlen("1.2,3.host"));
	assert_int_equal(maildir_unique_len("1.2,s=3.host"), strlen("1.2,s=3.host"));
	assert_int_equal(maildir_unique_len("plain"), 5);
}

static void test_uid_stable_across_folders_and_flags(void **state)
{
	(void)state;
	char a[MAILDIR_UID_MAX + 1], b[MAILDIR_UID_MAX + 1], c[MAILDIR_UID_MAX + 1];
	maildir_uid("1764300000.M1P2Q3R4.mail,S=10,W=12", a);
	maildir_uid("1764300000.M1P2Q3R4.mail,S=10,W=12:2,", b);
	maildir_uid("1764300000.M1P2Q3R4.mail,S=10,W=12:2,RS", c);
	assert_string_equal(a, "1764300000.M1P2Q3R4.mail");
	assert_string_equal(a, b);
	assert_string_equal(a, c);
}

static bool uid_is_safe(const char *uid)
{
	size_t n = strlen(uid);
	if (n == 0 || n > MAILDIR_UID_MAX)
		return false;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)uid[i] < 0x21 || (unsigned char)uid[i] > 0x7e)
			return false;
	return true;
}

static void test_uid_made_safe(void **state)
{
	(void)state;
	char uid[MAILDIR_UID_MAX + 1], again[MAILDIR_UID_MAX + 1];
	/* 71 octets: too long for RFC 1939 §7, so hashed */
	char longname[128];
	memset(longname, 'a', 71);
	strcpy(longname + 71, ",S=1:2,");
	maildir_uid(longname, uid);
	assert_true(uid_is_safe(uid));
	assert_int_equal(strlen(uid), 64);
	assert_memory_not_equal(uid, longname, 64);
	maildir_uid(longname, again);
	assert_string_equal(uid, again); /* stable */
	/* exactly 70 octets stay as they are */
	longname[70] = '\0';
	maildir_uid(longname, uid);
	assert_string_equal(uid, longname);
	/* a space, a control byte, UTF-8: hashed; distinct names, distinct UIDs */
	maildir_uid("12.with space.host", uid);
	assert_true(uid_is_safe(uid));
	maildir_uid("12.with\001ctl.host", again);
	assert_true(uid_is_safe(again));
	assert_string_not_equal(uid, again);
	maildir_uid("12.h\xc3\xa9te:2,", uid);
	assert_true(uid_is_safe(uid));
	/* the empty unique part too */
	maildir_uid(":2,", uid);
	assert_true(uid_is_safe(uid));
}

static void test_name_fields(void **state)
{
	(void)state;
	uint64_t v = 0;
	assert_true(maildir_name_field("1.M1.host,S=435,W=453:2,", 'W', &v));
	assert_int_equal(v, 453);
	assert_true(maildir_name_field("1.M1.host,S=435,W=453:2,", 'S', &v));
	assert_int_equal(v, 435);
	assert_false(maildir_name_field("1.M1.host,S=435:2,W=9", 'W', &v)); /* W= in the info */
	assert_false(maildir_name_field("1.M1.host", 'W', &v));
	assert_false(maildir_name_field("1.M1.host,W=", 'W', &v));
	assert_false(maildir_name_field("1.M1.host,W=12x", 'W', &v));
	assert_false(maildir_name_field("1.M1.host,W=99999999999999999999999", 'W', &v));
	assert_true(maildir_name_field("1.M1.host,W=0", 'W', &v));
	assert_int_equal(v, 0);
}

/* ---- streaming --------------------------------------------------------- */

static void test_stream_crlf(void **state)
{
	(void)state;
	assert_stream("a\nb\n", 0, -1, "a\r\nb\r\n");
	assert_stream("a\r\nb\r\n", 0, -1, "a\r\nb\r\n");      /* CRLF stays */
	assert_stream("a\r\nb\nc\r\n", 0, -1, "a\r\nb\r\nc\r\n"); /* mixed */
	assert_stream("a\nlast", 0, -1, "a\r\nlast\r\n");      /* unterminated last line */
	assert_stream("a\nlast\r", 0, -1, "a\r\nlast\r\n");
	assert_stream("", 0, -1, "");
	assert_stream("\n\n", 0, -1, "\r\n\r\n");
}

static void test_stream_dot_stuffing(void **state)
{
	(void)state;
	const char *msg = "Subject: x\n\n.\n..two\n.a\nmid.dle\n. \n";
	assert_stream(msg, MAILDIR_STREAM_DOTSTUFF, -1,
		      "Subject: x\r\n\r\n..\r\n...two\r\n..a\r\nmid.dle\r\n.. \r\n");
	/* without the flag (IMAP, sizes) nothing is stuffed */
	assert_stream(msg, 0, -1, "Subject: x\r\n\r\n.\r\n..two\r\n.a\r\nmid.dle\r\n. \r\n");
	/* a final "." line without line end gets its CRLF and its stuffing */
	assert_stream("a\n.", MAILDIR_STREAM_DOTSTUFF, -1, "a\r\n..\r\n");
}

static void test_stream_top(void **state)
{
	(void)state;
	const char *msg = "From: a\nSubject: b\n\nline1\n.line2\nline3\n";
	assert_stream(msg, MAILDIR_STREAM_DOTSTUFF, 0, "From: a\r\nSubject: b\r\n\r\n");
	assert_stream(msg, MAILDIR_STREAM_DOTSTUFF, 2,
		      "From: a\r\nSubject: b\r\n\r\nline1\r\n..line2\r\n");
	assert_stream(msg, MAILDIR_STREAM_DOTSTUFF, 3,
		      "From: a\r\nSubject: b\r\n\r\nline1\r\n..line2\r\nline3\r\n");
	assert_stream(msg, MAILDIR_STREAM_DOTSTUFF, 100,
		      "From: a\r\nSubject: b\r\n\r\nline1\r\n..line2\r\nline3\r\n");
	/* CRLF files: the blank line is "\r\n" */
	assert_stream("A: 1\r\n\r\nbody\r\nmore\r\n", 0, 1, "A: 1\r\n\r\nbody\r\n");
	/* a header only: all of it */
	assert_stream("A: 1\nB: 2\n", 0, 0, "A: 1\r\nB: 2\r\n");
	/* an empty body line counts as a line */
	assert_stream("A: 1\n\n\nx\n", 0, 1, "A: 1\r\n\r\n\r\n");
}

/* Did the stream send the whole message?  (TOP with enough lines did.) */
static bool whole_after(const char *data, long body_lines)
{
	char path[] = "/tmp/posthorn-maildir-whole-XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	unlink(path);
	assert_int_equal(write_all(fd, data, strlen(data)), 0);
	assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
	struct maildir_stream *s = maildir_stream_fdopen(fd, MAILDIR_STREAM_DOTSTUFF, body_lines);
	char buf[64];
	while (maildir_stream_read(s, buf, sizeof buf) > 0)
		;
	bool whole = maildir_stream_whole(s);
	maildir_stream_close(s);
	return whole;
}

static void test_stream_whole(void **state)
{
	(void)state;
	const char *msg = "A: 1\n\none\ntwo\n";
	assert_true(whole_after(msg, -1));
	assert_true(whole_after(msg, 99999999));
	assert_true(whole_after(msg, 2));       /* exactly the body's lines */
	assert_false(whole_after(msg, 1));
	assert_false(whole_after(msg, 0));
	assert_true(whole_after("A: 1\n", 0)); /* no body at all */
	assert_true(whole_after("", 0));
}

/* CR and LF, or a line-leading '.', split across the 16 KiB read buffer. */
static void test_stream_buffer_boundaries(void **state)
{
	(void)state;
	const size_t buf = 16 * 1024;
	for (size_t shift = 0; shift < 4; shift++) {
		size_t len = 3 * buf;
		char *data = xmalloc(len + 1);
		memset(data, 'x', len);
		/* CRLF across the first boundary, ".\n" across the second */
		data[buf - 1 - shift] = '\r';
		data[buf - shift] = '\n';
		data[2 * buf - 1 - shift] = '\n';
		data[2 * buf - shift] = '.';
		data[len - 1] = '\n';
		data[len] = '\0';
		size_t n;
		char *out = stream_all(data, len, MAILDIR_STREAM_DOTSTUFF, -1, 1000, &n);
		/* one LF became CRLF, one '.' was doubled */
		assert_int_equal(n, len + 2 + 1);
		assert_memory_equal(out + buf - 1 - shift, "\r\n", 2);
		assert_memory_equal(out + 2 * buf - 1 - shift, "\r\n..", 4);
		char path[] = "/tmp/posthorn-maildir-count-XXXXXX";
		int fd = mkstemp(path);
		assert_int_equal(write_all(fd, data, len), 0);
		close(fd);
		uint64_t size = 0;
		assert_int_equal(maildir_count_size(path, &size), 0);
		assert_int_equal(size, len + 2); /* sizes are counted without stuffing */
		unlink(path);
		free(out);
		free(data);
	}
}

static void test_stream_open_missing(void **state)
{
	struct fixture *f = *state;
	char *path = xasprintf("%s/cur/none", f->box);
	errno = 0;
	assert_null(maildir_stream_open(path, 0, -1));
	assert_int_equal(errno, ENOENT);
	uint64_t size;
	assert_int_equal(maildir_count_size(path, &size), -1);
	free(path);
	maildir_stream_close(NULL);
}

/* ---- listing ----------------------------------------------------------- */

static void test_scan_lists_new_and_cur_oldest_first(void **state)
{
	struct fixture *f = *state;
	const char *m1 = "Subject: one\n\nbody\n";     /* 19 bytes, 3 lines */
	const char *m2 = "Subject: two\r\n\r\nbody\r\n"; /* CRLF already: 22 */
	const char *m3 = "Subject: three\n\nno end";   /* 22 bytes, 2 LF + 1 added CRLF */
	put_file(f->box, "new", "1700000300.M1P1Q1R1.host,S=19,W=22", m1, strlen(m1));
	put_file(f->box, "cur", "1700000100.M1P1Q1R1.host:2,S", m2, strlen(m2));
	put_file(f->box, "new", "1700000200.M1P1Q1R1.host", m3, strlen(m3));
	put_file(f->box, "new", ".hidden", "x", 1);
	put_file(f->box, "tmp", "1700000000.M1P1Q1R1.host", "x", 1);
	char *sub = xasprintf("%s/cur/1700000000.dir", f->box);
	assert_int_equal(mkdir(sub, 0700), 0);
	free(sub);

	struct maildir_list l;
	char err[256];
	assert_int_equal(maildir_scan(f->box, 0, &l, err, sizeof err), 0);
	assert_int_equal(l.n, 3);
	assert_string_equal(l.msgs[0].uid, "1700000100.M1P1Q1R1.host");
	assert_false(l.msgs[0].in_new);
	assert_int_equal(l.msgs[0].size, 22);
	assert_string_equal(l.msgs[1].uid, "1700000200.M1P1Q1R1.host");
	assert_true(l.msgs[1].in_new);
	assert_int_equal(l.msgs[1].size, 22 + 2 + 2);
	assert_string_equal(l.msgs[2].uid, "1700000300.M1P1Q1R1.host");
	assert_int_equal(l.msgs[2].size, 22); /* from W= */
	assert_int_equal(l.total, 22 + 26 + 22);
	assert_int_equal(l.msgs[0].time, 1700000100);
	/* nothing moved without the flag */
	assert_true(exists(f->box, "new", "1700000300.M1P1Q1R1.host,S=19,W=22"));
	char *p = maildir_msg_path(f->box, &l.msgs[2]);
	char *want = xasprintf("%s/new/1700000300.M1P1Q1R1.host,S=19,W=22", f->box);
	assert_string_equal(p, want);
	free(p);
	free(want);
	maildir_list_free(&l);
	assert_int_equal(l.n, 0);
}

static void test_scan_moves_new_to_cur_uids_unchanged(void **state)
{
	struct fixture *f = *state;
	const char *m = "S: 1\n\nb\n";
	put_file(f->box, "new", "1700000001.M1P1Q1R1.host,S=8,W=11", m, strlen(m));
	put_file(f->box, "new", "1700000002.M1P1Q1R1.host,S=8,W=11", m, strlen(m));
	put_file(f->box, "cur", "1700000003.M1P1Q1R1.host,S=8,W=11:2,S", m, strlen(m));
	struct maildir_list before, after;
	char err[256];
	assert_int_equal(maildir_scan(f->box, 0, &before, err, sizeof err), 0);
	assert_int_equal(maildir_scan(f->box, MAILDIR_SCAN_MOVE_NEW, &after, err, sizeof err), 0);
	assert_int_equal(after.n, 3);
	for (size_t i = 0; i < 3; i++) {
		assert_false(after.msgs[i].in_new);
		assert_string_equal(before.msgs[i].uid, after.msgs[i].uid);
	}
	assert_string_equal(after.msgs[0].name, "1700000001.M1P1Q1R1.host,S=8,W=11:2,");
	assert_string_equal(after.msgs[2].name, "1700000003.M1P1Q1R1.host,S=8,W=11:2,S");
	assert_true(exists(f->box, "cur", "1700000001.M1P1Q1R1.host,S=8,W=11:2,"));
	assert_true(exists(f->box, "cur", "1700000002.M1P1Q1R1.host,S=8,W=11:2,"));
	assert_false(exists(f->box, "new", "1700000001.M1P1Q1R1.host,S=8,W=11"));
	maildir_list_free(&before);
	maildir_list_free(&after);
	/* a later scan sees the same UIDs again */
	assert_int_equal(maildir_scan(f->box, MAILDIR_SCAN_MOVE_NEW, &after, err, sizeof err), 0);
	assert_string_equal(after.msgs[0].uid, "1700000001.M1P1Q1R1.host");
	maildir_list_free(&after);
}

static void test_scan_duplicate_unique_parts(void **state)
{
	struct fixture *f = *state;
	put_file(f->box, "new", "1700000001.same.host,S=1,W=2", "x\n", 2);
	put_file(f->box, "cur", "1700000001.same.host,S=1,W=2:2,S", "x\n", 2);
	struct maildir_list l;
	char err[256];
	assert_int_equal(maildir_scan(f->box, 0, &l, err, sizeof err), 0);
	assert_int_equal(l.n, 2);
	assert_string_not_equal(l.msgs[0].uid, l.msgs[1].uid);
	assert_true(uid_is_safe(l.msgs[0].uid) && uid_is_safe(l.msgs[1].uid));
	maildir_list_free(&l);
}

static void test_scan_empty_and_missing(void **state)
{
	struct fixture *f = *state;
	struct maildir_list l;
	char err[256];
	assert_int_equal(maildir_scan(f->box, MAILDIR_SCAN_MOVE_NEW, &l, err, sizeof err), 0);
	assert_int_equal(l.n, 0);
	assert_int_equal(l.total, 0);
	maildir_list_free(&l);
	char *none = xasprintf("%s/nobody", f->dir);
	assert_int_equal(maildir_scan(none, 0, &l, err, sizeof err), 0); /* no folders: empty */
	assert_int_equal(l.n, 0);
	maildir_list_free(&l);
	/* a file where new/ should be is an error */
	assert_int_equal(mkdir(none, 0700), 0);
	char *new = xasprintf("%s/new", none);
	put_file(none, "", "new", "x", 1);
	assert_int_equal(maildir_scan(none, 0, &l, err, sizeof err), -1);
	assert_non_null(strstr(err, "new"));
	assert_int_equal(l.n, 0);
	free(new);
	free(none);
}

static void test_create_folders(void **state)
{
	struct fixture *f = *state;
	char *box = xasprintf("%s/example.org/new-user", f->dir);
	char err[256];
	assert_int_equal(maildir_create(box, err, sizeof err), 0);
	assert_int_equal(maildir_create(box, err, sizeof err), 0); /* again: fine */
	static const char *const subs[] = {"tmp", "new", "cur"};
	for (size_t i = 0; i < 3; i++) {
		char *p = xasprintf("%s/%s", box, subs[i]);
		struct stat st;
		assert_int_equal(stat(p, &st), 0);
		assert_true(S_ISDIR(st.st_mode));
		assert_int_equal(st.st_mode & 0777, 0700);
		free(p);
	}
	free(box);
}

/* ---- deleting ---------------------------------------------------------- */

static void test_delete(void **state)
{
	struct fixture *f = *state;
	put_file(f->box, "new", "1700000001.a.host,S=1,W=2", "x\n", 2);
	put_file(f->box, "cur", "1700000002.b.host,S=1,W=2:2,", "x\n", 2);
	struct maildir_list l;
	char err[256];
	assert_int_equal(maildir_scan(f->box, 0, &l, err, sizeof err), 0);
	assert_int_equal(l.n, 2);
	assert_int_equal(maildir_delete(f->box, &l.msgs[0]), 0);
	assert_int_equal(maildir_delete(f->box, &l.msgs[1]), 0);
	assert_int_equal(maildir_delete(f->box, &l.msgs[1]), 0); /* already gone: fine */
	assert_int_equal(maildir_sync(f->box), 0);
	assert_false(exists(f->box, "new", "1700000001.a.host,S=1,W=2"));
	assert_false(exists(f->box, "cur", "1700000002.b.host,S=1,W=2:2,"));
	maildir_list_free(&l);
	assert_int_equal(maildir_scan(f->box, 0, &l, err, sizeof err), 0);
	assert_int_equal(l.n, 0);
	maildir_list_free(&l);
}

static void test_move_to_cur_gone(void **state)
{
	struct fixture *f = *state;
	struct maildir_msg m = {.name = xstrdup("1700000001.gone.host"), .in_new = true};
	errno = 0;
	assert_int_equal(maildir_move_to_cur(f->box, &m), -1);
	assert_int_equal(errno, ENOENT);
	assert_true(m.in_new);
	assert_string_equal(m.name, "1700000001.gone.host");
	free(m.name);
}

/* ---- the lock ---------------------------------------------------------- */

static void test_lock_in_process(void **state)
{
	struct fixture *f = *state;
	struct maildir_lock *a, *b;
	char err[256];
	assert_int_equal(maildir_lock(f->box, &a, err, sizeof err), MAILDIR_LOCK_OK);
	assert_non_null(a);
	assert_int_equal(maildir_lock(f->box, &b, err, sizeof err), MAILDIR_LOCK_BUSY);
	assert_null(b);
	/* another mailbox is independent */
	char *other = xasprintf("%s/example.test/carol", f->dir);
	assert_int_equal(maildir_create(other, err, sizeof err), 0);
	assert_int_equal(maildir_lock(other, &b, err, sizeof err), MAILDIR_LOCK_OK);
	maildir_unlock(b);
	free(other);
	maildir_unlock(a);
	assert_int_equal(maildir_lock(f->box, &b, err, sizeof err), MAILDIR_LOCK_OK);
	maildir_unlock(b);
	maildir_unlock(NULL);
	assert_true(exists(f->box, "", MAILDIR_LOCK_FILE));
}

/* Can a fresh process take a POSIX fcntl(2) lock on the lock file now,
 * the kind of lock another host's process holds on a shared file system
 * (NFS passes these on, not flock's)? */
static bool other_process_can_lock(const char *box)
{
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		char *path = xasprintf("%s/%s", box, MAILDIR_LOCK_FILE);
		int fd = open(path, O_RDWR);
		struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
		_exit(fd >= 0 && fcntl(fd, F_SETLK, &fl) == 0 ? 0 : 1);
	}
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	return WEXITSTATUS(status) == 0;
}

static void test_lock_across_processes(void **state)
{
	struct fixture *f = *state;
	struct maildir_lock *a;
	char err[256];
	assert_int_equal(maildir_lock(f->box, &a, err, sizeof err), MAILDIR_LOCK_OK);
	assert_false(other_process_can_lock(f->box));
	maildir_unlock(a);
	assert_true(other_process_can_lock(f->box));

	/* another process holds it: BUSY here, though this process's registry
	 * knows nothing; free again once that process is gone */
	int go[2], done[2];
	assert_int_equal(pipe(go), 0);
	assert_int_equal(pipe(done), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct maildir_lock *c;
		char e[256], byte = 0;
		if (maildir_lock(f->box, &c, e, sizeof e) != MAILDIR_LOCK_OK)
			_exit(1);
		if (write(go[1], "x", 1) != 1 || read(done[0], &byte, 1) < 0)
			_exit(2);
		_exit(0); /* exiting drops the lock, as a crash would */
	}
	char byte;
	assert_int_equal(read(go[0], &byte, 1), 1);
	assert_int_equal(maildir_lock(f->box, &a, err, sizeof err), MAILDIR_LOCK_BUSY);
	assert_int_equal(write(done[1], "x", 1), 1);
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	assert_int_equal(maildir_lock(f->box, &a, err, sizeof err), MAILDIR_LOCK_OK);
	maildir_unlock(a);
	close(go[0]);
	close(go[1]);
	close(done[0]);
	close(done[1]);
}

static void test_lock_missing_folder(void **state)
{
	struct fixture *f = *state;
	char *none = xasprintf("%s/none/here", f->dir);
	struct maildir_lock *a;
	char err[256];
	assert_int_equal(maildir_lock(none, &a, err, sizeof err), MAILDIR_LOCK_ERROR);
	assert_null(a);
	assert_non_null(strstr(err, "posthorn.lock"));
	free(none);
}

/* ---- the layout and new names ---------------------------------------------- */

static void test_path(void **state)
{
	(void)state;
	static const struct {
		const char *address, *path;
	} cases[] = {
		{"bob@Example.TEST", "/m/example.test/bob"},
		{"Bob@example.test", "/m/example.test/Bob"},
		{"../x@example.test", "/m/example.test/%2E.%2Fx"},
		{".hidden@example.test", "/m/example.test/%2Ehidden"},
		{"a/b@example.test", "/m/example.test/a%2Fb"},
		{"a%2Fb@example.test", "/m/example.test/a%252Fb"},
		{".@example.test", "/m/example.test/%2E"},
		{"..@example.test", "/m/example.test/%2E."},
		{"a.b.@example.test", "/m/example.test/a.b."},
		{"\"x@y\"@example.test", "/m/example.test/\"x@y\""},
		{"a\tb@example.test", "/m/example.test/a%09b"},
		{"bob@[192.0.2.1]", "/m/[192.0.2.1]/bob"},
	};
	for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
		char *p = maildir_path("/m", cases[i].address);
		assert_non_null(p);
		assert_string_equal(p, cases[i].path);
		free(p);
	}
	static const char *const bad[] = {"bob", "@example.test", "bob@", "bob@.", "bob@..",
					  "bob@a/b", "bob@.hidden", "bob@exa\nmple"};
	for (size_t i = 0; i < ARRAY_LEN(bad); i++)
		assert_null(maildir_path("/m", bad[i]));
}

/* The host part of a unique name: '/' and ':' escaped, the Maildir way. */
static void test_escape_host(void **state)
{
	(void)state;
	char out[64];
	maildir_escape_host("mail.example.test", out, sizeof out);
	assert_string_equal(out, "mail.example.test");
	maildir_escape_host("a/b:c", out, sizeof out);
	assert_string_equal(out, "a\\057b\\072c");
	maildir_escape_host("", out, sizeof out);
	assert_string_equal(out, "");
	/* cut at a whole character: never half an escape */
	char small[6];
	maildir_escape_host("ab/cd", small, sizeof small);
	assert_string_equal(small, "ab");
	maildir_escape_host("abcdefgh", small, sizeof small);
	assert_string_equal(small, "abcde");
}

static bool all_digits(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (s[i] < '0' || s[i] > '9')
			return false;
	return n > 0;
}

/* WHEN.M<usec>P<pid>Q<count>R<random>.<host>, a new one every time. */
static void test_unique_name(void **state)
{
	(void)state;
	char *a = maildir_unique_name(1234567890);
	char *b = maildir_unique_name(0);
	assert_string_not_equal(a, b);
	assert_true(strncmp(a, "1234567890.M", 12) == 0);
	long long now = (long long)time(NULL);
	assert_true(llabs(strtoll(b, NULL, 10) - now) <= 2);

	const char *m = strchr(a, 'M');
	const char *p = strchr(m, 'P'), *q = strchr(m, 'Q'), *r = strchr(m, 'R');
	assert_non_null(p);
	assert_non_null(q);
	assert_non_null(r);
	assert_int_equal(p - m - 1, 6); /* microseconds, 6 digits */
	assert_true(all_digits(m + 1, (size_t)(p - m - 1)));
	char pid[32];
	assert_true(bsnprintf(pid, sizeof pid, "P%ldQ", (long)getpid()));
	assert_true(strncmp(p, pid, strlen(pid)) == 0);
	assert_true(all_digits(q + 1, (size_t)(r - q - 1)));
	const char *dot = strchr(r, '.');
	assert_non_null(dot);
	assert_int_equal(dot - r - 1, 8); /* 32 random bits in hex */
	/* the host: escaped, and nothing that ends the unique part */
	char host[256], want[1024];
	assert_int_equal(gethostname(host, sizeof host - 1), 0);
	host[sizeof host - 1] = '\0';
	maildir_escape_host(host[0] ? host : "localhost", want, sizeof want);
	assert_string_equal(dot + 1, want);
	assert_null(strchr(a, '/'));
	assert_null(strchr(a, ':'));
	assert_int_equal(maildir_unique_len(a), strlen(a));
	free(a);
	free(b);
}

/* ---- tmp/ leftovers ------------------------------------------------------ */

/* A name as maildir_unique_name() makes it, with another PID. */
static char *name_with_pid(long pid)
{
	char *own = maildir_unique_name(0);
	char *p = strchr(own, 'P'), *q = strchr(own, 'Q');
	assert_non_null(p);
	assert_non_null(q);
	*p = '\0';
	char *name = xasprintf("%sP%ldQ%s", own, pid, q + 1);
	free(own);
	return name;
}

/* The PID of a process that has ended (reaped: nothing runs under it). */
static long dead_pid(void)
{
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0)
		_exit(0);
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	return (long)pid;
}

static void set_times(const char *path, time_t atime, time_t mtime)
{
	struct timespec ts[2] = {{.tv_sec = atime}, {.tv_sec = mtime}};
	assert_int_equal(utimensat(AT_FDCWD, path, ts, 0), 0);
}

static struct stat stat_of(const char *box, const char *name)
{
	char *path = xasprintf("%s/tmp/%s", box, name);
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	free(path);
	return st;
}

static void age_file(const char *box, const char *name, time_t atime, time_t mtime)
{
	char *path = xasprintf("%s/tmp/%s", box, name);
	set_times(path, atime, mtime);
	free(path);
}

/* Which tmp/ files are leftovers: any name untouched for 36 hours (read
 * or written later: kept); names of this generator for a process that has
 * ended, or for this PID before this process started; not those of a
 * running process, this one's own, another host's, or foreign ones. */
static void test_tmp_leftover(void **state)
{
	struct fixture *f = *state;
	time_t now = time(NULL);
	char *own = maildir_unique_name(0);
	char *dead = name_with_pid(dead_pid());
	char *alive = name_with_pid((long)getppid());
	char *other_host = xasprintf("%s.M000001P%ldQ1R0000beef.another.host.example",
				     "1700000000", dead_pid());
	const char *foreign = "1700000000.12345.mutt.example";
	const char *names[] = {own, dead, alive, other_host, foreign};
	for (size_t i = 0; i < ARRAY_LEN(names); i++)
		put_file(f->box, "tmp", names[i], "partial", 7);

	struct stat st = stat_of(f->box, own);
	assert_false(maildir_tmp_leftover(own, &st, now));
	st = stat_of(f->box, dead);
	assert_true(maildir_tmp_leftover(dead, &st, now));
	st = stat_of(f->box, alive);
	assert_false(maildir_tmp_leftover(alive, &st, now));
	st = stat_of(f->box, other_host);
	assert_false(maildir_tmp_leftover(other_host, &st, now));
	st = stat_of(f->box, foreign);
	assert_false(maildir_tmp_leftover(foreign, &st, now));

	/* this PID, written an hour before this process made its first name */
	age_file(f->box, own, now - 3600, now - 3600);
	st = stat_of(f->box, own);
	assert_true(maildir_tmp_leftover(own, &st, now));

	/* 36 hours: any name; but a file read or written since is in use */
	time_t old = now - 36 * 3600 - 60;
	age_file(f->box, foreign, old, old);
	st = stat_of(f->box, foreign);
	assert_true(maildir_tmp_leftover(foreign, &st, now));
	age_file(f->box, foreign, now, old);
	st = stat_of(f->box, foreign);
	assert_false(maildir_tmp_leftover(foreign, &st, now));
	age_file(f->box, other_host, old, old);
	st = stat_of(f->box, other_host);
	assert_true(maildir_tmp_leftover(other_host, &st, now));

	/* a folder is never one */
	char *sub = xasprintf("%s/tmp/%s.d", f->box, dead);
	assert_int_equal(mkdir(sub, 0700), 0);
	set_times(sub, old, old);
	assert_int_equal(stat(sub, &st), 0);
	assert_false(maildir_tmp_leftover(dead, &st, now));
	assert_int_equal(rmdir(sub), 0);
	free(sub);
	free(own);
	free(dead);
	free(alive);
	free(other_host);
}

/* The sweep removes the leftovers and keeps the rest; a Maildir without
 * tmp/ has nothing to remove. */
static void test_sweep_tmp(void **state)
{
	struct fixture *f = *state;
	time_t now = time(NULL), old = now - 37 * 3600;
	char *dead = name_with_pid(dead_pid());
	char *own = maildir_unique_name(0);
	put_file(f->box, "tmp", dead, "half a message", 14);
	put_file(f->box, "tmp", own, "being written", 13);
	put_file(f->box, "tmp", "old.foreign", "x", 1);
	put_file(f->box, "tmp", "new.foreign", "y", 1);
	age_file(f->box, "old.foreign", old, old);
	assert_int_equal(maildir_sweep_tmp(f->box), 2);
	assert_false(exists(f->box, "tmp", dead));
	assert_false(exists(f->box, "tmp", "old.foreign"));
	assert_true(exists(f->box, "tmp", own));
	assert_true(exists(f->box, "tmp", "new.foreign"));
	assert_int_equal(maildir_sweep_tmp(f->box), 0);
	char *gone = xasprintf("%s/nobody", f->dir);
	assert_int_equal(maildir_sweep_tmp(gone), 0);
	free(gone);
	free(dead);
	free(own);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_path),
		cmocka_unit_test(test_escape_host),
		cmocka_unit_test(test_unique_name),
		cmocka_unit_test(test_unique_part),
		cmocka_unit_test(test_uid_stable_across_folders_and_flags),
		cmocka_unit_test(test_uid_made_safe),
		cmocka_unit_test(test_name_fields),
		cmocka_unit_test(test_stream_crlf),
		cmocka_unit_test(test_stream_dot_stuffing),
		cmocka_unit_test(test_stream_top),
		cmocka_unit_test(test_stream_whole),
		cmocka_unit_test(test_stream_buffer_boundaries),
		cmocka_unit_test_setup_teardown(test_stream_open_missing, setup, teardown),
		cmocka_unit_test_setup_teardown(test_scan_lists_new_and_cur_oldest_first, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_scan_moves_new_to_cur_uids_unchanged, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_scan_duplicate_unique_parts, setup, teardown),
		cmocka_unit_test_setup_teardown(test_scan_empty_and_missing, setup, teardown),
		cmocka_unit_test_setup_teardown(test_create_folders, setup, teardown),
		cmocka_unit_test_setup_teardown(test_delete, setup, teardown),
		cmocka_unit_test_setup_teardown(test_move_to_cur_gone, setup, teardown),
		cmocka_unit_test_setup_teardown(test_lock_in_process, setup, teardown),
		cmocka_unit_test_setup_teardown(test_lock_across_processes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_lock_missing_folder, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tmp_leftover, setup, teardown),
		cmocka_unit_test_setup_teardown(test_sweep_tmp, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

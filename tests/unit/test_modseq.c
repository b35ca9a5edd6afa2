/* test_modseq: the MODSEQ store (modseq.c) and its use by mailbox.c
 * (RFC 7162): the file's text (last line wins, expunges, a torn tail
 * skipped past, a damaged header), MODSEQs persisted and read back,
 * bumped by a flag change and by an expunge and never by a listing that
 * found nothing new, a new UIDVALIDITY, the bound on the expunges
 * remembered, and through views: STORE, UNCHANGEDSINCE, a reopen keeping
 * every MODSEQ, and VANISHED (EARLIER) from the record and from below it. */
#define _GNU_SOURCE /* nftw */
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
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "store/mailbox.h"
#include "store/modseq.h"
#include "lib/util.h"
#include "unitfs.h"

struct fixture {
	char dir[64];
	char *root;              /* dir/bob: a user's Maildir */
};

static int setup(void **state)
{
	struct fixture *f = xcalloc(1, sizeof *f);
	memcpy(f->dir, "/tmp/posthorn-modseq-XXXXXX", sizeof "/tmp/posthorn-modseq-XXXXXX");
	if (!mkdtemp(f->dir))
		return -1;
	f->root = xasprintf("%s/bob", f->dir);
	char err[256];
	if (mailbox_prepare(f->root, err, sizeof err) < 0)
		return -1;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	int r = rm_tree(f->dir);
	free(f->root);
	free(f);
	return r;
}

static char *read_text(const char *path)
{
	FILE *fp = fopen(path, "r");
	assert_non_null(fp);
	char *buf = xcalloc(1, 1 << 20);
	size_t n = fread(buf, 1, (1 << 20) - 1, fp);
	buf[n] = '\0';
	assert_int_equal(fclose(fp), 0);
	return buf;
}

static char *modseq_file(const struct fixture *f)
{
	return xasprintf("%s/posthorn-modseq", f->root);
}

/* A table from the folder's file after n messages (UIDs 1..n, flags 0)
 * were listed under validity 7. */
static void listed(const struct fixture *f, struct modseq_table *t, uint32_t validity,
		   const uint32_t *uids, const uint32_t *flags, size_t n, uint64_t *out)
{
	char err[256];
	assert_int_equal(modseq_load(f->root, t, err, sizeof err), 0);
	struct modseq_msg *cur = xcalloc(n ? n : 1, sizeof *cur);
	for (size_t i = 0; i < n; i++) {
		cur[i].uid = uids[i];
		cur[i].flags = flags ? flags[i] : 0;
	}
	modseq_reconcile(t, validity, cur, n);
	for (size_t i = 0; out && i < n; i++)
		out[i] = cur[i].modseq;
	free(cur);
	assert_int_equal(modseq_store(f->root, t, err, sizeof err), 0);
}

/* ---- the file's text --------------------------------------------------------- */

static void test_parse(void **state)
{
	(void)state;
	struct modseq_table t;
	const char *text = "V7 H5 F1\n"
			   "1 2 0\n"
			   "2 3 8\n"
			   "1 6 1\n"     /* later: wins */
			   "X3 7\n"
			   "2 8 9\n"
			   "X2 9\n"      /* uid 2 expunged after its change */
			   "H12\n";
	assert_true(modseq_parse(text, strlen(text), &t));
	assert_int_equal(t.validity, 7);
	assert_int_equal(t.highest, 12);
	assert_int_equal(t.forgotten, 1);
	assert_int_equal(t.n, 1);
	assert_int_equal(t.v[0].uid, 1);
	assert_int_equal(t.v[0].modseq, 6);
	assert_int_equal(t.v[0].flags, 1);
	assert_int_equal(t.nx, 2);
	assert_int_equal(t.x[0].uid, 3);
	assert_int_equal(t.x[0].modseq, 7);
	assert_int_equal(t.x[1].uid, 2);
	assert_false(t.torn);
	modseq_free(&t);
	/* no header, a bad one, F above H: not a table */
	assert_false(modseq_parse("1 2 0\n", 6, &t));
	assert_false(modseq_parse("V0 H1 F0\n", 9, &t));
	assert_false(modseq_parse("V1 H1 F2\n", 9, &t));
	assert_false(modseq_parse("V1 H1 F0", 8, &t));
}

static void test_torn_tail_skipped(void **state)
{
	(void)state;
	struct modseq_table t;
	/* a crash in an append: a line without its end, zeros */
	const char text[] = "V7 H3 F0\n1 3 0\n2 40\0\0\0";
	assert_true(modseq_parse(text, sizeof text - 1, &t));
	assert_true(t.torn);
	assert_int_equal(t.n, 1);
	assert_int_equal(t.valid_len, 15);
	/* past every number the tail may have named, by its length */
	assert_true(t.highest >= 40 + 7);
	modseq_free(&t);
}

/* ---- persisted, bumped ------------------------------------------------------- */

static void test_persist_and_reload(void **state)
{
	struct fixture *f = *state;
	struct modseq_table t;
	const uint32_t uids[] = {1, 2, 3};
	uint64_t ms[3];
	time_t now = time(NULL);
	listed(f, &t, 7, uids, NULL, 3, ms);
	/* a new file starts at the time in milliseconds (never a lost file's) */
	assert_true(ms[0] > (uint64_t)now * 1000);
	assert_true(ms[0] <= (uint64_t)time(NULL) * 1000 + 1);
	assert_int_equal(ms[1], ms[0] + 1);
	assert_int_equal(ms[2], ms[0] + 2);
	assert_int_equal(t.highest, ms[2]);
	modseq_free(&t);
	/* read back: the same; a listing that finds nothing new changes nothing */
	uint64_t again[3];
	listed(f, &t, 7, uids, NULL, 3, again);
	assert_memory_equal(ms, again, sizeof ms);
	assert_int_equal(t.highest, ms[2]);
	assert_int_equal(t.out_n, 0);
	modseq_free(&t);
}

static void test_flag_change_and_expunge_bump(void **state)
{
	struct fixture *f = *state;
	struct modseq_table t;
	const uint32_t uids[] = {1, 2, 3};
	uint32_t flags[] = {0, 0, 0};
	uint64_t first[3];
	listed(f, &t, 7, uids, flags, 3, first);
	uint64_t b = first[0] - 1;         /* the numbers below are b + n */
	modseq_free(&t);
	/* 2's flags changed on disk; 1 expunged */
	const uint32_t left[] = {2, 3};
	const uint32_t left_flags[] = {0, 4};
	uint64_t ms[2];
	listed(f, &t, 7, left, left_flags, 2, ms);
	assert_int_equal(ms[0], b + 2);        /* unchanged */
	assert_int_equal(t.highest, b + 5);    /* one expunge, one change */
	assert_int_equal(ms[1], b + 5);
	assert_int_equal(t.nx, 1);
	assert_int_equal(t.x[0].uid, 1);
	assert_int_equal(t.x[0].modseq, b + 4);
	/* a STORE under the lock */
	assert_int_equal(modseq_set(&t, 2, 1), b + 6);
	assert_int_equal(modseq_set(&t, 9, 1), 0);
	char err[256];
	assert_int_equal(modseq_store(f->root, &t, err, sizeof err), 0);
	modseq_free(&t);
	assert_int_equal(modseq_load(f->root, &t, err, sizeof err), 0);
	assert_int_equal(t.highest, b + 6);
	assert_int_equal(modseq_of(&t, 2), b + 6);
	assert_int_equal(modseq_of(&t, 3), b + 5);
	assert_int_equal(modseq_of(&t, 1), 0);
	assert_int_equal(t.nx, 1);
	modseq_free(&t);
}

static void test_new_uidvalidity_forgets(void **state)
{
	struct fixture *f = *state;
	struct modseq_table t;
	const uint32_t uids[] = {1, 2};
	uint64_t first[2];
	listed(f, &t, 7, uids, NULL, 2, first);
	modseq_free(&t);
	uint64_t ms[2];
	listed(f, &t, 8, uids, NULL, 2, ms);
	/* the numbers go on rising; nothing of the old UIDs is remembered */
	assert_int_equal(ms[0], first[1] + 1);
	assert_int_equal(t.nx, 0);
	assert_int_equal(t.forgotten, first[1]);
	modseq_free(&t);
}

static void test_torn_file_never_reused(void **state)
{
	struct fixture *f = *state;
	char *path = modseq_file(f);
	write_file(path, "V7 H2 F0\n1 1 0\n2 2 0\n3 900", strlen("V7 H2 F0\n1 1 0\n2 2 0\n3 900"));
	struct modseq_table t;
	const uint32_t uids[] = {1, 2, 3};
	uint64_t ms[3];
	listed(f, &t, 7, uids, NULL, 3, ms);
	assert_true(ms[2] > 900);
	modseq_free(&t);
	/* the tail was cut and the file reads whole again */
	char *text = read_text(path);
	assert_null(strstr(text, "3 900\n"));
	assert_true(modseq_parse(text, strlen(text), &t));
	assert_false(t.torn);
	assert_int_equal(modseq_of(&t, 3), ms[2]);
	modseq_free(&t);
	free(text);
	/* a damaged file: what it named is not given again either */
	write_file(path, "garbage 5000\n", strlen("garbage 5000\n"));
	char err[256];
	assert_int_equal(modseq_load(f->root, &t, err, sizeof err), 0);
	assert_true(t.rewrite);
	assert_true(t.highest > 5000 && t.highest >= (uint64_t)time(NULL) * 1000 - 1000);
	modseq_free(&t);
	free(path);
}

static void test_expunge_memory_bound(void **state)
{
	struct fixture *f = *state;
	size_t n = MODSEQ_EXPUNGED_MAX + 5;
	uint32_t *uids = xcalloc(n, sizeof *uids);
	for (size_t i = 0; i < n; i++)
		uids[i] = (uint32_t)i + 1;
	struct modseq_table t;
	uint64_t *first = xcalloc(n, sizeof *first);
	listed(f, &t, 7, uids, NULL, n, first);
	uint64_t b = first[0] - 1;
	free(first);
	modseq_free(&t);
	/* all expunged: the oldest five are forgotten */
	listed(f, &t, 7, uids, NULL, 0, NULL);
	assert_int_equal(t.nx, MODSEQ_EXPUNGED_MAX);
	assert_int_equal(t.forgotten, b + n + 5);
	assert_int_equal(t.x[0].uid, 6);
	modseq_free(&t);
	char err[256];
	assert_int_equal(modseq_load(f->root, &t, err, sizeof err), 0);
	assert_int_equal(t.nx, MODSEQ_EXPUNGED_MAX);
	assert_int_equal(t.forgotten, b + n + 5);
	assert_int_equal(t.highest, b + 2 * n);
	modseq_free(&t);
	free(uids);
}

/* ---- through views ------------------------------------------------------------ */

static void deliver(const struct fixture *f, int i)
{
	char *path = xasprintf("%s/new/%d.M%dP1Q1.test,S=6,W=7", f->root, 1700000000 + i, i);
	write_file(path, "hello\n", strlen("hello\n"));
	free(path);
}

static struct mailbox *open_inbox(const struct fixture *f)
{
	struct mailbox *mb;
	char err[256];
	assert_int_equal(mailbox_open(f->root, "INBOX", false, &mb, err, sizeof err), MAILBOX_OK);
	return mb;
}

static bool match_seq(void *arg, size_t seq, uint32_t uid)
{
	(void)uid;
	return seq == *(size_t *)arg;
}

static void test_views_store_reopen(void **state)
{
	struct fixture *f = *state;
	for (int i = 1; i <= 3; i++)
		deliver(f, i);
	struct mailbox *mb = open_inbox(f);
	uint64_t h = mailbox_highestmodseq(mb);
	assert_int_equal(mailbox_msg(mb, 3)->modseq, h);
	assert_int_equal(mailbox_msg(mb, 1)->modseq, h - 2);
	size_t seq = 2;
	char err[256];
	assert_int_equal(mailbox_store(mb, match_seq, &seq, MAILBOX_STORE_ADD, MAILBOX_SEEN, err,
				       sizeof err), MAILBOX_OK);
	assert_int_equal(mailbox_msg(mb, 2)->modseq, h + 1);
	assert_int_equal(mailbox_highestmodseq(mb), h + 1);
	/* UNCHANGEDSINCE below its MODSEQ: refused, nothing changed */
	struct mailbox_store_req q = {match_seq, &seq, MAILBOX_STORE_ADD, MAILBOX_FLAGGED, h};
	struct mailbox_uids refused;
	assert_int_equal(mailbox_store_cond(mb, &q, &refused, err, sizeof err), MAILBOX_OK);
	assert_int_equal(refused.n, 1);
	assert_int_equal(refused.v[0], mailbox_msg(mb, 2)->uid);
	mailbox_uids_free(&refused);
	assert_int_equal(mailbox_msg(mb, 2)->flags & MAILBOX_FLAGGED, 0);
	assert_int_equal(mailbox_highestmodseq(mb), h + 1);
	mailbox_close(mb);
	/* a new view (a restart) has the same numbers */
	mb = open_inbox(f);
	assert_int_equal(mailbox_highestmodseq(mb), h + 1);
	assert_int_equal(mailbox_msg(mb, 1)->modseq, h - 2);
	assert_int_equal(mailbox_msg(mb, 2)->modseq, h + 1);
	struct mailbox_status st;
	assert_int_equal(mailbox_status(f->root, "INBOX", &st, err, sizeof err), MAILBOX_OK);
	assert_int_equal(st.highestmodseq, h + 1);
	mailbox_close(mb);
}

static void test_views_vanished(void **state)
{
	struct fixture *f = *state;
	for (int i = 1; i <= 4; i++)
		deliver(f, i);
	struct mailbox *mb = open_inbox(f);
	uint64_t h = mailbox_highestmodseq(mb);
	size_t seq = 3;
	char err[256];
	assert_int_equal(mailbox_store(mb, match_seq, &seq, MAILBOX_STORE_ADD, MAILBOX_DELETED, err,
				       sizeof err), MAILBOX_OK);
	assert_int_equal(mailbox_expunge(mb, NULL, NULL, err, sizeof err), MAILBOX_OK);
	struct mailbox_change ch;
	while (mailbox_next_change(mb, &ch))
		;
	assert_true(mailbox_highestmodseq(mb) > h + 1);
	struct mailbox_uid_ranges gone;
	assert_int_equal(mailbox_vanished(mb, h, &gone, err, sizeof err), MAILBOX_OK);
	assert_int_equal(gone.n, 1);
	assert_int_equal(gone.v[0].lo, 3);
	assert_int_equal(gone.v[0].hi, 3);
	mailbox_uid_ranges_free(&gone);
	assert_int_equal(mailbox_vanished(mb, mailbox_highestmodseq(mb), &gone, err, sizeof err),
			 MAILBOX_OK);
	assert_int_equal(gone.n, 0);
	mailbox_uid_ranges_free(&gone);
	mailbox_close(mb);
	/* from below what is remembered: every UID that is not there */
	char *path = modseq_file(f);
	char *text = read_text(path);
	char *body = strchr(text, '\n');
	assert_non_null(body);
	char *forgot = xasprintf("V%lu H%llu F%llu%s", strtoul(text + 1, NULL, 10),
				 (unsigned long long)h + 2, (unsigned long long)h + 2, body);
	write_file(path, forgot, strlen(forgot));
	mb = open_inbox(f);
	assert_int_equal(mailbox_vanished(mb, h, &gone, err, sizeof err), MAILBOX_OK);
	assert_int_equal(gone.n, 1);
	assert_int_equal(gone.v[0].lo, 3);
	mailbox_uid_ranges_free(&gone);
	mailbox_close(mb);
	free(forgot);
	free(text);
	free(path);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse),
		cmocka_unit_test(test_torn_tail_skipped),
		cmocka_unit_test_setup_teardown(test_persist_and_reload, setup, teardown),
		cmocka_unit_test_setup_teardown(test_flag_change_and_expunge_bump, setup, teardown),
		cmocka_unit_test_setup_teardown(test_new_uidvalidity_forgets, setup, teardown),
		cmocka_unit_test_setup_teardown(test_torn_file_never_reused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_expunge_memory_bound, setup, teardown),
		cmocka_unit_test_setup_teardown(test_views_store_reopen, setup, teardown),
		cmocka_unit_test_setup_teardown(test_views_vanished, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

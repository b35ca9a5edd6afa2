/* test_mailbox: the IMAP store on a Maildir++ tree in a temporary
 * directory — names and LIST patterns, special-use folders and
 * subscriptions, CREATE/DELETE/RENAME (INBOX too, children, \Noselect), the
 * UID index (stable across reopen, rebuilt with a new UIDVALIDITY, grown by
 * appends, a torn tail ignored, compacted), COPY/APPEND as jobs, \Recent,
 * concurrent views seeing each other's flag changes, expunges and new mail
 * in the order RFC 3501 §7 wants, STORE, EXPUNGE and UID EXPUNGE, APPEND
 * (APPENDUID), COPY/MOVE (COPYUID), STATUS, the inotify watch, and a folder
 * of 100,000 messages. */
#define _GNU_SOURCE /* nftw */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
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
#include "store/maildir.h"
#include "lib/util.h"

struct fixture {
	char dir[64];
	char *root;              /* dir/bob: the user's Maildir */
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
	memcpy(f->dir, "/tmp/posthorn-mailbox-XXXXXX", sizeof "/tmp/posthorn-mailbox-XXXXXX");
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
	mailbox_cache_clear();
	int r = nftw(f->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	free(f->root);
	free(f);
	return r;
}

/* ---- helpers ----------------------------------------------------------- */

static char *folder_dir(const struct fixture *f, const char *name)
{
	if (strcmp(name, "INBOX") == 0)
		return xstrdup(f->root);
	return xasprintf("%s/.%s", f->root, name);
}

/* A message as maildir_deliver writes it: LF line ends, S= and W= in the
 * name, into sub ("new" or "cur") of folder.  Returns the file name. */
static char *deliver(const struct fixture *f, const char *folder, const char *sub, long long when,
		     int n, const char *info)
{
	char body[128];
	int len = snprintf(body, sizeof body, "Subject: message %d\n\nbody %d\n", n, n);
	char *name = xasprintf("%lld.M%dP1Q%d.test,S=%d,W=%d%s", when, n, n, len, len + 3,
			       info ? info : "");
	char *dir = folder_dir(f, folder);
	char *path = xasprintf("%s/%s/%s", dir, sub, name);
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write_all(fd, body, (size_t)len), 0);
	close(fd);
	free(path);
	free(dir);
	return name;
}

static void deliver_new(const struct fixture *f, const char *folder, int n)
{
	free(deliver(f, folder, "new", 1700000000LL + n, n, NULL));
}

static struct mailbox *open_box(const struct fixture *f, const char *name, bool ro)
{
	struct mailbox *mb = NULL;
	char err[256] = "";
	enum mailbox_result r = mailbox_open(f->root, name, ro, &mb, err, sizeof err);
	if (r != MAILBOX_OK)
		fail_msg("open %s: %d %s", name, r, err);
	return mb;
}

static void sync_box(struct mailbox *mb, unsigned flags)
{
	char err[256] = "";
	enum mailbox_result r = mailbox_sync(mb, flags | MAILBOX_SYNC_FORCE, err, sizeof err);
	if (r != MAILBOX_OK)
		fail_msg("sync: %d %s", r, err);
}

/* The queued changes as text: "EXPUNGE 3,EXISTS 4,RECENT 1,FLAGS 2=5". */
static char *changes(struct mailbox *mb)
{
	char *out = xstrdup("");
	struct mailbox_change c;
	while (mailbox_next_change(mb, &c)) {
		static const char *const kinds[] = {"EXPUNGE", "EXISTS", "RECENT", "FLAGS"};
		char *next;
		if (c.kind == MAILBOX_CHANGE_FLAGS)
			next = xasprintf("%s%s%s %zu=%u", out, *out ? "," : "", kinds[c.kind], c.n,
					 c.flags);
		else
			next = xasprintf("%s%s%s %zu", out, *out ? "," : "", kinds[c.kind], c.n);
		free(out);
		out = next;
	}
	assert_false(mailbox_changes_pending(mb));
	return out;
}

static void assert_changes(struct mailbox *mb, const char *want)
{
	char *got = changes(mb);
	if (strcmp(got, want) != 0)
		fail_msg("changes: got \"%s\", want \"%s\"", got, want);
	free(got);
}

static int count_files(const char *dir, const char *sub)
{
	char *p = xasprintf("%s/%s", dir, sub);
	DIR *d = opendir(p);
	free(p);
	if (!d)
		return -1;
	int n = 0;
	struct dirent *de;
	while ((de = readdir(d)))
		n += de->d_name[0] != '.';
	closedir(d);
	return n;
}

static char *read_file_text(const char *path)
{
	FILE *fp = fopen(path, "r");
	assert_non_null(fp);
	char *buf = xcalloc(1, 1 << 16);
	size_t n = fread(buf, 1, (1 << 16) - 1, fp);
	buf[n] = '\0';
	fclose(fp);
	return buf;
}

static void write_text(const char *path, const char *text)
{
	FILE *fp = fopen(path, "w");
	assert_non_null(fp);
	fputs(text, fp);
	fclose(fp);
}

/* match functions for the operations */
struct seqs {
	size_t v[8];
	size_t n;
};

static bool match_seqs(void *arg, size_t seq, uint32_t uid)
{
	(void)uid;
	const struct seqs *s = arg;
	for (size_t i = 0; i < s->n; i++)
		if (s->v[i] == seq)
			return true;
	return false;
}

static bool match_uid_range(void *arg, size_t seq, uint32_t uid)
{
	(void)seq;
	const uint32_t *r = arg;
	return uid >= r[0] && uid <= r[1];
}

static bool match_all(void *arg, size_t seq, uint32_t uid)
{
	(void)arg;
	(void)seq;
	(void)uid;
	return true;
}

static void store(struct mailbox *mb, size_t seq, enum mailbox_store_op op, unsigned flags)
{
	struct seqs s = {{seq}, 1};
	char err[256] = "";
	enum mailbox_result r = mailbox_store(mb, match_seqs, &s, op, flags, err, sizeof err);
	if (r != MAILBOX_OK)
		fail_msg("store: %d %s", r, err);
}

static struct mailbox_folder *find_folder(struct mailbox_folder_list *l, const char *name)
{
	for (size_t i = 0; i < l->n; i++)
		if (strcmp(l->v[i].name, name) == 0)
			return &l->v[i];
	return NULL;
}

/* ---- names and flags ---------------------------------------------------- */

static void test_names(void **state)
{
	(void)state;
	assert_true(mailbox_name_valid("INBOX"));
	assert_true(mailbox_name_valid("inbox"));
	assert_true(mailbox_name_valid("Work"));
	assert_true(mailbox_name_valid("Work.2026.Q1"));
	assert_true(mailbox_name_valid("&AMQ-pfel")); /* modified UTF-7 */
	assert_false(mailbox_name_valid(""));
	assert_false(mailbox_name_valid(".Work"));
	assert_false(mailbox_name_valid("Work."));
	assert_false(mailbox_name_valid("A..B"));
	assert_false(mailbox_name_valid("../etc"));
	assert_false(mailbox_name_valid("a/b"));
	assert_false(mailbox_name_valid("tab\there"));
	assert_false(mailbox_name_valid("nl\nhere"));
	assert_false(mailbox_name_valid("\xc3\xa4"));
	assert_false(mailbox_name_valid("INBOX.child"));
	char longname[MAILBOX_NAME_MAX + 2];
	memset(longname, 'a', sizeof longname - 1);
	longname[sizeof longname - 1] = '\0';
	assert_false(mailbox_name_valid(longname));
	longname[MAILBOX_NAME_MAX] = '\0';
	assert_true(mailbox_name_valid(longname));
	assert_true(mailbox_is_inbox("InBoX"));
	assert_false(mailbox_is_inbox("INBOX2"));
	/* any printable US-ASCII but "/", "%" and "*": the delimiter is "." */
	assert_true(mailbox_name_valid("foo\\bar"));
	assert_true(mailbox_name_valid("say \"hi\""));
	assert_true(mailbox_name_valid("a~b#c!d"));
	assert_false(mailbox_name_valid("a%b"));
	assert_false(mailbox_name_valid("a*b"));
}

/* RFC 3501 §5.1.3: modified UTF-7 only as an encoder writes it. */
static void test_names_modified_utf7(void **state)
{
	(void)state;
	static const char *const good[] = {
	    "A&-B",                 /* "&" itself */
	    "&-",                   /* only "&" */
	    "Entw&APw-rfe",         /* U+00FC */
	    "&ZeVnLIqe-",           /* three CJK characters in one run */
	    "&2D3eAA-",             /* U+1F600 as a surrogate pair */
	    "&AOQ-x&AOQ-",          /* two runs with a character between */
	    "&AOQ-&-",              /* a run, then "&" itself */
	};
	static const char *const bad[] = {
	    "&",                    /* no closing "-" */
	    "&Jjo",                 /* no closing "-" */
	    "&AGE-",                /* "a" written encoded */
	    "&ACY-",                /* "&" written encoded */
	    "&Jjo-&Jjo-",           /* two runs side by side */
	    "&A-",                  /* six bits: no UTF-16 unit */
	    "&AOR-",                /* padding bits set */
	    "&2D0-",                /* a high surrogate alone */
	    "&3gA-",                /* a low surrogate alone */
	    "&Jj/-",                /* "/" is "," in modified BASE64 */
	    "&Jjo=-",               /* no padding characters */
	    "&AAE-",                /* U+0001, a control character */
	};
	for (size_t i = 0; i < ARRAY_LEN(good); i++)
		if (!mailbox_name_valid(good[i]))
			fail_msg("refused: %s", good[i]);
	for (size_t i = 0; i < ARRAY_LEN(bad); i++)
		if (mailbox_name_valid(bad[i]))
			fail_msg("accepted: %s", bad[i]);
}

static void test_match(void **state)
{
	(void)state;
	assert_true(mailbox_match("*", "INBOX"));
	assert_true(mailbox_match("*", "A.B.C"));
	assert_true(mailbox_match("%", "A"));
	assert_false(mailbox_match("%", "A.B"));
	assert_true(mailbox_match("A.%", "A.B"));
	assert_false(mailbox_match("A.%", "A.B.C"));
	assert_true(mailbox_match("A.*", "A.B.C"));
	assert_true(mailbox_match("inbox", "INBOX"));
	assert_true(mailbox_match("IN%", "INBOX"));
	assert_true(mailbox_match("inb*", "INBOX"));
	assert_false(mailbox_match("inbox.*", "INBOX"));
	assert_false(mailbox_match("INB*", "inbound")); /* other names: exact case */
	assert_true(mailbox_match("S*t", "Sent"));
	assert_false(mailbox_match("S*t", "Sentx"));
	assert_false(mailbox_match("Sent", "sent"));
	assert_true(mailbox_match("%.%", "A.B"));
	assert_false(mailbox_match("", "A"));
	assert_true(mailbox_match("*%*", "A.B"));
	assert_true(mailbox_match("%%.%", "Ab.C"));
	assert_false(mailbox_match("%%", "A.B"));
	assert_true(mailbox_match("A*B*C", "A.xB.yC"));
	assert_false(mailbox_match("A*B*C", "A.xB.yD"));
	/* many wildcards against a long name: no exponential backtracking */
	char pattern[2 * 40 + 2], name[200];
	for (int i = 0; i < 40; i++) {
		pattern[2 * i] = '*';
		pattern[2 * i + 1] = 'a';
	}
	pattern[80] = 'b';
	pattern[81] = '\0';
	memset(name, 'a', sizeof name - 1);
	name[sizeof name - 1] = '\0';
	clock_t t0 = clock();
	for (int i = 0; i < 100; i++)
		assert_false(mailbox_match(pattern, name));
	pattern[0] = '%';
	for (int i = 0; i < 100; i++)
		assert_false(mailbox_match(pattern, name));
	assert_true((double)(clock() - t0) / CLOCKS_PER_SEC < 10);
}

static void test_flags(void **state)
{
	(void)state;
	unsigned f = 0;
	assert_true(mailbox_flag_parse("\\seen", &f));
	assert_int_equal(f, MAILBOX_SEEN);
	assert_true(mailbox_flag_parse("\\DELETED", &f));
	assert_int_equal(f, MAILBOX_DELETED);
	assert_false(mailbox_flag_parse("\\Recent", &f));
	assert_false(mailbox_flag_parse("$Junk", &f));
	assert_string_equal(mailbox_flag_name(MAILBOX_ANSWERED), "\\Answered");
	assert_string_equal(mailbox_flag_name(MAILBOX_RECENT), "\\Recent");
	assert_null(mailbox_flag_name(MAILBOX_SEEN | MAILBOX_DRAFT));
	assert_string_equal(mailbox_special_attr(MAILBOX_SPECIAL_TRASH), "\\Trash");
	assert_null(mailbox_special_attr(MAILBOX_SPECIAL_NONE));
	assert_null(mailbox_special_attr(MAILBOX_SPECIAL_SENT | MAILBOX_SPECIAL_JUNK));
	unsigned u = 0;
	assert_true(mailbox_special_parse("\\archive", &u));
	assert_int_equal(u, MAILBOX_SPECIAL_ARCHIVE);
	assert_false(mailbox_special_parse("\\All", &u));
	assert_false(mailbox_special_parse("\\Flagged", &u));
	assert_false(mailbox_special_parse("Sent", &u));
}

/* ---- folders ------------------------------------------------------------ */

static void test_prepare_special_folders(void **state)
{
	struct fixture *f = *state;
	struct mailbox_folder_list l;
	char err[256];
	assert_int_equal(mailbox_folders(f->root, &l, err, sizeof err), 0);
	assert_int_equal(l.n, 5);
	assert_string_equal(l.v[0].name, "INBOX");
	assert_int_equal(find_folder(&l, "Sent")->special, MAILBOX_SPECIAL_SENT);
	assert_int_equal(find_folder(&l, "Drafts")->special, MAILBOX_SPECIAL_DRAFTS);
	assert_int_equal(find_folder(&l, "Trash")->special, MAILBOX_SPECIAL_TRASH);
	assert_int_equal(find_folder(&l, "Junk")->special, MAILBOX_SPECIAL_JUNK);
	assert_false(find_folder(&l, "Trash")->has_children);
	mailbox_folders_free(&l);
	struct mailbox_names subs;
	assert_int_equal(mailbox_subscriptions(f->root, &subs, err, sizeof err), 0);
	assert_int_equal(subs.n, 5);
	assert_string_equal(subs.v[0], "INBOX");
	assert_string_equal(subs.v[3], "Trash");
	mailbox_names_free(&subs);
	/* a deleted special folder is not forced back at the next login */
	assert_int_equal(mailbox_delete(f->root, "Junk", err, sizeof err), MAILBOX_OK);
	assert_int_equal(mailbox_prepare(f->root, err, sizeof err), 0);
	assert_int_equal(mailbox_folders(f->root, &l, err, sizeof err), 0);
	assert_int_equal(l.n, 4);
	assert_null(find_folder(&l, "Junk"));
	mailbox_folders_free(&l);
}

static unsigned uses_of(const struct fixture *f, const char *name)
{
	struct mailbox_folder_list l;
	char err[256];
	assert_int_equal(mailbox_folders(f->root, &l, err, sizeof err), 0);
	struct mailbox_folder *x = find_folder(&l, name);
	if (!x)
		fail_msg("no folder %s", name);
	unsigned u = x->special;
	mailbox_folders_free(&l);
	return u;
}

/* RFC 6154: the uses are the folder's own, on disk with it. */
static void test_special_use_follows_the_folder(void **state)
{
	struct fixture *f = *state;
	char err[256];
	assert_int_equal(mailbox_rename(f->root, "Sent", "Sent Items", err, sizeof err),
			 MAILBOX_OK);
	assert_int_equal(uses_of(f, "Sent Items"), MAILBOX_SPECIAL_SENT);
	assert_int_equal(mailbox_create(f->root, "Sent", err, sizeof err), MAILBOX_OK);
	assert_int_equal(uses_of(f, "Sent"), MAILBOX_SPECIAL_NONE);
	/* a later login gives no second \Sent by name */
	assert_int_equal(mailbox_prepare(f->root, err, sizeof err), 0);
	assert_int_equal(uses_of(f, "Sent"), MAILBOX_SPECIAL_NONE);
	/* CREATE with uses; a child keeps its own through its parent's RENAME */
	unsigned two = MAILBOX_SPECIAL_ARCHIVE | MAILBOX_SPECIAL_JUNK;
	assert_int_equal(mailbox_create_special(f->root, "Old.Mail", two, err, sizeof err),
			 MAILBOX_OK);
	assert_int_equal(uses_of(f, "Old"), MAILBOX_SPECIAL_NONE);
	assert_int_equal(mailbox_rename(f->root, "Old", "Past", err, sizeof err), MAILBOX_OK);
	assert_int_equal(uses_of(f, "Past.Mail"), two);
	/* DELETE takes them along; a new folder of the name starts without */
	assert_int_equal(mailbox_delete(f->root, "Past.Mail", err, sizeof err), MAILBOX_OK);
	assert_int_equal(mailbox_create(f->root, "Past.Mail", err, sizeof err), MAILBOX_OK);
	assert_int_equal(uses_of(f, "Past.Mail"), MAILBOX_SPECIAL_NONE);
}

/* A store from before uses were stored (subscriptions, no use files):
 * the default folders get theirs at the next login, once. */
static void test_special_use_for_an_older_store(void **state)
{
	struct fixture *f = *state;
	char err[256];
	char *root = xasprintf("%s/carol", f->dir);
	assert_int_equal(maildir_create(root, err, sizeof err), 0);
	static const char *const dirs[] = {".Sent", ".Trash", ".Sent Items"};
	for (size_t i = 0; i < ARRAY_LEN(dirs); i++) {
		char *d = xasprintf("%s/%s", root, dirs[i]);
		assert_int_equal(maildir_create(d, err, sizeof err), 0);
		free(d);
	}
	/* "Sent Items" already holds \Sent: "Sent" does not get it too */
	char *use = xasprintf("%s/.Sent Items/posthorn-special-use", root);
	FILE *fp = fopen(use, "w");
	assert_non_null(fp);
	assert_true(fputs("\\Sent\n", fp) >= 0);
	assert_int_equal(fclose(fp), 0);
	free(use);
	char *subs = xasprintf("%s/subscriptions", root);
	fp = fopen(subs, "w");
	assert_non_null(fp);
	assert_int_equal(fclose(fp), 0);
	free(subs);
	assert_int_equal(mailbox_prepare(root, err, sizeof err), 0);
	struct fixture carol = {.root = root};
	assert_int_equal(uses_of(&carol, "Sent Items"), MAILBOX_SPECIAL_SENT);
	assert_int_equal(uses_of(&carol, "Sent"), MAILBOX_SPECIAL_NONE);
	assert_int_equal(uses_of(&carol, "Trash"), MAILBOX_SPECIAL_TRASH);
	/* no Drafts or Junk were made: the first login is long past */
	struct mailbox_folder_list l;
	assert_int_equal(mailbox_folders(root, &l, err, sizeof err), 0);
	assert_null(find_folder(&l, "Drafts"));
	mailbox_folders_free(&l);
	free(root);
}

static void test_create(void **state)
{
	struct fixture *f = *state;
	char err[256];
	assert_int_equal(mailbox_create(f->root, "Work.2026.Q1", err, sizeof err), MAILBOX_OK);
	assert_int_equal(mailbox_create(f->root, "Work.2026.Q1", err, sizeof err),
			 MAILBOX_ERR_EXISTS);
	assert_int_equal(mailbox_create(f->root, "Work", err, sizeof err), MAILBOX_ERR_EXISTS);
	assert_int_equal(mailbox_create(f->root, "inbox", err, sizeof err), MAILBOX_ERR_EXISTS);
	assert_int_equal(mailbox_create(f->root, "Lists.", err, sizeof err), MAILBOX_OK);
	assert_int_equal(mailbox_create(f->root, "../evil", err, sizeof err), MAILBOX_ERR_NAME);
	assert_int_equal(mailbox_create(f->root, "a/b", err, sizeof err), MAILBOX_ERR_NAME);
	assert_int_equal(mailbox_create(f->root, ".hidden", err, sizeof err), MAILBOX_ERR_NAME);
	assert_non_null(strstr(err, "empty hierarchy level"));
	assert_int_equal(mailbox_create(f->root, "&AGE-", err, sizeof err), MAILBOX_ERR_NAME);
	assert_non_null(strstr(err, "printable US-ASCII written encoded"));
	assert_int_equal(mailbox_create(f->root, "back\\slash", err, sizeof err), MAILBOX_OK);
	char longest[MAILBOX_NAME_MAX + 1];
	memset(longest, 'L', MAILBOX_NAME_MAX);
	longest[MAILBOX_NAME_MAX] = '\0';
	assert_int_equal(mailbox_create(f->root, longest, err, sizeof err), MAILBOX_OK);
	assert_int_equal(mailbox_delete(f->root, longest, err, sizeof err), MAILBOX_OK);
	char *evil = xasprintf("%s/../evil", f->root);
	struct stat st;
	assert_int_equal(stat(evil, &st), -1);
	free(evil);
	struct mailbox_folder_list l;
	assert_int_equal(mailbox_folders(f->root, &l, err, sizeof err), 0);
	assert_non_null(find_folder(&l, "Lists"));
	struct mailbox_folder *w = find_folder(&l, "Work");
	assert_non_null(w);
	assert_true(w->has_children);
	assert_false(w->noselect);
	assert_true(find_folder(&l, "Work.2026")->has_children);
	assert_false(find_folder(&l, "Work.2026.Q1")->has_children);
	assert_false(find_folder(&l, "Lists")->has_children);
	/* sorted, INBOX first */
	for (size_t i = 2; i < l.n; i++)
		assert_true(strcmp(l.v[i - 1].name, l.v[i].name) < 0);
	mailbox_folders_free(&l);
	/* every new folder is a Maildir and can be selected */
	struct mailbox *mb = open_box(f, "Work.2026", false);
	assert_int_equal(mailbox_count(mb), 0);
	assert_true(mailbox_uidvalidity(mb) > 0);
	assert_int_equal(mailbox_uidnext(mb), 1);
	mailbox_close(mb);
}

static void test_implied_parent_noselect(void **state)
{
	struct fixture *f = *state;
	char err[256];
	/* another tool made ".X.Y" without ".X" */
	char *d = xasprintf("%s/.X.Y", f->root);
	assert_int_equal(maildir_create(d, err, sizeof err), 0);
	free(d);
	struct mailbox_folder_list l;
	assert_int_equal(mailbox_folders(f->root, &l, err, sizeof err), 0);
	struct mailbox_folder *x = find_folder(&l, "X");
	assert_non_null(x);
	assert_true(x->noselect);
	assert_true(x->has_children);
	assert_false(find_folder(&l, "X.Y")->noselect);
	mailbox_folders_free(&l);
	struct mailbox *mb = NULL;
	assert_int_equal(mailbox_open(f->root, "X", false, &mb, err, sizeof err),
			 MAILBOX_ERR_NOSELECT);
	assert_int_equal(mailbox_open(f->root, "Nothing", false, &mb, err, sizeof err),
			 MAILBOX_ERR_NONEXISTENT);
	assert_null(mb);
	/* CREATE of the implied parent makes it a real folder */
	assert_int_equal(mailbox_create(f->root, "X", err, sizeof err), MAILBOX_OK);
	mb = open_box(f, "X", true);
	mailbox_close(mb);
	/* a directory that is no Maildir is listed, but \Noselect */
	d = xasprintf("%s/.Plain", f->root);
	assert_int_equal(mkdir(d, 0700), 0);
	free(d);
	assert_int_equal(mailbox_folders(f->root, &l, err, sizeof err), 0);
	assert_true(find_folder(&l, "Plain")->noselect);
	assert_false(find_folder(&l, "X")->noselect);
	mailbox_folders_free(&l);
}

static void test_many_folders(void **state)
{
	struct fixture *f = *state;
	char err[256];
	/* one deep folder made by another tool: 79 implied parents */
	char name[400] = "d0";
	for (int i = 1; i < 80; i++) {
		size_t len = strlen(name);
		snprintf(name + len, sizeof name - len, ".d%d", i % 10);
	}
	char *d = xasprintf("%s/.%s", f->root, name);
	assert_int_equal(maildir_create(d, err, sizeof err), 0);
	free(d);
	/* and 3,000 siblings, each with a child */
	for (int i = 0; i < 3000; i++) {
		d = xasprintf("%s/.s%04d.c", f->root, i);
		assert_int_equal(mkdir(d, 0700), 0);
		free(d);
	}
	struct mailbox_folder_list l;
	double t0 = (double)clock() / CLOCKS_PER_SEC;
	assert_int_equal(mailbox_folders(f->root, &l, err, sizeof err), 0);
	double t = (double)clock() / CLOCKS_PER_SEC - t0;
	assert_int_equal(l.n, 5 + 80 + 6000);
	assert_true(find_folder(&l, "d0.d1")->noselect);
	assert_true(find_folder(&l, "d0.d1")->has_children);
	assert_false(find_folder(&l, name)->has_children);
	assert_true(find_folder(&l, "s0042")->has_children);
	assert_true(find_folder(&l, "s0042")->noselect);
	assert_true(find_folder(&l, "s0042.c")->noselect); /* no cur/ */
	assert_true(t < 10);
	mailbox_folders_free(&l);
	/* CREATE stops at the limit */
	for (int i = 0; i < MAILBOX_FOLDERS_MAX - 3000 - 5; i++) {
		d = xasprintf("%s/.t%05d", f->root, i);
		assert_int_equal(mkdir(d, 0700), 0);
		free(d);
	}
	assert_int_equal(mailbox_create(f->root, "OneTooMany", err, sizeof err),
			 MAILBOX_ERR_LIMIT);
}

static void test_delete(void **state)
{
	struct fixture *f = *state;
	char err[256];
	assert_int_equal(mailbox_delete(f->root, "INBOX", err, sizeof err), MAILBOX_ERR_INBOX);
	assert_int_equal(mailbox_delete(f->root, "Nope", err, sizeof err), MAILBOX_ERR_NONEXISTENT);
	assert_int_equal(mailbox_delete(f->root, "a/b", err, sizeof err), MAILBOX_ERR_NAME);
	assert_int_equal(mailbox_create(f->root, "P.C", err, sizeof err), MAILBOX_OK);
	deliver_new(f, "P", 1);
	deliver_new(f, "P.C", 2);
	/* RFC 3501 §6.3.4: with children the messages go, the name stays \Noselect */
	assert_int_equal(mailbox_delete(f->root, "P", err, sizeof err), MAILBOX_OK);
	struct mailbox_folder_list l;
	assert_int_equal(mailbox_folders(f->root, &l, err, sizeof err), 0);
	assert_true(find_folder(&l, "P")->noselect);
	assert_true(find_folder(&l, "P")->has_children);
	mailbox_folders_free(&l);
	assert_int_equal(mailbox_delete(f->root, "P", err, sizeof err), MAILBOX_ERR_NOSELECT);
	/* the child keeps its message */
	struct mailbox *mb = open_box(f, "P.C", true);
	assert_int_equal(mailbox_count(mb), 1);
	mailbox_close(mb);
	assert_int_equal(mailbox_delete(f->root, "P.C", err, sizeof err), MAILBOX_OK);
	assert_int_equal(mailbox_folders(f->root, &l, err, sizeof err), 0);
	assert_null(find_folder(&l, "P"));
	assert_null(find_folder(&l, "P.C"));
	mailbox_folders_free(&l);
	/* a folder created again under the old name has a new UIDVALIDITY */
	assert_int_equal(mailbox_create(f->root, "Again", err, sizeof err), MAILBOX_OK);
	mb = open_box(f, "Again", false);
	uint32_t v1 = mailbox_uidvalidity(mb);
	mailbox_close(mb);
	assert_int_equal(mailbox_delete(f->root, "Again", err, sizeof err), MAILBOX_OK);
	assert_int_equal(mailbox_create(f->root, "Again", err, sizeof err), MAILBOX_OK);
	mb = open_box(f, "Again", false);
	assert_true(mailbox_uidvalidity(mb) > v1);
	mailbox_close(mb);
}

static void test_rename(void **state)
{
	struct fixture *f = *state;
	char err[256];
	assert_int_equal(mailbox_create(f->root, "A.B", err, sizeof err), MAILBOX_OK);
	deliver_new(f, "A", 1);
	deliver_new(f, "A.B", 2);
	struct mailbox *mb = open_box(f, "A", false);
	uint32_t validity = mailbox_uidvalidity(mb);
	mailbox_close(mb);
	assert_int_equal(mailbox_rename(f->root, "A", "Sent", err, sizeof err), MAILBOX_ERR_EXISTS);
	assert_int_equal(mailbox_rename(f->root, "A", "A.B.C", err, sizeof err), MAILBOX_ERR_NAME);
	assert_int_equal(mailbox_rename(f->root, "Nope", "Z", err, sizeof err),
			 MAILBOX_ERR_NONEXISTENT);
	assert_int_equal(mailbox_rename(f->root, "A", "bad/name", err, sizeof err),
			 MAILBOX_ERR_NAME);
	assert_int_equal(mailbox_rename(f->root, "A", "N.M", err, sizeof err), MAILBOX_OK);
	struct mailbox_folder_list l;
	assert_int_equal(mailbox_folders(f->root, &l, err, sizeof err), 0);
	assert_null(find_folder(&l, "A"));
	assert_null(find_folder(&l, "A.B"));
	assert_non_null(find_folder(&l, "N.M.B"));
	assert_false(find_folder(&l, "N")->noselect); /* the parent was created */
	mailbox_folders_free(&l);
	mb = open_box(f, "N.M", true);
	assert_int_equal(mailbox_count(mb), 1);
	assert_int_equal(mailbox_uidvalidity(mb), validity); /* the same messages, same UIDs */
	mailbox_close(mb);
	mb = open_box(f, "N.M.B", true);
	assert_int_equal(mailbox_count(mb), 1);
	mailbox_close(mb);
}

static void test_rename_inbox(void **state)
{
	struct fixture *f = *state;
	char err[256];
	deliver_new(f, "INBOX", 1);
	free(deliver(f, "INBOX", "cur", 1700000002, 2, ":2,S"));
	assert_int_equal(mailbox_rename(f->root, "INBOX", "Trash", err, sizeof err),
			 MAILBOX_ERR_EXISTS);
	assert_int_equal(mailbox_rename(f->root, "Sent", "INBOX", err, sizeof err),
			 MAILBOX_ERR_EXISTS);
	assert_int_equal(mailbox_rename(f->root, "inbox", "Old", err, sizeof err), MAILBOX_OK);
	struct mailbox *mb = open_box(f, "INBOX", false);
	assert_int_equal(mailbox_count(mb), 0);
	mailbox_close(mb);
	mb = open_box(f, "Old", false);
	assert_int_equal(mailbox_count(mb), 2);
	assert_int_equal(mailbox_msg(mb, 2)->flags & MAILBOX_SEEN, MAILBOX_SEEN);
	mailbox_close(mb);
	/* the folders are untouched, INBOX works on */
	struct mailbox_folder_list l;
	assert_int_equal(mailbox_folders(f->root, &l, err, sizeof err), 0);
	assert_non_null(find_folder(&l, "Sent"));
	mailbox_folders_free(&l);
	deliver_new(f, "INBOX", 3);
	mb = open_box(f, "INBOX", false);
	assert_int_equal(mailbox_count(mb), 1);
	mailbox_close(mb);
}

static void test_subscriptions(void **state)
{
	struct fixture *f = *state;
	char err[256];
	assert_int_equal(mailbox_subscribe(f->root, "Later", true, err, sizeof err), MAILBOX_OK);
	assert_int_equal(mailbox_subscribe(f->root, "Later", true, err, sizeof err), MAILBOX_OK);
	assert_int_equal(mailbox_subscribe(f->root, "Sent", false, err, sizeof err), MAILBOX_OK);
	assert_int_equal(mailbox_subscribe(f->root, "Sent", false, err, sizeof err),
			 MAILBOX_ERR_NONEXISTENT);
	assert_int_equal(mailbox_subscribe(f->root, "x/y", true, err, sizeof err),
			 MAILBOX_ERR_NAME);
	struct mailbox_names s;
	assert_int_equal(mailbox_subscriptions(f->root, &s, err, sizeof err), 0);
	assert_int_equal(s.n, 5);
	bool later = false, sent = false;
	for (size_t i = 0; i < s.n; i++) {
		later |= strcmp(s.v[i], "Later") == 0;
		sent |= strcmp(s.v[i], "Sent") == 0;
	}
	assert_true(later);
	assert_false(sent);
	mailbox_names_free(&s);
}

static char *read_all(const char *path)
{
	FILE *fp = fopen(path, "re");
	assert_non_null(fp);
	char *text = NULL;
	size_t cap = 0;
	FILE *mem = open_memstream(&text, &cap);
	assert_non_null(mem);
	int ch;
	while ((ch = getc(fp)) != EOF)
		assert_int_not_equal(putc(ch, mem), EOF);
	assert_int_equal(fclose(mem), 0);
	assert_int_equal(fclose(fp), 0);
	return text;
}

/* A subscriptions file of n valid names, s00000 on, and a stray line. */
static void write_subscriptions(const struct fixture *f, int n)
{
	char *path = xasprintf("%s/subscriptions", f->root);
	FILE *fp = fopen(path, "we");
	assert_non_null(fp);
	for (int i = 0; i < n; i++)
		assert_true(fprintf(fp, "s%05d\n", i) > 0);
	assert_true(fprintf(fp, "x/y\n") > 0); /* no valid name: skipped, not counted */
	assert_int_equal(fclose(fp), 0);
	free(path);
}

/* A file with more names than MAILBOX_FOLDERS_MAX is an error, never a
 * shorter list that (UN)SUBSCRIBE would write back: the file is left as
 * it is.  Exactly the limit is fine. */
static void test_subscriptions_over_limit(void **state)
{
	struct fixture *f = *state;
	char err[256] = "";
	char *path = xasprintf("%s/subscriptions", f->root);
	write_subscriptions(f, MAILBOX_FOLDERS_MAX + 1);
	char *before = read_all(path);
	struct mailbox_names s;
	assert_int_equal(mailbox_subscriptions(f->root, &s, err, sizeof err), MAILBOX_ERR_LIMIT);
	assert_int_equal(s.n, 0);
	assert_null(s.v);
	assert_non_null(strstr(err, "Too many subscriptions"));
	assert_int_equal(mailbox_subscribe(f->root, "s00000", false, err, sizeof err),
			 MAILBOX_ERR_LIMIT);
	assert_int_equal(mailbox_subscribe(f->root, "New", true, err, sizeof err),
			 MAILBOX_ERR_LIMIT);
	char *after = read_all(path);
	assert_string_equal(after, before);
	free(after);
	free(before);

	write_subscriptions(f, MAILBOX_FOLDERS_MAX);
	assert_int_equal(mailbox_subscriptions(f->root, &s, err, sizeof err), MAILBOX_OK);
	assert_int_equal(s.n, MAILBOX_FOLDERS_MAX);
	mailbox_names_free(&s);
	assert_int_equal(mailbox_subscribe(f->root, "New", true, err, sizeof err),
			 MAILBOX_ERR_LIMIT); /* SUBSCRIBE at the limit, as before */
	assert_int_equal(mailbox_subscribe(f->root, "s00000", false, err, sizeof err), MAILBOX_OK);
	assert_int_equal(mailbox_subscriptions(f->root, &s, err, sizeof err), MAILBOX_OK);
	assert_int_equal(s.n, MAILBOX_FOLDERS_MAX - 1);
	assert_string_equal(s.v[0], "s00001");
	mailbox_names_free(&s);
	free(path);
}

/* A file that cannot be read (a folder in its place: read(2) says EISDIR)
 * is an I/O error: not an empty subscription list that (UN)SUBSCRIBE would
 * write back cut, not a corrupt index that earns a new UIDVALIDITY. */
static void test_read_errors(void **state)
{
	struct fixture *f = *state;
	char err[256] = "";
	char *subs = xasprintf("%s/subscriptions", f->root);
	assert_int_equal(unlink(subs), 0);
	assert_int_equal(mkdir(subs, 0700), 0);
	struct mailbox_names s;
	assert_int_equal(mailbox_subscriptions(f->root, &s, err, sizeof err), MAILBOX_ERR_IO);
	assert_non_null(strstr(err, "cannot read"));
	assert_int_equal(s.n, 0);
	assert_int_equal(mailbox_subscribe(f->root, "Later", true, err, sizeof err),
			 MAILBOX_ERR_IO);
	assert_int_equal(rmdir(subs), 0);
	free(subs);
	char *ipath = xasprintf("%s/posthorn-uidlist", f->root);
	struct mailbox *mb = open_box(f, "INBOX", false);
	mailbox_close(mb);
	assert_int_equal(unlink(ipath), 0);
	assert_int_equal(mkdir(ipath, 0700), 0);
	err[0] = '\0';
	mb = NULL;
	assert_int_equal(mailbox_open(f->root, "INBOX", false, &mb, err, sizeof err),
			 MAILBOX_ERR_IO);
	assert_null(mb);
	assert_non_null(strstr(err, "cannot read"));
	assert_int_equal(rmdir(ipath), 0);
	free(ipath);
}

/* ---- the UID index ---------------------------------------------------------- */

static void test_uids_stable_across_reopen(void **state)
{
	struct fixture *f = *state;
	/* delivered out of order: UIDs follow delivery time */
	free(deliver(f, "INBOX", "new", 1700000003, 3, NULL));
	free(deliver(f, "INBOX", "new", 1700000001, 1, NULL));
	free(deliver(f, "INBOX", "cur", 1700000002, 2, ":2,S"));
	struct mailbox *mb = open_box(f, "INBOX", false);
	assert_int_equal(mailbox_count(mb), 3);
	assert_int_equal(mailbox_uidnext(mb), 4);
	uint32_t validity = mailbox_uidvalidity(mb);
	for (size_t i = 1; i <= 3; i++) {
		const struct mailbox_msg *m = mailbox_msg(mb, i);
		assert_int_equal(m->uid, i);
		assert_int_equal(m->internal_date, 1700000000LL + (long long)i);
		char *path = mailbox_msg_path(mb, i);
		uint64_t size;
		assert_int_equal(maildir_count_size(path, &size), 0);
		assert_int_equal(m->size, size); /* the CRLF form */
		free(path);
	}
	assert_null(mailbox_msg(mb, 0));
	assert_null(mailbox_msg(mb, 4));
	assert_int_equal(mailbox_seq_of_uid(mb, 2), 2);
	assert_int_equal(mailbox_seq_of_uid(mb, 9), 0);
	assert_int_equal(mailbox_seq_from_uid(mb, 2), 2);
	assert_int_equal(mailbox_seq_from_uid(mb, 4), 4);
	assert_int_equal(mailbox_first_unseen(mb), 1);
	mailbox_close(mb);
	/* the index file as documented */
	char *ipath = xasprintf("%s/posthorn-uidlist", f->root);
	char *text = read_file_text(ipath);
	char *head = xasprintf("V%u N4\n1 1700000001.M1P1Q1.test\n", validity);
	assert_true(strncmp(text, head, strlen(head)) == 0);
	free(head);
	free(text);
	/* a restart: same UIDVALIDITY, same UIDs, new mail gets the next UID */
	deliver_new(f, "INBOX", 4);
	mb = open_box(f, "INBOX", false);
	assert_int_equal(mailbox_uidvalidity(mb), validity);
	assert_int_equal(mailbox_count(mb), 4);
	for (size_t i = 1; i <= 4; i++)
		assert_int_equal(mailbox_msg(mb, i)->uid, i);
	mailbox_close(mb);
	/* lost index: rebuilt with a larger UIDVALIDITY */
	assert_int_equal(unlink(ipath), 0);
	mb = open_box(f, "INBOX", false);
	assert_true(mailbox_uidvalidity(mb) > validity);
	assert_int_equal(mailbox_count(mb), 4);
	assert_int_equal(mailbox_msg(mb, 4)->uid, 4);
	uint32_t v2 = mailbox_uidvalidity(mb);
	mailbox_close(mb);
	/* a damaged header: the same */
	write_text(ipath, "V12 X3\n1 1700000001.M1P1Q1.test\n");
	mb = open_box(f, "INBOX", false);
	assert_true(mailbox_uidvalidity(mb) > v2);
	assert_int_equal(mailbox_uidnext(mb), 5);
	mailbox_close(mb);
	write_text(ipath, "not an index\n");
	mb = open_box(f, "INBOX", false);
	assert_true(mailbox_uidvalidity(mb) > v2);
	mailbox_close(mb);
	free(ipath);
}

static void test_index_lost_while_open(void **state)
{
	struct fixture *f = *state;
	deliver_new(f, "INBOX", 1);
	struct mailbox *mb = open_box(f, "INBOX", false);
	char *ipath = xasprintf("%s/posthorn-uidlist", f->root);
	assert_int_equal(unlink(ipath), 0);
	free(ipath);
	char err[256];
	/* the view cannot go on with other UIDs: the session must reselect */
	assert_int_equal(mailbox_sync(mb, MAILBOX_SYNC_FORCE, err, sizeof err), MAILBOX_ERR_IO);
	assert_non_null(strstr(err, "UIDVALIDITY"));
	assert_true(mailbox_stale(mb));
	assert_int_equal(mailbox_sync(mb, 0, err, sizeof err), MAILBOX_ERR_IO);
	mailbox_close(mb);
	/* a new view works with the new UIDVALIDITY */
	mb = open_box(f, "INBOX", false);
	assert_false(mailbox_stale(mb));
	assert_int_equal(mailbox_count(mb), 1);
	mailbox_close(mb);
	/* a folder deleted or renamed under a view */
	deliver_new(f, "Sent", 1);
	struct mailbox *s1 = open_box(f, "Sent", false);
	struct mailbox *s2 = open_box(f, "Junk", false);
	assert_int_equal(mailbox_delete(f->root, "Sent", err, sizeof err), MAILBOX_OK);
	assert_int_equal(mailbox_rename(f->root, "Junk", "Spam", err, sizeof err), MAILBOX_OK);
	assert_int_equal(mailbox_sync(s1, MAILBOX_SYNC_EXPUNGE, err, sizeof err), MAILBOX_ERR_IO);
	assert_true(mailbox_stale(s1));
	assert_int_equal(mailbox_sync(s2, MAILBOX_SYNC_EXPUNGE, err, sizeof err), MAILBOX_ERR_IO);
	assert_true(mailbox_stale(s2));
	mailbox_close(s1);
	mailbox_close(s2);
}

/* ---- \Recent ----------------------------------------------------------------- */

static void test_recent(void **state)
{
	struct fixture *f = *state;
	deliver_new(f, "INBOX", 1);
	deliver_new(f, "INBOX", 2);
	/* EXAMINE sees them as recent and moves nothing */
	struct mailbox *ro = open_box(f, "INBOX", true);
	assert_int_equal(mailbox_recent(ro), 2);
	assert_int_equal(count_files(f->root, "new"), 2);
	char err[256];
	assert_int_equal(mailbox_store(ro, match_all, NULL, MAILBOX_STORE_ADD, MAILBOX_SEEN, err,
				       sizeof err),
			 MAILBOX_ERR_READONLY);
	assert_int_equal(mailbox_expunge(ro, NULL, NULL, err, sizeof err), MAILBOX_ERR_READONLY);
	/* the first SELECT takes them: recent there, moved to cur/ */
	struct mailbox *a = open_box(f, "INBOX", false);
	assert_int_equal(mailbox_recent(a), 2);
	assert_int_equal(mailbox_msg(a, 1)->flags & MAILBOX_RECENT, MAILBOX_RECENT);
	assert_int_equal(count_files(f->root, "new"), 0);
	assert_int_equal(count_files(f->root, "cur"), 2);
	/* a second SELECT does not see them as recent */
	struct mailbox *b = open_box(f, "INBOX", false);
	assert_int_equal(mailbox_recent(b), 0);
	/* new mail: recent for the first view that syncs */
	deliver_new(f, "INBOX", 3);
	sync_box(b, 0);
	assert_changes(b, "EXISTS 3,RECENT 1");
	sync_box(a, 0);
	assert_changes(a, "EXISTS 3,RECENT 2");
	assert_int_equal(mailbox_msg(a, 3)->flags & MAILBOX_RECENT, 0);
	/* the read-only view follows the move without errors */
	sync_box(ro, MAILBOX_SYNC_EXPUNGE);
	assert_int_equal(mailbox_count(ro), 3);
	mailbox_close(ro);
	mailbox_close(a);
	mailbox_close(b);
}

/* ---- concurrent views ------------------------------------------------------ */

static void test_views_see_flags(void **state)
{
	struct fixture *f = *state;
	for (int i = 1; i <= 3; i++)
		deliver_new(f, "INBOX", i);
	struct mailbox *a = open_box(f, "INBOX", false);
	struct mailbox *b = open_box(f, "INBOX", false);
	assert_false(mailbox_changes_pending(b));
	store(a, 2, MAILBOX_STORE_ADD, MAILBOX_SEEN | MAILBOX_FLAGGED);
	assert_int_equal(mailbox_msg(a, 2)->flags & MAILBOX_FLAGS_PERMANENT,
			 MAILBOX_SEEN | MAILBOX_FLAGGED);
	/* a's own change is not queued for a */
	sync_box(a, MAILBOX_SYNC_EXPUNGE);
	assert_changes(a, "");
	sync_box(b, 0);
	char *want = xasprintf("FLAGS 2=%u", MAILBOX_SEEN | MAILBOX_FLAGGED);
	assert_changes(b, want);
	free(want);
	/* the file name carries the flags, sorted */
	const struct mailbox_msg *m = mailbox_msg(b, 2);
	assert_non_null(strstr(m->name, ":2,FS"));
	/* b replaces, a removes */
	store(b, 2, MAILBOX_STORE_REPLACE, MAILBOX_ANSWERED | MAILBOX_DRAFT);
	assert_non_null(strstr(mailbox_msg(b, 2)->name, ":2,DR"));
	store(b, 3, MAILBOX_STORE_ADD, MAILBOX_DELETED);
	store(b, 3, MAILBOX_STORE_REMOVE, MAILBOX_DELETED);
	sync_box(a, 0);
	/* a took the messages from new/: \Recent is part of its flags; 3 was
	 * changed and changed back: the same flags with a new MODSEQ (RFC
	 * 7162 §3.2) */
	want = xasprintf("FLAGS 2=%u,FLAGS 3=%u", MAILBOX_ANSWERED | MAILBOX_DRAFT | MAILBOX_RECENT,
			 MAILBOX_RECENT);
	assert_changes(a, want);
	free(want);
	mailbox_close(a);
	mailbox_close(b);
}

static void test_views_see_expunge(void **state)
{
	struct fixture *f = *state;
	for (int i = 1; i <= 5; i++)
		deliver_new(f, "INBOX", i);
	struct mailbox *a = open_box(f, "INBOX", false);
	struct mailbox *b = open_box(f, "INBOX", false);
	store(a, 2, MAILBOX_STORE_ADD, MAILBOX_DELETED);
	store(a, 4, MAILBOX_STORE_ADD, MAILBOX_DELETED);
	char err[256];
	assert_int_equal(mailbox_expunge(a, NULL, NULL, err, sizeof err), MAILBOX_OK);
	/* highest first, so each number is right when sent */
	assert_changes(a, "EXPUNGE 4,EXPUNGE 2,RECENT 3");
	assert_int_equal(mailbox_count(a), 3);
	assert_int_equal(mailbox_msg(a, 2)->uid, 3);
	assert_int_equal(mailbox_msg(a, 3)->uid, 5);
	assert_int_equal(count_files(f->root, "cur"), 3);
	/* b during FETCH/STORE/SEARCH: no EXPUNGE yet, the messages stay */
	deliver_new(f, "INBOX", 6);
	sync_box(b, 0);
	assert_int_equal(mailbox_count(b), 6);
	assert_true(mailbox_msg(b, 2)->expunged);
	assert_true(mailbox_msg(b, 4)->expunged);
	assert_changes(b, "EXISTS 6,RECENT 1");
	char *path = mailbox_msg_path(b, 2);
	assert_int_equal(access(path, F_OK), -1); /* the session answers NO for its body */
	free(path);
	/* at NOOP: the expunges */
	sync_box(b, MAILBOX_SYNC_EXPUNGE);
	assert_changes(b, "EXPUNGE 4,EXPUNGE 2");
	assert_int_equal(mailbox_count(b), 4);
	assert_int_equal(mailbox_msg(b, 4)->uid, 6);
	assert_int_equal(mailbox_seq_of_uid(b, 5), 3);
	/* a sees the new message */
	sync_box(a, MAILBOX_SYNC_EXPUNGE);
	assert_changes(a, "EXISTS 4,RECENT 3");
	/* the index was appended to, not rewritten: the expunged ones' lines
	 * stay until they are most of it (test_index_compaction) */
	char *ipath = xasprintf("%s/posthorn-uidlist", f->root);
	char *text = read_file_text(ipath);
	assert_non_null(strstr(text, "\n2 "));
	assert_non_null(strstr(text, "\n4 "));
	assert_non_null(strstr(text, "\n6 "));
	free(text);
	free(ipath);
	mailbox_close(a);
	mailbox_close(b);
}

/* A message that came and went before its EXISTS was sent is never
 * reported: the client never had a number for it. */
static void test_unannounced_expunge(void **state)
{
	struct fixture *f = *state;
	deliver_new(f, "INBOX", 1);
	struct mailbox *a = open_box(f, "INBOX", false);
	struct mailbox *b = open_box(f, "INBOX", false);
	deliver_new(f, "INBOX", 2);
	deliver_new(f, "INBOX", 3);
	sync_box(b, 0); /* b queues EXISTS 3, a command's output keeps it from sending */
	assert_true(mailbox_changes_pending(b));
	sync_box(a, MAILBOX_SYNC_EXPUNGE);
	assert_changes(a, "EXISTS 3,RECENT 1");
	store(a, 2, MAILBOX_STORE_ADD, MAILBOX_DELETED);
	store(a, 1, MAILBOX_STORE_ADD, MAILBOX_DELETED);
	char err[256];
	assert_int_equal(mailbox_expunge(a, NULL, NULL, err, sizeof err), MAILBOX_OK);
	assert_changes(a, "EXPUNGE 2,EXPUNGE 1,RECENT 0");
	sync_box(b, MAILBOX_SYNC_EXPUNGE);
	/* message 1 was known: EXPUNGE 1; message 2 never was; 3 is new */
	assert_changes(b, "EXPUNGE 1,EXISTS 1,RECENT 1");
	assert_int_equal(mailbox_count(b), 1);
	assert_int_equal(mailbox_msg(b, 1)->uid, 3);
	mailbox_close(a);
	mailbox_close(b);
}

static void test_expunge_then_flags_order(void **state)
{
	struct fixture *f = *state;
	for (int i = 1; i <= 4; i++)
		deliver_new(f, "INBOX", i);
	struct mailbox *a = open_box(f, "INBOX", false);
	struct mailbox *b = open_box(f, "INBOX", false);
	store(a, 1, MAILBOX_STORE_ADD, MAILBOX_DELETED);
	store(a, 4, MAILBOX_STORE_ADD, MAILBOX_SEEN);
	char err[256];
	assert_int_equal(mailbox_expunge(a, NULL, NULL, err, sizeof err), MAILBOX_OK);
	assert_changes(a, "EXPUNGE 1,RECENT 3");
	sync_box(b, MAILBOX_SYNC_EXPUNGE);
	/* FLAGS after the expunges, with the new numbers */
	char *want = xasprintf("EXPUNGE 1,FLAGS 3=%u", MAILBOX_SEEN);
	assert_changes(b, want);
	free(want);
	mailbox_close(a);
	mailbox_close(b);
}

static void test_new_mail_by_other_writer(void **state)
{
	struct fixture *f = *state;
	deliver_new(f, "INBOX", 1);
	struct mailbox *a = open_box(f, "INBOX", false);
	assert_int_equal(mailbox_count(a), 1);
	uint32_t last = mailbox_msg(a, 1)->uid;
	for (int round = 0; round < 3; round++) {
		/* delivered with an older time than those before: still higher UIDs */
		deliver_new(f, "INBOX", 100 - round * 10);
		deliver_new(f, "INBOX", 101 - round * 10);
		sync_box(a, MAILBOX_SYNC_EXPUNGE);
		char *got = changes(a);
		/* RECENT counts all recent messages of the view */
		char *want2 = xasprintf("EXISTS %d,RECENT %d", 3 + 2 * round, 3 + 2 * round);
		if (strcmp(got, want2) != 0)
			fail_msg("round %d: got %s", round, got);
		free(got);
		free(want2);
		for (size_t s = 1; s <= mailbox_count(a); s++) {
			if (s > 1)
				assert_true(mailbox_msg(a, s)->uid > mailbox_msg(a, s - 1)->uid);
		}
		assert_true(mailbox_msg(a, mailbox_count(a))->uid > last);
		last = mailbox_msg(a, mailbox_count(a))->uid;
		assert_int_equal(mailbox_uidnext(a), last + 1);
	}
	/* nothing changed: nothing queued */
	sync_box(a, MAILBOX_SYNC_EXPUNGE);
	assert_changes(a, "");
	/* an unforced sync shortly after a change still rescans */
	deliver_new(f, "INBOX", 500);
	char err[256];
	assert_int_equal(mailbox_sync(a, MAILBOX_SYNC_EXPUNGE, err, sizeof err), MAILBOX_OK);
	assert_int_equal(mailbox_count(a), 8);
	mailbox_close(a);
}

/* A change in the clock tick of the last scan leaves the directory times
 * as they were: such a scan is not trusted (simulated with times ahead of
 * the clock). */
/* Until the file system's clock has ticked past the last write of the
 * folder's UID index (its change time). */
static void wait_clock_past_index(struct fixture *f)
{
	char *p = xasprintf("%s/posthorn-uidlist", f->root);
	struct stat sb;
	assert_int_equal(stat(p, &sb), 0);
	for (int i = 0; i < 1000; i++) {
		struct timespec now;
		clock_gettime(CLOCK_REALTIME_COARSE, &now);
		if (now.tv_sec > sb.st_ctim.tv_sec ||
		    (now.tv_sec == sb.st_ctim.tv_sec && now.tv_nsec > sb.st_ctim.tv_nsec))
			break;
		usleep(1000);
	}
	free(p);
}

static void test_change_in_same_tick(void **state)
{
	struct fixture *f = *state;
	struct timespec ahead = {.tv_sec = time(NULL) + 3600, .tv_nsec = 5000};
	struct timespec times[2] = {ahead, ahead};
	char *cur = xasprintf("%s/cur", f->root);
	char *newd = xasprintf("%s/new", f->root);
	deliver_new(f, "INBOX", 1);
	assert_int_equal(utimensat(AT_FDCWD, cur, times, 0), 0);
	assert_int_equal(utimensat(AT_FDCWD, newd, times, 0), 0);
	struct mailbox *a = open_box(f, "INBOX", true);
	assert_int_equal(mailbox_count(a), 1);
	deliver_new(f, "INBOX", 2);
	assert_int_equal(utimensat(AT_FDCWD, newd, times, 0), 0);
	char err[256];
	assert_int_equal(mailbox_sync(a, 0, err, sizeof err), MAILBOX_OK);
	assert_int_equal(mailbox_count(a), 2);
	/* settled times (in the past) are trusted: nothing read; the UID
	 * index written by the sync above must be settled too */
	wait_clock_past_index(f);
	struct timespec past = {.tv_sec = time(NULL) - 100, .tv_nsec = 5000};
	struct timespec ptimes[2] = {past, past};
	assert_int_equal(utimensat(AT_FDCWD, cur, ptimes, 0), 0);
	assert_int_equal(utimensat(AT_FDCWD, newd, ptimes, 0), 0);
	assert_int_equal(mailbox_sync(a, MAILBOX_SYNC_FORCE, err, sizeof err), MAILBOX_OK);
	deliver_new(f, "INBOX", 3);
	assert_int_equal(utimensat(AT_FDCWD, newd, ptimes, 0), 0);
	assert_int_equal(mailbox_sync(a, 0, err, sizeof err), MAILBOX_OK);
	assert_int_equal(mailbox_count(a), 2);
	/* whole-second times are trusted only two seconds on */
	struct timespec whole = {.tv_sec = time(NULL), .tv_nsec = 0};
	struct timespec wtimes[2] = {whole, whole};
	assert_int_equal(utimensat(AT_FDCWD, newd, wtimes, 0), 0);
	assert_int_equal(mailbox_sync(a, 0, err, sizeof err), MAILBOX_OK);
	assert_int_equal(mailbox_count(a), 3);
	deliver_new(f, "INBOX", 4);
	assert_int_equal(utimensat(AT_FDCWD, newd, wtimes, 0), 0);
	assert_int_equal(mailbox_sync(a, 0, err, sizeof err), MAILBOX_OK);
	assert_int_equal(mailbox_count(a), 4);
	mailbox_close(a);
	free(cur);
	free(newd);
}

/* The UID index lost and rebuilt (a new UIDVALIDITY) while new/ and cur/
 * did not change: a view that trusts its settled stamp still notices. */
static void test_lost_index_seen_with_settled_folders(void **state)
{
	struct fixture *f = *state;
	char *cur = xasprintf("%s/cur", f->root);
	char *newd = xasprintf("%s/new", f->root);
	char *index = xasprintf("%s/posthorn-uidlist", f->root);
	deliver_new(f, "INBOX", 1);
	struct mailbox *a = open_box(f, "INBOX", true);
	uint32_t validity = mailbox_uidvalidity(a);
	struct timespec past = {.tv_sec = time(NULL) - 100, .tv_nsec = 5000};
	struct timespec ptimes[2] = {past, past};
	assert_int_equal(utimensat(AT_FDCWD, cur, ptimes, 0), 0);
	assert_int_equal(utimensat(AT_FDCWD, newd, ptimes, 0), 0);
	wait_clock_past_index(f);
	char err[256];
	assert_int_equal(mailbox_sync(a, MAILBOX_SYNC_FORCE, err, sizeof err), MAILBOX_OK);
	assert_false(mailbox_stale(a));

	assert_int_equal(unlink(index), 0);
	struct mailbox *b = open_box(f, "INBOX", true); /* rebuilds the index */
	assert_int_not_equal(mailbox_uidvalidity(b), validity);
	assert_int_equal(utimensat(AT_FDCWD, cur, ptimes, 0), 0);
	assert_int_equal(utimensat(AT_FDCWD, newd, ptimes, 0), 0);
	assert_int_not_equal(mailbox_sync(a, 0, err, sizeof err), MAILBOX_OK);
	assert_true(mailbox_stale(a));
	mailbox_close(b);
	mailbox_close(a);
	free(index);
	free(cur);
	free(newd);
}

static void test_pop3_removes_and_external_rename(void **state)
{
	struct fixture *f = *state;
	char *n1 = deliver(f, "INBOX", "cur", 1700000001, 1, ":2,");
	char *n2 = deliver(f, "INBOX", "cur", 1700000002, 2, ":2,");
	struct mailbox *a = open_box(f, "INBOX", false);
	/* another tool renames message 2 (flags S) and removes 1 */
	char *from = xasprintf("%s/cur/%s", f->root, n2);
	char *to = xasprintf("%s/cur/1700000002.M2P1Q2.test,S=36,W=39:2,S", f->root);
	assert_int_equal(rename(from, to), 0);
	/* STORE on the old name finds the new one */
	store(a, 2, MAILBOX_STORE_ADD, MAILBOX_FLAGGED);
	assert_int_equal(mailbox_msg(a, 2)->flags & MAILBOX_FLAGS_PERMANENT,
			 MAILBOX_FLAGGED | MAILBOX_SEEN);
	free(from);
	from = xasprintf("%s/cur/%s", f->root, n1);
	assert_int_equal(unlink(from), 0);
	store(a, 1, MAILBOX_STORE_ADD, MAILBOX_SEEN);
	assert_true(mailbox_msg(a, 1)->expunged);
	sync_box(a, MAILBOX_SYNC_EXPUNGE);
	char *got = changes(a);
	assert_non_null(strstr(got, "EXPUNGE 1"));
	free(got);
	assert_int_equal(mailbox_count(a), 1);
	free(from);
	free(to);
	free(n1);
	free(n2);
	mailbox_close(a);
}

/* POP3 (maildir.c) on the same Maildir: its UIDLs survive IMAP's flag
 * renames, its moves and deletions show up in the IMAP view. */
static void test_pop3_alongside(void **state)
{
	struct fixture *f = *state;
	for (int i = 1; i <= 3; i++)
		deliver_new(f, "INBOX", i);
	struct mailbox *a = open_box(f, "INBOX", true);
	struct maildir_list before, after;
	char err[256];
	assert_int_equal(maildir_scan(f->root, MAILDIR_SCAN_MOVE_NEW, &before, err, sizeof err), 0);
	assert_int_equal(before.n, 3);
	struct mailbox *b = open_box(f, "INBOX", false);
	assert_int_equal(mailbox_recent(b), 0); /* POP3 took them out of new/ */
	store(b, 2, MAILBOX_STORE_ADD, MAILBOX_SEEN | MAILBOX_ANSWERED);
	assert_int_equal(maildir_scan(f->root, 0, &after, err, sizeof err), 0);
	assert_int_equal(after.n, 3);
	for (size_t i = 0; i < 3; i++)
		assert_string_equal(before.msgs[i].uid, after.msgs[i].uid);
	maildir_list_free(&after);
	/* POP3 DELE + QUIT of the first */
	assert_int_equal(maildir_delete(f->root, &before.msgs[0]), 0);
	maildir_list_free(&before);
	sync_box(a, MAILBOX_SYNC_EXPUNGE);
	/* the read-only view saw them in new/: \Recent there */
	char *want = xasprintf("EXPUNGE 1,RECENT 2,FLAGS 1=%u",
			       MAILBOX_SEEN | MAILBOX_ANSWERED | MAILBOX_RECENT);
	assert_changes(a, want);
	free(want);
	sync_box(b, MAILBOX_SYNC_EXPUNGE);
	assert_changes(b, "EXPUNGE 1");
	mailbox_close(a);
	mailbox_close(b);
}

static void test_uid_expunge_subset(void **state)
{
	struct fixture *f = *state;
	for (int i = 1; i <= 5; i++)
		deliver_new(f, "INBOX", i);
	struct mailbox *a = open_box(f, "INBOX", false);
	char err[256];
	assert_int_equal(mailbox_store(a, match_all, NULL, MAILBOX_STORE_ADD, MAILBOX_DELETED, err,
				       sizeof err),
			 MAILBOX_OK);
	/* RFC 4315 §2.1: only UIDs 2:3 go, though all are \Deleted */
	uint32_t range[2] = {2, 3};
	assert_int_equal(mailbox_expunge(a, match_uid_range, range, err, sizeof err), MAILBOX_OK);
	assert_changes(a, "EXPUNGE 3,EXPUNGE 2,RECENT 3");
	assert_int_equal(mailbox_count(a), 3);
	assert_int_equal(mailbox_msg(a, 2)->uid, 4);
	/* EXPUNGE without \Deleted removes nothing */
	store(a, 1, MAILBOX_STORE_REMOVE, MAILBOX_DELETED);
	assert_int_equal(mailbox_expunge(a, NULL, NULL, err, sizeof err), MAILBOX_OK);
	assert_changes(a, "EXPUNGE 3,EXPUNGE 2,RECENT 1");
	assert_int_equal(mailbox_count(a), 1);
	assert_int_equal(mailbox_msg(a, 1)->uid, 1);
	mailbox_close(a);
}

/* Two files with one unique part (a tool's copy): one message, always
 * the same file. */
static void test_duplicate_unique(void **state)
{
	struct fixture *f = *state;
	char *n1 = deliver(f, "INBOX", "cur", 1700000001, 1, ":2,S");
	char *dup = xasprintf("%s/new/1700000001.M1P1Q1.test,S=1,W=2", f->root);
	write_text(dup, "Subject: x\n\n");
	struct mailbox *a = open_box(f, "INBOX", true);
	assert_int_equal(mailbox_count(a), 1);
	assert_string_equal(mailbox_msg(a, 1)->name, n1);
	for (int i = 0; i < 5; i++) {
		sync_box(a, MAILBOX_SYNC_EXPUNGE);
		assert_changes(a, "");
		assert_string_equal(mailbox_msg(a, 1)->name, n1);
	}
	mailbox_close(a);
	free(dup);
	free(n1);
}

static void test_keywords_kept(void **state)
{
	struct fixture *f = *state;
	free(deliver(f, "INBOX", "cur", 1700000001, 1, ":2,Sab"));
	struct mailbox *a = open_box(f, "INBOX", false);
	/* a and b are keywords 0 and 1 (named or not, they are kept) */
	assert_int_equal(mailbox_msg(a, 1)->flags,
			 MAILBOX_SEEN | MAILBOX_KEYWORD(0) | MAILBOX_KEYWORD(1));
	store(a, 1, MAILBOX_STORE_ADD, MAILBOX_DRAFT | MAILBOX_DELETED);
	/* letters sorted: uppercase system flags, then the keywords */
	assert_non_null(strstr(mailbox_msg(a, 1)->name, ":2,DSTab"));
	mailbox_close(a);
}

/* ---- APPEND, COPY, MOVE, STATUS -------------------------------------------- */

static uint32_t append(const struct fixture *f, const char *folder, const char *text,
		       unsigned flags, long long date, uint32_t *validity)
{
	char err[256] = "";
	char *path;
	int fd;
	enum mailbox_result r = mailbox_append_begin(f->root, folder, &path, &fd, err, sizeof err);
	if (r != MAILBOX_OK)
		fail_msg("append_begin: %d %s", r, err);
	assert_int_equal(write_all(fd, text, strlen(text)), 0);
	close(fd);
	uint32_t uid = 0;
	r = mailbox_append_commit(f->root, folder, path, flags, date, validity, &uid, err,
				  sizeof err);
	if (r != MAILBOX_OK)
		fail_msg("append_commit: %d %s", r, err);
	assert_int_equal(access(path, F_OK), -1); /* gone from tmp/ */
	free(path);
	return uid;
}

static void test_append(void **state)
{
	struct fixture *f = *state;
	deliver_new(f, "Drafts", 1);
	struct mailbox *d = open_box(f, "Drafts", false);
	uint32_t next = mailbox_uidnext(d);
	uint32_t v = 0;
	const char *msg = "Subject: draft\r\n\r\nbody\r\n";
	uint32_t uid = append(f, "Drafts", msg, MAILBOX_DRAFT | MAILBOX_SEEN, 1600000000LL, &v);
	assert_int_equal(uid, next);
	assert_int_equal(v, mailbox_uidvalidity(d));
	sync_box(d, MAILBOX_SYNC_EXPUNGE);
	assert_changes(d, "EXISTS 2,RECENT 1");
	const struct mailbox_msg *m = mailbox_msg(d, 2);
	assert_int_equal(m->uid, uid);
	assert_int_equal(m->flags, MAILBOX_DRAFT | MAILBOX_SEEN);
	assert_int_equal(m->internal_date, 1600000000LL);
	assert_int_equal(m->size, strlen(msg));
	/* LF on the wire is counted as CRLF */
	uint32_t uid2 = append(f, "Drafts", "Subject: lf\n\nx\n", 0, 0, &v);
	assert_int_equal(uid2, uid + 1);
	sync_box(d, MAILBOX_SYNC_EXPUNGE);
	assert_changes(d, "EXISTS 3,RECENT 2");
	m = mailbox_msg(d, 3);
	assert_int_equal(m->size, strlen("Subject: lf\r\n\r\nx\r\n"));
	assert_int_equal(m->flags, MAILBOX_RECENT); /* went through new/ */
	assert_true(m->internal_date >= (long long)time(NULL) - 60);
	/* TRYCREATE */
	char err[256];
	char *path = NULL;
	int fd = -1;
	assert_int_equal(mailbox_append_begin(f->root, "Nope", &path, &fd, err, sizeof err),
			 MAILBOX_ERR_NONEXISTENT);
	assert_null(path);
	/* an aborted APPEND leaves nothing */
	assert_int_equal(mailbox_append_begin(f->root, "Drafts", &path, &fd, err, sizeof err),
			 MAILBOX_OK);
	close(fd);
	mailbox_append_abort(path);
	free(path);
	char *dd = folder_dir(f, "Drafts");
	assert_int_equal(count_files(dd, "tmp"), 0);
	/* left-overs older than 36 hours go at the next APPEND, fresh ones stay */
	char *old = xasprintf("%s/tmp/old", dd), *fresh = xasprintf("%s/tmp/fresh", dd);
	write_text(old, "x");
	write_text(fresh, "y");
	struct timespec t37[2] = {{.tv_sec = time(NULL) - 37 * 3600},
				  {.tv_sec = time(NULL) - 37 * 3600}};
	assert_int_equal(utimensat(AT_FDCWD, old, t37, 0), 0);
	assert_int_equal(mailbox_append_begin(f->root, "Drafts", &path, &fd, err, sizeof err),
			 MAILBOX_OK);
	close(fd);
	mailbox_append_abort(path);
	free(path);
	assert_int_equal(access(old, F_OK), -1);
	assert_int_equal(access(fresh, F_OK), 0);
	free(old);
	free(fresh);
	free(dd);
	mailbox_close(d);
}

/* ---- the UID index: appends, torn tails, compaction ------------------------ */

static char *index_path(const struct fixture *f, const char *folder)
{
	char *dir = folder_dir(f, folder);
	char *p = xasprintf("%s/posthorn-uidlist", dir);
	free(dir);
	return p;
}

static ino_t inode_of(const char *path)
{
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	return st.st_ino;
}

static void append_raw(const char *path, const void *data, size_t len)
{
	int fd = open(path, O_WRONLY | O_APPEND);
	assert_true(fd >= 0);
	assert_int_equal(write_all(fd, data, len), 0);
	close(fd);
}

/* Is text a prefix of the file's text now, and what follows it? */
static char *after_prefix(const char *path, const char *prefix)
{
	char *now = read_file_text(path);
	if (strncmp(now, prefix, strlen(prefix)) != 0)
		fail_msg("the index was rewritten: before \"%s\", now \"%s\"", prefix, now);
	char *rest = xstrdup(now + strlen(prefix));
	free(now);
	return rest;
}

/* New mail, APPEND and COPY add lines at the end of the same file: what
 * was there is never rewritten. */
static void test_index_grows_by_appends(void **state)
{
	struct fixture *f = *state;
	deliver_new(f, "INBOX", 1);
	deliver_new(f, "INBOX", 2);
	struct mailbox *mb = open_box(f, "INBOX", false);
	char *ipath = index_path(f, "INBOX");
	ino_t ino = inode_of(ipath);
	char *before = read_file_text(ipath);
	char *head = xasprintf("V%u N3\n1 1700000001.M1P1Q1.test\n2 1700000002.M2P1Q2.test\n",
			       mailbox_uidvalidity(mb));
	assert_string_equal(before, head);
	free(head);
	/* a delivery, seen by a sync */
	deliver_new(f, "INBOX", 3);
	sync_box(mb, MAILBOX_SYNC_EXPUNGE);
	char *rest = after_prefix(ipath, before);
	assert_string_equal(rest, "3 1700000003.M3P1Q3.test\n");
	free(rest);
	free(before);
	before = read_file_text(ipath);
	/* an APPEND */
	uint32_t v;
	assert_int_equal(append(f, "INBOX", "Subject: a\r\n\r\nb\r\n", 0, 0, &v), 4);
	rest = after_prefix(ipath, before);
	assert_true(strncmp(rest, "4 ", 2) == 0 && strchr(rest, '\n') == rest + strlen(rest) - 1);
	free(rest);
	free(before);
	before = read_file_text(ipath);
	/* a COPY of two messages into the same folder */
	struct seqs two = {{1, 2}, 2};
	struct mailbox_uidmap map;
	char err[256];
	assert_int_equal(mailbox_copy(mb, match_seqs, &two, "INBOX", &map, err, sizeof err),
			 MAILBOX_OK);
	assert_int_equal(map.n, 2);
	assert_int_equal(map.dst[0], 5);
	assert_int_equal(map.dst[1], 6);
	mailbox_uidmap_free(&map);
	rest = after_prefix(ipath, before);
	assert_true(strncmp(rest, "5 ", 2) == 0 && strstr(rest, "\n6 ") != NULL);
	free(rest);
	free(before);
	assert_int_equal(inode_of(ipath), ino);
	sync_box(mb, MAILBOX_SYNC_EXPUNGE);
	assert_int_equal(mailbox_count(mb), 6);
	mailbox_close(mb);
	free(ipath);
}

/* A crash in the middle of an append leaves a line without its LF: it is
 * ignored, the message it named gets a UID past every UID the tail could
 * have named, the UIDVALIDITY stays, and the next append cuts the tail
 * off and says so with an "N" line. */
static void test_index_torn_tail_ignored(void **state)
{
	struct fixture *f = *state;
	for (int i = 1; i <= 3; i++)
		deliver_new(f, "INBOX", i);
	struct mailbox *mb = open_box(f, "INBOX", false);
	uint32_t validity = mailbox_uidvalidity(mb);
	mailbox_close(mb);
	char *ipath = index_path(f, "INBOX");
	char *whole = read_file_text(ipath);
	/* message 4 arrived; the line that gave it UID 4 was torn */
	deliver_new(f, "INBOX", 4);
	const char *torn = "4 1700000004.M4P1Q4.te";
	append_raw(ipath, torn, strlen(torn));
	mb = open_box(f, "INBOX", false);
	assert_int_equal(mailbox_uidvalidity(mb), validity);
	assert_int_equal(mailbox_count(mb), 4);
	for (size_t i = 1; i <= 3; i++)
		assert_int_equal(mailbox_msg(mb, i)->uid, i);
	uint32_t skip_to = 5 + (uint32_t)strlen(torn); /* past the tail's 4, plus its octets */
	assert_int_equal(mailbox_msg(mb, 4)->uid, skip_to);
	assert_int_equal(mailbox_uidnext(mb), skip_to + 1);
	mailbox_close(mb);
	char *rest = after_prefix(ipath, whole);
	char *want = xasprintf("N%u\n%u 1700000004.M4P1Q4.test\n", skip_to, skip_to);
	assert_string_equal(rest, want);
	free(want);
	free(rest);
	/* and it stays so */
	mb = open_box(f, "INBOX", true);
	assert_int_equal(mailbox_uidvalidity(mb), validity);
	assert_int_equal(mailbox_msg(mb, 4)->uid, skip_to);
	mailbox_close(mb);
	free(whole);
	free(ipath);
}

/* The data of an append that never reached the disk reads as zeros; a
 * whole line after them (written later, synced never) is part of the tail
 * too: its UID is skipped as well, and nothing of it is used. */
static void test_index_zeros_in_tail(void **state)
{
	struct fixture *f = *state;
	deliver_new(f, "Trash", 1);
	deliver_new(f, "Trash", 2);
	struct mailbox *mb = open_box(f, "Trash", false);
	uint32_t validity = mailbox_uidvalidity(mb);
	mailbox_close(mb);
	char *ipath = index_path(f, "Trash");
	char tail[48] = {0};
	tail[16] = '\n';
	memcpy(tail + 17, "9 1700000002.M2P1Q2.test\n", 25);
	append_raw(ipath, tail, 42);
	deliver_new(f, "Trash", 3);
	mb = open_box(f, "Trash", false);
	assert_int_equal(mailbox_uidvalidity(mb), validity);
	assert_int_equal(mailbox_count(mb), 3);
	assert_int_equal(mailbox_msg(mb, 1)->uid, 1);
	assert_int_equal(mailbox_msg(mb, 2)->uid, 2); /* the tail's "9" for it is not used */
	assert_int_equal(mailbox_msg(mb, 3)->uid, 10 + 42);
	mailbox_close(mb);
	char *text = read_file_text(ipath);
	assert_null(strstr(text, "\n9 "));
	assert_non_null(strstr(text, "\nN52\n52 1700000003.M3P1Q3.test\n"));
	free(text);
	free(ipath);
}

/* The lines of removed messages are dropped by a rewrite once they are
 * most of the index (and at least 64); UIDs and UIDVALIDITY stay, and a
 * view open meanwhile goes on. */
static void test_index_compaction(void **state)
{
	struct fixture *f = *state;
	for (int i = 1; i <= 100; i++)
		deliver_new(f, "INBOX", i);
	struct mailbox *a = open_box(f, "INBOX", false);
	struct mailbox *b = open_box(f, "INBOX", true);
	uint32_t validity = mailbox_uidvalidity(a);
	char *ipath = index_path(f, "INBOX");
	ino_t ino = inode_of(ipath);
	char err[256];
	/* 30 removed of 100: the lines stay */
	for (size_t seq = 1; seq <= 30; seq++)
		store(a, seq, MAILBOX_STORE_ADD, MAILBOX_DELETED);
	assert_int_equal(mailbox_expunge(a, NULL, NULL, err, sizeof err), MAILBOX_OK);
	free(changes(a));
	assert_int_equal(mailbox_count(a), 70);
	assert_int_equal(inode_of(ipath), ino);
	char *text = read_file_text(ipath);
	assert_non_null(strstr(text, "\n1 1700000001."));
	free(text);
	/* 50 more: 80 of 100 lines name no file, the index is rewritten */
	for (size_t seq = 1; seq <= 50; seq++)
		store(a, seq, MAILBOX_STORE_ADD, MAILBOX_DELETED);
	assert_int_equal(mailbox_expunge(a, NULL, NULL, err, sizeof err), MAILBOX_OK);
	free(changes(a));
	assert_int_equal(mailbox_count(a), 20);
	assert_true(inode_of(ipath) != ino);
	text = read_file_text(ipath);
	char *want = xasprintf("V%u N101\n81 1700000081.M81P1Q81.test\n", validity);
	assert_true(strncmp(text, want, strlen(want)) == 0);
	free(want);
	size_t lines = 0;
	for (const char *p = text; *p; p++)
		lines += *p == '\n';
	assert_int_equal(lines, 21);
	free(text);
	/* the other view goes on with the same UIDs */
	sync_box(b, MAILBOX_SYNC_EXPUNGE);
	assert_false(mailbox_stale(b));
	free(changes(b));
	assert_int_equal(mailbox_count(b), 20);
	assert_int_equal(mailbox_msg(b, 1)->uid, 81);
	assert_int_equal(mailbox_uidvalidity(b), validity);
	deliver_new(f, "INBOX", 101);
	sync_box(b, MAILBOX_SYNC_EXPUNGE);
	assert_int_equal(mailbox_msg(b, 21)->uid, 101);
	mailbox_close(a);
	mailbox_close(b);
	free(ipath);
}

/* A job that never runs (its session went away) leaves nothing: the
 * APPEND's message file is removed, the folder unchanged. */
static void test_job_freed_unrun(void **state)
{
	struct fixture *f = *state;
	char err[256];
	char *path;
	int fd;
	assert_int_equal(mailbox_append_begin(f->root, "Drafts", &path, &fd, err, sizeof err),
			 MAILBOX_OK);
	assert_int_equal(write_all(fd, "Subject: x\r\n\r\ny\r\n", 18), 0);
	close(fd);
	struct mailbox_job *j = mailbox_append_job(f->root, "Drafts", path, MAILBOX_SEEN, 0);
	mailbox_job_free(j);
	assert_int_equal(access(path, F_OK), -1);
	char *dd = folder_dir(f, "Drafts");
	assert_int_equal(count_files(dd, "new") + count_files(dd, "cur"), 0);
	free(dd);
	free(path);
}

/* A new message file in folder's tmp/ (from append_begin), closed. */
static char *append_file(struct fixture *f, const char *folder, const char *text)
{
	char err[256];
	char *path;
	int fd;
	assert_int_equal(mailbox_append_begin(f->root, folder, &path, &fd, err, sizeof err),
			 MAILBOX_OK);
	assert_int_equal(write_all(fd, text, strlen(text)), 0);
	close(fd);
	return path;
}

/* RFC 3502 §6.3.11: the messages of one APPEND job go in all or none. */
static void test_append_job_all_or_none(void **state)
{
	struct fixture *f = *state;
	char err[256];
	uint32_t validity, uids[3];
	char *dd = folder_dir(f, "Drafts");

	/* three messages: consecutive UIDs, in order */
	char *p1 = append_file(f, "Drafts", "Subject: 1\r\n\r\none\r\n");
	char *p2 = append_file(f, "Drafts", "Subject: 2\r\n\r\ntwo\r\n");
	char *p3 = append_file(f, "Drafts", "Subject: 3\r\n\r\nthree\r\n");
	struct mailbox_job *j = mailbox_append_job(f->root, "Drafts", p1, 0, 0);
	mailbox_append_job_add(j, p2, MAILBOX_SEEN, 0);
	mailbox_append_job_add(j, p3, 0, 0);
	mailbox_job_run(j);
	assert_int_equal(mailbox_append_end(j, &validity, uids, 3, err, sizeof err), MAILBOX_OK);
	assert_true(validity != 0);
	assert_int_equal(uids[1], uids[0] + 1);
	assert_int_equal(uids[2], uids[0] + 2);
	assert_int_equal(count_files(dd, "new"), 2);
	assert_int_equal(count_files(dd, "cur"), 1);
	free(p1);
	free(p2);
	free(p3);

	/* the second cannot be opened when it is moved in (a symbolic link,
	 * refused with O_NOFOLLOW): neither goes in, no file is left */
	p1 = append_file(f, "Drafts", "Subject: 4\r\n\r\nfour\r\n");
	p2 = append_file(f, "Drafts", "Subject: 5\r\n\r\nfive\r\n");
	char *decoy = xasprintf("%s/decoy", f->root);
	assert_int_equal(rename(p2, decoy), 0);
	assert_int_equal(symlink(decoy, p2), 0);
	j = mailbox_append_job(f->root, "Drafts", p1, MAILBOX_FLAGGED, 0);
	mailbox_append_job_add(j, p2, 0, 0);
	mailbox_job_run(j);
	assert_int_equal(mailbox_append_end(j, &validity, uids, 2, err, sizeof err), MAILBOX_ERR_IO);
	assert_int_equal(uids[0], 0);
	assert_int_equal(count_files(dd, "new"), 2);
	assert_int_equal(count_files(dd, "cur"), 1);
	assert_int_equal(count_files(dd, "tmp"), 0);
	assert_int_equal(unlink(decoy), 0);
	free(decoy);
	free(p1);
	free(p2);
	free(dd);
}

/* A COPY in steps: a message whose flags another session changed between
 * the begin (the view's name for it) and the run is found under its new
 * name and copied. */
static void test_copy_job_finds_renamed_source(void **state)
{
	struct fixture *f = *state;
	deliver_new(f, "INBOX", 1);
	deliver_new(f, "INBOX", 2);
	struct mailbox *a = open_box(f, "INBOX", false);
	struct mailbox *b = open_box(f, "INBOX", false);
	struct seqs both = {{1, 2}, 2};
	struct mailbox_job *j;
	char err[256];
	assert_int_equal(mailbox_copy_begin(a, match_seqs, &both, "Trash", false, &j, err,
					    sizeof err),
			 MAILBOX_OK);
	store(b, 2, MAILBOX_STORE_ADD, MAILBOX_FLAGGED);
	mailbox_job_run(j);
	struct mailbox_uidmap map;
	assert_int_equal(mailbox_copy_end(a, j, &map, err, sizeof err), MAILBOX_OK);
	assert_int_equal(map.n, 2);
	assert_int_equal(map.src[1], 2);
	assert_int_equal(map.dst[1], 2);
	mailbox_uidmap_free(&map);
	struct mailbox *t = open_box(f, "Trash", true);
	assert_int_equal(mailbox_count(t), 2);
	mailbox_close(t);
	mailbox_close(a);
	mailbox_close(b);
}

static void test_copy(void **state)
{
	struct fixture *f = *state;
	for (int i = 1; i <= 4; i++)
		deliver_new(f, "INBOX", i);
	deliver_new(f, "Trash", 9);
	struct mailbox *a = open_box(f, "INBOX", false);
	store(a, 3, MAILBOX_STORE_ADD, MAILBOX_FLAGGED);
	struct mailbox *t = open_box(f, "Trash", false);
	struct seqs s = {{2, 3, 4}, 3};
	struct mailbox_uidmap map;
	char err[256];
	assert_int_equal(mailbox_copy(a, match_seqs, &s, "Trash", &map, err, sizeof err),
			 MAILBOX_OK);
	assert_int_equal(map.n, 3);
	assert_int_equal(map.uidvalidity, mailbox_uidvalidity(t));
	for (size_t i = 0; i < 3; i++) {
		assert_int_equal(map.src[i], i + 2);
		assert_int_equal(map.dst[i], i + 2); /* Trash had UID 1 */
	}
	mailbox_uidmap_free(&map);
	/* the source is untouched, nothing queued there */
	sync_box(a, MAILBOX_SYNC_EXPUNGE);
	assert_changes(a, "");
	assert_int_equal(mailbox_count(a), 4);
	/* RFC 3501 §6.4.7: the copies are \Recent in the destination */
	sync_box(t, MAILBOX_SYNC_EXPUNGE);
	assert_changes(t, "EXISTS 4,RECENT 4");
	const struct mailbox_msg *m = mailbox_msg(t, 3);
	assert_int_equal(m->flags, MAILBOX_FLAGGED | MAILBOX_RECENT); /* flags kept */
	assert_int_equal(m->internal_date, mailbox_msg(a, 3)->internal_date);
	assert_int_equal(m->size, mailbox_msg(a, 3)->size);
	/* a new unique name: copies are different messages */
	assert_true(maildir_unique_len(m->name) != maildir_unique_len(mailbox_msg(a, 3)->name) ||
		    strncmp(m->name, mailbox_msg(a, 3)->name, maildir_unique_len(m->name)) != 0);
	/* a change to the copy leaves the original alone */
	store(t, 3, MAILBOX_STORE_ADD, MAILBOX_SEEN);
	sync_box(a, MAILBOX_SYNC_EXPUNGE);
	assert_changes(a, "");
	/* into itself */
	struct seqs one = {{1}, 1};
	assert_int_equal(mailbox_copy(a, match_seqs, &one, "INBOX", &map, err, sizeof err),
			 MAILBOX_OK);
	assert_int_equal(map.n, 1);
	assert_int_equal(map.dst[0], 5);
	mailbox_uidmap_free(&map);
	sync_box(a, MAILBOX_SYNC_EXPUNGE);
	assert_changes(a, "EXISTS 5,RECENT 5");
	assert_int_equal(mailbox_copy(a, match_seqs, &one, "Nope", &map, err, sizeof err),
			 MAILBOX_ERR_NONEXISTENT);
	/* all named messages vanished */
	char *p = mailbox_msg_path(a, 1);
	assert_int_equal(unlink(p), 0);
	free(p);
	assert_int_equal(mailbox_copy(a, match_seqs, &one, "Trash", &map, err, sizeof err),
			 MAILBOX_ERR_EXPUNGED);
	mailbox_close(a);
	mailbox_close(t);
}

/* A COPY or MOVE whose set names no message, into an empty folder: OK
 * with an empty map (found by fuzz_imap_session: the empty destination's
 * listing has no array, and copying it was undefined behaviour). */
static void test_copy_nothing_into_empty(void **state)
{
	struct fixture *f = *state;
	deliver_new(f, "INBOX", 1);
	struct mailbox *a = open_box(f, "INBOX", false);
	struct seqs none = {{7}, 1};
	struct mailbox_uidmap map;
	char err[256];
	assert_int_equal(mailbox_copy(a, match_seqs, &none, "Trash", &map, err, sizeof err),
			 MAILBOX_OK);
	assert_int_equal(map.n, 0);
	mailbox_uidmap_free(&map);
	assert_int_equal(mailbox_move(a, match_seqs, &none, "Junk", &map, err, sizeof err),
			 MAILBOX_OK);
	assert_int_equal(map.n, 0);
	mailbox_uidmap_free(&map);
	assert_int_equal(mailbox_count(a), 1);
	struct mailbox *t = open_box(f, "Trash", true);
	assert_int_equal(mailbox_count(t), 0);
	mailbox_close(t);
	mailbox_close(a);
}

static void test_move(void **state)
{
	struct fixture *f = *state;
	for (int i = 1; i <= 4; i++)
		deliver_new(f, "INBOX", i);
	struct mailbox *a = open_box(f, "INBOX", false);
	struct mailbox *b = open_box(f, "INBOX", false);
	struct seqs s = {{1, 3}, 2};
	struct mailbox_uidmap map;
	char err[256];
	assert_int_equal(mailbox_move(a, match_seqs, &s, "Trash", &map, err, sizeof err),
			 MAILBOX_OK);
	assert_int_equal(map.n, 2);
	assert_int_equal(map.src[0], 1);
	assert_int_equal(map.src[1], 3);
	assert_int_equal(map.dst[0], 1);
	assert_int_equal(map.dst[1], 2);
	mailbox_uidmap_free(&map);
	assert_changes(a, "EXPUNGE 3,EXPUNGE 1,RECENT 2");
	assert_int_equal(mailbox_count(a), 2);
	sync_box(b, MAILBOX_SYNC_EXPUNGE);
	assert_changes(b, "EXPUNGE 3,EXPUNGE 1");
	struct mailbox *t = open_box(f, "Trash", true);
	assert_int_equal(mailbox_count(t), 2);
	mailbox_close(t);
	struct mailbox *ro = open_box(f, "INBOX", true);
	assert_int_equal(mailbox_move(ro, match_all, NULL, "Trash", &map, err, sizeof err),
			 MAILBOX_ERR_READONLY);
	mailbox_close(ro);
	mailbox_close(a);
	mailbox_close(b);
}

static void test_status(void **state)
{
	struct fixture *f = *state;
	deliver_new(f, "Junk", 1);
	deliver_new(f, "Junk", 2);
	free(deliver(f, "Junk", "cur", 1700000003, 3, ":2,S"));
	struct mailbox_status st;
	char err[256];
	assert_int_equal(mailbox_status(f->root, "Junk", &st, err, sizeof err), MAILBOX_OK);
	assert_int_equal(st.messages, 3);
	assert_int_equal(st.recent, 2);
	assert_int_equal(st.unseen, 2);
	assert_int_equal(st.uidnext, 4);
	assert_true(st.uidvalidity > 0);
	char *jd = folder_dir(f, "Junk");
	assert_int_equal(count_files(jd, "new"), 2); /* nothing moved */
	free(jd);
	/* the same UIDs in a view opened later */
	struct mailbox *mb = open_box(f, "Junk", false);
	assert_int_equal(mailbox_uidvalidity(mb), st.uidvalidity);
	assert_int_equal(mailbox_uidnext(mb), 4);
	assert_int_equal(mailbox_recent(mb), 2);
	mailbox_close(mb);
	assert_int_equal(mailbox_status(f->root, "Junk", &st, err, sizeof err), MAILBOX_OK);
	assert_int_equal(st.recent, 0);
	assert_int_equal(mailbox_status(f->root, "Nope", &st, err, sizeof err),
			 MAILBOX_ERR_NONEXISTENT);
	assert_int_equal(mailbox_status(f->root, "a/b", &st, err, sizeof err), MAILBOX_ERR_NAME);
}

static void test_watch(void **state)
{
	struct fixture *f = *state;
	struct mailbox *a = open_box(f, "INBOX", false);
	char err[256];
	int fd = mailbox_watch(a, err, sizeof err);
	assert_true(fd >= 0);
	assert_int_equal(mailbox_watch(a, err, sizeof err), fd);
	assert_false(mailbox_watch_drain(a));
	struct pollfd p = {.fd = fd, .events = POLLIN};
	assert_int_equal(poll(&p, 1, 0), 0);
	deliver_new(f, "INBOX", 1);
	assert_int_equal(poll(&p, 1, 5000), 1);
	assert_true(mailbox_watch_drain(a));
	assert_int_equal(poll(&p, 1, 0), 0);
	sync_box(a, MAILBOX_SYNC_EXPUNGE);
	assert_changes(a, "EXISTS 1,RECENT 1");
	/* a flag change in cur/ wakes it too */
	struct mailbox *b = open_box(f, "INBOX", false);
	mailbox_watch_drain(a);
	store(b, 1, MAILBOX_STORE_ADD, MAILBOX_SEEN);
	assert_int_equal(poll(&p, 1, 5000), 1);
	assert_true(mailbox_watch_drain(a));
	mailbox_unwatch(a);
	mailbox_close(b);
	mailbox_close(a);
}

/* ---- a large folder -------------------------------------------------------- */

static double now_seconds(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void test_large_folder(void **state)
{
	struct fixture *f = *state;
	enum { N = 100000 };
	/* hard links of a few files (ext4 allows 65,000 links to one):
	 * cheap to make, each its own message */
	char *first = deliver(f, "INBOX", "cur", 1700000000, 0, ":2,S");
	char *src = xasprintf("%s/cur/%s", f->root, first);
	for (int i = 1; i < N; i++) {
		if (i % 50000 == 0) {
			free(first);
			free(src);
			first = deliver(f, "INBOX", "cur", 1700000000 + i, i,
					i % 2 ? ":2,S" : ":2,");
			src = xasprintf("%s/cur/%s", f->root, first);
			continue;
		}
		char *p = xasprintf("%s/cur/%d.M%dP1Q%d.test,S=30,W=33:2,%s", f->root,
				    1700000000 + i, i, i, i % 2 ? "S" : "");
		assert_int_equal(link(src, p), 0);
		free(p);
	}
	double t0 = now_seconds();
	struct mailbox *a = open_box(f, "INBOX", false);
	double t_open = now_seconds() - t0;
	assert_int_equal(mailbox_count(a), N);
	assert_int_equal(mailbox_msg(a, N)->uid, N);
	assert_int_equal(mailbox_seq_of_uid(a, 77777), 77777);
	assert_int_equal(mailbox_first_unseen(a), 3);
	/* unchanged: the cheap path */
	t0 = now_seconds();
	struct timespec old = {.tv_sec = time(NULL) - 10};
	struct timespec times[2] = {old, old};
	char *cur = xasprintf("%s/cur", f->root);
	char *newd = xasprintf("%s/new", f->root);
	assert_int_equal(utimensat(AT_FDCWD, cur, times, 0), 0);
	assert_int_equal(utimensat(AT_FDCWD, newd, times, 0), 0);
	char err[256];
	assert_int_equal(mailbox_sync(a, MAILBOX_SYNC_FORCE, err, sizeof err), MAILBOX_OK);
	for (int i = 0; i < 1000; i++)
		assert_int_equal(mailbox_sync(a, MAILBOX_SYNC_EXPUNGE, err, sizeof err),
				 MAILBOX_OK);
	double t_idle = now_seconds() - t0;
	/* one new message among 100,000 */
	deliver_new(f, "INBOX", N + 1);
	t0 = now_seconds();
	sync_box(a, MAILBOX_SYNC_EXPUNGE);
	double t_sync = now_seconds() - t0;
	assert_changes(a, "EXISTS 100001,RECENT 1");
	/* STORE on all, EXPUNGE half */
	t0 = now_seconds();
	uint32_t range[2] = {1, N / 2};
	assert_int_equal(mailbox_store(a, match_uid_range, range, MAILBOX_STORE_ADD,
				       MAILBOX_DELETED, err, sizeof err),
			 MAILBOX_OK);
	assert_int_equal(mailbox_expunge(a, NULL, NULL, err, sizeof err), MAILBOX_OK);
	size_t expunges = 0;
	struct mailbox_change c;
	size_t last = SIZE_MAX;
	while (mailbox_next_change(a, &c)) {
		assert_int_equal(c.kind, MAILBOX_CHANGE_EXPUNGE);
		assert_true(c.n < last);
		last = c.n;
		expunges++;
	}
	double t_expunge = now_seconds() - t0;
	assert_int_equal(expunges, N / 2);
	assert_int_equal(mailbox_count(a), N / 2 + 1);
	assert_int_equal(mailbox_msg(a, 1)->uid, N / 2 + 1);
	print_message("100,000 messages: open %.2fs, 1000 unchanged syncs %.3fs, sync with one "
		      "new %.2fs, store+expunge 50,000 %.2fs\n",
		      t_open, t_idle, t_sync, t_expunge);
	/* generous bounds for a loaded machine under ASan: catching quadratic work */
	assert_true(t_open < 30);
	assert_true(t_idle < 60); /* a full scan each time would take far longer */
	assert_true(t_sync < 30);
	assert_true(t_expunge < 60);
	mailbox_close(a);
	free(cur);
	free(newd);
	free(src);
	free(first);
}


/* ---- keywords (dovecot-keywords) ---------------------------------------------- */

static void test_keyword_valid(void **state)
{
	(void)state;
	assert_true(mailbox_keyword_valid("$Junk"));
	assert_true(mailbox_keyword_valid("NonJunk"));
	char long_name[MAILBOX_KEYWORD_LEN + 2];
	memset(long_name, 'k', sizeof long_name - 1);
	long_name[MAILBOX_KEYWORD_LEN] = '\0';
	assert_true(mailbox_keyword_valid(long_name));
	long_name[MAILBOX_KEYWORD_LEN] = 'k';
	long_name[MAILBOX_KEYWORD_LEN + 1] = '\0';
	assert_false(mailbox_keyword_valid(long_name)); /* 65 octets */
	assert_false(mailbox_keyword_valid(""));
	assert_false(mailbox_keyword_valid("\\Seen"));
	assert_false(mailbox_keyword_valid("a b"));
	assert_false(mailbox_keyword_valid("a(b"));
	assert_false(mailbox_keyword_valid("a]b"));
	assert_false(mailbox_keyword_valid("a*"));
	assert_false(mailbox_keyword_valid("caf\xc3\xa9"));
}

static void test_keywords_parse(void **state)
{
	(void)state;
	char text[1024];
	char too_long[MAILBOX_KEYWORD_LEN + 2];
	memset(too_long, 'x', sizeof too_long - 1);
	too_long[sizeof too_long - 1] = '\0';
	int n = snprintf(text, sizeof text,
			 "0 $Junk\n"
			 "1 $Forwarded\r\n"
			 "garbage\n"
			 "2\n"
			 "3  two spaces\n"
			 "26 $OutOfRange\n"
			 "1000 $Huge\n"
			 "1 $SameIndex\n"
			 "4 $junk\n"            /* the same name in another case */
			 "5 bad(name\n"
			 "6 %s\n"
			 "-1 $Negative\n"
			 "\n"
			 "25 $Last", too_long);
	assert_true(n > 0 && (size_t)n < sizeof text);
	struct mailbox_keywords k;
	mailbox_keywords_parse(text, (size_t)n, &k);
	assert_string_equal(k.name[0], "$Junk");
	assert_string_equal(k.name[1], "$Forwarded");
	assert_string_equal(k.name[25], "$Last");
	for (int i = 2; i < 25; i++)
		assert_string_equal(k.name[i], "");
	assert_int_equal(mailbox_keywords_count(&k), 3);
	assert_int_equal(mailbox_keywords_find(&k, "$JUNK"), 0);
	assert_int_equal(mailbox_keywords_find(&k, "$Last"), 25);
	assert_int_equal(mailbox_keywords_find(&k, "$SameIndex"), -1);
	assert_int_equal(mailbox_keywords_find(&k, "$OutOfRange"), -1);
	/* nothing at all, and no end of line */
	mailbox_keywords_parse("", 0, &k);
	assert_int_equal(mailbox_keywords_count(&k), 0);
	mailbox_keywords_parse("7 $Seven", 8, &k);
	assert_int_equal(mailbox_keywords_find(&k, "$Seven"), 7);
}

static char *read_text(const char *path)
{
	FILE *fp = fopen(path, "r");
	assert_non_null(fp);
	static char buf[4096];
	size_t n = fread(buf, 1, sizeof buf - 1, fp);
	buf[n] = '\0';
	assert_int_equal(fclose(fp), 0);
	return buf;
}

/* Names map to letters per folder; a new name is added to the file;
 * another view learns it; COPY maps through the destination's file. */
static void test_keywords_letters_and_copy(void **state)
{
	struct fixture *f = *state;
	char err[256] = "";
	deliver_new(f, "INBOX", 1);
	assert_int_equal(mailbox_create(f->root, "Dest", err, sizeof err), MAILBOX_OK);
	char *dpath = xasprintf("%s/.Dest/dovecot-keywords", f->root);
	FILE *fp = fopen(dpath, "w");
	assert_non_null(fp);
	assert_true(fputs("0 Other\n", fp) >= 0);
	assert_int_equal(fclose(fp), 0);

	struct mailbox *a = open_box(f, "INBOX", false);
	struct mailbox *b = open_box(f, "INBOX", false);
	const char *names[] = {"$Junk", "$Later"};
	unsigned bits = 0;
	assert_int_equal(mailbox_keywords_bits(a, names, 2, false, &bits, err, sizeof err),
			 MAILBOX_OK);
	assert_int_equal(bits, 0); /* not created without create */
	assert_int_equal(mailbox_keywords_bits(a, names, 2, true, &bits, err, sizeof err),
			 MAILBOX_OK);
	assert_int_equal(bits, MAILBOX_KEYWORD(0) | MAILBOX_KEYWORD(1));
	assert_true(mailbox_keywords_take_changed(a));
	assert_false(mailbox_keywords_take_changed(a));
	char *ipath = xasprintf("%s/dovecot-keywords", f->root);
	assert_string_equal(read_text(ipath), "0 $Junk\n1 $Later\n");
	store(a, 1, MAILBOX_STORE_ADD, MAILBOX_SEEN | MAILBOX_KEYWORD(1));
	assert_non_null(strstr(mailbox_msg(a, 1)->name, ":2,Sb"));

	sync_box(b, 0);
	assert_true(mailbox_keywords_take_changed(b));
	assert_int_equal(mailbox_keywords_find(mailbox_keywords(b), "$later"), 1);
	assert_int_equal(mailbox_msg(b, 1)->flags & MAILBOX_FLAGS_PERMANENT,
			 MAILBOX_SEEN | MAILBOX_KEYWORD(1));

	struct mailbox_uidmap map = {0};
	assert_int_equal(mailbox_copy(a, match_all, NULL, "Dest", &map, err, sizeof err),
			 MAILBOX_OK);
	assert_int_equal(map.n, 1);
	mailbox_uidmap_free(&map);
	struct mailbox *d = open_box(f, "Dest", false);
	const struct mailbox_keywords *dk = mailbox_keywords(d);
	assert_int_equal(mailbox_keywords_find(dk, "Other"), 0);
	int later = mailbox_keywords_find(dk, "$Later");
	assert_int_equal(later, 1);
	assert_int_equal(mailbox_keywords_find(dk, "$Junk"), -1); /* on no message copied */
	assert_int_equal(mailbox_msg(d, 1)->flags & MAILBOX_FLAGS_PERMANENT,
			 MAILBOX_SEEN | MAILBOX_KEYWORD(later));
	assert_string_equal(read_text(dpath), "0 Other\n1 $Later\n");
	mailbox_close(d);
	mailbox_close(a);
	mailbox_close(b);
	free(ipath);
	free(dpath);
}

/* 26 per folder: the 27th is LIMIT, a known one still resolves. */
static void test_keywords_limit(void **state)
{
	struct fixture *f = *state;
	char err[256] = "";
	deliver_new(f, "INBOX", 1);
	struct mailbox *a = open_box(f, "INBOX", false);
	char names[MAILBOX_KEYWORDS_MAX + 1][8];
	const char *v[MAILBOX_KEYWORDS_MAX + 1];
	for (int i = 0; i <= MAILBOX_KEYWORDS_MAX; i++) {
		xsnprintf(names[i], sizeof names[i], "k%d", i);
		v[i] = names[i];
	}
	unsigned bits = 0;
	assert_int_equal(mailbox_keywords_bits(a, v, MAILBOX_KEYWORDS_MAX, true, &bits, err,
					       sizeof err),
			 MAILBOX_OK);
	assert_int_equal(bits, MAILBOX_KEYWORDS_ALL);
	assert_int_equal(mailbox_keywords_bits(a, v + MAILBOX_KEYWORDS_MAX, 1, true, &bits, err,
					       sizeof err),
			 MAILBOX_ERR_LIMIT);
	assert_int_equal(mailbox_keywords_bits(a, v + 3, 1, true, &bits, err, sizeof err),
			 MAILBOX_OK);
	assert_int_equal(bits, MAILBOX_KEYWORD(3));
	assert_int_equal(mailbox_keywords_count(mailbox_keywords(a)), MAILBOX_KEYWORDS_MAX);
	mailbox_close(a);
}

/* ---- the listing cache ------------------------------------------------- */

/* Until the clock has ticked past the change time of the folder's file
 * name (its UID index, its MODSEQ table): a listing after that is settled. */
static void wait_clock_past(const struct fixture *f, const char *name)
{
	char *p = xasprintf("%s/%s", f->root, name);
	struct stat sb;
	if (stat(p, &sb) == 0) {
		for (int i = 0; i < 1000; i++) {
			struct timespec now;
			clock_gettime(CLOCK_REALTIME_COARSE, &now);
			if (now.tv_sec > sb.st_ctim.tv_sec ||
			    (now.tv_sec == sb.st_ctim.tv_sec && now.tv_nsec > sb.st_ctim.tv_nsec))
				break;
			usleep(1000);
		}
	}
	free(p);
}

static void wait_settled(const struct fixture *f)
{
	wait_clock_past(f, "posthorn-uidlist");
	wait_clock_past(f, "posthorn-modseq");
	wait_clock_past(f, "cur");
	wait_clock_past(f, "new");
}

/* Open INBOX read-write and close it; whether the cache answered. */
static bool open_close_hit(const struct fixture *f, size_t *count)
{
	struct mailbox_cache_counts before, after;
	mailbox_cache_counts(&before);
	struct mailbox *mb = open_box(f, "INBOX", false);
	*count = mailbox_count(mb);
	mailbox_close(mb);
	mailbox_cache_counts(&after);
	assert_int_equal(after.hits + after.misses, before.hits + before.misses + 1);
	return after.hits == before.hits + 1;
}

/* Listed (the index written), then settled, then kept: the next SELECT
 * is a hit. */
static void settle_and_keep(const struct fixture *f)
{
	size_t n;
	(void)open_close_hit(f, &n);
	wait_settled(f);
	(void)open_close_hit(f, &n);
}

static void test_cache_hit_and_misses(void **state)
{
	struct fixture *f = *state;
	mailbox_cache_clear();
	char *a = deliver(f, "INBOX", "cur", 1700000001LL, 1, ":2,S");
	free(deliver(f, "INBOX", "cur", 1700000002LL, 2, ":2,S"));
	free(deliver(f, "INBOX", "cur", 1700000003LL, 3, ":2,"));
	size_t n = 0;
	assert_false(open_close_hit(f, &n)); /* nothing kept yet */
	assert_int_equal(n, 3);
	settle_and_keep(f);
	assert_true(open_close_hit(f, &n));
	assert_int_equal(n, 3);
	struct mailbox *mb = open_box(f, "INBOX", false);
	assert_int_equal(mailbox_msg(mb, 1)->uid, 1);
	assert_int_equal(mailbox_msg(mb, 3)->uid, 3);
	assert_int_equal(mailbox_msg(mb, 1)->flags, MAILBOX_SEEN);
	assert_int_equal(mailbox_msg(mb, 3)->flags, 0);
	assert_int_equal(mailbox_uidnext(mb), 4);
	mailbox_close(mb);
	/* a file added right after (the same second): a miss, and it is seen */
	free(deliver(f, "INBOX", "cur", 1700000004LL, 4, ":2,"));
	assert_false(open_close_hit(f, &n));
	assert_int_equal(n, 4);
	settle_and_keep(f);
	assert_true(open_close_hit(f, &n));
	/* renamed by another program (a flag added) */
	char *from = xasprintf("%s/cur/%s", f->root, a);
	char *to = xasprintf("%s/cur/%.*sFS", f->root, (int)(strlen(a) - 1), a);
	assert_int_equal(rename(from, to), 0);
	assert_false(open_close_hit(f, &n));
	mb = open_box(f, "INBOX", false);
	assert_int_equal(mailbox_msg(mb, 1)->flags, MAILBOX_SEEN | MAILBOX_FLAGGED);
	mailbox_close(mb);
	settle_and_keep(f);
	assert_true(open_close_hit(f, &n));
	/* removed */
	assert_int_equal(unlink(to), 0);
	assert_false(open_close_hit(f, &n));
	assert_int_equal(n, 3);
	free(from);
	free(to);
	free(a);
	mailbox_cache_clear();
}

/* Directory times not settled (here: ahead of the clock) are never
 * trusted: a file added under the same time is still seen. */
static void test_cache_unsettled_not_kept(void **state)
{
	struct fixture *f = *state;
	mailbox_cache_clear();
	free(deliver(f, "INBOX", "cur", 1700000001LL, 1, ":2,S"));
	size_t n;
	settle_and_keep(f);
	assert_true(open_close_hit(f, &n));
	struct timespec ahead = {.tv_sec = time(NULL) + 3600, .tv_nsec = 5000};
	struct timespec times[2] = {ahead, ahead};
	char *cur = xasprintf("%s/cur", f->root);
	assert_int_equal(utimensat(AT_FDCWD, cur, times, 0), 0);
	assert_false(open_close_hit(f, &n));
	assert_false(open_close_hit(f, &n));
	free(deliver(f, "INBOX", "cur", 1700000002LL, 2, ":2,S"));
	assert_int_equal(utimensat(AT_FDCWD, cur, times, 0), 0);
	assert_false(open_close_hit(f, &n));
	assert_int_equal(n, 2);
	free(cur);
	mailbox_cache_clear();
}

/* A message without W= in its name is read to count its size once: a
 * later listing of the changed folder takes the size it knew. */
static void test_cache_keeps_counted_sizes(void **state)
{
	struct fixture *f = *state;
	mailbox_cache_clear();
	char *path = xasprintf("%s/cur/1700000001.M1P1.test:2,S", f->root);
	write_text(path, "a\nb\n");
	size_t n;
	settle_and_keep(f);
	struct mailbox *mb = open_box(f, "INBOX", false);
	assert_int_equal(mailbox_msg(mb, 1)->size, 6);
	mailbox_close(mb);
	/* not how Maildir is used (files never change): shows no re-count */
	write_text(path, "abcdef\nabcdef\n");
	free(deliver(f, "INBOX", "cur", 1700000002LL, 2, ":2,S"));
	assert_false(open_close_hit(f, &n));
	mb = open_box(f, "INBOX", false);
	assert_int_equal(mailbox_count(mb), 2);
	assert_int_equal(mailbox_msg(mb, 1)->size, 6);
	mailbox_close(mb);
	free(path);
	mailbox_cache_clear();
}

/* ---- the listing's snapshot (posthorn-listing) ------------------------- */

enum { SNAP_N = MAILBOX_SNAPSHOT_MIN + 44 };

/* What a view shows of each message, as one text to compare. */
static char *view_text(struct mailbox *mb)
{
	char *out = xasprintf("V%u N%u H%llu", mailbox_uidvalidity(mb), mailbox_uidnext(mb),
			      (unsigned long long)mailbox_highestmodseq(mb));
	for (size_t i = 1; i <= mailbox_count(mb); i++) {
		const struct mailbox_msg *m = mailbox_msg(mb, i);
		char *next = xasprintf("%s|%u %s %llu %lld %u %llu", out, m->uid, m->name,
				       (unsigned long long)m->size, m->internal_date, m->flags,
				       (unsigned long long)m->modseq);
		free(out);
		out = next;
	}
	return out;
}

/* SNAP_N messages (every third without \Seen), listed until the listing
 * stands for the folder: then it is in the snapshot too.  Returns the
 * view's text. */
static char *snapshot_folder(const struct fixture *f)
{
	mailbox_cache_clear();
	for (int i = 1; i <= SNAP_N; i++)
		free(deliver(f, "INBOX", "cur", 1700000000LL + i, i, i % 3 ? ":2,S" : ":2,"));
	settle_and_keep(f);
	struct mailbox *mb = open_box(f, "INBOX", false);
	char *text = view_text(mb);
	mailbox_close(mb);
	char *path = xasprintf("%s/posthorn-listing", f->root);
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	free(path);
	return text;
}

/* After a start (the cache empty) the snapshot answers the first SELECT,
 * with the very view a listing gave. */
static void test_snapshot_after_restart(void **state)
{
	struct fixture *f = *state;
	char *want = snapshot_folder(f);
	mailbox_cache_clear();
	size_t n;
	assert_true(open_close_hit(f, &n));
	assert_int_equal(n, SNAP_N);
	struct mailbox *mb = open_box(f, "INBOX", true);
	char *got = view_text(mb);
	assert_string_equal(got, want);
	assert_int_equal(mailbox_first_unseen(mb), 3);
	mailbox_close(mb);
	free(got);
	free(want);
	mailbox_cache_clear();
}

/* A message delivered to new/ after the snapshot: the snapshot is stale,
 * the folder is listed and the message is seen. */
static void test_snapshot_stale_after_delivery(void **state)
{
	struct fixture *f = *state;
	free(snapshot_folder(f));
	mailbox_cache_clear();
	deliver_new(f, "INBOX", SNAP_N + 1);
	size_t n;
	assert_false(open_close_hit(f, &n));
	assert_int_equal(n, SNAP_N + 1);
	/* a flag changed by another program: the same */
	wait_settled(f);
	settle_and_keep(f);
	mailbox_cache_clear();
	assert_true(open_close_hit(f, &n));
	mailbox_cache_clear();
	struct mailbox *mb = open_box(f, "INBOX", false);
	const struct mailbox_msg *m = mailbox_msg(mb, 1);
	char *from = xasprintf("%s/cur/%s", f->root, m->name);
	char *to = xasprintf("%s/cur/%.*sFS", f->root, (int)(strlen(m->name) - 1), m->name);
	mailbox_close(mb);
	mailbox_cache_clear();
	assert_int_equal(rename(from, to), 0);
	assert_false(open_close_hit(f, &n));
	mb = open_box(f, "INBOX", false);
	assert_int_equal(mailbox_msg(mb, 1)->flags, MAILBOX_SEEN | MAILBOX_FLAGGED);
	mailbox_close(mb);
	free(from);
	free(to);
	mailbox_cache_clear();
}

/* A damaged snapshot (a flipped octet, cut short, another version) is
 * ignored: the folder is listed and shows what is on disk. */
static void test_snapshot_damaged_ignored(void **state)
{
	struct fixture *f = *state;
	char *want = snapshot_folder(f);
	char *path = xasprintf("%s/posthorn-listing", f->root);
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	off_t at[] = {200, st.st_size / 2, st.st_size - 1, 8 /* the version */};
	for (size_t i = 0; i < sizeof at / sizeof at[0]; i++) {
		int fd = open(path, O_RDWR);
		assert_true(fd >= 0);
		unsigned char c;
		assert_int_equal(pread(fd, &c, 1, at[i]), 1);
		c ^= 0x10;
		assert_int_equal(pwrite(fd, &c, 1, at[i]), 1);
		mailbox_cache_clear();
		size_t n;
		assert_false(open_close_hit(f, &n));
		assert_int_equal(n, SNAP_N);
		c ^= 0x10;
		assert_int_equal(pwrite(fd, &c, 1, at[i]), 1);
		close(fd);
	}
	assert_int_equal(truncate(path, st.st_size - 9), 0);
	mailbox_cache_clear();
	struct mailbox *mb = open_box(f, "INBOX", true);
	char *got = view_text(mb);
	assert_string_equal(got, want);
	mailbox_close(mb);
	free(got);
	free(path);
	free(want);
	mailbox_cache_clear();
}

/* Views copied from the cache share its names: one view's STORE and
 * EXPUNGE give its messages names of their own and leave the others'
 * alone; the cache dropped under open views leaves them whole. */
static void test_cache_views_share_names(void **state)
{
	struct fixture *f = *state;
	mailbox_cache_clear();
	for (int i = 1; i <= 3; i++)
		free(deliver(f, "INBOX", "cur", 1700000000LL + i, i, ":2,S"));
	settle_and_keep(f);
	size_t n;
	assert_true(open_close_hit(f, &n));
	struct mailbox *a = open_box(f, "INBOX", false);
	struct mailbox *b = open_box(f, "INBOX", false);
	char *b1 = xstrdup(mailbox_msg(b, 1)->name);
	store(a, 1, MAILBOX_STORE_ADD, MAILBOX_FLAGGED | MAILBOX_DELETED);
	assert_string_equal(mailbox_msg(b, 1)->name, b1);
	assert_string_not_equal(mailbox_msg(a, 1)->name, b1);
	mailbox_cache_clear();
	char err[256] = "";
	assert_int_equal(mailbox_expunge(a, NULL, NULL, err, sizeof err), MAILBOX_OK);
	char *c = changes(a);
	assert_string_equal(c, "EXPUNGE 1");
	free(c);
	sync_box(b, MAILBOX_SYNC_EXPUNGE);
	c = changes(b);
	assert_string_equal(c, "EXPUNGE 1");
	free(c);
	assert_int_equal(mailbox_count(b), 2);
	assert_int_equal(mailbox_msg(b, 2)->uid, 3);
	assert_int_equal(mailbox_msg(b, 2)->flags, MAILBOX_SEEN);
	mailbox_close(a);
	mailbox_close(b);
	free(b1);
	mailbox_cache_clear();
}

/* After a delivery into new/ with cur/ unchanged, cur/ is taken from the
 * kept listing and only new/ is read: the new messages get the next
 * UIDs and are \Recent.  (Shown by a file slipped into cur/ with the
 * directory's time put back: not seen until cur/ changes for real.) */
static void test_listing_new_only(void **state)
{
	struct fixture *f = *state;
	mailbox_cache_clear();
	for (int i = 1; i <= 5; i++)
		free(deliver(f, "INBOX", "cur", 1700000000LL + i, i, ":2,S"));
	settle_and_keep(f);
	char *cur = xasprintf("%s/cur", f->root);
	struct stat before;
	assert_int_equal(stat(cur, &before), 0);
	free(deliver(f, "INBOX", "cur", 1700000100LL, 100, ":2,S"));
	struct timespec times[2] = {before.st_atim, before.st_mtim};
	assert_int_equal(utimensat(AT_FDCWD, cur, times, 0), 0);
	deliver_new(f, "INBOX", 6);
	deliver_new(f, "INBOX", 7);
	struct mailbox *mb = open_box(f, "INBOX", true);
	assert_int_equal(mailbox_count(mb), 7);
	assert_int_equal(mailbox_recent(mb), 2);
	assert_int_equal(mailbox_msg(mb, 6)->uid, 6);
	assert_int_equal(mailbox_msg(mb, 7)->uid, 7);
	assert_true(mailbox_msg(mb, 7)->in_new);
	assert_int_equal(mailbox_msg(mb, 7)->flags, MAILBOX_RECENT);
	assert_int_equal(mailbox_msg(mb, 5)->flags, MAILBOX_SEEN);
	mailbox_close(mb);
	/* what was kept had messages in new/: the next view lists it whole */
	mb = open_box(f, "INBOX", false);
	assert_int_equal(mailbox_count(mb), 8);
	assert_int_equal(mailbox_msg(mb, 8)->uid, 8);
	assert_int_equal(mailbox_recent(mb), 2);
	mailbox_close(mb);
	free(cur);
	mailbox_cache_clear();
}

/* A file in new/ with the unique part of a message in cur/ (another
 * tool's copy) is not a new message, whichever way the folder is read. */
static void test_listing_new_copy_of_cur(void **state)
{
	struct fixture *f = *state;
	mailbox_cache_clear();
	char *a = deliver(f, "INBOX", "cur", 1700000001LL, 1, ":2,S");
	free(deliver(f, "INBOX", "cur", 1700000002LL, 2, ":2,S"));
	settle_and_keep(f);
	char *from = xasprintf("%s/cur/%s", f->root, a);
	char *to = xasprintf("%s/new/%.*s", f->root, (int)(strchr(a, ':') - a), a);
	assert_int_equal(link(from, to), 0);
	struct mailbox *mb = open_box(f, "INBOX", true);
	assert_int_equal(mailbox_count(mb), 2);
	assert_int_equal(mailbox_uidnext(mb), 3);
	mailbox_close(mb);
	free(from);
	free(to);
	free(a);
	mailbox_cache_clear();
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_names),
		cmocka_unit_test(test_names_modified_utf7),
		cmocka_unit_test(test_match),
		cmocka_unit_test(test_keyword_valid),
		cmocka_unit_test(test_keywords_parse),
		cmocka_unit_test_setup_teardown(test_keywords_letters_and_copy, setup, teardown),
		cmocka_unit_test_setup_teardown(test_keywords_limit, setup, teardown),
		cmocka_unit_test(test_flags),
		cmocka_unit_test_setup_teardown(test_prepare_special_folders, setup, teardown),
		cmocka_unit_test_setup_teardown(test_special_use_follows_the_folder, setup, teardown),
		cmocka_unit_test_setup_teardown(test_special_use_for_an_older_store, setup, teardown),
		cmocka_unit_test_setup_teardown(test_create, setup, teardown),
		cmocka_unit_test_setup_teardown(test_implied_parent_noselect, setup, teardown),
		cmocka_unit_test_setup_teardown(test_many_folders, setup, teardown),
		cmocka_unit_test_setup_teardown(test_delete, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rename, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rename_inbox, setup, teardown),
		cmocka_unit_test_setup_teardown(test_subscriptions, setup, teardown),
		cmocka_unit_test_setup_teardown(test_subscriptions_over_limit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_read_errors, setup, teardown),
		cmocka_unit_test_setup_teardown(test_uids_stable_across_reopen, setup, teardown),
		cmocka_unit_test_setup_teardown(test_index_lost_while_open, setup, teardown),
		cmocka_unit_test_setup_teardown(test_index_grows_by_appends, setup, teardown),
		cmocka_unit_test_setup_teardown(test_index_torn_tail_ignored, setup, teardown),
		cmocka_unit_test_setup_teardown(test_index_zeros_in_tail, setup, teardown),
		cmocka_unit_test_setup_teardown(test_index_compaction, setup, teardown),
		cmocka_unit_test_setup_teardown(test_job_freed_unrun, setup, teardown),
		cmocka_unit_test_setup_teardown(test_append_job_all_or_none, setup, teardown),
		cmocka_unit_test_setup_teardown(test_copy_job_finds_renamed_source, setup, teardown),
		cmocka_unit_test_setup_teardown(test_recent, setup, teardown),
		cmocka_unit_test_setup_teardown(test_views_see_flags, setup, teardown),
		cmocka_unit_test_setup_teardown(test_views_see_expunge, setup, teardown),
		cmocka_unit_test_setup_teardown(test_unannounced_expunge, setup, teardown),
		cmocka_unit_test_setup_teardown(test_expunge_then_flags_order, setup, teardown),
		cmocka_unit_test_setup_teardown(test_new_mail_by_other_writer, setup, teardown),
		cmocka_unit_test_setup_teardown(test_change_in_same_tick, setup, teardown),
		cmocka_unit_test_setup_teardown(test_lost_index_seen_with_settled_folders, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pop3_removes_and_external_rename, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_pop3_alongside, setup, teardown),
		cmocka_unit_test_setup_teardown(test_uid_expunge_subset, setup, teardown),
		cmocka_unit_test_setup_teardown(test_duplicate_unique, setup, teardown),
		cmocka_unit_test_setup_teardown(test_keywords_kept, setup, teardown),
		cmocka_unit_test_setup_teardown(test_append, setup, teardown),
		cmocka_unit_test_setup_teardown(test_copy, setup, teardown),
		cmocka_unit_test_setup_teardown(test_copy_nothing_into_empty, setup, teardown),
		cmocka_unit_test_setup_teardown(test_move, setup, teardown),
		cmocka_unit_test_setup_teardown(test_status, setup, teardown),
		cmocka_unit_test_setup_teardown(test_watch, setup, teardown),
		cmocka_unit_test_setup_teardown(test_large_folder, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cache_hit_and_misses, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cache_unsettled_not_kept, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cache_keeps_counted_sizes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_snapshot_after_restart, setup, teardown),
		cmocka_unit_test_setup_teardown(test_snapshot_stale_after_delivery, setup, teardown),
		cmocka_unit_test_setup_teardown(test_snapshot_damaged_ignored, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cache_views_share_names, setup, teardown),
		cmocka_unit_test_setup_teardown(test_listing_new_only, setup, teardown),
		cmocka_unit_test_setup_teardown(test_listing_new_copy_of_cur, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

/* test_maildir_deliver: writing into Maildirs — tmp/ then new/, the
 * Return-Path and Delivered-To headers, LF line ends, S= and W= in the
 * name, unique names, folders made (again) on demand, failures that leave
 * nothing behind, the stage/publish/sync steps of a batch, and the sweep
 * of tmp/ at the first delivery into a Maildir. */
#define _GNU_SOURCE /* nftw */
#include <dirent.h>
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
#include <unistd.h>

#include <cmocka.h>

#include "unitfs.h"

#include "lib/log.h"
#include "lib/util.h"
#include "store/maildir.h"
#include "store/maildir_deliver.h"

struct fixture {
	char dir[64];
	char *mailboxes;
};

static int setup(void **state)
{
	struct fixture *f = xcalloc(1, sizeof *f);
	memcpy(f->dir, "/tmp/posthorn-mdeliver-XXXXXX", sizeof "/tmp/posthorn-mdeliver-XXXXXX");
	if (!mkdtemp(f->dir))
		return -1;
	f->mailboxes = xasprintf("%s/mail", f->dir);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	int r = rm_tree(f->dir);
	free(f->mailboxes);
	free(f);
	return r;
}

/* ---- helpers ------------------------------------------------------------ */

static const char body[] = "Received: from x\r\nSubject: test\r\n\r\nline one\r\n..two\r\n";

/* What a Maildir file holds: the headers and the message, with LF line
 * ends (the spool's CRLF turned into LF). */
static char *expected_copy(const char *sender, const char *to, size_t *len)
{
	char *e = xasprintf("Return-Path: <%s>\nDelivered-To: %s\n%s", sender, to, body);
	size_t o = 0;
	for (size_t i = 0; e[i]; i++)
		if (e[i] != '\r')
			e[o++] = e[i];
	e[o] = '\0';
	*len = o;
	return e;
}

/* Lines in s: the difference between S= and W= in the file name. */
static size_t count_lines(const char *s, size_t len)
{
	size_t n = 0;
	for (size_t i = 0; i < len; i++)
		n += s[i] == '\n';
	return n;
}

/* ---- maildir_deliver ---------------------------------------------------- */

/* A spool-like source file: junk, then body at offset 7. */
static int source_fd(struct fixture *f)
{
	char *p = xasprintf("%s/source", f->dir);
	char *data = xasprintf("JUNK..\n%sTRAILER", body);
	write_file(p, data, strlen(data));
	int fd = open(p, O_RDONLY);
	assert_true(fd >= 0);
	free(data);
	free(p);
	return fd;
}

static void test_deliver(void **state)
{
	struct fixture *f = *state;
	int fd = source_fd(f);
	char err[256] = "";
	assert_int_equal(maildir_deliver(f->mailboxes, "Bob@Example.test", "alice@example.org", fd, 7,
					 (off_t)(sizeof body - 1), err, sizeof err),
			 0);
	close(fd);
	char *md = xasprintf("%s/example.test/Bob", f->mailboxes);
	size_t len, elen;
	char *got = only_message(md, &len);
	char *want = expected_copy("alice@example.org", "Bob@Example.test", &elen);
	assert_non_null(got);
	assert_int_equal(len, elen);
	assert_memory_equal(got, want, len);

	char *tmp = xasprintf("%s/tmp", md), *cur = xasprintf("%s/cur", md);
	assert_int_equal(count_entries(tmp), 0);
	struct stat st;
	assert_int_equal(stat(cur, &st), 0);
	assert_true(S_ISDIR(st.st_mode));
	assert_int_equal(st.st_mode & 0777, 0700);

	/* the name: time.M<usec>P<pid>Q<n>R<rand>.host,S=<size>,W=<size with CRLF> */
	char *newdir = xasprintf("%s/new", md);
	size_t n;
	char **names = list_dir(newdir, &n);
	assert_int_equal(n, 1);
	assert_non_null(strstr(names[0], ".M"));
	char *size = xasprintf(",S=%zu,W=%zu", elen, elen + count_lines(want, elen));
	assert_non_null(strstr(names[0], size));
	assert_null(strchr(names[0], ':'));
	assert_null(strchr(names[0], '/'));
	char *fp = xasprintf("%s/%s", newdir, names[0]);
	assert_int_equal(stat(fp, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	free(fp);
	free(size);
	free_names(names, n);
	free(newdir);
	free(tmp);
	free(cur);
	free(got);
	free(want);
	free(md);
}

/* A message over several copy buffers (64 KiB), lines of every length
 * from empty to 999 octets, one CRLF split across two buffers: every CR
 * dropped, every LF kept and counted in W=. */
static void test_deliver_large(void **state)
{
	struct fixture *f = *state;
	enum { LARGE = 200 * 1024, SPLIT = 64 * 1024 };
	char *msg = xmalloc(LARGE);
	size_t len = 0, lines = 0;
	for (size_t k = 0; len + 1003 < LARGE; k++) {
		size_t n = (k * 37) % 1000;
		if (len < SPLIT && len + n + 2 > SPLIT)
			n = SPLIT - 1 - len; /* the CR ends one buffer, the LF starts the next */
		memset(msg + len, 'a' + (char)(k % 26), n);
		memcpy(msg + len + n, "\r\n", 2);
		len += n + 2;
		lines++;
	}
	assert_int_equal(msg[SPLIT - 1], '\r');
	char *p = xasprintf("%s/large", f->dir);
	write_file(p, msg, len);
	int fd = open(p, O_RDONLY);
	assert_true(fd >= 0);
	char err[256] = "";
	assert_int_equal(maildir_deliver(f->mailboxes, "big@example.test", "a@example.org", fd, 0,
					 (off_t)len, err, sizeof err),
			 0);
	close(fd);
	char *md = xasprintf("%s/example.test/big", f->mailboxes);
	size_t got_len;
	char *got = only_message(md, &got_len);
	const char hdr[] = "Return-Path: <a@example.org>\nDelivered-To: big@example.test\n";
	assert_int_equal(got_len, sizeof hdr - 1 + len - lines);
	assert_memory_equal(got, hdr, sizeof hdr - 1);
	assert_null(memchr(got, '\r', got_len));
	assert_int_equal(count_lines(got, got_len), lines + 2);
	for (size_t i = 0, o = sizeof hdr - 1; i < len; i++)
		if (msg[i] != '\r')
			assert_int_equal(got[o++], msg[i]);
	char *newdir = xasprintf("%s/new", md);
	size_t n;
	char **names = list_dir(newdir, &n);
	assert_int_equal(n, 1);
	char *size = xasprintf(",S=%zu,W=%zu", got_len, got_len + lines + 2);
	assert_non_null(strstr(names[0], size));
	free(size);
	free_names(names, n);
	free(newdir);
	free(got);
	free(md);
	free(p);
	free(msg);
}

static void test_deliver_null_sender(void **state)
{
	struct fixture *f = *state;
	int fd = source_fd(f);
	char err[256];
	assert_int_equal(maildir_deliver(f->mailboxes, "bob@example.test", "", fd, 7,
					 (off_t)(sizeof body - 1), err, sizeof err),
			 0);
	close(fd);
	char *md = xasprintf("%s/example.test/bob", f->mailboxes);
	size_t len;
	char *got = only_message(md, &len);
	assert_non_null(got);
	assert_true(strncmp(got, "Return-Path: <>\nDelivered-To: bob@example.test\n", 47) == 0);
	free(got);
	free(md);
}

static void test_deliver_unique_names(void **state)
{
	struct fixture *f = *state;
	int fd = source_fd(f);
	char err[256];
	for (int i = 0; i < 1000; i++)
		assert_int_equal(maildir_deliver(f->mailboxes, "bob@example.test", "a@b", fd, 7,
						 (off_t)(sizeof body - 1), err, sizeof err),
				 0);
	close(fd);
	char *newdir = xasprintf("%s/example.test/bob/new", f->mailboxes);
	char *tmp = xasprintf("%s/example.test/bob/tmp", f->mailboxes);
	assert_int_equal(count_entries(newdir), 1000);
	assert_int_equal(count_entries(tmp), 0);
	free(newdir);
	free(tmp);
}

/* Folders taken away after a delivery are made again by the next one:
 * tmp/ (the create finds it missing) and new/ (the rename does). */
static void test_deliver_folders_made_again(void **state)
{
	struct fixture *f = *state;
	int fd = source_fd(f);
	char err[256];
	char *md = xasprintf("%s/example.test/bob", f->mailboxes);
	char *tmp = xasprintf("%s/tmp", md), *newdir = xasprintf("%s/new", md);
	assert_int_equal(maildir_deliver(f->mailboxes, "bob@example.test", "a@b", fd, 7,
					 (off_t)(sizeof body - 1), err, sizeof err), 0);
	assert_int_equal(rmdir(tmp), 0);
	assert_int_equal(maildir_deliver(f->mailboxes, "bob@example.test", "a@b", fd, 7,
					 (off_t)(sizeof body - 1), err, sizeof err), 0);
	assert_int_equal(count_entries(newdir), 2);
	assert_int_equal(rm_tree(newdir), 0);
	assert_int_equal(maildir_deliver(f->mailboxes, "bob@example.test", "a@b", fd, 7,
					 (off_t)(sizeof body - 1), err, sizeof err), 0);
	assert_int_equal(count_entries(newdir), 1);
	assert_int_equal(count_entries(tmp), 0);
	close(fd);
	free(tmp);
	free(newdir);
	free(md);
}

static void test_deliver_failures(void **state)
{
	struct fixture *f = *state;
	int fd = source_fd(f);
	char err[256] = "";

	/* a regular file where the domain folder should be */
	assert_int_equal(mkdir(f->mailboxes, 0700), 0);
	char *blocker = xasprintf("%s/example.test", f->mailboxes);
	write_file(blocker, "x", 1);
	assert_int_equal(maildir_deliver(f->mailboxes, "bob@example.test", "a@b", fd, 7,
					 (off_t)(sizeof body - 1), err, sizeof err),
			 -1);
	assert_non_null(strstr(err, "Not a directory"));
	free(blocker);

	/* the spool file is shorter than the envelope claims: nothing stays */
	err[0] = '\0';
	assert_int_equal(maildir_deliver(f->mailboxes, "bob@example.org", "a@b", fd, 7, 100000,
					 err, sizeof err),
			 -1);
	assert_true(err[0] != '\0');
	char *tmp = xasprintf("%s/example.org/bob/tmp", f->mailboxes);
	char *newdir = xasprintf("%s/example.org/bob/new", f->mailboxes);
	assert_int_equal(count_entries(tmp), 0);
	assert_int_equal(count_entries(newdir), 0);
	free(tmp);
	free(newdir);

	/* unsafe addresses name no folder; header injection is refused */
	assert_int_equal(maildir_deliver(f->mailboxes, "bob@..", "a@b", fd, 7, 1, err, sizeof err), -1);
	assert_int_equal(maildir_deliver(f->mailboxes, "bob@example.net", "a@b\r\nX-Evil: 1", fd, 7, 1,
					 err, sizeof err),
			 -1);

	/* a tiny err buffer is still a string */
	char small[8];
	assert_int_equal(maildir_deliver(f->mailboxes, "bob@..", "a@b", fd, 7, 1, small, sizeof small), -1);
	assert_true(strlen(small) < sizeof small);
	close(fd);
}

/* ---- the steps of a batch ------------------------------------------------- */

static void test_steps(void **state)
{
	struct fixture *f = *state;
	int fd = source_fd(f);
	char err[256];
	char *tmp = xasprintf("%s/example.test/bob/tmp", f->mailboxes);
	char *newdir = xasprintf("%s/example.test/bob/new", f->mailboxes);
	struct maildir_deliver_file a, b;

	/* staged: written in tmp/, nothing in new/ yet */
	assert_int_equal(maildir_deliver_stage(f->mailboxes, "bob@example.test", "a@b", fd, 7,
					       (off_t)(sizeof body - 1), &a, err, sizeof err), 0);
	assert_int_equal(maildir_deliver_stage(f->mailboxes, "bob@example.test", "a@b", fd, 7,
					       (off_t)(sizeof body - 1), &b, err, sizeof err), 0);
	assert_true(a.fd >= 0);
	assert_string_equal(a.dir, b.dir);
	assert_string_not_equal(a.name, b.name);
	assert_int_equal(count_entries(tmp), 2);
	assert_int_equal(count_entries(newdir), 0);

	/* published (one synced by the caller), then new/ synced once */
	assert_int_equal(fdatasync(b.fd), 0);
	assert_int_equal(maildir_deliver_publish(&a, false, err, sizeof err), 0);
	assert_int_equal(maildir_deliver_publish(&b, true, err, sizeof err), 0);
	assert_int_equal(a.fd, -1);
	assert_non_null(strstr(a.new, ",S="));
	assert_int_equal(maildir_deliver_sync_new(a.dir, err, sizeof err), 0);
	assert_int_equal(count_entries(tmp), 0);
	assert_int_equal(count_entries(newdir), 2);

	/* taken back after a later failure: gone from new/ */
	maildir_deliver_discard(&b);
	assert_int_equal(count_entries(newdir), 1);
	maildir_deliver_clear(&a);
	maildir_deliver_clear(&b);
	assert_null(b.dir);
	assert_int_equal(b.fd, -1);

	/* a copy that fails is left clear, with nothing in tmp/ */
	assert_int_equal(maildir_deliver_stage(f->mailboxes, "bob@example.test", "a@b", fd, 7,
					       100000, &a, err, sizeof err), -1);
	assert_null(a.dir);
	assert_int_equal(a.fd, -1);
	assert_int_equal(count_entries(tmp), 0);
	/* and one discarded while staged leaves nothing either */
	assert_int_equal(maildir_deliver_stage(f->mailboxes, "bob@example.test", "a@b", fd, 7,
					       (off_t)(sizeof body - 1), &a, err, sizeof err), 0);
	maildir_deliver_discard(&a);
	maildir_deliver_clear(&a);
	assert_int_equal(count_entries(tmp), 0);
	assert_int_equal(count_entries(newdir), 1);
	close(fd);
	free(tmp);
	free(newdir);
}

/* A spooled message's copy has the same name on every attempt: a leftover
 * of a crashed attempt in tmp/ is written over, and a copy that reached
 * new/ (or cur/, flags added) is found by that name, another is not. */
static void test_spooled_copy_found_again(void **state)
{
	struct fixture *f = *state;
	int fd = source_fd(f);
	char err[256];
	char *dir = xasprintf("%s/example.test/bob", f->mailboxes);
	char *tmp = xasprintf("%s/tmp", dir);
	char *newdir = xasprintf("%s/new", dir);
	char *unique = maildir_spooled_name(1700000000, "ID0001", 2);
	char *other = maildir_spooled_name(1700000000, "ID0001", 3);
	assert_non_null(strstr(unique, "1700000000.DID0001R2."));
	assert_false(maildir_deliver_present(f->mailboxes, "bob@example.test", unique));

	struct maildir_deliver_file a;
	assert_int_equal(maildir_deliver_stage_as(f->mailboxes, "bob@example.test", "a@b", unique,
						  fd, 7, 5, &a, err, sizeof err), 0);
	maildir_deliver_clear(&a); /* "crashed": its file stays in tmp/ */
	assert_int_equal(count_entries(tmp), 1);
	assert_int_equal(maildir_deliver_stage_as(f->mailboxes, "bob@example.test", "a@b", unique,
						  fd, 7, (off_t)(sizeof body - 1), &a, err,
						  sizeof err), 0);
	assert_int_equal(maildir_deliver_publish(&a, false, err, sizeof err), 0);
	assert_int_equal(count_entries(tmp), 0);
	assert_int_equal(count_entries(newdir), 1);
	assert_true(maildir_deliver_present(f->mailboxes, "bob@example.test", unique));
	assert_false(maildir_deliver_present(f->mailboxes, "bob@example.test", other));

	/* read and flagged by a client: in cur/ with ":2,S", still found */
	char *cur = xasprintf("%s/cur/%s:2,S", dir, strrchr(a.new, '/') + 1);
	assert_int_equal(rename(a.new, cur), 0);
	assert_true(maildir_has_unique(dir, unique));
	maildir_deliver_clear(&a);
	close(fd);
	free(cur);
	free(unique);
	free(other);
	free(newdir);
	free(tmp);
	free(dir);
}

/* A name that a killed posthorn left in tmp/: this generator's form, the
 * PID of a process that has ended. */
static char *killed_daemons_name(void)
{
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0)
		_exit(0);
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	char *own = maildir_unique_name(0);
	char *p = strchr(own, 'P'), *q = strchr(own, 'Q');
	assert_non_null(p);
	assert_non_null(q);
	*p = '\0';
	char *name = xasprintf("%sP%ldQ%s", own, (long)pid, q + 1);
	free(own);
	return name;
}

/* The first delivery into a Maildir removes what a killed daemon left in
 * its tmp/; a foreign file that is fresh stays.  The sweep is once per
 * Maildir (a day apart): a leftover that appears after it waits. */
static void test_first_delivery_sweeps_tmp(void **state)
{
	struct fixture *f = *state;
	char *md = xasprintf("%s/example.test/carol", f->mailboxes);
	char err[256] = "";
	assert_int_equal(maildir_create(md, err, sizeof err), 0);
	char *left = killed_daemons_name(), *later = killed_daemons_name();
	char *leftpath = xasprintf("%s/tmp/%s", md, left);
	char *laterpath = xasprintf("%s/tmp/%s", md, later);
	char *foreign = xasprintf("%s/tmp/1700000000.1.mutt.example", md);
	write_file(leftpath, "half a copy", 11);
	write_file(foreign, "being written by another tool", 29);
	int fd = source_fd(f);
	assert_int_equal(maildir_deliver(f->mailboxes, "carol@example.test", "a@example.org", fd, 7,
					 (off_t)(sizeof body - 1), err, sizeof err),
			 0);
	assert_int_equal(access(leftpath, F_OK), -1);
	assert_int_equal(access(foreign, F_OK), 0);
	write_file(laterpath, "another half", 12);
	assert_int_equal(maildir_deliver(f->mailboxes, "carol@example.test", "a@example.org", fd, 7,
					 (off_t)(sizeof body - 1), err, sizeof err),
			 0);
	assert_int_equal(access(laterpath, F_OK), 0);
	close(fd);
	free(left);
	free(later);
	free(leftpath);
	free(laterpath);
	free(foreign);
	free(md);
}

int main(void)
{
	log_init(false, LOG_ERR);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_deliver, setup, teardown),
		cmocka_unit_test_setup_teardown(test_deliver_large, setup, teardown),
		cmocka_unit_test_setup_teardown(test_deliver_null_sender, setup, teardown),
		cmocka_unit_test_setup_teardown(test_deliver_unique_names, setup, teardown),
		cmocka_unit_test_setup_teardown(test_deliver_folders_made_again, setup, teardown),
		cmocka_unit_test_setup_teardown(test_deliver_failures, setup, teardown),
		cmocka_unit_test_setup_teardown(test_steps, setup, teardown),
		cmocka_unit_test_setup_teardown(test_spooled_copy_found_again, setup, teardown),
		cmocka_unit_test_setup_teardown(test_first_delivery_sweeps_tmp, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

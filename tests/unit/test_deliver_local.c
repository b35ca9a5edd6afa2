/* test_deliver_local: Maildir delivery (tmp/ then new/, headers, unique
 * names, safe folder names) and the delivery worker over a real spool. */
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
#include <signal.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "deliver_local.h"
#include "log.h"
#include "spool.h"
#include "util.h"

struct fixture {
	char dir[64];
	char *mailboxes;
	struct spool *sp;
	char *logpath;
	int saved_stderr;
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
	memcpy(f->dir, "/tmp/posthorn-deliver-XXXXXX", sizeof "/tmp/posthorn-deliver-XXXXXX");
	if (!mkdtemp(f->dir))
		return -1;
	f->mailboxes = xasprintf("%s/mail", f->dir);
	char *spool = xasprintf("%s/spool", f->dir);
	f->sp = spool_open(spool);
	free(spool);
	if (!f->sp)
		return -1;
	f->saved_stderr = -1;
	*state = f;
	return 0;
}

static void log_restore(struct fixture *f);

static int teardown(void **state)
{
	struct fixture *f = *state;
	delivery_stop();
	log_restore(f);
	spool_close(f->sp);
	int r = nftw(f->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	free(f->mailboxes);
	free(f->logpath);
	free(f);
	return r;
}

/* ---- helpers ------------------------------------------------------------ */

static char *read_file(const char *path, size_t *len)
{
	int fd = open(path, O_RDONLY);
	if (fd < 0)
		return NULL;
	struct stat st;
	assert_int_equal(fstat(fd, &st), 0);
	char *buf = xmalloc((size_t)st.st_size + 1);
	assert_int_equal(read(fd, buf, (size_t)st.st_size), st.st_size);
	buf[st.st_size] = '\0';
	close(fd);
	*len = (size_t)st.st_size;
	return buf;
}

static void write_file(const char *path, const char *data, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write_all(fd, data, len), 0);
	assert_int_equal(close(fd), 0);
}

/* Names in a folder, "." and ".." excluded; *n set. */
static char **list_dir(const char *dir, size_t *n)
{
	char **names = NULL;
	*n = 0;
	DIR *d = opendir(dir);
	if (!d)
		return NULL;
	struct dirent *de;
	while ((de = readdir(d)))
		if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0) {
			char **slot = xappend(&names, n, sizeof *slot);
			*slot = xstrdup(de->d_name);
		}
	closedir(d);
	return names;
}

static void free_names(char **names, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
}

static size_t count_entries(const char *dir)
{
	size_t n;
	char **names = list_dir(dir, &n);
	free_names(names, n);
	return n;
}

/* The one message in <maildir>/new; NULL when there is not exactly one. */
static char *only_message(const char *maildir, size_t *len)
{
	char *newdir = xasprintf("%s/new", maildir);
	size_t n;
	char **names = list_dir(newdir, &n);
	char *text = NULL;
	if (n == 1) {
		char *p = xasprintf("%s/%s", newdir, names[0]);
		text = read_file(p, len);
		free(p);
	}
	free_names(names, n);
	free(newdir);
	return text;
}

/* Log lines go to a file while a test watches them. */
static void log_capture(struct fixture *f)
{
	f->logpath = xasprintf("%s/log.txt", f->dir);
	int fd = open(f->logpath, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0600);
	assert_true(fd >= 0);
	f->saved_stderr = dup(STDERR_FILENO);
	assert_true(f->saved_stderr >= 0);
	assert_true(dup2(fd, STDERR_FILENO) >= 0);
	close(fd);
	log_init(false, LOG_INFO);
}

static void log_restore(struct fixture *f)
{
	if (f->saved_stderr < 0)
		return;
	log_init(false, LOG_ERR);
	dup2(f->saved_stderr, STDERR_FILENO);
	close(f->saved_stderr);
	f->saved_stderr = -1;
}

static char *log_text(const struct fixture *f)
{
	size_t len;
	char *t = read_file(f->logpath, &len);
	return t ? t : xstrdup("");
}

/* Wait up to 10 s for cond(f, arg); the worker is asynchronous. */
static bool wait_for(struct fixture *f, bool (*cond)(struct fixture *, const void *), const void *arg)
{
	for (int i = 0; i < 1000; i++) {
		if (cond(f, arg))
			return true;
		usleep(10000);
	}
	return false;
}

static bool log_has(struct fixture *f, const void *needle)
{
	char *t = log_text(f);
	bool found = strstr(t, needle) != NULL;
	free(t);
	return found;
}

static bool spool_gone(struct fixture *f, const void *id)
{
	struct spool_envelope env;
	if (spool_read_envelope(f->sp, id, &env) == 0) {
		spool_envelope_clear(&env);
		return false;
	}
	return errno == ENOENT;
}

static void on_commit(void *arg, int err)
{
	*(int *)arg = err;
}

static const char body[] = "Received: from x\r\nSubject: test\r\n\r\nline one\r\n..two\r\n";

/* Spool body for these recipients ("local:" or "remote:" + address). */
static void spool_msg(struct fixture *f, const char *const *rcpts, size_t n, char id[SPOOL_ID_SIZE])
{
	struct spool_envelope env = {0};
	env.sender = xstrdup("alice@example.org");
	env.client = xstrdup("[192.0.2.1]");
	for (size_t i = 0; i < n; i++) {
		struct spool_rcpt *r = xappend(&env.rcpts, &env.nrcpts, sizeof *r);
		r->local = strncmp(rcpts[i], "local:", 6) == 0;
		r->address = xstrdup(strchr(rcpts[i], ':') + 1);
	}
	struct spool_msg *m = spool_msg_begin(f->sp, &env);
	assert_non_null(m);
	assert_int_equal(spool_msg_write(m, body, sizeof body - 1), 0);
	int err = -1;
	spool_msg_commit(m, on_commit, &err);
	assert_int_equal(err, 0);
	memcpy(id, env.id, SPOOL_ID_SIZE);
	spool_envelope_clear(&env);
}

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

/* ---- maildir_path ------------------------------------------------------- */

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
	assert_int_equal(nftw(newdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS), 0);
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

/* ---- the worker --------------------------------------------------------- */

static void test_worker_delivers(void **state)
{
	struct fixture *f = *state;
	log_capture(f);
	assert_int_equal(delivery_start(f->sp, f->mailboxes), 0);
	char id[SPOOL_ID_SIZE];
	static const char *const rcpts[] = {"local:bob@example.test", "local:carol@example.test"};
	spool_msg(f, rcpts, 2, id);
	delivery_enqueue(id);
	assert_true(wait_for(f, spool_gone, id));
	delivery_stop();

	size_t elen;
	for (size_t i = 0; i < 2; i++) {
		const char *addr = strchr(rcpts[i], ':') + 1;
		char *local = xstrndup(addr, (size_t)(strchr(addr, '@') - addr));
		char *md = xasprintf("%s/example.test/%s", f->mailboxes, local);
		size_t len;
		char *got = only_message(md, &len);
		char *want = expected_copy("alice@example.org", addr, &elen);
		assert_non_null(got);
		assert_int_equal(len, elen);
		assert_memory_equal(got, want, len);
		free(got);
		free(want);
		free(md);
		free(local);
	}
	char *queue = xasprintf("%s/spool/queue", f->dir);
	assert_int_equal(count_entries(queue), 0);
	free(queue);
	char *t = log_text(f);
	char *line = xasprintf("event=delivered id=%s to=bob@example.test maildir=%s/example.test/bob",
			       id, f->mailboxes);
	assert_non_null(strstr(t, line));
	assert_non_null(strstr(t, "to=carol@example.test"));
	free(line);
	free(t);
}

/* After a quiet spell a message is delivered at once, in a batch of its
 * own; one that comes while deliveries follow each other waits a moment
 * for others to share its batch (group commit, README "Storage"). */
static void test_worker_gathers_only_under_steady_load(void **state)
{
	struct fixture *f = *state;
	log_capture(f);
	static const char *const rcpts[] = {"local:bob@example.test"};
	enum { LATER = 10 };
	char first[SPOOL_ID_SIZE], later[LATER][SPOOL_ID_SIZE];
	spool_msg(f, rcpts, 1, first);
	for (size_t i = 0; i < LATER; i++)
		spool_msg(f, rcpts, 1, later[i]);
	assert_int_equal(delivery_start(f->sp, f->mailboxes), 0);
	delivery_enqueue(first);
	assert_true(wait_for(f, spool_gone, first));
	for (size_t i = 0; i < LATER; i++)
		delivery_enqueue(later[i]);
	for (size_t i = 0; i < LATER; i++)
		assert_true(wait_for(f, spool_gone, later[i]));
	delivery_stop();
	char *bob = xasprintf("%s/example.test/bob/new", f->mailboxes);
	assert_int_equal(count_entries(bob), 1 + LATER);
	free(bob);
	/* the first alone and at once; the rest right after it: together */
	assert_true(log_has(f, "event=delivery-stats messages=11 batches=2 gathered=1"));
}

/* Messages spooled before a restart: the daemon enqueues spool_list(). */
static void test_worker_resumes(void **state)
{
	struct fixture *f = *state;
	char id[SPOOL_ID_SIZE];
	static const char *const rcpts[] = {"local:bob@example.test", "local:carol@example.test"};
	spool_msg(f, rcpts, 2, id);
	assert_int_equal(spool_mark_done(f->sp, id, 1), 0); /* carol had it before the crash */
	assert_int_equal(delivery_start(f->sp, f->mailboxes), 0);
	char **ids;
	size_t n = spool_list(f->sp, &ids);
	assert_int_equal(n, 1);
	delivery_enqueue(ids[0]);
	spool_free_ids(ids, n);
	assert_true(wait_for(f, spool_gone, id));
	delivery_stop();
	char *bob = xasprintf("%s/example.test/bob/new", f->mailboxes);
	char *carol = xasprintf("%s/example.test/carol", f->mailboxes);
	assert_int_equal(count_entries(bob), 1);
	struct stat st;
	assert_int_equal(stat(carol, &st), -1); /* not delivered twice */
	free(bob);
	free(carol);
}

static void test_worker_failure_keeps_message(void **state)
{
	struct fixture *f = *state;
	/* the mailboxes root is a regular file: nothing can be created */
	write_file(f->mailboxes, "not a folder", 12);
	log_capture(f);
	assert_int_equal(delivery_start(f->sp, f->mailboxes), 0);
	char id[SPOOL_ID_SIZE];
	static const char *const rcpts[] = {"local:bob@example.test"};
	spool_msg(f, rcpts, 1, id);
	delivery_enqueue(id);
	char *want = xasprintf("event=delivery-failed id=%s to=bob@example.test reason=\"", id);
	assert_true(wait_for(f, log_has, want));
	assert_true(log_has(f, "retry_in=30s"));
	free(want);
	delivery_stop();

	struct spool_envelope env;
	assert_int_equal(spool_read_envelope(f->sp, id, &env), 0);
	assert_false(env.rcpts[0].done);
	spool_envelope_clear(&env);
	char *done = xasprintf("%s/spool/queue/%s.done", f->dir, id);
	assert_int_equal(access(done, F_OK), -1);
	free(done);
}

/* After a failure, a reload to a usable root and a new enqueue deliver it;
 * the second failure in a row backs off for longer. */
static void test_worker_retry_after_reload(void **state)
{
	struct fixture *f = *state;
	char *blocked = xasprintf("%s/blocked", f->dir);
	write_file(blocked, "x", 1);
	log_capture(f);
	assert_int_equal(delivery_start(f->sp, blocked), 0);
	char id[SPOOL_ID_SIZE];
	static const char *const rcpts[] = {"local:bob@example.test"};
	spool_msg(f, rcpts, 1, id);
	delivery_enqueue(id);
	assert_true(wait_for(f, log_has, "retry_in=30s"));
	delivery_enqueue(id);
	assert_true(wait_for(f, log_has, "retry_in=1m"));
	delivery_set_mailboxes(f->mailboxes);
	delivery_enqueue(id);
	assert_true(wait_for(f, spool_gone, id));
	delivery_stop();
	char *bob = xasprintf("%s/example.test/bob/new", f->mailboxes);
	assert_int_equal(count_entries(bob), 1);
	free(bob);
	free(blocked);
}

/* Delivered but not recorded (the .done append failed): the next attempt
 * records it without a second copy.  A remote recipient keeps the message
 * in the spool, so the local ones must be recorded (a message whose every
 * recipient is delivered is removed without records). */
static void test_worker_unrecorded_not_redelivered(void **state)
{
	struct fixture *f = *state;
	char id[SPOOL_ID_SIZE];
	static const char *const rcpts[] = {"local:bob@example.test", "local:carol@example.test",
					    "remote:x@remote.example"};
	spool_msg(f, rcpts, 3, id);
	/* bob is done, and the .done file is past the file size limit below */
	size_t n = 3000;
	char *records = xmalloc(2 * n);
	for (size_t i = 0; i < n; i++)
		memcpy(records + 2 * i, "0\n", 2);
	char *done = xasprintf("%s/spool/queue/%s.done", f->dir, id);
	write_file(done, records, 2 * n);
	free(records);
	free(done);

	struct rlimit old, small;
	assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
	small.rlim_cur = 4096;
	small.rlim_max = old.rlim_max;
	void (*oldsig)(int) = signal(SIGXFSZ, SIG_IGN);
	log_capture(f);
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &small), 0);
	assert_int_equal(delivery_start(f->sp, f->mailboxes), 0);
	delivery_enqueue(id);
	bool failed = wait_for(f, log_has, "delivered, but cannot record it in the spool");
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
	signal(SIGXFSZ, oldsig);
	assert_true(failed);

	delivery_enqueue(id);
	char *want = xasprintf("event=handoff id=%s to=outbound", id);
	assert_true(wait_for(f, log_has, want));
	free(want);
	delivery_stop();
	char *carol = xasprintf("%s/example.test/carol/new", f->mailboxes);
	char *bob = xasprintf("%s/example.test/bob", f->mailboxes);
	assert_int_equal(count_entries(carol), 1);
	assert_int_equal(access(bob, F_OK), -1);
	free(carol);
	free(bob);
	struct spool_envelope env;
	assert_int_equal(spool_read_envelope(f->sp, id, &env), 0);
	assert_true(env.rcpts[1].done);
	assert_false(env.rcpts[2].done);
	spool_envelope_clear(&env);
}

static void test_worker_remote_stays(void **state)
{
	struct fixture *f = *state;
	log_capture(f);
	assert_int_equal(delivery_start(f->sp, f->mailboxes), 0);
	char id[SPOOL_ID_SIZE];
	static const char *const rcpts[] = {"remote:x@remote.example", "local:bob@example.test"};
	spool_msg(f, rcpts, 2, id);
	delivery_enqueue(id);
	char *want = xasprintf("event=handoff id=%s to=outbound", id);
	assert_true(wait_for(f, log_has, want));
	free(want);
	delivery_stop();
	struct spool_envelope env;
	assert_int_equal(spool_read_envelope(f->sp, id, &env), 0);
	assert_false(env.rcpts[0].done);
	assert_true(env.rcpts[1].done);
	spool_envelope_clear(&env);
	char *t = log_text(f);
	const char *first = strstr(t, "event=handoff");
	assert_non_null(first);
	assert_null(strstr(first + 1, "event=handoff")); /* once */
	free(t);
}

static void test_worker_api_edges(void **state)
{
	struct fixture *f = *state;
	/* enqueue and stop without a running worker are harmless */
	delivery_enqueue("0000000000000000000AB");
	delivery_set_mailboxes("/nowhere");
	delivery_stop();
	assert_int_equal(delivery_start(f->sp, f->mailboxes), 0);
	assert_int_equal(delivery_start(f->sp, f->mailboxes), -1);
	assert_int_equal(errno, EBUSY);
	log_capture(f);
	delivery_enqueue("../../etc/passwd");
	assert_true(log_has(f, "not a queue ID"));
	delivery_enqueue("0000000000000000000AB"); /* not in the spool: dropped quietly */
	delivery_stop();
	delivery_stop();
	/* and it starts again */
	assert_int_equal(delivery_start(f->sp, f->mailboxes), 0);
	delivery_stop();
}

int main(void)
{
	log_init(false, LOG_ERR);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_path),
		cmocka_unit_test_setup_teardown(test_deliver, setup, teardown),
		cmocka_unit_test_setup_teardown(test_deliver_null_sender, setup, teardown),
		cmocka_unit_test_setup_teardown(test_deliver_unique_names, setup, teardown),
		cmocka_unit_test_setup_teardown(test_deliver_folders_made_again, setup, teardown),
		cmocka_unit_test_setup_teardown(test_deliver_failures, setup, teardown),
		cmocka_unit_test_setup_teardown(test_worker_delivers, setup, teardown),
		cmocka_unit_test_setup_teardown(test_worker_gathers_only_under_steady_load, setup, teardown),
		cmocka_unit_test_setup_teardown(test_worker_resumes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_worker_failure_keeps_message, setup, teardown),
		cmocka_unit_test_setup_teardown(test_worker_retry_after_reload, setup, teardown),
		cmocka_unit_test_setup_teardown(test_worker_unrecorded_not_redelivered, setup, teardown),
		cmocka_unit_test_setup_teardown(test_worker_remote_stays, setup, teardown),
		cmocka_unit_test_setup_teardown(test_worker_api_edges, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

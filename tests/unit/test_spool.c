/* test_spool: the durable queue — envelope round trip, commit/abort, done
 * records, listing, IDs, xtext (RFC 3461 §4), malformed spool files, and
 * the journal of the commit thread across a crash (a child process that
 * commits and ends with _exit, leaving what a power cut would). */
#define _GNU_SOURCE /* nftw, vasprintf */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/event.h>

#include "lib/log.h"
#include "queue/spool.h"
#include "lib/util.h"

struct fixture {
	char dir[64];
	struct spool *sp;
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
	memcpy(f->dir, "/tmp/posthorn-spool-XXXXXX", sizeof "/tmp/posthorn-spool-XXXXXX");
	if (!mkdtemp(f->dir))
		return -1;
	f->sp = spool_open(f->dir);
	if (!f->sp)
		return -1;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	spool_close(f->sp);
	int r = nftw(f->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	free(f);
	return r;
}

static char *path_in(const struct fixture *f, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static char *path_in(const struct fixture *f, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	char *rel;
	assert_true(vasprintf(&rel, fmt, ap) >= 0);
	va_end(ap);
	char *p = xasprintf("%s/%s", f->dir, rel);
	free(rel);
	return p;
}

/* Entries of a folder, "." and ".." excluded. */
static size_t count_entries(const char *dir)
{
	DIR *d = opendir(dir);
	assert_non_null(d);
	size_t n = 0;
	struct dirent *de;
	while ((de = readdir(d)))
		if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
			n++;
	closedir(d);
	return n;
}

static void write_file(const char *path, const char *data, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write_all(fd, data, len), 0);
	assert_int_equal(close(fd), 0);
}

static char *read_file(const char *path, size_t *len)
{
	int fd = open(path, O_RDONLY);
	assert_true(fd >= 0);
	struct stat st;
	assert_int_equal(fstat(fd, &st), 0);
	char *buf = xmalloc((size_t)st.st_size + 1);
	assert_int_equal(read(fd, buf, (size_t)st.st_size), st.st_size);
	buf[st.st_size] = '\0';
	close(fd);
	*len = (size_t)st.st_size;
	return buf;
}

struct commit_result {
	int calls;
	int err;
};

static void on_commit(void *arg, int err)
{
	struct commit_result *cr = arg;
	cr->calls++;
	cr->err = err;
}

static void envelope_fill(struct spool_envelope *env, const char *sender)
{
	memset(env, 0, sizeof *env);
	env->sender = xstrdup(sender);
	env->client = xstrdup("client.example [192.0.2.7]");
	env->helo = xstrdup("client.example");
	env->auth_user = xstrdup("alice@example.test");
	env->server = xstrdup("submission");
	env->arrival = 1700000000;
	struct spool_rcpt *r = xappend(&env->rcpts, &env->nrcpts, sizeof *r);
	r->address = xstrdup("bob@example.test");
	r->orig = xstrdup("Bob@Example.test");
	r->local = true;
	r = xappend(&env->rcpts, &env->nrcpts, sizeof *r);
	r->address = xstrdup("\"john q. doe\"@remote.example");
	r->orig = xstrdup("\"john q. doe\"@remote.example");
	r->local = false;
	r = xappend(&env->rcpts, &env->nrcpts, sizeof *r);
	r->address = xstrdup("a+b=c@example.test");
	r->orig = NULL; /* written as the address */
	r->local = true;
}

/* Spool a message; returns its ID in id. */
static void spool_one(struct fixture *f, const char *sender, const char *body, size_t len,
		      char id[SPOOL_ID_SIZE])
{
	struct spool_envelope env;
	envelope_fill(&env, sender);
	struct spool_msg *m = spool_msg_begin(f->sp, &env);
	assert_non_null(m);
	assert_int_equal(spool_msg_write(m, body, len), 0);
	assert_int_equal(spool_msg_size(m), (off_t)len);
	struct commit_result cr = {0, -1};
	spool_msg_commit(m, on_commit, &cr);
	assert_int_equal(cr.calls, 1);
	assert_int_equal(cr.err, 0);
	memcpy(id, env.id, SPOOL_ID_SIZE);
	spool_envelope_clear(&env);
}

static const char body1[] = "Received: from client.example\r\nSubject: hi\r\n\r\nHello\r\n.dot\r\n";

/* A recycled file named twice in the pool is written by one message only:
 * the second takes another file, and both messages commit whole. */
static void test_recycled_file_taken_once(void **state)
{
	struct fixture *f = *state;
	static const char body2[] = "Subject: two\r\n\r\nanother text\r\n";
	char id[SPOOL_ID_SIZE];
	spool_one(f, "a@example.test", body1, sizeof body1 - 1, id);
	assert_int_equal(spool_remove(f->sp, id), 0); /* free/<id>, in the pool */
	spool_test_pool_give(f->sp, id);             /* ... and named again */
	struct spool_envelope e1, e2;
	envelope_fill(&e1, "one@example.test");
	envelope_fill(&e2, "two@example.test");
	struct spool_msg *m1 = spool_msg_begin(f->sp, &e1);
	struct spool_msg *m2 = spool_msg_begin(f->sp, &e2);
	assert_non_null(m1);
	assert_non_null(m2);
	assert_int_equal(spool_msg_write(m1, body1, sizeof body1 - 1), 0);
	assert_int_equal(spool_msg_write(m2, body2, sizeof body2 - 1), 0);
	struct commit_result c1 = {0, -1}, c2 = {0, -1};
	spool_msg_commit(m1, on_commit, &c1);
	spool_msg_commit(m2, on_commit, &c2);
	assert_int_equal(c1.err, 0);
	assert_int_equal(c2.err, 0);
	struct spool_envelope r;
	assert_int_equal(spool_read_envelope(f->sp, e1.id, &r), 0);
	assert_int_equal(r.size, (off_t)(sizeof body1 - 1));
	spool_envelope_clear(&r);
	assert_int_equal(spool_read_envelope(f->sp, e2.id, &r), 0);
	assert_int_equal(r.size, (off_t)(sizeof body2 - 1));
	spool_envelope_clear(&r);
	size_t len;
	char *q2 = path_in(f, "queue/%s", e2.id);
	char *t2 = read_file(q2, &len);
	assert_memory_equal(t2 + len - (sizeof body2 - 1), body2, sizeof body2 - 1);
	free(t2);
	free(q2);
	char *q1 = path_in(f, "queue/%s", e1.id);
	char *t1 = read_file(q1, &len);
	assert_memory_equal(t1 + len - (sizeof body1 - 1), body1, sizeof body1 - 1);
	free(t1);
	free(q1);
	spool_envelope_clear(&e1);
	spool_envelope_clear(&e2);
}

static void test_roundtrip(void **state)
{
	struct fixture *f = *state;
	char id[SPOOL_ID_SIZE];
	spool_one(f, "alice@example.test", body1, sizeof body1 - 1, id);

	char *tmp = path_in(f, "tmp");
	assert_int_equal(count_entries(tmp), 0);
	free(tmp);

	struct spool_envelope env;
	assert_int_equal(spool_read_envelope(f->sp, id, &env), 0);
	assert_string_equal(env.id, id);
	assert_string_equal(env.sender, "alice@example.test");
	assert_string_equal(env.client, "client.example [192.0.2.7]");
	assert_string_equal(env.helo, "client.example");
	assert_string_equal(env.auth_user, "alice@example.test");
	assert_string_equal(env.server, "submission");
	assert_int_equal(env.arrival, 1700000000);
	assert_int_equal(env.nrcpts, 3);
	assert_string_equal(env.rcpts[0].address, "bob@example.test");
	assert_string_equal(env.rcpts[0].orig, "Bob@Example.test");
	assert_true(env.rcpts[0].local);
	assert_string_equal(env.rcpts[1].address, "\"john q. doe\"@remote.example");
	assert_string_equal(env.rcpts[1].orig, "\"john q. doe\"@remote.example");
	assert_false(env.rcpts[1].local);
	assert_string_equal(env.rcpts[2].address, "a+b=c@example.test");
	assert_string_equal(env.rcpts[2].orig, "a+b=c@example.test");
	for (size_t i = 0; i < env.nrcpts; i++)
		assert_false(env.rcpts[i].done);
	assert_int_equal(env.size, (off_t)(sizeof body1 - 1));

	int fd = spool_open_message(f->sp, &env);
	assert_true(fd >= 0);
	char buf[256];
	ssize_t n = read(fd, buf, sizeof buf);
	assert_int_equal(n, (ssize_t)(sizeof body1 - 1));
	assert_memory_equal(buf, body1, sizeof body1 - 1);
	assert_int_equal(read(fd, buf, sizeof buf), 0);
	close(fd);

	char *qf = path_in(f, "queue/%s", id);
	struct stat st;
	assert_int_equal(stat(qf, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	free(qf);
	spool_envelope_clear(&env);
}

static void test_null_sender_minimal(void **state)
{
	struct fixture *f = *state;
	struct spool_envelope env = {0};
	env.sender = xstrdup("");
	struct spool_rcpt *r = xappend(&env.rcpts, &env.nrcpts, sizeof *r);
	r->address = xstrdup("bob@example.test");
	r->local = true;
	struct spool_msg *m = spool_msg_begin(f->sp, &env);
	assert_non_null(m);
	assert_true(env.arrival > 0); /* filled in when the caller left it 0 */
	struct commit_result cr = {0, -1};
	spool_msg_commit(m, on_commit, &cr);
	assert_int_equal(cr.err, 0);

	struct spool_envelope back;
	assert_int_equal(spool_read_envelope(f->sp, env.id, &back), 0);
	assert_string_equal(back.sender, "");
	assert_string_equal(back.client, "");
	assert_null(back.helo);
	assert_null(back.auth_user);
	assert_null(back.server);
	assert_int_equal(back.size, 0);
	assert_int_equal(back.arrival, env.arrival);
	spool_envelope_clear(&back);
	spool_envelope_clear(&env);
}

static void test_large_message(void **state)
{
	struct fixture *f = *state;
	size_t len = 300 * 1000 + 7;
	char *big = xmalloc(len);
	for (size_t i = 0; i < len; i++)
		big[i] = (char)(i * 7 + (i >> 9));
	struct spool_envelope env;
	envelope_fill(&env, "a@example.test");
	struct spool_msg *m = spool_msg_begin(f->sp, &env);
	assert_non_null(m);
	/* odd pieces, one bigger than the buffer */
	assert_int_equal(spool_msg_write(m, big, 1000), 0);
	assert_int_equal(spool_msg_write(m, big + 1000, 100000), 0);
	assert_int_equal(spool_msg_write(m, big + 101000, len - 101000), 0);
	struct commit_result cr = {0, -1};
	spool_msg_commit(m, on_commit, &cr);
	assert_int_equal(cr.err, 0);

	struct spool_envelope back;
	assert_int_equal(spool_read_envelope(f->sp, env.id, &back), 0);
	assert_int_equal(back.size, (off_t)len);
	int fd = spool_open_message(f->sp, &back);
	assert_true(fd >= 0);
	char *got = xmalloc(len + 1);
	size_t have = 0;
	ssize_t n;
	while ((n = read(fd, got + have, len + 1 - have)) > 0)
		have += (size_t)n;
	close(fd);
	assert_int_equal(have, len);
	assert_memory_equal(got, big, len);
	free(got);
	free(big);
	spool_envelope_clear(&back);
	spool_envelope_clear(&env);
}

static void test_abort(void **state)
{
	struct fixture *f = *state;
	struct spool_envelope env;
	envelope_fill(&env, "a@example.test");
	struct spool_msg *m = spool_msg_begin(f->sp, &env);
	assert_non_null(m);
	assert_int_equal(spool_msg_write(m, "x\r\n", 3), 0);
	spool_msg_abort(m);
	char *tmp = path_in(f, "tmp"), *queue = path_in(f, "queue");
	assert_int_equal(count_entries(tmp), 0);
	assert_int_equal(count_entries(queue), 0);
	free(tmp);
	free(queue);
	spool_envelope_clear(&env);
}

static void test_begin_rejects_no_rcpt(void **state)
{
	struct fixture *f = *state;
	struct spool_envelope env = {0};
	env.sender = xstrdup("a@example.test");
	errno = 0;
	assert_null(spool_msg_begin(f->sp, &env));
	assert_int_equal(errno, EINVAL);
	char *tmp = path_in(f, "tmp");
	assert_int_equal(count_entries(tmp), 0);
	free(tmp);
	spool_envelope_clear(&env);
}

/* A write error (EFBIG here; ENOSPC in life) reaches the callback as
 * itself and leaves nothing behind. */
static void test_write_error(void **state)
{
	struct fixture *f = *state;
	struct rlimit old, small = {.rlim_cur = 4096, .rlim_max = RLIM_INFINITY};
	assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
	small.rlim_max = old.rlim_max;
	void (*oldsig)(int) = signal(SIGXFSZ, SIG_IGN);

	struct spool_envelope env;
	envelope_fill(&env, "a@example.test");
	struct spool_msg *m = spool_msg_begin(f->sp, &env);
	assert_non_null(m);
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &small), 0);
	char chunk[1000];
	memset(chunk, 'x', sizeof chunk);
	int r = 0;
	for (int i = 0; i < 200 && r == 0; i++)
		r = spool_msg_write(m, chunk, sizeof chunk);
	assert_int_equal(r, -1);
	assert_int_equal(errno, EFBIG);
	struct commit_result cr = {0, 0};
	spool_msg_commit(m, on_commit, &cr);
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
	signal(SIGXFSZ, oldsig);
	assert_int_equal(cr.calls, 1);
	assert_int_equal(cr.err, EFBIG);
	char *tmp = path_in(f, "tmp"), *queue = path_in(f, "queue");
	assert_int_equal(count_entries(tmp), 0);
	assert_int_equal(count_entries(queue), 0);
	free(tmp);
	free(queue);
	spool_envelope_clear(&env);
}

static void test_open_cleans_tmp(void **state)
{
	struct fixture *f = *state;
	char *junk = path_in(f, "tmp/0123456789ABCDEFGHJK");
	write_file(junk, "half a message", 14);
	char *orphan = path_in(f, "queue/0123456789ABCDEFGHJK.done");
	write_file(orphan, "0\n", 2);
	char *kept = path_in(f, "queue/.keep");
	write_file(kept, "", 0);
	spool_close(f->sp);
	f->sp = spool_open(f->dir);
	assert_non_null(f->sp);
	char *tmp = path_in(f, "tmp");
	assert_int_equal(count_entries(tmp), 0);
	assert_int_equal(access(orphan, F_OK), -1);
	assert_int_equal(access(kept, F_OK), 0);
	assert_string_equal(spool_dir(f->sp), f->dir);
	free(junk);
	free(orphan);
	free(kept);
	free(tmp);
}

static void test_open_creates_private_folders(void **state)
{
	struct fixture *f = *state;
	char *sub = path_in(f, "a/b/spool");
	struct spool *sp = spool_open(sub);
	assert_non_null(sp);
	struct stat st;
	char *q = path_in(f, "a/b/spool/queue");
	assert_int_equal(stat(q, &st), 0);
	assert_true(S_ISDIR(st.st_mode));
	assert_int_equal(st.st_mode & 0777, 0700);
	spool_close(sp);
	free(q);
	free(sub);

	char *file = path_in(f, "plainfile");
	write_file(file, "x", 1);
	errno = 0;
	assert_null(spool_open(file));
	assert_int_not_equal(errno, 0);
	free(file);
}

static void test_mark_done(void **state)
{
	struct fixture *f = *state;
	char id[SPOOL_ID_SIZE];
	spool_one(f, "a@example.test", body1, sizeof body1 - 1, id);
	assert_int_equal(spool_mark_done(f->sp, id, 2), 0);
	assert_int_equal(spool_mark_done(f->sp, id, 0), 0);
	struct spool_envelope env;
	assert_int_equal(spool_read_envelope(f->sp, id, &env), 0);
	assert_true(env.rcpts[0].done);
	assert_false(env.rcpts[1].done);
	assert_true(env.rcpts[2].done);
	spool_envelope_clear(&env);
	char *done = path_in(f, "queue/%s.done", id);
	size_t len;
	char *text = read_file(done, &len);
	assert_string_equal(text, "2\n0\n");
	free(text);
	free(done);
}

static void test_torn_done_line(void **state)
{
	struct fixture *f = *state;
	char id[SPOOL_ID_SIZE];
	spool_one(f, "a@example.test", body1, sizeof body1 - 1, id);
	char *done = path_in(f, "queue/%s.done", id);
	write_file(done, "0\n1", 3); /* crash in the middle of appending "1\n" (or "12\n") */
	struct spool_envelope env;
	assert_int_equal(spool_read_envelope(f->sp, id, &env), 0);
	assert_true(env.rcpts[0].done);
	assert_false(env.rcpts[1].done);
	assert_false(env.rcpts[2].done);
	spool_envelope_clear(&env);

	/* the next record must not glue onto the torn one ("12") */
	assert_int_equal(spool_mark_done(f->sp, id, 2), 0);
	assert_int_equal(spool_read_envelope(f->sp, id, &env), 0);
	assert_true(env.rcpts[0].done);
	assert_false(env.rcpts[1].done);
	assert_true(env.rcpts[2].done);
	spool_envelope_clear(&env);
	size_t len;
	char *text = read_file(done, &len);
	assert_string_equal(text, "0\n2\n");
	free(text);

	/* a torn first record */
	write_file(done, "2", 1);
	assert_int_equal(spool_mark_done(f->sp, id, 1), 0);
	text = read_file(done, &len);
	assert_string_equal(text, "1\n");
	free(text);
	free(done);
}

static void test_bad_done_file(void **state)
{
	struct fixture *f = *state;
	char id[SPOOL_ID_SIZE];
	spool_one(f, "a@example.test", body1, sizeof body1 - 1, id);
	char *done = path_in(f, "queue/%s.done", id);
	static const char *const bad[] = {"3\n", "x\n", "\n", "01\n", "-1\n", "1 \n",
					  "99999999999999999999999\n"};
	for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
		write_file(done, bad[i], strlen(bad[i]));
		struct spool_envelope env;
		errno = 0;
		assert_int_equal(spool_read_envelope(f->sp, id, &env), -1);
		assert_int_equal(errno, EINVAL);
		assert_null(env.rcpts);
	}
	free(done);
}

static void test_remove(void **state)
{
	struct fixture *f = *state;
	char id[SPOOL_ID_SIZE];
	spool_one(f, "a@example.test", body1, sizeof body1 - 1, id);
	assert_int_equal(spool_mark_done(f->sp, id, 0), 0);
	assert_int_equal(spool_remove(f->sp, id), 0);
	char *queue = path_in(f, "queue");
	assert_int_equal(count_entries(queue), 0);
	free(queue);
	struct spool_envelope env;
	assert_int_equal(spool_read_envelope(f->sp, id, &env), -1);
	assert_int_equal(errno, ENOENT);
	assert_int_equal(spool_remove(f->sp, id), -1);
	assert_int_equal(errno, ENOENT);
	/* IDs never name paths outside queue/ */
	assert_int_equal(spool_remove(f->sp, "../tmp"), -1);
	assert_int_equal(errno, EINVAL);
	assert_int_equal(spool_read_envelope(f->sp, "../x", &env), -1);
	assert_int_equal(errno, EINVAL);
	assert_int_equal(spool_mark_done(f->sp, "a/b", 0), -1);
	assert_int_equal(errno, EINVAL);
}

/* A delivered message's file is kept in free/ and written over by the next
 * one, which reads back exactly (the old bytes beyond it cut); the pool
 * survives a restart; files over 256 KiB and strays are deleted. */
static void test_recycle(void **state)
{
	struct fixture *f = *state;
	char *freedir = path_in(f, "free");
	char id[SPOOL_ID_SIZE], id2[SPOOL_ID_SIZE], id3[SPOOL_ID_SIZE];
	size_t biglen = 10000;
	char *big = xmalloc(biglen);
	memset(big, 'x', biglen);
	spool_one(f, "a@example.test", big, biglen, id);
	assert_int_equal(count_entries(freedir), 0);
	assert_int_equal(spool_remove(f->sp, id), 0);
	assert_int_equal(count_entries(freedir), 1);
	char *kept = path_in(f, "free/%s", id);
	assert_int_equal(access(kept, F_OK), 0);

	spool_one(f, "a@example.test", body1, sizeof body1 - 1, id2); /* over the big one */
	assert_int_equal(count_entries(freedir), 0);
	assert_int_equal(access(kept, F_OK), -1);
	spool_one(f, "a@example.test", body1, sizeof body1 - 1, id3); /* a new file */
	size_t len2, len3;
	char *q2 = path_in(f, "queue/%s", id2), *q3 = path_in(f, "queue/%s", id3);
	char *t2 = read_file(q2, &len2), *t3 = read_file(q3, &len3);
	assert_int_equal(len2, len3);
	assert_true(len2 > sizeof body1 - 1);
	assert_memory_equal(t2 + len2 - (sizeof body1 - 1), body1, sizeof body1 - 1);
	struct spool_envelope env;
	assert_int_equal(spool_read_envelope(f->sp, id2, &env), 0);
	assert_int_equal(env.size, (off_t)(sizeof body1 - 1));
	spool_envelope_clear(&env);

	/* a longer message over a shorter file: nothing cut, nothing lost */
	char id7[SPOOL_ID_SIZE];
	assert_int_equal(spool_remove(f->sp, id3), 0);
	assert_int_equal(count_entries(freedir), 1);
	spool_one(f, "a@example.test", big, biglen, id7);
	assert_int_equal(count_entries(freedir), 0);
	char *q7 = path_in(f, "queue/%s", id7);
	size_t len7;
	char *t7 = read_file(q7, &len7);
	assert_true(len7 > biglen);
	assert_memory_equal(t7 + len7 - biglen, big, biglen);
	assert_int_equal(spool_read_envelope(f->sp, id7, &env), 0);
	assert_int_equal(env.size, (off_t)biglen);
	spool_envelope_clear(&env);
	free(t7);
	free(q7);

	/* kept across a restart, and used */
	assert_int_equal(spool_remove(f->sp, id2), 0);
	char *stray = path_in(f, "free/not-an-id");
	write_file(stray, "x", 1);
	spool_close(f->sp);
	f->sp = spool_open(f->dir);
	assert_non_null(f->sp);
	assert_int_equal(count_entries(freedir), 1); /* the stray is gone */
	char id4[SPOOL_ID_SIZE];
	spool_one(f, "a@example.test", body1, sizeof body1 - 1, id4);
	assert_int_equal(count_entries(freedir), 0);

	/* an ID in a string of its own length, as spool_list gives them
	 * (fuzz_smtp_session found the pool copying SPOOL_ID_SIZE octets) */
	char id6[SPOOL_ID_SIZE];
	spool_one(f, "a@example.test", body1, sizeof body1 - 1, id6);
	char *heap_id = xstrdup(id6);
	assert_int_equal(spool_remove(f->sp, heap_id), 0);
	free(heap_id);
	assert_int_equal(count_entries(freedir), 1);
	spool_one(f, "a@example.test", body1, sizeof body1 - 1, id6);
	assert_int_equal(count_entries(freedir), 0);

	/* a large file is not kept */
	size_t hugelen = 300 * 1024;
	char *huge = xmalloc(hugelen);
	memset(huge, 'y', hugelen);
	char id5[SPOOL_ID_SIZE];
	spool_one(f, "a@example.test", huge, hugelen, id5);
	assert_int_equal(spool_remove(f->sp, id5), 0);
	assert_int_equal(count_entries(freedir), 0);
	free(huge);
	free(stray);
	free(t2);
	free(t3);
	free(q2);
	free(q3);
	free(kept);
	free(big);
	free(freedir);
}

static void test_list(void **state)
{
	struct fixture *f = *state;
	char ids[5][SPOOL_ID_SIZE];
	for (int i = 0; i < 5; i++)
		spool_one(f, "a@example.test", body1, sizeof body1 - 1, ids[i]);
	assert_int_equal(spool_mark_done(f->sp, ids[1], 0), 0);
	char *dot = path_in(f, "queue/.hidden");
	write_file(dot, "", 0);
	free(dot);
	char **list;
	size_t n = spool_list(f->sp, &list);
	assert_int_equal(n, 5);
	for (size_t i = 0; i < n; i++)
		assert_string_equal(list[i], ids[i]);
	spool_free_ids(list, n);
}

static void test_list_empty(void **state)
{
	struct fixture *f = *state;
	char **list;
	assert_int_equal(spool_list(f->sp, &list), 0);
	spool_free_ids(list, 0);
}

static void test_ids(void **state)
{
	(void)state;
	enum { N = 100000 };
	char prev[SPOOL_ID_SIZE] = "";
	for (int i = 0; i < N; i++) {
		char id[SPOOL_ID_SIZE];
		spool_new_id(id);
		size_t len = strlen(id);
		assert_true(len > 0 && len < SPOOL_ID_SIZE);
		assert_int_equal(strspn(id, "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"), len);
		if (i > 0) {
			assert_int_equal(strlen(prev), len);
			assert_true(strcmp(prev, id) < 0); /* strictly increasing: unique */
		}
		memcpy(prev, id, sizeof id);
	}
}

/* IDs made a while apart sort in time order even across a new process. */
static void test_ids_sort_across_processes(void **state)
{
	(void)state;
	char a[SPOOL_ID_SIZE], b[SPOOL_ID_SIZE];
	spool_new_id(a);
	int pfd[2];
	assert_int_equal(pipe(pfd), 0);
	usleep(2000);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		char c[SPOOL_ID_SIZE];
		spool_new_id(c);
		_exit(write_all(pfd[1], c, sizeof c) == 0 ? 0 : 1);
	}
	close(pfd[1]);
	assert_int_equal(read(pfd[0], b, sizeof b), (ssize_t)sizeof b);
	close(pfd[0]);
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(strcmp(a, b) < 0);
}

static void test_xtext(void **state)
{
	(void)state;
	char *x = spool_xtext_encode("a b+c=d\"e\"@x");
	assert_string_equal(x, "a+20b+2Bc+3Dd\"e\"@x");
	char *d = spool_xtext_decode(x);
	assert_string_equal(d, "a b+c=d\"e\"@x");
	free(x);
	free(d);

	x = spool_xtext_encode("");
	assert_string_equal(x, "");
	d = spool_xtext_decode(x);
	assert_string_equal(d, "");
	free(x);
	free(d);

	char all[256];
	for (int i = 1; i < 256; i++)
		all[i - 1] = (char)i;
	all[255] = '\0';
	x = spool_xtext_encode(all);
	for (const char *p = x; *p; p++)
		assert_true(*p > ' ' && *p < 0x7f && *p != '=');
	d = spool_xtext_decode(x);
	assert_string_equal(d, all);
	free(x);
	free(d);

	/* "+" and two upper case hex digits (RFC 3461 §4); nothing else */
	d = spool_xtext_decode("+41+7E");
	assert_string_equal(d, "A~");
	free(d);
	static const char *const bad[] = {"+", "+4", "+4G", "+4a", "a=b", "a b", "+00",
					  "\x80", "\t", "ab+"};
	for (size_t i = 0; i < ARRAY_LEN(bad); i++)
		assert_null(spool_xtext_decode(bad[i]));
}

static void write_spool_file(struct fixture *f, const char *id, const char *text)
{
	char *p = path_in(f, "queue/%s", id);
	write_file(p, text, strlen(text));
	free(p);
}

static void test_malformed(void **state)
{
	struct fixture *f = *state;
	const char *id = "0000000000000000000AB";
	static const char *const bad[] = {
		"",
		"posthorn-spool 2\nid 0000000000000000000AB\n",
		"posthorn-spool 1\n",
		"posthorn-spool 1\nid 0000000000000000000AB\narrival 1\nsender a\nclient c\n"
		"rcpt local a a\n", /* no blank line */
		"posthorn-spool 1\nid 0000000000000000000AC\narrival 1\nsender a\nclient c\n"
		"rcpt local a a\n\n", /* id differs from the name */
		"posthorn-spool 1\nid 0000000000000000000AB\narrival x\nsender a\nclient c\n"
		"rcpt local a a\n\n",
		"posthorn-spool 1\nid 0000000000000000000AB\narrival 1\nclient c\n"
		"rcpt local a a\n\n", /* no sender */
		"posthorn-spool 1\nid 0000000000000000000AB\narrival 1\nsender a\nsender b\n"
		"client c\nrcpt local a a\n\n",
		"posthorn-spool 1\nid 0000000000000000000AB\narrival 1\nsender a\nclient c\n\n",
		"posthorn-spool 1\nid 0000000000000000000AB\narrival 1\nsender a\nclient c\n"
		"rcpt elsewhere a a\n\n",
		"posthorn-spool 1\nid 0000000000000000000AB\narrival 1\nsender a\nclient c\n"
		"rcpt local a\n\n",
		"posthorn-spool 1\nid 0000000000000000000AB\narrival 1\nsender a\nclient c\n"
		"rcpt local  a\n\n",
		"posthorn-spool 1\nid 0000000000000000000AB\narrival 1\nsender a\nclient c\n"
		"rcpt local a+2 a\n\n",
		"posthorn-spool 1\nid 0000000000000000000AB\narrival 1\nsender a b\nclient c\n"
		"rcpt local a a\n\n",
		"posthorn-spool 1\nid 0000000000000000000AB\narrival 1\nsender a\nclient c\n"
		"rcpt local a a\nhelo h\n\n", /* helo after rcpt */
		"posthorn-spool 1\nid 0000000000000000000AB\narrival 1\nsender a\nclient c\n"
		"colour blue\nrcpt local a a\n\n",
		"posthorn-spool 1\nid 0000000000000000000AB\narrival 1\nsender a\nclient c\n"
		"auth u\nhelo h\nrcpt local a a\n\n", /* out of order */
		"posthorn-spool 1\nid 0000000000000000000AB\narrival 1\nsender\nclient c\n"
		"rcpt local a a\n\n",
		"posthorn-spool 1\r\nid 0000000000000000000AB\narrival 1\nsender a\nclient c\n"
		"rcpt local a a\n\n",
	};
	for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
		write_spool_file(f, id, bad[i]);
		struct spool_envelope env;
		errno = 0;
		assert_int_equal(spool_read_envelope(f->sp, id, &env), -1);
		assert_int_equal(errno, EINVAL);
		assert_null(env.sender);
		assert_int_equal(env.nrcpts, 0);
	}
	/* the good twin of the cases above */
	write_spool_file(f, id,
			 "posthorn-spool 1\nid 0000000000000000000AB\narrival 1\nsender \nclient c\n"
			 "helo h\nauth u\nrcpt local a a\nrcpt remote b+20 b\n\nbody");
	struct spool_envelope env;
	assert_int_equal(spool_read_envelope(f->sp, id, &env), 0);
	assert_string_equal(env.rcpts[1].address, "b ");
	assert_int_equal(env.size, 4);
	spool_envelope_clear(&env);
}

static void test_malformed_nul_and_long_line(void **state)
{
	struct fixture *f = *state;
	const char *id = "0000000000000000000AB";
	static const char with_nul[] = "posthorn-spool 1\nid 0000000000000000000AB\narrival 1\n"
				       "sender a\0b\nclient c\nrcpt local a a\n\n";
	char *p = path_in(f, "queue/%s", id);
	write_file(p, with_nul, sizeof with_nul - 1);
	struct spool_envelope env;
	assert_int_equal(spool_read_envelope(f->sp, id, &env), -1);
	assert_int_equal(errno, EINVAL);

	size_t n = 40000;
	char *lng = xmalloc(n + 200);
	size_t o = 0;
	const char *head = "posthorn-spool 1\nid 0000000000000000000AB\narrival 1\nsender ";
	memcpy(lng, head, strlen(head));
	o += strlen(head);
	memset(lng + o, 'a', n);
	o += n;
	const char *tail = "\nclient c\nrcpt local a a\n\n";
	memcpy(lng + o, tail, strlen(tail));
	o += strlen(tail);
	write_file(p, lng, o);
	assert_int_equal(spool_read_envelope(f->sp, id, &env), -1);
	assert_int_equal(errno, EINVAL);
	free(lng);
	free(p);
}

/* Run fn with stderr going to a file; returns what was written. */
static char *capture_stderr(struct fixture *f, void (*fn)(struct fixture *))
{
	char *path = path_in(f, "stderr.txt");
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	int saved = dup(STDERR_FILENO);
	assert_true(saved >= 0);
	assert_true(dup2(fd, STDERR_FILENO) >= 0);
	close(fd);
	fn(f);
	assert_true(dup2(saved, STDERR_FILENO) >= 0);
	close(saved);
	size_t len;
	char *text = read_file(path, &len);
	unlink(path);
	free(path);
	return text;
}

static void read_bad_file(struct fixture *f)
{
	write_spool_file(f, "0000000000000000000AB", "posthorn-spool 1\nid 0000000000000000000AB\nbogus\n");
	struct spool_envelope env;
	log_init(false, LOG_WARN);
	int r = spool_read_envelope(f->sp, "0000000000000000000AB", &env);
	log_init(false, LOG_ERR);
	assert_int_equal(r, -1);
}

static void test_malformed_is_logged(void **state)
{
	struct fixture *f = *state;
	char *text = capture_stderr(f, read_bad_file);
	assert_non_null(strstr(text, "event=spool-corrupt"));
	assert_non_null(strstr(text, "/queue/0000000000000000000AB line=3"));
	free(text);
}

/* The writer refuses what the reader would refuse. */
static void test_begin_rejects_long_line(void **state)
{
	struct fixture *f = *state;
	struct spool_envelope env;
	envelope_fill(&env, "a@example.test");
	free(env.helo);
	env.helo = xmalloc(20000);
	memset(env.helo, ' ', 19999);
	env.helo[19999] = '\0';
	errno = 0;
	assert_null(spool_msg_begin(f->sp, &env));
	assert_int_equal(errno, EINVAL);
	char *tmp = path_in(f, "tmp");
	assert_int_equal(count_entries(tmp), 0);
	free(tmp);
	spool_envelope_clear(&env);
}

/* ---- the journal across a crash ------------------------------------------ */

enum { CRASH_MAX = 4 };

struct crash_plan {
	int messages;        /* committed through the commit thread */
	bool remove_first;   /* delivered and removed after it was committed */
	bool unlink_first;   /* removed, the crash before its removal is recorded */
	bool big_first;      /* the first one 100 KiB (over the write buffer) */
	unsigned idle_ms;    /* the loop runs this long before the end */
	bool clean_stop;     /* spool_close() first instead of a crash */
};

static void child_on_commit(void *arg, int err)
{
	*(int *)arg = err == 0 ? 1 : -1;
}

/* One message through the commit thread, its callback awaited (bounded). */
static int child_commit(struct spool *sp, struct event_base *base, int i, bool big,
			char id[SPOOL_ID_SIZE])
{
	struct spool_envelope env;
	envelope_fill(&env, "alice@example.test");
	struct spool_msg *m = spool_msg_begin(sp, &env);
	char body[128];
	int n = snprintf(body, sizeof body, "Subject: crash %d\r\n\r\nbody of message %d\r\n", i, i);
	if (!m || spool_msg_write(m, body, (size_t)n) < 0)
		return -1;
	static const char line[] = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.\r\n";
	for (int k = 0; big && k < 1600; k++) /* 104,000 bytes more */
		if (spool_msg_write(m, line, sizeof line - 1) < 0)
			return -1;
	int done = 0;
	spool_msg_commit(m, child_on_commit, &done);
	for (int k = 0; k < 5000 && done == 0; k++)
		event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK), usleep(1000);
	memcpy(id, env.id, SPOOL_ID_SIZE);
	spool_envelope_clear(&env);
	return done == 1 ? 0 : -1;
}

static void child_run(const char *dir, const struct crash_plan *plan, int out)
{
	struct spool *sp = spool_open(dir);
	struct event_base *base = event_base_new();
	if (!sp || !base || spool_committer_start(sp, base) < 0)
		_exit(2);
	char ids[CRASH_MAX][SPOOL_ID_SIZE];
	for (int i = 0; i < plan->messages; i++) {
		if (child_commit(sp, base, i, i == 0 && plan->big_first, ids[i]) < 0)
			_exit(3);
		if (i == 0 && plan->remove_first && spool_remove(sp, ids[0]) < 0)
			_exit(4);
		if (i == 0 && plan->unlink_first && spool_unlink_message(sp, ids[0]) < 0)
			_exit(4);
	}
	if (plan->idle_ms) {
		struct timeval tv = {.tv_sec = plan->idle_ms / 1000,
				     .tv_usec = (plan->idle_ms % 1000) * 1000};
		event_base_loopexit(base, &tv);
		event_base_dispatch(base);
	}
	if (plan->clean_stop)
		spool_close(sp);
	size_t len = (size_t)plan->messages * SPOOL_ID_SIZE;
	_exit(write(out, ids, len) == (ssize_t)len ? 0 : 5);
}

/* The fixture's spool closed, a child commits and "crashes"; the IDs it
 * committed come back in ids. */
static void crash_after(struct fixture *f, const struct crash_plan *plan,
			char ids[CRASH_MAX][SPOOL_ID_SIZE])
{
	assert_true(plan->messages <= CRASH_MAX);
	spool_close(f->sp);
	f->sp = NULL;
	int p[2];
	assert_int_equal(pipe(p), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		close(p[0]);
		child_run(f->dir, plan, p[1]);
	}
	close(p[1]);
	size_t len = (size_t)plan->messages * SPOOL_ID_SIZE;
	assert_int_equal(read(p[0], ids, len), (ssize_t)len);
	close(p[0]);
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
}

/* Acknowledged messages whose queue files a crash lost or tore come back,
 * byte for byte, from the journal; once only. */
static void test_journal_restores_after_crash(void **state)
{
	struct fixture *f = *state;
	const struct crash_plan plan = {.messages = 3};
	char ids[CRASH_MAX][SPOOL_ID_SIZE];
	crash_after(f, &plan, ids);
	char *q[3], *want[3];
	size_t wantlen[3];
	for (int i = 0; i < 3; i++) {
		q[i] = path_in(f, "queue/%s", ids[i]);
		want[i] = read_file(q[i], &wantlen[i]);
		assert_non_null(strstr(want[i], "body of message"));
	}
	assert_int_equal(truncate(q[0], 10), 0); /* torn */
	assert_int_equal(unlink(q[1]), 0);       /* its rename never reached the disk */
	f->sp = spool_open(f->dir);
	assert_non_null(f->sp);
	for (int i = 0; i < 3; i++) {
		size_t len;
		char *got = read_file(q[i], &len);
		assert_int_equal(len, wantlen[i]);
		assert_memory_equal(got, want[i], len);
		free(got);
	}
	char *tmpdir = path_in(f, "tmp");
	assert_int_equal(count_entries(tmpdir), 0);
	/* the replay started the journal afresh: nothing comes back twice */
	spool_close(f->sp);
	assert_int_equal(unlink(q[2]), 0);
	f->sp = spool_open(f->dir);
	assert_non_null(f->sp);
	assert_int_equal(access(q[2], F_OK), -1);
	for (int i = 0; i < 3; i++) {
		free(q[i]);
		free(want[i]);
	}
	free(tmpdir);
}

/* A message delivered and removed after it was journaled stays removed,
 * even when the crash undid the removal on disk. */
static void test_journal_remembers_removal(void **state)
{
	struct fixture *f = *state;
	const struct crash_plan plan = {.messages = 2, .remove_first = true};
	char ids[CRASH_MAX][SPOOL_ID_SIZE];
	crash_after(f, &plan, ids);
	char *q0 = path_in(f, "queue/%s", ids[0]), *q1 = path_in(f, "queue/%s", ids[1]);
	assert_int_equal(access(q0, F_OK), -1);
	write_file(q0, "posthorn-spool 1\n", 17); /* the removal lost, a stale file back */
	f->sp = spool_open(f->dir);
	assert_non_null(f->sp);
	assert_int_equal(access(q0, F_OK), -1);
	assert_int_equal(access(q1, F_OK), 0);
	free(q0);
	free(q1);
}

/* A message larger than the write buffer is journaled from its file, a
 * small one from memory; a small one written over the recycled file of a
 * larger one leaves none of the old bytes, in its file or in its record. */
static void test_journal_restores_large_and_recycled(void **state)
{
	struct fixture *f = *state;
	const struct crash_plan plan = {.messages = 3, .big_first = true};
	char ids[CRASH_MAX][SPOOL_ID_SIZE];
	crash_after(f, &plan, ids);
	char *q0 = path_in(f, "queue/%s", ids[0]);
	size_t bigbytes;
	char *big = read_file(q0, &bigbytes);
	assert_true(bigbytes > 104000);
	assert_int_equal(unlink(q0), 0);
	f->sp = spool_open(f->dir);
	assert_non_null(f->sp);
	size_t len;
	char *got = read_file(q0, &len);
	assert_int_equal(len, bigbytes);
	assert_memory_equal(got, big, len);
	free(got);
	free(big);
	spool_close(f->sp);
	f->sp = NULL;

	const struct crash_plan recycled = {.messages = 2, .remove_first = true, .big_first = true};
	crash_after(f, &recycled, ids);
	char *q1 = path_in(f, "queue/%s", ids[1]);
	char *small = read_file(q1, &len);
	assert_true(len < 1000); /* cut: the big one's bytes are gone */
	assert_null(memmem(small, len, "xyzABC", 6));
	size_t smallbytes = len;
	assert_int_equal(unlink(q1), 0);
	f->sp = spool_open(f->dir);
	assert_non_null(f->sp);
	got = read_file(q1, &len);
	assert_int_equal(len, smallbytes);
	assert_memory_equal(got, small, len);
	free(got);
	free(small);
	free(q0);
	free(q1);
}

/* An idle second, or a clean stop, ends the journal records' life (a
 * checkpoint made the queue files durable): a later open replays nothing,
 * which the loss of a queue file after that shows. */
static void check_checkpointed(struct fixture *f, const struct crash_plan *plan)
{
	char ids[CRASH_MAX][SPOOL_ID_SIZE];
	crash_after(f, plan, ids);
	char *q = path_in(f, "queue/%s", ids[0]);
	assert_int_equal(access(q, F_OK), 0);
	assert_int_equal(unlink(q), 0);
	f->sp = spool_open(f->dir);
	assert_non_null(f->sp);
	assert_int_equal(access(q, F_OK), -1);
	free(q);
}

static void test_journal_checkpoint_when_idle(void **state)
{
	const struct crash_plan plan = {.messages = 1, .idle_ms = 1800};
	check_checkpointed(*state, &plan);
}

static void test_journal_checkpoint_at_stop(void **state)
{
	const struct crash_plan plan = {.messages = 1, .clean_stop = true};
	check_checkpointed(*state, &plan);
}

/* Two messages written over recycled files after a restart; their
 * warnings (a name given twice) go to the captured stderr. */
static void two_recycled_messages(struct fixture *f)
{
	log_init(false, LOG_WARN);
	char a[SPOOL_ID_SIZE], b[SPOOL_ID_SIZE];
	spool_one(f, "one@example.test", body1, sizeof body1 - 1, a);
	spool_one(f, "two@example.test", body1, sizeof body1 - 1, b);
	log_init(false, LOG_ERR);
}

/* The root of a recycled file named twice: a message delivered, its file
 * moved into free/, and the daemon killed before the journal recorded the
 * removal.  The replay brings the message back into queue/ while free/
 * still holds its old file under its name; delivered again, it would give
 * that name to the pool a second time.  The open drops such a file, so
 * the pool names each file once. */
static void test_replayed_message_leaves_no_recycled_namesake(void **state)
{
	struct fixture *f = *state;
	const struct crash_plan plan = {.messages = 1, .unlink_first = true};
	char ids[CRASH_MAX][SPOOL_ID_SIZE];
	crash_after(f, &plan, ids);
	char *q = path_in(f, "queue/%s", ids[0]), *fr = path_in(f, "free/%s", ids[0]);
	assert_int_equal(access(q, F_OK), -1);
	assert_int_equal(access(fr, F_OK), 0); /* recycled, removal not recorded */
	f->sp = spool_open(f->dir);
	assert_non_null(f->sp);
	assert_int_equal(access(q, F_OK), 0); /* back: delivered again (at least once) */
	assert_int_equal(access(fr, F_OK), -1);
	assert_int_equal(spool_remove(f->sp, ids[0]), 0); /* recycled once more */
	char *text = capture_stderr(f, two_recycled_messages);
	assert_null(strstr(text, "event=spool-error"));
	free(text);
	free(q);
	free(fr);
}

int main(void)
{
	log_init(false, LOG_ERR); /* the malformed cases warn; keep the output short */
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_roundtrip, setup, teardown),
		cmocka_unit_test_setup_teardown(test_null_sender_minimal, setup, teardown),
		cmocka_unit_test_setup_teardown(test_large_message, setup, teardown),
		cmocka_unit_test_setup_teardown(test_abort, setup, teardown),
		cmocka_unit_test_setup_teardown(test_begin_rejects_no_rcpt, setup, teardown),
		cmocka_unit_test_setup_teardown(test_begin_rejects_long_line, setup, teardown),
		cmocka_unit_test_setup_teardown(test_write_error, setup, teardown),
		cmocka_unit_test_setup_teardown(test_open_cleans_tmp, setup, teardown),
		cmocka_unit_test_setup_teardown(test_open_creates_private_folders, setup, teardown),
		cmocka_unit_test_setup_teardown(test_mark_done, setup, teardown),
		cmocka_unit_test_setup_teardown(test_torn_done_line, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_done_file, setup, teardown),
		cmocka_unit_test_setup_teardown(test_remove, setup, teardown),
		cmocka_unit_test_setup_teardown(test_recycle, setup, teardown),
		cmocka_unit_test_setup_teardown(test_recycled_file_taken_once, setup, teardown),
		cmocka_unit_test_setup_teardown(test_list, setup, teardown),
		cmocka_unit_test_setup_teardown(test_list_empty, setup, teardown),
		cmocka_unit_test_setup_teardown(test_malformed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_malformed_nul_and_long_line, setup, teardown),
		cmocka_unit_test_setup_teardown(test_malformed_is_logged, setup, teardown),
		cmocka_unit_test_setup_teardown(test_journal_restores_after_crash, setup, teardown),
		cmocka_unit_test_setup_teardown(test_journal_restores_large_and_recycled, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_journal_remembers_removal, setup, teardown),
		cmocka_unit_test_setup_teardown(test_replayed_message_leaves_no_recycled_namesake,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_journal_checkpoint_when_idle, setup, teardown),
		cmocka_unit_test_setup_teardown(test_journal_checkpoint_at_stop, setup, teardown),
		cmocka_unit_test(test_ids),
		cmocka_unit_test(test_ids_sort_across_processes),
		cmocka_unit_test(test_xtext),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

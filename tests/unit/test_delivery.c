/* test_delivery: the delivery worker over a real spool — batches,
 * gathering under load, resuming, retries after failures and reloads,
 * recipients delivered but not recorded, the report of a message with
 * remote recipients left, and the list of deferred messages (`posthorn
 * queue list`) with their flush. */
#define _GNU_SOURCE /* nftw */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
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

#include "unitfs.h"

#include "queue/delivery.h"
#include "store/maildir.h"
#include "lib/log.h"
#include "queue/spool.h"
#include "lib/util.h"

struct fixture {
	char dir[64];
	char *mailboxes;
	struct spool *sp;
	char *logpath;
	int saved_stderr;
};

/* What the worker reported: IDs with remote recipients left. */
static struct {
	pthread_mutex_t lock;
	char ids[16][SPOOL_ID_SIZE];
	size_t n;
} handed = {.lock = PTHREAD_MUTEX_INITIALIZER};

static void on_remote_left(const char *id)
{
	pthread_mutex_lock(&handed.lock);
	if (handed.n < ARRAY_LEN(handed.ids))
		memcpy(handed.ids[handed.n], id, strlen(id) + 1);
	handed.n++;
	pthread_mutex_unlock(&handed.lock);
}

/* How often id was reported. */
static size_t handed_times(const char *id)
{
	size_t k = 0;
	pthread_mutex_lock(&handed.lock);
	for (size_t i = 0; i < handed.n && i < ARRAY_LEN(handed.ids); i++)
		k += strcmp(handed.ids[i], id) == 0;
	pthread_mutex_unlock(&handed.lock);
	return k;
}

static int setup(void **state)
{
	pthread_mutex_lock(&handed.lock);
	handed.n = 0;
	pthread_mutex_unlock(&handed.lock);
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
	int r = rm_tree(f->dir);
	free(f->mailboxes);
	free(f->logpath);
	free(f);
	return r;
}

/* ---- helpers ------------------------------------------------------------ */

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

static bool reported(struct fixture *f, const void *id)
{
	(void)f;
	return handed_times(id) > 0;
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

/* ---- the worker --------------------------------------------------------- */

static void test_worker_delivers(void **state)
{
	struct fixture *f = *state;
	log_capture(f);
	assert_int_equal(delivery_start(f->sp, f->mailboxes, on_remote_left), 0);
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
 * for others to share its batch (a group commit). */
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
	assert_int_equal(delivery_start(f->sp, f->mailboxes, on_remote_left), 0);
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
	assert_int_equal(delivery_start(f->sp, f->mailboxes, on_remote_left), 0);
	char **ids;
	size_t n = spool_list(f->sp, &ids);
	assert_int_equal(n, 1);
	delivery_resume(ids[0]);
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

/* An earlier process made bob's copy, then stopped before it recorded
 * it: the resumed message finds the copy by its name, not a second one. */
static void test_worker_resumed_copy_found(void **state)
{
	struct fixture *f = *state;
	log_capture(f);
	char id[SPOOL_ID_SIZE];
	static const char *const rcpts[] = {"local:bob@example.test"};
	spool_msg(f, rcpts, 1, id);
	struct spool_envelope env = {0};
	assert_int_equal(spool_read_envelope(f->sp, id, &env), 0);
	char *unique = maildir_spooled_name((long long)env.arrival, id, 0);
	spool_envelope_clear(&env);
	(void)mkdir(f->mailboxes, 0700); /* the root, the domain, the user */
	char *domain = xasprintf("%s/example.test", f->mailboxes);
	(void)mkdir(domain, 0700);
	free(domain);
	char *bob = xasprintf("%s/example.test/bob", f->mailboxes);
	char *sub[] = {"", "/new", "/cur", "/tmp"};
	for (size_t i = 0; i < 4; i++) {
		char *d = xasprintf("%s%s", bob, sub[i]);
		(void)mkdir(d, 0700); /* the parent first, then its folders */
		free(d);
	}
	char *copy = xasprintf("%s/new/%s", bob, unique);
	FILE *fp = fopen(copy, "w");
	assert_non_null(fp);
	assert_int_equal(fputs("the copy made before the stop\n", fp) >= 0, 1);
	assert_int_equal(fclose(fp), 0);
	assert_int_equal(delivery_start(f->sp, f->mailboxes, on_remote_left), 0);
	delivery_resume(id);
	assert_true(wait_for(f, spool_gone, id));
	delivery_stop();
	char *new = xasprintf("%s/new", bob);
	assert_int_equal(count_entries(new), 1);
	assert_true(log_has(f, "found=earlier-attempt"));
	free(new);
	free(copy);
	free(bob);
	free(unique);
}

static void test_worker_failure_keeps_message(void **state)
{
	struct fixture *f = *state;
	/* the mailboxes root is a regular file: nothing can be created */
	write_file(f->mailboxes, "not a folder", 12);
	log_capture(f);
	assert_int_equal(delivery_start(f->sp, f->mailboxes, on_remote_left), 0);
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
	assert_int_equal(delivery_start(f->sp, blocked, on_remote_left), 0);
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
	assert_int_equal(delivery_start(f->sp, f->mailboxes, on_remote_left), 0);
	delivery_enqueue(id);
	bool failed = wait_for(f, log_has, "delivered, but cannot record it in the spool");
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
	signal(SIGXFSZ, oldsig);
	assert_true(failed);

	delivery_enqueue(id);
	assert_true(wait_for(f, reported, id));
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
	assert_int_equal(delivery_start(f->sp, f->mailboxes, on_remote_left), 0);
	char id[SPOOL_ID_SIZE];
	static const char *const rcpts[] = {"remote:x@remote.example", "local:bob@example.test"};
	spool_msg(f, rcpts, 2, id);
	delivery_enqueue(id);
	assert_true(wait_for(f, reported, id));
	delivery_stop();
	struct spool_envelope env;
	assert_int_equal(spool_read_envelope(f->sp, id, &env), 0);
	assert_false(env.rcpts[0].done);
	assert_true(env.rcpts[1].done);
	spool_envelope_clear(&env);
	assert_int_equal(handed_times(id), 1); /* once */
}

/* Without a receiver for remote recipients the message stays as it is. */
static void test_worker_remote_without_receiver(void **state)
{
	struct fixture *f = *state;
	assert_int_equal(delivery_start(f->sp, f->mailboxes, NULL), 0);
	char id[SPOOL_ID_SIZE];
	static const char *const rcpts[] = {"local:bob@example.test", "remote:x@remote.example"};
	spool_msg(f, rcpts, 2, id);
	delivery_enqueue(id);
	char *bob = xasprintf("%s/example.test/bob/new", f->mailboxes);
	for (int i = 0; i < 1000 && count_entries(bob) == 0; i++)
		usleep(10000);
	delivery_stop();
	assert_int_equal(count_entries(bob), 1);
	free(bob);
	assert_int_equal(handed_times(id), 0);
	struct spool_envelope env;
	assert_int_equal(spool_read_envelope(f->sp, id, &env), 0);
	assert_true(env.rcpts[0].done);
	assert_false(env.rcpts[1].done);
	spool_envelope_clear(&env);
}

static void test_worker_api_edges(void **state)
{
	struct fixture *f = *state;
	/* enqueue and stop without a running worker are harmless */
	delivery_enqueue("0000000000000000000AB");
	delivery_set_mailboxes("/nowhere");
	delivery_stop();
	assert_int_equal(delivery_start(f->sp, f->mailboxes, on_remote_left), 0);
	assert_int_equal(delivery_start(f->sp, f->mailboxes, on_remote_left), -1);
	assert_int_equal(errno, EBUSY);
	log_capture(f);
	delivery_enqueue("../../etc/passwd");
	assert_true(log_has(f, "not a queue ID"));
	delivery_enqueue("0000000000000000000AB"); /* not in the spool: dropped quietly */
	delivery_stop();
	delivery_stop();
	/* and it starts again */
	assert_int_equal(delivery_start(f->sp, f->mailboxes, on_remote_left), 0);
	delivery_stop();
}

/* What delivery_each_waiting() gave for one ID. */
struct waiting_seen {
	const char *id;
	bool found, described;
	unsigned failures;
	long long next_in, size;
	char sender[64], reason[512], rcpts[256];
};

static void note_waiting(void *arg, const struct delivery_waiting *w)
{
	struct waiting_seen *s = arg;
	if (strcmp(w->id, s->id) != 0)
		return;
	s->found = true;
	s->described = w->described;
	s->failures = w->failures;
	s->next_in = w->next_in;
	s->size = w->size;
	snprintf(s->sender, sizeof s->sender, "%s", w->sender);
	snprintf(s->reason, sizeof s->reason, "%s", w->reason ? w->reason : "(none)");
	s->rcpts[0] = '\0';
	for (size_t i = 0; i < w->nrcpts; i++) {
		size_t at = strlen(s->rcpts);
		snprintf(s->rcpts + at, sizeof s->rcpts - at, "%s<%s>", i ? " " : "", w->rcpts[i]);
	}
}

static bool waiting_listed(struct fixture *f, const void *arg)
{
	struct waiting_seen *s = (struct waiting_seen *)arg;
	s->found = false;
	delivery_each_waiting(note_waiting, s);
	return s->found;
}

/* A deferred message is listed with its envelope, the local recipients
 * still to deliver, the attempts, the next one and the last error; flush
 * makes it due at once. */
static void test_worker_lists_waiting(void **state)
{
	struct fixture *f = *state;
	write_file(f->mailboxes, "not a folder", 12);
	log_capture(f);
	assert_int_equal(delivery_start(f->sp, f->mailboxes, on_remote_left), 0);
	char id[SPOOL_ID_SIZE];
	static const char *const rcpts[] = {"local:bob@example.test", "remote:x@remote.example",
					    "local:carol@example.test"};
	spool_msg(f, rcpts, 3, id);
	struct waiting_seen seen = {.id = id};
	assert_false(waiting_listed(f, &seen));
	delivery_enqueue(id);
	assert_true(wait_for(f, waiting_listed, &seen));
	assert_true(seen.described);
	assert_int_equal(seen.failures, 1);
	assert_true(seen.next_in > 20 && seen.next_in <= 30);
	assert_int_equal(seen.size, (long long)(sizeof body - 1));
	assert_string_equal(seen.sender, "alice@example.org");
	assert_string_equal(seen.rcpts, "<bob@example.test> <carol@example.test>");
	assert_non_null(strstr(seen.reason, "Not a directory"));
	assert_int_equal(delivery_flush(), 1);
	assert_true(wait_for(f, log_has, "retry_in=1m"));
	assert_true(wait_for(f, waiting_listed, &seen));
	assert_int_equal(seen.failures, 2);
	delivery_stop();
	assert_int_equal(delivery_flush(), 0);
}

int main(void)
{
	log_init(false, LOG_ERR);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_worker_delivers, setup, teardown),
		cmocka_unit_test_setup_teardown(test_worker_gathers_only_under_steady_load, setup, teardown),
		cmocka_unit_test_setup_teardown(test_worker_resumed_copy_found, setup, teardown),
		cmocka_unit_test_setup_teardown(test_worker_resumes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_worker_failure_keeps_message, setup, teardown),
		cmocka_unit_test_setup_teardown(test_worker_retry_after_reload, setup, teardown),
		cmocka_unit_test_setup_teardown(test_worker_unrecorded_not_redelivered, setup, teardown),
		cmocka_unit_test_setup_teardown(test_worker_remote_stays, setup, teardown),
		cmocka_unit_test_setup_teardown(test_worker_remote_without_receiver, setup, teardown),
		cmocka_unit_test_setup_teardown(test_worker_api_edges, setup, teardown),
		cmocka_unit_test_setup_teardown(test_worker_lists_waiting, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

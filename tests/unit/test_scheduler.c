/* test_scheduler: the wiring of the two delivery agents over a real spool
 * and event loop — a submitted message goes to the local agent; one with
 * remote recipients left is handed over to the remote agent (through the
 * waker, on the loop); after the first shutdown step the hand-over is
 * dropped and the message waits in the spool; start, submit and stop are
 * harmless in any order. */
#define _GNU_SOURCE /* nftw */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/event.h>

#include "lib/log.h"
#include "lib/util.h"
#include "queue/outbound.h"
#include "queue/scheduler.h"
#include "queue/spool.h"

struct fixture {
	char dir[64];
	char *mailboxes;
	struct spool *sp;
	struct event_base *base;
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

static int setup(void **state)
{
	struct fixture *f = xcalloc(1, sizeof *f);
	memcpy(f->dir, "/tmp/posthorn-sched-XXXXXX", sizeof "/tmp/posthorn-sched-XXXXXX");
	if (!mkdtemp(f->dir))
		return -1;
	f->mailboxes = xasprintf("%s/mail", f->dir);
	char *spool = xasprintf("%s/spool", f->dir);
	f->sp = spool_open(spool);
	free(spool);
	f->base = event_base_new();
	if (!f->sp || !f->base)
		return -1;
	f->saved_stderr = -1;
	log_capture(f);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	scheduler_stop();
	log_restore(f);
	spool_close(f->sp);
	event_base_free(f->base);
	int r = nftw(f->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	free(f->mailboxes);
	free(f->logpath);
	free(f);
	return r;
}

/* ---- helpers ------------------------------------------------------------ */

static bool log_has(const struct fixture *f, const char *needle)
{
	FILE *fp = fopen(f->logpath, "r");
	if (!fp)
		return false;
	char line[2048];
	bool found = false;
	while (!found && fgets(line, sizeof line, fp))
		found = strstr(line, needle) != NULL;
	fclose(fp);
	return found;
}

static void on_commit(void *arg, int err)
{
	*(int *)arg = err;
}

static const char body[] = "Subject: test\r\n\r\nhello\r\n";

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

static bool spool_gone(struct fixture *f, const char *id)
{
	struct spool_envelope env;
	if (spool_read_envelope(f->sp, id, &env) == 0) {
		spool_envelope_clear(&env);
		return false;
	}
	return errno == ENOENT;
}

struct find {
	const char *id;
	bool found;
};

static void find_one(void *arg, const struct outbound_entry *e)
{
	struct find *fi = arg;
	fi->found = fi->found || strcmp(e->id, fi->id) == 0;
}

static bool outbound_has(const char *id)
{
	struct find fi = {id, false};
	outbound_each(find_one, &fi);
	return fi.found;
}

static void loop_tick(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
}

/* Run the loop, one round at a time (a timer keeps a round short), until
 * the remote agent has id: it then stops before the first attempt, which
 * would need a configuration. */
static bool run_until_outbound_has(struct fixture *f, const char *id)
{
	for (int i = 0; i < 500; i++) {
		if (outbound_has(id))
			return true;
		struct event *tick = evtimer_new(f->base, loop_tick, NULL);
		struct timeval tv = {.tv_usec = 20 * 1000};
		evtimer_add(tick, &tv);
		event_base_loop(f->base, EVLOOP_ONCE);
		event_free(tick);
	}
	return outbound_has(id);
}

static bool wait_gone(struct fixture *f, const char *id)
{
	for (int i = 0; i < 1000; i++) {
		if (spool_gone(f, id))
			return true;
		usleep(10000);
	}
	return false;
}

static bool wait_log(struct fixture *f, const char *needle)
{
	for (int i = 0; i < 1000; i++) {
		if (log_has(f, needle))
			return true;
		usleep(10000);
	}
	return false;
}

/* ---- tests -------------------------------------------------------------- */

static void test_local_only(void **state)
{
	struct fixture *f = *state;
	assert_int_equal(scheduler_start(f->base, f->sp, f->mailboxes), 0);
	char id[SPOOL_ID_SIZE];
	static const char *const rcpts[] = {"local:bob@example.test"};
	spool_msg(f, rcpts, 1, id);
	scheduler_submit(id);
	assert_true(wait_gone(f, id));
	scheduler_stop();
	assert_false(log_has(f, "event=handoff"));
	char *line = xasprintf("event=delivered id=%s to=bob@example.test", id);
	assert_true(log_has(f, line));
	free(line);
}

static void test_remote_handed_over(void **state)
{
	struct fixture *f = *state;
	assert_int_equal(scheduler_start(f->base, f->sp, f->mailboxes), 0);
	char id[SPOOL_ID_SIZE];
	static const char *const rcpts[] = {"local:bob@example.test", "remote:x@remote.example"};
	spool_msg(f, rcpts, 2, id);
	scheduler_submit(id);
	assert_true(run_until_outbound_has(f, id));
	char *line = xasprintf("event=handoff id=%s to=outbound", id);
	assert_true(log_has(f, line));
	free(line);
	scheduler_stop();
	/* the local part done, the remote part pending for the next start */
	struct spool_envelope env;
	assert_int_equal(spool_read_envelope(f->sp, id, &env), 0);
	assert_true(env.rcpts[0].done);
	assert_false(env.rcpts[1].done);
	spool_envelope_clear(&env);
}

static void test_remote_stopped_first(void **state)
{
	struct fixture *f = *state;
	assert_int_equal(scheduler_start(f->base, f->sp, f->mailboxes), 0);
	scheduler_stop_remote();
	char id[SPOOL_ID_SIZE];
	static const char *const rcpts[] = {"local:bob@example.test", "remote:x@remote.example"};
	spool_msg(f, rcpts, 2, id);
	scheduler_submit(id);
	char *line = xasprintf("event=handoff id=%s to=outbound", id);
	assert_true(wait_log(f, line));
	free(line);
	event_base_loop(f->base, EVLOOP_NONBLOCK);
	assert_false(outbound_has(id));
	scheduler_stop();
	struct spool_envelope env;
	assert_int_equal(spool_read_envelope(f->sp, id, &env), 0);
	assert_true(env.rcpts[0].done);
	assert_false(env.rcpts[1].done);
	spool_envelope_clear(&env);
}

static void test_api_edges(void **state)
{
	struct fixture *f = *state;
	/* before a start: nothing runs, the message waits in the spool */
	char id[SPOOL_ID_SIZE];
	static const char *const rcpts[] = {"local:bob@example.test"};
	spool_msg(f, rcpts, 1, id);
	scheduler_submit(id);
	scheduler_set_mailboxes("/nowhere");
	scheduler_stop_remote();
	scheduler_stop();
	assert_false(spool_gone(f, id));
	/* started twice: the second start fails, the first keeps running */
	assert_int_equal(scheduler_start(f->base, f->sp, f->mailboxes), 0);
	assert_int_equal(scheduler_start(f->base, f->sp, f->mailboxes), -1);
	assert_int_equal(errno, EBUSY);
	scheduler_submit(id);
	assert_true(wait_gone(f, id));
	scheduler_stop();
	scheduler_stop();
	/* and it starts again */
	assert_int_equal(scheduler_start(f->base, f->sp, f->mailboxes), 0);
	scheduler_stop();
}

int main(void)
{
	log_init(false, LOG_ERR);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_local_only, setup, teardown),
		cmocka_unit_test_setup_teardown(test_remote_handed_over, setup, teardown),
		cmocka_unit_test_setup_teardown(test_remote_stopped_first, setup, teardown),
		cmocka_unit_test_setup_teardown(test_api_edges, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

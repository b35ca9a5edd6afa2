/* Unit tests for offload, the worker threads behind password checks: work
 * runs away from the loop's thread, its result comes back on it, a
 * cancelled job's work is freed and never reported, and stopping frees what
 * was left. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/event.h>

#include "lib/offload.h"

struct work {
	pthread_t ran_on;
	bool ran;
	unsigned sleep_ms;
};

struct tally {
	pthread_t loop_thread;
	unsigned done, freed, done_elsewhere;
	struct work *last;
	struct event_base *base;
	unsigned expect;        /* leave the loop after this many done */
};

static struct tally tally;

static void work_run(void *arg)
{
	struct work *w = arg;
	if (w->sleep_ms) {
		struct timespec ts = {0, (long)w->sleep_ms * 1000000L};
		nanosleep(&ts, NULL);
	}
	w->ran_on = pthread_self();
	w->ran = true;
}

static void work_done(void *owner, void *arg)
{
	struct tally *t = owner;
	if (!pthread_equal(pthread_self(), t->loop_thread))
		t->done_elsewhere++;
	t->done++;
	free(t->last);
	t->last = arg;
	if (t->base && t->done >= t->expect)
		event_base_loopbreak(t->base);
}

static void work_free(void *arg)
{
	tally.freed++;
	free(arg);
}

static struct work *work_new(unsigned sleep_ms)
{
	struct work *w = calloc(1, sizeof *w);
	assert_non_null(w);
	w->sleep_ms = sleep_ms;
	return w;
}

static void loop_until_done(struct event_base *base, unsigned n)
{
	tally.base = base;
	tally.expect = n;
	struct timeval limit = {10, 0}; /* a hang fails the test, not the run */
	event_base_loopexit(base, &limit);
	if (tally.done < n)
		event_base_dispatch(base);
	tally.base = NULL;
}

static int setup(void **state)
{
	(void)state;
	free(tally.last);
	tally = (struct tally){.loop_thread = pthread_self()};
	return 0;
}

static void test_runs_on_a_worker_and_reports_on_the_loop(void **state)
{
	(void)state;
	struct event_base *base = event_base_new();
	assert_int_equal(offload_start(base, 2), 0);
	assert_true(offload_running());
	struct offload_job *j = offload_submit(work_run, work_done, work_free, work_new(0), &tally);
	assert_non_null(j);
	assert_int_equal(tally.done, 0); /* only from the loop */
	loop_until_done(base, 1);
	assert_int_equal(tally.done, 1);
	assert_int_equal(tally.done_elsewhere, 0);
	assert_true(tally.last->ran);
	assert_false(pthread_equal(tally.last->ran_on, tally.loop_thread));
	assert_int_equal(tally.freed, 0); /* done() owns the work */
	offload_stop();
	assert_false(offload_running());
	event_base_free(base);
}

static void test_many_jobs_each_reported_once(void **state)
{
	(void)state;
	struct event_base *base = event_base_new();
	assert_int_equal(offload_start(base, 3), 0);
	for (int i = 0; i < 200; i++)
		offload_submit(work_run, work_done, work_free, work_new(0), &tally);
	loop_until_done(base, 200);
	assert_int_equal(tally.done, 200);
	assert_int_equal(tally.freed, 0);
	offload_stop();
	event_base_free(base);
}

static void test_cancelled_job_is_freed_not_reported(void **state)
{
	(void)state;
	struct event_base *base = event_base_new();
	assert_int_equal(offload_start(base, 1), 0);
	/* the first keeps the one worker busy; the second is cancelled while
	 * it waits, the third while it runs or after */
	struct offload_job *busy = offload_submit(work_run, work_done, work_free, work_new(50),
						  &tally);
	struct offload_job *queued = offload_submit(work_run, work_done, work_free, work_new(0),
						    &tally);
	offload_cancel(queued);
	struct offload_job *later = offload_submit(work_run, work_done, work_free, work_new(300),
						   &tally);
	assert_non_null(busy);
	loop_until_done(base, 1);
	offload_cancel(later);
	offload_cancel(NULL);
	/* the worker finishes the last (it sleeps 300 ms), then the loop sees it */
	usleep(500 * 1000);
	event_base_loop(base, EVLOOP_NONBLOCK);
	assert_int_equal(tally.done, 1);
	assert_int_equal(tally.freed, 2);
	offload_stop();
	event_base_free(base);
}

static void test_stop_frees_what_is_left(void **state)
{
	(void)state;
	struct event_base *base = event_base_new();
	assert_int_equal(offload_start(base, 1), 0);
	for (int i = 0; i < 5; i++)
		offload_submit(work_run, work_done, work_free, work_new(20), &tally);
	offload_stop(); /* the loop never ran: nothing is reported */
	assert_int_equal(tally.done, 0);
	assert_int_equal(tally.freed, 5);
	event_base_free(base);
}

static void test_without_workers_runs_at_once(void **state)
{
	(void)state;
	assert_false(offload_running());
	assert_null(offload_submit(work_run, work_done, work_free, work_new(0), &tally));
	assert_int_equal(tally.done, 1);
	assert_true(tally.last->ran);
	assert_true(pthread_equal(tally.last->ran_on, tally.loop_thread));
	assert_int_equal(tally.freed, 0);
}

static void test_bad_starts_refused(void **state)
{
	(void)state;
	struct event_base *base = event_base_new();
	assert_int_equal(offload_start(base, 0), -1);
	assert_int_equal(offload_start(base, 1), 0);
	assert_int_equal(offload_start(base, 1), -1); /* once */
	offload_stop();
	offload_stop(); /* twice is harmless */
	event_base_free(base);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup(test_runs_on_a_worker_and_reports_on_the_loop, setup),
		cmocka_unit_test_setup(test_many_jobs_each_reported_once, setup),
		cmocka_unit_test_setup(test_cancelled_job_is_freed_not_reported, setup),
		cmocka_unit_test_setup(test_stop_frees_what_is_left, setup),
		cmocka_unit_test_setup(test_without_workers_runs_at_once, setup),
		cmocka_unit_test_setup(test_bad_starts_refused, setup),
	};
	int r = cmocka_run_group_tests(tests, NULL, NULL);
	free(tally.last);
	return r;
}

/* offload: worker threads for CPU-heavy work (see offload.h).
 *
 * Jobs wait in a FIFO; a worker takes one, runs it without the lock and
 * puts it on the finished list; the waker wakes the loop, which
 * hands each finished job to its owner, or, when the owner has cancelled
 * it meanwhile, frees its work.  Cancelling only sets a flag: the job
 * leaves through the finished list like any other, so a worker never
 * touches freed memory. */
#include "lib/offload.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "lib/util.h"
#include "lib/waker.h"

enum { OFFLOAD_THREADS_MAX = 8 };

struct offload_job {
	offload_run_fn run;
	offload_done_fn done;
	offload_free_fn destroy;
	void *work;
	void *owner;
	bool cancelled;                 /* under the lock */
	struct offload_job *next;
};

static struct {
	pthread_mutex_t lock;
	pthread_cond_t wake;            /* a job queued, or stopping */
	pthread_t threads[OFFLOAD_THREADS_MAX];
	unsigned nthreads;
	bool running, stopping;
	struct offload_job *queued, **queued_tail; /* FIFO, not yet taken */
	struct offload_job *finished, **finished_tail;
	struct waker *waker;
} ol = {.lock = PTHREAD_MUTEX_INITIALIZER};

static void offload_append(struct offload_job ***tail, struct offload_job *j)
{
	j->next = NULL;
	**tail = j;
	*tail = &j->next;
}

static struct offload_job *offload_pop(struct offload_job **head, struct offload_job ***tail)
{
	struct offload_job *j = *head;
	if (j) {
		*head = j->next;
		if (!*head)
			*tail = head;
	}
	return j;
}

static void *offload_worker(void *unused)
{
	(void)unused;
	pthread_mutex_lock(&ol.lock);
	for (;;) {
		while (!ol.queued && !ol.stopping)
			pthread_cond_wait(&ol.wake, &ol.lock);
		if (ol.stopping)
			break;
		struct offload_job *j = offload_pop(&ol.queued, &ol.queued_tail);
		bool skip = j->cancelled;
		pthread_mutex_unlock(&ol.lock);
		if (!skip)
			j->run(j->work);
		pthread_mutex_lock(&ol.lock);
		bool was_empty = !ol.finished;
		offload_append(&ol.finished_tail, j);
		if (was_empty)
			(void)waker_wake(ol.waker); /* only a closed pipe fails: not while running */
	}
	pthread_mutex_unlock(&ol.lock);
	return NULL;
}

static void offload_free_job(struct offload_job *j)
{
	if (j->destroy)
		j->destroy(j->work);
	free(j);
}

/* On the loop: every finished job to its owner, or freed if cancelled. */
static void offload_finished(void *unused)
{
	(void)unused;
	pthread_mutex_lock(&ol.lock);
	struct offload_job *list = ol.finished;
	ol.finished = NULL;
	ol.finished_tail = &ol.finished;
	pthread_mutex_unlock(&ol.lock);
	while (list) {
		struct offload_job *j = list;
		list = j->next;
		/* cancel and done both run on this thread: no lock needed now
		 * that no worker holds j */
		if (j->cancelled) {
			offload_free_job(j);
		} else {
			offload_done_fn done = j->done;
			void *owner = j->owner, *work = j->work;
			free(j);
			done(owner, work);
		}
	}
}

static int offload_spawn(unsigned n)
{
	int e = 0;
	for (ol.nthreads = 0; ol.nthreads < n; ol.nthreads++)
		if ((e = thread_start(&ol.threads[ol.nthreads], offload_worker, NULL)) != 0)
			break;
	return e;
}

static void offload_join_all(void)
{
	pthread_mutex_lock(&ol.lock);
	ol.stopping = true;
	pthread_cond_broadcast(&ol.wake);
	pthread_mutex_unlock(&ol.lock);
	for (unsigned i = 0; i < ol.nthreads; i++) {
		int e = pthread_join(ol.threads[i], NULL);
		if (e != 0)
			fatal("pthread_join: %s", strerror(e));
	}
	ol.nthreads = 0;
}

int offload_start(struct event_base *base, unsigned nthreads)
{
	if (ol.running || nthreads == 0) {
		errno = ol.running ? EBUSY : EINVAL;
		return -1;
	}
	if (nthreads > OFFLOAD_THREADS_MAX)
		nthreads = OFFLOAD_THREADS_MAX;
	if (!(ol.waker = waker_new(base, offload_finished, NULL)))
		return -1;
	if (pthread_cond_init(&ol.wake, NULL) != 0) {
		waker_free(ol.waker);
		ol.waker = NULL;
		errno = ENOMEM;
		return -1;
	}
	ol.queued = ol.finished = NULL;
	ol.queued_tail = &ol.queued;
	ol.finished_tail = &ol.finished;
	ol.stopping = false;
	int e = offload_spawn(nthreads);
	if (e != 0) {
		offload_join_all();
		pthread_cond_destroy(&ol.wake);
		waker_free(ol.waker);
		ol.waker = NULL;
		errno = e;
		return -1;
	}
	ol.running = true;
	return 0;
}

void offload_stop(void)
{
	if (!ol.running)
		return;
	offload_join_all();
	/* no worker left: what is queued or finished is nobody's now */
	struct offload_job *j;
	while ((j = offload_pop(&ol.queued, &ol.queued_tail)))
		offload_free_job(j);
	while ((j = offload_pop(&ol.finished, &ol.finished_tail)))
		offload_free_job(j);
	pthread_cond_destroy(&ol.wake);
	waker_free(ol.waker);
	ol.waker = NULL;
	ol.running = false;
}

bool offload_running(void)
{
	return ol.running;
}

struct offload_job *offload_submit(offload_run_fn run, offload_done_fn done,
				   offload_free_fn destroy, void *work, void *owner)
{
	if (!ol.running) { /* tools, unit tests: here and now */
		run(work);
		done(owner, work);
		return NULL;
	}
	struct offload_job *j = xcalloc(1, sizeof *j);
	j->run = run;
	j->done = done;
	j->destroy = destroy;
	j->work = work;
	j->owner = owner;
	pthread_mutex_lock(&ol.lock);
	offload_append(&ol.queued_tail, j);
	pthread_cond_signal(&ol.wake);
	pthread_mutex_unlock(&ol.lock);
	return j;
}

void offload_cancel(struct offload_job *job)
{
	if (!job)
		return;
	pthread_mutex_lock(&ol.lock);
	job->cancelled = true;
	pthread_mutex_unlock(&ol.lock);
}

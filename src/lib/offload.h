/* offload: CPU-heavy work (a password's PBKDF2) on worker threads, so that
 * the event loop never waits for it.  A job's run() goes to a worker; its
 * done() comes back on the loop's thread.  Used by every protocol's login. */
#ifndef POSTHORN_OFFLOAD_H
#define POSTHORN_OFFLOAD_H

#include <stdbool.h>

struct event_base;
struct offload_job;

typedef void (*offload_run_fn)(void *work);              /* on a worker */
typedef void (*offload_done_fn)(void *owner, void *work); /* on the loop; owns work */
typedef void (*offload_free_fn)(void *work);             /* a cancelled job's work */

/* Start nthreads workers whose jobs finish on base's loop.  0, or -1 with
 * errno. */
int offload_start(struct event_base *base, unsigned nthreads);
/* Stop the workers (after every owner has cancelled its jobs): jobs still
 * queued are freed without running. */
void offload_stop(void);
bool offload_running(void);

/* run(work) on a worker, then done(owner, work) on the loop's thread, which
 * from then on owns work.  Without workers (tools, unit tests) both run
 * before it returns NULL: set what done() reads first. */
struct offload_job *offload_submit(offload_run_fn run, offload_done_fn done,
				   offload_free_fn destroy, void *work, void *owner);
/* The owner goes away: done() is never called; destroy(work) runs once
 * the worker is through with it.  On the loop's thread, before done(). */
void offload_cancel(struct offload_job *job);

#endif

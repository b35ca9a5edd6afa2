/* waker: another thread wakes the event loop.  One byte down a pipe whose
 * read end is an event on the loop; the callback runs on the loop's thread
 * with the pipe drained, and then takes whatever the thread left for it
 * (under that thread's own lock).  Used by the spool's commit thread, the
 * delivery thread's hand-over to the outbound runner and the password
 * workers. */
#ifndef POSTHORN_WAKER_H
#define POSTHORN_WAKER_H

struct event_base;
struct waker;

/* NULL with errno when no pipe can be made. */
struct waker *waker_new(struct event_base *base, void (*cb)(void *arg), void *arg);
/* From any thread; never blocks (a full pipe already holds a wake-up).
 * 0, or -1 with errno on an error other than a full pipe. */
int waker_wake(struct waker *w);
void waker_free(struct waker *w);

#endif

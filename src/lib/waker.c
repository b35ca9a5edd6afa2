/* waker: another thread wakes the event loop (see waker.h). */
#define _GNU_SOURCE /* pipe2 */
#include "lib/waker.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include <event2/event.h>

#include "lib/util.h"

enum { WAKER_DRAIN = 256 };

struct waker {
	int pipe_r, pipe_w;
	struct event *ev;
	void (*cb)(void *arg);
	void *arg;
};

static void waker_ready(evutil_socket_t fd, short what, void *arg)
{
	(void)what;
	struct waker *w = arg;
	char buf[WAKER_DRAIN];
	/* a short read leaves the pipe empty (the loop comes back if not) */
	while (read(fd, buf, sizeof buf) == (ssize_t)sizeof buf)
		;
	w->cb(w->arg);
}

struct waker *waker_new(struct event_base *base, void (*cb)(void *arg), void *arg)
{
	int fds[2];
	if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) < 0)
		return NULL;
	struct waker *w = xcalloc(1, sizeof *w);
	w->pipe_r = fds[0];
	w->pipe_w = fds[1];
	w->cb = cb;
	w->arg = arg;
	w->ev = event_new(base, w->pipe_r, EV_READ | EV_PERSIST, waker_ready, w);
	if (!w->ev || event_add(w->ev, NULL) < 0) {
		waker_free(w);
		errno = ENOMEM;
		return NULL;
	}
	return w;
}

int waker_wake(struct waker *w)
{
	if (write(w->pipe_w, "w", 1) < 0 && errno != EAGAIN)
		return -1;
	return 0;
}

void waker_free(struct waker *w)
{
	if (!w)
		return;
	if (w->ev)
		event_free(w->ev);
	close(w->pipe_r);
	close(w->pipe_w);
	free(w);
}

/* proxy_wait: the PROXY header off the socket, bounded in size
 * (PROXY_HEADER_MAX) and time, without reading past its end. */
#include "net/proxy_wait.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>

#include "lib/util.h"

struct proxy_wait {
	int fd;
	struct event *ev;            /* readable */
	struct event *deadline;      /* for the whole header: trickled octets do not move it */
	proxy_wait_done *done;
	void *arg;
	size_t have;                 /* octets of the header taken so far */
	uint8_t buf[PROXY_HEADER_MAX];
};

static void proxy_wait_free(struct proxy_wait *w)
{
	event_free(w->ev);
	event_free(w->deadline);
	free(w);
}

/* Free the wait, then report: the callback may start a session at once. */
static void proxy_wait_finish(struct proxy_wait *w, const struct proxy_header *h, const char *why)
{
	proxy_wait_done *done = w->done;
	void *arg = w->arg;
	int fd = w->fd;
	proxy_wait_free(w);
	if (!h)
		close(fd);
	done(arg, fd, h, why);
}

/* Take n octets the peek showed from the socket into buf.  They are
 * there, so only a broken socket takes fewer. */
static bool proxy_wait_take(struct proxy_wait *w, size_t n)
{
	ssize_t got = recv(w->fd, w->buf + w->have, n, MSG_DONTWAIT);
	if (got < 0 || (size_t)got != n)
		return false;
	w->have += n;
	return true;
}

/* Peek at what has arrived after the octets taken; take those that are
 * certainly the header's: all of them while it is incomplete (a v1 line
 * before its LF, a v2 header before its length is reached), exactly up to
 * its end once it is complete. */
static void proxy_wait_readable(evutil_socket_t fd, short what, void *arg)
{
	struct proxy_wait *w = arg;
	ssize_t n = recv(w->fd, w->buf + w->have, sizeof w->buf - w->have, MSG_PEEK | MSG_DONTWAIT);
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
		return;
	if (n <= 0) {
		proxy_wait_finish(w, NULL, n == 0 ? "closed" : "read-error");
		return;
	}
	struct proxy_header h;
	const char *why;
	switch (proxy_parse(w->buf, w->have + (size_t)n, &h, &why)) {
	case PROXY_NEED_MORE:
		if (!proxy_wait_take(w, (size_t)n))
			proxy_wait_finish(w, NULL, "read-error");
		return;
	case PROXY_DONE:
		if (!proxy_wait_take(w, h.length - w->have))
			proxy_wait_finish(w, NULL, "read-error");
		else
			proxy_wait_finish(w, &h, NULL);
		return;
	case PROXY_BAD:
		proxy_wait_finish(w, NULL, why);
		return;
	}
}

static void proxy_wait_expired(evutil_socket_t fd, short what, void *arg)
{
	proxy_wait_finish(arg, NULL, "timeout");
}

struct proxy_wait *proxy_wait_start(struct event_base *base, int fd, unsigned timeout,
				    proxy_wait_done *done, void *arg)
{
	struct proxy_wait *w = xcalloc(1, sizeof *w);
	w->fd = fd;
	w->done = done;
	w->arg = arg;
	w->ev = event_new(base, fd, EV_READ | EV_PERSIST, proxy_wait_readable, w);
	w->deadline = evtimer_new(base, proxy_wait_expired, w);
	if (!w->ev || !w->deadline)
		fatal("event_new failed");
	struct timeval tv = {.tv_sec = timeout};
	if (event_add(w->ev, NULL) < 0 || evtimer_add(w->deadline, &tv) < 0)
		fatal("event_add failed");
	return w;
}

void proxy_wait_cancel(struct proxy_wait *w)
{
	close(w->fd);
	proxy_wait_free(w);
}

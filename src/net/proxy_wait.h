/* proxy_wait: read the PROXY header (net/proxy.h) off a new connection
 * before anything else is read or sent, within a deadline, taking exactly
 * the header's octets from the socket: what the client sends after it
 * (an SMTP command, a TLS ClientHello) stays in the socket for the
 * session. */
#ifndef POSTHORN_PROXY_WAIT_H
#define POSTHORN_PROXY_WAIT_H

#include "net/proxy.h"

struct event_base;
struct proxy_wait;

/* h: the header, or NULL when none came whole: then why says what
 * happened ("timeout", "closed", "read-error" or proxy_parse()'s reason)
 * and the socket is closed already.  With a header the caller owns fd.
 * The wait is freed before this is called. */
typedef void proxy_wait_done(void *arg, int fd, const struct proxy_header *h, const char *why);

/* Start waiting on fd (non-blocking; taken over) for at most timeout
 * seconds; done is called once, never from inside this call. */
struct proxy_wait *proxy_wait_start(struct event_base *base, int fd, unsigned timeout,
				    proxy_wait_done *done, void *arg);

/* Stop waiting and close fd; done is not called. */
void proxy_wait_cancel(struct proxy_wait *w);

#endif

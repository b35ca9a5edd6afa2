/* conn: the transport of one client connection, for every protocol:
 * a libevent bufferevent, plain or TLS (implicit TLS on connect, RFC 8314,
 * or STARTTLS/STLS later, RFC 3207/2595), bounded input and output, the
 * idle timeout, and closing after the last reply has left.  The protocol
 * session above it owns the conn and is told what happens through a
 * table of callbacks. */
#ifndef POSTHORN_CONN_H
#define POSTHORN_CONN_H

#include <stdbool.h>
#include <stddef.h>

struct event_base;
struct evbuffer;
struct tls_server;
struct conf_tls;
struct conn;

#include <stdarg.h>

enum {
	CONN_INPUT_MAX = 64 * 1024,   /* socket reads pause above this */
	CONN_OUTPUT_MAX = 64 * 1024,  /* sessions stop reading commands above this */
	/* Octets one SSL_read may return.  Between commands: with libevent's
	 * chain header this fits one 1 KiB allocation, which libevent keeps
	 * reserved while the session is idle.  While the client streams (a
	 * read filled the small size): libevent's default, a whole TLS
	 * record, so that a message arrives in few large chains. */
	CONN_TLS_READ_IDLE = 1024 - 128,
	CONN_TLS_READ_BULK = 16 * 1024,
	/* One reply line of conn_printf(), its CRLF included: the longest
	 * line of text that RFC 5321 §4.5.3.1.6 allows, and far more than
	 * any reply posthorn makes (RFC 5321 §4.5.3.1.5 asks for 512 at
	 * most; RFC 1939 §3 the same for POP3). */
	CONN_REPLY_MAX = 1000,
};

struct conn_handler {
	/* New input may be there (also called after conn_resume()). */
	void (*input)(void *owner);
	/* The output buffer drained below CONN_OUTPUT_MAX / to empty. */
	void (*drained)(void *owner);
	/* TLS is up and meets the policy (conn_tls_desc() says what). */
	void (*tls_ready)(void *owner);
	/* Idle for the configured time: say goodbye and conn_close(). */
	void (*timeout)(void *owner);
	/* The connection is gone (peer closed, error, failed handshake) or
	 * conn_close() finished: the owner frees itself, and the conn with it
	 * (conn_free). */
	void (*closed)(void *owner);
};

struct conn_params {
	struct event_base *base;
	int fd;                      /* taken over */
	struct tls_server *ts;       /* NULL: no TLS possible */
	const struct conf_tls *policy;
	bool implicit_tls;           /* handshake before anything else */
	unsigned timeout;            /* seconds idle */
	const char *log_id;          /* "session=... server=... client=..." */
};

/* NULL when TLS cannot be set up (fd closed then). */
struct conn *conn_new(const struct conn_params *p, const struct conn_handler *h, void *owner);
void conn_free(struct conn *c);

struct evbuffer *conn_input(struct conn *c);
void conn_write(struct conn *c, const void *data, size_t len);
/* printf, then CRLF.  A reply never leaves cut: one longer than
 * CONN_REPLY_MAX is not sent, logged as event=reply-too-long (counted),
 * and the connection closes after what was sent before it; so does a
 * reply that cannot be queued.  After that conn_closing() is true and
 * nothing more is sent. */
void conn_printf(struct conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void conn_vprintf(struct conn *c, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));
/* Replies refused as too long since the process started. */
unsigned long conn_reply_too_long_count(void);
size_t conn_output_pending(struct conn *c);
/* Is the output so full that the session should stop taking commands? */
bool conn_output_full(struct conn *c);

/* Start TLS over the plain connection: what the client sent before the
 * handshake is thrown away (CVE-2011-0411); the caller has queued its
 * "go ahead" reply already.  tls_ready or closed follows. */
bool conn_starttls(struct conn *c);
bool conn_handshaking(const struct conn *c);
bool conn_tls_active(const struct conn *c);
const char *conn_tls_desc(const struct conn *c); /* NULL before TLS */

/* The client is about to send more of a command (a literal after "+ ",
 * or the rest of one that arrived in part): acknowledge its next segments
 * at once instead of after the delayed-ACK timer (tcp(7) TCP_QUICKACK).
 * A client that writes a literal and the CRLF after it in two calls, with
 * Nagle's algorithm on, holds the CRLF back until the literal is
 * acknowledged: about 40 ms per command otherwise.  Linux leaves the
 * quick-ACK mode by itself after a few segments, so callers ask again
 * each time they wait for more; it is asked again once the replies being
 * held have left, as sending can put the socket back into delayed ACKs. */
void conn_quickack(struct conn *c);

/* Stop reading; when every byte written so far has left, call closed. */
void conn_close(struct conn *c);
bool conn_closing(const struct conn *c);

#endif

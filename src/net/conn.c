/* conn: one client connection's transport — plain or TLS bufferevents,
 * STARTTLS (RFC 3207, RFC 2595) and implicit TLS (RFC 8314), bounded
 * buffers, idle timeout, close after flush.  Shared by every protocol. */
#include "net/conn.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "lib/log.h"
#include "lib/metrics.h"
#include "lib/strbuf.h"
#include "lib/util.h"
#include "net/tls.h"

enum {
	CONN_UNREAD_MAX = 256 * 1024, /* discarded at close, at most */
	CONN_LINGER_MS = 20,         /* polling the TLS filter's socket side */
	CONN_LINGER_TICKS = 250,     /* at most 5 s */
};

/* Replies too long to send (conn_printf), since the start: each is a bug
 * somewhere above, counted in the log line that reports it. */
static unsigned long conn_replies_too_long;

struct conn {
	struct bufferevent *bev;
	struct event_base *base;
	struct tls_server *ts;
	const struct conf_tls *policy;
	unsigned timeout;
	char *log_id;
	const struct conn_handler *h;
	void *owner;
	bool handshaking;
	bool tls_active;
	size_t tls_read_max;         /* what one SSL_read may return now */
	bool closing;
	bool gone;                   /* closed was reported */
	bool notified;               /* TLS close_notify sent */
	char *tls_desc;
	struct event *linger;
	unsigned linger_ticks;
	/* A client that trickles a byte every few seconds resets a per-read
	 * timeout forever (slowloris); this deadline moves only when a line
	 * end arrives, so every line must be complete within the timeout. */
	struct event *line_deadline;
	size_t scanned;              /* input bytes already searched for LF */
	/* Replies made while the session reads its input are held and leave
	 * together when it is done (one write, not one per pipelined command) */
	bool in_input;
	struct evbuffer *held;
	/* A reply could not be sent whole: nothing after it is sent either
	 * (the client would take a later reply for the missing one). */
	bool failed;
	/* conn_quickack() was asked while replies were held or queued: asked
	 * of the socket again once they have left */
	bool quickack_again;
};

static void conn_flush_held(struct conn *c);
static void conn_queue_failed(struct conn *c);

/* What the client sent and nobody will read, taken from the socket: a
 * close with unread bytes sends a reset, and a reset throws away replies
 * the kernel still holds (small writes wait there a moment to be sent
 * together), such as the 421 before the close. */
static void conn_discard_unread(struct conn *c)
{
	int fd = bufferevent_getfd(c->bev);
	char buf[16 * 1024];
	for (size_t total = 0; fd >= 0 && total < CONN_UNREAD_MAX;) {
		ssize_t n = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
		if (n <= 0)
			break;
		total += (size_t)n;
	}
}

static void conn_report_closed(struct conn *c)
{
	if (c->gone)
		return;
	c->gone = true;
	if (c->closing)
		conn_discard_unread(c);
	c->h->closed(c->owner);
}

/* ---- closing ------------------------------------------------------------ */

/* Bytes the TLS filter has encrypted but the socket has not yet taken. */
static size_t conn_unsent_below(const struct conn *c)
{
	struct bufferevent *under = bufferevent_get_underlying(c->bev);
	return under ? evbuffer_get_length(bufferevent_get_output(under)) : 0;
}

static void conn_linger(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;
	if (conn_unsent_below(c) == 0 || ++c->linger_ticks >= CONN_LINGER_TICKS) {
		conn_report_closed(c);
		return;
	}
	struct timeval tv = {.tv_usec = CONN_LINGER_MS * 1000};
	evtimer_add(c->linger, &tv);
}

/* Report closed once what TLS wrote below the filter has left too (the
 * last reply, a close_notify, or the alert of a failed handshake). */
static void conn_finish(struct conn *c)
{
	if (c->linger)
		return;
	if (conn_unsent_below(c) == 0) {
		conn_report_closed(c);
		return;
	}
	/* after STARTTLS the last reply may still sit below the filter */
	c->linger = evtimer_new(c->base, conn_linger, c);
	conn_linger(-1, 0, c);
}

static void conn_closing_drained(struct conn *c)
{
	if (evbuffer_get_length(bufferevent_get_output(c->bev)) > 0)
		return;
	SSL *ssl = bufferevent_openssl_get_ssl(c->bev);
	if (ssl && c->tls_active && !c->notified) {
		/* RFC 8446 §6.1: say goodbye inside TLS, after the last reply */
		c->notified = true;
		SSL_shutdown(ssl);
		ERR_clear_error();
	}
	conn_finish(c);
}

void conn_close(struct conn *c)
{
	if (c->closing)
		return;
	conn_flush_held(c);
	c->closing = true;
	bufferevent_disable(c->bev, EV_READ);
	if (evbuffer_get_length(bufferevent_get_output(c->bev)) == 0)
		bufferevent_trigger(c->bev, EV_WRITE, BEV_TRIG_IGNORE_WATERMARKS);
}

bool conn_closing(const struct conn *c)
{
	return c->closing;
}

/* ---- events ------------------------------------------------------------- */

static void conn_arm_deadline(struct conn *c)
{
	struct timeval tv = {.tv_sec = c->timeout};
	evtimer_add(c->line_deadline, &tv);
}

/* Did a line end arrive since the last look?  Only the new bytes are
 * searched, so the cost is linear in what the client sends. */
static bool conn_new_line_end(struct conn *c)
{
	struct evbuffer *in = bufferevent_get_input(c->bev);
	size_t len = evbuffer_get_length(in);
	if (c->scanned > len)
		c->scanned = 0;
	if (len == c->scanned)
		return false;
	struct evbuffer_ptr pos;
	if (evbuffer_ptr_set(in, &pos, c->scanned, EVBUFFER_PTR_SET) < 0)
		return true;
	c->scanned = len;
	return evbuffer_search(in, "\n", 1, &pos).pos >= 0;
}

/* The TCP socket under the connection (below a STARTTLS filter too). */
static int conn_socket_fd(const struct conn *c)
{
	struct bufferevent *under = bufferevent_get_underlying(c->bev);
	return bufferevent_getfd(under ? under : c->bev);
}

static void conn_quickack_now(struct conn *c)
{
	int fd = conn_socket_fd(c);
	int one = 1;
	/* a hint to the kernel: a socket that refuses it only acknowledges later */
	if (fd >= 0)
		(void)setsockopt(fd, IPPROTO_TCP, TCP_QUICKACK, &one, sizeof one);
}

void conn_quickack(struct conn *c)
{
	if (c->closing)
		return;
	conn_quickack_now(c);
	c->quickack_again = conn_output_pending(c) > 0;
}

/* Replies have left: a quick ACK asked before them is asked again. */
static void conn_quickack_after_send(struct conn *c)
{
	if (!c->quickack_again || c->closing)
		return;
	c->quickack_again = false;
	conn_quickack_now(c);
}

static void conn_tls_read_size(struct conn *c, size_t n)
{
	if (c->tls_read_max == n)
		return;
	if (bufferevent_set_max_single_read(c->bev, n) != 0)
		fatal("cannot size the TLS reads");
	c->tls_read_max = n;
}

/* A TLS session whose input is all taken goes back to small reads, and
 * its input buffer gives back the space libevent reserved for an SSL_read
 * that found nothing (a chain of the read size): evbuffer_drain() frees
 * every chain only when it takes all the data of a buffer that has some,
 * so one octet is added and taken back.  A plain socket's reads size
 * their space to what arrived. */
static void conn_release_input_space(struct conn *c)
{
	struct evbuffer *in = bufferevent_get_input(c->bev);
	if (!c->tls_active || evbuffer_get_length(in) != 0)
		return;
	conn_tls_read_size(c, CONN_TLS_READ_IDLE);
	if (evbuffer_add(in, "", 1) == 0)
		(void)evbuffer_drain(in, 1); /* cannot fail: the buffer is not frozen */
}

static void conn_read_cb(struct bufferevent *bev, void *arg)
{
	struct conn *c = arg;
	if (conn_new_line_end(c))
		conn_arm_deadline(c);
	if (c->tls_active && evbuffer_get_length(bufferevent_get_input(c->bev)) >= c->tls_read_max)
		conn_tls_read_size(c, CONN_TLS_READ_BULK); /* the client streams */
	c->in_input = true;
	c->h->input(c->owner);
	c->in_input = false;
	conn_flush_held(c);
	if (evbuffer_get_length(bufferevent_get_output(c->bev)) == 0)
		conn_quickack_after_send(c);
	/* what the session left in the buffer has been searched already */
	c->scanned = evbuffer_get_length(bufferevent_get_input(c->bev));
	conn_release_input_space(c);
}

static void conn_write_cb(struct bufferevent *bev, void *arg)
{
	struct conn *c = arg;
	conn_quickack_after_send(c);
	if (c->closing)
		conn_closing_drained(c);
	else
		c->h->drained(c->owner);
}

static void conn_tls_established(struct conn *c)
{
	SSL *ssl = bufferevent_openssl_get_ssl(c->bev);
	char why[256], desc[TLS_DESCRIBE_MAX];
	c->handshaking = false;
	if (!tls_session_acceptable(ssl, c->policy, why, sizeof why)) {
		log_info("event=tls-refused %s reason=\"%s\"", c->log_id, why);
		metrics_count(METRIC_TLS_HANDSHAKES, METRIC_LABELS("refused", SSL_get_version(ssl)));
		conn_report_closed(c);
		return;
	}
	tls_describe(ssl, desc, sizeof desc);
	free(c->tls_desc);
	c->tls_desc = xstrdup(desc);
	c->tls_active = true;
	log_info("event=tls %s tls=\"%s\"", c->log_id, desc);
	/* OpenSSL's names of the protocol versions: a fixed set */
	metrics_count(METRIC_TLS_HANDSHAKES, METRIC_LABELS("ok", SSL_get_version(ssl)));
	conn_release_input_space(c);
	c->h->tls_ready(c->owner);
}

static void conn_tls_failed(struct conn *c, short what)
{
	unsigned long e = bufferevent_get_openssl_error(c->bev);
	const char *reason = e ? ERR_reason_error_string(e) : NULL;
	if (!reason)
		reason = (what & BEV_EVENT_TIMEOUT) ? "timeout"
			 : (what & BEV_EVENT_EOF)   ? "client closed"
						    : "handshake failed";
	log_info("event=tls-failed %s reason=\"%s\"", c->log_id, reason);
	metrics_count(METRIC_TLS_HANDSHAKES, METRIC_LABELS("failed", "none"));
	while (bufferevent_get_openssl_error(c->bev))
		; /* this connection's errors must not leak into the next one */
	c->handshaking = false;
	c->closing = true;
	bufferevent_disable(c->bev, EV_READ);
	conn_finish(c); /* the alert that says why goes out first */
}

static void conn_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct conn *c = arg;
	if (c->handshaking) {
		if (what & BEV_EVENT_CONNECTED)
			conn_tls_established(c);
		else
			conn_tls_failed(c, what);
		return;
	}
	/* a write timeout (the client stopped reading) ends it at once */
	if (what & BEV_EVENT_ERROR)
		log_debug("event=socket-error %s error=\"%s\"", c->log_id,
			  evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
	conn_report_closed(c);
}

static void conn_deadline_passed(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;
	if (c->closing || c->gone)
		return;
	if (c->handshaking) {
		conn_tls_failed(c, BEV_EVENT_TIMEOUT);
		return;
	}
	c->h->timeout(c->owner);
}

static void conn_setup(struct conn *c)
{
	if (!c->line_deadline)
		c->line_deadline = evtimer_new(c->base, conn_deadline_passed, c);
	c->scanned = 0;
	conn_arm_deadline(c);
	bufferevent_setcb(c->bev, conn_read_cb, conn_write_cb, conn_event_cb, c);
	bufferevent_setwatermark(c->bev, EV_READ, 0, CONN_INPUT_MAX);
	/* reading is timed by the line deadline alone (two read timers would
	 * race: the second would close the session before its 421 left) */
	struct timeval tv = {.tv_sec = c->timeout};
	bufferevent_set_timeouts(c->bev, NULL, &tv);
	bool tls = bufferevent_openssl_get_ssl(c->bev) != NULL;
	bufferevent_enable(c->bev, tls ? EV_READ | EV_WRITE : EV_READ);
}

/* A bufferevent sends what is queued in it only with EV_WRITE enabled, and
 * enabling it arms the write event at once.  A plain connection enables
 * it when the first bytes are queued (conn_direct() could not send them),
 * not at its start: a session whose replies all leave directly never arms
 * it (for the greeting alone: two epoll_ctl calls and a pass of the loop). */
static void conn_queue_writable(struct conn *c)
{
	if (!(bufferevent_get_enabled(c->bev) & EV_WRITE))
		bufferevent_enable(c->bev, EV_WRITE);
}

/* STARTTLS on the socket itself: the plain bufferevent goes (its socket
 * stays open for TLS), so that an idle session holds one bufferevent, not
 * a TLS filter over a plain one with its buffers and events. */
static void conn_plain_release(struct conn *c)
{
	if (bufferevent_setfd(c->bev, -1) != 0)
		fatal("cannot detach the socket from its plain bufferevent");
	bufferevent_free(c->bev);
	c->bev = NULL;
}

/* Put TLS under the session: over the socket (fd >= 0: implicit TLS, or
 * STARTTLS once the plain side has sent everything) or as a filter over
 * the plain connection (STARTTLS while its reply is still queued). */
static bool conn_tls_wrap(struct conn *c, int fd)
{
	SSL *ssl = tls_server_ssl(c->ts);
	if (!ssl)
		return false;
	if (fd >= 0 && c->bev)
		conn_plain_release(c);
	const int opts = BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS;
	struct bufferevent *bev =
	    fd >= 0 ? bufferevent_openssl_socket_new(c->base, fd, ssl, BUFFEREVENT_SSL_ACCEPTING, opts)
		    : bufferevent_openssl_filter_new(c->base, c->bev, ssl, BUFFEREVENT_SSL_ACCEPTING,
						     opts);
	if (!bev) /* libevent's failure path leaves the SSL's owner unclear */
		fatal("cannot create a TLS bufferevent");
	/* many clients close without close_notify; that is no error here */
	bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
	/* each SSL_read gets a buffer of this size (libevent's default, 16 KiB,
	 * rounds up to a 32 KiB allocation, which an idle session would keep) */
	if (bufferevent_set_max_single_read(bev, CONN_TLS_READ_IDLE) != 0)
		fatal("cannot size the TLS reads");
	c->tls_read_max = CONN_TLS_READ_IDLE;
	/* After STARTTLS the filter writes into the plain bufferevent; its
	 * high write watermark is what keeps that buffer bounded. */
	if (fd < 0)
		bufferevent_setwatermark(c->bev, EV_WRITE, 0, CONN_OUTPUT_MAX);
	c->bev = bev;
	c->handshaking = true;
	conn_setup(c);
	return true;
}

bool conn_starttls(struct conn *c)
{
	if (!c->ts || c->tls_active || c->handshaking)
		return false;
	conn_flush_held(c); /* the reply to STARTTLS, in the clear */
	/* Anything pipelined after the command came in the clear and must
	 * never count as sent inside TLS (CVE-2011-0411). */
	struct evbuffer *in = bufferevent_get_input(c->bev);
	evbuffer_drain(in, evbuffer_get_length(in));
	if (evbuffer_get_length(bufferevent_get_output(c->bev)) == 0)
		return conn_tls_wrap(c, bufferevent_getfd(c->bev));
	conn_queue_writable(c); /* the TLS filter writes through it, after the reply */
	return conn_tls_wrap(c, -1);
}

/* ---- life ----------------------------------------------------------------- */

struct conn *conn_new(const struct conn_params *p, const struct conn_handler *h, void *owner)
{
	struct conn *c = xcalloc(1, sizeof *c);
	c->base = p->base;
	c->ts = p->ts;
	c->policy = p->policy;
	c->timeout = p->timeout;
	c->log_id = xstrdup(p->log_id);
	c->h = h;
	c->owner = owner;
	if (p->implicit_tls) {
		if (!c->ts || !conn_tls_wrap(c, p->fd)) {
			log_err("event=tls-error %s error=\"no TLS for this listener\"", c->log_id);
			close(p->fd);
			free(c->log_id);
			free(c);
			return NULL;
		}
		return c;
	}
	/* replies leave as soon as they are written (they are written whole:
	 * conn_flush_held), never held back for an ACK (Nagle) */
	int one = 1;
	(void)setsockopt(p->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	c->bev = bufferevent_socket_new(c->base, p->fd, BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
	if (!c->bev)
		fatal("bufferevent_socket_new failed");
	conn_setup(c);
	return c;
}

void conn_free(struct conn *c)
{
	if (!c)
		return;
	if (c->linger)
		event_free(c->linger);
	if (c->line_deadline)
		event_free(c->line_deadline);
	if (c->held)
		evbuffer_free(c->held);
	bufferevent_free(c->bev);
	free(c->tls_desc);
	free(c->log_id);
	free(c);
}

/* ---- data ----------------------------------------------------------------- */

struct evbuffer *conn_input(struct conn *c)
{
	return bufferevent_get_input(c->bev);
}

/* Replies go straight to the socket when nothing waits before them, on a
 * plain connection: they leave in the callback that made them (or, made
 * while the session reads its input, together at its end), without arming
 * the write event and coming back for it (two epoll_ctl calls and a pass of
 * the loop per reply).  What the socket does not take is queued. */
static bool conn_direct(const struct conn *c)
{
	return !c->closing && !c->handshaking && !c->tls_active &&
	       !bufferevent_openssl_get_ssl(c->bev) &&
	       evbuffer_get_length(bufferevent_get_output(c->bev)) == 0;
}

/* All of it gone: the drained callback runs as if the bufferevent had
 * sent it. */
static void conn_sent_all(struct conn *c)
{
	bufferevent_trigger(c->bev, EV_WRITE, BEV_TRIG_DEFER_CALLBACKS);
}

static void conn_flush_held(struct conn *c)
{
	if (!c->held || evbuffer_get_length(c->held) == 0)
		return;
	if (conn_direct(c)) {
		/* a full socket or an error: the bufferevent finds out */
		(void)evbuffer_write(c->held, bufferevent_getfd(c->bev));
		if (evbuffer_get_length(c->held) == 0) {
			conn_sent_all(c);
			return;
		}
	}
	conn_queue_writable(c);
	if (bufferevent_write_buffer(c->bev, c->held) < 0)
		conn_queue_failed(c);
}

/* Nothing more is sent but the whole replies queued before; the
 * connection closes (and the owner hears of it through closed) once they
 * have left.  The caller has logged why. */
static void conn_fail(struct conn *c)
{
	c->failed = true;
	conn_close(c);
}

/* libevent could not take a reply (no memory). */
static void conn_queue_failed(struct conn *c)
{
	if (c->failed)
		return;
	log_err("event=write-error %s error=\"cannot queue a reply\"", c->log_id);
	conn_fail(c);
}

void conn_write(struct conn *c, const void *data, size_t len)
{
	if (c->failed)
		return;
	if (!conn_direct(c)) {
		conn_flush_held(c);
		conn_queue_writable(c);
		if (!c->failed && bufferevent_write(c->bev, data, len) < 0)
			conn_queue_failed(c);
		return;
	}
	if (!c->held && !(c->held = evbuffer_new()))
		fatal("evbuffer_new failed");
	if (evbuffer_add(c->held, data, len) < 0) {
		conn_queue_failed(c);
		return;
	}
	if (!c->in_input)
		conn_flush_held(c);
}

/* A reply that does not fit is a bug above (a value not bounded before
 * it reached the reply): it is neither cut nor sent, and said loudly. */
static void conn_reply_too_long(struct conn *c, int length)
{
	conn_replies_too_long++;
	log_err("event=reply-too-long %s length=%d limit=%d count=%lu", c->log_id, length,
		CONN_REPLY_MAX, conn_replies_too_long);
	conn_fail(c);
}

void conn_vprintf(struct conn *c, const char *fmt, va_list ap)
{
	char line[CONN_REPLY_MAX + 1];
	struct strbuf sb;
	strbuf_init(&sb, line, sizeof line);
	va_list again;
	va_copy(again, ap);
	/* the text and its CRLF, within CONN_REPLY_MAX octets */
	if (strbuf_vaddf(&sb, fmt, ap) && strbuf_add(&sb, "\r\n", 2)) {
		va_end(again);
		conn_write(c, strbuf_str(&sb), strbuf_len(&sb));
		return;
	}
	int length = vsnprintf(NULL, 0, fmt, again);
	va_end(again);
	conn_reply_too_long(c, length < 0 ? -1 : length + 2);
}

void conn_printf(struct conn *c, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	conn_vprintf(c, fmt, ap);
	va_end(ap);
}

unsigned long conn_reply_too_long_count(void)
{
	return conn_replies_too_long;
}

size_t conn_output_pending(struct conn *c)
{
	return evbuffer_get_length(bufferevent_get_output(c->bev)) +
	       (c->held ? evbuffer_get_length(c->held) : 0);
}

bool conn_output_full(struct conn *c)
{
	return conn_output_pending(c) > CONN_OUTPUT_MAX;
}

bool conn_handshaking(const struct conn *c)
{
	return c->handshaking;
}

bool conn_tls_active(const struct conn *c)
{
	return c->tls_active;
}

const char *conn_tls_desc(const struct conn *c)
{
	return c->tls_desc;
}

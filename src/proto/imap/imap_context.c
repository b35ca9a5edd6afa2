/* imap_context: the states, replies, jobs and mail store errors shared by
 * the files of an IMAP session (see imap_context.h).  RFC 3501 §3
 * (states), §7.1 (status responses), RFC 5530 (response codes). */
#include "proto/imap/imap_context.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "conf/conf.h"
#include "net/conn.h"
#include "lib/log.h"
#include "lib/util.h"

/* ---- states ----------------------------------------------------------------- */

const char *imap_state_name(enum imap_state st)
{
	switch (st) {
	case IMAP_NOTAUTH: return "not-authenticated";
	case IMAP_AUTH: return "authenticated";
	case IMAP_SELECTED: return "selected";
	case IMAP_LOGOUT: return "logout";
	case IMAP_SASL: return "sasl";
	case IMAP_IDLE: return "idle";
	case IMAP_HANDSHAKE: return "handshake";
	case IMAP_CLOSING: return "closing";
	}
	return "?";
}

void imap_enter_state(struct imap_session *s, enum imap_state st)
{
	if (s->state == st)
		return;
	log_debug("event=state session=%s %s->%s", s->b.sid, imap_state_name(s->state),
		  imap_state_name(st));
	s->state = st;
}

void imap_close_after_flush(struct imap_session *s)
{
	imap_enter_state(s, IMAP_CLOSING);
	conn_close(s->io);
}

/* ---- responses being built -------------------------------------------------- */

void imap_out_init(struct imap_out *out)
{
	out->buf = evbuffer_new();
	if (!out->buf)
		fatal("imap: evbuffer_new failed");
	out->failed = false;
}

void imap_out_free(struct imap_out *out)
{
	if (out->buf)
		evbuffer_free(out->buf);
	out->buf = NULL;
}

void imap_out_add(struct imap_out *out, const void *data, size_t len)
{
	if (!out->failed && evbuffer_add(out->buf, data, len) < 0)
		out->failed = true;
}

void imap_out_vprintf(struct imap_out *out, const char *fmt, va_list ap)
{
	if (!out->failed && evbuffer_add_vprintf(out->buf, fmt, ap) < 0)
		out->failed = true;
}

void imap_out_printf(struct imap_out *out, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	imap_out_vprintf(out, fmt, ap);
	va_end(ap);
}

size_t imap_out_len(const struct imap_out *out)
{
	return evbuffer_get_length(out->buf);
}

bool imap_out_full(const struct imap_out *out)
{
	return out->failed || imap_out_len(out) >= IMAP_CHUNK;
}

void imap_out_discard(struct imap_out *out)
{
	evbuffer_drain(out->buf, evbuffer_get_length(out->buf));
}

/* An IMAP string (RFC 3501 §4.3) into the output: quoted when it can be,
 * a literal when it holds CR, LF, NUL-free 8-bit or is long. */
static void imap_put_string(struct imap_out *out, const char *v, size_t len)
{
	bool quotable = len < 1000;
	for (size_t i = 0; quotable && i < len; i++) {
		unsigned char ch = (unsigned char)v[i];
		if (ch == '\r' || ch == '\n' || ch == 0 || ch >= 0x80)
			quotable = false;
	}
	if (!quotable) {
		imap_out_printf(out, "{%zu}\r\n", len);
		imap_out_add(out, v, len);
		return;
	}
	imap_out_add(out, "\"", 1);
	for (size_t i = 0; i < len; i++) {
		if (v[i] == '"' || v[i] == '\\')
			imap_out_add(out, "\\", 1);
		imap_out_add(out, &v[i], 1);
	}
	imap_out_add(out, "\"", 1);
}

void imap_put_mailbox(struct imap_out *out, const char *name)
{
	bool atom = *name != '\0';
	for (const char *p = name; atom && *p; p++) {
		unsigned char ch = (unsigned char)*p;
		atom = ch > 0x20 && ch < 0x7f && !strchr("(){%*\"\\]", ch);
	}
	if (atom)
		imap_out_add(out, name, strlen(name));
	else
		imap_put_string(out, name, strlen(name));
}

/* ---- replies ---------------------------------------------------------------- */

/* Replies whose text was longer than IMAP_REPLY_TEXT_MAX (a bug of ours:
 * every text is the server's own). */
static unsigned long imap_too_long;

unsigned long imap_replies_too_long(void)
{
	return imap_too_long;
}

bool imap_reply_format(struct imap_out *out, const char *tag, const char *status,
		       const char *fmt, va_list ap)
{
	va_list measure;
	va_copy(measure, ap);
	int n = vsnprintf(NULL, 0, fmt, measure);
	va_end(measure);
	if (n < 0)
		fatal("imap: formatting a reply failed");
	if ((size_t)n > IMAP_REPLY_TEXT_MAX)
		return false;
	imap_out_printf(out, "%s %s ", tag, status);
	imap_out_vprintf(out, fmt, ap);
	imap_out_add(out, "\r\n", 2);
	return true;
}

void imap_reply(struct imap_session *s, const char *status, const char *fmt, ...)
{
	struct imap_out out;
	imap_out_init(&out);
	va_list ap;
	va_start(ap, fmt);
	bool fits = imap_reply_format(&out, s->tag, status, fmt, ap);
	va_end(ap);
	if (!fits) {
		imap_too_long++;
		log_err("event=reply-too-long session=%s server=%s client=%s status=%s limit=%d "
			"count=%lu", s->b.sid, s->b.srv->name, s->b.client, status,
			IMAP_REPLY_TEXT_MAX, imap_too_long);
		imap_out_printf(&out, "%s %s The response is too long; see the server log\r\n",
				s->tag, status);
	}
	imap_send(s, &out);
	imap_out_free(&out);
}

void imap_count_error(struct imap_session *s)
{
	if (++s->errors < IMAP_MAX_ERRORS || s->state == IMAP_CLOSING)
		return;
	conn_printf(s->io, "* BYE Too many invalid commands");
	imap_close_after_flush(s);
}

void imap_bad(struct imap_session *s, const char *text)
{
	imap_reply(s, "BAD", "%s", text);
	imap_count_error(s);
}

/* A response could not be built: the client gets none of it, the
 * session ends after what was sent before (as conn.c does with a reply it
 * cannot queue).  Logged once. */
static void imap_out_lost(struct imap_session *s)
{
	if (s->out_failed)
		return;
	s->out_failed = true;
	log_err("event=write-error session=%s server=%s client=%s reason=out-of-memory", s->b.sid,
		s->b.srv->name, s->b.client);
	imap_close_after_flush(s);
}

void imap_send(struct imap_session *s, struct imap_out *out)
{
	size_t n = imap_out_len(out);
	if (out->failed) {
		imap_out_lost(s);
	} else if (n > 0 && !s->out_failed) {
		/* in one piece: the connection takes all of it or nothing */
		const void *p = evbuffer_pullup(out->buf, (ev_ssize_t)n);
		if (p)
			conn_write(s->io, p, n);
		else
			imap_out_lost(s);
	}
	imap_out_discard(out);
}

/* ---- jobs ------------------------------------------------------------------- */

void imap_resume(struct imap_session *s)
{
	struct timeval now = {0, 0};
	if (s->resume) /* its callback runs the session (imap_session.c) */
		evtimer_add(s->resume, &now);
}

void imap_job_start(struct imap_session *s, const struct imap_job_ops *ops, void *data)
{
	s->job = ops;
	s->job_data = data;
}

void imap_job_stop(struct imap_session *s)
{
	if (!s->job)
		return;
	const struct imap_job_ops *ops = s->job;
	s->job = NULL;
	ops->stop(s);
	s->job_data = NULL;
}

/* Its arguments stay valid until the job frees it. */
struct imap_command *imap_keep_command(struct imap_session *s)
{
	struct imap_command *c = s->cur_cmd;
	s->cur_cmd = NULL;
	return c;
}

/* ---- the mail store's failures ---------------------------------------------- */

void imap_mailbox_log(const struct imap_session *s, const char *op, const char *err)
{
	char esc[LOG_VALUE_MAX];
	log_err("event=mailbox-error session=%s server=%s client=%s op=%s error=\"%s\"", s->b.sid,
		s->b.srv->name, s->b.client, op, log_quote(esc, sizeof esc, err, strlen(err)));
}

/* Always false but for MAILBOX_OK (for "if (imap_store_error(...))"). */
bool imap_store_error(struct imap_session *s, enum mailbox_result r, const char *err)
{
	switch (r) {
	case MAILBOX_OK:
		return true;
	case MAILBOX_ERR_NAME:
		imap_no(s, "[CANNOT] %s", err);
		break;
	case MAILBOX_ERR_EXISTS:
		imap_no(s, "[ALREADYEXISTS] %s", err);
		break;
	case MAILBOX_ERR_NONEXISTENT:
		imap_no(s, "[NONEXISTENT] %s", err);
		break;
	case MAILBOX_ERR_INBOX:
	case MAILBOX_ERR_NOSELECT:
		imap_no(s, "[CANNOT] %s", err);
		break;
	case MAILBOX_ERR_READONLY:
		imap_no(s, "[READ-ONLY] %s", err);
		break;
	case MAILBOX_ERR_LIMIT:
		imap_no(s, "[LIMIT] %s", err);
		break;
	case MAILBOX_ERR_EXPUNGED:
		imap_no(s, "[EXPUNGEISSUED] %s", err);
		break;
	case MAILBOX_ERR_IO:
		imap_mailbox_log(s, s->tag[0] ? "command" : "?", err);
		imap_no(s, "[SERVERBUG] The mail store failed; see the server log");
		break;
	}
	return false;
}

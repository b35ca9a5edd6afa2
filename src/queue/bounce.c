/* bounce: delivery status notifications (RFC 3464, RFC 6522, RFC 3463),
 * written into the spool with the null sender (RFC 5321 §4.5.5) and the
 * original sender as recipient.  The original's header is returned, never
 * its body (privacy, size). */
#include "queue/bounce.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "auth/aliases.h"
#include "conf/conf.h"
#include "lib/date.h"
#include "lib/log.h"
#include "lib/strbuf.h"
#include "auth/userdb.h"
#include "lib/util.h"

enum {
	BOUNCE_LINE_MAX = 2048,         /* one formatted line of the notification */
	BOUNCE_READ_CHUNK = 8192,
};


/* ---- writing ---------------------------------------------------------------- */

struct bounce_out {
	bounce_put_fn put;
	void *arg;
	bool failed;
};

static void bounce_put(struct bounce_out *o, const void *data, size_t len)
{
	if (!o->failed && len > 0 && o->put(o->arg, data, len) < 0)
		o->failed = true;
}

/* One line, CRLF added.  A line that does not fit is never cut: the
 * notification fails as a whole (the values that could be long, replies
 * and addresses, are bounded well below BOUNCE_LINE_MAX). */
static void bounce_line(struct bounce_out *o, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void bounce_line(struct bounce_out *o, const char *fmt, ...)
{
	char line[BOUNCE_LINE_MAX];
	struct strbuf sb;
	strbuf_init(&sb, line, sizeof line);
	va_list ap;
	va_start(ap, fmt);
	bool ok = strbuf_vaddf(&sb, fmt, ap) && strbuf_adds(&sb, "\r\n");
	va_end(ap);
	if (!ok) {
		log_err("event=bounce-error reason=\"a line of the notification is longer than %d "
			"octets\"", BOUNCE_LINE_MAX);
		o->failed = true;
		return;
	}
	bounce_put(o, strbuf_str(&sb), strbuf_len(&sb));
}

/* An optional date field (RFC 3464 §2.2.5, §2.3.7) of time t; left out
 * when t has no RFC 5322 date (a damaged envelope's year beyond 9999). */
static void bounce_date_field(struct bounce_out *o, const char *name, time_t t)
{
	char date[DATE_RFC5322_MAX];
	if (date_rfc5322(t, date, sizeof date))
		bounce_line(o, "%s: %s", name, date);
}

/* Header values and report fields are one line of printable text. */
static char *bounce_clean(const char *s)
{
	char *out = xstrdup(s ? s : "");
	for (char *p = out; *p; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			*p = ' ';
	return out;
}

/* The original's header: up to and including the empty line, at most
 * BOUNCE_HEADERS_MAX bytes, cut at a line end.  0, or -1 (errno). */
static int bounce_copy_headers(struct bounce_out *o, int fd, off_t offset, off_t size)
{
	char *buf = xmalloc(BOUNCE_HEADERS_MAX);
	size_t have = 0;
	size_t want = size < (off_t)BOUNCE_HEADERS_MAX ? (size_t)size : BOUNCE_HEADERS_MAX;
	while (have < want) {
		size_t k = want - have < BOUNCE_READ_CHUNK ? want - have : BOUNCE_READ_CHUNK;
		ssize_t n = pread(fd, buf + have, k, offset + (off_t)have);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			int e = n == 0 ? EIO : errno;
			free(buf);
			errno = e;
			return -1;
		}
		have += (size_t)n;
	}
	/* the header ends at the first empty line */
	size_t end = have;
	for (size_t i = 0; i + 1 < have; i++) {
		if (buf[i] == '\n' && (i + 2 < have) && buf[i + 1] == '\r' && buf[i + 2] == '\n') {
			end = i + 1;
			break;
		}
		if (i == 0 && buf[0] == '\r' && buf[1] == '\n') {
			end = 0;
			break;
		}
	}
	/* cut after the last whole line */
	while (end > 0 && buf[end - 1] != '\n')
		end--;
	bounce_put(o, buf, end);
	free(buf);
	return 0;
}

static void bounce_human_part(struct bounce_out *o, const struct bounce *b)
{
	bounce_line(o, "Content-Description: Notification");
	bounce_line(o, "Content-Type: text/plain; charset=us-ascii");
	bounce_line(o, "%s", "");
	bounce_line(o, "This is the mail system at host %s.", b->hostname);
	bounce_line(o, "%s", "");
	bounce_line(o, "Your message could not be delivered to one or more recipients.");
	if (b->reason && *b->reason) {
		char *r = bounce_clean(b->reason);
		bounce_line(o, "Reason: %s.", r);
		free(r);
	}
	bounce_line(o, "It has not been delivered to:");
	bounce_line(o, "%s", "");
	for (size_t i = 0; i < b->nrcpts; i++) {
		const struct bounce_rcpt *r = &b->rcpts[i];
		char *addr = bounce_clean(r->address), *diag = bounce_clean(r->diagnostic);
		if (r->remote_mta && r->smtp_reply) {
			char *mta = bounce_clean(r->remote_mta);
			bounce_line(o, "<%s>: host %s said: %s", addr, mta, diag);
			free(mta);
		} else {
			bounce_line(o, "<%s>: %s", addr, diag);
		}
		free(addr);
		free(diag);
	}
	bounce_line(o, "%s", "");
	bounce_line(o, "The delivery report and the header of your message follow.");
	bounce_line(o, "Queue ID of your message: %s", b->id);
	bounce_line(o, "%s", "");
}

static void bounce_report_part(struct bounce_out *o, const struct bounce *b)
{
	bounce_line(o, "Content-Description: Delivery report");
	bounce_line(o, "Content-Type: message/delivery-status");
	bounce_line(o, "%s", "");
	/* RFC 3464 §2.2: per-message fields */
	bounce_line(o, "Reporting-MTA: dns; %s", b->hostname);
	bounce_line(o, "X-Posthorn-Queue-ID: %s", b->id);
	bounce_line(o, "X-Posthorn-Sender: rfc822; %s", b->sender);
	bounce_date_field(o, "Arrival-Date", b->arrival);
	/* §2.3: per-recipient fields, each group after an empty line */
	for (size_t i = 0; i < b->nrcpts; i++) {
		const struct bounce_rcpt *r = &b->rcpts[i];
		char *addr = bounce_clean(r->address), *diag = bounce_clean(r->diagnostic);
		bounce_line(o, "%s", "");
		bounce_line(o, "Final-Recipient: rfc822; %s", addr);
		if (r->orig && *r->orig && strcmp(r->orig, r->address) != 0) {
			char *orig = bounce_clean(r->orig);
			bounce_line(o, "Original-Recipient: rfc822; %s", orig);
			free(orig);
		}
		bounce_line(o, "Action: failed");
		bounce_line(o, "Status: %s", r->status && r->status[0] == '5' ? r->status : "5.0.0");
		if (r->remote_mta) {
			char *mta = bounce_clean(r->remote_mta);
			bounce_line(o, "Remote-MTA: dns; %s", mta);
			free(mta);
		}
		bounce_line(o, "Diagnostic-Code: %s; %s", r->smtp_reply ? "smtp" : "X-Posthorn", diag);
		if (r->last_attempt)
			bounce_date_field(o, "Last-Attempt-Date", r->last_attempt);
		free(addr);
		free(diag);
	}
	bounce_line(o, "%s", "");
}

int bounce_compose(const struct bounce *b, bounce_put_fn put, void *arg)
{
	struct bounce_out o = {.put = put, .arg = arg};
	char date[DATE_RFC5322_MAX], boundary[256];
	const char *bid = b->bounce_id && *b->bounce_id ? b->bounce_id : b->id;
	if (!date_rfc5322(b->now ? b->now : time(NULL), date, sizeof date)) {
		/* RFC 5322 §3.6: Date is required; a clock this wrong is not ours
		 * to paper over */
		log_err("event=bounce-error id=%s reason=\"no date for the notification\"", b->id);
		errno = EINVAL;
		return -1;
	}
	if (!bsnprintf(boundary, sizeof boundary, "%s.%lld/%s", bid, (long long)b->arrival,
		       b->hostname))
		fatal("bounce_compose: host name too long for the boundary");
	char *sender = bounce_clean(b->sender);
	bounce_line(&o, "From: Mail Delivery System <MAILER-DAEMON@%s>", b->hostname);
	bounce_line(&o, "To: <%s>", sender);
	bounce_line(&o, "Subject: Undelivered Mail Returned to Sender");
	bounce_line(&o, "Date: %s", date);
	bounce_line(&o, "Message-ID: <%s.bounce@%s>", bid, b->hostname);
	bounce_line(&o, "Auto-Submitted: auto-replied"); /* RFC 3834 §5 */
	bounce_line(&o, "MIME-Version: 1.0");
	bounce_line(&o, "Content-Type: multipart/report; report-type=delivery-status;");
	bounce_line(&o, "\tboundary=\"%s\"", boundary);
	bounce_line(&o, "%s", "");
	bounce_line(&o, "This is a MIME-encapsulated message.");
	bounce_line(&o, "%s", "");
	free(sender);

	bounce_line(&o, "--%s", boundary);
	bounce_human_part(&o, b);
	bounce_line(&o, "--%s", boundary);
	bounce_report_part(&o, b);
	bounce_line(&o, "--%s", boundary);
	bounce_line(&o, "Content-Description: Undelivered Message Headers");
	bounce_line(&o, "Content-Type: text/rfc822-headers");
	bounce_line(&o, "%s", "");
	int r = 0;
	if (b->fd >= 0 && bounce_copy_headers(&o, b->fd, b->offset, b->size) < 0)
		r = -1;
	bounce_line(&o, "%s", "");
	bounce_line(&o, "--%s--", boundary);
	if (o.failed && r == 0) {
		r = -1;
		if (!errno)
			errno = EIO;
	}
	return r;
}

/* ---- spooling ------------------------------------------------------------------ */

static int bounce_spool_put(void *arg, const void *data, size_t len)
{
	return spool_msg_write(arg, data, len);
}

/* Where the notification goes: the sender, through the aliases when it is
 * local; a local sender unknown here reaches postmaster of its domain. */
static size_t bounce_targets(const struct conf *conf, const struct aliases *al,
			     const struct userdb *users, const char *sender, char ***out)
{
	const char *at = strrchr(sender, '@');
	*out = NULL;
	if (!at || at == sender || !at[1])
		return 0;
	if (!conf_is_local_domain(conf, at + 1)) {
		*out = xmalloc(sizeof **out);
		(*out)[0] = xstrdup(sender);
		return 1;
	}
	char *address = str_lower(xstrdup(sender));
	size_t n;
	/* users NULL: they live in a directory, which the sender was checked
	 * against when the message was accepted */
	if (users && !(al && aliases_lookup(al, address, &n)) && !userdb_find(users, address)) {
		char *pm = xasprintf("postmaster@%s", strrchr(address, '@') + 1);
		free(address);
		address = pm;
	}
	if (al) {
		n = aliases_expand(al, address, out);
	} else {
		*out = xmalloc(sizeof **out);
		(*out)[0] = xstrdup(address);
		n = 1;
	}
	free(address);
	return n;
}

int bounce_spool(struct spool *sp, const struct conf *conf, const struct aliases *al,
		 const struct userdb *users, struct bounce *b, spool_commit_cb cb, void *arg,
		 char id_out[SPOOL_ID_SIZE])
{
	if (!b->sender || !*b->sender) {
		errno = EINVAL; /* RFC 5321 §4.5.5: never a bounce to <> */
		return -1;
	}
	char **targets;
	size_t n = bounce_targets(conf, al, users, b->sender, &targets);
	if (n == 0) {
		aliases_free_list(targets, n);
		errno = EINVAL;
		return -1;
	}
	struct spool_envelope env = {.sender = "", .client = "", .arrival = time(NULL)};
	env.rcpts = xcalloc(n, sizeof *env.rcpts);
	env.nrcpts = n;
	for (size_t i = 0; i < n; i++) {
		const char *at = strrchr(targets[i], '@');
		env.rcpts[i].address = targets[i];
		env.rcpts[i].orig = (char *)b->sender;
		env.rcpts[i].local = at && conf_is_local_domain(conf, at + 1);
	}
	struct spool_msg *m = spool_msg_begin(sp, &env);
	int saved = errno;
	free(env.rcpts);
	aliases_free_list(targets, n); /* a plain list of strings, whoever made it */
	if (!m) {
		errno = saved;
		return -1;
	}
	memcpy(id_out, env.id, SPOOL_ID_SIZE);
	b->bounce_id = id_out;
	if (bounce_compose(b, bounce_spool_put, m) < 0) {
		saved = errno;
		spool_msg_abort(m);
		errno = saved;
		return -1;
	}
	spool_msg_commit(m, cb, arg);
	return 0;
}

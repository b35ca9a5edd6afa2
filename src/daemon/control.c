/* control: the control socket in the spool (see control.h).  Input is one
 * bounded line read through linebuf; peers must be the daemon's own user or
 * root (SO_PEERCRED, on top of the socket's mode 0600); every value from a
 * message or a remote server is escaped before it is written out, so that
 * `posthorn queue` never prints terminal control sequences. */
#define _GNU_SOURCE /* struct ucred */
#include "daemon/control.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>

#include "lib/date.h"
#include "lib/linebuf.h"
#include "lib/log.h"
#include "lib/util.h"
#include "queue/delivery.h"
#include "queue/outbound.h"
#include "queue/spool.h"
#include "queue/tlsreport.h"

struct control_conn {
	struct control_conn *prev, *next;
	struct bufferevent *bev;
	struct linebuf lb;
	bool answered;          /* closing once the answer has left */
};

static struct {
	struct event_base *base;
	struct spool *sp;
	struct evconnlistener *lev;
	struct control_conn *conns;
	unsigned nconns;
	char *path;
} control;

int control_address(const char *dir, struct sockaddr_un *sun, socklen_t *len, int *dirfd)
{
	memset(sun, 0, sizeof *sun);
	sun->sun_family = AF_UNIX;
	*dirfd = -1;
	if (bsnprintf(sun->sun_path, sizeof sun->sun_path, "%s/%s", dir, CONTROL_SOCKET_NAME)) {
		*len = (socklen_t)sizeof *sun;
		return 0;
	}
	/* sun_path holds 108 bytes; deep spool folders go through the folder's
	 * descriptor instead */
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	if (!bsnprintf(sun->sun_path, sizeof sun->sun_path, "/proc/self/fd/%d/%s", fd,
		       CONTROL_SOCKET_NAME)) {
		close(fd);
		errno = ENAMETOOLONG;
		return -1;
	}
	*dirfd = fd;
	*len = (socklen_t)sizeof *sun;
	return 0;
}

/* ---- writing answers ------------------------------------------------------- */

/* An answer being written: the first failure to add to it (no memory) is
 * kept, and the whole answer is then replaced by an error line. */
struct control_out {
	struct evbuffer *buf;
	bool failed;
};

static void control_add(struct control_out *out, const void *data, size_t n)
{
	if (!out->failed && evbuffer_add(out->buf, data, n) < 0)
		out->failed = true;
}

static void control_printf(struct control_out *out, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void control_printf(struct control_out *out, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	if (!out->failed && evbuffer_add_vprintf(out->buf, fmt, ap) < 0)
		out->failed = true;
	va_end(ap);
}

/* Printable ASCII as it is, every other byte as \xNN. */
static void control_put_escaped(struct control_out *out, const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c >= 0x20 && c < 0x7f && c != '\\')
			control_add(out, &s[i], 1);
		else if (c == '\\')
			control_add(out, "\\\\", 2);
		else
			control_printf(out, "\\x%02X", c);
	}
}

static void control_put(struct control_out *out, const char *s)
{
	control_put_escaped(out, s, strlen(s));
}

static void control_duration(char *buf, size_t size, long long s)
{
	if (s < 0)
		s = 0;
	bool ok = s < 120	   ? bsnprintf(buf, size, "%llds", s)
		  : s < 2 * 3600   ? bsnprintf(buf, size, "%lldm", s / 60)
		  : s < 2 * 86400  ? bsnprintf(buf, size, "%lldh", s / 3600)
				   : bsnprintf(buf, size, "%lldd", s / 86400);
	if (!ok)
		fatal("control_duration: buffer too small");
}

static void control_put_state(struct control_out *out, const struct outbound_entry *e, time_t now)
{
	char when[32];
	if (e->next_attempt == 0) {
		control_printf(out, "  attempts %u, in progress\n", e->attempts);
		return;
	}
	control_duration(when, sizeof when, (long long)(e->next_attempt - now));
	control_printf(out, "  attempts %u, next attempt in %s\n", e->attempts, when);
}

struct control_list {
	struct control_out out;
	time_t now;
	size_t n;
};

/* "  age A  size S  from <sender>" and the recipients' line, after the id. */
static void control_put_envelope(struct control_out *out, long long age_s, long long size,
				 const char *sender, const char *const *rcpts, size_t n)
{
	char age[32];
	control_duration(age, sizeof age, age_s);
	control_printf(out, "  age %s  size %lld  from <", age, size);
	control_put(out, sender);
	control_printf(out, ">\n  to ");
	for (size_t i = 0; i < n; i++) {
		control_printf(out, "%s<", i ? ", " : "");
		control_put(out, rcpts[i]);
		control_add(out, ">", 1);
	}
}

static void control_list_one(void *arg, const struct outbound_entry *e)
{
	struct control_list *l = arg;
	struct control_out *out = &l->out;
	control_printf(out, "%s", e->id);
	control_put_envelope(out, l->now - e->arrival, e->size, e->sender, e->pending,
			     e->npending);
	control_add(out, "\n", 1);
	control_put_state(out, e, l->now);
	if (e->last_error) {
		control_printf(out, "  last error: ");
		control_put(out, e->last_error);
		control_add(out, "\n", 1);
	}
	l->n++;
}

/* A local delivery's state: its failed attempts, the next one, the last
 * error; each line after indent. */
static void control_put_local_state(struct control_out *out, const char *indent,
				    const struct delivery_waiting *w)
{
	char when[32];
	control_duration(when, sizeof when, w->next_in);
	control_printf(out, "%slocal delivery: attempts %u, next attempt %s%s\n", indent,
		       w->failures, w->next_in > 0 ? "in " : "", w->next_in > 0 ? when : "now");
	if (w->reason) {
		control_printf(out, "%slast error: ", indent);
		control_put(out, w->reason);
		control_add(out, "\n", 1);
	}
}

static void control_list_local(void *arg, const struct delivery_waiting *w)
{
	struct control_list *l = arg;
	struct control_out *out = &l->out;
	control_printf(out, "%s", w->id);
	if (w->described)
		control_put_envelope(out, l->now - w->arrival, w->size, w->sender, w->rcpts,
				     w->nrcpts);
	control_add(out, "\n", 1);
	control_put_local_state(out, "  ", w);
	l->n++;
}

/* The entries that each() lists into out, then a line that counts them. */
static void control_list_part(struct control_out *out, void (*each)(struct control_list *l),
			      const char *none, const char *where)
{
	struct control_list l = {.out = {.buf = evbuffer_new()}, .now = time(NULL)};
	if (!l.out.buf)
		fatal("evbuffer_new failed");
	each(&l);
	if (l.out.failed || (!out->failed && evbuffer_add_buffer(out->buf, l.out.buf) < 0))
		out->failed = true;
	if (l.n == 0)
		control_printf(out, "%s\n", none);
	else
		control_printf(out, "%zu message%s %s\n", l.n, l.n == 1 ? "" : "s", where);
	evbuffer_free(l.out.buf);
}

static void control_each_outbound(struct control_list *l)
{
	outbound_each(control_list_one, l);
}

static void control_each_local(struct control_list *l)
{
	delivery_each_waiting(control_list_local, l);
}

/* The outbound queue, then the messages whose local delivery waits for
 * its next attempt (a full or unwritable Maildir). */
static void control_cmd_list(struct control_out *out, const char *arg)
{
	control_printf(out, "ok\n");
	control_list_part(out, control_each_outbound, "the outbound queue is empty",
			  "in the outbound queue");
	control_list_part(out, control_each_local, "no local delivery is waiting",
			  "waiting for local delivery");
}

struct control_find {
	const char *id;
	struct control_out *out;
	time_t now;
	bool found;
};

static void control_show_local_state(void *arg, const struct delivery_waiting *w)
{
	struct control_find *f = arg;
	if (strcmp(w->id, f->id) != 0)
		return;
	control_put_local_state(f->out, "", w);
}

static void control_show_state(void *arg, const struct outbound_entry *e)
{
	struct control_find *f = arg;
	if (strcmp(e->id, f->id) != 0)
		return;
	f->found = true;
	control_printf(f->out, "outbound queue:\n");
	control_put_state(f->out, e, f->now);
	if (e->last_error) {
		control_printf(f->out, "  last error: ");
		control_put(f->out, e->last_error);
		control_add(f->out, "\n", 1);
	}
}

/* The message's header, up to its empty line (bounded), escaped. */
static void control_show_header(struct control_out *out, const struct spool_envelope *env)
{
	int fd = spool_open_message(control.sp, env);
	if (fd < 0) {
		control_printf(out, "(cannot read the message: %s)\n", strerror(errno));
		return;
	}
	size_t want = env->size < CONTROL_SHOW_HEADER_MAX ? (size_t)env->size : CONTROL_SHOW_HEADER_MAX;
	char *buf = xmalloc(want ? want : 1);
	ssize_t n = pread(fd, buf, want, env->body_offset);
	close(fd); /* read-only */
	size_t have = n > 0 ? (size_t)n : 0;
	for (size_t i = 0; i < have;) {
		size_t end = i;
		while (end < have && buf[end] != '\n')
			end++;
		size_t len = end - i;
		if (len > 0 && buf[i + len - 1] == '\r')
			len--;
		if (len == 0 || end == have) /* the empty line, or a cut */
			break;
		control_put_escaped(out, buf + i, len);
		control_add(out, "\n", 1);
		i = end + 1;
	}
	free(buf);
}

static void control_cmd_show(struct control_out *out, const char *id)
{
	struct spool_envelope env;
	if (spool_read_envelope(control.sp, id, &env) < 0) {
		control_printf(out, "error no message %s in the queue\n", id);
		return;
	}
	time_t now = time(NULL);
	char date[DATE_RFC5322_MAX], age[32];
	if (!date_rfc5322(env.arrival, date, sizeof date))
		xsnprintf(date, sizeof date, "%s", "(no date)"); /* fits: a date is longer */
	control_duration(age, sizeof age, (long long)(now - env.arrival));
	control_printf(out, "ok\nid: %s\narrival: %s (%s ago)\nsize: %lld\nsender: <", env.id, date,
		   age, (long long)env.size);
	control_put(out, env.sender);
	control_printf(out, ">\nclient: ");
	control_put(out, env.client && *env.client ? env.client : "(local)");
	if (env.helo) {
		control_printf(out, " helo ");
		control_put(out, env.helo);
	}
	if (env.auth_user) {
		control_printf(out, " authenticated as ");
		control_put(out, env.auth_user);
	}
	control_add(out, "\n", 1);
	for (size_t i = 0; i < env.nrcpts; i++) {
		const struct spool_rcpt *r = &env.rcpts[i];
		control_printf(out, "recipient: <");
		control_put(out, r->address);
		control_printf(out, "> %s %s", r->local ? "local" : "remote",
			   r->done ? "done" : "pending");
		if (r->orig && strcmp(r->orig, r->address) != 0) {
			control_printf(out, " (given as <");
			control_put(out, r->orig);
			control_printf(out, ">)");
		}
		control_add(out, "\n", 1);
	}
	struct control_find f = {.id = env.id, .out = out, .now = now};
	outbound_each(control_show_state, &f);
	if (!f.found)
		control_printf(out, "outbound queue: not in it\n");
	delivery_each_waiting(control_show_local_state, &f);
	control_printf(out, "header:\n");
	control_show_header(out, &env);
	spool_envelope_clear(&env);
}

static void control_cmd_flush(struct control_out *out, const char *arg)
{
	size_t n = outbound_flush() + delivery_flush();
	control_printf(out, "ok\n%zu message%s scheduled for delivery now\n", n, n == 1 ? "" : "s");
}

static void control_cmd_delete(struct control_out *out, const char *id)
{
	if (outbound_delete(id) == 0) {
		control_printf(out, "ok\nmessage %s deleted; nothing was bounced\n", id);
		log_info("event=control command=delete id=%s", id);
		return;
	}
	struct spool_envelope env;
	if (errno == ENOENT && spool_read_envelope(control.sp, id, &env) == 0) {
		spool_envelope_clear(&env);
		control_printf(out, "error message %s is not in the outbound queue "
			   "(local delivery still has it)\n", id);
		return;
	}
	if (errno == ENOENT)
		control_printf(out, "error no message %s in the outbound queue\n", id);
	else
		control_printf(out, "error cannot delete %s: %s\n", id, strerror(errno));
}

/* RFC 8460: the TLS reports of every day counted so far, today's too. */
static void control_cmd_tls_report(struct control_out *out, const char *arg)
{
	if (!tlsreport_enabled()) {
		control_printf(out, "error TLS reports are off (outbound tls-reports)\n");
		return;
	}
	size_t n = tlsreport_send_now();
	log_info("event=control command=tls-report reports=%zu", n);
	control_printf(out, "ok\n%zu TLS report%s being sent\n", n, n == 1 ? "" : "s");
}

static const struct control_command {
	const char *name;
	bool takes_id;
	void (*run)(struct control_out *out, const char *arg);
} control_commands[] = {
	{"LIST", false, control_cmd_list},
	{"SHOW", true, control_cmd_show},
	{"FLUSH", false, control_cmd_flush},
	{"DELETE", true, control_cmd_delete},
	{"TLSREPORT", false, control_cmd_tls_report},
};

static bool control_id_ok(const char *id)
{
	size_t n = strlen(id);
	return n > 0 && n < SPOOL_ID_SIZE && strspn(id, "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ") == n;
}

static void control_execute(struct control_out *out, char *line)
{
	char *sp = strchr(line, ' ');
	const char *arg = "";
	if (sp) {
		*sp = '\0';
		arg = sp + 1;
	}
	for (size_t i = 0; i < ARRAY_LEN(control_commands); i++) {
		const struct control_command *c = &control_commands[i];
		if (strcmp(line, c->name) != 0)
			continue;
		if (c->takes_id ? !control_id_ok(arg) : *arg != '\0') {
			control_printf(out, "error usage: %s%s\n", c->name, c->takes_id ? " ID" : "");
			return;
		}
		c->run(out, arg);
		return;
	}
	control_printf(out, "error unknown command (LIST, SHOW ID, FLUSH, DELETE ID, TLSREPORT)\n");
}

/* ---- connections --------------------------------------------------------------- */

static void control_conn_free(struct control_conn *c)
{
	if (c->prev)
		c->prev->next = c->next;
	else
		control.conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	control.nconns--;
	bufferevent_free(c->bev);
	free(c);
}

static void control_answer(struct control_conn *c, const char *text)
{
	bufferevent_disable(c->bev, EV_READ);
	c->answered = true;
	if (bufferevent_write(c->bev, text, strlen(text)) < 0) {
		log_err("event=control-error reason=\"cannot queue the answer\"");
		control_conn_free(c);
		return;
	}
	if (evbuffer_get_length(bufferevent_get_output(c->bev)) == 0)
		control_conn_free(c);
}

static void control_read_cb(struct bufferevent *bev, void *arg)
{
	struct control_conn *c = arg;
	char line[CONTROL_LINE_MAX + 1];
	struct linebuf_line l;
	if (c->answered)
		return;
	enum linebuf_status st = linebuf_get(&c->lb, bufferevent_get_input(bev), CONTROL_LINE_MAX,
					     line, sizeof line, &l);
	if (st == LINEBUF_NEED_MORE)
		return;
	if (st == LINEBUF_TOO_LONG || l.has_nul || l.bare_cr) {
		control_answer(c, "error command line too long or malformed\n");
		return;
	}
	struct control_out out = {.buf = evbuffer_new()};
	if (!out.buf)
		fatal("evbuffer_new failed");
	control_execute(&out, l.data);
	if (out.failed) {
		log_err("event=control-error reason=\"no memory for the answer\"");
		control_answer(c, "error out of memory\n");
	} else if (bufferevent_write_buffer(bev, out.buf) < 0) {
		log_err("event=control-error reason=\"cannot queue the answer\"");
		control_conn_free(c);
	} else {
		control_answer(c, "");
	}
	evbuffer_free(out.buf);
}

static void control_write_cb(struct bufferevent *bev, void *arg)
{
	struct control_conn *c = arg;
	if (c->answered && evbuffer_get_length(bufferevent_get_output(bev)) == 0)
		control_conn_free(c);
}

static void control_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct control_conn *c = arg;
	if ((what & BEV_EVENT_TIMEOUT) && !c->answered) {
		control_answer(c, "error timeout\n");
		return;
	}
	control_conn_free(c); /* the client left, or an error */
}

/* Only the daemon's own user and root, whatever the file mode says. */
static bool control_peer_ok(int fd)
{
	struct ucred cred;
	socklen_t len = sizeof cred;
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
		return false;
	return cred.uid == 0 || cred.uid == geteuid();
}

static void control_accept(struct evconnlistener *lev, evutil_socket_t fd, struct sockaddr *sa,
		       int salen, void *arg)
{
	if (control.nconns >= CONTROL_MAX_CONNS || !control_peer_ok(fd)) {
		close(fd);
		return;
	}
	struct control_conn *c = xcalloc(1, sizeof *c);
	c->bev = bufferevent_socket_new(control.base, fd, BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
	if (!c->bev)
		fatal("bufferevent_socket_new failed");
	bufferevent_setcb(c->bev, control_read_cb, control_write_cb, control_event_cb, c);
	bufferevent_setwatermark(c->bev, EV_READ, 0, CONTROL_LINE_MAX * 2);
	struct timeval tv = {.tv_sec = CONTROL_TIMEOUT};
	bufferevent_set_timeouts(c->bev, &tv, &tv);
	bufferevent_enable(c->bev, EV_READ | EV_WRITE);
	c->next = control.conns;
	if (c->next)
		c->next->prev = c;
	control.conns = c;
	control.nconns++;
}

/* ---- start, stop -------------------------------------------------------------------- */

/* Is a daemon answering on this socket?  A stale file is removed. */
static int control_claim(const struct sockaddr_un *sun, socklen_t len, char *err, size_t errsz)
{
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		errfmt(err, errsz, "socket: %s", strerror(errno));
		return -1;
	}
	int r = connect(fd, (const struct sockaddr *)sun, len);
	int e = errno;
	close(fd);
	if (r == 0) {
		errfmt(err, errsz, "another posthorn daemon is using the spool %s", control.path);
		return -1;
	}
	if (e == ECONNREFUSED && unlink(sun->sun_path) < 0 && errno != ENOENT) {
		errfmt(err, errsz, "cannot remove the stale %s: %s", control.path, strerror(errno));
		return -1;
	}
	return 0;
}

static int control_listen(const struct sockaddr_un *sun, socklen_t len, char *err, size_t errsz)
{
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		errfmt(err, errsz, "socket: %s", strerror(errno));
		return -1;
	}
	mode_t old = umask(0177); /* created 0600: no moment with a wider mode */
	int r = bind(fd, (const struct sockaddr *)sun, len);
	int e = errno;
	umask(old);
	if (r < 0 || chmod(sun->sun_path, 0600) < 0 || listen(fd, CONTROL_MAX_CONNS) < 0) {
		errfmt(err, errsz, "%s: %s", control.path, strerror(r < 0 ? e : errno));
		close(fd);
		return -1;
	}
	return fd;
}

int control_start(struct event_base *base, struct spool *sp, char *err, size_t errsz)
{
	struct sockaddr_un sun;
	socklen_t len;
	int dirfd;
	control.path = xasprintf("%s/%s", spool_dir(sp), CONTROL_SOCKET_NAME);
	if (control_address(spool_dir(sp), &sun, &len, &dirfd) < 0) {
		errfmt(err, errsz, "%s: %s", control.path, strerror(errno));
		free(control.path);
		control.path = NULL;
		return -1;
	}
	int fd = control_claim(&sun, len, err, errsz) == 0 ? control_listen(&sun, len, err, errsz) : -1;
	if (dirfd >= 0)
		close(dirfd);
	if (fd < 0) {
		free(control.path);
		control.path = NULL;
		return -1;
	}
	control.base = base;
	control.sp = sp;
	control.lev = evconnlistener_new(base, control_accept, NULL, LEV_OPT_CLOSE_ON_FREE, -1, fd);
	if (!control.lev)
		fatal("evconnlistener_new failed");
	log_info("event=control-listening path=%s", control.path);
	return 0;
}

void control_stop(void)
{
	if (!control.lev)
		return;
	evconnlistener_free(control.lev);
	control.lev = NULL;
	while (control.conns)
		/* NOLINTNEXTLINE(clang-analyzer-unix.Malloc): the head of the list has no prev: control_conn_free moves control.conns on */
		control_conn_free(control.conns);
	struct sockaddr_un sun;
	socklen_t len;
	int dirfd;
	if (control_address(spool_dir(control.sp), &sun, &len, &dirfd) == 0) {
		if (unlink(sun.sun_path) < 0 && errno != ENOENT)
			log_warn("event=control-error path=%s reason=\"cannot remove: %s\"", control.path,
				 strerror(errno));
		if (dirfd >= 0)
			close(dirfd);
	}
	free(control.path);
	control.path = NULL;
}

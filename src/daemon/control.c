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
#include "queue/deliver_remote.h"
#include "queue/spool.h"

struct ctl_conn {
	struct ctl_conn *prev, *next;
	struct bufferevent *bev;
	struct linebuf lb;
	bool answered;          /* closing once the answer has left */
};

static struct {
	struct event_base *base;
	struct spool *sp;
	struct evconnlistener *lev;
	struct ctl_conn *conns;
	unsigned nconns;
	char *path;
} ctl;

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
struct ctl_out {
	struct evbuffer *buf;
	bool failed;
};

static void ctl_add(struct ctl_out *out, const void *data, size_t n)
{
	if (!out->failed && evbuffer_add(out->buf, data, n) < 0)
		out->failed = true;
}

static void ctl_printf(struct ctl_out *out, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void ctl_printf(struct ctl_out *out, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	if (!out->failed && evbuffer_add_vprintf(out->buf, fmt, ap) < 0)
		out->failed = true;
	va_end(ap);
}

/* Printable ASCII as it is, every other byte as \xNN. */
static void ctl_put_escaped(struct ctl_out *out, const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c >= 0x20 && c < 0x7f && c != '\\')
			ctl_add(out, &s[i], 1);
		else if (c == '\\')
			ctl_add(out, "\\\\", 2);
		else
			ctl_printf(out, "\\x%02X", c);
	}
}

static void ctl_put(struct ctl_out *out, const char *s)
{
	ctl_put_escaped(out, s, strlen(s));
}

static void ctl_duration(char *buf, size_t size, long long s)
{
	if (s < 0)
		s = 0;
	bool ok = s < 120	   ? bsnprintf(buf, size, "%llds", s)
		  : s < 2 * 3600   ? bsnprintf(buf, size, "%lldm", s / 60)
		  : s < 2 * 86400  ? bsnprintf(buf, size, "%lldh", s / 3600)
				   : bsnprintf(buf, size, "%lldd", s / 86400);
	if (!ok)
		fatal("ctl_duration: buffer too small");
}

static void ctl_put_state(struct ctl_out *out, const struct outbound_entry *e, time_t now)
{
	char when[32];
	if (e->next_attempt == 0) {
		ctl_printf(out, "  attempts %u, in progress\n", e->attempts);
		return;
	}
	ctl_duration(when, sizeof when, (long long)(e->next_attempt - now));
	ctl_printf(out, "  attempts %u, next attempt in %s\n", e->attempts, when);
}

struct ctl_list {
	struct ctl_out out;
	time_t now;
	size_t n;
};

static void ctl_list_one(void *arg, const struct outbound_entry *e)
{
	struct ctl_list *l = arg;
	struct ctl_out *out = &l->out;
	char age[32];
	ctl_duration(age, sizeof age, (long long)(l->now - e->arrival));
	ctl_printf(out, "%s  age %s  size %lld  from <", e->id, age, e->size);
	ctl_put(out, e->sender);
	ctl_printf(out, ">\n  to ");
	for (size_t i = 0; i < e->npending; i++) {
		ctl_printf(out, "%s<", i ? ", " : "");
		ctl_put(out, e->pending[i]);
		ctl_add(out, ">", 1);
	}
	ctl_add(out, "\n", 1);
	ctl_put_state(out, e, l->now);
	if (e->last_error) {
		ctl_printf(out, "  last error: ");
		ctl_put(out, e->last_error);
		ctl_add(out, "\n", 1);
	}
	l->n++;
}

static void ctl_cmd_list(struct ctl_out *out, const char *arg)
{
	struct ctl_list l = {.out = {.buf = evbuffer_new()}, .now = time(NULL)};
	if (!l.out.buf)
		fatal("evbuffer_new failed");
	outbound_each(ctl_list_one, &l);
	ctl_printf(out, "ok\n");
	if (l.out.failed || (!out->failed && evbuffer_add_buffer(out->buf, l.out.buf) < 0))
		out->failed = true;
	if (l.n == 0)
		ctl_printf(out, "the outbound queue is empty\n");
	else
		ctl_printf(out, "%s%zu message%s in the outbound queue\n", "", l.n,
			   l.n == 1 ? "" : "s");
	evbuffer_free(l.out.buf);
}

struct ctl_find {
	const char *id;
	struct ctl_out *out;
	time_t now;
	bool found;
};

static void ctl_show_state(void *arg, const struct outbound_entry *e)
{
	struct ctl_find *f = arg;
	if (strcmp(e->id, f->id) != 0)
		return;
	f->found = true;
	ctl_printf(f->out, "outbound queue:\n");
	ctl_put_state(f->out, e, f->now);
	if (e->last_error) {
		ctl_printf(f->out, "  last error: ");
		ctl_put(f->out, e->last_error);
		ctl_add(f->out, "\n", 1);
	}
}

/* The message's header, up to its empty line (bounded), escaped. */
static void ctl_show_header(struct ctl_out *out, const struct spool_envelope *env)
{
	int fd = spool_open_message(ctl.sp, env);
	if (fd < 0) {
		ctl_printf(out, "(cannot read the message: %s)\n", strerror(errno));
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
		ctl_put_escaped(out, buf + i, len);
		ctl_add(out, "\n", 1);
		i = end + 1;
	}
	free(buf);
}

static void ctl_cmd_show(struct ctl_out *out, const char *id)
{
	struct spool_envelope env;
	if (spool_read_envelope(ctl.sp, id, &env) < 0) {
		ctl_printf(out, "error no message %s in the queue\n", id);
		return;
	}
	time_t now = time(NULL);
	char date[DATE_RFC5322_MAX], age[32];
	if (!date_rfc5322(env.arrival, date, sizeof date))
		(void)bsnprintf(date, sizeof date, "%s", "(no date)"); /* fits */
	ctl_duration(age, sizeof age, (long long)(now - env.arrival));
	ctl_printf(out, "ok\nid: %s\narrival: %s (%s ago)\nsize: %lld\nsender: <", env.id, date,
		   age, (long long)env.size);
	ctl_put(out, env.sender);
	ctl_printf(out, ">\nclient: ");
	ctl_put(out, env.client && *env.client ? env.client : "(local)");
	if (env.helo) {
		ctl_printf(out, " helo ");
		ctl_put(out, env.helo);
	}
	if (env.auth_user) {
		ctl_printf(out, " authenticated as ");
		ctl_put(out, env.auth_user);
	}
	ctl_add(out, "\n", 1);
	for (size_t i = 0; i < env.nrcpts; i++) {
		const struct spool_rcpt *r = &env.rcpts[i];
		ctl_printf(out, "recipient: <");
		ctl_put(out, r->address);
		ctl_printf(out, "> %s %s", r->local ? "local" : "remote",
			   r->done ? "done" : "pending");
		if (r->orig && strcmp(r->orig, r->address) != 0) {
			ctl_printf(out, " (given as <");
			ctl_put(out, r->orig);
			ctl_printf(out, ">)");
		}
		ctl_add(out, "\n", 1);
	}
	struct ctl_find f = {.id = env.id, .out = out, .now = now};
	outbound_each(ctl_show_state, &f);
	if (!f.found)
		ctl_printf(out, "outbound queue: not in it\n");
	ctl_printf(out, "header:\n");
	ctl_show_header(out, &env);
	spool_envelope_clear(&env);
}

static void ctl_cmd_flush(struct ctl_out *out, const char *arg)
{
	size_t n = outbound_flush();
	ctl_printf(out, "ok\n%zu message%s scheduled for delivery now\n", n, n == 1 ? "" : "s");
}

static void ctl_cmd_delete(struct ctl_out *out, const char *id)
{
	if (outbound_delete(id) == 0) {
		ctl_printf(out, "ok\nmessage %s deleted; nothing was bounced\n", id);
		log_info("event=control command=delete id=%s", id);
		return;
	}
	struct spool_envelope env;
	if (errno == ENOENT && spool_read_envelope(ctl.sp, id, &env) == 0) {
		spool_envelope_clear(&env);
		ctl_printf(out, "error message %s is not in the outbound queue "
			   "(local delivery still has it)\n", id);
		return;
	}
	if (errno == ENOENT)
		ctl_printf(out, "error no message %s in the outbound queue\n", id);
	else
		ctl_printf(out, "error cannot delete %s: %s\n", id, strerror(errno));
}

static const struct ctl_command {
	const char *name;
	bool takes_id;
	void (*run)(struct ctl_out *out, const char *arg);
} ctl_commands[] = {
	{"LIST", false, ctl_cmd_list},
	{"SHOW", true, ctl_cmd_show},
	{"FLUSH", false, ctl_cmd_flush},
	{"DELETE", true, ctl_cmd_delete},
};

static bool ctl_id_ok(const char *id)
{
	size_t n = strlen(id);
	return n > 0 && n < SPOOL_ID_SIZE && strspn(id, "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ") == n;
}

static void ctl_execute(struct ctl_out *out, char *line)
{
	char *sp = strchr(line, ' ');
	const char *arg = "";
	if (sp) {
		*sp = '\0';
		arg = sp + 1;
	}
	for (size_t i = 0; i < ARRAY_LEN(ctl_commands); i++) {
		const struct ctl_command *c = &ctl_commands[i];
		if (strcmp(line, c->name) != 0)
			continue;
		if (c->takes_id ? !ctl_id_ok(arg) : *arg != '\0') {
			ctl_printf(out, "error usage: %s%s\n", c->name, c->takes_id ? " ID" : "");
			return;
		}
		c->run(out, arg);
		return;
	}
	ctl_printf(out, "error unknown command (LIST, SHOW ID, FLUSH, DELETE ID)\n");
}

/* ---- connections --------------------------------------------------------------- */

static void ctl_conn_free(struct ctl_conn *c)
{
	if (c->prev)
		c->prev->next = c->next;
	else
		ctl.conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	ctl.nconns--;
	bufferevent_free(c->bev);
	free(c);
}

static void ctl_answer(struct ctl_conn *c, const char *text)
{
	bufferevent_disable(c->bev, EV_READ);
	c->answered = true;
	if (bufferevent_write(c->bev, text, strlen(text)) < 0) {
		log_err("event=control-error reason=\"cannot queue the answer\"");
		ctl_conn_free(c);
		return;
	}
	if (evbuffer_get_length(bufferevent_get_output(c->bev)) == 0)
		ctl_conn_free(c);
}

static void ctl_read_cb(struct bufferevent *bev, void *arg)
{
	struct ctl_conn *c = arg;
	char line[CONTROL_LINE_MAX + 1];
	struct linebuf_line l;
	if (c->answered)
		return;
	enum linebuf_status st = linebuf_get(&c->lb, bufferevent_get_input(bev), CONTROL_LINE_MAX,
					     line, sizeof line, &l);
	if (st == LINEBUF_NEED_MORE)
		return;
	if (st == LINEBUF_TOO_LONG || l.has_nul || l.bare_cr) {
		ctl_answer(c, "error command line too long or malformed\n");
		return;
	}
	struct ctl_out out = {.buf = evbuffer_new()};
	if (!out.buf)
		fatal("evbuffer_new failed");
	ctl_execute(&out, l.data);
	if (out.failed) {
		log_err("event=control-error reason=\"no memory for the answer\"");
		ctl_answer(c, "error out of memory\n");
	} else if (bufferevent_write_buffer(bev, out.buf) < 0) {
		log_err("event=control-error reason=\"cannot queue the answer\"");
		ctl_conn_free(c);
	} else {
		ctl_answer(c, "");
	}
	evbuffer_free(out.buf);
}

static void ctl_write_cb(struct bufferevent *bev, void *arg)
{
	struct ctl_conn *c = arg;
	if (c->answered && evbuffer_get_length(bufferevent_get_output(bev)) == 0)
		ctl_conn_free(c);
}

static void ctl_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct ctl_conn *c = arg;
	if ((what & BEV_EVENT_TIMEOUT) && !c->answered) {
		ctl_answer(c, "error timeout\n");
		return;
	}
	ctl_conn_free(c); /* the client left, or an error */
}

/* Only the daemon's own user and root, whatever the file mode says. */
static bool ctl_peer_ok(int fd)
{
	struct ucred cred;
	socklen_t len = sizeof cred;
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
		return false;
	return cred.uid == 0 || cred.uid == geteuid();
}

static void ctl_accept(struct evconnlistener *lev, evutil_socket_t fd, struct sockaddr *sa,
		       int salen, void *arg)
{
	if (ctl.nconns >= CONTROL_MAX_CONNS || !ctl_peer_ok(fd)) {
		close(fd);
		return;
	}
	struct ctl_conn *c = xcalloc(1, sizeof *c);
	c->bev = bufferevent_socket_new(ctl.base, fd, BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
	if (!c->bev)
		fatal("bufferevent_socket_new failed");
	bufferevent_setcb(c->bev, ctl_read_cb, ctl_write_cb, ctl_event_cb, c);
	bufferevent_setwatermark(c->bev, EV_READ, 0, CONTROL_LINE_MAX * 2);
	struct timeval tv = {.tv_sec = CONTROL_TIMEOUT};
	bufferevent_set_timeouts(c->bev, &tv, &tv);
	bufferevent_enable(c->bev, EV_READ | EV_WRITE);
	c->next = ctl.conns;
	if (c->next)
		c->next->prev = c;
	ctl.conns = c;
	ctl.nconns++;
}

/* ---- start, stop -------------------------------------------------------------------- */

/* Is a daemon answering on this socket?  A stale file is removed. */
static int ctl_claim(const struct sockaddr_un *sun, socklen_t len, char *err, size_t errsz)
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
		errfmt(err, errsz, "another posthorn daemon is using the spool %s", ctl.path);
		return -1;
	}
	if (e == ECONNREFUSED && unlink(sun->sun_path) < 0 && errno != ENOENT) {
		errfmt(err, errsz, "cannot remove the stale %s: %s", ctl.path, strerror(errno));
		return -1;
	}
	return 0;
}

static int ctl_listen(const struct sockaddr_un *sun, socklen_t len, char *err, size_t errsz)
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
		errfmt(err, errsz, "%s: %s", ctl.path, strerror(r < 0 ? e : errno));
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
	ctl.path = xasprintf("%s/%s", spool_dir(sp), CONTROL_SOCKET_NAME);
	if (control_address(spool_dir(sp), &sun, &len, &dirfd) < 0) {
		errfmt(err, errsz, "%s: %s", ctl.path, strerror(errno));
		free(ctl.path);
		ctl.path = NULL;
		return -1;
	}
	int fd = ctl_claim(&sun, len, err, errsz) == 0 ? ctl_listen(&sun, len, err, errsz) : -1;
	if (dirfd >= 0)
		close(dirfd);
	if (fd < 0) {
		free(ctl.path);
		ctl.path = NULL;
		return -1;
	}
	ctl.base = base;
	ctl.sp = sp;
	ctl.lev = evconnlistener_new(base, ctl_accept, NULL, LEV_OPT_CLOSE_ON_FREE, -1, fd);
	if (!ctl.lev)
		fatal("evconnlistener_new failed");
	log_info("event=control-listening path=%s", ctl.path);
	return 0;
}

void control_stop(void)
{
	if (!ctl.lev)
		return;
	evconnlistener_free(ctl.lev);
	ctl.lev = NULL;
	while (ctl.conns)
		/* NOLINTNEXTLINE(clang-analyzer-unix.Malloc): the head of the list has no prev: ctl_conn_free moves ctl.conns on */
		ctl_conn_free(ctl.conns);
	struct sockaddr_un sun;
	socklen_t len;
	int dirfd;
	if (control_address(spool_dir(ctl.sp), &sun, &len, &dirfd) == 0) {
		if (unlink(sun.sun_path) < 0 && errno != ENOENT)
			log_warn("event=control-error path=%s reason=\"cannot remove: %s\"", ctl.path,
				 strerror(errno));
		if (dirfd >= 0)
			close(dirfd);
	}
	free(ctl.path);
	ctl.path = NULL;
}

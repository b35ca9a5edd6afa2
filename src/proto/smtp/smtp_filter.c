/* smtp_filter: a session's milters, one connection each for the whole
 * session, asked in order at each step the client takes; then, between
 * the end of DATA and the commit, the milters again and the junk-header.
 * Each filter's modifications make a new version of the spooled message
 * (spool_msg_begin_replacement) that the next filter reads and that is
 * finally committed. */
#include "proto/smtp/smtp_filter.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>

#include "filter/milter_msg.h"
#include "lib/log.h"
#include "lib/util.h"

enum { SMTP_FILTER_COPY_CHUNK = 64 * 1024 };

struct smtp_milters {
	struct smtp_filter_client c;
	struct milter_conn **conns;     /* one per milter of the server, in order;
					 * NULL: not opened (an earlier one refused) */
	size_t n;
	enum milter_phase phase;        /* the step being asked */
	size_t next;                    /* the next milter to ask */
	char *helo, *tls_version, *cipher; /* owned: what the filters are told */
	char *sender, *auth_user, *rcpt;
	struct event *timer;            /* done() on the next turn */
	struct smtp_filter_outcome out;
	char *reply;
	smtp_filter_done_fn done;
	void *arg;
};

struct smtp_filter {
	struct smtp_filter_client c;
	char *tls_version, *cipher;
	struct spool_envelope env;      /* owned copy, changed by the filters */
	struct spool_msg *msg;
	size_t next;                    /* the next milter */
	bool asking;                    /* milter next - 1 is at work */
	struct event *timer;            /* done() on the next turn */
	struct smtp_filter_outcome out;
	char *reply;
	smtp_filter_done_fn done;
	void *arg;
};

bool smtp_filter_wanted(const struct conf_server *srv)
{
	return srv->nmilters > 0 || srv->junk_header != NULL;
}

/* ---- the envelope ------------------------------------------------------- */

static char *smtp_filter_dup(const char *s)
{
	return s ? xstrdup(s) : NULL;
}

static void smtp_filter_env_copy(struct spool_envelope *to, const struct spool_envelope *from)
{
	memset(to, 0, sizeof *to);
	memcpy(to->id, from->id, sizeof to->id);
	to->sender = xstrdup(from->sender ? from->sender : "");
	to->arrival = from->arrival;
	to->client = smtp_filter_dup(from->client);
	to->helo = smtp_filter_dup(from->helo);
	to->auth_user = smtp_filter_dup(from->auth_user);
	to->server = smtp_filter_dup(from->server);
	to->requiretls = from->requiretls;
	if (from->junk)
		spool_envelope_mark_junk(to);
	for (size_t i = 0; i < from->nrcpts; i++) {
		struct spool_rcpt *r = xappend(&to->rcpts, &to->nrcpts, sizeof *r);
		r->address = xstrdup(from->rcpts[i].address);
		r->orig = xstrdup(from->rcpts[i].orig ? from->rcpts[i].orig : from->rcpts[i].address);
		r->local = from->rcpts[i].local;
	}
}

static bool smtp_filter_rcpt_local(const struct smtp_filter *f, const char *address)
{
	const char *at = strrchr(address, '@');
	return at && conf_is_local_domain(f->c.conf, at + 1);
}

static void smtp_filter_add_rcpt(struct smtp_filter *f, const char *address)
{
	for (size_t i = 0; i < f->env.nrcpts; i++)
		if (strcasecmp(f->env.rcpts[i].address, address) == 0)
			return;
	struct spool_rcpt *r = xappend(&f->env.rcpts, &f->env.nrcpts, sizeof *r);
	r->address = xstrdup(address);
	r->orig = xstrdup(address);
	r->local = smtp_filter_rcpt_local(f, address);
}

static void smtp_filter_delete_rcpt(struct smtp_filter *f, const char *address)
{
	for (size_t i = 0; i < f->env.nrcpts; i++) {
		struct spool_rcpt *r = &f->env.rcpts[i];
		if (strcasecmp(r->address, address) != 0 && strcasecmp(r->orig, address) != 0)
			continue;
		free(r->address);
		free(r->orig);
		memmove(r, r + 1, (f->env.nrcpts - i - 1) * sizeof *r);
		f->env.nrcpts--;
		return;
	}
}

static void smtp_filter_envelope_mods(struct smtp_filter *f, const struct milter_result *res)
{
	for (size_t i = 0; i < res->nmods; i++) {
		const struct milter_mod *m = &res->mods[i];
		if (m->kind == MILTER_MOD_CHANGE_FROM) {
			free(f->env.sender);
			f->env.sender = xstrdup(m->name);
		} else if (m->kind == MILTER_MOD_ADD_RCPT) {
			smtp_filter_add_rcpt(f, m->name);
		} else if (m->kind == MILTER_MOD_DELETE_RCPT) {
			smtp_filter_delete_rcpt(f, m->name);
		}
	}
}

static void smtp_filter_header_mods(struct milter_headers *h, const struct milter_result *res)
{
	for (size_t i = 0; i < res->nmods; i++) {
		const struct milter_mod *m = &res->mods[i];
		if (m->kind == MILTER_MOD_ADD_HEADER)
			milter_headers_add(h, m->name, m->value);
		else if (m->kind == MILTER_MOD_INSERT_HEADER)
			milter_headers_insert(h, m->index, m->name, m->value);
		else if (m->kind == MILTER_MOD_CHANGE_HEADER)
			milter_headers_change(h, m->name, m->index, m->value);
	}
}

/* ---- the new version ---------------------------------------------------- */

static int smtp_filter_put(void *arg, const void *data, size_t len)
{
	return spool_msg_write(arg, data, len);
}

/* A replaced body with CRLF line ends (a filter may write bare LFs). */
static int smtp_filter_put_body(struct spool_msg *m, const char *b, size_t n)
{
	size_t start = 0;
	for (size_t i = 0; i < n; i++) {
		if (b[i] != '\n' || (i > 0 && b[i - 1] == '\r'))
			continue;
		if (spool_msg_write(m, b + start, i - start) < 0 || spool_msg_write(m, "\r\n", 2) < 0)
			return -1;
		start = i + 1;
	}
	return spool_msg_write(m, b + start, n - start);
}

static int smtp_filter_copy(struct spool_msg *to, int fd, off_t at, off_t end)
{
	char *buf = xmalloc(SMTP_FILTER_COPY_CHUNK);
	int r = 0;
	while (r == 0 && at < end) {
		size_t want = end - at < SMTP_FILTER_COPY_CHUNK ? (size_t)(end - at)
								: SMTP_FILTER_COPY_CHUNK;
		ssize_t n = pread(fd, buf, want, at);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			if (n == 0)
				errno = EIO;
			r = -1;
			break;
		}
		r = spool_msg_write(to, buf, (size_t)n);
		at += n;
	}
	int e = errno;
	free(buf);
	errno = e;
	return r;
}

static bool smtp_filter_junk_header(const struct smtp_filter *f, const struct milter_headers *h)
{
	const struct conf_server *srv = f->c.srv;
	return srv->junk_header && milter_headers_has(h, srv->junk_header, srv->junk_value);
}

/* Write the message again with res's changes (res NULL: only the
 * envelope's Junk mark), under the same ID; it replaces f->msg. */
static int smtp_filter_rewrite(struct smtp_filter *f, const struct milter_result *res)
{
	off_t offset;
	int fd = spool_msg_read_fd(f->msg, &offset);
	off_t size = spool_msg_size(f->msg);
	struct milter_headers h;
	if (fd < 0 || milter_headers_read(fd, offset, size, &h) < 0)
		return -1;
	if (res) {
		smtp_filter_envelope_mods(f, res);
		smtp_filter_header_mods(&h, res);
	}
	if (!f->env.junk && smtp_filter_junk_header(f, &h)) {
		log_info("event=junk id=%s reason=junk-header", f->env.id);
		spool_envelope_mark_junk(&f->env);
	}
	if (f->env.nrcpts == 0) {
		milter_headers_free(&h);
		errno = ENOENT; /* every recipient deleted */
		return -1;
	}
	struct spool_msg *m = spool_msg_begin_replacement(f->c.spool, &f->env, f->msg);
	int r = m ? milter_headers_write(&h, smtp_filter_put, m) : -1;
	if (r == 0 && res && res->replace_body)
		r = smtp_filter_put_body(m, res->body, res->body_len);
	else if (r == 0)
		r = smtp_filter_copy(m, fd, offset + h.body_offset, offset + size);
	int e = errno;
	milter_headers_free(&h);
	if (r < 0) {
		if (m)
			spool_msg_abort(m);
		errno = e;
		return -1;
	}
	spool_msg_abort(f->msg);
	f->msg = m;
	return 0;
}

/* ---- the run ------------------------------------------------------------ */

static void smtp_filter_end(struct smtp_filter *f, enum smtp_filter_verdict v, const char *milter)
{
	f->out.verdict = v;
	f->out.milter = milter;
	f->out.reply = f->reply;
	static const struct timeval now = {0, 0};
	evtimer_add(f->timer, &now);
}

static void smtp_filter_free(struct smtp_filter *f)
{
	struct smtp_milters *ms = f->c.milters;
	if (f->asking && ms) { /* its answer must never come: the connection goes */
		milter_conn_free(ms->conns[f->next - 1]);
		ms->conns[f->next - 1] = NULL;
	}
	if (f->msg)
		spool_msg_abort(f->msg);
	event_free(f->timer);
	spool_envelope_clear(&f->env);
	free(f->tls_version);
	free(f->cipher);
	free(f->reply);
	free(f);
}

static void smtp_filter_on_timer(evutil_socket_t fd, short what, void *arg)
{
	struct smtp_filter *f = arg;
	struct smtp_filter_outcome out = f->out;
	if (out.verdict == SMTP_FILTER_PASS) {
		out.msg = f->msg;
		out.junk = f->env.junk;
		f->msg = NULL;
	}
	f->reply = NULL;
	smtp_filter_done_fn done = f->done;
	void *darg = f->arg;
	smtp_filter_free(f);
	done(darg, &out);
	free((char *)out.reply);
}

/* After the last milter: the junk-header of a message none of them changed. */
static void smtp_filter_last(struct smtp_filter *f)
{
	off_t offset;
	int fd = spool_msg_read_fd(f->msg, &offset);
	struct milter_headers h;
	if (fd < 0 || milter_headers_read(fd, offset, spool_msg_size(f->msg), &h) < 0) {
		log_err("event=filter-error id=%s error=\"cannot read the message: %s\"", f->env.id,
			strerror(errno));
		smtp_filter_end(f, SMTP_FILTER_TEMPFAIL, NULL);
		return;
	}
	bool junk = !f->env.junk && smtp_filter_junk_header(f, &h);
	milter_headers_free(&h);
	if (junk && smtp_filter_rewrite(f, NULL) < 0) {
		log_err("event=filter-error id=%s error=\"cannot mark as junk: %s\"", f->env.id,
			strerror(errno));
		smtp_filter_end(f, SMTP_FILTER_TEMPFAIL, NULL);
		return;
	}
	smtp_filter_end(f, SMTP_FILTER_PASS, NULL);
}

static void smtp_filter_next(struct smtp_filter *f);

static enum smtp_filter_verdict smtp_filter_verdict_of(enum milter_verdict v)
{
	switch (v) {
	case MILTER_VERDICT_DISCARD: return SMTP_FILTER_DISCARD;
	case MILTER_VERDICT_TEMPFAIL: return SMTP_FILTER_TEMPFAIL;
	case MILTER_VERDICT_REJECT: return SMTP_FILTER_REJECT;
	case MILTER_VERDICT_ACCEPT: break;
	}
	return SMTP_FILTER_PASS;
}

static void smtp_filter_milter_done(void *arg, struct milter_result *res)
{
	struct smtp_filter *f = arg;
	const struct conf_milter *m = &f->c.srv->milters[f->next - 1];
	f->asking = false;
	log_info("event=milter milter=%s id=%s verdict=%s failed=%s mods=%zu body=%s quarantine=%s",
		 m->name, f->env.id,
		 res->verdict == MILTER_VERDICT_ACCEPT ? "accept"
		 : res->verdict == MILTER_VERDICT_DISCARD ? "discard"
		 : res->verdict == MILTER_VERDICT_TEMPFAIL ? "tempfail" : "reject",
		 res->failed ? "yes" : "no", res->nmods, res->replace_body ? "replaced" : "kept",
		 res->quarantine ? "yes" : "no");
	enum smtp_filter_verdict v = smtp_filter_verdict_of(res->verdict);
	if (v != SMTP_FILTER_PASS) {
		f->reply = res->reply;
		res->reply = NULL;
		milter_result_free(res);
		free(res);
		smtp_filter_end(f, v, m->name);
		return;
	}
	if (res->quarantine && !f->env.junk) {
		log_info("event=junk id=%s reason=quarantine milter=%s", f->env.id, m->name);
		spool_envelope_mark_junk(&f->env);
	}
	bool changed = res->nmods > 0 || res->replace_body || res->quarantine;
	int r = changed ? smtp_filter_rewrite(f, res) : 0;
	int e = errno;
	milter_result_free(res);
	free(res);
	if (r < 0 && e == ENOENT) {
		log_info("event=milter milter=%s id=%s note=\"every recipient deleted\"", m->name,
			 f->env.id);
		smtp_filter_end(f, SMTP_FILTER_DISCARD, m->name);
	} else if (r < 0) {
		log_err("event=filter-error id=%s milter=%s error=\"cannot apply changes: %s\"",
			f->env.id, m->name, strerror(e));
		smtp_filter_end(f, SMTP_FILTER_TEMPFAIL, NULL);
	} else {
		smtp_filter_next(f);
	}
}

/* "TLSv1.3 with cipher NAME (...)" (tls_describe) into its two macros. */
static void smtp_filter_tls_split(const char *d, char **version, char **cipher)
{
	free(*version);
	free(*cipher);
	*version = *cipher = NULL;
	if (!d)
		return;
	*version = xstrndup(d, strcspn(d, " "));
	const char *c = strstr(d, " with cipher ");
	if (c) {
		c += strlen(" with cipher ");
		*cipher = xstrndup(c, strcspn(c, " "));
	}
}

static void smtp_filter_tls_parts(struct smtp_filter *f)
{
	smtp_filter_tls_split(f->c.tls_desc, &f->tls_version, &f->cipher);
}

static void smtp_filter_next(struct smtp_filter *f)
{
	if (f->next == f->c.srv->nmilters) {
		smtp_filter_last(f);
		return;
	}
	struct smtp_milters *ms = f->c.milters;
	struct milter_conn *conn = ms && f->next < ms->n ? ms->conns[f->next] : NULL;
	f->next++;
	if (!conn) { /* never opened: cannot happen in a session that got here */
		log_err("event=filter-error id=%s error=\"milter not connected\"", f->env.id);
		smtp_filter_end(f, SMTP_FILTER_TEMPFAIL, NULL);
		return;
	}
	off_t offset;
	int fd = spool_msg_read_fd(f->msg, &offset);
	if (fd < 0) {
		log_err("event=filter-error id=%s error=\"cannot read the message: %s\"", f->env.id,
			strerror(errno));
		smtp_filter_end(f, SMTP_FILTER_TEMPFAIL, NULL);
		return;
	}
	struct milter_info info = {
		.session = f->c.session,
		.client_addr = f->c.client_addr,
		.client_name = f->c.client_name ? f->c.client_name : "unknown",
		.client_port = f->c.client_port,
		.client_family = f->c.client_family,
		.helo = f->env.helo,
		.hostname = f->c.srv->hostname,
		.daemon_name = f->c.srv->name,
		.queue_id = f->env.id,
		.auth_user = f->env.auth_user,
		.tls_version = f->tls_version,
		.cipher = f->cipher,
		.sender = f->env.sender,
		.fd = fd,
		.offset = offset,
		.size = spool_msg_size(f->msg),
		.body_max = f->c.srv->limits.message_size,
	};
	f->asking = true;
	milter_conn_ask(conn, MILTER_PHASE_DATA, &info, smtp_filter_milter_done, f);
}

struct smtp_filter *smtp_filter_start(const struct smtp_filter_client *c,
				      const struct spool_envelope *env, struct spool_msg *msg,
				      smtp_filter_done_fn done, void *arg)
{
	struct smtp_filter *f = xcalloc(1, sizeof *f);
	f->c = *c;
	smtp_filter_env_copy(&f->env, env);
	f->msg = msg;
	f->done = done;
	f->arg = arg;
	f->timer = evtimer_new(c->base, smtp_filter_on_timer, f);
	if (!f->timer)
		fatal("smtp_filter: cannot make a timer");
	smtp_filter_tls_parts(f);
	smtp_filter_next(f);
	return f;
}

void smtp_filter_cancel(struct smtp_filter *f)
{
	if (f)
		smtp_filter_free(f);
}

/* ---- the steps before DATA ---------------------------------------------- */

static const char *const smtp_milters_phase_names[] = {
	[MILTER_PHASE_CONNECT] = "connect", [MILTER_PHASE_HELO] = "helo",
	[MILTER_PHASE_MAIL] = "mail", [MILTER_PHASE_RCPT] = "rcpt", [MILTER_PHASE_DATA] = "data",
};

static void smtp_milters_end(struct smtp_milters *ms, enum smtp_filter_verdict v,
			     const char *milter)
{
	memset(&ms->out, 0, sizeof ms->out);
	ms->out.verdict = v;
	ms->out.milter = milter;
	ms->out.reply = ms->reply;
	static const struct timeval now = {0, 0};
	evtimer_add(ms->timer, &now); /* done() never runs inside the ask */
}

static void smtp_milters_on_timer(evutil_socket_t fd, short what, void *arg)
{
	struct smtp_milters *ms = arg;
	struct smtp_filter_outcome out = ms->out;
	char *reply = ms->reply;
	ms->reply = NULL;
	smtp_filter_done_fn done = ms->done;
	void *darg = ms->arg;
	ms->done = NULL;
	done(darg, &out);
	free(reply);
}

static void smtp_milters_info(const struct smtp_milters *ms, struct milter_info *info)
{
	const struct smtp_filter_client *c = &ms->c;
	memset(info, 0, sizeof *info);
	info->session = c->session;
	info->client_addr = c->client_addr;
	info->client_name = c->client_name ? c->client_name : "unknown";
	info->client_port = c->client_port;
	info->client_family = c->client_family;
	info->helo = ms->helo;
	info->hostname = c->srv->hostname;
	info->daemon_name = c->srv->name;
	info->auth_user = ms->auth_user;
	info->tls_version = ms->tls_version;
	info->cipher = ms->cipher;
	info->sender = ms->sender;
	info->rcpt = ms->rcpt;
	info->fd = -1;
}

static void smtp_milters_next(struct smtp_milters *ms);

static void smtp_milters_answer(void *arg, struct milter_result *res)
{
	struct smtp_milters *ms = arg;
	const struct conf_milter *m = &ms->c.srv->milters[ms->next - 1];
	enum smtp_filter_verdict v = res->verdict == MILTER_VERDICT_TEMPFAIL ? SMTP_FILTER_TEMPFAIL
				     : res->verdict == MILTER_VERDICT_REJECT ? SMTP_FILTER_REJECT
				     : SMTP_FILTER_PASS;
	/* a refusal is logged by the session with its reply; each step passed
	 * only for debugging (one line per recipient per filter) */
	log_debug("event=milter milter=%s session=%s step=%s verdict=%s failed=%s", m->name,
		  ms->c.session, smtp_milters_phase_names[ms->phase],
		  res->verdict == MILTER_VERDICT_ACCEPT ? "continue"
		  : res->verdict == MILTER_VERDICT_DISCARD ? "discard"
		  : v == SMTP_FILTER_TEMPFAIL ? "tempfail" : "reject", res->failed ? "yes" : "no");
	if (v != SMTP_FILTER_PASS) {
		ms->reply = res->reply;
		res->reply = NULL;
	}
	milter_result_free(res);
	free(res);
	if (v != SMTP_FILTER_PASS)
		smtp_milters_end(ms, v, m->name); /* the first refusal is the answer */
	else
		smtp_milters_next(ms);
}

static void smtp_milters_next(struct smtp_milters *ms)
{
	while (ms->next < ms->n && !ms->conns[ms->next] && ms->phase != MILTER_PHASE_CONNECT)
		ms->next++;
	if (ms->next == ms->n) {
		smtp_milters_end(ms, SMTP_FILTER_PASS, NULL);
		return;
	}
	struct milter_info info;
	smtp_milters_info(ms, &info);
	size_t i = ms->next++;
	if (ms->phase == MILTER_PHASE_CONNECT)
		ms->conns[i] = milter_conn_open(ms->c.base, &ms->c.srv->milters[i], &info,
						smtp_milters_answer, ms);
	else
		milter_conn_ask(ms->conns[i], ms->phase, &info, smtp_milters_answer, ms);
}

static void smtp_milters_ask(struct smtp_milters *ms, enum milter_phase phase,
			     smtp_filter_done_fn done, void *arg)
{
	if (ms->done)
		fatal("smtp_filter: a milter step asked while another runs");
	ms->phase = phase;
	ms->next = 0;
	ms->done = done;
	ms->arg = arg;
	smtp_milters_next(ms);
}

struct smtp_milters *smtp_milters_open(const struct smtp_filter_client *c,
				       smtp_filter_done_fn done, void *arg)
{
	if (c->srv->nmilters == 0)
		return NULL;
	struct smtp_milters *ms = xcalloc(1, sizeof *ms);
	ms->c = *c;
	ms->c.tls_desc = NULL; /* borrowed per step */
	ms->c.milters = ms;
	ms->n = c->srv->nmilters;
	ms->conns = xcalloc(ms->n, sizeof *ms->conns);
	ms->timer = evtimer_new(c->base, smtp_milters_on_timer, ms);
	if (!ms->timer)
		fatal("smtp_filter: cannot make a timer");
	smtp_milters_ask(ms, MILTER_PHASE_CONNECT, done, arg);
	return ms;
}

void smtp_milters_helo(struct smtp_milters *ms, const char *helo, const char *tls_desc,
		       smtp_filter_done_fn done, void *arg)
{
	free(ms->helo);
	ms->helo = xstrdup(helo);
	smtp_filter_tls_split(tls_desc, &ms->tls_version, &ms->cipher);
	smtp_milters_ask(ms, MILTER_PHASE_HELO, done, arg);
}

void smtp_milters_mail(struct smtp_milters *ms, const char *sender, const char *auth_user,
		       smtp_filter_done_fn done, void *arg)
{
	free(ms->sender);
	free(ms->auth_user);
	ms->sender = xstrdup(sender);
	ms->auth_user = smtp_filter_dup(auth_user);
	smtp_milters_ask(ms, MILTER_PHASE_MAIL, done, arg);
}

void smtp_milters_rcpt(struct smtp_milters *ms, const char *rcpt, smtp_filter_done_fn done,
		       void *arg)
{
	free(ms->rcpt);
	ms->rcpt = xstrdup(rcpt);
	smtp_milters_ask(ms, MILTER_PHASE_RCPT, done, arg);
}

void smtp_milters_abort(struct smtp_milters *ms)
{
	if (!ms)
		return;
	for (size_t i = 0; i < ms->n; i++)
		if (ms->conns[i])
			milter_conn_abort(ms->conns[i]);
}

void smtp_milters_free(struct smtp_milters *ms)
{
	if (!ms)
		return;
	for (size_t i = 0; i < ms->n; i++)
		milter_conn_free(ms->conns[i]);
	free(ms->conns);
	event_free(ms->timer);
	free(ms->helo);
	free(ms->tls_version);
	free(ms->cipher);
	free(ms->sender);
	free(ms->auth_user);
	free(ms->rcpt);
	free(ms->reply);
	free(ms);
}

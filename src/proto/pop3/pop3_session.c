/* pop3_session: a POP3 session.  RFC 1939 (states, commands, UPDATE only
 * after QUIT, autologout), RFC 2449 (CAPA, response codes), RFC 3206 (SYS
 * and AUTH codes), RFC 2595 (STLS), RFC 5034 (SASL AUTH), RFC 8314
 * (implicit TLS).
 *
 * Every command is dispatched from pop3_commands[], which states the
 * session states it is valid in and the policy it needs; one gate,
 * pop3_gate(), enforces those before any handler runs.  All input passes
 * linebuf_get().  Multi-line responses are produced as the connection
 * drains (pop3_pump), so a message of any size is sent from disk with
 * bounded memory.  The maildrop is the user's Maildir, read through
 * maildir.c: new/ is moved to cur/ at login, the listing is a snapshot of
 * that moment, and DELE only marks until QUIT. */
#include "proto/pop3/pop3_session.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>

#include <event2/event.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "conf/conf.h"
#include "net/conn.h"
#include "lib/linebuf.h"
#include "lib/log.h"
#include "lib/metrics.h"
#include "store/maildir.h"
#include "store/quota.h"
#include "lib/offload.h"
#include "auth/login.h"
#include "auth/sasl.h"
#include "proto/session.h"
#include "runtime/runtime.h"
#include "auth/userdb.h"
#include "lib/util.h"

/* Named limits of a session, every one in this place. */
enum {
	POP3_MAX_ERRORS = 20,           /* then -ERR and close */
	POP3_USER_MAX = 255,            /* the USER argument */
	POP3_CHUNK = 16 * 1024,         /* message bytes produced at a time */
	POP3_MAX_ARGS = 2,              /* TOP msg n */
};

enum pop3_state {
	POP3_AUTHORIZATION = 1u << 0,
	POP3_TRANSACTION = 1u << 1,
	POP3_UPDATE = 1u << 2,          /* after QUIT: removing what DELE marked */
	POP3_SASL = 1u << 3,            /* inside an AUTH exchange (RFC 5034) */
	POP3_HANDSHAKE = 1u << 4,       /* TLS handshake under way */
	POP3_CLOSING = 1u << 5,         /* flushing the last response */
};

static const char *pop3_state_name(enum pop3_state st)
{
	switch (st) {
	case POP3_AUTHORIZATION: return "authorization";
	case POP3_TRANSACTION: return "transaction";
	case POP3_UPDATE: return "update";
	case POP3_SASL: return "sasl";
	case POP3_HANDSHAKE: return "handshake";
	case POP3_CLOSING: return "closing";
	}
	return "?";
}

/* A multi-line response under way. */
enum pop3_out_kind { POP3_OUT_NONE, POP3_OUT_LIST, POP3_OUT_UIDL, POP3_OUT_MESSAGE };

/* Per message of the snapshot. */
enum { POP3_MARK_DELETED = 1u << 0, POP3_MARK_RETRIEVED = 1u << 1 };

struct pop3_session {
	struct session_base b;          /* id, generation, server, client, TLS */
	struct conn *io;
	struct linebuf lb;
	enum pop3_state state;
	bool tls_active;
	unsigned errors;
	bool in_process;                /* re-entrancy guard for pop3_run */
	/* logging in */
	char *user_name;                /* USER given; PASS must follow */
	struct login *login;            /* PASS, AUTH: the exchange, check and delay */
	/* the maildrop, in TRANSACTION */
	char *user;                     /* the authenticated user */
	char *maildir;
	struct maildir_lock *lock;
	struct maildir_list list;       /* the snapshot taken at login */
	unsigned char *marks;           /* POP3_MARK_* per message */
	/* the multi-line response being produced */
	enum pop3_out_kind out;
	size_t out_next;                /* LIST/UIDL: next index */
	size_t out_msg;                 /* RETR/TOP: index */
	struct maildir_stream *stream;
};

static void pop3_run(struct pop3_session *s);

/* ---- replies and states ------------------------------------------------ */

static void pop3_enter_state(struct pop3_session *s, enum pop3_state st)
{
	if (s->state == st)
		return;
	log_debug("event=state session=%s %s->%s", s->b.sid, pop3_state_name(s->state),
		  pop3_state_name(st));
	s->state = st;
}

static void pop3_close_after_flush(struct pop3_session *s)
{
	pop3_enter_state(s, POP3_CLOSING);
	conn_close(s->io);
}

/* A client error: after too many, the session ends. */
static void pop3_error(struct pop3_session *s)
{
	if (++s->errors < POP3_MAX_ERRORS || s->state == POP3_CLOSING)
		return;
	conn_printf(s->io, "-ERR Too many errors");
	pop3_close_after_flush(s);
}

static void pop3_err(struct pop3_session *s, const char *text)
{
	conn_printf(s->io, "-ERR %s", text);
	pop3_error(s);
}

/* ---- what may be used now ---------------------------------------------- */

/* ---- command table ----------------------------------------------------- */

/* USER and PASS: a login command that carries the password itself */
#define POP3_F_PASSWORD (SESSION_F_NEEDS_TLS | SESSION_F_PASSWORD)

struct pop3_command {
	const char *verb;
	void (*handler)(struct pop3_session *s, char *args);
	unsigned states;                /* enum pop3_state bits in which it is valid */
	unsigned flags;
	size_t line_max;                /* incl. CRLF */
};

static void pop3_cmd_capa(struct pop3_session *s, char *args);
static void pop3_cmd_stls(struct pop3_session *s, char *args);
static void pop3_cmd_user(struct pop3_session *s, char *args);
static void pop3_cmd_pass(struct pop3_session *s, char *args);
static void pop3_cmd_auth(struct pop3_session *s, char *args);
static void pop3_cmd_quit(struct pop3_session *s, char *args);
static void pop3_cmd_stat(struct pop3_session *s, char *args);
static void pop3_cmd_list(struct pop3_session *s, char *args);
static void pop3_cmd_uidl(struct pop3_session *s, char *args);
static void pop3_cmd_retr(struct pop3_session *s, char *args);
static void pop3_cmd_top(struct pop3_session *s, char *args);
static void pop3_cmd_dele(struct pop3_session *s, char *args);
static void pop3_cmd_noop(struct pop3_session *s, char *args);
static void pop3_cmd_rset(struct pop3_session *s, char *args);

#define POP3_AUTH_OR_TRANS (POP3_AUTHORIZATION | POP3_TRANSACTION)

static const struct pop3_command pop3_commands[] = {
	{"CAPA", pop3_cmd_capa, POP3_AUTH_OR_TRANS, 0, LINE_MAX_COMMAND},
	/* RFC 2595 §4: STLS only in the AUTHORIZATION state */
	{"STLS", pop3_cmd_stls, POP3_AUTHORIZATION, 0, LINE_MAX_COMMAND},
	{"USER", pop3_cmd_user, POP3_AUTHORIZATION, POP3_F_PASSWORD, LINE_MAX_COMMAND},
	{"PASS", pop3_cmd_pass, POP3_AUTHORIZATION, POP3_F_PASSWORD, LINE_MAX_COMMAND},
	/* RFC 5034 §4: the initial response may make the line long */
	{"AUTH", pop3_cmd_auth, POP3_AUTHORIZATION, SESSION_F_NEEDS_TLS, LINE_MAX_AUTH},
	{"QUIT", pop3_cmd_quit, POP3_AUTH_OR_TRANS, SESSION_F_REFUSED_OK, LINE_MAX_COMMAND},
	{"STAT", pop3_cmd_stat, POP3_TRANSACTION, 0, LINE_MAX_COMMAND},
	{"LIST", pop3_cmd_list, POP3_TRANSACTION, 0, LINE_MAX_COMMAND},
	{"UIDL", pop3_cmd_uidl, POP3_TRANSACTION, 0, LINE_MAX_COMMAND},
	{"RETR", pop3_cmd_retr, POP3_TRANSACTION, 0, LINE_MAX_COMMAND},
	{"TOP", pop3_cmd_top, POP3_TRANSACTION, 0, LINE_MAX_COMMAND},
	{"DELE", pop3_cmd_dele, POP3_TRANSACTION, 0, LINE_MAX_COMMAND},
	{"NOOP", pop3_cmd_noop, POP3_TRANSACTION, 0, LINE_MAX_COMMAND},
	{"RSET", pop3_cmd_rset, POP3_TRANSACTION, 0, LINE_MAX_COMMAND},
};

static const struct pop3_command *pop3_find_command(const char *verb)
{
	for (size_t i = 0; i < ARRAY_LEN(pop3_commands); i++)
		if (strcasecmp(pop3_commands[i].verb, verb) == 0)
			return &pop3_commands[i];
	return NULL;
}

/* The gate's verdict (proto/session.h) as POP3 replies (RFC 2449 and
 * RFC 3206 response codes). */
static bool pop3_gate(struct pop3_session *s, const struct pop3_command *c)
{
	switch (session_gate(&s->b, c->flags, (c->states & s->state) != 0, s->tls_active,
			     s->user != NULL)) {
	case SESSION_OPEN:
		return true;
	case SESSION_REFUSED:
		pop3_err(s, "[SYS/PERM] Access denied");
		break;
	case SESSION_NEEDS_TLS:
		pop3_err(s, "[AUTH] Must issue a STLS command first");
		break;
	case SESSION_BAD_STATE:
	case SESSION_NEEDS_AUTH:
	case SESSION_LISTED: /* never: listed clients are refused at the greeting */
		pop3_err(s, s->state == POP3_AUTHORIZATION ? "Log in first"
							   : "Command not valid in this state");
		break;
	case SESSION_PASSWORD_NEEDS_TLS:
		pop3_err(s, "[AUTH] Plaintext authentication disallowed on non-secure "
			    "connections: use STLS first");
		break;
	case SESSION_PASSWORD_DISABLED:
		pop3_err(s, "[AUTH] USER/PASS is not enabled: use AUTH");
		break;
	}
	return false;
}

static bool pop3_line_is_clean(const struct linebuf_line *l)
{
	if (l->has_nul || l->bare_cr)
		return false;
	for (size_t i = 0; i < l->len; i++) {
		unsigned char ch = (unsigned char)l->data[i];
		if (ch < 0x20 && ch != '\t')
			return false;
	}
	return true;
}

static void pop3_command(struct pop3_session *s, struct linebuf_line *l)
{
	if (!pop3_line_is_clean(l)) {
		pop3_err(s, "Invalid characters in command");
		return;
	}
	char *line = l->data;
	char *args = line + strcspn(line, " ");
	if (*args)
		*args++ = '\0';
	const struct pop3_command *c = pop3_find_command(line);
	/* the table's verbs: a fixed set of labels */
	metrics_count(METRIC_COMMANDS, METRIC_LABELS("pop3", c ? c->verb : "other"));
	/* RFC 1939 §7: PASS only right after USER */
	if (!c || c->handler != pop3_cmd_pass) {
		free(s->user_name);
		s->user_name = NULL;
	}
	if (!c) {
		pop3_err(s, "Unknown command");
		return;
	}
	if (l->len + 2 > c->line_max) {
		pop3_err(s, "Line too long");
		return;
	}
	if (pop3_gate(s, c))
		c->handler(s, args);
}

/* ---- arguments --------------------------------------------------------- */

/* Split args at spaces into at most max words; false if there are more. */
static bool pop3_split(char *args, char **argv, size_t max, size_t *argc)
{
	size_t n = 0;
	char *p = args;
	for (;;) {
		while (*p == ' ')
			p++;
		if (!*p)
			break;
		if (n == max)
			return false;
		argv[n++] = p;
		p += strcspn(p, " ");
		if (*p)
			*p++ = '\0';
	}
	*argc = n;
	return true;
}

/* A decimal number without sign, at most 9 digits. */
static bool pop3_number(const char *text, unsigned long *out)
{
	size_t n = strlen(text);
	if (n == 0 || n > 9 || strspn(text, "0123456789") != n)
		return false;
	*out = strtoul(text, NULL, 10);
	return true;
}

/* The message a number names (1-based), answering errors itself. */
static bool pop3_message(struct pop3_session *s, const char *arg, size_t *index)
{
	unsigned long n;
	if (!pop3_number(arg, &n)) {
		pop3_err(s, "Invalid message number");
		return false;
	}
	if (n == 0 || n > s->list.n) {
		pop3_err(s, "No such message");
		return false;
	}
	if (s->marks[n - 1] & POP3_MARK_DELETED) {
		conn_printf(s->io, "-ERR Message %lu already deleted", n);
		pop3_error(s);
		return false;
	}
	*index = (size_t)n - 1;
	return true;
}

/* Messages not marked deleted, and their size. */
static void pop3_maildrop_size(const struct pop3_session *s, size_t *count, uint64_t *octets)
{
	*count = 0;
	*octets = 0;
	for (size_t i = 0; i < s->list.n; i++) {
		if (s->marks[i] & POP3_MARK_DELETED)
			continue;
		(*count)++;
		*octets += s->list.msgs[i].size;
	}
}

/* ---- multi-line responses ---------------------------------------------- */

static void pop3_out_end(struct pop3_session *s)
{
	if (s->out == POP3_OUT_MESSAGE) {
		/* a TOP that sent everything retrieved the message too (fetchmail
		 * collects with "TOP n 99999999") */
		if (maildir_stream_whole(s->stream))
			s->marks[s->out_msg] |= POP3_MARK_RETRIEVED;
		maildir_stream_close(s->stream);
		s->stream = NULL;
	}
	s->out = POP3_OUT_NONE;
	conn_write(s->io, ".\r\n", 3); /* RFC 1939 §3: the termination octet */
}

/* The file could not be read to its end: the response cannot be finished
 * (an -ERR now would read as message text), so the session ends without
 * its terminating line and the client knows the retrieval failed. */
static void pop3_out_failed(struct pop3_session *s, int err)
{
	log_err("event=maildrop-error session=%s server=%s client=%s message=%zu error=\"%s\"",
		s->b.sid, s->b.srv->name, s->b.client, s->out_msg + 1, strerror(err));
	maildir_stream_close(s->stream);
	s->stream = NULL;
	s->out = POP3_OUT_NONE;
	pop3_close_after_flush(s);
}

/* The next line of a LIST or UIDL listing, or false at its end. */
static bool pop3_out_listing_line(struct pop3_session *s)
{
	while (s->out_next < s->list.n && (s->marks[s->out_next] & POP3_MARK_DELETED))
		s->out_next++;
	if (s->out_next == s->list.n)
		return false;
	const struct maildir_msg *m = &s->list.msgs[s->out_next++];
	if (s->out == POP3_OUT_LIST)
		conn_printf(s->io, "%zu %llu", s->out_next, (unsigned long long)m->size);
	else
		conn_printf(s->io, "%zu %s", s->out_next, m->uid);
	return true;
}

/* Produce the response while the connection takes it (CONN_OUTPUT_MAX at
 * a time); the drained callback calls again. */
static void pop3_pump(struct pop3_session *s)
{
	char buf[POP3_CHUNK];
	while (s->out != POP3_OUT_NONE && !conn_output_full(s->io)) {
		if (s->out != POP3_OUT_MESSAGE) {
			if (!pop3_out_listing_line(s))
				pop3_out_end(s);
			continue;
		}
		ssize_t n = maildir_stream_read(s->stream, buf, sizeof buf);
		if (n < 0) {
			pop3_out_failed(s, errno);
			return;
		}
		if (n == 0)
			pop3_out_end(s);
		else
			conn_write(s->io, buf, (size_t)n);
	}
}

/* ---- AUTHORIZATION: CAPA, STLS, QUIT ----------------------------------- */

static void pop3_cmd_capa(struct pop3_session *s, char *args)
{
	conn_printf(s->io, "+OK Capability list follows");
	conn_printf(s->io, "TOP");
	conn_printf(s->io, "UIDL");
	conn_printf(s->io, "RESP-CODES");
	conn_printf(s->io, "AUTH-RESP-CODE");
	conn_printf(s->io, "PIPELINING");
	if (s->state == POP3_AUTHORIZATION) {
		if (login_password_allowed(s->b.srv, s->tls_active))
			conn_printf(s->io, "USER");
		char mechs[128];
		sasl_mech_list(login_mechanisms(s->b.srv, s->tls_active), mechs, sizeof mechs);
		if (*mechs)
			conn_printf(s->io, "SASL %s", mechs);
		if (s->b.ts && !s->tls_active)
			conn_printf(s->io, "STLS");
	}
	conn_printf(s->io, "IMPLEMENTATION posthorn");
	conn_printf(s->io, ".");
}

static void pop3_cmd_stls(struct pop3_session *s, char *args)
{
	if (*args) {
		pop3_err(s, "Syntax: STLS");
		return;
	}
	if (s->tls_active) {
		pop3_err(s, "TLS already active");
		return;
	}
	if (!s->b.ts) {
		pop3_err(s, "STLS not available (no certificate)");
		return;
	}
	conn_printf(s->io, "+OK Begin TLS negotiation");
	linebuf_reset(&s->lb);
	if (!conn_starttls(s->io)) {
		log_err("event=tls-error session=%s error=\"cannot start TLS\"", s->b.sid);
		pop3_close_after_flush(s);
		return;
	}
	pop3_enter_state(s, POP3_HANDSHAKE);
}

/* ---- logging in -------------------------------------------------------- */

/* Lock and read the user's Maildir.  Answers -ERR itself on failure. */
static bool pop3_open_maildrop(struct pop3_session *s, const char *user)
{
	char err[512], q[LOG_VALUE_MAX * 2]; /* err names files: q, escaped, is logged */
	char *dir = maildir_path(s->b.rt->conf->mailboxes, user);
	if (!dir) {
		pop3_err(s, "[SYS/PERM] No mailbox for this user");
		return false;
	}
	if (maildir_create(dir, err, sizeof err) < 0)
		goto failed;
	switch (maildir_lock(dir, &s->lock, err, sizeof err)) {
	case MAILDIR_LOCK_OK:
		break;
	case MAILDIR_LOCK_BUSY:
		log_info("event=login session=%s server=%s client=%s result=in-use", s->b.sid,
			 s->b.srv->name, s->b.client);
		free(dir);
		pop3_err(s, "[IN-USE] Mailbox is in use by another POP3 session");
		return false;
	case MAILDIR_LOCK_ERROR:
		goto failed;
	}
	/* the snapshot: new/ moves to cur/ now, so that the numbers and
	 * names stay as they are for the whole session */
	if (maildir_scan(dir, MAILDIR_SCAN_MOVE_NEW, &s->list, err, sizeof err) < 0) {
		maildir_unlock(s->lock);
		s->lock = NULL;
		goto failed;
	}
	s->marks = xcalloc(s->list.n ? s->list.n : 1, 1);
	s->maildir = dir;
	return true;
failed:
	log_err("event=maildrop-error session=%s server=%s client=%s error=\"%s\"", s->b.sid,
		s->b.srv->name, s->b.client, log_quote(q, sizeof q, err, strlen(err)));
	free(dir);
	pop3_err(s, "[SYS/TEMP] Cannot open the mailbox");
	return false;
}

/* Credentials are right: open the maildrop and enter the TRANSACTION
 * state (or stay in AUTHORIZATION if it is in use). */
static void pop3_login(struct pop3_session *s, const char *user)
{
	const char *mech = login_mechanism(s->login);
	if (!pop3_open_maildrop(s, user))
		return;
	s->user = xstrdup(user);
	char esc[LOG_VALUE_MAX];
	log_info("event=login session=%s server=%s client=%s result=ok user=%s mechanism=%s tls=%s "
		 "messages=%zu octets=%llu", s->b.sid, s->b.srv->name, s->b.client,
		 log_escape(esc, sizeof esc, user, strlen(user)), mech, s->tls_active ? "yes" : "no",
		 s->list.n, (unsigned long long)s->list.total);
	pop3_enter_state(s, POP3_TRANSACTION);
	conn_printf(s->io, "+OK Logged in: %zu messages (%llu octets)", s->list.n,
		    (unsigned long long)s->list.total);
}

/* The login exchange's verdict as POP3 replies (RFC 1939, RFC 5034;
 * response codes of RFC 2449 and RFC 3206). */
static void pop3_login_done(void *owner, const struct login_verdict *v)
{
	struct pop3_session *s = owner;
	if (v->kind != LOGIN_CHALLENGE && s->state == POP3_SASL)
		pop3_enter_state(s, POP3_AUTHORIZATION);
	switch (v->kind) {
	case LOGIN_CHALLENGE:
		/* RFC 5034 §4 has no success data: the SCRAM server-final
		 * goes as a last challenge too, answered by an empty line */
		conn_printf(s->io, "+ %s", v->challenge);
		pop3_enter_state(s, POP3_SASL);
		return; /* the client's answer comes as the next line */
	case LOGIN_OK:
		pop3_login(s, v->user);
		break;
	case LOGIN_FAILED:
		/* RFC 3206 §4: AUTH is the code for bad credentials */
		conn_printf(s->io, "-ERR [AUTH] Authentication failed");
		pop3_error(s);
		break;
	case LOGIN_CANCELLED:
		conn_printf(s->io, "-ERR Authentication cancelled");
		break;
	case LOGIN_BAD_RESPONSE:
		pop3_err(s, "Cannot decode response");
		break;
	case LOGIN_UNKNOWN_MECHANISM:
		pop3_err(s, "Unrecognized authentication type");
		break;
	case LOGIN_NEEDS_TLS:
		pop3_err(s, "[AUTH] Plaintext authentication disallowed on non-secure connections: "
			    "use STLS first");
		break;
	case LOGIN_LOCKED_OUT:
		conn_printf(s->io, "-ERR [SYS/TEMP] Too many failed authentication attempts; try "
				   "again in %u seconds", v->retry_after);
		pop3_close_after_flush(s);
		break;
	case LOGIN_UNAVAILABLE: /* RFC 3206 §4 */
		conn_printf(s->io, "-ERR [SYS/TEMP] Temporary authentication failure");
		break;
	}
	pop3_run(s); /* a verdict that came later: read on */
}

/* The login exchange, made when the session first needs it (most
 * sessions never log in). */
static struct login *pop3_login_exchange(struct pop3_session *s)
{
	if (!s->login)
		s->login = session_login_new(&s->b, pop3_login_done, s);
	return s->login;
}

static void pop3_cmd_user(struct pop3_session *s, char *args)
{
	size_t n = strlen(args);
	if (n == 0 || n > POP3_USER_MAX || strchr(args, ' ')) {
		pop3_err(s, "Syntax: USER name");
		return;
	}
	free(s->user_name);
	s->user_name = xstrdup(args);
	/* the same answer for every name: nobody learns who exists */
	conn_printf(s->io, "+OK Send your password");
}

static void pop3_cmd_pass(struct pop3_session *s, char *args)
{
	char *name = s->user_name;
	s->user_name = NULL;
	if (!name) {
		pop3_err(s, "USER first");
		return;
	}
	/* RFC 1939 §7: the argument is the rest of the line, spaces included */
	login_password(pop3_login_exchange(s), "USER", name, strlen(name), args, strlen(args), s->tls_active);
	free(name);
}

/* ---- AUTH (RFC 5034) --------------------------------------------------- */

static void pop3_cmd_auth(struct pop3_session *s, char *args)
{
	char *initial = args + strcspn(args, " ");
	if (*initial)
		*initial++ = '\0';
	if (!*args) {
		/* the mechanism list of RFC 1734 clients */
		char mechs[128];
		sasl_mech_list(login_mechanisms(s->b.srv, s->tls_active), mechs, sizeof mechs);
		conn_printf(s->io, "+OK Mechanisms follow");
		char *save = NULL;
		for (char *m = strtok_r(mechs, " ", &save); m; m = strtok_r(NULL, " ", &save))
			conn_printf(s->io, "%s", m);
		conn_printf(s->io, ".");
		return;
	}
	if (strchr(initial, ' '))
		pop3_err(s, "Syntax: AUTH mechanism [initial-response]");
	else
		login_start(pop3_login_exchange(s), args, *initial ? initial : NULL, s->tls_active);
}

/* ---- TRANSACTION ------------------------------------------------------- */

static void pop3_cmd_stat(struct pop3_session *s, char *args)
{
	if (*args) {
		pop3_err(s, "Syntax: STAT");
		return;
	}
	size_t n;
	uint64_t octets;
	pop3_maildrop_size(s, &n, &octets);
	conn_printf(s->io, "+OK %zu %llu", n, (unsigned long long)octets);
}

/* LIST and UIDL: one message, or all of them as a multi-line response. */
static void pop3_listing(struct pop3_session *s, char *args, enum pop3_out_kind kind)
{
	char *argv[POP3_MAX_ARGS];
	size_t argc, i;
	if (!pop3_split(args, argv, 1, &argc)) {
		pop3_err(s, kind == POP3_OUT_LIST ? "Syntax: LIST [msg]" : "Syntax: UIDL [msg]");
		return;
	}
	if (argc == 1) {
		if (!pop3_message(s, argv[0], &i))
			return;
		const struct maildir_msg *m = &s->list.msgs[i];
		if (kind == POP3_OUT_LIST)
			conn_printf(s->io, "+OK %zu %llu", i + 1, (unsigned long long)m->size);
		else
			conn_printf(s->io, "+OK %zu %s", i + 1, m->uid);
		return;
	}
	size_t n;
	uint64_t octets;
	pop3_maildrop_size(s, &n, &octets);
	if (kind == POP3_OUT_LIST)
		conn_printf(s->io, "+OK %zu messages (%llu octets)", n, (unsigned long long)octets);
	else
		conn_printf(s->io, "+OK Unique-ID listing follows");
	s->out = kind;
	s->out_next = 0;
}

static void pop3_cmd_list(struct pop3_session *s, char *args)
{
	pop3_listing(s, args, POP3_OUT_LIST);
}

static void pop3_cmd_uidl(struct pop3_session *s, char *args)
{
	pop3_listing(s, args, POP3_OUT_UIDL);
}

/* RETR and TOP: open the file first, so that a message that cannot be
 * read gets -ERR instead of a broken response. */
static void pop3_send_message(struct pop3_session *s, size_t i, long body_lines)
{
	char *path = maildir_msg_path(s->maildir, &s->list.msgs[i]);
	s->stream = maildir_stream_open(path, MAILDIR_STREAM_DOTSTUFF, body_lines);
	if (!s->stream) {
		log_err("event=maildrop-error session=%s server=%s client=%s message=%zu "
			"error=\"%s\"", s->b.sid, s->b.srv->name, s->b.client, i + 1, strerror(errno));
		free(path);
		pop3_err(s, "[SYS/TEMP] Message cannot be read");
		return;
	}
	free(path);
	if (body_lines < 0)
		conn_printf(s->io, "+OK %llu octets", (unsigned long long)s->list.msgs[i].size);
	else
		conn_printf(s->io, "+OK Top of message follows");
	s->out = POP3_OUT_MESSAGE;
	s->out_msg = i;
}

static void pop3_cmd_retr(struct pop3_session *s, char *args)
{
	char *argv[POP3_MAX_ARGS];
	size_t argc, i;
	if (!pop3_split(args, argv, 1, &argc) || argc != 1) {
		pop3_err(s, "Syntax: RETR msg");
		return;
	}
	if (pop3_message(s, argv[0], &i))
		pop3_send_message(s, i, -1);
}

static void pop3_cmd_top(struct pop3_session *s, char *args)
{
	char *argv[POP3_MAX_ARGS];
	size_t argc, i;
	unsigned long lines;
	if (!pop3_split(args, argv, 2, &argc) || argc != 2 || !pop3_number(argv[1], &lines)) {
		pop3_err(s, "Syntax: TOP msg lines");
		return;
	}
	if (pop3_message(s, argv[0], &i))
		pop3_send_message(s, i, (long)lines);
}

static void pop3_cmd_dele(struct pop3_session *s, char *args)
{
	char *argv[POP3_MAX_ARGS];
	size_t argc, i;
	if (!pop3_split(args, argv, 1, &argc) || argc != 1) {
		pop3_err(s, "Syntax: DELE msg");
		return;
	}
	if (!pop3_message(s, argv[0], &i))
		return;
	/* only marked: removed in the UPDATE state after QUIT (RFC 1939 §6) */
	s->marks[i] |= POP3_MARK_DELETED;
	conn_printf(s->io, "+OK Message %zu deleted", i + 1);
}

static void pop3_cmd_noop(struct pop3_session *s, char *args)
{
	conn_printf(s->io, "+OK");
}

static void pop3_cmd_rset(struct pop3_session *s, char *args)
{
	for (size_t i = 0; i < s->list.n; i++)
		s->marks[i] &= (unsigned char)~POP3_MARK_DELETED;
	conn_printf(s->io, "+OK %zu messages (%llu octets)", s->list.n,
		    (unsigned long long)s->list.total);
}

/* ---- QUIT and the UPDATE state ----------------------------------------- */

/* RFC 1939 §6: remove what DELE marked, now and only now.  Until here the
 * files were untouched, so a crash or a dropped connection removes
 * nothing. */
static bool pop3_update(struct pop3_session *s, size_t *deleted)
{
	bool ok = true;
	*deleted = 0;
	for (size_t i = 0; i < s->list.n; i++) {
		if (!(s->marks[i] & POP3_MARK_DELETED))
			continue;
		if (maildir_delete(s->maildir, &s->list.msgs[i]) < 0) {
			log_err("event=maildrop-error session=%s server=%s client=%s "
				"message=%zu error=\"%s\"", s->b.sid, s->b.srv->name, s->b.client, i + 1,
				strerror(errno));
			ok = false;
			continue;
		}
		(*deleted)++;
	}
	if (*deleted && maildir_sync(s->maildir) < 0) {
		log_err("event=maildrop-error session=%s server=%s client=%s error=\"fsync: %s\"",
			s->b.sid, s->b.srv->name, s->b.client, strerror(errno));
		ok = false;
	}
	char err[256];
	/* the quota's usage (store/quota.h) is counted again when next asked
	 * for: POP3 and IMAP see the same */
	if (*deleted && quota_invalidate(s->maildir, err, sizeof err) < 0)
		log_err("event=quota-error session=%s error=\"%s\"", s->b.sid, err);
	return ok;
}

static void pop3_cmd_quit(struct pop3_session *s, char *args)
{
	if (s->state != POP3_TRANSACTION) {
		conn_printf(s->io, "+OK posthorn POP3 server signing off");
		pop3_close_after_flush(s);
		return;
	}
	pop3_enter_state(s, POP3_UPDATE);
	size_t deleted, retrieved = 0;
	bool ok = pop3_update(s, &deleted);
	for (size_t i = 0; i < s->list.n; i++)
		retrieved += (s->marks[i] & POP3_MARK_RETRIEVED) != 0;
	char esc[LOG_VALUE_MAX];
	log_escape(esc, sizeof esc, s->user, strlen(s->user));
	log_info("event=logout session=%s server=%s client=%s user=%s retrieved=%zu deleted=%zu%s",
		 s->b.sid, s->b.srv->name, s->b.client, esc, retrieved, deleted,
		 ok ? "" : " result=incomplete");
	maildir_unlock(s->lock);
	s->lock = NULL;
	if (ok)
		conn_printf(s->io, "+OK posthorn POP3 server signing off (%zu messages deleted)",
			    deleted);
	else
		conn_printf(s->io, "-ERR [SYS/TEMP] Some deleted messages were not removed");
	pop3_close_after_flush(s);
}

/* ---- input loop -------------------------------------------------------- */

static void pop3_line_too_long(struct pop3_session *s)
{
	if (s->state == POP3_SASL) {
		login_abort(s->login);
		pop3_enter_state(s, POP3_AUTHORIZATION);
		pop3_err(s, "Authentication exchange line is too long");
	} else {
		pop3_err(s, "Line too long");
	}
}

static void pop3_run(struct pop3_session *s)
{
	/* one line buffer for all sessions: lines are handled before the
	 * next is read, and the loop is single-threaded */
	static char line[LINE_MAX_ANY + 1];

	if (s->in_process || !s->io)
		return;
	s->in_process = true;
	struct evbuffer *in = conn_input(s->io);
	while (!(s->state & (POP3_CLOSING | POP3_HANDSHAKE)) && !login_busy(s->login) &&
	       !conn_closing(s->io)) {
		if (s->out != POP3_OUT_NONE) {
			pop3_pump(s);
			if (s->out != POP3_OUT_NONE)
				break; /* resumed when the output drains */
			continue;
		}
		if (conn_output_full(s->io))
			break;
		/* commands are short; AUTH lines may be long before login */
		enum pop3_state before = s->state;
		size_t limit = before == POP3_TRANSACTION ? LINE_MAX_COMMAND : LINE_MAX_AUTH;
		struct linebuf_line l;
		enum linebuf_status st = linebuf_get(&s->lb, in, limit, line, sizeof line, &l);
		if (st == LINEBUF_NEED_MORE)
			break;
		if (st == LINEBUF_TOO_LONG) {
			pop3_line_too_long(s);
			continue;
		}
		if (before == POP3_SASL)
			login_response(pop3_login_exchange(s), l.data, l.has_nul || l.bare_cr);
		else
			pop3_command(s, &l);
		if (before != POP3_TRANSACTION)
			OPENSSL_cleanse(line, l.len); /* PASS and AUTH lines hold secrets */
	}
	s->in_process = false;
}

/* ---- transport events (conn.h) ----------------------------------------- */

static void pop3_free(struct pop3_session *s);

static void pop3_on_input(void *arg)
{
	pop3_run(arg);
}

static void pop3_on_drained(void *arg)
{
	pop3_run(arg);
}

static void pop3_on_closed(void *arg)
{
	pop3_free(arg);
}

/* RFC 1939 §3: the autologout timer ends the session without UPDATE and
 * without a response. */
static void pop3_on_timeout(void *arg)
{
	struct pop3_session *s = arg;
	log_info("event=timeout session=%s server=%s client=%s state=%s", s->b.sid, s->b.srv->name,
		 s->b.client, pop3_state_name(s->state));
	pop3_close_after_flush(s);
}

static void pop3_greet(struct pop3_session *s)
{
	if (s->b.refused) {
		/* a refused client hears why and is gone */
		conn_printf(s->io, "-ERR [SYS/PERM] %s", s->b.refusal ? s->b.refusal : "Access denied");
		pop3_close_after_flush(s);
		return;
	}
	conn_printf(s->io, "+OK posthorn POP3 server ready %s", s->b.srv->hostname);
}

/* TLS is up: forget what was learnt before it (RFC 2595 §4) and go on
 * in the AUTHORIZATION state. */
static void pop3_on_tls_ready(void *arg)
{
	struct pop3_session *s = arg;
	s->tls_active = true;
	free(s->user_name);
	s->user_name = NULL;
	pop3_enter_state(s, POP3_AUTHORIZATION);
	if (s->b.implicit_tls)
		pop3_greet(s);
	pop3_run(s);
}

static const struct conn_handler pop3_conn_handler = {
	.input = pop3_on_input,
	.drained = pop3_on_drained,
	.tls_ready = pop3_on_tls_ready,
	.timeout = pop3_on_timeout,
	.closed = pop3_on_closed,
};

/* ---- life -------------------------------------------------------------- */

static void pop3_free(struct pop3_session *s)
{
	maildir_stream_close(s->stream);
	maildir_list_free(&s->list);
	maildir_unlock(s->lock); /* without QUIT nothing was removed */
	free(s->marks);
	free(s->maildir);
	free(s->user);
	free(s->user_name);
	login_free(s->login);
	conn_free(s->io);
	session_base_release(&s->b);
	free(s);
}

/* Daemon shutdown: a last word when no response is under way (inside one
 * it would read as message text), then close once it has left.  Nothing
 * marked is removed: there was no QUIT. */
static void pop3_shutdown(struct session_link *c)
{
	struct pop3_session *s = c->session;
	if (!s->io || s->state == POP3_HANDSHAKE) {
		pop3_free(s);
		return;
	}
	if (s->state == POP3_CLOSING)
		return;
	if (s->out == POP3_OUT_NONE)
		conn_printf(s->io, "-ERR [SYS/TEMP] Server shutting down");
	maildir_stream_close(s->stream);
	s->stream = NULL;
	s->out = POP3_OUT_NONE;
	pop3_close_after_flush(s);
}

/* Shutdown took too long: drop the session now. */
static void pop3_abort(struct session_link *c)
{
	pop3_free(c->session);
}

void pop3_session_start(const struct session_start *st)
{
	const struct conf_server *srv = st->srv;
	struct pop3_session *s = xcalloc(1, sizeof *s);
	/* "p": never the id of an SMTP session of the same moment */
	session_base_init(&s->b, st, "p", s, pop3_shutdown, pop3_abort);
	s->state = st->implicit_tls ? POP3_HANDSHAKE : POP3_AUTHORIZATION;
	/* RFC 1939 §3: the timeout is at least 10 minutes by default */
	s->io = session_conn_new(&s->b, st, &pop3_conn_handler, s, srv->limits.timeout);
	if (!s->io) {
		pop3_free(s);
		return;
	}
	if (!st->implicit_tls)
		pop3_greet(s);
}

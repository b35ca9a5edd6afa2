/* smtp_session: an inbound SMTP session.  RFC 5321 (commands, replies,
 * limits), RFC 3463 (enhanced status codes), RFC 2920 (PIPELINING),
 * RFC 1870 (SIZE), RFC 6152 (8BITMIME), RFC 6531 (SMTPUTF8), RFC 4954
 * (AUTH, and MAIL's AUTH= parameter).
 *
 * Every command is dispatched from smtp_commands[], which states the
 * session states it is valid in and the policy it needs; one gate,
 * smtp_gate(), enforces those before any handler runs.  Handlers check
 * syntax first, then act.  All input passes linebuf_get(). */
#include "proto/smtp/smtp_session.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "net/access.h"
#include "auth/aliases.h"
#include "auth/directory.h"
#include "auth/login.h"
#include "conf/conf.h"
#include "net/conn.h"
#include "lib/date.h"
#include "lib/linebuf.h"
#include "lib/log.h"
#include "lib/metrics.h"
#include "lib/recent.h"
#include "lib/offload.h"
#include "auth/sasl.h"
#include "auth/throttle.h"
#include "proto/session.h"
#include "runtime/runtime.h"
#include "proto/smtp/smtp_addr.h"
#include "proto/smtp/smtp_data.h"
#include "proto/smtp/smtp_filter.h"
#include "proto/smtp/smtp_quota.h"
#include "proto/smtp/smtp_verify.h"
#include "queue/scheduler.h"
#include "queue/spool.h"
#include "net/tls.h"
#include "auth/userdb.h"
#include "lib/strbuf.h"
#include "lib/util.h"

/* Named limits of a session, every one in this place. */
enum {
	/* + SIZE, BODY, SMTPUTF8, and the 500 of AUTH= (RFC 4954 §3) */
	SMTP_MAIL_LINE_MAX = LINE_MAX_COMMAND + 26 + 14 + 10 + 500,
	SMTP_MAX_ERRORS = 20,           /* then 421 and close */
	SMTP_HELO_MAX = 255,
	/* our Received: field, every part at its own limit (HELO, client
	 * name and address, TLS, user, hostname, id, "for", date) with room */
	SMTP_RECEIVED_MAX = 2048,
};

enum smtp_state {
	SMTP_INIT = 1u << 0,    /* greeting sent, no HELO/EHLO yet */
	SMTP_READY = 1u << 1,   /* HELO/EHLO done, no transaction */
	SMTP_MAIL = 1u << 2,    /* MAIL accepted */
	SMTP_RCPT = 1u << 3,    /* at least one RCPT accepted */
	SMTP_DATA = 1u << 4,    /* reading message text */
	SMTP_CLOSING = 1u << 5, /* flushing the last reply */
	SMTP_HANDSHAKE = 1u << 6, /* TLS handshake under way */
	SMTP_AUTH = 1u << 7,    /* inside an AUTH exchange (RFC 4954) */
	SMTP_REFUSED = 1u << 8, /* refused by the connection rules: QUIT only */
};
#define SMTP_ANY_COMMAND_STATE (SMTP_INIT | SMTP_READY | SMTP_MAIL | SMTP_RCPT)

static const char *smtp_state_name(enum smtp_state st)
{
	switch (st) {
	case SMTP_INIT: return "init";
	case SMTP_READY: return "ready";
	case SMTP_MAIL: return "mail";
	case SMTP_RCPT: return "rcpt";
	case SMTP_DATA: return "data";
	case SMTP_CLOSING: return "closing";
	case SMTP_HANDSHAKE: return "handshake";
	case SMTP_AUTH: return "auth";
	case SMTP_REFUSED: return "refused";
	}
	return "?";
}

/* MAIL's flags that the transaction keeps. */
struct smtp_mail_flags {
	bool smtputf8;
	bool requiretls;
	uint64_t size;          /* SIZE= (RFC 1870); 0: not declared */
};

struct smtp_txn {
	char *sender;           /* "" for <> */
	bool smtputf8;
	bool requiretls;        /* MAIL ... REQUIRETLS (RFC 8689) */
	uint64_t size;          /* MAIL ... SIZE= (RFC 1870); 0: not declared */
	unsigned nrcpt_cmds;    /* accepted RCPT commands */
	char *first_rcpt;       /* for "for <...>" in Received: */
	struct spool_rcpt *rcpts; /* expanded, de-duplicated */
	size_t nrcpts;
};

struct smtp_session {
	struct session_base b;  /* id, generation, server, client, TLS context */
	struct conn *io;        /* the transport; NULL once the client is gone */
	struct linebuf lb;
	enum smtp_state state;
	char *helo;
	bool esmtp;
	bool tls_active;
	char *auth_user;        /* after a successful AUTH */
	struct login *login;    /* AUTH: the exchange, its check and delay */
	struct event *held;     /* a refused recipient's reply waits (error-delay) */
	char *held_reply;       /* ... this one */
	struct directory_job *lookup; /* users ldap: a sender or recipient being looked up */
	char *lookup_address;   /* ... its address */
	char *lookup_sender;    /* MAIL: the sender as written, SMTPUTF8 or not */
	struct smtp_mail_flags lookup_flags;
	unsigned errors;
	struct smtp_txn txn;
	struct smtp_data data;
	struct spool_msg *msg;
	bool committing;        /* waiting for the filters or the spool */
	struct smtp_filter *filter; /* the milters at work on the message */
	struct smtp_milters *milters; /* the session's milter connections, or NULL */
	bool milter_wait;       /* a step waits for the milters' answer */
	char *milter_helo;      /* ... HELO/EHLO: the name */
	bool milter_esmtp;      /* ... EHLO */
	char *milter_rcpt;      /* ... RCPT: the address, accepted by posthorn */
	size_t rcpt_mark;       /* the transaction's recipients before this RCPT */
	struct smtp_verify *verify; /* the transaction's `verify` checks, or NULL */
	bool verifying;         /* waiting for one of their lookups */
	bool data_end_pending;  /* the end of data came while it waited */
	bool dead;              /* connection gone while committing */
	bool output_blocked;
	bool in_process;        /* re-entrancy guard for smtp_process_input */
	int spool_err;          /* errno of a failed write during DATA */
	char msg_id[SPOOL_ID_SIZE];
	uint64_t msg_size;
};

/* ---- replies ---------------------------------------------------------- */

static void smtp_reply(struct smtp_session *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void smtp_reply(struct smtp_session *s, const char *fmt, ...)
{
	/* RFC 5321 §4.5.3.1.5: a reply line is at most 512 octets; conn
	 * refuses (and logs) anything over its own bound, never cuts it */
	va_list ap;
	va_start(ap, fmt);
	conn_vprintf(s->io, fmt, ap);
	va_end(ap);
}

static void smtp_enter_state(struct smtp_session *s, enum smtp_state st)
{
	if (s->state == st)
		return;
	log_debug("event=state session=%s %s->%s", s->b.sid, smtp_state_name(s->state),
		  smtp_state_name(st));
	s->state = st;
}

static void smtp_close_after_flush(struct smtp_session *s)
{
	smtp_enter_state(s, SMTP_CLOSING);
	conn_close(s->io);
}

static void smtp_error(struct smtp_session *s)
{
	if (++s->errors < SMTP_MAX_ERRORS)
		return;
	smtp_reply(s, "421 4.7.0 %s Error: too many errors", s->b.srv->hostname);
	smtp_close_after_flush(s);
}

/* ---- the transaction --------------------------------------------------- */

static void smtp_txn_reset(struct smtp_session *s)
{
	struct smtp_txn *t = &s->txn;
	free(t->sender);
	free(t->first_rcpt);
	for (size_t i = 0; i < t->nrcpts; i++) {
		free(t->rcpts[i].address);
		free(t->rcpts[i].orig);
	}
	free(t->rcpts);
	memset(t, 0, sizeof *t);
	smtp_verify_free(s->verify); /* cancels its lookups */
	s->verify = NULL;
	s->verifying = s->data_end_pending = false;
	smtp_milters_abort(s->milters); /* SMFIC_ABORT where a milter saw MAIL */
	if (s->msg) {
		spool_msg_abort(s->msg);
		s->msg = NULL;
	}
	if (s->state & (SMTP_MAIL | SMTP_RCPT | SMTP_DATA))
		smtp_enter_state(s, SMTP_READY);
}

static bool smtp_txn_has(const struct smtp_txn *t, const char *address)
{
	for (size_t i = 0; i < t->nrcpts; i++)
		if (strcmp(t->rcpts[i].address, address) == 0)
			return true;
	return false;
}

static void smtp_txn_add(struct smtp_txn *t, const char *address, const char *orig, bool local)
{
	if (smtp_txn_has(t, address))
		return; /* delivered to each once */
	struct spool_rcpt *r = xappend(&t->rcpts, &t->nrcpts, sizeof *r);
	r->address = xstrdup(address);
	r->orig = xstrdup(orig);
	r->local = local;
}

/* ---- command table ---------------------------------------------------- */

struct smtp_command {
	const char *verb;
	void (*handler)(struct smtp_session *s, char *args);
	unsigned states;        /* enum smtp_state bits in which it is valid */
	unsigned flags;         /* enum session_cmd_flag: the gate's policy */
	size_t line_max;        /* incl. CRLF */
};

static void smtp_cmd_helo(struct smtp_session *s, char *args);
static void smtp_cmd_ehlo(struct smtp_session *s, char *args);
static void smtp_cmd_mail(struct smtp_session *s, char *args);
static void smtp_cmd_rcpt(struct smtp_session *s, char *args);
static void smtp_cmd_data(struct smtp_session *s, char *args);
static void smtp_cmd_rset(struct smtp_session *s, char *args);
static void smtp_cmd_noop(struct smtp_session *s, char *args);
static void smtp_cmd_quit(struct smtp_session *s, char *args);
static void smtp_cmd_vrfy(struct smtp_session *s, char *args);
static void smtp_cmd_expn(struct smtp_session *s, char *args);
static void smtp_cmd_help(struct smtp_session *s, char *args);
static void smtp_cmd_starttls(struct smtp_session *s, char *args);
static void smtp_cmd_auth(struct smtp_session *s, char *args);

static const struct smtp_command smtp_commands[] = {
	{"HELO", smtp_cmd_helo, SMTP_ANY_COMMAND_STATE, 0, LINE_MAX_COMMAND},
	{"EHLO", smtp_cmd_ehlo, SMTP_ANY_COMMAND_STATE, 0, LINE_MAX_COMMAND},
	{"MAIL", smtp_cmd_mail, SMTP_READY, SESSION_F_NEEDS_TLS | SESSION_F_NEEDS_AUTH, SMTP_MAIL_LINE_MAX},
	{"RCPT", smtp_cmd_rcpt, SMTP_MAIL | SMTP_RCPT, SESSION_F_NEEDS_TLS, LINE_MAX_COMMAND},
	{"DATA", smtp_cmd_data, SMTP_RCPT, SESSION_F_NEEDS_TLS, LINE_MAX_COMMAND},
	{"RSET", smtp_cmd_rset, SMTP_ANY_COMMAND_STATE, 0, LINE_MAX_COMMAND},
	{"NOOP", smtp_cmd_noop, SMTP_ANY_COMMAND_STATE, 0, LINE_MAX_COMMAND},
	{"QUIT", smtp_cmd_quit, SMTP_ANY_COMMAND_STATE | SMTP_REFUSED, SESSION_F_REFUSED_OK,
	 LINE_MAX_COMMAND},
	{"VRFY", smtp_cmd_vrfy, SMTP_ANY_COMMAND_STATE, 0, LINE_MAX_COMMAND},
	{"EXPN", smtp_cmd_expn, SMTP_ANY_COMMAND_STATE, 0, LINE_MAX_COMMAND},
	{"HELP", smtp_cmd_help, SMTP_ANY_COMMAND_STATE, 0, LINE_MAX_COMMAND},
	/* RFC 3207 §4: not inside a transaction */
	{"STARTTLS", smtp_cmd_starttls, SMTP_INIT | SMTP_READY, 0, LINE_MAX_COMMAND},
	/* RFC 4954 §4: after EHLO, not during a transaction */
	{"AUTH", smtp_cmd_auth, SMTP_READY, SESSION_F_NEEDS_TLS, LINE_MAX_AUTH},
};

static const struct smtp_command *smtp_find_command(const char *verb)
{
	for (size_t i = 0; i < ARRAY_LEN(smtp_commands); i++)
		if (strcasecmp(smtp_commands[i].verb, verb) == 0)
			return &smtp_commands[i];
	return NULL;
}

/* RFC 5321 §4.3.2: 503 for a command out of sequence, with the reason. */
static void smtp_bad_sequence(struct smtp_session *s, const struct smtp_command *c)
{
	const char *why = "Bad sequence of commands";
	if (s->state == SMTP_INIT)
		why = "Send HELO/EHLO first";
	else if (strcmp(c->verb, "MAIL") == 0)
		why = "Nested MAIL command";
	else if (s->state == SMTP_READY)
		why = "Need MAIL command";
	else if (strcmp(c->verb, "DATA") == 0)
		why = "Need RCPT command";
	smtp_reply(s, "503 5.5.1 Error: %s", why);
	smtp_error(s);
}

/* A client on a block list that has not logged in, on a server that
 * offers AUTH: it may log in, but sends nothing before. */
static void smtp_refuse_listed(struct smtp_session *s)
{
	log_info("event=refuse session=%s server=%s client=%s reason=dnsbl stage=mail",
		 s->b.sid, s->b.srv->name, s->b.client);
	smtp_reply(s, "554 5.7.1 %s", s->b.refusal ? s->b.refusal : "Service unavailable");
}

/* The gate's verdict (proto/session.h) as SMTP replies. */
static bool smtp_gate(struct smtp_session *s, const struct smtp_command *c)
{
	switch (session_gate(&s->b, c->flags, (c->states & s->state) != 0, s->tls_active,
			     s->auth_user != NULL)) {
	case SESSION_OPEN:
		return true;
	case SESSION_REFUSED:
		/* RFC 5321 §3.1: after a 554 greeting, only QUIT */
		smtp_reply(s, "503 5.7.1 Error: access denied");
		break;
	case SESSION_NEEDS_TLS:
		smtp_reply(s, "530 5.7.0 Must issue a STARTTLS command first");
		break;
	case SESSION_BAD_STATE:
		smtp_bad_sequence(s, c);
		return false;
	case SESSION_PASSWORD_NEEDS_TLS: /* no SMTP command carries a password itself */
	case SESSION_PASSWORD_DISABLED:
	case SESSION_NEEDS_AUTH:
		smtp_reply(s, "530 5.7.0 Authentication required");
		break;
	case SESSION_LISTED:
		smtp_refuse_listed(s);
		break;
	}
	smtp_error(s);
	return false;
}

static bool smtp_line_is_clean(const struct linebuf_line *l)
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

static void smtp_command(struct smtp_session *s, struct linebuf_line *l)
{
	if (!smtp_line_is_clean(l)) {
		smtp_reply(s, "500 5.5.2 Error: invalid characters in command");
		smtp_error(s);
		return;
	}
	char *line = l->data;
	char *args = line + strcspn(line, " ");
	if (*args)
		*args++ = '\0';
	const struct smtp_command *c = smtp_find_command(line);
	/* the table's verbs: a fixed set of labels */
	metrics_count(METRIC_COMMANDS, METRIC_LABELS("smtp", c ? c->verb : "other"));
	if (!c) {
		smtp_reply(s, "500 5.5.1 Error: command not recognized");
		smtp_error(s);
		return;
	}
	if (l->len + 2 > c->line_max) {
		smtp_reply(s, "500 5.5.2 Line too long");
		smtp_error(s);
		return;
	}
	if (smtp_gate(s, c))
		c->handler(s, args);
}

/* ---- HELO, EHLO, and the small commands -------------------------------- */

static bool smtp_helo_arg_ok(const char *args)
{
	size_t n = strlen(args);
	if (n == 0 || n > SMTP_HELO_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)args[i];
		if (ch <= 0x20 || ch >= 0x7f)
			return false;
	}
	return true;
}

static void smtp_hello_proceed(struct smtp_session *s, const char *name, bool esmtp);
static void smtp_process_input(struct smtp_session *s);

static void smtp_milter_refusal(struct smtp_session *s, const struct smtp_filter_outcome *o,
				const char *step);

/* Postfix sends HELO to the milters when the client says it, and their
 * refusal is the command's answer. */
static void smtp_hello_filtered(void *arg, const struct smtp_filter_outcome *o)
{
	struct smtp_session *s = arg;
	char *name = s->milter_helo;
	s->milter_helo = NULL;
	s->milter_wait = false;
	if (s->state == SMTP_CLOSING) {
		/* a shutdown said goodbye meanwhile */
	} else if (o->verdict == SMTP_FILTER_PASS) {
		smtp_hello_proceed(s, name, s->milter_esmtp);
	} else {
		smtp_milter_refusal(s, o, "helo");
	}
	free(name);
	smtp_process_input(s); /* the commands pipelined behind it */
}

static void smtp_hello(struct smtp_session *s, char *args, bool esmtp)
{
	if (!smtp_helo_arg_ok(args)) {
		smtp_reply(s, "501 5.5.4 Syntax: %s hostname", esmtp ? "EHLO" : "HELO");
		smtp_error(s);
		return;
	}
	if (!s->milters) {
		smtp_hello_proceed(s, args, esmtp);
		return;
	}
	s->milter_wait = true;
	s->milter_helo = xstrdup(args);
	s->milter_esmtp = esmtp;
	smtp_milters_helo(s->milters, args, conn_tls_desc(s->io), smtp_hello_filtered, s);
}

static void smtp_cmd_helo(struct smtp_session *s, char *args)
{
	smtp_hello(s, args, false);
}

static void smtp_cmd_ehlo(struct smtp_session *s, char *args)
{
	smtp_hello(s, args, true);
}

static void smtp_hello_reply(struct smtp_session *s);

static void smtp_hello_proceed(struct smtp_session *s, const char *name, bool esmtp)
{
	smtp_txn_reset(s); /* RFC 5321 §4.1.4: EHLO/HELO reset the transaction */
	free(s->helo);
	s->helo = xstrdup(name);
	smtp_enter_state(s, SMTP_READY);
	s->esmtp = esmtp;
	if (esmtp)
		smtp_hello_reply(s);
	else
		smtp_reply(s, "250 %s", s->b.srv->hostname);
}

static void smtp_hello_reply(struct smtp_session *s)
{
	smtp_reply(s, "250-%s", s->b.srv->hostname);
	smtp_reply(s, "250-PIPELINING");
	smtp_reply(s, "250-SIZE %llu", (unsigned long long)s->b.srv->limits.message_size);
	smtp_reply(s, "250-8BITMIME");
	smtp_reply(s, "250-ENHANCEDSTATUSCODES");
	if (s->b.ts && !s->tls_active)
		smtp_reply(s, "250-STARTTLS");
	char mechs[128];
	sasl_mech_list(login_mechanisms(s->b.srv, s->tls_active), mechs, sizeof mechs);
	if (*mechs)
		smtp_reply(s, "250-AUTH %s", mechs);
	/* RFC 8689 §4: only where the session is protected by TLS */
	if (s->tls_active)
		smtp_reply(s, "250-REQUIRETLS");
	smtp_reply(s, "250 SMTPUTF8");
}

static void smtp_cmd_rset(struct smtp_session *s, char *args)
{
	smtp_txn_reset(s);
	smtp_reply(s, "250 2.0.0 Ok");
}

static void smtp_cmd_noop(struct smtp_session *s, char *args)
{
	smtp_reply(s, "250 2.0.0 Ok");
}

static void smtp_cmd_quit(struct smtp_session *s, char *args)
{
	smtp_reply(s, "221 2.0.0 Bye");
	smtp_close_after_flush(s);
}

static void smtp_cmd_vrfy(struct smtp_session *s, char *args)
{
	/* RFC 5321 §3.5.3: no address harvesting. */
	smtp_reply(s, "252 2.5.2 Cannot VRFY user, but will accept message and attempt delivery");
}

static void smtp_cmd_expn(struct smtp_session *s, char *args)
{
	/* RFC 5321 §3.5.2, §7.3: a known command this server does not carry
	 * out (no list harvesting); 502, not the 500 of an unknown one */
	smtp_reply(s, "502 5.5.1 EXPN not implemented");
	smtp_error(s);
}

static void smtp_cmd_help(struct smtp_session *s, char *args)
{
	smtp_reply(s, "214 2.0.0 Commands: HELO EHLO MAIL RCPT DATA RSET NOOP QUIT VRFY HELP AUTH%s",
		   s->b.ts ? " STARTTLS" : "");
}

/* ---- MAIL --------------------------------------------------------------- */

static const char *smtp_addr_error(enum smtp_addr_result r, bool is_rcpt)
{
	switch (r) {
	case SMTP_ADDR_BAD_PREFIX:
		return is_rcpt ? "501 5.5.4 Syntax: RCPT TO:<address>"
			       : "501 5.5.4 Syntax: MAIL FROM:<address>";
	case SMTP_ADDR_BAD_PARAM:
		return "501 5.5.4 Syntax error in parameters";
	case SMTP_ADDR_NULL_NOT_ALLOWED:
		return "501 5.1.3 Null recipient not allowed";
	case SMTP_ADDR_TOO_LONG:
		return is_rcpt ? "501 5.1.3 Recipient address too long"
			       : "501 5.1.7 Sender address too long";
	default:
		return is_rcpt ? "501 5.1.3 Bad recipient address syntax"
			       : "501 5.1.7 Bad sender address syntax";
	}
}

/* AUTH= of MAIL (RFC 4954 §5): the mailbox of the message's original
 * submitter, or <> when it is not known.  EHLO offers AUTH, so every
 * client may give it.  Only an authenticated session's value could be
 * trusted, and posthorn records none and never relays with AUTH=: every
 * value counts as AUTH=<> once it is known to be well-formed (§5: a
 * server that does not trust the claim behaves as if AUTH=<> was given).
 * The authenticated user itself goes to Received: (received-auth). */
static bool smtp_mail_auth_param(struct smtp_session *s, const char *value)
{
	struct smtp_addr submitter;
	if (smtp_addr_parse_auth_param(value, &submitter) != SMTP_ADDR_OK) {
		smtp_reply(s, "501 5.5.4 Syntax: AUTH=<> or AUTH=mailbox as xtext");
		return false;
	}
	smtp_addr_clear(&submitter);
	return true;
}

/* Parameters of MAIL: SIZE (RFC 1870), BODY (RFC 6152), SMTPUTF8
 * (RFC 6531), AUTH (RFC 4954), REQUIRETLS (RFC 8689).  Returns false after
 * replying. */
static bool smtp_mail_params(struct smtp_session *s, const struct smtp_param *p, size_t n,
			     struct smtp_mail_flags *flags)
{
	for (size_t i = 0; i < n; i++) {
		if (strcmp(p[i].keyword, "SIZE") == 0) {
			char *end;
			if (!p[i].value || !*p[i].value || strspn(p[i].value, "0123456789") != strlen(p[i].value)) {
				smtp_reply(s, "501 5.5.4 Syntax: SIZE=<number>");
				return false;
			}
			errno = 0;
			unsigned long long sz = strtoull(p[i].value, &end, 10);
			if (errno == ERANGE || sz > s->b.srv->limits.message_size) {
				smtp_reply(s, "552 5.3.4 Message size exceeds fixed maximum message size");
				return false;
			}
			flags->size = sz;
		} else if (strcmp(p[i].keyword, "BODY") == 0) {
			if (!p[i].value || (strcasecmp(p[i].value, "7BIT") != 0 &&
					    strcasecmp(p[i].value, "8BITMIME") != 0)) {
				smtp_reply(s, "501 5.5.4 Syntax: BODY=7BIT or BODY=8BITMIME");
				return false;
			}
		} else if (strcmp(p[i].keyword, "SMTPUTF8") == 0 && !p[i].value) {
			flags->smtputf8 = true;
		} else if (strcmp(p[i].keyword, "REQUIRETLS") == 0 && !p[i].value) {
			/* RFC 8689 §4.1: offered only over TLS, so only taken there */
			if (!s->tls_active) {
				smtp_reply(s, "530 5.7.10 REQUIRETLS needs a TLS session");
				return false;
			}
			flags->requiretls = true;
		} else if (strcmp(p[i].keyword, "AUTH") == 0) {
			if (!smtp_mail_auth_param(s, p[i].value))
				return false;
		} else {
			char esc[LOG_VALUE_MAX];
			smtp_reply(s, "555 5.5.4 Unsupported parameter %s",
				   log_escape(esc, 64, p[i].keyword, strlen(p[i].keyword)));
			return false;
		}
	}
	return true;
}

static char *smtp_canonical_address(const struct smtp_addr *a)
{
	char *dom = smtp_domain_normalize(a->domain);
	char *local = str_lower(xstrdup(a->local_unquoted));
	char *address = xasprintf("%s@%s", local, dom);
	free(dom);
	free(local);
	return address;
}

/* Is address the authenticated user's own, or an alias that delivers to
 * them? */
/* reason: one of the fixed reasons of the log's event=reject */
static void smtp_count_rejected(const struct smtp_session *s, const char *reason)
{
	metrics_count(METRIC_MESSAGES_REJECTED, METRIC_LABELS(s->b.srv->name, reason));
}

static bool smtp_sender_owned(const struct smtp_session *s, const char *address)
{
	if (strcmp(address, s->auth_user) == 0)
		return true;
	size_t n;
	if (!s->b.rt->aliases || !aliases_lookup(s->b.rt->aliases, address, &n))
		return false;
	char **finals;
	bool owned = false;
	n = aliases_expand(s->b.rt->aliases, address, &finals);
	for (size_t i = 0; i < n && !owned; i++)
		owned = strcmp(finals[i], s->auth_user) == 0;
	aliases_free_list(finals, n);
	return owned;
}

/* Do local users have to log in to send, anywhere in this configuration? */
static bool smtp_local_senders_authenticate(const struct conf *conf)
{
	for (size_t i = 0; i < conf->nservers; i++)
		if (conf->servers[i].protocol == PROTO_SMTP && !conf->servers[i].auth.anonymous)
			return true;
	return false;
}

/* Sender rules (`sender-must-match` in posthorn.conf(5)):
 * an authenticated user sends only as themselves or an alias of theirs;
 * an unauthenticated client may not claim a local domain's address when
 * local users have a submission server where they must log in — mail
 * from a local user comes from there, so on the open port it is forged. */
static void smtp_sender_refuse_not_owned(struct smtp_session *s)
{
	char esc[LOG_VALUE_MAX];
	smtp_reply(s, "553 5.7.1 Sender address rejected: not owned by user %s",
		   log_escape(esc, sizeof esc, s->auth_user, strlen(s->auth_user)));
}

static void smtp_sender_log_refused(struct smtp_session *s, const char *address)
{
	char esc[LOG_VALUE_MAX];
	log_info("event=reject session=%s server=%s client=%s reason=sender from=%s%s%s", s->b.sid,
		 s->b.srv->name, s->b.client, log_escape(esc, sizeof esc, address, strlen(address)),
		 s->auth_user ? " user=" : "", s->auth_user ? s->auth_user : "");
	smtp_count_rejected(s, "sender");
}

static bool smtp_sender_allowed(struct smtp_session *s, const struct smtp_addr *a)
{
	if (a->null || !a->domain)
		return true;
	char *address = smtp_canonical_address(a);
	bool ok = true;
	if (s->auth_user) {
		if (s->b.srv->auth.sender_must_match && !smtp_sender_owned(s, address)) {
			smtp_sender_refuse_not_owned(s);
			ok = false;
		}
	} else if (!a->literal && conf_is_local_domain(s->b.rt->conf, a->domain) &&
		   smtp_local_senders_authenticate(s->b.rt->conf)) {
		smtp_reply(s, "553 5.7.1 Sender address rejected: local senders must authenticate");
		ok = false;
	}
	if (!ok)
		smtp_sender_log_refused(s, address);
	free(address);
	return ok;
}

static void smtp_process_input(struct smtp_session *s);

/* The milters' answer to MAIL: a refusal ends the transaction it began. */
static void smtp_mail_filtered(void *arg, const struct smtp_filter_outcome *o)
{
	struct smtp_session *s = arg;
	s->milter_wait = false;
	if (s->state == SMTP_CLOSING) {
		/* a shutdown said goodbye meanwhile */
	} else if (o->verdict == SMTP_FILTER_PASS) {
		smtp_reply(s, "250 2.1.0 Ok");
	} else {
		smtp_milter_refusal(s, o, "mail");
		smtp_txn_reset(s);
	}
	smtp_process_input(s); /* the commands pipelined behind MAIL */
}

/* Posthorn's own checks passed: the milters have the last word. */
static void smtp_mail_filter(struct smtp_session *s)
{
	if (!s->milters) {
		smtp_reply(s, "250 2.1.0 Ok");
		return;
	}
	s->milter_wait = true;
	smtp_milters_mail(s->milters, s->txn.sender, s->auth_user, smtp_mail_filtered, s);
}

static void smtp_mail_verified(void *arg)
{
	struct smtp_session *s = arg;
	s->verifying = false;
	smtp_mail_filter(s);
	smtp_process_input(s); /* the commands pipelined behind MAIL */
}

/* The server's `verify` checks for mail from the Internet: SPF now (the
 * 250 waits for it, the loop does not), the rest during DATA.  Clients
 * that logged in submit mail; they are not checked, but their messages,
 * like every message where some server verifies, lose Authentication-
 * Results fields that name a verifying server. */
static void smtp_mail_verify(struct smtp_session *s)
{
	s->verify = smtp_verify_new(s->b.srv, s->b.rt->conf, runtime_resolver(s->b.rt, s->b.srv),
				    s->b.sid, s->b.client, !s->auth_user);
	if (smtp_verify_mail(s->verify, &s->b.peer, s->txn.sender, s->helo ? s->helo : "",
			     smtp_mail_verified, s)) {
		s->verifying = true;
		return;
	}
	smtp_mail_filter(s);
}

static void smtp_mail_accept(struct smtp_session *s, const char *sender,
			     const struct smtp_mail_flags *flags)
{
	s->txn.sender = xstrdup(sender);
	s->txn.smtputf8 = flags->smtputf8;
	s->txn.requiretls = flags->requiretls;
	s->txn.size = flags->size;
	smtp_enter_state(s, SMTP_MAIL);
	smtp_mail_verify(s);
}

/* ---- users ldap: is the sender one of the user's own addresses? ----------
 * An entry's every address is its user's (proxyAddresses): a sender of a
 * local domain that is neither the login nor an alias of it is looked up,
 * and the session reads no further command until the answer. */

static bool smtp_sender_needs_directory(const struct smtp_session *s, const struct smtp_addr *a)
{
	if (!s->auth_user || !s->b.rt->directory || !s->b.srv->auth.sender_must_match ||
	    a->null || !a->domain || a->literal || !conf_is_local_domain(s->b.rt->conf, a->domain))
		return false;
	char *address = smtp_canonical_address(a);
	bool owned = smtp_sender_owned(s, address);
	free(address);
	return !owned;
}

static void smtp_sender_directory_answer(void *owner, const struct directory_answer *a)
{
	struct smtp_session *s = owner;
	char *address = s->lookup_address, *sender = s->lookup_sender;
	s->lookup = NULL;
	s->lookup_address = s->lookup_sender = NULL;
	if (s->state == SMTP_CLOSING) {
		/* a shutdown said goodbye meanwhile */
	} else if (a->status == DIRECTORY_FOUND && strcmp(a->mailbox, s->auth_user) == 0) {
		smtp_mail_accept(s, sender, &s->lookup_flags);
	} else if (a->status == DIRECTORY_UNAVAILABLE) {
		smtp_reply(s, "451 4.3.0 Sender address lookup failed; try again later");
	} else {
		smtp_sender_refuse_not_owned(s);
		smtp_sender_log_refused(s, address);
		smtp_error(s);
	}
	free(address);
	free(sender);
	smtp_process_input(s); /* an answer that came later: read on */
}

static void smtp_sender_ask_directory(struct smtp_session *s, const struct smtp_addr *a,
				      const struct smtp_mail_flags *flags)
{
	s->lookup_address = smtp_canonical_address(a);
	s->lookup_sender = xstrdup(a->text);
	s->lookup_flags = *flags;
	struct directory_job *j = directory_lookup(s->b.rt->directory, s->lookup_address,
						   smtp_sender_directory_answer, s);
	if (j) /* NULL: the cache answered already */
		s->lookup = j;
}

static void smtp_cmd_mail(struct smtp_session *s, char *args)
{
	struct smtp_addr addr;
	struct smtp_param params[SMTP_PARAMS_MAX];
	size_t nparams = 0;
	struct smtp_mail_flags flags = {0};

	enum smtp_addr_result r = smtp_addr_parse_arg(args, false, &addr, params, &nparams);
	if (r != SMTP_ADDR_OK) {
		smtp_reply(s, "%s", smtp_addr_error(r, false));
		smtp_error(s);
		return;
	}
	if (!smtp_mail_params(s, params, nparams, &flags)) {
		smtp_error(s);
	} else if (addr.utf8 && !flags.smtputf8) {
		smtp_reply(s, "553 5.6.7 Non-ASCII sender address requires SMTPUTF8");
		smtp_error(s);
	} else if (smtp_sender_needs_directory(s, &addr)) {
		smtp_sender_ask_directory(s, &addr, &flags);
	} else if (!smtp_sender_allowed(s, &addr)) {
		smtp_error(s);
	} else {
		smtp_mail_accept(s, addr.null ? "" : addr.text, &flags);
	}
	smtp_addr_clear(&addr);
	smtp_params_clear(params, nparams);
}

/* ---- RCPT --------------------------------------------------------------- */

static bool smtp_is_postmaster(const char *local)
{
	return strcasecmp(local, "postmaster") == 0;
}

/* Does a local address exist here?  A user, an alias, or postmaster
 * (RFC 5321 §4.5.1: postmaster of every local domain is always valid). */
static bool smtp_local_known(const struct smtp_session *s, const char *address, const char *local)
{
	size_t n;
	return smtp_is_postmaster(local) || userdb_find(s->b.rt->users, address) ||
	       (s->b.rt->aliases && aliases_lookup(s->b.rt->aliases, address, &n));
}

/* ---- refused recipients: the error delay and the probing lockout -----
 * Once a session has made `error-delay`'s count of errors, each refused
 * recipient is answered only after the delay (postconf(5):
 * smtpd_error_sleep_time): the session reads nothing further
 * meanwhile, and the loop goes on serving everybody else.  Unknown
 * recipients from a client that has not logged in are also counted per
 * client address over time (`unknown-recipients`, auth/throttle.h), so
 * that reconnecting buys a harvester nothing. */

static void smtp_process_input(struct smtp_session *s);

static void smtp_held_reply_due(evutil_socket_t fd, short what, void *arg)
{
	struct smtp_session *s = arg;
	char *reply = s->held_reply;
	event_free(s->held);
	s->held = NULL;
	s->held_reply = NULL;
	if (s->state != SMTP_CLOSING) { /* a shutdown said goodbye meanwhile */
		smtp_reply(s, "%s", reply);
		smtp_error(s);
	}
	free(reply);
	smtp_process_input(s); /* the commands that waited behind it */
}

/* reply: a whole reply line, without CRLF. */
static void smtp_rcpt_refuse(struct smtp_session *s, const char *reply)
{
	const struct conf_limits *lim = &s->b.srv->limits;
	if (lim->error_delay > 0 && s->errors >= lim->error_delay_after) {
		struct timeval tv = {.tv_sec = (time_t)lim->error_delay};
		s->held = evtimer_new(s->b.rt->base, smtp_held_reply_due, s);
		if (s->held && evtimer_add(s->held, &tv) == 0) {
			s->held_reply = xstrdup(reply);
			return;
		}
		/* no timer: answer at once rather than never */
		log_warn("event=error-delay-error session=%s", s->b.sid);
		if (s->held)
			event_free(s->held);
		s->held = NULL;
	}
	smtp_reply(s, "%s", reply);
	smtp_error(s);
}

/* Is this client refused for probing now (*retry_after: seconds left)?
 * A client that has logged in is not. */
static bool smtp_probing_locked(const struct smtp_session *s, unsigned *retry_after)
{
	struct throttle_rule rule = throttle_recipient_rule(s->b.srv);
	return !s->auth_user && throttle_locked(s->b.rt->throttle, s->b.client, THROTTLE_RECIPIENT,
						&rule, time(NULL), retry_after);
}

static void smtp_count_unknown_recipient(struct smtp_session *s)
{
	struct throttle_rule rule = throttle_recipient_rule(s->b.srv);
	if (s->auth_user || rule.limit == 0)
		return;
	if (throttle_count(s->b.rt->throttle, s->b.client, THROTTLE_RECIPIENT, &rule, time(NULL))) {
		log_warn("event=lockout session=%s server=%s client=%s reason=unknown-recipients "
			 "duration=%us", s->b.sid, s->b.srv->name, s->b.client, rule.duration);
		metrics_count(METRIC_LOCKOUTS, METRIC_LABELS(s->b.srv->name, "unknown-recipients"));
		recent_note("lockout", s->b.srv->name, "%s: unknown recipients, for %us", s->b.client,
			    rule.duration);
	}
}

static void smtp_rcpt_refuse_locked(struct smtp_session *s, unsigned retry_after)
{
	char reply[CONN_REPLY_MAX];
	log_info("event=reject session=%s server=%s client=%s reason=unknown-recipients-lockout "
		 "retry_after=%us", s->b.sid, s->b.srv->name, s->b.client, retry_after);
	smtp_count_rejected(s, "unknown-recipients-lockout");
	/* fits: a fixed text and one number */
	xsnprintf(reply, sizeof reply, "450 4.7.1 Too many unknown recipients from your address; "
				       "try again in %u seconds", retry_after);
	smtp_rcpt_refuse(s, reply);
}

static void smtp_rcpt_taken(struct smtp_session *s, const char *address)
{
	if (!s->txn.first_rcpt)
		s->txn.first_rcpt = xstrdup(address);
	s->txn.nrcpt_cmds++;
	smtp_enter_state(s, SMTP_RCPT);
	smtp_reply(s, "250 2.1.5 Ok");
}

/* The recipients this RCPT added (from s->rcpt_mark on) are taken back. */
static void smtp_txn_drop_from(struct smtp_txn *t, size_t mark)
{
	for (size_t i = mark; i < t->nrcpts; i++) {
		free(t->rcpts[i].address);
		free(t->rcpts[i].orig);
	}
	if (mark < t->nrcpts)
		t->nrcpts = mark;
}

/* The milters' answer to one recipient: a refusal is this RCPT's only. */
static void smtp_rcpt_filtered(void *arg, const struct smtp_filter_outcome *o)
{
	struct smtp_session *s = arg;
	char *address = s->milter_rcpt;
	s->milter_rcpt = NULL;
	s->milter_wait = false;
	if (s->state == SMTP_CLOSING) {
		/* a shutdown said goodbye meanwhile */
	} else if (o->verdict == SMTP_FILTER_PASS) {
		smtp_rcpt_taken(s, address);
	} else {
		smtp_txn_drop_from(&s->txn, s->rcpt_mark);
		smtp_milter_refusal(s, o, "rcpt");
	}
	free(address);
	smtp_process_input(s); /* the commands pipelined behind RCPT */
}

/* Posthorn took the recipient (its expansion is in the transaction from
 * s->rcpt_mark on): the milters have the last word. */
static void smtp_rcpt_accepted(struct smtp_session *s, const char *address)
{
	if (!s->milters) {
		smtp_rcpt_taken(s, address);
		return;
	}
	s->milter_wait = true;
	s->milter_rcpt = xstrdup(address);
	smtp_milters_rcpt(s->milters, address, smtp_rcpt_filtered, s);
}

static void smtp_rcpt_accept(struct smtp_session *s, const char *address)
{
	/* RFC 1870 §6.1: with the size declared, a full mailbox is said at
	 * RCPT; an alias's targets are checked at delivery */
	size_t ntargets;
	bool alias = s->b.rt->aliases && aliases_lookup(s->b.rt->aliases, address, &ntargets);
	if (s->txn.size && !alias && smtp_quota_full(s->b.rt, s->b.sid, address, s->txn.size)) {
		smtp_reply(s, SMTP_QUOTA_FULL_REPLY);
		return;
	}
	char **finals = NULL;
	size_t n;
	if (s->b.rt->aliases) {
		n = aliases_expand(s->b.rt->aliases, address, &finals);
		if (n == 0) { /* an alias loop, or nested too deep */
			aliases_free_list(finals, n);
			log_warn("event=alias-empty session=%s address=%s", s->b.sid, address);
			char reply[CONN_REPLY_MAX];
			if (bsnprintf(reply, sizeof reply, "550 5.1.1 <%s>: Recipient address "
							   "rejected: alias leads nowhere", address))
				smtp_rcpt_refuse(s, reply);
			else /* never cut: without the address then */
				smtp_rcpt_refuse(s, "550 5.1.1 Recipient address rejected: alias "
						    "leads nowhere");
			return;
		}
	} else {
		finals = xmalloc(sizeof *finals);
		finals[0] = xstrdup(address);
		n = 1;
	}
	for (size_t i = 0; i < n; i++) {
		const char *at = strrchr(finals[i], '@');
		bool local = at && conf_is_local_domain(s->b.rt->conf, at + 1);
		smtp_txn_add(&s->txn, finals[i], address, local);
	}
	if (s->b.rt->aliases)
		aliases_free_list(finals, n);
	else {
		free(finals[0]);
		free(finals);
	}
	smtp_rcpt_accepted(s, address);
}

/* The address's canonical local form: local part unquoted, domain
 * normalised; the bare <postmaster> and our own address literal name the
 * first local domain's users. */
static char *smtp_rcpt_address(const struct smtp_session *s, const struct smtp_addr *a)
{
	if (!a->domain)
		return xasprintf("postmaster@%s", s->b.rt->conf->domains[0]);
	if (a->literal) /* our own address: the primary local domain's user */
		return str_lower(xasprintf("%s@%s", a->local_unquoted, s->b.rt->conf->domains[0]));
	return smtp_canonical_address(a);
}

/* Is the address literal ("[192.0.2.1]", "[IPv6:2001:db8::1]") the
 * address this client connected to?  Only then is it local (RFC 5321
 * §4.1.3); any other literal is somebody else's. */
static bool smtp_literal_is_ours(const struct smtp_session *s, const char *domain)
{
	char buf[64];
	size_t n = strlen(domain);
	if (n < 3 || n - 2 >= sizeof buf)
		return false;
	memcpy(buf, domain + 1, n - 2);
	buf[n - 2] = '\0';
	const char *ip = buf;
	int family = AF_INET;
	if (strncasecmp(ip, "IPv6:", 5) == 0) {
		ip += 5;
		family = AF_INET6;
	}
	unsigned char want[16];
	if (inet_pton(family, ip, want) != 1)
		return false;
	if (s->b.local.ss_family == AF_INET)
		return family == AF_INET &&
		       memcmp(&((const struct sockaddr_in *)&s->b.local)->sin_addr, want, 4) == 0;
	if (s->b.local.ss_family == AF_INET6) {
		const struct in6_addr *a6 = &((const struct sockaddr_in6 *)&s->b.local)->sin6_addr;
		if (family == AF_INET6)
			return memcmp(a6, want, 16) == 0;
		return IN6_IS_ADDR_V4MAPPED(a6) && memcmp(&a6->s6_addr[12], want, 4) == 0;
	}
	return false;
}

static bool smtp_rcpt_is_local(const struct smtp_session *s, const struct smtp_addr *a)
{
	if (!a->domain)
		return true; /* the bare <postmaster> */
	if (a->literal)
		return smtp_literal_is_ours(s, a->domain);
	return conf_is_local_domain(s->b.rt->conf, a->domain); /* any case, one trailing dot */
}

/* A local part that routes onwards ("user%other", "user@other" quoted,
 * "other!user"): the old ways of relaying through a host.  Never honoured,
 * never relayed (RFC 5321 §3.6.1 leaves it to the server). */
static bool smtp_local_part_routes(const char *local)
{
	return strpbrk(local, "@%!") != NULL;
}

/* May this client send to another domain?  Returns the rule that allows
 * it ("authenticated", or the relay entry as written), or NULL. */
static const char *smtp_relay_rule(const struct smtp_session *s)
{
	if (s->b.srv->relay.authenticated && s->auth_user)
		return "authenticated";
	const struct conf_rule *r = access_first_match(s->b.srv->relay.rules, s->b.srv->relay.nrules,
						       (const struct sockaddr *)&s->b.peer,
						       s->b.client_name,
						       runtime_hosts(s->b.rt, s->b.srv));
	return r ? r->text : NULL;
}

/* shown: the address as the log shows it, LOG_VALUE_MAX bytes at most */
static void smtp_rcpt_refuse_relay(struct smtp_session *s, const char *shown, const char *why)
{
	char reply[CONN_REPLY_MAX];
	log_info("event=reject session=%s server=%s client=%s reason=%s to=%s", s->b.sid,
		 s->b.srv->name, s->b.client, why, shown);
	smtp_count_rejected(s, why);
	/* fits: shown and a fixed text */
	xsnprintf(reply, sizeof reply, "550 5.7.1 Unable to relay for <%s>", shown);
	smtp_rcpt_refuse(s, reply);
}

static void smtp_rcpt_accept_remote(struct smtp_session *s, const struct smtp_addr *a,
				    const char *rule)
{
	/* the local part stays as written: it is the other domain's to read */
	char *dom = smtp_domain_normalize(a->domain);
	char *address = xasprintf("%s@%s", a->local, dom);
	char esc[LOG_VALUE_MAX], q[LOG_VALUE_MAX]; /* rule: configuration text */
	log_info("event=relay session=%s server=%s client=%s to=%s rule=\"%s\"", s->b.sid,
		 s->b.srv->name, s->b.client, log_escape(esc, sizeof esc, address, strlen(address)),
		 log_quote(q, sizeof q, rule, strlen(rule)));
	smtp_txn_add(&s->txn, address, address, false);
	smtp_rcpt_accepted(s, address);
	free(address);
	free(dom);
}

/* shown: the address as the log shows it, LOG_VALUE_MAX bytes at most */
static void smtp_rcpt_refuse_unknown(struct smtp_session *s, const char *shown)
{
	char reply[CONN_REPLY_MAX];
	log_info("event=reject session=%s server=%s client=%s reason=unknown-user to=%s",
		 s->b.sid, s->b.srv->name, s->b.client, shown);
	smtp_count_rejected(s, "unknown-user");
	smtp_count_unknown_recipient(s);
	/* fits: shown (LOG_VALUE_MAX) and a fixed text */
	xsnprintf(reply, sizeof reply,
		  "550 5.1.1 <%s>: Recipient address rejected: user unknown", shown);
	smtp_rcpt_refuse(s, reply);
}

/* ---- users ldap: the recipient is looked up in the directory ----------
 * The session reads no further command until the answer (cached, or from
 * a directory worker); every address of an entry delivers into the
 * entry's one mailbox. */

static void smtp_rcpt_directory_answer(void *owner, const struct directory_answer *a)
{
	struct smtp_session *s = owner;
	char *address = s->lookup_address;
	char esc[LOG_VALUE_MAX];
	const char *shown = log_escape(esc, sizeof esc, address, strlen(address));
	s->lookup = NULL;
	s->lookup_address = NULL;
	if (s->state == SMTP_CLOSING) {
		/* a shutdown said goodbye meanwhile */
	} else if (a->status == DIRECTORY_FOUND) {
		smtp_txn_add(&s->txn, a->mailbox, address, true);
		smtp_rcpt_accepted(s, address);
	} else if (a->status == DIRECTORY_NOT_FOUND) {
		smtp_rcpt_refuse_unknown(s, shown);
	} else {
		log_info("event=reject session=%s server=%s client=%s reason=directory-unavailable "
			 "to=%s", s->b.sid, s->b.srv->name, s->b.client, shown);
		smtp_count_rejected(s, "directory-unavailable");
		/* fits: shown (LOG_VALUE_MAX) and a fixed text */
		smtp_reply(s, "451 4.3.0 <%s>: Recipient address lookup failed; try again later",
			   shown);
	}
	free(address);
	smtp_process_input(s); /* an answer that came later: read on */
}

static void smtp_rcpt_ask_directory(struct smtp_session *s, const char *address)
{
	s->lookup_address = xstrdup(address);
	struct directory_job *j = directory_lookup(s->b.rt->directory, address,
						   smtp_rcpt_directory_answer, s);
	if (j) /* NULL: the cache answered already */
		s->lookup = j;
}

static void smtp_rcpt_decide(struct smtp_session *s, const struct smtp_addr *a)
{
	char esc[LOG_VALUE_MAX];
	const char *shown = log_escape(esc, sizeof esc, a->text, strlen(a->text));

	if (!smtp_rcpt_is_local(s, a)) {
		const char *rule = smtp_relay_rule(s);
		if (!rule)
			smtp_rcpt_refuse_relay(s, shown, "relay");
		else
			smtp_rcpt_accept_remote(s, a, rule);
		return;
	}
	if (a->domain && smtp_local_part_routes(a->local_unquoted)) {
		smtp_rcpt_refuse_relay(s, shown, "routing-local-part");
		return;
	}
	char *address = smtp_rcpt_address(s, a);
	const char *local = a->domain ? a->local_unquoted : "postmaster";
	if (s->b.rt->directory && !smtp_local_known(s, address, local))
		smtp_rcpt_ask_directory(s, address);
	else if (!smtp_local_known(s, address, local))
		smtp_rcpt_refuse_unknown(s, shown);
	else
		smtp_rcpt_accept(s, address);
	free(address);
}

static void smtp_cmd_rcpt(struct smtp_session *s, char *args)
{
	struct smtp_addr addr;
	struct smtp_param params[SMTP_PARAMS_MAX];
	size_t nparams = 0;
	unsigned retry_after;

	enum smtp_addr_result r = smtp_addr_parse_arg(args, true, &addr, params, &nparams);
	if (r != SMTP_ADDR_OK) {
		smtp_reply(s, "%s", smtp_addr_error(r, true));
		smtp_error(s);
		return;
	}
	if (nparams > 0) {
		smtp_reply(s, "555 5.5.4 Unsupported parameter %s", params[0].keyword);
		smtp_error(s);
	} else if (addr.utf8 && !s->txn.smtputf8) {
		smtp_reply(s, "553 5.6.7 Non-ASCII recipient address requires SMTPUTF8");
		smtp_error(s);
	} else if (s->txn.nrcpt_cmds >= s->b.srv->limits.recipients) {
		/* RFC 5321 §4.5.3.1.10: a temporary error for the extra ones */
		smtp_reply(s, "452 4.5.3 Too many recipients");
	} else if (smtp_probing_locked(s, &retry_after)) {
		smtp_rcpt_refuse_locked(s, retry_after);
	} else {
		s->rcpt_mark = s->txn.nrcpts;
		smtp_rcpt_decide(s, &addr);
	}
	smtp_addr_clear(&addr);
	smtp_params_clear(params, nparams);
}

/* ---- DATA --------------------------------------------------------------- */

/* Received: fields that could not be made, since the start. */
static unsigned long smtp_received_failures;

/* The "with" of our Received: field: RFC 3848 (ESMTP, ESMTPS for TLS,
 * ESMTPA for AUTH, ESMTPSA for both), and RFC 6531 §4.3 when the
 * transaction used SMTPUTF8 (UTF8SMTP, UTF8SMTPS, UTF8SMTPA,
 * UTF8SMTPSA). */
static const char *smtp_received_protocol(const struct smtp_session *s)
{
	bool tls = s->tls_active, auth = s->auth_user != NULL;
	if (!s->esmtp)
		return "SMTP";
	if (s->txn.smtputf8)
		return tls ? (auth ? "UTF8SMTPSA" : "UTF8SMTPS") : (auth ? "UTF8SMTPA" : "UTF8SMTP");
	return tls ? (auth ? "ESMTPSA" : "ESMTPS") : (auth ? "ESMTPA" : "ESMTP");
}

/* RFC 5321 §4.4 trace field into out; "with" per smtp_received_protocol,
 * the date per RFC 5322 §3.3.  False, said in the log, when it cannot be
 * made whole: the message is then refused, never given a cut trace
 * field. */
static bool smtp_received_header(const struct smtp_session *s, const char *id, char *out,
				 size_t outsz)
{
	char date[DATE_RFC5322_MAX];
	bool dated = date_rfc5322(time(NULL), date, sizeof date);
	const char *with = smtp_received_protocol(s);
	struct strbuf sb;
	strbuf_init(&sb, out, outsz);
	(void)strbuf_addf(&sb, "Received: from %s (%s [%s])", s->helo,
			  s->b.client_name ? s->b.client_name : "unknown", s->b.client);
	if (conn_tls_desc(s->io))
		(void)strbuf_addf(&sb, "\r\n\t(using %s)", conn_tls_desc(s->io));
	if (s->auth_user && s->b.srv->auth.received_auth)
		(void)strbuf_addf(&sb, "\r\n\t(authenticated as %s)", s->auth_user);
	(void)strbuf_addf(&sb, "\r\n\tby %s (posthorn) with %s id %s", s->b.srv->hostname, with, id);
	if (s->txn.nrcpt_cmds == 1)
		(void)strbuf_addf(&sb, "\r\n\tfor <%s>", s->txn.first_rcpt);
	(void)strbuf_addf(&sb, ";\r\n\t%s\r\n", date);
	if (dated && strbuf_ok(&sb)) /* every part, or none: checked once here */
		return true;
	smtp_received_failures++;
	log_err("event=received-error session=%s id=%s reason=%s count=%lu", s->b.sid, id,
		dated ? "too-long" : "no-date", smtp_received_failures);
	return false;
}

static void smtp_data_reply_refusal(struct smtp_session *s, unsigned flags, int spool_err);

/* The transaction's envelope as the spool keeps it (strings are the
 * session's). */
static struct spool_envelope smtp_envelope(struct smtp_session *s)
{
	struct spool_envelope env = {
		.sender = s->txn.sender,
		.rcpts = s->txn.rcpts,
		.nrcpts = s->txn.nrcpts,
		.arrival = time(NULL),
		.client = s->b.client,
		.helo = s->helo,
		.auth_user = s->auth_user,
		.server = s->b.srv->name,
		.requiretls = s->txn.requiretls,
	};
	return env;
}

static void smtp_cmd_data(struct smtp_session *s, char *args)
{
	if (*args) {
		smtp_reply(s, "501 5.5.4 Syntax: DATA");
		smtp_error(s);
		return;
	}
	struct spool_envelope env = smtp_envelope(s);
	s->msg = spool_msg_begin(s->b.rt->spool, &env);
	if (!s->msg) {
		int err = errno;
		log_err("event=spool-error session=%s error=\"%s\"", s->b.sid, strerror(err));
		if (err == ENOSPC || err == EDQUOT)
			smtp_reply(s, "452 4.3.1 Insufficient system storage");
		else
			smtp_reply(s, "451 4.3.0 Local error in processing");
		return;
	}
	memcpy(s->msg_id, env.id, sizeof s->msg_id);
	s->spool_err = 0;
	char received[SMTP_RECEIVED_MAX];
	if (!smtp_received_header(s, env.id, received, sizeof received)) {
		spool_msg_abort(s->msg);
		s->msg = NULL;
		smtp_reply(s, "451 4.3.0 Local error in processing");
		return;
	}
	int w = spool_msg_write(s->msg, received, strlen(received));
	int werr = errno;
	if (w < 0) {
		spool_msg_abort(s->msg);
		s->msg = NULL;
		log_err("event=spool-error session=%s error=\"%s\"", s->b.sid, strerror(werr));
		smtp_data_reply_refusal(s, 0, werr);
		return;
	}
	smtp_data_begin(&s->data, s->b.srv->limits.message_size);
	smtp_enter_state(s, SMTP_DATA);
	smtp_reply(s, "354 End data with <CR><LF>.<CR><LF>");
	conn_quickack(s->io); /* the end of data may come in a write of its own (conn.h) */
}

static void smtp_data_end(struct smtp_session *s);

/* What smtp_verify held goes to the spool: our Authentication-Results
 * field on top, the header, then what followed (smtp_verify.h). */
static void smtp_data_write_header(struct smtp_session *s)
{
	size_t len, rest_len;
	const char *out = smtp_verify_header_out(s->verify, &len);
	const char *rest = smtp_verify_rest_out(s->verify, &rest_len);
	if (s->spool_err || !s->msg)
		return;
	if ((len > 0 && spool_msg_write(s->msg, out, len) < 0) ||
	    (rest_len > 0 && spool_msg_write(s->msg, rest, rest_len) < 0))
		s->spool_err = errno ? errno : EIO;
}

static void smtp_data_verified(void *arg)
{
	struct smtp_session *s = arg;
	s->verifying = false;
	smtp_data_write_header(s);
	if (s->data_end_pending) {
		s->data_end_pending = false;
		smtp_data_end(s);
	}
	smtp_process_input(s); /* the rest of the message */
}

/* The header section is over (with DKIM: the message): the checks, then
 * what was held to the spool. */
static void smtp_data_verify_header(struct smtp_session *s)
{
	if (smtp_verify_header_end(s->verify, smtp_data_verified, s)) {
		s->verifying = true;
		return;
	}
	smtp_data_write_header(s);
}

static void smtp_data_store(struct smtp_session *s, const char *text, size_t len)
{
	if (!text || !s->msg || s->spool_err)
		return;
	if (smtp_verify_header_line(s->verify, text, len)) {
		if (smtp_verify_header_done(s->verify))
			smtp_data_verify_header(s);
		return;
	}
	if (spool_msg_write(s->msg, text, len) < 0 || spool_msg_write(s->msg, "\r\n", 2) < 0)
		s->spool_err = errno ? errno : EIO;
}

static void smtp_data_reply_refusal(struct smtp_session *s, unsigned flags, int spool_err)
{
	if (flags & SMTP_DATA_TOO_BIG)
		smtp_reply(s, "552 5.3.4 Message size exceeds fixed maximum message size");
	else if (flags & SMTP_DATA_LONG_LINE)
		smtp_reply(s, "554 5.6.0 Message text line too long (RFC 5321 section 4.5.3.1.6)");
	else if (flags & SMTP_DATA_BARE_EOL)
		smtp_reply(s, "550 5.6.0 Bare CR or LF in message text (RFC 5321 section 2.3.8)");
	else if (flags & SMTP_DATA_NUL)
		smtp_reply(s, "550 5.6.0 NUL character in message text");
	else if (spool_err == ENOSPC || spool_err == EDQUOT)
		smtp_reply(s, "452 4.3.1 Insufficient system storage");
	else
		smtp_reply(s, "451 4.3.0 Local error in processing");
}

static const char *smtp_refusal_reason(unsigned flags)
{
	if (flags & SMTP_DATA_TOO_BIG)
		return "size";
	if (flags & SMTP_DATA_LONG_LINE)
		return "long-line";
	if (flags & SMTP_DATA_BARE_EOL)
		return "bare-cr-lf";
	if (flags & SMTP_DATA_NUL)
		return "nul";
	return "spool-error";
}

static void smtp_free(struct smtp_session *s);
static void smtp_process_input(struct smtp_session *s);

static void smtp_log_accepted(const struct smtp_session *s)
{
	char from[LOG_VALUE_MAX], to[LOG_VALUE_MAX * 2];
	log_escape(from, sizeof from, s->txn.sender, strlen(s->txn.sender));
	struct strbuf sb;
	strbuf_init(&sb, to, sizeof to);
	struct log_list l;
	log_list_begin(&l, &sb, "<", ">");
	for (size_t i = 0; i < s->txn.nrcpts; i++)
		log_list_add(&l, s->txn.rcpts[i].address);
	(void)log_list_end(&l); /* the buffer holds the marker: LOG_VALUE_MAX * 2 */
	log_info("event=accepted session=%s server=%s client=%s id=%s size=%llu from=<%s> "
		 "nrcpt=%zu to=%s", s->b.sid, s->b.srv->name, s->b.client, s->msg_id,
		 (unsigned long long)s->msg_size, from, s->txn.nrcpts, to);
}

/* The spool has the message on stable storage (err == 0), or failed. */
static void smtp_committed(void *arg, int err)
{
	struct smtp_session *s = arg;
	s->committing = false;
	if (!err) {
		smtp_log_accepted(s);
		metrics_count(METRIC_MESSAGES_ACCEPTED, METRIC_LABELS(s->b.srv->name));
		metrics_add(METRIC_RECEIVED_BYTES, (uint64_t)s->msg_size, METRIC_LABELS(s->b.srv->name));
		scheduler_submit(s->msg_id);
	} else {
		log_err("event=spool-error session=%s id=%s error=\"%s\"", s->b.sid, s->msg_id,
			strerror(err));
	}
	if (s->dead) {
		/* The client left before the reply: it never saw a 250, but the
		 * message is safe and will be delivered (a duplicate is possible
		 * if it sends again; a loss is not, RFC 5321 §6.1). */
		smtp_free(s);
		return;
	}
	if (err)
		smtp_data_reply_refusal(s, 0, err);
	else
		smtp_reply(s, "250 2.0.0 Ok: queued as %s", s->msg_id);
	smtp_txn_reset(s);
	smtp_enter_state(s, SMTP_READY);
	smtp_process_input(s); /* pipelined commands waiting behind DATA */
}

/* A filter's own reply (checked by milter_proto: one code, printable,
 * lines separated by CRLF): each line within RFC 5321 §4.5.3.1.5's 512
 * octets. */
static bool smtp_reply_lines_fit(const char *text)
{
	for (const char *line = text;;) {
		const char *end = strstr(line, "\r\n");
		size_t n = end ? (size_t)(end - line) : strlen(line);
		if (n > 510)
			return false;
		if (!end)
			return true;
		line = end + 2;
	}
}

static void smtp_reply_lines(struct smtp_session *s, const char *text)
{
	for (const char *line = text;;) {
		const char *end = strstr(line, "\r\n");
		int n = end ? (int)(end - line) : (int)strlen(line);
		smtp_reply(s, "%.*s", n, line);
		if (!end)
			return;
		line = end + 2;
	}
}

/* A milter refused a step before DATA: its own reply, or Postfix's
 * (milter8.c: "550 5.7.1 Command rejected", "451 4.7.1 Service
 * unavailable - try again later"). */
static void smtp_milter_refusal(struct smtp_session *s, const struct smtp_filter_outcome *o,
				const char *step)
{
	bool temp = o->verdict == SMTP_FILTER_TEMPFAIL;
	log_info("event=reject session=%s server=%s client=%s reason=milter milter=%s step=%s "
		 "verdict=%s", s->b.sid, s->b.srv->name, s->b.client, o->milter ? o->milter : "-",
		 step, temp ? "tempfail" : "reject");
	smtp_count_rejected(s, "milter");
	if (o->reply && smtp_reply_lines_fit(o->reply))
		smtp_reply_lines(s, o->reply);
	else if (temp)
		smtp_reply(s, "451 4.7.1 Service unavailable - try again later");
	else
		smtp_reply(s, "550 5.7.1 Command rejected");
}

/* The milters' verdict (smtp_filter.h): commit, or the reply they chose. */
static void smtp_filtered(void *arg, const struct smtp_filter_outcome *o)
{
	struct smtp_session *s = arg;
	s->filter = NULL;
	if (o->verdict == SMTP_FILTER_PASS) {
		s->msg_size = (uint64_t)spool_msg_size(o->msg);
		spool_msg_commit(o->msg, smtp_committed, s);
		return;
	}
	s->committing = false;
	const char *why = o->verdict == SMTP_FILTER_DISCARD ? "discard"
			  : o->verdict == SMTP_FILTER_TEMPFAIL ? "tempfail" : "reject";
	log_info("event=%s session=%s server=%s client=%s id=%s reason=milter milter=%s verdict=%s",
		 o->verdict == SMTP_FILTER_DISCARD ? "discard" : "reject", s->b.sid, s->b.srv->name,
		 s->b.client, s->msg_id, o->milter ? o->milter : "-", why);
	if (o->verdict == SMTP_FILTER_DISCARD)
		smtp_reply(s, "250 2.0.0 Ok: queued as %s", s->msg_id);
	else if (o->reply && smtp_reply_lines_fit(o->reply))
		smtp_reply_lines(s, o->reply);
	else if (o->verdict == SMTP_FILTER_TEMPFAIL)
		smtp_reply(s, "451 4.7.1 Service unavailable - try again later");
	else
		smtp_reply(s, "550 5.7.1 Message rejected by content filter");
	if (o->verdict != SMTP_FILTER_DISCARD)
		smtp_count_rejected(s, "milter");
	smtp_txn_reset(s);
	smtp_enter_state(s, SMTP_READY);
	smtp_process_input(s); /* pipelined commands waiting behind DATA */
}

static void smtp_filter_begin(struct smtp_session *s, struct spool_msg *m)
{
	const struct sockaddr_storage *peer = &s->b.peer;
	unsigned port = peer->ss_family == AF_INET6
				? ntohs(((const struct sockaddr_in6 *)peer)->sin6_port)
				: ntohs(((const struct sockaddr_in *)peer)->sin_port);
	struct smtp_filter_client c = {
		.milters = s->milters,
		.session = s->b.sid,
		.base = s->b.rt->base,
		.conf = s->b.rt->conf,
		.srv = s->b.srv,
		.spool = s->b.rt->spool,
		.client_addr = s->b.client,
		.client_name = s->b.client_name,
		.client_port = port,
		.client_family = peer->ss_family,
		.tls_desc = conn_tls_desc(s->io),
	};
	struct spool_envelope env = smtp_envelope(s);
	memcpy(env.id, s->msg_id, sizeof env.id);
	s->filter = smtp_filter_start(&c, &env, m, smtp_filtered, s);
}

/* The verdict of the `verify` checks at the end of data: false when the
 * message is refused (the reply is sent); *junk when DMARC's quarantine
 * is enforced. */
static bool smtp_data_verdict(struct smtp_session *s, bool *junk)
{
	struct smtp_verify_result vr;
	smtp_verify_result(s->verify, &vr);
	if (smtp_verify_header_too_big(s->verify)) {
		log_info("event=reject session=%s server=%s client=%s reason=header-size", s->b.sid,
			 s->b.srv->name, s->b.client);
		smtp_count_rejected(s, "header-size");
		smtp_reply(s, "552 5.3.4 Message header section exceeds %d bytes",
			   SMTP_VERIFY_HEADER_MAX);
		return false;
	}
	if (!vr.dmarc_checked || vr.dmarc.result != DMARC_RESULT_FAIL)
		return true;
	const char *disp = dmarc_disposition_name(vr.dmarc.disposition);
	if (vr.dmarc_enforce && vr.dmarc.disposition == DMARC_DISP_REJECT) {
		/* RFC 7489 §6.6.4 and §10.3: refused at end of data, 5.7.1 */
		log_info("event=reject session=%s server=%s client=%s reason=dmarc from_domain=%s",
			 s->b.sid, s->b.srv->name, s->b.client, vr.from_domain);
		smtp_count_rejected(s, "dmarc");
		smtp_reply(s, "550 5.7.1 Message rejected by the DMARC policy of %s",
			   vr.from_domain);
		return false;
	}
	/* quarantine: delivered into the recipients' Junk folders (the spool
	 * envelope's junk mark); report: only logged */
	*junk = vr.dmarc_enforce && vr.dmarc.disposition == DMARC_DISP_QUARANTINE;
	log_info("event=dmarc-disposition session=%s server=%s client=%s id=%s from_domain=%s "
		 "disposition=%s applied=%s", s->b.sid, s->b.srv->name, s->b.client, s->msg_id,
		 vr.from_domain, disp, vr.dmarc_enforce ? "yes" : "no");
	return true;
}

/* The message goes to the recipients' Junk folders: the spooled copy is
 * written again under its ID with the envelope's junk mark. */
static bool smtp_data_mark_junk(struct smtp_session *s)
{
	struct spool_envelope env = smtp_envelope(s);
	spool_envelope_mark_junk(&env);
	struct spool_msg *m = spool_msg_copy(s->b.rt->spool, &env, s->msg);
	if (!m) {
		log_err("event=spool-error session=%s id=%s error=\"%s\"", s->b.sid, s->msg_id,
			strerror(errno));
		return false;
	}
	spool_msg_abort(s->msg);
	s->msg = m;
	return true;
}

static void smtp_data_end(struct smtp_session *s)
{
	unsigned flags = s->data.flags;
	if (s->verify && !flags && !s->spool_err && !smtp_verify_header_handled(s->verify)) {
		/* the message ended inside what smtp_verify holds: its header
		 * section, or with DKIM the whole message */
		smtp_data_verify_header(s);
		if (s->verifying) {
			s->data_end_pending = true;
			return;
		}
	}
	if (flags || s->spool_err) {
		log_info("event=reject session=%s server=%s client=%s reason=%s", s->b.sid,
			 s->b.srv->name, s->b.client, smtp_refusal_reason(flags));
		smtp_count_rejected(s, smtp_refusal_reason(flags));
		if (s->spool_err) /* the admin needs to know why: disk full, I/O error */
			log_err("event=spool-error session=%s id=%s error=\"%s\"", s->b.sid,
				s->msg_id, strerror(s->spool_err));
		smtp_data_reply_refusal(s, flags, s->spool_err);
		smtp_txn_reset(s);
		return;
	}
	bool junk = false;
	if (s->verify && !smtp_data_verdict(s, &junk)) {
		smtp_txn_reset(s);
		return;
	}
	if (junk && !smtp_data_mark_junk(s)) {
		smtp_reply(s, "451 4.3.0 Local error in processing");
		smtp_txn_reset(s);
		return;
	}
	if (smtp_quota_all_full(s->b.rt, s->b.sid, s->txn.rcpts, s->txn.nrcpts,
				(uint64_t)spool_msg_size(s->msg))) {
		smtp_count_rejected(s, "mailbox-full");
		smtp_reply(s, SMTP_QUOTA_FULL_REPLY);
		smtp_txn_reset(s);
		return;
	}
	struct spool_msg *m = s->msg;
	s->msg = NULL;
	s->msg_size = (uint64_t)spool_msg_size(m);
	s->committing = true;
	if (smtp_filter_wanted(s->b.srv))
		smtp_filter_begin(s, m);
	else
		spool_msg_commit(m, smtp_committed, s);
}

/* Whole plain lines at the head of the input (smtp_data_plain_lines), as
 * many as its first chunk holds, stored in one write rather than line by
 * line; true when any were taken.  Not while the header is held for the
 * verify checks: those lines go one by one to smtp_verify. */
static bool smtp_data_plain_in(struct smtp_session *s, struct evbuffer *in)
{
	struct evbuffer_iovec v;
	if (!linebuf_between_lines(&s->lb) || (s->verify && !smtp_verify_header_handled(s->verify)) ||
	    evbuffer_peek(in, -1, NULL, &v, 1) < 1)
		return false;
	size_t n = smtp_data_plain_lines(&s->data, v.iov_base, v.iov_len);
	if (n == 0)
		return false;
	if (s->msg && !s->spool_err && spool_msg_write(s->msg, v.iov_base, n) < 0)
		s->spool_err = errno ? errno : EIO;
	linebuf_skip_lines(&s->lb, in, n);
	return true;
}

static void smtp_data_line_in(struct smtp_session *s, const struct linebuf_line *l)
{
	const char *text;
	size_t len;
	if (smtp_data_line(&s->data, l, &text, &len) == SMTP_DATA_END)
		smtp_data_end(s);
	else
		smtp_data_store(s, text, len);
}

/* ---- AUTH (RFC 4954) ---------------------------------------------------- */

/* The login exchange's verdict as SMTP replies (RFC 4954 §4, §6). */
static void smtp_login_done(void *owner, const struct login_verdict *v)
{
	struct smtp_session *s = owner;
	if (v->kind != LOGIN_CHALLENGE && s->state == SMTP_AUTH)
		smtp_enter_state(s, SMTP_READY);
	switch (v->kind) {
	case LOGIN_CHALLENGE:
		smtp_reply(s, "334 %s", v->challenge);
		smtp_enter_state(s, SMTP_AUTH);
		return; /* the client's answer comes as the next line */
	case LOGIN_OK:
		s->auth_user = xstrdup(v->user);
		smtp_reply(s, "235 2.7.0 Authentication successful");
		break;
	case LOGIN_FAILED:
		smtp_reply(s, "535 5.7.8 Authentication credentials invalid");
		smtp_error(s);
		break;
	case LOGIN_CANCELLED:
		smtp_reply(s, "501 5.7.0 Authentication aborted");
		break;
	case LOGIN_BAD_RESPONSE:
		smtp_reply(s, "501 5.5.2 Cannot decode response");
		smtp_error(s);
		break;
	case LOGIN_UNKNOWN_MECHANISM:
		smtp_reply(s, "504 5.5.4 Unrecognized authentication type");
		smtp_error(s);
		break;
	case LOGIN_NEEDS_TLS:
		smtp_reply(s, "538 5.7.11 Encryption required for requested authentication mechanism");
		smtp_error(s);
		break;
	case LOGIN_LOCKED_OUT:
		smtp_reply(s, "454 4.7.0 Too many failed authentication attempts; try again in %u "
			      "seconds", v->retry_after);
		smtp_close_after_flush(s);
		break;
	case LOGIN_UNAVAILABLE: /* RFC 4954 §6 */
		smtp_reply(s, "454 4.7.0 Temporary authentication failure");
		break;
	}
	smtp_process_input(s); /* a verdict that came later: read on */
}

/* The login exchange, made when the session first needs it (most
 * sessions never log in). */
static struct login *smtp_login_exchange(struct smtp_session *s)
{
	if (!s->login)
		s->login = session_login_new(&s->b, smtp_login_done, s);
	return s->login;
}

static void smtp_cmd_auth(struct smtp_session *s, char *args)
{
	char *initial = args + strcspn(args, " ");
	if (*initial)
		*initial++ = '\0';
	if (s->auth_user) {
		smtp_reply(s, "503 5.5.1 Error: already authenticated");
		smtp_error(s);
	} else if (!*args || strchr(initial, ' ')) {
		smtp_reply(s, "501 5.5.4 Syntax: AUTH mechanism [initial-response]");
		smtp_error(s);
	} else {
		login_start(smtp_login_exchange(s), args, *initial ? initial : NULL, s->tls_active);
	}
}

/* ---- input loop and connection events -------------------------------- */

static void smtp_process_input(struct smtp_session *s)
{
	/* one line buffer for all sessions: lines are handled before the
	 * next is read, and the loop is single-threaded */
	static char line[LINE_MAX_ANY + 1];

	if (s->in_process || !s->io)
		return;
	s->in_process = true;
	struct evbuffer *in = conn_input(s->io);
	while (!(s->state & (SMTP_CLOSING | SMTP_HANDSHAKE)) && !s->committing && !s->verifying &&
	       !s->milter_wait &&
	       !login_busy(s->login) && !s->held && !s->lookup && !conn_closing(s->io)) {
		if (conn_output_full(s->io)) {
			s->output_blocked = true; /* resumed by smtp_write_cb */
			break;
		}
		if (s->state == SMTP_DATA && smtp_data_plain_in(s, in))
			continue;
		size_t limit = s->state == SMTP_DATA ? SMTP_DATA_READ_MAX : LINE_MAX_ANY;
		struct linebuf_line l;
		enum linebuf_status st = linebuf_get(&s->lb, in, limit, line, sizeof line, &l);
		if (st == LINEBUF_NEED_MORE)
			break;
		if (st == LINEBUF_TOO_LONG) {
			if (s->state == SMTP_AUTH) {
				login_abort(s->login);
				smtp_enter_state(s, SMTP_READY);
				smtp_reply(s, "500 5.5.6 Authentication exchange line is too long");
				smtp_error(s);
			} else if (s->state == SMTP_DATA) {
				smtp_data_long_line(&s->data);
			} else {
				smtp_reply(s, "500 5.5.2 Line too long");
				smtp_error(s);
			}
			continue;
		}
		if (s->state == SMTP_DATA)
			smtp_data_line_in(s, &l);
		else if (s->state == SMTP_AUTH)
			login_response(smtp_login_exchange(s), l.data, l.has_nul || l.bare_cr);
		else
			smtp_command(s, &l);
	}
	s->in_process = false;
}

/* ---- transport events (conn.h) --------------------------------------- */

static void smtp_on_input(void *arg)
{
	struct smtp_session *s = arg;
	smtp_process_input(s);
	/* more of the message is coming: acknowledged at once (conn.h) */
	if (s->io && s->state == SMTP_DATA)
		conn_quickack(s->io);
}

static void smtp_on_drained(void *arg)
{
	struct smtp_session *s = arg;
	if (s->output_blocked) {
		s->output_blocked = false;
		smtp_process_input(s);
	}
}

static void smtp_teardown(struct smtp_session *s)
{
	if (s->filter) {
		/* gone before the 250: the message was never acknowledged */
		smtp_filter_cancel(s->filter);
		s->filter = NULL;
		s->committing = false;
	}
	if (s->committing) {
		/* the spool still calls back with this session: release the
		 * connection now, the memory in smtp_committed() */
		s->dead = true;
		conn_free(s->io);
		s->io = NULL;
		return;
	}
	smtp_free(s);
}

static void smtp_on_closed(void *arg)
{
	smtp_teardown(arg);
}

static void smtp_on_timeout(void *arg)
{
	struct smtp_session *s = arg;
	log_info("event=timeout session=%s server=%s client=%s state=%s", s->b.sid, s->b.srv->name,
		 s->b.client, smtp_state_name(s->state));
	smtp_reply(s, "421 4.4.2 %s Error: timeout exceeded", s->b.srv->hostname);
	smtp_close_after_flush(s);
}

/* The milters' answer to the connection: Postfix's 554 and only QUIT
 * after it for a refusal, 421 and close for a temporary one. */
static void smtp_milters_connected(void *arg, const struct smtp_filter_outcome *o)
{
	struct smtp_session *s = arg;
	s->milter_wait = false;
	if (s->state == SMTP_CLOSING) {
		/* a shutdown said goodbye meanwhile */
	} else if (o->verdict == SMTP_FILTER_PASS) {
		smtp_reply(s, "220 %s ESMTP posthorn", s->b.srv->hostname);
	} else if (o->verdict == SMTP_FILTER_TEMPFAIL) {
		log_info("event=refuse session=%s server=%s client=%s reason=milter milter=%s "
			 "verdict=tempfail", s->b.sid, s->b.srv->name, s->b.client,
			 o->milter ? o->milter : "-");
		smtp_reply(s, "421 4.7.0 %s Service unavailable - try again later",
			   s->b.srv->hostname);
		smtp_close_after_flush(s);
	} else {
		log_info("event=refuse session=%s server=%s client=%s reason=milter milter=%s "
			 "verdict=reject", s->b.sid, s->b.srv->name, s->b.client,
			 o->milter ? o->milter : "-");
		if (o->reply && o->reply[0] == '5' && smtp_reply_lines_fit(o->reply))
			smtp_reply_lines(s, o->reply);
		else
			smtp_reply(s, "554 5.7.1 %s Service unavailable", s->b.srv->hostname);
		smtp_enter_state(s, SMTP_REFUSED);
		s->b.refused = true; /* the gate lets only QUIT through (RFC 5321 §3.1) */
	}
	smtp_process_input(s); /* what the client sent before the greeting */
}

/* One connection per milter for the whole session, opened now: the
 * greeting waits for their answer to the connection. */
static void smtp_milters_connect(struct smtp_session *s)
{
	const struct sockaddr_storage *peer = &s->b.peer;
	unsigned port = peer->ss_family == AF_INET6
				? ntohs(((const struct sockaddr_in6 *)peer)->sin6_port)
				: ntohs(((const struct sockaddr_in *)peer)->sin_port);
	struct smtp_filter_client c = {
		.session = s->b.sid,
		.base = s->b.rt->base,
		.conf = s->b.rt->conf,
		.srv = s->b.srv,
		.spool = s->b.rt->spool,
		.client_addr = s->b.client,
		.client_name = s->b.client_name,
		.client_port = port,
		.client_family = peer->ss_family,
	};
	s->milter_wait = true;
	s->milters = smtp_milters_open(&c, smtp_milters_connected, s);
	if (!s->milters) { /* cannot happen: the server has milters */
		s->milter_wait = false;
		smtp_reply(s, "220 %s ESMTP posthorn", s->b.srv->hostname);
	}
}

static void smtp_greet(struct smtp_session *s)
{
	unsigned retry_after;
	if (s->b.refused) {
		if (s->b.refusal) /* a block list's: RFC 5782 §2.1 */
			smtp_reply(s, "554 5.7.1 %s", s->b.refusal);
		else
			smtp_reply(s, "554 5.7.1 %s Access denied", s->b.srv->hostname);
		smtp_enter_state(s, SMTP_REFUSED);
	} else if (s->b.srv->auth.anonymous && smtp_probing_locked(s, &retry_after)) {
		/* where anonymous clients send mail (an MX), a client refused
		 * for probing goes at once; elsewhere nobody reaches RCPT
		 * without logging in, and a login is not refused for this */
		log_info("event=refuse session=%s server=%s client=%s reason=unknown-recipients "
			 "retry_after=%us", s->b.sid, s->b.srv->name, s->b.client, retry_after);
		smtp_reply(s, "421 4.7.0 %s Too many unknown recipients from your address; try "
			      "again in %u seconds", s->b.srv->hostname, retry_after);
		smtp_close_after_flush(s);
	} else if (s->b.srv->nmilters > 0 && !s->milters) {
		smtp_milters_connect(s);
	} else {
		smtp_reply(s, "220 %s ESMTP posthorn", s->b.srv->hostname);
	}
}

/* TLS is up: forget everything learnt before it (RFC 3207 §4.2) and start
 * again from the greeting state. */
static void smtp_on_tls_ready(void *arg)
{
	struct smtp_session *s = arg;
	s->tls_active = true;
	free(s->helo);
	s->helo = NULL;
	s->esmtp = false;
	smtp_txn_reset(s);
	smtp_enter_state(s, SMTP_INIT);
	if (s->b.implicit_tls)
		smtp_greet(s);
	smtp_process_input(s);
}

static const struct conn_handler smtp_conn_handler = {
	.input = smtp_on_input,
	.drained = smtp_on_drained,
	.tls_ready = smtp_on_tls_ready,
	.timeout = smtp_on_timeout,
	.closed = smtp_on_closed,
};

static void smtp_cmd_starttls(struct smtp_session *s, char *args)
{
	if (*args) {
		smtp_reply(s, "501 5.5.4 Syntax: STARTTLS");
		smtp_error(s);
		return;
	}
	if (s->tls_active) {
		smtp_reply(s, "503 5.5.1 Error: TLS already active");
		smtp_error(s);
		return;
	}
	if (!s->b.ts) {
		smtp_reply(s, "502 5.5.1 Error: command not implemented (no certificate)");
		smtp_error(s);
		return;
	}
	if (s->auth_user) {
		/* a login made in the clear must not look protected afterwards
		 * (NO STARTTLS / EAST: STARTTLS after AUTH) */
		smtp_reply(s, "503 5.5.1 Error: STARTTLS not allowed after AUTH");
		smtp_error(s);
		return;
	}
	smtp_reply(s, "220 2.0.0 Ready to start TLS");
	linebuf_reset(&s->lb);
	if (!conn_starttls(s->io)) {
		log_err("event=tls-error session=%s error=\"cannot start TLS\"", s->b.sid);
		smtp_close_after_flush(s);
		return;
	}
	smtp_enter_state(s, SMTP_HANDSHAKE);
}

static void smtp_free(struct smtp_session *s)
{
	smtp_filter_cancel(s->filter);
	s->filter = NULL;
	smtp_txn_reset(s);
	smtp_milters_free(s->milters); /* SMFIC_QUIT */
	s->milters = NULL;
	free(s->milter_helo);
	free(s->milter_rcpt);
	free(s->helo);
	free(s->auth_user);
	login_free(s->login);
	if (s->held)
		event_free(s->held);
	free(s->held_reply);
	directory_cancel(s->lookup);
	free(s->lookup_address);
	free(s->lookup_sender);
	conn_free(s->io);
	session_base_release(&s->b);
	free(s);
}

/* Daemon shutdown: a last word to the client, then close once it has
 * left (RFC 5321 §3.8: 421 when the service is closing). */
static void smtp_shutdown(struct session_link *c)
{
	struct smtp_session *s = c->session;
	if (!s->io || s->state == SMTP_HANDSHAKE) {
		smtp_free(s);
		return;
	}
	if (s->state != SMTP_CLOSING) {
		smtp_reply(s, "421 4.3.2 %s Service shutting down", s->b.srv->hostname);
		smtp_close_after_flush(s);
	}
}

/* Shutdown took too long: drop the session now. */
static void smtp_abort(struct session_link *c)
{
	smtp_free(c->session);
}

void smtp_session_start(const struct session_start *st)
{
	const struct conf_server *srv = st->srv;
	struct smtp_session *s = xcalloc(1, sizeof *s);
	session_base_init(&s->b, st, "", s, smtp_shutdown, smtp_abort);
	s->state = st->implicit_tls ? SMTP_HANDSHAKE : SMTP_INIT;
	s->io = session_conn_new(&s->b, st, &smtp_conn_handler, s, srv->limits.timeout);
	if (!s->io) {
		smtp_free(s);
		return;
	}
	if (!st->implicit_tls)
		smtp_greet(s);
}

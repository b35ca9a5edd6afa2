/* imap_session: an IMAP4rev1 session.  RFC 3501 (states, commands,
 * untagged updates, autologout), RFC 2595 (STARTTLS), RFC 4959 (SASL-IR),
 * RFC 2177 (IDLE), RFC 4315 (UIDPLUS), RFC 6851 (MOVE), RFC 3691
 * (UNSELECT), RFC 2342 (NAMESPACE), RFC 2971 (ID), RFC 5161 (ENABLE),
 * RFC 7888 (LITERAL+), RFC 6154 (SPECIAL-USE), RFC 3348 (CHILDREN),
 * RFC 3502 (MULTIAPPEND), RFC 4469 (CATENATE, in imap_catenate.c), RFC
 * 3516 (BINARY: APPEND's literal8; FETCH in imap_binary.c), RFC 6855
 * §4 (APPEND's UTF8 data), RFC 8314 (implicit TLS).
 *
 * Every command is dispatched from imap_commands[], which states the
 * session states it is valid in and the policy it needs; one gate,
 * imap_gate(), enforces those before any handler runs.  All input passes
 * the bounded parser (imap_parse.c) or, for AUTHENTICATE responses and
 * IDLE's DONE, linebuf_get().  Long responses (FETCH, SEARCH, STORE,
 * EXPUNGE, the untagged updates of a resynchronisation) are jobs produced
 * as the connection drains, a bounded amount per turn of the event loop, so
 * neither a 20 MB body nor 100,000 messages are ever built in memory.
 * FETCH and STORE are in imap_fetch.c, SEARCH in imap_search.c, LIST and
 * LSUB in imap_list.c; below them, imap_view.c holds the selected folder
 * and its messages, imap_context.c the replies, states and jobs,
 * imap_date.c the dates. */
#include "proto/imap/imap_session.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "conf/conf.h"
#include "net/conn.h"
#include "proto/imap/imap_binary.h"
#include "proto/imap/imap_catenate.h"
#include "proto/imap/imap_context.h"
#include "proto/imap/imap_date.h"
#include "proto/imap/imap_fetch.h"
#include "proto/imap/imap_list.h"
#include "proto/imap/imap_parse.h"
#include "proto/imap/imap_esearch.h"
#include "proto/imap/imap_notify.h"
#include "proto/imap/imap_quota.h"
#include "proto/imap/imap_utf8.h"
#include "proto/imap/imap_search.h"
#include "proto/imap/imap_sort.h"
#include "proto/imap/imap_thread.h"
#include "proto/imap/imap_view.h"
#include "lib/linebuf.h"
#include "lib/log.h"
#include "lib/metrics.h"
#include "lib/strbuf.h"
#include "store/mailbox.h"
#include "store/maildir.h"
#include "lib/offload.h"
#include "auth/login.h"
#include "auth/sasl.h"
#include "proto/session.h"
#include "runtime/runtime.h"
#include "auth/userdb.h"
#include "lib/util.h"

static void imap_view_close(struct imap_session *s);
static void imap_sync(struct imap_session *s, bool expunges);
static void imap_updates(struct imap_session *s, const char *status, const char *text);
static void imap_watch_start(struct imap_session *s);
static void imap_watch_stop(struct imap_session *s);
static void imap_watch_selected(struct imap_session *s);

static void imap_run(struct imap_session *s);

/* ---- what may be used now ---------------------------------------------- */

/* One word more of the capability list.  The list is the server's own
 * and its buffer made for all of it: not fitting is a bug, never a list
 * cut short. */
static void imap_caps_add(char *out, size_t outsz, size_t *used, const char *word,
			  const char *value)
{
	int n = snprintf(out + *used, outsz - *used, "%s%s%s", *used ? " " : "", word, value);
	if (n < 0 || (size_t)n >= outsz - *used)
		fatal("imap: the capability list does not fit %zu octets", outsz);
	*used += (size_t)n;
}

/* The capability list for the current state, without "* CAPABILITY". */
static void imap_capabilities(const struct imap_session *s, char *out, size_t outsz)
{
	size_t used = 0;
	out[0] = '\0';
	imap_caps_add(out, outsz, &used, "IMAP4rev1 LITERAL+ SASL-IR ID ENABLE IDLE NAMESPACE BINARY LIST-EXTENDED LIST-STATUS MULTIAPPEND CATENATE "
		      "UNSELECT UIDPLUS MOVE CHILDREN SPECIAL-USE CREATE-SPECIAL-USE", "");
	imap_caps_add(out, outsz, &used, "CONDSTORE QRESYNC", ""); /* RFC 7162 */
	imap_caps_add(out, outsz, &used, IMAP_NOTIFY_CAPS, "");   /* RFC 5465 */
	imap_caps_add(out, outsz, &used, "SORT SORT=DISPLAY THREAD=ORDEREDSUBJECT "
		      "THREAD=REFERENCES", ""); /* RFC 5256, RFC 5957 */
	/* RFC 4731, RFC 5182, RFC 5267 §3 and §4 (imap_esearch.c) */
	imap_caps_add(out, outsz, &used, "ESEARCH SEARCHRES CONTEXT=SEARCH ESORT", "");
	imap_caps_add(out, outsz, &used, IMAP_QUOTA_CAPS, "");     /* RFC 9208 */
	imap_caps_add(out, outsz, &used, IMAP_UTF8_ACCEPT, "");    /* RFC 6855 */
	if (s->state & (IMAP_NOTAUTH | IMAP_SASL | IMAP_HANDSHAKE)) {
		if (s->b.ts && !s->tls_active)
			imap_caps_add(out, outsz, &used, "STARTTLS", "");
		if (!login_password_allowed(s->b.srv, s->tls_active))
			imap_caps_add(out, outsz, &used, "LOGINDISABLED", "");
		char mechs[IMAP_MECHS_MAX];
		sasl_mech_list(login_mechanisms(s->b.srv, s->tls_active), mechs, sizeof mechs);
		char *save = NULL;
		for (char *m = strtok_r(mechs, " ", &save); m; m = strtok_r(NULL, " ", &save))
			imap_caps_add(out, outsz, &used, "AUTH=", m);
	}
}

static void imap_cmd_capability_untagged(struct imap_session *s)
{
	char caps[IMAP_CAPS_MAX];
	imap_capabilities(s, caps, sizeof caps);
	conn_printf(s->io, "* CAPABILITY %s", caps);
}

/* ---- command table ----------------------------------------------------- */

/* IMAP's own flags beside the gate's (enum session_cmd_flag). */
enum imap_cmd_flag {
	/* RFC 3501 §7.4.1: no untagged EXPUNGE while answering FETCH, STORE
	 * or SEARCH (the UID variants may have them) */
	IMAP_F_NO_EXPUNGE = SESSION_F_PROTOCOL << 0,
	IMAP_F_UID = SESSION_F_PROTOCOL << 1, /* the UID variant: numbers are UIDs */
};

struct imap_command_def {
	const char *name;                /* upper case, "UID FETCH" for the UID variants */
	void (*handler)(struct imap_session *s, const struct imap_command *c);
	unsigned states;                 /* enum imap_state bits in which it is valid */
	unsigned flags;
};

#define IMAP_ANY (IMAP_NOTAUTH | IMAP_AUTH | IMAP_SELECTED)
#define IMAP_AUTHED (IMAP_AUTH | IMAP_SELECTED)

IMAP_HANDLER(imap_cmd_capability);
IMAP_HANDLER(imap_cmd_noop);
IMAP_HANDLER(imap_cmd_logout);
IMAP_HANDLER(imap_cmd_starttls);
IMAP_HANDLER(imap_cmd_authenticate);
IMAP_HANDLER(imap_cmd_login);
IMAP_HANDLER(imap_cmd_id);
IMAP_HANDLER(imap_cmd_enable);
IMAP_HANDLER(imap_cmd_namespace);
IMAP_HANDLER(imap_cmd_select);
IMAP_HANDLER(imap_cmd_create);
IMAP_HANDLER(imap_cmd_delete);
IMAP_HANDLER(imap_cmd_rename);
IMAP_HANDLER(imap_cmd_subscribe);
IMAP_HANDLER(imap_cmd_unsubscribe);
IMAP_HANDLER(imap_cmd_status);
IMAP_HANDLER(imap_cmd_append);
IMAP_HANDLER(imap_cmd_idle);
IMAP_HANDLER(imap_cmd_notify_watch);
IMAP_HANDLER(imap_cmd_check);
IMAP_HANDLER(imap_cmd_close);
IMAP_HANDLER(imap_cmd_unselect);
IMAP_HANDLER(imap_cmd_expunge);
IMAP_HANDLER(imap_cmd_copy);

static const struct imap_command_def imap_commands[] = {
	/* RFC 3501 §6.1: any state */
	{"CAPABILITY", imap_cmd_capability, IMAP_ANY, 0},
	{"NOOP", imap_cmd_noop, IMAP_ANY, 0},
	{"LOGOUT", imap_cmd_logout, IMAP_ANY, 0},
	{"ID", imap_cmd_id, IMAP_ANY, 0},                       /* RFC 2971 */
	/* §6.2: not authenticated */
	{"STARTTLS", imap_cmd_starttls, IMAP_NOTAUTH, 0},
	{"AUTHENTICATE", imap_cmd_authenticate, IMAP_NOTAUTH, SESSION_F_NEEDS_TLS},
	{"LOGIN", imap_cmd_login, IMAP_NOTAUTH, SESSION_F_NEEDS_TLS | SESSION_F_PASSWORD},
	/* §6.3: authenticated (and selected) */
	{"ENABLE", imap_cmd_enable, IMAP_AUTH, 0},              /* RFC 5161 §3.1 */
	{"NAMESPACE", imap_cmd_namespace, IMAP_AUTHED, 0},      /* RFC 2342 */
	{"SELECT", imap_cmd_select, IMAP_AUTHED, 0},
	{"EXAMINE", imap_cmd_select, IMAP_AUTHED, 0},
	{"CREATE", imap_cmd_create, IMAP_AUTHED, 0},
	{"DELETE", imap_cmd_delete, IMAP_AUTHED, 0},
	{"RENAME", imap_cmd_rename, IMAP_AUTHED, 0},
	{"SUBSCRIBE", imap_cmd_subscribe, IMAP_AUTHED, 0},
	{"UNSUBSCRIBE", imap_cmd_unsubscribe, IMAP_AUTHED, 0},
	{"LIST", imap_cmd_list, IMAP_AUTHED, 0},
	{"LSUB", imap_cmd_list, IMAP_AUTHED, 0},
	{"STATUS", imap_cmd_status, IMAP_AUTHED, 0},
	{"APPEND", imap_cmd_append, IMAP_AUTHED, 0},
	{"IDLE", imap_cmd_idle, IMAP_AUTHED, 0},                /* RFC 2177 */
	{"NOTIFY", imap_cmd_notify_watch, IMAP_AUTHED, 0},      /* RFC 5465 */
	{"GETQUOTA", imap_cmd_getquota, IMAP_AUTHED, 0},        /* RFC 9208 */
	{"GETQUOTAROOT", imap_cmd_getquotaroot, IMAP_AUTHED, 0},
	{"SETQUOTA", imap_cmd_setquota, IMAP_AUTHED, 0},
	/* §6.4: selected */
	{"CHECK", imap_cmd_check, IMAP_SELECTED, 0},
	{"CLOSE", imap_cmd_close, IMAP_SELECTED, 0},
	{"UNSELECT", imap_cmd_unselect, IMAP_SELECTED, 0},      /* RFC 3691 */
	{"EXPUNGE", imap_cmd_expunge, IMAP_SELECTED, 0},
	{"SEARCH", imap_cmd_search, IMAP_SELECTED, IMAP_F_NO_EXPUNGE},
	{"FETCH", imap_cmd_fetch, IMAP_SELECTED, IMAP_F_NO_EXPUNGE},
	{"STORE", imap_cmd_store, IMAP_SELECTED, IMAP_F_NO_EXPUNGE},
	{"COPY", imap_cmd_copy, IMAP_SELECTED, 0},
	{"MOVE", imap_cmd_copy, IMAP_SELECTED, 0},              /* RFC 6851 */
	{"SORT", imap_cmd_sort, IMAP_SELECTED, IMAP_F_NO_EXPUNGE},     /* RFC 5256 */
	{"THREAD", imap_cmd_thread, IMAP_SELECTED, IMAP_F_NO_EXPUNGE}, /* RFC 5256 */
	{"UID SEARCH", imap_cmd_search, IMAP_SELECTED, IMAP_F_UID},
	{"UID SORT", imap_cmd_sort, IMAP_SELECTED, IMAP_F_UID},
	{"UID THREAD", imap_cmd_thread, IMAP_SELECTED, IMAP_F_UID},
	{"CANCELUPDATE", imap_cmd_cancelupdate, IMAP_SELECTED, 0},  /* RFC 5267 §4.3 */
	{"UID FETCH", imap_cmd_fetch, IMAP_SELECTED, IMAP_F_UID},
	{"UID STORE", imap_cmd_store, IMAP_SELECTED, IMAP_F_UID},
	{"UID COPY", imap_cmd_copy, IMAP_SELECTED, IMAP_F_UID},
	{"UID MOVE", imap_cmd_copy, IMAP_SELECTED, IMAP_F_UID},
	{"UID EXPUNGE", imap_cmd_expunge, IMAP_SELECTED, IMAP_F_UID}, /* RFC 4315 §2.1 */
};

static const struct imap_command_def *imap_find_command(const char *name)
{
	for (size_t i = 0; i < ARRAY_LEN(imap_commands); i++)
		if (strcmp(imap_commands[i].name, name) == 0)
			return &imap_commands[i];
	return NULL;
}

/* The gate's verdict (proto/session.h) as IMAP responses. */
static bool imap_gate(struct imap_session *s, const struct imap_command_def *d)
{
	switch (session_gate(&s->b, d->flags, (d->states & s->state) != 0, s->tls_active,
			     s->user != NULL)) {
	case SESSION_OPEN:
		return true;
	case SESSION_REFUSED:
		imap_no(s, "Access denied");
		break;
	case SESSION_NEEDS_TLS:
		imap_no(s, "[PRIVACYREQUIRED] TLS is required: use STARTTLS first");
		break;
	case SESSION_BAD_STATE:
	case SESSION_NEEDS_AUTH:
	case SESSION_LISTED: /* never: listed clients are refused at the greeting */
		if (s->state == IMAP_NOTAUTH)
			imap_bad(s, "Log in first");
		else if (d->states == IMAP_SELECTED)
			imap_bad(s, "No mailbox selected");
		else
			imap_bad(s, "Command not valid in this state");
		break;
	case SESSION_PASSWORD_NEEDS_TLS:
		imap_no(s, "[PRIVACYREQUIRED] Plaintext authentication disallowed on "
			   "non-secure connections: use STARTTLS first");
		break;
	case SESSION_PASSWORD_DISABLED:
		imap_no(s, "[CANNOT] LOGIN is disabled: use AUTHENTICATE");
		break;
	}
	return false;
}

/* ---- any state: CAPABILITY, NOOP, LOGOUT, ID --------------------------- */

static bool imap_no_args(struct imap_session *s, const struct imap_command *c)
{
	if (c->args.n == 0)
		return true;
	imap_bad(s, "Unexpected arguments");
	return false;
}

IMAP_HANDLER(imap_cmd_capability)
{
	if (!imap_no_args(s, c))
		return;
	imap_cmd_capability_untagged(s);
	imap_ok(s, "CAPABILITY completed");
}

IMAP_HANDLER(imap_cmd_logout)
{
	if (!imap_no_args(s, c))
		return;
	imap_enter_state(s, IMAP_LOGOUT);
	conn_printf(s->io, "* BYE posthorn IMAP4rev1 server logging out");
	imap_ok(s, "LOGOUT completed");
	if (s->user) {
		char esc[LOG_VALUE_MAX];
		log_info("event=logout session=%s server=%s client=%s user=%s", s->b.sid,
			 s->b.srv->name, s->b.client, log_escape(esc, sizeof esc, s->user, strlen(s->user)));
	}
	imap_close_after_flush(s);
}

/* One field of ID for the log: " id-<field>=\"<value>\"" (the field
 * name lower-cased; both escaped, a long one cut with "..."), or
 * " id-<field>=NIL". */
static bool imap_id_log_field(struct strbuf *sb, const char *k, size_t klen, const char *v,
			      size_t vlen)
{
	char key[IMAP_ID_LOG_FIELD], val[IMAP_ID_LOG_VALUE];
	log_escape(key, sizeof key, k, klen);
	for (char *p = key; *p; p++) /* escaped: printable ASCII only */
		*p = (char)tolower((unsigned char)*p);
	if (!v)
		return strbuf_addf(sb, " id-%s=NIL", key);
	return strbuf_addf(sb, " id-%s=\"%s\"", key, log_quote(val, sizeof val, v, vlen));
}

/* RFC 2971: what the client says it is, one log line for the whole
 * command.  Fields that do not fit the line are counted in id-more=N,
 * never dropped without a word. */
static void imap_id_log(const struct imap_session *s, const struct imap_args *l)
{
	char buf[IMAP_ID_LOG_MAX];
	struct strbuf sb;
	strbuf_init(&sb, buf, sizeof buf);
	size_t fields = l ? l->n / 2 : 0, more = 0;
	for (size_t i = 0; i < fields; i++) {
		size_t klen = 0, vlen = 0;
		const char *k = imap_arg_string(imap_args_at(l, 2 * i), &klen);
		const char *v = imap_arg_string(imap_args_at(l, 2 * i + 1), &vlen);
		size_t mark = strbuf_len(&sb);
		/* what is shown leaves room for the marker that may follow */
		if (more || !imap_id_log_field(&sb, k, klen, v, vlen) ||
		    strbuf_avail(&sb) < IMAP_ID_LOG_MARKER) {
			strbuf_truncate(&sb, mark);
			more++;
		}
	}
	if (more)
		(void)strbuf_addf(&sb, " id-more=%zu", more); /* room kept above */
	log_info("event=client-id session=%s server=%s client=%s fields=%zu%s", s->b.sid,
		 s->b.srv->name, s->b.client, fields, strbuf_str(&sb));
}

/* RFC 2971: log what the client says it is, answer who we are: the name
 * only before login (the version helps an attacker more than a client),
 * as Dovecot does. */
IMAP_HANDLER(imap_cmd_id)
{
	const struct imap_arg *a = imap_args_at(&c->args, 0);
	const struct imap_args *l = imap_arg_list(a);
	if (c->args.n != 1 || (!imap_arg_is_nil(a) && !l) ||
	    (l && (l->n % 2 != 0 || l->n > 2 * IMAP_ID_PAIRS_MAX))) {
		imap_bad(s, "Syntax: ID NIL or ID (\"field\" \"value\" ...)");
		return;
	}
	for (size_t i = 0; l && i < l->n; i += 2) {
		const char *k = imap_arg_string(imap_args_at(l, i), NULL);
		const char *v = imap_arg_string(imap_args_at(l, i + 1), NULL);
		if (!k || (!v && !imap_arg_is_nil(imap_args_at(l, i + 1)))) {
			imap_bad(s, "Syntax: ID field names and values are strings");
			return;
		}
	}
	imap_id_log(s, l);
	if (s->user)
		conn_printf(s->io, "* ID (\"name\" \"posthorn\" \"version\" \"%s\")",
			    POSTHORN_VERSION);
	else
		conn_printf(s->io, "* ID (\"name\" \"posthorn\")");
	imap_ok(s, "ID completed");
}

/* ---- STARTTLS (RFC 3501 §6.2.1, RFC 2595) ------------------------------ */

IMAP_HANDLER(imap_cmd_starttls)
{
	if (!imap_no_args(s, c))
		return;
	if (s->tls_active) {
		imap_bad(s, "TLS already active");
		return;
	}
	if (!s->b.ts) {
		imap_no(s, "STARTTLS not available (no certificate)");
		return;
	}
	imap_ok(s, "Begin TLS negotiation now");
	/* whatever came after the command came in the clear: conn_starttls
	 * throws it away, and the parser and line reader forget it */
	linebuf_reset(&s->lb);
	imap_parser_reset(s->parser);
	if (!conn_starttls(s->io)) {
		log_err("event=tls-error session=%s error=\"cannot start TLS\"", s->b.sid);
		imap_close_after_flush(s);
		return;
	}
	imap_enter_state(s, IMAP_HANDSHAKE);
}

/* ---- logging in -------------------------------------------------------- */

static bool imap_open_store(struct imap_session *s, const char *user);
static void imap_parser_limits(struct imap_session *s);

/* Credentials are right: prepare the user's folders and enter the
 * authenticated state, with the autologout timer of RFC 3501 §5.4
 * instead of the short one before login. */
static void imap_login(struct imap_session *s, const char *user)
{
	if (!imap_open_store(s, user))
		return;
	s->user = xstrdup(user);
	if (s->login_timer) {
		event_free(s->login_timer);
		s->login_timer = NULL;
	}
	char esc[LOG_VALUE_MAX];
	log_info("event=login session=%s server=%s client=%s result=ok user=%s mechanism=%s tls=%s",
		 s->b.sid, s->b.srv->name, s->b.client, log_escape(esc, sizeof esc, user, strlen(user)),
		 login_mechanism(s->login), s->tls_active ? "yes" : "no");
	imap_enter_state(s, IMAP_AUTH);
	imap_parser_limits(s);
	char caps[IMAP_CAPS_MAX];
	imap_capabilities(s, caps, sizeof caps);
	imap_ok(s, "[CAPABILITY %s] Logged in", caps);
}

/* The login exchange's verdict as IMAP responses (RFC 3501 §6.2, response
 * codes of RFC 5530). */
static void imap_login_done(void *owner, const struct login_verdict *v)
{
	struct imap_session *s = owner;
	if (v->kind != LOGIN_CHALLENGE && s->state == IMAP_SASL)
		imap_enter_state(s, IMAP_NOTAUTH);
	switch (v->kind) {
	case LOGIN_CHALLENGE:
		/* RFC 3501 has no success data: the SCRAM server-final goes as
		 * a last challenge too, answered by an empty line */
		conn_printf(s->io, "+ %s", v->challenge);
		imap_enter_state(s, IMAP_SASL);
		return; /* the client's answer comes as the next line */
	case LOGIN_OK:
		imap_login(s, v->user);
		break;
	case LOGIN_FAILED:
		imap_no(s, "[AUTHENTICATIONFAILED] Authentication failed");
		imap_count_error(s);
		break;
	case LOGIN_CANCELLED:
		imap_bad(s, "Authentication cancelled");
		break;
	case LOGIN_BAD_RESPONSE:
		imap_bad(s, "Cannot decode response");
		break;
	case LOGIN_UNKNOWN_MECHANISM:
		imap_no(s, "Unsupported authentication mechanism");
		imap_count_error(s);
		break;
	case LOGIN_NEEDS_TLS:
		imap_no(s, "[PRIVACYREQUIRED] Plaintext authentication disallowed on non-secure "
			   "connections: use STARTTLS first");
		break;
	case LOGIN_LOCKED_OUT:
		conn_printf(s->io, "* BYE [UNAVAILABLE] Too many failed authentication attempts; "
				   "try again in %u seconds", v->retry_after);
		imap_no(s, "[UNAVAILABLE] Too many failed authentication attempts");
		imap_close_after_flush(s);
		break;
	case LOGIN_UNAVAILABLE: /* RFC 5530 §3 */
		imap_no(s, "[UNAVAILABLE] Temporary authentication failure");
		break;
	}
	imap_run(s); /* a verdict that came later: read on */
}

/* The login exchange, made when the session first needs it (most
 * sessions never log in). */
static struct login *imap_login_exchange(struct imap_session *s)
{
	if (!s->login)
		s->login = session_login_new(&s->b, imap_login_done, s);
	return s->login;
}

/* RFC 3501 §6.2.3: LOGIN userid password (astrings). */
IMAP_HANDLER(imap_cmd_login)
{
	size_t ulen, plen;
	const char *name = imap_arg_astring(imap_args_at(&c->args, 0), &ulen);
	const char *pw = imap_arg_astring(imap_args_at(&c->args, 1), &plen);
	if (c->args.n != 2 || !name || !pw) {
		imap_bad(s, "Syntax: LOGIN user password");
		return;
	}
	/* the command's own copy, wiped there and freed right after */
	login_password(imap_login_exchange(s), "LOGIN", name, ulen, (char *)pw, plen, s->tls_active);
}

/* ---- AUTHENTICATE (RFC 3501 §6.2.2, RFC 4959 SASL-IR) ------------------ */

IMAP_HANDLER(imap_cmd_authenticate)
{
	const char *mechname = imap_arg_atom(imap_args_at(&c->args, 0));
	const struct imap_arg *ir = imap_args_at(&c->args, 1);
	const char *initial = ir ? imap_arg_atom(ir) : NULL;
	if (!mechname || c->args.n > 2 || (ir && !initial)) {
		imap_bad(s, "Syntax: AUTHENTICATE mechanism [initial-response]");
		return;
	}
	/* RFC 4959: "=" is an empty initial response, as the exchange takes it */
	login_start(imap_login_exchange(s), mechname, initial, s->tls_active);
}

/* ---- ENABLE, NAMESPACE ------------------------------------------------- */

/* RFC 5161: CONDSTORE and QRESYNC (RFC 7162 §3.2.3: QRESYNC enables
 * CONDSTORE too) can be enabled; ENABLED names those this command turned
 * on, unknown ones are left out. */
IMAP_HANDLER(imap_cmd_enable)
{
	if (c->args.n == 0) {
		imap_bad(s, "Syntax: ENABLE capability ...");
		return;
	}
	for (size_t i = 0; i < c->args.n; i++) {
		if (!imap_arg_atom(imap_args_at(&c->args, i))) {
			imap_bad(s, "Syntax: ENABLE capability ...");
			return;
		}
	}
	char enabled[48];
	struct strbuf sb;
	strbuf_init(&sb, enabled, sizeof enabled);
	for (size_t i = 0; i < c->args.n; i++) {
		const struct imap_arg *a = imap_args_at(&c->args, i);
		bool qresync = imap_arg_is(a, "QRESYNC");
		if (qresync && !s->qresync) {
			s->qresync = true;
			(void)strbuf_adds(&sb, " QRESYNC"); /* both fit: enabled[] is for them */
		}
		if ((qresync || imap_arg_is(a, "CONDSTORE")) && !s->condstore) {
			s->condstore = true;
			(void)strbuf_adds(&sb, " CONDSTORE");
		}
		if (imap_arg_is(a, IMAP_UTF8_ACCEPT) && !s->utf8) { /* RFC 6855 §3 */
			imap_utf8_enable(s);
			(void)strbuf_adds(&sb, " " IMAP_UTF8_ACCEPT);
		}
	}
	conn_printf(s->io, "* ENABLED%s", strbuf_str(&sb));
	imap_ok(s, "ENABLE completed");
}

/* RFC 2342: one personal namespace, no prefix, "." as the delimiter. */
IMAP_HANDLER(imap_cmd_namespace)
{
	if (!imap_no_args(s, c))
		return;
	conn_printf(s->io, "* NAMESPACE ((\"\" \".\")) NIL NIL");
	imap_ok(s, "NAMESPACE completed");
}

/* ---- jobs: long responses produced as the connection drains ------------- */

static void imap_handle(struct imap_session *s, const struct imap_command_def *d,
			struct imap_command *cmd);

static void imap_on_resume(evutil_socket_t fd, short what, void *arg)
{
	imap_run(arg);
}

/* The turn's budget is spent: go on at the next turn of the loop, after
 * the events of every other client that are ready now (a timer of zero
 * seconds runs after them). */
static void imap_yield(struct imap_session *s)
{
	if (!s->resume)
		s->resume = evtimer_new(s->b.rt->base, imap_on_resume, s);
	struct timeval now = {0, 0};
	evtimer_add(s->resume, &now);
}

/* Produce while the connection takes it (CONN_OUTPUT_MAX at a time, the
 * drained callback calls again) and while the turn's budget lasts (one
 * unit a step), so that one long SEARCH does not starve the others. */
static void imap_pump(struct imap_session *s, unsigned *budget)
{
	while (s->job && !s->store_busy && !conn_output_full(s->io)) {
		if (*budget == 0) {
			imap_yield(s);
			return;
		}
		(*budget)--;
		if (s->job->step(s))
			imap_job_stop(s);
		if (s->state & IMAP_CLOSING)
			imap_job_stop(s);
		if (!s->job && s->deferred) {
			struct imap_command *cmd = s->deferred;
			s->deferred = NULL;
			if (s->state & IMAP_CLOSING)
				imap_command_free(cmd);
			else
				imap_handle(s, s->deferred_def, cmd);
		}
	}
}

/* ---- input loop -------------------------------------------------------- */

static void imap_append_discard(struct imap_session *s);
static bool imap_append_continue(struct imap_session *s, const struct imap_command *pc);
static void imap_idle_line(struct imap_session *s, const struct linebuf_line *l);
static void imap_before_command(struct imap_session *s, const struct imap_command_def *d);

/* Secrets (LOGIN's password, AUTHENTICATE's initial response) leave no
 * copy behind in freed memory. */
static void imap_args_wipe(const struct imap_args *args)
{
	for (size_t i = 0; i < args->n; i++) {
		const struct imap_arg *a = imap_args_at(args, i);
		if (a->str)
			OPENSSL_cleanse(a->str, a->len);
		if (a->type == IMAP_ARG_LIST)
			imap_args_wipe(&a->list);
	}
}

static void imap_set_tag(struct imap_session *s, const char *tag)
{
	(void)snprintf(s->tag, sizeof s->tag, "%s", tag); /* fits: tags are at most IMAP_TAG_MAX */
}

/* Run the handler of a command that passed the gate; the command is
 * freed unless a job kept it. */
static void imap_handle(struct imap_session *s, const struct imap_command_def *d,
			struct imap_command *cmd)
{
	s->cur_cmd = cmd;
	d->handler(s, cmd);
	cmd = s->cur_cmd; /* NULL when a job kept it */
	s->cur_cmd = NULL;
	if (cmd && !s->user)
		imap_args_wipe(&cmd->args);
	imap_command_free(cmd);
	imap_append_discard(s); /* a message literal the command did not take */
}

static void imap_dispatch(struct imap_session *s, struct imap_command *cmd)
{
	imap_set_tag(s, cmd->tag);
	const struct imap_command_def *d = imap_find_command(cmd->name);
	/* the table's names: a fixed set of labels */
	metrics_count(METRIC_COMMANDS, METRIC_LABELS("imap", d ? d->name : "other"));
	if (!d) {
		imap_bad(s, "Unknown command");
	} else if (imap_gate(s, d)) {
		imap_before_command(s, d);
		/* CLOSING: the folder went stale and BYE is sent; drop the command */
		if (s->state != IMAP_CLOSING) {
			if (s->job) { /* the updates go out first; then the command */
				s->deferred = cmd;
				s->deferred_def = d;
				return;
			}
			imap_handle(s, d, cmd);
			return;
		}
	}
	if (!s->user)
		imap_args_wipe(&cmd->args);
	imap_command_free(cmd);
	imap_append_discard(s);
}

/* The parser accepted a synchronizing literal: ask for it, unless the
 * command can already be refused (RFC 3501 §7.5: then the octets never
 * come). */
static void imap_literal_wanted(struct imap_session *s)
{
	const struct imap_command *pc = imap_parser_pending(s->parser);
	imap_set_tag(s, pc->tag);
	const struct imap_command_def *d = imap_find_command(pc->name);
	if (!d) {
		imap_parser_reject_literal(s->parser);
		imap_bad(s, "Unknown command");
		return;
	}
	if (!imap_gate(s, d)) {
		imap_parser_reject_literal(s->parser);
		return;
	}
	if (d->handler == imap_cmd_append && !imap_append_continue(s, pc)) {
		imap_parser_reject_literal(s->parser);
		return;
	}
	conn_printf(s->io, "+ Ready for literal data");
	conn_quickack(s->io); /* the literal's ACK must not wait (conn.h) */
}

static void imap_parse_error(struct imap_session *s)
{
	const struct imap_parse_error *e = imap_parser_error(s->parser);
	imap_append_discard(s);
	imap_set_tag(s, e->has_tag ? e->tag : "*");
	imap_bad(s, e->reason);
}

/* One step of input: a command, a literal request, an error; false when
 * more input is needed. */
static bool imap_feed(struct imap_session *s, struct evbuffer *in)
{
	struct imap_command *cmd = NULL;
	switch (imap_parse_feed(s->parser, in, &cmd)) {
	case IMAP_PARSE_NEED_MORE:
		return false;
	case IMAP_PARSE_COMMAND:
		imap_dispatch(s, cmd);
		break;
	case IMAP_PARSE_CONTINUE:
		imap_literal_wanted(s);
		break;
	case IMAP_PARSE_ERROR:
		imap_parse_error(s);
		break;
	}
	return true;
}

/* A raw line: an AUTHENTICATE response or IDLE's DONE. */
static bool imap_feed_line(struct imap_session *s, struct evbuffer *in)
{
	/* one line buffer for all sessions: lines are handled before the
	 * next is read, and the loop is single-threaded */
	static char line[LINE_MAX_AUTH + 1];
	struct linebuf_line l;
	enum imap_state before = s->state;
	enum linebuf_status st = linebuf_get(&s->lb, in, LINE_MAX_AUTH, line, sizeof line, &l);
	if (st == LINEBUF_NEED_MORE)
		return false;
	if (st == LINEBUF_TOO_LONG) {
		if (before == IMAP_SASL) {
			login_abort(s->login);
			imap_enter_state(s, IMAP_NOTAUTH);
			imap_bad(s, "Authentication exchange line is too long");
		} else {
			memset(&l, 0, sizeof l);
			l.data = line;
			line[0] = '\0';
			imap_idle_line(s, &l);
		}
		return true;
	}
	if (before == IMAP_SASL)
		login_response(imap_login_exchange(s), l.data, l.has_nul || l.bare_cr);
	else
		imap_idle_line(s, &l);
	OPENSSL_cleanse(line, l.len);
	return true;
}

/* Answer what the client sent, as far as the output buffer, the turn's
 * budget (IMAP_STEP_BUDGET: whatever was pipelined, every other client
 * gets its turn) and work on a worker (a login's check, a command's disk
 * work) let it. */
static void imap_run(struct imap_session *s)
{
	if (s->in_run || !s->io)
		return;
	s->in_run = true;
	s->waits_input = false;
	struct evbuffer *in = conn_input(s->io);
	unsigned budget = IMAP_STEP_BUDGET;
	while (!(s->state & (IMAP_CLOSING | IMAP_HANDSHAKE | IMAP_LOGOUT))  &&
	       !login_busy(s->login) && !s->store_busy && !conn_closing(s->io)) {
		if (budget == 0) {
			imap_yield(s);
			break;
		}
		if (s->job) {
			imap_pump(s, &budget);
			if (s->job)
				break; /* resumed when the output drains or at the next turn */
			continue;
		}
		if (conn_output_full(s->io))
			break;
		bool progress = (s->state & (IMAP_SASL | IMAP_IDLE)) ? imap_feed_line(s, in)
								     : imap_feed(s, in);
		if (!progress) {
			s->waits_input = true;
			break;
		}
		budget = budget > IMAP_COMMAND_COST ? budget - IMAP_COMMAND_COST : 0;
	}
	s->in_run = false;
}

/* ---- transport events (conn.h) ----------------------------------------- */

static void imap_free(struct imap_session *s);

static void imap_login_timer_arm(struct imap_session *s)
{
	if (!s->login_timer)
		return;
	unsigned secs = s->b.srv->limits.timeout;
	if (secs > IMAP_LOGIN_IDLE_MAX)
		secs = IMAP_LOGIN_IDLE_MAX;
	struct timeval tv = {.tv_sec = secs};
	evtimer_add(s->login_timer, &tv);
}

static void imap_on_input(void *arg)
{
	struct imap_session *s = arg;
	imap_login_timer_arm(s);
	imap_run(s);
	/* the rest of a command is on its way: have it acknowledged at once
	 * (a client's CRLF after a literal waits for that ACK) */
	if (s->io && s->waits_input &&
	    (evbuffer_get_length(conn_input(s->io)) > 0 || imap_parser_in_command(s->parser)))
		conn_quickack(s->io);
}

static void imap_on_drained(void *arg)
{
	imap_run(arg);
}

static void imap_on_closed(void *arg)
{
	imap_free(arg);
}

static void imap_autologout(struct imap_session *s)
{
	log_info("event=timeout session=%s server=%s client=%s state=%s", s->b.sid, s->b.srv->name,
		 s->b.client, imap_state_name(s->state));
	imap_job_stop(s);
	conn_printf(s->io, "* BYE Autologout; idle for too long");
	imap_close_after_flush(s);
}

/* RFC 3501 §5.4: the autologout timer (the connection's own, at least 30
 * minutes once authenticated). */
static void imap_on_timeout(void *arg)
{
	struct imap_session *s = arg;
	if (s->state & IMAP_CLOSING)
		return;
	imap_autologout(s);
}

/* Before login the limit is short: a client that connects and says
 * nothing, or never finishes the TLS handshake, is gone soon. */
static void imap_on_login_timer(evutil_socket_t fd, short what, void *arg)
{
	struct imap_session *s = arg;
	if (s->state & IMAP_CLOSING)
		return;
	if (s->state == IMAP_HANDSHAKE) {
		log_info("event=timeout session=%s server=%s client=%s state=handshake", s->b.sid,
			 s->b.srv->name, s->b.client);
		imap_free(s);
		return;
	}
	imap_autologout(s);
}

static void imap_greet(struct imap_session *s)
{
	if (s->b.refused) {
		/* refused by the connection rules: the client hears why and is gone */
		conn_printf(s->io, "* BYE %s", s->b.refusal ? s->b.refusal : "Access denied");
		imap_close_after_flush(s);
		return;
	}
	char caps[IMAP_CAPS_MAX];
	imap_capabilities(s, caps, sizeof caps);
	conn_printf(s->io, "* OK [CAPABILITY %s] %s posthorn IMAP4rev1 server ready", caps,
		    s->b.srv->hostname);
}

/* TLS is up: forget what was learnt before it (RFC 3501 §6.2.1: the
 * capabilities may have changed, the client asks again). */
static void imap_on_tls_ready(void *arg)
{
	struct imap_session *s = arg;
	s->tls_active = true;
	imap_enter_state(s, IMAP_NOTAUTH);
	if (s->b.implicit_tls)
		imap_greet(s);
	imap_run(s);
}

static const struct conn_handler imap_conn_handler = {
	.input = imap_on_input,
	.drained = imap_on_drained,
	.tls_ready = imap_on_tls_ready,
	.timeout = imap_on_timeout,
	.closed = imap_on_closed,
};

/* ---- around every command ------------------------------------------------- */

/* After login: the parser's larger limits, and APPEND's message literal
 * streamed to a file (never held in memory) up to limits.message-size. */
static int imap_append_write(void *arg, const void *data, size_t len);
static int imap_append_start(void *arg, const struct imap_command *pc);

static void imap_parser_limits(struct imap_session *s)
{
	imap_parser_set_authenticated(s->parser, true);
	struct imap_literal_sink sink = {.arg = s, .write = imap_append_write,
					 .start = imap_append_start};
	imap_parser_set_append(s->parser, s->b.srv->limits.message_size, &sink);
}

/* RFC 3501 §5.2, §7: what other sessions and deliveries changed in the
 * selected folder is announced before a command's completion; EXPUNGE
 * not while the command is FETCH, STORE or SEARCH (§7.4.1), whose
 * numbers must stay as the client knows them. */
static void imap_before_command(struct imap_session *s, const struct imap_command_def *d)
{
	if (s->state == IMAP_SELECTED && s->view)
		imap_sync(s, !(d->flags & IMAP_F_NO_EXPUNGE));
}

/* ---- a command's disk work on a worker ------------------------------------- */

/* APPEND, COPY, MOVE, EXPUNGE and CLOSE end in syncs, which never run on
 * the event loop: the command's work goes to a worker (mailbox.h "work for
 * a worker") and the session reads no further command until its done()
 * has answered it, once the change is durable. */
typedef void (*imap_store_done_fn)(struct imap_session *s, struct mailbox_job *j);

static void imap_store_run(void *work)
{
	mailbox_job_run(work);
}

static void imap_store_free(void *work)
{
	mailbox_job_free(work);
}

static void imap_store_finished(void *owner, void *work)
{
	struct imap_session *s = owner;
	imap_store_done_fn done = s->store_done;
	s->store = NULL;
	s->store_busy = false;
	s->store_done = NULL;
	done(s, work);
	imap_run(s); /* the commands that waited */
}

static void imap_store_start(struct imap_session *s, struct mailbox_job *j,
			     imap_store_done_fn done)
{
	s->store_busy = true;
	s->store_done = done;
	s->store = offload_submit(imap_store_run, imap_store_finished, imap_store_free, j, s);
}

/* The session is going (shutdown, an error): a done() answers nothing. */
static bool imap_store_answer(const struct imap_session *s)
{
	return !(s->state & IMAP_CLOSING) && s->io && !conn_closing(s->io);
}

/* ---- NOOP, CHECK, CLOSE, UNSELECT, EXPUNGE ------------------------------- */

/* RFC 3501 §6.1.2: NOOP is how a client polls: the updates come with it
 * (imap_before_command synchronised the view already). */
IMAP_HANDLER(imap_cmd_noop)
{
	if (!imap_no_args(s, c))
		return;
	imap_ok(s, "NOOP completed");
}

/* §6.4.1: every change is on disk as it is made; a checkpoint is a sync. */
IMAP_HANDLER(imap_cmd_check)
{
	if (!imap_no_args(s, c))
		return;
	imap_ok(s, "CHECK completed");
}

static void imap_closed(struct imap_session *s)
{
	imap_view_close(s);
	imap_enter_state(s, IMAP_AUTH);
	imap_ok(s, "CLOSE completed");
}

static void imap_close_done(struct imap_session *s, struct mailbox_job *j)
{
	char err[256] = "";
	if (mailbox_expunge_end(s->view, j, err, sizeof err) != MAILBOX_OK)
		imap_mailbox_log(s, "close", err);
	imap_quota_recount(s);
	if (imap_store_answer(s))
		imap_closed(s);
}

/* §6.4.2: expunge silently (not in EXAMINE), then leave the folder. */
IMAP_HANDLER(imap_cmd_close)
{
	if (!imap_no_args(s, c))
		return;
	char err[256];
	struct mailbox_job *j = NULL;
	if (!imap_view_readonly(s) &&
	    mailbox_expunge_begin(s->view, NULL, NULL, &j, err, sizeof err) != MAILBOX_OK)
		imap_mailbox_log(s, "close", err);
	if (j)
		imap_store_start(s, j, imap_close_done);
	else
		imap_closed(s);
}

/* RFC 3691: leave the folder without expunging. */
IMAP_HANDLER(imap_cmd_unselect)
{
	if (!imap_no_args(s, c))
		return;
	imap_view_close(s);
	imap_enter_state(s, IMAP_AUTH);
	imap_ok(s, "UNSELECT completed");
}

static void imap_expunge_done(struct imap_session *s, struct mailbox_job *j);

/* EXPUNGE, and UID EXPUNGE set (RFC 4315 §2.1: only those UIDs); the
 * EXPUNGE responses go out before the completion. */
IMAP_HANDLER(imap_cmd_expunge)
{
	bool uid = imap_is_uid(c);
	struct imap_seqset set = {0};
	if (uid) {
		if (c->args.n != 1) {
			imap_bad(s, "Syntax: UID EXPUNGE uids");
			return;
		}
		if (!imap_set_parse(s, imap_args_at(&c->args, 0), true, &set))
			return;
	} else if (!imap_no_args(s, c)) {
		return;
	}
	char err[256];
	struct imap_match m = {&set, true};
	struct mailbox_job *j;
	enum mailbox_result r =
	    mailbox_expunge_begin(s->view, uid ? imap_match_fn : NULL, &m, &j, err, sizeof err);
	imap_seqset_clear(&set);
	if (r != MAILBOX_OK) {
		imap_store_error(s, r, err);
		return;
	}
	imap_store_start(s, j, imap_expunge_done);
}

/* The messages are gone, durably: the EXPUNGE responses, then OK. */
static void imap_expunge_done(struct imap_session *s, struct mailbox_job *j)
{
	char err[256] = "";
	enum mailbox_result r = mailbox_expunge_end(s->view, j, err, sizeof err);
	imap_quota_recount(s);
	if (!imap_store_answer(s))
		return;
	if (r != MAILBOX_OK && r != MAILBOX_ERR_EXPUNGED) {
		imap_store_error(s, r, err);
		return;
	}
	imap_updates(s, "OK", "EXPUNGE completed");
}

/* ---- IDLE (RFC 2177) -------------------------------------------------------- */

IMAP_HANDLER(imap_cmd_idle)
{
	if (!imap_no_args(s, c))
		return;
	imap_enter_state(s, IMAP_IDLE);
	linebuf_reset(&s->lb);
	conn_printf(s->io, "+ idling");
	imap_watch_start(s);
}

/* NOTIFY (imap_notify.c), then the selected folder's watch as it asks. */
IMAP_HANDLER(imap_cmd_notify_watch)
{
	imap_cmd_notify(s, c);
	imap_watch_selected(s);
}

/* The line after "+ idling": DONE ends it; anything else is a BAD that
 * ends it too. */
static void imap_idle_line(struct imap_session *s, const struct linebuf_line *l)
{
	imap_enter_state(s, s->view ? IMAP_SELECTED : IMAP_AUTH);
	imap_watch_selected(s);
	if (l->len == 4 && strncasecmp(l->data, "DONE", 4) == 0) {
		imap_sync(s, true);
		if (s->state != IMAP_CLOSING)
			imap_ok(s, "IDLE terminated");
	} else {
		imap_bad(s, "Expected DONE to end IDLE");
	}
}

/* ---- the selected folder (mailbox.c) -------------------------------------- */

static void imap_view_close(struct imap_session *s)
{
	if (!s->view)
		return;
	imap_watch_stop(s);
	imap_msg_release(s);
	imap_esearch_reset(s);
	mailbox_close(s->view);
	s->view = NULL;
}

/* Read the disk and queue the changes (RFC 3501 §7.4.1: expunges only
 * when they may be reported now). */
static void imap_sync(struct imap_session *s, bool expunges)
{
	if (!s->view)
		return;
	char err[256];
	unsigned flags = expunges ? MAILBOX_SYNC_EXPUNGE : 0;
	if (mailbox_sync(s->view, flags, err, sizeof err) != MAILBOX_OK) {
		imap_mailbox_log(s, "sync", err);
		/* The folder's UIDs were renumbered (index lost) or the folder
		 * went: sequence numbers and UIDs the client holds mean nothing
		 * now, so the session ends and the client starts over. */
		if (mailbox_stale(s->view) && s->state != IMAP_CLOSING) {
			imap_job_stop(s);
			conn_printf(s->io, "* BYE [UNAVAILABLE] The selected mailbox changed under "
					   "this session; please reconnect");
			imap_close_after_flush(s);
			return;
		}
	}
	if (mailbox_changes_pending(s->view) && !s->job)
		imap_updates(s, NULL, NULL);
}

/* The untagged updates job: one queued change per step, then the tagged
 * completion (if any). */
struct imap_updates_job {
	char *status, *text;
	struct imap_out out;
};

static bool imap_updates_step(struct imap_session *s)
{
	struct imap_updates_job *j = s->job_data;
	struct mailbox_change ch;
	if (s->view && mailbox_keywords_take_changed(s->view))
		imap_keywords_text(s, &j->out);
	if (s->view && mailbox_next_change(s->view, &ch)) {
		switch (ch.kind) {
		case MAILBOX_CHANGE_EXPUNGE:
			imap_esearch_expunged(s, &j->out, ch.n, ch.uid);
			/* RFC 7162 §3.2.10: VANISHED once QRESYNC is on */
			if (s->qresync)
				imap_out_printf(&j->out, "* VANISHED %lu\r\n", (unsigned long)ch.uid);
			else
				imap_out_printf(&j->out, "* %zu EXPUNGE\r\n", ch.n);
			break;
		case MAILBOX_CHANGE_EXISTS:
			imap_out_printf(&j->out, "* %zu EXISTS\r\n", ch.n);
			imap_notify_new_messages(s, &j->out, ch.n); /* RFC 5465 §5.2 */
			break;
		case MAILBOX_CHANGE_RECENT:
			imap_out_printf(&j->out, "* %zu RECENT\r\n", ch.n);
			break;
		case MAILBOX_CHANGE_FLAGS:
			imap_out_printf(&j->out, "* %zu FETCH (FLAGS ", ch.n);
			imap_flags_text(&j->out, s->view, ch.flags);
			imap_out_printf(&j->out, " UID %lu", (unsigned long)ch.uid);
			if (s->condstore) /* RFC 7162 §3.1: with its MODSEQ */
				imap_out_printf(&j->out, " MODSEQ (%llu)",
						(unsigned long long)ch.modseq);
			imap_out_add(&j->out, ")\r\n", 3);
			break;
		}
		if (imap_out_full(&j->out))
			imap_send(s, &j->out);
		return false;
	}
	imap_esearch_refresh(s, &j->out); /* RFC 5267 §4.4: ADDTO, REMOVEFROM */
	imap_notify_flush(s, &j->out);    /* RFC 5465: STATUS, LIST */
	imap_send(s, &j->out);
	if (j->status)
		imap_reply(s, j->status, "%s", j->text);
	return true;
}

static void imap_updates_stop(struct imap_session *s)
{
	struct imap_updates_job *j = s->job_data;
	imap_out_free(&j->out);
	free(j->status);
	free(j->text);
	free(j);
}

static const struct imap_job_ops imap_updates_ops = {imap_updates_step, imap_updates_stop};

/* Send the queued changes, then (status non-NULL) the tagged completion. */
static void imap_updates(struct imap_session *s, const char *status, const char *text)
{
	struct imap_updates_job *j = xcalloc(1, sizeof *j);
	j->status = status ? xstrdup(status) : NULL;
	j->text = text ? xstrdup(text) : NULL;
	imap_out_init(&j->out);
	imap_job_start(s, &imap_updates_ops, j);
}

/* ---- IDLE's watch ------------------------------------------------------------ */

enum {
	IMAP_IDLE_POLL_MS = 1000,    /* without inotify: look this often */
	/* with inotify too: another host's changes on a shared file system
	 * raise no inotify event here (inotify(7)) */
	IMAP_IDLE_RESCAN_MS = 5000,
};

static void imap_on_watch(evutil_socket_t fd, short what, void *arg)
{
	struct imap_session *s = arg;
	bool expunges = true;
	if (!s->view)
		return;
	if (s->state != IMAP_IDLE) {
		/* RFC 5465 §5: between commands, when NOTIFY asked */
		if (s->state != IMAP_SELECTED || s->job || s->store_busy || s->deferred ||
		    !imap_notify_selected(s, &expunges))
			return;
	}
	if (what & EV_READ)
		mailbox_watch_drain(s->view);
	imap_sync(s, expunges);
	imap_run(s);
}

/* The selected folder's watch: on while IDLE or NOTIFY wants its changes
 * between commands (RFC 5465 §5), else off. */
static void imap_watch_selected(struct imap_session *s)
{
	bool expunges;
	if (s->state == IMAP_IDLE || imap_notify_selected(s, &expunges))
		imap_watch_start(s);
	else
		imap_watch_stop(s);
}

static void imap_watch_start(struct imap_session *s)
{
	if (!s->view || s->watch)
		return;
	char err[256];
	int fd = mailbox_watch(s->view, err, sizeof err);
	if (fd >= 0) {
		s->watch = event_new(s->b.rt->base, fd, EV_READ | EV_PERSIST, imap_on_watch, s);
		struct timeval rescan = {.tv_sec = IMAP_IDLE_RESCAN_MS / 1000,
					 .tv_usec = (IMAP_IDLE_RESCAN_MS % 1000) * 1000};
		event_add(s->watch, &rescan);
		return;
	}
	char q[LOG_VALUE_MAX];
	log_warn("event=idle-poll session=%s error=\"%s\"", s->b.sid,
		 log_quote(q, sizeof q, err, strlen(err)));
	s->watch = event_new(s->b.rt->base, -1, EV_PERSIST, imap_on_watch, s);
	struct timeval tv = {.tv_sec = IMAP_IDLE_POLL_MS / 1000,
			     .tv_usec = (IMAP_IDLE_POLL_MS % 1000) * 1000};
	event_add(s->watch, &tv);
}

static void imap_watch_stop(struct imap_session *s)
{
	if (!s->watch)
		return;
	event_free(s->watch);
	s->watch = NULL;
	if (s->view)
		mailbox_unwatch(s->view);
}

/* ---- login: the user's folders -------------------------------------------- */

static bool imap_open_store(struct imap_session *s, const char *user)
{
	char err[512];
	char *dir = maildir_path(s->b.rt->conf->mailboxes, user);
	if (!dir) {
		imap_no(s, "[UNAVAILABLE] No mailbox for this user");
		return false;
	}
	if (mailbox_prepare(dir, err, sizeof err) < 0) {
		imap_mailbox_log(s, "login", err);
		free(dir);
		imap_no(s, "[UNAVAILABLE] Cannot open the mailbox");
		return false;
	}
	free(s->maildir);
	s->maildir = dir;
	return true;
}

/* A mailbox name argument (astring), or BAD. */
static const char *imap_mailbox_arg(struct imap_session *s, const struct imap_command *c,
				    size_t i)
{
	size_t len;
	const char *name = imap_arg_astring(imap_args_at(&c->args, i), &len);
	if (!name || len != strlen(name)) {
		imap_bad(s, "Invalid mailbox name argument");
		return NULL;
	}
	name = imap_utf8_name_in(s, name, i);
	if (!name)
		imap_bad(s, "Invalid UTF-8 in the mailbox name");
	return name;
}

/* ---- SELECT, EXAMINE (RFC 3501 §6.3.1, §6.3.2, RFC 7162 §3.1.8, §3.2.5) ---- */

/* SELECT's (QRESYNC (uidvalidity modseq [known-uids [(seqs uids)]])). */
struct imap_qresync {
	bool on;
	uint32_t uidvalidity;
	uint64_t modseq;
	struct imap_seqset known;        /* resolved when selected; n 0: not given */
	bool has_known;
};

/* The QRESYNC parameter's list into q; false when it is not valid.  The
 * sequence match data is checked and not used: every UID is looked up
 * (RFC 7162 §3.2.5.2 lets a server do without it). */
static bool imap_qresync_param(const struct imap_args *l, struct imap_qresync *q)
{
	char err[IMAP_REASON_MAX];
	if (!l || l->n < 2 || l->n > 4 || !imap_arg_u32(imap_args_at(l, 0), &q->uidvalidity) ||
	    q->uidvalidity == 0 || !imap_arg_u64(imap_args_at(l, 1), &q->modseq) || q->modseq == 0)
		return false;
	if (l->n >= 3) {
		const char *known = imap_arg_raw_atom(imap_args_at(l, 2));
		if (!known || !imap_parse_seqset(known, &q->known, err, sizeof err))
			return false;
		q->has_known = true;
	}
	if (l->n == 4) {
		const struct imap_args *m = imap_arg_list(imap_args_at(l, 3));
		struct imap_seqset a = {0}, b = {0};
		bool ok = m && m->n == 2 && imap_arg_raw_atom(imap_args_at(m, 0)) &&
			  imap_arg_raw_atom(imap_args_at(m, 1)) &&
			  imap_parse_seqset(imap_arg_raw_atom(imap_args_at(m, 0)), &a, err, sizeof err) &&
			  imap_parse_seqset(imap_arg_raw_atom(imap_args_at(m, 1)), &b, err, sizeof err);
		imap_seqset_clear(&a);
		imap_seqset_clear(&b);
		if (!ok)
			return false;
	}
	q->on = true;
	return true;
}

/* SELECT's optional parameters (RFC 4466 §2.1): CONDSTORE, QRESYNC (...).
 * false after answering BAD. */
static bool imap_select_params(struct imap_session *s, const struct imap_args *l, bool *condstore,
			       struct imap_qresync *q)
{
	for (size_t i = 0; l && i < l->n; i++) {
		const struct imap_arg *a = imap_args_at(l, i);
		if (imap_arg_is(a, "CONDSTORE")) {
			*condstore = true;
			continue;
		}
		if (imap_arg_is(a, "QRESYNC") && !q->on) {
			/* RFC 7162 §3.2.5: BAD unless QRESYNC was enabled */
			if (!s->qresync) {
				imap_bad(s, "QRESYNC is not enabled: ENABLE QRESYNC first");
				return false;
			}
			if (imap_qresync_param(imap_arg_list(imap_args_at(l, i + 1)), q)) {
				i++;
				continue;
			}
		}
		imap_seqset_clear(&q->known);
		imap_bad(s, "Syntax: SELECT mailbox [(CONDSTORE | QRESYNC (uidvalidity modseq "
			    "[known-uids [(seqs uids)]]))]");
		return false;
	}
	return true;
}

/* What a QRESYNC client lacks (RFC 7162 §3.2.5.1): the UIDs expunged since
 * its MODSEQ, then the messages changed since, before the tagged OK (a
 * job). */
static void imap_select_resync(struct imap_session *s, struct imap_qresync *q, const char *done)
{
	struct mailbox *mb = s->view;
	struct imap_seqset *known = q->has_known ? &q->known : NULL;
	if (known)
		imap_seqset_resolve(known, mailbox_uidnext(mb) > 1 ? mailbox_uidnext(mb) - 1 : 0);
	struct imap_out out;
	imap_out_init(&out);
	(void)imap_vanished_earlier(s, &out, q->modseq, known);
	imap_send(s, &out);
	imap_out_free(&out);
	imap_fetch_changed(s, known, q->modseq, done);
	imap_seqset_clear(&q->known);
}

IMAP_HANDLER(imap_cmd_select)
{
	bool examine = strcmp(c->name, "EXAMINE") == 0;
	const struct imap_args *params = imap_arg_list(imap_args_at(&c->args, 1));
	if (c->args.n < 1 || c->args.n > 2 || (c->args.n == 2 && !params)) {
		imap_bad(s, examine ? "Syntax: EXAMINE mailbox [(parameters)]"
				    : "Syntax: SELECT mailbox [(parameters)]");
		return;
	}
	const char *name = imap_mailbox_arg(s, c, 0);
	bool condstore = false;
	struct imap_qresync q = {0};
	if (!name || !imap_select_params(s, params, &condstore, &q))
		return;
	/* §6.3.1: a SELECT leaves the folder selected before, even if it fails;
	 * RFC 7162 §3.2.11: with QRESYNC on, the client is told where the
	 * responses of the old folder end */
	if (s->view && s->qresync)
		conn_printf(s->io, "* OK [CLOSED] Previous mailbox closed");
	imap_view_close(s);
	imap_enter_state(s, IMAP_AUTH);
	char err[256];
	struct mailbox *mb;
	enum mailbox_result r = mailbox_open(s->maildir, name, examine, &mb, err, sizeof err);
	if (r != MAILBOX_OK) {
		imap_seqset_clear(&q.known);
		imap_store_error(s, r, err);
		return;
	}
	s->view = mb;
	if (condstore)
		s->condstore = true; /* RFC 7162 §3.1.8: a CONDSTORE enabling command */
	struct mailbox_change ch;
	while (mailbox_next_change(mb, &ch))
		; /* the state at SELECT is what the responses below say */
	imap_keywords_select(s, examine);
	conn_printf(s->io, "* %zu EXISTS", mailbox_count(mb));
	conn_printf(s->io, "* %zu RECENT", mailbox_recent(mb));
	size_t unseen = mailbox_first_unseen(mb);
	if (unseen)
		conn_printf(s->io, "* OK [UNSEEN %zu] First unseen", unseen);
	conn_printf(s->io, "* OK [UIDVALIDITY %lu] UIDs valid",
		    (unsigned long)mailbox_uidvalidity(mb));
	conn_printf(s->io, "* OK [UIDNEXT %lu] Predicted next UID",
		    (unsigned long)mailbox_uidnext(mb));
	if (s->condstore)
		conn_printf(s->io, "* OK [HIGHESTMODSEQ %llu] Highest",
			    (unsigned long long)mailbox_highestmodseq(mb));
	imap_enter_state(s, IMAP_SELECTED);
	imap_notify_view_opened(s);
	imap_watch_selected(s); /* RFC 5465: NOTIFY's SELECTED filter */
	const char *done = examine ? "[READ-ONLY] EXAMINE completed" : "[READ-WRITE] SELECT completed";
	if (q.on && q.uidvalidity == mailbox_uidvalidity(mb)) {
		imap_select_resync(s, &q, done);
		return;
	}
	imap_seqset_clear(&q.known);
	imap_ok(s, "%s", done);
}

/* ---- CREATE, DELETE, RENAME, SUBSCRIBE, UNSUBSCRIBE ------------------------ */

/* RFC 6154 §3: the special uses of CREATE's "(USE (\\Sent ...))" into
 * *uses; BAD for bad syntax or another parameter, NO [USEATTR] for a use
 * that is not offered (the virtual \\All and \\Flagged, unknown ones). */
static bool imap_create_uses(struct imap_session *s, const struct imap_args *params,
			     unsigned *uses)
{
	*uses = MAILBOX_SPECIAL_NONE;
	for (size_t i = 0; params && i < params->n; i += 2) {
		const struct imap_args *l = imap_arg_list(imap_args_at(params, i + 1));
		if (!imap_arg_is(imap_args_at(params, i), "USE") || !l) {
			imap_bad(s, "Syntax: CREATE mailbox [(USE (\\Attribute ...))]");
			return false;
		}
		for (size_t k = 0; k < l->n; k++) {
			const char *attr = imap_arg_flag(imap_args_at(l, k));
			unsigned bit;
			if (!attr || attr[0] != '\\') {
				imap_bad(s, "Syntax: a special use is \\Attribute");
				return false;
			}
			if (!mailbox_special_parse(attr, &bit)) {
				imap_no(s, "[USEATTR] Special use not offered (only \\Archive \\Drafts "
					   "\\Junk \\Sent \\Trash)");
				return false;
			}
			*uses |= bit;
		}
	}
	return true;
}

/* CREATE mailbox [(USE (\\Sent))]: RFC 3501 §6.3.3, RFC 6154 §3. */
IMAP_HANDLER(imap_cmd_create)
{
	const struct imap_args *params = imap_arg_list(imap_args_at(&c->args, 1));
	if (c->args.n < 1 || c->args.n > 2 || (c->args.n == 2 && !params)) {
		imap_bad(s, "Syntax: CREATE mailbox [(USE (\\Attribute ...))]");
		return;
	}
	const char *name = imap_mailbox_arg(s, c, 0);
	unsigned uses;
	if (!name || !imap_create_uses(s, params, &uses))
		return;
	char err[256];
	if (imap_store_error(s, mailbox_create_special(s->maildir, name, uses, err, sizeof err),
			     err)) {
		imap_notify_mailbox_changed(s, IMAP_NOTIFY_MAILBOX_NAME, name, NULL, false);
		imap_ok(s, "CREATE completed");
	}
}

IMAP_HANDLER(imap_cmd_delete)
{
	const char *name = c->args.n == 1 ? imap_mailbox_arg(s, c, 0) : NULL;
	if (c->args.n != 1) {
		imap_bad(s, "Syntax: DELETE mailbox");
		return;
	}
	char err[256];
	if (name && imap_store_error(s, mailbox_delete(s->maildir, name, err, sizeof err), err)) {
		imap_quota_recount(s); /* its messages are gone */
		imap_notify_mailbox_changed(s, IMAP_NOTIFY_MAILBOX_NAME, name, NULL, true);
		imap_ok(s, "DELETE completed");
	}
}

IMAP_HANDLER(imap_cmd_rename)
{
	if (c->args.n != 2) {
		imap_bad(s, "Syntax: RENAME mailbox newname");
		return;
	}
	const char *from = imap_mailbox_arg(s, c, 0);
	const char *to = from ? imap_mailbox_arg(s, c, 1) : NULL;
	char err[256];
	if (to && imap_store_error(s, mailbox_rename(s->maildir, from, to, err, sizeof err), err)) {
		imap_notify_mailbox_changed(s, IMAP_NOTIFY_MAILBOX_NAME, to, from, false);
		imap_ok(s, "RENAME completed");
	}
}

static void imap_subscription(struct imap_session *s, const struct imap_command *c, bool on)
{
	if (c->args.n != 1) {
		imap_bad(s, on ? "Syntax: SUBSCRIBE mailbox" : "Syntax: UNSUBSCRIBE mailbox");
		return;
	}
	const char *name = imap_mailbox_arg(s, c, 0);
	char err[256];
	if (name &&
	    imap_store_error(s, mailbox_subscribe(s->maildir, name, on, err, sizeof err), err)) {
		imap_notify_mailbox_changed(s, IMAP_NOTIFY_SUBSCRIPTION_CHANGE, name, NULL, !on);
		imap_ok(s, "%s completed", on ? "SUBSCRIBE" : "UNSUBSCRIBE");
	}
}

IMAP_HANDLER(imap_cmd_subscribe)
{
	imap_subscription(s, c, true);
}

IMAP_HANDLER(imap_cmd_unsubscribe)
{
	imap_subscription(s, c, false);
}

/* ---- STATUS (§6.3.10) ---------------------------------------------------------- */

IMAP_HANDLER(imap_cmd_status)
{
	const struct imap_args *items = imap_arg_list(imap_args_at(&c->args, 1));
	if (c->args.n != 2 || !items || items->n == 0) {
		imap_bad(s, "Syntax: STATUS mailbox (items)");
		return;
	}
	const char *name = imap_mailbox_arg(s, c, 0);
	if (!name)
		return;
	/* DELETED: RFC 9051 §6.3.11; DELETED-STORAGE: RFC 9208, which asks
	 * for both of a server with its STORAGE and MESSAGE resources */
	static const char *const names[] = {"MESSAGES", "RECENT", "UIDNEXT", "UIDVALIDITY",
					    "UNSEEN", "HIGHESTMODSEQ", "DELETED",
					    "DELETED-STORAGE"};
	for (size_t i = 0; i < items->n; i++) {
		size_t k = 0;
		while (k < ARRAY_LEN(names) && !imap_arg_is(imap_args_at(items, i), names[k]))
			k++;
		if (k == ARRAY_LEN(names)) {
			imap_bad(s, "Unknown STATUS item");
			return;
		}
		if (k == 5)
			imap_condstore_enable(s); /* RFC 7162 §3.1.2.1 */
	}
	struct mailbox_status st;
	char err[256];
	if (!imap_store_error(s, mailbox_status(s->maildir, name, &st, err, sizeof err), err))
		return;
	/* DELETED-STORAGE in units of 1024 octets, as QUOTA's STORAGE */
	const unsigned long long values[] = {st.messages,    st.recent,	    st.uidnext,
					     st.uidvalidity, st.unseen,	    st.highestmodseq,
					     st.deleted,     st.deleted_octets / 1024};
	struct imap_out out;
	imap_out_init(&out);
	imap_out_printf(&out, "* STATUS ");
	imap_utf8_put_mailbox(s, &out, name);
	imap_out_printf(&out, " (");
	for (size_t i = 0; i < items->n; i++) {
		size_t k = 0;
		while (!imap_arg_is(imap_args_at(items, i), names[k]))
			k++;
		imap_out_printf(&out, "%s%s %llu", i ? " " : "", names[k], values[k]);
	}
	imap_out_printf(&out, ")\r\n");
	imap_send(s, &out);
	imap_out_free(&out);
	imap_ok(s, "STATUS completed");
}

/* ---- APPEND (RFC 3501 §6.3.11, RFC 4315 APPENDUID) -------------------------- */

/* Open the file for the message literal in the folder's tmp/.  false with
 * the result in *r (NONEXISTENT: say [TRYCREATE]). */
static bool imap_append_open(struct imap_session *s, const char *name, enum mailbox_result *r,
			     char *err, size_t errsz)
{
	if (s->append_path)
		return true;
	name = imap_utf8_name_in(s, name, 0);
	if (!name) {
		*r = MAILBOX_ERR_NAME;
		errfmt(err, errsz, "invalid UTF-8 in the mailbox name");
		return false;
	}
	*r = mailbox_append_begin(s->maildir, name, &s->append_path, &s->append_fd, err, errsz);
	if (*r != MAILBOX_OK) {
		s->append_path = NULL;
		s->append_fd = -1;
		return false;
	}
	return true;
}

/* RFC 3502 MULTIAPPEND: the message files of one APPEND, received and
 * closed, in order; once all are checked, delivered by one job, all or
 * none, their UIDs collected for APPENDUID. */
struct imap_multiappend {
	char **files;                    /* NULL once a job has taken it */
	unsigned *flags;
	long long *dates;
	size_t n, cap;
	bool delivering;
	char **recv;                     /* literals received, not yet a message's */
	size_t nrecv, nextrecv;
	char *name;                      /* the folder */
	uint32_t validity;
	uint32_t *uids;
	size_t nuids;
	uint64_t *sizes;                 /* each message's octets, for the quota */
};

static struct imap_multiappend *imap_multi(struct imap_session *s)
{
	if (!s->multi)
		s->multi = xcalloc(1, sizeof *s->multi);
	return s->multi;
}

/* Every file not delivered is removed. */
static void imap_multi_free(struct imap_session *s)
{
	struct imap_multiappend *m = s->multi;
	if (!m)
		return;
	for (size_t i = 0; i < m->n; i++) {
		if (m->files[i])
			mailbox_append_abort(m->files[i]);
		free(m->files[i]);
	}
	free(m->files);
	for (size_t i = 0; i < m->nrecv; i++) {
		if (m->recv[i])
			mailbox_append_abort(m->recv[i]);
		free(m->recv[i]);
	}
	free(m->recv);
	free(m->flags);
	free(m->dates);
	free(m->uids);
	free(m->sizes);
	free(m->name);
	free(m);
	s->multi = NULL;
}

/* The current message literal is complete: its file joins the others. */
static void imap_append_finish_current(struct imap_session *s)
{
	if (s->append_fd >= 0)
		close(s->append_fd);
	s->append_fd = -1;
	if (!s->append_path)
		return;
	struct imap_multiappend *m = imap_multi(s);
	char **slot = xgrow(&m->files, &m->n, &m->cap, sizeof *slot);
	*slot = s->append_path;
	s->append_path = NULL;
}

/* The message literals were not used (a bad command, a refusal): drop
 * them, unless they are being delivered. */
static void imap_append_discard(struct imap_session *s)
{
	if (s->append_fd >= 0)
		close(s->append_fd);
	s->append_fd = -1;
	if (s->append_path)
		mailbox_append_abort(s->append_path);
	free(s->append_path);
	s->append_path = NULL;
	if (s->multi && !s->multi->delivering)
		imap_multi_free(s);
}

/* The parser's sink: octets of the message literal, straight to the file.
 * A {n+} literal comes without a continuation, so the file may be opened
 * here, for the mailbox the pending command names. */
static int imap_append_write(void *arg, const void *data, size_t len)
{
	struct imap_session *s = arg;
	if (!s->append_path) {
		const struct imap_command *pc = imap_parser_pending(s->parser);
		size_t nlen;
		const char *name = pc ? imap_arg_astring(imap_args_at(&pc->args, 0), &nlen) : NULL;
		enum mailbox_result r;
		char err[256];
		if (!name || nlen != strlen(name) || !imap_append_open(s, name, &r, err, sizeof err))
			return -1;
	}
	if (write_all(s->append_fd, data, len) < 0) {
		imap_mailbox_log(s, "append", strerror(errno));
		return -1;
	}
	return 0;
}

/* The parser's sink: a message literal begins (RFC 3502: one of several).
 * The one before is complete; the new one's file is opened now, so that
 * even an empty literal has one. */
static int imap_append_start(void *arg, const struct imap_command *pc)
{
	struct imap_session *s = arg;
	imap_append_finish_current(s);
	if (s->multi && s->multi->n >= IMAP_MULTIAPPEND_MAX)
		return -1; /* no file: the message is refused with [LIMIT] */
	size_t nlen;
	const char *name = pc ? imap_arg_astring(imap_args_at(&pc->args, 0), &nlen) : NULL;
	enum mailbox_result r;
	char err[256];
	if (!name || nlen != strlen(name) || !imap_append_open(s, name, &r, err, sizeof err))
		return -1;
	return 0;
}

/* A synchronizing message literal is announced: refuse it before the
 * octets come when the folder does not exist (RFC 3501 §6.3.11: NO
 * [TRYCREATE]), else open its file. */
static bool imap_append_continue(struct imap_session *s, const struct imap_command *pc)
{
	size_t nlen;
	const char *name = imap_arg_astring(imap_args_at(&pc->args, 0), &nlen);
	if (!name || nlen != strlen(name) || pc->args.n < 2) {
		imap_bad(s, "Syntax: APPEND mailbox [(flags)] [date-time] literal");
		return false;
	}
	/* a CATENATE TEXT literal (in a list): no message file of its own;
	 * UTF8 (literal8) (RFC 6855 §4): the message */
	const struct imap_arg *lit = imap_args_at(&pc->args, pc->args.n - 1);
	if (imap_arg_list(lit)) {
		if (!imap_arg_is(imap_args_at(&pc->args, pc->args.n - 2), "UTF8"))
			return true;
		lit = imap_args_at(imap_arg_list(lit), 0);
	}
	/* RFC 9208 §4.4: over the quota, said before the octets come */
	if (lit && lit->type == IMAP_ARG_LITERAL && !imap_quota_room(s, lit->literal_size, 1))
		return false;
	enum mailbox_result r;
	char err[256];
	if (imap_append_open(s, name, &r, err, sizeof err))
		return true;
	if (r == MAILBOX_ERR_NONEXISTENT)
		imap_no(s, "[TRYCREATE] No such mailbox");
	else
		imap_store_error(s, r, err);
	return false;
}

static void imap_append_done(struct imap_session *s, struct mailbox_job *j);

/* NUL in the message: only a literal8 may carry it (RFC 3516 §4.1), and
 * its parts holding NUL are stored base64-encoded. */
static bool imap_append_binary(struct imap_session *s, const struct imap_arg *a, const char *path)
{
	char why[256];
	if (!a->literal8) {
		imap_no(s, "[CANNOT] NUL octets are not allowed in a message (use a literal8 ~{n})");
		return false;
	}
	if (!imap_binary_append_encode(path, why, sizeof why)) {
		imap_mailbox_log(s, "append", why);
		imap_no(s, "[CANNOT] The message's NUL octets are not in a part's content");
		return false;
	}
	return true;
}

/* One message of APPEND (RFC 3502 §6.3.11 append-message): [(flags)]
 * [date-time] and a literal, or CATENATE (parts) (RFC 4469 §5), from
 * argument *i on.  false after answering BAD. */
static bool imap_append_message(struct imap_session *s, const struct imap_command *c, size_t *i,
				struct imap_keyword_names *kw, unsigned *flags, long long *date,
				const struct imap_arg **lit, const struct imap_args **cat)
{
	const char *err = "Syntax: APPEND mailbox [(flags)] [date-time] literal ...";
	*flags = 0;
	*date = 0;
	*lit = NULL;
	*cat = NULL;
	kw->n = 0;
	if (imap_arg_list(imap_args_at(&c->args, *i)) &&
	    !imap_flags_parse(imap_args_at(&c->args, (*i)++), flags, kw, &err)) {
		imap_bad(s, err);
		return false;
	}
	const struct imap_arg *a = imap_args_at(&c->args, *i);
	if (a && a->type == IMAP_ARG_QUOTED) {
		if (!imap_parse_datetime(a->str, date)) {
			imap_bad(s, "Invalid date-time");
			return false;
		}
		a = imap_args_at(&c->args, ++*i);
	}
	if (imap_arg_is(a, "CATENATE") && imap_arg_list(imap_args_at(&c->args, *i + 1))) {
		*cat = imap_arg_list(imap_args_at(&c->args, *i + 1));
		*i += 2;
		return true;
	}
	/* RFC 6855 §4: "UTF8" SP "(" literal8 ")" (the parser took it only
	 * after ENABLE UTF8=ACCEPT) */
	const struct imap_args *utf8 =
	    imap_arg_is(a, "UTF8") ? imap_arg_list(imap_args_at(&c->args, *i + 1)) : NULL;
	if (utf8 && utf8->n == 1) {
		*i += 1;
		a = imap_args_at(utf8, 0);
	}
	if (!a || a->type != IMAP_ARG_LITERAL || !a->sunk) {
		imap_bad(s, err);
		return false;
	}
	(*i)++;
	*lit = a;
	return true;
}

/* Why a message file is missing: the folder cannot be written. */
static void imap_append_refused(struct imap_session *s, const char *name)
{
	char *path = NULL, why[256] = "";
	int fd = -1;
	enum mailbox_result r = mailbox_append_begin(s->maildir, name, &path, &fd, why, sizeof why);
	if (r == MAILBOX_OK) {
		close(fd);
		mailbox_append_abort(path);
		free(path);
	}
	if (r == MAILBOX_ERR_NONEXISTENT)
		imap_no(s, "[TRYCREATE] No such mailbox");
	else if (r != MAILBOX_OK)
		imap_store_error(s, r, why);
	else
		imap_no(s, "[SERVERBUG] The message could not be stored");
}

/* CATENATE (RFC 4469 §5): the message built from its parts in a new file
 * of the folder's tmp/; NULL after answering. */
static char *imap_append_catenate(struct imap_session *s, const char *name,
				  const struct imap_args *parts)
{
	char *path = NULL, why[256] = "";
	int fd = -1;
	if (mailbox_append_begin(s->maildir, name, &path, &fd, why, sizeof why) != MAILBOX_OK) {
		imap_append_refused(s, name); /* RFC 4469 §5: [TRYCREATE] first */
		return NULL;
	}
	const char *bad = NULL;
	enum imap_catenate_result r = imap_catenate_write(s, parts, fd, &bad);
	close(fd);
	if (r == IMAP_CATENATE_OK)
		return path;
	mailbox_append_abort(path);
	free(path);
	if (r == IMAP_CATENATE_BADURL) {
		/* RFC 4469 §6: the URL in the code, as an astring it was */
		struct imap_out out;
		imap_out_init(&out);
		imap_out_printf(&out, "%s NO [BADURL ", s->tag);
		imap_put_mailbox(&out, bad);
		imap_out_printf(&out, "] The URL names no message or part of yours\r\n");
		imap_send(s, &out);
		imap_out_free(&out);
	} else if (r == IMAP_CATENATE_SYNTAX) {
		imap_bad(s, "Syntax: CATENATE (TEXT literal | URL url ...)");
	} else {
		imap_no(s, "[SERVERBUG] The message could not be stored");
	}
	return NULL;
}

/* A message's file is in: NUL allowed, keywords known to the folder.
 * false after answering. */
static bool imap_append_check(struct imap_session *s, const char *name, const struct imap_arg *a,
			      const char *path, struct imap_keyword_names *kw, unsigned *flags)
{
	char why[256] = "";
	if (a && a->literal_nul && !imap_append_binary(s, a, path))
		return false;
	unsigned kwbits = 0;
	enum mailbox_result r =
	    mailbox_folder_keywords_bits(s->maildir, name, kw->v, kw->n, &kwbits, why, sizeof why);
	if (r != MAILBOX_OK) {
		imap_store_error(s, r, why);
		return false;
	}
	*flags |= kwbits;
	return true;
}

/* The file of the next message: the next literal received, or the one
 * CATENATE builds.  NULL after answering. */
static char *imap_append_file(struct imap_session *s, const char *name, const struct imap_arg *lit,
			      const struct imap_args *cat)
{
	struct imap_multiappend *m = s->multi;
	if (cat)
		return imap_append_catenate(s, name, cat);
	if (m->n >= IMAP_MULTIAPPEND_MAX) {
		imap_no(s, "[LIMIT] Too many messages in one APPEND");
		return NULL;
	}
	if (!lit || m->nextrecv >= m->nrecv || lit->sink_failed) {
		imap_append_refused(s, name); /* the folder could not be opened, or a write failed */
		return NULL;
	}
	char *path = m->recv[m->nextrecv];
	m->recv[m->nextrecv++] = NULL;
	return path;
}

static void imap_append_deliver(struct imap_session *s);
static void imap_put_uidset(struct imap_out *out, const uint32_t *v, size_t n);

/* The octets of the messages of the APPEND. */
static uint64_t imap_append_total(const struct imap_multiappend *m)
{
	uint64_t total = 0;
	for (size_t k = 0; k < m->n; k++)
		total += m->sizes[k];
	return total;
}

/* The octets of the messages of an APPEND: what the quota is asked for
 * before any is delivered (RFC 9208 §4.4).  false after answering. */
static bool imap_append_sizes(struct imap_session *s, struct imap_multiappend *m)
{
	m->sizes = xcalloc(m->n ? m->n : 1, sizeof *m->sizes);
	for (size_t k = 0; k < m->n; k++) {
		struct stat st;
		if (stat(m->files[k], &st) < 0) {
			imap_mailbox_log(s, "append", strerror(errno));
			imap_no(s, "[SERVERBUG] The message could not be stored");
			return false;
		}
		m->sizes[k] = (uint64_t)st.st_size;
	}
	return imap_quota_room(s, imap_append_total(m), m->n);
}

/* APPEND mailbox [(flags)] [date-time] literal, several of them (RFC 3502
 * MULTIAPPEND), each may be CATENATE (parts) (RFC 4469): every message is
 * received, built and checked before any is delivered; then one job
 * delivers them all or none (RFC 3502 §6.3.11). */
IMAP_HANDLER(imap_cmd_append)
{
	size_t nlen, i = 1;
	const char *name = imap_arg_astring(imap_args_at(&c->args, 0), &nlen);
	if (!name || nlen != strlen(name) || c->args.n < 2) {
		imap_bad(s, "Syntax: APPEND mailbox [(flags)] [date-time] literal ...");
		return;
	}
	name = imap_utf8_name_in(s, name, 1); /* the store's name of it */
	if (!name) {
		imap_append_discard(s);
		imap_bad(s, "Invalid UTF-8 in the mailbox name");
		return;
	}
	imap_append_finish_current(s);
	struct imap_multiappend *m = imap_multi(s);
	m->recv = m->files; /* the literals received; the messages' files next */
	m->nrecv = m->n;
	m->files = xcalloc(c->args.n, sizeof *m->files);
	m->n = 0;
	m->cap = c->args.n;
	m->flags = xcalloc(c->args.n, sizeof *m->flags);
	m->dates = xcalloc(c->args.n, sizeof *m->dates);
	while (i < c->args.n) {
		struct imap_keyword_names kw;
		const struct imap_arg *lit;
		const struct imap_args *cat;
		size_t k = m->n;
		if (!imap_append_message(s, c, &i, &kw, &m->flags[k], &m->dates[k], &lit, &cat))
			return;
		char *path = imap_append_file(s, name, lit, cat);
		if (!path)
			return;
		m->files[m->n++] = path;
		if (!imap_append_check(s, name, lit, path, &kw, &m->flags[k]))
			return;
	}
	if (!imap_append_sizes(s, m)) {
		imap_multi_free(s);
		return;
	}
	m->delivering = true;
	m->name = xstrdup(name);
	m->uids = xcalloc(m->n, sizeof *m->uids);
	imap_append_deliver(s);
}

static void imap_append_done(struct imap_session *s, struct mailbox_job *j);

/* Deliver the messages of the APPEND: one job for them all, which
 * appends all or none (RFC 3502 §6.3.11). */
static void imap_append_deliver(struct imap_session *s)
{
	struct imap_multiappend *m = s->multi;
	struct mailbox_job *j = NULL;
	for (size_t k = 0; k < m->n; k++) {
		unsigned flags = m->flags[k] & MAILBOX_FLAGS_PERMANENT;
		if (!j)
			j = mailbox_append_job(s->maildir, m->name, m->files[k], flags, m->dates[k]);
		else
			mailbox_append_job_add(j, m->files[k], flags, m->dates[k]);
		free(m->files[k]); /* the file is the job's now */
		m->files[k] = NULL;
	}
	imap_store_start(s, j, imap_append_done);
}

/* "[APPENDUID validity uid-set] APPEND completed" (RFC 4315 §3), or
 * without APPENDUID when a UID is not known. */
static char *imap_append_text(const struct imap_multiappend *m)
{
	bool known = m->nuids == m->n;
	for (size_t i = 0; i < m->nuids; i++)
		known = known && m->uids[i] != 0;
	if (!known)
		return xstrdup("APPEND completed");
	struct imap_out out;
	imap_out_init(&out);
	imap_out_printf(&out, "[APPENDUID %lu ", (unsigned long)m->validity);
	imap_put_uidset(&out, m->uids, m->nuids);
	imap_out_printf(&out, "] APPEND completed");
	size_t len = evbuffer_get_length(out.buf);
	char *text = xmalloc(len + 1);
	if (evbuffer_remove(out.buf, text, len) != (int)len)
		fatal("imap: evbuffer_remove failed");
	text[len] = '\0';
	imap_out_free(&out);
	return text;
}

/* The messages are in their folder, durably, with their UIDs (or none
 * is): APPENDUID for them all, or NO. */
static void imap_append_done(struct imap_session *s, struct mailbox_job *j)
{
	struct imap_multiappend *m = s->multi;
	char why[256] = "";
	/* a UID 0: not known (RFC 4315 §3: then no APPENDUID) */
	enum mailbox_result r = mailbox_append_end(j, &m->validity, m->uids, m->n, why, sizeof why);
	m->nuids = m->n;
	if (r == MAILBOX_OK)
		imap_quota_added(s, imap_append_total(m), m->n);
	if (!imap_store_answer(s) || !imap_store_error(s, r, why)) {
		imap_multi_free(s);
		return;
	}
	char *text = imap_append_text(m);
	imap_multi_free(s);
	if (s->view) /* the new messages of the selected folder show at once */
		imap_sync(s, true);
	if (s->job) {
		imap_job_stop(s);
		imap_updates(s, "OK", text);
	} else {
		imap_ok(s, "%s", text);
	}
	free(text);
}

/* ---- COPY, MOVE (RFC 3501 §6.4.7, RFC 6851, RFC 4315 COPYUID) ---------------- */

/* A uid-set of ascending UIDs, runs joined: "4:7,9". */
static void imap_put_uidset(struct imap_out *out, const uint32_t *v, size_t n)
{
	for (size_t i = 0; i < n;) {
		size_t j = i;
		while (j + 1 < n && v[j + 1] == v[j] + 1)
			j++;
		imap_out_printf(out, "%s%lu", i ? "," : "", (unsigned long)v[i]);
		if (j > i)
			imap_out_printf(out, ":%lu", (unsigned long)v[j]);
		i = j + 1;
	}
}

/* "[COPYUID validity src dst]" into out. */
static void imap_put_copyuid(struct imap_out *out, const struct mailbox_uidmap *map)
{
	imap_out_printf(out, "[COPYUID %lu ", (unsigned long)map->uidvalidity);
	imap_put_uidset(out, map->src, map->n);
	imap_out_add(out, " ", 1);
	imap_put_uidset(out, map->dst, map->n);
	imap_out_add(out, "]", 1);
}

/* The answer to COPY or MOVE: NO, or COPYUID and the completion (for
 * MOVE after the EXPUNGEs).  The map is taken (*given is left empty). */
static void imap_copy_answer(struct imap_session *s, bool move, enum mailbox_result r,
			     const char *err, struct mailbox_uidmap *given)
{
	struct mailbox_uidmap map = *given;
	memset(given, 0, sizeof *given);
	const char *what = move ? "MOVE" : "COPY";
	if (r == MAILBOX_ERR_NONEXISTENT) {
		imap_no(s, "[TRYCREATE] No such mailbox");
		return;
	}
	if (!imap_store_error(s, r, err)) {
		mailbox_uidmap_free(&map);
		return;
	}
	struct imap_out out;
	imap_out_init(&out);
	if (move && map.n) { /* RFC 6851 §4.3: COPYUID before the EXPUNGEs */
		imap_out_printf(&out, "* OK ");
		imap_put_copyuid(&out, &map);
		imap_out_printf(&out, " Moved\r\n");
	} else if (map.n) {
		imap_out_printf(&out, "%s OK ", s->tag);
		imap_put_copyuid(&out, &map);
		imap_out_printf(&out, " COPY completed\r\n");
	}
	imap_send(s, &out);
	imap_out_free(&out);
	size_t copied = map.n;
	mailbox_uidmap_free(&map);
	if (move)
		imap_updates(s, "OK", "MOVE completed");
	else if (!copied)
		imap_ok(s, "%s completed", what);
}

static void imap_copied(struct imap_session *s, struct mailbox_job *j, bool move)
{
	struct mailbox_uidmap map;
	char err[256] = "";
	enum mailbox_result r = mailbox_copy_end(s->view, j, &map, err, sizeof err);
	if (!move && r == MAILBOX_OK)
		imap_quota_recount(s);
	if (imap_store_answer(s))
		imap_copy_answer(s, move, r, err, &map);
	mailbox_uidmap_free(&map);
}

static void imap_copy_done(struct imap_session *s, struct mailbox_job *j)
{
	imap_copied(s, j, false);
}

static void imap_move_done(struct imap_session *s, struct mailbox_job *j)
{
	imap_copied(s, j, true);
}

/* Is there room for a copy of the messages m matches? */
static bool imap_copy_room(struct imap_session *s, struct imap_match *m)
{
	uint64_t bytes = 0, messages = 0;
	for (size_t seq = 1; seq <= mailbox_count(s->view); seq++) {
		const struct mailbox_msg *msg = mailbox_msg(s->view, seq);
		if (msg->expunged || !imap_match_fn(m, seq, msg->uid))
			continue;
		bytes += msg->size;
		messages++;
	}
	return messages == 0 || imap_quota_room(s, bytes, messages);
}

IMAP_HANDLER(imap_cmd_copy)
{
	bool uid = imap_is_uid(c);
	bool move = strstr(c->name, "MOVE") != NULL;
	if (c->args.n != 2) {
		imap_bad(s, move ? "Syntax: MOVE set mailbox" : "Syntax: COPY set mailbox");
		return;
	}
	const char *dest = imap_mailbox_arg(s, c, 1);
	struct imap_seqset set = {0};
	if (!dest || !imap_set_parse(s, imap_args_at(&c->args, 0), uid, &set))
		return;
	struct imap_match m = {&set, uid};
	/* RFC 9208 §4.4: a COPY over the quota fails; a MOVE stays in the
	 * one quota root and changes no usage */
	if (!move && !imap_copy_room(s, &m)) {
		imap_seqset_clear(&set);
		return;
	}
	struct mailbox_job *j;
	char err[256];
	enum mailbox_result r =
	    mailbox_copy_begin(s->view, imap_match_fn, &m, dest, move, &j, err, sizeof err);
	imap_seqset_clear(&set);
	if (r != MAILBOX_OK) {
		struct mailbox_uidmap none = {0};
		imap_copy_answer(s, move, r, err, &none);
		return;
	}
	imap_store_start(s, j, move ? imap_move_done : imap_copy_done);
}

/* ---- life -------------------------------------------------------------- */

void imap_session_cleanup(void)
{
	imap_msg_cache_free();
	imap_sortkeys_cleanup();
}

static void imap_free(struct imap_session *s)
{
	offload_cancel(s->store); /* the worker finishes; the job is freed, unanswered */
	imap_job_stop(s);
	imap_command_free(s->deferred);
	imap_notify_end(s);
	imap_watch_stop(s);
	imap_view_close(s);
	imap_append_discard(s);
	imap_multi_free(s);
	free(s->maildir);
	free(s->user);
	imap_utf8_free(s);
	login_free(s->login);
	if (s->resume)
		event_free(s->resume);
	if (s->login_timer)
		event_free(s->login_timer);
	if (s->parser)
		imap_parser_free(s->parser);
	conn_free(s->io);
	session_base_release(&s->b);
	free(s);
}

/* Daemon shutdown: RFC 3501 §7.1.5 BYE, then close once it has left.  A
 * response under way is cut at a line end only: a literal in flight
 * cannot be ended early, so the BYE waits for nothing and the client sees
 * the connection close. */
static void imap_shutdown(struct session_link *c)
{
	struct imap_session *s = c->session;
	if (!s->io || s->state == IMAP_HANDSHAKE) {
		imap_free(s);
		return;
	}
	if (s->state == IMAP_CLOSING)
		return;
	if (!s->job)
		conn_printf(s->io, "* BYE [UNAVAILABLE] Server shutting down");
	imap_job_stop(s);
	imap_close_after_flush(s);
}

/* Shutdown took too long: drop the session now. */
static void imap_abort(struct session_link *c)
{
	imap_free(c->session);
}

void imap_session_start(const struct session_start *st)
{
	const struct conf_server *srv = st->srv;
	struct imap_session *s = xcalloc(1, sizeof *s);
	s->append_fd = -1;
	/* "i": never the id of an SMTP or POP3 session of the same moment */
	session_base_init(&s->b, st, "i", s, imap_shutdown, imap_abort);
	s->parser = imap_parser_new();
	/* RFC 3501 §5.4: the autologout timer is at least 30 minutes; the
	 * short limit before login is s->login_timer */
	unsigned timeout = srv->limits.timeout;
	if (timeout < IMAP_AUTOLOGOUT_MIN)
		timeout = IMAP_AUTOLOGOUT_MIN;
	s->state = st->implicit_tls ? IMAP_HANDSHAKE : IMAP_NOTAUTH;
	s->io = session_conn_new(&s->b, st, &imap_conn_handler, s, timeout);
	if (!s->io) {
		imap_free(s);
		return;
	}
	s->login_timer = evtimer_new(s->b.rt->base, imap_on_login_timer, s);
	imap_login_timer_arm(s);
	s->resume = evtimer_new(s->b.rt->base, imap_on_resume, s); /* imap_resume() */
	if (!st->implicit_tls)
		imap_greet(s);
}

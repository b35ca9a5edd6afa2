/* session: the base shared by the SMTP, POP3 and IMAP sessions. */
#include "proto/session.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "auth/login.h"
#include "conf/conf.h"
#include "lib/log.h"
#include "lib/metrics.h"
#include "lib/util.h"
#include "net/addr.h"
#include "net/conn.h"
#include "runtime/runtime.h"

/* Ids stay unique within the process and differ between runs started in
 * different seconds (the start time seeds the counter's high bits). */
static unsigned long long session_next_id(void)
{
	static unsigned long long counter;
	if (counter == 0)
		counter = ((unsigned long long)time(NULL) & 0xffffff) << 20;
	return ++counter;
}

void session_base_init(struct session_base *b, const struct session_start *st,
		       const char *prefix, void *session,
		       void (*shutdown)(struct session_link *l),
		       void (*abort)(struct session_link *l))
{
	b->rt = runtime_ref(st->rt);
	b->srv = st->srv;
	b->link = st->link;
	st->link->session = session;
	st->link->shutdown = shutdown;
	st->link->abort = abort;
	/* fits: a prefix of one letter and 16 hex digits at most */
	xsnprintf(b->sid, sizeof b->sid, "%s%llx", prefix, session_next_id());
	addr_text(st->peer, b->client, sizeof b->client);
	memcpy(&b->peer, st->peer, st->peerlen < sizeof b->peer ? st->peerlen : sizeof b->peer);
	socklen_t locallen = sizeof b->local;
	if (getsockname(st->fd, (struct sockaddr *)&b->local, &locallen) < 0)
		memset(&b->local, 0, sizeof b->local);
	b->client_name = st->client_name ? xstrdup(st->client_name) : NULL;
	b->refused = st->refused;
	b->listed = st->listed;
	b->refusal = st->refusal ? xstrdup(st->refusal) : NULL;
	b->ts = st->ts;
	b->implicit_tls = st->implicit_tls;

	char esc[LOG_VALUE_MAX] = "-";
	if (b->client_name)
		log_escape(esc, sizeof esc, b->client_name, strlen(b->client_name));
	log_info("event=connect session=%s server=%s client=%s name=%s%s", b->sid, b->srv->name,
		 b->client, esc, b->implicit_tls ? " tls=implicit" : "");
	metrics_count(METRIC_SESSIONS,
		      METRIC_LABELS(b->srv->name, conf_protocol_name(b->srv->protocol)));
}

struct conn *session_conn_new(struct session_base *b, const struct session_start *st,
			      const struct conn_handler *h, void *owner, unsigned timeout)
{
	/* for the transport's log lines (it keeps a copy); fits: the id, a
	 * server name of 64 bytes at most (conf) and an address text
	 * (ADDR_TEXT_SIZE) take 151 bytes at most */
	char log_id[160];
	xsnprintf(log_id, sizeof log_id, "session=%s server=%s client=%s", b->sid, b->srv->name,
		  b->client);
	struct conn_params p = {
		.base = b->rt->base,
		.fd = st->fd,
		.ts = st->ts,
		.policy = &b->srv->tls,
		.implicit_tls = st->implicit_tls,
		.timeout = timeout,
		.log_id = log_id,
	};
	return conn_new(&p, h, owner);
}

struct login *session_login_new(struct session_base *b,
				void (*done)(void *owner, const struct login_verdict *v),
				void *owner)
{
	struct login_env env = {
		.sid = b->sid,
		.srv = b->srv,
		.client = b->client,
		.users = b->rt->users,
		.directory = b->rt->directory,
		.throttle = b->rt->throttle,
		.base = b->rt->base,
	};
	return login_new(&env, done, owner);
}

enum session_verdict session_gate(const struct session_base *b, unsigned flags, bool state_ok,
				  bool tls_active, bool authenticated)
{
	if (b->refused && !(flags & SESSION_F_REFUSED_OK))
		return SESSION_REFUSED;
	if ((flags & SESSION_F_NEEDS_TLS) && b->srv->tls.require && !tls_active)
		return SESSION_NEEDS_TLS;
	if (!state_ok)
		return SESSION_BAD_STATE;
	if ((flags & SESSION_F_PASSWORD) && !login_password_allowed(b->srv, tls_active))
		return login_password_needs_tls(b->srv, tls_active) ? SESSION_PASSWORD_NEEDS_TLS
								     : SESSION_PASSWORD_DISABLED;
	if ((flags & SESSION_F_NEEDS_AUTH) && !b->srv->auth.anonymous && !authenticated)
		return SESSION_NEEDS_AUTH;
	if ((flags & SESSION_F_NEEDS_AUTH) && b->listed && !authenticated)
		return SESSION_LISTED;
	return SESSION_OPEN;
}

void session_base_release(struct session_base *b)
{
	log_info("event=disconnect session=%s server=%s client=%s", b->sid, b->srv->name,
		 b->client);
	free(b->client_name);
	b->client_name = NULL;
	free(b->refusal);
	b->refusal = NULL;
	b->link->closed(b->link);
	runtime_unref(b->rt);
}

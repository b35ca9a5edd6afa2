/* milter: one filter's connection for one SMTP session, on the event loop
 * (the Sendmail milter protocol, version 6, as Postfix's milter8.c speaks
 * it).  Each ask sends the steps of one phase, each answered or not as
 * the filter asked in the option negotiation; the body in
 * MILTER_CHUNK_MAX chunks read from the spool file; at the end of the
 * message the modifications are collected up to the final verdict.
 * Every reply passes milter_reply_parse(); every wait has its deadline. */
#include "filter/milter.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "filter/milter_msg.h"
#include "filter/milter_proto.h"
#include "lib/log.h"
#include "lib/util.h"

enum {
	MILTER_OUT_HIGH = 256 * 1024,   /* unanswered steps queued, at most, before waiting */
	MILTER_MODS_MAX = 1000,         /* modifications of one message */
	MILTER_MODS_BYTES_MAX = 1 << 20, /* their names and values together */
	MILTER_CLOSE_FLUSH_MAX = 64,    /* queued bytes sent before SMFIC_QUIT at the end */
};

enum milter_step {
	STEP_NEGOTIATE, STEP_CONNECT, STEP_HELO, STEP_MAIL, STEP_RCPT, STEP_DATA,
	STEP_HEADER, STEP_EOH, STEP_BODY, STEP_EOB,
	STEP_DONE,              /* the phase's steps are answered: continue */
};

struct milter_conn {
	const struct conf_milter *m;
	struct milter_info info;        /* of the current ask */
	milter_done_fn done;
	void *arg;
	struct bufferevent *bev;
	struct event *timer;
	enum milter_phase phase;
	enum milter_step step;
	bool connected;
	bool asking;            /* an ask runs: done() is due once */
	bool waiting;           /* a reply is due */
	bool blocked;           /* waiting for the output to drain */
	bool finished;          /* done() is due on the next turn of the loop */
	bool failed;            /* for the rest of the session: on-failure answers */
	bool in_txn;            /* the filter saw MAIL, not yet the end of the message */
	bool session_accepted;  /* SMFIR_ACCEPT at connect or HELO: nothing more is sent */
	bool txn_accepted;      /* ... at MAIL or RCPT: nothing more of this message */
	bool session_discard;   /* SMFIR_DISCARD at connect or HELO: every message */
	bool txn_discard;       /* ... at MAIL or RCPT: this message */
	uint32_t actions, protocol;
	size_t hdr;
	struct milter_headers hdrs;
	off_t body_at, body_end; /* in info.fd */
	size_t mods_bytes;
	size_t body_cap;        /* allocated for res.body */
	struct milter_result res;
};

/* ---- the end of a run --------------------------------------------------- */

static void milter_close(struct milter_conn *r)
{
	if (!r->bev)
		return;
	struct evbuffer *out = bufferevent_get_output(r->bev);
	size_t queued = evbuffer_get_length(out);
	if (r->connected && queued <= MILTER_CLOSE_FLUSH_MAX) {
		/* what is still queued (an SMFIC_ABORT), then SMFIC_QUIT, best
		 * effort, when that is little: the filter also takes the close
		 * as one */
		static const uint8_t quit[5] = {0, 0, 0, 1, MILTER_CMD_QUIT};
		uint8_t last[MILTER_CLOSE_FLUSH_MAX + sizeof quit];
		evutil_socket_t fd = bufferevent_getfd(r->bev);
		/* the bufferevent keeps its output's front frozen; it is freed
		 * below, so nobody else reads it any more */
		if (fd >= 0 && evbuffer_unfreeze(out, 1) == 0 &&
		    evbuffer_copyout(out, last, queued) == (ev_ssize_t)queued) {
			memcpy(last + queued, quit, sizeof quit);
			if (send(fd, last, queued + sizeof quit, MSG_DONTWAIT | MSG_NOSIGNAL) < 0)
				log_debug("event=milter-quit milter=%s error=\"%s\"", r->m->name,
					  strerror(errno));
		}
	}
	bufferevent_free(r->bev);
	r->bev = NULL;
}

static void milter_finish(struct milter_conn *r)
{
	r->finished = true;
	static const struct timeval now = {0, 0};
	evtimer_add(r->timer, &now); /* done() runs on the next turn, never inside start */
}

static void milter_free_mods(struct milter_result *res)
{
	for (size_t i = 0; i < res->nmods; i++) {
		free(res->mods[i].name);
		free(res->mods[i].value);
	}
	free(res->mods);
	res->mods = NULL;
	res->nmods = 0;
	free(res->body);
	res->body = NULL;
	res->body_len = 0;
	res->replace_body = false;
	res->quarantine = false;
}

static enum milter_verdict milter_failure_verdict(enum conf_milter_failure f)
{
	switch (f) {
	case MILTER_ON_FAILURE_ACCEPT: return MILTER_VERDICT_ACCEPT;
	case MILTER_ON_FAILURE_REJECT: return MILTER_VERDICT_REJECT;
	case MILTER_ON_FAILURE_TEMPFAIL: break;
	}
	return MILTER_VERDICT_TEMPFAIL;
}

static const char *milter_failure_name(enum conf_milter_failure f)
{
	return f == MILTER_ON_FAILURE_ACCEPT ? "accept"
	       : f == MILTER_ON_FAILURE_REJECT ? "reject" : "tempfail";
}

/* The filter is down, too slow or spoke garbage: nothing it said counts,
 * now or later in the session. */
static void milter_fail(struct milter_conn *r, const char *why)
{
	if (r->failed)
		return;
	r->failed = true;
	log_warn("event=milter-error milter=%s session=%s id=%s step=%d reason=\"%s\" "
		 "on_failure=%s", r->m->name, r->info.session ? r->info.session : "-",
		 r->info.queue_id ? r->info.queue_id : "-", (int)r->step, why,
		 milter_failure_name(r->m->on_failure));
	milter_close(r);
	if (!r->asking || r->finished)
		return; /* between steps, or after the verdict: the next ask learns */
	milter_free_mods(&r->res);
	free(r->res.reply);
	r->res.reply = NULL;
	r->res.failed = true;
	r->res.why = why;
	r->res.verdict = milter_failure_verdict(r->m->on_failure);
	milter_finish(r);
}

/* SMFIR_ACCEPT and SMFIR_DISCARD before the end of a message hold for
 * the session (connect, HELO) or the transaction (MAIL, RCPT). */
static void milter_note_early(struct milter_conn *r, enum milter_verdict v)
{
	bool session = r->phase <= MILTER_PHASE_HELO;
	if (v == MILTER_VERDICT_ACCEPT && r->step != STEP_DONE && r->phase != MILTER_PHASE_DATA) {
		if (session)
			r->session_accepted = true;
		else
			r->txn_accepted = true;
	} else if (v == MILTER_VERDICT_DISCARD && r->phase != MILTER_PHASE_DATA) {
		if (session)
			r->session_discard = true;
		else
			r->txn_discard = true;
	}
}

static void milter_verdict(struct milter_conn *r, enum milter_verdict v)
{
	milter_note_early(r, v);
	if (r->phase == MILTER_PHASE_DATA && r->step == STEP_EOB)
		r->in_txn = false; /* the filter is ready for the next MAIL */
	r->res.verdict = v;
	if (v != MILTER_VERDICT_ACCEPT)
		milter_free_mods(&r->res); /* nothing is delivered: changes are moot */
	milter_finish(r);
}

static void milter_free(struct milter_conn *r)
{
	milter_close(r);
	event_free(r->timer);
	milter_headers_free(&r->hdrs);
	milter_result_free(&r->res);
	free(r);
}

void milter_result_free(struct milter_result *res)
{
	milter_free_mods(res);
	free(res->reply);
	memset(res, 0, sizeof *res);
}

void milter_conn_free(struct milter_conn *r)
{
	if (r)
		milter_free(r);
}

/* The deadline of the current wait, or the due done(). */
static void milter_on_timer(evutil_socket_t fd, short what, void *arg)
{
	struct milter_conn *r = arg;
	if (!r->finished) {
		milter_fail(r, r->connected ? "timeout" : "connect timeout");
		return;
	}
	struct milter_result res = r->res;
	milter_done_fn done = r->done;
	void *darg = r->arg;
	memset(&r->res, 0, sizeof r->res);
	r->asking = r->finished = r->waiting = r->blocked = false;
	r->done = NULL;
	r->arg = NULL;
	const char *sid = r->info.session; /* the session outlives its filters */
	memset(&r->info, 0, sizeof r->info); /* the rest was borrowed for the step */
	r->info.session = sid;
	struct milter_result *out = xmalloc(sizeof *out);
	*out = res;
	done(darg, out);
}

static void milter_arm(struct milter_conn *r)
{
	struct timeval tv = {r->connected ? r->m->timeout : r->m->connect_timeout, 0};
	evtimer_add(r->timer, &tv);
}

/* ---- sending ------------------------------------------------------------ */

static bool milter_send(struct milter_conn *r, struct milter_packet *p)
{
	if (!milter_packet_end(p)) {
		milter_fail(r, "command too long");
		return false;
	}
	int w = bufferevent_write(r->bev, p->buf, p->len);
	milter_packet_free(p);
	if (w < 0) {
		milter_fail(r, "cannot queue a command");
		return false;
	}
	return true;
}

static void milter_macro(struct milter_packet *p, const char *name, const char *value)
{
	if (!value)
		return;
	milter_packet_add_str(p, name);
	milter_packet_add_str(p, value);
}

/* SMFIC_MACRO for the command code: what filters read with smfi_getsymval. */
static bool milter_send_macros(struct milter_conn *r, char code)
{
	const struct milter_info *in = &r->info;
	struct milter_packet p;
	milter_packet_begin(&p, MILTER_CMD_MACRO);
	milter_packet_add(&p, &code, 1);
	switch (code) {
	case MILTER_CMD_CONNECT:
		milter_macro(&p, "j", in->hostname);
		milter_macro(&p, "{daemon_name}", in->daemon_name);
		milter_macro(&p, "{client_addr}", in->client_addr);
		milter_macro(&p, "{client_name}", in->client_name);
		break;
	case MILTER_CMD_HELO:
		milter_macro(&p, "{tls_version}", in->tls_version);
		milter_macro(&p, "{cipher}", in->cipher);
		break;
	case MILTER_CMD_MAIL:
		milter_macro(&p, "i", in->queue_id);
		milter_macro(&p, "{auth_authen}", in->auth_user);
		milter_macro(&p, "{mail_addr}", in->sender);
		break;
	case MILTER_CMD_RCPT:
		milter_macro(&p, "{rcpt_addr}", in->rcpt);
		break;
	default:
		milter_macro(&p, "i", in->queue_id);
		break;
	}
	return milter_send(r, &p);
}

static bool milter_send_connect(struct milter_conn *r)
{
	const struct milter_info *in = &r->info;
	struct milter_packet p;
	milter_packet_begin(&p, MILTER_CMD_CONNECT);
	if (in->client_name && strcmp(in->client_name, "unknown") != 0) {
		milter_packet_add_str(&p, in->client_name);
	} else { /* Postfix's "[address]" for a client without a name */
		char *name = xasprintf("[%s]", in->client_addr);
		milter_packet_add_str(&p, name);
		free(name);
	}
	char family = in->client_family == AF_INET6 ? '6' : '4';
	milter_packet_add(&p, &family, 1);
	milter_packet_add_u16(&p, (uint16_t)in->client_port);
	milter_packet_add_str(&p, in->client_addr);
	return milter_send(r, &p);
}

static bool milter_send_path(struct milter_conn *r, char cmd, const char *address)
{
	struct milter_packet p;
	milter_packet_begin(&p, cmd);
	char *path = xasprintf("<%s>", address);
	milter_packet_add_str(&p, path);
	free(path);
	return milter_send(r, &p);
}

static bool milter_send_strings(struct milter_conn *r, char cmd, const char *s1, const char *s2)
{
	struct milter_packet p;
	milter_packet_begin(&p, cmd);
	if (s1)
		milter_packet_add_str(&p, s1);
	if (s2)
		milter_packet_add_str(&p, s2);
	return milter_send(r, &p);
}

static bool milter_send_negotiate(struct milter_conn *r)
{
	struct milter_packet p;
	milter_packet_begin(&p, MILTER_CMD_OPTNEG);
	milter_packet_add_u32(&p, MILTER_VERSION);
	milter_packet_add_u32(&p, MILTER_ACT_OFFERED);
	milter_packet_add_u32(&p, MILTER_P_OFFERED);
	return milter_send(r, &p);
}

static bool milter_send_body_chunk(struct milter_conn *r)
{
	off_t left = r->body_end - r->body_at;
	size_t want = left < MILTER_CHUNK_MAX ? (size_t)left : MILTER_CHUNK_MAX;
	struct milter_packet p;
	milter_packet_begin(&p, MILTER_CMD_BODY);
	uint8_t *chunk = xmalloc(want);
	ssize_t n;
	do
		n = pread(r->info.fd, chunk, want, r->body_at);
	while (n < 0 && errno == EINTR);
	if (n <= 0) {
		free(chunk);
		milter_packet_free(&p);
		milter_fail(r, "cannot read the spooled message");
		return false;
	}
	milter_packet_add(&p, chunk, (size_t)n);
	free(chunk);
	r->body_at += n;
	return milter_send(r, &p);
}

/* ---- the steps ---------------------------------------------------------- */

struct milter_step_rule {
	unsigned stage;         /* enum conf_milter_stage: configured off */
	uint32_t skip;          /* SMFIP_NO*: the filter does not want it */
	uint32_t no_reply;      /* SMFIP_NR_*: the filter will not answer it */
	char macros;            /* the command code of its macros, or 0 */
};

static const struct milter_step_rule milter_rules[] = {
	[STEP_NEGOTIATE] = {0, 0, 0, 0},
	[STEP_CONNECT] = {MILTER_STAGE_CONNECT, MILTER_P_NOCONNECT, MILTER_P_NR_CONN, MILTER_CMD_CONNECT},
	[STEP_HELO] = {MILTER_STAGE_HELO, MILTER_P_NOHELO, MILTER_P_NR_HELO, MILTER_CMD_HELO},
	[STEP_MAIL] = {MILTER_STAGE_MAIL, MILTER_P_NOMAIL, MILTER_P_NR_MAIL, MILTER_CMD_MAIL},
	[STEP_RCPT] = {MILTER_STAGE_RCPT, MILTER_P_NORCPT, MILTER_P_NR_RCPT, MILTER_CMD_RCPT},
	[STEP_DATA] = {MILTER_STAGE_DATA, MILTER_P_NODATA, MILTER_P_NR_DATA, MILTER_CMD_DATA},
	[STEP_HEADER] = {MILTER_STAGE_DATA, MILTER_P_NOHDRS, MILTER_P_NR_HDR, 0},
	[STEP_EOH] = {MILTER_STAGE_DATA, MILTER_P_NOEOH, MILTER_P_NR_EOH, MILTER_CMD_EOH},
	[STEP_BODY] = {MILTER_STAGE_DATA, MILTER_P_NOBODY, MILTER_P_NR_BODY, 0},
	[STEP_EOB] = {0, 0, 0, MILTER_CMD_BODYEOB},
	[STEP_DONE] = {0, 0, 0, 0},
};

/* The step after the current one (a repeated step: its next item). */
static enum milter_step milter_next_step(struct milter_conn *r)
{
	switch (r->step) {
	case STEP_NEGOTIATE: return STEP_CONNECT;
	case STEP_CONNECT: case STEP_HELO: case STEP_MAIL: case STEP_RCPT: return STEP_DONE;
	case STEP_DATA:
		r->hdr = 0;
		return r->hdrs.n ? STEP_HEADER : STEP_EOH;
	case STEP_HEADER: return ++r->hdr < r->hdrs.n ? STEP_HEADER : STEP_EOH;
	case STEP_EOH: return r->body_at < r->body_end ? STEP_BODY : STEP_EOB;
	case STEP_BODY: return r->body_at < r->body_end ? STEP_BODY : STEP_EOB;
	case STEP_EOB: case STEP_DONE: break;
	}
	return STEP_DONE;
}

static bool milter_step_skipped(const struct milter_conn *r, enum milter_step st)
{
	const struct milter_step_rule *rule = &milter_rules[st];
	return (rule->stage && !(r->m->stages & rule->stage)) || (r->protocol & rule->skip);
}

static bool milter_send_step(struct milter_conn *r)
{
	switch (r->step) {
	case STEP_NEGOTIATE: return milter_send_negotiate(r);
	case STEP_CONNECT: return milter_send_connect(r);
	case STEP_HELO: return milter_send_strings(r, MILTER_CMD_HELO, r->info.helo, NULL);
	case STEP_MAIL: return milter_send_path(r, MILTER_CMD_MAIL, r->info.sender);
	case STEP_RCPT: return milter_send_path(r, MILTER_CMD_RCPT, r->info.rcpt);
	case STEP_DATA: return milter_send_strings(r, MILTER_CMD_DATA, NULL, NULL);
	case STEP_HEADER:
		return milter_send_strings(r, MILTER_CMD_HEADER, r->hdrs.v[r->hdr].name,
					   r->hdrs.v[r->hdr].value);
	case STEP_EOH: return milter_send_strings(r, MILTER_CMD_EOH, NULL, NULL);
	case STEP_BODY: return milter_send_body_chunk(r);
	case STEP_EOB: return milter_send_strings(r, MILTER_CMD_BODYEOB, NULL, NULL);
	case STEP_DONE: break;
	}
	return false;
}

/* Send steps until one wants a reply, or the output is full. */
static void milter_advance(struct milter_conn *r)
{
	while (!r->finished) {
		if (r->step == STEP_DONE) {
			milter_verdict(r, MILTER_VERDICT_ACCEPT); /* every step continued */
			return;
		}
		const struct milter_step_rule *rule = &milter_rules[r->step];
		bool skipped = milter_step_skipped(r, r->step);
		if (rule->macros && !milter_send_macros(r, rule->macros))
			return;
		if (!skipped && !milter_send_step(r))
			return;
		if (!skipped && !(r->protocol & rule->no_reply)) {
			r->waiting = true;
			milter_arm(r);
			return;
		}
		if (r->step == STEP_BODY && skipped)
			r->body_at = r->body_end; /* the body is not wanted */
		r->step = milter_next_step(r);
		if (evbuffer_get_length(bufferevent_get_output(r->bev)) > MILTER_OUT_HIGH) {
			r->blocked = true; /* milter_on_write goes on */
			milter_arm(r);
			return;
		}
	}
}

/* ---- replies ------------------------------------------------------------ */

static char *milter_strip_path(const char *s)
{
	size_t n = strlen(s);
	if (n >= 2 && s[0] == '<' && s[n - 1] == '>')
		return xstrndup(s + 1, n - 2);
	return xstrdup(s);
}

static bool milter_mod_allowed(const struct milter_conn *r, char cmd)
{
	switch (cmd) {
	case MILTER_R_ADDHEADER: case MILTER_R_INSHEADER: return r->actions & MILTER_ACT_ADDHDRS;
	case MILTER_R_CHGHEADER: return r->actions & MILTER_ACT_CHGHDRS;
	case MILTER_R_CHGFROM: return r->actions & MILTER_ACT_CHGFROM;
	case MILTER_R_ADDRCPT: return r->actions & MILTER_ACT_ADDRCPT;
	case MILTER_R_ADDRCPT_PAR: return r->actions & MILTER_ACT_ADDRCPT_PAR;
	case MILTER_R_DELRCPT: return r->actions & MILTER_ACT_DELRCPT;
	case MILTER_R_REPLBODY: return r->actions & MILTER_ACT_CHGBODY;
	case MILTER_R_QUARANTINE: return r->actions & MILTER_ACT_QUARANTINE;
	}
	return false;
}

static void milter_add_mod(struct milter_conn *r, const struct milter_reply *rep)
{
	size_t bytes = strlen(rep->s1) + (rep->s2 ? strlen(rep->s2) : 0);
	if (r->res.nmods >= MILTER_MODS_MAX || r->mods_bytes + bytes > MILTER_MODS_BYTES_MAX) {
		milter_fail(r, "too many modifications");
		return;
	}
	r->mods_bytes += bytes;
	struct milter_mod *m = xappend(&r->res.mods, &r->res.nmods, sizeof *m);
	m->index = rep->index;
	switch (rep->cmd) {
	case MILTER_R_ADDHEADER: m->kind = MILTER_MOD_ADD_HEADER; break;
	case MILTER_R_INSHEADER: m->kind = MILTER_MOD_INSERT_HEADER; break;
	case MILTER_R_CHGHEADER: m->kind = MILTER_MOD_CHANGE_HEADER; break;
	case MILTER_R_CHGFROM: m->kind = MILTER_MOD_CHANGE_FROM; break;
	case MILTER_R_DELRCPT: m->kind = MILTER_MOD_DELETE_RCPT; break;
	default: m->kind = MILTER_MOD_ADD_RCPT; break;
	}
	bool is_header = m->kind <= MILTER_MOD_CHANGE_HEADER;
	m->name = is_header ? xstrdup(rep->s1) : milter_strip_path(rep->s1);
	m->value = is_header && rep->s2 ? xstrdup(rep->s2) : NULL;
}

static void milter_add_body(struct milter_conn *r, const struct milter_reply *rep)
{
	if (rep->len > r->info.body_max - r->res.body_len) {
		milter_fail(r, "replaced body too long");
		return;
	}
	size_t need = r->res.body_len + rep->len + 1;
	if (need > r->body_cap) { /* doubling: a body comes in many small chunks */
		size_t cap = r->body_cap ? r->body_cap : 64 * 1024;
		while (cap < need)
			cap *= 2;
		r->res.body = xrealloc(r->res.body, cap);
		r->body_cap = cap;
	}
	if (rep->len)
		memcpy(r->res.body + r->res.body_len, rep->data, rep->len);
	r->res.body_len += rep->len;
	r->res.replace_body = true;
}

/* A verdict that ends the run, at any step. */
static bool milter_final_reply(struct milter_conn *r, const struct milter_reply *rep)
{
	switch (rep->cmd) {
	case MILTER_R_ACCEPT:
		milter_verdict(r, MILTER_VERDICT_ACCEPT);
		return true;
	case MILTER_R_DISCARD:
		milter_verdict(r, MILTER_VERDICT_DISCARD);
		return true;
	case MILTER_R_REJECT:
		milter_verdict(r, MILTER_VERDICT_REJECT);
		return true;
	case MILTER_R_TEMPFAIL:
		milter_verdict(r, MILTER_VERDICT_TEMPFAIL);
		return true;
	case MILTER_R_REPLYCODE:
		r->res.reply = xstrdup(rep->s1);
		milter_verdict(r, rep->s1[0] == '4' ? MILTER_VERDICT_TEMPFAIL : MILTER_VERDICT_REJECT);
		return true;
	}
	return false;
}

/* At the end of the message: modifications, then the verdict. */
static void milter_eob_reply(struct milter_conn *r, const struct milter_reply *rep)
{
	if (rep->cmd == MILTER_R_CONTINUE) {
		milter_verdict(r, MILTER_VERDICT_ACCEPT);
		return;
	}
	if (milter_final_reply(r, rep))
		return;
	if (!milter_mod_allowed(r, rep->cmd)) {
		milter_fail(r, "unexpected reply or modification not negotiated");
		return;
	}
	if (rep->cmd == MILTER_R_QUARANTINE)
		r->res.quarantine = true;
	else if (rep->cmd == MILTER_R_REPLBODY)
		milter_add_body(r, rep);
	else
		milter_add_mod(r, rep);
}

static void milter_negotiated(struct milter_conn *r, const struct milter_reply *rep)
{
	if (rep->cmd != MILTER_R_OPTNEG || rep->version < 2 || rep->version > MILTER_VERSION) {
		milter_fail(r, "bad option negotiation");
		return;
	}
	if (rep->protocol & ~(uint32_t)MILTER_P_OFFERED) {
		milter_fail(r, "filter asks for protocol steps not offered");
		return;
	}
	r->actions = rep->actions & MILTER_ACT_OFFERED;
	r->protocol = rep->protocol;
	r->step = milter_next_step(r);
	milter_advance(r);
}

static void milter_step_reply(struct milter_conn *r, const struct milter_reply *rep)
{
	if (rep->cmd == MILTER_R_CONTINUE) {
		r->step = milter_next_step(r);
		milter_advance(r);
	} else if (rep->cmd == MILTER_R_SKIP && r->step == STEP_BODY &&
		   (r->protocol & MILTER_P_SKIP)) {
		r->body_at = r->body_end;
		r->step = STEP_EOB;
		milter_advance(r);
	} else if (!milter_final_reply(r, rep)) {
		milter_fail(r, "unexpected reply");
	}
}

static void milter_reply(struct milter_conn *r, const struct milter_reply *rep)
{
	if (!r->waiting || r->finished) {
		milter_fail(r, "reply not asked for");
		return;
	}
	if (rep->cmd == MILTER_R_PROGRESS) {
		milter_arm(r); /* still working: a new deadline */
		return;
	}
	if (r->step != STEP_EOB)
		r->waiting = false;
	if (r->step == STEP_NEGOTIATE)
		milter_negotiated(r, rep);
	else if (r->step == STEP_EOB)
		milter_eob_reply(r, rep);
	else
		milter_step_reply(r, rep);
}

static void milter_on_read(struct bufferevent *bev, void *arg)
{
	struct milter_conn *r = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	while (r->bev) {
		size_t avail = evbuffer_get_length(in);
		if (avail < 4)
			return;
		uint8_t head[4];
		if (evbuffer_copyout(in, head, 4) != 4) {
			milter_fail(r, "cannot read a reply");
			return;
		}
		uint32_t plen = (uint32_t)head[0] << 24 | (uint32_t)head[1] << 16 |
				(uint32_t)head[2] << 8 | head[3];
		size_t want = plen <= MILTER_PACKET_MAX ? 4 + (size_t)plen : 4;
		if (avail < want)
			return;
		const uint8_t *buf = evbuffer_pullup(in, (ev_ssize_t)want);
		struct milter_reply rep;
		size_t used = 0;
		const char *why;
		enum milter_parse st = milter_reply_parse(buf, want, &used, &rep, &why);
		if (st != MILTER_PARSE_OK) {
			milter_fail(r, st == MILTER_PARSE_BAD ? why : "incomplete reply");
			return;
		}
		milter_reply(r, &rep);
		if (r->bev && evbuffer_drain(in, used) < 0)
			milter_fail(r, "cannot read a reply");
	}
}

static void milter_on_write(struct bufferevent *bev, void *arg)
{
	struct milter_conn *r = arg;
	if (!r->blocked || r->finished)
		return;
	r->blocked = false;
	milter_advance(r); /* from the step after the queued ones */
}

static void milter_on_event(struct bufferevent *bev, short what, void *arg)
{
	struct milter_conn *r = arg;
	if (what & BEV_EVENT_CONNECTED) {
		r->connected = true;
		milter_advance(r);
		return;
	}
	if (what & BEV_EVENT_EOF) {
		milter_fail(r, "the filter closed the connection");
		return;
	}
	int err = EVUTIL_SOCKET_ERROR();
	milter_fail(r, r->connected ? "connection error" : err == ENOENT || err == ECONNREFUSED
			   ? "cannot connect: filter not running" : "cannot connect");
}

/* ---- start -------------------------------------------------------------- */

static int milter_connect(struct milter_conn *r)
{
	if (r->m->unix_path) {
		struct sockaddr_un sun = {.sun_family = AF_UNIX};
		size_t n = strlen(r->m->unix_path);
		if (n >= sizeof sun.sun_path)
			return -1; /* conf refuses it */
		memcpy(sun.sun_path, r->m->unix_path, n + 1);
		return bufferevent_socket_connect(r->bev, (struct sockaddr *)&sun, sizeof sun);
	}
	return bufferevent_socket_connect(r->bev, (const struct sockaddr *)&r->m->inet.ss,
					  (int)r->m->inet.len);
}

/* The message's header fields and body range, for the DATA phase. */
static bool milter_read_message(struct milter_conn *r)
{
	milter_headers_free(&r->hdrs);
	memset(&r->hdrs, 0, sizeof r->hdrs);
	if (milter_headers_read(r->info.fd, r->info.offset, r->info.size, &r->hdrs) < 0)
		return false;
	r->body_at = r->info.offset + r->hdrs.body_offset;
	r->body_end = r->info.offset + r->info.size;
	return true;
}

static void milter_send_abort(struct milter_conn *r)
{
	static const uint8_t abort_cmd[5] = {0, 0, 0, 1, MILTER_CMD_ABORT};
	r->in_txn = false;
	if (r->bev && bufferevent_write(r->bev, abort_cmd, sizeof abort_cmd) < 0)
		milter_fail(r, "cannot queue a command");
}

void milter_conn_abort(struct milter_conn *r)
{
	r->txn_accepted = r->txn_discard = false;
	if (r->in_txn && !r->asking && !r->failed)
		milter_send_abort(r);
}

/* An ask that is answered without the filter: it failed before, or
 * accepted (or discarded) what this step belongs to. */
static bool milter_answer_at_once(struct milter_conn *r)
{
	bool data = r->phase == MILTER_PHASE_DATA;
	bool in_txn = r->phase >= MILTER_PHASE_RCPT;
	if (r->failed) {
		r->res.failed = true;
		r->res.why = "failed earlier in the session";
		r->res.verdict = milter_failure_verdict(r->m->on_failure);
	} else if (data && (r->session_discard || r->txn_discard)) {
		r->res.verdict = MILTER_VERDICT_DISCARD;
	} else if (r->session_accepted || r->session_discard ||
		   (in_txn && (r->txn_accepted || r->txn_discard))) {
		r->res.verdict = MILTER_VERDICT_ACCEPT;
	} else {
		return false;
	}
	milter_finish(r);
	return true;
}

static enum milter_step milter_first_step(enum milter_phase phase)
{
	switch (phase) {
	case MILTER_PHASE_CONNECT: return STEP_CONNECT;
	case MILTER_PHASE_HELO: return STEP_HELO;
	case MILTER_PHASE_MAIL: return STEP_MAIL;
	case MILTER_PHASE_RCPT: return STEP_RCPT;
	case MILTER_PHASE_DATA: break;
	}
	return STEP_DATA;
}

void milter_conn_ask(struct milter_conn *r, enum milter_phase phase,
		     const struct milter_info *info, milter_done_fn done, void *arg)
{
	if (r->asking)
		fatal("milter: a step asked while another runs");
	r->info = *info;
	r->done = done;
	r->arg = arg;
	r->asking = true;
	r->phase = phase;
	r->step = milter_first_step(phase);
	memset(&r->res, 0, sizeof r->res);
	r->mods_bytes = r->body_cap = 0;
	if (phase == MILTER_PHASE_MAIL)
		r->txn_accepted = r->txn_discard = false;
	if (milter_answer_at_once(r))
		return;
	if (phase <= MILTER_PHASE_MAIL && r->in_txn)
		milter_send_abort(r); /* a transaction it saw begin is over */
	if (phase == MILTER_PHASE_MAIL)
		r->in_txn = true;
	if (phase == MILTER_PHASE_DATA && !milter_read_message(r)) {
		milter_fail(r, "cannot read the message");
		return;
	}
	if (!r->failed)
		milter_advance(r);
}

struct milter_conn *milter_conn_open(struct event_base *base, const struct conf_milter *m,
				     const struct milter_info *info, milter_done_fn done,
				     void *arg)
{
	struct milter_conn *r = xcalloc(1, sizeof *r);
	r->m = m;
	r->info = *info;
	r->done = done;
	r->arg = arg;
	r->asking = true;
	r->phase = MILTER_PHASE_CONNECT;
	r->timer = evtimer_new(base, milter_on_timer, r);
	if (!r->timer)
		fatal("milter: cannot make a timer");
	r->step = STEP_NEGOTIATE;
	r->bev = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
	if (!r->bev)
		fatal("milter: cannot make a socket buffer");
	bufferevent_setcb(r->bev, milter_on_read, milter_on_write, milter_on_event, r);
	bufferevent_setwatermark(r->bev, EV_WRITE, MILTER_OUT_HIGH / 2, 0);
	if (bufferevent_enable(r->bev, EV_READ | EV_WRITE) < 0)
		fatal("milter: cannot enable a socket buffer");
	milter_arm(r);
	if (milter_connect(r) < 0)
		milter_fail(r, "cannot connect");
	return r;
}

/* smtp_client: one outbound SMTP transaction (RFC 5321 client side) on the
 * event loop: MX lookup (RFC 5321 §5.1, RFC 7505), connect with a timeout,
 * EHLO/HELO, STARTTLS (RFC 3207), AUTH PLAIN (RFC 4954, 4616), PIPELINING
 * (RFC 2920), DATA with dot-stuffing (§4.5.2), QUIT.  Every reply passes the
 * bounded line reader; the message is streamed from the spool with bounded
 * memory. */
#include "queue/smtp_client.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include "net/dns.h"
#include "net/mtasts.h"
#include "queue/sts.h"
#include "queue/tlsreport.h"
#include "lib/linebuf.h"
#include "lib/log.h"
#include "lib/strbuf.h"
#include "net/tls.h"
#include "lib/util.h"

/* RFC 5321 §4.5.3.2: the client's timeouts, per stage. */
enum {
	SMTP_CLIENT_TIMEOUT_GREETING = 300,     /* §4.5.3.2.1 initial 220 */
	SMTP_CLIENT_TIMEOUT_COMMAND = 300,      /* §4.5.3.2.2-3 EHLO, MAIL, RCPT ... */
	SMTP_CLIENT_TIMEOUT_DATA = 120,         /* §4.5.3.2.4 DATA initiation */
	SMTP_CLIENT_TIMEOUT_BLOCK = 180,        /* §4.5.3.2.5 each block of message text */
	SMTP_CLIENT_TIMEOUT_DOT = 600,          /* §4.5.3.2.6 DATA termination */
	SMTP_CLIENT_TIMEOUT_TLS = 60,           /* the TLS handshake */
	SMTP_CLIENT_TIMEOUT_QUIT = 10,          /* goodbye: nothing depends on it */
};

enum {
	SMTP_CLIENT_INPUT_MAX = 64 * 1024,      /* socket reads pause above this */
	SMTP_CLIENT_BODY_CHUNK = 16 * 1024,     /* message bytes read from the spool at a time */
	SMTP_CLIENT_OUTPUT_LOW = 64 * 1024,     /* refill the output below this */
	SMTP_CLIENT_COMMAND_MAX = 2048,         /* an outgoing command line */
	SMTP_CLIENT_ADDRESS_MAX = 1000,         /* longer addresses are refused before sending */
	SMTP_CLIENT_SECRET_MAX = 1024,          /* the smarthost password: first line of its file */
	SMTP_CLIENT_HOST_MAX = 256,
	SMTP_CLIENT_LIST_MAX = LOG_VALUE_MAX * 2, /* recipients in a log line, marker included */
};

enum smtp_client_state {
	SMTP_CLIENT_START,      /* waiting for the loop to run the first step */
	SMTP_CLIENT_STS,        /* the domain's MTA-STS policy (RFC 8461) */
	SMTP_CLIENT_MX,         /* MX lookup */
	SMTP_CLIENT_ADDRS,      /* A/AAAA of the current host */
	SMTP_CLIENT_TLSA,       /* its TLSA records (RFC 7672 §2.2) */
	SMTP_CLIENT_CONNECT,
	SMTP_CLIENT_GREETING,
	SMTP_CLIENT_EHLO,
	SMTP_CLIENT_HELO,
	SMTP_CLIENT_STARTTLS,
	SMTP_CLIENT_HANDSHAKE,
	SMTP_CLIENT_AUTH,
	SMTP_CLIENT_TXN,        /* MAIL, RCPT..., DATA and their replies */
	SMTP_CLIENT_BODY,       /* streaming the message */
	SMTP_CLIENT_DOT,        /* waiting for the reply to the final "." */
	SMTP_CLIENT_QUIT,
	SMTP_CLIENT_DONE,       /* nothing left to do: being freed */
};

static const char *const smtp_client_state_names[] = {
	"start", "sts", "mx", "addrs", "tlsa", "connect", "greeting", "ehlo", "helo", "starttls",
	"handshake", "auth", "transaction", "body", "dot", "quit", "done",
};

/* What DANE asks of the current host. */
enum smtp_client_dane {
	DANE_NONE,              /* no secure TLSA records: opportunistic TLS */
	DANE_UNAUTHENTICATED,   /* secure records, none usable: TLS, unauthenticated (RFC 7672 §2.2) */
	DANE_REQUIRED,          /* TLS whose certificate matches a record */
};

/* A usable TLSA record: DANE-TA(2) or DANE-EE(3), selector 0/1, matching
 * type 0/1/2 (RFC 7672 §3.1; PKIX-TA/EE are unusable, §3.1.3). */
struct smtp_client_tlsa {
	uint8_t usage, selector, mtype;
	uint8_t *data;
	size_t len;
};

struct smtp_client {
	struct smtp_client *prev, *next;        /* every client, for abort_all */
	enum smtp_client_state state;
	unsigned depth;                         /* callbacks on the stack */
	bool doomed;                            /* free when depth drops to 0 */

	/* what to do (copied from the params) */
	struct event_base *base;
	struct dns_resolver *dns;
	SSL_CTX *ssl_ctx;
	char *id, *helo, *sender, *domain, *smarthost, *auth_user, *auth_secret;
	time_t arrival;
	unsigned short port;
	enum conf_outbound_tls tls;
	bool dane, mta_sts, requiretls, tls_optional, tls_report;
	char *spool_dir, *cafile;
	int fd;
	off_t offset, size;
	char *prefix;                           /* sent before the message, or NULL */
	struct smtp_client_rcpt *rcpts;
	size_t nrcpts;
	smtp_client_done_cb done;
	void *arg;
	bool reported;                          /* done has run: rcpts and fd are gone */

	/* where to */
	char **hosts;
	size_t nhosts, host_i;
	bool implicit_mx;                       /* no MX: the domain itself (§5.1) */
	struct dns_addr *addrs;
	size_t naddrs, addr_i;
	unsigned connects;
	dns_query_id query;

	/* the domain's MTA-STS policy (RFC 8461) */
	struct sts_lookup *sts;
	bool have_sts;
	struct mtasts_policy sts_policy;
	bool host_sts;                          /* it applies to the current host (no DANE) */
	const char *sts_problem;                /* the policy could not be had (RFC 8460 §4.3.2.2) */

	/* DANE for the current host (RFC 7672) */
	enum smtp_client_dane host_dane;
	struct smtp_client_tlsa *tlsa;          /* its usable TLSA records */
	size_t ntlsa;
	bool tls_verified;                      /* by DANE, on this connection */
	const char *tls_result;                 /* why the policy failed, or "verified"; NULL: - */
	bool tls_counted;                       /* this host's session is counted for TLS reports */

	/* the connection */
	struct bufferevent *bev;
	struct event *timer;
	struct linebuf lb;
	struct smtp_client_reply reply;
	char host[SMTP_CLIENT_HOST_MAX];
	char addr[INET6_ADDRSTRLEN];
	bool tls_active;
	bool no_tls;                            /* handshake failed here: once more in the clear */
	char tls_desc[TLS_DESCRIBE_MAX];
	unsigned caps;
	unsigned long long size_limit;          /* EHLO SIZE, 0: none given */

	/* the transaction */
	size_t *order;                          /* rcpts in the transaction, by index */
	size_t ntxn;
	size_t replies;                         /* replies read: MAIL, RCPT..., DATA */
	size_t accepted;
	bool mail_ok;
	bool dummy_dot;                         /* "." after a 354 with no recipient */
	off_t body_done;
	bool bol;
	char *chunk;

	/* the last host-level problem, for the recipients if every host fails */
	char error[SMTP_REPLY_TEXT_MAX];
	char error_status[SMTP_STATUS_MAX];
};

static struct smtp_client *smtp_client_all;

/* ---- replies (RFC 5321 §4.2) ---------------------------------------------- */

void smtp_client_reply_reset(struct smtp_client_reply *r)
{
	memset(r, 0, sizeof *r);
}

/* Append text to the reply's log form: printable ASCII only (the text goes
 * into logs and into the header fields of a bounce), cut with "...". */
static void smtp_client_reply_append(struct smtp_client_reply *r, const char *s, size_t n)
{
	size_t o = strlen(r->text);
	const size_t room = sizeof r->text - 4; /* "..." and the NUL */
	if (o >= room)
		return;
	for (size_t i = 0; i < n; i++) {
		if (o >= room) {
			memcpy(r->text + o, "...", 4);
			return;
		}
		unsigned char ch = (unsigned char)s[i];
		r->text[o++] = ch >= 0x20 && ch < 0x7f ? (char)ch : (ch == '\t' ? ' ' : '?');
	}
	r->text[o] = '\0';
}

enum smtp_client_reply_status smtp_client_reply_feed(struct smtp_client_reply *r,
						     const char *line, size_t len,
						     const char **rest)
{
	if (len < 3 || line[0] < '2' || line[0] > '5' || line[1] < '0' || line[1] > '9' ||
	    line[2] < '0' || line[2] > '9' || (len > 3 && line[3] != ' ' && line[3] != '-')) {
		r->bad = true;
		return SMTP_CLIENT_REPLY_BAD;
	}
	unsigned code = (unsigned)(line[0] - '0') * 100 + (unsigned)(line[1] - '0') * 10 +
			(unsigned)(line[2] - '0');
	if ((r->lines > 0 && code != r->code) || r->lines >= SMTP_REPLY_LINES_MAX) {
		r->bad = true;
		return SMTP_CLIENT_REPLY_BAD;
	}
	r->code = code;
	const char *text = len > 4 ? line + 4 : "";
	size_t tlen = len > 4 ? len - 4 : 0;
	if (r->lines == 0)
		smtp_client_reply_append(r, line, 3);
	if (tlen > 0) {
		smtp_client_reply_append(r, " ", 1);
		smtp_client_reply_append(r, text, tlen);
	}
	r->lines++;
	if (rest)
		*rest = text;
	return len > 3 && line[3] == '-' ? SMTP_CLIENT_REPLY_MORE : SMTP_CLIENT_REPLY_DONE;
}

/* "N.NNN.NNN" at s, with the class digit cls: its length, else 0. */
static size_t smtp_client_enhanced_len(const char *s, char cls)
{
	if (s[0] != cls || s[1] != '.')
		return 0;
	size_t i = 2;
	for (int part = 0; part < 2; part++) {
		size_t digits = 0;
		while (s[i] >= '0' && s[i] <= '9' && digits < 3) {
			i++;
			digits++;
		}
		if (digits == 0 || (s[i] >= '0' && s[i] <= '9'))
			return 0;
		if (part == 0) {
			if (s[i] != '.')
				return 0;
			i++;
		}
	}
	return s[i] == '\0' || s[i] == ' ' ? i : 0;
}

void smtp_client_reply_status(const struct smtp_client_reply *r, char *out, size_t outsz)
{
	char cls = (char)('0' + (r->code / 100 % 10));
	if (cls != '2' && cls != '4' && cls != '5')
		cls = '4';
	size_t n = strlen(r->text) > 4 ? smtp_client_enhanced_len(r->text + 4, cls) : 0;
	if (n > 0 && n < outsz) {
		memcpy(out, r->text + 4, n);
		out[n] = '\0';
		return;
	}
	xsnprintf(out, outsz, "%c.0.0", cls); /* fits: SMTP_STATUS_MAX */
}

/* ---- EHLO and dot-stuffing ------------------------------------------------- */

static bool smtp_client_word_is(const char *s, size_t n, const char *word)
{
	return strlen(word) == n && strncasecmp(s, word, n) == 0;
}

unsigned smtp_client_ehlo_line(const char *text)
{
	static const struct {
		const char *keyword;
		unsigned flag;
	} keywords[] = {
		{"PIPELINING", SMTP_EXT_PIPELINING}, {"STARTTLS", SMTP_EXT_STARTTLS},
		{"SIZE", SMTP_EXT_SIZE},             {"8BITMIME", SMTP_EXT_8BITMIME},
		{"SMTPUTF8", SMTP_EXT_SMTPUTF8},     {"REQUIRETLS", SMTP_EXT_REQUIRETLS},
	};
	size_t n = strcspn(text, " ");
	for (size_t i = 0; i < ARRAY_LEN(keywords); i++)
		if (smtp_client_word_is(text, n, keywords[i].keyword))
			return keywords[i].flag;
	if (!smtp_client_word_is(text, n, "AUTH"))
		return 0;
	for (const char *p = text + n; *p;) {
		p += strspn(p, " ");
		size_t k = strcspn(p, " ");
		if (smtp_client_word_is(p, k, "PLAIN"))
			return SMTP_EXT_AUTH_PLAIN;
		p += k;
	}
	return 0;
}

/* The number after "SIZE ", 0 when none (RFC 1870 §4: 0 means no limit). */
static unsigned long long smtp_client_ehlo_size(const char *text)
{
	size_t n = strcspn(text, " ");
	if (!smtp_client_word_is(text, n, "SIZE") || text[n] != ' ')
		return 0;
	const char *p = text + n + 1;
	size_t digits = strspn(p, "0123456789");
	if (digits == 0 || digits > 18)
		return 0;
	return strtoull(p, NULL, 10);
}

size_t smtp_client_dot_stuff(const char *in, size_t n, char *out, bool *bol)
{
	size_t o = 0;
	bool at = *bol;
	for (size_t i = 0; i < n; i++) {
		if (at && in[i] == '.')
			out[o++] = '.';
		out[o++] = in[i];
		at = in[i] == '\n';
	}
	*bol = at;
	return o;
}

/* ---- life ------------------------------------------------------------------ */

void smtp_client_rcpt_clear(struct smtp_client_rcpt *r)
{
	free(r->reply);
	free(r->remote_mta);
	r->reply = NULL;
	r->remote_mta = NULL;
}

static void smtp_client_enter_state(struct smtp_client *c, enum smtp_client_state st)
{
	if (c->state != st)
		log_debug("event=outbound-state id=%s host=%s %s -> %s", c->id,
			  c->host[0] ? c->host : "-", smtp_client_state_names[c->state],
			  smtp_client_state_names[st]);
	c->state = st;
}

static void smtp_client_drop_conn(struct smtp_client *c)
{
	if (c->bev) {
		bufferevent_free(c->bev); /* a TLS filter frees the socket under it */
		c->bev = NULL;
	}
	evtimer_del(c->timer);
	linebuf_reset(&c->lb);
	smtp_client_reply_reset(&c->reply);
}

static void smtp_client_free(struct smtp_client *c)
{
	if (c->query)
		dns_cancel(c->dns, c->query);
	smtp_client_drop_conn(c);
	event_free(c->timer);
	if (c->prev)
		c->prev->next = c->next;
	else
		smtp_client_all = c->next;
	if (c->next)
		c->next->prev = c->prev;
	for (size_t i = 0; i < c->nhosts; i++)
		free(c->hosts[i]);
	free(c->hosts);
	free(c->addrs);
	for (size_t i = 0; i < c->ntlsa; i++)
		free(c->tlsa[i].data);
	free(c->tlsa);
	sts_lookup_cancel(c->sts);
	mtasts_policy_clear(&c->sts_policy);
	free(c->spool_dir);
	free(c->cafile);
	free(c->order);
	free(c->chunk);
	free(c->id);
	free(c->helo);
	free(c->prefix);
	free(c->sender);
	free(c->domain);
	free(c->smarthost);
	free(c->auth_user);
	free(c->auth_secret);
	free(c);
}

/* Done with c: freed now, or when the outermost callback returns. */
static void smtp_client_release(struct smtp_client *c)
{
	smtp_client_enter_state(c, SMTP_CLIENT_DONE);
	if (c->query) {
		dns_cancel(c->dns, c->query);
		c->query = 0;
	}
	smtp_client_drop_conn(c);
	if (c->depth > 0)
		c->doomed = true;
	else
		smtp_client_free(c);
}

static void smtp_client_enter(struct smtp_client *c)
{
	c->depth++;
}

/* false when c is gone (the caller must not touch it again). */
static bool smtp_client_leave(struct smtp_client *c)
{
	if (--c->depth > 0 || !c->doomed)
		return !c->doomed;
	smtp_client_free(c);
	return false;
}

static void smtp_client_arm(struct smtp_client *c, unsigned seconds)
{
	struct timeval tv = {.tv_sec = seconds};
	evtimer_add(c->timer, &tv);
}

/* ---- results and the log ----------------------------------------------------- */

static const char *smtp_client_result_name(enum smtp_client_result r)
{
	switch (r) {
	case SMTP_CLIENT_SENT:
		return "sent";
	case SMTP_CLIENT_FAILED:
		return "bounced";
	default:
		return "deferred";
	}
}

/* One log line per attempt and outcome; to is a list from
 * smtp_client_list_rcpts(), escaped already. */
/* The policy that applies to the current host, for the log. */
static const char *smtp_client_policy(const struct smtp_client *c)
{
	if (c->host_dane != DANE_NONE)
		return "dane";
	return c->host_sts ? "mta-sts" : "none";
}

/* MTA-STS in enforce mode for the current host: its failures stop delivery. */
static bool smtp_client_sts_enforced(const struct smtp_client *c)
{
	return c->host_sts && c->sts_policy.mode == MTASTS_ENFORCE && !c->tls_optional;
}

static void smtp_client_log(const struct smtp_client *c, const char *to,
			    enum smtp_client_result result, const char *reply)
{
	char r[LOG_VALUE_MAX * 2], h[LOG_VALUE_MAX];
	log_quote(r, sizeof r, reply, strlen(reply));
	log_escape(h, sizeof h, c->host[0] ? c->host : "-", strlen(c->host[0] ? c->host : "-"));
	long long delay = (long long)(time(NULL) - c->arrival);
	char tls[TLS_DESCRIBE_MAX + 2];
	/* fits: the description and its quotes */
	xsnprintf(tls, sizeof tls, c->tls_active ? "\"%s\"" : "none", c->tls_desc);
	log_info("event=outbound id=%s to=%s host=%s addr=%s tls=%s tls-policy=%s tls-result=%s "
		 "reply=\"%s\" delay=%lld result=%s", c->id, to, h, c->addr[0] ? c->addr : "-", tls,
		 smtp_client_policy(c), c->tls_result ? c->tls_result : "-", r,
		 delay < 0 ? 0 : delay, smtp_client_result_name(result));
}

/* "<a>,<b>" of the recipients with this result (and this reply, unless
 * reply is NULL), each escaped; those that do not fit are counted in a
 * "+N-more" marker (log_list). */
static void smtp_client_list_rcpts(const struct smtp_client *c, char out[SMTP_CLIENT_LIST_MAX],
				   enum smtp_client_result result, const char *reply)
{
	struct strbuf sb;
	strbuf_init(&sb, out, SMTP_CLIENT_LIST_MAX);
	struct log_list l;
	log_list_begin(&l, &sb, "<", ">");
	for (size_t i = 0; i < c->nrcpts; i++) {
		const struct smtp_client_rcpt *r = &c->rcpts[i];
		if (r->result != result || (reply && (!r->reply || strcmp(r->reply, reply) != 0)))
			continue;
		log_list_add(&l, r->address);
	}
	(void)log_list_end(&l); /* SMTP_CLIENT_LIST_MAX holds the marker */
}

static void smtp_client_set_result(struct smtp_client *c, struct smtp_client_rcpt *r,
				   enum smtp_client_result result, const char *status,
				   const char *reply, bool remote)
{
	r->result = result;
	/* fits: constants and smtp_client_reply_status(), SMTP_STATUS_MAX */
	xsnprintf(r->status, sizeof r->status, "%s", status);
	free(r->reply);
	r->reply = xstrdup(reply);
	free(r->remote_mta);
	r->remote_mta = remote && c->host[0] ? xstrdup(c->host) : NULL;
	r->tls[0] = '\0';
	if (c->tls_result || smtp_client_policy(c)[0] != 'n')
		/* fits: both are constants of this file */
		xsnprintf(r->tls, sizeof r->tls, "tls-policy=%s tls-result=%s", smtp_client_policy(c),
			  c->tls_result ? c->tls_result : "-");
}

/* The reply decides for r: 2xx accepted (caller's business), 5xx failed,
 * anything else deferred. */
static void smtp_client_result_from_reply(struct smtp_client *c, struct smtp_client_rcpt *r)
{
	char status[SMTP_STATUS_MAX];
	smtp_client_reply_status(&c->reply, status, sizeof status);
	enum smtp_client_result res = c->reply.code / 100 == 2   ? SMTP_CLIENT_SENT
				      : c->reply.code / 100 == 5 ? SMTP_CLIENT_FAILED
								 : SMTP_CLIENT_DEFERRED;
	smtp_client_set_result(c, r, res, status, c->reply.text, true);
}

/* Every recipient still pending gets this result. */
static void smtp_client_set_pending(struct smtp_client *c, enum smtp_client_result result,
				    const char *status, const char *reply, bool remote)
{
	for (size_t i = 0; i < c->nrcpts; i++)
		if (c->rcpts[i].result == SMTP_CLIENT_PENDING)
			smtp_client_set_result(c, &c->rcpts[i], result, status, reply, remote);
}

/* Log each distinct outcome once, then tell the caller.  After this,
 * rcpts and fd belong to the caller again. */
static void smtp_client_report(struct smtp_client *c, bool log)
{
	if (c->reported)
		return;
	smtp_client_set_pending(c, SMTP_CLIENT_DEFERRED, "4.4.2", "no answer", false);
	for (size_t i = 0; log && i < c->nrcpts; i++) {
		const struct smtp_client_rcpt *r = &c->rcpts[i];
		bool seen = false;
		for (size_t k = 0; k < i && !seen; k++)
			seen = c->rcpts[k].result == r->result &&
			       strcmp(c->rcpts[k].reply, r->reply) == 0;
		if (seen)
			continue;
		char to[SMTP_CLIENT_LIST_MAX];
		smtp_client_list_rcpts(c, to, r->result, r->reply);
		smtp_client_log(c, to, r->result, r->reply);
	}
	c->reported = true;
	c->rcpts = NULL;
	c->nrcpts = 0;
	c->fd = -1;
	c->done(c->arg);
}

/* ---- TLS reporting (RFC 8460) ------------------------------------------------------- */

/* §4.3: the result type of posthorn's reason; NULL: no TLS failure. */
static const char *smtp_client_rpt_result(const char *ours)
{
	static const struct {
		const char *ours, *rfc;
	} map[] = {
		{"tlsa-mismatch", "validation-failure"},
		{"tlsa-lookup-failed", "dnssec-invalid"},
		{"tls-handshake-failed", "validation-failure"},
		{"starttls-not-supported", "starttls-not-supported"},
		{"certificate-host-mismatch", "certificate-host-mismatch"},
		{"certificate-expired", "certificate-expired"},
		{"certificate-not-trusted", "certificate-not-trusted"},
	};
	for (size_t i = 0; ours && i < ARRAY_LEN(map); i++)
		if (strcmp(ours, map[i].ours) == 0)
			return map[i].rfc;
	return NULL;
}

static enum tlsrpt_policy_type smtp_client_rpt_type(const struct smtp_client *c)
{
	if (c->host_dane != DANE_NONE)
		return TLSRPT_POLICY_TLSA;
	return c->host_sts || c->sts_problem ? TLSRPT_POLICY_STS : TLSRPT_POLICY_NONE;
}

/* Our end of the connection, for sending-mta-ip; false when unknown. */
static bool smtp_client_local_ip(const struct smtp_client *c, char *out, size_t outsz)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof ss;
	evutil_socket_t fd = c->bev ? bufferevent_getfd(c->bev) : -1;
	if (fd < 0 || getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
		return false;
	const void *a = ss.ss_family == AF_INET ? (const void *)&((struct sockaddr_in *)&ss)->sin_addr
						: (const void *)&((struct sockaddr_in6 *)&ss)->sin6_addr;
	return inet_ntop(ss.ss_family, a, out, (socklen_t)outsz) != NULL;
}

/* "3 1 1 <hex>" of a record of 64 bytes at most: 141 bytes with the NUL. */
static void smtp_client_tlsa_line(const struct smtp_client_tlsa *t,
				  char out[TLSSTATS_POLICY_LINE_MAX])
{
	static const char hex[] = "0123456789abcdef";
	/* fits: three numbers below 256 */
	xsnprintf(out, TLSSTATS_POLICY_LINE_MAX, "%u %u %u ", t->usage, t->selector, t->mtype);
	size_t o = strlen(out);
	for (size_t k = 0; k < t->len && k < 64; k++) {
		out[o++] = hex[t->data[k] >> 4];
		out[o++] = hex[t->data[k] & 0xf];
	}
	out[o] = '\0';
}

/* The policy as the report shows it (RFC 8460 §4.4 policy-string): the
 * host's usable TLSA records, or the MTA-STS policy's lines.  buf holds
 * TLSRPT_POLICY_STRINGS_MAX lines; their number. */
static size_t smtp_client_policy_lines(const struct smtp_client *c,
				       char buf[][TLSSTATS_POLICY_LINE_MAX])
{
	size_t n = 0;
	if (c->host_dane != DANE_NONE) {
		for (size_t i = 0; i < c->ntlsa && n < TLSRPT_POLICY_STRINGS_MAX; i++) {
			const struct smtp_client_tlsa *t = &c->tlsa[i];
			if (t->len > 64)
				continue; /* a whole certificate: too long for a line */
			smtp_client_tlsa_line(t, buf[n++]);
		}
		return n;
	}
	if (!c->host_sts)
		return 0;
	xsnprintf(buf[n++], TLSSTATS_POLICY_LINE_MAX, "version: STSv1"); /* fits, as below */
	xsnprintf(buf[n++], TLSSTATS_POLICY_LINE_MAX, "mode: %s",
		  mtasts_mode_name(c->sts_policy.mode));
	xsnprintf(buf[n++], TLSSTATS_POLICY_LINE_MAX, "max_age: %lu", c->sts_policy.max_age);
	for (size_t i = 0; i < c->sts_policy.nmx && n < TLSRPT_POLICY_STRINGS_MAX; i++)
		if (bsnprintf(buf[n], TLSSTATS_POLICY_LINE_MAX, "mx: %s", c->sts_policy.mx[i]))
			n++; /* a longer pattern is left out */
	return n;
}

/* The current host's session, once: a success when TLS came up without a
 * policy failure, else the failure; nothing for a session without TLS
 * and without a policy that wanted it, to a smarthost, or of a report. */
static void smtp_client_count_tls(struct smtp_client *c)
{
	if (c->tls_counted || c->tls_report || c->smarthost || !c->host[0])
		return;
	const char *result = smtp_client_rpt_result(c->tls_result);
	if (!result && c->sts_problem && c->host_dane == DANE_NONE)
		result = c->sts_problem;
	if (!result && !c->tls_active)
		return;
	c->tls_counted = true;
	char local[INET6_ADDRSTRLEN];
	char lines[TLSRPT_POLICY_STRINGS_MAX][TLSSTATS_POLICY_LINE_MAX];
	const char *policy[TLSRPT_POLICY_STRINGS_MAX];
	size_t npolicy = smtp_client_policy_lines(c, lines);
	for (size_t i = 0; i < npolicy; i++)
		policy[i] = lines[i];
	struct tlsstats_session ss = {
		.domain = c->domain,
		.type = smtp_client_rpt_type(c),
		.result = result,
		.mx = c->host,
		.receiving_ip = c->addr[0] && c->addr[0] != '?' ? c->addr : NULL,
		.sending_ip = smtp_client_local_ip(c, local, sizeof local) ? local : NULL,
		.policy = policy,
		.npolicy = npolicy,
	};
	tlsreport_count(&ss);
}

/* ---- commands ------------------------------------------------------------------ */

/* libevent could not take what we send (no memory).  The attempt ends
 * here, before anything more is sent (never the end of the data: the
 * server must not take a cut message): whoever is still pending is
 * deferred, to be tried again later, never bounced for it.  c is
 * released. */
static void smtp_client_write_failed(struct smtp_client *c)
{
	char h[LOG_VALUE_MAX];
	const char *host = c->host[0] ? c->host : "-";
	log_err("event=write-error id=%s host=%s addr=%s state=%s reason=out-of-memory", c->id,
		log_escape(h, sizeof h, host, strlen(host)), c->addr[0] ? c->addr : "-",
		smtp_client_state_names[c->state]);
	smtp_client_set_pending(c, SMTP_CLIENT_DEFERRED, "4.3.0",
				"out of memory while sending; will try again", false);
	smtp_client_drop_conn(c);
	smtp_client_report(c, true); /* nothing when reported already (QUIT) */
	smtp_client_release(c);
}

/* Everything for the server goes through here.  false when it could not
 * be queued: then the attempt is over and c released
 * (smtp_client_write_failed), and the caller returns at once (a caller
 * whose last step it was has nothing to check). */
static bool smtp_client_write(struct smtp_client *c, const void *data, size_t len)
{
	if (bufferevent_write(c->bev, data, len) == 0)
		return true;
	smtp_client_write_failed(c);
	return false;
}

/* One command line; false as smtp_client_write(). */
static bool smtp_client_send(struct smtp_client *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static bool smtp_client_send(struct smtp_client *c, const char *fmt, ...)
{
	char line[SMTP_CLIENT_COMMAND_MAX];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(line, sizeof line - 2, fmt, ap);
	va_end(ap);
	/* addresses were checked against SMTP_CLIENT_ADDRESS_MAX: a cut is a bug */
	if (n < 0 || (size_t)n > sizeof line - 3)
		fatal("smtp_client: command too long");
	line[n++] = '\r';
	line[n++] = '\n';
	return smtp_client_write(c, line, (size_t)n);
}

static void smtp_client_quit(struct smtp_client *c)
{
	if (!c->bev) {
		smtp_client_release(c);
		return;
	}
	if (!smtp_client_send(c, "QUIT"))
		return;
	smtp_client_enter_state(c, SMTP_CLIENT_QUIT);
	smtp_client_arm(c, SMTP_CLIENT_TIMEOUT_QUIT);
}

/* Report and say goodbye: the transaction is over. */
static void smtp_client_finish(struct smtp_client *c)
{
	smtp_client_report(c, true);
	smtp_client_quit(c);
}

/* ---- hosts and addresses --------------------------------------------------------- */

static void smtp_client_next(struct smtp_client *c);
static void smtp_client_connect(struct smtp_client *c);

/* This host or address did not work out: note why, log it, go on with the
 * next address (or, with same, this one again: TLS fallback). */
static void smtp_client_host_failed(struct smtp_client *c, bool same, const char *status,
				    const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static void smtp_client_host_failed(struct smtp_client *c, bool same, const char *status,
				    const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	verrfmt(c->error, sizeof c->error, fmt, ap);
	va_end(ap);
	/* fits: as in smtp_client_set_result() */
	xsnprintf(c->error_status, sizeof c->error_status, "%s", status);
	smtp_client_count_tls(c);
	char to[SMTP_CLIENT_LIST_MAX];
	smtp_client_list_rcpts(c, to, SMTP_CLIENT_PENDING, NULL);
	smtp_client_log(c, to, SMTP_CLIENT_DEFERRED, c->error);
	smtp_client_drop_conn(c);
	c->tls_active = false;
	if (same && c->connects < SMTP_CLIENT_MAX_CONNECTS) {
		smtp_client_connect(c);
		return;
	}
	smtp_client_next(c);
}

/* No host is left: the recipients wait for the next attempt. */
static void smtp_client_exhausted(struct smtp_client *c)
{
	if (!c->error[0]) {
		errfmt(c->error, sizeof c->error, "no mail exchanger could be reached");
		xsnprintf(c->error_status, sizeof c->error_status, "4.4.1"); /* fits */
	}
	/* RFC 8689 §5: no host could take a REQUIRETLS message as it asks:
	 * it is returned (5.7.30), not kept waiting */
	if (c->requiretls && strcmp(c->error_status, "5.7.30") == 0) {
		smtp_client_set_pending(c, SMTP_CLIENT_FAILED, c->error_status, c->error, false);
		smtp_client_report(c, false);
		smtp_client_release(c);
		return;
	}
	smtp_client_set_pending(c, SMTP_CLIENT_DEFERRED, c->error_status, c->error, false);
	smtp_client_report(c, false); /* each host's failure is logged already */
	smtp_client_release(c);
}

/* Everybody fails for a reason found before any connection. */
static void smtp_client_fail_all(struct smtp_client *c, enum smtp_client_result result,
				 const char *status, const char *reason)
{
	smtp_client_set_pending(c, result, status, reason, false);
	smtp_client_report(c, true);
	smtp_client_release(c);
}

static void smtp_client_addrs_answer(void *arg, enum dns_status st, const struct dns_addr *addrs,
				     size_t n);
static void smtp_client_addrs_sec_answer(void *arg, enum dns_status st,
					 const struct dns_addr *addrs, size_t n, bool secure);

static void smtp_client_tlsa_clear(struct smtp_client *c)
{
	for (size_t i = 0; i < c->ntlsa; i++)
		free(c->tlsa[i].data);
	free(c->tlsa);
	c->tlsa = NULL;
	c->ntlsa = 0;
	c->host_dane = DANE_NONE;
	c->tls_result = NULL;
	c->tls_counted = false;
}

static void smtp_client_lookup_addrs(struct smtp_client *c)
{
	const char *host = c->hosts[c->host_i];
	c->addr[0] = '\0';
	/* MX names (dns) and the smarthost (conf) have 253 bytes at most; a
	 * longer name is never looked up, connected to or verified cut */
	if (!bsnprintf(c->host, sizeof c->host, "%s", host)) {
		c->host[0] = '\0';
		smtp_client_host_failed(c, false, "4.4.3", "host name of %zu bytes is too long",
					strlen(host));
		return;
	}
	smtp_client_tlsa_clear(c);
	smtp_client_enter_state(c, SMTP_CLIENT_ADDRS);
	dns_query_id q = c->dane ? dns_lookup_addrs_sec(c->dns, host, smtp_client_addrs_sec_answer, c)
				 : dns_lookup_addrs(c->dns, host, smtp_client_addrs_answer, c);
	if (q)
		c->query = q;
}

static void smtp_client_next(struct smtp_client *c)
{
	c->no_tls = false;
	if (++c->addr_i < c->naddrs && c->connects < SMTP_CLIENT_MAX_CONNECTS) {
		smtp_client_connect(c);
		return;
	}
	free(c->addrs);
	c->addrs = NULL;
	c->naddrs = c->addr_i = 0;
	if (++c->host_i < c->nhosts && c->connects < SMTP_CLIENT_MAX_CONNECTS) {
		smtp_client_lookup_addrs(c);
		return;
	}
	smtp_client_exhausted(c);
}

static void smtp_client_take_addrs(struct smtp_client *c, const struct dns_addr *addrs, size_t n)
{
	c->addrs = xcalloc(n, sizeof *c->addrs);
	memcpy(c->addrs, addrs, n * sizeof *addrs);
	c->naddrs = n;
	c->addr_i = 0;
}

/* The host is of no use (its TLSA lookup failed): on to the next one. */
static void smtp_client_skip_host(struct smtp_client *c, const char *status, const char *why)
{
	free(c->addrs);
	c->addrs = NULL;
	c->naddrs = c->addr_i = 0;
	smtp_client_host_failed(c, false, status, "%s", why);
}

/* RFC 7672 §3.1: which records can authenticate the server. */
static bool smtp_client_tlsa_usable(const struct dns_tlsa *t)
{
	if (t->usage != 2 && t->usage != 3)
		return false; /* PKIX-TA(0), PKIX-EE(1): unusable for SMTP */
	if (t->selector > 1)
		return false;
	return (t->mtype == 0 && t->len > 0) || (t->mtype == 1 && t->len == 32) ||
	       (t->mtype == 2 && t->len == 64);
}

static void smtp_client_tlsa_answer(void *arg, enum dns_status st, const struct dns_tlsa *tlsa,
				    size_t n, bool secure)
{
	struct smtp_client *c = arg;
	smtp_client_enter(c);
	c->query = 0;
	if (st == DNS_OK && secure) {
		c->tlsa = xcalloc(n, sizeof *c->tlsa);
		for (size_t i = 0; i < n; i++) {
			if (!smtp_client_tlsa_usable(&tlsa[i]))
				continue;
			struct smtp_client_tlsa *t = &c->tlsa[c->ntlsa++];
			t->usage = tlsa[i].usage;
			t->selector = tlsa[i].selector;
			t->mtype = tlsa[i].mtype;
			t->data = xmalloc(tlsa[i].len);
			memcpy(t->data, tlsa[i].data, tlsa[i].len);
			t->len = tlsa[i].len;
		}
		c->host_dane = c->ntlsa ? DANE_REQUIRED : DANE_UNAUTHENTICATED;
		smtp_client_connect(c);
	} else if (st == DNS_OK || st == DNS_NOTFOUND) {
		/* no records, or records not validated: opportunistic TLS */
		smtp_client_connect(c);
	} else {
		/* RFC 7672 §2.2: a failed TLSA lookup for a secure host makes the
		 * host unusable (it may be an attack on the lookup) */
		char why[SMTP_REPLY_TEXT_MAX];
		errfmt(why, sizeof why, "the TLSA lookup for %s failed (%s)", c->host,
		       dns_status_name(st));
		c->host_dane = DANE_REQUIRED; /* for the log: this is DANE's doing */
		c->tls_result = "tlsa-lookup-failed";
		smtp_client_skip_host(c, "4.7.5", why);
	}
	smtp_client_leave(c);
}

/* Addresses with their DNSSEC status: when secure, the host's TLSA records
 * decide (RFC 7672 §2.2.2); else as without DANE. */
static void smtp_client_addrs_sec_answer(void *arg, enum dns_status st,
					 const struct dns_addr *addrs, size_t n, bool secure)
{
	struct smtp_client *c = arg;
	if (st != DNS_OK || n == 0 || !secure) {
		smtp_client_addrs_answer(arg, st, addrs, n);
		return;
	}
	smtp_client_enter(c);
	c->query = 0;
	smtp_client_take_addrs(c, addrs, n);
	smtp_client_enter_state(c, SMTP_CLIENT_TLSA);
	dns_query_id q = dns_lookup_tlsa(c->dns, c->host, c->port, smtp_client_tlsa_answer, c);
	if (q)
		c->query = q;
	smtp_client_leave(c);
}

static void smtp_client_addrs_answer(void *arg, enum dns_status st, const struct dns_addr *addrs,
				     size_t n)
{
	struct smtp_client *c = arg;
	smtp_client_enter(c);
	c->query = 0;
	if (st == DNS_OK && n > 0) {
		smtp_client_take_addrs(c, addrs, n);
		smtp_client_connect(c);
	} else if (st == DNS_NOTFOUND && c->implicit_mx) {
		/* RFC 5321 §5.1: no MX and no address: the domain cannot take mail */
		char why[SMTP_REPLY_TEXT_MAX];
		errfmt(why, sizeof why, "domain %s has no MX and no address record", c->domain);
		smtp_client_fail_all(c, SMTP_CLIENT_FAILED, "5.1.2", why);
	} else {
		c->addr_i = c->naddrs = 0;
		errfmt(c->error, sizeof c->error, "no address for %s (%s)", c->host,
		       st == DNS_NOTFOUND ? "not found" : dns_status_name(st));
		xsnprintf(c->error_status, sizeof c->error_status, "4.4.3"); /* fits */
		smtp_client_next(c); /* no address: on to the next host */
	}
	smtp_client_leave(c);
}

/* RFC 8461 §4.1: in enforce mode only the mail exchangers the policy
 * names are used; in testing mode every one is, a mismatch only noted. */
static bool smtp_client_sts_allows(struct smtp_client *c, const char *host)
{
	if (!c->have_sts || mtasts_mx_matches(&c->sts_policy, host))
		return true;
	char h[LOG_VALUE_MAX];
	log_info("event=mta-sts-mismatch id=%s domain=%s host=%s mode=%s", c->id, c->domain,
		 log_escape(h, sizeof h, host, strlen(host)), mtasts_mode_name(c->sts_policy.mode));
	return c->sts_policy.mode != MTASTS_ENFORCE || c->tls_optional;
}

static void smtp_client_take_hosts(struct smtp_client *c, const struct dns_mx *mx, size_t n)
{
	c->hosts = xcalloc(n < SMTP_CLIENT_MAX_HOSTS ? n : SMTP_CLIENT_MAX_HOSTS, sizeof *c->hosts);
	c->nhosts = 0;
	for (size_t i = 0; i < n && c->nhosts < SMTP_CLIENT_MAX_HOSTS; i++)
		if (smtp_client_sts_allows(c, mx[i].host))
			c->hosts[c->nhosts++] = xstrdup(mx[i].host);
	c->host_i = 0;
}

/* MX answers are used as they come; the MX_SEC form is DANE's (the
 * answer's own security does not matter, RFC 7672 §2.2.1). */
static void smtp_client_mx_answer(void *arg, enum dns_status st, const struct dns_mx *mx,
				  size_t n);
static void smtp_client_mx_sec_answer(void *arg, enum dns_status st, const struct dns_mx *mx,
				      size_t n, bool secure)
{
	smtp_client_mx_answer(arg, st, mx, n);
}

/* The hosts to try, or a deferral when MTA-STS left none. */
static void smtp_client_try_hosts(struct smtp_client *c)
{
	if (c->nhosts == 0) {
		char why[SMTP_REPLY_TEXT_MAX];
		errfmt(why, sizeof why, "no mail exchanger of %s is named by its MTA-STS policy",
		       c->domain);
		c->tls_result = "sts-no-mx-match";
		smtp_client_fail_all(c, c->requiretls ? SMTP_CLIENT_FAILED : SMTP_CLIENT_DEFERRED,
				     c->requiretls ? "5.7.30" : "4.7.5", why);
		return;
	}
	smtp_client_lookup_addrs(c);
}

static void smtp_client_mx_answer(void *arg, enum dns_status st, const struct dns_mx *mx, size_t n)
{
	struct smtp_client *c = arg;
	smtp_client_enter(c);
	c->query = 0;
	if (st == DNS_OK && n == 1 && mx[0].host[0] == '\0') {
		/* RFC 7505 §4.2: a null MX; 556 5.1.10 is the code it suggests */
		char why[SMTP_REPLY_TEXT_MAX];
		errfmt(why, sizeof why, "556 5.1.10 domain %s accepts no mail (null MX, RFC 7505)",
		       c->domain);
		smtp_client_fail_all(c, SMTP_CLIENT_FAILED, "5.1.10", why);
	} else if (st == DNS_OK && n > 0) {
		smtp_client_take_hosts(c, mx, n);
		smtp_client_try_hosts(c);
	} else if (st == DNS_NOTFOUND) {
		struct dns_mx self = {.preference = 0, .host = c->domain};
		c->implicit_mx = true;
		smtp_client_take_hosts(c, &self, 1);
		smtp_client_try_hosts(c);
	} else {
		char why[SMTP_REPLY_TEXT_MAX];
		errfmt(why, sizeof why, "MX lookup for %s failed: %s", c->domain,
		       dns_status_name(st));
		smtp_client_fail_all(c, SMTP_CLIENT_DEFERRED, "4.4.3", why);
	}
	smtp_client_leave(c);
}

/* A host name as DNS knows it: letters, digits, '-', '_', dots. */
static bool smtp_client_hostname_ok(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n > 253 || s[0] == '.' || s[0] == '-')
		return false;
	return strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.") == n;
}

/* "[192.0.2.1]" or "[IPv6:2001:db8::1]" (RFC 5321 §4.1.3), or a bare
 * address (a smarthost); true with *out filled. */
static bool smtp_client_parse_literal(const char *s, struct dns_addr *out)
{
	char buf[INET6_ADDRSTRLEN + 8];
	size_t n = strlen(s);
	if (n >= sizeof buf)
		return false;
	if (s[0] == '[') {
		if (n < 3 || s[n - 1] != ']')
			return false;
		memcpy(buf, s + 1, n - 2);
		buf[n - 2] = '\0';
		if (strncasecmp(buf, "IPv6:", 5) == 0) {
			out->family = AF_INET6;
			return inet_pton(AF_INET6, buf + 5, out->addr) == 1;
		}
		out->family = AF_INET;
		return inet_pton(AF_INET, buf, out->addr) == 1;
	}
	out->family = AF_INET;
	if (inet_pton(AF_INET, s, out->addr) == 1)
		return true;
	out->family = AF_INET6;
	return inet_pton(AF_INET6, s, out->addr) == 1;
}

/* Straight to one address, no DNS. */
static void smtp_client_direct(struct smtp_client *c, const char *name, const struct dns_addr *a)
{
	struct dns_mx self = {.preference = 0, .host = (char *)name};
	smtp_client_take_hosts(c, &self, 1);
	/* fits: name is an address literal, shorter than INET6_ADDRSTRLEN + 8 */
	xsnprintf(c->host, sizeof c->host, "%s", name);
	c->addrs = xmalloc(sizeof *c->addrs);
	c->addrs[0] = *a;
	c->naddrs = 1;
	c->addr_i = 0;
	smtp_client_connect(c);
}

static bool smtp_client_address_ok(const char *a)
{
	size_t n = strlen(a);
	if (n > SMTP_CLIENT_ADDRESS_MAX)
		return false;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)a[i] < 0x20 || a[i] == 0x7f || a[i] == '<' || a[i] == '>')
			return false;
	return true;
}

static void smtp_client_lookup_mx(struct smtp_client *c)
{
	smtp_client_enter_state(c, SMTP_CLIENT_MX);
	dns_query_id q = c->dane ? dns_lookup_mx_sec(c->dns, c->domain, smtp_client_mx_sec_answer, c)
				 : dns_lookup_mx(c->dns, c->domain, smtp_client_mx_answer, c);
	if (q)
		c->query = q;
}

/* The domain's MTA-STS policy is known (or that there is none): on to its
 * mail exchangers. */
static void smtp_client_sts_answer(void *arg, const struct mtasts_policy *policy,
				   const char *problem)
{
	struct smtp_client *c = arg;
	smtp_client_enter(c);
	c->sts = NULL;
	c->sts_problem = policy ? NULL : problem;
	if (policy && policy->mode != MTASTS_NONE) {
		mtasts_policy_copy(&c->sts_policy, policy);
		c->have_sts = true;
	}
	smtp_client_lookup_mx(c);
	smtp_client_leave(c);
}

static void smtp_client_begin(struct smtp_client *c)
{
	struct dns_addr a;
	if (!smtp_client_address_ok(c->sender)) {
		smtp_client_fail_all(c, SMTP_CLIENT_FAILED, "5.1.7",
				     "sender address cannot be sent");
		return;
	}
	for (size_t i = 0; i < c->nrcpts; i++)
		if (!smtp_client_address_ok(c->rcpts[i].address))
			smtp_client_set_result(c, &c->rcpts[i], SMTP_CLIENT_FAILED, "5.1.3",
					       "recipient address cannot be sent", false);
	bool any = false;
	for (size_t i = 0; i < c->nrcpts; i++)
		any = any || c->rcpts[i].result == SMTP_CLIENT_PENDING;
	if (!any) {
		smtp_client_report(c, true);
		smtp_client_release(c);
		return;
	}
	if (c->smarthost) {
		if (smtp_client_parse_literal(c->smarthost, &a)) {
			smtp_client_direct(c, c->smarthost, &a);
			return;
		}
		struct dns_mx self = {.preference = 0, .host = c->smarthost};
		smtp_client_take_hosts(c, &self, 1);
		smtp_client_lookup_addrs(c);
		return;
	}
	if (c->domain[0] == '[') {
		if (smtp_client_parse_literal(c->domain, &a))
			smtp_client_direct(c, c->domain, &a);
		else
			smtp_client_fail_all(c, SMTP_CLIENT_FAILED, "5.1.2", "bad address literal");
		return;
	}
	if (!smtp_client_hostname_ok(c->domain)) {
		smtp_client_fail_all(c, SMTP_CLIENT_FAILED, "5.1.2",
				     "destination domain is not a valid host name");
		return;
	}
	if (c->mta_sts) {
		smtp_client_enter_state(c, SMTP_CLIENT_STS);
		c->sts = sts_lookup_start(c->dns, c->spool_dir, c->cafile, c->domain,
					  smtp_client_sts_answer, c);
		return;
	}
	smtp_client_lookup_mx(c);
}

/* ---- the connection ------------------------------------------------------------- */

static void smtp_client_read_cb(struct bufferevent *bev, void *arg);
static void smtp_client_write_cb(struct bufferevent *bev, void *arg);
static void smtp_client_event_cb(struct bufferevent *bev, short what, void *arg);

static void smtp_client_setup_bev(struct smtp_client *c)
{
	bufferevent_setcb(c->bev, smtp_client_read_cb, smtp_client_write_cb, smtp_client_event_cb,
			  c);
	bufferevent_setwatermark(c->bev, EV_READ, 0, SMTP_CLIENT_INPUT_MAX);
	bufferevent_enable(c->bev, EV_READ | EV_WRITE);
}

static socklen_t smtp_client_sockaddr(const struct smtp_client *c, struct sockaddr_storage *ss)
{
	const struct dns_addr *a = &c->addrs[c->addr_i];
	memset(ss, 0, sizeof *ss);
	if (a->family == AF_INET) {
		struct sockaddr_in *sin = (struct sockaddr_in *)ss;
		sin->sin_family = AF_INET;
		sin->sin_port = htons(c->port);
		memcpy(&sin->sin_addr, a->addr, 4);
		return sizeof *sin;
	}
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
	sin6->sin6_family = AF_INET6;
	sin6->sin6_port = htons(c->port);
	memcpy(&sin6->sin6_addr, a->addr, 16);
	return sizeof *sin6;
}

static void smtp_client_connect(struct smtp_client *c)
{
	const struct dns_addr *a = &c->addrs[c->addr_i];
	if (!inet_ntop(a->family, a->addr, c->addr, sizeof c->addr))
		xsnprintf(c->addr, sizeof c->addr, "?"); /* fits: INET6_ADDRSTRLEN */
	c->connects++;
	c->tls_active = false;
	c->tls_verified = false;
	c->tls_result = NULL;
	c->tls_counted = false;
	/* DANE takes precedence where both apply (RFC 8461 §2) */
	c->host_sts = c->have_sts && c->host_dane == DANE_NONE;
	c->tls_desc[0] = '\0';
	c->caps = 0;
	c->size_limit = 0;
	linebuf_reset(&c->lb);
	smtp_client_reply_reset(&c->reply);
	struct sockaddr_storage ss;
	socklen_t len = smtp_client_sockaddr(c, &ss);
	c->bev = bufferevent_socket_new(c->base, -1, BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
	if (!c->bev)
		fatal("bufferevent_socket_new failed");
	smtp_client_setup_bev(c);
	smtp_client_enter_state(c, SMTP_CLIENT_CONNECT);
	smtp_client_arm(c, SMTP_CLIENT_CONNECT_TIMEOUT);
	if (bufferevent_socket_connect(c->bev, (struct sockaddr *)&ss, (int)len) < 0) {
		int e = EVUTIL_SOCKET_ERROR();
		smtp_client_host_failed(c, false, "4.4.1", "cannot connect to %s[%s]: %s", c->host,
					c->addr, evutil_socket_error_to_string(e));
	}
}

static void smtp_client_send_ehlo(struct smtp_client *c)
{
	c->caps = 0;
	c->size_limit = 0;
	if (!smtp_client_send(c, "EHLO %s", c->helo))
		return;
	smtp_client_enter_state(c, SMTP_CLIENT_EHLO);
	smtp_client_arm(c, SMTP_CLIENT_TIMEOUT_COMMAND);
}

static bool smtp_client_needs_tls(const struct smtp_client *c)
{
	return c->tls == OUTBOUND_TLS_REQUIRED || c->auth_user ||
	       (c->host_dane != DANE_NONE && !c->tls_optional) || smtp_client_sts_enforced(c) ||
	       c->requiretls;
}

static bool smtp_client_has_8bit(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s >= 0x80)
			return true;
	return false;
}

/* RFC 8689 §5: a REQUIRETLS message goes only over TLS authenticated by
 * DANE (or MTA-STS), to a server that promises to keep the requirement. */
static bool smtp_client_requiretls_met(struct smtp_client *c)
{
	if (!c->requiretls)
		return true;
	if (!c->tls_verified) {
		c->tls_result = c->tls_result ? c->tls_result : "requiretls-unverified";
		smtp_client_host_failed(c, false, "5.7.30",
					"REQUIRETLS: the TLS session with %s[%s] is not authenticated "
					"by DANE", c->host, c->addr);
		return false;
	}
	if (!(c->caps & SMTP_EXT_REQUIRETLS)) {
		c->tls_result = "requiretls-not-offered";
		smtp_client_host_failed(c, false, "5.7.30",
					"REQUIRETLS: %s[%s] does not offer REQUIRETLS", c->host,
					c->addr);
		return false;
	}
	return true;
}

/* MAIL, then every RCPT and DATA at once with PIPELINING (RFC 2920 §3.1),
 * else one command per reply. */
static void smtp_client_mail(struct smtp_client *c)
{
	smtp_client_count_tls(c);
	if (!smtp_client_requiretls_met(c))
		return;
	bool utf8 = smtp_client_has_8bit(c->sender);
	free(c->order);
	c->order = xcalloc(c->nrcpts, sizeof *c->order);
	c->ntxn = 0;
	for (size_t i = 0; i < c->nrcpts; i++) {
		if (c->rcpts[i].result != SMTP_CLIENT_PENDING)
			continue;
		c->order[c->ntxn++] = i;
		utf8 = utf8 || smtp_client_has_8bit(c->rcpts[i].address);
	}
	if (utf8 && !(c->caps & SMTP_EXT_SMTPUTF8)) {
		char why[SMTP_REPLY_TEXT_MAX];
		errfmt(why, sizeof why, "%s does not support SMTPUTF8, needed for a non-ASCII "
		       "address (RFC 6531)", c->host);
		smtp_client_set_pending(c, SMTP_CLIENT_FAILED, "5.6.7", why, true);
		smtp_client_finish(c);
		return;
	}
	long long total = (long long)c->size + (long long)(c->prefix ? strlen(c->prefix) : 0);
	if ((c->caps & SMTP_EXT_SIZE) && c->size_limit && (unsigned long long)total > c->size_limit) {
		char why[SMTP_REPLY_TEXT_MAX];
		errfmt(why, sizeof why, "message of %lld bytes exceeds the %llu bytes %s accepts",
		       total, c->size_limit, c->host);
		smtp_client_set_pending(c, SMTP_CLIENT_FAILED, "5.3.4", why, true);
		smtp_client_finish(c);
		return;
	}
	char params[128];
	struct strbuf sb;
	strbuf_init(&sb, params, sizeof params);
	if (c->caps & SMTP_EXT_SIZE)
		(void)strbuf_addf(&sb, " SIZE=%lld", total);
	if (c->caps & SMTP_EXT_8BITMIME) /* RFC 6152: also fine for 7-bit text */
		(void)strbuf_adds(&sb, " BODY=8BITMIME");
	if (utf8)
		(void)strbuf_adds(&sb, " SMTPUTF8");
	if (c->requiretls)
		(void)strbuf_adds(&sb, " REQUIRETLS");
	if (!strbuf_ok(&sb)) /* the four take 60 bytes at most */
		fatal("smtp_client: MAIL FROM parameters do not fit");
	c->replies = 0;
	c->accepted = 0;
	c->mail_ok = false;
	c->dummy_dot = false;
	if (!smtp_client_send(c, "MAIL FROM:<%s>%s", c->sender, params))
		return;
	if (c->caps & SMTP_EXT_PIPELINING) {
		for (size_t k = 0; k < c->ntxn; k++)
			if (!smtp_client_send(c, "RCPT TO:<%s>", c->rcpts[c->order[k]].address))
				return;
		if (!smtp_client_send(c, "DATA"))
			return;
	}
	smtp_client_enter_state(c, SMTP_CLIENT_TXN);
	smtp_client_arm(c, SMTP_CLIENT_TIMEOUT_COMMAND);
}

/* The password: first line of the secret file, which others may not read. */
static bool smtp_client_read_secret(const char *path, char *out, size_t outsz, char *err,
				    size_t errsz)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) < 0) {
		errfmt(err, errsz, "cannot read the smarthost password file %s: %s", path,
		       strerror(errno));
		if (fd >= 0)
			close(fd);
		return false;
	}
	if (st.st_mode & 077) {
		errfmt(err, errsz, "smarthost password file %s may be read by group or others "
		       "(chmod 600 it)", path);
		close(fd);
		return false;
	}
	ssize_t n = read(fd, out, outsz - 1);
	int e = errno;
	close(fd); /* read-only */
	if (n < 0) {
		errfmt(err, errsz, "cannot read the smarthost password file %s: %s", path,
		       strerror(e));
		return false;
	}
	out[n] = '\0';
	out[strcspn(out, "\r\n")] = '\0';
	if (!out[0]) {
		errfmt(err, errsz, "the smarthost password file %s is empty", path);
		return false;
	}
	return true;
}

/* AUTH PLAIN with the initial response (RFC 4954 §4, RFC 4616):
 * base64("" NUL user NUL password).  Never logged; wiped. */
static void smtp_client_auth(struct smtp_client *c)
{
	char pw[SMTP_CLIENT_SECRET_MAX + 1], err[SMTP_REPLY_TEXT_MAX];
	if (!smtp_client_read_secret(c->auth_secret, pw, sizeof pw, err, sizeof err)) {
		OPENSSL_cleanse(pw, sizeof pw);
		char q[LOG_VALUE_MAX * 2]; /* err names the file as configured */
		log_err("event=outbound-auth-error id=%s reason=\"%s\"", c->id,
			log_quote(q, sizeof q, err, strlen(err)));
		smtp_client_host_failed(c, false, "4.7.0", "%s", err);
		return;
	}
	size_t ulen = strlen(c->auth_user), plen = strlen(pw);
	size_t rawlen = 2 + ulen + plen;
	unsigned char *raw = xmalloc(rawlen);
	raw[0] = '\0';
	memcpy(raw + 1, c->auth_user, ulen);
	raw[1 + ulen] = '\0';
	memcpy(raw + 2 + ulen, pw, plen);
	size_t b64len = 4 * ((rawlen + 2) / 3) + 1;
	char *b64 = xmalloc(b64len);
	EVP_EncodeBlock((unsigned char *)b64, raw, (int)rawlen);
	char *line = xasprintf("AUTH PLAIN %s\r\n", b64);
	size_t linelen = strlen(line);
	bool queued = smtp_client_write(c, line, linelen);
	OPENSSL_cleanse(pw, sizeof pw);
	OPENSSL_cleanse(raw, rawlen);
	OPENSSL_cleanse(b64, b64len);
	OPENSSL_cleanse(line, linelen);
	free(raw);
	free(b64);
	free(line);
	if (!queued)
		return;
	smtp_client_enter_state(c, SMTP_CLIENT_AUTH);
	smtp_client_arm(c, SMTP_CLIENT_TIMEOUT_COMMAND);
}

/* TLS is settled (up, refused, or not wanted): log in or start. */
static void smtp_client_after_tls(struct smtp_client *c)
{
	if (!c->auth_user) {
		smtp_client_mail(c);
		return;
	}
	if (!(c->caps & SMTP_EXT_AUTH_PLAIN)) {
		smtp_client_host_failed(c, false, "4.7.0", "%s[%s] does not offer AUTH PLAIN",
					c->host, c->addr);
		return;
	}
	smtp_client_auth(c);
}

static void smtp_client_after_ehlo(struct smtp_client *c)
{
	if (c->tls_active || (c->tls == OUTBOUND_TLS_NO && !c->auth_user)) {
		smtp_client_after_tls(c);
		return;
	}
	if ((c->caps & SMTP_EXT_STARTTLS) && !c->no_tls) {
		if (!smtp_client_send(c, "STARTTLS"))
			return;
		smtp_client_enter_state(c, SMTP_CLIENT_STARTTLS);
		smtp_client_arm(c, SMTP_CLIENT_TIMEOUT_COMMAND);
		return;
	}
	if (c->host_sts)
		c->tls_result = "starttls-not-supported"; /* testing mode: noted, sent anyway */
	if (smtp_client_needs_tls(c)) {
		c->tls_result = "starttls-not-supported";
		smtp_client_host_failed(c, false, c->requiretls ? "5.7.30" : "4.7.4",
					"TLS is required but %s[%s] does not offer STARTTLS",
					c->host, c->addr);
		return;
	}
	smtp_client_after_tls(c);
}

/* OpenSSL's DANE verifier (RFC 7671) with the host's usable records; the
 * MX host name is the reference identifier for DANE-TA(2), and DANE-EE(3)
 * takes no name check (RFC 7672 §3.1.1).  The handshake goes on whatever
 * the result (SSL_VERIFY_NONE); smtp_client_tls_up() looks at it. */
static void smtp_client_dane_setup(struct smtp_client *c, SSL *ssl)
{
	if (SSL_dane_enable(ssl, c->host) <= 0) {
		ERR_clear_error();
		return; /* no record can then match: a mismatch, below */
	}
	SSL_dane_set_flags(ssl, DANE_FLAG_NO_DANE_EE_NAMECHECKS);
	for (size_t i = 0; i < c->ntlsa; i++) {
		const struct smtp_client_tlsa *t = &c->tlsa[i];
		if (SSL_dane_tlsa_add(ssl, t->usage, t->selector, t->mtype, t->data, t->len) <= 0)
			ERR_clear_error(); /* unusable to OpenSSL: skipped */
	}
}

/* MTA-STS verifies against outbound's ca-file instead of the system's CAs. */
static void smtp_client_sts_store(const struct smtp_client *c, SSL *ssl)
{
	X509_STORE *st = X509_STORE_new();
	if (st && X509_STORE_load_file(st, c->cafile) == 1)
		SSL_set1_verify_cert_store(ssl, st);
	ERR_clear_error(); /* an unreadable file: nothing verifies, a failure below */
	X509_STORE_free(st);
}

/* RFC 3207 §4.2 and the client side of CVE-2011-0411: whatever arrived
 * after the 220 came in the clear and is thrown away. */
static void smtp_client_start_tls(struct smtp_client *c)
{
	struct evbuffer *in = bufferevent_get_input(c->bev);
	evbuffer_drain(in, evbuffer_get_length(in));
	linebuf_reset(&c->lb);
	SSL *ssl = SSL_new(c->ssl_ctx);
	if (!ssl)
		fatal("SSL_new failed");
	struct dns_addr a;
	if (!smtp_client_parse_literal(c->host, &a)) {
		SSL_set_tlsext_host_name(ssl, c->host); /* SNI */
		if (c->host_dane == DANE_REQUIRED)
			smtp_client_dane_setup(c, ssl);
		else
			SSL_set1_host(ssl, c->host);    /* verified=, and MTA-STS (§4.2) */
		if (c->host_sts && c->cafile)
			smtp_client_sts_store(c, ssl);
	}
	struct bufferevent *tls = bufferevent_openssl_filter_new(
	    c->base, c->bev, ssl, BUFFEREVENT_SSL_CONNECTING,
	    BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
	if (!tls) /* libevent's failure path leaves the SSL's owner unclear */
		fatal("cannot create a TLS bufferevent");
	bufferevent_openssl_set_allow_dirty_shutdown(tls, 1);
	c->bev = tls;
	smtp_client_setup_bev(c);
	smtp_client_enter_state(c, SMTP_CLIENT_HANDSHAKE);
	smtp_client_arm(c, SMTP_CLIENT_TIMEOUT_TLS);
}

static void smtp_client_tls_up(struct smtp_client *c)
{
	SSL *ssl = bufferevent_openssl_get_ssl(c->bev);
	tls_describe(ssl, c->tls_desc, sizeof c->tls_desc);
	c->tls_active = true;
	X509 *peer = SSL_get0_peer_certificate(ssl);
	bool verified = peer && SSL_get_verify_result(ssl) == X509_V_OK;
	c->tls_verified = c->host_dane == DANE_REQUIRED && verified &&
			  SSL_get0_dane_authority(ssl, NULL, NULL) >= 0;
	log_info("event=outbound-tls id=%s host=%s addr=%s tls=\"%s\" verified=%s tls-policy=%s",
		 c->id, c->host, c->addr, c->tls_desc, verified ? "yes" : "no",
		 smtp_client_policy(c));
	if (c->host_dane == DANE_REQUIRED)
		c->tls_result = c->tls_verified ? "verified" : "tlsa-mismatch";
	if (c->host_sts) {
		/* RFC 8461 §4.2: a certificate valid for the MX host name */
		long v = SSL_get_verify_result(ssl);
		c->tls_verified = verified;
		c->tls_result = verified ? "verified"
				: v == X509_V_ERR_HOSTNAME_MISMATCH ? "certificate-host-mismatch"
				: v == X509_V_ERR_CERT_HAS_EXPIRED  ? "certificate-expired"
								    : "certificate-not-trusted";
		if (!verified && smtp_client_sts_enforced(c)) {
			smtp_client_host_failed(c, false, c->requiretls ? "5.7.30" : "4.7.5",
						"the certificate of %s[%s] is not valid for it (%s)",
						c->host, c->addr, X509_verify_cert_error_string(v));
			return;
		}
	}
	if (c->host_dane == DANE_REQUIRED && !c->tls_verified && !c->tls_optional) {
		long v = SSL_get_verify_result(ssl);
		smtp_client_host_failed(c, false, c->requiretls ? "5.7.30" : "4.7.5",
					"the certificate of %s[%s] matches no TLSA record (%s)",
					c->host, c->addr, X509_verify_cert_error_string(v));
		return;
	}
	/* RFC 3207 §4.2: forget what EHLO said before TLS */
	smtp_client_send_ehlo(c);
}

static void smtp_client_tls_failed(struct smtp_client *c, short what)
{
	unsigned long e = bufferevent_get_openssl_error(c->bev);
	const char *why = e ? ERR_reason_error_string(e) : NULL;
	if (!why)
		why = (what & BEV_EVENT_EOF) ? "connection closed" : "handshake failed";
	while (bufferevent_get_openssl_error(c->bev))
		; /* this connection's errors must not leak into the next one */
	char reason[SMTP_REPLY_TEXT_MAX];
	errfmt(reason, sizeof reason, "TLS handshake with %s[%s] failed: %s", c->host, c->addr, why);
	if (c->host_dane != DANE_NONE || c->host_sts)
		c->tls_result = "tls-handshake-failed";
	if (smtp_client_needs_tls(c)) {
		smtp_client_host_failed(c, false, "4.7.5", "%s", reason);
		return;
	}
	/* opportunistic: once more to this address, without STARTTLS */
	c->no_tls = true;
	smtp_client_host_failed(c, true, "4.7.5", "%s; trying again without TLS", reason);
}

/* ---- replies, per state ------------------------------------------------------------- */

static void smtp_client_body_start(struct smtp_client *c);

static void smtp_client_txn_reply(struct smtp_client *c)
{
	size_t idx = c->replies++;
	bool pipelining = (c->caps & SMTP_EXT_PIPELINING) != 0;
	bool ok = c->reply.code / 100 == 2;
	smtp_client_arm(c, idx == c->ntxn ? SMTP_CLIENT_TIMEOUT_DATA : SMTP_CLIENT_TIMEOUT_COMMAND);
	if (idx == 0) {
		c->mail_ok = ok;
		if (!ok) /* the sender is refused: so is everybody */
			for (size_t k = 0; k < c->ntxn; k++)
				smtp_client_result_from_reply(c, &c->rcpts[c->order[k]]);
		if (!pipelining) {
			if (!ok) {
				smtp_client_finish(c);
				return;
			}
			smtp_client_send(c, "RCPT TO:<%s>", c->rcpts[c->order[0]].address);
		}
		return;
	}
	if (idx <= c->ntxn) {
		struct smtp_client_rcpt *r = &c->rcpts[c->order[idx - 1]];
		if (c->mail_ok) {
			if (ok)
				c->accepted++; /* pending until the end of the data */
			else
				smtp_client_result_from_reply(c, r);
		}
		if (!pipelining) {
			if (idx < c->ntxn)
				smtp_client_send(c, "RCPT TO:<%s>",
						 c->rcpts[c->order[idx]].address);
			else if (c->accepted > 0)
				smtp_client_send(c, "DATA");
			else
				smtp_client_finish(c);
		}
		return;
	}
	/* the reply to DATA */
	if (c->reply.code == 354) {
		if (c->accepted > 0) {
			smtp_client_body_start(c);
			return;
		}
		/* RFC 2920 §3.1: no recipient, yet DATA was accepted: an empty
		 * message the server will refuse */
		c->dummy_dot = true;
		if (!smtp_client_write(c, ".\r\n", 3))
			return;
		smtp_client_enter_state(c, SMTP_CLIENT_DOT);
		smtp_client_arm(c, SMTP_CLIENT_TIMEOUT_DOT);
		return;
	}
	if (c->mail_ok && c->accepted > 0)
		for (size_t k = 0; k < c->ntxn; k++)
			if (c->rcpts[c->order[k]].result == SMTP_CLIENT_PENDING)
				smtp_client_result_from_reply(c, &c->rcpts[c->order[k]]);
	smtp_client_finish(c);
}

/* The reply to the final dot decides for every accepted recipient. */
static void smtp_client_dot_reply(struct smtp_client *c)
{
	if (!c->dummy_dot)
		for (size_t k = 0; k < c->ntxn; k++)
			if (c->rcpts[c->order[k]].result == SMTP_CLIENT_PENDING)
				smtp_client_result_from_reply(c, &c->rcpts[c->order[k]]);
	smtp_client_finish(c);
}

/* Before the transaction a bad reply costs this host only. */
static void smtp_client_host_refused(struct smtp_client *c, const char *what)
{
	char status[SMTP_STATUS_MAX];
	smtp_client_reply_status(&c->reply, status, sizeof status);
	if (status[0] == '5' || status[0] == '2')
		status[0] = '4'; /* another host, or a later attempt, may do better */
	smtp_client_host_failed(c, false, status, "%s[%s] refused %s: %s", c->host, c->addr, what,
				c->reply.text);
}

/* A reply or a failure in the middle of the transaction: whoever is still
 * pending waits for another attempt. */
static void smtp_client_lost(struct smtp_client *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void smtp_client_lost(struct smtp_client *c, const char *fmt, ...)
{
	char why[SMTP_REPLY_TEXT_MAX];
	va_list ap;
	va_start(ap, fmt);
	verrfmt(why, sizeof why, fmt, ap);
	va_end(ap);
	smtp_client_set_pending(c, SMTP_CLIENT_DEFERRED, "4.4.2", why, true);
	smtp_client_drop_conn(c);
	smtp_client_report(c, true);
	smtp_client_release(c);
}

static void smtp_client_on_reply(struct smtp_client *c)
{
	unsigned cls = c->reply.code / 100;
	switch (c->state) {
	case SMTP_CLIENT_GREETING:
		if (cls == 2)
			smtp_client_send_ehlo(c);
		else
			smtp_client_host_refused(c, "the connection");
		break;
	case SMTP_CLIENT_EHLO:
		if (cls == 2) {
			smtp_client_after_ehlo(c);
		} else if (cls == 5) {
			if (!smtp_client_send(c, "HELO %s", c->helo)) /* RFC 5321 §3.2 */
				break;
			smtp_client_enter_state(c, SMTP_CLIENT_HELO);
			smtp_client_arm(c, SMTP_CLIENT_TIMEOUT_COMMAND);
		} else {
			smtp_client_host_refused(c, "EHLO");
		}
		break;
	case SMTP_CLIENT_HELO:
		if (cls == 2) {
			c->caps = 0;
			smtp_client_after_ehlo(c);
		} else {
			smtp_client_host_refused(c, "HELO");
		}
		break;
	case SMTP_CLIENT_STARTTLS:
		if (c->reply.code == 220)
			smtp_client_start_tls(c);
		else if (smtp_client_needs_tls(c))
			smtp_client_host_refused(c, "STARTTLS");
		else
			smtp_client_after_tls(c); /* opportunistic: go on in the clear */
		break;
	case SMTP_CLIENT_AUTH:
		if (c->reply.code == 235)
			smtp_client_mail(c);
		else
			smtp_client_host_refused(c, "the login");
		break;
	case SMTP_CLIENT_TXN:
		smtp_client_txn_reply(c);
		break;
	case SMTP_CLIENT_DOT:
		smtp_client_dot_reply(c);
		break;
	case SMTP_CLIENT_QUIT:
		smtp_client_release(c);
		break;
	default: /* a reply nobody asked for, e.g. a 421 or a 552 while we send text */
		if (c->state == SMTP_CLIENT_BODY && cls == 5) {
			for (size_t k = 0; k < c->ntxn; k++)
				if (c->rcpts[c->order[k]].result == SMTP_CLIENT_PENDING)
					smtp_client_result_from_reply(c, &c->rcpts[c->order[k]]);
			smtp_client_drop_conn(c); /* never end the data after that */
			smtp_client_report(c, true);
			smtp_client_release(c);
			break;
		}
		smtp_client_lost(c, "unexpected reply from %s[%s]: %s", c->host, c->addr,
				 c->reply.text);
		break;
	}
}

/* A connection-level failure (error, EOF, timeout, garbage). */
static void smtp_client_broken(struct smtp_client *c, const char *why)
{
	switch (c->state) {
	case SMTP_CLIENT_CONNECT:
	case SMTP_CLIENT_GREETING:
	case SMTP_CLIENT_EHLO:
	case SMTP_CLIENT_HELO:
	case SMTP_CLIENT_STARTTLS:
	case SMTP_CLIENT_AUTH:
		smtp_client_host_failed(c, false, "4.4.2", "%s[%s]: %s (%s)", c->host, c->addr, why,
					smtp_client_state_names[c->state]);
		break;
	case SMTP_CLIENT_TXN:
	case SMTP_CLIENT_BODY:
	case SMTP_CLIENT_DOT:
		smtp_client_lost(c, "%s[%s]: %s (%s)", c->host, c->addr, why,
				 smtp_client_state_names[c->state]);
		break;
	default:
		smtp_client_release(c);
		break;
	}
}

static void smtp_client_read_cb(struct bufferevent *bev, void *arg)
{
	struct smtp_client *c = arg;
	char line[SMTP_REPLY_LINE_MAX + 1];
	struct linebuf_line l;
	smtp_client_enter(c);
	if (c->state == SMTP_CLIENT_CONNECT) { /* the greeting overtook the connect event */
		smtp_client_enter_state(c, SMTP_CLIENT_GREETING);
		smtp_client_arm(c, SMTP_CLIENT_TIMEOUT_GREETING);
	}
	while (c->bev == bev && c->state != SMTP_CLIENT_DONE) {
		enum linebuf_status st = linebuf_get(&c->lb, bufferevent_get_input(bev),
						     SMTP_REPLY_LINE_MAX, line, sizeof line, &l);
		if (st == LINEBUF_NEED_MORE)
			break;
		const char *rest = NULL;
		enum smtp_client_reply_status rs = st == LINEBUF_TOO_LONG || l.has_nul
						? SMTP_CLIENT_REPLY_BAD
						: smtp_client_reply_feed(&c->reply, l.data, l.len, &rest);
		if (rs == SMTP_CLIENT_REPLY_BAD) {
			smtp_client_broken(c, "malformed reply");
			break;
		}
		if ((c->state == SMTP_CLIENT_EHLO) && c->reply.lines > 1) {
			c->caps |= smtp_client_ehlo_line(rest);
			unsigned long long sz = smtp_client_ehlo_size(rest);
			if (sz)
				c->size_limit = sz;
		}
		if (rs == SMTP_CLIENT_REPLY_MORE)
			continue;
		smtp_client_on_reply(c);
		smtp_client_reply_reset(&c->reply); /* c lives on until smtp_client_leave() */
	}
	smtp_client_leave(c);
}

/* ---- the message --------------------------------------------------------------------- */

static void smtp_client_body_fill(struct smtp_client *c)
{
	struct evbuffer *out = bufferevent_get_output(c->bev);
	while (evbuffer_get_length(out) < SMTP_CLIENT_OUTPUT_LOW && c->body_done < c->size) {
		off_t left = c->size - c->body_done;
		size_t want = left < SMTP_CLIENT_BODY_CHUNK ? (size_t)left : SMTP_CLIENT_BODY_CHUNK;
		ssize_t n = pread(c->fd, c->chunk, want, c->offset + c->body_done);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			/* never end the data: the server must not take a cut message */
			smtp_client_lost(c, "cannot read the spooled message: %s",
					 n == 0 ? "file too short" : strerror(errno));
			return;
		}
		char *stuffed = c->chunk + SMTP_CLIENT_BODY_CHUNK;
		size_t k = smtp_client_dot_stuff(c->chunk, (size_t)n, stuffed, &c->bol);
		if (!smtp_client_write(c, stuffed, k))
			return;
		c->body_done += n;
	}
	if (c->body_done < c->size)
		return;
	/* the end of the data in one piece: queued whole, or not at all */
	const char *end = c->bol ? ".\r\n" : "\r\n.\r\n";
	if (!smtp_client_write(c, end, strlen(end)))
		return;
	free(c->chunk);
	c->chunk = NULL;
	bufferevent_setwatermark(c->bev, EV_WRITE, 0, 0);
	smtp_client_enter_state(c, SMTP_CLIENT_DOT);
	smtp_client_arm(c, SMTP_CLIENT_TIMEOUT_DOT);
}

static void smtp_client_body_start(struct smtp_client *c)
{
	c->body_done = 0;
	c->bol = true;
	c->chunk = xmalloc(SMTP_CLIENT_BODY_CHUNK * 3); /* read buffer, then room for stuffing */
	smtp_client_enter_state(c, SMTP_CLIENT_BODY);
	bufferevent_setwatermark(c->bev, EV_WRITE, SMTP_CLIENT_OUTPUT_LOW / 2, 0);
	smtp_client_arm(c, SMTP_CLIENT_TIMEOUT_BLOCK);
	/* header fields of our own first: each line starts with a name or a
	 * tab, never a dot */
	if (c->prefix && !smtp_client_write(c, c->prefix, strlen(c->prefix)))
		return;
	smtp_client_body_fill(c);
}

static void smtp_client_write_cb(struct bufferevent *bev, void *arg)
{
	struct smtp_client *c = arg;
	if (c->state != SMTP_CLIENT_BODY || c->bev != bev)
		return;
	smtp_client_enter(c);
	smtp_client_arm(c, SMTP_CLIENT_TIMEOUT_BLOCK);
	smtp_client_body_fill(c);
	smtp_client_leave(c);
}

static void smtp_client_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct smtp_client *c = arg;
	if (c->bev != bev)
		return;
	smtp_client_enter(c);
	if (what & BEV_EVENT_CONNECTED) {
		if (c->state == SMTP_CLIENT_HANDSHAKE) {
			smtp_client_tls_up(c);
		} else if (c->state == SMTP_CLIENT_CONNECT) {
			smtp_client_enter_state(c, SMTP_CLIENT_GREETING);
			smtp_client_arm(c, SMTP_CLIENT_TIMEOUT_GREETING);
		}
	} else if (c->state == SMTP_CLIENT_HANDSHAKE) {
		smtp_client_tls_failed(c, what);
	} else if (c->state == SMTP_CLIENT_CONNECT) {
		int e = EVUTIL_SOCKET_ERROR();
		const char *why = e ? evutil_socket_error_to_string(e) : "connection failed";
		smtp_client_host_failed(c, false, "4.4.1", "cannot connect to %s[%s]: %s", c->host,
					c->addr, why);
	} else {
		const char *why = (what & BEV_EVENT_EOF) ? "connection closed" : "connection error";
		smtp_client_broken(c, why);
	}
	smtp_client_leave(c);
}

static void smtp_client_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct smtp_client *c = arg;
	smtp_client_enter(c);
	if (c->state == SMTP_CLIENT_START) {
		smtp_client_begin(c);
	} else if (c->state == SMTP_CLIENT_QUIT) {
		smtp_client_release(c);
	} else if (c->state == SMTP_CLIENT_CONNECT) {
		smtp_client_host_failed(c, false, "4.4.1",
					"cannot connect to %s[%s]: timed out after %ds", c->host,
					c->addr, SMTP_CLIENT_CONNECT_TIMEOUT);
	} else if (c->state == SMTP_CLIENT_HANDSHAKE) {
		smtp_client_tls_failed(c, BEV_EVENT_TIMEOUT);
	} else {
		smtp_client_broken(c, "timeout");
	}
	smtp_client_leave(c);
}

/* ---- the interface ---------------------------------------------------------------------- */

static char *smtp_client_dup(const char *s)
{
	return s ? xstrdup(s) : NULL;
}

struct smtp_client *smtp_client_start(const struct smtp_client_params *p, smtp_client_done_cb done,
				      void *arg)
{
	struct smtp_client *c = xcalloc(1, sizeof *c);
	c->base = p->base;
	c->dns = p->dns;
	c->ssl_ctx = p->ssl_ctx;
	c->id = xstrdup(p->id);
	c->helo = xstrdup(p->helo);
	c->sender = xstrdup(p->sender);
	c->domain = xstrdup(p->domain ? p->domain : "");
	c->smarthost = smtp_client_dup(p->smarthost);
	c->auth_user = smtp_client_dup(p->auth_user);
	c->auth_secret = smtp_client_dup(p->auth_secret);
	c->arrival = p->arrival;
	c->port = p->port;
	c->tls = p->tls;
	/* DANE needs a resolver that validates, and MX delivery (RFC 7672 §2) */
	c->dane = p->dane && !p->smarthost && dns_resolver_validates(p->dns);
	c->mta_sts = p->mta_sts && !p->smarthost && p->spool_dir;
	c->spool_dir = smtp_client_dup(p->spool_dir);
	c->cafile = smtp_client_dup(p->cafile);
	c->requiretls = p->requiretls;
	c->tls_optional = p->tls_optional && !p->requiretls;
	c->tls_report = p->tls_report;
	c->prefix = smtp_client_dup(p->prefix);
	c->fd = p->fd;
	c->offset = p->offset;
	c->size = p->size;
	c->rcpts = p->rcpts;
	c->nrcpts = p->nrcpts;
	c->done = done;
	c->arg = arg;
	for (size_t i = 0; i < c->nrcpts; i++) {
		smtp_client_rcpt_clear(&c->rcpts[i]);
		c->rcpts[i].result = SMTP_CLIENT_PENDING;
		c->rcpts[i].status[0] = '\0';
	}
	c->timer = evtimer_new(c->base, smtp_client_timer_cb, c);
	if (!c->timer)
		fatal("evtimer_new failed");
	c->next = smtp_client_all;
	if (c->next)
		c->next->prev = c;
	smtp_client_all = c;
	/* the first step runs from the loop: done never runs inside start */
	c->state = SMTP_CLIENT_START;
	smtp_client_arm(c, 0);
	return c;
}

void smtp_client_cancel(struct smtp_client *c)
{
	if (!c || c->reported)
		return;
	c->reported = true;
	c->rcpts = NULL;
	c->nrcpts = 0;
	c->fd = -1;
	smtp_client_release(c);
}

void smtp_client_abort_all(void)
{
	while (smtp_client_all) {
		struct smtp_client *c = smtp_client_all;
		c->reported = true;
		c->rcpts = NULL;
		c->nrcpts = 0;
		c->depth = 0;
		smtp_client_release(c);
	}
}

SSL_CTX *smtp_client_tls_new(char *err, size_t errsz)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	if (!ctx) {
		errfmt(err, errsz, "SSL_CTX_new: %s", ERR_reason_error_string(ERR_get_error()));
		return NULL;
	}
	if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1) {
		errfmt(err, errsz, "cannot require TLS 1.2: %s",
		       ERR_reason_error_string(ERR_get_error()));
		SSL_CTX_free(ctx);
		return NULL;
	}
	SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
	/* RFC 7435: opportunistic TLS takes any certificate; the result of
	 * the check against the system's CAs only goes to the log */
	SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
	if (SSL_CTX_set_default_verify_paths(ctx) != 1)
		ERR_clear_error();
	/* RFC 7671 verification, used per connection when TLSA records apply */
	if (SSL_CTX_dane_enable(ctx) <= 0) {
		errfmt(err, errsz, "cannot enable DANE: %s", ERR_reason_error_string(ERR_get_error()));
		SSL_CTX_free(ctx);
		return NULL;
	}
	return ctx;
}

/* login: the one login exchange of SMTP AUTH (RFC 4954), POP3 (RFC 1939
 * USER/PASS, RFC 5034 AUTH) and IMAP (RFC 3501 §6.2 LOGIN and
 * AUTHENTICATE): mechanism rules, SASL steps, password checks on a
 * worker, lockout, failure delay and the auth log line. */
#include "auth/login.h"

#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include <event2/event.h>
#include <openssl/crypto.h>

#include "auth/directory.h"
#include "auth/sasl.h"
#include "auth/sasl_gssapi.h"
#include "auth/throttle.h"
#include "conf/conf.h"
#include "lib/log.h"
#include "lib/metrics.h"
#include "lib/recent.h"
#include "lib/offload.h"
#include "lib/util.h"

enum { LOGIN_MECH_LABEL_MAX = 16 };

struct login {
	struct login_env env;
	login_done_fn done;
	void *owner;
	struct sasl_session *sasl;   /* an exchange under way */
	struct sasl_gssapi *gss;     /* a GSSAPI exchange under way (while a
				      * step runs on a worker: the job's) */
	bool final_sent;             /* sent the SCRAM server-final, awaiting "" */
	bool tls;                    /* the channel when the attempt began */
	char mech[LOGIN_MECH_LABEL_MAX]; /* of the current or last attempt */
	struct offload_job *check;   /* a password on a worker */
	struct directory_job *dirjob; /* users ldap: a password at the directory */
	struct sasl_check *dircheck; /* ... what it was asked */
	bool dir_sasl;               /* ... for a SASL exchange (not USER/LOGIN) */
	struct event *pause;         /* a failure's reply waits a while */
};

/* ---- what may be used now ------------------------------------------------ */

unsigned login_mechanisms(const struct conf_server *srv, bool tls_active)
{
	unsigned m = srv->auth.mechanisms;
	if (tls_active)
		return m;
	if (srv->tls.require)
		return 0;
	if (srv->auth.plaintext_requires_tls)
		m &= ~(unsigned)MECH_PASSWORD_BASED;
	return m;
}

bool login_password_allowed(const struct conf_server *srv, bool tls_active)
{
	return (login_mechanisms(srv, tls_active) & (MECH_PLAIN | MECH_LOGIN)) != 0;
}

bool login_password_needs_tls(const struct conf_server *srv, bool tls_active)
{
	return !tls_active && !login_password_allowed(srv, false) &&
	       login_password_allowed(srv, true);
}

/* ---- life ------------------------------------------------------------------ */

struct login *login_new(const struct login_env *env, login_done_fn done, void *owner)
{
	struct login *l = xcalloc(1, sizeof *l);
	l->env = *env;
	l->done = done;
	l->owner = owner;
	return l;
}

static void login_end_exchange(struct login *l)
{
	if (l->sasl)
		sasl_free(l->sasl);
	l->sasl = NULL;
	sasl_gssapi_free(l->gss);
	l->gss = NULL;
	l->final_sent = false;
}

void login_abort(struct login *l)
{
	if (l)
		login_end_exchange(l);
}

void login_free(struct login *l)
{
	if (!l)
		return;
	login_end_exchange(l);
	offload_cancel(l->check);
	directory_cancel(l->dirjob);
	sasl_check_free(l->dircheck);
	if (l->pause)
		event_free(l->pause);
	free(l);
}

bool login_in_exchange(const struct login *l)
{
	return l && (l->sasl != NULL || l->gss != NULL) && !l->check && !l->dirjob;
}

bool login_busy(const struct login *l)
{
	return l && (l->check != NULL || l->pause != NULL || l->dirjob != NULL);
}

const char *login_mechanism(const struct login *l)
{
	return l->mech;
}

/* ---- verdicts -------------------------------------------------------------- */

static void login_say(struct login *l, enum login_verdict_kind kind, const char *challenge,
		      const char *user, unsigned retry_after)
{
	struct login_verdict v = {
		.kind = kind, .challenge = challenge, .user = user, .retry_after = retry_after,
	};
	l->done(l->owner, &v);
}

static void login_log(const struct login *l, const char *result, const char *user)
{
	char esc[LOG_VALUE_MAX];
	log_escape(esc, sizeof esc, user ? user : "", user ? strlen(user) : 0);
	log_info("event=auth session=%s server=%s client=%s result=%s mechanism=%s user=%s tls=%s",
		 l->env.sid, l->env.srv->name, l->env.client, result, l->mech, esc,
		 l->tls ? "yes" : "no");
	/* result and mechanism are constants (login_begin) */
	metrics_count(METRIC_LOGINS, METRIC_LABELS(l->env.srv->name, l->mech, result));
}

/* Is the client's address locked out?  Then log it and say so. */
static bool login_locked_out(struct login *l)
{
	unsigned retry;
	struct throttle_rule rule = throttle_login_rule(l->env.srv);
	if (!throttle_locked(l->env.throttle, l->env.client, THROTTLE_LOGIN, &rule, time(NULL),
			     &retry))
		return false;
	log_info("event=auth session=%s server=%s client=%s result=locked retry_after=%us",
		 l->env.sid, l->env.srv->name, l->env.client, retry);
	metrics_count(METRIC_LOGINS, METRIC_LABELS(l->env.srv->name, l->mech, "locked"));
	login_say(l, LOGIN_LOCKED_OUT, NULL, NULL, retry);
	return true;
}

/* Count a failure against the client's address (which can lock it out)
 * and against the name tried (which only slows further attempts down: a
 * lockout per name would let anybody lock a user out).  Returns the delay
 * before the reply, in ms. */
static unsigned login_count_failure(struct login *l, const char *user)
{
	bool locked;
	struct throttle_rule rule = throttle_login_rule(l->env.srv);
	unsigned delay = throttle_login_failed(l->env.throttle, l->env.client, user, &rule,
					       time(NULL), &locked);
	if (locked) {
		log_warn("event=lockout session=%s server=%s client=%s duration=%us", l->env.sid,
			 l->env.srv->name, l->env.client, l->env.srv->auth.lockout_duration);
		metrics_count(METRIC_LOCKOUTS, METRIC_LABELS(l->env.srv->name, "login-failures"));
		recent_note("lockout", l->env.srv->name, "%s: failed logins, for %us", l->env.client,
			    l->env.srv->auth.lockout_duration);
	}
	return delay;
}

static void login_success(struct login *l, const char *address)
{
	char *user = xstrdup(address);
	login_log(l, "ok", user);
	struct throttle_rule rule = throttle_login_rule(l->env.srv);
	throttle_login_ok(l->env.throttle, l->env.client, user, &rule);
	login_end_exchange(l);
	login_say(l, LOGIN_OK, NULL, user, 0);
	free(user);
}

static void login_resume_after_delay(evutil_socket_t fd, short what, void *arg)
{
	struct login *l = arg;
	event_free(l->pause);
	l->pause = NULL;
	login_say(l, LOGIN_FAILED, NULL, NULL, 0);
}

/* Wrong credentials: the verdict comes after a delay that grows with the
 * failures from this address. */
static void login_failure(struct login *l, const char *user)
{
	login_log(l, "fail", user);
	unsigned delay = login_count_failure(l, user);
	login_end_exchange(l);
	if (delay == 0) {
		login_say(l, LOGIN_FAILED, NULL, NULL, 0);
		return;
	}
	struct timeval tv = {.tv_sec = delay / 1000, .tv_usec = (delay % 1000) * 1000};
	l->pause = evtimer_new(l->env.base, login_resume_after_delay, l);
	if (!l->pause || evtimer_add(l->pause, &tv) < 0) {
		/* no timer: answer at once rather than never */
		log_warn("event=auth-delay-error session=%s", l->env.sid);
		if (l->pause)
			event_free(l->pause);
		l->pause = NULL;
		login_say(l, LOGIN_FAILED, NULL, NULL, 0);
	}
}

/* The directory could not be asked: a temporary failure, neither counted
 * as a failed login nor answered as one (the directory logs why, once). */
static void login_unavailable(struct login *l, const char *user)
{
	login_log(l, "unavailable", user);
	login_end_exchange(l);
	login_say(l, LOGIN_UNAVAILABLE, NULL, NULL, 0);
}

/* ---- SASL ------------------------------------------------------------------- */

static void login_sasl_result(struct login *l, enum sasl_status st, const char *challenge)
{
	switch (st) {
	case SASL_CONTINUE:
		login_say(l, LOGIN_CHALLENGE, challenge, NULL, 0);
		break;
	case SASL_OK:
		if (challenge && *challenge) {
			/* RFC 4954 §4, RFC 5034 §4: the SCRAM server-final goes
			 * as a last challenge, answered by an empty line */
			l->final_sent = true;
			login_say(l, LOGIN_CHALLENGE, challenge, NULL, 0);
		} else {
			login_success(l, sasl_user(l->sasl));
		}
		break;
	case SASL_CANCELLED:
		login_end_exchange(l);
		login_say(l, LOGIN_CANCELLED, NULL, NULL, 0);
		break;
	case SASL_BAD_BASE64:
		login_log(l, "bad-base64", sasl_user(l->sasl));
		login_count_failure(l, sasl_user(l->sasl)); /* garbage is no free probe */
		login_end_exchange(l);
		login_say(l, LOGIN_BAD_RESPONSE, NULL, NULL, 0);
		break;
	case SASL_FAIL:
	case SASL_BAD_MESSAGE:
	case SASL_BAD_AUTHZID:
	case SASL_CHECK: /* never here */ {
		const char *u = sasl_user(l->sasl);
		char *user = u ? xstrdup(u) : NULL;
		login_failure(l, user);
		free(user);
		break;
	}
	}
}

/* A SASL PLAIN or LOGIN password checked on a worker. */
static void login_sasl_checked(void *owner, void *work)
{
	struct login *l = owner;
	struct sasl_check *c = work;
	l->check = NULL;
	enum sasl_status st = sasl_checked(l->sasl, c);
	sasl_check_free(c);
	login_sasl_result(l, st, NULL);
}

/* ---- users ldap: the password goes to the directory's bind ---------------- */

static void login_password_checked(void *owner, void *work);

static void login_directory_answer(void *owner, const struct directory_answer *a)
{
	struct login *l = owner;
	struct sasl_check *c = l->dircheck;
	l->dirjob = NULL;
	l->dircheck = NULL;
	if (a->status == DIRECTORY_UNAVAILABLE) {
		const char *u = sasl_check_user(c);
		char *user = u ? xstrdup(u) : NULL;
		sasl_check_free(c);
		login_unavailable(l, user);
		free(user);
		return;
	}
	sasl_check_set_result(c, a->status == DIRECTORY_FOUND ? a->mailbox : NULL);
	if (l->dir_sasl) {
		login_sasl_checked(l, c);
	} else {
		login_password_checked(l, c);
	}
}

/* Check c (taken over) at the directory; the answer may come at once. */
static void login_directory_check(struct login *l, struct sasl_check *c, bool sasl)
{
	size_t plen;
	const char *pass = sasl_check_password(c, &plen);
	const char *user = sasl_check_user(c);
	l->dircheck = c;
	l->dir_sasl = sasl;
	struct directory_job *j = directory_login(l->env.directory, user, user ? strlen(user) : 0,
						  pass, plen, login_directory_answer, l);
	if (j) /* NULL: answered already (and maybe a new exchange begun) */
		l->dirjob = j;
}

static void login_sasl_step(struct login *l, const char *in)
{
	char *challenge = NULL;
	enum sasl_status st = sasl_step(l->sasl, in, &challenge);
	if (st == SASL_CHECK && l->env.directory)
		login_directory_check(l, sasl_take_check(l->sasl), true);
	else if (st == SASL_CHECK)
		l->check = sasl_check_submit(sasl_take_check(l->sasl), login_sasl_checked, l);
	else
		login_sasl_result(l, st, challenge);
	free(challenge);
}

/* ---- GSSAPI (RFC 4752) ------------------------------------------------------- */

static void login_gssapi_stepped(void *owner, void *work);

/* The exchange goes to a worker with the client's response: every
 * GSS-API call may read the keytab or write the replay cache. */
static void login_gssapi_step(struct login *l, const char *response)
{
	struct sasl_gssapi *g = l->gss;
	l->gss = NULL;
	sasl_gssapi_set_response(g, response);
	l->check = sasl_gssapi_submit(g, login_gssapi_stepped, l);
}

/* Why a Kerberos login failed, beside the auth line (which names the
 * principal as its user). */
static void login_gssapi_log_reason(const struct login *l, const char *principal,
				    const char *reason)
{
	char p[LOG_VALUE_MAX], r[LOG_VALUE_MAX];
	log_escape(p, sizeof p, principal ? principal : "", principal ? strlen(principal) : 0);
	log_quote(r, sizeof r, reason, strlen(reason));
	log_info("event=auth-gssapi session=%s server=%s client=%s principal=%s reason=\"%s\"",
		 l->env.sid, l->env.srv->name, l->env.client, p, r);
}

/* Our side failed (the keytab, the replay cache): the operator's to fix. */
static void login_gssapi_log_error(const struct login *l)
{
	const char *reason = sasl_gssapi_reason(l->gss);
	char r[LOG_VALUE_MAX];
	log_quote(r, sizeof r, reason, strlen(reason));
	log_warn("event=gssapi-error session=%s server=%s reason=\"%s\"", l->env.sid,
		 l->env.srv->name, r);
}

/* The principal is user (NULL: nobody): any authorization identity must
 * be that user or the principal itself. */
static void login_gssapi_as(struct login *l, const char *principal, const char *user)
{
	const char *authzid = sasl_gssapi_authzid(l->gss);
	const char *why = NULL;
	if (!user)
		why = "the principal is no user of this server";
	else if (*authzid && !str_ieq(authzid, user) && strcmp(authzid, principal) != 0)
		why = "an authorization identity other than the user";
	if (why) {
		login_gssapi_log_reason(l, principal, why);
		login_failure(l, principal);
	} else {
		login_success(l, user);
	}
}

/* users ldap: the entry whose principal attribute names the principal. */
static void login_gssapi_directory_answer(void *owner, const struct directory_answer *a)
{
	struct login *l = owner;
	l->dirjob = NULL;
	char *principal = xstrdup(sasl_gssapi_principal(l->gss));
	if (a->status == DIRECTORY_UNAVAILABLE)
		login_unavailable(l, principal);
	else
		login_gssapi_as(l, principal, a->status == DIRECTORY_FOUND ? a->mailbox : NULL);
	free(principal);
}

/* The ticket was good: the principal must be of one of the realms and a
 * user — of the users file, or the directory entry that names it. */
static void login_gssapi_done(struct login *l)
{
	char *principal = xstrdup(sasl_gssapi_principal(l->gss));
	char *address = sasl_gssapi_principal_address(&l->env.srv->auth, principal);
	if (address && l->env.directory) {
		struct directory_job *j = directory_find_by_principal(
		    l->env.directory, principal, login_gssapi_directory_answer, l);
		if (j) /* NULL: answered already */
			l->dirjob = j;
	} else {
		login_gssapi_as(l, principal,
				address ? sasl_gssapi_principal_user(&l->env.srv->auth, l->env.users,
								     principal)
					: NULL);
	}
	free(address);
	free(principal);
}

static void login_gssapi_stepped(void *owner, void *work)
{
	struct login *l = owner;
	l->check = NULL;
	l->gss = work;
	const char *principal = sasl_gssapi_principal(l->gss);
	char *who = principal ? xstrdup(principal) : NULL;
	switch (sasl_gssapi_status(l->gss)) {
	case SASL_GSSAPI_CONTINUE:
		login_say(l, LOGIN_CHALLENGE, sasl_gssapi_challenge(l->gss), NULL, 0);
		break;
	case SASL_GSSAPI_DONE:
		login_gssapi_done(l);
		break;
	case SASL_GSSAPI_CANCELLED:
		login_end_exchange(l);
		login_say(l, LOGIN_CANCELLED, NULL, NULL, 0);
		break;
	case SASL_GSSAPI_BAD_BASE64:
		login_log(l, "bad-base64", who);
		login_count_failure(l, who); /* garbage is no free probe */
		login_end_exchange(l);
		login_say(l, LOGIN_BAD_RESPONSE, NULL, NULL, 0);
		break;
	case SASL_GSSAPI_REFUSED:
		login_gssapi_log_reason(l, who, sasl_gssapi_reason(l->gss));
		login_failure(l, who);
		break;
	case SASL_GSSAPI_SERVER_ERROR:
		/* not the client's fault: no failure counted against it */
		login_gssapi_log_error(l);
		login_log(l, "error", who);
		login_end_exchange(l);
		login_say(l, LOGIN_UNAVAILABLE, NULL, NULL, 0);
		break;
	}
	free(who);
}

static void login_gssapi_start(struct login *l, const char *initial)
{
	const struct conf_server *srv = l->env.srv;
	struct sasl_gssapi_setup setup = {
		.keytab = srv->auth.keytab,
		.replay_cache = srv->auth.replay_cache,
		.service = conf_gssapi_service(srv->protocol),
		.hostname = srv->hostname,
	};
	l->gss = sasl_gssapi_new(&setup);
	if (initial)
		login_gssapi_step(l, initial);
	else /* RFC 4422 §3.3: an empty challenge asks for the first token */
		login_say(l, LOGIN_CHALLENGE, "", NULL, 0);
}

static void login_begin(struct login *l, const char *label, bool tls_active)
{
	login_end_exchange(l);
	l->tls = tls_active;
	/* labels are constants: the mechanisms' names (SCRAM-SHA-256 the
	 * longest), "-", and the protocols' "USER" and "LOGIN" */
	xsnprintf(l->mech, sizeof l->mech, "%s", label);
}

void login_start(struct login *l, const char *mech, const char *initial, bool tls_active)
{
	unsigned bit = sasl_mech_from_name(mech);
	login_begin(l, bit ? sasl_mech_name(bit) : "-", tls_active);
	if (!bit || !(l->env.srv->auth.mechanisms & bit)) {
		login_say(l, LOGIN_UNKNOWN_MECHANISM, NULL, NULL, 0);
		return;
	}
	if (!(login_mechanisms(l->env.srv, tls_active) & bit)) {
		login_say(l, LOGIN_NEEDS_TLS, NULL, NULL, 0);
		return;
	}
	if (login_locked_out(l))
		return;
	if (bit == MECH_GSSAPI) {
		login_gssapi_start(l, initial);
		return;
	}
	l->sasl = sasl_start(bit, l->env.users);
	login_sasl_step(l, initial);
}

void login_response(struct login *l, const char *line, bool malformed)
{
	if (!l->sasl && !l->gss)
		return;
	if (malformed) {
		login_end_exchange(l);
		login_say(l, LOGIN_BAD_RESPONSE, NULL, NULL, 0);
		return;
	}
	if (l->gss) {
		login_gssapi_step(l, line);
		return;
	}
	if (l->final_sent) {
		/* the client acknowledges the server-final message */
		if (*line == '\0') {
			login_success(l, sasl_user(l->sasl));
		} else {
			login_end_exchange(l);
			login_say(l, LOGIN_CANCELLED, NULL, NULL, 0);
		}
		return;
	}
	login_sasl_step(l, line);
}

/* ---- a protocol's own password command ------------------------------------ */

static void login_password_checked(void *owner, void *work)
{
	struct login *l = owner;
	struct sasl_check *c = work;
	l->check = NULL;
	const char *address = sasl_check_address(c);
	if (address)
		login_success(l, address);
	else
		login_failure(l, sasl_check_user(c));
	sasl_check_free(c);
}

void login_password(struct login *l, const char *label, const char *user, size_t ulen,
		    char *pass, size_t plen, bool tls_active)
{
	login_begin(l, label, tls_active);
	if (login_locked_out(l)) {
		OPENSSL_cleanse(pass, plen);
		return;
	}
	struct sasl_check *c = sasl_check_new(l->env.users, user, ulen, pass, plen);
	OPENSSL_cleanse(pass, plen);
	if (l->env.directory && user && strnlen(user, ulen) == ulen) {
		login_directory_check(l, c, false);
	} else if (l->env.directory) { /* a NUL in the name: nobody's */
		sasl_check_set_result(c, NULL);
		login_password_checked(l, c);
	} else
		l->check = sasl_check_submit(c, login_password_checked, l);
}

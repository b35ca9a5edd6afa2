/* login: the one login exchange of the three protocols — SMTP AUTH
 * (RFC 4954), POP3 USER/PASS and AUTH (RFC 1939, RFC 5034), IMAP LOGIN
 * and AUTHENTICATE (RFC 3501 §6.2).  It decides which mechanisms may be
 * used on the channel as it is, runs the SASL steps (sasl.h), checks
 * passwords on a worker, applies the lockout and the failure delay, and
 * writes the auth log line.  A protocol only frames the challenges and
 * renders each verdict as its own reply. */
#ifndef POSTHORN_LOGIN_H
#define POSTHORN_LOGIN_H

#include <stdbool.h>
#include <stddef.h>

struct conf_server;
struct userdb;
struct directory;
struct throttle;
struct event_base;

/* The mechanisms (enum conf_mech bits) a client may use now: none before
 * TLS where the server requires a secure channel; the password-based ones
 * (MECH_PASSWORD_BASED: PLAIN, LOGIN and SCRAM-SHA-256, whose exchange an
 * eavesdropper can test guesses against) only inside TLS where
 * `plaintext-requires-tls` is set.  Only a mechanism that sends nothing
 * derived from a password could run before TLS there. */
unsigned login_mechanisms(const struct conf_server *srv, bool tls_active);
/* May a password travel in a protocol's own command (POP3 USER/PASS,
 * IMAP LOGIN) now?  Exactly when a plaintext mechanism may be used. */
bool login_password_allowed(const struct conf_server *srv, bool tls_active);
/* Would the password command be allowed inside TLS (so that the refusal
 * can say "use STARTTLS" rather than "disabled")? */
bool login_password_needs_tls(const struct conf_server *srv, bool tls_active);

/* Who is logging in where: for the log, the throttle's keys and the user
 * database.  The strings and objects must outlive the login. */
struct login_env {
	const char *sid;             /* the session id */
	const struct conf_server *srv;
	const char *client;          /* the client's address text */
	const struct userdb *users;
	struct directory *directory; /* users ldap: passwords checked by its bind */
	struct throttle *throttle;
	struct event_base *base;     /* for the failure delay's timer */
};

enum login_verdict_kind {
	LOGIN_CHALLENGE,         /* send .challenge (base64, "" when empty) as the
				  * protocol's continuation; the client's answer
				  * goes to login_response() */
	LOGIN_OK,                /* authenticated as .user */
	LOGIN_FAILED,            /* wrong credentials (after the delay) */
	LOGIN_CANCELLED,         /* the client said "*" or refused the server's
				  * last message */
	LOGIN_BAD_RESPONSE,      /* not base64, a NUL, a bare CR: counted as a
				  * failure, answered at once */
	LOGIN_UNKNOWN_MECHANISM, /* not one this server offers */
	LOGIN_NEEDS_TLS,         /* this mechanism only inside TLS */
	LOGIN_LOCKED_OUT,        /* too many failures from this address: the
				  * protocol says so (.retry_after seconds) and
				  * ends the session */
	LOGIN_UNAVAILABLE,       /* the server cannot check now (the directory
				  * cannot be asked, a keytab it cannot read):
				  * a temporary failure, never "wrong password",
				  * not counted against the client */
};

struct login_verdict {
	enum login_verdict_kind kind;
	const char *challenge;       /* LOGIN_CHALLENGE */
	const char *user;            /* LOGIN_OK: the user's address */
	unsigned retry_after;        /* LOGIN_LOCKED_OUT */
};

/* Called with every verdict, at once or later from the loop (a password
 * check on a worker, the failure delay); v lives only during the call. */
typedef void (*login_done_fn)(void *owner, const struct login_verdict *v);

struct login;

struct login *login_new(const struct login_env *env, login_done_fn done, void *owner);
/* Ends whatever is under way; no verdict follows. */
void login_free(struct login *l);

/* A SASL exchange: mech is the client's mechanism name, initial its
 * initial response (NULL for none, "=" for an empty one). */
void login_start(struct login *l, const char *mech, const char *initial, bool tls_active);
/* The client's answer to a challenge, NUL-terminated; malformed when the
 * line reader saw a NUL or a bare CR in it (then it is not looked at). */
void login_response(struct login *l, const char *line, bool malformed);
/* A protocol's own password command (POP3 PASS, IMAP LOGIN): label names
 * it in the log ("USER", "LOGIN").  pass is wiped. */
void login_password(struct login *l, const char *label, const char *user, size_t ulen,
		    char *pass, size_t plen, bool tls_active);
/* The session ends an exchange itself (its line was too long): the
 * exchange is over, no verdict follows. */
void login_abort(struct login *l);

/* These three take NULL (no login made yet) as nothing under way. */
/* Waiting for the client's answer to a challenge? */
bool login_in_exchange(const struct login *l);
/* A password check or the failure delay under way: the session reads no
 * further command until the verdict. */
bool login_busy(const struct login *l);
/* The mechanism of the last exchange as logged ("PLAIN", "USER", ...). */
const char *login_mechanism(const struct login *l);

#endif

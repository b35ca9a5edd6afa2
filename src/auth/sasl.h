/* sasl: the server side of SASL (RFC 4422), independent of the protocol:
 * PLAIN (RFC 4616), LOGIN, SCRAM-SHA-256 (RFC 5802, RFC 7677).  SMTP,
 * POP3 and IMAP only frame the base64 challenges and responses. */
#ifndef POSTHORN_SASL_H
#define POSTHORN_SASL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "conf/conf.h"
#include "lib/offload.h"

struct userdb;

enum sasl_status {
	SASL_CONTINUE,          /* send *challenge (base64) and wait */
	SASL_OK,                /* authenticated: sasl_user(); for SCRAM a final
				 * server message may be in *challenge (send it
				 * as the success data / last challenge) */
	SASL_FAIL,              /* bad credentials (535 5.7.8 in SMTP) */
	SASL_CANCELLED,         /* the client sent "*" (501 5.7.0) */
	SASL_BAD_BASE64,        /* (501 5.5.2) */
	SASL_BAD_MESSAGE,       /* malformed exchange (501 5.5.2 / 535) */
	SASL_BAD_AUTHZID,       /* authorization identity is not the user (535) */
	SASL_CHECK,             /* PLAIN, LOGIN: the password is to be checked:
				 * sasl_take_check(), run it, sasl_checked() */
};

/* The mechanism bit (enum conf_mech) of a name, case-insensitive; 0 if
 * unknown. */
unsigned sasl_mech_from_name(const char *name);
/* "PLAIN", "LOGIN", "SCRAM-SHA-256"; NULL unless mech is one known bit. */
const char *sasl_mech_name(unsigned mech);
/* Does the mechanism send the password itself (PLAIN, LOGIN)? */
bool sasl_mech_is_plaintext(unsigned mech);
/* Space-separated names of the bits in mechs, strongest first, into out. */
void sasl_mech_list(unsigned mechs, char *out, size_t outsz);

/* The largest token (decoded) of a mechanism that carries binary tokens
 * (GSSAPI): what the protocols' longest SASL line (LINE_MAX_AUTH, 12288
 * octets of base64) can hold. */
enum { SASL_TOKEN_MAX = 9216 };
/* base64 of len bytes (at most SASL_TOKEN_MAX), NUL-terminated, the
 * caller's to free. */
char *sasl_token_encode(const void *in, size_t len);
/* Canonical base64 (RFC 4648 §4; "=" is empty, RFC 4954 §4) into a new
 * NUL-terminated buffer of *outlen bytes the caller frees: SASL_OK,
 * SASL_BAD_BASE64, or SASL_BAD_MESSAGE when it decodes to more than
 * SASL_TOKEN_MAX bytes. */
enum sasl_status sasl_token_decode(const char *in, uint8_t **out, size_t *outlen);

struct sasl_session;

/* Start an exchange.  db is used to look users up and must outlive the
 * session.  NULL when mech is not exactly one known mechanism bit, or is
 * GSSAPI (sasl_gssapi.h). */
struct sasl_session *sasl_start(unsigned mech, const struct userdb *db);

/* One step.  in is the client's base64 text (NUL-terminated; "" for an
 * empty response, "=" for an empty initial response per RFC 4954; NULL at
 * the start when there was no initial response).  On SASL_CONTINUE (and
 * possibly SASL_OK) *challenge is set to base64 text the caller frees; it
 * is "" for an empty challenge; with any other status it is NULL.  After
 * any status but SASL_CONTINUE the exchange is over and further steps
 * return SASL_BAD_MESSAGE.  Secrets are wiped; nothing is logged. */
enum sasl_status sasl_step(struct sasl_session *s, const char *in, char **challenge);

/* ---- password checks ----------------------------------------------------
 * The PBKDF2 behind a password costs milliseconds of CPU, so the protocols
 * run it on a worker (offload.h), never on the event loop: PLAIN, LOGIN,
 * POP3's PASS and IMAP's LOGIN.  An unknown user costs the same derivation
 * against a dummy record, with the iteration count of a real user picked by
 * the name, so the time taken does not tell who exists. */
struct sasl_check;

/* What the check needs, copied (the users may be reloaded meanwhile).
 * user is the name tried, ulen bytes; a name with a NUL in it (or NULL) is
 * nobody's and is checked against the dummy. */
struct sasl_check *sasl_check_new(const struct userdb *db, const char *user, size_t ulen,
				  const char *pass, size_t len);
/* The derivation and a constant-time compare; on any thread
 * (an offload_run_fn). */
void sasl_check_run(void *check);
/* After the run: the user's address when the password was right, else
 * NULL. */
const char *sasl_check_address(const struct sasl_check *c);
/* The name tried, up to a NUL in it (untrusted: escape it); NULL if none. */
const char *sasl_check_user(const struct sasl_check *c);
/* The PBKDF2 iterations the check spends (an unknown user's: those of the
 * record its name is disguised as); 0 when it fails at once. */
unsigned sasl_check_iterations(const struct sasl_check *c);
/* Instead of sasl_check_run(), for a password checked elsewhere (a
 * directory's bind): the password as given (len bytes), and the verdict,
 * address when it was right (NULL: wrong). */
const char *sasl_check_password(const struct sasl_check *c, size_t *len);
void sasl_check_set_result(struct sasl_check *c, const char *address);
/* Wipes the password and the keys (an offload_free_fn). */
void sasl_check_free(void *check);
/* The check run on a password worker: done(owner, check) comes back on the
 * loop's thread, which from then on owns the check.  The job is for
 * offload_cancel() when the owner goes first. */
struct offload_job *sasl_check_submit(struct sasl_check *c, offload_done_fn done, void *owner);

/* After SASL_CHECK: the check to run, the session's own (the caller frees
 * it); once it has run, sasl_checked() ends the exchange with SASL_OK or
 * SASL_FAIL. */
struct sasl_check *sasl_take_check(struct sasl_session *s);
enum sasl_status sasl_checked(struct sasl_session *s, const struct sasl_check *c);

/* For tests: use nonce (printable, no ',') as the SCRAM server nonce
 * instead of CSPRNG bytes; NULL restores the CSPRNG.  Never in the daemon. */
void sasl_test_set_nonce(const char *nonce);

/* The authenticated user (the user record's address) after SASL_OK, else
 * the attempted name for logging (untrusted bytes: escape them); may be
 * NULL. */
const char *sasl_user(const struct sasl_session *s);
void sasl_free(struct sasl_session *s);

#endif

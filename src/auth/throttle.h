/* throttle: what each client did wrong lately, in one table bounded in
 * size and shared by every protocol and virtual server: failed logins
 * (the lockout and the failure delay of SMTP AUTH, POP3 and IMAP) and
 * unknown recipients (SMTP's brake on address harvesting).  Each kind has
 * its own count, window and lock.  An IPv4 client is counted per address;
 * an IPv6 client per network of a configured prefix length, since one
 * host commonly has a whole /64 to take addresses from (RFC 4291 §2.5.1,
 * RFC 4941). */
#ifndef POSTHORN_THROTTLE_H
#define POSTHORN_THROTTLE_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

struct conf_server;

enum throttle_kind {
	THROTTLE_LOGIN,         /* a failed login */
	THROTTLE_RECIPIENT,     /* an unknown local recipient */
};
enum { THROTTLE_KINDS = 2 };

/* When a kind locks a client out, and how clients are told apart. */
struct throttle_rule {
	unsigned limit;         /* events within window that lock; 0: never */
	unsigned window;        /* seconds, from the first event counted */
	unsigned duration;      /* seconds locked */
	unsigned ipv6_prefix;   /* leading bits that name an IPv6 client;
				 * 0 or 128: each address on its own */
};

/* `auth { lockout ... }` and `lockout-ipv6-prefix` of srv. */
struct throttle_rule throttle_login_rule(const struct conf_server *srv);
/* `limits { unknown-recipients ... }` of srv, with the same prefix. */
struct throttle_rule throttle_recipient_rule(const struct conf_server *srv);

struct throttle;
/* At most max_entries clients (and user names) are remembered; when the
 * table is full the one with the oldest activity is forgotten. */
struct throttle *throttle_new(size_t max_entries);
void throttle_free(struct throttle *t);

/* who is a client's numeric address text (counted as rule->ipv6_prefix
 * says) or any other key, such as "user:NAME", taken as it is (its first
 * 255 bytes). */

/* Is who locked out for this kind now?  *retry_after = seconds left. */
bool throttle_locked(struct throttle *t, const char *who, enum throttle_kind kind,
		     const struct throttle_rule *rule, time_t now, unsigned *retry_after);
/* Count one event; true when it starts a lockout (events while locked
 * neither extend the lock nor start another). */
bool throttle_count(struct throttle *t, const char *who, enum throttle_kind kind,
		    const struct throttle_rule *rule, time_t now);
/* Forget who's events of this kind. */
void throttle_clear(struct throttle *t, const char *who, enum throttle_kind kind,
		    const struct throttle_rule *rule);
/* How long to delay the reply to a failed login (grows with who's failed
 * logins): nothing for the first, then 250 ms per failure, at most 3 s. */
unsigned throttle_delay_ms(struct throttle *t, const char *who, const struct throttle_rule *rule);
/* For tests and fuzzing: the delay per failure instead of 250 ms (0: no
 * delay, so that a session's replies never wait on a timer).  Never in the
 * daemon. */
void throttle_test_set_delay_step(unsigned ms);

/* A failed login of every protocol: counted against the client (which can
 * lock it out: *locked_out is then set) and against the user name tried,
 * key "user:NAME" (which only slows further attempts — a lockout per name
 * would let anybody lock a user out).  user may be NULL.  Returns the
 * delay before the reply, in ms. */
unsigned throttle_login_failed(struct throttle *t, const char *client, const char *user,
			       const struct throttle_rule *rule, time_t now, bool *locked_out);
/* A successful login clears the failed logins of the client and the user. */
void throttle_login_ok(struct throttle *t, const char *client, const char *user,
		       const struct throttle_rule *rule);

#endif

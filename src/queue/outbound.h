/* outbound: the remote delivery agent, outbound delivery of mail for
 * domains that are not local: a queue runner on the event loop that groups
 * recipients per destination domain, finds the MX hosts through dns.c (RFC
 * 5321 §5.1, RFC 7505 null MX), talks SMTP to them (EHLO/HELO,
 * opportunistic or required STARTTLS, PIPELINING), or sends everything
 * through the configured smarthost (with AUTH over TLS); retries on the
 * `outbound.retry` schedule, and bounces (RFC 3464 DSN, bounce.c) after a
 * 5xx or after `outbound.lifetime`.  It knows no other agent: a bounce it
 * spools is reported to whoever started it (queue/scheduler.c). */
#ifndef POSTHORN_OUTBOUND_H
#define POSTHORN_OUTBOUND_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

struct event_base;
struct spool;
struct conf_outbound;

/* A bounce (a new message, ID id) is on stable storage and waits to be
 * delivered.  Called on the loop. */
typedef void (*outbound_spooled_fn)(const char *id);

/* Start the runner on the loop; spooled (or NULL) hears of every bounce
 * committed, also of one whose commit ends after outbound_stop().
 * Configuration (outbound block, DNS resolvers, hostname, local domains) is
 * read from runtime_current() at each attempt, so a reload takes effect at
 * the next attempt. */
int outbound_start(struct event_base *base, struct spool *sp, outbound_spooled_fn spooled);
/* Stop: attempts in flight are abandoned (their recipients stay pending in
 * the spool and are tried again at the next start). */
void outbound_stop(void);

/* A spooled message has remote recipients not yet done: take it.  Loop
 * thread only.  Unknown or already known IDs are fine. */
void outbound_enqueue(const char *id);

/* The same from another thread (the delivery worker's): the ID is queued
 * and the loop woken (lib/waker.h), which then calls outbound_enqueue().
 * Thread-safe; dropped when the runner is stopped (the message waits in
 * the spool for the next start). */
void outbound_handoff(const char *id);

/* The queue as `posthorn queue list` shows it. */
struct outbound_entry {
	char id[32];
	time_t arrival;
	long long size;
	const char *sender;           /* "" for <> */
	const char *const *pending;   /* recipients not yet done */
	size_t npending;
	time_t next_attempt;          /* 0: now / in progress */
	unsigned attempts;
	const char *last_error;       /* NULL before the first attempt */
};
/* Calls fn for each queued message (remote part); loop thread only. */
void outbound_each(void (*fn)(void *arg, const struct outbound_entry *e), void *arg);
/* Retry every deferred message now; returns how many were waiting. */
size_t outbound_flush(void);
/* Remove a message from the queue and the spool without bouncing it.
 * 0, or -1 when there is no such message. */
int outbound_delete(const char *id);

/* ---- exposed for the unit tests ---------------------------------------- */

enum {
	OUTBOUND_MAX_RECEIVED = 50,     /* more Received: headers than this: a mail loop */
	OUTBOUND_RETRY_MIN = 1,         /* seconds: the floor of every retry step */
};

/* Seconds until the next attempt after `attempts` failed ones (1 or more):
 * the retry schedule with its last step repeating, but never past the end
 * of the lifetime (one last attempt then), and at least OUTBOUND_RETRY_MIN. */
unsigned outbound_retry_delay(const struct conf_outbound *o, unsigned attempts, time_t arrival,
			      time_t now);
/* Received: header fields in a message header (CRLF or LF lines), up to
 * the first empty line; folded continuation lines are not counted. */
size_t outbound_count_received(const char *header, size_t len);
/* Does the header (up to its empty line) say "TLS-Required: No"? */
bool outbound_tls_optional(const char *header, size_t len);
/* Does the header (up to its empty line) have a TLS-Report-Domain field? */
bool outbound_is_tls_report(const char *header, size_t len);

#endif

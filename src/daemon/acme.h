/* acme: the daemon's ACME client (RFC 8555) for the acme block of
 * posthorn.conf(5) — gets and renews the certificate that
 * "certificate acme" serves, answers the CA's http-01 challenges
 * (RFC 8555 §8.3) on its own listener, and has the new certificate taken
 * into use by a reload (no connection is dropped).
 *
 * The HTTPS requests to the CA run on one worker thread at a time, with
 * libcurl's blocking interface and bounded timeouts; the event loop only
 * schedules attempts, serves the challenge listener (libevent's evhttp)
 * and takes the result.  Files in SPOOL/acme/: account.key (0600),
 * certificate.pem (0600: the certificate's key, then the chain, leaf
 * first; one file, so that one rename replaces both), status (the last
 * attempt, read by `posthorn cert status`). */
#ifndef POSTHORN_ACME_H
#define POSTHORN_ACME_H

#include <stddef.h>

struct event_base;
struct conf;

/* Renew at two thirds of the lifetime; after a failed attempt wait
 * ACME_RETRY_MIN_S, doubled after each further failure up to
 * ACME_RETRY_MAX_S.  An expiry within ACME_WARN_DAYS is a warning once a
 * day. */
enum {
	ACME_RETRY_MIN_S = 10,
	ACME_RETRY_MAX_S = 6 * 3600,
	ACME_WARN_DAYS = 7,
};

/* With conf's acme block (nothing without one): create SPOOL/acme, bind
 * the http-01 listener (before privileges go) and plan the first attempt.
 * reload() is called on the loop when a new certificate is in place.
 * 0, or -1 after logging why. */
int acme_start(struct event_base *base, const struct conf *conf, void (*reload)(void));

/* A reload: the names, directory, contact and CA of conf take effect for
 * the next attempt (the challenge listener's address only at restart). */
void acme_reconfigure(const struct conf *conf);

/* Shutdown: abandon an attempt under way (its worker stops within a
 * second) and close the listener. */
void acme_stop(void);

/* The delay in seconds before the next attempt for the certificate at
 * cert_path and the wanted names, at time now: 0 when there is none,
 * it does not cover every name, or two thirds of its lifetime have
 * passed.  *not_after is its expiry (0 without one). */
long acme_renew_delay(const char *cert_path, const char *const *names, size_t nnames,
		      long now, long *not_after);

/* The wait after the failures-th failed attempt in a row (failures >= 1). */
long acme_retry_delay(unsigned failures);

#endif

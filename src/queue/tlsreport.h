/* tlsreport: SMTP TLS reporting (RFC 8460) in the daemon — the outcome of
 * every outbound session counted per UTC day and policy domain
 * (tlsstats.h), kept in SPOOL/tlsrpt/counts (written on a worker thread,
 * replaced whole), and once a day, or when `posthorn queue tls-report`
 * asks, a report to each address of the domain's "_smtp._tls" record: by
 * mail, spooled from the postmaster of the first local domain (and
 * DKIM-signed on its way out when a key exists), or by HTTPS POST. */
#ifndef POSTHORN_TLSREPORT_H
#define POSTHORN_TLSREPORT_H

#include <stdbool.h>
#include <stddef.h>

#include "queue/tlsstats.h"

struct event_base;
struct spool;

enum {
	TLSREPORT_TRIES_MAX = 3,        /* reports of one day and domain that could not go */
	TLSREPORT_RETRY_S = 3600,       /* seconds before such a report is tried again */
	TLSREPORT_POST_TIMEOUT_S = 30,  /* an https rua's POST, connection included */
};

/* A report message on stable storage: deliver it (called on the loop). */
typedef void (*tlsreport_spooled_fn)(const char *id);

/* Load SPOOL/tlsrpt/counts and arm the daily timer.  0, or -1 with errno
 * (the folder cannot be made).  A damaged file is logged; what it held
 * before the damage is kept. */
int tlsreport_start(struct event_base *base, struct spool *sp, tlsreport_spooled_fn spooled);
/* Abandon reports being sent (their counts stay for the next start) and
 * write the counts (shutdown: this blocks). */
void tlsreport_stop(void);

/* One outbound session's TLS outcome; nothing when reports are off
 * (`outbound { tls-reports no }`) or the runner is stopped.  Loop thread. */
void tlsreport_count(const struct tlsstats_session *s);

/* Are reports on (running, and `tls-reports` in the configuration)? */
bool tlsreport_enabled(void);

/* Send the reports of every day counted, today's so far included (the
 * control socket's TLSREPORT); the number of reports started. */
size_t tlsreport_send_now(void);

#endif

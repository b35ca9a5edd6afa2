/* smtp_verify: the checks of a server's `verify` block on one inbound
 * transaction: SPF at MAIL FROM (RFC 7208), the header section held
 * until its end so that Authentication-Results fields claiming our
 * authserv-id are removed (RFC 8601 §5) and the From domain is known —
 * with DKIM (RFC 6376) or ARC (RFC 8617) the whole message, held until the
 * end of data — then DKIM, ARC, DMARC (RFC 7489) with SPF and DKIM
 * alignment, and our own Authentication-Results field on top.  Lookups
 * run on the event loop; the session waits, the loop never does. */
#ifndef POSTHORN_SMTP_VERIFY_H
#define POSTHORN_SMTP_VERIFY_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#include "mailauth/dmarc.h"
#include "mailauth/spf_record.h"

struct conf_server;
struct dns_resolver;
struct smtp_verify;

/* The header section is held in memory up to this size; a message with a
 * larger one is refused (552) where verification is on. */
enum { SMTP_VERIFY_HEADER_MAX = 256 * 1024 };
/* With `dkim yes` the whole message is held, up to this size (and one
 * line more); a larger one is not verified (dkim=neutral, "message too
 * large to verify"): its checks run when the bound is crossed and the
 * rest goes to the spool as it comes. */
enum { SMTP_VERIFY_HOLD_MAX = 4 * 1024 * 1024 };
/* What all transactions hold of message bodies for DKIM together: past it
 * a message is not verified either (dkim=neutral, "too much held for
 * verification"), so that many slow senders cannot make the daemon hold
 * SMTP_VERIFY_HOLD_MAX each. */
enum { SMTP_VERIFY_HOLD_TOTAL = 256 * 1024 * 1024 };

typedef void (*smtp_verify_cb)(void *arg);

/* checks: run srv's `verify` checks (an anonymous client); else, and on
 * servers without the block, the header section is only cleaned of
 * Authentication-Results fields naming a verifying server's host name
 * (RFC 8601 §5: nobody else may speak for them).  NULL when no server of
 * conf verifies.  sid, client: the session's id and client address, for
 * the log. */
struct conf;
struct smtp_verify *smtp_verify_new(const struct conf_server *srv, const struct conf *conf,
				    struct dns_resolver *dns, const char *sid, const char *client,
				    bool checks);
/* Cancels any lookup in flight: its callback never runs. */
void smtp_verify_free(struct smtp_verify *v);

/* MAIL FROM accepted: start SPF (sender "" for <>).  true: cb(arg) runs
 * once the result is in; false: nothing to wait for (the result, if any,
 * is in already).  cb never runs before this returns. */
bool smtp_verify_mail(struct smtp_verify *v, const struct sockaddr_storage *client,
		      const char *sender, const char *helo, smtp_verify_cb cb, void *arg);

/* One line of message text (without CRLF): true when v took it (the
 * header section and the line that ends it — with DKIM the body too, up
 * to SMTP_VERIFY_HOLD_MAX — are held until smtp_verify_header_end());
 * false once that ran: the line is the caller's to store. */
bool smtp_verify_header_line(struct smtp_verify *v, const char *text, size_t len);
/* Has smtp_verify_header_end() run? */
bool smtp_verify_header_handled(const struct smtp_verify *v);
/* Must the checks run now, before the end of data: the header section
 * is over (with DKIM: the message is over SMTP_VERIFY_HOLD_MAX) and
 * smtp_verify_header_end() has not run? */
bool smtp_verify_header_done(const struct smtp_verify *v);
/* The header section is over (with DKIM: the message; or the message
 * ended inside its header): find the From domain, run DKIM, then DMARC.
 * true: cb(arg) runs when the results are in; false: nothing to wait
 * for.  cb never runs before this returns. */
bool smtp_verify_header_end(struct smtp_verify *v, smtp_verify_cb cb, void *arg);
/* What goes into the spool in place of the held header section: our
 * Authentication-Results field, then the held fields but those claiming
 * our authserv-id.  *len bytes at the pointer, owned by v. */
const char *smtp_verify_header_out(struct smtp_verify *v, size_t *len);
/* What was held after the header section (the empty line, with DKIM the
 * body), to be stored after smtp_verify_header_out().  Owned by v. */
const char *smtp_verify_rest_out(struct smtp_verify *v, size_t *len);
/* The header section was over SMTP_VERIFY_HEADER_MAX. */
bool smtp_verify_header_too_big(const struct smtp_verify *v);

/* Where DKIM (and ARC) keys come from: DNS, through the resolver given to
 * smtp_verify_new(), unless a tool or a fuzz target gives its own
 * (mailauth/dkim_verify.h; copied). */
struct dkim_key_source;
void smtp_verify_set_key_source(struct smtp_verify *v, const struct dkim_key_source *src);

/* The DKIM verifier's per-signature results (mailauth/authres.h), copied:
 * they go into the Authentication-Results field, and the d= of those that
 * passed into the DMARC decision.  The DKIM stage of
 * smtp_verify_header_end() gives them; a test may too. */
struct authres_dkim;
void smtp_verify_set_dkim(struct smtp_verify *v, const struct authres_dkim *r, size_t n);

/* The verdict, for the end of data and the log. */
struct smtp_verify_result {
	bool spf_checked;
	enum spf_result spf;
	bool dmarc_checked;
	bool dmarc_enforce;     /* dmarc enforce: the disposition is acted upon */
	struct dmarc_verdict dmarc;
	const char *from_domain; /* "" when none */
};
void smtp_verify_result(const struct smtp_verify *v, struct smtp_verify_result *out);

#endif

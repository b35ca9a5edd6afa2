/* autoreply: the out-of-office reply (RFC 3834, RFC 5230 §4-5) — whether
 * a message delivered to a user whose vacation setting is on gets one, the
 * reply's text, and its spooling with the null sender like a bounce
 * (queue/bounce.h), so that it is delivered like any other mail.  The
 * decision and the text are made on the delivery worker's thread; only
 * the spooling runs on the loop. */
#ifndef POSTHORN_AUTOREPLY_H
#define POSTHORN_AUTOREPLY_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include <time.h>

#include "queue/spool.h"

struct conf;
struct aliases;
struct userdb;

enum {
	AUTOREPLY_HEADER_MAX = 64 * 1024,  /* of the original's header, read */
	AUTOREPLY_FIELD_MAX = 8 * 1024,    /* of one field kept (References...) */
};

/* What the decision and the reply need of the original's header. */
struct autoreply_header {
	char *message_id;       /* Message-ID, unfolded; NULL: none */
	char *references;       /* References, unfolded; NULL: none */
	char *subject;          /* Subject, unfolded; NULL: none */
	char *recipients;       /* To, Cc, Resent-To, Resent-Cc, Bcc values joined by ',' */
	bool list;              /* List-Id or another List-* field (RFC 2369, RFC 2919) */
	bool bulk;              /* Precedence: bulk, list or junk */
	bool auto_submitted;    /* Auto-Submitted other than "no" (RFC 3834 §5) */
};

/* Read the header at the start of data (up to the empty line, or all of
 * data): fields unfolded, each kept to AUTOREPLY_FIELD_MAX bytes (a
 * longer one is dropped, not cut).  Untrusted bytes: never fails. */
void autoreply_header_parse(const char *data, size_t len, struct autoreply_header *h);
void autoreply_header_clear(struct autoreply_header *h);

/* Why this message gets no reply (RFC 3834 §2, RFC 5230 §4.5), or NULL
 * when it may get one: sender is the envelope sender; the user's
 * addresses (final and as given at RCPT) must be among the recipients of
 * the header. */
const char *autoreply_refusal(const char *sender, const char *const *addresses, size_t naddr,
			      const struct autoreply_header *h);

/* The reply. */
struct autoreply_msg {
	const char *from;       /* the user's address */
	const char *to;         /* the original's envelope sender */
	const char *subject;    /* the setting's, or NULL: "Auto: " + the original's */
	const char *text;       /* the setting's message, LF or CRLF line ends */
	const char *message_id; /* of the reply, "<...>" */
	time_t now;
	const struct autoreply_header *orig;
};
/* The reply with CRLF line ends (caller frees; *len its length):
 * Auto-Submitted: auto-replied, In-Reply-To and References to the
 * original (RFC 3834 §3.1). */
char *autoreply_compose(const struct autoreply_msg *m, size_t *len);

/* The worker's step after a copy of the message in fd (offset, size: the
 * message part) was delivered to address (orig: as given at RCPT, or
 * NULL) under mailboxes, from sender: when the user's setting is in force
 * and the rules allow, note the sender and return the reply (caller
 * frees; *len its length), else NULL.  Logs its decision. */
char *autoreply_consider(const char *mailboxes, const char *id, const char *address,
			 const char *orig, const char *sender, int fd, off_t offset, off_t size,
			 time_t now, size_t *len);

/* Spool a reply for to (the original's sender): envelope sender <>; a
 * local to through the aliases, one that is no user nor alias gets none.
 * Then cb(arg, err) as spool_msg_commit() promises, the new ID in id_out.
 * -1 with errno when nothing was started (cb will not run). */
int autoreply_spool(struct spool *sp, const struct conf *conf, const struct aliases *al,
		    const struct userdb *users, const char *to, const char *text, size_t len,
		    spool_commit_cb cb, void *arg, char id_out[SPOOL_ID_SIZE]);

#endif

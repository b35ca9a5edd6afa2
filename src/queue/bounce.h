/* bounce: delivery status notifications for mail that cannot be delivered
 * (RFC 3464 message/delivery-status inside RFC 6522 multipart/report, RFC
 * 3463 status codes, the original header as text/rfc822-headers), spooled
 * like any message with the null sender <> so that a bounce never bounces
 * (RFC 5321 §4.5.5). */
#ifndef POSTHORN_BOUNCE_H
#define POSTHORN_BOUNCE_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include <time.h>

#include "queue/spool.h"

struct conf;
struct aliases;
struct userdb;

enum {
	BOUNCE_HEADERS_MAX = 64 * 1024, /* of the original message's header, returned */
};

/* One recipient that failed. */
struct bounce_rcpt {
	const char *address;    /* final recipient */
	const char *orig;       /* as given at RCPT, or NULL */
	const char *status;     /* RFC 3463, class 5: "5.1.1" */
	const char *diagnostic; /* the remote reply, or what went wrong here */
	bool smtp_reply;        /* diagnostic is an SMTP reply (Diagnostic-Code: smtp;) */
	const char *remote_mta; /* the host that answered, or NULL */
	time_t last_attempt;    /* 0: unknown */
};

struct bounce {
	const char *hostname;   /* Reporting-MTA, MAILER-DAEMON@hostname */
	const char *id;         /* the original's queue ID */
	const char *bounce_id;  /* this notification's queue ID, for Message-ID */
	const char *sender;     /* the original envelope sender: gets the bounce */
	time_t arrival;         /* of the original */
	time_t now;             /* Date:; 0 means now */
	const char *reason;     /* one line for people, e.g. "delivery time expired" */
	const struct bounce_rcpt *rcpts;
	size_t nrcpts;
	int fd;                 /* the original message (spool_open_message), or -1 */
	off_t offset;
	off_t size;
};

/* Write the notification (CRLF line ends) through put(arg, data, len),
 * which returns 0 or -1.  0, or -1 when put failed or the original could
 * not be read (errno set). */
typedef int (*bounce_put_fn)(void *arg, const void *data, size_t len);
int bounce_compose(const struct bounce *b, bounce_put_fn put, void *arg);

/* Spool a notification for b: envelope sender <>, recipient b->sender —
 * expanded through the aliases when local; a local sender that is neither
 * a user nor an alias gets postmaster@ its domain instead (users NULL: the
 * users live in a directory, and a local sender is kept).  b->bounce_id is
 * set here.  Then cb(arg, err) as spool_msg_commit() promises, with the new
 * ID in id_out (which must stay valid until cb runs).  -1 with errno when
 * nothing was started (cb will not run); EINVAL for a null sender. */
int bounce_spool(struct spool *sp, const struct conf *conf, const struct aliases *al,
		 const struct userdb *users, struct bounce *b, spool_commit_cb cb, void *arg,
		 char id_out[SPOOL_ID_SIZE]);

#endif

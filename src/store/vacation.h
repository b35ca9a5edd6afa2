/* vacation: a user's out-of-office setting and the record of the senders
 * it answered (RFC 5230 §4.2's ":days"), two files in the user's Maildir
 * beside new/, cur/ and tmp/:
 *
 *   posthorn-vacation          the setting, written by `posthorn user vacation`
 *   posthorn-vacation.senders  "SECONDS ADDRESS" per line, written on delivery
 *
 * Both are bounded and replaced atomically (a temporary file in the
 * Maildir, fsync, rename, fsync of the folder).  Callable from any thread;
 * the senders record has one writer, the delivery worker. */
#ifndef POSTHORN_VACATION_H
#define POSTHORN_VACATION_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

enum {
	VACATION_FILE_MAX = 64 * 1024,  /* the setting's file, bytes */
	VACATION_SUBJECT_MAX = 200,     /* bytes of the Subject: setting */
	VACATION_MESSAGE_MAX = 32 * 1024, /* bytes of the reply's text */
	VACATION_SENDERS_MAX = 1000,    /* senders remembered; the oldest go first */
	VACATION_DAYS_DEFAULT = 7,      /* RFC 5230 §4.1 */
	VACATION_DAYS_MAX = 365,
};

struct vacation {
	bool on;
	unsigned days;          /* at most one reply per sender in this many days */
	char until[11];         /* "YYYY-MM-DD": the last day (UTC) replies go out; "" none */
	char *subject;          /* NULL: "Auto: " and the original's subject */
	char *message;          /* the reply's text, LF line ends, UTF-8 */
};

/* Is the setting in force at now (on, and now not after its last day)? */
bool vacation_active(const struct vacation *v, time_t now);
/* A date "YYYY-MM-DD" that exists: the first second after that day (UTC)
 * in *end.  false otherwise. */
bool vacation_parse_date(const char *s, time_t *end);

/* The setting's file text (caller frees; *len its length). */
char *vacation_format(const struct vacation *v, size_t *len);
/* Parse the setting's file text.  0, or -1 with a reason in err (v is then
 * empty). */
int vacation_parse(const char *text, size_t len, struct vacation *v, char *err, size_t errsz);
void vacation_clear(struct vacation *v);

/* The setting of the Maildir dir: 1 read, 0 none (no file), -1 with a
 * reason in err. */
int vacation_read(const char *dir, struct vacation *v, char *err, size_t errsz);
/* Replace the setting of dir (which must exist), and forget the senders
 * answered (a new setting answers everybody again, RFC 5230 §4.2).  0, or
 * -1 with a reason in err. */
int vacation_write(const char *dir, const struct vacation *v, char *err, size_t errsz);

/* Is a reply to sender due (none to it in the last days days)?  When it
 * is, note the sender at now before returning *due = true, so that even
 * a reply that is lost later is not sent twice.  0, or -1 with a reason in
 * err (then no reply is due). */
int vacation_note_sender(const char *dir, const char *sender, unsigned days, time_t now,
			 bool *due, char *err, size_t errsz);

#endif

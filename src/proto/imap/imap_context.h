/* imap_context: what the files of an IMAP session share (imap_session.c
 * runs the session; imap_fetch.c answers FETCH and STORE; imap_search.c
 * answers SEARCH): the session's state, its limits, the job machinery for
 * long responses, and the bridge to the selected folder (mailbox.c) and
 * its messages (message.c).  Not for other modules: they use
 * imap_session.h. */
#ifndef POSTHORN_IMAP_CONTEXT_H
#define POSTHORN_IMAP_CONTEXT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "proto/imap/imap_parse.h"
#include "proto/session.h"
#include "lib/linebuf.h"
#include "store/mailbox.h"

struct evbuffer;
struct event;
struct conn;
struct runtime;
struct conf_server;
struct session_link;
struct tls_server;
struct sasl_session;
struct message;
struct message_stream;

/* Named limits of a session (STYLE: every limit in one place). */
enum {
	IMAP_MAX_ERRORS = 50,            /* BAD replies; then BYE and close */
	IMAP_CHUNK = 16 * 1024,          /* message octets produced at a time */
	IMAP_STEP_BUDGET = 256,          /* job steps per turn of the event loop */
	IMAP_ID_PAIRS_MAX = 30,          /* RFC 2971 §3.3 */
	IMAP_SEARCH_DEPTH_MAX = 100,     /* NOT/OR/parentheses inside each other */
	IMAP_MECHS_MAX = 128,
};

/* RFC 3501 §3: the four states, and the sub-states a session passes
 * through inside them. */
enum imap_state {
	IMAP_NOTAUTH = 1u << 0,
	IMAP_AUTH = 1u << 1,
	IMAP_SELECTED = 1u << 2,
	IMAP_LOGOUT = 1u << 3,
	IMAP_SASL = 1u << 4,             /* inside an AUTHENTICATE exchange */
	IMAP_IDLE = 1u << 5,             /* RFC 2177: waiting for DONE */
	IMAP_HANDSHAKE = 1u << 6,        /* TLS handshake under way */
	IMAP_CLOSING = 1u << 7,          /* flushing the last response */
};

struct imap_session;

/* A long response: step() produces a bounded piece of it and returns true
 * once it has written the tagged completion; stop() frees what it holds
 * (also when the session ends in the middle). */
struct imap_job_ops {
	bool (*step)(struct imap_session *s);
	void (*stop)(struct imap_session *s);
};

struct imap_session {
	struct session_base b;           /* id, generation, server, client, TLS */
	struct conn *io;
	struct imap_parser *parser;
	struct linebuf lb;               /* AUTHENTICATE responses, IDLE's DONE */
	enum imap_state state;
	bool tls_active;
	unsigned errors;
	bool in_run;                     /* re-entrancy guard for imap_run */
	struct event *login_timer;       /* the idle limit before login */
	struct event *resume;            /* a job goes on at the next loop turn */
	struct event *pause;             /* a failed login's reply waits a while */
	struct offload_job *check;       /* LOGIN, AUTHENTICATE: the password on a worker */
	char tag[IMAP_TAG_MAX + 1];      /* of the command being answered */
	/* AUTHENTICATE */
	struct sasl_session *sasl;
	unsigned sasl_mech;
	bool sasl_final;                 /* sent the SCRAM server-final, awaiting "" */
	/* after login */
	char *user;
	char *maildir;
	struct mailbox *view;            /* the selected folder, or NULL */
	bool readonly;                   /* EXAMINE */
	/* APPEND's message literal */
	int append_fd;
	char *append_path;
	/* the job being produced */
	const struct imap_job_ops *job;
	void *job_data;
	struct imap_command *cur_cmd;    /* being dispatched; a job may keep it */
	/* a command waiting for the untagged updates that go before it */
	struct imap_command *deferred;
	const struct imap_command_def *deferred_def;
	/* IDLE: the folder's inotify descriptor, or a poll when there is none */
	struct event *watch;
	/* the message being looked at (FETCH, SEARCH) */
	struct message *msg;
	char *msg_path;
	size_t msg_index;
};

/* Flags of a message (RFC 3501 §2.3.2), as mailbox.c keeps them. */
enum imap_flag {
	IMAP_FL_ANSWERED = MAILBOX_ANSWERED,
	IMAP_FL_FLAGGED = MAILBOX_FLAGGED,
	IMAP_FL_DELETED = MAILBOX_DELETED,
	IMAP_FL_SEEN = MAILBOX_SEEN,
	IMAP_FL_DRAFT = MAILBOX_DRAFT,
	IMAP_FL_RECENT = MAILBOX_RECENT,
};

/* A body section located in a message: built octets (HEADER.FIELDS), or
 * a range of the message's CRLF form to stream from the file. */
struct imap_part {
	char *built;                     /* owned by the caller; NULL: a range */
	size_t built_len;
	uint64_t offset, length;
};

#define imap_ok(s, ...) imap_reply((s), "OK", __VA_ARGS__)
#define imap_no(s, ...) imap_reply((s), "NO", __VA_ARGS__)

#define IMAP_HANDLER(name) \
	static void name(struct imap_session *s, const struct imap_command *c)


/* Which messages, for mailbox.c: a resolved set of UIDs or sequence
 * numbers. */
struct imap_match {
	const struct imap_seqset *set;
	bool uid;
};

/* Walking the messages of a resolved set in order, one at a time. */
struct imap_walk {
	struct imap_seqset set;
	bool uid;
	size_t range;                    /* the range being walked */
	size_t next;                     /* the next index to look at */
	bool started;
};

/* The text of an atom as the tokenizer took it (list-chars: "*" and "%"
 * included), e.g. a sequence set "1:*"; NULL for anything else. */
static inline const char *imap_arg_raw_atom(const struct imap_arg *a)
{
	return a && a->type == IMAP_ARG_ATOM ? a->str : NULL;
}

static inline bool imap_is_uid(const struct imap_command *c)
{
	return strncmp(c->name, "UID ", 4) == 0;
}

/* ---- replies and jobs (imap_session.c) ---------------------------------- */

void imap_reply(struct imap_session *s, const char *status, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* BAD, counted: too many end the session. */
void imap_bad(struct imap_session *s, const char *text);
/* Send what was built in out (whole lines) and empty it. */
void imap_send(struct imap_session *s, struct evbuffer *out);
void imap_close_after_flush(struct imap_session *s);
void imap_job_start(struct imap_session *s, const struct imap_job_ops *ops, void *data);
/* The command being dispatched, kept for a job (the job frees it). */
struct imap_command *imap_keep_command(struct imap_session *s);
/* The NO of a failed mail store operation with its response code; false
 * unless r is MAILBOX_OK. */
bool imap_store_error(struct imap_session *s, enum mailbox_result r, const char *err);
void imap_mailbox_log(const struct imap_session *s, const char *op, const char *err);

/* ---- dates (RFC 3501 §9 date, date-time) ---------------------------------- */

/* Days since 1970-01-01 of a proleptic Gregorian date. */
long long imap_days_from_civil(int y, int m, int d);
/* "d-Mon-yyyy" -> its day number; false when malformed. */
bool imap_parse_date(const char *v, long long *day);
/* "dd-Mon-yyyy hh:mm:ss +zzzz" -> seconds since the epoch. */
bool imap_parse_datetime(const char *v, long long *out);
/* Seconds since the epoch -> INTERNALDATE text in the server's zone. */
void imap_format_datetime(long long t, char out[64]);

/* ---- the selected folder (mailbox.c); i is a 0-based index --------------- */

size_t imap_count(const struct imap_session *s);
uint32_t imap_uid_at(const struct imap_session *s, size_t i);
unsigned imap_flags_at(const struct imap_session *s, size_t i);
uint64_t imap_size_at(const struct imap_session *s, size_t i);
long long imap_date_at(const struct imap_session *s, size_t i);
/* Not expunged by another session meanwhile (RFC 2180 §4.1). */
bool imap_msg_exists(struct imap_session *s, size_t i);
bool imap_view_readonly(const struct imap_session *s);
/* A sequence set argument resolved against the view (sequence numbers
 * must exist: else BAD, answered here); false after answering. */
bool imap_set_parse(struct imap_session *s, const struct imap_arg *a, bool uid,
		    struct imap_seqset *set);
bool imap_walk_next(const struct imap_session *s, struct imap_walk *w, size_t *index);
/* mailbox_match_fn over a struct imap_match. */
bool imap_match_fn(void *arg, size_t seq, uint32_t uid);

/* ---- its messages (message.c): held one at a time ------------------------- */

const char *imap_msg_envelope(struct imap_session *s, size_t i, size_t *len);
const char *imap_msg_structure(struct imap_session *s, size_t i, bool extended, size_t *len);
bool imap_msg_section(struct imap_session *s, size_t i, const struct imap_section *sec,
		      struct imap_part *part);
struct message_stream *imap_msg_stream(struct imap_session *s, size_t i, uint64_t offset,
				       uint64_t length);
bool imap_msg_sent_day(struct imap_session *s, size_t i, long long *day);
bool imap_msg_header_has(struct imap_session *s, size_t i, const char *field, const char *str);
bool imap_msg_body_has(struct imap_session *s, size_t i, const char *str, bool text);
void imap_msg_release(struct imap_session *s);

/* ---- imap_fetch.c ------------------------------------------------------------ */

void imap_cmd_fetch(struct imap_session *s, const struct imap_command *c);
void imap_cmd_store(struct imap_session *s, const struct imap_command *c);
/* "(\Seen \Flagged)" into out. */
void imap_flags_text(struct evbuffer *out, unsigned flags);
/* A flag list of STORE/APPEND -> the system flag bits (keywords ignored). */
bool imap_flags_parse(const struct imap_arg *a, unsigned *flags, const char **err);

/* ---- imap_search.c ----------------------------------------------------------- */

void imap_cmd_search(struct imap_session *s, const struct imap_command *c);

#endif

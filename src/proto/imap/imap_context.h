/* imap_context: what every file of an IMAP session builds on: the
 * session's state and limits, its replies (RFC 3501 §7.1: tagged and
 * untagged status responses, never cut), the job machinery that produces
 * long responses as the connection drains, and the NO of a failed mail
 * store operation with its RFC 5530 response code.  Below imap_view.c,
 * imap_fetch.c, imap_search.c and imap_session.c; not for other modules:
 * they use imap_session.h. */
#ifndef POSTHORN_IMAP_CONTEXT_H
#define POSTHORN_IMAP_CONTEXT_H

#include <stdarg.h>
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
struct login;
struct message;
struct offload_job;
struct imap_esearch_state;
struct imap_notify;

/* Named limits of a session (every limit in one place). */
enum {
	IMAP_MAX_ERRORS = 50,            /* BAD replies; then BYE and close */
	IMAP_CHUNK = 16 * 1024,          /* message octets produced at a time */
	/* Work one session does in one turn of the event loop before it lets
	 * the others have theirs: a step of a long response costs 1, a
	 * command IMAP_COMMAND_COST (so at most 16 commands a turn, whatever
	 * a client pipelined). */
	IMAP_STEP_BUDGET = 256,
	IMAP_COMMAND_COST = 16,
	IMAP_ID_PAIRS_MAX = 30,          /* RFC 2971 §3.3 */
	/* RFC 3502: messages in one APPEND, each a file in tmp/ until all
	 * are in; more are refused with NO [LIMIT] */
	IMAP_MULTIAPPEND_MAX = 1000,
	/* ID's log line: a field name (RFC 2971 §3.3: at most 30 octets) and a
	 * value are cut at these (with "..."), the fields at IMAP_ID_LOG_MAX
	 * octets in all, leaving room for " id-more=N" */
	IMAP_ID_LOG_FIELD = 32,
	IMAP_ID_LOG_VALUE = 128,
	IMAP_ID_LOG_MAX = 1536,
	IMAP_ID_LOG_MARKER = 16,
	IMAP_SEARCH_DEPTH_MAX = 100,     /* NOT/OR/parentheses inside each other */
	IMAP_MECHS_MAX = 128,
	IMAP_CAPS_MAX = 1024,            /* the capability list, all of it */
	/* The text of one status response (after "TAG STATUS "): the
	 * server's own words, a response code and at most a mailbox error;
	 * the longest real one is a few hundred octets.  As long as the
	 * longest command line a client may send, so a client that takes
	 * our commands' lines takes our replies too. */
	IMAP_REPLY_TEXT_MAX = IMAP_LINE_MAX,
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
	struct login *login;             /* LOGIN, AUTHENTICATE: exchange, check, delay */
	char tag[IMAP_TAG_MAX + 1];      /* of the command being answered */
	/* after login */
	char *user;
	char *maildir;
	struct mailbox *view;            /* the selected folder, or NULL */
	/* APPEND's message literal */
	int append_fd;
	char *append_path;
	struct imap_multiappend *multi;  /* RFC 3502: the messages before it */
	/* the job being produced */
	const struct imap_job_ops *job;
	void *job_data;
	struct imap_command *cur_cmd;    /* being dispatched; a job may keep it */
	/* a command waiting for the untagged updates that go before it */
	struct imap_command *deferred;
	const struct imap_command_def *deferred_def;
	/* IDLE: the folder's inotify descriptor, or a poll when there is none */
	struct event *watch;
	/* the message being looked at (FETCH, SEARCH): imap_view.c */
	struct message *msg;
	char *msg_path;
	size_t msg_index;
	/* a response could not be built (no memory): the session is closing
	 * and sends nothing more (imap_send) */
	bool out_failed;
	/* the disk work of a command (APPEND, COPY, MOVE, EXPUNGE, CLOSE) on
	 * a worker: no command is read until it is done and answered */
	struct offload_job *store;
	bool store_busy;
	void (*store_done)(struct imap_session *s, struct mailbox_job *j);
	bool waits_input;                /* the last run stopped for want of input */
	/* RFC 7162: CONDSTORE is on after ENABLE or a CONDSTORE enabling
	 * command (MODSEQ in unsolicited FETCH responses); QRESYNC after
	 * ENABLE QRESYNC (VANISHED instead of EXPUNGE) */
	bool condstore;
	bool qresync;
	/* RFC 5182 "$": the saved search result, ascending UIDs (imap_view.c) */
	uint32_t *saved_uids;
	size_t nsaved;
	/* RFC 5267 live search contexts (imap_esearch.c), or NULL */
	struct imap_esearch_state *esearch;
	/* RFC 6855: after ENABLE UTF8=ACCEPT, mailbox names are UTF-8 on
	 * the wire (imap_utf8.c converts them at the edge) */
	bool utf8;
	char *utf8_names[2];             /* the last names converted for the store */
	/* RFC 5465 NOTIFY (imap_notify.c), or NULL */
	struct imap_notify *notify;
};

#define IMAP_HANDLER(name) \
	static void name(struct imap_session *s, const struct imap_command *c)

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

/* ---- states ----------------------------------------------------------------- */

const char *imap_state_name(enum imap_state st);
/* The one way a state changes: logged "old->new". */
void imap_enter_state(struct imap_session *s, enum imap_state st);
/* CLOSING: the connection closes once what is queued has left. */
void imap_close_after_flush(struct imap_session *s);

/* ---- responses being built -------------------------------------------------- */

/* A response (or a piece of one) built here before imap_send() hands it
 * to the connection.  Adding can fail (no memory); the first failure is
 * kept: nothing more is added, and imap_send() sends none of it but ends
 * the session, so a client never gets a line with a hole in it. */
struct imap_out {
	struct evbuffer *buf;
	bool failed;
};

/* Empty and whole; fatal when not even the buffer can be had. */
void imap_out_init(struct imap_out *out);
void imap_out_free(struct imap_out *out);
void imap_out_add(struct imap_out *out, const void *data, size_t len);
void imap_out_printf(struct imap_out *out, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
void imap_out_vprintf(struct imap_out *out, const char *fmt, va_list ap)
	__attribute__((format(printf, 2, 0)));
/* Octets held. */
size_t imap_out_len(const struct imap_out *out);
/* Time to imap_send(): IMAP_CHUNK octets held, or the response failed
 * (the session then ends without building the rest). */
bool imap_out_full(const struct imap_out *out);
/* Forget what is held (a failure is kept). */
void imap_out_discard(struct imap_out *out);
/* A mailbox name (an astring, RFC 3501 §9): an atom when it can be, else
 * quoted (a backslash or quote escaped) or a literal. */
void imap_put_mailbox(struct imap_out *out, const char *name);

/* ---- replies ---------------------------------------------------------------- */

/* "TAG STATUS text" (the tag of the command being answered, "*" for an
 * untagged one), sent whole.  A text longer than IMAP_REPLY_TEXT_MAX is
 * a bug of ours and is never sent cut: it is logged and counted, and the
 * client gets the same status with a generic text. */
void imap_reply(struct imap_session *s, const char *status, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
#define imap_ok(s, ...) imap_reply((s), "OK", __VA_ARGS__)
#define imap_no(s, ...) imap_reply((s), "NO", __VA_ARGS__)
/* The line of imap_reply, CRLF included, appended to out; false (out as
 * it was) when the text is longer than IMAP_REPLY_TEXT_MAX.  No memory
 * marks out as failed (imap_out). */
bool imap_reply_format(struct imap_out *out, const char *tag, const char *status,
		       const char *fmt, va_list ap)
    __attribute__((format(printf, 4, 0), warn_unused_result));
/* Replies that were too long since the start (imap_reply). */
unsigned long imap_replies_too_long(void);

/* A client error (BAD): after IMAP_MAX_ERRORS of them, BYE and close. */
void imap_count_error(struct imap_session *s);
/* BAD, counted. */
void imap_bad(struct imap_session *s, const char *text);
/* Send what was built in out (whole lines) and empty it.  When out
 * failed, nothing of it is sent: event=write-error is logged (once) and
 * the session closes after what was sent before; from then on imap_send
 * sends nothing. */
void imap_send(struct imap_session *s, struct imap_out *out);

/* ---- jobs: long responses produced as the connection drains ----------------- */

void imap_job_start(struct imap_session *s, const struct imap_job_ops *ops, void *data);
/* Work on a worker that the session waited for (store_busy) is done: go
 * on with the job and the commands that waited, at the loop's next turn
 * (the session's resume timer). */
void imap_resume(struct imap_session *s);
/* Stop the job under way (its stop() frees it), if any. */
void imap_job_stop(struct imap_session *s);
/* The command being dispatched, kept for a job (the job frees it). */
struct imap_command *imap_keep_command(struct imap_session *s);

/* ---- the mail store's failures ---------------------------------------------- */

/* The NO of a failed mail store operation with its response code; false
 * unless r is MAILBOX_OK. */
bool imap_store_error(struct imap_session *s, enum mailbox_result r, const char *err);
void imap_mailbox_log(const struct imap_session *s, const char *op, const char *err);

#endif

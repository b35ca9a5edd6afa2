/* imap_notify: RFC 5465 NOTIFY for an IMAP session.  NOTIFY SET names
 * the events a client wants to hear of without asking: for the selected
 * folder the untagged EXISTS, EXPUNGE and FETCH that IDLE sends, at any
 * time between commands; for other folders (INBOXES, PERSONAL,
 * SUBSCRIBED, SUBTREE, MAILBOXES; at most IMAP_NOTIFY_WATCH_MAX of them,
 * resolved when NOTIFY SET is given) a "* STATUS" when their counts
 * change; for the user's folder names and subscriptions a "* LIST" when
 * another session of the same user creates, deletes, renames or
 * (un)subscribes one.  NOTIFY NONE ends it all. */
#ifndef POSTHORN_IMAP_NOTIFY_H
#define POSTHORN_IMAP_NOTIFY_H

#include <stdbool.h>
#include <stddef.h>

struct imap_session;
struct imap_command;
struct imap_args;
struct imap_out;

/* The capability word, for the capability list. */
#define IMAP_NOTIFY_CAPS "NOTIFY"

enum {
	/* folders other than the selected one watched by one session; a
	 * NOTIFY SET whose filters name more is refused (NO [LIMIT]) */
	IMAP_NOTIFY_WATCH_MAX = 64,
	/* event groups and mailbox names in one NOTIFY SET */
	IMAP_NOTIFY_GROUPS_MAX = 16,
	IMAP_NOTIFY_NAMES_MAX = 64,
};

/* RFC 5465 §5: the events, as bits. */
enum imap_notify_event {
	IMAP_NOTIFY_MESSAGE_NEW = 1u << 0,
	IMAP_NOTIFY_MESSAGE_EXPUNGE = 1u << 1,
	IMAP_NOTIFY_FLAG_CHANGE = 1u << 2,
	IMAP_NOTIFY_MAILBOX_NAME = 1u << 3,
	IMAP_NOTIFY_SUBSCRIPTION_CHANGE = 1u << 4,
};

/* RFC 5465 §6: the mailbox filters. */
enum imap_notify_filter {
	IMAP_NOTIFY_SELECTED,
	IMAP_NOTIFY_SELECTED_DELAYED,
	IMAP_NOTIFY_INBOXES,
	IMAP_NOTIFY_PERSONAL,
	IMAP_NOTIFY_SUBSCRIBED,
	IMAP_NOTIFY_SUBTREE,
	IMAP_NOTIFY_MAILBOXES,
};

/* MessageNew's fetch-att for the selected folder: the attributes that
 * are offered (each a bit). */
enum imap_notify_fetch {
	IMAP_NOTIFY_FETCH_UID = 1u << 0,
	IMAP_NOTIFY_FETCH_FLAGS = 1u << 1,
	IMAP_NOTIFY_FETCH_SIZE = 1u << 2,       /* RFC822.SIZE */
	IMAP_NOTIFY_FETCH_INTERNALDATE = 1u << 3,
};

struct imap_notify_group {
	enum imap_notify_filter filter;
	unsigned events;                 /* enum imap_notify_event bits; 0: NONE */
	char **names;                    /* SUBTREE, MAILBOXES: as sent, owned */
	size_t nnames;
};

/* A parsed NOTIFY command. */
struct imap_notify_spec {
	bool none;                       /* NOTIFY NONE */
	bool status;                     /* NOTIFY SET STATUS */
	struct imap_notify_group groups[IMAP_NOTIFY_GROUPS_MAX];
	size_t ngroups;
	unsigned fetch;                  /* MessageNew's fetch-att (SELECTED) */
};

enum imap_notify_parse_result {
	IMAP_NOTIFY_PARSE_OK,
	IMAP_NOTIFY_PARSE_BAD,           /* syntax: BAD why */
	IMAP_NOTIFY_PARSE_BADEVENT,      /* an event not offered: NO [BADEVENT ...] */
};

/* The arguments of NOTIFY into out (zeroed first; free it with
 * imap_notify_spec_free whatever the result); why says what is wrong. */
enum imap_notify_parse_result imap_notify_parse(const struct imap_args *args,
						struct imap_notify_spec *out, const char **why);
void imap_notify_spec_free(struct imap_notify_spec *spec);

void imap_cmd_notify(struct imap_session *s, const struct imap_command *c);

/* Does the session want the selected folder's changes between commands
 * (the SELECTED or SELECTED-DELAYED filter)?  expunges: may EXPUNGE be
 * sent then too (SELECTED; RFC 5465 §5.2: not with SELECTED-DELAYED). */
bool imap_notify_selected(const struct imap_session *s, bool *expunges);
/* MessageNew's fetch-att for the selected folder: after "* exists
 * EXISTS", a "* n FETCH (...)" of each message the client has not been
 * told of, into out; nothing when no fetch-att was asked for. */
void imap_notify_new_messages(struct imap_session *s, struct imap_out *out, size_t exists);
/* A folder was selected: its messages are known to the client. */
void imap_notify_view_opened(struct imap_session *s);
/* The STATUS and LIST notifications waiting to be sent, into out (before
 * a command's tagged completion). */
void imap_notify_flush(struct imap_session *s, struct imap_out *out);
/* This session changed the user's folder names or subscriptions: tell
 * the other sessions of the user that asked.  kind: MAILBOX_NAME or
 * SUBSCRIPTION_CHANGE; gone: the name no longer exists (DELETE) or is no
 * longer subscribed; old: RENAME's old name, else NULL. */
void imap_notify_mailbox_changed(struct imap_session *s, enum imap_notify_event kind,
				 const char *name, const char *old, bool gone);
/* The session ends: its watches and notifications go. */
void imap_notify_end(struct imap_session *s);

#endif

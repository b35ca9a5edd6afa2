/* imap_view: the selected folder as an IMAP session sees it: its
 * messages by 0-based index (mailbox.c's view), sequence sets resolved
 * against it (RFC 3501 §9 sequence-set), the message being looked at,
 * parsed once and held until released (message.c), and message flags in
 * and out (RFC 3501 §2.3.2).  For imap_fetch.c, imap_search.c and
 * imap_session.c. */
#ifndef POSTHORN_IMAP_VIEW_H
#define POSTHORN_IMAP_VIEW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto/imap/imap_context.h"
#include "store/mailbox.h"
#include "store/message.h"

/* Flags of a message (RFC 3501 §2.3.2), as mailbox.c keeps them. */
enum imap_flag {
	IMAP_FL_ANSWERED = MAILBOX_ANSWERED,
	IMAP_FL_FLAGGED = MAILBOX_FLAGGED,
	IMAP_FL_DELETED = MAILBOX_DELETED,
	IMAP_FL_SEEN = MAILBOX_SEEN,
	IMAP_FL_DRAFT = MAILBOX_DRAFT,
	IMAP_FL_RECENT = MAILBOX_RECENT,
};

/* "(\Seen \Flagged $Junk)": the flag-list of a FETCH response, into out;
 * keyword bits are named by mb's keywords (one without a name is left
 * out). */
void imap_flags_text(struct imap_out *out, const struct mailbox *mb, unsigned flags);
/* The flags of the folder for FLAGS (permanent false) or PERMANENTFLAGS
 * (true: with "\*" while keywords can still be added), without
 * parentheses, into buf.  false when it does not fit. */
bool imap_flags_of_folder(char *buf, size_t size, const struct mailbox *mb, bool permanent);

/* FLAGS and PERMANENTFLAGS of the selected folder (RFC 3501 §7.1, §7.2.6):
 * at SELECT/EXAMINE (examine: no permanent flags) ... */
void imap_keywords_select(struct imap_session *s, bool examine);
/* ... and again when its keywords changed: now, or into out. */
void imap_keywords_announce(struct imap_session *s);
void imap_keywords_text(const struct imap_session *s, struct imap_out *out);

/* The keywords of a flag list, pointing into the command's arguments. */
struct imap_keyword_names {
	const char *v[MAILBOX_KEYWORDS_MAX];
	size_t n;
};
/* A flag list of STORE/APPEND -> the system flag bits and the keywords
 * (each an atom of at most MAILBOX_KEYWORD_LEN octets, repeats dropped);
 * false with a reason in err. */
bool imap_flags_parse(const struct imap_arg *a, unsigned *flags, struct imap_keyword_names *kw,
		      const char **err);
/* The same for flags as separate arguments (a list among them is
 * invalid). */
bool imap_flags_parse_args(const struct imap_args *l, unsigned *flags,
			   struct imap_keyword_names *kw, const char **err);

/* ---- the selected folder (mailbox.c); i is a 0-based index --------------- */

size_t imap_count(const struct imap_session *s);
uint32_t imap_uid_at(const struct imap_session *s, size_t i);
unsigned imap_flags_at(const struct imap_session *s, size_t i);
uint64_t imap_size_at(const struct imap_session *s, size_t i);
long long imap_date_at(const struct imap_session *s, size_t i);
/* RFC 7162 MODSEQ of message i. */
uint64_t imap_modseq_at(const struct imap_session *s, size_t i);
/* A CONDSTORE enabling command (RFC 7162 §3.1): CONDSTORE is on from now
 * on, and the first one while a folder is selected sends its
 * HIGHESTMODSEQ (§3.1.2.1). */
void imap_condstore_enable(struct imap_session *s);
/* "* VANISHED (EARLIER) uids" (RFC 7162 §3.2.10) of the UIDs expunged
 * since modseq that are in uids (NULL: any), into out; nothing when none.
 * false after logging when the folder's record cannot be read. */
bool imap_vanished_earlier(struct imap_session *s, struct imap_out *out, uint64_t since,
			   const struct imap_seqset *uids);
/* Not expunged by another session meanwhile (RFC 2180 §4.1). */
bool imap_msg_exists(struct imap_session *s, size_t i);
bool imap_view_readonly(const struct imap_session *s);

/* Which messages, for mailbox.c: a resolved set of UIDs or sequence
 * numbers. */
struct imap_match {
	const struct imap_seqset *set;
	bool uid;
};

/* mailbox_match_fn over a struct imap_match. */
bool imap_match_fn(void *arg, size_t seq, uint32_t uid);

/* A sequence set argument resolved against the view (sequence numbers
 * must exist: else BAD, answered here); false after answering. */
bool imap_set_parse(struct imap_session *s, const struct imap_arg *a, bool uid,
		    struct imap_seqset *set);

/* RFC 5182 "$": the saved search result, replaced by a copy of uids
 * (ascending; n 0: empty) ... */
void imap_saved_replace(struct imap_session *s, const uint32_t *uids, size_t n);
/* ... as a resolved set: those UIDs (uid), or the sequence numbers of
 * those still in the folder; empty when nothing is saved. */
void imap_saved_set(const struct imap_session *s, bool uid, struct imap_seqset *set);

/* Walking the messages of a resolved set in order, one at a time. */
struct imap_walk {
	struct imap_seqset set;
	bool uid;
	size_t range;                    /* the range being walked */
	size_t next;                     /* the next index to look at */
	bool started;
};

bool imap_walk_next(const struct imap_session *s, struct imap_walk *w, size_t *index);

/* ---- its messages (message.c): held one at a time ------------------------- */

/* A body section located in a message: built octets (HEADER.FIELDS), or
 * a range of the message's CRLF form to stream from the file. */
struct imap_part {
	char *built;                     /* owned by the caller; NULL: a range */
	size_t built_len;
	uint64_t offset, length;
};

/* Each looks at message i, parsed (or found in the cache shared by all
 * sessions) and held until imap_msg_release() or another index; NULL or
 * false when its file cannot be read. */
const char *imap_msg_envelope(struct imap_session *s, size_t i, size_t *len);
const char *imap_msg_structure(struct imap_session *s, size_t i, bool extended, size_t *len);
bool imap_msg_section(struct imap_session *s, size_t i, const struct message_section_spec *sec,
		      struct imap_part *part);
struct message_stream *imap_msg_stream(struct imap_session *s, size_t i, uint64_t offset,
				       uint64_t length);
/* The day of its Date: header in the header's own zone (RFC 3501
 * §6.4.4 SENT*). */
bool imap_msg_sent_day(struct imap_session *s, size_t i, long long *day);
bool imap_msg_header_has(struct imap_session *s, size_t i, const char *field, const char *str);
bool imap_msg_body_has(struct imap_session *s, size_t i, const char *str, bool text);
void imap_msg_release(struct imap_session *s);

/* At the daemon's exit, after the last session: free the cache of parsed
 * messages. */
void imap_msg_cache_free(void);

#endif

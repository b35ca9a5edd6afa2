/* mailbox: the IMAP mail store on a user's Maildir with Maildir++ folders
 * (RFC 3501 §2.3 message attributes, §5.1 mailbox naming, §7 unilateral
 * changes; RFC 4315 UIDPLUS; RFC 6154 SPECIAL-USE; RFC 3348 CHILDREN).
 *
 * Layout: INBOX is the Maildir root; folder "A.B" is <root>/.A.B/ (a
 * Maildir); hierarchy delimiter '.'.  Flags live in the file names' info
 * ":2,<letters sorted>" (D F R S T), so other Maildir tools agree.  Each
 * folder keeps its UIDs in <folder>/posthorn-uidlist ("V<uidvalidity>
 * N<uidnext>" then "<uid> <unique>" lines), to which new messages are
 * appended under flock of <folder>/posthorn-uidlist.lock (a torn last
 * append is ignored and its UIDs never given again); it is rewritten
 * only to drop removed messages' lines, and a lost or damaged one is
 * rebuilt with a new, larger UIDVALIDITY.  RFC 7162 MODSEQs are kept
 * beside it in <folder>/posthorn-modseq (modseq.h), given under the same
 * lock by every listing and STORE.  Subscriptions: <root>/subscriptions.
 *
 * A struct mailbox is one session's view of an open folder: sequence
 * numbers -> messages.  mailbox_sync() reads the disk and queues the
 * changes, which the session takes one at a time with mailbox_next_change()
 * (so it can stop while its output buffer is full and resume later).
 * Views are used on the event loop's thread, and nothing there waits for
 * the disk to sync: what a view writes to an index is made durable by an
 * upkeep job on a worker (lib/offload), and the operations that must be
 * durable before their answer (EXPUNGE, COPY, MOVE, APPEND) are split in
 * three (see "work for a worker" below).
 *
 * Names given to and returned by these functions are IMAP mailbox names as
 * the client sends them (modified UTF-7 is ASCII); "INBOX" in any case is
 * the inbox. */
#ifndef POSTHORN_MAILBOX_H
#define POSTHORN_MAILBOX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum {
	MAILBOX_NAME_MAX = 254,        /* octets of a mailbox name (its directory adds a ".") */
	MAILBOX_FOLDERS_MAX = 10000,   /* folders listed / created per user */
	MAILBOX_MESSAGES_MAX = 2000000,/* messages in one folder */
	MAILBOX_DELIM = '.',
};

/* System flags (RFC 3501 §2.3.2).  MAILBOX_RECENT is per view, never
 * stored in a name and never settable. */
enum mailbox_flag {
	MAILBOX_SEEN = 1u << 0,        /* S */
	MAILBOX_ANSWERED = 1u << 1,    /* R */
	MAILBOX_FLAGGED = 1u << 2,     /* F */
	MAILBOX_DELETED = 1u << 3,     /* T */
	MAILBOX_DRAFT = 1u << 4,       /* D */
	MAILBOX_RECENT = 1u << 5,
};
/* Keywords (RFC 3501 §2.3.2 flag-keyword) are per folder, at most
 * MAILBOX_KEYWORDS_MAX: keyword i (0 .. 25) is the letter 'a' + i in a
 * file name's info, named by line "i name" of the folder's
 * dovecot-keywords file (Dovecot's Maildir convention, so a Maildir moves
 * between the two with its keywords), and the flag bit
 * MAILBOX_KEYWORD(i) in a flag word. */
enum {
	MAILBOX_KEYWORDS_MAX = 26,
	MAILBOX_KEYWORD_LEN = 64,      /* octets of a keyword's name */
	MAILBOX_KEYWORD_SHIFT = 6,
};
#define MAILBOX_KEYWORD(i) (1u << (MAILBOX_KEYWORD_SHIFT + (unsigned)(i)))
#define MAILBOX_KEYWORDS_ALL 0xffffffc0u
#define MAILBOX_FLAGS_SYSTEM 0x1fu    /* \Seen .. \Draft */
/* what STORE/APPEND may set: the system flags but \Recent, and keywords */
#define MAILBOX_FLAGS_PERMANENT (MAILBOX_FLAGS_SYSTEM | MAILBOX_KEYWORDS_ALL)

/* "\Seen" ... "\Recent" for one flag bit; NULL for anything else. */
const char *mailbox_flag_name(unsigned flag);
/* A flag word as sent by a client ("\seen", any case) -> its bit; false
 * for unknown flags, keywords and \Recent. */
bool mailbox_flag_parse(const char *word, unsigned *flag);

/* A folder's keyword names by index; "" for an index not in use. */
struct mailbox_keywords {
	char name[MAILBOX_KEYWORDS_MAX][MAILBOX_KEYWORD_LEN + 1];
};
/* Is name a keyword we keep: 1 .. MAILBOX_KEYWORD_LEN ATOM-CHARs of RFC
 * 3501 §9 and no backslash? */
bool mailbox_keyword_valid(const char *name);
/* Parse a dovecot-keywords file's text ("N name" lines, N 0 .. 25):
 * lines that are not such a line, with an invalid name, or repeat an
 * index or a name are ignored. */
void mailbox_keywords_parse(const char *text, size_t len, struct mailbox_keywords *out);
/* The index of name (case-insensitive), -1 when it has none. */
int mailbox_keywords_find(const struct mailbox_keywords *k, const char *name);
size_t mailbox_keywords_count(const struct mailbox_keywords *k);

/* Results of folder and message operations.  The session maps them to
 * replies; err always holds a sentence for the client or the log. */
enum mailbox_result {
	MAILBOX_OK = 0,
	MAILBOX_ERR_NAME,        /* invalid mailbox name: NO */
	MAILBOX_ERR_EXISTS,      /* NO [ALREADYEXISTS] */
	MAILBOX_ERR_NONEXISTENT, /* NO [NONEXISTENT]; for APPEND/COPY/MOVE: [TRYCREATE] */
	MAILBOX_ERR_INBOX,       /* INBOX cannot be deleted: NO */
	MAILBOX_ERR_NOSELECT,    /* a \Noselect name (DELETE of it with children, SELECT): NO */
	MAILBOX_ERR_READONLY,    /* the view is read-only (EXAMINE): NO [READ-ONLY] */
	MAILBOX_ERR_LIMIT,       /* a limit above, or UIDs exhausted: NO [LIMIT] */
	MAILBOX_ERR_EXPUNGED,    /* all messages named were expunged meanwhile: NO [EXPUNGEISSUED] */
	MAILBOX_ERR_IO,          /* file system error: NO [SERVERBUG]/[UNAVAILABLE] */
};

/* ---- names ---------------------------------------------------------------- */

/* Is name usable as a folder name?  Any printable US-ASCII is (a
 * backslash, quotes, "&" as modified UTF-7, RFC 3501 §5.1.3) but for:
 * an empty name or one longer than MAILBOX_NAME_MAX, '/', the wildcards
 * '%' and '*', an empty hierarchy level (a leading or trailing '.', ".."),
 * control characters, 8-bit octets, modified UTF-7 that no encoder
 * writes, and "INBOX.<x>" (INBOX has no children here).  Operations on
 * such a name fail with MAILBOX_ERR_NAME and err saying which rule. */
bool mailbox_name_valid(const char *name);
bool mailbox_is_inbox(const char *name);
/* RFC 3501 §6.3.8 LIST wildcards: '*' matches anything, '%' anything but
 * the delimiter.  "INBOX" matches case-insensitively. */
bool mailbox_match(const char *pattern, const char *name);

/* ---- folders of a user ---------------------------------------------------- */

/* Special uses of a folder (RFC 6154 §2), as bits: a folder may have
 * several.  They are stored with the folder (a file in its directory),
 * so a RENAME takes them along and a DELETE removes them.  The virtual
 * \All and \Flagged are not offered. */
enum mailbox_special {
	MAILBOX_SPECIAL_NONE = 0,
	MAILBOX_SPECIAL_SENT = 1u << 0,
	MAILBOX_SPECIAL_DRAFTS = 1u << 1,
	MAILBOX_SPECIAL_TRASH = 1u << 2,
	MAILBOX_SPECIAL_JUNK = 1u << 3,
	MAILBOX_SPECIAL_ARCHIVE = 1u << 4,
};
#define MAILBOX_SPECIAL_ALL 0x1fu
/* "\Sent", "\Drafts", "\Trash", "\Junk", "\Archive" for one bit; NULL
 * for anything else. */
const char *mailbox_special_attr(unsigned bit);
/* An attribute as a client writes it ("\sent", any case) -> its bit;
 * false for any other (\All and \Flagged too). */
bool mailbox_special_parse(const char *attr, unsigned *bit);

/* At login: create the Maildir root when missing; at the first login (no
 * subscriptions file yet) create Sent, Drafts, Trash and Junk and
 * subscribe INBOX and them.  Once per store (a store made before uses
 * were stored included) the folders of those names get their special
 * use, unless another folder has it already.  0, or -1 with a reason in
 * err. */
int mailbox_prepare(const char *root, char *err, size_t errsz);

struct mailbox_folder {
	char *name;                    /* "INBOX", "Sent", "A.B" */
	unsigned special;              /* enum mailbox_special bits */
	bool noselect;                 /* a parent implied by a child, no folder of its own */
	bool has_children;
};

struct mailbox_folder_list {
	struct mailbox_folder *v;      /* sorted by name, INBOX first */
	size_t n;
};

/* Every folder (INBOX included) and every implied parent, at most
 * MAILBOX_FOLDERS_MAX.  0, or -1 with a reason in err. */
int mailbox_folders(const char *root, struct mailbox_folder_list *out, char *err, size_t errsz);
void mailbox_folders_free(struct mailbox_folder_list *l);

/* CREATE: the folder and any missing parents (a trailing delimiter is
 * ignored, RFC 3501 §6.3.3).  INBOX or an existing folder: EXISTS. */
enum mailbox_result mailbox_create(const char *root, const char *name, char *err, size_t errsz);
/* CREATE name (USE (...)) (RFC 6154 §3): the folder with the special uses
 * (MAILBOX_SPECIAL_* bits), stored before the command succeeds; when they
 * cannot be stored the new folder is removed again (IO). */
enum mailbox_result mailbox_create_special(const char *root, const char *name, unsigned uses,
					   char *err, size_t errsz);
/* DELETE: remove the folder with its messages.  With children the name
 * lives on as \Noselect (RFC 3501 §6.3.4); deleting a \Noselect name
 * that has children is NOSELECT; INBOX is INBOX. */
enum mailbox_result mailbox_delete(const char *root, const char *name, char *err, size_t errsz);
/* RENAME with its children.  Renaming INBOX moves INBOX's messages into
 * the new folder and leaves INBOX empty (RFC 3501 §6.3.5). */
enum mailbox_result mailbox_rename(const char *root, const char *from, const char *to, char *err,
				   size_t errsz);

/* SUBSCRIBE (on) / UNSUBSCRIBE (off).  The name must be valid; it need not
 * exist.  Unsubscribing a name not subscribed: NONEXISTENT. */
enum mailbox_result mailbox_subscribe(const char *root, const char *name, bool on, char *err,
				      size_t errsz);

struct mailbox_names {
	char **v;
	size_t n;
};
/* The subscribed names, in file order (lines that are no valid name are
 * skipped).  A file that cannot be read is IO; one with more than
 * MAILBOX_FOLDERS_MAX names is LIMIT, never a shortened list.  On an
 * error out is empty and err says why. */
enum mailbox_result mailbox_subscriptions(const char *root, struct mailbox_names *out, char *err,
					  size_t errsz);
void mailbox_names_free(struct mailbox_names *l);

/* STATUS without opening a view (new UIDs are assigned as needed, nothing
 * is moved out of new/, so \Recent is left to the next SELECT). */
struct mailbox_status {
	uint32_t messages, recent, uidnext, uidvalidity, unseen;
	uint64_t highestmodseq;        /* RFC 7162 §3.1.2.1 */
	uint32_t deleted;              /* messages with \Deleted (RFC 9051, 9208) */
	uint64_t deleted_octets;       /* their octets on disk (",S="; RFC 9208) */
};
enum mailbox_result mailbox_status(const char *root, const char *name, struct mailbox_status *out,
				   char *err, size_t errsz);

/* ---- an open folder -------------------------------------------------------- */

struct mailbox;

/* One message of a view.  Read-only for callers. */
struct mailbox_msg {
	char *name;                    /* current file name (in new/ or cur/); NULL
					* while its EXPUNGE is being sent */
	uint64_t size;                 /* RFC822.SIZE: octets with CRLF line ends */
	long long internal_date;       /* seconds since the epoch: the name's
					* leading number, else the file's mtime */
	uint32_t uid;
	uint32_t flags;                /* enum mailbox_flag bits, RECENT included,
					* and MAILBOX_KEYWORD bits */
	uint64_t modseq;               /* RFC 7162 MODSEQ (modseq.h) */
	bool in_new;                   /* the file is in new/ (read-only views) */
	bool expunged;                 /* gone from disk, EXPUNGE not yet reported */
	bool flags_changed;            /* private: a FETCH FLAGS is queued */
	bool announced;                /* private: counted in an EXISTS sent */
};

/* SELECT (read_only false) / EXAMINE (true).  A read-write view moves the
 * messages of new/ into cur/ and they are \Recent in it; a read-only view
 * moves nothing and shows what is in new/ as \Recent.  A \Noselect or
 * missing name: NOSELECT / NONEXISTENT. */
/* The listing cache: the last complete view of each recently selected
 * folder (file names, UIDs, flags, MODSEQs, sizes, dates), shared by every
 * session of the process.  A SELECT of a folder whose directories and
 * index have not changed since (same times, settled) copies it instead of
 * listing the folder (the file names are shared, not copied); a SELECT of
 * a changed folder still takes the sizes of the messages it knew from it,
 * so no message file is read twice to count its octets, and when only
 * new/ changed it takes cur/ from it and reads new/ alone.  Bounded by
 * folders and octets, least recently used first out.  Used from the event
 * loop's thread only. */
enum {
	MAILBOX_CACHE_FOLDERS = 16,            /* folders kept */
	MAILBOX_CACHE_BYTES = 64 * 1024 * 1024, /* octets of all their listings */
};
/* A listing that stands for a folder of at least MAILBOX_SNAPSHOT_MIN
 * messages is also written into the folder (posthorn-listing, listing.h,
 * by a worker), and read back by the first SELECT after a start when the
 * folder's times and index are still those it was written with. */
enum { MAILBOX_SNAPSHOT_MIN = 256 };
struct mailbox_cache_counts {
	size_t hits, misses, folders, bytes;
};
void mailbox_cache_counts(struct mailbox_cache_counts *out);
void mailbox_cache_clear(void);

enum mailbox_result mailbox_open(const char *root, const char *name, bool read_only,
				 struct mailbox **out, char *err, size_t errsz);
void mailbox_close(struct mailbox *mb);

const char *mailbox_name(const struct mailbox *mb);
bool mailbox_read_only(const struct mailbox *mb);
uint32_t mailbox_uidvalidity(const struct mailbox *mb);
uint32_t mailbox_uidnext(const struct mailbox *mb);
/* RFC 7162 HIGHESTMODSEQ as the view last read it: every flag or keyword
 * change, new message and expunge in the folder raises it (under the
 * index lock, modseq.h), whichever session or node made it. */
uint64_t mailbox_highestmodseq(const struct mailbox *mb);
/* The folder's keywords as the view last read them. */
const struct mailbox_keywords *mailbox_keywords(const struct mailbox *mb);
/* The flag bits of keywords names[0 .. n-1] in the view's folder.  With
 * create, a name the folder lacks is added to its dovecot-keywords (under
 * the folder's index lock, the file re-read then written under a
 * temporary name and renamed); a folder with MAILBOX_KEYWORDS_MAX
 * keywords already: LIMIT.  Without create, unknown names give no bit. */
enum mailbox_result mailbox_keywords_bits(struct mailbox *mb, const char *const *names, size_t n,
					  bool create, unsigned *bits, char *err, size_t errsz);
/* The same for folder name of root without a view (APPEND). */
enum mailbox_result mailbox_folder_keywords_bits(const char *root, const char *name,
						 const char *const *names, size_t n,
						 unsigned *bits, char *err, size_t errsz);
/* Did the folder's keywords change since the last call (the session
 * sends FLAGS and PERMANENTFLAGS again, RFC 3501 §7.2.6)? */
bool mailbox_keywords_take_changed(struct mailbox *mb);

/* Messages in the view (EXISTS, expunged-not-yet-reported ones included). */
size_t mailbox_count(const struct mailbox *mb);
size_t mailbox_recent(const struct mailbox *mb);
/* Sequence number of the first message without \Seen, 0 when none
 * ([UNSEEN n] of SELECT). */
size_t mailbox_first_unseen(const struct mailbox *mb);

/* Message seq (1-based); NULL outside 1..count. */
const struct mailbox_msg *mailbox_msg(const struct mailbox *mb, size_t seq);
/* The sequence number of uid, 0 when not in the view.  O(log n). */
size_t mailbox_seq_of_uid(const struct mailbox *mb, uint32_t uid);
/* The first sequence number whose UID is >= uid (count + 1 when none):
 * walk UID ranges without scanning.  O(log n). */
size_t mailbox_seq_from_uid(const struct mailbox *mb, uint32_t uid);
/* Path of message seq for reading (caller frees); NULL outside the view.
 * For an expunged one the file is gone: answer NO (RFC 3501 §7.4.1). */
char *mailbox_msg_path(const struct mailbox *mb, size_t seq);

/* ---- keeping the view in step with the disk ------------------------------- */

enum mailbox_sync_flag {
	/* Expunges may be reported now (NOOP, IDLE, CHECK, EXPUNGE, SELECT, a
	 * command's end outside FETCH/STORE/SEARCH: RFC 3501 §7.4.1).
	 * Without it vanished messages stay in the view with expunged set. */
	MAILBOX_SYNC_EXPUNGE = 1u << 0,
	/* Rescan even when new/ and cur/ look unchanged. */
	MAILBOX_SYNC_FORCE = 1u << 1,
};

/* Read the disk (cheap when new/ and cur/ did not change), update the
 * index, and queue the changes since the last sync: expunges, the new
 * message count, the recent count, other sessions' flag changes.  When the
 * index was lost and rebuilt meanwhile, or the folder was deleted or
 * renamed, the view cannot go on (IO, and mailbox_stale() is true from
 * then on): end the session with BYE or unselect, the client must
 * resynchronise. */
enum mailbox_result mailbox_sync(struct mailbox *mb, unsigned flags, char *err, size_t errsz);
/* Did the folder's UIDVALIDITY change, or the folder go, under this view?
 * (added after the first version of this header) */
bool mailbox_stale(const struct mailbox *mb);

enum mailbox_change_kind {
	MAILBOX_CHANGE_EXPUNGE,        /* "* <n> EXPUNGE" */
	MAILBOX_CHANGE_EXISTS,         /* "* <n> EXISTS" */
	MAILBOX_CHANGE_RECENT,         /* "* <n> RECENT" */
	MAILBOX_CHANGE_FLAGS,          /* "* <n> FETCH (FLAGS (...) UID <uid>)" */
};

struct mailbox_change {
	enum mailbox_change_kind kind;
	size_t n;                      /* sequence number, or the count */
	uint32_t uid;                  /* EXPUNGE, FLAGS: the message's UID */
	unsigned flags;                /* FLAGS: the flags, RECENT included */
	uint64_t modseq;               /* FLAGS: the message's MODSEQ */
};

/* The next queued change, in the order to send them (expunges highest
 * sequence number first, so each number is right when sent; then EXISTS,
 * RECENT, then FLAGS in ascending order).  false when none is left.  Take
 * them all before using sequence numbers again: during the expunge phase
 * the view's numbering is in between. */
bool mailbox_next_change(struct mailbox *mb, struct mailbox_change *out);
/* Are changes queued? */
bool mailbox_changes_pending(const struct mailbox *mb);

/* Which messages an operation applies to: seq is 1-based, uid its UID
 * (e.g. imap_seqset_contains on one of them). */
typedef bool (*mailbox_match_fn)(void *arg, size_t seq, uint32_t uid);

enum mailbox_store_op { MAILBOX_STORE_ADD, MAILBOX_STORE_REMOVE, MAILBOX_STORE_REPLACE };

/* STORE: change the flags (MAILBOX_FLAGS_PERMANENT bits) of the matching
 * messages by renaming their files.  The view's flags follow at once (the
 * session then sends FETCH FLAGS itself unless .SILENT); a message that
 * vanished meanwhile gets expunged set.  READONLY for EXAMINE. */
enum mailbox_result mailbox_store(struct mailbox *mb, mailbox_match_fn match, void *arg,
				  enum mailbox_store_op op, unsigned flags, char *err, size_t errsz);

#define MAILBOX_MODSEQ_NONE UINT64_MAX   /* no UNCHANGEDSINCE */

struct mailbox_store_req {
	mailbox_match_fn match;
	void *arg;
	enum mailbox_store_op op;
	unsigned flags;
	uint64_t unchangedsince;       /* RFC 7162 §3.1.3; MAILBOX_MODSEQ_NONE */
};

/* UIDs, ascending. */
struct mailbox_uids {
	uint32_t *v;
	size_t n, cap;
};
void mailbox_uids_free(struct mailbox_uids *l);

/* STORE with UNCHANGEDSINCE: the whole STORE runs under the folder's index
 * lock, after the view is read again under it, so the test and the change
 * are one step for every session and node; each message changed gets a
 * new MODSEQ (its msg->modseq).  Matching messages whose MODSEQ is above
 * q->unchangedsince are left alone and listed in *refused (caller frees;
 * empty on an error). */
enum mailbox_result mailbox_store_cond(struct mailbox *mb, const struct mailbox_store_req *q,
				       struct mailbox_uids *refused, char *err, size_t errsz);

/* UID ranges, ascending and disjoint. */
struct mailbox_uid_range {
	uint32_t lo, hi;
};
struct mailbox_uid_ranges {
	struct mailbox_uid_range *v;
	size_t n, cap;
};
void mailbox_uid_ranges_free(struct mailbox_uid_ranges *l);

/* VANISHED (EARLIER) (RFC 7162 §3.2.10): the UIDs expunged from the
 * folder with a MODSEQ above since.  The folder remembers the latest
 * MODSEQ_EXPUNGED_MAX expunges (modseq.h); from below the oldest one it
 * remembers, every UID below UIDNEXT that is not in the view is given
 * (RFC 7162 §3.2.5.2).  IO on a read error. */
enum mailbox_result mailbox_vanished(const struct mailbox *mb, uint64_t since,
				     struct mailbox_uid_ranges *out, char *err, size_t errsz);

/* ---- work for a worker ------------------------------------------------------
 *
 * EXPUNGE, COPY, MOVE and APPEND end in syncs, and their tagged OK may
 * only be sent once the change is durable.  So each comes in three steps:
 * *_begin on the event loop looks at the view and says what to do (errors
 * known at once come back from it, and no job); mailbox_job_run does all
 * the disk work on any thread, touching nothing but the job (never the
 * view); *_end back on the loop gives the result, brings the view up to
 * date and frees the job.  A job whose end never comes (the session went
 * away) is freed with mailbox_job_free, on the loop, after any run.  The
 * plain mailbox_expunge/copy/move/append_commit do all three at once. */
struct mailbox_job;

void mailbox_job_run(struct mailbox_job *j);
void mailbox_job_free(struct mailbox_job *j);

/* EXPUNGE: remove the messages with \Deleted; with match (UID EXPUNGE,
 * RFC 4315 §2.1) only those of them that match.  The removals are queued
 * as EXPUNGE changes (with any other expunge found on disk). */
enum mailbox_result mailbox_expunge(struct mailbox *mb, mailbox_match_fn match, void *arg,
				    char *err, size_t errsz);
/* READONLY for EXAMINE; *out NULL on an error. */
enum mailbox_result mailbox_expunge_begin(struct mailbox *mb, mailbox_match_fn match, void *arg,
					  struct mailbox_job **out, char *err, size_t errsz);
enum mailbox_result mailbox_expunge_end(struct mailbox *mb, struct mailbox_job *j, char *err,
					size_t errsz);

/* UIDs of a COPY/MOVE (RFC 4315 COPYUID): src[i] became dst[i], src
 * ascending. */
struct mailbox_uidmap {
	uint32_t uidvalidity;          /* of the destination */
	uint32_t *src, *dst;
	size_t n;
};
void mailbox_uidmap_free(struct mailbox_uidmap *m);

/* COPY the matching messages (flags and internal date kept) to folder
 * dest of the same user (hard links under new unique names, a byte copy
 * across file systems), into its new/: they are \Recent to the next view
 * of dest (RFC 3501 §6.4.7).  An error takes back every copy made;
 * messages found expunged meanwhile are left out (out says what was
 * copied; nothing matching: OK with out->n 0).  A missing dest:
 * NONEXISTENT (say [TRYCREATE]); every matching message vanished:
 * EXPUNGED. */
enum mailbox_result mailbox_copy(struct mailbox *mb, mailbox_match_fn match, void *arg,
				 const char *dest, struct mailbox_uidmap *out, char *err,
				 size_t errsz);
/* MOVE (RFC 6851): copy, then remove the sources (queued as EXPUNGE
 * changes).  READONLY for EXAMINE. */
enum mailbox_result mailbox_move(struct mailbox *mb, mailbox_match_fn match, void *arg,
				 const char *dest, struct mailbox_uidmap *out, char *err,
				 size_t errsz);
/* COPY (move false) or MOVE in steps: the copies (and the sources'
 * removal) are durable when the job has run; *out NULL on an error. */
enum mailbox_result mailbox_copy_begin(struct mailbox *mb, mailbox_match_fn match, void *arg,
				       const char *dest, bool move, struct mailbox_job **out,
				       char *err, size_t errsz);
enum mailbox_result mailbox_copy_end(struct mailbox *mb, struct mailbox_job *j,
				     struct mailbox_uidmap *out, char *err, size_t errsz);

/* ---- APPEND ------------------------------------------------------------- */

/* Begin an APPEND to folder name: a new empty file in its tmp/ (mode 0600)
 * for the caller to write the message into (as received, CRLF or LF).
 * *path (caller frees) and *fd (caller closes) on OK; NONEXISTENT (say
 * [TRYCREATE]) when the folder does not exist. */
enum mailbox_result mailbox_append_begin(const char *root, const char *name, char **path, int *fd,
					 char *err, size_t errsz);
/* Deliver the file written at path (from append_begin, fd closed by the
 * caller): fsync, name it with the flags (MAILBOX_FLAGS_PERMANENT bits) and
 * internal date (seconds; <= 0: now), give it a UID.  Without flags it
 * goes to new/ (so it is \Recent to the next view), else to cur/.  OK with
 * *uidvalidity and *uid for APPENDUID (RFC 4315 §3; *uid is 0 only when
 * another client removed the message at once: then send no APPENDUID); on
 * any error the file is removed.  The folder renamed since append_begin:
 * NONEXISTENT.  Any thread (it syncs: not on the event loop). */
enum mailbox_result mailbox_append_commit(const char *root, const char *name, const char *path,
					  unsigned flags, long long internal_date,
					  uint32_t *uidvalidity, uint32_t *uid, char *err,
					  size_t errsz);
/* mailbox_append_commit as a job (copies of the arguments; the file at
 * path is the job's from now on: removed if the job never runs). */
struct mailbox_job *mailbox_append_job(const char *root, const char *name, const char *path,
				       unsigned flags, long long internal_date);
/* One more message for the same job (RFC 3502 MULTIAPPEND): the job's
 * messages go in all or none (§6.3.11): on an error with any of them
 * those already moved in are removed again and the answer is the error. */
void mailbox_append_job_add(struct mailbox_job *j, const char *path, unsigned flags,
			    long long internal_date);
/* The job's result: the folder's UIDVALIDITY and the UIDs of its first
 * nuids messages, in the order they were added (0: not known). */
enum mailbox_result mailbox_append_end(struct mailbox_job *j, uint32_t *uidvalidity,
				       uint32_t *uids, size_t nuids, char *err, size_t errsz);
/* Drop an unfinished APPEND: remove the file. */
void mailbox_append_abort(const char *path);

/* ---- IDLE (RFC 2177) ------------------------------------------------------ */

/* An inotify descriptor watching the folder's new/ and cur/ (created on
 * the first call, owned by the view); -1 with a reason in err when inotify
 * is not available.  Watch it for reading, then call mailbox_watch_drain
 * and mailbox_sync. */
int mailbox_watch(struct mailbox *mb, char *err, size_t errsz);
/* Read the pending events without blocking; true when any arrived. */
bool mailbox_watch_drain(struct mailbox *mb);
/* Folders watched without a view (RFC 5465 NOTIFY of folders not
 * selected), several in one inotify instance (instances are a per-user
 * resource, inotify(7)): open one (the caller's to close; -1 with a
 * reason in err when inotify is not available), add each folder's new/
 * and cur/ (their watch descriptors into wds; -1 with err: no such
 * folder, no watch left), and read what happened without blocking: the
 * distinct watch descriptors that fired, at most max, into wds.
 * *overflow says that events were lost or more than max fired: the
 * caller looks at every folder. */
int mailbox_watch_open(char *err, size_t errsz);
int mailbox_watch_folder(int fd, const char *root, const char *name, int wds[2], char *err,
			 size_t errsz);
size_t mailbox_watch_fd_read(int fd, int *wds, size_t max, bool *overflow);
/* Close the inotify descriptor (after IDLE; inotify instances are a
 * per-user resource). */
void mailbox_unwatch(struct mailbox *mb);

#endif

/* imap_sort: SORT and UID SORT (RFC 5256 §3, RFC 5957 DISPLAYFROM and
 * DISPLAYTO), and the sort keys that SORT and THREAD collect: once per
 * message from its header (message_keys.c), kept per folder by UID for
 * every session of the process, so that the next SORT or THREAD, in this
 * session or the next connection of a webmail, reads no file again. */
#ifndef POSTHORN_IMAP_SORT_H
#define POSTHORN_IMAP_SORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct imap_session;
struct imap_command;
struct imap_arg;
struct imap_search_prog;

enum {
	/* octets of sort keys kept between commands, all folders of all
	 * users together (about 250 per message: 200,000 messages fit); the
	 * folder used least recently goes first */
	IMAP_SORT_CACHE_MAX = 64 * 1024 * 1024,
	IMAP_SORT_FOLDERS_MAX = 256,     /* folders whose keys are kept */
	IMAP_SORT_CRITERIA_MAX = 16,     /* sort keys in one SORT */
	/* one step of the job: at most this many headers read (or messages
	 * searched), so one turn of the loop (IMAP_STEP_BUDGET steps) reads
	 * about 1,000 files, some tens of milliseconds, before other sessions
	 * have theirs ... */
	IMAP_SORT_STEP_READS = 4,
	IMAP_SORT_STEP_MESSAGES = 1024,  /* ... or looks at this many kept keys */
};

/* The keys of one message as SORT and THREAD compare them (RFC 5256 §3):
 * strings in their comparator's form (i;ascii-casemap for addresses,
 * i;unicode-casemap for the subject and display names), "" when absent. */
struct imap_sortkey {
	uint32_t uid;
	bool reply;                      /* the subject was a reply or forward */
	int64_t date;                    /* sent date, else the internal date */
	char *subject;                   /* base subject (§2.1) */
	char *from, *to, *cc;            /* first addr-mailbox */
	char *display_from, *display_to; /* RFC 5957 */
	char *message_id;                /* as written without <>; NULL: none */
	char **refs;                     /* References (or In-Reply-To) */
	size_t nrefs;
	size_t mem;                      /* octets held, for the cache's bound */
};

/* A message chosen by the search keys, with what is sorted on. */
struct imap_sortitem {
	uint32_t seq;
	uint32_t uid;
	long long arrival;               /* internal date */
	uint64_t size;                   /* RFC822.SIZE */
	const struct imap_sortkey *key;
};

/* Called once the keys are there: answers the command (untagged
 * response and tagged OK).  items are in sequence order. */
typedef void (*imap_sort_done_fn)(struct imap_session *s, const struct imap_sortitem *items,
				  size_t n, void *arg);

/* Collect the keys of the messages prog matches (taken), as a job of the
 * session; then done(arg), then free_arg(arg). */
void imap_sortkeys_start(struct imap_session *s, struct imap_search_prog *prog,
			 imap_sort_done_fn done, void *arg, void (*free_arg)(void *arg));
/* "[CHARSET] search-keys" of SORT and THREAD from args[pos]: the charset
 * is checked (UTF-8, US-ASCII; else NO [BADCHARSET]) and the keys
 * compiled; NULL after answering. */
struct imap_search_prog *imap_sort_search_args(struct imap_session *s, const struct imap_command *c,
					       size_t pos);
/* At the daemon's exit, after the last session: the kept keys go. */
void imap_sortkeys_cleanup(void);

/* ---- SORT ------------------------------------------------------------------ */

enum imap_sort_by {
	IMAP_SORT_ARRIVAL, IMAP_SORT_CC, IMAP_SORT_DATE, IMAP_SORT_FROM, IMAP_SORT_SIZE,
	IMAP_SORT_SUBJECT, IMAP_SORT_TO, IMAP_SORT_DISPLAYFROM, IMAP_SORT_DISPLAYTO,
};

struct imap_sort_criteria {
	size_t n;
	struct {
		enum imap_sort_by by;
		bool reverse;
	} v[IMAP_SORT_CRITERIA_MAX];
};

/* The parenthesised sort-criteria list (RFC 5256 §4 "sort-criteria");
 * false with a reason for BAD in err. */
bool imap_sort_parse_criteria(const struct imap_arg *a, struct imap_sort_criteria *cr,
			      const char **err);
/* Sort items in place by cr, ties by sequence number (RFC 5256 §3:
 * "the order ... is by the sequence number"). */
void imap_sort_items(struct imap_sortitem *items, size_t n, const struct imap_sort_criteria *cr);

/* The result of a SORT: the numbers in sorted order (UIDs when uid),
 * for the function that answers the command (untagged response and
 * tagged OK); arg is imap_sort_begin's. */
typedef void (*imap_sort_result_fn)(struct imap_session *s, const uint32_t *nums, size_t n,
				    bool uid, void *arg);
/* "(criteria) charset search-keys" at args[pos] of c: parsed (BAD or NO
 * answered here on error), the messages sorted as a job, then result()
 * answers; free_arg(arg) (if not NULL) when the job ends, answered or
 * not, or at once when the command is refused.  SORT answers "* SORT
 * ..."; ESORT (RFC 5267) can answer its own way. */
void imap_sort_begin(struct imap_session *s, const struct imap_command *c, size_t pos,
		     imap_sort_result_fn result, void *arg, void (*free_arg)(void *arg));

void imap_cmd_sort(struct imap_session *s, const struct imap_command *c);

#endif

/* imap_search: SEARCH and UID SEARCH of an IMAP session (RFC 3501
 * §6.4.4, RFC 7162 §3.1.5 MODSEQ): the keys compiled into a program,
 * evaluated one message per step of a job.  The header and body text keys
 * and SENT* read message files: before the job, they are tested on
 * workers (message_search_file, the Date: of a parse) for the messages the
 * other keys leave undecided, while the session waits, so the loop never
 * reads a message for them. */
#include "proto/imap/imap_search.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "proto/imap/imap_context.h"
#include "proto/imap/imap_date.h"
#include "proto/imap/imap_esearch.h"
#include "proto/imap/imap_view.h"
#include "lib/offload.h"
#include "lib/util.h"

/* ---- SEARCH (RFC 3501 §6.4.4) ------------------------------------------- */

/* A search program: the keys compiled into a tree, evaluated per message,
 * the cheap tests (flags, sizes, dates, numbers) without opening the
 * message, header and body text through message.c only when reached. */
enum imap_skey_op {
	SK_ALL,
	SK_AND,                  /* kids */
	SK_OR,                   /* kids[0], kids[1] */
	SK_NOT,                  /* kids[0] */
	SK_SEQ,                  /* set of sequence numbers */
	SK_UID,                  /* set of UIDs */
	SK_FLAG,                 /* flag set (want) or clear (!want) */
	SK_NONE,                 /* KEYWORD x of a keyword the folder lacks */
	SK_LARGER, SK_SMALLER,   /* num */
	SK_BEFORE, SK_ON, SK_SINCE,               /* internal date, by day */
	SK_SENTBEFORE, SK_SENTON, SK_SENTSINCE,   /* Date: header, by day */
	SK_HEADER,               /* field contains str */
	SK_BODY,                 /* body contains str */
	SK_TEXT,                 /* header or body contains str */
	SK_MODSEQ,               /* MODSEQ at least num (RFC 7162 §3.1.5) */
};

struct imap_skey {
	enum imap_skey_op op;
	unsigned flag;
	bool want;
	uint64_t num;
	long long day;
	char *field;
	char *str;
	struct imap_seqset set;
	size_t nkids;
	struct imap_skey *kids;
	size_t slot;                     /* HEADER, BODY, TEXT: the worker's key
					  * (IMAP_SLOT_NONE: tested on the loop) */
};

enum { IMAP_SLOT_NONE = MESSAGE_SEARCH_KEYS_MAX };

static void imap_skey_free(struct imap_skey *k)
{
	for (size_t i = 0; i < k->nkids; i++)
		imap_skey_free(&k->kids[i]);
	free(k->kids);
	free(k->field);
	free(k->str);
	imap_seqset_clear(&k->set);
	memset(k, 0, sizeof *k);
}

struct imap_search_parse {
	struct imap_session *s;
	const struct imap_args *args;
	size_t pos;
	unsigned depth;                  /* of NOT, OR and parentheses */
	bool modseq;                     /* a MODSEQ key: the result names its MODSEQ */
	char err[IMAP_REASON_MAX];
};

static bool imap_search_key(struct imap_search_parse *sp, const struct imap_args *args,
			    size_t *pos, struct imap_skey *k);

/* The keys with a string argument, and the header field they search. */
static const struct {
	const char *name;
	enum imap_skey_op op;
	const char *field;
} imap_skey_strings[] = {
	{"BCC", SK_HEADER, "Bcc"}, {"CC", SK_HEADER, "Cc"}, {"FROM", SK_HEADER, "From"},
	{"SUBJECT", SK_HEADER, "Subject"}, {"TO", SK_HEADER, "To"},
	{"BODY", SK_BODY, NULL}, {"TEXT", SK_TEXT, NULL},
};

static const struct {
	const char *name;
	unsigned flag;
	bool want;
} imap_skey_flags[] = {
	{"ANSWERED", IMAP_FL_ANSWERED, true}, {"DELETED", IMAP_FL_DELETED, true},
	{"DRAFT", IMAP_FL_DRAFT, true}, {"FLAGGED", IMAP_FL_FLAGGED, true},
	{"RECENT", IMAP_FL_RECENT, true}, {"SEEN", IMAP_FL_SEEN, true},
	{"UNANSWERED", IMAP_FL_ANSWERED, false}, {"UNDELETED", IMAP_FL_DELETED, false},
	{"UNDRAFT", IMAP_FL_DRAFT, false}, {"UNFLAGGED", IMAP_FL_FLAGGED, false},
	{"UNSEEN", IMAP_FL_SEEN, false}, {"OLD", IMAP_FL_RECENT, false},
};

static const struct {
	const char *name;
	enum imap_skey_op op;
} imap_skey_dates[] = {
	{"BEFORE", SK_BEFORE}, {"ON", SK_ON}, {"SINCE", SK_SINCE},
	{"SENTBEFORE", SK_SENTBEFORE}, {"SENTON", SK_SENTON}, {"SENTSINCE", SK_SENTSINCE},
};

static bool imap_search_fail(struct imap_search_parse *sp, const char *why)
{
	/* why is a constant or another IMAP_REASON_MAX reason: it fits (a cut
	 * would end in "...") */
	errfmt(sp->err, sizeof sp->err, "%s", why);
	return false;
}

/* The string argument of a key (astring: atom, quoted or literal). */
static bool imap_search_string(struct imap_search_parse *sp, const struct imap_args *args,
			       size_t *pos, char **out)
{
	size_t len;
	const char *v = imap_arg_astring(imap_args_at(args, *pos), &len);
	if (!v)
		return imap_search_fail(sp, "Search key needs a string argument");
	(*pos)++;
	*out = xstrndup(v, len);
	return true;
}

static bool imap_search_kids(struct imap_search_parse *sp, const struct imap_args *args,
			     size_t *pos, struct imap_skey *k, size_t n)
{
	k->kids = xcalloc(n, sizeof *k->kids);
	for (size_t i = 0; i < n; i++) {
		k->nkids++;
		if (!imap_search_key(sp, args, pos, &k->kids[i]))
			return false;
	}
	return true;
}

/* A parenthesised list of keys: AND of them. */
static bool imap_search_list(struct imap_search_parse *sp, const struct imap_args *l,
			     struct imap_skey *k)
{
	if (l->n == 0)
		return imap_search_fail(sp, "Empty search key list");
	k->op = SK_AND;
	k->kids = xcalloc(l->n, sizeof *k->kids); /* no more keys than arguments */
	size_t pos = 0;
	while (pos < l->n) {
		if (!imap_search_key(sp, l, &pos, &k->kids[k->nkids++]))
			return false;
	}
	return true;
}

static bool imap_search_seqset(struct imap_search_parse *sp, const char *atom,
			       struct imap_skey *k, enum imap_skey_op op)
{
	char err[IMAP_REASON_MAX];
	if (!imap_parse_seqset(atom, &k->set, err, sizeof err))
		return imap_search_fail(sp, err);
	k->op = op;
	if (k->set.saved) { /* "$": the saved result's messages (RFC 5182 §2.1) */
		imap_saved_set(sp->s, true, &k->set);
		k->op = SK_UID;
	}
	return true;
}

/* MODSEQ [entry-name entry-type-req] mod-sequence-valzer (RFC 7162
 * §3.1.5): the metadata item is checked and not used, as MODSEQ is one
 * per message here (a flag's own MODSEQ is the message's). */
static bool imap_search_modseq(struct imap_search_parse *sp, const struct imap_args *args,
			       size_t *pos, struct imap_skey *k)
{
	size_t len;
	if (!imap_arg_u64(imap_args_at(args, *pos), &k->num)) {
		const char *entry = imap_arg_string(imap_args_at(args, *pos), &len);
		const struct imap_arg *type = imap_args_at(args, *pos + 1);
		if (!entry || strncasecmp(entry, "/flags/", 7) != 0 ||
		    !(imap_arg_is(type, "priv") || imap_arg_is(type, "shared") ||
		      imap_arg_is(type, "all")) ||
		    !imap_arg_u64(imap_args_at(args, *pos + 2), &k->num))
			return imap_search_fail(sp, "Syntax: MODSEQ [\"/flags/name\" priv|shared|all] "
						    "modseq");
		*pos += 2;
	}
	(*pos)++;
	k->op = SK_MODSEQ;
	sp->modseq = true;
	return true;
}

static bool imap_search_named(struct imap_search_parse *sp, const char *name,
			      const struct imap_args *args, size_t *pos, struct imap_skey *k)
{
	for (size_t i = 0; i < ARRAY_LEN(imap_skey_flags); i++) {
		if (strcasecmp(name, imap_skey_flags[i].name) == 0) {
			k->op = SK_FLAG;
			k->flag = imap_skey_flags[i].flag;
			k->want = imap_skey_flags[i].want;
			return true;
		}
	}
	for (size_t i = 0; i < ARRAY_LEN(imap_skey_strings); i++) {
		if (strcasecmp(name, imap_skey_strings[i].name) == 0) {
			k->op = imap_skey_strings[i].op;
			if (imap_skey_strings[i].field)
				k->field = xstrdup(imap_skey_strings[i].field);
			return imap_search_string(sp, args, pos, &k->str);
		}
	}
	for (size_t i = 0; i < ARRAY_LEN(imap_skey_dates); i++) {
		if (strcasecmp(name, imap_skey_dates[i].name) == 0) {
			size_t len;
			const char *v = imap_arg_astring(imap_args_at(args, *pos), &len);
			if (!v || !imap_parse_date(v, &k->day))
				return imap_search_fail(sp, "Invalid date in search key");
			(*pos)++;
			k->op = imap_skey_dates[i].op;
			return true;
		}
	}
	if (strcasecmp(name, "ALL") == 0) {
		k->op = SK_ALL;
		return true;
	}
	if (strcasecmp(name, "NEW") == 0) { /* RECENT UNSEEN */
		k->op = SK_AND;
		k->kids = xcalloc(2, sizeof *k->kids);
		k->nkids = 2;
		k->kids[0] = (struct imap_skey){.op = SK_FLAG, .flag = IMAP_FL_RECENT, .want = true};
		k->kids[1] = (struct imap_skey){.op = SK_FLAG, .flag = IMAP_FL_SEEN, .want = false};
		return true;
	}
	if (strcasecmp(name, "KEYWORD") == 0 || strcasecmp(name, "UNKEYWORD") == 0) {
		const char *kw = imap_arg_atom(imap_args_at(args, *pos));
		if (!kw)
			return imap_search_fail(sp, "KEYWORD needs a flag keyword");
		(*pos)++;
		bool want = strcasecmp(name, "KEYWORD") == 0;
		/* a keyword the folder does not know is on no message */
		int idx = mailbox_keywords_find(mailbox_keywords(sp->s->view), kw);
		if (idx < 0) {
			k->op = want ? SK_NONE : SK_ALL;
			return true;
		}
		k->op = SK_FLAG;
		k->flag = MAILBOX_KEYWORD(idx);
		k->want = want;
		return true;
	}
	if (strcasecmp(name, "HEADER") == 0) {
		k->op = SK_HEADER;
		return imap_search_string(sp, args, pos, &k->field) &&
		       imap_search_string(sp, args, pos, &k->str);
	}
	if (strcasecmp(name, "LARGER") == 0 || strcasecmp(name, "SMALLER") == 0) {
		if (!imap_arg_u64(imap_args_at(args, *pos), &k->num))
			return imap_search_fail(sp, "LARGER and SMALLER need a number");
		(*pos)++;
		k->op = strcasecmp(name, "LARGER") == 0 ? SK_LARGER : SK_SMALLER;
		return true;
	}
	if (strcasecmp(name, "UID") == 0) {
		const char *set = imap_arg_raw_atom(imap_args_at(args, *pos));
		if (!set)
			return imap_search_fail(sp, "UID needs a set of UIDs");
		(*pos)++;
		return imap_search_seqset(sp, set, k, SK_UID);
	}
	if (strcasecmp(name, "MODSEQ") == 0)
		return imap_search_modseq(sp, args, pos, k);
	if (strcasecmp(name, "NOT") == 0) {
		k->op = SK_NOT;
		return imap_search_kids(sp, args, pos, k, 1);
	}
	if (strcasecmp(name, "OR") == 0) {
		k->op = SK_OR;
		return imap_search_kids(sp, args, pos, k, 2);
	}
	return imap_search_seqset(sp, name, k, SK_SEQ);
}

static bool imap_search_key(struct imap_search_parse *sp, const struct imap_args *args,
			    size_t *pos, struct imap_skey *k)
{
	const struct imap_arg *a = imap_args_at(args, *pos);
	if (!a)
		return imap_search_fail(sp, "Missing search key");
	if (sp->depth >= IMAP_SEARCH_DEPTH_MAX)
		return imap_search_fail(sp, "Search keys nested too deeply");
	const struct imap_args *l = imap_arg_list(a);
	(*pos)++;
	sp->depth++;
	bool ok;
	const char *name = imap_arg_raw_atom(a);
	if (l)
		ok = imap_search_list(sp, l, k);
	else if (!name)
		ok = imap_search_fail(sp, "Invalid search key");
	else
		ok = imap_search_named(sp, name, args, pos, k);
	sp->depth--;
	if (!ok && !sp->err[0])
		imap_search_fail(sp, "Unknown search key");
	return ok;
}

/* Resolve the sets of the program against the view. */
static void imap_skey_resolve(const struct imap_session *s, struct imap_skey *k)
{
	size_t n = imap_count(s);
	if (k->op == SK_SEQ)
		imap_seqset_resolve(&k->set, (uint32_t)n);
	else if (k->op == SK_UID)
		imap_seqset_resolve(&k->set, n ? imap_uid_at(s, n - 1) : 0);
	for (size_t i = 0; i < k->nkids; i++)
		imap_skey_resolve(s, &k->kids[i]);
}

/* The day (since the epoch) of a time as the server's calendar shows it:
 * RFC 3501 §6.4.4 compares dates "disregarding time and timezone". */
static long long imap_day_of(long long t)
{
	time_t tt = (time_t)t;
	struct tm tm;
	if (!localtime_r(&tt, &tm))
		return t / 86400;
	return imap_days_from_civil(tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday);
}

static bool imap_day_cmp(enum imap_skey_op op, long long day, long long want)
{
	switch (op) {
	case SK_BEFORE: case SK_SENTBEFORE: return day < want;
	case SK_ON: case SK_SENTON: return day == want;
	default: return day >= want;
	}
}

/* ---- the text keys on workers ------------------------------------------------ */

enum {
	IMAP_SEARCH_CHUNK = 256,         /* messages in one worker job */
	IMAP_SEARCH_JOBS = 2,            /* a session's jobs at a time: two cores,
					  * and others' logins between chunks */
	IMAP_SEARCH_STEP_MESSAGES = 512, /* messages a step looks at when no key
					  * reads a file on the loop */
};

#define IMAP_NO_DATE LLONG_MIN

/* What a message needs, once the keys that read no file were looked at. */
enum imap_decided { IMAP_DECIDED_NO, IMAP_DECIDED_YES, IMAP_TESTED };

/* The answers of the text keys for the messages of the view as it was
 * when the search began (the session waits meanwhile: it cannot change). */
struct imap_search_content {
	struct imap_session *s;
	struct message_search_key keys[MESSAGE_SEARCH_KEYS_MAX]; /* into the program */
	size_t nkeys;
	size_t count;                    /* messages in the view at the start */
	uint32_t *uid;                   /* per message, at the start */
	uint8_t *state;                  /* per message: enum imap_decided */
	uint64_t *found;                 /* IMAP_TESTED: bit k, keys[k] matched */
	size_t next;                     /* the next message to hand out */
	struct offload_job *jobs[IMAP_SEARCH_JOBS];
	unsigned running;
	bool waiting;                    /* s->store_busy is ours */
	bool cheap;                      /* no key left that reads on the loop */
	bool sent;                       /* SENT* keys: the workers read Date: */
	long long *sent_day;             /* IMAP_TESTED, sent: the Date:'s day,
					  * IMAP_NO_DATE without one */
	unsigned failed;                 /* files that could not be read */
	char err[256];                   /* the first reason */
};

/* One worker job: its own copy of the keys (the program may go first). */
struct imap_search_chunk {
	unsigned slot;                   /* in content's jobs */
	struct message_search_key keys[MESSAGE_SEARCH_KEYS_MAX];
	size_t nkeys;
	size_t n;
	size_t index[IMAP_SEARCH_CHUNK];
	char *path[IMAP_SEARCH_CHUNK];   /* NULL: not in the folder any more */
	uint64_t found[IMAP_SEARCH_CHUNK];
	bool sent;
	long long sent_day[IMAP_SEARCH_CHUNK];
	unsigned failed;
	char err[256];
};

static void imap_search_chunk_free(void *work)
{
	struct imap_search_chunk *ch = work;
	for (size_t k = 0; k < ch->nkeys; k++) {
		free((char *)ch->keys[k].field);
		free((char *)ch->keys[k].needle);
	}
	for (size_t m = 0; m < ch->n; m++)
		free(ch->path[m]);
	free(ch);
}

/* The day of a message's Date: in the header's own zone (RFC 3501 §6.4.4
 * SENT*), as GMime's parse reads it; IMAP_NO_DATE without one, or when
 * the file is gone (then the internal date counts, as on the loop). */
static long long imap_search_sent_day(const char *path)
{
	char err[256];
	struct message *msg = path ? message_get(NULL, path, err, sizeof err) : NULL;
	int64_t when;
	int tz;
	long long day = IMAP_NO_DATE;
	if (msg && message_sent_date(msg, &when, &tz)) {
		long long local = (long long)when + (long long)tz * 60;
		day = local >= 0 ? local / 86400 : -((-local + 86399) / 86400);
	}
	message_put(msg);
	return day;
}

/* On a worker: each message's file once (and parsed once more for SENT*);
 * a file gone (renamed by a flag change elsewhere, expunged) matches
 * nothing, as on the loop. */
static void imap_search_chunk_run(void *work)
{
	struct imap_search_chunk *ch = work;
	for (size_t m = 0; m < ch->n; m++) {
		char err[256];
		if (ch->sent)
			ch->sent_day[m] = imap_search_sent_day(ch->path[m]);
		if (ch->path[m] && ch->nkeys > 0 &&
		    message_search_file(ch->path[m], ch->keys, ch->nkeys, MESSAGE_SEARCH_AUTO,
					&ch->found[m], err, sizeof err) < 0 &&
		    errno != ENOENT && ch->failed++ == 0)
			memcpy(ch->err, err, sizeof err);
	}
}

static void imap_search_content_pump(struct imap_search_content *c);

/* On the loop: a chunk's answers; the next chunk; the session goes on
 * when the last is in. */
static void imap_search_chunk_done(void *owner, void *work)
{
	struct imap_search_content *c = owner;
	struct imap_search_chunk *ch = work;
	c->jobs[ch->slot] = NULL;
	c->running--;
	for (size_t m = 0; m < ch->n; m++) {
		c->found[ch->index[m]] = ch->found[m];
		if (c->sent)
			c->sent_day[ch->index[m]] = ch->sent_day[m];
	}
	if (ch->failed && c->failed == 0)
		memcpy(c->err, ch->err, sizeof c->err);
	c->failed += ch->failed;
	imap_search_chunk_free(ch);
	imap_search_content_pump(c);
	if (c->running == 0 && c->waiting) {
		c->waiting = false;
		c->s->store_busy = false;
		if (c->failed)
			imap_mailbox_log(c->s, "search", c->err);
		imap_resume(c->s);
	}
}

static struct imap_search_chunk *imap_search_chunk_new(const struct imap_search_content *c)
{
	struct imap_search_chunk *ch = xcalloc(1, sizeof *ch);
	ch->sent = c->sent;
	ch->nkeys = c->nkeys;
	for (size_t k = 0; k < c->nkeys; k++) {
		ch->keys[k].kind = c->keys[k].kind;
		ch->keys[k].field = c->keys[k].field ? xstrdup(c->keys[k].field) : NULL;
		ch->keys[k].needle = xstrdup(c->keys[k].needle);
	}
	return ch;
}

/* The next messages to test, with their paths now (the view does not
 * change while the session waits); NULL when none is left. */
static struct imap_search_chunk *imap_search_chunk_next(struct imap_search_content *c)
{
	while (c->next < c->count && c->state[c->next] != IMAP_TESTED)
		c->next++;
	if (c->next == c->count)
		return NULL;
	struct imap_search_chunk *ch = imap_search_chunk_new(c);
	while (c->next < c->count && ch->n < IMAP_SEARCH_CHUNK) {
		size_t i = c->next++;
		if (c->state[i] != IMAP_TESTED)
			continue;
		ch->index[ch->n] = i;
		ch->path[ch->n++] = mailbox_msg_path(c->s->view, i + 1);
	}
	return ch;
}

/* Hand out chunks while fewer than IMAP_SEARCH_JOBS are on workers. */
static void imap_search_content_pump(struct imap_search_content *c)
{
	while (c->running < IMAP_SEARCH_JOBS) {
		struct imap_search_chunk *ch = imap_search_chunk_next(c);
		if (!ch)
			return;
		unsigned slot = 0;
		while (c->jobs[slot])
			slot++;
		ch->slot = slot;
		c->running++;
		c->jobs[slot] = offload_submit(imap_search_chunk_run, imap_search_chunk_done,
					       imap_search_chunk_free, ch, c);
	}
}

/* The text keys of k into the worker's keys, in order, while they fit. */
static void imap_search_content_keys(struct imap_search_content *c, struct imap_skey *k)
{
	for (size_t i = 0; i < k->nkids; i++)
		imap_search_content_keys(c, &k->kids[i]);
	if (k->op != SK_HEADER && k->op != SK_BODY && k->op != SK_TEXT)
		return;
	k->slot = IMAP_SLOT_NONE;
	if (c->nkeys == MESSAGE_SEARCH_KEYS_MAX) {
		c->cheap = false;
		return;
	}
	k->slot = c->nkeys;
	c->keys[c->nkeys++] = (struct message_search_key){
		.kind = k->op == SK_HEADER ? MESSAGE_SEARCH_HEADER
			: k->op == SK_BODY ? MESSAGE_SEARCH_BODY : MESSAGE_SEARCH_TEXT,
		.field = k->field, .needle = k->str};
}

/* Does any key of k read the Date: (SENT*)? */
static bool imap_skey_reads(const struct imap_skey *k)
{
	if (k->op == SK_SENTBEFORE || k->op == SK_SENTON || k->op == SK_SENTSINCE)
		return true;
	for (size_t i = 0; i < k->nkids; i++)
		if (imap_skey_reads(&k->kids[i]))
			return true;
	return false;
}

enum imap_tri { TRI_NO, TRI_YES, TRI_MAYBE };

static bool imap_skey_match(struct imap_session *s, size_t i, const struct imap_skey *k,
			    const struct imap_search_content *c);

/* Message i by the keys that read no file: decided, or MAYBE when a text
 * (or SENT*) key may decide it. */
static enum imap_tri imap_skey_cheap(struct imap_session *s, size_t i, const struct imap_skey *k)
{
	enum imap_tri r;
	switch (k->op) {
	case SK_AND:
		r = TRI_YES;
		for (size_t j = 0; j < k->nkids && r != TRI_NO; j++) {
			enum imap_tri kid = imap_skey_cheap(s, i, &k->kids[j]);
			r = kid == TRI_NO ? TRI_NO : kid == TRI_MAYBE ? TRI_MAYBE : r;
		}
		return r;
	case SK_OR:
		r = TRI_NO;
		for (size_t j = 0; j < k->nkids && r != TRI_YES; j++) {
			enum imap_tri kid = imap_skey_cheap(s, i, &k->kids[j]);
			r = kid == TRI_YES ? TRI_YES : kid == TRI_MAYBE ? TRI_MAYBE : r;
		}
		return r;
	case SK_NOT:
		r = imap_skey_cheap(s, i, &k->kids[0]);
		return r == TRI_MAYBE ? TRI_MAYBE : r == TRI_YES ? TRI_NO : TRI_YES;
	case SK_HEADER: case SK_BODY: case SK_TEXT:
	case SK_SENTBEFORE: case SK_SENTON: case SK_SENTSINCE:
		return TRI_MAYBE;
	default:
		return imap_skey_match(s, i, k, NULL) ? TRI_YES : TRI_NO;
	}
}

static void imap_search_content_free(struct imap_search_content *c)
{
	if (!c)
		return;
	for (unsigned k = 0; k < IMAP_SEARCH_JOBS; k++)
		offload_cancel(c->jobs[k]); /* the worker finishes; the chunk is freed */
	if (c->waiting)
		c->s->store_busy = false;
	free(c->uid);
	free(c->state);
	free(c->found);
	free(c->sent_day);
	free(c);
}

/* Test the text keys of the program root on workers, for the messages the
 * other keys leave undecided; the session waits (store_busy) until the
 * answers are in.  NULL when there is nothing to test, or no workers
 * (tools, unit tests: the loop reads, as before). */
static struct imap_search_content *imap_search_content_start(struct imap_session *s,
							     struct imap_skey *root)
{
	if (!offload_running())
		return NULL;
	struct imap_search_content *c = xcalloc(1, sizeof *c);
	c->s = s;
	c->cheap = true;
	c->sent = imap_skey_reads(root);
	imap_search_content_keys(c, root);
	if (c->nkeys == 0 && !c->sent) {
		free(c);
		return NULL;
	}
	c->count = imap_count(s);
	size_t n = c->count ? c->count : 1;
	if (c->sent)
		c->sent_day = xcalloc(n, sizeof *c->sent_day);
	c->uid = xcalloc(n, sizeof *c->uid);
	c->state = xcalloc(n, sizeof *c->state);
	c->found = xcalloc(n, sizeof *c->found);
	for (size_t i = 0; i < c->count; i++) {
		c->uid[i] = imap_uid_at(s, i);
		enum imap_tri t = imap_skey_cheap(s, i, root);
		c->state[i] = t == TRI_NO ? IMAP_DECIDED_NO : t == TRI_YES ? IMAP_DECIDED_YES : IMAP_TESTED;
	}
	imap_search_content_pump(c);
	if (c->running > 0) {
		c->waiting = true;
		s->store_busy = true;
	}
	return c;
}

/* Are c's answers those of message i of the view now? */
static bool imap_search_content_has(const struct imap_search_content *c,
				    const struct imap_session *s, size_t i)
{
	return c && !c->waiting && i < c->count && c->uid[i] == imap_uid_at(s, i);
}

/* A text key: the worker's answer when there is one, else the file read
 * here (a context's update, more keys than a worker takes). */
static bool imap_skey_text(struct imap_session *s, size_t i, const struct imap_skey *k,
			   const struct imap_search_content *c)
{
	if (imap_search_content_has(c, s, i) && k->slot < c->nkeys && c->state[i] == IMAP_TESTED)
		return (c->found[i] >> k->slot) & 1;
	switch (k->op) {
	case SK_HEADER: return imap_msg_header_has(s, i, k->field, k->str);
	case SK_BODY: return imap_msg_body_has(s, i, k->str, false);
	default: return imap_msg_body_has(s, i, k->str, true);
	}
}

/* The whole program for message i: what the keys without files decided,
 * else every key with the workers' answers. */
static bool imap_search_decide(struct imap_session *s, size_t i, const struct imap_skey *root,
			       const struct imap_search_content *c)
{
	if (imap_search_content_has(c, s, i) && c->state[i] != IMAP_TESTED)
		return c->state[i] == IMAP_DECIDED_YES;
	return imap_skey_match(s, i, root, c);
}

/* Does any key of k read a message file (the text keys, SENT*)? */
static bool imap_skey_reads_file(const struct imap_skey *k)
{
	if (k->op == SK_HEADER || k->op == SK_BODY || k->op == SK_TEXT ||
	    k->op == SK_SENTBEFORE || k->op == SK_SENTON || k->op == SK_SENTSINCE)
		return true;
	for (size_t i = 0; i < k->nkids; i++)
		if (imap_skey_reads_file(&k->kids[i]))
			return true;
	return false;
}

/* May a step look at many messages (nothing is read on the loop)? */
static bool imap_search_content_cheap(const struct imap_search_content *c,
				      const struct imap_skey *root)
{
	return c ? c->cheap : !imap_skey_reads_file(root);
}

static bool imap_skey_match(struct imap_session *s, size_t i, const struct imap_skey *k,
			    const struct imap_search_content *c)
{
	switch (k->op) {
	case SK_ALL: return true;
	case SK_NONE: return false;
	case SK_AND:
		for (size_t j = 0; j < k->nkids; j++)
			if (!imap_skey_match(s, i, &k->kids[j], c))
				return false;
		return true;
	case SK_OR:
		return imap_skey_match(s, i, &k->kids[0], c) || imap_skey_match(s, i, &k->kids[1], c);
	case SK_NOT: return !imap_skey_match(s, i, &k->kids[0], c);
	case SK_SEQ: return imap_seqset_contains(&k->set, (uint32_t)(i + 1));
	case SK_UID: return imap_seqset_contains(&k->set, imap_uid_at(s, i));
	case SK_FLAG: return ((imap_flags_at(s, i) & k->flag) != 0) == k->want;
	case SK_LARGER: return imap_size_at(s, i) > k->num;
	case SK_SMALLER: return imap_size_at(s, i) < k->num;
	case SK_BEFORE: case SK_ON: case SK_SINCE:
		return imap_day_cmp(k->op, imap_day_of(imap_date_at(s, i)), k->day);
	case SK_SENTBEFORE: case SK_SENTON: case SK_SENTSINCE: {
		long long day;
		if (imap_search_content_has(c, s, i) && c->sent && c->state[i] == IMAP_TESTED)
			day = c->sent_day[i];
		else if (!imap_msg_sent_day(s, i, &day))
			day = IMAP_NO_DATE;
		if (day == IMAP_NO_DATE) /* no Date: the internal date */
			day = imap_day_of(imap_date_at(s, i));
		return imap_day_cmp(k->op, day, k->day);
	}
	case SK_HEADER: case SK_BODY: case SK_TEXT: return imap_skey_text(s, i, k, c);
	case SK_MODSEQ: return imap_modseq_at(s, i) >= k->num;
	}
	return false;
}

/* ---- the program for SORT and THREAD ------------------------------------ */

struct imap_search_prog {
	struct imap_skey root;           /* AND of the keys */
	struct imap_search_content *content; /* the text keys' answers */
};

struct imap_search_prog *imap_search_compile(struct imap_session *s, const struct imap_args *args,
					     size_t pos, char *err, size_t errsz)
{
	if (pos >= args->n) {
		errfmt(err, errsz, "Missing search key");
		return NULL;
	}
	struct imap_search_parse sp = {.s = s};
	struct imap_search_prog *p = xcalloc(1, sizeof *p);
	p->root.op = SK_AND;
	p->root.kids = xcalloc(args->n - pos, sizeof *p->root.kids);
	while (pos < args->n) {
		if (!imap_search_key(&sp, args, &pos, &p->root.kids[p->root.nkids++])) {
			errfmt(err, errsz, "%s", sp.err);
			imap_search_prog_free(p);
			return NULL;
		}
	}
	imap_skey_resolve(s, &p->root);
	p->content = imap_search_content_start(s, &p->root);
	return p;
}

bool imap_search_matches(struct imap_session *s, const struct imap_search_prog *p, size_t i)
{
	return imap_search_decide(s, i, &p->root, p->content);
}

bool imap_search_reads(const struct imap_search_prog *p)
{
	return !imap_search_content_cheap(p->content, &p->root);
}

bool imap_search_is_all(const struct imap_search_prog *p)
{
	for (size_t i = 0; i < p->root.nkids; i++)
		if (p->root.kids[i].op != SK_ALL)
			return false;
	return true;
}

void imap_search_prog_free(struct imap_search_prog *p)
{
	if (!p)
		return;
	imap_search_content_free(p->content);
	imap_skey_free(&p->root);
	free(p);
}

/* A program as a live search context keeps it (imap_esearch.h). */
static bool imap_search_kept_match(struct imap_session *s, size_t i, const void *prog)
{
	return imap_skey_match(s, i, prog, NULL);
}

static void imap_search_kept_free(void *prog)
{
	if (!prog)
		return;
	imap_skey_free(prog);
	free(prog);
}

static const struct imap_search_prog_ops imap_search_prog_ops = {imap_search_kept_match,
								   imap_search_kept_free};

/* The SEARCH job: one message per step; "* SEARCH" and the numbers go
 * out as they are found, or with RETURN are collected for ESEARCH. */
struct imap_search_job {
	struct imap_skey prog;
	struct imap_search_content *content; /* the text keys' answers */
	bool uid;
	bool modseq;                     /* say the highest MODSEQ found */
	uint64_t top;
	size_t next;
	struct imap_out out;
	struct imap_search_return ret;   /* RFC 4731 RETURN (...) */
	struct imap_search_found found;  /* with RETURN */
};

/* The end of a search with RETURN: the ESEARCH response, "$", a context
 * (which takes the program). */
static void imap_search_finish_esearch(struct imap_session *s, struct imap_search_job *j)
{
	void *prog = NULL;
	if (j->ret.opts & IMAP_RET_UPDATE) {
		struct imap_skey *kept = xmalloc(sizeof *kept);
		*kept = j->prog;
		memset(&j->prog, 0, sizeof j->prog);
		prog = kept;
	}
	imap_esearch_done(s, &j->out, j->uid, &j->ret, &j->found, j->modseq,
			  &imap_search_prog_ops, &prog);
	imap_search_kept_free(prog); /* not kept: a struct imap_skey */
	imap_send(s, &j->out);
}

/* Message i into the result. */
static void imap_search_one(struct imap_session *s, struct imap_search_job *j, size_t i)
{
	if (!imap_search_decide(s, i, &j->prog, j->content)) {
		/* not found */
	} else if (j->ret.given) {
		imap_search_found_add(&j->found, (uint32_t)(i + 1), imap_uid_at(s, i),
				      imap_modseq_at(s, i));
	} else {
		imap_out_printf(&j->out, " %lu", (unsigned long)(j->uid ? imap_uid_at(s, i) : i + 1));
		if (imap_modseq_at(s, i) > j->top)
			j->top = imap_modseq_at(s, i);
	}
}

static bool imap_search_step(struct imap_session *s)
{
	struct imap_search_job *j = s->job_data;
	if (j->next < imap_count(s)) {
		/* one message at a time while one may be read here */
		size_t n = imap_search_content_cheap(j->content, &j->prog) ? IMAP_SEARCH_STEP_MESSAGES : 1;
		while (n-- > 0 && j->next < imap_count(s) && !imap_out_full(&j->out))
			imap_search_one(s, j, j->next++);
		if (imap_out_full(&j->out))
			imap_send(s, &j->out);
		imap_msg_release(s);
		return false;
	}
	if (j->ret.given) {
		imap_search_finish_esearch(s, j);
		imap_ok(s, "SEARCH completed");
		return true;
	}
	/* RFC 7162 §3.1.5: the highest MODSEQ of the messages found */
	if (j->modseq && j->top)
		imap_out_printf(&j->out, " (MODSEQ %llu)", (unsigned long long)j->top);
	imap_out_add(&j->out, "\r\n", 2);
	imap_send(s, &j->out);
	imap_ok(s, "SEARCH completed");
	return true;
}

static void imap_search_stop(struct imap_session *s)
{
	struct imap_search_job *j = s->job_data;
	imap_search_content_free(j->content);
	imap_skey_free(&j->prog);
	imap_search_found_free(&j->found);
	imap_out_free(&j->out);
	free(j);
}

static const struct imap_job_ops imap_search_ops = {imap_search_step, imap_search_stop};

/* A SEARCH refused: with SAVE, "$" is empty now (RFC 5182 §2.1). */
static void imap_search_refused(struct imap_session *s, const struct imap_search_return *r)
{
	if (r->opts & IMAP_RET_SAVE)
		imap_saved_replace(s, NULL, 0);
}

/* SEARCH [CHARSET name] key...: UTF-8 and US-ASCII (its subset) are the
 * charsets; strings are compared after message.c decoded the message's
 * own charsets to UTF-8. */
void imap_cmd_search(struct imap_session *s, const struct imap_command *c)
{
	bool uid = imap_is_uid(c);
	struct imap_search_parse sp = {.s = s};
	size_t pos = 0;
	struct imap_search_return ret;
	char err[IMAP_REASON_MAX];
	if (!imap_search_return_parse(&c->args, &pos, &ret, err, sizeof err)) {
		imap_bad(s, err);
		return;
	}
	if (imap_arg_is(imap_args_at(&c->args, pos), "CHARSET")) {
		size_t len;
		const char *cs = imap_arg_astring(imap_args_at(&c->args, pos + 1), &len);
		if (!cs) {
			imap_search_refused(s, &ret);
			imap_bad(s, "Syntax: SEARCH [CHARSET name] key ...");
			return;
		}
		if (strcasecmp(cs, "UTF-8") != 0 && strcasecmp(cs, "US-ASCII") != 0) {
			imap_search_refused(s, &ret);
			imap_no(s, "[BADCHARSET (UTF-8 US-ASCII)] Unknown charset");
			return;
		}
		pos += 2;
	}
	if (pos >= c->args.n) {
		imap_search_refused(s, &ret);
		imap_bad(s, "Syntax: SEARCH [CHARSET name] key ...");
		return;
	}
	struct imap_search_job *j = xcalloc(1, sizeof *j);
	j->prog.op = SK_AND;
	j->prog.kids = xcalloc(c->args.n - pos, sizeof *j->prog.kids);
	while (pos < c->args.n) {
		if (!imap_search_key(&sp, &c->args, &pos, &j->prog.kids[j->prog.nkids++])) {
			imap_search_refused(s, &ret);
			imap_bad(s, sp.err);
			imap_skey_free(&j->prog);
			free(j);
			return;
		}
	}
	imap_skey_resolve(s, &j->prog);
	j->uid = uid;
	j->ret = ret;
	j->modseq = sp.modseq;
	if (sp.modseq)
		imap_condstore_enable(s); /* RFC 7162 §3.1 */
	imap_out_init(&j->out);
	if (!ret.given)
		imap_out_add(&j->out, "* SEARCH", 8);
	j->content = imap_search_content_start(s, &j->prog);
	imap_job_start(s, &imap_search_ops, j);
}

/* imap_view: the selected folder, its sequence sets, its messages and
 * their flags as an IMAP session sees them (see imap_view.h).  RFC 3501
 * §2.3.1 (UIDs, sequence numbers), §2.3.2 (flags), §9 (sequence-set),
 * RFC 2180 §4.1 (messages another session expunged). */
#include "proto/imap/imap_view.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "lib/util.h"
#include "net/conn.h"

/* ---- flags ------------------------------------------------------------------ */

static const struct {
	const char *name;
	unsigned bit;
} imap_flag_names[] = {
	{"\\Answered", IMAP_FL_ANSWERED}, {"\\Flagged", IMAP_FL_FLAGGED},
	{"\\Deleted", IMAP_FL_DELETED}, {"\\Seen", IMAP_FL_SEEN}, {"\\Draft", IMAP_FL_DRAFT},
	{"\\Recent", IMAP_FL_RECENT},
};

/* One flag of a flag-list, after a space unless it is the first. */
static void imap_flag_add(struct imap_out *out, bool *first, const char *name)
{
	if (!*first)
		imap_out_add(out, " ", 1);
	imap_out_add(out, name, strlen(name));
	*first = false;
}

void imap_flags_text(struct imap_out *out, const struct mailbox *mb, unsigned flags)
{
	/* FETCH 1:* (FLAGS) of a large folder comes here once a message: no
	 * printf, and the keywords' names only when a keyword is set */
	char list[96];
	size_t n = 0;
	bool first = true;
	list[n++] = '(';
	for (size_t i = 0; i < ARRAY_LEN(imap_flag_names); i++) {
		if (!(flags & imap_flag_names[i].bit))
			continue;
		if (!first)
			list[n++] = ' ';
		size_t len = strlen(imap_flag_names[i].name); /* at most 9: all six fit */
		memcpy(list + n, imap_flag_names[i].name, len);
		n += len;
		first = false;
	}
	imap_out_add(out, list, n);
	const struct mailbox_keywords *kw =
		mb && (flags & MAILBOX_KEYWORDS_ALL) ? mailbox_keywords(mb) : NULL;
	for (unsigned i = 0; kw && i < MAILBOX_KEYWORDS_MAX; i++) {
		if ((flags & MAILBOX_KEYWORD(i)) && kw->name[i][0])
			imap_flag_add(out, &first, kw->name[i]);
	}
	imap_out_add(out, ")", 1);
}

bool imap_flags_of_folder(char *buf, size_t size, const struct mailbox *mb, bool permanent)
{
	const struct mailbox_keywords *kw = mailbox_keywords(mb);
	size_t len = 0;
	if (!bsnprintf(buf, size, "\\Answered \\Flagged \\Deleted \\Seen \\Draft"))
		return false;
	len = strlen(buf);
	for (unsigned i = 0; i < MAILBOX_KEYWORDS_MAX; i++) {
		if (!kw->name[i][0])
			continue;
		if (!bsnprintf(buf + len, size - len, " %s", kw->name[i]))
			return false;
		len += strlen(buf + len);
	}
	if (permanent && mailbox_keywords_count(kw) < MAILBOX_KEYWORDS_MAX)
		return bsnprintf(buf + len, size - len, " \\*");
	return true;
}

/* Add keyword f to kw unless it is there (case-insensitive). */
static bool imap_keyword_add(struct imap_keyword_names *kw, const char *f, const char **err)
{
	if (!mailbox_keyword_valid(f)) {
		*err = "Invalid keyword (at most 64 atom characters)";
		return false;
	}
	for (size_t k = 0; k < kw->n; k++)
		if (strcasecmp(kw->v[k], f) == 0)
			return true;
	if (kw->n == MAILBOX_KEYWORDS_MAX) {
		*err = "Too many keywords in one command";
		return false;
	}
	kw->v[kw->n++] = f;
	return true;
}

/* The system flags and keywords; \Recent may not be set by a client
 * (RFC 3501 §2.3.2). */
bool imap_flags_parse_args(const struct imap_args *l, unsigned *flags,
			   struct imap_keyword_names *kw, const char **err)
{
	*flags = 0;
	kw->n = 0;
	for (size_t i = 0; i < l->n; i++) {
		const char *f = imap_arg_flag(imap_args_at(l, i));
		if (!f) {
			*err = "Invalid flag";
			return false;
		}
		if (f[0] != '\\') {
			if (!imap_keyword_add(kw, f, err))
				return false;
			continue;
		}
		size_t k = 0;
		while (k < ARRAY_LEN(imap_flag_names) && strcasecmp(f, imap_flag_names[k].name) != 0)
			k++;
		if (k == ARRAY_LEN(imap_flag_names) || imap_flag_names[k].bit == IMAP_FL_RECENT) {
			*err = "Invalid system flag";
			return false;
		}
		*flags |= imap_flag_names[k].bit;
	}
	return true;
}

/* FLAGS and PERMANENTFLAGS of the selected folder (RFC 3501 §7.2.6, §7.1):
 * at SELECT, and again whenever its keywords change. */
static void imap_keywords_lines(const struct imap_session *s, bool examine, char *flags,
				char *perm, size_t size)
{
	if (!imap_flags_of_folder(flags, size, s->view, false) ||
	    !imap_flags_of_folder(perm, size, s->view, !examine))
		fatal("imap: the flags of a folder do not fit");
	if (examine)
		perm[0] = '\0';
}

enum { IMAP_FLAGS_TEXT_MAX = 64 + MAILBOX_KEYWORDS_MAX * (MAILBOX_KEYWORD_LEN + 1) };

void imap_keywords_select(struct imap_session *s, bool examine)
{
	char flags[IMAP_FLAGS_TEXT_MAX], perm[IMAP_FLAGS_TEXT_MAX];
	imap_keywords_lines(s, examine, flags, perm, sizeof flags);
	conn_printf(s->io, "* FLAGS (%s)", flags);
	conn_printf(s->io, "* OK [PERMANENTFLAGS (%s)] %s", perm,
		    examine ? "No permanent flags permitted" : "Flags permitted");
}

void imap_keywords_announce(struct imap_session *s)
{
	if (s->view && mailbox_keywords_take_changed(s->view))
		imap_keywords_select(s, mailbox_read_only(s->view));
}

void imap_keywords_text(const struct imap_session *s, struct imap_out *out)
{
	bool examine = mailbox_read_only(s->view);
	char flags[IMAP_FLAGS_TEXT_MAX], perm[IMAP_FLAGS_TEXT_MAX];
	imap_keywords_lines(s, examine, flags, perm, sizeof flags);
	imap_out_printf(out, "* FLAGS (%s)\r\n* OK [PERMANENTFLAGS (%s)] %s\r\n", flags, perm,
			examine ? "No permanent flags permitted" : "Flags permitted");
}

/* ---- the selected folder (mailbox.c) ---------------------------------------- */

static const struct mailbox_msg *imap_m(const struct imap_session *s, size_t i)
{
	const struct mailbox_msg *m = mailbox_msg(s->view, i + 1);
	if (!m)
		fatal("imap: message %zu outside the view", i + 1);
	return m;
}

size_t imap_count(const struct imap_session *s)
{
	return s->view ? mailbox_count(s->view) : 0;
}

uint32_t imap_uid_at(const struct imap_session *s, size_t i)
{
	return imap_m(s, i)->uid;
}

unsigned imap_flags_at(const struct imap_session *s, size_t i)
{
	return imap_m(s, i)->flags;
}

uint64_t imap_size_at(const struct imap_session *s, size_t i)
{
	return imap_m(s, i)->size;
}

long long imap_date_at(const struct imap_session *s, size_t i)
{
	return imap_m(s, i)->internal_date;
}

uint64_t imap_modseq_at(const struct imap_session *s, size_t i)
{
	return imap_m(s, i)->modseq;
}

void imap_condstore_enable(struct imap_session *s)
{
	if (s->condstore)
		return;
	s->condstore = true;
	if (s->view)
		conn_printf(s->io, "* OK [HIGHESTMODSEQ %llu] Highest",
			    (unsigned long long)mailbox_highestmodseq(s->view));
}

/* The part of range r that is in uids (resolved), as ranges into out;
 * the first one begins the VANISHED line. */
static void imap_ranges_within(struct imap_out *out, bool *first, const struct mailbox_uid_range *r,
			       const struct imap_seqset *uids)
{
	for (size_t k = 0; k < uids->n; k++) {
		uint32_t lo = uids->ranges[k].lo > r->lo ? uids->ranges[k].lo : r->lo;
		uint32_t hi = uids->ranges[k].hi < r->hi ? uids->ranges[k].hi : r->hi;
		if (lo > hi)
			continue;
		imap_out_printf(out, "%s%lu", *first ? "* VANISHED (EARLIER) " : ",", (unsigned long)lo);
		if (hi > lo)
			imap_out_printf(out, ":%lu", (unsigned long)hi);
		*first = false;
	}
}

bool imap_vanished_earlier(struct imap_session *s, struct imap_out *out, uint64_t since,
			   const struct imap_seqset *uids)
{
	struct mailbox_uid_ranges gone;
	char err[256];
	if (mailbox_vanished(s->view, since, &gone, err, sizeof err) != MAILBOX_OK) {
		imap_mailbox_log(s, "vanished", err);
		return false;
	}
	struct imap_seq_range all = {1, UINT32_MAX};
	const struct imap_seqset any = {.n = 1, .ranges = &all};
	bool first = true;
	for (size_t i = 0; i < gone.n; i++)
		imap_ranges_within(out, &first, &gone.v[i], uids ? uids : &any);
	if (!first)
		imap_out_add(out, "\r\n", 2);
	mailbox_uid_ranges_free(&gone);
	return true;
}

/* Still on disk as far as the view knows (RFC 2180 §4.1: a message another
 * session expunged is not fetched, and its EXPUNGE comes later). */
bool imap_msg_exists(struct imap_session *s, size_t i)
{
	return !imap_m(s, i)->expunged;
}

bool imap_view_readonly(const struct imap_session *s)
{
	return s->view && mailbox_read_only(s->view);
}

/* ---- sequence sets over the selected folder --------------------------------- */

/* The set of a FETCH/STORE/COPY/MOVE/UID EXPUNGE argument, resolved
 * against the view: sequence numbers must all exist (RFC 3501 §9: else
 * BAD), UIDs need not (§6.4.8).  Kept as ranges: never expanded. */
bool imap_set_parse(struct imap_session *s, const struct imap_arg *a, bool uid,
		    struct imap_seqset *set)
{
	const char *atom = imap_arg_raw_atom(a);
	char err[IMAP_REASON_MAX];
	if (!atom) {
		imap_bad(s, "Missing sequence set");
		return false;
	}
	if (!imap_parse_seqset(atom, set, err, sizeof err)) {
		imap_bad(s, err);
		return false;
	}
	if (set->saved) { /* RFC 5182 §2.1: the saved result, maybe empty */
		imap_saved_set(s, uid, set);
		return true;
	}
	size_t n = imap_count(s);
	if (uid) {
		imap_seqset_resolve(set, n ? imap_uid_at(s, n - 1) : 0);
		return true;
	}
	imap_seqset_resolve(set, (uint32_t)n);
	if (set->n == 0 || set->ranges[0].lo < 1 || set->ranges[set->n - 1].hi > n) {
		imap_seqset_clear(set);
		imap_bad(s, "Invalid message sequence number");
		return false;
	}
	return true;
}

void imap_saved_replace(struct imap_session *s, const uint32_t *uids, size_t n)
{
	free(s->saved_uids);
	s->saved_uids = NULL;
	s->nsaved = 0;
	if (n == 0)
		return;
	s->saved_uids = xmalloc(n * sizeof *uids);
	memcpy(s->saved_uids, uids, n * sizeof *uids);
	s->nsaved = n;
}

/* Append v to a resolved set, merging it into the last range when it
 * follows it (v ascending). */
static void imap_seqset_append(struct imap_seqset *set, uint32_t v)
{
	if (set->n && set->ranges[set->n - 1].hi + 1 == v) {
		set->ranges[set->n - 1].hi = v;
		return;
	}
	struct imap_seq_range *r = xgrow(&set->ranges, &set->n, &set->cap, sizeof *r);
	r->lo = r->hi = v;
}

void imap_saved_set(const struct imap_session *s, bool uid, struct imap_seqset *set)
{
	imap_seqset_clear(set);
	for (size_t i = 0; i < s->nsaved; i++) {
		size_t seq = uid ? s->saved_uids[i] : mailbox_seq_of_uid(s->view, s->saved_uids[i]);
		if (seq) /* 0: expunged meanwhile */
			imap_seqset_append(set, (uint32_t)seq);
	}
}

/* The first index at or after from whose UID is >= uid (binary search:
 * the view is ordered by UID). */
static size_t imap_index_of_uid(const struct imap_session *s, size_t from, uint32_t uid)
{
	size_t lo = from, hi = imap_count(s);
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (imap_uid_at(s, mid) < uid)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

bool imap_match_fn(void *arg, size_t seq, uint32_t uid)
{
	const struct imap_match *m = arg;
	return imap_seqset_contains(m->set, m->uid ? uid : (uint32_t)seq);
}

bool imap_walk_next(const struct imap_session *s, struct imap_walk *w, size_t *index)
{
	size_t n = imap_count(s);
	while (w->range < w->set.n) {
		const struct imap_seq_range *r = &w->set.ranges[w->range];
		if (!w->started) {
			w->next = w->uid ? imap_index_of_uid(s, w->next, r->lo) : (size_t)r->lo - 1;
			w->started = true;
		}
		bool in = w->next < n &&
			  (w->uid ? imap_uid_at(s, w->next) <= r->hi : w->next + 1 <= r->hi);
		if (in) {
			*index = w->next++;
			return true;
		}
		w->range++;
		w->started = false;
	}
	return false;
}

/* ---- the messages (message.c) ----------------------------------------------- */

/* One cache of parsed summaries for every session (message.h). */
static struct message_cache *imap_cache;

void imap_msg_cache_free(void)
{
	if (imap_cache)
		message_cache_free(imap_cache);
	imap_cache = NULL;
}

/* The summary of message i, kept until imap_msg_release(); NULL when the
 * file cannot be read (logged unless it vanished). */
static struct message *imap_msg_get(struct imap_session *s, size_t i)
{
	if (s->msg && s->msg_index == i)
		return s->msg;
	imap_msg_release(s);
	if (!imap_cache)
		imap_cache = message_cache_new(0);
	char *path = mailbox_msg_path(s->view, i + 1);
	if (!path)
		return NULL;
	char err[256];
	s->msg = message_get(imap_cache, path, err, sizeof err);
	if (!s->msg) {
		if (errno != ENOENT)
			imap_mailbox_log(s, "read", err);
		free(path);
		return NULL;
	}
	s->msg_path = path;
	s->msg_index = i;
	return s->msg;
}

void imap_msg_release(struct imap_session *s)
{
	if (s->msg)
		message_put(s->msg);
	s->msg = NULL;
	free(s->msg_path);
	s->msg_path = NULL;
}

const char *imap_msg_envelope(struct imap_session *s, size_t i, size_t *len)
{
	struct message *m = imap_msg_get(s, i);
	return m ? message_envelope(m, len) : NULL;
}

const char *imap_msg_structure(struct imap_session *s, size_t i, bool extended, size_t *len)
{
	struct message *m = imap_msg_get(s, i);
	if (!m)
		return NULL;
	return extended ? message_bodystructure(m, len) : message_body(m, len);
}

bool imap_msg_section(struct imap_session *s, size_t i, const struct message_section_spec *sec,
		      struct imap_part *part)
{
	struct message *m = imap_msg_get(s, i);
	struct message_section ms;
	char err[256];
	memset(part, 0, sizeof *part);
	if (!m || message_section(m, s->msg_path, sec, &ms, err, sizeof err) < 0)
		return false;
	switch (ms.kind) {
	case MESSAGE_SECTION_RANGE:
		part->offset = ms.offset;
		part->length = ms.length;
		break;
	case MESSAGE_SECTION_BUFFER:
		part->built = xmalloc(ms.len + 1);
		memcpy(part->built, ms.buf, ms.len);
		part->built_len = ms.len;
		break;
	case MESSAGE_SECTION_NONE:
		part->built = xstrdup("");
		break;
	}
	message_section_free(&ms);
	return true;
}

struct message_stream *imap_msg_stream(struct imap_session *s, size_t i, uint64_t offset,
				       uint64_t length)
{
	struct message *m = imap_msg_get(s, i);
	return m ? message_stream_open(m, s->msg_path, offset, length) : NULL;
}

bool imap_msg_sent_day(struct imap_session *s, size_t i, long long *day)
{
	struct message *m = imap_msg_get(s, i);
	int64_t when;
	int tz;
	if (!m || !message_sent_date(m, &when, &tz))
		return false;
	long long local = (long long)when + (long long)tz * 60;
	*day = local >= 0 ? local / 86400 : -((-local + 86399) / 86400);
	return true;
}

bool imap_msg_header_has(struct imap_session *s, size_t i, const char *field, const char *str)
{
	struct message *m = imap_msg_get(s, i);
	char err[256];
	return m && message_header_contains(m, s->msg_path, field, str, err, sizeof err) == 1;
}

bool imap_msg_body_has(struct imap_session *s, size_t i, const char *str, bool text)
{
	struct message *m = imap_msg_get(s, i);
	char err[256];
	return m && message_text_contains(m, s->msg_path, text, str, err, sizeof err) == 1;
}

bool imap_flags_parse(const struct imap_arg *a, unsigned *flags, struct imap_keyword_names *kw,
		      const char **err)
{
	const struct imap_args *l = imap_arg_list(a);
	const struct imap_args one = {.n = 1, .v = (struct imap_arg *)a};
	return imap_flags_parse_args(l ? l : &one, flags, kw, err);
}

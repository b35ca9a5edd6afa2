/* imap_sort: SORT and UID SORT (RFC 5256 §3, RFC 5957 §3 DISPLAYFROM,
 * DISPLAYTO), and the sort keys shared with THREAD: collected by a job
 * one bounded step at a time, kept per selected session by UID within
 * IMAP_SORT_CACHE_MAX octets. */
#define _GNU_SOURCE /* qsort_r */
#include "proto/imap/imap_sort.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "proto/imap/imap_context.h"
#include "proto/imap/imap_esearch.h"
#include "proto/imap/imap_search.h"
#include "proto/imap/imap_subject.h"
#include "proto/imap/imap_view.h"
#include "store/message_keys.h"
#include "lib/util.h"

/* ---- the keys of a message ------------------------------------------------ */

static size_t sortkey_strsize(const char *s)
{
	return s ? strlen(s) + 1 : 0;
}

/* i;ascii-casemap (RFC 4790 §9.2): ASCII letters in upper case. */
static char *sortkey_ascii_casemap(const char *s)
{
	char *c = xstrdup(s ? s : "");
	for (char *p = c; *p; p++)
		if (*p >= 'a' && *p <= 'z')
			*p = (char)(*p - 'a' + 'A');
	return c;
}

static void sortkey_free(struct imap_sortkey *k)
{
	if (!k)
		return;
	free(k->subject);
	free(k->from);
	free(k->to);
	free(k->cc);
	free(k->display_from);
	free(k->display_to);
	free(k->message_id);
	for (size_t i = 0; i < k->nrefs; i++)
		free(k->refs[i]);
	free(k->refs);
	free(k);
}

/* The keys of message i from its header; a file that cannot be read
 * (expunged by another session meanwhile) has empty keys. */
static struct imap_sortkey *sortkey_read(struct imap_session *s, size_t i)
{
	struct message_keys mk;
	memset(&mk, 0, sizeof mk);
	char *path = mailbox_msg_path(s->view, i + 1);
	char err[256];
	if (path && message_keys_read(path, &mk, err, sizeof err) < 0 && errno != ENOENT)
		imap_mailbox_log(s, "read", err);
	free(path);
	struct imap_sortkey *k = xcalloc(1, sizeof *k);
	k->uid = imap_uid_at(s, i);
	k->subject = imap_base_subject(mk.subject, &k->reply);
	k->date = mk.has_date ? mk.date : imap_date_at(s, i); /* RFC 5256 §3 DATE */
	k->from = sortkey_ascii_casemap(mk.from.mailbox);
	k->to = sortkey_ascii_casemap(mk.to.mailbox);
	k->cc = sortkey_ascii_casemap(mk.cc.mailbox);
	k->display_from = imap_casemap(mk.from.display ? mk.from.display : "");
	k->display_to = imap_casemap(mk.to.display ? mk.to.display : "");
	k->message_id = mk.message_id;
	mk.message_id = NULL;
	k->refs = mk.refs;
	k->nrefs = mk.nrefs;
	mk.refs = NULL;
	mk.nrefs = 0;
	message_keys_free(&mk);
	k->mem = sizeof *k + sortkey_strsize(k->subject) + sortkey_strsize(k->from) +
		 sortkey_strsize(k->to) + sortkey_strsize(k->cc) + sortkey_strsize(k->display_from) +
		 sortkey_strsize(k->display_to) + sortkey_strsize(k->message_id) +
		 k->nrefs * sizeof *k->refs;
	for (size_t r = 0; r < k->nrefs; r++)
		k->mem += sortkey_strsize(k->refs[r]);
	return k;
}

/* ---- the keys kept between commands ------------------------------------------ */

/* The keys of one folder of one user, ascending by UID, valid while its
 * UIDVALIDITY is (a message's header never changes under its UID). */
struct sortkeys_folder {
	char *id;                        /* "maildir NUL folder name" as one string */
	uint32_t uidvalidity;
	struct imap_sortkey **v;
	size_t n;
	size_t mem;                      /* octets of the keys */
	uint64_t used;                   /* when last used (a tick) */
};

/* Every session's folders, least recently used dropped first past
 * IMAP_SORT_CACHE_MAX octets or IMAP_SORT_FOLDERS_MAX folders.  A folder
 * being sorted is taken out, so two sessions never share one. */
static struct {
	struct sortkeys_folder *v;
	size_t n;
	size_t mem;
	uint64_t tick;
} sortkeys_kept;

static void sortkeys_folder_free(struct sortkeys_folder *f)
{
	for (size_t i = 0; i < f->n; i++)
		sortkey_free(f->v[i]);
	free(f->v);
	free(f->id);
	memset(f, 0, sizeof *f);
}

static char *sortkeys_folder_id(const struct imap_session *s)
{
	const char *name = mailbox_name(s->view);
	size_t a = strlen(s->maildir), b = strlen(name);
	char *id = xmalloc(a + b + 2);
	memcpy(id, s->maildir, a + 1);
	memcpy(id + a + 1, name, b + 1);
	return id;
}

static bool sortkeys_folder_is(const struct sortkeys_folder *f, const char *id)
{
	size_t a = strlen(id);
	return strcmp(f->id, id) == 0 && strcmp(f->id + a + 1, id + a + 1) == 0;
}

/* Out of the kept ones: the folder's keys, or an empty set. */
static void sortkeys_take(const struct imap_session *s, struct sortkeys_folder *out)
{
	memset(out, 0, sizeof *out);
	out->id = sortkeys_folder_id(s);
	out->uidvalidity = mailbox_uidvalidity(s->view);
	for (size_t i = 0; i < sortkeys_kept.n; i++) {
		struct sortkeys_folder *f = &sortkeys_kept.v[i];
		if (!sortkeys_folder_is(f, out->id))
			continue;
		sortkeys_kept.mem -= f->mem;
		struct sortkeys_folder found = *f;
		*f = sortkeys_kept.v[--sortkeys_kept.n];
		if (found.uidvalidity == out->uidvalidity) {
			free(out->id);
			*out = found;
		} else
			sortkeys_folder_free(&found);
		return;
	}
}

static void sortkeys_drop_oldest(void)
{
	size_t old = 0;
	for (size_t i = 1; i < sortkeys_kept.n; i++)
		if (sortkeys_kept.v[i].used < sortkeys_kept.v[old].used)
			old = i;
	sortkeys_kept.mem -= sortkeys_kept.v[old].mem;
	sortkeys_folder_free(&sortkeys_kept.v[old]);
	sortkeys_kept.v[old] = sortkeys_kept.v[--sortkeys_kept.n];
}

/* Back among the kept ones (taken), older folders dropped to make room;
 * a folder larger than the whole bound is not kept. */
static void sortkeys_put(struct sortkeys_folder *f)
{
	if (f->mem > IMAP_SORT_CACHE_MAX || f->n == 0) {
		sortkeys_folder_free(f);
		return;
	}
	while (sortkeys_kept.n > 0 && (sortkeys_kept.mem + f->mem > IMAP_SORT_CACHE_MAX ||
				       sortkeys_kept.n >= IMAP_SORT_FOLDERS_MAX))
		sortkeys_drop_oldest();
	if (!sortkeys_kept.v)
		sortkeys_kept.v = xcalloc(IMAP_SORT_FOLDERS_MAX, sizeof *sortkeys_kept.v);
	f->used = ++sortkeys_kept.tick;
	sortkeys_kept.v[sortkeys_kept.n++] = *f;
	sortkeys_kept.mem += f->mem;
	memset(f, 0, sizeof *f);
}

void imap_sortkeys_cleanup(void)
{
	for (size_t i = 0; i < sortkeys_kept.n; i++)
		sortkeys_folder_free(&sortkeys_kept.v[i]);
	free(sortkeys_kept.v);
	memset(&sortkeys_kept, 0, sizeof sortkeys_kept);
}

/* The job collecting keys: keys[i] for view index i, taken over from the
 * cache where the UID matches (the view is ascending by UID too). */
struct imap_sortkeys_job {
	struct sortkeys_folder folder;   /* taken from the kept ones, refilled */
	struct imap_search_prog *prog;
	bool all;
	bool reads;                      /* matching may read a file here */
	size_t count;                    /* messages in the view at the start */
	struct imap_sortkey **keys;
	struct imap_sortitem *items;
	size_t nitems;
	size_t next;
	imap_sort_done_fn done;
	void *arg;
	void (*free_arg)(void *arg);
};

/* keys[i] from the kept keys of the same UID (the view is ascending by
 * UID too); those of expunged messages go. */
static void sortkeys_reuse(struct imap_session *s, struct imap_sortkeys_job *j)
{
	struct sortkeys_folder *f = &j->folder;
	size_t o = 0;
	for (size_t i = 0; i < j->count; i++) {
		uint32_t uid = imap_uid_at(s, i);
		while (o < f->n && f->v[o]->uid < uid)
			sortkey_free(f->v[o++]); /* expunged */
		if (o < f->n && f->v[o]->uid == uid)
			j->keys[i] = f->v[o++];
	}
	while (o < f->n)
		sortkey_free(f->v[o++]);
	free(f->v);
	f->v = NULL;
	f->n = 0;
	f->mem = 0;
}

/* What the job holds goes back among the kept keys. */
static void sortkeys_keep(struct imap_sortkeys_job *j)
{
	struct sortkeys_folder *f = &j->folder;
	f->v = xcalloc(j->count ? j->count : 1, sizeof *f->v);
	for (size_t i = 0; i < j->count; i++) {
		if (j->keys[i]) {
			f->v[f->n++] = j->keys[i];
			f->mem += j->keys[i]->mem;
		}
	}
	sortkeys_put(f);
}

static bool sortkeys_step(struct imap_session *s)
{
	struct imap_sortkeys_job *j = s->job_data;
	size_t count = imap_count(s) < j->count ? imap_count(s) : j->count;
	unsigned reads = 0, looked = 0;
	while (j->next < count && reads < IMAP_SORT_STEP_READS &&
	       looked < IMAP_SORT_STEP_MESSAGES) {
		size_t i = j->next++;
		looked++;
		if (!j->all) {
			if (j->reads)
				reads++; /* a search key may read the message */
			if (!imap_search_matches(s, j->prog, i))
				continue;
		}
		if (!j->keys[i]) {
			j->keys[i] = sortkey_read(s, i);
			reads++;
		}
		j->items[j->nitems++] = (struct imap_sortitem){
			.seq = (uint32_t)(i + 1), .uid = imap_uid_at(s, i), .arrival = imap_date_at(s, i),
			.size = imap_size_at(s, i), .key = j->keys[i]};
	}
	imap_msg_release(s);
	if (j->next < count)
		return false;
	j->done(s, j->items, j->nitems, j->arg);
	return true;
}

static void sortkeys_stop(struct imap_session *s)
{
	struct imap_sortkeys_job *j = s->job_data;
	sortkeys_keep(j);
	free(j->keys);
	free(j->items);
	imap_search_prog_free(j->prog);
	if (j->free_arg)
		j->free_arg(j->arg);
	free(j);
}

static const struct imap_job_ops imap_sortkeys_ops = {sortkeys_step, sortkeys_stop};

void imap_sortkeys_start(struct imap_session *s, struct imap_search_prog *prog,
			 imap_sort_done_fn done, void *arg, void (*free_arg)(void *arg))
{
	struct imap_sortkeys_job *j = xcalloc(1, sizeof *j);
	j->prog = prog;
	j->all = imap_search_is_all(prog);
	j->reads = imap_search_reads(prog);
	j->count = imap_count(s);
	j->keys = xcalloc(j->count ? j->count : 1, sizeof *j->keys);
	j->items = xcalloc(j->count ? j->count : 1, sizeof *j->items);
	j->done = done;
	j->arg = arg;
	j->free_arg = free_arg;
	sortkeys_take(s, &j->folder);
	sortkeys_reuse(s, j);
	imap_job_start(s, &imap_sortkeys_ops, j);
}

struct imap_search_prog *imap_sort_search_args(struct imap_session *s, const struct imap_command *c,
					       size_t pos)
{
	size_t len;
	const char *cs = imap_arg_astring(imap_args_at(&c->args, pos), &len);
	if (!cs) {
		imap_bad(s, "Syntax: charset search-key ...");
		return NULL;
	}
	/* RFC 5256 §3: US-ASCII and UTF-8 must be supported; strings are
	 * compared after message.c decoded the message's own charsets */
	if (strcasecmp(cs, "UTF-8") != 0 && strcasecmp(cs, "US-ASCII") != 0) {
		imap_no(s, "[BADCHARSET (UTF-8 US-ASCII)] Unknown charset");
		return NULL;
	}
	char err[IMAP_REASON_MAX];
	struct imap_search_prog *p = imap_search_compile(s, &c->args, pos + 1, err, sizeof err);
	if (!p)
		imap_bad(s, err);
	return p;
}

/* ---- SORT ------------------------------------------------------------------- */

static const struct {
	const char *name;
	enum imap_sort_by by;
} imap_sort_names[] = {
	{"ARRIVAL", IMAP_SORT_ARRIVAL}, {"CC", IMAP_SORT_CC}, {"DATE", IMAP_SORT_DATE},
	{"FROM", IMAP_SORT_FROM}, {"SIZE", IMAP_SORT_SIZE}, {"SUBJECT", IMAP_SORT_SUBJECT},
	{"TO", IMAP_SORT_TO}, {"DISPLAYFROM", IMAP_SORT_DISPLAYFROM},
	{"DISPLAYTO", IMAP_SORT_DISPLAYTO},
};

static bool sort_criterion(const struct imap_arg *a, enum imap_sort_by *by)
{
	for (size_t i = 0; i < ARRAY_LEN(imap_sort_names); i++) {
		if (imap_arg_is(a, imap_sort_names[i].name)) {
			*by = imap_sort_names[i].by;
			return true;
		}
	}
	return false;
}

bool imap_sort_parse_criteria(const struct imap_arg *a, struct imap_sort_criteria *cr,
			      const char **err)
{
	const struct imap_args *l = imap_arg_list(a);
	memset(cr, 0, sizeof *cr);
	if (!l || l->n == 0) {
		*err = "Syntax: SORT (criteria) charset search-key ...";
		return false;
	}
	for (size_t i = 0; i < l->n; i++) {
		bool reverse = imap_arg_is(imap_args_at(l, i), "REVERSE");
		if (reverse)
			i++;
		enum imap_sort_by by;
		if (!sort_criterion(imap_args_at(l, i), &by)) {
			*err = "Unknown sort criterion";
			return false;
		}
		if (cr->n == IMAP_SORT_CRITERIA_MAX) {
			*err = "Too many sort criteria";
			return false;
		}
		cr->v[cr->n].by = by;
		cr->v[cr->n].reverse = reverse;
		cr->n++;
	}
	return true;
}

static int sort_cmp_num(long long a, long long b)
{
	return a < b ? -1 : a > b;
}

static int sort_cmp_by(const struct imap_sortitem *a, const struct imap_sortitem *b,
		       enum imap_sort_by by)
{
	const struct imap_sortkey *x = a->key, *y = b->key;
	switch (by) {
	case IMAP_SORT_ARRIVAL: return sort_cmp_num(a->arrival, b->arrival);
	case IMAP_SORT_CC: return strcmp(x->cc, y->cc);
	case IMAP_SORT_DATE: return sort_cmp_num(x->date, y->date);
	case IMAP_SORT_FROM: return strcmp(x->from, y->from);
	case IMAP_SORT_SIZE: return a->size < b->size ? -1 : a->size > b->size;
	case IMAP_SORT_SUBJECT: return strcmp(x->subject, y->subject);
	case IMAP_SORT_TO: return strcmp(x->to, y->to);
	case IMAP_SORT_DISPLAYFROM: return strcmp(x->display_from, y->display_from);
	case IMAP_SORT_DISPLAYTO: return strcmp(x->display_to, y->display_to);
	}
	return 0;
}

/* By the criteria from the first-th on, then by sequence number. */
static int sort_cmp_from(const struct imap_sortitem *a, const struct imap_sortitem *b,
			 const struct imap_sort_criteria *cr, size_t first)
{
	for (size_t i = first; i < cr->n; i++) {
		int r = sort_cmp_by(a, b, cr->v[i].by);
		if (r)
			return cr->v[i].reverse ? -r : r;
	}
	return sort_cmp_num(a->seq, b->seq); /* RFC 5256 §3: ties by sequence */
}

static int sort_cmp(const void *pa, const void *pb, void *arg)
{
	const struct imap_sort_criteria *cr = arg;
	const struct imap_sortitem *a = pa, *b = pb;
	for (size_t i = 0; i < cr->n; i++) {
		int r = sort_cmp_by(a, b, cr->v[i].by);
		if (r)
			return cr->v[i].reverse ? -r : r;
	}
	return sort_cmp_num(a->seq, b->seq); /* RFC 5256 §3: ties by sequence */
}

/* An item with an abbreviation of its first sort key: the first 24
 * octets of a string key (zero-padded: keys hold no NUL, so the
 * abbreviations order as strcmp orders the keys), or a date.  Most
 * comparisons are settled by the abbreviations, in the sorted array,
 * without following the item to its key and the key to its string
 * (abbreviated keys); two equal abbreviations of whole keys are equal
 * keys. */
enum { SORT_ABBREV_WORDS = 3 };

struct sort_abbrev {
	uint64_t w[SORT_ABBREV_WORDS];
	bool whole;                      /* the key is all in w */
	const struct imap_sortitem *item;
};

static uint64_t sort_be64(const char *s, size_t *pos)
{
	uint64_t v = 0;
	for (int k = 0; k < 8; k++) {
		unsigned char c = s ? (unsigned char)s[*pos] : 0;
		if (c)
			(*pos)++;
		v = v << 8 | c;
	}
	return v;
}

/* The string a criterion sorts on, or NULL when it is not a string. */
static const char *sort_key_string(const struct imap_sortkey *k, enum imap_sort_by by)
{
	switch (by) {
	case IMAP_SORT_CC: return k->cc;
	case IMAP_SORT_FROM: return k->from;
	case IMAP_SORT_SUBJECT: return k->subject;
	case IMAP_SORT_TO: return k->to;
	case IMAP_SORT_DISPLAYFROM: return k->display_from;
	case IMAP_SORT_DISPLAYTO: return k->display_to;
	default: return NULL;
	}
}

static void sort_abbreviate(struct sort_abbrev *a, const struct imap_sortitem *it,
			    enum imap_sort_by by)
{
	memset(a, 0, sizeof *a);
	a->item = it;
	if (by == IMAP_SORT_DATE) {
		a->w[0] = (uint64_t)it->key->date ^ (UINT64_C(1) << 63); /* signed order */
		a->whole = true;
		return;
	}
	const char *str = sort_key_string(it->key, by);
	size_t pos = 0;
	for (int k = 0; k < SORT_ABBREV_WORDS; k++)
		a->w[k] = sort_be64(str, &pos);
	a->whole = !str || !str[pos];
}

static int sort_abbrev_cmp(const void *pa, const void *pb, void *arg)
{
	const struct imap_sort_criteria *cr = arg;
	const struct sort_abbrev *a = pa, *b = pb;
	for (int k = 0; k < SORT_ABBREV_WORDS; k++) {
		if (a->w[k] != b->w[k]) {
			int r = a->w[k] < b->w[k] ? -1 : 1;
			return cr->v[0].reverse ? -r : r;
		}
	}
	/* equal whole keys: the next criteria decide */
	return sort_cmp_from(a->item, b->item, cr, a->whole && b->whole ? 1 : 0);
}

static bool sort_abbreviable(enum imap_sort_by by)
{
	return by == IMAP_SORT_DATE || by == IMAP_SORT_CC || by == IMAP_SORT_FROM ||
	       by == IMAP_SORT_SUBJECT || by == IMAP_SORT_TO || by == IMAP_SORT_DISPLAYFROM ||
	       by == IMAP_SORT_DISPLAYTO;
}

void imap_sort_items(struct imap_sortitem *items, size_t n, const struct imap_sort_criteria *cr)
{
	if (n < 2)
		return;
	if (cr->n == 0 || !sort_abbreviable(cr->v[0].by)) {
		qsort_r(items, n, sizeof *items, sort_cmp, (void *)cr);
		return;
	}
	struct sort_abbrev *ab = xcalloc(n, sizeof *ab);
	for (size_t i = 0; i < n; i++)
		sort_abbreviate(&ab[i], &items[i], cr->v[0].by);
	qsort_r(ab, n, sizeof *ab, sort_abbrev_cmp, (void *)cr);
	struct imap_sortitem *sorted = xcalloc(n, sizeof *sorted);
	for (size_t i = 0; i < n; i++)
		sorted[i] = *ab[i].item;
	memcpy(items, sorted, n * sizeof *items);
	free(sorted);
	free(ab);
}

struct imap_sort_req {
	struct imap_sort_criteria cr;
	bool uid;
	imap_sort_result_fn result;
	void *arg;
	void (*free_arg)(void *arg);
};

static void sort_req_free(void *p)
{
	struct imap_sort_req *r = p;
	if (r->free_arg)
		r->free_arg(r->arg);
	free(r);
}

static void sort_done(struct imap_session *s, const struct imap_sortitem *items, size_t n,
		      void *arg)
{
	struct imap_sort_req *r = arg;
	struct imap_sortitem *sorted = xcalloc(n ? n : 1, sizeof *sorted);
	memcpy(sorted, items, n * sizeof *items);
	imap_sort_items(sorted, n, &r->cr);
	uint32_t *nums = xcalloc(n ? n : 1, sizeof *nums);
	for (size_t i = 0; i < n; i++)
		nums[i] = r->uid ? sorted[i].uid : sorted[i].seq;
	free(sorted);
	r->result(s, nums, n, r->uid, r->arg);
	free(nums);
}

void imap_sort_begin(struct imap_session *s, const struct imap_command *c, size_t pos,
		     imap_sort_result_fn result, void *arg, void (*free_arg)(void *arg))
{
	struct imap_sort_req *r = xcalloc(1, sizeof *r);
	r->uid = imap_is_uid(c);
	r->result = result;
	r->arg = arg;
	r->free_arg = free_arg;
	const char *err;
	if (!imap_sort_parse_criteria(imap_args_at(&c->args, pos), &r->cr, &err)) {
		imap_bad(s, err);
		sort_req_free(r);
		return;
	}
	struct imap_search_prog *prog = imap_sort_search_args(s, c, pos + 1);
	if (!prog) {
		sort_req_free(r);
		return;
	}
	imap_sortkeys_start(s, prog, sort_done, r, sort_req_free);
}

/* "* SORT n n n" (RFC 5256 §4), then the tagged OK. */
static void sort_print(struct imap_session *s, const uint32_t *nums, size_t n, bool uid,
		       void *arg)
{
	struct imap_out out;
	imap_out_init(&out);
	imap_out_add(&out, "* SORT", 6);
	for (size_t i = 0; i < n; i++) {
		imap_out_printf(&out, " %lu", (unsigned long)nums[i]);
		if (imap_out_full(&out))
			imap_send(s, &out);
	}
	imap_out_add(&out, "\r\n", 2);
	imap_send(s, &out);
	imap_out_free(&out);
	imap_ok(s, "%sSORT completed", uid ? "UID " : "");
}

void imap_cmd_sort(struct imap_session *s, const struct imap_command *c)
{
	struct imap_search_return ret;
	size_t pos = 0;
	char err[IMAP_REASON_MAX];
	if (!imap_search_return_parse(&c->args, &pos, &ret, err, sizeof err)) {
		imap_bad(s, err);
		return;
	}
	if (!ret.given) {
		imap_sort_begin(s, c, 0, sort_print, NULL, NULL);
		return;
	}
	void *options = imap_esort_options(s, &ret); /* RFC 5267 §3 ESORT */
	if (options)
		imap_sort_begin(s, c, pos, imap_esort_answer, options, free);
}

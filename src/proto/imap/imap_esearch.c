/* imap_esearch: ESEARCH result options (RFC 4731, RFC 7162 §3.1.5), the
 * saved search result "$" (RFC 5182) and search contexts with PARTIAL
 * and live updates (RFC 5267 §4). */
#include "proto/imap/imap_esearch.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "proto/imap/imap_context.h"
#include "proto/imap/imap_view.h"
#include "lib/util.h"

/* A live search (RETURN (UPDATE)): its program and result, as UIDs. */
struct imap_search_context {
	char tag[IMAP_TAG_MAX + 1];
	bool uid;                        /* UID SEARCH: updates name UIDs */
	const struct imap_search_prog_ops *ops;
	void *prog;
	uint32_t *uids;                  /* ascending */
	size_t n, cap;
	uint64_t modseq;                 /* changes up to this MODSEQ are in uids */
	uint32_t uid_top;                /* messages up to this UID were tested */
};

struct imap_esearch_state {
	struct imap_search_context ctx[IMAP_SEARCH_CONTEXTS_MAX];
	size_t nctx;
};

/* ---- RETURN (RFC 4731 §3.1, RFC 5267 §4.4) ------------------------------ */

static const struct {
	const char *name;
	unsigned opt;
} imap_return_opts[] = {
	{"MIN", IMAP_RET_MIN}, {"MAX", IMAP_RET_MAX}, {"ALL", IMAP_RET_ALL},
	{"COUNT", IMAP_RET_COUNT}, {"SAVE", IMAP_RET_SAVE}, {"UPDATE", IMAP_RET_UPDATE},
	{"PARTIAL", IMAP_RET_PARTIAL},
};

/* PARTIAL lo:hi: two positions from 1, either order (RFC 5267 §4.4). */
static bool imap_partial_parse(const char *v, struct imap_search_return *r)
{
	char *end;
	if (!v || v[0] < '1' || v[0] > '9')
		return false;
	unsigned long lo = strtoul(v, &end, 10);
	if (*end != ':' || end[1] < '1' || end[1] > '9')
		return false;
	unsigned long hi = strtoul(end + 1, &end, 10);
	if (*end || lo > UINT32_MAX || hi > UINT32_MAX)
		return false;
	r->partial_lo = (uint32_t)(lo < hi ? lo : hi);
	r->partial_hi = (uint32_t)(lo < hi ? hi : lo);
	return true;
}

static bool imap_return_opt(const struct imap_args *l, size_t *i, struct imap_search_return *r,
			    char *err, size_t errsz)
{
	const char *name = imap_arg_atom(imap_args_at(l, *i));
	for (size_t k = 0; name && k < ARRAY_LEN(imap_return_opts); k++) {
		if (strcasecmp(name, imap_return_opts[k].name) != 0)
			continue;
		(*i)++;
		if (r->opts & imap_return_opts[k].opt) {
			errfmt(err, errsz, "RETURN option %s given twice", imap_return_opts[k].name);
			return false;
		}
		r->opts |= imap_return_opts[k].opt;
		if (imap_return_opts[k].opt != IMAP_RET_PARTIAL)
			return true;
		if (!imap_partial_parse(imap_arg_raw_atom(imap_args_at(l, *i)), r)) {
			errfmt(err, errsz, "Syntax: PARTIAL first:last (positions from 1)");
			return false;
		}
		(*i)++;
		return true;
	}
	errfmt(err, errsz, "Unknown RETURN option");
	return false;
}

bool imap_search_return_parse(const struct imap_args *args, size_t *pos,
			      struct imap_search_return *r, char *err, size_t errsz)
{
	memset(r, 0, sizeof *r);
	if (!imap_arg_is(imap_args_at(args, *pos), "RETURN"))
		return true;
	const struct imap_args *l = imap_arg_list(imap_args_at(args, *pos + 1));
	if (!l) {
		errfmt(err, errsz, "Syntax: SEARCH RETURN (options) key ...");
		return false;
	}
	*pos += 2;
	r->given = true;
	for (size_t i = 0; i < l->n;)
		if (!imap_return_opt(l, &i, r, err, errsz))
			return false;
	if (r->opts == 0) /* RFC 4731 §3.1: RETURN () is ALL */
		r->opts = IMAP_RET_ALL;
	return true;
}

/* ---- what a search found ------------------------------------------------ */

void imap_search_found_add(struct imap_search_found *f, uint32_t seq, uint32_t uid,
			   uint64_t modseq)
{
	if (f->n == f->cap) {
		f->cap = f->cap ? f->cap * 2 : 64;
		f->seq = xrealloc(f->seq, f->cap * sizeof *f->seq);
		f->uid = xrealloc(f->uid, f->cap * sizeof *f->uid);
	}
	f->seq[f->n] = seq;
	f->uid[f->n] = uid;
	if (f->n == 0)
		f->first_modseq = modseq;
	f->last_modseq = modseq;
	if (modseq > f->top_modseq)
		f->top_modseq = modseq;
	f->n++;
}

void imap_search_found_free(struct imap_search_found *f)
{
	free(f->seq);
	free(f->uid);
	memset(f, 0, sizeof *f);
}

void imap_put_numbers(struct imap_out *out, const uint32_t *v, size_t n)
{
	for (size_t i = 0; i < n;) {
		size_t j = i;
		while (j + 1 < n && v[j + 1] == v[j] + 1)
			j++;
		if (j > i)
			imap_out_printf(out, "%s%lu:%lu", i ? "," : "", (unsigned long)v[i],
					(unsigned long)v[j]);
		else
			imap_out_printf(out, "%s%lu", i ? "," : "", (unsigned long)v[i]);
		i = j + 1;
	}
}

/* RFC 7162 §3.1.5 (as RFC 4731 §3.2 asks of MODSEQ with ESEARCH): the
 * highest MODSEQ of the messages returned: all of them for ALL, COUNT or
 * PARTIAL, else the MIN and/or MAX message's. */
static uint64_t imap_esearch_modseq(const struct imap_search_return *r,
				    const struct imap_search_found *f)
{
	if (r->opts & (IMAP_RET_ALL | IMAP_RET_COUNT | IMAP_RET_PARTIAL))
		return f->top_modseq;
	uint64_t m = 0;
	if (r->opts & IMAP_RET_MIN)
		m = f->first_modseq;
	if ((r->opts & IMAP_RET_MAX) && f->last_modseq > m)
		m = f->last_modseq;
	return m;
}

static void imap_esearch_partial(struct imap_out *out, const struct imap_search_return *r,
				 const uint32_t *v, size_t n)
{
	imap_out_printf(out, " PARTIAL (%lu:%lu ", (unsigned long)r->partial_lo,
			(unsigned long)r->partial_hi);
	if (r->partial_lo > n) {
		imap_out_add(out, "NIL)", 4);
		return;
	}
	size_t hi = r->partial_hi < n ? r->partial_hi : n;
	imap_put_numbers(out, v + r->partial_lo - 1, hi - r->partial_lo + 1);
	imap_out_add(out, ")", 1);
}

void imap_esearch_response(struct imap_out *out, const char *tag, bool uid,
			   const struct imap_search_return *r, const struct imap_search_found *f,
			   bool modseq)
{
	const uint32_t *v = uid ? f->uid : f->seq;
	/* a tag is an astring without quotes or backslashes (RFC 3501 §9) */
	imap_out_printf(out, "* ESEARCH (TAG \"%s\")%s", tag, uid ? " UID" : "");
	if (f->n && (r->opts & IMAP_RET_MIN))
		imap_out_printf(out, " MIN %lu", (unsigned long)v[0]);
	if (f->n && (r->opts & IMAP_RET_MAX))
		imap_out_printf(out, " MAX %lu", (unsigned long)v[f->n - 1]);
	if (r->opts & IMAP_RET_COUNT)
		imap_out_printf(out, " COUNT %zu", f->n);
	if (f->n && (r->opts & IMAP_RET_ALL)) {
		imap_out_add(out, " ALL ", 5);
		imap_put_numbers(out, v, f->n);
	}
	if (r->opts & IMAP_RET_PARTIAL)
		imap_esearch_partial(out, r, v, f->n);
	if (modseq && f->n)
		imap_out_printf(out, " MODSEQ %llu", (unsigned long long)imap_esearch_modseq(r, f));
	imap_out_add(out, "\r\n", 2);
}

/* ---- the session's state ------------------------------------------------- */

static struct imap_esearch_state *imap_esearch_state(struct imap_session *s)
{
	if (!s->esearch)
		s->esearch = xcalloc(1, sizeof *s->esearch);
	return s->esearch;
}

static void imap_context_free(struct imap_search_context *c)
{
	c->ops->free(c->prog);
	free(c->uids);
	memset(c, 0, sizeof *c);
}

static void imap_context_drop(struct imap_esearch_state *st, size_t k)
{
	imap_context_free(&st->ctx[k]);
	memmove(&st->ctx[k], &st->ctx[k + 1], (st->nctx - k - 1) * sizeof st->ctx[0]);
	st->nctx--;
	memset(&st->ctx[st->nctx], 0, sizeof st->ctx[0]);
}

void imap_esearch_reset(struct imap_session *s)
{
	struct imap_esearch_state *st = s->esearch;
	imap_saved_replace(s, NULL, 0);
	if (!st)
		return;
	while (st->nctx)
		imap_context_drop(st, st->nctx - 1);
	free(st);
	s->esearch = NULL;
}

/* RFC 5182 §2.4: with MIN and/or MAX but neither ALL nor COUNT, only the
 * messages returned are saved. */
static void imap_esearch_save(struct imap_session *s, const struct imap_search_return *r,
			      const struct imap_search_found *f)
{
	bool only_ends = (r->opts & (IMAP_RET_MIN | IMAP_RET_MAX)) &&
			 !(r->opts & (IMAP_RET_ALL | IMAP_RET_COUNT));
	if (!only_ends || f->n == 0) {
		imap_saved_replace(s, f->uid, f->n);
		return;
	}
	uint32_t ends[2];
	size_t n = 0;
	if (r->opts & IMAP_RET_MIN)
		ends[n++] = f->uid[0];
	if ((r->opts & IMAP_RET_MAX) && (n == 0 || f->n > 1))
		ends[n++] = f->uid[f->n - 1];
	imap_saved_replace(s, ends, n);
}

/* ---- ESORT (RFC 5267 §3) ------------------------------------------------------ */

void *imap_esort_options(struct imap_session *s, const struct imap_search_return *r)
{
	if (r->opts & IMAP_RET_UPDATE) {
		imap_bad(s, "RETURN (UPDATE) is for SEARCH: no CONTEXT=SORT here");
		return NULL;
	}
	struct imap_search_return *copy = xmalloc(sizeof *copy);
	*copy = *r;
	return copy;
}

static int imap_u32_cmp(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return x < y ? -1 : x > y;
}

/* RFC 5182 with ESORT: "$" is the set of messages found, in UID order. */
static void imap_esort_save(struct imap_session *s, const uint32_t *nums, size_t n, bool uid)
{
	uint32_t *uids = xmalloc((n ? n : 1) * sizeof *uids);
	for (size_t i = 0; i < n; i++)
		uids[i] = uid ? nums[i] : imap_uid_at(s, nums[i] - 1);
	qsort(uids, n, sizeof *uids, imap_u32_cmp);
	imap_saved_replace(s, uids, n);
	free(uids);
}

void imap_esort_answer(struct imap_session *s, const uint32_t *nums, size_t n, bool uid,
		       void *options)
{
	const struct imap_search_return *r = options;
	struct imap_search_found f = {0};
	for (size_t i = 0; i < n; i++) /* the same numbers as both kinds: uid says which */
		imap_search_found_add(&f, nums[i], nums[i], 0);
	struct imap_out out;
	imap_out_init(&out);
	if (r->opts != IMAP_RET_SAVE)
		imap_esearch_response(&out, s->tag, uid, r, &f, false);
	imap_send(s, &out);
	imap_out_free(&out);
	imap_search_found_free(&f);
	if (r->opts & IMAP_RET_SAVE)
		imap_esort_save(s, nums, n, uid);
	imap_ok(s, "%sSORT completed", uid ? "UID " : "");
}

/* ---- contexts (RFC 5267 §4) ------------------------------------------------ */

static void imap_context_start(struct imap_session *s, struct imap_out *out, bool uid,
			       const struct imap_search_found *f,
			       const struct imap_search_prog_ops *ops, void **prog)
{
	struct imap_esearch_state *st = imap_esearch_state(s);
	if (st->nctx == IMAP_SEARCH_CONTEXTS_MAX) {
		imap_out_printf(out, "* NO [NOUPDATE \"%s\"] Too many search contexts\r\n", s->tag);
		return;
	}
	struct imap_search_context *c = &st->ctx[st->nctx++];
	memcpy(c->tag, s->tag, sizeof c->tag);
	c->uid = uid;
	c->ops = ops;
	c->prog = *prog;
	*prog = NULL;
	if (f->n) {
		c->uids = xmalloc(f->n * sizeof *c->uids);
		memcpy(c->uids, f->uid, f->n * sizeof *c->uids);
		c->n = c->cap = f->n;
	}
	size_t count = imap_count(s);
	for (size_t i = 0; i < count; i++)
		if (imap_modseq_at(s, i) > c->modseq)
			c->modseq = imap_modseq_at(s, i);
	c->uid_top = count ? imap_uid_at(s, count - 1) : 0;
}

void imap_esearch_done(struct imap_session *s, struct imap_out *out, bool uid,
		       const struct imap_search_return *r, const struct imap_search_found *f,
		       bool modseq, const struct imap_search_prog_ops *ops, void **prog)
{
	if (r->opts != IMAP_RET_SAVE) /* RFC 5182 §2.1: SAVE alone answers nothing */
		imap_esearch_response(out, s->tag, uid, r, f, modseq);
	if (r->opts & IMAP_RET_SAVE)
		imap_esearch_save(s, r, f);
	if (r->opts & IMAP_RET_UPDATE)
		imap_context_start(s, out, uid, f, ops, prog);
}

/* Where uid is or would go in c's result. */
static size_t imap_context_pos(const struct imap_search_context *c, uint32_t uid)
{
	size_t lo = 0, hi = c->n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (c->uids[mid] < uid)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

static bool imap_context_has(const struct imap_search_context *c, uint32_t uid, size_t *pos)
{
	*pos = imap_context_pos(c, uid);
	return *pos < c->n && c->uids[*pos] == uid;
}

static void imap_context_remove(struct imap_search_context *c, size_t pos)
{
	memmove(&c->uids[pos], &c->uids[pos + 1], (c->n - pos - 1) * sizeof c->uids[0]);
	c->n--;
}

static void imap_context_insert(struct imap_search_context *c, size_t pos, uint32_t uid)
{
	if (c->n == c->cap) {
		c->cap = c->cap ? c->cap * 2 : 16;
		c->uids = xrealloc(c->uids, c->cap * sizeof *c->uids);
	}
	memmove(&c->uids[pos + 1], &c->uids[pos], (c->n - pos) * sizeof c->uids[0]);
	c->uids[pos] = uid;
	c->n++;
}

void imap_esearch_expunged(struct imap_session *s, struct imap_out *out, size_t seq, uint32_t uid)
{
	struct imap_esearch_state *st = s->esearch;
	for (size_t k = 0; st && k < st->nctx; k++) {
		struct imap_search_context *c = &st->ctx[k];
		size_t pos;
		if (!imap_context_has(c, uid, &pos))
			continue;
		imap_context_remove(c, pos);
		imap_out_printf(out, "* ESEARCH (TAG \"%s\")%s REMOVEFROM (%zu %lu)\r\n", c->tag,
				c->uid ? " UID" : "", pos + 1,
				(unsigned long)(c->uid ? uid : (uint32_t)seq));
	}
}

/* The numbers added to or removed from a context in one refresh, and the
 * position of the first (RFC 5267 §4.4.1, §4.4.2). */
struct imap_context_delta {
	uint32_t *v;
	size_t n, cap;
	size_t pos;
};

static void imap_delta_add(struct imap_context_delta *d, uint32_t v, size_t pos)
{
	if (d->n == 0)
		d->pos = pos + 1;
	*(uint32_t *)xgrow(&d->v, &d->n, &d->cap, sizeof *d->v) = v;
}

static void imap_delta_send(struct imap_out *out, const struct imap_search_context *c,
			    const char *what, struct imap_context_delta *d)
{
	if (d->n) {
		imap_out_printf(out, "* ESEARCH (TAG \"%s\")%s %s (%zu ", c->tag, c->uid ? " UID" : "",
				what, d->pos);
		imap_put_numbers(out, d->v, d->n);
		imap_out_add(out, ")\r\n", 3);
	}
	free(d->v);
	memset(d, 0, sizeof *d);
}

/* The messages changed (MODSEQ) or added (UID) since c last looked are
 * tested again. */
static void imap_context_refresh(struct imap_session *s, struct imap_out *out,
				 struct imap_search_context *c)
{
	struct imap_context_delta add = {0}, del = {0};
	uint64_t top = c->modseq;
	size_t count = imap_count(s);
	for (size_t i = 0; i < count; i++) {
		uint64_t m = imap_modseq_at(s, i);
		uint32_t uid = imap_uid_at(s, i);
		if (m <= c->modseq && uid <= c->uid_top)
			continue;
		if (m > top)
			top = m;
		bool now = c->ops->match(s, i, c->prog);
		imap_msg_release(s);
		size_t pos;
		bool was = imap_context_has(c, uid, &pos);
		uint32_t v = c->uid ? uid : (uint32_t)(i + 1);
		if (now && !was) {
			imap_context_insert(c, pos, uid);
			imap_delta_add(&add, v, pos);
		} else if (!now && was) {
			imap_delta_add(&del, v, pos);
			imap_context_remove(c, pos);
		}
	}
	c->modseq = top;
	c->uid_top = count ? imap_uid_at(s, count - 1) : 0;
	imap_delta_send(out, c, "REMOVEFROM", &del);
	imap_delta_send(out, c, "ADDTO", &add);
}

void imap_esearch_refresh(struct imap_session *s, struct imap_out *out)
{
	struct imap_esearch_state *st = s->esearch;
	if (!st || !s->view)
		return;
	for (size_t k = 0; k < st->nctx; k++)
		imap_context_refresh(s, out, &st->ctx[k]);
}

/* The context of tag (len octets), or st->nctx. */
static size_t imap_context_find(const struct imap_esearch_state *st, const char *tag, size_t len)
{
	size_t k = 0;
	while (k < st->nctx &&
	       !(strlen(st->ctx[k].tag) == len && memcmp(st->ctx[k].tag, tag, len) == 0))
		k++;
	return k;
}

/* RFC 5267 §4.3: CANCELUPDATE tag...: each names a live context; all are
 * checked before any is cancelled. */
void imap_cmd_cancelupdate(struct imap_session *s, const struct imap_command *c)
{
	struct imap_esearch_state *st = s->esearch;
	size_t len;
	if (c->args.n == 0) {
		imap_bad(s, "Syntax: CANCELUPDATE \"tag\" ...");
		return;
	}
	for (size_t a = 0; a < c->args.n; a++) {
		const char *tag = imap_arg_astring(imap_args_at(&c->args, a), &len);
		if (!tag || !st || imap_context_find(st, tag, len) == st->nctx) {
			imap_bad(s, "CANCELUPDATE names no search context");
			return;
		}
	}
	for (size_t a = 0; a < c->args.n; a++) {
		const char *tag = imap_arg_astring(imap_args_at(&c->args, a), &len);
		size_t k = imap_context_find(st, tag, len);
		if (k < st->nctx) /* a tag named twice is gone already */
			imap_context_drop(st, k);
	}
	imap_ok(s, "CANCELUPDATE completed");
}

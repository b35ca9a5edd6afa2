/* imap_thread: THREAD and UID THREAD (RFC 5256): ORDEREDSUBJECT (§2.2)
 * and REFERENCES (§3) build a forest of messages and dummies, each
 * traversal iterative (a thread may be as deep as the folder is long),
 * printed as the thread-list of §4. */
#define _GNU_SOURCE /* qsort_r */
#include "proto/imap/imap_thread.h"

#include <glib.h>
#include <stdlib.h>
#include <string.h>

#include "proto/imap/imap_context.h"
#include "proto/imap/imap_search.h"
#include "proto/imap/imap_sort.h"
#include "lib/util.h"

#define THREAD_NONE SIZE_MAX

/* A container of §3: a message, or a dummy for an ID only referenced. */
struct thread_node {
	size_t msg;                      /* index into the messages; NONE: dummy */
	size_t parent, child, next;      /* first child, next sibling */
	size_t rootpos;                  /* index in the root set */
	int64_t date;                    /* sort key: a dummy's first child's */
	size_t seq;
};

struct thread_forest {
	const struct imap_thread_msg *m;
	struct thread_node *v;
	size_t n, cap;
	size_t *roots;                   /* THREAD_NONE: removed */
	size_t nroots;
};

static size_t forest_add(struct thread_forest *f, size_t msg)
{
	if (f->n == f->cap) {
		f->cap = f->cap ? f->cap * 2 : 64;
		f->v = xrealloc(f->v, f->cap * sizeof *f->v);
	}
	f->v[f->n] = (struct thread_node){.msg = msg, .parent = THREAD_NONE, .child = THREAD_NONE,
					  .next = THREAD_NONE, .rootpos = THREAD_NONE};
	return f->n++;
}

static bool forest_dummy(const struct thread_forest *f, size_t x)
{
	return f->v[x].msg == THREAD_NONE;
}

static void forest_link(struct thread_forest *f, size_t parent, size_t child)
{
	f->v[child].parent = parent;
	f->v[child].next = f->v[parent].child;
	f->v[parent].child = child;
}

static void forest_unlink(struct thread_forest *f, size_t child)
{
	size_t *pp = &f->v[f->v[child].parent].child;
	while (*pp != child)
		pp = &f->v[*pp].next;
	*pp = f->v[child].next;
	f->v[child].parent = THREAD_NONE;
	f->v[child].next = THREAD_NONE;
}

/* Would making child a child of parent close a loop (§3 step 1A)?  Also
 * true past IMAP_THREAD_DEPTH_MAX ancestors. */
static bool forest_would_loop(const struct thread_forest *f, size_t parent, size_t child)
{
	if (parent == child)
		return true;
	if (f->v[child].child == THREAD_NONE)
		return false; /* nothing below child: parent cannot be there */
	size_t depth = 0;
	for (size_t x = f->v[parent].parent; x != THREAD_NONE; x = f->v[x].parent)
		if (x == child || ++depth > IMAP_THREAD_DEPTH_MAX)
			return true;
	return false;
}

static void forest_roots_add(struct thread_forest *f, size_t x)
{
	f->v[x].rootpos = f->nroots;
	f->roots[f->nroots++] = x;
}

/* Nodes reachable from the roots, parents before children. */
static size_t *forest_order(const struct thread_forest *f, size_t *count)
{
	size_t *order = xcalloc(f->n ? f->n : 1, sizeof *order), k = 0;
	for (size_t r = 0; r < f->nroots; r++)
		if (f->roots[r] != THREAD_NONE)
			order[k++] = f->roots[r];
	for (size_t i = 0; i < k; i++)
		for (size_t c = f->v[order[i]].child; c != THREAD_NONE; c = f->v[c].next)
			order[k++] = c;
	*count = k;
	return order;
}

static int forest_cmp(const void *pa, const void *pb, void *arg)
{
	const struct thread_forest *f = arg;
	const struct thread_node *a = &f->v[*(const size_t *)pa], *b = &f->v[*(const size_t *)pb];
	if (a->date != b->date)
		return a->date < b->date ? -1 : 1;
	return a->seq < b->seq ? -1 : a->seq > b->seq;
}

static void forest_sort_kids(struct thread_forest *f, size_t x, size_t **tmp, size_t *tmpcap)
{
	size_t k = 0;
	for (size_t c = f->v[x].child; c != THREAD_NONE; c = f->v[c].next) {
		if (k == *tmpcap) {
			*tmpcap = *tmpcap ? *tmpcap * 2 : 16;
			*tmp = xrealloc(*tmp, *tmpcap * sizeof **tmp);
		}
		(*tmp)[k++] = c;
	}
	if (k > 1)
		qsort_r(*tmp, k, sizeof **tmp, forest_cmp, f);
	size_t *pp = &f->v[x].child;
	for (size_t i = 0; i < k; i++) {
		*pp = (*tmp)[i];
		pp = &f->v[(*tmp)[i]].next;
	}
	*pp = THREAD_NONE;
}

/* Every set of siblings by sent date, ties by sequence (§3 steps 4 and
 * 6); a dummy sorts as its first child.  The root set is compacted. */
static void forest_sort(struct thread_forest *f)
{
	size_t k = 0;
	for (size_t r = 0; r < f->nroots; r++)
		if (f->roots[r] != THREAD_NONE)
			f->roots[k++] = f->roots[r];
	f->nroots = k;
	size_t count, *tmp = NULL, tmpcap = 0;
	size_t *order = forest_order(f, &count);
	for (size_t i = count; i-- > 0;) {
		size_t x = order[i];
		forest_sort_kids(f, x, &tmp, &tmpcap);
		if (forest_dummy(f, x) && f->v[x].child != THREAD_NONE) {
			f->v[x].date = f->v[f->v[x].child].date;
			f->v[x].seq = f->v[f->v[x].child].seq;
		}
	}
	free(tmp);
	free(order);
	if (f->nroots > 1)
		qsort_r(f->roots, f->nroots, sizeof *f->roots, forest_cmp, f);
	for (size_t r = 0; r < f->nroots; r++)
		f->v[f->roots[r]].rootpos = r;
}

/* ---- the thread-list (§4) ------------------------------------------------- */

enum { THREAD_OPEN = -1, THREAD_CLOSE = -2 };

static void thread_print_push(long **stack, size_t *n, size_t *cap, long v)
{
	if (*n == *cap) {
		*cap = *cap ? *cap * 2 : 64;
		*stack = xrealloc(*stack, *cap * sizeof **stack);
	}
	(*stack)[(*n)++] = v;
}

/* One thread, from its root: "1 2 (3)(4 5)"; iterative. */
static void thread_print_one(const struct thread_forest *f, size_t root, GString *out,
			     long **stack, size_t *cap)
{
	size_t n = 0;
	thread_print_push(stack, &n, cap, (long)root);
	while (n > 0) {
		long a = (*stack)[--n];
		if (a == THREAD_OPEN || a == THREAD_CLOSE) {
			g_string_append_c(out, a == THREAD_OPEN ? '(' : ')');
			continue;
		}
		const struct thread_node *x = &f->v[a];
		if (x->msg != THREAD_NONE)
			g_string_append_printf(out, "%lu", (unsigned long)f->m[x->msg].num);
		if (x->child == THREAD_NONE)
			continue;
		if (x->msg != THREAD_NONE)
			g_string_append_c(out, ' ');
		if (f->v[x->child].next == THREAD_NONE) {
			thread_print_push(stack, &n, cap, (long)x->child);
			continue;
		}
		/* several children: "(child)(child)", pushed last first */
		size_t kids = 0;
		for (size_t c = x->child; c != THREAD_NONE; c = f->v[c].next)
			kids++;
		size_t base = n;
		for (size_t i = 0; i < 3 * kids; i++)
			thread_print_push(stack, &n, cap, 0);
		size_t i = 0;
		for (size_t c = x->child; c != THREAD_NONE; c = f->v[c].next, i++) {
			size_t at = base + 3 * (kids - 1 - i);
			(*stack)[at] = THREAD_CLOSE;
			(*stack)[at + 1] = (long)c;
			(*stack)[at + 2] = THREAD_OPEN;
		}
	}
}

static char *forest_print(const struct thread_forest *f, size_t *len)
{
	GString *out = g_string_new(NULL);
	long *stack = NULL;
	size_t cap = 0;
	for (size_t r = 0; r < f->nroots; r++) {
		g_string_append_c(out, '(');
		thread_print_one(f, f->roots[r], out, &stack, &cap);
		g_string_append_c(out, ')');
	}
	free(stack);
	*len = out->len;
	char *s = xstrndup(out->str, out->len);
	g_string_free(out, TRUE);
	return s;
}

static void forest_init(struct thread_forest *f, const struct imap_thread_msg *m, size_t n)
{
	memset(f, 0, sizeof *f);
	f->m = m;
	for (size_t i = 0; i < n; i++) {
		size_t x = forest_add(f, i);
		f->v[x].date = m[i].date;
		f->v[x].seq = i;
	}
}

static void forest_free(struct thread_forest *f)
{
	free(f->v);
	free(f->roots);
}

/* ---- ORDEREDSUBJECT (§2.2) -------------------------------------------------- */

static int orderedsubject_cmp(const void *pa, const void *pb, void *arg)
{
	const struct imap_thread_msg *m = arg;
	size_t a = *(const size_t *)pa, b = *(const size_t *)pb;
	int r = strcmp(m[a].subject, m[b].subject);
	if (r)
		return r;
	if (m[a].date != m[b].date)
		return m[a].date < m[b].date ? -1 : 1;
	return a < b ? -1 : a > b;
}

char *imap_thread_orderedsubject(const struct imap_thread_msg *m, size_t n, size_t *len)
{
	struct thread_forest f;
	forest_init(&f, m, n);
	f.roots = xcalloc(n ? n : 1, sizeof *f.roots);
	size_t *idx = xcalloc(n ? n : 1, sizeof *idx);
	for (size_t i = 0; i < n; i++)
		idx[i] = i;
	if (n > 1)
		qsort_r(idx, n, sizeof *idx, orderedsubject_cmp, (void *)m);
	/* the first of each subject is the thread, the others its children */
	for (size_t i = 0, first = 0; i < n; i++) {
		if (i == 0 || strcmp(m[idx[i]].subject, m[idx[first]].subject) != 0) {
			first = i;
			forest_roots_add(&f, idx[i]);
		} else
			forest_link(&f, idx[first], idx[i]);
	}
	free(idx);
	forest_sort(&f);
	char *s = forest_print(&f, len);
	forest_free(&f);
	return s;
}

/* ---- REFERENCES (§3) ---------------------------------------------------------- */

/* The container of a message ID, a dummy made when there is none. */
static size_t references_container(struct thread_forest *f, GHashTable *ids, const char *id)
{
	gpointer v = g_hash_table_lookup(ids, id);
	if (v)
		return GPOINTER_TO_SIZE(v) - 1;
	size_t x = forest_add(f, THREAD_NONE);
	g_hash_table_insert(ids, (gpointer)id, GSIZE_TO_POINTER(x + 1));
	return x;
}

/* Step 1: link each message to its references. */
static void references_link(struct thread_forest *f, GHashTable *ids, size_t i)
{
	const struct imap_thread_msg *m = &f->m[i];
	/* A: the message's container; without an ID, or with one already
	 * used by another message, it is a container of its own */
	size_t c = i;
	if (m->message_id) {
		gpointer v = g_hash_table_lookup(ids, m->message_id);
		size_t found = v ? GPOINTER_TO_SIZE(v) - 1 : THREAD_NONE;
		if (found == THREAD_NONE)
			g_hash_table_insert(ids, (gpointer)m->message_id, GSIZE_TO_POINTER(c + 1));
		else if (forest_dummy(f, found)) {
			/* the dummy's place in the forest becomes the message's */
			g_hash_table_insert(ids, (gpointer)m->message_id, GSIZE_TO_POINTER(c + 1));
			size_t kid;
			while ((kid = f->v[found].child) != THREAD_NONE) {
				forest_unlink(f, kid);
				forest_link(f, c, kid);
			}
			size_t parent = f->v[found].parent;
			if (parent != THREAD_NONE) {
				forest_unlink(f, found);
				forest_link(f, parent, c);
			}
		}
	}
	/* the references in order, each the parent of the next unless
	 * linked already or a loop would follow */
	size_t prev = THREAD_NONE;
	for (size_t r = 0; r < m->nrefs; r++) {
		size_t rc = references_container(f, ids, m->refs[r]);
		if (prev != THREAD_NONE && f->v[rc].parent == THREAD_NONE &&
		    !forest_would_loop(f, prev, rc))
			forest_link(f, prev, rc);
		prev = rc;
	}
	/* B: the last reference is the parent, replacing an older link */
	if (f->v[c].parent != THREAD_NONE)
		forest_unlink(f, c);
	if (prev != THREAD_NONE && !forest_would_loop(f, prev, c))
		forest_link(f, prev, c);
}

/* Step 3: dummies go, their children taking their place; at the root, a
 * dummy stays when it has several children. */
static void references_prune(struct thread_forest *f)
{
	size_t count;
	size_t *order = forest_order(f, &count);
	for (size_t i = count; i-- > 0;) {
		size_t x = order[i];
		size_t kids = f->v[x].child, *pp = &f->v[x].child;
		while (kids != THREAD_NONE) {
			size_t c = kids;
			kids = f->v[c].next;
			if (!forest_dummy(f, c)) {
				*pp = c;
				pp = &f->v[c].next;
				continue;
			}
			for (size_t g = f->v[c].child; g != THREAD_NONE; g = f->v[g].next) {
				f->v[g].parent = x;
				*pp = g;
				pp = &f->v[g].next;
			}
		}
		*pp = THREAD_NONE;
	}
	free(order);
	for (size_t r = 0; r < f->nroots; r++) {
		size_t x = f->roots[r];
		if (!forest_dummy(f, x) || (f->v[x].child != THREAD_NONE &&
					     f->v[f->v[x].child].next != THREAD_NONE))
			continue;
		size_t only = f->v[x].child;
		f->roots[r] = only; /* none: the dummy is gone */
		if (only != THREAD_NONE) {
			f->v[only].parent = THREAD_NONE;
			f->v[only].next = THREAD_NONE;
		}
	}
}

/* The message that names a thread: the root, or a dummy's first child. */
static const struct imap_thread_msg *references_head(const struct thread_forest *f, size_t x)
{
	if (forest_dummy(f, x))
		x = f->v[x].child;
	return &f->m[f->v[x].msg];
}

/* Step 5A: the thread of each base subject: a dummy rather than a
 * message, a message that is no reply rather than one that is. */
static void references_subjects(struct thread_forest *f, GHashTable *subj)
{
	for (size_t r = 0; r < f->nroots; r++) {
		size_t x = f->roots[r];
		const char *s = references_head(f, x)->subject;
		if (!*s)
			continue;
		gpointer v = g_hash_table_lookup(subj, s);
		if (!v) {
			g_hash_table_insert(subj, (gpointer)s, GSIZE_TO_POINTER(x + 1));
			continue;
		}
		size_t t = GPOINTER_TO_SIZE(v) - 1;
		if ((forest_dummy(f, x) && !forest_dummy(f, t)) ||
		    (!forest_dummy(f, t) && !forest_dummy(f, x) && f->m[f->v[t].msg].reply &&
		     !f->m[f->v[x].msg].reply))
			g_hash_table_insert(subj, (gpointer)s, GSIZE_TO_POINTER(x + 1));
	}
}

static void references_move_kids(struct thread_forest *f, size_t from, size_t to)
{
	size_t kid;
	while ((kid = f->v[from].child) != THREAD_NONE) {
		forest_unlink(f, kid);
		forest_link(f, to, kid);
	}
}

/* Step 5B: threads of the same base subject merged. */
static void references_merge_one(struct thread_forest *f, GHashTable *subj, size_t r)
{
	size_t x = f->roots[r];
	const char *s = references_head(f, x)->subject;
	if (!*s)
		return;
	size_t t = GPOINTER_TO_SIZE(g_hash_table_lookup(subj, s)) - 1;
	if (t == x)
		return;
	bool xd = forest_dummy(f, x), td = forest_dummy(f, t);
	if (xd && td) {
		references_move_kids(f, x, t);
		f->roots[r] = THREAD_NONE;
	} else if (td) {
		f->roots[r] = THREAD_NONE;
		forest_link(f, t, x);
	} else if (xd) {
		f->roots[f->v[t].rootpos] = THREAD_NONE;
		forest_link(f, x, t);
		g_hash_table_insert(subj, (gpointer)s, GSIZE_TO_POINTER(x + 1));
	} else if (!f->m[f->v[t].msg].reply && f->m[f->v[x].msg].reply) {
		f->roots[r] = THREAD_NONE;
		forest_link(f, t, x);
	} else {
		/* siblings under a new dummy, in the table message's place */
		size_t d = forest_add(f, THREAD_NONE);
		size_t pos = f->v[t].rootpos;
		f->roots[pos] = d;
		f->v[d].rootpos = pos;
		f->roots[r] = THREAD_NONE;
		forest_link(f, d, t);
		forest_link(f, d, x);
		g_hash_table_insert(subj, (gpointer)s, GSIZE_TO_POINTER(d + 1));
	}
}

char *imap_thread_references(const struct imap_thread_msg *m, size_t n, size_t *len)
{
	struct thread_forest f;
	forest_init(&f, m, n);
	GHashTable *ids = g_hash_table_new(g_str_hash, g_str_equal);
	for (size_t i = 0; i < n; i++)
		references_link(&f, ids, i);
	g_hash_table_destroy(ids);
	/* step 2: the root set */
	f.roots = xcalloc(f.n ? f.n : 1, sizeof *f.roots);
	for (size_t x = 0; x < f.n; x++)
		if (f.v[x].parent == THREAD_NONE)
			forest_roots_add(&f, x);
	references_prune(&f);   /* step 3 */
	forest_sort(&f);        /* step 4 */
	GHashTable *subj = g_hash_table_new(g_str_hash, g_str_equal);
	references_subjects(&f, subj);
	for (size_t r = 0; r < f.nroots; r++)
		if (f.roots[r] != THREAD_NONE)
			references_merge_one(&f, subj, r);
	g_hash_table_destroy(subj);
	forest_sort(&f);        /* step 6 */
	char *s = forest_print(&f, len);
	forest_free(&f);
	return s;
}

/* ---- THREAD ------------------------------------------------------------------- */

enum thread_algorithm { THREAD_ORDEREDSUBJECT, THREAD_REFERENCES };

struct thread_req {
	enum thread_algorithm alg;
	bool uid;
};

static void thread_done(struct imap_session *s, const struct imap_sortitem *items, size_t n,
			void *arg)
{
	const struct thread_req *r = arg;
	struct imap_thread_msg *m = xcalloc(n ? n : 1, sizeof *m);
	for (size_t i = 0; i < n; i++) {
		const struct imap_sortkey *k = items[i].key;
		m[i] = (struct imap_thread_msg){
			.num = r->uid ? items[i].uid : items[i].seq, .date = k->date,
			.subject = k->subject, .reply = k->reply, .message_id = k->message_id,
			.refs = k->refs, .nrefs = k->nrefs};
	}
	size_t len;
	char *list = r->alg == THREAD_REFERENCES ? imap_thread_references(m, n, &len)
						 : imap_thread_orderedsubject(m, n, &len);
	free(m);
	struct imap_out out;
	imap_out_init(&out);
	imap_out_add(&out, "* THREAD ", n ? 9 : 8);
	imap_out_add(&out, list, len);
	imap_out_add(&out, "\r\n", 2);
	free(list);
	imap_send(s, &out);
	imap_out_free(&out);
	imap_ok(s, "%sTHREAD completed", r->uid ? "UID " : "");
}

/* THREAD algorithm charset search-key... (RFC 5256 §3) */
void imap_cmd_thread(struct imap_session *s, const struct imap_command *c)
{
	const struct imap_arg *a = imap_args_at(&c->args, 0);
	struct thread_req *r = xcalloc(1, sizeof *r);
	if (imap_arg_is(a, "REFERENCES"))
		r->alg = THREAD_REFERENCES;
	else if (imap_arg_is(a, "ORDEREDSUBJECT"))
		r->alg = THREAD_ORDEREDSUBJECT;
	else {
		free(r);
		imap_bad(s, a ? "Unknown threading algorithm"
			      : "Syntax: THREAD algorithm charset search-key ...");
		return;
	}
	struct imap_search_prog *prog = imap_sort_search_args(s, c, 1);
	if (!prog) {
		free(r);
		return;
	}
	r->uid = imap_is_uid(c);
	imap_sortkeys_start(s, prog, thread_done, r, free);
}

/* imap_list: LIST and LSUB of an IMAP session (RFC 3501 §6.3.8, §6.3.9):
 * the folders' attributes (RFC 3348 CHILDREN, RFC 6154 special uses),
 * LIST-EXTENDED's selection and return options and several patterns (RFC
 * 5258, RFC 6154 §4), LIST-STATUS (RFC 5819), and the \Noselect parents
 * LSUB gives for subscribed children that a "%" does not reach (RFC 3501
 * §6.3.9). */
#include "proto/imap/imap_list.h"

#include <stdlib.h>
#include <string.h>

#include "net/conn.h"
#include "proto/imap/imap_context.h"
#include "proto/imap/imap_utf8.h"
#include "proto/imap/imap_view.h"
#include "store/mailbox.h"
#include "lib/util.h"

/* The patterns, reference prefixed. */
struct imap_list_patterns {
	char **v;
	size_t n;
};

/* RFC 5819: the STATUS items LIST may return (as STATUS's). */
static const char *const imap_list_status_names[] = {"MESSAGES", "RECENT", "UIDNEXT",
						     "UIDVALIDITY", "UNSEEN", "HIGHESTMODSEQ"};

/* "* LSUB (attributes) "." name" of a folder (f NULL: a subscribed name
 * with no folder: no attributes). */
static void imap_list_line(const struct imap_session *s, struct imap_out *out, const char *cmd,
			   const struct mailbox_folder *f, const char *name)
{
	imap_out_printf(out, "* %s (", cmd);
	if (f) {
		imap_out_printf(out, "%s%s", f->noselect ? "\\Noselect " : "",
				f->has_children ? "\\HasChildren" : "\\HasNoChildren");
		for (unsigned bit = 1; bit & MAILBOX_SPECIAL_ALL; bit <<= 1)
			if (f->special & bit)
				imap_out_printf(out, " %s", mailbox_special_attr(bit));
	}
	imap_out_printf(out, ") \".\" ");
	imap_utf8_put_mailbox(s, out, name);
	imap_out_add(out, "\r\n", 2);
}

static const struct mailbox_folder *imap_folder_find(const struct mailbox_folder_list *l,
						     const char *name)
{
	for (size_t i = 0; i < l->n; i++)
		if (strcmp(l->v[i].name, name) == 0 ||
		    (mailbox_is_inbox(name) && mailbox_is_inbox(l->v[i].name)))
			return &l->v[i];
	return NULL;
}

static int imap_qcmp_strp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Sorted, each name once (the duplicates freed). */
static void imap_names_sort_unique(struct mailbox_names *l)
{
	if (l->n > 1)
		qsort(l->v, l->n, sizeof *l->v, imap_qcmp_strp);
	size_t o = 0;
	for (size_t i = 0; i < l->n; i++) {
		if (o > 0 && strcmp(l->v[i], l->v[o - 1]) == 0)
			free(l->v[i]);
		else
			l->v[o++] = l->v[i];
	}
	l->n = o;
}

static bool imap_names_have(char *const *sorted, size_t n, const char *name)
{
	return n > 0 && bsearch(&name, sorted, n, sizeof *sorted, imap_qcmp_strp) != NULL;
}

/* RFC 3501 §6.3.9: a subscribed name that the pattern does not match
 * ("x.y.z" for "x.%") shows through each parent the pattern matches
 * ("x.y"), flagged \Noselect, unless that parent is subscribed itself.
 * At most the levels of MAILBOX_FOLDERS_MAX names. */
static void imap_lsub_parents(const struct mailbox_names *subs, const char *pattern,
			      struct mailbox_names *out)
{
	memset(out, 0, sizeof *out);
	char **sorted = xcalloc(subs->n ? subs->n : 1, sizeof *sorted);
	if (subs->n)
		memcpy(sorted, subs->v, subs->n * sizeof *sorted);
	if (subs->n > 1)
		qsort(sorted, subs->n, sizeof *sorted, imap_qcmp_strp);
	size_t cap = 0;
	for (size_t i = 0; i < subs->n; i++) {
		const char *name = subs->v[i];
		if (mailbox_match(pattern, name))
			continue;
		for (const char *d = strchr(name, MAILBOX_DELIM); d; d = strchr(d + 1, MAILBOX_DELIM)) {
			char *parent = xstrndup(name, (size_t)(d - name));
			if (mailbox_match(pattern, parent) &&
			    !imap_names_have(sorted, subs->n, parent)) {
				char **slot = xgrow(&out->v, &out->n, &cap, sizeof *slot);
				*slot = parent;
			} else {
				free(parent);
			}
		}
	}
	free(sorted);
	imap_names_sort_unique(out);
}

/* RFC 5258 §3 selection options; RECURSIVEMATCH needs another one
 * besides REMOTE (§3.1).  Anything else is BAD. */
static const char *imap_list_selection(const struct imap_args *l, struct imap_list_opts *o)
{
	bool other = false;
	for (size_t i = 0; l && i < l->n; i++) {
		const struct imap_arg *a = imap_args_at(l, i);
		if (imap_arg_is(a, "SPECIAL-USE"))
			o->special_only = other = true; /* RFC 6154 §4 */
		else if (imap_arg_is(a, "SUBSCRIBED"))
			o->subscribed_only = other = true;
		else if (imap_arg_is(a, "RECURSIVEMATCH"))
			o->recursive = true;
		else if (!imap_arg_is(a, "REMOTE")) /* no remote folders: nothing to add */
			return "Unknown LIST selection option";
	}
	if (o->recursive && !other)
		return "RECURSIVEMATCH needs another selection option";
	return NULL;
}

/* RFC 5819 STATUS (items): known items, at least one. */
static bool imap_list_status_items(const struct imap_args *items)
{
	if (!items || items->n == 0)
		return false;
	for (size_t i = 0; i < items->n; i++) {
		size_t k = 0;
		while (k < ARRAY_LEN(imap_list_status_names) &&
		       !imap_arg_is(imap_args_at(items, i), imap_list_status_names[k]))
			k++;
		if (k == ARRAY_LEN(imap_list_status_names))
			return false;
	}
	return true;
}

/* RFC 5258 §3 return options: CHILDREN, SUBSCRIBED, SPECIAL-USE (RFC
 * 6154 §4: the uses are always given), STATUS (RFC 5819). */
static const char *imap_list_return(const struct imap_args *l, struct imap_list_opts *o)
{
	for (size_t i = 0; l && i < l->n; i++) {
		const struct imap_arg *a = imap_args_at(l, i);
		if (imap_arg_is(a, "SUBSCRIBED")) {
			o->ret_subscribed = true;
		} else if (imap_arg_is(a, "CHILDREN")) {
			o->ret_children = true;
		} else if (imap_arg_is(a, "STATUS") && !o->status &&
			   imap_list_status_items(imap_arg_list(imap_args_at(l, i + 1)))) {
			o->status = imap_arg_list(imap_args_at(l, ++i));
		} else if (!imap_arg_is(a, "SPECIAL-USE")) {
			return "Unknown LIST return option";
		}
	}
	return NULL;
}

const char *imap_list_options(const struct imap_args *sel, const struct imap_args *ret,
			      struct imap_list_opts *o)
{
	memset(o, 0, sizeof *o);
	const char *err = imap_list_selection(sel, o);
	return err ? err : imap_list_return(ret, o);
}

static bool imap_list_matches(const struct imap_list_patterns *pats, const char *name)
{
	for (size_t i = 0; i < pats->n; i++)
		if (mailbox_match(pats->v[i], name))
			return true;
	return false;
}

static void imap_list_patterns_free(struct imap_list_patterns *pats)
{
	for (size_t i = 0; i < pats->n; i++)
		free(pats->v[i]);
	free(pats->v);
	memset(pats, 0, sizeof *pats);
}

/* One pattern or a list of them (RFC 5258 §3: mbox-or-pat), each after
 * the reference.  false when one is not a list-mailbox. */
static bool imap_list_patterns_get(struct imap_session *s, const struct imap_arg *a,
				   const char *ref, struct imap_list_patterns *pats)
{
	const struct imap_args *l = imap_arg_list(a);
	size_t n = l ? l->n : 1, len;
	if (n == 0)
		return false;
	pats->v = xcalloc(n, sizeof *pats->v);
	for (size_t i = 0; i < n; i++) {
		const char *p = imap_arg_list_mailbox(l ? imap_args_at(l, i) : a, &len);
		if (!p || len != strlen(p)) {
			imap_list_patterns_free(pats);
			return false;
		}
		/* RFC 6855 §3: UTF-8 patterns after ENABLE UTF8=ACCEPT (the
		 * wildcards are ASCII and stay as they are) */
		char *joined = xasprintf("%s%s", ref, p);
		const char *store = imap_utf8_name_in(s, joined, 0);
		pats->v[pats->n] = store ? xstrdup(store) : NULL;
		free(joined);
		if (!pats->v[pats->n++]) {
			imap_list_patterns_free(pats);
			return false;
		}
	}
	return true;
}

/* "* LIST (attributes) "." name [("CHILDINFO" ("SUBSCRIBED"))]" (RFC
 * 5258 §4): f NULL for a subscribed name without a folder (\NonExistent). */
static void imap_list_ext_line(const struct imap_session *s, struct imap_out *out,
			       const struct imap_list_opts *o,
			       const struct mailbox_folder *f, const char *name, bool subscribed,
			       bool childinfo)
{
	const char *sep = "";
	imap_out_printf(out, "* LIST (");
	if (!f) {
		imap_out_printf(out, "\\NonExistent");
		sep = " ";
	} else {
		if (f->noselect) {
			imap_out_printf(out, "\\Noselect");
			sep = " ";
		}
		/* RFC 5258 §4: children only when asked for, under SUBSCRIBED */
		if (!o->subscribed_only || o->ret_children) {
			imap_out_printf(out, "%s%s", sep,
					f->has_children ? "\\HasChildren" : "\\HasNoChildren");
			sep = " ";
		}
		for (unsigned bit = 1; bit & MAILBOX_SPECIAL_ALL; bit <<= 1)
			if (f->special & bit) {
				imap_out_printf(out, "%s%s", sep, mailbox_special_attr(bit));
				sep = " ";
			}
	}
	if (subscribed && (o->subscribed_only || o->ret_subscribed))
		imap_out_printf(out, "%s\\Subscribed", sep);
	imap_out_printf(out, ") \".\" ");
	imap_utf8_put_mailbox(s, out, name);
	if (childinfo)
		imap_out_printf(out, " (\"CHILDINFO\" (\"SUBSCRIBED\"))");
	imap_out_add(out, "\r\n", 2);
}

/* RFC 5819: "* STATUS name (items)" after a selectable folder's LIST
 * line; a folder that cannot be read now is left out, logged. */
static void imap_list_status(struct imap_session *s, struct imap_out *out,
			     const struct imap_args *items, const char *name)
{
	struct mailbox_status st;
	char err[256];
	if (mailbox_status(s->maildir, name, &st, err, sizeof err) != MAILBOX_OK) {
		imap_mailbox_log(s, "list-status", err);
		return;
	}
	const unsigned long long values[] = {st.messages, st.recent, st.uidnext,
					     st.uidvalidity, st.unseen, st.highestmodseq};
	imap_out_printf(out, "* STATUS ");
	imap_utf8_put_mailbox(s, out, name);
	imap_out_printf(out, " (");
	for (size_t i = 0; i < items->n; i++) {
		size_t k = 0;
		while (!imap_arg_is(imap_args_at(items, i), imap_list_status_names[k]))
			k++;
		imap_out_printf(out, "%s%s %llu", i ? " " : "", imap_list_status_names[k],
				values[k]);
	}
	imap_out_printf(out, ")\r\n");
}

/* RECURSIVEMATCH (RFC 5258 §3.5): the names matched by a pattern that
 * have a subscribed descendant no pattern matches, sorted, each once. */
static void imap_list_childinfo(const struct imap_list_patterns *pats,
				const struct mailbox_names *subs, struct mailbox_names *out)
{
	size_t cap = 0;
	memset(out, 0, sizeof *out);
	for (size_t i = 0; i < subs->n; i++) {
		const char *name = subs->v[i];
		if (imap_list_matches(pats, name))
			continue;
		for (const char *d = strchr(name, MAILBOX_DELIM); d; d = strchr(d + 1, MAILBOX_DELIM)) {
			char *parent = xstrndup(name, (size_t)(d - name));
			if (imap_list_matches(pats, parent)) {
				char **slot = xgrow(&out->v, &out->n, &cap, sizeof *slot);
				*slot = parent;
			} else {
				free(parent);
			}
		}
	}
	imap_names_sort_unique(out);
}

/* One line (and its STATUS) of an extended LIST. */
static void imap_list_one(struct imap_session *s, struct imap_out *out,
			  const struct imap_list_opts *o, const struct mailbox_folder *f,
			  const char *name, bool subscribed, bool childinfo)
{
	if (o->special_only && !(f && f->special))
		return;
	imap_list_ext_line(s, out, o, f, name, subscribed, childinfo);
	if (o->status && f && !f->noselect)
		imap_list_status(s, out, o->status, name);
	if (imap_out_full(out))
		imap_send(s, out);
}

/* SUBSCRIBED selection: the subscribed names the patterns match and,
 * with RECURSIVEMATCH, the parents of those they do not. */
static void imap_list_subscribed(struct imap_session *s, struct imap_out *out,
				 const struct imap_list_opts *o, const struct imap_list_patterns *pats,
				 const struct mailbox_folder_list *folders, struct mailbox_names *subs)
{
	struct mailbox_names info = {0};
	if (o->recursive)
		imap_list_childinfo(pats, subs, &info);
	imap_names_sort_unique(subs);
	/* merge the two sorted lists */
	size_t i = 0, k = 0;
	while (i < subs->n || k < info.n) {
		int c = i == subs->n ? 1 : k == info.n ? -1 : strcmp(subs->v[i], info.v[k]);
		const char *name = c <= 0 ? subs->v[i] : info.v[k];
		bool subscribed = c <= 0, childinfo = c >= 0;
		if (!subscribed || imap_list_matches(pats, name))
			imap_list_one(s, out, o, imap_folder_find(folders, name), name, subscribed,
				      childinfo);
		i += c <= 0;
		k += c >= 0;
	}
	mailbox_names_free(&info);
}

/* Every folder the patterns match. */
static void imap_list_all(struct imap_session *s, struct imap_out *out,
			  const struct imap_list_opts *o, const struct imap_list_patterns *pats,
			  const struct mailbox_folder_list *folders, struct mailbox_names *subs)
{
	imap_names_sort_unique(subs);
	for (size_t i = 0; i < folders->n; i++) {
		const char *name = folders->v[i].name;
		if (!imap_list_matches(pats, name))
			continue;
		bool subscribed = imap_names_have(subs->v, subs->n, name);
		imap_list_one(s, out, o, &folders->v[i], name, subscribed, false);
	}
}

/* The lines of LSUB into out (RFC 3501 §6.3.9). */
static void imap_lsub_folders(struct imap_session *s, struct imap_out *out, const char *full,
			      const struct mailbox_folder_list *folders,
			      const struct mailbox_names *subs)
{
	for (size_t i = 0; i < subs->n; i++) {
		const char *name = subs->v[i];
		if (!mailbox_match(full, name))
			continue;
		imap_list_line(s, out, "LSUB", imap_folder_find(folders, name), name);
		if (imap_out_full(out))
			imap_send(s, out);
	}
	struct mailbox_names parents;
	imap_lsub_parents(subs, full, &parents);
	for (size_t i = 0; i < parents.n; i++) {
		imap_out_printf(out, "* LSUB (\\Noselect) \".\" ");
		imap_utf8_put_mailbox(s, out, parents.v[i]);
		imap_out_add(out, "\r\n", 2);
		if (imap_out_full(out))
			imap_send(s, out);
	}
	mailbox_names_free(&parents);
}

/* The folders and, when the answer needs them, the subscriptions. */
static enum mailbox_result imap_list_read(struct imap_session *s, bool subs_needed,
					  struct mailbox_folder_list *folders,
					  struct mailbox_names *subs, char *err, size_t errsz)
{
	if (mailbox_folders(s->maildir, folders, err, errsz) < 0)
		return MAILBOX_ERR_IO;
	if (!subs_needed) /* over the limit: NO [LIMIT], never a shortened list */
		return MAILBOX_OK;
	return mailbox_subscriptions(s->maildir, subs, err, errsz);
}

static void imap_cmd_lsub(struct imap_session *s, const struct imap_command *c)
{
	size_t rlen, plen;
	const char *ref = imap_arg_astring(imap_args_at(&c->args, 0), &rlen);
	const char *pat = imap_arg_list_mailbox(imap_args_at(&c->args, 1), &plen);
	if (!ref || !pat || c->args.n != 2) {
		imap_bad(s, "Syntax: LSUB reference pattern");
		return;
	}
	char *joined = xasprintf("%s%s", ref, pat);
	/* RFC 6855 §3: UTF-8 patterns after ENABLE UTF8=ACCEPT (the
	 * wildcards are ASCII and stay as they are) */
	const char *store_pattern = imap_utf8_name_in(s, joined, 0);
	char *full = store_pattern ? xstrdup(store_pattern) : NULL;
	free(joined);
	if (!full) {
		imap_bad(s, "Invalid UTF-8 in the mailbox pattern");
		return;
	}
	struct mailbox_folder_list folders = {0};
	struct mailbox_names subs = {0};
	char err[256];
	enum mailbox_result r = imap_list_read(s, true, &folders, &subs, err, sizeof err);
	if (r == MAILBOX_OK) {
		struct imap_out out;
		imap_out_init(&out);
		imap_lsub_folders(s, &out, full, &folders, &subs);
		imap_send(s, &out);
		imap_out_free(&out);
	}
	free(full);
	mailbox_folders_free(&folders);
	mailbox_names_free(&subs);
	if (imap_store_error(s, r, err))
		imap_ok(s, "LSUB completed");
}

/* LIST [(selection options)] reference mbox-or-pat [RETURN (options)]
 * (RFC 5258 §3), LSUB reference pattern. */
void imap_cmd_list(struct imap_session *s, const struct imap_command *c)
{
	if (strcmp(c->name, "LSUB") == 0) {
		imap_cmd_lsub(s, c);
		return;
	}
	const char *syntax = "Syntax: LIST [(options)] reference pattern [RETURN (options)]";
	const struct imap_args *sel = imap_arg_list(imap_args_at(&c->args, 0));
	size_t at = sel ? 1 : 0, rlen;
	const char *ref = imap_arg_astring(imap_args_at(&c->args, at), &rlen);
	const struct imap_arg *pat = imap_args_at(&c->args, at + 1);
	const struct imap_args *ret = NULL;
	bool syntax_ok = ref && rlen == strlen(ref) && pat && c->args.n == at + 2;
	if (ref && pat && c->args.n == at + 4) {
		ret = imap_arg_list(imap_args_at(&c->args, at + 3));
		syntax_ok = ret && imap_arg_is(imap_args_at(&c->args, at + 2), "RETURN");
	}
	struct imap_list_opts o;
	if (!syntax_ok) {
		imap_bad(s, syntax);
		return;
	}
	const char *err = imap_list_options(sel, ret, &o);
	if (err) {
		imap_bad(s, err);
		return;
	}
	size_t plen;
	const char *one = imap_arg_list_mailbox(pat, &plen);
	if (!sel && !ret && one && *one == '\0') { /* RFC 3501 §6.3.8: the delimiter and the root */
		conn_printf(s->io, "* LIST (\\Noselect) \".\" \"\"");
		imap_ok(s, "LIST completed");
		return;
	}
	struct imap_list_patterns pats = {0};
	if (!imap_list_patterns_get(s, pat, ref, &pats)) {
		imap_bad(s, syntax);
		return;
	}
	if (o.status)
		for (size_t i = 0; i < o.status->n; i++)
			if (imap_arg_is(imap_args_at(o.status, i), "HIGHESTMODSEQ"))
				imap_condstore_enable(s); /* RFC 7162 §3.1.2.1 */
	struct mailbox_folder_list folders = {0};
	struct mailbox_names subs = {0};
	char why[256];
	enum mailbox_result r = imap_list_read(s, o.subscribed_only || o.ret_subscribed, &folders,
					       &subs, why, sizeof why);
	if (r == MAILBOX_OK) {
		struct imap_out out;
		imap_out_init(&out);
		if (o.subscribed_only)
			imap_list_subscribed(s, &out, &o, &pats, &folders, &subs);
		else
			imap_list_all(s, &out, &o, &pats, &folders, &subs);
		imap_send(s, &out);
		imap_out_free(&out);
	}
	imap_list_patterns_free(&pats);
	mailbox_folders_free(&folders);
	mailbox_names_free(&subs);
	if (imap_store_error(s, r, why))
		imap_ok(s, "LIST completed");
}

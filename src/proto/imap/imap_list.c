/* imap_list: LIST and LSUB of an IMAP session (RFC 3501 §6.3.8, §6.3.9):
 * the folders' attributes (RFC 3348 CHILDREN, RFC 6154 special uses), the
 * SPECIAL-USE selection and return options in the syntax of RFC 5258
 * (RFC 6154 §4), and the \Noselect parents LSUB gives for subscribed
 * children that a "%" does not reach (RFC 3501 §6.3.9). */
#include "proto/imap/imap_list.h"

#include <stdlib.h>
#include <string.h>

#include "net/conn.h"
#include "proto/imap/imap_context.h"
#include "proto/imap/imap_utf8.h"
#include "store/mailbox.h"
#include "lib/util.h"

/* What a LIST asks for beyond RFC 3501. */
struct imap_list_opts {
	bool special_only;       /* selection option SPECIAL-USE */
};

/* "* LIST (attributes) "." name" of a folder (f NULL: a subscribed name
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

/* RFC 5258 §3 options (selection before the reference, return after
 * RETURN): SPECIAL-USE (RFC 6154 §4) and CHILDREN (its attributes are
 * always given) are known; any other is BAD, as RFC 5258 §3 wants. */
static bool imap_list_options(struct imap_session *s, const struct imap_args *l, bool selection,
			      struct imap_list_opts *o)
{
	for (size_t i = 0; l && i < l->n; i++) {
		const struct imap_arg *a = imap_args_at(l, i);
		if (imap_arg_is(a, "SPECIAL-USE")) {
			o->special_only |= selection;
		} else if (selection || !imap_arg_is(a, "CHILDREN")) {
			imap_bad(s, selection ? "Unknown LIST selection option"
					      : "Unknown LIST return option");
			return false;
		}
	}
	return true;
}

/* The lines of one LIST or LSUB into out. */
static void imap_list_folders(struct imap_session *s, struct imap_out *out, bool lsub,
			      const struct imap_list_opts *o, const char *full,
			      const struct mailbox_folder_list *folders,
			      const struct mailbox_names *subs)
{
	size_t n = lsub ? subs->n : folders->n;
	for (size_t i = 0; i < n; i++) {
		const char *name = lsub ? subs->v[i] : folders->v[i].name;
		if (!mailbox_match(full, name))
			continue;
		const struct mailbox_folder *f = lsub ? imap_folder_find(folders, name)
						      : &folders->v[i];
		if (o->special_only && !(f && f->special))
			continue;
		imap_list_line(s, out, lsub ? "LSUB" : "LIST", f, name);
		if (imap_out_full(out))
			imap_send(s, out);
	}
	if (!lsub)
		return;
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

/* LIST [(selection options)] reference pattern [RETURN (return options)],
 * LSUB reference pattern. */
void imap_cmd_list(struct imap_session *s, const struct imap_command *c)
{
	bool lsub = strcmp(c->name, "LSUB") == 0;
	const struct imap_args *sel = lsub ? NULL : imap_arg_list(imap_args_at(&c->args, 0));
	size_t at = sel ? 1 : 0, rlen, plen;
	const char *ref = imap_arg_astring(imap_args_at(&c->args, at), &rlen);
	const char *pat = imap_arg_list_mailbox(imap_args_at(&c->args, at + 1), &plen);
	const struct imap_args *ret = NULL;
	bool syntax = ref && pat && c->args.n == at + 2;
	if (ref && pat && !lsub && c->args.n == at + 4) {
		ret = imap_arg_list(imap_args_at(&c->args, at + 3));
		syntax = ret && imap_arg_is(imap_args_at(&c->args, at + 2), "RETURN");
	}
	if (!syntax) {
		imap_bad(s, lsub ? "Syntax: LSUB reference pattern"
				 : "Syntax: LIST [(options)] reference pattern [RETURN (options)]");
		return;
	}
	struct imap_list_opts o = {0};
	if (!imap_list_options(s, sel, true, &o) || !imap_list_options(s, ret, false, &o))
		return;
	if (!lsub && *pat == '\0') { /* §6.3.8: the delimiter and the root */
		conn_printf(s->io, "* LIST (\\Noselect) \".\" \"\"");
		imap_ok(s, "LIST completed");
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
	enum mailbox_result r = MAILBOX_OK;
	if (mailbox_folders(s->maildir, &folders, err, sizeof err) < 0)
		r = MAILBOX_ERR_IO;
	else if (lsub) /* over the limit: NO [LIMIT], never a shortened list */
		r = mailbox_subscriptions(s->maildir, &subs, err, sizeof err);
	if (r == MAILBOX_OK) {
		struct imap_out out;
		imap_out_init(&out);
		imap_list_folders(s, &out, lsub, &o, full, &folders, &subs);
		imap_send(s, &out);
		imap_out_free(&out);
	}
	free(full);
	mailbox_folders_free(&folders);
	mailbox_names_free(&subs);
	if (imap_store_error(s, r, err))
		imap_ok(s, "%s completed", lsub ? "LSUB" : "LIST");
}

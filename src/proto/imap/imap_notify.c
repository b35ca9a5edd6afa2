/* imap_notify: RFC 5465 NOTIFY (see imap_notify.h). */
#include "proto/imap/imap_notify.h"

#include <event2/buffer.h>
#include <event2/event.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "lib/log.h"
#include "lib/util.h"
#include "net/conn.h"
#include "proto/imap/imap_context.h"
#include "proto/imap/imap_date.h"
#include "proto/imap/imap_utf8.h"
#include "proto/imap/imap_view.h"
#include "runtime/runtime.h"
#include "store/mailbox.h"

/* ---- the parser ------------------------------------------------------------ */

void imap_notify_spec_free(struct imap_notify_spec *spec)
{
	for (size_t i = 0; i < spec->ngroups; i++) {
		for (size_t k = 0; k < spec->groups[i].nnames; k++)
			free(spec->groups[i].names[k]);
		free(spec->groups[i].names);
	}
	memset(spec, 0, sizeof *spec);
}

static bool imap_notify_filter_word(const struct imap_arg *a, enum imap_notify_filter *f)
{
	static const struct {
		const char *word;
		enum imap_notify_filter filter;
	} words[] = {
		{"SELECTED", IMAP_NOTIFY_SELECTED},   {"SELECTED-DELAYED", IMAP_NOTIFY_SELECTED_DELAYED},
		{"INBOXES", IMAP_NOTIFY_INBOXES},     {"PERSONAL", IMAP_NOTIFY_PERSONAL},
		{"SUBSCRIBED", IMAP_NOTIFY_SUBSCRIBED}, {"SUBTREE", IMAP_NOTIFY_SUBTREE},
		{"MAILBOXES", IMAP_NOTIFY_MAILBOXES},
	};
	for (size_t i = 0; i < ARRAY_LEN(words); i++)
		if (imap_arg_is(a, words[i].word)) {
			*f = words[i].filter;
			return true;
		}
	return false;
}

static bool imap_notify_is_selected(enum imap_notify_filter f)
{
	return f == IMAP_NOTIFY_SELECTED || f == IMAP_NOTIFY_SELECTED_DELAYED;
}

/* One mailbox name (astring) into g; false when it is none. */
static bool imap_notify_add_name(struct imap_notify_group *g, const struct imap_arg *a)
{
	size_t len;
	const char *name = imap_arg_astring(a, &len);
	if (!name || len != strlen(name) || len == 0 || g->nnames == IMAP_NOTIFY_NAMES_MAX)
		return false;
	if (!g->names)
		g->names = xcalloc(IMAP_NOTIFY_NAMES_MAX, sizeof *g->names);
	g->names[g->nnames++] = xstrdup(name);
	return true;
}

/* SUBTREE's and MAILBOXES's one-or-more-mailbox. */
static bool imap_notify_names(struct imap_notify_group *g, const struct imap_arg *a)
{
	const struct imap_args *l = imap_arg_list(a);
	if (!l)
		return imap_notify_add_name(g, a);
	if (l->n == 0)
		return false;
	for (size_t i = 0; i < l->n; i++)
		if (!imap_notify_add_name(g, imap_args_at(l, i)))
			return false;
	return true;
}

/* MessageNew's "(fetch-att ...)": the offered attributes into *fetch. */
static bool imap_notify_fetch_atts(const struct imap_args *l, unsigned *fetch)
{
	static const struct {
		const char *word;
		unsigned bit;
	} atts[] = {
		{"UID", IMAP_NOTIFY_FETCH_UID},
		{"FLAGS", IMAP_NOTIFY_FETCH_FLAGS},
		{"RFC822.SIZE", IMAP_NOTIFY_FETCH_SIZE},
		{"INTERNALDATE", IMAP_NOTIFY_FETCH_INTERNALDATE},
	};
	if (l->n == 0)
		return false;
	for (size_t i = 0; i < l->n; i++) {
		size_t k = 0;
		while (k < ARRAY_LEN(atts) && !imap_arg_is(imap_args_at(l, i), atts[k].word))
			k++;
		if (k == ARRAY_LEN(atts))
			return false;
		*fetch |= atts[k].bit;
	}
	return true;
}

/* The events list of a group (or NONE). */
static enum imap_notify_parse_result imap_notify_events(const struct imap_arg *a,
							struct imap_notify_group *g,
							unsigned *fetch, const char **why)
{
	static const struct {
		const char *word;
		unsigned bit;
	} events[] = {
		{"MessageNew", IMAP_NOTIFY_MESSAGE_NEW},
		{"MessageExpunge", IMAP_NOTIFY_MESSAGE_EXPUNGE},
		{"FlagChange", IMAP_NOTIFY_FLAG_CHANGE},
		{"MailboxName", IMAP_NOTIFY_MAILBOX_NAME},
		{"SubscriptionChange", IMAP_NOTIFY_SUBSCRIPTION_CHANGE},
		/* RFC 5465 §5.5 (ANNOTATE), RFC 5464 (METADATA): not offered */
		{"AnnotationChange", 0},
		{"MailboxMetadata", 0},
		{"ServerMetadata", 0},
	};
	if (imap_arg_is(a, "NONE"))
		return IMAP_NOTIFY_PARSE_OK;
	const struct imap_args *l = imap_arg_list(a);
	if (!l || l->n == 0) {
		*why = "Syntax: a filter's events are (event ...) or NONE";
		return IMAP_NOTIFY_PARSE_BAD;
	}
	for (size_t i = 0; i < l->n; i++) {
		const struct imap_arg *e = imap_args_at(l, i);
		if (!imap_arg_atom(e)) {
			*why = "Syntax: an event is an atom";
			return IMAP_NOTIFY_PARSE_BAD;
		}
		size_t k = 0;
		while (k < ARRAY_LEN(events) && !imap_arg_is(e, events[k].word))
			k++;
		if (k == ARRAY_LEN(events) || events[k].bit == 0) {
			*why = "Event not offered";
			return IMAP_NOTIFY_PARSE_BADEVENT;
		}
		g->events |= events[k].bit;
		const struct imap_args *atts = imap_arg_list(imap_args_at(l, i + 1));
		if (events[k].bit == IMAP_NOTIFY_MESSAGE_NEW && atts) {
			/* RFC 5465 §5.2: fetch-att only for the selected folder */
			if (!imap_notify_is_selected(g->filter) || !imap_notify_fetch_atts(atts, fetch)) {
				*why = "Syntax: MessageNew's (fetch-att ...) is for SELECTED and "
				       "SELECTED-DELAYED, of UID FLAGS RFC822.SIZE INTERNALDATE";
				return IMAP_NOTIFY_PARSE_BAD;
			}
			i++;
		}
	}
	/* RFC 5465 §5: FlagChange asks for MessageNew and MessageExpunge; a
	 * client that names only some gets what it named (as Dovecot) */
	return IMAP_NOTIFY_PARSE_OK;
}

/* One "(filter [names] events)". */
static enum imap_notify_parse_result imap_notify_group(const struct imap_arg *a,
						       struct imap_notify_spec *spec,
						       const char **why)
{
	const struct imap_args *l = imap_arg_list(a);
	struct imap_notify_group *g = &spec->groups[spec->ngroups];
	if (!l || !imap_notify_filter_word(imap_args_at(l, 0), &g->filter)) {
		*why = "Syntax: NOTIFY SET [STATUS] (filter events) ...";
		return IMAP_NOTIFY_PARSE_BAD;
	}
	spec->ngroups++;
	bool named = g->filter == IMAP_NOTIFY_SUBTREE || g->filter == IMAP_NOTIFY_MAILBOXES;
	size_t want = named ? 3 : 2;
	if (l->n != want || (named && !imap_notify_names(g, imap_args_at(l, 1)))) {
		*why = named ? "Syntax: (SUBTREE|MAILBOXES mailbox-or-(mailboxes) events)"
			     : "Syntax: (filter events)";
		return IMAP_NOTIFY_PARSE_BAD;
	}
	return imap_notify_events(imap_args_at(l, want - 1), g, &spec->fetch, why);
}

enum imap_notify_parse_result imap_notify_parse(const struct imap_args *args,
						struct imap_notify_spec *out, const char **why)
{
	memset(out, 0, sizeof *out);
	*why = "Syntax: NOTIFY NONE | NOTIFY SET [STATUS] (filter events) ...";
	if (args->n == 1 && imap_arg_is(imap_args_at(args, 0), "NONE")) {
		out->none = true;
		return IMAP_NOTIFY_PARSE_OK;
	}
	if (args->n < 2 || !imap_arg_is(imap_args_at(args, 0), "SET"))
		return IMAP_NOTIFY_PARSE_BAD;
	size_t i = 1;
	if (imap_arg_is(imap_args_at(args, 1), "STATUS")) {
		out->status = true;
		i++;
	}
	if (i == args->n)
		return IMAP_NOTIFY_PARSE_BAD;
	bool selected = false;
	for (; i < args->n; i++) {
		if (out->ngroups == IMAP_NOTIFY_GROUPS_MAX) {
			*why = "Too many event groups";
			return IMAP_NOTIFY_PARSE_BAD;
		}
		enum imap_notify_parse_result r = imap_notify_group(imap_args_at(args, i), out, why);
		if (r != IMAP_NOTIFY_PARSE_OK)
			return r;
		if (imap_notify_is_selected(out->groups[out->ngroups - 1].filter)) {
			/* RFC 5465 §6: SELECTED or SELECTED-DELAYED, once */
			if (selected) {
				*why = "SELECTED and SELECTED-DELAYED may be given once";
				return IMAP_NOTIFY_PARSE_BAD;
			}
			selected = true;
		}
	}
	return IMAP_NOTIFY_PARSE_OK;
}

/* ---- a session's notifications --------------------------------------------- */

/* A folder other than the selected one, watched for STATUS. */
struct imap_notify_folder {
	char *name;                      /* as the store names it */
	unsigned events;
	bool watched;                    /* wds hold its new/ and cur/ in the inotify instance */
	int wds[2];
	bool known;                      /* last holds what the client was told */
	struct mailbox_status last;
};

struct imap_notify {
	struct imap_notify_spec spec;
	struct imap_notify_folder *folders;
	size_t nfolders;
	int fd;                          /* the inotify instance of the folders, or -1 */
	struct event *ev;                /* its reads */
	struct event *poll;              /* without inotify: a look at every folder */
	struct imap_out pending;         /* STATUS and LIST lines not sent yet */
	struct event *retry;             /* send pending once the session is free */
	struct imap_notify *next;        /* every session with NOTIFY set */
	struct imap_session *s;
	uint32_t uid_told;               /* the selected folder's last UID the client knows */
	bool overflow;                   /* NOTIFICATIONOVERFLOW sent: no more STATUS, LIST */
};

static struct imap_notify *imap_notify_all;

enum {
	IMAP_NOTIFY_RETRY_MS = 50,
	IMAP_NOTIFY_POLL_MS = 5000,      /* without inotify */
	/* STATUS and LIST lines held for a busy session, at most */
	IMAP_NOTIFY_PENDING_MAX = 64 * 1024,
};

static void imap_notify_unlink(struct imap_notify *n)
{
	for (struct imap_notify **p = &imap_notify_all; *p; p = &(*p)->next)
		if (*p == n) {
			*p = n->next;
			return;
		}
}

static void imap_notify_free(struct imap_notify *n)
{
	if (!n)
		return;
	imap_notify_unlink(n);
	for (size_t i = 0; i < n->nfolders; i++)
		free(n->folders[i].name);
	if (n->ev)
		event_free(n->ev);
	if (n->poll)
		event_free(n->poll);
	if (n->fd >= 0)
		(void)close(n->fd); /* read-only inotify descriptor: nothing to lose */
	free(n->folders);
	if (n->retry)
		event_free(n->retry);
	imap_out_free(&n->pending);
	imap_notify_spec_free(&n->spec);
	free(n);
}

void imap_notify_end(struct imap_session *s)
{
	imap_notify_free(s->notify);
	s->notify = NULL;
}

bool imap_notify_selected(const struct imap_session *s, bool *expunges)
{
	*expunges = false;
	if (!s->notify)
		return false;
	for (size_t i = 0; i < s->notify->spec.ngroups; i++) {
		const struct imap_notify_group *g = &s->notify->spec.groups[i];
		if (imap_notify_is_selected(g->filter) && g->events) {
			*expunges = g->filter == IMAP_NOTIFY_SELECTED;
			return true;
		}
	}
	return false;
}

/* The UID of the last message of the view, 0 for none. */
static uint32_t imap_notify_last_uid(const struct imap_session *s)
{
	size_t n = s->view ? mailbox_count(s->view) : 0;
	const struct mailbox_msg *m = n ? mailbox_msg(s->view, n) : NULL;
	return m ? m->uid : 0;
}

void imap_notify_view_opened(struct imap_session *s)
{
	if (s->notify)
		s->notify->uid_told = imap_notify_last_uid(s);
}

static void imap_notify_fetch_line(struct imap_session *s, struct imap_out *out, size_t seq,
				   const struct mailbox_msg *m)
{
	unsigned want = s->notify->spec.fetch;
	char date[IMAP_DATETIME_SIZE];
	if ((want & IMAP_NOTIFY_FETCH_INTERNALDATE) && !imap_format_datetime(m->internal_date, date))
		want &= ~(unsigned)IMAP_NOTIFY_FETCH_INTERNALDATE; /* no date to tell */
	imap_out_printf(out, "* %zu FETCH (UID %lu", seq, (unsigned long)m->uid);
	if (want & IMAP_NOTIFY_FETCH_FLAGS) {
		imap_out_add(out, " FLAGS ", 7);
		imap_flags_text(out, s->view, m->flags);
	}
	if (want & IMAP_NOTIFY_FETCH_SIZE)
		imap_out_printf(out, " RFC822.SIZE %llu", (unsigned long long)m->size);
	if (want & IMAP_NOTIFY_FETCH_INTERNALDATE)
		imap_out_printf(out, " INTERNALDATE \"%s\"", date);
	imap_out_add(out, ")\r\n", 3);
}

void imap_notify_new_messages(struct imap_session *s, struct imap_out *out, size_t exists)
{
	struct imap_notify *n = s->notify;
	if (!n || !n->spec.fetch || !s->view || exists > mailbox_count(s->view))
		return;
	size_t first = exists + 1;
	while (first > 1) {
		const struct mailbox_msg *m = mailbox_msg(s->view, first - 1);
		if (m && m->uid <= n->uid_told)
			break;
		first--;
	}
	for (size_t seq = first; seq <= exists; seq++) {
		const struct mailbox_msg *m = mailbox_msg(s->view, seq);
		if (m && m->name) {
			imap_notify_fetch_line(s, out, seq, m);
			n->uid_told = m->uid;
		}
	}
}

/* The session may get an unsolicited response now: no command under
 * way, and the client reads what it was sent (else the lines wait in
 * pending, which is bounded, rather than in the connection's output). */
static bool imap_notify_session_free(const struct imap_session *s)
{
	return !s->job && !s->store_busy && !s->deferred && !conn_output_full(s->io) &&
	       (s->state & (IMAP_AUTH | IMAP_SELECTED | IMAP_IDLE)) != 0;
}

void imap_notify_flush(struct imap_session *s, struct imap_out *out)
{
	struct imap_notify *n = s->notify;
	if (!n || imap_out_len(&n->pending) == 0)
		return;
	size_t len = imap_out_len(&n->pending);
	char *buf = xmalloc(len);
	if (evbuffer_remove(n->pending.buf, buf, len) != (int)len)
		fatal("imap: the pending notifications could not be read back");
	imap_out_add(out, buf, len);
	free(buf);
}

/* Send what is pending now, or a little later when a command is under way. */
static void imap_notify_kick(struct imap_session *s)
{
	struct imap_notify *n = s->notify;
	if (imap_out_len(&n->pending) == 0)
		return;
	if (!n->overflow && imap_out_len(&n->pending) > IMAP_NOTIFY_PENDING_MAX) {
		/* RFC 5465 §5.8: the client is told, and hears no more of the
		 * other folders until it sets NOTIFY again */
		n->overflow = true;
		log_info("event=notify-overflow session=%s pending=%zu", s->b.sid,
			 imap_out_len(&n->pending));
		imap_out_discard(&n->pending);
		imap_out_printf(&n->pending, "* OK [NOTIFICATIONOVERFLOW] Too many notifications "
					     "waiting; NOTIFY again to go on\r\n");
	}
	if (imap_notify_session_free(s)) {
		struct imap_out out;
		imap_out_init(&out);
		imap_notify_flush(s, &out);
		imap_send(s, &out);
		imap_out_free(&out);
		return;
	}
	struct timeval tv = {.tv_sec = 0, .tv_usec = IMAP_NOTIFY_RETRY_MS * 1000};
	if (event_add(n->retry, &tv) != 0)
		log_warn("event=notify-retry-failed session=%s", s->b.sid);
}

static void imap_notify_on_retry(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct imap_session *s = arg;
	if (s->notify)
		imap_notify_kick(s);
}

/* ---- STATUS of the watched folders ----------------------------------------- */

/* RFC 5465 §5.2-§5.4 and what imaptest's notify group checks: the items
 * a folder's events call for. */
static void imap_notify_status_line(struct imap_session *s, struct imap_out *out,
				    const struct imap_notify_folder *f)
{
	imap_out_printf(out, "* STATUS ");
	imap_utf8_put_mailbox(s, out, f->name);
	const char *sep = "";
	imap_out_printf(out, " (");
	if (f->events & (IMAP_NOTIFY_MESSAGE_NEW | IMAP_NOTIFY_MESSAGE_EXPUNGE)) {
		imap_out_printf(out, "MESSAGES %lu", (unsigned long)f->last.messages);
		sep = " ";
	}
	if (f->events & IMAP_NOTIFY_MESSAGE_NEW) {
		imap_out_printf(out, "%sUIDNEXT %lu", sep, (unsigned long)f->last.uidnext);
		sep = " ";
	}
	if (f->events & (IMAP_NOTIFY_MESSAGE_NEW | IMAP_NOTIFY_FLAG_CHANGE)) {
		imap_out_printf(out, "%sUIDVALIDITY %lu", sep, (unsigned long)f->last.uidvalidity);
		sep = " ";
	}
	if (f->events & IMAP_NOTIFY_FLAG_CHANGE)
		imap_out_printf(out, "%sHIGHESTMODSEQ %llu", sep,
				(unsigned long long)f->last.highestmodseq);
	imap_out_printf(out, ")\r\n");
}

static bool imap_notify_status_changed(const struct imap_notify_folder *f,
				       const struct mailbox_status *now)
{
	if (!f->known || now->uidvalidity != f->last.uidvalidity)
		return true;
	if ((f->events & (IMAP_NOTIFY_MESSAGE_NEW | IMAP_NOTIFY_MESSAGE_EXPUNGE)) &&
	    (now->messages != f->last.messages || now->uidnext != f->last.uidnext))
		return true;
	return (f->events & IMAP_NOTIFY_FLAG_CHANGE) && now->highestmodseq != f->last.highestmodseq;
}

static bool imap_notify_is_view(const struct imap_session *s, const char *name)
{
	return s->view && strcmp(mailbox_name(s->view), name) == 0;
}

/* When to tell the client of a folder's STATUS. */
enum imap_notify_tell {
	IMAP_NOTIFY_TELL_NEVER,          /* NOTIFY SET without STATUS: the counts to start from */
	IMAP_NOTIFY_TELL_CHANGED,
	IMAP_NOTIFY_TELL_ALWAYS,         /* NOTIFY SET STATUS */
};

/* Look at f again; when it changed (or always), its STATUS goes to pending. */
static void imap_notify_check(struct imap_session *s, struct imap_notify_folder *f,
			      enum imap_notify_tell tell)
{
	struct mailbox_status now;
	char err[256];
	if (mailbox_status(s->maildir, f->name, &now, err, sizeof err) != MAILBOX_OK) {
		f->known = false; /* gone: nothing to tell until it is back */
		return;
	}
	bool changed = imap_notify_status_changed(f, &now);
	f->last = now;
	f->known = true;
	/* RFC 5465 §5: the selected folder's changes come as EXISTS, EXPUNGE, FETCH */
	bool now_tell = tell == IMAP_NOTIFY_TELL_ALWAYS || (tell == IMAP_NOTIFY_TELL_CHANGED && changed);
	if (now_tell && f->events && !imap_notify_is_view(s, f->name))
		imap_notify_status_line(s, &s->notify->pending, f);
}

static void imap_notify_on_folders(evutil_socket_t fd, short what, void *arg)
{
	(void)what;
	struct imap_session *s = arg;
	struct imap_notify *n = s->notify;
	int wds[2 * IMAP_NOTIFY_WATCH_MAX];
	bool overflow;
	size_t nw = mailbox_watch_fd_read(fd, wds, ARRAY_LEN(wds), &overflow);
	for (size_t i = 0; i < n->nfolders && !n->overflow; i++) {
		struct imap_notify_folder *f = &n->folders[i];
		bool fired = overflow;
		for (size_t k = 0; k < nw && !fired && f->watched; k++)
			fired = wds[k] == f->wds[0] || wds[k] == f->wds[1];
		if (fired)
			imap_notify_check(s, f, IMAP_NOTIFY_TELL_CHANGED);
	}
	imap_notify_kick(s);
}

static void imap_notify_on_poll(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct imap_session *s = arg;
	struct imap_notify *n = s->notify;
	for (size_t i = 0; i < n->nfolders && !n->overflow; i++)
		imap_notify_check(s, &n->folders[i], IMAP_NOTIFY_TELL_CHANGED);
	imap_notify_kick(s);
}

/* Without an inotify instance (none left: they are few per user, and the
 * daemon's sessions share one user), the folders are looked at every
 * IMAP_NOTIFY_POLL_MS, as IDLE does. */
static void imap_notify_poll_start(struct imap_session *s, struct imap_notify *n)
{
	n->poll = event_new(s->b.rt->base, -1, EV_PERSIST, imap_notify_on_poll, s);
	struct timeval tv = {.tv_sec = IMAP_NOTIFY_POLL_MS / 1000,
			     .tv_usec = (IMAP_NOTIFY_POLL_MS % 1000) * 1000};
	if (!n->poll || event_add(n->poll, &tv) != 0)
		fatal("imap: no timer for NOTIFY");
}

/* Watch f in n's inotify instance (opened with the first folder); a
 * folder that cannot be watched is logged and left out. */
static void imap_notify_watch_folder(struct imap_session *s, struct imap_notify *n,
				     struct imap_notify_folder *f)
{
	char err[256];
	if (n->poll)
		return; /* no inotify: every folder is looked at in turn */
	if (n->fd < 0) {
		n->fd = mailbox_watch_open(err, sizeof err);
		if (n->fd < 0) {
			imap_mailbox_log(s, "notify-poll", err);
			imap_notify_poll_start(s, n);
			return;
		}
		n->ev = event_new(s->b.rt->base, n->fd, EV_READ | EV_PERSIST, imap_notify_on_folders, s);
		if (!n->ev || event_add(n->ev, NULL) != 0)
			fatal("imap: cannot watch the folders for NOTIFY");
	}
	f->watched = mailbox_watch_folder(n->fd, s->maildir, f->name, f->wds, err, sizeof err) == 0;
	if (!f->watched)
		imap_mailbox_log(s, "notify-watch", err);
}

static bool imap_notify_has(const struct imap_notify *n, const char *name)
{
	for (size_t i = 0; i < n->nfolders; i++)
		if (strcmp(n->folders[i].name, name) == 0)
			return true;
	return false;
}

/* A folder for the watch list (events merged when it is there already);
 * false when the list is full. */
static bool imap_notify_add_folder(struct imap_notify *n, const char *name, unsigned events)
{
	for (size_t i = 0; i < n->nfolders; i++)
		if (strcmp(n->folders[i].name, name) == 0) {
			n->folders[i].events |= events;
			return true;
		}
	if (n->nfolders == IMAP_NOTIFY_WATCH_MAX)
		return false;
	struct imap_notify_folder *f = &n->folders[n->nfolders++];
	memset(f, 0, sizeof *f);
	f->name = xstrdup(name);
	f->events = events;
	return true;
}

static bool imap_notify_subtree_match(const char *top, const char *name)
{
	size_t len = strlen(top);
	if (mailbox_is_inbox(top) && mailbox_is_inbox(name))
		return true;
	return strncmp(top, name, len) == 0 && (name[len] == '\0' || name[len] == '.');
}

static bool imap_notify_in_list(const struct mailbox_names *l, const char *name)
{
	for (size_t i = 0; l && i < l->n; i++)
		if (strcmp(l->v[i], name) == 0)
			return true;
	return false;
}

/* Does group g name the (selectable) folder? */
static bool imap_notify_group_names(const struct imap_notify_group *g, const char *name,
				    const struct mailbox_names *subscribed)
{
	switch (g->filter) {
	case IMAP_NOTIFY_SELECTED:
	case IMAP_NOTIFY_SELECTED_DELAYED:
		return false;
	case IMAP_NOTIFY_INBOXES: /* delivery reaches INBOX only */
		return mailbox_is_inbox(name);
	case IMAP_NOTIFY_PERSONAL:
		return true;
	case IMAP_NOTIFY_SUBSCRIBED:
		return imap_notify_in_list(subscribed, name);
	case IMAP_NOTIFY_SUBTREE:
	case IMAP_NOTIFY_MAILBOXES:
		for (size_t i = 0; i < g->nnames; i++)
			if (g->filter == IMAP_NOTIFY_SUBTREE ? imap_notify_subtree_match(g->names[i], name)
							     : strcmp(g->names[i], name) == 0)
				return true;
		return false;
	}
	return false;
}

/* The message events of the groups that name the folder. */
static unsigned imap_notify_folder_events(const struct imap_notify_spec *spec, const char *name,
					  const struct mailbox_names *subscribed)
{
	unsigned events = 0;
	for (size_t i = 0; i < spec->ngroups; i++)
		if (imap_notify_group_names(&spec->groups[i], name, subscribed))
			events |= spec->groups[i].events;
	return events & (IMAP_NOTIFY_MESSAGE_NEW | IMAP_NOTIFY_MESSAGE_EXPUNGE |
			 IMAP_NOTIFY_FLAG_CHANGE);
}

/* The folders the filters name, into n's watch list; NO and false when
 * there are more than IMAP_NOTIFY_WATCH_MAX or they cannot be listed. */
static bool imap_notify_resolve(struct imap_session *s, struct imap_notify *n)
{
	char err[256];
	struct mailbox_folder_list folders = {0};
	struct mailbox_names subscribed = {0};
	if (mailbox_folders(s->maildir, &folders, err, sizeof err) < 0 ||
	    mailbox_subscriptions(s->maildir, &subscribed, err, sizeof err) != MAILBOX_OK) {
		mailbox_folders_free(&folders);
		imap_mailbox_log(s, "notify", err);
		imap_no(s, "[SERVERBUG] Cannot list the mailboxes");
		return false;
	}
	n->folders = xcalloc(IMAP_NOTIFY_WATCH_MAX, sizeof *n->folders);
	bool fits = true;
	for (size_t i = 0; fits && i < folders.n; i++) {
		const char *name = folders.v[i].name;
		unsigned events = imap_notify_folder_events(&n->spec, name, &subscribed);
		if (!folders.v[i].noselect && events)
			fits = imap_notify_add_folder(n, name, events);
	}
	mailbox_folders_free(&folders);
	mailbox_names_free(&subscribed);
	if (!fits)
		imap_no(s, "[LIMIT] NOTIFY watches at most %d mailboxes; name fewer",
			IMAP_NOTIFY_WATCH_MAX);
	return fits;
}

/* Watch the folders of the list in one inotify instance and take
 * their first STATUS. */
static void imap_notify_watch(struct imap_session *s, struct imap_notify *n)
{
	for (size_t i = 0; i < n->nfolders; i++)
		imap_notify_watch_folder(s, n, &n->folders[i]);
	for (size_t i = 0; i < n->nfolders; i++)
		imap_notify_check(s, &n->folders[i],
				  n->spec.status ? IMAP_NOTIFY_TELL_ALWAYS : IMAP_NOTIFY_TELL_NEVER);
}

/* Mailbox names as the store names them (RFC 6855: converted after
 * ENABLE UTF8=ACCEPT); false (BAD sent) for one that is not valid. */
static bool imap_notify_store_names(struct imap_session *s, struct imap_notify_spec *spec)
{
	for (size_t i = 0; i < spec->ngroups; i++)
		for (size_t k = 0; k < spec->groups[i].nnames; k++) {
			const char *name = imap_utf8_name_in(s, spec->groups[i].names[k], 0);
			if (!name || !mailbox_name_valid(name)) {
				imap_bad(s, "Invalid mailbox name in NOTIFY");
				return false;
			}
			char *copy = xstrdup(name);
			free(spec->groups[i].names[k]);
			spec->groups[i].names[k] = copy;
		}
	return true;
}

void imap_cmd_notify(struct imap_session *s, const struct imap_command *c)
{
	struct imap_notify *n = xcalloc(1, sizeof *n);
	n->s = s;
	n->fd = -1;
	imap_out_init(&n->pending);
	const char *why;
	switch (imap_notify_parse(&c->args, &n->spec, &why)) {
	case IMAP_NOTIFY_PARSE_OK:
		break;
	case IMAP_NOTIFY_PARSE_BAD:
		imap_bad(s, why);
		imap_notify_free(n);
		return;
	case IMAP_NOTIFY_PARSE_BADEVENT:
		/* RFC 5465 §5: the events that are offered */
		imap_no(s, "[BADEVENT (MessageNew MessageExpunge FlagChange MailboxName "
			   "SubscriptionChange)] %s", why);
		imap_notify_free(n);
		return;
	}
	if (n->spec.none || !imap_notify_store_names(s, &n->spec) || !imap_notify_resolve(s, n)) {
		bool none = n->spec.none;
		imap_notify_free(n);
		if (!none)
			return;
		imap_notify_end(s); /* NOTIFY NONE */
		imap_ok(s, "NOTIFY completed");
		return;
	}
	imap_notify_end(s); /* a new SET replaces the old one (RFC 5465 §3) */
	n->retry = event_new(s->b.rt->base, -1, 0, imap_notify_on_retry, s);
	if (!n->retry)
		fatal("imap: no event for NOTIFY");
	s->notify = n;
	n->next = imap_notify_all;
	imap_notify_all = n;
	imap_notify_watch(s, n);
	imap_notify_view_opened(s);
	struct imap_out out;
	imap_out_init(&out);
	imap_notify_flush(s, &out);
	imap_send(s, &out);
	imap_out_free(&out);
	imap_ok(s, "NOTIFY completed");
}

/* ---- names and subscriptions of the other sessions -------------------------- */

static unsigned imap_notify_name_events(const struct imap_notify *n, const char *name)
{
	unsigned events = 0;
	for (size_t i = 0; i < n->spec.ngroups; i++) {
		const struct imap_notify_group *g = &n->spec.groups[i];
		/* SUBSCRIBED: whichever name, it may just have been (un)subscribed */
		if (g->filter == IMAP_NOTIFY_SUBSCRIBED || imap_notify_group_names(g, name, NULL))
			events |= g->events;
	}
	return events;
}

void imap_notify_mailbox_changed(struct imap_session *s, enum imap_notify_event kind,
				 const char *name, const char *old, bool gone)
{
	for (struct imap_notify *n = imap_notify_all; n; n = n->next) {
		struct imap_session *o = n->s;
		if (o == s || n->overflow || !o->maildir || strcmp(o->maildir, s->maildir) != 0 ||
		    !(imap_notify_name_events(n, name) & kind))
			continue;
		/* RFC 5465 §5.4, §5.5: a LIST response; RFC 5258 §3.5 OLDNAME */
		imap_out_printf(&n->pending, "* LIST (%s) \".\" ",
				kind == IMAP_NOTIFY_SUBSCRIPTION_CHANGE ? (gone ? "" : "\\Subscribed")
				: gone ? "\\NonExistent" : "");
		imap_utf8_put_mailbox(o, &n->pending, name);
		if (old) {
			imap_out_printf(&n->pending, " (\"OLDNAME\" (");
			imap_utf8_put_mailbox(o, &n->pending, old);
			imap_out_printf(&n->pending, "))");
		}
		imap_out_add(&n->pending, "\r\n", 2);
		if (kind == IMAP_NOTIFY_MAILBOX_NAME && !gone && !imap_notify_has(n, name)) {
			/* a new folder a filter names: watched from now on, when there is room */
			unsigned events = imap_notify_folder_events(&n->spec, name, NULL);
			if (events && imap_notify_add_folder(n, name, events)) {
				struct imap_notify_folder *f = &n->folders[n->nfolders - 1];
				imap_notify_watch_folder(o, n, f);
				imap_notify_check(o, f, IMAP_NOTIFY_TELL_CHANGED);
			}
		}
		imap_notify_kick(o);
	}
}

/* imap_fetch: FETCH, UID FETCH, STORE and UID STORE of an IMAP session
 * (RFC 3501 §6.4.5, §6.4.6, §7.4.2): the attributes, the responses
 * produced one message per step of a job, body sections streamed from the
 * file through message.c, flags in and out; MODSEQ, CHANGEDSINCE,
 * VANISHED and UNCHANGEDSINCE (RFC 7162 §3.1.3, §3.1.4, §3.2.6). */
#include "proto/imap/imap_fetch.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "conf/conf.h"
#include "net/conn.h"
#include "proto/imap/imap_binary.h"
#include "proto/imap/imap_context.h"
#include "proto/imap/imap_esearch.h"
#include "proto/imap/imap_date.h"
#include "proto/imap/imap_view.h"
#include "lib/log.h"
#include "lib/strbuf.h"
#include "store/message.h"
#include "lib/util.h"

/* ---- FETCH attributes (RFC 3501 §6.4.5) ---------------------------------- */

enum imap_fetch_att {
	FA_FLAGS = 1u << 0,
	FA_INTERNALDATE = 1u << 1,
	FA_RFC822_SIZE = 1u << 2,
	FA_ENVELOPE = 1u << 3,
	FA_BODY = 1u << 4,               /* BODY: BODYSTRUCTURE without extensions */
	FA_BODYSTRUCTURE = 1u << 5,
	FA_UID = 1u << 6,
	FA_MODSEQ = 1u << 7,             /* RFC 7162 §3.1.4.1 */
};

enum {
	IMAP_FETCH_STEP_MESSAGES = 256,  /* messages a step answers from the view */
};

/* One BODY[...] (or RFC822, RFC822.HEADER, RFC822.TEXT) asked for. */
struct imap_fetch_body {
	const struct imap_section *sec;  /* in the kept command, or one of ours */
	char *label;                     /* how the response names it */
	bool sets_seen;                  /* not .PEEK (RFC 3501 §6.4.5) */
};

struct imap_fetch_spec {
	unsigned atts;                   /* enum imap_fetch_att */
	size_t nbodies;
	struct imap_fetch_body *bodies;  /* in the order asked */
	/* the response's items in the order asked: an attribute bit, or 0
	 * for the next of bodies[] */
	unsigned *order;
	size_t norder;
};

/* RFC822, RFC822.HEADER, RFC822.TEXT: BODY[], BODY.PEEK[HEADER], BODY[TEXT] */
static const struct imap_section imap_sec_whole = {.spec = {.text = MESSAGE_SECTION_WHOLE}};
static const struct imap_section imap_sec_header = {.spec = {.text = MESSAGE_SECTION_HEADER},
						    .peek = true};
static const struct imap_section imap_sec_text = {.spec = {.text = MESSAGE_SECTION_TEXT}};

static void imap_fetch_spec_free(struct imap_fetch_spec *f)
{
	for (size_t i = 0; i < f->nbodies; i++)
		free(f->bodies[i].label);
	free(f->bodies);
	free(f->order);
	memset(f, 0, sizeof *f);
}

static void imap_fetch_add_att(struct imap_fetch_spec *f, unsigned att)
{
	if (f->atts & att)
		return;
	f->atts |= att;
	f->order = xrealloc(f->order, (f->norder + 1) * sizeof *f->order);
	f->order[f->norder++] = att;
}

static void imap_fetch_add_body(struct imap_fetch_spec *f, const struct imap_section *sec,
				char *label, bool sets_seen)
{
	f->bodies = xrealloc(f->bodies, (f->nbodies + 1) * sizeof *f->bodies);
	f->bodies[f->nbodies++] = (struct imap_fetch_body){sec, label, sets_seen};
	f->order = xrealloc(f->order, (f->norder + 1) * sizeof *f->order);
	f->order[f->norder++] = 0;
}

/* The response's name of a section: "BODY[...]" as asked, upper-cased,
 * without ".PEEK", and "<origin>" for a partial fetch (RFC 3501 §7.4.2);
 * "BINARY[...]" and "BINARY.SIZE[...]" likewise (RFC 3516 §4.2). */
static char *imap_section_label(const char *written, const struct imap_section *sec)
{
	const char *att = sec->att == IMAP_SECTION_BODY ? "BODY"
			: sec->att == IMAP_SECTION_BINARY ? "BINARY" : "BINARY.SIZE";
	const char *open = strchr(written, '[');
	const char *close = strrchr(written, ']');
	if (!open || !close || close < open)
		return xasprintf("%s[]", att);
	size_t inner = (size_t)(close - open - 1);
	char *label = sec->partial
			  ? xasprintf("%s[%.*s]<%u>", att, (int)inner, open + 1, sec->origin)
			  : xasprintf("%s[%.*s]", att, (int)inner, open + 1);
	for (char *p = label; *p; p++)
		if (*p >= 'a' && *p <= 'z')
			*p = (char)(*p - 'a' + 'A');
	return label;
}

/* One fetch-att; false with a reason in err. */
static bool imap_fetch_att(struct imap_fetch_spec *f, const struct imap_arg *a, const char **err)
{
	const struct imap_section *sec = imap_arg_section(a);
	if (sec) {
		/* BINARY.SIZE reads nothing: it sets no \Seen (RFC 3516 §4.2) */
		bool sets_seen = !sec->peek && sec->att != IMAP_SECTION_BINARY_SIZE;
		imap_fetch_add_body(f, sec, imap_section_label(a->str, sec), sets_seen);
		return true;
	}
	const char *name = imap_arg_atom(a);
	static const struct {
		const char *name;
		unsigned atts;
	} simple[] = {
		{"FLAGS", FA_FLAGS}, {"INTERNALDATE", FA_INTERNALDATE},
		{"RFC822.SIZE", FA_RFC822_SIZE}, {"ENVELOPE", FA_ENVELOPE}, {"BODY", FA_BODY},
		{"BODYSTRUCTURE", FA_BODYSTRUCTURE}, {"UID", FA_UID}, {"MODSEQ", FA_MODSEQ},
	};
	for (size_t i = 0; name && i < ARRAY_LEN(simple); i++) {
		if (strcasecmp(name, simple[i].name) == 0) {
			imap_fetch_add_att(f, simple[i].atts);
			return true;
		}
	}
	if (name && strcasecmp(name, "RFC822") == 0) {
		imap_fetch_add_body(f, &imap_sec_whole, xstrdup("RFC822"), true);
		return true;
	}
	if (name && strcasecmp(name, "RFC822.HEADER") == 0) {
		imap_fetch_add_body(f, &imap_sec_header, xstrdup("RFC822.HEADER"), false);
		return true;
	}
	if (name && strcasecmp(name, "RFC822.TEXT") == 0) {
		imap_fetch_add_body(f, &imap_sec_text, xstrdup("RFC822.TEXT"), true);
		return true;
	}
	*err = "Invalid fetch attribute";
	return false;
}

/* RFC 3501 §6.4.5: ALL, FAST, FULL, one attribute, or a list of them. */
static bool imap_fetch_parse(struct imap_fetch_spec *f, const struct imap_arg *a,
			     const char **err)
{
	const char *macro = imap_arg_atom(a);
	if (macro && !imap_arg_section(a)) {
		unsigned atts = 0;
		if (strcasecmp(macro, "ALL") == 0)
			atts = FA_FLAGS | FA_INTERNALDATE | FA_RFC822_SIZE | FA_ENVELOPE;
		else if (strcasecmp(macro, "FAST") == 0)
			atts = FA_FLAGS | FA_INTERNALDATE | FA_RFC822_SIZE;
		else if (strcasecmp(macro, "FULL") == 0)
			atts = FA_FLAGS | FA_INTERNALDATE | FA_RFC822_SIZE | FA_ENVELOPE | FA_BODY;
		for (unsigned bit = 1; atts && bit <= FA_UID; bit <<= 1)
			if (atts & bit)
				imap_fetch_add_att(f, bit);
		if (atts)
			return true;
	}
	const struct imap_args *l = imap_arg_list(a);
	if (!l)
		return imap_fetch_att(f, a, err);
	if (l->n == 0) {
		*err = "Empty fetch attribute list";
		return false;
	}
	for (size_t i = 0; i < l->n; i++)
		if (!imap_fetch_att(f, imap_args_at(l, i), err))
			return false;
	return true;
}

/* ---- the FETCH job ------------------------------------------------------- */

struct imap_fetch_job {
	struct imap_command *cmd;        /* kept: the sections point into it */
	struct imap_fetch_spec spec;
	struct imap_walk walk;
	bool uid;
	bool changed_only;               /* CHANGEDSINCE (RFC 7162 §3.1.4.1) */
	uint64_t changedsince;
	char *done;                      /* the tagged OK's text; NULL: FETCH's */
	unsigned missing;                /* messages that could not be read */
	unsigned undated;                /* messages without an INTERNALDATE to send */
	enum imap_binary_result binary;  /* a BINARY section that could not be given */
	struct imap_out out;
	/* the message being answered */
	bool in_msg;
	size_t index;
	size_t item;
	size_t body;                     /* next of spec.bodies */
	bool seen_now;                   /* \Seen set by this fetch: FLAGS follow */
	bool first;                      /* no item written yet */
	bool on_wire;                    /* part of this message's response was sent */
	char date[IMAP_DATETIME_SIZE];   /* its INTERNALDATE, when asked for */
	/* a literal being sent from the file */
	struct message_stream *stream;
	uint64_t left;
};

static void imap_fetch_space(struct imap_fetch_job *j)
{
	if (!j->first)
		imap_out_add(&j->out, " ", 1);
	j->first = false;
}

/* "label value" into j->out: a decimal without a printf per item. */
static void imap_fetch_number(struct imap_fetch_job *j, const char *label, size_t llen,
			      unsigned long long v)
{
	char digits[24];
	size_t n = sizeof digits;
	do {
		digits[--n] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	imap_out_add(&j->out, label, llen);
	imap_out_add(&j->out, digits + n, sizeof digits - n);
}

/* A simple attribute of message i into j->out. */
static bool imap_fetch_simple(struct imap_session *s, struct imap_fetch_job *j, unsigned att)
{
	size_t i = j->index;
	const char *v;
	size_t len;
	switch (att) {
	case FA_FLAGS:
		imap_fetch_space(j);
		imap_out_add(&j->out, "FLAGS ", 6);
		imap_flags_text(&j->out, s->view, imap_flags_at(s, i));
		return true;
	case FA_INTERNALDATE:
		imap_fetch_space(j);
		imap_out_printf(&j->out, "INTERNALDATE \"%s\"", j->date); /* imap_fetch_begin */
		return true;
	case FA_RFC822_SIZE:
		imap_fetch_space(j);
		imap_out_printf(&j->out, "RFC822.SIZE %llu", (unsigned long long)imap_size_at(s, i));
		return true;
	case FA_UID:
		imap_fetch_space(j);
		imap_fetch_number(j, "UID ", 4, imap_uid_at(s, i));
		return true;
	case FA_MODSEQ:
		imap_fetch_space(j);
		imap_out_printf(&j->out, "MODSEQ (%llu)", (unsigned long long)imap_modseq_at(s, i));
		return true;
	case FA_ENVELOPE:
		v = imap_msg_envelope(s, i, &len);
		if (!v)
			return false;
		imap_fetch_space(j);
		imap_out_add(&j->out, "ENVELOPE ", 9);
		imap_out_add(&j->out, v, len);
		return true;
	case FA_BODY:
	case FA_BODYSTRUCTURE:
		v = imap_msg_structure(s, i, att == FA_BODYSTRUCTURE, &len);
		if (!v)
			return false;
		imap_fetch_space(j);
		imap_out_printf(&j->out, "%s ", att == FA_BODY ? "BODY" : "BODYSTRUCTURE");
		imap_out_add(&j->out, v, len);
		return true;
	}
	return false;
}

/* A body section: its label and literal; the octets either built (small)
 * or streamed from the file (offset, length of the CRLF form). */
static bool imap_fetch_section(struct imap_session *s, struct imap_fetch_job *j,
			       const struct imap_fetch_body *b)
{
	struct imap_part part;
	bool has_nul = false;
	if (b->sec->att != IMAP_SECTION_BODY) {
		enum imap_binary_result r =
		    imap_binary_section(s, j->index, &b->sec->spec, &part, &has_nul);
		if (r != IMAP_BINARY_OK) {
			if (r != IMAP_BINARY_UNREADABLE)
				j->binary = r;
			return false;
		}
	} else if (!imap_msg_section(s, j->index, &b->sec->spec, &part)) {
		return false;
	}
	if (b->sec->att == IMAP_SECTION_BINARY_SIZE) {
		imap_fetch_space(j);
		imap_out_printf(&j->out, "%s %llu", b->label,
				(unsigned long long)(part.built ? part.built_len : part.length));
		free(part.built);
		return true;
	}
	uint64_t off = 0, len = part.built ? part.built_len : part.length;
	if (b->sec->partial) {
		off = b->sec->origin < len ? b->sec->origin : len;
		len -= off;
		if (len > b->sec->count)
			len = b->sec->count;
	}
	if (!part.built && len > 0) {
		j->stream = imap_msg_stream(s, j->index, part.offset + off, len);
		if (!j->stream)
			return false;
		j->left = len;
	}
	imap_fetch_space(j);
	/* RFC 3516 §4.2: decoded octets holding NUL go as a literal8 */
	imap_out_printf(&j->out, "%s %s{%llu}\r\n", b->label, has_nul ? "~" : "",
			(unsigned long long)len);
	if (part.built) {
		imap_out_add(&j->out, part.built + off, (size_t)len);
		free(part.built);
	}
	return true;
}

/* Send some of the literal being streamed; true once it is complete. */
static bool imap_fetch_stream_some(struct imap_session *s, struct imap_fetch_job *j, bool *failed)
{
	char buf[IMAP_CHUNK];
	/* the stream was opened for exactly the literal's octets */
	ssize_t n = message_stream_read(j->stream, buf, sizeof buf);
	if (n <= 0) {
		*failed = true; /* shorter than announced: the literal cannot be ended */
		return false;
	}
	if ((uint64_t)n > j->left)
		n = (ssize_t)j->left;
	conn_write(s->io, buf, (size_t)n);
	j->left -= (uint64_t)n;
	if (j->left > 0)
		return false;
	message_stream_close(j->stream);
	j->stream = NULL;
	return true;
}

/* The INTERNALDATE of message j->index into j->date, before any of its
 * response is made: a date the grammar cannot express (a Maildir file
 * whose name or mtime is far outside years 0 to 9999) leaves the message
 * out, logged, rather than sending a made-up one. */
static bool imap_fetch_date(struct imap_session *s, struct imap_fetch_job *j)
{
	if (!(j->spec.atts & FA_INTERNALDATE))
		return true;
	long long t = imap_date_at(s, j->index);
	if (imap_format_datetime(t, j->date))
		return true;
	log_err("event=mailbox-error session=%s server=%s client=%s message=%zu uid=%lu "
		"error=\"internal date %lld has no IMAP date-time\"", s->b.sid, s->b.srv->name,
		s->b.client, j->index + 1, (unsigned long)imap_uid_at(s, j->index), t);
	j->undated++;
	return false;
}

/* Begin the response for the next message of the set; false at the end. */
static bool imap_fetch_begin(struct imap_session *s, struct imap_fetch_job *j)
{
	for (;;) {
		if (!imap_walk_next(s, &j->walk, &j->index))
			return false;
		if (!imap_msg_exists(s, j->index)) {
			j->missing++;
			continue;
		}
		if (j->changed_only && imap_modseq_at(s, j->index) <= j->changedsince)
			continue;
		if (!imap_fetch_date(s, j))
			continue;
		break;
	}
	j->in_msg = true;
	j->item = 0;
	j->body = 0;
	j->first = true;
	j->on_wire = false;
	imap_fetch_number(j, "* ", 2, j->index + 1);
	imap_out_add(&j->out, " FETCH (", 8);
	if (j->uid && !(j->spec.atts & FA_UID))
		imap_fetch_simple(s, j, FA_UID);
	return true;
}

/* The message could not be read after all: drop what was prepared for
 * it, or end the session if part of it is already on the wire. */
static void imap_fetch_failed(struct imap_session *s, struct imap_fetch_job *j, bool on_wire)
{
	j->missing++;
	j->in_msg = false;
	imap_out_discard(&j->out);
	if (!on_wire)
		return;
	log_err("event=mailbox-error session=%s server=%s client=%s message=%zu "
		"error=\"message unreadable in the middle of a FETCH\"", s->b.sid, s->b.srv->name,
		s->b.client, j->index + 1);
	imap_close_after_flush(s);
}

/* The tagged end of a FETCH, after what is held. */
static void imap_fetch_end(struct imap_session *s, struct imap_fetch_job *j)
{
	imap_send(s, &j->out);
	if (j->binary == IMAP_BINARY_UNKNOWN_CTE)
		imap_no(s, "[UNKNOWN-CTE] A part has a Content-Transfer-Encoding "
			   "that cannot be decoded");
	else if (j->binary == IMAP_BINARY_TOO_BIG)
		imap_no(s, "[LIMIT] A part is too large to decode for BINARY");
	else if (j->undated)
		imap_no(s, "Some messages have an internal date out of range; see the "
			   "server log");
	else if (j->missing)
		imap_no(s, "[EXPUNGEISSUED] Some of the requested messages no longer "
			   "exist");
	else
		imap_ok(s, "%s", j->done ? j->done : "FETCH completed");
}

/* The items of the message begun; false when the step ends inside it (a
 * literal to stream, or the message failed). */
static bool imap_fetch_items(struct imap_session *s, struct imap_fetch_job *j)
{
	while (j->item < j->spec.norder) {
		unsigned att = j->spec.order[j->item++];
		bool ok = att ? imap_fetch_simple(s, j, att)
			      : imap_fetch_section(s, j, &j->spec.bodies[j->body++]);
		if (!ok) {
			imap_fetch_failed(s, j, j->on_wire);
			imap_msg_release(s);
			return false;
		}
		if (j->stream || imap_out_full(&j->out)) {
			imap_send(s, &j->out);
			j->on_wire = true;
		}
		if (j->stream)
			return false; /* the literal goes out in the next steps */
	}
	if (j->seen_now && !(j->spec.atts & FA_FLAGS)) /* the \Seen just set */
		imap_fetch_simple(s, j, FA_FLAGS);
	/* RFC 7162 §3.1: a flag change comes with its MODSEQ */
	if (j->seen_now && s->condstore && !(j->spec.atts & FA_MODSEQ))
		imap_fetch_simple(s, j, FA_MODSEQ);
	imap_out_add(&j->out, ")\r\n", 3);
	j->in_msg = false;
	imap_msg_release(s);
	return true;
}

/* Only what the view holds (flags, UID, size, date, MODSEQ): no file is
 * read and nothing can fail, so a step answers many messages and sends
 * them in one write rather than a system call each. */
static bool imap_fetch_from_view(const struct imap_fetch_job *j)
{
	return j->spec.nbodies == 0 &&
	       !(j->spec.atts & (FA_ENVELOPE | FA_BODY | FA_BODYSTRUCTURE));
}

static bool imap_fetch_step(struct imap_session *s)
{
	struct imap_fetch_job *j = s->job_data;
	if (j->stream) {
		bool failed = false;
		if (!imap_fetch_stream_some(s, j, &failed) && failed)
			imap_fetch_failed(s, j, true);
		return false;
	}
	size_t n = imap_fetch_from_view(j) ? IMAP_FETCH_STEP_MESSAGES : 1;
	while (n-- > 0 && !imap_out_full(&j->out)) {
		if (!j->in_msg && !imap_fetch_begin(s, j)) {
			imap_fetch_end(s, j);
			return true;
		}
		if (!imap_fetch_items(s, j))
			return false;
	}
	imap_send(s, &j->out);
	return false;
}

static void imap_fetch_stop(struct imap_session *s)
{
	struct imap_fetch_job *j = s->job_data;
	if (j->stream)
		message_stream_close(j->stream);
	imap_seqset_clear(&j->walk.set);
	imap_fetch_spec_free(&j->spec);
	imap_command_free(j->cmd);
	imap_out_free(&j->out);
	imap_msg_release(s);
	free(j->done);
	free(j);
}

static const struct imap_job_ops imap_fetch_ops = {imap_fetch_step, imap_fetch_stop};

/* FETCH's modifiers (RFC 7162 §3.1.4.1, §3.2.6): (CHANGEDSINCE n
 * [VANISHED]); VANISHED only for UID FETCH with QRESYNC enabled.  false
 * after answering BAD. */
static bool imap_fetch_modifiers(struct imap_session *s, const struct imap_arg *a, bool uid,
				 struct imap_fetch_job *j, bool *vanished)
{
	const struct imap_args *l = imap_arg_list(a);
	*vanished = false;
	for (size_t i = 0; l && i < l->n; i++) {
		const struct imap_arg *m = imap_args_at(l, i);
		if (imap_arg_is(m, "CHANGEDSINCE") && !j->changed_only &&
		    imap_arg_u64(imap_args_at(l, i + 1), &j->changedsince)) {
			j->changed_only = true;
			i++;
		} else if (imap_arg_is(m, "VANISHED") && !*vanished) {
			*vanished = true;
		} else {
			imap_bad(s, "Syntax: FETCH set attributes (CHANGEDSINCE modseq [VANISHED])");
			return false;
		}
	}
	if (!l || !j->changed_only) {
		imap_bad(s, "Syntax: FETCH set attributes (CHANGEDSINCE modseq [VANISHED])");
		return false;
	}
	if (*vanished && (!uid || !s->qresync)) {
		imap_bad(s, uid ? "VANISHED needs ENABLE QRESYNC" : "VANISHED is for UID FETCH only");
		return false;
	}
	return true;
}

static void imap_fetch_job_free(struct imap_fetch_job *j)
{
	imap_seqset_clear(&j->walk.set);
	imap_fetch_spec_free(&j->spec);
	free(j->done);
	free(j);
}

/* FETCH set atts [modifiers] / UID FETCH set atts [modifiers]. */
void imap_cmd_fetch(struct imap_session *s, const struct imap_command *c)
{
	bool uid = imap_is_uid(c);
	const struct imap_arg *atts = imap_args_at(&c->args, 1);
	if (c->args.n != 2 && c->args.n != 3) {
		imap_bad(s, uid ? "Syntax: UID FETCH uids attributes" : "Syntax: FETCH set attributes");
		return;
	}
	struct imap_fetch_job *j = xcalloc(1, sizeof *j);
	const char *err = NULL;
	bool vanished = false;
	if (!imap_fetch_parse(&j->spec, atts, &err)) {
		imap_bad(s, err);
		imap_fetch_job_free(j);
		return;
	}
	if (c->args.n == 3 && !imap_fetch_modifiers(s, imap_args_at(&c->args, 2), uid, j, &vanished)) {
		imap_fetch_job_free(j);
		return;
	}
	if (!imap_set_parse(s, imap_args_at(&c->args, 0), uid, &j->walk.set)) {
		imap_fetch_job_free(j);
		return;
	}
	/* RFC 7162 §3.1: MODSEQ and CHANGEDSINCE enable CONDSTORE; CHANGEDSINCE
	 * includes MODSEQ in the responses (§3.1.4.1) */
	if (j->changed_only)
		imap_fetch_add_att(&j->spec, FA_MODSEQ);
	if (j->spec.atts & FA_MODSEQ)
		imap_condstore_enable(s);
	j->walk.uid = uid;
	j->uid = uid;
	/* RFC 3501 §6.4.5: BODY[...] without .PEEK sets \Seen (not in EXAMINE),
	 * in one pass before the responses, which then include FLAGS */
	bool sets_seen = false;
	for (size_t b = 0; b < j->spec.nbodies; b++)
		sets_seen = sets_seen || j->spec.bodies[b].sets_seen;
	if (sets_seen && !imap_view_readonly(s)) {
		struct imap_match m = {&j->walk.set, uid};
		char why[256];
		enum mailbox_result r = mailbox_store(s->view, imap_match_fn, &m, MAILBOX_STORE_ADD,
						      MAILBOX_SEEN, why, sizeof why);
		if (r != MAILBOX_OK && r != MAILBOX_ERR_EXPUNGED)
			imap_mailbox_log(s, "fetch-seen", why);
		j->seen_now = true;
	}
	imap_out_init(&j->out);
	/* RFC 7162 §3.2.6: the expunged ones of the set first */
	if (vanished)
		(void)imap_vanished_earlier(s, &j->out, j->changedsince, &j->walk.set);
	j->cmd = imap_keep_command(s);
	imap_job_start(s, &imap_fetch_ops, j);
}

void imap_fetch_changed(struct imap_session *s, struct imap_seqset *uids, unsigned long long since,
			const char *done)
{
	struct imap_fetch_job *j = xcalloc(1, sizeof *j);
	imap_fetch_add_att(&j->spec, FA_UID);
	imap_fetch_add_att(&j->spec, FA_FLAGS);
	imap_fetch_add_att(&j->spec, FA_MODSEQ);
	if (uids) {
		j->walk.set = *uids;
		memset(uids, 0, sizeof *uids);
	} else {
		char err[64];
		if (!imap_parse_seqset("1:*", &j->walk.set, err, sizeof err))
			fatal("imap: cannot parse 1:*: %s", err);
		imap_seqset_resolve(&j->walk.set, s->view && imap_count(s)
							 ? imap_uid_at(s, imap_count(s) - 1) : 0);
	}
	j->walk.uid = true;
	j->uid = true;
	j->changed_only = true;
	j->changedsince = since;
	j->done = xstrdup(done);
	imap_out_init(&j->out);
	imap_job_start(s, &imap_fetch_ops, j);
}

/* ---- STORE (RFC 3501 §6.4.6, RFC 7162 §3.1.3) ------------------------------ */

/* After the store: "* n FETCH (FLAGS (...))" for each message of the set
 * (not for .SILENT), one per step; with CONDSTORE on, UID and MODSEQ too,
 * and for .SILENT "* n FETCH (UID u MODSEQ (m))" (RFC 7162 §3.1.3).
 * Messages refused by UNCHANGEDSINCE get none: they are in [MODIFIED]. */
struct imap_store_job {
	struct imap_walk walk;
	bool uid;
	bool silent;
	unsigned gone;                   /* expunged by another session meanwhile */
	struct mailbox_uids refused;     /* UNCHANGEDSINCE failed (ascending UIDs) */
	struct imap_out out;
};

static bool imap_uid_refused(const struct mailbox_uids *l, uint32_t uid)
{
	size_t lo = 0, hi = l->n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (l->v[mid] < uid)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < l->n && l->v[lo] == uid;
}

/* The tagged completion, with [MODIFIED set]: sequence numbers for STORE,
 * UIDs for UID STORE (RFC 7162 §3.1.3). */
static void imap_store_done(struct imap_session *s, struct imap_store_job *j)
{
	if (j->gone) {
		imap_no(s, "[EXPUNGEISSUED] Some of the messages have been deleted meanwhile");
		return;
	}
	if (j->refused.n == 0) {
		imap_ok(s, "STORE completed");
		return;
	}
	/* ranges of the numbers, ascending; within one reply's text */
	size_t cap = IMAP_REPLY_TEXT_MAX / 2;
	char *buf = xmalloc(cap);
	struct strbuf sb;
	strbuf_init(&sb, buf, cap);
	size_t lo = 0, hi = 0;
	for (size_t i = 0; i <= j->refused.n; i++) {
		size_t n = 0;
		if (i < j->refused.n)
			n = j->uid ? j->refused.v[i] : mailbox_seq_of_uid(s->view, j->refused.v[i]);
		if (i < j->refused.n && n == 0)
			continue; /* expunged meanwhile: no number to give */
		if (i < j->refused.n && lo && n == hi + 1) {
			hi = n;
			continue;
		}
		if (lo && hi > lo)
			(void)strbuf_addf(&sb, "%s%zu:%zu", sb.len ? "," : "", lo, hi);
		else if (lo)
			(void)strbuf_addf(&sb, "%s%zu", sb.len ? "," : "", lo);
		lo = hi = n;
	}
	if (strbuf_ok(&sb) && sb.len)
		imap_ok(s, "[MODIFIED %s] Conditional STORE failed for some messages", strbuf_str(&sb));
	else if (strbuf_ok(&sb))
		imap_ok(s, "STORE completed");
	else
		imap_no(s, "[LIMIT] Stored where UNCHANGEDSINCE allowed it, but too many messages "
			   "had changed to list in [MODIFIED]: FETCH their MODSEQ");
	free(buf);
}

static bool imap_store_step(struct imap_session *s)
{
	struct imap_store_job *j = s->job_data;
	size_t i;
	if (!imap_walk_next(s, &j->walk, &i)) {
		imap_esearch_refresh(s, &j->out); /* RFC 5267 §4.4 */
		imap_send(s, &j->out);
		imap_store_done(s, j);
		return true;
	}
	if (!imap_msg_exists(s, i)) {
		j->gone++;
		return false;
	}
	if (j->refused.n && imap_uid_refused(&j->refused, imap_uid_at(s, i)))
		return false;
	if (j->silent && !s->condstore)
		return false;
	imap_out_printf(&j->out, "* %zu FETCH (", i + 1);
	if (!j->silent) {
		imap_out_add(&j->out, "FLAGS ", 6);
		imap_flags_text(&j->out, s->view, imap_flags_at(s, i));
	}
	if (j->uid || s->condstore)
		imap_out_printf(&j->out, "%sUID %lu", j->silent ? "" : " ",
				(unsigned long)imap_uid_at(s, i));
	if (s->condstore)
		imap_out_printf(&j->out, " MODSEQ (%llu)", (unsigned long long)imap_modseq_at(s, i));
	imap_out_add(&j->out, ")\r\n", 3);
	if (imap_out_full(&j->out))
		imap_send(s, &j->out);
	return false;
}

static void imap_store_stop(struct imap_session *s)
{
	struct imap_store_job *j = s->job_data;
	imap_seqset_clear(&j->walk.set);
	mailbox_uids_free(&j->refused);
	imap_out_free(&j->out);
	free(j);
}

static const struct imap_job_ops imap_store_ops = {imap_store_step, imap_store_stop};

/* The flags argument of STORE from argument at on: a list, or flags
 * without parentheses (RFC 3501 §9 store-att-flags). */
static bool imap_store_flags(const struct imap_command *c, size_t at, unsigned *flags,
			     struct imap_keyword_names *kw, const char **err)
{
	if (c->args.n == at + 1)
		return imap_flags_parse(imap_args_at(&c->args, at), flags, kw, err);
	const struct imap_args rest = {.n = c->args.n - at, .v = c->args.v + at};
	return imap_flags_parse_args(&rest, flags, kw, err);
}

/* STORE's modifiers (RFC 7162 §3.1.3): (UNCHANGEDSINCE n). */
static bool imap_store_modifiers(const struct imap_arg *a, uint64_t *unchangedsince)
{
	const struct imap_args *l = imap_arg_list(a);
	return l && l->n == 2 && imap_arg_is(imap_args_at(l, 0), "UNCHANGEDSINCE") &&
	       imap_arg_u64(imap_args_at(l, 1), unchangedsince);
}

/* STORE set [(UNCHANGEDSINCE n)] (+|-)FLAGS[.SILENT] flags: one pass over
 * the view in mailbox.c, then the FETCH responses as a job. */
void imap_cmd_store(struct imap_session *s, const struct imap_command *c)
{
	bool uid = imap_is_uid(c);
	const char *err = "Syntax: STORE set [(UNCHANGEDSINCE modseq)] [+|-]FLAGS[.SILENT] (flags)";
	uint64_t unchangedsince = MAILBOX_MODSEQ_NONE;
	size_t at = 1;
	if (imap_arg_list(imap_args_at(&c->args, 1))) {
		if (!imap_store_modifiers(imap_args_at(&c->args, 1), &unchangedsince)) {
			imap_bad(s, err);
			return;
		}
		at = 2;
	}
	const char *item = imap_arg_atom(imap_args_at(&c->args, at));
	unsigned flags = 0;
	char op = item && (item[0] == '+' || item[0] == '-') ? item[0] : '=';
	const char *name = item && op != '=' ? item + 1 : item;
	bool silent = name && strcasecmp(name, "FLAGS.SILENT") == 0;
	if (c->args.n < at + 2 || !name || (!silent && strcasecmp(name, "FLAGS") != 0)) {
		imap_bad(s, err);
		return;
	}
	struct imap_keyword_names kw;
	if (!imap_store_flags(c, at + 1, &flags, &kw, &err)) {
		imap_bad(s, err);
		return;
	}
	struct imap_seqset set = {0};
	if (!imap_set_parse(s, imap_args_at(&c->args, 0), uid, &set))
		return;
	if (unchangedsince != MAILBOX_MODSEQ_NONE)
		imap_condstore_enable(s); /* RFC 7162 §3.1 */
	struct imap_match m = {&set, uid};
	char why[256];
	enum mailbox_store_op mop = op == '+' ? MAILBOX_STORE_ADD
				  : op == '-' ? MAILBOX_STORE_REMOVE : MAILBOX_STORE_REPLACE;
	/* keywords the folder lacks are added to it, but not for removal */
	unsigned kwbits = 0;
	enum mailbox_result r = MAILBOX_OK;
	if (kw.n > 0)
		r = mailbox_keywords_bits(s->view, kw.v, kw.n, mop != MAILBOX_STORE_REMOVE, &kwbits,
					  why, sizeof why);
	imap_keywords_announce(s);
	struct imap_store_job *j = xcalloc(1, sizeof *j);
	if (r == MAILBOX_OK) {
		struct mailbox_store_req q = {imap_match_fn, &m, mop, flags | kwbits, unchangedsince};
		r = mailbox_store_cond(s->view, &q, &j->refused, why, sizeof why);
	}
	if (r != MAILBOX_OK && r != MAILBOX_ERR_EXPUNGED) {
		imap_seqset_clear(&set);
		mailbox_uids_free(&j->refused);
		free(j);
		imap_store_error(s, r, why);
		return;
	}
	j->walk.set = set;
	j->walk.uid = uid;
	j->uid = uid;
	j->silent = silent;
	imap_out_init(&j->out);
	imap_job_start(s, &imap_store_ops, j);
}

/* autoreply: the out-of-office reply.  RFC 3834 §2 and RFC 5230 §4.5 say
 * when not to answer (no automatic reply to automatic mail, to lists, to
 * the null or a list's sender, to mail that does not name the user);
 * RFC 5230 §4.2 how often (once per sender in :days); RFC 3834 §3 what
 * the reply carries (null envelope sender, Auto-Submitted: auto-replied,
 * In-Reply-To and References).  The reply is spooled like a bounce. */
#define _GNU_SOURCE
#include "queue/autoreply.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "auth/aliases.h"
#include "auth/userdb.h"
#include "conf/conf.h"
#include "lib/date.h"
#include "lib/log.h"
#include "lib/util.h"
#include "store/maildir.h"
#include "store/vacation.h"

enum {
	AUTOREPLY_SUBJECT_KEEP = 900,   /* bytes of the original's subject quoted */
	AUTOREPLY_MSGID_MAX = 900,      /* a longer message id is not referred to:
					 * its line would pass RFC 5322's 998 */
	AUTOREPLY_REASON_MAX = 512,
};

/* ---- the original's header ---------------------------------------------------- */

static void autoreply_take(char **slot, const char *value)
{
	if (*slot) /* the first one counts (RFC 5322 §3.6: at most one) */
		return;
	*slot = xstrdup(value);
}

static void autoreply_add_recipients(struct autoreply_header *h, const char *value)
{
	size_t have = h->recipients ? strlen(h->recipients) : 0, add = strlen(value);
	if (have + add + 2 > AUTOREPLY_HEADER_MAX)
		return;
	h->recipients = xrealloc(h->recipients, have + add + 2);
	if (have)
		h->recipients[have++] = ',';
	memcpy(h->recipients + have, value, add + 1);
}

/* The first word of value (up to ';', space or the end), compared. */
static bool autoreply_word_is(const char *value, const char *word)
{
	size_t n = strcspn(value, "; \t(");
	return n == strlen(word) && strncasecmp(value, word, n) == 0;
}

static bool autoreply_is_recipient_field(const char *name)
{
	static const char *const names[] = {"to", "cc", "bcc", "resent-to", "resent-cc"};
	for (size_t i = 0; i < ARRAY_LEN(names); i++)
		if (strcasecmp(name, names[i]) == 0)
			return true;
	return false;
}

static void autoreply_field(struct autoreply_header *h, const char *name, const char *value)
{
	if (strcasecmp(name, "message-id") == 0)
		autoreply_take(&h->message_id, value);
	else if (strcasecmp(name, "references") == 0)
		autoreply_take(&h->references, value);
	else if (strcasecmp(name, "subject") == 0)
		autoreply_take(&h->subject, value);
	else if (autoreply_is_recipient_field(name))
		autoreply_add_recipients(h, value);
	else if (strncasecmp(name, "list-", 5) == 0)
		h->list = true;
	else if (strcasecmp(name, "precedence") == 0)
		h->bulk = h->bulk || autoreply_word_is(value, "bulk") ||
			  autoreply_word_is(value, "list") || autoreply_word_is(value, "junk");
	else if (strcasecmp(name, "auto-submitted") == 0)
		h->auto_submitted = h->auto_submitted || !autoreply_word_is(value, "no");
}

/* A field's unfolded value, blanks at both ends removed; NULL when it
 * holds a NUL or is longer than AUTOREPLY_FIELD_MAX. */
static char *autoreply_unfold(const char *v, size_t len)
{
	if (len > AUTOREPLY_FIELD_MAX || memchr(v, '\0', len))
		return NULL;
	char *out = xmalloc(len + 1);
	size_t k = 0;
	for (size_t i = 0; i < len; i++)
		if (v[i] != '\r' && v[i] != '\n')
			out[k++] = v[i] == '\t' ? ' ' : v[i];
	while (k > 0 && out[k - 1] == ' ')
		k--;
	out[k] = '\0';
	size_t lead = strspn(out, " ");
	memmove(out, out + lead, k - lead + 1);
	return out;
}

/* One field: name up to ':', its value to the end (folded lines included). */
static void autoreply_one_field(struct autoreply_header *h, const char *f, size_t len)
{
	const char *colon = memchr(f, ':', len);
	if (!colon || colon == f || (size_t)(colon - f) > 76)
		return; /* not a field (RFC 5322 §2.2: printable name, then ':') */
	char name[77];
	size_t nlen = (size_t)(colon - f);
	memcpy(name, f, nlen);
	name[nlen] = '\0';
	if (strcspn(name, " \t") != nlen)
		return;
	char *value = autoreply_unfold(colon + 1, len - nlen - 1);
	if (value)
		autoreply_field(h, name, value);
	free(value);
}

/* The end of the line starting at i (after its LF), or len. */
static size_t autoreply_line_end(const char *data, size_t len, size_t i)
{
	const char *nl = memchr(data + i, '\n', len - i);
	return nl ? (size_t)(nl - data) + 1 : len;
}

static bool autoreply_line_empty(const char *data, size_t i, size_t end)
{
	return end == i || data[i] == '\n' || (end - i == 2 && data[i] == '\r' && data[i + 1] == '\n');
}

void autoreply_header_parse(const char *data, size_t len, struct autoreply_header *h)
{
	memset(h, 0, sizeof *h);
	if (len > AUTOREPLY_HEADER_MAX)
		len = AUTOREPLY_HEADER_MAX; /* the rest is body or beyond reason */
	size_t start = 0, i = 0;
	bool in_field = false;
	while (i < len) {
		size_t end = autoreply_line_end(data, len, i);
		bool cont = data[i] == ' ' || data[i] == '\t';
		bool empty = autoreply_line_empty(data, i, end);
		if (in_field && !cont) {
			autoreply_one_field(h, data + start, i - start);
			in_field = false;
		}
		if (empty)
			return;
		if (!cont) {
			start = i;
			in_field = true;
		}
		i = end;
	}
	if (in_field)
		autoreply_one_field(h, data + start, len - start);
}

void autoreply_header_clear(struct autoreply_header *h)
{
	free(h->message_id);
	free(h->references);
	free(h->subject);
	free(h->recipients);
	memset(h, 0, sizeof *h);
}

/* ---- the rules -------------------------------------------------------------------- */

/* Is address in list, between delimiters of an address list? */
static bool autoreply_names(const char *list, const char *address)
{
	size_t n = strlen(address);
	if (!list || n == 0)
		return false;
	for (const char *p = list; (p = strcasestr(p, address)) != NULL; p++) {
		char before = p == list ? ',' : p[-1], after = p[n];
		if (strchr(",<: \t\"", before) && (after == '\0' || strchr(",>; \t\"", after)))
			return true;
	}
	return false;
}

/* RFC 5230 §4.5: "MAILER-DAEMON", "owner-*", "*-request" (and the null
 * sender, RFC 3834 §2). */
static const char *autoreply_sender_refusal(const char *sender)
{
	if (!sender || !*sender)
		return "null sender";
	const char *at = strrchr(sender, '@');
	size_t local = at ? (size_t)(at - sender) : strlen(sender);
	if (local == 13 && strncasecmp(sender, "mailer-daemon", 13) == 0)
		return "sender is MAILER-DAEMON";
	if (local >= 6 && strncasecmp(sender, "owner-", 6) == 0)
		return "sender is a list owner (owner-)";
	if (local >= 8 && strncasecmp(sender + local - 8, "-request", 8) == 0)
		return "sender is a list address (-request)";
	return NULL;
}

const char *autoreply_refusal(const char *sender, const char *const *addresses, size_t naddr,
			      const struct autoreply_header *h)
{
	const char *why = autoreply_sender_refusal(sender);
	if (why)
		return why;
	if (h->auto_submitted)
		return "Auto-Submitted";
	if (h->list)
		return "list mail (List-*)";
	if (h->bulk)
		return "Precedence bulk, list or junk";
	for (size_t i = 0; i < naddr; i++)
		if (addresses[i] && autoreply_names(h->recipients, addresses[i]))
			return NULL;
	return "the user is not in To or Cc";
}

/* ---- the reply ---------------------------------------------------------------------- */

struct autoreply_buf {
	char *data;
	size_t len, cap;
};

static void autoreply_put(struct autoreply_buf *b, const char *s, size_t n)
{
	if (b->len + n + 1 > b->cap) {
		b->cap = (b->len + n + 1) * 2;
		b->data = xrealloc(b->data, b->cap);
	}
	memcpy(b->data + b->len, s, n);
	b->len += n;
	b->data[b->len] = '\0';
}

static void autoreply_puts(struct autoreply_buf *b, const char *s)
{
	autoreply_put(b, s, strlen(s));
}

static bool autoreply_ascii(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s >= 0x80)
			return false;
	return true;
}

/* A subject of the setting in UTF-8: as RFC 2047 encoded-words when it is
 * not ASCII, each at most 75 characters, folded between them. */
static void autoreply_put_subject(struct autoreply_buf *b, const char *s)
{
	if (autoreply_ascii(s)) {
		autoreply_puts(b, s);
		return;
	}
	size_t n = strlen(s);
	for (size_t i = 0; i < n;) {
		size_t k = n - i < 45 ? n - i : 45; /* 45 bytes: 60 base64 characters */
		while (i + k < n && k > 0 && ((unsigned char)s[i + k] & 0xC0) == 0x80)
			k--; /* never split a UTF-8 sequence */
		if (k == 0)
			k = n - i < 45 ? n - i : 45;
		unsigned char enc[64];
		int elen = EVP_EncodeBlock(enc, (const unsigned char *)s + i, (int)k);
		autoreply_puts(b, i ? "\r\n =?utf-8?B?" : "=?utf-8?B?");
		autoreply_put(b, (const char *)enc, (size_t)elen);
		autoreply_puts(b, "?=");
		i += k;
	}
}

/* "Auto: " and the original's subject (RFC 3834 §3.1.5), cut at a whole
 * UTF-8 character to keep the line short. */
static void autoreply_put_auto_subject(struct autoreply_buf *b, const char *orig)
{
	autoreply_puts(b, "Auto: ");
	if (!orig || !*orig) {
		autoreply_puts(b, "Automatic reply");
		return;
	}
	size_t n = strlen(orig);
	if (n > AUTOREPLY_SUBJECT_KEEP) {
		n = AUTOREPLY_SUBJECT_KEEP;
		while (n > 0 && ((unsigned char)orig[n] & 0xC0) == 0x80)
			n--;
	}
	autoreply_put(b, orig, n);
}

/* In-Reply-To and References (RFC 3834 §3.1.4, RFC 5322 §3.6.4): one
 * message id per line. */
static void autoreply_put_thread(struct autoreply_buf *b, const struct autoreply_header *h)
{
	if (!h->message_id || !*h->message_id || strchr(h->message_id, ' ') ||
	    strlen(h->message_id) > AUTOREPLY_MSGID_MAX)
		return;
	autoreply_puts(b, "In-Reply-To: ");
	autoreply_puts(b, h->message_id);
	autoreply_puts(b, "\r\nReferences:");
	if (h->references) {
		char *refs = xstrdup(h->references);
		char *save = NULL;
		for (char *t = strtok_r(refs, " ", &save); t; t = strtok_r(NULL, " ", &save)) {
			if (strlen(t) > AUTOREPLY_MSGID_MAX)
				continue;
			autoreply_puts(b, " ");
			autoreply_puts(b, t);
			autoreply_puts(b, "\r\n");
		}
		free(refs);
	}
	autoreply_puts(b, " ");
	autoreply_puts(b, h->message_id);
	autoreply_puts(b, "\r\n");
}

/* The text with CRLF line ends, and one at the end. */
static void autoreply_put_text(struct autoreply_buf *b, const char *text)
{
	for (const char *p = text; *p;) {
		size_t n = strcspn(p, "\r\n");
		autoreply_put(b, p, n);
		autoreply_puts(b, "\r\n");
		p += n;
		if (*p == '\r')
			p++;
		if (*p == '\n')
			p++;
	}
}

char *autoreply_compose(const struct autoreply_msg *m, size_t *len)
{
	char date[DATE_RFC5322_MAX];
	if (!date_rfc5322(m->now, date, sizeof date))
		return NULL;
	struct autoreply_buf b = {0};
	char *line = xasprintf("From: <%s>\r\nTo: <%s>\r\nSubject: ", m->from, m->to);
	autoreply_puts(&b, line);
	free(line);
	if (m->subject)
		autoreply_put_subject(&b, m->subject);
	else
		autoreply_put_auto_subject(&b, m->orig->subject);
	line = xasprintf("\r\nDate: %s\r\nMessage-ID: %s\r\n", date, m->message_id);
	autoreply_puts(&b, line);
	free(line);
	autoreply_put_thread(&b, m->orig);
	autoreply_puts(&b, "Auto-Submitted: auto-replied\r\n"); /* RFC 3834 §5 */
	autoreply_puts(&b, "MIME-Version: 1.0\r\n");
	autoreply_puts(&b, autoreply_ascii(m->text) ? "Content-Type: text/plain; charset=us-ascii\r\n"
						      "Content-Transfer-Encoding: 7bit\r\n"
						    : "Content-Type: text/plain; charset=utf-8\r\n"
						      "Content-Transfer-Encoding: 8bit\r\n");
	autoreply_puts(&b, "\r\n");
	autoreply_put_text(&b, m->text);
	*len = b.len;
	return b.data;
}

/* ---- the worker's step -------------------------------------------------------------- */

/* The original's header: at most AUTOREPLY_HEADER_MAX bytes. */
static bool autoreply_read_header(int fd, off_t offset, off_t size, struct autoreply_header *h)
{
	size_t want = size < (off_t)AUTOREPLY_HEADER_MAX ? (size_t)size : AUTOREPLY_HEADER_MAX;
	char *buf = xmalloc(want + 1);
	size_t have = 0;
	while (have < want) {
		ssize_t n = pread(fd, buf + have, want - have, offset + (off_t)have);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		have += (size_t)n;
	}
	bool ok = have == want;
	if (ok)
		autoreply_header_parse(buf, have, h);
	free(buf);
	return ok;
}

static void autoreply_log(const char *id, const char *address, const char *sender,
			  const char *result, const char *reason)
{
	char a[LOG_VALUE_MAX], s[LOG_VALUE_MAX], r[LOG_VALUE_MAX];
	log_info("event=autoreply id=%s user=%s to=%s result=%s%s%s", id,
		 log_escape(a, sizeof a, address, strlen(address)),
		 sender && *sender ? log_escape(s, sizeof s, sender, strlen(sender)) : "<>", result,
		 reason ? " reason=" : "", reason ? log_quote(r, sizeof r, reason, strlen(reason)) : "");
}

/* The reply for a setting in force, or NULL (logged why). */
static char *autoreply_decide(const char *dir, const struct vacation *v, const char *id,
			      const char *address, const char *orig, const char *sender, int fd,
			      off_t offset, off_t size, time_t now, size_t *len)
{
	struct autoreply_header h;
	if (!autoreply_read_header(fd, offset, size, &h)) {
		autoreply_log(id, address, sender, "error", "cannot read the message");
		return NULL;
	}
	const char *addrs[2] = {address, orig};
	const char *why = autoreply_refusal(sender, addrs, 2, &h);
	char err[AUTOREPLY_REASON_MAX];
	bool due = false;
	if (!why && vacation_note_sender(dir, sender, v->days, now, &due, err, sizeof err) < 0)
		why = err;
	else if (!why && !due)
		why = "already answered within the days";
	char *reply = NULL;
	if (!why) {
		char rid[SPOOL_ID_SIZE];
		spool_new_id(rid);
		const char *at = strrchr(address, '@');
		char *mid = xasprintf("<%s.vacation@%s>", rid, at ? at + 1 : "localhost");
		struct autoreply_msg m = {.from = address, .to = sender, .subject = v->subject,
					  .text = v->message ? v->message : "", .message_id = mid,
					  .now = now, .orig = &h};
		reply = autoreply_compose(&m, len);
		free(mid);
		if (!reply)
			why = "no date for the reply";
	}
	autoreply_log(id, address, sender, reply ? "reply" : "none", why);
	autoreply_header_clear(&h);
	return reply;
}

char *autoreply_consider(const char *mailboxes, const char *id, const char *address,
			 const char *orig, const char *sender, int fd, off_t offset, off_t size,
			 time_t now, size_t *len)
{
	char *dir = maildir_path(mailboxes, address);
	if (!dir)
		return NULL;
	struct vacation v;
	char err[AUTOREPLY_REASON_MAX];
	int r = vacation_read(dir, &v, err, sizeof err);
	if (r < 0)
		autoreply_log(id, address, sender, "error", err);
	char *reply = NULL;
	if (r > 0 && vacation_active(&v, now))
		reply = autoreply_decide(dir, &v, id, address, orig, sender, fd, offset, size, now,
					 len);
	vacation_clear(&v);
	free(dir);
	return reply;
}

/* ---- spooling -------------------------------------------------------------------- */

/* Where the reply goes: to itself when remote; a local one through the
 * aliases, or to the user; nobody else local gets one. */
static size_t autoreply_targets(const struct conf *conf, const struct aliases *al,
				const struct userdb *users, const char *to, char ***out)
{
	const char *at = strrchr(to, '@');
	*out = NULL;
	if (!at || at == to || !at[1])
		return 0;
	size_t n = 0;
	if (!conf_is_local_domain(conf, at + 1)) {
		*out = xmalloc(sizeof **out);
		(*out)[0] = xstrdup(to);
		return 1;
	}
	char *address = str_lower(xstrdup(to));
	size_t direct;
	if (al && aliases_lookup(al, address, &direct)) {
		n = aliases_expand(al, address, out);
	} else if (userdb_find(users, address)) {
		*out = xmalloc(sizeof **out);
		(*out)[0] = xstrdup(address);
		n = 1;
	}
	free(address);
	return n;
}

int autoreply_spool(struct spool *sp, const struct conf *conf, const struct aliases *al,
		    const struct userdb *users, const char *to, const char *text, size_t len,
		    spool_commit_cb cb, void *arg, char id_out[SPOOL_ID_SIZE])
{
	char **targets;
	size_t n = autoreply_targets(conf, al, users, to, &targets);
	if (n == 0) {
		free(targets);
		errno = EINVAL;
		return -1;
	}
	struct spool_envelope env = {.sender = "", .client = "", .arrival = time(NULL)};
	env.rcpts = xcalloc(n, sizeof *env.rcpts);
	env.nrcpts = n;
	for (size_t i = 0; i < n; i++) {
		const char *at = strrchr(targets[i], '@');
		env.rcpts[i].address = targets[i];
		env.rcpts[i].orig = (char *)to;
		env.rcpts[i].local = at && conf_is_local_domain(conf, at + 1);
	}
	struct spool_msg *m = spool_msg_begin(sp, &env);
	int saved = errno;
	free(env.rcpts);
	aliases_free_list(targets, n);
	if (!m) {
		errno = saved;
		return -1;
	}
	memcpy(id_out, env.id, SPOOL_ID_SIZE);
	if (spool_msg_write(m, text, len) < 0) {
		saved = errno;
		spool_msg_abort(m);
		errno = saved;
		return -1;
	}
	spool_msg_commit(m, cb, arg);
	return 0;
}

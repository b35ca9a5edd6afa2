/* message_keys: the sort and thread keys of a message from its header
 * (RFC 5256 §3, RFC 5957), field values parsed by GMime 3 (RFC 2047
 * encoded words, RFC 5322 addresses, dates and message IDs).  See
 * message_keys.h. */
#define _GNU_SOURCE /* O_NOATIME */
#include "store/message_keys.h"
#include "store/message.h"

#include "lib/util.h"

#include <gmime/gmime.h>

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

enum {
	MESSAGE_KEYS_READ_CHUNK = 8 * 1024, /* most headers fit the first read */
};

/* A copy of the GLib string s in our allocator (NULL stays NULL). */
static char *keys_take(char *s)
{
	if (!s)
		return NULL;
	char *c = xstrdup(s);
	g_free(s);
	return c;
}

/* The value of a field (after "name:"), unfolded (CR and LF dropped),
 * without the blanks that lead it, made valid UTF-8.  Caller g_frees. */
static char *keys_unfold(const char *value, size_t len)
{
	GString *v = g_string_sized_new(len);
	size_t i = 0;
	while (i < len && (value[i] == ' ' || value[i] == '\t'))
		i++;
	for (; i < len; i++)
		if (value[i] != '\r' && value[i] != '\n')
			g_string_append_c(v, value[i]);
	char *valid = g_utf8_make_valid(v->str, (gssize)v->len);
	g_string_free(v, TRUE);
	return valid;
}

static void keys_address(const char *value, struct message_addr_key *a)
{
	InternetAddressList *l = internet_address_list_parse(NULL, value);
	if (!l)
		return;
	if (internet_address_list_length(l) > 0) {
		InternetAddress *ia = internet_address_list_get_address(l, 0);
		const char *name = internet_address_get_name(ia);
		if (INTERNET_ADDRESS_IS_GROUP(ia)) {
			a->mailbox = xstrdup(name ? name : "");
			a->display = xstrdup(a->mailbox);
		} else {
			const char *addr = internet_address_mailbox_get_addr(INTERNET_ADDRESS_MAILBOX(ia));
			if (!addr)
				addr = "";
			const char *at = strrchr(addr, '@');
			a->mailbox = at ? xstrndup(addr, (size_t)(at - addr)) : xstrdup(addr);
			a->display = xstrdup(name && *name ? name : addr);
		}
	}
	g_object_unref(l);
}

static void keys_date(const char *value, struct message_keys *k)
{
	GDateTime *d = g_mime_utils_header_decode_date(value);
	if (!d)
		return;
	k->date = g_date_time_to_unix(d);
	k->has_date = true;
	g_date_time_unref(d);
}

/* The message IDs of a References or In-Reply-To value: all of them (the
 * last MESSAGE_KEYS_REFS_MAX) or the first.  false when it has none. */
static bool keys_refs(const char *value, struct message_keys *k, bool all)
{
	GMimeReferences *r = g_mime_references_parse(NULL, value);
	if (!r)
		return false;
	int n = g_mime_references_length(r);
	int from = 0;
	if (!all && n > 1)
		n = 1;
	if (n > MESSAGE_KEYS_REFS_MAX)
		from = n - MESSAGE_KEYS_REFS_MAX;
	if (n > from) {
		k->refs = xcalloc((size_t)(n - from), sizeof *k->refs);
		for (int i = from; i < n; i++)
			k->refs[k->nrefs++] = xstrdup(g_mime_references_get_message_id(r, i));
	}
	g_mime_references_free(r);
	return k->nrefs > 0;
}

struct keys_fields {
	struct message_keys *k;
	char *in_reply_to;               /* used when References has no ID */
	bool seen_refs;
};

static bool keys_name_is(const char *name, size_t namelen, const char *want)
{
	return strlen(want) == namelen && g_ascii_strncasecmp(name, want, namelen) == 0;
}

/* One field of the header: the first of each name counts. */
static void keys_field(struct keys_fields *f, const char *name, size_t namelen, const char *value,
		       size_t len)
{
	struct message_keys *k = f->k;
	struct message_addr_key *addr = NULL;
	if (keys_name_is(name, namelen, "From"))
		addr = &k->from;
	else if (keys_name_is(name, namelen, "To"))
		addr = &k->to;
	else if (keys_name_is(name, namelen, "Cc"))
		addr = &k->cc;
	bool subject = keys_name_is(name, namelen, "Subject") && !k->subject;
	bool date = keys_name_is(name, namelen, "Date") && !k->has_date;
	bool id = keys_name_is(name, namelen, "Message-ID") && !k->message_id;
	bool refs = keys_name_is(name, namelen, "References") && !f->seen_refs;
	bool irt = keys_name_is(name, namelen, "In-Reply-To") && !f->in_reply_to;
	if (!(subject || date || id || refs || irt || (addr && !addr->mailbox)))
		return;
	char *v = keys_unfold(value, len);
	if (subject)
		k->subject = keys_take(g_mime_utils_header_decode_text(NULL, v));
	else if (date)
		keys_date(v, k);
	else if (id)
		k->message_id = keys_take(g_mime_utils_decode_message_id(v));
	else if (refs)
		f->seen_refs = keys_refs(v, k, true);
	else if (irt) {
		f->in_reply_to = xstrdup(v);
	} else
		keys_address(v, addr);
	g_free(v);
}

static int keys_field_raw(const char *name, size_t namelen, const char *field, size_t len,
			  void *arg)
{
	const char *value = (const char *)memchr(field, ':', len) + 1; /* a field has its colon */
	keys_field(arg, name, namelen, value, (size_t)(field + len - value));
	return 0;
}

void message_keys_parse(const char *h, size_t n, struct message_keys *k)
{
	memset(k, 0, sizeof *k);
	struct keys_fields f = {.k = k};
	(void)message_header_fields(h, n, keys_field_raw, &f);
	/* RFC 5256 §3 step 1: no valid ID in References: In-Reply-To's first */
	if (!f.seen_refs && f.in_reply_to) {
		free(k->refs);
		k->refs = NULL;
		k->nrefs = 0;
		(void)keys_refs(f.in_reply_to, k, false);
	}
	free(f.in_reply_to);
}

/* The header of the file: octets up to and with its blank line, at most
 * MESSAGE_KEYS_HEADER_MAX.  Caller frees. */
static char *keys_read_header(int fd, size_t *len, char *err, size_t errsz, const char *path)
{
	size_t cap = MESSAGE_KEYS_READ_CHUNK, got = 0;
	char *buf = xmalloc(cap + 1);
	for (;;) {
		ssize_t r = read(fd, buf + got, cap - got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			int e = errno;
			errfmt(err, errsz, "%s: %s", path, strerror(e));
			free(buf);
			errno = e;
			return NULL;
		}
		size_t from = got > 2 ? got - 2 : 0;
		got += (size_t)r;
		buf[got] = '\0';
		bool ended = r == 0 || strstr(buf + from, "\n\n") || strstr(buf + from, "\n\r\n");
		if (ended || got >= MESSAGE_KEYS_HEADER_MAX)
			break;
		if (got == cap) {
			cap = cap * 2 > MESSAGE_KEYS_HEADER_MAX ? MESSAGE_KEYS_HEADER_MAX : cap * 2;
			buf = xrealloc(buf, cap + 1);
		}
	}
	*len = got;
	return buf;
}

int message_keys_read(const char *path, struct message_keys *k, char *err, size_t errsz)
{
	memset(k, 0, sizeof *k);
	/* no access time written for each of a folder's files (O_NOATIME
	 * needs the file's owner: else an ordinary open) */
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOATIME);
	if (fd < 0 && errno == EPERM)
		fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0) {
		int e = errno;
		errfmt(err, errsz, "%s: %s", path, strerror(e));
		errno = e;
		return -1;
	}
	size_t len;
	char *h = keys_read_header(fd, &len, err, errsz, path);
	int e = errno;
	close(fd);
	if (!h) {
		errno = e;
		return -1;
	}
	message_keys_parse(h, len, k);
	free(h);
	return 0;
}

static size_t keys_strsize(const char *s)
{
	return s ? strlen(s) + 1 : 0;
}

size_t message_keys_size(const struct message_keys *k)
{
	size_t n = sizeof *k + keys_strsize(k->subject) + keys_strsize(k->message_id);
	const struct message_addr_key *a[] = {&k->from, &k->to, &k->cc};
	for (size_t i = 0; i < ARRAY_LEN(a); i++)
		n += keys_strsize(a[i]->mailbox) + keys_strsize(a[i]->display);
	n += k->nrefs * sizeof *k->refs;
	for (size_t i = 0; i < k->nrefs; i++)
		n += keys_strsize(k->refs[i]);
	return n;
}

void message_keys_free(struct message_keys *k)
{
	free(k->subject);
	free(k->message_id);
	struct message_addr_key *a[] = {&k->from, &k->to, &k->cc};
	for (size_t i = 0; i < ARRAY_LEN(a); i++) {
		free(a[i]->mailbox);
		free(a[i]->display);
	}
	for (size_t i = 0; i < k->nrefs; i++)
		free(k->refs[i]);
	free(k->refs);
	memset(k, 0, sizeof *k);
}

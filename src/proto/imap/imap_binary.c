/* imap_binary: the content of a FETCH BINARY section (RFC 3516 §4.2): the
 * part's Content-Transfer-Encoding (RFC 2045 §6) read from its MIME header
 * and undone: base64 (RFC 2045 §6.8) and quoted-printable (§6.7) decoded
 * here, in memory and bounded (IMAP_BINARY_MAX); 7bit, 8bit and binary
 * streamed as BODY's octets are. */
#include "proto/imap/imap_binary.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <gmime/gmime.h>

#include "proto/imap/imap_view.h"
#include "lib/util.h"

/* ---- Content-Transfer-Encoding ------------------------------------------- */

static bool imap_cte_is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* The encoding named by the field's value v[0..n) (unfolded or not). */
static enum imap_cte imap_cte_from_value(const char *v, size_t n)
{
	size_t i = 0;
	while (i < n && imap_cte_is_space(v[i]))
		i++;
	size_t start = i;
	while (i < n && !imap_cte_is_space(v[i]) && v[i] != ';' && v[i] != '(')
		i++;
	size_t len = i - start;
	static const struct {
		const char *name;
		enum imap_cte cte;
	} known[] = {
		{"7bit", IMAP_CTE_IDENTITY}, {"8bit", IMAP_CTE_IDENTITY},
		{"binary", IMAP_CTE_IDENTITY}, {"base64", IMAP_CTE_BASE64},
		{"quoted-printable", IMAP_CTE_QP},
	};
	if (len == 0)
		return IMAP_CTE_IDENTITY;
	for (size_t k = 0; k < ARRAY_LEN(known); k++)
		if (strlen(known[k].name) == len && strncasecmp(known[k].name, v + start, len) == 0)
			return known[k].cte;
	return IMAP_CTE_UNKNOWN;
}

enum imap_cte imap_binary_cte(const char *hdr, size_t len)
{
	static const char field[] = "Content-Transfer-Encoding";
	const size_t flen = sizeof field - 1;
	size_t pos = 0;
	while (pos < len) {
		if (hdr[pos] == '\n' || (hdr[pos] == '\r' && pos + 1 < len && hdr[pos + 1] == '\n'))
			break; /* the blank line ends the header */
		size_t start = pos;
		do { /* one field: its line and the folded lines after it */
			const char *lf = memchr(hdr + pos, '\n', len - pos);
			pos = lf ? (size_t)(lf - hdr) + 1 : len;
		} while (pos < len && (hdr[pos] == ' ' || hdr[pos] == '\t'));
		const char *colon = memchr(hdr + start, ':', pos - start);
		if (!colon)
			continue;
		size_t nl = (size_t)(colon - (hdr + start));
		while (nl > 0 && (hdr[start + nl - 1] == ' ' || hdr[start + nl - 1] == '\t'))
			nl--;
		if (nl == flen && strncasecmp(hdr + start, field, flen) == 0) {
			size_t v = (size_t)(colon - hdr) + 1;
			return imap_cte_from_value(hdr + v, pos - v);
		}
	}
	return IMAP_CTE_IDENTITY;
}

/* ---- decoding ----------------------------------------------------------- */

static int imap_base64_value(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

/* RFC 2045 §6.8: octets outside the alphabet are ignored; "=" ends a
 * quantum (the bits left over are padding). */
static size_t imap_base64_decode(const char *in, size_t len, char *out)
{
	size_t o = 0;
	unsigned acc = 0, bits = 0;
	for (size_t i = 0; i < len; i++) {
		int v = imap_base64_value((unsigned char)in[i]);
		if (in[i] == '=') {
			acc = 0;
			bits = 0;
			continue;
		}
		if (v < 0)
			continue;
		acc = (acc << 6) | (unsigned)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			out[o++] = (char)((acc >> bits) & 0xff);
			acc &= (1u << bits) - 1;
		}
	}
	return o;
}

static int imap_hex_value(unsigned char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* One line of quoted-printable, its line end and trailing white space
 * already cut: octets into out; true when it ended in a soft line break. */
static bool imap_qp_line(const char *l, size_t n, char *out, size_t *o)
{
	for (size_t i = 0; i < n; i++) {
		if (l[i] != '=') {
			out[(*o)++] = l[i];
			continue;
		}
		if (i + 1 == n)
			return true; /* "=" at the end: a soft line break */
		int hi = i + 1 < n ? imap_hex_value((unsigned char)l[i + 1]) : -1;
		int lo = i + 2 < n ? imap_hex_value((unsigned char)l[i + 2]) : -1;
		if (hi >= 0 && lo >= 0) {
			out[(*o)++] = (char)(hi << 4 | lo);
			i += 2;
		} else {
			out[(*o)++] = '='; /* §6.7 note (2): kept as it is */
		}
	}
	return false;
}

/* RFC 2045 §6.7: line by line; each hard line break becomes CRLF. */
static size_t imap_qp_decode(const char *in, size_t len, char *out)
{
	size_t o = 0, pos = 0;
	while (pos < len) {
		const char *lf = memchr(in + pos, '\n', len - pos);
		size_t end = lf ? (size_t)(lf - in) : len;
		size_t n = end - pos;
		while (n > 0 && (in[pos + n - 1] == '\r' || in[pos + n - 1] == ' ' ||
				 in[pos + n - 1] == '\t'))
			n--; /* rule (3): trailing white space is not data */
		bool soft = imap_qp_line(in + pos, n, out, &o);
		if (lf && !soft) {
			out[o++] = '\r';
			out[o++] = '\n';
		}
		pos = lf ? end + 1 : len;
	}
	return o;
}

char *imap_binary_decode(enum imap_cte cte, const char *in, size_t len, size_t *outlen)
{
	/* neither decoding grows its input but for LF -> CRLF in QP */
	char *out = xmalloc(2 * len + 1);
	switch (cte) {
	case IMAP_CTE_BASE64:
		*outlen = imap_base64_decode(in, len, out);
		break;
	case IMAP_CTE_QP:
		*outlen = imap_qp_decode(in, len, out);
		break;
	case IMAP_CTE_IDENTITY:
	case IMAP_CTE_UNKNOWN:
	default:
		memcpy(out, in, len);
		*outlen = len;
		break;
	}
	out[*outlen] = '\0';
	return out;
}

/* ---- a section of a message --------------------------------------------- */

/* The octets [offset, offset + len) of message i's CRLF form, in memory
 * (the stream gives no more than the range; the slack lets the last read
 * offer message_stream_read its minimum). */
static char *imap_binary_read(struct imap_session *s, size_t i, uint64_t offset, size_t len)
{
	char *buf = xmalloc(len + MESSAGE_STREAM_MIN + 1);
	struct message_stream *st = len ? imap_msg_stream(s, i, offset, len) : NULL;
	size_t have = 0;
	while (st && have < len) {
		ssize_t n = message_stream_read(st, buf + have, len - have + MESSAGE_STREAM_MIN);
		if (n <= 0)
			break;
		have += (size_t)n;
	}
	if (st)
		message_stream_close(st);
	if (have != len) {
		free(buf);
		return NULL;
	}
	buf[len] = '\0';
	return buf;
}

/* The transfer encoding of the part spec names, from its MIME header. */
static bool imap_binary_part_cte(struct imap_session *s, size_t i,
				 const struct message_section_spec *spec, enum imap_cte *cte)
{
	struct message_section_spec mime = *spec;
	mime.text = MESSAGE_SECTION_MIME;
	struct imap_part h;
	if (!imap_msg_section(s, i, &mime, &h))
		return false;
	if (h.built) { /* no such part: nothing to decode */
		free(h.built);
		*cte = IMAP_CTE_IDENTITY;
		return true;
	}
	size_t n = h.length < IMAP_BINARY_HEADER_MAX ? (size_t)h.length : IMAP_BINARY_HEADER_MAX;
	char *hdr = imap_binary_read(s, i, h.offset, n);
	if (!hdr)
		return false;
	*cte = imap_binary_cte(hdr, n);
	free(hdr);
	return true;
}

enum imap_binary_result imap_binary_section(struct imap_session *s, size_t i,
					    const struct message_section_spec *spec,
					    struct imap_part *part, bool *has_nul)
{
	*has_nul = false;
	enum imap_cte cte = IMAP_CTE_IDENTITY;
	if (spec->nparts > 0 && !imap_binary_part_cte(s, i, spec, &cte))
		return IMAP_BINARY_UNREADABLE;
	if (cte == IMAP_CTE_UNKNOWN)
		return IMAP_BINARY_UNKNOWN_CTE;
	struct message_section_spec whole = *spec;
	whole.text = MESSAGE_SECTION_WHOLE;
	if (!imap_msg_section(s, i, &whole, part))
		return IMAP_BINARY_UNREADABLE;
	if (part->built || cte == IMAP_CTE_IDENTITY)
		return IMAP_BINARY_OK;
	if (part->length > IMAP_BINARY_MAX)
		return IMAP_BINARY_TOO_BIG;
	char *enc = imap_binary_read(s, i, part->offset, (size_t)part->length);
	if (!enc)
		return IMAP_BINARY_UNREADABLE;
	part->built = imap_binary_decode(cte, enc, (size_t)part->length, &part->built_len);
	free(enc);
	*has_nul = memchr(part->built, '\0', part->built_len) != NULL;
	return IMAP_BINARY_OK;
}

/* ---- APPEND of a literal8 ------------------------------------------------- */

/* Does the content of part (as decoded, which for the identity encodings
 * is as it is) hold NUL? */
static bool imap_part_has_nul(GMimePart *part)
{
	GMimeDataWrapper *w = g_mime_part_get_content(part);
	if (!w)
		return false;
	GMimeStream *mem = g_mime_stream_mem_new();
	bool nul = false;
	if (g_mime_data_wrapper_write_to_stream(w, mem) >= 0) {
		GByteArray *b = g_mime_stream_mem_get_byte_array(GMIME_STREAM_MEM(mem));
		nul = b && b->len > 0 && memchr(b->data, '\0', b->len) != NULL;
	}
	g_object_unref(mem);
	return nul;
}

static void imap_part_encode_nul(GMimeObject *parent, GMimeObject *obj, gpointer arg)
{
	if (!GMIME_IS_PART(obj))
		return;
	GMimePart *part = GMIME_PART(obj);
	GMimeContentEncoding enc = g_mime_part_get_content_encoding(part);
	if (enc == GMIME_CONTENT_ENCODING_BASE64 || enc == GMIME_CONTENT_ENCODING_QUOTEDPRINTABLE ||
	    enc == GMIME_CONTENT_ENCODING_UUENCODE || !imap_part_has_nul(part))
		return;
	g_mime_part_set_content_encoding(part, GMIME_CONTENT_ENCODING_BASE64);
	(*(unsigned *)arg)++;
}

static GMimeMessage *imap_binary_parse_file(const char *path)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return NULL;
	GMimeStream *in = g_mime_stream_fs_new(fd); /* owns fd */
	GMimeParser *p = g_mime_parser_new_with_stream(in);
	GMimeMessage *msg = g_mime_parser_construct_message(p, NULL);
	g_object_unref(p);
	g_object_unref(in);
	return msg;
}

/* msg written to a new file beside path, which then replaces it. */
static bool imap_binary_write_file(GMimeMessage *msg, const char *path, char *err, size_t errsz)
{
	char *tmp = xasprintf("%s.base64", path);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0) {
		(void)snprintf(err, errsz, "%s: %s", tmp, strerror(errno));
		free(tmp);
		return false;
	}
	GMimeStream *out = g_mime_stream_fs_new(fd); /* owns fd */
	bool ok = g_mime_object_write_to_stream(GMIME_OBJECT(msg), NULL, out) >= 0 &&
		  g_mime_stream_flush(out) == 0;
	g_object_unref(out);
	if (ok && rename(tmp, path) < 0)
		ok = false;
	if (!ok) {
		(void)snprintf(err, errsz, "%s: cannot rewrite the message: %s", path,
			       strerror(errno));
		(void)unlink(tmp);
	}
	free(tmp);
	return ok;
}

bool imap_binary_append_encode(const char *path, char *err, size_t errsz)
{
	GMimeMessage *msg = imap_binary_parse_file(path);
	if (!msg) {
		(void)snprintf(err, errsz, "%s: cannot parse the message", path);
		return false;
	}
	unsigned changed = 0;
	if (GMIME_IS_PART(g_mime_message_get_mime_part(msg)))
		imap_part_encode_nul(GMIME_OBJECT(msg), g_mime_message_get_mime_part(msg), &changed);
	else
		g_mime_message_foreach(msg, imap_part_encode_nul, &changed);
	bool ok = true;
	if (changed == 0)
		(void)snprintf(err, errsz, "NUL outside any part's content");
	else
		ok = imap_binary_write_file(msg, path, err, errsz);
	g_object_unref(msg);
	return ok && changed > 0;
}

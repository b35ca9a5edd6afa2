/* message: one Maildir message as IMAP sees it: ENVELOPE, BODYSTRUCTURE
 * and BODY (RFC 3501 §7.4.2, §9), body sections (§6.4.5) as ranges of the
 * message's CRLF form, and the SEARCH tests on headers, text and the Date
 * (§6.4.4).  MIME parsing is GMime 3's (RFC 2045-2047, 2183, 2231, 5322).
 *
 * Files on disk may have LF or CRLF line ends (maildir_deliver writes LF);
 * every size, offset and line count here is in the CRLF form that
 * maildir_stream_read() produces.  What a parse computes is kept in a cache
 * bounded in memory (LRU), keyed by the file's unique name, its size on
 * disk and its inode, so a FETCH of 10,000 envelopes parses each message
 * once.  Parsing
 * reads the file through a GMime file stream with persist_stream: part
 * contents are never copied into memory.  Everything runs on the event
 * loop thread but message_search_file(), which is for workers. */
#ifndef POSTHORN_MESSAGE_H
#define POSTHORN_MESSAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

enum {
	MESSAGE_CACHE_DEFAULT = 64 * 1024 * 1024, /* octets of cached summaries
						   * (about 1-2 KiB per message) */
	MESSAGE_HEADER_MAX = 256 * 1024, /* header octets read for HEADER.FIELDS
					  * and header SEARCH; more are ignored */
	MESSAGE_DEPTH_MAX = 32,          /* MIME nesting described; deeper parts
					  * are shown as opaque bodies */
	MESSAGE_PARTS_MAX = 1000,        /* parts described in one message */
	MESSAGE_STREAM_MIN = 4,          /* smallest buffer message_stream_read takes */
};

/* Once per process, before anything else here (g_mime_init), and at exit. */
/* Call fn for each header field of h[0..n): its name (without the
 * blanks before the colon) and its lines as raw octets, the name
 * included (unfolding is the callee's business).  Stops at the blank
 * line; returns what fn returned when it was not 0. */
typedef int (*message_field_fn)(const char *name, size_t namelen, const char *field, size_t len,
				void *arg);
int message_header_fields(const char *h, size_t n, message_field_fn fn, void *arg);

void message_init(void);
void message_shutdown(void);

/* ---- the cache and the parsed summary ------------------------------------ */

struct message_cache;

/* A cache holding at most max_bytes octets of summaries (0: the default).
 * One per process is enough; sessions share it. */
struct message_cache *message_cache_new(size_t max_bytes);
void message_cache_free(struct message_cache *c);

/* What one parse of a message computed.  Immutable, reference counted:
 * valid until message_put(), even when the cache drops it meanwhile. */
struct message;

/* The summary of the message file at path, from the cache when its unique
 * name (maildir_unique_len of the base name) and size on disk match, else
 * parsed now.  NULL with a reason in err when the file cannot be read (a
 * vanished file: errno ENOENT).  Malformed MIME is not an error: it is
 * described as well as GMime understands it. */
struct message *message_get(struct message_cache *c, const char *path, char *err, size_t errsz);
void message_put(struct message *m);

/* RFC822.SIZE: octets of the CRLF form. */
uint64_t message_size(const struct message *m);
/* The parenthesised lists, ready to send after "ENVELOPE ", "BODYSTRUCTURE "
 * and "BODY ".  Strings in them are quoted, or literals {n}CRLF... when
 * they hold CR, LF, NUL, 8-bit octets or are long; NIL where absent.
 * Owned by m. */
const char *message_envelope(const struct message *m, size_t *len);
const char *message_bodystructure(const struct message *m, size_t *len);
const char *message_body(const struct message *m, size_t *len);

/* The Date: header (RFC 5322 §3.3) as seconds since the epoch, and the
 * zone's offset from UTC in minutes, for SENTBEFORE/SENTON/SENTSINCE
 * (which compare the date in the header's own zone).  false when there is
 * no Date: or it cannot be parsed. */
bool message_sent_date(const struct message *m, int64_t *when, int *tz_minutes);

/* ---- sections ------------------------------------------------------------ */

/* Which section of a message (RFC 3501 §6.4.5, §9 "section"): part
 * numbers, then which text of that part.  Only what locating it needs:
 * how a protocol asks for it (IMAP's BODY/BINARY, .PEEK, <partial>) is
 * the protocol's business. */
enum {
	MESSAGE_SECTION_PARTS_MAX = 32,  /* "1.2.3..." part numbers */
};

enum message_section_text {
	MESSAGE_SECTION_WHOLE,           /* [] (whole message) or [1.2] (a part's body) */
	MESSAGE_SECTION_HEADER,
	MESSAGE_SECTION_HEADER_FIELDS,
	MESSAGE_SECTION_HEADER_FIELDS_NOT,
	MESSAGE_SECTION_TEXT,
	MESSAGE_SECTION_MIME,            /* only after part numbers */
};

struct message_section_spec {
	size_t nparts;
	uint32_t parts[MESSAGE_SECTION_PARTS_MAX]; /* each >= 1 */
	enum message_section_text text;
	size_t nfields;                  /* HEADER.FIELDS (.NOT): at least one */
	char **fields;                   /* field names (not owned here) */
};

/* Where a section is, once located. */
enum message_section_kind {
	MESSAGE_SECTION_RANGE,   /* offset/length in the CRLF form: stream it */
	MESSAGE_SECTION_BUFFER,  /* buf/len built in memory (HEADER.FIELDS) */
	MESSAGE_SECTION_NONE,    /* no such part: send an empty string "" */
};

struct message_section {
	enum message_section_kind kind;
	uint64_t offset, length; /* RANGE */
	char *buf;               /* BUFFER (owned, message_section_free) */
	size_t len;
};

/* Locate sec's part numbers and text ([], HEADER, TEXT, n, n.MIME,
 * n.HEADER, n.TEXT, HEADER.FIELDS (.NOT)) in the message at path (the
 * file m was got from; reading is needed only for HEADER.FIELDS).  A
 * partial fetch is the caller's: it clips the range or buffer.  0, or -1
 * with a reason in err (the file cannot be read). */
int message_section(const struct message *m, const char *path,
		    const struct message_section_spec *sec, struct message_section *out, char *err,
		    size_t errsz);
void message_section_free(struct message_section *s);

/* Stream length octets from offset of the CRLF form of the message file
 * at path, in bounded chunks (the range is clipped to the message).
 * NULL with errno. */
struct message_stream;
struct message_stream *message_stream_open(const struct message *m, const char *path,
					   uint64_t offset, uint64_t length);
/* Fill out (outsz >= MESSAGE_STREAM_MIN): octets written, 0 at the end of
 * the range, -1 with errno. */
ssize_t message_stream_read(struct message_stream *s, char *out, size_t outsz);
void message_stream_close(struct message_stream *s);

/* ---- SEARCH (RFC 3501 §6.4.4) --------------------------------------------
 * Matching is case-insensitive on UTF-8 after decoding: RFC 2047 encoded
 * words in headers, the transfer encoding and charset (to UTF-8) of text
 * parts.  Each returns 1 (match), 0 (none) or -1 (the file cannot be read;
 * reason in err).  needle is UTF-8. */

/* HEADER field string, FROM, TO, CC, BCC, SUBJECT: some field of that name
 * in the top-level header contains needle; "" matches when the field
 * exists. */
int message_header_contains(const struct message *m, const char *path, const char *field,
			    const char *needle, char *err, size_t errsz);
/* BODY string (text = false): the body's text parts; TEXT string (text =
 * true): the header as well. */
int message_text_contains(const struct message *m, const char *path, bool text,
			  const char *needle, char *err, size_t errsz);

/* The same tests on a worker thread: one open of the file at path, no
 * cache, nothing shared.  A message whose text needs no MIME decoding
 * (well-formed header fields; one text part in 7bit, 8bit or binary and
 * US-ASCII or UTF-8, or a body that is not text) is searched in its
 * octets; any other is parsed with GMime as above.  The answers are those
 * of message_header_contains() and message_text_contains(). */
enum {
	MESSAGE_SEARCH_KEYS_MAX = 64,    /* keys of one call: bits of *found */
};

enum message_search_kind {
	MESSAGE_SEARCH_HEADER,           /* field contains needle */
	MESSAGE_SEARCH_BODY,
	MESSAGE_SEARCH_TEXT,
};

struct message_search_key {
	enum message_search_kind kind;
	const char *field;               /* HEADER */
	const char *needle;              /* UTF-8 */
};

enum message_search_how {
	MESSAGE_SEARCH_AUTO,             /* the octets when they suffice, else GMime */
	MESSAGE_SEARCH_PLAIN,            /* the octets only: EAGAIN when not enough */
	MESSAGE_SEARCH_PARSED,           /* GMime always (the tests compare) */
};

/* Bit k of *found set when keys[k] matches (n <= MESSAGE_SEARCH_KEYS_MAX).
 * 0, or -1 with a reason in err and errno (ENOENT: the file is gone). */
int message_search_file(const char *path, const struct message_search_key *keys, size_t n,
			enum message_search_how how, uint64_t *found, char *err, size_t errsz);

#endif

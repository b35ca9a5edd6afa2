/* imap_binary: FETCH BINARY[section], BINARY.PEEK and BINARY.SIZE
 * (RFC 3516 §4.2): a part's content with its Content-Transfer-Encoding
 * (RFC 2045 §6) undone, for imap_fetch.c. */
#ifndef POSTHORN_IMAP_BINARY_H
#define POSTHORN_IMAP_BINARY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store/message.h"

struct imap_session;
struct imap_part;

enum {
	/* A base64 or quoted-printable part is decoded in memory, so that
	 * its decoded size can precede it; a larger encoded part is refused
	 * with NO [LIMIT] rather than held. */
	IMAP_BINARY_MAX = 32 * 1024 * 1024,
	IMAP_BINARY_HEADER_MAX = 64 * 1024, /* MIME header octets read for the CTE */
};

/* The transfer encodings a BINARY fetch can undo. */
enum imap_cte {
	IMAP_CTE_IDENTITY,      /* none, 7bit, 8bit, binary: the octets as they are */
	IMAP_CTE_BASE64,
	IMAP_CTE_QP,            /* quoted-printable */
	IMAP_CTE_UNKNOWN,       /* RFC 3516 §4.3: NO [UNKNOWN-CTE] */
};

enum imap_binary_result {
	IMAP_BINARY_OK,
	IMAP_BINARY_UNREADABLE, /* the message file cannot be read */
	IMAP_BINARY_UNKNOWN_CTE,
	IMAP_BINARY_TOO_BIG,    /* encoded part over IMAP_BINARY_MAX */
};

/* The Content-Transfer-Encoding of a MIME header (CRLF or LF lines, the
 * blank line or the end of hdr ends it; folded fields are unfolded;
 * comments after the value are ignored); IDENTITY when there is none. */
enum imap_cte imap_binary_cte(const char *hdr, size_t len);

/* Undo cte on in[0..len): a new buffer of *outlen octets (NUL-terminated
 * for convenience; may hold NUL).  base64 skips what is not of its
 * alphabet; quoted-printable follows RFC 2045 §6.7 (soft line breaks,
 * trailing white space of a line dropped, a bad "=" kept as it is). */
char *imap_binary_decode(enum imap_cte cte, const char *in, size_t len, size_t *outlen);

/* The content of section spec (part numbers only) of message i: a range
 * to stream as BODY's (no encoding to undo; part->built NULL) or the
 * decoded octets in part->built.  *has_nul tells whether built holds a
 * NUL (the response then uses literal8, "~{n}"). */
enum imap_binary_result imap_binary_section(struct imap_session *s, size_t i,
					    const struct message_section_spec *spec,
					    struct imap_part *part, bool *has_nul);

/* RFC 3516 §4.1: APPEND's literal8 held NUL.  Rewrite the message file
 * at path (a file of the folder's tmp/, not yet delivered) so that every
 * part whose content holds NUL is base64-encoded instead, its
 * Content-Transfer-Encoding saying so: BODY[] stays a valid IMAP string
 * and BINARY[] gives the octets back.  false with a reason in err. */
bool imap_binary_append_encode(const char *path, char *err, size_t errsz);

#endif

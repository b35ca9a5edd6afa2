/* milter_msg: a spooled message's header fields as the milter protocol
 * sees them (name, value without the space after the colon, folds as LF
 * and the whitespace that follows) and the header changes of milters
 * (smfi_addheader, smfi_insheader, smfi_chgheader) applied to them;
 * RFC 5322 §2.2 (fields, folding). */
#ifndef POSTHORN_MILTER_MSG_H
#define POSTHORN_MILTER_MSG_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

enum { MILTER_HEADERS_MAX = 1 << 20 };  /* the header block read, at most */

struct milter_header {
	char *name;
	char *value;
};

struct milter_headers {
	struct milter_header *v;
	size_t n;
	off_t body_offset;      /* where the body starts, from the message's start */
	bool cut;               /* the header block is longer than MILTER_HEADERS_MAX:
				 * what follows body_offset is header too */
};

/* The header fields of the size bytes at offset of fd (CRLF line ends).
 * The header ends at the empty line, or at a line that is no header field
 * (that line is the body's first), or at the last whole field within
 * MILTER_HEADERS_MAX (cut).  0, or -1 with errno (a read error). */
int milter_headers_read(int fd, off_t offset, off_t size, struct milter_headers *out);
/* The same from bytes in memory (for tests and the fuzzer). */
int milter_headers_parse(const char *buf, size_t len, bool whole, struct milter_headers *out);
void milter_headers_free(struct milter_headers *h);

/* Is there a field name (any case) whose value, trimmed, is value (any case)? */
bool milter_headers_has(const struct milter_headers *h, const char *name, const char *value);

/* SMFIR_ADDHEADER: at the end. */
void milter_headers_add(struct milter_headers *h, const char *name, const char *value);
/* SMFIR_INSHEADER: before the field at index (0: first; past the end: last). */
void milter_headers_insert(struct milter_headers *h, size_t index, const char *name,
			   const char *value);
/* SMFIR_CHGHEADER: the index-th (from 1) field of this name; an empty value
 * deletes it; no such field: added at the end (as Sendmail does) unless
 * the value is empty. */
void milter_headers_change(struct milter_headers *h, const char *name, size_t index,
			   const char *value);

/* The header block with CRLF line ends and the empty line after it
 * (none when cut: the rest of the header follows as it was). */
typedef int (*milter_write_fn)(void *arg, const void *data, size_t len);
int milter_headers_write(const struct milter_headers *h, milter_write_fn out, void *arg);

#endif

/* dkim_header: the header section of a message cut into fields for DKIM
 * (RFC 5322 §2.2, folded lines kept), the fields a signature's h= names
 * picked from the bottom up (RFC 6376 §5.4.2), and the From domain. */
#ifndef POSTHORN_DKIM_HEADER_H
#define POSTHORN_DKIM_HEADER_H

#include <stdbool.h>
#include <stddef.h>

enum {
	DKIM_FIELDS_MAX = 1000,         /* header fields of one message */
	DKIM_HEADER_MAX = 1024 * 1024,  /* bytes of one header section */
	DKIM_DOMAIN_MAX = 253,
};

/* One field: its bytes from the name to the end of its last line,
 * without that line end (folding line ends inside kept). */
struct dkim_field {
	const char *start;
	size_t len;
	size_t name_len;        /* up to the colon, white space before it excluded */
};

struct dkim_header {
	struct dkim_field *fields;
	size_t n;
	size_t body_offset;     /* where the body starts (after the empty line) */
};

/* Cut msg[0..len) (CRLF or LF line ends).  0, or -1 when it has more
 * than DKIM_FIELDS_MAX fields or a header section over DKIM_HEADER_MAX. */
int dkim_header_parse(const char *msg, size_t len, struct dkim_header *h);
void dkim_header_free(struct dkim_header *h);

/* Is the field's name name (case-insensitive)? */
bool dkim_field_is(const struct dkim_field *f, const char *name, size_t name_len);

/* Picks fields for an h= list: the k-th use of a name takes the k-th
 * field of that name from the bottom, or none. */
struct dkim_pick {
	bool used[DKIM_FIELDS_MAX];
};
void dkim_pick_begin(struct dkim_pick *p);
const struct dkim_field *dkim_pick_next(struct dkim_pick *p, const struct dkim_header *h,
					const char *name, size_t name_len);

/* The domain of the one From field's address, lower case, into out.
 * 0; -1 when there is no From, more than one, or no domain in it. */
int dkim_from_domain(const struct dkim_header *h, char *out, size_t outsz);

#endif

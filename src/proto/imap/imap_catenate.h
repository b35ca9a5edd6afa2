/* imap_catenate: APPEND's CATENATE (RFC 4469): a message made of TEXT
 * parts and URL parts that name messages, or parts of them, in the user's
 * own folders by relative IMAP URL (RFC 5092 §6: "/INBOX;UIDVALIDITY=v/
 * ;UID=u/;SECTION=s/;PARTIAL=o.n"; no URLAUTH, no other user or host). */
#ifndef POSTHORN_IMAP_CATENATE_H
#define POSTHORN_IMAP_CATENATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store/message.h"

struct imap_session;
struct imap_args;

enum {
	IMAP_URL_MAX = 4096,     /* octets of one URL */
};

/* A parsed relative IMAP URL. */
struct imap_url {
	char *mailbox;           /* %-decoded, owned */
	uint32_t uidvalidity;    /* 0: not given */
	uint32_t uid;            /* >= 1 */
	bool has_section;
	struct message_section_spec section; /* part numbers and HEADER/TEXT/MIME */
	bool partial;
	uint32_t origin, count;  /* PARTIAL=origin[.count]; count 0: to the end */
};

/* Parse s (its whole length) into u; false when it is not a relative
 * IMAP URL naming one message by UID (then u holds nothing to free). */
bool imap_url_parse(const char *s, size_t len, struct imap_url *u);
void imap_url_free(struct imap_url *u);

enum imap_catenate_result {
	IMAP_CATENATE_OK,
	IMAP_CATENATE_BADURL,    /* NO [BADURL url] */
	IMAP_CATENATE_SYNTAX,    /* BAD */
	IMAP_CATENATE_FAILED,    /* the file could not be written (logged) */
};

/* Write the parts of parts ("TEXT" literal / "URL" url, at least one) to
 * fd in order.  *badurl points at the URL refused (in parts). */
enum imap_catenate_result imap_catenate_write(struct imap_session *s, const struct imap_args *parts,
					      int fd, const char **badurl);

#endif

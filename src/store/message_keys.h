/* message_keys: what SORT and THREAD (RFC 5256) need of one message,
 * read from its top-level header only (never its body): the Subject and
 * the first address of From, To and Cc, RFC 2047 decoded to UTF-8; the
 * Date (RFC 5322 §3.3); Message-ID, References and In-Reply-To (§3.6.4).
 * GMime 3 parses the field values; the header is read with one bounded
 * read of the file. */
#ifndef POSTHORN_MESSAGE_KEYS_H
#define POSTHORN_MESSAGE_KEYS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum {
	/* header octets read; fields past them are not seen (a header this
	 * long is spam or an attack, and its sort keys are then absent) */
	MESSAGE_KEYS_HEADER_MAX = 64 * 1024,
	/* message IDs kept of References: the last ones, nearest the
	 * message, which the REFERENCES algorithm links (RFC 5256 §3) */
	MESSAGE_KEYS_REFS_MAX = 64,
};

/* The first address of an address field (RFC 5256 §3 "addr-mailbox"; RFC
 * 5957 display name).  For a group (RFC 5322 §3.4 "group"), both are the
 * group's name, as its ENVELOPE shows it in the mailbox position. */
struct message_addr_key {
	char *mailbox;                   /* local part; NULL: no address */
	char *display;                   /* display name, else "local@domain" */
};

struct message_keys {
	char *subject;                   /* decoded; NULL: no Subject */
	struct message_addr_key from, to, cc;
	bool has_date;
	int64_t date;                    /* seconds since the epoch */
	char *message_id;                /* without <>; NULL: none or invalid */
	/* References' IDs, oldest first, else In-Reply-To's first one */
	char **refs;
	size_t nrefs;
};

/* Parse the header h[0..n) (up to its blank line) into k (zeroed first). */
void message_keys_parse(const char *h, size_t n, struct message_keys *k);
/* Read the header of the message file at path and parse it: 0, or -1
 * with errno and a reason in err (a vanished file: ENOENT). */
int message_keys_read(const char *path, struct message_keys *k, char *err, size_t errsz);
/* Octets k holds, for a cache's bound. */
size_t message_keys_size(const struct message_keys *k);
void message_keys_free(struct message_keys *k);

#endif

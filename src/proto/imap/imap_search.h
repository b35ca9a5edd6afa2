/* imap_search: SEARCH and UID SEARCH (RFC 3501 §6.4.4), a handler of
 * imap_session.c's command table. */
#ifndef POSTHORN_IMAP_SEARCH_H
#define POSTHORN_IMAP_SEARCH_H

#include <stdbool.h>
#include <stddef.h>

struct imap_session;
struct imap_command;
struct imap_skey;

void imap_cmd_search(struct imap_session *s, const struct imap_command *c);

/* A compiled search program, kept by a search context (imap_esearch.c):
 * does message i match it? */
bool imap_search_prog_match(struct imap_session *s, size_t i, const struct imap_skey *prog);
/* Free prog and what it holds (NULL: nothing). */
void imap_search_prog_free(struct imap_skey *prog);

#endif

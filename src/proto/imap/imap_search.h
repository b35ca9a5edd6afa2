/* imap_search: SEARCH and UID SEARCH (RFC 3501 §6.4.4), a handler of
 * imap_session.c's command table. */
#ifndef POSTHORN_IMAP_SEARCH_H
#define POSTHORN_IMAP_SEARCH_H

struct imap_session;
struct imap_command;

void imap_cmd_search(struct imap_session *s, const struct imap_command *c);

#endif

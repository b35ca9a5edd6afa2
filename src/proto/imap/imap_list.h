/* imap_list: LIST and LSUB (RFC 3501 §6.3.8, §6.3.9) with LIST-EXTENDED
 * (RFC 5258) and LIST-STATUS (RFC 5819), a handler of imap_session.c's
 * command table. */
#ifndef POSTHORN_IMAP_LIST_H
#define POSTHORN_IMAP_LIST_H

struct imap_session;
struct imap_command;

/* LIST and LSUB (the command's name tells which). */
void imap_cmd_list(struct imap_session *s, const struct imap_command *c);

#endif

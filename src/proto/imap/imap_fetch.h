/* imap_fetch: FETCH, UID FETCH, STORE and UID STORE (RFC 3501 §6.4.5,
 * §6.4.6), handlers of imap_session.c's command table. */
#ifndef POSTHORN_IMAP_FETCH_H
#define POSTHORN_IMAP_FETCH_H

struct imap_session;
struct imap_command;

void imap_cmd_fetch(struct imap_session *s, const struct imap_command *c);
/* SELECT/EXAMINE (QRESYNC ...) (RFC 7162 §3.2.5): "* n FETCH (UID FLAGS
 * MODSEQ)" of each message of uids (taken; NULL: all) changed since
 * modseq, as a job that ends with "TAG OK done". */
struct imap_seqset;
void imap_fetch_changed(struct imap_session *s, struct imap_seqset *uids, unsigned long long since,
			const char *done);
void imap_cmd_store(struct imap_session *s, const struct imap_command *c);

#endif

/* imap_session: one IMAP4rev1 session (RFC 3501) with the extensions mail
 * clients rely on (IDLE, UIDPLUS, MOVE, UNSELECT, NAMESPACE, ID, ENABLE,
 * LITERAL+, SASL-IR, SPECIAL-USE, CHILDREN, ESEARCH, SEARCHRES,
 * CONTEXT=SEARCH, ESORT, MULTIAPPEND, CATENATE, BINARY, LIST-EXTENDED,
 * LIST-STATUS) on the shared transport
 * (conn.c), parser (imap_parse.c), SASL layer (sasl.c), folder store
 * (mailbox.c) and MIME layer (message.c). */
#ifndef POSTHORN_IMAP_SESSION_H
#define POSTHORN_IMAP_SESSION_H

struct session_start;

/* Take over the accepted connection described by st (see proto/session.h). */
void imap_session_start(const struct session_start *st);

/* At the daemon's exit, after the last session: free what sessions share
 * (the cache of parsed messages). */
void imap_session_cleanup(void);

#endif

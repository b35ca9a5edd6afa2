/* pop3_session: one POP3 session (RFC 1939, RFC 2449 CAPA, RFC 2595 STLS,
 * RFC 5034 SASL AUTH) on the shared transport (conn.c), line reader
 * (linebuf.c), SASL layer (sasl.c) and Maildir reader (maildir.c). */
#ifndef POSTHORN_POP3_SESSION_H
#define POSTHORN_POP3_SESSION_H

struct session_start;

/* Take over the accepted connection described by st (see proto/session.h). */
void pop3_session_start(const struct session_start *st);

#endif

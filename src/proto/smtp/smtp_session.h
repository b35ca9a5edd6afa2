/* smtp_session: one inbound SMTP session (RFC 5321, 1870, 2920, 3463,
 * 6152, 6531): the command table with the states each command is allowed
 * in, the policy gate, the DATA phase into the spool. */
#ifndef POSTHORN_SMTP_SESSION_H
#define POSTHORN_SMTP_SESSION_H

#include <stdbool.h>
#include <sys/socket.h>

struct session_start;

/* Take over the accepted connection described by st (see proto/session.h): the
 * runtime is referenced for the session's life; st->conn stays in the
 * daemon's registry until the link's closed(). */
void smtp_session_start(const struct session_start *st);

#endif

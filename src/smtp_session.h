/* smtp_session: one inbound SMTP session (RFC 5321, 1870, 2920, 3463,
 * 6152, 6531): the command table with the states each command is allowed
 * in, the policy gate, the DATA phase into the spool. */
#ifndef POSTHORN_SMTP_SESSION_H
#define POSTHORN_SMTP_SESSION_H

#include <sys/socket.h>

struct runtime;
struct conf_server;
struct server_conn;

/* Take over the accepted socket fd.  rt is referenced for the session's
 * life; conn is owned by the caller's registry until server_conn_closed(). */
void smtp_session_start(struct runtime *rt, const struct conf_server *srv, int fd,
			const struct sockaddr *peer, socklen_t peerlen, struct server_conn *conn);

#endif

/* smtp_session: one inbound SMTP session (RFC 5321, 1870, 2920, 3463,
 * 6152, 6531): the command table with the states each command is allowed
 * in, the policy gate, the DATA phase into the spool. */
#ifndef POSTHORN_SMTP_SESSION_H
#define POSTHORN_SMTP_SESSION_H

#include <stdbool.h>
#include <sys/socket.h>

struct runtime;
struct conf_server;
struct server_conn;
struct tls_server;

/* Take over the accepted socket fd.  rt is referenced for the session's
 * life; conn is owned by the caller's registry until server_conn_closed().
 * ts is the server's TLS layer (NULL without a certificate); with
 * implicit_tls the handshake comes first (RFC 8314). */
void smtp_session_start(struct runtime *rt, const struct conf_server *srv, struct tls_server *ts,
			bool implicit_tls, int fd, const struct sockaddr *peer, socklen_t peerlen,
			struct server_conn *conn);

#endif

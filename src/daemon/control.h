/* control: the daemon's control socket, <spool>/control.sock (UNIX, mode
 * 0600, the daemon's own user and root only), served on the event loop.
 * One command line per connection — LIST, SHOW ID, FLUSH, DELETE ID — and
 * one answer: "ok" or "error MESSAGE" on the first line, then text; then
 * the daemon closes.  `posthorn queue` (cmd_queue.c) is the client. */
#ifndef POSTHORN_CONTROL_H
#define POSTHORN_CONTROL_H

#include <stddef.h>
#include <sys/socket.h>
#include <sys/un.h>

struct event_base;
struct spool;

enum {
	CONTROL_LINE_MAX = 128,         /* a command line, LF included */
	CONTROL_MAX_CONNS = 8,          /* at once; more are closed at once */
	CONTROL_TIMEOUT = 10,           /* seconds to send the command */
	CONTROL_SHOW_HEADER_MAX = 64 * 1024, /* of a message's header, for SHOW */
};

#define CONTROL_SOCKET_NAME "control.sock"

/* Listen on <spool>/control.sock.  A stale socket (nobody answers) is
 * replaced; a live one means another daemon uses this spool: -1.  -1 with
 * a message in err. */
int control_start(struct event_base *base, struct spool *sp, char *err, size_t errsz);
/* Close every control connection, the listener, and remove the socket. */
void control_stop(void);

/* The address of the control socket of spool folder dir.  A path too long
 * for sun_path is reached through /proc/self/fd/N of the folder: *dirfd is
 * then that folder, to be closed by the caller after bind/connect (else
 * -1).  0, or -1 with errno. */
int control_address(const char *dir, struct sockaddr_un *sun, socklen_t *len, int *dirfd);

#endif

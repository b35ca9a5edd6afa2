/* server: the daemon — one libevent loop, the virtual servers' listeners,
 * accept with connection limits, configuration generations (SIGHUP reload
 * without dropping sessions), clean shutdown. */
#ifndef POSTHORN_SERVER_H
#define POSTHORN_SERVER_H

/* Run the daemon in the foreground until SIGTERM/SIGINT.  Exit status. */
int server_run(const char *conf_path);

#endif

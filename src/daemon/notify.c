/* notify: sd_notify(3) messages for a service manager (systemd.service(5),
 * Type=notify).  libsystemd sends each one as a datagram on a fresh
 * AF_UNIX socket to $NOTIFY_SOCKET (socket, sendmsg, close: calls the
 * seccomp filter of daemon/confine.c allows); with the variable unset it
 * sends nothing and the daemon runs as it always did, in the foreground. */
#include "daemon/notify.h"

#include <string.h>
#include <time.h>

#include <systemd/sd-daemon.h>

#include "lib/log.h"
#include "lib/util.h"

enum {
	NOTIFY_STATE_MAX = 256, /* the longest state below, with its numbers */
};

/* Send one state; a failure is logged (the service manager will time the
 * daemon out or miss a status, the mail keeps flowing). */
static void notify_send(const char *what, const char *state)
{
	int r = sd_notify(0, state);
	if (r < 0)
		log_warn("event=notify-failed state=%s error=\"%s\"", what, strerror(-r));
}

void notify_ready(size_t nservers)
{
	char state[NOTIFY_STATE_MAX];
	/* fits: fixed text and one number */
	xsnprintf(state, sizeof state, "READY=1\nSTATUS=serving %zu virtual server%s", nservers,
		  nservers == 1 ? "" : "s");
	notify_send("ready", state);
}

void notify_reloading(void)
{
	struct timespec now;
	if (clock_gettime(CLOCK_MONOTONIC, &now) < 0)
		now = (struct timespec){0}; /* CLOCK_MONOTONIC is always there */
	unsigned long long usec =
	    (unsigned long long)now.tv_sec * 1000000ull + (unsigned long long)now.tv_nsec / 1000ull;
	char state[NOTIFY_STATE_MAX];
	/* fits: fixed text and one number */
	xsnprintf(state, sizeof state,
		  "RELOADING=1\nMONOTONIC_USEC=%llu\nSTATUS=reloading the configuration", usec);
	notify_send("reloading", state);
}

void notify_reloaded(bool ok, size_t nservers)
{
	char state[NOTIFY_STATE_MAX];
	/* fits: fixed text and one number */
	if (ok)
		xsnprintf(state, sizeof state, "READY=1\nSTATUS=serving %zu virtual server%s",
			  nservers, nservers == 1 ? "" : "s");
	else
		xsnprintf(state, sizeof state,
			  "READY=1\nSTATUS=reload refused (see the log); serving %zu virtual "
			  "server%s with the old configuration",
			  nservers, nservers == 1 ? "" : "s");
	notify_send("ready", state);
}

void notify_stopping(void)
{
	notify_send("stopping", "STOPPING=1\nSTATUS=stopping: sessions get their goodbye");
}

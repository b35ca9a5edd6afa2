/* notify: the service manager's view of the daemon, by sd_notify(3)
 * (systemd's Type=notify): ready, reloading, stopping, and a status line.
 * Without $NOTIFY_SOCKET every call does nothing. */
#ifndef POSTHORN_NOTIFY_H
#define POSTHORN_NOTIFY_H

#include <stdbool.h>
#include <stddef.h>

/* Start-up is over: the listeners are bound and the spool's messages are
 * queued again.  READY=1 and "serving N virtual servers". */
void notify_ready(size_t nservers);

/* A reload (SIGHUP) begins: RELOADING=1 with the monotonic clock. */
void notify_reloading(void);

/* The reload is over, taken (ok) or refused (the old configuration
 * stays): READY=1 again and a status that says which. */
void notify_reloaded(bool ok, size_t nservers);

/* Shutdown begins: STOPPING=1. */
void notify_stopping(void);

#endif

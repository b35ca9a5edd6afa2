/* preflight: every check the daemon makes before it serves with a
 * configuration, in one place: `posthorn serve` runs it at start and at
 * each reload, `posthorn check` runs it alone, so that a configuration the
 * check passes is one the daemon accepts. */
#ifndef POSTHORN_PREFLIGHT_H
#define POSTHORN_PREFLIGHT_H

#include <stdio.h>

struct runtime;
struct spool;
struct event_base;

/* Load the configuration at conf_path as the daemon does (runtime_build:
 * the configuration, users, aliases, certificates and keys, resolvers),
 * then check what start-up needs besides: as root with run-as, that the
 * user exists and is not root, and that it may read every file the daemon
 * reads again after dropping privileges (configuration, users, aliases,
 * certificates, keys, the smarthost password); that the mailbox folder and,
 * when sp is NULL (the spool is yet to be opened), the spool folder exist
 * or can be made.  Every problem goes to err, one line each.  Returns the
 * generation (one reference), or NULL when there was any problem. */
struct runtime *preflight(const char *conf_path, struct spool *sp, struct event_base *base,
			  FILE *err);

/* preflight() for the daemon: each problem is logged as one
 * event=config-error line. */
struct runtime *preflight_load(const char *conf_path, struct spool *sp, struct event_base *base);

#endif

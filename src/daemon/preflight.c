/* preflight: what must hold before the daemon serves with a configuration
 * — the configuration and what is loaded with it, the run-as user and the
 * files it reads after the privilege drop, the spool and mailbox folders —
 * checked by one function for `posthorn serve` (at start and at reload)
 * and `posthorn check`, so the two can never disagree. */
#define _GNU_SOURCE
#include "daemon/preflight.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "conf/conf.h"
#include "daemon/privdrop.h"
#include "lib/log.h"
#include "lib/util.h"
#include "runtime/runtime.h"

/* ---- run-as ------------------------------------------------------------- */

/* Could uid, whose only group is gid (privdrop_to() leaves no other),
 * read a file of this owner and mode?  The permission bits as open(2)
 * applies them: the owner's, else the group's, else the others'. */
static bool preflight_mode_lets_read(const struct stat *st, uid_t uid, gid_t gid)
{
	if (st->st_uid == uid)
		return st->st_mode & S_IRUSR;
	if (st->st_gid == gid)
		return st->st_mode & S_IRGRP;
	return st->st_mode & S_IROTH;
}

/* what (e.g. "key") at path, which the daemon reads again after dropping
 * privileges: may the run-as user read it?  A file that is not there is
 * left to the check that reads it.  Returns the number of problems. */
static int preflight_readable(const char *what, const char *path, const struct conf_pos *pos,
			      const char *user, uid_t uid, gid_t gid, FILE *err)
{
	struct stat st;
	if (!path || stat(path, &st) < 0 || preflight_mode_lets_read(&st, uid, gid))
		return 0;
	if (pos)
		report(err, "%s:%u:%u: ", pos->file, pos->line, pos->col);
	report(err,
	       "%s %s cannot be read by the run-as user %s (owner uid %u, mode %04o), and "
	       "the daemon reads it again after dropping privileges; chown %s %s\n",
	       what, path, user, (unsigned)st.st_uid, (unsigned)(st.st_mode & 07777), user, path);
	return 1;
}

/* The certificate/key pairs of a tls or metrics-tls block. */
static int preflight_tls_files(const struct conf_tls *t, const char *u, uid_t uid, gid_t gid,
			       FILE *err)
{
	int n = 0;
	for (size_t i = 0; i < t->ncerts; i++) {
		const struct conf_cert *cc = &t->certs[i];
		n += preflight_readable("certificate", cc->certificate, &cc->pos, u, uid, gid, err);
		n += preflight_readable("key", cc->key, &cc->pos, u, uid, gid, err);
	}
	return n;
}

static int preflight_run_as_files(const struct conf *c, uid_t uid, gid_t gid, FILE *err)
{
	const char *u = c->run_as;
	int n = 0;
	for (size_t i = 0; i < c->nfiles; i++)
		n += preflight_readable("configuration file", c->files[i], NULL, u, uid, gid, err);
	if (c->ldap) { /* read again at each reload, and the CAs at each connection */
		n += preflight_readable("directory password file", c->ldap->bind_password_file,
					&c->ldap->pos, u, uid, gid, err);
		n += preflight_readable("directory CA file", c->ldap->ca, &c->ldap->pos, u, uid,
					gid, err);
	} else {
		n += preflight_readable("users file", c->users, NULL, u, uid, gid, err);
	}
	n += preflight_readable("aliases file", c->aliases, NULL, u, uid, gid, err);
	n += preflight_readable("smarthost password file", c->outbound.smarthost_secret, NULL, u,
				uid, gid, err);
	n += preflight_readable("metrics password file", c->metrics_password, NULL, u, uid, gid,
				err);
	for (size_t s = 0; s < c->nservers; s++) {
		n += preflight_tls_files(&c->servers[s].tls, u, uid, gid, err);
		/* GSSAPI reads it at every login */
		n += preflight_readable("keytab", c->servers[s].auth.keytab,
					&c->servers[s].auth.keytab_pos, u, uid, gid, err);
	}
	n += preflight_tls_files(&c->metrics_tls, u, uid, gid, err);
	for (size_t k = 0; k < c->ndkim_keys; k++) /* read again at each reload */
		n += preflight_readable("dkim key", c->dkim_keys[k].file, &c->dkim_keys[k].pos, u, uid,
					gid, err);
	return n;
}

/* Started as root with run-as, the daemon becomes that user after binding
 * (privdrop_to()); as anybody else it stays who it is. */
static int preflight_run_as(const struct conf *c, FILE *err)
{
	if (!c->run_as || geteuid() != 0)
		return 0;
	uid_t uid;
	gid_t gid;
	char why[256];
	if (privdrop_lookup(c->run_as, &uid, &gid, why, sizeof why) < 0) {
		report(err, "%s\n", why);
		return 1;
	}
	if (uid == 0) {
		report(err, "run-as: refusing to run as \"%s\" (uid 0)\n", c->run_as);
		return 1;
	}
	return preflight_run_as_files(c, uid, gid, err);
}

/* ---- folders ------------------------------------------------------------ */

/* The nearest of path and its ancestors that exists (caller frees), or
 * NULL with errno. */
static char *preflight_existing(const char *path)
{
	char *p = xstrdup(path);
	struct stat st;
	while (stat(p, &st) < 0) {
		if (errno != ENOENT && errno != ENOTDIR)
			break;
		char *up = path_dirname(p);
		bool top = strcmp(up, p) == 0; /* "/" or "." is not there either */
		free(p);
		p = up;
		if (top)
			break;
	}
	if (stat(p, &st) < 0) {
		int saved = errno;
		free(p);
		errno = saved;
		return NULL;
	}
	return p;
}

/* The folder what (e.g. "spool") at path exists, or mkdir -p can make it:
 * the nearest of path and its ancestors that exists is a folder this
 * process may write in.  Returns the number of problems. */
static int preflight_folder(const char *what, const char *path, FILE *err)
{
	char *p = preflight_existing(path);
	if (!p) {
		report(err, "%s %s: %s\n", what, path, strerror(errno));
		return 1;
	}
	const char *verb = strcmp(p, path) == 0 ? "used" : "made";
	struct stat st;
	int problems = 1;
	if (stat(p, &st) < 0)
		report(err, "%s %s: %s: %s\n", what, path, p, strerror(errno));
	else if (!S_ISDIR(st.st_mode))
		report(err, "%s %s cannot be %s: %s is not a folder\n", what, path, verb, p);
	else if (faccessat(AT_FDCWD, p, W_OK | X_OK, AT_EACCESS) < 0)
		report(err, "%s %s cannot be %s: %s: %s\n", what, path, verb, p, strerror(errno));
	else
		problems = 0;
	free(p);
	return problems;
}

/* ---- the check -------------------------------------------------------- */

struct runtime *preflight(const char *conf_path, struct spool *sp, struct event_base *base,
			  FILE *err)
{
	struct runtime *rt;
	int problems = runtime_build(conf_path, sp, base, err, &rt);
	if (!rt)
		return NULL;
	const struct conf *c = rt->conf;
	problems += preflight_run_as(c, err);
	if (!sp)
		problems += preflight_folder("spool", c->spool, err);
	problems += preflight_folder("mailboxes", c->mailboxes, err);
	if (problems) {
		runtime_unref(rt);
		return NULL;
	}
	return rt;
}

/* Each line of errs (changed in place) as one event=config-error line:
 * escaped, so that the '"' messages put around values cannot end the
 * message="..." value early; half a line is room for a long one. */
static void preflight_log_errors(char *errs)
{
	char msg[LOG_LINE_MAX / 2];
	char *save = NULL;
	for (char *line = errs ? strtok_r(errs, "\n", &save) : NULL; line;
	     line = strtok_r(NULL, "\n", &save))
		log_err("event=config-error message=\"%s\"",
			log_quote(msg, sizeof msg, line, strlen(line)));
}

struct runtime *preflight_load(const char *conf_path, struct spool *sp, struct event_base *base)
{
	char *errs = NULL;
	size_t errlen = 0;
	FILE *err = open_memstream(&errs, &errlen);
	if (!err)
		fatal("open_memstream: %s", strerror(errno));
	struct runtime *rt = preflight(conf_path, sp, base, err);
	/* the messages went through report(): a failed write shows here (and
	 * matters only when there are errors to tell) */
	int lost = fclose(err) == EOF ? errno : 0;
	if (!rt && lost)
		log_err("event=config-error message=\"cannot collect every error message: %s\"",
			strerror(lost));
	if (!rt)
		preflight_log_errors(errs);
	free(errs);
	if (rt)
		runtime_start_hosts(rt, runtime_current());
	return rt;
}

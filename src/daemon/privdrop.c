/* privdrop: the one function that drops root privileges, called after the
 * listeners are bound and before the first accept (Postfix chroot_uid.c,
 * vsftpd's SECURITY/DESIGN). */
#define _GNU_SOURCE
#include "daemon/privdrop.h"

#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "lib/util.h"

int privdrop_lookup(const char *user, uid_t *uid, gid_t *gid, char *err, size_t errsz)
{
	errno = 0;
	struct passwd *pw = getpwnam(user);
	if (!pw) {
		errfmt(err, errsz, "run-as: no such user \"%s\"", user);
		return -1;
	}
	*uid = pw->pw_uid;
	*gid = pw->pw_gid;
	return 0;
}

int privdrop_to(const char *user, uid_t uid, gid_t gid, char *err, size_t errsz)
{
	if (uid == 0) {
		errfmt(err, errsz, "run-as: refusing to run as \"%s\" (uid 0)", user);
		return -1;
	}
	/* order matters: groups first, while we still may change them */
	if (setgroups(1, &gid) < 0 || setresgid(gid, gid, gid) < 0 ||
	    setresuid(uid, uid, uid) < 0) {
		errfmt(err, errsz, "run-as %s: %s", user, strerror(errno));
		return -1;
	}
	uid_t ru, eu, su;
	gid_t rg, eg, sg;
	if (getresuid(&ru, &eu, &su) < 0 || getresgid(&rg, &eg, &sg) < 0 || ru != uid ||
	    eu != uid || su != uid || rg != gid || eg != gid || sg != gid) {
		errfmt(err, errsz, "run-as %s: ids did not change as asked", user);
		return -1;
	}
	gid_t groups[2];
	int ng = getgroups(2, groups);
	if (ng != 1 || groups[0] != gid) {
		errfmt(err, errsz, "run-as %s: supplementary groups were not dropped", user);
		return -1;
	}
	if (setuid(0) == 0 || (gid != 0 && setgid(0) == 0)) {
		errfmt(err, errsz, "run-as %s: root could be regained", user);
		return -1;
	}
	return 0;
}

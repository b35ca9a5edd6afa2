/* cmd_quota: `posthorn user quota ADDRESS [SIZE [MESSAGES] | none | default]`
 * (posthorn(8)): a user's quota (RFC 9208) and usage, and the user's own
 * limit in the users file. */
#ifndef POSTHORN_CMD_QUOTA_H
#define POSTHORN_CMD_QUOTA_H

/* argv[0] is ADDRESS, then nothing (show the limit and the usage), SIZE
 * [MESSAGES] (the user's own limit), none (no limit for this user) or
 * default (the configuration's `quota` again).  Returns the exit status:
 * 0 success, 1 an error (one "posthorn: ..." line on stderr), 2 bad
 * usage. */
int cmd_quota(const char *conf_path, int argc, char **argv);

#endif

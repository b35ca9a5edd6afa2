/* cmd_user: `posthorn user add|passwd|del ADDRESS`, `posthorn user list`
 * and `posthorn user test`, the administrator's interface to the user
 * database (posthorn(8)); with users in a directory, only `test`. */
#ifndef POSTHORN_CMD_USER_H
#define POSTHORN_CMD_USER_H

/* argv[0] is the sub-command ("add", "passwd", "del", "list", "test"), followed by
 * its arguments.  Returns the exit status: 0 success, 1 an error the user
 * can fix (one "posthorn: ..." line on stderr), 2 bad usage. */
int cmd_user(const char *conf_path, int argc, char **argv);

#endif

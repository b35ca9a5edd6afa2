/* cmd_vacation: `posthorn user vacation ADDRESS [on|off] [options]`, a
 * user's out-of-office reply (posthorn(8)), stored in the user's Maildir
 * (store/vacation.h) and sent by the daemon on delivery. */
#ifndef POSTHORN_CMD_VACATION_H
#define POSTHORN_CMD_VACATION_H

/* argv[0] is ADDRESS, then on|off (none: show the setting) and the
 * options.  Returns the exit status: 0 success, 1 an error the user can
 * fix (one "posthorn: ..." line on stderr), 2 bad usage. */
int cmd_vacation(const char *conf_path, int argc, char **argv);

#endif

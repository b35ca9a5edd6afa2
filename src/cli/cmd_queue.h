/* cmd_queue: `posthorn queue list|show ID|flush|delete ID` (posthorn(8)), the
 * administrator's view of the outbound queue, through the running daemon's
 * control socket (control.c). */
#ifndef POSTHORN_CMD_QUEUE_H
#define POSTHORN_CMD_QUEUE_H

/* argv[0] is the sub-command ("list", "show", "flush", "delete"), followed
 * by its arguments.  Returns the exit status: 0 success, 1 an error the user
 * can fix (one "posthorn: ..." line on stderr, e.g. the daemon is not
 * running), 2 bad usage. */
int cmd_queue(const char *conf_path, int argc, char **argv);

#endif

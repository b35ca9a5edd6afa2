/* cmd_dkim: `posthorn dkim new|sign|verify` (posthorn(8)): DKIM keys for
 * the dkim block, and signing and verifying a message file by hand. */
#ifndef POSTHORN_CMD_DKIM_H
#define POSTHORN_CMD_DKIM_H

/* argv[0] is the sub-command.  Exit status: 0 success (verify: every
 * signature passed), 1 an error or a signature that did not pass, 2 bad
 * usage. */
int cmd_dkim(const char *conf_path, int argc, char **argv);

/* `posthorn check-dns`: does each configured selector's TXT record hold
 * its key?  Prints what to publish when not; returns the number of
 * problems.  base and dns are the command's loop and resolver. */
struct conf;
struct event_base;
struct dns_resolver;
int check_dns_dkim(const struct conf *conf, struct event_base *base, struct dns_resolver *dns);

#endif

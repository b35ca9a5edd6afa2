/* check_spf: the `posthorn check-spf` command: what posthorn's SPF check
 * (RFC 7208) decides for a client address, a sender and a HELO name. */
#ifndef POSTHORN_CHECK_SPF_H
#define POSTHORN_CHECK_SPF_H

/* argv: IP SENDER HELO, or "-" alone: one "IP SENDER HELO" per line of
 * standard input.  Exit status 0 when every check ran, 2 on bad usage. */
int cmd_check_spf(const char *conf_path, int argc, char **argv);

#endif

/* check_dns: the `posthorn check-dns` command. */
#ifndef POSTHORN_CHECK_DNS_H
#define POSTHORN_CHECK_DNS_H

/* Exit status: 0 when every server's name resolves to its listen
 * addresses and those point back; 1 otherwise. */
int cmd_check_dns(const char *conf_path);

#endif

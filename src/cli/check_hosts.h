/* check_hosts: the host names of `allow host` / `deny host` rules in
 * `posthorn check`. */
#ifndef POSTHORN_CHECK_HOSTS_H
#define POSTHORN_CHECK_HOSTS_H

#include <stdio.h>

struct conf;

/* Looks every server's host names up now, with the DNS servers the daemon
 * would ask, and prints on out the addresses each stands for, and a
 * warning for each that resolves to none.  Returns the number of
 * warnings, or -1 when a resolver could not be made (the message is on
 * stderr). */
int check_hosts(const struct conf *conf, FILE *out);

#endif

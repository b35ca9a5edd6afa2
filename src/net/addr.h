/* addr: socket addresses as text. */
#ifndef POSTHORN_ADDR_H
#define POSTHORN_ADDR_H

#include <stddef.h>
#include <sys/socket.h>

/* Room for any addr_text(), its NUL included (INET6_ADDRSTRLEN). */
#define ADDR_TEXT_SIZE 46

/* Text form of a socket address without port ("127.0.0.1", "::1");
 * IPv4-mapped IPv6 addresses are shown as IPv4; "unknown" for any other
 * family.  out holds outsz >= ADDR_TEXT_SIZE bytes (less is a bug of the
 * caller, fatal): an address is never cut. */
void addr_text(const struct sockaddr *sa, char *out, size_t outsz);

#endif

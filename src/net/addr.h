/* addr: socket addresses as text. */
#ifndef POSTHORN_ADDR_H
#define POSTHORN_ADDR_H

#include <stddef.h>
#include <sys/socket.h>

/* Text form of a socket address without port ("127.0.0.1", "::1");
 * IPv4-mapped IPv6 addresses are shown as IPv4; "unknown" for any other
 * family or when out is too small. */
void addr_text(const struct sockaddr *sa, char *out, size_t outsz);

#endif

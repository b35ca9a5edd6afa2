/* addr: socket addresses as text. */
#include "net/addr.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include "lib/util.h"

void addr_text(const struct sockaddr *sa, char *out, size_t outsz)
{
	const void *a = NULL;
	int family = sa->sa_family;
	if (family == AF_INET) {
		a = &((const struct sockaddr_in *)sa)->sin_addr;
	} else if (family == AF_INET6) {
		const struct in6_addr *a6 = &((const struct sockaddr_in6 *)sa)->sin6_addr;
		if (IN6_IS_ADDR_V4MAPPED(a6)) {
			family = AF_INET;
			a = &a6->s6_addr[12];
		} else {
			a = a6;
		}
	}
	if (!a || !inet_ntop(family, a, out, (socklen_t)outsz))
		bsnprintf(out, outsz, "unknown");
}

/* addr: socket addresses as text. */
#include "net/addr.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include "lib/util.h"

_Static_assert(ADDR_TEXT_SIZE == INET6_ADDRSTRLEN, "ADDR_TEXT_SIZE is INET6_ADDRSTRLEN");

void addr_text(const struct sockaddr *sa, char *out, size_t outsz)
{
	if (outsz < ADDR_TEXT_SIZE)
		fatal("addr_text: %zu bytes cannot hold every address", outsz);
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
	/* with ADDR_TEXT_SIZE bytes inet_ntop() fails only for the family */
	if (!a || !inet_ntop(family, a, out, (socklen_t)outsz))
		xsnprintf(out, outsz, "unknown");
}

/* dirfilter: the text posthorn sends to and reads from an LDAP directory:
 * search filters made from the configured template with the address
 * escaped as RFC 4515 §3 requires, and an entry's address values (Active
 * Directory's proxyAddresses carry "smtp:"/"SMTP:" prefixes).  No I/O:
 * every function here can be fuzzed. */
#ifndef POSTHORN_DIRFILTER_H
#define POSTHORN_DIRFILTER_H

#include <stdbool.h>
#include <stddef.h>

#include "lib/strbuf.h"

enum {
	DIRFILTER_MAX = 4096,           /* bytes of one expanded filter */
	DIRFILTER_VALUE_MAX = 320,      /* an address value: 64 + '@' + 255 */
};

/* Append in[0..len) to sb escaped as an RFC 4515 §3 assertion value:
 * '*', '(', ')', '\\', NUL and every byte outside printable ASCII as \XX,
 * so that nothing in an address can change the filter's structure.
 * False (sb overflowed) when it does not fit. */
bool dirfilter_escape(struct strbuf *sb, const char *in, size_t len);

/* The template with %a (the address), %u (its local part), %d (its
 * domain), each escaped, and %% ('%').  address is len bytes (a NUL in it
 * is escaped too); its parts are cut at the last '@' (none: %d is empty).
 * False when the result would not fit in outsz bytes or the template has
 * another %-sequence: then nothing must be searched. */
bool dirfilter_expand(const char *tmpl, const char *address, size_t len, char *out,
		      size_t outsz);

/* An address attribute's value as an address: a "smtp:" prefix (any case,
 * Active Directory's primary "SMTP:" too) dropped, other "TYPE:" values
 * (x500:, sip:) and anything that is no address refused.  The result is
 * lower case in out.  False when the value is not an SMTP address. */
bool dirfilter_address_value(const char *value, size_t len, char *out, size_t outsz);

#endif

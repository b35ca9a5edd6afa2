/* libFuzzer entry point for dirfilter (auth/dirfilter.h): the untrusted
 * bytes of an address or user name put into an LDAP filter, and a value
 * read from the directory taken as an address.  The expanded filter must
 * keep exactly the template's structure (its '(', ')', '*' and no NUL:
 * RFC 4515 §3 escaping leaves none of the input's), and an accepted value
 * must be a valid address in lower case. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "auth/dirfilter.h"
#include "auth/userdb.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#include "harness.h"

static const char tmpl[] = "(&(objectClass=user)(|(mail=%a)(uid=%u)(dc=%d)(x=%%*)))";

static size_t count(const char *s, size_t n, char c)
{
	size_t k = 0;
	for (size_t i = 0; i < n; i++)
		k += s[i] == c;
	return k;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *in = (const char *)data;
	char out[DIRFILTER_MAX];
	if (dirfilter_expand(tmpl, in, size, out, sizeof out)) {
		size_t n = strlen(out);
		CHECK(n < sizeof out);
		CHECK(count(out, n, '(') == count(tmpl, sizeof tmpl - 1, '('));
		CHECK(count(out, n, ')') == count(tmpl, sizeof tmpl - 1, ')'));
		CHECK(count(out, n, '*') == 1);
	}
	char value[DIRFILTER_VALUE_MAX + 1];
	if (dirfilter_address_value(in, size, value, sizeof value)) {
		CHECK(userdb_check_address(value) == NULL);
		for (const char *p = value; *p; p++)
			CHECK(!(*p >= 'A' && *p <= 'Z'));
	}
	return 0;
}

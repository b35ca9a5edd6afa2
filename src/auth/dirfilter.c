/* dirfilter: RFC 4515 §3 escaping and filter templates for the directory
 * (auth/directory), and the reading of its address values. */
#include "auth/dirfilter.h"

#include <string.h>
#include <strings.h>

#include "auth/userdb.h"
#include "lib/util.h"

/* RFC 4515 §3: valueencoding escapes NUL, '(', ')', '*' and '\'; we also
 * escape every byte outside printable ASCII (UTF-8 stays exact: the
 * directory compares the bytes \XX stands for). */
static bool dirfilter_needs_escape(unsigned char c)
{
	return c < 0x20 || c >= 0x7f || c == '*' || c == '(' || c == ')' || c == '\\';
}

bool dirfilter_escape(struct strbuf *sb, const char *in, size_t len)
{
	static const char hex[] = "0123456789abcdef";
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)in[i];
		bool ok;
		if (dirfilter_needs_escape(c)) {
			char esc[3] = {'\\', hex[c >> 4], hex[c & 15]};
			ok = strbuf_add(sb, esc, sizeof esc);
		} else {
			ok = strbuf_addc(sb, (char)c);
		}
		if (!ok)
			return false;
	}
	return true;
}

bool dirfilter_expand(const char *tmpl, const char *address, size_t len, char *out,
		      size_t outsz)
{
	struct strbuf sb;
	strbuf_init(&sb, out, outsz);
	const char *at = NULL;
	for (size_t i = 0; i < len; i++)
		if (address[i] == '@')
			at = address + i;
	size_t local_len = at ? (size_t)(at - address) : len;
	const char *domain = at ? at + 1 : address + len;
	size_t domain_len = (size_t)(address + len - domain);
	for (const char *t = tmpl; *t; t++) {
		if (*t != '%') {
			(void)strbuf_addc(&sb, *t);
			continue;
		}
		switch (*++t) {
		case 'a':
			(void)dirfilter_escape(&sb, address, len);
			break;
		case 'u':
			(void)dirfilter_escape(&sb, address, local_len);
			break;
		case 'd':
			(void)dirfilter_escape(&sb, domain, domain_len);
			break;
		case '%':
			(void)strbuf_addc(&sb, '%');
			break;
		default: /* the configuration allows no other (conf.c) */
			return false;
		}
	}
	return strbuf_ok(&sb);
}

bool dirfilter_address_value(const char *value, size_t len, char *out, size_t outsz)
{
	const char *colon = memchr(value, ':', len);
	if (colon) {
		if ((size_t)(colon - value) != 4 || strncasecmp(value, "smtp", 4) != 0)
			return false; /* x500:, sip:, X400: ... are no mail addresses */
		len -= 5;
		value += 5;
	}
	if (len == 0 || len >= outsz || len > DIRFILTER_VALUE_MAX || memchr(value, '\0', len))
		return false;
	memcpy(out, value, len);
	out[len] = '\0';
	if (userdb_check_address(out) != NULL)
		return false;
	(void)str_lower(out);
	return true;
}

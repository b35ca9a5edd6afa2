/* imap_utf8: RFC 6855 UTF8=ACCEPT: mailbox names between the client's
 * UTF-8 and the store's modified UTF-7 (imap_utf7.c). */
#include "proto/imap/imap_utf8.h"

#include <stdlib.h>

#include "lib/util.h"
#include "proto/imap/imap_context.h"

void imap_utf8_enable(struct imap_session *s)
{
	s->utf8 = true;
	imap_parser_set_utf8(s->parser, true);
}

const char *imap_utf8_name_in(struct imap_session *s, const char *name, size_t slot)
{
	if (!s->utf8)
		return name;
	char utf7[IMAP_UTF7_NAME_SIZE];
	if (!imap_utf7_encode(name, utf7, sizeof utf7))
		return NULL;
	slot %= ARRAY_LEN(s->utf8_names);
	free(s->utf8_names[slot]);
	s->utf8_names[slot] = xstrdup(utf7);
	return s->utf8_names[slot];
}

/* RFC 6855 §3: after ENABLE UTF8=ACCEPT a quoted string may hold UTF-8;
 * a name with 8-bit octets is sent quoted, not as a literal. */
static void imap_utf8_put_quoted(struct imap_out *out, const char *name)
{
	imap_out_add(out, "\"", 1);
	for (const char *p = name; *p; p++) {
		if (*p == '"' || *p == '\\')
			imap_out_add(out, "\\", 1);
		imap_out_add(out, p, 1);
	}
	imap_out_add(out, "\"", 1);
}

void imap_utf8_put_mailbox(const struct imap_session *s, struct imap_out *out, const char *name)
{
	char utf8[IMAP_UTF7_NAME_SIZE];
	if (!s->utf8 || !imap_utf7_decode(name, utf8, sizeof utf8)) {
		imap_put_mailbox(out, name);
		return;
	}
	bool ascii = true;
	for (const char *p = utf8; ascii && *p; p++)
		ascii = (unsigned char)*p < 0x80;
	if (ascii) /* an atom when it can be, as always */
		imap_put_mailbox(out, utf8);
	else /* decoded: no CR, LF or NUL, and short */
		imap_utf8_put_quoted(out, utf8);
}

void imap_utf8_free(struct imap_session *s)
{
	for (size_t i = 0; i < ARRAY_LEN(s->utf8_names); i++) {
		free(s->utf8_names[i]);
		s->utf8_names[i] = NULL;
	}
}

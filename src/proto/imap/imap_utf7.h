/* imap_utf7: mailbox names between the store's modified UTF-7 (RFC 3501
 * §5.1.3) and the UTF-8 a client uses after ENABLE UTF8=ACCEPT (RFC 6855
 * §3: mailbox names are UTF-8 on the wire then).  Pure functions. */
#ifndef POSTHORN_IMAP_UTF7_H
#define POSTHORN_IMAP_UTF7_H

#include <stdbool.h>
#include <stddef.h>

/* The capability word and the ENABLE argument. */
#define IMAP_UTF8_ACCEPT "UTF8=ACCEPT"

/* Room for a converted mailbox name: MAILBOX_NAME_MAX octets of modified
 * UTF-7 are at most this many of UTF-8, and a longer name is no name. */
enum { IMAP_UTF7_NAME_SIZE = 1024 };

/* The modified UTF-7 of UTF-8 text in, into out (outsz octets, NUL
 * included); false when in is not valid UTF-8 (RFC 3629: no overlong
 * form, no surrogate, nothing above U+10FFFF) or the result does not
 * fit. */
bool imap_utf7_encode(const char *in, char *out, size_t outsz);
/* The UTF-8 of modified UTF-7 in, into out; false when in is not valid
 * modified UTF-7 (8-bit octets, a bad base64 run, a printable ASCII
 * character or a lone surrogate encoded, "&" not ended by "-", a run
 * right after another: one name has one encoding) or the result does not
 * fit. */
bool imap_utf7_decode(const char *in, char *out, size_t outsz);

#endif

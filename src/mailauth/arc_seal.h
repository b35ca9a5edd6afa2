/* arc_seal: the ARC set (RFC 8617 §5.1) posthorn adds to mail it
 * forwards: ARC-Authentication-Results (our Authentication-Results
 * field's results), ARC-Message-Signature (relaxed/relaxed, the header
 * fields posthorn's DKIM signatures cover) and ARC-Seal, instance i one
 * above the chain the message brings. */
#ifndef POSTHORN_ARC_SEAL_H
#define POSTHORN_ARC_SEAL_H

#include <stddef.h>
#include <time.h>

#include "mailauth/arc.h"

struct dkim_privkey;
struct dkim_sign;

enum { ARC_SEAL_MAX = 3 * 4096 }; /* bytes of the three fields */

/* The result our Authentication-Results field gives for "arc" (RFC 8617
 * §10.1): the topmost field of the header section whose authserv-id is
 * authserv_id.  0 and *out; -1 when there is no such field or it has no
 * arc result. */
int arc_our_result(const struct dkim_header *h, const char *authserv_id, enum arc_status *out);

/* The new ARC set for the message fed whole to s (CRLF line ends), made
 * with key in the name of authserv_id: a new string of the three fields,
 * each ending CRLF, to go on top of the message.  cv= is none when the
 * message brings no chain, else our Authentication-Results field's arc=
 * result.  NULL with the reason in err when it cannot be sealed: the
 * chain it brings is broken (a set incomplete, the latest seal saying
 * cv=fail, ...), or has 50 sets, or was not validated here; the header is
 * too large; signing failed. */
char *arc_seal(struct dkim_sign *s, const struct dkim_privkey *key, const char *authserv_id,
	       time_t now, char *err, size_t errsz);

#endif

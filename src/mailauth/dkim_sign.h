/* dkim_sign: DKIM signatures (RFC 6376 §5) made by posthorn: rsa-sha256
 * and ed25519-sha256 (RFC 8463), relaxed/relaxed, one per key of the From
 * domain, the From field over-signed (named once more than it appears, so
 * that no From can be added, §8.15).  The message is fed in pieces; the
 * result is the DKIM-Signature fields to put before it. */
#ifndef POSTHORN_DKIM_SIGN_H
#define POSTHORN_DKIM_SIGN_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

struct dkim_privkey;
struct dkim_sign;

enum { DKIM_SIGNATURE_MAX = 4096 }; /* bytes of one DKIM-Signature field */

struct dkim_sign *dkim_sign_new(void);
/* Message bytes (CRLF line ends), in order, in pieces of any size. */
void dkim_sign_feed(struct dkim_sign *s, const void *data, size_t len);
/* The DKIM-Signature fields (each ending CRLF) for every key of keys[]
 * whose domain is the From domain: a new string; or NULL with the reason
 * in err (no single From with a domain, no key for it, header section too
 * large, a signing failure). */
char *dkim_sign_finish(struct dkim_sign *s, const struct dkim_privkey *keys, size_t nkeys,
		       time_t now, char *err, size_t errsz);
void dkim_sign_free(struct dkim_sign *s);

/* Has the header section been fed whole (the body begun)? */
bool dkim_sign_header_done(const struct dkim_sign *s);

/* The From domain of the message fed so far (its header section must be
 * complete) into out; 0 or -1 (see dkim_from_domain). */
int dkim_sign_from_domain(struct dkim_sign *s, char *out, size_t outsz);

#endif

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

#include <openssl/evp.h>

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

/* ---- the parts ARC (RFC 8617 §5.1) signs with as well ---------------------------- */

struct dkim_header;
struct strbuf;


/* The header section fed, cut into fields; NULL when too large or
 * malformed.  Owned by s. */
const struct dkim_header *dkim_sign_header(struct dkim_sign *s);
/* The relaxed body hash (SHA-256, base64) once the whole message is fed;
 * made once, owned by s; NULL on failure. */
const char *dkim_sign_body_hash(struct dkim_sign *s);
/* The h= list posthorn signs for this header into sb (false: too long). */
bool dkim_sign_h_list(const struct dkim_header *h, struct strbuf *sb);
/* The fields hlist names, relaxed, into md (from the bottom, §5.4.2). */
void dkim_sign_hash_fields(const struct dkim_header *h, const char *hlist, EVP_MD_CTX *md);
/* Sign a field: head is the field up to and including "b=" (relaxed
 * canonicalisation, §3.7), fields_md the hash of what comes before it
 * (copied, not changed); head, the folded b= value and CRLF are appended
 * to out.  0, or -1 (signing failed, out full). */
int dkim_sign_field(const struct dkim_privkey *k, const char *head, size_t head_len,
		    EVP_MD_CTX *fields_md, struct strbuf *out);

#endif

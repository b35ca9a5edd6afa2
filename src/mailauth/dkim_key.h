/* dkim_key: DKIM keys — the private keys posthorn signs with (PEM files,
 * RSA of 2048 bits or more, Ed25519 of RFC 8463), the key records
 * published in DNS (RFC 6376 §3.6.1) made from them and parsed from
 * untrusted TXT answers, and new keys for `posthorn dkim new`. */
#ifndef POSTHORN_DKIM_KEY_H
#define POSTHORN_DKIM_KEY_H

#include <stdbool.h>
#include <stddef.h>

#include <openssl/evp.h>

enum dkim_key_type { DKIM_KEY_RSA, DKIM_KEY_ED25519 };

enum {
	DKIM_RSA_SIGN_BITS_MIN = 2048,  /* posthorn signs with no less */
	DKIM_RSA_VERIFY_BITS_MIN = 1024, /* RFC 8301 §3.2: shorter keys fail */
	DKIM_RSA_BITS_MAX = 8192,       /* longer keys are not verified (cost) */
	DKIM_RSA_NEW_BITS = 2048,       /* `posthorn dkim new` */
	DKIM_KEY_RECORD_MAX = 4096,     /* a key record we read or print */
};

/* A private key with its domain and selector (the signer's d= and s=). */
struct dkim_privkey {
	char *domain;           /* lower case */
	char *selector;
	enum dkim_key_type type;
	unsigned bits;
	EVP_PKEY *pkey;
};

/* Load the PEM private key at path.  0, or -1 with the reason in err (no
 * such file, unreadable, not a key, RSA shorter than 2048 bits, another
 * kind of key). */
int dkim_privkey_load(const char *path, const char *domain, const char *selector,
		      struct dkim_privkey *out, char *err, size_t errsz);
void dkim_privkey_clear(struct dkim_privkey *k);

/* A new key of that type (RSA: DKIM_RSA_NEW_BITS); NULL on failure. */
EVP_PKEY *dkim_key_generate(enum dkim_key_type type);

/* The key record to publish for a private or public key:
 * "v=DKIM1; k=rsa; p=..." — a new string, or NULL (not RSA/Ed25519). */
char *dkim_key_record(EVP_PKEY *pkey);

const char *dkim_key_type_name(enum dkim_key_type t);

/* A key record read from DNS (§3.6.1). */
struct dkim_pubkey {
	enum dkim_key_type type;
	EVP_PKEY *pkey;         /* NULL when revoked (empty p=) */
	unsigned bits;          /* RSA modulus bits; 256 for Ed25519 */
	bool testing;           /* t=y */
	bool strict_identity;   /* t=s: i= must be d= itself */
	bool sha256_ok;         /* h= absent or listing sha256 */
};

/* Parse one TXT record's text.  0; or -1 with the reason in err (syntax,
 * v= not DKIM1, unknown k=, service s= not email, p= not a key). */
int dkim_pubkey_parse(const char *text, size_t len, struct dkim_pubkey *out, char *err,
		      size_t errsz);
void dkim_pubkey_clear(struct dkim_pubkey *k);

/* Does sig (siglen bytes) sign the SHA-256 digest with pkey, a key of
 * type t?  RSASSA-PKCS1-v1_5 (RFC 6376 §3.3.1) or PureEdDSA over the
 * digest (RFC 8463 §3). */
bool dkim_key_verify_digest(EVP_PKEY *pkey, enum dkim_key_type t, const unsigned char *sig,
			    size_t siglen, const unsigned char *digest, size_t dlen);

/* A key record's key checked for a signature of type want and the
 * signature verified (ARC, RFC 8617 §5.2, judges keys as DKIM does):
 * true, or false with the reason in why. */
bool dkim_pubkey_verify(const struct dkim_pubkey *k, enum dkim_key_type want,
			const unsigned char *sig, size_t siglen, const unsigned char *digest,
			size_t dlen, char *why, size_t whysz);

/* Do the two keys have the same public part? */
bool dkim_key_same_public(EVP_PKEY *a, EVP_PKEY *b);

#endif

/* acme_jws: the cryptography of an ACME client (RFC 8555) — the account
 * key (ECDSA P-256), its JWK and thumbprint (RFC 7638), requests signed
 * as flattened JWS with ES256 (RFC 7515, RFC 7518 §3.4), the key
 * authorization of a challenge (RFC 8555 §8.1), and a certificate's key
 * and certificate signing request (RFC 2986).  No I/O but the key file. */
#ifndef POSTHORN_ACME_JWS_H
#define POSTHORN_ACME_JWS_H

#include <stdbool.h>
#include <stddef.h>

#include <openssl/evp.h>

/* base64url without padding (RFC 7515 §2) of n bytes: a new string. */
char *acme_b64url(const unsigned char *data, size_t n);

/* The account key at path, or a new one written there (mode 0600, O_EXCL)
 * when there is none.  NULL with the reason in err. */
EVP_PKEY *acme_account_key(const char *path, char *err, size_t errsz);

/* The public JWK of an ECDSA P-256 key, members in the order RFC 7638 §3
 * wants for the thumbprint: {"crv":"P-256","kty":"EC","x":"...","y":"..."}.
 * A new string, or NULL. */
char *acme_jwk(EVP_PKEY *key);

/* base64url(SHA-256(JWK)) (RFC 7638): a new string, or NULL. */
char *acme_thumbprint(EVP_PKEY *key);

/* "TOKEN.THUMBPRINT" (RFC 8555 §8.1): a new string, or NULL. */
char *acme_key_authorization(const char *token, EVP_PKEY *key);

/* The body of a request to url (RFC 8555 §6.2): a flattened JWS JSON
 * object, alg ES256, with nonce and url in the protected header and
 * either kid (the account URL) or, without one, the jwk.  payload NULL is
 * a POST-as-GET (empty payload).  A new string, or NULL. */
char *acme_jws(EVP_PKEY *key, const char *kid, const char *nonce, const char *url,
	       const char *payload);

/* A new ECDSA P-256 key for a certificate and a CSR for names (the first
 * also the subject's CN, every one a subjectAltName dNSName), as
 * base64url DER for the finalize request (RFC 8555 §7.4).  The key in
 * *key (the caller frees it).  NULL with the reason in err. */
char *acme_csr(const char *const *names, size_t nnames, EVP_PKEY **key, char *err,
	       size_t errsz);

/* PEM (PKCS#8) of key in a new string, or NULL. */
char *acme_key_pem(EVP_PKEY *key);

#endif

/* acme_alpn: the server side of the ACME tls-alpn-01 challenge (RFC 8737).
 * While an order is under way, the ACME client publishes, for each name,
 * the key authorization; a TLS client whose ClientHello offers only the
 * ALPN protocol "acme-tls/1" and names one of them (SNI) is given a
 * self-signed certificate for that name carrying the critical
 * id-pe-acmeIdentifier extension (SHA-256 of the key authorization), and
 * the connection is closed after the handshake.  Thread-safe: publishing
 * happens on the ACME worker, handshakes on the loop. */
#ifndef POSTHORN_ACME_ALPN_H
#define POSTHORN_ACME_ALPN_H

#include <stdbool.h>
#include <stddef.h>

#include <openssl/ssl.h>

#define ACME_ALPN_PROTOCOL "acme-tls/1"

/* Make and publish the challenge certificate for name.  0, or -1 with the
 * reason in err (the table is full, OpenSSL failed). */
int acme_alpn_publish(const char *name, const char *key_authorization, char *err, size_t errsz);
/* Withdraw every published certificate. */
void acme_alpn_clear(void);

/* From a client hello callback: when the hello offers only acme-tls/1
 * and names a published name, ssl gets that certificate and is marked as
 * a validation: returns 1.  0 when the hello is not a validation; -1 when
 * it is one for a name nothing is published for (refuse the handshake). */
int acme_alpn_hello(SSL *ssl);

/* Was ssl marked by acme_alpn_hello()? */
bool acme_alpn_is_validation(const SSL *ssl);

/* The DER ClientHello extension parsers (RFC 6066 §3, RFC 7301 §3.1),
 * exposed for tests: the host name of a server_name extension into out
 * (false when none or malformed); whether an ALPN extension lists exactly
 * one protocol, acme-tls/1. */
bool acme_alpn_sni(const unsigned char *ext, size_t len, char *out, size_t outsz);
bool acme_alpn_only_acme(const unsigned char *ext, size_t len);

#endif

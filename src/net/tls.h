/* tls: OpenSSL 3 contexts for the virtual servers (the `tls` block of posthorn.conf(5)):
 * certificate/key pairs chosen by SNI, the cipher policy, minimum version
 * and bits, ALPN cross-protocol defence (ALPACA), and the words that
 * describe a negotiated session for logs and Received: headers.  One layer
 * for SMTP, POP3 and IMAP alike. */
#ifndef POSTHORN_TLS_H
#define POSTHORN_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include <openssl/ssl.h>

struct conf_tls;

struct tls_server;

/* Build the contexts of one virtual server: every certificate/key pair of
 * tls (the first is the default; SNI picks another whose certificate covers
 * the name; with strict_sni a name no certificate covers is refused),
 * minimum version, forward-secret AEAD ciphers only for TLS 1.2, TLS 1.3
 * suites as OpenSSL offers them, all filtered by min_bits; no compression,
 * no renegotiation, no session tickets that outlive a reload.  protocol is
 * the ALPN name ("smtp", "pop3", "imap"): a client whose ALPN list names
 * only other protocols is refused during the handshake.  Returns NULL with
 * a message in err (unreadable file, key not matching certificate...). */
struct tls_server *tls_server_new(const struct conf_tls *tls, const char *protocol, char *err,
				  size_t errsz);
/* Drop the caller's reference.  SSLs made by tls_server_ssl() hold their
 * own, so a reload may free the old server while its sessions go on; the
 * contexts go when the last of those SSLs is freed.  NULL is ignored. */
void tls_server_free(struct tls_server *ts);

/* A new server-side SSL for one connection (NULL on allocation failure).
 * The caller owns it: SSL_free(), or a bufferevent made with
 * BEV_OPT_CLOSE_ON_FREE frees it. */
SSL *tls_server_ssl(struct tls_server *ts);

/* After the handshake: does the session meet the policy (bits)?  false with
 * the reason in why. */
bool tls_session_acceptable(SSL *ssl, const struct conf_tls *tls, char *why, size_t whysz);

/* Room for any tls_describe() text. */
#define TLS_DESCRIBE_MAX 128

/* "TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)"; truncated
 * (still terminated) when out is too small. */
void tls_describe(SSL *ssl, char *out, size_t outsz);

/* `posthorn check`: every certificate/key pair of tls readable, parseable
 * and matching; errors are printed as "FILE:LINE:COL: message" using the
 * pair's position, warnings (expired, expiring within 30 days, a name
 * that does not cover hostname) as "warning: ...".  Returns the number of
 * errors. */
int tls_check_files(const struct conf_tls *tls, const char *hostname, FILE *errout,
		    FILE *warnout);

/* `posthorn cert new --hostname H --out DIR [--rsa BITS]`: writes
 * DIR/H.key (mode 0600; ECDSA P-256, or RSA of BITS), DIR/H.crt (self-signed,
 * subjectAltName DNS:H, valid one year) and DIR/H.csr.  Exit status. */
int cmd_cert(int argc, char **argv);

#endif

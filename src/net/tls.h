/* tls: OpenSSL 3 contexts for the virtual servers (the `tls` block of posthorn.conf(5)):
 * certificate/key pairs chosen by SNI, an RSA and an ECDSA one side by side
 * for a name, the cipher policy, minimum version
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

/* The name in the self-signed stand-in that "certificate acme" serves
 * until the CA has issued the real certificate. */
#define TLS_ACME_PENDING_NAME "acme-pending.invalid"

/* Build the contexts of one virtual server: every certificate/key pair of
 * tls, in order.  Pairs whose certificates name the same hosts share one
 * context, one pair per key type (an RSA and an ECDSA certificate side by
 * side; each client gets one it supports); pairs for other names get
 * contexts of their own, chosen by SNI (the first is the default; with
 * strict_sni a name no certificate covers is refused).  Minimum version,
 * ECDHE with AEAD ciphers only for TLS 1.2, TLS 1.3 suites as OpenSSL
 * offers them, all filtered by min_bits; no compression, no renegotiation,
 * no session tickets that outlive a reload.  protocol is the ALPN name
 * ("smtp", "pop3", "imap"): a client whose ALPN list names only other
 * protocols is refused during the handshake.  Returns NULL after printing
 * every problem as "FILE:LINE:COL: message" on errout (unreadable file, key
 * not matching its certificate, a second certificate of one key type for
 * the same names...). */
struct tls_server *tls_server_new(const struct conf_tls *tls, const char *protocol,
				  FILE *errout);
/* Drop the caller's reference.  SSLs made by tls_server_ssl() hold their
 * own, so a reload may free the old server while its sessions go on; the
 * contexts go when the last of those SSLs is freed.  NULL is ignored. */
void tls_server_free(struct tls_server *ts);
/* Another reference to ts, for a holder that outlives the generation that
 * built it; dropped with tls_server_free(). */
struct tls_server *tls_server_ref(struct tls_server *ts);

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

/* `posthorn check`, once tls_server_new() has accepted tls: a line per
 * certificate/key pair of server (key type and size, subject, names,
 * expiry) and warnings (expired, expiring within 30 days, not valid yet, a
 * default certificate that does not cover hostname) on out.  A certificate
 * that cannot be read again is an error on errout; returns their number. */
int tls_report(const struct conf_tls *tls, const char *server, const char *hostname,
	       FILE *errout, FILE *out);

/* `posthorn cert new --hostname H --out DIR [--rsa BITS]`: writes
 * DIR/H.key (mode 0600; ECDSA P-256, or RSA of BITS), DIR/H.crt (self-signed,
 * subjectAltName DNS:H, valid one year) and DIR/H.csr.  Exit status. */
int cmd_cert(int argc, char **argv);

#endif

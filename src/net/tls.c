/* tls: the OpenSSL 3 side of every encrypted listener — implicit TLS
 * (RFC 8314) and STARTTLS (RFC 3207) share these contexts: certificates
 * chosen by SNI (RFC 6066 §3) and by the client's signature algorithms
 * (RFC 8446 §4.4.2.2) or suites, the cipher and version policy, ALPN (RFC 7301)
 * as the ALPACA cross-protocol defence, and `posthorn cert new`. */
#define _GNU_SOURCE
#include "net/tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "conf/conf.h"
#include "lib/strbuf.h"
#include "net/acme_alpn.h"
#include "lib/util.h"

/* TLS 1.2: forward secrecy by ECDHE and AEAD (AES-GCM, ChaCha20-Poly1305)
 * only, AES-256 first; never anonymous, PSK, SRP or static RSA, and no
 * finite-field DHE: its modular exponentiation costs the server several
 * times an ECDHE handshake, a cost any client can make it pay (the
 * D(HE)at attack, CVE-2002-20001). */
static const char tls_ciphers_12[] =
    "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL:!PSK:!SRP:!DSS:!kRSA:!kDHE";
/* TLS 1.3: the suites OpenSSL offers by default, strongest first. */
static const char tls_ciphers_13[] =
    "TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256";
/* Key exchange groups, TLS 1.2 and 1.3 alike: elliptic curves only, no
 * ffdhe (RFC 7919) group. */
static const char tls_groups[] = "X25519:P-256:P-384";

enum {
	TLS_EXPIRY_WARN_DAYS = 30,
	CERT_VALID_DAYS = 365,
	CERT_RSA_MIN_BITS = 2048,
	CERT_RSA_MAX_BITS = 8192,
	CERT_SERIAL_BYTES = 16,   /* 128 random bits (CA/B BR 7.1 asks for 64+) */
	CERT_CN_MAX = 64,         /* ub-common-name, RFC 5280 appendix A */
	CERT_EXIT_OK = 0,
	CERT_EXIT_ERROR = 1,
	CERT_EXIT_USAGE = 2,
};

/* The contexts of one virtual server.  Every SSL made by tls_server_ssl()
 * holds a reference (SSL ex_data), so a reload may free the server while
 * its sessions still run: the callbacks below read it until the last SSL
 * is gone. */
struct tls_server {
	SSL_CTX **ctxs;          /* one per set of names (its RSA and ECDSA pairs); [0] is
				  * the default */
	size_t nctxs;
	char *protocol;          /* ALPN name, or NULL: no ALPN check */
	bool strict_sni;
	int refs;
};

/* ---- errors ------------------------------------------------------------ */

/* The first reason OpenSSL queued (the cause; later ones are the layers
 * that passed it up, "PEM lib"), then an empty queue: a stale error would
 * otherwise be mistaken for the next operation's. */
static const char *tls_openssl_reason(void)
{
	unsigned long e = ERR_peek_error();
	const char *r = e ? ERR_reason_error_string(e) : NULL;
	ERR_clear_error();
	return r ? r : "unknown OpenSSL error";
}

/* ---- the server object and its reference count ------------------------- */

static int tls_ex_index = -1;
static CRYPTO_ONCE tls_ex_once = CRYPTO_ONCE_STATIC_INIT;

static void tls_server_unref(struct tls_server *ts);

static void tls_ex_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl,
			void *argp)
{
	if (ptr)
		tls_server_unref(ptr);
}

/* SSL_dup() copies ex_data: the copy holds its own reference. */
static int tls_ex_dup(CRYPTO_EX_DATA *to, const CRYPTO_EX_DATA *from, void **from_d, int idx,
		      long argl, void *argp)
{
	struct tls_server *ts = *from_d;
	if (ts)
		__atomic_add_fetch(&ts->refs, 1, __ATOMIC_RELAXED);
	return 1;
}

static void tls_ex_init(void)
{
	tls_ex_index = CRYPTO_get_ex_new_index(CRYPTO_EX_INDEX_SSL, 0, NULL, NULL, tls_ex_dup,
					       tls_ex_free);
}

static bool tls_ex_ready(void)
{
	return CRYPTO_THREAD_run_once(&tls_ex_once, tls_ex_init) && tls_ex_index >= 0;
}

static void tls_server_unref(struct tls_server *ts)
{
	if (__atomic_sub_fetch(&ts->refs, 1, __ATOMIC_ACQ_REL) > 0)
		return;
	for (size_t i = 0; i < ts->nctxs; i++)
		SSL_CTX_free(ts->ctxs[i]);
	free(ts->ctxs);
	free(ts->protocol);
	free(ts);
}

void tls_server_free(struct tls_server *ts)
{
	if (ts)
		tls_server_unref(ts);
}

struct tls_server *tls_server_ref(struct tls_server *ts)
{
	__atomic_add_fetch(&ts->refs, 1, __ATOMIC_RELAXED);
	return ts;
}

/* ---- loading a certificate/key pair ------------------------------------ */

static int tls_passphrase_refused(char *buf, int size, int rwflag, void *u)
{
	*(bool *)u = true;
	return -1;              /* never prompt: the daemon has no terminal */
}

/* Read the private key at path, refusing one that group or others may
 * access.  The mode is checked on the descriptor that is read, not on the
 * name, so the file cannot be swapped in between. */
static EVP_PKEY *tls_key_load(const char *path, char *err, size_t errsz)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		errfmt(err, errsz, "key %s: %s", path, strerror(errno));
		return NULL;
	}
	struct stat st;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		errfmt(err, errsz, "key %s: not a regular file", path);
		close(fd);
		return NULL;
	}
	if (st.st_mode & 077) {
		errfmt(err, errsz, "key %s may be read by group or others (mode %04o); chmod 600 it",
			path, (unsigned)(st.st_mode & 07777));
		close(fd);
		return NULL;
	}
	FILE *f = fdopen(fd, "r");
	if (!f) {
		errfmt(err, errsz, "key %s: %s", path, strerror(errno));
		close(fd);
		return NULL;
	}
	bool asked = false;
	EVP_PKEY *key = PEM_read_PrivateKey(f, NULL, tls_passphrase_refused, &asked);
	(void)fclose(f); /* read only: the key is in memory or not */
	if (!key && asked) {
		ERR_clear_error();
		errfmt(err, errsz, "key %s is protected by a passphrase; posthorn needs it unencrypted",
			path);
	} else if (!key) {
		errfmt(err, errsz, "key %s: not a PEM private key (%s)", path, tls_openssl_reason());
	}
	return key;
}

/* The certificate chain (leaf first) and the key of one pair into ctx. */
static int tls_ctx_load_pair(SSL_CTX *ctx, const struct conf_cert *cc, char *err, size_t errsz)
{
	int fd = open(cc->certificate, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		errfmt(err, errsz, "certificate %s: %s", cc->certificate, strerror(errno));
		return -1;
	}
	close(fd);
	if (SSL_CTX_use_certificate_chain_file(ctx, cc->certificate) != 1) {
		errfmt(err, errsz, "certificate %s: %s", cc->certificate, tls_openssl_reason());
		return -1;
	}
	EVP_PKEY *key = tls_key_load(cc->key, err, errsz);
	if (!key)
		return -1;
	int r = -1;
	if (X509_check_private_key(SSL_CTX_get0_certificate(ctx), key) != 1)
		errfmt(err, errsz, "key %s does not match certificate %s (%s)", cc->key,
			cc->certificate, tls_openssl_reason());
	else if (SSL_CTX_use_PrivateKey(ctx, key) != 1 || SSL_CTX_check_private_key(ctx) != 1)
		errfmt(err, errsz, "key %s: %s", cc->key, tls_openssl_reason());
	else
		r = 0;
	EVP_PKEY_free(key);
	return r;
}

/* ---- what a certificate is ---------------------------------------------- */

/* The key types OpenSSL keeps side by side in one context, one certificate
 * each (SSL_CTX_use_certificate(3)): a client is served the one its
 * signature algorithms (TLS 1.3) or cipher suites (TLS 1.2) allow. */
enum tls_key_type {
	TLS_KEY_RSA,
	TLS_KEY_RSA_PSS,
	TLS_KEY_ECDSA,
	TLS_KEY_ED25519,
	TLS_KEY_ED448,
	TLS_KEY_TYPES
};

static const char *const tls_key_type_names[TLS_KEY_TYPES] = {
    [TLS_KEY_RSA] = "RSA", [TLS_KEY_RSA_PSS] = "RSA-PSS", [TLS_KEY_ECDSA] = "ECDSA",
    [TLS_KEY_ED25519] = "Ed25519", [TLS_KEY_ED448] = "Ed448",
};

/* The OpenSSL name of each type, for EVP_PKEY_is_a(). */
static const char *const tls_key_type_algs[TLS_KEY_TYPES] = {
    [TLS_KEY_RSA] = "RSA", [TLS_KEY_RSA_PSS] = "RSA-PSS", [TLS_KEY_ECDSA] = "EC",
    [TLS_KEY_ED25519] = "ED25519", [TLS_KEY_ED448] = "ED448",
};

/* A key type, or -1 for one TLS servers do not use (DSA, DH...). */
static int tls_key_type(const EVP_PKEY *pk)
{
	for (int t = 0; pk && t < TLS_KEY_TYPES; t++)
		if (EVP_PKEY_is_a(pk, tls_key_type_algs[t]))
			return t;
	return -1;
}

/* "RSA 2048 bits", "ECDSA P-256", "Ed25519". */
static void tls_key_text(const EVP_PKEY *pk, char *out, size_t outsz)
{
	int t = tls_key_type(pk);
	char group[64];
	size_t glen = 0;
	if (t == TLS_KEY_ECDSA &&
	    EVP_PKEY_get_group_name(pk, group, sizeof group, &glen) == 1) {
		const char *nist = EC_curve_nid2nist(OBJ_txt2nid(group));
		errfmt(out, outsz, "ECDSA %s", nist ? nist : group);
	} else if (t == TLS_KEY_RSA || t == TLS_KEY_RSA_PSS) {
		errfmt(out, outsz, "%s %d bits", tls_key_type_names[t], EVP_PKEY_get_bits(pk));
	} else {
		errfmt(out, outsz, "%s", t >= 0 ? tls_key_type_names[t] : "unknown key type");
	}
	ERR_clear_error();
}

/* The first certificate of the chain file at path: the server's own. */
static X509 *tls_leaf_read(const char *path, char *err, size_t errsz)
{
	FILE *f = fopen(path, "re");
	if (!f) {
		errfmt(err, errsz, "certificate %s: %s", path, strerror(errno));
		return NULL;
	}
	X509 *x = PEM_read_X509(f, NULL, NULL, NULL);
	(void)fclose(f); /* read only */
	if (!x)
		errfmt(err, errsz, "certificate %s: %s", path, tls_openssl_reason());
	return x;
}

/* One name as text: printable ASCII kept (lower case), any other byte '?';
 * a name is data from a file, never trusted to be clean. */
static char *tls_name_text(const unsigned char *data, int len)
{
	char *s = xmalloc((size_t)(len > 0 ? len : 0) + 1);
	for (int i = 0; i < len; i++) {
		unsigned char c = data[i];
		s[i] = c > 0x20 && c < 0x7f ? (char)(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c) : '?';
	}
	s[len > 0 ? len : 0] = '\0';
	return s;
}

struct tls_names {
	char **v;
	size_t n;
};

static void tls_names_add_san(struct tls_names *l, const GENERAL_NAME *gn)
{
	char ip[INET6_ADDRSTRLEN];
	if (gn->type == GEN_DNS) {
		*(char **)xappend(&l->v, &l->n, sizeof *l->v) = tls_name_text(
		    ASN1_STRING_get0_data(gn->d.dNSName), ASN1_STRING_length(gn->d.dNSName));
	} else if (gn->type == GEN_IPADD) {
		int len = ASN1_STRING_length(gn->d.iPAddress);
		int af = len == 4 ? AF_INET : len == 16 ? AF_INET6 : -1;
		if (af >= 0 && inet_ntop(af, ASN1_STRING_get0_data(gn->d.iPAddress), ip, sizeof ip))
			*(char **)xappend(&l->v, &l->n, sizeof *l->v) = xstrdup(ip);
	}
}

static void tls_names_add_cns(struct tls_names *l, const X509_NAME *subject)
{
	for (int i = X509_NAME_get_index_by_NID(subject, NID_commonName, -1); i >= 0;
	     i = X509_NAME_get_index_by_NID(subject, NID_commonName, i)) {
		const ASN1_STRING *cn = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, i));
		*(char **)xappend(&l->v, &l->n, sizeof *l->v) =
		    tls_name_text(ASN1_STRING_get0_data(cn), ASN1_STRING_length(cn));
	}
}

static int tls_names_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The host names and addresses a certificate is for, as clients match them
 * (RFC 6125 §6.4.4: the subjectAltName entries, else the subject's CN),
 * sorted, without repeats, ", " between them.  Two certificates with the
 * same text stand for the same hosts.  Caller frees. */
static char *tls_cert_names(X509 *x)
{
	struct tls_names l = {0};
	GENERAL_NAMES *gens = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
	for (int i = 0; gens && i < sk_GENERAL_NAME_num(gens); i++)
		tls_names_add_san(&l, sk_GENERAL_NAME_value(gens, i));
	GENERAL_NAMES_free(gens);
	if (l.n == 0)
		tls_names_add_cns(&l, X509_get_subject_name(x));
	ERR_clear_error();
	if (l.n > 1)
		qsort(l.v, l.n, sizeof *l.v, tls_names_cmp);
	size_t len = 1;
	for (size_t i = 0; i < l.n; i++)
		len += strlen(l.v[i]) + 2;
	char *out = xmalloc(len), *end = out;
	*end = '\0';
	for (size_t i = 0; i < l.n; i++)
		if (i == 0 || strcmp(l.v[i], l.v[i - 1]) != 0)
			end = stpcpy(stpcpy(end, i == 0 ? "" : ", "), l.v[i]);
	for (size_t i = 0; i < l.n; i++)
		free(l.v[i]);
	free(l.v);
	return out;
}

/* ---- cipher policy ----------------------------------------------------- */

/* One OpenSSL cipher list, "A:B:C" (ciphers(1)): OpenSSL's defaults
 * come to about 600 bytes. */
enum { TLS_CIPHER_LIST_MAX = 4096 };

static void tls_cipher_list_add(struct strbuf *list, const char *name)
{
	if (strbuf_len(list) > 0)
		(void)strbuf_addc(list, ':');
	(void)strbuf_adds(list, name); /* a cut list is refused: strbuf_ok() */
}

/* TLS 1.3 suites are numbered 0x13xx (RFC 8446 appendix B.4). */
static bool tls_cipher_is_13(const SSL_CIPHER *c)
{
	return (SSL_CIPHER_get_protocol_id(c) >> 8) == 0x13;
}

/* Set the default lists, then keep from them only the suites of at least
 * min_bits ("require 128-bit encryption" and stronger). */
static int tls_ctx_ciphers(SSL_CTX *ctx, const struct conf_tls *tls, char *err, size_t errsz)
{
	if (SSL_CTX_set_cipher_list(ctx, tls_ciphers_12) != 1 ||
	    SSL_CTX_set_ciphersuites(ctx, tls_ciphers_13) != 1) {
		errfmt(err, errsz, "cipher list: %s", tls_openssl_reason());
		return -1;
	}
	char buf12[TLS_CIPHER_LIST_MAX], buf13[TLS_CIPHER_LIST_MAX];
	struct strbuf l12, l13;
	strbuf_init(&l12, buf12, sizeof buf12);
	strbuf_init(&l13, buf13, sizeof buf13);
	STACK_OF(SSL_CIPHER) *sk = SSL_CTX_get_ciphers(ctx);
	for (int i = 0; i < sk_SSL_CIPHER_num(sk); i++) {
		const SSL_CIPHER *c = sk_SSL_CIPHER_value(sk, i);
		if (SSL_CIPHER_get_bits(c, NULL) < (int)tls->min_bits)
			continue;
		tls_cipher_list_add(tls_cipher_is_13(c) ? &l13 : &l12, SSL_CIPHER_get_name(c));
	}
	if (!strbuf_ok(&l12) || !strbuf_ok(&l13)) {
		errfmt(err, errsz, "cipher list longer than %d bytes", TLS_CIPHER_LIST_MAX - 1);
		return -1;
	}
	int r = 0;
	if (!strbuf_len(&l12) && !strbuf_len(&l13)) {
		errfmt(err, errsz, "no cipher has min-bits %u or more (the strongest have 256)",
			tls->min_bits);
		r = -1;
	} else if (SSL_CTX_set_ciphersuites(ctx, strbuf_str(&l13)) != 1) {
		errfmt(err, errsz, "TLS 1.3 suites: %s", tls_openssl_reason());
		r = -1;
	} else if (!strbuf_len(&l12)) {
		/* no TLS 1.2 suite is strong enough: TLS 1.3 only */
		if (SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) != 1) {
			errfmt(err, errsz, "minimum version: %s", tls_openssl_reason());
			r = -1;
		}
	} else if (SSL_CTX_set_cipher_list(ctx, strbuf_str(&l12)) != 1) {
		errfmt(err, errsz, "TLS 1.2 ciphers: %s", tls_openssl_reason());
		r = -1;
	}
	return r;
}

static int tls_ctx_version(SSL_CTX *ctx, const struct conf_tls *tls, char *err, size_t errsz)
{
	int v;
	if (tls->min_version == TLS_VERSION_1_2)
		v = TLS1_2_VERSION;
	else if (tls->min_version == TLS_VERSION_1_3)
		v = TLS1_3_VERSION;
	else {
		errfmt(err, errsz, "unsupported min-version %d", tls->min_version);
		return -1;
	}
	if (SSL_CTX_set_min_proto_version(ctx, v) != 1) {
		errfmt(err, errsz, "minimum version: %s", tls_openssl_reason());
		return -1;
	}
	return 0;
}

/* Options every context shares.  No session resumption at all: no tickets
 * (whose keys would outlive a reload) and no cache; mail clients seldom
 * resume, and a full handshake re-checks the policy. */
static int tls_ctx_options(SSL_CTX *ctx, char *err, size_t errsz)
{
	SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
					 SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_PRIORITIZE_CHACHA |
					 SSL_OP_NO_TICKET);
	/* an idle session keeps no 34 KiB read/write buffers */
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	if (SSL_CTX_set_num_tickets(ctx, 0) != 1 || SSL_CTX_set1_groups_list(ctx, tls_groups) != 1) {
		errfmt(err, errsz, "TLS options: %s", tls_openssl_reason());
		return -1;
	}
	return 0;
}

/* ---- SNI and ALPN ------------------------------------------------------- */

/* RFC 6066 §3: the first context whose certificate covers the name the
 * client asked for (wildcards included); the default otherwise, or with
 * strict_sni an unrecognized_name alert. */
static int tls_sni_select(SSL *ssl, int *al, void *arg)
{
	const struct tls_server *ts = arg;
	const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
	if (!name || !*name || acme_alpn_is_validation(ssl))
		return SSL_TLSEXT_ERR_OK; /* a validation keeps its challenge certificate */
	for (size_t i = 0; i < ts->nctxs; i++) {
		X509 *x = SSL_CTX_get0_certificate(ts->ctxs[i]);
		if (X509_check_host(x, name, 0, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS, NULL) != 1)
			continue;
		if (i > 0 && SSL_set_SSL_CTX(ssl, ts->ctxs[i]) != ts->ctxs[i]) {
			*al = SSL_AD_INTERNAL_ERROR;
			return SSL_TLSEXT_ERR_ALERT_FATAL;
		}
		return SSL_TLSEXT_ERR_OK;
	}
	if (ts->strict_sni) {
		*al = SSL_AD_UNRECOGNIZED_NAME;
		return SSL_TLSEXT_ERR_ALERT_FATAL;
	}
	return SSL_TLSEXT_ERR_OK;
}

/* RFC 7301 §3.2 and the ALPACA advice: a client that names protocols but
 * not ours is talking to the wrong server (a browser lured to port 465,
 * say) and gets no_application_protocol.  A client that names none is
 * never asked: this callback only runs when ALPN was offered. */
static int tls_alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
			   const unsigned char *in, unsigned int inlen, void *arg)
{
	const struct tls_server *ts = arg;
	if (acme_alpn_is_validation(ssl)) {
		/* RFC 8737 §3: the hello offered only acme-tls/1; it is chosen */
		*out = in + 1;
		*outlen = in[0];
		return SSL_TLSEXT_ERR_OK;
	}
	if (!ts->protocol)
		return SSL_TLSEXT_ERR_NOACK;
	size_t plen = strlen(ts->protocol);
	unsigned int i = 0;
	while (i < inlen) {
		unsigned int n = in[i];
		if (n == 0 || n > inlen - i - 1)
			return SSL_TLSEXT_ERR_ALERT_FATAL; /* malformed list */
		if (n == plen && memcmp(in + i + 1, ts->protocol, plen) == 0) {
			*out = in + i + 1;
			*outlen = (unsigned char)n;
			return SSL_TLSEXT_ERR_OK;
		}
		i += 1 + n;
	}
	return SSL_TLSEXT_ERR_ALERT_FATAL;
}

/* An ACME CA validating a name by tls-alpn-01 (RFC 8737) gets the challenge
 * certificate of that name, whatever server it reaches. */
static int tls_client_hello(SSL *ssl, int *al, void *arg)
{
	if (acme_alpn_hello(ssl) >= 0)
		return SSL_CLIENT_HELLO_SUCCESS;
	*al = SSL_AD_NO_APPLICATION_PROTOCOL;
	return SSL_CLIENT_HELLO_ERROR;
}

/* ---- building the contexts ---------------------------------------------- */

static SSL_CTX *tls_ctx_new(struct tls_server *ts, const struct conf_tls *tls, char *err,
			    size_t errsz)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	if (!ctx) {
		errfmt(err, errsz, "SSL_CTX_new: %s", tls_openssl_reason());
		return NULL;
	}
	if (tls_ctx_options(ctx, err, errsz) < 0 || tls_ctx_version(ctx, tls, err, errsz) < 0 ||
	    tls_ctx_ciphers(ctx, tls, err, errsz) < 0) {
		SSL_CTX_free(ctx);
		return NULL;
	}
	SSL_CTX_set_alpn_select_cb(ctx, tls_alpn_select, ts);
	SSL_CTX_set_client_hello_cb(ctx, tls_client_hello, NULL);
	return ctx;
}

/* The pairs of one context while it is built: what their certificates
 * name, and which pair holds each key type. */
struct tls_group {
	char *names;
	const struct conf_cert *by_type[TLS_KEY_TYPES];
};

/* "FILE:LINE:COL: message", at the pair's certificate line; returns 1 (an error). */
static int tls_pair_error(FILE *errout, const struct conf_cert *cc, const char *msg)
{
	report(errout, "%s:%u:%u: %s\n", cc->pos.file, cc->pos.line, cc->pos.col, msg);
	return 1;
}

/* The context for a pair of key type whose certificate names names: the
 * one of the earlier pairs that name the same hosts, where each key type
 * may come once (an RSA and an ECDSA certificate side by side: a client
 * gets the one it supports), or a new one, for SNI.  Takes names.  The
 * context's index, or -1 with the reason in err. */
static long tls_group_for(struct tls_server *ts, struct tls_group *groups,
			  const struct conf_tls *tls, const struct conf_cert *cc, int type,
			  char *names, char *err, size_t errsz)
{
	size_t g = 0;
	while (g < ts->nctxs && strcmp(groups[g].names, names) != 0)
		g++;
	if (g < ts->nctxs && groups[g].by_type[type]) {
		const struct conf_cert *first = groups[g].by_type[type];
		errfmt(err, errsz,
		       "certificate %s is a second %s certificate for %s (the first is %s at "
		       "%s:%u:%u); give at most one certificate of each key type for a name",
		       cc->certificate, tls_key_type_names[type], *names ? names : "no name",
		       first->certificate, first->pos.file, first->pos.line, first->pos.col);
		free(names);
		return -1;
	}
	if (g < ts->nctxs) {
		free(names);
		return (long)g;
	}
	SSL_CTX *ctx = tls_ctx_new(ts, tls, err, errsz);
	if (!ctx) {
		free(names);
		return -1;
	}
	ts->ctxs[ts->nctxs++] = ctx;
	groups[g].names = names;
	return (long)g;
}

static X509 *cert_selfsigned(EVP_PKEY *key, const char *host, bool rsa);

/* "certificate acme" before the CA issued one: its files do not exist yet. */
static bool tls_acme_pending(const struct conf_cert *cc)
{
	return cc->acme && access(cc->certificate, F_OK) < 0 && errno == ENOENT;
}

/* Until then a stand-in, made in memory: a fresh ECDSA key and a
 * self-signed certificate for TLS_ACME_PENDING_NAME, so that the listeners
 * serve (and STARTTLS works) while the ACME client gets the real one. */
static int tls_server_add_pending(struct tls_server *ts, struct tls_group *groups,
				  const struct conf_tls *tls, const struct conf_cert *cc,
				  FILE *errout)
{
	char err[1024];
	EVP_PKEY *key = EVP_EC_gen("P-256");
	X509 *x = key ? cert_selfsigned(key, TLS_ACME_PENDING_NAME, false) : NULL;
	int r = 0;
	if (!x) {
		errfmt(err, sizeof err, "ACME stand-in certificate: %s", tls_openssl_reason());
		r = tls_pair_error(errout, cc, err);
	} else {
		long g = tls_group_for(ts, groups, tls, cc, TLS_KEY_ECDSA, tls_cert_names(x), err,
				       sizeof err);
		if (g < 0)
			r = tls_pair_error(errout, cc, err);
		else if (SSL_CTX_use_certificate(ts->ctxs[g], x) != 1 ||
			 SSL_CTX_use_PrivateKey(ts->ctxs[g], key) != 1) {
			errfmt(err, sizeof err, "ACME stand-in certificate: %s", tls_openssl_reason());
			r = tls_pair_error(errout, cc, err);
		} else {
			groups[g].by_type[TLS_KEY_ECDSA] = cc;
		}
	}
	X509_free(x);
	EVP_PKEY_free(key);
	return r;
}

/* Load pair cc into its context.  0, or 1 after reporting why it cannot. */
static int tls_server_add_pair(struct tls_server *ts, struct tls_group *groups,
			       const struct conf_tls *tls, const struct conf_cert *cc, FILE *errout)
{
	char err[1024];
	if (tls_acme_pending(cc))
		return tls_server_add_pending(ts, groups, tls, cc, errout);
	X509 *leaf = tls_leaf_read(cc->certificate, err, sizeof err);
	if (!leaf)
		return tls_pair_error(errout, cc, err);
	int type = tls_key_type(X509_get0_pubkey(leaf));
	char *names = tls_cert_names(leaf);
	X509_free(leaf);
	if (type < 0) {
		free(names);
		errfmt(err, sizeof err, "certificate %s: not an RSA, ECDSA, Ed25519 or Ed448 key",
		       cc->certificate);
		return tls_pair_error(errout, cc, err);
	}
	long g = tls_group_for(ts, groups, tls, cc, type, names, err, sizeof err);
	if (g < 0 || tls_ctx_load_pair(ts->ctxs[g], cc, err, sizeof err) < 0)
		return tls_pair_error(errout, cc, err);
	groups[g].by_type[type] = cc;
	return 0;
}

struct tls_server *tls_server_new(const struct conf_tls *tls, const char *protocol,
				  FILE *errout)
{
	if (tls->ncerts == 0) {
		report(errout, "no certificate\n");
		return NULL;
	}
	if (!tls_ex_ready()) {
		char err[256];
		errfmt(err, sizeof err, "OpenSSL ex_data: %s", tls_openssl_reason());
		tls_pair_error(errout, &tls->certs[0], err);
		return NULL;
	}
	struct tls_server *ts = xcalloc(1, sizeof *ts);
	ts->refs = 1;
	ts->strict_sni = tls->strict_sni;
	ts->protocol = protocol ? xstrdup(protocol) : NULL;
	ts->ctxs = xcalloc(tls->ncerts, sizeof *ts->ctxs);
	struct tls_group *groups = xcalloc(tls->ncerts, sizeof *groups);
	int errors = 0;
	for (size_t i = 0; i < tls->ncerts; i++)
		errors += tls_server_add_pair(ts, groups, tls, &tls->certs[i], errout);
	for (size_t i = 0; i < ts->nctxs; i++)
		free(groups[i].names);
	free(groups);
	if (errors) {
		tls_server_unref(ts);
		return NULL;
	}
	/* Only the context a handshake starts on asks for the name. */
	SSL_CTX_set_tlsext_servername_callback(ts->ctxs[0], tls_sni_select);
	SSL_CTX_set_tlsext_servername_arg(ts->ctxs[0], ts);
	return ts;
}

SSL *tls_server_ssl(struct tls_server *ts)
{
	SSL *ssl = SSL_new(ts->ctxs[0]);
	if (!ssl) {
		ERR_clear_error();
		return NULL;
	}
	__atomic_add_fetch(&ts->refs, 1, __ATOMIC_RELAXED);
	if (SSL_set_ex_data(ssl, tls_ex_index, ts) != 1) {
		tls_server_unref(ts);
		SSL_free(ssl);
		ERR_clear_error();
		return NULL;
	}
	return ssl;
}

/* ---- the negotiated session -------------------------------------------- */

bool tls_session_acceptable(SSL *ssl, const struct conf_tls *tls, char *why, size_t whysz)
{
	if (acme_alpn_is_validation(ssl)) {
		/* RFC 8737 §3: nothing is exchanged after the handshake */
		errfmt(why, whysz, "ACME tls-alpn-01 validation, closed after the handshake");
		return false;
	}
	const SSL_CIPHER *c = SSL_get_current_cipher(ssl);
	if (!c) {
		errfmt(why, whysz, "no cipher negotiated");
		return false;
	}
	int alg_bits = 0;
	int bits = SSL_CIPHER_get_bits(c, &alg_bits);
	if (bits < 0 || (unsigned)bits < tls->min_bits) {
		errfmt(why, whysz, "cipher %s has %d bits, fewer than min-bits %u",
			SSL_CIPHER_get_name(c), bits, tls->min_bits);
		return false;
	}
	return true;
}

void tls_describe(SSL *ssl, char *out, size_t outsz)
{
	const SSL_CIPHER *c = SSL_get_current_cipher(ssl);
	if (!c) {
		errfmt(out, outsz, "%s without a cipher", SSL_get_version(ssl));
		return;
	}
	int alg_bits = 0;
	int bits = SSL_CIPHER_get_bits(c, &alg_bits);
	/* both names come from OpenSSL's own tables, never from the peer */
	errfmt(out, outsz, "%s with cipher %s (%d/%d bits)", SSL_get_version(ssl),
		SSL_CIPHER_get_name(c), bits, alg_bits);
}

/* ---- posthorn check ------------------------------------------------------ */

/* "2026-01-31 12:00:00 UTC" */
static void tls_time_text(const ASN1_TIME *t, char *out, size_t outsz)
{
	struct tm tm;
	if (ASN1_TIME_to_tm(t, &tm) != 1 || strftime(out, outsz, "%Y-%m-%d %H:%M:%S UTC", &tm) == 0)
		errfmt(out, outsz, "(unreadable date)");
}

/* Dates of the leaf certificate: expired, not yet valid, expiring soon. */
static void tls_check_dates(X509 *x, const char *path, FILE *warnout)
{
	char date[64];
	const ASN1_TIME *before = X509_get0_notBefore(x), *after = X509_get0_notAfter(x);
	time_t soon = time(NULL) + (time_t)TLS_EXPIRY_WARN_DAYS * 86400;
	if (X509_cmp_current_time(after) <= 0) {
		tls_time_text(after, date, sizeof date);
		report(warnout, "warning: certificate %s expired on %s\n", path, date);
	} else if (X509_cmp_time(after, &soon) <= 0) {
		tls_time_text(after, date, sizeof date);
		report(warnout, "warning: certificate %s expires within %d days, on %s\n", path,
			TLS_EXPIRY_WARN_DAYS, date);
	}
	if (X509_cmp_current_time(before) > 0) {
		tls_time_text(before, date, sizeof date);
		report(warnout, "warning: certificate %s is not valid before %s\n", path, date);
	}
}

static bool tls_covers(X509 *x, const char *hostname)
{
	return X509_check_host(x, hostname, 0, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS, NULL) == 1;
}

/* The subject as RFC 2253 text (special characters and bytes that are
 * not ASCII escaped). */
static void tls_subject_print(X509 *x, FILE *out)
{
	BIO *b = BIO_new(BIO_s_mem());
	char *text = NULL;
	long len = 0;
	if (b && X509_NAME_print_ex(b, X509_get_subject_name(x), 0, XN_FLAG_RFC2253) >= 0)
		len = BIO_get_mem_data(b, &text);
	if (len > 0)
		report(out, "%.*s", (int)len, text);
	else
		report(out, "(none)");
	BIO_free(b);
	ERR_clear_error();
}

/* "server mx: certificate /etc/mx.crt with key /etc/mx.key: ECDSA P-256,
 * subject CN=mx.example.org, for mx.example.org, valid until ..." */
static void tls_report_pair(X509 *x, const struct conf_cert *cc, const char *server, FILE *out)
{
	char key[64], until[64];
	tls_key_text(X509_get0_pubkey(x), key, sizeof key);
	tls_time_text(X509_get0_notAfter(x), until, sizeof until);
	char *names = tls_cert_names(x);
	report(out, "server %s: certificate %s with key %s: %s, subject ", server, cc->certificate,
	       cc->key, key);
	tls_subject_print(x, out);
	report(out, ", for %s, valid until %s\n", *names ? names : "no name", until);
	free(names);
}

int tls_report(const struct conf_tls *tls, const char *server, const char *hostname,
	       FILE *errout, FILE *out)
{
	int errors = 0;
	bool covered = false;
	X509 *first = NULL;
	for (size_t i = 0; i < tls->ncerts; i++) {
		const struct conf_cert *cc = &tls->certs[i];
		char err[1024];
		if (tls_acme_pending(cc)) {
			report(out, "server %s: certificate acme: not issued yet (%s); a self-signed "
			       "stand-in for %s until the CA issues it\n", server, cc->certificate,
			       TLS_ACME_PENDING_NAME);
			continue;
		}
		X509 *x = tls_leaf_read(cc->certificate, err, sizeof err);
		if (!x) {
			errors += tls_pair_error(errout, cc, err);
			continue;
		}
		tls_report_pair(x, cc, server, out);
		tls_check_dates(x, cc->certificate, out);
		if (hostname && tls_covers(x, hostname))
			covered = true;
		if (i == 0)
			first = x;
		else
			X509_free(x);
	}
	/* The default certificate is what clients without SNI see; the name
	 * they connect to is usually the server's hostname. */
	if (first && hostname && !tls_covers(first, hostname))
		report(out, "warning: certificate %s does not cover %s%s\n",
		       tls->certs[0].certificate, hostname,
		       covered ? " (clients that send no SNI name get it)" : "");
	X509_free(first);
	return errors;
}

/* ---- posthorn cert new ---------------------------------------------------- */

static const char cert_usage_line[] =
    "usage: posthorn cert new --hostname H --out DIR [--rsa BITS]\n";

struct cert_opts {
	const char *hostname;
	const char *out;
	unsigned rsa_bits;       /* 0: ECDSA P-256 */
};

static int cert_usage(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int cert_usage(const char *fmt, ...)
{
	if (fmt) {
		va_list ap;
		va_start(ap, fmt);
		vcomplain(fmt, ap);
		va_end(ap);
	}
	stderr_puts(cert_usage_line);
	return CERT_EXIT_USAGE;
}

static int cert_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int cert_fail(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vcomplain(fmt, ap);
	va_end(ap);
	ERR_clear_error();
	return CERT_EXIT_ERROR;
}

static bool cert_is_ip(const char *h)
{
	unsigned char buf[sizeof(struct in6_addr)];
	return inet_pton(AF_INET, h, buf) == 1 || inet_pton(AF_INET6, h, buf) == 1;
}

/* A DNS name (RFC 1123 §2.1 labels) or an IP address.  It also names the
 * files, so nothing else ('/', "..") may get through. */
static bool cert_hostname_valid(const char *h)
{
	if (cert_is_ip(h))
		return true;
	size_t len = strlen(h), label = 0;
	if (len == 0 || len > 253)
		return false;
	for (size_t i = 0; i <= len; i++) {
		char c = h[i];
		if (c == '.' || c == '\0') {
			if (label == 0 || h[i - 1] == '-')
				return false;
			label = 0;
			continue;
		}
		bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
		if (!alnum && !(c == '-' && label > 0))
			return false;
		if (++label > 63)
			return false;
	}
	return true;
}

static int cert_parse_bits(const char *s, unsigned *out)
{
	char *end;
	errno = 0;
	unsigned long v = strtoul(s, &end, 10);
	if (errno || end == s || *end || s[0] == '-' || v < CERT_RSA_MIN_BITS ||
	    v > CERT_RSA_MAX_BITS)
		return -1;
	*out = (unsigned)v;
	return 0;
}

/* --name VALUE or --name=VALUE at argv[*i]; NULL when argv[*i] is another
 * option.  *missing is set when the value is absent. */
static const char *cert_opt_value(int argc, char **argv, int *i, const char *name, bool *missing)
{
	size_t n = strlen(name);
	const char *a = argv[*i];
	/* NOLINTNEXTLINE(clang-analyzer-core.NonNullParamChecker): argv[*i] with *i < argc is never NULL */
	if (strncmp(a, name, n) != 0)
		return NULL;
	if (a[n] == '=')
		return a + n + 1;
	if (a[n] != '\0')
		return NULL;
	if (*i + 1 >= argc) {
		*missing = true;
		return NULL;
	}
	return argv[++*i];
}

static int cert_parse_args(int argc, char **argv, struct cert_opts *o)
{
	if (argc < 1)
		return cert_usage(NULL);
	if (strcmp(argv[0], "new") != 0)
		return cert_usage("unknown cert command \"%s\"", argv[0]);
	for (int i = 1; i < argc; i++) {
		bool missing = false;
		const char *v;
		if ((v = cert_opt_value(argc, argv, &i, "--hostname", &missing)))
			o->hostname = v;
		else if (!missing && (v = cert_opt_value(argc, argv, &i, "--out", &missing)))
			o->out = v;
		else if (!missing && (v = cert_opt_value(argc, argv, &i, "--rsa", &missing))) {
			if (cert_parse_bits(v, &o->rsa_bits) < 0)
				return cert_usage("--rsa takes a key size from %d to %d bits",
						  CERT_RSA_MIN_BITS, CERT_RSA_MAX_BITS);
		} else if (missing)
			return cert_usage("%s needs a value", argv[i]);
		else
			return cert_usage("unknown option \"%s\"", argv[i]);
	}
	if (!o->hostname || !o->out)
		return cert_usage("--hostname and --out are required");
	if (!cert_hostname_valid(o->hostname))
		return cert_usage("\"%s\" is neither a host name nor an IP address", o->hostname);
	if (strlen(o->hostname) > CERT_CN_MAX)
		return cert_usage("host name longer than %d characters", CERT_CN_MAX);
	return 0;
}

static EVP_PKEY *cert_keygen(unsigned rsa_bits)
{
	if (rsa_bits)
		return EVP_RSA_gen(rsa_bits);
	return EVP_EC_gen("P-256");
}

static X509_NAME *cert_name(const char *host)
{
	X509_NAME *n = X509_NAME_new();
	if (n && X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_UTF8, (const unsigned char *)host, -1,
					    -1, 0) == 1)
		return n;
	X509_NAME_free(n);
	return NULL;
}

/* "DNS:host" or "IP:address"; the name was validated, so it cannot inject
 * further entries. */
static char *cert_san(const char *host)
{
	return xasprintf("%s:%s", cert_is_ip(host) ? "IP" : "DNS", host);
}

static int cert_add_ext(X509 *x, X509V3_CTX *v3, int nid, const char *value)
{
	X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, v3, nid, value);
	if (!ext)
		return -1;
	int r = X509_add_ext(x, ext, -1) == 1 ? 0 : -1;
	X509_EXTENSION_free(ext);
	return r;
}

/* A random positive 128-bit serial number (RFC 5280 §4.1.2.2). */
static int cert_serial(X509 *x)
{
	unsigned char b[CERT_SERIAL_BYTES];
	if (RAND_bytes(b, sizeof b) != 1)
		return -1;
	b[0] = (unsigned char)((b[0] & 0x7f) | 0x40); /* positive, never zero, full length */
	BIGNUM *bn = BN_bin2bn(b, sizeof b, NULL);
	ASN1_INTEGER *ai = bn ? BN_to_ASN1_INTEGER(bn, NULL) : NULL;
	int r = ai && X509_set_serialNumber(x, ai) == 1 ? 0 : -1;
	ASN1_INTEGER_free(ai);
	BN_free(bn);
	return r;
}

static int cert_extensions(X509 *x, const char *host, bool rsa)
{
	X509V3_CTX v3;
	X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
	char *san = cert_san(host);
	int r = 0;
	if (cert_add_ext(x, &v3, NID_basic_constraints, "critical,CA:FALSE") < 0 ||
	    cert_add_ext(x, &v3, NID_key_usage,
			 rsa ? "critical,digitalSignature,keyEncipherment"
			     : "critical,digitalSignature") < 0 ||
	    cert_add_ext(x, &v3, NID_ext_key_usage, "serverAuth") < 0 ||
	    cert_add_ext(x, &v3, NID_subject_alt_name, san) < 0 ||
	    cert_add_ext(x, &v3, NID_subject_key_identifier, "hash") < 0 ||
	    cert_add_ext(x, &v3, NID_authority_key_identifier, "keyid:always") < 0)
		r = -1;
	free(san);
	return r;
}

/* Self-signed X.509 v3 for host, valid CERT_VALID_DAYS from now. */
static X509 *cert_selfsigned(EVP_PKEY *key, const char *host, bool rsa)
{
	X509 *x = X509_new();
	X509_NAME *name = cert_name(host);
	bool ok = x && name && X509_set_version(x, X509_VERSION_3) == 1 && cert_serial(x) == 0 &&
		  X509_gmtime_adj(X509_getm_notBefore(x), 0) &&
		  X509_time_adj_ex(X509_getm_notAfter(x), CERT_VALID_DAYS, 0, NULL) &&
		  X509_set_subject_name(x, name) == 1 && X509_set_issuer_name(x, name) == 1 &&
		  X509_set_pubkey(x, key) == 1 && cert_extensions(x, host, rsa) == 0 &&
		  X509_sign(x, key, EVP_sha256()) > 0;
	X509_NAME_free(name);
	if (!ok) {
		X509_free(x);
		return NULL;
	}
	return x;
}

/* PKCS#10 request carrying the same name and subjectAltName, for a CA. */
static X509_REQ *cert_request(EVP_PKEY *key, const char *host)
{
	X509_REQ *req = X509_REQ_new();
	X509_NAME *name = cert_name(host);
	STACK_OF(X509_EXTENSION) *exts = sk_X509_EXTENSION_new_null();
	char *san = cert_san(host);
	X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, NULL, NID_subject_alt_name, san);
	bool ok = req && name && exts && ext && sk_X509_EXTENSION_push(exts, ext) > 0;
	if (!ok)
		X509_EXTENSION_free(ext); /* not owned by exts */
	ok = ok && X509_REQ_set_version(req, X509_REQ_VERSION_1) == 1 &&
	     X509_REQ_set_subject_name(req, name) == 1 && X509_REQ_set_pubkey(req, key) == 1 &&
	     X509_REQ_add_extensions(req, exts) == 1 && X509_REQ_sign(req, key, EVP_sha256()) > 0;
	sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
	X509_NAME_free(name);
	free(san);
	if (!ok) {
		X509_REQ_free(req);
		return NULL;
	}
	return req;
}

struct cert_files {
	char *path[3];           /* key, certificate, request */
	bool created[3];
};

enum { CERT_KEY, CERT_CRT, CERT_CSR };

/* Write the PEM in bio to a new file: O_EXCL, never over an existing one. */
static int cert_write(struct cert_files *cf, int which, BIO *bio, mode_t mode)
{
	const char *path = cf->path[which];
	/* NOLINTNEXTLINE(clang-analyzer-core.NonNullParamChecker): cf->path[] is filled by cert_prepare_dir before any file is written */
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
	if (fd < 0) {
		if (errno == EEXIST)
			return cert_fail("%s exists; remove it first", path);
		return cert_fail("cannot create %s: %s", path, strerror(errno));
	}
	cf->created[which] = true;
	char *data;
	long len = BIO_get_mem_data(bio, &data);
	int r = 0;
	if (len <= 0 || fchmod(fd, mode) < 0 || write_all(fd, data, (size_t)len) < 0 || fsync(fd) < 0)
		r = -1;
	int saved = errno;
	if (close(fd) < 0 && r == 0) {
		r = -1;
		saved = errno;
	}
	if (r < 0)
		return cert_fail("cannot write %s: %s", path, strerror(saved));
	return 0;
}

static void cert_files_free(struct cert_files *cf, bool remove_created)
{
	for (int i = 0; i < 3; i++) {
		if (remove_created && cf->created[i])
			unlink(cf->path[i]);
		free(cf->path[i]);
	}
}

static int cert_prepare_dir(const char *dir, struct cert_files *cf, const char *host)
{
	struct stat st;
	/* NOLINTNEXTLINE(clang-analyzer-core.NonNullParamChecker): cert_parse_args returns CERT_EXIT_USAGE unless --out was given */
	if (stat(dir, &st) < 0) {
		if (errno != ENOENT || mkdir_p(dir, 0700) < 0)
			return cert_fail("cannot create %s: %s", dir, strerror(errno));
	} else if (!S_ISDIR(st.st_mode)) {
		return cert_fail("%s is not a folder", dir);
	}
	/* absolute paths, so the printed tls block works from any folder */
	char *abs = realpath(dir, NULL);
	if (!abs)
		return cert_fail("%s: %s", dir, strerror(errno));
	static const char *const ext[3] = {"key", "crt", "csr"};
	int r = 0;
	for (int i = 0; i < 3; i++) {
		cf->path[i] = xasprintf("%s/%s.%s", strcmp(abs, "/") ? abs : "", host, ext[i]);
		if (r == 0 && lstat(cf->path[i], &st) == 0)
			r = cert_fail("%s exists; remove it first", cf->path[i]);
	}
	free(abs);
	return r;
}

static int cert_write_all(struct cert_files *cf, EVP_PKEY *key, X509 *x, X509_REQ *req)
{
	/* the key goes through secure memory, wiped when freed */
	BIO *kb = BIO_new(BIO_s_secmem()), *cb = BIO_new(BIO_s_mem()), *rb = BIO_new(BIO_s_mem());
	int r = -1;
	if (!kb || !cb || !rb ||
	    PEM_write_bio_PKCS8PrivateKey(kb, key, NULL, NULL, 0, NULL, NULL) != 1 ||
	    PEM_write_bio_X509(cb, x) != 1 || PEM_write_bio_X509_REQ(rb, req) != 1)
		r = cert_fail("cannot encode the files: %s", tls_openssl_reason());
	else if (cert_write(cf, CERT_KEY, kb, 0600) == 0 && cert_write(cf, CERT_CRT, cb, 0644) == 0 &&
		 cert_write(cf, CERT_CSR, rb, 0644) == 0)
		r = 0;
	BIO_free(kb);
	BIO_free(cb);
	BIO_free(rb);
	return r;
}

static void cert_print(const struct cert_files *cf, const char *host, X509 *x)
{
	char until[64];
	tls_time_text(X509_get0_notAfter(x), until, sizeof until);
	printf("private key:  %s (mode 0600; keep it secret)\n"
	       "certificate:  %s (self-signed for %s, valid until %s)\n"
	       "request:      %s (for a certification authority)\n\n"
	       "In the server's tls block:\n"
	       "    certificate %s\n"
	       "    key         %s\n\n"
	       "To use a certificate from a certification authority (CA) instead, send\n"
	       "the .csr file to the CA, replace the .crt file with the certificate it\n"
	       "returns followed by the CA's intermediate certificates (all PEM), keep\n"
	       "the key, and send posthorn SIGHUP.\n",
	       cf->path[CERT_KEY], cf->path[CERT_CRT], host, until, cf->path[CERT_CSR],
	       cf->path[CERT_CRT], cf->path[CERT_KEY]);
}

static int cert_new(const struct cert_opts *o)
{
	char *host = str_lower(xstrdup(o->hostname));
	struct cert_files cf = {0};
	EVP_PKEY *key = NULL;
	X509 *x = NULL;
	X509_REQ *req = NULL;
	int r = cert_prepare_dir(o->out, &cf, host);
	if (r == 0 && !(key = cert_keygen(o->rsa_bits)))
		r = cert_fail("cannot generate the key: %s", tls_openssl_reason());
	if (r == 0 && !(x = cert_selfsigned(key, host, o->rsa_bits != 0)))
		r = cert_fail("cannot make the certificate: %s", tls_openssl_reason());
	if (r == 0 && !(req = cert_request(key, host)))
		r = cert_fail("cannot make the request: %s", tls_openssl_reason());
	if (r == 0 && cert_write_all(&cf, key, x, req) != 0)
		r = CERT_EXIT_ERROR;
	if (r == 0 && fsync_dir(o->out) < 0)
		r = cert_fail("cannot sync %s: %s", o->out, strerror(errno));
	if (r == 0)
		cert_print(&cf, host, x);
	cert_files_free(&cf, r != 0);
	X509_REQ_free(req);
	X509_free(x);
	EVP_PKEY_free(key);
	free(host);
	return r;
}

int cmd_cert(int argc, char **argv)
{
	struct cert_opts o = {0};
	int r = cert_parse_args(argc, argv, &o);
	if (r != 0)
		return r;
	return cert_new(&o);
}

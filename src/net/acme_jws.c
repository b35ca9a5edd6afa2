/* acme_jws: the account key, JWK (RFC 7517) and thumbprint (RFC 7638),
 * ES256 JWS (RFC 7515, RFC 7518 §3.4) as RFC 8555 §6.2 wants it, key
 * authorizations (RFC 8555 §8.1) and the certificate's key and CSR. */
#include "net/acme_jws.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ecdsa.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "lib/util.h"

enum {
	ACME_P256_BYTES = 32,        /* a coordinate, r or s of P-256 */
	ACME_KEY_FILE_MAX = 16384,
};

static const char *acme_openssl_reason(void)
{
	unsigned long e = ERR_peek_error();
	const char *r = e ? ERR_reason_error_string(e) : NULL;
	ERR_clear_error();
	return r ? r : "unknown OpenSSL error";
}

char *acme_b64url(const unsigned char *data, size_t n)
{
	static const char abc[] =
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	char *out = xmalloc(n / 3 * 4 + 5);
	size_t o = 0, i = 0;
	for (; i + 3 <= n; i += 3) {
		unsigned v = (unsigned)data[i] << 16 | (unsigned)data[i + 1] << 8 | data[i + 2];
		out[o++] = abc[v >> 18 & 63];
		out[o++] = abc[v >> 12 & 63];
		out[o++] = abc[v >> 6 & 63];
		out[o++] = abc[v & 63];
	}
	if (n - i == 1) {
		unsigned v = (unsigned)data[i] << 16;
		out[o++] = abc[v >> 18 & 63];
		out[o++] = abc[v >> 12 & 63];
	} else if (n - i == 2) {
		unsigned v = (unsigned)data[i] << 16 | (unsigned)data[i + 1] << 8;
		out[o++] = abc[v >> 18 & 63];
		out[o++] = abc[v >> 12 & 63];
		out[o++] = abc[v >> 6 & 63];
	}
	out[o] = '\0';
	return out;
}

static char *acme_b64url_str(const char *s)
{
	return acme_b64url((const unsigned char *)s, strlen(s));
}

/* ---- the account key ------------------------------------------------------ */

char *acme_key_pem(EVP_PKEY *key)
{
	BIO *b = BIO_new(BIO_s_secmem());
	char *out = NULL;
	if (b && PEM_write_bio_PKCS8PrivateKey(b, key, NULL, NULL, 0, NULL, NULL) == 1) {
		char *data;
		long len = BIO_get_mem_data(b, &data);
		if (len > 0)
			out = xstrndup(data, (size_t)len);
	}
	BIO_free(b);
	return out;
}

static EVP_PKEY *acme_account_key_read(int fd, const char *path, char *err, size_t errsz)
{
	struct stat st;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size > ACME_KEY_FILE_MAX) {
		errfmt(err, errsz, "account key %s: not a regular file of at most %d bytes", path,
		       ACME_KEY_FILE_MAX);
		return NULL;
	}
	if (st.st_mode & 077) {
		errfmt(err, errsz, "account key %s may be read by group or others (mode %04o)", path,
		       (unsigned)(st.st_mode & 07777));
		return NULL;
	}
	FILE *f = fdopen(dup(fd), "r");
	if (!f) {
		errfmt(err, errsz, "account key %s: %s", path, strerror(errno));
		return NULL;
	}
	EVP_PKEY *key = PEM_read_PrivateKey(f, NULL, NULL, NULL);
	(void)fclose(f); /* read only */
	if (!key)
		errfmt(err, errsz, "account key %s: %s", path, acme_openssl_reason());
	else if (!EVP_PKEY_is_a(key, "EC") || EVP_PKEY_get_bits(key) != 256) {
		errfmt(err, errsz, "account key %s: not an ECDSA P-256 key", path);
		EVP_PKEY_free(key);
		key = NULL;
	}
	return key;
}

static EVP_PKEY *acme_account_key_create(const char *path, char *err, size_t errsz)
{
	EVP_PKEY *key = EVP_EC_gen("P-256");
	char *pem = key ? acme_key_pem(key) : NULL;
	if (!pem) {
		errfmt(err, errsz, "cannot make an account key: %s", acme_openssl_reason());
		EVP_PKEY_free(key);
		return NULL;
	}
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	bool ok = fd >= 0 && write_all(fd, pem, strlen(pem)) == 0 && fsync(fd) == 0;
	int saved = errno;
	if (fd >= 0 && close(fd) < 0 && ok) {
		ok = false;
		saved = errno;
	}
	OPENSSL_cleanse(pem, strlen(pem));
	free(pem);
	if (!ok) {
		errfmt(err, errsz, "cannot write account key %s: %s", path, strerror(saved));
		if (fd >= 0)
			(void)unlink(path); /* half written: the next attempt makes a new one */
		EVP_PKEY_free(key);
		return NULL;
	}
	return key;
}

EVP_PKEY *acme_account_key(const char *path, char *err, size_t errsz)
{
	int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0 && errno == ENOENT)
		return acme_account_key_create(path, err, errsz);
	if (fd < 0) {
		errfmt(err, errsz, "account key %s: %s", path, strerror(errno));
		return NULL;
	}
	EVP_PKEY *key = acme_account_key_read(fd, path, err, errsz);
	close(fd);
	return key;
}

/* ---- JWK, thumbprint, key authorization ------------------------------------ */

static char *acme_coordinate(EVP_PKEY *key, const char *param)
{
	BIGNUM *bn = NULL;
	unsigned char buf[ACME_P256_BYTES];
	char *out = NULL;
	if (EVP_PKEY_get_bn_param(key, param, &bn) == 1 &&
	    BN_bn2binpad(bn, buf, sizeof buf) == (int)sizeof buf)
		out = acme_b64url(buf, sizeof buf);
	BN_free(bn);
	return out;
}

char *acme_jwk(EVP_PKEY *key)
{
	char *x = acme_coordinate(key, OSSL_PKEY_PARAM_EC_PUB_X);
	char *y = acme_coordinate(key, OSSL_PKEY_PARAM_EC_PUB_Y);
	char *jwk = NULL;
	/* x and y are base64url: nothing in them needs escaping */
	if (x && y)
		jwk = xasprintf("{\"crv\":\"P-256\",\"kty\":\"EC\",\"x\":\"%s\",\"y\":\"%s\"}", x, y);
	free(x);
	free(y);
	return jwk;
}

char *acme_thumbprint(EVP_PKEY *key)
{
	char *jwk = acme_jwk(key);
	if (!jwk)
		return NULL;
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	char *out = NULL;
	if (EVP_Digest(jwk, strlen(jwk), md, &mdlen, EVP_sha256(), NULL) == 1)
		out = acme_b64url(md, mdlen);
	free(jwk);
	return out;
}

char *acme_key_authorization(const char *token, EVP_PKEY *key)
{
	char *tp = acme_thumbprint(key);
	if (!tp)
		return NULL;
	char *ka = xasprintf("%s.%s", token, tp);
	free(tp);
	return ka;
}

/* ---- JWS ---------------------------------------------------------------------- */

/* ES256: the DER ECDSA signature as the fixed 64 bytes r || s (RFC 7518 §3.4). */
static char *acme_sign_es256(EVP_PKEY *key, const char *input)
{
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	unsigned char der[128];
	size_t derlen = sizeof der;
	char *out = NULL;
	if (!md || EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, key) != 1 ||
	    EVP_DigestSign(md, der, &derlen, (const unsigned char *)input, strlen(input)) != 1) {
		EVP_MD_CTX_free(md);
		return NULL;
	}
	EVP_MD_CTX_free(md);
	const unsigned char *p = der;
	ECDSA_SIG *sig = d2i_ECDSA_SIG(NULL, &p, (long)derlen);
	unsigned char rs[2 * ACME_P256_BYTES];
	if (sig && BN_bn2binpad(ECDSA_SIG_get0_r(sig), rs, ACME_P256_BYTES) == ACME_P256_BYTES &&
	    BN_bn2binpad(ECDSA_SIG_get0_s(sig), rs + ACME_P256_BYTES, ACME_P256_BYTES) ==
		ACME_P256_BYTES)
		out = acme_b64url(rs, sizeof rs);
	ECDSA_SIG_free(sig);
	return out;
}

static char *acme_protected_header(EVP_PKEY *key, const char *kid, const char *nonce,
				   const char *url)
{
	json_t *h = json_pack("{s:s, s:s, s:s}", "alg", "ES256", "nonce", nonce, "url", url);
	if (!h)
		return NULL;
	int r;
	if (kid) {
		r = json_object_set_new(h, "kid", json_string(kid));
	} else {
		char *jwk = acme_jwk(key);
		json_t *j = jwk ? json_loads(jwk, 0, NULL) : NULL;
		free(jwk);
		r = j ? json_object_set_new(h, "jwk", j) : -1;
	}
	char *text = r == 0 ? json_dumps(h, JSON_COMPACT) : NULL;
	json_decref(h);
	return text;
}

char *acme_jws(EVP_PKEY *key, const char *kid, const char *nonce, const char *url,
	       const char *payload)
{
	char *header = acme_protected_header(key, kid, nonce, url);
	if (!header)
		return NULL;
	char *h64 = acme_b64url_str(header);
	free(header);
	char *p64 = acme_b64url_str(payload ? payload : "");
	char *input = xasprintf("%s.%s", h64, p64);
	char *sig = acme_sign_es256(key, input);
	free(input);
	char *body = NULL;
	if (sig) {
		json_t *o = json_pack("{s:s, s:s, s:s}", "protected", h64, "payload", p64,
				      "signature", sig);
		body = o ? json_dumps(o, JSON_COMPACT) : NULL;
		json_decref(o);
	}
	free(sig);
	free(h64);
	free(p64);
	return body;
}

/* ---- the certificate's key and request ---------------------------------------- */

static bool acme_csr_names(X509_REQ *req, const char *const *names, size_t nnames)
{
	X509_NAME *subject = X509_NAME_new();
	bool ok = subject &&
		  X509_NAME_add_entry_by_txt(subject, "CN", MBSTRING_UTF8,
					     (const unsigned char *)names[0], -1, -1, 0) == 1 &&
		  X509_REQ_set_subject_name(req, subject) == 1;
	X509_NAME_free(subject);
	GENERAL_NAMES *gens = sk_GENERAL_NAME_new_null();
	for (size_t i = 0; ok && i < nnames; i++) {
		GENERAL_NAME *g = GENERAL_NAME_new();
		ASN1_IA5STRING *s = ASN1_IA5STRING_new();
		ok = g && s && gens && ASN1_STRING_set(s, names[i], -1) == 1;
		if (ok) {
			GENERAL_NAME_set0_value(g, GEN_DNS, s);
			s = NULL;
			ok = sk_GENERAL_NAME_push(gens, g) > 0;
			if (ok)
				g = NULL;
		}
		ASN1_IA5STRING_free(s);
		GENERAL_NAME_free(g);
	}
	STACK_OF(X509_EXTENSION) *exts = sk_X509_EXTENSION_new_null();
	X509_EXTENSION *san = ok ? X509V3_EXT_i2d(NID_subject_alt_name, 0, gens) : NULL;
	ok = ok && exts && san && sk_X509_EXTENSION_push(exts, san) > 0;
	if (!ok)
		X509_EXTENSION_free(san); /* not owned by exts */
	ok = ok && X509_REQ_add_extensions(req, exts) == 1;
	sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
	GENERAL_NAMES_free(gens);
	return ok;
}

char *acme_csr(const char *const *names, size_t nnames, EVP_PKEY **keyp, char *err,
	       size_t errsz)
{
	*keyp = NULL;
	if (nnames == 0) {
		errfmt(err, errsz, "no names for the certificate");
		return NULL;
	}
	EVP_PKEY *key = EVP_EC_gen("P-256");
	X509_REQ *req = X509_REQ_new();
	bool ok = key && req && X509_REQ_set_version(req, X509_REQ_VERSION_1) == 1 &&
		  X509_REQ_set_pubkey(req, key) == 1 && acme_csr_names(req, names, nnames) &&
		  X509_REQ_sign(req, key, EVP_sha256()) > 0;
	unsigned char *der = NULL;
	int len = ok ? i2d_X509_REQ(req, &der) : -1;
	X509_REQ_free(req);
	if (len <= 0) {
		errfmt(err, errsz, "cannot make the certificate request: %s", acme_openssl_reason());
		EVP_PKEY_free(key);
		return NULL;
	}
	char *out = acme_b64url(der, (size_t)len);
	OPENSSL_free(der);
	*keyp = key;
	return out;
}

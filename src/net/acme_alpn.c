/* acme_alpn: tls-alpn-01 (RFC 8737 §3): challenge certificates by name,
 * handed out from the ClientHello callback of every TLS context. */
#include "net/acme_alpn.h"

#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "lib/util.h"

enum {
	ACME_ALPN_MAX = 100,          /* names of one order */
	ACME_ALPN_NAME_MAX = 253,     /* a DNS name */
	ACME_ALPN_VALID_S = 7 * 86400,
};

/* id-pe-acmeIdentifier, RFC 8737 §6.1 */
static const char acme_alpn_oid[] = "1.3.6.1.5.5.7.1.31";

struct acme_alpn_cert {
	char name[ACME_ALPN_NAME_MAX + 1];
	X509 *cert;
	EVP_PKEY *key;
};

static pthread_mutex_t acme_alpn_lock = PTHREAD_MUTEX_INITIALIZER;
static struct acme_alpn_cert acme_alpn_certs[ACME_ALPN_MAX];
static size_t acme_alpn_n;
static int acme_alpn_index = -1;
static CRYPTO_ONCE acme_alpn_once = CRYPTO_ONCE_STATIC_INIT;

static void acme_alpn_init(void)
{
	acme_alpn_index = CRYPTO_get_ex_new_index(CRYPTO_EX_INDEX_SSL, 0, NULL, NULL, NULL, NULL);
}

static bool acme_alpn_ready(void)
{
	return CRYPTO_THREAD_run_once(&acme_alpn_once, acme_alpn_init) && acme_alpn_index >= 0;
}

/* ---- the challenge certificate ---------------------------------------------- */

/* The critical acmeIdentifier extension: extnValue is the DER of
 * Authorization ::= OCTET STRING (SIZE (32)), SHA-256 of the key
 * authorization (RFC 8737 §3). */
static bool acme_alpn_add_identifier(X509 *x, const char *key_authorization)
{
	unsigned char der[2 + 32];
	der[0] = 0x04; /* OCTET STRING */
	der[1] = 32;
	if (EVP_Digest(key_authorization, strlen(key_authorization), der + 2, NULL, EVP_sha256(),
		       NULL) != 1)
		return false;
	ASN1_OBJECT *obj = OBJ_txt2obj(acme_alpn_oid, 1);
	ASN1_OCTET_STRING *val = ASN1_OCTET_STRING_new();
	X509_EXTENSION *ext = NULL;
	bool ok = obj && val && ASN1_OCTET_STRING_set(val, der, sizeof der) == 1 &&
		  (ext = X509_EXTENSION_create_by_OBJ(NULL, obj, 1, val)) != NULL &&
		  X509_add_ext(x, ext, -1) == 1;
	X509_EXTENSION_free(ext);
	ASN1_OCTET_STRING_free(val);
	ASN1_OBJECT_free(obj);
	return ok;
}

static bool acme_alpn_add_san(X509 *x, const char *name)
{
	GENERAL_NAMES *gens = sk_GENERAL_NAME_new_null();
	GENERAL_NAME *g = GENERAL_NAME_new();
	ASN1_IA5STRING *s = ASN1_IA5STRING_new();
	bool ok = gens && g && s && ASN1_STRING_set(s, name, -1) == 1;
	if (ok) {
		GENERAL_NAME_set0_value(g, GEN_DNS, s);
		s = NULL;
		ok = sk_GENERAL_NAME_push(gens, g) > 0;
		if (ok)
			g = NULL;
	}
	ok = ok && X509_add1_ext_i2d(x, NID_subject_alt_name, gens, 0, X509V3_ADD_DEFAULT) == 1;
	ASN1_IA5STRING_free(s);
	GENERAL_NAME_free(g);
	GENERAL_NAMES_free(gens);
	return ok;
}

static X509 *acme_alpn_cert_new(const char *name, const char *key_authorization, EVP_PKEY *key)
{
	X509 *x = X509_new();
	X509_NAME *subject = X509_NAME_new();
	unsigned char serial[16];
	BIGNUM *bn = NULL;
	bool ok = x && subject && RAND_bytes(serial, sizeof serial) == 1 &&
		  (serial[0] &= 0x7f, (bn = BN_bin2bn(serial, sizeof serial, NULL)) != NULL) &&
		  BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) != NULL &&
		  X509_set_version(x, X509_VERSION_3) == 1 &&
		  X509_gmtime_adj(X509_getm_notBefore(x), -3600) &&
		  X509_gmtime_adj(X509_getm_notAfter(x), ACME_ALPN_VALID_S) &&
		  X509_NAME_add_entry_by_txt(subject, "CN", MBSTRING_UTF8,
					     (const unsigned char *)name, -1, -1, 0) == 1 &&
		  X509_set_subject_name(x, subject) == 1 && X509_set_issuer_name(x, subject) == 1 &&
		  X509_set_pubkey(x, key) == 1 && acme_alpn_add_san(x, name) &&
		  acme_alpn_add_identifier(x, key_authorization) &&
		  X509_sign(x, key, EVP_sha256()) > 0;
	BN_free(bn);
	X509_NAME_free(subject);
	if (!ok) {
		X509_free(x);
		return NULL;
	}
	return x;
}

int acme_alpn_publish(const char *name, const char *key_authorization, char *err, size_t errsz)
{
	if (strlen(name) > ACME_ALPN_NAME_MAX) {
		errfmt(err, errsz, "tls-alpn-01: name too long");
		return -1;
	}
	EVP_PKEY *key = EVP_EC_gen("P-256");
	X509 *x = key ? acme_alpn_cert_new(name, key_authorization, key) : NULL;
	if (!x) {
		unsigned long e = ERR_get_error();
		errfmt(err, errsz, "tls-alpn-01 certificate for %s: %s", name,
		       e ? ERR_reason_error_string(e) : "unknown OpenSSL error");
		ERR_clear_error();
		EVP_PKEY_free(key);
		return -1;
	}
	pthread_mutex_lock(&acme_alpn_lock);
	bool room = acme_alpn_n < ACME_ALPN_MAX;
	if (room) {
		struct acme_alpn_cert *c = &acme_alpn_certs[acme_alpn_n++];
		memcpy(c->name, name, strlen(name) + 1);
		c->cert = x;
		c->key = key;
	}
	pthread_mutex_unlock(&acme_alpn_lock);
	if (!room) {
		errfmt(err, errsz, "tls-alpn-01: more than %d names", ACME_ALPN_MAX);
		X509_free(x);
		EVP_PKEY_free(key);
		return -1;
	}
	return 0;
}

void acme_alpn_clear(void)
{
	pthread_mutex_lock(&acme_alpn_lock);
	for (size_t i = 0; i < acme_alpn_n; i++) {
		X509_free(acme_alpn_certs[i].cert);
		EVP_PKEY_free(acme_alpn_certs[i].key);
	}
	acme_alpn_n = 0;
	pthread_mutex_unlock(&acme_alpn_lock);
}

/* ---- the ClientHello ---------------------------------------------------------------- */

static unsigned acme_alpn_u16(const unsigned char *p)
{
	return (unsigned)p[0] << 8 | p[1];
}

bool acme_alpn_sni(const unsigned char *ext, size_t len, char *out, size_t outsz)
{
	if (len < 2 || acme_alpn_u16(ext) != len - 2)
		return false;
	size_t i = 2;
	while (i + 3 <= len) {
		unsigned type = ext[i];
		size_t n = acme_alpn_u16(ext + i + 1);
		i += 3;
		if (n > len - i)
			return false;
		if (type == 0) { /* host_name */
			if (n == 0 || n >= outsz || memchr(ext + i, '\0', n))
				return false;
			memcpy(out, ext + i, n);
			out[n] = '\0';
			return true;
		}
		i += n;
	}
	return false;
}

bool acme_alpn_only_acme(const unsigned char *ext, size_t len)
{
	static const char proto[] = ACME_ALPN_PROTOCOL;
	size_t plen = sizeof proto - 1;
	return len == 2 + 1 + plen && acme_alpn_u16(ext) == 1 + plen && ext[2] == plen &&
	       memcmp(ext + 3, proto, plen) == 0;
}

int acme_alpn_hello(SSL *ssl)
{
	const unsigned char *alpn, *sni;
	size_t alpnlen, snilen;
	if (SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_application_layer_protocol_negotiation,
				      &alpn, &alpnlen) != 1 ||
	    !acme_alpn_only_acme(alpn, alpnlen))
		return 0;
	char name[ACME_ALPN_NAME_MAX + 1];
	if (SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_server_name, &sni, &snilen) != 1 ||
	    !acme_alpn_sni(sni, snilen, name, sizeof name) || !acme_alpn_ready())
		return -1;
	int r = -1;
	pthread_mutex_lock(&acme_alpn_lock);
	for (size_t i = 0; i < acme_alpn_n && r < 0; i++) {
		const struct acme_alpn_cert *c = &acme_alpn_certs[i];
		if (strcasecmp(c->name, name) != 0)
			continue;
		/* both take their own reference: the table may be cleared */
		if (SSL_use_certificate(ssl, c->cert) == 1 && SSL_use_PrivateKey(ssl, c->key) == 1 &&
		    SSL_set_ex_data(ssl, acme_alpn_index, (void *)1) == 1)
			r = 1;
		else
			break;
	}
	pthread_mutex_unlock(&acme_alpn_lock);
	ERR_clear_error();
	return r;
}

bool acme_alpn_is_validation(const SSL *ssl)
{
	return acme_alpn_index >= 0 && SSL_get_ex_data(ssl, acme_alpn_index) != NULL;
}

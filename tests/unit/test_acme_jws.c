/* Unit tests for acme_jws: base64url (RFC 4648 §5 without padding), the
 * account key file, the JWK and thumbprint (RFC 7638), an ES256 JWS that
 * OpenSSL verifies (RFC 7515, RFC 7518 §3.4) and the CSR's names. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>
#include <jansson.h>
#include <openssl/bn.h>
#include <openssl/ecdsa.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "net/acme_jws.h"
#include "unitfs.h"

static void assert_b64(const char *in, size_t n, const char *want)
{
	char *got = acme_b64url((const unsigned char *)in, n);
	assert_string_equal(got, want);
	free(got);
}

static void test_b64url(void **state)
{
	assert_b64("", 0, "");
	assert_b64("f", 1, "Zg");
	assert_b64("fo", 2, "Zm8");
	assert_b64("foo", 3, "Zm9v");
	assert_b64("foob", 4, "Zm9vYg");
	assert_b64("\xfb\xff", 2, "-_8"); /* the URL-safe letters, never + / = */
}

/* base64url back to bytes (test only; the input is known to be good). */
static unsigned char *b64url_decode(const char *s, size_t *n)
{
	size_t len = strlen(s);
	char *std = xmalloc(len + 4);
	for (size_t i = 0; i < len; i++)
		std[i] = s[i] == '-' ? '+' : s[i] == '_' ? '/' : s[i];
	size_t padded = len;
	while (padded % 4)
		std[padded++] = '=';
	std[padded] = '\0';
	unsigned char *out = xmalloc(padded);
	int r = EVP_DecodeBlock(out, (const unsigned char *)std, (int)padded);
	assert_true(r >= 0);
	*n = (size_t)r - (padded - len);
	free(std);
	return out;
}

static char *tmpdir_make(void)
{
	char *d = xstrdup("/tmp/test_acme_jws.XXXXXX");
	assert_non_null(mkdtemp(d));
	return d;
}

static void test_account_key_created_then_reused(void **state)
{
	char *dir = tmpdir_make();
	char *path = xasprintf("%s/account.key", dir);
	char err[256];
	EVP_PKEY *k1 = acme_account_key(path, err, sizeof err);
	assert_non_null(k1);
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	EVP_PKEY *k2 = acme_account_key(path, err, sizeof err);
	assert_non_null(k2);
	assert_int_equal(EVP_PKEY_eq(k1, k2), 1);
	/* readable by others: refused, never used */
	assert_int_equal(chmod(path, 0644), 0);
	assert_null(acme_account_key(path, err, sizeof err));
	assert_non_null(strstr(err, "may be read by group or others"));
	EVP_PKEY_free(k1);
	EVP_PKEY_free(k2);
	free(path);
	assert_int_equal(rm_tree(dir), 0);
	free(dir);
}

static void test_jwk_and_thumbprint(void **state)
{
	EVP_PKEY *key = EVP_EC_gen("P-256");
	char *jwk = acme_jwk(key);
	/* RFC 7638 §3.2: the required members only, in lexicographic order */
	static const char head[] = "{\"crv\":\"P-256\",\"kty\":\"EC\",\"x\":\"";
	assert_int_equal(strncmp(jwk, head, sizeof head - 1), 0);
	assert_non_null(strstr(jwk, "\",\"y\":\""));
	unsigned char md[32];
	assert_int_equal(EVP_Digest(jwk, strlen(jwk), md, NULL, EVP_sha256(), NULL), 1);
	char *want = acme_b64url(md, sizeof md);
	char *tp = acme_thumbprint(key);
	assert_string_equal(tp, want);
	char *ka = acme_key_authorization("tok-EN_1", key);
	char *expect = xasprintf("tok-EN_1.%s", tp);
	assert_string_equal(ka, expect);
	free(expect);
	free(ka);
	free(tp);
	free(want);
	free(jwk);
	EVP_PKEY_free(key);
}

/* The signature over "protected.payload" verifies with the key. */
static void assert_es256_valid(EVP_PKEY *key, const char *prot, const char *payload,
			       const char *sig64)
{
	size_t n;
	unsigned char *rs = b64url_decode(sig64, &n);
	assert_int_equal(n, 64);
	ECDSA_SIG *sig = ECDSA_SIG_new();
	assert_int_equal(ECDSA_SIG_set0(sig, BN_bin2bn(rs, 32, NULL), BN_bin2bn(rs + 32, 32, NULL)), 1);
	unsigned char *der = NULL;
	int derlen = i2d_ECDSA_SIG(sig, &der);
	char *input = xasprintf("%s.%s", prot, payload);
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	assert_int_equal(EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, key), 1);
	assert_int_equal(EVP_DigestVerify(md, der, (size_t)derlen, (unsigned char *)input,
					  strlen(input)), 1);
	EVP_MD_CTX_free(md);
	free(input);
	OPENSSL_free(der);
	ECDSA_SIG_free(sig);
	free(rs);
}

static json_t *decode_part(const char *b64)
{
	size_t n;
	unsigned char *raw = b64url_decode(b64, &n);
	json_t *j = n ? json_loadb((const char *)raw, n, 0, NULL) : json_object();
	free(raw);
	assert_non_null(j);
	return j;
}

static void test_jws_with_jwk_then_kid(void **state)
{
	EVP_PKEY *key = EVP_EC_gen("P-256");
	char *body = acme_jws(key, NULL, "nonce-1", "https://ca.example/new-acct",
			      "{\"termsOfServiceAgreed\":true}");
	json_t *o = json_loads(body, 0, NULL);
	const char *prot = json_string_value(json_object_get(o, "protected"));
	const char *payload = json_string_value(json_object_get(o, "payload"));
	assert_es256_valid(key, prot, payload,
			   json_string_value(json_object_get(o, "signature")));
	json_t *h = decode_part(prot);
	assert_string_equal(json_string_value(json_object_get(h, "alg")), "ES256");
	assert_string_equal(json_string_value(json_object_get(h, "nonce")), "nonce-1");
	assert_string_equal(json_string_value(json_object_get(h, "url")),
			    "https://ca.example/new-acct");
	assert_string_equal(json_string_value(json_object_get(json_object_get(h, "jwk"), "kty")), "EC");
	assert_null(json_object_get(h, "kid"));
	json_decref(h);
	json_t *p = decode_part(payload);
	assert_true(json_is_true(json_object_get(p, "termsOfServiceAgreed")));
	json_decref(p);
	json_decref(o);
	free(body);
	/* with an account: kid instead of jwk; POST-as-GET has an empty payload */
	body = acme_jws(key, "https://ca.example/acct/1", "n2", "https://ca.example/order/1", NULL);
	o = json_loads(body, 0, NULL);
	assert_string_equal(json_string_value(json_object_get(o, "payload")), "");
	h = decode_part(json_string_value(json_object_get(o, "protected")));
	assert_string_equal(json_string_value(json_object_get(h, "kid")), "https://ca.example/acct/1");
	assert_null(json_object_get(h, "jwk"));
	assert_es256_valid(key, json_string_value(json_object_get(o, "protected")), "",
			   json_string_value(json_object_get(o, "signature")));
	json_decref(h);
	json_decref(o);
	free(body);
	EVP_PKEY_free(key);
}

static void test_csr_names(void **state)
{
	const char *names[] = {"mail.example.test", "smtp.example.test"};
	EVP_PKEY *key = NULL;
	char err[256];
	char *csr = acme_csr(names, 2, &key, err, sizeof err);
	assert_non_null(csr);
	assert_non_null(key);
	size_t n;
	unsigned char *der = b64url_decode(csr, &n);
	const unsigned char *p = der;
	X509_REQ *req = d2i_X509_REQ(NULL, &p, (long)n);
	assert_non_null(req);
	assert_int_equal(X509_REQ_verify(req, key), 1);
	STACK_OF(X509_EXTENSION) *exts = X509_REQ_get_extensions(req);
	GENERAL_NAMES *gens = X509V3_get_d2i(exts, NID_subject_alt_name, NULL, NULL);
	assert_int_equal(sk_GENERAL_NAME_num(gens), 2);
	for (int i = 0; i < 2; i++) {
		const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
		assert_int_equal(g->type, GEN_DNS);
		assert_string_equal((const char *)ASN1_STRING_get0_data(g->d.dNSName), names[i]);
	}
	GENERAL_NAMES_free(gens);
	sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
	X509_REQ_free(req);
	free(der);
	free(csr);
	EVP_PKEY_free(key);
	assert_null(acme_csr(names, 0, &key, err, sizeof err));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_b64url),
		cmocka_unit_test(test_account_key_created_then_reused),
		cmocka_unit_test(test_jwk_and_thumbprint),
		cmocka_unit_test(test_jws_with_jwk_then_kid),
		cmocka_unit_test(test_csr_names),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Unit tests for acme_alpn: the ClientHello extensions it reads (RFC 6066
 * §3 server_name, RFC 7301 §3.1 ALPN), and a real handshake over a BIO
 * pair in which a client offering only acme-tls/1 gets the challenge
 * certificate with the critical acmeIdentifier extension (RFC 8737 §3). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "net/acme_alpn.h"

static void test_sni_extension(void **state)
{
	char name[64];
	/* list of 16: type 0, length 13, "mail.example." */
	const unsigned char ok[] = {0, 16, 0, 0, 13, 'm', 'a', 'i', 'l', '.', 'e', 'x', 'a', 'm',
				    'p', 'l', 'e', '.'};
	assert_true(acme_alpn_sni(ok, sizeof ok, name, sizeof name));
	assert_string_equal(name, "mail.example.");
	assert_false(acme_alpn_sni(ok, sizeof ok - 1, name, sizeof name)); /* list length wrong */
	char small[8];
	assert_false(acme_alpn_sni(ok, sizeof ok, small, sizeof small)); /* never truncated */
	const unsigned char nul[] = {0, 5, 0, 0, 2, 'a', 0};
	assert_false(acme_alpn_sni(nul, sizeof nul, name, sizeof name));
	const unsigned char over[] = {0, 5, 0, 0, 9, 'a', 'b'};
	assert_false(acme_alpn_sni(over, sizeof over, name, sizeof name));
	assert_false(acme_alpn_sni(ok, 1, name, sizeof name));
}

static void test_alpn_only_acme(void **state)
{
	const unsigned char only[] = {0, 11, 10, 'a', 'c', 'm', 'e', '-', 't', 'l', 's', '/', '1'};
	assert_true(acme_alpn_only_acme(only, sizeof only));
	/* acme-tls/1 beside smtp: an ordinary client, never a validation */
	const unsigned char two[] = {0, 16, 10, 'a', 'c', 'm', 'e', '-', 't', 'l', 's', '/', '1',
				     4, 's', 'm', 't', 'p'};
	assert_false(acme_alpn_only_acme(two, sizeof two));
	const unsigned char other[] = {0, 5, 4, 's', 'm', 't', 'p'};
	assert_false(acme_alpn_only_acme(other, sizeof other));
	assert_false(acme_alpn_only_acme(only, 0));
}

static int hello_cb(SSL *ssl, int *al, void *arg)
{
	return acme_alpn_hello(ssl) >= 0 ? SSL_CLIENT_HELLO_SUCCESS : SSL_CLIENT_HELLO_ERROR;
}

static int alpn_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen,
		   const unsigned char *in, unsigned int inlen, void *arg)
{
	*out = in + 1;
	*outlen = in[0];
	return SSL_TLSEXT_ERR_OK;
}

/* One handshake over a BIO pair; the server's certificate, or NULL. */
static X509 *handshake(const char *sni, bool *validation)
{
	SSL_CTX *sctx = SSL_CTX_new(TLS_server_method());
	SSL_CTX *cctx = SSL_CTX_new(TLS_client_method());
	assert_non_null(sctx);
	assert_non_null(cctx);
	SSL_CTX_set_client_hello_cb(sctx, hello_cb, NULL);
	SSL_CTX_set_alpn_select_cb(sctx, alpn_cb, NULL);
	static const unsigned char protos[] = "\x0a" "acme-tls/1";
	assert_int_equal(SSL_CTX_set_alpn_protos(cctx, protos, sizeof protos - 1), 0);
	SSL *s = SSL_new(sctx), *c = SSL_new(cctx);
	BIO *sb, *cb;
	assert_int_equal(BIO_new_bio_pair(&sb, 0, &cb, 0), 1);
	SSL_set_bio(s, sb, sb);
	SSL_set_bio(c, cb, cb);
	SSL_set_accept_state(s);
	SSL_set_connect_state(c);
	assert_int_equal(SSL_set_tlsext_host_name(c, sni), 1);
	int rs = 0, rc = 0;
	for (int i = 0; i < 20 && (rs != 1 || rc != 1); i++) {
		rc = SSL_do_handshake(c);
		rs = SSL_do_handshake(s);
		if (rs <= 0 && SSL_get_error(s, rs) == SSL_ERROR_SSL)
			break;
	}
	X509 *peer = rc == 1 ? SSL_get1_peer_certificate(c) : NULL;
	*validation = acme_alpn_is_validation(s);
	SSL_free(s);
	SSL_free(c);
	SSL_CTX_free(sctx);
	SSL_CTX_free(cctx);
	ERR_clear_error();
	return peer;
}

static void test_handshake_gets_challenge_certificate(void **state)
{
	char err[128];
	const char *ka = "token.thumbprint";
	assert_int_equal(acme_alpn_publish("mail.example.test", ka, err, sizeof err), 0);
	bool validation = false;
	X509 *x = handshake("MAIL.example.test", &validation);
	assert_non_null(x);
	assert_true(validation);
	assert_int_equal(X509_check_host(x, "mail.example.test", 0, 0, NULL), 1);
	ASN1_OBJECT *oid = OBJ_txt2obj("1.3.6.1.5.5.7.1.31", 1);
	int at = X509_get_ext_by_OBJ(x, oid, -1);
	assert_true(at >= 0);
	X509_EXTENSION *ext = X509_get_ext(x, at);
	assert_int_equal(X509_EXTENSION_get_critical(ext), 1);
	const ASN1_OCTET_STRING *v = X509_EXTENSION_get_data(ext);
	unsigned char want[34] = {0x04, 32};
	assert_int_equal(EVP_Digest(ka, strlen(ka), want + 2, NULL, EVP_sha256(), NULL), 1);
	assert_int_equal(ASN1_STRING_length(v), 34);
	assert_memory_equal(ASN1_STRING_get0_data(v), want, 34);
	ASN1_OBJECT_free(oid);
	X509_free(x);
	/* a name nothing is published for: the handshake is refused */
	assert_null(handshake("other.example.test", &validation));
	acme_alpn_clear();
	assert_null(handshake("mail.example.test", &validation));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_sni_extension),
		cmocka_unit_test(test_alpn_only_acme),
		cmocka_unit_test(test_handshake_gets_challenge_certificate),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

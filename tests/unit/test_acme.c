/* Unit tests for the ACME client's planning: renewal at two thirds of the
 * certificate's lifetime, at once when it is missing or lacks a name, and
 * the back-off after failed attempts. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "daemon/acme.h"
#include "daemon/acme_client.h"
#include "unitfs.h"

/* A self-signed certificate for san, valid from nb to na (epoch), at path. */
static void write_cert(const char *path, const char *san, long nb, long na)
{
	EVP_PKEY *key = EVP_EC_gen("P-256");
	X509 *x = X509_new();
	assert_non_null(key);
	assert_non_null(x);
	assert_non_null(ASN1_TIME_set(X509_getm_notBefore(x), (time_t)nb));
	assert_non_null(ASN1_TIME_set(X509_getm_notAfter(x), (time_t)na));
	assert_int_equal(X509_set_pubkey(x, key), 1);
	X509V3_CTX v3;
	X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
	X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, &v3, NID_subject_alt_name, san);
	assert_non_null(e);
	assert_int_equal(X509_add_ext(x, e, -1), 1);
	X509_EXTENSION_free(e);
	assert_true(X509_sign(x, key, EVP_sha256()) > 0);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	assert_int_equal(PEM_write_X509(f, x), 1);
	assert_int_equal(fclose(f), 0);
	X509_free(x);
	EVP_PKEY_free(key);
}

static const char *const names[] = {"mail.example.test", "smtp.example.test"};

static void test_renew_delay(void **state)
{
	char dir[] = "/tmp/test_acme.XXXXXX";
	assert_non_null(mkdtemp(dir));
	char *path = xasprintf("%s/cert.pem", dir);
	long na;
	/* none yet: at once */
	assert_int_equal(acme_renew_delay(path, names, 2, 1000000, &na), 0);
	assert_int_equal(na, 0);
	/* 90 days from 1000000: renewed after 60 */
	long nb = 1000000, life = 90L * 86400;
	write_cert(path, "DNS:mail.example.test,DNS:smtp.example.test", nb, nb + life);
	assert_int_equal(acme_renew_delay(path, names, 2, nb + 86400, &na), 59L * 86400);
	assert_int_equal(na, nb + life);
	/* past two thirds, or expired: at once */
	assert_int_equal(acme_renew_delay(path, names, 2, nb + 61L * 86400, &na), 0);
	assert_int_equal(acme_renew_delay(path, names, 2, nb + 100L * 86400, &na), 0);
	/* a name the certificate lacks: at once, whatever its dates */
	write_cert(path, "DNS:mail.example.test", nb, nb + life);
	assert_int_equal(acme_renew_delay(path, names, 2, nb + 86400, &na), 0);
	assert_int_equal(acme_renew_delay(path, names, 1, nb + 86400, &na), 59L * 86400);
	free(path);
	assert_int_equal(rm_tree(dir), 0);
}

static void test_retry_delay(void **state)
{
	assert_int_equal(acme_retry_delay(1), ACME_RETRY_MIN_S);
	assert_int_equal(acme_retry_delay(2), 2 * ACME_RETRY_MIN_S);
	assert_int_equal(acme_retry_delay(3), 4 * ACME_RETRY_MIN_S);
	assert_int_equal(acme_retry_delay(40), ACME_RETRY_MAX_S);
	assert_int_equal(acme_retry_delay(1000000), ACME_RETRY_MAX_S);
}

static void test_directory_target(void **state)
{
	struct acme_target t;
	assert_int_equal(acme_directory_target("https://acme.example.org/directory", &t), 0);
	assert_string_equal(t.host, "acme.example.org");
	assert_int_equal(t.port, 443);
	assert_false(t.literal);
	assert_int_equal(acme_directory_target("https://127.0.0.1:14000/dir", &t), 0);
	assert_string_equal(t.host, "127.0.0.1");
	assert_int_equal(t.port, 14000);
	assert_true(t.literal);
	assert_int_equal(acme_directory_target("https://[::1]:8443/dir", &t), 0);
	assert_string_equal(t.host, "::1"); /* brackets off */
	assert_true(t.literal);
	assert_int_equal(acme_directory_target("not a url", &t), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_renew_delay),
		cmocka_unit_test(test_retry_delay),
		cmocka_unit_test(test_directory_target),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

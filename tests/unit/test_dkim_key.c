/* Unit tests for dkim_key: key records (RFC 6376 §3.6.1) of RFC 8463 §A.2,
 * the tags that restrict a key, revoked keys, records made from keys and
 * read back, and the private keys posthorn accepts (unitfs.h folders). */
#define _GNU_SOURCE /* nftw */
#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/pem.h>

#include "mailauth/dkim_key.h"
#include "unitfs.h"

/* RFC 8463 §A.2 */
static const char rfc8463_ed25519[] =
    "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=";
static const char rfc8463_rsa[] =
    "v=DKIM1; k=rsa; p=MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDkHlOQoBTzWR"
    "iGs5V6NpP3idY6Wk08a5qhdR6wy5bdOKb2jLQiY/J16JYi0Qvx/byYzCNb3W91y3FutAC"
    "DfzwQ/BC/e/8uBsCR+yz1Lxj+PL6lHvqMKrM3rG4hstT5QjvHO9PzoxZyVYLzBfO2EeC3"
    "Ip3G+2kryOTIKT+l/K4w3QIDAQAB";

static int parse(const char *s, struct dkim_pubkey *k, char *err, size_t errsz)
{
	return dkim_pubkey_parse(s, strlen(s), k, err, errsz);
}

static void test_rfc8463_records(void **state)
{
	struct dkim_pubkey k;
	char err[128];
	assert_int_equal(parse(rfc8463_ed25519, &k, err, sizeof err), 0);
	assert_int_equal(k.type, DKIM_KEY_ED25519);
	assert_non_null(k.pkey);
	assert_true(k.sha256_ok);
	assert_false(k.testing);
	dkim_pubkey_clear(&k);
	assert_int_equal(parse(rfc8463_rsa, &k, err, sizeof err), 0);
	assert_int_equal(k.type, DKIM_KEY_RSA);
	assert_int_equal(k.bits, 1024);
	dkim_pubkey_clear(&k);
}

static void test_restrictions_and_revocation(void **state)
{
	struct dkim_pubkey k;
	char err[128];
	assert_int_equal(parse("k=ed25519; h=sha1; t=y:s; s=email; p=11qYAYKxCrfVS/7TyWQHOg7hc"
			       "vPapiMlrwIaaPcHURo=", &k, err, sizeof err), 0);
	assert_false(k.sha256_ok);
	assert_true(k.testing);
	assert_true(k.strict_identity);
	dkim_pubkey_clear(&k);
	assert_int_equal(parse("v=DKIM1; p=", &k, err, sizeof err), 0);
	assert_null(k.pkey); /* revoked */
	dkim_pubkey_clear(&k);
}

static void test_bad_records(void **state)
{
	struct dkim_pubkey k;
	char err[128];
	const struct {
		const char *rec, *why;
	} bad[] = {
		{"k=rsa; v=DKIM1; p=", "v= is not DKIM1 in first place"},
		{"v=DKIM2; p=", "v= is not DKIM1 in first place"},
		{"k=dsa; p=", "unknown key type k=dsa"},
		{"s=web; p=", "key not for email (s=)"},
		{"v=DKIM1; k=rsa", "no p= tag"},
		{"k=ed25519; p=AAAA", "Ed25519 key of 3 bytes (not 32)"},
		{"k=rsa; p=AAAA", "p= is not an rsa public key"},
		{"k=rsa; p=!!!!", "p= is not base64 of at most 2048 bytes"},
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		assert_int_equal(parse(bad[i].rec, &k, err, sizeof err), -1);
		assert_string_equal(err, bad[i].why);
	}
}

static void test_record_of_a_new_key_reads_back(void **state)
{
	for (int t = DKIM_KEY_RSA; t <= DKIM_KEY_ED25519; t++) {
		EVP_PKEY *key = dkim_key_generate((enum dkim_key_type)t);
		assert_non_null(key);
		char *rec = dkim_key_record(key);
		assert_non_null(rec);
		struct dkim_pubkey k;
		char err[128];
		assert_int_equal(parse(rec, &k, err, sizeof err), 0);
		assert_int_equal(k.type, t);
		assert_true(dkim_key_same_public(k.pkey, key));
		dkim_pubkey_clear(&k);
		free(rec);
		EVP_PKEY *other = dkim_key_generate((enum dkim_key_type)t);
		assert_false(dkim_key_same_public(other, key));
		EVP_PKEY_free(other);
		EVP_PKEY_free(key);
	}
}

static void write_pem(const char *path, EVP_PKEY *key)
{
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	assert_int_equal(PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL), 1);
	assert_int_equal(fclose(f), 0);
}

static void test_private_keys(void **state)
{
	char dir[] = "/tmp/test_dkim_key.XXXXXX";
	assert_non_null(mkdtemp(dir));
	char path[256];
	struct dkim_privkey k;
	char err[512];
	snprintf(path, sizeof path, "%s/ed.key", dir);
	EVP_PKEY *ed = dkim_key_generate(DKIM_KEY_ED25519);
	write_pem(path, ed);
	assert_int_equal(dkim_privkey_load(path, "example.test", "ed", &k, err, sizeof err), 0);
	assert_int_equal(k.type, DKIM_KEY_ED25519);
	assert_string_equal(k.selector, "ed");
	dkim_privkey_clear(&k);
	EVP_PKEY_free(ed);
	/* RSA under 2048 bits is refused for signing */
	EVP_PKEY *weak = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)1024);
	snprintf(path, sizeof path, "%s/weak.key", dir);
	write_pem(path, weak);
	EVP_PKEY_free(weak);
	assert_int_equal(dkim_privkey_load(path, "example.test", "w", &k, err, sizeof err), -1);
	assert_non_null(strstr(err, "RSA key of 1024 bits (use 2048 to 8192)"));
	/* not a key; no file */
	snprintf(path, sizeof path, "%s/junk.key", dir);
	write_file(path, "not a key\n", 10);
	assert_int_equal(dkim_privkey_load(path, "example.test", "j", &k, err, sizeof err), -1);
	assert_non_null(strstr(err, "holds no PEM private key"));
	snprintf(path, sizeof path, "%s/none.key", dir);
	assert_int_equal(dkim_privkey_load(path, "example.test", "n", &k, err, sizeof err), -1);
	assert_non_null(strstr(err, "No such file"));
	assert_int_equal(rm_tree(dir), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_rfc8463_records),
		cmocka_unit_test(test_restrictions_and_revocation),
		cmocka_unit_test(test_bad_records),
		cmocka_unit_test(test_record_of_a_new_key_reads_back),
		cmocka_unit_test(test_private_keys),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

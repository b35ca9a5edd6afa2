/* Unit tests for tls: `posthorn cert new`, loading certificate/key pairs,
 * and in-memory handshakes (a BIO pair between a client and a server SSL)
 * that prove the version and cipher policy (RFC 8446, RFC 5246), SNI
 * (RFC 6066 §3), ALPN (RFC 7301, ALPACA) and `check`'s messages. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "conf/conf.h"
#include "net/tls.h"
#include "lib/util.h"

#define HOST_EC "mail.example.test"
#define HOST_RSA "rsa.example.test"
#define HOST_OTHER "other.example.test"

/* Files made once for the whole group. */
static struct {
	char dir[64];
	char *ec_key, *ec_crt, *ec_csr;
	char *rsa_key, *rsa_crt, *rsa_csr;
	char *other_key, *other_crt;
	char *ecrsa_key, *ecrsa_crt; /* RSA, for HOST_EC too */
} g;

/* ---- helpers ------------------------------------------------------------ */

static char *path_in(const char *name)
{
	return xasprintf("%s/%s", g.dir, name);
}

/* Run cmd_cert with stdout and stderr captured into out. */
static int run_cert(char *out, size_t outsz, int argc, const char **argv)
{
	char tmpl[] = "/tmp/test_tls_out.XXXXXX";
	int fd = mkstemp(tmpl);
	assert_true(fd >= 0);
	unlink(tmpl);
	fflush(stdout);
	fflush(stderr);
	int so = dup(1), se = dup(2);
	assert_true(so >= 0 && se >= 0);
	assert_int_equal(dup2(fd, 1), 1);
	assert_int_equal(dup2(fd, 2), 2);
	int r = cmd_cert(argc, (char **)argv);
	fflush(stdout);
	fflush(stderr);
	assert_int_equal(dup2(so, 1), 1);
	assert_int_equal(dup2(se, 2), 2);
	close(so);
	close(se);
	ssize_t n = pread(fd, out, outsz - 1, 0);
	out[n > 0 ? n : 0] = '\0';
	close(fd);
	return r;
}

static int cert_new(const char *host, const char *dir, const char *rsa)
{
	char out[4096];
	const char *argv[] = {"new", "--hostname", host, "--out", dir, "--rsa", rsa};
	return run_cert(out, sizeof out, rsa ? 7 : 5, argv);
}

static X509 *read_cert(const char *path)
{
	FILE *f = fopen(path, "r");
	assert_non_null(f);
	X509 *x = PEM_read_X509(f, NULL, NULL, NULL);
	fclose(f);
	assert_non_null(x);
	return x;
}

static EVP_PKEY *read_key(const char *path)
{
	FILE *f = fopen(path, "r");
	assert_non_null(f);
	EVP_PKEY *k = PEM_read_PrivateKey(f, NULL, NULL, NULL);
	fclose(f);
	assert_non_null(k);
	return k;
}

static char *read_text(const char *path)
{
	FILE *f = fopen(path, "r");
	assert_non_null(f);
	char *buf = xcalloc(1, 65536);
	size_t n = fread(buf, 1, 65535, f);
	buf[n] = '\0';
	fclose(f);
	return buf;
}

/* A certificate of our own for key, with subjectAltName DNS:san, valid
 * from now + from_s to now + until_s seconds (negative: in the past). */
static void make_cert(const char *path, const char *key_path, const char *san, long from_s,
		      long until_s)
{
	EVP_PKEY *key = read_key(key_path);
	X509 *x = X509_new();
	X509_NAME *name = X509_NAME_new();
	assert_true(X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
					       (const unsigned char *)"test", -1, -1, 0));
	assert_true(X509_set_version(x, X509_VERSION_3));
	assert_true(ASN1_INTEGER_set(X509_get_serialNumber(x), 7));
	assert_non_null(X509_gmtime_adj(X509_getm_notBefore(x), from_s));
	assert_non_null(X509_gmtime_adj(X509_getm_notAfter(x), until_s));
	assert_true(X509_set_subject_name(x, name));
	assert_true(X509_set_issuer_name(x, name));
	assert_true(X509_set_pubkey(x, key));
	char *value = xasprintf("DNS:%s", san);
	X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, NULL, NID_subject_alt_name, value);
	assert_non_null(ext);
	assert_true(X509_add_ext(x, ext, -1));
	assert_true(X509_sign(x, key, EVP_sha256()) > 0);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	assert_true(PEM_write_X509(f, x));
	assert_int_equal(fclose(f), 0);
	X509_EXTENSION_free(ext);
	free(value);
	X509_NAME_free(name);
	X509_free(x);
	EVP_PKEY_free(key);
}

static struct conf_tls conf_with(struct conf_cert *certs, size_t n)
{
	struct conf_tls t = {
	    .certs = certs,
	    .ncerts = n,
	    .min_bits = 128,
	    .min_version = TLS_VERSION_1_2,
	};
	return t;
}

static struct conf_cert pair(char *crt, char *key, unsigned line)
{
	struct conf_cert c = {.certificate = crt, .key = key, .pos = {"test.conf", line, 5}};
	return c;
}

struct client_opts {
	int min_version, max_version;   /* 0: OpenSSL's default */
	const char *ciphers;            /* TLS 1.2 and lower */
	const char *suites;             /* TLS 1.3 */
	const char *sigalgs;            /* signature algorithms the client accepts */
	const char *groups;             /* key exchange groups the client offers */
	const char *sni;
	const char *alpn;               /* wire format, e.g. "\x04smtp" */
	bool seclevel0;
};

static SSL *client_new(const struct client_opts *o)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	assert_non_null(ctx);
	if (o->seclevel0)
		SSL_CTX_set_security_level(ctx, 0);
	if (o->min_version)
		assert_true(SSL_CTX_set_min_proto_version(ctx, o->min_version));
	if (o->max_version)
		assert_true(SSL_CTX_set_max_proto_version(ctx, o->max_version));
	if (o->ciphers)
		assert_true(SSL_CTX_set_cipher_list(ctx, o->ciphers));
	if (o->suites)
		assert_true(SSL_CTX_set_ciphersuites(ctx, o->suites));
	if (o->sigalgs)
		assert_true(SSL_CTX_set1_sigalgs_list(ctx, o->sigalgs));
	if (o->groups)
		assert_true(SSL_CTX_set1_groups_list(ctx, o->groups));
	if (o->alpn)
		assert_int_equal(SSL_CTX_set_alpn_protos(ctx, (const unsigned char *)o->alpn,
							 (unsigned)strlen(o->alpn)),
				 0);
	SSL *ssl = SSL_new(ctx);
	assert_non_null(ssl);
	SSL_CTX_free(ctx); /* the SSL keeps its reference */
	if (o->sni)
		assert_true(SSL_set_tlsext_host_name(ssl, o->sni));
	return ssl;
}

struct hs {
	SSL *server, *client;
	bool ok;
	int server_reason, client_reason; /* ERR_GET_REASON of the failure, or 0 */
};

/* One step of one side: 1 done, 0 wants more, -1 failed (reason kept). */
static int hs_step(SSL *ssl, int *reason)
{
	ERR_clear_error();
	int r = SSL_do_handshake(ssl);
	if (r == 1)
		return 1;
	int e = SSL_get_error(ssl, r);
	if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
		return 0;
	unsigned long err = ERR_peek_error();
	*reason = err ? ERR_GET_REASON(err) : -1;
	ERR_clear_error();
	return -1;
}

/* Handshake a client with a new SSL of ts over a BIO pair; the caller
 * frees with hs_free(). */
static struct hs handshake_ssl(SSL *server, const struct client_opts *o)
{
	struct hs h = {.server = server, .client = client_new(o)};
	BIO *bs, *bc;
	assert_true(BIO_new_bio_pair(&bs, 0, &bc, 0));
	SSL_set_bio(h.server, bs, bs);
	SSL_set_bio(h.client, bc, bc);
	SSL_set_accept_state(h.server);
	SSL_set_connect_state(h.client);
	int cs = 0, ss = 0;
	for (int i = 0; i < 50 && !(cs == 1 && ss == 1); i++) {
		if (cs == 0)
			cs = hs_step(h.client, &h.client_reason);
		if (ss == 0)
			ss = hs_step(h.server, &h.server_reason);
		if (cs < 0 && ss < 0)
			break;
	}
	h.ok = cs == 1 && ss == 1;
	return h;
}

static struct hs handshake(struct tls_server *ts, const struct client_opts *o)
{
	SSL *s = tls_server_ssl(ts);
	assert_non_null(s);
	return handshake_ssl(s, o);
}

static void hs_free(struct hs *h)
{
	SSL_free(h->server);
	SSL_free(h->client);
}

/* tls_server_new() with what it printed in *errtext (caller frees). */
static struct tls_server *server_new_told(const struct conf_tls *t, const char *protocol,
					  char **errtext)
{
	size_t len = 0;
	*errtext = NULL;
	FILE *f = open_memstream(errtext, &len);
	assert_non_null(f);
	struct tls_server *ts = tls_server_new(t, protocol, f);
	assert_int_equal(fclose(f), 0);
	return ts;
}

static struct tls_server *server_with(const struct conf_tls *t, const char *protocol)
{
	char *err;
	struct tls_server *ts = server_new_told(t, protocol, &err);
	if (!ts)
		fail_msg("tls_server_new: %s", err);
	assert_string_equal(err, "");
	free(err);
	assert_int_equal(ERR_peek_error(), 0); /* nothing stale for the first SSL_get_error() */
	return ts;
}

/* tls_server_new() must refuse t: what it said (caller frees). */
static char *server_refused(const struct conf_tls *t)
{
	char *err;
	struct tls_server *ts = server_new_told(t, "smtp", &err);
	assert_null(ts);
	assert_true(strlen(err) > 0);
	assert_int_equal(err[strlen(err) - 1], '\n');
	return err;
}

/* The name of the certificate the client was shown covers host. */
static bool peer_is(SSL *client, const char *host)
{
	X509 *x = SSL_get1_peer_certificate(client);
	assert_non_null(x);
	bool r = X509_check_host(x, host, 0, 0, NULL) == 1;
	X509_free(x);
	return r;
}

/* The key type (EVP_PKEY_RSA, EVP_PKEY_EC...) of the certificate the client was shown. */
static int peer_key_type(SSL *client)
{
	X509 *x = SSL_get1_peer_certificate(client);
	assert_non_null(x);
	int t = EVP_PKEY_get_base_id(X509_get0_pubkey(x));
	X509_free(x);
	return t;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	return remove(path);
}

static int group_setup(void **state)
{
	snprintf(g.dir, sizeof g.dir, "/tmp/test_tls.XXXXXX");
	if (!mkdtemp(g.dir))
		return -1;
	char *out = path_in("certs");
	if (cert_new(HOST_EC, out, NULL) != 0 || cert_new(HOST_RSA, out, "2048") != 0 ||
	    cert_new(HOST_OTHER, out, NULL) != 0)
		return -1;
	g.ec_key = xasprintf("%s/%s.key", out, HOST_EC);
	g.ec_crt = xasprintf("%s/%s.crt", out, HOST_EC);
	g.ec_csr = xasprintf("%s/%s.csr", out, HOST_EC);
	g.rsa_key = xasprintf("%s/%s.key", out, HOST_RSA);
	g.rsa_crt = xasprintf("%s/%s.crt", out, HOST_RSA);
	g.rsa_csr = xasprintf("%s/%s.csr", out, HOST_RSA);
	g.other_key = xasprintf("%s/%s.key", out, HOST_OTHER);
	g.other_crt = xasprintf("%s/%s.crt", out, HOST_OTHER);
	free(out);
	out = path_in("certs-rsa");
	if (cert_new(HOST_EC, out, "2048") != 0)
		return -1;
	g.ecrsa_key = xasprintf("%s/%s.key", out, HOST_EC);
	g.ecrsa_crt = xasprintf("%s/%s.crt", out, HOST_EC);
	free(out);
	return 0;
}

static int group_teardown(void **state)
{
	nftw(g.dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	char **p[] = {&g.ec_key, &g.ec_crt, &g.ec_csr, &g.rsa_key, &g.rsa_crt, &g.rsa_csr,
		      &g.other_key, &g.other_crt, &g.ecrsa_key, &g.ecrsa_crt};
	for (size_t i = 0; i < ARRAY_LEN(p); i++) {
		free(*p[i]);
		*p[i] = NULL;
	}
	return 0;
}

/* ---- posthorn cert new -------------------------------------------------- */

static void assert_san_dns(X509 *x, const char *host)
{
	GENERAL_NAMES *gens = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
	assert_non_null(gens);
	assert_int_equal(sk_GENERAL_NAME_num(gens), 1);
	GENERAL_NAME *gn = sk_GENERAL_NAME_value(gens, 0);
	assert_int_equal(gn->type, GEN_DNS);
	const char *v = (const char *)ASN1_STRING_get0_data(gn->d.dNSName);
	assert_int_equal(ASN1_STRING_length(gn->d.dNSName), strlen(host));
	assert_memory_equal(v, host, strlen(host));
	GENERAL_NAMES_free(gens);
}

static void assert_csr_ok(const char *path, EVP_PKEY *key, const char *host)
{
	FILE *f = fopen(path, "r");
	assert_non_null(f);
	X509_REQ *req = PEM_read_X509_REQ(f, NULL, NULL, NULL);
	fclose(f);
	assert_non_null(req);
	EVP_PKEY *pub = X509_REQ_get0_pubkey(req);
	assert_int_equal(X509_REQ_verify(req, pub), 1);
	assert_int_equal(EVP_PKEY_eq(pub, key), 1);
	char cn[256];
	assert_true(X509_NAME_get_text_by_NID(X509_REQ_get_subject_name(req), NID_commonName, cn,
					      sizeof cn) > 0);
	assert_string_equal(cn, host);
	STACK_OF(X509_EXTENSION) *exts = X509_REQ_get_extensions(req);
	assert_non_null(exts);
	int found = 0;
	for (int i = 0; i < sk_X509_EXTENSION_num(exts); i++)
		if (OBJ_obj2nid(X509_EXTENSION_get_object(sk_X509_EXTENSION_value(exts, i))) ==
		    NID_subject_alt_name)
			found++;
	assert_int_equal(found, 1);
	sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
	X509_REQ_free(req);
}

/* Key, certificate and CSR of one cert_new() run are what a CA and a
 * client expect. */
static void assert_cert_set(const char *key_path, const char *crt_path, const char *csr_path,
			    const char *host, int key_type)
{
	struct stat st;
	assert_int_equal(stat(key_path, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0600);
	assert_int_equal(stat(crt_path, &st), 0);
	assert_int_equal(stat(csr_path, &st), 0);

	char *pem = read_text(key_path);
	assert_non_null(strstr(pem, "-----BEGIN PRIVATE KEY-----")); /* PKCS#8 */
	free(pem);

	EVP_PKEY *key = read_key(key_path);
	assert_int_equal(EVP_PKEY_get_base_id(key), key_type);
	X509 *x = read_cert(crt_path);
	assert_int_equal(X509_get_version(x), X509_VERSION_3);
	assert_int_equal(X509_check_private_key(x, key), 1);
	assert_int_equal(X509_verify(x, key), 1); /* self-signed */
	assert_int_equal(X509_NAME_cmp(X509_get_subject_name(x), X509_get_issuer_name(x)), 0);
	assert_san_dns(x, host);
	assert_int_equal(X509_check_host(x, host, 0, 0, NULL), 1);
	assert_int_equal(X509_check_ca(x), 0);
	assert_int_equal(X509_get_signature_nid(x) == NID_ecdsa_with_SHA256 ||
			     X509_get_signature_nid(x) == NID_sha256WithRSAEncryption,
			 1);
	assert_true(X509_get_extended_key_usage(x) & XKU_SSL_SERVER);
	assert_true(X509_get_key_usage(x) & KU_DIGITAL_SIGNATURE);
	assert_int_equal(!!(X509_get_key_usage(x) & KU_KEY_ENCIPHERMENT), key_type == EVP_PKEY_RSA);

	int days, secs;
	assert_true(ASN1_TIME_diff(&days, &secs, X509_get0_notBefore(x), X509_get0_notAfter(x)));
	assert_int_equal(days, 365);
	assert_true(X509_cmp_current_time(X509_get0_notBefore(x)) <= 0);

	const ASN1_INTEGER *serial = X509_get0_serialNumber(x);
	BIGNUM *bn = ASN1_INTEGER_to_BN(serial, NULL);
	assert_non_null(bn);
	assert_false(BN_is_negative(bn));
	assert_true(BN_num_bits(bn) > 64);
	BN_free(bn);

	assert_csr_ok(csr_path, key, host);
	X509_free(x);
	EVP_PKEY_free(key);
}

static void test_cert_new_ecdsa(void **state)
{
	assert_cert_set(g.ec_key, g.ec_crt, g.ec_csr, HOST_EC, EVP_PKEY_EC);
	EVP_PKEY *key = read_key(g.ec_key);
	char curve[64];
	size_t len;
	assert_true(EVP_PKEY_get_utf8_string_param(key, "group", curve, sizeof curve, &len));
	assert_string_equal(curve, "prime256v1");
	EVP_PKEY_free(key);
}

static void test_cert_new_rsa(void **state)
{
	assert_cert_set(g.rsa_key, g.rsa_crt, g.rsa_csr, HOST_RSA, EVP_PKEY_RSA);
	EVP_PKEY *key = read_key(g.rsa_key);
	assert_int_equal(EVP_PKEY_get_bits(key), 2048);
	EVP_PKEY_free(key);
}

static void test_cert_new_ip_address(void **state)
{
	char *dir = path_in("ip");
	assert_int_equal(cert_new("192.0.2.25", dir, NULL), 0);
	char *crt = xasprintf("%s/192.0.2.25.crt", dir);
	X509 *x = read_cert(crt);
	assert_int_equal(X509_check_ip_asc(x, "192.0.2.25", 0), 1);
	X509_free(x);
	free(crt);
	free(dir);
}

static void test_cert_new_creates_private_dir_and_prints_paths(void **state)
{
	char *dir = path_in("new/sub");
	char out[4096];
	const char *argv[] = {"new", "--hostname=Print.Example.Test", "--out", dir};
	assert_int_equal(run_cert(out, sizeof out, 4, argv), 0);
	struct stat st;
	assert_int_equal(stat(dir, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0700);
	/* names are lower-cased; the three absolute paths and a CA hint */
	char *key = xasprintf("%s/print.example.test.key", dir);
	assert_non_null(strstr(out, key));
	assert_non_null(strstr(out, "print.example.test.crt"));
	assert_non_null(strstr(out, "print.example.test.csr"));
	assert_non_null(strstr(out, "CA"));
	free(key);
	free(dir);
}

static void test_cert_new_refuses_to_overwrite(void **state)
{
	char *before = read_text(g.ec_key);
	char out[4096];
	char *dir = path_in("certs");
	const char *argv[] = {"new", "--hostname", HOST_EC, "--out", dir};
	assert_int_equal(run_cert(out, sizeof out, 5, argv), 1);
	assert_non_null(strstr(out, "posthorn: "));
	assert_non_null(strstr(out, "exists; remove it first"));
	char *after = read_text(g.ec_key);
	assert_string_equal(before, after);
	free(before);
	free(after);

	/* one existing file of three: nothing is written, nothing removed */
	char *lone = path_in("certs/lone.example.test.csr");
	int fd = open(lone, O_WRONLY | O_CREAT | O_EXCL, 0644);
	assert_true(fd >= 0);
	close(fd);
	const char *argv2[] = {"new", "--hostname", "lone.example.test", "--out", dir};
	assert_int_equal(run_cert(out, sizeof out, 5, argv2), 1);
	char *lkey = path_in("certs/lone.example.test.key");
	assert_int_equal(access(lkey, F_OK), -1);
	assert_int_equal(access(lone, F_OK), 0);
	free(lkey);
	free(lone);
	free(dir);
}

static void test_cert_usage(void **state)
{
	char out[4096];
	const char *no_host[] = {"new", "--out", g.dir};
	assert_int_equal(run_cert(out, sizeof out, 3, no_host), 2);
	assert_non_null(strstr(out, "usage: posthorn cert new"));
	const char *no_out[] = {"new", "--hostname", "a.test"};
	assert_int_equal(run_cert(out, sizeof out, 3, no_out), 2);
	const char *small_rsa[] = {"new", "--hostname", "a.test", "--out", g.dir, "--rsa", "1024"};
	assert_int_equal(run_cert(out, sizeof out, 7, small_rsa), 2);
	const char *junk_rsa[] = {"new", "--hostname", "a.test", "--out", g.dir, "--rsa", "2048x"};
	assert_int_equal(run_cert(out, sizeof out, 7, junk_rsa), 2);
	const char *dangling[] = {"new", "--hostname", "a.test", "--out"};
	assert_int_equal(run_cert(out, sizeof out, 4, dangling), 2);
	const char *unknown[] = {"new", "--hostname", "a.test", "--out", g.dir, "--ecdsa"};
	assert_int_equal(run_cert(out, sizeof out, 6, unknown), 2);
	const char *sub[] = {"old"};
	assert_int_equal(run_cert(out, sizeof out, 1, sub), 2);
	assert_int_equal(run_cert(out, sizeof out, 0, sub), 2);
	/* the host name also names the files */
	const char *bad[] = {"../evil", "a/b", "-a.test", "a..test", "a_b.test", ""};
	for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
		const char *argv[] = {"new", "--hostname", bad[i], "--out", g.dir};
		assert_int_equal(run_cert(out, sizeof out, 5, argv), 2);
	}
}

/* ---- tls_server_new ---------------------------------------------------- */

static void test_server_new_ok(void **state)
{
	struct conf_cert certs[] = {pair(g.ec_crt, g.ec_key, 1), pair(g.rsa_crt, g.rsa_key, 2)};
	struct conf_tls t = conf_with(certs, 2);
	struct tls_server *ts = server_with(&t, "smtp");
	tls_server_free(ts);
	tls_server_free(NULL);
}

static void test_server_new_no_certificate(void **state)
{
	struct conf_tls t = conf_with(NULL, 0);
	char *err = server_refused(&t);
	assert_string_equal(err, "no certificate\n");
	free(err);
}

static void test_server_new_missing_file(void **state)
{
	char *missing = path_in("missing.crt");
	struct conf_cert certs[] = {pair(missing, g.ec_key, 7)};
	struct conf_tls t = conf_with(certs, 1);
	char *err = server_refused(&t);
	char *want = xasprintf("test.conf:7:5: certificate %s: No such file or directory\n", missing);
	assert_string_equal(err, want);
	free(want);
	free(err);
	free(missing);
}

static void test_server_new_mismatched_key(void **state)
{
	struct conf_cert certs[] = {pair(g.ec_crt, g.other_key, 1)};
	struct conf_tls t = conf_with(certs, 1);
	char *err = server_refused(&t);
	assert_non_null(strstr(err, g.other_key));
	assert_non_null(strstr(err, "does not match"));
	free(err);

	/* an RSA key for an ECDSA certificate */
	certs[0] = pair(g.ec_crt, g.rsa_key, 1);
	err = server_refused(&t);
	assert_non_null(strstr(err, g.rsa_key));
	assert_int_equal(ERR_peek_error(), 0); /* no stale OpenSSL errors left */
	free(err);
}

static void test_server_new_group_readable_key(void **state)
{
	char *key = path_in("loose.key");
	char *pem = read_text(g.ec_key);
	int fd = open(key, O_WRONLY | O_CREAT | O_EXCL, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write_all(fd, pem, strlen(pem)), 0);
	close(fd);
	assert_int_equal(chmod(key, 0640), 0);
	struct conf_cert certs[] = {pair(g.ec_crt, key, 1)};
	struct conf_tls t = conf_with(certs, 1);
	char *err = server_refused(&t);
	assert_non_null(strstr(err, key));
	assert_non_null(strstr(err, "group or others"));
	assert_non_null(strstr(err, "0640"));
	free(err);
	assert_int_equal(chmod(key, 0600), 0);
	struct tls_server *ts = server_with(&t, "smtp");
	tls_server_free(ts);
	free(pem);
	free(key);
}

static void test_server_new_garbage_certificate(void **state)
{
	char *crt = path_in("garbage.crt");
	FILE *f = fopen(crt, "w");
	assert_non_null(f);
	fputs("this is not a certificate\n", f);
	fclose(f);
	struct conf_cert certs[] = {pair(crt, g.ec_key, 1)};
	struct conf_tls t = conf_with(certs, 1);
	char *err = server_refused(&t);
	assert_non_null(strstr(err, crt));
	assert_non_null(strstr(err, "no start line"));
	free(err);
	free(crt);
}

static void test_server_new_min_bits_impossible(void **state)
{
	struct conf_cert certs[] = {pair(g.ec_crt, g.ec_key, 1)};
	struct conf_tls t = conf_with(certs, 1);
	t.min_bits = 512;
	char *err = server_refused(&t);
	assert_non_null(strstr(err, "test.conf:1:5: no cipher has min-bits 512"));
	free(err);
	t.min_bits = 128;
	t.min_version = 11;
	err = server_refused(&t);
	assert_non_null(strstr(err, "min-version"));
	free(err);
}

/* Every pair that cannot be loaded is told, each at its own line, not
 * just the first. */
static void test_server_new_tells_every_pair(void **state)
{
	char *missing = path_in("nothing-here.key");
	char *loose = path_in("loose2.key");
	char *pem = read_text(g.ec_key);
	int fd = open(loose, O_WRONLY | O_CREAT | O_EXCL, 0644);
	assert_true(fd >= 0);
	assert_int_equal(write_all(fd, pem, strlen(pem)), 0);
	close(fd);
	assert_int_equal(chmod(loose, 0644), 0);
	struct conf_cert certs[] = {
	    pair(g.ec_crt, g.other_key, 11),
	    pair(g.other_crt, missing, 12),
	    pair(g.rsa_crt, loose, 13),
	    pair(g.ecrsa_crt, g.ecrsa_key, 14),
	};
	struct conf_tls t = conf_with(certs, 4);
	char *err = server_refused(&t);
	char *e1 = xasprintf("test.conf:11:5: key %s does not match certificate %s", g.other_key,
			     g.ec_crt);
	char *e2 = xasprintf("test.conf:12:5: key %s: No such file or directory\n", missing);
	char *e3 = xasprintf("test.conf:13:5: key %s may be read by group or others", loose);
	assert_non_null(strstr(err, e1));
	assert_non_null(strstr(err, e2));
	assert_non_null(strstr(err, e3));
	assert_null(strstr(err, ":14:"));
	free(e1);
	free(e2);
	free(e3);
	free(err);
	free(pem);
	free(loose);
	free(missing);
}

/* ---- two certificates for one name ------------------------------------------ */

/* An RSA and an ECDSA certificate for the same name share one context:
 * each client is shown the one it can verify, by its signature algorithms
 * (TLS 1.3) or its cipher suites (TLS 1.2), in either order of the pairs,
 * and behind SNI as on the default context. */
static void test_dual_certificates_served_by_client_support(void **state)
{
	struct conf_cert ec_first[] = {pair(g.ec_crt, g.ec_key, 1),
				       pair(g.ecrsa_crt, g.ecrsa_key, 2)};
	struct conf_cert rsa_first[] = {pair(g.ecrsa_crt, g.ecrsa_key, 1),
					pair(g.ec_crt, g.ec_key, 2)};
	struct conf_cert behind_sni[] = {pair(g.other_crt, g.other_key, 1),
					 pair(g.ec_crt, g.ec_key, 2),
					 pair(g.ecrsa_crt, g.ecrsa_key, 3)};
	struct conf_tls confs[] = {conf_with(ec_first, 2), conf_with(rsa_first, 2),
				   conf_with(behind_sni, 3)};
	const struct {
		struct client_opts o;
		int key_type;
	} clients[] = {
	    {{.sigalgs = "RSA-PSS+SHA256:rsa_pkcs1_sha256", .sni = HOST_EC}, EVP_PKEY_RSA},
	    {{.sigalgs = "ECDSA+SHA256", .sni = HOST_EC}, EVP_PKEY_EC},
	    {{.max_version = TLS1_2_VERSION, .ciphers = "ECDHE-RSA-AES128-GCM-SHA256",
	      .sni = HOST_EC},
	     EVP_PKEY_RSA},
	    {{.max_version = TLS1_2_VERSION, .ciphers = "ECDHE-ECDSA-AES128-GCM-SHA256",
	      .sni = HOST_EC},
	     EVP_PKEY_EC},
	};
	for (size_t c = 0; c < ARRAY_LEN(confs); c++) {
		struct tls_server *ts = server_with(&confs[c], "smtp");
		for (size_t i = 0; i < ARRAY_LEN(clients); i++) {
			struct hs h = handshake(ts, &clients[i].o);
			if (!h.ok)
				fail_msg("configuration %zu, client %zu: no handshake", c, i);
			assert_int_equal(peer_key_type(h.client), clients[i].key_type);
			assert_true(peer_is(h.client, HOST_EC));
			hs_free(&h);
		}
		tls_server_free(ts);
	}
}

/* Two certificates of one key type for the same names: the second could
 * never be served, so it is an error at its line, naming the first. */
static void test_second_pair_of_one_key_type_refused(void **state)
{
	char *second = path_in("second-ec.crt");
	make_cert(second, g.other_key, HOST_EC, -60, 86400);
	struct conf_cert certs[] = {pair(g.ec_crt, g.ec_key, 3), pair(g.ecrsa_crt, g.ecrsa_key, 5),
				    pair(second, g.other_key, 7)};
	struct conf_tls t = conf_with(certs, 3);
	char *err = server_refused(&t);
	char *want = xasprintf("test.conf:7:5: certificate %s is a second ECDSA certificate for "
			       HOST_EC " (the first is %s at test.conf:3:5)",
			       second, g.ec_crt);
	assert_non_null(strstr(err, want));
	assert_null(strstr(err, ":5:5:"));
	free(want);
	free(err);

	/* two RSA certificates for the same name */
	struct conf_cert rsa2[] = {pair(g.ecrsa_crt, g.ecrsa_key, 4),
				   pair(g.ecrsa_crt, g.ecrsa_key, 9)};
	t = conf_with(rsa2, 2);
	err = server_refused(&t);
	assert_non_null(strstr(err, "test.conf:9:5: "));
	assert_non_null(strstr(err, "second RSA certificate"));
	free(err);

	/* ECDSA certificates for other names are SNI choices, not seconds */
	struct conf_cert sni[] = {pair(g.ec_crt, g.ec_key, 1), pair(g.other_crt, g.other_key, 2)};
	t = conf_with(sni, 2);
	tls_server_free(server_with(&t, "smtp"));
	free(second);
}

/* ---- handshakes: versions and ciphers ----------------------------------- */

static struct tls_server *ec_server(unsigned min_bits, int min_version)
{
	static struct conf_cert certs[1];
	certs[0] = pair(g.ec_crt, g.ec_key, 1);
	struct conf_tls t = conf_with(certs, 1);
	t.min_bits = min_bits;
	t.min_version = min_version;
	return server_with(&t, "smtp");
}

static void test_handshake_default_is_tls13(void **state)
{
	struct tls_server *ts = ec_server(128, TLS_VERSION_1_2);
	struct client_opts o = {0};
	struct hs h = handshake(ts, &o);
	assert_true(h.ok);
	assert_int_equal(SSL_version(h.server), TLS1_3_VERSION);
	char desc[TLS_DESCRIBE_MAX];
	tls_describe(h.server, desc, sizeof desc);
	assert_string_equal(desc, "TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)");
	struct conf_tls t = {.min_bits = 128};
	char why[256];
	assert_true(tls_session_acceptable(h.server, &t, why, sizeof why));
	/* no compression, no tickets for later resumption */
	assert_null(SSL_get_current_compression(h.server));
	assert_int_equal(SSL_get_num_tickets(h.server), 0);
	hs_free(&h);
	tls_server_free(ts);
}

static void test_handshake_tls12_allowed(void **state)
{
	struct tls_server *ts = ec_server(128, TLS_VERSION_1_2);
	struct client_opts o = {.max_version = TLS1_2_VERSION};
	struct hs h = handshake(ts, &o);
	assert_true(h.ok);
	char desc[TLS_DESCRIBE_MAX];
	tls_describe(h.server, desc, sizeof desc);
	assert_string_equal(desc,
			    "TLSv1.2 with cipher ECDHE-ECDSA-AES256-GCM-SHA384 (256/256 bits)");
	hs_free(&h);
	tls_server_free(ts);
}

static void test_handshake_rsa_certificate(void **state)
{
	struct conf_cert certs[] = {pair(g.rsa_crt, g.rsa_key, 1)};
	struct conf_tls t = conf_with(certs, 1);
	struct tls_server *ts = server_with(&t, "smtp");
	struct client_opts o12 = {.max_version = TLS1_2_VERSION};
	struct hs h = handshake(ts, &o12);
	assert_true(h.ok);
	assert_string_equal(SSL_get_cipher_name(h.server), "ECDHE-RSA-AES256-GCM-SHA384");
	hs_free(&h);
	/* a client without ECDHE gets nothing: no finite-field DHE (its cost
	 * is the server's), never static RSA */
	struct client_opts dhe = {.max_version = TLS1_2_VERSION, .ciphers = "DHE+AESGCM:kRSA"};
	h = handshake(ts, &dhe);
	assert_false(h.ok);
	assert_int_equal(h.server_reason, SSL_R_NO_SHARED_CIPHER);
	hs_free(&h);
	/* nor ffdhe groups in TLS 1.3 (RFC 7919) */
	struct client_opts ffdhe = {.min_version = TLS1_3_VERSION, .groups = "ffdhe2048:ffdhe3072"};
	h = handshake(ts, &ffdhe);
	assert_false(h.ok);
	hs_free(&h);
	struct client_opts krsa = {.max_version = TLS1_2_VERSION, .ciphers = "kRSA"};
	h = handshake(ts, &krsa);
	assert_false(h.ok);
	hs_free(&h);
	tls_server_free(ts);
}

static void test_handshake_cbc_refused(void **state)
{
	struct tls_server *ts = ec_server(128, TLS_VERSION_1_2);
	struct client_opts o = {.max_version = TLS1_2_VERSION,
				.ciphers = "ECDHE-ECDSA-AES256-SHA384:ECDHE-ECDSA-AES128-SHA"};
	struct hs h = handshake(ts, &o);
	assert_false(h.ok);
	assert_int_equal(h.server_reason, SSL_R_NO_SHARED_CIPHER);
	hs_free(&h);
	tls_server_free(ts);
}

static void test_handshake_tls11_refused(void **state)
{
	struct tls_server *ts = ec_server(128, TLS_VERSION_1_2);
	struct client_opts o = {.max_version = TLS1_1_VERSION,
				.ciphers = "DEFAULT:@SECLEVEL=0",
				.seclevel0 = true};
	struct hs h = handshake(ts, &o);
	assert_false(h.ok);
	assert_int_equal(h.server_reason, SSL_R_UNSUPPORTED_PROTOCOL);
	hs_free(&h);
	tls_server_free(ts);
}

static void test_handshake_tls12_refused_by_min_13(void **state)
{
	struct tls_server *ts = ec_server(128, TLS_VERSION_1_3);
	struct client_opts o = {.max_version = TLS1_2_VERSION};
	struct hs h = handshake(ts, &o);
	assert_false(h.ok);
	assert_int_equal(h.server_reason, SSL_R_UNSUPPORTED_PROTOCOL);
	hs_free(&h);
	struct client_opts o13 = {0};
	h = handshake(ts, &o13);
	assert_true(h.ok);
	hs_free(&h);
	tls_server_free(ts);
}

static void test_min_bits_256_tls13(void **state)
{
	struct tls_server *ts = ec_server(256, TLS_VERSION_1_2);
	struct client_opts weak = {.min_version = TLS1_3_VERSION,
				   .suites = "TLS_AES_128_GCM_SHA256"};
	struct hs h = handshake(ts, &weak);
	assert_false(h.ok);
	assert_int_equal(h.server_reason, SSL_R_NO_SHARED_CIPHER);
	hs_free(&h);
	struct client_opts strong = {.min_version = TLS1_3_VERSION,
				     .suites = "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384"};
	h = handshake(ts, &strong);
	assert_true(h.ok);
	assert_string_equal(SSL_get_cipher_name(h.server), "TLS_AES_256_GCM_SHA384");
	struct conf_tls t = {.min_bits = 256};
	char why[256];
	assert_true(tls_session_acceptable(h.server, &t, why, sizeof why));
	hs_free(&h);
	struct client_opts chacha = {.min_version = TLS1_3_VERSION,
				     .suites = "TLS_CHACHA20_POLY1305_SHA256"};
	h = handshake(ts, &chacha);
	assert_true(h.ok);
	hs_free(&h);
	tls_server_free(ts);
}

static void test_min_bits_256_tls12(void **state)
{
	struct tls_server *ts = ec_server(256, TLS_VERSION_1_2);
	struct client_opts weak = {.max_version = TLS1_2_VERSION,
				   .ciphers = "ECDHE-ECDSA-AES128-GCM-SHA256"};
	struct hs h = handshake(ts, &weak);
	assert_false(h.ok);
	assert_int_equal(h.server_reason, SSL_R_NO_SHARED_CIPHER);
	hs_free(&h);
	struct client_opts strong = {.max_version = TLS1_2_VERSION,
				     .ciphers = "ECDHE-ECDSA-AES256-GCM-SHA384"};
	h = handshake(ts, &strong);
	assert_true(h.ok);
	hs_free(&h);
	tls_server_free(ts);
}

static void test_session_acceptable_reports_weak_cipher(void **state)
{
	struct tls_server *ts = ec_server(128, TLS_VERSION_1_2);
	struct client_opts o = {.min_version = TLS1_3_VERSION, .suites = "TLS_AES_128_GCM_SHA256"};
	struct hs h = handshake(ts, &o);
	assert_true(h.ok);
	char desc[TLS_DESCRIBE_MAX];
	tls_describe(h.server, desc, sizeof desc);
	assert_string_equal(desc, "TLSv1.3 with cipher TLS_AES_128_GCM_SHA256 (128/128 bits)");
	struct conf_tls t128 = {.min_bits = 128}, t256 = {.min_bits = 256};
	char why[256] = "";
	assert_true(tls_session_acceptable(h.server, &t128, why, sizeof why));
	assert_false(tls_session_acceptable(h.server, &t256, why, sizeof why));
	assert_string_equal(why, "cipher TLS_AES_128_GCM_SHA256 has 128 bits, fewer than min-bits 256");
	hs_free(&h);
	tls_server_free(ts);
}

static void test_describe_before_handshake(void **state)
{
	struct tls_server *ts = ec_server(128, TLS_VERSION_1_2);
	SSL *ssl = tls_server_ssl(ts);
	assert_non_null(ssl);
	char desc[TLS_DESCRIBE_MAX];
	tls_describe(ssl, desc, sizeof desc);
	assert_non_null(strstr(desc, "without a cipher"));
	struct conf_tls t = {.min_bits = 0};
	char why[64];
	assert_false(tls_session_acceptable(ssl, &t, why, sizeof why));
	char tiny[8];
	tls_describe(ssl, tiny, sizeof tiny); /* truncates, stays terminated */
	assert_int_equal(strlen(tiny), sizeof tiny - 1);
	SSL_free(ssl);
	tls_server_free(ts);
}

/* A reload frees the server while sessions still use its contexts. */
static void test_ssl_outlives_server(void **state)
{
	struct tls_server *ts = ec_server(128, TLS_VERSION_1_2);
	SSL *ssl = tls_server_ssl(ts);
	assert_non_null(ssl);
	tls_server_free(ts);
	struct client_opts o = {.sni = "nothing.example.test", .alpn = "\x04smtp"};
	struct hs h = handshake_ssl(ssl, &o);
	assert_true(h.ok);
	hs_free(&h);
}

/* ---- SNI --------------------------------------------------------------- */

static struct tls_server *sni_server(bool strict)
{
	static struct conf_cert certs[2];
	certs[0] = pair(g.ec_crt, g.ec_key, 1);
	certs[1] = pair(g.other_crt, g.other_key, 2);
	struct conf_tls t = conf_with(certs, 2);
	t.strict_sni = strict;
	return server_with(&t, "smtp");
}

static void test_sni_selects_matching_certificate(void **state)
{
	struct tls_server *ts = sni_server(false);
	struct client_opts other = {.sni = HOST_OTHER};
	struct hs h = handshake(ts, &other);
	assert_true(h.ok);
	assert_true(peer_is(h.client, HOST_OTHER));
	hs_free(&h);
	struct client_opts first = {.sni = "MAIL.example.test"};
	h = handshake(ts, &first);
	assert_true(h.ok);
	assert_true(peer_is(h.client, HOST_EC));
	hs_free(&h);
	tls_server_free(ts);
}

static void test_sni_unknown_or_absent_gets_default(void **state)
{
	struct tls_server *ts = sni_server(false);
	struct client_opts unknown = {.sni = "unknown.example.test"};
	struct hs h = handshake(ts, &unknown);
	assert_true(h.ok);
	assert_true(peer_is(h.client, HOST_EC));
	hs_free(&h);
	struct client_opts none = {0};
	h = handshake(ts, &none);
	assert_true(h.ok);
	assert_true(peer_is(h.client, HOST_EC));
	hs_free(&h);
	tls_server_free(ts);
}

static void test_sni_strict_refuses_unknown_name(void **state)
{
	struct tls_server *ts = sni_server(true);
	struct client_opts unknown = {.sni = "unknown.example.test"};
	struct hs h = handshake(ts, &unknown);
	assert_false(h.ok);
	assert_int_equal(h.client_reason, SSL_R_TLSV1_UNRECOGNIZED_NAME);
	assert_int_equal(h.server_reason, SSL_R_CALLBACK_FAILED);
	hs_free(&h);
	struct client_opts other = {.sni = HOST_OTHER};
	h = handshake(ts, &other);
	assert_true(h.ok);
	assert_true(peer_is(h.client, HOST_OTHER));
	hs_free(&h);
	struct client_opts none = {0};
	h = handshake(ts, &none);
	assert_true(h.ok);
	hs_free(&h);
	tls_server_free(ts);
}

static void test_sni_wildcard(void **state)
{
	char *crt = path_in("wild.crt");
	make_cert(crt, g.other_key, "*.wild.example.test", -60, 86400 * 90);
	struct conf_cert certs[] = {pair(g.ec_crt, g.ec_key, 1), pair(crt, g.other_key, 2)};
	struct conf_tls t = conf_with(certs, 2);
	t.strict_sni = true;
	struct tls_server *ts = server_with(&t, "smtp");
	struct client_opts one = {.sni = "smtp.wild.example.test"};
	struct hs h = handshake(ts, &one);
	assert_true(h.ok);
	assert_true(peer_is(h.client, "smtp.wild.example.test"));
	hs_free(&h);
	/* a wildcard covers one label only (RFC 6125 §6.4.3) */
	struct client_opts deep = {.sni = "a.b.wild.example.test"};
	h = handshake(ts, &deep);
	assert_false(h.ok);
	hs_free(&h);
	tls_server_free(ts);
	free(crt);
}

/* ---- ALPN (ALPACA) ------------------------------------------------------ */

static void test_alpn_other_protocol_refused(void **state)
{
	struct tls_server *ts = ec_server(128, TLS_VERSION_1_2);
	const char *lists[] = {"\x08http/1.1", "\x02h2\x08http/1.1", "\x04imap"};
	for (size_t i = 0; i < ARRAY_LEN(lists); i++) {
		struct client_opts o = {.alpn = lists[i]};
		struct hs h = handshake(ts, &o);
		assert_false(h.ok);
		assert_int_equal(h.server_reason, SSL_R_NO_APPLICATION_PROTOCOL);
		assert_int_equal(h.client_reason, SSL_R_TLSV1_ALERT_NO_APPLICATION_PROTOCOL);
		hs_free(&h);
	}
	tls_server_free(ts);
}

static void test_alpn_own_protocol_selected(void **state)
{
	struct tls_server *ts = ec_server(128, TLS_VERSION_1_2);
	const char *lists[] = {"\x04smtp", "\x08http/1.1\x04smtp", "\x05smtps\x04smtp"};
	for (size_t i = 0; i < ARRAY_LEN(lists); i++) {
		struct client_opts o = {.alpn = lists[i]};
		struct hs h = handshake(ts, &o);
		assert_true(h.ok);
		const unsigned char *sel;
		unsigned len;
		SSL_get0_alpn_selected(h.client, &sel, &len);
		assert_int_equal(len, 4);
		assert_memory_equal(sel, "smtp", 4);
		hs_free(&h);
	}
	tls_server_free(ts);
}

static void test_alpn_absent_accepted(void **state)
{
	struct tls_server *ts = ec_server(128, TLS_VERSION_1_2);
	struct client_opts o = {0};
	struct hs h = handshake(ts, &o);
	assert_true(h.ok);
	const unsigned char *sel;
	unsigned len;
	SSL_get0_alpn_selected(h.client, &sel, &len);
	assert_int_equal(len, 0);
	hs_free(&h);
	tls_server_free(ts);
}

/* After SNI switched to the second context, ALPN is still enforced. */
static void test_alpn_checked_on_sni_context(void **state)
{
	struct tls_server *ts = sni_server(false);
	struct client_opts bad = {.sni = HOST_OTHER, .alpn = "\x08http/1.1"};
	struct hs h = handshake(ts, &bad);
	assert_false(h.ok);
	assert_int_equal(h.server_reason, SSL_R_NO_APPLICATION_PROTOCOL);
	hs_free(&h);
	struct client_opts good = {.sni = HOST_OTHER, .alpn = "\x04smtp"};
	h = handshake(ts, &good);
	assert_true(h.ok);
	assert_true(peer_is(h.client, HOST_OTHER));
	hs_free(&h);
	tls_server_free(ts);
}

static void test_alpn_other_protocol_names(void **state)
{
	struct conf_cert certs[] = {pair(g.ec_crt, g.ec_key, 1)};
	struct conf_tls t = conf_with(certs, 1);
	struct tls_server *ts = server_with(&t, "imap");
	struct client_opts smtp = {.alpn = "\x04smtp"};
	struct hs h = handshake(ts, &smtp);
	assert_false(h.ok);
	hs_free(&h);
	struct client_opts imap = {.alpn = "\x04imap"};
	h = handshake(ts, &imap);
	assert_true(h.ok);
	hs_free(&h);
	tls_server_free(ts);
}

/* ---- posthorn check ------------------------------------------------------- */

struct capture {
	char *err, *warn;
	size_t errlen, warnlen;
	FILE *ef, *wf;
};

static void capture_open(struct capture *c)
{
	memset(c, 0, sizeof *c);
	c->ef = open_memstream(&c->err, &c->errlen);
	c->wf = open_memstream(&c->warn, &c->warnlen);
	assert_non_null(c->ef);
	assert_non_null(c->wf);
}

static void capture_close(struct capture *c)
{
	fclose(c->ef);
	fclose(c->wf);
}

static void capture_free(struct capture *c)
{
	free(c->err);
	free(c->warn);
}

/* One line per pair: key type and size, subject, names, expiry. */
static void test_report_pairs(void **state)
{
	struct conf_cert certs[] = {pair(g.ec_crt, g.ec_key, 1), pair(g.ecrsa_crt, g.ecrsa_key, 2),
				    pair(g.other_crt, g.other_key, 3)};
	struct conf_tls t = conf_with(certs, 3);
	struct capture c;
	capture_open(&c);
	assert_int_equal(tls_report(&t, "mx", HOST_EC, c.ef, c.wf), 0);
	capture_close(&c);
	assert_string_equal(c.err, "");
	char *l1 = xasprintf("server mx: certificate %s with key %s: ECDSA P-256, subject CN=" HOST_EC
			     ", for " HOST_EC ", valid until 2",
			     g.ec_crt, g.ec_key);
	char *l2 = xasprintf("server mx: certificate %s with key %s: RSA 2048 bits, subject CN="
			     HOST_EC ", for " HOST_EC ", valid until 2",
			     g.ecrsa_crt, g.ecrsa_key);
	char *l3 = xasprintf("server mx: certificate %s with key %s: ECDSA P-256, subject CN="
			     HOST_OTHER ", for " HOST_OTHER ", valid until 2",
			     g.other_crt, g.other_key);
	assert_non_null(strstr(c.warn, l1));
	assert_non_null(strstr(c.warn, l2));
	assert_non_null(strstr(c.warn, l3));
	assert_true(strstr(c.warn, l1) < strstr(c.warn, l2)); /* in order */
	assert_null(strstr(c.warn, "warning"));
	free(l1);
	free(l2);
	free(l3);
	capture_free(&c);

	/* a certificate gone since it was loaded is an error at its line */
	char *gone = path_in("gone.crt");
	struct conf_cert lost[] = {pair(gone, g.ec_key, 4)};
	t = conf_with(lost, 1);
	capture_open(&c);
	assert_int_equal(tls_report(&t, "mx", HOST_EC, c.ef, c.wf), 1);
	capture_close(&c);
	assert_non_null(strstr(c.err, "test.conf:4:5: certificate "));
	capture_free(&c);
	free(gone);
}

static void test_report_warnings(void **state)
{
	char *expired = path_in("expired.crt");
	char *soon = path_in("soon.crt");
	make_cert(expired, g.ec_key, HOST_EC, -86400 * 400, -86400 * 35);
	make_cert(soon, g.other_key, HOST_OTHER, -86400 * 300, 86400 * 10);
	struct conf_cert certs[] = {pair(expired, g.ec_key, 1), pair(soon, g.other_key, 2)};
	struct conf_tls t = conf_with(certs, 2);
	struct capture c;
	capture_open(&c);
	assert_int_equal(tls_report(&t, "mx", HOST_EC, c.ef, c.wf), 0);
	capture_close(&c);
	assert_string_equal(c.err, "");
	char *w1 = xasprintf("warning: certificate %s expired on 2", expired);
	char *w2 = xasprintf("warning: certificate %s expires within 30 days", soon);
	assert_non_null(strstr(c.warn, w1));
	assert_non_null(strstr(c.warn, w2));
	assert_non_null(strstr(c.warn, " UTC\n"));
	assert_null(strstr(c.warn, "does not cover"));
	capture_free(&c);

	/* a host name no certificate covers */
	capture_open(&c);
	assert_int_equal(tls_report(&t, "mx", "smtp.example.org", c.ef, c.wf), 0);
	capture_close(&c);
	char *w3 = xasprintf("warning: certificate %s does not cover smtp.example.org\n", expired);
	assert_non_null(strstr(c.warn, w3));
	capture_free(&c);

	/* covered by the second only: clients without SNI get the first */
	capture_open(&c);
	assert_int_equal(tls_report(&t, "mx", HOST_OTHER, c.ef, c.wf), 0);
	capture_close(&c);
	assert_non_null(strstr(c.warn, "does not cover " HOST_OTHER " (clients that send no SNI"));
	capture_free(&c);
	free(w1);
	free(w2);
	free(w3);
	free(soon);
	free(expired);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_cert_new_ecdsa),
	    cmocka_unit_test(test_cert_new_rsa),
	    cmocka_unit_test(test_cert_new_ip_address),
	    cmocka_unit_test(test_cert_new_creates_private_dir_and_prints_paths),
	    cmocka_unit_test(test_cert_new_refuses_to_overwrite),
	    cmocka_unit_test(test_cert_usage),
	    cmocka_unit_test(test_server_new_ok),
	    cmocka_unit_test(test_server_new_no_certificate),
	    cmocka_unit_test(test_server_new_missing_file),
	    cmocka_unit_test(test_server_new_mismatched_key),
	    cmocka_unit_test(test_server_new_group_readable_key),
	    cmocka_unit_test(test_server_new_garbage_certificate),
	    cmocka_unit_test(test_server_new_min_bits_impossible),
	    cmocka_unit_test(test_server_new_tells_every_pair),
	    cmocka_unit_test(test_dual_certificates_served_by_client_support),
	    cmocka_unit_test(test_second_pair_of_one_key_type_refused),
	    cmocka_unit_test(test_handshake_default_is_tls13),
	    cmocka_unit_test(test_handshake_tls12_allowed),
	    cmocka_unit_test(test_handshake_rsa_certificate),
	    cmocka_unit_test(test_handshake_cbc_refused),
	    cmocka_unit_test(test_handshake_tls11_refused),
	    cmocka_unit_test(test_handshake_tls12_refused_by_min_13),
	    cmocka_unit_test(test_min_bits_256_tls13),
	    cmocka_unit_test(test_min_bits_256_tls12),
	    cmocka_unit_test(test_session_acceptable_reports_weak_cipher),
	    cmocka_unit_test(test_describe_before_handshake),
	    cmocka_unit_test(test_ssl_outlives_server),
	    cmocka_unit_test(test_sni_selects_matching_certificate),
	    cmocka_unit_test(test_sni_unknown_or_absent_gets_default),
	    cmocka_unit_test(test_sni_strict_refuses_unknown_name),
	    cmocka_unit_test(test_sni_wildcard),
	    cmocka_unit_test(test_alpn_other_protocol_refused),
	    cmocka_unit_test(test_alpn_own_protocol_selected),
	    cmocka_unit_test(test_alpn_absent_accepted),
	    cmocka_unit_test(test_alpn_checked_on_sni_context),
	    cmocka_unit_test(test_alpn_other_protocol_names),
	    cmocka_unit_test(test_report_pairs),
	    cmocka_unit_test(test_report_warnings),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}

/* Unit tests for sasl: mechanism names, PLAIN (RFC 4616) edge cases, LOGIN,
 * SCRAM-SHA-256 against the RFC 7677 §3 example exchange and a client
 * computed here (RFC 5802 §3), and cancellation. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>

#include "conf/conf.h"
#include "auth/sasl.h"
#include "auth/userdb.h"
#include "lib/util.h"

/* RFC 7677 §3: user "user", password "pencil", this salt, 4096 iterations,
 * client nonce and server nonce suffix, and the messages exchanged. */
static const char rfc_salt_b64[] = "W22ZaJ0SNY7soEsUEjb6gQ==";
static const char rfc_snonce[] = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
static const char rfc_client_first[] = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
static const char rfc_server_first[] =
    "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
static const char rfc_client_final[] =
    "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
    "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
static const char rfc_server_final[] = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";

static char tmpdir[] = "/tmp/posthorn-test-sasl-XXXXXX";
static char users_path[sizeof tmpdir + 16];
static struct userdb *db;

/* ---- helpers ---------------------------------------------------------- */

static char *b64(const void *data, size_t len)
{
	char *out = xmalloc(4 * ((len + 2) / 3) + 1);
	EVP_EncodeBlock((unsigned char *)out, data, (int)len);
	return out;
}

static char *b64s(const char *s)
{
	return b64(s, strlen(s));
}

/* Decode (well-formed) base64 text into a NUL-terminated buffer. */
static char *unb64(const char *text, size_t *len)
{
	size_t n = strlen(text), pad = 0;
	while (pad < n && text[n - 1 - pad] == '=')
		pad++;
	char *out = xmalloc(n / 4 * 3 + 1);
	int r = EVP_DecodeBlock((unsigned char *)out, (const unsigned char *)text, (int)n);
	assert_true(r >= 0 && (size_t)r >= pad);
	out[r - (int)pad] = '\0';
	if (len)
		*len = (size_t)r - pad;
	return out;
}

/* One step; a password check it asks for is run here and now, as a
 * worker would (offload.h), and the exchange ended with its verdict. */
static enum sasl_status step_checked(struct sasl_session *s, const char *in, char **challenge)
{
	enum sasl_status st = sasl_step(s, in, challenge);
	if (st != SASL_CHECK)
		return st;
	assert_null(*challenge);
	struct sasl_check *c = sasl_take_check(s);
	assert_non_null(c);
	assert_null(sasl_take_check(s)); /* handed over once */
	sasl_check_run(c);
	st = sasl_checked(s, c);
	sasl_check_free(c);
	return st;
}

/* One step with raw (not yet encoded) client data. */
static enum sasl_status step_raw(struct sasl_session *s, const void *data, size_t len,
				 char **challenge)
{
	char *in = b64(data, len);
	enum sasl_status st = step_checked(s, in, challenge);
	free(in);
	return st;
}

static enum sasl_status step_str(struct sasl_session *s, const char *text, char **challenge)
{
	return step_raw(s, text, strlen(text), challenge);
}

/* A whole PLAIN exchange with an initial response of len raw bytes. */
static enum sasl_status plain(const void *msg, size_t len)
{
	struct sasl_session *s = sasl_start(MECH_PLAIN, db);
	char *ch = NULL;
	enum sasl_status st = step_raw(s, msg, len, &ch);
	assert_null(ch);
	sasl_free(s);
	return st;
}

/* A PLAIN exchange with an initial response given as base64 text. */
static enum sasl_status plain_text(const char *in)
{
	struct sasl_session *s = sasl_start(MECH_PLAIN, db);
	char *ch = NULL;
	enum sasl_status st = step_checked(s, in, &ch);
	assert_null(ch);
	sasl_free(s);
	return st;
}

/* The client's side of RFC 5802 §3: from the password and server-first,
 * the client-final-message (raw) and the server signature to expect. */
struct scram_client {
	char *final;
	char server_sig64[64];
};

static void scram_hmac(const uint8_t *key, const void *data, size_t len, uint8_t out[32])
{
	unsigned n = 0;
	assert_non_null(HMAC(EVP_sha256(), key, 32, data, len, out, &n));
	assert_int_equal(n, 32);
}

/* ext is appended after the nonce; nonce, when not NULL, replaces the one
 * from server-first in the client's message (and so in AuthMessage). */
static void scram_client_ext(struct scram_client *c, const char *password, const char *gs2,
			     const char *client_first_bare, const char *server_first,
			     const char *ext, const char *nonce)
{
	char snonce[512], salt64[128];
	unsigned iterations = 0;
	assert_int_equal(sscanf(server_first, "r=%511[^,],s=%127[^,],i=%u", snonce, salt64,
				&iterations),
			 3);
	if (!nonce)
		nonce = snonce;
	size_t salt_len;
	char *salt = unb64(salt64, &salt_len);
	uint8_t salted[32], ckey[32], stored[32], skey[32], sig[32], proof[32], ssig[32];
	assert_int_equal(PKCS5_PBKDF2_HMAC(password, (int)strlen(password), (uint8_t *)salt,
					   (int)salt_len, (int)iterations, EVP_sha256(), 32,
					   salted),
			 1);
	free(salt);
	scram_hmac(salted, "Client Key", 10, ckey);
	scram_hmac(salted, "Server Key", 10, skey);
	SHA256(ckey, 32, stored);
	char *cbind = b64s(gs2);
	char *without = xasprintf("c=%s,r=%s%s", cbind, nonce, ext);
	char *auth = xasprintf("%s,%s,%s", client_first_bare, server_first, without);
	scram_hmac(stored, auth, strlen(auth), sig);
	for (int i = 0; i < 32; i++)
		proof[i] = ckey[i] ^ sig[i];
	scram_hmac(skey, auth, strlen(auth), ssig);
	char *proof64 = b64(proof, 32), *ssig64 = b64(ssig, 32);
	c->final = xasprintf("%s,p=%s", without, proof64);
	assert_true(bsnprintf(c->server_sig64, sizeof c->server_sig64, "v=%s", ssig64));
	free(cbind);
	free(without);
	free(auth);
	free(proof64);
	free(ssig64);
}

static void scram_client(struct scram_client *c, const char *password, const char *gs2,
			 const char *client_first_bare, const char *server_first)
{
	scram_client_ext(c, password, gs2, client_first_bare, server_first, "", NULL);
}

/* Start SCRAM with client-first (raw), expect CONTINUE; returns the
 * decoded server-first, which the caller frees. */
static char *scram_first(struct sasl_session *s, const char *client_first)
{
	char *ch = NULL;
	assert_int_equal(step_str(s, client_first, &ch), SASL_CONTINUE);
	assert_non_null(ch);
	char *server_first = unb64(ch, NULL);
	free(ch);
	return server_first;
}

/* A whole SCRAM exchange for user with password and gs2 header; returns
 * the final status (and checks v= on success). */
static enum sasl_status scram_login(const char *gs2, const char *user, const char *password)
{
	struct sasl_session *s = sasl_start(MECH_SCRAM_SHA_256, db);
	char *bare = xasprintf("n=%s,r=fyko+d2lbbFgONRv9qkxdawL", user);
	char *first = xasprintf("%s%s", gs2, bare);
	char *server_first = scram_first(s, first);
	struct scram_client c;
	scram_client(&c, password, gs2, bare, server_first);
	char *ch = NULL;
	enum sasl_status st = step_str(s, c.final, &ch);
	if (st == SASL_OK) {
		char *v = unb64(ch, NULL);
		assert_string_equal(v, c.server_sig64);
		free(v);
	}
	free(ch);
	free(c.final);
	free(server_first);
	free(first);
	free(bare);
	sasl_free(s);
	return st;
}

/* ---- fixture: a user database with the RFC user and alice -------------- */

/* userdb accepts only addresses as user names, but in the RFC 7677
 * example the user is "user" and "n=user" is part of AuthMessage.  So the
 * record is stored as user@example.test and renamed in memory after
 * loading; the database is still sorted ("alice@..." < "user"). */
static int setup_db(void **state)
{
	assert_non_null(mkdtemp(tmpdir));
	assert_true(bsnprintf(users_path, sizeof users_path, "%s/users", tmpdir));
	size_t salt_len;
	char *salt = unb64(rfc_salt_b64, &salt_len);
	uint8_t stored[USERDB_KEY_LEN], server[USERDB_KEY_LEN];
	assert_int_equal(userdb_derive_keys("pencil", 6, (uint8_t *)salt, salt_len, 4096, stored,
					    server),
			 0);
	free(salt);
	char *s64 = b64(stored, sizeof stored), *k64 = b64(server, sizeof server);
	char *line = xasprintf("user@example.test:SCRAM-SHA-256:4096:%s:%s:%s\n", rfc_salt_b64,
			       s64, k64);
	FILE *fp = fopen(users_path, "w");
	assert_non_null(fp);
	assert_int_equal(fchmod(fileno(fp), 0600), 0);
	assert_int_equal(fputs(line, fp) >= 0, 1);
	assert_int_equal(fclose(fp), 0);
	free(line);
	free(s64);
	free(k64);
	assert_int_equal(userdb_edit(users_path, USERDB_ADD, "alice@example.test", "wonderland",
				     10, -1, -1, stderr),
			 0);
	assert_int_equal(userdb_load(users_path, &db, stderr), 0);
	assert_int_equal(userdb_count(db), 2);
	struct user_record *rec = (struct user_record *)userdb_find(db, "user@example.test");
	assert_non_null(rec);
	free(rec->address);
	rec->address = xstrdup("user");
	assert_ptr_equal(userdb_find(db, "user"), rec);
	assert_non_null(userdb_find(db, "ALICE@example.test"));
	return 0;
}

static int teardown_db(void **state)
{
	userdb_free(db);
	db = NULL;
	char *lock = xasprintf("%s.lock", users_path);
	unlink(users_path);
	unlink(lock);
	free(lock);
	rmdir(tmpdir);
	sasl_test_set_nonce(NULL);
	return 0;
}

/* ---- mechanisms ------------------------------------------------------- */

static void test_mech_names(void **state)
{
	assert_int_equal(sasl_mech_from_name("PLAIN"), MECH_PLAIN);
	assert_int_equal(sasl_mech_from_name("plain"), MECH_PLAIN);
	assert_int_equal(sasl_mech_from_name("Login"), MECH_LOGIN);
	assert_int_equal(sasl_mech_from_name("scram-sha-256"), MECH_SCRAM_SHA_256);
	assert_int_equal(sasl_mech_from_name("SCRAM-SHA-256-PLUS"), 0);
	assert_int_equal(sasl_mech_from_name("CRAM-MD5"), 0);
	assert_int_equal(sasl_mech_from_name(""), 0);
	assert_int_equal(sasl_mech_from_name(NULL), 0);
	assert_string_equal(sasl_mech_name(MECH_PLAIN), "PLAIN");
	assert_string_equal(sasl_mech_name(MECH_LOGIN), "LOGIN");
	assert_string_equal(sasl_mech_name(MECH_SCRAM_SHA_256), "SCRAM-SHA-256");
	assert_null(sasl_mech_name(0));
	assert_null(sasl_mech_name(MECH_PLAIN | MECH_LOGIN));
	assert_true(sasl_mech_is_plaintext(MECH_PLAIN));
	assert_true(sasl_mech_is_plaintext(MECH_LOGIN));
	assert_false(sasl_mech_is_plaintext(MECH_SCRAM_SHA_256));
	assert_false(sasl_mech_is_plaintext(0));
	assert_null(sasl_start(0, db));
	assert_null(sasl_start(MECH_PLAIN | MECH_SCRAM_SHA_256, db));
}

static void test_mech_list(void **state)
{
	char buf[64];
	sasl_mech_list(MECH_PLAIN | MECH_LOGIN | MECH_SCRAM_SHA_256, buf, sizeof buf);
	assert_string_equal(buf, "SCRAM-SHA-256 PLAIN LOGIN");
	sasl_mech_list(MECH_LOGIN | MECH_PLAIN, buf, sizeof buf);
	assert_string_equal(buf, "PLAIN LOGIN");
	sasl_mech_list(MECH_LOGIN, buf, sizeof buf);
	assert_string_equal(buf, "LOGIN");
	sasl_mech_list(0, buf, sizeof buf);
	assert_string_equal(buf, "");
	/* Too small: whole names only, still a valid list. */
	sasl_mech_list(MECH_PLAIN | MECH_LOGIN | MECH_SCRAM_SHA_256, buf, 20);
	assert_string_equal(buf, "SCRAM-SHA-256 PLAIN");
	sasl_mech_list(MECH_PLAIN | MECH_LOGIN | MECH_SCRAM_SHA_256, buf, 6);
	assert_string_equal(buf, "PLAIN");
}

/* ---- SCRAM-SHA-256 ---------------------------------------------------- */

static void test_scram_rfc7677(void **state)
{
	sasl_test_set_nonce(rfc_snonce);
	struct sasl_session *s = sasl_start(MECH_SCRAM_SHA_256, db);
	char *ch = NULL;
	assert_int_equal(sasl_step(s, NULL, &ch), SASL_CONTINUE);
	assert_string_equal(ch, "");
	free(ch);
	char *server_first = scram_first(s, rfc_client_first);
	assert_string_equal(server_first, rfc_server_first);
	free(server_first);
	assert_int_equal(step_str(s, rfc_client_final, &ch), SASL_OK);
	char *v = unb64(ch, NULL);
	assert_string_equal(v, rfc_server_final);
	free(v);
	free(ch);
	assert_string_equal(sasl_user(s), "user");
	/* The exchange is over. */
	assert_int_equal(sasl_step(s, "", &ch), SASL_BAD_MESSAGE);
	assert_null(ch);
	sasl_free(s);
	sasl_test_set_nonce(NULL);
}

/* The same, with client-first as the initial response (RFC 4954). */
static void test_scram_rfc7677_initial_response(void **state)
{
	sasl_test_set_nonce(rfc_snonce);
	struct sasl_session *s = sasl_start(MECH_SCRAM_SHA_256, db);
	char *server_first = scram_first(s, rfc_client_first);
	assert_string_equal(server_first, rfc_server_first);
	free(server_first);
	char *ch = NULL;
	assert_int_equal(step_str(s, rfc_client_final, &ch), SASL_OK);
	char *v = unb64(ch, NULL);
	assert_string_equal(v, rfc_server_final);
	free(v);
	free(ch);
	sasl_free(s);
	sasl_test_set_nonce(NULL);
}

/* One RFC exchange whose client-final is replaced by final (raw). */
static enum sasl_status scram_rfc_with_final(const char *final)
{
	sasl_test_set_nonce(rfc_snonce);
	struct sasl_session *s = sasl_start(MECH_SCRAM_SHA_256, db);
	free(scram_first(s, rfc_client_first));
	char *ch = NULL;
	enum sasl_status st = step_str(s, final, &ch);
	assert_null(ch);
	assert_int_equal(sasl_step(s, "", &ch), SASL_BAD_MESSAGE);
	sasl_free(s);
	sasl_test_set_nonce(NULL);
	return st;
}

static void test_scram_tampered_proof(void **state)
{
	char *final = xstrdup(rfc_client_final);
	char *p = strstr(final, ",p=") + 3;
	p[0] = p[0] == 'd' ? 'e' : 'd';
	assert_int_equal(scram_rfc_with_final(final), SASL_FAIL);
	free(final);
	/* A proof of zeros, and one of the wrong length. */
	assert_int_equal(scram_rfc_with_final("c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)"
					      "hNlF$k0,p=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="),
			 SASL_FAIL);
	assert_int_equal(scram_rfc_with_final("c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)"
					      "hNlF$k0,p=AAAA"),
			 SASL_BAD_MESSAGE);
}

static void test_scram_wrong_password(void **state)
{
	assert_int_equal(scram_login("n,,", "user", "pencil"), SASL_OK);
	assert_int_equal(scram_login("n,,", "user", "pencil2"), SASL_FAIL);
	assert_int_equal(scram_login("n,,", "user", "Pencil"), SASL_FAIL);
	assert_int_equal(scram_login("n,,", "user", ""), SASL_FAIL);
}

/* A client that knows the password but whose c= or r= is not what the
 * server expects: the proof is valid for its own AuthMessage, and the
 * exchange still fails. */
static enum sasl_status scram_valid_proof(const char *sent_gs2, const char *cbind_gs2,
					  const char *nonce)
{
	struct sasl_session *s = sasl_start(MECH_SCRAM_SHA_256, db);
	const char *bare = "n=user,r=abcdef";
	char *first = xasprintf("%s%s", sent_gs2, bare);
	char *server_first = scram_first(s, first);
	struct scram_client c;
	scram_client_ext(&c, "pencil", cbind_gs2, bare, server_first, "", nonce);
	char *ch = NULL;
	enum sasl_status st = step_str(s, c.final, &ch);
	free(ch);
	free(c.final);
	free(server_first);
	free(first);
	sasl_free(s);
	return st;
}

static void test_scram_channel_binding(void **state)
{
	assert_int_equal(scram_valid_proof("n,,", "n,,", NULL), SASL_OK);
	/* A downgrade: the gs2 header sent differs from the one in c=. */
	assert_int_equal(scram_valid_proof("n,,", "y,,", NULL), SASL_FAIL);
	assert_int_equal(scram_valid_proof("y,,", "n,,", NULL), SASL_FAIL);
	assert_int_equal(scram_valid_proof("n,a=user,", "n,,", NULL), SASL_FAIL);

	/* c= must be base64 of the gs2 header actually sent: "y,," is not "n,,". */
	assert_int_equal(scram_rfc_with_final("c=eSws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)"
					      "hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="),
			 SASL_FAIL);
	/* Not base64 at all. */
	assert_int_equal(scram_rfc_with_final("c=b!ws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)"
					      "hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="),
			 SASL_BAD_MESSAGE);
	/* "y": the client could bind but thinks we cannot; fine, we do not
	 * offer -PLUS (RFC 5802 §6). */
	assert_int_equal(scram_login("y,,", "user", "pencil"), SASL_OK);
	/* An authzid naming the user itself is allowed. */
	assert_int_equal(scram_login("n,a=user,", "user", "pencil"), SASL_OK);
	assert_int_equal(scram_login("n,a=ALICE@example.test,", "alice@example.test", "wonderland"),
			 SASL_OK);
}

static void test_scram_nonce_mismatch(void **state)
{
	/* A proof made for another nonce (a replayed or self-chosen one). */
	assert_int_equal(scram_valid_proof("n,,", "n,,", "abcdef"), SASL_FAIL);
	assert_int_equal(scram_valid_proof("n,,", "n,,", "abcdefAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
			 SASL_FAIL);
	/* Last character changed, truncated, only the client's part. */
	assert_int_equal(scram_rfc_with_final("c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)"
					      "hNlF$k1,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="),
			 SASL_FAIL);
	assert_int_equal(scram_rfc_with_final("c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)"
					      "hNlF$k,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="),
			 SASL_FAIL);
	assert_int_equal(scram_rfc_with_final("c=biws,r=rOprNGfwEbeRWgbNEkqO,"
					      "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="),
			 SASL_FAIL);
}

static void test_scram_final_malformed(void **state)
{
	const char *bad[] = {
	    "",
	    "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
	    "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmm"
	    "iz7AndVQ=",
	    "c=biws,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
	    "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjf"
	    "MHgsqmmiz7AndVQ=,x=1",
	    "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,,p=dHzbZapWIk4jUhN+Ute9ytag9zj"
	    "fMHgsqmmiz7AndVQ=",
	    "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=",
	};
	for (size_t i = 0; i < ARRAY_LEN(bad); i++)
		assert_int_equal(scram_rfc_with_final(bad[i]), SASL_BAD_MESSAGE);
}

/* Extensions (after the nonce, in both client messages) are ignored; in
 * client-final they are part of AuthMessage, which the proof covers. */
static void test_scram_extensions(void **state)
{
	struct sasl_session *s = sasl_start(MECH_SCRAM_SHA_256, db);
	const char *bare = "n=user,r=abcdef,x=ignored,y=also";
	char *first = xasprintf("n,,%s", bare);
	char *server_first = scram_first(s, first);
	assert_int_equal(strncmp(server_first, "r=abcdef", 8), 0);
	struct scram_client c;
	scram_client_ext(&c, "pencil", "n,,", bare, server_first, ",z=ext", NULL);
	char *ch = NULL;
	assert_int_equal(step_str(s, c.final, &ch), SASL_OK);
	char *v = unb64(ch, NULL);
	assert_string_equal(v, c.server_sig64);
	free(v);
	free(ch);
	free(c.final);
	free(server_first);
	free(first);
	sasl_free(s);
}

static void test_scram_first_malformed(void **state)
{
	const char *bad[] = {
	    "p=tls-unique,,n=user,r=abc", /* channel binding: we offer no -PLUS */
	    "x,,n=user,r=abc",
	    "n,n=user,r=abc",
	    "n,,m=ext,n=user,r=abc",      /* reserved-mext (RFC 5802 §7) */
	    "n,,n=,r=abc",
	    "n,,n=us=41er,r=abc",         /* only =2C and =3D */
	    "n,,n=user=,r=abc",
	    "n,,n=user=2,r=abc",
	    "n,,r=abc",
	    "n,,n=user",
	    "n,,n=user,",
	    "n,,n=user,r=",
	    "n,,n=user,r=a b",
	    "n,,n=user,r=abc,",
	    "n,,n=user,r=abc,1=x",
	    "n,,n=user,r=abc,x=",
	    "n,,n=user,x=1,r=abc",
	    "n,a=,n=user,r=abc",
	    "n,a=user",
	    "",
	};
	for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
		struct sasl_session *s = sasl_start(MECH_SCRAM_SHA_256, db);
		char *ch = NULL;
		enum sasl_status st = step_str(s, bad[i], &ch);
		if (st != SASL_BAD_MESSAGE)
			fail_msg("client-first \"%s\": status %d", bad[i], st);
		assert_null(ch);
		sasl_free(s);
	}
	/* A NUL byte inside, and a message over 4096 octets. */
	struct sasl_session *s = sasl_start(MECH_SCRAM_SHA_256, db);
	char *ch = NULL;
	assert_int_equal(step_raw(s, "n,,n=us\0er,r=abc", 16, &ch), SASL_BAD_MESSAGE);
	sasl_free(s);
	char big[5000];
	memset(big, 'x', sizeof big);
	memcpy(big, "n,,n=user,r=", 12);
	s = sasl_start(MECH_SCRAM_SHA_256, db);
	assert_int_equal(step_raw(s, big, sizeof big, &ch), SASL_BAD_MESSAGE);
	assert_null(ch);
	sasl_free(s);
}

/* A client message is at most 4096 octets once decoded. */
static void test_message_bound(void **state)
{
	char msg[4097];
	memset(msg, 'x', sizeof msg);
	memcpy(msg, "n,,n=user,r=", 12);
	struct sasl_session *s = sasl_start(MECH_SCRAM_SHA_256, db);
	char *ch = NULL;
	assert_int_equal(step_raw(s, msg, 4096, &ch), SASL_CONTINUE);
	free(ch);
	sasl_free(s);
	s = sasl_start(MECH_SCRAM_SHA_256, db);
	assert_int_equal(step_raw(s, msg, 4097, &ch), SASL_BAD_MESSAGE);
	assert_null(ch);
	sasl_free(s);
}

static void test_scram_authzid(void **state)
{
	struct sasl_session *s = sasl_start(MECH_SCRAM_SHA_256, db);
	char *ch = NULL;
	assert_int_equal(step_str(s, "n,a=victim,n=user,r=abc", &ch), SASL_BAD_AUTHZID);
	assert_null(ch);
	assert_string_equal(sasl_user(s), "user");
	sasl_free(s);
	/* Escapes are decoded before comparing. */
	s = sasl_start(MECH_SCRAM_SHA_256, db);
	free(scram_first(s, "y,a=a=2Cb,n=a=2Cb,r=abc"));
	assert_string_equal(sasl_user(s), "a,b");
	sasl_free(s);
}

static void test_scram_unknown_user(void **state)
{
	/* server-first for an unknown user looks like a real one: a salt that
	 * is the same every time, 4096 iterations; then the proof fails. */
	struct sasl_session *s1 = sasl_start(MECH_SCRAM_SHA_256, db);
	struct sasl_session *s2 = sasl_start(MECH_SCRAM_SHA_256, db);
	struct sasl_session *s3 = sasl_start(MECH_SCRAM_SHA_256, db);
	char *f1 = scram_first(s1, "n,,n=nobody@example.test,r=abc");
	char *f2 = scram_first(s2, "n,,n=NoBody@example.test,r=abc");
	char *f3 = scram_first(s3, "n,,n=other@example.test,r=abc");
	const char *salt1 = strstr(f1, ",s="), *salt2 = strstr(f2, ",s="), *salt3 = strstr(f3, ",s=");
	assert_non_null(salt1);
	assert_non_null(salt2);
	assert_non_null(salt3);
	assert_string_equal(salt1, salt2);
	assert_string_not_equal(salt1, salt3);
	assert_non_null(strstr(f1, ",i=4096"));
	char salt64[64];
	assert_int_equal(sscanf(salt1, ",s=%63[^,]", salt64), 1);
	size_t salt_len;
	free(unb64(salt64, &salt_len));
	assert_int_equal(salt_len, 16);
	struct scram_client c;
	scram_client(&c, "whatever", "n,,", "n=nobody@example.test,r=abc", f1);
	char *ch = NULL;
	assert_int_equal(step_str(s1, c.final, &ch), SASL_FAIL);
	assert_null(ch);
	assert_string_equal(sasl_user(s1), "nobody@example.test");
	free(c.final);
	free(f1);
	free(f2);
	free(f3);
	sasl_free(s1);
	sasl_free(s2);
	sasl_free(s3);
	assert_int_equal(scram_login("n,,", "nobody@example.test", "pencil"), SASL_FAIL);
}

/* A users file of records made here: each with its own iteration count
 * and salt length. */
struct test_user {
	const char *address;
	unsigned iterations;
	size_t salt_len;
};

static struct userdb *load_users(const struct test_user *users, size_t n)
{
	char *path = xasprintf("%s/disguise", tmpdir);
	FILE *fp = fopen(path, "w");
	assert_non_null(fp);
	assert_int_equal(fchmod(fileno(fp), 0600), 0);
	for (size_t i = 0; i < n; i++) {
		uint8_t salt[USERDB_SALT_MAX], stored[USERDB_KEY_LEN], server[USERDB_KEY_LEN];
		memset(salt, (int)(i + 1), sizeof salt);
		assert_int_equal(userdb_derive_keys("secret", 6, salt, users[i].salt_len,
						    users[i].iterations, stored, server),
				 0);
		char *s64 = b64(salt, users[i].salt_len), *st64 = b64(stored, sizeof stored),
		     *sv64 = b64(server, sizeof server);
		fprintf(fp, "%s:SCRAM-SHA-256:%u:%s:%s:%s\n", users[i].address, users[i].iterations,
			s64, st64, sv64);
		free(s64);
		free(st64);
		free(sv64);
	}
	assert_int_equal(fclose(fp), 0);
	struct userdb *out = NULL;
	assert_int_equal(userdb_load(path, &out, stderr), 0);
	assert_int_equal(userdb_count(out), n);
	unlink(path);
	free(path);
	return out;
}

/* What SCRAM's server-first tells of name: its iterations and salt length. */
static void scram_shown(struct userdb *users, const char *name, unsigned *iterations,
			size_t *salt_len)
{
	struct sasl_session *s = sasl_start(MECH_SCRAM_SHA_256, users);
	char *in = xasprintf("n,,n=%s,r=abc", name);
	char *first = scram_first(s, in);
	char salt64[128];
	assert_int_equal(sscanf(first, "r=%*[^,],s=%127[^,],i=%u", salt64, iterations), 2);
	free(unb64(salt64, salt_len));
	free(first);
	free(in);
	sasl_free(s);
}

/* A name that is nobody's passes for a user who exists: SCRAM shows the
 * iteration count and salt length of a real record, and a password check
 * spends that record's iterations, so neither tells the users with other
 * counts (an administrator's, say) from names that do not exist. */
static void test_unknown_user_disguised_as_a_real_one(void **state)
{
	const struct test_user solo[] = {{"admin@example.test", 5000, 24}};
	struct userdb *one = load_users(solo, 1);
	unsigned it;
	size_t len;
	scram_shown(one, "admin@example.test", &it, &len);
	assert_int_equal(it, 5000);
	assert_int_equal(len, 24);
	scram_shown(one, "nobody@example.test", &it, &len);
	assert_int_equal(it, 5000);
	assert_int_equal(len, 24);
	struct sasl_check *c = sasl_check_new(one, "nobody@example.test", 19, "secret", 6);
	assert_int_equal(sasl_check_iterations(c), 5000);
	sasl_check_run(c);
	assert_null(sasl_check_address(c));
	sasl_check_free(c);
	userdb_free(one);

	/* two kinds of records: each name is given one of them, always the
	 * same, whatever its case; over many names both appear */
	const struct test_user two[] = {{"a@example.test", 4096, 16},
					{"b@example.test", 4200, 32}};
	struct userdb *both = load_users(two, 2);
	unsigned seen_4096 = 0, seen_4200 = 0;
	for (int i = 0; i < 64; i++) {
		char name[64], upper[64];
		assert_true(bsnprintf(name, sizeof name, "ghost%d@example.test", i));
		assert_true(bsnprintf(upper, sizeof upper, "GHOST%d@Example.TEST", i));
		unsigned it2;
		size_t len2;
		scram_shown(both, name, &it, &len);
		scram_shown(both, upper, &it2, &len2);
		assert_int_equal(it, it2);
		assert_int_equal(len, len2);
		assert_true((it == 4096 && len == 16) || (it == 4200 && len == 32));
		seen_4096 += it == 4096;
		seen_4200 += it == 4200;
		c = sasl_check_new(both, name, strlen(name), "secret", 6);
		assert_int_equal(sasl_check_iterations(c), it);
		sasl_check_free(c);
	}
	assert_true(seen_4096 > 0 && seen_4200 > 0);
	userdb_free(both);

	/* no users at all: the defaults */
	struct userdb *none = load_users(NULL, 0);
	scram_shown(none, "nobody@example.test", &it, &len);
	assert_int_equal(it, 4096);
	assert_int_equal(len, 16);
	userdb_free(none);
}

/* A real address, a random server nonce: 24 CSPRNG bytes, 32 characters. */
static void test_scram_random_nonce(void **state)
{
	assert_int_equal(scram_login("n,,", "alice@example.test", "wonderland"), SASL_OK);
	assert_int_equal(scram_login("n,,", "Alice@Example.Test", "wonderland"), SASL_OK);
	struct sasl_session *s1 = sasl_start(MECH_SCRAM_SHA_256, db);
	struct sasl_session *s2 = sasl_start(MECH_SCRAM_SHA_256, db);
	char *f1 = scram_first(s1, "n,,n=alice@example.test,r=abc");
	char *f2 = scram_first(s2, "n,,n=alice@example.test,r=abc");
	assert_int_equal(strncmp(f1, "r=abc", 5), 0);
	assert_int_equal(strcspn(f1 + 5, ","), 32);
	assert_string_not_equal(f1, f2);
	free(f1);
	free(f2);
	sasl_free(s1);
	sasl_free(s2);
	/* On success the user is the record's address. */
	struct sasl_session *s = sasl_start(MECH_SCRAM_SHA_256, db);
	const char *bare = "n=ALICE@example.test,r=xyz";
	char *first = xasprintf("n,,%s", bare);
	char *server_first = scram_first(s, first);
	struct scram_client c;
	scram_client(&c, "wonderland", "n,,", bare, server_first);
	char *ch = NULL;
	assert_int_equal(step_str(s, c.final, &ch), SASL_OK);
	assert_string_equal(sasl_user(s), "alice@example.test");
	free(ch);
	free(c.final);
	free(server_first);
	free(first);
	sasl_free(s);
}

/* ---- PLAIN (RFC 4616) ------------------------------------------------- */

static void test_plain_ok(void **state)
{
	assert_int_equal(plain("\0user\0pencil", 12), SASL_OK);
	assert_int_equal(plain("user\0user\0pencil", 16), SASL_OK);
	assert_int_equal(plain("USER\0user\0pencil", 16), SASL_OK);
	assert_int_equal(plain("\0Alice@Example.TEST\0wonderland", 30), SASL_OK);
	/* Without an initial response: an empty challenge first. */
	struct sasl_session *s = sasl_start(MECH_PLAIN, db);
	char *ch = NULL;
	assert_int_equal(sasl_step(s, NULL, &ch), SASL_CONTINUE);
	assert_string_equal(ch, "");
	free(ch);
	assert_int_equal(step_raw(s, "\0alice@EXAMPLE.test\0wonderland", 30, &ch), SASL_OK);
	assert_null(ch);
	assert_string_equal(sasl_user(s), "alice@example.test");
	assert_int_equal(sasl_step(s, "", &ch), SASL_BAD_MESSAGE);
	sasl_free(s);
}

static void test_plain_fail(void **state)
{
	assert_int_equal(plain("\0user\0pencil2", 13), SASL_FAIL);
	assert_int_equal(plain("\0user\0Pencil", 12), SASL_FAIL);
	assert_int_equal(plain("\0nobody@example.test\0pencil", 27), SASL_FAIL);
	struct sasl_session *s = sasl_start(MECH_PLAIN, db);
	char *ch = NULL;
	assert_int_equal(step_raw(s, "\0nobody\0x", 9, &ch), SASL_FAIL);
	assert_string_equal(sasl_user(s), "nobody");
	assert_int_equal(step_raw(s, "\0user\0pencil", 12, &ch), SASL_BAD_MESSAGE);
	sasl_free(s);
}

static void test_plain_authzid(void **state)
{
	/* The credentials are good, but acting as someone else is refused. */
	assert_int_equal(plain("victim\0user\0pencil", 18), SASL_BAD_AUTHZID);
	assert_int_equal(plain("victim@example.test\0alice@example.test\0wonderland", 49),
			 SASL_BAD_AUTHZID);
	assert_int_equal(plain("use\0user\0pencil", 15), SASL_BAD_AUTHZID);
	assert_int_equal(plain("users\0user\0pencil", 17), SASL_BAD_AUTHZID);
}

static void test_plain_malformed(void **state)
{
	assert_int_equal(plain("userpencil", 10), SASL_BAD_MESSAGE);    /* no NUL */
	assert_int_equal(plain("user\0pencil", 11), SASL_BAD_MESSAGE);  /* one NUL */
	assert_int_equal(plain("\0user\0pen\0cil", 14), SASL_BAD_MESSAGE);
	assert_int_equal(plain("\0user\0pencil\0", 13), SASL_BAD_MESSAGE);
	assert_int_equal(plain("\0\0pencil", 8), SASL_BAD_MESSAGE);     /* empty user */
	assert_int_equal(plain("\0user\0", 6), SASL_BAD_MESSAGE);       /* empty password */
	assert_int_equal(plain("\0\0", 2), SASL_BAD_MESSAGE);
	assert_int_equal(plain("", 0), SASL_BAD_MESSAGE);
	assert_int_equal(plain_text("="), SASL_BAD_MESSAGE);            /* empty message */
	assert_int_equal(plain_text(""), SASL_BAD_MESSAGE);
}

/* RFC 4616 §2: each field is at most 255 octets. */
static void test_plain_long_fields(void **state)
{
	char msg[3 * 257 + 2];
	char f255[256], f256[257];
	memset(f255, 'a', 255);
	f255[255] = '\0';
	memset(f256, 'a', 256);
	f256[256] = '\0';
	int n;
	n = snprintf(msg, sizeof msg, "%c%s%c%s", 0, f256, 0, "pencil");
	assert_int_equal(plain(msg, (size_t)n), SASL_BAD_MESSAGE);
	n = snprintf(msg, sizeof msg, "%c%s%c%s", 0, "user", 0, f256);
	assert_int_equal(plain(msg, (size_t)n), SASL_BAD_MESSAGE);
	n = snprintf(msg, sizeof msg, "%s%c%s%c%s", f256, 0, "user", 0, "pencil");
	assert_int_equal(plain(msg, (size_t)n), SASL_BAD_MESSAGE);
	/* 255 is allowed (and wrong). */
	n = snprintf(msg, sizeof msg, "%c%s%c%s", 0, "user", 0, f255);
	assert_int_equal(plain(msg, (size_t)n), SASL_FAIL);
	n = snprintf(msg, sizeof msg, "%c%s%c%s", 0, f255, 0, "pencil");
	assert_int_equal(plain(msg, (size_t)n), SASL_FAIL);
}

static void test_bad_base64(void **state)
{
	const char *bad[] = {
	    "abc",      /* not a multiple of 4 */
	    "ab!d",
	    "AA=A",     /* padding inside */
	    "A===",
	    "====",
	    "QR==",     /* non-canonical: bits after the last byte */
	    "QUI=QUI=",
	    " AGFiAGM=",
	    "AGFiAGM= ",
	    "AGFi\nAGM=",
	    "==",
	};
	for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
		enum sasl_status st = plain_text(bad[i]);
		if (st != SASL_BAD_BASE64)
			fail_msg("\"%s\": status %d", bad[i], st);
	}
	/* Over the 4096-octet bound: refused before decoding. */
	char *big = xmalloc(8000);
	memset(big, 'A', 7999);
	big[7999] = '\0';
	assert_int_equal(plain_text(big), SASL_BAD_MESSAGE);
	free(big);
	/* Canonical text decodes: "\0user\0pencil". */
	assert_int_equal(plain_text("AHVzZXIAcGVuY2ls"), SASL_OK);
}

/* The time for an unknown user is comparable with a known one: both pay
 * one PBKDF2 derivation (no user enumeration by timing). */
static double elapsed_plain(const char *msg, size_t len)
{
	struct timespec t0, t1;
	double best = 1e9;
	for (int i = 0; i < 3; i++) {
		clock_gettime(CLOCK_MONOTONIC, &t0);
		assert_int_equal(plain(msg, len), SASL_FAIL);
		clock_gettime(CLOCK_MONOTONIC, &t1);
		double d = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
		if (d < best)
			best = d;
	}
	return best;
}

/* PLAIN and LOGIN leave the PBKDF2 to the caller: the step only says
 * SASL_CHECK, and the user is the one tried until the check has run. */
static void test_password_check_is_handed_out(void **state)
{
	struct sasl_session *s = sasl_start(MECH_PLAIN, db);
	char *ch = NULL;
	char *in = b64("\0ALICE@example.test\0wonderland", 30);
	assert_int_equal(sasl_step(s, in, &ch), SASL_CHECK);
	free(in);
	assert_null(ch);
	assert_string_equal(sasl_user(s), "ALICE@example.test");
	struct sasl_check *c = sasl_take_check(s);
	assert_non_null(c);
	assert_null(sasl_check_address(c)); /* not run yet: nobody */
	sasl_check_run(c);
	assert_string_equal(sasl_check_address(c), "alice@example.test");
	assert_int_equal(sasl_checked(s, c), SASL_OK);
	assert_string_equal(sasl_user(s), "alice@example.test");
	sasl_check_free(c);
	/* the exchange is over */
	assert_int_equal(sasl_step(s, "", &ch), SASL_BAD_MESSAGE);
	sasl_free(s);
	/* a session freed with its check never taken frees the check */
	s = sasl_start(MECH_PLAIN, db);
	in = b64("\0user\0pencil", 12);
	assert_int_equal(sasl_step(s, in, &ch), SASL_CHECK);
	free(in);
	sasl_free(s);
}

/* A check holds copies: the users may be reloaded (and the old database
 * freed) while a worker runs it. */
static void test_password_check_outlives_the_database(void **state)
{
	struct userdb *other = NULL;
	assert_int_equal(userdb_load(users_path, &other, stderr), 0);
	struct sasl_check *right = sasl_check_new(other, "alice@example.test", 18, "wonderland", 10);
	struct sasl_check *wrong = sasl_check_new(other, "alice@example.test", 18, "wonderlan", 9);
	struct sasl_check *nobody = sasl_check_new(other, "nobody@example.test", 19, "x", 1);
	struct sasl_check *unnamed = sasl_check_new(other, NULL, 0, "wonderland", 10);
	/* a name with a NUL in it is nobody's, even with the right password */
	struct sasl_check *nul = sasl_check_new(other, "alice@example.test\0x", 20, "wonderland", 10);
	userdb_free(other);
	sasl_check_run(right);
	sasl_check_run(wrong);
	sasl_check_run(nobody);
	sasl_check_run(unnamed);
	sasl_check_run(nul);
	assert_string_equal(sasl_check_address(right), "alice@example.test");
	assert_null(sasl_check_address(wrong));
	assert_null(sasl_check_address(nobody));
	assert_null(sasl_check_address(unnamed));
	assert_null(sasl_check_address(nul));
	assert_string_equal(sasl_check_user(nul), "alice@example.test");
	assert_string_equal(sasl_check_user(wrong), "alice@example.test");
	assert_null(sasl_check_user(unnamed));
	sasl_check_free(right);
	sasl_check_free(wrong);
	sasl_check_free(nobody);
	sasl_check_free(unnamed);
	sasl_check_free(nul);
	sasl_check_free(NULL);
}

static void test_plain_unknown_user_timing(void **state)
{
	double known = elapsed_plain("\0user\0wrong", 11);
	double unknown = elapsed_plain("\0nobody\0wrong", 13);
	/* Without the dummy derivation the unknown user would be ~1000x
	 * faster; allow a wide margin for a noisy machine. */
	assert_true(unknown > known / 4);
}

/* ---- LOGIN ------------------------------------------------------------ */

static void test_login_ok(void **state)
{
	struct sasl_session *s = sasl_start(MECH_LOGIN, db);
	char *ch = NULL;
	assert_int_equal(sasl_step(s, NULL, &ch), SASL_CONTINUE);
	assert_string_equal(ch, "VXNlcm5hbWU6"); /* "Username:" */
	free(ch);
	assert_int_equal(step_str(s, "alice@example.test", &ch), SASL_CONTINUE);
	assert_string_equal(ch, "UGFzc3dvcmQ6"); /* "Password:" */
	free(ch);
	assert_int_equal(step_str(s, "wonderland", &ch), SASL_OK);
	assert_null(ch);
	assert_string_equal(sasl_user(s), "alice@example.test");
	assert_int_equal(step_str(s, "wonderland", &ch), SASL_BAD_MESSAGE);
	sasl_free(s);
	/* The user name as the initial response. */
	s = sasl_start(MECH_LOGIN, db);
	assert_int_equal(step_str(s, "user", &ch), SASL_CONTINUE);
	assert_string_equal(ch, "UGFzc3dvcmQ6");
	free(ch);
	assert_int_equal(step_str(s, "pencil", &ch), SASL_OK);
	sasl_free(s);
}

/* A LOGIN exchange with these raw responses; the last status. */
static enum sasl_status login(const char *user, size_t ulen, const char *pass, size_t plen)
{
	struct sasl_session *s = sasl_start(MECH_LOGIN, db);
	char *ch = NULL;
	enum sasl_status st = sasl_step(s, NULL, &ch);
	free(ch);
	if (st == SASL_CONTINUE)
		st = step_raw(s, user, ulen, &ch);
	free(ch);
	ch = NULL;
	if (st == SASL_CONTINUE)
		st = step_raw(s, pass, plen, &ch);
	assert_null(ch);
	sasl_free(s);
	return st;
}

static void test_login_bad(void **state)
{
	assert_int_equal(login("user", 4, "pencil", 6), SASL_OK);
	assert_int_equal(login("user", 4, "pencil2", 7), SASL_FAIL);
	assert_int_equal(login("nobody", 6, "pencil", 6), SASL_FAIL);
	assert_int_equal(login("", 0, "pencil", 6), SASL_BAD_MESSAGE);
	assert_int_equal(login("user", 4, "", 0), SASL_BAD_MESSAGE);
	assert_int_equal(login("us\0er", 5, "pencil", 6), SASL_BAD_MESSAGE);
	assert_int_equal(login("user", 4, "pen\0cil", 7), SASL_BAD_MESSAGE);
	char f256[256];
	memset(f256, 'a', sizeof f256);
	assert_int_equal(login(f256, 256, "pencil", 6), SASL_BAD_MESSAGE);
	assert_int_equal(login("user", 4, f256, 256), SASL_BAD_MESSAGE);
	struct sasl_session *s = sasl_start(MECH_LOGIN, db);
	char *ch = NULL;
	assert_int_equal(sasl_step(s, "dXNlcg=", &ch), SASL_BAD_BASE64);
	assert_null(ch);
	sasl_free(s);
	/* NULL is only the start. */
	s = sasl_start(MECH_LOGIN, db);
	assert_int_equal(step_str(s, "user", &ch), SASL_CONTINUE);
	free(ch);
	assert_int_equal(sasl_step(s, NULL, &ch), SASL_BAD_MESSAGE);
	assert_null(ch);
	sasl_free(s);
}

/* ---- cancel ------------------------------------------------------------ */

static void test_cancel(void **state)
{
	const unsigned mechs[] = {MECH_PLAIN, MECH_LOGIN, MECH_SCRAM_SHA_256};
	for (size_t i = 0; i < ARRAY_LEN(mechs); i++) {
		struct sasl_session *s = sasl_start(mechs[i], db);
		char *ch = NULL;
		assert_int_equal(sasl_step(s, NULL, &ch), SASL_CONTINUE);
		free(ch);
		assert_int_equal(sasl_step(s, "*", &ch), SASL_CANCELLED);
		assert_null(ch);
		assert_int_equal(sasl_step(s, "*", &ch), SASL_BAD_MESSAGE);
		sasl_free(s);
		/* "*" as the initial response. */
		s = sasl_start(mechs[i], db);
		assert_int_equal(sasl_step(s, "*", &ch), SASL_CANCELLED);
		sasl_free(s);
	}
	/* In the middle of LOGIN and of SCRAM. */
	struct sasl_session *s = sasl_start(MECH_LOGIN, db);
	char *ch = NULL;
	assert_int_equal(step_str(s, "user", &ch), SASL_CONTINUE);
	free(ch);
	assert_int_equal(sasl_step(s, "*", &ch), SASL_CANCELLED);
	sasl_free(s);
	s = sasl_start(MECH_SCRAM_SHA_256, db);
	free(scram_first(s, "n,,n=user,r=abc"));
	assert_int_equal(sasl_step(s, "*", &ch), SASL_CANCELLED);
	assert_null(ch);
	sasl_free(s);
	sasl_free(NULL);
}

/* Abort with "*" and restart with another mechanism 1000 times;
 * LeakSanitizer checks at exit that nothing was left behind. */
static void test_cancel_cycles(void **state)
{
	const unsigned mechs[] = {MECH_PLAIN, MECH_LOGIN, MECH_SCRAM_SHA_256};
	for (int i = 0; i < 1000; i++) {
		unsigned mech = mechs[i % 3];
		struct sasl_session *s = sasl_start(mech, db);
		char *ch = NULL;
		if (mech == MECH_SCRAM_SHA_256) {
			free(scram_first(s, "n,,n=user,r=abc"));
		} else {
			assert_int_equal(sasl_step(s, NULL, &ch), SASL_CONTINUE);
			free(ch);
			if (mech == MECH_LOGIN) {
				assert_int_equal(step_str(s, "user", &ch), SASL_CONTINUE);
				free(ch);
			}
		}
		assert_int_equal(sasl_step(s, "*", &ch), SASL_CANCELLED);
		assert_null(ch);
		sasl_free(s);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_mech_names),
	    cmocka_unit_test(test_mech_list),
	    cmocka_unit_test(test_scram_rfc7677),
	    cmocka_unit_test(test_scram_rfc7677_initial_response),
	    cmocka_unit_test(test_scram_tampered_proof),
	    cmocka_unit_test(test_scram_wrong_password),
	    cmocka_unit_test(test_scram_channel_binding),
	    cmocka_unit_test(test_scram_nonce_mismatch),
	    cmocka_unit_test(test_scram_final_malformed),
	    cmocka_unit_test(test_scram_extensions),
	    cmocka_unit_test(test_scram_first_malformed),
	    cmocka_unit_test(test_message_bound),
	    cmocka_unit_test(test_scram_authzid),
	    cmocka_unit_test(test_scram_unknown_user),
	    cmocka_unit_test(test_unknown_user_disguised_as_a_real_one),
	    cmocka_unit_test(test_scram_random_nonce),
	    cmocka_unit_test(test_plain_ok),
	    cmocka_unit_test(test_plain_fail),
	    cmocka_unit_test(test_plain_authzid),
	    cmocka_unit_test(test_plain_malformed),
	    cmocka_unit_test(test_plain_long_fields),
	    cmocka_unit_test(test_bad_base64),
	    cmocka_unit_test(test_password_check_is_handed_out),
	    cmocka_unit_test(test_password_check_outlives_the_database),
	    cmocka_unit_test(test_plain_unknown_user_timing),
	    cmocka_unit_test(test_login_ok),
	    cmocka_unit_test(test_login_bad),
	    cmocka_unit_test(test_cancel),
	    cmocka_unit_test(test_cancel_cycles),
	};
	return cmocka_run_group_tests(tests, setup_db, teardown_db);
}

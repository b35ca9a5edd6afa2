/* Unit tests for auth/sasl_gssapi.c: the principal -> user mapping of the
 * realm table, the steps that end before any key is needed (cancel, bad
 * base64, a keytab that cannot be read), GSSAPI before TLS, and the
 * keytab warnings of `posthorn check`.  Real tickets are the integration
 * tests' (tests/integration/test_gssapi.py, with a real KDC). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "auth/login.h"
#include "auth/sasl.h"
#include "auth/sasl_gssapi.h"
#include "auth/userdb.h"
#include "conf/conf.h"
#include "lib/util.h"

static char tmpdir[] = "/tmp/posthorn-test-gssapi-XXXXXX";
static char users_path[256];
static char krb5_conf[256];
static struct userdb *db;

static int setup(void **state)
{
	(void)state;
	assert_non_null(mkdtemp(tmpdir));
	assert_true(bsnprintf(users_path, sizeof users_path, "%s/users", tmpdir));
	assert_int_equal(userdb_edit(users_path, USERDB_ADD, "alice@example.test", "wonderland",
				     10, -1, -1, stderr),
			 0);
	assert_int_equal(userdb_edit(users_path, USERDB_ADD, "bob@example.org", "builder", 7, -1,
				     -1, stderr),
			 0);
	assert_int_equal(userdb_load(users_path, &db, stderr), 0);
	/* Kerberos reads a profile of ours, never the machine's krb5.conf */
	assert_true(bsnprintf(krb5_conf, sizeof krb5_conf, "%s/krb5.conf", tmpdir));
	FILE *f = fopen(krb5_conf, "w");
	assert_non_null(f);
	assert_int_equal(fclose(f), 0);
	assert_int_equal(setenv("KRB5_CONFIG", krb5_conf, 1), 0);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	userdb_free(db);
	char *lock = xasprintf("%s.lock", users_path);
	unlink(lock);
	free(lock);
	unlink(users_path);
	unlink(krb5_conf);
	rmdir(tmpdir);
	return 0;
}

static struct conf_realm realms[] = {
	{.realm = "EXAMPLE.TEST", .domain = "example.test"},
	{.realm = "Corp.Example", .domain = "example.org"},
};

static const char *user_of(const char *principal)
{
	struct conf_auth a = {.mechanisms = MECH_GSSAPI, .realms = realms,
			      .nrealms = ARRAY_LEN(realms)};
	return sasl_gssapi_principal_user(&a, db, principal);
}

/* NAME@REALM is NAME@DOMAIN when that user exists; the realm exactly,
 * the name without regard to case (as the users file). */
static void test_principal_to_user(void **state)
{
	(void)state;
	assert_string_equal(user_of("alice@EXAMPLE.TEST"), "alice@example.test");
	assert_string_equal(user_of("Alice@EXAMPLE.TEST"), "alice@example.test");
	assert_string_equal(user_of("bob@Corp.Example"), "bob@example.org");
	assert_null(user_of("bob@EXAMPLE.TEST"));       /* no bob@example.test */
	assert_null(user_of("alice@example.test"));     /* realms are case-sensitive */
	assert_null(user_of("alice@OTHER.TEST"));       /* a realm of no realm line */
	assert_null(user_of("alice@CORP.EXAMPLE"));
}

/* Service principals, quoted separators and broken names are nobody. */
static void test_principal_that_is_no_user(void **state)
{
	(void)state;
	assert_null(user_of("host/alice@EXAMPLE.TEST"));
	assert_null(user_of("alice/admin@EXAMPLE.TEST"));
	assert_null(user_of("alice\\@example.test@EXAMPLE.TEST"));
	assert_null(user_of("@EXAMPLE.TEST"));
	assert_null(user_of("alice"));
	assert_null(user_of("alice@"));
	assert_null(user_of(""));
}

static struct sasl_gssapi *exchange(const char *keytab)
{
	struct sasl_gssapi_setup setup = {.keytab = keytab, .replay_cache = "/nonexistent/rc",
					  .service = "imap", .hostname = "mx.example.test"};
	return sasl_gssapi_new(&setup);
}

static void test_cancel_and_bad_base64(void **state)
{
	(void)state;
	struct sasl_gssapi *g = exchange("/nonexistent/keytab");
	sasl_gssapi_set_response(g, "*");
	sasl_gssapi_step(g);
	assert_int_equal(sasl_gssapi_status(g), SASL_GSSAPI_CANCELLED);
	assert_null(sasl_gssapi_principal(g));
	sasl_gssapi_free(g);

	g = exchange("/nonexistent/keytab");
	sasl_gssapi_set_response(g, "YII=x");
	sasl_gssapi_step(g);
	assert_int_equal(sasl_gssapi_status(g), SASL_GSSAPI_BAD_BASE64);
	/* the exchange is over: another step is refused */
	sasl_gssapi_set_response(g, "YII=");
	sasl_gssapi_step(g);
	assert_int_equal(sasl_gssapi_status(g), SASL_GSSAPI_REFUSED);
	assert_string_equal(sasl_gssapi_reason(g), "the exchange is over");
	sasl_gssapi_free(g);
}

/* A keytab that cannot be read is our failure, not the client's. */
static void test_keytab_missing_is_a_server_error(void **state)
{
	(void)state;
	struct sasl_gssapi *g = exchange("/nonexistent/keytab");
	sasl_gssapi_set_response(g, "YIIBAA==");
	sasl_gssapi_step(g);
	assert_int_equal(sasl_gssapi_status(g), SASL_GSSAPI_SERVER_ERROR);
	assert_non_null(strstr(sasl_gssapi_reason(g), "keytab: "));
	sasl_gssapi_free(g);
}

/* A token longer than a SASL line can carry is refused before the
 * GSS-API sees it. */
static void test_token_too_long(void **state)
{
	(void)state;
	size_t n = 4 * (((SASL_TOKEN_MAX + 3) + 2) / 3);
	char *b64 = xmalloc(n + 1);
	memset(b64, 'A', n);
	b64[n] = '\0';
	struct sasl_gssapi *g = exchange("/nonexistent/keytab");
	sasl_gssapi_set_response(g, b64);
	sasl_gssapi_step(g);
	assert_int_equal(sasl_gssapi_status(g), SASL_GSSAPI_REFUSED);
	assert_string_equal(sasl_gssapi_reason(g), "a token too long");
	sasl_gssapi_free(g);
	free(b64);
}

/* GSSAPI sends no password: plaintext-requires-tls leaves it before TLS,
 * require yes does not. */
static void test_gssapi_before_tls(void **state)
{
	(void)state;
	struct conf_server srv = {.name = "s"};
	srv.auth.mechanisms = MECH_GSSAPI | MECH_PLAIN | MECH_SCRAM_SHA_256;
	srv.auth.plaintext_requires_tls = true;
	assert_int_equal(login_mechanisms(&srv, false), MECH_GSSAPI);
	assert_int_equal(login_mechanisms(&srv, true), srv.auth.mechanisms);
	assert_false(login_password_allowed(&srv, false));
	srv.tls.require = true;
	assert_int_equal(login_mechanisms(&srv, false), 0);
}

/* `posthorn check`: a keytab that cannot be read is a warning that says
 * so; a server without GSSAPI has none. */
static void test_check_keytab(void **state)
{
	(void)state;
	struct conf_server srv = {.name = "imap", .protocol = PROTO_IMAP,
				  .hostname = "mx.example.test"};
	srv.auth.mechanisms = MECH_GSSAPI;
	srv.auth.keytab = "/nonexistent/posthorn.keytab";
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);
	assert_non_null(f);
	assert_int_equal(sasl_gssapi_check_keytab(&srv, f), 1);
	srv.auth.mechanisms = MECH_PLAIN;
	assert_int_equal(sasl_gssapi_check_keytab(&srv, f), 0);
	assert_int_equal(fclose(f), 0);
	assert_non_null(strstr(text, "warning: server imap: keytab /nonexistent/posthorn.keytab "
				     "cannot be read ("));
	assert_non_null(strstr(text, "GSSAPI logins will fail\n"));
	free(text);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_principal_to_user),
		cmocka_unit_test(test_principal_that_is_no_user),
		cmocka_unit_test(test_cancel_and_bad_base64),
		cmocka_unit_test(test_keytab_missing_is_a_server_error),
		cmocka_unit_test(test_token_too_long),
		cmocka_unit_test(test_gssapi_before_tls),
		cmocka_unit_test(test_check_keytab),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}

/* libFuzzer entry point for SASL GSSAPI (RFC 4752): the client's responses
 * go through the canonical base64 decoder and MIT's context acceptor
 * (gss_accept_sec_context: the GSS framing of RFC 2743 §3.1, the krb5
 * AP-REQ of RFC 4121) against a keytab of the harness with one fixed key,
 * and the same bytes, as text, through the principal -> user mapping.
 * Kerberos reads an empty profile of the harness, never /etc/krb5.conf.
 * Checks: every challenge is canonical base64, a finished exchange stays
 * finished, no principal without an accepted ticket, and a principal
 * maps only to a user of the one realm with no instance.
 *
 * Input: the client's messages, base64-encoded here, separated by 0xff
 * octets; the whole input is also tried as a principal name. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <krb5.h>
#include <openssl/evp.h>

#include "auth/sasl_gssapi.h"
#include "auth/userdb.h"
#include "conf/conf.h"
#include "harness.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

enum { FUZZ_MESSAGES_MAX = 8 };

#define FUZZ_ACCEPTOR "imap/mail.example.test@EXAMPLE.TEST"

/* A keytab with one AES-256 key of FUZZ_ACCEPTOR (fixed bytes), made once. */
static const char *fuzz_keytab(void)
{
	static char path[512];
	if (path[0])
		return path;
	CHECK(setenv("KRB5_CONFIG", fuzz_put("krb5.conf", ""), 1) == 0);
	CHECK(snprintf(path, sizeof path, "%s/fuzz.keytab", fuzz_dir()) < (int)sizeof path);
	char name[600];
	CHECK(snprintf(name, sizeof name, "WRFILE:%s", path) < (int)sizeof name);
	krb5_context kc;
	krb5_keytab kt;
	krb5_keytab_entry e;
	uint8_t key[32];
	memset(key, 0x5a, sizeof key);
	memset(&e, 0, sizeof e);
	CHECK(krb5_init_context(&kc) == 0);
	CHECK(krb5_kt_resolve(kc, name, &kt) == 0);
	CHECK(krb5_parse_name(kc, FUZZ_ACCEPTOR, &e.principal) == 0);
	e.vno = 1;
	e.key.enctype = ENCTYPE_AES256_CTS_HMAC_SHA1_96;
	e.key.length = sizeof key;
	e.key.contents = key;
	CHECK(krb5_kt_add_entry(kc, kt, &e) == 0);
	krb5_free_principal(kc, e.principal);
	CHECK(krb5_kt_close(kc, kt) == 0);
	krb5_free_context(kc);
	return path;
}

static void check_base64(const char *s)
{
	size_t n = strlen(s);
	CHECK(n % 4 == 0);
	if (n == 0)
		return;
	unsigned char *out = malloc(n / 4 * 3 + 1);
	CHECK(out != NULL);
	CHECK(EVP_DecodeBlock(out, (const unsigned char *)s, (int)n) >= 0);
	free(out);
}

static char *encode(const uint8_t *d, size_t n)
{
	char *out = malloc(4 * ((n + 2) / 3) + 1);
	CHECK(out != NULL);
	out[0] = '\0';
	if (n > 0)
		EVP_EncodeBlock((unsigned char *)out, d, (int)n);
	return out;
}

static void fuzz_exchange(const uint8_t *data, size_t size)
{
	char rc[600];
	CHECK(snprintf(rc, sizeof rc, "%s/replay", fuzz_dir()) < (int)sizeof rc);
	struct sasl_gssapi_setup setup = {.keytab = fuzz_keytab(), .replay_cache = rc,
					  .service = "imap", .hostname = "mail.example.test"};
	struct sasl_gssapi *g = sasl_gssapi_new(&setup);
	bool over = false;
	for (int i = 0; i < FUZZ_MESSAGES_MAX && data; i++) {
		size_t len, rest;
		const uint8_t *next = fuzz_split(data, size, 0xff, &len, &rest);
		char *b64 = encode(data, len);
		sasl_gssapi_set_response(g, b64);
		free(b64);
		sasl_gssapi_step(g);
		enum sasl_gssapi_status st = sasl_gssapi_status(g);
		if (over)
			CHECK(st == SASL_GSSAPI_REFUSED);
		if (st == SASL_GSSAPI_CONTINUE)
			check_base64(sasl_gssapi_challenge(g));
		else
			over = true;
		/* nobody can make a ticket for the harness's key */
		CHECK(st != SASL_GSSAPI_DONE);
		data = next;
		size = rest;
	}
	sasl_gssapi_free(g);
}

static void fuzz_principal(const uint8_t *data, size_t size)
{
	static struct conf_realm realm = {.realm = "EXAMPLE.TEST", .domain = "example.test"};
	struct conf_auth auth = {.mechanisms = MECH_GSSAPI, .realms = &realm, .nrealms = 1};
	char *text = malloc(size + 1);
	CHECK(text != NULL);
	memcpy(text, data, size);
	text[size] = '\0';
	const char *user = sasl_gssapi_principal_user(&auth, fuzz_userdb(), text);
	if (user) {
		const char *at = strrchr(text, '@');
		CHECK(at && strcmp(at + 1, "EXAMPLE.TEST") == 0);
		CHECK(strcmp(user, FUZZ_USER) == 0);
		CHECK(!memchr(text, '/', (size_t)(at - text)));
	}
	free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > 20000)
		return 0;
	fuzz_exchange(data, size);
	fuzz_principal(data, size);
	return 0;
}

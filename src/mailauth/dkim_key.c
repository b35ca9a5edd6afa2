/* dkim_key: DKIM private keys (PEM), key records (RFC 6376 §3.6.1,
 * RFC 8463 §4.2 for Ed25519) made and parsed, new keys.  OpenSSL 3 EVP. */
#include "mailauth/dkim_key.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "lib/util.h"
#include "mailauth/dkim_tags.h"

enum { ED25519_KEY_LEN = 32, PUBKEY_DER_MAX = 2048 };

const char *dkim_key_type_name(enum dkim_key_type t)
{
	return t == DKIM_KEY_ED25519 ? "ed25519" : "rsa";
}

static int key_type_of(EVP_PKEY *pkey, enum dkim_key_type *type)
{
	switch (EVP_PKEY_get_base_id(pkey)) {
	case EVP_PKEY_RSA:
		*type = DKIM_KEY_RSA;
		return 0;
	case EVP_PKEY_ED25519:
		*type = DKIM_KEY_ED25519;
		return 0;
	default:
		return -1;
	}
}

int dkim_privkey_load(const char *path, const char *domain, const char *selector,
		      struct dkim_privkey *out, char *err, size_t errsz)
{
	memset(out, 0, sizeof *out);
	FILE *f = fopen(path, "re");
	if (!f) {
		errfmt(err, errsz, "cannot open %s: %s", path, strerror(errno));
		return -1;
	}
	EVP_PKEY *pkey = PEM_read_PrivateKey(f, NULL, NULL, NULL);
	(void)fclose(f); /* read only: nothing to lose */
	if (!pkey) {
		errfmt(err, errsz, "%s holds no PEM private key", path);
		return -1;
	}
	enum dkim_key_type type;
	if (key_type_of(pkey, &type) < 0) {
		errfmt(err, errsz, "%s: not an RSA or Ed25519 key", path);
		EVP_PKEY_free(pkey);
		return -1;
	}
	int bits = EVP_PKEY_get_bits(pkey);
	if (type == DKIM_KEY_RSA && (bits < DKIM_RSA_SIGN_BITS_MIN || bits > DKIM_RSA_BITS_MAX)) {
		errfmt(err, errsz, "%s: RSA key of %d bits (use %d to %d)", path, bits,
		       DKIM_RSA_SIGN_BITS_MIN, DKIM_RSA_BITS_MAX);
		EVP_PKEY_free(pkey);
		return -1;
	}
	out->domain = xstrdup(domain);
	out->selector = xstrdup(selector);
	out->type = type;
	out->bits = (unsigned)bits;
	out->pkey = pkey;
	return 0;
}

void dkim_privkey_clear(struct dkim_privkey *k)
{
	free(k->domain);
	free(k->selector);
	EVP_PKEY_free(k->pkey);
	memset(k, 0, sizeof *k);
}

EVP_PKEY *dkim_key_generate(enum dkim_key_type type)
{
	if (type == DKIM_KEY_ED25519)
		return EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
	return EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)DKIM_RSA_NEW_BITS);
}

/* p=: SubjectPublicKeyInfo DER for RSA (§3.6.1), the raw 32 bytes for
 * Ed25519 (RFC 8463 §4.2). */
static char *public_base64(EVP_PKEY *pkey, enum dkim_key_type type)
{
	if (type == DKIM_KEY_ED25519) {
		unsigned char raw[ED25519_KEY_LEN];
		size_t n = sizeof raw;
		if (EVP_PKEY_get_raw_public_key(pkey, raw, &n) != 1 || n != sizeof raw)
			return NULL;
		return dkim_base64_encode(raw, n);
	}
	unsigned char *der = NULL;
	int n = i2d_PUBKEY(pkey, &der);
	if (n <= 0)
		return NULL;
	char *b64 = dkim_base64_encode(der, (size_t)n);
	OPENSSL_free(der);
	return b64;
}

char *dkim_key_record(EVP_PKEY *pkey)
{
	enum dkim_key_type type;
	if (key_type_of(pkey, &type) < 0)
		return NULL;
	char *b64 = public_base64(pkey, type);
	if (!b64)
		return NULL;
	char *rec = xasprintf("v=DKIM1; k=%s; p=%s", dkim_key_type_name(type), b64);
	free(b64);
	return rec;
}

bool dkim_key_same_public(EVP_PKEY *a, EVP_PKEY *b)
{
	return a && b && EVP_PKEY_eq(a, b) == 1;
}

/* ---- key records from DNS ------------------------------------------------------ */

/* Does the colon-separated list in tag t hold word (white space around
 * the items allowed)? */
static bool list_has(const struct dkim_tag *t, const char *word)
{
	size_t wl = strlen(word), i = 0;
	while (i <= t->value_len) {
		size_t j = i;
		while (j < t->value_len && t->value[j] != ':')
			j++;
		size_t a = i, b = j;
		while (a < b && (t->value[a] == ' ' || t->value[a] == '\t' || t->value[a] == '\r' ||
				 t->value[a] == '\n'))
			a++;
		while (b > a && (t->value[b - 1] == ' ' || t->value[b - 1] == '\t' ||
				 t->value[b - 1] == '\r' || t->value[b - 1] == '\n'))
			b--;
		if (b - a == wl && memcmp(t->value + a, word, wl) == 0)
			return true;
		i = j + 1;
	}
	return false;
}

static EVP_PKEY *rsa_from_der(const unsigned char *der, long n)
{
	const unsigned char *p = der;
	EVP_PKEY *k = d2i_PUBKEY(NULL, &p, n);
	if (k && p == der + n && EVP_PKEY_get_base_id(k) == EVP_PKEY_RSA)
		return k;
	EVP_PKEY_free(k);
	/* some publish PKCS#1 RSAPublicKey, which verifiers accept too */
	p = der;
	k = d2i_PublicKey(EVP_PKEY_RSA, NULL, &p, n);
	if (k && p == der + n)
		return k;
	EVP_PKEY_free(k);
	return NULL;
}

static int pubkey_decode(const struct dkim_tag *p, struct dkim_pubkey *out, char *err,
			 size_t errsz)
{
	unsigned char der[PUBKEY_DER_MAX];
	long n = dkim_base64_decode(p->value, p->value_len, der, sizeof der);
	if (n < 0) {
		errfmt(err, errsz, "p= is not base64 of at most %d bytes", PUBKEY_DER_MAX);
		return -1;
	}
	if (out->type == DKIM_KEY_ED25519) {
		if (n != ED25519_KEY_LEN) {
			errfmt(err, errsz, "Ed25519 key of %ld bytes (not 32)", n);
			return -1;
		}
		out->pkey = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, der, (size_t)n);
		out->bits = 256;
	} else {
		out->pkey = rsa_from_der(der, n);
		out->bits = out->pkey ? (unsigned)EVP_PKEY_get_bits(out->pkey) : 0;
	}
	if (!out->pkey) {
		errfmt(err, errsz, "p= is not an %s public key", dkim_key_type_name(out->type));
		return -1;
	}
	return 0;
}

int dkim_pubkey_parse(const char *text, size_t len, struct dkim_pubkey *out, char *err,
		      size_t errsz)
{
	memset(out, 0, sizeof *out);
	struct dkim_tags tags;
	if (dkim_tags_parse(text, len, &tags, err, errsz) < 0)
		return -1;
	const struct dkim_tag *v = dkim_tags_get(&tags, "v"), *k = dkim_tags_get(&tags, "k"),
			      *h = dkim_tags_get(&tags, "h"), *s = dkim_tags_get(&tags, "s"),
			      *t = dkim_tags_get(&tags, "t"), *p = dkim_tags_get(&tags, "p");
	if (v && (v != &tags.tag[0] || !dkim_tag_is(v, "DKIM1"))) {
		errfmt(err, errsz, "v= is not DKIM1 in first place");
		return -1;
	}
	if (!k || dkim_tag_is(k, "rsa"))
		out->type = DKIM_KEY_RSA;
	else if (dkim_tag_is(k, "ed25519"))
		out->type = DKIM_KEY_ED25519;
	else {
		errfmt(err, errsz, "unknown key type k=%.*s", (int)(k->value_len > 16 ? 16 : k->value_len),
		       k->value);
		return -1;
	}
	if (s && !list_has(s, "*") && !list_has(s, "email")) {
		errfmt(err, errsz, "key not for email (s=)");
		return -1;
	}
	out->sha256_ok = !h || list_has(h, "sha256");
	out->testing = t && list_has(t, "y");
	out->strict_identity = t && list_has(t, "s");
	if (!p) {
		errfmt(err, errsz, "no p= tag");
		return -1;
	}
	if (p->value_len == 0)
		return 0; /* revoked (§3.6.1) */
	return pubkey_decode(p, out, err, errsz);
}

void dkim_pubkey_clear(struct dkim_pubkey *k)
{
	EVP_PKEY_free(k->pkey);
	memset(k, 0, sizeof *k);
}

bool dkim_key_verify_digest(EVP_PKEY *pkey, enum dkim_key_type t, const unsigned char *sig,
			    size_t siglen, const unsigned char *digest, size_t dlen)
{
	bool ok = false;
	if (t == DKIM_KEY_ED25519) {
		EVP_MD_CTX *md = EVP_MD_CTX_new();
		ok = md && EVP_DigestVerifyInit(md, NULL, NULL, NULL, pkey) == 1 &&
		     EVP_DigestVerify(md, sig, siglen, digest, dlen) == 1;
		EVP_MD_CTX_free(md);
	} else {
		EVP_PKEY_CTX *c = EVP_PKEY_CTX_new(pkey, NULL);
		ok = c && EVP_PKEY_verify_init(c) == 1 &&
		     EVP_PKEY_CTX_set_rsa_padding(c, RSA_PKCS1_PADDING) == 1 &&
		     EVP_PKEY_CTX_set_signature_md(c, EVP_sha256()) == 1 &&
		     EVP_PKEY_verify(c, sig, siglen, digest, dlen) == 1;
		EVP_PKEY_CTX_free(c);
	}
	return ok;
}

bool dkim_pubkey_verify(const struct dkim_pubkey *k, enum dkim_key_type want,
			const unsigned char *sig, size_t siglen, const unsigned char *digest,
			size_t dlen, char *why, size_t whysz)
{
	if (!k->pkey)
		errfmt(why, whysz, "key revoked");
	else if (k->type != want)
		errfmt(why, whysz, "key type %s does not match a=", dkim_key_type_name(k->type));
	else if (!k->sha256_ok)
		errfmt(why, whysz, "key does not allow sha256 (h=)");
	else if (k->type == DKIM_KEY_RSA &&
		 (k->bits < DKIM_RSA_VERIFY_BITS_MIN || k->bits > DKIM_RSA_BITS_MAX))
		errfmt(why, whysz, "RSA key of %u bits (%d to %d accepted)", k->bits,
		       DKIM_RSA_VERIFY_BITS_MIN, DKIM_RSA_BITS_MAX);
	else if (!dkim_key_verify_digest(k->pkey, k->type, sig, siglen, digest, dlen))
		errfmt(why, whysz, "signature did not verify");
	else
		return true;
	return false;
}

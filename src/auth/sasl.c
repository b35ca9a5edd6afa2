/* sasl: the server side of SASL (RFC 4422), independent of the protocol:
 * PLAIN (RFC 4616), LOGIN (draft-murchison-sasl-login-00), SCRAM-SHA-256
 * (RFC 5802, RFC 7677).  All crypto (base64, HMAC, SHA-256, PBKDF2,
 * random) is OpenSSL's. */
#include "auth/sasl.h"

#include <ctype.h>
#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include "auth/userdb.h"
#include "lib/util.h"

/* Named limits. */
enum {
	SASL_MSG_MAX = 4096,            /* one decoded client message */
	SASL_FIELD_MAX = 255,           /* RFC 4616 §2: authzid, authcid, passwd */
	SASL_NONCE_BYTES = 24,          /* CSPRNG bytes in the server nonce */
	SASL_FAKE_SALT_LEN = 16,        /* as long as the salt of a real record */
	SASL_DISGUISE_HASH = 64,        /* HMAC-SHA-512 */
};

/* ---- mechanisms ------------------------------------------------------- */

struct sasl_mech_info {
	unsigned bit;
	const char *name;
	bool plaintext;         /* sends the password itself */
};

/* Strongest first: the order of the AUTH list. */
static const struct sasl_mech_info sasl_mechs[] = {
    {MECH_GSSAPI, "GSSAPI", false}, /* its exchange is sasl_gssapi.c's */
    {MECH_SCRAM_SHA_256, "SCRAM-SHA-256", false},
    {MECH_PLAIN, "PLAIN", true},
    {MECH_LOGIN, "LOGIN", true},
};

static const struct sasl_mech_info *sasl_mech_info(unsigned mech)
{
	for (size_t i = 0; i < ARRAY_LEN(sasl_mechs); i++)
		if (sasl_mechs[i].bit == mech)
			return &sasl_mechs[i];
	return NULL;
}

unsigned sasl_mech_from_name(const char *name)
{
	if (!name)
		return 0;
	for (size_t i = 0; i < ARRAY_LEN(sasl_mechs); i++)
		if (str_ieq(name, sasl_mechs[i].name))
			return sasl_mechs[i].bit;
	return 0;
}

const char *sasl_mech_name(unsigned mech)
{
	const struct sasl_mech_info *m = sasl_mech_info(mech);
	return m ? m->name : NULL;
}

bool sasl_mech_is_plaintext(unsigned mech)
{
	const struct sasl_mech_info *m = sasl_mech_info(mech);
	return m && m->plaintext;
}

/* A name that does not fit whole is left out, so the list stays valid. */
void sasl_mech_list(unsigned mechs, char *out, size_t outsz)
{
	if (outsz == 0)
		return;
	size_t len = 0;
	out[0] = '\0';
	for (size_t i = 0; i < ARRAY_LEN(sasl_mechs); i++) {
		if (!(mechs & sasl_mechs[i].bit))
			continue;
		size_t n = strlen(sasl_mechs[i].name), sep = len > 0;
		if (len + sep + n >= outsz)
			continue;
		if (sep)
			out[len++] = ' ';
		memcpy(out + len, sasl_mechs[i].name, n + 1);
		len += n;
	}
}

/* ---- small helpers ---------------------------------------------------- */

/* Free a buffer that may hold a secret. */
static void sasl_wipe_free(void *p, size_t len)
{
	if (!p)
		return;
	OPENSSL_cleanse(p, len);
	free(p);
}

static void sasl_wipe_str(char *s)
{
	if (s)
		sasl_wipe_free(s, strlen(s));
}

static char *sasl_b64_encode(const void *in, size_t len)
{
	if (len > SASL_TOKEN_MAX)
		fatal("sasl: %zu bytes to encode", len);
	char *out = xmalloc(4 * ((len + 2) / 3) + 1);
	EVP_EncodeBlock((unsigned char *)out, in, (int)len); /* NUL-terminates */
	return out;
}

static bool sasl_is_b64_char(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	       c == '+' || c == '/';
}

/* Alphabet, length a multiple of 4, '=' only as one or two final pads. */
static bool sasl_b64_shape(const char *in, size_t len, size_t *pad)
{
	*pad = 0;
	if (len % 4 != 0)
		return false;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)in[i];
		if (c == '=' && i + 2 >= len)
			(*pad)++;
		else if (!sasl_is_b64_char(c) || *pad > 0)
			return false;
	}
	return true;
}

/* Decode canonical base64 (RFC 4648 §4, as RFC 4954 requires) into a new
 * NUL-terminated buffer that the caller wipes.  "=" is the empty string
 * (RFC 4954 §4).  EVP_DecodeBlock() counts the padding as zero bytes, and
 * accepts non-zero bits before the padding, so the text is re-encoded and
 * must come out the same. */
static enum sasl_status sasl_b64_decode_max(const char *in, size_t max, uint8_t **out,
					   size_t *outlen)
{
	*out = NULL;
	*outlen = 0;
	size_t b64max = 4 * ((max + 2) / 3);
	size_t len = strnlen(in, b64max + 1), pad;
	if (len > b64max)
		return SASL_BAD_MESSAGE;
	if (strcmp(in, "=") == 0)
		len = 0;
	if (!sasl_b64_shape(in, len, &pad))
		return SASL_BAD_BASE64;
	uint8_t *buf = xmalloc(len / 4 * 3 + 1);
	int n = len ? EVP_DecodeBlock(buf, (const unsigned char *)in, (int)len) : 0;
	if (n < 0 || (size_t)n < pad) {
		sasl_wipe_free(buf, len / 4 * 3 + 1);
		return SASL_BAD_BASE64;
	}
	size_t dlen = (size_t)n - pad;
	if (dlen > max) {
		sasl_wipe_free(buf, len / 4 * 3 + 1);
		return SASL_BAD_MESSAGE;
	}
	char *again = sasl_b64_encode(buf, dlen);
	bool canonical = strlen(again) == len && memcmp(again, in, len) == 0;
	sasl_wipe_str(again);
	if (!canonical) {
		sasl_wipe_free(buf, len / 4 * 3 + 1);
		return SASL_BAD_BASE64;
	}
	buf[dlen] = '\0';
	*out = buf;
	*outlen = dlen;
	return SASL_OK;
}

static enum sasl_status sasl_b64_decode(const char *in, uint8_t **out, size_t *outlen)
{
	return sasl_b64_decode_max(in, SASL_MSG_MAX, out, outlen);
}

char *sasl_token_encode(const void *in, size_t len)
{
	return sasl_b64_encode(in, len);
}

enum sasl_status sasl_token_decode(const char *in, uint8_t **out, size_t *outlen)
{
	return sasl_b64_decode_max(in, SASL_TOKEN_MAX, out, outlen);
}

static bool sasl_hmac(const uint8_t *key, size_t keylen, const void *data, size_t len,
		      uint8_t out[USERDB_KEY_LEN])
{
	unsigned int n = 0;
	return HMAC(EVP_sha256(), key, (int)keylen, data, len, out, &n) && n == USERDB_KEY_LEN;
}

/* ---- per-process secrets ---------------------------------------------- */

/* A record no password matches, to spend the time of a real check on an
 * unknown user, and the key of the fake SCRAM salts (RFC 5802 §5.1 asks
 * the server not to reveal whether a user exists).  Made once, on first
 * use (pthread_once: a step may run on a worker thread, away from the
 * loop, for the PBKDF2 of PLAIN and LOGIN). */
static struct {
	bool ready;             /* false if the CSPRNG failed */
	uint8_t salt_key[USERDB_KEY_LEN];
	struct user_record dummy;
} sasl_secret;
static pthread_once_t sasl_secret_once = PTHREAD_ONCE_INIT;

static void sasl_secret_make(void)
{
	struct user_record *d = &sasl_secret.dummy;
	d->iterations = USERDB_DEFAULT_ITERATIONS;
	d->salt_len = SASL_FAKE_SALT_LEN;
	sasl_secret.ready = RAND_bytes(sasl_secret.salt_key, sizeof sasl_secret.salt_key) == 1 &&
			    RAND_bytes(d->salt, SASL_FAKE_SALT_LEN) == 1 &&
			    RAND_bytes(d->stored_key, USERDB_KEY_LEN) == 1 &&
			    RAND_bytes(d->server_key, USERDB_KEY_LEN) == 1;
}

static bool sasl_secret_init(void)
{
	if (pthread_once(&sasl_secret_once, sasl_secret_make) != 0)
		return false;
	return sasl_secret.ready;
}

/* What a name that is nobody's is given, so that it passes for a user who
 * exists (RFC 5802 §5.1): a salt of its own, the same at every attempt,
 * and the salt length and iteration count of a real record, picked by a
 * second keyed hash of the name (the same record while the users stay the
 * same).  SCRAM shows both on the wire, and a password check takes as long
 * as its iteration count: one fixed count would set the users with other
 * counts apart from the names that do not exist.  The defaults when there
 * are no users.  false if the CSPRNG failed. */
struct sasl_disguise {
	uint8_t salt[USERDB_SALT_MAX];
	size_t salt_len;
	unsigned iterations;
};

static bool sasl_keyed_hash(char label, const char *name, size_t len,
			    uint8_t out[SASL_DISGUISE_HASH])
{
	unsigned char *data = xmalloc(len + 1);
	data[0] = (unsigned char)label;
	for (size_t i = 0; i < len; i++) /* case-insensitive, as the lookup */
		data[i + 1] = (unsigned char)tolower((unsigned char)name[i]);
	unsigned int n = 0;
	bool ok = HMAC(EVP_sha512(), sasl_secret.salt_key, USERDB_KEY_LEN, data, len + 1, out,
		       &n) &&
		  n == SASL_DISGUISE_HASH;
	OPENSSL_cleanse(data, len + 1);
	free(data);
	return ok;
}

static bool sasl_disguise(const struct userdb *db, const char *name, size_t len,
			  struct sasl_disguise *out)
{
	_Static_assert((int)USERDB_SALT_MAX <= (int)SASL_DISGUISE_HASH, "a fake salt is one hash");
	uint8_t salt[SASL_DISGUISE_HASH], pick[SASL_DISGUISE_HASH];
	if (!sasl_secret_init() || !sasl_keyed_hash('s', name, len, salt) ||
	    !sasl_keyed_hash('p', name, len, pick))
		return false;
	out->salt_len = SASL_FAKE_SALT_LEN;
	out->iterations = USERDB_DEFAULT_ITERATIONS;
	size_t n = db ? userdb_count(db) : 0;
	if (n > 0) {
		uint64_t v = 0;
		for (int i = 0; i < 8; i++)
			v = v << 8 | pick[i];
		const struct user_record *rec = userdb_at(db, (size_t)(v % n));
		out->salt_len = rec->salt_len;
		out->iterations = rec->iterations;
	}
	memcpy(out->salt, salt, out->salt_len);
	OPENSSL_cleanse(salt, sizeof salt);
	OPENSSL_cleanse(pick, sizeof pick);
	return true;
}

/* For tests: a fixed server nonce suffix instead of a random one. */
static char *sasl_fixed_nonce;

void sasl_test_set_nonce(const char *nonce)
{
	free(sasl_fixed_nonce);
	sasl_fixed_nonce = nonce ? xstrdup(nonce) : NULL;
}

/* ---- sessions --------------------------------------------------------- */

enum sasl_state {
	SASL_STATE_START,       /* nothing received yet */
	SASL_STATE_PLAIN,       /* PLAIN: empty challenge sent */
	SASL_STATE_LOGIN_USER,  /* LOGIN: "Username:" sent */
	SASL_STATE_LOGIN_PASS,  /* LOGIN: "Password:" sent */
	SASL_STATE_SCRAM_FIRST, /* SCRAM: empty challenge sent */
	SASL_STATE_SCRAM_FINAL, /* SCRAM: server-first-message sent */
	SASL_STATE_DONE,        /* succeeded, failed or cancelled */
};

struct sasl_session {
	unsigned mech;
	enum sasl_state state;
	const struct userdb *db;
	char *user;             /* attempted; the record's address after OK */
	/* SCRAM-SHA-256 (RFC 5802 §5), kept between the two client messages */
	char *gs2_header;       /* exactly as sent: "n,," "y,,a=...," */
	char *client_first_bare;
	char *server_first;
	char *nonce;            /* client nonce + server nonce */
	bool known;             /* the user exists; the keys below are real */
	uint8_t stored_key[USERDB_KEY_LEN];
	uint8_t server_key[USERDB_KEY_LEN];
	struct sasl_check *check; /* PLAIN, LOGIN: after SASL_CHECK */
};

struct sasl_session *sasl_start(unsigned mech, const struct userdb *db)
{
	if (!sasl_mech_info(mech) || mech == MECH_GSSAPI)
		return NULL;
	struct sasl_session *s = xcalloc(1, sizeof *s);
	s->mech = mech;
	s->state = SASL_STATE_START;
	s->db = db;
	return s;
}

const char *sasl_user(const struct sasl_session *s)
{
	return s ? s->user : NULL;
}

void sasl_free(struct sasl_session *s)
{
	if (!s)
		return;
	sasl_wipe_str(s->user);
	sasl_wipe_str(s->gs2_header);
	sasl_wipe_str(s->client_first_bare);
	sasl_wipe_str(s->server_first);
	sasl_wipe_str(s->nonce);
	sasl_check_free(s->check);
	OPENSSL_cleanse(s, sizeof *s);
	free(s);
}

static void sasl_set_user(struct sasl_session *s, const char *user, size_t len)
{
	sasl_wipe_str(s->user);
	s->user = xstrndup(user, len);
}

/* ---- password checks --------------------------------------------------- */

struct sasl_check {
	struct user_record rec;  /* a copy; the dummy's for an unknown user */
	bool known;
	bool passed;
	char *user;              /* the name tried */
	char *pass;
	size_t len;
};

struct sasl_check *sasl_check_new(const struct userdb *db, const char *user, size_t ulen,
				  const char *pass, size_t len)
{
	struct sasl_check *c = xcalloc(1, sizeof *c);
	bool whole = user && strlen(user) == ulen;
	const struct user_record *rec = whole ? userdb_find(db, user) : NULL;
	struct sasl_disguise mask;
	c->user = user ? xstrdup(user) : NULL;
	if (rec) {
		c->rec = *rec;
		c->rec.address = xstrdup(rec->address);
		c->known = true;
	} else if (sasl_disguise(db, user ? user : "", user ? ulen : 0, &mask)) {
		c->rec = sasl_secret.dummy;
		c->rec.address = NULL;
		c->rec.iterations = mask.iterations;
		c->rec.salt_len = mask.salt_len;
		memcpy(c->rec.salt, mask.salt, mask.salt_len);
		OPENSSL_cleanse(&mask, sizeof mask);
	} else {
		c->rec.iterations = 0; /* no dummy: fails at once (no CSPRNG) */
	}
	c->pass = xmalloc(len + 1);
	memcpy(c->pass, pass, len);
	c->pass[len] = '\0';
	c->len = len;
	return c;
}

void sasl_check_run(void *check)
{
	struct sasl_check *c = check;
	bool ok = c->rec.iterations > 0 && userdb_verify_password(&c->rec, c->pass, c->len);
	c->passed = ok && c->known;
	/* wiped here, freed by sasl_check_free() on the thread that made it */
	OPENSSL_cleanse(c->pass, c->len + 1);
}

struct offload_job *sasl_check_submit(struct sasl_check *c, offload_done_fn done, void *owner)
{
	return offload_submit(sasl_check_run, done, sasl_check_free, c, owner);
}

unsigned sasl_check_iterations(const struct sasl_check *c)
{
	return c->rec.iterations;
}

const char *sasl_check_address(const struct sasl_check *c)
{
	return c->passed ? c->rec.address : NULL;
}

const char *sasl_check_user(const struct sasl_check *c)
{
	return c->user;
}

const char *sasl_check_password(const struct sasl_check *c, size_t *len)
{
	*len = c->len;
	return c->pass;
}

void sasl_check_set_result(struct sasl_check *c, const char *address)
{
	free(c->rec.address);
	c->rec.address = address ? xstrdup(address) : NULL;
	c->passed = address != NULL;
}

void sasl_check_free(void *check)
{
	struct sasl_check *c = check;
	if (!c)
		return;
	sasl_wipe_free(c->pass, c->len + 1);
	free(c->rec.address);
	free(c->user);
	OPENSSL_cleanse(c, sizeof *c);
	free(c);
}

/* The password's check is made ready, not run: the caller runs it away
 * from the event loop. */
static enum sasl_status sasl_verify(struct sasl_session *s, const char *pass, size_t len)
{
	sasl_check_free(s->check);
	s->check = sasl_check_new(s->db, s->user, s->user ? strlen(s->user) : 0, pass, len);
	return SASL_CHECK;
}

struct sasl_check *sasl_take_check(struct sasl_session *s)
{
	struct sasl_check *c = s->check;
	s->check = NULL;
	return c;
}

enum sasl_status sasl_checked(struct sasl_session *s, const struct sasl_check *c)
{
	const char *address = sasl_check_address(c);
	if (!address)
		return SASL_FAIL;
	sasl_set_user(s, address, strlen(address));
	return SASL_OK;
}

/* ---- PLAIN (RFC 4616) ------------------------------------------------- */

/* message = [authzid] UTF8NUL authcid UTF8NUL passwd (RFC 4616 §2). */
static enum sasl_status sasl_plain(struct sasl_session *s, const uint8_t *msg, size_t len)
{
	const uint8_t *end = msg + len;
	const uint8_t *nul1 = memchr(msg, '\0', len);
	if (!nul1)
		return SASL_BAD_MESSAGE;
	const uint8_t *authcid = nul1 + 1;
	const uint8_t *nul2 = memchr(authcid, '\0', (size_t)(end - authcid));
	if (!nul2)
		return SASL_BAD_MESSAGE;
	const uint8_t *pass = nul2 + 1;
	size_t zlen = (size_t)(nul1 - msg), clen = (size_t)(nul2 - authcid),
	       plen = (size_t)(end - pass);
	if (memchr(pass, '\0', plen))
		return SASL_BAD_MESSAGE;
	if (clen == 0 || plen == 0 || zlen > SASL_FIELD_MAX || clen > SASL_FIELD_MAX ||
	    plen > SASL_FIELD_MAX)
		return SASL_BAD_MESSAGE;
	sasl_set_user(s, (const char *)authcid, clen);
	/* Acting for someone else is never granted (RFC 4616 §2): an authzid
	 * other than the user's own name is refused, not ignored. */
	if (zlen > 0 && !(zlen == clen && strncasecmp((const char *)msg, s->user, clen) == 0))
		return SASL_BAD_AUTHZID;
	return sasl_verify(s, (const char *)pass, plen);
}

/* ---- LOGIN (draft-murchison-sasl-login-00) ---------------------------- */

static bool sasl_login_field_ok(const uint8_t *msg, size_t len)
{
	return len > 0 && len <= SASL_FIELD_MAX && !memchr(msg, '\0', len);
}

static enum sasl_status sasl_login_user(struct sasl_session *s, const uint8_t *msg, size_t len,
					char **challenge)
{
	if (!sasl_login_field_ok(msg, len))
		return SASL_BAD_MESSAGE;
	sasl_set_user(s, (const char *)msg, len);
	s->state = SASL_STATE_LOGIN_PASS;
	*challenge = sasl_b64_encode("Password:", strlen("Password:"));
	return SASL_CONTINUE;
}

static enum sasl_status sasl_login_pass(struct sasl_session *s, const uint8_t *msg, size_t len)
{
	if (!sasl_login_field_ok(msg, len))
		return SASL_BAD_MESSAGE;
	return sasl_verify(s, (const char *)msg, len);
}

/* ---- SCRAM-SHA-256 (RFC 5802, RFC 7677) ------------------------------- */

/* saslname (RFC 5802 §7): "=2C" is ',', "=3D" is '='; any other '=' is an
 * error.  Non-empty, at most SASL_FIELD_MAX octets decoded.  NULL if bad. */
static char *sasl_scram_name(const char *in, size_t len)
{
	char *out = xmalloc(len + 1);
	size_t n = 0;
	bool ok = len > 0;
	for (size_t i = 0; ok && i < len; i++) {
		char c = in[i];
		if (c == '=') {
			if (len - i < 3)
				ok = false;
			else if (in[i + 1] == '2' && in[i + 2] == 'C')
				c = ',';
			else if (in[i + 1] == '3' && in[i + 2] == 'D')
				c = '=';
			else
				ok = false;
			i += 2;
		}
		out[n++] = c;
	}
	if (!ok || n > SASL_FIELD_MAX) {
		sasl_wipe_free(out, len + 1);
		return NULL;
	}
	out[n] = '\0';
	return out;
}

/* The value of attribute `name` ("n", "r", "c") at *p, which then points
 * at the ',' or the NUL that ends the value.  NULL if it is not there. */
static const char *sasl_scram_attr(const char **p, char name, size_t *len)
{
	const char *s = *p;
	if (s[0] != name || s[1] != '=')
		return NULL;
	const char *v = s + 2;
	*len = strcspn(v, ",");
	*p = v + *len;
	return v;
}

/* Step over the ',' between two attributes. */
static bool sasl_scram_comma(const char **p)
{
	if (**p != ',')
		return false;
	(*p)++;
	return true;
}

/* printable = %x21-2B / %x2D-7E (RFC 5802 §7). */
static bool sasl_scram_printable(const char *s, size_t len)
{
	if (len == 0)
		return false;
	for (size_t i = 0; i < len; i++)
		if (s[i] < 0x21 || s[i] > 0x7e || s[i] == ',')
			return false;
	return true;
}

/* What may follow the nonce: nothing, or "," extensions, where
 * extensions = attr-val *("," attr-val) and attr-val = ALPHA "=" value.
 * The shape is checked, the content ignored (RFC 5802 §7: unrecognised
 * attributes MUST be ignored). */
static bool sasl_scram_rest_ok(const char *p)
{
	if (*p == '\0')
		return true;
	if (!sasl_scram_comma(&p))
		return false;
	for (;;) {
		bool alpha = (p[0] >= 'a' && p[0] <= 'z') || (p[0] >= 'A' && p[0] <= 'Z');
		if (!alpha || p[1] != '=' || p[2] == '\0' || p[2] == ',')
			return false;
		p += strcspn(p, ",");
		if (!sasl_scram_comma(&p))
			return true;
	}
}

/* The gs2-header (RFC 5802 §7): "n" or "y" (we offer no -PLUS, so a
 * client that could bind but believes we cannot is fine, §6), an
 * optional "a=" authzid, ",".  "p=" asks for channel binding that we
 * do not offer.  *authzid is NULL or a decoded name the caller frees. */
static enum sasl_status sasl_scram_gs2(const char **p, char **authzid)
{
	const char *s = *p;
	*authzid = NULL;
	if ((s[0] != 'n' && s[0] != 'y') || s[1] != ',')
		return SASL_BAD_MESSAGE;
	s += 2;
	size_t len;
	const char *z = sasl_scram_attr(&s, 'a', &len);
	if (z && !(*authzid = sasl_scram_name(z, len)))
		return SASL_BAD_MESSAGE;
	if (!sasl_scram_comma(&s)) {
		sasl_wipe_str(*authzid);
		*authzid = NULL;
		return SASL_BAD_MESSAGE;
	}
	*p = s;
	return SASL_OK;
}

/* Salt, iterations and keys of the user; for an unknown user those of its
 * disguise (sasl_disguise) and the dummy's keys, so that server-first looks
 * the same whether the user exists or not; the proof check then fails. */
static bool sasl_scram_keys(struct sasl_session *s, uint8_t salt[USERDB_SALT_MAX],
			    size_t *salt_len, unsigned *iterations)
{
	const struct user_record *rec = userdb_find(s->db, s->user);
	if (rec) {
		s->known = true;
		memcpy(salt, rec->salt, rec->salt_len);
		*salt_len = rec->salt_len;
		*iterations = rec->iterations;
		memcpy(s->stored_key, rec->stored_key, USERDB_KEY_LEN);
		memcpy(s->server_key, rec->server_key, USERDB_KEY_LEN);
		return true;
	}
	struct sasl_disguise mask;
	if (!sasl_disguise(s->db, s->user, strlen(s->user), &mask))
		return false;
	memcpy(salt, mask.salt, mask.salt_len);
	*salt_len = mask.salt_len;
	*iterations = mask.iterations;
	OPENSSL_cleanse(&mask, sizeof mask);
	s->known = false;
	memcpy(s->stored_key, sasl_secret.dummy.stored_key, USERDB_KEY_LEN);
	memcpy(s->server_key, sasl_secret.dummy.server_key, USERDB_KEY_LEN);
	return true;
}

/* The server's half of the nonce: 24 CSPRNG bytes in base64, which is
 * printable and has no ','.  NULL if the CSPRNG fails. */
static char *sasl_scram_server_nonce(void)
{
	if (sasl_fixed_nonce)
		return xstrdup(sasl_fixed_nonce);
	uint8_t rnd[SASL_NONCE_BYTES];
	if (RAND_bytes(rnd, sizeof rnd) != 1)
		return NULL;
	return sasl_b64_encode(rnd, sizeof rnd);
}

/* server-first-message = nonce "," salt "," iteration-count (§7). */
static enum sasl_status sasl_scram_server_first(struct sasl_session *s, const char *cnonce,
						size_t cnonce_len, char **challenge)
{
	uint8_t salt[USERDB_SALT_MAX];
	size_t salt_len = 0;
	unsigned iterations = 0;
	char *snonce = NULL;
	if (!sasl_scram_keys(s, salt, &salt_len, &iterations) ||
	    !(snonce = sasl_scram_server_nonce()))
		return SASL_FAIL;
	char *salt64 = sasl_b64_encode(salt, salt_len);
	s->nonce = xasprintf("%.*s%s", (int)cnonce_len, cnonce, snonce);
	s->server_first = xasprintf("r=%s,s=%s,i=%u", s->nonce, salt64, iterations);
	free(snonce);
	free(salt64);
	*challenge = sasl_b64_encode(s->server_first, strlen(s->server_first));
	s->state = SASL_STATE_SCRAM_FINAL;
	return SASL_CONTINUE;
}

/* client-first-message = gs2-header client-first-message-bare, and
 * client-first-message-bare = [reserved-mext ","] username "," nonce
 * ["," extensions] (RFC 5802 §7).  "m=" (reserved-mext) is refused, as
 * §7 requires of a server that does not know the extension. */
static enum sasl_status sasl_scram_first(struct sasl_session *s, const char *msg, size_t len,
					 char **challenge)
{
	if (strlen(msg) != len)
		return SASL_BAD_MESSAGE; /* NUL is in no production */
	const char *p = msg;
	char *authzid;
	enum sasl_status st = sasl_scram_gs2(&p, &authzid);
	if (st != SASL_OK)
		return st;
	const char *bare = p, *cnonce = NULL;
	size_t ulen = 0, nlen = 0;
	const char *uname = sasl_scram_attr(&p, 'n', &ulen);
	char *user = uname ? sasl_scram_name(uname, ulen) : NULL;
	if (user && sasl_scram_comma(&p))
		cnonce = sasl_scram_attr(&p, 'r', &nlen);
	if (!cnonce || !sasl_scram_printable(cnonce, nlen) || !sasl_scram_rest_ok(p)) {
		sasl_wipe_str(user);
		sasl_wipe_str(authzid);
		return SASL_BAD_MESSAGE;
	}
	sasl_wipe_str(s->user);
	s->user = user;
	bool other = authzid && !str_ieq(authzid, user);
	sasl_wipe_str(authzid);
	if (other)
		return SASL_BAD_AUTHZID;
	s->gs2_header = xstrndup(msg, (size_t)(bare - msg));
	s->client_first_bare = xstrdup(bare);
	return sasl_scram_server_first(s, cnonce, nlen, challenge);
}

/* The proof is the last attribute: split "without-proof,p=PROOF". */
static const char *sasl_scram_find_proof(const char *msg)
{
	const char *last = NULL;
	for (const char *p = strstr(msg, ",p="); p; p = strstr(p + 1, ",p="))
		last = p;
	return last;
}

/* c= must be the base64 of the gs2-header exactly as the client sent it
 * (no channel-binding data: we offer no -PLUS, RFC 5802 §6). */
static enum sasl_status sasl_scram_check_cbind(const struct sasl_session *s, const char *c,
					       size_t len)
{
	char *text = xstrndup(c, len);
	uint8_t *bind;
	size_t blen;
	enum sasl_status st = sasl_b64_decode(text, &bind, &blen);
	free(text);
	if (st != SASL_OK)
		return SASL_BAD_MESSAGE;
	bool same = blen == strlen(s->gs2_header) && memcmp(bind, s->gs2_header, blen) == 0;
	sasl_wipe_free(bind, blen + 1);
	return same ? SASL_OK : SASL_FAIL;
}

/* ClientSignature = HMAC(StoredKey, AuthMessage); ClientKey = proof XOR
 * ClientSignature; the proof is good when H(ClientKey) = StoredKey,
 * compared in constant time (RFC 5802 §3).  Then the server's answer is
 * "v=" base64(HMAC(ServerKey, AuthMessage)). */
static enum sasl_status sasl_scram_verify(struct sasl_session *s, const char *auth_msg,
					  const uint8_t proof[USERDB_KEY_LEN], char **challenge)
{
	uint8_t sig[USERDB_KEY_LEN], key[USERDB_KEY_LEN], hkey[USERDB_KEY_LEN];
	enum sasl_status st = SASL_FAIL;
	if (!sasl_hmac(s->stored_key, USERDB_KEY_LEN, auth_msg, strlen(auth_msg), sig))
		goto out;
	for (size_t i = 0; i < USERDB_KEY_LEN; i++)
		key[i] = proof[i] ^ sig[i];
	if (!SHA256(key, sizeof key, hkey))
		goto out;
	bool match = CRYPTO_memcmp(hkey, s->stored_key, USERDB_KEY_LEN) == 0;
	if (!match || !s->known ||
	    !sasl_hmac(s->server_key, USERDB_KEY_LEN, auth_msg, strlen(auth_msg), sig))
		goto out;
	char *sig64 = sasl_b64_encode(sig, sizeof sig);
	char *final = xasprintf("v=%s", sig64);
	*challenge = sasl_b64_encode(final, strlen(final));
	free(final);
	free(sig64);
	const struct user_record *rec = userdb_find(s->db, s->user);
	if (rec)
		sasl_set_user(s, rec->address, strlen(rec->address));
	st = SASL_OK;
out:
	OPENSSL_cleanse(sig, sizeof sig);
	OPENSSL_cleanse(key, sizeof key);
	OPENSSL_cleanse(hkey, sizeof hkey);
	return st;
}

/* client-final-message = channel-binding "," nonce ["," extensions] ","
 * proof (RFC 5802 §7); AuthMessage = client-first-message-bare ","
 * server-first-message "," client-final-message-without-proof (§3). */
static enum sasl_status sasl_scram_final(struct sasl_session *s, const char *msg, size_t len,
					 char **challenge)
{
	const char *pp = strlen(msg) == len ? sasl_scram_find_proof(msg) : NULL;
	if (!pp || strchr(pp + 3, ','))
		return SASL_BAD_MESSAGE;
	uint8_t *proof;
	size_t plen;
	if (sasl_b64_decode(pp + 3, &proof, &plen) != SASL_OK)
		return SASL_BAD_MESSAGE;
	char *without = xstrndup(msg, (size_t)(pp - msg));
	const char *p = without, *c, *r = NULL;
	size_t clen = 0, rlen = 0;
	enum sasl_status st = SASL_BAD_MESSAGE;
	if ((c = sasl_scram_attr(&p, 'c', &clen)) && sasl_scram_comma(&p))
		r = sasl_scram_attr(&p, 'r', &rlen);
	if (!r || !sasl_scram_rest_ok(p) || plen != USERDB_KEY_LEN)
		goto out;
	if ((st = sasl_scram_check_cbind(s, c, clen)) != SASL_OK)
		goto out;
	if (rlen != strlen(s->nonce) || memcmp(r, s->nonce, rlen) != 0) {
		st = SASL_FAIL;
		goto out;
	}
	char *auth_msg = xasprintf("%s,%s,%s", s->client_first_bare, s->server_first, without);
	st = sasl_scram_verify(s, auth_msg, proof, challenge);
	sasl_wipe_str(auth_msg);
out:
	sasl_wipe_str(without);
	sasl_wipe_free(proof, plen + 1);
	return st;
}

/* ---- the exchange ----------------------------------------------------- */

/* The first message, or an empty challenge when there was no initial
 * response (RFC 4422 §3.3; LOGIN asks for the user name at once). */
static enum sasl_status sasl_begin(struct sasl_session *s, char **challenge)
{
	switch (s->mech) {
	case MECH_PLAIN:
		s->state = SASL_STATE_PLAIN;
		*challenge = xstrdup("");
		return SASL_CONTINUE;
	case MECH_LOGIN:
		s->state = SASL_STATE_LOGIN_USER;
		*challenge = sasl_b64_encode("Username:", strlen("Username:"));
		return SASL_CONTINUE;
	case MECH_SCRAM_SHA_256:
		s->state = SASL_STATE_SCRAM_FIRST;
		*challenge = xstrdup("");
		return SASL_CONTINUE;
	}
	return SASL_BAD_MESSAGE;
}

/* An initial response goes where the first response would go. */
static enum sasl_state sasl_first_state(unsigned mech)
{
	switch (mech) {
	case MECH_PLAIN:
		return SASL_STATE_PLAIN;
	case MECH_LOGIN:
		return SASL_STATE_LOGIN_USER;
	default:
		return SASL_STATE_SCRAM_FIRST;
	}
}

static enum sasl_status sasl_dispatch(struct sasl_session *s, const uint8_t *msg, size_t len,
				      char **challenge)
{
	switch (s->state) {
	case SASL_STATE_PLAIN:
		return sasl_plain(s, msg, len);
	case SASL_STATE_LOGIN_USER:
		return sasl_login_user(s, msg, len, challenge);
	case SASL_STATE_LOGIN_PASS:
		return sasl_login_pass(s, msg, len);
	case SASL_STATE_SCRAM_FIRST:
		return sasl_scram_first(s, (const char *)msg, len, challenge);
	case SASL_STATE_SCRAM_FINAL:
		return sasl_scram_final(s, (const char *)msg, len, challenge);
	case SASL_STATE_START:
	case SASL_STATE_DONE:
		break;
	}
	return SASL_BAD_MESSAGE;
}

static enum sasl_status sasl_step_once(struct sasl_session *s, const char *in, char **challenge)
{
	if (s->state == SASL_STATE_DONE)
		return SASL_BAD_MESSAGE;
	if (!in)
		return s->state == SASL_STATE_START ? sasl_begin(s, challenge) : SASL_BAD_MESSAGE;
	if (strcmp(in, "*") == 0)
		return SASL_CANCELLED; /* RFC 4422 §3.5, RFC 4954 §4 */
	if (s->state == SASL_STATE_START)
		s->state = sasl_first_state(s->mech);
	uint8_t *msg;
	size_t len;
	enum sasl_status st = sasl_b64_decode(in, &msg, &len);
	if (st != SASL_OK)
		return st;
	st = sasl_dispatch(s, msg, len, challenge);
	sasl_wipe_free(msg, len + 1);
	return st;
}

enum sasl_status sasl_step(struct sasl_session *s, const char *in, char **challenge)
{
	*challenge = NULL;
	enum sasl_status st = sasl_step_once(s, in, challenge);
	if (st != SASL_CONTINUE)
		s->state = SASL_STATE_DONE;
	if (st != SASL_CONTINUE && st != SASL_OK && *challenge) {
		free(*challenge);
		*challenge = NULL;
	}
	return st;
}

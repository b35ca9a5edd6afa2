/* dkim_sign: DKIM-Signature fields (RFC 6376 §3.5, §5; RFC 8463 for
 * ed25519-sha256) with OpenSSL 3 EVP; relaxed/relaxed (§3.4.2, §3.4.4). */
#include "mailauth/dkim_sign.h"

#include <string.h>

#include <openssl/evp.h>
#include <openssl/rsa.h>

#include "lib/strbuf.h"
#include "lib/util.h"
#include "mailauth/dkim_canon.h"
#include "mailauth/dkim_header.h"
#include "mailauth/dkim_key.h"
#include "mailauth/dkim_tags.h"

/* The fields signed when present (each as many times as it appears),
 * besides From: what a reader sees and what MIME needs to show it. */
static const char *const signed_fields[] = {
	"reply-to", "sender", "to", "cc", "subject", "date", "message-id", "in-reply-to",
	"references", "mime-version", "content-type", "content-transfer-encoding",
	"content-disposition", "list-id", "list-unsubscribe", "list-unsubscribe-post",
};

enum { SIG_BYTES_MAX = 1024, B_LINE = 72 };

struct dkim_sign {
	char *header;           /* the header section, empty line included */
	size_t hlen, hcap;
	size_t scan;            /* where to look on for the empty line */
	bool in_body;
	bool too_big;
	EVP_MD_CTX *body_md;
	struct dkim_body body;
	struct dkim_header fields;
	bool parsed;
	char *bh;               /* the body hash in base64, once made */
};

static void sink_md(void *arg, const void *data, size_t len)
{
	/* SHA-256 updates on a valid context do not fail */
	(void)EVP_DigestUpdate(arg, data, len);
}

struct dkim_sign *dkim_sign_new(void)
{
	struct dkim_sign *s = xcalloc(1, sizeof *s);
	s->body_md = EVP_MD_CTX_new();
	if (!s->body_md || EVP_DigestInit_ex(s->body_md, EVP_sha256(), NULL) != 1)
		fatal("dkim: cannot set up SHA-256");
	dkim_body_begin(&s->body, DKIM_CANON_RELAXED, UINT64_MAX, sink_md, s->body_md);
	return s;
}

void dkim_sign_free(struct dkim_sign *s)
{
	if (!s)
		return;
	free(s->header);
	free(s->bh);
	dkim_header_free(&s->fields);
	EVP_MD_CTX_free(s->body_md);
	free(s);
}

/* The end of the header section in s->header (the empty line), or 0. */
static size_t header_end(struct dkim_sign *s)
{
	const char *h = s->header;
	if (s->hlen >= 2 && s->scan == 0 && h[0] == '\r' && h[1] == '\n')
		return 2;
	if (s->hlen >= 1 && s->scan == 0 && h[0] == '\n')
		return 1;
	for (size_t i = s->scan; i < s->hlen; i++) {
		if (h[i] != '\n')
			continue;
		if (i + 1 < s->hlen && h[i + 1] == '\n')
			return i + 2;
		if (i + 2 < s->hlen && h[i + 1] == '\r' && h[i + 2] == '\n')
			return i + 3;
	}
	s->scan = s->hlen > 2 ? s->hlen - 2 : 0;
	return 0;
}

void dkim_sign_feed(struct dkim_sign *s, const void *data, size_t len)
{
	if (len == 0)
		return;
	if (s->in_body) {
		dkim_body_feed(&s->body, data, len);
		return;
	}
	if (s->too_big)
		return;
	size_t take = len;
	if (s->hlen + take > DKIM_HEADER_MAX + 3)
		take = DKIM_HEADER_MAX + 3 - s->hlen;
	if (s->hlen + take > s->hcap) {
		s->hcap = s->hlen + take > 2 * s->hcap ? s->hlen + take : 2 * s->hcap;
		s->header = xrealloc(s->header, s->hcap);
	}
	memcpy(s->header + s->hlen, data, take);
	s->hlen += take;
	size_t end = header_end(s);
	if (!end) {
		s->too_big = take < len || s->hlen > DKIM_HEADER_MAX;
		return;
	}
	/* what came after the empty line is body */
	s->in_body = true;
	size_t body_in_header = s->hlen - end;
	s->hlen = end;
	dkim_body_feed(&s->body, s->header + end, body_in_header);
	dkim_body_feed(&s->body, (const char *)data + take, len - take);
}

static int sign_parse(struct dkim_sign *s)
{
	if (s->parsed)
		return 0;
	/* a first line that continues nothing would continue our field */
	if (s->too_big || (s->hlen > 0 && (s->header[0] == ' ' || s->header[0] == '\t')) ||
	    dkim_header_parse(s->header ? s->header : "", s->hlen, &s->fields) < 0)
		return -1;
	s->parsed = true;
	return 0;
}

bool dkim_sign_header_done(const struct dkim_sign *s)
{
	return s->in_body;
}

int dkim_sign_from_domain(struct dkim_sign *s, char *out, size_t outsz)
{
	if (sign_parse(s) < 0)
		return -1;
	return dkim_from_domain(&s->fields, out, outsz);
}

static size_t count_fields(const struct dkim_header *h, const char *name)
{
	size_t n = 0;
	for (size_t k = 0; k < h->n; k++)
		n += dkim_field_is(&h->fields[k], name, strlen(name));
	return n;
}

/* h= : From once more than it appears, then the others present. */
bool dkim_sign_h_list(const struct dkim_header *h, struct strbuf *sb)
{
	bool ok = strbuf_adds(sb, "from");
	for (size_t k = 0; k < count_fields(h, "from"); k++)
		ok = strbuf_adds(sb, ":from") && ok;
	for (size_t i = 0; i < ARRAY_LEN(signed_fields); i++)
		for (size_t k = 0; k < count_fields(h, signed_fields[i]); k++)
			ok = strbuf_addf(sb, ":%s", signed_fields[i]) && ok;
	return ok;
}

/* The signed fields, canonicalised, into md (§5.4.2: from the bottom). */
void dkim_sign_hash_fields(const struct dkim_header *h, const char *hlist, EVP_MD_CTX *md)
{
	dkim_canon_h_list(DKIM_CANON_RELAXED, h, hlist, strlen(hlist), sink_md, md);
}

static int sign_digest(const struct dkim_privkey *k, const unsigned char *digest, size_t dlen,
		       unsigned char *sig, size_t *siglen)
{
	int ok = 0;
	if (k->type == DKIM_KEY_ED25519) {
		/* RFC 8463 §3: PureEdDSA over the SHA-256 hash */
		EVP_MD_CTX *md = EVP_MD_CTX_new();
		ok = md && EVP_DigestSignInit(md, NULL, NULL, NULL, k->pkey) == 1 &&
		     EVP_DigestSign(md, sig, siglen, digest, dlen) == 1;
		EVP_MD_CTX_free(md);
	} else {
		/* RSASSA-PKCS1-v1_5 with SHA-256 (§3.3.1) of the hash made */
		EVP_PKEY_CTX *c = EVP_PKEY_CTX_new(k->pkey, NULL);
		ok = c && EVP_PKEY_sign_init(c) == 1 &&
		     EVP_PKEY_CTX_set_rsa_padding(c, RSA_PKCS1_PADDING) == 1 &&
		     EVP_PKEY_CTX_set_signature_md(c, EVP_sha256()) == 1 &&
		     EVP_PKEY_sign(c, sig, siglen, digest, dlen) == 1;
		EVP_PKEY_CTX_free(c);
	}
	return ok ? 0 : -1;
}

/* b= folded into lines of B_LINE characters. */
static bool add_folded_b(struct strbuf *sb, const char *b64)
{
	size_t n = strlen(b64);
	bool ok = true;
	for (size_t i = 0; i < n; i += B_LINE) {
		if (i)
			ok = strbuf_adds(sb, "\r\n\t ") && ok;
		ok = strbuf_add(sb, b64 + i, n - i < B_LINE ? n - i : B_LINE) && ok;
	}
	return ok;
}

int dkim_sign_field(const struct dkim_privkey *k, const char *head, size_t head_len,
		    EVP_MD_CTX *fields_md, struct strbuf *out)
{
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	unsigned char digest[EVP_MAX_MD_SIZE];
	unsigned dlen = 0;
	int ok = md && EVP_MD_CTX_copy_ex(md, fields_md) == 1;
	if (ok) {
		/* §3.7: the signature's own field last, b= empty, no CRLF */
		dkim_canon_header(DKIM_CANON_RELAXED, head, head_len, false, sink_md, md);
		ok = EVP_DigestFinal_ex(md, digest, &dlen) == 1;
	}
	EVP_MD_CTX_free(md);
	unsigned char sig[SIG_BYTES_MAX];
	size_t siglen = sizeof sig;
	if (!ok || sign_digest(k, digest, dlen, sig, &siglen) < 0)
		return -1;
	char *b64 = dkim_base64_encode(sig, siglen);
	char field[DKIM_SIGNATURE_MAX];
	struct strbuf sb;
	strbuf_init(&sb, field, sizeof field);
	bool fits = strbuf_add(&sb, head, head_len) && add_folded_b(&sb, b64) &&
		    strbuf_adds(&sb, "\r\n") && strbuf_add(out, strbuf_str(&sb), strbuf_len(&sb));
	free(b64);
	return fits ? 0 : -1;
}

/* One DKIM-Signature field for key k, appended to out. */
static int sign_one(const struct dkim_privkey *k, const char *hlist,
		    const char *bh, EVP_MD_CTX *fields_md, time_t now, struct strbuf *out)
{
	char field[DKIM_SIGNATURE_MAX];
	struct strbuf sb;
	strbuf_init(&sb, field, sizeof field);
	(void)strbuf_addf(&sb,
			  "DKIM-Signature: v=1; a=%s-sha256; c=relaxed/relaxed; d=%s;\r\n"
			  "\ts=%s; t=%lld;\r\n\th=%s;\r\n\tbh=%s;\r\n\tb=",
			  dkim_key_type_name(k->type), k->domain, k->selector, (long long)now, hlist,
			  bh);
	if (!strbuf_ok(&sb))
		return -1;
	return dkim_sign_field(k, strbuf_str(&sb), strbuf_len(&sb), fields_md, out);
}

const char *dkim_sign_body_hash(struct dkim_sign *s)
{
	if (s->bh)
		return s->bh;
	s->in_body = true; /* no empty line: all header, empty body */
	dkim_body_end(&s->body);
	unsigned char bh[EVP_MAX_MD_SIZE];
	unsigned n = 0;
	if (EVP_DigestFinal_ex(s->body_md, bh, &n) != 1)
		return NULL;
	s->bh = dkim_base64_encode(bh, n);
	return s->bh;
}

const struct dkim_header *dkim_sign_header(struct dkim_sign *s)
{
	return sign_parse(s) < 0 ? NULL : &s->fields;
}

char *dkim_sign_finish(struct dkim_sign *s, const struct dkim_privkey *keys, size_t nkeys,
		       time_t now, char *err, size_t errsz)
{
	char from[DKIM_DOMAIN_MAX + 1];
	if (sign_parse(s) < 0) {
		errfmt(err, errsz, "header section too large or malformed");
		return NULL;
	}
	if (dkim_from_domain(&s->fields, from, sizeof from) < 0) {
		errfmt(err, errsz, "no single From address with a domain");
		return NULL;
	}
	size_t nmine = 0;
	for (size_t i = 0; i < nkeys; i++)
		nmine += strcmp(keys[i].domain, from) == 0;
	if (nmine == 0) {
		errfmt(err, errsz, "no key for the From domain %s", from);
		return NULL;
	}
	if (!s->in_body) /* no empty line: all header, empty body */
		s->in_body = true;
	char hlist[1024];
	struct strbuf hsb;
	strbuf_init(&hsb, hlist, sizeof hlist);
	const char *bh = dkim_sign_body_hash(s);
	EVP_MD_CTX *fields_md = EVP_MD_CTX_new();
	if (!dkim_sign_h_list(&s->fields, &hsb) || !bh || !fields_md ||
	    EVP_DigestInit_ex(fields_md, EVP_sha256(), NULL) != 1) {
		errfmt(err, errsz, "cannot prepare the signature");
		EVP_MD_CTX_free(fields_md);
		return NULL;
	}
	dkim_sign_hash_fields(&s->fields, hlist, fields_md);
	size_t cap = nmine * DKIM_SIGNATURE_MAX;
	char *out = xmalloc(cap);
	struct strbuf sb;
	strbuf_init(&sb, out, cap);
	int r = 0;
	for (size_t i = 0; i < nkeys && r == 0; i++)
		if (strcmp(keys[i].domain, from) == 0)
			r = sign_one(&keys[i], hlist, bh, fields_md, now, &sb);
	EVP_MD_CTX_free(fields_md);
	if (r < 0) {
		errfmt(err, errsz, "signing failed");
		free(out);
		return NULL;
	}
	return out;
}

/* arc_seal: a new ARC set (RFC 8617 §5.1.1): the AAR copies our
 * Authentication-Results, the AMS is a DKIM signature by another name
 * (§4.1.2), the AS signs every set with relaxed canonicalisation. */
#include "mailauth/arc_seal.h"

#include <string.h>

#include <openssl/evp.h>

#include "lib/strbuf.h"
#include "lib/util.h"
#include "mailauth/authres.h"
#include "mailauth/dkim_canon.h"
#include "mailauth/dkim_header.h"
#include "mailauth/dkim_key.h"
#include "mailauth/dkim_sign.h"

enum { FIELD_MAX = 4096, HLIST_MAX = 1024 };

static void sink_md(void *arg, const void *data, size_t len)
{
	(void)EVP_DigestUpdate(arg, data, len); /* SHA-256 updates do not fail */
}

/* The value of a field: after the colon and the white space after it. */
static const char *field_value(const struct dkim_field *f, size_t *len)
{
	const char *colon = memchr(f->start, ':', f->len);
	size_t i = colon ? (size_t)(colon - f->start) + 1 : f->len;
	while (i < f->len && (f->start[i] == ' ' || f->start[i] == '\t'))
		i++;
	*len = f->len - i;
	return f->start + i;
}

/* Our Authentication-Results field: the topmost naming authserv_id. */
static const struct dkim_field *our_authres(const struct dkim_header *h, const char *authserv_id)
{
	for (size_t k = 0; k < h->n; k++) {
		const struct dkim_field *f = &h->fields[k];
		if (!dkim_field_is(f, "authentication-results", 22))
			continue;
		size_t n;
		const char *v = field_value(f, &n);
		char id[DKIM_DOMAIN_MAX + 1];
		if (authres_authserv_id(v, n, id, sizeof id) && str_ieq(id, authserv_id))
			return f;
	}
	return NULL;
}

int arc_our_result(const struct dkim_header *h, const char *authserv_id, enum arc_status *out)
{
	const struct dkim_field *f = our_authres(h, authserv_id);
	char r[16];
	size_t n = 0;
	const char *v = f ? field_value(f, &n) : NULL;
	if (!v || !authres_method_result(v, n, "arc", r, sizeof r))
		return -1;
	if (strcmp(r, "pass") == 0)
		*out = ARC_PASS;
	else if (strcmp(r, "none") == 0)
		*out = ARC_NONE;
	else
		*out = ARC_FAIL; /* fail, or a result RFC 8617 does not know */
	return 0;
}

/* cv= of the new set (§5.1.1 step 2), or -1 with err set.  A chain whose
 * structure is broken (or whose latest seal says cv=fail) gets no set:
 * the seal would have to sign sets that are not there. */
static int seal_cv(const struct dkim_header *h, const struct arc_chain *c, enum arc_status st,
		   const char *why, const char *authserv_id, enum arc_cv *cv, char *err,
		   size_t errsz)
{
	if (st == ARC_NONE) {
		*cv = ARC_CV_NONE;
		return 0;
	}
	if (st == ARC_FAIL) {
		errfmt(err, errsz, "the chain is broken (%s): not sealed", why);
		return -1;
	}
	if (c->n >= ARC_INSTANCE_MAX) {
		errfmt(err, errsz, "the chain has %d sets already: not sealed", ARC_INSTANCE_MAX);
		return -1;
	}
	enum arc_status ours;
	if (arc_our_result(h, authserv_id, &ours) < 0 || ours == ARC_NONE) {
		errfmt(err, errsz, "the chain was not validated here (no arc= result): not sealed");
		return -1;
	}
	*cv = ours == ARC_PASS ? ARC_CV_PASS : ARC_CV_FAIL;
	return 0;
}

/* Printable ASCII and folding white space only: what posthorn writes
 * into its own field, and what may be copied into the set. */
static bool copyable(const char *v, size_t n)
{
	for (size_t k = 0; k < n; k++) {
		unsigned char c = (unsigned char)v[k];
		if ((c < 0x20 || c > 0x7e) && c != '\t' && c != '\r' && c != '\n')
			return false;
	}
	return true;
}

/* ARC-Authentication-Results: i=N; our results (§4.1.1). */
static bool seal_aar(const struct dkim_header *h, const char *authserv_id, unsigned i,
		     struct strbuf *sb)
{
	const struct dkim_field *f = our_authres(h, authserv_id);
	size_t n = 0;
	const char *v = f ? field_value(f, &n) : NULL;
	if (v && !copyable(v, n))
		return false;
	(void)strbuf_addf(sb, "ARC-Authentication-Results: i=%u; ", i);
	if (!v)
		(void)strbuf_addf(sb, "%s; none", authserv_id);
	else
		(void)strbuf_add(sb, v, n);
	return strbuf_ok(sb);
}

/* ARC-Message-Signature over what posthorn's DKIM signatures cover. */
static int seal_ams(struct dkim_sign *s, const struct dkim_header *h, const struct dkim_privkey *k,
		    unsigned i, time_t now, struct strbuf *out)
{
	char hlist[HLIST_MAX], head[FIELD_MAX];
	struct strbuf hsb, sb;
	strbuf_init(&hsb, hlist, sizeof hlist);
	strbuf_init(&sb, head, sizeof head);
	const char *bh = dkim_sign_body_hash(s);
	if (!dkim_sign_h_list(h, &hsb) || !bh)
		return -1;
	(void)strbuf_addf(&sb,
			  "ARC-Message-Signature: i=%u; a=%s-sha256; c=relaxed/relaxed;\r\n"
			  "\td=%s; s=%s; t=%lld;\r\n\th=%s;\r\n\tbh=%s;\r\n\tb=",
			  i, dkim_key_type_name(k->type), k->domain, k->selector, (long long)now,
			  hlist, bh);
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	int r = -1;
	if (strbuf_ok(&sb) && md && EVP_DigestInit_ex(md, EVP_sha256(), NULL) == 1) {
		dkim_sign_hash_fields(h, hlist, md);
		r = dkim_sign_field(k, strbuf_str(&sb), strbuf_len(&sb), md, out);
	}
	EVP_MD_CTX_free(md);
	return r;
}

/* Bytes of fields[] (each ending CRLF) cut into one field at a time. */
static void hash_fields_text(const char *text, size_t len, EVP_MD_CTX *md)
{
	struct dkim_header h;
	if (dkim_header_parse(text, len, &h) < 0)
		fatal("arc: cannot cut our own fields");
	for (size_t k = 0; k < h.n; k++)
		dkim_canon_header(DKIM_CANON_RELAXED, h.fields[k].start, h.fields[k].len, true,
				  sink_md, md);
	dkim_header_free(&h);
}

/* ARC-Seal over the sets before it and the new AAR and AMS (§5.1.1). */
static int seal_as(const struct arc_chain *c, const char *new_fields, size_t new_len,
		   const struct dkim_privkey *k, unsigned i, enum arc_cv cv, time_t now,
		   struct strbuf *out)
{
	char head[FIELD_MAX];
	struct strbuf sb;
	strbuf_init(&sb, head, sizeof head);
	(void)strbuf_addf(&sb, "ARC-Seal: i=%u; a=%s-sha256; t=%lld; cv=%s;\r\n\td=%s; s=%s;\r\n\tb=",
			  i, dkim_key_type_name(k->type), (long long)now, arc_cv_name(cv), k->domain,
			  k->selector);
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	int r = -1;
	if (strbuf_ok(&sb) && md && EVP_DigestInit_ex(md, EVP_sha256(), NULL) == 1) {
		for (unsigned n = 1; n < i; n++) {
			const struct arc_set *set = &c->set[n];
			const struct dkim_field *f[] = {set->aar, set->ams, set->as};
			for (size_t m = 0; m < ARRAY_LEN(f); m++)
				dkim_canon_header(DKIM_CANON_RELAXED, f[m]->start, f[m]->len, true,
						  sink_md, md);
		}
		hash_fields_text(new_fields, new_len, md);
		r = dkim_sign_field(k, strbuf_str(&sb), strbuf_len(&sb), md, out);
	}
	EVP_MD_CTX_free(md);
	return r;
}

char *arc_seal(struct dkim_sign *s, const struct dkim_privkey *key, const char *authserv_id,
	       time_t now, char *err, size_t errsz)
{
	const struct dkim_header *h = dkim_sign_header(s);
	if (!h) {
		errfmt(err, errsz, "header section too large or malformed");
		return NULL;
	}
	struct arc_chain *c = xmalloc(sizeof *c);
	char why[ARC_REASON_MAX];
	enum arc_status st = arc_chain_parse(h, c, why, sizeof why);
	enum arc_cv cv = ARC_CV_NONE;
	char *out = NULL;
	if (seal_cv(h, c, st, why, authserv_id, &cv, err, errsz) < 0)
		goto done;
	unsigned i = st == ARC_NONE ? 1 : c->n + 1;
	/* AAR and AMS first (the seal signs them), then the AS on top */
	char *aar_ams = xmalloc(2 * FIELD_MAX);
	struct strbuf mid;
	strbuf_init(&mid, aar_ams, 2 * FIELD_MAX);
	if (!seal_aar(h, authserv_id, i, &mid) || !strbuf_adds(&mid, "\r\n") ||
	    seal_ams(s, h, key, i, now, &mid) < 0) {
		errfmt(err, errsz, "cannot make the ARC-Authentication-Results (our field too "
				   "long or not plain ASCII) or the ARC-Message-Signature");
		free(aar_ams);
		goto done;
	}
	out = xmalloc(ARC_SEAL_MAX);
	struct strbuf sb;
	strbuf_init(&sb, out, ARC_SEAL_MAX);
	if (seal_as(c, strbuf_str(&mid), strbuf_len(&mid), key, i, cv, now, &sb) < 0 ||
	    !strbuf_add(&sb, strbuf_str(&mid), strbuf_len(&mid))) {
		errfmt(err, errsz, "cannot make the ARC-Seal");
		free(out);
		out = NULL;
	}
	free(aar_ams);
done:
	free(c);
	return out;
}

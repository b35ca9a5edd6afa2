/* arc: ARC chain validation (RFC 8617 §5.2): the sets parsed (§4.1,
 * §4.2.1), the ARC-Message-Signatures hashed like DKIM signatures
 * (RFC 6376 §3.7) and the ARC-Seals over the sets before them (§5.1.1,
 * relaxed only), every signature's key looked up asynchronously. */
#include "mailauth/arc.h"

#include <stdarg.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "lib/offload.h"
#include "lib/util.h"
#include "mailauth/dkim_canon.h"
#include "mailauth/dkim_key.h"
#include "mailauth/dkim_tags.h"

enum {
	SIG_MAX = 1024,         /* bytes of b= (8192-bit RSA) */
	DIGEST_LEN = 32,        /* SHA-256 */
	QNAME_MAX = DKIM_DOMAIN_MAX + DKIM_SELECTOR_MAX + 16,
};

/* One signature of the chain (an AMS or an AS) and its key. */
struct arc_sig {
	struct arc_verify *v;
	bool hashed;            /* ready for its key */
	bool waiting;
	bool pass;
	dns_query_id q;
	enum dkim_key_type type;
	char domain[DKIM_DOMAIN_MAX + 1];
	char selector[DKIM_SELECTOR_MAX + 1];
	unsigned char b[SIG_MAX];
	size_t blen;
	unsigned char digest[DIGEST_LEN];
	char why[ARC_REASON_MAX];
};

/* The chain's state: made on a worker, judged on the loop. */
struct arc_state {
	enum arc_status structure; /* of arc_chain_parse */
	char why[ARC_REASON_MAX];
	unsigned n;
	struct arc_sig ams[ARC_INSTANCE_MAX + 1], as[ARC_INSTANCE_MAX + 1];
};

struct arc_verify {
	struct dkim_key_source src;
	arc_verify_done done;
	void *arg;
	struct arc_state *st;
	size_t waiting;
	bool starting;
	struct offload_job *job;
};

struct arc_work {
	char *msg;
	size_t len;
	struct arc_state *st;
};

const char *arc_status_name(enum arc_status st)
{
	static const char *const names[] = {"none", "pass", "fail"};
	return (unsigned)st < ARRAY_LEN(names) ? names[st] : "fail";
}

const char *arc_cv_name(enum arc_cv cv)
{
	static const char *const names[] = {"none", "pass", "fail"};
	return (unsigned)cv < ARRAY_LEN(names) ? names[cv] : "fail";
}

static void sink_md(void *arg, const void *data, size_t len)
{
	(void)EVP_DigestUpdate(arg, data, len); /* SHA-256 updates do not fail */
}

static EVP_MD_CTX *sha256_new(void)
{
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	if (!md || EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1)
		fatal("arc: cannot set up SHA-256");
	return md;
}

static void sha256_end(EVP_MD_CTX *md, unsigned char out[DIGEST_LEN])
{
	unsigned n = 0;
	if (EVP_DigestFinal_ex(md, out, &n) != 1 || n != DIGEST_LEN)
		fatal("arc: SHA-256 failed");
	EVP_MD_CTX_free(md);
}

/* ---- the sets -------------------------------------------------------------------- */

static bool is_cfws(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* The field's value: after the colon. */
static size_t value_offset(const struct dkim_field *f)
{
	const char *colon = memchr(f->start, ':', f->len);
	return colon ? (size_t)(colon - f->start) + 1 : f->len;
}

/* "1".."50" without leading zeros; 0 when it is not. */
static unsigned parse_instance(const char *s, size_t n)
{
	if (n == 0 || n > 2 || s[0] == '0')
		return 0;
	unsigned i = 0;
	for (size_t k = 0; k < n; k++) {
		if (s[k] < '0' || s[k] > '9')
			return 0;
		i = i * 10 + (unsigned)(s[k] - '0');
	}
	return i <= ARC_INSTANCE_MAX ? i : 0;
}

/* ARC-Authentication-Results: "i=" N ";" then the RFC 8601 payload
 * (§4.1.1). */
static unsigned aar_instance(const struct dkim_field *f)
{
	const char *v = f->start;
	size_t k = value_offset(f), n = f->len;
	while (k < n && is_cfws(v[k]))
		k++;
	if (k + 1 >= n || (v[k] != 'i' && v[k] != 'I'))
		return 0;
	for (k++; k < n && is_cfws(v[k]); k++)
		;
	if (k >= n || v[k] != '=')
		return 0;
	for (k++; k < n && is_cfws(v[k]); k++)
		;
	size_t d = k;
	while (k < n && v[k] >= '0' && v[k] <= '9')
		k++;
	unsigned i = parse_instance(v + d, k - d);
	while (k < n && is_cfws(v[k]))
		k++;
	return k < n && v[k] == ';' ? i : 0;
}

static int field_tags(const struct dkim_field *f, struct dkim_tags *t)
{
	size_t off = value_offset(f);
	char err[64];
	return dkim_tags_parse(f->start + off, f->len - off, t, err, sizeof err);
}

static unsigned tags_instance(const struct dkim_tags *t)
{
	const struct dkim_tag *i = dkim_tags_get(t, "i");
	return i ? parse_instance(i->value, i->value_len) : 0;
}

static int parse_cv(const struct dkim_tags *t, enum arc_cv *cv)
{
	const struct dkim_tag *c = dkim_tags_get(t, "cv");
	if (!c)
		return -1;
	if (dkim_tag_is(c, "none"))
		*cv = ARC_CV_NONE;
	else if (dkim_tag_is(c, "pass"))
		*cv = ARC_CV_PASS;
	else if (dkim_tag_is(c, "fail"))
		*cv = ARC_CV_FAIL;
	else
		return -1;
	return 0;
}

enum arc_kind { KIND_AAR, KIND_AMS, KIND_AS, KIND_OTHER };

static enum arc_kind field_kind(const struct dkim_field *f)
{
	if (dkim_field_is(f, "arc-authentication-results", 26))
		return KIND_AAR;
	if (dkim_field_is(f, "arc-message-signature", 21))
		return KIND_AMS;
	if (dkim_field_is(f, "arc-seal", 8))
		return KIND_AS;
	return KIND_OTHER;
}

static const char *const kind_names[] = {"ARC-Authentication-Results", "ARC-Message-Signature",
					 "ARC-Seal"};

/* One ARC field into its set.  0, or -1 with why set. */
static int chain_add(struct arc_chain *c, const struct dkim_field *f, enum arc_kind kind,
		     char *why, size_t whysz)
{
	struct dkim_tags t = {.n = 0};
	unsigned i = 0;
	if (kind == KIND_AAR)
		i = aar_instance(f);
	else if (field_tags(f, &t) == 0)
		i = tags_instance(&t);
	if (i == 0) {
		errfmt(why, whysz, "%s without a valid i= (1 to %d)", kind_names[kind],
		       ARC_INSTANCE_MAX);
		return -1;
	}
	struct arc_set *s = &c->set[i];
	const struct dkim_field **slot = kind == KIND_AAR ? &s->aar : kind == KIND_AMS ? &s->ams
										: &s->as;
	if (*slot) {
		errfmt(why, whysz, "two %s fields of i=%u", kind_names[kind], i);
		return -1;
	}
	if (kind == KIND_AS && parse_cv(&t, &s->cv) < 0) {
		errfmt(why, whysz, "ARC-Seal i=%u without a valid cv=", i);
		return -1;
	}
	*slot = f;
	if (i > c->n)
		c->n = i;
	return 0;
}

/* §5.2 step 3: the sets complete, cv=none at 1 and pass above. */
static enum arc_status chain_check(const struct arc_chain *c, char *why, size_t whysz)
{
	if (c->set[c->n].as && c->set[c->n].cv == ARC_CV_FAIL) {
		errfmt(why, whysz, "the chain failed before (cv=fail at i=%u)", c->n);
		return ARC_FAIL;
	}
	for (unsigned i = 1; i <= c->n; i++) {
		const struct arc_set *s = &c->set[i];
		if (!s->aar || !s->ams || !s->as) {
			errfmt(why, whysz, "the ARC set i=%u is incomplete", i);
			return ARC_FAIL;
		}
		enum arc_cv want = i == 1 ? ARC_CV_NONE : ARC_CV_PASS;
		if (s->cv != want) {
			errfmt(why, whysz, "ARC-Seal i=%u says cv=%s, not %s", i, arc_cv_name(s->cv),
			       arc_cv_name(want));
			return ARC_FAIL;
		}
	}
	return ARC_PASS;
}

enum arc_status arc_chain_parse(const struct dkim_header *h, struct arc_chain *c, char *why,
				size_t whysz)
{
	memset(c, 0, sizeof *c);
	errfmt(why, whysz, "%s", "");
	bool any = false;
	for (size_t k = 0; k < h->n; k++) {
		enum arc_kind kind = field_kind(&h->fields[k]);
		if (kind == KIND_OTHER)
			continue;
		any = true;
		if (chain_add(c, &h->fields[k], kind, why, whysz) < 0)
			return ARC_FAIL;
	}
	return any ? chain_check(c, why, whysz) : ARC_NONE;
}

/* ---- the hashes (on a worker) ------------------------------------------------------ */

static void sig_fail(struct arc_sig *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sig_fail(struct arc_sig *s, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	verrfmt(s->why, sizeof s->why, fmt, ap);
	va_end(ap);
	s->hashed = false;
}

static bool name_ok(const struct dkim_tag *t, size_t max)
{
	if (t->value_len == 0 || t->value_len > max)
		return false;
	for (size_t k = 0; k < t->value_len; k++) {
		char c = t->value[k];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '-' || c == '.' || c == '_'))
			return false;
	}
	return true;
}

/* a=, d=, s= and b= of an AMS or AS.  0, or -1 with the failure set. */
static int sig_tags(struct arc_sig *s, const struct dkim_tags *t)
{
	const struct dkim_tag *a = dkim_tags_get(t, "a"), *d = dkim_tags_get(t, "d"),
			      *sel = dkim_tags_get(t, "s"), *b = dkim_tags_get(t, "b");
	if (!a || !d || !sel || !b) {
		sig_fail(s, "a required tag is missing (a, b, d, s)");
		return -1;
	}
	if (dkim_tag_is(a, "rsa-sha256"))
		s->type = DKIM_KEY_RSA;
	else if (dkim_tag_is(a, "ed25519-sha256"))
		s->type = DKIM_KEY_ED25519;
	else {
		sig_fail(s, "unknown algorithm");
		return -1;
	}
	if (!name_ok(d, DKIM_DOMAIN_MAX) || !name_ok(sel, DKIM_SELECTOR_MAX)) {
		sig_fail(s, "bad d= or s=");
		return -1;
	}
	memcpy(s->domain, d->value, d->value_len);
	s->domain[d->value_len] = '\0';
	for (char *p = s->domain; *p; p++)
		*p = (*p >= 'A' && *p <= 'Z') ? (char)(*p - 'A' + 'a') : *p;
	memcpy(s->selector, sel->value, sel->value_len);
	s->selector[sel->value_len] = '\0';
	long blen = dkim_base64_decode(b->value, b->value_len, s->b, sizeof s->b);
	if (blen <= 0) {
		sig_fail(s, "b= is not base64 of a signature");
		return -1;
	}
	s->blen = (size_t)blen;
	return 0;
}

/* The body hashes, made once per canonicalisation. */
struct body_hashes {
	bool made[2];
	unsigned char digest[2][DIGEST_LEN];
};

static const unsigned char *body_hash(struct body_hashes *bh, enum dkim_canon c,
				      const char *body, size_t len)
{
	if (!bh->made[c]) {
		EVP_MD_CTX *md = sha256_new();
		struct dkim_body *b = xmalloc(sizeof *b);
		dkim_body_begin(b, c, UINT64_MAX, sink_md, md);
		dkim_body_feed(b, body, len);
		dkim_body_end(b);
		free(b);
		sha256_end(md, bh->digest[c]);
		bh->made[c] = true;
	}
	return bh->digest[c];
}

/* An ARC-Message-Signature: as a DKIM signature (RFC 8617 §4.1.2), its
 * i= in place of v=; l= is not accepted. */
static void ams_prepare(struct arc_sig *s, const struct dkim_header *h, const struct dkim_field *f,
			const char *body, size_t body_len, struct body_hashes *bh)
{
	struct dkim_tags t;
	if (field_tags(f, &t) < 0) {
		sig_fail(s, "syntax");
		return;
	}
	if (sig_tags(s, &t) < 0)
		return;
	const struct dkim_tag *htag = dkim_tags_get(&t, "h"), *bht = dkim_tags_get(&t, "bh"),
			      *c = dkim_tags_get(&t, "c"), *b = dkim_tags_get(&t, "b");
	enum dkim_canon hc = DKIM_CANON_SIMPLE, bc = DKIM_CANON_SIMPLE;
	if (!htag || !bht || dkim_tags_get(&t, "l") ||
	    (c && dkim_canon_parse(c->value, c->value_len, &hc, &bc) < 0)) {
		sig_fail(s, "h= or bh= missing, or bad c=, or l= given");
		return;
	}
	unsigned char want[DIGEST_LEN + 1];
	if (dkim_base64_decode(bht->value, bht->value_len, want, sizeof want) != DIGEST_LEN) {
		sig_fail(s, "bh= is not a SHA-256 hash");
		return;
	}
	if (CRYPTO_memcmp(want, body_hash(bh, bc, body, body_len), DIGEST_LEN) != 0) {
		sig_fail(s, "body hash did not verify");
		return;
	}
	EVP_MD_CTX *md = sha256_new();
	dkim_canon_h_list(hc, h, htag->value, htag->value_len, sink_md, md);
	size_t off = value_offset(f);
	dkim_canon_header_cut(hc, f->start, f->len, off + b->raw_start, off + b->raw_end, sink_md,
			      md);
	sha256_end(md, s->digest);
	s->hashed = true;
}

/* An ARC-Seal of instance i: over the sets 1..i, each AAR, AMS and AS in
 * that order, relaxed, its own b= value taken out (§5.1.1). */
static void as_prepare(struct arc_sig *s, const struct arc_chain *c, unsigned i)
{
	const struct dkim_field *f = c->set[i].as;
	struct dkim_tags t;
	if (field_tags(f, &t) < 0) {
		sig_fail(s, "syntax");
		return;
	}
	if (sig_tags(s, &t) < 0)
		return;
	if (dkim_tags_get(&t, "h")) {
		sig_fail(s, "h= in a seal (RFC 8617 §4.1.3)");
		return;
	}
	EVP_MD_CTX *md = sha256_new();
	for (unsigned k = 1; k <= i; k++) {
		const struct arc_set *set = &c->set[k];
		dkim_canon_header(DKIM_CANON_RELAXED, set->aar->start, set->aar->len, true, sink_md,
				  md);
		dkim_canon_header(DKIM_CANON_RELAXED, set->ams->start, set->ams->len, true, sink_md,
				  md);
		if (k < i)
			dkim_canon_header(DKIM_CANON_RELAXED, set->as->start, set->as->len, true,
					  sink_md, md);
	}
	const struct dkim_tag *b = dkim_tags_get(&t, "b");
	size_t off = value_offset(f);
	dkim_canon_header_cut(DKIM_CANON_RELAXED, f->start, f->len, off + b->raw_start,
			      off + b->raw_end, sink_md, md);
	sha256_end(md, s->digest);
	s->hashed = true;
}

static void state_prepare(struct arc_state *st, const char *msg, size_t len)
{
	struct dkim_header h;
	if (dkim_header_parse(msg, len, &h) < 0) {
		st->structure = ARC_FAIL;
		errfmt(st->why, sizeof st->why, "header section too large");
		return;
	}
	struct arc_chain *c = xmalloc(sizeof *c);
	st->structure = arc_chain_parse(&h, c, st->why, sizeof st->why);
	st->n = c->n;
	if (st->structure == ARC_PASS) {
		struct body_hashes bh = {.made = {false, false}};
		for (unsigned i = 1; i <= c->n; i++) {
			ams_prepare(&st->ams[i], &h, c->set[i].ams, msg + h.body_offset,
				    len - h.body_offset, &bh);
			as_prepare(&st->as[i], c, i);
		}
	}
	free(c);
	dkim_header_free(&h);
}

/* ---- the keys and the verdict (on the loop) ------------------------------------------ */

static void verdict(const struct arc_state *st, struct arc_result *r)
{
	memset(r, 0, sizeof *r);
	r->status = st->structure;
	r->instances = st->n;
	if (st->n > 0)
		xsnprintf(r->domain, sizeof r->domain, "%s", st->as[st->n].domain);
	if (st->structure != ARC_PASS) {
		xsnprintf(r->reason, sizeof r->reason, "%s", st->why);
		return;
	}
	r->status = ARC_FAIL;
	if (!st->ams[st->n].pass) {
		errfmt(r->reason, sizeof r->reason, "ARC-Message-Signature i=%u: %s", st->n,
		       st->ams[st->n].why);
		return;
	}
	for (unsigned i = st->n; i >= 1; i--) {
		if (!st->as[i].pass) {
			errfmt(r->reason, sizeof r->reason, "ARC-Seal i=%u: %s", i, st->as[i].why);
			return;
		}
	}
	r->status = ARC_PASS;
	unsigned k = st->n;
	while (k > 1 && st->ams[k - 1].pass)
		k--;
	r->oldest_pass = k == 1 ? 0 : k;
}

static void verify_finish(struct arc_verify *v)
{
	struct arc_result r;
	verdict(v->st, &r);
	arc_verify_done done = v->done;
	void *arg = v->arg;
	free(v->st);
	free(v);
	done(arg, &r);
}

static void key_answer(void *arg, enum dns_status st, const struct dns_txt *txt, size_t n,
		       uint32_t ttl)
{
	struct arc_sig *s = arg;
	struct arc_verify *v = s->v;
	s->waiting = false;
	s->q = 0;
	(void)ttl;
	if (st == DNS_NOTFOUND) {
		errfmt(s->why, sizeof s->why, "no key record");
	} else if (st != DNS_OK) {
		errfmt(s->why, sizeof s->why, "key lookup: %s", dns_status_name(st));
	} else {
		char err[ARC_REASON_MAX] = "no TXT record";
		struct dkim_pubkey k;
		size_t i = 0;
		while (i < n && dkim_pubkey_parse(txt[i].text, txt[i].len, &k, err, sizeof err) < 0)
			i++;
		if (i == n) {
			errfmt(s->why, sizeof s->why, "key record: %s", err);
		} else {
			s->pass = dkim_pubkey_verify(&k, s->type, s->b, s->blen, s->digest, DIGEST_LEN,
						     s->why, sizeof s->why);
			dkim_pubkey_clear(&k);
		}
	}
	if (--v->waiting == 0 && !v->starting)
		verify_finish(v);
}

static void sig_lookup(struct arc_verify *v, struct arc_sig *s)
{
	s->v = v;
	if (!s->hashed)
		return;
	char qname[QNAME_MAX];
	if (!bsnprintf(qname, sizeof qname, "%s._domainkey.%s", s->selector, s->domain)) {
		errfmt(s->why, sizeof s->why, "key name too long");
		return;
	}
	s->waiting = true;
	v->waiting++;
	s->q = v->src.lookup(v->src.ctx, qname, key_answer, s);
}

/* Ask for every key; NULL when done already ran. */
static struct arc_verify *verify_lookups(struct arc_verify *v)
{
	v->starting = true;
	for (unsigned i = 1; i <= v->st->n && v->st->structure == ARC_PASS; i++) {
		sig_lookup(v, &v->st->ams[i]);
		sig_lookup(v, &v->st->as[i]);
	}
	v->starting = false;
	if (v->waiting == 0) {
		verify_finish(v);
		return NULL;
	}
	return v;
}

static void work_run(void *arg)
{
	struct arc_work *w = arg;
	state_prepare(w->st, w->msg, w->len);
}

static void work_free(void *arg)
{
	struct arc_work *w = arg;
	free(w->msg);
	free(w->st);
	free(w);
}

static void work_done(void *owner, void *arg)
{
	struct arc_verify *v = owner;
	struct arc_work *w = arg;
	v->job = NULL;
	v->st = w->st;
	w->st = NULL;
	work_free(w);
	(void)verify_lookups(v); /* v is gone when it returns NULL */
}

static dns_query_id dns_source_lookup(void *ctx, const char *name, dns_txt_cb cb, void *arg)
{
	return dns_lookup_txt(ctx, name, cb, arg);
}

static void dns_source_cancel(void *ctx, dns_query_id id)
{
	dns_cancel(ctx, id);
}

struct arc_verify *arc_verify_start(struct dns_resolver *dns, const char *msg, size_t len,
				    arc_verify_done done, void *arg)
{
	struct dkim_key_source src = {dns_source_lookup, dns_source_cancel, dns};
	return arc_verify_start_with(&src, msg, len, done, arg);
}

struct arc_verify *arc_verify_start_with(const struct dkim_key_source *src, const char *msg,
					 size_t len, arc_verify_done done, void *arg)
{
	struct arc_verify *v = xcalloc(1, sizeof *v);
	v->src = *src;
	v->done = done;
	v->arg = arg;
	struct arc_state *st = xcalloc(1, sizeof *st);
	if (!offload_running()) { /* tools, tests: here and now */
		v->st = st;
		state_prepare(st, msg, len);
		return verify_lookups(v);
	}
	struct arc_work *w = xcalloc(1, sizeof *w);
	w->msg = xmalloc(len ? len : 1);
	memcpy(w->msg, msg, len);
	w->len = len;
	w->st = st;
	v->job = offload_submit(work_run, work_done, work_free, w, v);
	return v;
}

void arc_verify_cancel(struct arc_verify *v)
{
	if (!v)
		return;
	offload_cancel(v->job);
	for (unsigned i = 1; v->st && i <= v->st->n; i++) {
		if (v->st->ams[i].waiting && v->st->ams[i].q)
			v->src.cancel(v->src.ctx, v->st->ams[i].q);
		if (v->st->as[i].waiting && v->st->as[i].q)
			v->src.cancel(v->src.ctx, v->st->as[i].q);
	}
	free(v->st);
	free(v);
}

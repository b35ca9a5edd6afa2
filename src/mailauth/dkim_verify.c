/* dkim_verify: every DKIM-Signature of a message checked (RFC 6376 §6.1,
 * RFC 8463, RFC 8301): tags, body hash and header hash made at once (on a
 * worker when workers run), the keys looked up asynchronously, one callback with all results. */
#define _GNU_SOURCE /* memrchr */
#include "mailauth/dkim_verify.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "lib/offload.h"
#include "lib/util.h"
#include "mailauth/dkim_canon.h"
#include "mailauth/dkim_header.h"
#include "mailauth/dkim_key.h"
#include "mailauth/dkim_tags.h"

enum {
	SIG_MAX = 1024,         /* bytes of b= (8192-bit RSA) */
	DIGEST_LEN = 32,        /* SHA-256 */
	QNAME_MAX = 256 + DKIM_SELECTOR_MAX + 16,
};

enum dkim_alg { ALG_RSA_SHA256, ALG_ED25519_SHA256 };

struct sig {
	struct dkim_verify *v;
	struct dkim_result res;
	enum dkim_alg alg;
	bool waiting;           /* for its key */
	dns_query_id q;
	bool identity_is_d;     /* i= absent or its domain is d= itself */
	unsigned char digest[DIGEST_LEN]; /* the header hash */
	unsigned char b[SIG_MAX];
	size_t blen;
};

/* The signatures of one message. */
struct sigset {
	struct sig sigs[DKIM_VERIFY_SIGNATURES_MAX + 1]; /* + 1: the "too many" result */
	size_t n;
	size_t waiting;         /* for their keys */
};

struct dkim_verify {
	struct dkim_key_source src;
	dkim_verify_done done;
	void *arg;
	struct sigset set;
	struct offload_job *job; /* the hashes being made on a worker */
	bool starting;          /* starting the lookups: done waits */
};

/* The hashes of a message, made on a worker from a copy of it. */
struct verify_work {
	char *msg;
	size_t len;
	time_t now;
	struct sigset set;
};

/* Body hashes already made for this message, by canonicalisation and l=. */
struct body_cache {
	struct {
		enum dkim_canon canon;
		uint64_t limit;
		uint64_t out;
		unsigned char digest[DIGEST_LEN];
	} e[4];
	size_t n;
};

const char *dkim_status_name(enum dkim_status st)
{
	static const char *const names[] = {"pass", "fail", "neutral", "policy", "temperror",
					    "permerror"};
	return (unsigned)st < ARRAY_LEN(names) ? names[st] : "permerror";
}

static void sink_md(void *arg, const void *data, size_t len)
{
	(void)EVP_DigestUpdate(arg, data, len); /* SHA-256 updates do not fail */
}

static void set_result(struct sig *s, enum dkim_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_result(struct sig *s, enum dkim_status st, const char *fmt, ...)
{
	s->res.status = st;
	va_list ap;
	va_start(ap, fmt);
	verrfmt(s->res.reason, sizeof s->res.reason, fmt, ap);
	va_end(ap);
}

/* A tag's value into out as printable ASCII, cut to fit. */
static void copy_printable(char *out, size_t outsz, const char *v, size_t n, bool lower)
{
	size_t k = 0;
	for (size_t i = 0; i < n && k + 1 < outsz; i++) {
		unsigned char c = (unsigned char)v[i];
		if (c <= ' ' || c > '~')
			continue;
		out[k++] = lower && c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : (char)c;
	}
	out[k] = '\0';
}

static bool name_ok(const char *s)
{
	if (!*s || strlen(s) > DKIM_DOMAIN_MAX)
		return false;
	for (; *s; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
		      (*s >= '0' && *s <= '9') || *s == '-' || *s == '.' || *s == '_'))
			return false;
	return true;
}

/* c=: header/body, each simple or relaxed; simple when absent (§3.5). */
static int parse_canon(const struct dkim_tag *c, enum dkim_canon *hc, enum dkim_canon *bc)
{
	*hc = *bc = DKIM_CANON_SIMPLE;
	return c ? dkim_canon_parse(c->value, c->value_len, hc, bc) : 0;
}

/* A decimal tag value (t=, x=, l=). */
static int parse_number(const struct dkim_tag *t, uint64_t *out)
{
	if (t->value_len == 0 || t->value_len > 18)
		return -1;
	uint64_t n = 0;
	for (size_t i = 0; i < t->value_len; i++) {
		if (t->value[i] < '0' || t->value[i] > '9')
			return -1;
		n = n * 10 + (uint64_t)(t->value[i] - '0');
	}
	*out = n;
	return 0;
}

/* Does h= name From (§5.4: it MUST)? */
static bool h_has_from(const struct dkim_tag *h)
{
	size_t i = 0;
	while (i <= h->value_len) {
		size_t j = i;
		while (j < h->value_len && h->value[j] != ':')
			j++;
		size_t a = i, b = j;
		while (a < b && strchr(" \t\r\n", h->value[a]))
			a++;
		while (b > a && strchr(" \t\r\n", h->value[b - 1]))
			b--;
		if (b - a == 4 && strncasecmp(h->value + a, "from", 4) == 0)
			return true;
		i = j + 1;
	}
	return false;
}

/* i=: its domain must be d= or below it (§3.5). */
static int check_identity(struct sig *s, const struct dkim_tag *i)
{
	s->identity_is_d = true;
	if (!i)
		return 0;
	const char *at = memrchr(i->value, '@', i->value_len); /* the local part may quote one */
	if (!at)
		return -1;
	size_t n = i->value_len - (size_t)(at + 1 - i->value), dn = strlen(s->res.domain);
	const char *dom = at + 1;
	if (n == dn && strncasecmp(dom, s->res.domain, n) == 0)
		return 0;
	s->identity_is_d = false;
	return n > dn && dom[n - dn - 1] == '.' && strncasecmp(dom + n - dn, s->res.domain, dn) == 0
		   ? 0
		   : -1;
}

static void body_hash(const char *body, size_t len, enum dkim_canon c, uint64_t limit,
		      struct body_cache *cache, unsigned char out[DIGEST_LEN], uint64_t *produced)
{
	for (size_t k = 0; k < cache->n; k++) {
		if (cache->e[k].canon == c && cache->e[k].limit == limit) {
			memcpy(out, cache->e[k].digest, DIGEST_LEN);
			*produced = cache->e[k].out;
			return;
		}
	}
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	if (!md || EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1)
		fatal("dkim: cannot set up SHA-256");
	struct dkim_body *b = xmalloc(sizeof *b);
	dkim_body_begin(b, c, limit, sink_md, md);
	dkim_body_feed(b, body, len);
	dkim_body_end(b);
	*produced = b->out;
	free(b);
	unsigned n = 0;
	if (EVP_DigestFinal_ex(md, out, &n) != 1 || n != DIGEST_LEN)
		fatal("dkim: SHA-256 failed");
	EVP_MD_CTX_free(md);
	if (cache->n < ARRAY_LEN(cache->e)) {
		cache->e[cache->n].canon = c;
		cache->e[cache->n].limit = limit;
		cache->e[cache->n].out = *produced;
		memcpy(cache->e[cache->n].digest, out, DIGEST_LEN);
		cache->n++;
	}
}

/* The header hash (§3.7): the h= fields from the bottom, then this
 * signature's field with b='s value taken out, without CRLF. */
static void header_hash(struct sig *s, const struct dkim_header *h, const struct dkim_field *f,
			size_t value_off, const struct dkim_tag *htag, const struct dkim_tag *btag,
			enum dkim_canon hc)
{
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	if (!md || EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1)
		fatal("dkim: cannot set up SHA-256");
	dkim_canon_h_list(hc, h, htag->value, htag->value_len, sink_md, md);
	/* the field without b='s value: before it, then after it */
	dkim_canon_header_cut(hc, f->start, f->len, value_off + btag->raw_start,
			      value_off + btag->raw_end, sink_md, md);
	unsigned n = 0;
	if (EVP_DigestFinal_ex(md, s->digest, &n) != 1 || n != DIGEST_LEN)
		fatal("dkim: SHA-256 failed");
	EVP_MD_CTX_free(md);
}

/* The tags every signature must have, and their values (§6.1.1).  0, or
 * -1 with the result set. */
static int check_tags(struct sig *s, const struct dkim_tags *t, time_t now)
{
	const struct dkim_tag *v = dkim_tags_get(t, "v"), *a = dkim_tags_get(t, "a"),
			      *b = dkim_tags_get(t, "b"), *bh = dkim_tags_get(t, "bh"),
			      *d = dkim_tags_get(t, "d"), *h = dkim_tags_get(t, "h"),
			      *sel = dkim_tags_get(t, "s"), *x = dkim_tags_get(t, "x"),
			      *ts = dkim_tags_get(t, "t");
	if (d)
		copy_printable(s->res.domain, sizeof s->res.domain, d->value, d->value_len, true);
	if (sel)
		copy_printable(s->res.selector, sizeof s->res.selector, sel->value, sel->value_len,
			       false);
	if (a)
		copy_printable(s->res.algorithm, sizeof s->res.algorithm, a->value, a->value_len, true);
	if (b)
		copy_printable(s->res.header_b, sizeof s->res.header_b, b->value, b->value_len, false);
	if (!v || !a || !b || !bh || !d || !h || !sel) {
		set_result(s, DKIM_PERMERROR, "a required tag is missing (v, a, b, bh, d, h, s)");
		return -1;
	}
	if (!dkim_tag_is(v, "1")) {
		set_result(s, DKIM_PERMERROR, "unknown version (v= is not 1)");
		return -1;
	}
	if (dkim_tag_is(a, "rsa-sha256"))
		s->alg = ALG_RSA_SHA256;
	else if (dkim_tag_is(a, "ed25519-sha256"))
		s->alg = ALG_ED25519_SHA256;
	else if (dkim_tag_is(a, "rsa-sha1")) {
		set_result(s, DKIM_FAIL, "rsa-sha1 is not accepted (RFC 8301)");
		return -1;
	} else {
		set_result(s, DKIM_PERMERROR, "unknown algorithm");
		return -1;
	}
	if (!name_ok(s->res.domain) || d->value_len != strlen(s->res.domain) ||
	    !name_ok(s->res.selector) || sel->value_len != strlen(s->res.selector)) {
		set_result(s, DKIM_PERMERROR, "bad d= or s=");
		return -1;
	}
	if (!h_has_from(h)) {
		set_result(s, DKIM_PERMERROR, "From is not signed (h=)");
		return -1;
	}
	uint64_t tv = 0, xv = 0;
	if ((ts && parse_number(ts, &tv) < 0) || (x && parse_number(x, &xv) < 0) ||
	    (ts && x && xv < tv)) {
		set_result(s, DKIM_PERMERROR, "bad t= or x=");
		return -1;
	}
	if (x && (uint64_t)now > xv) {
		set_result(s, DKIM_FAIL, "signature expired");
		return -1;
	}
	if (check_identity(s, dkim_tags_get(t, "i")) < 0) {
		set_result(s, DKIM_PERMERROR, "i= is not in the domain d=");
		return -1;
	}
	return 0;
}

/* Everything but the key: tags, body hash, header hash.  0 when the key
 * is to be looked up, -1 with the result set. */
static int sig_prepare(struct sig *s, const struct dkim_header *h, const struct dkim_field *f,
		       const char *body, size_t body_len, time_t now, struct body_cache *cache)
{
	const char *colon = memchr(f->start, ':', f->len);
	size_t value_off = (size_t)(colon - f->start) + 1;
	struct dkim_tags t;
	char err[DKIM_REASON_MAX];
	if (dkim_tags_parse(f->start + value_off, f->len - value_off, &t, err, sizeof err) < 0) {
		set_result(s, DKIM_PERMERROR, "signature syntax: %s", err);
		return -1;
	}
	if (check_tags(s, &t, now) < 0)
		return -1;
	enum dkim_canon hc, bc;
	uint64_t limit = UINT64_MAX;
	const struct dkim_tag *l = dkim_tags_get(&t, "l"), *bh = dkim_tags_get(&t, "bh"),
			      *b = dkim_tags_get(&t, "b");
	if (parse_canon(dkim_tags_get(&t, "c"), &hc, &bc) < 0 || (l && parse_number(l, &limit) < 0)) {
		set_result(s, DKIM_PERMERROR, "bad c= or l=");
		return -1;
	}
	unsigned char want[DIGEST_LEN + 1], got[DIGEST_LEN];
	if (dkim_base64_decode(bh->value, bh->value_len, want, sizeof want) != DIGEST_LEN) {
		set_result(s, DKIM_PERMERROR, "bh= is not a SHA-256 hash");
		return -1;
	}
	long blen = dkim_base64_decode(b->value, b->value_len, s->b, sizeof s->b);
	if (blen <= 0) {
		set_result(s, DKIM_PERMERROR, "b= is not base64 of a signature");
		return -1;
	}
	s->blen = (size_t)blen;
	uint64_t produced = 0;
	body_hash(body, body_len, bc, limit, cache, got, &produced);
	if (l && produced < limit) {
		set_result(s, DKIM_PERMERROR, "l= is longer than the body");
		return -1;
	}
	if (CRYPTO_memcmp(want, got, DIGEST_LEN) != 0) {
		set_result(s, DKIM_FAIL, "body hash did not verify");
		return -1;
	}
	header_hash(s, h, f, value_off, dkim_tags_get(&t, "h"), b, hc);
	return 0;
}

/* ---- the key and the signature ----------------------------------------------------- */

static bool verify_digest(const struct sig *s, EVP_PKEY *pkey)
{
	enum dkim_key_type t = s->alg == ALG_ED25519_SHA256 ? DKIM_KEY_ED25519 : DKIM_KEY_RSA;
	return dkim_key_verify_digest(pkey, t, s->b, s->blen, s->digest, DIGEST_LEN);
}

static void sig_check_key(struct sig *s, const struct dkim_pubkey *k)
{
	s->res.key_bits = k->bits;
	s->res.testing = k->testing;
	enum dkim_key_type want = s->alg == ALG_ED25519_SHA256 ? DKIM_KEY_ED25519 : DKIM_KEY_RSA;
	if (!k->pkey)
		set_result(s, DKIM_PERMERROR, "key revoked");
	else if (k->type != want)
		set_result(s, DKIM_PERMERROR, "key type %s does not match a=",
			   dkim_key_type_name(k->type));
	else if (!k->sha256_ok)
		set_result(s, DKIM_PERMERROR, "key does not allow sha256 (h=)");
	else if (k->type == DKIM_KEY_RSA && k->bits < DKIM_RSA_VERIFY_BITS_MIN)
		set_result(s, DKIM_FAIL, "RSA key of %u bits, less than %d (RFC 8301)", k->bits,
			   DKIM_RSA_VERIFY_BITS_MIN);
	else if (k->type == DKIM_KEY_RSA && k->bits > DKIM_RSA_BITS_MAX)
		set_result(s, DKIM_PERMERROR, "RSA key of %u bits, more than %d", k->bits,
			   DKIM_RSA_BITS_MAX);
	else if (k->strict_identity && !s->identity_is_d)
		set_result(s, DKIM_PERMERROR, "key requires i= in d= itself (t=s)");
	else if (!verify_digest(s, k->pkey))
		set_result(s, DKIM_FAIL, "signature did not verify");
	else
		set_result(s, DKIM_PASS, "%s", "");
}

static void verify_finish(struct dkim_verify *v)
{
	struct dkim_result res[DKIM_VERIFY_SIGNATURES_MAX + 1];
	for (size_t i = 0; i < v->set.n; i++)
		res[i] = v->set.sigs[i].res;
	dkim_verify_done done = v->done;
	void *arg = v->arg;
	size_t n = v->set.n;
	free(v);
	done(arg, res, n);
}

static void key_answer(void *arg, enum dns_status st, const struct dns_txt *txt, size_t n,
		       uint32_t ttl)
{
	struct sig *s = arg;
	struct dkim_verify *v = s->v;
	s->waiting = false;
	s->q = 0;
	if (st == DNS_NOTFOUND) {
		set_result(s, DKIM_PERMERROR, "no key record");
	} else if (st != DNS_OK) {
		set_result(s, DKIM_TEMPERROR, "key lookup: %s", dns_status_name(st));
	} else {
		/* the first record that is a key (§3.6.2.2 leaves several undefined) */
		char err[DKIM_REASON_MAX] = "no TXT record";
		struct dkim_pubkey k;
		size_t i = 0;
		while (i < n && dkim_pubkey_parse(txt[i].text, txt[i].len, &k, err, sizeof err) < 0)
			i++;
		if (i == n) {
			set_result(s, DKIM_PERMERROR, "key record: %s", err);
		} else {
			sig_check_key(s, &k);
			dkim_pubkey_clear(&k);
		}
	}
	(void)ttl;
	if (--v->set.waiting == 0 && !v->starting)
		verify_finish(v);
}

static dns_query_id dns_source_lookup(void *ctx, const char *name, dns_txt_cb cb, void *arg)
{
	return dns_lookup_txt(ctx, name, cb, arg);
}

static void dns_source_cancel(void *ctx, dns_query_id id)
{
	dns_cancel(ctx, id);
}

struct dkim_verify *dkim_verify_start(struct dns_resolver *dns, const char *msg, size_t len,
				      time_t now, dkim_verify_done done, void *arg)
{
	struct dkim_key_source src = {dns_source_lookup, dns_source_cancel, dns};
	return dkim_verify_start_with(&src, msg, len, now, done, arg);
}

static void prepare_all(struct sigset *set, const char *msg, size_t len, time_t now)
{
	struct dkim_header h;
	if (dkim_header_parse(msg, len, &h) < 0) {
		struct sig *s = &set->sigs[set->n++];
		set_result(s, DKIM_PERMERROR, "header section too large");
		return;
	}
	struct body_cache cache = {.n = 0};
	for (size_t k = 0; k < h.n; k++) {
		const struct dkim_field *f = &h.fields[k];
		if (!dkim_field_is(f, "dkim-signature", 14))
			continue;
		struct sig *s = &set->sigs[set->n++];
		set_result(s, DKIM_PERMERROR, "malformed signature field");
		if (set->n > DKIM_VERIFY_SIGNATURES_MAX) {
			set_result(s, DKIM_PERMERROR, "more than %d signatures: not verified",
				   DKIM_VERIFY_SIGNATURES_MAX);
			break;
		}
		if (memchr(f->start, ':', f->len) == NULL ||
		    sig_prepare(s, &h, f, msg + h.body_offset, len - h.body_offset, now, &cache) < 0)
			continue;
		s->waiting = true;
		set->waiting++;
	}
	dkim_header_free(&h);
}

/* Ask for the key of every signature that got this far; NULL when done
 * already ran (no lookup, or every answer at once). */
static struct dkim_verify *verify_lookups(struct dkim_verify *v)
{
	v->starting = true;
	for (size_t i = 0; i < v->set.n; i++) {
		struct sig *s = &v->set.sigs[i];
		s->v = v;
		if (!s->waiting)
			continue;
		char qname[QNAME_MAX];
		if (!bsnprintf(qname, sizeof qname, "%s._domainkey.%s", s->res.selector,
			       s->res.domain)) {
			s->waiting = false;
			v->set.waiting--;
			set_result(s, DKIM_PERMERROR, "key name too long");
			continue;
		}
		s->q = v->src.lookup(v->src.ctx, qname, key_answer, s);
	}
	v->starting = false;
	if (v->set.waiting == 0) {
		verify_finish(v);
		return NULL;
	}
	return v;
}

static void work_run(void *arg)
{
	struct verify_work *w = arg;
	prepare_all(&w->set, w->msg, w->len, w->now);
}

static void work_free(void *arg)
{
	struct verify_work *w = arg;
	free(w->msg);
	free(w);
}

/* Back on the loop with the hashes: the keys next. */
static void work_done(void *owner, void *arg)
{
	struct dkim_verify *v = owner;
	struct verify_work *w = arg;
	v->job = NULL;
	v->set = w->set;
	work_free(w);
	(void)verify_lookups(v); /* v is gone when it returns NULL */
}

struct dkim_verify *dkim_verify_start_with(const struct dkim_key_source *src, const char *msg,
					   size_t len, time_t now, dkim_verify_done done,
					   void *arg)
{
	struct dkim_verify *v = xcalloc(1, sizeof *v);
	v->src = *src;
	v->done = done;
	v->arg = arg;
	if (!offload_running()) { /* tools, tests: here and now */
		prepare_all(&v->set, msg, len, now);
		return verify_lookups(v);
	}
	/* hashing a large message would hold the loop: a worker does it */
	struct verify_work *w = xcalloc(1, sizeof *w);
	w->msg = xmalloc(len ? len : 1);
	memcpy(w->msg, msg, len);
	w->len = len;
	w->now = now;
	v->job = offload_submit(work_run, work_done, work_free, w, v);
	return v;
}

void dkim_verify_cancel(struct dkim_verify *v)
{
	if (!v)
		return;
	offload_cancel(v->job); /* the worker's copy is freed when it is through */
	for (size_t i = 0; i < v->set.n; i++)
		if (v->set.sigs[i].waiting && v->set.sigs[i].q)
			v->src.cancel(v->src.ctx, v->set.sigs[i].q);
	free(v);
}

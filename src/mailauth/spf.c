/* spf: check_host() (RFC 7208 §4) as a state machine on the event loop.
 * One lookup is in flight at a time; its answer resumes the machine.  The
 * limits of §4.6.4 (10 DNS-querying terms, 2 void lookups, 10 MX or PTR
 * names per mechanism) bound the work; every DNS failure is a temperror
 * (§2.6.6), never a fail.  Records are parsed whole before use (§4.6). */
#include "mailauth/spf.h"

#include <arpa/inet.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>

#include "net/dns.h"
#include "lib/util.h"

enum { SPF_DEPTH_MAX = SPF_DNS_TERMS_MAX + 1, SPF_LOCAL_MAX = 64 * 4 + 1, SPF_DETAIL_MAX = 160 };

/* One record being evaluated: the top one, or one reached by include. */
struct spf_frame {
	char domain[SPF_NAME_MAX + 1];
	struct spf_record rec;
	bool loaded;
	bool by_redirect;       /* none here is a permerror (§6.1) */
	size_t next;            /* the term to evaluate */
};

enum spf_wait {
	SPF_WAIT_NONE,
	SPF_WAIT_RECORD,
	SPF_WAIT_A,
	SPF_WAIT_MX,
	SPF_WAIT_MX_HOST,
	SPF_WAIT_PTR,
	SPF_WAIT_EXISTS,
	SPF_WAIT_PTR_MACRO,
};

struct spf_check {
	struct dns_resolver *dns;
	spf_done_cb cb;
	void *arg;
	int family;
	uint8_t ip[16];
	char sender[SPF_LOCAL_MAX + SPF_NAME_MAX + 2];
	char local[SPF_LOCAL_MAX];
	char sender_domain[SPF_NAME_MAX + 1];
	char helo[SPF_NAME_MAX + 1];
	char receiver[SPF_NAME_MAX + 1];
	const char *identity;
	char ptr[SPF_NAME_MAX + 1]; /* %{p}; "" until looked up */
	bool ptr_known;

	struct spf_frame frames[SPF_DEPTH_MAX];
	size_t depth;
	unsigned dns_terms, voids;

	enum spf_wait wait;
	dns_query_id query;
	bool running;           /* inside spf_run: answers only resume it */
	char target[SPF_NAME_MAX + 1]; /* the name the current term looks at */
	char mx[SPF_MX_HOSTS_MAX][SPF_NAME_MAX + 1];
	size_t nmx, mx_next;
	bool mx_pending;        /* hosts of an mx mechanism left to look up */

	struct timespec started; /* CLOCK_MONOTONIC: SPF_TIME_MAX bounds the check */
	bool done;
	enum spf_result result;
	char detail[SPF_DETAIL_MAX];
};

static bool spf_run(struct spf_check *c);

static void spf_finish(struct spf_check *c, enum spf_result r, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void spf_finish(struct spf_check *c, enum spf_result r, const char *fmt, ...)
{
	if (c->done)
		return;
	va_list ap;
	va_start(ap, fmt);
	verrfmt(c->detail, sizeof c->detail, fmt, ap); /* for the log: a cut is marked "..." */
	va_end(ap);
	c->done = true;
	c->result = r;
}

static struct spf_frame *spf_top(struct spf_check *c)
{
	return &c->frames[c->depth - 1];
}

static void spf_vars(const struct spf_check *c, const struct spf_frame *f,
		     struct spf_macro_vars *v)
{
	*v = (struct spf_macro_vars){
		.sender = c->sender, .local = c->local, .sender_domain = c->sender_domain,
		.domain = f->domain, .ip = c->ip, .family = c->family, .helo = c->helo,
		.ptr = c->ptr_known ? c->ptr : NULL, .receiver = c->receiver, .now = time(NULL),
	};
}

/* ---- lookups ------------------------------------------------------------ */

/* net/dns asks only for host names (letters, digits, '-', '_'); a name
 * with other characters (a macro may make one) is answered as if it did
 * not exist: a void lookup. */
static bool spf_name_askable(const char *name)
{
	return name[strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")] ==
	       '\0';
}

static void spf_answered(struct spf_check *c)
{
	c->wait = SPF_WAIT_NONE;
	c->query = 0;
	if (!c->running)
		(void)spf_run(c); /* c may be gone now */
}

static bool spf_count_term(struct spf_check *c)
{
	if (++c->dns_terms <= SPF_DNS_TERMS_MAX)
		return true;
	spf_finish(c, SPF_PERMERROR, "more than %d DNS-querying terms", SPF_DNS_TERMS_MAX);
	return false;
}

static bool spf_count_void(struct spf_check *c)
{
	if (++c->voids <= SPF_VOID_MAX)
		return true;
	spf_finish(c, SPF_PERMERROR, "more than %d void lookups", SPF_VOID_MAX);
	return false;
}

static bool spf_dns_failed(struct spf_check *c, enum dns_status st, const char *name)
{
	if (st == DNS_OK || st == DNS_NOTFOUND)
		return false;
	spf_finish(c, SPF_TEMPERROR, "DNS %s for %s", dns_status_name(st), name);
	return true;
}

/* The current term matched: its qualifier is the frame's result. */
static void spf_frame_result(struct spf_check *c, enum spf_result r, const char *why);

static void spf_term_matched(struct spf_check *c)
{
	struct spf_frame *f = spf_top(c);
	const struct spf_term *t = &f->rec.terms[f->next];
	char why[SPF_DETAIL_MAX];
	errfmt(why, sizeof why, "mechanism %zu of %s matched", f->next + 1, f->domain);
	spf_frame_result(c, t->qualifier, why);
}

static void spf_term_missed(struct spf_check *c)
{
	spf_top(c)->next++;
}

static bool spf_prefix_match(const uint8_t *a, const uint8_t *b, unsigned bits)
{
	unsigned whole = bits / 8, rest = bits % 8;
	if (memcmp(a, b, whole) != 0)
		return false;
	if (rest == 0)
		return true;
	uint8_t mask = (uint8_t)(0xff << (8 - rest));
	return (a[whole] & mask) == (b[whole] & mask);
}

static bool spf_addr_match(const struct spf_check *c, const struct dns_addr *a, size_t n,
			   unsigned cidr4, unsigned cidr6)
{
	for (size_t i = 0; i < n; i++)
		if (a[i].family == c->family &&
		    spf_prefix_match(a[i].addr, c->ip, c->family == AF_INET ? cidr4 : cidr6))
			return true;
	return false;
}

static size_t spf_count_family(const struct dns_addr *a, size_t n, int family)
{
	size_t k = 0;
	for (size_t i = 0; i < n; i++)
		k += a[i].family == family;
	return k;
}

static const struct spf_term *spf_current(struct spf_check *c)
{
	struct spf_frame *f = spf_top(c);
	return &f->rec.terms[f->next];
}

/* Answers of the a mechanism's lookup and of the mx mechanism's hosts. */
static void spf_addrs_answer(void *arg, enum dns_status st, const struct dns_addr *a, size_t n)
{
	struct spf_check *c = arg;
	const struct spf_term *t = spf_current(c);
	bool mx = c->wait == SPF_WAIT_MX_HOST;
	const char *name = mx ? c->mx[c->mx_next] : c->target;
	if (st != DNS_OK)
		n = 0;
	if (spf_dns_failed(c, st, name)) {
		c->mx_pending = false;
	} else if (spf_addr_match(c, a, n, t->cidr4, t->cidr6)) {
		c->mx_pending = false;
		spf_term_matched(c);
	} else if (!mx) {
		/* no address of the client's family: a void lookup (§4.6.4) */
		if (spf_count_family(a, n, c->family) > 0 || spf_count_void(c))
			spf_term_missed(c);
	} else if (++c->mx_next >= c->nmx) {
		c->mx_pending = false;
		spf_term_missed(c);
	}
	spf_answered(c);
}

static void spf_mx_answer(void *arg, enum dns_status st, const struct dns_mx *mx, size_t n)
{
	struct spf_check *c = arg;
	c->nmx = c->mx_next = 0;
	if (spf_dns_failed(c, st, c->target)) {
		spf_answered(c);
		return;
	}
	if (st == DNS_NOTFOUND || n == 0) {
		if (spf_count_void(c))
			spf_term_missed(c);
	} else if (n > SPF_MX_HOSTS_MAX) {
		spf_finish(c, SPF_PERMERROR, "more than %d MX hosts for %s", SPF_MX_HOSTS_MAX,
			   c->target);
	} else {
		for (size_t i = 0; i < n; i++)
			if (mx[i].host[0] && bsnprintf(c->mx[c->nmx], sizeof c->mx[0], "%s", mx[i].host))
				c->nmx++;
		if (c->nmx == 0) /* a null MX (RFC 7505) matches nothing */
			spf_term_missed(c);
		else
			c->mx_pending = true; /* spf_step asks for each host in turn */
	}
	spf_answered(c);
}

static bool spf_name_within(const char *name, const char *domain)
{
	size_t n = strlen(name), d = strlen(domain);
	if (n == d)
		return strcasecmp(name, domain) == 0;
	return n > d && name[n - d - 1] == '.' && strcasecmp(name + n - d, domain) == 0;
}

static void spf_ptr_answer(void *arg, enum dns_status st, const char *name)
{
	struct spf_check *c = arg;
	bool macro = c->wait == SPF_WAIT_PTR_MACRO;
	/* the forward-confirmed name (net/dns checks that it leads back to
	 * the client, §5.5); a DNS failure of ptr is no match, not an error */
	bool have = st == DNS_OK && name && strlen(name) <= SPF_NAME_MAX;
	if (macro) {
		xsnprintf(c->ptr, sizeof c->ptr, "%s", have ? name : "unknown"); /* length checked */
		c->ptr_known = true;
	} else if (have && spf_name_within(name, c->target)) {
		if (!c->ptr_known) {
			xsnprintf(c->ptr, sizeof c->ptr, "%s", name); /* length checked */
			c->ptr_known = true;
		}
		spf_term_matched(c);
	} else if (st == DNS_NOTFOUND && !spf_count_void(c)) {
		; /* finished with permerror */
	} else {
		spf_term_missed(c);
	}
	spf_answered(c);
}

static void spf_exists_answer(void *arg, enum dns_status st, const struct dns_addr *a, size_t n)
{
	struct spf_check *c = arg;
	if (!spf_dns_failed(c, st, c->target)) {
		/* §5.7: an A lookup, whatever the client's family */
		if (st == DNS_OK && spf_count_family(a, n, AF_INET) > 0)
			spf_term_matched(c);
		else if (spf_count_void(c))
			spf_term_missed(c);
	}
	spf_answered(c);
}

static void spf_record_answer(void *arg, enum dns_status st, const struct dns_txt *txt, size_t n,
			      uint32_t ttl)
{
	struct spf_check *c = arg;
	struct spf_frame *f = spf_top(c);
	size_t found = 0, at = 0;
	if (spf_dns_failed(c, st, f->domain)) {
		spf_answered(c);
		return;
	}
	for (size_t i = 0; st == DNS_OK && i < n; i++)
		if (spf_record_is_spf(txt[i].text, txt[i].len)) {
			found++;
			at = i;
		}
	char why[SPF_DETAIL_MAX];
	if (found == 0) {
		spf_frame_result(c, SPF_NONE, "no SPF record");
	} else if (found > 1) { /* §4.5 */
		spf_finish(c, SPF_PERMERROR, "%zu SPF records at %s", found, f->domain);
	} else if (!spf_record_parse(txt[at].text, txt[at].len, &f->rec, why, sizeof why)) {
		spf_finish(c, SPF_PERMERROR, "SPF record of %s: %s", f->domain, why);
	} else {
		f->loaded = true;
	}
	spf_answered(c);
}

/* ---- the frames ----------------------------------------------------------- */

static void spf_frame_pop(struct spf_check *c)
{
	spf_record_free(&spf_top(c)->rec);
	c->depth--;
}

/* A frame's check_host() gave r: it ends the check, or it is the result of
 * the include mechanism in the frame below (§5.2). */
static void spf_frame_result(struct spf_check *c, enum spf_result r, const char *why)
{
	struct spf_frame *f = spf_top(c);
	if (r == SPF_NONE && f->by_redirect) {
		spf_finish(c, SPF_PERMERROR, "redirect to %s: no SPF record", f->domain);
		return;
	}
	if (c->depth == 1) {
		spf_finish(c, r, "%s", why);
		return;
	}
	char domain[SPF_NAME_MAX + 1];
	xsnprintf(domain, sizeof domain, "%s", f->domain); /* same size */
	spf_frame_pop(c);
	switch (r) {
	case SPF_PASS:
		spf_term_matched(c);
		break;
	case SPF_FAIL:
	case SPF_SOFTFAIL:
	case SPF_NEUTRAL:
		spf_term_missed(c);
		break;
	case SPF_TEMPERROR:
		spf_finish(c, SPF_TEMPERROR, "include:%s: %s", domain, why);
		break;
	case SPF_NONE:
	case SPF_PERMERROR:
		spf_finish(c, SPF_PERMERROR, "include:%s: %s", domain, why);
		break;
	}
}

static void spf_frame_push(struct spf_check *c, const char *domain, bool by_redirect)
{
	if (!by_redirect) {
		if (c->depth == SPF_DEPTH_MAX) { /* cannot happen within the term limit */
			spf_finish(c, SPF_PERMERROR, "includes nested too deep");
			return;
		}
		c->depth++;
	} else {
		spf_record_free(&spf_top(c)->rec);
	}
	struct spf_frame *f = spf_top(c);
	memset(f, 0, sizeof *f);
	xsnprintf(f->domain, sizeof f->domain, "%s", domain); /* both SPF_NAME_MAX */
	f->by_redirect = by_redirect;
}

/* ---- one step --------------------------------------------------------- */

/* Expand the term's domain-spec (or take <domain>) into c->target.
 * false: finished, or waiting for %{p}. */
static bool spf_target(struct spf_check *c, const char *spec)
{
	struct spf_frame *f = spf_top(c);
	if (!spec) {
		xsnprintf(c->target, sizeof c->target, "%s", f->domain); /* same size */
		return true;
	}
	struct spf_macro_vars v;
	spf_vars(c, f, &v);
	switch (spf_expand_domain(spec, &v, c->target)) {
	case SPF_MACRO_OK:
		if (spf_domain_labels_ok(c->target))
			return true;
		if (f->next < f->rec.nterms && spf_current(c)->mech != SPF_MECH_INCLUDE) {
			/* a, mx, ptr, exists at a name that cannot exist (an
			 * empty label, one over 63 octets): no match, as pyspf
			 * decides (the RFC 7208 test suite allows a permerror) */
			spf_term_missed(c);
			return false;
		}
		spf_finish(c, SPF_PERMERROR, "a domain of %s is no domain name", f->domain);
		return false;
	case SPF_MACRO_NEEDS_PTR: /* spf_needs_ptr_first() came before */
	case SPF_MACRO_SYNTAX:
	case SPF_MACRO_TOO_LONG:
		break;
	}
	spf_finish(c, SPF_PERMERROR, "cannot expand a domain of %s", f->domain);
	return false;
}

static struct sockaddr_storage *spf_client_sa(const struct spf_check *c,
					      struct sockaddr_storage *ss)
{
	memset(ss, 0, sizeof *ss);
	if (c->family == AF_INET) {
		struct sockaddr_in *in = (struct sockaddr_in *)ss;
		in->sin_family = AF_INET;
		memcpy(&in->sin_addr, c->ip, 4);
	} else {
		struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
		in6->sin6_family = AF_INET6;
		memcpy(&in6->sin6_addr, c->ip, 16);
	}
	return ss;
}

static void spf_lookup_ptr(struct spf_check *c, enum spf_wait why)
{
	struct sockaddr_storage ss;
	c->wait = why;
	c->query = dns_lookup_fcrdns(c->dns, (struct sockaddr *)spf_client_sa(c, &ss),
				     spf_ptr_answer, c);
}

static bool spf_needs_ptr_first(struct spf_check *c, const char *spec)
{
	if (c->ptr_known || !spec || (!strstr(spec, "%{p") && !strstr(spec, "%{P")))
		return false;
	spf_lookup_ptr(c, SPF_WAIT_PTR_MACRO);
	return true;
}

static void spf_eval_ip(struct spf_check *c, const struct spf_term *t, int family)
{
	unsigned bits = family == AF_INET ? t->cidr4 : t->cidr6;
	if (c->family == family && spf_prefix_match(t->ip, c->ip, bits))
		spf_term_matched(c);
	else
		spf_term_missed(c);
}

/* Evaluate the current term: matched, missed, finished, or a lookup sent. */
static void spf_eval_term(struct spf_check *c)
{
	const struct spf_term *t = spf_current(c);
	if (t->mech == SPF_MECH_ALL) {
		spf_term_matched(c);
		return;
	}
	if (t->mech == SPF_MECH_IP4 || t->mech == SPF_MECH_IP6) {
		spf_eval_ip(c, t, t->mech == SPF_MECH_IP4 ? AF_INET : AF_INET6);
		return;
	}
	if (spf_needs_ptr_first(c, t->domain_spec))
		return; /* the term is evaluated again once %{p} is known */
	if (!spf_count_term(c) || !spf_target(c, t->domain_spec))
		return;
	if (t->mech != SPF_MECH_PTR && t->mech != SPF_MECH_INCLUDE && !spf_name_askable(c->target)) {
		if (spf_count_void(c))
			spf_term_missed(c);
		return;
	}
	switch (t->mech) {
	case SPF_MECH_INCLUDE:
		spf_frame_push(c, c->target, false);
		break;
	case SPF_MECH_A:
		c->wait = SPF_WAIT_A;
		c->query = dns_lookup_addrs(c->dns, c->target, spf_addrs_answer, c);
		break;
	case SPF_MECH_MX:
		c->wait = SPF_WAIT_MX;
		c->query = dns_lookup_mx(c->dns, c->target, spf_mx_answer, c);
		break;
	case SPF_MECH_PTR:
		spf_lookup_ptr(c, SPF_WAIT_PTR);
		break;
	case SPF_MECH_EXISTS:
		c->wait = SPF_WAIT_EXISTS;
		c->query = dns_lookup_addrs(c->dns, c->target, spf_exists_answer, c);
		break;
	default:
		break;
	}
}

/* Every term missed: redirect= (§6.1), else neutral (§4.7). */
static void spf_eval_end(struct spf_check *c)
{
	struct spf_frame *f = spf_top(c);
	if (!f->rec.redirect) {
		spf_frame_result(c, SPF_NEUTRAL, "no mechanism matched");
		return;
	}
	if (spf_needs_ptr_first(c, f->rec.redirect))
		return;
	if (!spf_count_term(c) || !spf_target(c, f->rec.redirect))
		return;
	char target[SPF_NAME_MAX + 1];
	xsnprintf(target, sizeof target, "%s", c->target); /* same size */
	spf_frame_push(c, target, true);
}

/* §4.6.4: a bound on the elapsed time, at least 20 seconds; a check over
 * it is a temperror (each lookup has its own timeout in net/dns). */
static bool spf_out_of_time(struct spf_check *c)
{
	struct timespec now;
	if (clock_gettime(CLOCK_MONOTONIC, &now) != 0 || now.tv_sec - c->started.tv_sec < SPF_TIME_MAX)
		return false;
	spf_finish(c, SPF_TEMPERROR, "over %d seconds", SPF_TIME_MAX);
	return true;
}

static void spf_step(struct spf_check *c)
{
	struct spf_frame *f = spf_top(c);
	if (spf_out_of_time(c))
		return;
	if (c->mx_pending) {
		c->wait = SPF_WAIT_MX_HOST;
		c->query = dns_lookup_addrs(c->dns, c->mx[c->mx_next], spf_addrs_answer, c);
		return;
	}
	if (!f->loaded) {
		if (!spf_domain_valid(f->domain) || !spf_name_askable(f->domain)) {
			spf_frame_result(c, SPF_NONE, "not a domain name");
			return;
		}
		c->wait = SPF_WAIT_RECORD;
		c->query = dns_lookup_txt(c->dns, f->domain, spf_record_answer, c);
		return;
	}
	if (f->next < f->rec.nterms)
		spf_eval_term(c);
	else
		spf_eval_end(c);
}

static void spf_deliver(struct spf_check *c)
{
	struct spf_outcome o = {
		.result = c->result, .identity = c->identity, .sender = c->sender,
		.domain = c->sender_domain, .detail = c->detail,
	};
	spf_done_cb cb = c->cb;
	void *arg = c->arg;
	while (c->depth > 0)
		spf_frame_pop(c);
	cb(arg, &o);
	free(c);
}

/* Run until a lookup is in flight or the check is done (then c is
 * gone: true).  An answer that comes at once (from the cache) only clears
 * c->wait, and the loop goes on. */
static bool spf_run(struct spf_check *c)
{
	c->running = true;
	while (!c->done && c->wait == SPF_WAIT_NONE)
		spf_step(c);
	c->running = false;
	if (!c->done)
		return false;
	spf_deliver(c);
	return true;
}

/* ---- start ---------------------------------------------------------------- */

static bool spf_split_sender(struct spf_check *c, const char *sender)
{
	const char *at = strrchr(sender, '@');
	if (!at)
		return false;
	size_t local = (size_t)(at - sender);
	if (local == 0)
		return bsnprintf(c->local, sizeof c->local, "postmaster") &&
		       bsnprintf(c->sender_domain, sizeof c->sender_domain, "%s", at + 1);
	return local < sizeof c->local &&
	       bsnprintf(c->local, sizeof c->local, "%.*s", (int)local, sender) &&
	       bsnprintf(c->sender_domain, sizeof c->sender_domain, "%s", at + 1);
}

static bool spf_identity(struct spf_check *c, const struct spf_request *req)
{
	if (!bsnprintf(c->helo, sizeof c->helo, "%s", req->helo ? req->helo : ""))
		return false;
	if (req->sender && req->sender[0]) {
		c->identity = "mailfrom";
		if (!spf_split_sender(c, req->sender))
			return false;
	} else { /* §2.4: the null sender: postmaster@HELO */
		c->identity = "helo";
		if (!bsnprintf(c->local, sizeof c->local, "postmaster") ||
		    !bsnprintf(c->sender_domain, sizeof c->sender_domain, "%s", c->helo))
			return false;
	}
	return bsnprintf(c->sender, sizeof c->sender, "%s@%s", c->local, c->sender_domain);
}

struct spf_check *spf_check_start(struct dns_resolver *dns, const struct spf_request *req,
				  spf_done_cb cb, void *arg)
{
	struct spf_check *c = xcalloc(1, sizeof *c);
	c->dns = dns;
	c->cb = cb;
	c->arg = arg;
	c->family = req->family;
	memcpy(c->ip, req->ip, sizeof c->ip);
	if (clock_gettime(CLOCK_MONOTONIC, &c->started) != 0)
		memset(&c->started, 0, sizeof c->started); /* cannot fail on Linux */
	static const uint8_t v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
	if (c->family == AF_INET6 && memcmp(c->ip, v4mapped, sizeof v4mapped) == 0) {
		/* §5: an IPv4-mapped client is checked as the IPv4 client it is */
		memmove(c->ip, c->ip + 12, 4);
		memset(c->ip + 4, 0, 12);
		c->family = AF_INET;
	}
	if (!bsnprintf(c->receiver, sizeof c->receiver, "%s", req->receiver ? req->receiver : "unknown"))
		c->receiver[0] = '\0';
	c->depth = 1;
	if (!dns) {
		c->identity = "mailfrom";
		spf_finish(c, SPF_TEMPERROR, "no DNS resolver");
	} else if (!spf_identity(c, req)) {
		/* §4.3: a domain too long to be one has no policy */
		c->identity = req->sender && req->sender[0] ? "mailfrom" : "helo";
		spf_finish(c, SPF_NONE, "identity too long");
	} else {
		str_lower(c->sender_domain);
		xsnprintf(c->frames[0].domain, sizeof c->frames[0].domain, "%s", c->sender_domain);
	}
	return spf_run(c) ? NULL : c;
}

void spf_check_cancel(struct spf_check *c)
{
	if (!c)
		return;
	if (c->query)
		dns_cancel(c->dns, c->query);
	while (c->depth > 0)
		spf_frame_pop(c);
	free(c);
}

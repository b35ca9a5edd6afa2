/* dkim_verify: DKIM verification (RFC 6376 §6) of every DKIM-Signature
 * of a message, rsa-sha256 and ed25519-sha256 (RFC 8463); rsa-sha1 and
 * RSA keys under 1024 bits fail (RFC 8301).  The hashes are made on a
 * worker thread (lib/offload; at once when no workers run); the keys come
 * from DNS (TXT at SELECTOR._domainkey.DOMAIN) through the event loop, and
 * one callback reports every result. */
#ifndef POSTHORN_DKIM_VERIFY_H
#define POSTHORN_DKIM_VERIFY_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include "net/dns.h"

enum {
	DKIM_VERIFY_SIGNATURES_MAX = 8, /* signatures verified per message; more are
					 * reported as permerror without a lookup */
	DKIM_SELECTOR_MAX = 128,
	DKIM_HEADER_B_LEN = 8,          /* of b= in header.b (RFC 6008 §4) */
	DKIM_REASON_MAX = 128,
};

/* RFC 8601 §2.7.1 */
enum dkim_status {
	DKIM_PASS,
	DKIM_FAIL,
	DKIM_NEUTRAL,
	DKIM_POLICY,
	DKIM_TEMPERROR,
	DKIM_PERMERROR,
};
const char *dkim_status_name(enum dkim_status st);

/* One signature's result; every string NUL-terminated, printable ASCII
 * (what the message gave is cut to fit: these go into
 * Authentication-Results and logs). */
struct dkim_result {
	enum dkim_status status;
	char domain[254];                       /* d=, lower case; "" when unreadable */
	char selector[DKIM_SELECTOR_MAX + 1];   /* s= */
	char algorithm[24];                     /* a=, e.g. "rsa-sha256" */
	char header_b[DKIM_HEADER_B_LEN + 1];   /* the first characters of b= */
	unsigned key_bits;                      /* of the key, when one was found */
	bool testing;                           /* the key record has t=y */
	char reason[DKIM_REASON_MAX];           /* why, in words ("" on pass) */
};

/* res[0..n) in the order of the signatures in the message (n == 0: none).
 * res is valid during the call only. */
typedef void (*dkim_verify_done)(void *arg, const struct dkim_result *res, size_t n);

struct dkim_verify;

/* Verify every signature of msg (len bytes, CRLF or LF line ends; read
 * only during this call: a worker gets a copy).  done runs once, on the
 * loop, when every key lookup has answered — or before this returns when
 * there are no workers and no lookup is needed (then NULL is returned).
 * now: the time to judge x= against. */
struct dkim_verify *dkim_verify_start(struct dns_resolver *dns, const char *msg, size_t len,
				      time_t now, dkim_verify_done done, void *arg);
/* Forget it: done will not run. */
void dkim_verify_cancel(struct dkim_verify *v);

/* Where keys come from: dns_lookup_txt for dkim_verify_start; tests and
 * tools give their own. */
struct dkim_key_source {
	dns_query_id (*lookup)(void *ctx, const char *name, dns_txt_cb cb, void *arg);
	void (*cancel)(void *ctx, dns_query_id id);
	void *ctx;
};
struct dkim_verify *dkim_verify_start_with(const struct dkim_key_source *src, const char *msg,
					   size_t len, time_t now, dkim_verify_done done,
					   void *arg);

#endif

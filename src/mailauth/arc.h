/* arc: the Authenticated Received Chain (RFC 8617) of inbound mail: the
 * ARC sets cut from the header (ARC-Authentication-Results,
 * ARC-Message-Signature, ARC-Seal; instances 1 to 50) and the chain
 * validated as §5.2 says: its structure and cv= values, the latest
 * ARC-Message-Signature, every ARC-Seal.  Keys are DKIM key records
 * (TXT at SELECTOR._domainkey.DOMAIN) read through the same key source as
 * dkim_verify; the hashes are made on a worker (lib/offload) and one
 * callback reports the chain's result. */
#ifndef POSTHORN_ARC_H
#define POSTHORN_ARC_H

#include <stdbool.h>
#include <stddef.h>

#include "mailauth/dkim_header.h"
#include "mailauth/dkim_verify.h"

enum {
	ARC_INSTANCE_MAX = 50,  /* RFC 8617 §4.2.1: i= is 1 to 50 */
	ARC_REASON_MAX = 128,
};

/* The chain's result (RFC 8617 §4.4: none, pass, fail). */
enum arc_status { ARC_NONE, ARC_PASS, ARC_FAIL };
const char *arc_status_name(enum arc_status st);

/* The cv= of an ARC-Seal (§4.1.3). */
enum arc_cv { ARC_CV_NONE, ARC_CV_PASS, ARC_CV_FAIL };
const char *arc_cv_name(enum arc_cv cv);

/* One ARC set: its three fields (pointing into the parsed header). */
struct arc_set {
	const struct dkim_field *aar, *ams, *as;
	enum arc_cv cv;         /* of the ARC-Seal */
};

/* The sets of one message, set[1..n] (set[0] unused). */
struct arc_chain {
	struct arc_set set[ARC_INSTANCE_MAX + 1];
	unsigned n;
};

/* Cut the ARC fields of h into sets and check the chain's structure
 * (§5.2 steps 2 and 3): every instance from 1 to n has exactly one field
 * of each kind, the latest seal does not say cv=fail, the seal of
 * instance 1 says cv=none and every later one cv=pass.  ARC_NONE (no ARC
 * field), ARC_PASS (sound so far: the signatures are still to be checked)
 * or ARC_FAIL with the reason in why. */
enum arc_status arc_chain_parse(const struct dkim_header *h, struct arc_chain *c, char *why,
				size_t whysz);

/* What validation found; the strings NUL-terminated printable ASCII. */
struct arc_result {
	enum arc_status status;
	unsigned instances;     /* the latest i= (0: no chain) */
	unsigned oldest_pass;   /* §5.2 step 5: the oldest instance whose
				 * ARC-Message-Signature still verifies, 0 when all do */
	char domain[DKIM_DOMAIN_MAX + 1]; /* d= of the latest seal ("" unknown) */
	char reason[ARC_REASON_MAX];      /* why it failed ("" otherwise) */
};

/* r is valid during the call only. */
typedef void (*arc_verify_done)(void *arg, const struct arc_result *r);

struct arc_verify;

/* Validate the chain of msg (len bytes, CRLF or LF line ends; read only
 * during this call).  done runs once, on the loop, when every key lookup
 * has answered — or before this returns when there are no workers and no
 * lookup waits (then NULL is returned).  A key lookup that fails for
 * want of DNS fails the chain (RFC 8617 has no temporary result). */
struct arc_verify *arc_verify_start(struct dns_resolver *dns, const char *msg, size_t len,
				    arc_verify_done done, void *arg);
struct arc_verify *arc_verify_start_with(const struct dkim_key_source *src, const char *msg,
					 size_t len, arc_verify_done done, void *arg);
/* Forget it: done will not run. */
void arc_verify_cancel(struct arc_verify *v);

#endif

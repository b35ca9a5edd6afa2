/* imap_esearch: the result options of SEARCH and what outlives one
 * SEARCH: ESEARCH responses (RFC 4731, with MODSEQ of RFC 7162 §3.1.5),
 * the saved result "$" (RFC 5182 SEARCHRES), PARTIAL results and search
 * contexts kept up to date with ADDTO/REMOVEFROM (RFC 5267 CONTEXT=SEARCH). */
#ifndef POSTHORN_IMAP_ESEARCH_H
#define POSTHORN_IMAP_ESEARCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct imap_session;
struct imap_command;
struct imap_args;
struct imap_out;
struct imap_seqset;

enum {
	/* live search contexts (RETURN (UPDATE)) of one session: more get
	 * NOUPDATE (RFC 5267 §4.2) */
	IMAP_SEARCH_CONTEXTS_MAX = 16,
};

/* RETURN options, RFC 4731 §3.1, RFC 5182 §2, RFC 5267 §4.2 and §4.4. */
enum imap_search_return_opt {
	IMAP_RET_MIN = 1u << 0,
	IMAP_RET_MAX = 1u << 1,
	IMAP_RET_ALL = 1u << 2,
	IMAP_RET_COUNT = 1u << 3,
	IMAP_RET_SAVE = 1u << 4,
	IMAP_RET_UPDATE = 1u << 5,
	IMAP_RET_PARTIAL = 1u << 6,
};

struct imap_search_return {
	bool given;                      /* RETURN (...): the answer is ESEARCH */
	unsigned opts;                   /* enum imap_search_return_opt */
	uint32_t partial_lo, partial_hi; /* PARTIAL lo:hi, lo <= hi, 1-based */
};

/* "RETURN (opts)" at args[*pos], if there, past it (RETURN () means ALL).
 * false with a reason in err on bad syntax: the answer is BAD. */
bool imap_search_return_parse(const struct imap_args *args, size_t *pos,
			      struct imap_search_return *r, char *err, size_t errsz);

/* The messages a search found, in ascending order. */
struct imap_search_found {
	uint32_t *seq, *uid;
	size_t n, cap;
	uint64_t top_modseq;             /* highest MODSEQ of them all */
	uint64_t first_modseq, last_modseq; /* of the lowest and the highest */
};

void imap_search_found_add(struct imap_search_found *f, uint32_t seq, uint32_t uid,
			   uint64_t modseq);
void imap_search_found_free(struct imap_search_found *f);

/* Ascending numbers as a sequence set, runs compressed: "1:3,5,7:8". */
void imap_put_numbers(struct imap_out *out, const uint32_t *v, size_t n);

/* "* ESEARCH (TAG "tag") [UID] MIN a MAX b COUNT c ALL set PARTIAL (...)
 * [MODSEQ m]" for f (RFC 4731 §3.1, RFC 5267 §4.4, RFC 7162 §3.1.5: with
 * modseq, the MODSEQ of what is returned), CRLF ended, into out. */
void imap_esearch_response(struct imap_out *out, const char *tag, bool uid,
			   const struct imap_search_return *r, const struct imap_search_found *f,
			   bool modseq);

/* The compiled program of a search (imap_search.c) as a live context
 * keeps it: does message i match, and freeing it. */
struct imap_search_prog_ops {
	bool (*match)(struct imap_session *s, size_t i, const void *prog);
	void (*free)(void *prog);
};

/* A search with RETURN has found f: the response into out (none for SAVE
 * alone, RFC 5182 §2.1), the saved result replaced, and for UPDATE a
 * context that takes *prog (then NULL). */
void imap_esearch_done(struct imap_session *s, struct imap_out *out, bool uid,
		       const struct imap_search_return *r, const struct imap_search_found *f,
		       bool modseq, const struct imap_search_prog_ops *ops, void **prog);

/* The folder is left: "$" and the contexts end (RFC 5182 §2.1, RFC 5267
 * §4.2). */
void imap_esearch_reset(struct imap_session *s);

/* Message seq (uid) is being expunged: REMOVEFROM in each context that
 * holds it, into out, before its EXPUNGE (RFC 5267 §4.4.2). */
void imap_esearch_expunged(struct imap_session *s, struct imap_out *out, size_t seq, uint32_t uid);

/* After changes (flags, new messages): the messages changed since a
 * context last looked are tested again; ADDTO and REMOVEFROM into out. */
void imap_esearch_refresh(struct imap_session *s, struct imap_out *out);

/* ESORT (RFC 5267 §3): SORT RETURN (opts).  The options for
 * imap_esort_answer, taken by it (free() them); NULL after answering BAD
 * (UPDATE: no CONTEXT=SORT here). */
void *imap_esort_options(struct imap_session *s, const struct imap_search_return *r);
/* An imap_sort_result_fn: the sorted numbers as one ESEARCH line (MIN and
 * MAX the first and last in the sort order, ALL in that order), "$" for
 * SAVE, then the tagged OK. */
void imap_esort_answer(struct imap_session *s, const uint32_t *nums, size_t n, bool uid,
		       void *options);

/* CANCELUPDATE "tag" ... (RFC 5267 §4.3). */
void imap_cmd_cancelupdate(struct imap_session *s, const struct imap_command *c);

#endif

/* dkim_canon: the canonicalisations of DKIM (RFC 6376 §3.4), "simple" and
 * "relaxed" for header fields and for the body, written once for the
 * signer and the verifier; the canonical bytes go to a sink (a hash). */
#ifndef POSTHORN_DKIM_CANON_H
#define POSTHORN_DKIM_CANON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum dkim_canon { DKIM_CANON_SIMPLE, DKIM_CANON_RELAXED };

/* Where canonical bytes go (e.g. EVP_DigestUpdate). */
typedef void (*dkim_sink_fn)(void *sink, const void *data, size_t len);

/* One header field as it stands in the message (name, colon, value and
 * folded lines, without its final line end).  simple: the bytes as they
 * are; relaxed: the name in lower case, no space around the colon, the
 * value unfolded, runs of space and tab made one space, none at the end
 * (§3.4.2).  With crlf a CRLF follows (every signed field but the
 * signature's own, §3.7). */
void dkim_canon_header(enum dkim_canon c, const char *field, size_t len, bool crlf,
		       dkim_sink_fn sink, void *arg);

/* A signature's own field with the value of its b= tag, bytes
 * [cut, resume) of the field, taken out (§3.7), without CRLF. */
void dkim_canon_header_cut(enum dkim_canon c, const char *field, size_t len, size_t cut,
			   size_t resume, dkim_sink_fn sink, void *arg);

/* The fields an h= list (len bytes, names separated by ':', white space
 * around them allowed) names, picked from the bottom of h (RFC 6376
 * §5.4.2), each canonicalised with its CRLF; names with no field left
 * add nothing. */
struct dkim_header;
void dkim_canon_h_list(enum dkim_canon c, const struct dkim_header *h, const char *list,
		       size_t len, dkim_sink_fn sink, void *arg);

/* A c= value "header[/body]" (§3.5; simple when a part is absent).  0, or
 * -1 when a part is neither simple nor relaxed. */
int dkim_canon_parse(const char *v, size_t len, enum dkim_canon *hc, enum dkim_canon *bc);

/* The body, fed in pieces of any size (CRLF line ends).  simple: as it
 * is, without empty lines at the end, "CRLF" when empty (§3.4.3);
 * relaxed: spaces at line ends removed, runs of space and tab made one
 * space, no empty lines at the end, nothing when empty (§3.4.4).  limit
 * (the l= tag, §3.5) stops the output after that many bytes; UINT64_MAX:
 * none. */
struct dkim_body {
	enum dkim_canon canon;
	dkim_sink_fn sink;
	void *arg;
	uint64_t limit;         /* bytes still allowed out */
	uint64_t out;           /* canonical bytes produced */
	uint64_t blank_lines;   /* empty lines held back (maybe at the end) */
	bool cr;                /* a CR waiting to see whether LF follows */
	bool wsp;               /* relaxed: space or tab waiting in the line */
	bool line_open;         /* the current line has content */
	bool any_line;          /* simple: some line was seen */
	char buf[4096];         /* output gathered before it goes to the sink */
	size_t buflen;
};

void dkim_body_begin(struct dkim_body *b, enum dkim_canon c, uint64_t limit, dkim_sink_fn sink,
		     void *arg);
void dkim_body_feed(struct dkim_body *b, const char *data, size_t len);
void dkim_body_end(struct dkim_body *b);

#endif

/* imap_search: SEARCH and UID SEARCH (RFC 3501 §6.4.4), a handler of
 * imap_session.c's command table. */
#ifndef POSTHORN_IMAP_SEARCH_H
#define POSTHORN_IMAP_SEARCH_H

#include <stdbool.h>
#include <stddef.h>

struct imap_session;
struct imap_command;

void imap_cmd_search(struct imap_session *s, const struct imap_command *c);

/* The search keys args[pos..] compiled and resolved against the view,
 * for SORT and THREAD (RFC 5256 §3: the criteria after the charset);
 * NULL with a reason for BAD in err (IMAP_REASON_MAX octets). */
struct imap_args;
struct imap_search_prog;
struct imap_search_prog *imap_search_compile(struct imap_session *s, const struct imap_args *args,
					     size_t pos, char *err, size_t errsz);
/* Does message i (0-based) match?  The message may be held afterwards:
 * imap_msg_release() when done with it. */
bool imap_search_matches(struct imap_session *s, const struct imap_search_prog *p, size_t i);
/* May matching read a message file on the loop?  Not once workers tested
 * the text keys (imap_search_compile() started them: the session waits
 * for them before its job runs). */
bool imap_search_reads(const struct imap_search_prog *p);
/* Does it match every message (ALL), so that no message need be looked at? */
bool imap_search_is_all(const struct imap_search_prog *p);
void imap_search_prog_free(struct imap_search_prog *p);

#endif

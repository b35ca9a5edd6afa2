/* imap_subject: the strings SORT and THREAD compare (RFC 5256): the
 * i;unicode-casemap form of a string (RFC 5051) and the base subject of a
 * Subject (RFC 5256 §2.1).  Pure functions of UTF-8 text. */
#ifndef POSTHORN_IMAP_SUBJECT_H
#define POSTHORN_IMAP_SUBJECT_H

#include <stdbool.h>

/* RFC 5051 i;unicode-casemap: each character's titlecase, then NFKD, so
 * that strcmp() of two results orders the strings as the comparator
 * does.  Invalid UTF-8 is made valid first.  Caller frees. */
char *imap_casemap(const char *s);

/* RFC 5256 §2.1 base subject of s (decoded from RFC 2047 to UTF-8; NULL:
 * no Subject), in casemapped form; *reply says whether a reply or
 * forward indication ("Re:", "Fwd:", "(fwd)", "[fwd: ...]") was removed,
 * for THREAD's subject merging (§2.2, §3 step 5).  Caller frees. */
char *imap_base_subject(const char *s, bool *reply);

#endif

/* imap_utf8: RFC 6855 UTF8=ACCEPT for a session: once enabled, mailbox
 * names are UTF-8 on the wire and modified UTF-7 in the store, converted
 * here, at the edge, both ways. */
#ifndef POSTHORN_IMAP_UTF8_H
#define POSTHORN_IMAP_UTF8_H

#include <stddef.h>

#include "proto/imap/imap_utf7.h"

struct imap_session;
struct imap_out;

/* ENABLE UTF8=ACCEPT: the session's names and quoted strings are UTF-8
 * from now on. */
void imap_utf8_enable(struct imap_session *s);
/* A mailbox name as the client sent it, as the store names it: itself
 * before ENABLE UTF8=ACCEPT, else its modified UTF-7, kept in the
 * session's slot (0 or 1: RENAME names two) until the next conversion
 * into that slot.  NULL when it is not valid UTF-8 (the caller says BAD). */
const char *imap_utf8_name_in(struct imap_session *s, const char *name, size_t slot);
/* A store's mailbox name into out as the client reads it: after ENABLE
 * UTF8=ACCEPT its UTF-8 (a name that is no valid modified UTF-7 as it
 * is). */
void imap_utf8_put_mailbox(const struct imap_session *s, struct imap_out *out, const char *name);
/* The session ends: its slots are freed. */
void imap_utf8_free(struct imap_session *s);

#endif

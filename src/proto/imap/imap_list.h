/* imap_list: LIST and LSUB (RFC 3501 §6.3.8, §6.3.9) with LIST-EXTENDED
 * (RFC 5258) and LIST-STATUS (RFC 5819), a handler of imap_session.c's
 * command table. */
#ifndef POSTHORN_IMAP_LIST_H
#define POSTHORN_IMAP_LIST_H

#include <stdbool.h>

struct imap_session;
struct imap_command;
struct imap_args;

/* What a LIST asks for beyond RFC 3501 (RFC 5258 §3, RFC 5819). */
struct imap_list_opts {
	bool special_only;       /* selection option SPECIAL-USE */
	bool subscribed_only;    /* selection option SUBSCRIBED */
	bool recursive;          /* selection option RECURSIVEMATCH */
	bool ret_subscribed;     /* return option SUBSCRIBED: \Subscribed */
	bool ret_children;       /* return option CHILDREN */
	const struct imap_args *status; /* return option STATUS (items), in ret */
};

/* LIST's selection options sel and return options ret (either NULL when
 * absent) into *o; NULL, or the reason for BAD (RFC 5258 §3: an unknown
 * option, RECURSIVEMATCH alone or with REMOTE only; RFC 5819: STATUS
 * without known items). */
const char *imap_list_options(const struct imap_args *sel, const struct imap_args *ret,
			      struct imap_list_opts *o);

/* LIST and LSUB (the command's name tells which). */
void imap_cmd_list(struct imap_session *s, const struct imap_command *c);

#endif

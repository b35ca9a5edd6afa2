/* smtp_quota: a local user's quota (RFC 9208's limits, store/quota.h) as
 * SMTP sees it: a mailbox with no room for a message of the declared
 * (RFC 1870 SIZE) or received size is full, answered "452 4.2.2 Mailbox
 * full" (RFC 3463 §3.3), which the sender retries later. */
#ifndef POSTHORN_SMTP_QUOTA_H
#define POSTHORN_SMTP_QUOTA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct runtime;
struct spool_rcpt;

#define SMTP_QUOTA_FULL_REPLY "452 4.2.2 Mailbox full"

/* Has the mailbox of local user address no room for size octets more?  A
 * usage that cannot be read counts as room (the delivery decides). */
bool smtp_quota_full(const struct runtime *rt, const char *sid, const char *address,
		     uint64_t size);
/* Is every one of the n recipients a local mailbox, named at RCPT (not
 * reached through an alias), without room for the message?  Then the
 * whole message is refused at the end of data; otherwise it is taken and
 * the full mailboxes' copies wait in the queue. */
bool smtp_quota_all_full(const struct runtime *rt, const char *sid,
			 const struct spool_rcpt *rcpts, size_t n, uint64_t size);

#endif

/* imap_quota: RFC 9208 QUOTA for an IMAP session — the user's one quota
 * root "" over the inbox and every folder, with the STORAGE (units of 1024
 * octets) and MESSAGE resources: GETQUOTA, GETQUOTAROOT, SETQUOTA (refused:
 * limits are the administrator's), and the checks and counts of APPEND,
 * COPY and the removals (store/quota.h keeps the usage). */
#ifndef POSTHORN_IMAP_QUOTA_H
#define POSTHORN_IMAP_QUOTA_H

#include <stdbool.h>
#include <stdint.h>

struct imap_session;
struct imap_command;

/* The capability words, for the capability list. */
#define IMAP_QUOTA_CAPS "QUOTA QUOTA=RES-STORAGE QUOTA=RES-MESSAGE"

void imap_cmd_getquota(struct imap_session *s, const struct imap_command *c);
void imap_cmd_getquotaroot(struct imap_session *s, const struct imap_command *c);
void imap_cmd_setquota(struct imap_session *s, const struct imap_command *c);

/* May bytes and messages be added to the user's mail?  When not, the
 * command has had its answer: NO [OVERQUOTA] (or a NO for a failure to
 * read the usage) and false. */
bool imap_quota_room(struct imap_session *s, uint64_t bytes, uint64_t messages);
/* Messages were added (APPEND): count them in the usage. */
void imap_quota_added(struct imap_session *s, uint64_t bytes, uint64_t messages);
/* Messages were removed or copied: the usage is counted again when next
 * asked for. */
void imap_quota_recount(struct imap_session *s);

#endif

/* privdrop: giving up root, in one audited place. */
#ifndef POSTHORN_PRIVDROP_H
#define POSTHORN_PRIVDROP_H

#include <stdbool.h>
#include <sys/types.h>

/* Look up user; 0 with *uid and *gid set, or -1 with a message in err. */
int privdrop_lookup(const char *user, uid_t *uid, gid_t *gid, char *err, size_t errsz);

/* Become uid/gid for good: supplementary groups = {gid}, then gid, then uid
 * (real, effective and saved), then verify that none of it can be undone.
 * Returns 0, or -1 with a message in err (the caller must exit). */
int privdrop_to(const char *user, uid_t uid, gid_t gid, char *err, size_t errsz);

#endif

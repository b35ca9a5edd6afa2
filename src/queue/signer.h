/* signer: DKIM signatures (RFC 6376, RFC 8463) for mail that leaves
 * through outbound, and the ARC set (RFC 8617) of mail an alias forwards,
 * made on a worker thread (lib/offload) from the spooled message, with
 * the keys of the generation the attempt holds. */
#ifndef POSTHORN_SIGNER_H
#define POSTHORN_SIGNER_H

#include <stdbool.h>
#include <sys/types.h>

struct runtime;
struct spool_envelope;
struct signer_job;

enum { SIGNER_READ_CHUNK = 64 * 1024 };

/* Is this message posthorn's to sign or seal?  DKIM: keys are
 * configured, and it comes from an authenticated user or from a client
 * allowed to relay (one that named a remote recipient itself).  Mail that
 * only an alias sends on is not DKIM-signed: its From is someone else's,
 * and no outsider may get a signature for a From of ours by writing to an
 * alias.  ARC: an alias sends it on to a remote address, the server that
 * received it has `verify { arc yes }` and an RSA key is configured; the
 * set says what posthorn found, in its own name, not the sender's. */
bool signer_wanted(const struct runtime *rt, const struct spool_envelope *env);

/* fields: the ARC set and DKIM-Signature fields to send before the
 * message (owned by the callee), or NULL: send it unsigned (no key for
 * its From domain, or signing failed: logged). */
typedef void (*signer_done_fn)(void *owner, char *fields);

/* Sign (and seal) the message of env, size bytes at offset in fd (dup'ed:
 * the caller may close its own).  done runs on the loop — before this
 * returns when there are no worker threads (then NULL is returned). */
struct signer_job *signer_start(struct runtime *rt, const struct spool_envelope *env,
				const char *id, int fd, off_t offset, off_t size, signer_done_fn done,
				void *owner);
/* The owner goes away: done will not run. */
void signer_cancel(struct signer_job *j);

#endif

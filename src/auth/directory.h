/* directory: users from an LDAP directory (RFC 4511; Active Directory,
 * OpenLDAP) for `users ldap { ... }`.  A recipient or a Kerberos principal
 * is found by a search as the service account; a password is checked by a
 * simple bind as the user's DN (RFC 4513 §5.1.3), over TLS only.  The
 * directory is reached from worker threads with a bounded queue, never
 * from the event loop; answers, positive and negative, are cached for
 * `cache` in a table bounded in entries.  An unreachable directory is a
 * temporary failure, said in the log once when it goes and once when it
 * comes back. */
#ifndef POSTHORN_DIRECTORY_H
#define POSTHORN_DIRECTORY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

struct conf_ldap;
struct event_base;
struct directory;
struct directory_job;

enum {
	DIRECTORY_THREADS = 4,          /* workers, each with a search and a bind connection */
	DIRECTORY_QUEUE_MAX = 256,      /* lookups waiting for a thread */
	DIRECTORY_CACHE_MAX = 50000,    /* cached answers; the oldest goes first */
	DIRECTORY_TIMEOUT = 5,          /* seconds for a connection or an operation */
};

enum directory_status {
	DIRECTORY_FOUND,        /* a lookup found the entry; a login's password is right */
	DIRECTORY_NOT_FOUND,    /* no such user; a login: no such user or a wrong password */
	DIRECTORY_UNAVAILABLE,  /* the directory could not be asked: a temporary failure */
};

struct directory_answer {
	enum directory_status status;
	const char *mailbox;    /* FOUND: the address its mail goes to (the first mail) */
};

/* Called on the loop's thread, or before the call that asked returns when
 * the cache knew (then that call returns NULL); a lives only during the
 * call. */
typedef void (*directory_done_fn)(void *owner, const struct directory_answer *a);

/* The directory of conf, its service password read from
 * bind-password-file.  base NULL: no workers; every question is answered
 * on the calling thread, waiting (the command line).  NULL with a message
 * on err when the password file cannot be read. */
struct directory *directory_new(const struct conf_ldap *conf, struct event_base *base, FILE *err);
/* Every job must have been cancelled or answered.  Workers still inside an
 * LDAP call finish it on their own and go. */
void directory_free(struct directory *d);

/* Which user receives mail for address (any of an entry's addresses)? */
struct directory_job *directory_lookup(struct directory *d, const char *address,
				       directory_done_fn done, void *owner);
/* Which user has the Kerberos principal (the `principal` attribute)?
 * NOT_FOUND at once when the configuration names no such attribute. */
struct directory_job *directory_find_by_principal(struct directory *d, const char *principal,
						  directory_done_fn done, void *owner);
/* Is pass (plen bytes, wiped by the worker) the password of the user
 * (ulen bytes: a name with a NUL in it is nobody's)?  FOUND gives the
 * mailbox the user logs in to. */
struct directory_job *directory_login(struct directory *d, const char *user, size_t ulen,
				      const char *pass, size_t plen, directory_done_fn done,
				      void *owner);
/* The owner goes away: done() is never called.  NULL is nothing. */
void directory_cancel(struct directory_job *job);

/* The first URI, for messages ("users from the directory at ..."). */
const char *directory_uri(const struct directory *d);
/* The cache: its entries and the bytes they take (the table included). */
size_t directory_cache_entries(const struct directory *d);
size_t directory_cache_bytes(const struct directory *d);
/* For tests: put an answer in the cache as if the directory had given it
 * (mailbox NULL: a negative answer). */
void directory_cache_put(struct directory *d, const char *key, const char *mailbox,
			 const char *dn);

#endif

/* userdb: the user database written by `posthorn user`.  One line per user:
 *   address:SCRAM-SHA-256:ITERATIONS:SALT:STOREDKEY:SERVERKEY
 * (salt and keys in base64; RFC 5802 §3 / RFC 7677), so that one record
 * serves PLAIN, LOGIN and SCRAM-SHA-256; an optional seventh field
 * ":BYTES,MESSAGES" is the user's own quota (0: no limit on that one).  Never a plaintext or reversible
 * password.  The file is rewritten atomically with mode 0600. */
#ifndef POSTHORN_USERDB_H
#define POSTHORN_USERDB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

enum { USERDB_KEY_LEN = 32, USERDB_SALT_MAX = 64, USERDB_DEFAULT_ITERATIONS = 4096 };

struct user_record {
	char *address;          /* lower case */
	unsigned iterations;
	uint8_t salt[USERDB_SALT_MAX];
	size_t salt_len;
	uint8_t stored_key[USERDB_KEY_LEN];
	uint8_t server_key[USERDB_KEY_LEN];
	bool quota_set;         /* the user's own quota (RFC 9208), else the default */
	uint64_t quota_bytes;   /* 0: no limit */
	uint64_t quota_messages;/* 0: no limit */
};

struct userdb;

/* Load the file.  A missing file is an empty database.  On a malformed
 * line prints "FILE:LINE:COL: message" on errout and returns -1.  Messages
 * go to errout through report(): its owner checks the writes with
 * report_end() (or fclose() for a memory stream). */
int userdb_load(const char *path, struct userdb **out, FILE *errout);
void userdb_free(struct userdb *db);
/* Case-insensitive lookup; NULL when absent. */
const struct user_record *userdb_find(const struct userdb *db, const char *address);
size_t userdb_count(const struct userdb *db);
const struct user_record *userdb_at(const struct userdb *db, size_t i);

/* RFC 5802 §3: SaltedPassword = PBKDF2-HMAC-SHA-256(password, salt, i),
 * StoredKey = SHA-256(HMAC(SaltedPassword, "Client Key")), ServerKey =
 * HMAC(SaltedPassword, "Server Key").  Intermediates are wiped.  0 or -1. */
int userdb_derive_keys(const char *password, size_t password_len, const uint8_t *salt,
		       size_t salt_len, unsigned iterations, uint8_t stored_key[USERDB_KEY_LEN],
		       uint8_t server_key[USERDB_KEY_LEN]);

/* Is address acceptable as a user name (and alias key or target):
 * dot-atom local part of at most 64 octets without '/' (it names a
 * Maildir folder), '@', a domain of non-empty labels of letters, digits,
 * '-' (or UTF-8)?  NULL when it is, else the reason, e.g. "missing '@'". */
const char *userdb_check_address(const char *address);

/* Derive a record from a password (random salt from the CSPRNG). */
int userdb_make_record(const char *address, const char *password, size_t password_len,
		       unsigned iterations, struct user_record *out);
/* Does password match?  PBKDF2 + HMAC, compared in constant time. */
bool userdb_verify_password(const struct user_record *rec, const char *password,
			    size_t password_len);

/* Edit the file: read, change, write to a temporary file (mode 0600),
 * fsync, rename.  owner_uid/gid (-1 for unchanged) let the daemon's run-as
 * user read it.  Return 0, or -1 with a message on errout. */
enum userdb_edit { USERDB_ADD, USERDB_PASSWD, USERDB_DELETE, USERDB_QUOTA };
int userdb_edit(const char *path, enum userdb_edit op, const char *address,
		const char *password, size_t password_len, long owner_uid, long owner_gid,
		FILE *errout);

/* A user's own quota (set), or none: the configuration's applies. */
struct userdb_quota {
	bool set;
	uint64_t bytes;         /* 0: no limit */
	uint64_t messages;      /* 0: no limit */
};
/* Set or clear address's own quota, as userdb_edit() edits. */
int userdb_set_quota(const char *path, const char *address, const struct userdb_quota *quota,
		     long owner_uid, long owner_gid, FILE *errout);

void user_record_clear(struct user_record *rec);

#endif
